//! Packets from the client: PUBLISH (topic aliases, ACL, the QoS 2 flow the edge
//! completes itself), SUBSCRIBE and UNSUBSCRIBE, acknowledgements, DISCONNECT.

use super::acks::pubrec;
use super::io::queue;
use super::state::{Connection, PendingSubAck};
use super::ConnectionError;
use crate::codec::{self, kind, Frame, Version};
use crate::marker::{self, Mark};
use crate::metrics::inc;
use crate::retained::RetainedMessage;
use crate::store::{Op, StoredMessage};
use crate::subscriptions::Subscription;
use crate::topic;
use bytes::BytesMut;
use rumqttd::protocol::{
    DisconnectReasonCode, Packet, PingResp, PubAck, PubAckReason, PubComp, PubCompReason,
    PubRecReason, Publish, PublishProperties, RetainForwardRule, SubAck, Subscribe,
    SubscribeReasonCode, UnsubAck, UnsubAckReason, Unsubscribe,
};
use std::borrow::Cow;
use tracing::info;

impl Connection {
    /// Handles one packet from the client. A retained PUBLISH comes back as the write
    /// that must reach the store before the batch for the router is sent (boxed: it is
    /// rare and large, and the caller holds it across an await).
    pub(super) fn incoming(
        &mut self,
        wbuf: &mut BytesMut,
        frame: Frame,
        max: usize,
    ) -> Result<Option<Box<RetainedMessage>>, ConnectionError> {
        let v = self.version;
        tracing::trace!(client_id = %self.client_id, kind = frame.kind, len = frame.bytes.len(), "packet from client");
        match frame.kind {
            kind::PINGREQ => {
                queue(wbuf, Packet::PingResp(PingResp), v);
                return Ok(None);
            }
            kind::DISCONNECT if frame.bytes.len() == 2 => {
                self.will = None;
                self.clean_exit = true;
                return Ok(None);
            }
            _ => {}
        }
        let header = if frame.kind == kind::PUBLISH {
            Some(
                codec::publish_header(&frame.bytes).ok_or(ConnectionError::Protocol(
                    "malformed publish",
                    DisconnectReasonCode::MalformedPacket,
                ))?,
            )
        } else {
            None
        };
        let mut frame = frame;
        if let Some(h) = header.filter(|h| h.qos == 2) {
            // Incoming QoS 2 is completed by the edge (MQTT's "deliver on PUBLISH"
            // method): rumqttd keeps a QoS 2 message only in the connection's state
            // until PUBREL and loses it with the connection, so a resumed session's
            // PUBREL would find nothing. The message goes to the router as QoS 1 (its
            // QoS 2 travels in the marker); a repeated PUBLISH with the same packet id
            // before PUBREL is acknowledged and not routed again.
            if self.awaiting_release.contains(&h.pkid) {
                wbuf.extend_from_slice(&codec::success_ack(kind::PUBREC, h.pkid));
                return Ok(None);
            }
            frame.bytes[0] = (frame.bytes[0] & !0b0110) | 0b0010;
            frame.flags = frame.bytes[0] & 0x0f;
        }
        let packet = codec::decode(frame, v, max)?;
        match (packet, header) {
            (Packet::Publish(publish, props), Some(header)) => {
                self.publish(wbuf, header, publish, props)
            }
            (packet, _) => self.other_packet(wbuf, packet).map(|()| None),
        }
    }

