//! What an accepted connection holds (its MQTT state towards the client and the
//! router), and the small operations on it the other parts share: windows, the batch
//! for the router, counters, and saving a persistent session's state.

use super::drops::DropLog;
use super::ConnectionError;
use crate::acl::Identity;
use crate::codec::{kind, Version};
use crate::config::SlowSubscriber;
use crate::metrics::add;
use crate::queue::{Held, OutQueue};
use crate::router::RouterSlot;
use crate::session::{SavedSession, Will};
use crate::shared::Shared;
use crate::store::Op;
use crate::subscriptions::{Copies, Subscriptions};
use bytes::Bytes;
use rumqttd::local::LinkRx;
use rumqttd::protocol::{Packet, Publish, PublishProperties, SubscribeReasonCode};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tracing::warn;

thread_local! {
    /// An emptied queue of store operations, kept by each worker thread for the next
    /// connection that stores a batch there. Why: with `sync = "periodic"` the store
    /// takes a batch's operations out of the queue and leaves it empty (see
    /// `Store::submit`); a new one for every batch, of the largest recent batch's size
    /// (up to 100 operations of 120 bytes), was allocated and freed by glibc's slow path
    /// each time (docs/BENCHMARKS.md, session 18). Kept per thread rather than per
    /// connection, so that idle connections hold none.
    static SPARE_STORE_QUEUE: std::cell::Cell<Vec<crate::store::Op>> =
        const { std::cell::Cell::new(Vec::new()) };
}

/// A client's SUBSCRIBE waiting for the router's SUBACK (see `inbound::subscribe`).
#[derive(Debug)]
pub(super) struct PendingSubAck {
    /// The reason codes for the client, refused filters included.
    pub(super) codes: Vec<SubscribeReasonCode>,
    /// The retained messages the edge sends itself after the SUBACK, for the repeated
    /// filters (see `retained_index`), each with the filter's QoS.
    pub(super) retained: Vec<(Publish, Option<PublishProperties>, u8)>,
}

/// What an MQTT 5 client asked of the messages it receives (CONNECT properties).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ClientLimits {
    /// Receive maximum: unacknowledged QoS 1/2 PUBLISHes the client accepts.
    pub(super) receive_max: Option<u16>,
    /// Maximum packet size the client accepts; larger messages are skipped for it.
    pub(super) max_packet_size: Option<u32>,
    /// Topic aliases the client accepts from the broker.
    pub(super) topic_alias_max: u16,
}

/// Message counts of a connection not yet added to the shared [`crate::metrics`].
#[derive(Debug, Default)]
pub(super) struct Unreported {
    pub(super) messages_in: u64,
    pub(super) messages_out: u64,
}

