//! A slow QoS 1 subscriber under a flood (issue 15, "no silent loss"): the broker either
//! drops what its queue cannot hold, counting every message in the metrics endpoint
//! (`limits.slow_subscriber = "drop"`, by `limits.drop_policy`), or slows the publishers
//! so that nothing is lost (`"backpressure"`). The router's window is made small, so
//! that a subscriber the router saw falling behind would lose messages silently and
//! fail these tests.

mod common;

use common::v5::RawV5;
use common::*;
use rumqttc::v5::mqttbytes::v5::{Connect, ConnectProperties, Packet, PubAck, PubAckReason};
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::{Event, QoS};
use sealpost_broker::config::{DropPolicy, SlowSubscriber};
use sealpost_broker::Config;
use std::net::SocketAddr;
use std::time::Duration;

/// Messages in each flood.
const FLOOD: u32 = 3000;

/// A broker whose router keeps little per filter (two segments of 16 KiB: about 300
/// of the flood's messages), with the metrics endpoint on.
fn config(slow: SlowSubscriber, policy: DropPolicy, max_queued: usize) -> Config {
    let mut config = tcp_config();
    config.limits.slow_subscriber = slow;
    config.limits.drop_policy = policy;
    config.limits.max_queued_messages = max_queued;
    config.limits.max_packet_size = 16 * 1024;
    config.router.max_segment_size = 16 * 1024;
    config.router.max_segment_count = 2;
    config.metrics.bind = Some("127.0.0.1:0".parse().unwrap());
    config
}

const QUEUE_FULL: &str = "sealpost_dropped_messages_total{reason=\"queue_full\"}";
const ROUTER_SKIPPED: &str = "sealpost_dropped_messages_total{reason=\"router_skipped\"}";

/// A raw MQTT 5 subscriber to `flood/#` at QoS 1 that accepts `window` messages at a
/// time (its receive maximum).
async fn subscriber(addr: SocketAddr, id: &str, window: u16) -> RawV5 {
    let mut props = ConnectProperties::new();
    props.receive_maximum = Some(window);
    let mut sub = RawV5::connect(addr, id, props).await;
    sub.subscribe(common::v5::filter("flood/#", Q5::AtLeastOnce))
        .await;
    sub
}

async fn puback(sub: &mut RawV5, pkid: u16) {
    sub.send(Packet::PubAck(PubAck {
        pkid,
        reason: PubAckReason::Success,
        properties: None,
    }))
    .await;
}

