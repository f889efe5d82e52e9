//! Issue 19 item 1: failover in the SDKs. A publisher and a subscriber are given two
//! brokers; the one they use is stopped mid-stream (QoS 1); both move to the other, the
//! subscriber subscribes again, the publisher sends its key messages there (that broker
//! never saw them) and its recent messages again, and the application receives every
//! message exactly once (the duplicates are dropped by the replay window). A subscriber
//! that connects to the second broker afterwards reads too.
//!
//! On the sealpost broker over TLS (the SDKs' own TLS connection), and on Mosquitto over
//! plain TCP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sealpost_publisher::{BrokerAddress, QoS, RESEND_DELAY};
use sealpost_subscriber::{Event, LinkStatus, Subscriber, SubscriberConfig};
use sealpost_tests::{
    expect_message, free_port, publisher, spawn_numbered_stream, subscriber, Broker, BrokerKind,
    Pki, WAIT,
};

/// Messages in the stream, and how many the subscriber has read when the broker goes.
const STREAM: u64 = 600;
const STOP_AT: usize = 200;

/// The address the SDKs use on `broker`: TLS on sealpost's (certificates decide who
/// reads key messages there), TCP on Mosquitto.
fn address(broker: &Broker) -> BrokerAddress {
    match broker.kind {
        BrokerKind::Sealpost => broker.tls_address(),
        BrokerKind::Mosquitto => broker.address(),
    }
}

