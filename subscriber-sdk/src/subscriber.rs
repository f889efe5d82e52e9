//! The [`Subscriber`]: one MQTT connection, a polling task, and a worker that verifies,
//! de-duplicates and decrypts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, Packet, QoS};
use sealpost_certs::topic;
use sealpost_client::link::{first_connection, Link, LinkStatus};
use sealpost_client::transport::connection_options;
use sealpost_client::tunnel::{Route, Tunnel};
use sealpost_client::{BrokerAddress, TlsIdentity};
use sealpost_protocol::SubscriberIdentity;
use sealpost_session::{
    FetchFailure, Input, KdcAccess, SessionError, SubscriberEvent, SubscriberSession,
    SubscriberSessionConfig,
};
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;

use crate::events::{Counters, Event, KeyFetchFailure, Message, Rejection};
use crate::kdc::{FetchOutcome, Fetcher, KdcClient, KdcCredentials, KdcError, Session};
use crate::replay_store::ReplayStore;
use crate::SubscriberError;

pub use sealpost_session::KEY_TOPIC_PREFIX;

/// Most inputs handed to the core at once (signatures verified together).
const BATCH: usize = 256;

/// The default state directory (replay window), relative to the working directory, like
/// the publisher's `./.sealpost-pub`.
pub const DEFAULT_STATE_DIR: &str = ".sealpost-sub";

/// How to build a [`Subscriber`].
#[derive(Clone)]
pub struct SubscriberConfig {
    /// The broker.
    pub broker: BrokerAddress,
    /// More brokers to fail over to, tried in order after `broker` (then `broker` again)
    /// whenever the connection is lost or an attempt fails; `mqtt://` and `mqtts://` only.
    /// The subscriber subscribes again on each. Default none.
    pub failover: Vec<BrokerAddress>,
    /// TLS trust (and client certificate) for `mqtts://` and `wss://` brokers. The
    /// sealpost broker delivers key messages only to their recipients by default: give
    /// the subscriber certificate and key as `client` there (as `sealpost-sub` does).
    pub tls: Option<TlsIdentity>,
    /// MQTT client id; default: the subscriber id with a per-process suffix.
    pub client_id: Option<String>,
    /// Ask the broker to keep this subscriber's session while it is away (MQTT clean
    /// session 0): QoS 1 messages published meanwhile are queued for it, and after a
    /// failover to another node of a cluster that keeps sessions (NATS JetStream) the
    /// session and what it had not acknowledged carry on there. Needs `client_id`.
    /// Default `false` (every connection starts clean).
    pub persistent_session: bool,
    /// MQTT user name and password, if the broker asks for them.
    pub credentials: Option<(String, String)>,
    /// The subscriber certificate, PEM.
    pub certificate_pem: String,
    /// Its PKCS#8 private key, PEM: RSA or X25519, matching the certificate.
    pub key_pem: String,
    /// The CA certificate, PEM: publisher certificates must chain to it.
    pub ca_pem: String,
    /// The CA's signed revocation list (PEM file). Required: [`Subscriber::connect`] fails
    /// without one unless [`SubscriberConfig::insecure_no_crl`] is set. Read again every
    /// [`SubscriberConfig::revocation_list_reload`] while running; a new list that cannot
    /// be read or is not signed by the CA is reported and the one in force is kept.
    pub revocation_list: Option<PathBuf>,
    /// How often the revocation list file is read again (default 60 s).
    pub revocation_list_reload: Duration,
    /// Accept publishers without checking revocation at all (no revocation list). A
    /// revoked publisher's messages are then delivered: for tests and trials only; a
    /// warning is logged at connect.
    pub insecure_no_crl: bool,
    /// Directory for the persisted replay window (default [`DEFAULT_STATE_DIR`],
    /// `./.sealpost-sub`; file `replay-<subscriber id>.state`). `None` keeps it in memory
    /// only: a restarted subscriber then accepts again envelopes it already delivered, as
    /// long as they are younger than [`SubscriberConfig::max_age`] (a warning is logged).
    pub state_dir: Option<PathBuf>,
    /// Envelopes whose signed publication time is older than this are refused as
    /// [`Rejected::Stale`] (default 24 hours).
    pub max_age: Duration,
    /// Publication times up to this far ahead of the local clock are accepted (publisher
    /// clocks running ahead; default 5 minutes).
    pub clock_skew: Duration,
    /// Most messages held waiting for a content key (verified messages: their
    /// certificate and signature were checked).
    pub hold_capacity: usize,
    /// Most messages held waiting for the certificate of an unknown publisher (nothing
    /// about them could be verified yet). Kept apart from `hold_capacity`, so a flood of
    /// unverifiable messages never pushes out a verified one (default 64).
    pub unverified_hold_capacity: usize,
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
            .field("revocation_list", &self.revocation_list)
            .field("insecure_no_crl", &self.insecure_no_crl)
            .field("state_dir", &self.state_dir)
            .field("max_age", &self.max_age)
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
            failover: Vec::new(),
            tls: None,
            client_id: None,
            persistent_session: false,
            credentials: None,
            certificate_pem: certificate_pem.into(),
            key_pem: key_pem.into(),
            ca_pem: ca_pem.into(),
            revocation_list: None,
            revocation_list_reload: Duration::from_secs(60),
            insecure_no_crl: false,
            state_dir: Some(PathBuf::from(DEFAULT_STATE_DIR)),
            max_age: Duration::from_secs(sealpost_protocol::DEFAULT_MAX_AGE_SECS),
            clock_skew: Duration::from_secs(sealpost_protocol::DEFAULT_CLOCK_SKEW_SECS),
            hold_capacity: 1024,
            unverified_hold_capacity: 64,
            hold_time: Duration::from_secs(10),
            kept_epochs: sealpost_protocol::DEFAULT_KEPT_EPOCHS,
            event_capacity: 4096,
            keep_alive: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            kdc_credentials: Vec::new(),
        }
    }

    /// A configuration for a subscriber that gets keys from a KDC only and holds no
    /// subscriber certificate or private key (it follows no key messages).
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
    /// PUBLISH packets (topic, payload) that rumqttc read from the network together,
    /// in order: handed over at once, not one channel send per message.
    Publishes(Vec<(String, Bytes)>),
    KeyFetched(FetchOutcome),
}

