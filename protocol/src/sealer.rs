//! The publisher side: sealing payloads into data envelopes.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use ed25519_dalek::hazmat::{raw_sign_byupdate, ExpandedSecretKey};
use ed25519_dalek::VerifyingKey;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256, Sha512};
use std::ops::Range;

use crate::envelope::{
    enc_structure, head_len, protected_prefix, protected_suffix, put_head, put_proof,
    root_sig_structure, sig_structure, ENCRYPT0_PROTECTED, ENCRYPT0_START, IV_LEN, LABEL_X5CHAIN,
    MAJOR_BSTR, MAJOR_UINT, PROTECTED_MIDDLE, VDP_INCLUSION_START, VERSION, VERSION_BURST,
};
use crate::merkle;
use crate::{ContentKey, KeyIndex, KeyLocation, PublisherIdentity, SealError};

/// Length of the AES-GCM authentication tag.
const TAG_LEN: usize = 16;

/// Default largest burst signed with one signature.
pub const DEFAULT_MAX_BURST: usize = 256;

/// Seals payloads for one publisher: encrypts with the current content key, numbers,
/// and signs each message.
///
/// Sequence numbers must never repeat, even across restarts. The sealer only uses numbers
/// the caller has *reserved* ([`Sealer::reserve`]); the caller persists the returned
/// high-water mark before sealing, and passes it back to [`Sealer::new`] after a restart.
pub struct Sealer {
    identity: PublisherIdentity,
    location: KeyLocation,
    epoch: u64,
    cipher: Aes256Gcm,
    next_seq: u64,
    reserved_until: u64,
    nonce_salt: [u8; 4],
    /// The signing key expanded once (SHA-512 of the seed), not on every signature.
    signing_key: ExpandedSecretKey,
    verifying_key: VerifyingKey,
    /// The protected header up to the publication time: the same for every message.
    /// (The version, kind and sequence-number label follow the time.)
    protected_prefix: Vec<u8>,
    /// The protected header after the sequence number: the key index (changes with the
    /// epoch).
    protected_suffix: Vec<u8>,
    /// The serialized x5chain entry of the unprotected header (`33: certificate`) when
    /// embedding the certificate, else empty.
    x5chain_entry: Vec<u8>,
    /// The envelope version written: [`VERSION`] or [`VERSION_BURST`].
    version: u64,
    /// Most messages signed at once.
    max_burst: usize,
    /// Reused buffer for the Enc_structure (the AES-GCM additional data).
    aad: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("publisher", &self.identity.id())
            .field("epoch", &self.epoch)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for `identity`, announcing keys at `location`, starting with the content
    /// key `key` of `epoch`. `resume_from` is the persisted high-water mark (0 the first
    /// time): sequence numbers start there. Reserve some before sealing.
    pub fn new(
        identity: PublisherIdentity,
        location: KeyLocation,
        epoch: u64,
        key: &ContentKey,
        resume_from: u64,
    ) -> Sealer {
        let mut nonce_salt = [0u8; 4];
        OsRng.fill_bytes(&mut nonce_salt);
        let signing_key = ExpandedSecretKey::from(identity.key.as_bytes());
        let verifying_key = identity.key.verifying_key();
        let protected_prefix = protected_prefix(&identity.certificate.fingerprint);
        let mut sealer = Sealer {
            identity,
            location,
            epoch,
            cipher: Aes256Gcm::new(key.as_bytes().into()),
            next_seq: resume_from,
            reserved_until: resume_from,
            nonce_salt,
            signing_key,
            verifying_key,
            protected_prefix,
            protected_suffix: Vec::new(),
            x5chain_entry: Vec::new(),
            version: VERSION_BURST,
            max_burst: DEFAULT_MAX_BURST,
            aad: Vec::new(),
        };
        sealer.set_key(epoch, key);
        sealer.set_embed_certificate(false);
        sealer
    }

