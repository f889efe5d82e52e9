//! The subscriber's defences from the security audit (issue 13), against a real broker:
//! a publisher revoked while the subscriber runs is refused; a subscriber needs a
//! revocation list; captured envelopes re-published after a restart, or long after they
//! were sealed, are refused; unverifiable junk cannot push genuine held messages out.

use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::QoS;
use sealpost_certs::{now_unix, pemfile, Issued};
use sealpost_protocol::{
    seal_key_message, ContentKey, KeyLocation, KeyRecipient, PublisherIdentity, Rejected, Sealer,
};
use sealpost_subscriber::{Event, Subscriber, SubscriberError};
use sealpost_tests::tools::{run, tool};
use sealpost_tests::*;

/// A sealer of `issued` that embeds its certificate, so subscribers can verify its
/// envelopes without a key message.
fn sealer_of(issued: &Issued, epoch: u64, key: &ContentKey, first_seq: u64) -> Sealer {
    let identity =
        PublisherIdentity::from_pem(&issued.certificate_pem, &issued.private_key_pem).unwrap();
    let location = KeyLocation::key_topic_for(identity.id());
    let mut sealer = Sealer::new(identity, location, epoch, key, first_seq);
    sealer.set_embed_certificate(true);
    sealer.reserve(10_000);
    sealer
}

/// A broker, a CA, publisher `sensor-1` (may publish `sensors/#`), subscriber `alice`,
/// and an anonymous attacker client.
struct Scene {
    pki: Pki,
    broker: Broker,
    pub_cert: Issued,
    alice: Issued,
    attacker: RawClient,
}

