//! The KDC client side: when a verified envelope's key index names a KDC this subscriber
//! has credentials for, log in, fetch the key of that epoch, and cache it.
//!
//! - [`KdcClient`]: one HTTPS request at a time (login, key fetch).
//! - [`Session`]: a client with its current token, re-logging in when the token expired
//!   or the KDC no longer knows it (e.g. after a publisher restart).
//! - `Fetcher` (internal): runs the fetches the session core (`sealpost-session`) decides
//!   on: at most one per `(publisher, epoch)` in flight, none again after success, and a
//!   pause before retrying after a failure; results go back to the subscriber's worker,
//!   which hands them to the core (it retries the held envelopes).

mod client;
mod fetcher;

pub use client::{AccessToken, FetchedKey, KdcClient, REQUEST_TIMEOUT};
pub(crate) use fetcher::{FetchOutcome, Fetcher};
pub use sealpost_client::kdc::KdcCredentials;
pub use session::Session;

mod session {
    use std::time::Instant;

    use tokio::sync::Mutex;

    use super::{AccessToken, FetchedKey, KdcClient, KdcError};

    /// A [`KdcClient`] and its current access token.
    #[derive(Debug)]
    pub struct Session {
        client: KdcClient,
        token: Mutex<Option<AccessToken>>,
    }

    impl Session {
        /// A session that logs in on first use.
        pub fn new(client: KdcClient) -> Session {
            Session {
                client,
                token: Mutex::new(None),
            }
        }

        /// The client.
        pub fn client(&self) -> &KdcClient {
            &self.client
        }

        /// A live token: the cached one, or a new login. Logins are serialised, so many
        /// concurrent fetches cause one login.
        async fn token(&self, stale: Option<&AccessToken>) -> Result<AccessToken, KdcError> {
            let mut guard = self.token.lock().await;
            if let Some(t) = guard.as_ref() {
                let is_stale = stale.is_some_and(|s| s.value_eq(t));
                if !is_stale && !t.is_expired(Instant::now()) {
                    return Ok(t.clone());
                }
            }
            *guard = None;
            let fresh = self.client.login().await?;
            *guard = Some(fresh.clone());
            Ok(fresh)
        }

        /// Fetches the key of `epoch`, logging in first if needed and once more if the
        /// KDC says the token expired or is unknown.
        pub async fn fetch_key(&self, epoch: u64) -> Result<FetchedKey, KdcError> {
            let token = self.token(None).await?;
            match self.client.fetch_key(&token, epoch).await {
                Err(KdcError::TokenExpired | KdcError::InvalidToken) => {
                    let token = self.token(Some(&token)).await?;
                    self.client.fetch_key(&token, epoch).await
                }
                other => other,
            }
        }
    }
}

/// Why a key could not be had from a KDC. Never contains a password, token or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KdcError {
    /// The KDC address or credentials file is unusable (e.g. `http://`).
    #[error("KDC address: {0}")]
    Address(String),
    /// No TCP connection to the KDC.
    #[error("cannot connect to the KDC {0}")]
    Connect(String),
    /// The TLS handshake failed: not TLS at all (plain HTTP), a certificate not issued by
    /// the sealpost CA, or one that does not name the KDC host.
    #[error("KDC TLS: {0}")]
    Tls(String),
    /// HTTP-level failure.
    #[error("KDC HTTP: {0}")]
    Http(String),
    /// The KDC did not answer in time.
    #[error("the KDC did not answer in time")]
    Timeout,
    /// Unknown reader or wrong password.
    #[error("the KDC refused the credentials (unknown reader or wrong password)")]
    InvalidCredentials,
    /// The publisher revoked this reader.
    #[error("the publisher revoked this reader")]
    Revoked,
    /// Too many failed logins.
    #[error("the KDC is rate limiting logins (retry after {retry_after:?} s)")]
    RateLimited {
        /// Seconds to wait, as the KDC said.
        retry_after: Option<u64>,
    },
    /// The access token expired (the session logs in again by itself).
    #[error("the KDC access token has expired")]
    TokenExpired,
    /// The access token is unknown or was invalidated (the session logs in again).
    #[error("the KDC access token is invalid")]
    InvalidToken,
    /// This reader was granted after that epoch.
    #[error("not granted the key of epoch {0}")]
    NotGranted(u64),
    /// The KDC no longer keeps that epoch.
    #[error("the KDC has no key for epoch {0}")]
    UnknownEpoch(u64),
    /// Another error answer.
    #[error("the KDC answered {status} ({code})")]
    Server {
        /// HTTP status.
        status: u16,
        /// Error code, if any.
        code: &'static str,
    },
    /// The answer is not what the API promises (or names the wrong publisher).
    #[error("bad KDC answer: {0}")]
    BadResponse(&'static str),
}

impl KdcError {
    /// Could trying again later help (network trouble, rate limit), as opposed to a
    /// refusal that will stand (bad credentials, revoked, wrong certificate)?
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            KdcError::Connect(_)
                | KdcError::Http(_)
                | KdcError::Timeout
                | KdcError::RateLimited { .. }
                | KdcError::Server { .. }
                | KdcError::TokenExpired
                | KdcError::InvalidToken
        )
    }
}
