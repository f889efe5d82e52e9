//! MQTT 5 test clients: a rumqttc v5 client, and a raw one that shows packets exactly as
//! the broker sent them.

use super::WAIT;
use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectProperties, Filter, Packet, Publish, Subscribe,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Options for a client of the broker at `addr`, with a 30 s keep-alive.
pub fn options(id: &str, addr: SocketAddr) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// A filter with MQTT's default options.
pub fn filter(path: &str, qos: QoS) -> Filter {
    Filter::new(path, qos)
}

/// A rumqttc v5 client whose event loop runs in its own task; dropping it closes the
/// socket without DISCONNECT, like a crash.
pub struct V5 {
    pub client: AsyncClient,
    /// The broker's CONNACK.
    pub connack: ConnAck,
    events: mpsc::UnboundedReceiver<Event>,
    /// PUBLISHes that arrived while waiting for something else: kept, never dropped,
    /// so that a message that must not arrive cannot slip by unseen.
    stash: VecDeque<Publish>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for V5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl V5 {
    /// Connects with default options (clean start).
    pub async fn connect(id: &str, addr: SocketAddr) -> V5 {
        V5::start(options(id, addr)).await
    }

    /// Connects with `o` and waits for the CONNACK.
    pub async fn start(o: MqttOptions) -> V5 {
        let (client, mut el) = AsyncClient::new(o, 100);
        let (tx, mut events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(e) = el.poll().await {
                if tx.send(e).is_err() {
                    return;
                }
            }
        });
        let connack = tokio::time::timeout(WAIT, async {
            loop {
                match events.recv().await {
                    Some(Event::Incoming(Packet::ConnAck(a))) => return a,
                    Some(_) => continue,
                    None => panic!("event loop ended before CONNACK"),
                }
            }
        })
        .await
        .expect("CONNACK in time");
        V5 {
            client,
            connack,
            events,
            stash: VecDeque::new(),
            task,
        }
    }

    /// The next packet `pred` accepts; PUBLISHes passed over are kept for
    /// [`V5::publish_msg`].
    pub async fn wait(&mut self, pred: impl Fn(&Packet) -> bool) -> Packet {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.events.recv().await {
                    Some(Event::Incoming(p)) if pred(&p) => return p,
                    Some(Event::Incoming(Packet::Publish(p))) => self.stash.push_back(p),
                    Some(_) => continue,
                    None => panic!("event loop ended"),
                }
            }
        })
        .await
        .expect("packet in time")
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: Filter) {
        self.client.subscribe_many([filter]).await.unwrap();
        self.wait(|p| matches!(p, Packet::SubAck(..))).await;
    }

    /// The next PUBLISH from the broker.
    pub async fn publish_msg(&mut self) -> Publish {
        if let Some(p) = self.stash.pop_front() {
            return p;
        }
        match self.wait(|p| matches!(p, Packet::Publish(..))).await {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }

    /// Asserts that this client gets nothing from an old subscription to `old`: it
    /// subscribes to `sentinel`, `publisher` sends to `old` and then to `sentinel` (QoS 1
    /// keeps their order), and the sentinel must be the first message to arrive.
    pub async fn assert_not_subscribed(
        &mut self,
        publisher: &AsyncClient,
        old: &str,
        sentinel: &str,
    ) {
        self.subscribe(filter(sentinel, QoS::AtLeastOnce)).await;
        for topic in [old, sentinel] {
            publisher
                .publish(topic, QoS::AtLeastOnce, false, topic.as_bytes().to_vec())
                .await
                .unwrap();
        }
        assert_eq!(self.publish_msg().await.topic, sentinel);
    }

    /// Publishes (without waiting for the acknowledgement).
    pub async fn publish(&self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .unwrap();
    }
}

/// A hand-driven MQTT 5 client over a raw socket, using rumqttc's packet codec: it shows
/// packets exactly as the broker sent them (topic aliases unresolved, no automatic
/// acknowledgements), for behaviours a full client library hides.
pub struct RawV5 {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawV5 {
    /// Connects with clean start and `props`.
    pub async fn connect(addr: SocketAddr, id: &str, props: ConnectProperties) -> RawV5 {
        let connect = Connect {
            keep_alive: 30,
            client_id: id.into(),
            clean_start: true,
            properties: Some(props),
        };
        RawV5::connect_with(addr, connect).await.0
    }

    /// Connects with the given CONNECT; returns the client and whether a session was
    /// present.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (RawV5, bool) {
        let mut bytes = BytesMut::new();
        Packet::Connect(connect, None, None)
            .write(&mut bytes, None)
            .unwrap();
        let (c, ack) = RawV5::open(addr, &bytes).await;
        (c, ack.session_present)
    }

    /// Sends `connect` (raw bytes of a CONNECT) and reads the CONNACK.
    pub async fn open(addr: SocketAddr, connect: &[u8]) -> (RawV5, ConnAck) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut c = RawV5 {
            stream,
            buf: BytesMut::new(),
        };
        c.send_bytes(connect).await;
        match c.next().await {
            Some(Packet::ConnAck(a)) => (c, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, None).unwrap();
        self.send_bytes(&out).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next packet; `None` when the broker closed the connection.
    pub async fn next(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, self.read_packet())
            .await
            .expect("packet or close in time")
    }

    /// The next packet, which must come.
    pub async fn recv(&mut self) -> Packet {
        self.next().await.expect("broker closed the connection")
    }

    /// The next packet, or `None` if none comes within `d`.
    pub async fn recv_within(&mut self, d: Duration) -> Option<Packet> {
        match tokio::time::timeout(d, self.read_packet()).await {
            Ok(Some(p)) => Some(p),
            Ok(None) => panic!("broker closed the connection"),
            Err(_) => None,
        }
    }

    async fn read_packet(&mut self) -> Option<Packet> {
        loop {
            // No size limit here: the test must see an oversized packet if one comes.
            match Packet::read(&mut self.buf, None) {
                Ok(p) => return Some(p),
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("undecodable packet from the broker: {e:?}"),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: Filter) {
        self.send(Packet::Subscribe(Subscribe::new(filter, None)))
            .await;
        let p = self.recv().await;
        assert!(matches!(p, Packet::SubAck(..)), "{p:?}");
    }

    /// The next packet, which must be a PUBLISH.
    pub async fn publish_msg(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Everything the broker sends until it closes the connection, as raw bytes.
    pub async fn rest(mut self) -> (Vec<u8>, bool) {
        let mut out = self.buf.to_vec();
        let (more, closed) = super::read_until_closed(&mut self.stream).await;
        out.extend(more);
        (out, closed)
    }
}
