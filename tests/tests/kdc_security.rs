//! The KDC under attack (security audit, issue 13): revocation without a running KDC,
//! concurrent changes of the reader file, denial of service by failed logins, parallel
//! logins and idle sockets, and an impostor holding a certificate from the same CA.
//! A real HTTPS KDC on loopback (run by the publisher), the real SDK client.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use sealpost_certs::{pemfile, RevokedSerial, Validity};
use sealpost_publisher::kdc::readers::ReaderStore;
use sealpost_publisher::kdc::{
    add_reader_offline, readers_offline, KdcConfig, KdcCredentials, LoginLimit,
};
use sealpost_publisher::{Publisher, QoS};
use sealpost_subscriber::kdc::KdcClient;
use sealpost_subscriber::KdcError;
use sealpost_tests::tools::tool;
use sealpost_tests::*;

/// Runs a scenario with an overall time limit, so a bug can fail a test but never hang it.
async fn bounded<F: std::future::Future<Output = ()>>(scenario: F) {
    tokio::time::timeout(Duration::from_secs(120), scenario)
        .await
        .expect("scenario finished within its time limit");
}

/// A second loopback address (Linux routes all of 127/8 to lo): "another client".
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A broker and a publisher (sensor-1) serving keys from a KDC only, with `tweak`
/// applied to its KDC settings.
async fn kdc_publisher(pki: &Pki, tweak: impl FnOnce(&mut KdcConfig)) -> (Broker, Publisher) {
    let broker = Broker::start(BrokerKind::Mosquitto, pki);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let mut config = pki.kdc_publisher_config(&broker, &pub_cert, "pub");
    tweak(config.kdc.as_mut().expect("KDC configured"));
    let p = publisher(config).await;
    (broker, p)
}

fn client(credentials: &KdcCredentials, pki: &Pki) -> KdcClient {
    KdcClient::new(credentials.clone(), &pki.ca_pem()).unwrap()
}

/// Issue 13, item 3: `sealpost-pub --revoke alice` without `--kdc` used to rotate the key
/// and print "revoked alice" while the reader file kept alice active, so the next KDC run
/// let her in. Revocation reaches the reader file whether or not a KDC runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdc_revocation_reaches_the_readers_with_or_without_a_running_kdc() {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let broker = Broker::start(BrokerKind::Mosquitto, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let with_kdc = pki.kdc_publisher_config(&broker, &pub_cert, "pub");
        let p = publisher(with_kdc.clone()).await;
        let listen = p.kdc_local_addr().await.unwrap();
        let alice = p.add_reader("alice").await.unwrap();
        let bob = p.add_reader("bob").await.unwrap();
        client(&alice, &pki).login().await.unwrap();
        p.disconnect().await.unwrap();

        // Order 1: revoke while no KDC runs, then start the KDC again.
        let mut without_kdc = with_kdc.clone();
        without_kdc.kdc = None;
        without_kdc.key_messages = true;
        let p = publisher(without_kdc).await;
        p.revoke("alice")
            .await
            .expect("revoking a KDC reader while no KDC runs");
        p.disconnect().await.unwrap();
        let state_dir = pki.state_dir("pub");
        assert_eq!(
            readers_offline(&state_dir).unwrap(),
            vec!["bob".to_string()]
        );
        let mut again = with_kdc;
        again.kdc.as_mut().unwrap().listen = listen;
        let p = publisher(again).await;
        assert_eq!(
            client(&alice, &pki).login().await.unwrap_err(),
            KdcError::Revoked
        );

        // Order 2: the KDC runs, a token is live, then the revocation.
        let bob_client = client(&bob, &pki);
        let token = bob_client.login().await.unwrap();
        let epoch = p.rotate().await.unwrap().epoch;
        bob_client.fetch_key(&token, epoch).await.unwrap();
        let after = p.revoke("bob").await.unwrap().epoch;
        assert_eq!(
            bob_client.fetch_key(&token, after).await.unwrap_err(),
            KdcError::InvalidToken
        );
        assert_eq!(bob_client.login().await.unwrap_err(), KdcError::Revoked);
        assert!(p.kdc_readers().await.is_empty());
    })
    .await;
}

