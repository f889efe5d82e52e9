//! One client connection: CONNECT, authentication, then the packet loop between the
//! socket and the router link.
//!
//! The edge corrects rumqttd where it departs from MQTT:
//! - keep-alive 0 is accepted (no timeout);
//! - delivery QoS is min(publish QoS, subscription QoS): the original QoS travels with
//!   the message through the router in a marker (see `marker`), and the edge
//!   downgrades the outgoing PUBLISH, acknowledging to the router on the client's behalf
//!   where needed (in order, since the router rejects out-of-order acks);
//! - incoming QoS 2 is completed here, so that it survives a reconnect;
//! - what a client's subscriptions decide (one copy for overlapping filters, MQTT 5
//!   subscription identifiers and options) is the `subscriptions` module's; the
//!   client's receive maximum, maximum packet size and topic aliases apply here;
//! - SUBACK/UNSUBACK are produced here (the router has no per-filter refusal and sends
//!   no UNSUBACK for unknown filters); a SUBACK is still sent only after the router's;
//! - the last will is kept here, checked against the ACL, and published by the edge
//!   (delayed wills and MQTT 5 session expiry are the `session` module's);
//! - a resumed session's unacknowledged messages are re-sent with DUP, and what it
//!   receives of its backlog is bounded (`limits.max_queued_messages`).

use crate::acl::Identity;
use crate::codec::{self, kind, Frame, FrameError, Version};
use crate::marker::{self, Mark};
use crate::metrics::{add, inc};
use crate::retained::RetainedMessage;
use crate::router::RouterSlot;
use crate::server::Shared;
use crate::subscriptions::{Copies, Copy, Decision, SavedSession, Subscription, Subscriptions};
use crate::topic;
use bytes::{Bytes, BytesMut};
use rumqttd::local::{LinkError, LinkRx};
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, DisconnectReasonCode, LastWill,
    LastWillProperties, Login, Packet, PingResp, PubAck, PubAckReason, PubComp, PubCompReason,
    PubRec, PubRecReason, Publish, PublishProperties, RetainForwardRule, SubAck, Subscribe,
    SubscribeReasonCode, UnsubAck, UnsubAckReason, Unsubscribe,
};
use rumqttd::Notification;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Origin ids of sessions; 0 is never used, so the broker's own messages (wills) match
/// no session.
static NEXT_ORIGIN: AtomicU64 = AtomicU64::new(1);

/// What an MQTT 5 client asked of the messages it receives (CONNECT properties).
#[derive(Debug, Clone, Copy, Default)]
struct ClientLimits {
    /// Receive maximum: unacknowledged QoS 1/2 PUBLISHes the client accepts.
    receive_max: Option<u16>,
    /// Maximum packet size the client accepts; larger messages are skipped for it.
    max_packet_size: Option<u32>,
    /// Topic aliases the client accepts from the broker.
    topic_alias_max: u16,
}

/// Read buffer of a client that keeps it full.
const BUSY_READ_BUFFER: usize = 64 * 1024;

/// Packets for the router are sent in batches of at most this many (one wake-up of the
/// router thread each).
const ROUTER_BATCH: usize = 256;

/// Bytes for the client written at once at most while draining notifications.
const WRITE_BATCH: usize = 64 * 1024;

/// The keep-alive timer's first deadline when the client has none (never reached: that
/// branch is off).
const NO_KEEP_ALIVE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Longest a write to a client may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the TLS layer learnt about the peer.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// Remote address, for logs.
    pub addr: Option<std::net::SocketAddr>,
    /// Identity from a verified client certificate.
    pub certificate: Option<Identity>,
    /// That certificate, checked again against every new revocation list: the
    /// connection is closed when it is revoked.
    pub certificate_watch: Option<crate::tls::CertificateWatch>,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Invalid framing or packet.
    #[error("protocol: {0}")]
    Frame(#[from] FrameError),
    /// A valid packet that breaks the protocol rules (bad topic, unknown alias...).
    #[error("protocol violation: {0}")]
    Protocol(&'static str, DisconnectReasonCode),
    /// No CONNECT in time, or keep-alive expired.
    #[error("timeout")]
    Timeout,
    /// The peer closed the connection.
    #[error("closed by peer")]
    Closed,
    /// The router removed the connection (session taken over, router-side error).
    #[error("closed by router")]
    RouterClosed,
    /// The client certificate was revoked (or expired) while the connection was open.
    #[error("client certificate no longer valid: {0}")]
    CertificateInvalidated(sealpost_certs::CertError),
}

/// Serves one connection to the end. Never panics on peer input; every exit path drops
/// the [`RouterSlot`], which releases the router slot.
pub async fn serve<S>(stream: S, shared: Arc<Shared>, peer: PeerInfo)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut io = Io {
        rd,
        wr,
        rbuf: BytesMut::with_capacity(4096),
        wbuf: BytesMut::with_capacity(4096),
        shared: shared.clone(),
    };
    let timeout = shared.config.limits.connect_timeout();
    let connect = match tokio::time::timeout(timeout, io.read_connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            note_error(&shared, &e);
            debug!(peer = ?peer.addr, error = %e, "connection refused before CONNECT");
            return;
        }
        Err(_) => {
            inc(&shared.metrics.timeouts);
            debug!(peer = ?peer.addr, "no CONNECT in time");
            return;
        }
    };
    let Some(mut session) = accept(&mut io, connect, &peer).await else {
        return;
    };
    let result = session.run(&mut io, peer.certificate_watch).await;
    match &result {
        Ok(()) | Err(ConnectionError::Closed) => {
            debug!(client_id = %session.client_id, "connection closed")
        }
        Err(e) => {
            note_error(&shared, e);
            info!(client_id = %session.client_id, error = %e, "connection ended");
        }
    }
    let code = match &result {
        Err(ConnectionError::Frame(FrameError::TooLarge(_))) => {
            Some(DisconnectReasonCode::PacketTooLarge)
        }
        Err(ConnectionError::Frame(_)) => Some(DisconnectReasonCode::MalformedPacket),
        Err(ConnectionError::Protocol(_, code)) => Some(*code),
        Err(ConnectionError::Timeout) => Some(DisconnectReasonCode::KeepAliveTimeout),
        Err(ConnectionError::CertificateInvalidated(_)) => {
            Some(DisconnectReasonCode::AdministrativeAction)
        }
        _ => None,
    };
    if let (Some(code), Version::V5) = (code, session.version) {
        queue_disconnect(&mut io.wbuf, code);
        let _ = tokio::time::timeout(Duration::from_secs(1), io.flush()).await;
    }
    let will = match &result {
        // A revoked identity publishes nothing more, its will included.
        Ok(()) | Err(ConnectionError::CertificateInvalidated(_)) => None,
        Err(_) => session.will.take(),
    };
    session.save_unacknowledged();
    // Releases the router slot, then publishes or schedules the will and ends or
    // schedules the end of the session (see `session`).
    let ending = crate::session::Ending {
        generation: session.generation,
        expiry: session.session_expiry,
        router_clean: session.router_clean,
        will,
        will_delay: session.will_delay,
    };
    let client_id = session.client_id.clone();
    shared
        .connection_ended(&client_id, &mut session.slot, ending)
        .await;
    // session drops here (its RouterSlot was released above, or drops with it if this
    // task is cancelled first).
}

