//! Key wrapping: the one place that knows how a content key is wrapped for a subscriber's
//! public key and unwrapped with its private key.
//!
//! Each algorithm is a variant of [`WrapAlgorithm`] (with its COSE algorithm id), of
//! [`WrappingKey`] (the public half, from the subscriber certificate) and of
//! [`UnwrappingKey`] (the private half). Key messages, the opener and the publisher SDK
//! only move [`Wrapping`]s around, so a post-quantum KEM is one more variant here.
//!
//! - RSA-OAEP-256 (COSE -41): `ciphertext = RSA-OAEP-SHA256(content key)`, no `ek`.
//! - HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM) in
//!   the Key Encryption mode of draft-ietf-cose-hpke-27 (section 3.3): `info` is the
//!   deterministic CBOR `Recipient_structure` `["HPKE Recipient", 3 (A256GCM, the
//!   algorithm the content key is used with), <the recipient's protected header bytes>,
//!   h'']`, `aad` is empty, `enc` goes in the unprotected `ek` (-4) header parameter.

use coset::cbor::value::Value;
use coset::iana;
use coset::{AsCborValue, CborSerializable, HeaderBuilder};
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use rand::rngs::OsRng;
use rand_core_09::TryRngCore;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sealpost_certs::{CertError, CertificateInfo, SubjectKey};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::envelope::LABEL_EPOCH;
use crate::{ContentKey, Rejected};

/// COSE algorithm id of HPKE Key Encryption with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256
/// and AES-256-GCM. draft-ietf-cose-hpke-27 registers no Key Encryption suite with this
/// triple (its X25519 suites use AES-128-GCM or ChaCha20-Poly1305), so sealpost uses a
/// value from COSE's private-use range (below -65536) until one is registered.
pub const COSE_ALG_HPKE_X25519_SHA256_A256GCM_KE: i64 = -65601;
/// COSE header parameter `ek` (the HPKE encapsulated key), draft-ietf-cose-hpke.
pub const COSE_HEADER_EK: i64 = -4;
/// Context string of the HPKE `Recipient_structure`.
const RECIPIENT_CONTEXT: &str = "HPKE Recipient";
/// Length of an X25519 encapsulated key.
const HPKE_EK_LEN: usize = 32;

type HpkeKem = X25519HkdfSha256;

/// How a content key is wrapped for one subscriber: one variant per subscriber key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WrapAlgorithm {
    /// RSAES-OAEP with SHA-256 (COSE -41), for RSA subscriber certificates.
    RsaOaep256,
    /// HPKE base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, in COSE-HPKE's
    /// Key Encryption mode, for X25519 subscriber certificates.
    HpkeX25519Aes256Gcm,
}

impl WrapAlgorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [WrapAlgorithm; 2] = [
        WrapAlgorithm::RsaOaep256,
        WrapAlgorithm::HpkeX25519Aes256Gcm,
    ];

    /// The COSE algorithm id in a key message's `COSE_recipient`.
    pub fn cose_id(self) -> i64 {
        match self {
            WrapAlgorithm::RsaOaep256 => iana::Algorithm::RSAES_OAEP_SHA_256 as i64,
            WrapAlgorithm::HpkeX25519Aes256Gcm => COSE_ALG_HPKE_X25519_SHA256_A256GCM_KE,
        }
    }

    /// The algorithm with COSE id `id`, if sealpost speaks it.
    pub fn from_cose_id(id: i64) -> Option<WrapAlgorithm> {
        WrapAlgorithm::ALL.into_iter().find(|a| a.cose_id() == id)
    }

    /// A short stable name, e.g. for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            WrapAlgorithm::RsaOaep256 => "RSA-OAEP-256",
            WrapAlgorithm::HpkeX25519Aes256Gcm => "HPKE-X25519-SHA256-A256GCM",
        }
    }
}

impl std::fmt::Display for WrapAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One content key wrapped for one subscriber key: the parts of a `COSE_recipient`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Wrapping {
    pub algorithm: WrapAlgorithm,
    pub epoch: u64,
    /// The serialized protected header `{1: alg, -65541: epoch}`, exactly as sent (HPKE
    /// binds these bytes).
    pub protected: Vec<u8>,
    /// The HPKE encapsulated key (`ek`); `None` for RSA-OAEP.
    pub ek: Option<Vec<u8>>,
    pub ciphertext: Vec<u8>,
}