    /// Reserves `count` more sequence numbers and returns the new high-water mark, which
    /// the caller must persist (durably) before sealing with them.
    pub fn reserve(&mut self, count: u64) -> u64 {
        self.reserved_until = self.reserved_until.saturating_add(count);
        self.reserved_until
    }

    /// Sequence numbers still reserved.
    pub fn reserved_remaining(&self) -> u64 {
        self.reserved_until - self.next_seq
    }

    /// The sequence number the next message will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Switches to a new content key (after a rotation).
    pub fn set_key(&mut self, epoch: u64, key: &ContentKey) {
        self.epoch = epoch;
        self.cipher = Aes256Gcm::new(key.as_bytes().into());
        self.protected_suffix = protected_suffix(&KeyIndex {
            publisher: self.identity.id().to_owned(),
            epoch,
            location: self.location.clone(),
        });
    }

    /// The current key epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Where keys are announced.
    pub fn location(&self) -> &KeyLocation {
        &self.location
    }

    /// The publisher identity.
    pub fn identity(&self) -> &PublisherIdentity {
        &self.identity
    }

    /// Carry the publisher certificate in every envelope (x5chain), so subscribers can
    /// verify without having seen a key message (e.g. in KDC mode). Costs the certificate's
    /// size (about 400 bytes) per message.
    pub fn set_embed_certificate(&mut self, embed: bool) {
        self.x5chain_entry.clear();
        if embed {
            let der = &self.identity.certificate.der;
            put_head(&mut self.x5chain_entry, MAJOR_UINT, LABEL_X5CHAIN as u64);
            put_head(&mut self.x5chain_entry, MAJOR_BSTR, der.len() as u64);
            self.x5chain_entry.extend_from_slice(der);
        }
    }

    /// Fixes the 4-byte nonce prefix. Only for reproducible test vectors: a fixed salt is
    /// safe only while sequence numbers never repeat under the same key.
    #[doc(hidden)]
    pub fn set_nonce_salt_for_test_vectors(&mut self, salt: [u8; 4]) {
        self.nonce_salt = salt;
    }

    /// Which envelope version to write: [`VERSION_BURST`] (2, the default) or
    /// [`VERSION`] (1, one signature per message, for subscribers that read only version 1
    /// during a migration). Anything else is refused.
    pub fn set_wire_version(&mut self, version: u64) -> Result<(), SealError> {
        if version != VERSION && version != VERSION_BURST {
            return Err(SealError::UnsupportedVersion(version));
        }
        self.version = version;
        Ok(())
    }

    /// The envelope version this sealer writes.
    pub fn wire_version(&self) -> u64 {
        self.version
    }

    /// Signs at most `max` messages with one signature ([`Sealer::seal_many`] splits longer
    /// batches). Default [`DEFAULT_MAX_BURST`]; at least 1. A larger burst makes every
    /// envelope's inclusion path longer (32 bytes per doubling).
    pub fn set_max_burst(&mut self, max: usize) {
        self.max_burst = max.max(1);
    }

    /// The largest burst signed at once.
    pub fn max_burst(&self) -> usize {
        self.max_burst
    }

    /// Seals `plaintext` for `topic`: encrypts, numbers, signs, with `now` (unix seconds,
    /// the caller's clock) as the signed publication time. The topic must be one this
    /// publisher's certificate permits. In version 2 this is a burst of one.
    ///
    /// Subscribers refuse envelopes whose publication time is older than their maximum age
    /// (or too far in the future), so `now` must be the real time.
    pub fn seal(&mut self, topic: &str, plaintext: &[u8], now: i64) -> Result<Vec<u8>, SealError> {
        let mut sealed = self.seal_many(&[(topic, plaintext)], now)?;
        Ok(sealed.pop().expect("one envelope per message"))
    }

