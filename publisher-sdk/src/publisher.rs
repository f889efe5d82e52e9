//! The [`Publisher`]: sealing, grants, revocation and key messages over one MQTT connection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rayon::prelude::*;
use rumqttc::{AsyncClient, Event, EventLoop, Packet};
use sealpost_certs::{now_unix, pemfile, Role, Verifier};
use sealpost_protocol::{
    ContentKey, KeyLocation, KeyRecipient, PublisherIdentity, Sealer, DEFAULT_KEPT_EPOCHS,
};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::kdc::{Kdc, KdcConfig, KdcCredentials};
use crate::keys::{Batch, Grantee};
use crate::state::{Grant, PublisherState};
use crate::transport::{mqtt_options, BrokerAddress, TlsIdentity};
use crate::PublisherError;

pub use rumqttc::QoS;

/// Sequence numbers reserved (and persisted) at a time: one state write per block.
pub const DEFAULT_RESERVE_BLOCK: u64 = 4096;

/// How to build a [`Publisher`].
#[derive(Clone)]
pub struct PublisherConfig {
    /// The broker.
    pub broker: BrokerAddress,
    /// TLS trust (and client certificate) for `mqtts://` and `wss://` brokers.
    pub tls: Option<TlsIdentity>,
    /// MQTT client id; default: the publisher id with a per-process suffix.
    pub client_id: Option<String>,
    /// MQTT user name and password, if the broker asks for them.
    pub credentials: Option<(String, String)>,
    /// The publisher certificate, PEM.
    pub certificate_pem: String,
    /// Its Ed25519 PKCS#8 private key, PEM.
    pub key_pem: String,
    /// The CA certificate, PEM: subscriber certificates are verified against it on grant.
    pub ca_pem: String,
    /// Directory for the persisted state (created if missing). One publisher per directory.
    pub state_dir: PathBuf,
    /// Rotate the content key when it is older than this (checked on publish).
    pub key_lifetime: Option<Duration>,
    /// Carry the publisher certificate in every envelope (about 400 bytes more each), so
    /// subscribers can verify data that arrives before any key message.
    pub embed_certificate: bool,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// How long [`Publisher::connect`] waits for the first CONNACK.
    pub connect_timeout: Duration,
    /// Deliver keys in key messages over MQTT (default). With `false`, readers get keys
    /// from the KDC only and [`Publisher::grant_pem`] is refused.
    pub key_messages: bool,
    /// Serve keys from a key distribution center over HTTPS too (or only, with
    /// `key_messages: false`). Envelopes then name the KDC address in their key index
    /// and always embed the publisher certificate, since KDC readers may get no key
    /// message to learn it from.
    pub kdc: Option<KdcConfig>,
}

impl std::fmt::Debug for PublisherConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherConfig")
            .field("broker", &self.broker)
            .field("state_dir", &self.state_dir)
            .field("key_lifetime", &self.key_lifetime)
            .finish_non_exhaustive()
    }
}

impl PublisherConfig {
    /// A configuration with defaults for everything not given.
    pub fn new(
        broker: BrokerAddress,
        certificate_pem: impl Into<String>,
        key_pem: impl Into<String>,
        ca_pem: impl Into<String>,
        state_dir: impl Into<PathBuf>,
    ) -> PublisherConfig {
        PublisherConfig {
            broker,
            tls: None,
            client_id: None,
            credentials: None,
            certificate_pem: certificate_pem.into(),
            key_pem: key_pem.into(),
            ca_pem: ca_pem.into(),
            state_dir: state_dir.into(),
            key_lifetime: None,
            embed_certificate: false,
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            key_messages: true,
            kdc: None,
        }
    }
}

/// What a grant, revocation or rotation sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rekey {
    /// The epoch current afterwards.
    pub epoch: u64,
    /// Key messages published.
    pub key_messages: usize,
    /// Their total size in bytes (payloads only).
    pub bytes: usize,
    /// RSA-OAEP wrappings done for them. A rotation wraps only the new epoch for each
    /// subscriber and reuses the earlier epoch's wrapping, so after a revoke this is the
    /// number of remaining subscribers, not twice that.
    pub wrapped: usize,
    /// Where the time went.
    pub timings: RekeyTimings,
}