/// Issue 13, item 12: an offline `kdc add-reader` racing a revocation used to write back
/// the reader list it had read before, undoing the revocation (and other additions).
/// Real `sealpost-pub kdc add-reader` processes run at once with a revocation.
#[test]
fn kdc_concurrent_add_reader_processes_and_a_revocation_lose_nothing() {
    let pki = Pki::new("kdc CA");
    let server = pki.server();
    let kdc_cert = pki.dir().join("kdc.pem");
    std::fs::write(&kdc_cert, &server.certificate_pem).unwrap();
    let state = pki.state_dir("pub");
    let address = "https://127.0.0.1:8443";
    add_reader_offline(
        &state,
        "alice",
        Some(address),
        Some(&server.certificate_pem),
    )
    .unwrap();
    let readers: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    // Build the tool before starting the clock on the race.
    let _ = tool("sealpost-pub");
    let children: Vec<_> = readers
        .iter()
        .map(|id| {
            tool("sealpost-pub")
                .args(["kdc", "add-reader", id, "--kdc-address", address])
                .arg("--kdc-cert")
                .arg(&kdc_cert)
                .arg("--state-dir")
                .arg(&state)
                .arg("-o")
                .arg(pki.dir().join(format!("{id}.json")))
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start sealpost-pub kdc add-reader")
        })
        .collect();
    // What `Publisher::revoke` does to the reader file, meanwhile.
    assert!(ReaderStore::open(&state).unwrap().revoke("alice").unwrap());
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(readers_offline(&state).unwrap(), readers);
    let alice = ReaderStore::open(&state)
        .unwrap()
        .record("alice")
        .unwrap()
        .unwrap();
    assert!(alice.revoked_at.is_some(), "the revocation was undone");
}

/// Issue 13, item 12: tokens issued before the reader's credentials were issued again
/// (here by another process, as `kdc add-reader` does) die with the old credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdc_tokens_die_when_the_credentials_are_issued_again_elsewhere() {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let (_broker, p) = kdc_publisher(&pki, |_| {}).await;
        let old = p.add_reader("alice").await.unwrap();
        let epoch = p.rotate().await.unwrap().epoch;
        let old_client = client(&old, &pki);
        let token = old_client.login().await.unwrap();
        old_client.fetch_key(&token, epoch).await.unwrap();

        let new = add_reader_offline(&pki.state_dir("pub"), "alice", None, None).unwrap();
        assert_eq!(new.kdc_certificate_sha256, old.kdc_certificate_sha256);
        assert_eq!(
            old_client.fetch_key(&token, epoch).await.unwrap_err(),
            KdcError::InvalidToken
        );
        assert_eq!(
            old_client.login().await.unwrap_err(),
            KdcError::InvalidCredentials
        );
        let new_client = client(&new, &pki);
        let fresh = new_client.login().await.unwrap();
        new_client.fetch_key(&fresh, epoch).await.unwrap();
    })
    .await;
}

/// Issue 13, item 6a: failed logins for alice's id used to lock alice herself out. The
/// limit is the guesser's address: alice, elsewhere, logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdc_failed_logins_lock_out_the_address_not_the_reader() {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let (_broker, p) = kdc_publisher(&pki, |kdc| {
            kdc.login_limit = LoginLimit {
                max_failures: 3,
                window: Duration::from_secs(300),
            }
        })
        .await;
        let alice = p.add_reader("alice").await.unwrap();
        let guess = KdcCredentials {
            password: "guess".into(),
            ..alice.clone()
        };
        let guesser = client(&guess, &pki).bind_local(OTHER);
        for _ in 0..3 {
            assert_eq!(
                guesser.login().await.unwrap_err(),
                KdcError::InvalidCredentials
            );
        }
        assert!(
            matches!(
                guesser.login().await.unwrap_err(),
                KdcError::RateLimited { .. }
            ),
            "the guessing address is limited"
        );
        // The right password from the guesser's address is not even checked now...
        let err = client(&alice, &pki)
            .bind_local(OTHER)
            .login()
            .await
            .unwrap_err();
        assert!(matches!(err, KdcError::RateLimited { .. }), "{err:?}");
        // ...but alice, from her own address, is not locked out.
        client(&alice, &pki)
            .login()
            .await
            .expect("alice logs in despite the guesses for her id");
    })
    .await;
}

/// Issue 13, item 6b: failures used to be recorded only after argon2 ran, so a burst of
/// parallel logins from one address all ran argon2 (19 MiB each). Attempts in progress
/// count: a burst gets exactly as many password checks as failures it is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdc_parallel_failed_logins_from_one_address_get_only_the_allowed_checks() {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let (_broker, p) = kdc_publisher(&pki, |kdc| {
            kdc.login_limit = LoginLimit {
                max_failures: 4,
                window: Duration::from_secs(300),
            };
            // This test is about the login limit, not the connection limit.
            kdc.max_connections_per_address = 64;
        })
        .await;
        let alice = p.add_reader("alice").await.unwrap();
        let mut logins = tokio::task::JoinSet::new();
        for i in 0..40 {
            let guesser = client(
                &KdcCredentials {
                    password: format!("guess-{i}"),
                    ..alice.clone()
                },
                &pki,
            );
            logins.spawn(async move { guesser.login().await.unwrap_err() });
        }
        let mut checked = 0;
        let mut limited = 0;
        while let Some(outcome) = logins.join_next().await {
            match outcome.unwrap() {
                KdcError::InvalidCredentials => checked += 1,
                KdcError::RateLimited { .. } => limited += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((checked, limited), (4, 36));
    })
    .await;
}

