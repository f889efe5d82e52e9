//! Core edge behaviour with real clients: rumqttc v4/v5, keep-alive 0, QoS rules, slots.

mod common;

use common::*;
use rumqttc::QoS;
use std::time::Duration;

#[tokio::test]
async fn rumqttc_v4_pubsub_at_every_qos() {
    let (broker, addr) = start(tcp_config()).await;
    let mut sub = V4::connect("v4-sub", addr).await;
    sub.subscribe("t/#", QoS::ExactlyOnce).await;
    let publ = V4::connect("v4-pub", addr).await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publ.client
            .publish(format!("t/{i}"), qos, false, vec![i as u8; 10])
            .await
            .unwrap();
        let p = sub.publish_msg().await.unwrap();
        assert_eq!(p.topic, format!("t/{i}"));
        assert_eq!(p.qos, qos, "delivered at the publish QoS");
        assert_eq!(&p.payload[..], &[i as u8; 10][..]);
    }
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn rumqttc_v5_pubsub_and_properties_pass_through() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let (broker, addr) = start(tcp_config()).await;
    let mk = |id: &str| {
        let mut o = MqttOptions::new(id, "127.0.0.1", addr.port());
        o.set_keep_alive(Duration::from_secs(5));
        AsyncClient::new(o, 100)
    };
    let (sub, mut sub_el) = mk("v5-sub");
    let (publ, mut pub_el) = mk("v5-pub");
    sub.subscribe("v5/#", Q5::AtLeastOnce).await.unwrap();
    // Drive the subscriber until SUBACK.
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = sub_el.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .unwrap();
    tokio::spawn(async move { while pub_el.poll().await.is_ok() {} });
    let props = PublishProperties {
        content_type: Some("application/cose".into()),
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    publ.publish_with_properties("v5/a", Q5::AtLeastOnce, false, b"sealed".to_vec(), props)
        .await
        .unwrap();
    let p = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = sub_el.poll().await.unwrap() {
                break p;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&p.payload[..], b"sealed");
    assert_eq!(p.qos, Q5::AtLeastOnce);
    let props = p.properties.expect("properties forwarded");
    assert_eq!(props.content_type.as_deref(), Some("application/cose"));
    assert_eq!(
        props.user_properties,
        vec![("k".to_string(), "v".to_string())]
    );
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn keep_alive_zero_is_accepted() {
    let (broker, addr) = start(tcp_config()).await;
    let mut o = v4_options("ka0", addr);
    o.set_keep_alive(Duration::ZERO);
    let mut c = V4::start(o);
    let ack = c.connack().await.expect("keep-alive 0 accepted");
    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
    c.subscribe("ka0/t", QoS::AtMostOnce).await;
    c.client
        .publish("ka0/t", QoS::AtMostOnce, false, b"x".to_vec())
        .await
        .unwrap();
    assert_eq!(&c.publish_msg().await.unwrap().payload[..], b"x");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn delivery_qos_is_the_minimum_of_publish_and_subscription() {
    let (broker, addr) = start(tcp_config()).await;
    let mut s2 = V4::connect("min-s2", addr).await;
    s2.subscribe("m/2", QoS::ExactlyOnce).await;
    let mut s1 = V4::connect("min-s1", addr).await;
    s1.subscribe("m/1", QoS::AtLeastOnce).await;
    let mut s0 = V4::connect("min-s0", addr).await;
    s0.subscribe("m/0", QoS::AtMostOnce).await;
    let p = V4::connect("min-pub", addr).await;
    // (publish QoS, subscriber, expected delivery QoS)
    let cases = [
        (QoS::AtMostOnce, 2, QoS::AtMostOnce),
        (QoS::AtLeastOnce, 2, QoS::AtLeastOnce),
        (QoS::ExactlyOnce, 2, QoS::ExactlyOnce),
        (QoS::AtMostOnce, 1, QoS::AtMostOnce),
        (QoS::ExactlyOnce, 1, QoS::AtLeastOnce),
        (QoS::ExactlyOnce, 0, QoS::AtMostOnce),
    ];
    for (publish_qos, sub, expected) in cases {
        p.client
            .publish(format!("m/{sub}"), publish_qos, false, b"q".to_vec())
            .await
            .unwrap();
        let s = match sub {
            2 => &mut s2,
            1 => &mut s1,
            _ => &mut s0,
        };
        let got = s.publish_msg().await.unwrap();
        assert_eq!(got.qos, expected, "publish {publish_qos:?} to sub {sub}");
    }
    // More than the router's 100 in-flight window of downgraded messages must flow: the
    // edge acknowledges them to the router on the subscriber's behalf, in order.
    for i in 0..250u32 {
        let qos = if i % 3 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        p.client
            .publish("m/2", qos, false, i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    for i in 0..250u32 {
        let got = s2.publish_msg().await.unwrap();
        assert_eq!(&got.payload[..], &i.to_be_bytes());
        let expected = if i % 3 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        assert_eq!(got.qos, expected);
    }
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn connections_ending_abnormally_release_their_slots() {
    let mut config = tcp_config();
    config.limits.max_connections = 2;
    let (broker, addr) = start(config).await;
    // Far more abrupt endings than slots (edge permits and router slots alike): a leak
    // would make later connections fail.
    for i in 0..30 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(&connect_packet(
            if i % 2 == 0 { 4 } else { 5 },
            &format!("abrupt-{i}"),
        ))
        .await
        .unwrap();
        let mut ack = [0u8; 4];
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(WAIT, s.read_exact(&mut ack))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack[0], 0x20, "CONNACK");
        match i % 3 {
            0 => drop(s),
            1 => {
                // A client-sent CONNACK: a protocol violation mid-session.
                let _ = s.write_all(&[0x20, 0x02, 0x00, 0x00]).await;
                let _ = read_until_closed(&mut s).await;
            }
            _ => {
                let _ = s.write_all(&[0x30, 0x05, 0x00]).await; // truncated PUBLISH
                drop(s);
            }
        }
    }
    // Permits are returned when the tasks end; allow the edge a moment, boundedly.
    let mut ok = false;
    for _ in 0..50 {
        let mut c = V4::start(v4_options("after-abrupt", addr));
        if c.connack().await.is_ok() {
            ok = true;
            let _ = c.client.disconnect().await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a normal client could not connect after abrupt endings");
    assert_serving_with_limit(addr).await;
    broker.shutdown(WAIT).await;
}

/// With a limit of 2 connections, the health check's two clients just fit.
async fn assert_serving_with_limit(addr: std::net::SocketAddr) {
    for _ in 0..50 {
        if broker_has_room(addr).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_serving(addr).await;
}

async fn broker_has_room(addr: std::net::SocketAddr) -> bool {
    let mut a = V4::start(v4_options("room-a", addr));
    let mut b = V4::start(v4_options("room-b", addr));
    let ok = a.connack().await.is_ok() && b.connack().await.is_ok();
    let _ = a.client.disconnect().await;
    let _ = b.client.disconnect().await;
    ok
}

#[tokio::test]
async fn empty_client_id_gets_an_assigned_id_or_identifier_rejected() {
    let (broker, addr) = start(tcp_config()).await;
    // 3.1.1, clean session: accepted.
    let (reply, _) = raw_exchange_with_disconnect(addr, &connect_packet(4, "")).await;
    assert_eq!(&reply[..4], &[0x20, 0x02, 0x00, 0x00]);
    // 3.1.1, persistent session without id: identifier rejected (return code 2).
    let mut p = connect_packet(4, "");
    p[9] = 0x00; // connect flags: clean session off
    let (reply, closed) = raw_exchange(addr, &p).await;
    assert_eq!(reply, vec![0x20, 0x02, 0x00, 0x02]);
    assert!(closed);
    broker.shutdown(WAIT).await;
}

async fn raw_exchange_with_disconnect(
    addr: std::net::SocketAddr,
    connect: &[u8],
) -> (Vec<u8>, bool) {
    let mut bytes = connect.to_vec();
    bytes.extend_from_slice(&[0xe0, 0x00]);
    raw_exchange(addr, &bytes).await
}

#[tokio::test]
async fn client_ids_with_router_reserved_characters_work_and_stay_distinct() {
    let (broker, addr) = start(tcp_config()).await;
    let mut a = V4::connect("dev/1#x", addr).await;
    let mut b = V4::connect("dev%2F1#x", addr).await;
    a.subscribe("ids/a", QoS::AtMostOnce).await;
    b.subscribe("ids/b", QoS::AtMostOnce).await;
    a.client
        .publish("ids/b", QoS::AtMostOnce, false, b"1".to_vec())
        .await
        .unwrap();
    assert_eq!(&b.publish_msg().await.unwrap().payload[..], b"1");
    b.client
        .publish("ids/a", QoS::AtMostOnce, false, b"2".to_vec())
        .await
        .unwrap();
    assert_eq!(&a.publish_msg().await.unwrap().payload[..], b"2");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn last_will_is_published_on_abnormal_close_only() {
    let (broker, addr) = start(tcp_config()).await;
    let mut watcher = V4::connect("will-watch", addr).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    for (id, clean) in [("will-clean", true), ("will-abrupt", false)] {
        let mut o = v4_options(id, addr);
        o.set_last_will(rumqttc::LastWill::new(
            format!("wills/{id}"),
            "gone",
            QoS::AtLeastOnce,
            false,
        ));
        let mut c = V4::start(o);
        c.connack().await.unwrap();
        if clean {
            c.client.disconnect().await.unwrap();
            // Drive the event loop until it has sent DISCONNECT.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while c.next().await.is_ok() {}
            })
            .await;
        } else {
            drop(c); // event loop task ends with the channel; socket closes without DISCONNECT
        }
    }
    let w = watcher.publish_msg().await.unwrap();
    assert_eq!(w.topic, "wills/will-abrupt");
    assert_eq!(&w.payload[..], b"gone");
    assert!(watcher
        .maybe_publish(Duration::from_millis(500))
        .await
        .is_none());
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_client_over_the_inflight_limit_is_slowed_down_not_dropped() {
    let mut config = tcp_config();
    config.limits.max_inflight = 5;
    let (broker, addr) = start(config).await;
    let mut sub = V4::connect("slow-sub", addr).await;
    sub.subscribe("flow/#", QoS::AtLeastOnce).await;
    // rumqttc keeps up to 100 QoS 1 publishes in flight, far over the limit of 5.
    let p = V4::connect("fast-pub", addr).await;
    for i in 0..300u32 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        p.client
            .publish("flow/t", qos, false, i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    // QoS 2 messages enter the router at PUBREL, so QoS 1 and 2 may interleave
    // differently; every message must arrive exactly once.
    let mut got = Vec::new();
    for _ in 0..300u32 {
        let m = sub.publish_msg().await.unwrap();
        got.push(u32::from_be_bytes(m.payload[..].try_into().unwrap()));
    }
    got.sort_unstable();
    assert_eq!(got, (0..300).collect::<Vec<_>>());
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn persistent_sessions_keep_subscriptions_and_queue_messages() {
    let (broker, addr) = start(tcp_config()).await;
    let persistent = |addr| {
        let mut o = v4_options("persistent-sub", addr);
        o.set_clean_session(false);
        o
    };
    let mut s = V4::start(persistent(addr));
    assert!(!s.connack().await.unwrap().session_present);
    s.subscribe("offline/t", QoS::AtLeastOnce).await;
    s.client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while s.next().await.is_ok() {}
    })
    .await;
    drop(s);
    let p = V4::connect("offline-pub", addr).await;
    p.client
        .publish("offline/t", QoS::AtLeastOnce, false, b"while away".to_vec())
        .await
        .unwrap();
    // Make sure the publish went through before the subscriber comes back.
    let mut probe = V4::connect("offline-probe", addr).await;
    probe.subscribe("offline/probe", QoS::AtLeastOnce).await;
    p.client
        .publish("offline/probe", QoS::AtLeastOnce, false, b"p".to_vec())
        .await
        .unwrap();
    probe.publish_msg().await.unwrap();
    let mut s = V4::start(persistent(addr));
    assert!(s.connack().await.unwrap().session_present);
    let m = s.publish_msg().await.unwrap();
    assert_eq!(&m.payload[..], b"while away");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let (broker, addr) = start(tcp_config()).await;
    let mut first = V4::connect("same-id", addr).await;
    let mut second = V4::connect("same-id", addr).await;
    // The first connection is closed by the broker.
    let mut closed = false;
    for _ in 0..10 {
        if first.next().await.is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed, "old connection kept open after takeover");
    second.subscribe("takeover/t", QoS::AtMostOnce).await;
    second
        .client
        .publish("takeover/t", QoS::AtMostOnce, false, b"x".to_vec())
        .await
        .unwrap();
    assert_eq!(&second.publish_msg().await.unwrap().payload[..], b"x");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_one_and_a_half_keep_alives() {
    let (broker, addr) = start(tcp_config()).await;
    let mut p = connect_packet(4, "sleepy");
    p[11] = 1; // keep-alive 1 s
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    s.write_all(&p).await.unwrap();
    let (reply, closed) = read_until_closed(&mut s).await;
    assert_eq!(reply, vec![0x20, 0x02, 0x00, 0x00]);
    assert!(closed, "keep-alive not enforced");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_client_that_keeps_speaking_is_not_closed_by_its_keep_alive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (broker, addr) = start(tcp_config()).await;
    let mut p = connect_packet(4, "chatty");
    p[11] = 1; // keep-alive 1 s: closed after 1.5 s of silence
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&p).await.unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00]);
    // 3 s of PINGREQs every 0.5 s: twice the keep-alive window, each answered.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.write_all(&[0xc0, 0x00]).await.unwrap();
        let mut resp = [0u8; 2];
        tokio::time::timeout(WAIT, s.read_exact(&mut resp))
            .await
            .expect("no PINGRESP: closed although the client kept speaking")
            .unwrap();
        assert_eq!(resp, [0xd0, 0x00]);
    }
    // Then silence: closed, and not before 1.5 s.
    let silent = tokio::time::Instant::now();
    let (rest, closed) = read_until_closed(&mut s).await;
    assert!(closed && rest.is_empty(), "keep-alive not enforced");
    assert!(silent.elapsed() >= Duration::from_millis(1400));
    broker.shutdown(WAIT).await;
}

const LINKED: &str = "sealpost_connections_linked";

/// A broker whose quiet publish-only connections give their router link back after
/// 300 ms, with the metrics endpoint on.
fn quick_link_release_config() -> sealpost_broker::Config {
    let mut config = tcp_config();
    config.limits.router_link_idle_ms = 300;
    config.metrics.bind = Some("127.0.0.1:0".parse().unwrap());
    config
}

/// Waits until the metrics say `n` connections hold a router link.
async fn until_linked(metrics: std::net::SocketAddr, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while scrape_metric(metrics, LINKED).await != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{LINKED} never reached {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `range` at QoS 1 as `p` and waits for every PUBACK.
async fn publish_acknowledged(p: &mut V4, range: std::ops::Range<u32>) {
    for i in range.clone() {
        p.client
            .publish("links/t", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    let mut acked = 0;
    while acked < range.len() {
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = p.next().await.unwrap() {
            acked += 1;
        }
    }
}

#[tokio::test]
async fn a_quiet_publish_only_connection_gives_its_router_link_back_and_loses_nothing() {
    let (broker, addr) = start(quick_link_release_config()).await;
    let metrics = broker.metrics_addr().unwrap();
    let mut s = V4::connect("links-sub", addr).await;
    s.subscribe("links/t", QoS::AtLeastOnce).await;
    let mut p = V4::connect("links-pub", addr).await;
    // A connection that has only connected holds no link; the subscriber holds one.
    until_linked(metrics, 1).await;
    publish_acknowledged(&mut p, 0..50).await;
    assert_eq!(scrape_metric(metrics, LINKED).await, 2, "publishing links");
    // Quiet: the publisher gives its link back and keeps its connection.
    until_linked(metrics, 1).await;
    publish_acknowledged(&mut p, 50..100).await;
    for i in 0..100u32 {
        let m = s.publish_msg().await.unwrap();
        assert_eq!(&m.payload[..], &i.to_be_bytes(), "message {i} out of order");
    }
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_connection_without_a_router_link_is_taken_over_and_its_will_published() {
    use common::v5::RawV5;
    use rumqttc::v5::mqttbytes::v5::{Connect, LastWill, Packet};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let (broker, addr) = start(quick_link_release_config()).await;
    let metrics = broker.metrics_addr().unwrap();
    let mut watcher = V4::connect("links-watcher", addr).await;
    watcher.subscribe("links/will", QoS::AtLeastOnce).await;
    let mut bytes = bytes::BytesMut::new();
    let connect = Connect {
        keep_alive: 30,
        client_id: "links-same".into(),
        clean_start: true,
        properties: None,
    };
    let will = LastWill::new("links/will", "gone", Q5::AtLeastOnce, false, None);
    Packet::Connect(connect, Some(will), None)
        .write(&mut bytes, None)
        .unwrap();
    let (first, _) = RawV5::open(addr, &bytes).await;
    // Only the watcher holds a link: the router knows nothing of the first connection.
    until_linked(metrics, 1).await;
    let mut second = V4::connect("links-same", addr).await;
    // DISCONNECT 0x8E (session taken over), then the connection is closed.
    assert_eq!(first.rest().await, (vec![0xe0, 0x01, 0x8e], true));
    assert_eq!(&watcher.publish_msg().await.unwrap().payload[..], b"gone");
    // The new connection works, links and all.
    second.subscribe("links/t", QoS::AtMostOnce).await;
    second
        .client
        .publish("links/t", QoS::AtMostOnce, false, b"x".to_vec())
        .await
        .unwrap();
    assert_eq!(&second.publish_msg().await.unwrap().payload[..], b"x");
    broker.shutdown(WAIT).await;
}

/// A raw 3.1.1 connection as `id`, CONNACK read.
async fn raw_v4(addr: std::net::SocketAddr, id: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&connect_packet(4, id)).await.unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "connected");
    s
}

/// A 3.1.1 PUBLISH at `qos` (1 or 2) with packet id `pkid` and a 4-byte payload.
fn qos_publish(topic: &str, qos: u8, pkid: u16, payload: u32) -> Vec<u8> {
    let mut p = vec![0x30 | qos << 1, (2 + topic.len() + 2 + 4) as u8];
    p.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    p.extend_from_slice(topic.as_bytes());
    p.extend_from_slice(&pkid.to_be_bytes());
    p.extend_from_slice(&payload.to_be_bytes());
    p
}

/// Reads `n` acknowledgements (PUBACK, PUBREC, PUBCOMP: 4 bytes each) as (first byte,
/// packet id).
async fn read_acks(s: &mut tokio::net::TcpStream, n: usize) -> Vec<(u8, u16)> {
    use tokio::io::AsyncReadExt;
    let mut acks = vec![0u8; 4 * n];
    tokio::time::timeout(WAIT, s.read_exact(&mut acks))
        .await
        .expect("acknowledged in time")
        .unwrap();
    acks.chunks(4)
        .map(|a| {
            assert_eq!(a[1], 2, "an acknowledgement: {a:?}");
            (a[0], u16::from_be_bytes([a[2], a[3]]))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_only_connections_sending_now_and_then_share_one_router_link() {
    use tokio::io::AsyncWriteExt;
    let (broker, addr) = start(quick_link_release_config()).await;
    let metrics = broker.metrics_addr().unwrap();
    let mut sub = V4::connect("share-sub", addr).await;
    sub.subscribe("share/#", QoS::AtLeastOnce).await;
    until_linked(metrics, 1).await;
    // Twelve connections publish a message at a time, each with the same packet ids,
    // concurrently; one of them at QoS 2.
    let rounds = 3u16;
    let publishers = (0..12u32).map(|i| async move {
        let mut s = raw_v4(addr, &format!("share-pub-{i}")).await;
        let qos = if i == 0 { 2 } else { 1 };
        for round in 0..rounds {
            let pkid = round + 1;
            let payload = i * 100 + u32::from(round);
            s.write_all(&qos_publish(&format!("share/{i}"), qos, pkid, payload))
                .await
                .unwrap();
            if qos == 2 {
                assert_eq!(read_acks(&mut s, 1).await, [(0x50, pkid)], "PUBREC");
                s.write_all(&[0x62, 2, 0, pkid as u8]).await.unwrap();
                assert_eq!(read_acks(&mut s, 1).await, [(0x70, pkid)], "PUBCOMP");
            } else {
                assert_eq!(read_acks(&mut s, 1).await, [(0x40, pkid)], "PUBACK");
            }
        }
        s
    });
    let connections = futures_util::future::join_all(publishers).await;
    // None of them took a link of its own: the subscriber's is the only one.
    assert_eq!(scrape_metric(metrics, LINKED).await, 1, "links held");
    let mut got = std::collections::BTreeSet::new();
    for _ in 0..12 * rounds {
        let m = sub.publish_msg().await.unwrap();
        got.insert(u32::from_be_bytes(m.payload[..].try_into().unwrap()));
    }
    let sent: std::collections::BTreeSet<u32> = (0..12u32)
        .flat_map(|i| (0..u32::from(rounds)).map(move |r| i * 100 + r))
        .collect();
    assert_eq!(got, sent);
    drop(connections);
    broker.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_speeds_up_gets_its_pubacks_and_messages_in_order() {
    use tokio::io::AsyncWriteExt;
    let (broker, addr) = start(quick_link_release_config()).await;
    let mut sub = V4::connect("speed-sub", addr).await;
    sub.subscribe("speed/t", QoS::AtLeastOnce).await;
    // One PUBLISH (through the shared link, unless the rest comes in the same read),
    // then forty more at once (which take a link of the connection's own, while the
    // first is still unacknowledged or after, as the timing falls: the pause between
    // the two grows with each of twenty fresh connections). (Here the shared link's
    // acknowledgement has always come before the connection reads its own link's; that
    // it is handled first whatever the scheduling is the event loop's rule, which this
    // test cannot force.)
    for attempt in 0..20u32 {
        let mut s = raw_v4(addr, &format!("speed-pub-{attempt}")).await;
        s.write_all(&qos_publish("speed/t", 1, 1, attempt * 100))
            .await
            .unwrap();
        let pause = std::time::Instant::now() + Duration::from_micros(u64::from(attempt) * 25);
        while std::time::Instant::now() < pause {
            std::hint::spin_loop();
        }
        let burst: Vec<u8> = (2..=41u16)
            .flat_map(|pkid| qos_publish("speed/t", 1, pkid, attempt * 100 + u32::from(pkid) - 1))
            .collect();
        s.write_all(&burst).await.unwrap();
        let acks = read_acks(&mut s, 41).await;
        let expected: Vec<(u8, u16)> = (1..=41).map(|pkid| (0x40, pkid)).collect();
        assert_eq!(acks, expected, "PUBACKs out of order in attempt {attempt}");
        for n in 0..41 {
            let m = sub.publish_msg().await.unwrap();
            let got = u32::from_be_bytes(m.payload[..].try_into().unwrap());
            assert_eq!(
                got,
                attempt * 100 + n,
                "message out of order in attempt {attempt}"
            );
        }
    }
    broker.shutdown(WAIT).await;
}