/// Where the time of a grant, revocation or rotation went (wall clock, per phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RekeyTimings {
    /// Verifying the granted certificates (grants only).
    pub verify: Duration,
    /// Writing the state (keys, grants) to disk, which happens before any key is sent.
    pub persist: Duration,
    /// Wrapping the content keys (only those not wrapped before) and signing the key
    /// messages, on all cores.
    pub build: Duration,
    /// Handing the key messages to the MQTT client (on their way to the broker, not yet
    /// acknowledged).
    pub send: Duration,
}

struct Inner {
    identity: PublisherIdentity,
    verifier: Verifier,
    location: KeyLocation,
    sealer: Sealer,
    state: PublisherState,
    state_dir: PathBuf,
    grantees: BTreeMap<String, Grantee>,
    /// Current key message per subscriber: `(topic, bytes)`, re-sent after reconnects.
    key_messages: HashMap<String, (String, Bytes)>,
    key_lifetime: Option<Duration>,
    /// Whether key messages are sent at all (false: KDC only).
    send_key_messages: bool,
    kdc: Option<Kdc>,
}

/// A sealing MQTT publisher. See the crate documentation.
///
/// All methods take `&self` and may be called from several tasks; they are serialised
/// internally, so sequence numbers go out in order.
pub struct Publisher {
    id: String,
    client: AsyncClient,
    inner: Arc<Mutex<Inner>>,
    closing: Arc<AtomicBool>,
    poller: JoinHandle<()>,
    republisher: JoinHandle<()>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Loads (or creates) the state, connects to the broker and publishes the key
    /// messages of every granted subscriber. Fails if the broker does not accept the
    /// connection within `connect_timeout`.
    pub async fn connect(config: PublisherConfig) -> Result<Publisher, PublisherError> {
        let identity = PublisherIdentity::from_pem(&config.certificate_pem, &config.key_pem)?;
        let verifier = Verifier::new(&config.ca_pem)?;
        let id = identity.id().to_owned();
        let now = now_unix().max(0) as u64;
        let state = match PublisherState::load(&config.state_dir)? {
            Some(s) => s,
            None => {
                let s = PublisherState::fresh(*ContentKey::generate().as_bytes(), now);
                s.save(&config.state_dir)?;
                s
            }
        };
        let location = KeyLocation::key_topic_for(&id);
        let (epoch, key) = current_key(&state);
        let kdc = match &config.kdc {
            Some(kdc_config) => Some(
                Kdc::start(
                    kdc_config,
                    &identity,
                    &verifier,
                    &config.state_dir,
                    recent_keys(&state),
                )
                .await?,
            ),
            None => None,
        };
        let sealer_location = match &kdc {
            Some(kdc) => KeyLocation::Kdc(kdc.address().to_owned()),
            None => location.clone(),
        };
        let mut sealer = Sealer::new(
            identity.clone(),
            sealer_location,
            epoch,
            &key,
            state.seq_high_water,
        );
        sealer.set_embed_certificate(config.embed_certificate || kdc.is_some());
        let mut grantees = BTreeMap::new();
        for grant in &state.grants {
            // Restored grants were verified when granted; a certificate that no longer
            // parses is a corrupt state file.
            let info = sealpost_certs::parse(&grant.certificate_der)?;
            grantees.insert(
                grant.subscriber.clone(),
                Grantee::new(KeyRecipient::new(info)?, grant.granted_epoch),
            );
        }
        let mut inner = Inner {
            identity,
            verifier,
            location,
            sealer,
            state,
            state_dir: config.state_dir.clone(),
            grantees,
            key_messages: HashMap::new(),
            key_lifetime: config.key_lifetime,
            send_key_messages: config.key_messages,
            kdc,
        };
        inner.rebuild_key_messages()?;

        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| unique_client_id(&id));
        let mut options = mqtt_options(
            &client_id,
            &config.broker,
            config.tls.as_ref(),
            config.keep_alive,
        )?;
        if let Some((user, password)) = &config.credentials {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        eventloop.set_network_options(crate::transport::network_options());
        let closing = Arc::new(AtomicBool::new(false));
        let (connected_tx, mut connected_rx) = watch::channel(0u64);
        let poller = tokio::spawn(poll(eventloop, connected_tx, closing.clone()));
        let inner = Arc::new(Mutex::new(inner));
        let republisher = {
            let inner = inner.clone();
            let client = client.clone();
            let mut rx = connected_rx.clone();
            tokio::spawn(async move {
                // Every (re)connect: the broker may have lost retained messages (no
                // persistence, failover), so send every current key message again. This
                // runs apart from the polling task, which must never publish.
                while rx.changed().await.is_ok() {
                    let inner = inner.lock().await;
                    for (topic, bytes) in inner.key_messages.values() {
                        let sent = client
                            .publish_bytes(topic.as_str(), QoS::AtLeastOnce, true, bytes.clone())
                            .await;
                        if sent.is_err() {
                            return;
                        }
                    }
                }
            })
        };
        let connected =
            tokio::time::timeout(config.connect_timeout, connected_rx.wait_for(|n| *n > 0)).await;
        let publisher = Publisher {
            id,
            client,
            inner,
            closing,
            poller,
            republisher,
        };
        match connected {
            Ok(Ok(_)) => Ok(publisher),
            _ => Err(PublisherError::NotConnected(config.broker.to_string())),
        }
    }

