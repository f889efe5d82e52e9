//! MQTT framing and validation in front of rumqttd's codecs.
//!
//! rumqttd's decoders assume a well-behaved peer: some packet types a client must never
//! send reach `unreachable!()`. So every frame is checked here first (fixed header, packet
//! type allowed from a client, reserved flags, size limit) and only then decoded, inside
//! `catch_unwind` as a second line of defence. Nothing here looks at payloads.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rumqttd::protocol::{v4::V4, v5::V5, Packet, Protocol, Publish, PublishProperties};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// MQTT protocol level negotiated by CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The remaining length is not a valid variable byte integer.
    #[error("malformed remaining length")]
    MalformedLength,
    /// The packet is larger than the configured maximum.
    #[error("packet of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A packet type a client may not send (server-only or reserved).
    #[error("packet type {0} is not allowed from a client")]
    ForbiddenType(u8),
    /// Reserved flag bits are wrong for the packet type.
    #[error("invalid flags {flags:#06b} for packet type {kind}")]
    BadFlags {
        /// Packet type.
        kind: u8,
        /// Low nibble of the first byte.
        flags: u8,
    },
    /// The first packet is not CONNECT, or CONNECT is not a known MQTT version.
    #[error("not an MQTT 3.1.1 or 5 CONNECT")]
    BadConnect,
    /// The protocol level in CONNECT is not 4 or 5.
    #[error("unsupported protocol level {0}")]
    UnsupportedVersion(u8),
    /// rumqttd's decoder refused the body.
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// A complete, checked frame (fixed header included).
#[derive(Debug, Clone)]
pub struct Frame {
    /// Packet type (high nibble of the first byte).
    pub kind: u8,
    /// Low nibble of the first byte.
    pub flags: u8,
    /// Length of the fixed header.
    pub header_len: usize,
    /// The whole packet.
    pub bytes: BytesMut,
}

/// Packet type numbers (MQTT 3.1.1 / 5 §2.1.2).
pub mod kind {
    /// CONNECT
    pub const CONNECT: u8 = 1;
    /// PUBLISH
    pub const PUBLISH: u8 = 3;
    /// PUBACK
    pub const PUBACK: u8 = 4;
    /// PUBREC
    pub const PUBREC: u8 = 5;
    /// PUBREL
    pub const PUBREL: u8 = 6;
    /// PUBCOMP
    pub const PUBCOMP: u8 = 7;
    /// SUBSCRIBE
    pub const SUBSCRIBE: u8 = 8;
    /// UNSUBSCRIBE
    pub const UNSUBSCRIBE: u8 = 10;
    /// PINGREQ
    pub const PINGREQ: u8 = 12;
    /// DISCONNECT
    pub const DISCONNECT: u8 = 14;
}

/// A PUBACK or PUBREC with reason Success and no properties, the bulk of QoS 1/2
/// traffic: four bytes in both versions (MQTT 5 §3.4.2.1 leaves the reason code out
/// then), written directly instead of through the general encoder.
pub fn success_ack(kind: u8, pkid: u16) -> [u8; 4] {
    let [hi, lo] = pkid.to_be_bytes();
    [kind << 4, 2, hi, lo]
}

/// Takes a [`success_ack`] from the front of `buf`: its kind and packet id. Reading it
/// in place saves splitting a frame off the shared read buffer (two atomic operations)
/// for what is most of a subscriber's traffic.
pub fn take_success_ack(buf: &mut BytesMut) -> Option<(u8, u16)> {
    let &[first, 2, hi, lo, ..] = &buf[..] else {
        return None;
    };
    let kind = first >> 4;
    if first & 0x0f != 0 || !matches!(kind, kind::PUBACK | kind::PUBREC) {
        return None;
    }
    buf.advance(4);
    Some((kind, u16::from_be_bytes([hi, lo])))
}

/// Reads a variable byte integer; `Ok(None)` when more bytes are needed.
fn var_int(buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        value |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(FrameError::MalformedLength)
}

fn put_var_int(out: &mut BytesMut, mut v: usize) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if v == 0 {
            break;
        }
    }
}

