//! End-to-end scenarios: a real broker on ephemeral loopback ports (every scenario runs on
//! Mosquitto and on the sealpost broker), real publisher and subscriber SDKs, raw MQTT
//! clients as spies and attackers.

use std::time::Duration;

use rumqttc::QoS;
use sealpost_certs::{now_unix, SubscriberKey};
use sealpost_protocol::{ContentKey, KeyLocation, PublisherIdentity, Rejected, Sealer};
use sealpost_publisher::state::STATE_FILE;
use sealpost_publisher::{Publisher, PublisherError};
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

    // The spy saw the three data envelopes and no plaintext; the key messages (who was
    // granted, and when keys rotate) only on Mosquitto: the sealpost broker gives them
    // to their recipients alone.
    let mut seen = Vec::new();
    for _ in texts {
        seen.extend(spy.collect_until("sensors/temp").await);
    }
    seen.extend(spy.drain());
    for (_, payload) in &seen {
        assert!(!contains(payload, b"secret reading"));
    }
    let key_messages = seen
        .iter()
        .filter(|(topic, _)| topic.starts_with("sealpost/keys/"))
        .count();
    match kind {
        BrokerKind::Mosquitto => assert!(key_messages >= 2, "{key_messages}"),
        BrokerKind::Sealpost => assert_eq!(key_messages, 0),
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
    // Wrapped during the revoke, or ahead of it in the background (prepared epochs).
    assert_eq!(
        rekey.wrapped + rekey.prepared,
        1,
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
    if kind == BrokerKind::Sealpost {
        // No client certificate over plain WebSocket (browsers cannot present one):
        // alice reads her key messages as a password user whose rule names them.
        sub_config.tls = None;
        sub_config.credentials = Some((ALICE_WEB.0.into(), ALICE_WEB.1.into()));
    }
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
    // The subscriber certificate as client certificate: the sealpost broker delivers
    // key messages only to their recipients (Mosquitto ignores it).
    sub_config.tls = Some(pki.tls_identity(Some(&alice)));
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
    // Refused at once, naming the cause (issue 14, item 2), not after the timeout.
    match sealpost_publisher::Publisher::connect(pub_config).await {
        Err(sealpost_publisher::PublisherError::ConnectFailed { reason, .. }) => {
            assert!(reason.contains("unknown CA"), "{reason}")
        }
        other => panic!("publisher must not connect, got {other:?}"),
    }
    let mut sub_config = pki.subscriber_config(&broker, &alice);
    sub_config.broker = broker.tls_address();
    sub_config.tls = Some(pki.tls_identity(None));
    sub_config.timeout = Duration::from_secs(3);
    match sealpost_subscriber::Subscriber::connect(sub_config).await {
        Err(sealpost_subscriber::SubscriberError::ConnectFailed { reason, .. }) => {
            assert!(reason.contains("unknown CA"), "{reason}")
        }
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

/// A publish whose new block of sequence numbers cannot be persisted fails, and so does
/// every publish after it until the state can be written: no number is ever used without
/// being on disk first, so none is used twice across a restart.
async fn sequence_numbers_are_never_reused_after_a_failed_state_save(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let config = pki.publisher_config(&broker, &pub_cert, "pub");
    let state_file = pki.state_dir("pub").join(STATE_FILE);
    let p = publisher(config.clone()).await;
    let saved = std::fs::read(&state_file).unwrap();
    // Storage fails (tests run as root, so permissions would not stop a write): the
    // state file's path becomes a non-empty directory, which no file can be renamed over.
    std::fs::remove_file(&state_file).unwrap();
    std::fs::create_dir(&state_file).unwrap();
    std::fs::write(state_file.join("in-the-way"), b"x").unwrap();
    let mut used = Vec::new();
    let mut failed = 0;
    for _ in 0..3 {
        match p.publish("sensors/a", b"x", QoS::AtLeastOnce, false).await {
            Ok(seq) => used.push(seq),
            Err(PublisherError::State { .. }) => failed += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    // Storage is back (as it was before the failure): publishing works again.
    std::fs::remove_dir_all(&state_file).unwrap();
    std::fs::write(&state_file, &saved).unwrap();
    used.push(
        p.publish("sensors/a", b"x", QoS::AtLeastOnce, false)
            .await
            .unwrap(),
    );
    p.disconnect().await.unwrap();
    let p = publisher(config).await;
    used.push(
        p.publish("sensors/a", b"x", QoS::AtLeastOnce, false)
            .await
            .unwrap(),
    );
    let distinct: std::collections::BTreeSet<u64> = used.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        used.len(),
        "a sequence number was reused: {used:?}"
    );
    assert_eq!(
        failed, 3,
        "every publish fails while its numbers cannot be persisted"
    );
}

/// Two publishers on one state directory would hand out the same sequence numbers and
/// overwrite each other's keys and grants: the second is refused while the first runs.
async fn a_second_publisher_on_the_same_state_directory_is_refused(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let config = pki.publisher_config(&broker, &pub_cert, "pub");
    let p = publisher(config.clone()).await;
    match Publisher::connect(config.clone()).await {
        Err(e @ PublisherError::StateLocked { .. }) => {
            assert!(e.to_string().contains("in use by another publisher"), "{e}");
        }
        other => panic!("a second publisher must be refused, got {other:?}"),
    }
    p.disconnect().await.unwrap();
    let p = publisher(config).await;
    p.publish("sensors/a", b"x", QoS::AtLeastOnce, false)
        .await
        .unwrap();
}

/// Without a revocation list the publisher does not start, unless told loudly.
async fn the_revocation_list_is_required(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let mut config = pki.publisher_config(&broker, &pub_cert, "pub");
    config.crl = None;
    match Publisher::connect(config.clone()).await {
        Err(PublisherError::RevocationListRequired) => {}
        other => panic!("no CRL must be refused, got {other:?}"),
    }
    config.insecure_no_crl = true;
    publisher(config).await;
}

/// A subscriber certificate valid for `seconds` more seconds (the scenarios use 10: long
/// enough to be granted and read once on a loaded machine, short enough to wait out).
fn short_lived_subscriber(pki: &Pki, id: &str, seconds: i64) -> sealpost_certs::Issued {
    let now = time::OffsetDateTime::now_utc();
    pki.ca
        .issue(
            &sealpost_certs::Profile::Subscriber { id: id.into() },
            sealpost_certs::Validity {
                not_before: now - time::Duration::minutes(5),
                not_after: now + time::Duration::seconds(seconds),
            },
        )
        .unwrap()
}

/// Sleeps until `issued` has expired.
async fn until_expired(issued: &sealpost_certs::Issued) {
    let der = sealpost_certs::pemfile::decode(
        &issued.certificate_pem,
        sealpost_certs::pemfile::CERTIFICATE,
    )
    .unwrap();
    let not_after = sealpost_certs::parse(&der).unwrap().not_after;
    while sealpost_certs::now_unix() <= not_after {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next event that is not a key-fetch failure must be a rejection for want of the
/// key of `epoch`.
async fn expect_unknown_key(s: &mut sealpost_subscriber::Subscriber, epoch: u64) {
    loop {
        match next_event(s).await {
            Event::KeyFetchFailed(_) => continue,
            Event::Message(m) => panic!("expected no key for epoch {epoch}, got {m:?}"),
            Event::Rejected(r) => {
                assert!(
                    matches!(r.reason, Rejected::UnknownKey { epoch: e, .. } if e == epoch),
                    "expected no key for epoch {epoch}, got {r:?}"
                );
                return;
            }
        }
    }
}

/// While the publisher runs, the CA revokes bob's certificate and dave's expires: the
/// periodic check (revocation list reloaded from its file) drops both and rotates the
/// key, so neither reads what is published afterwards; alice still does.
async fn readers_revoked_or_expired_while_the_publisher_runs_get_no_new_epoch(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let bob = pki.subscriber("bob");
    let dave = short_lived_subscriber(&pki, "dave", 10);
    let mut a = subscriber(pki.subscriber_config(&broker, &alice), "sensors/#").await;
    let mut b = subscriber(pki.subscriber_config(&broker, &bob), "sensors/#").await;
    let mut d = subscriber(pki.subscriber_config(&broker, &dave), "sensors/#").await;
    let mut config = pki.publisher_config(&broker, &pub_cert, "pub");
    config.crl_reload_interval = Duration::from_millis(200);
    let p = publisher(config).await;
    for issued in [&alice, &bob, &dave] {
        p.grant_pem(&issued.certificate_pem).await.unwrap();
    }
    p.publish("sensors/t", b"before", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    for s in [&mut a, &mut b, &mut d] {
        assert_eq!(expect_message(s).await.payload, b"before");
    }
    let epoch_before = p.epoch().await;

    pki.revoke(&bob);
    until_expired(&dave).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while p.granted().await != vec!["alice".to_owned()] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob and dave still granted: {:?}",
            p.granted().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let epoch = p.epoch().await;
    assert!(epoch > epoch_before, "dropping readers rotates the key");

    p.publish("sensors/t", b"after", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = expect_message(&mut a).await;
    assert_eq!((m.payload.as_slice(), m.epoch), (&b"after"[..], epoch));
    expect_unknown_key(&mut b, epoch).await;
    expect_unknown_key(&mut d, epoch).await;
    assert_eq!(b.counters().delivered_total(), 1);
    assert_eq!(d.counters().delivered_total(), 1);
}

/// Readers whose certificates were revoked or expired while the publisher was down are
/// dropped when it starts again, and the key rotates; with the periodic check off, every
/// rekey still checks every reader.
async fn readers_revoked_or_expired_while_the_publisher_was_down_are_dropped(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let carol = pki.subscriber("carol");
    let erin = short_lived_subscriber(&pki, "erin", 10);
    let mut config = pki.publisher_config(&broker, &pub_cert, "pub");
    config.crl_reload_interval = Duration::ZERO;
    let p = publisher(config.clone()).await;
    for issued in [&alice, &carol, &erin] {
        p.grant_pem(&issued.certificate_pem).await.unwrap();
    }
    let epoch_before = p.epoch().await;
    p.disconnect().await.unwrap();

    pki.revoke(&carol);
    until_expired(&erin).await;
    let mut c = subscriber(pki.subscriber_config(&broker, &carol), "sensors/#").await;
    let mut erin_config = pki.subscriber_config(&broker, &erin);
    if let Some(tls) = erin_config.tls.as_mut() {
        // An expired certificate cannot log in to the sealpost broker: erin connects
        // without one (and so is not given her key messages there either).
        tls.client = None;
    }
    let mut e = subscriber(erin_config, "sensors/#").await;
    let mut a = subscriber(pki.subscriber_config(&broker, &alice), "sensors/#").await;
    let p = publisher(config).await;
    assert_eq!(p.granted().await, vec!["alice".to_owned()]);
    let epoch = p.epoch().await;
    assert!(epoch > epoch_before, "dropping readers rotates the key");
    p.publish("sensors/t", b"after restart", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = expect_message(&mut a).await;
    assert_eq!(
        (m.payload.as_slice(), m.epoch),
        (&b"after restart"[..], epoch)
    );
    expect_unknown_key(&mut c, epoch).await;
    match kind {
        BrokerKind::Mosquitto => expect_unknown_key(&mut e, epoch).await,
        // Without a certificate erin is given no key message at all there, so not even
        // the publisher's certificate.
        BrokerKind::Sealpost => {
            let r = expect_rejection(&mut e).await;
            assert!(
                matches!(r.reason, Rejected::UnknownPublisher { .. }),
                "{r:?}"
            );
        }
    }

    // Revoked while running, with no periodic check: the next rekey drops her.
    pki.revoke(&alice);
    let rekey = p.rotate().await.unwrap();
    assert_eq!(rekey.key_messages, 0, "no reader left to send a key to");
    assert!(p.granted().await.is_empty());
    p.publish("sensors/t", b"for nobody", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    expect_unknown_key(&mut a, rekey.epoch).await;
}

/// A revocation list that cannot be used (here: not a CRL at all) is ignored when
/// reloaded: the one in force stays, never none, and a good list later still applies.
async fn an_unusable_revocation_list_is_ignored_and_the_one_in_force_stays(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let bob = pki.subscriber("bob");
    let mut config = pki.publisher_config(&broker, &pub_cert, "pub");
    config.crl_reload_interval = Duration::ZERO;
    let p = publisher(config).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    p.grant_pem(&bob.certificate_pem).await.unwrap();
    let crl = pki.crl_path();
    pki.revoke(&bob);
    let revoking_bob = std::fs::read(&crl).unwrap();

    std::fs::write(&crl, b"not a revocation list").unwrap();
    assert_eq!(p.check_readers().await.unwrap(), Vec::<String>::new());
    assert_eq!(
        p.granted().await,
        vec!["alice".to_owned(), "bob".to_owned()]
    );

    std::fs::write(&crl, revoking_bob).unwrap();
    assert_eq!(p.check_readers().await.unwrap(), vec!["bob".to_owned()]);
    assert_eq!(p.granted().await, vec!["alice".to_owned()]);
}

/// Backward secrecy: bob, granted after message 1 was sealed, cannot open it (it is
/// retained, so he is handed it), but opens message 2. With rotation on grant turned off,
/// a reader granted later opens the earlier message too.
async fn a_reader_granted_later_cannot_open_what_was_sealed_before(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let bob = pki.subscriber("bob");
    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    p.publish("sensors/one", b"message 1", QoS::AtLeastOnce, true)
        .await
        .unwrap();
    let epoch_1 = p.epoch().await;
    p.grant_pem(&bob.certificate_pem).await.unwrap();
    assert_eq!(p.epoch().await, epoch_1 + 1, "a new reader rotates the key");
    p.publish("sensors/two", b"message 2", QoS::AtLeastOnce, true)
        .await
        .unwrap();

    let mut b = subscriber(pki.subscriber_config(&broker, &bob), "sensors/one").await;
    expect_unknown_key(&mut b, epoch_1).await;
    let mut b2 = subscriber(pki.subscriber_config(&broker, &bob), "sensors/two").await;
    assert_eq!(expect_message(&mut b2).await.payload, b"message 2");
    // Alice, granted before, reads both.
    let mut a = subscriber(pki.subscriber_config(&broker, &alice), "sensors/one").await;
    assert_eq!(expect_message(&mut a).await.payload, b"message 1");
    p.disconnect().await.unwrap();

    // The opt-out: no rotation, and the later reader opens the earlier message.
    let other = pki.publisher("sensor-2", &["other/#"]);
    let mut config = pki.publisher_config(&broker, &other, "pub-2");
    config.rotate_on_grant = false;
    let q = publisher(config).await;
    q.grant_pem(&alice.certificate_pem).await.unwrap();
    q.publish("other/one", b"old news", QoS::AtLeastOnce, true)
        .await
        .unwrap();
    let epoch = q.epoch().await;
    q.grant_pem(&bob.certificate_pem).await.unwrap();
    assert_eq!(q.epoch().await, epoch);
    let mut b3 = subscriber(pki.subscriber_config(&broker, &bob), "other/one").await;
    assert_eq!(expect_message(&mut b3).await.payload, b"old news");
}

/// The same for KDC readers: bob, given credentials after message 1 was sealed, cannot
/// fetch its key, but reads message 2.
async fn a_kdc_reader_added_later_cannot_open_what_was_sealed_before(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let p = publisher(pki.kdc_publisher_config(&broker, &pub_cert, "pub")).await;
    p.add_reader("alice").await.unwrap();
    p.publish("sensors/one", b"message 1", QoS::AtLeastOnce, true)
        .await
        .unwrap();
    let epoch_1 = p.epoch().await;
    let bob = p.add_reader("bob").await.unwrap();
    assert_eq!(p.epoch().await, epoch_1 + 1, "a new reader rotates the key");
    p.publish("sensors/two", b"message 2", QoS::AtLeastOnce, true)
        .await
        .unwrap();
    let mut b = subscriber(
        pki.kdc_subscriber_config(&broker, bob.clone()),
        "sensors/one",
    )
    .await;
    expect_unknown_key(&mut b, epoch_1).await;
    let mut b2 = subscriber(pki.kdc_subscriber_config(&broker, bob), "sensors/two").await;
    assert_eq!(expect_message(&mut b2).await.payload, b"message 2");
}

/// Protocol version 2: a publisher floods bursts (one `publish_many` larger than the
/// maximum burst, and many concurrent `publish` calls that queue up behind each other) to
/// subscribers with different topic filters. Each receives exactly the messages its filter
/// matches, once, in order, although it sees only some messages of each burst; a spy
/// confirms that messages were sealed in bursts of more than one.
async fn a_flood_of_bursts_reaches_subscribers_with_different_filters(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let filters = ["sensors/a/#", "sensors/+/temp", "sensors/#"];
    let readers: Vec<_> = ["alice", "bob", "carol"]
        .iter()
        .map(|id| pki.subscriber(id))
        .collect();
    let mut spy = RawClient::connect(&broker, "spy", Some("sensors/#")).await;
    let mut subs = Vec::new();
    for (reader, filter) in readers.iter().zip(filters) {
        subs.push(subscriber(pki.subscriber_config(&broker, reader), filter).await);
    }
    let p = std::sync::Arc::new(publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await);
    for reader in &readers {
        p.grant_pem(&reader.certificate_pem).await.unwrap();
    }
    let topics = [
        "sensors/a/temp",
        "sensors/b/temp",
        "sensors/a/hum",
        "sensors/c/hum",
    ];
    let sent: Vec<(String, Vec<u8>)> = (0..600)
        .map(|i| {
            (
                topics[i % topics.len()].to_owned(),
                format!("m{i}").into_bytes(),
            )
        })
        .collect();
    // 300 at once: a burst of 256 and one of 44.
    let first: Vec<(&str, &[u8])> = sent[..300]
        .iter()
        .map(|(t, m)| (t.as_str(), m.as_slice()))
        .collect();
    let many_seqs = p
        .publish_many(&first, QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert!(many_seqs.windows(2).all(|w| w[1] == w[0] + 1));
    let last_of_many = *many_seqs.last().unwrap();
    // 300 more from concurrent calls. On one thread, every call queues its message before
    // the first burst is sealed, so that burst takes all the queue holds (up to 256):
    // what the publisher does whenever calls queue up behind a burst being sealed.
    let calls: Vec<(String, Vec<u8>)> = sent[300..].to_vec();
    let publisher = p.clone();
    let mut concurrent_seqs = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for (t, m) in calls {
                let p = publisher.clone();
                tasks.spawn(
                    async move { p.publish(&t, &m, QoS::AtLeastOnce, false).await.unwrap() },
                );
            }
            tasks.join_all().await
        })
    })
    .await
    .unwrap();
    concurrent_seqs.sort_unstable();
    concurrent_seqs.dedup();
    assert_eq!(
        concurrent_seqs.len(),
        300,
        "every call got its own sequence number"
    );
    assert!(concurrent_seqs[0] > last_of_many);

    for (s, filter) in subs.iter_mut().zip(filters) {
        let expected: Vec<&(String, Vec<u8>)> = sent
            .iter()
            .filter(|(t, _)| rumqttc::matches(t, filter))
            .collect();
        let mut got = Vec::new();
        for _ in &expected {
            let m = expect_message(s).await;
            got.push((m.topic, m.payload, m.seq));
        }
        assert!(
            got.windows(2).all(|w| w[0].2 < w[1].2),
            "{filter}: in order"
        );
        let mut got: Vec<(String, Vec<u8>)> = got.into_iter().map(|(t, p, _)| (t, p)).collect();
        let mut want: Vec<(String, Vec<u8>)> = expected.into_iter().cloned().collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{filter}: exactly the matching messages");
        assert_eq!(s.counters().rejected_total(), 0, "{filter}");
    }
    // Burst sizes, as the spy sees them: of the `publish_many` messages, and of the
    // concurrent calls' (sequence numbers after those).
    let (mut largest_many, mut largest_concurrent) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (largest_many, largest_concurrent) != (256, 256) && tokio::time::Instant::now() < deadline
    {
        for (_, envelope) in spy.drain() {
            let header = sealpost_protocol::peek(&envelope).unwrap();
            let size = header.burst.expect("version 2").tree_size;
            if header.seq <= last_of_many {
                largest_many = largest_many.max(size);
            } else {
                largest_concurrent = largest_concurrent.max(size);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(largest_many, 256, "publish_many sealed a full burst");
    assert_eq!(
        largest_concurrent, 256,
        "queued publish calls were sealed together"
    );
}

/// Many tasks on the multi-threaded runtime call `publish` at once and one after another,
/// so that calls keep arriving while earlier bursts are sealed and sent (one drain is
/// scheduled at a time, and it takes every message queued before it starts). Every call
/// gets its own sequence number, the subscriber gets every message exactly once, calls
/// made at the same moment share bursts, and a lone call made when nothing else is queued
/// is still sealed at once, as a burst of one.
async fn publish_calls_from_many_tasks_share_bursts_and_every_message_arrives(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let mut spy = RawClient::connect(&broker, "spy", Some("sensors/#")).await;
    let mut s = subscriber(pki.subscriber_config(&broker, &alice), "sensors/#").await;
    let p = std::sync::Arc::new(publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await);
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    const TASKS: usize = 8;
    const CALLS: usize = 150;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let p = p.clone();
        tasks.spawn(async move {
            let mut seqs = Vec::new();
            let mut in_flight = tokio::task::JoinSet::new();
            for i in 0..CALLS {
                let payload = format!("t{t} m{i}").into_bytes();
                if i % 2 == 0 {
                    // One after another...
                    seqs.push(
                        p.publish("sensors/a", &payload, QoS::AtLeastOnce, false)
                            .await
                            .unwrap(),
                    );
                } else {
                    // ...and concurrently.
                    let p = p.clone();
                    in_flight.spawn(async move {
                        p.publish("sensors/a", &payload, QoS::AtLeastOnce, false)
                            .await
                            .unwrap()
                    });
                }
            }
            seqs.extend(in_flight.join_all().await);
            seqs
        });
    }
    let mut seqs: Vec<u64> = tasks.join_all().await.into_iter().flatten().collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        TASKS * CALLS,
        "every call got its own sequence number"
    );

    let mut got = Vec::new();
    for _ in 0..TASKS * CALLS {
        got.push(expect_message(&mut s).await.payload);
    }
    got.sort();
    let mut want: Vec<Vec<u8>> = (0..TASKS)
        .flat_map(|t| (0..CALLS).map(move |i| format!("t{t} m{i}").into_bytes()))
        .collect();
    want.sort();
    assert_eq!(got, want, "every message, exactly once");
    assert_eq!(s.counters().rejected_total(), 0);

    // Quiet now: a lone call is sealed at once, alone.
    let lone = p
        .publish("sensors/lone", b"alone", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut s).await.payload, b"alone");

    let mut sizes = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sizes.len() < TASKS * CALLS + 1 && tokio::time::Instant::now() < deadline {
        for (_, envelope) in spy.drain() {
            let header = sealpost_protocol::peek(&envelope).unwrap();
            sizes.insert(header.seq, header.burst.expect("version 2").tree_size);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sizes.len(), TASKS * CALLS + 1, "the spy saw every envelope");
    assert_eq!(sizes[&lone], 1, "a lone call is a burst of one");
    let bursts: f64 = seqs.iter().map(|seq| 1.0 / sizes[seq] as f64).sum();
    assert!(
        bursts < (TASKS * CALLS) as f64 / 2.0,
        "calls made together share bursts: {bursts:.0} bursts for {} calls",
        TASKS * CALLS
    );
}

/// A `publish` call spawns the drain that will seal its message on the caller's runtime.
/// Here that runtime is a short-lived one, dropped before the drain ever ran, with the
/// call abandoned after its first poll: the publisher must not wait forever for that
/// drain. The next call, from the test's runtime, schedules a drain again, and it takes
/// both messages.
async fn a_drain_dropped_with_its_runtime_does_not_stall_the_publisher(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let mut a = subscriber(pki.subscriber_config(&broker, &alice), "sensors/#").await;
    let p = std::sync::Arc::new(publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await);
    p.grant_pem(&alice.certificate_pem).await.unwrap();

    let q = p.clone();
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut call =
                std::pin::pin!(q.publish("sensors/t", b"abandoned", QoS::AtLeastOnce, false));
            // One poll: the message is queued and its drain spawned on this runtime, which
            // has not run it when `block_on` returns.
            let first = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::future::Future::poll(call.as_mut(), cx))
            })
            .await;
            assert!(first.is_pending());
        });
        // Shut down with the drain never polled.
        drop(runtime);
    })
    .await
    .unwrap();

    tokio::time::timeout(
        Duration::from_secs(10),
        p.publish("sensors/t", b"next", QoS::AtLeastOnce, false),
    )
    .await
    .expect("the publisher is not stalled")
    .unwrap();
    let mut got = vec![
        expect_message(&mut a).await.payload,
        expect_message(&mut a).await.payload,
    ];
    got.sort();
    assert_eq!(got, vec![b"abandoned".to_vec(), b"next".to_vec()]);
}

/// A publisher whose MQTT client queues fewer packets (`request_queue`, 4 here) than a
/// rekey hands over (41 and 40 key messages) and than its callers publish at once: the
/// calls wait for room rather than fail, and everything arrives.
async fn a_request_queue_smaller_than_a_rekey_only_makes_calls_wait(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let mut a = subscriber(pki.subscriber_config(&broker, &alice), "sensors/#").await;
    let mut config = pki.publisher_config(&broker, &pub_cert, "pub");
    config.request_queue = 4;
    let p = std::sync::Arc::new(publisher(config).await);
    let der = |pem: &str| {
        sealpost_certs::pemfile::decode(pem, sealpost_certs::pemfile::CERTIFICATE).unwrap()
    };
    let mut readers: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            der(&pki
                .x25519_subscriber(&format!("reader-{i:02}"))
                .certificate_pem)
        })
        .collect();
    readers.push(der(&alice.certificate_pem));
    let (grant, _) = p.grant_many(&readers).await.unwrap();
    assert_eq!(grant.key_messages, 41);

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..60 {
        let p = p.clone();
        calls.spawn(async move {
            p.publish(
                "sensors/t",
                format!("m{i}").as_bytes(),
                QoS::AtLeastOnce,
                false,
            )
            .await
            .unwrap()
        });
    }
    assert_eq!(calls.join_all().await.len(), 60);
    let mut got: Vec<Vec<u8>> = Vec::new();
    for _ in 0..60 {
        got.push(expect_message(&mut a).await.payload);
    }
    got.sort();
    let mut want: Vec<Vec<u8>> = (0..60).map(|i| format!("m{i}").into_bytes()).collect();
    want.sort();
    assert_eq!(got, want);

    let epoch_before = p.epoch().await;
    let revoke = p.revoke("reader-00").await.unwrap();
    assert_eq!(revoke.key_messages, 40);
    p.publish("sensors/t", b"after", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = expect_message(&mut a).await;
    assert_eq!(m.payload, b"after");
    assert_eq!(m.epoch, epoch_before + 1);
    assert_eq!(a.counters().rejected_total(), 0);
}

