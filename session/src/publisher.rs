//! [`PublisherSession`]: sealing, grants, revocation, rotation and key messages, with no
//! I/O. The shell moves the [`Packet`]s it returns to a broker, in order, and gives it a
//! [`StateStore`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use rayon::prelude::*;
use sealpost_certs::{pemfile, CertError, Role, Verifier};
use sealpost_protocol::{ContentKey, KeyLocation, KeyRecipient, PublisherIdentity, Sealer};

use crate::keys::{Batch, BuiltKeyMessage, Grantee};
use crate::prepared::{NextEpoch, Preparation, Prepared};
use crate::resend::{Recent, DEFAULT_RESEND_WINDOW};
use crate::state::{Grant, PublisherState};
use crate::{Packet, QoS, SessionError, StateStore};

/// Sequence numbers reserved (and persisted) at a time: one state write per block.
pub const DEFAULT_RESERVE_BLOCK: u64 = 4096;

/// How to run a [`PublisherSession`]. Identity, CA and revocation list are PEM text, so
/// that no caller needs file paths.
#[derive(Clone)]
pub struct PublisherSessionConfig {
    /// The publisher certificate, PEM.
    pub certificate_pem: String,
    /// Its Ed25519 PKCS#8 private key, PEM.
    pub key_pem: String,
    /// The CA certificate, PEM: subscriber certificates are verified against it.
    pub ca_pem: String,
    /// The CA's revocation list, PEM. Required unless `insecure_no_crl`. A list past its
    /// next-update time is refused at start; while running, no new reader is granted
    /// until a fresh one is installed ([`PublisherSession::set_revocation_list`]).
    pub crl_pem: Option<String>,
    /// Run without a revocation list: revoked subscribers keep receiving new keys until
    /// their certificates expire. Tests and trials only.
    pub insecure_no_crl: bool,
    /// Start a new epoch when a reader who does not hold the key yet is granted, if the
    /// current key has sealed anything (backward secrecy). Default true.
    pub rotate_on_grant: bool,
    /// Rotate the content key when it is older than this (checked on publish and tick).
    pub key_lifetime: Option<Duration>,
    /// Carry the publisher certificate in every envelope.
    pub embed_certificate: bool,
    /// Deliver keys in key messages (default). With `false`, grants are refused
    /// ([`SessionError::KeyMessagesDisabled`]) and no key message is ever built.
    pub key_messages: bool,
    /// How many recent QoS 1/2 envelopes [`PublisherSession::resend`] returns (0: none).
    pub resend_window: usize,
    /// Sequence numbers reserved per state write.
    pub reserve_block: u64,
    /// Hand out the preparation of the next epoch ([`PublisherSession::preparation`]), so
    /// that revocations and rotations publish key messages built ahead of time. Costs one
    /// key message per reader in memory, and the work of a preparation each time a
    /// rotation consumes one. Default true.
    pub prepare_next_epoch: bool,
}

impl std::fmt::Debug for PublisherSessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("PublisherSessionConfig")
            .field("insecure_no_crl", &self.insecure_no_crl)
            .field("rotate_on_grant", &self.rotate_on_grant)
            .field("key_lifetime", &self.key_lifetime)
            .field("key_messages", &self.key_messages)
            .finish_non_exhaustive()
    }
}

impl PublisherSessionConfig {
    /// A configuration with defaults for everything not given (no revocation list yet:
    /// set `crl_pem`, or `insecure_no_crl`).
    pub fn new(
        certificate_pem: impl Into<String>,
        key_pem: impl Into<String>,
        ca_pem: impl Into<String>,
    ) -> PublisherSessionConfig {
        PublisherSessionConfig {
            certificate_pem: certificate_pem.into(),
            key_pem: key_pem.into(),
            ca_pem: ca_pem.into(),
            crl_pem: None,
            insecure_no_crl: false,
            rotate_on_grant: true,
            key_lifetime: None,
            embed_certificate: false,
            key_messages: true,
            resend_window: DEFAULT_RESEND_WINDOW,
            reserve_block: DEFAULT_RESERVE_BLOCK,
            prepare_next_epoch: true,
        }
    }
}

/// What a grant, revocation or rotation built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rekey {
    /// The epoch current afterwards.
    pub epoch: u64,
    /// Key messages built (in [`PublisherOutput::packets`]).
    pub key_messages: usize,
    /// Their total size in bytes (payloads only).
    pub bytes: usize,
    /// Wrappings (RSA-OAEP or HPKE) done for them in this call: a rotation wraps only the
    /// new epoch for each subscriber and reuses the earlier epoch's wrapping, and none for
    /// the key messages it takes from the prepared epoch.
    pub wrapped: usize,
    /// Key messages taken ready-made from the prepared next epoch (wrapped and signed
    /// before the call: [`PublisherSession::preparation`]).
    pub prepared: usize,
}

