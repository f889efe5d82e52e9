//! The data envelope: COSE_Sign1 over a COSE_Encrypt0, and its headers.
//!
//! ```text
//! COSE_Sign1 (tag 18)                       signed by the publisher (EdDSA / Ed25519)
//!   protected   { 1: -8 (EdDSA), 4: kid = SHA-256(publisher certificate),
//!                 15: CWT claims { 6: iat = publication time, unix seconds },
//!                 -65537: version, -65538: kind = 1 (data),
//!                 -65539: seq, -65540: [publisher id, epoch, key location] }
//!   unprotected { 33: x5chain (publisher certificate DER), optional,
//!                 396: { -1: [inclusion proof] }  (version 2 only) }
//!   payload     COSE_Encrypt0 (tag 16)
//!                 protected   { 1: 3 (A256GCM) }
//!                 unprotected { 5: IV (12 bytes) }
//!                 ciphertext
//!   external_aad (both layers) = the MQTT topic name, UTF-8
//!   signature   version 1: over this message's Sig_structure;
//!               version 2: over the Sig_structure of the burst's Merkle root
//! ```
//! `docs/PROTOCOL.md` is the normative description.

use std::borrow::Cow;

use coset::cbor::value::Value;
use coset::iana;
use coset::{Algorithm, CoseEncrypt0, CoseSign1, Header, Label, TaggedCborSerializable};

use crate::merkle::{Hash, MAX_PATH_LEN};
use crate::Rejected;

/// Version 1: every data envelope carries its own signature. Key messages are version 1.
pub const VERSION: u64 = 1;
/// Version 2: data envelopes sealed in bursts, signed once per burst through a Merkle
/// tree (see `docs/PROTOCOL.md`). Openers read versions 1 and 2.
pub const VERSION_BURST: u64 = 2;
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
/// Header label (private use) of the tree size in a burst root's protected header.
pub const LABEL_TREE_SIZE: i64 = -65542;
/// COSE header label of the verifiable data structure (draft-ietf-cose-merkle-tree-proofs).
pub const LABEL_VDS: i64 = 395;
/// COSE header label of the verifiable data proofs (draft-ietf-cose-merkle-tree-proofs).
pub const LABEL_VDP: i64 = 396;
/// The verifiable data structure `RFC9162_SHA256`.
pub const VDS_RFC9162_SHA256: u64 = 1;
/// Key of the inclusion proofs inside the verifiable data proofs map.
pub const VDP_INCLUSION: i64 = -1;
/// COSE header label of x5chain (RFC 9360).
pub const LABEL_X5CHAIN: i64 = 33;
/// COSE header label of the CWT claims (RFC 9597): carries the publication time.
pub const LABEL_CWT_CLAIMS: i64 = 15;
/// CWT claim key of `iat`, "issued at" (RFC 8392): the publication time, unix seconds.
pub const CWT_CLAIM_IAT: i64 = 6;
/// Kind value of a data envelope.
pub const KIND_DATA: u64 = 1;
/// Kind value of a key message.
pub const KIND_KEYS: u64 = 2;
/// Kind value of a burst root (only ever signed, never sent on its own).
pub const KIND_BURST_ROOT: u64 = 3;
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
        if !KeyLocation::is_valid_wire(s) {
            None
        } else if let Some(prefix) = s.strip_prefix(TOPIC_SCHEME) {
            Some(KeyLocation::KeyTopic(prefix.to_owned()))
        } else {
            Some(KeyLocation::Kdc(s.to_owned()))
        }
    }

    /// Would [`KeyLocation::from_wire`] accept `s`? (Without allocating.)
    pub(crate) fn is_valid_wire(s: &str) -> bool {
        if let Some(prefix) = s.strip_prefix(TOPIC_SCHEME) {
            !prefix.is_empty() && sealpost_certs::topic::validate_topic(prefix)
        } else {
            s.starts_with(KDC_SCHEME) && s.len() > KDC_SCHEME.len()
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
    /// Publication time the publisher signed (unix seconds).
    pub published_at: u64,
    /// SHA-256 fingerprint of the publisher certificate.
    pub certificate_fingerprint: [u8; 32],
    /// Where the message sits in its burst (version 2), `None` in version 1.
    pub burst: Option<BurstPosition>,
}

/// A version 2 message's place in the burst signed with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstPosition {
    /// Position in the burst, from 0.
    pub leaf_index: u64,
    /// Messages in the burst.
    pub tree_size: u64,
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
    check_strict(sign1, bytes)
}

