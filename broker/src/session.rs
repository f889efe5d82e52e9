//! Sessions beyond one network connection: MQTT 5 session expiry and will delay.
//!
//! The router keeps a persistent session (subscriptions, messages queued for it) in its
//! graveyard until a connection with the same client id links with clean session, and
//! it knows nothing of expiry or delayed wills. So the edge decides when a session ends,
//! and ends it the only way the router's public API allows: by linking once with clean
//! session and releasing that link at once ([`Shared::end_session`]).
//!
//! Every connection gets a generation, and the client id's `Entry` remembers the
//! latest. A timer (will delay, session expiry) acts only if the generation it was
//! started for is still the latest and disconnected, so a client that came back in the
//! meantime keeps its session. Every link operation for a client id (connect, end of
//! connection, discard) runs under that id's lock, so a discard can never overtake, and
//! take over, a newer connection in the router.
//!
//! A session belongs to the identity that created it ([`Identity::label`]: the kind of
//! credentials and the name, with a certificate's role). The router finds sessions by
//! client id alone, so the edge checks the owner before any link: a client of another
//! identity with the same client id never resumes the session (it would inherit the
//! subscriptions the ACL granted the owner, and the messages queued for it) and never
//! takes over the owner's open connection. It is refused, or, with
//! `session.new_session_for_other_identity`, gets a new session while the owner is away
//! ([`check_owner`]).

use crate::acl::Identity;
use crate::connection::router_client_id;
use crate::server::Shared;
use rumqttd::protocol::{LastWill, LastWillProperties};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn};

/// A last will and its MQTT 5 properties, as the edge keeps it.
pub(crate) type Will = (LastWill, Option<LastWillProperties>);

/// Generations of connections, unique across client ids; 0 is never used.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// What the edge knows of one client id between and across its connections.
#[derive(Debug, Default)]
pub(crate) struct Entry {
    /// Generation of the latest connection with this client id.
    current: u64,
    /// The latest connection is still open.
    connected: bool,
    /// The latest connection resumed the existing session (clean start 0).
    resumed: bool,
    /// A timer for the latest generation is pending (will delay or session expiry).
    timer: bool,
    /// A will waiting for its delay.
    pending_will: Option<Will>,
    /// Label of the identity whose session this is: set while a connection is open and
    /// while the router keeps the session after it; `None` when nothing is kept.
    owner: Option<String>,
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
pub struct Sessions {
    entries: std::sync::Mutex<HashMap<String, Arc<Mutex<Entry>>>>,
    /// Links the expiry timers may hold at once: the router has a few slots beyond
    /// `max_connections` for the broker's own links, and a discard needs one briefly.
    /// (A connection that ends its own session has released its slot first.)
    timer_links: Semaphore,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            entries: Default::default(),
            timer_links: Semaphore::new(4),
        }
    }
}

/// Holds one client id's lock; see the module documentation.
pub struct ClientLock {
    client_id: String,
    entry: OwnedMutexGuard<Entry>,
}

impl ClientLock {
    /// The client id this lock is for.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

impl Sessions {
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

/// How a new connection relates to the session state kept for its client id.
pub(crate) struct Started {
    /// This connection's generation.
    pub(crate) generation: u64,
    /// A will that was waiting for its delay and must now be published, because the
    /// new connection starts a new session (clean start) and so ended the old one.
    pub(crate) will_to_publish: Option<Will>,
    /// The owner before this connection, restored if it fails to link.
    previous_owner: Option<String>,
}

/// Registers a new connection of `identity` as the latest for its client id, and
/// `identity` as the session's owner (the caller has checked it with [`check_owner`]).
/// `resumes`: the client asked to continue the existing session (clean start / clean
/// session 0), which cancels a will still waiting for its delay.
pub(crate) fn start(lock: &mut ClientLock, identity: &Identity, resumes: bool) -> Started {
    let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
    let e = &mut *lock.entry;
    e.current = generation;
    e.connected = true;
    e.resumed = resumes;
    // Timers of older generations see the new generation and stop.
    e.timer = false;
    let previous_owner = e.owner.replace(identity.label());
    let pending = e.pending_will.take();
    Started {
        generation,
        will_to_publish: if resumes { None } else { pending },
        previous_owner,
    }
}

/// A connection that failed to link: it never became a session, so the session (if
/// any) still belongs to whoever owned it.
pub(crate) fn abandon(lock: &mut ClientLock, started: Started) {
    if lock.entry.current == started.generation {
        lock.entry.connected = false;
        lock.entry.owner = started.previous_owner;
    }
}

/// What a connection leaves behind when it ends.
pub(crate) struct Ending {
    /// The connection's generation (from [`start`]).
    pub(crate) generation: u64,
    /// Seconds the session outlives the connection; `None`: never expires (MQTT 5
    /// 0xFFFFFFFF, MQTT 3.1.1 clean session 0).
    pub(crate) expiry: Option<u32>,
    /// The router link was made with clean session, so the router keeps nothing.
    pub(crate) router_clean: bool,
    /// The will to publish (the connection did not end with a normal DISCONNECT).
    pub(crate) will: Option<Will>,
    /// MQTT 5 will delay interval in seconds.
    pub(crate) will_delay: u32,
}

impl Shared {
    /// Ends the session of the locked client id: publishes a will still waiting for its
    /// delay, then discards the router's state for it (subscriptions, queued messages,
    /// QoS 2 flows) by linking once with clean session. The caller must have released
    /// any router slot it holds for this id.
    ///
    /// Per-client state the edge keeps about a session is discarded here too.
    pub async fn end_session(&self, lock: &mut ClientLock) {
        self.saved_sessions.discard(&lock.client_id);
        lock.entry.owner = None;
        if let Some(will) = lock.entry.pending_will.take() {
            self.publish_will(will).await;
        }
        lock.entry.timer = false;
        match self
            .router
            .link_async(router_client_id(&lock.client_id), true)
            .await
        {
            Ok((mut slot, rx, _ack)) => {
                slot.release();
                drop(rx);
                debug!(client_id = %lock.client_id, "session ended");
            }
            Err(e) => {
                warn!(client_id = %lock.client_id, error = %e, "session could not be discarded")
            }
        }
    }

