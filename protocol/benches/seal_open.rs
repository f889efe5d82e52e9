//! Seal and open throughput next to the raw primitives, in one run.
//!
//! `cargo bench -p sealpost-protocol --bench seal_open`
//! Results and their reading are in docs/BENCHMARKS.md.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ed25519_dalek::{Signer, SigningKey, Verifier as _};
use fixture::TestPki;
use rand::rngs::OsRng;
use rsa::Oaep;
use sealpost_certs::{now_unix, Validity};
use sealpost_protocol::{
    seal_key_message, ContentKey, KeyRecipient, Opener, PublisherIdentity, Sealer,
    SubscriberIdentity,
};
use sha2::Sha256;
use std::hint::black_box;

#[path = "../tests/fixture/mod.rs"]
mod fixture;

const SIZES: [usize; 4] = [64, 256, 1024, 16 * 1024];
const TOPIC: &str = "bench/topic";

struct Setup {
    ca: TestPki,
    publisher: PublisherIdentity,
    subscriber: SubscriberIdentity,
    key: ContentKey,
}

fn setup() -> Setup {
    let ca = fixture::ca();
    Setup {
        publisher: fixture::publisher_in(&ca, "bench", &["bench/#"], Validity::days_from_now(1)),
        subscriber: fixture::subscriber_in(&ca, "reader"),
        ca,
        key: ContentKey::generate(),
    }
}

fn sealer(s: &Setup) -> Sealer {
    let mut sealer = fixture::sealer(s.publisher.clone(), &s.key);
    sealer.reserve(u64::MAX / 2);
    sealer
}

fn opener(s: &Setup) -> Opener {
    let mut o = Opener::new(fixture::verifier(&s.ca));
    o.add_key("bench", 1, s.key.clone());
    o.add_publisher_certificate(&s.publisher.certificate().der, now_unix())
        .unwrap();
    o
}

fn primitives(c: &mut Criterion) {
    let mut g = c.benchmark_group("primitives");
    let signing = SigningKey::generate(&mut OsRng);
    let verifying = signing.verifying_key();
    let msg = [7u8; 256];
    let sig = signing.sign(&msg);
    g.throughput(Throughput::Elements(1));
    g.bench_function("ed25519_sign_256B", |b| {
        b.iter(|| signing.sign(black_box(&msg)))
    });
    g.bench_function("ed25519_verify_256B", |b| {
        b.iter(|| verifying.verify(black_box(&msg), &sig).unwrap())
    });
    let msgs: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 256]).collect();
    let sigs: Vec<_> = msgs.iter().map(|m| signing.sign(m)).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    let keys = vec![verifying; 64];
    g.throughput(Throughput::Elements(64));
    g.bench_function("ed25519_verify_batch64_256B", |b| {
        b.iter(|| ed25519_dalek::verify_batch(black_box(&refs), &sigs, &keys).unwrap())
    });
    let cipher = Aes256Gcm::new(ContentKey::generate().as_bytes().into());
    let nonce = [1u8; 12];
    for size in SIZES {
        let pt = vec![0u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("aes256gcm_encrypt_{size}B"), |b| {
            b.iter(|| {
                cipher
                    .encrypt(
                        Nonce::from_slice(&nonce),
                        Payload {
                            msg: black_box(&pt),
                            aad: TOPIC.as_bytes(),
                        },
                    )
                    .unwrap()
            })
        });
    }
    g.finish();
}

