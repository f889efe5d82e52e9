//! The one error type of the security center.

use std::path::PathBuf;

/// Everything that can go wrong while issuing, loading or verifying certificates.
///
/// Messages name files and identities but never include key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The input is not PEM, or holds a different kind of PEM block than expected.
    #[error("expected a PEM block of type {expected}, found {found}")]
    WrongPemType {
        /// The PEM label we needed, e.g. `CERTIFICATE`.
        expected: &'static str,
        /// What the input held instead.
        found: String,
    },
    /// The DER inside could not be parsed as the expected structure.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What we tried to parse.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// An identity string is not allowed (see [`crate::validate_id`]).
    #[error("invalid identity {0:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -, not starting with '.'")]
    InvalidId(String),
    /// A topic or topic filter is not valid MQTT.
    #[error("invalid MQTT topic filter {0:?}")]
    InvalidTopicFilter(String),
    /// The certificate was not issued by the trusted CA (wrong issuer or bad signature).
    #[error("certificate of {subject:?} was not issued by the trusted CA")]
    UntrustedIssuer {
        /// Subject common name, for the operator.
        subject: String,
    },
    /// The certificate is not valid yet.
    #[error("certificate of {subject:?} is not valid before {not_before} (unix seconds)")]
    NotYetValid {
        /// Subject common name.
        subject: String,
        /// Start of validity.
        not_before: i64,
    },
    /// The certificate has expired.
    #[error("certificate of {subject:?} expired at {not_after} (unix seconds)")]
    Expired {
        /// Subject common name.
        subject: String,
        /// End of validity.
        not_after: i64,
    },
    /// The certificate appears in the trusted revocation list.
    #[error("certificate of {subject:?} (serial {serial}) is revoked")]
    Revoked {
        /// Subject common name.
        subject: String,
        /// Hex serial number.
        serial: String,
    },
    /// The certificate's role is not the one required here.
    #[error("certificate of {subject:?} has role {found}, expected {expected}")]
    WrongRole {
        /// Subject common name.
        subject: String,
        /// Required role.
        expected: crate::Role,
        /// Role in the certificate.
        found: crate::Role,
    },
    /// The key is not of the type this role needs (e.g. a subscriber key that is not RSA).
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    /// The revocation list is not signed by the CA, or its validity has passed.
    #[error("revocation list rejected: {0}")]
    BadRevocationList(String),
    /// rcgen refused to build a certificate, CSR or CRL.
    #[error("certificate generation failed: {0}")]
    Generation(String),
}

#[cfg(feature = "issue")]
impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        CertError::Generation(e.to_string())
    }
}
