//! What a subscriber hands its application: messages, rejections and counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sealpost_protocol::Rejected;

/// A verified, decrypted message, delivered once: exactly what the protocol core opened.
pub type Message = sealpost_protocol::Opened;

/// A message (data or key message) that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The topic it arrived on.
    pub topic: String,
    /// Why it was refused.
    pub reason: Rejected,
}

/// A content key that could not be fetched from a KDC. The envelopes waiting for it stay
/// held (and are rejected as `UnknownKey` when their hold time ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFetchFailure {
    /// The KDC address.
    pub kdc: String,
    /// The publisher whose key was asked for.
    pub publisher: String,
    /// The epoch asked for.
    pub epoch: u64,
    /// Why it failed.
    pub error: crate::KdcError,
}

/// One thing that happened to an incoming message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Delivered.
    Message(Message),
    /// Refused (never delivered).
    Rejected(Rejection),
    /// A key fetch from a KDC failed (no message is delivered or refused by this event).
    KeyFetchFailed(KeyFetchFailure),
}

/// Running totals, readable at any time from any thread.
#[derive(Debug, Default)]
pub struct Counters {
    delivered: AtomicU64,
    key_messages: AtomicU64,
    key_fetches: AtomicU64,
    key_fetch_failures: AtomicU64,
    held: AtomicU64,
    revocation_list_failures: AtomicU64,
    sessions_lost: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counters {
    pub(crate) fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn key_message(&self) {
        self.key_messages.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn key_fetch_started(&self) {
        self.key_fetches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn key_fetch_failed(&self) {
        self.key_fetch_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn revocation_list_failure(&self) {
        self.revocation_list_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn session_lost(&self) {
        self.sessions_lost.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_held(&self, n: usize) {
        self.held.store(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self, reason: &Rejected) {
        let mut map = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(reason.kind()).or_default() += 1;
    }

    /// Messages delivered to the application.
    pub fn delivered_total(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Key messages accepted.
    pub fn key_messages_total(&self) -> u64 {
        self.key_messages.load(Ordering::Relaxed)
    }

    /// Key fetches from KDCs started (at most one per publisher and epoch, unless one
    /// failed and was tried again).
    pub fn key_fetches_total(&self) -> u64 {
        self.key_fetches.load(Ordering::Relaxed)
    }

    /// Key fetches from KDCs that failed.
    pub fn key_fetch_failures_total(&self) -> u64 {
        self.key_fetch_failures.load(Ordering::Relaxed)
    }

    /// Messages held right now, waiting for a key or publisher certificate.
    pub fn held_now(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Reloads of the revocation list that failed (unreadable, or not signed by the CA,
    /// or older than the list in force); the list in force was kept each time.
    pub fn revocation_list_failures_total(&self) -> u64 {
        self.revocation_list_failures.load(Ordering::Relaxed)
    }

    /// Reconnects after which the broker had not kept this subscriber's persistent
    /// session (CONNACK "session present" 0: a broker restarted without persistence, or
    /// a cluster that lost the session): what was published meanwhile did not wait for
    /// it, retained messages excepted. Always 0 without `persistent_session`.
    pub fn sessions_lost_total(&self) -> u64 {
        self.sessions_lost.load(Ordering::Relaxed)
    }

    /// Rejections by [`Rejected::kind`].
    pub fn rejected_by_kind(&self) -> BTreeMap<&'static str, u64> {
        self.rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// All rejections.
    pub fn rejected_total(&self) -> u64 {
        self.rejected_by_kind().values().sum()
    }
}
