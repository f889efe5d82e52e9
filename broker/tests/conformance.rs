//! MQTT conformance (issue 6): what a real client receives, one test per behaviour.
//!
//! Absence is checked with a sentinel, never a sleep: a message that must not arrive is
//! published before one that must, on a path where the broker preserves order, so the
//! sentinel arriving first proves the other was not delivered.

mod common;

use common::*;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PublishProperties, RetainForwardRule};
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::QoS;
use std::time::Duration;
use tokio::sync::mpsc;

/// A rumqttc v5 client whose event loop runs in its own task.
struct V5 {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Event>,
    /// PUBLISHes that arrived while waiting for something else: kept, never dropped,
    /// so that a message that must not arrive cannot slip by unseen.
    stash: std::collections::VecDeque<rumqttc::v5::mqttbytes::v5::Publish>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for V5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl V5 {
    async fn connect(id: &str, addr: std::net::SocketAddr) -> V5 {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = AsyncClient::new(o, 100);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(e) = el.poll().await {
                if tx.send(e).is_err() {
                    return;
                }
            }
        });
        let mut c = V5 {
            client,
            events,
            stash: Default::default(),
            task,
        };
        c.wait(|p| matches!(p, Packet::ConnAck(..))).await;
        c
    }

    async fn wait(&mut self, pred: impl Fn(&Packet) -> bool) -> Packet {
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

    async fn subscribe(&mut self, filter: Filter) {
        self.client.subscribe_many([filter]).await.unwrap();
        self.wait(|p| matches!(p, Packet::SubAck(..))).await;
    }

    async fn publish_msg(&mut self) -> rumqttc::v5::mqttbytes::v5::Publish {
        if let Some(p) = self.stash.pop_front() {
            return p;
        }
        match self.wait(|p| matches!(p, Packet::Publish(..))).await {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }

    async fn publish(&self, topic: &str, qos: Q5, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .unwrap();
    }
}

fn filter(path: &str, qos: Q5) -> Filter {
    Filter::new(path, qos)
}

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
    let (broker, addr) = start(tcp_config()).await;
    let mut o = v4_options("redeliver-sub", addr);
    o.set_clean_session(false);
    o.set_manual_acks(true);
    let mut sub = V4::start(o.clone());
    sub.connack().await.unwrap();
    sub.subscribe("rd/t", QoS::AtLeastOnce).await;
    let publ = V4::connect("redeliver-pub", addr).await;
    publ.client
        .publish("rd/t", QoS::AtLeastOnce, false, b"again".to_vec())
        .await
        .unwrap();
    assert_eq!(&sub.publish_msg().await.unwrap().payload[..], b"again");
    // Gone without PUBACK (the socket is closed, as by a crash).
    drop(sub);
    let mut sub = V4::start(o);
    let ack = sub.connack().await.unwrap();
    assert!(ack.session_present);
    let p = sub.publish_msg().await.unwrap();
    assert_eq!((&p.payload[..], p.qos), (&b"again"[..], QoS::AtLeastOnce));
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
