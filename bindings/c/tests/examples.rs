//! The C examples (`examples/publisher.c`, `examples/subscriber.c`), built with the system
//! C compiler against `libsealpost.a` and libmosquitto, run against the real sealpost
//! broker: a granted subscriber reads every message, a subscriber that was not granted
//! reads none (each one is a typed rejection), and both programs run clean under valgrind
//! (no leak, no invalid access).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

mod common;

use common::{compile_c, deps_dir};
use sealpost_tests::tools::{ok, Running};
use sealpost_tests::{Broker, BrokerKind, Pki};

/// How many sealed messages the publisher sends.
const COUNT: usize = 5;
const TOPIC: &str = "plant/line1/temp";

/// The two example programs, built once per test run into `target/<profile>/deps/c-examples`.
fn examples() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = deps_dir().join("c-examples");
        std::fs::create_dir_all(&out).expect("create target/<profile>/deps/c-examples");
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let built = (out.join("publisher"), out.join("subscriber"));
        compile_c(&[&examples.join("publisher.c")], &built.0);
        compile_c(&[&examples.join("subscriber.c")], &built.1);
        built
    })
}

/// The command for `program`, under valgrind when asked: every error (invalid read or
/// write, use of uninitialised memory, a definite or indirect leak) makes it exit 99.
/// "Possibly lost" blocks are reported but not counted: they are process-lifetime
/// allocations still in use at exit (the threads of rayon's global pool, which the core
/// uses to build key messages, and lazily initialised statics of x509-parser).
fn command(program: &Path, valgrind: bool) -> Command {
    if valgrind {
        let mut c = Command::new("valgrind");
        c.args([
            "--leak-check=full",
            "--error-exitcode=99",
            "--errors-for-leak-kinds=definite,indirect",
            "--quiet",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Writes `text` to `dir/name`, returning the path as a string argument.
fn file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.to_string_lossy().into_owned()
}

fn granted_subscriber_reads_everything_and_others_nothing(valgrind: bool) {
    let (publisher_exe, subscriber_exe) = examples();
    let pki = Pki::new("c-examples");
    let broker = Broker::start(BrokerKind::Sealpost, &pki);
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let publisher = pki.publisher("plant-c", &["plant/#"]);
    let reader = pki.subscriber("reader-c");
    let outsider = pki.subscriber("outsider-c");
    let ca = file(d, "ca.pem", &pki.ca_pem());
    let crl = pki.crl_path().to_string_lossy().into_owned();
    let port = broker.tls_port.to_string();
    let wait = if valgrind { 120 } else { 30 };

    let subscribe = |issued: &sealpost_certs::Issued, name: &str| {
        let mut c = command(subscriber_exe, valgrind);
        c.args(["localhost", &port, &ca, &crl])
            .arg(file(d, &format!("{name}.pem"), &issued.certificate_pem))
            .arg(file(d, &format!("{name}.key"), &issued.private_key_pem))
            .arg(d.join(format!("{name}.state")))
            .args(["plant/#", &COUNT.to_string()]);
        let mut running = Running::start(&mut c);
        running.wait_until("subscribed", Duration::from_secs(wait), |r| {
            r.stdout().contains("subscribed")
        });
        running
    };
    let mut reader_run = subscribe(&reader, "reader");
    let mut outsider_run = subscribe(&outsider, "outsider");

    let out = ok(command(publisher_exe, valgrind)
        .args(["localhost", &port, &ca, &crl])
        .arg(file(d, "publisher.pem", &publisher.certificate_pem))
        .arg(file(d, "publisher.key", &publisher.private_key_pem))
        .arg(d.join("publisher.state"))
        .arg(file(d, "reader-cert.pem", &reader.certificate_pem))
        .args([TOPIC, &COUNT.to_string()]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("published 5 sealed messages"));
    assert!(
        std::fs::metadata(d.join("publisher.state")).is_ok_and(|m| m.len() > 0),
        "the publisher stored its state"
    );

    reader_run.wait_until("exited", Duration::from_secs(wait), |r| {
        r.stdout().lines().filter(|l| l.contains(" seq ")).count() >= COUNT
    });
    let stdout = reader_run.stdout();
    // Sequence numbers start where the publisher's fresh state says (not at 0).
    for i in 0..COUNT {
        let found = stdout.lines().any(|l| {
            l.starts_with(&format!("{TOPIC} from plant-c seq "))
                && l.ends_with(&format!(": message {i}"))
        });
        assert!(found, "message {i} missing in {stdout}");
    }
    assert!(!stdout.contains("rejected"), "{stdout}");
    let status = loop {
        if let Some(status) = reader_run.try_wait() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "subscriber exit {status}: {}",
        reader_run.stderr()
    );
    assert!(
        std::fs::metadata(d.join("reader.state")).is_ok_and(|m| m.len() > 0),
        "the subscriber stored its replay windows"
    );

    // The outsider got every envelope too (the broker forwards them), and opened none: the
    // broker gave it no key message, so it does not even know the publisher.
    outsider_run.wait_until("rejecting all", Duration::from_secs(wait), |r| {
        r.stdout().matches("rejected on plant/line1/temp").count() >= COUNT
    });
    let stdout = outsider_run.stdout();
    assert!(
        !stdout.contains(" seq "),
        "outsider read a message: {stdout}"
    );
    assert!(
        stdout.contains("rejected: no certificate known for the publisher"),
        "typed rejection: {stdout}"
    );
    // Killed on drop: it waits for messages it will never read. Under valgrind the
    // clean exit is checked with the reader above.
}

#[test]
fn c_examples_deliver_through_the_sealpost_broker() {
    granted_subscriber_reads_everything_and_others_nothing(false);
}

#[test]
fn c_examples_run_clean_under_valgrind() {
    granted_subscriber_reads_everything_and_others_nothing(true);
}
