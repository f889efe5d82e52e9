//! X25519 subscriber keys: the KEM keys under which HPKE (RFC 9180) wraps content keys, in
//! the forms certificates and key files carry them (RFC 8410). Their certificates are
//! built in `kem_certificate` (feature `issue`).

use pkcs8::ObjectIdentifier;
use rand::rngs::OsRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::kem_key;
use crate::CertError;

/// id-X25519 (RFC 8410).
pub const OID_X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
/// Length of an X25519 key, public or private.
pub const KEY_LEN: usize = 32;

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
    kem_key::private_key_pem(OID_X25519, secret)
}

/// Decodes an X25519 PKCS#8 private key (PEM), refusing any other key type.
pub fn private_key_from_pem(pem: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, CertError> {
    kem_key::private_key_from_pem(OID_X25519, "X25519", pem)
}

/// The public key of a raw X25519 private key.
pub fn public_key_of(secret: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
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
