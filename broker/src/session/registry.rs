//! The registry of client ids: one lock per client id, the generation of its latest
//! connection, and the identity that owns its session (see the module documentation
//! of `session`).

use crate::acl::Identity;
use rumqttd::protocol::{LastWill, LastWillProperties};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore};

/// A last will and its MQTT 5 properties, as the edge keeps it (boxed: most clients
/// have none, and every connection and client id entry would make room for one).
pub(crate) type Will = Box<(LastWill, Option<LastWillProperties>)>;

/// What the edge knows of one client id between and across its connections.
#[derive(Debug, Default)]
pub(crate) struct Entry {
    /// Generation of the latest connection with this client id.
    pub(super) current: u64,
    /// The latest connection is still open.
    pub(super) connected: bool,
    /// The latest connection resumed the existing session (clean start 0).
    pub(super) resumed: bool,
    /// A timer for the latest generation is pending (will delay or session expiry).
    pub(super) timer: bool,
    /// A will waiting for its delay.
    pub(super) pending_will: Option<Will>,
    /// Label of the identity whose session this is: set while a connection is open and
    /// while the router keeps the session after it; `None` when nothing is kept.
    /// Changed only through [`Registry::set_owner`], which keeps the count per identity.
    pub(super) owner: Option<String>,
    /// The session outlives its connection (session expiry not 0): it counts against
    /// its owner's `limits.max_sessions_per_identity`.
    pub(super) kept: bool,
    /// While the latest connection has no router link (see `Sessions::unlinked`): tells
    /// it that a newer connection took over its client id, which the router, knowing
    /// nothing of it, cannot.
    pub(super) take_over: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Entry {
    /// Nothing to remember: the entry can go (a later connection starts a new one).
    fn idle(&self) -> bool {
        !self.connected && !self.timer && self.pending_will.is_none() && self.owner.is_none()
    }
}

/// The client ids the edge is tracking: those with an open connection, a pending timer
/// or a session the router keeps. Others have no entry, so the map is bounded by
/// connections plus the sessions the router holds.
#[derive(Debug)]
pub struct Registry {
    entries: std::sync::Mutex<HashMap<String, Arc<Mutex<Entry>>>>,
    /// Links the expiry timers may hold at once: the router has a few slots beyond
    /// `max_connections` for the broker's own links, and a discard needs one briefly.
    /// (A connection that ends its own session has released its slot first.)
    pub(super) timer_links: Semaphore,
    /// Kept sessions per owner label (entries with `kept` set), for
    /// `limits.max_sessions_per_identity`. Only labels with at least one are present.
    kept_per_owner: std::sync::Mutex<HashMap<String, usize>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            entries: Default::default(),
            timer_links: Semaphore::new(4),
            kept_per_owner: Default::default(),
        }
    }
}

/// Holds one client id's lock; see the module documentation.
pub struct ClientLock {
    pub(super) client_id: String,
    pub(super) entry: OwnedMutexGuard<Entry>,
}

impl ClientLock {
    /// The client id this lock is for.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

impl Registry {
    /// Waits for `client_id`'s lock.
    pub(crate) async fn lock(&self, client_id: &str) -> ClientLock {
        let entry = {
            let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(client_id.to_owned()).or_default().clone()
        };
        ClientLock {
            client_id: client_id.to_owned(),
            entry: entry.lock_owned().await,
        }
    }

    /// Releases a lock, forgetting the client id if there is nothing left to remember
    /// and nobody else is waiting for it.
    pub(crate) fn unlock(&self, lock: ClientLock) {
        let ClientLock { client_id, entry } = lock;
        let idle = entry.idle();
        drop(entry);
        if !idle {
            return;
        }
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let forget = map.get(&client_id).is_some_and(|e| {
            // Only the map holds it (no waiter has a clone), and it is still idle.
            Arc::strong_count(e) == 1 && e.try_lock().is_ok_and(|e| e.idle())
        });
        if forget {
            map.remove(&client_id);
        }
    }

    /// Client ids currently tracked (open connections and kept sessions).
    pub fn tracked(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Sets the owner of the locked client id's session and whether the router keeps
    /// it, and counts kept sessions per owner.
    pub(super) fn set_owner(&self, lock: &mut ClientLock, owner: Option<String>, kept: bool) {
        let e = &mut *lock.entry;
        let mut counts = self
            .kept_per_owner
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let (true, Some(old)) = (e.kept, &e.owner) {
            if let Some(n) = counts.get_mut(old) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(old);
                }
            }
        }
        if let (true, Some(new)) = (kept, &owner) {
            *counts.entry(new.clone()).or_default() += 1;
        }
        e.owner = owner;
        e.kept = kept;
    }

    /// Sessions kept for the identity labelled `label`.
    pub(super) fn kept_by(&self, label: &str) -> usize {
        let counts = self
            .kept_per_owner
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        counts.get(label).copied().unwrap_or(0)
    }
}

/// What a client of `identity` may do with the session kept for its client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerCheck {
    /// No session, or the identity's own: MQTT's usual rules apply.
    Own,
    /// Another identity's session: the client must start a new session (clean start),
    /// which discards the other one.
    NewSession,
    /// Another identity's session: refused (CONNACK 0x05 / 0x87).
    Refused,
}

/// Checks a connecting `identity` against the owner of its client id's session.
/// Another identity is refused while the owner is connected (it must not be able to
/// close the owner's connection), and otherwise too unless `new_session_for_other`.
pub(crate) fn check_owner(
    lock: &ClientLock,
    identity: &Identity,
    new_session_for_other: bool,
) -> OwnerCheck {
    let e = &*lock.entry;
    match &e.owner {
        Some(owner) if *owner != identity.label() => {
            if e.connected || !new_session_for_other {
                OwnerCheck::Refused
            } else {
                OwnerCheck::NewSession
            }
        }
        _ => OwnerCheck::Own,
    }
}
