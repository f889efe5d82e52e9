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
//! - HPKE the same way with the X-Wing KEM (X25519 combined with ML-KEM-768, KEM id
//!   0x647a of draft-ietf-hpke-pq) instead of DHKEM(X25519): a post-quantum hybrid, whose
//!   `ek` is 1,120 bytes.

use coset::cbor::value::Value;
use coset::iana;
use coset::{AsCborValue, CborSerializable, HeaderBuilder};
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::{X25519HkdfSha256, XWing};
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use rand::rngs::OsRng;
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
/// COSE algorithm id of HPKE Key Encryption with the X-Wing KEM (X25519 + ML-KEM-768),
/// HKDF-SHA256 and AES-256-GCM: no COSE registration exists yet, so a private-use value
/// next to [`COSE_ALG_HPKE_X25519_SHA256_A256GCM_KE`].
pub const COSE_ALG_HPKE_XWING_SHA256_A256GCM_KE: i64 = -65602;
/// COSE header parameter `ek` (the HPKE encapsulated key), draft-ietf-cose-hpke.
pub const COSE_HEADER_EK: i64 = -4;
/// Context string of the HPKE `Recipient_structure`.
const RECIPIENT_CONTEXT: &str = "HPKE Recipient";

/// How a content key is wrapped for one subscriber: one variant per subscriber key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WrapAlgorithm {
    /// RSAES-OAEP with SHA-256 (COSE -41), for RSA subscriber certificates.
    RsaOaep256,
    /// HPKE base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, in COSE-HPKE's
    /// Key Encryption mode, for X25519 subscriber certificates.
    HpkeX25519Aes256Gcm,
    /// HPKE base mode with the X-Wing hybrid KEM (X25519 + ML-KEM-768), HKDF-SHA256,
    /// AES-256-GCM, in COSE-HPKE's Key Encryption mode, for X-Wing subscriber certificates.
    HpkeXWingAes256Gcm,
}