/// What an operation asks of the shell.
#[derive(Debug, Default)]
pub struct PublisherOutput {
    /// Packets to publish, in this order: first the clearing of removed grantees'
    /// retained key messages (empty payloads), then key messages.
    pub packets: Vec<Packet>,
    /// What the rekey built, if the operation rekeyed.
    pub rekey: Option<Rekey>,
    /// Grantees removed now (asked for, or dropped because their certificates no longer
    /// verify).
    pub removed: Vec<String>,
    /// Grantees dropped because their certificates no longer verify, and why (for the
    /// log: never anything secret).
    pub dropped: Vec<(String, String)>,
    /// A new epoch started: a KDC serving keys needs [`PublisherSession::recent_keys`].
    pub keys_changed: bool,
}

impl PublisherOutput {
    fn absorb(&mut self, other: PublisherOutput) {
        self.packets.extend(other.packets);
        self.rekey = other.rekey.or(self.rekey);
        self.removed.extend(other.removed);
        self.dropped.extend(other.dropped);
        self.keys_changed |= other.keys_changed;
    }
}

/// One message to seal.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Plaintext.
    pub payload: &'a [u8],
    /// Quality of service of its packet.
    pub qos: QoS,
    /// Retain flag of its packet.
    pub retain: bool,
}

/// The result of [`PublisherSession::publish`].
#[derive(Debug)]
pub struct Burst {
    /// Packets to send before the envelopes (a rotation that was due: key messages).
    pub output: PublisherOutput,
    /// Per message, in order: its sequence number and packet, or why it was not sealed
    /// (a topic the certificate does not permit). Send the packets in this order.
    pub envelopes: Vec<Result<(u64, Packet), SessionError>>,
}

/// A change of who may read, applied by `commit`: all of it or nothing.
#[derive(Default)]
struct Change {
    /// Verified certificates to grant (or, for granted subscribers, to renew).
    grant: Vec<KeyRecipient>,
    /// Grantees to remove.
    remove: Vec<String>,
    /// Start a new epoch whatever else happens.
    rotate: bool,
}

/// What `commit` did.
struct Committed {
    rotated: bool,
    /// The prepared epoch the rotation started, if it started one.
    prepared: Option<NextEpoch>,
    granted: Vec<String>,
    removed: Vec<String>,
    dropped: Vec<(String, String)>,
}

/// The publisher's state machine: seals messages, reserves and persists sequence
/// numbers, decides which key messages to build on grant, revoke and rotation, and keeps
/// what to send again after a reconnect. No I/O: time is an argument (unix
/// milliseconds), state goes through the [`StateStore`], packets come back as values.
pub struct PublisherSession {
    identity: PublisherIdentity,
    verifier: Verifier,
    /// Where key messages go (the key-message topic prefix).
    location: KeyLocation,
    sealer: Sealer,
    state: PublisherState,
    store: Box<dyn StateStore>,
    grantees: BTreeMap<String, Grantee>,
    /// Current key message per subscriber, re-sent after reconnects.
    key_messages: HashMap<String, Packet>,
    key_lifetime: Option<Duration>,
    send_key_messages: bool,
    rotate_on_grant: bool,
    reserve_block: u64,
    recent: Recent,
    /// Whether anything may have been sealed under the current key: a new reader then
    /// makes the key rotate (with `rotate_on_grant`). Not persisted: a restarted
    /// publisher assumes so, unless it has just created its state.
    sealed_in_epoch: bool,
    /// The next epoch as prepared so far. In memory only, never persisted: see
    /// `crate::prepared`.
    prepared: Option<NextEpoch>,
    /// Preparations started so far (each [`NextEpoch`] gets the next number).
    preparations: u64,
    prepare_next_epoch: bool,
}

impl std::fmt::Debug for PublisherSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherSession")
            .field("id", &self.identity.id())
            .field("epoch", &self.state.epoch)
            .field("grantees", &self.grantees.len())
            .finish_non_exhaustive()
    }
}

fn secs(now_ms: u64) -> u64 {
    now_ms / 1000
}