/// Splits the next complete frame off `buf`, after checking the fixed header.
///
/// Returns `Ok(None)` while the frame is incomplete; an oversized frame is refused as
/// soon as its length is known, before its body is buffered.
pub fn next_frame(
    buf: &mut BytesMut,
    max_packet: usize,
    version: Option<Version>,
) -> Result<Option<Frame>, FrameError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let kind = first >> 4;
    let flags = first & 0x0f;
    check_type(kind, flags, version)?;
    let Some((remaining, len_bytes)) = var_int(&buf[1..])? else {
        return Ok(None);
    };
    let header_len = 1 + len_bytes;
    let total = header_len + remaining;
    if total > max_packet {
        return Err(FrameError::TooLarge(total));
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(Frame {
        kind,
        flags,
        header_len,
        bytes: buf.split_to(total),
    }))
}

fn check_type(kind: u8, flags: u8, version: Option<Version>) -> Result<(), FrameError> {
    // Before CONNECT only CONNECT is acceptable; after it, CONNECT is a protocol error.
    match version {
        None if kind != kind::CONNECT => return Err(FrameError::BadConnect),
        Some(_) if kind == kind::CONNECT => return Err(FrameError::ForbiddenType(kind)),
        _ => {}
    }
    let expected = match kind {
        kind::PUBLISH => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 || (qos == 0 && flags & 0b1000 != 0) {
                return Err(FrameError::BadFlags { kind, flags });
            }
            return Ok(());
        }
        kind::CONNECT | kind::PUBACK | kind::PUBREC | kind::PUBCOMP | kind::PINGREQ => 0,
        kind::DISCONNECT => 0,
        kind::PUBREL | kind::SUBSCRIBE | kind::UNSUBSCRIBE => 0b0010,
        // CONNACK, SUBACK, UNSUBACK, PINGRESP are server-only; 0 is reserved; AUTH (15)
        // is not supported because no enhanced authentication method is offered.
        other => return Err(FrameError::ForbiddenType(other)),
    };
    if flags != expected {
        return Err(FrameError::BadFlags { kind, flags });
    }
    Ok(())
}

/// Reads the protocol level of a CONNECT frame without decoding the rest.
pub fn connect_version(frame: &Frame) -> Result<Version, FrameError> {
    let body = &frame.bytes[frame.header_len..];
    if body.len() < 7 {
        return Err(FrameError::BadConnect);
    }
    if &body[..6] != b"\x00\x04MQTT" {
        // MQTT 3.1 ("MQIsdp") and anything else.
        return Err(FrameError::UnsupportedVersion(0));
    }
    match body[6] {
        4 => Ok(Version::V4),
        5 => Ok(Version::V5),
        other => Err(FrameError::UnsupportedVersion(other)),
    }
}

/// Decodes a checked frame with rumqttd's codec for `version`.
pub fn decode(frame: Frame, version: Version, max_packet: usize) -> Result<Packet, FrameError> {
    let mut bytes = frame.bytes;
    // `max_packet` is enforced by next_frame already; rumqttd compares it against the
    // remaining length, so pass a bound that can never refuse a frame we accepted.
    let bound = max_packet.max(bytes.len());
    let result = catch_unwind(AssertUnwindSafe(move || match version {
        Version::V4 => V4.read_mut(&mut bytes, bound),
        Version::V5 => V5.read_mut(&mut bytes, bound),
    }));
    match result {
        Ok(Ok(packet)) => Ok(packet),
        Ok(Err(e)) => Err(FrameError::Malformed(e.to_string())),
        Err(_) => Err(FrameError::Malformed("decoder panicked".into())),
    }
}

/// Encodes `packet` for `version`, appending to `out`.
///
/// MQTT 3.1.1 has no properties: they are dropped here, so that a message an MQTT 5
/// client published with properties reaches 3.1.1 subscribers without them (rumqttd's
/// 3.1.1 encoder panics on a packet that carries any). Like [`decode`], the encoder
/// runs under `catch_unwind`: a panic in it fails this packet, not the connection task.
pub fn encode(packet: Packet, version: Version, out: &mut BytesMut) -> Result<(), FrameError> {
    guarded(out, |out| match version {
        Version::V4 => V4.write(without_properties(packet), out),
        Version::V5 => V5.write(packet, out),
    })
}