/// State of an accepted connection.
pub(super) struct Connection {
    pub(super) shared: Arc<Shared>,
    pub(super) version: Version,
    pub(super) client_id: String,
    pub(super) identity: Identity,
    /// Keep-alive in force (the client's, or the server's when it overrides it).
    pub(super) keep_alive: u16,
    /// This connection's generation for its client id (see `session`).
    pub(super) generation: u64,
    /// Seconds the session outlives the connection; `None`: never expires. MQTT 5
    /// DISCONNECT may change it.
    pub(super) session_expiry: Option<u32>,
    /// The client asked for expiry 0 at CONNECT, so DISCONNECT may not raise it (MQTT 5
    /// §3.14.2.2.2; what the client asked, not what the broker granted).
    pub(super) expiry_zero_at_connect: bool,
    /// Linked with clean session: the router keeps nothing after the connection.
    pub(super) router_clean: bool,
    /// MQTT 5 will delay interval, in seconds.
    pub(super) will_delay: u32,
    /// The connection's router link: its sending half (no slot while it has none)...
    pub(super) slot: RouterSlot,
    /// ...and its receiving half, `None` while it has none (see `link`).
    pub(super) link_rx: Option<LinkRx>,
    /// While it has no link: fires when a newer connection takes over (see `link`).
    pub(super) take_over: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Where the router's acknowledgements of what it sent through the shared
    /// publishing link come (see `crate::publish_link`), while any are to come...
    pub(super) publish_acks: Option<Arc<crate::publish_link::Acks>>,
    /// ...and how many: its QoS 1/2 PUBLISHes sent there and not yet acknowledged.
    pub(super) published_unacked: usize,
    /// A batch went to the router, or a notification came from it, since the link's
    /// quiet time was last checked.
    pub(super) link_used: bool,
    pub(super) will: Option<Will>,
    pub(super) aliases: HashMap<u16, Bytes>,
    /// Packets for the router, sent as one batch per read or per notification batch.
    pub(super) to_router: VecDeque<Packet>,
    /// How many packets the last batch for the router had.
    pub(super) last_batch: usize,
    /// SUBACKs waiting for the router's, by packet id.
    pub(super) pending_subacks: HashMap<u16, PendingSubAck>,
    /// Client packet ids of QoS 2 publishes whose PUBREL has not come yet: routed ones,
    /// and on 3.1.1 denied ones (which has no refusal, so their flow is completed
    /// without delivery). The edge answers their PUBREL.
    pub(super) awaiting_release: HashSet<u16>,
    /// The client's QoS 1 publishes the router has not acknowledged yet.
    pub(super) inflight_in: usize,
    /// Packet ids of the client's QoS 2 publishes the router has not acknowledged yet.
    pub(super) qos2_in_router: HashSet<u16>,
    /// The QoS 1/2 messages the edge holds for the client (see `queue`).
    pub(super) queue: OutQueue,
    pub(super) clean_exit: bool,
    /// This session's origin id in the markers of its messages (for no local).
    pub(super) origin: u64,
    /// The client's subscriptions as the edge applies them.
    pub(super) subscriptions: Subscriptions,
    /// Messages the router sends several copies of (overlapping subscriptions).
    pub(super) copies: Copies,
    /// What the client accepts (MQTT 5 CONNECT properties).
    pub(super) limits: ClientLimits,
    /// Numbers of the messages of a resumed session's backlog that were delivered from
    /// the store (see `Connection::deliver_stored`): the router's copies are skipped.
    pub(super) from_store: HashSet<u64>,
    /// Messages sent before the restart and not acknowledged, which the store routed
    /// again, by number: they go out with DUP, and with the packet id the client saw
    /// where the store kept it (QoS 2; 0: not known).
    pub(super) redeliver: HashMap<u64, u16>,
    /// Topic aliases given to the client, by topic.
    pub(super) out_aliases: HashMap<Bytes, u16>,
    /// Messages dropped for the client, counted and logged (see `drops`).
    pub(super) drops: DropLog,
    /// Where each of the client's filters is in the router's log (see `router_gaps`).
    pub(super) gaps: crate::router_gaps::RouterGaps,
    /// Messages counted but not yet added to the shared metrics.
    pub(super) unreported: Unreported,
    /// Messages for persistent sessions, stored before the batch for the router that
    /// carries them is sent (so before their PUBACK/PUBREC).
    pub(super) to_store: Vec<crate::store::Op>,
    /// The client's acknowledgements of stored messages, for the store.
    pub(super) store_acks: Vec<crate::store::Op>,
    /// The client's last read held acknowledgements that a publisher's PUBACK may be
    /// waiting for (see `ReadSide::acknowledge_now`).
    pub(super) acknowledge_now: bool,
    /// See [`crate::session::SavedSession::restored`].
    pub(super) restored: HashSet<u64>,
    /// See `Sessions::replay_boundary`.
    pub(super) replay_boundary: u64,
    /// The sessions the last topic published to is stored for, with the topic and the
    /// version of the saved tables they were found at (see `SavedSessions::version`).
    pub(super) last_takers: Option<Box<Takers>>,
    /// Batches of QoS 1 messages sent to the router that do not count as stored yet
    /// (see `flush_router`): until they do, the router's acknowledgements of them (the
    /// client's PUBACKs) are not read.
    pub(super) unsettled: Vec<crate::store::Pending>,
}

