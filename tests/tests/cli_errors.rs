//! The first hour (issue 14, items 2 and 7): the command-line tools say what went wrong,
//! at once, and exit non-zero. The sealpost broker refuses a login (bad password) and a
//! subscription (ACL); nothing listens on a port; the broker's TLS certificate is from
//! another CA. Also `sealpost-sub -W` ends with mosquitto_sub's status 27, and the small
//! `sealpost-pub kdc` errors name what to do.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use sealpost_certs::Issued;
use sealpost_publisher::QoS;
use sealpost_tests::tools::{run, tool};
use sealpost_tests::{free_port, publisher, Broker, BrokerKind, Pki, ALICE_WEB};

/// Writes the CA, its revocation list and subscriber alice's certificate and key into
/// `dir` as ca.pem, crl.pem, alice.pem and alice.key; returns alice's certificate.
fn files(pki: &Pki, dir: &Path) -> Issued {
    let alice = pki.subscriber("alice");
    std::fs::write(dir.join("alice.pem"), &alice.certificate_pem).unwrap();
    std::fs::write(dir.join("alice.key"), &alice.private_key_pem).unwrap();
    std::fs::write(dir.join("ca.pem"), pki.ca_pem()).unwrap();
    std::fs::copy(pki.crl_path(), dir.join("crl.pem")).unwrap();
    alice
}

/// `sealpost-sub` as certificate alice, from `dir`, with `address` and `extra`.
fn sub(dir: &Path, address: &[String], extra: &[&str]) -> Output {
    let mut c = tool("sealpost-sub");
    c.current_dir(dir)
        .args(address)
        .args(["--cert", "alice.pem", "--key", "alice.key"])
        .args(["--cafile", "ca.pem", "--crl", "crl.pem"])
        .args(extra);
    run(&mut c)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Logs in as the test broker's password user alice-web, with `password`.
fn login(password: &str) -> [&str; 4] {
    ["-u", ALICE_WEB.0, "-P", password]
}

fn tcp(port: u16) -> Vec<String> {
    vec!["-p".into(), port.to_string()]
}

#[test]
fn refused_logins_and_failed_connections_are_reported_with_their_cause() {
    let pki = Pki::new("errors CA");
    let broker = Broker::start(BrokerKind::Sealpost, &pki);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    files(&pki, d);

    // A wrong password: the broker's CONNACK says so, and so does the subscriber (it
    // used to wait 10 s and say "broker did not answer: CONNACK").
    let out = sub(
        d,
        &tcp(broker.port),
        &[&["-t", "sensors/#"][..], &login("wrong")].concat(),
    );
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("bad user name or password"), "{text}");
    assert!(text.contains("return code 4"), "{text}");

    // The same for the publisher.
    let publisher = pki.publisher("sensor-1", &["sensors/#"]);
    std::fs::write(d.join("sensor-1.pem"), &publisher.certificate_pem).unwrap();
    std::fs::write(d.join("sensor-1.key"), &publisher.private_key_pem).unwrap();
    let mut c = tool("sealpost-pub");
    c.current_dir(d)
        .args(tcp(broker.port))
        .args(["-t", "sensors/temp", "-m", "x"])
        .args(["--cert", "sensor-1.pem", "--key", "sensor-1.key"])
        .args(["--cafile", "ca.pem", "--crl", "crl.pem"])
        .args(login("wrong"));
    let out = run(&mut c);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("bad user name or password"), "{text}");

    // Logged in, but the ACL lets alice-web subscribe within sensors/# only.
    let out = sub(
        d,
        &tcp(broker.port),
        &[&["-t", "other/#"][..], &login(ALICE_WEB.1)].concat(),
    );
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("refused the subscription to \"other/#\""),
        "{text}"
    );

    // Nothing listens there.
    let out = sub(d, &tcp(free_port()), &["-t", "sensors/#"]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("connection refused"), "{text}");

    // The broker's TLS certificate is not from the CA given.
    let other = Pki::new("another CA");
    std::fs::write(d.join("other-ca.pem"), other.ca_pem()).unwrap();
    let mut c = tool("sealpost-sub");
    c.current_dir(d)
        .args(["-L", &format!("mqtts://127.0.0.1:{}", broker.tls_port)])
        .args([
            "-t",
            "sensors/#",
            "--cert",
            "alice.pem",
            "--key",
            "alice.key",
        ])
        .args(["--cafile", "other-ca.pem", "--insecure-no-crl"]);
    let out = run(&mut c);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("unknown CA"), "{text}");

    // -W ends with status 27, as mosquitto_sub's; -C reached first is a success.
    let out = sub(
        d,
        &tcp(broker.port),
        &[&["-t", "sensors/#", "-W", "1"][..], &login(ALICE_WEB.1)].concat(),
    );
    assert_eq!(out.status.code(), Some(27), "{}", stderr(&out));
}

