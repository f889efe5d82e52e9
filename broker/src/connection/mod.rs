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
//! - QoS 1/2 messages are taken off the router at once and held in the session's
//!   queue until the client acknowledges them (see `queue`), bounded by
//!   `limits.max_queued_messages` (drops counted, or the publishers slowed); a resumed
//!   session's unacknowledged messages are re-sent with DUP.
//!
//! One part per file: `io` (framing, reads and writes), `connect` (CONNECT, auth,
//! CONNACK), `event_loop` (the per-connection loop), `inbound` (packets from the
//! client), `acks` (acknowledgements towards the router), `outbound` (delivery to the
//! client), `link` (the router link, which a quiet publish-only connection is
//! without), `drops` (what is not delivered is counted and logged), and `state` (what
//! a connection holds). The connection uses `session` for
//! what outlives it; nothing below it refers back to it.

mod acks;
mod connect;
mod drops;
mod event_loop;
mod inbound;
mod io;
mod link;
mod outbound;
mod state;

use crate::acl::Identity;
use crate::codec::{FrameError, Version};
use crate::metrics::inc;
use crate::session::Ending;
use crate::shared::Shared;
use bytes::BytesMut;
use connect::accept;
use io::{queue_disconnect, Io, ReadSide};
use rumqttd::protocol::DisconnectReasonCode;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

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
    /// A newer connection with the same client id took over this one while it had no
    /// router link (see `link`).
    #[error("session taken over")]
    TakenOver,
    /// The client certificate was revoked (or expired) while the connection was open.
    #[error("client certificate no longer valid: {0}")]
    CertificateInvalidated(sealpost_certs::CertError),
    /// A message for a persistent session could not be stored: it is not acknowledged
    /// (the client sends it again on its next connection).
    #[error("store: {0}")]
    Storage(crate::store::StoreError),
}

/// Serves one connection to the end. Never panics on peer input; every exit path drops
/// the `RouterSlot`, which releases the router slot.
///
/// (Not an `async fn`, nor [`serve_tcp`]: the future of one would hold its arguments, the
/// peer's 120 bytes among them, for as long as the connection lasts, in every
/// connection's task. The peer is boxed, and given back once the client is accepted.)
pub fn serve<S>(stream: S, shared: Arc<Shared>, peer: PeerInfo) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (rd, wr) = tokio::io::split(stream);
    serve_halves(rd, wr, shared, Box::new(peer))
}

/// [`serve`] for a plain TCP connection: its halves need no lock between them, and what
/// the client sends can be acknowledged at once (see `io::ReadSide`).
pub fn serve_tcp(
    stream: tokio::net::TcpStream,
    shared: Arc<Shared>,
    peer: PeerInfo,
) -> impl Future<Output = ()> + Send {
    let (rd, wr) = stream.into_split();
    serve_halves(rd, wr, shared, Box::new(peer))
}

async fn serve_halves<R, W>(rd: R, wr: W, shared: Arc<Shared>, mut peer: Box<PeerInfo>)
where
    R: ReadSide,
    W: AsyncWrite + Unpin,
{
    let mut io = Io {
        rd,
        wr,
        rbuf: BytesMut::with_capacity(io::READ_BUFFER),
        wbuf: BytesMut::new(),
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
    // Boxed: its state is needed once, and inline it would take room in the future
    // of every connection for as long as the connection lasts.
    let Some(mut session) = Box::pin(accept(&mut io, connect, &peer)).await else {
        return;
    };
    let certificate_watch = peer.certificate_watch.take();
    drop(peer);
    let result = session.run(&mut io, certificate_watch).await;
    // The counterpart of "client connected": every accepted connection logs how it
    // ended, at info (an ordinary end is no error of the broker's).
    match &result {
        Ok(()) => {
            let reason = if *shared.shutdown.borrow() {
                "broker shutting down"
            } else {
                "DISCONNECT"
            };
            info!(client_id = %session.client_id, reason = %reason, "client disconnected");
        }
        Err(e) => {
            note_error(&shared, e);
            info!(client_id = %session.client_id, reason = %e, "client disconnected");
        }
    }
    let code = match &result {
        Err(ConnectionError::Frame(FrameError::TooLarge(_))) => {
            Some(DisconnectReasonCode::PacketTooLarge)
        }
        Err(ConnectionError::Frame(_)) => Some(DisconnectReasonCode::MalformedPacket),
        Err(ConnectionError::Protocol(_, code)) => Some(*code),
        Err(ConnectionError::Timeout) => Some(DisconnectReasonCode::KeepAliveTimeout),
        Err(ConnectionError::TakenOver) => Some(DisconnectReasonCode::SessionTakenOver),
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
    // schedules the end of the session (see `session`), which keeps what the
    // connection held for the client.
    let ending = Ending {
        generation: session.generation,
        expiry: session.session_expiry,
        router_clean: session.router_clean,
        will,
        will_delay: session.will_delay,
        held: session.take_held(),
    };
    let client_id = session.client_id.clone();
    // Boxed, as the other steps awaited once (see `accept`).
    let lost = Box::pin(
        shared
            .sessions
            .connection_ended(&client_id, &mut session.slot, ending),
    )
    .await;
    for _ in lost {
        session
            .drops
            .note(&shared.metrics, &client_id, drops::DropReason::TakenOver);
    }
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
