//! MQTT conformance (issue 6): what a real client receives, one test per behaviour.
//!
//! Absence is checked with a sentinel, never a sleep: a message that must not arrive is
//! published before one that must, on a path where the broker preserves order, so the
//! sentinel arriving first proves the other was not delivered.

mod common;

use common::v5::{filter, RawV5, V5};
use common::*;
use rumqttc::v5::mqttbytes::v5::{
    Connect, ConnectProperties, Filter, Packet, PubAck, PublishProperties, RetainForwardRule,
};
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::v5::MqttOptions;
use rumqttc::QoS;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn dollar_topics_are_not_matched_by_first_level_wildcards() {
    let (broker, addr) = start(tcp_config()).await;
    let mut hash = V4::connect("dollar-hash", addr).await;
    hash.subscribe("#", QoS::AtLeastOnce).await;
    let mut plus = V4::connect("dollar-plus", addr).await;
    plus.subscribe("+/x", QoS::AtLeastOnce).await;
    let publ = V4::connect("dollar-pub", addr).await;
    for t in ["$internal/x", "a/x"] {
        publ.client
            .publish(t, QoS::AtLeastOnce, false, t.as_bytes().to_vec())
            .await
            .unwrap();
    }
    // MQTT 3.1.1 §4.7.2 / 5.0 §4.7.2: `#` and `+/x` must not match `$internal/x`.
    assert_eq!(hash.publish_msg().await.unwrap().topic, "a/x");
    assert_eq!(plus.publish_msg().await.unwrap().topic, "a/x");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_publish_properties_pass_through_unchanged() {
    let (broker, addr) = start(tcp_config()).await;
    let mut sub = V5::connect("props-sub", addr).await;
    sub.subscribe(filter("props/#", Q5::AtLeastOnce)).await;
    let publ = V5::connect("props-pub", addr).await;
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        response_topic: Some("props/reply".into()),
        correlation_data: Some(bytes::Bytes::from_static(&[0xa1, 0, 0xff])),
        content_type: Some("application/cose".into()),
        // Order and duplicates are significant (MQTT 5 §3.3.2.3.7).
        user_properties: vec![
            ("k".into(), "1".into()),
            ("a".into(), "x".into()),
            ("k".into(), "2".into()),
        ],
        ..Default::default()
    };
    publ.client
        .publish_with_properties(
            "props/a",
            Q5::AtLeastOnce,
            false,
            b"{}".to_vec(),
            props.clone(),
        )
        .await
        .unwrap();
    let p = sub.publish_msg().await;
    assert_eq!(&p.payload[..], b"{}");
    assert_eq!(p.properties, Some(props));
    broker.shutdown(WAIT).await;
}

/// Regression: rumqttd's 3.1.1 encoder panics on a packet with properties, and the
/// edge handed it MQTT 5 messages with theirs, so one MQTT 5 publisher with a user
/// property ended every 3.1.1 subscriber's connection (found by the `broker_connection`
/// fuzz target).
#[tokio::test]
async fn v5_messages_with_properties_reach_mqtt311_subscribers_without_them() {
    let (broker, addr) = start(tcp_config()).await;
    let publ = V5::connect("props4-pub", addr).await;
    let props = PublishProperties {
        content_type: Some("application/cose".into()),
        user_properties: vec![("k".into(), "v".into())],
        message_expiry_interval: Some(600),
        ..Default::default()
    };
    let send = |topic: &'static str, retain: bool| {
        publ.client.publish_with_properties(
            topic,
            Q5::AtLeastOnce,
            retain,
            topic.as_bytes().to_vec(),
            props.clone(),
        )
    };
    let mut live = V4::connect("props4-live", addr).await;
    live.subscribe("props4/#", QoS::AtLeastOnce).await;
    send("props4/retained", true).await.unwrap();
    send("props4/live", false).await.unwrap();
    for want in ["props4/retained", "props4/live"] {
        let m = live
            .publish_msg()
            .await
            .expect("the 3.1.1 connection stays up");
        assert_eq!((&m.topic[..], &m.payload[..]), (want, want.as_bytes()));
    }
    // The retained copy, sent at subscribe.
    let mut late = V4::connect("props4-late", addr).await;
    late.subscribe("props4/#", QoS::AtLeastOnce).await;
    let m = late
        .publish_msg()
        .await
        .expect("the 3.1.1 connection stays up");
    assert_eq!((&m.topic[..], m.retain), ("props4/retained", true));
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_no_local_suppresses_the_subscribers_own_messages() {
    let (broker, addr) = start(tcp_config()).await;
    let mut me = V5::connect("nolocal-me", addr).await;
    let mut f = filter("nl/#", Q5::AtLeastOnce);
    f.nolocal = true;
    me.subscribe(f).await;
    me.publish("nl/mine", Q5::AtLeastOnce, false, b"mine").await;
    // Wait for our own PUBACK so that "mine" is routed before "theirs" is published.
    me.wait(|p| matches!(p, Packet::PubAck(..))).await;
    let other = V5::connect("nolocal-other", addr).await;
    other
        .publish("nl/theirs", Q5::AtLeastOnce, false, b"theirs")
        .await;
    assert_eq!(&me.publish_msg().await.topic[..], b"nl/theirs");
    broker.shutdown(WAIT).await;
}