    pub(super) fn other_packet(
        &mut self,
        wbuf: &mut BytesMut,
        packet: Packet,
    ) -> Result<(), ConnectionError> {
        let v = self.version;
        match packet {
            Packet::PubAck(ack, _) => {
                self.client_ack(wbuf, ack.pkid, kind::PUBACK, false);
                Ok(())
            }
            Packet::PubRec(rec, _) => {
                // MQTT 5 §4.3.3: a PUBREC with a failure reason ends the flow.
                let refused = !matches!(
                    rec.reason,
                    PubRecReason::Success | PubRecReason::NoMatchingSubscribers
                );
                self.client_ack(wbuf, rec.pkid, kind::PUBREC, refused);
                Ok(())
            }
            Packet::PubRel(rel, _) => {
                // The flow of a routed QoS 2 message (this connection's or an earlier
                // one's), of a denied one (3.1.1 completes its flow without delivery),
                // or no flow at all (MQTT 5: 0x92, packet identifier not found).
                let known = self.awaiting_release.remove(&rel.pkid);
                if known {
                    self.store_incoming(rel.pkid, false);
                }
                let reason = if known || v == Version::V4 {
                    PubCompReason::Success
                } else {
                    PubCompReason::PacketIdentifierNotFound
                };
                queue(
                    wbuf,
                    Packet::PubComp(
                        PubComp {
                            pkid: rel.pkid,
                            reason,
                        },
                        None,
                    ),
                    v,
                );
                Ok(())
            }
            Packet::PubComp(comp, _) => {
                self.client_ack(wbuf, comp.pkid, kind::PUBCOMP, false);
                Ok(())
            }
            Packet::Subscribe(sub, props) => {
                self.subscribe(wbuf, sub, props);
                Ok(())
            }
            Packet::Unsubscribe(unsub, props) => {
                let pkid = unsub.pkid;
                let mut reasons = Vec::with_capacity(unsub.filters.len());
                for f in &unsub.filters {
                    let existed = self.subscriptions.remove(f);
                    let valid = topic::valid_filter(f)
                        || topic::strip_share(f).is_some_and(topic::valid_filter);
                    reasons.push(match (valid, existed) {
                        (false, _) => UnsubAckReason::TopicFilterInvalid,
                        (true, true) => UnsubAckReason::Success,
                        (true, false) => UnsubAckReason::NoSubscriptionExisted,
                    });
                }
                self.save_subscriptions();
                // The router acknowledges only filters it knows; the edge answers for all.
                let filters: Vec<String> = unsub
                    .filters
                    .iter()
                    .map(|f| topic::router_filter(f).into_owned())
                    .collect();
                for f in &filters {
                    self.gaps.unsubscribe(f);
                }
                self.send_router(Packet::Unsubscribe(Unsubscribe { pkid, filters }, props));
                queue(wbuf, Packet::UnsubAck(UnsubAck { pkid, reasons }, None), v);
                Ok(())
            }
            Packet::Disconnect(d, props) => {
                if let Some(s) = props.and_then(|p| p.session_expiry_interval) {
                    // MQTT 5 §3.14.2.2.2: a session that was to end with the connection
                    // cannot be made to outlive it at DISCONNECT.
                    if self.expiry_zero_at_connect && s != 0 {
                        return Err(ConnectionError::Protocol(
                            "session expiry set at DISCONNECT after 0 at CONNECT",
                            DisconnectReasonCode::ProtocolError,
                        ));
                    }
                    let limits = &self.shared.config.limits;
                    self.session_expiry = limits.session_expiry((s != u32::MAX).then_some(s));
                }
                // MQTT 5 reason 0x04 asks for the will to be published anyway.
                if d.reason_code != DisconnectReasonCode::DisconnectWithWillMessage {
                    self.will = None;
                    self.clean_exit = true;
                    return Ok(());
                }
                Err(ConnectionError::Closed)
            }
            Packet::PingReq(_) => {
                queue(wbuf, Packet::PingResp(PingResp), v);
                Ok(())
            }
            _ => Err(ConnectionError::Protocol(
                "unexpected packet",
                DisconnectReasonCode::ProtocolError,
            )),
        }
    }