/// Reads until `counts` holds every message of the stream; panics on a message read
/// twice, or on a rejection other than a dropped duplicate. Returns the duplicates.
async fn read_stream(s: &mut Subscriber, counts: &mut BTreeMap<u64, u32>, until: usize) -> u64 {
    let mut duplicates = 0;
    while counts.len() < until {
        let event = tokio::time::timeout(WAIT, s.next())
            .await
            .unwrap_or_else(|_| panic!("stalled after {} messages", counts.len()))
            .expect("subscriber running");
        match event {
            Event::Message(m) => {
                let n: u64 = String::from_utf8(m.payload).unwrap().parse().unwrap();
                let seen = counts.entry(n).or_default();
                *seen += 1;
                assert_eq!(*seen, 1, "message {n} delivered twice");
            }
            Event::Rejected(r) if r.reason.kind() == "replayed" => duplicates += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    duplicates
}

async fn fail_over(kind: BrokerKind) {
    let pki = Pki::new("failover CA");
    let first = Broker::start(kind, &pki);
    let second = Broker::start(kind, &pki);
    let sensor = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let bob = pki.subscriber("bob");
    let mut config = pki.publisher_config(&first, &sensor, "pub");
    config.failover = vec![address(&second)];
    let p = Arc::new(publisher(config).await);
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    p.grant_pem(&bob.certificate_pem).await.unwrap();
    let mut config = pki.subscriber_config(&first, &alice);
    config.failover = vec![address(&second)];
    let mut s = subscriber(config, "sensors/#").await;

    // The stream: one message every 2 ms, whatever happens to the broker.
    let stream = spawn_numbered_stream(
        p.clone(),
        "sensors/t",
        STREAM,
        Some(Duration::from_millis(2)),
    );
    let mut counts = BTreeMap::new();
    read_stream(&mut s, &mut counts, STOP_AT).await;
    // Mid-stream: the broker both use goes away. Everything after this point can only
    // come through the second broker.
    tokio::task::block_in_place(|| drop(first));
    let duplicates = read_stream(&mut s, &mut counts, STREAM as usize).await;
    stream.await.unwrap();
    assert!(counts.values().all(|c| *c == 1));
    // The recent messages sent again after the failover are dropped, never delivered.
    let late = tokio::time::timeout(RESEND_DELAY * 3, async {
        loop {
            match s.next().await {
                Some(Event::Message(m)) => return Some(m),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await;
    assert!(late.is_err(), "delivered again: {late:?}");
    eprintln!("{kind:?}: {STREAM} messages once each; {duplicates} duplicates dropped");

    // A subscriber that has only ever known the second broker: the publisher sent its
    // key message there when it failed over.
    let mut b = subscriber(pki.subscriber_config(&second, &bob), "sensors/#").await;
    p.publish("sensors/t", b"after", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut b).await.payload, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_and_subscriber_fail_over_on_sealpost_brokers_losing_nothing() {
    fail_over(BrokerKind::Sealpost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_and_subscriber_fail_over_on_mosquitto_losing_nothing() {
    fail_over(BrokerKind::Mosquitto).await;
}

/// A publisher on `broker` that granted alice, and alice's configuration there with
/// `persistent_session` (and no client id yet).
async fn publisher_and_persistent_alice(
    pki: &Pki,
    broker: &Broker,
) -> (sealpost_publisher::Publisher, SubscriberConfig) {
    let sensor = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let p = publisher(pki.publisher_config(broker, &sensor, "pub")).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    let mut config = pki.subscriber_config(broker, &alice);
    config.persistent_session = true;
    (p, config)
}

/// A subscriber with `persistent_session` gets, when it comes back with the same client
/// id, the QoS 1 messages published while it was away (the broker kept its session);
/// without a client id it is refused at once. (On Mosquitto only: the sealpost broker
/// does not send a resumed session the retained key message again when the SDK
/// subscribes again, so the subscriber never gets its key; see broker/README.md.)
async fn a_persistent_session_keeps_what_was_published_while_away(kind: BrokerKind) {
    let pki = Pki::new("session CA");
    let broker = Broker::start(kind, &pki);
    let (p, mut config) = publisher_and_persistent_alice(&pki, &broker).await;
    assert!(matches!(
        Subscriber::connect(config.clone()).await,
        Err(sealpost_subscriber::SubscriberError::PersistentSessionWithoutClientId)
    ));
    config.client_id = Some("alice-kept".into());
    let s = subscriber(config.clone(), "sensors/#").await;
    s.disconnect().await.unwrap();
    for text in ["while away 1", "while away 2"] {
        p.publish("sensors/t", text.as_bytes(), QoS::AtLeastOnce, false)
            .await
            .unwrap();
    }
    let mut s = subscriber(config, "sensors/#").await;
    for text in ["while away 1", "while away 2"] {
        assert_eq!(expect_message(&mut s).await.payload, text.as_bytes());
    }
}

/// A persistent subscriber whose broker restarts without persistence reconnects to a
/// broker that has no session for it: it says so (a warning, and
/// `Counters::sessions_lost_total`), subscribes again and reads on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_the_broker_lost_is_reported() {
    let pki = Pki::new("session CA");
    let mut broker = Broker::start(BrokerKind::Mosquitto, &pki);
    let (p, mut config) = publisher_and_persistent_alice(&pki, &broker).await;
    config.client_id = Some("alice-lost".into());
    let mut s = subscriber(config, "sensors/#").await;
    p.publish("sensors/t", b"before", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut s).await.payload, b"before");
    assert_eq!(
        s.counters().sessions_lost_total(),
        0,
        "a first start is no loss"
    );

    let mut status = s.link_status();
    broker.restart();
    tokio::time::timeout(WAIT, async {
        while !matches!(*status.borrow_and_update(), LinkStatus::Reconnecting(_)) {
            status.changed().await.unwrap();
        }
        while !matches!(*status.borrow_and_update(), LinkStatus::Connected) {
            status.changed().await.unwrap();
        }
    })
    .await
    .expect("the subscriber reconnects");
    assert_eq!(s.counters().sessions_lost_total(), 1);
    // It subscribed again (and the publisher sent its key message again): it reads on.
    let mut after = None;
    for attempt in 0..40 {
        let text = format!("after {attempt}");
        p.publish("sensors/t", text.as_bytes(), QoS::AtLeastOnce, false)
            .await
            .unwrap();
        if let Ok(Some(Event::Message(m))) =
            tokio::time::timeout(Duration::from_millis(500), s.next()).await
        {
            after = Some(m);
            break;
        }
    }
    assert!(after
        .expect("read after the restart")
        .payload
        .starts_with(b"after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_keeps_messages_on_mosquitto() {
    a_persistent_session_keeps_what_was_published_while_away(BrokerKind::Mosquitto).await;
}

/// The first connection tries every address before it fails: a dead first broker is
/// skipped (its refusal named at debug level), the second one is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_connection_skips_a_dead_broker() {
    let pki = Pki::new("failover CA");
    let live = Broker::start(BrokerKind::Sealpost, &pki);
    let dead = BrokerAddress::Tls {
        host: "127.0.0.1".into(),
        port: free_port(),
    };
    let sensor = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let mut config = pki.publisher_config(&live, &sensor, "pub");
    config.failover = vec![config.broker.clone()];
    config.broker = dead.clone();
    let p = publisher(config).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    let mut config = pki.subscriber_config(&live, &alice);
    config.failover = vec![config.broker.clone()];
    config.broker = dead.clone();
    let mut s = subscriber(config, "sensors/#").await;
    p.publish("sensors/t", b"through the second", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut s).await.payload, b"through the second");

    // Only dead brokers: the first connection fails, naming each cause.
    let mut config = pki.subscriber_config(&live, &alice);
    config.broker = dead.clone();
    config.failover = vec![BrokerAddress::Tcp {
        host: "127.0.0.1".into(),
        port: free_port(),
    }];
    let e = Subscriber::connect(config).await.unwrap_err().to_string();
    assert!(e.contains("connection refused"), "{e}");
}

/// A broker that takes QoS 1 messages without acknowledging any until the publisher has
/// stopped sending (its in-flight window and its request queue full), then drops the
/// connection. From the next connection on it acknowledges everything, late (whenever
/// the client has paused for a moment, as a cluster node acknowledges once its stream
/// has stored), and hands each data envelope it receives to `received`. A node whose
/// stream lost its leader does the same: it stops acknowledging, then gives up on the
/// connection.
async fn stalling_broker(
    listener: tokio::net::TcpListener,
    received: tokio::sync::mpsc::UnboundedSender<bytes::Bytes>,
) {
    use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, PubAck, SubAck};
    use rumqttc::mqttbytes::v4::{SubscribeReasonCode, UnsubAck};
    use sealpost_tests::fake_broker::FakeConnection;

    let mut first = true;
    while let Ok((stream, _)) = listener.accept().await {
        let mut connection = FakeConnection::new(stream);
        let mut taken = 0usize;
        let mut unacked = Vec::new();
        loop {
            let pause = if first {
                Duration::from_millis(500)
            } else {
                Duration::from_millis(50)
            };
            let packet = match tokio::time::timeout(pause, connection.read()).await {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                // Stalled: give up once the publisher has had nothing more to send.
                Err(_) if first && taken > 0 => break,
                Err(_) => {
                    let acks = unacked
                        .drain(..)
                        .map(|pkid| Packet::PubAck(PubAck::new(pkid)));
                    if !connection.write(acks.collect::<Vec<_>>()).await {
                        break;
                    }
                    continue;
                }
            };
            let replies = match packet {
                Packet::Connect(_) => vec![Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::Success,
                    false,
                ))],
                Packet::Publish(_) if first => {
                    taken += 1;
                    vec![]
                }
                Packet::Publish(p) => {
                    if p.topic == "sensors/t" {
                        let _ = received.send(p.payload.clone());
                    }
                    if p.qos != QoS::AtMostOnce {
                        unacked.push(p.pkid);
                    }
                    vec![]
                }
                Packet::Subscribe(s) => {
                    let codes = s
                        .filters
                        .iter()
                        .map(|_| SubscribeReasonCode::Success(QoS::AtMostOnce))
                        .collect();
                    vec![Packet::SubAck(SubAck::new(s.pkid, codes))]
                }
                Packet::Unsubscribe(u) => vec![Packet::UnsubAck(UnsubAck::new(u.pkid))],
                Packet::PingReq => vec![Packet::PingResp],
                Packet::Disconnect => break,
                _ => vec![],
            };
            if !connection.write(replies).await {
                break;
            }
        }
        first = false;
    }
}

/// The loss found with the NATS cluster (issue 19): a broker stops acknowledging (a node
/// whose stream lost its leader) until the publisher's in-flight window (1,000) and
/// request queue (1,024) are full, then drops the connection. All of it must go out
/// again on the next connection: rumqttc would send it at once, past its in-flight
/// window, and its single slot for a packet identifier still in use kept only the last
/// of the messages that found theirs taken (1,023 consecutive messages lost). Every
/// message reaches the broker (the SDK's own resend of its last envelopes is off, so
/// that it cannot cover a loss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_resends_a_full_window_and_queue_after_its_broker_stalled() {
    const MESSAGES: usize = 3_000;
    let pki = Pki::new("stall CA");
    let sensor = pki.publisher("sensor-1", &["sensors/#"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let broker = tokio::spawn(stalling_broker(listener, tx));
    let mut config = pki.publisher_config_at(
        BrokerAddress::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        &sensor,
        "pub",
    );
    config.resend_window = 0;
    let p = Arc::new(publisher(config).await);
    let stream = spawn_numbered_stream(p.clone(), "sensors/t", MESSAGES as u64, None);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < MESSAGES {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(envelope)) => {
                seen.insert(envelope);
            }
            _ => panic!(
                "{} of {MESSAGES} messages reached the broker after the stall",
                seen.len()
            ),
        }
    }
    stream.await.unwrap();
    broker.abort();
}
