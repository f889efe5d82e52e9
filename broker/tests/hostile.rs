//! Hostile and malformed input: the offending connection is closed, and the broker goes
//! on serving everyone else.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn hostile_config() -> sealpost_broker::Config {
    let mut c = tcp_config();
    c.limits.connect_timeout_ms = 500;
    c.limits.max_packet_size = 4096;
    c.router.max_segment_size = 64 * 1024;
    c
}

#[tokio::test]
async fn random_bytes_before_and_after_connect_are_survived() {
    let (broker, addr) = start(hostile_config()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ea1);
    for round in 0..40 {
        let len = rng.gen_range(1..3000);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if round % 2 == 1 {
            // After a valid CONNECT, so the junk reaches the packet decoder.
            let mut bytes =
                connect_packet(if round % 4 == 1 { 4 } else { 5 }, &format!("junk{round}"));
            bytes.append(&mut junk);
            junk = bytes;
        }
        // The sender then half-closes: a junk prefix that looks like the start of a
        // long packet may legitimately wait for more bytes, but never past end of stream.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&junk).await;
        let _ = s.shutdown().await;
        let (_, closed) = read_until_closed(&mut s).await;
        assert!(closed, "round {round}: junk connection left open");
    }
    assert_serving(addr).await;
    assert!(broker.metrics().malformed.load(Ordering::Relaxed) > 0);
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn truncated_packets_are_survived() {
    let (broker, addr) = start(hostile_config()).await;
    let connect = connect_packet(4, "trunc");
    // Half a CONNECT, then silence: closed by the connect timeout.
    let (reply, closed) = raw_exchange(addr, &connect[..connect.len() / 2]).await;
    assert!(reply.is_empty() && closed);
    // A PUBLISH announcing more bytes than ever arrive, then the peer goes away.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&connect).await.unwrap();
    s.write_all(&[0x30, 0x7f, 0x00, 0x03, b'a', b'/', b'b'])
        .await
        .unwrap();
    drop(s);
    // Every prefix of a valid SUBSCRIBE, each on its own connection, then close.
    let subscribe = [0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'b', 0x01];
    for cut in 1..subscribe.len() {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&connect).await.unwrap();
        s.write_all(&subscribe[..cut]).await.unwrap();
        drop(s);
    }
    assert_serving(addr).await;
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn server_only_packets_from_a_client_close_only_that_connection() {
    let (broker, addr) = start(hostile_config()).await;
    let connack = [0x20, 0x02, 0x00, 0x00];
    let server_only: [&[u8]; 4] = [
        &connack,
        &[0x90, 0x03, 0x00, 0x01, 0x00], // SUBACK
        &[0xb0, 0x02, 0x00, 0x01],       // UNSUBACK
        &[0xd0, 0x00],                   // PINGRESP
    ];
    for version in [4u8, 5] {
        // Instead of CONNECT: closed without any answer.
        let (reply, closed) = raw_exchange(addr, &connack).await;
        assert!(reply.is_empty() && closed);
        for packet in server_only {
            let mut bytes = connect_packet(version, &format!("srv-only-{version}"));
            bytes.extend_from_slice(packet);
            let (reply, closed) = raw_exchange(addr, &bytes).await;
            assert!(
                closed,
                "v{version}: connection left open after {packet:02x?}"
            );
            assert_eq!(reply[0], 0x20, "the CONNECT itself was answered");
            if version == 5 {
                // MQTT 5: a DISCONNECT with reason "protocol error" (0x82) or
                // "malformed packet" (0x81) follows the CONNACK.
                let tail = &reply[reply.len() - 3..];
                assert_eq!(&tail[..2], &[0xe0, 0x01], "DISCONNECT sent: {reply:02x?}");
                assert!(tail[2] == 0x81 || tail[2] == 0x82);
            }
        }
    }
    assert_serving(addr).await;
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn oversized_packets_are_refused_and_the_broker_keeps_serving() {
    let (broker, addr) = start(hostile_config()).await;
    // A v5 PUBLISH announcing 1 MiB: refused from its header alone.
    let mut bytes = connect_packet(5, "big5");
    bytes.extend_from_slice(&[0x30, 0x80, 0x80, 0x40]);
    let (reply, closed) = raw_exchange(addr, &bytes).await;
    assert!(closed);
    assert_eq!(
        &reply[reply.len() - 3..],
        &[0xe0, 0x01, 0x95],
        "DISCONNECT packet too large"
    );
    // A real client sending a payload over the limit is disconnected.
    let mut c = V4::connect("big4", addr).await;
    c.client
        .publish("big", rumqttc::QoS::AtMostOnce, false, vec![0u8; 8000])
        .await
        .unwrap();
    let mut disconnected = false;
    for _ in 0..20 {
        match c.next().await {
            Err(_) => {
                disconnected = true;
                break;
            }
            Ok(_) => continue,
        }
    }
    assert!(disconnected, "oversized publisher not disconnected");
    assert_serving(addr).await;
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_connection_flood_past_the_limit_is_refused_then_recovers() {
    let mut config = hostile_config();
    config.limits.max_connections = 5;
    let (broker, addr) = start(config).await;
    let mut silent = Vec::new();
    for _ in 0..25 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // The 20 connections over the limit are closed at once, the 5 silent ones by the
    // connect timeout: every one ends up closed.
    let mut closed = 0;
    for s in &mut silent {
        if read_until_closed(s).await.1 {
            closed += 1;
        }
    }
    assert_eq!(closed, 25);
    assert!(
        broker
            .metrics()
            .connections_rejected
            .load(Ordering::Relaxed)
            >= 20
    );
    assert!(broker.metrics().timeouts.load(Ordering::Relaxed) >= 5);
    drop(silent);
    let mut served = false;
    for _ in 0..50 {
        let mut c = V4::start(v4_options("after-flood", addr));
        if c.connack().await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served);
    assert_serving(addr).await;
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn invalid_topics_and_filters_are_rejected() {
    let (broker, addr) = start(hostile_config()).await;
    // PUBLISH to a topic containing a wildcard: connection closed.
    let mut bytes = connect_packet(4, "wild-pub");
    bytes.extend_from_slice(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#']);
    let (_, closed) = raw_exchange(addr, &bytes).await;
    assert!(closed);
    // SUBSCRIBE to an invalid filter and a `$` filter: failure codes, connection kept.
    // (rumqttc refuses to send an invalid filter, so this one is raw bytes.)
    let mut bytes = connect_packet(4, "bad-filter-raw");
    bytes.extend_from_slice(&[
        0x82, 0x0a, 0x00, 0x07, 0x00, 0x05, b'a', b'/', b'#', b'/', b'b', 0x00,
    ]);
    bytes.extend_from_slice(&[0xe0, 0x00]);
    let (reply, _) = raw_exchange(addr, &bytes).await;
    assert_eq!(
        &reply[4..],
        &[0x90, 0x03, 0x00, 0x07, 0x80],
        "SUBACK with failure 0x80"
    );
    let mut c = V4::connect("bad-filter", addr).await;
    let codes = c.subscribe("$SYS/#", rumqttc::QoS::AtMostOnce).await;
    assert_eq!(codes, vec![rumqttc::SubscribeReasonCode::Failure]);
    let codes = c.subscribe("ok/+", rumqttc::QoS::AtLeastOnce).await;
    assert_eq!(
        codes,
        vec![rumqttc::SubscribeReasonCode::Success(
            rumqttc::QoS::AtLeastOnce
        )]
    );
    assert_serving(addr).await;
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn unsupported_protocol_version_gets_return_code_1() {
    let (broker, addr) = start(hostile_config()).await;
    let mut p = connect_packet(4, "v3");
    p[8] = 3; // protocol level 3 with name MQTT
    let (reply, closed) = raw_exchange(addr, &p).await;
    assert_eq!(reply, vec![0x20, 0x02, 0x00, 0x01]);
    assert!(closed);
    broker.shutdown(WAIT).await;
}

/// rumqttd's router thread panics when a persistent session leaves a shared group as its
/// last member with an unacknowledged message, and then serves nobody: the edge refuses
/// shared subscriptions in sessions the router keeps (3.1.1: 0x80; 5: 0x9E).
#[tokio::test]
async fn a_persistent_session_cannot_stop_the_router_through_a_shared_subscription() {
    use rumqttc::{QoS, SubscribeReasonCode};
    let (broker, addr) = start(tcp_config()).await;
    let mut o = v4_options("shared-lazy", addr);
    o.set_clean_session(false);
    o.set_manual_acks(true);
    let mut lazy = V4::start(o);
    lazy.connack().await.unwrap();
    assert_eq!(
        lazy.subscribe("$share/g/lazy/t", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Failure]
    );
    // The same filter unshared keeps an unacknowledged message in flight.
    lazy.subscribe("lazy/t", QoS::AtLeastOnce).await;
    let p = V4::connect("lazy-pub", addr).await;
    for i in 0..5 {
        p.client
            .publish(
                "lazy/t",
                QoS::AtLeastOnce,
                false,
                format!("{i}").into_bytes(),
            )
            .await
            .unwrap();
    }
    let _ = lazy.publish_msg().await.unwrap();
    drop(lazy);
    // MQTT 5: clean start 0 keeps the router session even with session expiry 0.
    let mut o = common::v5::options("shared-lazy-5", addr);
    o.set_clean_start(false);
    let mut v5 = common::v5::V5::start(o).await;
    v5.client
        .subscribe("$share/g/lazy/t", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    match v5
        .wait(|p| matches!(p, rumqttc::v5::mqttbytes::v5::Packet::SubAck(..)))
        .await
    {
        rumqttc::v5::mqttbytes::v5::Packet::SubAck(s) => assert_eq!(
            s.return_codes,
            vec![rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::SharedSubscriptionsNotSupported]
        ),
        _ => unreachable!(),
    }
    drop(v5);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_serving(addr).await;
    broker.shutdown(WAIT).await;
}

/// rumqttd decided whether a topic begins with `$` by slicing off its first byte
/// (`protocol::matches`), which panics when the first character takes more bytes than
/// one: the router thread, and with it everyone's messages, stopped at the first such
/// topic matched against a filter (a PUBLISH, or a retained message a new subscription
/// is matched with). Topics in any script are valid MQTT (a UTF-8 string).
#[tokio::test]
async fn a_topic_that_begins_with_a_multibyte_character_is_routed() {
    use rumqttc::QoS;
    let (broker, addr) = start(tcp_config()).await;
    let mut sub = V4::connect("multibyte-sub", addr).await;
    sub.subscribe("#", QoS::AtLeastOnce).await;
    let p = V4::connect("multibyte-pub", addr).await;
    p.client
        .publish("é/x", QoS::AtLeastOnce, false, b"live".to_vec())
        .await
        .unwrap();
    let m = sub.publish_msg().await.unwrap();
    assert_eq!((&m.topic[..], &m.payload[..]), ("é/x", &b"live"[..]));
    p.client
        .publish("ñ/r", QoS::AtLeastOnce, true, b"kept".to_vec())
        .await
        .unwrap();
    let m = sub.publish_msg().await.unwrap();
    assert_eq!(&m.topic[..], "ñ/r");
    // A new filter, matched with the retained topic.
    let mut late = V4::connect("multibyte-late", addr).await;
    late.subscribe("+/r", QoS::AtLeastOnce).await;
    let m = late.publish_msg().await.unwrap();
    assert_eq!((&m.topic[..], &m.payload[..]), ("ñ/r", &b"kept"[..]));
    assert_serving(addr).await;
    broker.shutdown(WAIT).await;
}

/// One subscription to a filter of 32,000 levels (an MQTT string holds 65,535 bytes)
/// took a worker thread's stack through as the connection's tree of filters was walked
/// and dropped level by level, and the process aborted. Topic names and filters of more
/// than 200 levels (Mosquitto's limit too) are refused now, as invalid ones: the
/// filter in SUBACK, the topic name by closing the connection.
#[tokio::test]
async fn filters_and_topics_deeper_than_200_levels_are_refused_and_the_broker_goes_on() {
    use rumqttc::{QoS, SubscribeReasonCode};
    let (broker, addr) = start(tcp_config()).await;
    let mut sub = V4::connect("deep-sub", addr).await;
    assert_eq!(
        sub.subscribe(&vec!["a"; 32_000].join("/"), QoS::AtLeastOnce)
            .await,
        vec![SubscribeReasonCode::Failure]
    );
    assert_eq!(
        sub.subscribe(&vec!["+"; 201].join("/"), QoS::AtLeastOnce)
            .await,
        vec![SubscribeReasonCode::Failure]
    );
    // 200 levels are routed.
    let deepest = vec!["a"; 200].join("/");
    assert_eq!(
        sub.subscribe(&vec!["+"; 200].join("/"), QoS::AtLeastOnce)
            .await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let p = V4::connect("deep-pub", addr).await;
    p.client
        .publish(&deepest, QoS::AtLeastOnce, false, b"deep".to_vec())
        .await
        .unwrap();
    let m = sub.publish_msg().await.unwrap();
    assert_eq!((&m.topic[..], &m.payload[..]), (&deepest[..], &b"deep"[..]));
    // 201 levels: an invalid topic name.
    let mut too_deep = V4::connect("too-deep-pub", addr).await;
    too_deep
        .client
        .publish(
            vec!["a"; 201].join("/"),
            QoS::AtLeastOnce,
            false,
            b"x".to_vec(),
        )
        .await
        .unwrap();
    let closed = too_deep.publish_msg().await.unwrap_err();
    assert!(!closed.contains("timeout"), "connection closed: {closed}");
    assert_serving(addr).await;
    broker.shutdown(WAIT).await;
}
