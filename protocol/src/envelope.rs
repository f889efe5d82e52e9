//! The data envelope: COSE_Sign1 over a COSE_Encrypt0, and its headers.
//!
//! ```text
//! COSE_Sign1 (tag 18)                       signed by the publisher (EdDSA / Ed25519)
//!   protected   { 1: -8 (EdDSA), 4: kid = SHA-256(publisher certificate),
//!                 -65537: version, -65538: kind = 1 (data),
//!                 -65539: seq, -65540: [publisher id, epoch, key location] }
//!   unprotected { 33: x5chain (publisher certificate DER), optional }
//!   payload     COSE_Encrypt0 (tag 16)
//!                 protected   { 1: 3 (A256GCM) }
//!                 unprotected { 5: IV (12 bytes) }
//!                 ciphertext
//!   external_aad (both layers) = the MQTT topic name, UTF-8
//! ```
//! `docs/PROTOCOL.md` is the normative description.

use coset::cbor::value::Value;
use coset::iana;
use coset::{Algorithm, CoseEncrypt0, CoseSign1, Header, Label, TaggedCborSerializable};

use crate::Rejected;

/// The only envelope version this implementation speaks.
pub const VERSION: u64 = 1;
/// Header label (private use) of the sealpost version.
pub const LABEL_VERSION: i64 = -65537;
/// Header label (private use) of the message kind: [`KIND_DATA`] or [`KIND_KEYS`].
pub const LABEL_KIND: i64 = -65538;
/// Header label (private use) of the sequence number.
pub const LABEL_SEQ: i64 = -65539;
/// Header label (private use) of the key index.
pub const LABEL_KEY_INDEX: i64 = -65540;
/// Header label (private use) of the key epoch inside a key-message recipient.
pub const LABEL_EPOCH: i64 = -65541;
/// COSE header label of x5chain (RFC 9360).
pub const LABEL_X5CHAIN: i64 = 33;
/// Kind value of a data envelope.
pub const KIND_DATA: u64 = 1;
/// Kind value of a key message.
pub const KIND_KEYS: u64 = 2;
/// AES-GCM nonce length.
pub const IV_LEN: usize = 12;
/// Default upper bound on an envelope the opener will parse.
pub const DEFAULT_MAX_ENVELOPE: usize = 1024 * 1024;

/// Where subscribers get the content key of an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyLocation {
    /// Key messages over MQTT: the subscriber's own key message is retained at
    /// `<prefix>/<subscriber id>`.
    KeyTopic(String),
    /// A key distribution center at this HTTPS base address; the key of epoch `E` is at
    /// `<address>/epochs/<E>`.
    Kdc(String),
}

const TOPIC_SCHEME: &str = "mqtt:";
const KDC_SCHEME: &str = "https://";

impl KeyLocation {
    /// The conventional key-message topic prefix of a publisher: `sealpost/keys/<id>`.
    pub fn key_topic_for(publisher_id: &str) -> KeyLocation {
        KeyLocation::KeyTopic(format!("sealpost/keys/{publisher_id}"))
    }

    /// The retained key-message topic of one subscriber under this location, if it is
    /// a key-topic location.
    pub fn key_message_topic(&self, subscriber_id: &str) -> Option<String> {
        match self {
            KeyLocation::KeyTopic(prefix) => Some(format!("{prefix}/{subscriber_id}")),
            KeyLocation::Kdc(_) => None,
        }
    }

    /// The wire form: `mqtt:<prefix>` or the `https://` address.
    pub fn to_wire(&self) -> String {
        match self {
            KeyLocation::KeyTopic(prefix) => format!("{TOPIC_SCHEME}{prefix}"),
            KeyLocation::Kdc(url) => url.clone(),
        }
    }

    /// Parses [`KeyLocation::to_wire`]. Plain `http://` is refused: keys travel over TLS only.
    pub fn from_wire(s: &str) -> Option<KeyLocation> {
        if let Some(prefix) = s.strip_prefix(TOPIC_SCHEME) {
            (!prefix.is_empty() && sealpost_certs::topic::validate_topic(prefix))
                .then(|| KeyLocation::KeyTopic(prefix.to_owned()))
        } else if s.starts_with(KDC_SCHEME) && s.len() > KDC_SCHEME.len() {
            Some(KeyLocation::Kdc(s.to_owned()))
        } else {
            None
        }
    }
}

