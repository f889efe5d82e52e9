//! End-to-end scenarios: a real broker on ephemeral loopback ports (every scenario runs on
//! Mosquitto and on the sealpost broker), real publisher and subscriber SDKs, raw MQTT
//! clients as spies and attackers.

use std::time::Duration;

use rumqttc::QoS;
use sealpost_certs::now_unix;
use sealpost_protocol::{ContentKey, KeyLocation, PublisherIdentity, Rejected, Sealer};
use sealpost_subscriber::Event;
use sealpost_tests::*;

/// Runs a scenario with an overall time limit, so a bug can fail a test but never hang it.
async fn bounded<F: std::future::Future<Output = ()>>(scenario: F) {
    tokio::time::timeout(Duration::from_secs(120), scenario)
        .await
        .expect("scenario finished within its time limit");
}

async fn granted_subscribers_read_others_and_spies_see_nothing(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let bob = pki.subscriber("bob");
    let eve = pki.subscriber("eve");

    let mut spy = RawClient::connect(&broker, "spy", Some("#")).await;
    let mut a = subscriber(pki.subscriber_config(&broker, &alice), "sensors/#").await;
    let mut b = subscriber(pki.subscriber_config(&broker, &bob), "sensors/#").await;
    let mut e = subscriber(pki.subscriber_config(&broker, &eve), "sensors/#").await;

    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    p.grant_pem(&bob.certificate_pem).await.unwrap();
    let texts = [
        "secret reading 41",
        "secret reading 42",
        "secret reading 43",
    ];
    for text in texts {
        p.publish("sensors/temp", text.as_bytes(), QoS::AtLeastOnce, false)
            .await
            .unwrap();
    }
    for s in [&mut a, &mut b] {
        let mut last_seq = None;
        for text in texts {
            let m = expect_message(s).await;
            assert_eq!(m.payload, text.as_bytes());
            assert_eq!(m.topic, "sensors/temp");
            assert_eq!(m.publisher, "sensor-1");
            assert!(last_seq < Some(m.seq), "sequence numbers increase");
            last_seq = Some(m.seq);
        }
    }
    // The non-granted subscriber holds each message for a while, then rejects it as
    // unopenable (it never gets the publisher's key message, so neither the
    // certificate nor the key).
    for _ in texts {
        let r = expect_rejection(&mut e).await;
        assert!(r.reason.is_retryable(), "{r:?}");
    }
    assert_eq!(e.counters().delivered_total(), 0);
    assert_eq!(a.counters().delivered_total(), 3);

    // The spy saw the three data envelopes and the key messages, and no plaintext.
    for _ in texts {
        let envelope = spy.next_on("sensors/temp").await;
        assert!(!contains(&envelope, b"secret reading"));
    }
    for (_, payload) in spy.drain() {
        assert!(!contains(&payload, b"secret reading"));
    }
}

async fn revoked_subscriber_reads_nothing_published_afterwards(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let bob = pki.subscriber("bob");
    let mut a = subscriber(pki.subscriber_config(&broker, &alice), "sensors/#").await;
    let mut b = subscriber(pki.subscriber_config(&broker, &bob), "sensors/#").await;
    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    p.grant_pem(&bob.certificate_pem).await.unwrap();

    p.publish("sensors/t", b"before", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut a).await.payload, b"before");
    assert_eq!(expect_message(&mut b).await.payload, b"before");
    // Kept by the broker under the epoch before the revocation: a reader that connects
    // after the rotation needs that epoch's key too.
    p.publish("sensors/kept", b"kept", QoS::AtLeastOnce, true)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut a).await.payload, b"kept");
    assert_eq!(expect_message(&mut b).await.payload, b"kept");

    let epoch_before = p.epoch().await;
    let rekey = p.revoke("bob").await.unwrap();
    assert_eq!(rekey.epoch, epoch_before + 1);
    assert_eq!(rekey.key_messages, 1, "only alice gets the new key");
    assert_eq!(
        rekey.wrapped, 1,
        "only the new epoch is wrapped; alice's wrapping of the previous one is reused"
    );
    assert_eq!(p.granted().await, vec!["alice".to_owned()]);

    p.publish("sensors/t", b"after", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = expect_message(&mut a).await;
    assert_eq!(m.payload, b"after");
    assert_eq!(m.epoch, epoch_before + 1);
    let r = expect_rejection(&mut b).await;
    assert!(
        matches!(r.reason, Rejected::UnknownKey { epoch, .. } if epoch == epoch_before + 1),
        "{r:?}"
    );
    assert_eq!(
        b.counters().delivered_total(),
        2,
        "what bob read is what was sent before he was revoked"
    );

    // The revoked subscriber's retained key message is gone: a fresh connection of
    // bob's identity learns nothing.
    drop(b);
    let mut b2 = subscriber(pki.subscriber_config(&broker, &bob), "sensors/t").await;
    p.publish("sensors/t", b"later", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut a).await.payload, b"later");
    assert!(expect_rejection(&mut b2).await.reason.is_retryable());
    assert_eq!(b2.counters().key_messages_total(), 0);

    // A fresh connection of alice's identity gets both epochs from her one retained key
    // message (the previous epoch's entry is the wrapping made when she was granted).
    let mut a2 = subscriber(pki.subscriber_config(&broker, &alice), "sensors/kept").await;
    let m = expect_message(&mut a2).await;
    assert_eq!(m.payload, b"kept");
    assert_eq!(m.epoch, epoch_before);
    assert_eq!(a2.counters().key_messages_total(), 1);
}

