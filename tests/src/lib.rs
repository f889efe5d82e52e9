//! Helpers for sealpost's end-to-end tests: a real broker on an ephemeral loopback port,
//! a throwaway PKI, and raw MQTT clients that play spies and attackers.
//!
//! Every scenario runs on Mosquitto (the SDKs must work over any broker) and on the
//! sealpost broker ([`BrokerKind`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fake_broker;
pub mod fuzz;
pub mod nats;
pub mod tools;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use sealpost_broker::{BoundListener, ListenerKind};
use sealpost_certs::Issued;
use sealpost_publisher::kdc::{KdcConfig, KdcCredentials};
use sealpost_publisher::{BrokerAddress, Publisher, PublisherConfig, TlsIdentity};
use sealpost_subscriber::{
    Event, KeyFetchFailure, Message, Rejection, Subscriber, SubscriberConfig,
};
pub use sealpost_testkit::{write_server_certificate, TestPki};
use tempfile::TempDir;
use tokio::sync::mpsc;

/// Upper bound on any single wait in the tests, so nothing hangs.
pub const WAIT: Duration = Duration::from_secs(20);

/// Which broker to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// `mosquitto` from the system packages: proves the SDKs need nothing of ours.
    Mosquitto,
    /// The sealpost broker (`sealpost-broker`), in this process on its own runtime.
    Sealpost,
}

impl BrokerKind {
    /// Every broker the end-to-end scenarios run on.
    pub const ALL: [BrokerKind; 2] = [BrokerKind::Mosquitto, BrokerKind::Sealpost];
}

/// A broker on 127.0.0.1 with a plain TCP, a TLS and a WebSocket listener, stopped on
/// drop. Its TLS server certificate is issued by the [`Pki`] it was started with.
pub struct Broker {
    /// Which broker this is.
    pub kind: BrokerKind,
    /// Its TCP port.
    pub port: u16,
    /// Its TLS port.
    pub tls_port: u16,
    /// Its WebSocket port.
    pub ws_port: u16,
    backend: Backend,
    dir: TempDir,
}

enum Backend {
    Mosquitto { child: Child, conf: PathBuf },
    Sealpost(InProcess),
}

/// The sealpost broker running on a thread of its own with its own runtime, so that it
/// outlives no test and shares no scheduler with the clients under test.
struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    fn start(config: sealpost_broker::Config) -> (InProcess, Vec<BoundListener>) {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("broker runtime");
            runtime.block_on(async move {
                let broker = match sealpost_broker::Broker::start(config).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = bound_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = bound_tx.send(Ok(broker.listeners().to_vec()));
                let _ = stop_rx.await;
                broker.shutdown(Duration::from_secs(2)).await;
            });
        });
        let bound = bound_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("sealpost broker reports its listeners")
            .expect("sealpost broker starts");
        (
            InProcess {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            bound,
        )
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A port that was free a moment ago (never 1883: the OS picks from the ephemeral range).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// `n` distinct ephemeral loopback ports, free when this returns. They are bound all at
/// once, so no two are the same, which `free_port` called `n` times does not promise
/// (a three-node cluster once got one route port twice: "Duplicate route entry").
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound port").port())
        .collect()
}

