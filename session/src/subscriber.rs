//! [`SubscriberSession`]: verifying, de-duplicating and decrypting incoming messages,
//! following key messages, holding data that waits for its key, deciding KDC fetches and
//! when the replay window must be persisted; with no I/O.

use std::time::Duration;

use bytes::Bytes;
use sealpost_certs::{CertError, Verifier};
use sealpost_protocol::{
    ContentKey, KeyLocation, Opened, Opener, Rejected, ReplayState, SubscriberIdentity,
};

use crate::fetch::{Fetches, KeyFetch};
use crate::pending::{Held, HoldOutcome, Pending};
use crate::SessionError;

/// Prefix of every key-message topic: `sealpost/keys/<publisher>/<subscriber>`.
pub const KEY_TOPIC_PREFIX: &str = "sealpost/keys/";

/// Most messages opened in one batch (signatures verified together).
const BATCH: usize = 256;

/// Credentials for one publisher's key distribution center, as far as the core needs to
/// know: the address (the shell holds the password and does the HTTPS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdcAccess {
    /// The KDC address, as envelopes name it.
    pub address: String,
    /// The reader id the credentials were issued to.
    pub reader: String,
}

/// How to run a [`SubscriberSession`]. Identity, CA and revocation list are PEM text.
#[derive(Clone)]
pub struct SubscriberSessionConfig {
    /// The subscriber certificate, PEM; empty for a KDC-only subscriber (no key messages).
    pub certificate_pem: String,
    /// Its PKCS#8 private key, PEM (RSA or X25519, matching the certificate).
    pub key_pem: String,
    /// The CA certificate, PEM: publisher certificates must chain to it.
    pub ca_pem: String,
    /// The CA's signed revocation list, PEM. Required unless `insecure_no_crl`.
    pub crl_pem: Option<String>,
    /// Accept publishers without checking revocation. Tests and trials only.
    pub insecure_no_crl: bool,
    /// Envelopes whose signed publication time is older than this are `Stale`.
    pub max_age: Duration,
    /// Publication times up to this far ahead of `now` are accepted.
    pub clock_skew: Duration,
    /// Most verified messages held waiting for a content key.
    pub hold_capacity: usize,
    /// Most messages held waiting for an unknown publisher's certificate (apart from
    /// `hold_capacity`, so unverifiable junk never pushes out a verified message).
    pub unverified_hold_capacity: usize,
    /// Longest time a message is held.
    pub hold_time: Duration,
    /// Key epochs kept per publisher.
    pub kept_epochs: usize,
    /// KDCs this subscriber has credentials for.
    pub kdcs: Vec<KdcAccess>,
}

impl std::fmt::Debug for SubscriberSessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("SubscriberSessionConfig")
            .field("insecure_no_crl", &self.insecure_no_crl)
            .field("max_age", &self.max_age)
            .field("hold_capacity", &self.hold_capacity)
            .field("hold_time", &self.hold_time)
            .field("kdcs", &self.kdcs)
            .finish_non_exhaustive()
    }
}

impl SubscriberSessionConfig {
    /// A configuration with the SDK's defaults for everything not given (no revocation
    /// list yet: set `crl_pem`, or `insecure_no_crl`).
    pub fn new(
        certificate_pem: impl Into<String>,
        key_pem: impl Into<String>,
        ca_pem: impl Into<String>,
    ) -> SubscriberSessionConfig {
        SubscriberSessionConfig {
            certificate_pem: certificate_pem.into(),
            key_pem: key_pem.into(),
            ca_pem: ca_pem.into(),
            crl_pem: None,
            insecure_no_crl: false,
            max_age: Duration::from_secs(sealpost_protocol::DEFAULT_MAX_AGE_SECS),
            clock_skew: Duration::from_secs(sealpost_protocol::DEFAULT_CLOCK_SKEW_SECS),
            hold_capacity: 1024,
            unverified_hold_capacity: 64,
            hold_time: Duration::from_secs(10),
            kept_epochs: sealpost_protocol::DEFAULT_KEPT_EPOCHS,
            kdcs: Vec::new(),
        }
    }
}

