//! The hold buffer: data whose key or publisher certificate has not arrived yet.
//!
//! Bounded in count and in time, so a flood of messages for keys that never come cannot
//! grow memory; whatever falls out is rejected with the reason it could not open.
//!
//! Held messages are of two kinds, kept apart so that nobody without a publisher's key can
//! push out a genuine message:
//! - **verified**: waiting for a content key ([`Rejected::UnknownKey`]). The opener looks
//!   the key up only after the publisher certificate and the signature verified, so these
//!   are genuine envelopes. Each (publisher, sequence number) is held once: copies of a
//!   captured envelope cannot fill the buffer either.
//! - **unverified**: from a publisher whose certificate is not known yet
//!   ([`Rejected::UnknownPublisher`]): nothing about them could be checked, so anyone can
//!   make them. They get a small separate share and only ever evict each other.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;
use sealpost_protocol::Rejected;

/// One held message.
pub(crate) struct Held {
    pub topic: String,
    pub payload: Bytes,
    /// When it arrived (unix milliseconds).
    pub since_ms: u64,
    pub reason: Rejected,
}

/// What [`Pending::hold`] did with a message.
pub(crate) enum HoldOutcome {
    /// Held; nothing was pushed out.
    Held,
    /// Held, and this older message of the same kind was pushed out to make room.
    Evicted(Held),
    /// Not held: a copy of this (verified) envelope is already held.
    Duplicate(Held),
    /// Not held: no room for its kind at all (capacity 0).
    Refused(Held),
}

/// Held messages, oldest first, per kind.
pub(crate) struct Pending {
    verified: Queue,
    unverified: Queue,
    /// (publisher, sequence number) of every verified held message.
    verified_ids: HashSet<(String, u64)>,
    /// Longest hold, in milliseconds.
    max_age_ms: u64,
}

struct Queue {
    items: VecDeque<Held>,
    capacity: usize,
}

impl Pending {
    /// At most `capacity` verified and `unverified_capacity` unverified messages, each
    /// for at most `max_age_ms` milliseconds.
    pub fn new(capacity: usize, unverified_capacity: usize, max_age_ms: u64) -> Pending {
        Pending {
            verified: Queue {
                items: VecDeque::new(),
                capacity,
            },
            unverified: Queue {
                items: VecDeque::new(),
                capacity: unverified_capacity,
            },
            verified_ids: HashSet::new(),
            max_age_ms,
        }
    }

    /// Holds a message that failed with a retryable reason.
    pub fn hold(&mut self, held: Held) -> HoldOutcome {
        let id = match &held.reason {
            // Verified (see the module documentation): identified by its signed header.
            Rejected::UnknownKey { publisher, .. } => {
                match sealpost_protocol::peek(&held.payload) {
                    Ok(header) => Some((publisher.clone(), header.seq)),
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let queue = match &id {
            Some(id) => {
                if self.verified_ids.contains(id) {
                    return HoldOutcome::Duplicate(held);
                }
                &mut self.verified
            }
            None => &mut self.unverified,
        };
        if queue.capacity == 0 {
            return HoldOutcome::Refused(held);
        }
        let evicted = if queue.items.len() >= queue.capacity {
            queue.items.pop_front()
        } else {
            None
        };
        queue.items.push_back(held);
        if let Some(id) = id {
            self.verified_ids.insert(id);
        }
        match evicted {
            Some(e) => {
                self.forget(&e);
                HoldOutcome::Evicted(e)
            }
            None => HoldOutcome::Held,
        }
    }

    /// Takes every held message (to retry), oldest first within each kind.
    pub fn take_all(&mut self) -> Vec<Held> {
        self.verified_ids.clear();
        let mut out: Vec<Held> = self.verified.items.drain(..).collect();
        out.extend(self.unverified.items.drain(..));
        out
    }

    /// Removes and returns the messages held longer than the limit.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Held> {
        let mut out = Vec::new();
        for queue in [&mut self.verified, &mut self.unverified] {
            while let Some(front) = queue.items.front() {
                if now_ms.saturating_sub(front.since_ms) < self.max_age_ms {
                    break;
                }
                out.extend(queue.items.pop_front());
            }
        }
        for held in &out {
            self.forget(held);
        }
        out
    }

    fn forget(&mut self, held: &Held) {
        if let (Rejected::UnknownKey { publisher, .. }, Ok(header)) =
            (&held.reason, sealpost_protocol::peek(&held.payload))
        {
            self.verified_ids.remove(&(publisher.clone(), header.seq));
        }
    }

    pub fn len(&self) -> usize {
        self.verified.items.len() + self.unverified.items.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unverified(since_ms: u64) -> Held {
        Held {
            topic: "t".into(),
            payload: Bytes::new(),
            since_ms,
            reason: Rejected::UnknownPublisher {
                publisher: "junk".into(),
            },
        }
    }

    #[test]
    fn bounded_in_count_and_time() {
        let start = 1_000_000;
        let mut p = Pending::new(2, 2, 5_000);
        assert!(matches!(p.hold(unverified(start)), HoldOutcome::Held));
        let second = start + 1_000;
        assert!(matches!(p.hold(unverified(second)), HoldOutcome::Held));
        match p.hold(unverified(start + 2_000)) {
            HoldOutcome::Evicted(e) => assert_eq!(e.since_ms, start),
            _ => panic!("the oldest is evicted"),
        }
        assert_eq!(p.len(), 2);
        assert!(p.expire(start + 3_000).is_empty());
        assert_eq!(p.expire(start + 6_000).len(), 1);
        assert_eq!(p.take_all().len(), 1);
        assert!(p.is_empty());
    }

    #[test]
    fn no_room_at_all_refuses() {
        let mut p = Pending::new(4, 0, 5_000);
        assert!(matches!(p.hold(unverified(1)), HoldOutcome::Refused(_)));
        assert!(p.is_empty());
    }
}