    /// The publisher's identity.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current key epoch.
    pub async fn epoch(&self) -> u64 {
        self.inner.lock().await.state.epoch
    }

    /// The sequence number the next message will carry.
    pub async fn next_seq(&self) -> u64 {
        self.inner.lock().await.sealer.next_seq()
    }

    /// The identities of the granted subscribers.
    pub async fn granted(&self) -> Vec<String> {
        self.inner.lock().await.grantees.keys().cloned().collect()
    }

    /// Seals `payload` for `topic` and publishes it. Returns its sequence number.
    pub async fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Result<u64, PublisherError> {
        let mut inner = self.inner.lock().await;
        if let Some(lifetime) = inner.key_lifetime {
            let age = (now_unix().max(0) as u64).saturating_sub(inner.state.epoch_started_at);
            if age >= lifetime.as_secs() {
                inner.rotate(&self.client).await?;
            }
        }
        if inner.sealer.reserved_remaining() == 0 {
            // Persist the new high-water mark before using any number below it, so a
            // crash can never lead to a number being used twice.
            let high_water = inner.sealer.reserve(DEFAULT_RESERVE_BLOCK);
            inner.state.seq_high_water = high_water;
            inner.save()?;
        }
        let seq = inner.sealer.next_seq();
        let envelope = inner.sealer.seal(topic, payload, now_unix())?;
        // Publishing under the lock keeps envelopes on the wire in sequence order.
        self.client
            .publish_bytes(topic, qos, retain, Bytes::from(envelope))
            .await?;
        Ok(seq)
    }

    /// Grants the subscriber whose certificate (PEM) is given: verifies it against the
    /// CA (role subscriber, validity, revocation list) and publishes its key message.
    /// Granting an already granted subscriber again refreshes its certificate.
    pub async fn grant_pem(&self, certificate_pem: &str) -> Result<String, PublisherError> {
        let der = pemfile::decode(certificate_pem, pemfile::CERTIFICATE)?;
        let mut ids = self.grant_many(&[der]).await?.1;
        Ok(ids.remove(0))
    }