impl PublisherSession {
    /// Starts a session from `saved` state bytes (what the store last saved), or a fresh
    /// state (saved through `store` before this returns). Every persisted grant is
    /// verified again (chain, validity, revocation): those that fail are dropped and the
    /// key rotates; the returned output clears their retained key messages. Key messages
    /// of every grantee are built (all cores) for [`PublisherSession::connected`].
    pub fn new(
        config: PublisherSessionConfig,
        saved: Option<&[u8]>,
        store: Box<dyn StateStore>,
        now_ms: u64,
    ) -> Result<(PublisherSession, PublisherOutput), SessionError> {
        let identity = PublisherIdentity::from_pem(&config.certificate_pem, &config.key_pem)?;
        let mut verifier = Verifier::new(&config.ca_pem)?;
        match (&config.crl_pem, config.insecure_no_crl) {
            (Some(pem), _) => verifier.set_revocation_list(pem)?,
            (None, true) => {}
            (None, false) => return Err(SessionError::RevocationListRequired),
        }
        check_crl_fresh(&verifier, now_ms)?;
        let mut store = store;
        let (state, fresh) = match saved {
            Some(bytes) => (PublisherState::from_bytes(bytes)?, false),
            None => {
                let state = PublisherState::fresh(*ContentKey::generate().as_bytes(), secs(now_ms));
                store
                    .save(&state.to_bytes())
                    .map_err(SessionError::Persist)?;
                (state, true)
            }
        };
        let location = KeyLocation::key_topic_for(identity.id());
        let (epoch, key) = state.current_key();
        let mut sealer = Sealer::new(
            identity.clone(),
            location.clone(),
            epoch,
            &key,
            state.seq_high_water,
        );
        sealer.set_embed_certificate(config.embed_certificate);
        let mut grantees = BTreeMap::new();
        let mut dropped = Vec::new();
        for grant in &state.grants {
            // Verified when granted, and fully again now: since the last run the CA may
            // have revoked it, it may have expired, the CA may have changed.
            match restore_grantee(&verifier, grant, now_ms) {
                Ok(grantee) => {
                    grantees.insert(grant.subscriber.clone(), grantee);
                }
                Err(e) => dropped.push((grant.subscriber.clone(), e.to_string())),
            }
        }
        let mut session = PublisherSession {
            identity,
            verifier,
            location,
            sealer,
            state,
            store,
            grantees,
            key_messages: HashMap::new(),
            key_lifetime: config.key_lifetime,
            send_key_messages: config.key_messages,
            rotate_on_grant: config.rotate_on_grant,
            reserve_block: config.reserve_block.max(1),
            recent: Recent::new(config.resend_window),
            sealed_in_epoch: !fresh,
            prepared: None,
            preparations: 0,
            prepare_next_epoch: config.prepare_next_epoch,
        };
        let mut output = PublisherOutput::default();
        if !dropped.is_empty() {
            // Removing grantees rotates the key: nothing sealed from now on is readable
            // with a key they hold.
            let ids = dropped.iter().map(|(id, _)| id.clone()).collect();
            let committed = session.commit(
                Change {
                    remove: ids,
                    ..Change::default()
                },
                now_ms,
            )?;
            output.packets = session.clear_packets(&committed.removed);
            output.removed = committed.removed;
            output.keys_changed = committed.rotated;
            output.dropped = dropped;
            output.dropped.extend(committed.dropped);
        }
        session.rebuild_key_messages(now_ms)?;
        Ok((session, output))
    }

    /// Envelopes name the key distribution center at `address` instead of the key-message
    /// topic, and always embed the publisher certificate (KDC readers may get no key
    /// message to learn it from). Call before the first publish.
    pub fn set_kdc_address(&mut self, address: &str) {
        let (epoch, key) = self.state.current_key();
        // A new sealer starts from the next unused number; it reserves (and persists) a
        // block of its own before sealing anything.
        self.sealer = Sealer::new(
            self.identity.clone(),
            KeyLocation::Kdc(address.to_owned()),
            epoch,
            &key,
            self.sealer.next_seq(),
        );
        self.sealer.set_embed_certificate(true);
    }

    /// The publisher's identity.
    pub fn id(&self) -> &str {
        self.identity.id()
    }

    /// The publisher identity (certificate and signing key).
    pub fn identity(&self) -> &PublisherIdentity {
        &self.identity
    }

    /// The verifier of subscriber certificates (CA and revocation list in force).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The current key epoch.
    pub fn epoch(&self) -> u64 {
        self.state.epoch
    }

    /// The sequence number the next message will carry.
    pub fn next_seq(&self) -> u64 {
        self.sealer.next_seq()
    }