/// The protected header of a `COSE_recipient`, serialized.
fn protected_header(algorithm: WrapAlgorithm, epoch: u64) -> Result<Vec<u8>, String> {
    let mut header = HeaderBuilder::new()
        .value(LABEL_EPOCH, Value::Integer(epoch.into()))
        .build();
    header.alg = Some(
        coset::Algorithm::from_cbor_value(Value::Integer(algorithm.cose_id().into()))
            .map_err(|e| e.to_string())?,
    );
    header.to_vec().map_err(|e| e.to_string())
}

/// The wrapping algorithm a `COSE_recipient`'s `alg` names, if sealpost speaks it.
pub(crate) fn algorithm_of(alg: &coset::Algorithm) -> Option<WrapAlgorithm> {
    match alg.clone().to_cbor_value().ok()? {
        Value::Integer(id) => WrapAlgorithm::from_cose_id(i64::try_from(id).ok()?),
        _ => None,
    }
}

/// HPKE `info`: the deterministic encoding of the `Recipient_structure`.
fn recipient_structure(protected: &[u8]) -> Vec<u8> {
    let structure = Value::Array(vec![
        Value::Text(RECIPIENT_CONTEXT.into()),
        Value::Integer((iana::Algorithm::A256GCM as i64).into()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(Vec::new()),
    ]);
    let mut out = Vec::with_capacity(protected.len() + 24);
    // Writing a Value into a Vec cannot fail; small integers and short strings are encoded
    // in their shortest form by ciborium, as deterministic encoding requires.
    let _ = ciborium::into_writer(&structure, &mut out);
    out
}

/// A subscriber's public key, ready to wrap content keys for.
#[derive(Clone)]
pub(crate) enum WrappingKey {
    RsaOaep256(RsaPublicKey),
    Hpke(<HpkeKem as Kem>::PublicKey),
}

impl std::fmt::Debug for WrappingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.algorithm().name())
    }
}

impl WrappingKey {
    /// The wrapping key of a subscriber certificate, by its key type.
    pub fn from_certificate(certificate: &CertificateInfo) -> Result<WrappingKey, CertError> {
        match &certificate.public_key {
            SubjectKey::X25519(bytes) => <HpkeKem as Kem>::PublicKey::from_bytes(bytes)
                .map(WrappingKey::Hpke)
                .map_err(|_| CertError::UnsupportedKey("invalid X25519 public key".into())),
            _ => certificate.rsa_public_key().map(WrappingKey::RsaOaep256),
        }
    }

    pub fn algorithm(&self) -> WrapAlgorithm {
        match self {
            WrappingKey::RsaOaep256(_) => WrapAlgorithm::RsaOaep256,
            WrappingKey::Hpke(_) => WrapAlgorithm::HpkeX25519Aes256Gcm,
        }
    }

    /// Wraps `key` of `epoch` (randomised: a fresh OAEP seed or HPKE ephemeral key).
    pub fn wrap(&self, epoch: u64, key: &ContentKey) -> Result<Wrapping, String> {
        let algorithm = self.algorithm();
        let protected = protected_header(algorithm, epoch)?;
        let (ek, ciphertext) = match self {
            WrappingKey::RsaOaep256(public) => {
                let ct = public
                    .encrypt(&mut OsRng, Oaep::new::<Sha256>(), key.as_bytes())
                    .map_err(|e| e.to_string())?;
                (None, ct)
            }
            WrappingKey::Hpke(public) => {
                let (encapped, ct) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, HpkeKem, _>(
                    &OpModeS::Base,
                    public,
                    &recipient_structure(&protected),
                    key.as_bytes(),
                    &[],
                    &mut rand_core_09::OsRng.unwrap_err(),
                )
                .map_err(|e| e.to_string())?;
                (Some(encapped.to_bytes().to_vec()), ct)
            }
        };
        Ok(Wrapping {
            algorithm,
            epoch,
            protected,
            ek,
            ciphertext,
        })
    }
}

