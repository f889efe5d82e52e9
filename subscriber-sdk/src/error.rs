//! Typed errors of the subscriber SDK (setup and client failures; rejected messages are
//! [`Rejection`](crate::Rejection)s, not errors).

use std::path::PathBuf;

/// Why a subscriber operation failed. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriberError {
    /// Connection settings are unusable (address, TLS).
    #[error("connection settings: {0}")]
    Settings(#[from] sealpost_client::ClientError),
    /// The subscriber identity, the CA or the revocation list is unusable.
    #[error("certificate: {0}")]
    Certificate(#[from] sealpost_certs::CertError),
    /// The subscriber identity is unusable.
    #[error("identity: {0}")]
    Identity(#[from] sealpost_protocol::SealError),
    /// A KDC client could not be set up (e.g. a credentials file with an `http://`
    /// address).
    #[error("KDC: {0}")]
    Kdc(#[from] crate::KdcError),
    /// A persistent session was asked for without a client id to find it by.
    #[error("a persistent session needs a client id of its own (client_id, -i)")]
    PersistentSessionWithoutClientId,
    /// Not a valid MQTT topic filter.
    #[error("invalid topic filter {0:?}")]
    InvalidFilter(String),
    /// No revocation list was configured, and `insecure_no_crl` was not set.
    #[error(
        "no revocation list: give the CA's CRL (--crl), or set insecure_no_crl \
         (--insecure-no-crl) to accept revoked publishers"
    )]
    NoRevocationList,
    /// The revocation list file could not be read, or is not a current list signed by
    /// the CA.
    #[error("revocation list {path}: {detail}")]
    RevocationList {
        /// File involved.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Reading or writing the state directory failed.
    #[error("state file {path}: {detail}")]
    State {
        /// File involved.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The first connection attempt failed: the broker refused the login (CONNACK
    /// return code), nothing listens there, or TLS failed.
    #[error("cannot connect to the broker at {broker}: {reason}")]
    ConnectFailed {
        /// The broker address.
        broker: String,
        /// Why, in words.
        reason: String,
    },
    /// The broker refused a subscription (SUBACK failure: its ACL does not let this
    /// client subscribe there).
    #[error("the broker refused the subscription to {0:?} (not authorised)")]
    SubscriptionRefused(String),
    /// The broker did not accept the connection or subscription in time.
    #[error("broker did not answer: {0}")]
    Timeout(&'static str),
    /// The MQTT client refused the request (its event loop has stopped).
    #[error("MQTT client: {0}")]
    Client(#[from] rumqttc::ClientError),
}
