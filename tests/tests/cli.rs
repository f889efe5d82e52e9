//! The walkthrough of the command-line tools, run with the real binaries: the security
//! center makes a CA and certificates, `sealpost-pub` grants a reader from a directory
//! of certificates and publishes, `sealpost-sub` prints what it may read and rejects the
//! rest, removing a certificate from the directory revokes it, and a `mosquitto_sub`
//! spy on `#` never sees plaintext (nor, on the sealpost broker, key messages). Runs on Mosquitto (plain TCP) and on the sealpost
//! broker (TLS, the publisher authenticating with its certificate). Also: `sealpost-pub`
//! refuses to run without a revocation list, or on a state directory another
//! `sealpost-pub` is using.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sealpost_tests::tools::{ok, run, tool, Running};
use sealpost_tests::{Broker, BrokerKind, Pki};

/// The broker options of the walkthrough for `broker`.
fn broker_args(broker: &Broker) -> Vec<String> {
    match broker.kind {
        BrokerKind::Mosquitto => vec!["-p".into(), broker.port.to_string()],
        BrokerKind::Sealpost => vec![
            "-L".into(),
            format!("mqtts://127.0.0.1:{}", broker.tls_port),
        ],
    }
}

/// A `mosquitto_sub` spy on `#`, killed on drop.
struct Spy(Running);

