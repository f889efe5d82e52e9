//! The key distribution center (KDC): the publisher serves its content keys over HTTPS
//! to the readers it issued credentials to.
//!
//! Instead of (or beside) key messages over MQTT, every envelope's key index names the
//! KDC's address; a reader logs in there with the credentials the publisher issued
//! ([`KdcCredentials`]), gets a short-lived bearer token, and fetches the key of an epoch
//! at `<address>/epochs/<E>`. The API is in `docs/PROTOCOL.md`, section "Key distribution
//! center", and its types in [`api`].
//!
//! - HTTPS only (rustls, `ring` provider), with a server certificate issued by the
//!   security center; there is no plain-HTTP mode.
//! - Passwords are random (192 bits), shown once, and stored only as argon2id hashes in
//!   the state directory ([`readers`]), so a restart keeps them.
//! - Tokens live in memory only, hashed ([`tokens`]); failed logins are rate limited per
//!   client address, attempts in progress included ([`limiter`]); argon2 runs are bounded
//!   in number, and so are connections per client address.
//! - Readers pin the KDC: credentials carry the SHA-256 of its certificate, and the
//!   client refuses any other certificate, even one from the same CA for the same host.
//! - Revoking a reader ([`crate::Publisher::revoke`]) invalidates its credentials and
//!   tokens and rotates the content key.
//! - One audit line per key fetch (target `sealpost::kdc::audit`): reader, publisher,
//!   epoch, time, client address and outcome. Never a password, token or key.

mod cors;
pub mod limiter;
pub mod readers;
mod server;
pub mod tokens;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

// The wire types and credentials files the subscriber's KDC client shares (sealpost-client).
pub use limiter::LoginLimit;
pub use sealpost_client::kdc::{api, CredentialsError, KdcCredentials};
#[doc(hidden)]
pub use server::PlainKdc;
pub use server::{Kdc, AUDIT_TARGET};

/// Default lifetime of an access token.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// Default of [`KdcConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default of [`KdcConfig::max_connections_per_address`].
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 16;
pub use server::HANDSHAKE_TIMEOUT;
/// How often a running publisher with a KDC looks for readers that `sealpost-pub kdc
/// add-reader` added meanwhile ([`readers::ReaderRecord::pending`]) and enables them.
pub const PENDING_READER_CHECK: Duration = Duration::from_secs(1);

/// How to run the KDC beside a [`crate::Publisher`].
#[derive(Clone)]
pub struct KdcConfig {
    /// Where to listen (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The address put in key indexes and credentials, `https://host[:port][/path]`;
    /// default `https://<listen ip>:<bound port>`. Its host must be one of the names of
    /// the server certificate.
    pub public_address: Option<String>,
    /// The KDC's TLS server certificate (PEM), issued by the security center
    /// (`Profile::Server`).
    pub certificate_pem: String,
    /// Its PKCS#8 private key (PEM).
    pub key_pem: String,
    /// Lifetime of access tokens.
    pub token_lifetime: Duration,
    /// Limit on failed logins.
    pub login_limit: LoginLimit,
    /// Most connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Most connections served at once from one client address (an IPv6 /64 counts as
    /// one); more are closed at once.
    pub max_connections_per_address: usize,
    /// Most password checks (argon2, 19 MiB each) run at once; more logins wait.
    pub max_password_checks: usize,
    /// Web origins (`https://host[:port]`) whose pages may call the KDC: their CORS
    /// preflights are answered and answers carry `Access-Control-Allow-Origin` with that
    /// origin (never `*`). Empty (the default): no CORS at all.
    pub allowed_origins: Vec<String>,
}

impl std::fmt::Debug for KdcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdcConfig")
            .field("listen", &self.listen)
            .field("public_address", &self.public_address)
            .field("token_lifetime", &self.token_lifetime)
            .field("login_limit", &self.login_limit)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_address",
                &self.max_connections_per_address,
            )
            .field("max_password_checks", &self.max_password_checks)
            .field("allowed_origins", &self.allowed_origins)
            .finish_non_exhaustive()
    }
}