async fn offline_subscriber_gets_keys_from_retained_key_messages(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let carol = pki.subscriber("carol");
    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    // Granted and rotated while carol is offline.
    p.grant_pem(&carol.certificate_pem).await.unwrap();
    p.rotate().await.unwrap();
    p.publish(
        "sensors/retained",
        b"retained value",
        QoS::AtLeastOnce,
        true,
    )
    .await
    .unwrap();

    let mut c = subscriber(pki.subscriber_config(&broker, &carol), "sensors/#").await;
    let m = expect_message(&mut c).await;
    assert_eq!(m.payload, b"retained value");
    assert_eq!(m.epoch, p.epoch().await);
    p.publish("sensors/live", b"live value", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut c).await.payload, b"live value");
}

/// Seals like `sensor-1` would, with its current key read from its state directory, but
/// without going through the broker: envelopes no subscriber has seen yet, for the
/// attacker to modify.
fn fresh_envelope_of(pki: &Pki, issued: &sealpost_certs::Issued, state: &str) -> Sealer {
    let state = sealpost_publisher::state::PublisherState::load(&pki.state_dir(state))
        .unwrap()
        .expect("publisher state exists");
    let (epoch, key) = state.keys.last().copied().unwrap();
    let identity =
        PublisherIdentity::from_pem(&issued.certificate_pem, &issued.private_key_pem).unwrap();
    let id = identity.id().to_owned();
    let mut sealer = Sealer::new(
        identity,
        KeyLocation::key_topic_for(&id),
        epoch,
        &ContentKey::from_bytes(key),
        state.seq_high_water + 1_000_000,
    );
    sealer.reserve(100);
    sealer
}

