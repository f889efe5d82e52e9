//! The [`Publisher`]: sealing, grants, revocation and key messages over one MQTT connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Request};
use sealpost_certs::pemfile;
use sealpost_client::crl::CrlFile;
use sealpost_session::{
    Packet as CorePacket, PublisherOutput, PublisherSession, PublisherSessionConfig, SessionError,
    DEFAULT_RESEND_WINDOW, RESEND_DELAY,
};
use tokio::sync::{oneshot, watch, Mutex, Notify};
use tokio::task::JoinHandle;

use crate::kdc::{Kdc, KdcConfig, KdcCredentials, PENDING_READER_CHECK};
use crate::link::{Link, LinkStatus};
use crate::state::{FileStore, StateLock};
use crate::transport::{connection_options, BrokerAddress, TlsIdentity};
use crate::tunnel::{Route, Tunnel};
use crate::PublisherError;

pub use rumqttc::QoS;

pub use sealpost_session::DEFAULT_RESERVE_BLOCK;

/// Default of [`PublisherConfig::confirm_key_messages`].
pub const DEFAULT_KEY_MESSAGE_CONFIRMATION: Duration = Duration::from_secs(5);

/// Default of [`PublisherConfig::request_queue`].
pub const DEFAULT_REQUEST_QUEUE: usize = 16_384;

/// Key-message topics subscribed to at once when reading grants back (well under a
/// broker's limit on subscriptions per client, e.g. sealpost's 1,000).
const CONFIRM_CHUNK: usize = 100;

/// How long a grant's read-back waits for a retained key message before subscribing to
/// its topic again, at first; doubled after each try up to [`CONFIRM_RESUBSCRIBE_MAX`].
const CONFIRM_RESUBSCRIBE: Duration = Duration::from_millis(100);
const CONFIRM_RESUBSCRIBE_MAX: Duration = Duration::from_secs(1);

/// How often a running publisher reloads its revocation list and checks every grantee's
/// certificate again, by default.
pub const DEFAULT_CRL_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// How to build a [`Publisher`].
#[derive(Clone)]
pub struct PublisherConfig {
    /// The broker.
    pub broker: BrokerAddress,
    /// More brokers to fail over to, tried in order after `broker` (then `broker` again)
    /// whenever the connection is lost or an attempt fails; `mqtt://` and `mqtts://` only.
    /// Default none.
    pub failover: Vec<BrokerAddress>,
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
    /// The CA's revocation list (a PEM file, as `sealpost-certs revoke` writes it).
    /// Required unless [`PublisherConfig::insecure_no_crl`]. Every grantee's certificate
    /// (chain, validity, revocation) is checked at start, and validity and revocation
    /// again on every rekey and every [`PublisherConfig::crl_reload_interval`], each time
    /// with the file read again; a grantee that fails is dropped and the key rotates. A list that is unreadable, not signed by the
    /// CA or older than the one in force is refused at start and, later, reported and
    /// ignored (the one in force stays). A list past its next-update time is refused at
    /// start; while running, no new reader is granted until a fresh one is in place
    /// (revocations and rotations go on: they only narrow who can read).
    pub crl: Option<PathBuf>,
    /// Run without a revocation list: a subscriber whose certificate the CA revoked keeps
    /// receiving new keys until its certificate expires. Only for tests and trials; a
    /// warning is logged at start.
    pub insecure_no_crl: bool,
    /// How often the revocation list is reloaded and every grantee checked again while
    /// running (also catches certificates that expire). Default
    /// [`DEFAULT_CRL_RELOAD_INTERVAL`]; zero turns the periodic check off (rekeys still
    /// check).
    pub crl_reload_interval: Duration,
    /// Start a new key epoch whenever a reader who does not hold the key yet is granted
    /// (a new subscriber, one granted again after a revocation, a new KDC reader), so that
    /// it cannot open anything sealed before its grant (backward secrecy). Default true.
    /// No rotation is needed, and none happens, while the current key has sealed nothing
    /// (after a restart the publisher assumes it has). Granting an already granted
    /// subscriber again (a renewed certificate) never rotates.
    pub rotate_on_grant: bool,
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
    /// Read the key messages of new grants back from the broker (as retained messages)
    /// and fail the grant if they do not come back within this time. MQTT 3.1.1 has no
    /// way to refuse a PUBLISH: a broker that drops a key message (the sealpost broker
    /// does, for key topics written without the publisher's certificate) acknowledges it
    /// all the same, and the reader would never read. Default
    /// [`DEFAULT_KEY_MESSAGE_CONFIRMATION`]; `None` skips the check (for brokers whose
    /// ACL lets the publisher write its key topics but not read them).
    pub confirm_key_messages: Option<Duration>,
    /// Deliver keys in key messages over MQTT (default). With `false`, readers get keys
    /// from the KDC only and [`Publisher::grant_pem`] is refused.
    pub key_messages: bool,
    /// How many of the last envelopes published at QoS 1 are sent again after every
    /// reconnect ([`RESEND_DELAY`] later), so that what a lost broker took with it, and
    /// what reached the next broker before the subscribers did, still reaches them;
    /// subscribers drop the duplicates (replay window). Default
    /// [`DEFAULT_RESEND_WINDOW`]; 0 turns this off.
    pub resend_window: usize,
    /// Serve keys from a key distribution center over HTTPS too (or only, with
    /// `key_messages: false`). Envelopes then name the KDC address in their key index
    /// and always embed the publisher certificate, since KDC readers may get no key
    /// message to learn it from.
    pub kdc: Option<KdcConfig>,
    /// Prepare the next epoch in the background after every grant, revocation and
    /// rotation (a fresh key, and every reader's key message for it wrapped and signed,
    /// published by nobody until a rotation starts it), so that a revocation or rotation
    /// only has to publish them: the wrapping and signing leave its critical path. Costs
    /// one more key message per reader in memory. Default true. See
    /// [`Publisher::prepare_next_epoch`] and docs/SECURITY.md, "Prepared epochs".
    pub prepare_next_epoch: bool,
    /// Packets (envelopes, key messages) the MQTT client queues on their way to the
    /// broker; a `publish` whose envelope finds the queue full waits until there is room,
    /// so this also bounds the memory queued envelopes take. A grant, revocation or
    /// rotation hands over one key message per reader at once: with room for all of them
    /// it returns without waiting for the connection to write them out (which a queue of
    /// 1,024 made it do for every key message past the first thousand or so). Default
    /// [`DEFAULT_REQUEST_QUEUE`] (enough for 16,000 readers); at least 1.
    pub request_queue: usize,
}

