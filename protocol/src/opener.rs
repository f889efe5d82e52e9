//! The subscriber side: verifying and opening data envelopes and key messages.

use std::collections::HashMap;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Nonce, Tag};
use ed25519_dalek::{Signature, VerifyingKey};
use sealpost_certs::{now_unix, CertError, CertificateInfo, Role, Verifier};
use sha2::{Digest, Sha256};

use crate::envelope::{
    self, check_preamble, embedded_certificate, enc_structure, fingerprint_of, root_sig_structure,
    sig_structure, ParsedEnvelope, KIND_KEYS,
};
use crate::key_message::parse_body;
use crate::merkle::{self, ProofShape};
use crate::replay::{ReplayCheck, ReplayState};
use crate::root_cache::{RootCache, DEFAULT_ROOT_CACHE};
use crate::{ContentKey, Keyring, Rejected, SubscriberIdentity};

/// Length of the AES-GCM authentication tag.
const TAG_LEN: usize = 16;

/// Most publisher certificates remembered at once.
const MAX_KNOWN_PUBLISHERS: usize = 4096;

/// Default maximum age of an envelope, by its signed publication time: 24 hours.
pub const DEFAULT_MAX_AGE_SECS: u64 = 24 * 60 * 60;
/// Default allowance for a publisher clock ahead of the subscriber's: 5 minutes.
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 5 * 60;

/// A message that passed every check, decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The topic it arrived on (and was signed for).
    pub topic: String,
    /// The publisher's verified identity.
    pub publisher: String,
    /// The publisher's sequence number.
    pub seq: u64,
    /// Key epoch it was encrypted under.
    pub epoch: u64,
    /// The publication time the publisher signed (unix seconds).
    pub published_at: u64,
    /// The plaintext.
    pub payload: Vec<u8>,
}

/// What a key message taught the opener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUpdate {
    /// The publisher whose keys arrived.
    pub publisher: String,
    /// Epochs newly learned (already-known epochs are not unwrapped again).
    pub new_epochs: Vec<u64>,
    /// When the publisher issued the key message (unix seconds).
    pub issued_at: u64,
}

struct KnownPublisher {
    info: CertificateInfo,
    key: VerifyingKey,
    /// Burst roots of this publisher whose signature verified.
    roots: RootCache,
}

/// Verifies and opens sealpost messages for one subscriber.
///
/// Checks run in the order of the protocol: parse, replay window, publication time (not
/// older than [`Opener::with_max_age`], not further ahead than
/// [`Opener::with_clock_skew`]), publisher certificate (chain, validity, revocation, topic
/// permission), signature, content key, decryption.
/// The signature is verified before any private-key operation, and the replay window is
/// updated only for messages that opened, so forgeries can neither use the private key nor
/// move the window.
pub struct Opener {
    verifier: Verifier,
    identity: Option<SubscriberIdentity>,
    publishers: HashMap<[u8; 32], KnownPublisher>,
    keyring: Keyring,
    replay: ReplayState,
    max_envelope: usize,
    /// Oldest accepted publication time, relative to `now`, in seconds.
    max_age: u64,
    /// Furthest accepted publication time ahead of `now`, in seconds.
    clock_skew: u64,
    /// Verified burst roots remembered per publisher.
    root_cache: usize,
    /// Reused buffer for the Enc_structure (the AES-GCM additional data).
    aad: Vec<u8>,
    /// The interior nodes of the last inclusion path evaluated, so that the next message
    /// of the same burst hashes only what its path does not share (see
    /// [`merkle::NodeMemo`]: the roots computed are exactly the same).
    node_memo: merkle::NodeMemo,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("identity", &self.identity)
            .field("known_publishers", &self.publishers.len())
            .finish_non_exhaustive()
    }
}

/// A data envelope that passed the checks that need no signature verification.
struct Checked<'a> {
    topic: &'a str,
    parsed: ParsedEnvelope<'a>,
    key: VerifyingKey,
}

impl Checked<'_> {
    /// Feeds the Sig_structure the publisher signed to `sink`, from the received bytes.
    fn signed_bytes(&self, sink: impl FnMut(&[u8])) {
        sig_structure(
            &self.parsed.protected,
            self.topic.as_bytes(),
            &self.parsed.payload,
            sink,
        );
    }
}

