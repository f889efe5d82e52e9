//! The [`Subscriber`]: one MQTT connection, a polling task, and a worker that verifies,
//! de-duplicates and decrypts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, Packet, QoS};
use sealpost_certs::{now_unix, topic, Verifier};
use sealpost_protocol::{KeyLocation, Opener, Rejected, SubscriberIdentity};
use sealpost_publisher::transport::mqtt_options;
use sealpost_publisher::{BrokerAddress, TlsIdentity};
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;

use crate::events::{Counters, Event, KeyFetchFailure, Message, Rejection};
use crate::kdc::{FetchOutcome, Fetcher, KdcClient, KdcCredentials, KdcError, Session};
use crate::pending::{Held, Pending};
use crate::replay_store::ReplayStore;
use crate::SubscriberError;

/// Prefix of every key-message topic: `sealpost/keys/<publisher>/<subscriber>`.
pub const KEY_TOPIC_PREFIX: &str = "sealpost/keys/";

/// Most messages opened in one batch (signatures verified together).
const BATCH: usize = 256;

/// How to build a [`Subscriber`].
#[derive(Clone)]
pub struct SubscriberConfig {
    /// The broker.
    pub broker: BrokerAddress,
    /// TLS trust (and client certificate) for `mqtts://` and `wss://` brokers. The
    /// sealpost broker delivers key messages only to their recipients by default: give
    /// the subscriber certificate and key as `client` there (as `sealpost-sub` does).
    pub tls: Option<TlsIdentity>,
    /// MQTT client id; default: the subscriber id with a per-process suffix.
    pub client_id: Option<String>,
    /// MQTT user name and password, if the broker asks for them.
    pub credentials: Option<(String, String)>,
    /// The subscriber certificate, PEM.
    pub certificate_pem: String,
    /// Its RSA PKCS#8 private key, PEM.
    pub key_pem: String,
    /// The CA certificate, PEM: publisher certificates must chain to it.
    pub ca_pem: String,
    /// A signed revocation list (PEM) from the CA, if any.
    pub revocation_list_pem: Option<String>,
    /// Directory for the persisted replay window; `None` keeps it in memory only (a
    /// restart may then deliver retained or redelivered messages again).
    pub state_dir: Option<PathBuf>,
    /// Most messages held waiting for a key.
    pub hold_capacity: usize,
    /// Longest time a message is held waiting for a key.
    pub hold_time: Duration,
    /// Key epochs kept per publisher.
    pub kept_epochs: usize,
    /// Events buffered for the application before the subscriber stops reading.
    pub event_capacity: usize,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// How long connecting and subscribing wait for the broker.
    pub timeout: Duration,
    /// Credentials for publishers' key distribution centers. When a verified envelope's
    /// key index names one of these KDC addresses, the key is fetched from it over
    /// HTTPS (its certificate verified against `ca_pem`); credentials are never sent to
    /// any other address.
    pub kdc_credentials: Vec<KdcCredentials>,
}

impl std::fmt::Debug for SubscriberConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberConfig")
            .field("broker", &self.broker)
            .field("state_dir", &self.state_dir)
            .field("hold_capacity", &self.hold_capacity)
            .field("hold_time", &self.hold_time)
            .finish_non_exhaustive()
    }
}

impl SubscriberConfig {
    /// A configuration with defaults for everything not given.
    pub fn new(
        broker: BrokerAddress,
        certificate_pem: impl Into<String>,
        key_pem: impl Into<String>,
        ca_pem: impl Into<String>,
    ) -> SubscriberConfig {
        SubscriberConfig {
            broker,
            tls: None,
            client_id: None,
            credentials: None,
            certificate_pem: certificate_pem.into(),
            key_pem: key_pem.into(),
            ca_pem: ca_pem.into(),
            revocation_list_pem: None,
            state_dir: None,
            hold_capacity: 1024,
            hold_time: Duration::from_secs(10),
            kept_epochs: sealpost_protocol::DEFAULT_KEPT_EPOCHS,
            event_capacity: 4096,
            keep_alive: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            kdc_credentials: Vec::new(),
        }
    }

    /// A configuration for a subscriber that gets keys from a KDC only and holds no
    /// subscriber certificate or RSA key (it follows no key messages).
    pub fn kdc_only(
        broker: BrokerAddress,
        ca_pem: impl Into<String>,
        credentials: KdcCredentials,
    ) -> SubscriberConfig {
        let mut config = SubscriberConfig::new(broker, "", "", ca_pem);
        config.kdc_credentials = vec![credentials];
        config
    }
}

