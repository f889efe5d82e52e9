//! Messages the edge drops for a client, which must never be silent: each is counted
//! per reason in the metrics, and logged at warn with the client id, at most once per
//! [`WARN_EVERY`] per connection (with how many were dropped since the last line), so
//! that a flood of drops cannot flood the log.

use crate::metrics::{add, Metrics};
use std::time::{Duration, Instant};
use tracing::warn;

/// Shortest time between two drop warnings of one connection.
pub(super) const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why a message was not delivered to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DropReason {
    /// The session's queue held `limits.max_queued_messages` (`slow_subscriber =
    /// "drop"`): a slow subscriber, or a resumed session's backlog.
    QueueFull,
    /// Larger than the client's MQTT 5 maximum packet size.
    Oversized,
    /// Held by a connection whose session another connection resumed before it ended
    /// (the new connection had already taken the session's saved state).
    TakenOver,
    /// Never forwarded by the router: the session fell behind the filter's log, or
    /// the message expired there (see `router_gaps`).
    RouterSkipped,
}

/// Every reason, in the order of [`DropReason::index`].
const REASONS: [DropReason; 4] = [
    DropReason::QueueFull,
    DropReason::Oversized,
    DropReason::TakenOver,
    DropReason::RouterSkipped,
];

impl DropReason {
    /// The reason's label in the metrics and the log.
    pub(super) fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Oversized => "oversized",
            DropReason::TakenOver => "taken_over",
            DropReason::RouterSkipped => "router_skipped",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One connection's drops not yet logged.
#[derive(Debug, Default)]
pub(super) struct DropLog {
    last_warning: Option<Instant>,
    unlogged: [u64; REASONS.len()],
}

impl DropLog {
    /// Counts one dropped message and logs the drops if the last line is old enough.
    pub(super) fn note(&mut self, metrics: &Metrics, client_id: &str, reason: DropReason) {
        self.note_many(metrics, client_id, reason, 1);
    }

    /// Counts `n` messages dropped for one reason, as [`DropLog::note`].
    pub(super) fn note_many(
        &mut self,
        metrics: &Metrics,
        client_id: &str,
        reason: DropReason,
        n: u64,
    ) {
        add(
            match reason {
                DropReason::QueueFull => &metrics.dropped_queue_full,
                DropReason::Oversized => &metrics.dropped_oversized,
                DropReason::TakenOver => &metrics.dropped_taken_over,
                DropReason::RouterSkipped => &metrics.dropped_router_skipped,
            },
            n,
        );
        if let Some(counts) = self.due(reason, n, Instant::now()) {
            for (reason, dropped) in counts {
                warn!(
                    client_id,
                    reason = reason.label(),
                    dropped,
                    "messages dropped for client"
                );
            }
        }
    }

    /// Records `n` drops at `now`; the counts to log, per reason, when a line is due.
    fn due(&mut self, reason: DropReason, n: u64, now: Instant) -> Option<Vec<(DropReason, u64)>> {
        self.unlogged[reason.index()] += n;
        if self
            .last_warning
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            return None;
        }
        self.last_warning = Some(now);
        let counts = REASONS
            .into_iter()
            .map(|r| (r, std::mem::take(&mut self.unlogged[r.index()])))
            .filter(|(_, n)| *n > 0)
            .collect();
        Some(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_logged_at_once_then_at_most_every_interval_with_their_count() {
        let mut log = DropLog::default();
        let t0 = Instant::now();
        assert_eq!(
            log.due(DropReason::Oversized, 1, t0),
            Some(vec![(DropReason::Oversized, 1)])
        );
        assert_eq!(
            log.due(DropReason::QueueFull, 1, t0 + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            log.due(DropReason::QueueFull, 1, t0 + Duration::from_secs(9)),
            None
        );
        assert_eq!(
            log.due(DropReason::Oversized, 1, t0 + Duration::from_secs(9)),
            None
        );
        assert_eq!(
            log.due(DropReason::QueueFull, 1, t0 + WARN_EVERY),
            Some(vec![(DropReason::QueueFull, 3), (DropReason::Oversized, 1)])
        );
    }
}