impl Broker {
    /// Starts a broker of `kind` whose TLS certificate is issued by `pki`'s CA, and waits
    /// until it accepts connections. The sealpost broker also takes client certificates
    /// of that CA: publishers authenticate with theirs, because only a publisher's own
    /// certificate may write its key-message topics there.
    pub fn start(kind: BrokerKind, pki: &Pki) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = write_server_certificate(&pki.ca, dir.path());
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, pki.ca_pem()).expect("write CA");
        match kind {
            // Like the sealpost broker, Mosquitto is told to set TCP_NODELAY, so that the
            // benchmark's latencies measure the brokers rather than Nagle's algorithm.
            BrokerKind::Mosquitto => {
                // A port free_port() found may be taken by another test before Mosquitto
                // binds it (Mosquitto then exits: "Unable to create websockets
                // listener"): try again with other ports.
                for _attempt in 0..5 {
                    let [port, tls_port, ws_port] = free_ports(3)[..] else {
                        unreachable!("three ports")
                    };
                    let conf = format!(
                        "per_listener_settings false\nset_tcp_nodelay true\nallow_anonymous true\npersistence false\n\
                         max_packet_size 2000000\nmax_inflight_messages 0\n\
                         max_queued_messages 100000\nlog_dest stderr\nlog_type error\n\
                         listener {port} 127.0.0.1\n\
                         listener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\n\
                         listener {ws_port} 127.0.0.1\nprotocol websockets\n",
                        cert.display(),
                        key.display()
                    );
                    let path = dir.path().join("mosquitto.conf");
                    std::fs::write(&path, conf).expect("write mosquitto.conf");
                    let mut child = spawn_mosquitto(&path);
                    if !ports_open([port, tls_port, ws_port], || {
                        child.try_wait().ok().flatten().is_some()
                    }) {
                        continue;
                    }
                    return Broker {
                        kind,
                        port,
                        tls_port,
                        ws_port,
                        backend: Backend::Mosquitto { child, conf: path },
                        dir,
                    };
                }
                panic!("mosquitto did not start (five sets of ports tried)");
            }
            BrokerKind::Sealpost => {
                let config = sealpost_config([0, 0, 0], &cert, &key, &ca);
                let (process, bound) = InProcess::start(config);
                let port_of = |kind| {
                    bound
                        .iter()
                        .find(|l| l.kind == kind)
                        .map(|l| l.addr.port())
                        .expect("listener bound")
                };
                let broker = Broker {
                    kind,
                    port: port_of(ListenerKind::Tcp),
                    tls_port: port_of(ListenerKind::Tls),
                    ws_port: port_of(ListenerKind::Ws),
                    backend: Backend::Sealpost(process),
                    dir,
                };
                broker.wait_ready();
                broker
            }
        }
    }

    /// Stops the broker (losing everything: no persistence) and starts it again on the
    /// same ports.
    pub fn restart(&mut self) {
        let ports = [self.port, self.tls_port, self.ws_port];
        let dir = self.dir.path().to_owned();
        match &mut self.backend {
            Backend::Mosquitto { child, conf } => {
                let _ = child.kill();
                let _ = child.wait();
                *child = spawn_mosquitto(conf);
            }
            Backend::Sealpost(process) => {
                process.stop();
                let config = sealpost_config(
                    ports,
                    &dir.join("server.pem"),
                    &dir.join("server.key"),
                    &dir.join("ca.pem"),
                );
                *process = InProcess::start(config).0;
            }
        }
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let started = ports_open([self.port, self.tls_port, self.ws_port], || false);
        assert!(started, "broker did not start");
    }

    /// Its TCP address.
    pub fn address(&self) -> BrokerAddress {
        BrokerAddress::Tcp {
            host: "127.0.0.1".into(),
            port: self.port,
        }
    }

    /// Its TLS address (`mqtts://127.0.0.1:port`).
    pub fn tls_address(&self) -> BrokerAddress {
        BrokerAddress::Tls {
            host: "127.0.0.1".into(),
            port: self.tls_port,
        }
    }

    /// Its WebSocket address.
    pub fn ws_address(&self) -> BrokerAddress {
        BrokerAddress::Ws {
            url: format!("ws://127.0.0.1:{}/mqtt", self.ws_port),
            port: self.ws_port,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        match &mut self.backend {
            Backend::Mosquitto { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Backend::Sealpost(process) => process.stop(),
        }
    }
}

/// A password user of the sealpost broker whose own ACL rule lets it read alice's key
/// messages: how a reader without a TLS client certificate (a browser, over WebSocket)
/// gets its key messages there. User name and password.
pub const ALICE_WEB: (&str, &str) = ("alice-web", "alice-web-password");
/// Login of the X25519 subscriber `xavier` on the sealpost broker: an X25519 certificate
/// cannot be a TLS client certificate (X25519 does not sign), so this password user's rule
/// names xavier's key topics.
pub const XAVIER_HPKE: (&str, &str) = ("xavier", "xavier-password");
/// The X-Wing (post-quantum hybrid HPKE) subscriber's id and broker password, like
/// [`XAVIER_HPKE`].
pub const WANDA_XWING: (&str, &str) = ("wanda", "wanda-password");

/// The sealpost broker's configuration: TCP, TLS (client certificates of the test CA
/// optional) and WebSocket listeners on the given ports (0: any), anonymous clients
/// allowed, retained messages in memory only (a restart loses them, as with Mosquitto).
/// Key messages go to their recipients only (the broker's default): subscriber
/// certificates over TLS, and [`ALICE_WEB`], [`XAVIER_HPKE`] and [`WANDA_XWING`] by their
/// rules.
fn sealpost_config(ports: [u16; 3], cert: &Path, key: &Path, ca: &Path) -> sealpost_broker::Config {
    use sealpost_broker::config::{ListenerConfig, TlsConfig};
    let bind = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut config = sealpost_broker::Config {
        listeners: vec![
            ListenerConfig {
                kind: ListenerKind::Tcp,
                bind: bind(ports[0]),
                tls: None,
            },
            ListenerConfig {
                kind: ListenerKind::Tls,
                bind: bind(ports[1]),
                tls: Some(TlsConfig {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                    client_ca: Some(ca.to_owned()),
                    crl: None,
                    require_client_cert: false,
                }),
            },
            ListenerConfig {
                kind: ListenerKind::Ws,
                bind: bind(ports[2]),
                tls: None,
            },
        ],
        ..sealpost_broker::Config::default()
    };
    // Key messages for many subscribers and floods of small messages: the same room as
    // the Mosquitto configuration gives.
    config.limits.max_packet_size = 2_000_000;
    config.router.max_segment_size = 4 * 1024 * 1024;
    config.limits.max_queued_messages = 100_000;
    let passwd = ca.with_file_name("broker.passwd");
    let cheap = sealpost_broker::auth::HashCost {
        memory_kib: 64,
        iterations: 1,
    };
    sealpost_broker::auth::add_user(&passwd, ALICE_WEB.0, ALICE_WEB.1, cheap)
        .expect("write password file");
    for (user, password) in [XAVIER_HPKE, WANDA_XWING] {
        sealpost_broker::auth::add_user(&passwd, user, password, cheap)
            .expect("write password file");
        config.acl.rules.push(sealpost_broker::config::AclRule {
            identity: format!("user:{user}"),
            publish: Vec::new(),
            subscribe: vec!["sensors/#".into(), format!("sealpost/keys/+/{user}")],
        });
    }
    config.auth.password_file = Some(passwd);
    config.acl.rules.push(sealpost_broker::config::AclRule {
        identity: format!("user:{}", ALICE_WEB.0),
        publish: Vec::new(),
        subscribe: vec!["sensors/#".into(), "sealpost/keys/+/alice".into()],
    });
    config
}

fn spawn_mosquitto(conf: &Path) -> Child {
    Command::new(mosquitto_binary())
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mosquitto (apt-get install mosquitto)")
}

/// Waits until every port of `ports` on 127.0.0.1 accepts connections (true), or
/// `exited()` says the process that should open them has ended (false); panics after
/// 30 s (brokers start slowly on a loaded machine, never that slowly).
fn ports_open(ports: [u16; 3], mut exited: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    for port in ports {
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if exited() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "ports {ports:?} not open after 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    true
}

/// Path of the Debian-installed program `name`: the first of `dirs` that holds it, or
/// `name` alone (found on PATH).
pub fn installed_binary(name: &str, dirs: &[&str]) -> PathBuf {
    dirs.iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Path of the `mosquitto` broker binary.
pub fn mosquitto_binary() -> PathBuf {
    installed_binary("mosquitto", &["/usr/sbin", "/usr/local/sbin"])
}

/// A throwaway CA (the shared [`TestPki`], which it dereferences to) with the SDK
/// configurations the scenarios use.
pub struct Pki(TestPki);

impl std::ops::Deref for Pki {
    type Target = TestPki;

    fn deref(&self) -> &TestPki {
        &self.0
    }
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Pki {
        Pki(TestPki::new(name))
    }

    /// Around an existing CA ([`TestPki::with_ca`]).
    pub fn with_ca(ca: sealpost_certs::CertificateAuthority) -> Pki {
        Pki(TestPki::with_ca(ca))
    }

    /// Publisher configuration for `issued` against `broker`, state in `state_dir(name)`.
    ///
    /// On Mosquitto over plain TCP. On the sealpost broker over TLS with the publisher
    /// certificate as client certificate: its ACL lets only that certificate write the
    /// publisher's key-message topics (an anonymous publisher's key messages would be
    /// dropped, by design).
    pub fn publisher_config(
        &self,
        broker: &Broker,
        issued: &Issued,
        name: &str,
    ) -> PublisherConfig {
        let mut config = self.publisher_config_at(broker.address(), issued, name);
        if broker.kind == BrokerKind::Sealpost {
            config.broker = broker.tls_address();
            config.tls = Some(self.tls_identity(Some(issued)));
        }
        config
    }

    /// Publisher configuration for `issued` against any `address` (a scripted broker,
    /// say), with this CA's revocation list and state in `state_dir(name)`.
    pub fn publisher_config_at(
        &self,
        address: BrokerAddress,
        issued: &Issued,
        name: &str,
    ) -> PublisherConfig {
        let mut config = PublisherConfig::new(
            address,
            issued.certificate_pem.clone(),
            issued.private_key_pem.clone(),
            self.ca_pem(),
            self.state_dir(name),
        );
        config.crl = Some(self.crl_path());
        config
    }

    /// TLS settings trusting this CA, presenting `client`'s certificate if given.
    pub fn tls_identity(&self, client: Option<&Issued>) -> TlsIdentity {
        TlsIdentity {
            ca_pem: self.ca_pem(),
            client: client.map(|c| (c.certificate_pem.clone(), c.private_key_pem.clone())),
        }
    }

    /// Subscriber configuration for `issued` against `broker` (short hold time so that
    /// messages without a key are rejected quickly), with this CA's revocation list
    /// ([`TestPki::crl_path`]) and a state directory of its own: on Mosquitto over plain TCP,
    /// on the sealpost broker over TLS with the subscriber certificate as client certificate.
    pub fn subscriber_config(&self, broker: &Broker, issued: &Issued) -> SubscriberConfig {
        let mut config = SubscriberConfig::new(
            broker.address(),
            issued.certificate_pem.clone(),
            issued.private_key_pem.clone(),
            self.ca_pem(),
        );
        config.hold_time = Duration::from_secs(2);
        config.revocation_list = Some(self.crl_path());
        config.state_dir = Some(self.fresh_state_dir("sub"));
        if broker.kind == BrokerKind::Sealpost {
            // There key messages go only to their recipients: the subscriber presents its
            // certificate over TLS.
            config.broker = broker.tls_address();
            config.tls = Some(self.tls_identity(Some(issued)));
        }
        config
    }

    /// Subscriber configuration for a KEM subscriber, [`XAVIER_HPKE`] or [`WANDA_XWING`]
    /// (`user`; `issued` must be its certificate): like [`Pki::subscriber_config`], but on
    /// the sealpost broker over plain TCP as the password user whose rule names its key
    /// topics, since its certificate cannot authenticate a TLS client.
    pub fn kem_subscriber_config(
        &self,
        broker: &Broker,
        issued: &Issued,
        (user, password): (&str, &str),
    ) -> SubscriberConfig {
        let mut config = self.subscriber_config(broker, issued);
        if broker.kind == BrokerKind::Sealpost {
            config.broker = broker.address();
            config.tls = None;
            config.credentials = Some((user.into(), password.into()));
        }
        config
    }
}

/// Connects a publisher, panicking on failure.
pub async fn publisher(config: PublisherConfig) -> Publisher {
    Publisher::connect(config)
        .await
        .expect("publisher connects")
}

/// Publishes `0`, `1`, ... `count - 1` (as text) on `topic` at QoS 1 from a task of its
/// own, `pause` after each: the stream the failover tests break a broker under.
pub fn spawn_numbered_stream(
    publisher: std::sync::Arc<Publisher>,
    topic: &'static str,
    count: u64,
    pause: Option<Duration>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for n in 0..count {
            publisher
                .publish(topic, n.to_string().as_bytes(), QoS::AtLeastOnce, false)
                .await
                .expect("publish");
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
            }
        }
    })
}

