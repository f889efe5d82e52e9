//! Key distribution center mode end to end: a real HTTPS KDC on loopback (run by the
//! publisher), a real MQTT broker (Mosquitto), the real SDKs.

use std::time::Duration;

use rumqttc::QoS;
use sealpost_protocol::Rejected;
use sealpost_publisher::kdc::{KdcCredentials, LoginLimit};
use sealpost_subscriber::kdc::{AccessToken, KdcClient};
use sealpost_subscriber::{Event, KdcError, Subscriber, SubscriberError};
use sealpost_tests::*;

/// Runs a scenario with an overall time limit, so a bug can fail a test but never hang it.
async fn bounded<F: std::future::Future<Output = ()>>(scenario: F) {
    tokio::time::timeout(Duration::from_secs(120), scenario)
        .await
        .expect("scenario finished within its time limit");
}

/// Waits until the subscriber's hold time has passed and checks that nothing was
/// delivered: every event is a rejection or a key-fetch failure.
async fn expect_nothing_delivered(s: &mut Subscriber, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, s.next()).await {
        if let Event::Message(m) = event {
            panic!("delivered {m:?}");
        }
    }
}

async fn kdc_reader_reads_with_one_fetch_per_epoch_and_spy_sees_ciphertext(kind: BrokerKind) {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let broker = Broker::start(kind, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let p = publisher(pki.kdc_publisher_config(&broker, &pub_cert, "pub")).await;
        let address = p.kdc_address().await.expect("KDC running");
        assert!(address.starts_with("https://127.0.0.1:"), "{address}");
        let alice = p.add_reader("alice").await.unwrap();
        assert_eq!(alice.kdc, address);

        let mut spy = RawClient::connect(&broker, "spy", Some("#")).await;
        let mut a = subscriber(pki.kdc_subscriber_config(&broker, alice), "sensors/#").await;
        let texts: Vec<String> = (0..40).map(|i| format!("kdc secret {i}")).collect();
        for t in &texts {
            p.publish("sensors/a", t.as_bytes(), QoS::AtLeastOnce, false)
                .await
                .unwrap();
        }
        for t in &texts {
            let m = expect_message(&mut a).await;
            assert_eq!(m.payload, t.as_bytes());
            assert_eq!((m.publisher.as_str(), m.epoch), ("sensor-1", 1));
        }
        // Forty envelopes of one epoch arrived before the key: one fetch.
        assert_eq!(a.counters().key_fetches_total(), 1);
        assert_eq!(a.counters().key_fetch_failures_total(), 0);

        // A new epoch: exactly one more fetch.
        p.rotate().await.unwrap();
        p.publish("sensors/a", b"after rotation", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        let m = expect_message(&mut a).await;
        assert_eq!((m.payload.as_slice(), m.epoch), (&b"after rotation"[..], 2));
        assert_eq!(a.counters().key_fetches_total(), 2);

        let _ = spy.next_on("sensors/a").await;
        let captured = spy.drain();
        for (_, payload) in &captured {
            for t in &texts {
                assert!(!contains(payload, t.as_bytes()), "plaintext on the wire");
            }
            assert!(!contains(payload, b"after rotation"));
        }
        // Nothing else crossed the broker: no key messages in KDC-only mode.
        assert!(
            captured.iter().all(|(t, _)| t == "sensors/a"),
            "{captured:?}"
        );
    })
    .await;
}

async fn kdc_wrong_password_and_unknown_reader_read_nothing(kind: BrokerKind) {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let broker = Broker::start(kind, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let p = publisher(pki.kdc_publisher_config(&broker, &pub_cert, "pub")).await;
        let alice = p.add_reader("alice").await.unwrap();
        let wrong = KdcCredentials {
            password: "not-the-password".into(),
            ..alice.clone()
        };
        let unknown = KdcCredentials {
            reader: "mallory".into(),
            ..alice.clone()
        };
        let mut w = subscriber(pki.kdc_subscriber_config(&broker, wrong), "sensors/#").await;
        let mut u = subscriber(pki.kdc_subscriber_config(&broker, unknown), "sensors/#").await;
        p.publish("sensors/a", b"for alice only", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        for s in [&mut w, &mut u] {
            let f = expect_fetch_failure(s).await;
            assert_eq!(f.error, KdcError::InvalidCredentials);
            assert_eq!((f.publisher.as_str(), f.epoch), ("sensor-1", 1));
            assert_eq!(
                f.error.to_string(),
                "the KDC refused the credentials (unknown reader or wrong password)"
            );
            let r = expect_rejection(s).await;
            assert!(
                matches!(r.reason, Rejected::UnknownKey { epoch: 1, .. }),
                "{r:?}"
            );
            expect_nothing_delivered(s, Duration::from_millis(500)).await;
        }
    })
    .await;
}

