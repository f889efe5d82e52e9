//! What the durable store keeps, and how each value is written.
//!
//! A message is kept as an MQTT 5 PUBLISH in rumqttd's encoding (which carries the
//! properties without a codec of our own) behind a fixed header; a session record is
//! CBOR (ciborium). Every value read back goes through checks that turn damage into an
//! error, never a panic.

use crate::codec::{self, Version};
use bytes::{Bytes, BytesMut};
use rumqttd::protocol::{Packet, Publish, PublishProperties};
use serde::{Deserialize, Serialize};

/// First byte of a stored message (its format).
const MESSAGE_FORMAT: u8 = 1;
/// Bytes before the encoded PUBLISH: format, QoS, RETAIN, origin (u64 big-endian) and
/// the time it was stored (seconds since the Unix epoch, u64 big-endian).
const MESSAGE_HEADER: usize = 19;

/// A stored value that is not one this store writes (damaged, or written by something
/// else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unreadable value")]
pub struct Unreadable;

/// A message as stored: for offline sessions, and delayed wills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Topic name.
    pub topic: Bytes,
    /// QoS it was published with.
    pub qos: u8,
    /// The publisher set RETAIN.
    pub retain: bool,
    /// Origin id of the publishing session (for no local); 0: the broker itself.
    pub origin: u64,
    /// Opaque payload (never decoded).
    pub payload: Bytes,
    /// MQTT 5 properties as published; when read back, the message expiry interval is
    /// what is left of it. (Boxed: most messages have none, and an operation for the
    /// store that holds a message is moved and copied as its queue grows.)
    pub properties: Option<Box<PublishProperties>>,
}

impl StoredMessage {
    /// The stored form, stamped with `now` (seconds since the Unix epoch).
    pub fn encode(&self, now: u64) -> Result<Vec<u8>, String> {
        let properties = self.properties.as_deref().cloned();
        let packet = encode_publish(&self.topic, &self.payload, properties)?;
        let mut v = Vec::with_capacity(MESSAGE_HEADER + packet.len());
        v.push(MESSAGE_FORMAT);
        v.push(self.qos);
        v.push(u8::from(self.retain));
        v.extend_from_slice(&self.origin.to_be_bytes());
        v.extend_from_slice(&now.to_be_bytes());
        v.extend_from_slice(&packet);
        Ok(v)
    }

    /// Reads a stored value; `Ok(None)` for a message whose expiry interval ran out (by
    /// `now`) since it was stored; `Err` for a value that is not one this store writes.
    pub fn decode(value: &[u8], now: u64) -> Result<Option<StoredMessage>, Unreadable> {
        let (header, packet) = value
            .split_first_chunk::<MESSAGE_HEADER>()
            .ok_or(Unreadable)?;
        if header[0] != MESSAGE_FORMAT || header[1] > 2 || header[2] > 1 {
            return Err(Unreadable);
        }
        let origin = u64::from_be_bytes(header[3..11].try_into().map_err(|_| Unreadable)?);
        let stored_at = u64::from_be_bytes(header[11..19].try_into().map_err(|_| Unreadable)?);
        let (publish, mut properties) = decode_publish(packet).ok_or(Unreadable)?;
        if !expire(&mut properties, now.saturating_sub(stored_at)) {
            return Ok(None);
        }
        Ok(Some(StoredMessage {
            topic: publish.topic,
            qos: header[1],
            retain: header[2] == 1,
            origin,
            payload: publish.payload,
            properties: properties.map(Box::new),
        }))
    }
}

/// A PUBLISH of `topic` and `payload` with `properties`, in rumqttd's MQTT 5 encoding.
pub(crate) fn encode_publish(
    topic: &[u8],
    payload: &Bytes,
    properties: Option<PublishProperties>,
) -> Result<BytesMut, String> {
    let publish = Publish::new(Bytes::copy_from_slice(topic), payload.clone(), false);
    let mut packet = BytesMut::new();
    codec::encode(
        Packet::Publish(publish, properties),
        Version::V5,
        &mut packet,
    )
    .map_err(|e| e.to_string())?;
    Ok(packet)
}

/// Reads back what [`encode_publish`] wrote, through the edge's own checks and guarded
/// decoder, as if from a client: damaged bytes give `None`, never a panic.
pub(crate) fn decode_publish(packet: &[u8]) -> Option<(Publish, Option<PublishProperties>)> {
    let mut packet = BytesMut::from(packet);
    let frame = codec::next_frame(&mut packet, usize::MAX, Some(Version::V5));
    let (Ok(Some(frame)), true) = (frame, packet.is_empty()) else {
        return None;
    };
    match codec::decode(frame, Version::V5, usize::MAX) {
        Ok(Packet::Publish(publish, properties)) => Some((publish, properties)),
        _ => None,
    }
}

