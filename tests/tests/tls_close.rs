//! Issue 14 item 4: the command-line tools end their TLS connection with close_notify,
//! whichever way they exit. rumqttc owns the TLS streams it makes and never shuts them
//! down, so the broker used to see every exit as a truncated stream; the SDKs now dial TLS
//! themselves (client/src/tunnel.rs).
//!
//! A real TLS-terminating relay (tokio-rustls, the test CA's server certificate) stands in
//! front of a real sealpost broker and forwards to its TCP port; for every client it
//! records how the client's TLS stream ended: with close_notify (the read returns
//! `Ok(0)`) or without (`UnexpectedEof`). The clients reach the broker through it as the
//! broker's password user alice-web, who may read alice's key messages.

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use sealpost_publisher::QoS;
use sealpost_tests::tools::{run, tool, Running};
use sealpost_tests::{
    publisher, write_server_certificate, Broker, BrokerKind, Pki, ALICE_WEB, WAIT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How a client's TLS stream ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// close_notify, then the end of the stream.
    CloseNotify,
    /// The TCP connection closed without close_notify.
    Truncated,
    /// Something else went wrong.
    Failed(String),
}

/// A TLS-terminating relay to `broker`'s TCP listener; reports how each client's TLS
/// stream ended, in the order the clients connected.
struct Relay {
    port: u16,
    ended: mpsc::UnboundedReceiver<Ended>,
}

impl Relay {
    async fn start(pki: &Pki, broker_port: u16, dir: &Path) -> Relay {
        let (cert, key) = write_server_certificate(&pki.ca, dir);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let chain = sealpost_certs::pemfile::decode(&read(&cert), "CERTIFICATE").unwrap();
        let key = sealpost_certs::pemfile::decode(&read(&key), "PRIVATE KEY").unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![chain.into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, ended) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let outcome = match acceptor.accept(client).await {
                        Ok(tls) => relay(tls, broker_port).await,
                        Err(e) => Ended::Failed(format!("handshake: {e}")),
                    };
                    let _ = tx.send(outcome);
                });
            }
        });
        Relay { port, ended }
    }

    fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }

    /// How the next client's stream ended.
    async fn next_ended(&mut self) -> Ended {
        tokio::time::timeout(WAIT, self.ended.recv())
            .await
            .expect("a client connection ended")
            .expect("relay running")
    }
}

/// Forwards one client to the broker until the client's TLS stream ends; says how.
async fn relay(tls: tokio_rustls::server::TlsStream<TcpStream>, broker_port: u16) -> Ended {
    let broker = match TcpStream::connect(("127.0.0.1", broker_port)).await {
        Ok(b) => b,
        Err(e) => return Ended::Failed(format!("broker: {e}")),
    };
    let (mut broker_read, mut broker_write) = broker.into_split();
    let (mut client_read, mut client_write) = tokio::io::split(tls);
    let down = async {
        let _ = tokio::io::copy(&mut broker_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) => return Ended::CloseNotify,
                Ok(n) => {
                    if broker_write.write_all(&buf[..n]).await.is_err() {
                        // The broker is gone; keep reading to see how the client ends.
                        continue;
                    }
                }
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ended::Truncated,
                Err(e) => return Ended::Failed(e.to_string()),
            }
        }
    };
    let (_, ended) = tokio::join!(down, up);
    ended
}

/// The files the tools need in `dir`: ca.pem, crl.pem, alice.pem and alice.key.
fn files(pki: &Pki, dir: &Path) -> sealpost_certs::Issued {
    let alice = pki.subscriber("alice");
    std::fs::write(dir.join("alice.pem"), &alice.certificate_pem).unwrap();
    std::fs::write(dir.join("alice.key"), &alice.private_key_pem).unwrap();
    std::fs::write(dir.join("ca.pem"), pki.ca_pem()).unwrap();
    std::fs::copy(pki.crl_path(), dir.join("crl.pem")).unwrap();
    alice
}

/// `sealpost-sub` through the relay as alice (certificate) and alice-web (login).
fn sub(dir: &Path, relay: &Relay, extra: &[&str]) -> Command {
    let mut c = tool("sealpost-sub");
    c.current_dir(dir)
        .args(["-L", &relay.url(), "-u", ALICE_WEB.0, "-P", ALICE_WEB.1])
        .args(["--cert", "alice.pem", "--key", "alice.key"])
        .args([
            "--cafile",
            "ca.pem",
            "--crl",
            "crl.pem",
            "--replay-in-memory",
        ])
        .args(extra);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tools_end_their_tls_connections_with_close_notify() {
    let pki = Pki::new("close CA");
    let broker = Broker::start(BrokerKind::Sealpost, &pki);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let alice = files(&pki, d);
    let mut relay = Relay::start(&pki, broker.port, d).await;
    // A reading for alice, retained, so a subscriber that connects prints it.
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    p.publish("sensors/t", b"hello", QoS::AtLeastOnce, true)
        .await
        .unwrap();

    // Exit at -C: the count reached.
    let out = tokio::task::block_in_place(|| {
        run(&mut sub(
            d,
            &relay,
            &["-t", "sensors/#", "-C", "1", "-W", "20"],
        ))
    });
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(relay.next_ended().await, Ended::CloseNotify, "-C");

    // Exit at -W: nothing came (status 27, as mosquitto_sub).
    let out = tokio::task::block_in_place(|| {
        run(&mut sub(d, &relay, &["-t", "sensors/quiet/#", "-W", "1"]))
    });
    assert_eq!(out.status.code(), Some(27));
    assert_eq!(relay.next_ended().await, Ended::CloseNotify, "-W");

    // SIGTERM while running (and Ctrl-C, SIGINT, alike).
    for signal in ["TERM", "INT"] {
        let mut running = Running::start(&mut sub(d, &relay, &["-t", "sensors/#"]));
        let status = tokio::task::block_in_place(|| {
            running.wait_until("printing the reading", WAIT, |r| r.stdout() == "hello\n");
            running.signal(signal, WAIT)
        });
        assert!(status.success(), "SIG{signal}: {status}");
        assert_eq!(relay.next_ended().await, Ended::CloseNotify, "SIG{signal}");
    }

    // The publisher tool, after sending its message.
    std::fs::write(d.join("sensor.pem"), &pub_cert.certificate_pem).unwrap();
    std::fs::write(d.join("sensor.key"), &pub_cert.private_key_pem).unwrap();
    let out = tokio::task::block_in_place(|| {
        run(tool("sealpost-pub")
            .current_dir(d)
            .args(["-L", &relay.url(), "-t", "sensors/t", "-m", "bye"])
            .args(["--cert", "sensor.pem", "--key", "sensor.key"])
            .args(["--cafile", "ca.pem", "--crl", "crl.pem"]))
    });
    assert!(out.status.success());
    assert_eq!(relay.next_ended().await, Ended::CloseNotify, "sealpost-pub");
}
