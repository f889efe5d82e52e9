//! Property tests: sealing round-trips, and any single-byte change is rejected; bursts
//! (version 2) open message by message, in any subset and order, and any single-bit
//! change to a burst envelope (path, leaf index, tree size, root signature, message) or
//! its topic is rejected.

mod fixture;

use coset::cbor::value::Value;
use fixture::*;
use proptest::prelude::*;
use sealpost_certs::{now_unix, Validity};
use sealpost_protocol::merkle::{
    leaf_hash, root_and_paths, root_from_path, root_from_path_with, Hash, NodeMemo,
};
use sealpost_protocol::{ContentKey, Opener, PublisherIdentity, Rejected, Sealer};
use std::sync::OnceLock;

struct Shared {
    ca: TestPki,
    publisher: PublisherIdentity,
    /// A second publisher with the same id pattern and topics, other key.
    other: PublisherIdentity,
    key: ContentKey,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let ca = ca();
        let publisher = publisher_in(&ca, "prop", &["prop/#"], Validity::days_from_now(1));
        let other = publisher_in(&ca, "prop", &["prop/#"], Validity::days_from_now(1));
        Shared {
            ca,
            publisher,
            other,
            key: ContentKey::generate(),
        }
    })
}

fn fresh_opener(s: &Shared) -> Opener {
    let mut opener = Opener::new(verifier(&s.ca));
    opener.add_key("prop", 1, s.key.clone());
    opener
        .add_publisher_certificate(&s.publisher.certificate().der, now_unix())
        .unwrap();
    opener
}

fn sealer_for(s: &Shared, embed: bool) -> Sealer {
    let mut sealer = sealer(s.publisher.clone(), &s.key);
    sealer.set_embed_certificate(embed);
    sealer
}

/// A burst of `n` messages on `prop/<i % 5>`, payload `i` repeated `i % 7` times.
fn burst(sealer: &mut Sealer, n: usize) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let messages: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| (format!("prop/{}", i % 5), vec![i as u8; i % 7]))
        .collect();
    let refs: Vec<(&str, &[u8])> = messages
        .iter()
        .map(|(t, p)| (t.as_str(), p.as_slice()))
        .collect();
    let sealed = sealer.seal_many(&refs, now_unix()).unwrap();
    assert_eq!(sealed.len(), n);
    messages
        .into_iter()
        .zip(sealed)
        .map(|((t, p), e)| (t, p, e))
        .collect()
}

/// The envelope as CBOR: `[protected, unprotected, payload, signature]` under tag 18.
fn items(envelope: &[u8]) -> Vec<Value> {
    match ciborium::from_reader::<Value, _>(envelope).unwrap() {
        Value::Tag(18, inner) => match *inner {
            Value::Array(items) => items,
            _ => panic!("not an array"),
        },
        _ => panic!("not a COSE_Sign1"),
    }
}

fn encode(items: Vec<Value>) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(&Value::Tag(18, Box::new(Value::Array(items))), &mut out).unwrap();
    out
}

/// `target` with the unprotected header (inclusion proof) and signature of `donor`.
fn with_proof_of(target: &[u8], donor: &[u8]) -> Vec<u8> {
    let mut t = items(target);
    let d = items(donor);
    t[1] = d[1].clone();
    t[3] = d[3].clone();
    encode(t)
}