impl std::fmt::Debug for PublisherConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherConfig")
            .field("broker", &self.broker)
            .field("state_dir", &self.state_dir)
            .field("crl", &self.crl)
            .field("insecure_no_crl", &self.insecure_no_crl)
            .field("rotate_on_grant", &self.rotate_on_grant)
            .field("key_lifetime", &self.key_lifetime)
            .finish_non_exhaustive()
    }
}

impl PublisherConfig {
    /// `broker`, then the `failover` brokers.
    fn route(&self) -> Route {
        Route::with_failover(&self.broker, &self.failover)
    }

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
            failover: Vec::new(),
            tls: None,
            client_id: None,
            credentials: None,
            certificate_pem: certificate_pem.into(),
            key_pem: key_pem.into(),
            ca_pem: ca_pem.into(),
            crl: None,
            insecure_no_crl: false,
            crl_reload_interval: DEFAULT_CRL_RELOAD_INTERVAL,
            rotate_on_grant: true,
            state_dir: state_dir.into(),
            key_lifetime: None,
            embed_certificate: false,
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            confirm_key_messages: Some(DEFAULT_KEY_MESSAGE_CONFIRMATION),
            resend_window: DEFAULT_RESEND_WINDOW,
            key_messages: true,
            kdc: None,
            prepare_next_epoch: true,
            request_queue: DEFAULT_REQUEST_QUEUE,
        }
    }

    /// Over a TLS broker address, presents the publisher certificate as the TLS client
    /// certificate (and trusts the CA for the broker's): the sealpost broker lets only the
    /// publisher's certificate write its key-message topics. Brokers that do not ask for a
    /// client certificate never see it. Over plain TCP this does nothing.
    pub fn present_certificate_over_tls(&mut self) {
        if self.broker.is_tls() || self.failover.iter().any(BrokerAddress::is_tls) {
            self.tls = Some(TlsIdentity {
                ca_pem: self.ca_pem.clone(),
                client: Some((self.certificate_pem.clone(), self.key_pem.clone())),
            });
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
    /// Wrappings (RSA-OAEP or HPKE) done for them. A rotation wraps only the new epoch for each
    /// subscriber and reuses the earlier epoch's wrapping, so after a revoke this is the
    /// number of remaining subscribers, not twice that; none for the key messages taken
    /// from the prepared epoch.
    pub wrapped: usize,
    /// Key messages that were prepared ahead of time (wrapped and signed before the
    /// call: [`PublisherConfig::prepare_next_epoch`]).
    pub prepared: usize,
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
    /// The sans-IO core: every decision about sealing, grants and key messages.
    session: PublisherSession,
    state_dir: PathBuf,
    kdc: Option<Kdc>,
    /// Where the revocation list is reloaded from (none: `insecure_no_crl`).
    crl: Option<CrlFile>,
    /// See [`PublisherConfig::confirm_key_messages`].
    confirm_key_messages: Option<Duration>,
    /// How long the core's last state save took (its store measures it).
    last_save: Arc<std::sync::Mutex<Duration>>,
    /// How long the last core operation ([`Inner::run`]) took, save included.
    last_run: Duration,
    /// Wakes the background preparation of the next epoch (after every rekey).
    prepare: Arc<Notify>,
    /// Packets handed to the MQTT client and written out.
    outflow: Arc<Outflow>,
}

/// The time now, unix milliseconds, for the session core.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn to_core_qos(qos: QoS) -> sealpost_session::QoS {
    match qos {
        QoS::AtMostOnce => sealpost_session::QoS::AtMostOnce,
        QoS::AtLeastOnce => sealpost_session::QoS::AtLeastOnce,
        QoS::ExactlyOnce => sealpost_session::QoS::ExactlyOnce,
    }
}