/// Takes `elapsed` seconds off a message expiry interval; false if it ran out.
pub(crate) fn expire(properties: &mut Option<PublishProperties>, elapsed: u64) -> bool {
    if let Some(p) = properties.as_mut() {
        if let Some(interval) = p.message_expiry_interval {
            let left = u64::from(interval).saturating_sub(elapsed);
            if left == 0 {
                return false;
            }
            p.message_expiry_interval = Some(left as u32);
        }
    }
    true
}

/// One subscription of a session, with its MQTT 5 options and identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// The filter as subscribed.
    pub filter: String,
    /// Granted maximum QoS.
    pub qos: u8,
    /// MQTT 5 no local.
    pub no_local: bool,
    /// MQTT 5 retain as published.
    pub retain_as_published: bool,
    /// No retained messages at a repeated subscribe.
    pub suppress_retained: bool,
    /// MQTT 5 subscription identifier.
    pub id: Option<u64>,
}

/// A persistent session as stored (its delayed will and queued messages are kept
/// beside it, in their own tables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Label of the identity that owns the session ([`crate::acl::Identity::label`]).
    pub owner: String,
    /// The session's origin id in message markers (no local).
    pub origin: u64,
    /// Seconds the session outlives its connection; `None`: never expires.
    pub expiry: Option<u32>,
    /// A connection of the session was open when this was written. Nothing then says
    /// when it ended: a broker that restarts counts the expiry from its start.
    pub connected: bool,
    /// When the last connection ended (seconds since the Unix epoch).
    pub disconnected_at: u64,
    /// Message numbers from this one on were stored while no connection was open, so
    /// the client cannot have seen them: they go out without DUP after a restart,
    /// earlier ones with it.
    pub offline_since: u64,
    /// The subscriptions.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// When the delayed will is due (seconds since the Unix epoch), if one waits.
    pub will_at: Option<u64>,
}

impl SessionRecord {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        // Writing into a Vec cannot fail; a record is plain data.
        let _ = ciborium::into_writer(self, &mut v);
        v
    }

    /// Reads a stored record.
    pub fn decode(value: &[u8]) -> Result<SessionRecord, Unreadable> {
        ciborium::from_reader(value).map_err(|_| Unreadable)
    }

    /// When the session ends (seconds since the Unix epoch), if it ever does; `now`
    /// stands in for the end of a connection that was open at a crash.
    pub fn expires_at(&self, now: u64) -> Option<u64> {
        let ended = if self.connected {
            now
        } else {
            self.disconnected_at
        };
        self.expiry.map(|e| ended.saturating_add(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> StoredMessage {
        StoredMessage {
            topic: Bytes::from_static(b"a/b"),
            qos: 1,
            retain: true,
            origin: 7,
            payload: Bytes::from_static(b"payload"),
            properties: Some(Box::new(PublishProperties {
                message_expiry_interval: Some(100),
                user_properties: vec![("k".into(), "v".into())],
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_message_round_trips_and_its_expiry_counts_down() {
        let m = message();
        let v = m.encode(1000).unwrap();
        assert_eq!(StoredMessage::decode(&v, 1000), Ok(Some(m.clone())));
        let later = StoredMessage::decode(&v, 1040).unwrap().unwrap();
        let left = later.properties.unwrap().message_expiry_interval;
        assert_eq!(left, Some(60));
        assert_eq!(StoredMessage::decode(&v, 1100), Ok(None), "expired");
    }

    #[test]
    fn damaged_messages_are_errors() {
        let v = message().encode(0).unwrap();
        for bad in [&v[..5], &v[..v.len() - 1], &[9u8; 30][..], &[][..]] {
            assert_eq!(StoredMessage::decode(bad, 0), Err(Unreadable));
        }
        let mut qos3 = v.clone();
        qos3[1] = 3;
        assert_eq!(StoredMessage::decode(&qos3, 0), Err(Unreadable));
    }

    #[test]
    fn a_session_record_round_trips_and_counts_expiry_from_its_end() {
        let r = SessionRecord {
            owner: "user:alice".into(),
            origin: 3,
            expiry: Some(60),
            connected: false,
            disconnected_at: 1000,
            offline_since: 42,
            subscriptions: vec![SubscriptionRecord {
                filter: "a/#".into(),
                qos: 1,
                no_local: true,
                retain_as_published: false,
                suppress_retained: false,
                id: Some(5),
            }],
            will_at: Some(1010),
        };
        assert_eq!(SessionRecord::decode(&r.encode()), Ok(r.clone()));
        assert_eq!(r.expires_at(5000), Some(1060));
        let open = SessionRecord {
            connected: true,
            ..r.clone()
        };
        assert_eq!(open.expires_at(5000), Some(5060));
        assert_eq!(SessionRecord::decode(b"\xff\x00"), Err(Unreadable));
    }
}
