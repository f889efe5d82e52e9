//! Replay protection: a sliding window of accepted sequence numbers per publisher.
//!
//! QoS 1 may deliver a message twice and out of order; the window accepts each sequence
//! number once, in any order, as long as it is within [`WINDOW`] of the highest accepted.
//! Anything older is refused, because the window can no longer tell whether it was seen.
//!
//! Checking and recording are separate steps: the opener checks before verifying and
//! records only after the message fully opened, so forged envelopes cannot move the window.

use std::collections::HashMap;

use ciborium::value::Value;

/// Width of the window in sequence numbers.
pub const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

/// Result of a window check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayCheck {
    /// Never seen and within the window (or newer than everything seen).
    Fresh,
    /// Already accepted.
    Duplicate,
    /// Older than the window: cannot be told apart from a replay.
    TooOld,
}

/// The accepted sequence numbers of one publisher.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayWindow {
    /// Highest accepted sequence number; meaningful only when `bits[0] & 1` is set.
    highest: u64,
    /// Bit `k` set: `highest - k` was accepted.
    bits: [u64; WORDS],
}

impl ReplayWindow {
    fn is_empty(&self) -> bool {
        self.bits[0] & 1 == 0
    }

    fn bit(&self, k: u64) -> bool {
        self.bits[(k / 64) as usize] >> (k % 64) & 1 == 1
    }

    /// Where `seq` stands, without recording anything.
    pub fn check(&self, seq: u64) -> ReplayCheck {
        if self.is_empty() || seq > self.highest {
            return ReplayCheck::Fresh;
        }
        let k = self.highest - seq;
        if k >= WINDOW {
            ReplayCheck::TooOld
        } else if self.bit(k) {
            ReplayCheck::Duplicate
        } else {
            ReplayCheck::Fresh
        }
    }

    /// Records `seq` as accepted. Returns `false`, changing nothing, unless it was
    /// [`ReplayCheck::Fresh`].
    pub fn record(&mut self, seq: u64) -> bool {
        if self.check(seq) != ReplayCheck::Fresh {
            return false;
        }
        if self.is_empty() {
            self.highest = seq;
        } else if seq > self.highest {
            self.shift(seq - self.highest);
            self.highest = seq;
        }
        let k = self.highest - seq;
        self.bits[(k / 64) as usize] |= 1 << (k % 64);
        true
    }

    /// Moves every bit `by` places toward older.
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.bits = [0; WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        for i in (0..WORDS).rev() {
            let lo = i.checked_sub(words).map_or(0, |j| self.bits[j]);
            let carry = match (bits, i.checked_sub(words + 1)) {
                (0, _) | (_, None) => 0,
                (_, Some(j)) => self.bits[j] >> (64 - bits),
            };
            self.bits[i] = (lo << bits) | carry;
        }
    }

    /// The highest accepted sequence number, if any.
    pub fn highest(&self) -> Option<u64> {
        (!self.is_empty()).then_some(self.highest)
    }
}

/// The replay windows of every publisher a subscriber has heard from. Persist it with
/// [`ReplayState::to_bytes`] so a restarted subscriber does not accept old messages again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayState {
    windows: HashMap<String, ReplayWindow>,
}

