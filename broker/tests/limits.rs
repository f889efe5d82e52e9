//! Resource limits an attacker would otherwise exhaust: subscriptions per client and the
//! work one SUBSCRIBE causes, failed password logins.

mod common;

use common::v5::{RawV5, V5};
use common::*;
use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, Subscribe as Subscribe5, SubscribeReasonCode};
use rumqttc::{Event, Packet, QoS, SubscribeFilter};
use std::time::{Duration, Instant};

/// `n` filters of which no two overlap: the worst case of the old overlap check, which
/// compared every pair again for each filter added.
fn disjoint_filters(n: usize) -> Vec<SubscribeFilter> {
    (0..n)
        .map(|i| SubscribeFilter::new(format!("many/{i}/x"), QoS::AtLeastOnce))
        .collect()
}

async fn suback(c: &mut V4) -> Vec<rumqttc::SubscribeReasonCode> {
    loop {
        match c.next().await.expect("SUBACK") {
            Event::Incoming(Packet::SubAck(s)) => return s.return_codes,
            _ => continue,
        }
    }
}

// Two worker threads: the broker runs in this process, and a SUBSCRIBE that stalled one
// worker used to stall the accept of the other client as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_with_1500_filters_is_answered_quickly_and_others_still_connect() {
    let mut config = tcp_config();
    config.limits.max_subscriptions_per_client = 2000;
    let (broker, addr) = start(config).await;
    let mut many = V4::connect("many-filters", addr).await;
    let started = Instant::now();
    many.client
        .subscribe_many(disjoint_filters(1500))
        .await
        .unwrap();
    // Another client connects while the SUBSCRIBE is being handled.
    let mut other = V4::start(v4_options("meanwhile", addr));
    tokio::time::timeout(Duration::from_secs(3), other.connack())
        .await
        .expect("another client connects within 3 s")
        .expect("CONNACK");
    let codes = tokio::time::timeout(Duration::from_secs(3), suback(&mut many))
        .await
        .expect("SUBACK for 1,500 filters within 3 s (took 19.5 s before)");
    let elapsed = started.elapsed();
    assert_eq!(codes.len(), 1500);
    assert!(codes
        .iter()
        .all(|c| *c == rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)));
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    // The subscriptions work.
    other
        .client
        .publish("many/1499/x", QoS::AtLeastOnce, false, b"last".to_vec())
        .await
        .unwrap();
    assert_eq!(&many.publish_msg().await.unwrap().payload[..], b"last");
    broker.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_the_filter_beyond_max_subscriptions_per_client_gets_0x80() {
    let (broker, addr) = start(tcp_config()).await;
    assert_eq!(
        sealpost_broker::Config::default()
            .limits
            .max_subscriptions_per_client,
        1000,
        "documented default"
    );
    let mut c = V4::connect("quota-v4", addr).await;
    c.client
        .subscribe_many(disjoint_filters(1001))
        .await
        .unwrap();
    let codes = suback(&mut c).await;
    assert_eq!(codes.len(), 1001);
    assert!(codes[..1000]
        .iter()
        .all(|c| *c == rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)));
    assert_eq!(codes[1000], rumqttc::SubscribeReasonCode::Failure);
    // At the quota: renewing a filter the client holds is allowed, a new one is not.
    let codes = c.subscribe("many/0/x", QoS::AtMostOnce).await;
    assert_eq!(
        codes,
        [rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    let codes = c.subscribe("one/more", QoS::AtMostOnce).await;
    assert_eq!(codes, [rumqttc::SubscribeReasonCode::Failure]);
    // Unsubscribing makes room again.
    c.client.unsubscribe("many/1/x").await.unwrap();
    let codes = c.subscribe("one/more", QoS::AtMostOnce).await;
    assert_eq!(
        codes,
        [rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    // The refused filter was not registered: nothing arrives on it.
    let publ = V4::connect("quota-v4-pub", addr).await;
    publ.client
        .publish("many/1000/x", QoS::AtLeastOnce, false, b"no".to_vec())
        .await
        .unwrap();
    publ.client
        .publish("one/more", QoS::AtLeastOnce, false, b"yes".to_vec())
        .await
        .unwrap();
    assert_eq!(&c.publish_msg().await.unwrap().payload[..], b"yes");
    broker.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_the_filter_beyond_max_subscriptions_per_client_gets_quota_exceeded() {
    let mut config = tcp_config();
    config.limits.max_subscriptions_per_client = 3;
    let (broker, addr) = start(config).await;
    let mut c = RawV5::connect(addr, "quota-v5", Default::default()).await;
    let filters = ["a/1", "a/2", "$share/g/a/3", "a/4"]
        .map(|f| common::v5::filter(f, rumqttc::v5::mqttbytes::QoS::AtLeastOnce));
    c.send(Packet5::Subscribe(Subscribe5::new_many(filters, None)))
        .await;
    match c.recv().await {
        Packet5::SubAck(ack) => {
            assert_eq!(
                ack.return_codes,
                [
                    SubscribeReasonCode::Success(rumqttc::v5::mqttbytes::QoS::AtLeastOnce),
                    SubscribeReasonCode::Success(rumqttc::v5::mqttbytes::QoS::AtLeastOnce),
                    SubscribeReasonCode::Success(rumqttc::v5::mqttbytes::QoS::AtLeastOnce),
                    SubscribeReasonCode::QuotaExceeded,
                ]
            );
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    // The client stays connected and its subscriptions work.
    let p = V5::connect("quota-v5-pub", addr).await;
    p.publish(
        "a/4",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        b"no",
    )
    .await;
    p.publish(
        "a/2",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        b"yes",
    )
    .await;
    assert_eq!(&c.publish_msg().await.payload[..], b"yes");
    broker.shutdown(WAIT).await;
}

/// A CONNECT with user name and password (`version` 4 or 5) from `source`, by hand so
/// that the source address can be chosen; returns the CONNACK's return/reason code.
async fn login_code(
    broker: std::net::SocketAddr,
    source: &str,
    version: u8,
    user: &str,
    password: &str,
) -> u8 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', version, 0xc2, 0, 30];
    if version == 5 {
        body.push(0); // no properties
    }
    for field in [&format!("login-{}", rand_id()), user, password] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    assert!(body.len() < 128);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(broker).await.unwrap();
    stream.write_all(&packet).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(WAIT, stream.read_exact(&mut connack))
        .await
        .expect("CONNACK in time")
        .expect("CONNACK");
    assert_eq!(connack[0], 0x20, "not a CONNACK");
    connack[3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_from_one_address_are_refused_without_checking_the_password() {
    use sealpost_broker::auth::{add_user, HashCost};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let cheap = HashCost {
        memory_kib: 64,
        iterations: 1,
    };
    add_user(&file, "alice", "alice-secret", cheap).unwrap();
    add_user(&file, "bob", "bob-secret", cheap).unwrap();
    let mut config = tcp_config();
    config.auth.allow_anonymous = false;
    config.auth.password_file = Some(file);
    config.auth.max_failed_logins = 3;
    config.auth.max_failed_logins_per_address = 5;
    let defaults = sealpost_broker::Config::default().auth;
    assert_eq!(
        (
            defaults.max_failed_logins,
            defaults.max_failed_logins_per_address,
            defaults.failed_login_window_secs
        ),
        (5, 20, 60),
        "documented defaults"
    );
    let (broker, addr) = start(config).await;
    let here = "127.0.0.1";
    // A right password does not count against anyone.
    assert_eq!(
        login_code(addr, here, 4, "alice", "alice-secret").await,
        0x00
    );
    for _ in 0..3 {
        assert_eq!(login_code(addr, here, 4, "alice", "guess").await, 0x04);
    }
    // The guesser cannot go on, not even with the right password: 3.1.1 0x03, 5 0x9F.
    assert_eq!(
        login_code(addr, here, 4, "alice", "alice-secret").await,
        0x03
    );
    assert_eq!(
        login_code(addr, here, 5, "alice", "alice-secret").await,
        0x9f
    );
    // Other user names from the address: until the address's total is reached.
    assert_eq!(login_code(addr, here, 4, "bob", "bob-secret").await, 0x00);
    assert_eq!(login_code(addr, here, 5, "bob", "guess").await, 0x86);
    assert_eq!(login_code(addr, here, 4, "carol", "guess").await, 0x04);
    assert_eq!(login_code(addr, here, 4, "bob", "bob-secret").await, 0x03);
    // Alice logs in from her own address: the guesser did not lock her out.
    assert_eq!(
        login_code(addr, "127.0.0.2", 4, "alice", "alice-secret").await,
        0x00
    );
    assert!(
        broker
            .metrics()
            .logins_throttled
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    broker.shutdown(WAIT).await;
}

// ------------------------------------------------------------------------------------
// Retained topics per identity, persistent sessions per identity (issue 13 item 4)

use rumqttc::v5::mqttbytes::v5::{
    ConnectProperties, ConnectReturnCode as Rc5, PubAckReason, Publish as Publish5,
};
use rumqttc::v5::mqttbytes::QoS as QoS5;

/// Publishes a QoS 1 retained message from a raw MQTT 5 client; returns the PUBACK's
/// reason.
async fn retain5(c: &mut RawV5, topic: &str, payload: &[u8], pkid: u16) -> PubAckReason {
    let mut p = Publish5::new(topic, QoS5::AtLeastOnce, payload.to_vec(), None);
    p.retain = true;
    p.pkid = pkid;
    c.send(Packet5::Publish(p)).await;
    match c.recv().await {
        Packet5::PubAck(a) => {
            assert_eq!(a.pkid, pkid);
            a.reason
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// The retained messages a new subscriber to `filter` gets, by topic.
async fn retained_topics(addr: std::net::SocketAddr, filter: &str) -> Vec<String> {
    let mut c = V4::connect(&format!("retained-reader-{}", rand_id()), addr).await;
    c.subscribe(filter, QoS::AtLeastOnce).await;
    let mut topics = Vec::new();
    while let Some(p) = c.maybe_publish(Duration::from_millis(500)).await {
        assert!(p.retain);
        topics.push(p.topic);
    }
    topics.sort();
    topics
}

#[tokio::test]
async fn v5_a_retained_topic_beyond_max_retained_per_client_gets_quota_exceeded() {
    let mut config = tcp_config();
    config.limits.max_retained_per_client = 3;
    let (broker, addr) = start(config).await;
    let mut c = RawV5::connect(addr, "retain-quota", Default::default()).await;
    for (i, topic) in ["r/1", "r/2", "r/3"].iter().enumerate() {
        assert_eq!(
            retain5(&mut c, topic, b"v", i as u16 + 1).await,
            PubAckReason::Success
        );
    }
    assert_eq!(
        retain5(&mut c, "r/4", b"v", 4).await,
        PubAckReason::QuotaExceeded
    );
    // Replacing one of its own is no new topic; deleting one frees a place.
    assert_eq!(retain5(&mut c, "r/1", b"w", 5).await, PubAckReason::Success);
    assert_eq!(retain5(&mut c, "r/2", b"", 6).await, PubAckReason::Success);
    assert_eq!(retain5(&mut c, "r/4", b"v", 7).await, PubAckReason::Success);
    assert_eq!(
        retain5(&mut c, "r/5", b"v", 8).await,
        PubAckReason::QuotaExceeded
    );
    assert_eq!(retained_topics(addr, "r/#").await, ["r/1", "r/3", "r/4"]);
    let metrics = broker.metrics();
    assert_eq!(
        metrics
            .retained_over_quota
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    broker.shutdown(WAIT).await;
}

/// MQTT 3.1.1 has no refusal: the message is acknowledged and not kept (nor delivered).
#[tokio::test]
async fn v311_a_retained_message_beyond_max_retained_per_client_is_not_kept() {
    let mut config = tcp_config();
    config.limits.max_retained_per_client = 2;
    let (broker, addr) = start(config).await;
    let mut live = V4::connect("retain-quota-live", addr).await;
    live.subscribe("r4/#", QoS::AtLeastOnce).await;
    let mut c = V4::connect("retain-quota-v4", addr).await;
    for i in 1..=4 {
        c.client
            .publish(format!("r4/{i}"), QoS::AtLeastOnce, true, b"v".to_vec())
            .await
            .unwrap();
    }
    let mut acks = 0;
    tokio::time::timeout(WAIT, async {
        while acks < 4 {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = c.next().await {
                acks += 1;
            }
        }
    })
    .await
    .expect("four PUBACKs");
    let mut delivered = Vec::new();
    while let Some(p) = live.maybe_publish(Duration::from_millis(500)).await {
        delivered.push(p.topic);
    }
    assert_eq!(delivered, ["r4/1", "r4/2"]);
    assert_eq!(retained_topics(addr, "r4/#").await, ["r4/1", "r4/2"]);
    broker.shutdown(WAIT).await;
}

/// Connects a raw MQTT 5 client with clean start and `expiry`; returns it and its
/// CONNACK code.
async fn connect_expiry(
    addr: std::net::SocketAddr,
    id: &str,
    clean: bool,
    expiry: u32,
) -> (RawV5, Rc5) {
    let connect = rumqttc::v5::mqttbytes::v5::Connect {
        keep_alive: 30,
        client_id: id.into(),
        clean_start: clean,
        properties: Some(ConnectProperties {
            session_expiry_interval: Some(expiry),
            ..ConnectProperties::new()
        }),
    };
    let mut bytes = bytes::BytesMut::new();
    Packet5::Connect(connect, None, None)
        .write(&mut bytes, None)
        .unwrap();
    let (c, ack) = RawV5::open(addr, &bytes).await;
    (c, ack.code)
}

#[tokio::test]
async fn v5_a_persistent_session_beyond_max_sessions_per_identity_gets_quota_exceeded() {
    let mut config = tcp_config();
    config.limits.max_sessions_per_identity = 2;
    let (broker, addr) = start(config).await;
    let (a, code) = connect_expiry(addr, "sess-a", true, 300).await;
    assert_eq!(code, Rc5::Success);
    let (_b, code) = connect_expiry(addr, "sess-b", true, 300).await;
    assert_eq!(code, Rc5::Success);
    // A session that ends with its connection is not limited.
    let (_d, code) = connect_expiry(addr, "sess-d", true, 0).await;
    assert_eq!(code, Rc5::Success);
    let (_, code) = connect_expiry(addr, "sess-c", true, 300).await;
    assert_eq!(code, Rc5::QuotaExceeded);
    // A session kept after its connection still counts; resuming it is allowed.
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, code) = connect_expiry(addr, "sess-c", true, 300).await;
    assert_eq!(code, Rc5::QuotaExceeded);
    let (a, code) = connect_expiry(addr, "sess-a", false, 300).await;
    assert_eq!(code, Rc5::Success);
    // Ending a session (clean start, expiry 0) frees its place.
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (a, code) = connect_expiry(addr, "sess-a", true, 0).await;
    assert_eq!(code, Rc5::Success);
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, code) = connect_expiry(addr, "sess-c", true, 300).await;
    assert_eq!(code, Rc5::Success);
    assert_eq!(
        broker
            .metrics()
            .sessions_over_quota
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    broker.shutdown(WAIT).await;
}

/// MQTT 3.1.1: clean session 0 beyond the limit gets 0x03 (server unavailable, its
/// nearest code).
#[tokio::test]
async fn v311_a_persistent_session_beyond_max_sessions_per_identity_is_refused() {
    let mut config = tcp_config();
    config.limits.max_sessions_per_identity = 1;
    let (broker, addr) = start(config).await;
    let mut o = v4_options("sess4-a", addr);
    o.set_clean_session(false);
    let mut a = V4::start(o);
    a.connack().await.expect("the first persistent session");
    let mut o = v4_options("sess4-b", addr);
    o.set_clean_session(false);
    let mut b = V4::start(o);
    let refused = b.connack().await.expect_err("a second persistent session");
    assert!(refused.contains("ServiceUnavailable"), "{refused}");
    // A clean session is not limited.
    V4::connect("sess4-c", addr).await;
    broker.shutdown(WAIT).await;
}