/// [`encode`] for a PUBLISH, from references: the edge encodes one per message it
/// delivers, and a `Packet` built for it (400 bytes) was copied several times on its
/// way to the encoder. MQTT 3.1.1 leaves `properties` out.
pub fn encode_publish(
    publish: &Publish,
    properties: &Option<PublishProperties>,
    version: Version,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    guarded(out, |out| match version {
        Version::V4 => rumqttd::protocol::v4::write_publish(publish, out),
        Version::V5 => rumqttd::protocol::v5::write_publish(publish, properties, out),
    })
}

/// Runs rumqttd's encoder `write` on `out`; what it wrote goes if it panics.
fn guarded(
    out: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut) -> Result<usize, rumqttd::protocol::Error>,
) -> Result<(), FrameError> {
    let start = out.len();
    match catch_unwind(AssertUnwindSafe(|| write(&mut *out))) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(FrameError::Malformed(e.to_string())),
        Err(_) => {
            out.truncate(start);
            Err(FrameError::Malformed("encoder panicked".into()))
        }
    }
}

/// `packet` with its MQTT 5 properties (and a will's) removed.
fn without_properties(packet: Packet) -> Packet {
    match packet {
        Packet::Connect(c, _, will, _, login) => Packet::Connect(c, None, will, None, login),
        Packet::ConnAck(p, _) => Packet::ConnAck(p, None),
        Packet::Publish(p, _) => Packet::Publish(p, None),
        Packet::PubAck(p, _) => Packet::PubAck(p, None),
        Packet::Subscribe(p, _) => Packet::Subscribe(p, None),
        Packet::SubAck(p, _) => Packet::SubAck(p, None),
        Packet::PubRec(p, _) => Packet::PubRec(p, None),
        Packet::PubRel(p, _) => Packet::PubRel(p, None),
        Packet::PubComp(p, _) => Packet::PubComp(p, None),
        Packet::Unsubscribe(p, _) => Packet::Unsubscribe(p, None),
        Packet::UnsubAck(p, _) => Packet::UnsubAck(p, None),
        Packet::Disconnect(p, _) => Packet::Disconnect(p, None),
        Packet::PingReq(p) => Packet::PingReq(p),
        Packet::PingResp(p) => Packet::PingResp(p),
    }
}

/// Fields of a PUBLISH frame the edge needs but rumqttd keeps crate-private.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishHeader {
    /// QoS from the fixed header.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// Packet identifier (0 for QoS 0).
    pub pkid: u16,
}

/// Reads QoS, retain and packet id from an encoded PUBLISH.
pub fn publish_header(frame: &[u8]) -> Option<PublishHeader> {
    let first = *frame.first()?;
    let (_, len_bytes) = var_int(&frame[1..]).ok()??;
    let mut body = &frame[1 + len_bytes..];
    let qos = (first >> 1) & 0b11;
    if body.len() < 2 {
        return None;
    }
    let topic_len = body.get_u16() as usize;
    if body.len() < topic_len {
        return None;
    }
    body.advance(topic_len);
    let pkid = if qos > 0 {
        if body.len() < 2 {
            return None;
        }
        body.get_u16()
    } else {
        0
    };
    Some(PublishHeader {
        qos,
        retain: first & 1 == 1,
        pkid,
    })
}

