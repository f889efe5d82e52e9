//! X25519 subscriber keys: the KEM keys under which HPKE (RFC 9180) wraps content keys, in
//! the forms certificates and key files carry them (RFC 8410), and the certificates that
//! bind them to a subscriber.
//!
//! rcgen (which issues every other certificate) can only put key types it can sign with in
//! a certificate, and X25519 cannot sign; so these certificates are built with RustCrypto's
//! `x509-cert` and signed with the same CA key, carrying the same subject, role and
//! extended key usage as an RSA subscriber certificate. Per RFC 8410 their key usage is
//! `keyAgreement` only.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::Signer;
use pkcs8::der::asn1::{BitString, Ia5String, OctetString, OctetStringRef};
use pkcs8::der::{Decode, Encode};
use pkcs8::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use pkcs8::{AlgorithmIdentifierRef, ObjectIdentifier, PrivateKeyInfo};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use x509_cert::builder::{Builder, CertificateBuilder, Profile as BuilderProfile};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity as X509Validity};
use x509_cert::Certificate;
use zeroize::Zeroizing;

use crate::identity::ROLE_URI_PREFIX;
use crate::{pemfile, validate_id, CertError, Issued, Role, Validity};

/// id-X25519 (RFC 8410).
pub const OID_X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
/// Length of an X25519 key, public or private.
pub const KEY_LEN: usize = 32;

const OID_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
const OID_SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");

/// A fresh X25519 key pair: the private key as PKCS#8 PEM (RFC 8410) and the public key.
pub fn generate() -> Result<(Zeroizing<String>, [u8; KEY_LEN]), CertError> {
    let secret = StaticSecret::random_from_rng(OsRng);
    let public = PublicKey::from(&secret).to_bytes();
    let pem = private_key_pem(&secret.to_bytes())?;
    Ok((pem, public))
}

/// Encodes a raw X25519 private key as PKCS#8 PEM (RFC 8410: the private key field holds
/// the 32 bytes wrapped in an OCTET STRING of their own).
pub fn private_key_pem(secret: &[u8; KEY_LEN]) -> Result<Zeroizing<String>, CertError> {
    let inner = Zeroizing::new(
        OctetStringRef::new(secret)
            .and_then(|o| o.to_der())
            .map_err(generation)?,
    );
    let info = PrivateKeyInfo {
        algorithm: AlgorithmIdentifierRef {
            oid: OID_X25519,
            parameters: None,
        },
        private_key: &inner,
        public_key: None,
    };
    let der = Zeroizing::new(info.to_der().map_err(generation)?);
    Ok(Zeroizing::new(pemfile::encode(&der, pemfile::PRIVATE_KEY)))
}

