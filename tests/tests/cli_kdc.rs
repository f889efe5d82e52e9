//! The key distribution center from the command line, with the real binaries:
//! `sealpost-pub kdc add-reader` issues credentials, `sealpost-pub --kdc` serves keys
//! over HTTPS while it publishes, `sealpost-sub --kdc-credentials` reads with no
//! certificate of its own; wrong credentials and a revoked reader read nothing, also
//! when the revocation was made while no KDC ran. The KDC's audit lines go to stderr, or
//! with `--kdc-audit-log` to a file as JSON lines, and never carry a secret.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sealpost_publisher::kdc::KdcCredentials;
use sealpost_tests::tools::{ok, run, tool, Running};
use sealpost_tests::{free_port, Broker, BrokerKind, Pki};

/// Starts a publisher that serves keys and waits until it says so: the message is out
/// and the KDC serves.
fn serve(mut command: Command) -> Running {
    let mut serving = Running::start(&mut command);
    serving.wait_for_stderr("serving keys until Ctrl-C", Duration::from_secs(30));
    serving
}

#[test]
fn kdc_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new("Plant CA");
    let broker = Broker::start(BrokerKind::Mosquitto, &pki);
    let write = |name: &str, text: &str| {
        let path = d.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca = write("ca.pem", &pki.ca_pem());
    let publisher = pki.publisher("sensor-1", &["sensors/#"]);
    let pub_cert = write("sensor-1.pem", &publisher.certificate_pem);
    let pub_key = write("sensor-1.key", &publisher.private_key_pem);
    let server = pki.server();
    let kdc_cert = write("kdc.pem", &server.certificate_pem);
    let kdc_key = write("kdc.key", &server.private_key_pem);
    let state = d.join("pub-state");
    let kdc_port = free_port();
    let kdc_address = format!("https://127.0.0.1:{kdc_port}");

    // 1. Credentials for alice, before the publisher ever ran (so the address and the
    //    KDC certificate to pin are given).
    let alice = d.join("alice.json");
    let out = run(tool("sealpost-pub")
        .args(["kdc", "add-reader", "alice", "--kdc-address", &kdc_address])
        .arg("--state-dir")
        .arg(&state));
    assert!(
        !out.status.success(),
        "credentials without a pinned KDC certificate"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kdc-cert"));
    ok(tool("sealpost-pub")
        .args(["kdc", "add-reader", "alice", "--kdc-address", &kdc_address])
        .arg("--kdc-cert")
        .arg(&kdc_cert)
        .arg("--state-dir")
        .arg(&state)
        .arg("-o")
        .arg(&alice));
    let text = std::fs::read_to_string(&alice).unwrap();
    assert!(
        text.contains(&kdc_address) && text.contains("\"alice\""),
        "{text}"
    );
    let out = ok(tool("sealpost-pub")
        .args(["kdc", "readers", "--state-dir"])
        .arg(&state));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alice\n");
    let mut wrong = KdcCredentials::from_json(&text).unwrap();
    wrong.password = "wrong-password".into();
    let wrong_file = write("wrong.json", &wrong.to_json());

    // 2. Publish a retained reading and keep serving keys (KDC only, no key messages).
    let publisher_tool = || {
        let mut c = tool("sealpost-pub");
        c.args(["-p", &broker.port.to_string(), "-t", "sensors/temp"])
            .arg("--cert")
            .arg(&pub_cert)
            .arg("--key")
            .arg(&pub_key)
            .arg("--cafile")
            .arg(&ca)
            .arg("--crl")
            .arg(pki.crl_path())
            .arg("--state-dir")
            .arg(&state);
        c
    };
    let publish = |message: &str, extra: &[&str]| {
        let mut c = publisher_tool();
        c.args(["-m", message, "-r"])
            .args(extra)
            .args(["--kdc", &format!("127.0.0.1:{kdc_port}"), "--kdc-only"])
            .arg("--kdc-cert")
            .arg(&kdc_cert)
            .arg("--kdc-key")
            .arg(&kdc_key);
        serve(c)
    };
    let read = |credentials: &Path, extra: &[&str]| {
        let mut c = tool("sealpost-sub");
        c.args([
            "-p",
            &broker.port.to_string(),
            "-t",
            "sensors/#",
            "-v",
            "--hold",
            "2",
        ])
        .args(extra)
        .arg("--cafile")
        .arg(&ca)
        .arg("--crl")
        .arg(pki.crl_path())
        .arg("--kdc-credentials")
        .arg(credentials)
        // The default state directory, ./.sealpost-sub, lands in the scratch directory.
        .current_dir(d);
        run(&mut c)
    };
    let audit_log = d.join("audit.jsonl");
    let serving = publish("21.5 C", &["--kdc-audit-log", audit_log.to_str().unwrap()]);

    // 3. alice reads, with her credentials and no certificate.
    let out = read(&alice, &["-C", "1", "-W", "30"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "sensors/temp [sensor-1] 21.5 C\n"
    );

    // 4. A wrong password reads nothing and says why.
    // (A state directory of its own: it is reader alice too, and alice's replay window
    // already holds the retained reading, which would be refused before any key fetch.)
    let out = read(&wrong_file, &["-W", "4", "--state-dir", "wrong-state"]);
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("key fetch failed"), "{stderr}");
    assert!(stderr.contains("refused the credentials"), "{stderr}");
    assert!(!stderr.contains("wrong-password"), "{stderr}");
    check_audit_log(&audit_log, &text);
    let served = serving.stderr();
    assert!(
        !served.contains("key fetch"),
        "audit lines on stderr: {served}"
    );
    drop(serving);

    // 5. Revoke alice while the KDC is not running (issue 13, item 3: this used to leave
    //    her login working): the key rotates, and once the KDC serves again she reads
    //    nothing published afterwards.
    let out = ok(publisher_tool().args(["--revoke", "alice", "-d"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked alice"));
    let out = ok(tool("sealpost-pub")
        .args(["kdc", "readers", "--state-dir"])
        .arg(&state));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let serving = publish("22.0 C", &[]);
    let out = read(&alice, &["-W", "4"]);
    assert!(
        out.stdout.is_empty(),
        "revoked alice printed {:?}",
        out.stdout
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the publisher revoked this reader"),
        "{stderr}"
    );
    // Without --kdc-audit-log the audit lines go to stderr, as plain text (not a terminal:
    // no colour codes).
    let served = serving.stderr();
    let refused = served
        .lines()
        .find(|l| l.contains("sealpost::kdc::audit") && l.contains("login failed"))
        .unwrap_or_else(|| panic!("no audit line for the refused login: {served}"));
    assert!(
        refused.contains("alice") && refused.contains("outcome=\"revoked\""),
        "{refused}"
    );
    assert!(!served.contains('\u{1b}'), "colour codes: {served:?}");
    drop(serving);
}

/// The audit log written while alice read and a wrong password was tried: one JSON object
/// a line, with who, which epoch, when, from where and the outcome, and nothing secret.
fn check_audit_log(path: &Path, alice_credentials: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "audit log mode {mode:o}");
    }
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let now = sealpost_certs::now_unix();
    let fetches: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "key fetch")
        .collect();
    assert!(!fetches.is_empty(), "no key fetch in {text}");
    for fetch in &fetches {
        let mut fields: Vec<&str> = fetch
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "at",
                "epoch",
                "level",
                "message",
                "outcome",
                "peer",
                "publisher",
                "reader",
                "target",
                "timestamp"
            ],
            "{fetch}"
        );
        assert_eq!(fetch["target"], "sealpost::kdc::audit");
        assert_eq!(fetch["reader"], "alice");
        assert_eq!(fetch["publisher"], "sensor-1");
        assert!(
            fetch["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{fetch}"
        );
        assert!((fetch["at"].as_i64().unwrap() - now).abs() < 600, "{fetch}");
    }
    assert!(
        fetches
            .iter()
            .any(|f| f["epoch"] == 1 && f["outcome"] == "granted"),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "login failed"
            && l["outcome"] == "invalid_credentials"
            && l["reader"].as_str().unwrap().contains("alice")),
        "no failed login in {text}"
    );
    let password = KdcCredentials::from_json(alice_credentials)
        .unwrap()
        .password;
    assert!(
        !text.contains(&password),
        "the password is in the audit log"
    );
    assert!(
        !text.contains("wrong-password"),
        "a tried password is in the audit log"
    );
}
