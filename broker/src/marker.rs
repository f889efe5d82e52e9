//! The marker: what the router loses about a message, carried through it in front of
//! the payload.
//!
//! rumqttd's router delivers at the subscription's QoS (MQTT wants the lower of the
//! publish and subscription QoS), clears RETAIN on live delivery (MQTT 5 retain as
//! published needs it), and knows neither which session published a message (MQTT 5 no
//! local) nor which of the copies it sends for overlapping subscriptions are one
//! message. So the edge puts a 17-byte marker in front of every payload it hands to the
//! router and removes it from every message it delivers; clients never see a marker
//! and cannot forge one. Layout: one byte `0xa0` | bits 0-1 the publish QoS |
//! [`RETAIN`]; the publishing session's origin id (8 bytes; 0 for the broker's own
//! messages); the message's number (8 bytes, unique for the broker's lifetime).
//!
//! Why the payload: it is the one part of a message the router neither reads nor
//! copies (every copy shares one `Bytes`), whereas properties are cloned for every
//! subscriber.
//!
//! The payload also carries the message's MQTT 5 properties, all but the message
//! expiry interval (which the router applies): the router's per-filter log counts only
//! topic and payload bytes against its limit (`[router]`), so properties it kept would
//! not be counted, and 300 clients sending large user properties grew the broker from
//! 6 to 1,240 MiB. Carried in the payload, they count, and they are shared by every
//! copy. The marker's [`PROPERTIES`] bit says they follow it: a 4-byte length, then a
//! PUBLISH with an empty topic and payload carrying them, in rumqttd's MQTT 5 encoding. The exception is an empty payload, which the router takes as deleting
//! the topic's retained message: a retained PUBLISH with an empty payload is routed as
//! an unmarked, empty deletion (which the edge never delivers) followed by the marked
//! message for the subscribers (see [`route`]).

use crate::codec::{self, Version};
use crate::retained_index::RetainedIndex;
use bytes::{Bytes, BytesMut};
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{Packet, Protocol, Publish, PublishProperties};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

/// Length of a marker.
pub(crate) const MARKER_LEN: usize = 17;

/// Bits every marker's first byte has.
const MARK: u8 = 0xa0;
/// Mask that finds [`MARK`] in a first byte.
const MARK_MASK: u8 = 0b1111_0000;
/// The publisher set RETAIN.
const RETAIN: u8 = 0b100;
/// Properties follow the marker (see the module doc).
const PROPERTIES: u8 = 0b1000;

/// Message numbers; 0 is never used.
static NEXT_MESSAGE: AtomicU64 = AtomicU64::new(1);

/// What a marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    /// QoS of the PUBLISH the message came in.
    pub qos: u8,
    /// The publisher set RETAIN.
    pub retain: bool,
    /// Origin id of the publishing session (0: the broker itself).
    pub origin: u64,
    /// The message's number.
    pub message: u64,
    /// The message's properties follow the marker ([`take_properties`]).
    pub properties: bool,
}

impl Mark {
    /// The mark of a new message, which gets the next message number.
    pub fn new(qos: u8, retain: bool, origin: u64) -> Mark {
        Mark {
            qos: qos.min(2),
            retain,
            origin,
            message: NEXT_MESSAGE.fetch_add(1, Ordering::Relaxed),
            properties: false,
        }
    }

    /// A message kept from before a restart, with its number as it was.
    pub fn kept(qos: u8, retain: bool, origin: u64, message: u64) -> Mark {
        Mark {
            qos: qos.min(2),
            retain,
            origin,
            message,
            properties: false,
        }
    }

    /// Numbers go on from `next` (the first number not used before a restart), so that
    /// a kept message's number is never given to a new one.
    pub fn resume_numbering(next: u64) {
        NEXT_MESSAGE.fetch_max(next, Ordering::Relaxed);
    }

    /// Message numbers below this one belong to messages marked before now.
    pub fn next_number() -> u64 {
        NEXT_MESSAGE.load(Ordering::Relaxed)
    }

    fn to_bytes(self) -> [u8; MARKER_LEN] {
        let mut m = [0; MARKER_LEN];
        m[0] = MARK
            | self.qos
            | if self.retain { RETAIN } else { 0 }
            | if self.properties { PROPERTIES } else { 0 };
        m[1..9].copy_from_slice(&self.origin.to_be_bytes());
        m[9..].copy_from_slice(&self.message.to_be_bytes());
        m
    }

