//! Delivery to the client: notifications from the router become PUBLISHes (QoS
//! downgraded, subscription identifiers and topic aliases applied, skipped when the
//! client may not read them or cannot take them), QoS 1/2 ones through the session's
//! queue (see `queue`), and the router's acknowledgements of the client's own
//! messages become its PUBACK/PUBREC.

use super::drops::DropReason;
use super::event_loop::{Stop, ROUTER_BATCH};
use super::io::{queue, queue_disconnect};
use super::link::LinkClosed;
use super::state::Connection;
use super::ConnectionError;
use crate::codec::{self, kind, Version};
use crate::config::SlowSubscriber;
use crate::marker::{self, Mark};
use crate::queue::{pkid_offset, write_pkid, Held, Offer};
use crate::subscriptions::{Copy, Decision};
use bytes::{Bytes, BytesMut};
use rumqttd::protocol::{
    DisconnectReasonCode, Packet, PubAck, PubAckProperties, PubAckReason, Publish,
    PublishProperties, SubAck,
};
use rumqttd::Notification;
use std::collections::{HashMap, HashSet, VecDeque};
use tracing::{debug, warn};

/// Bytes for the client written at once at most while draining notifications.
pub(super) const WRITE_BATCH: usize = 64 * 1024;

impl Connection {
    /// Handles `first` and then the notifications already buffered, so that writes are
    /// batched. Every notification is taken, whatever the client's window: what does
    /// not fit waits in the session's queue, not in the router. Not async, and each
    /// notification handled where the link keeps it: an async loop, or taking them one
    /// by one, would move each 250-byte notification several times.
    pub(super) fn notifications(
        &mut self,
        wbuf: &mut BytesMut,
        first: Option<Result<Option<Notification>, LinkClosed>>,
        unscheduled: &mut bool,
    ) -> Stop {
        match first {
            Some(Ok(Some(mut notification))) => {
                if self.outgoing(wbuf, &mut notification, unscheduled) {
                    return Stop::Closed;
                }
            }
            Some(Ok(None)) | None => {}
            Some(Err(LinkClosed)) => return self.link_dropped(wbuf),
        }
        if self.batch_full(wbuf) {
            return Stop::Full;
        }
        // (Out of `self` while its notifications are handled, which need `self`.)
        let Some(mut link_rx) = self.link_rx.take() else {
            return Stop::Drained;
        };
        let mut stop = Stop::Drained;
        let ready = link_rx.for_each_ready(|notification| {
            if self.outgoing(wbuf, notification, unscheduled) {
                stop = Stop::Closed;
            } else if self.batch_full(wbuf) {
                stop = Stop::Full;
            }
            stop == Stop::Drained
        });
        self.link_rx = Some(link_rx);
        match ready {
            Ok(()) => stop,
            Err(_) => self.link_dropped(wbuf),
        }
    }

    /// Whether the batch for the client or for the router is as large as one gets.
    fn batch_full(&self, wbuf: &BytesMut) -> bool {
        wbuf.len() > WRITE_BATCH || self.to_router.len() >= ROUTER_BATCH
    }

    /// The router dropped our outgoing channel: the session was taken over or removed.
    /// Its id may already be reused.
    fn link_dropped(&mut self, wbuf: &mut BytesMut) -> Stop {
        self.slot.forget();
        if self.version == Version::V5 {
            queue_disconnect(wbuf, DisconnectReasonCode::SessionTakenOver);
        }
        Stop::Closed
    }

