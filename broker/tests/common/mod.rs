//! Helpers for tests that run a real broker on an ephemeral loopback port.
#![allow(dead_code)]

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sealpost_broker::config::{ListenerConfig, ListenerKind};
use sealpost_broker::{Broker, Config};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Upper bound for anything a test waits for, so no test can hang.
pub const WAIT: Duration = Duration::from_secs(10);

pub mod pki;
pub mod process;
pub mod v5;

pub fn tcp_config() -> Config {
    Config {
        listeners: vec![ListenerConfig {
            kind: ListenerKind::Tcp,
            bind: "127.0.0.1:0".parse().unwrap(),
            tls: None,
        }],
        ..Config::default()
    }
}

pub async fn start(config: Config) -> (Broker, SocketAddr) {
    let broker = Broker::start(config).await.expect("broker starts");
    let addr = broker.addr(ListenerKind::Tcp).expect("tcp listener");
    (broker, addr)
}

/// A rumqttc v4 client whose event loop runs in its own task.
pub struct V4 {
    pub client: AsyncClient,
    pub events: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for V4 {
    /// Dropping the client closes its socket at once (no DISCONNECT), like a crash.
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn v4_options(id: &str, addr: SocketAddr) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
    o
}

impl V4 {
    pub fn start(options: MqttOptions) -> V4 {
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(e) => {
                        if tx.send(Ok(e)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        V4 {
            client,
            events,
            task,
        }
    }

    pub async fn connect(id: &str, addr: SocketAddr) -> V4 {
        let mut c = V4::start(v4_options(id, addr));
        c.connack().await.expect("connected");
        c
    }

    /// Waits for the CONNACK; `Err` with the error text when the connection fails.
    pub async fn connack(&mut self) -> Result<rumqttc::ConnAck, String> {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.next().await? {
                    Event::Incoming(Packet::ConnAck(a)) => return Ok(a),
                    _ => continue,
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
    }

    pub async fn next(&mut self) -> Result<Event, String> {
        match tokio::time::timeout(WAIT, self.events.recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => Err("event loop ended".into()),
            Err(_) => Err("timeout".into()),
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.unwrap();
        tokio::time::timeout(WAIT, async {
            loop {
                match self.next().await.expect("suback") {
                    Event::Incoming(Packet::SubAck(s)) => return s.return_codes,
                    _ => continue,
                }
            }
        })
        .await
        .expect("SUBACK in time")
    }

    pub async fn publish_msg(&mut self) -> Result<rumqttc::Publish, String> {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.next().await? {
                    Event::Incoming(Packet::Publish(p)) => return Ok(p),
                    _ => continue,
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err("timeout waiting for PUBLISH".into()))
    }

    /// Waits up to `d` for a publish; `None` if none came.
    pub async fn maybe_publish(&mut self, d: Duration) -> Option<rumqttc::Publish> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(Event::Incoming(Packet::Publish(p))))) => return Some(p),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }
}

/// One series' value read from the broker's metrics endpoint at `metrics`.
pub async fn scrape_metric(metrics: SocketAddr, series: &str) -> u64 {
    let mut s = TcpStream::connect(metrics).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut body))
        .await
        .expect("metrics in time")
        .unwrap();
    let line = body
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {series} in {body}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Proves the broker still routes messages: a fresh subscriber and publisher exchange one.
pub async fn assert_serving(addr: SocketAddr) {
    let n: u64 = rand_id();
    let topic = format!("health/{n}");
    let mut sub = V4::connect(&format!("health-sub-{n}"), addr).await;
    sub.subscribe(&topic, QoS::AtLeastOnce).await;
    let publ = V4::connect(&format!("health-pub-{n}"), addr).await;
    publ.client
        .publish(&topic, QoS::AtLeastOnce, false, b"ok".to_vec())
        .await
        .unwrap();
    let p = sub.publish_msg().await.expect("broker still serving");
    assert_eq!(&p.payload[..], b"ok");
    let _ = publ.client.disconnect().await;
    let _ = sub.client.disconnect().await;
}

pub fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1_000_000
}

/// Encodes an MQTT 3.1.1 (level 4) or 5 CONNECT with clean session and keep-alive 30.
pub fn connect_packet(version: u8, client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', version, 0x02, 0, 30];
    if version == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

/// Reads until the server closes the connection (or `WAIT` passes); returns all bytes
/// and whether it closed.
pub async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// Opens a raw TCP connection, sends `bytes`, and reports what came back before close.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    read_until_closed(&mut s).await
}