impl Spy {
    /// Starts the spy and waits until it is subscribed (it has received `probe`, a
    /// retained message published beforehand).
    fn start(broker: &Broker) -> Spy {
        ok(Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-t", "probe", "-m", "probe", "-r", "-q", "1"]));
        let mut running = Running::start(
            Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "#"])
                // Topic and hex payload, one message a line.
                .args(["-i", "cli-spy", "-W", "120", "-F", "%t %x"])
                .stdin(Stdio::null()),
        );
        running.wait_until("subscribed", Duration::from_secs(20), |spy| {
            spy.stdout().lines().any(|l| l == "probe 70726f6265")
        });
        Spy(running)
    }

    /// The lines printed so far: `topic hex-payload`.
    fn lines(&self) -> Vec<String> {
        self.0.stdout().lines().map(str::to_owned).collect()
    }

    /// The lines, once at least `n` messages on `topic` have arrived (bounded wait).
    fn lines_after(&self, topic: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = self.lines();
            let on_topic = lines
                .iter()
                .filter(|l| l.split(' ').next() == Some(topic))
                .count();
            if on_topic >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "the spy got {on_topic} of {n} on {topic}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// With the security center, in `pki`: a CA (and its revocation list), a publisher
/// `sensor-1` allowed on plant/1/#, and the `subscribers`.
fn make_pki(pki: &Path, subscribers: &[&str]) {
    let certs = |args: &[&str]| {
        let mut c = tool("sealpost-certs");
        c.arg("--dir").arg(pki).args(args);
        ok(&mut c);
    };
    certs(&["init", "--name", "Plant CA"]);
    certs(&[
        "issue",
        "publisher",
        "--id",
        "sensor-1",
        "--topics",
        "plant/1/#",
    ]);
    for id in subscribers {
        certs(&["issue", "subscriber", "--id", id]);
    }
}

/// A broker of `kind` whose TLS certificate comes from the CA in `pki` (as made by
/// [`make_pki`]), which it also trusts for client certificates.
fn broker_of(kind: BrokerKind, pki: &Path) -> Broker {
    let ca = sealpost_certs::CertificateAuthority::from_pem(
        &std::fs::read_to_string(pki.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(pki.join("ca.key")).unwrap(),
    )
    .unwrap();
    Broker::start(kind, &Pki::with_ca(ca))
}

fn walkthrough(kind: BrokerKind) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = d.join("pki");
    // 1. A CA, a publisher allowed on plant/1/#, two subscribers.
    make_pki(&pki, &["dashboard", "intruder"]);

    // 2. A broker whose TLS certificate comes from the same CA.
    let broker = broker_of(kind, &pki);
    let spy = Spy::start(&broker);

    // 3. Grant the dashboard by putting its certificate in the grant directory, and
    //    publish a retained reading.
    let grants = d.join("grants");
    std::fs::create_dir(&grants).unwrap();
    std::fs::copy(pki.join("dashboard.pem"), grants.join("dashboard.pem")).unwrap();
    let publish = |message: &str| {
        let mut c = sealpost_pub(&broker, &pki, &d.join("pub-state"), &["-m", message]);
        c.args(["-r", "-d", "--crl"])
            .arg(pki.join("crl.pem"))
            .arg("--grant-dir")
            .arg(&grants);
        ok(&mut c);
    };
    let read = |who: &str, extra: &[&str]| {
        let mut c = tool("sealpost-sub");
        c.args(broker_args(&broker))
            .args(["-t", "plant/1/#", "-v", "--hold", "1"])
            .args(extra)
            .arg("--cert")
            .arg(pki.join(format!("{who}.pem")))
            .arg("--key")
            .arg(pki.join(format!("{who}.key")))
            .arg("--cafile")
            .arg(pki.join("ca.pem"))
            .arg("--crl")
            .arg(pki.join("crl.pem"))
            // The default state directory, ./.sealpost-sub, lands in the scratch directory.
            .current_dir(d);
        let out = run(&mut c);
        // -C reached: success; -W expired first: 27, as mosquitto_sub.
        let expected = if extra.contains(&"-C") { 0 } else { 27 };
        assert_eq!(out.status.code(), Some(expected), "{out:?}");
        out
    };
    publish("21.5 C before revoke");

    // 4. The granted reader prints the plaintext, with topic and publisher.
    let out = read("dashboard", &["-C", "1", "-W", "30"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "plant/1/temp [sensor-1] 21.5 C before revoke\n"
    );

    // 5. A subscriber that was not granted prints nothing and says why on stderr.
    let out = read("intruder", &["-W", "4"]);
    assert!(out.stdout.is_empty(), "intruder printed {:?}", out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rejected plant/1/temp"), "{stderr}");

    // 6. Revoke by removing the certificate from the grant directory; the next message
    //    is sealed under a new key the dashboard never gets.
    std::fs::remove_file(grants.join("dashboard.pem")).unwrap();
    publish("22.0 C after revoke");
    let out = read("dashboard", &["-W", "4"]);
    assert!(
        out.stdout.is_empty(),
        "revoked dashboard printed {:?}",
        out.stdout
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rejected plant/1/temp"), "{stderr}");

    // 7. The spy saw the envelopes, never the plaintext; the key messages only on
    //    Mosquitto: the sealpost broker gives them to their recipients alone (the
    //    dashboard's certificate, presented by `sealpost-sub` over TLS).
    let lines = spy.lines_after("plant/1/temp", 2);
    for plaintext in [
        "21.5 C before revoke",
        "22.0 C after revoke",
        "21.5 C",
        "22.0 C",
    ] {
        let hex = hex::encode(plaintext);
        assert!(
            !lines.iter().any(|l| l.contains(&hex)),
            "the spy read {plaintext:?}"
        );
    }
    let saw_key_messages = lines.iter().any(|l| l.starts_with("sealpost/keys/"));
    match kind {
        BrokerKind::Mosquitto => assert!(
            lines
                .iter()
                .any(|l| l.starts_with("sealpost/keys/sensor-1/dashboard ")),
            "on Mosquitto the spy sees the key messages (and cannot use them)"
        ),
        BrokerKind::Sealpost => assert!(!saw_key_messages, "{lines:?}"),
    }
}

#[test]
fn walkthrough_on_mosquitto() {
    walkthrough(BrokerKind::Mosquitto);
}

#[test]
fn walkthrough_on_the_sealpost_broker() {
    walkthrough(BrokerKind::Sealpost);
}

/// `sealpost-pub` with the walkthrough's certificates against `broker`, publishing
/// `extra`'s input on plant/1/temp with its state in `state`.
fn sealpost_pub(broker: &Broker, pki: &Path, state: &Path, extra: &[&str]) -> Command {
    sealpost_pub_at(broker_args(broker), pki, state, extra)
}

/// [`sealpost_pub`] with the broker address options `address`.
fn sealpost_pub_at(address: Vec<String>, pki: &Path, state: &Path, extra: &[&str]) -> Command {
    let mut c = tool("sealpost-pub");
    c.args(address)
        .args(["-t", "plant/1/temp"])
        .args(extra)
        .arg("--cert")
        .arg(pki.join("sensor-1.pem"))
        .arg("--key")
        .arg(pki.join("sensor-1.key"))
        .arg("--cafile")
        .arg(pki.join("ca.pem"))
        .arg("--state-dir")
        .arg(state);
    c
}

#[test]
fn the_publisher_needs_a_revocation_list_and_a_state_directory_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki_dir = d.join("pki");
    make_pki(&pki_dir, &[]);
    let pki = Pki::new("unused");
    let broker = Broker::start(BrokerKind::Mosquitto, &pki);
    let state = d.join("pub-state");
    let crl = pki_dir.join("crl.pem");
    let crl = crl.to_str().unwrap();

    // No --crl: refused, saying how to give one.
    let out = run(&mut sealpost_pub(&broker, &pki_dir, &state, &["-m", "x"]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--crl"), "{stderr}");
    // The explicit opt-out runs, with a warning.
    let out = ok(&mut sealpost_pub(
        &broker,
        &pki_dir,
        &state,
        &["-m", "x", "--insecure-no-crl"],
    ));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("WARNING"),
        "{out:?}"
    );

    // One publisher reads lines from stdin and keeps running; a second one on the same
    // state directory is refused while it does, and runs once it has ended.
    let mut first = sealpost_pub(&broker, &pki_dir, &state, &["-l", "--crl", crl])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sealpost-pub -l");
    let mut stdin = first.stdin.take().expect("stdin");
    // It holds the lock once it has sent a line (the state is loaded by then).
    let spy = Spy::start(&broker);
    std::io::Write::write_all(&mut stdin, b"first\n").unwrap();
    spy.lines_after("plant/1/temp", 1);
    let out = run(&mut sealpost_pub(
        &broker,
        &pki_dir,
        &state,
        &["-m", "second", "--crl", crl],
    ));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another publisher"), "{stderr}");
    drop(stdin);
    assert!(first.wait().unwrap().success());
    ok(&mut sealpost_pub(
        &broker,
        &pki_dir,
        &state,
        &["-m", "third", "--crl", crl],
    ));
}

/// Issue 14, item 3: over plain TCP the sealpost broker (rightly) drops the publisher's
/// key messages, and `sealpost-pub` used to print "granted alice" and exit 0 while alice
/// could never read. The grant is read back from the broker: a refused one is an error
/// that says why, exits non-zero and is not recorded. Over TLS with the publisher
/// certificate the grant goes through, and "granted alice" is printed on the run that
/// granted her only (issue 14, item 7).
#[test]
fn a_grant_the_broker_refused_is_an_error_and_granted_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = d.join("pki");
    make_pki(&pki, &["alice"]);
    let broker = broker_of(BrokerKind::Sealpost, &pki);
    let grants = d.join("grants");
    std::fs::create_dir(&grants).unwrap();
    std::fs::copy(pki.join("alice.pem"), grants.join("alice.pem")).unwrap();
    let grant = |address: Vec<String>| {
        let mut c = sealpost_pub_at(address, &pki, &d.join("pub-state"), &["-m", "x", "-d"]);
        c.arg("--crl")
            .arg(pki.join("crl.pem"))
            .arg("--grant-dir")
            .arg(&grants);
        run(&mut c)
    };
    let plain = vec!["-p".to_owned(), broker.port.to_string()];

    let out = grant(plain.clone());
    assert!(!out.status.success(), "a refused grant exited 0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the broker did not take the key message for alice"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("key topics need the publisher's certificate: connect over TLS with --cert"),
        "{stderr}"
    );
    assert!(!stderr.contains("granted alice"), "{stderr}");

    let out = grant(broker_args(&broker));
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("granted alice"),
        "{out:?}"
    );
    let out = grant(broker_args(&broker));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("granted alice"),
        "nothing changed: {stderr}"
    );
    // Still granted: a refused grant over plain TCP again is an error, not a revocation.
    let out = grant(plain);
    assert!(!out.status.success());
}
