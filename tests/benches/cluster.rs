//! Sealed and plain throughput through a three-node NATS cluster (publisher and
//! subscriber on different nodes), beside a single NATS server and the sealpost broker,
//! in one run (docs/BENCHMARKS.md, "Cluster"). A bench target: it measures, it asserts
//! nothing.
//!
//! ```sh
//! cargo bench -p sealpost-tests --bench cluster                  # 5,000 messages a cell
//! cargo bench -p sealpost-tests --bench cluster -- --messages 20000
//! ```
//!
//! Every cell: QoS 1, 256-byte payloads, one publisher and one subscriber, both over TLS
//! with their certificates (the cluster's authorization comes from
//! `sealpost_certs::nats`); msg/s = messages / (last receipt - first send). Plain cells
//! use raw rumqttc clients with the same certificates, sealed cells the SDKs.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use rumqttc::{MqttOptions, QoS};
use sealpost_certs::Issued;
use sealpost_subscriber::Event;
use sealpost_tests::nats::NatsCluster;
use sealpost_tests::{Broker, BrokerKind, Pki, RawClient};

const SIZE: usize = 256;
const TOPIC: &str = "bench/cluster";

/// Where the publisher and the subscriber connect.
enum Target {
    Nats {
        cluster: NatsCluster,
        sub_node: usize,
    },
    Sealpost(Broker),
}

impl Target {
    fn options(&self, pki: &Pki, issued: &Issued, publisher: bool, id: &str) -> MqttOptions {
        match self {
            Target::Nats { cluster, sub_node } => {
                cluster.client_options(issued, if publisher { 0 } else { *sub_node }, id)
            }
            Target::Sealpost(broker) => sealpost_publisher::transport::mqtt_options(
                id,
                &broker.tls_address(),
                Some(&pki.tls_identity(Some(issued))),
                Duration::from_secs(30),
            )
            .expect("options"),
        }
    }
}

struct Parties {
    pki: Pki,
    publisher: Issued,
    subscriber: Issued,
}

async fn plain(p: &Parties, target: &Target, n: usize, tag: &str) -> f64 {
    let mut sub = RawClient::connect_with(
        target.options(&p.pki, &p.subscriber, false, &format!("plain-sub-{tag}")),
        Some("bench/#"),
    )
    .await;
    let publ = RawClient::connect_with(
        target.options(&p.pki, &p.publisher, true, &format!("plain-pub-{tag}")),
        None,
    )
    .await;
    let payload = vec![7u8; SIZE];
    let start = Instant::now();
    let sending = async {
        for _ in 0..n {
            publ.client
                .publish(TOPIC, QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("publish");
        }
    };
    let receiving = async {
        for _ in 0..n {
            sub.next_on(TOPIC).await;
        }
    };
    tokio::join!(sending, receiving);
    n as f64 / start.elapsed().as_secs_f64()
}

async fn sealed(p: &Parties, target: &Target, n: usize, tag: &str) -> f64 {
    let (pub_config, sub_config) = match target {
        Target::Nats { cluster, sub_node } => (
            cluster.publisher_config(&p.pki, &p.publisher, 0, &format!("pub-{tag}")),
            cluster.subscriber_config(&p.pki, &p.subscriber, *sub_node),
        ),
        Target::Sealpost(broker) => (
            p.pki
                .publisher_config(broker, &p.publisher, &format!("pub-{tag}")),
            p.pki.subscriber_config(broker, &p.subscriber),
        ),
    };
    let publisher = sealpost_tests::publisher(pub_config).await;
    let mut subscriber = sealpost_tests::subscriber(sub_config, "bench/#").await;
    publisher
        .grant_pem(&p.subscriber.certificate_pem)
        .await
        .expect("grant");
    // The key arrives before the flood is timed.
    publisher
        .publish(TOPIC, b"warm-up", QoS::AtLeastOnce, false)
        .await
        .expect("publish");
    sealpost_tests::expect_message(&mut subscriber).await;
    let payload = vec![7u8; SIZE];
    let start = Instant::now();
    let sending = async {
        for _ in 0..n {
            publisher
                .publish(TOPIC, &payload, QoS::AtLeastOnce, false)
                .await
                .expect("publish");
        }
    };
    let receiving = async {
        let mut got = 0;
        while got < n {
            match sealpost_tests::next_event(&mut subscriber).await {
                Event::Message(_) => got += 1,
                other => panic!("sealed bench: {other:?}"),
            }
        }
    };
    tokio::join!(sending, receiving);
    n as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args
        .iter()
        .position(|a| a == "--messages")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let pki = Pki::new("bench CA");
    let parties = Parties {
        publisher: pki.publisher("bench-pub", &["bench/#"]),
        subscriber: pki.subscriber("bench-sub"),
        pki,
    };
    let infos: Vec<_> = [&parties.publisher, &parties.subscriber]
        .iter()
        .map(|i| {
            sealpost_certs::parse(
                &sealpost_certs::pemfile::decode(
                    &i.certificate_pem,
                    sealpost_certs::pemfile::CERTIFICATE,
                )
                .expect("PEM"),
            )
            .expect("certificate")
        })
        .collect();
    let authorization =
        sealpost_certs::nats::authorization(&infos, &["bench/#".to_owned()]).expect("export");

    println!(
        "\n### Cluster: QoS 1, {SIZE} B, 1 -> 1, {n} messages a cell, TLS with certificates\n"
    );
    println!("| broker | plain msg/s | sealed msg/s | sealed/plain |");
    println!("|---|---|---|---|");
    let three = NatsCluster::start(&parties.pki, &authorization).await;
    row(
        &parties,
        &Target::Nats {
            cluster: three,
            sub_node: 1,
        },
        n,
        "NATS, 3 nodes (publisher on node 1, subscriber on node 2)",
        "n3",
    )
    .await;
    let one = NatsCluster::start_nodes(&parties.pki, &authorization, 1).await;
    row(
        &parties,
        &Target::Nats {
            cluster: one,
            sub_node: 0,
        },
        n,
        "NATS, 1 node",
        "n1",
    )
    .await;
    let broker = Broker::start(BrokerKind::Sealpost, &parties.pki);
    row(
        &parties,
        &Target::Sealpost(broker),
        n,
        "sealpost broker",
        "sp",
    )
    .await;
}

/// Measures plain, then sealed, through `target`, and prints the row.
async fn row(p: &Parties, target: &Target, n: usize, name: &str, tag: &str) {
    let plain = plain(p, target, n, tag).await;
    let sealed = sealed(p, target, n, tag).await;
    println!(
        "| {name} | {plain:.0} | {sealed:.0} | {:.2} |",
        sealed / plain
    );
}
