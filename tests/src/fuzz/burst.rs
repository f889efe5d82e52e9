//! Version 2 bursts: `Opener::open_at` on edited copies of a genuine burst from a
//! publisher the subscriber trusts, so that the inclusion-proof parsing, the path
//! evaluation and the verified-root cache are reached with inputs that get past the
//! certificate checks.
//!
//! An input is an edit script, not an envelope: keys are made afresh in every process, so
//! a committed envelope could never verify here. The first byte picks one of the genuine
//! envelopes; every following 3 bytes `[op << 6 | offset_hi, offset_lo, value]` edit it
//! at `offset` (modulo its length): 0 = xor `value`, 1 = overwrite with `value`,
//! 2 = insert `value`, 3 = remove the byte.

use std::sync::{Mutex, OnceLock};

use sealpost_certs::{now_unix, Verifier};
use sealpost_protocol::{KeyLocation, Opener, Sealer};

use super::protocol::Parties;

/// A genuine envelope: the topic it was sealed for, its bytes and its plaintext.
struct Genuine {
    topic: String,
    envelope: Vec<u8>,
    payload: Vec<u8>,
}

struct Harness {
    opener: Opener,
    genuine: Vec<Genuine>,
    /// The time the burst was sealed: every input is opened then, so none is stale.
    now: i64,
}

/// The number of genuine envelopes an input can pick from.
pub const GENUINE_ENVELOPES: usize = 8;

fn harness() -> &'static Mutex<Harness> {
    static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // The publisher `plant` of the envelope target's parties (its subscriber is unused:
        // this opener is handed the content key directly).
        let Parties {
            ca, publisher, key, ..
        } = Parties::new();
        let now = now_unix();
        let mut sealer = Sealer::new(
            publisher.clone(),
            KeyLocation::key_topic_for("plant"),
            1,
            &key,
            0,
        );
        sealer.reserve(GENUINE_ENVELOPES as u64);
        // A burst of 7 (an unbalanced tree: paths of 2 and 3 hashes) and a burst of one.
        let messages: Vec<(String, Vec<u8>)> = (0..GENUINE_ENVELOPES)
            .map(|i| (format!("plant/line-{}", i % 3), vec![i as u8; i * 5]))
            .collect();
        let refs: Vec<(&str, &[u8])> = messages
            .iter()
            .map(|(t, p)| (t.as_str(), p.as_slice()))
            .collect();
        let mut envelopes = sealer.seal_many(&refs[..7], now).expect("seal burst");
        sealer.set_embed_certificate(true);
        envelopes.extend(sealer.seal_many(&refs[7..], now).expect("seal lone"));
        let genuine = messages
            .into_iter()
            .zip(envelopes)
            .map(|((topic, payload), envelope)| Genuine {
                topic,
                envelope,
                payload,
            })
            .collect();
        let verifier = Verifier::new(&ca.certificate_pem()).expect("verifier");
        let mut opener = Opener::new(verifier);
        opener.add_key("plant", 1, key);
        opener
            .add_publisher_certificate(&publisher.certificate().der, now)
            .expect("publisher certificate");
        Mutex::new(Harness {
            opener,
            genuine,
            now,
        })
    })
}

/// Applies the edit script `edits` to `envelope`.
fn edit(envelope: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut out = envelope.to_vec();
    for e in edits.chunks_exact(3) {
        if out.is_empty() {
            break;
        }
        let at = usize::from(u16::from_be_bytes([e[0] & 0x3f, e[1]])) % out.len();
        match e[0] >> 6 {
            0 => out[at] ^= e[2],
            1 => out[at] = e[2],
            2 => out.insert(at, e[2]),
            _ => {
                out.remove(at);
            }
        }
    }
    out
}

/// Opens the edited envelope: it may be accepted only if the edits cancelled out (it is
/// byte for byte a genuine envelope of that topic, and opens to its plaintext), and the
/// genuine envelope still opens afterwards (a forgery neither poisoned the root cache
/// nor moved any state).
pub fn protocol_burst(data: &[u8]) {
    let mut h = harness().lock().unwrap_or_else(|p| p.into_inner());
    let Some((&selector, edits)) = data.split_first() else {
        return;
    };
    let pick = usize::from(selector) % h.genuine.len();
    let candidate = edit(&h.genuine[pick].envelope, edits);
    let topic = h.genuine[pick].topic.clone();
    let now = h.now;
    h.opener.set_replay_state(Default::default());
    match h.opener.open_at(&topic, &candidate, now) {
        Ok(opened) => {
            let genuine = &h.genuine[pick];
            assert!(
                candidate == genuine.envelope && opened.payload == genuine.payload,
                "an edited burst envelope was accepted: {candidate:02x?}"
            );
        }
        Err(e) => {
            let _ = (e.kind(), e.is_retryable(), e.to_string());
        }
    }
    h.opener.set_replay_state(Default::default());
    let genuine = h.genuine[pick].envelope.clone();
    if let Err(e) = h.opener.open_at(&topic, &genuine, now) {
        panic!("the genuine envelope no longer opens after an edited one: {e:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_in_order() {
        let e = [1u8, 2, 3, 4];
        assert_eq!(edit(&e, &[0x00, 0x01, 0xff]), vec![1, 0xfd, 3, 4]);
        assert_eq!(edit(&e, &[0x40, 0x05, 9]), vec![1, 9, 3, 4]);
        assert_eq!(edit(&e, &[0x80, 0x00, 9]), vec![9, 1, 2, 3, 4]);
        assert_eq!(edit(&e, &[0xc0, 0x03, 0, 0xc0, 0x00, 0]), vec![2, 3]);
        assert_eq!(
            edit(&e, &[0x00, 0x01]),
            e.to_vec(),
            "an incomplete edit is ignored"
        );
    }
}