impl Incoming {
    /// How many inputs of the core this is.
    fn len(&self) -> usize {
        match self {
            Incoming::Publishes(publishes) => publishes.len(),
            Incoming::KeyFetched(_) => 1,
        }
    }
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
    /// SUBACKs received, and whether the last one refused a filter.
    suback: watch::Receiver<(u64, bool)>,
    /// See [`Subscriber::link_status`].
    status: watch::Receiver<LinkStatus>,
    closing: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    /// The SDK's own connection to the broker (TLS, failover), if it has one.
    tunnel: Option<Tunnel>,
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
        let mut crl = config
            .revocation_list
            .as_ref()
            .map(|path| CrlReloader::new(path.clone(), config.revocation_list_reload));
        let crl_pem = crl.as_mut().map(CrlReloader::read_initial).transpose()?;
        if crl_pem.is_none() && config.insecure_no_crl {
            tracing::warn!(
                "insecure_no_crl: no revocation list; messages of revoked publishers \
                 will be delivered"
            );
        }
        // The KDC clients check the KDC's certificate against the list read at start.
        let sessions = config
            .kdc_credentials
            .iter()
            .map(|c| {
                let client = match &crl_pem {
                    Some(crl) => KdcClient::with_revocation_list(c.clone(), &config.ca_pem, crl)?,
                    None => KdcClient::new(c.clone(), &config.ca_pem)?,
                };
                Ok(Session::new(client))
            })
            .collect::<Result<Vec<_>, KdcError>>()?;
        // Everything that decides what is delivered lives in the session core.
        let core_config = SubscriberSessionConfig {
            certificate_pem: config.certificate_pem.clone(),
            key_pem: config.key_pem.clone(),
            ca_pem: config.ca_pem.clone(),
            crl_pem: crl_pem.clone(),
            insecure_no_crl: config.insecure_no_crl,
            max_age: config.max_age,
            clock_skew: config.clock_skew,
            hold_capacity: config.hold_capacity,
            unverified_hold_capacity: config.unverified_hold_capacity,
            hold_time: config.hold_time,
            kept_epochs: config.kept_epochs,
            // By the clients' addresses: what envelopes are matched against.
            kdcs: config
                .kdc_credentials
                .iter()
                .zip(&sessions)
                .map(|(c, session)| KdcAccess {
                    address: session.client().address().to_owned(),
                    reader: c.reader.clone(),
                })
                .collect(),
        };
        // The id names the replay file, so it is needed before the saved window is read.
        let id = match config.kdc_credentials.first() {
            Some(c) if config.certificate_pem.is_empty() => c.reader.clone(),
            _ => SubscriberIdentity::from_pem(&config.certificate_pem, &config.key_pem)?
                .id()
                .to_owned(),
        };
        if config.state_dir.is_none() {
            tracing::warn!(
                "replay window kept in memory only: after a restart, envelopes younger than \
                 the maximum age are accepted again"
            );
        }
        let store = ReplayStore::new(config.state_dir.clone(), &id);
        let saved = store.load()?;
        let session = SubscriberSession::new(core_config, saved.as_deref())
            .map_err(|e| session_error(e, &config, &store))?;