    /// The identities of the granted subscribers, sorted.
    pub fn granted(&self) -> Vec<String> {
        self.grantees.keys().cloned().collect()
    }

    /// Whether `subscriber` is granted (key messages).
    pub fn is_granted(&self, subscriber: &str) -> bool {
        self.grantees.contains_key(subscriber)
    }

    /// The kept content keys, `(epoch, key)`, newest last (for a KDC that serves them).
    pub fn recent_keys(&self) -> Vec<(u64, ContentKey)> {
        self.state.recent_keys()
    }

    /// The state as it was last persisted (and is in force).
    pub fn state(&self) -> &PublisherState {
        &self.state
    }

    /// Whether key messages are built at all (false: KDC-only publisher).
    pub fn sends_key_messages(&self) -> bool {
        self.send_key_messages
    }

    /// The current key message of `subscriber`, if any.
    pub fn key_message(&self, subscriber: &str) -> Option<&Packet> {
        self.key_messages.get(subscriber)
    }

    /// Is `topic` one this publisher may seal for (valid, and permitted by its
    /// certificate)?
    pub fn check_topic(&self, topic: &str) -> Result<(), SessionError> {
        Ok(self.sealer.check_topic(topic)?)
    }

    /// What to publish after every (re)connect: every current key message (retained), in
    /// case the broker lost its retained messages (no persistence, failover).
    pub fn connected(&self) -> Vec<Packet> {
        self.key_messages.values().cloned().collect()
    }

    /// The recent QoS 1/2 envelopes (oldest first, up to the resend window), to publish
    /// again [`crate::RESEND_DELAY`] after a reconnect (not the first connection):
    /// subscribers that failed over drop the ones they have (replay window).
    pub fn resend(&self) -> Vec<Packet> {
        self.recent.snapshot()
    }

    /// Installs a new revocation list (PEM) signed by the CA. A list that is not signed
    /// by the CA, or older than the one in force, is refused and the one in force stays.
    pub fn set_revocation_list(&mut self, crl_pem: &str) -> Result<(), SessionError> {
        Ok(self.verifier.set_revocation_list(crl_pem)?)
    }

    /// Fails if the revocation list in force is past its next-update time: the publisher
    /// then cannot know whom the CA revoked since.
    pub fn check_crl_fresh(&self, now_ms: u64) -> Result<(), SessionError> {
        check_crl_fresh(&self.verifier, now_ms)
    }

