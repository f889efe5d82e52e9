//! Typed errors of the publisher SDK.

use std::path::PathBuf;

/// Why a publisher operation failed. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublisherError {
    /// The broker address could not be understood.
    #[error("invalid broker address {0:?}: expected mqtt://, mqtts://, ws:// or wss://host:port")]
    InvalidAddress(String),
    /// TLS could not be configured (bad CA or client certificate).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The publisher identity, the CA or a subscriber certificate is unusable.
    #[error("certificate: {0}")]
    Certificate(#[from] sealpost_certs::CertError),
    /// Sealing or building a key message failed.
    #[error("sealing: {0}")]
    Seal(#[from] sealpost_protocol::SealError),
    /// No granted subscriber has this identity.
    #[error("no granted subscriber {0:?}")]
    NotGranted(String),
    /// Reading or writing the state directory failed.
    #[error("state file {path}: {detail}")]
    State {
        /// File involved.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Another publisher (process or [`crate::Publisher`]) is running on this state
    /// directory: two would reuse sequence numbers and overwrite each other's state.
    #[error("state directory {dir} is in use by another publisher (it holds {lock})", lock = crate::state::LOCK_FILE)]
    StateLocked {
        /// The state directory.
        dir: PathBuf,
    },
    /// No revocation list was given. The publisher re-checks its readers' certificates
    /// against the CA's revocation list; running without one must be asked for
    /// explicitly (`insecure_no_crl`, `--insecure-no-crl`).
    #[error("no revocation list given: pass the CA's CRL (--crl), or --insecure-no-crl to run without one")]
    RevocationListRequired,
    /// The revocation list file could not be read.
    #[error("revocation list {path}: {detail}")]
    RevocationList {
        /// File involved.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The first connection attempt failed: the broker refused the login (CONNACK
    /// return code), nothing listens there, or TLS failed (see [`crate::link::explain`]).
    #[error("cannot connect to the broker at {broker}: {reason}")]
    ConnectFailed {
        /// The broker address.
        broker: String,
        /// Why, in words.
        reason: String,
    },
    /// The broker did not accept the connection in time.
    #[error("could not connect to the broker at {0}")]
    NotConnected(String),
    /// The key distribution center could not start, or a reader operation failed.
    #[error("KDC: {0}")]
    Kdc(#[from] crate::kdc::KdcError),
    /// The broker did not take the key messages of these new grants: they did not come
    /// back as retained messages (see [`crate::PublisherConfig::confirm_key_messages`]).
    /// New grants are undone (the key rotates); renewed ones stay. The sealpost broker drops key messages from any client but the
    /// publisher's certificate.
    #[error(
        "the broker did not take the key message for {} (not read back within {}s): key \
         topics need the publisher's certificate: connect over TLS with --cert \
         (mqtts://, the publisher certificate as TLS client certificate)",
        subscribers.join(", "),
        waited.as_secs()
    )]
    KeyMessagesRefused {
        /// The subscribers whose key message did not come back.
        subscribers: Vec<String>,
        /// How long the publisher waited for them.
        waited: std::time::Duration,
    },
    /// This publisher runs no KDC.
    #[error("this publisher runs no KDC")]
    NoKdc,
    /// Key messages are turned off (KDC-only publisher): grant readers with KDC
    /// credentials instead.
    #[error("key messages are disabled: issue KDC credentials instead")]
    KeyMessagesDisabled,
    /// The burst this message was queued in could not be sealed or sent (the error is
    /// reported in full to the first message of the burst), or the publisher stopped.
    #[error("burst failed: {0}")]
    BurstFailed(String),
    /// The MQTT client refused the request (its event loop has stopped).
    #[error("MQTT client: {0}")]
    Client(#[from] rumqttc::ClientError),
    /// Preparing the next epoch stopped before it finished (the publisher is closing).
    /// Nothing was lost: the next rotation wraps and signs what was not prepared.
    #[error("preparing the next epoch stopped: {0}")]
    PreparationStopped(String),
}

impl From<sealpost_client::crl::CrlFileError> for PublisherError {
    fn from(e: sealpost_client::crl::CrlFileError) -> Self {
        PublisherError::RevocationList {
            path: e.path,
            detail: e.detail,
        }
    }
}

impl From<sealpost_client::ClientError> for PublisherError {
    /// The shared connection code's errors, under the variants (and words) they had here.
    fn from(e: sealpost_client::ClientError) -> PublisherError {
        use sealpost_client::ClientError as E;
        match e {
            E::InvalidAddress(a) => PublisherError::InvalidAddress(a),
            E::Tls(detail) => PublisherError::Tls(detail),
            E::Certificate(e) => PublisherError::Certificate(e),
            E::State { path, detail } => PublisherError::State { path, detail },
            other => PublisherError::Tls(other.to_string()),
        }
    }
}

impl From<sealpost_session::SessionError> for PublisherError {
    /// The core's errors in the SDK's terms. A failed save is a state-file error (the
    /// store's message names the file); corrupt state bytes too.
    fn from(e: sealpost_session::SessionError) -> PublisherError {
        use sealpost_session::SessionError as E;
        match e {
            E::Certificate(e) | E::RevocationList(e) => PublisherError::Certificate(e),
            E::Seal(e) => PublisherError::Seal(e),
            E::NotGranted(id) => PublisherError::NotGranted(id),
            E::RevocationListRequired => PublisherError::RevocationListRequired,
            E::KeyMessagesDisabled => PublisherError::KeyMessagesDisabled,
            E::Persist(detail) | E::CorruptState(detail) => PublisherError::State {
                path: PathBuf::from(crate::state::STATE_FILE),
                detail,
            },
            other => PublisherError::BurstFailed(other.to_string()),
        }
    }
}