/// The key index: which publisher, which key epoch, and where the key is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIndex {
    /// Publisher identity (the common name of its certificate).
    pub publisher: String,
    /// Key epoch (key number); grows by one at every rotation.
    pub epoch: u64,
    /// Where subscribers get the key.
    pub location: KeyLocation,
}

/// The authenticated-once-verified fields of a data envelope, readable before opening
/// (so an SDK can, e.g., start a key fetch while the message waits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// Key index.
    pub key_index: KeyIndex,
    /// Sequence number.
    pub seq: u64,
    /// SHA-256 fingerprint of the publisher certificate.
    pub certificate_fingerprint: [u8; 32],
}

/// A parsed (not yet verified) data envelope.
pub(crate) struct ParsedEnvelope {
    pub header: EnvelopeHeader,
    pub sign1: CoseSign1,
    pub encrypt0: CoseEncrypt0,
}

pub(crate) fn find(header: &Header, label: i64) -> Option<&Value> {
    header
        .rest
        .iter()
        .find(|(l, _)| *l == Label::Int(label))
        .map(|(_, v)| v)
}

pub(crate) fn find_uint(header: &Header, label: i64) -> Option<u64> {
    match find(header, label)? {
        Value::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

fn is_alg(header: &Header, alg: iana::Algorithm) -> bool {
    header.alg == Some(Algorithm::Assigned(alg))
}

/// Checks version and kind, the common preamble of both message kinds.
pub(crate) fn check_preamble(sign1: &CoseSign1, kind: u64) -> Result<(), Rejected> {
    let h = &sign1.protected.header;
    let version = find_uint(h, LABEL_VERSION).ok_or(Rejected::Malformed("no version"))?;
    if version != VERSION {
        return Err(Rejected::UnknownVersion(version));
    }
    if find_uint(h, LABEL_KIND) != Some(kind) {
        return Err(Rejected::Malformed("wrong message kind"));
    }
    if !is_alg(h, iana::Algorithm::EdDSA) {
        return Err(Rejected::UnsupportedAlgorithm);
    }
    if sign1.signature.len() != ed25519_dalek::SIGNATURE_LENGTH {
        return Err(Rejected::Malformed("signature length"));
    }
    Ok(())
}

pub(crate) fn fingerprint_of(header: &Header) -> Result<[u8; 32], Rejected> {
    header
        .key_id
        .as_slice()
        .try_into()
        .map_err(|_| Rejected::Malformed("kid is not a 32-byte certificate fingerprint"))
}

/// Parses the outer COSE_Sign1 strictly: the unsigned parts must be exactly as sealpost
/// writes them, so that no byte of an accepted message can be changed without detection.
pub(crate) fn parse_sign1(bytes: &[u8]) -> Result<CoseSign1, Rejected> {
    let sign1 =
        CoseSign1::from_tagged_slice(bytes).map_err(|_| Rejected::Malformed("COSE_Sign1"))?;
    let u = &sign1.unprotected;
    let only_x5chain = u.alg.is_none()
        && u.crit.is_empty()
        && u.content_type.is_none()
        && u.key_id.is_empty()
        && u.iv.is_empty()
        && u.partial_iv.is_empty()
        && u.counter_signatures.is_empty()
        && u.rest.iter().all(|(l, _)| *l == Label::Int(LABEL_X5CHAIN));
    if !only_x5chain {
        return Err(Rejected::Malformed("unexpected unprotected header"));
    }
    // CBOR allows several encodings of one value; accept only the one we produce. Every
    // other encoding of the same values (longer length heads, indefinite lengths, extra
    // tags) is strictly longer, so comparing lengths is enough and costs no re-encoding.
    let unprotected_len = match find(u, LABEL_X5CHAIN) {
        None => 1,
        Some(Value::Bytes(der)) => 1 + 2 + cbor_bytes_len(der.len()),
        Some(_) => return Err(Rejected::Malformed("x5chain must be a single certificate")),
    };
    let protected_len = sign1
        .protected
        .original_data
        .as_ref()
        .map_or(0, |d| d.len());
    let canonical_len = 2 // tag 18, array of 4
        + cbor_bytes_len(protected_len)
        + unprotected_len
        + cbor_bytes_len(sign1.payload.as_ref().map_or(0, |p| p.len()))
        + cbor_bytes_len(sign1.signature.len());
    if canonical_len != bytes.len() {
        return Err(Rejected::Malformed("non-canonical encoding"));
    }
    Ok(sign1)
}

/// Length of a CBOR byte string of `n` bytes in its shortest encoding.
fn cbor_bytes_len(n: usize) -> usize {
    let head = match n {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    };
    head + n
}

/// The certificate in the x5chain header, if any (its type was checked by [`parse_sign1`]).
pub(crate) fn embedded_certificate(sign1: &CoseSign1) -> Option<&[u8]> {
    match find(&sign1.unprotected, LABEL_X5CHAIN) {
        Some(Value::Bytes(der)) => Some(der),
        _ => None,
    }
}

/// Parses a data envelope without verifying anything.
pub(crate) fn parse(bytes: &[u8], max_len: usize) -> Result<ParsedEnvelope, Rejected> {
    if bytes.len() > max_len {
        return Err(Rejected::Oversized {
            size: bytes.len(),
            limit: max_len,
        });
    }
    let sign1 = parse_sign1(bytes)?;
    check_preamble(&sign1, KIND_DATA)?;
    let h = &sign1.protected.header;
    let seq = find_uint(h, LABEL_SEQ).ok_or(Rejected::Malformed("no sequence number"))?;
    let key_index = match find(h, LABEL_KEY_INDEX) {
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::Text(publisher), Value::Integer(epoch), Value::Text(location)] => KeyIndex {
                publisher: publisher.clone(),
                epoch: u64::try_from(*epoch).map_err(|_| Rejected::Malformed("epoch"))?,
                location: KeyLocation::from_wire(location)
                    .ok_or(Rejected::Malformed("key location"))?,
            },
            _ => return Err(Rejected::Malformed("key index")),
        },
        _ => return Err(Rejected::Malformed("no key index")),
    };
    let certificate_fingerprint = fingerprint_of(h)?;
    let payload = sign1
        .payload
        .as_deref()
        .ok_or(Rejected::Malformed("detached payload"))?;
    let encrypt0 = CoseEncrypt0::from_tagged_slice(payload)
        .map_err(|_| Rejected::Malformed("COSE_Encrypt0"))?;
    if !is_alg(&encrypt0.protected.header, iana::Algorithm::A256GCM) {
        return Err(Rejected::UnsupportedAlgorithm);
    }
    if encrypt0.unprotected.iv.len() != IV_LEN {
        return Err(Rejected::Malformed("IV length"));
    }
    if encrypt0.ciphertext.is_none() {
        return Err(Rejected::Malformed("no ciphertext"));
    }
    Ok(ParsedEnvelope {
        header: EnvelopeHeader {
            key_index,
            seq,
            certificate_fingerprint,
        },
        sign1,
        encrypt0,
    })
}

/// Reads the header of a data envelope without verifying it. Nothing read here is
/// trustworthy until [`Opener::open`](crate::Opener::open) succeeds.
pub fn peek(bytes: &[u8]) -> Result<EnvelopeHeader, Rejected> {
    parse(bytes, DEFAULT_MAX_ENVELOPE).map(|p| p.header)
}

pub(crate) fn key_index_value(index: &KeyIndex) -> Value {
    Value::Array(vec![
        Value::Text(index.publisher.clone()),
        Value::Integer(index.epoch.into()),
        Value::Text(index.location.to_wire()),
    ])
}

pub(crate) fn encode_err(e: coset::CoseError) -> crate::SealError {
    crate::SealError::Encoding(e.to_string())
}

// Serialization helpers used by sealer and key messages.
pub(crate) fn to_tagged<T: TaggedCborSerializable>(v: T) -> Result<Vec<u8>, crate::SealError> {
    v.to_tagged_vec().map_err(encode_err)
}