/// A subscriber's private key, which unwraps the content keys wrapped for it.
#[derive(Clone)]
pub(crate) enum UnwrappingKey {
    /// Boxed: an RSA key is ten times the size of an X25519 one.
    RsaOaep256(Box<RsaPrivateKey>),
    Hpke(<HpkeKem as Kem>::PrivateKey),
}

impl UnwrappingKey {
    /// The X25519 private key `secret` (raw bytes).
    pub fn x25519(secret: &[u8; 32]) -> Result<UnwrappingKey, String> {
        <HpkeKem as Kem>::PrivateKey::from_bytes(secret)
            .map(UnwrappingKey::Hpke)
            .map_err(|_| "invalid X25519 private key".to_owned())
    }

    /// Does this private key belong to `public`?
    pub fn matches(&self, public: &WrappingKey) -> bool {
        match (self, public) {
            (UnwrappingKey::RsaOaep256(private), WrappingKey::RsaOaep256(public)) => {
                &private.to_public_key() == public
            }
            (UnwrappingKey::Hpke(private), WrappingKey::Hpke(public)) => {
                HpkeKem::sk_to_pk(private).to_bytes() == public.to_bytes()
            }
            _ => false,
        }
    }

    pub fn algorithm(&self) -> WrapAlgorithm {
        match self {
            UnwrappingKey::RsaOaep256(_) => WrapAlgorithm::RsaOaep256,
            UnwrappingKey::Hpke(_) => WrapAlgorithm::HpkeX25519Aes256Gcm,
        }
    }

