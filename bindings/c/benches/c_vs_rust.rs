//! Seal and open throughput at 256 B through the C API (a C program, `seal_open.c`,
//! compiled with `-O2` against this build's `libsealpost.a`) against the Rust session core
//! it wraps (`PublisherSession::publish`, `SubscriberSession::incoming`, one message per
//! call on both sides), in the same run, alternating, best of three rounds each.
//!
//! `cargo bench -p sealpost-c --bench c_vs_rust` (results in docs/BENCHMARKS.md).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use sealpost_session::{
    MemoryStore, Outgoing, PublisherSession, PublisherSessionConfig, QoS, SubscriberEvent,
    SubscriberSession, SubscriberSessionConfig,
};
use sealpost_tests::Pki;

const COUNT: usize = 20_000;
const SIZE: usize = 256;
const ROUNDS: usize = 3;

/// The Rust core doing what the C program does: seal COUNT messages one by one, then open
/// them one by one.
fn rust_round(
    pki: &Pki,
    publisher: &sealpost_certs::Issued,
    reader: &sealpost_certs::Issued,
) -> (f64, f64) {
    let now_ms = sealpost_certs::now_unix() as u64 * 1000;
    let crl = std::fs::read_to_string(pki.crl_path()).expect("CRL");
    let mut config = PublisherSessionConfig::new(
        publisher.certificate_pem.clone(),
        publisher.private_key_pem.clone(),
        pki.ca_pem(),
    );
    config.crl_pem = Some(crl.clone());
    let (mut sealer, _) =
        PublisherSession::new(config, None, Box::new(MemoryStore::default()), now_ms)
            .expect("publisher session");
    let mut config = SubscriberSessionConfig::new(
        reader.certificate_pem.clone(),
        reader.private_key_pem.clone(),
        pki.ca_pem(),
    );
    config.crl_pem = Some(crl);
    let mut opener = SubscriberSession::new(config, None).expect("subscriber session");
    let (granted, _) = sealer
        .grant_pem(&reader.certificate_pem, now_ms)
        .expect("grant");
    for packet in granted.packets {
        opener.incoming(&packet.topic, &packet.payload, now_ms);
    }

    let payload = vec![0u8; SIZE];
    let start = Instant::now();
    let envelopes: Vec<Vec<u8>> = (0..COUNT)
        .map(|_| {
            let item = Outgoing {
                topic: "bench/c",
                payload: &payload,
                qos: QoS::AtLeastOnce,
                retain: false,
            };
            let burst = sealer.publish(&[item], now_ms).expect("seal");
            let (_, packet) = burst
                .envelopes
                .into_iter()
                .next()
                .expect("one")
                .expect("sealed");
            // Copied, as the C side copies it.
            packet.payload.to_vec()
        })
        .collect();
    let seal = COUNT as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for envelope in &envelopes {
        let out = opener.incoming("bench/c", envelope, now_ms);
        assert!(
            matches!(&out.events[..], [SubscriberEvent::Message(m)] if m.payload.len() == SIZE),
            "{:?}",
            out.events
        );
    }
    let open = COUNT as f64 / start.elapsed().as_secs_f64();
    (seal, open)
}

fn c_round(program: &Path, files: &[String]) -> (f64, f64) {
    let output = Command::new(program)
        .args(files)
        .args([COUNT.to_string(), SIZE.to_string()])
        .output()
        .expect("run seal_open");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "seal_open: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value = |name: &str| -> f64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {stdout}"))
    };
    (value("seal_per_sec"), value("open_per_sec"))
}

fn main() {
    // `cargo bench` passes --bench; a plain `cargo test` of benches passes nothing to run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let pki = Pki::new("bench-c");
    let publisher = pki.publisher("bench-pub", &["bench/#"]);
    let reader = pki.subscriber("bench-sub");
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_string_lossy().into_owned()
    };
    let files = vec![
        write("ca.pem", &pki.ca_pem()),
        pki.crl_path().to_string_lossy().into_owned(),
        write("pub.pem", &publisher.certificate_pem),
        write("pub.key", &publisher.private_key_pem),
        write("sub.pem", &reader.certificate_pem),
        write("sub.key", &reader.private_key_pem),
    ];

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe().expect("bench path");
    // target/<profile>/deps: where cargo leaves libsealpost.a for this build.
    let library = exe
        .parent()
        .expect("target/<profile>/deps")
        .join("libsealpost.a");
    assert!(library.exists(), "{} not built", library.display());
    let program = dir.path().join("seal_open");
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(manifest.join("include"))
        .arg(manifest.join("benches/seal_open.c"))
        .arg(&library)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&program)
        .status()
        .expect("run cc");
    assert!(status.success(), "compiling seal_open.c failed");

    let (mut rust, mut c) = ((0f64, 0f64), (0f64, 0f64));
    for _ in 0..ROUNDS {
        let r = rust_round(&pki, &publisher, &reader);
        let k = c_round(&program, &files);
        rust = (rust.0.max(r.0), rust.1.max(r.1));
        c = (c.0.max(k.0), c.1.max(k.1));
    }
    println!("{SIZE} B, {COUNT} messages, best of {ROUNDS} rounds (msg/s):");
    println!(
        "  seal: Rust core {:>8.0}  C API {:>8.0}  C/Rust {:.2}x",
        rust.0,
        c.0,
        c.0 / rust.0
    );
    println!(
        "  open: Rust core {:>8.0}  C API {:>8.0}  C/Rust {:.2}x",
        rust.1,
        c.1,
        c.1 / rust.1
    );
}