    /// Reads and removes the marker at the front of a payload the router delivers.
    /// `None`: the payload has none (a retained message's deletion, see the module
    /// doc); such a message is not for clients.
    pub fn take(payload: &mut Bytes) -> Option<Mark> {
        let m: [u8; MARKER_LEN] = payload.get(..MARKER_LEN)?.try_into().ok()?;
        let qos = m[0] & 0b11;
        if m[0] & MARK_MASK != MARK || qos > 2 {
            return None;
        }
        let word = |r: std::ops::Range<usize>| {
            let mut b = [0; 8];
            b.copy_from_slice(&m[r]);
            u64::from_be_bytes(b)
        };
        let mark = Mark {
            qos,
            retain: m[0] & RETAIN != 0,
            origin: word(1..9),
            message: word(9..MARKER_LEN),
            properties: m[0] & PROPERTIES != 0,
        };
        bytes::Buf::advance(payload, MARKER_LEN);
        Some(mark)
    }
}

fn put(out: &mut BytesMut, mark: Mark, carried: &[u8], payload: &[u8]) {
    out.extend_from_slice(&mark.to_bytes());
    out.extend_from_slice(carried);
    out.extend_from_slice(payload);
}

/// Splits `props` into what the router keeps (the message expiry interval, which it
/// applies) and the encoding of the rest that the payload carries (with its 4-byte
/// length; empty when there is nothing to carry).
fn carried(props: Option<PublishProperties>) -> (Option<PublishProperties>, BytesMut) {
    let Some(mut props) = props else {
        return (None, BytesMut::new());
    };
    let expiry = props.message_expiry_interval.take();
    let router = expiry.map(|e| PublishProperties {
        message_expiry_interval: Some(e),
        ..Default::default()
    });
    // Topic aliases and subscription identifiers are resolved by the edge and never
    // reach the router.
    props.topic_alias = None;
    props.subscription_identifiers.clear();
    if props == PublishProperties::default() {
        return (router, BytesMut::new());
    }
    let mut out = BytesMut::from(&[0u8; 4][..]);
    let empty = Publish::new(Bytes::new(), Bytes::new(), false);
    if codec::encode(Packet::Publish(empty, Some(props)), Version::V5, &mut out).is_err() {
        // Cannot happen for properties a decoder produced; never route them unsound.
        return (router, BytesMut::new());
    }
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    out[..4].copy_from_slice(&len.to_be_bytes());
    (router, out)
}

/// Removes the properties a marked payload carries (after [`Mark::take`] said so) and
/// returns them joined with those the router sent (its message expiry interval).
pub(crate) fn take_properties(
    payload: &mut Bytes,
    router: Option<PublishProperties>,
) -> Option<PublishProperties> {
    let Some(len) = payload.get(..4).map(|l| {
        let mut b = [0; 4];
        b.copy_from_slice(l);
        u32::from_be_bytes(b) as usize
    }) else {
        return router;
    };
    let Some(mut encoded) = payload.get(4..4 + len).map(BytesMut::from) else {
        return router;
    };
    bytes::Buf::advance(payload, 4 + len);
    // The edge's own encoding; decoded behind `catch_unwind` all the same, as every
    // use of rumqttd's decoders (see `codec`).
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        V5.read_mut(&mut encoded, usize::MAX)
    }));
    match decoded {
        Ok(Ok(Packet::Publish(_, Some(mut props)))) => {
            props.message_expiry_interval = router.and_then(|r| r.message_expiry_interval);
            Some(props)
        }
        _ => router,
    }
}

