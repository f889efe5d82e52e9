//! PKCS#8 private key files of KEM subscriber keys (X25519 and X-Wing), the RFC 8410 way.
//! Reading them is needed wherever a subscriber opens key messages; writing them, where
//! keys are generated. Their certificates are issued in `kem_certificate` (feature
//! `issue`).

use pkcs8::der::asn1::OctetStringRef;
use pkcs8::der::{Decode, Encode};
use pkcs8::{AlgorithmIdentifierRef, ObjectIdentifier, PrivateKeyInfo};
use zeroize::Zeroizing;

use crate::{pemfile, CertError};

/// Encodes the raw private key `secret` of algorithm `oid` as PKCS#8 PEM, the RFC 8410 way:
/// the private key field holds the bytes wrapped in an OCTET STRING of their own.
pub(crate) fn private_key_pem(
    oid: ObjectIdentifier,
    secret: &[u8],
) -> Result<Zeroizing<String>, CertError> {
    let inner = Zeroizing::new(
        OctetStringRef::new(secret)
            .and_then(|o| o.to_der())
            .map_err(generation)?,
    );
    let info = PrivateKeyInfo {
        algorithm: AlgorithmIdentifierRef {
            oid,
            parameters: None,
        },
        private_key: &inner,
        public_key: None,
    };
    let der = Zeroizing::new(info.to_der().map_err(generation)?);
    Ok(Zeroizing::new(pemfile::encode(&der, pemfile::PRIVATE_KEY)))
}

/// Decodes a PKCS#8 private key (PEM) of algorithm `oid` written by [`private_key_pem`],
/// refusing any other key type (`name` says which was expected) or length.
pub(crate) fn private_key_from_pem<const LEN: usize>(
    oid: ObjectIdentifier,
    name: &str,
    pem: &str,
) -> Result<Zeroizing<[u8; LEN]>, CertError> {
    let der = Zeroizing::new(pemfile::decode(pem, pemfile::PRIVATE_KEY)?);
    let wrong = || CertError::UnsupportedKey(format!("the private key is not an {name} key"));
    let info = PrivateKeyInfo::from_der(&der).map_err(|_| wrong())?;
    if info.algorithm.oid != oid || info.algorithm.parameters.is_some() {
        return Err(wrong());
    }
    let inner = OctetStringRef::from_der(info.private_key).map_err(|_| wrong())?;
    let bytes: [u8; LEN] = inner.as_bytes().try_into().map_err(|_| wrong())?;
    Ok(Zeroizing::new(bytes))
}

/// An encoding failure, as the error certificate generation reports.
pub(crate) fn generation(e: impl std::fmt::Display) -> CertError {
    CertError::Generation(e.to_string())
}