#[test]
fn kdc_subcommands_say_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kdc = |args: &[&str]| {
        let mut c: Command = tool("sealpost-pub");
        c.current_dir(d).arg("kdc").args(args);
        run(&mut c)
    };
    let out = kdc(&["readers", "--state-dir", "missing"]);
    assert!(
        !out.status.success(),
        "a missing state directory listed as empty"
    );
    assert!(
        stderr(&out).contains("no publisher state directory"),
        "{out:?}"
    );

    let out = kdc(&["add-reader", "alice", "--state-dir", "state"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--kdc-address"), "{out:?}");

    let out = kdc(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: sealpost-pub kdc"), "{help}");
}

/// A subscriber that loses its broker says so, once, and that it is reconnecting; once
/// the broker is back, that it reconnected (it used to retry silently, twice a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_loses_its_broker_says_it_is_reconnecting() {
    let pki = Pki::new("errors CA");
    let mut broker = Broker::start(BrokerKind::Mosquitto, &pki);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let alice = files(&pki, d);
    let pub_cert = pki.publisher("sensor-1", &["sensors/#"]);
    let p = publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await;
    p.grant_pem(&alice.certificate_pem).await.unwrap();
    p.publish("sensors/t", b"hello", QoS::AtLeastOnce, true)
        .await
        .unwrap();
    let mut child = tool("sealpost-sub")
        .current_dir(d)
        .args(tcp(broker.port))
        .args(["-t", "sensors/#", "-W", "60"])
        .args(["--cert", "alice.pem", "--key", "alice.key"])
        .args(["--cafile", "ca.pem", "--crl", "crl.pem"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sealpost-sub");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let said = tokio::task::block_in_place(|| {
        // Connected: it printed the retained reading.
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "hello\n");
        broker.restart();
        // Everything it says until it is back (or, failing that, until -W ends it).
        let mut said = String::new();
        loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                break;
            }
            said.push_str(&line);
            if line.contains("reconnected") {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        said
    });
    assert_eq!(said.matches("connection lost").count(), 1, "{said}");
    assert!(said.contains("; reconnecting"), "{said}");
    assert!(said.contains("sealpost-sub: reconnected"), "{said}");
}

/// The publisher tool says the same as the subscriber's when it loses its broker: once
/// per series of attempts, that it is reconnecting, and then that it reconnected (it used
/// to retry silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_loses_its_broker_says_it_is_reconnecting() {
    let pki = Pki::new("errors CA");
    let mut broker = Broker::start(BrokerKind::Mosquitto, &pki);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    files(&pki, d);
    let sensor = pki.publisher("sensor-1", &["sensors/#"]);
    std::fs::write(d.join("sensor.pem"), &sensor.certificate_pem).unwrap();
    std::fs::write(d.join("sensor.key"), &sensor.private_key_pem).unwrap();
    let mut child = tool("sealpost-pub")
        .current_dir(d)
        .args(tcp(broker.port))
        .args(["-t", "sensors/t", "-l", "-d"])
        .args(["--cert", "sensor.pem", "--key", "sensor.key"])
        .args(["--cafile", "ca.pem", "--crl", "crl.pem"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sealpost-pub");
    let mut stdin = child.stdin.take().unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let said = tokio::task::block_in_place(|| {
        use std::io::Write;
        // Connected: it sent a first line (-d reports each).
        let mut said = String::new();
        let mut read_until = |what: &str, said: &mut String| loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("sealpost-pub ended before {what:?}: {said}");
            }
            said.push_str(&line);
            if line.contains(what) {
                break;
            }
        };
        writeln!(stdin, "one").unwrap();
        read_until("sent 3 bytes", &mut said);
        broker.restart();
        read_until("sealpost-pub: reconnected", &mut said);
        drop(stdin);
        let status = child.wait().unwrap();
        assert!(status.success(), "{status}: {said}");
        said
    });
    assert_eq!(said.matches("connection lost").count(), 1, "{said}");
    assert!(said.contains("sealpost-pub: connection lost: "), "{said}");
    assert!(said.contains("; reconnecting"), "{said}");
    assert!(said.contains("sealpost-pub: reconnected"), "{said}");
}
