//! Runs one operation many times, for counting instructions per operation with callgrind
//! (deterministic, unlike timings on a shared machine).
//!
//! ```sh
//! cargo build --release -p sealpost-protocol --example count_ops
//! valgrind --tool=callgrind --toggle-collect='count_ops::run' \
//!     --callgrind-out-file=/tmp/cg.seal target/release/examples/count_ops seal 2000
//! grep -E '^(summary|totals):' /tmp/cg.seal   # instructions for 2000 operations
//! ```
//!
//! Operations: `sign` and `verify` (bare Ed25519 over 256 B; `verify` over distinct
//! messages, as verification is variable-time), `seal` and `open` (256 B
//! payload, key-topic location, no embedded certificate), `open_batch` (batches of 64).
//! Only the calls inside `run` are counted: the setup (certificates, sealing the envelopes
//! that `open` consumes) is not.
//!
//! Without valgrind it also prints the CPU time `run` took (Linux: on-CPU nanoseconds of
//! the thread, from `/proc/thread-self/schedstat`), which unlike wall-clock time does not
//! grow when other processes share the cores; cache and frequency effects remain.

use std::hint::black_box;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _};
use sealpost_certs::{now_unix, Validity};
use sealpost_protocol::{ContentKey, Opener, Sealer};

#[path = "../tests/fixture/mod.rs"]
mod fixture;

const TOPIC: &str = "bench/topic";
const PAYLOAD: [u8; 256] = [0x5a; 256];

enum Work<'a> {
    Sign(&'a SigningKey),
    Verify(&'a SigningKey, &'a [([u8; 256], Signature)]),
    Seal(&'a mut Sealer),
    Open(&'a mut Opener, &'a [Vec<u8>]),
    OpenBatch(&'a mut Opener, &'a [Vec<u8>]),
}

/// Nanoseconds this thread has spent on a CPU, if the kernel tells.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// The only function whose instructions are counted (`--toggle-collect`).
#[inline(never)]
fn run(work: Work<'_>, n: usize) {
    match work {
        Work::Sign(key) => {
            for _ in 0..n {
                black_box(key.sign(black_box(&PAYLOAD)));
            }
        }
        Work::Verify(key, signed) => {
            let vk = key.verifying_key();
            for (message, signature) in signed {
                vk.verify(black_box(message), signature).unwrap();
            }
        }
        Work::Seal(sealer) => {
            for _ in 0..n {
                black_box(sealer.seal(TOPIC, black_box(&PAYLOAD), now_unix()).unwrap());
            }
        }
        Work::Open(opener, envelopes) => {
            for env in envelopes {
                black_box(opener.open(TOPIC, env).unwrap());
            }
        }
        Work::OpenBatch(opener, envelopes) => {
            let now = now_unix();
            for chunk in envelopes.chunks(64) {
                let items: Vec<(&str, &[u8])> = chunk.iter().map(|e| (TOPIC, &e[..])).collect();
                let out = opener.open_batch(&items, now);
                assert!(out.iter().all(Result::is_ok));
                black_box(out);
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_else(|| "seal".into());
    let n: usize = args.next().map_or(2000, |s| s.parse().expect("a count"));

    let ca = fixture::ca();
    let publisher = fixture::publisher_in(&ca, "bench", &["bench/#"], Validity::days_from_now(1));
    let key = ContentKey::generate();
    let mut sealer = fixture::sealer(publisher.clone(), &key);
    sealer.reserve(u64::MAX / 2);
    let mut opener = Opener::new(fixture::verifier(&ca));
    opener.add_key("bench", 1, key);
    opener
        .add_publisher_certificate(&publisher.certificate().der, now_unix())
        .unwrap();
    let signing = SigningKey::generate(&mut rand::rngs::OsRng);

    // Inputs are prepared before the clock starts and outside `run`.
    let signed: Vec<([u8; 256], Signature)> = match op.as_str() {
        // Distinct messages: verification is variable-time, so one fixed signature would
        // not be a fair average.
        "verify" => (0..n)
            .map(|i| {
                let mut message = PAYLOAD;
                message[..8].copy_from_slice(&(i as u64).to_be_bytes());
                (message, signing.sign(&message))
            })
            .collect(),
        _ => Vec::new(),
    };
    let envelopes: Vec<Vec<u8>> = match op.as_str() {
        "open" | "open_batch" => (0..n)
            .map(|_| sealer.seal(TOPIC, &PAYLOAD, now_unix()).unwrap())
            .collect(),
        _ => Vec::new(),
    };
    let started = thread_cpu_ns();
    match op.as_str() {
        "sign" => run(Work::Sign(&signing), n),
        "verify" => run(Work::Verify(&signing, &signed), n),
        "seal" => run(Work::Seal(&mut sealer), n),
        "open" => run(Work::Open(&mut opener, &envelopes), n),
        "open_batch" => run(Work::OpenBatch(&mut opener, &envelopes), n),
        other => panic!("unknown operation {other}: sign, verify, seal, open, open_batch"),
    }
    report(&op, n, started);
}

fn report(op: &str, n: usize, started: Option<u64>) {
    if let (Some(start), Some(end)) = (started, thread_cpu_ns()) {
        let per_op = (end - start) as f64 / n as f64;
        println!(
            "{op}: {per_op:.0} ns CPU per operation, {:.1} k/s on one core",
            1e6 / per_op
        );
    }
}