    /// Handles one notification from the router. Returns true when the router closed
    /// the connection.
    pub(super) fn outgoing(
        &mut self,
        wbuf: &mut BytesMut,
        notification: &mut Notification,
        unscheduled: &mut bool,
    ) -> bool {
        let v = self.version;
        let other = match notification {
            Notification::Forward(forward) => {
                self.deliver(wbuf, forward, None);
                return false;
            }
            // The others (fewer) are taken out, a placeholder left in their place.
            other => std::mem::replace(other, Notification::Unschedule),
        };
        match other {
            Notification::DeviceAck(ack) => {
                match Option::<Packet>::from(Notification::DeviceAck(ack)) {
                    Some(Packet::PubAck(a, p)) => self.routed(wbuf, a, p),
                    // (No PUBREC or PUBCOMP comes for the client's own messages: the
                    // edge hands QoS 2 to the router as QoS 1, see `incoming`.)
                    // The router's QoS 2 flows end at the edge (see `acks`), also one
                    // it resends for a persistent session's earlier connection.
                    Some(Packet::PubRel(r, _)) => self.complete_router(r.pkid),
                    Some(Packet::SubAck(ack, _)) => {
                        if let Some(pending) = self.pending_subacks.remove(&ack.pkid) {
                            if self.pending_subacks.is_empty() {
                                // Nothing kept grown by a SUBSCRIBE long past.
                                self.pending_subacks = HashMap::new();
                            }
                            queue(
                                wbuf,
                                Packet::SubAck(
                                    SubAck {
                                        pkid: ack.pkid,
                                        return_codes: pending.codes,
                                    },
                                    None,
                                ),
                                v,
                            );
                            // A repeated subscription's retained messages, after its
                            // SUBACK as the router sends a new one's.
                            for (publish, properties, qos) in pending.retained {
                                self.deliver_own(wbuf, publish, properties, qos);
                            }
                        }
                    }
                    // UNSUBACK and PINGRESP are answered by the edge itself.
                    _ => {}
                }
            }
            Notification::Unschedule => *unscheduled = true,
            Notification::Disconnect(d, _) => {
                self.slot.forget();
                if v == Version::V5 {
                    queue_disconnect(wbuf, d.reason_code);
                }
                return true;
            }
            other => debug!(?other, "ignored router notification"),
        }
        false
    }

    /// The router took the client's QoS 1/2 PUBLISH with packet id `a.pkid` (its
    /// acknowledgement came through the connection's link or the shared publishing
    /// one): the client gets its PUBACK, or PUBREC for QoS 2.
    pub(super) fn routed(&mut self, wbuf: &mut BytesMut, a: PubAck, p: Option<PubAckProperties>) {
        // (Looked up only when there are any: a hash per PUBACK otherwise, as the set
        // hashes before it looks.)
        if !self.qos2_in_router.is_empty() && self.qos2_in_router.remove(&a.pkid) {
            // A QoS 2 publish the router took as QoS 1 (see `incoming`): its flow stays
            // open until PUBREL.
            wbuf.extend_from_slice(&codec::success_ack(kind::PUBREC, a.pkid));
            return;
        }
        self.inflight_in = self.inflight_in.saturating_sub(1);
        if p.is_none() && a.reason == PubAckReason::Success {
            wbuf.extend_from_slice(&codec::success_ack(kind::PUBACK, a.pkid));
        } else {
            queue(wbuf, Packet::PubAck(a, p), self.version);
        }
    }

    /// At the start of a resumed persistent session's connection (with a data
    /// directory): the messages the store holds for it, delivered from there, oldest
    /// first. The router has them too, in each filter's log, but a session that was away
    /// while more was published than the log keeps (`[router]` segments) would miss the
    /// oldest: rumqttd skips them without a word. The router's copies are skipped
    /// (`from_store`). Messages held from the last connection are already queued.
    pub(super) async fn deliver_stored(
        &mut self,
        wbuf: &mut BytesMut,
    ) -> Result<(), ConnectionError> {
        if !self.durable() || self.subscriptions.len() == 0 {
            return Ok(());
        }
        let stored = self
            .shared
            .store
            .queued_for(&self.client_id)
            .await
            .map_err(ConnectionError::Storage)?;
        let held: HashSet<u64> = self.queue.numbers().collect();
        for (number, m) in stored {
            if held.contains(&number) {
                continue;
            }
            let qos = std::str::from_utf8(&m.topic)
                .ok()
                .and_then(|topic| self.subscriptions.max_qos(topic));
            let Some(qos) = qos else {
                // No longer subscribed to: the session does not need it any more.
                self.unstore(number);
                continue;
            };
            self.from_store.insert(number);
            // Routed as the router would deliver it: marked, RETAIN in the marker only.
            let mut routed = VecDeque::with_capacity(1);
            let mark = Mark::kept(m.qos, m.retain, m.origin, number);
            let publish = Publish::new(m.topic, m.payload, false);
            marker::route(publish, m.properties.map(|p| *p), mark, None, &mut routed);
            if let Some(Packet::Publish(publish, properties)) = routed.pop_back() {
                self.deliver_own(wbuf, publish, properties, qos);
            }
        }
        Ok(())
    }