/// Issue 13, item 6c: 256 idle TCP sockets used to hold every connection slot for the
/// 10-second handshake timeout. One address now holds only a few slots, and an idle
/// socket is dropped after the (shorter) handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdc_idle_sockets_from_one_address_do_not_keep_readers_out() {
    use tokio::io::AsyncReadExt;
    bounded(async {
        let pki = Pki::new("kdc CA");
        let (_broker, p) = kdc_publisher(&pki, |_| {}).await;
        let kdc_addr = p.kdc_local_addr().await.unwrap();
        let alice = p.add_reader("alice").await.unwrap();
        let mut idle = Vec::new();
        for _ in 0..(sealpost_publisher::kdc::DEFAULT_MAX_CONNECTIONS + 24) {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind((OTHER, 0).into()).unwrap();
            idle.push(socket.connect(kdc_addr).await.unwrap());
        }
        // Well before any handshake timeout would free a slot, alice gets in.
        tokio::time::timeout(Duration::from_secs(5), client(&alice, &pki).login())
            .await
            .expect("alice was kept out by idle sockets")
            .unwrap();
        // Every idle socket is closed by the KDC: at once past the per-address limit,
        // after the handshake timeout (3 s) within it.
        let closed_within = sealpost_publisher::kdc::HANDSHAKE_TIMEOUT + Duration::from_secs(3);
        for socket in &mut idle {
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(closed_within, socket.read(&mut buf))
                .await
                .expect("an idle socket outlived the handshake timeout");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
    })
    .await;
}

/// Issue 13, item 11: the client used to trust any certificate the CA issued for the
/// KDC's host, so whoever held one (the broker's names the same host) received the
/// reader's password. The KDC's certificate is pinned in the credentials: another
/// certificate from the same CA, for the same host, fails the handshake, so no password
/// is sent (an impostor KDC that got it would answer `invalid_credentials`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdc_impostor_with_a_same_ca_certificate_for_the_host_gets_no_password() {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let broker = Broker::start(BrokerKind::Mosquitto, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let config = pki.kdc_publisher_config(&broker, &pub_cert, "pub");
        let p = publisher(config.clone()).await;
        let listen = p.kdc_local_addr().await.unwrap();
        let alice = p.add_reader("alice").await.unwrap();
        client(&alice, &pki).login().await.unwrap();
        p.disconnect().await.unwrap();

        // The impostor: another KDC on the address alice's credentials name, with a
        // perfectly valid server certificate from the same CA for the same host.
        let mut impostor = pki.kdc_publisher_config(&broker, &pub_cert, "impostor");
        impostor.kdc.as_mut().unwrap().listen = listen;
        let q = publisher(impostor).await;
        assert_eq!(q.kdc_address().await.unwrap(), alice.kdc);
        let err = client(&alice, &pki).login().await.unwrap_err();
        match &err {
            KdcError::Tls(m) => assert!(m.contains("pinned"), "{m}"),
            other => panic!("expected the handshake to fail, got {other:?}"),
        }
        q.disconnect().await.unwrap();

        // The real KDC, back: alice's pinned certificate, and a revocation list naming
        // it makes her refuse it too.
        let mut back = config;
        back.kdc.as_mut().unwrap().listen = listen;
        let kdc_pem = back.kdc.as_ref().unwrap().certificate_pem.clone();
        let _p = publisher(back).await;
        client(&alice, &pki).login().await.unwrap();
        let crl = pki
            .ca
            .revocation_list(
                &[RevokedSerial {
                    serial: serial_of(&kdc_pem),
                    revoked_at: Validity::days_from_now(1).not_before,
                }],
                1,
                Validity::days_from_now(1),
            )
            .unwrap();
        let err = KdcClient::with_revocation_list(alice.clone(), &pki.ca_pem(), &crl)
            .unwrap()
            .login()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, KdcError::Tls(m) if m.contains("revoked")),
            "{err:?}"
        );
        let empty = pki
            .ca
            .revocation_list(&[], 2, Validity::days_from_now(1))
            .unwrap();
        KdcClient::with_revocation_list(alice, &pki.ca_pem(), &empty)
            .unwrap()
            .login()
            .await
            .expect("a revocation list without the KDC certificate");
    })
    .await;
}