/// Queues the packets that route `publish` with `mark` (see the module doc), and keeps
/// `retained` (the edge's view of the router's retained messages) in step with them.
///
/// Each message gets one allocation of its own, holding its topic and its marked
/// payload, so that what the router keeps of a message (for as long as a filter's log
/// or the retained store keeps it) holds no memory of anything else. A slice of the
/// connection's read buffer, or of a block shared with the connection's other messages,
/// would keep all of it alive: one tiny message kept in a log pinned up to 64 KiB, and
/// the router counts only the message's own bytes against its limits.
///
/// Returns the message's topic and (unmarked) payload in that allocation, for whatever
/// else keeps the message (the store): no copy, and no read buffer kept alive by it.
pub(crate) fn route(
    mut publish: Publish,
    props: Option<PublishProperties>,
    mark: Mark,
    retained: Option<&RetainedIndex>,
    out: &mut VecDeque<Packet>,
) -> Routed {
    let (props, carried) = carried(props);
    let mark = Mark {
        properties: !carried.is_empty(),
        ..mark
    };
    let topic_len = publish.topic.len();
    let mut own =
        BytesMut::with_capacity(topic_len + MARKER_LEN + carried.len() + publish.payload.len());
    own.extend_from_slice(&publish.topic);
    put(&mut own, mark, &carried, &publish.payload);
    let mut own = own.freeze();
    let topic = own.split_to(topic_len);
    let routed = Routed {
        topic: topic.clone(),
        payload: own.slice(own.len() - publish.payload.len()..),
    };
    if publish.retain && publish.payload.is_empty() {
        out.push_back(Packet::Publish(
            Publish::new(topic.clone(), Bytes::new(), true),
            None,
        ));
        // The marked message must not become the retained one.
        publish.retain = false;
        if let Some(index) = retained {
            index.forget(&topic);
        }
    }
    publish.topic = topic;
    publish.payload = own;
    if publish.retain {
        if let Some(index) = retained {
            index.keep(&publish, &props);
        }
    }
    out.push_back(Packet::Publish(publish, props));
    routed
}

/// A message as [`route`] sent it: its topic and payload, slices of the one allocation
/// the router's copy lives in.
pub(crate) struct Routed {
    pub(crate) topic: Bytes,
    pub(crate) payload: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload `route` gives `payload` with `mark`.
    fn marked(mark: Mark, payload: &[u8]) -> Bytes {
        let mut out = VecDeque::new();
        let publish = Publish::new(
            Bytes::from_static(b"t"),
            Bytes::copy_from_slice(payload),
            false,
        );
        route(publish, None, mark, None, &mut out);
        match out.pop_front() {
            Some(Packet::Publish(p, _)) => p.payload,
            _ => panic!("nothing routed"),
        }
    }

    #[test]
    fn marks_round_trip_and_leave_the_payload() {
        for (qos, retain, origin) in [(0, false, 0), (1, true, 7), (2, false, u64::MAX)] {
            let mark = Mark::new(qos, retain, origin);
            let mut p = marked(mark, b"hello");
            assert_eq!(Mark::take(&mut p), Some(mark));
            assert_eq!(&p[..], b"hello");
        }
        // Every message gets its own number.
        assert_ne!(
            Mark::new(1, false, 1).message,
            Mark::new(1, false, 1).message
        );
        // An empty payload is marked like any other and comes back empty.
        let mark = Mark::new(1, false, 3);
        let mut p = marked(mark, b"");
        assert_eq!((Mark::take(&mut p), p.len()), (Some(mark), 0));
    }

    #[test]
    fn payloads_without_a_marker_are_recognised() {
        // A retained message's deletion (empty), too short, or not a marker at all.
        for raw in [&b""[..], &[MARK | 1; 5][..], &[0x30; MARKER_LEN + 3][..]] {
            let mut p = Bytes::copy_from_slice(raw);
            assert_eq!(Mark::take(&mut p), None);
            assert_eq!(&p[..], raw, "an unmarked payload is left alone");
        }
        // QoS 3 does not exist.
        let mut bad = marked(Mark::new(1, false, 1), b"x").to_vec();
        bad[0] |= 0b11;
        assert_eq!(Mark::take(&mut Bytes::from(bad)), None);
    }