impl Opener {
    /// An opener trusting `verifier`'s CA (and revocation list). Without an identity it
    /// can open data only with keys added by [`Opener::add_key`] (KDC mode).
    pub fn new(verifier: Verifier) -> Opener {
        Opener {
            verifier,
            identity: None,
            publishers: HashMap::new(),
            keyring: Keyring::default(),
            replay: ReplayState::default(),
            max_envelope: envelope::DEFAULT_MAX_ENVELOPE,
            max_age: DEFAULT_MAX_AGE_SECS,
            clock_skew: DEFAULT_CLOCK_SKEW_SECS,
            root_cache: DEFAULT_ROOT_CACHE,
            aad: Vec::new(),
            node_memo: merkle::NodeMemo::default(),
        }
    }

    /// Adds the subscriber identity whose private key (RSA or X25519) unwraps key messages.
    pub fn with_identity(mut self, identity: SubscriberIdentity) -> Opener {
        self.identity = Some(identity);
        self
    }

    /// Keeps `kept` recent epochs per publisher (default 4).
    pub fn with_kept_epochs(mut self, kept: usize) -> Opener {
        self.keyring = Keyring::new(kept);
        self
    }

    /// Refuses envelopes larger than `bytes` before parsing them.
    pub fn with_max_envelope(mut self, bytes: usize) -> Opener {
        self.max_envelope = bytes;
        self
    }

    /// Refuses envelopes published more than `secs` seconds before `now` as
    /// [`Rejected::Stale`] (default [`DEFAULT_MAX_AGE_SECS`], 24 hours). This is what stops
    /// an old captured envelope replayed to a subscriber whose replay window never saw it
    /// (a new subscriber, or one that lost its state).
    pub fn with_max_age(mut self, secs: u64) -> Opener {
        self.max_age = secs;
        self
    }

    /// Accepts publication times up to `secs` seconds after `now`, for publisher clocks
    /// running ahead (default [`DEFAULT_CLOCK_SKEW_SECS`], 5 minutes); later ones are
    /// [`Rejected::Stale`].
    pub fn with_clock_skew(mut self, secs: u64) -> Opener {
        self.clock_skew = secs;
        self
    }

    /// Remembers the last `roots` verified burst roots per publisher (default
    /// [`DEFAULT_ROOT_CACHE`]), so the root signature of a version 2 burst is verified once
    /// for all its messages that arrive while it is remembered. 0 verifies every time.
    /// Only roots whose signature verified are remembered.
    pub fn with_root_cache(mut self, roots: usize) -> Opener {
        self.root_cache = roots;
        self
    }

    /// The subscriber identity, if any.
    pub fn identity(&self) -> Option<&SubscriberIdentity> {
        self.identity.as_ref()
    }

    /// The verifier, e.g. to install a newer revocation list.
    pub fn verifier_mut(&mut self) -> &mut Verifier {
        &mut self.verifier
    }

    /// The replay windows, to persist.
    pub fn replay_state(&self) -> &ReplayState {
        &self.replay
    }

    /// Restores persisted replay windows.
    pub fn set_replay_state(&mut self, state: ReplayState) {
        self.replay = state;
    }

    /// The content keys known.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Adds a content key obtained out of band (from the KDC, or restored state).
    pub fn add_key(&mut self, publisher: &str, epoch: u64, key: ContentKey) -> bool {
        self.keyring.insert(publisher, epoch, key)
    }

    /// Verifies a publisher certificate against the CA and remembers it, so envelopes
    /// that carry only its fingerprint can be verified.
    pub fn add_publisher_certificate(
        &mut self,
        der: &[u8],
        now: i64,
    ) -> Result<&CertificateInfo, Rejected> {
        let fingerprint: [u8; 32] = Sha256::digest(der).into();
        if !self.publishers.contains_key(&fingerprint) {
            let info = self.verifier.verify(der, now).map_err(reject_certificate)?;
            if info.role != Role::Publisher {
                return Err(Rejected::UntrustedPublisher(format!(
                    "{} has role {}, not publisher",
                    info.id, info.role
                )));
            }
            let key = info
                .ed25519_public_key()
                .map_err(|e| Rejected::UntrustedPublisher(e.to_string()))?;
            if self.publishers.len() >= MAX_KNOWN_PUBLISHERS {
                self.publishers.clear();
            }
            self.publishers.insert(
                fingerprint,
                KnownPublisher {
                    info,
                    key,
                    roots: RootCache::default(),
                },
            );
        }
        Ok(&self.publishers[&fingerprint].info)
    }

