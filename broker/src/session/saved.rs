//! What a persistent session keeps of the edge's per-connection state while its client
//! is away, and where it is kept.
//!
//! This is the seam where a durable store plugs in: connections only `save`, `get`
//! and `discard` whole [`SavedSession`]s by client id, so a store behind these three
//! operations needs no change elsewhere.

use super::index::FilterIndex;
use crate::queue::Held;
use crate::store::{SessionRecord, SubscriptionRecord};
use crate::subscriptions::{Subscription, Subscriptions};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    saved: Mutex<Saved>,
    /// Changes whenever a session's table does (see [`SavedSessions::version`]).
    version: AtomicU64,
}

/// The sessions and the index of their filters, changed together.
#[derive(Debug, Default)]
struct Saved {
    sessions: HashMap<String, SavedSession>,
    index: FilterIndex,
    /// [`SavedSessions::takers`] by publishing session's origin and topic, for as long
    /// as no session's table changes: a publisher sends many messages on few topics.
    takers: HashMap<u64, HashMap<String, Arc<[String]>>>,
    /// Entries in `takers`, bounded by [`TAKERS_CACHED`].
    takers_cached: usize,
}

/// Topics whose takers are remembered at most (then the memo starts afresh).
const TAKERS_CACHED: usize = 4096;

impl Saved {
    /// A session's table changed: who takes a topic must be found again.
    fn forget_takers(&mut self) {
        self.takers.clear();
        self.takers_cached = 0;
    }

    /// Indexes (`add`) or unindexes the filters of `session`.
    fn index(&mut self, client: &str, session: &SavedSession, add: bool) {
        self.forget_takers();
        for (filter, _) in session.subscriptions.iter() {
            if add {
                self.index.insert(filter, client);
            } else {
                self.index.remove(filter, client);
            }
        }
    }
}

/// What a persistent session keeps of the edge's per-connection state.
#[derive(Debug, Clone, Default)]
pub(crate) struct SavedSession {
    pub subscriptions: Subscriptions,
    /// Where each filter is in the router's log, so that what the router skips while
    /// the session is away is counted at its next connection (see `router_gaps`).
    pub gaps: crate::router_gaps::RouterGaps,
    /// The session's origin id in message markers (no local spans reconnects).
    pub origin: u64,
    /// After a restart: the stored messages the router routes again that were sent
    /// before it, by number, with the packet id the client saw (0: not known; the
    /// store keeps it for QoS 2), to send them again with DUP and that id.
    pub unacknowledged: Vec<(u64, u16)>,
    /// After a restart: the client's packet ids of outgoing QoS 2 flows it received
    /// (PUBREC) and had not completed (PUBCOMP), restored from the store; the edge's
    /// queue sends their PUBREL again. (Without a restart the queue itself goes to
    /// the next connection, in `held`.)
    pub releasing: Vec<u16>,
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
            // The router starts afresh after a restart.
            gaps: Default::default(),
            origin: record.origin,
            unacknowledged: Vec::new(),
            releasing: Vec::new(),
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
        let mut saved = self.lock();
        // Options (QoS, no local) may have changed with the same filters.
        saved.forget_takers();
        // Unchanged filters (nearly always) stay indexed.
        let same = saved
            .sessions
            .get(client)
            .is_some_and(|old| same_filters(old, &session));
        if !same {
            if let Some(old) = saved.sessions.remove(client) {
                saved.index(client, &old, false);
            }
            saved.index(client, &session, true);
        }
        saved.sessions.insert(client.to_owned(), session);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Changes whenever a session's table does: [`SavedSessions::takers`] of a topic
    /// found at one version hold as long as it is unchanged. (A connection remembers
    /// its last topic's without taking the lock shared by every connection.)
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// A session's saved state.
    pub(crate) fn get(&self, client: &str) -> Option<SavedSession> {
        self.lock().sessions.get(client).cloned()
    }

    /// A session's saved state for a connection that resumes it, which takes the
    /// messages the last connection held (no other connection may send them too).
    pub(crate) fn resume(&self, client: &str) -> Option<SavedSession> {
        let mut saved = self.lock();
        let s = saved.sessions.get_mut(client)?;
        let held = std::mem::take(&mut s.held);
        let releasing = std::mem::take(&mut s.releasing);
        Some(SavedSession {
            held,
            releasing,
            ..s.clone()
        })
    }