        let client_id = match (&config.client_id, config.persistent_session) {
            (Some(client_id), _) => client_id.clone(),
            (None, false) => unique_client_id(&id),
            (None, true) => return Err(SubscriberError::PersistentSessionWithoutClientId),
        };
        let route = Route::with_failover(&config.broker, &config.failover);
        let (mut options, tunnel) =
            connection_options(&client_id, &route, config.tls.as_ref(), config.keep_alive)?;
        options.set_clean_session(!config.persistent_session);
        if let Some((user, password)) = &config.credentials {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        eventloop.set_network_options(sealpost_client::transport::network_options());
        let closing = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (in_tx, in_rx) = mpsc::channel(4096);
        let (event_tx, events) = mpsc::channel(config.event_capacity.max(1));
        let (link, mut connack_rx, mut status) = Link::new(route.clone());
        let (suback_tx, suback) = watch::channel((0u64, false));
        let initial_filters: Vec<(String, QoS)> = session
            .subscriptions()
            .into_iter()
            .map(|filter| (filter, QoS::AtLeastOnce))
            .collect();
        let filters = Arc::new(Mutex::new(initial_filters));

        let fetched = in_tx.clone();
        let session_watch = SessionWatch {
            persistent: config.persistent_session,
            connections: 0,
            counters: counters.clone(),
        };
        let poller = tokio::spawn(poll(
            eventloop,
            in_tx,
            link,
            suback_tx,
            closing.clone(),
            session_watch,
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
            session,
            store,
            crl,
            counters: counters.clone(),
            events: event_tx,
        };
        let tick =
            (config.hold_time / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
        let worker = tokio::spawn(worker.run(in_rx, tick));
        let connected = first_connection(config.timeout, &mut connack_rx, &mut status).await;
        let subscriber = Subscriber {
            id,
            client,
            events,
            counters,
            filters,
            suback,
            status,
            closing,
            tasks: vec![poller, resubscriber, worker],
            tunnel,
        };
        match connected {
            Ok(()) => {}
            Err(Some(reason)) => {
                return Err(SubscriberError::ConnectFailed {
                    broker: route.to_string(),
                    reason,
                })
            }
            Err(None) => return Err(SubscriberError::Timeout("CONNACK")),
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
        self.subscribe_unrecorded(filter, qos).await?;
        tracing::info!(%filter, "subscribed");
        Ok(())
    }

    /// Subscribes and waits for the SUBACK, without adding to the re-subscribe list.
    async fn subscribe_unrecorded(
        &mut self,
        filter: &str,
        qos: QoS,
    ) -> Result<(), SubscriberError> {
        let before = self.suback.borrow().0;
        self.client.subscribe(filter, qos).await?;
        let acked = tokio::time::timeout(
            Duration::from_secs(10),
            self.suback.wait_for(|(n, _)| *n > before),
        )
        .await;
        match acked {
            Ok(Ok(ack)) if ack.1 => Err(SubscriberError::SubscriptionRefused(filter.to_owned())),
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

    /// The state of the connection to the broker, as it changes: a subscriber that loses
    /// its broker reconnects by itself (with growing pauses), and this says so.
    pub fn link_status(&self) -> watch::Receiver<LinkStatus> {
        self.status.clone()
    }

    /// The running counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Disconnects cleanly: sends an MQTT DISCONNECT and waits (up to 5 s) until it has
    /// left, and over TLS until the TLS stream is shut down (close_notify), so a process
    /// that exits right after does not just drop the connection.
    pub async fn disconnect(mut self) -> Result<(), SubscriberError> {
        self.closing.store(true, Ordering::SeqCst);
        self.client.disconnect().await?;
        // The poller is the first task; it ends once the DISCONNECT is written, and drops
        // rumqttc's connection.
        if let Some(poller) = self.tasks.first_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(5), poller).await;
        }
        if let Some(tunnel) = &mut self.tunnel {
            tunnel.close(Duration::from_secs(2)).await;
        }
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

/// Notices a persistent session that the broker did not keep across a reconnect.
struct SessionWatch {
    persistent: bool,
    /// CONNACKs so far.
    connections: u64,
    counters: Arc<Counters>,
}

impl SessionWatch {
    fn accepted(&mut self, session_present: bool) {
        self.connections += 1;
        // The first connection cannot tell a lost session from a first start.
        if self.persistent && self.connections > 1 && !session_present {
            self.counters.session_lost();
            tracing::warn!(
                "the broker kept no session for this persistent subscriber across the \
                 reconnect (CONNACK session present 0): messages published while it was \
                 away did not wait for it, retained messages excepted"
            );
        }
    }
}

/// Polls the MQTT event loop and hands publishes to the worker. Never sends requests.
async fn poll(
    mut eventloop: EventLoop,
    incoming: mpsc::Sender<Incoming>,
    mut link: Link,
    suback: watch::Sender<(u64, bool)>,
    closing: Arc<AtomicBool>,
    mut session: SessionWatch,
) {
    // An event polled while gathering publishes that is neither a PUBLISH nor a PUBACK
    // (not expected: only those were buffered), handled next.
    let mut next = None;
    loop {
        let event = match next.take() {
            Some(event) => event,
            None => eventloop.poll().await,
        };
        match event {
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                let mut publishes = vec![(p.topic, p.payload)];
                // The PUBLISH packets rumqttc has already read and buffered behind this
                // one (at QoS 1 each followed by the PUBACK it sent): `poll` returns each
                // event at once, without touching the network.
                while publishes.len() < BATCH
                    && matches!(
                        eventloop.state.events.front(),
                        Some(
                            MqttEvent::Incoming(Packet::Publish(_))
                                | MqttEvent::Outgoing(rumqttc::Outgoing::PubAck(_))
                        )
                    )
                {
                    match eventloop.poll().await {
                        Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                            publishes.push((p.topic, p.payload))
                        }
                        Ok(MqttEvent::Outgoing(rumqttc::Outgoing::PubAck(_))) => {}
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                if incoming.send(Incoming::Publishes(publishes)).await.is_err() {
                    return;
                }
            }
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                // Counted before the link says "connected", which a caller may wait for.
                session.accepted(ack.session_present);
                link.accepted();
            }
            Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                if closing.load(Ordering::SeqCst) {
                    return;
                }
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                suback.send_modify(|(n, last_refused)| {
                    *n += 1;
                    *last_refused = refused;
                });
            }
            Ok(_) => {}
            Err(e) => {
                if closing.load(Ordering::SeqCst) {
                    return;
                }
                link.failed(&e).await;
            }
        }
    }
}

/// Runs the session core: feeds it publishes and fetched keys, persists the replay
/// window it hands out, starts the KDC fetches it asks for, counts, and emits events.
struct Worker {
    fetcher: Fetcher,
    /// Where KDC fetches send their outcome: the worker's own input.
    fetched: mpsc::Sender<Incoming>,
    session: SubscriberSession,
    store: ReplayStore,
    /// The revocation list file and when to read it again (`None`: insecure_no_crl).
    crl: Option<CrlReloader>,
    counters: Arc<Counters>,
    events: mpsc::Sender<Event>,
}

impl Worker {
    async fn run(mut self, mut incoming: mpsc::Receiver<Incoming>, tick: Duration) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut batch = Vec::new();
            let mut inputs = 0;
            tokio::select! {
                msg = incoming.recv() => match msg {
                    Some(m) => {
                        inputs += m.len();
                        batch.push(m);
                    }
                    None => return,
                },
                _ = ticker.tick() => {}
            }
            while inputs < BATCH {
                match incoming.try_recv() {
                    Ok(m) => {
                        inputs += m.len();
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
            let mut events = self.process(batch);
            // Handed over in order, with room reserved for as many at once as fit.
            let most = self.events.max_capacity();
            while !events.is_empty() {
                let n = events.len().min(most);
                let Ok(permits) = self.events.reserve_many(n).await else {
                    // The application dropped the subscriber.
                    return;
                };
                for (permit, event) in permits.zip(events.drain(..n)) {
                    permit.send(event);
                }
            }
        }
    }

    /// Hands one batch to the core and carries out what it asks: persist the replay
    /// window before anything is handed over, start key fetches, count, and turn its
    /// events into the SDK's.
    fn process(&mut self, batch: Vec<Incoming>) -> Vec<Event> {
        if let Some(crl) = &mut self.crl {
            crl.reload_if_due(&mut self.session, Instant::now(), &self.counters);
        }
        // The KDC client's own errors, to report them as such (the core sees only
        // whether they are transient).
        let mut fetch_errors = HashMap::new();
        let inputs = batch
            .into_iter()
            .flat_map(|incoming| match incoming {
                Incoming::Publishes(publishes) => publishes
                    .into_iter()
                    .map(|(topic, payload)| Input::Publish { topic, payload })
                    .collect::<Vec<_>>(),
                Incoming::KeyFetched(FetchOutcome { fetch, result }) => {
                    let result = match result {
                        Ok(fetched) => Ok(sealpost_session::FetchedKey {
                            publisher: fetched.publisher,
                            key: fetched.key,
                            certificate_der: fetched.certificate_der,
                        }),
                        Err(error) => {
                            let failure = FetchFailure {
                                transient: error.is_transient(),
                                reason: error.to_string(),
                            };
                            fetch_errors.insert(fetch.clone(), error);
                            Err(failure)
                        }
                    };
                    vec![Input::KeyFetched { fetch, result }]
                }
            })
            .collect();
        let output = self.session.process(inputs, now_ms());
        if let Some(state) = &output.persist {
            // Persist before handing anything over: a restart must never deliver again.
            if let Err(e) = self.store.save(state) {
                tracing::error!(error = %e, "could not persist the replay window");
            }
        }
        for warning in &output.warnings {
            tracing::warn!("{warning}");
        }
        for _ in 0..output.key_messages {
            self.counters.key_message();
        }
        for fetch in output.fetches {
            self.counters.key_fetch_started();
            self.fetcher.start(fetch, &self.fetched);
        }
        self.counters.set_held(output.held);
        output
            .events
            .into_iter()
            .map(|event| match event {
                SubscriberEvent::Message(message) => {
                    self.counters.delivered();
                    Event::Message(message)
                }
                SubscriberEvent::Rejected { topic, reason } => {
                    tracing::debug!(%topic, reason = reason.kind(), "rejected");
                    self.counters.rejected(&reason);
                    Event::Rejected(Rejection { topic, reason })
                }
                SubscriberEvent::KeyFetchFailed { fetch, failure } => {
                    let error = fetch_errors
                        .remove(&fetch)
                        // The core's own refusal: the answer named another publisher.
                        .unwrap_or(KdcError::BadResponse("key answer names another publisher"));
                    tracing::warn!(
                        kdc = %fetch.kdc,
                        publisher = %fetch.publisher,
                        epoch = fetch.epoch,
                        error = %failure.reason,
                        "KDC key fetch failed"
                    );
                    self.counters.key_fetch_failed();
                    Event::KeyFetchFailed(KeyFetchFailure {
                        kdc: fetch.kdc,
                        publisher: fetch.publisher,
                        epoch: fetch.epoch,
                        error,
                    })
                }
            })
            .collect()
    }
}

/// A session core error at start, in the SDK's terms (with the file involved).
fn session_error(
    e: SessionError,
    config: &SubscriberConfig,
    store: &ReplayStore,
) -> SubscriberError {
    match e {
        SessionError::Certificate(e) => SubscriberError::Certificate(e),
        SessionError::RevocationListRequired => SubscriberError::NoRevocationList,
        SessionError::RevocationList(e) => crl_error(
            config.revocation_list.as_deref().unwrap_or(Path::new("")),
            e,
        ),
        SessionError::CorruptState(detail) => SubscriberError::State {
            path: store.path().unwrap_or_default(),
            detail,
        },
        SessionError::Seal(e) => SubscriberError::Identity(e),
        other => {
            SubscriberError::Identity(sealpost_protocol::SealError::Encoding(other.to_string()))
        }
    }
}

/// The time now, unix milliseconds, for the session core.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Reads the revocation list file at start and again every `interval`, installing each
/// new list the CA signed. A list that cannot be read or verified is reported (log and
/// [`Counters::revocation_list_failures_total`]) and the one in force stays: the
/// subscriber never falls back to no list. A list past its next-update time makes every
/// publisher fail as `Revoked`, so a list that stops being renewed fails closed.
struct CrlReloader {
    path: PathBuf,
    interval: Duration,
    /// The file contents last installed, to skip re-verifying an unchanged file.
    installed: Vec<u8>,
    next_at: Instant,
}

impl CrlReloader {
    fn new(path: PathBuf, interval: Duration) -> CrlReloader {
        CrlReloader {
            path,
            interval,
            installed: Vec::new(),
            next_at: Instant::now() + interval,
        }
    }

    /// The first load: the list as text, for the session core to install (any failure is
    /// an error of [`Subscriber::connect`]).
    fn read_initial(&mut self) -> Result<String, SubscriberError> {
        let bytes = read_crl(&self.path)?;
        let pem = pem_text(&bytes)
            .map_err(|e| crl_error(&self.path, e))?
            .to_owned();
        self.installed = bytes;
        Ok(pem)
    }

    fn reload_if_due(
        &mut self,
        session: &mut SubscriberSession,
        now: Instant,
        counters: &Counters,
    ) {
        if now < self.next_at {
            return;
        }
        self.next_at = now + self.interval;
        let result = read_crl(&self.path).and_then(|bytes| {
            if bytes != self.installed {
                pem_text(&bytes)
                    .and_then(|pem| session.set_revocation_list(pem).map_err(|e| e.to_string()))
                    .map_err(|e| crl_error(&self.path, e))?;
                tracing::info!(path = %self.path.display(), "revocation list reloaded");
                self.installed = bytes;
            }
            Ok(())
        });
        if let Err(error) = result {
            counters.revocation_list_failure();
            tracing::error!(
                %error,
                "could not reload the revocation list; keeping the one in force"
            );
        }
    }
}

fn read_crl(path: &Path) -> Result<Vec<u8>, SubscriberError> {
    std::fs::read(path).map_err(|e| crl_error(path, e))
}

fn pem_text(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|_| "not PEM text".to_owned())
}

fn crl_error(path: &Path, e: impl std::fmt::Display) -> SubscriberError {
    SubscriberError::RevocationList {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}