/// The checks of [`parse_sign1`] after decoding.
fn check_strict(sign1: CoseSign1, bytes: &[u8]) -> Result<CoseSign1, Rejected> {
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
    head_len(n as u64) + n
}

/// The certificate in the x5chain header, if any (its type was checked by [`parse_sign1`]).
pub(crate) fn embedded_certificate(sign1: &CoseSign1) -> Option<&[u8]> {
    match find(&sign1.unprotected, LABEL_X5CHAIN) {
        Some(Value::Bytes(der)) => Some(der),
        _ => None,
    }
}

/// A parsed (not yet verified) data envelope. Borrowed from the received bytes when they
/// are in the canonical form sealpost writes (the usual case), owned otherwise.
pub(crate) struct ParsedEnvelope<'a> {
    /// The inclusion proof: present exactly in version 2 envelopes.
    pub proof: Option<InclusionProof>,
    /// Publisher id from the key index.
    pub publisher: Cow<'a, str>,
    /// Key epoch from the key index.
    pub epoch: u64,
    /// Key location from the key index, in its (validated) wire form.
    pub location: Cow<'a, str>,
    /// Sequence number.
    pub seq: u64,
    /// Publication time (unix seconds).
    pub published_at: u64,
    /// The kid: SHA-256 of the publisher certificate.
    pub fingerprint: [u8; 32],
    /// The serialized protected header of the COSE_Sign1, as received (it is signed).
    pub protected: Cow<'a, [u8]>,
    /// The x5chain certificate, if any.
    pub embedded: Option<Cow<'a, [u8]>>,
    /// The COSE_Sign1 payload: the serialized COSE_Encrypt0, as received (it is signed).
    pub payload: Cow<'a, [u8]>,
    /// The serialized protected header of the COSE_Encrypt0, as received.
    pub enc_protected: Cow<'a, [u8]>,
    /// The AES-GCM nonce.
    pub iv: [u8; IV_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Cow<'a, [u8]>,
    /// The Ed25519 signature.
    pub signature: [u8; ed25519_dalek::SIGNATURE_LENGTH],
}

impl ParsedEnvelope<'_> {
    /// The header as the public API shows it.
    pub fn header(&self) -> EnvelopeHeader {
        EnvelopeHeader {
            key_index: KeyIndex {
                publisher: self.publisher.clone().into_owned(),
                epoch: self.epoch,
                location: self.key_location(),
            },
            seq: self.seq,
            published_at: self.published_at,
            certificate_fingerprint: self.fingerprint,
            burst: self.proof.as_ref().map(|p| BurstPosition {
                leaf_index: p.leaf_index,
                tree_size: p.tree_size,
            }),
        }
    }

    /// The key location (its wire form was validated by [`parse`]).
    pub fn key_location(&self) -> KeyLocation {
        match self.location.strip_prefix(TOPIC_SCHEME) {
            Some(prefix) => KeyLocation::KeyTopic(prefix.to_owned()),
            None => KeyLocation::Kdc(self.location.clone().into_owned()),
        }
    }
}

/// Parses a data envelope without verifying anything.
///
/// Envelopes in the exact canonical form that [`Sealer`](crate::Sealer) writes are read in
/// place by [`parse_canonical`]; anything else goes through the general COSE parser
/// ([`parse_general`]), which decides what is accepted. The fast path accepts only inputs
/// the general one accepts with the same values (a test checks this on mutated
/// envelopes), so it changes speed, never the outcome.
pub(crate) fn parse(bytes: &[u8], max_len: usize) -> Result<ParsedEnvelope<'_>, Rejected> {
    if bytes.len() > max_len {
        return Err(Rejected::Oversized {
            size: bytes.len(),
            limit: max_len,
        });
    }
    match parse_canonical(bytes) {
        Some(parsed) => Ok(parsed),
        None => parse_general(bytes),
    }
}