/// What the polling task (publishes) and the KDC fetches (keys) hand the worker.
enum Incoming {
    Publish { topic: String, payload: Bytes },
    KeyFetched(FetchOutcome),
}

impl From<FetchOutcome> for Incoming {
    fn from(outcome: FetchOutcome) -> Incoming {
        Incoming::KeyFetched(outcome)
    }
}

/// A verifying, decrypting MQTT subscriber. See the crate documentation.
pub struct Subscriber {
    id: String,
    client: AsyncClient,
    events: mpsc::Receiver<Event>,
    counters: Arc<Counters>,
    filters: Arc<Mutex<Vec<(String, QoS)>>>,
    suback: watch::Receiver<u64>,
    closing: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Connects and subscribes to this subscriber's key messages. Fails if the broker does
    /// not accept the connection within `timeout`.
    pub async fn connect(config: SubscriberConfig) -> Result<Subscriber, SubscriberError> {
        // A KDC-only subscriber has no certificate: it needs no RSA key to unwrap key
        // messages, and it names itself after its first KDC reader id.
        let (identity, id) = match config.kdc_credentials.first() {
            Some(c) if config.certificate_pem.is_empty() => (None, c.reader.clone()),
            _ => {
                let identity =
                    SubscriberIdentity::from_pem(&config.certificate_pem, &config.key_pem)?;
                let id = identity.id().to_owned();
                (Some(identity), id)
            }
        };
        let sessions = config
            .kdc_credentials
            .iter()
            .map(|c| Ok(Session::new(KdcClient::new(c.clone(), &config.ca_pem)?)))
            .collect::<Result<Vec<_>, KdcError>>()?;
        let mut verifier = Verifier::new(&config.ca_pem)?;
        if let Some(crl) = &config.revocation_list_pem {
            verifier.set_revocation_list(crl)?;
        }
        let store = ReplayStore::new(config.state_dir.clone());
        let mut opener = Opener::new(verifier).with_kept_epochs(config.kept_epochs);
        let follows_key_messages = identity.is_some();
        if let Some(identity) = identity {
            opener = opener.with_identity(identity);
        }
        opener.set_replay_state(store.load()?);

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
        eventloop.set_network_options(sealpost_publisher::transport::network_options());
        let closing = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (in_tx, in_rx) = mpsc::channel(4096);
        let (event_tx, events) = mpsc::channel(config.event_capacity.max(1));
        let (connack_tx, mut connack_rx) = watch::channel(0u64);
        let (suback_tx, suback) = watch::channel(0u64);
        let mut initial_filters = Vec::new();
        if follows_key_messages {
            initial_filters.push((format!("{KEY_TOPIC_PREFIX}+/{id}"), QoS::AtLeastOnce));
        }
        let filters = Arc::new(Mutex::new(initial_filters));

        let fetched = in_tx.clone();
        let poller = tokio::spawn(poll(
            eventloop,
            in_tx,
            connack_tx,
            suback_tx,
            closing.clone(),
        ));
        let resubscriber = {
            let client = client.clone();
            let filters = filters.clone();
            let mut rx = connack_rx.clone();
            tokio::spawn(async move {
                // After every (re)connect subscribe again: a clean session forgot them.
                // Runs apart from the polling task, which must never send requests.
                while rx.changed().await.is_ok() {
                    // The first connection subscribes through `connect` and `subscribe`;
                    // subscribing again would make the broker resend retained messages.
                    if *rx.borrow_and_update() <= 1 {
                        continue;
                    }
                    let filters = filters.lock().await.clone();
                    for (filter, qos) in filters {
                        if client.subscribe(filter, qos).await.is_err() {
                            return;
                        }
                    }
                }
            })
        };
        let worker = Worker {
            fetcher: Fetcher::new(sessions),
            fetched,
            opener,
            pending: Pending::new(config.hold_capacity, config.hold_time),
            store,
            counters: counters.clone(),
            events: event_tx,
        };
        let tick =
            (config.hold_time / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
        let worker = tokio::spawn(worker.run(in_rx, tick));
        let connected = tokio::time::timeout(config.timeout, connack_rx.wait_for(|n| *n > 0)).await;
        let subscriber = Subscriber {
            id,
            client,
            events,
            counters,
            filters,
            suback,
            closing,
            tasks: vec![poller, resubscriber, worker],
        };
        if !matches!(connected, Ok(Ok(_))) {
            return Err(SubscriberError::Timeout("CONNACK"));
        }
        let mut subscriber = subscriber;
        // A KDC-only subscriber follows no key messages: it has no key filter.
        let key_filter = subscriber.filters.lock().await.first().cloned();
        if let Some((filter, qos)) = key_filter {
            subscriber.subscribe_unrecorded(&filter, qos).await?;
        }
        Ok(subscriber)
    }

    /// The subscriber's identity.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Subscribes to `filter` and waits (bounded) for the broker's SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<(), SubscriberError> {
        if !topic::validate_filter(filter) {
            return Err(SubscriberError::InvalidFilter(filter.to_owned()));
        }
        self.filters.lock().await.push((filter.to_owned(), qos));
        self.subscribe_unrecorded(filter, qos).await
    }