    /// Delivers a message the edge sends itself, as the router would forward it at `qos`
    /// (see `deliver`).
    fn deliver_own(
        &mut self,
        wbuf: &mut BytesMut,
        publish: Publish,
        properties: Option<PublishProperties>,
        qos: u8,
    ) {
        let mut forward = rumqttd::Forward {
            cursor: None,
            size: 0,
            publish,
            properties,
            subscription_id: None,
        };
        self.deliver(wbuf, &mut forward, Some(qos));
    }

    /// Delivers (or skips) one message: forwarded by the router, or one the edge sends
    /// itself (`edge_qos`: the QoS the router would send it with), a repeated
    /// subscription's retained message or one from the store, which the router does not
    /// know it sent and so must not be acknowledged to it.
    fn deliver(
        &mut self,
        wbuf: &mut BytesMut,
        forward: &mut rumqttd::Forward,
        edge_qos: Option<u8>,
    ) {
        let v = self.version;
        let publish = &mut forward.publish;
        // The router sets RETAIN only on retained messages sent at subscribe.
        let at_subscribe = publish.retain;
        let props = &mut forward.properties;
        self.count_router_gap(forward.subscription_id, forward.cursor, &publish.topic);
        let mark = Mark::take(&mut publish.payload);
        if mark.is_some_and(|m| m.properties) {
            // The properties travelled in the payload (see `marker`).
            *props = marker::take_properties(&mut publish.payload, props.take());
        }
        // The subscriptions' decision may need the topic after `publish` is encoded.
        // (Cloning a `Bytes` costs an atomic increment on a buffer other threads share:
        // only done when needed.)
        let topic = if self.subscriptions.needs_topic() {
            publish.topic.clone()
        } else {
            Bytes::new()
        };
        // Checked per delivery, live and retained alike (a prefix compare for all but
        // key-message topics).
        let readable = self.shared.acl.may_read(&self.identity, &publish.topic);
        // Encoded as it came (rumqttd keeps the QoS and packet id of a `Publish`
        // private: they are read back from the encoded bytes), and again below with the
        // properties the edge sets, if any.
        let rewrite = self.limits.topic_alias_max > 0 || self.subscriptions.has_identifiers();
        let start = wbuf.len();
        if let Err(e) = codec::encode_publish(publish, props, v, wbuf) {
            warn!(error = %e, "cannot encode forwarded publish");
            wbuf.truncate(start);
            return;
        }
        let Some(h) = codec::publish_header(&wbuf[start..]) else {
            wbuf.truncate(start);
            return;
        };
        let Some(mark) = mark else {
            // A retained message's deletion (see `marker`): not for clients.
            wbuf.truncate(start);
            return self.skip(h);
        };
        if edge_qos.is_none() && !at_subscribe && self.from_store.contains(&mark.message) {
            // Delivered from the store already (see `deliver_stored`).
            wbuf.truncate(start);
            return self.skip(h);
        }
        if !readable {
            // Another reader's key message (see `Acl::may_read`): this client's
            // subscription matched it, but it is not for this client.
            wbuf.truncate(start);
            self.unstore(mark.message);
            return self.skip(h);
        }
        if !at_subscribe
            && mark.message < self.replay_boundary
            && !self.restored.contains(&mark.message)
        {
            // Routed at start for another session (or a restored retained message's
            // live copy): not for this one (see `Sessions::replay_boundary`).
            wbuf.truncate(start);
            return self.skip(h);
        }
        // The QoS the router would have sent it with (the edge's own messages are
        // encoded at QoS 0, their header says nothing, and need no acknowledgement).
        let router_qos = edge_qos.unwrap_or(h.qos);
        let copy = Copy {
            // The edge sends one copy of its own messages, whatever the filters that
            // match: none to wait for (number 0 is never deduplicated).
            message: if edge_qos.is_some() { 0 } else { mark.message },
            at_subscribe,
            own: mark.origin == self.origin,
            retained: mark.retain,
            router_qos,
        };
        let (max_qos, retain, ids) = match self.subscriptions.decide(&topic, copy, &mut self.copies)
        {
            Decision::Skip => {
                wbuf.truncate(start);
                return self.skip(h);
            }
            Decision::Deliver {
                max_qos,
                retain,
                ids,
            } => (max_qos, retain, ids),
        };
        let delivery = mark.qos.min(router_qos).min(max_qos);
        // A topic alias only on a message that goes out now: one that waits in the
        // queue may be overtaken (QoS 0) or dropped, and a kept session's messages may
        // be sent again on a later connection, where the aliases are gone.
        let aliases = self.limits.topic_alias_max > 0
            && self.session_expiry == Some(0)
            && (delivery == 0 || self.queue.sends_now(self.window()));
        if rewrite {
            // Subscription identifiers are the edge's (the router never sees them), and
            // topic aliases are given per topic here.
            let mut p = props.take().unwrap_or_default();
            p.subscription_identifiers = ids;
            p.topic_alias = None;
            let mut new_alias = None;
            if aliases {
                match self.out_aliases.get(&publish.topic) {
                    Some(&a) => {
                        p.topic_alias = Some(a);
                        publish.topic = Bytes::new();
                    }
                    None if self.out_aliases.len() < usize::from(self.limits.topic_alias_max) => {
                        let a = self.out_aliases.len() as u16 + 1;
                        p.topic_alias = Some(a);
                        new_alias = Some((publish.topic.clone(), a));
                    }
                    None => {}
                }
            }
            let p = (!no_properties(&p)).then_some(p);
            wbuf.truncate(start);
            if let Err(e) = codec::encode_publish(publish, &p, v, wbuf) {
                warn!(error = %e, "cannot encode forwarded publish");
                wbuf.truncate(start);
                return self.skip(h);
            }
            if let Some((topic, a)) = new_alias {
                // Only an alias the client has seen with its topic may be used again.
                if self.fits(wbuf.len() - start) {
                    self.out_aliases.insert(topic, a);
                }
            }
        }
        if !self.fits(wbuf.len() - start) {
            // MQTT 5 §3.1.2.11.4: a message larger than the client's maximum packet size
            // is discarded for that client, as if delivered.
            wbuf.truncate(start);
            self.drops
                .note(&self.shared.metrics, &self.client_id, DropReason::Oversized);
            self.unstore(mark.message);
            return self.skip(h);
        }
        if retain {
            wbuf[start] |= 1;
        }
        // Messages stored before a restart and routed again: MQTT wants DUP on a
        // re-delivery (3.1.1 §3.3.1.1, 5 §3.3.1.1), and the original packet id (5
        // §4.4), which the store keeps for QoS 2.
        let mut original_pkid = None;
        if !self.redeliver.is_empty() && router_qos > 0 {
            if let Some(p) = self.redeliver.remove(&mark.message) {
                wbuf[start] |= 0b1000;
                original_pkid = (p != 0).then_some(p);
            }
        }
        if delivery != h.qos {
            if let Some(rewritten) = codec::set_publish_qos(&wbuf[start..], delivery) {
                wbuf.truncate(start);
                wbuf.extend_from_slice(&rewritten);
            }
        }
        if h.qos > 0 {
            // From here the edge holds the message (or drops it, counted).
            self.ack_router(h.pkid, h.qos);
        }
        if delivery == 0 {
            self.unreported.messages_out += 1;
            return;
        }
        self.hold(wbuf, start, mark.message, delivery, original_pkid);
    }

