//! Subscriber certificates for KEM keys (X25519 and X-Wing, under which HPKE wraps content
//! keys); their PKCS#8 private key files are [`crate::kem_key`]'s.
//!
//! rcgen (which issues every other certificate) can only put key types it can sign with in
//! a certificate, and a KEM key cannot sign; so these certificates are built with
//! RustCrypto's `x509-cert` and signed with the same CA key, carrying the same subject,
//! role and extended key usage as an RSA subscriber certificate. As RFC 8410 says for
//! X25519, their key usage is `keyAgreement` only.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::Signer;
use pkcs8::der::asn1::{BitString, Ia5String, OctetString};
use pkcs8::der::{Decode, Encode};
use pkcs8::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use pkcs8::ObjectIdentifier;
use sha2::{Digest, Sha256};
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
use crate::kem_key::generation;
use crate::{pemfile, validate_id, CertError, Issued, Role, Validity};

const OID_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
const OID_SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");

/// Issues a subscriber certificate for the KEM public key `public` of algorithm `oid`,
/// signed by the CA whose certificate is `ca_der` and whose Ed25519 PKCS#8 key is
/// `ca_key_der`.
pub(crate) fn issue_certificate(
    ca_der: &[u8],
    ca_key_der: &[u8],
    id: &str,
    oid: ObjectIdentifier,
    public: &[u8],
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
            oid,
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
