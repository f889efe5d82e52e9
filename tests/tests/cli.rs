//! The walkthrough of the command-line tools, run with the real binaries: the security
//! center makes a CA and certificates, `sealpost-pub` grants a reader from a directory
//! of certificates and publishes, `sealpost-sub` prints what it may read and rejects the
//! rest, removing a certificate from the directory revokes it, and a `mosquitto_sub`
//! spy on `#` never sees plaintext. Runs on Mosquitto (plain TCP) and on the sealpost
//! broker (TLS, the publisher authenticating with its certificate).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sealpost_tests::tools::{ok, tool};
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

/// A `mosquitto_sub` spy on `#`, killed on drop; a thread collects what it prints.
struct Spy {
    child: Child,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Spy {
    /// Starts the spy and waits until it is subscribed (it has received `probe`, a
    /// retained message published beforehand).
    fn start(broker: &Broker) -> Spy {
        ok(Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-t", "probe", "-m", "probe", "-r", "-q", "1"]));
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "#"])
            // Topic and hex payload, one message a line.
            .args(["-i", "cli-spy", "-W", "120", "-F", "%t %x"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto_sub (apt-get install mosquitto-clients)");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().expect("spy stdout");
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let spy = Spy { child, seen };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !spy.lines().iter().any(|l| l == "probe 70726f6265") {
            assert!(Instant::now() < deadline, "the spy did not subscribe");
            std::thread::sleep(Duration::from_millis(20));
        }
        spy
    }

    /// The lines printed so far: `topic hex-payload`.
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.seen.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
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

impl Drop for Spy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn walkthrough(kind: BrokerKind) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = d.join("pki");
    let certs = |args: &[&str]| {
        let mut c = tool("sealpost-certs");
        c.arg("--dir").arg(&pki).args(args);
        ok(&mut c);
    };
    // 1. A CA, a publisher allowed on plant/1/#, two subscribers.
    certs(&["init", "--name", "Plant CA"]);
    certs(&[
        "issue",
        "publisher",
        "--id",
        "sensor-1",
        "--topics",
        "plant/1/#",
    ]);
    certs(&["issue", "subscriber", "--id", "dashboard"]);
    certs(&["issue", "subscriber", "--id", "intruder"]);

    // 2. A broker whose TLS certificate comes from the same CA.
    let ca = sealpost_certs::CertificateAuthority::from_pem(
        &std::fs::read_to_string(pki.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(pki.join("ca.key")).unwrap(),
    )
    .unwrap();
    let broker = Broker::start(
        kind,
        &Pki {
            ca,
            dir: tempfile::tempdir().unwrap(),
        },
    );
    let spy = Spy::start(&broker);

    // 3. Grant the dashboard by putting its certificate in the grant directory, and
    //    publish a retained reading.
    let grants = d.join("grants");
    std::fs::create_dir(&grants).unwrap();
    std::fs::copy(pki.join("dashboard.pem"), grants.join("dashboard.pem")).unwrap();
    let publish = |message: &str| {
        let mut c = tool("sealpost-pub");
        c.args(broker_args(&broker))
            .args(["-t", "plant/1/temp", "-m", message, "-r", "-d"])
            .arg("--cert")
            .arg(pki.join("sensor-1.pem"))
            .arg("--key")
            .arg(pki.join("sensor-1.key"))
            .arg("--cafile")
            .arg(pki.join("ca.pem"))
            .arg("--grant-dir")
            .arg(&grants)
            .arg("--state-dir")
            .arg(d.join("pub-state"));
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
        ok(&mut c)
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

    // 7. The spy saw the envelopes and key messages, never the plaintext.
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
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("sealpost/keys/sensor-1/dashboard ")),
        "the spy saw the key messages (and could not use them)"
    );
}

#[test]
fn walkthrough_on_mosquitto() {
    walkthrough(BrokerKind::Mosquitto);
}

#[test]
fn walkthrough_on_the_sealpost_broker() {
    walkthrough(BrokerKind::Sealpost);
}