    /// A QoS 1/2 message encoded at `wbuf[start..]` for the client: sent now if
    /// nothing older waits and the window has room, else queued (see `queue`).
    /// `pkid`: the packet id it was sent with before a restart.
    fn hold(
        &mut self,
        wbuf: &mut BytesMut,
        start: usize,
        message: u64,
        qos: u8,
        pkid: Option<u16>,
    ) {
        let Some(pkid_at) = pkid_offset(&wbuf[start..]) else {
            // Encoded by the edge itself a moment ago: cannot happen.
            warn!("forwarded publish without a packet id");
            wbuf.truncate(start);
            return;
        };
        let held = |packet: Bytes| Held {
            packet,
            pkid_at,
            qos,
            message,
            pkid,
            released: false,
            dup: false,
        };
        let limits = &self.shared.config.limits;
        let policy = match limits.slow_subscriber {
            SlowSubscriber::Drop => Some(limits.drop_policy),
            SlowSubscriber::Backpressure => None,
        };
        let limit = limits.max_queued_messages;
        if self.queue.sends_now(self.window()) {
            let pkid = pkid.unwrap_or_else(|| self.queue.next_pkid());
            write_pkid(&mut wbuf[start..], pkid_at, pkid);
            if qos == 2 {
                self.note_sent(vec![(message, pkid)]);
            }
            // Only a session that outlives the connection may need it again.
            let packet = if self.session_expiry == Some(0) {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(&wbuf[start..])
            };
            self.queue.sent(held(packet), pkid);
            self.unreported.messages_out += 1;
            self.note_queue_level();
            return;
        }
        let mut waiting = held(Bytes::copy_from_slice(&wbuf[start..]));
        waiting.dup = wbuf[start] & 0b1000 != 0;
        wbuf.truncate(start);
        match self.queue.offer(waiting, limit, policy) {
            Offer::Held => self.note_queue_level(),
            Offer::Dropped => {
                self.drops
                    .note(&self.shared.metrics, &self.client_id, DropReason::QueueFull);
                self.unstore(message);
            }
            Offer::DroppedOldest(oldest) => {
                self.drops
                    .note(&self.shared.metrics, &self.client_id, DropReason::QueueFull);
                self.unstore(oldest);
            }
        }
    }