/// Where the inclusion proof's bytes sit in an envelope (without embedded certificate):
/// after `19 01 8C A1 20 81` and the byte string's head.
fn proof_range(envelope: &[u8]) -> std::ops::Range<usize> {
    let marker = [0x19, 0x01, 0x8c, 0xa1, 0x20, 0x81];
    let at = envelope
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("a version 2 envelope")
        + marker.len();
    let (head, len) = match envelope[at] {
        b @ 0x40..=0x57 => (1, usize::from(b - 0x40)),
        0x58 => (2, usize::from(envelope[at + 1])),
        0x59 => (
            3,
            usize::from(u16::from_be_bytes([envelope[at + 1], envelope[at + 2]])),
        ),
        other => panic!("unexpected head {other:#x}"),
    };
    at + head..at + head + len
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn seal_then_open_round_trips(
        suffix in "[a-z0-9]{1,12}(/[a-z0-9]{1,8}){0,3}",
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
        embed in any::<bool>(),
    ) {
        let s = shared();
        let topic = format!("prop/{suffix}");
        let env = sealer_for(s, embed).seal(&topic, &payload, now_unix()).unwrap();
        let opened = fresh_opener(s).open(&topic, &env).unwrap();
        prop_assert_eq!(opened.payload, payload);
        prop_assert_eq!(opened.topic, topic);
    }

    #[test]
    fn any_single_byte_change_is_rejected(
        payload in proptest::collection::vec(any::<u8>(), 0..256),
        position in any::<proptest::sample::Index>(),
        flip in 1u8..=255,
        embed in any::<bool>(),
    ) {
        let s = shared();
        let env = sealer_for(s, embed).seal("prop/x", &payload, now_unix()).unwrap();
        let mut changed = env.clone();
        let i = position.index(env.len());
        changed[i] ^= flip;
        prop_assert!(fresh_opener(s).open("prop/x", &changed).is_err(), "byte {} accepted", i);
    }

    #[test]
    fn any_subset_of_a_burst_in_any_order_opens_exactly_those(
        n in 1usize..=300,
        keep in proptest::collection::vec(any::<bool>(), 300),
        order in any::<u64>(),
        cache in 0usize..4,
    ) {
        let s = shared();
        let mut sealer = sealer_for(s, false);
        let sealed = burst(&mut sealer, n);
        let mut delivered: Vec<usize> = (0..n).filter(|&i| keep[i]).collect();
        // A deterministic shuffle from `order`.
        let mut x = order | 1;
        for i in (1..delivered.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            delivered.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut opener = fresh_opener(s).with_root_cache(cache);
        for &i in &delivered {
            let (topic, payload, env) = &sealed[i];
            let opened = opener.open(topic, env).unwrap();
            prop_assert_eq!(&opened.payload, payload);
            prop_assert_eq!(opened.seq, i as u64);
            prop_assert_eq!(&opened.topic, topic);
        }
        // Exactly once: every delivered message is now a replay.
        for &i in &delivered {
            let (topic, _, env) = &sealed[i];
            let replayed = matches!(opener.open(topic, env), Err(Rejected::Replayed { .. }));
            prop_assert!(replayed);
        }
    }

    #[test]
    fn any_single_bit_change_to_a_burst_envelope_is_rejected(
        n in 1usize..=40,
        pick in any::<proptest::sample::Index>(),
        bit in any::<proptest::sample::Index>(),
        region in 0u8..3,
        warm in any::<bool>(),
    ) {
        let s = shared();
        let mut sealer = sealer_for(s, false);
        let sealed = burst(&mut sealer, n);
        let i = pick.index(n);
        let (topic, _, env) = &sealed[i];
        // Anywhere, in the inclusion proof (tree size, leaf index, path), or in the root
        // signature (the last 64 bytes).
        let range = match region {
            0 => 0..env.len(),
            1 => proof_range(env),
            _ => env.len() - 64..env.len(),
        };
        let at = range.start * 8 + bit.index(range.len() * 8);
        let mut changed = env.clone();
        changed[at / 8] ^= 1 << (at % 8);
        let mut opener = fresh_opener(s);
        if warm && n > 1 {
            // The root is already verified and cached: the change must still be caught.
            let (t, _, e) = &sealed[(i + 1) % n];
            opener.open(t, e).unwrap();
        }
        prop_assert!(opener.open(topic, &changed).is_err(), "bit {} of {} accepted", at, n);
        // And the genuine message still opens: the forgery moved nothing.
        prop_assert!(opener.open(topic, env).is_ok());
    }

    #[test]
    fn a_burst_message_on_another_topic_is_rejected(
        n in 1usize..=20,
        pick in any::<proptest::sample::Index>(),
    ) {
        let s = shared();
        let sealed = burst(&mut sealer_for(s, false), n);
        let (topic, _, env) = &sealed[pick.index(n)];
        let mut opener = fresh_opener(s);
        let elsewhere = format!("{topic}x");
        prop_assert_eq!(opener.open(&elsewhere, env), Err(Rejected::BadSignature));
        prop_assert!(opener.open(topic, env).is_ok());
    }

    #[test]
    fn a_proof_from_another_burst_or_publisher_is_rejected(
        n in 1usize..=20,
        pick in any::<proptest::sample::Index>(),
        other_publisher in any::<bool>(),
    ) {
        let s = shared();
        let mut sealer = sealer_for(s, false);
        let ours = burst(&mut sealer, n);
        let theirs = if other_publisher {
            let mut sealer = fixture::sealer(s.other.clone(), &s.key);
            burst(&mut sealer, n)
        } else {
            burst(&mut sealer, n)
        };
        let i = pick.index(n);
        let (topic, _, env) = &ours[i];
        // Same index and tree size, other burst's path and root signature.
        let spliced = with_proof_of(env, &theirs[i].2);
        let mut opener = fresh_opener(s);
        // Its root verified first, so a cache that matched on the root alone would pass.
        if !other_publisher {
            opener.open(&theirs[i].0, &theirs[i].2).unwrap();
        }
        prop_assert_eq!(opener.open(topic, &spliced), Err(Rejected::BadSignature));
        prop_assert!(opener.open(topic, env).is_ok());
    }
}

#[test]
fn version_1_envelopes_still_round_trip_and_reject_changes() {
    let s = shared();
    let mut sealer = sealer_for(s, false);
    sealer.set_wire_version(1).unwrap();
    let env = sealer.seal("prop/v1", b"old", now_unix()).unwrap();
    for at in 0..env.len() * 8 {
        let mut changed = env.clone();
        changed[at / 8] ^= 1 << (at % 8);
        assert!(
            fresh_opener(s).open("prop/v1", &changed).is_err(),
            "bit {at}"
        );
    }
    assert_eq!(
        fresh_opener(s).open("prop/v1", &env).unwrap().payload,
        b"old"
    );
}

/// The memo changes no result: every path of every small tree, taken in an order
/// that mixes neighbours, far leaves and other trees, and with any one bit of the
/// leaf or the path flipped, leads where it leads without the memo.
#[test]
fn the_node_memo_never_changes_a_root() {
    let mut memo = NodeMemo::default();
    let mut evaluated = 0;
    for n in 1..=40usize {
        let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&[i as u8; 32])).collect();
        let (root, paths) = root_and_paths(&leaves);
        let order: Vec<usize> = (0..n).map(|i| (i * 7 + n) % n).chain(0..n).collect();
        for i in order {
            let with = |leaf: &Hash, path: &[Hash], memo: &mut NodeMemo| {
                root_from_path_with(i as u64, n as u64, leaf, path, memo)
            };
            assert_eq!(with(&leaves[i], &paths[i], &mut memo), Ok(root));
            for bit in [0usize, 9, 255] {
                let mut leaf = leaves[i];
                leaf[bit / 8] ^= 1 << (bit % 8);
                let want = root_from_path(i as u64, n as u64, &leaf, &paths[i]);
                assert_eq!(with(&leaf, &paths[i], &mut memo), want);
                assert_ne!(want, Ok(root));
                for step in 0..paths[i].len() {
                    let mut path = paths[i].clone();
                    path[step][bit / 8] ^= 1 << (bit % 8);
                    let want = root_from_path(i as u64, n as u64, &leaves[i], &path);
                    assert_eq!(with(&leaves[i], &path, &mut memo), want);
                    assert_ne!(want, Ok(root), "size {n}, leaf {i}, step {step}");
                    evaluated += 1;
                }
                // And the unchanged proof right after a changed one.
                assert_eq!(with(&leaves[i], &paths[i], &mut memo), Ok(root));
            }
        }
    }
    assert!(evaluated > 1000);
}