    /// Seals `items` as one burst (several past the sealer's maximum burst size, one
    /// signature each) and returns their packets in order. Sequence numbers for the whole
    /// burst are reserved (persisted through the store) before any is used; if that
    /// fails, nothing is sealed. A rotation that is due
    /// ([`PublisherSessionConfig::key_lifetime`]) comes next, before sealing. An item whose topic is not permitted gets its error, the
    /// others are sealed.
    pub fn publish(&mut self, items: &[Outgoing<'_>], now_ms: u64) -> Result<Burst, SessionError> {
        // Numbers first: a rotation's key messages, once built, must reach the shell, so
        // nothing may fail after it.
        while self.sealer.reserved_remaining() < items.len() as u64 {
            self.reserve_sequence_numbers()?;
        }
        let output = self.tick(now_ms)?;
        let mut envelopes: Vec<Option<Result<(u64, Packet), SessionError>>> = items
            .iter()
            .map(|item| self.check_topic(item.topic).err().map(Err))
            .collect();
        let sealable: Vec<usize> = (0..items.len())
            .filter(|&i| envelopes[i].is_none())
            .collect();
        let messages: Vec<(&str, &[u8])> = sealable
            .iter()
            .map(|&i| (items[i].topic, items[i].payload))
            .collect();
        let first_seq = self.sealer.next_seq();
        match self.sealer.seal_many(&messages, (now_ms / 1000) as i64) {
            Ok(sealed) => {
                self.sealed_in_epoch |= !sealed.is_empty();
                for ((k, &i), envelope) in sealable.iter().enumerate().zip(sealed) {
                    let item = &items[i];
                    let packet = Packet {
                        topic: item.topic.to_owned(),
                        payload: Bytes::from(envelope),
                        qos: item.qos,
                        retain: item.retain,
                    };
                    if item.qos != QoS::AtMostOnce {
                        self.recent.push(packet.clone());
                    }
                    envelopes[i] = Some(Ok((first_seq + k as u64, packet)));
                }
            }
            Err(e) => {
                for &i in &sealable {
                    envelopes[i] = Some(Err(e.clone().into()));
                }
            }
        }
        Ok(Burst {
            output,
            envelopes: envelopes
                .into_iter()
                .map(|r| r.expect("every item has a result"))
                .collect(),
        })
    }

    /// Whether the key lifetime is over (the next [`PublisherSession::tick`] or
    /// [`PublisherSession::publish`] rotates): a shell that reloads its revocation list
    /// before every rekey does so now.
    pub fn rotation_due(&self, now_ms: u64) -> bool {
        self.key_lifetime.is_some_and(|lifetime| {
            secs(now_ms).saturating_sub(self.state.epoch_started_at) >= lifetime.as_secs()
        })
    }

    /// Rotates if the key lifetime is over; otherwise does nothing.
    pub fn tick(&mut self, now_ms: u64) -> Result<PublisherOutput, SessionError> {
        if self.rotation_due(now_ms) {
            return self.rotate(now_ms);
        }
        Ok(PublisherOutput::default())
    }

    /// Persists a new high-water mark first, and only then lets the sealer use the numbers
    /// below it. If the save fails, nothing changes, so a number can never be used without
    /// being on disk, and never twice across a restart.
    fn reserve_sequence_numbers(&mut self) -> Result<(), SessionError> {
        let high_water = self
            .sealer
            .next_seq()
            .saturating_add(self.sealer.reserved_remaining())
            .saturating_add(self.reserve_block);
        let mut next = self.state.clone();
        next.seq_high_water = high_water;
        self.store
            .save(&next.to_bytes())
            .map_err(SessionError::Persist)?;
        self.state = next;
        let reserved = self.sealer.reserve(self.reserve_block);
        debug_assert_eq!(reserved, high_water);
        Ok(())
    }

    /// Verifies subscriber certificates (DER) for a grant, on all cores: chain to the CA,
    /// validity, revocation, role subscriber. Any failure fails them all.
    pub fn verify_grants(
        &self,
        certificates_der: &[Vec<u8>],
        now_ms: u64,
    ) -> Result<Vec<KeyRecipient>, SessionError> {
        let now = secs(now_ms) as i64;
        // Only the verifier is shared with rayon's threads (the store need not be Sync).
        let verifier = &self.verifier;
        certificates_der
            .par_iter()
            .map(|der| {
                let info = verifier.verify(der, now)?;
                info.require_role(Role::Subscriber)?;
                Ok(KeyRecipient::new(info)?)
            })
            .collect()
    }

    /// Grants subscribers verified by [`PublisherSession::verify_grants`] and builds their
    /// key messages (all cores). A new reader starts a new epoch first (with
    /// `rotate_on_grant`, if anything was sealed under the current key), and then every
    /// grantee gets a key message; granting an already granted subscriber again renews its
    /// certificate without rotating. Returns the granted ids, in the order given.
    pub fn grant(
        &mut self,
        recipients: Vec<KeyRecipient>,
        now_ms: u64,
    ) -> Result<(PublisherOutput, Vec<String>), SessionError> {
        if !self.send_key_messages {
            return Err(SessionError::KeyMessagesDisabled);
        }
        let ids = recipients.iter().map(|r| r.id().to_owned()).collect();
        let output = self.rekey(
            Change {
                grant: recipients,
                ..Change::default()
            },
            now_ms,
        )?;
        Ok((output, ids))
    }

    /// Verifies and grants one subscriber certificate (PEM); returns its id.
    pub fn grant_pem(
        &mut self,
        certificate_pem: &str,
        now_ms: u64,
    ) -> Result<(PublisherOutput, String), SessionError> {
        if !self.send_key_messages {
            return Err(SessionError::KeyMessagesDisabled);
        }
        let der = pemfile::decode(certificate_pem, pemfile::CERTIFICATE)?;
        let recipients = self.verify_grants(&[der], now_ms)?;
        let (output, mut ids) = self.grant(recipients, now_ms)?;
        Ok((output, ids.remove(0)))
    }

    /// Revokes a granted subscriber: clears its retained key message, rotates the content
    /// key and builds the new key's messages for the remaining subscribers only.
    pub fn revoke(
        &mut self,
        subscriber: &str,
        now_ms: u64,
    ) -> Result<PublisherOutput, SessionError> {
        if !self.grantees.contains_key(subscriber) {
            return Err(SessionError::NotGranted(subscriber.to_owned()));
        }
        self.remove(&[subscriber.to_owned()], now_ms)
    }

    /// Removes grantees (unknown ids are ignored) and rotates, as
    /// [`PublisherSession::revoke`] does for one.
    pub fn remove(
        &mut self,
        subscribers: &[String],
        now_ms: u64,
    ) -> Result<PublisherOutput, SessionError> {
        self.rekey(
            Change {
                remove: subscribers.to_vec(),
                rotate: true,
                ..Change::default()
            },
            now_ms,
        )
    }

    /// Starts a new epoch with a fresh content key and builds its key messages for every
    /// grantee (after checking them all again, as every rekey does).
    pub fn rotate(&mut self, now_ms: u64) -> Result<PublisherOutput, SessionError> {
        self.rekey(
            Change {
                rotate: true,
                ..Change::default()
            },
            now_ms,
        )
    }

    /// Before a reader that does not hold the key yet gets it some other way (a KDC
    /// reader): rotates if `rotate_on_grant` and the current key has sealed anything, so
    /// that it cannot open what was sealed before. Otherwise does nothing.
    pub fn admit_new_reader(&mut self, now_ms: u64) -> Result<PublisherOutput, SessionError> {
        if self.rotate_on_grant && self.sealed_in_epoch {
            self.rotate(now_ms)
        } else {
            Ok(PublisherOutput::default())
        }
    }

    /// Checks every grantee's certificate now (validity, revocation against the list in
    /// force): those that fail are removed (their key messages cleared) and the key
    /// rotates. Install the CA's latest list first ([`PublisherSession::set_revocation_list`]);
    /// check [`PublisherSession::check_crl_fresh`] afterwards (an out-of-date list holds up
    /// no removal).
    pub fn check_readers(&mut self, now_ms: u64) -> Result<PublisherOutput, SessionError> {
        if self.failing_grantees(now_ms).is_empty() {
            return Ok(PublisherOutput::default());
        }
        // `commit` finds them again and removes them.
        self.rekey(Change::default(), now_ms)
    }

    /// Empty retained packets that delete the retained key messages of `subscribers`.
    pub fn clear_packets(&self, subscribers: &[String]) -> Vec<Packet> {
        subscribers
            .iter()
            .filter_map(|id| self.location.key_message_topic(id))
            .map(|topic| Packet::retained(topic, Bytes::new()))
            .collect()
    }

    /// The grantees whose certificates fail the checks that can change after a grant:
    /// validity period and revocation. An out-of-date revocation list is no reason to
    /// drop anyone: it holds up new grants only.
    fn failing_grantees(&self, now_ms: u64) -> Vec<(String, SessionError)> {
        let now = secs(now_ms) as i64;
        self.grantees
            .iter()
            .filter_map(|(id, grantee)| {
                match self
                    .verifier
                    .check_time_and_revocation(grantee.recipient.certificate(), now)
                {
                    Ok(()) | Err(CertError::BadRevocationList(_)) => None,
                    Err(e) => Some((id.clone(), e.into())),
                }
            })
            .collect()
    }

    /// Commits `change`, clears the removed grantees' retained key messages and builds
    /// the key messages it calls for: everyone's after a rotation, otherwise those of the
    /// grantees just granted.
    fn rekey(&mut self, change: Change, now_ms: u64) -> Result<PublisherOutput, SessionError> {
        let committed = self.commit(change, now_ms)?;
        let mut output = PublisherOutput {
            packets: self.clear_packets(&committed.removed),
            removed: committed.removed,
            dropped: committed.dropped,
            keys_changed: committed.rotated,
            ..PublisherOutput::default()
        };
        let ids: Vec<String> = if committed.rotated {
            self.grantees.keys().cloned().collect()
        } else {
            committed.granted
        };
        let built = self.build(&ids, committed.prepared, now_ms)?;
        output.absorb(built);
        Ok(output)
    }

    /// Builds the key messages of the grantees `ids` on all cores, or takes them from
    /// `prepared` (the epoch just started) where it holds one for the same grant, keeping
    /// each grantee's new wrappings and each message for [`PublisherSession::connected`].
    fn build(
        &mut self,
        ids: &[String],
        mut prepared: Option<NextEpoch>,
        now_ms: u64,
    ) -> Result<PublisherOutput, SessionError> {
        let mut rekey = Rekey {
            epoch: self.state.epoch,
            ..Rekey::default()
        };
        let mut output = PublisherOutput::default();
        if self.send_key_messages {
            let mut ready: Vec<BuiltKeyMessage> = Vec::new();
            let mut jobs = Vec::new();
            for (id, grantee) in ids
                .iter()
                .filter_map(|id| Some((id, self.grantees.get(id)?)))
            {
                match prepared.as_mut().and_then(|p| p.take(id, grantee)) {
                    Some(mut message) => {
                        // Wrapped ahead of time: no wrapping is done for it now.
                        message.wrapped_now = 0;
                        ready.push(message);
                    }
                    None => jobs.push(grantee.job()),
                }
            }
            rekey.prepared = ready.len();
            // What was prepared for anyone else (a reader removed now) is dropped here,
            // never published.
            drop(prepared);
            ready.extend(self.batch(now_ms).build_all(&jobs)?);
            for message in ready {
                let packet = Packet::retained(message.topic, Bytes::from(message.bytes));
                rekey.key_messages += 1;
                rekey.bytes += packet.payload.len();
                rekey.wrapped += message.wrapped_now;
                if let Some(grantee) = self.grantees.get_mut(&message.subscriber) {
                    grantee.wrapped = message.wrapped;
                }
                output.packets.push(packet.clone());
                self.key_messages.insert(message.subscriber, packet);
            }
        }
        output.rekey = Some(rekey);
        Ok(output)
    }

    /// Builds every grantee's key message again (kept for `connected`, not returned).
    fn rebuild_key_messages(&mut self, now_ms: u64) -> Result<(), SessionError> {
        self.key_messages.clear();
        let ids = self.granted();
        self.build(&ids, None, now_ms)?;
        Ok(())
    }

    /// The work that prepares the next epoch for the readers who have no key message
    /// prepared for their current grant, or `None` if there is nothing to prepare (none
    /// missing, no reader, key messages off, or `prepare_next_epoch` off). The first call
    /// after a rotation makes the next epoch's key (in memory only). Run it anywhere
    /// ([`Preparation::run`]) and hand the result to
    /// [`PublisherSession::install_prepared`]; meanwhile the session works as usual, and
    /// every key message of the prepared epoch stays unpublished until a rotation starts
    /// it. Hand out one at a time: a second call before the first is installed returns
    /// the same readers' work again.
    pub fn preparation(&mut self, now_ms: u64) -> Option<Preparation> {
        if !self.prepare_next_epoch || !self.send_key_messages || self.grantees.is_empty() {
            return None;
        }
        let epoch = self.state.epoch + 1;
        if self.prepared.as_ref().is_some_and(|p| p.epoch != epoch) {
            // Cannot happen (every rotation consumes it), and must not be used if it did.
            self.prepared = None;
        }
        if self.prepared.is_none() {
            self.preparations += 1;
            self.prepared = Some(NextEpoch::new(self.preparations, epoch));
        }
        let next = self.prepared.as_ref()?;
        let jobs: Vec<_> = self
            .grantees
            .iter()
            .filter(|(id, grantee)| !next.has(id, grantee))
            .map(|(_, grantee)| grantee.job())
            .collect();
        if jobs.is_empty() {
            return None;
        }
        let mut batch = self.batch(now_ms);
        batch.keys.push((epoch, next.key.clone()));
        Some(Preparation {
            token: next.token,
            batch,
            jobs,
        })
    }

    /// Takes back a [`Preparation`]'s result: keeps the key messages of readers still
    /// granted under the same grant, and nothing if the epoch it prepared has been
    /// started or discarded since (a rotation came first). Returns how many it kept.
    pub fn install_prepared(&mut self, prepared: Prepared) -> Result<usize, SessionError> {
        match &mut self.prepared {
            Some(next) if next.token == prepared.token => {
                Ok(next.install(prepared.built?, &self.grantees))
            }
            _ => Ok(0),
        }
    }

    /// Prepares the next epoch here and now, for every reader that lacks it (all cores);
    /// returns how many key messages were added. [`PublisherSession::preparation`] is the
    /// same work for a shell that runs it elsewhere.
    pub fn prepare(&mut self, now_ms: u64) -> Result<usize, SessionError> {
        match self.preparation(now_ms) {
            Some(work) => self.install_prepared(work.run()),
            None => Ok(0),
        }
    }

    /// How many granted readers have a key message of the next epoch prepared for their
    /// current grant (a rotation now would wrap and sign for the others only).
    pub fn prepared_readers(&self) -> usize {
        self.prepared.as_ref().map_or(0, |next| {
            self.grantees
                .iter()
                .filter(|(id, grantee)| next.has(id, grantee))
                .count()
        })
    }

    /// What the key messages built now share.
    fn batch(&self, now_ms: u64) -> Batch {
        Batch {
            publisher: self.identity.clone(),
            prefix: self.location.clone(),
            keys: self.recent_keys(),
            issued_at: secs(now_ms),
        }
    }

    /// Applies `change`, first through the store, then in memory: if the state cannot be
    /// saved, nothing changes. Every grantee is checked again on the way (see
    /// `failing_grantees`): those that fail are removed too. Removing anyone starts a new
    /// epoch, and so does granting a new reader with `rotate_on_grant`.
    fn commit(&mut self, change: Change, now_ms: u64) -> Result<Committed, SessionError> {
        let mut remove: BTreeSet<String> = change.remove.into_iter().collect();
        let mut dropped = Vec::new();
        for (id, e) in self.failing_grantees(now_ms) {
            if remove.insert(id.clone()) {
                dropped.push((id, e.to_string()));
            }
        }
        // A reader is new if it does not hold the current key: never granted, or
        // removed just now (revoked, then granted again with a new certificate).
        let new_reader = change
            .grant
            .iter()
            .any(|r| remove.contains(r.id()) || !self.grantees.contains_key(r.id()));
        // A new reader of a key that has sealed nothing yet can read nothing old with it.
        let rotate = change.rotate
            || !remove.is_empty()
            || (self.rotate_on_grant && new_reader && self.sealed_in_epoch);

        let mut next = self.state.clone();
        // A rotation starts the prepared epoch, if one is prepared for exactly this
        // epoch: its key has sealed nothing and was never published.
        let key = rotate.then(|| match &self.prepared {
            Some(p) if p.epoch == next.epoch + 1 => {
                next.start_epoch_with(p.key.clone(), secs(now_ms))
            }
            _ => next.start_epoch(secs(now_ms)),
        });
        let granting: HashSet<String> = change.grant.iter().map(|r| r.id().to_owned()).collect();
        // One pass, not one per grant (quadratic at 10,000 subscribers). A renewed grant
        // replaces the old entry.
        next.grants.retain(|g| {
            !remove.contains(&g.subscriber) && !granting.contains(g.subscriber.as_str())
        });
        // Keyed by id: a subscriber listed twice is granted once, with its last certificate.
        let mut new = BTreeMap::new();
        for recipient in change.grant {
            let id = recipient.id().to_owned();
            let granted_epoch = match self.grantees.get(&id) {
                // Renewed: it keeps reading what it could.
                Some(g) if !remove.contains(&id) => g.granted_epoch,
                // New: this epoch (the new one, if rotating) and later ones only.
                _ => next.epoch,
            };
            // A renewed subscriber may come with a new key pair: nothing wrapped for its
            // old certificate is kept.
            new.insert(id, Grantee::new(recipient, granted_epoch));
        }
        for (id, grantee) in &new {
            next.grants.push(Grant {
                subscriber: id.clone(),
                certificate_der: grantee.recipient.certificate().der.clone(),
                granted_epoch: grantee.granted_epoch,
            });
        }
        self.store
            .save(&next.to_bytes())
            .map_err(SessionError::Persist)?;

        // Durable: now in memory. The new key is stored before anything is sealed with it.
        self.state = next;
        for id in &remove {
            self.grantees.remove(id);
            self.key_messages.remove(id);
        }
        let granted: Vec<String> = new.keys().cloned().collect();
        self.grantees.extend(new);
        // Any rotation consumes the prepared epoch (or discards it, were it for another):
        // its key is now the current one, or never used.
        let prepared = match &key {
            Some(_) => self.prepared.take().filter(|p| p.epoch == self.state.epoch),
            None => None,
        };
        if let Some(key) = &key {
            self.sealer.set_key(self.state.epoch, key);
            self.sealed_in_epoch = false;
            self.key_messages.clear();
        }
        Ok(Committed {
            rotated: key.is_some(),
            prepared,
            granted,
            removed: remove.into_iter().collect(),
            dropped,
        })
    }
}

/// A persisted grant as a grantee, after verifying its certificate fully again.
fn restore_grantee(
    verifier: &Verifier,
    grant: &Grant,
    now_ms: u64,
) -> Result<Grantee, SessionError> {
    let info = verifier.verify(&grant.certificate_der, secs(now_ms) as i64)?;
    info.require_role(Role::Subscriber)?;
    Ok(Grantee::new(KeyRecipient::new(info)?, grant.granted_epoch))
}

fn check_crl_fresh(verifier: &Verifier, now_ms: u64) -> Result<(), SessionError> {
    match verifier.revocation_list() {
        Some(list) if secs(now_ms) as i64 > list.next_update => {
            Err(CertError::BadRevocationList(format!(
                "the revocation list in force was due to be replaced at unix time {}; \
                 install a fresh one",
                list.next_update
            ))
            .into())
        }
        _ => Ok(()),
    }
}
