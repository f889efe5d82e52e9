//! X-Wing subscriber keys: the hybrid post-quantum KEM (X25519 combined with ML-KEM-768,
//! draft-connolly-cfrg-xwing-kem) under which HPKE wraps content keys for subscribers that
//! want their keys safe from a future quantum computer too. The private key is X-Wing's
//! 32-byte seed; the public key its 1,216-byte encapsulation key. Both travel as X25519's
//! do (RFC 8410 forms) under X-Wing's object identifier; the certificates are built in
//! `kem_certificate` (feature `issue`).

use pkcs8::ObjectIdentifier;
use rand::RngCore;
use x_wing::{DecapsulationKey, Decapsulator, KeyExport};
use zeroize::Zeroizing;

use crate::kem_key;
use crate::CertError;

/// id-XWing (draft-connolly-cfrg-xwing-kem).
pub const OID_XWING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.62253.25722");
/// Length of an X-Wing private key (a seed).
pub const SEED_LEN: usize = x_wing::DECAPSULATION_KEY_SIZE;
/// Length of an X-Wing public (encapsulation) key.
pub const PUBLIC_KEY_LEN: usize = x_wing::ENCAPSULATION_KEY_SIZE;

/// A fresh X-Wing key pair: the private seed as PKCS#8 PEM and the public key.
pub fn generate() -> Result<(Zeroizing<String>, Vec<u8>), CertError> {
    let mut seed = Zeroizing::new([0u8; SEED_LEN]);
    rand::rngs::OsRng.fill_bytes(&mut seed[..]);
    let public = public_key_of(&seed);
    Ok((private_key_pem(&seed)?, public))
}

/// Encodes an X-Wing private seed as PKCS#8 PEM.
pub fn private_key_pem(seed: &[u8; SEED_LEN]) -> Result<Zeroizing<String>, CertError> {
    kem_key::private_key_pem(OID_XWING, seed)
}

/// Decodes an X-Wing PKCS#8 private key (PEM), refusing any other key type.
pub fn private_key_from_pem(pem: &str) -> Result<Zeroizing<[u8; SEED_LEN]>, CertError> {
    kem_key::private_key_from_pem(OID_XWING, "X-Wing", pem)
}

/// The public (encapsulation) key of an X-Wing private seed.
pub fn public_key_of(seed: &[u8; SEED_LEN]) -> Vec<u8> {
    DecapsulationKey::from(*seed)
        .encapsulation_key()
        .to_bytes()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_key_round_trips_and_other_keys_are_refused() {
        let (pem, public) = generate().unwrap();
        assert_eq!(public.len(), PUBLIC_KEY_LEN);
        let seed = private_key_from_pem(&pem).unwrap();
        assert_eq!(public_key_of(&seed), public);
        let (x25519_pem, _) = crate::x25519::generate().unwrap();
        assert!(matches!(
            private_key_from_pem(&x25519_pem),
            Err(CertError::UnsupportedKey(_))
        ));
        assert!(matches!(
            crate::x25519::private_key_from_pem(&pem),
            Err(CertError::UnsupportedKey(_))
        ));
    }
}
