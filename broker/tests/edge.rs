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

/// An MQTT packet of `kind` (first byte) with `body`; bodies here are under 128 bytes.
fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![kind, body.len() as u8];
    p.extend_from_slice(body);
    p
}

/// A 3.1.1 PUBLISH at QoS 1 or 2 with packet id `pkid`.
fn publish_qos(qos: u8, topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&pkid.to_be_bytes());
    body.extend_from_slice(payload);
    packet(0x30 | qos << 1, &body)
}

/// Reads one packet (first byte and body; bodies under 128 bytes).
async fn read_packet(s: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 2];
    tokio::time::timeout(WAIT, s.read_exact(&mut header))
        .await
        .expect("a packet in time")
        .unwrap();
    let mut body = vec![0u8; usize::from(header[1])];
    s.read_exact(&mut body).await.unwrap();
    (header[0], body)
}

/// Issue 15 item 4: a clean-session client publishes through a link the edge shares
/// until its first SUBSCRIBE, then through its own. Its messages keep their order
/// across the change (some in the very batch that carries the SUBSCRIBE), each QoS 1/2
/// PUBLISH is acknowledged, and the subscription works.
#[tokio::test]
async fn a_publishing_client_keeps_order_and_acks_across_its_first_subscribe() {
    use tokio::io::AsyncWriteExt;
    let (broker, addr) = start(tcp_config()).await;
    let mut observer = V4::connect("fp-observer", addr).await;
    observer.subscribe("fp/#", QoS::AtLeastOnce).await;
    let mut device = tokio::net::TcpStream::connect(addr).await.unwrap();
    device
        .write_all(&connect_packet(4, "fp-device"))
        .await
        .unwrap();
    assert_eq!(read_packet(&mut device).await, (0x20, vec![0, 0]));
    // Publish-only: QoS 1, each acknowledged.
    for pkid in 1..=2u16 {
        device
            .write_all(&publish_qos(1, "fp/m", pkid, &[pkid as u8]))
            .await
            .unwrap();
        assert_eq!(
            read_packet(&mut device).await,
            (0x40, pkid.to_be_bytes().to_vec())
        );
    }
    // One write: a PUBLISH, the first SUBSCRIBE, then a QoS 1 and a QoS 2 PUBLISH.
    let mut batch = publish_qos(1, "fp/m", 3, &[3]);
    let mut subscribe = vec![0, 4];
    subscribe.extend_from_slice(&9u16.to_be_bytes());
    subscribe.extend_from_slice(b"fp-back/#");
    subscribe.push(1);
    batch.extend(packet(0x82, &subscribe));
    batch.extend(publish_qos(1, "fp/m", 5, &[4]));
    batch.extend(publish_qos(2, "fp/m", 6, &[5]));
    device.write_all(&batch).await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(read_packet(&mut device).await);
    }
    let position = |p: &(u8, Vec<u8>)| answers.iter().position(|a| a == p);
    let puback3 = position(&(0x40, vec![0, 3])).expect("PUBACK 3");
    let puback5 = position(&(0x40, vec![0, 5])).expect("PUBACK 5");
    assert!(puback3 < puback5, "PUBACKs out of order: {answers:?}");
    assert!(
        position(&(0x90, vec![0, 4, 1])).is_some(),
        "SUBACK: {answers:?}"
    );
    assert!(
        position(&(0x50, vec![0, 6])).is_some(),
        "PUBREC: {answers:?}"
    );
    device.write_all(&packet(0x62, &[0, 6])).await.unwrap();
    assert_eq!(read_packet(&mut device).await, (0x70, vec![0, 6]));
    for n in 1..=5u8 {
        let m = observer.publish_msg().await.unwrap();
        assert_eq!(&m.payload[..], &[n], "messages out of order");
        assert_eq!(m.qos, QoS::AtLeastOnce);
    }
    // The subscription made with the new link delivers, at QoS 1.
    observer
        .client
        .publish("fp-back/x", QoS::AtLeastOnce, false, b"back".to_vec())
        .await
        .unwrap();
    let (kind, body) = read_packet(&mut device).await;
    assert_eq!(kind & 0xf6, 0x32, "a QoS 1 PUBLISH");
    assert_eq!(&body[2..11], b"fp-back/x");
    assert_eq!(&body[13..], b"back");
    device
        .write_all(&packet(0x40, &body[11..13]))
        .await
        .unwrap();
    broker.shutdown(WAIT).await;
}

/// A connection without a link of its own is unknown to the router, so the edge ends
/// it when another connection takes its client id over (MQTT 5: DISCONNECT 0x8E); the
/// new one, which links, subscribes and receives.
#[tokio::test]
async fn a_connection_without_its_own_link_is_taken_over() {
    use tokio::io::AsyncWriteExt;
    let (broker, addr) = start(tcp_config()).await;
    {
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        first
            .write_all(&connect_packet(5, "fp-same"))
            .await
            .unwrap();
        assert_eq!(read_packet(&mut first).await.0, 0x20);
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        second
            .write_all(&connect_packet(5, "fp-same"))
            .await
            .unwrap();
        assert_eq!(read_packet(&mut second).await.0, 0x20);
        let (rest, closed) = read_until_closed(&mut first).await;
        assert!(closed, "first connection kept open after takeover");
        assert_eq!(rest, [0xe0, 0x01, 0x8e], "DISCONNECT session taken over");
        {
            let mut subscribe = vec![0, 1, 0];
            subscribe.extend_from_slice(&6u16.to_be_bytes());
            subscribe.extend_from_slice(b"fp-s/#");
            subscribe.push(0);
            second.write_all(&packet(0x82, &subscribe)).await.unwrap();
            assert_eq!(read_packet(&mut second).await, (0x90, vec![0, 1, 0, 0]));
            let mut body = vec![0, 6];
            body.extend_from_slice(b"fp-s/t");
            body.push(0); // no properties
            body.extend_from_slice(b"x");
            second.write_all(&packet(0x30, &body)).await.unwrap();
            let (kind, got) = read_packet(&mut second).await;
            assert_eq!((kind, got.last()), (0x30, Some(&b'x')));
        }
        second.write_all(&[0xe0, 0]).await.unwrap();
        let (_, closed) = read_until_closed(&mut second).await;
        assert!(closed);
    }
    broker.shutdown(WAIT).await;
}
