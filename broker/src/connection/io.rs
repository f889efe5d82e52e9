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

/// The read buffer of a client that is sending (one that keeps it full gets a larger
/// one, see `event_loop`).
pub(super) const READ_BUFFER: usize = 4096;

/// Bytes read without a buffer when an idle client speaks: enough for a PINGREQ or a
/// few acknowledgements. They live in the connection's task, which every connection
/// pays for, so they are few.
const FIRST_READ: usize = 64;

/// Longest a write to a client may block.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

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

/// The read side of a client's byte stream.
pub(super) trait ReadSide: AsyncRead + Unpin {
    /// Asks the kernel to acknowledge what was read at once (TCP quick ACK).
    ///
    /// Why: most MQTT clients leave Nagle's algorithm on (rumqttc, libmosquitto and
    /// paho do by default). A subscriber that acknowledges a burst of QoS 1 messages
    /// sends its first PUBACK at once and holds the others until the broker's TCP
    /// acknowledgement of it, which Linux delays (delayed ACK) until the broker has
    /// something to send that client. With `sync = "always"` a publisher's PUBACK
    /// waits for those acknowledgements (or for the store's commit, see
    /// `store::settle`), so every round took a commit's time: 11 k msg/s in the
    /// benchmark against 84 k msg/s with the subscriber's Nagle off. Only then: an ACK
    /// of its own for every read costs the in-memory broker about a third of its QoS 1
    /// throughput (it otherwise rides on the next packet to the client).
    fn acknowledge_now(&self) {}

    /// Waits until something can be read, without reading it; `false`: this side
    /// cannot tell (it must be read to know). Lets an idle connection wait without a
    /// buffer and read into a whole one when the client speaks.
    fn readable(&self) -> impl std::future::Future<Output = std::io::Result<bool>> + Send {
        std::future::ready(Ok(false))
    }
}

impl ReadSide for tokio::net::tcp::OwnedReadHalf {
    fn acknowledge_now(&self) {
        // TCP_QUICKACK is a Linux option, and not a lasting one: it is set again each
        // time. A failure only costs the delay it avoids.
        #[cfg(target_os = "linux")]
        let _ = self.as_ref().set_quickack(true);
    }

    async fn readable(&self) -> std::io::Result<bool> {
        tokio::net::tcp::OwnedReadHalf::readable(self).await?;
        Ok(true)
    }
}

/// TLS and WebSocket streams, and the in-process streams of tests: nothing to do.
impl<S: AsyncRead> ReadSide for tokio::io::ReadHalf<S> {}

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

impl<R: ReadSide, W: AsyncWrite + Unpin> Io<R, W> {
    pub(super) fn max_packet(&self) -> usize {
        self.shared.config.limits.max_packet_size
    }

    /// Reads what the client sent (0 bytes: it closed); returns how many and whether
    /// they filled the read buffer's room (more may be waiting). A connection that gave
    /// its buffer back (see [`Io::release_idle_buffers`]) waits with none: it reads into
    /// a few bytes on the stack, then gets a [`READ_BUFFER`] for them and what follows.
    pub(super) async fn read(&mut self) -> std::io::Result<(usize, bool)> {
        let spare = self.rbuf.capacity() - self.rbuf.len();
        if spare > 0 {
            let n = self.rd.read_buf(&mut self.rbuf).await?;
            return Ok((n, n >= spare));
        }
        if self.rd.readable().await? {
            self.rbuf = spare::take();
            let spare = self.rbuf.capacity();
            let n = self.rd.read_buf(&mut self.rbuf).await?;
            return Ok((n, n >= spare));
        }
        let mut first = [0u8; FIRST_READ];
        let n = self.rd.read(&mut first).await?;
        if n > 0 {
            self.rbuf = spare::take();
            self.rbuf.extend_from_slice(&first[..n]);
        }
        // Not "filled": the next read, into the new buffer, tells whether the client
        // is busy.
        Ok((n, false))
    }

    /// Gives back the buffers of a connection that has nothing in them, unless the
    /// client keeps its read buffer full (`busy`), so that an idle connection holds no
    /// buffer. One that wakes up allocates what it needs: an allocation per buffer
    /// and wake-up, against 8 KiB held by every idle connection.
    pub(super) fn release_idle_buffers(&mut self, busy: bool) {
        if !busy && self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            spare::give_back(std::mem::take(&mut self.rbuf));
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 0 {
            spare::give_back(std::mem::take(&mut self.wbuf));
        }
    }

    /// A write buffer for a connection that woke up without one (it would otherwise
    /// grow from nothing, an allocation at a time).
    pub(super) fn prepare_write(&mut self) {
        if self.wbuf.capacity() == 0 {
            self.wbuf = spare::take();
        }
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

/// Buffers that connections gave back while they wait, kept by each worker thread for
/// the next connection that wakes up on it: an idle connection holds no buffer, and a
/// busy one does not pay an allocation and a free for each buffer at every wake-up
/// (measured: a tenth of the QoS 1 rate when every wake-up did). At most [`MAX`]
/// buffers of at most [`LARGEST`] bytes each per thread.
mod spare {
    use super::READ_BUFFER;
    use bytes::BytesMut;
    use std::cell::RefCell;

    /// Buffers kept per worker thread.
    const MAX: usize = 64;
    /// Larger buffers (grown by a flood) are freed rather than kept.
    const LARGEST: usize = 64 * 1024;

    thread_local! {
        static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty buffer of at least [`READ_BUFFER`] bytes.
    pub(super) fn take() -> BytesMut {
        SPARE
            .with(|s| s.borrow_mut().pop())
            .unwrap_or_else(|| BytesMut::with_capacity(READ_BUFFER))
    }

    /// Keeps `buffer` for [`take`], if there is room and it is not too large.
    pub(super) fn give_back(mut buffer: BytesMut) {
        if buffer.capacity() < READ_BUFFER || buffer.capacity() > LARGEST {
            return;
        }
        buffer.clear();
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < MAX {
                s.push(buffer);
            }
        });
    }
}
