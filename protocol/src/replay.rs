//! Replay protection: a sliding window of accepted sequence numbers per publisher, and
//! the numbers that left it unseen.
//!
//! QoS 1 may deliver a message twice and out of order; the window accepts each sequence
//! number once, in any order. Within [`WINDOW`] of the highest accepted number a bitmap
//! says what was seen. A number that leaves the bitmap without having been seen is kept,
//! as part of a range of such numbers ([`MAX_LATE_RANGES`] ranges at most, the oldest
//! forgotten first), and is still accepted once if it arrives late. Brokers do deliver
//! that late: a NATS cluster sends a QoS 1 message again after its `ack_wait` (30 s by
//! default) when its first delivery went missing inside the cluster, by which time
//! thousands of later messages may have been accepted; a fixed window of 1,024 refused
//! such a message as a replay and it was lost. Anything else older than the bitmap
//! (seen, or forgotten) is refused, because the window can no longer tell whether it was
//! seen.
//!
//! Checking and recording are separate steps: the opener checks before verifying and
//! records only after the message fully opened, so forged envelopes cannot move the window.

use std::collections::{HashMap, VecDeque};

use ciborium::value::Value;

/// Width of the window in sequence numbers.
pub const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

/// How many ranges of unseen numbers below the window a publisher's window keeps (16
/// bytes each). A subscriber that reads every message of a publisher has one range per
/// message that went missing for a while; one that reads only some of its topics has a
/// range per gap between the messages it reads, and so remembers the last 256 gaps.
pub const MAX_LATE_RANGES: usize = 256;

/// Result of a window check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayCheck {
    /// Never seen, and within the window, newer than everything seen, or one of the
    /// unseen numbers kept below the window.
    Fresh,
    /// Already accepted.
    Duplicate,
    /// Older than the window and not kept as unseen: cannot be told apart from a replay.
    TooOld,
}

/// The accepted sequence numbers of one publisher.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayWindow {
    /// Highest accepted sequence number; meaningful only when `bits[0] & 1` is set.
    highest: u64,
    /// Bit `k` set: `highest - k` was accepted.
    bits: [u64; WORDS],
    /// Unseen numbers below the window, as inclusive ranges in ascending order, disjoint
    /// and not adjacent; at most [`MAX_LATE_RANGES`].
    late: VecDeque<(u64, u64)>,
}

impl ReplayWindow {
    fn is_empty(&self) -> bool {
        self.bits[0] & 1 == 0
    }

    fn bit(&self, k: u64) -> bool {
        self.bits[(k / 64) as usize] >> (k % 64) & 1 == 1
    }

    /// Index in `late` of the range holding `seq`.
    fn late_range(&self, seq: u64) -> Option<usize> {
        let i = self.late.partition_point(|&(_, end)| end < seq);
        (self.late.get(i).is_some_and(|&(start, _)| start <= seq)).then_some(i)
    }

    /// Where `seq` stands, without recording anything.
    pub fn check(&self, seq: u64) -> ReplayCheck {
        if self.is_empty() || seq > self.highest {
            return ReplayCheck::Fresh;
        }
        let k = self.highest - seq;
        if k >= WINDOW {
            if self.late_range(seq).is_some() {
                ReplayCheck::Fresh
            } else {
                ReplayCheck::TooOld
            }
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
        } else if self.highest - seq >= WINDOW {
            self.take_late(seq);
            return true;
        }
        let k = self.highest - seq;
        self.bits[(k / 64) as usize] |= 1 << (k % 64);
        true
    }

    /// Removes `seq`, which is in a late range, from it.
    fn take_late(&mut self, seq: u64) {
        let i = self.late_range(seq).expect("checked: seq is late");
        let (start, end) = self.late[i];
        match (seq == start, seq == end) {
            (true, true) => {
                self.late.remove(i);
            }
            (true, false) => self.late[i].0 = seq + 1,
            (false, true) => self.late[i].1 = seq - 1,
            (false, false) => {
                self.late[i].1 = seq - 1;
                self.late.insert(i + 1, (seq + 1, end));
                self.forget_oldest();
            }
        }
    }

    /// Adds `start..=end`, which lie above every kept range, to the late ranges.
    fn push_late(&mut self, start: u64, end: u64) {
        match self.late.back_mut() {
            Some(last) if last.1 + 1 == start => last.1 = end,
            _ => {
                self.late.push_back((start, end));
                self.forget_oldest();
            }
        }
    }

    fn forget_oldest(&mut self) {
        while self.late.len() > MAX_LATE_RANGES {
            self.late.pop_front();
        }
    }

