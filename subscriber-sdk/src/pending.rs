//! The hold buffer: data whose key or publisher certificate has not arrived yet.
//!
//! Bounded in count and in time, so a flood of messages for keys that never come cannot
//! grow memory; whatever falls out is rejected with the reason it could not open.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sealpost_protocol::Rejected;

/// One held message.
pub(crate) struct Held {
    pub topic: String,
    pub payload: Bytes,
    pub since: Instant,
    pub reason: Rejected,
}

/// Held messages, oldest first.
pub(crate) struct Pending {
    items: VecDeque<Held>,
    capacity: usize,
    max_age: Duration,
}

impl Pending {
    pub fn new(capacity: usize, max_age: Duration) -> Pending {
        Pending {
            items: VecDeque::new(),
            capacity,
            max_age,
        }
    }

    /// Holds a message; returns the one evicted to make room, if any.
    pub fn hold(&mut self, held: Held) -> Option<Held> {
        if self.capacity == 0 {
            return Some(held);
        }
        let evicted = if self.items.len() >= self.capacity {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(held);
        evicted
    }

    /// Takes every held message (to retry).
    pub fn take_all(&mut self) -> Vec<Held> {
        self.items.drain(..).collect()
    }

    /// Removes and returns the messages held longer than the limit.
    pub fn expire(&mut self, now: Instant) -> Vec<Held> {
        let mut out = Vec::new();
        while let Some(front) = self.items.front() {
            if now.duration_since(front.since) < self.max_age {
                break;
            }
            out.extend(self.items.pop_front());
        }
        out
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(since: Instant) -> Held {
        Held {
            topic: "t".into(),
            payload: Bytes::new(),
            since,
            reason: Rejected::BadSignature,
        }
    }

    #[test]
    fn bounded_in_count_and_time() {
        let start = Instant::now();
        let mut p = Pending::new(2, Duration::from_secs(5));
        assert!(p.hold(held(start)).is_none());
        assert!(p.hold(held(start + Duration::from_secs(1))).is_none());
        let evicted = p.hold(held(start + Duration::from_secs(2))).unwrap();
        assert_eq!(evicted.since, start);
        assert_eq!(p.len(), 2);
        assert!(p.expire(start + Duration::from_secs(3)).is_empty());
        assert_eq!(p.expire(start + Duration::from_secs(6)).len(), 1);
        assert_eq!(p.take_all().len(), 1);
        assert!(p.is_empty());
    }
}