/// A persisted replay state could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt replay state: {0}")]
pub struct CorruptReplayState(&'static str);

impl ReplayState {
    /// Checks `seq` of `publisher` without recording it.
    pub fn check(&self, publisher: &str, seq: u64) -> ReplayCheck {
        self.windows
            .get(publisher)
            .map_or(ReplayCheck::Fresh, |w| w.check(seq))
    }

    /// Records `seq` of `publisher`; `false` if it was not fresh.
    pub fn record(&mut self, publisher: &str, seq: u64) -> bool {
        match self.windows.get_mut(publisher) {
            Some(w) => w.record(seq),
            None => self
                .windows
                .entry(publisher.to_owned())
                .or_default()
                .record(seq),
        }
    }

    /// The window of one publisher.
    pub fn window(&self, publisher: &str) -> Option<&ReplayWindow> {
        self.windows.get(publisher)
    }

    /// Serializes as CBOR: `{ publisher: [highest, bitmap bytes] }`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut entries: Vec<_> = self
            .windows
            .iter()
            .filter(|(_, w)| !w.is_empty())
            .map(|(p, w)| {
                let bitmap: Vec<u8> = w.bits.iter().flat_map(|b| b.to_le_bytes()).collect();
                (
                    Value::Text(p.clone()),
                    Value::Array(vec![Value::Integer(w.highest.into()), Value::Bytes(bitmap)]),
                )
            })
            .collect();
        entries.sort_by(|a, b| a.0.as_text().cmp(&b.0.as_text()));
        let mut out = Vec::new();
        ciborium::into_writer(&Value::Map(entries), &mut out)
            .expect("writing CBOR to a Vec cannot fail");
        out
    }

    /// Reads [`ReplayState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<ReplayState, CorruptReplayState> {
        let value: Value =
            ciborium::from_reader(bytes).map_err(|_| CorruptReplayState("not CBOR"))?;
        let Value::Map(entries) = value else {
            return Err(CorruptReplayState("not a map"));
        };
        let mut windows = HashMap::with_capacity(entries.len());
        for (k, v) in entries {
            let (Value::Text(publisher), Value::Array(fields)) = (k, v) else {
                return Err(CorruptReplayState("entry"));
            };
            let [Value::Integer(highest), Value::Bytes(bitmap)] = fields.as_slice() else {
                return Err(CorruptReplayState("window"));
            };
            let highest = u64::try_from(*highest).map_err(|_| CorruptReplayState("highest"))?;
            if bitmap.len() != WORDS * 8 {
                return Err(CorruptReplayState("bitmap length"));
            }
            let mut bits = [0u64; WORDS];
            for (word, chunk) in bits.iter_mut().zip(bitmap.chunks_exact(8)) {
                *word = u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
            }
            if bits[0] & 1 == 0 {
                return Err(CorruptReplayState("highest not marked"));
            }
            windows.insert(publisher, ReplayWindow { highest, bits });
        }
        Ok(ReplayState { windows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_out_of_order_once() {
        let mut w = ReplayWindow::default();
        assert!(w.record(10));
        assert!(w.record(12));
        assert!(w.record(11));
        assert!(!w.record(11));
        assert!(!w.record(12));
        assert_eq!(w.check(10), ReplayCheck::Duplicate);
        assert_eq!(w.check(9), ReplayCheck::Fresh);
        assert!(w.record(9));
    }

    #[test]
    fn too_old_is_refused() {
        let mut w = ReplayWindow::default();
        assert!(w.record(5000));
        assert_eq!(w.check(5000 - WINDOW + 1), ReplayCheck::Fresh);
        assert_eq!(w.check(5000 - WINDOW), ReplayCheck::TooOld);
        assert!(!w.record(1));
        assert!(w.record(5000 + 3 * WINDOW));
        assert_eq!(w.check(5000), ReplayCheck::TooOld);
    }

    #[test]
    fn zero_and_max_sequence_numbers() {
        let mut w = ReplayWindow::default();
        assert!(w.record(0));
        assert!(!w.record(0));
        assert!(w.record(u64::MAX));
        assert!(!w.record(u64::MAX));
        assert_eq!(w.check(0), ReplayCheck::TooOld);
    }

    #[test]
    fn state_round_trips_and_rejects_corruption() {
        let mut s = ReplayState::default();
        for seq in [1, 7, 3, 900, 64, 65] {
            assert!(s.record("pub-a", seq));
        }
        assert!(s.record("pub-b", 42));
        let restored = ReplayState::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(restored, s);
        assert_eq!(restored.check("pub-a", 7), ReplayCheck::Duplicate);
        assert_eq!(restored.check("pub-a", 8), ReplayCheck::Fresh);
        let bytes = s.to_bytes();
        assert!(ReplayState::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(ReplayState::from_bytes(b"").is_err());
        assert!(ReplayState::from_bytes(&[0xa0]).unwrap().windows.is_empty());
    }

    proptest! {
        /// The window behaves like a set of seen numbers restricted to the last WINDOW.
        #[test]
        fn window_matches_a_model(seqs in proptest::collection::vec(0u64..3000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            let mut highest: Option<u64> = None;
            for seq in seqs {
                let expected = match highest {
                    Some(h) if seq <= h && h - seq >= WINDOW => ReplayCheck::TooOld,
                    _ if seen.contains(&seq) => ReplayCheck::Duplicate,
                    _ => ReplayCheck::Fresh,
                };
                prop_assert_eq!(w.check(seq), expected);
                prop_assert_eq!(w.record(seq), expected == ReplayCheck::Fresh);
                if expected == ReplayCheck::Fresh {
                    seen.insert(seq);
                    highest = Some(highest.map_or(seq, |h| h.max(seq)));
                }
            }
        }
    }
}