    /// Unwraps one entry. The entry's algorithm must be this key's: an RSA key is never
    /// handed an HPKE entry or the reverse ([`Rejected::WrongKeyType`]).
    pub fn unwrap(&self, wrapping: &Wrapping) -> Result<ContentKey, Rejected> {
        if wrapping.algorithm != self.algorithm() {
            return Err(Rejected::WrongKeyType {
                key: self.algorithm(),
                entry: wrapping.algorithm,
            });
        }
        let plain = match self {
            UnwrappingKey::RsaOaep256(private) => {
                if wrapping.ek.is_some() {
                    return Err(Rejected::Malformed("ek in an RSA-OAEP recipient"));
                }
                Zeroizing::new(
                    private
                        .decrypt(Oaep::new::<Sha256>(), &wrapping.ciphertext)
                        .map_err(|_| Rejected::DecryptFailed)?,
                )
            }
            UnwrappingKey::Hpke(private) => {
                let ek = wrapping
                    .ek
                    .as_deref()
                    .filter(|ek| ek.len() == HPKE_EK_LEN)
                    .ok_or(Rejected::Malformed("HPKE recipient without a 32-byte ek"))?;
                let encapped = <HpkeKem as Kem>::EncappedKey::from_bytes(ek)
                    .map_err(|_| Rejected::Malformed("HPKE ek"))?;
                Zeroizing::new(
                    hpke::single_shot_open::<AesGcm256, HkdfSha256, HpkeKem>(
                        &OpModeR::Base,
                        private,
                        &encapped,
                        &recipient_structure(&wrapping.protected),
                        &wrapping.ciphertext,
                        &[],
                    )
                    .map_err(|_| Rejected::DecryptFailed)?,
                )
            }
        };
        ContentKey::from_slice(&plain).ok_or(Rejected::DecryptFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpke_pair() -> (WrappingKey, UnwrappingKey) {
        let secret = [0x42; 32];
        let public = sealpost_certs::x25519::public_key_of(&secret);
        (
            WrappingKey::Hpke(<HpkeKem as Kem>::PublicKey::from_bytes(&public).unwrap()),
            UnwrappingKey::x25519(&secret).unwrap(),
        )
    }

    fn rsa_pair() -> (WrappingKey, UnwrappingKey) {
        // Small key: these tests are about the seam, not RSA's strength (the certificate
        // path refuses keys under 2048 bits).
        let private = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        (
            WrappingKey::RsaOaep256(private.to_public_key()),
            UnwrappingKey::RsaOaep256(Box::new(private)),
        )
    }

    #[test]
    fn each_algorithm_round_trips_and_names_itself() {
        for (public, private) in [hpke_pair(), rsa_pair()] {
            assert!(private.matches(&public));
            assert_eq!(public.algorithm(), private.algorithm());
            let key = ContentKey::generate();
            let w = public.wrap(9, &key).unwrap();
            assert_eq!(w.epoch, 9);
            assert_eq!(
                WrapAlgorithm::from_cose_id(w.algorithm.cose_id()),
                Some(w.algorithm)
            );
            assert_eq!(private.unwrap(&w).unwrap(), key);
            // Randomised: wrapping twice never gives the same ciphertext.
            assert_ne!(public.wrap(9, &key).unwrap().ciphertext, w.ciphertext);
        }
        assert_eq!(WrapAlgorithm::from_cose_id(-65536), None);
    }

    #[test]
    fn hpke_rejects_wrong_key_tampering_and_truncation() {
        let (public, private) = hpke_pair();
        let w = public.wrap(1, &ContentKey::generate()).unwrap();
        let other = UnwrappingKey::x25519(&[0x43; 32]).unwrap();
        assert!(!other.matches(&public));
        assert_eq!(other.unwrap(&w), Err(Rejected::DecryptFailed));
        let mut bad = w.clone();
        bad.ek.as_mut().unwrap()[0] ^= 1;
        assert_eq!(private.unwrap(&bad), Err(Rejected::DecryptFailed));
        let mut bad = w.clone();
        bad.ciphertext[0] ^= 1;
        assert_eq!(private.unwrap(&bad), Err(Rejected::DecryptFailed));
        let mut bad = w.clone();
        bad.ciphertext.pop();
        assert_eq!(private.unwrap(&bad), Err(Rejected::DecryptFailed));
        // The protected header (epoch) is bound through the Recipient_structure.
        let mut bad = w.clone();
        bad.protected = protected_header(WrapAlgorithm::HpkeX25519Aes256Gcm, 2).unwrap();
        assert_eq!(private.unwrap(&bad), Err(Rejected::DecryptFailed));
        let mut bad = w.clone();
        bad.ek.as_mut().unwrap().pop();
        assert!(matches!(private.unwrap(&bad), Err(Rejected::Malformed(_))));
        let mut bad = w;
        bad.ek = None;
        assert!(matches!(private.unwrap(&bad), Err(Rejected::Malformed(_))));
    }

    #[test]
    fn rsa_rejects_wrong_key_tampering_and_truncation() {
        let (public, private) = rsa_pair();
        let w = public.wrap(1, &ContentKey::generate()).unwrap();
        let (_, other) = rsa_pair();
        assert_eq!(other.unwrap(&w), Err(Rejected::DecryptFailed));
        let mut bad = w.clone();
        bad.ciphertext[5] ^= 1;
        assert_eq!(private.unwrap(&bad), Err(Rejected::DecryptFailed));
        let mut bad = w.clone();
        bad.ciphertext.truncate(100);
        assert_eq!(private.unwrap(&bad), Err(Rejected::DecryptFailed));
        let mut bad = w;
        bad.ek = Some(vec![0; 32]);
        assert!(matches!(private.unwrap(&bad), Err(Rejected::Malformed(_))));
    }

    #[test]
    fn a_key_never_unwraps_the_other_algorithm() {
        let (rsa_public, rsa_private) = rsa_pair();
        let (hpke_public, hpke_private) = hpke_pair();
        assert!(!rsa_private.matches(&hpke_public) && !hpke_private.matches(&rsa_public));
        let key = ContentKey::generate();
        assert_eq!(
            rsa_private.unwrap(&hpke_public.wrap(1, &key).unwrap()),
            Err(Rejected::WrongKeyType {
                key: WrapAlgorithm::RsaOaep256,
                entry: WrapAlgorithm::HpkeX25519Aes256Gcm
            })
        );
        assert_eq!(
            hpke_private.unwrap(&rsa_public.wrap(1, &key).unwrap()),
            Err(Rejected::WrongKeyType {
                key: WrapAlgorithm::HpkeX25519Aes256Gcm,
                entry: WrapAlgorithm::RsaOaep256
            })
        );
    }
}