    pub(super) fn publish(
        &mut self,
        wbuf: &mut BytesMut,
        header: codec::PublishHeader,
        mut publish: Publish,
        mut props: Option<PublishProperties>,
    ) -> Result<Option<Box<RetainedMessage>>, ConnectionError> {
        if let Some(p) = props.as_mut() {
            if !p.subscription_identifiers.is_empty() {
                return Err(ConnectionError::Protocol(
                    "subscription identifier in PUBLISH",
                    DisconnectReasonCode::ProtocolError,
                ));
            }
            if let Some(alias) = p.topic_alias.take() {
                if alias == 0 || alias > self.shared.config.limits.topic_alias_max {
                    return Err(ConnectionError::Protocol(
                        "topic alias out of range",
                        DisconnectReasonCode::TopicAliasInvalid,
                    ));
                }
                if publish.topic.is_empty() {
                    publish.topic =
                        self.aliases
                            .get(&alias)
                            .cloned()
                            .ok_or(ConnectionError::Protocol(
                                "unknown topic alias",
                                DisconnectReasonCode::ProtocolError,
                            ))?;
                } else {
                    self.aliases.insert(alias, publish.topic.clone());
                }
            }
        }
        let topic_name = std::str::from_utf8(&publish.topic)
            .ok()
            .filter(|t| topic::valid_topic(t))
            .ok_or(ConnectionError::Protocol(
                "invalid topic name",
                DisconnectReasonCode::TopicNameInvalid,
            ))?;

        if !self.shared.acl.may_publish(&self.identity, topic_name) {
            inc(&self.shared.metrics.denied_publish);
            info!(client_id = %self.client_id, topic = %topic_name, "publish denied");
            self.refuse_publish(wbuf, header, PubAckReason::NotAuthorized);
            return Ok(None);
        }
        if header.retain {
            let max = self.shared.config.limits.max_retained_per_client;
            let owner = self.identity.label();
            let clear = publish.payload.is_empty();
            if !self
                .shared
                .retained_owners
                .set(topic_name, &owner, clear, max)
            {
                inc(&self.shared.metrics.retained_over_quota);
                info!(client_id = %self.client_id, topic = %topic_name, "retained topics of the identity at limits.max_retained_per_client: refused");
                self.refuse_publish(wbuf, header, PubAckReason::QuotaExceeded);
                return Ok(None);
            }
        }

        // Open flows, bounded by `limits.max_inflight` (see `open_flows_in`): a QoS 1
        // flow until the router acknowledges, a QoS 2 one until its PUBREL.
        match header.qos {
            1 => self.inflight_in += 1,
            2 => {
                self.awaiting_release.insert(header.pkid);
                self.store_incoming(header.pkid, true);
                self.qos2_in_router.insert(header.pkid);
            }
            _ => {}
        }
        let retained = header.retain.then(|| {
            Box::new(RetainedMessage {
                topic: topic_name.to_owned(),
                qos: header.qos,
                payload: publish.payload.clone(),
                properties: props.clone(),
            })
        });
        let mark = Mark::new(header.qos, header.retain, self.origin);
        let takers = (header.qos > 0 && self.shared.store.is_durable())
            .then(|| self.takers(&publish.topic, topic_name))
            .filter(|takers| !takers.is_empty());
        let stored_properties = takers.as_ref().and_then(|_| props.clone());
        self.unreported.messages_in += 1;
        self.start_router_batch();
        let routed = marker::route(
            publish,
            props,
            mark,
            Some(&self.shared.retained_index),
            &mut self.to_router,
        );
        if let Some(clients) = takers {
            // Stored in the allocation the router's copy lives in, not in the read
            // buffer: held until the next sync, a slice of that would keep the whole
            // buffer (64 KiB for a busy client) from being reused.
            self.store_later(Op::Enqueue {
                number: mark.message,
                message: StoredMessage {
                    topic: routed.topic,
                    qos: header.qos,
                    retain: header.retain,
                    origin: self.origin,
                    payload: routed.payload,
                    properties: stored_properties.map(Box::new),
                },
                clients,
            });
        }
        Ok(retained)
    }

    /// The persistent sessions a QoS 1/2 message on `topic` is stored for: those of
    /// the last message when its topic and the saved tables are the same.
    fn takers(&mut self, topic: &bytes::Bytes, topic_name: &str) -> std::sync::Arc<[String]> {
        let saved = self.shared.sessions.saved();
        let version = saved.version();
        if let Some(last) = &self.last_takers {
            if last.version == version && last.topic == topic {
                return last.clients.clone();
            }
        }
        let clients = saved.takers(topic_name, self.origin);
        self.last_takers = Some(Box::new(super::state::Takers {
            topic: topic.clone(),
            version,
            clients: clients.clone(),
        }));
        clients
    }

    /// Answers a PUBLISH that is not delivered: MQTT 5 with `reason` (NotAuthorized or
    /// QuotaExceeded, which PUBACK and PUBREC share), 3.1.1, which has no refusal,
    /// with success (a QoS 2 flow is then completed without delivery).
    fn refuse_publish(
        &mut self,
        wbuf: &mut BytesMut,
        header: codec::PublishHeader,
        reason: PubAckReason,
    ) {
        let v = self.version;
        let (ack, rec) = match (v, reason) {
            (Version::V4, _) => (PubAckReason::Success, PubRecReason::Success),
            (Version::V5, PubAckReason::QuotaExceeded) => {
                (PubAckReason::QuotaExceeded, PubRecReason::QuotaExceeded)
            }
            (Version::V5, _) => (PubAckReason::NotAuthorized, PubRecReason::NotAuthorized),
        };
        match header.qos {
            1 => queue(
                wbuf,
                Packet::PubAck(
                    PubAck {
                        pkid: header.pkid,
                        reason: ack,
                    },
                    None,
                ),
                v,
            ),
            2 => {
                if v == Version::V4 {
                    self.awaiting_release.insert(header.pkid);
                }
                queue(wbuf, pubrec(header.pkid, rec), v);
            }
            _ => {}
        }
    }

