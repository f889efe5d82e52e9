//! Typed errors of the session core. Messages never contain key material.

/// Why a session operation failed. Rejected incoming messages are not errors: they are
/// [`crate::SubscriberEvent::Rejected`] events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The identity, the CA, the revocation list or a subscriber certificate is unusable.
    #[error("certificate: {0}")]
    Certificate(#[from] sealpost_certs::CertError),
    /// Sealing, building a key message or loading an identity failed.
    #[error("sealing: {0}")]
    Seal(#[from] sealpost_protocol::SealError),
    /// No granted subscriber has this identity.
    #[error("no granted subscriber {0:?}")]
    NotGranted(String),
    /// Saved state bytes could not be read back (corrupt, or another format version).
    #[error("saved state: {0}")]
    CorruptState(String),
    /// The [`crate::StateStore`] could not make the state durable. Nothing changed: the
    /// operation that needed it had no effect and may be tried again.
    #[error("persisting the state failed: {0}")]
    Persist(String),
    /// The revocation list given is unusable (not PEM, not signed by the CA).
    #[error("revocation list: {0}")]
    RevocationList(sealpost_certs::CertError),
    /// No revocation list was given and running without one was not asked for
    /// (`insecure_no_crl`).
    #[error("no revocation list given: pass the CA's CRL, or insecure_no_crl to run without one")]
    RevocationListRequired,
    /// Key messages are turned off (KDC-only publisher).
    #[error("key messages are disabled: issue KDC credentials instead")]
    KeyMessagesDisabled,
}
