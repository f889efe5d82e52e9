//! What topics cost the router (vendor/rumqttd/SEALPOST.md, "Filters found by a topic's
//! levels"): `topics N FILTERS` starts sealpost with FILTERS exact filters that nothing
//! is published to (1,000 per client, the default `limits.max_subscriptions_per_client`)
//! and one subscriber to `t/+`, then publishes N QoS 1 messages to N topics of their own
//! (`t/<i>`, as devices that each publish to their own topic under one wildcard
//! subscription), then N to one topic (`t/x`). It prints the rate of each, until the
//! subscriber had them all, and the broker's RSS before and after the N topics.

use super::{launch, wait_suback, Kind};
use rumqttc::{AsyncClient, MqttOptions, QoS, SubscribeFilter};
use std::time::{Duration, Instant};

/// See the module doc.
pub fn table(n: u64, filters: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = launch(Kind::Sealpost);
    let (port, pid) = (broker.port, broker.child.id());
    rt.block_on(async {
        let mut holders = Vec::new();
        for (chunk, first) in (0..filters).step_by(1000).enumerate() {
            let (c, mut el) = AsyncClient::new(options(&format!("filters-{chunk}"), port), 10);
            let last = (first + 1000).min(filters);
            let wanted = (first..last).map(|i| SubscribeFilter::new(format!("f/{i}"), QoS::AtMostOnce));
            c.subscribe_many(wanted).await.unwrap();
            wait_suback(&mut el).await;
            holders.push((c, tokio::spawn(async move { while el.poll().await.is_ok() {} })));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = super::footprint::rss_kib(pid);
        let distinct = run(port, n, |i| format!("t/{i}")).await;
        let after = super::footprint::rss_kib(pid);
        let one = run(port, n, |_| "t/x".to_owned()).await;
        println!("| filters | messages | msg/s, a topic each | msg/s, one topic | RSS before | RSS after the topics | per topic |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {filters} | {n} | {distinct:.0} | {one:.0} | {before} KiB | {after} KiB | {:.0} B |",
            (after as f64 - before as f64) * 1024.0 / n as f64
        );
        drop(holders);
    });
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(60));
    o
}

/// Publishes `n` QoS 1 messages of 16 bytes, the i-th to `topic(i)`, and returns the
/// rate until a subscriber to `t/+` had them all.
async fn run(port: u16, n: u64, topic: impl Fn(u64) -> String) -> f64 {
    let (sub, mut sub_loop) = AsyncClient::new(
        options(&format!("t-sub-{}", super::rand_suffix()), port),
        10,
    );
    sub.subscribe("t/+", QoS::AtLeastOnce).await.unwrap();
    wait_suback(&mut sub_loop).await;
    let counted = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            match tokio::time::timeout(Duration::from_secs(30), sub_loop.poll()).await {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)))) => got += 1,
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
        (got, Instant::now())
    });
    let (publisher, mut pub_loop) = AsyncClient::new(
        options(&format!("t-pub-{}", super::rand_suffix()), port),
        n as usize,
    );
    let publishing = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let start = Instant::now();
    for i in 0..n {
        publisher
            .publish(topic(i), QoS::AtLeastOnce, false, vec![0xa5; 16])
            .await
            .unwrap();
    }
    let (got, end) = counted.await.unwrap();
    assert_eq!(got, n, "every message delivered");
    publishing.abort();
    drop(sub);
    n as f64 / end.duration_since(start).as_secs_f64()
}
