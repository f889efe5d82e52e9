//! Helpers for sealpost's end-to-end tests: a real broker on an ephemeral loopback port,
//! a throwaway PKI, and raw MQTT clients that play spies and attackers.
//!
//! The broker is Mosquitto today (the SDKs must work over any broker); [`BrokerKind`]
//! leaves room for starting the sealpost broker the same way.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use sealpost_certs::{CertificateAuthority, Issued, Profile, Validity};
use sealpost_publisher::kdc::{KdcConfig, KdcCredentials};
use sealpost_publisher::{BrokerAddress, Publisher, PublisherConfig};
use sealpost_subscriber::{
    Event, KeyFetchFailure, Message, Rejection, Subscriber, SubscriberConfig,
};
use tempfile::TempDir;
use tokio::sync::mpsc;

/// Upper bound on any single wait in the tests, so nothing hangs.
pub const WAIT: Duration = Duration::from_secs(20);

/// Which broker to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// `mosquitto` from the system packages.
    Mosquitto,
}

/// A broker process on 127.0.0.1, killed on drop.
pub struct Broker {
    child: Child,
    /// Its TCP port.
    pub port: u16,
    /// Its WebSocket port, if it has one.
    pub ws_port: Option<u16>,
    conf: PathBuf,
    _dir: TempDir,
}

/// A port that was free a moment ago (never 1883: the OS picks from the ephemeral range).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

impl Broker {
    /// Starts a broker of `kind` and waits until it accepts connections.
    pub fn start(kind: BrokerKind) -> Broker {
        match kind {
            BrokerKind::Mosquitto => Broker::mosquitto(false),
        }
    }

    /// Starts Mosquitto, with a WebSocket listener too if `websocket`.
    pub fn mosquitto(websocket: bool) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let ws_port = websocket.then(free_port);
        let mut conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_packet_size 2000000\nmax_inflight_messages 0\nmax_queued_messages 100000\n\
             log_dest stderr\nlog_type error\n"
        );
        if let Some(ws) = ws_port {
            conf.push_str(&format!("listener {ws} 127.0.0.1\nprotocol websockets\n"));
        }
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, conf).expect("write mosquitto.conf");
        let broker = Broker {
            child: spawn_mosquitto(&path),
            port,
            ws_port,
            conf: path,
            _dir: dir,
        };
        broker.wait_ready();
        broker
    }

    /// Stops the broker (losing everything: no persistence) and starts it again on the
    /// same ports.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_mosquitto(&self.conf);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in std::iter::once(self.port).chain(self.ws_port) {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "broker did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Its TCP address.
    pub fn address(&self) -> BrokerAddress {
        BrokerAddress::Tcp {
            host: "127.0.0.1".into(),
            port: self.port,
        }
    }

    /// Its WebSocket address, if it has a WebSocket listener.
    pub fn ws_address(&self) -> Option<BrokerAddress> {
        self.ws_port.map(|port| BrokerAddress::Ws {
            url: format!("ws://127.0.0.1:{port}/mqtt"),
            port,
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_mosquitto(conf: &std::path::Path) -> Child {
    Command::new(mosquitto_binary())
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mosquitto (apt-get install mosquitto)")
}

fn mosquitto_binary() -> PathBuf {
    for candidate in ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"] {
        let p = PathBuf::from(candidate);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("mosquitto")
}

/// A throwaway CA with helpers to issue certificates.
pub struct Pki {
    /// The CA.
    pub ca: CertificateAuthority,
    /// Scratch directory for state directories.
    pub dir: TempDir,
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Pki {
        Pki {
            ca: CertificateAuthority::create(name, Validity::days_from_now(1)).expect("CA"),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.certificate_pem()
    }

    /// Issues a publisher certificate for `topics`.
    pub fn publisher(&self, id: &str, topics: &[&str]) -> Issued {
        self.ca
            .issue(
                &Profile::Publisher {
                    id: id.into(),
                    topics: topics.iter().map(|t| t.to_string()).collect(),
                },
                Validity::days_from_now(1),
            )
            .expect("issue publisher")
    }

    /// Issues a subscriber certificate.
    pub fn subscriber(&self, id: &str) -> Issued {
        self.ca
            .issue(
                &Profile::Subscriber { id: id.into() },
                Validity::days_from_now(1),
            )
            .expect("issue subscriber")
    }

    /// A state directory path unique to `name`.
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Publisher configuration for `issued` against `broker`, state in `state_dir(name)`.
    pub fn publisher_config(
        &self,
        broker: &Broker,
        issued: &Issued,
        name: &str,
    ) -> PublisherConfig {
        PublisherConfig::new(
            broker.address(),
            issued.certificate_pem.clone(),
            issued.private_key_pem.clone(),
            self.ca_pem(),
            self.state_dir(name),
        )
    }

    /// Subscriber configuration for `issued` against `broker` (short hold time so that
    /// messages without a key are rejected quickly).
    pub fn subscriber_config(&self, broker: &Broker, issued: &Issued) -> SubscriberConfig {
        let mut config = SubscriberConfig::new(
            broker.address(),
            issued.certificate_pem.clone(),
            issued.private_key_pem.clone(),
            self.ca_pem(),
        );
        config.hold_time = Duration::from_secs(2);
        config
    }
}

/// Connects a publisher, panicking on failure.
pub async fn publisher(config: PublisherConfig) -> Publisher {
    Publisher::connect(config)
        .await
        .expect("publisher connects")
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
        let mut options = MqttOptions::new(name, "127.0.0.1", broker.port);
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
    /// Issues a TLS server certificate (for a KDC) naming 127.0.0.1 and localhost.
    pub fn kdc_server(&self) -> Issued {
        self.ca
            .issue(
                &Profile::Server {
                    names: vec!["127.0.0.1".into(), "localhost".into()],
                },
                Validity::days_from_now(1),
            )
            .expect("issue KDC server certificate")
    }

    /// A KDC configuration on an ephemeral loopback port with a server certificate from
    /// this CA.
    pub fn kdc_config(&self) -> KdcConfig {
        let server = self.kdc_server();
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
