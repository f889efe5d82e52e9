//! The SDKs on a clustered broker (issue 19): a three-node NATS cluster with JetStream
//! and MQTT ([`sealpost_tests::nats`]), its authorization written by
//! `sealpost-certs export-nats`. The publisher and its subscribers sit on different
//! nodes, so every message and key message crosses the cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::QoS;
use sealpost_certs::Issued;
use sealpost_protocol::Rejected;
use sealpost_publisher::Publisher;
use sealpost_subscriber::{Event, Subscriber};
use sealpost_tests::nats::{write_certificates, NatsCluster, NODES};
use sealpost_tests::tools::{ok, tool};
use sealpost_tests::*;

/// Runs a scenario with an overall time limit, so a bug can fail a test but never hang
/// it, and one scenario at a time: each starts three `nats-server` nodes, and several
/// clusters at once on a small machine starve each other's elections and replication.
async fn bounded<F: std::future::Future<Output = ()>>(scenario: F) {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(Duration::from_secs(180), scenario)
        .await
        .expect("scenario finished within its time limit");
}

/// The topics subscribers may read in these tests.
const DATA: &str = "sensors/#";

/// Writes the CA (and its revocation list) where `sealpost-certs --dir` looks for them,
/// and runs `sealpost-certs export-nats --read sensors/# <certificates>`.
fn export_authorization(pki: &Pki, certificates: &[(&str, &Issued)]) -> String {
    let dir = pki.dir();
    std::fs::write(dir.join("ca.pem"), pki.ca_pem()).expect("write CA");
    let _ = pki.crl_path();
    let paths: Vec<PathBuf> = write_certificates(dir, certificates);
    let output = ok(tool("sealpost-certs")
        .arg("--dir")
        .arg(dir)
        .arg("export-nats")
        .args(["--read", DATA])
        .args(&paths));
    String::from_utf8(output.stdout).expect("UTF-8 configuration")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_traffic_crosses_the_cluster_to_granted_readers_only() {
    bounded(async {
        let pki = Pki::new("cluster CA");
        let sensor = pki.publisher("sensor-1", &["sensors/#"]);
        let (alice, bob, carol, eve) = (
            pki.subscriber("alice"),
            pki.subscriber("bob"),
            pki.subscriber("carol"),
            pki.subscriber("eve"),
        );
        let authorization = export_authorization(
            &pki,
            &[
                ("sensor-1", &sensor),
                ("alice", &alice),
                ("bob", &bob),
                ("carol", &carol),
                ("eve", &eve),
            ],
        );
        let cluster = NatsCluster::start(&pki, &authorization).await;

        let mut spy = cluster.spy(1).await;
        let mut a = subscriber(cluster.subscriber_config(&pki, &alice, 1), DATA).await;
        let mut b = subscriber(cluster.subscriber_config(&pki, &bob, 2), DATA).await;
        let mut e = subscriber(cluster.subscriber_config(&pki, &eve, 2), DATA).await;
        let p = publisher(cluster.publisher_config(&pki, &sensor, 0, "pub")).await;
        for reader in [&alice, &bob, &carol] {
            p.grant_pem(&reader.certificate_pem).await.unwrap();
        }
        let texts = ["secret reading 41", "secret reading 42"];
        for text in texts {
            p.publish("sensors/temp", text.as_bytes(), QoS::AtLeastOnce, false)
                .await
                .unwrap();
        }
        for s in [&mut a, &mut b] {
            for text in texts {
                let m = expect_message(s).await;
                assert_eq!(m.payload, text.as_bytes());
                assert_eq!(m.publisher, "sensor-1");
            }
        }
        for _ in texts {
            let r = expect_rejection(&mut e).await;
            assert!(r.reason.is_retryable(), "{r:?}");
        }
        assert_eq!(e.counters().delivered_total(), 0);

        // Carol was granted while offline: her key message waits, retained and
        // replicated, on the node she connects to.
        let mut c = subscriber(cluster.subscriber_config(&pki, &carol, 2), DATA).await;
        p.publish(
            "sensors/temp",
            b"secret for the late reader",
            QoS::AtLeastOnce,
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            expect_message(&mut c).await.payload,
            b"secret for the late reader"
        );
        for s in [&mut a, &mut b] {
            assert_eq!(
                expect_message(s).await.payload,
                b"secret for the late reader"
            );
        }

        // Revoking bob rotates the key: what follows is for alice and carol only.
        let epoch = p.epoch().await;
        p.revoke("bob").await.unwrap();
        p.publish("sensors/temp", b"after bob", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        for s in [&mut a, &mut c] {
            let m = expect_message(s).await;
            assert_eq!(m.payload, b"after bob");
            assert_eq!(m.epoch, epoch + 1);
        }
        let r = expect_rejection(&mut b).await;
        assert!(
            matches!(r.reason, Rejected::UnknownKey { epoch: e, .. } if e == epoch + 1),
            "{r:?}"
        );

        // The operator's `#` spy saw the envelopes and key messages, never plaintext.
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.extend(spy.collect_until("sensors/temp").await);
        }
        seen.extend(spy.drain());
        assert!(seen
            .iter()
            .any(|(t, _)| t.starts_with("sealpost/keys/sensor-1/")));
        for (_, payload) in &seen {
            assert!(
                !contains(payload, b"secret"),
                "plaintext crossed the cluster"
            );
        }
    })
    .await;
}

#[test]
fn export_nats_leaves_out_revoked_certificates_and_refuses_filters_reaching_key_topics() {
    let dir = tempfile::tempdir().unwrap();
    let certs = |args: &[&str]| {
        let mut c = tool("sealpost-certs");
        c.arg("--dir").arg(dir.path()).args(args);
        c
    };
    ok(&mut certs(&["init"]));
    ok(&mut certs(&[
        "issue",
        "publisher",
        "--id",
        "sensor-1",
        "--topics",
        "plant/#",
    ]));
    ok(&mut certs(&[
        "issue",
        "publisher",
        "--id",
        "wide",
        "--topics",
        "#",
    ]));
    for id in ["bob", "eve"] {
        ok(&mut certs(&["issue", "subscriber", "--id", id]));
    }
    let pem = |id: &str| dir.path().join(format!("{id}.pem"));
    ok(certs(&["revoke"]).arg(pem("eve")));

    let out = ok(certs(&["export-nats", "--read", "plant/#"])
        .arg(pem("sensor-1"))
        .arg(pem("bob"))
        .arg(pem("eve")));
    let conf = String::from_utf8(out.stdout).unwrap();
    assert!(conf.contains(r#"user: "CN=sensor-1""#), "{conf}");
    assert!(conf.contains(r#""sealpost.keys.*.bob""#), "{conf}");
    assert!(
        !conf.contains("CN=eve"),
        "a revoked certificate was exported:\n{conf}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("leaving out"));

    // Filters NATS could only allow together with every publisher's key topics.
    for (read, cert) in [("#", "sensor-1"), ("plant/#", "wide")] {
        let out =
            sealpost_tests::tools::run(certs(&["export-nats", "--read", read]).arg(pem(cert)));
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("reaches into sealpost/keys/"),
            "{out:?}"
        );
    }
}

/// The retained message on `topic`, as a new `#` subscriber on `node` gets it (the
/// operator's spy), once `sentinel` (published after subscribing) shows that everything
/// retained has been sent.
async fn retained_on(cluster: &NatsCluster, p: &Publisher, node: usize, topic: &str) -> Bytes {
    let mut spy = cluster.spy(node).await;
    p.publish("sensors/temp", b"sentinel", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let seen = spy.collect_until("sensors/temp").await;
    let retained: Vec<_> = seen.into_iter().filter(|(t, _)| t == topic).collect();
    assert_eq!(retained.len(), 1, "one retained message on {topic}");
    retained.into_iter().next().unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_refuses_key_topic_writes_and_publishes_outside_a_certificate() {
    bounded(async {
        let pki = Pki::new("cluster CA");
        let sensor = pki.publisher("sensor-1", &["sensors/#"]);
        let rogue = pki.publisher("rogue", &["rogue/#"]);
        let (bob, eve) = (pki.subscriber("bob"), pki.subscriber("eve"));
        let authorization = export_authorization(
            &pki,
            &[
                ("sensor-1", &sensor),
                ("rogue", &rogue),
                ("bob", &bob),
                ("eve", &eve),
            ],
        );
        let cluster = NatsCluster::start(&pki, &authorization).await;
        let p = publisher(cluster.publisher_config(&pki, &sensor, 0, "pub")).await;
        p.grant_pem(&bob.certificate_pem).await.unwrap();
        let key_topic = "sealpost/keys/sensor-1/bob";
        let before = retained_on(&cluster, &p, 1, key_topic).await;

        // A subscriber and another publisher try to replace bob's retained key message,
        // and to write data outside their certificates' topics. The clients stay
        // connected until the nodes have dealt with their publishes (dropping one
        // stops its event loop, perhaps before it sent them).
        let mut forgers = Vec::new();
        for (who, issued, node) in [("eve", &eve, 1), ("rogue", &rogue, 2)] {
            let raw =
                RawClient::connect_with(cluster.client_options(issued, node, who), None).await;
            for (topic, retain, payload) in [
                (key_topic, true, &b"forged key message"[..]),
                ("sensors/temp", false, &b"forged data"[..]),
            ] {
                raw.client
                    .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
                    .await
                    .unwrap();
            }
            forgers.push(raw);
        }
        // nats-server 2.15 names the connection by its MQTT client ID (here the
        // forger's name, and each forger connects with its own certificate).
        let violation = |node: usize, client_id: &str, subject: &str| {
            let needle = format!("\"{client_id}\" - Publish Violation - Subject \"{subject}\"");
            cluster.log(node).contains(&needle)
        };
        let deadline = std::time::Instant::now() + WAIT;
        while !(violation(1, "eve", "sealpost.keys.sensor-1.bob")
            && violation(1, "eve", "sensors.temp")
            && violation(2, "rogue", "sealpost.keys.sensor-1.bob")
            && violation(2, "rogue", "sensors.temp"))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the nodes did not refuse every forged publish:\n{}\n{}",
                cluster.log(1),
                cluster.log(2)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(forgers);

        // What is retained on bob's key topic is still the publisher's, byte for byte,
        // on every node; bob, connecting afterwards, gets it and reads.
        for node in 0..NODES {
            assert_eq!(retained_on(&cluster, &p, node, key_topic).await, before);
        }
        let mut b = subscriber(cluster.subscriber_config(&pki, &bob, 2), DATA).await;
        p.publish("sensors/temp", b"still readable", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(expect_message(&mut b).await.payload, b"still readable");
    })
    .await;
}

/// Messages in the node-loss stream, and how many the first subscriber has read when
/// its node is killed.
const STREAM: u64 = 10_000;
const KILL_AT: usize = 3_000;

/// What one subscriber saw of the stream: each message number's deliveries, and the
/// sequence numbers refused as already seen (copies the cluster sent again).
#[derive(Default)]
struct StreamSeen {
    delivered: BTreeMap<u64, u32>,
    /// Payload number by sequence number, for what was delivered.
    seq_of: BTreeMap<u64, u64>,
    replayed: Vec<u64>,
}

impl StreamSeen {
    /// Reads `s` until `until` distinct messages were delivered. Panics on a second
    /// delivery of a message and on any rejection but `Replayed`; a stall (nothing for
    /// [`WAIT`]) ends the read with a report naming the missing numbers and what was
    /// refused, so that a loss can be told from a delay.
    async fn read(&mut self, s: &mut Subscriber, name: &str, until: usize) -> Result<(), String> {
        while self.delivered.len() < until {
            let event = match tokio::time::timeout(WAIT, s.next()).await {
                Ok(event) => event.expect("subscriber running"),
                Err(_) => {
                    return Err(format!(
                        "{name} stalled: {}; {:?}",
                        self.missing_report(),
                        s.counters()
                    ))
                }
            };
            match event {
                Event::Message(m) => {
                    let n: u64 = String::from_utf8(m.payload).unwrap().parse().unwrap();
                    let count = self.delivered.entry(n).or_default();
                    *count += 1;
                    assert_eq!(*count, 1, "{name}: message {n} delivered twice");
                    self.seq_of.insert(m.seq, n);
                }
                Event::Rejected(r) => match r.reason {
                    Rejected::Replayed { seq, .. } => self.replayed.push(seq),
                    other => panic!("{name}: unexpected rejection {other:?}"),
                },
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
        Ok(())
    }

    fn missing_report(&self) -> String {
        // Runs of consecutive missing numbers, as `first..=last`.
        let mut missing: Vec<(u64, u64)> = Vec::new();
        for n in (0..STREAM).filter(|n| !self.delivered.contains_key(n)) {
            match missing.last_mut() {
                Some((_, last)) if *last + 1 == n => *last = n,
                _ => missing.push((n, n)),
            }
        }
        let missing: Vec<String> = missing
            .iter()
            .take(20)
            .map(|(first, last)| format!("{first}..={last}"))
            .collect();
        let refused_unseen: Vec<u64> = self
            .replayed
            .iter()
            .filter(|seq| !self.seq_of.contains_key(seq))
            .copied()
            .take(20)
            .collect();
        format!(
            "{} of {STREAM} delivered; missing {missing:?}; {} refused as replayed, \
             of which never delivered (by sequence number) {refused_unseen:?}",
            self.delivered.len(),
            self.replayed.len()
        )
    }
}

/// Issue 19: a node is killed (SIGKILL) while a QoS 1 stream of 10,000 sealed messages
/// flows from a publisher on node 0 to subscribers on nodes 1 and 2. The subscriber on
/// the killed node fails over to another node, where the cluster kept its session; both
/// deliver every message exactly once. The killed node restarts and rejoins, and a reader
/// who connects to it afterwards finds its retained key message there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_loses_no_message_and_rejoins() {
    bounded(async {
        let pki = Pki::new("cluster CA");
        let sensor = pki.publisher("sensor-1", &["sensors/#"]);
        let (alice, bob, carol) = (
            pki.subscriber("alice"),
            pki.subscriber("bob"),
            pki.subscriber("carol"),
        );
        let authorization = export_authorization(
            &pki,
            &[
                ("sensor-1", &sensor),
                ("alice", &alice),
                ("bob", &bob),
                ("carol", &carol),
            ],
        );
        let mut cluster = NatsCluster::start(&pki, &authorization).await;
        // Each client knows every node, its own first.
        let config_on = |issued: &Issued, node: usize, client_id: &str| {
            let mut config = cluster.subscriber_config(&pki, issued, node);
            config.failover = (1..NODES)
                .map(|k| cluster.address((node + k) % NODES))
                .collect();
            config.client_id = Some(client_id.into());
            config.persistent_session = true;
            config
        };
        let mut a = subscriber(config_on(&alice, 1, "alice-1"), DATA).await;
        let mut b = subscriber(config_on(&bob, 2, "bob-1"), DATA).await;
        let mut config = cluster.publisher_config(&pki, &sensor, 0, "pub");
        config.failover = (1..NODES).map(|k| cluster.address(k)).collect();
        let p = std::sync::Arc::new(publisher(config).await);
        for reader in [&alice, &bob, &carol] {
            p.grant_pem(&reader.certificate_pem).await.unwrap();
        }

        let stream = spawn_numbered_stream(p.clone(), "sensors/t", STREAM, None);
        let (mut seen_a, mut seen_b) = (StreamSeen::default(), StreamSeen::default());
        seen_a
            .read(&mut a, "alice", KILL_AT)
            .await
            .expect("alice reads up to the kill");
        cluster.kill(1);
        let (read_a, read_b) = tokio::join!(
            seen_a.read(&mut a, "alice", STREAM as usize),
            seen_b.read(&mut b, "bob", STREAM as usize)
        );
        // Both reports, when one stalled: a message neither got never reached the
        // cluster; one only the other got was lost on its way to the first.
        if read_a.is_err() || read_b.is_err() {
            panic!(
                "{}\n{}",
                read_a
                    .err()
                    .unwrap_or_else(|| "alice got everything".into()),
                read_b.err().unwrap_or_else(|| "bob got everything".into())
            );
        }
        stream.await.unwrap();
        eprintln!(
            "node 1 killed after {KILL_AT}: alice and bob got {STREAM} messages once each \
             ({} and {} copies sent again were refused as replayed)",
            seen_a.replayed.len(),
            seen_b.replayed.len()
        );

        // The killed node comes back and rejoins; carol, granted before the kill and never
        // connected, finds her retained key message on it.
        cluster.restart(1).await;
        let mut c = subscriber(cluster.subscriber_config(&pki, &carol, 1), DATA).await;
        p.publish("sensors/t", b"after the restart", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        // Carol may first get earlier messages of the stream: her consumer starts from the
        // restarted node's copy of the stream while it catches up, and the publisher sends
        // its last envelopes again after each failover. Granted, she reads each once
        // (copies are refused as replayed), then the new one.
        let mut read_by_carol = std::collections::BTreeSet::new();
        loop {
            match next_event(&mut c).await {
                Event::Message(m) if m.payload == b"after the restart" => break,
                Event::Message(m) => {
                    let n: u64 = String::from_utf8(m.payload).unwrap().parse().unwrap();
                    assert!(n < STREAM, "carol read {n}");
                    assert!(read_by_carol.insert(n), "carol read {n} twice");
                }
                Event::Rejected(r) if matches!(r.reason, Rejected::Replayed { .. }) => {}
                other => panic!("carol: unexpected {other:?}"),
            }
        }
    })
    .await;
}

/// A broker that, like nats-server 2.10 and later, acknowledges a retained PUBLISH
/// before a SUBSCRIBE can find it: a retained message reaches subscriptions made
/// `delay` after it arrived, not before. One connection at a time; counts SUBSCRIBEs.
async fn late_retaining_broker(
    listener: tokio::net::TcpListener,
    delay: Duration,
    subscribes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use rumqttc::mqttbytes::v4::{
        ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
    };
    use sealpost_tests::fake_broker::FakeConnection;

    while let Ok((stream, _)) = listener.accept().await {
        let mut connection = FakeConnection::new(stream);
        let mut retained: BTreeMap<String, (Bytes, tokio::time::Instant)> = BTreeMap::new();
        while let Some(packet) = connection.read().await {
            let replies = match packet {
                Packet::Connect(_) => vec![Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::Success,
                    false,
                ))],
                Packet::Publish(p) => {
                    if p.retain {
                        let at = tokio::time::Instant::now();
                        retained.insert(p.topic.clone(), (p.payload.clone(), at));
                    }
                    match p.qos {
                        QoS::AtMostOnce => vec![],
                        _ => vec![Packet::PubAck(PubAck::new(p.pkid))],
                    }
                }
                Packet::Subscribe(s) => {
                    subscribes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let codes = s
                        .filters
                        .iter()
                        .map(|_| SubscribeReasonCode::Success(QoS::AtMostOnce))
                        .collect();
                    let mut replies = vec![Packet::SubAck(SubAck::new(s.pkid, codes))];
                    for filter in &s.filters {
                        match retained.get(&filter.path) {
                            Some((payload, at)) if at.elapsed() >= delay => {
                                let mut p =
                                    Publish::new(&filter.path, QoS::AtMostOnce, payload.to_vec());
                                p.retain = true;
                                replies.push(Packet::Publish(p));
                            }
                            _ => {}
                        }
                    }
                    replies
                }
                Packet::Unsubscribe(u) => vec![Packet::UnsubAck(UnsubAck::new(u.pkid))],
                Packet::PingReq => vec![Packet::PingResp],
                Packet::Disconnect => break,
                _ => vec![],
            };
            if !connection.write(replies).await {
                break;
            }
        }
    }
}

/// A grant reads its key message back from the broker. On a broker that acknowledges a
/// retained PUBLISH before a new subscription can find it (nats-server since 2.10 keeps
/// retained messages in a stream each node reads back asynchronously), the first
/// SUBSCRIBE comes back empty: the publisher subscribes again until the key message is
/// there, and the grant succeeds well within its time limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_reads_back_a_key_message_the_broker_retains_late() {
    let pki = Pki::new("late CA");
    let sensor = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let subscribes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let broker = tokio::spawn(late_retaining_broker(
        listener,
        Duration::from_millis(500),
        subscribes.clone(),
    ));
    let mut config = pki.publisher_config_at(
        sealpost_publisher::BrokerAddress::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        &sensor,
        "pub",
    );
    config.confirm_key_messages = Some(Duration::from_secs(3));
    let p = publisher(config).await;
    let started = std::time::Instant::now();
    p.grant_pem(&alice.certificate_pem)
        .await
        .expect("the grant succeeds once the key message is retained");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let n = subscribes.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n >= 2, "the publisher subscribed {n} time(s)");
    drop(p);
    broker.abort();
}