/// A content key fetched from a KDC.
#[derive(Debug, Clone)]
pub struct FetchedKey {
    /// The publisher the KDC's answer names (checked against the one asked for).
    pub publisher: String,
    /// The key.
    pub key: ContentKey,
    /// The publisher's certificate (DER), verified against the CA before use.
    pub certificate_der: Vec<u8>,
}

/// Why a key fetch failed, as the shell saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFailure {
    /// Could trying again soon help (network trouble, rate limit), as opposed to a
    /// refusal that will stand (credentials, revocation)? Sets the pause before retrying.
    pub transient: bool,
    /// What went wrong, for the application (never a password, token or key).
    pub reason: String,
}

/// What the shell hands the session.
#[derive(Debug, Clone)]
pub enum Input {
    /// A PUBLISH arrived.
    Publish {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Bytes,
    },
    /// A key fetch ([`SubscriberOutput::fetches`]) ended.
    KeyFetched {
        /// Which.
        fetch: KeyFetch,
        /// The key, or why not.
        result: Result<FetchedKey, FetchFailure>,
    },
}

/// One thing that happened to an incoming message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriberEvent {
    /// Verified, decrypted, delivered once.
    Message(Opened),
    /// Refused (never delivered).
    Rejected {
        /// The topic it arrived on.
        topic: String,
        /// Why.
        reason: Rejected,
    },
    /// A key fetch failed; the envelopes waiting for it stay held.
    KeyFetchFailed {
        /// Which fetch.
        fetch: KeyFetch,
        /// Why.
        failure: FetchFailure,
    },
}

/// What one step asks of the shell, in this order: persist, start fetches, hand events
/// to the application.
#[derive(Debug, Default)]
pub struct SubscriberOutput {
    /// The replay window, when messages were delivered: make it durable *before* handing
    /// the [`SubscriberEvent::Message`]s over, so a restart never delivers them again
    /// (bytes for [`SubscriberSession::new`]).
    pub persist: Option<Vec<u8>>,
    /// Key fetches to start (each at most once until it ends).
    pub fetches: Vec<KeyFetch>,
    /// Events, in order.
    pub events: Vec<SubscriberEvent>,
    /// Key messages accepted in this step.
    pub key_messages: usize,
    /// Messages held now, waiting for a key or certificate.
    pub held: usize,
    /// Things worth a log line that are not events (an unusable certificate from a KDC).
    pub warnings: Vec<String>,
}

/// The subscriber's state machine. See the module documentation.
pub struct SubscriberSession {
    id: String,
    follows_key_messages: bool,
    opener: Opener,
    pending: Pending,
    fetches: Fetches,
}