    /// Grants many subscribers at once (certificates as DER), wrapping their keys in
    /// parallel. All certificates are verified before any is granted.
    pub async fn grant_many(
        &self,
        certificates_der: &[Vec<u8>],
    ) -> Result<(Rekey, Vec<String>), PublisherError> {
        let mut inner = self.inner.lock().await;
        if !inner.send_key_messages {
            return Err(PublisherError::KeyMessagesDisabled);
        }
        let started = Instant::now();
        let now = now_unix();
        // Verification (a signature check and parsing per certificate) is a tenth of a
        // large grant: spread it over the cores like the wrapping.
        let recipients = {
            let verifier = &inner.verifier;
            cpu_bound(|| {
                certificates_der
                    .par_iter()
                    .map(|der| {
                        let info = verifier.verify(der, now)?;
                        info.require_role(Role::Subscriber)?;
                        Ok(KeyRecipient::new(info)?)
                    })
                    .collect::<Result<Vec<KeyRecipient>, PublisherError>>()
            })?
        };
        // Re-granted subscribers replace their old entry: one pass, not one per grant
        // (quadratic at 10,000 subscribers).
        let regranted: HashSet<&str> = recipients.iter().map(|r| r.id()).collect();
        inner
            .state
            .grants
            .retain(|g| !regranted.contains(g.subscriber.as_str()));
        let mut ids = Vec::with_capacity(recipients.len());
        // Keyed by id: a subscriber listed twice is granted once, with its last certificate.
        let mut new = BTreeMap::new();
        for recipient in recipients {
            let id = recipient.id().to_owned();
            let granted_epoch = inner
                .grantees
                .get(&id)
                .map_or(inner.state.epoch, |g| g.granted_epoch);
            ids.push(id.clone());
            // A re-granted subscriber may come with a new key pair: nothing wrapped for
            // its old certificate is kept.
            new.insert(id, Grantee::new(recipient, granted_epoch));
        }
        for (id, grantee) in &new {
            inner.state.grants.push(Grant {
                subscriber: id.clone(),
                certificate_der: grantee.recipient.certificate().der.clone(),
                granted_epoch: grantee.granted_epoch,
            });
        }
        let mut timings = RekeyTimings {
            verify: started.elapsed(),
            ..RekeyTimings::default()
        };
        let started = Instant::now();
        inner.save()?;
        timings.persist = started.elapsed();
        let granted: Vec<String> = new.keys().cloned().collect();
        inner.grantees.extend(new);
        let rekey = inner.send(&self.client, &granted, timings).await?;
        Ok((rekey, ids))
    }

    /// Revokes a subscriber: clears its retained key message and invalidates its KDC
    /// credentials and tokens (whichever it has), rotates the content key and sends the
    /// new key to the remaining subscribers only, so the revoked one cannot read anything
    /// published afterwards.
    pub async fn revoke(&self, subscriber_id: &str) -> Result<Rekey, PublisherError> {
        let mut inner = self.inner.lock().await;
        let key_grant = inner.grantees.remove(subscriber_id).is_some();
        let kdc_reader = match &inner.kdc {
            Some(kdc) => kdc.revoke_reader(subscriber_id)?,
            None => false,
        };
        if !key_grant && !kdc_reader {
            return Err(PublisherError::NotGranted(subscriber_id.to_owned()));
        }
        if key_grant {
            inner.state.grants.retain(|g| g.subscriber != subscriber_id);
            inner.key_messages.remove(subscriber_id);
            if let Some(topic) = inner.location.key_message_topic(subscriber_id) {
                // An empty retained message deletes the retained key message.
                self.client
                    .publish_bytes(topic, QoS::AtLeastOnce, true, Bytes::new())
                    .await?;
            }
        }
        inner.rotate(&self.client).await
    }

    /// Issues KDC credentials for `reader` (a new random password; any earlier one stops
    /// working). The reader may fetch the keys of the current epoch and later ones. Give
    /// the result to the reader (e.g. [`KdcCredentials::save`]); only a hash is kept.
    pub async fn add_reader(&self, reader: &str) -> Result<KdcCredentials, PublisherError> {
        let inner = self.inner.lock().await;
        let kdc = inner.kdc.as_ref().ok_or(PublisherError::NoKdc)?;
        Ok(kdc.add_reader(reader, inner.state.epoch)?)
    }

