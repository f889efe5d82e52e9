//! The private halves: a publisher's signing identity and a subscriber's unwrapping identity.

use std::fmt;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::SigningKey;
use rsa::RsaPrivateKey;
use sealpost_certs::{pemfile, x25519, CertificateInfo, Role, SubjectKey};

use crate::wrap::{UnwrappingKey, WrappingKey};
use crate::{ContentKey, Rejected, SealError, WrapAlgorithm, WrappedKey};

/// A publisher's Ed25519 key with its certificate. `Debug` never shows the key.
#[derive(Clone)]
pub struct PublisherIdentity {
    pub(crate) key: SigningKey,
    pub(crate) certificate: CertificateInfo,
}

impl PublisherIdentity {
    /// Loads a publisher certificate and its PKCS#8 private key (both PEM), checking that
    /// the certificate has the publisher role and that the key belongs to it.
    ///
    /// The certificate is not verified against a CA here: the publisher trusts its own
    /// certificate; subscribers do the verifying.
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<Self, SealError> {
        let der = pemfile::decode(certificate_pem, pemfile::CERTIFICATE)?;
        let certificate = sealpost_certs::parse(&der)?;
        certificate.require_role(Role::Publisher)?;
        pemfile::decode(key_pem, pemfile::PRIVATE_KEY)?;
        let key = SigningKey::from_pkcs8_pem(key_pem).map_err(|_| {
            SealError::Identity("the private key is not an Ed25519 PKCS#8 key".into())
        })?;
        Self::new(certificate, key)
    }

    /// Pairs a parsed publisher certificate with its signing key.
    pub fn new(certificate: CertificateInfo, key: SigningKey) -> Result<Self, SealError> {
        certificate.require_role(Role::Publisher)?;
        if certificate.ed25519_public_key()? != key.verifying_key() {
            return Err(SealError::Identity(
                "the private key does not belong to the certificate".into(),
            ));
        }
        Ok(PublisherIdentity { key, certificate })
    }

    /// The publisher's identity (certificate common name).
    pub fn id(&self) -> &str {
        &self.certificate.id
    }

    /// The publisher's certificate.
    pub fn certificate(&self) -> &CertificateInfo {
        &self.certificate
    }
}

impl fmt::Debug for PublisherIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublisherIdentity")
            .field("id", &self.certificate.id)
            .finish_non_exhaustive()
    }
}

/// A subscriber's private key (RSA or X25519) with its certificate. `Debug` never shows
/// the key.
#[derive(Clone)]
pub struct SubscriberIdentity {
    pub(crate) key: UnwrappingKey,
    pub(crate) certificate: CertificateInfo,
}

impl SubscriberIdentity {
    /// Loads a subscriber certificate and its PKCS#8 private key (both PEM): an RSA key
    /// for an RSA certificate, an X25519 key (RFC 8410) for an X25519 certificate.
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<Self, SealError> {
        let der = pemfile::decode(certificate_pem, pemfile::CERTIFICATE)?;
        let certificate = sealpost_certs::parse(&der)?;
        pemfile::decode(key_pem, pemfile::PRIVATE_KEY)?;
        let key = match &certificate.public_key {
            SubjectKey::X25519(_) => {
                let secret = x25519::private_key_from_pem(key_pem)?;
                UnwrappingKey::x25519(&secret).map_err(SealError::Identity)?
            }
            _ => {
                let key = RsaPrivateKey::from_pkcs8_pem(key_pem).map_err(|_| {
                    SealError::Identity("the private key is not an RSA PKCS#8 key".into())
                })?;
                UnwrappingKey::RsaOaep256(Box::new(key))
            }
        };
        Self::with_key(certificate, key)
    }

    /// Pairs a parsed RSA subscriber certificate with its RSA key.
    pub fn new(certificate: CertificateInfo, key: RsaPrivateKey) -> Result<Self, SealError> {
        Self::with_key(certificate, UnwrappingKey::RsaOaep256(Box::new(key)))
    }

    /// Pairs a parsed X25519 subscriber certificate with its raw X25519 private key.
    pub fn new_x25519(certificate: CertificateInfo, secret: &[u8; 32]) -> Result<Self, SealError> {
        let key = UnwrappingKey::x25519(secret).map_err(SealError::Identity)?;
        Self::with_key(certificate, key)
    }

    fn with_key(certificate: CertificateInfo, key: UnwrappingKey) -> Result<Self, SealError> {
        certificate.require_role(Role::Subscriber)?;
        if !key.matches(&WrappingKey::from_certificate(&certificate)?) {
            return Err(SealError::Identity(
                "the private key does not belong to the certificate".into(),
            ));
        }
        Ok(SubscriberIdentity { key, certificate })
    }

    /// How content keys are wrapped for this subscriber (by its key type).
    pub fn algorithm(&self) -> WrapAlgorithm {
        self.key.algorithm()
    }

    /// Unwraps a key wrapped for this subscriber, as the opener does for each entry of a
    /// key message once its signature verified. Refuses a wrapping made for another
    /// certificate ([`Rejected::NotForUs`]) before touching the private key.
    pub fn unwrap(&self, wrapped: &WrappedKey) -> Result<ContentKey, Rejected> {
        if wrapped.recipient_fingerprint() != &self.certificate.fingerprint {
            return Err(Rejected::NotForUs);
        }
        self.key.unwrap(wrapped.wrapping())
    }

    /// The subscriber's identity.
    pub fn id(&self) -> &str {
        &self.certificate.id
    }

    /// The subscriber's certificate.
    pub fn certificate(&self) -> &CertificateInfo {
        &self.certificate
    }
}

impl fmt::Debug for SubscriberIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriberIdentity")
            .field("id", &self.certificate.id)
            .finish_non_exhaustive()
    }
}