    /// Finds (or learns from `embedded`) the certificate with `fingerprint` and checks its
    /// time validity and revocation status now.
    fn publisher(
        &mut self,
        fingerprint: &[u8; 32],
        embedded: Option<&[u8]>,
        claimed: &str,
        now: i64,
    ) -> Result<&KnownPublisher, Rejected> {
        if !self.publishers.contains_key(fingerprint) {
            match embedded {
                Some(der) => {
                    let info = self.add_publisher_certificate(der, now)?;
                    if info.fingerprint != *fingerprint {
                        return Err(Rejected::UntrustedPublisher(
                            "embedded certificate does not match the kid".into(),
                        ));
                    }
                }
                None => {
                    return Err(Rejected::UnknownPublisher {
                        publisher: claimed.to_owned(),
                    })
                }
            }
        }
        let known = &self.publishers[fingerprint];
        // The embedded certificate sits in the unsigned header: it must be exactly the one
        // the kid names, so that no byte of an accepted envelope is malleable.
        if embedded.is_some_and(|der| der != known.info.der.as_slice()) {
            return Err(Rejected::UntrustedPublisher(
                "embedded certificate does not match the kid".into(),
            ));
        }
        self.verifier
            .check_time_and_revocation(&known.info, now)
            .map_err(reject_certificate)?;
        if known.info.id != claimed {
            return Err(Rejected::UntrustedPublisher(format!(
                "certificate belongs to {:?}, envelope claims {claimed:?}",
                known.info.id
            )));
        }
        Ok(known)
    }

    /// Opens a data envelope received on `topic`, at the current time.
    pub fn open(&mut self, topic: &str, bytes: &[u8]) -> Result<Opened, Rejected> {
        self.open_at(topic, bytes, now_unix())
    }

    /// Opens a data envelope received on `topic` at time `now` (unix seconds).
    pub fn open_at(&mut self, topic: &str, bytes: &[u8], now: i64) -> Result<Opened, Rejected> {
        let checked = self.check(topic, bytes, now)?;
        self.verify(&checked)?;
        self.decrypt_and_record(checked)
    }

    /// Opens many envelopes at once, verifying the signatures of version 1 envelopes as one
    /// batch (much faster than one by one; version 2 bursts need one verification per
    /// burst anyway). Results are in input order and identical to calling
    /// [`Opener::open_at`] on each in turn.
    pub fn open_batch(
        &mut self,
        items: &[(&str, &[u8])],
        now: i64,
    ) -> Vec<Result<Opened, Rejected>> {
        let mut results: Vec<Option<Result<Opened, Rejected>>> = Vec::with_capacity(items.len());
        let mut checked = Vec::with_capacity(items.len());
        let mut in_trees = Vec::new();
        for (i, (topic, bytes)) in items.iter().enumerate() {
            match self.check(topic, bytes, now) {
                Ok(c) if c.parsed.proof.is_some() => in_trees.push((i, c)),
                Ok(c) => checked.push((i, c)),
                Err(e) => {
                    results.push(Some(Err(e)));
                    continue;
                }
            }
            results.push(None);
        }
        for (i, c) in in_trees {
            let verified = self.verify_in_tree(&c);
            results[i] = Some(verified.and_then(|()| self.decrypt_and_record(c)));
        }
        let batch_ok = !checked.is_empty() && {
            let mut signed = Vec::new();
            let mut ends = Vec::with_capacity(checked.len());
            for (_, c) in &checked {
                c.signed_bytes(|part| signed.extend_from_slice(part));
                ends.push(signed.len());
            }
            let messages: Vec<&[u8]> = ends
                .iter()
                .scan(0, |start, &end| {
                    let message = &signed[*start..end];
                    *start = end;
                    Some(message)
                })
                .collect();
            let signatures: Vec<Signature> = checked
                .iter()
                .map(|(_, c)| Signature::from_bytes(&c.parsed.signature))
                .collect();
            let keys: Vec<VerifyingKey> = checked.iter().map(|(_, c)| c.key).collect();
            ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        };
        for (i, c) in checked {
            let verified = if batch_ok { Ok(()) } else { verify_one(&c) };
            results[i] = Some(verified.and_then(|()| self.decrypt_and_record(c)));
        }
        results
            .into_iter()
            .map(|r| r.expect("every item has a result"))
            .collect()
    }

