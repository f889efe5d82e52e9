//! Typed errors of the shared client code (the SDKs convert them into their own).

use std::path::PathBuf;

/// Why a broker address, TLS set-up or state file was unusable. Messages never contain
/// key material. The publisher and subscriber SDKs wrap it in their own error types with
/// the same wording.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker address could not be understood.
    #[error("invalid broker address {0:?}: expected mqtt://, mqtts://, ws:// or wss://host:port")]
    InvalidAddress(String),
    /// TLS could not be configured (bad CA or client certificate).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A certificate in a PEM file is unusable.
    #[error("certificate: {0}")]
    Certificate(#[from] sealpost_certs::CertError),
    /// Reading or writing a state file failed.
    #[error("state file {path}: {detail}")]
    State {
        /// File involved.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}
