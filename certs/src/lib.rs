//! # sealpost-certs: the security center
//!
//! The certificate authority of a sealpost deployment, as a library and as the
//! `sealpost-certs` command.
//!
//! ## Features
//! - Create an Ed25519 CA ([`CertificateAuthority::create`]).
//! - Issue certificates for the four roles ([`Profile`]): publishers (Ed25519, with the MQTT
//!   topic filters they may publish, carried as URI subject alternative names), subscribers
//!   (RSA-2048 or X25519, the key content keys are wrapped under:
//!   [`CertificateAuthority::issue_subscriber`]), and TLS servers and clients.
//! - Sign a device's CSR so its private key never leaves the device
//!   ([`CertificateAuthority::sign_csr`]).
//! - Revoke: signed X.509 revocation lists ([`CertificateAuthority::revocation_list`]).
//! - Verify ([`Verifier`]): signature by the CA, validity period, revocation, role, and
//!   [`CertificateInfo::may_publish`] for topic permissions.
//! - MQTT topic filter matching shared by every sealpost component ([`topic`]).
//! - Export the broker's publish/subscribe permissions for a NATS cluster ([`nats`]).
//!
//! ## Cargo features
//! - `issue`: the issuing side (creating the CA, issuing, CSR signing, revocation lists),
//!   which pulls in rcgen and x509-cert. Verification, topic rules and key files need
//!   none of it: the SDKs, the protocol core and the bindings build without it.
//!
//! ## Non-features
//! - No intermediate CAs: every certificate is issued directly by the root.
//! - No OCSP; revocation is by CRL only.
//! - No way to turn verification off.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "issue")]
mod authority;
mod error;
mod identity;
#[cfg(feature = "issue")]
mod kem_certificate;
mod kem_key;
pub mod nats;
pub mod pemfile;
pub mod topic;
mod verify;
pub mod x25519;
pub mod xwing;

#[cfg(feature = "issue")]
pub use authority::{
    CertificateAuthority, Issued, Profile, RevokedSerial, SubscriberKey, Validity,
};
pub use error::CertError;
pub use identity::{validate_id, Role};
pub use verify::{
    now_unix, parse, CertificateInfo, RevocationList, SubjectKey, Verifier, SUBSCRIBER_RSA_BITS,
};
