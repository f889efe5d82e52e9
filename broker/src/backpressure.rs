//! Slowing the publishers for slow subscribers (`limits.slow_subscriber =
//! "backpressure"`).
//!
//! A session with `limits.max_queued_messages` or more waiting counts itself
//! here until it drains below; while any does, every connection stops reading at its
//! next QoS 1/2 PUBLISH (TCP then slows its client), except those that are over the
//! limit themselves (they must go on reading their own acknowledgements). QoS 0
//! publishes, acknowledgements and everything else are still read.
//!
//! Every publisher is held, not only those whose messages feed the slow session: the
//! router decides where a message goes only after the edge has read and handed it
//! over, so the edge cannot hold a PUBLISH back by destination without matching
//! every message against every slow session's filters, and a publisher's later
//! packets wait behind one it holds anyway. Messages already on their way when the
//! limit is reached are still held, so a queue may go somewhat beyond its limit.
//!
//! So one subscriber that never acknowledges stops every QoS 1/2 publisher: use this
//! mode only where the subscribers are trusted.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

/// Sessions over their queue limit, and the wake-up for the publishers they hold.
#[derive(Debug, Default)]
pub struct Backpressure {
    over: AtomicUsize,
    released: Notify,
}

impl Backpressure {
    /// Whether QoS 1/2 publishers are held now.
    pub fn active(&self) -> bool {
        self.over.load(Ordering::Acquire) > 0
    }

    /// A session went over its limit.
    pub fn enter(&self) {
        self.over.fetch_add(1, Ordering::AcqRel);
    }

    /// A session that was over its limit drained (or ended).
    pub fn leave(&self) {
        if self.over.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.released.notify_waiters();
        }
    }

    /// Completes when no session is over its limit.
    pub async fn released(&self) {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            // Registered before the check, so a `leave` in between is not missed.
            notified.as_mut().enable();
            if !self.active() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn publishers_are_released_when_the_last_session_drains() {
        let b = Arc::new(Backpressure::default());
        b.enter();
        b.enter();
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.released().await }
        });
        b.leave();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "released while one session is still over"
        );
        b.leave();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("not released")
            .unwrap();
        assert!(!b.active());
    }
}