/// The general parser: coset, with every check of the protocol. Owns what it returns.
pub(crate) fn parse_general(bytes: &[u8]) -> Result<ParsedEnvelope<'static>, Rejected> {
    let sign1 =
        CoseSign1::from_tagged_slice(bytes).map_err(|_| Rejected::Malformed("COSE_Sign1"))?;
    let h = &sign1.protected.header;
    match find_uint(h, LABEL_VERSION) {
        Some(VERSION) | None => {}
        // Version 2 has exactly one encoding, which `parse_canonical` reads: any other
        // encoding of a version 2 envelope is refused, not interpreted.
        Some(VERSION_BURST) if !is_alg(h, iana::Algorithm::EdDSA) => {
            return Err(Rejected::UnsupportedAlgorithm)
        }
        Some(VERSION_BURST) => {
            return Err(Rejected::Malformed(
                "version 2 envelope not in the exact encoding of PROTOCOL.md",
            ))
        }
        Some(other) => return Err(Rejected::UnknownVersion(other)),
    }
    let mut sign1 = check_strict(sign1, bytes)?;
    check_preamble(&sign1, KIND_DATA)?;
    let h = &sign1.protected.header;
    let seq = find_uint(h, LABEL_SEQ).ok_or(Rejected::Malformed("no sequence number"))?;
    let published_at = publication_time(h)?;
    let (publisher, epoch, location) = match find(h, LABEL_KEY_INDEX) {
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::Text(publisher), Value::Integer(epoch), Value::Text(location)] => {
                let epoch = u64::try_from(*epoch).map_err(|_| Rejected::Malformed("epoch"))?;
                if !KeyLocation::is_valid_wire(location) {
                    return Err(Rejected::Malformed("key location"));
                }
                (publisher.clone(), epoch, location.clone())
            }
            _ => return Err(Rejected::Malformed("key index")),
        },
        _ => return Err(Rejected::Malformed("no key index")),
    };
    let fingerprint = fingerprint_of(h)?;
    let embedded = embedded_certificate(&sign1).map(|der| Cow::Owned(der.to_vec()));
    let payload = sign1
        .payload
        .take()
        .ok_or(Rejected::Malformed("detached payload"))?;
    let mut encrypt0 = CoseEncrypt0::from_tagged_slice(&payload)
        .map_err(|_| Rejected::Malformed("COSE_Encrypt0"))?;
    if !is_alg(&encrypt0.protected.header, iana::Algorithm::A256GCM) {
        return Err(Rejected::UnsupportedAlgorithm);
    }
    let iv: [u8; IV_LEN] = encrypt0
        .unprotected
        .iv
        .as_slice()
        .try_into()
        .map_err(|_| Rejected::Malformed("IV length"))?;
    let ciphertext = encrypt0
        .ciphertext
        .take()
        .ok_or(Rejected::Malformed("no ciphertext"))?;
    let signature = sign1
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| Rejected::Malformed("signature length"))?;
    // Both Sig_structure and Enc_structure use the protected headers as received (as coset's
    // own `tbs_data` and `decrypt` do).
    let protected = serialized_protected(sign1.protected)?;
    let enc_protected = serialized_protected(encrypt0.protected)?;
    Ok(ParsedEnvelope {
        proof: None,
        publisher: Cow::Owned(publisher),
        epoch,
        location: Cow::Owned(location),
        seq,
        published_at,
        fingerprint,
        protected: Cow::Owned(protected),
        embedded,
        payload: Cow::Owned(payload),
        enc_protected: Cow::Owned(enc_protected),
        iv,
        ciphertext: Cow::Owned(ciphertext),
        signature,
    })
}

/// The publication time: the CWT claims header holding exactly one claim, `iat`, as an
/// unsigned integer. Envelopes without it are refused (there is no unsealed-time mode).
fn publication_time(header: &Header) -> Result<u64, Rejected> {
    let bad = Rejected::Malformed("publication time (CWT claims {6: iat})");
    match find(header, LABEL_CWT_CLAIMS) {
        Some(Value::Map(claims)) => match claims.as_slice() {
            [(Value::Integer(label), Value::Integer(iat))]
                if i128::from(*label) == i128::from(CWT_CLAIM_IAT) =>
            {
                u64::try_from(*iat).map_err(|_| bad)
            }
            _ => Err(bad),
        },
        Some(_) => Err(bad),
        None => Err(Rejected::Malformed("no publication time")),
    }
}

/// The bytes of a protected header as they enter Sig_structure and Enc_structure.
fn serialized_protected(header: coset::ProtectedHeader) -> Result<Vec<u8>, Rejected> {
    match header.cbor_bstr() {
        Ok(Value::Bytes(bytes)) => Ok(bytes),
        _ => Err(Rejected::Malformed("protected header")),
    }
}

