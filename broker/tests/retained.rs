//! Retained messages survive a broker restart.

mod common;

use common::*;
use rumqttc::QoS;
use std::time::Duration;

#[tokio::test]
async fn retained_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tcp_config();
    config.retained.path = Some(dir.path().join("retained.redb"));
    {
        let (broker, addr) = start(config.clone()).await;
        let p = V4::connect("ret-pub", addr).await;
        p.client
            .publish("keys/a", QoS::AtLeastOnce, true, b"key-a".to_vec())
            .await
            .unwrap();
        p.client
            .publish("keys/b", QoS::AtMostOnce, true, b"key-b".to_vec())
            .await
            .unwrap();
        p.client
            .publish("keys/c", QoS::AtLeastOnce, true, b"key-c".to_vec())
            .await
            .unwrap();
        // An empty retained message deletes keys/c.
        p.client
            .publish("keys/c", QoS::AtLeastOnce, true, Vec::new())
            .await
            .unwrap();
        // Make sure everything went through before stopping: a QoS 1 sentinel.
        let mut check = V4::connect("ret-check", addr).await;
        check.subscribe("sentinel", QoS::AtLeastOnce).await;
        p.client
            .publish("sentinel", QoS::AtLeastOnce, false, b"s".to_vec())
            .await
            .unwrap();
        check.publish_msg().await.unwrap();
        broker.shutdown(WAIT).await;
    }
    let (broker, addr) = start(config).await;
    let mut s = V4::connect("ret-sub", addr).await;
    s.subscribe("keys/#", QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = s.publish_msg().await.unwrap();
        assert!(m.retain, "replayed as retained");
        got.push((m.topic.clone(), m.payload.to_vec(), m.qos));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("keys/a".to_string(), b"key-a".to_vec(), QoS::AtLeastOnce),
            ("keys/b".to_string(), b"key-b".to_vec(), QoS::AtMostOnce),
        ]
    );
    assert!(
        s.maybe_publish(Duration::from_millis(300)).await.is_none(),
        "keys/c was deleted"
    );
    broker.shutdown(WAIT).await;
}

#[tokio::test]
async fn v5_properties_and_what_is_left_of_the_expiry_survive_a_restart() {
    use common::v5::{filter, V5};
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let dir = tempfile::tempdir().unwrap();
    let mut config = tcp_config();
    config.retained.path = Some(dir.path().join("retained.redb"));
    let props = |expiry| PublishProperties {
        content_type: Some("application/cose".into()),
        user_properties: vec![("k".into(), "v".into())],
        message_expiry_interval: expiry,
        ..Default::default()
    };
    {
        let (broker, addr) = start(config.clone()).await;
        let p = V5::connect("ret5-pub", addr).await;
        for (topic, expiry) in [("ret5/long", 3600), ("ret5/short", 1)] {
            p.client
                .publish_with_properties(topic, Q5::AtLeastOnce, true, topic, props(Some(expiry)))
                .await
                .unwrap();
        }
        // Everything went through before stopping: a QoS 1 sentinel behind them.
        let mut check = V5::connect("ret5-check", addr).await;
        check.subscribe(filter("sentinel", Q5::AtLeastOnce)).await;
        p.publish("sentinel", Q5::AtLeastOnce, false, b"s").await;
        check.publish_msg().await;
        broker.shutdown(WAIT).await;
    }
    // ret5/short expires while the broker is down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (broker, addr) = start(config).await;
    let mut s = V5::connect("ret5-sub", addr).await;
    s.subscribe(filter("ret5/#", Q5::AtLeastOnce)).await;
    // Retained messages come at subscribe, so before a message published after it.
    let p = V5::connect("ret5-pub2", addr).await;
    p.publish("ret5/sentinel", Q5::AtLeastOnce, false, b"s")
        .await;
    let m = s.publish_msg().await;
    assert_eq!(
        (&m.topic[..], &m.payload[..], m.retain),
        (&b"ret5/long"[..], &b"ret5/long"[..], true)
    );
    let got = m.properties.expect("properties replayed");
    let left = got.message_expiry_interval.expect("expiry replayed");
    assert!((3590..3600).contains(&left), "expiry left: {left}");
    assert_eq!(got, props(Some(left)));
    assert_eq!(
        &s.publish_msg().await.topic[..],
        b"ret5/sentinel",
        "the expired message was replayed"
    );
    broker.shutdown(WAIT).await;
}
