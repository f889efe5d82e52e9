//! The connection's bytes: reading frames from the socket, and encoding and writing
//! packets to it under a write timeout.

use super::ConnectionError;
use crate::codec::{self, FrameError, Version};
use crate::metrics::add;
use crate::shared::Shared;
use bytes::BytesMut;
use rumqttd::protocol::{DisconnectReasonCode, Packet};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::warn;

/// Longest a write to a client may block.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Read buffer of a client that is sending, and the first allocation of a write
/// buffer. An idle connection holds neither (see [`Io::release_idle_buffers`]).
pub(super) const BUFFER: usize = 4096;

/// Bytes read without a buffer when a client speaks after being idle: enough for a
/// PINGREQ, acknowledgements or a small PUBLISH. It lives in the connection's task
/// (whose size every connection pays), so it is small; a client that fills it gets a
/// [`BUFFER`] for the rest.
const FIRST_READ: usize = 64;

/// Encodes an MQTT 5 DISCONNECT by hand: rumqttd 0.20 writes a remaining length of 1
/// followed by two bytes (reason and property length), which clients reject.
pub(super) fn queue_disconnect(wbuf: &mut BytesMut, code: DisconnectReasonCode) {
    wbuf.extend_from_slice(&[0xe0, 0x01, disconnect_code(code)]);
}

/// MQTT 5 reason code byte of a disconnect reason.
pub(super) fn disconnect_code(code: DisconnectReasonCode) -> u8 {
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

pub(super) struct Io<R, W> {
    pub(super) rd: R,
    pub(super) wr: W,
    pub(super) rbuf: BytesMut,
    pub(super) wbuf: BytesMut,
    pub(super) shared: Arc<Shared>,
}

pub(super) struct ConnectPacket {
    pub(super) version: Version,
    pub(super) packet: Packet,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Io<R, W> {
    pub(super) fn max_packet(&self) -> usize {
        self.shared.config.limits.max_packet_size
    }

    /// Reads more bytes; `Closed` at end of stream.
    pub(super) async fn fill(&mut self) -> Result<(), ConnectionError> {
        let n = self.rd.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(ConnectionError::Closed);
        }
        add(&self.shared.metrics.bytes_in, n as u64);
        Ok(())
    }

    /// Reads what the client sent, at least one byte; returns how many and whether
    /// they filled the buffer (more may be waiting). An idle connection has no read
    /// buffer: it reads into a few bytes on the stack, then gets one.
    pub(super) async fn read(&mut self) -> std::io::Result<(usize, bool)> {
        let spare = self.rbuf.capacity() - self.rbuf.len();
        if spare > 0 {
            let n = self.rd.read_buf(&mut self.rbuf).await?;
            return Ok((n, n >= spare));
        }
        let mut first = [0u8; FIRST_READ];
        let n = self.rd.read(&mut first).await?;
        if n > 0 {
            self.rbuf.reserve(BUFFER);
            self.rbuf.extend_from_slice(&first[..n]);
        }
        Ok((n, n == FIRST_READ))
    }

    /// Gives the buffers back when they hold nothing: an idle connection keeps no
    /// buffer, and one that wakes up allocates what it needs (one allocation each, a
    /// bounded cost per wake-up). `keep_read` / `keep_write`: the client is sending or
    /// receiving a flood, which keeps its buffers (and their grown size).
    pub(super) fn release_idle_buffers(&mut self, keep_read: bool, keep_write: bool) {
        if !keep_read && self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
        if !keep_write && self.wbuf.is_empty() && self.wbuf.capacity() > 0 {
            self.wbuf = BytesMut::new();
        }
    }

    /// A write buffer for what is about to be written, if the connection gave its
    /// buffer back (it grows from there as needed).
    pub(super) fn prepare_write(&mut self) {
        if self.wbuf.capacity() == 0 {
            self.wbuf.reserve(BUFFER);
        }
    }

    pub(super) async fn read_connect(&mut self) -> Result<ConnectPacket, ConnectionError> {
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

    pub(super) fn queue(&mut self, packet: Packet, version: Version) {
        queue(&mut self.wbuf, packet, version);
    }

    /// Writes everything queued. A client that stops reading cannot hold its
    /// connection (and router slot) forever: the write must finish within
    /// [`WRITE_TIMEOUT`].
    pub(super) async fn flush(&mut self) -> Result<(), ConnectionError> {
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
pub(super) fn queue(wbuf: &mut BytesMut, packet: Packet, version: Version) {
    if let Err(e) = codec::encode(packet, version, wbuf) {
        warn!(error = %e, "cannot encode outgoing packet");
    }
}
