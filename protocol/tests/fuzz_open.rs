//! A bounded mutation fuzzer for `Opener::open` and `Opener::accept_key_message`.
//!
//! Runs for `SEALPOST_FUZZ_SECONDS` (default 5) under `cargo test`; CI runs it longer.
//! Stable Rust has no coverage-guided fuzzer, so this one mutates genuine envelopes
//! (bit flips, byte overwrites, truncation, extension, splicing, CBOR-shaped noise) from a
//! seeded generator and asserts the two properties that matter: it never panics, and no
//! input other than the genuine bytes is ever accepted. The seed is printed so a failure
//! can be replayed with `SEALPOST_FUZZ_SEED`.

mod fixture;

use std::time::{Duration, Instant};

use fixture::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sealpost_certs::now_unix;
use sealpost_protocol::{seal_key_message, KeyRecipient, Sealer};

fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        match rng.gen_range(0..7) {
            0 if !out.is_empty() => {
                let i = rng.gen_range(0..out.len());
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !out.is_empty() => {
                let i = rng.gen_range(0..out.len());
                out[i] = rng.gen();
            }
            2 => out.truncate(rng.gen_range(0..=out.len())),
            3 => {
                let extra: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
                let at = rng.gen_range(0..=out.len());
                out.splice(at..at, extra);
            }
            4 if !other.is_empty() => {
                let cut = rng.gen_range(0..=out.len());
                let from = rng.gen_range(0..other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            5 if !out.is_empty() => {
                // Interesting CBOR heads: lengths and tags at their limits.
                let i = rng.gen_range(0..out.len());
                out[i] = *[
                    0x00, 0x17, 0x18, 0x1b, 0x40, 0x5b, 0x80, 0x9f, 0xa0, 0xbf, 0xd2, 0xff,
                ]
                .get(rng.gen_range(0..12))
                .unwrap();
            }
            _ => {
                let i = rng.gen_range(0..=out.len());
                out.insert(i, rng.gen());
            }
        }
    }
    out
}

#[test]
fn mutated_envelopes_and_key_messages_are_never_accepted() {
    let seconds: u64 = std::env::var("SEALPOST_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("SEALPOST_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("fuzz seed {seed}, {seconds} s");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut w = world();
    // A second sealer of the same publisher must use its own range of sequence numbers.
    let identity = w.sealer.identity().clone();
    let location = w.sealer.location().clone();
    let mut embedded = Sealer::new(identity, location, 1, &w.key, 1 << 40);
    embedded.reserve(1000);
    embedded.set_embed_certificate(true);
    let corpus: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            let topic = format!("plant/{i}");
            let payload = vec![i as u8; i * 37];
            let env = if i % 2 == 0 {
                w.sealer.seal(&topic, &payload, now_unix())
            } else {
                embedded.seal(&topic, &payload, now_unix())
            };
            (topic, env.unwrap())
        })
        .collect();
    let key_topic = "sealpost/keys/plant/reader";
    let recipient = KeyRecipient::new(w.subscriber.certificate().clone()).unwrap();
    let key_message = seal_key_message(
        w.sealer.identity(),
        &recipient,
        &[(1, &w.key)],
        key_topic,
        1,
    )
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            let (topic, original) = &corpus[rng.gen_range(0..corpus.len())];
            let other = &corpus[rng.gen_range(0..corpus.len())].1;
            let input = mutate(&mut rng, original, other);
            // A fresh window each time, so acceptance is never masked by a replay rejection.
            w.opener.set_replay_state(Default::default());
            if let Ok(opened) = w.opener.open_at(topic, &input, now_unix()) {
                assert_eq!(
                    &input, original,
                    "seed {seed}: mutated envelope accepted: {opened:?}"
                );
            }
            let km = mutate(&mut rng, &key_message, original);
            if w.opener.accept_key_message(key_topic, &km).is_ok() {
                assert_eq!(km, key_message, "seed {seed}: mutated key message accepted");
            }
            runs += 1;
        }
    }
    // An opener that went through all that still opens the genuine envelopes.
    for (topic, env) in &corpus {
        w.opener.set_replay_state(Default::default());
        let r = w.opener.open(topic, env);
        assert!(
            r.is_ok(),
            "seed {seed}: genuine envelope on {topic} refused: {r:?}"
        );
    }
    println!("{runs} mutated inputs, none accepted");
}
