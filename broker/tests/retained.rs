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
