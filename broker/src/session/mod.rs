//! Sessions beyond one network connection: the client id registry and session owners
//! (`registry`), the state a persistent session keeps while its client is away
//! (`saved`, where a durable store plugs in, with `index`, which finds the sessions a
//! message is stored for), and MQTT 5 session expiry and will delay (`timers`). Connections use this module; it uses only the router, the broker's own
//! link and the subscription table, never the connections' shared state.
//!
//! The router keeps a persistent session (subscriptions, messages queued for it) in its
//! graveyard until a connection with the same client id links with clean session, and
//! it knows nothing of expiry or delayed wills. So the edge decides when a session ends,
//! and ends it the only way the router's public API allows: by linking once with clean
//! session and releasing that link at once ([`Sessions::end_session`]).
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
//! (`check_owner`).

mod index;
mod registry;
mod saved;
mod timers;

pub use registry::ClientLock;
pub(crate) use registry::{check_owner, OwnerCheck, Will};
pub use saved::SavedSessions;
pub(crate) use saved::{new_origin, SavedSession};

use crate::acl::Identity;
use crate::marker::Mark;
use crate::router::{router_client_id, RouterHandle};
use crate::store::{unix_now, LoadedSession, Op, Store};
use crate::system::{message_will, will_message, SystemLink};
use registry::Registry;
use rumqttd::local::LinkRx;
use rumqttd::protocol::{Filter, Packet, Subscribe};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Generations of connections, unique across client ids; 0 is never used.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// How a new connection relates to the session state kept for its client id.
pub(crate) struct Started {
    /// This connection's generation.
    pub(crate) generation: u64,
    /// A will that was waiting for its delay and must now be published, because the
    /// new connection starts a new session (clean start) and so ended the old one.
    pub(crate) will_to_publish: Option<Will>,
    /// The owner before this connection and whether its session was kept, restored
    /// if it fails to link.
    previous: (Option<String>, bool),
    /// An older connection with this client id was still open (it is being taken over).
    pub(crate) took_over: bool,
}

impl Started {
    /// The session before this connection outlived its connection: the router may
    /// still keep it.
    pub(crate) fn kept_before(&self) -> bool {
        self.previous.1
    }
}

/// The home of sessions: every client id the edge tracks, the state persistent sessions
/// keep between connections, and what their timers need to end them.
pub struct Sessions {
    registry: Registry,
    saved: SavedSessions,
    router: RouterHandle,
    system: Arc<SystemLink>,
    shutdown: watch::Receiver<bool>,
    /// The durable store (keeps nothing without a data directory).
    store: Arc<Store>,
    /// Messages numbered below this one were numbered before the broker's listeners
    /// opened: messages kept for persistent sessions (which a session's connection
    /// delivers from the store) and restored retained messages (whose live copies the
    /// router queues for the restored sessions). A connection delivers such a message
    /// only if it is one kept for its own session ([`SavedSession::restored`]). 0 until
    /// set.
    replay_boundary: AtomicU64,
}

impl Sessions {
    /// Sessions that end through `router` and publish wills through `system`; timers
    /// stop when `shutdown` becomes true.
    pub(crate) fn new(
        router: RouterHandle,
        system: Arc<SystemLink>,
        shutdown: watch::Receiver<bool>,
        store: Arc<Store>,
    ) -> Sessions {
        Sessions {
            registry: Registry::default(),
            saved: SavedSessions::default(),
            router,
            system,
            shutdown,
            store,
            replay_boundary: AtomicU64::new(0),
        }
    }

    /// Waits for `client_id`'s lock (see the module documentation).
    pub(crate) async fn lock(&self, client_id: &str) -> ClientLock {
        self.registry.lock(client_id).await
    }

    /// Releases a client id's lock.
    pub(crate) fn unlock(&self, lock: ClientLock) {
        self.registry.unlock(lock)
    }

    /// Client ids currently tracked (open connections and kept sessions).
    pub fn tracked(&self) -> usize {
        self.registry.tracked()
    }

    /// Whether `identity` may have one more session that outlives its connection: false
    /// when the locked client id's session is not already one of its kept sessions and
    /// it holds `max` of them (`limits.max_sessions_per_identity`; 0: no limit).
    pub(crate) fn may_keep_another(
        &self,
        lock: &ClientLock,
        identity: &Identity,
        max: usize,
    ) -> bool {
        if max == 0 {
            return true;
        }
        let label = identity.label();
        let e = &*lock.entry;
        if e.kept && e.owner.as_deref() == Some(label.as_str()) {
            return true;
        }
        self.registry.kept_by(&label) < max
    }