fn from_core_qos(qos: sealpost_session::QoS) -> QoS {
    match qos {
        sealpost_session::QoS::AtMostOnce => QoS::AtMostOnce,
        sealpost_session::QoS::AtLeastOnce => QoS::AtLeastOnce,
        sealpost_session::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// Publishes one packet the core asked for. Waits only while the client's request queue
/// is full: the event loop writes them out meanwhile, and acknowledgements are not
/// awaited.
async fn send_packet(
    client: &AsyncClient,
    outflow: &Outflow,
    packet: CorePacket,
) -> Result<(), PublisherError> {
    client
        .publish_bytes(
            packet.topic,
            from_core_qos(packet.qos),
            packet.retain,
            packet.payload,
        )
        .await?;
    outflow.handed.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// How long the background preparation of the next epoch waits, at most, for the event
/// loop to write out the packets handed to the MQTT client before it woke (see
/// [`Outflow::written_out`]).
const PREPARE_AFTER_WRITTEN_LIMIT: Duration = Duration::from_secs(5);

/// PUBLISH packets handed to the MQTT client ([`send_packet`]) and written out by its
/// event loop (counted by [`poll`]), so that background work can wait for the packets of
/// a rekey to leave before it takes the cores.
#[derive(Default)]
struct Outflow {
    handed: AtomicU64,
    written: AtomicU64,
}

impl Outflow {
    /// Waits until the event loop has written out as many PUBLISH packets as had been
    /// handed to the client when this was called, or `limit` has passed (a connection
    /// that is down writes nothing until it is back; QoS 0 packets queued when it went
    /// down are never written). Checks every 5 ms.
    async fn written_out(&self, limit: Duration) {
        let target = self.handed.load(Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + limit;
        while self.written.load(Ordering::SeqCst) < target && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A sealing MQTT publisher. See the crate documentation.
///
/// All methods take `&self` and may be called from several tasks; they are serialised
/// internally, so sequence numbers go out in order.
pub struct Publisher {
    id: String,
    client: AsyncClient,
    inner: Arc<Mutex<Inner>>,
    /// Messages of `publish` calls waiting for the next burst.
    queue: Queue,
    closing: Arc<AtomicBool>,
    poller: JoinHandle<()>,
    republisher: JoinHandle<()>,
    /// Reloads the revocation list and checks the grantees periodically.
    checker: Option<JoinHandle<()>>,
    /// Enables the KDC readers that `sealpost-pub kdc add-reader` adds meanwhile.
    kdc_watcher: Option<JoinHandle<()>>,
    /// Prepares the next epoch whenever [`Inner::prepare`] is notified.
    preparer: JoinHandle<()>,
    /// Held by whoever prepares the next epoch (see [`prepare_next_epoch`]).
    preparing: Arc<Mutex<()>>,
    /// Where the poller hands incoming messages while grants are read back.
    readback: Readback,
    /// The SDK's own connection to the broker (TLS, failover), if it has one.
    tunnel: Option<Tunnel>,
    /// See [`Publisher::link_status`].
    status: watch::Receiver<LinkStatus>,
    /// Held for the life of the publisher; released on drop (not when the tasks above
    /// end, which happens a moment later), so a publisher can be started again on the
    /// same directory right after this one is dropped.
    _lock: StateLock,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Locks the state directory, loads (or creates) the state, checks every granted
    /// subscriber's certificate again (dropping those that fail and rotating the key),
    /// connects to the broker and publishes the key messages of every granted subscriber.
    /// Fails if another publisher holds the state directory, without a revocation list
    /// (unless `insecure_no_crl`), or if the broker does not accept the connection within
    /// `connect_timeout`.
    pub async fn connect(config: PublisherConfig) -> Result<Publisher, PublisherError> {
        // First of all: a second publisher must not even read a state another one is
        // changing.
        let lock = StateLock::acquire(&config.state_dir)?;
        let mut crl = config.crl.clone().map(CrlFile::new);
        let crl_pem = match (&mut crl, config.insecure_no_crl) {
            (Some(file), _) => Some(file.read_initial()?),
            (None, true) => {
                tracing::warn!(
                    "insecure_no_crl: running WITHOUT a revocation list; subscribers whose \
                     certificates the CA revoked keep receiving new keys until they expire"
                );
                None
            }
            (None, false) => return Err(PublisherError::RevocationListRequired),
        };
        let saved = crate::state::load_bytes(&config.state_dir)?;
        let last_save = Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let store = FileStore {
            dir: config.state_dir.clone(),
            last_save: last_save.clone(),
        };
        let core_config = PublisherSessionConfig {
            certificate_pem: config.certificate_pem.clone(),
            key_pem: config.key_pem.clone(),
            ca_pem: config.ca_pem.clone(),
            crl_pem,
            insecure_no_crl: config.insecure_no_crl,
            rotate_on_grant: config.rotate_on_grant,
            key_lifetime: config.key_lifetime,
            embed_certificate: config.embed_certificate,
            key_messages: config.key_messages,
            resend_window: config.resend_window,
            reserve_block: DEFAULT_RESERVE_BLOCK,
            prepare_next_epoch: config.prepare_next_epoch,
        };
        // Verifies every grant again and builds every key message: all cores.
        let (mut session, started) = cpu_bound(|| {
            PublisherSession::new(core_config, saved.as_deref(), Box::new(store), now_ms())
        })
        .map_err(|e| match e {
            SessionError::CorruptState(detail) => PublisherError::State {
                path: config.state_dir.join(crate::state::STATE_FILE),
                detail,
            },
            other => other.into(),
        })?;
        for (id, why) in &started.dropped {
            warn_dropped(id, why);
        }
        let id = session.id().to_owned();
        let kdc = match &config.kdc {
            Some(kdc_config) => Some(
                Kdc::start(
                    kdc_config,
                    session.identity(),
                    session.verifier(),
                    &config.state_dir,
                    session.recent_keys(),
                )
                .await?,
            ),
            None => None,
        };
        if let Some(kdc) = &kdc {
            session.set_kdc_address(kdc.address());
        }
        let mut inner = Inner {
            session,
            state_dir: config.state_dir.clone(),
            kdc,
            crl,
            confirm_key_messages: config.confirm_key_messages,
            last_save,
            last_run: Duration::ZERO,
            prepare: Arc::new(Notify::new()),
            outflow: Arc::new(Outflow::default()),
        };
        // Readers added while no publisher ran: a new epoch (its key messages go out on
        // connect) before anything is sealed, and they read from it on.
        inner.enable_pending_readers(None).await?;

        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| unique_client_id(&id));
        let route = config.route();
        let (mut options, tunnel) =
            connection_options(&client_id, &route, config.tls.as_ref(), config.keep_alive)?;
        if let Some((user, password)) = &config.credentials {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, config.request_queue.max(1));
        eventloop.set_network_options(crate::transport::network_options());
        let closing = Arc::new(AtomicBool::new(false));
        let (link, mut connected_rx, mut status_rx) = Link::new(route);
        let readback = Readback::default();
        let outflow = inner.outflow.clone();
        let poller = tokio::spawn(poll(
            eventloop,
            link,
            closing.clone(),
            readback.clone(),
            outflow.clone(),
        ));
        // Queued now, sent once connected: the dropped grantees' key messages cleared.
        for packet in started.packets {
            send_packet(&client, &outflow, packet).await?;
        }
        let inner = Arc::new(Mutex::new(inner));
        let queue = Queue::default();
        let republisher = {
            let inner = inner.clone();
            let client = client.clone();
            let outflow = outflow.clone();
            let mut rx = connected_rx.clone();
            tokio::spawn(async move {
                // Every (re)connect: the broker may have lost retained messages (no
                // persistence, failover), so send every current key message again. This
                // runs apart from the polling task, which must never publish.
                while rx.changed().await.is_ok() {
                    {
                        let inner = inner.lock().await;
                        for packet in inner.session.connected() {
                            if send_packet(&client, &inner.outflow, packet).await.is_err() {
                                return;
                            }
                        }
                    }
                    // After a reconnect (not the first connection), the recent envelopes
                    // too (see `RESEND_DELAY`), once subscribers have had time to come back.
                    if *rx.borrow_and_update() <= 1 {
                        continue;
                    }
                    tokio::time::sleep(RESEND_DELAY).await;
                    let again = inner.lock().await.session.resend();
                    tracing::debug!(messages = again.len(), "sending the recent messages again");
                    for packet in again {
                        if send_packet(&client, &outflow, packet).await.is_err() {
                            return;
                        }
                    }
                }
            })
        };
        let checker = (!config.crl_reload_interval.is_zero()).then(|| {
            tokio::spawn(check_periodically(
                inner.clone(),
                client.clone(),
                config.crl_reload_interval,
            ))
        });
        let preparing = Arc::new(Mutex::new(()));
        let preparer = {
            let wake = inner.lock().await.prepare.clone();
            // The readers restored from the state, first.
            wake.notify_one();
            tokio::spawn(prepare_in_background(
                inner.clone(),
                preparing.clone(),
                wake,
                outflow.clone(),
            ))
        };
        let kdc_watcher = config.kdc.is_some().then(|| {
            tokio::spawn(enable_pending_readers_periodically(
                inner.clone(),
                client.clone(),
            ))
        });
        let connected = crate::link::first_connection(
            config.connect_timeout,
            &mut connected_rx,
            &mut status_rx,
        )
        .await;
        let publisher = Publisher {
            id,
            client,
            inner,
            queue,
            closing,
            poller,
            republisher,
            checker,
            kdc_watcher,
            preparer,
            preparing,
            readback,
            tunnel,
            status: status_rx,
            _lock: lock,
        };
        match connected {
            Ok(()) => Ok(publisher),
            Err(Some(reason)) => Err(PublisherError::ConnectFailed {
                broker: config.route().to_string(),
                reason,
            }),
            Err(None) => Err(PublisherError::NotConnected(config.route().to_string())),
        }
    }

    /// The state of the connection to the broker, as it changes: a publisher that loses
    /// its broker reconnects by itself (with growing, jittered pauses, to the next broker
    /// if several were given), and this says so.
    pub fn link_status(&self) -> watch::Receiver<LinkStatus> {
        self.status.clone()
    }

    /// The publisher's identity.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current key epoch.
    pub async fn epoch(&self) -> u64 {
        self.inner.lock().await.session.epoch()
    }

    /// The sequence number the next message will carry.
    pub async fn next_seq(&self) -> u64 {
        self.inner.lock().await.session.next_seq()
    }

    /// The identities of the granted subscribers.
    pub async fn granted(&self) -> Vec<String> {
        self.inner.lock().await.session.granted()
    }

    /// Seals `payload` for `topic` and publishes it. Returns its sequence number.
    ///
    /// Messages published concurrently (several `publish` futures in flight, e.g. through
    /// `buffered`, or from several tasks) queue up while one burst is being sealed, and
    /// the next burst seals all of them with one signature (protocol version 2). Nothing
    /// ever waits for a burst to fill: a lone message is sealed at once, as a burst of one.
    pub async fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Result<u64, PublisherError> {
        let (done, result) = oneshot::channel();
        let schedule = {
            let mut queue = lock_queue(&self.queue);
            queue.messages.push(Queued {
                topic: topic.to_owned(),
                payload: payload.to_vec(),
                qos,
                retain,
                done,
            });
            !std::mem::replace(&mut queue.drain_scheduled, true)
        };
        // Seals what is queued once the lock is free; spawned, so that dropping this
        // future cannot abandon a burst half sent. One drain waits at a time: it takes
        // every message queued before it starts, and a message queued after that sees
        // none scheduled and schedules the next.
        if schedule {
            tokio::spawn(drain_queue(
                self.inner.clone(),
                self.client.clone(),
                Scheduled::new(self.queue.clone()),
            ));
        }
        result
            .await
            .unwrap_or_else(|_| Err(PublisherError::BurstFailed("the publisher stopped".into())))
    }

    /// Seals `messages` (`(topic, payload)`, in order) as bursts of up to the maximum
    /// burst size, one signature each, and publishes them. Returns their sequence
    /// numbers. Every topic is checked first: if one is not permitted, nothing is sent.
    pub async fn publish_many(
        &self,
        messages: &[(&str, &[u8])],
        qos: QoS,
        retain: bool,
    ) -> Result<Vec<u64>, PublisherError> {
        let mut inner = self.inner.lock().await;
        for (topic, _) in messages {
            inner.session.check_topic(topic)?;
        }
        let items: Vec<Outgoing<'_>> = messages
            .iter()
            .map(|&(topic, payload)| Outgoing {
                topic,
                payload,
                qos,
                retain,
            })
            .collect();
        inner
            .seal_and_send(&self.client, &items)
            .await
            .into_iter()
            .collect()
    }

    /// Grants the subscriber whose certificate (PEM) is given: verifies it against the
    /// CA (role subscriber, validity, revocation list) and publishes its key message.
    /// A new reader starts a new epoch first (with [`PublisherConfig::rotate_on_grant`],
    /// the default, if anything was sealed under the current key), so it cannot open what
    /// was sealed before. Granting an already granted subscriber again renews its
    /// certificate, without rotating.
    pub async fn grant_pem(&self, certificate_pem: &str) -> Result<String, PublisherError> {
        let der = pemfile::decode(certificate_pem, pemfile::CERTIFICATE)?;
        let mut ids = self.grant_many(&[der]).await?.1;
        Ok(ids.remove(0))
    }

    /// Grants many subscribers at once (certificates as DER), wrapping their keys in
    /// parallel. All certificates are verified before any is granted; one rotation
    /// covers all the new readers (see [`Publisher::grant_pem`]).
    pub async fn grant_many(
        &self,
        certificates_der: &[Vec<u8>],
    ) -> Result<(Rekey, Vec<String>), PublisherError> {
        let mut inner = self.inner.lock().await;
        if !inner.session.sends_key_messages() {
            return Err(PublisherError::KeyMessagesDisabled);
        }
        let started = Instant::now();
        // Against the CA's latest list: a certificate revoked a moment ago is refused.
        inner.reload_crl();
        // Verification (a signature check and parsing per certificate) is a tenth of a
        // large grant: the core spreads it over the cores like the wrapping.
        let recipients = cpu_bound(|| inner.session.verify_grants(certificates_der, now_ms()))?;
        let timings = RekeyTimings {
            verify: started.elapsed(),
            ..RekeyTimings::default()
        };
        let granted_before: HashSet<String> = inner.session.granted().into_iter().collect();
        let (output, ids) = inner.run(|s| s.grant(recipients, now_ms()))?;
        let rekey = inner.send(&self.client, output, timings).await?;
        if let Some(timeout) = inner.confirm_key_messages {
            let sent: Vec<(String, String, Bytes)> = ids
                .iter()
                .filter_map(|id| {
                    let packet = inner.session.key_message(id)?;
                    Some((id.clone(), packet.topic.clone(), packet.payload.clone()))
                })
                .collect();
            if let Err(e) = self.confirm(&sent, timeout).await {
                if let PublisherError::KeyMessagesRefused { subscribers, .. } = &e {
                    // Not a success, so not a grant: the new readers are removed again
                    // (the key rotates, in case one got it after all). Renewed grants
                    // stay: those readers hold the key already.
                    let new: Vec<String> = subscribers
                        .iter()
                        .filter(|id| !granted_before.contains(*id))
                        .cloned()
                        .collect();
                    if !new.is_empty() {
                        inner.reload_crl();
                        let undo = inner.run(|s| s.remove(&new, now_ms()))?;
                        inner
                            .send(&self.client, undo, RekeyTimings::default())
                            .await?;
                    }
                }
                return Err(e);
            }
        }
        Ok((rekey, ids))
    }

    /// Reads the key messages `sent` (`(subscriber, topic, bytes)`) back from the broker:
    /// subscribes to their topics, a chunk at a time, and waits up to `timeout` per chunk
    /// for each retained message to come back as sent, subscribing again to those not
    /// back yet at growing intervals. Fails with the subscribers whose key message did
    /// not.
    async fn confirm(
        &self,
        sent: &[(String, String, Bytes)],
        timeout: Duration,
    ) -> Result<(), PublisherError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        *self.readback.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let mut refused = Vec::new();
        let mut result: Result<(), PublisherError> = Ok(());
        for chunk in sent.chunks(CONFIRM_CHUNK) {
            let mut waiting: HashMap<&str, (&str, &Bytes)> = chunk
                .iter()
                .map(|(id, topic, bytes)| (topic.as_str(), (id.as_str(), bytes)))
                .collect();
            let subscribe = |topics: Vec<&str>| {
                let filters: Vec<_> = topics
                    .into_iter()
                    .map(|topic| rumqttc::SubscribeFilter::new(topic.to_owned(), QoS::AtMostOnce))
                    .collect();
                self.client.subscribe_many(filters)
            };
            if let Err(e) = subscribe(waiting.keys().copied().collect()).await {
                result = Err(e.into());
                break;
            }
            let deadline = tokio::time::Instant::now() + timeout;
            let mut again = CONFIRM_RESUBSCRIBE;
            let mut next = tokio::time::Instant::now() + again;
            while !waiting.is_empty() {
                match tokio::time::timeout_at(next.min(deadline), rx.recv()).await {
                    Ok(Some((topic, payload))) => {
                        if waiting
                            .get(topic.as_str())
                            .is_some_and(|(_, b)| **b == payload)
                        {
                            waiting.remove(topic.as_str());
                        }
                    }
                    Ok(None) => break,
                    Err(_) if tokio::time::Instant::now() >= deadline => break,
                    // Not back yet: a broker may store a retained message after it
                    // acknowledged the PUBLISH (nats-server 2.10 and later), so that a
                    // SUBSCRIBE right behind it finds nothing. Subscribing again sends
                    // what is retained now (MQTT-3.8.4-3).
                    Err(_) => {
                        if let Err(e) = subscribe(waiting.keys().copied().collect()).await {
                            result = Err(e.into());
                            break;
                        }
                        again = (again * 2).min(CONFIRM_RESUBSCRIBE_MAX);
                        next = tokio::time::Instant::now() + again;
                    }
                }
            }
            refused.extend(waiting.into_values().map(|(id, _)| id.to_owned()));
            for (_, topic, _) in chunk {
                if let Err(e) = self.client.unsubscribe(topic.as_str()).await {
                    result = Err(e.into());
                }
            }
            if result.is_err() {
                break;
            }
        }
        *self.readback.lock().unwrap_or_else(|p| p.into_inner()) = None;
        result?;
        if refused.is_empty() {
            return Ok(());
        }
        refused.sort();
        Err(PublisherError::KeyMessagesRefused {
            subscribers: refused,
            waited: timeout,
        })
    }

    /// Revokes a subscriber: clears its retained key message and invalidates its KDC
    /// credentials and tokens (whichever it has; KDC credentials in the state directory's
    /// reader file also when no KDC runs now), rotates the content key and sends the
    /// new key to the remaining subscribers only, so the revoked one cannot read anything
    /// published afterwards.
    pub async fn revoke(&self, subscriber_id: &str) -> Result<Rekey, PublisherError> {
        let mut inner = self.inner.lock().await;
        // The reader store is the record of who may log in to the KDC, whether or not
        // this publisher runs one now: a revocation must reach it either way, or the next
        // KDC run would let the reader fetch the key that the rotation below protects.
        // First, so that a failure to record it leaves nothing half revoked.
        let kdc_reader = match &inner.kdc {
            Some(kdc) => kdc.revoke_reader(subscriber_id)?,
            None => {
                crate::kdc::readers::ReaderStore::open(&inner.state_dir)?.revoke(subscriber_id)?
            }
        };
        // The grant itself goes in the core's commit (state saved before it applies).
        let key_grant = inner.session.is_granted(subscriber_id);
        if !key_grant && !kdc_reader {
            return Err(PublisherError::NotGranted(subscriber_id.to_owned()));
        }
        inner.reload_crl();
        let output = if key_grant {
            inner.run(|s| s.revoke(subscriber_id, now_ms()))?
        } else {
            inner.run(|s| s.rotate(now_ms()))?
        };
        inner
            .send(&self.client, output, RekeyTimings::default())
            .await
    }

    /// Reloads the revocation list (if the publisher has one) and checks every granted
    /// subscriber's certificate now (validity, revocation), as the publisher does by
    /// itself every [`PublisherConfig::crl_reload_interval`]. Those that fail are dropped
    /// (their retained key messages cleared) and the key rotates; returns their ids. A
    /// revocation list that cannot be reloaded is reported in the log and the one in
    /// force stays; one past its next-update time is an error, and nothing changes.
    pub async fn check_readers(&self) -> Result<Vec<String>, PublisherError> {
        self.inner.lock().await.check_readers(&self.client).await
    }

    /// Issues KDC credentials for `reader` (a new random password; any earlier one stops
    /// working). The reader may fetch the keys of the current epoch and later ones. Give
    /// the result to the reader (e.g. [`KdcCredentials::save`]); only a hash is kept.
    ///
    /// A reader without live credentials is new: with [`PublisherConfig::rotate_on_grant`]
    /// the key rotates first (if anything was sealed under it), and the reader may fetch
    /// the new epoch's key and later ones only, never what was sealed before (backward
    /// secrecy).
    pub async fn add_reader(&self, reader: &str) -> Result<KdcCredentials, PublisherError> {
        let mut inner = self.inner.lock().await;
        if inner.kdc.is_none() {
            return Err(PublisherError::NoKdc);
        }
        // Readers added elsewhere first, so one rotation serves them and this one.
        inner.enable_pending_readers(Some(&self.client)).await?;
        let kdc = inner.kdc.as_ref().ok_or(PublisherError::NoKdc)?;
        if !kdc.holds_key(reader)? {
            inner.admit_new_reader(Some(&self.client)).await?;
        }
        let kdc = inner.kdc.as_ref().ok_or(PublisherError::NoKdc)?;
        Ok(kdc.add_reader(reader, inner.session.epoch())?)
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
    /// subscriber (after checking them all again, as every rekey does: see
    /// [`PublisherConfig::crl`]).
    pub async fn rotate(&self) -> Result<Rekey, PublisherError> {
        self.inner.lock().await.rotate(&self.client).await
    }

    /// Prepares the next epoch now for every reader that has no key message of it yet
    /// (see [`PublisherConfig::prepare_next_epoch`]), and returns when none is missing,
    /// with how many were added. The publisher does this by itself in the background
    /// after every rekey; this waits for it (a revocation right after a large grant would
    /// otherwise wrap and sign for the readers not yet prepared for). Publishing, grants
    /// and revocations go on meanwhile. Returns 0 with `prepare_next_epoch` off.
    pub async fn prepare_next_epoch(&self) -> Result<usize, PublisherError> {
        prepare_next_epoch(&self.inner, &self.preparing).await
    }

    /// How many granted readers have a key message of the next epoch ready: a revocation
    /// or rotation now wraps and signs for the others only.
    pub async fn prepared_readers(&self) -> usize {
        self.inner.lock().await.session.prepared_readers()
    }

    /// Disconnects cleanly, waiting (bounded) for queued messages to leave.
    pub async fn disconnect(mut self) -> Result<(), PublisherError> {
        self.abort_background();
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
        // The poller dropped rumqttc's connection: the tunnel now closes TLS properly.
        if let Some(tunnel) = &mut self.tunnel {
            tunnel.close(Duration::from_secs(2)).await;
        }
        Ok(())
    }

    /// Stops the background tasks (they take the state lock, which `disconnect` needs).
    fn abort_background(&self) {
        self.preparer.abort();
        for task in [&self.checker, &self.kdc_watcher].into_iter().flatten() {
            task.abort();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        self.republisher.abort();
        self.abort_background();
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
    /// Runs a core operation (which may wrap keys and verify certificates on all cores,
    /// and saves the state through the [`FileStore`]), noting where its time went.
    fn run<T>(
        &mut self,
        operation: impl FnOnce(&mut PublisherSession) -> Result<T, SessionError>,
    ) -> Result<T, PublisherError> {
        *self.last_save.lock().unwrap_or_else(|p| p.into_inner()) = Duration::ZERO;
        let session = &mut self.session;
        let started = Instant::now();
        let result = cpu_bound(|| operation(session));
        self.last_run = started.elapsed();
        Ok(result?)
    }

    /// Carries out what the core asked: the dropped grantees are logged, a KDC gets the
    /// new keys (before anything is sealed with them: the caller holds the lock), and the
    /// packets are published in order.
    async fn send(
        &mut self,
        client: &AsyncClient,
        output: PublisherOutput,
        mut timings: RekeyTimings,
    ) -> Result<Rekey, PublisherError> {
        for (id, why) in &output.dropped {
            warn_dropped(id, why);
        }
        if output.keys_changed {
            if let Some(kdc) = &self.kdc {
                kdc.set_keys(self.session.recent_keys());
            }
        }
        timings.persist = *self.last_save.lock().unwrap_or_else(|p| p.into_inner());
        // The rest of the core's time: wrapping and signing (verifying, for a grant, is
        // measured apart).
        timings.build = self.last_run.saturating_sub(timings.persist);
        let core = output.rekey.unwrap_or_default();
        let started = Instant::now();
        for packet in output.packets {
            send_packet(client, &self.outflow, packet).await?;
        }
        timings.send = started.elapsed();
        if output.rekey.is_some() {
            // The reader set or the epoch changed: prepare the next epoch for it.
            self.prepare.notify_one();
        }
        let rekey = Rekey {
            epoch: self.session.epoch(),
            key_messages: core.key_messages,
            bytes: core.bytes,
            wrapped: core.wrapped,
            prepared: core.prepared,
            timings,
        };
        if output.rekey.is_some() {
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
        }
        Ok(rekey)
    }

    /// Seals `items` as one burst (or several, past the maximum burst size) and publishes
    /// them in order; one result per item. A rotation that is due, and reserving sequence
    /// numbers, come first, for the whole burst (the core does both).
    async fn seal_and_send(
        &mut self,
        client: &AsyncClient,
        items: &[Outgoing<'_>],
    ) -> Vec<Result<u64, PublisherError>> {
        if self.session.rotation_due(now_ms()) {
            // As before every rekey: the CA's latest revocation list first.
            self.reload_crl();
        }
        let outgoing: Vec<sealpost_session::Outgoing<'_>> = items
            .iter()
            .map(|item| sealpost_session::Outgoing {
                topic: item.topic,
                payload: item.payload,
                qos: to_core_qos(item.qos),
                retain: item.retain,
            })
            .collect();
        let burst = match self.session.publish(&outgoing, now_ms()) {
            Ok(burst) => burst,
            Err(e) => return spread(e.into(), items.len()),
        };
        if let Err(e) = self
            .send(client, burst.output, RekeyTimings::default())
            .await
        {
            return spread(e, items.len());
        }
        let mut results = Vec::with_capacity(items.len());
        // Publishing under the lock keeps envelopes on the wire in sequence order.
        for envelope in burst.envelopes {
            results.push(match envelope {
                Ok((seq, packet)) => send_packet(client, &self.outflow, packet)
                    .await
                    .map(|()| seq),
                Err(e) => Err(e.into()),
            });
        }
        results
    }

    /// Before a reader that does not hold the key gets it from the KDC: a new epoch if
    /// the current key has sealed anything (with `rotate_on_grant`; the core decides).
    /// `client` is none before the connection exists: the key messages go out on connect.
    async fn admit_new_reader(
        &mut self,
        client: Option<&AsyncClient>,
    ) -> Result<(), PublisherError> {
        self.reload_crl();
        let output = self.run(|s| s.admit_new_reader(now_ms()))?;
        match client {
            Some(client) => {
                self.send(client, output, RekeyTimings::default()).await?;
            }
            None => {
                if output.keys_changed {
                    if let Some(kdc) = &self.kdc {
                        kdc.set_keys(self.session.recent_keys());
                    }
                }
            }
        }
        Ok(())
    }

    /// Enables the KDC readers added by another process ([`ReaderRecord::pending`]):
    /// first starts a new epoch if the current key has sealed anything (with
    /// `rotate_on_grant`), so they get no key that sealed what was published before they
    /// were added. Nothing can be sealed meanwhile: the caller holds the state lock.
    ///
    /// [`ReaderRecord::pending`]: crate::kdc::readers::ReaderRecord::pending
    async fn enable_pending_readers(
        &mut self,
        client: Option<&AsyncClient>,
    ) -> Result<(), PublisherError> {
        let Some(kdc) = &self.kdc else {
            return Ok(());
        };
        if !kdc.has_pending_readers()? {
            return Ok(());
        }
        self.admit_new_reader(client).await?;
        let epoch = self.session.epoch();
        if let Some(kdc) = &self.kdc {
            let enabled = kdc.enable_pending_readers(epoch)?;
            tracing::info!(readers = ?enabled, epoch, "KDC readers enabled");
        }
        Ok(())
    }

    /// Reads the revocation list file again and installs it if it changed. A list that
    /// cannot be read, is not signed by the CA, or is older than the one in force is
    /// reported in the log and ignored: the one in force stays (never none).
    fn reload_crl(&mut self) {
        let Some(crl) = &mut self.crl else {
            return;
        };
        let session = &mut self.session;
        if let Err(e) =
            crl.reload(|pem| session.set_revocation_list(pem).map_err(|e| e.to_string()))
        {
            tracing::error!(error = %e, "revocation list not reloaded; the one in force stays");
        }
    }

    /// Reloads the revocation list, then drops (and rotates away from) every grantee
    /// whose certificate no longer passes. See [`Publisher::check_readers`].
    async fn check_readers(&mut self, client: &AsyncClient) -> Result<Vec<String>, PublisherError> {
        self.reload_crl();
        let output = self.run(|s| s.check_readers(now_ms()))?;
        let removed = output.removed.clone();
        self.send(client, output, RekeyTimings::default()).await?;
        // Reported after the removals, which an out-of-date list does not hold up.
        self.session.check_crl_fresh(now_ms())?;
        Ok(removed)
    }

    async fn rotate(&mut self, client: &AsyncClient) -> Result<Rekey, PublisherError> {
        self.reload_crl();
        let output = self.run(|s| s.rotate(now_ms()))?;
        self.send(client, output, RekeyTimings::default()).await
    }
}

fn warn_dropped(id: &str, why: &str) {
    tracing::warn!(
        subscriber = id,
        reason = %why,
        "grant dropped: the certificate no longer verifies; the key rotates"
    );
}

/// Every `every`: reloads the revocation list and drops the grantees that fail their
/// certificate check (see [`Publisher::check_readers`]). Errors are logged: nothing is
/// sent then, and the next round tries again.
async fn check_periodically(inner: Arc<Mutex<Inner>>, client: AsyncClient, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and `connect` has just checked.
    tick.tick().await;
    loop {
        tick.tick().await;
        let mut inner = inner.lock().await;
        match inner.check_readers(&client).await {
            Ok(dropped) if !dropped.is_empty() => {
                tracing::info!(?dropped, epoch = inner.session.epoch(), "grantees dropped")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "checking the grantees failed"),
        }
    }
}

/// Every [`PENDING_READER_CHECK`]: enables the KDC readers that another process added
/// (see [`Inner::enable_pending_readers`]). Errors are logged (the readers stay pending,
/// and get no key) and the next round tries again.
async fn enable_pending_readers_periodically(inner: Arc<Mutex<Inner>>, client: AsyncClient) {
    let mut tick = tokio::time::interval(PENDING_READER_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut inner = inner.lock().await;
        if let Err(e) = inner.enable_pending_readers(Some(&client)).await {
            tracing::error!(error = %e, "enabling the KDC readers added meanwhile failed");
        }
    }
}

/// Prepares the next epoch until no reader lacks its key message (see
/// [`PublisherSession::preparation`]): the work is taken under the state lock, runs off
/// it on a blocking thread (all cores, through rayon), and goes back under the lock, so
/// publishing, grants and revocations go on meanwhile; work that a rotation overtook is
/// refused by the core, and the loop prepares the new epoch instead. One preparation at
/// a time (`preparing`). Returns how many key messages were added.
async fn prepare_next_epoch(
    inner: &Mutex<Inner>,
    preparing: &Mutex<()>,
) -> Result<usize, PublisherError> {
    let _one_at_a_time = preparing.lock().await;
    let mut added = 0;
    loop {
        let Some(work) = inner.lock().await.session.preparation(now_ms()) else {
            return Ok(added);
        };
        let done = tokio::task::spawn_blocking(move || work.run())
            .await
            .map_err(|e| PublisherError::PreparationStopped(e.to_string()))?;
        added += inner.lock().await.session.install_prepared(done)?;
    }
}

/// Prepares the next epoch each time `wake` is notified (after every rekey). A failure is
/// logged: the next rotation then wraps and signs for the readers not prepared for.
///
/// It starts once the event loop has written out what was handed to the MQTT client
/// before the wake-up (at most [`PREPARE_AFTER_WRITTEN_LIMIT`] later): the key messages
/// of the rekey that woke it leave first, and the preparation, which takes every core
/// for seconds at 10,000 readers, does not slow their delivery down.
async fn prepare_in_background(
    inner: Arc<Mutex<Inner>>,
    preparing: Arc<Mutex<()>>,
    wake: Arc<Notify>,
    outflow: Arc<Outflow>,
) {
    loop {
        wake.notified().await;
        outflow.written_out(PREPARE_AFTER_WRITTEN_LIMIT).await;
        match prepare_next_epoch(&inner, &preparing).await {
            Ok(added) if added > 0 => tracing::debug!(added, "next epoch prepared"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "preparing the next epoch failed"),
        }
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

fn unique_client_id(id: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{id}-{}-{nanos:x}", std::process::id())
}

/// Where the poller hands incoming messages `(topic, payload)` while grants are read
/// back ([`Publisher::confirm`]); none otherwise (the publisher subscribes to nothing
/// else, so there is nothing else to receive).
type Readback = Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<(String, Bytes)>>>>;

/// Polls the MQTT event loop until the publisher closes. Counts CONNACKs (`link`) so the
/// republisher knows when to send key messages again, and the PUBLISH packets written
/// out (`outflow`), and hands incoming messages to `readback`. Never publishes anything
/// new: it only sends again what a lost connection left unacknowledged.
async fn poll(
    mut eventloop: EventLoop,
    mut link: Link,
    closing: Arc<AtomicBool>,
    readback: Readback,
    outflow: Arc<Outflow>,
) {
    // What lost connections left unsent or unacknowledged, oldest first, to send again.
    // rumqttc keeps such requests in `pending` but forgets them when the next broker has
    // no session for this client (always with a clean session, and after failing over
    // to another broker), and it sends its `pending` all at once, past its in-flight
    // window: a publish whose packet identifier is still in use waits in a single slot,
    // which the next such publish overwrites. A lost connection can leave the whole
    // in-flight window unacknowledged and the request queue full (a cluster node stops
    // acknowledging while its stream elects a leader), and all but one of the queued
    // messages were lost that way. So the SDK keeps them, and hands rumqttc one at a
    // time, when it has room in its window and no publish waiting for a packet
    // identifier. A message that did arrive before is then a duplicate, which subscribers
    // drop (replay window).
    let mut unsent: VecDeque<Request> = VecDeque::new();
    loop {
        if eventloop.network.is_some()
            && eventloop.pending.is_empty()
            && eventloop.state.collision.is_none()
            && eventloop.state.inflight() < eventloop.mqtt_options.inflight()
        {
            if let Some(request) = unsent.pop_front() {
                eventloop.pending.push_back(request);
            }
        }
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => link.accepted(),
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if let Some(tx) = &*readback.lock().unwrap_or_else(|p| p.into_inner()) {
                    let _ = tx.send((publish.topic, publish.payload));
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) => {
                outflow.written.fetch_add(1, Ordering::SeqCst);
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
                // rumqttc has moved the in-flight and queued requests to `pending`: the
                // publishes are sent again from `unsent` (before those held back
                // earlier: they are older than what was queued, newer than what was in
                // flight, and the subscribers' replay window takes them in any order),
                // with new packet identifiers (a new session gives them new ones, and
                // the old ones would collide with those rumqttc hands out meanwhile).
                let mut lost = VecDeque::new();
                eventloop.pending.retain(|request| match request {
                    Request::Publish(p) if p.qos != QoS::AtMostOnce => {
                        let mut p = p.clone();
                        p.pkid = 0;
                        p.dup = false;
                        lost.push_back(Request::Publish(p));
                        false
                    }
                    _ => true,
                });
                lost.append(&mut unsent);
                unsent = lost;
                link.failed(&e).await;
            }
        }
    }
}

/// A message of a `publish` call, waiting in the outgoing queue for the next burst.
struct Queued {
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
    done: oneshot::Sender<Result<u64, PublisherError>>,
}

/// The outgoing queue: filled without waiting, emptied by the drain scheduled for it.
#[derive(Default)]
struct QueueState {
    /// Messages waiting for the next burst, in the order their calls queued them.
    messages: Vec<Queued>,
    /// A drain is spawned and has not yet taken the queue: it will take these messages.
    drain_scheduled: bool,
}

/// The outgoing queue, shared by the `publish` calls and the drains.
type Queue = Arc<std::sync::Mutex<QueueState>>;

fn lock_queue(queue: &Queue) -> std::sync::MutexGuard<'_, QueueState> {
    // A panic while pushing or taking leaves the queue intact: keep using it.
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The mark of a scheduled drain ([`QueueState::drain_scheduled`]), owned by that drain.
/// A drain that is dropped before it takes the queue (its runtime shut down while it
/// waited: it was spawned on the caller's runtime, which may be another, shorter-lived
/// one than the publisher's) clears the mark as it goes, so the next `publish` call
/// schedules a drain again, and that one takes the messages left behind.
struct Scheduled {
    /// `None` once the drain has taken the queue.
    queue: Option<Queue>,
}

impl Scheduled {
    fn new(queue: Queue) -> Scheduled {
        Scheduled { queue: Some(queue) }
    }

    /// Takes the queued messages and clears the mark, in one step under the queue's
    /// lock: a message queued from then on schedules the next drain.
    fn take(mut self) -> Vec<Queued> {
        let Some(queue) = self.queue.take() else {
            return Vec::new();
        };
        let mut queue = lock_queue(&queue);
        queue.drain_scheduled = false;
        std::mem::take(&mut queue.messages)
    }
}

impl Drop for Scheduled {
    fn drop(&mut self) {
        if let Some(queue) = &self.queue {
            lock_queue(queue).drain_scheduled = false;
        }
    }
}

/// One message to seal and send.
struct Outgoing<'a> {
    topic: &'a str,
    payload: &'a [u8],
    qos: QoS,
    retain: bool,
}

/// Takes the lock, then seals and sends everything queued by then as one burst. A
/// `publish` call that finds no drain scheduled spawns one after queuing; the drain
/// clears the mark as it takes the queue, so every queued message is taken by the drain
/// that was scheduled when it was queued, or by the one its own call spawned.
///
/// Before taking the queue, the drain yields to the scheduler once: the tasks that are
/// ready to run at that moment (other `publish` calls, above all) run first and queue
/// their messages, which then share this burst and its one signature. Nothing waits for
/// messages to come: with no other task ready, the yield returns at once and a lone
/// message is a burst of one.
async fn drain_queue(inner: Arc<Mutex<Inner>>, client: AsyncClient, scheduled: Scheduled) {
    let mut inner = inner.lock().await;
    tokio::task::yield_now().await;
    let batch = scheduled.take();
    if batch.is_empty() {
        return;
    }
    let items: Vec<Outgoing<'_>> = batch
        .iter()
        .map(|q| Outgoing {
            topic: &q.topic,
            payload: &q.payload,
            qos: q.qos,
            retain: q.retain,
        })
        .collect();
    let results = inner.seal_and_send(&client, &items).await;
    drop(items);
    for (queued, result) in batch.into_iter().zip(results) {
        // The caller may have stopped waiting; the message was handled all the same.
        let _ = queued.done.send(result);
    }
}

/// One error for each of `n` messages of a burst that failed as a whole: the first gets
/// it, the others its description.
fn spread(e: PublisherError, n: usize) -> Vec<Result<u64, PublisherError>> {
    let text = e.to_string();
    std::iter::once(Err(e))
        .chain((1..n).map(|_| Err(PublisherError::BurstFailed(text.clone()))))
        .take(n)
        .collect()
}