fn note_error(shared: &Shared, e: &ConnectionError) {
    match e {
        ConnectionError::Frame(_) | ConnectionError::Protocol(..) => inc(&shared.metrics.malformed),
        ConnectionError::Timeout => inc(&shared.metrics.timeouts),
        _ => {}
    }
}

/// Encodes an MQTT 5 DISCONNECT by hand: rumqttd 0.20 writes a remaining length of 1
/// followed by two bytes (reason and property length), which clients reject.
fn queue_disconnect(wbuf: &mut BytesMut, code: DisconnectReasonCode) {
    wbuf.extend_from_slice(&[0xe0, 0x01, disconnect_code(code)]);
}

/// MQTT 5 reason code byte of a disconnect reason.
fn disconnect_code(code: DisconnectReasonCode) -> u8 {
    use DisconnectReasonCode as D;
    match code {
        D::NormalDisconnection => 0x00,
        D::DisconnectWithWillMessage => 0x04,
        D::UnspecifiedError => 0x80,
        D::MalformedPacket => 0x81,
        D::ProtocolError => 0x82,
        D::ImplementationSpecificError => 0x83,
        D::NotAuthorized => 0x87,
        D::ServerBusy => 0x89,
        D::ServerShuttingDown => 0x8b,
        D::KeepAliveTimeout => 0x8d,
        D::SessionTakenOver => 0x8e,
        D::TopicFilterInvalid => 0x8f,
        D::TopicNameInvalid => 0x90,
        D::ReceiveMaximumExceeded => 0x93,
        D::TopicAliasInvalid => 0x94,
        D::PacketTooLarge => 0x95,
        D::MessageRateTooHigh => 0x96,
        D::QuotaExceeded => 0x97,
        D::AdministrativeAction => 0x98,
        D::PayloadFormatInvalid => 0x99,
        D::RetainNotSupported => 0x9a,
        D::QoSNotSupported => 0x9b,
        D::UseAnotherServer => 0x9c,
        D::ServerMoved => 0x9d,
        D::SharedSubscriptionNotSupported => 0x9e,
        D::ConnectionRateExceeded => 0x9f,
        D::MaximumConnectTime => 0xa0,
        D::SubscriptionIdentifiersNotSupported => 0xa1,
        D::WildcardSubscriptionsNotSupported => 0xa2,
    }
}

struct Io<R, W> {
    rd: R,
    wr: W,
    rbuf: BytesMut,
    wbuf: BytesMut,
    shared: Arc<Shared>,
}

struct ConnectPacket {
    version: Version,
    packet: Packet,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Io<R, W> {
    fn max_packet(&self) -> usize {
        self.shared.config.limits.max_packet_size
    }

    /// Reads more bytes; `Closed` at end of stream.
    async fn fill(&mut self) -> Result<(), ConnectionError> {
        let n = self.rd.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(ConnectionError::Closed);
        }
        add(&self.shared.metrics.bytes_in, n as u64);
        Ok(())
    }

    async fn read_connect(&mut self) -> Result<ConnectPacket, ConnectionError> {
        let max = self.max_packet();
        let frame = loop {
            if let Some(f) = codec::next_frame(&mut self.rbuf, max, None)? {
                break f;
            }
            self.fill().await?;
        };
        let version = match codec::connect_version(&frame) {
            Ok(v) => v,
            Err(e @ FrameError::UnsupportedVersion(_)) => {
                // MQTT 3.1.1 §3.2.2.3: answer with return code 1 before closing.
                let _ = self.wr.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
                let _ = self.wr.flush().await;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let packet = codec::decode(frame, version, max)?;
        Ok(ConnectPacket { version, packet })
    }

    fn queue(&mut self, packet: Packet, version: Version) {
        queue(&mut self.wbuf, packet, version);
    }

    /// Writes everything queued. A client that stops reading cannot hold its
    /// connection (and router slot) forever: the write must finish within
    /// [`WRITE_TIMEOUT`].
    async fn flush(&mut self) -> Result<(), ConnectionError> {
        // Every write is flushed in the same call, so an empty buffer means nothing is
        // pending (and the timeout's clock reading is saved).
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let write = async {
            let n = self.wbuf.len();
            self.wr.write_all(&self.wbuf).await?;
            self.wbuf.clear();
            add(&self.shared.metrics.bytes_out, n as u64);
            self.wr.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ConnectionError::Timeout),
        }
    }
}

/// Encodes a packet for the client into its write buffer.
fn queue(wbuf: &mut BytesMut, packet: Packet, version: Version) {
    if let Err(e) = codec::encode(packet, version, wbuf) {
        warn!(error = %e, "cannot encode outgoing packet");
    }
}

fn connack(code: ConnectReturnCode, session_present: bool) -> ConnAck {
    ConnAck {
        session_present,
        code,
    }
}

/// Maps a refusal to the right code for the client's version (3.1.1 has only six).
fn refusal(version: Version, code: ConnectReturnCode) -> ConnectReturnCode {
    match version {
        Version::V5 => code,
        Version::V4 => match code {
            ConnectReturnCode::BadUserNamePassword => ConnectReturnCode::BadUserNamePassword,
            ConnectReturnCode::NotAuthorized => ConnectReturnCode::NotAuthorized,
            ConnectReturnCode::ClientIdentifierNotValid => {
                ConnectReturnCode::ClientIdentifierNotValid
            }
            ConnectReturnCode::UnsupportedProtocolVersion => {
                ConnectReturnCode::RefusedProtocolVersion
            }
            _ => ConnectReturnCode::ServiceUnavailable,
        },
    }
}

async fn refuse<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    io: &mut Io<R, W>,
    version: Version,
    code: ConnectReturnCode,
) {
    io.queue(
        Packet::ConnAck(connack(refusal(version, code), false), None),
        version,
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), io.flush()).await;
}