/// The fixed start of the protected header of every data envelope, up to its kid value:
/// `{1: -8, 4: h'<32 bytes>'...` (a map of 7 entries).
const PROTECTED_START: [u8; 6] = [0xa7, 0x01, 0x27, 0x04, 0x58, 0x20];
/// After the kid: label 15 (CWT claims), a map of one claim, claim key 6 (iat); the
/// publication time follows.
const CLAIMS_START: [u8; 3] = [0x0f, 0xa1, 0x06];
/// The version, kind 1 (data) and the label of the sequence number: index 0 for version
/// 1, index 1 for version 2.
pub(crate) const PROTECTED_MIDDLE: [[u8; 17]; 2] = [
    [
        0x3a, 0x00, 0x01, 0x00, 0x00, 0x01, // -65537: 1 (version)
        0x3a, 0x00, 0x01, 0x00, 0x01, 0x01, // -65538: 1 (kind: data)
        0x3a, 0x00, 0x01, 0x00, 0x02, // -65539: (sequence number follows)
    ],
    [
        0x3a, 0x00, 0x01, 0x00, 0x00, 0x02, // -65537: 2 (version)
        0x3a, 0x00, 0x01, 0x00, 0x01, 0x01, // -65538: 1 (kind: data)
        0x3a, 0x00, 0x01, 0x00, 0x02, // -65539: (sequence number follows)
    ],
];
/// The label of the key index and the head of its 3-element array.
const KEY_INDEX_START: [u8; 6] = [0x3a, 0x00, 0x01, 0x00, 0x03, 0x83];
/// Tag 16 (COSE_Encrypt0), array of 3, protected `h'A10103'` ({1: 3}, A256GCM), and the
/// unprotected `{5: h'<12 bytes>'...` up to the IV.
pub(crate) const ENCRYPT0_START: [u8; 9] = [0xd0, 0x83, 0x43, 0xa1, 0x01, 0x03, 0xa1, 0x05, 0x4c];
/// The serialized protected header of the COSE_Encrypt0.
pub(crate) const ENCRYPT0_PROTECTED: [u8; 3] = [0xa1, 0x01, 0x03];

/// Reads an envelope in exactly the canonical form sealpost writes (fixed header order,
/// shortest lengths, nothing else), without copying. `None` means "not in that form",
/// not "invalid": the caller then asks [`parse_general`].
fn parse_canonical(bytes: &[u8]) -> Option<ParsedEnvelope<'_>> {
    let mut r = Reader::new(bytes);
    r.expect(&[0xd2, 0x84])?; // tag 18 (COSE_Sign1), array of 4
    let protected = r.bstr()?;
    let mut h = Reader::new(protected);
    h.expect(&PROTECTED_START)?;
    let fingerprint: [u8; 32] = h.take(32)?.try_into().ok()?;
    h.expect(&CLAIMS_START)?;
    let published_at = h.uint()?;
    let middle = h.take(PROTECTED_MIDDLE[0].len())?;
    let version = if middle == PROTECTED_MIDDLE[0] {
        VERSION
    } else if middle == PROTECTED_MIDDLE[1] {
        VERSION_BURST
    } else {
        return None;
    };
    let seq = h.uint()?;
    h.expect(&KEY_INDEX_START)?;
    let publisher = h.tstr()?;
    let epoch = h.uint()?;
    let location = h.tstr()?;
    h.end()?;
    if !KeyLocation::is_valid_wire(location) {
        return None;
    }
    // Version 1: `{}` or `{33: cert}`; version 2: `{396: proofs}` or `{33: cert, 396:
    // proofs}` (labels in deterministic order).
    let entries: usize = match r.byte()? {
        0xa0 => 0,
        0xa1 => 1,
        0xa2 => 2,
        _ => return None,
    };
    let with_proof = usize::from(version == VERSION_BURST);
    let embedded = match entries.checked_sub(with_proof)? {
        0 => None,
        1 => {
            r.expect(&[0x18, 0x21])?; // label 33: x5chain, a single certificate
            Some(Cow::Borrowed(r.bstr()?))
        }
        _ => return None,
    };
    let proof = if with_proof == 1 {
        r.expect(&VDP_INCLUSION_START)?;
        Some(read_proof(r.bstr()?)?)
    } else {
        None
    };
    let payload = r.bstr()?;
    let mut p = Reader::new(payload);
    p.expect(&ENCRYPT0_START)?;
    let iv: [u8; IV_LEN] = p.take(IV_LEN)?.try_into().ok()?;
    let ciphertext = p.bstr()?;
    p.end()?;
    r.expect(&[0x58, 0x40])?; // bstr of 64 bytes
    let signature = r.take(ed25519_dalek::SIGNATURE_LENGTH)?.try_into().ok()?;
    r.end()?;
    Some(ParsedEnvelope {
        proof,
        publisher: Cow::Borrowed(publisher),
        epoch,
        location: Cow::Borrowed(location),
        seq,
        published_at,
        fingerprint,
        protected: Cow::Borrowed(protected),
        embedded,
        payload: Cow::Borrowed(payload),
        enc_protected: Cow::Borrowed(&ENCRYPT0_PROTECTED),
        iv,
        ciphertext: Cow::Borrowed(ciphertext),
        signature,
    })
}