    /// A resumed session's filters, subscribed to again in the router (packet id 0, whose
    /// SUBACK answers no client's SUBSCRIBE). rumqttd restores a session's
    /// subscriptions but not its index of who subscribes to each filter, where its
    /// UNSUBSCRIBE looks: without this, the session's UNSUBSCRIBE, and the renewal of a
    /// filter at a new QoS, would change nothing in the router, which would go on
    /// sending. A filter the router session has gets no new delivery cursor, so
    /// nothing is sent again.
    pub(super) fn rejoin_router_filters(&mut self) {
        if self.router_clean {
            return;
        }
        let filters: Vec<_> = self
            .subscriptions
            .iter()
            .filter(|(f, _)| !f.starts_with("$share/"))
            .map(|(f, s)| topic::router_subscription(f, s.qos))
            .collect();
        for filter in filters {
            // The router forgets a session's subscription identifiers between its
            // connections (see `router_gaps`).
            let id = self.gaps.subscribe(&filter.path, false);
            self.send_router(router_subscribe(0, filter, Some(id)));
        }
    }

    pub(super) fn subscribe(
        &mut self,
        wbuf: &mut BytesMut,
        sub: Subscribe,
        props: Option<rumqttd::protocol::SubscribeProperties>,
    ) {
        let v = self.version;
        let pkid = sub.pkid;
        // The subscription identifier is applied by the edge (one copy carrying every
        // matching identifier); the router would attach one per copy.
        let id = props.and_then(|p| p.id);
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut allowed = Vec::with_capacity(sub.filters.len());
        let mut renewed = Vec::new();
        let mut retained = Vec::new();
        let max_subscriptions = self.shared.config.limits.max_subscriptions_per_client;
        for filter in sub.filters {
            let inner = topic::strip_share(&filter.path).filter(|f| topic::valid_filter(f));
            let code = match inner {
                None => match v {
                    Version::V5 => SubscribeReasonCode::TopicFilterInvalid,
                    Version::V4 => SubscribeReasonCode::Failure,
                },
                // The router disconnects on `$` filters (other than $share); the broker
                // publishes no `$` topics, so refuse them here instead.
                Some(f) if f.starts_with('$') => match v {
                    Version::V5 => SubscribeReasonCode::NotAuthorized,
                    Version::V4 => SubscribeReasonCode::Failure,
                },
                // rumqttd 0.20's router thread panics ("group must exists",
                // routing.rs) when a connection whose router session persists leaves
                // a shared group as its last member with a message unacknowledged,
                // which stops all routing. Shared subscriptions are therefore only
                // taken in sessions the router does not keep.
                Some(_) if !self.router_clean && filter.path.starts_with("$share/") => {
                    info!(client_id = %self.client_id, filter = %filter.path, "shared subscription in a persistent session refused");
                    match v {
                        Version::V5 => SubscribeReasonCode::SharedSubscriptionsNotSupported,
                        Version::V4 => SubscribeReasonCode::Failure,
                    }
                }
                Some(f) if !self.shared.acl.may_subscribe(&self.identity, f) => {
                    inc(&self.shared.metrics.denied_subscribe);
                    info!(client_id = %self.client_id, filter = %f, "subscribe denied");
                    match v {
                        Version::V5 => SubscribeReasonCode::NotAuthorized,
                        Version::V4 => SubscribeReasonCode::Failure,
                    }
                }
                // A new filter beyond the client's quota (a renewal is not one more).
                Some(_)
                    if self.subscriptions.get(&filter.path).is_none()
                        && self.subscriptions.len() >= max_subscriptions =>
                {
                    inc(&self.shared.metrics.subscriptions_over_quota);
                    match v {
                        Version::V5 => SubscribeReasonCode::QuotaExceeded,
                        Version::V4 => SubscribeReasonCode::Failure,
                    }
                }
                Some(_) => match filter.qos as u8 {
                    0 => SubscribeReasonCode::QoS0,
                    1 => SubscribeReasonCode::QoS1,
                    _ => SubscribeReasonCode::QoS2,
                },
            };
            if matches!(
                code,
                SubscribeReasonCode::QoS0 | SubscribeReasonCode::QoS1 | SubscribeReasonCode::QoS2
            ) {
                let previous = self.subscriptions.get(&filter.path).copied();
                let rule = match v {
                    Version::V5 => filter.retain_forward_rule.clone(),
                    // 3.1.1 has no options (rumqttd's defaults for it are not MQTT's).
                    Version::V4 => RetainForwardRule::OnEverySubscribe,
                };
                let mut s = Subscription::plain(filter.qos as u8);
                if v == Version::V5 {
                    s.no_local = filter.nolocal;
                    s.retain_as_published = filter.preserve_retain;
                    s.id = id;
                }
                s.suppress_retained = match rule {
                    RetainForwardRule::Never => true,
                    RetainForwardRule::OnNewSubscribe => previous.is_some(),
                    RetainForwardRule::OnEverySubscribe => false,
                };
                // The router ignores a repeated subscription: it neither sends the
                // retained messages again (MQTT 3.1.1 §3.8.4, MQTT 5 retain handling
                // 0) nor takes a new QoS. The edge sends the retained messages itself
                // (see `retained_index`: renewing the filter in the router would skip
                // what it had not yet sent); a new QoS takes unsubscribing and
                // subscribing again in the same batch, and brings them from the router.
                self.subscriptions.insert(filter.path.clone(), s);
                let new_qos = previous.is_some_and(|p| p.qos != s.qos);
                // (Shared subscriptions get no retained messages, MQTT 5 §4.8.2.)
                if previous.is_some()
                    && !new_qos
                    && !s.suppress_retained
                    && !filter.path.starts_with("$share/")
                {
                    let found = self.shared.retained_index.matching(&filter.path);
                    retained.extend(found.into_iter().map(|(p, props)| (p, props, s.qos)));
                }
                // The router's name for it (see `topic::router_filter`).
                let mut filter = filter;
                if let Cow::Owned(path) = topic::router_filter(&filter.path) {
                    filter.path = path;
                }
                if new_qos {
                    renewed.push(filter.path.clone());
                }
                // Shared subscriptions share one cursor among their members: no gaps
                // to find (see `router_gaps`).
                let id = (!filter.path.starts_with("$share/")).then(|| {
                    self.gaps
                        .subscribe(&filter.path, previous.is_none() || new_qos)
                });
                allowed.push((filter, id));
            }
            codes.push(code);
        }
        if !allowed.is_empty() {
            self.save_subscriptions();
        }
        if allowed.is_empty() {
            queue(
                wbuf,
                Packet::SubAck(
                    SubAck {
                        pkid,
                        return_codes: codes,
                    },
                    None,
                ),
                v,
            );
            return;
        }
        // Our SUBACK (which reports every filter, refused ones included) waits for the
        // router's: the router handles each connection's packets in batches, so a SUBACK
        // sent earlier could let another client publish before the subscription exists.
        self.pending_subacks
            .insert(pkid, PendingSubAck { codes, retained });
        if !renewed.is_empty() {
            // Its UNSUBACK goes nowhere: the edge ignores the router's.
            self.send_router(Packet::Unsubscribe(
                Unsubscribe {
                    pkid,
                    filters: renewed,
                },
                None,
            ));
        }
        // One SUBSCRIBE per filter, each with the filter's own subscription identifier
        // (see `router_gaps`); the last one carries the client's packet id, so that
        // the router's SUBACK for it, which answers the client, comes after all.
        let last = allowed.len() - 1;
        for (i, (filter, id)) in allowed.into_iter().enumerate() {
            let pkid = if i == last { pkid } else { 0 };
            self.send_router(router_subscribe(pkid, filter, id));
        }
    }
}

/// A SUBSCRIBE for the router of one filter, with the edge's subscription identifier
/// for it (see `router_gaps`). Packet id 0 answers no client's SUBSCRIBE.
fn router_subscribe(pkid: u16, filter: rumqttd::protocol::Filter, id: Option<usize>) -> Packet {
    let props = id.map(|id| rumqttd::protocol::SubscribeProperties {
        id: Some(id),
        user_properties: Vec::new(),
    });
    Packet::Subscribe(
        Subscribe {
            pkid,
            filters: vec![filter],
        },
        props,
    )
}