/// Connects a subscriber and subscribes to `filter` at QoS 1.
pub async fn subscriber(config: SubscriberConfig, filter: &str) -> Subscriber {
    let mut s = Subscriber::connect(config)
        .await
        .expect("subscriber connects");
    s.subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    s
}

/// The next event, or a panic after [`WAIT`].
pub async fn next_event(s: &mut Subscriber) -> Event {
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("an event within the time limit")
        .expect("subscriber still running")
}

/// The next delivered message, or a panic (also on a rejection, which is printed).
pub async fn expect_message(s: &mut Subscriber) -> Message {
    match next_event(s).await {
        Event::Message(m) => m,
        Event::Rejected(r) => panic!("expected a message, got rejection {r:?}"),
        Event::KeyFetchFailed(f) => panic!("expected a message, got key fetch failure {f:?}"),
    }
}

/// The next rejection, or a panic (also on a delivered message).
pub async fn expect_rejection(s: &mut Subscriber) -> Rejection {
    match next_event(s).await {
        Event::Rejected(r) => r,
        Event::Message(m) => panic!("expected a rejection, got message {m:?}"),
        Event::KeyFetchFailed(f) => panic!("expected a rejection, got key fetch failure {f:?}"),
    }
}

/// A plain MQTT client without any key: sees what the broker forwards.
pub struct RawClient {
    /// The client, for publishing.
    pub client: AsyncClient,
    received: mpsc::UnboundedReceiver<(String, Bytes)>,
    task: tokio::task::JoinHandle<()>,
}

