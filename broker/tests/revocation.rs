//! Revocation while the broker runs: a client certificate revoked by a new revocation
//! list can no longer connect, and its open connection is closed; a new list that is
//! unreadable, badly signed or older is refused and the list in force stays.

mod common;

use common::pki::*;
use common::process::BrokerProcess;
use common::*;
use rumqttc::QoS;
use sealpost_broker::ListenerKind;
use sealpost_certs::{Issued, Profile};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Connects over TLS with `cert`; `Err` when the broker refuses it.
async fn connect_with(pki: &Pki, addr: SocketAddr, id: &str, cert: &Issued) -> Result<V4, String> {
    let mut c = V4::start(tls_options(id, addr, pki.client_tls(Some(cert))));
    c.connack().await.map(|_| c)
}

/// Whether `c`'s connection ends within `d` (its event loop reports an error).
async fn closed_within(c: &mut V4, d: Duration) -> bool {
    tokio::time::timeout(d, async {
        while let Some(Ok(_)) = c.events.recv().await {}
    })
    .await
    .is_ok()
}

/// Waits until `counter` exceeds `above`.
async fn counter_exceeds(counter: &AtomicU64, above: u64) {
    tokio::time::timeout(WAIT, async {
        while counter.load(Ordering::Relaxed) <= above {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("counter moved in time");
}

fn publisher(pki: &Pki, id: &str) -> Issued {
    pki.issue(Profile::Publisher {
        id: id.into(),
        topics: vec![format!("data/{id}/#")],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revoked_while_the_broker_runs_is_refused_and_its_connection_closed() {
    let pki = Pki::new();
    let p1 = publisher(&pki, "p1");
    let p2 = publisher(&pki, "p2");
    let mut config = pki.config_with_crl(true, Some(&pki.crl(&[], 1)));
    config.limits.crl_reload_interval_ms = 100;
    let (broker, addr) = start(config).await;
    let tls = broker.addr(ListenerKind::Tls).unwrap();
    let metrics = broker.metrics();

    let mut spy = V4::connect("spy", addr).await;
    spy.subscribe("data/#", QoS::AtLeastOnce).await;
    let mut open = connect_with(&pki, tls, "p1", &p1)
        .await
        .expect("p1 connects");
    open.client
        .publish("data/p1/x", QoS::AtLeastOnce, false, b"before".to_vec())
        .await
        .unwrap();
    assert_eq!(&spy.publish_msg().await.unwrap().payload[..], b"before");

    // The security center revokes p1; the broker is not restarted.
    pki.write("ca.crl.pem", &pki.crl(&[&p1], 2));
    // Well within the client's keep-alive (5 s, closed at 7.5 s): the revocation did it.
    assert!(
        closed_within(&mut open, Duration::from_secs(3)).await,
        "the open connection of a revoked certificate was not closed"
    );
    assert!(metrics.revoked_disconnects.load(Ordering::Relaxed) >= 1);
    assert!(
        connect_with(&pki, tls, "p1-again", &p1).await.is_err(),
        "a revoked certificate connected"
    );
    let p2_client = connect_with(&pki, tls, "p2", &p2).await;
    assert!(p2_client.is_ok(), "an unrevoked certificate was refused");
    drop(p2_client);

    // Lists that must not be installed: each is refused, and p1 stays revoked.
    let other_ca = Pki::new();
    for (what, text) in [
        ("not a revocation list", "garbage".to_owned()),
        ("an older list (rollback)", pki.crl(&[], 1)),
        ("a list signed by another CA", other_ca.crl(&[], 3)),
    ] {
        let failures = metrics.crl_reload_failures.load(Ordering::Relaxed);
        pki.write("ca.crl.pem", &text);
        counter_exceeds(&metrics.crl_reload_failures, failures).await;
        assert!(
            connect_with(&pki, tls, "p1-again", &p1).await.is_err(),
            "after {what}, the revoked certificate connected"
        );
    }
    // An unreadable file: the list in force stays too.
    let failures = metrics.crl_reload_failures.load(Ordering::Relaxed);
    std::fs::remove_file(pki.dir().join("ca.crl.pem")).unwrap();
    counter_exceeds(&metrics.crl_reload_failures, failures).await;
    assert!(connect_with(&pki, tls, "p1-again", &p1).await.is_err());
    assert!(connect_with(&pki, tls, "p2", &p2).await.is_ok());

    // A newer list that no longer names p1 is installed (an operator's correction).
    let reloads = metrics.crl_reloads.load(Ordering::Relaxed);
    pki.write("ca.crl.pem", &pki.crl(&[], 4));
    counter_exceeds(&metrics.crl_reloads, reloads).await;
    assert!(connect_with(&pki, tls, "p1-back", &p1).await.is_ok());
    broker.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_a_revoked_connection_gets_disconnect_0x98_and_its_will_is_not_published() {
    use rumqttc::v5::mqttbytes::v5::{Connect, LastWill, Packet};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let p1 = publisher(&pki, "p1");
    let mut config = pki.config_with_crl(true, Some(&pki.crl(&[], 1)));
    config.limits.crl_reload_interval_ms = 100;
    let (broker, addr) = start(config).await;
    let tls = broker.addr(ListenerKind::Tls).unwrap();
    let mut spy = V4::connect("spy", addr).await;
    spy.subscribe("data/#", QoS::AtLeastOnce).await;

    // A raw MQTT 5 client over TLS, to see the broker's bytes (rumqttc reports the end
    // of the TLS stream before the DISCONNECT it read with it).
    let rumqttc::TlsConfiguration::Rustls(client) = pki.client_tls(Some(&p1)) else {
        unreachable!()
    };
    let tcp = tokio::net::TcpStream::connect(tls).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .unwrap();
    let will = LastWill::new(
        "data/p1/will",
        "gone",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        None,
    );
    let connect = Connect {
        keep_alive: 30,
        client_id: "p1".into(),
        clean_start: true,
        properties: None,
    };
    let mut bytes = bytes::BytesMut::new();
    Packet::Connect(connect, Some(will), None)
        .write(&mut bytes, None)
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.unwrap();
    assert_eq!((connack[0], connack[3]), (0x20, 0x00), "connected");

    pki.write("ca.crl.pem", &pki.crl(&[&p1], 2));
    let mut rest = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the revoked connection was not closed");
    assert!(
        rest.ends_with(&[0xe0, 0x01, 0x98]),
        "no DISCONNECT 0x98 (administrative action) before the close: {rest:02x?}"
    );
    // A revoked publisher publishes nothing more, its will included.
    assert!(spy
        .maybe_publish(Duration::from_millis(500))
        .await
        .is_none());
    broker.shutdown(WAIT).await;
}

/// The binary reads its revocation list again on SIGHUP (here the only way: periodic
/// reloading is off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_makes_the_broker_binary_read_its_revocation_list_again() {
    let pki = Pki::new();
    let p1 = publisher(&pki, "p1");
    let server = pki.issue(Profile::Server {
        names: vec!["127.0.0.1".into(), "localhost".into()],
    });
    let crl = pki.write("ca.crl.pem", &pki.crl(&[], 1));
    let config = format!(
        "[[listener]]\nkind = \"tls\"\nbind = \"127.0.0.1:0\"\n[listener.tls]\n\
         cert = {:?}\nkey = {:?}\nclient_ca = {:?}\ncrl = {:?}\nrequire_client_cert = true\n\
         [limits]\ncrl_reload_interval_ms = 0\n",
        pki.write("server.pem", &server.certificate_pem),
        pki.write("server.key", &server.private_key_pem),
        pki.write("ca.pem", &pki.ca.certificate_pem()),
        crl,
    );
    let broker = BrokerProcess::start(&pki.write("broker.toml", &config), 1);
    let tls = broker.addr("Tls");
    let mut open = connect_with(&pki, tls, "p1", &p1)
        .await
        .expect("p1 connects");
    pki.write("ca.crl.pem", &pki.crl(&[&p1], 2));
    broker.signal("HUP");
    assert!(
        closed_within(&mut open, Duration::from_secs(3)).await,
        "SIGHUP did not close the revoked certificate's connection"
    );
    assert!(connect_with(&pki, tls, "p1-again", &p1).await.is_err());
}
