//! Key delivery per subscriber key type (issue 16 item 4): wrap and unwrap per second,
//! key-message bytes per subscriber, accepting a key message, and issuing certificates,
//! for RSA-OAEP (RSA-2048), HPKE (X25519) and HPKE (X-Wing) subscribers, in one run on one
//! thread.
//!
//! `cargo bench -p sealpost-protocol --bench key_delivery`
//! `cargo bench -p sealpost-protocol --bench key_delivery -- --issue-rsa 20 --issue-x25519 10000 --issue-xwing 10000`
//!
//! Each rate is the count of operations done in a fixed wall-clock window (1 s by default,
//! `--seconds`), after a short warm-up. Issuing: `--issue-rsa N` / `--issue-x25519 N`
//! certificates are issued one after another and the time for 10,000 is extrapolated from
//! N when N is smaller (the output says which). Results are in docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use fixture::TestPki;
use sealpost_certs::{SubscriberKey, Validity};
use sealpost_protocol::{
    seal_key_message, ContentKey, KeyRecipient, Opener, PublisherIdentity, SubscriberIdentity,
};

#[path = "../tests/fixture/mod.rs"]
mod fixture;

const TOPIC: &str = "sealpost/keys/bench/reader";

/// Runs `op` repeatedly for `window` (after a tenth of it as warm-up); operations per second.
fn rate(window: Duration, mut op: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < window / 10 {
        op();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        op();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn row(
    window: Duration,
    ca: &TestPki,
    publisher: &PublisherIdentity,
    subscriber: &SubscriberIdentity,
) {
    let key = ContentKey::generate();
    let recipient = KeyRecipient::new(subscriber.certificate().clone()).unwrap();
    let wrapped = recipient.wrap(1, &key).unwrap();
    assert_eq!(subscriber.unwrap(&wrapped).unwrap(), key);
    let wrap = rate(window, || {
        black_box(recipient.wrap(1, black_box(&key)).unwrap());
    });
    let unwrap = rate(window, || {
        black_box(subscriber.unwrap(black_box(&wrapped)).unwrap());
    });
    let one = seal_key_message(publisher, &recipient, &[(1, &key)], TOPIC, 1).unwrap();
    let two = seal_key_message(publisher, &recipient, &[(1, &key), (2, &key)], TOPIC, 1).unwrap();
    let mut epoch = 0u64;
    let mut opener = Opener::new(fixture::verifier(ca)).with_identity(subscriber.clone());
    // A fresh epoch each time, so every call unwraps (known epochs are skipped); the key
    // message is sealed outside the measured call.
    let messages: Vec<Vec<u8>> = (1..=4096u64)
        .map(|e| seal_key_message(publisher, &recipient, &[(e, &key)], TOPIC, 1).unwrap())
        .collect();
    let accept = rate(window, || {
        let m = &messages[epoch as usize % messages.len()];
        epoch += 1;
        if (epoch as usize).is_multiple_of(messages.len()) {
            opener = Opener::new(fixture::verifier(ca)).with_identity(subscriber.clone());
        }
        let _ = black_box(opener.accept_key_message(TOPIC, m));
    });
    println!(
        "| {} | {:.0} | {:.0} | {} | {} | {:.0} |",
        recipient.algorithm(),
        wrap,
        unwrap,
        one.len(),
        two.len(),
        accept
    );
}

fn issue(ca: &TestPki, key: SubscriberKey, n: usize) {
    if n == 0 {
        return;
    }
    let start = Instant::now();
    for i in 0..n {
        black_box(
            ca.issue_subscriber(&format!("sub-{i:05}"), key, Validity::days_from_now(1))
                .unwrap(),
        );
    }
    let each = start.elapsed().as_secs_f64() / n as f64;
    let how = if n >= 10_000 {
        "measured".to_owned()
    } else {
        format!("extrapolated from {n}")
    };
    println!(
        "| {key:?} | {n} | {:.3} s | {:.2} ms | {:.1} s ({how}) |",
        start.elapsed().as_secs_f64(),
        each * 1e3,
        each * 10_000.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let window = Duration::from_millis(value("--seconds").map_or(1000, |s| s * 1000));
    let ca = fixture::ca();
    let publisher = fixture::publisher_in(&ca, "bench", &["bench/#"], Validity::days_from_now(1));
    println!("| algorithm | wrap/s | unwrap/s | key message bytes, 1 epoch | 2 epochs | accept key message/s (verify + unwrap) |");
    println!("|---|---|---|---|---|---|");
    row(
        window,
        &ca,
        &publisher,
        &fixture::subscriber_in(&ca, "reader"),
    );
    row(
        window,
        &ca,
        &publisher,
        &fixture::x25519_subscriber_in(&ca, "reader"),
    );
    row(
        window,
        &ca,
        &publisher,
        &fixture::kem_subscriber_in(&ca, "reader", SubscriberKey::XWing),
    );
    println!();
    println!("| subscriber key | issued | time | each | 10,000 |");
    println!("|---|---|---|---|---|");
    issue(
        &ca,
        SubscriberKey::Rsa,
        value("--issue-rsa").unwrap_or(20) as usize,
    );
    issue(
        &ca,
        SubscriberKey::X25519,
        value("--issue-x25519").unwrap_or(10_000) as usize,
    );
    issue(
        &ca,
        SubscriberKey::XWing,
        value("--issue-xwing").unwrap_or(10_000) as usize,
    );
}