/// Reads and acknowledges messages, waiting `pace` before each PUBACK, until none
/// comes for two seconds; the payloads (message numbers) in the order received.
async fn read_slowly(mut sub: RawV5, pace: Duration) -> Vec<u32> {
    let mut got = Vec::new();
    while let Some(p) = sub.recv_within(Duration::from_secs(2)).await {
        match p {
            Packet::Publish(p) => {
                assert_eq!(p.qos, Q5::AtLeastOnce);
                got.push(u32::from_be_bytes(p.payload[..4].try_into().unwrap()));
                tokio::time::sleep(pace).await;
                puback(&mut sub, p.pkid).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

/// Publishes `n` QoS 1 messages of 100 bytes (numbered 0..n in their first four bytes)
/// and waits until the broker has acknowledged every one.
async fn flood(addr: SocketAddr, id: &str, n: u32) {
    let mut publ = V4::connect(id, addr).await;
    let client = publ.client.clone();
    let sending = tokio::spawn(async move {
        for i in 0..n {
            let mut payload = i.to_be_bytes().to_vec();
            payload.resize(100, b'x');
            client
                .publish(format!("flood/{}", i % 7), QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
        }
    });
    let mut acked = 0;
    while acked < n {
        // (`next` fails after WAIT without an event: a stalled flood fails the test.)
        if let Event::Incoming(rumqttc::Packet::PubAck(_)) = publ.next().await.unwrap() {
            acked += 1;
        }
    }
    sending.await.unwrap();
}

#[tokio::test]
async fn with_drop_every_message_a_slow_subscriber_misses_is_counted() {
    let config = config(SlowSubscriber::Drop, DropPolicy::Newest, 50);
    let (broker, addr) = start(config).await;
    let metrics = broker.metrics_addr().unwrap();
    let sub = subscriber(addr, "slow-drop", 10).await;
    let reader = tokio::spawn(read_slowly(sub, Duration::from_millis(1)));
    flood(addr, "flood-drop", FLOOD).await;
    let got = reader.await.unwrap();
    let dropped = scrape_metric(metrics, QUEUE_FULL).await;
    assert!(dropped > 0, "the subscriber was not slow: nothing dropped");
    assert_eq!(
        dropped,
        u64::from(FLOOD) - got.len() as u64,
        "published minus delivered"
    );
    // Each message at most once, in the order published.
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn with_backpressure_a_slow_subscriber_gets_every_message() {
    let config = config(SlowSubscriber::Backpressure, DropPolicy::Newest, 50);
    let (broker, addr) = start(config).await;
    let metrics = broker.metrics_addr().unwrap();
    let sub = subscriber(addr, "slow-bp", 10).await;
    let reader = tokio::spawn(read_slowly(sub, Duration::from_millis(1)));
    flood(addr, "flood-bp", FLOOD).await;
    let got = reader.await.unwrap();
    assert_eq!(got, (0..FLOOD).collect::<Vec<_>>());
    assert_eq!(scrape_metric(metrics, QUEUE_FULL).await, 0);
    broker.shutdown(WAIT).await;
}

/// What a subscriber that accepts one message at a time and acknowledges none until
/// the flood is over receives of 20 messages, with a queue of 5 (above the one in
/// flight, as Mosquitto counts it).
async fn kept_by(policy: DropPolicy) -> Vec<u32> {
    let config = config(SlowSubscriber::Drop, policy, 5);
    let (broker, addr) = start(config).await;
    let metrics = broker.metrics_addr().unwrap();
    let sub = subscriber(addr, "stalled", 1).await;
    flood(addr, "flood-policy", 20).await;
    // The broker has taken all twenty off the router when fourteen are counted.
    let deadline = tokio::time::Instant::now() + WAIT;
    while scrape_metric(metrics, QUEUE_FULL).await < 14 {
        assert!(tokio::time::Instant::now() < deadline, "drops not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = read_slowly(sub, Duration::ZERO).await;
    assert_eq!(scrape_metric(metrics, QUEUE_FULL).await, 14);
    broker.shutdown(WAIT).await;
    got
}

#[tokio::test]
async fn drop_policy_newest_keeps_the_oldest_messages() {
    assert_eq!(kept_by(DropPolicy::Newest).await, vec![0, 1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn drop_policy_oldest_keeps_the_newest_messages_and_never_takes_back_a_sent_one() {
    // Message 0 was sent at once (the window is 1): it stays; the five newest wait.
    assert_eq!(
        kept_by(DropPolicy::Oldest).await,
        vec![0, 15, 16, 17, 18, 19]
    );
}

/// Without a data directory, nothing but the router's log keeps what is published
/// while a persistent session is away, and the router skips what falls out of it
/// (here all but about 300 of the flood): every one of those is counted.
#[tokio::test]
async fn without_a_data_directory_what_the_router_skips_for_a_session_away_is_counted() {
    // No queue limit: whatever is not delivered can only be the router's doing.
    let config = config(SlowSubscriber::Drop, DropPolicy::Newest, 0);
    let (broker, addr) = start(config).await;
    let metrics = broker.metrics_addr().unwrap();
    let connect = |clean_start| {
        let mut props = ConnectProperties::new();
        props.session_expiry_interval = Some(3600);
        Connect {
            keep_alive: 30,
            client_id: "away".into(),
            clean_start,
            properties: Some(props),
        }
    };
    let (mut sub, _) = RawV5::connect_with(addr, connect(true)).await;
    sub.subscribe(common::v5::filter("flood/#", Q5::AtLeastOnce))
        .await;
    // One message received while connected, so the session has a place in the log.
    flood(addr, "flood-before", 1).await;
    assert_eq!(read_slowly(sub, Duration::ZERO).await, vec![0]);
    flood(addr, "flood-away", FLOOD).await;
    let (sub, present) = RawV5::connect_with(addr, connect(false)).await;
    assert!(present, "the session was not kept");
    let got = read_slowly(sub, Duration::ZERO).await;
    assert!(
        !got.is_empty() && got.len() < FLOOD as usize,
        "the router's log should keep some of the flood, not all: {} delivered",
        got.len()
    );
    assert_eq!(
        scrape_metric(metrics, ROUTER_SKIPPED).await,
        u64::from(FLOOD) - got.len() as u64,
        "published minus delivered"
    );
    assert_eq!(scrape_metric(metrics, QUEUE_FULL).await, 0);
    // The newest, each once, in order.
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    assert_eq!(got.last(), Some(&(FLOOD - 1)));
    broker.shutdown(WAIT).await;
}