/// An RFC 9162 inclusion proof, as carried by a version 2 envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InclusionProof {
    /// Number of messages in the burst.
    pub tree_size: u64,
    /// This message's position in the burst, from 0.
    pub leaf_index: u64,
    /// Sibling hashes from the leaf up, deepest first.
    pub path: Vec<Hash>,
}

/// Label 396 (verifiable data proofs), a map of one entry, key -1 (inclusion proofs), an
/// array of one proof; the proof's byte string follows.
pub(crate) const VDP_INCLUSION_START: [u8; 6] = [0x19, 0x01, 0x8c, 0xa1, 0x20, 0x81];

/// Reads an inclusion proof `[tree_size, leaf_index, [* bstr .size 32]]` in its only
/// (shortest-form) encoding. The values are checked when the proof is evaluated.
fn read_proof(bytes: &[u8]) -> Option<InclusionProof> {
    let mut p = Reader::new(bytes);
    p.expect(&[0x83])?;
    let tree_size = p.uint()?;
    let leaf_index = p.uint()?;
    let len = usize::try_from(p.head(MAJOR_ARRAY)?).ok()?;
    if len > MAX_PATH_LEN {
        return None;
    }
    let mut path = Vec::with_capacity(len);
    for _ in 0..len {
        p.expect(&[0x58, 0x20])?;
        path.push(p.take(32)?.try_into().ok()?);
    }
    p.end()?;
    Some(InclusionProof {
        tree_size,
        leaf_index,
        path,
    })
}

/// Appends the inclusion proof of one message, as a byte string (with its head).
pub(crate) fn put_proof(out: &mut Vec<u8>, tree_size: u64, leaf_index: u64, path: &[Hash]) {
    let len = 1
        + head_len(tree_size)
        + head_len(leaf_index)
        + head_len(path.len() as u64)
        + path.len() * 34;
    put_head(out, MAJOR_BSTR, len as u64);
    out.push(0x83);
    put_head(out, MAJOR_UINT, tree_size);
    put_head(out, MAJOR_UINT, leaf_index);
    put_head(out, MAJOR_ARRAY, path.len() as u64);
    for hash in path {
        out.extend_from_slice(&[0x58, 0x20]);
        out.extend_from_slice(hash);
    }
}

/// The protected header of a burst root's signature, derived from the envelope (it is
/// not sent): `{1: -8, 4: kid, 395: 1, -65537: 2, -65538: 3, -65542: tree_size}`, in
/// deterministic order. Kind 3 and version 2 keep a root signature from ever being
/// mistaken for the signature of a version 1 envelope or a key message.
pub(crate) fn root_protected(fingerprint: &[u8; 32], tree_size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[0xa6, 0x01, 0x27, 0x04, 0x58, 0x20]);
    out.extend_from_slice(fingerprint);
    out.extend_from_slice(&[0x19, 0x01, 0x8b, 0x01]); // 395: 1 (RFC9162_SHA256)
    out.extend_from_slice(&[0x3a, 0x00, 0x01, 0x00, 0x00, 0x02]); // version 2
    out.extend_from_slice(&[0x3a, 0x00, 0x01, 0x00, 0x01, 0x03]); // kind 3: burst root
    out.extend_from_slice(&[0x3a, 0x00, 0x01, 0x00, 0x05]); // -65542: tree size
    put_head(&mut out, MAJOR_UINT, tree_size);
    out
}

