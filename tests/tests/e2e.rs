//! End-to-end scenarios: real broker (Mosquitto on an ephemeral loopback port), real
//! publisher and subscriber SDKs, raw MQTT clients as spies and attackers.

use std::time::Duration;

use rumqttc::QoS;
use sealpost_protocol::Rejected;
use sealpost_tests::*;

/// Runs a scenario with an overall time limit, so a bug can fail a test but never hang it.
async fn bounded<F: std::future::Future<Output = ()>>(scenario: F) {
    tokio::time::timeout(Duration::from_secs(120), scenario)
        .await
        .expect("scenario finished within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_subscribers_read_others_and_spies_see_nothing() {
    bounded(async {
        let broker = Broker::start(BrokerKind::Mosquitto);
        let pki = Pki::new("test CA");
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
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_subscriber_reads_nothing_published_afterwards() {
    bounded(async {
        let broker = Broker::start(BrokerKind::Mosquitto);
        let pki = Pki::new("test CA");
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

        let epoch_before = p.epoch().await;
        let rekey = p.revoke("bob").await.unwrap();
        assert_eq!(rekey.epoch, epoch_before + 1);
        assert_eq!(rekey.key_messages, 1, "only alice gets the new key");
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
        assert_eq!(b.counters().delivered_total(), 1);

        // The revoked subscriber's retained key message is gone: a fresh connection of
        // bob's identity learns nothing.
        drop(b);
        let mut b2 = subscriber(pki.subscriber_config(&broker, &bob), "sensors/#").await;
        p.publish("sensors/t", b"later", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(expect_message(&mut a).await.payload, b"later");
        assert!(expect_rejection(&mut b2).await.reason.is_retryable());
        assert_eq!(b2.counters().key_messages_total(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_subscriber_gets_keys_from_retained_key_messages() {
    bounded(async {
        let broker = Broker::start(BrokerKind::Mosquitto);
        let pki = Pki::new("test CA");
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
    })
    .await;
}
