//! The connection's router link, which a connection that needs none of its own is
//! without while it is quiet.
//!
//! A router link costs memory in the router for as long as it exists (its queues, its
//! place in the router's tables: about 4 KiB, see vendor/rumqttd/SEALPOST.md), which is
//! as much as everything else an idle connection holds. Most IoT devices only publish,
//! and now and then. A clean-session connection that has not subscribed needs nothing
//! of what its link keeps between messages: the router sends it nothing, and the edge
//! keeps its will, its QoS 2 flows and its session state. So such a connection starts
//! without a link; a batch of one PUBLISH goes through the link such connections share
//! (`crate::publish_link`); it gets one of its own when it has more for the router at
//! once (in [`Connection::flush_router`]), and gives it back after
//! `limits.router_link_idle_ms` without any, provided nothing of its is on the way
//! through the router.
//!
//! Order: a connection's packets reach the router in the order it sent them, also
//! across a new link. Every link feeds the router's one ordered event channel, and the
//! old link's DISCONNECT goes into it (under the client id's lock) before the new
//! link's CONNECT.
//!
//! Taking over: the router ends a linked connection when a newer one with its client id
//! links, but it knows nothing of a connection without a link. While it has none, the
//! connection holds the receiving end of a signal in the client id's session entry,
//! which the newer connection fires ([`crate::session::Sessions::unlinked`]). A
//! connection that is being taken over never links again
//! ([`crate::session::Sessions::linking`]), so it cannot end its successor.

use super::state::Connection;
use super::ConnectionError;
use crate::metrics::inc;
use crate::router::{router_client_id, RouterSlot};
use rumqttd::local::LinkRx;
use rumqttd::Notification;
use std::sync::atomic::Ordering;
use tokio::sync::oneshot;
use tracing::warn;

impl Connection {
    /// Whether the connection may give its link back now: a clean session (the router
    /// keeps nothing for it), no subscription, and nothing of its in the router or on
    /// the way from it (no acknowledgement, SUBACK or message for it to come).
    pub(super) fn may_unlink(&self) -> bool {
        self.router_clean
            && self.link_rx.is_some()
            && self.subscriptions.len() == 0
            && self.pending_subacks.is_empty()
            && self.inflight_in == 0
            && self.qos2_in_router.is_empty()
            && self.to_router.is_empty()
            && self.queue.is_empty()
    }

    /// Gives the link back (see the module documentation). A connection that is being
    /// taken over keeps it: the router ends it.
    pub(super) async fn unlink(&mut self) {
        let sessions = &self.shared.sessions;
        let mut lock = sessions.lock(&self.client_id).await;
        if let Some(take_over) = sessions.unlinked(&mut lock, self.generation) {
            // Released under the lock: the router sees this DISCONNECT before a later
            // link for the client id.
            self.slot.release();
            self.link_rx = None;
            self.take_over = Some(take_over);
            self.shared
                .metrics
                .connections_linked
                .fetch_sub(1, Ordering::Relaxed);
        }
        sessions.unlock(lock);
    }

    /// Gets the connection a link of its own, before a batch for the router. Fails
    /// when a newer connection has taken over the client id meanwhile, or the router
    /// refuses.
    pub(super) async fn link(&mut self) -> Result<(), ConnectionError> {
        let sessions = &self.shared.sessions;
        let mut lock = sessions.lock(&self.client_id).await;
        if !sessions.linking(&mut lock, self.generation) {
            sessions.unlock(lock);
            return Err(ConnectionError::TakenOver);
        }
        // Clean session: the router keeps nothing for the client id, so its old
        // session (if any) is no concern here.
        let link = self
            .shared
            .router
            .link_async(router_client_id(&self.client_id), true)
            .await;
        sessions.unlock(lock);
        self.take_over = None;
        match link {
            Ok((slot, rx, _connack)) => {
                self.slot = slot;
                self.link_rx = Some(rx);
                inc(&self.shared.metrics.connections_linked);
                Ok(())
            }
            Err(e) => {
                warn!(client_id = %self.client_id, error = %e, "router refused a link for the connection's messages");
                self.slot = RouterSlot::unlinked();
                Err(ConnectionError::RouterClosed)
            }
        }
    }
}

/// The router dropped the link: the session was taken over or removed. (rumqttd's
/// own error is large, and the connection's loop keeps room for what it waits for.)
#[derive(Debug)]
pub(super) struct LinkClosed;

/// The next notification on the connection's link; never, while it has none.
pub(super) async fn next_notification(
    link_rx: &mut Option<LinkRx>,
) -> Result<Option<Notification>, LinkClosed> {
    match link_rx {
        Some(rx) => rx.next().await.map_err(|_| LinkClosed),
        None => std::future::pending().await,
    }
}

/// Completes when a newer connection takes over this one while it has no link; never
/// otherwise (the router ends a linked connection).
pub(super) async fn taken_over(take_over: &mut Option<oneshot::Receiver<()>>) {
    if let Some(rx) = take_over {
        if rx.await.is_ok() {
            return;
        }
        // A sender dropped without a word (the entry went) is no takeover.
        *take_over = None;
    }
    std::future::pending().await
}