/// Makes a client id safe for the router, which refuses `+ $ # /` and keys sessions by
/// id. Percent-encoding keeps distinct ids distinct, and ids the broker uses for itself
/// (starting with `%` and a non-hex letter) can never be produced from a client's id.
pub(crate) fn router_client_id(client_id: &str) -> String {
    let mut out = String::with_capacity(client_id.len());
    for c in client_id.chars() {
        match c {
            '%' | '+' | '$' | '#' | '/' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

async fn authenticate(
    shared: &Shared,
    peer: &PeerInfo,
    login: Option<&Login>,
) -> Result<Identity, ConnectReturnCode> {
    if let Some(identity) = &peer.certificate {
        return Ok(identity.clone());
    }
    match (login, &shared.passwords) {
        (Some(login), Some(file)) => {
            let addr = peer.addr.map(|a| a.ip());
            let password = login.password.as_bytes();
            match file.login(addr, &login.username, password).await {
                crate::auth::Login::Accepted => Ok(Identity::User(login.username.clone())),
                crate::auth::Login::Refused => Err(ConnectReturnCode::BadUserNamePassword),
                // 3.1.1 has no such code: `refusal` makes it 0x03 server unavailable.
                crate::auth::Login::Throttled => {
                    inc(&shared.metrics.logins_throttled);
                    Err(ConnectReturnCode::ConnectionRateExceeded)
                }
            }
        }
        (Some(_), None) if shared.config.auth.allow_anonymous => Ok(Identity::Anonymous),
        (Some(_), None) => Err(ConnectReturnCode::BadUserNamePassword),
        (None, _) if shared.config.auth.allow_anonymous => Ok(Identity::Anonymous),
        (None, _) => Err(ConnectReturnCode::NotAuthorized),
    }
}

async fn accept<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    io: &mut Io<R, W>,
    connect: ConnectPacket,
    peer: &PeerInfo,
) -> Option<Session> {
    let shared = io.shared.clone();
    let version = connect.version;
    let Packet::Connect(connect, props, will, will_props, login) = connect.packet else {
        inc(&shared.metrics.malformed);
        return None;
    };
    let mut assigned = None;
    let client_id = if connect.client_id.is_empty() {
        if version == Version::V4 && !connect.clean_session {
            refuse(io, version, ConnectReturnCode::ClientIdentifierNotValid).await;
            return None;
        }
        let id = format!("sealpost-{:016x}", rand::random::<u64>());
        if version == Version::V5 {
            assigned = Some(id.clone());
        }
        id
    } else {
        connect.client_id.clone()
    };

    let identity = match authenticate(&shared, peer, login.as_ref()).await {
        Ok(i) => i,
        Err(code) => {
            inc(&shared.metrics.auth_failures);
            info!(client_id = %client_id, peer = ?peer.addr, ?code, "authentication refused");
            refuse(io, version, code).await;
            return None;
        }
    };

    if let Some(w) = &will {
        let ok = std::str::from_utf8(&w.topic)
            .ok()
            .filter(|t| topic::validate_topic(t))
            .is_some_and(|t| shared.acl.may_publish(&identity, t));
        if !ok {
            info!(client_id = %client_id, "will topic not allowed");
            refuse(io, version, ConnectReturnCode::NotAuthorized).await;
            return None;
        }
    }

    // How long the session outlives the connection: MQTT 5 session expiry interval
    // (absent = 0, 0xFFFFFFFF = never); MQTT 3.1.1 clean session 0 = never. Then the
    // operator's maximum (MQTT 5 §3.2.2.3.2: a server may grant less, and says so).
    let requested_expiry = match version {
        Version::V4 if connect.clean_session => Some(0),
        Version::V4 => None,
        Version::V5 => match props.as_ref().and_then(|p| p.session_expiry_interval) {
            Some(u32::MAX) => None,
            s => Some(s.unwrap_or(0)),
        },
    };
    let session_expiry = shared.config.limits.session_expiry(requested_expiry);
    let mut clean_start = connect.clean_session;
    let client_limits = props
        .as_ref()
        .map(|p| ClientLimits {
            receive_max: p.receive_maximum,
            max_packet_size: p.max_packet_size,
            topic_alias_max: p.topic_alias_max.unwrap_or(0),
        })
        .unwrap_or_default();
    let will_delay = will_props
        .as_ref()
        .and_then(|p| p.delay_interval)
        .unwrap_or(0);

    let mut lock = shared.sessions.lock(&client_id).await;
    // Whose session the client id names is checked before anything is linked (see
    // `session`): another identity neither resumes it nor closes its connection.
    let new_session_for_other = shared.config.session.new_session_for_other_identity;
    match crate::session::check_owner(&lock, &identity, new_session_for_other) {
        crate::session::OwnerCheck::Own => {}
        crate::session::OwnerCheck::NewSession => clean_start = true,
        crate::session::OwnerCheck::Refused => {
            shared.sessions.unlock(lock);
            inc(&shared.metrics.session_owner_refused);
            info!(client_id = %client_id, identity = %identity.label(), "client id belongs to another identity's session: refused");
            refuse(io, version, ConnectReturnCode::NotAuthorized).await;
            return None;
        }
    }
    // The router keeps a session after its connection only if linked without clean
    // session, and discards the old one only if linked with it: a new session that must
    // outlive its connection needs both, so the old one is ended first (before this
    // connection becomes the owner: ending a session forgets its owner).
    let persist = session_expiry != Some(0);
    let router_clean = clean_start && !persist;
    if clean_start && persist {
        shared.end_session(&mut lock).await;
    }
    let mut started = crate::session::start(&mut lock, &identity, !clean_start);
    if let Some(w) = started.will_to_publish.take() {
        shared.publish_will(w).await;
    }
    let link = shared
        .router
        .link_async(router_client_id(&client_id), router_clean)
        .await
        .map(|(slot, rx, ack)| {
            let present = match Option::<Packet>::from(ack) {
                Some(Packet::ConnAck(ack, _)) => ack.session_present,
                _ => false,
            };
            (slot, rx, present)
        });
    // A resumed session keeps the edge's subscription table and origin id; a new one
    // starts afresh, and any table saved for an older session with this id is stale.
    let saved = match link {
        Ok((_, _, true)) => shared.saved_sessions.get(&client_id),
        _ => None,
    }
    .unwrap_or_else(|| {
        shared.saved_sessions.discard(&client_id);
        SavedSession {
            origin: NEXT_ORIGIN.fetch_add(1, Ordering::Relaxed),
            ..Default::default()
        }
    });
    let generation = started.generation;
    if link.is_err() {
        crate::session::abandon(&mut lock, started);
    }
    shared.sessions.unlock(lock);
    let (slot, link_rx, session_present) = match link {
        Ok(v) => v,
        Err(e) => {
            warn!(client_id = %client_id, error = %e, "router refused the connection");
            refuse(io, version, ConnectReturnCode::ServerUnavailable).await;
            return None;
        }
    };
    let limits = &shared.config.limits;
    // MQTT 5 §3.2.2.3.14: the server's keep alive, when it has one, replaces the
    // client's; 3.1.1 cannot tell the client, so its own value stays.
    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if let (Version::V5, Some(k)) = (version, limits.server_keep_alive) {
        if k != keep_alive {
            keep_alive = k;
            server_keep_alive = Some(k);
        }
    }
    // MQTT 5 §3.1.2.11.6: response information only when asked for.
    let prefix = &shared.config.session.response_information_prefix;
    let response_information = (version == Version::V5
        && props.as_ref().and_then(|p| p.request_response_info) == Some(1)
        && !prefix.is_empty())
    .then(|| format!("{prefix}{}", router_client_id(&client_id)));
    let props = (version == Version::V5).then(|| ConnAckProperties {
        session_expiry_interval: (session_expiry != requested_expiry)
            .then(|| session_expiry.unwrap_or(u32::MAX)),
        receive_max: Some(limits.max_inflight),
        max_packet_size: Some(limits.max_packet_size as u32),
        assigned_client_identifier: assigned,
        topic_alias_max: Some(limits.topic_alias_max),
        server_keep_alive,
        response_information,
        retain_available: Some(1),
        wildcard_subscription_available: Some(1),
        subscription_identifiers_available: Some(1),
        shared_subscription_available: Some(1),
        ..Default::default()
    });
    io.queue(
        Packet::ConnAck(connack(ConnectReturnCode::Success, session_present), props),
        version,
    );
    inc(&shared.metrics.connections_open);
    info!(client_id = %client_id, identity = %identity.label(), ?version, keep_alive, ?session_expiry, "client connected");
    let max_queued = limits.max_queued_messages;
    let backlog = (session_present && max_queued > 0).then(|| Backlog {
        before: Mark::next_number(),
        left: max_queued,
    });
    Some(Session {
        shared,
        version,
        client_id,
        identity,
        keep_alive,
        generation,
        session_expiry,
        expiry_zero_at_connect: requested_expiry == Some(0),
        router_clean,
        will_delay,
        slot,
        link_rx,
        will: will.map(|w| (w, will_props)),
        aliases: HashMap::new(),
        to_router: VecDeque::new(),
        pending_subacks: HashMap::new(),
        awaiting_release: saved.awaiting_release.into_iter().collect(),
        inflight_in: 0,
        out_acks: VecDeque::new(),
        comps: VecDeque::new(),
        clean_exit: false,
        origin: saved.origin,
        subscriptions: saved.subscriptions,
        copies: Copies::default(),
        limits: client_limits,
        redeliver: saved.unacknowledged.into_iter().collect(),
        backlog,
        out_aliases: HashMap::new(),
        inflight_out: 0,
        unreported: Unreported::default(),
    })
}

/// A resumed session's backlog: messages numbered below `before` were published before
/// the connection, so the router queued them for the session; `left` more of them
/// may be delivered (`limits.max_queued_messages`).
#[derive(Debug, Clone, Copy)]
struct Backlog {
    before: u64,
    left: usize,
}

/// Message counts of a connection not yet added to the shared [`crate::metrics`].
#[derive(Debug, Default)]
struct Unreported {
    messages_in: u64,
    messages_out: u64,
}

/// An instant that is in the past whenever it is read after the first time.
static PAST: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

/// Where [`Session::notifications`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Nothing more is buffered, or the client's receive maximum is reached.
    Drained,
    /// The write buffer or the batch for the router is full: send them, then go on.
    Full,
    /// The router closed the connection.
    Closed,
}

/// An outgoing QoS 1/2 message awaiting its acknowledgement towards the router.
struct OutAck {
    pkid: u16,
    /// What the client must send: `kind::PUBACK`, `kind::PUBREC`, or 0 (nothing: the
    /// message was downgraded to QoS 0 and the edge acknowledges for the client).
    client_ack: u8,
    /// What the router expects: PUBACK (subscription QoS 1) or PUBREC (QoS 2).
    router_ack: u8,
    done: bool,
    /// The message's number (see `marker`), to recognise it when the router
    /// sends it again to a resumed session.
    message: u64,
}

/// Second stage of an outgoing QoS 2 flow (PUBREL from the router, PUBCOMP to it).
struct Comp {
    pkid: u16,
    /// The client never saw a QoS 2 flow for it: the edge answers the router's PUBREL.
    auto: bool,
    done: bool,
}

/// State of an accepted connection.
pub(crate) struct Session {
    shared: Arc<Shared>,
    version: Version,
    pub(crate) client_id: String,
    identity: Identity,
    /// Keep-alive in force (the client's, or the server's when it overrides it).
    keep_alive: u16,
    /// This connection's generation for its client id (see `session`).
    generation: u64,
    /// Seconds the session outlives the connection; `None`: never expires. MQTT 5
    /// DISCONNECT may change it.
    session_expiry: Option<u32>,
    /// The client asked for expiry 0 at CONNECT, so DISCONNECT may not raise it (MQTT 5
    /// §3.14.2.2.2; what the client asked, not what the broker granted).
    expiry_zero_at_connect: bool,
    /// Linked with clean session: the router keeps nothing after the connection.
    router_clean: bool,
    /// MQTT 5 will delay interval, in seconds.
    will_delay: u32,
    slot: RouterSlot,
    link_rx: LinkRx,
    pub(crate) will: Option<(LastWill, Option<LastWillProperties>)>,
    aliases: HashMap<u16, Bytes>,
    /// Packets for the router, sent as one batch per read or per notification batch.
    to_router: VecDeque<Packet>,
    /// SUBACKs waiting for the router's, by packet id.
    pending_subacks: HashMap<u16, Vec<SubscribeReasonCode>>,
    /// Client packet ids of QoS 2 publishes whose PUBREL has not come yet: routed ones,
    /// and on 3.1.1 denied ones (which has no refusal, so their flow is completed
    /// without delivery). The edge answers their PUBREL.
    awaiting_release: HashSet<u16>,
    inflight_in: usize,
    out_acks: VecDeque<OutAck>,
    comps: VecDeque<Comp>,
    clean_exit: bool,
    /// This session's origin id in the markers of its messages (for no local).
    origin: u64,
    /// The client's subscriptions as the edge applies them.
    subscriptions: Subscriptions,
    /// Messages the router sends several copies of (overlapping subscriptions).
    copies: Copies,
    /// What the client accepts (MQTT 5 CONNECT properties).
    limits: ClientLimits,
    /// Messages an earlier connection of this session sent and the client did not
    /// acknowledge: the router will send them again.
    redeliver: HashSet<u64>,
    /// What a resumed session may still receive of its backlog (see [`Backlog`]).
    backlog: Option<Backlog>,
    /// Topic aliases given to the client, by topic.
    out_aliases: HashMap<Bytes, u16>,
    /// QoS 1/2 PUBLISHes sent to the client and not yet acknowledged by it (PUBACK or
    /// PUBCOMP), for the client's receive maximum.
    inflight_out: usize,
    /// Messages counted but not yet added to the shared metrics.
    unreported: Unreported,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.report_counts();
        self.shared
            .metrics
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Session {
    async fn run<R, W>(
        &mut self,
        io: &mut Io<R, W>,
        certificate: Option<crate::tls::CertificateWatch>,
    ) -> Result<(), ConnectionError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // A certificate revoked since the handshake gets no further (not even the
        // packets pipelined behind CONNECT), and one revoked later ends the connection.
        if let Some(Err(e)) = certificate.as_ref().map(|c| c.check()) {
            return Err(self.revoked(e));
        }
        let invalidated = async move {
            match certificate {
                Some(mut c) => c.invalidated().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(invalidated);
        io.flush().await?;
        let max = io.max_packet();
        // MQTT: the server closes after 1.5 keep-alive periods of silence; 0 disables.
        let grace =
            (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500));
        // One timer per connection, moved on as the client speaks, and one wait for
        // shutdown: made anew on every turn of the loop, they would register with and
        // leave the runtime's timer wheel and the shutdown channel, which all
        // connections share, each time.
        let keepalive = tokio::time::sleep(grace.unwrap_or(NO_KEEP_ALIVE));
        tokio::pin!(keepalive);
        let mut shutdown = self.shared.shutdown.clone();
        let shutdown = shutdown.changed();
        tokio::pin!(shutdown);
        // Packets pipelined behind CONNECT are already buffered.
        if self.drain_frames(io, max).await? {
            return Ok(());
        }
        // A busy client fills the read buffer; then it gets a larger one, so that a
        // flood costs one system call per many packets. An idle one keeps a small one.
        let mut busy = false;
        loop {
            if busy && io.rbuf.capacity() - io.rbuf.len() < BUSY_READ_BUFFER / 2 {
                io.rbuf.reserve(BUSY_READ_BUFFER);
            }
            let spare = io.rbuf.capacity() - io.rbuf.len();
            tokio::select! {
                // While paused, an MQTT 5 client is still read when nothing is buffered
                // (so at most one more packet), to see whether it exceeds its receive
                // maximum.
                r = io.rd.read_buf(&mut io.rbuf), if !self.inflight_full()
                    || (self.version == Version::V5 && io.rbuf.is_empty()) => {
                    let n = r?;
                    if n == 0 {
                        return Err(ConnectionError::Closed);
                    }
                    busy = n >= spare;
                    add(&self.shared.metrics.bytes_in, n as u64);
                    if let Some(g) = grace {
                        keepalive.as_mut().reset(Instant::now() + g);
                    }
                    if self.drain_frames(io, max).await? {
                        return Ok(());
                    }
                }
                n = self.link_rx.next(), if !self.client_window_full() => {
                    if self.inflight_full() {
                        // The client was paused by us, not silent: restart its keep-alive.
                        if let Some(g) = grace {
                            keepalive.as_mut().reset(Instant::now() + g);
                        }
                    }
                    let mut unscheduled = false;
                    let mut stop = self.notifications(&mut io.wbuf, Some(n), &mut unscheduled);
                    while stop == Stop::Full {
                        io.flush().await?;
                        self.flush_router().await?;
                        stop = self.notifications(&mut io.wbuf, None, &mut unscheduled);
                    }
                    if stop == Stop::Closed {
                        io.flush().await?;
                        return Err(ConnectionError::RouterClosed);
                    }
                    self.flush_router().await?;
                    io.flush().await?;
                    // Acknowledgements may have reopened the window for buffered frames.
                    if self.drain_frames(io, max).await? {
                        return Ok(());
                    }
                    if unscheduled {
                        // The router paused us because our queue was full; we drained it.
                        let _ = self.link_rx.wake().await;
                    }
                }
                _ = &mut keepalive, if grace.is_some() && !self.inflight_full() => {
                    return Err(ConnectionError::Timeout);
                }
                e = &mut invalidated => return Err(self.revoked(e)),
                _ = &mut shutdown => {
                    if self.version == Version::V5 {
                        queue_disconnect(&mut io.wbuf, DisconnectReasonCode::ServerShuttingDown);
                    }
                    let _ = io.flush().await;
                    self.will = None;
                    return Ok(());
                }
            }
            // Hand the worker thread to the other connections before the next turn.
            // Without this, a client that keeps its socket full keeps the thread until
            // tokio's budget takes it back (128 socket operations, megabytes of
            // messages), and the connections its messages are for wait behind it. A
            // busy connection also finds more bytes waiting at its next read. (In the
            // benchmark: up to a fifth more throughput, and fewer QoS 0 messages lost
            // to subscribers falling behind.)
            tokio::task::yield_now().await;
        }
    }

    /// The connection's certificate is no longer valid: it ends, without its will.
    fn revoked(&mut self, e: sealpost_certs::CertError) -> ConnectionError {
        inc(&self.shared.metrics.revoked_disconnects);
        warn!(client_id = %self.client_id, error = %e, "client certificate no longer valid: connection closed");
        self.will = None;
        ConnectionError::CertificateInvalidated(e)
    }

    /// Handles every complete frame in the read buffer; true after a clean DISCONNECT.
    async fn drain_frames<R, W>(
        &mut self,
        io: &mut Io<R, W>,
        max: usize,
    ) -> Result<bool, ConnectionError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        while !self.inflight_full() {
            if let Some((kind, pkid)) = codec::take_success_ack(&mut io.rbuf) {
                self.client_ack(pkid, kind);
                continue;
            }
            let Some(frame) = codec::next_frame(&mut io.rbuf, max, Some(self.version))? else {
                break;
            };
            if let Some(r) = self.incoming(&mut io.wbuf, frame, max)? {
                let stored = self.shared.retained.put(&r).await;
                if let Err(e) = stored {
                    warn!(error = %e, topic = %r.topic, "retained message not persisted");
                }
            }
            if self.to_router.len() >= ROUTER_BATCH {
                self.flush_router().await?;
            }
            if self.clean_exit {
                self.flush_router().await?;
                io.flush().await?;
                return Ok(true);
            }
        }
        self.flush_router().await?;
        io.flush().await?;
        if self.receive_maximum_exceeded(&io.rbuf) {
            return Err(ConnectionError::Protocol(
                "receive maximum exceeded",
                DisconnectReasonCode::ReceiveMaximumExceeded,
            ));
        }
        Ok(false)
    }

    /// Too many of the client's QoS 1/2 publishes await the router's acknowledgement:
    /// stop reading (TCP backpressure) until some are acknowledged.
    fn inflight_full(&self) -> bool {
        self.inflight_in >= usize::from(self.shared.config.limits.max_inflight)
    }

    /// Keeps a persistent session's subscription table for its next connection.
    fn save_subscriptions(&self) {
        self.save_session(Vec::new());
    }

    /// At the end of a persistent session's connection: keeps the messages the client
    /// did not acknowledge, which the router will send again, so that they go out with
    /// DUP set. (A connection that takes over a session before this runs sends them
    /// without.)
    fn save_unacknowledged(&self) {
        let unacknowledged = self
            .out_acks
            .iter()
            .filter(|a| !a.done && a.client_ack != 0)
            .map(|a| a.message)
            .chain(self.redeliver.iter().copied())
            .collect();
        self.save_session(unacknowledged);
    }

    fn save_session(&self, unacknowledged: Vec<u64>) {
        if self.session_expiry != Some(0) {
            self.shared.saved_sessions.save(
                &self.client_id,
                SavedSession {
                    subscriptions: self.subscriptions.clone(),
                    origin: self.origin,
                    unacknowledged,
                    awaiting_release: self.awaiting_release.iter().copied().collect(),
                },
            );
        }
    }

    /// The client has as many unacknowledged QoS 1/2 messages as its receive maximum
    /// allows: stop taking messages from the router until it acknowledges one.
    fn client_window_full(&self) -> bool {
        self.limits
            .receive_max
            .is_some_and(|m| self.inflight_out >= usize::from(m))
    }

    /// MQTT 5 §4.9: with receive maximum PUBLISHes unacknowledged (no PUBACK/PUBREC sent
    /// yet), the next QoS 1/2 PUBLISH is a violation. Bytes buffered now were sent
    /// before the client could have seen an acknowledgement still to come, so a QoS
    /// 1/2 PUBLISH at the head of the buffer while the window is full is one. (3.1.1
    /// has no receive maximum: its clients are only paused.)
    fn receive_maximum_exceeded(&self, rbuf: &[u8]) -> bool {
        self.version == Version::V5
            && self.inflight_full()
            && rbuf
                .first()
                .is_some_and(|&b| b >> 4 == kind::PUBLISH && (b >> 1) & 0b11 != 0)
    }

    /// Queues a packet for the router; [`Session::flush_router`] sends the batch. (Not
    /// async, so that the packet handlers are not: an async fn moves its arguments,
    /// here 400-byte `Packet`s, into its future, which cost a third of the edge's time.)
    fn send_router(&mut self, packet: Packet) {
        self.to_router.push_back(packet);
    }

    /// Adds the messages counted since the last batch to the shared metrics. (Once per
    /// batch: an atomic counter every connection increments for every message is a
    /// cache line that the worker threads keep taking from each other.)
    fn report_counts(&mut self) {
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
    async fn flush_router(&mut self) -> Result<(), ConnectionError> {
        self.report_counts();
        if self.slot.send_batch(&mut self.to_router).await {
            Ok(())
        } else {
            Err(ConnectionError::RouterClosed)
        }
    }

    /// Handles one packet from the client. A retained PUBLISH comes back as the write
    /// that must reach the store before the batch for the router is sent.
    fn incoming(
        &mut self,
        wbuf: &mut BytesMut,
        frame: Frame,
        max: usize,
    ) -> Result<Option<RetainedMessage>, ConnectionError> {
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

    fn other_packet(&mut self, wbuf: &mut BytesMut, packet: Packet) -> Result<(), ConnectionError> {
        let v = self.version;
        match packet {
            Packet::PubAck(ack, _) => {
                self.client_ack(ack.pkid, kind::PUBACK);
                Ok(())
            }
            Packet::PubRec(rec, _) => {
                self.client_ack(rec.pkid, kind::PUBREC);
                Ok(())
            }
            Packet::PubRel(rel, _) => {
                // The flow of a routed QoS 2 message (this connection's or an earlier
                // one's), of a denied one (3.1.1 completes its flow without delivery),
                // or no flow at all (MQTT 5: 0x92, packet identifier not found).
                let known = self.awaiting_release.remove(&rel.pkid);
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
                if let Some(c) = self
                    .comps
                    .iter_mut()
                    .find(|c| c.pkid == comp.pkid && !c.auto && !c.done)
                {
                    c.done = true;
                    self.inflight_out = self.inflight_out.saturating_sub(1);
                }
                self.flush_comps();
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
                    let valid = topic::validate_filter(f)
                        || topic::strip_share(f).is_some_and(topic::validate_filter);
                    reasons.push(match (valid, existed) {
                        (false, _) => UnsubAckReason::TopicFilterInvalid,
                        (true, true) => UnsubAckReason::Success,
                        (true, false) => UnsubAckReason::NoSubscriptionExisted,
                    });
                }
                self.save_subscriptions();
                // The router acknowledges only filters it knows; the edge answers for all.
                let filters = unsub
                    .filters
                    .iter()
                    .map(|f| topic::router_filter(f).into_owned())
                    .collect();
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

    fn publish(
        &mut self,
        wbuf: &mut BytesMut,
        header: codec::PublishHeader,
        mut publish: Publish,
        mut props: Option<PublishProperties>,
    ) -> Result<Option<RetainedMessage>, ConnectionError> {
        let v = self.version;
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
            .filter(|t| topic::validate_topic(t))
            .ok_or(ConnectionError::Protocol(
                "invalid topic name",
                DisconnectReasonCode::TopicNameInvalid,
            ))?;

        if !self.shared.acl.may_publish(&self.identity, topic_name) {
            inc(&self.shared.metrics.denied_publish);
            info!(client_id = %self.client_id, topic = %topic_name, "publish denied");
            match header.qos {
                1 => queue(
                    wbuf,
                    Packet::PubAck(
                        PubAck {
                            pkid: header.pkid,
                            reason: match v {
                                Version::V5 => PubAckReason::NotAuthorized,
                                Version::V4 => PubAckReason::Success,
                            },
                        },
                        None,
                    ),
                    v,
                ),
                2 => {
                    let reason = match v {
                        Version::V5 => PubRecReason::NotAuthorized,
                        Version::V4 => {
                            // 3.1.1 has no refusal: complete the flow without delivery.
                            self.awaiting_release.insert(header.pkid);
                            PubRecReason::Success
                        }
                    };
                    queue(wbuf, pubrec(header.pkid, reason), v);
                }
                _ => {}
            }
            return Ok(None);
        }

        if header.qos > 0 {
            // Bounded by backpressure: the loop stops reading at max_inflight.
            self.inflight_in += 1;
        }
        if header.qos == 2 {
            self.awaiting_release.insert(header.pkid);
        }
        let retained = header.retain.then(|| RetainedMessage {
            topic: topic_name.to_owned(),
            qos: header.qos,
            payload: publish.payload.clone(),
            properties: props.clone(),
        });
        let mark = Mark::new(header.qos, header.retain, self.origin);
        self.unreported.messages_in += 1;
        marker::route(publish, props, mark, &mut self.to_router);
        Ok(retained)
    }

    fn subscribe(
        &mut self,
        wbuf: &mut BytesMut,
        sub: Subscribe,
        mut props: Option<rumqttd::protocol::SubscribeProperties>,
    ) {
        let v = self.version;
        let pkid = sub.pkid;
        // The subscription identifier is applied by the edge (one copy carrying every
        // matching identifier); the router would attach one per copy.
        let id = props.as_mut().and_then(|p| p.id.take());
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut allowed = Vec::with_capacity(sub.filters.len());
        let mut renewed = Vec::new();
        let max_subscriptions = self.shared.config.limits.max_subscriptions_per_client;
        for filter in sub.filters {
            let inner = topic::strip_share(&filter.path).filter(|f| topic::validate_filter(f));
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
                // 0) nor takes a new QoS. Unsubscribing and subscribing again in the
                // same batch makes it do both.
                self.subscriptions.insert(filter.path.clone(), s);
                // The router's name for it (see `topic::router_filter`).
                let mut filter = filter;
                if let Cow::Owned(path) = topic::router_filter(&filter.path) {
                    filter.path = path;
                }
                if previous.is_some_and(|p| p.qos != s.qos || !s.suppress_retained) {
                    renewed.push(filter.path.clone());
                }
                allowed.push(filter);
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
        self.pending_subacks.insert(pkid, codes);
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
        self.send_router(Packet::Subscribe(
            Subscribe {
                pkid,
                filters: allowed,
            },
            props,
        ));
    }

    /// A PUBACK/PUBREC from the client for an outgoing message.
    fn client_ack(&mut self, pkid: u16, ack: u8) {
        match self
            .out_acks
            .iter_mut()
            .find(|a| a.pkid == pkid && a.client_ack == ack && !a.done)
        {
            Some(a) => {
                a.done = true;
                if ack == kind::PUBACK {
                    self.inflight_out = self.inflight_out.saturating_sub(1);
                }
            }
            None => debug!(client_id = %self.client_id, pkid, "unsolicited ack ignored"),
        }
        self.flush_acks();
    }

    /// Sends completed acknowledgements to the router, oldest first.
    fn flush_acks(&mut self) {
        while self.out_acks.front().is_some_and(|a| a.done) {
            let Some(a) = self.out_acks.pop_front() else {
                break;
            };
            if a.router_ack == kind::PUBACK {
                self.send_router(Packet::PubAck(
                    PubAck {
                        pkid: a.pkid,
                        reason: PubAckReason::Success,
                    },
                    None,
                ));
            } else {
                self.comps.push_back(Comp {
                    pkid: a.pkid,
                    auto: a.client_ack != kind::PUBREC,
                    done: false,
                });
                self.send_router(pubrec(a.pkid, PubRecReason::Success));
            }
        }
    }

    fn flush_comps(&mut self) {
        while self.comps.front().is_some_and(|c| c.done) {
            let Some(c) = self.comps.pop_front() else {
                break;
            };
            self.send_router(Packet::PubComp(
                PubComp {
                    pkid: c.pkid,
                    reason: PubCompReason::Success,
                },
                None,
            ));
        }
    }

    /// Handles `first` and then the notifications already buffered, so that writes are
    /// batched, up to the client's receive maximum (the rest waits in the router). Not
    /// async: an async loop would move each 250-byte notification into its future.
    fn notifications(
        &mut self,
        wbuf: &mut BytesMut,
        first: Option<Result<Option<Notification>, LinkError>>,
        unscheduled: &mut bool,
    ) -> Stop {
        let mut next = first;
        loop {
            match next {
                Some(Ok(Some(notification))) => {
                    if self.outgoing(wbuf, notification, unscheduled) {
                        return Stop::Closed;
                    }
                }
                Some(Ok(None)) | None => {}
                Some(Err(_)) => {
                    // The router dropped our outgoing channel: the session was taken over
                    // or removed. Its id may already be reused.
                    self.slot.forget();
                    if self.version == Version::V5 {
                        queue_disconnect(wbuf, DisconnectReasonCode::SessionTakenOver);
                    }
                    return Stop::Closed;
                }
            }
            if self.client_window_full() {
                return Stop::Drained;
            }
            if wbuf.len() > WRITE_BATCH || self.to_router.len() >= ROUTER_BATCH {
                return Stop::Full;
            }
            // A deadline already passed: take what is buffered, never block. (Cheaper
            // than polling `next()` once, which moves the notification four times; and
            // a fixed instant, as reading the clock for every message shows in profiles.)
            next = match self.link_rx.recv_deadline(*PAST) {
                Err(LinkError::RecvTimeout(flume::RecvTimeoutError::Timeout)) => {
                    return Stop::Drained
                }
                n => Some(n),
            };
        }
    }

    /// Handles one notification from the router. Returns true when the router closed
    /// the connection.
    fn outgoing(
        &mut self,
        wbuf: &mut BytesMut,
        notification: Notification,
        unscheduled: &mut bool,
    ) -> bool {
        let v = self.version;
        match notification {
            Notification::Forward(forward) => self.forward(wbuf, forward),
            Notification::DeviceAck(ack) => {
                match Option::<Packet>::from(Notification::DeviceAck(ack)) {
                    Some(Packet::PubAck(a, p)) => {
                        self.inflight_in = self.inflight_in.saturating_sub(1);
                        if self.awaiting_release.contains(&a.pkid) {
                            // A QoS 2 publish the router took as QoS 1 (see `incoming`).
                            wbuf.extend_from_slice(&codec::success_ack(kind::PUBREC, a.pkid));
                        } else if p.is_none() && a.reason == PubAckReason::Success {
                            wbuf.extend_from_slice(&codec::success_ack(kind::PUBACK, a.pkid));
                        } else {
                            queue(wbuf, Packet::PubAck(a, p), v);
                        }
                    }
                    // (No PUBREC or PUBCOMP comes for the client's own messages: the
                    // edge hands QoS 2 to the router as QoS 1, see `incoming`.)
                    Some(Packet::PubRel(r, p)) => {
                        let pkid = r.pkid;
                        match self.comps.iter_mut().find(|c| c.pkid == pkid && !c.done) {
                            Some(c) if c.auto => {
                                c.done = true;
                                self.flush_comps();
                            }
                            Some(_) => queue(wbuf, Packet::PubRel(r, p), v),
                            None => {
                                // A PUBREL resent for a persistent session's earlier flow.
                                self.comps.push_back(Comp {
                                    pkid,
                                    auto: false,
                                    done: false,
                                });
                                queue(wbuf, Packet::PubRel(r, p), v);
                            }
                        }
                    }
                    Some(Packet::SubAck(ack, _)) => {
                        if let Some(codes) = self.pending_subacks.remove(&ack.pkid) {
                            queue(
                                wbuf,
                                Packet::SubAck(
                                    SubAck {
                                        pkid: ack.pkid,
                                        return_codes: codes,
                                    },
                                    None,
                                ),
                                v,
                            );
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
}

impl Session {
    /// Delivers (or skips) one message the router forwards to this client.
    fn forward(&mut self, wbuf: &mut BytesMut, forward: rumqttd::Forward) {
        let v = self.version;
        let mut publish = forward.publish;
        // The router sets RETAIN only on retained messages sent at subscribe.
        let at_subscribe = publish.retain;
        let mut props = forward.properties;
        let mark = Mark::take(&mut publish.payload);
        if mark.is_some_and(|m| m.properties) {
            // The properties travelled in the payload (see `marker`).
            props = marker::take_properties(&mut publish.payload, props.take());
        }
        // Properties the edge may change need a copy to re-encode from (rumqttd keeps
        // the QoS and packet id of a `Publish` private, so they are read back from the
        // encoded bytes).
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
        let rewrite = (self.limits.topic_alias_max > 0 || self.subscriptions.has_identifiers())
            .then(|| publish.clone());
        let start = wbuf.len();
        let first = match rewrite {
            Some(_) => props.clone(),
            None => props.take(),
        };
        if let Err(e) = codec::encode(Packet::Publish(publish, first), v, wbuf) {
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
        if !readable {
            // Another reader's key message (see `Acl::may_read`): this client's
            // subscription matched it, but it is not for this client.
            wbuf.truncate(start);
            return self.skip(h);
        }
        let copy = Copy {
            message: mark.message,
            at_subscribe,
            own: mark.origin == self.origin,
            retained: mark.retain,
            router_qos: h.qos,
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
        if let Some(b) = self.backlog.as_mut() {
            if !at_subscribe && mark.message < b.before {
                if b.left == 0 {
                    wbuf.truncate(start);
                    return self.skip(h);
                }
                b.left -= 1;
            }
        }
        if let Some(mut publish) = rewrite {
            // Subscription identifiers are the edge's (the router never sees them), and
            // topic aliases are given per topic here.
            let mut p = props.take().unwrap_or_default();
            p.subscription_identifiers = ids;
            p.topic_alias = None;
            let mut new_alias = None;
            if self.limits.topic_alias_max > 0 {
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
            if let Err(e) = codec::encode(Packet::Publish(publish, p), v, wbuf) {
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
            debug!(client_id = %self.client_id, size = wbuf.len() - start, "message larger than the client accepts skipped");
            wbuf.truncate(start);
            return self.skip(h);
        }
        if retain {
            wbuf[start] |= 1;
        }
        // The router sends a resumed session's unacknowledged messages again as if new:
        // MQTT wants DUP on a re-delivery (3.1.1 §3.3.1.1, 5 §3.3.1.1).
        if !self.redeliver.is_empty() && self.redeliver.remove(&mark.message) && h.qos > 0 {
            wbuf[start] |= 0b1000;
        }
        let delivery = mark.qos.min(h.qos).min(max_qos);
        if delivery < h.qos {
            if let Some(rewritten) = codec::downgrade_publish(&wbuf[start..], delivery) {
                wbuf.truncate(start);
                wbuf.extend_from_slice(&rewritten);
            }
        }
        self.unreported.messages_out += 1;
        if h.qos > 0 {
            let client_ack = match delivery {
                0 => 0,
                1 => kind::PUBACK,
                _ => kind::PUBREC,
            };
            if delivery > 0 {
                self.inflight_out += 1;
            }
            self.out_acks.push_back(OutAck {
                pkid: h.pkid,
                client_ack,
                router_ack: router_ack(h.qos),
                done: delivery == 0,
                message: mark.message,
            });
            if delivery == 0 {
                self.flush_acks();
            }
        }
    }

    /// Whether a packet of `len` bytes may be sent to the client.
    fn fits(&self, len: usize) -> bool {
        self.limits
            .max_packet_size
            .map_or(true, |m| len <= m as usize)
    }

    /// A forwarded message not sent to this client: the router still needs its
    /// acknowledgement, in order.
    fn skip(&mut self, h: codec::PublishHeader) {
        if h.qos == 0 {
            return;
        }
        self.out_acks.push_back(OutAck {
            pkid: h.pkid,
            client_ack: 0,
            router_ack: router_ack(h.qos),
            done: true,
            message: 0,
        });
        self.flush_acks();
    }
}

/// A PUBREC for packet id `pkid` (to the client for its publish, or to the router).
fn pubrec(pkid: u16, reason: PubRecReason) -> Packet {
    Packet::PubRec(PubRec { pkid, reason }, None)
}

/// The acknowledgement the router expects for a message it sent at `qos`.
fn router_ack(qos: u8) -> u8 {
    if qos == 1 {
        kind::PUBACK
    } else {
        kind::PUBREC
    }
}

/// Whether a PUBLISH's properties are all absent. (Comparing with
/// `PublishProperties::default()` builds and drops a value on every message; naming
/// every field makes a field added by rumqttd a compile error here.)
fn no_properties(p: &PublishProperties) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_ids_are_escaped_injectively() {
        assert_eq!(router_client_id("plain-id"), "plain-id");
        assert_eq!(router_client_id("a/b"), "a%2Fb");
        assert_eq!(router_client_id("%2F"), "%252F");
        assert_ne!(router_client_id("a/b"), router_client_id("a%2Fb"));
        for c in ['+', '$', '#', '/'] {
            assert!(!router_client_id(&format!("x{c}y")).contains(c));
        }
    }
}