/// Issue 16: subscribers of both key types granted by one publisher. alice and bob have
/// RSA certificates (RSA-OAEP key wrapping), xavier an X25519 one (HPKE). All three read,
/// from live and retained key messages; revoking an RSA reader and then the HPKE reader
/// rotates the key each time, and the revoked one reads nothing published afterwards while
/// the others, of either type, go on reading.
async fn hpke_and_rsa_subscribers_read_and_are_revoked_alike(kind: BrokerKind) {
    let pki = Pki::new("test CA");
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let bob = pki.subscriber("bob");
    let xavier = pki.kem_subscriber(XAVIER_HPKE.0, SubscriberKey::X25519);
    let wanda = pki.kem_subscriber(WANDA_XWING.0, SubscriberKey::XWing);
    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    for reader in [&alice, &bob, &xavier, &wanda] {
        p.grant_pem(&reader.certificate_pem).await.unwrap();
    }
    p.publish("sensors/kept", b"kept", QoS::AtLeastOnce, true)
        .await
        .unwrap();
    // Connected after the grants: every key comes from a retained key message.
    let mut a = subscriber(pki.subscriber_config(&broker, &alice), "sensors/#").await;
    let mut b = subscriber(pki.subscriber_config(&broker, &bob), "sensors/#").await;
    let x_config = pki.kem_subscriber_config(&broker, &xavier, XAVIER_HPKE);
    let mut x = subscriber(x_config.clone(), "sensors/#").await;
    let w_config = pki.kem_subscriber_config(&broker, &wanda, WANDA_XWING);
    let mut w = subscriber(w_config, "sensors/#").await;
    for s in [&mut a, &mut b, &mut x, &mut w] {
        assert_eq!(expect_message(s).await.payload, b"kept");
    }
    p.publish("sensors/t", b"all four", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    for s in [&mut a, &mut b, &mut x, &mut w] {
        assert_eq!(expect_message(s).await.payload, b"all four");
    }

    // Revoke an RSA reader: the HPKE readers and the other RSA reader get the new key.
    let epoch = p.epoch().await;
    let rekey = p.revoke("bob").await.unwrap();
    assert_eq!(
        (
            rekey.epoch,
            rekey.key_messages,
            rekey.wrapped + rekey.prepared
        ),
        (epoch + 1, 3, 3)
    );
    p.publish("sensors/t", b"without bob", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    for s in [&mut a, &mut x, &mut w] {
        let m = expect_message(s).await;
        assert_eq!(
            (m.payload.as_slice(), m.epoch),
            (&b"without bob"[..], epoch + 1)
        );
    }
    let r = expect_rejection(&mut b).await;
    assert!(
        matches!(r.reason, Rejected::UnknownKey { epoch: e, .. } if e == epoch + 1),
        "{r:?}"
    );

    // Revoke the X25519 reader: the RSA and the X-Wing reader left get the next key.
    let rekey = p.revoke(XAVIER_HPKE.0).await.unwrap();
    assert_eq!(
        (
            rekey.epoch,
            rekey.key_messages,
            rekey.wrapped + rekey.prepared
        ),
        (epoch + 2, 2, 2)
    );
    assert_eq!(
        p.granted().await,
        vec!["alice".to_owned(), WANDA_XWING.0.to_owned()]
    );
    p.publish("sensors/t", b"alice and wanda", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    for s in [&mut a, &mut w] {
        assert_eq!(expect_message(s).await.payload, b"alice and wanda");
    }
    let r = expect_rejection(&mut x).await;
    assert!(
        matches!(r.reason, Rejected::UnknownKey { epoch: e, .. } if e == epoch + 2),
        "{r:?}"
    );
    assert_eq!(
        x.counters().delivered_total(),
        3,
        "kept, all four, without bob"
    );
    assert_eq!(b.counters().delivered_total(), 2, "kept, all four");
    // xavier's retained key message is gone: a fresh connection learns no key at all.
    drop(x);
    let mut x2 = subscriber(x_config, "sensors/t").await;
    p.publish("sensors/t", b"later", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(expect_message(&mut a).await.payload, b"later");
    assert!(expect_rejection(&mut x2).await.reason.is_retryable());
    assert_eq!(x2.counters().key_messages_total(), 0);
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
    sequence_numbers_are_never_reused_after_a_failed_state_save,
    a_second_publisher_on_the_same_state_directory_is_refused,
    the_revocation_list_is_required,
    readers_revoked_or_expired_while_the_publisher_runs_get_no_new_epoch,
    readers_revoked_or_expired_while_the_publisher_was_down_are_dropped,
    an_unusable_revocation_list_is_ignored_and_the_one_in_force_stays,
    a_reader_granted_later_cannot_open_what_was_sealed_before,
    a_kdc_reader_added_later_cannot_open_what_was_sealed_before,
    a_flood_of_bursts_reaches_subscribers_with_different_filters,
    publish_calls_from_many_tasks_share_bursts_and_every_message_arrives,
    a_request_queue_smaller_than_a_rekey_only_makes_calls_wait,
    a_drain_dropped_with_its_runtime_does_not_stall_the_publisher,
    hpke_and_rsa_subscribers_read_and_are_revoked_alike,
);
