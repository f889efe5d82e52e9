//! Durable sessions (issue 15 items 1-2): the broker binary with a data directory is
//! killed with SIGKILL and started again on the same directory; what it acknowledged
//! before the crash is delivered after it, as MQTT requires.

mod common;

use common::process::BrokerProcess;
use common::v5::{self, V5};
use common::{v4_options, V4};
use rumqttc::{Event, Outgoing, Packet, QoS};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A data directory and the configuration file that points at it.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    /// `extra`: more TOML (other sections than `[storage]` and `[limits]`).
    fn new(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = dir.path().join("broker.toml");
        std::fs::write(
            &config,
            format!(
                "[[listener]]\nkind = \"tcp\"\nbind = \"127.0.0.1:0\"\n\n\
                 [limits]\nmax_queued_messages = 0\n\n\
                 [storage]\npath = \"{}\"\n\n{extra}",
                data.display()
            ),
        )
        .unwrap();
        Setup { dir, config }
    }

    /// As `new("")`, with `sync = "periodic"` every 200 ms.
    fn periodic() -> Setup {
        let setup = Setup::new("");
        let toml = std::fs::read_to_string(&setup.config).unwrap().replace(
            "[storage]\n",
            "[storage]\nsync = \"periodic\"\nsync_interval_ms = 200\n",
        );
        std::fs::write(&setup.config, toml).unwrap();
        setup
    }

    fn start(&self) -> (BrokerProcess, SocketAddr) {
        let broker = BrokerProcess::start(&self.config, 1);
        let addr = broker.addr("Tcp");
        (broker, addr)
    }

    fn store_file(&self) -> PathBuf {
        self.dir.path().join("data").join("sealpost.redb")
    }
}

/// SIGKILL, and wait until the process is gone (its file lock with it).
fn crash(broker: BrokerProcess) {
    broker.signal("KILL");
    drop(broker);
}

fn persistent_v4(id: &str, addr: SocketAddr, manual_acks: bool) -> V4 {
    let mut o = v4_options(id, addr);
    o.set_clean_session(false);
    o.set_manual_acks(manual_acks);
    o.set_inflight(1000);
    V4::start(o)
}

/// Publishes `count` QoS 1 messages numbered from 0 (payload: the number, big-endian)
/// on `topic/N % 4`, until `stop_after` of them are acknowledged. Returns the numbers
/// acknowledged.
async fn publish_numbered(
    addr: SocketAddr,
    topic: &str,
    count: u32,
    stop_after: u32,
) -> HashSet<u32> {
    let mut publisher = V4::connect(&format!("pub-{}", common::rand_id()), addr).await;
    let client = publisher.client.clone();
    let topic = topic.to_owned();
    let sender = tokio::spawn(async move {
        for i in 0..count {
            if client
                .publish(
                    format!("{topic}/{}", i % 4),
                    QoS::AtLeastOnce,
                    false,
                    i.to_be_bytes().to_vec(),
                )
                .await
                .is_err()
            {
                return;
            }
        }
    });
    // Publishes go out in the order they were requested: the n-th outgoing PUBLISH is
    // message n, and its packet id says which PUBACK is for it.
    let mut next = 0u32;
    let mut by_pkid: HashMap<u16, u32> = HashMap::new();
    let mut acked = HashSet::new();
    while (acked.len() as u32) < stop_after {
        match publisher.next().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                by_pkid.insert(pkid, next);
                next += 1;
            }
            Ok(Event::Incoming(Packet::PubAck(a))) => {
                let n = by_pkid.remove(&a.pkid).expect("PUBACK for a message sent");
                acked.insert(n);
            }
            Ok(_) => {}
            Err(e) => panic!("publisher: {e} after {} acknowledgements", acked.len()),
        }
    }
    sender.abort();
    acked
}

/// Receives until every number in `expected` has arrived (or panics at a 60 s
/// deadline); returns (numbers received, deliveries of a number already received
/// without DUP set).
async fn receive_numbers(sub: &mut V4, expected: &HashSet<u32>) -> (HashSet<u32>, usize) {
    let mut got = HashSet::new();
    let mut duplicates_without_dup = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !expected.is_subset(&got) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} received",
            got.intersection(expected).count(),
            expected.len()
        );
        if let Ok(Event::Incoming(Packet::Publish(p))) = sub.next().await {
            let n = u32::from_be_bytes(p.payload[..4].try_into().expect("numbered payload"));
            if !got.insert(n) && !p.dup {
                duplicates_without_dup += 1;
            }
        }
    }
    (got, duplicates_without_dup)
}

