//! What a persistent session keeps of the edge's per-connection state while its client
//! is away, and where it is kept.
//!
//! This is the seam where a durable store plugs in: connections only `save`, `get`
//! and `discard` whole [`SavedSession`]s by client id, so a store behind these three
//! operations needs no change elsewhere.

use crate::queue::Held;
use crate::store::{SessionRecord, SubscriptionRecord};
use crate::subscriptions::{Subscription, Subscriptions};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Origin ids of sessions (see `marker`); 0 is the broker's own.
static NEXT_ORIGIN: AtomicU64 = AtomicU64::new(1);

/// The origin id of a new session.
pub(crate) fn new_origin() -> u64 {
    NEXT_ORIGIN.fetch_add(1, Ordering::Relaxed)
}

/// New origin ids go on above those of sessions restored from the store.
fn resume_origins(above: u64) {
    NEXT_ORIGIN.fetch_max(above.saturating_add(1), Ordering::Relaxed);
}

/// Subscription tables of persistent sessions, by client id, so that a resumed session
/// keeps its options and identifiers. Saved on every change (not when the connection
/// ends), so that a connection taking over a session finds its table current.
#[derive(Debug, Default)]
pub struct SavedSessions {
    saved: Mutex<HashMap<String, SavedSession>>,
}

/// What a persistent session keeps of the edge's per-connection state.
#[derive(Debug, Clone, Default)]
pub(crate) struct SavedSession {
    pub subscriptions: Subscriptions,
    /// The session's origin id in message markers (no local spans reconnects).
    pub origin: u64,
    /// Numbers of messages sent and not acknowledged when the last connection ended.
    pub unacknowledged: Vec<u64>,
    /// The client's packet ids of routed QoS 2 messages whose PUBREL has not come (in
    /// the store, each is written when it opens and when it closes: `Op::Incoming`).
    pub awaiting_release: Vec<u16>,
    /// Label of the identity that owns the session (kept in the durable store).
    pub owner: String,
    /// Seconds the session outlives its connection; `None`: never.
    pub expiry: Option<u32>,
    /// After a restart: numbers of the stored messages the session had yet to
    /// acknowledge, which the broker routed again at start. Other messages numbered
    /// before the restart that the router sends it live are not for it (see
    /// `Sessions::replay_boundary`).
    pub restored: HashSet<u64>,
    /// The QoS 1/2 messages the last connection held for the client, sent and not
    /// acknowledged or not sent yet (see `queue`), for the next connection.
    pub held: Vec<Held>,
}

impl SavedSession {
    /// The durable form: `connected` while a connection is open; otherwise ended at
    /// `disconnected_at` with messages from `offline_since` on stored while away.
    pub(crate) fn record(
        &self,
        connected: bool,
        disconnected_at: u64,
        offline_since: u64,
        will_at: Option<u64>,
    ) -> SessionRecord {
        let mut subscriptions: Vec<SubscriptionRecord> = self
            .subscriptions
            .iter()
            .map(|(filter, s)| SubscriptionRecord {
                filter: filter.clone(),
                qos: s.qos,
                no_local: s.no_local,
                retain_as_published: s.retain_as_published,
                suppress_retained: s.suppress_retained,
                id: s.id.map(|i| i as u64),
            })
            .collect();
        subscriptions.sort_by(|a, b| a.filter.cmp(&b.filter));
        SessionRecord {
            owner: self.owner.clone(),
            origin: self.origin,
            expiry: self.expiry,
            connected,
            disconnected_at,
            offline_since,
            subscriptions,
            will_at,
        }
    }

    /// The session as read back from `record` after a restart.
    pub(crate) fn from_record(record: &SessionRecord) -> SavedSession {
        resume_origins(record.origin);
        let mut subscriptions = Subscriptions::default();
        for r in &record.subscriptions {
            let mut s = Subscription::plain(r.qos.min(2));
            s.no_local = r.no_local;
            s.retain_as_published = r.retain_as_published;
            s.suppress_retained = r.suppress_retained;
            s.id = r.id.and_then(|i| usize::try_from(i).ok());
            subscriptions.insert(r.filter.clone(), s);
        }
        SavedSession {
            subscriptions,
            origin: record.origin,
            unacknowledged: Vec::new(),
            awaiting_release: Vec::new(),
            owner: record.owner.clone(),
            expiry: record.expiry,
            restored: HashSet::new(),
            held: Vec::new(),
        }
    }
}

impl SavedSessions {
    /// Keeps a session's state for its next connection.
    pub(crate) fn save(&self, client: &str, session: SavedSession) {
        self.lock().insert(client.to_owned(), session);
    }

    /// A session's saved state.
    pub(crate) fn get(&self, client: &str) -> Option<SavedSession> {
        self.lock().get(client).cloned()
    }

    /// A session's saved state for a connection that resumes it, which takes the
    /// messages the last connection held (no other connection may send them too).
    pub(crate) fn resume(&self, client: &str) -> Option<SavedSession> {
        let mut saved = self.lock();
        let s = saved.get_mut(client)?;
        let held = std::mem::take(&mut s.held);
        Some(SavedSession { held, ..s.clone() })
    }

    /// Keeps the messages a session's connection held when it ended.
    pub(crate) fn keep_held(&self, client: &str, held: Vec<Held>) {
        if let Some(s) = self.lock().get_mut(client) {
            s.held = held;
        }
    }

    /// Client ids of the sessions a QoS 1/2 message on `topic` from the session of
    /// `origin` reaches at QoS 1 or 2: those it must be stored for.
    pub(crate) fn takers(&self, topic: &str, origin: u64) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, s)| s.subscriptions.takes_qos1(topic, origin, s.origin))
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Forgets a session's state (the session ended); false if none was kept.
    pub(crate) fn discard(&self, client: &str) -> bool {
        self.lock().remove(client).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SavedSession>> {
        // The map holds plain data: a panic elsewhere cannot leave it inconsistent.
        self.saved.lock().unwrap_or_else(|e| e.into_inner())
    }
}
