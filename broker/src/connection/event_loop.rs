//! The per-connection loop: waits on the socket, the router link, the keep-alive
//! timer, certificate revocation and shutdown, and hands each to its part.

use super::io::{queue_disconnect, Io};
use super::link::{next_notification, taken_over};
use super::state::Connection;
use super::ConnectionError;
use crate::codec;
use crate::codec::Version;
use crate::metrics::{add, inc};
use rumqttd::protocol::{DisconnectReasonCode, PubAck, PubAckReason};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::time::Instant;
use tracing::warn;

/// Read buffer of a client that keeps it full.
pub(super) const BUSY_READ_BUFFER: usize = 64 * 1024;

/// Packets for the router are sent in batches of at most this many (one wake-up of the
/// router thread each).
pub(super) const ROUTER_BATCH: usize = 256;

/// The keep-alive timer's first deadline when the client has none (never reached: that
/// branch is off).
pub(super) const NO_KEEP_ALIVE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Where [`Connection::notifications`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Nothing more is buffered, or the client's receive maximum is reached.
    Drained,
    /// The write buffer or the batch for the router is full: send them, then go on.
    Full,
    /// The router closed the connection.
    Closed,
}

impl Connection {
    pub(super) async fn run<R, W>(
        &mut self,
        io: &mut Io<R, W>,
        certificate: Option<crate::tls::CertificateWatch>,
    ) -> Result<(), ConnectionError>
    where
        R: super::io::ReadSide,
        W: AsyncWrite + Unpin,
    {
        // A certificate revoked since the handshake gets no further (not even the
        // packets pipelined behind CONNECT), and one revoked later ends the connection.
        if let Some(Err(e)) = certificate.as_ref().map(|c| c.check()) {
            return Err(self.revoked(e));
        }
        // Boxed, and only for a connection with a certificate: inline, the wait and
        // its (large) error would take room in the task of every connection.
        let mut invalidated =
            certificate.map(|mut c| Box::pin(async move { c.invalidated().await }));
        self.rejoin_router_filters();
        // What the session's last connection held goes first.
        self.send_queued(&mut io.wbuf);
        // Then what the store holds for it (before anything the router sends).
        // (Boxed, as what is awaited once: inline, its state would take room in
        // the connection's task for as long as it lasts.)
        Box::pin(self.deliver_stored(&mut io.wbuf)).await?;
        // The packet ids it is sent with are stored first (see `Op::Sent`).
        self.flush_router().await?;
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
        // When the link's quiet time is next checked (see `link`): a connection whose
        // link carried nothing for one to two of these gives it back if it needs none
        // of its own. Only while it has such a link, and boxed: most of the time a
        // publish-only connection has none, and every connection's task would hold
        // the timer.
        let link_idle = self
            .shared
            .config
            .limits
            .router_link_idle()
            .filter(|_| self.router_clean);
        let mut link_check = None;
        // Packets pipelined behind CONNECT are already buffered.
        if self.drain_frames(io, max).await? {
            return Ok(());
        }
        // A busy client fills the read buffer; then it gets a larger one, so that a
        // flood costs one system call per many packets. An idle one keeps a small one.
        let mut busy = false;
        loop {
            // While it waits, an idle connection holds no buffer (see `io`).
            io.release_idle_buffers(busy);
            if busy && io.rbuf.capacity() - io.rbuf.len() < BUSY_READ_BUFFER / 2 {
                io.rbuf.reserve(BUSY_READ_BUFFER);
            }
            let paused = self.paused(&io.rbuf);
            if let (Some(idle), None, true) = (link_idle, &link_check, self.link_rx.is_some()) {
                link_check = Some(Box::pin(tokio::time::sleep(idle)));
            }
            tokio::select! {
                // With the window full, the client is still read until a QoS 1/2
                // PUBLISH is next: what comes before it may complete a flow (PUBREL),
                // and an MQTT 5 client's PUBLISH beyond its receive maximum is seen.
                r = io.read(), if !paused => {
                    let (n, filled) = r?;
                    io.prepare_write();
                    if n == 0 {
                        return Err(ConnectionError::Closed);
                    }
                    busy = filled;
                    add(&self.shared.metrics.bytes_in, n as u64);
                    if let Some(g) = grace {
                        keepalive.as_mut().reset(Instant::now() + g);
                    }
                    if self.drain_frames(io, max).await? {
                        return Ok(());
                    }
                    if std::mem::take(&mut self.acknowledge_now) {
                        io.rd.acknowledge_now();
                    }
                }
                // Always read, whatever the client's window: what does not fit waits
                // in the session's queue (see `queue`), so the router never sees this
                // subscriber fall behind.
                // Every batch sent counts as stored before the router's acknowledgements
                // of it are read (see `flush_router`).
                r = settled(&mut self.unsettled), if !self.unsettled.is_empty() => {
                    r?;
                }
                // The router's acknowledgements of what went through the shared
                // publishing link (see `crate::publish_link`).
                acks = shared_acks(&self.publish_acks), if self.unsettled.is_empty() && self.published_unacked > 0 => {
                    let Ok(pkids) = acks else {
                        return Err(ConnectionError::RouterClosed);
                    };
                    io.prepare_write();
                    if paused {
                        // The client was paused by us (its window full), not silent.
                        if let Some(g) = grace {
                            keepalive.as_mut().reset(Instant::now() + g);
                        }
                    }
                    self.published_unacked = self.published_unacked.saturating_sub(pkids.len());
                    if self.published_unacked == 0 {
                        self.publish_acks = None;
                    }
                    for pkid in pkids {
                        let ack = PubAck { pkid, reason: PubAckReason::Success };
                        self.routed(&mut io.wbuf, ack, None);
                    }
                    io.flush().await?;
                    // Acknowledgements may have reopened the window for buffered frames.
                    if self.drain_frames(io, max).await? {
                        return Ok(());
                    }
                }
                // Its own link's are read once those have come: the client's PUBACKs
                // go in the order of its PUBLISHes.
                n = next_notification(&mut self.link_rx), if self.unsettled.is_empty() && self.published_unacked == 0 => {
                    io.prepare_write();
                    self.link_used = true;
                    if paused {
                        // The client was paused by us, not silent: restart its keep-alive.
                        if let Some(g) = grace {
                            keepalive.as_mut().reset(Instant::now() + g);
                        }
                    }
                    let mut unscheduled = false;
                    let mut stop = self.notifications(&mut io.wbuf, Some(n), &mut unscheduled);
                    while stop == Stop::Full {
                        // The router's batch first: what must be stored before the
                        // client sees it (see `Op::Sent`) is written with it.
                        self.flush_router().await?;
                        settled(&mut self.unsettled).await?;
                        io.flush().await?;
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
                        if let Some(link_rx) = self.link_rx.as_mut() {
                            let _ = link_rx.wake().await;
                        }
                    }
                }
                _ = until(&mut link_check) => {
                    if !std::mem::take(&mut self.link_used) && self.may_unlink() {
                        Box::pin(self.unlink()).await;
                    }
                    // A new timer when the link is next used (or still there).
                    link_check = None;
                }
                _ = taken_over(&mut self.take_over) => return Err(ConnectionError::TakenOver),
                _ = &mut keepalive, if grace.is_some() && !paused => {
                    return Err(ConnectionError::Timeout);
                }
                // A slow subscriber held this publisher back and has drained.
                _ = self.shared.backpressure.released(), if paused && self.held_back() => {
                    if let Some(g) = grace {
                        keepalive.as_mut().reset(Instant::now() + g);
                    }
                    if self.drain_frames(io, max).await? {
                        return Ok(());
                    }
                }
                e = certificate_invalidated(&mut invalidated) => return Err(self.revoked(*e)),
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
    pub(super) fn revoked(&mut self, e: sealpost_certs::CertError) -> ConnectionError {
        inc(&self.shared.metrics.revoked_disconnects);
        warn!(client_id = %self.client_id, error = %e, "client certificate no longer valid: connection closed");
        self.will = None;
        ConnectionError::CertificateInvalidated(e)
    }

    /// Handles every complete frame in the read buffer; true after a clean DISCONNECT.
    pub(super) async fn drain_frames<R, W>(
        &mut self,
        io: &mut Io<R, W>,
        max: usize,
    ) -> Result<bool, ConnectionError>
    where
        R: super::io::ReadSide,
        W: AsyncWrite + Unpin,
    {
        while !self.paused(&io.rbuf) {
            if let Some((kind, pkid)) = codec::take_success_ack(&mut io.rbuf) {
                self.client_ack(&mut io.wbuf, pkid, kind, false);
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
                "receive maximum exceeded (QoS 1/2 flows not completed)",
                DisconnectReasonCode::ReceiveMaximumExceeded,
            ));
        }
        Ok(false)
    }
}

/// Completes, with why, when the connection's certificate is no longer valid; never for
/// a connection without one.
async fn certificate_invalidated<F>(watch: &mut Option<F>) -> Box<sealpost_certs::CertError>
where
    F: std::future::Future<Output = sealpost_certs::CertError> + Unpin,
{
    match watch {
        Some(w) => Box::new(w.await),
        None => std::future::pending().await,
    }
}

/// Completes when every batch in `unsettled` counts as stored, and empties it; the first
/// failure ends the connection. Cancel-safe (see `Pending::done`).
async fn settled(unsettled: &mut Vec<crate::store::Pending>) -> Result<(), ConnectionError> {
    for pending in unsettled.iter_mut() {
        pending.done().await.map_err(ConnectionError::Storage)?;
    }
    unsettled.clear();
    Ok(())
}

/// The next acknowledgements from the shared publishing link; never without any to come.
async fn shared_acks(
    acks: &Option<std::sync::Arc<crate::publish_link::Acks>>,
) -> Result<Vec<u16>, crate::router::LinkFailed> {
    match acks {
        Some(acks) => acks.wait().await,
        None => std::future::pending().await,
    }
}

/// Completes when the timer, if there is one, does.
async fn until(timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}