impl RawClient {
    /// Connects to `broker` and (if given) subscribes to `filter` at QoS 1.
    pub async fn connect(broker: &Broker, name: &str, filter: Option<&str>) -> RawClient {
        RawClient::connect_with(MqttOptions::new(name, "127.0.0.1", broker.port), filter).await
    }

    /// Connects with `options` and (if given) subscribes to `filter` at QoS 1.
    pub async fn connect_with(mut options: MqttOptions, filter: Option<&str>) -> RawClient {
        options.set_max_packet_size(2_000_000, 2_000_000);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let (tx, received) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic, p.payload));
                    }
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_) | Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        wait_ready(&mut ready_rx).await;
        if let Some(filter) = filter {
            client
                .subscribe(filter, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
            wait_ready(&mut ready_rx).await;
        }
        RawClient {
            client,
            received,
            task,
        }
    }

    /// Publishes raw bytes.
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>, qos: QoS) {
        self.client
            .publish_bytes(topic, qos, false, payload.into())
            .await
            .expect("raw publish");
    }

    /// The next message received on `topic`, skipping others.
    pub async fn next_on(&mut self, topic: &str) -> Bytes {
        loop {
            let (t, payload) = tokio::time::timeout(WAIT, self.received.recv())
                .await
                .expect("raw client receives within the time limit")
                .expect("raw client running");
            if t == topic {
                return payload;
            }
        }
    }

    /// Everything received up to and including the first message on `topic`.
    pub async fn collect_until(&mut self, topic: &str) -> Vec<(String, Bytes)> {
        let mut out = Vec::new();
        loop {
            let (t, payload) = tokio::time::timeout(WAIT, self.received.recv())
                .await
                .expect("raw client receives within the time limit")
                .expect("raw client running");
            let last = t == topic;
            out.push((t, payload));
            if last {
                return out;
            }
        }
    }

    /// Everything received so far.
    pub fn drain(&mut self) -> Vec<(String, Bytes)> {
        let mut out = Vec::new();
        while let Ok(m) = self.received.try_recv() {
            out.push(m);
        }
        out
    }
}