/// Feeds the Sig_structure a burst root's signature covers to `sink`:
/// `["Signature1", root_protected, h'', root]`.
pub(crate) fn root_sig_structure(
    fingerprint: &[u8; 32],
    tree_size: u64,
    root: &Hash,
    sink: impl FnMut(&[u8]),
) {
    sig_structure(&root_protected(fingerprint, tree_size), b"", root, sink);
}

/// A cursor over CBOR that accepts only definite, shortest-form items.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn expect(&mut self, bytes: &[u8]) -> Option<()> {
        (self.take(bytes.len())? == bytes).then_some(())
    }

    fn end(&self) -> Option<()> {
        (self.pos == self.buf.len()).then_some(())
    }

    /// The argument of a head of major type `major`, if encoded in its shortest form.
    fn head(&mut self, major: u8) -> Option<u64> {
        let initial = self.byte()?;
        if initial >> 5 != major {
            return None;
        }
        let (n, min) = match initial & 0x1f {
            ai @ 0..=23 => return Some(u64::from(ai)),
            24 => (u64::from(self.byte()?), 24),
            25 => (
                u64::from(u16::from_be_bytes(self.take(2)?.try_into().ok()?)),
                0x100,
            ),
            26 => (
                u64::from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)),
                0x1_0000,
            ),
            27 => (
                u64::from_be_bytes(self.take(8)?.try_into().ok()?),
                0x1_0000_0000,
            ),
            _ => return None,
        };
        (n >= min).then_some(n)
    }

    fn uint(&mut self) -> Option<u64> {
        self.head(MAJOR_UINT)
    }

    fn bstr(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.head(MAJOR_BSTR)?).ok()?;
        self.take(len)
    }

    fn tstr(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.head(MAJOR_TSTR)?).ok()?;
        std::str::from_utf8(self.take(len)?).ok()
    }
}

/// CBOR major type of unsigned integers.
pub(crate) const MAJOR_UINT: u8 = 0;
/// CBOR major type of byte strings.
pub(crate) const MAJOR_BSTR: u8 = 2;
/// CBOR major type of text strings.
const MAJOR_TSTR: u8 = 3;
/// CBOR major type of arrays.
const MAJOR_ARRAY: u8 = 4;

/// A CBOR head (major type and argument) in its shortest form, as bytes.
pub(crate) struct Head {
    bytes: [u8; 9],
    len: usize,
}

