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
//! payload, key-topic location, no embedded certificate), `open_batch` (batches of 64),
//! `seal_burstN` and `open_burstN` (protocol version 2: `seal_many` of N messages, and
//! opening such bursts one envelope at a time; N divides the count), `wrap_rsa`,
//! `wrap_x25519` and `wrap_xwing` (one content key wrapped for one subscriber),
//! `rekey_rsa`, `rekey_x25519` and `rekey_xwing` (a rotation's work per remaining
//! subscriber: the new epoch wrapped, the previous epoch's wrapping reused, the key
//! message signed).
//! Only the calls inside `run` are counted: the setup (certificates, sealing the envelopes
//! that `open` consumes) is not.
//!
//! Without valgrind it also prints the CPU time `run` took (Linux: on-CPU nanoseconds of
//! the thread, from `/proc/thread-self/schedstat`), which unlike wall-clock time does not
//! grow when other processes share the cores; cache and frequency effects remain.

use std::hint::black_box;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _};
use sealpost_certs::{now_unix, Validity};
use sealpost_protocol::{
    seal_key_message_wrapped, ContentKey, KeyRecipient, Opener, PublisherIdentity, Sealer,
    WrappedKey,
};

#[path = "../tests/fixture/mod.rs"]
mod fixture;

const TOPIC: &str = "bench/topic";
const KEY_TOPIC: &str = "sealpost/keys/bench/reader";
const PAYLOAD: [u8; 256] = [0x5a; 256];