impl Drop for RawClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_ready(rx: &mut mpsc::UnboundedReceiver<()>) {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("raw client ready");
}

/// Does `haystack` contain `needle`?
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl Pki {
    /// A KDC configuration on an ephemeral loopback port with a server certificate from
    /// this CA.
    pub fn kdc_config(&self) -> KdcConfig {
        let server = self.server();
        KdcConfig::new(
            "127.0.0.1:0".parse().expect("loopback address"),
            server.certificate_pem,
            server.private_key_pem,
        )
    }

    /// Publisher configuration serving keys from a KDC only (no key messages).
    pub fn kdc_publisher_config(
        &self,
        broker: &Broker,
        issued: &Issued,
        name: &str,
    ) -> PublisherConfig {
        let mut config = self.publisher_config(broker, issued, name);
        config.key_messages = false;
        config.kdc = Some(self.kdc_config());
        config
    }

    /// Subscriber configuration that gets its keys from a KDC with `credentials` and
    /// holds no certificate (short hold time, like [`Pki::subscriber_config`]).
    pub fn kdc_subscriber_config(
        &self,
        broker: &Broker,
        credentials: KdcCredentials,
    ) -> SubscriberConfig {
        let mut config = SubscriberConfig::kdc_only(broker.address(), self.ca_pem(), credentials);
        config.hold_time = Duration::from_secs(2);
        config.revocation_list = Some(self.crl_path());
        config.state_dir = Some(self.fresh_state_dir("kdc-sub"));
        config
    }
}

/// The next key-fetch failure, or a panic (also on a delivered message).
pub async fn expect_fetch_failure(s: &mut Subscriber) -> KeyFetchFailure {
    loop {
        match next_event(s).await {
            Event::KeyFetchFailed(f) => return f,
            Event::Message(m) => panic!("expected a key fetch failure, got message {m:?}"),
            Event::Rejected(_) => {}
        }
    }
}