/// Rewrites an encoded PUBLISH to another QoS: lower, as the delivery QoS is the
/// minimum of the publish and subscription QoS, which rumqttd does not apply; or from
/// QoS 0 up, for a message the edge sends itself (rumqttd keeps a `Publish`'s QoS
/// private), with packet id 0 for the session's queue to replace. `None` when the QoS
/// is already `qos`, or when raising a QoS 1 or 2 frame (nothing does).
pub fn set_publish_qos(frame: &[u8], qos: u8) -> Option<Bytes> {
    let first = *frame.first()?;
    let (remaining, len_bytes) = var_int(&frame[1..]).ok()??;
    let body = &frame[1 + len_bytes..];
    if body.len() != remaining || body.len() < 2 || qos > 2 {
        return None;
    }
    let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
    let after_topic = 2 + topic_len;
    let old_qos = (first >> 1) & 0b11;
    let has_pkid = old_qos > 0;
    if qos == old_qos || (has_pkid && qos > old_qos) {
        return None;
    }
    let pkid_len = if has_pkid { 2 } else { 0 };
    if body.len() < after_topic + pkid_len {
        return None;
    }
    let mut out = BytesMut::with_capacity(frame.len() + 2);
    let dup = if qos == 0 { 0 } else { first & 0b1000 };
    out.put_u8((first & 0xf1 & !0b1000) | dup | (qos << 1));
    let new_remaining = match (has_pkid, qos > 0) {
        (true, false) => remaining - 2,
        (false, true) => remaining + 2,
        _ => remaining,
    };
    put_var_int(&mut out, new_remaining);
    out.extend_from_slice(&body[..after_topic]);
    match (has_pkid, qos > 0) {
        (true, false) => out.extend_from_slice(&body[after_topic + 2..]),
        (false, true) => {
            out.put_u16(0);
            out.extend_from_slice(&body[after_topic..]);
        }
        _ => out.extend_from_slice(&body[after_topic..]),
    }
    Some(out.freeze())
}