    /// Subscribes and waits for the SUBACK, without adding to the re-subscribe list.
    async fn subscribe_unrecorded(
        &mut self,
        filter: &str,
        qos: QoS,
    ) -> Result<(), SubscriberError> {
        let before = *self.suback.borrow();
        self.client.subscribe(filter, qos).await?;
        let acked = tokio::time::timeout(
            Duration::from_secs(10),
            self.suback.wait_for(|n| *n > before),
        )
        .await;
        match acked {
            Ok(Ok(_)) => Ok(()),
            _ => Err(SubscriberError::Timeout("SUBACK")),
        }
    }

    /// The next delivered message or rejection; `None` once the subscriber has stopped.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next delivered message, skipping rejections (they are still counted).
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            if let Event::Message(m) = self.events.recv().await? {
                return Some(m);
            }
        }
    }

    /// The running counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Disconnects cleanly.
    pub async fn disconnect(self) -> Result<(), SubscriberError> {
        self.closing.store(true, Ordering::SeqCst);
        self.client.disconnect().await?;
        Ok(())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn unique_client_id(id: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{id}-{}-{nanos:x}", std::process::id())
}

/// Polls the MQTT event loop and hands publishes to the worker. Never sends requests.
async fn poll(
    mut eventloop: EventLoop,
    incoming: mpsc::Sender<Incoming>,
    connack: watch::Sender<u64>,
    suback: watch::Sender<u64>,
    closing: Arc<AtomicBool>,
) {
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                let topic = p.topic;
                let msg = Incoming::Publish {
                    topic,
                    payload: p.payload,
                };
                if incoming.send(msg).await.is_err() {
                    return;
                }
            }
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => connack.send_modify(|n| *n += 1),
            Ok(MqttEvent::Incoming(Packet::SubAck(_))) => suback.send_modify(|n| *n += 1),
            Ok(_) => {}
            Err(e) => {
                if closing.load(Ordering::SeqCst) {
                    return;
                }
                tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Owns the opener: verifies, opens, holds, fetches keys from KDCs, persists, and emits
/// events.
struct Worker {
    fetcher: Fetcher,
    /// Where KDC fetches send their outcome: the worker's own input.
    fetched: mpsc::Sender<Incoming>,
    opener: Opener,
    pending: Pending,
    store: ReplayStore,
    counters: Arc<Counters>,
    events: mpsc::Sender<Event>,
}

impl Worker {
    async fn run(mut self, mut incoming: mpsc::Receiver<Incoming>, tick: Duration) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut batch = Vec::new();
            tokio::select! {
                msg = incoming.recv() => match msg {
                    Some(m) => batch.push(m),
                    None => return,
                },
                _ = ticker.tick() => {}
            }
            while batch.len() < BATCH {
                match incoming.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let events = self.process(batch);
            for event in events {
                if self.events.send(event).await.is_err() {
                    // The application dropped the subscriber.
                    return;
                }
            }
        }
    }

    /// Handles one batch: key messages first (so data in the same batch can use them),
    /// then data, then held messages if keys arrived, then expiry.
    fn process(&mut self, batch: Vec<Incoming>) -> Vec<Event> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut data = Vec::new();
        let mut learned = false;
        for incoming in batch {
            let (topic, payload) = match incoming {
                Incoming::Publish { topic, payload } => (topic, payload),
                Incoming::KeyFetched(outcome) => {
                    learned |= self.key_fetched(outcome, now, &mut out);
                    continue;
                }
            };
            if !topic.starts_with(KEY_TOPIC_PREFIX) {
                data.push(Held {
                    topic,
                    payload,
                    since: now,
                    reason: Rejected::Malformed("not yet opened"),
                });
                continue;
            }
            if payload.is_empty() {
                // A cleared retained key message (the publisher revoked us): nothing to learn.
                continue;
            }
            match self.opener.accept_key_message(&topic, &payload) {
                Ok(_) => {
                    self.counters.key_message();
                    // Even without new epochs the publisher's certificate may be new.
                    learned = true;
                }
                Err(reason) => self.reject(&mut out, topic, reason),
            }
        }
        if learned {
            let mut held = self.pending.take_all();
            held.append(&mut data);
            data = held;
        }
        let delivered = self.open(data, &mut out);
        for held in self.pending.expire(now) {
            self.reject(&mut out, held.topic, held.reason);
        }
        self.counters.set_held(self.pending.len());
        if delivered {
            // Persist before handing anything over: a restart must never deliver again.
            if let Err(e) = self.store.save(self.opener.replay_state()) {
                tracing::error!(error = %e, "could not persist the replay window");
            }
        }
        out
    }

    fn open(&mut self, data: Vec<Held>, out: &mut Vec<Event>) -> bool {
        let mut delivered = false;
        let now = now_unix();
        for chunk in data.chunks(BATCH) {
            let items: Vec<(&str, &[u8])> = chunk
                .iter()
                .map(|h| (h.topic.as_str(), h.payload.as_ref()))
                .collect();
            let results = self.opener.open_batch(&items, now);
            for (held, result) in chunk.iter().zip(results) {
                match result {
                    Ok(opened) => {
                        delivered = true;
                        self.counters.delivered();
                        out.push(Event::Message(opened));
                    }
                    Err(reason) if reason.is_retryable() => {
                        if let Rejected::UnknownKey {
                            publisher,
                            epoch,
                            location: KeyLocation::Kdc(kdc),
                        } = &reason
                        {
                            // The location is signed: this envelope passed its signature
                            // check before the key lookup failed.
                            if self.fetcher.want(
                                kdc,
                                publisher,
                                *epoch,
                                &self.fetched,
                                Instant::now(),
                            ) {
                                self.counters.key_fetch_started();
                            }
                        }
                        let evicted = self.pending.hold(Held {
                            topic: held.topic.clone(),
                            payload: held.payload.clone(),
                            since: held.since,
                            reason,
                        });
                        if let Some(e) = evicted {
                            self.reject(out, e.topic, e.reason);
                        }
                    }
                    Err(reason) => self.reject(out, held.topic.clone(), reason),
                }
            }
        }
        delivered
    }

    /// Installs a key (and publisher certificate) fetched from a KDC, or reports why it
    /// could not be had. Returns whether a key was learned.
    fn key_fetched(&mut self, outcome: FetchOutcome, now: Instant, out: &mut Vec<Event>) -> bool {
        let FetchOutcome {
            kdc,
            publisher,
            epoch,
            result,
        } = outcome;
        let result = result.and_then(|fetched| {
            if fetched.publisher != publisher {
                return Err(KdcError::BadResponse("key answer names another publisher"));
            }
            // Lets envelopes that do not embed the certificate verify; it is checked
            // against the CA like any other.
            match self
                .opener
                .add_publisher_certificate(&fetched.certificate_der, now_unix())
            {
                Ok(info) if info.id == publisher => {}
                Ok(_) => tracing::warn!(%kdc, "KDC sent the certificate of another publisher"),
                Err(reason) => tracing::warn!(%kdc, %reason, "KDC sent an unusable certificate"),
            }
            self.opener.add_key(&publisher, epoch, fetched.key);
            Ok(())
        });
        self.fetcher
            .finished(&publisher, epoch, result.as_ref().err(), now);
        match result {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%kdc, %publisher, epoch, %error, "KDC key fetch failed");
                self.counters.key_fetch_failed();
                out.push(Event::KeyFetchFailed(KeyFetchFailure {
                    kdc,
                    publisher,
                    epoch,
                    error,
                }));
                false
            }
        }
    }

    fn reject(&self, out: &mut Vec<Event>, topic: String, reason: Rejected) {
        tracing::debug!(%topic, reason = reason.kind(), "rejected");
        self.counters.rejected(&reason);
        out.push(Event::Rejected(Rejection { topic, reason }));
    }
}