async fn kdc_revoked_reader_reads_nothing_published_afterwards(kind: BrokerKind) {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let broker = Broker::start(kind, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let p = publisher(pki.kdc_publisher_config(&broker, &pub_cert, "pub")).await;
        let alice = p.add_reader("alice").await.unwrap();
        let bob = p.add_reader("bob").await.unwrap();
        let mut a = subscriber(
            pki.kdc_subscriber_config(&broker, alice.clone()),
            "sensors/#",
        )
        .await;
        let mut b = subscriber(pki.kdc_subscriber_config(&broker, bob), "sensors/#").await;
        p.publish("sensors/a", b"before", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(expect_message(&mut a).await.payload, b"before");
        assert_eq!(expect_message(&mut b).await.payload, b"before");

        let rekey = p.revoke("alice").await.unwrap();
        assert_eq!(rekey.epoch, 2);
        assert_eq!(p.kdc_readers().await, vec!["bob".to_string()]);
        p.publish("sensors/a", b"after", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(expect_message(&mut b).await.payload, b"after");
        // Alice's token was invalidated; logging in again is refused as revoked.
        let f = expect_fetch_failure(&mut a).await;
        assert_eq!((f.error.clone(), f.epoch), (KdcError::Revoked, 2), "{f:?}");
        let r = expect_rejection(&mut a).await;
        assert!(
            matches!(r.reason, Rejected::UnknownKey { epoch: 2, .. }),
            "{r:?}"
        );
        expect_nothing_delivered(&mut a, Duration::from_millis(500)).await;

        // Directly: the revoked credentials no longer log in.
        let client = KdcClient::new(alice, &pki.ca_pem()).unwrap();
        assert_eq!(client.login().await.unwrap_err(), KdcError::Revoked);
    })
    .await;
}

async fn kdc_expired_token_is_refused_and_the_subscriber_logs_in_again(kind: BrokerKind) {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let broker = Broker::start(kind, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let mut config = pki.kdc_publisher_config(&broker, &pub_cert, "pub");
        config.kdc.as_mut().unwrap().token_lifetime = Duration::from_secs(1);
        let p = publisher(config).await;
        let alice = p.add_reader("alice").await.unwrap();

        // The API itself: an expired token is refused with token_expired, no key.
        let client = KdcClient::new(alice.clone(), &pki.ca_pem()).unwrap();
        let token = client.login().await.unwrap();
        client.fetch_key(&token, 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let stale = AccessToken::new("not-a-token", token.expires_at);
        assert_eq!(
            client.fetch_key(&token, 1).await.unwrap_err(),
            KdcError::TokenExpired
        );
        assert_eq!(
            client.fetch_key(&stale, 1).await.unwrap_err(),
            KdcError::InvalidToken
        );

        // The SDK logs in again by itself when its token has expired.
        let mut a = subscriber(pki.kdc_subscriber_config(&broker, alice), "sensors/#").await;
        p.publish("sensors/a", b"one", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(expect_message(&mut a).await.payload, b"one");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        p.rotate().await.unwrap();
        p.publish("sensors/a", b"two", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        let m = expect_message(&mut a).await;
        assert_eq!((m.payload.as_slice(), m.epoch), (&b"two"[..], 2));
        assert_eq!(a.counters().key_fetch_failures_total(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdc_plain_http_and_foreign_certificates_are_refused() {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let broker = Broker::start(BrokerKind::Mosquitto, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let p = publisher(pki.kdc_publisher_config(&broker, &pub_cert, "pub")).await;
        let alice = p.add_reader("alice").await.unwrap();

        // An http:// address is refused before any connection.
        let http = KdcCredentials {
            kdc: alice.kdc.replace("https://", "http://"),
            ..alice.clone()
        };
        assert!(KdcCredentials::from_json(&http.to_json()).is_err());
        match Subscriber::connect(pki.kdc_subscriber_config(&broker, http)).await {
            Err(SubscriberError::Kdc(KdcError::Address(msg))) => {
                assert!(msg.contains("plain http is refused"), "{msg}")
            }
            other => panic!("expected an address error, got {other:?}"),
        }

        // A server speaking plain HTTP where the KDC should be: the TLS handshake fails.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_addr = plain.local_addr().unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = plain.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    .await;
            }
        });
        let to_plain = KdcCredentials {
            kdc: format!("https://{plain_addr}"),
            ..alice.clone()
        };
        let err = KdcClient::new(to_plain, &pki.ca_pem())
            .unwrap()
            .login()
            .await
            .unwrap_err();
        assert!(matches!(err, KdcError::Tls(_)), "{err:?}");
        server.abort();

        // A KDC whose certificate comes from another CA: refused, though it is a
        // perfectly good KDC for subscribers of that CA.
        let other = Pki::new("other CA");
        let other_pub = other.publisher("sensor-9", &["sensors/#"]);
        let q = publisher(other.kdc_publisher_config(&broker, &other_pub, "other-pub")).await;
        let mallory = q.add_reader("alice").await.unwrap();
        let err = KdcClient::new(mallory.clone(), &pki.ca_pem())
            .unwrap()
            .login()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, KdcError::Tls(m) if m.contains("certificate")),
            "{err:?}"
        );
        KdcClient::new(mallory, &other.ca_pem())
            .unwrap()
            .login()
            .await
            .expect("the same KDC is fine with its own CA");

        // The right CA works (control).
        KdcClient::new(alice, &pki.ca_pem())
            .unwrap()
            .login()
            .await
            .unwrap();

        // A publisher cannot even start a KDC with a certificate from another CA.
        let mut config = pki.kdc_publisher_config(&broker, &pub_cert, "pub-foreign");
        let foreign = other.server();
        let kdc = config.kdc.as_mut().unwrap();
        kdc.certificate_pem = foreign.certificate_pem;
        kdc.key_pem = foreign.private_key_pem;
        let err = sealpost_publisher::Publisher::connect(config)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("KDC"), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdc_brute_force_burst_is_rate_limited() {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let broker = Broker::start(BrokerKind::Mosquitto, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let mut config = pki.kdc_publisher_config(&broker, &pub_cert, "pub");
        config.kdc.as_mut().unwrap().login_limit = LoginLimit {
            max_failures: 4,
            window: Duration::from_secs(300),
        };
        let p = publisher(config).await;
        let alice = p.add_reader("alice").await.unwrap();
        let ca = pki.ca_pem();
        let mut outcomes = Vec::new();
        for i in 0..12 {
            let guess = KdcCredentials {
                password: format!("guess-{i}"),
                ..alice.clone()
            };
            outcomes.push(
                KdcClient::new(guess, &ca)
                    .unwrap()
                    .login()
                    .await
                    .unwrap_err(),
            );
        }
        assert!(
            outcomes[..4]
                .iter()
                .all(|e| *e == KdcError::InvalidCredentials),
            "{outcomes:?}"
        );
        assert!(
            outcomes[4..]
                .iter()
                .all(|e| matches!(e, KdcError::RateLimited { retry_after: Some(s) } if *s > 0)),
            "{outcomes:?}"
        );
        // Locked out: even the right password is not checked now.
        let err = KdcClient::new(alice, &ca)
            .unwrap()
            .login()
            .await
            .unwrap_err();
        assert!(matches!(err, KdcError::RateLimited { .. }), "{err:?}");
    })
    .await;
}

async fn kdc_publisher_restart_keeps_issued_credentials(kind: BrokerKind) {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let broker = Broker::start(kind, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let config = pki.kdc_publisher_config(&broker, &pub_cert, "pub");
        let p = publisher(config.clone()).await;
        let listen = p.kdc_local_addr().await.unwrap();
        let alice = p.add_reader("alice").await.unwrap();
        let mut a = subscriber(
            pki.kdc_subscriber_config(&broker, alice.clone()),
            "sensors/#",
        )
        .await;
        p.publish("sensors/a", b"before restart", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(expect_message(&mut a).await.payload, b"before restart");
        p.disconnect().await.unwrap();

        // Same state directory, same address: the tokens are gone (in memory only), the
        // credentials are not.
        let mut config = config;
        config.kdc.as_mut().unwrap().listen = listen;
        let p = publisher(config).await;
        assert_eq!(p.kdc_address().await.unwrap(), alice.kdc);
        assert_eq!(p.kdc_readers().await, vec!["alice".to_string()]);
        p.rotate().await.unwrap();
        p.publish("sensors/a", b"after restart", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        // The running subscriber's token is unknown to the new KDC: it logs in again.
        let m = expect_message(&mut a).await;
        assert_eq!((m.payload.as_slice(), m.epoch), (&b"after restart"[..], 2));
        KdcClient::new(alice, &pki.ca_pem())
            .unwrap()
            .login()
            .await
            .expect("credentials survive the restart");
    })
    .await;
}

async fn kdc_beside_key_messages_serves_both_kinds_of_reader(kind: BrokerKind) {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let broker = Broker::start(kind, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let mut config = pki.publisher_config(&broker, &pub_cert, "pub");
        config.kdc = Some(pki.kdc_config());
        let p = publisher(config).await;
        let bob_cert = pki.subscriber("bob");
        let mut b = subscriber(pki.subscriber_config(&broker, &bob_cert), "sensors/#").await;
        p.grant_pem(&bob_cert.certificate_pem).await.unwrap();
        let alice = p.add_reader("alice").await.unwrap();
        let mut a = subscriber(pki.kdc_subscriber_config(&broker, alice), "sensors/#").await;
        p.publish("sensors/a", b"to both", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(expect_message(&mut a).await.payload, b"to both");
        assert_eq!(expect_message(&mut b).await.payload, b"to both");
        assert_eq!(b.counters().key_fetches_total(), 0, "bob uses key messages");
        assert_eq!(a.counters().key_fetches_total(), 1);
    })
    .await;
}

async fn kdc_reader_added_offline_is_served_by_the_running_publisher(kind: BrokerKind) {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let broker = Broker::start(kind, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let state_dir = pki.state_dir("pub");
        let p = publisher(pki.kdc_publisher_config(&broker, &pub_cert, "pub")).await;
        // What `sealpost-pub kdc add-reader carol -o carol.json` does, from another
        // process, while the publisher serves.
        let carol =
            sealpost_publisher::kdc::add_reader_offline(&state_dir, "carol", None, None).unwrap();
        assert_eq!(carol.kdc, p.kdc_address().await.unwrap());
        let file = pki.dir().join("carol.json");
        carol.save(&file).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "credentials readable by others: {mode:o}");
        }
        let carol = KdcCredentials::load(&file).unwrap();
        let mut c = subscriber(pki.kdc_subscriber_config(&broker, carol), "sensors/#").await;
        // The running publisher enables her within a second (issue 13, item 8: until
        // then she gets no key, and what is sealed meanwhile is not for her).
        let mut readers = sealpost_publisher::kdc::readers::ReaderStore::open(&state_dir).unwrap();
        while readers.record("carol").unwrap().unwrap().pending {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p.publish("sensors/a", b"for carol", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(expect_message(&mut c).await.payload, b"for carol");
        assert_eq!(
            sealpost_publisher::kdc::readers_offline(&state_dir).unwrap(),
            vec!["carol".to_string()]
        );
    })
    .await;
}

/// Runs each scenario on Mosquitto and on the sealpost broker.
macro_rules! on_every_broker {
    ($($scenario:ident),* $(,)?) => {
        mod mosquitto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::BrokerKind::Mosquitto).await;
                }
            )*
        }
        mod sealpost {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::BrokerKind::Sealpost).await;
                }
            )*
        }
    };
}

on_every_broker!(
    kdc_reader_reads_with_one_fetch_per_epoch_and_spy_sees_ciphertext,
    kdc_wrong_password_and_unknown_reader_read_nothing,
    kdc_revoked_reader_reads_nothing_published_afterwards,
    kdc_expired_token_is_refused_and_the_subscriber_logs_in_again,
    kdc_publisher_restart_keeps_issued_credentials,
    kdc_beside_key_messages_serves_both_kinds_of_reader,
    kdc_reader_added_offline_is_served_by_the_running_publisher,
);