/// The persistent sessions the messages on a topic are stored for, as found at a
/// version of the saved tables.
pub(super) struct Takers {
    pub(super) topic: Bytes,
    pub(super) version: u64,
    pub(super) clients: Arc<[String]>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.report_counts();
        self.leave_backpressure();
        let metrics = &self.shared.metrics;
        metrics
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if self.link_rx.is_some() {
            metrics
                .connections_linked
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Connection {
    /// The client's QoS 1/2 flows that count against `limits.max_inflight`. MQTT 5
    /// §4.9 counts a flow until PUBACK or PUBCOMP: QoS 1 publishes the router has not
    /// acknowledged yet (no PUBACK sent) and QoS 2 flows until their PUBREL, also those
    /// never routed (refused) or carried over by a resumed session. 3.1.1 has no
    /// receive maximum, and its clients may send their PUBRELs behind more PUBLISHes
    /// than that (rumqttc does), so for them only what awaits the router counts: their
    /// unreleased QoS 2 flows are bounded by the packet identifiers (65,535).
    pub(super) fn open_flows_in(&self) -> usize {
        match self.version {
            Version::V5 => self.inflight_in + self.awaiting_release.len(),
            Version::V4 => self.inflight_in + self.qos2_in_router.len(),
        }
    }

    /// The client has as many open flows as `limits.max_inflight` allows: its next QoS
    /// 1/2 PUBLISH waits (TCP backpressure) until one completes. Other packets (PUBREL
    /// in particular, which completes a flow) are still read.
    pub(super) fn inflight_full(&self) -> bool {
        self.open_flows_in() >= usize::from(self.shared.config.limits.max_inflight)
    }

    /// Reading is paused: a QoS 1/2 PUBLISH is next, and the window is full or a slow
    /// subscriber holds the publishers back.
    pub(super) fn paused(&self, rbuf: &[u8]) -> bool {
        (self.inflight_full() || self.held_back()) && starts_with_qos_publish(rbuf)
    }

    /// Keeps a persistent session's subscription table for its next connection. In
    /// the store it is written with the next batch for the router, so before the
    /// SUBACK or UNSUBACK that follows (a crash after it keeps the change).
    pub(super) fn save_subscriptions(&mut self) {
        let ops = self.save_session(Vec::new());
        self.to_store.extend(ops);
    }

    /// At the end of a persistent session's connection: keeps the restored messages
    /// the router has yet to send again, so that they still go out with DUP set (and
    /// their original packet ids where known).
    pub(super) fn save_unacknowledged(&self) {
        let ops = self.save_session(self.redeliver.iter().map(|(&n, &p)| (n, p)).collect());
        if !ops.is_empty() {
            self.shared.store.send(ops);
        }
    }

    /// What the connection holds for the client, for the session's next connection
    /// (nothing for a session that ends with its connection).
    pub(super) fn take_held(&mut self) -> Vec<Held> {
        self.leave_backpressure();
        let queue = std::mem::take(&mut self.queue);
        if self.session_expiry == Some(0) {
            return Vec::new();
        }
        queue.into_saved()
    }

    /// At most this many QoS 1/2 messages are sent to the client unacknowledged: its
    /// MQTT 5 receive maximum, and never more than `limits.max_inflight` (a window
    /// the size of the queue would put the queue into the socket).
    pub(super) fn window(&self) -> usize {
        let max = usize::from(self.shared.config.limits.max_inflight.max(1));
        self.limits
            .receive_max
            .map_or(max, |m| max.min(usize::from(m.max(1))))
    }

    /// Whether this connection holds its QoS 1/2 publishes back for a slow
    /// subscriber (never when its own queue is the one over the limit: it must go on
    /// reading its acknowledgements).
    pub(super) fn held_back(&self) -> bool {
        !self.queue.over && self.shared.backpressure.active()
    }

    /// With `slow_subscriber = "backpressure"`: counts the session in `backpressure`
    /// while `max_queued_messages` or more wait in its queue.
    pub(super) fn note_queue_level(&mut self) {
        let limits = &self.shared.config.limits;
        if limits.slow_subscriber != SlowSubscriber::Backpressure || limits.max_queued_messages == 0
        {
            return;
        }
        let over = self.queue.waiting() >= limits.max_queued_messages;
        if over != self.queue.over {
            self.queue.over = over;
            if over {
                self.shared.backpressure.enter();
            } else {
                self.shared.backpressure.leave();
            }
        }
    }

    fn leave_backpressure(&mut self) {
        if std::mem::take(&mut self.queue.over) {
            self.shared.backpressure.leave();
        }
    }

    /// Keeps the session's state in memory; returns the writes that store it.
    fn save_session(&self, unacknowledged: Vec<(u64, u16)>) -> Vec<crate::store::Op> {
        if self.session_expiry == Some(0) {
            return Vec::new();
        }
        self.shared.sessions.save_ops(
            &self.client_id,
            SavedSession {
                subscriptions: self.subscriptions.clone(),
                gaps: self.gaps.clone(),
                origin: self.origin,
                unacknowledged,
                // Flows restored after a restart are in the queue from the start.
                releasing: Vec::new(),
                awaiting_release: self.awaiting_release.iter().copied().collect(),
                owner: self.identity.label(),
                expiry: self.session_expiry,
                restored: self.restored.clone(),
                held: Vec::new(),
            },
        )
    }

    /// The session outlives the connection and the broker has a data directory: what
    /// the session must not lose goes to the store.
    pub(super) fn durable(&self) -> bool {
        self.session_expiry != Some(0) && self.shared.store.is_durable()
    }

    /// Writes the opening (or the end, at PUBREL) of an incoming QoS 2 flow with the
    /// next batch, which is stored before the PUBREC (or PUBCOMP) can go out: a flow
    /// a crash forgot would route the client's repeated PUBLISH again, and one it kept
    /// after its PUBREL would take the next message with that packet id for a repeat.
    pub(super) fn store_incoming(&mut self, pkid: u16, open: bool) {
        if self.durable() {
            self.store_later(crate::store::Op::Incoming {
                client_id: self.client_id.clone(),
                pkid,
                open,
            });
        }
    }

    /// MQTT 5 §4.9: with receive maximum flows open (no PUBACK/PUBCOMP sent yet), the
    /// next QoS 1/2 PUBLISH is a violation. Bytes buffered now were sent before the
    /// client could have seen an acknowledgement still to come, so a QoS 1/2 PUBLISH at
    /// the head of the buffer while the window is full is one. (3.1.1 has no receive
    /// maximum: its clients are only paused.)
    pub(super) fn receive_maximum_exceeded(&self, rbuf: &[u8]) -> bool {
        self.version == Version::V5 && self.inflight_full() && starts_with_qos_publish(rbuf)
    }

    /// Queues a packet for the router; [`Connection::flush_router`] sends the batch. (Not
    /// async, so that the packet handlers are not: an async fn moves its arguments,
    /// here 400-byte `Packet`s, into its future, which cost a third of the edge's time.)
    pub(super) fn send_router(&mut self, packet: Packet) {
        self.start_router_batch();
        self.to_router.push_back(packet);
    }

    /// How many entries a new batch's queue starts with: as many as the last batches
    /// for the router had packets (the largest of them, see `flush_router`). A batch
    /// hands its queue on (the router drops it once handled, see
    /// vendor/rumqttd/SEALPOST.md; with `sync = "always"` the store's writer keeps
    /// it), so every batch starts a new one (or the thread's spare, see
    /// `SPARE_STORE_QUEUE`), and one grown an entry at a time would move its
    /// 130-400-byte packets and operations again at every doubling.
    pub(super) fn batch_room(&self) -> usize {
        self.last_batch.max(1)
    }

    /// Makes room for a new batch for the router (see [`Connection::batch_room`]).
    pub(super) fn start_router_batch(&mut self) {
        if self.to_router.capacity() == 0 {
            self.to_router.reserve(self.batch_room());
        }
    }

    /// Queues an operation for the store, written before the batch for the router (see
    /// [`Connection::flush_router`]; the queue sized by [`Connection::batch_room`], or
    /// the spare one of the thread if it is large enough).
    pub(super) fn store_later(&mut self, op: crate::store::Op) {
        if self.to_store.capacity() == 0 {
            let room = self.batch_room();
            let spare = SPARE_STORE_QUEUE.take();
            if spare.capacity() >= room {
                self.to_store = spare;
            } else {
                self.to_store.reserve(room);
            }
        }
        self.to_store.push(op);
    }

    /// Adds the messages counted since the last batch to the shared metrics. (Once per
    /// batch: an atomic counter every connection increments for every message is a
    /// cache line that the worker threads keep taking from each other.)
    pub(super) fn report_counts(&mut self) {
        let metrics = &self.shared.metrics;
        for (counter, n) in [
            (&metrics.messages_in, &mut self.unreported.messages_in),
            (&metrics.messages_out, &mut self.unreported.messages_out),
        ] {
            if *n > 0 {
                add(counter, std::mem::take(n));
            }
        }
    }

    /// Sends the batch of packets for the router (and reports the batch's counts).
    pub(super) async fn flush_router(&mut self) -> Result<(), ConnectionError> {
        self.report_counts();
        let store = &self.shared.store;
        if !self.store_acks.is_empty() {
            self.acknowledge_now = store.settles_by_acknowledgements();
            store.send(std::mem::take(&mut self.store_acks));
        }
        // Acknowledged means stored: the router's acknowledgements, which become the
        // client's PUBACK/PUBREC, are read only once the batch is durable (or every
        // session it was stored for has it, see `store::settle`; the event loop reads
        // no notification while `unsettled` holds a batch); and what the client is sent
        // next (a packet id, a PUBREL) only once its record is.
        let mut stored = None;
        if !self.to_store.is_empty() {
            // A batch of QoS 1 messages only goes to the router before it is durable
            // (it went to the store's writer first, so the acknowledgements of their
            // sessions come after it): its sessions may acknowledge them before the
            // commit. A crash in between costs a duplicate, which QoS 1 allows. A QoS 2
            // flow, or anything else, is durable before the router sees it: a QoS 2
            // PUBLISH sent again after a crash must find its flow and not be routed
            // twice.
            let early = self
                .to_store
                .iter()
                .all(|op| matches!(op, Op::Enqueue { message, .. } if message.qos == 1));
            let pending = store
                .submit(&mut self.to_store)
                .map_err(ConnectionError::Storage)?;
            if self.to_store.capacity() > 0 {
                // Emptied, not kept: an idle connection holds no queue.
                debug_assert!(self.to_store.is_empty());
                SPARE_STORE_QUEUE.set(std::mem::take(&mut self.to_store));
            }
            if early {
                stored = Some(pending);
            } else {
                pending.wait().await.map_err(ConnectionError::Storage)?;
            }
        }
        if !self.to_router.is_empty() {
            // The largest recent batch, forgotten slowly: a client's batches come in
            // all sizes (however much of its window one read holds), and a queue
            // sized for a small one grows again at every doubling.
            self.last_batch = self.to_router.len().max(self.last_batch * 7 / 8);
            if self.link_rx.is_none() && !self.send_shared()? {
                // Boxed, as rare: inline, its state would make every batch's larger.
                Box::pin(self.link()).await?;
            }
            self.link_used = true;
        }
        if !self.slot.send_batch(&mut self.to_router).await {
            return Err(ConnectionError::RouterClosed);
        }
        // Not waited for here: meanwhile the connection reads on, and the next batch the
        // client has already sent goes to the store and the router too (with
        // `sync = "always"`, waiting here had each read's batch wait for the previous
        // one's subscribers to acknowledge it: the client's window of 100 messages
        // came in two or three reads, which took turns).
        if let Some(stored) = stored.filter(|s| !s.is_done()) {
            self.unsettled.push(stored);
        }
        Ok(())
    }

    /// Sends the batch for the router through the shared publishing link, if the
    /// connection is one that shares it (see `crate::publish_link`): a clean session
    /// without subscriptions, whose batch is one PUBLISH. False when it takes a link of
    /// its own instead (a link it reads only once what it sent through the shared one
    /// is acknowledged, see `event_loop`).
    fn send_shared(&mut self) -> Result<bool, ConnectionError> {
        let shares = self.router_clean
            && self.subscriptions.len() == 0
            && self.pending_subacks.is_empty()
            && self.to_router.len() == 1
            && matches!(self.to_router.front(), Some(Packet::Publish(..)));
        if !shares {
            return Ok(false);
        }
        let acks = self.publish_acks.get_or_insert_with(Default::default);
        match self.shared.publish_link.send(acks, &mut self.to_router) {
            Ok(sent) => {
                self.published_unacked += sent.unwrap_or(0);
                Ok(sent.is_some())
            }
            Err(e) => {
                warn!(client_id = %self.client_id, error = %e, "router link lost");
                Err(ConnectionError::RouterClosed)
            }
        }
    }
}

/// Whether the buffer starts with a QoS 1 or 2 PUBLISH (its first byte is enough).
fn starts_with_qos_publish(rbuf: &[u8]) -> bool {
    rbuf.first()
        .is_some_and(|&b| b >> 4 == kind::PUBLISH && (b >> 1) & 0b11 != 0)
}