    /// Keeps the messages a session's connection held when it ended.
    pub(crate) fn keep_held(&self, client: &str, held: Vec<Held>) {
        if let Some(s) = self.lock().sessions.get_mut(client) {
            s.held = held;
        }
    }

    /// Client ids of the sessions a QoS 1/2 message on `topic` from the session of
    /// `origin` reaches at QoS 1 or 2: those it must be stored for. The index names
    /// the sessions with a matching filter; their own tables decide (QoS, no local).
    pub(crate) fn takers(&self, topic: &str, origin: u64) -> Arc<[String]> {
        let mut saved = self.lock();
        if let Some(known) = saved.takers.get(&origin).and_then(|t| t.get(topic)) {
            return known.clone();
        }
        let mut candidates = HashSet::new();
        saved.index.candidates(topic, &mut candidates);
        let takers: Arc<[String]> = candidates
            .into_iter()
            .filter(|c| {
                saved
                    .sessions
                    .get(*c)
                    .is_some_and(|s| s.subscriptions.takes_qos1(topic, origin, s.origin))
            })
            .map(str::to_owned)
            .collect();
        if saved.takers_cached >= TAKERS_CACHED {
            saved.forget_takers();
        }
        saved.takers_cached += 1;
        saved
            .takers
            .entry(origin)
            .or_default()
            .insert(topic.to_owned(), takers.clone());
        takers
    }

    /// Forgets a session's state (the session ended); false if none was kept.
    pub(crate) fn discard(&self, client: &str) -> bool {
        let mut saved = self.lock();
        match saved.sessions.remove(client) {
            Some(old) => {
                saved.index(client, &old, false);
                self.version.fetch_add(1, Ordering::Release);
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Saved> {
        // The map holds plain data: a panic elsewhere cannot leave it inconsistent.
        self.saved.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether two states of a session have the same filters.
fn same_filters(a: &SavedSession, b: &SavedSession) -> bool {
    a.subscriptions.len() == b.subscriptions.len()
        && a.subscriptions
            .iter()
            .all(|(filter, _)| b.subscriptions.get(filter).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscriptions::Subscription;

    fn session(origin: u64, filter: &str, sub: Subscription) -> SavedSession {
        let mut s = SavedSession {
            origin,
            ..Default::default()
        };
        s.subscriptions.insert(filter.into(), sub);
        s
    }

    #[test]
    fn takers_follow_every_change_of_a_sessions_table() {
        let saved = SavedSessions::default();
        let takers = |topic| -> Vec<String> {
            let mut t = saved.takers(topic, 9).to_vec();
            t.sort();
            t
        };
        saved.save("a", session(1, "t/#", Subscription::plain(1)));
        assert_eq!(takers("t/1"), ["a"]);
        // The same filter at QoS 0: a takes no QoS 1 copy any more.
        saved.save("a", session(1, "t/#", Subscription::plain(0)));
        assert!(takers("t/1").is_empty());
        // No local, from its own origin: not for a either; from another one: for a.
        saved.save(
            "a",
            session(
                9,
                "t/#",
                Subscription {
                    no_local: true,
                    ..Subscription::plain(1)
                },
            ),
        );
        assert!(takers("t/1").is_empty());
        assert_eq!(saved.takers("t/1", 5).to_vec(), ["a"]);
        saved.save("b", session(2, "t/1", Subscription::plain(2)));
        assert_eq!(takers("t/1"), ["b"]);
        assert!(saved.discard("b"));
        assert!(takers("t/1").is_empty());
        assert!(takers("u/1").is_empty());
    }

    /// A connection reuses its last topic's takers while the version is unchanged: every
    /// change of a table changes it, and nothing else does.
    #[test]
    fn the_version_changes_with_every_table_and_only_then() {
        let saved = SavedSessions::default();
        let v0 = saved.version();
        saved.save("a", session(1, "t/#", Subscription::plain(1)));
        let v1 = saved.version();
        assert_ne!(v1, v0);
        let _ = saved.takers("t/1", 9);
        let _ = saved.get("a");
        assert_eq!(saved.version(), v1, "reading changes nothing");
        // The same filter with other options is a change too.
        saved.save("a", session(1, "t/#", Subscription::plain(0)));
        let v2 = saved.version();
        assert_ne!(v2, v1);
        assert!(saved.discard("a"));
        assert_ne!(saved.version(), v2);
        let v3 = saved.version();
        assert!(!saved.discard("a"));
        assert_eq!(saved.version(), v3, "nothing to discard: no change");
    }
}