impl Head {
    pub(crate) fn new(major: u8, n: u64) -> Head {
        let mut bytes = [0u8; 9];
        let m = major << 5;
        let len = if n < 24 {
            bytes[0] = m | n as u8;
            1
        } else if n <= 0xff {
            bytes[..2].copy_from_slice(&[m | 24, n as u8]);
            2
        } else if n <= 0xffff {
            bytes[0] = m | 25;
            bytes[1..3].copy_from_slice(&(n as u16).to_be_bytes());
            3
        } else if n <= 0xffff_ffff {
            bytes[0] = m | 26;
            bytes[1..5].copy_from_slice(&(n as u32).to_be_bytes());
            5
        } else {
            bytes[0] = m | 27;
            bytes[1..].copy_from_slice(&n.to_be_bytes());
            9
        };
        Head { bytes, len }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Length of a CBOR head of argument `n` in its shortest form.
pub(crate) fn head_len(n: u64) -> usize {
    match n {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Appends a CBOR head in its shortest form.
pub(crate) fn put_head(out: &mut Vec<u8>, major: u8, n: u64) {
    out.extend_from_slice(Head::new(major, n).as_bytes());
}

/// Appends a CBOR text string.
pub(crate) fn put_tstr(out: &mut Vec<u8>, s: &str) {
    put_head(out, MAJOR_TSTR, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// The fixed start of the protected header of a publisher's data envelopes, up to (not
/// including) the publication time's value.
pub(crate) fn protected_prefix(fingerprint: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROTECTED_START.len() + 32 + CLAIMS_START.len());
    out.extend_from_slice(&PROTECTED_START);
    out.extend_from_slice(fingerprint);
    out.extend_from_slice(&CLAIMS_START);
    out
}

/// The end of the protected header after the sequence number: the key index.
pub(crate) fn protected_suffix(index: &KeyIndex) -> Vec<u8> {
    let location = index.location.to_wire();
    let mut out =
        Vec::with_capacity(KEY_INDEX_START.len() + 18 + index.publisher.len() + location.len());
    out.extend_from_slice(&KEY_INDEX_START);
    put_tstr(&mut out, &index.publisher);
    put_head(&mut out, MAJOR_UINT, index.epoch);
    put_tstr(&mut out, &location);
    out
}

/// Context string and array head that start every COSE_Sign1 Sig_structure.
const SIG_STRUCTURE_START: &[u8] = b"\x84\x6aSignature1";
/// Context string and array head that start every COSE_Encrypt0 Enc_structure.
const ENC_STRUCTURE_START: &[u8] = b"\x83\x68Encrypt0";

/// Feeds the COSE_Sign1 `Sig_structure` `["Signature1", protected, external_aad, payload]`
/// to `sink` in pieces, so it can be hashed straight from the envelope's bytes.
pub(crate) fn sig_structure(
    protected: &[u8],
    external_aad: &[u8],
    payload: &[u8],
    mut sink: impl FnMut(&[u8]),
) {
    sink(SIG_STRUCTURE_START);
    for part in [protected, external_aad, payload] {
        sink(Head::new(MAJOR_BSTR, part.len() as u64).as_bytes());
        sink(part);
    }
}

/// Writes the COSE_Encrypt0 `Enc_structure` `["Encrypt0", protected, external_aad]` into
/// `out` (cleared first; a reused buffer).
pub(crate) fn enc_structure(out: &mut Vec<u8>, protected: &[u8], external_aad: &[u8]) {
    out.clear();
    out.extend_from_slice(ENC_STRUCTURE_START);
    for part in [protected, external_aad] {
        put_head(out, MAJOR_BSTR, part.len() as u64);
        out.extend_from_slice(part);
    }
}

/// Reads the header of a data envelope without verifying it. Nothing read here is
/// trustworthy until [`Opener::open`](crate::Opener::open) succeeds.
pub fn peek(bytes: &[u8]) -> Result<EnvelopeHeader, Rejected> {
    parse(bytes, DEFAULT_MAX_ENVELOPE).map(|p| p.header())
}

pub(crate) fn encode_err(e: coset::CoseError) -> crate::SealError {
    crate::SealError::Encoding(e.to_string())
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::sealer::tests::{identity, BOUNDARIES};
    use crate::{ContentKey, Sealer};

    fn assert_same(fast: &ParsedEnvelope<'_>, general: &ParsedEnvelope<'_>, input: &[u8]) {
        let fields = |p: &ParsedEnvelope<'_>| {
            (
                p.publisher.to_string(),
                p.epoch,
                p.location.to_string(),
                (p.seq, p.published_at),
                p.fingerprint,
                p.protected.to_vec(),
                p.embedded.as_ref().map(|e| e.to_vec()),
                p.payload.to_vec(),
                p.enc_protected.to_vec(),
                p.iv,
                p.ciphertext.to_vec(),
                p.signature,
            )
        };
        assert!(
            fields(fast) == fields(general),
            "the two parsers disagree on {}",
            hex::encode(input)
        );
    }

    /// Envelopes of every shape the sealer writes, in `version`.
    fn corpus(version: u64) -> Vec<Vec<u8>> {
        let identity = identity();
        let key = ContentKey::generate();
        let mut out = Vec::new();
        for (i, &seq) in BOUNDARIES.iter().enumerate() {
            let location = if i % 2 == 0 {
                KeyLocation::key_topic_for("pub-1")
            } else {
                KeyLocation::Kdc("https://kdc.example:8443/pub-1".into())
            };
            let epoch = BOUNDARIES[(i * 3) % BOUNDARIES.len()];
            let mut sealer = Sealer::new(identity.clone(), location, epoch, &key, seq);
            sealer.set_wire_version(version).unwrap();
            sealer.reserve(1);
            sealer.set_embed_certificate(i % 3 == 0);
            let time = BOUNDARIES[(i * 7) % BOUNDARIES.len()].min(i64::MAX as u64) as i64;
            out.push(sealer.seal("a/b", &vec![i as u8; i * 40], time).unwrap());
        }
        out
    }

    #[test]
    fn genuine_envelopes_take_the_fast_path_with_the_general_parsers_result() {
        for env in corpus(VERSION) {
            let fast = parse_canonical(&env).expect("a sealer's envelope is canonical");
            let general = parse_general(&env).unwrap();
            assert_same(&fast, &general, &env);
            assert!(matches!(fast.protected, Cow::Borrowed(_)));
        }
    }

    /// The fast path may only accept what the general parser accepts, with the same
    /// values; everything else it must leave to the general parser.
    #[test]
    fn fast_path_never_accepts_what_the_general_parser_refuses() {
        let corpus = corpus(VERSION);
        let mut rng = StdRng::seed_from_u64(0x5ea1_9057);
        let mut accepted = 0;
        for _ in 0..30_000 {
            let original = &corpus[rng.gen_range(0..corpus.len())];
            let mut input = original.clone();
            for _ in 0..rng.gen_range(1..=3) {
                let i = rng.gen_range(0..input.len());
                match rng.gen_range(0..5) {
                    0 => input[i] ^= 1 << rng.gen_range(0..8),
                    1 => input[i] = rng.gen(),
                    2 => input.truncate(i),
                    3 => input.insert(i, rng.gen()),
                    _ => {
                        input.remove(i);
                    }
                }
                if input.is_empty() {
                    break;
                }
            }
            if let Some(fast) = parse_canonical(&input) {
                accepted += 1;
                let general = parse_general(&input).unwrap_or_else(|e| {
                    panic!(
                        "fast path accepted, general refused ({e:?}): {}",
                        hex::encode(&input)
                    )
                });
                assert_same(&fast, &general, &input);
            }
        }
        // Flips inside the kid, sequence number, IV, ciphertext and signature keep the
        // canonical shape: the comparison above did run.
        assert!(
            accepted > 1000,
            "only {accepted} mutants took the fast path"
        );
    }

    #[test]
    fn version_2_has_one_encoding_read_by_the_fast_path_only() {
        for env in corpus(VERSION_BURST) {
            let fast = parse_canonical(&env).expect("a sealer's envelope is canonical");
            let proof = fast.proof.expect("version 2 carries a proof");
            assert_eq!(
                (proof.tree_size, proof.leaf_index, proof.path.len()),
                (1, 0, 0)
            );
            assert!(matches!(
                parse_general(&env),
                Err(Rejected::Malformed(why)) if why.contains("version 2")
            ));
        }
    }

    #[test]
    fn proofs_round_trip_and_other_encodings_are_refused() {
        for (size, index, len) in [(1, 0, 0), (24, 23, 5), (256, 255, 8), (u64::MAX, 0, 64)] {
            let path: Vec<Hash> = (0..len).map(|i| [i as u8; 32]).collect();
            let mut out = Vec::new();
            put_proof(&mut out, size, index, &path);
            let mut r = Reader::new(&out);
            let inner = r.bstr().unwrap();
            assert!(r.end().is_some());
            let proof = read_proof(inner).unwrap();
            assert_eq!(
                (proof.tree_size, proof.leaf_index, proof.path),
                (size, index, path)
            );
        }
        let too_long: Vec<Hash> = vec![[0; 32]; MAX_PATH_LEN + 1];
        let mut out = Vec::new();
        put_proof(&mut out, 2, 0, &too_long);
        assert!(read_proof(&out[3..]).is_none(), "path over 64 hashes");
        // Non-shortest integers, a short hash, trailing bytes.
        for bad in [
            &[0x83, 0x18, 0x01, 0x00, 0x80][..],
            &[0x83, 0x02, 0x00, 0x81, 0x58, 0x1f],
            &[0x83, 0x01, 0x00, 0x80, 0x00],
            &[0x84, 0x01, 0x00, 0x80, 0x00],
        ] {
            assert!(read_proof(bad).is_none(), "{}", hex::encode(bad));
        }
    }

    #[test]
    fn heads_are_shortest() {
        for (n, len) in [
            (0, 1),
            (23, 1),
            (24, 2),
            (255, 2),
            (256, 3),
            (65_535, 3),
            (65_536, 5),
            (u32::MAX as u64, 5),
            (1 << 32, 9),
            (u64::MAX, 9),
        ] {
            let head = Head::new(MAJOR_BSTR, n);
            assert_eq!(head.as_bytes().len(), len, "{n}");
            assert_eq!(head_len(n), len, "{n}");
            let mut r = Reader::new(head.as_bytes());
            assert_eq!(r.head(MAJOR_BSTR), Some(n));
        }
        // Longer-than-needed heads are not canonical.
        for bytes in [
            &[0x58, 0x17][..],
            &[0x59, 0x00, 0xff],
            &[0x5a, 0, 0, 0xff, 0xff],
        ] {
            assert_eq!(Reader::new(bytes).head(MAJOR_BSTR), None);
        }
    }
}