async fn attacks_are_rejected_with_typed_errors_and_never_delivered(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let mut spy = RawClient::connect(&broker, "spy", Some("sensors/#")).await;
    let attacker = RawClient::connect(&broker, "attacker", None).await;
    let mut a = subscriber(pki.subscriber_config(&broker, &alice), "sensors/a").await;
    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    p.publish("sensors/a", b"genuine", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut a).await.payload, b"genuine");
    let captured = spy.next_on("sensors/a").await;

    // Replayed: the same bytes again, later.
    attacker
        .publish("sensors/a", captured.clone(), QoS::AtLeastOnce)
        .await;
    let r = expect_rejection(&mut a).await;
    assert!(
        matches!(r.reason, Rejected::Replayed { seq, .. } if seq > 0),
        "{r:?}"
    );

    // Tampered: one ciphertext byte flipped in an envelope alice has not seen.
    let mut sealer = fresh_envelope_of(&pki, &pub_cert, "pub");
    let mut tampered = sealer.seal("sensors/a", &[b'x'; 1000], now_unix()).unwrap();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    attacker
        .publish("sensors/a", tampered, QoS::AtLeastOnce)
        .await;
    let r = expect_rejection(&mut a).await;
    assert_eq!(r.reason, Rejected::BadSignature);

    // Re-published on another topic: signed for sensors/private, sent on sensors/a.
    let retopic = sealer
        .seal("sensors/private", b"for another topic", now_unix())
        .unwrap();
    attacker
        .publish("sensors/a", retopic, QoS::AtLeastOnce)
        .await;
    let r = expect_rejection(&mut a).await;
    assert_eq!(r.reason, Rejected::BadSignature);

    // Forged: same publisher name and topics, certificate from another CA.
    let evil_pki = Pki::new("evil CA");
    let evil_cert = evil_pki.publisher("sensor-1", &["sensors/#"]);
    let evil_identity =
        PublisherIdentity::from_pem(&evil_cert.certificate_pem, &evil_cert.private_key_pem)
            .unwrap();
    let mut forger = Sealer::new(
        evil_identity,
        KeyLocation::key_topic_for("sensor-1"),
        1,
        &ContentKey::generate(),
        u64::MAX / 2,
    );
    forger.set_embed_certificate(true);
    forger.reserve(10);
    let forged = forger.seal("sensors/a", b"forged", now_unix()).unwrap();
    attacker
        .publish("sensors/a", forged, QoS::AtLeastOnce)
        .await;
    let r = expect_rejection(&mut a).await;
    assert!(matches!(r.reason, Rejected::UntrustedPublisher(_)), "{r:?}");

    // A genuine publisher of this CA, but not permitted to publish on sensors/#.
    let meter_cert = pki.publisher("meter-1", &["meters/#"]);
    let meter_identity =
        PublisherIdentity::from_pem(&meter_cert.certificate_pem, &meter_cert.private_key_pem)
            .unwrap();
    let mut meter = Sealer::new(
        meter_identity,
        KeyLocation::key_topic_for("meter-1"),
        1,
        &ContentKey::generate(),
        0,
    );
    meter.set_embed_certificate(true);
    meter.reserve(10);
    let not_permitted = meter.seal("meters/x", b"not yours", now_unix()).unwrap();
    attacker
        .publish("sensors/a", not_permitted, QoS::AtLeastOnce)
        .await;
    let r = expect_rejection(&mut a).await;
    assert!(
        matches!(&r.reason, Rejected::TopicNotPermitted { publisher, topic }
                if publisher == "meter-1" && topic == "sensors/a"),
        "{r:?}"
    );

    // A forged key message on alice's key topic is refused too.
    let forged_keys = sealpost_protocol::seal_key_message(
        forger.identity(),
        &sealpost_protocol::KeyRecipient::new(
            sealpost_certs::parse(
                &sealpost_certs::pemfile::decode(
                    &alice.certificate_pem,
                    sealpost_certs::pemfile::CERTIFICATE,
                )
                .unwrap(),
            )
            .unwrap(),
        )
        .unwrap(),
        &[(7, &ContentKey::generate())],
        "sealpost/keys/sensor-1/alice",
        0,
    )
    .unwrap();
    let mut watcher = RawClient::connect(&broker, "watcher", Some("#")).await;
    attacker
        .publish(
            "sealpost/keys/sensor-1/alice",
            forged_keys.clone(),
            QoS::AtLeastOnce,
        )
        .await;
    // A marker from the same client after the forgery: brokers forward one client's
    // messages in order, so once the watcher has the marker, the forgery was either
    // forwarded already or dropped.
    attacker
        .publish("attack/marker", &b"marker"[..], QoS::AtLeastOnce)
        .await;
    let seen = watcher.collect_until("attack/marker").await;
    let forwarded = seen.iter().any(|(_, payload)| payload == &forged_keys);
    let mut expected_rejections = 6;
    match kind {
        // Mosquitto lets anyone write any topic: the subscriber SDK is the defence.
        BrokerKind::Mosquitto => {
            assert!(forwarded, "Mosquitto forwards the forged key message");
            let r = expect_rejection(&mut a).await;
            assert!(matches!(r.reason, Rejected::UntrustedPublisher(_)), "{r:?}");
        }
        // The sealpost broker lets only sensor-1's certificate write its key topics.
        BrokerKind::Sealpost => {
            assert!(
                !forwarded,
                "the sealpost broker drops the forged key message"
            );
            expected_rejections -= 1;
        }
    }

    // The genuine publisher still gets through, and nothing else was delivered.
    p.publish("sensors/a", b"still genuine", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut a).await.payload, b"still genuine");
    assert_eq!(a.counters().delivered_total(), 2);
    assert_eq!(a.counters().rejected_total(), expected_rejections);
}