impl KdcConfig {
    /// A configuration with the default token lifetime, login limit and connection
    /// limits, and one password check at a time per CPU.
    pub fn new(
        listen: SocketAddr,
        certificate_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> KdcConfig {
        KdcConfig {
            listen,
            public_address: None,
            certificate_pem: certificate_pem.into(),
            key_pem: key_pem.into(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            login_limit: LoginLimit::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_password_checks: std::thread::available_parallelism().map_or(2, |n| n.get()),
            allowed_origins: Vec::new(),
        }
    }
}

/// Why the KDC could not be set up, or a reader operation failed. Never contains a
/// password, token or key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KdcError {
    /// The public address is unusable.
    #[error(transparent)]
    Address(#[from] api::InvalidAddress),
    /// The server certificate does not name the host of the public address.
    #[error("the KDC certificate does not name {0:?}")]
    CertificateName(String),
    /// The server certificate or key is unusable.
    #[error("KDC TLS setup: {0}")]
    Tls(String),
    /// Listening failed.
    #[error("KDC cannot listen on {addr}: {detail}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        detail: String,
    },
    /// The reader file could not be read or written.
    #[error("KDC reader file {path}: {detail}")]
    Store {
        /// File.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A reader id must be a valid sealpost id (letters, digits, `.`, `_`, `-`).
    #[error("invalid reader id {0:?}")]
    InvalidReader(String),
    /// No KDC address is known to write into the credentials.
    #[error("no KDC address known: give one (--kdc-address https://HOST:PORT), or run the publisher with --kdc once")]
    NoAddress,
    /// There is no publisher state directory here (nothing was ever issued in it).
    #[error("no publisher state directory at {} (give --state-dir)", .0.display())]
    NoStateDir(PathBuf),
    /// No KDC certificate is known to pin in the credentials.
    #[error("no KDC certificate known to pin: give it (--kdc-cert), or run the publisher with --kdc once")]
    NoCertificate,
    /// A credentials file is unusable.
    #[error("KDC credentials: {0}")]
    Credentials(String),
    /// A configured CORS origin is not `http(s)://host[:port]` (wildcards and `null`
    /// are refused).
    #[error("invalid KDC allowed origin {0:?}: expected https://host[:port]")]
    InvalidOrigin(String),
    /// An internal failure.
    #[error("KDC internal error: {0}")]
    Internal(&'static str),
}

impl From<CredentialsError> for KdcError {
    fn from(e: CredentialsError) -> KdcError {
        KdcError::Credentials(e.0)
    }
}

/// Issues credentials for `reader` in a publisher's state directory without running the
/// publisher (for `sealpost-pub kdc add-reader`). `address` defaults to the one the KDC
/// last served at; `kdc_certificate_pem`, the certificate the reader will accept from
/// the KDC (pinned by its SHA-256), to the one it last served with.
///
/// This process cannot start a new epoch, and the current key may have sealed messages
/// the new reader must not open (backward secrecy): the reader is recorded as pending,
/// and gets no key until a publisher enables it, at its next start or, if one runs on
/// this directory now, within [`PENDING_READER_CHECK`]. The publisher rotates first
/// (unless the current key has sealed nothing, or `rotate_on_grant` is off), so the
/// reader reads from the new epoch on. Re-issuing the credentials of an active reader
/// keeps what it was entitled to.
pub fn add_reader_offline(
    state_dir: &Path,
    reader: &str,
    address: Option<&str>,
    kdc_certificate_pem: Option<&str>,
) -> Result<KdcCredentials, crate::PublisherError> {
    let mut store = readers::ReaderStore::open(state_dir)?;
    let kdc = match address {
        Some(a) => api::KdcAddress::parse(a).map_err(KdcError::from)?,
        None => api::KdcAddress::parse(store.address().ok_or(KdcError::NoAddress)?)
            .map_err(KdcError::from)?,
    };
    let pin = match kdc_certificate_pem {
        Some(pem) => {
            let leaf = sealpost_client::transport::pem_blocks(pem, "CERTIFICATE")
                .map_err(|e| KdcError::Tls(e.to_string()))?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    KdcError::Tls("no certificate in the KDC certificate file".into())
                })?;
            let info = sealpost_certs::parse(&leaf).map_err(|e| KdcError::Tls(e.to_string()))?;
            // Credentials for a KDC that could never serve them are refused now, not at
            // the reader's first login.
            if !info.names.iter().any(|n| n.eq_ignore_ascii_case(&kdc.host)) {
                return Err(KdcError::CertificateName(kdc.host).into());
            }
            info.fingerprint_hex()
        }
        None => store
            .certificate_sha256()
            .ok_or(KdcError::NoCertificate)?
            .to_owned(),
    };
    let epoch = crate::state::PublisherState::load(state_dir)?.map_or(1, |s| s.epoch);
    let password = store.add_pending_reader(reader, epoch.saturating_add(1))?;
    Ok(KdcCredentials {
        kdc: kdc.url,
        reader: reader.to_owned(),
        password,
        kdc_certificate_sha256: pin,
    })
}

/// The readers with live credentials in a state directory.
/// A missing directory is an error, not an empty list: it is more likely the wrong path.
pub fn readers_offline(state_dir: &Path) -> Result<Vec<String>, crate::PublisherError> {
    if !state_dir.is_dir() {
        return Err(KdcError::NoStateDir(state_dir.to_owned()).into());
    }
    Ok(readers::ReaderStore::open(state_dir)?.active())
}
