//! The publisher side: sealing payloads into data envelopes.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use coset::cbor::value::Value;
use coset::iana;
use coset::{CoseEncrypt0Builder, CoseSign1Builder, HeaderBuilder};
use ed25519_dalek::Signer;
use rand::rngs::OsRng;
use rand::RngCore;

use crate::envelope::{
    encode_err, key_index_value, to_tagged, IV_LEN, KIND_DATA, LABEL_KEY_INDEX, LABEL_KIND,
    LABEL_SEQ, LABEL_VERSION, LABEL_X5CHAIN, VERSION,
};
use crate::{ContentKey, KeyIndex, KeyLocation, PublisherIdentity, SealError};

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
    embed_certificate: bool,
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
        Sealer {
            identity,
            location,
            epoch,
            cipher: Aes256Gcm::new(key.as_bytes().into()),
            next_seq: resume_from,
            reserved_until: resume_from,
            nonce_salt,
            embed_certificate: false,
        }
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
        self.embed_certificate = embed;
    }

    /// Fixes the 4-byte nonce prefix. Only for reproducible test vectors: a fixed salt is
    /// safe only while sequence numbers never repeat under the same key.
    #[doc(hidden)]
    pub fn set_nonce_salt_for_test_vectors(&mut self, salt: [u8; 4]) {
        self.nonce_salt = salt;
    }

    /// Seals `plaintext` for `topic`: encrypts, numbers, signs. The topic must be one this
    /// publisher's certificate permits.
    pub fn seal(&mut self, topic: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        if !sealpost_certs::topic::validate_topic(topic) {
            return Err(SealError::InvalidTopic(topic.to_owned()));
        }
        if !self.identity.certificate.may_publish(topic) {
            return Err(SealError::TopicNotPermitted(topic.to_owned()));
        }
        if self.next_seq >= self.reserved_until {
            return Err(SealError::SequenceExhausted);
        }
        let seq = self.next_seq;
        // The nonce is a per-sealer random prefix and the sequence number: unique under a
        // key as long as sequence numbers are, and still unique with high probability if a
        // restored backup ever reused some.
        let mut iv = [0u8; IV_LEN];
        iv[..4].copy_from_slice(&self.nonce_salt);
        iv[4..].copy_from_slice(&seq.to_be_bytes());

        let encrypt0 = CoseEncrypt0Builder::new()
            .protected(
                HeaderBuilder::new()
                    .algorithm(iana::Algorithm::A256GCM)
                    .build(),
            )
            .unprotected(HeaderBuilder::new().iv(iv.to_vec()).build())
            .try_create_ciphertext(plaintext, topic.as_bytes(), |pt, aad| {
                self.cipher
                    .encrypt(Nonce::from_slice(&iv), Payload { msg: pt, aad })
                    .map_err(|_| SealError::Encoding("payload too large for AES-GCM".into()))
            })?
            .build();
        let inner = to_tagged(encrypt0)?;

        let index = KeyIndex {
            publisher: self.identity.id().to_owned(),
            epoch: self.epoch,
            location: self.location.clone(),
        };
        let protected = HeaderBuilder::new()
            .algorithm(iana::Algorithm::EdDSA)
            .key_id(self.identity.certificate.fingerprint.to_vec())
            .value(LABEL_VERSION, Value::Integer(VERSION.into()))
            .value(LABEL_KIND, Value::Integer(KIND_DATA.into()))
            .value(LABEL_SEQ, Value::Integer(seq.into()))
            .value(LABEL_KEY_INDEX, key_index_value(&index))
            .build();
        let mut unprotected = HeaderBuilder::new();
        if self.embed_certificate {
            unprotected = unprotected.value(
                LABEL_X5CHAIN,
                Value::Bytes(self.identity.certificate.der.clone()),
            );
        }
        let sign1 = CoseSign1Builder::new()
            .protected(protected)
            .unprotected(unprotected.build())
            .payload(inner)
            .create_signature(topic.as_bytes(), |tbs| {
                self.identity.key.sign(tbs).to_bytes().to_vec()
            })
            .build();
        let bytes = coset::TaggedCborSerializable::to_tagged_vec(sign1).map_err(encode_err)?;
        self.next_seq += 1;
        Ok(bytes)
    }
}