async fn duplicated_qos1_publishes_are_delivered_exactly_once(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let mut spy = RawClient::connect(&broker, "spy", Some("sensors/#")).await;
    let attacker = RawClient::connect(&broker, "dup", None).await;
    let mut a = subscriber(pki.subscriber_config(&broker, &alice), "sensors/#").await;
    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    let seq = p
        .publish("sensors/a", b"once", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let original = spy.next_on("sensors/a").await;
    // The same packet twice more, as a QoS 1 redelivery or a duplicating bridge would.
    for _ in 0..2 {
        attacker
            .publish("sensors/a", original.clone(), QoS::AtLeastOnce)
            .await;
    }
    p.publish("sensors/a", b"sentinel", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let mut delivered = Vec::new();
    let mut replayed = 0;
    while delivered
        .last()
        .map(|m: &sealpost_subscriber::Message| m.payload.as_slice())
        != Some(b"sentinel")
    {
        match next_event(&mut a).await {
            Event::Message(m) => delivered.push(m),
            Event::Rejected(r) => {
                assert_eq!(
                    r.reason,
                    Rejected::Replayed {
                        publisher: "sensor-1".into(),
                        seq
                    }
                );
                replayed += 1;
            }
            Event::KeyFetchFailed(f) => panic!("no KDC in this test: {f:?}"),
        }
    }
    // Anything still in flight after the sentinel is a duplicate too.
    while replayed < 2 {
        let r = expect_rejection(&mut a).await;
        assert!(matches!(r.reason, Rejected::Replayed { .. }), "{r:?}");
        replayed += 1;
    }
    let payloads: Vec<&[u8]> = delivered.iter().map(|m| m.payload.as_slice()).collect();
    assert_eq!(payloads, vec![&b"once"[..], &b"sentinel"[..]]);
}

async fn restarted_subscriber_does_not_deliver_again(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let mut config = pki.subscriber_config(&broker, &alice);
    config.state_dir = Some(pki.state_dir("alice"));
    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    p.publish("sensors/r", b"retained once", QoS::AtLeastOnce, true)
        .await
        .unwrap();
    let mut a = subscriber(config.clone(), "sensors/#").await;
    assert_eq!(expect_message(&mut a).await.payload, b"retained once");
    a.disconnect().await.unwrap();

    // Restart: the broker hands over the retained message again; it was delivered.
    let mut a = subscriber(config, "sensors/#").await;
    let r = expect_rejection(&mut a).await;
    assert!(matches!(r.reason, Rejected::Replayed { .. }), "{r:?}");
    p.publish("sensors/r", b"new value", QoS::AtLeastOnce, true)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut a).await.payload, b"new value");
    assert_eq!(a.counters().delivered_total(), 1);
}

async fn restarted_publisher_keeps_sequence_numbers_increasing(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let mut a = subscriber(pki.subscriber_config(&broker, &alice), "sensors/#").await;
    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    let epoch = p.epoch().await;
    p.publish("sensors/a", b"first life", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m1 = expect_message(&mut a).await;
    p.disconnect().await.unwrap();

    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    assert_eq!(
        p.granted().await,
        vec!["alice".to_owned()],
        "grants persisted"
    );
    assert_eq!(p.epoch().await, epoch, "key persisted");
    p.publish("sensors/a", b"second life", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m2 = expect_message(&mut a).await;
    assert_eq!(m2.payload, b"second life");
    assert!(m2.seq > m1.seq, "{} > {}", m2.seq, m1.seq);
}

async fn key_messages_are_published_again_after_the_broker_lost_them(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let mut broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    // No persistence: the retained key message is gone with the broker.
    broker.restart();
    let mut a = subscriber(pki.subscriber_config(&broker, &alice), "sensors/#").await;
    // The publisher reconnects on its own and sends the key message again; data sent
    // meanwhile waits in the subscriber's hold buffer or in the client's queue.
    let mut delivered = None;
    for attempt in 0..40 {
        let text = format!("after restart {attempt}");
        if p.publish("sensors/a", text.as_bytes(), QoS::AtLeastOnce, false)
            .await
            .is_err()
        {
            break;
        }
        if let Ok(Some(Event::Message(m))) =
            tokio::time::timeout(Duration::from_millis(500), a.next()).await
        {
            delivered = Some(m);
            break;
        }
    }
    let m = delivered.expect("a message opened with the re-published key");
    assert!(m.payload.starts_with(b"after restart"));
    assert!(a.counters().key_messages_total() >= 1);
}

async fn works_over_websocket(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let mut sub_config = pki.subscriber_config(&broker, &alice);
    sub_config.broker = broker.ws_address();
    let mut a = subscriber(sub_config, "sensors/#").await;
    let mut pub_config = pki.publisher_config(&broker, &pub_cert, "pub");
    if kind == BrokerKind::Mosquitto {
        pub_config.broker = broker.ws_address();
    }
    // On the sealpost broker the publisher stays on TLS with its certificate: an
    // anonymous WebSocket client may not write key-message topics there.
    let p = publisher(pub_config).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    p.publish("sensors/ws", b"over websocket", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut a).await.payload, b"over websocket");
}

/// Both SDKs over `mqtts://`: the broker's server certificate (ECDSA P-256) is issued by
/// the security center's Ed25519 CA, which is all the clients trust.
async fn works_over_tls(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let mut sub_config = pki.subscriber_config(&broker, &alice);
    sub_config.broker = broker.tls_address();
    sub_config.tls = Some(pki.tls_identity(None));
    let mut a = subscriber(sub_config, "sensors/#").await;
    let mut pub_config = pki.publisher_config(&broker, &pub_cert, "pub");
    pub_config.broker = broker.tls_address();
    pub_config.tls = Some(pki.tls_identity(Some(&pub_cert)));
    let p = publisher(pub_config).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    p.publish("sensors/tls", b"over tls", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut a).await.payload, b"over tls");
}