/// Decodes an X25519 PKCS#8 private key (PEM), refusing any other key type.
pub fn private_key_from_pem(pem: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, CertError> {
    let der = Zeroizing::new(pemfile::decode(pem, pemfile::PRIVATE_KEY)?);
    let not_x25519 = || CertError::UnsupportedKey("the private key is not an X25519 key".into());
    let info = PrivateKeyInfo::from_der(&der).map_err(|_| not_x25519())?;
    if info.algorithm.oid != OID_X25519 || info.algorithm.parameters.is_some() {
        return Err(not_x25519());
    }
    let inner = OctetStringRef::from_der(info.private_key).map_err(|_| not_x25519())?;
    let bytes: [u8; KEY_LEN] = inner.as_bytes().try_into().map_err(|_| not_x25519())?;
    Ok(Zeroizing::new(bytes))
}

/// The public key of a raw X25519 private key.
pub fn public_key_of(secret: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

/// Issues a subscriber certificate for the X25519 public key `public`, signed by the CA
/// whose certificate is `ca_der` and whose Ed25519 PKCS#8 key is `ca_key_der`.
pub(crate) fn issue_certificate(
    ca_der: &[u8],
    ca_key_der: &[u8],
    id: &str,
    public: &[u8; KEY_LEN],
    private_key_pem: Zeroizing<String>,
    validity: Validity,
) -> Result<Issued, CertError> {
    validate_id(id)?;
    let ca = Certificate::from_der(ca_der).map_err(generation)?;
    let ca_key = ed25519_dalek::SigningKey::from_pkcs8_der(ca_key_der).map_err(generation)?;
    let ca_key_id = ca
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == OID_SUBJECT_KEY_ID)
        .and_then(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok())
        .ok_or_else(|| CertError::Generation("the CA certificate has no key identifier".into()))?;
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: OID_X25519,
            parameters: None,
        },
        subject_public_key: BitString::from_bytes(public).map_err(generation)?,
    };
    // The ids are validated to [A-Za-z0-9._-], so they need no escaping in a DN string.
    let subject = Name::from_str(&format!("CN={id}")).map_err(generation)?;
    let mut builder = CertificateBuilder::new(
        BuilderProfile::Manual {
            issuer: Some(ca.tbs_certificate.subject.clone()),
        },
        SerialNumber::new(&crate::authority::random_serial_bytes()).map_err(generation)?,
        X509Validity {
            not_before: time_of(validity.not_before)?,
            not_after: time_of(validity.not_after)?,
        },
        subject,
        spki,
        &ca_key,
    )
    .map_err(generation)?;
    // Key identifiers as rcgen makes them for the other certificates (KeyIdMethod::Sha256:
    // the first 20 bytes of SHA-256 of the key).
    let key_id = OctetString::new(&Sha256::digest(public)[..20]).map_err(generation)?;
    builder
        .add_extension(&SubjectKeyIdentifier(key_id))
        .map_err(generation)?;
    builder
        .add_extension(&AuthorityKeyIdentifier {
            key_identifier: Some(ca_key_id.0),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        })
        .map_err(generation)?;
    builder
        .add_extension(&KeyUsage(KeyUsages::KeyAgreement.into()))
        .map_err(generation)?;
    builder
        .add_extension(&ExtendedKeyUsage(vec![OID_CLIENT_AUTH]))
        .map_err(generation)?;
    let role_uri = format!("{ROLE_URI_PREFIX}{}", Role::Subscriber);
    builder
        .add_extension(&SubjectAltName(vec![
            GeneralName::UniformResourceIdentifier(Ia5String::new(&role_uri).map_err(generation)?),
        ]))
        .map_err(generation)?;
    let tbs = builder.finalize().map_err(generation)?;
    let signature = ca_key.sign(&tbs).to_bytes();
    let certificate = builder
        .assemble(BitString::from_bytes(&signature).map_err(generation)?)
        .map_err(generation)?;
    let der = certificate.to_der().map_err(generation)?;
    Ok(Issued {
        certificate_pem: pemfile::encode(&der, pemfile::CERTIFICATE),
        private_key_pem: private_key_pem.to_string(),
    })
}

fn time_of(t: time::OffsetDateTime) -> Result<Time, CertError> {
    let secs = u64::try_from(t.unix_timestamp())
        .map_err(|_| CertError::Generation("validity before 1970".into()))?;
    Time::try_from(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).map_err(generation)
}

fn generation(e: impl std::fmt::Display) -> CertError {
    CertError::Generation(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_key_round_trips_and_other_keys_are_refused() {
        let (pem, public) = generate().unwrap();
        let secret = private_key_from_pem(&pem).unwrap();
        assert_eq!(public_key_of(&secret), public);
        // An Ed25519 PKCS#8 key is not an X25519 key.
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let ed = ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .to_pkcs8_pem(pkcs8::LineEnding::LF)
            .unwrap();
        assert!(matches!(
            private_key_from_pem(&ed),
            Err(CertError::UnsupportedKey(_))
        ));
        assert!(private_key_from_pem("not pem").is_err());
    }
}