    /// Parse, replay check and certificate checks: everything before the signature.
    fn check<'a>(
        &mut self,
        topic: &'a str,
        bytes: &'a [u8],
        now: i64,
    ) -> Result<Checked<'a>, Rejected> {
        let parsed = envelope::parse(bytes, self.max_envelope)?;
        match self.replay.check(&parsed.publisher, parsed.seq) {
            ReplayCheck::Fresh => {}
            ReplayCheck::Duplicate | ReplayCheck::TooOld => {
                return Err(Rejected::Replayed {
                    publisher: parsed.publisher.into_owned(),
                    seq: parsed.seq,
                })
            }
        }
        // Before any certificate or signature work: cheap, and an attacker can only change
        // the (signed) time by also failing the signature check.
        let (published, at) = (i128::from(parsed.published_at), i128::from(now));
        if published < at - i128::from(self.max_age) || published > at + i128::from(self.clock_skew)
        {
            return Err(Rejected::Stale {
                publisher: parsed.publisher.into_owned(),
                published_at: parsed.published_at,
            });
        }
        let known = self.publisher(
            &parsed.fingerprint,
            parsed.embedded.as_deref(),
            &parsed.publisher,
            now,
        )?;
        if !known.info.may_publish(topic) {
            return Err(Rejected::TopicNotPermitted {
                publisher: known.info.id.clone(),
                topic: topic.to_owned(),
            });
        }
        let key = known.key;
        Ok(Checked { topic, parsed, key })
    }

    /// Verifies the signature of a checked envelope (version 1) or its inclusion in a
    /// signed burst (version 2).
    fn verify(&mut self, checked: &Checked<'_>) -> Result<(), Rejected> {
        if checked.parsed.proof.is_some() {
            self.verify_in_tree(checked)
        } else {
            verify_one(checked)
        }
    }

    /// Version 2: the message's leaf, its inclusion path up to the root, and the root's
    /// signature (unless exactly this root, tree size and signature verified before).
    fn verify_in_tree(&mut self, checked: &Checked<'_>) -> Result<(), Rejected> {
        let parsed = &checked.parsed;
        let proof = parsed
            .proof
            .as_ref()
            .ok_or(Rejected::Malformed("no inclusion proof"))?;
        let mut digest = Sha256::new();
        checked.signed_bytes(|part| digest.update(part));
        let leaf = merkle::leaf_hash(&digest.finalize().into());
        let root = merkle::root_from_path_with(
            proof.leaf_index,
            proof.tree_size,
            &leaf,
            &proof.path,
            &mut self.node_memo,
        )
        .map_err(|shape| {
            Rejected::BadInclusionProof(match shape {
                ProofShape::IndexOutsideTree => "leaf index outside the tree",
                ProofShape::WrongPathLength => "path length does not fit index and tree size",
            })
        })?;
        let known = self
            .publishers
            .get_mut(&parsed.fingerprint)
            .ok_or(Rejected::Malformed("publisher certificate vanished"))?;
        if known
            .roots
            .contains(&root, proof.tree_size, &parsed.signature)
        {
            return Ok(());
        }
        let signature = Signature::from_bytes(&parsed.signature);
        // The same (cofactorless, canonical-S) check as for version 1 signatures.
        let mut verifier = known
            .key
            .verify_stream(&signature)
            .map_err(|_| Rejected::BadSignature)?;
        root_sig_structure(&parsed.fingerprint, proof.tree_size, &root, |part| {
            verifier.update(part)
        });
        verifier
            .finalize_and_verify()
            .map_err(|_| Rejected::BadSignature)?;
        known
            .roots
            .insert_verified(root, proof.tree_size, parsed.signature, self.root_cache);
        Ok(())
    }

    /// Key lookup, decryption, and only then recording the sequence number.
    fn decrypt_and_record(&mut self, checked: Checked<'_>) -> Result<Opened, Rejected> {
        let Checked { topic, parsed, .. } = checked;
        let cipher = self
            .keyring
            .cipher(&parsed.publisher, parsed.epoch)
            .ok_or_else(|| Rejected::UnknownKey {
                publisher: parsed.publisher.clone().into_owned(),
                epoch: parsed.epoch,
                location: parsed.key_location(),
            })?;
        enc_structure(&mut self.aad, &parsed.enc_protected, topic.as_bytes());
        let tag_at = parsed
            .ciphertext
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(Rejected::DecryptFailed)?;
        let (ciphertext, tag) = parsed.ciphertext.split_at(tag_at);
        let mut payload = ciphertext.to_vec();
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&parsed.iv),
                &self.aad,
                &mut payload,
                Tag::from_slice(tag),
            )
            .map_err(|_| Rejected::DecryptFailed)?;
        if !self.replay.record(&parsed.publisher, parsed.seq) {
            // A duplicate inside one batch: the first copy was delivered.
            return Err(Rejected::Replayed {
                publisher: parsed.publisher.into_owned(),
                seq: parsed.seq,
            });
        }
        Ok(Opened {
            topic: topic.to_owned(),
            publisher: parsed.publisher.into_owned(),
            seq: parsed.seq,
            epoch: parsed.epoch,
            published_at: parsed.published_at,
            payload,
        })
    }

    /// Verifies a key message received on `topic` and learns the content keys it wraps
    /// for this subscriber.
    pub fn accept_key_message(&mut self, topic: &str, bytes: &[u8]) -> Result<KeyUpdate, Rejected> {
        self.accept_key_message_at(topic, bytes, now_unix())
    }

    /// [`Opener::accept_key_message`] at time `now`.
    pub fn accept_key_message_at(
        &mut self,
        topic: &str,
        bytes: &[u8],
        now: i64,
    ) -> Result<KeyUpdate, Rejected> {
        if bytes.len() > self.max_envelope {
            return Err(Rejected::Oversized {
                size: bytes.len(),
                limit: self.max_envelope,
            });
        }
        let sign1 = envelope::parse_sign1(bytes)?;
        check_preamble(&sign1, KIND_KEYS)?;
        let fingerprint = fingerprint_of(&sign1.protected.header)?;
        let embedded = embedded_certificate(&sign1)
            .ok_or(Rejected::Malformed("key message without certificate"))?;
        let payload = sign1
            .payload
            .as_deref()
            .ok_or(Rejected::Malformed("detached payload"))?;
        let body = parse_body(payload)?;
        let known = self.publisher(&fingerprint, Some(embedded), &body.publisher, now)?;
        let signature =
            Signature::from_slice(&sign1.signature).map_err(|_| Rejected::BadSignature)?;
        known
            .key
            .verify_strict(&sign1.tbs_data(topic.as_bytes()), &signature)
            .map_err(|_| Rejected::BadSignature)?;
        // Only now, with the publisher authenticated, touch the private key.
        let identity = self.identity.as_ref().ok_or(Rejected::NotForUs)?;
        if body.recipient_fingerprint != identity.certificate.fingerprint {
            return Err(Rejected::NotForUs);
        }
        let mut new_epochs = Vec::new();
        for wrapping in &body.entries {
            if self.keyring.contains(&body.publisher, wrapping.epoch) {
                continue;
            }
            let key = identity.key.unwrap(wrapping)?;
            if self.keyring.insert(&body.publisher, wrapping.epoch, key) {
                new_epochs.push(wrapping.epoch);
            }
        }
        Ok(KeyUpdate {
            publisher: body.publisher,
            new_epochs,
            issued_at: body.issued_at,
        })
    }
}

fn verify_one(checked: &Checked<'_>) -> Result<(), Rejected> {
    let signature = Signature::from_bytes(&checked.parsed.signature);
    // The same (cofactorless, canonical-S) check as the batch path, so that a message's
    // fate does not depend on which path opened it. Publisher keys come from CA-issued
    // certificates, so the weak-key checks of `verify_strict` add nothing here. The
    // Sig_structure is hashed in pieces from the received bytes, not assembled first.
    let mut verifier = checked
        .key
        .verify_stream(&signature)
        .map_err(|_| Rejected::BadSignature)?;
    checked.signed_bytes(|part| verifier.update(part));
    verifier
        .finalize_and_verify()
        .map_err(|_| Rejected::BadSignature)
}

fn reject_certificate(e: CertError) -> Rejected {
    match e {
        CertError::Expired { subject, .. } | CertError::NotYetValid { subject, .. } => {
            Rejected::Expired(subject)
        }
        CertError::Revoked { subject, .. } => Rejected::Revoked(subject),
        CertError::BadRevocationList(why) => Rejected::Revoked(why),
        other => Rejected::UntrustedPublisher(other.to_string()),
    }
}