    /// Registers a new connection of `identity` as the latest for its client id, and
    /// `identity` as the session's owner (the caller has checked it with
    /// [`check_owner`]). `resumes`: the client asked to continue the existing session
    /// (clean start / clean session 0), which cancels a will still waiting for its
    /// delay. `kept`: the session outlives the connection.
    pub(crate) fn start(
        &self,
        lock: &mut ClientLock,
        identity: &Identity,
        resumes: bool,
        kept: bool,
    ) -> Started {
        let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        let previous = (lock.entry.owner.clone(), lock.entry.kept);
        self.registry.set_owner(lock, Some(identity.label()), kept);
        let e = &mut *lock.entry;
        let took_over = e.connected;
        if let Some(take_over) = e.take_over.take() {
            // The older connection has no link, so no newer link ends it: this does.
            let _ = take_over.send(());
        }
        e.current = generation;
        e.connected = true;
        e.resumed = resumes;
        // Timers of older generations see the new generation and stop.
        e.timer = false;
        let pending = e.pending_will.take();
        Started {
            generation,
            will_to_publish: if resumes { None } else { pending },
            previous,
            took_over,
        }
    }

    /// The connection of `generation` is about to be without a router link: returns
    /// what tells it that a newer connection took over its client id, or `None` if one
    /// already has (the connection must end). See `connection::link`.
    pub(crate) fn unlinked(
        &self,
        lock: &mut ClientLock,
        generation: u64,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let e = &mut *lock.entry;
        if e.current != generation {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        e.take_over = Some(tx);
        Some(rx)
    }

    /// The connection of `generation` is about to link: from now on the router ends it
    /// when a newer one links. False if a newer connection already took over.
    pub(crate) fn linking(&self, lock: &mut ClientLock, generation: u64) -> bool {
        let e = &mut *lock.entry;
        if e.current != generation {
            return false;
        }
        e.take_over = None;
        true
    }

    /// A connection that failed to link: it never became a session, so the session (if
    /// any) still belongs to whoever owned it.
    pub(crate) fn abandon(&self, lock: &mut ClientLock, started: Started) {
        if lock.entry.current == started.generation {
            lock.entry.connected = false;
            let (owner, kept) = started.previous;
            self.registry.set_owner(lock, owner, kept);
        }
    }

    /// The state persistent sessions keep while their client is away.
    pub(crate) fn saved(&self) -> &SavedSessions {
        &self.saved
    }

    /// Keeps a persistent session's state for its next connection (and in the store,
    /// as a session with a connection open, without waiting).
    pub(crate) fn save(&self, client_id: &str, saved: SavedSession) {
        let ops = self.save_ops(client_id, saved);
        if !ops.is_empty() {
            self.store.send(ops);
        }
    }

    /// Keeps a persistent session's state for its next connection, and returns the
    /// writes that store it (none without a data directory), for a caller that must
    /// wait for them (a SUBACK goes out only once its subscription is stored).
    pub(crate) fn save_ops(&self, client_id: &str, saved: SavedSession) -> Vec<Op> {
        let mut ops = Vec::new();
        if self.store.is_durable() {
            // While a connection is open no will waits for its delay: one stored when
            // an earlier connection ended was published or cancelled since.
            let record = saved.record(true, 0, 0, None);
            ops.push(Op::Session(client_id.to_owned(), record));
            ops.push(Op::Will(client_id.to_owned(), None));
        }
        self.saved.save(client_id, saved);
        ops
    }

    /// Forgets the state saved for an older session with this client id (a new
    /// session replaces it).
    pub(crate) fn discard(&self, client_id: &str) {
        if self.saved.discard(client_id) && self.store.is_durable() {
            self.store.send(vec![Op::EndSession(client_id.to_owned())]);
        }
    }

    /// See the field's documentation.
    pub(crate) fn replay_boundary(&self) -> u64 {
        self.replay_boundary.load(Ordering::Relaxed)
    }

    /// After a restart: recreates each session read from the store in the router (its
    /// subscriptions) and in the edge (owner, subscription table, the messages it has
    /// yet to acknowledge, delayed will and expiry timers). The caller then calls
    /// [`Sessions::restored`]. The kept messages stay in the store, from which each
    /// session's next connection delivers them; those that may have been sent before
    /// the restart (stored while a connection of the session was open) go out with
    /// DUP.
    pub(crate) async fn restore(
        self: &Arc<Self>,
        sessions: Vec<LoadedSession>,
        due_wills: Vec<crate::store::StoredMessage>,
    ) -> Result<(), String> {
        for will in due_wills {
            self.system.publish_message(will).await;
        }
        let now = unix_now();
        let clock = Instant::now();
        let at = |unix: u64| clock + Duration::from_secs(unix.saturating_sub(now));
        // Each session's link to the router waits a round trip to the router thread:
        // one after the other, 10,000 sessions took 17-28 s (release build, loaded
        // machine) while clients waited. Many at a time, the router takes them in
        // batches.
        let mut links = tokio::task::JoinSet::new();
        for s in &sessions {
            if links.len() >= RESTORE_AT_ONCE {
                if let Some(done) = links.join_next().await {
                    done.map_err(|e| e.to_string())??;
                }
            }
            let filters: Vec<Filter> = s
                .record
                .subscriptions
                .iter()
                .map(|r| crate::topic::router_subscription(&r.filter, r.qos))
                .collect();
            links.spawn(restore_in_router(
                self.router.clone(),
                s.client_id.clone(),
                filters,
            ));
        }
        while let Some(done) = links.join_next().await {
            done.map_err(|e| e.to_string())??;
        }
        for s in sessions {
            let record = &s.record;
            let mut saved = SavedSession::from_record(record);
            // Sent before the crash: again with DUP, and with the packet id the client
            // saw where it is known (QoS 2).
            let sent: HashMap<u64, u16> = s.sent.iter().copied().collect();
            saved.unacknowledged = s
                .queue
                .iter()
                .filter(|&n| record.connected || *n < record.offline_since || sent.contains_key(n))
                .map(|&n| (n, sent.get(&n).copied().unwrap_or(0)))
                .collect();
            // The router knows nothing of these flows: the edge sends their PUBREL.
            saved.releasing = s.releasing.clone();
            saved.restored = s.queue.iter().copied().collect::<HashSet<u64>>();
            saved.awaiting_release = s.awaiting_release.clone();
            self.saved.save(&s.client_id, saved);
            let mut lock = self.registry.lock(&s.client_id).await;
            let has_will = s.will.is_some();
            let generation = restore_entry(&mut lock, s.will.map(message_will));
            self.registry
                .set_owner(&mut lock, Some(record.owner.clone()), true);
            let will_at = record.will_at.filter(|_| has_will).map(at);
            let expire_at = record.expires_at(now).map(at);
            if will_at.is_some() || expire_at.is_some() {
                lock.entry.timer = true;
                tokio::spawn(timers::timer(
                    self.clone(),
                    s.client_id.clone(),
                    generation,
                    will_at,
                    expire_at,
                ));
            }
            self.registry.unlock(lock);
        }
        Ok(())
    }

    /// Marks the end of the restore: messages numbered from now on are new.
    pub(crate) fn restored(&self) {
        self.replay_boundary
            .store(Mark::next_number(), Ordering::Relaxed);
    }
}

/// Sessions linked to the router at once while restoring.
const RESTORE_AT_ONCE: usize = 64;

/// Links a restored session's client id without clean session, subscribes its filters
/// and leaves, so that the router keeps the session and queues messages for it.
async fn restore_in_router(
    router: RouterHandle,
    client_id: String,
    filters: Vec<Filter>,
) -> Result<(), String> {
    let (mut slot, mut rx, _ack) = router
        .link_async(router_client_id(&client_id), false)
        .await
        .map_err(|e| format!("session {client_id:?}: {e}"))?;
    if !filters.is_empty() {
        let mut packets = VecDeque::from([Packet::Subscribe(Subscribe { pkid: 1, filters }, None)]);
        if !slot.send_batch(&mut packets).await || !wait_for_suback(&mut rx).await {
            return Err(format!(
                "session {client_id:?}: the router did not take its subscriptions"
            ));
        }
    }
    slot.release();
    Ok(())
}

/// Registers a session read from the store after a restart: disconnected, with its
/// delayed will (the caller sets its owner). Returns the generation its timer is for.
fn restore_entry(lock: &mut ClientLock, will: Option<Will>) -> u64 {
    let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
    let e = &mut *lock.entry;
    e.current = generation;
    e.connected = false;
    e.resumed = false;
    e.timer = false;
    e.pending_will = will;
    generation
}

/// Waits (a bounded time) for the router's SUBACK on a restore link.
async fn wait_for_suback(rx: &mut LinkRx) -> bool {
    let wait = async {
        loop {
            match rx.next().await {
                Ok(Some(n)) => {
                    if let Some(Packet::SubAck(..)) = Option::<Packet>::from(n) {
                        return true;
                    }
                }
                Ok(None) => {}
                Err(_) => return false,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or(false)
}

/// What a connection leaves behind when it ends.
pub(crate) struct Ending {
    /// The connection's generation (from [`Sessions::start`]).
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
    /// The QoS 1/2 messages the connection held for the client (see `queue`).
    pub(crate) held: Vec<crate::queue::Held>,
}

impl Sessions {
    /// Ends the session of the locked client id: publishes a will still waiting for its
    /// delay, then discards the router's state for it (subscriptions, queued messages,
    /// QoS 2 flows) by linking once with clean session. The caller must have released
    /// any router slot it holds for this id.
    ///
    /// Per-client state the edge keeps about a session is discarded here too.
    pub async fn end_session(&self, lock: &mut ClientLock) {
        // The store holds no more sessions than the edge does (it is read into it at
        // start): nothing to remove if the edge kept nothing.
        if self.saved.discard(&lock.client_id) && self.store.is_durable() {
            let end = vec![Op::EndSession(lock.client_id.clone())];
            if let Err(e) = self.store.write(end).await {
                warn!(client_id = %lock.client_id, error = %e, "ended session not removed from the store");
            }
        }
        self.registry.set_owner(lock, None, false);
        if let Some(will) = lock.entry.pending_will.take() {
            self.system.publish_will(will).await;
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
    ) -> Vec<crate::queue::Held> {
        let mut lock = self.registry.lock(client_id).await;
        // Released under the lock: the router sees this DISCONNECT before any later
        // link for the id (they share one ordered channel).
        slot.release();
        let e = &mut *lock.entry;
        if e.current != ending.generation {
            // Taken over. A resumed session keeps a delayed will unpublished (MQTT 5
            // §3.1.3.2.2); a new session (clean start) has ended this one.
            if let Some(will) = ending.will {
                if ending.will_delay == 0 || !e.resumed {
                    self.system.publish_will(will).await;
                }
            }
            // The connection that resumed the session read its saved state before
            // this one ended: what this one held is lost, and the caller counts it.
            let lost = if e.resumed { ending.held } else { Vec::new() };
            self.registry.unlock(lock);
            return lost;
        }
        e.connected = false;
        e.take_over = None;
        let shutting_down = *self.shutdown.borrow();
        match ending.expiry {
            Some(0) => {
                if let Some(will) = ending.will {
                    self.system.publish_will(will).await;
                }
                if ending.router_clean {
                    // The router kept nothing: nothing is owned any more.
                    self.registry.set_owner(&mut lock, None, false);
                } else {
                    self.end_session(&mut lock).await;
                }
            }
            expiry => {
                // Under the lock, so the next connection of the session finds them.
                self.saved.keep_held(client_id, ending.held);
                let now = Instant::now();
                let mut will_at = None;
                if let Some(will) = ending.will {
                    // With a store, a will still waiting at shutdown waits across the
                    // restart (it is stored below); without one it would be lost.
                    if ending.will_delay == 0 || (shutting_down && !self.store.is_durable()) {
                        self.system.publish_will(will).await;
                    } else {
                        e.pending_will = Some(will);
                        // A will due after the session ends goes out when it ends.
                        if expiry.is_none_or(|s| ending.will_delay < s) {
                            will_at = Some(now + Duration::from_secs(ending.will_delay.into()));
                        }
                    }
                }
                let expire_at = expiry.map(|s| now + Duration::from_secs(s.into()));
                if let (true, Some(saved)) = (self.store.is_durable(), self.saved.get(client_id)) {
                    let unix = unix_now();
                    let will_at_unix = will_at.map(|_| unix + u64::from(ending.will_delay));
                    let record = saved.record(false, unix, Mark::next_number(), will_at_unix);
                    let ops = vec![
                        Op::Session(client_id.to_owned(), record),
                        Op::Will(
                            client_id.to_owned(),
                            e.pending_will.as_ref().map(will_message),
                        ),
                    ];
                    if let Err(err) = self.store.write(ops).await {
                        warn!(client_id, error = %err, "session state not stored");
                    }
                }
                if (will_at.is_some() || expire_at.is_some()) && !shutting_down {
                    e.timer = true;
                    tokio::spawn(timers::timer(
                        self.clone(),
                        client_id.to_owned(),
                        ending.generation,
                        will_at,
                        expire_at,
                    ));
                }
            }
        }
        self.registry.unlock(lock);
        Vec::new()
    }
}