/// Issue 13, item 8: `sealpost-pub kdc add-reader` run while the publisher was down, or
/// by another process while it serves, used to grant the reader the current epoch, whose
/// key had sealed what was published before the reader was added (retained messages
/// included). Such a reader is now enabled from a new epoch: at the publisher's next
/// start, or at once while it runs; the KDC serves it nothing older, not even meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdc_readers_added_elsewhere_get_no_key_that_sealed_earlier_messages() {
    bounded(async {
        let pki = Pki::new("kdc CA");
        let broker = Broker::start(BrokerKind::Mosquitto, &pki);
        let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
        let config = pki.kdc_publisher_config(&broker, &pub_cert, "pub");
        let state_dir = pki.state_dir("pub");
        let p = publisher(config.clone()).await;
        let listen = p.kdc_local_addr().await.unwrap();
        p.publish("sensors/temp", b"before carol", QoS::AtLeastOnce, true)
            .await
            .unwrap();
        let before_carol = p.epoch().await;
        p.disconnect().await.unwrap();

        // 1. Added while the publisher is down: its next start rotates first.
        let carol = add_reader_offline(&state_dir, "carol", None, None).unwrap();
        let mut again = config;
        again.kdc.as_mut().unwrap().listen = listen;
        let p = publisher(again).await;
        let carol_from = p.epoch().await;
        assert!(carol_from > before_carol, "no rotation for carol at start");
        let carol_client = client(&carol, &pki);
        let token = carol_client.login().await.unwrap();
        assert_eq!(
            carol_client
                .fetch_key(&token, before_carol)
                .await
                .unwrap_err(),
            KdcError::NotGranted(before_carol)
        );
        carol_client.fetch_key(&token, carol_from).await.unwrap();

        // 2. Added by another process while the KDC serves: no key at all until the
        //    publisher has rotated, then the new epoch's.
        p.publish("sensors/temp", b"before dave", QoS::AtLeastOnce, true)
            .await
            .unwrap();
        let before_dave = p.epoch().await;
        let dave = add_reader_offline(&state_dir, "dave", None, None).unwrap();
        let dave_client = client(&dave, &pki);
        let token = dave_client.login().await.unwrap();
        assert_eq!(
            dave_client
                .fetch_key(&token, before_dave)
                .await
                .unwrap_err(),
            KdcError::NotGranted(before_dave)
        );
        // The rotation and the enabling happen together, under the publisher's lock.
        while p.epoch().await == before_dave {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let dave_from = p.epoch().await;
        dave_client.fetch_key(&token, dave_from).await.unwrap();
        assert_eq!(
            dave_client
                .fetch_key(&token, before_dave)
                .await
                .unwrap_err(),
            KdcError::NotGranted(before_dave)
        );
        // carol, enabled before, reads the new epoch too.
        let token = carol_client.login().await.unwrap();
        carol_client.fetch_key(&token, dave_from).await.unwrap();
        p.disconnect().await.unwrap();
    })
    .await;
}

/// Credentials pin exactly the certificate given to `add-reader`, and one for another
/// host is refused before any credentials are issued.
#[test]
fn kdc_add_reader_pins_the_given_certificate() {
    let pki = Pki::new("kdc CA");
    let server = pki.server();
    let state = pki.state_dir("pub");
    let c = add_reader_offline(
        &state,
        "alice",
        Some("https://127.0.0.1:8443"),
        Some(&server.certificate_pem),
    )
    .unwrap();
    let der = pemfile::decode(&server.certificate_pem, pemfile::CERTIFICATE).unwrap();
    let info = sealpost_certs::parse(&der).unwrap();
    assert_eq!(c.kdc_certificate_sha256, info.fingerprint_hex());
    assert!(c.to_json().contains(&info.fingerprint_hex()));
    let err = add_reader_offline(
        &state,
        "bob",
        Some("https://kdc.example:8443"),
        Some(&server.certificate_pem),
    )
    .unwrap_err();
    assert!(err.to_string().contains("kdc.example"), "{err}");
    // Without a certificate, and none served yet: refused, not issued unpinned.
    let err =
        add_reader_offline(&state, "carol", Some("https://127.0.0.1:8443"), None).unwrap_err();
    assert!(err.to_string().contains("--kdc-cert"), "{err}");
    assert_eq!(readers_offline(&state).unwrap(), vec!["alice".to_string()]);
}

fn serial_of(pem: &str) -> Vec<u8> {
    let der = pemfile::decode(pem, pemfile::CERTIFICATE).unwrap();
    sealpost_certs::parse(&der).unwrap().serial
}