    /// Seals several messages `(topic, plaintext)` at once, in order, with consecutive
    /// sequence numbers. In version 2 each burst of up to [`Sealer::max_burst`] messages is
    /// signed once (a Merkle tree over the messages, its root signed), and every envelope
    /// stays verifiable on its own. Either every message is sealed or none is (and no
    /// sequence number is used).
    pub fn seal_many(
        &mut self,
        messages: &[(&str, &[u8])],
        now: i64,
    ) -> Result<Vec<Vec<u8>>, SealError> {
        let published_at = u64::try_from(now).map_err(|_| SealError::InvalidTime(now))?;
        for (topic, _) in messages {
            self.check_topic(topic)?;
        }
        if self.reserved_remaining() < messages.len() as u64 {
            return Err(SealError::SequenceExhausted);
        }
        let mut out = Vec::with_capacity(messages.len());
        if self.version == VERSION {
            for (topic, plaintext) in messages {
                out.push(self.seal_v1(topic, plaintext, published_at)?);
            }
        } else {
            for burst in messages.chunks(self.max_burst) {
                self.seal_burst(burst, published_at, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Would this sealer seal for `topic`? (A valid topic name that the publisher's
    /// certificate permits.)
    pub fn check_topic(&self, topic: &str) -> Result<(), SealError> {
        if !sealpost_certs::topic::validate_topic(topic) {
            return Err(SealError::InvalidTopic(topic.to_owned()));
        }
        if !self.identity.certificate.may_publish(topic) {
            return Err(SealError::TopicNotPermitted(topic.to_owned()));
        }
        Ok(())
    }

    /// Length of the protected header of the message `seq`.
    fn protected_len(&self, published_at: u64, seq: u64) -> usize {
        self.protected_prefix.len()
            + head_len(published_at)
            + PROTECTED_MIDDLE[0].len()
            + head_len(seq)
            + self.protected_suffix.len()
    }

    /// Writes the protected header of message `seq` as a byte string; returns the range
    /// of its content (what Sig_structure covers).
    fn write_protected(&self, out: &mut Vec<u8>, published_at: u64, seq: u64) -> Range<usize> {
        put_head(
            out,
            MAJOR_BSTR,
            self.protected_len(published_at, seq) as u64,
        );
        let start = out.len();
        out.extend_from_slice(&self.protected_prefix);
        put_head(out, MAJOR_UINT, published_at);
        out.extend_from_slice(&PROTECTED_MIDDLE[(self.version - 1) as usize]);
        put_head(out, MAJOR_UINT, seq);
        out.extend_from_slice(&self.protected_suffix);
        start..out.len()
    }

    /// Length of the COSE_Encrypt0 of a `plaintext_len`-byte message, and of its
    /// ciphertext.
    fn payload_len(plaintext_len: usize) -> (usize, usize) {
        let ciphertext_len = plaintext_len + TAG_LEN;
        let payload_len =
            ENCRYPT0_START.len() + IV_LEN + head_len(ciphertext_len as u64) + ciphertext_len;
        (payload_len, ciphertext_len)
    }

    /// Encrypts `plaintext` as message `seq` and writes its COSE_Encrypt0 as a byte
    /// string; returns the range of its content (the COSE_Sign1 payload).
    fn write_payload(
        &mut self,
        out: &mut Vec<u8>,
        topic: &str,
        plaintext: &[u8],
        seq: u64,
    ) -> Result<Range<usize>, SealError> {
        // The nonce is a per-sealer random prefix and the sequence number: unique under a
        // key as long as sequence numbers are, and still unique with high probability if a
        // restored backup ever reused some.
        let mut iv = [0u8; IV_LEN];
        iv[..4].copy_from_slice(&self.nonce_salt);
        iv[4..].copy_from_slice(&seq.to_be_bytes());
        let (payload_len, ciphertext_len) = Self::payload_len(plaintext.len());
        put_head(out, MAJOR_BSTR, payload_len as u64);
        let payload_start = out.len();
        out.extend_from_slice(&ENCRYPT0_START);
        out.extend_from_slice(&iv);
        put_head(out, MAJOR_BSTR, ciphertext_len as u64);
        let ciphertext_start = out.len();
        out.extend_from_slice(plaintext);
        enc_structure(&mut self.aad, &ENCRYPT0_PROTECTED, topic.as_bytes());
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                Nonce::from_slice(&iv),
                &self.aad,
                &mut out[ciphertext_start..],
            )
            .map_err(|_| SealError::Encoding("payload too large for AES-GCM".into()))?;
        out.extend_from_slice(&tag);
        Ok(payload_start..out.len())
    }

    /// Ed25519 signature (with the pre-expanded key) over what `feed` writes. ed25519-dalek
    /// calls `feed` twice (the message is hashed for the nonce and for the challenge).
    fn sign(&self, feed: impl Fn(&mut Sha512)) -> Result<[u8; 64], SealError> {
        raw_sign_byupdate::<Sha512, _>(
            &self.signing_key,
            |h| {
                feed(h);
                Ok(())
            },
            &self.verifying_key,
        )
        .map(|signature| signature.to_bytes())
        .map_err(|e| SealError::Encoding(e.to_string()))
    }

    /// A version 1 envelope: one signature over this message's Sig_structure.
    fn seal_v1(
        &mut self,
        topic: &str,
        plaintext: &[u8],
        published_at: u64,
    ) -> Result<Vec<u8>, SealError> {
        let seq = self.next_seq;
        // The envelope is written front to back into one buffer of the exact size:
        // COSE_Sign1 [protected, unprotected, payload = COSE_Encrypt0, signature].
        // The layout is the one docs/PROTOCOL.md specifies, in CBOR's shortest form, with
        // the header fields in the order coset writes them (the test vectors pin it).
        let protected_len = self.protected_len(published_at, seq);
        let (payload_len, _) = Self::payload_len(plaintext.len());
        let unprotected_len = 1 + self.x5chain_entry.len();
        let total = 2
            + head_len(protected_len as u64)
            + protected_len
            + unprotected_len
            + head_len(payload_len as u64)
            + payload_len
            + 2
            + ed25519_dalek::SIGNATURE_LENGTH;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&[0xd2, 0x84]); // tag 18 (COSE_Sign1), array of 4
        let protected = self.write_protected(&mut out, published_at, seq);
        let has_x5chain = !self.x5chain_entry.is_empty();
        out.push(0xa0 | u8::from(has_x5chain)); // map of 0 or 1
        out.extend_from_slice(&self.x5chain_entry);
        let payload = self.write_payload(&mut out, topic, plaintext, seq)?;
        let signature = self.sign(|h| {
            sig_structure(
                &out[protected.clone()],
                topic.as_bytes(),
                &out[payload.clone()],
                |part| h.update(part),
            )
        })?;
        out.extend_from_slice(&[0x58, 0x40]); // bstr of 64 bytes
        out.extend_from_slice(&signature);
        debug_assert_eq!(out.len(), total);
        self.next_seq += 1;
        Ok(out)
    }

    /// Version 2: seals `burst` (at most `max_burst` messages, topics checked, sequence
    /// numbers reserved) with one signature over the Merkle root of their Sig_structures,
    /// appending the envelopes to `out`.
    fn seal_burst(
        &mut self,
        burst: &[(&str, &[u8])],
        published_at: u64,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), SealError> {
        // Each message's protected header and payload (with their byte-string heads), and
        // where the payload starts; then its leaf hash.
        let mut parts = Vec::with_capacity(burst.len());
        let mut leaves = Vec::with_capacity(burst.len());
        for (i, (topic, plaintext)) in burst.iter().enumerate() {
            let seq = self.next_seq + i as u64;
            let mut part =
                Vec::with_capacity(self.protected_len(published_at, seq) + plaintext.len() + 64);
            let protected = self.write_protected(&mut part, published_at, seq);
            let payload_head = part.len();
            let payload = self.write_payload(&mut part, topic, plaintext, seq)?;
            let mut digest = Sha256::new();
            sig_structure(
                &part[protected],
                topic.as_bytes(),
                &part[payload],
                |piece| digest.update(piece),
            );
            leaves.push(merkle::leaf_hash(&digest.finalize().into()));
            parts.push((part, payload_head));
        }
        let (root, paths) = merkle::root_and_paths(&leaves);
        let tree_size = burst.len() as u64;
        let fingerprint = self.identity.certificate.fingerprint;
        let signature = self.sign(|h| {
            root_sig_structure(&fingerprint, tree_size, &root, |piece| h.update(piece))
        })?;
        let has_x5chain = !self.x5chain_entry.is_empty();
        for (i, ((part, payload_head), path)) in parts.into_iter().zip(paths).enumerate() {
            let mut envelope = Vec::with_capacity(
                2 + part.len() + self.x5chain_entry.len() + 16 + 34 * path.len() + 2 + 64,
            );
            envelope.extend_from_slice(&[0xd2, 0x84]); // tag 18 (COSE_Sign1), array of 4
            envelope.extend_from_slice(&part[..payload_head]);
            // {33: certificate (optional), 396: {-1: [proof]}}, deterministic order.
            envelope.push(0xa1 + u8::from(has_x5chain));
            envelope.extend_from_slice(&self.x5chain_entry);
            envelope.extend_from_slice(&VDP_INCLUSION_START);
            put_proof(&mut envelope, tree_size, i as u64, &path);
            envelope.extend_from_slice(&part[payload_head..]);
            envelope.extend_from_slice(&[0x58, 0x40]); // bstr of 64 bytes
            envelope.extend_from_slice(&signature);
            out.push(envelope);
        }
        self.next_seq += tree_size;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aes_gcm::aead::{Aead, Payload};
    use coset::cbor::value::Value;
    use coset::{iana, CoseEncrypt0Builder, CoseSign1Builder, HeaderBuilder};
    use ed25519_dalek::Signer;
    use sealpost_certs::{CertificateAuthority, Profile, Validity};

    use crate::envelope::{
        CWT_CLAIM_IAT, KIND_DATA, LABEL_CWT_CLAIMS, LABEL_KEY_INDEX, LABEL_KIND, LABEL_SEQ,
        LABEL_VERSION,
    };

    /// A publisher "pub-1" that may publish `a/#`.
    pub(crate) fn identity() -> PublisherIdentity {
        let ca = CertificateAuthority::create("unit CA", Validity::days_from_now(1)).unwrap();
        let issued = ca
            .issue(
                &Profile::Publisher {
                    id: "pub-1".into(),
                    topics: vec!["a/#".into()],
                },
                Validity::days_from_now(1),
            )
            .unwrap();
        PublisherIdentity::from_pem(&issued.certificate_pem, &issued.private_key_pem).unwrap()
    }

    /// Sequence numbers and epochs at every CBOR length boundary.
    pub(crate) const BOUNDARIES: [u64; 10] = [
        0,
        23,
        24,
        255,
        256,
        65_535,
        65_536,
        u32::MAX as u64,
        1 << 32,
        u64::MAX - 1,
    ];

    /// How envelopes were encoded before the sealer wrote them directly: through coset's
    /// builders and value trees. The direct encoding must stay byte-identical to it.
    #[allow(clippy::too_many_arguments)]
    fn seal_with_coset(
        identity: &PublisherIdentity,
        location: &KeyLocation,
        epoch: u64,
        key: &ContentKey,
        seq: u64,
        published_at: u64,
        salt: [u8; 4],
        embed: bool,
        topic: &str,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let cipher = Aes256Gcm::new(key.as_bytes().into());
        let mut iv = [0u8; IV_LEN];
        iv[..4].copy_from_slice(&salt);
        iv[4..].copy_from_slice(&seq.to_be_bytes());
        let encrypt0 = CoseEncrypt0Builder::new()
            .protected(
                HeaderBuilder::new()
                    .algorithm(iana::Algorithm::A256GCM)
                    .build(),
            )
            .unprotected(HeaderBuilder::new().iv(iv.to_vec()).build())
            .create_ciphertext(plaintext, topic.as_bytes(), |pt, aad| {
                cipher
                    .encrypt(Nonce::from_slice(&iv), Payload { msg: pt, aad })
                    .unwrap()
            })
            .build();
        let inner = coset::TaggedCborSerializable::to_tagged_vec(encrypt0).unwrap();
        let index = Value::Array(vec![
            Value::Text(identity.id().to_owned()),
            Value::Integer(epoch.into()),
            Value::Text(location.to_wire()),
        ]);
        let protected = HeaderBuilder::new()
            .algorithm(iana::Algorithm::EdDSA)
            .key_id(identity.certificate.fingerprint.to_vec())
            .value(
                LABEL_CWT_CLAIMS,
                Value::Map(vec![(
                    Value::Integer(CWT_CLAIM_IAT.into()),
                    Value::Integer(published_at.into()),
                )]),
            )
            .value(LABEL_VERSION, Value::Integer(VERSION.into()))
            .value(LABEL_KIND, Value::Integer(KIND_DATA.into()))
            .value(LABEL_SEQ, Value::Integer(seq.into()))
            .value(LABEL_KEY_INDEX, index)
            .build();
        let mut unprotected = HeaderBuilder::new();
        if embed {
            unprotected = unprotected.value(
                LABEL_X5CHAIN,
                Value::Bytes(identity.certificate.der.clone()),
            );
        }
        let sign1 = CoseSign1Builder::new()
            .protected(protected)
            .unprotected(unprotected.build())
            .payload(inner)
            .create_signature(topic.as_bytes(), |tbs| {
                identity.key.sign(tbs).to_bytes().to_vec()
            })
            .build();
        coset::TaggedCborSerializable::to_tagged_vec(sign1).unwrap()
    }

    #[test]
    fn direct_encoding_is_byte_identical_to_coset() {
        let identity = identity();
        let key = ContentKey::generate();
        let salt = [9, 8, 7, 6];
        let locations = [
            KeyLocation::key_topic_for("pub-1"),
            KeyLocation::Kdc(format!("https://kdc.example:8443/{}", "p".repeat(300))),
        ];
        // Publication times at every CBOR length boundary an i64 clock can reach.
        let times: Vec<u64> = BOUNDARIES
            .iter()
            .copied()
            .filter(|&t| t <= i64::MAX as u64)
            .chain([i64::MAX as u64])
            .collect();
        let check = |location: &KeyLocation, epoch, seq, time, embed, topic: &str, len| {
            let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut sealer = Sealer::new(identity.clone(), location.clone(), epoch, &key, seq);
            sealer.set_wire_version(VERSION).unwrap();
            sealer.reserve(1);
            sealer.set_nonce_salt_for_test_vectors(salt);
            sealer.set_embed_certificate(embed);
            let direct = sealer.seal(topic, &plaintext, time as i64).unwrap();
            let reference = seal_with_coset(
                &identity, location, epoch, &key, seq, time, salt, embed, topic, &plaintext,
            );
            assert_eq!(
                direct, reference,
                "epoch {epoch}, seq {seq}, time {time}, embed {embed}, topic {topic}, {len} bytes"
            );
        };
        for (i, &seq) in BOUNDARIES.iter().enumerate() {
            for (j, &epoch) in BOUNDARIES.iter().enumerate() {
                let location = &locations[(i + j) % 2];
                let time = times[(i * 7 + j) % times.len()];
                check(location, epoch, seq, time, (i + j) % 3 == 0, "a/b", 5);
            }
        }
        let long_topic = format!("a/{}", "t".repeat(300));
        for len in [0usize, 7, 8, 239, 240, 1000, 65_519, 65_520] {
            for embed in [false, true] {
                check(&locations[0], 3, 1000, 1_780_000_000, embed, "a/x", len);
                check(&locations[1], 70_000, 1 << 40, 0, embed, &long_topic, len);
            }
        }
    }

    #[test]
    fn rotation_and_embedding_switch_the_precomputed_parts() {
        let identity = identity();
        let (k1, k2) = (ContentKey::generate(), ContentKey::generate());
        let location = KeyLocation::key_topic_for("pub-1");
        let mut sealer = Sealer::new(identity.clone(), location.clone(), 1, &k1, 10);
        sealer.set_wire_version(VERSION).unwrap();
        sealer.reserve(3);
        sealer.set_nonce_salt_for_test_vectors([1; 4]);
        sealer.set_embed_certificate(true);
        sealer.set_key(300, &k2);
        let env = sealer.seal("a/1", b"x", 1000).unwrap();
        let reference = seal_with_coset(
            &identity, &location, 300, &k2, 10, 1000, [1; 4], true, "a/1", b"x",
        );
        assert_eq!(env, reference);
        sealer.set_embed_certificate(false);
        let env = sealer.seal("a/1", b"y", 1001).unwrap();
        let reference = seal_with_coset(
            &identity, &location, 300, &k2, 11, 1001, [1; 4], false, "a/1", b"y",
        );
        assert_eq!(env, reference);
    }

    fn burst_sealer() -> Sealer {
        let mut sealer = Sealer::new(
            identity(),
            KeyLocation::key_topic_for("pub-1"),
            1,
            &ContentKey::generate(),
            0,
        );
        sealer.reserve(10);
        sealer
    }

    #[test]
    fn seal_many_seals_all_or_nothing() {
        let mut sealer = burst_sealer();
        let bad: [(&str, &[u8]); 3] = [("a/1", b"x"), ("b/1", b"y"), ("a/2", b"z")];
        assert_eq!(
            sealer.seal_many(&bad, 1000),
            Err(SealError::TopicNotPermitted("b/1".into()))
        );
        assert_eq!(sealer.next_seq(), 0, "no sequence number used");
        let eleven = vec![("a/1", &b"x"[..]); 11];
        assert_eq!(
            sealer.seal_many(&eleven, 1000),
            Err(SealError::SequenceExhausted)
        );
        assert_eq!(sealer.next_seq(), 0);
        assert_eq!(sealer.seal_many(&eleven[..10], 1000).unwrap().len(), 10);
        assert_eq!(sealer.next_seq(), 10);
    }

    #[test]
    fn long_batches_are_split_at_the_maximum_burst() {
        let mut sealer = burst_sealer();
        sealer.set_max_burst(3);
        let sealed = sealer
            .seal_many(&vec![("a/1", &b"x"[..]); 7], 1000)
            .unwrap();
        let positions: Vec<(u64, u64)> = sealed
            .iter()
            .map(|e| {
                let b = crate::peek(e).unwrap().burst.unwrap();
                (b.leaf_index, b.tree_size)
            })
            .collect();
        assert_eq!(
            positions,
            [(0, 3), (1, 3), (2, 3), (0, 3), (1, 3), (2, 3), (0, 1)]
        );
        sealer.set_max_burst(0);
        assert_eq!(sealer.max_burst(), 1, "at least one message per burst");
    }

    #[test]
    fn a_negative_time_is_refused() {
        let mut sealer = Sealer::new(
            identity(),
            KeyLocation::key_topic_for("pub-1"),
            1,
            &ContentKey::generate(),
            0,
        );
        sealer.reserve(1);
        assert_eq!(
            sealer.seal("a/1", b"x", -1),
            Err(SealError::InvalidTime(-1))
        );
        // The refused call used no sequence number.
        assert_eq!(sealer.next_seq(), 0);
    }
}