fn envelopes(c: &mut Criterion) {
    let s = setup();
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    for size in SIZES {
        let payload = vec![0x5a; size];
        let mut sealer = sealer(&s);
        g.bench_function(format!("seal_{size}B"), |b| {
            b.iter(|| sealer.seal(TOPIC, black_box(&payload), now_unix()).unwrap())
        });
        let mut sealer = self::sealer(&s);
        let mut opener = opener(&s);
        g.bench_function(format!("open_{size}B"), |b| {
            b.iter_batched(
                || sealer.seal(TOPIC, &payload, now_unix()).unwrap(),
                |env| opener.open(TOPIC, &env).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    // Batched opening, 64 envelopes of 256 B.
    let payload = vec![0x5a; 256];
    let mut sealer = self::sealer(&s);
    let mut opener = opener(&s);
    g.throughput(Throughput::Elements(64));
    g.bench_function("open_batch64_256B", |b| {
        b.iter_batched(
            || {
                (0..64)
                    .map(|_| sealer.seal(TOPIC, &payload, now_unix()).unwrap())
                    .collect::<Vec<_>>()
            },
            |envs| {
                let items: Vec<(&str, &[u8])> =
                    envs.iter().map(|e| (TOPIC, e.as_slice())).collect();
                let out = opener.open_batch(&items, now_unix());
                assert!(out.iter().all(Result::is_ok));
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Version 2 bursts of 256 B messages: sealing a burst of `n` (one signature) and opening
/// all of its messages one by one (one root verification, then cache hits), per message;
/// beside version 1 (one signature per message) in the same run.
fn bursts(c: &mut Criterion) {
    let s = setup();
    let mut g = c.benchmark_group("bursts");
    let payload = vec![0x5a; 256];
    g.throughput(Throughput::Elements(1));
    let mut v1 = sealer(&s);
    v1.set_wire_version(1).unwrap();
    g.bench_function("seal_v1_256B", |b| {
        b.iter(|| v1.seal(TOPIC, black_box(&payload), now_unix()).unwrap())
    });
    let mut opener_v1 = opener(&s);
    g.bench_function("open_v1_256B", |b| {
        b.iter_batched(
            || v1.seal(TOPIC, &payload, now_unix()).unwrap(),
            |env| opener_v1.open(TOPIC, &env).unwrap(),
            BatchSize::SmallInput,
        )
    });
    for n in [1usize, 16, 64, 256] {
        let messages: Vec<(&str, &[u8])> = vec![(TOPIC, payload.as_slice()); n];
        let mut sealer = sealer(&s);
        sealer.set_max_burst(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("seal_burst{n}_256B"), |b| {
            b.iter(|| sealer.seal_many(black_box(&messages), now_unix()).unwrap())
        });
        let mut opener = opener(&s);
        g.bench_function(format!("open_burst{n}_256B"), |b| {
            b.iter_batched(
                || sealer.seal_many(&messages, now_unix()).unwrap(),
                |envs| {
                    for env in &envs {
                        opener.open(TOPIC, env).unwrap();
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn key_wrapping(c: &mut Criterion) {
    let s = setup();
    let mut g = c.benchmark_group("key_wrapping");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    let recipient = KeyRecipient::new(s.subscriber.certificate().clone()).unwrap();
    let topic = "sealpost/keys/bench/reader";
    g.bench_function("key_message_seal_1_epoch", |b| {
        b.iter(|| seal_key_message(&s.publisher, &recipient, &[(1, &s.key)], topic, 1).unwrap())
    });
    let rsa_public = s.subscriber.certificate().rsa_public_key().unwrap();
    g.bench_function("rsa2048_oaep_wrap_raw", |b| {
        b.iter(|| {
            rsa_public
                .encrypt(&mut OsRng, Oaep::new::<Sha256>(), s.key.as_bytes())
                .unwrap()
        })
    });
    let mut epoch = 1u64;
    let mut opener = Opener::new(fixture::verifier(&s.ca)).with_identity(s.subscriber.clone());
    g.bench_function("key_message_accept_1_epoch", |b| {
        b.iter_batched(
            || {
                epoch += 1;
                seal_key_message(&s.publisher, &recipient, &[(epoch, &s.key)], topic, 1).unwrap()
            },
            |msg| opener.accept_key_message(topic, &msg).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, primitives, envelopes, bursts, key_wrapping);
criterion_main!(benches);