/// Starts a broker holding the retained message `kept` on `rh/t`; returns a connected
/// publisher too.
async fn with_retained() -> (sealpost_broker::Broker, std::net::SocketAddr, V5) {
    let (broker, addr) = start(tcp_config()).await;
    let publ = V5::connect("rh-pub", addr).await;
    publ.publish("rh/t", Q5::AtLeastOnce, true, b"kept").await;
    // Make sure the retained message is stored before anyone subscribes.
    let mut probe = V5::connect("rh-probe", addr).await;
    probe.subscribe(filter("rh/t", Q5::AtLeastOnce)).await;
    assert_eq!(&probe.publish_msg().await.payload[..], b"kept");
    (broker, addr, publ)
}

#[tokio::test]
async fn v5_retain_handling_1_sends_retained_messages_on_new_subscriptions_only() {
    let (broker, addr, publ) = with_retained().await;
    let mut new = V5::connect("rh-1", addr).await;
    let mut f = filter("rh/t", Q5::AtLeastOnce);
    f.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
    new.subscribe(f.clone()).await;
    assert_eq!(&new.publish_msg().await.payload[..], b"kept");
    new.subscribe(f).await;
    new.subscribe(filter("rh/end", Q5::AtLeastOnce)).await;
    publ.publish("rh/end", Q5::AtLeastOnce, false, b"end").await;
    assert_eq!(&new.publish_msg().await.payload[..], b"end");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_retain_handling_2_sends_no_retained_messages() {
    let (broker, addr, publ) = with_retained().await;
    let mut never = V5::connect("rh-2", addr).await;
    let mut f = filter("rh/t", Q5::AtLeastOnce);
    f.retain_forward_rule = RetainForwardRule::Never;
    never.subscribe(f).await;
    never.subscribe(filter("rh/end", Q5::AtLeastOnce)).await;
    publ.publish("rh/end", Q5::AtLeastOnce, false, b"end").await;
    assert_eq!(&never.publish_msg().await.payload[..], b"end");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_live_messages_clear_retain_unless_retain_as_published() {
    let (broker, addr) = start(tcp_config()).await;
    let publ = V5::connect("rap-pub", addr).await;
    let mut rap = V5::connect("rh-rap", addr).await;
    let mut f = filter("rh/live", Q5::AtLeastOnce);
    f.preserve_retain = true;
    rap.subscribe(f).await;
    let mut plain = V5::connect("rh-plain", addr).await;
    plain.subscribe(filter("rh/live", Q5::AtLeastOnce)).await;
    publ.publish("rh/live", Q5::AtLeastOnce, true, b"live")
        .await;
    // MQTT 5 §3.3.1.3.
    assert!(!plain.publish_msg().await.retain, "retain flag cleared");
    assert!(rap.publish_msg().await.retain, "retain as published");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn an_empty_non_retained_publish_keeps_the_retained_message() {
    let (broker, addr) = start(tcp_config()).await;
    let publ = V4::connect("empty-pub", addr).await;
    publ.client
        .publish("e/t", QoS::AtLeastOnce, true, b"kept".to_vec())
        .await
        .unwrap();
    let mut live = V4::connect("empty-live", addr).await;
    live.subscribe("e/t", QoS::AtLeastOnce).await;
    assert_eq!(&live.publish_msg().await.unwrap().payload[..], b"kept");
    publ.client
        .publish("e/t", QoS::AtLeastOnce, false, Vec::new())
        .await
        .unwrap();
    // Delivered (so routed) before the late subscriber asks for the retained message.
    assert!(live.publish_msg().await.unwrap().payload.is_empty());
    let mut late = V4::connect("empty-late", addr).await;
    late.subscribe("e/t", QoS::AtLeastOnce).await;
    let p = late.publish_msg().await.unwrap();
    assert_eq!((&p.payload[..], p.retain), (&b"kept"[..], true));
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_message_expiry_interval_is_forwarded_no_larger_than_sent() {
    let (broker, addr) = start(tcp_config()).await;
    let mut sub = V5::connect("expiry-sub", addr).await;
    sub.subscribe(filter("exp/#", Q5::AtLeastOnce)).await;
    let publ = V5::connect("expiry-pub", addr).await;
    let props = PublishProperties {
        message_expiry_interval: Some(3600),
        ..Default::default()
    };
    publ.client
        .publish_with_properties("exp/a", Q5::AtLeastOnce, false, b"x".to_vec(), props)
        .await
        .unwrap();
    let p = sub.publish_msg().await;
    // MQTT 5 §3.3.2.3.3: the remaining lifetime, so at most what was sent, and not 0.
    let left = p
        .properties
        .and_then(|p| p.message_expiry_interval)
        .expect("expiry interval forwarded");
    assert!((1..=3600).contains(&left), "{left}");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn unacknowledged_qos1_is_redelivered_to_a_resumed_session() {
    unacknowledged_message_is_redelivered(QoS::AtLeastOnce, "rd").await;
}

#[tokio::test]
async fn unacknowledged_qos2_is_redelivered_to_a_resumed_session() {
    unacknowledged_message_is_redelivered(QoS::ExactlyOnce, "rd2").await;
}

/// A persistent session's subscriber gets a message at `qos` and goes away without
/// acknowledging it (the socket is closed, as by a crash); on resuming it gets the
/// message again, at the same QoS, with DUP set (MQTT 3.1.1 §4.4).
async fn unacknowledged_message_is_redelivered(qos: QoS, name: &str) {
    let (broker, addr) = start(tcp_config()).await;
    let mut o = v4_options(&format!("{name}-sub"), addr);
    o.set_clean_session(false);
    o.set_manual_acks(true);
    let mut sub = V4::start(o.clone());
    sub.connack().await.unwrap();
    let topic = format!("{name}/t");
    sub.subscribe(&topic, qos).await;
    let publ = V4::connect(&format!("{name}-pub"), addr).await;
    publ.client
        .publish(&topic, qos, false, b"again".to_vec())
        .await
        .unwrap();
    assert_eq!(&sub.publish_msg().await.unwrap().payload[..], b"again");
    drop(sub);
    let mut sub = V4::start(o);
    assert!(sub.connack().await.unwrap().session_present);
    let p = sub.publish_msg().await.unwrap();
    assert_eq!((&p.payload[..], p.qos, p.dup), (&b"again"[..], qos, true));
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_an_expired_retained_message_is_not_sent_to_new_subscribers() {
    let (broker, addr) = start(tcp_config()).await;
    let publ = V5::connect("expired-pub", addr).await;
    let props = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    publ.client
        .publish_with_properties("xp/old", Q5::AtLeastOnce, true, b"old".to_vec(), props)
        .await
        .unwrap();
    publ.publish("xp/new", Q5::AtLeastOnce, true, b"new").await;
    // Both are stored before the wait: a subscriber sees them now.
    let mut now = V5::connect("expired-now", addr).await;
    now.subscribe(filter("xp/old", Q5::AtLeastOnce)).await;
    assert_eq!(&now.publish_msg().await.payload[..], b"old");
    // Past the one-second lifetime (expiry has one-second resolution).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut late = V5::connect("expired-late", addr).await;
    late.subscribe(filter("xp/old", Q5::AtLeastOnce)).await;
    late.subscribe(filter("xp/new", Q5::AtLeastOnce)).await;
    assert_eq!(&late.publish_msg().await.payload[..], b"new");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn an_empty_non_retained_will_keeps_the_retained_message() {
    let (broker, addr) = start(tcp_config()).await;
    let publ = V4::connect("ewill-pub", addr).await;
    publ.client
        .publish("ew/t", QoS::AtLeastOnce, true, b"kept".to_vec())
        .await
        .unwrap();
    let mut live = V4::connect("ewill-live", addr).await;
    live.subscribe("ew/t", QoS::AtLeastOnce).await;
    assert_eq!(&live.publish_msg().await.unwrap().payload[..], b"kept");
    let mut o = v4_options("ewill-dies", addr);
    o.set_last_will(rumqttc::LastWill::new(
        "ew/t",
        Vec::new(),
        QoS::AtLeastOnce,
        false,
    ));
    let mut dies = V4::start(o);
    dies.connack().await.unwrap();
    drop(dies); // socket closed without DISCONNECT: the will is published
    assert!(live.publish_msg().await.unwrap().payload.is_empty());
    let mut late = V4::connect("ewill-late", addr).await;
    late.subscribe("ew/t", QoS::AtLeastOnce).await;
    let p = late.publish_msg().await.unwrap();
    assert_eq!((&p.payload[..], p.retain), (&b"kept"[..], true));
    broker.shutdown(WAIT).await;
}

/// A publish as (topic, payload) strings, for readable assertions.
fn text(p: &rumqttc::v5::mqttbytes::v5::Publish) -> (String, String) {
    (
        String::from_utf8_lossy(&p.topic).into_owned(),
        String::from_utf8_lossy(&p.payload).into_owned(),
    )
}

/// Filters that overlap on `ov/b/a` only, so that each has a topic of its own to carry
/// a sentinel down its own (ordered) stream.
const OVERLAP_A: &str = "ov/+/a";
const OVERLAP_B: &str = "ov/b/+";

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    let (broker, addr) = start(tcp_config()).await;
    let mut sub = V4::connect("overlap-sub", addr).await;
    sub.subscribe(OVERLAP_A, QoS::AtMostOnce).await;
    sub.subscribe(OVERLAP_B, QoS::AtLeastOnce).await;
    let publ = V4::connect("overlap-pub", addr).await;
    // MQTT 3.1.1 §3.3.5 / MQTT 5 §3.3.4: one copy, at the highest QoS granted.
    for (t, qos) in [
        ("ov/b/a", QoS::AtLeastOnce),
        ("ov/c/a", QoS::AtLeastOnce),
        ("ov/b/c", QoS::AtLeastOnce),
    ] {
        publ.client
            .publish(t, qos, false, t.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    // Each filter's stream is ordered: once both sentinels arrived, so did every copy.
    while !(seen.iter().any(|(t, _)| t == "ov/c/a") && seen.iter().any(|(t, _)| t == "ov/b/c")) {
        let p = sub.publish_msg().await.unwrap();
        seen.push((p.topic.clone(), p.qos));
    }
    let both: Vec<_> = seen.iter().filter(|(t, _)| t == "ov/b/a").collect();
    assert_eq!(
        both,
        [&("ov/b/a".to_string(), QoS::AtLeastOnce)],
        "{seen:?}"
    );
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_one_copy_carries_every_matching_subscription_identifier() {
    let (broker, addr) = start(tcp_config()).await;
    let mut sub = V5::connect("subid-sub", addr).await;
    for (f, id) in [(OVERLAP_A, 11), (OVERLAP_B, 22)] {
        let props = rumqttc::v5::mqttbytes::v5::SubscribeProperties {
            id: Some(id),
            user_properties: Vec::new(),
        };
        sub.client
            .subscribe_with_properties(f, Q5::AtLeastOnce, props)
            .await
            .unwrap();
        sub.wait(|p| matches!(p, Packet::SubAck(..))).await;
    }
    let publ = V5::connect("subid-pub", addr).await;
    for t in ["ov/b/a", "ov/c/a", "ov/b/c"] {
        publ.publish(t, Q5::AtLeastOnce, false, t.as_bytes()).await;
    }
    let mut ids = std::collections::HashMap::new();
    while !(ids.contains_key("ov/c/a") && ids.contains_key("ov/b/c")) {
        let p = sub.publish_msg().await;
        let got = p
            .properties
            .map(|p| p.subscription_identifiers)
            .unwrap_or_default();
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        assert!(ids.insert(topic, got).is_none(), "one copy per message");
    }
    assert_eq!(ids["ov/b/a"], [11, 22]);
    assert_eq!(ids["ov/c/a"], [11]);
    assert_eq!(ids["ov/b/c"], [22]);
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_repeated_subscription_gets_the_retained_messages_again() {
    let (broker, addr) = start(tcp_config()).await;
    let publ = V4::connect("again-pub", addr).await;
    publ.client
        .publish("again/t", QoS::AtLeastOnce, true, b"kept".to_vec())
        .await
        .unwrap();
    // MQTT 3.1.1 §3.8.4, MQTT 5 retain handling 0 (the default).
    let mut v4 = V4::connect("again-v4", addr).await;
    let mut v5 = V5::connect("again-v5", addr).await;
    for _ in 0..2 {
        v4.subscribe("again/t", QoS::AtLeastOnce).await;
        let p = v4.publish_msg().await.unwrap();
        assert_eq!((&p.payload[..], p.retain), (&b"kept"[..], true));
        v5.subscribe(filter("again/t", Q5::AtLeastOnce)).await;
        let p = v5.publish_msg().await;
        assert_eq!((&p.payload[..], p.retain), (&b"kept"[..], true));
    }
    broker.shutdown(WAIT).await;
}

/// Publishes `topic` (its name as payload) at QoS 1 and waits for the PUBACK, after
/// which the router has it.
async fn publish_acknowledged(publ: &mut V4, topic: &str, retain: bool) {
    publ.client
        .publish(topic, QoS::AtLeastOnce, retain, topic.as_bytes().to_vec())
        .await
        .unwrap();
    loop {
        let event = publ.next().await.unwrap();
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
            return;
        }
    }
}

/// A resumed session subscribes again to a filter it has (as `mosquitto_sub -c` does
/// at every start): MQTT 3.1.1 §3.8.4 and MQTT 5 retain handling 0 want the retained
/// messages sent again, and the flow of publications not interrupted, so the message
/// queued while the session was away arrives too.
#[tokio::test]
async fn a_resumed_session_subscribing_again_gets_the_retained_messages_and_its_backlog() {
    let (broker, addr) = start(tcp_config()).await;
    let mut publ = V4::connect("resumed-pub", addr).await;
    publish_acknowledged(&mut publ, "resumed/kept", true).await;
    let v4_resumed = || {
        let mut o = v4_options("resumed-v4", addr);
        o.set_clean_session(false);
        o
    };
    let v5_resumed = || {
        let mut o = MqttOptions::new("resumed-v5", addr.ip().to_string(), addr.port());
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(3600));
        o
    };
    let mut v4 = V4::start(v4_resumed());
    v4.connack().await.unwrap();
    v4.subscribe("resumed/#", QoS::AtLeastOnce).await;
    assert_eq!(
        &v4.publish_msg().await.unwrap().payload[..],
        b"resumed/kept"
    );
    let mut v5 = V5::start(v5_resumed()).await;
    v5.subscribe(filter("resumed/#", Q5::AtLeastOnce)).await;
    assert_eq!(&v5.publish_msg().await.payload[..], b"resumed/kept");
    drop((v4, v5));
    publish_acknowledged(&mut publ, "resumed/queued", false).await;

    let mut v4 = V4::start(v4_resumed());
    assert!(v4.connack().await.unwrap().session_present);
    // (The backlog may come before the SUBACK: every PUBLISH counts.)
    v4.client
        .subscribe("resumed/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = v4.next().await.unwrap() {
            got.push((String::from_utf8(p.payload.to_vec()).unwrap(), p.retain));
        }
    }
    got.sort();
    let want = [
        ("resumed/kept".to_string(), true),
        ("resumed/queued".to_string(), false),
    ];
    assert_eq!(got, want, "3.1.1");
    let mut v5 = V5::start(v5_resumed()).await;
    assert!(v5.connack.session_present);
    v5.subscribe(filter("resumed/#", Q5::AtLeastOnce)).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = v5.publish_msg().await;
        got.push((String::from_utf8(p.payload.to_vec()).unwrap(), p.retain));
    }
    got.sort();
    assert_eq!(got, want, "5");
    broker.shutdown(WAIT).await;
}

/// The same with a backlog longer than the router hands over at once (it reads 100
/// messages per subscription per round): subscribing again at the same QoS must not
/// renew the filter in the router, which would skip whatever it had not yet sent.
#[tokio::test]
async fn a_resumed_session_subscribing_again_loses_none_of_a_long_backlog() {
    const BACKLOG: usize = 1500;
    let mut config = tcp_config();
    config.limits.max_queued_messages = 2 * BACKLOG;
    let (broker, addr) = start(config).await;
    let resumed = || {
        let mut o = v4_options("backlog-v4", addr);
        o.set_clean_session(false);
        o
    };
    let mut sub = V4::start(resumed());
    sub.connack().await.unwrap();
    sub.subscribe("backlog/#", QoS::AtLeastOnce).await;
    drop(sub);
    let mut publ = V4::connect("backlog-pub", addr).await;
    for n in 0..BACKLOG {
        let topic = format!("backlog/{n}");
        publ.client
            .publish(topic, QoS::AtLeastOnce, false, n.to_string().into_bytes())
            .await
            .unwrap();
    }
    let mut acked = 0;
    while acked < BACKLOG {
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = publ.next().await.unwrap() {
            acked += 1;
        }
    }

    // The SUBSCRIBE goes out right behind the CONNECT, while the backlog flows.
    let mut sub = V4::start(resumed());
    sub.client
        .subscribe("backlog/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut got = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < BACKLOG {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {BACKLOG} delivered in {WAIT:?}",
            got.len()
        );
        match sub.next().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                got.insert(String::from_utf8(p.payload.to_vec()).unwrap());
            }
            Ok(_) => {}
            Err(e) => panic!("{} of {BACKLOG} delivered, then {e}", got.len()),
        }
    }
    broker.shutdown(WAIT).await;
}

/// The router restores a resumed session's subscriptions but not its index of who
/// subscribes to what: the edge subscribes them again, or the session's UNSUBSCRIBE and
/// its renewal at a new QoS would change nothing in the router.
#[tokio::test]
async fn a_resumed_session_can_unsubscribe_and_change_a_subscriptions_qos() {
    let (broker, addr) = start(tcp_config()).await;
    let options = || {
        let mut o = MqttOptions::new("resumed-unsub", addr.ip().to_string(), addr.port());
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(3600));
        o
    };
    let mut me = V5::start(options()).await;
    me.subscribe(filter("ru/gone", Q5::AtLeastOnce)).await;
    me.subscribe(filter("ru/qos", Q5::AtMostOnce)).await;
    drop(me);
    let mut me = V5::start(options()).await;
    assert!(me.connack.session_present);
    me.client.unsubscribe("ru/gone").await.unwrap();
    me.wait(|p| matches!(p, Packet::UnsubAck(..))).await;
    me.subscribe(filter("ru/qos", Q5::AtLeastOnce)).await;
    let other = V5::connect("resumed-unsub-pub", addr).await;
    me.assert_not_subscribed(&other.client, "ru/gone", "ru/sentinel")
        .await;
    other.publish("ru/qos", Q5::AtLeastOnce, false, b"q").await;
    assert_eq!(me.publish_msg().await.qos, Q5::AtLeastOnce);
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_repeated_subscription_takes_its_new_qos() {
    let (broker, addr) = start(tcp_config()).await;
    let mut sub = V4::connect("requal-sub", addr).await;
    let publ = V4::connect("requal-pub", addr).await;
    for granted in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::AtMostOnce] {
        sub.subscribe("requal/t", granted).await;
        publ.client
            .publish("requal/t", QoS::AtLeastOnce, false, b"m".to_vec())
            .await
            .unwrap();
        assert_eq!(sub.publish_msg().await.unwrap().qos, granted);
    }
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_subscription_options_survive_a_resumed_session() {
    let (broker, addr) = start(tcp_config()).await;
    let options = || {
        let mut o = MqttOptions::new("resume-opts", addr.ip().to_string(), addr.port());
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(3600));
        o
    };
    let mut me = V5::start(options()).await;
    let mut f = filter("so/#", Q5::AtLeastOnce);
    f.nolocal = true;
    me.subscribe(f).await;
    drop(me);
    let mut me = V5::start(options()).await;
    assert!(me.connack.session_present);
    // No local still applies, to the new connection of the same session.
    me.publish("so/mine", Q5::AtLeastOnce, false, b"mine").await;
    me.wait(|p| matches!(p, Packet::PubAck(..))).await;
    let other = V5::connect("resume-other", addr).await;
    other
        .publish("so/theirs", Q5::AtLeastOnce, false, b"theirs")
        .await;
    assert_eq!(&me.publish_msg().await.topic[..], b"so/theirs");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_topic_aliases_are_given_to_clients_that_accept_them() {
    let (broker, addr) = start(tcp_config()).await;
    let props = ConnectProperties {
        topic_alias_max: Some(2),
        ..ConnectProperties::new()
    };
    let mut sub = RawV5::connect(addr, "alias-sub", props).await;
    sub.subscribe(Filter::new("al/#", Q5::AtMostOnce)).await;
    let publ = V5::connect("alias-pub", addr).await;
    for t in ["al/a", "al/a", "al/b", "al/c", "al/c"] {
        publ.publish(t, Q5::AtMostOnce, false, t.as_bytes()).await;
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let p = sub.publish_msg().await;
        let alias = p.properties.as_ref().and_then(|p| p.topic_alias);
        got.push((text(&p), alias));
    }
    let want = |t: &str, payload: &str, a| ((t.to_string(), payload.to_string()), a);
    // MQTT 5 §3.3.2.3.4: the alias is set with its topic, then used with an empty one;
    // beyond the client's maximum, topics are sent in full.
    assert_eq!(
        got,
        [
            want("al/a", "al/a", Some(1)),
            want("", "al/a", Some(1)),
            want("al/b", "al/b", Some(2)),
            want("al/c", "al/c", None),
            want("al/c", "al/c", None),
        ]
    );
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_messages_larger_than_the_clients_maximum_packet_size_are_skipped() {
    let (broker, addr) = start(tcp_config()).await;
    let props = ConnectProperties {
        max_packet_size: Some(256),
        ..ConnectProperties::new()
    };
    let mut sub = RawV5::connect(addr, "maxpkt-sub", props).await;
    sub.subscribe(Filter::new("mp/#", Q5::AtLeastOnce)).await;
    let publ = V5::connect("maxpkt-pub", addr).await;
    publ.publish("mp/big", Q5::AtLeastOnce, false, &[7u8; 1000])
        .await;
    publ.publish("mp/small", Q5::AtLeastOnce, false, b"small")
        .await;
    // MQTT 5 §3.1.2.11.4: not sent, and the QoS 1 flow behind it goes on.
    let p = sub.publish_msg().await;
    assert_eq!(text(&p), ("mp/small".into(), "small".into()));
    // Not silently: counted as dropped.
    let metrics = broker.metrics();
    assert_eq!(metrics.dropped_oversized.load(Ordering::Relaxed), 1);
    assert!(metrics
        .render()
        .contains("sealpost_dropped_messages_total{reason=\"oversized\"} 1\n"));
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_the_clients_receive_maximum_limits_unacknowledged_messages() {
    let (broker, addr) = start(tcp_config()).await;
    let props = ConnectProperties {
        receive_maximum: Some(2),
        ..ConnectProperties::new()
    };
    let mut sub = RawV5::connect(addr, "recvmax-sub", props).await;
    sub.subscribe(Filter::new("rm/#", Q5::AtLeastOnce)).await;
    let publ = V5::connect("recvmax-pub", addr).await;
    for i in 0..4 {
        publ.publish("rm/t", Q5::AtLeastOnce, false, format!("{i}").as_bytes())
            .await;
    }
    let first = sub.publish_msg().await;
    let second = sub.publish_msg().await;
    assert_eq!(
        (&first.payload[..], &second.payload[..]),
        (&b"0"[..], &b"1"[..])
    );
    // MQTT 5 §4.9: nothing more until the client acknowledges. (Absence cannot be shown
    // with a sentinel here, since the sentinel would wait too.)
    assert!(sub.recv_within(Duration::from_millis(500)).await.is_none());
    sub.send(Packet::PubAck(PubAck::new(first.pkid, None)))
        .await;
    let third = sub.publish_msg().await;
    assert_eq!(&third.payload[..], b"2");
    assert!(sub.recv_within(Duration::from_millis(300)).await.is_none());
    sub.send(Packet::PubAck(PubAck::new(second.pkid, None)))
        .await;
    sub.send(Packet::PubAck(PubAck::new(third.pkid, None)))
        .await;
    assert_eq!(&sub.publish_msg().await.payload[..], b"3");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_persistent_session_gets_the_messages_published_while_it_was_away() {
    let (broker, addr) = start(tcp_config()).await;
    let mut o = v4_options("offline-sub", addr);
    o.set_clean_session(false);
    let mut sub = V4::start(o.clone());
    sub.connack().await.unwrap();
    sub.subscribe("off/#", QoS::AtLeastOnce).await;
    let _ = sub.client.disconnect().await;
    drop(sub);
    let publ = V4::connect("offline-pub", addr).await;
    for (t, qos) in [("off/1", QoS::AtLeastOnce), ("off/2", QoS::AtMostOnce)] {
        publ.client
            .publish(t, qos, false, t.as_bytes().to_vec())
            .await
            .unwrap();
    }
    // Routed before the session resumes: a live subscriber has the one published
    // after them (it may have them too, if it subscribed before they were routed).
    let mut live = V4::connect("offline-live", addr).await;
    live.subscribe("off/#", QoS::AtLeastOnce).await;
    publ.client
        .publish("off/3", QoS::AtLeastOnce, false, b"3".to_vec())
        .await
        .unwrap();
    while live.publish_msg().await.unwrap().topic != "off/3" {}
    let mut sub = V4::start(o);
    assert!(sub.connack().await.unwrap().session_present);
    // MQTT 3.1.1 §3.1.2.4: QoS 1 and 2 messages are queued for the session; QoS 0 may be.
    let mut got = Vec::new();
    while !got.contains(&"off/3".to_string()) {
        got.push(sub.publish_msg().await.unwrap().topic);
    }
    assert!(got.contains(&"off/1".to_string()), "{got:?}");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_a_message_that_expires_while_queued_is_not_delivered() {
    let (broker, addr) = start(tcp_config()).await;
    let options = || {
        let mut o = MqttOptions::new("expq-sub", addr.ip().to_string(), addr.port());
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(3600));
        o
    };
    let mut sub = V5::start(options()).await;
    sub.subscribe(filter("expq/#", Q5::AtLeastOnce)).await;
    let _ = sub.client.disconnect().await;
    drop(sub);
    let publ = V5::connect("expq-pub", addr).await;
    let short = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    publ.client
        .publish_with_properties("expq/old", Q5::AtLeastOnce, false, b"old".to_vec(), short)
        .await
        .unwrap();
    publ.publish("expq/new", Q5::AtLeastOnce, false, b"new")
        .await;
    // Past the one-second lifetime (expiry has one-second resolution).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut sub = V5::start(options()).await;
    // MQTT 5 §3.3.2.3.3: an expired message is not sent; the later one is.
    assert_eq!(&sub.publish_msg().await.topic[..], b"expq/new");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_unsuback_says_whether_the_subscription_existed() {
    use rumqttc::v5::mqttbytes::v5::UnsubAckReason;
    let (broker, addr) = start(tcp_config()).await;
    let mut c = V5::connect("unsub-codes", addr).await;
    c.subscribe(filter("us/a", Q5::AtLeastOnce)).await;
    let mut reasons = Vec::new();
    for f in ["us/a", "us/a", "us/never"] {
        c.client.unsubscribe(f).await.unwrap();
        match c.wait(|p| matches!(p, Packet::UnsubAck(..))).await {
            Packet::UnsubAck(ack) => reasons.extend(ack.reasons),
            _ => unreachable!(),
        }
    }
    // MQTT 5 §3.11.2.1: 0x00 for a removed subscription, 0x11 when there was none.
    assert_eq!(
        reasons,
        [
            UnsubAckReason::Success,
            UnsubAckReason::NoSubscriptionExisted,
            UnsubAckReason::NoSubscriptionExisted
        ]
    );
    broker.shutdown(WAIT).await;
}

/// A PUBLISH that wakes a client's own subscription, and an UNSUBSCRIBE of that
/// subscription in the same write (so in one batch for the router): the subscription
/// ends with its UNSUBACK, and subscribing again gives one subscription, not two.
/// (rumqttd 0.20 kept the woken subscription past the UNSUBSCRIBE; the SUBSCRIBE then
/// added a second one, which panicked its router thread in debug builds and delivered
/// every message twice in release builds; found by the `broker_connection` fuzz
/// target, see `RouterSlot::send_batch`.)
#[tokio::test]
async fn an_unsubscribe_sent_with_a_publish_it_matches_leaves_no_second_subscription() {
    use rumqttc::v5::mqttbytes::v5::{Publish, Subscribe, Unsubscribe};
    let (broker, addr) = start(tcp_config()).await;
    let mut raw = RawV5::connect(addr, "unsub-batch", Default::default()).await;
    raw.subscribe(filter("ub/#", Q5::AtMostOnce)).await;
    let mut write = bytes::BytesMut::new();
    for packet in [
        Packet::Publish(Publish::new("ub/own", Q5::AtMostOnce, "woke", None)),
        Packet::Unsubscribe(Unsubscribe::new("ub/#", None)),
    ] {
        packet.write(&mut write, None).unwrap();
    }
    raw.send_bytes(&write).await;
    raw.send(Packet::Subscribe(Subscribe::new(
        filter("ub/#", Q5::AtMostOnce),
        None,
    )))
    .await;
    // Its own message, published before the UNSUBSCRIBE, may come back (before or
    // after the UNSUBACK, MQTT 5 §3.10.4); nothing else may.
    let mut acks = 0;
    while acks < 2 {
        match raw.recv().await {
            Packet::UnsubAck(..) | Packet::SubAck(..) => acks += 1,
            Packet::Publish(p) => assert_eq!(&p.topic[..], b"ub/own"),
            other => panic!("expected UNSUBACK and SUBACK, got {other:?}"),
        }
    }
    let other = V5::connect("unsub-batch-pub", addr).await;
    for topic in ["ub/once", "ub/sentinel"] {
        other.publish(topic, Q5::AtLeastOnce, false, b"m").await;
    }
    // Everything up to the second copy of the sentinel, if one comes.
    let mut topics = Vec::new();
    while let Some(Packet::Publish(p)) = raw.recv_within(Duration::from_millis(300)).await {
        topics.push(String::from_utf8_lossy(&p.topic).into_owned());
    }
    assert_eq!(topics, ["ub/once", "ub/sentinel"]);
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_topic_aliases_from_a_client_are_resolved() {
    let (broker, addr) = start(tcp_config()).await;
    let mut sub = V5::connect("inalias-sub", addr).await;
    sub.subscribe(filter("ia/#", Q5::AtLeastOnce)).await;
    let publ = V5::connect("inalias-pub", addr).await;
    let alias = PublishProperties {
        topic_alias: Some(3),
        ..Default::default()
    };
    // MQTT 5 §3.3.2.3.4: set with the topic, then used with an empty topic.
    for (topic, payload) in [("ia/t", "first"), ("", "second")] {
        publ.client
            .publish_with_properties(topic, Q5::AtLeastOnce, false, payload, alias.clone())
            .await
            .unwrap();
    }
    for want in ["first", "second"] {
        let p = sub.publish_msg().await;
        assert_eq!(text(&p), ("ia/t".to_string(), want.to_string()));
        let forwarded_alias = p.properties.and_then(|p| p.topic_alias);
        assert_eq!(
            forwarded_alias, None,
            "the publisher's alias is not forwarded"
        );
    }
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_resumed_session_gets_at_most_max_queued_messages_of_its_backlog() {
    let mut config = tcp_config();
    // Three queued above the one in flight (Mosquitto's semantics).
    config.limits.max_queued_messages = 3;
    config.limits.max_inflight = 1;
    let (broker, addr) = start(config).await;
    let mut o = v4_options("backlog-sub", addr);
    o.set_clean_session(false);
    let mut sub = V4::start(o.clone());
    sub.connack().await.unwrap();
    sub.subscribe("bl/#", QoS::AtLeastOnce).await;
    let _ = sub.client.disconnect().await;
    drop(sub);
    let publ = V4::connect("backlog-pub", addr).await;
    let mut live = V4::connect("backlog-live", addr).await;
    live.subscribe("bl/#", QoS::AtLeastOnce).await;
    for i in 1..=5 {
        publ.client
            .publish(format!("bl/{i}"), QoS::AtLeastOnce, false, vec![i])
            .await
            .unwrap();
    }
    // All five are routed (and so queued for the session) before it resumes.
    for i in 1..=5 {
        assert_eq!(live.publish_msg().await.unwrap().topic, format!("bl/{i}"));
    }
    let mut sub = V4::start(o);
    assert!(sub.connack().await.unwrap().session_present);
    for i in 1..=4 {
        assert_eq!(sub.publish_msg().await.unwrap().topic, format!("bl/{i}"));
    }
    // The oldest four of the backlog; then live messages flow again.
    publ.client
        .publish("bl/now", QoS::AtLeastOnce, false, b"now".to_vec())
        .await
        .unwrap();
    assert_eq!(sub.publish_msg().await.unwrap().topic, "bl/now");
    // The one dropped (before "bl/now", in the router's order) is counted.
    let metrics = broker.metrics();
    assert_eq!(metrics.dropped_queue_full.load(Ordering::Relaxed), 1);
    assert!(metrics
        .render()
        .contains("sealpost_dropped_messages_total{reason=\"queue_full\"} 1\n"));
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_pubrel_for_an_unknown_packet_id_gets_pubcomp_0x92() {
    use rumqttc::v5::mqttbytes::v5::{PubCompReason, PubRel, PubRelReason};
    let (broker, addr) = start(tcp_config()).await;
    let mut c = RawV5::connect(addr, "pubrel-unknown", ConnectProperties::new()).await;
    c.send(Packet::PubRel(PubRel {
        pkid: 4242,
        reason: PubRelReason::Success,
        properties: None,
    }))
    .await;
    // MQTT 5 §4.3.3: the flow is completed, saying the packet id was not found.
    match c.recv().await {
        Packet::PubComp(comp) => {
            assert_eq!(
                (comp.pkid, comp.reason),
                (4242, PubCompReason::PacketIdentifierNotFound)
            )
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_a_qos2_flow_is_completed_by_a_resumed_session() {
    use rumqttc::v5::mqttbytes::v5::{PubCompReason, PubRel, PubRelReason, Publish};
    let (broker, addr) = start(tcp_config()).await;
    let mut sub = V5::connect("q2resume-sub", addr).await;
    sub.subscribe(filter("q2r/#", Q5::ExactlyOnce)).await;
    let connect = Connect {
        keep_alive: 30,
        client_id: "q2resume-pub".into(),
        clean_start: false,
        properties: Some(ConnectProperties {
            session_expiry_interval: Some(3600),
            ..ConnectProperties::new()
        }),
    };
    let (mut publ, _) = RawV5::connect_with(addr, connect.clone()).await;
    let mut p = Publish::new("q2r/t", Q5::ExactlyOnce, b"once".to_vec(), None);
    p.pkid = 7;
    publ.send(Packet::Publish(p)).await;
    assert!(matches!(publ.recv().await, Packet::PubRec(r) if r.pkid == 7));
    // Gone before PUBREL; the resumed session sends it (MQTT 5 §4.4).
    drop(publ);
    let (mut publ, present) = RawV5::connect_with(addr, connect).await;
    assert!(present);
    // The same PUBLISH again (as a client that missed the PUBREC would): acknowledged,
    // not delivered twice (MQTT 5 §4.3.3).
    let mut again = Publish::new("q2r/t", Q5::ExactlyOnce, b"once".to_vec(), None);
    again.pkid = 7;
    again.dup = true;
    publ.send(Packet::Publish(again)).await;
    assert!(matches!(publ.recv().await, Packet::PubRec(r) if r.pkid == 7));
    publ.send(Packet::PubRel(PubRel {
        pkid: 7,
        reason: PubRelReason::Success,
        properties: None,
    }))
    .await;
    match publ.recv().await {
        Packet::PubComp(c) => assert_eq!((c.pkid, c.reason), (7, PubCompReason::Success)),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    assert_eq!(&sub.publish_msg().await.payload[..], b"once");
    let mut end = Publish::new("q2r/end", Q5::ExactlyOnce, b"end".to_vec(), None);
    end.pkid = 8;
    publ.send(Packet::Publish(end)).await;
    assert_eq!(&sub.publish_msg().await.payload[..], b"end");
    broker.shutdown(WAIT).await;
}