impl WrapAlgorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [WrapAlgorithm; 3] = [
        WrapAlgorithm::RsaOaep256,
        WrapAlgorithm::HpkeX25519Aes256Gcm,
        WrapAlgorithm::HpkeXWingAes256Gcm,
    ];

    /// The COSE algorithm id in a key message's `COSE_recipient`.
    pub fn cose_id(self) -> i64 {
        match self {
            WrapAlgorithm::RsaOaep256 => iana::Algorithm::RSAES_OAEP_SHA_256 as i64,
            WrapAlgorithm::HpkeX25519Aes256Gcm => COSE_ALG_HPKE_X25519_SHA256_A256GCM_KE,
            WrapAlgorithm::HpkeXWingAes256Gcm => COSE_ALG_HPKE_XWING_SHA256_A256GCM_KE,
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
            WrapAlgorithm::HpkeXWingAes256Gcm => "HPKE-XWING-SHA256-A256GCM",
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
    Hpke(<X25519HkdfSha256 as Kem>::PublicKey),
    /// Boxed: 1,216 bytes.
    HpkeXWing(Box<<XWing as Kem>::PublicKey>),
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
            SubjectKey::X25519(bytes) => <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(bytes)
                .map(WrappingKey::Hpke)
                .map_err(|_| CertError::UnsupportedKey("invalid X25519 public key".into())),
            SubjectKey::XWing(bytes) => <XWing as Kem>::PublicKey::from_bytes(bytes)
                .map(|k| WrappingKey::HpkeXWing(Box::new(k)))
                .map_err(|_| CertError::UnsupportedKey("invalid X-Wing public key".into())),
            _ => certificate.rsa_public_key().map(WrappingKey::RsaOaep256),
        }
    }

    pub fn algorithm(&self) -> WrapAlgorithm {
        match self {
            WrappingKey::RsaOaep256(_) => WrapAlgorithm::RsaOaep256,
            WrappingKey::Hpke(_) => WrapAlgorithm::HpkeX25519Aes256Gcm,
            WrappingKey::HpkeXWing(_) => WrapAlgorithm::HpkeXWingAes256Gcm,
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
            WrappingKey::Hpke(public) => hpke_seal::<X25519HkdfSha256>(public, &protected, key)?,
            WrappingKey::HpkeXWing(public) => hpke_seal::<XWing>(public, &protected, key)?,
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

/// HPKE single-shot seal of `key` in COSE-HPKE's Key Encryption mode: `(ek, ciphertext)`.
fn hpke_seal<K: Kem>(
    public: &K::PublicKey,
    protected: &[u8],
    key: &ContentKey,
) -> Result<(Option<Vec<u8>>, Vec<u8>), String> {
    let (encapped, ct) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, K>(
        &OpModeS::Base,
        public,
        &recipient_structure(protected),
        key.as_bytes(),
        &[],
    )
    .map_err(|e| e.to_string())?;
    Ok((Some(encapped.to_bytes().to_vec()), ct))
}

/// HPKE single-shot open of a Key Encryption mode recipient: the wrapped key's bytes.
/// An `ek` of the wrong length for `K` is malformed; anything else that does not open
/// (wrong key, tampered `ek`, ciphertext or protected header) fails decryption.
fn hpke_open<K: Kem>(
    private: &K::PrivateKey,
    wrapping: &Wrapping,
) -> Result<Zeroizing<Vec<u8>>, Rejected> {
    let ek = wrapping
        .ek
        .as_deref()
        .ok_or(Rejected::Malformed("HPKE recipient without ek"))?;
    let encapped = <K as Kem>::EncappedKey::from_bytes(ek)
        .map_err(|_| Rejected::Malformed("HPKE ek of the wrong length"))?;
    hpke::single_shot_open::<AesGcm256, HkdfSha256, K>(
        &OpModeR::Base,
        private,
        &encapped,
        &recipient_structure(&wrapping.protected),
        &wrapping.ciphertext,
        &[],
    )
    .map(Zeroizing::new)
    .map_err(|_| Rejected::DecryptFailed)
}

/// A subscriber's private key, which unwraps the content keys wrapped for it.
#[derive(Clone)]
pub(crate) enum UnwrappingKey {
    /// Boxed: an RSA key is ten times the size of an X25519 one.
    RsaOaep256(Box<RsaPrivateKey>),
    Hpke(<X25519HkdfSha256 as Kem>::PrivateKey),
    /// Boxed: the expanded ML-KEM key is kilobytes.
    HpkeXWing(Box<<XWing as Kem>::PrivateKey>),
}

impl UnwrappingKey {
    /// The X25519 private key `secret` (raw bytes).
    pub fn x25519(secret: &[u8; 32]) -> Result<UnwrappingKey, String> {
        <X25519HkdfSha256 as Kem>::PrivateKey::from_bytes(secret)
            .map(UnwrappingKey::Hpke)
            .map_err(|_| "invalid X25519 private key".to_owned())
    }

    /// The X-Wing private key `seed` (its 32-byte seed).
    pub fn xwing(seed: &[u8; 32]) -> Result<UnwrappingKey, String> {
        <XWing as Kem>::PrivateKey::from_bytes(seed)
            .map(|k| UnwrappingKey::HpkeXWing(Box::new(k)))
            .map_err(|_| "invalid X-Wing private key".to_owned())
    }

    /// Does this private key belong to `public`?
    pub fn matches(&self, public: &WrappingKey) -> bool {
        match (self, public) {
            (UnwrappingKey::RsaOaep256(private), WrappingKey::RsaOaep256(public)) => {
                &private.to_public_key() == public
            }
            (UnwrappingKey::Hpke(private), WrappingKey::Hpke(public)) => {
                X25519HkdfSha256::sk_to_pk(private) == *public
            }
            (UnwrappingKey::HpkeXWing(private), WrappingKey::HpkeXWing(public)) => {
                XWing::sk_to_pk(private) == **public
            }
            _ => false,
        }
    }

    pub fn algorithm(&self) -> WrapAlgorithm {
        match self {
            UnwrappingKey::RsaOaep256(_) => WrapAlgorithm::RsaOaep256,
            UnwrappingKey::Hpke(_) => WrapAlgorithm::HpkeX25519Aes256Gcm,
            UnwrappingKey::HpkeXWing(_) => WrapAlgorithm::HpkeXWingAes256Gcm,
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
            UnwrappingKey::Hpke(private) => hpke_open::<X25519HkdfSha256>(private, wrapping)?,
            UnwrappingKey::HpkeXWing(private) => hpke_open::<XWing>(private, wrapping)?,
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
            WrappingKey::Hpke(<X25519HkdfSha256 as Kem>::PublicKey::from_bytes(&public).unwrap()),
            UnwrappingKey::x25519(&secret).unwrap(),
        )
    }

    fn xwing_pair() -> (WrappingKey, UnwrappingKey) {
        let seed = [0x42; 32];
        let public = sealpost_certs::xwing::public_key_of(&seed);
        (
            WrappingKey::HpkeXWing(Box::new(
                <XWing as Kem>::PublicKey::from_bytes(&public).unwrap(),
            )),
            UnwrappingKey::xwing(&seed).unwrap(),
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
        for (public, private) in [hpke_pair(), xwing_pair(), rsa_pair()] {
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
        let cases = [
            (hpke_pair(), UnwrappingKey::x25519(&[0x43; 32]).unwrap()),
            (xwing_pair(), UnwrappingKey::xwing(&[0x43; 32]).unwrap()),
        ];
        for ((public, private), other) in cases {
            let w = public.wrap(1, &ContentKey::generate()).unwrap();
            assert!(!other.matches(&public));
            assert_eq!(other.unwrap(&w), Err(Rejected::DecryptFailed));
            let mut bad = w.clone();
            bad.ek.as_mut().unwrap()[0] ^= 1;
            assert_eq!(private.unwrap(&bad), Err(Rejected::DecryptFailed));
            let mut bad = w.clone();
            let last = bad.ek.as_ref().unwrap().len() - 1;
            bad.ek.as_mut().unwrap()[last] ^= 1;
            assert_eq!(private.unwrap(&bad), Err(Rejected::DecryptFailed));
            let mut bad = w.clone();
            bad.ciphertext[0] ^= 1;
            assert_eq!(private.unwrap(&bad), Err(Rejected::DecryptFailed));
            let mut bad = w.clone();
            bad.ciphertext.pop();
            assert_eq!(private.unwrap(&bad), Err(Rejected::DecryptFailed));
            // The protected header (epoch) is bound through the Recipient_structure.
            let mut bad = w.clone();
            bad.protected = protected_header(w.algorithm, 2).unwrap();
            assert_eq!(private.unwrap(&bad), Err(Rejected::DecryptFailed));
            let mut bad = w.clone();
            bad.ek.as_mut().unwrap().pop();
            assert!(matches!(private.unwrap(&bad), Err(Rejected::Malformed(_))));
            let mut bad = w;
            bad.ek = None;
            assert!(matches!(private.unwrap(&bad), Err(Rejected::Malformed(_))));
        }
        // An X25519-sized ek in an X-Wing entry (or the reverse) is malformed, not a panic.
        let (x_public, _) = hpke_pair();
        let (w_public, w_private) = xwing_pair();
        let mut bad = w_public.wrap(1, &ContentKey::generate()).unwrap();
        bad.ek = x_public.wrap(1, &ContentKey::generate()).unwrap().ek;
        assert!(matches!(
            w_private.unwrap(&bad),
            Err(Rejected::Malformed(_))
        ));
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
        let pairs = [rsa_pair(), hpke_pair(), xwing_pair()];
        let key = ContentKey::generate();
        for (i, (_, private)) in pairs.iter().enumerate() {
            for (j, (public, _)) in pairs.iter().enumerate() {
                if i == j {
                    continue;
                }
                assert!(!private.matches(public));
                assert_eq!(
                    private.unwrap(&public.wrap(1, &key).unwrap()),
                    Err(Rejected::WrongKeyType {
                        key: private.algorithm(),
                        entry: public.algorithm(),
                    })
                );
            }
        }
    }
}