    /// Called when a connection has ended, with its router slot: releases the slot and
    /// then, unless a newer connection with the same client id took over, publishes the
    /// will now or schedules it, and ends the session now or schedules its expiry.
    pub(crate) async fn connection_ended(
        self: &Arc<Self>,
        client_id: &str,
        slot: &mut crate::router::RouterSlot,
        ending: Ending,
    ) {
        let mut lock = self.sessions.lock(client_id).await;
        // Released under the lock: the router sees this DISCONNECT before any later
        // link for the id (they share one ordered channel).
        slot.release();
        let e = &mut *lock.entry;
        if e.current != ending.generation {
            // Taken over. A resumed session keeps a delayed will unpublished (MQTT 5
            // §3.1.3.2.2); a new session (clean start) has ended this one.
            if let Some(will) = ending.will {
                if ending.will_delay == 0 || !e.resumed {
                    self.publish_will(will).await;
                }
            }
            self.sessions.unlock(lock);
            return;
        }
        e.connected = false;
        let shutting_down = *self.shutdown.borrow();
        match ending.expiry {
            Some(0) => {
                if let Some(will) = ending.will {
                    self.publish_will(will).await;
                }
                if ending.router_clean {
                    // The router kept nothing: nothing is owned any more.
                    e.owner = None;
                } else {
                    self.end_session(&mut lock).await;
                }
            }
            expiry => {
                let now = Instant::now();
                let mut will_at = None;
                if let Some(will) = ending.will {
                    if ending.will_delay == 0 || shutting_down {
                        self.publish_will(will).await;
                    } else {
                        e.pending_will = Some(will);
                        // A will due after the session ends goes out when it ends.
                        if expiry.map_or(true, |s| ending.will_delay < s) {
                            will_at = Some(now + Duration::from_secs(ending.will_delay.into()));
                        }
                    }
                }
                let expire_at = expiry.map(|s| now + Duration::from_secs(s.into()));
                if (will_at.is_some() || expire_at.is_some()) && !shutting_down {
                    e.timer = true;
                    tokio::spawn(timer(
                        self.clone(),
                        client_id.to_owned(),
                        ending.generation,
                        will_at,
                        expire_at,
                    ));
                }
            }
        }
        self.sessions.unlock(lock);
    }
}

/// Waits for a delayed will and then for session expiry, acting only while the
/// generation it was started for is still the latest and disconnected.
async fn timer(
    shared: Arc<Shared>,
    client_id: String,
    generation: u64,
    will_at: Option<Instant>,
    expire_at: Option<Instant>,
) {
    let mut shutdown = shared.shutdown.clone();
    let still_ours = |e: &Entry| e.current == generation && !e.connected && e.timer;
    if let Some(at) = will_at {
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let mut lock = shared.sessions.lock(&client_id).await;
        if !still_ours(&lock.entry) {
            shared.sessions.unlock(lock);
            return;
        }
        if let Some(will) = lock.entry.pending_will.take() {
            shared.publish_will(will).await;
        }
        if expire_at.is_none() {
            lock.entry.timer = false;
        }
        shared.sessions.unlock(lock);
    }
    let Some(at) = expire_at else {
        return;
    };
    tokio::select! {
        _ = tokio::time::sleep_until(at) => {}
        _ = shutdown.wait_for(|s| *s) => return,
    }
    let Ok(_permit) = shared.sessions.timer_links.acquire().await else {
        return;
    };
    let mut lock = shared.sessions.lock(&client_id).await;
    if still_ours(&lock.entry) {
        shared.end_session(&mut lock).await;
    }
    shared.sessions.unlock(lock);
}