/// Receives `count` numbered messages, each with DUP (sent again after a crash), and
/// returns their numbers.
async fn receive_again(sub: &mut V4, count: usize) -> HashSet<u32> {
    let mut again = HashSet::new();
    while again.len() < count {
        let p = sub.publish_msg().await.expect("a redelivery");
        assert!(p.dup, "a redelivery carries DUP");
        again.insert(u32::from_be_bytes(p.payload[..4].try_into().unwrap()));
    }
    again
}

async fn subscribe_and_leave(id: &str, addr: SocketAddr, filter: &str) {
    let mut sub = persistent_v4(id, addr, false);
    sub.connack().await.unwrap();
    sub.subscribe(filter, QoS::AtLeastOnce).await;
    // Dropped: the connection closes without DISCONNECT; the session stays.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_acknowledged_messages_survive_a_sigkill() {
    let setup = Setup::new("");
    let (broker, addr) = setup.start();
    subscribe_and_leave("durable-sub", addr, "d/#").await;
    let acked = publish_numbered(addr, "d", 10_000, 10_000).await;
    assert_eq!(acked.len(), 10_000);
    crash(broker);

    let (_broker, addr) = setup.start();
    let mut sub = persistent_v4("durable-sub", addr, false);
    assert!(
        sub.connack().await.unwrap().session_present,
        "session present = 1"
    );
    let (got, bad_duplicates) = receive_numbers(&mut sub, &acked).await;
    assert_eq!(got.len(), 10_000);
    assert_eq!(bad_duplicates, 0, "duplicates only with DUP set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_a_sigkill_in_the_middle_of_publishing() {
    let setup = Setup::new("");
    let (broker, addr) = setup.start();
    subscribe_and_leave("mid-sub", addr, "m/#").await;
    // The broker dies while the publisher still has messages in flight.
    let acked = publish_numbered(addr, "m", 50_000, 3_000).await;
    crash(broker);

    let (_broker, addr) = setup.start();
    let mut sub = persistent_v4("mid-sub", addr, false);
    assert!(sub.connack().await.unwrap().session_present);
    let (got, bad_duplicates) = receive_numbers(&mut sub, &acked).await;
    assert!(acked.is_subset(&got));
    assert_eq!(bad_duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_but_not_acknowledged_before_the_crash_come_again_with_dup() {
    let setup = Setup::new("");
    let (broker, addr) = setup.start();
    let mut sub = persistent_v4("unacked-sub", addr, true);
    sub.connack().await.unwrap();
    sub.subscribe("u/#", QoS::AtLeastOnce).await;
    let acked = publish_numbered(addr, "u", 5, 5).await;
    // The subscriber receives all five and acknowledges none.
    let mut seen = HashSet::new();
    while seen.len() < 5 {
        let p = sub.publish_msg().await.expect("a delivery");
        assert!(!p.dup, "first delivery");
        seen.insert(u32::from_be_bytes(p.payload[..4].try_into().unwrap()));
    }
    assert_eq!(seen, acked);
    crash(broker);
    drop(sub);

    let (_broker, addr) = setup.start();
    let mut sub = persistent_v4("unacked-sub", addr, false);
    assert!(sub.connack().await.unwrap().session_present);
    assert_eq!(receive_again(&mut sub, 5).await, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_acknowledged_by_the_subscriber_are_not_delivered_again() {
    let setup = Setup::new("");
    let (broker, addr) = setup.start();
    let mut sub = persistent_v4("acked-sub", addr, false);
    sub.connack().await.unwrap();
    sub.subscribe("a/#", QoS::AtLeastOnce).await;
    let first = publish_numbered(addr, "a", 20, 20).await;
    let (got, _) = receive_numbers(&mut sub, &first).await;
    assert_eq!(got, first);
    // Let the acknowledgements reach the store, then leave and crash.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(sub);
    tokio::time::sleep(Duration::from_millis(300)).await;
    crash(broker);

    let (_broker, addr) = setup.start();
    let mut sub = persistent_v4("acked-sub", addr, false);
    assert!(sub.connack().await.unwrap().session_present);
    // A new message after the restart is the first thing the session gets.
    let mut publisher = V4::connect("acked-pub", addr).await;
    publisher
        .client
        .publish(
            "a/new",
            QoS::AtLeastOnce,
            false,
            999u32.to_be_bytes().to_vec(),
        )
        .await
        .unwrap();
    loop {
        match sub.next().await.expect("the new message") {
            Event::Incoming(Packet::Publish(p)) => {
                assert_eq!(
                    &p.payload[..],
                    &999u32.to_be_bytes(),
                    "acknowledged message delivered again"
                );
                break;
            }
            _ => continue,
        }
    }
    let _ = publisher.next().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_counts_across_the_restart() {
    let setup = Setup::new("");
    let (broker, addr) = setup.start();
    for (id, expiry) in [("short", 2), ("long", 3600)] {
        let mut o = v5::options(id, addr);
        o.set_clean_start(true);
        o.set_session_expiry_interval(Some(expiry));
        let mut c = V5::start(o).await;
        c.subscribe(v5::filter("e/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce))
            .await;
        c.client.disconnect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    publish_numbered(addr, "e", 3, 3).await;
    crash(broker);
    // Longer than the short session's expiry, with the broker down.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (_broker, addr) = setup.start();
    let resume = |id: &str, expiry| {
        let mut o = v5::options(id, addr);
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(expiry));
        o
    };
    // (Expiry 0 now, so that this connection leaves no new session in the store.)
    let short = V5::start(resume("short", 0)).await;
    assert!(
        !short.connack.session_present,
        "expired while the broker was down"
    );
    let mut long = V5::start(resume("long", 3600)).await;
    assert!(long.connack.session_present);
    for _ in 0..3 {
        long.publish_msg().await;
    }
    // The expired session's messages were deleted from the store: only the live
    // session's copies remain (checked by reading the store once the broker is gone).
    drop(short);
    drop(long);
    drop(_broker);
    let (store, loaded) = sealpost_broker::store::Store::open(
        &setup.store_file(),
        sealpost_broker::store::Sync::Always,
    )
    .unwrap();
    store.close();
    let ids: Vec<&str> = loaded
        .sessions
        .iter()
        .map(|s| s.client_id.as_str())
        .collect();
    assert!(!ids.contains(&"short"), "{ids:?}");
    assert!(loaded.sessions.iter().all(|s| s.client_id != "short"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_will_is_published_after_the_restart_when_its_delay_ends() {
    let setup = Setup::new("");
    let (broker, addr) = setup.start();
    let mut o = v5::options("will-client", addr);
    o.set_session_expiry_interval(Some(3600));
    let props = rumqttc::v5::mqttbytes::v5::LastWillProperties {
        delay_interval: Some(3),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    };
    o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        "wills/client",
        "gone",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        Some(props),
    ));
    let client = V5::start(o).await;
    drop(client); // No DISCONNECT: the will waits for its delay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    crash(broker);

    let (_broker, addr) = setup.start();
    let started = std::time::Instant::now();
    let mut watcher = V5::connect("will-watcher", addr).await;
    watcher
        .subscribe(v5::filter(
            "wills/#",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        ))
        .await;
    let will = watcher.publish_msg().await;
    assert_eq!(&will.payload[..], b"gone");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "published when its delay ends, not at start ({:?})",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_identity_cannot_resume_a_session_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    for user in ["alice", "bob"] {
        sealpost_broker::auth::add_user(
            &passwords,
            user,
            &format!("{user}-pw"),
            sealpost_broker::auth::HashCost {
                memory_kib: 64,
                iterations: 1,
            },
        )
        .unwrap();
    }
    let setup = Setup::new(&format!(
        "[auth]\nallow_anonymous = false\npassword_file = \"{}\"\n",
        passwords.display()
    ));
    let login = |user: &str, addr| {
        let mut o = v4_options("shared-id", addr);
        o.set_clean_session(false);
        o.set_credentials(user, format!("{user}-pw"));
        V4::start(o)
    };
    let (broker, addr) = setup.start();
    let mut alice = login("alice", addr);
    alice.connack().await.unwrap();
    alice.subscribe("b/#", QoS::AtLeastOnce).await;
    drop(alice);
    tokio::time::sleep(Duration::from_millis(300)).await;
    crash(broker);

    let (_broker, addr) = setup.start();
    let mut bob = login("bob", addr);
    let refused = bob
        .connack()
        .await
        .expect_err("bob resumed alice's session");
    assert!(refused.contains("NotAuthorized"), "{refused}");
    let mut alice = login("alice", addr);
    assert!(alice.connack().await.unwrap().session_present);
}

fn run_broker_expecting_failure(config: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealpost-broker"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the broker started on a damaged store"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_stops_the_start_with_its_name_and_repair_gets_it_going() {
    let setup = Setup::new("");
    drop(setup.start());
    let file = setup.store_file();
    std::fs::write(&file, vec![0x5a; 10_000]).unwrap();
    let err = run_broker_expecting_failure(&setup.config);
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("--repair"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealpost-broker"))
        .arg("--config")
        .arg(&setup.config)
        .arg("--repair")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved to"));
    let (_broker, addr) = setup.start();
    common::assert_serving(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_qos2_flow_completes_exactly_once_across_a_sigkill() {
    use common::v5::RawV5;
    use rumqttc::v5::mqttbytes::v5::{
        Connect, ConnectProperties, Packet as P5, PubCompReason, PubRel, PubRelReason, Publish,
    };
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let setup = Setup::new("");
    let (broker, addr) = setup.start();
    let sub_options = |addr| {
        let mut o = v5::options("q2-sub", addr);
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(3600));
        o
    };
    let mut sub = V5::start(sub_options(addr)).await;
    sub.subscribe(v5::filter("q2/#", Q5::ExactlyOnce)).await;
    drop(sub);
    let connect = Connect {
        keep_alive: 30,
        client_id: "q2-pub".into(),
        clean_start: false,
        properties: Some(ConnectProperties {
            session_expiry_interval: Some(3600),
            ..ConnectProperties::new()
        }),
    };
    let publish = |dup| {
        let mut p = Publish::new("q2/t", Q5::ExactlyOnce, b"once".to_vec(), None);
        p.pkid = 7;
        p.dup = dup;
        P5::Publish(p)
    };
    let (mut publ, _) = RawV5::connect_with(addr, connect.clone()).await;
    publ.send(publish(false)).await;
    assert!(matches!(publ.recv().await, P5::PubRec(r) if r.pkid == 7));
    // The broker dies between PUBREC and PUBREL.
    crash(broker);
    drop(publ);

    let (_broker, addr) = setup.start();
    let (mut publ, present) = RawV5::connect_with(addr, connect).await;
    assert!(present);
    // The client sends the PUBLISH again (it may have missed the PUBREC): acknowledged,
    // not routed a second time; then the flow completes.
    publ.send(publish(true)).await;
    assert!(matches!(publ.recv().await, P5::PubRec(r) if r.pkid == 7));
    publ.send(P5::PubRel(PubRel {
        pkid: 7,
        reason: PubRelReason::Success,
        properties: None,
    }))
    .await;
    match publ.recv().await {
        P5::PubComp(c) => assert_eq!((c.pkid, c.reason), (7, PubCompReason::Success)),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // The packet id is free again: a new message with it is a new message.
    let mut next = Publish::new("q2/t", Q5::ExactlyOnce, b"next".to_vec(), None);
    next.pkid = 7;
    publ.send(P5::Publish(next)).await;
    assert!(matches!(publ.recv().await, P5::PubRec(r) if r.pkid == 7));

    let mut sub = V5::start(sub_options(addr)).await;
    assert!(sub.connack.session_present);
    assert_eq!(&sub.publish_msg().await.payload[..], b"once");
    assert_eq!(
        &sub.publish_msg().await.payload[..],
        b"next",
        "the first message was delivered once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_periodic_sync_what_was_acknowledged_an_interval_before_a_sigkill_survives() {
    let setup = Setup::periodic();
    let (broker, addr) = setup.start();
    subscribe_and_leave("periodic-sub", addr, "p/#").await;
    let acked = publish_numbered(addr, "p", 1_000, 1_000).await;
    // Longer than the interval: the writes are on disk by now.
    tokio::time::sleep(Duration::from_millis(800)).await;
    crash(broker);

    let (_broker, addr) = setup.start();
    let mut sub = persistent_v4("periodic-sub", addr, false);
    assert!(sub.connack().await.unwrap().session_present);
    let (got, bad_duplicates) = receive_numbers(&mut sub, &acked).await;
    assert_eq!(got.len(), 1_000);
    assert_eq!(bad_duplicates, 0);
}

/// With `"periodic"`, the messages an online subscriber has been sent wait unwritten
/// for its acknowledgements until the sync: those it acknowledged are never written,
/// and those it did not are written then, and come again with DUP after a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_periodic_sync_what_an_online_subscriber_had_not_acknowledged_comes_again_after_a_sigkill(
) {
    let setup = Setup::periodic();
    let (broker, addr) = setup.start();
    let mut sub = persistent_v4("online-sub", addr, true);
    sub.connack().await.unwrap();
    sub.subscribe("o/#", QoS::AtLeastOnce).await;
    let acked = publish_numbered(addr, "o", 10, 10).await;
    // The subscriber acknowledges the even numbers only.
    let mut unacknowledged = HashSet::new();
    for _ in 0..acked.len() {
        let p = sub.publish_msg().await.expect("a delivery");
        let n = u32::from_be_bytes(p.payload[..4].try_into().unwrap());
        if n % 2 == 0 {
            sub.client.ack(&p).await.unwrap();
        } else {
            unacknowledged.insert(n);
        }
    }
    assert_eq!(unacknowledged.len(), 5);
    // Polled for longer than two intervals: the acknowledgements go out, reach the
    // store, and whatever a sync wrote meanwhile is on disk.
    assert!(sub
        .maybe_publish(Duration::from_millis(800))
        .await
        .is_none());
    crash(broker);
    drop(sub);

    let (_broker, addr) = setup.start();
    let mut sub = persistent_v4("online-sub", addr, false);
    assert!(sub.connack().await.unwrap().session_present);
    assert_eq!(receive_again(&mut sub, 5).await, unacknowledged);
    assert!(
        sub.maybe_publish(Duration::from_millis(500))
            .await
            .is_none(),
        "an acknowledged message came again"
    );
}

/// MQTT 5 helpers for the outgoing QoS 2 and subscription tests below.
mod kept_v5 {
    use super::common::v5::RawV5;
    pub use rumqttc::v5::mqttbytes::v5::{
        Connect, ConnectProperties, Packet as P5, PubAck, PubComp, PubRec, PubRel, Publish,
    };
    pub use rumqttc::v5::mqttbytes::QoS as Q5;
    use std::net::SocketAddr;

    /// The CONNECT of a session kept for an hour (clean start 0).
    pub fn connect(id: &str) -> Connect {
        Connect {
            keep_alive: 30,
            client_id: id.into(),
            clean_start: false,
            properties: Some(ConnectProperties {
                session_expiry_interval: Some(3600),
                ..ConnectProperties::new()
            }),
        }
    }

    /// Publishes each (topic, payload) at `qos` (1 or 2) from a new client and waits
    /// until the broker has acknowledged it (PUBACK, or PUBREC and then PUBCOMP).
    pub async fn publish(addr: SocketAddr, qos: Q5, messages: &[(&str, &[u8])]) {
        let id = format!("pub-{}", super::common::rand_id());
        let mut p = RawV5::connect(addr, &id, ConnectProperties::new()).await;
        for (i, (topic, payload)) in messages.iter().enumerate() {
            let pkid = i as u16 + 1;
            let mut m = Publish::new(*topic, qos, payload.to_vec(), None);
            m.pkid = pkid;
            p.send(P5::Publish(m)).await;
            if qos == Q5::AtLeastOnce {
                assert!(matches!(p.recv().await, P5::PubAck(a) if a.pkid == pkid));
                continue;
            }
            assert!(matches!(p.recv().await, P5::PubRec(r) if r.pkid == pkid));
            p.send(P5::PubRel(PubRel::new(pkid, None))).await;
            assert!(matches!(p.recv().await, P5::PubComp(c) if c.pkid == pkid));
        }
    }

    /// Receives a QoS 2 PUBLISH with `payload` and completes its flow.
    pub async fn receive_once(sub: &mut RawV5, payload: &[u8]) {
        let m = sub.publish_msg().await;
        assert_eq!(&m.payload[..], payload);
        sub.send(P5::PubRec(PubRec::new(m.pkid, None))).await;
        assert!(matches!(sub.recv().await, P5::PubRel(r) if r.pkid == m.pkid));
        sub.send(P5::PubComp(PubComp::new(m.pkid, None))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_qos2_flow_between_pubrec_and_pubcomp_completes_once_across_a_sigkill() {
    use common::v5::RawV5;
    use kept_v5::*;
    let setup = Setup::new("");
    let (broker, addr) = setup.start();
    let (mut sub, _) = RawV5::connect_with(addr, connect("rel-sub")).await;
    sub.subscribe(v5::filter("rel/#", Q5::ExactlyOnce)).await;
    // One at a time, so that each flow is seen alone.
    publish(addr, Q5::ExactlyOnce, &[("rel/t", b"one")]).await;
    receive_once(&mut sub, b"one").await;
    publish(addr, Q5::ExactlyOnce, &[("rel/t", b"two")]).await;
    // "two": received (PUBREC) and released (PUBREL), but its PUBCOMP never comes.
    let two = sub.publish_msg().await;
    assert_eq!(&two.payload[..], b"two");
    sub.send(P5::PubRec(PubRec::new(two.pkid, None))).await;
    assert!(matches!(sub.recv().await, P5::PubRel(r) if r.pkid == two.pkid));
    crash(broker);
    drop(sub);

    let (_broker, addr) = setup.start();
    let (mut sub, present) = RawV5::connect_with(addr, connect("rel-sub")).await;
    assert!(present);
    // MQTT 5 §4.4: the PUBREL again, with its packet id; not the message.
    match sub.recv().await {
        P5::PubRel(r) => assert_eq!(r.pkid, two.pkid, "the flow's own packet id"),
        other => panic!("expected the PUBREL again, got {other:?}"),
    }
    sub.send(P5::PubComp(PubComp::new(two.pkid, None))).await;
    publish(addr, Q5::ExactlyOnce, &[("rel/t", b"three")]).await;
    let next = sub.publish_msg().await;
    assert_eq!(&next.payload[..], b"three", "\"two\" was not sent again");
    assert!(!next.dup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos2_message_sent_before_its_pubrec_comes_again_with_its_packet_id_after_a_sigkill() {
    use common::v5::RawV5;
    use kept_v5::*;
    let setup = Setup::new("");
    let (broker, addr) = setup.start();
    let (mut sub, _) = RawV5::connect_with(addr, connect("rec-sub")).await;
    sub.subscribe(v5::filter("rec/#", Q5::ExactlyOnce)).await;
    // One at a time, so that each flow is seen alone.
    for payload in [&b"one"[..], b"two"] {
        publish(addr, Q5::ExactlyOnce, &[("rec/t", payload)]).await;
        receive_once(&mut sub, payload).await;
    }
    publish(addr, Q5::ExactlyOnce, &[("rec/t", b"three")]).await;
    // "three" arrives; the subscriber crashes with the broker before its PUBREC.
    let three = sub.publish_msg().await;
    assert_eq!(&three.payload[..], b"three");
    assert_ne!(
        three.pkid, 1,
        "a packet id a new link's first message would not get"
    );
    crash(broker);
    drop(sub);

    let (_broker, addr) = setup.start();
    let (mut sub, present) = RawV5::connect_with(addr, connect("rec-sub")).await;
    assert!(present);
    let again = sub.publish_msg().await;
    assert_eq!(&again.payload[..], b"three");
    assert!(again.dup, "a redelivery carries DUP");
    assert_eq!(
        again.pkid, three.pkid,
        "MQTT 5 §4.4: its original packet id"
    );
    sub.send(P5::PubRec(PubRec::new(again.pkid, None))).await;
    assert!(matches!(sub.recv().await, P5::PubRel(r) if r.pkid == three.pkid));
    sub.send(P5::PubComp(PubComp::new(three.pkid, None))).await;
    // Delivered once: the next message is the next one.
    publish(addr, Q5::ExactlyOnce, &[("rec/t", b"four")]).await;
    receive_once(&mut sub, b"four").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_stored_before_its_suback() {
    use common::v5::RawV5;
    use kept_v5::*;
    let setup = Setup::new("");
    let (broker, addr) = setup.start();
    let (mut sub, _) = RawV5::connect_with(addr, connect("suback-sub")).await;
    let topics: Vec<String> = (0..20).map(|i| format!("sa/{i}")).collect();
    for t in &topics {
        sub.subscribe(v5::filter(t, Q5::AtLeastOnce)).await;
    }
    // SIGKILL as soon as the last SUBACK has arrived.
    crash(broker);
    drop(sub);

    let (_broker, addr) = setup.start();
    let (mut sub, present) = RawV5::connect_with(addr, connect("suback-sub")).await;
    assert!(present);
    let messages: Vec<(&str, &[u8])> = topics.iter().map(|t| (t.as_str(), &b"m"[..])).collect();
    publish(addr, Q5::AtLeastOnce, &messages).await;
    let mut got = HashSet::new();
    while got.len() < topics.len() {
        let m = sub.publish_msg().await;
        sub.send(P5::PubAck(PubAck::new(m.pkid, None))).await;
        got.insert(String::from_utf8(m.topic.to_vec()).unwrap());
    }
    assert_eq!(got, topics.iter().cloned().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_broker_drops_for_a_session_leave_the_store() {
    use common::v5::RawV5;
    use kept_v5::*;
    let setup = Setup::new("");
    let toml = std::fs::read_to_string(&setup.config)
        .unwrap()
        // One in flight and one queued above it (the edge queue counts
        // `max_queued_messages` above the window, as Mosquitto does).
        .replace(
            "max_queued_messages = 0",
            "max_queued_messages = 1\nmax_inflight = 1",
        );
    std::fs::write(&setup.config, toml).unwrap();
    let (broker, addr) = setup.start();
    // The subscriber takes packets of at most 300 bytes.
    let small_packets = || {
        let mut c = connect("drop-sub");
        if let Some(p) = c.properties.as_mut() {
            p.max_packet_size = Some(300);
        }
        c
    };
    let (mut sub, _) = RawV5::connect_with(addr, small_packets()).await;
    sub.subscribe(v5::filter("dr/#", Q5::AtLeastOnce)).await;
    drop(sub);
    let big = vec![0u8; 1024];
    let offline: Vec<(&str, &[u8])> = (0..5)
        .map(|_| ("dr/t", &b"small"[..]))
        .chain([("dr/t", &big[..])])
        .collect();
    publish(addr, Q5::AtLeastOnce, &offline).await;
    let (mut sub, present) = RawV5::connect_with(addr, small_packets()).await;
    assert!(present);
    // Two of the backlog (the window and max_queued_messages); the other four are
    // dropped.
    for _ in 0..2 {
        let m = sub.publish_msg().await;
        assert_eq!(&m.payload[..], b"small");
        sub.send(P5::PubAck(PubAck::new(m.pkid, None))).await;
    }
    // Live: too large for the client (dropped), then a last one.
    publish(
        addr,
        Q5::AtLeastOnce,
        &[("dr/t", &big[..]), ("dr/t", b"last")],
    )
    .await;
    let m = sub.publish_msg().await;
    assert_eq!(&m.payload[..], b"last");
    sub.send(P5::PubAck(PubAck::new(m.pkid, None))).await;
    // Acknowledgements and drops reach the store without waiting: give them time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    crash(broker);

    let (_store, loaded) = sealpost_broker::store::Store::open(
        &setup.store_file(),
        sealpost_broker::store::Sync::Always,
    )
    .unwrap();
    assert_eq!(loaded.sessions.len(), 1);
    assert_eq!(loaded.sessions[0].queue, Vec::<u64>::new(), "nothing kept");
    assert!(loaded.messages.is_empty());
}

/// Issue 15 item 3: a persistent session that is away while more is published than
/// the router keeps per filter (`[router]`: two segments of 16 KiB, about 1,100 of these
/// messages) gets every message the broker acknowledged when it comes back: the store
/// has them all, and they are delivered from there (the router skips the oldest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_away_for_longer_than_the_router_window_gets_every_stored_message() {
    let setup = Setup::new("[router]\nmax_segment_size = 16384\nmax_segment_count = 2\n");
    // A segment must hold the largest packet.
    let toml = std::fs::read_to_string(&setup.config).unwrap().replace(
        "max_queued_messages = 0",
        "max_queued_messages = 0\nmax_packet_size = 16384",
    );
    std::fs::write(&setup.config, toml).unwrap();
    let (_broker, addr) = setup.start();
    subscribe_and_leave("behind-sub", addr, "behind/#").await;
    let acked = publish_numbered(addr, "behind", 5_000, 5_000).await;
    assert_eq!(acked.len(), 5_000);
    let mut sub = persistent_v4("behind-sub", addr, false);
    assert!(sub.connack().await.unwrap().session_present);
    let (got, bad_duplicates) = receive_numbers(&mut sub, &acked).await;
    assert_eq!(got.len(), 5_000);
    assert_eq!(bad_duplicates, 0, "each message once");
}