/// A broker whose server certificate comes from another CA is refused by both SDKs:
/// they fail to connect instead of talking to it.
async fn broker_certificate_from_another_ca_is_refused(kind: BrokerKind) {
    let broker_pki = Pki::new("broker's CA");
    let broker = Broker::start(kind, &broker_pki);
    let pki = Pki::new("test CA");
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let mut pub_config = pki.publisher_config(&broker, &pub_cert, "pub");
    pub_config.broker = broker.tls_address();
    pub_config.tls = Some(pki.tls_identity(Some(&pub_cert)));
    pub_config.connect_timeout = Duration::from_secs(3);
    match sealpost_publisher::Publisher::connect(pub_config).await {
        Err(sealpost_publisher::PublisherError::NotConnected(_)) => {}
        other => panic!("publisher must not connect, got {other:?}"),
    }
    let mut sub_config = pki.subscriber_config(&broker, &alice);
    sub_config.broker = broker.tls_address();
    sub_config.tls = Some(pki.tls_identity(None));
    sub_config.timeout = Duration::from_secs(3);
    match sealpost_subscriber::Subscriber::connect(sub_config).await {
        Err(sealpost_subscriber::SubscriberError::Timeout("CONNACK")) => {}
        other => panic!("subscriber must not connect, got {other:?}"),
    }
    // The same clients trusting the right CA do connect: the refusal above is about the
    // certificate, not a broken listener.
    let bob = broker_pki.subscriber("bob");
    let mut sub_config = broker_pki.subscriber_config(&broker, &bob);
    sub_config.broker = broker.tls_address();
    sub_config.tls = Some(broker_pki.tls_identity(None));
    sealpost_subscriber::Subscriber::connect(sub_config)
        .await
        .expect("connects when trusting the broker's CA");
}

/// Declares one test per broker for each scenario, so a failure names the broker.
macro_rules! on_every_broker {
    ($($scenario:ident),* $(,)?) => {
        mod mosquitto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::bounded(super::$scenario(super::BrokerKind::Mosquitto)).await;
                }
            )*
        }
        mod sealpost {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::bounded(super::$scenario(super::BrokerKind::Sealpost)).await;
                }
            )*
        }
    };
}

on_every_broker!(
    granted_subscribers_read_others_and_spies_see_nothing,
    revoked_subscriber_reads_nothing_published_afterwards,
    offline_subscriber_gets_keys_from_retained_key_messages,
    attacks_are_rejected_with_typed_errors_and_never_delivered,
    duplicated_qos1_publishes_are_delivered_exactly_once,
    restarted_subscriber_does_not_deliver_again,
    restarted_publisher_keeps_sequence_numbers_increasing,
    key_messages_are_published_again_after_the_broker_lost_them,
    works_over_websocket,
    works_over_tls,
    broker_certificate_from_another_ca_is_refused,
);