impl std::fmt::Debug for SubscriberSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberSession")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SubscriberSession {
    /// A session for `config`, resuming the replay window from `saved_replay` (bytes of
    /// an earlier [`SubscriberOutput::persist`]), if any.
    pub fn new(
        config: SubscriberSessionConfig,
        saved_replay: Option<&[u8]>,
    ) -> Result<SubscriberSession, SessionError> {
        // A KDC-only subscriber has no certificate: it needs no private key to unwrap key
        // messages, and it names itself after its first KDC reader id.
        let (identity, id) = match config.kdcs.first() {
            Some(kdc) if config.certificate_pem.is_empty() => (None, kdc.reader.clone()),
            _ => {
                let identity =
                    SubscriberIdentity::from_pem(&config.certificate_pem, &config.key_pem)?;
                let id = identity.id().to_owned();
                (Some(identity), id)
            }
        };
        let mut verifier = Verifier::new(&config.ca_pem)?;
        match (&config.crl_pem, config.insecure_no_crl) {
            (Some(pem), _) => verifier
                .set_revocation_list(pem)
                .map_err(SessionError::RevocationList)?,
            (None, true) => {}
            (None, false) => return Err(SessionError::RevocationListRequired),
        }
        let mut opener = Opener::new(verifier)
            .with_kept_epochs(config.kept_epochs)
            .with_max_age(config.max_age.as_secs())
            .with_clock_skew(config.clock_skew.as_secs());
        let follows_key_messages = identity.is_some();
        if let Some(identity) = identity {
            opener = opener.with_identity(identity);
        }
        if let Some(bytes) = saved_replay {
            let state = ReplayState::from_bytes(bytes)
                .map_err(|e| SessionError::CorruptState(e.to_string()))?;
            opener.set_replay_state(state);
        }
        Ok(SubscriberSession {
            id,
            follows_key_messages,
            opener,
            pending: Pending::new(
                config.hold_capacity,
                config.unverified_hold_capacity,
                config.hold_time.as_millis() as u64,
            ),
            fetches: Fetches::new(config.kdcs.into_iter().map(|k| k.address)),
        })
    }

    /// The subscriber's identity (its certificate's, or its first KDC reader id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The filters the session needs subscribed (QoS 1) besides the application's: its
    /// own key messages, `sealpost/keys/+/<id>` (none for a KDC-only subscriber).
    pub fn subscriptions(&self) -> Vec<String> {
        if self.follows_key_messages {
            vec![format!("{KEY_TOPIC_PREFIX}+/{}", self.id)]
        } else {
            Vec::new()
        }
    }

    /// The replay window as bytes (what [`SubscriberOutput::persist`] carries).
    pub fn replay_state(&self) -> Vec<u8> {
        self.opener.replay_state().to_bytes()
    }

    /// Installs a new revocation list (PEM) signed by the CA; a list that is not, or is
    /// older than the one in force, is refused and the one in force stays.
    pub fn set_revocation_list(&mut self, crl_pem: &str) -> Result<(), CertError> {
        self.opener.verifier_mut().set_revocation_list(crl_pem)
    }

    /// One PUBLISH; see [`SubscriberSession::process`].
    pub fn incoming(&mut self, topic: &str, payload: &[u8], now_ms: u64) -> SubscriberOutput {
        self.process(
            vec![Input::Publish {
                topic: topic.to_owned(),
                payload: Bytes::copy_from_slice(payload),
            }],
            now_ms,
        )
    }

    /// The outcome of a key fetch; see [`SubscriberSession::process`].
    pub fn key_fetched(
        &mut self,
        fetch: KeyFetch,
        result: Result<FetchedKey, FetchFailure>,
        now_ms: u64,
    ) -> SubscriberOutput {
        self.process(vec![Input::KeyFetched { fetch, result }], now_ms)
    }

    /// Expires held messages (rejected with the reason they could not open). Call it
    /// regularly (a quarter of the hold time, say) when nothing arrives.
    pub fn tick(&mut self, now_ms: u64) -> SubscriberOutput {
        self.process(Vec::new(), now_ms)
    }

    /// Handles a batch: key messages and fetched keys first (so data in the same batch
    /// can use them), then data (signatures verified together), then held messages if
    /// keys arrived, then expiry. `now_ms` is unix time in milliseconds.
    pub fn process(&mut self, batch: Vec<Input>, now_ms: u64) -> SubscriberOutput {
        let mut out = SubscriberOutput::default();
        let mut data = Vec::new();
        let mut learned = false;
        for input in batch {
            let (topic, payload) = match input {
                Input::Publish { topic, payload } => (topic, payload),
                Input::KeyFetched { fetch, result } => {
                    learned |= self.install_fetched(fetch, result, now_ms, &mut out);
                    continue;
                }
            };
            if !topic.starts_with(KEY_TOPIC_PREFIX) {
                data.push(Held {
                    topic,
                    payload,
                    since_ms: now_ms,
                    reason: Rejected::Malformed("not yet opened"),
                });
                continue;
            }
            if payload.is_empty() {
                // A cleared retained key message (the publisher revoked us): nothing to learn.
                continue;
            }
            match self
                .opener
                .accept_key_message_at(&topic, &payload, unix_secs(now_ms))
            {
                Ok(_) => {
                    out.key_messages += 1;
                    // Even without new epochs the publisher's certificate may be new.
                    learned = true;
                }
                Err(reason) => reject(&mut out, topic, reason),
            }
        }
        if learned {
            let mut held = self.pending.take_all();
            held.append(&mut data);
            data = held;
        }
        let delivered = self.open(data, now_ms, &mut out);
        for held in self.pending.expire(now_ms) {
            reject(&mut out, held.topic, held.reason);
        }
        out.held = self.pending.len();
        if delivered {
            out.persist = Some(self.replay_state());
        }
        out
    }

    fn open(&mut self, data: Vec<Held>, now_ms: u64, out: &mut SubscriberOutput) -> bool {
        let mut delivered = false;
        for chunk in data.chunks(BATCH) {
            let items: Vec<(&str, &[u8])> = chunk
                .iter()
                .map(|h| (h.topic.as_str(), h.payload.as_ref()))
                .collect();
            let results = self.opener.open_batch(&items, unix_secs(now_ms));
            for (held, result) in chunk.iter().zip(results) {
                match result {
                    Ok(opened) => {
                        delivered = true;
                        out.events.push(SubscriberEvent::Message(opened));
                    }
                    Err(reason) if reason.is_retryable() => {
                        if let Rejected::UnknownKey {
                            publisher,
                            epoch,
                            location: KeyLocation::Kdc(kdc),
                            ..
                        } = &reason
                        {
                            // The location is signed: this envelope passed its signature
                            // check before the key lookup failed.
                            if self.fetches.want(kdc, publisher, *epoch, now_ms) {
                                out.fetches.push(KeyFetch {
                                    kdc: kdc.clone(),
                                    publisher: publisher.clone(),
                                    epoch: *epoch,
                                });
                            }
                        }
                        self.hold(held, reason, out);
                    }
                    Err(reason) => reject(out, held.topic.clone(), reason),
                }
            }
        }
        delivered
    }

    fn hold(&mut self, held: &Held, reason: Rejected, out: &mut SubscriberOutput) {
        let outcome = self.pending.hold(Held {
            topic: held.topic.clone(),
            payload: held.payload.clone(),
            since_ms: held.since_ms,
            reason,
        });
        match outcome {
            HoldOutcome::Held => {}
            HoldOutcome::Evicted(e) | HoldOutcome::Refused(e) => reject(out, e.topic, e.reason),
            HoldOutcome::Duplicate(e) => {
                // Another copy of this envelope is held: this one is a replay.
                let reason = match sealpost_protocol::peek(&e.payload) {
                    Ok(h) => Rejected::Replayed {
                        publisher: h.key_index.publisher,
                        seq: h.seq,
                    },
                    Err(r) => r,
                };
                reject(out, e.topic, reason)
            }
        }
    }

    /// Installs a key (and publisher certificate) fetched from a KDC, or reports why it
    /// could not be had. Returns whether a key was learned.
    fn install_fetched(
        &mut self,
        fetch: KeyFetch,
        result: Result<FetchedKey, FetchFailure>,
        now_ms: u64,
        out: &mut SubscriberOutput,
    ) -> bool {
        let result = result.and_then(|fetched| {
            if fetched.publisher != fetch.publisher {
                return Err(FetchFailure {
                    transient: false,
                    reason: "key answer names another publisher".into(),
                });
            }
            // Lets envelopes that do not embed the certificate verify; it is checked
            // against the CA like any other.
            match self
                .opener
                .add_publisher_certificate(&fetched.certificate_der, unix_secs(now_ms))
            {
                Ok(info) if info.id == fetch.publisher => {}
                Ok(_) => out.warnings.push(format!(
                    "KDC {} sent the certificate of another publisher",
                    fetch.kdc
                )),
                Err(reason) => out.warnings.push(format!(
                    "KDC {} sent an unusable certificate: {reason}",
                    fetch.kdc
                )),
            }
            self.opener
                .add_key(&fetch.publisher, fetch.epoch, fetched.key);
            Ok(())
        });
        let failure = result.as_ref().err().map(|f| f.transient);
        self.fetches
            .finished(&fetch.publisher, fetch.epoch, failure, now_ms);
        match result {
            Ok(()) => true,
            Err(failure) => {
                out.events
                    .push(SubscriberEvent::KeyFetchFailed { fetch, failure });
                false
            }
        }
    }
}

fn reject(out: &mut SubscriberOutput, topic: String, reason: Rejected) {
    out.events.push(SubscriberEvent::Rejected { topic, reason });
}

fn unix_secs(now_ms: u64) -> i64 {
    (now_ms / 1000) as i64
}
