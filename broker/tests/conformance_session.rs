//! MQTT conformance (issue 6), connection and session lifecycle: session expiry, will
//! delay, server keep alive, response information, assigned client identifiers,
//! receive maximum, shared subscriptions and the limits advertised in CONNACK.
//!
//! As in conformance.rs, absence is checked with a sentinel, never a sleep: the message
//! that must not arrive would come before a sentinel published after it on the same
//! path. Sleeps below only let time pass for a timer under test (expiry, delay).

mod common;

use common::v5::{filter, options, RawV5, V5};
use common::*;
use rumqttc::v5::mqttbytes::v5::{LastWill, LastWillProperties, Packet};
use rumqttc::v5::mqttbytes::QoS;
use std::time::Duration;

/// Waits until the broker has finished with all but `open` connections (their session
/// bookkeeping included: the counter drops after it).
async fn wait_open(broker: &sealpost_broker::Broker, open: u64) {
    let metrics = broker.metrics();
    tokio::time::timeout(WAIT, async {
        while metrics
            .connections_open
            .load(std::sync::atomic::Ordering::Relaxed)
            > open
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("connections closed in time");
}

fn var_int(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            break;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    var_int(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A hand-built MQTT 5 CONNECT: `props` and the will's properties are encoded
/// property bytes (without their length).
fn connect5(
    client_id: &str,
    clean_start: bool,
    keep_alive: u16,
    props: &[u8],
    will: Option<(&str, &[u8], &[u8])>,
) -> Vec<u8> {
    let mut flags = if clean_start { 0x02 } else { 0 };
    if will.is_some() {
        flags |= 0x04;
    }
    let mut b = vec![0, 4, b'M', b'Q', b'T', b'T', 5, flags];
    b.extend_from_slice(&keep_alive.to_be_bytes());
    var_int(props.len(), &mut b);
    b.extend_from_slice(props);
    string(client_id.as_bytes(), &mut b);
    if let Some((topic, payload, will_props)) = will {
        var_int(will_props.len(), &mut b);
        b.extend_from_slice(will_props);
        string(topic.as_bytes(), &mut b);
        string(payload, &mut b);
    }
    packet(0x10, &b)
}

/// A QoS 1 MQTT 5 PUBLISH with packet id `pkid` and encoded properties `props`.
fn publish5(topic: &str, pkid: u16, props: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    string(topic.as_bytes(), &mut b);
    b.extend_from_slice(&pkid.to_be_bytes());
    var_int(props.len(), &mut b);
    b.extend_from_slice(props);
    b.extend_from_slice(payload);
    packet(0x32, &b)
}

const SESSION_EXPIRY: u8 = 0x11;
const REQUEST_RESPONSE_INFO: u8 = 0x19;
const TOPIC_ALIAS: u8 = 0x23;

fn prop_u32(id: u8, v: u32) -> Vec<u8> {
    let mut p = vec![id];
    p.extend_from_slice(&v.to_be_bytes());
    p
}

// ------------------------------------------------------------------------------------
// 1. Session expiry interval

#[tokio::test]
async fn v5_without_session_expiry_the_session_ends_with_the_connection() {
    let (broker, addr) = start(tcp_config()).await;
    let mut o = options("sx-absent", addr);
    o.set_clean_start(false);
    let mut a = V5::start(o.clone()).await;
    a.subscribe(filter("sx-absent/t", QoS::AtLeastOnce)).await;
    drop(a);
    wait_open(&broker, 0).await;
    // MQTT 5 §3.1.2.11.2: absent means 0, even with clean start 0.
    let mut b = V5::start(o).await;
    assert!(!b.connack.session_present);
    // The subscription is gone with the session.
    let client = b.client.clone();
    b.assert_not_subscribed(&client, "sx-absent/t", "sx-absent/sentinel")
        .await;
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_a_session_within_its_expiry_interval_resumes_with_queued_messages() {
    let (broker, addr) = start(tcp_config()).await;
    let mut o = options("sx-resume", addr);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(60));
    let mut a = V5::start(o.clone()).await;
    assert!(!a.connack.session_present);
    a.subscribe(filter("sx-resume/t", QoS::AtLeastOnce)).await;
    drop(a);
    wait_open(&broker, 0).await;
    let mut p = V5::start(options("sx-resume-pub", addr)).await;
    p.publish("sx-resume/t", QoS::AtLeastOnce, false, b"queued")
        .await;
    p.wait(|x| matches!(x, Packet::PubAck(..))).await;
    let mut b = V5::start(o).await;
    assert!(b.connack.session_present);
    assert_eq!(&b.publish_msg().await.payload[..], b"queued");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_a_session_expires_after_its_interval() {
    let (broker, addr) = start(tcp_config()).await;
    let mut o = options("sx-expire", addr);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(1));
    let mut a = V5::start(o.clone()).await;
    a.subscribe(filter("sx-expire/t", QoS::AtLeastOnce)).await;
    drop(a);
    wait_open(&broker, 0).await;
    let mut p = V5::start(options("sx-expire-pub", addr)).await;
    p.publish(
        "sx-expire/t",
        QoS::AtLeastOnce,
        false,
        b"queued for the expired session",
    )
    .await;
    p.wait(|x| matches!(x, Packet::PubAck(..))).await;
    // Let the 1 s interval pass (generously: the machine is slow).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut b = V5::start(o).await;
    assert!(!b.connack.session_present, "session outlived its expiry");
    // Neither the subscription nor the queued message survived.
    b.assert_not_subscribed(&p.client, "sx-expire/t", "sx-expire/sentinel")
        .await;
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_session_expiry_0xffffffff_keeps_the_session() {
    let (broker, addr) = start(tcp_config()).await;
    let mut o = options("sx-forever", addr);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(u32::MAX));
    drop(V5::start(o.clone()).await);
    wait_open(&broker, 0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(V5::start(o).await.connack.session_present);
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_server_maximum_shortens_the_session_expiry_and_connack_says_so() {
    let mut config = tcp_config();
    config.limits.max_session_expiry = Some(1);
    let (broker, addr) = start(config).await;
    // Asked for never: granted 1 s, and told so.
    let mut o = options("sx-capped", addr);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(u32::MAX));
    let a = V5::start(o.clone()).await;
    let granted = |c: &V5| c.connack.properties.as_ref()?.session_expiry_interval;
    assert_eq!(granted(&a), Some(1));
    // Asked for less than the maximum (here, the default 0): granted as asked, and
    // CONNACK does not repeat it.
    assert_eq!(granted(&V5::start(options("sx-short", addr)).await), None);
    drop(a);
    wait_open(&broker, 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !V5::start(o).await.connack.session_present,
        "session outlived the server's maximum"
    );
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_server_maximum_ends_3_1_1_persistent_sessions_too() {
    let mut config = tcp_config();
    config.limits.max_session_expiry = Some(1);
    let (broker, addr) = start(config).await;
    let mut o = v4_options("sx-v4", addr);
    o.set_clean_session(false);
    let mut a = common::V4::start(o.clone());
    a.connack().await.expect("connected");
    drop(a);
    wait_open(&broker, 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut b = common::V4::start(o);
    let ack = b.connack().await.expect("reconnected");
    assert!(!ack.session_present, "3.1.1 session outlived the maximum");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_clean_start_with_expiry_discards_the_old_session_and_keeps_the_new_one() {
    let (broker, addr) = start(tcp_config()).await;
    let mut o = options("sx-clean", addr);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(60));
    let mut a = V5::start(o.clone()).await;
    a.subscribe(filter("sx-clean/old", QoS::AtLeastOnce)).await;
    drop(a);
    wait_open(&broker, 0).await;
    o.set_clean_start(true);
    let b = V5::start(o.clone()).await;
    assert!(!b.connack.session_present);
    drop(b);
    wait_open(&broker, 0).await;
    o.set_clean_start(false);
    let mut c = V5::start(o).await;
    // The session started with clean start 1 persisted; the older one did not.
    assert!(c.connack.session_present);
    let client = c.client.clone();
    c.assert_not_subscribed(&client, "sx-clean/old", "sx-clean/sentinel")
        .await;
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_disconnect_may_shorten_the_session_expiry_to_zero() {
    let (broker, addr) = start(tcp_config()).await;
    let props = prop_u32(SESSION_EXPIRY, 60);
    let (mut raw, ack) = RawV5::open(addr, &connect5("sx-disc", false, 30, &props, None)).await;
    assert!(!ack.session_present);
    // DISCONNECT 0x00 with session expiry interval 0.
    let mut body = vec![0x00];
    let p = prop_u32(SESSION_EXPIRY, 0);
    var_int(p.len(), &mut body);
    body.extend(p);
    raw.send_bytes(&packet(0xe0, &body)).await;
    let (_, closed) = raw.rest().await;
    assert!(closed);
    wait_open(&broker, 0).await;
    let (_raw, ack) = RawV5::open(addr, &connect5("sx-disc", false, 30, &props, None)).await;
    assert!(!ack.session_present);
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_disconnect_cannot_raise_a_zero_session_expiry() {
    let (broker, addr) = start(tcp_config()).await;
    let (mut raw, _) = RawV5::open(addr, &connect5("sx-raise", true, 30, &[], None)).await;
    let mut body = vec![0x00];
    let p = prop_u32(SESSION_EXPIRY, 10);
    var_int(p.len(), &mut body);
    body.extend(p);
    raw.send_bytes(&packet(0xe0, &body)).await;
    // MQTT 5 §3.14.2.2.2: protocol error.
    let (bytes, closed) = raw.rest().await;
    assert_eq!(bytes, [0xe0, 0x01, 0x82]);
    assert!(closed);
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v4_clean_session_0_keeps_its_session() {
    let (broker, addr) = start(tcp_config()).await;
    let mut o = v4_options("sx-v4", addr);
    o.set_clean_session(false);
    let mut a = V4::start(o.clone());
    a.connack().await.unwrap();
    drop(a);
    wait_open(&broker, 0).await;
    let mut b = V4::start(o);
    assert!(b.connack().await.unwrap().session_present);
    broker.shutdown(WAIT).await;
}

// ------------------------------------------------------------------------------------
// 2. Will delay interval

fn will(topic: &str, delay: u32) -> LastWill {
    LastWill::new(
        topic,
        b"will".to_vec(),
        QoS::AtLeastOnce,
        false,
        Some(LastWillProperties {
            delay_interval: Some(delay),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        }),
    )
}

#[tokio::test]
async fn v5_a_delayed_will_is_published_after_the_delay() {
    let (broker, addr) = start(tcp_config()).await;
    let mut s = V5::start(options("wd-sub", addr)).await;
    s.subscribe(filter("wd-delay/will", QoS::AtLeastOnce)).await;
    let mut o = options("wd-delay", addr);
    o.set_session_expiry_interval(Some(60));
    o.set_last_will(will("wd-delay/will", 1));
    let w = V5::start(o).await;
    let dropped = tokio::time::Instant::now();
    drop(w);
    let p = s.publish_msg().await;
    assert_eq!(&p.payload[..], b"will");
    assert!(
        dropped.elapsed() >= Duration::from_millis(900),
        "will not delayed"
    );
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_a_resumed_session_cancels_its_delayed_will() {
    let (broker, addr) = start(tcp_config()).await;
    let mut s = V5::start(options("wr-sub", addr)).await;
    s.subscribe(filter("wd-resume/#", QoS::AtLeastOnce)).await;
    let mut o = options("wd-resume", addr);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(60));
    o.set_last_will(will("wd-resume/will", 2));
    drop(V5::start(o.clone()).await);
    wait_open(&broker, 1).await;
    let back = V5::start(o).await;
    assert!(back.connack.session_present);
    // Past the delay, a sentinel: the will, had it been published, would come first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.publish("wd-resume/sentinel", QoS::AtLeastOnce, false, b"sentinel")
        .await;
    assert_eq!(s.publish_msg().await.topic, "wd-resume/sentinel");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_a_will_is_published_at_session_expiry_if_that_comes_first() {
    let (broker, addr) = start(tcp_config()).await;
    let mut s = V5::start(options("wx-sub", addr)).await;
    s.subscribe(filter("wd-expiry/will", QoS::AtLeastOnce))
        .await;
    let mut o = options("wd-expiry", addr);
    o.set_session_expiry_interval(Some(1));
    o.set_last_will(will("wd-expiry/will", 3600));
    drop(V5::start(o).await);
    assert_eq!(&s.publish_msg().await.payload[..], b"will");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_no_will_after_a_normal_disconnect_and_a_will_after_disconnect_0x04() {
    let (broker, addr) = start(tcp_config()).await;
    let mut s = V5::start(options("wn-sub", addr)).await;
    s.subscribe(filter("wd-normal/#", QoS::AtLeastOnce)).await;
    let w = ("wd-normal/will", &b"will"[..], &[][..]);
    for (reason, id) in [(0x00u8, "wd-normal-0"), (0x04, "wd-normal-4")] {
        let (mut raw, _) = RawV5::open(addr, &connect5(id, true, 30, &[], Some(w))).await;
        raw.send_bytes(&[0xe0, 0x02, reason, 0x00]).await;
        assert!(raw.rest().await.1);
    }
    // Only the 0x04 connection's will, before the sentinel.
    wait_open(&broker, 1).await;
    s.publish("wd-normal/sentinel", QoS::AtLeastOnce, false, b"sentinel")
        .await;
    assert_eq!(s.publish_msg().await.topic, "wd-normal/will");
    assert_eq!(s.publish_msg().await.topic, "wd-normal/sentinel");
    broker.shutdown(WAIT).await;
}

// ------------------------------------------------------------------------------------
// 3. Server keep alive

#[tokio::test]
async fn v5_server_keep_alive_is_advertised_and_enforced() {
    let mut config = tcp_config();
    config.limits.server_keep_alive = Some(1);
    let (broker, addr) = start(config).await;
    // Same as the server's: nothing to say.
    let (_same, ack) = RawV5::open(addr, &connect5("ka-same", true, 1, &[], None)).await;
    assert_eq!(ack.properties.unwrap().server_keep_alive, None);
    let (raw, ack) = RawV5::open(addr, &connect5("ka-60", true, 60, &[], None)).await;
    assert_eq!(ack.properties.unwrap().server_keep_alive, Some(1));
    // Silent for 1.5 s instead of 90 s: DISCONNECT 0x8D (keep alive timeout).
    let started = tokio::time::Instant::now();
    let (bytes, closed) = raw.rest().await;
    assert_eq!(bytes, [0xe0, 0x01, 0x8d]);
    assert!(closed && started.elapsed() < Duration::from_secs(9));
    broker.shutdown(WAIT).await;
}

// ------------------------------------------------------------------------------------
// 4. Request / response information

#[tokio::test]
async fn v5_response_information_only_when_requested() {
    let (broker, addr) = start(tcp_config()).await;
    let ask = [REQUEST_RESPONSE_INFO, 1];
    let (_a, ack) = RawV5::open(addr, &connect5("ri-a/b", true, 30, &ask, None)).await;
    assert_eq!(
        ack.properties.unwrap().response_information.as_deref(),
        Some("response/ri-a%2Fb")
    );
    let no = [REQUEST_RESPONSE_INFO, 0];
    let (_b, ack) = RawV5::open(addr, &connect5("ri-b", true, 30, &no, None)).await;
    assert_eq!(ack.properties.unwrap().response_information, None);
    let (_c, ack) = RawV5::open(addr, &connect5("ri-c", true, 30, &[], None)).await;
    assert_eq!(ack.properties.unwrap().response_information, None);
    broker.shutdown(WAIT).await;
}

// ------------------------------------------------------------------------------------
// 5. Assigned client identifier

#[tokio::test]
async fn v5_an_empty_client_id_gets_an_assigned_identifier() {
    let (broker, addr) = start(tcp_config()).await;
    let (_raw, ack) = RawV5::open(addr, &connect_packet(5, "")).await;
    let id = ack.properties.unwrap().assigned_client_identifier.unwrap();
    assert!(id.starts_with("sealpost-") && id.len() > 9, "{id}");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v4_an_empty_client_id_needs_clean_session() {
    let (broker, addr) = start(tcp_config()).await;
    // Clean session 1: accepted (MQTT 3.1.1 §3.1.3.1).
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, &connect_packet(4, ""))
        .await
        .unwrap();
    let mut ack = [0u8; 4];
    tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_exact(&mut s, &mut ack))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00]);
    // Clean session 0: refused with 0x02 (identifier rejected), then closed.
    let mut p = connect_packet(4, "");
    p[9] = 0x00;
    let (bytes, closed) = raw_exchange(addr, &p).await;
    assert_eq!(bytes, [0x20, 0x02, 0x00, 0x02]);
    assert!(closed);
    broker.shutdown(WAIT).await;
}

// ------------------------------------------------------------------------------------
// 6. Incoming receive maximum

#[tokio::test]
async fn v5_more_than_receive_maximum_unacknowledged_publishes_get_0x93() {
    let mut config = tcp_config();
    config.limits.max_inflight = 2;
    let (broker, addr) = start(config).await;
    let (mut raw, ack) = RawV5::open(addr, &connect5("rm-over", true, 30, &[], None)).await;
    assert_eq!(ack.properties.unwrap().receive_max, Some(2));
    // Three QoS 1 publishes in one write, without reading any PUBACK.
    let mut burst = Vec::new();
    for pkid in 1..=3 {
        burst.extend(publish5("rm/t", pkid, &[], b"x"));
    }
    raw.send_bytes(&burst).await;
    let (bytes, closed) = raw.rest().await;
    assert!(bytes.ends_with(&[0xe0, 0x01, 0x93]), "{bytes:x?}");
    assert!(closed);
    // Exactly receive maximum is fine.
    let (mut raw, _) = RawV5::open(addr, &connect5("rm-ok", true, 30, &[], None)).await;
    let mut burst = Vec::new();
    for pkid in 1..=2 {
        burst.extend(publish5("rm/t", pkid, &[], b"x"));
    }
    raw.send_bytes(&burst).await;
    for pkid in 1..=2 {
        match raw.next().await {
            Some(Packet::PubAck(a)) => assert_eq!(a.pkid, pkid),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    broker.shutdown(WAIT).await;
}

/// A QoS 2 PUBLISH (MQTT 5, no properties).
fn publish5_qos2(topic: &str, pkid: u16) -> Vec<u8> {
    let mut p = publish5(topic, pkid, &[], b"x");
    p[0] = 0x34;
    p
}

/// Opens `count` QoS 2 flows (PUBLISH, then the broker's PUBREC) without releasing any.
async fn open_qos2_flows(raw: &mut RawV5, count: u16) {
    let mut burst = Vec::new();
    for pkid in 1..=count {
        burst.extend(publish5_qos2("rm2/t", pkid));
    }
    raw.send_bytes(&burst).await;
    for pkid in 1..=count {
        match raw.next().await {
            Some(Packet::PubRec(r)) => assert_eq!(r.pkid, pkid),
            other => panic!("expected PUBREC {pkid}, got {other:?}"),
        }
    }
}

/// Issue 15 item 6: a QoS 2 flow counts against the receive maximum until PUBCOMP,
/// not only until PUBREC: 101 unreleased flows against 100 get DISCONNECT 0x93.
#[tokio::test]
async fn v5_unreleased_qos2_flows_count_against_receive_maximum_until_pubcomp() {
    let (broker, addr) = start(tcp_config()).await;
    let (mut raw, ack) = RawV5::open(addr, &connect5("rm2-over", true, 30, &[], None)).await;
    assert_eq!(ack.properties.unwrap().receive_max, Some(100));
    open_qos2_flows(&mut raw, 100).await;
    raw.send_bytes(&publish5_qos2("rm2/t", 101)).await;
    let (bytes, closed) = raw.rest().await;
    assert_eq!(bytes, [0xe0, 0x01, 0x93], "{bytes:x?}");
    assert!(closed);
    broker.shutdown(WAIT).await;
}

/// PUBREL completes a flow (PUBCOMP) and so reopens the window.
#[tokio::test]
async fn v5_a_released_qos2_flow_reopens_the_receive_window() {
    let mut config = tcp_config();
    config.limits.max_inflight = 3;
    let (broker, addr) = start(config).await;
    let (mut raw, _) = RawV5::open(addr, &connect5("rm2-ok", true, 30, &[], None)).await;
    open_qos2_flows(&mut raw, 3).await;
    // PUBREL for packet id 2, then a new flow in the same write.
    let mut bytes = vec![0x62, 0x02, 0x00, 0x02];
    bytes.extend(publish5_qos2("rm2/t", 4));
    raw.send_bytes(&bytes).await;
    match raw.next().await {
        Some(Packet::PubComp(c)) => assert_eq!(c.pkid, 2),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    match raw.next().await {
        Some(Packet::PubRec(r)) => assert_eq!(r.pkid, 4),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    broker.shutdown(WAIT).await;
}

/// MQTT 3.1.1 has no receive maximum, and a client may send its PUBRELs behind more
/// PUBLISHes than `limits.max_inflight` (rumqttc does): its unreleased QoS 2 flows
/// pause nothing, and every flow is completed.
#[tokio::test]
async fn v4_qos2_flows_beyond_max_inflight_are_served_and_released() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = tcp_config();
    config.limits.max_inflight = 3;
    let (broker, addr) = start(config).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&connect_packet(4, "rm2-v4")).await.unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    // Six QoS 2 PUBLISHes "t" "x", packet ids 1 to 6, none released.
    let burst: Vec<u8> = (1..=6u8)
        .flat_map(|pkid| [0x34, 0x06, 0x00, 0x01, b't', 0x00, pkid, b'x'])
        .collect();
    s.write_all(&burst).await.unwrap();
    let mut pubrecs = [0u8; 24];
    tokio::time::timeout(WAIT, s.read_exact(&mut pubrecs))
        .await
        .expect("six PUBRECs")
        .unwrap();
    let expected: Vec<u8> = (1..=6u8).flat_map(|p| [0x50, 2, 0, p]).collect();
    assert_eq!(&pubrecs[..], &expected[..]);
    let pubrels: Vec<u8> = (1..=6u8).flat_map(|p| [0x62, 2, 0, p]).collect();
    s.write_all(&pubrels).await.unwrap();
    let mut pubcomps = [0u8; 24];
    tokio::time::timeout(WAIT, s.read_exact(&mut pubcomps))
        .await
        .expect("six PUBCOMPs")
        .unwrap();
    let expected: Vec<u8> = (1..=6u8).flat_map(|p| [0x70, 2, 0, p]).collect();
    assert_eq!(&pubcomps[..], &expected[..]);
    broker.shutdown(WAIT).await;
}

// ------------------------------------------------------------------------------------
// 7. Shared subscriptions

#[tokio::test]
async fn v5_shared_subscriptions_split_messages_and_get_no_retained_messages() {
    let (broker, addr) = start(tcp_config()).await;
    let p = V5::start(options("sh-pub", addr)).await;
    p.client
        .publish("sh/retained", QoS::AtLeastOnce, true, b"retained".to_vec())
        .await
        .unwrap();
    let mut all = V5::start(options("sh-all", addr)).await;
    all.subscribe(filter("sh/#", QoS::AtLeastOnce)).await;
    // The retained message reached the router before this sentinel; a plain
    // subscriber gets it at subscribe.
    assert_eq!(&all.publish_msg().await.payload[..], b"retained");
    let mut m1 = V5::start(options("sh-m1", addr)).await;
    m1.subscribe(filter("$share/g/sh/#", QoS::AtLeastOnce))
        .await;
    let mut m2 = V5::start(options("sh-m2", addr)).await;
    m2.subscribe(filter("$share/g/sh/#", QoS::AtLeastOnce))
        .await;
    const N: usize = 10;
    for i in 0..N {
        p.publish(
            "sh/live",
            QoS::AtLeastOnce,
            false,
            format!("{i}").as_bytes(),
        )
        .await;
    }
    for i in 0..N {
        assert_eq!(all.publish_msg().await.payload, format!("{i}").as_bytes());
    }
    // Together the members get every message exactly once; each gets some.
    let mut got = Vec::new();
    let (mut n1, mut n2) = (0, 0);
    while got.len() < N {
        tokio::select! {
            m = m1.publish_msg() => { n1 += 1; got.push(m) }
            m = m2.publish_msg() => { n2 += 1; got.push(m) }
        }
    }
    // No retained message for shared subscriptions (MQTT 5 §4.8.2): it would have come
    // before the live ones.
    assert!(got.iter().all(|m| m.topic == "sh/live"), "{got:?}");
    let mut payloads: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect();
    payloads.sort_by_key(|s| s.parse::<usize>().unwrap());
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(payloads, want);
    assert!(n1 > 0 && n2 > 0, "one member got everything: {n1} / {n2}");
    // And nothing more: a sentinel comes next for both.
    p.publish("sh/sentinel", QoS::AtLeastOnce, false, b"sentinel")
        .await;
    let next = tokio::select! {
        m = m1.publish_msg() => m,
        m = m2.publish_msg() => m,
    };
    assert_eq!(next.topic, "sh/sentinel");
    broker.shutdown(WAIT).await;
}

// Regression: rumqttd 0.20 left an unsubscribed shared subscription's waiting request
// in its filter's log, so the member got the next message after its UNSUBACK
// (vendor/rumqttd/SEALPOST.md, "A disconnection looks only where the link waits").
#[tokio::test]
async fn v5_an_unsubscribed_shared_subscription_gets_nothing_more() {
    let (broker, addr) = start(tcp_config()).await;
    let p = V5::start(options("shu-pub", addr)).await;
    let mut m = V5::start(options("shu-member", addr)).await;
    m.subscribe(filter("$share/g/shu/t", QoS::AtLeastOnce))
        .await;
    // A first message: the subscription is read and waits for the next one.
    p.publish("shu/t", QoS::AtLeastOnce, false, b"first").await;
    assert_eq!(&m.publish_msg().await.payload[..], b"first");
    m.client.unsubscribe("$share/g/shu/t").await.unwrap();
    m.wait(|p| matches!(p, Packet::UnsubAck(..))).await;
    m.assert_not_subscribed(&p.client, "shu/t", "shu/sentinel")
        .await;
    broker.shutdown(WAIT).await;
}

// ------------------------------------------------------------------------------------
// 8. Configured limits

#[tokio::test]
async fn v5_configured_limits_are_advertised_and_the_topic_alias_maximum_enforced() {
    let mut config = tcp_config();
    config.limits.topic_alias_max = 2;
    config.limits.max_inflight = 7;
    config.limits.max_packet_size = 4096;
    let (broker, addr) = start(config).await;
    let (mut raw, ack) = RawV5::open(addr, &connect5("lim", true, 30, &[], None)).await;
    let props = ack.properties.unwrap();
    assert_eq!(props.topic_alias_max, Some(2));
    assert_eq!(props.receive_max, Some(7));
    assert_eq!(props.max_packet_size, Some(4096));
    // Alias 2 is fine, alias 3 is beyond the maximum: DISCONNECT 0x94.
    raw.send_bytes(&publish5("lim/t", 1, &[TOPIC_ALIAS, 0, 2], b"x"))
        .await;
    assert!(matches!(raw.next().await, Some(Packet::PubAck(_))));
    raw.send_bytes(&publish5("lim/t", 2, &[TOPIC_ALIAS, 0, 3], b"x"))
        .await;
    let (bytes, closed) = raw.rest().await;
    assert_eq!(bytes, [0xe0, 0x01, 0x94]);
    assert!(closed);
    broker.shutdown(WAIT).await;
}

#[test]
fn limits_config_names_and_validation() {
    let c: sealpost_broker::Config = toml::from_str(
        "[limits]\nreceive_maximum = 5\ntopic_alias_max = 0\nserver_keep_alive = 30\n",
    )
    .unwrap();
    assert_eq!(c.limits.max_inflight, 5);
    assert_eq!(c.limits.topic_alias_max, 0);
    assert_eq!(c.limits.server_keep_alive, Some(30));
    let zero: sealpost_broker::Config = toml::from_str("[limits]\nmax_inflight = 0\n").unwrap();
    assert!(zero.validate().is_err());
    let huge: sealpost_broker::Config =
        toml::from_str("[limits]\nmax_packet_size = 300000000\n").unwrap();
    assert!(huge.validate().is_err());
}