    /// Moves every bit `by` places toward older; the unseen numbers that leave the window
    /// (and, for a jump past it, the numbers jumped over) join the late ranges.
    fn shift(&mut self, by: u64) {
        let leaving = by.min(WINDOW);
        // Oldest first: bit k is `highest - k`.
        let mut run: Option<(u64, u64)> = None;
        for k in (WINDOW - leaving..WINDOW).rev() {
            let Some(seq) = self.highest.checked_sub(k) else {
                continue;
            };
            if self.bit(k) {
                if let Some((start, end)) = run.take() {
                    self.push_late(start, end);
                }
            } else {
                run = Some(run.map_or((seq, seq), |(start, _)| (start, seq)));
            }
        }
        if by > WINDOW {
            // Numbers above `highest` that the new window will not cover.
            let (start, end) = (self.highest + 1, self.highest + (by - WINDOW));
            run = Some(run.map_or((start, end), |(s, _)| (s, end)));
        }
        if let Some((start, end)) = run {
            self.push_late(start, end);
        }
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

    /// The kept unseen ranges below the window (inclusive, ascending).
    pub fn late_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.late.iter().copied()
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

    /// Serializes as CBOR: `{ publisher: [highest, bitmap bytes, [start, end, ...]] }`,
    /// the last array the late ranges, flattened (left out when there are none: the form
    /// written before late ranges existed, which [`ReplayState::from_bytes`] still reads).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut entries: Vec<_> = self
            .windows
            .iter()
            .filter(|(_, w)| !w.is_empty())
            .map(|(p, w)| {
                let bitmap: Vec<u8> = w.bits.iter().flat_map(|b| b.to_le_bytes()).collect();
                let mut fields = vec![Value::Integer(w.highest.into()), Value::Bytes(bitmap)];
                if !w.late.is_empty() {
                    let late = w
                        .late
                        .iter()
                        .flat_map(|&(start, end)| [start, end])
                        .map(|n| Value::Integer(n.into()))
                        .collect();
                    fields.push(Value::Array(late));
                }
                (Value::Text(p.clone()), Value::Array(fields))
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
            let (highest, bitmap, late) = match fields.as_slice() {
                [Value::Integer(h), Value::Bytes(b)] => (h, b, &[][..]),
                [Value::Integer(h), Value::Bytes(b), Value::Array(late)] => (h, b, &late[..]),
                _ => return Err(CorruptReplayState("window")),
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
            let late = late_ranges(late, highest)?;
            windows.insert(
                publisher,
                ReplayWindow {
                    highest,
                    bits,
                    late,
                },
            );
        }
        Ok(ReplayState { windows })
    }
}

/// Reads flattened late ranges: ascending, disjoint, not adjacent, below the window of
/// `highest`, at most [`MAX_LATE_RANGES`]; anything else is corrupt (accepting it could
/// make the window accept numbers it has seen).
fn late_ranges(values: &[Value], highest: u64) -> Result<VecDeque<(u64, u64)>, CorruptReplayState> {
    let corrupt = || CorruptReplayState("late ranges");
    if values.is_empty() {
        return Ok(VecDeque::new());
    }
    if !values.len().is_multiple_of(2) || values.len() / 2 > MAX_LATE_RANGES {
        return Err(corrupt());
    }
    let below_window = highest.checked_sub(WINDOW).ok_or_else(corrupt)?;
    let mut late = VecDeque::with_capacity(values.len() / 2);
    let mut floor = 0u64; // the lowest number the next range may start at
    for pair in values.chunks_exact(2) {
        let [Value::Integer(start), Value::Integer(end)] = pair else {
            return Err(corrupt());
        };
        let start = u64::try_from(*start).map_err(|_| corrupt())?;
        let end = u64::try_from(*end).map_err(|_| corrupt())?;
        if start < floor || start > end || end > below_window {
            return Err(corrupt());
        }
        floor = end.checked_add(2).ok_or_else(corrupt)?;
        late.push_back((start, end));
    }
    Ok(late)
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
    fn seen_numbers_older_than_the_window_are_refused() {
        let mut w = ReplayWindow::default();
        assert!(w.record(5000));
        assert_eq!(w.check(5000 - WINDOW + 1), ReplayCheck::Fresh);
        // Never inside the window of anything accepted: nothing to tell it by.
        assert_eq!(w.check(5000 - WINDOW), ReplayCheck::TooOld);
        assert!(!w.record(1));
        assert!(w.record(5000 + 3 * WINDOW));
        assert_eq!(w.check(5000), ReplayCheck::TooOld);
    }

    #[test]
    fn a_number_that_left_the_window_unseen_is_accepted_once_when_it_comes_late() {
        let mut w = ReplayWindow::default();
        for seq in (0..10_000).filter(|&n| n != 100 && n != 7_000) {
            assert!(w.record(seq));
        }
        assert_eq!(
            w.late_ranges().collect::<Vec<_>>(),
            [(100, 100), (7_000, 7_000)]
        );
        assert_eq!(w.check(99), ReplayCheck::TooOld);
        assert_eq!(w.check(100), ReplayCheck::Fresh);
        assert!(w.record(100));
        assert!(!w.record(100));
        assert_eq!(w.check(100), ReplayCheck::TooOld);
        assert!(w.record(7_000));
        assert!(!w.record(7_000));
        assert_eq!(w.late_ranges().count(), 0);
    }

    #[test]
    fn numbers_jumped_over_are_kept_as_one_range_and_split_when_taken() {
        let mut w = ReplayWindow::default();
        assert!(w.record(10));
        assert!(w.record(10 + 5 * WINDOW));
        // 0..=9 were in the first window, unseen; 11.. were jumped over.
        let late: Vec<_> = w.late_ranges().collect();
        assert_eq!(late, [(0, 9), (11, 10 + 4 * WINDOW)]);
        assert!(w.record(500));
        assert_eq!(w.late_ranges().nth(1), Some((11, 499)));
        assert_eq!(w.late_ranges().nth(2), Some((501, 10 + 4 * WINDOW)));
        assert_eq!(w.check(10), ReplayCheck::TooOld);
        assert_eq!(w.check(11), ReplayCheck::Fresh);
    }

    #[test]
    fn the_oldest_late_ranges_are_forgotten_first() {
        let mut w = ReplayWindow::default();
        // A subscriber that sees every other number: one range per gap.
        let top = 2 * (MAX_LATE_RANGES as u64 + WINDOW + 10);
        for seq in (0..top).step_by(2) {
            assert!(w.record(seq));
        }
        assert_eq!(w.late_ranges().count(), MAX_LATE_RANGES);
        let (oldest, _) = w.late_ranges().next().unwrap();
        assert_eq!(w.check(oldest - 2), ReplayCheck::TooOld);
        assert_eq!(w.check(oldest), ReplayCheck::Fresh);
        assert!(w.record(oldest));
        assert!(!w.record(oldest));
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

    #[test]
    fn late_ranges_round_trip_and_bad_ones_are_corrupt() {
        let mut s = ReplayState::default();
        for seq in [3, 5000, 9000] {
            assert!(s.record("pub-a", seq));
        }
        let restored = ReplayState::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(restored, s);
        assert_eq!(restored.check("pub-a", 4000), ReplayCheck::Fresh);
        assert_eq!(restored.check("pub-a", 3), ReplayCheck::TooOld);

        // The same window with hand-made late ranges.
        let with_late = |late: Vec<u64>| {
            let window = Value::Array(vec![
                Value::Integer(9000.into()),
                Value::Bytes([1u8].into_iter().chain([0; WORDS * 8 - 1]).collect()),
                Value::Array(late.into_iter().map(|n| Value::Integer(n.into())).collect()),
            ]);
            let mut out = Vec::new();
            ciborium::into_writer(
                &Value::Map(vec![(Value::Text("p".into()), window)]),
                &mut out,
            )
            .unwrap();
            ReplayState::from_bytes(&out)
        };
        assert!(with_late(vec![1, 2, 10, 20]).is_ok());
        for bad in [
            vec![1],                    // odd
            vec![5, 4],                 // start after end
            vec![1, 5, 5, 9],           // overlapping
            vec![1, 5, 6, 9],           // adjacent: one range written as two
            vec![10, 20, 1, 2],         // not ascending
            vec![1, 9000 - WINDOW + 1], // reaches into the window
        ] {
            assert!(with_late(bad.clone()).is_err(), "{bad:?}");
        }
        let too_many: Vec<u64> = (0..=MAX_LATE_RANGES as u64)
            .flat_map(|i| [3 * i, 3 * i])
            .collect();
        assert!(with_late(too_many).is_err());
    }

    proptest! {
        /// With fewer gaps than the late ranges can hold, the window behaves like the set
        /// of seen numbers, from the first accepted number's window on.
        #[test]
        fn window_matches_a_model(seqs in proptest::collection::vec(0u64..6000, 1..200)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            let mut first: Option<u64> = None;
            for seq in seqs {
                let expected = match first {
                    Some(f) if seq + WINDOW <= f => ReplayCheck::TooOld,
                    _ if seen.contains(&seq) && w.highest().is_some_and(|h| h - seq >= WINDOW) => {
                        ReplayCheck::TooOld
                    }
                    _ if seen.contains(&seq) => ReplayCheck::Duplicate,
                    _ => ReplayCheck::Fresh,
                };
                prop_assert_eq!(w.check(seq), expected);
                prop_assert_eq!(w.record(seq), expected == ReplayCheck::Fresh);
                if expected == ReplayCheck::Fresh {
                    seen.insert(seq);
                    first.get_or_insert(seq);
                }
            }
        }

        /// Whatever arrives, however many gaps: no number is accepted twice, and every
        /// unseen number within the window of the highest is accepted.
        #[test]
        fn never_twice_and_never_refusing_inside_the_window(
            seqs in proptest::collection::vec(0u64..40_000, 1..2000)
        ) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            for seq in seqs {
                let accepted = w.record(seq);
                if seen.contains(&seq) {
                    prop_assert!(!accepted, "{} accepted twice", seq);
                } else if w.highest().is_none_or(|h| seq + WINDOW > h) {
                    prop_assert!(accepted, "{} refused inside the window", seq);
                }
                if accepted {
                    seen.insert(seq);
                }
                prop_assert!(w.late_ranges().count() <= MAX_LATE_RANGES);
            }
        }
    }
}