/// Sets the packet id of an encoded QoS 1/2 PUBLISH; false if `frame` is not one.
pub fn set_publish_pkid(frame: &mut [u8], pkid: u16) -> bool {
    let Some(&first) = frame.first() else {
        return false;
    };
    let Ok(Some((_, len_bytes))) = var_int(&frame[1..]) else {
        return false;
    };
    let at = 1 + len_bytes;
    let Some(topic) = frame.get(at..at + 2) else {
        return false;
    };
    let at = at + 2 + u16::from_be_bytes([topic[0], topic[1]]) as usize;
    match frame.get_mut(at..at + 2) {
        Some(id) if (first >> 1) & 0b11 != 0 => {
            id.copy_from_slice(&pkid.to_be_bytes());
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_gets_another_packet_id_and_keeps_the_rest() {
        // QoS 2 PUBLISH of "a/b", packet id 7, payload "payload".
        let mut p = vec![0x34, 14, 0, 3, b'a', b'/', b'b', 0, 7];
        p.extend_from_slice(b"payload");
        assert!(set_publish_pkid(&mut p, 4242));
        let h = publish_header(&p).unwrap();
        assert_eq!((h.qos, h.pkid), (2, 4242));
        assert!(p.ends_with(b"payload") && p.len() == 16);
        let mut q0 = vec![0x30, 6, 0, 3, b'a', b'/', b'b', b'x'];
        assert!(!set_publish_pkid(&mut q0, 1), "QoS 0 has no packet id");
        assert!(!set_publish_pkid(&mut [0x32, 0x02, 0x00], 1), "truncated");
    }

    fn frame(bytes: &[u8], version: Option<Version>) -> Result<Option<Frame>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        next_frame(&mut buf, 1024, version)
    }

    #[test]
    fn success_acks_decode_as_the_general_encoder_writes_them() {
        use rumqttd::protocol::{PubAck, PubAckReason, PubRec, PubRecReason};
        for v in [Version::V4, Version::V5] {
            let mut bytes = BytesMut::from(&success_ack(kind::PUBACK, 0x1234)[..]);
            let f = next_frame(&mut bytes, 1024, Some(v)).unwrap().unwrap();
            let want = PubAck {
                pkid: 0x1234,
                reason: PubAckReason::Success,
            };
            assert!(matches!(decode(f, v, 1024).unwrap(), Packet::PubAck(a, None) if a == want));
            let mut bytes = BytesMut::from(&success_ack(kind::PUBREC, 7)[..]);
            let f = next_frame(&mut bytes, 1024, Some(v)).unwrap().unwrap();
            let want = PubRec {
                pkid: 7,
                reason: PubRecReason::Success,
            };
            assert!(matches!(decode(f, v, 1024).unwrap(), Packet::PubRec(r, None) if r == want));
        }
    }

    #[test]
    fn success_acks_are_taken_in_place_and_nothing_else_is() {
        let mut buf = BytesMut::from(&success_ack(kind::PUBACK, 0x1234)[..]);
        buf.extend_from_slice(&success_ack(kind::PUBREC, 7));
        buf.extend_from_slice(&[0x40, 0x03, 0, 1, 0x10]); // PUBACK with a reason code
        assert_eq!(take_success_ack(&mut buf), Some((kind::PUBACK, 0x1234)));
        assert_eq!(take_success_ack(&mut buf), Some((kind::PUBREC, 7)));
        assert_eq!(take_success_ack(&mut buf), None);
        assert_eq!(buf.len(), 5, "left for the general decoder");
        for other in [
            &[0x42, 2, 0, 1][..], // PUBACK with reserved flags set: malformed
            &[0x62, 2, 0, 1],     // PUBREL
            &[0x70, 2, 0, 1],     // PUBCOMP
            &[0x40, 2, 0],        // incomplete
        ] {
            let mut buf = BytesMut::from(other);
            assert_eq!(take_success_ack(&mut buf), None);
            assert_eq!(&buf[..], other);
        }
    }

    #[test]
    fn incomplete_frames_wait_for_more_bytes() {
        assert!(frame(&[0x10], None).unwrap().is_none());
        assert!(frame(&[0x10, 0x80], None).unwrap().is_none());
        assert!(frame(&[0x10, 0x05, 0, 4], None).unwrap().is_none());
    }

    #[test]
    fn server_only_packets_are_refused() {
        for first in [0x20u8, 0x90, 0xb0, 0xd0, 0x00, 0xf0] {
            assert!(matches!(
                frame(&[first, 0], Some(Version::V5)),
                Err(FrameError::ForbiddenType(_))
            ));
        }
    }

    #[test]
    fn first_packet_must_be_connect_and_only_once() {
        assert_eq!(frame(&[0x30, 0], None).unwrap_err(), FrameError::BadConnect);
        assert!(frame(&[0x10, 0], Some(Version::V4)).is_err());
    }

    #[test]
    fn oversized_is_refused_before_the_body_arrives() {
        assert!(matches!(
            frame(&[0x30, 0xff, 0xff, 0x03], Some(Version::V4)),
            Err(FrameError::TooLarge(_))
        ));
        assert_eq!(
            frame(&[0x30, 0xff, 0xff, 0xff, 0xff], Some(Version::V4)).unwrap_err(),
            FrameError::MalformedLength
        );
    }

    #[test]
    fn reserved_flags_are_checked() {
        assert!(frame(&[0x80, 0], Some(Version::V4)).is_err());
        assert!(frame(&[0x36, 0], Some(Version::V4)).is_err());
        assert!(frame(&[0x38, 0], Some(Version::V4)).is_err());
    }

    #[test]
    fn downgrade_rewrites_qos_and_drops_packet_id() {
        // QoS 1 publish, topic "a", pkid 7, payload "xy"
        let f = [0x32, 7, 0, 1, b'a', 0, 7, b'x', b'y'];
        assert_eq!(
            publish_header(&f),
            Some(PublishHeader {
                qos: 1,
                retain: false,
                pkid: 7
            })
        );
        let d = set_publish_qos(&f, 0).unwrap();
        assert_eq!(&d[..], &[0x30, 5, 0, 1, b'a', b'x', b'y']);
        let q2 = [0x3d, 7, 0, 1, b'a', 0, 9, b'x', b'y'];
        let d = set_publish_qos(&q2, 1).unwrap();
        assert_eq!(&d[..], &[0x3b, 7, 0, 1, b'a', 0, 9, b'x', b'y']);
        assert!(set_publish_qos(&f, 1).is_none());
        assert!(set_publish_qos(&f, 2).is_none());
        // Up from QoS 0 (RETAIN kept): packet id 0 goes in after the topic.
        let q0 = [0x31, 5, 0, 1, b'a', b'x', b'y'];
        let u = set_publish_qos(&q0, 2).unwrap();
        assert_eq!(&u[..], &[0x35, 7, 0, 1, b'a', 0, 0, b'x', b'y']);
        assert_eq!(publish_header(&u).map(|h| (h.qos, h.pkid)), Some((2, 0)));
    }
}
