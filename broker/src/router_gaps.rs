//! Messages the router skipped for a client, found and counted (issue 15: no silent
//! loss).
//!
//! rumqttd 0.20 keeps one log per filter, bounded by `[router]` segments, and one
//! cursor per subscriber into it. A subscriber whose cursor falls behind the oldest
//! segment (a persistent session away while more is published than the log keeps, or
//! a connection the edge could not take messages off fast enough) is moved on to the
//! oldest message kept, and the messages in between are never forwarded: the router
//! logs "Read cursor start jumped" at warn, with no client id, and counts nothing. A
//! message whose MQTT 5 expiry ran out in the log is left out the same way.
//!
//! What the edge can see of it: every message the router forwards from a filter's log
//! carries its offset there (`Forward::cursor`), and the offsets number every message
//! appended to the filter, one after the other, across segments. So the edge gives
//! each of a client's filters a subscription identifier of its own in the router
//! (which attaches it to every message it forwards from that filter), and keeps, per
//! filter, the offset it expects next: a message at a later offset means that the
//! ones in between were skipped. This state goes with a persistent session to its next
//! connection, so what a session missed while away is counted when it comes back.
//! Shared subscriptions get no identifier: their members share one cursor, and the
//! messages another member took are not gaps.

use crate::by_number::ByNumber;
use std::collections::HashMap;

/// One client's filters in the router, with the offset each is expected at next.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouterGaps {
    /// The router subscription identifier of each filter, by the router's name for it.
    ids: HashMap<String, usize>,
    /// Per identifier: the offset of the next message expected (`None`: not known
    /// until the first message, as for a subscription the router just started).
    /// Looked up for every message forwarded: identifiers are the edge's own.
    next: HashMap<usize, Option<u64>, ByNumber>,
    /// The last identifier given (they start at 1: the router refuses 0).
    last: usize,
}

impl RouterGaps {
    /// The identifier of `filter` (the router's name) for a SUBSCRIBE to the router: its
    /// own if it has one. `fresh`: the router starts a new cursor for it at the end of
    /// its log (a new subscription, or one renewed), so no offset is expected yet.
    pub fn subscribe(&mut self, filter: &str, fresh: bool) -> usize {
        let id = match self.ids.get(filter) {
            Some(&id) => id,
            None => {
                self.last += 1;
                self.ids.insert(filter.to_owned(), self.last);
                self.last
            }
        };
        let next = self.next.entry(id).or_default();
        if fresh {
            *next = None;
        }
        id
    }

    /// The identifier of `filter` (the router's name), if it has one.
    pub fn id_of(&self, filter: &str) -> Option<usize> {
        self.ids.get(filter).copied()
    }

    /// `filter` (the router's name) is no longer subscribed to.
    pub fn unsubscribe(&mut self, filter: &str) {
        if let Some(id) = self.ids.remove(filter) {
            self.next.remove(&id);
        }
    }

    /// The router forwarded the message at `offset` of the filter with identifier `id`:
    /// returns how many messages of that filter it skipped before it.
    pub fn forwarded(&mut self, id: usize, offset: u64) -> u64 {
        let Some(next) = self.next.get_mut(&id) else {
            // Not one of ours (unsubscribed meanwhile): nothing to compare with.
            return 0;
        };
        let skipped = next.map_or(0, |n| offset.saturating_sub(n));
        // (An offset below the one expected is a message sent again: no gap, and the
        // expectation does not move back.)
        *next = Some(next.map_or(offset + 1, |n| n.max(offset + 1)));
        skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_in_a_filters_offsets_counts_the_messages_in_between() {
        let mut g = RouterGaps::default();
        let a = g.subscribe("a/#", true);
        let b = g.subscribe("b", true);
        assert_ne!(a, b);
        assert!(a > 0 && b > 0, "the router refuses identifier 0");
        // The first message sets where the filter is; then one after the other.
        assert_eq!(g.forwarded(a, 40), 0);
        assert_eq!(g.forwarded(a, 41), 0);
        // Each filter counts on its own.
        assert_eq!(g.forwarded(b, 7), 0);
        assert_eq!(g.forwarded(a, 52), 10);
        assert_eq!(g.forwarded(b, 8), 0);
        // Sent again (an earlier offset): no gap, and no step back.
        assert_eq!(g.forwarded(a, 45), 0);
        assert_eq!(g.forwarded(a, 53), 0);
    }

    #[test]
    fn a_repeated_subscription_keeps_its_place_and_a_renewed_one_starts_again() {
        let mut g = RouterGaps::default();
        let a = g.subscribe("a", true);
        g.forwarded(a, 5);
        // The same filter again (a resumed session joining the router again): the
        // same identifier and the same expectation.
        assert_eq!(g.subscribe("a", false), a);
        assert_eq!(g.forwarded(a, 9), 3);
        // Renewed (a new QoS: a new cursor at the end of the log): no gap to its first.
        assert_eq!(g.subscribe("a", true), a);
        assert_eq!(g.forwarded(a, 100), 0);
        // Gone: its messages still on the way count nothing.
        g.unsubscribe("a");
        assert_eq!(g.forwarded(a, 200), 0);
        assert_ne!(g.subscribe("a", true), a, "identifiers are not given twice");
    }
}