enum Work<'a> {
    Sign(&'a SigningKey),
    Verify(&'a SigningKey, &'a [([u8; 256], Signature)]),
    Seal(&'a mut Sealer),
    Open(&'a mut Opener, &'a [Vec<u8>]),
    OpenAt(&'a mut Opener, &'a str, &'a [Vec<u8>], i64),
    OpenBatch(&'a mut Opener, &'a [Vec<u8>]),
    SealBurst(&'a mut Sealer, usize),
    Wrap(&'a KeyRecipient),
    Rekey(&'a PublisherIdentity, &'a KeyRecipient, &'a WrappedKey),
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
        Work::OpenAt(opener, topic, envelopes, now) => {
            for env in envelopes {
                black_box(opener.open_at(topic, env, now).unwrap());
            }
        }
        Work::SealBurst(sealer, burst) => {
            let messages = vec![(TOPIC, &PAYLOAD[..]); burst];
            for _ in 0..n / burst {
                black_box(sealer.seal_many(black_box(&messages), now_unix()).unwrap());
            }
        }
        Work::Wrap(recipient) => {
            let key = ContentKey::generate();
            for _ in 0..n {
                black_box(recipient.wrap(2, black_box(&key)).unwrap());
            }
        }
        Work::Rekey(publisher, recipient, previous) => {
            let key = ContentKey::generate();
            for _ in 0..n {
                let current = recipient.wrap(2, black_box(&key)).unwrap();
                black_box(
                    seal_key_message_wrapped(
                        publisher,
                        recipient,
                        &[previous, &current],
                        KEY_TOPIC,
                        1,
                    )
                    .unwrap(),
                );
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
    if op == "open_file" {
        let path = args.next().expect("open_file PATH [RUNS]");
        let runs = args
            .next()
            .map_or(3, |s| s.parse().expect("a number of runs"));
        return open_file(&path, runs);
    }
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
    // `seal_burstN` / `open_burstN`: bursts of N messages (protocol version 2).
    let burst: usize = op
        .strip_prefix("seal_burst")
        .or_else(|| op.strip_prefix("open_burst"))
        .map_or(1, |n| n.parse().expect("a burst size"));
    let envelopes: Vec<Vec<u8>> = match op.as_str() {
        "open" | "open_batch" => (0..n)
            .map(|_| sealer.seal(TOPIC, &PAYLOAD, now_unix()).unwrap())
            .collect(),
        o if o.starts_with("open_burst") => {
            let messages = vec![(TOPIC, &PAYLOAD[..]); burst];
            (0..n / burst)
                .flat_map(|_| sealer.seal_many(&messages, now_unix()).unwrap())
                .collect()
        }
        _ => Vec::new(),
    };
    // `wrap_<key>`: one content key wrapped for one subscriber; `rekey_<key>`: what a rotation does per remaining subscriber (wrap
    // the new epoch, reuse the previous epoch's wrapping, sign the key message).
    let reader = match op.rsplit('_').next() {
        Some("rsa") => Some(fixture::subscriber_in(&ca, "reader")),
        Some("x25519") => Some(fixture::x25519_subscriber_in(&ca, "reader")),
        Some("xwing") => Some(fixture::kem_subscriber_in(
            &ca,
            "reader",
            sealpost_certs::SubscriberKey::XWing,
        )),
        _ => None,
    }
    .map(|s| KeyRecipient::new(s.certificate().clone()).unwrap());
    let previous = reader
        .as_ref()
        .map(|r| r.wrap(1, &ContentKey::generate()).unwrap());
    let started = thread_cpu_ns();
    match op.as_str() {
        "sign" => run(Work::Sign(&signing), n),
        "verify" => run(Work::Verify(&signing, &signed), n),
        "seal" => run(Work::Seal(&mut sealer), n),
        "open" => run(Work::Open(&mut opener, &envelopes), n),
        "open_batch" => run(Work::OpenBatch(&mut opener, &envelopes), n),
        o if o.starts_with("seal_burst") => run(Work::SealBurst(&mut sealer, burst), n),
        o if o.starts_with("open_burst") => run(Work::Open(&mut opener, &envelopes), n),
        "wrap_rsa" | "wrap_x25519" | "wrap_xwing" => run(Work::Wrap(reader.as_ref().unwrap()), n),
        "rekey_rsa" | "rekey_x25519" | "rekey_xwing" => run(
            Work::Rekey(
                &publisher,
                reader.as_ref().unwrap(),
                previous.as_ref().unwrap(),
            ),
            n,
        ),
        other => panic!(
            "unknown operation {other}: sign, verify, seal, open, open_batch, seal_burstN, open_burstN, wrap_rsa, wrap_x25519, wrap_xwing, rekey_rsa, rekey_x25519, rekey_xwing"
        ),
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

/// Opens the envelopes of the file at `path` `runs` times, each time with a fresh opener,
/// and reports the CPU time per envelope of each run. The file is a sequence of records,
/// each a 4-byte big-endian length and that many bytes: the CA certificate (PEM), the
/// publisher certificate (DER), the content key (32 bytes), the publisher id, the key
/// epoch (decimal), the time to open at (unix seconds, decimal), the topic; then one
/// record per envelope, in the order they are to be opened.
fn open_file(path: &str, runs: usize) {
    let bytes = std::fs::read(path).expect("the envelope file");
    let mut records = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        records.push(&tail[..len]);
        rest = &tail[len..];
    }
    let text = |i: usize| std::str::from_utf8(records[i]).expect("a text record");
    let (publisher, topic) = (text(3), text(6));
    let epoch: u64 = text(4).parse().expect("an epoch");
    let now: i64 = text(5).parse().expect("a time");
    let envelopes: Vec<Vec<u8>> = records[7..].iter().map(|e| e.to_vec()).collect();
    for _ in 0..runs {
        let verifier = sealpost_certs::Verifier::new(text(0)).expect("the CA certificate");
        let mut opener = Opener::new(verifier);
        opener
            .add_publisher_certificate(records[1], now)
            .expect("the publisher certificate");
        opener.add_key(
            publisher,
            epoch,
            ContentKey::from_slice(records[2]).expect("a 32-byte content key"),
        );
        let started = thread_cpu_ns();
        run(
            Work::OpenAt(&mut opener, topic, &envelopes, now),
            envelopes.len(),
        );
        report("open_file", envelopes.len(), started);
    }
}