async fn scene() -> Scene {
    let pki = Pki::new("test CA");
    let broker = Broker::start(BrokerKind::Mosquitto, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let attacker = RawClient::connect(&broker, "attacker", None).await;
    Scene {
        pki,
        broker,
        pub_cert,
        alice,
        attacker,
    }
}

impl Scene {
    /// Alice subscribed to `sensors/#`, holding messages up to a minute for their keys.
    async fn patient_alice(&self) -> Subscriber {
        let mut config = self.pki.subscriber_config(&self.broker, &self.alice);
        config.hold_time = Duration::from_secs(60);
        config.event_capacity = 16_384;
        subscriber(config, "sensors/#").await
    }
}

/// Waits (bounded) until `done` holds.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_revoked_while_the_subscriber_runs_is_refused() {
    let pki = Pki::new("test CA");
    let broker = Broker::start(BrokerKind::Mosquitto, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let mut config = pki.subscriber_config(&broker, &alice);
    config.revocation_list_reload = Duration::from_millis(100);
    let mut a = subscriber(config, "sensors/#").await;
    let counters = a.counters();
    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    p.publish("sensors/t", b"before", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut a).await.payload, b"before");

    // The CA revokes the publisher; the subscriber reads the new list while running.
    pki.write_crl(&[&pub_cert], 2);
    tokio::time::sleep(Duration::from_millis(600)).await;
    p.publish("sensors/t", b"after", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let r = expect_rejection(&mut a).await;
    assert_eq!(r.reason.kind(), "revoked", "{r:?}");

    // A new file that is not a list signed by the CA is reported, and the list in force
    // stays: the subscriber never falls back to no list.
    std::fs::write(pki.crl_path(), "not a revocation list").unwrap();
    wait_until("the failed reload", || {
        counters.revocation_list_failures_total() > 0
    })
    .await;
    p.publish("sensors/t", b"still revoked", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let r = expect_rejection(&mut a).await;
    assert_eq!(r.reason.kind(), "revoked", "{r:?}");
    assert_eq!(counters.delivered_total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_needs_a_revocation_list_unless_told_it_is_insecure() {
    let pki = Pki::new("test CA");
    let broker = Broker::start(BrokerKind::Mosquitto, &pki);
    let alice = pki.subscriber("alice");
    let mut config = pki.subscriber_config(&broker, &alice);
    config.revocation_list = None;
    assert!(matches!(
        Subscriber::connect(config.clone()).await,
        Err(SubscriberError::NoRevocationList)
    ));
    // A list from another CA is refused as well.
    let other = Pki::new("other CA");
    config.revocation_list = Some(other.crl_path());
    assert!(matches!(
        Subscriber::connect(config.clone()).await,
        Err(SubscriberError::RevocationList { .. })
    ));
    config.revocation_list = None;
    config.insecure_no_crl = true;
    let a = Subscriber::connect(config).await.expect("explicit opt-out");
    a.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_envelope_is_refused_as_stale() {
    let Scene {
        pki,
        broker,
        pub_cert,
        alice,
        attacker,
    } = scene().await;
    let mut a = subscriber(pki.subscriber_config(&broker, &alice), "sensors/#").await;
    // Genuinely sealed by the publisher, two days ago: never seen by this subscriber.
    let mut sealer = sealer_of(&pub_cert, 1, &ContentKey::generate(), 0);
    let two_days_ago = now_unix() - 2 * 86_400;
    let old = sealer.seal("sensors/t", b"old", two_days_ago).unwrap();
    attacker.publish("sensors/t", old, QoS::AtLeastOnce).await;
    let r = expect_rejection(&mut a).await;
    assert!(
        matches!(&r.reason, Rejected::Stale { published_at, .. }
            if *published_at == two_days_ago as u64),
        "{r:?}"
    );
    assert_eq!(r.reason.kind(), "stale");
}

/// `sealpost-sub` as alice, from `dir` (so its default state directory is
/// `dir/.sealpost-sub`), with the given extra options.
fn sealpost_sub(broker: &Broker, dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = tool("sealpost-sub");
    c.current_dir(dir)
        .args(["-p", &broker.port.to_string(), "-t", "sensors/#", "-v"])
        .args(["--cert", "alice.pem", "--key", "alice.key"])
        .args(["--cafile", "ca.pem", "--crl", "crl.pem"])
        .args(extra);
    run(&mut c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_envelope_republished_after_a_restart_is_refused_by_default() {
    let pki = Pki::new("test CA");
    let broker = Broker::start(BrokerKind::Mosquitto, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("alice.pem"), &alice.certificate_pem).unwrap();
    std::fs::write(d.join("alice.key"), &alice.private_key_pem).unwrap();
    std::fs::write(d.join("ca.pem"), pki.ca_pem()).unwrap();
    std::fs::copy(pki.crl_path(), d.join("crl.pem")).unwrap();
    let mut spy = RawClient::connect(&broker, "spy", Some("sensors/#")).await;
    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    // Retained, so that the subscriber gets it whenever it subscribes.
    p.publish("sensors/t", b"21.5 C", QoS::AtLeastOnce, true)
        .await
        .unwrap();
    let captured = spy.next_on("sensors/t").await;

    // The subscriber, with default settings, prints it once.
    let broker_ref = &broker;
    let out = tokio::task::block_in_place(|| sealpost_sub(broker_ref, d, &["-C", "1", "-W", "20"]));
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "sensors/t [sensor-1] 21.5 C\n"
    );
    assert!(d.join(".sealpost-sub").is_dir(), "default state directory");

    // An anonymous client re-publishes the captured envelope (retained, so the restarted
    // subscriber surely gets it); the restarted subscriber refuses it.
    let attacker = RawClient::connect(&broker, "attacker", None).await;
    attacker
        .client
        .publish("sensors/t", QoS::AtLeastOnce, true, captured)
        .await
        .unwrap();
    // With -d: a replayed envelope is a duplicate after a failover too, so sealpost-sub
    // reports it only when asked.
    let out = tokio::task::block_in_place(|| sealpost_sub(broker_ref, d, &["-W", "4", "-d"]));
    assert!(
        out.stdout.is_empty(),
        "printed again: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(replayed)"), "{stderr}");
}

#[test]
fn sealpost_sub_refuses_to_run_without_a_revocation_list() {
    let mut c = tool("sealpost-sub");
    c.args([
        "-p", "1", "-t", "x", "--cert", "a", "--key", "b", "--cafile", "c",
    ]);
    let out = run(&mut c);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--crl"), "{stderr}");
    // The opt-out is accepted (it then fails on the missing CA file, not on the options).
    let mut c = tool("sealpost-sub");
    c.args([
        "-p", "1", "-t", "x", "--cert", "a", "--key", "b", "--cafile", "c",
    ])
    .arg("--insecure-no-crl");
    let out = run(&mut c);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("sealpost-sub: c: "), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_cannot_push_a_genuine_held_message_out() {
    let scene = scene().await;
    let mut a = scene.patient_alice().await;
    let Scene {
        pub_cert,
        alice,
        attacker,
        ..
    } = &scene;
    let counters = a.counters();

    // A genuine envelope whose key has not arrived: held.
    let key = ContentKey::generate();
    let mut genuine = sealer_of(pub_cert, 1, &key, 0);
    let envelope = genuine.seal("sensors/t", b"genuine", now_unix()).unwrap();
    attacker
        .publish("sensors/t", envelope, QoS::AtLeastOnce)
        .await;
    wait_until("the genuine message to be held", || {
        counters.held_now() == 1
    })
    .await;

    // Twice the hold buffer of junk: envelopes of a publisher nobody knows (another CA,
    // no certificate), which cannot be checked and so are held as "unknown publisher".
    let rogue_pki = Pki::new("rogue CA");
    let rogue = rogue_pki.publisher("sensor-1", &["sensors/#"]);
    let mut junk = sealer_of(&rogue, 1, &ContentKey::generate(), 0);
    junk.set_embed_certificate(false);
    const JUNK: u64 = 2048;
    for i in 0..JUNK {
        let envelope = junk
            .seal("sensors/t", &i.to_be_bytes(), now_unix())
            .unwrap();
        attacker
            .publish("sensors/t", envelope, QoS::AtLeastOnce)
            .await;
    }
    wait_until("every message to be held or rejected", || {
        counters.held_now() + counters.rejected_total() == JUNK + 1
    })
    .await;

    // The key arrives: the genuine message is delivered.
    let identity =
        PublisherIdentity::from_pem(&pub_cert.certificate_pem, &pub_cert.private_key_pem).unwrap();
    let recipient = KeyRecipient::new(
        sealpost_certs::parse(
            &pemfile::decode(&alice.certificate_pem, pemfile::CERTIFICATE).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let key_topic = "sealpost/keys/sensor-1/alice";
    let key_message = seal_key_message(
        &identity,
        &recipient,
        &[(1, &key)],
        key_topic,
        now_unix() as u64,
    )
    .unwrap();
    attacker
        .client
        .publish(key_topic, QoS::AtLeastOnce, true, key_message)
        .await
        .unwrap();
    loop {
        match next_event(&mut a).await {
            Event::Message(m) => {
                assert_eq!(m.payload, b"genuine");
                break;
            }
            Event::Rejected(r) => assert!(
                matches!(r.reason, Rejected::UnknownPublisher { .. }),
                "only junk is rejected: {r:?}"
            ),
            Event::KeyFetchFailed(f) => panic!("{f:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_a_held_envelope_are_held_once() {
    let scene = scene().await;
    let mut a = scene.patient_alice().await;
    let Scene {
        pub_cert, attacker, ..
    } = &scene;
    let counters = a.counters();
    let mut sealer = sealer_of(pub_cert, 1, &ContentKey::generate(), 0);
    let envelope = sealer.seal("sensors/t", b"once", now_unix()).unwrap();
    for _ in 0..3 {
        attacker
            .publish("sensors/t", envelope.clone(), QoS::AtLeastOnce)
            .await;
    }
    for _ in 0..2 {
        let r = expect_rejection(&mut a).await;
        assert!(
            matches!(r.reason, Rejected::Replayed { seq: 0, .. }),
            "{r:?}"
        );
    }
    assert_eq!(counters.held_now(), 1);
}
