//! The last messages sent at QoS 1, sent again after a reconnect.
//!
//! A broker that goes away takes with it what it had acknowledged but not yet delivered,
//! and a subscriber that fails over to the next broker a moment after the publisher
//! misses what reached that broker before it subscribed there. So after every reconnect,
//! once subscribers that lost the same broker have had time to come back
//! ([`RESEND_DELAY`]: the longest first pause of the reconnect backoff, twice over), the
//! publisher sends its recent envelopes again. Subscribers drop the ones they already
//! have by sequence number (replay window), so each reaches the application once.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

/// How many recent QoS 1 envelopes are kept, by default: half the subscribers' replay
/// window ([`sealpost_protocol::replay::WINDOW`]), so that what is sent again is still
/// inside it even with as many new messages sent meanwhile.
pub const DEFAULT_RESEND_WINDOW: usize = 512;

/// At most this many bytes of envelopes are kept, whatever the count.
const MAX_BYTES: usize = 16 * 1024 * 1024;

/// How long after a reconnect the recent envelopes are sent again.
pub const RESEND_DELAY: Duration = Duration::from_secs(1);

/// One envelope as it was published.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub topic: String,
    pub envelope: Bytes,
    pub retain: bool,
}

/// The most recent envelopes, oldest first, bounded in count and bytes.
#[derive(Debug)]
pub(crate) struct Recent {
    sent: VecDeque<Sent>,
    bytes: usize,
    capacity: usize,
}

impl Recent {
    /// Keeps up to `capacity` envelopes (0: none).
    pub fn new(capacity: usize) -> Recent {
        Recent {
            sent: VecDeque::new(),
            bytes: 0,
            capacity,
        }
    }

    /// Records an envelope just published, forgetting the oldest beyond the bounds.
    pub fn push(&mut self, sent: Sent) {
        if self.capacity == 0 || sent.envelope.len() > MAX_BYTES {
            return;
        }
        self.bytes += sent.envelope.len();
        self.sent.push_back(sent);
        while self.sent.len() > self.capacity || self.bytes > MAX_BYTES {
            if let Some(old) = self.sent.pop_front() {
                self.bytes -= old.envelope.len();
            }
        }
    }

    /// The recent envelopes, oldest first.
    pub fn snapshot(&self) -> Vec<Sent> {
        self.sent.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(n: usize, len: usize) -> Sent {
        Sent {
            topic: format!("t/{n}"),
            envelope: Bytes::from(vec![0u8; len]),
            retain: false,
        }
    }

    #[test]
    fn keeps_the_newest_within_count_and_bytes() {
        let mut r = Recent::new(3);
        for n in 0..5 {
            r.push(sent(n, 10));
        }
        let topics: Vec<String> = r.snapshot().into_iter().map(|s| s.topic).collect();
        assert_eq!(topics, ["t/2", "t/3", "t/4"]);
        let mut r = Recent::new(100);
        r.push(sent(0, MAX_BYTES / 2));
        r.push(sent(1, MAX_BYTES / 2));
        r.push(sent(2, 1));
        let topics: Vec<String> = r.snapshot().into_iter().map(|s| s.topic).collect();
        assert_eq!(topics, ["t/1", "t/2"]);
        let mut off = Recent::new(0);
        off.push(sent(0, 1));
        assert!(off.snapshot().is_empty());
    }
}