    #[test]
    fn a_routed_message_holds_only_its_own_memory() {
        // Topic and payload as a decoder leaves them: slices of one read buffer.
        let buffer = Bytes::from(b"topic/a....payload....topic/b....".to_vec());
        let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
        let mut out = VecDeque::new();
        for (t, p) in [(0..7, 11..18), (22..29, 11..18)] {
            let publish = Publish::new(buffer.slice(t.clone()), buffer.slice(p.clone()), false);
            let routed = route(publish, None, Mark::new(1, false, 1), None, &mut out);
            // What the store keeps: the same topic and payload, unmarked, in the routed
            // copy's allocation, not in the read buffer.
            assert_eq!(
                (&routed.topic[..], &routed.payload[..]),
                (&buffer[t], &buffer[p])
            );
            let Some(Packet::Publish(sent, _)) = out.back() else {
                panic!("not a publish");
            };
            assert_eq!(
                sent.payload.as_ptr_range().end,
                routed.payload.as_ptr_range().end
            );
            assert_eq!(sent.topic.as_ptr(), routed.topic.as_ptr());
        }
        for packet in out {
            let Packet::Publish(p, _) = packet else {
                panic!("not a publish");
            };
            for part in [&p.topic, &p.payload] {
                let at = part.as_ptr() as usize;
                assert!(
                    !range.contains(&at),
                    "a part still points into the read buffer"
                );
            }
            // Topic and payload share one allocation and nothing else does.
            let Publish { topic, payload, .. } = p;
            drop(topic);
            assert!(payload.is_unique());
        }
    }

    #[test]
    fn an_empty_retained_publish_routes_an_unmarked_deletion_then_the_message() {
        let mut out = VecDeque::new();
        let mark = Mark::new(1, true, 9);
        let publish = Publish::new(Bytes::from_static(b"t"), Bytes::new(), true);
        route(publish, None, mark, None, &mut out);
        let Some(Packet::Publish(delete, None)) = out.pop_front() else {
            panic!("no deletion first");
        };
        assert!(delete.retain && delete.payload.is_empty());
        let Some(Packet::Publish(mut message, None)) = out.pop_front() else {
            panic!("no message second");
        };
        assert!(!message.retain, "the marked copy must not be retained");
        assert_eq!(Mark::take(&mut message.payload), Some(mark));
        assert!(message.payload.is_empty() && out.is_empty());
        // Anything else is one marked packet, retained as published.
        let publish = Publish::new(Bytes::from_static(b"t"), Bytes::from_static(b"v"), true);
        route(publish, None, mark, None, &mut out);
        assert!(matches!(out.pop_front(), Some(Packet::Publish(p, None)) if p.retain));
        assert!(out.is_empty());
    }

    #[test]
    fn properties_travel_in_the_payload_and_only_the_expiry_stays_with_the_router() {
        let props = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            response_topic: Some("r/t".into()),
            correlation_data: Some(Bytes::from_static(b"c")),
            user_properties: vec![("k".into(), "v".repeat(1000))],
            content_type: Some("text/plain".into()),
            ..Default::default()
        };
        let mut out = VecDeque::new();
        let publish = Publish::new(Bytes::from_static(b"t"), Bytes::from_static(b"body"), false);
        let mark = Mark::new(1, false, 5);
        route(publish, Some(props.clone()), mark, None, &mut out);
        let Some(Packet::Publish(mut routed, router_props)) = out.pop_front() else {
            panic!("nothing routed");
        };
        // The router keeps the expiry only; what it counts includes the rest.
        assert_eq!(
            router_props,
            Some(PublishProperties {
                message_expiry_interval: Some(60),
                ..Default::default()
            })
        );
        assert!(routed.payload.len() > 1000 + MARKER_LEN + 4);
        let taken = Mark::take(&mut routed.payload).unwrap();
        assert!(taken.properties);
        assert_eq!((taken.qos, taken.origin), (1, 5));
        // The router may have lowered the expiry: its value wins.
        let router_now = Some(PublishProperties {
            message_expiry_interval: Some(42),
            ..Default::default()
        });
        let back = take_properties(&mut routed.payload, router_now).unwrap();
        assert_eq!(
            back,
            PublishProperties {
                message_expiry_interval: Some(42),
                ..props
            }
        );
        assert_eq!(&routed.payload[..], b"body");
        // Without properties (or with the expiry only) nothing is carried.
        for props in [None, router_props] {
            let publish = Publish::new(Bytes::from_static(b"t"), Bytes::from_static(b"x"), false);
            route(publish, props.clone(), mark, None, &mut out);
            let Some(Packet::Publish(mut p, kept)) = out.pop_front() else {
                panic!("nothing routed");
            };
            assert_eq!(kept, props);
            assert!(!Mark::take(&mut p.payload).unwrap().properties);
            assert_eq!(&p.payload[..], b"x");
        }
    }
}