    /// The KDC's address, if this publisher runs one.
    pub async fn kdc_address(&self) -> Option<String> {
        let inner = self.inner.lock().await;
        inner.kdc.as_ref().map(|k| k.address().to_owned())
    }

    /// The socket address the KDC listens on, if this publisher runs one.
    pub async fn kdc_local_addr(&self) -> Option<std::net::SocketAddr> {
        let inner = self.inner.lock().await;
        inner.kdc.as_ref().map(Kdc::local_addr)
    }

    /// Readers with live KDC credentials.
    pub async fn kdc_readers(&self) -> Vec<String> {
        let inner = self.inner.lock().await;
        inner.kdc.as_ref().map(Kdc::readers).unwrap_or_default()
    }

    /// Starts a new key epoch with a fresh content key and sends it to every granted
    /// subscriber.
    pub async fn rotate(&self) -> Result<Rekey, PublisherError> {
        self.inner.lock().await.rotate(&self.client).await
    }

    /// Disconnects cleanly, waiting (bounded) for queued messages to leave.
    pub async fn disconnect(mut self) -> Result<(), PublisherError> {
        {
            // Taking the lock waits for any operation in progress.
            let mut inner = self.inner.lock().await;
            self.closing.store(true, Ordering::SeqCst);
            if let Some(kdc) = inner.kdc.take() {
                kdc.shutdown().await;
            }
            self.client.disconnect().await?;
        }
        // Requests leave in order: once the poller has sent the DISCONNECT, every
        // publish queued before it is on the wire.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.poller).await;
        Ok(())
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        self.republisher.abort();
        // The poller ends by itself after the DISCONNECT from `disconnect`, or when the
        // client handle (dropped here) closes its request channel; abort it in case it
        // is waiting on a dead broker.
        if !self.poller.is_finished() {
            let poller = self.poller.abort_handle();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                poller.abort();
            });
        }
    }
}

impl Inner {
    fn save(&self) -> Result<(), PublisherError> {
        self.state.save(&self.state_dir)
    }

    fn recent_keys(&self) -> Vec<(u64, ContentKey)> {
        recent_keys(&self.state)
    }

    /// What the key messages built now share.
    fn batch(&self) -> Batch {
        Batch {
            publisher: self.identity.clone(),
            prefix: self.location.clone(),
            keys: self.recent_keys(),
            issued_at: now_unix().max(0) as u64,
        }
    }

    /// Builds every grantee's key message (all cores, blocking) before the connection
    /// exists, for the republisher to send on connect.
    fn rebuild_key_messages(&mut self) -> Result<(), PublisherError> {
        self.key_messages.clear();
        if !self.send_key_messages {
            // KDC-only: grants restored from an earlier run get no key messages either.
            return Ok(());
        }
        let jobs: Vec<_> = self.grantees.values().map(Grantee::job).collect();
        let batch = self.batch();
        for message in cpu_bound(|| batch.build_all(&jobs))? {
            if let Some(grantee) = self.grantees.get_mut(&message.subscriber) {
                grantee.wrapped = message.wrapped;
            }
            self.key_messages.insert(
                message.subscriber,
                (message.topic, Bytes::from(message.bytes)),
            );
        }
        Ok(())
    }

