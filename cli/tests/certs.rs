//! The `sealpost-certs` command from a clean directory, as the README shows it.

use std::path::Path;
use std::process::{Command, Output};

fn certs(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealpost-certs"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = certs(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = certs(dir, args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn walkthrough_from_a_clean_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let p = |name: &str| pki.join(name).to_str().unwrap().to_owned();
    ok(&pki, &["init", "--name", "Plant CA"]);
    assert!(fails(&pki, &["init"]).contains("refusing to overwrite"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pki.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    ok(
        &pki,
        &[
            "issue",
            "publisher",
            "--id",
            "sensor-1",
            "--topics",
            "plant/1/#",
            "alerts/+",
        ],
    );
    ok(&pki, &["issue", "subscriber", "--id", "dashboard"]);
    ok(
        &pki,
        &["issue", "server", "--dns", "localhost", "127.0.0.1"],
    );
    ok(&pki, &["issue", "client", "--id", "gw"]);

    let shown = ok(&pki, &["show", &p("sensor-1.pem")]);
    assert!(shown.contains("role:        publisher"), "{shown}");
    assert!(shown.contains("may publish: plant/1/#"), "{shown}");
    assert!(shown.contains("key:         Ed25519"), "{shown}");
    assert!(ok(&pki, &["show", &p("dashboard.pem")]).contains("RSA-2048"));
    assert!(ok(&pki, &["verify", &p("sensor-1.pem")]).starts_with("OK: publisher sensor-1"));

    // A device keeps its key: it makes a CSR, the CA signs it.
    let device = tmp.path().join("device");
    ok(
        &pki,
        &[
            "csr",
            "--key",
            "ed25519",
            "--id",
            "meter-9",
            "--out",
            device.to_str().unwrap(),
        ],
    );
    let signed = tmp.path().join("meter-9.pem");
    ok(
        &pki,
        &[
            "sign-csr",
            device.with_extension("csr").to_str().unwrap(),
            "--role",
            "publisher",
            "--id",
            "meter-9",
            "--topics",
            "meters/9/#",
            "--out",
            signed.to_str().unwrap(),
        ],
    );
    assert!(ok(&pki, &["verify", signed.to_str().unwrap()]).contains("publisher meter-9"));

    ok(&pki, &["revoke", &p("sensor-1.pem")]);
    assert!(fails(&pki, &["verify", &p("sensor-1.pem")]).contains("revoked"));
    assert!(ok(&pki, &["verify", &p("dashboard.pem")]).starts_with("OK"));
    // Revoking another keeps the first one revoked.
    ok(&pki, &["revoke", &p("gw.pem")]);
    assert!(fails(&pki, &["verify", &p("sensor-1.pem")]).contains("revoked"));
    assert!(fails(&pki, &["verify", &p("gw.pem")]).contains("revoked"));
}

#[test]
fn clear_errors_for_missing_files_and_wrong_pem_types() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let err = fails(&pki, &["issue", "subscriber", "--id", "x"]);
    assert!(
        err.contains("ca.pem") && err.contains("No such file"),
        "{err}"
    );
    ok(&pki, &["init"]);
    let key = pki.join("ca.key");
    let err = fails(&pki, &["show", key.to_str().unwrap()]);
    assert!(
        err.contains("expected a PEM block of type CERTIFICATE, found PRIVATE KEY"),
        "{err}"
    );
    assert!(
        !err.contains("BEGIN"),
        "key material must not appear in errors: {err}"
    );
    let err = fails(
        &pki,
        &["issue", "publisher", "--id", "bad/id", "--topics", "#"],
    );
    assert!(err.contains("invalid identity"), "{err}");
}

#[test]
fn issuing_again_refuses_to_replace_a_key_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    ok(&pki, &["init"]);
    let issue = ["issue", "publisher", "--id", "sensor-1", "--topics", "a/#"];
    ok(&pki, &issue);
    let key_before = std::fs::read(pki.join("sensor-1.key")).unwrap();
    let err = fails(&pki, &issue);
    assert!(
        err.contains("sensor-1")
            && err.contains("refusing to overwrite")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(pki.join("sensor-1.key")).unwrap(), key_before);
    ok(&pki, &[&issue[..], &["--force"]].concat());
    assert_ne!(std::fs::read(pki.join("sensor-1.key")).unwrap(), key_before);

    let device = tmp.path().join("device");
    let csr = [
        "csr",
        "--key",
        "ed25519",
        "--id",
        "m",
        "--out",
        device.to_str().unwrap(),
    ];
    ok(&pki, &csr);
    assert!(fails(&pki, &csr).contains("refusing to overwrite"));
}

#[test]
fn sign_csr_without_id_names_the_missing_option() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    ok(&pki, &["init"]);
    let device = tmp.path().join("device");
    ok(
        &pki,
        &[
            "csr",
            "--key",
            "ed25519",
            "--id",
            "m",
            "--out",
            device.to_str().unwrap(),
        ],
    );
    let out = tmp.path().join("m.pem");
    let err = fails(
        &pki,
        &[
            "sign-csr",
            device.with_extension("csr").to_str().unwrap(),
            "--role",
            "publisher",
            "--topics",
            "m/#",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(err.contains("--id is required for role publisher"), "{err}");
}
