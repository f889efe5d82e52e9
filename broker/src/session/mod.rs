//! Sessions beyond one network connection: the client id registry and session owners
//! (`registry`), the state a persistent session keeps while its client is away
//! (`saved`, where a durable store plugs in), and MQTT 5 session expiry and will delay
//! (`timers`). Connections use this module; it uses only the router, the broker's own
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
//! ([`check_owner`]).

mod registry;
mod saved;
mod timers;

pub use registry::ClientLock;
pub(crate) use registry::{check_owner, OwnerCheck, Will};
pub(crate) use saved::SavedSession;
pub use saved::SavedSessions;

use crate::acl::Identity;
use crate::router::{router_client_id, RouterHandle};
use crate::system::SystemLink;
use registry::Registry;
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
}

/// The home of sessions: every client id the edge tracks, the state persistent sessions
/// keep between connections, and what their timers need to end them.
pub struct Sessions {
    registry: Registry,
    saved: SavedSessions,
    router: RouterHandle,
    system: Arc<SystemLink>,
    shutdown: watch::Receiver<bool>,
}

impl Sessions {
    /// Sessions that end through `router` and publish wills through `system`; timers
    /// stop when `shutdown` becomes true.
    pub(crate) fn new(
        router: RouterHandle,
        system: Arc<SystemLink>,
        shutdown: watch::Receiver<bool>,
    ) -> Sessions {
        Sessions {
            registry: Registry::default(),
            saved: SavedSessions::default(),
            router,
            system,
            shutdown,
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
        }
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
}

impl Sessions {
    /// Ends the session of the locked client id: publishes a will still waiting for its
    /// delay, then discards the router's state for it (subscriptions, queued messages,
    /// QoS 2 flows) by linking once with clean session. The caller must have released
    /// any router slot it holds for this id.
    ///
    /// Per-client state the edge keeps about a session is discarded here too.
    pub async fn end_session(&self, lock: &mut ClientLock) {
        self.saved.discard(&lock.client_id);
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
    ) {
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
            self.registry.unlock(lock);
            return;
        }
        e.connected = false;
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
                let now = Instant::now();
                let mut will_at = None;
                if let Some(will) = ending.will {
                    if ending.will_delay == 0 || shutting_down {
                        self.system.publish_will(will).await;
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
    }
}