    /// Builds the key messages of the grantees `ids` on all cores, then publishes them,
    /// keeping each grantee's new wrappings and each message for the republisher.
    async fn send(
        &mut self,
        client: &AsyncClient,
        ids: &[String],
        timings: RekeyTimings,
    ) -> Result<Rekey, PublisherError> {
        let mut rekey = Rekey {
            epoch: self.state.epoch,
            timings,
            ..Rekey::default()
        };
        if !self.send_key_messages {
            return Ok(rekey);
        }
        let jobs: Vec<_> = ids
            .iter()
            .filter_map(|id| self.grantees.get(id))
            .map(Grantee::job)
            .collect();
        let batch = self.batch();
        let started = Instant::now();
        // All of it, then send: measured at 10,000 subscribers on 2 cores, handing the
        // build to another thread (rayon::spawn or a thread of its own) and publishing in
        // chunks of 256 as they were signed, or all at the end, was 0.13-0.17 s slower
        // than building here (and used about 0.5 s more CPU), for the under 0.1 s that
        // sending takes.
        let built = cpu_bound(|| batch.build_all(&jobs))?;
        rekey.timings.build = started.elapsed();
        let started = Instant::now();
        for message in built {
            let bytes = Bytes::from(message.bytes);
            rekey.key_messages += 1;
            rekey.bytes += bytes.len();
            rekey.wrapped += message.wrapped_now;
            // Waits only while the client's request queue is full: the event loop writes
            // them out meanwhile, and acknowledgements are not awaited.
            client
                .publish_bytes(
                    message.topic.as_str(),
                    QoS::AtLeastOnce,
                    true,
                    bytes.clone(),
                )
                .await?;
            if let Some(grantee) = self.grantees.get_mut(&message.subscriber) {
                grantee.wrapped = message.wrapped;
            }
            self.key_messages
                .insert(message.subscriber, (message.topic, bytes));
        }
        rekey.timings.send = started.elapsed();
        tracing::debug!(
            epoch = rekey.epoch,
            key_messages = rekey.key_messages,
            wrapped = rekey.wrapped,
            verify_ms = rekey.timings.verify.as_millis() as u64,
            persist_ms = rekey.timings.persist.as_millis() as u64,
            build_ms = rekey.timings.build.as_millis() as u64,
            send_ms = rekey.timings.send.as_millis() as u64,
            "key messages sent"
        );
        Ok(rekey)
    }

    async fn rotate(&mut self, client: &AsyncClient) -> Result<Rekey, PublisherError> {
        let key = ContentKey::generate();
        let epoch = self.state.epoch + 1;
        self.state.epoch = epoch;
        self.state.epoch_started_at = now_unix().max(0) as u64;
        self.state.keys.push((epoch, *key.as_bytes()));
        let excess = self.state.keys.len().saturating_sub(DEFAULT_KEPT_EPOCHS);
        self.state.keys.drain(..excess);
        // The new key is on disk, and served by the KDC, before anything is sealed with it.
        let started = Instant::now();
        self.save()?;
        let timings = RekeyTimings {
            persist: started.elapsed(),
            ..RekeyTimings::default()
        };
        if let Some(kdc) = &self.kdc {
            kdc.set_keys(self.recent_keys());
        }
        self.sealer.set_key(epoch, &key);
        self.key_messages.clear();
        let everyone: Vec<String> = self.grantees.keys().cloned().collect();
        self.send(client, &everyone, timings).await
    }
}

/// Runs `work` (parallel work on rayon's threads, which blocks the calling thread) from
/// async code. On a multi-threaded runtime, `block_in_place` lets the runtime move this
/// worker's other tasks (the MQTT event loop above all) elsewhere meanwhile; a
/// current-thread runtime has nowhere to move them, and `block_in_place` would panic.
fn cpu_bound<T>(work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

fn recent_keys(state: &PublisherState) -> Vec<(u64, ContentKey)> {
    state
        .keys
        .iter()
        .map(|(e, k)| (*e, ContentKey::from_bytes(*k)))
        .collect()
}

fn current_key(state: &PublisherState) -> (u64, ContentKey) {
    state
        .keys
        .iter()
        .find(|(e, _)| *e == state.epoch)
        .map(|(e, k)| (*e, ContentKey::from_bytes(*k)))
        .unwrap_or_else(|| (state.epoch, ContentKey::generate()))
}

fn unique_client_id(id: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{id}-{}-{nanos:x}", std::process::id())
}

/// Polls the MQTT event loop until the publisher closes. Counts CONNACKs so the
/// republisher knows when to send key messages again. Never publishes.
async fn poll(mut eventloop: EventLoop, connected: watch::Sender<u64>, closing: Arc<AtomicBool>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected.send_modify(|n| *n += 1);
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                if closing.load(Ordering::SeqCst) {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if closing.load(Ordering::SeqCst) {
                    return;
                }
                tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                // rumqttc reconnects on the next poll without any pause.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