    /// Whether a packet of `len` bytes may be sent to the client.
    pub(super) fn fits(&self, len: usize) -> bool {
        self.limits
            .max_packet_size
            .is_none_or(|m| len <= m as usize)
    }

    /// With the edge's subscription identifier of a message the router forwarded (`id`),
    /// counts the messages of that filter the router skipped before it (see
    /// `router_gaps`). Not for a persistent session with a data directory: what the
    /// router skipped of its QoS 1/2 messages comes from the store.
    fn count_router_gap(&mut self, id: Option<usize>, cursor: Option<(u64, u64)>, topic: &[u8]) {
        let Some((_, offset)) = cursor else {
            return;
        };
        // A resumed session's first messages may come before the router has its
        // identifiers again (`rejoin_router_filters`): the one filter that matches.
        let Some(id) = id.or_else(|| self.only_matching_filter(topic)) else {
            return;
        };
        let skipped = self.gaps.forwarded(id, offset);
        if skipped > 0 && !self.durable() {
            self.drops.note_many(
                &self.shared.metrics,
                &self.client_id,
                DropReason::RouterSkipped,
                skipped,
            );
        }
    }

    /// The identifier of the client's one non-shared filter that matches `topic`
    /// (none if several do).
    fn only_matching_filter(&self, topic: &[u8]) -> Option<usize> {
        let topic = std::str::from_utf8(topic).ok()?;
        let mut matching = self
            .subscriptions
            .iter()
            .filter(|(f, _)| !f.starts_with("$share/") && crate::topic::filter_matches(f, topic));
        let (filter, _) = matching.next()?;
        if matching.next().is_some() {
            return None;
        }
        self.gaps.id_of(filter)
    }

    /// A forwarded message not sent to this client: the router still needs its
    /// acknowledgement, in order.
    pub(super) fn skip(&mut self, h: codec::PublishHeader) {
        if h.qos > 0 {
            self.ack_router(h.pkid, h.qos);
        }
    }
}

/// Whether a PUBLISH's properties are all absent. (Comparing with
/// `PublishProperties::default()` builds and drops a value on every message; naming
/// every field makes a field added by rumqttd a compile error here.)
pub(super) fn no_properties(p: &PublishProperties) -> bool {
    let PublishProperties {
        payload_format_indicator,
        message_expiry_interval,
        topic_alias,
        response_topic,
        correlation_data,
        user_properties,
        subscription_identifiers,
        content_type,
    } = p;
    payload_format_indicator.is_none()
        && message_expiry_interval.is_none()
        && topic_alias.is_none()
        && response_topic.is_none()
        && correlation_data.is_none()
        && user_properties.is_empty()
        && subscription_identifiers.is_empty()
        && content_type.is_none()
}
