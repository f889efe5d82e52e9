//! The messages the edge holds for a session: its outgoing QoS 1/2 queue.
//!
//! rumqttd's router sends a connection at most 100 unacknowledged QoS 1/2 messages
//! and keeps the rest in each filter's log, where a subscriber that falls behind the
//! oldest segment misses messages without anyone knowing (rumqttd only logs "Read
//! cursor start jumped"). So the edge takes every message off its router link at
//! once, acknowledges it to the router, and holds it here until the client
//! acknowledges it: the router never sees a subscriber fall behind, and what the edge
//! cannot hold (`limits.max_queued_messages`) it drops by its policy and counts, or
//! it slows the publishers (`limits.slow_subscriber`, see `backpressure`).
//!
//! A message is *pending* until it is sent, then *in flight* until the client's
//! PUBACK (QoS 1) or PUBCOMP (QoS 2). At most the client's window is in flight; the
//! packet ids are the edge's own. When a persistent session's connection ends, what
//! it holds goes with the session ([`OutQueue::into_saved`]) to its next connection,
//! which sends the in-flight ones again with DUP and their packet ids (MQTT 3.1.1
//! §4.4, 5 §4.4), a released QoS 2 flow as its PUBREL.

use crate::codec::kind;
use crate::config::DropPolicy;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{HashSet, VecDeque};

/// One message the edge holds for a session.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// The encoded PUBLISH at its delivery QoS (1 or 2); its packet id is written when
    /// it is sent. Empty for an in-flight message of a session that ends with its
    /// connection (it is never sent again).
    pub(crate) packet: Bytes,
    /// Offset of the packet id in `packet`.
    pub(crate) pkid_at: usize,
    /// Delivery QoS (1 or 2).
    pub(crate) qos: u8,
    /// The message's number (see `marker`), for the durable store.
    pub(crate) message: u64,
    /// Packet id given when it was sent (kept by a resumed session).
    pub(crate) pkid: Option<u16>,
    /// QoS 2: the client's PUBREC came and PUBREL was sent; PUBCOMP is awaited.
    pub(crate) released: bool,
    /// Sent before: DUP on the next send.
    pub(crate) dup: bool,
}

impl Held {
    /// A QoS 2 flow restored from the store after a restart: the client had the
    /// message (its PUBREC) and the PUBCOMP had not come. Sent again as its PUBREL.
    pub(crate) fn released_flow(pkid: u16) -> Held {
        Held {
            packet: Bytes::new(),
            pkid_at: 0,
            qos: 2,
            message: 0,
            pkid: Some(pkid),
            released: true,
            dup: true,
        }
    }
}

/// What a client's acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acked {
    /// The flow ended (PUBACK, PUBCOMP, or a PUBREC refusing the message): the
    /// message numbered so left the queue.
    Done(u64),
    /// A PUBREC for a QoS 2 message numbered so: the client has it; the edge sends
    /// PUBREL and waits for PUBCOMP.
    Received(u64),
    /// No such flow: ignored.
    Unknown,
}

/// What happened to a message offered to a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Held (sent now or pending).
    Held,
    /// Not held: the queue is full and the policy drops the newest (or nothing else
    /// may be dropped).
    Dropped,
    /// Held, and the oldest pending message (numbered so) was dropped for it.
    DroppedOldest(u64),
}

/// A session's outgoing QoS 1/2 queue (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    /// Sent and not yet acknowledged, oldest first.
    inflight: VecDeque<Held>,
    /// Not sent yet, oldest first (a resumed session's in-flight messages first).
    pending: VecDeque<Held>,
    /// The last packet id given.
    last_pkid: u16,
    /// After a restart: packet ids the client saw for messages the router routes
    /// again, which they are sent with (see `store::Op::Sent`); no other message gets
    /// them meanwhile.
    reserved: HashSet<u16>,
    /// Counted as over its limit in `backpressure` (left when it drains).
    pub(crate) over: bool,
    /// Some message went into `inflight` out of the order of [`rotated`] (a resumed
    /// session's message kept its id, or ids came round to one still in flight), until
    /// `inflight` is empty again. While false the ids there ascend from the oldest's,
    /// wrapping once at 65535, so whether one is in use is a binary search rather than a
    /// look at every message in the window for every message sent (which was 1-3 % of
    /// the broker's time, and with the wrap counted as out of order it was so after the
    /// first 65,535 messages of a session whose window never emptied).
    inflight_unordered: bool,
}

/// The order packet ids are given in, seen from the oldest in flight (`oldest`): the ids
/// from it up to 65535, then those below it (given after the wrap). Packet ids in flight
/// ascend in it unless `OutQueue::inflight_unordered`.
fn rotated(oldest: Option<u16>) -> impl Fn(Option<u16>) -> (bool, Option<u16>) {
    move |pkid| (pkid < oldest, pkid)
}

impl OutQueue {
    /// A queue that starts with what a session's earlier connection held.
    pub(crate) fn resumed(held: Vec<Held>) -> OutQueue {
        OutQueue {
            pending: held.into(),
            ..OutQueue::default()
        }
    }

    /// Numbers of the messages held (sent and unacknowledged, or waiting).
    pub(crate) fn numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.inflight.iter().chain(&self.pending).map(|h| h.message)
    }

    /// Nothing held: no message pending or in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.inflight.is_empty() && self.pending.is_empty()
    }

    /// Keeps `pkid` for a message sent before a restart (see `reserved`).
    pub(crate) fn reserve(&mut self, pkid: u16) {
        self.reserved.insert(pkid);
    }

    /// Messages held (pending and in flight).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inflight.len() + self.pending.len()
    }

    /// Messages sent and not yet acknowledged.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Whether a new message may be sent at once: nothing older waits and the window
    /// (`window` messages in flight) has room.
    pub(crate) fn sends_now(&self, window: usize) -> bool {
        self.pending.is_empty() && self.inflight.len() < window
    }

    /// Messages waiting to be sent: what `limits.max_queued_messages` bounds (as
    /// Mosquitto's, it counts the messages queued above those in flight).
    pub(crate) fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// Offers a message that is not sent now. With `limit` waiting already (0: no
    /// limit) the policy decides; without one (backpressure) it is held beyond.
    pub(crate) fn offer(&mut self, held: Held, limit: usize, drop: Option<DropPolicy>) -> Offer {
        let full = limit > 0 && self.pending.len() >= limit;
        match (full, drop) {
            (false, _) | (true, None) => {
                self.pending.push_back(held);
                Offer::Held
            }
            (true, Some(DropPolicy::Newest)) => Offer::Dropped,
            (true, Some(DropPolicy::Oldest)) => {
                // The oldest not yet sent, never a resumed session's in-flight message
                // (its packet id is already the client's).
                match self.pending.iter().position(|h| h.pkid.is_none()) {
                    Some(i) => {
                        let oldest = self.pending.remove(i).map_or(0, |h| h.message);
                        self.pending.push_back(held);
                        Offer::DroppedOldest(oldest)
                    }
                    None => Offer::Dropped,
                }
            }
        }
    }

    /// Records a message already written to the client with packet id `pkid` (the
    /// fast path: nothing pending, room in the window). `packet` is kept only if the
    /// session may send it again on a later connection.
    pub(crate) fn sent(&mut self, mut held: Held, pkid: u16) {
        held.pkid = Some(pkid);
        self.push_inflight(held);
    }

    /// Puts a message sent (its packet id set) at the back of `inflight`.
    fn push_inflight(&mut self, held: Held) {
        if let (Some(oldest), Some(last)) = (self.inflight.front(), self.inflight.back()) {
            let key = rotated(oldest.pkid);
            if key(held.pkid) <= key(last.pkid) {
                self.inflight_unordered = true;
            }
        }
        self.inflight.push_back(held);
    }

    /// The next packet id, never one still in use.
    pub(crate) fn next_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.wrapping_add(1).max(1);
            let p = self.last_pkid;
            let in_flight = match (self.inflight.front(), self.inflight.back()) {
                _ if self.inflight_unordered => self.inflight.iter().any(|h| h.pkid == Some(p)),
                (Some(oldest), Some(last)) => {
                    let key = rotated(oldest.pkid);
                    // The usual case (false): the next id after the last one sent.
                    key(Some(p)) <= key(last.pkid)
                        && self
                            .inflight
                            .binary_search_by_key(&key(Some(p)), |h| key(h.pkid))
                            .is_ok()
                }
                _ => false,
            };
            // (Not hashed for every message: empty but after a restart.)
            let in_use = (!self.reserved.is_empty() && self.reserved.contains(&p))
                || in_flight
                || self
                    .pending
                    .iter()
                    .take_while(|h| h.pkid.is_some())
                    .any(|h| h.pkid == Some(p));
            if !in_use {
                return p;
            }
        }
    }

    /// Sends pending messages while the window has room; how many PUBLISHes went.
    #[cfg(test)]
    pub(crate) fn fill(&mut self, wbuf: &mut BytesMut, window: usize) -> usize {
        self.fill_noting(wbuf, window, &mut Vec::new())
    }

    /// [`OutQueue::fill`], noting the QoS 2 messages sent for the first time with
    /// their packet ids (number, id), for the store.
    /// (Messages sent again are noted too: idempotent in the store.)
    pub(crate) fn fill_noting(
        &mut self,
        wbuf: &mut BytesMut,
        window: usize,
        qos2_sent: &mut Vec<(u64, u16)>,
    ) -> usize {
        let mut sent = 0;
        while self.inflight.len() < window {
            let Some(mut h) = self.pending.pop_front() else {
                break;
            };
            let pkid = match h.pkid {
                Some(p) => p,
                None => self.next_pkid(),
            };
            h.pkid = Some(pkid);
            if h.released {
                wbuf.extend_from_slice(&[kind::PUBREL << 4 | 0b0010, 2]);
                wbuf.put_u16(pkid);
            } else {
                let start = wbuf.len();
                wbuf.extend_from_slice(&h.packet);
                write_pkid(&mut wbuf[start..], h.pkid_at, pkid);
                if h.dup {
                    wbuf[start] |= 0b1000;
                }
                if h.qos == 2 {
                    // Again for one sent before: its id may not be stored yet.
                    qos2_sent.push((h.message, pkid));
                }
                h.dup = true;
                sent += 1;
            }
            self.push_inflight(h);
        }
        sent
    }

    /// The client's PUBACK, PUBREC or PUBCOMP (`ack`, a `kind`) for `pkid`; `refused`:
    /// an MQTT 5 PUBREC with a failure reason, which ends the flow.
    pub(crate) fn ack(&mut self, pkid: u16, ack: u8, refused: bool) -> Acked {
        let expected = |h: &Held| match ack {
            kind::PUBACK => h.qos == 1,
            kind::PUBREC => h.qos == 2 && !h.released,
            kind::PUBCOMP => h.qos == 2 && h.released,
            _ => false,
        };
        // Acknowledgements come in order but for a lost one: look at the front first.
        let Some(i) = self
            .inflight
            .iter()
            .position(|h| h.pkid == Some(pkid) && expected(h))
        else {
            return Acked::Unknown;
        };
        if ack == kind::PUBREC && !refused {
            let h = &mut self.inflight[i];
            h.released = true;
            // Sent again on a later connection as PUBREL: the message is not needed.
            h.packet = Bytes::new();
            return Acked::Received(h.message);
        }
        let removed = self.inflight.remove(i);
        if self.inflight.is_empty() {
            self.inflight_unordered = false;
        }
        match removed {
            Some(h) => {
                // (Not hashed for every acknowledgement: empty but after a restart.)
                if !self.reserved.is_empty() {
                    self.reserved.remove(&pkid);
                }
                Acked::Done(h.message)
            }
            None => Acked::Unknown,
        }
    }

    /// What a persistent session keeps for its next connection: the in-flight
    /// messages (sent again with DUP and their packet ids), then the pending ones.
    pub(crate) fn into_saved(self) -> Vec<Held> {
        self.inflight
            .into_iter()
            .map(|mut h| {
                h.dup = true;
                h
            })
            .chain(self.pending)
            .collect()
    }
}

/// Where the packet id of an encoded QoS 1/2 PUBLISH starts.
pub(crate) fn pkid_offset(frame: &[u8]) -> Option<usize> {
    // Fixed header: one byte, then the remaining length (1 to 4 bytes, the last one
    // without its top bit).
    let len_bytes = frame.get(1..5)?.iter().position(|b| b & 0x80 == 0)? + 1;
    let topic_at = 1 + len_bytes;
    let topic_len = u16::from_be_bytes([*frame.get(topic_at)?, *frame.get(topic_at + 1)?]);
    let at = topic_at + 2 + usize::from(topic_len);
    (frame.len() >= at + 2).then_some(at)
}

/// Writes a packet id at `at` in an encoded PUBLISH.
pub(crate) fn write_pkid(frame: &mut [u8], at: usize, pkid: u16) {
    frame[at..at + 2].copy_from_slice(&pkid.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(topic: &str, pkid: u16) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(kind::PUBLISH << 4 | 0b0010);
        b.put_u8((2 + topic.len() + 2 + 1) as u8);
        b.put_u16(topic.len() as u16);
        b.extend_from_slice(topic.as_bytes());
        b.put_u16(pkid);
        b.put_u8(b'x');
        b.freeze()
    }

    fn held(message: u64, qos: u8) -> Held {
        let packet = publish("t", 0);
        Held {
            pkid_at: pkid_offset(&packet).unwrap(),
            packet,
            qos,
            message,
            pkid: None,
            released: false,
            dup: false,
        }
    }

    fn pending_numbers(q: &OutQueue) -> Vec<u64> {
        q.pending.iter().map(|h| h.message).collect()
    }

    /// A session whose window never empties keeps its ids in order across the wrap,
    /// and so the binary search: 200,000 messages with 100 in flight, each id not in
    /// use when given.
    #[test]
    fn a_window_that_never_empties_stays_in_order_across_the_wrap() {
        let mut q = OutQueue::default();
        for n in 0..200_000u64 {
            if q.inflight.len() == 100 {
                let oldest = q.inflight[0].pkid.unwrap();
                assert!(matches!(q.ack(oldest, kind::PUBACK, false), Acked::Done(_)));
            }
            let p = q.next_pkid();
            assert!(q.inflight.iter().all(|h| h.pkid != Some(p)), "{p} in use");
            q.sent(held(n, 1), p);
            assert!(!q.inflight_unordered, "message {n}");
        }
    }

    /// A packet id in use is never given again: found by a binary search while the ids
    /// in flight ascend from the oldest's (across the wrap at 65535 too), and by a look
    /// at each once they do not (a resumed session's message kept its id), until the
    /// window empties.
    #[test]
    fn packet_ids_in_use_are_skipped_in_order_and_across_the_wrap() {
        let mut q = OutQueue::default();
        for (n, pkid) in [(1, 5), (2, 6), (3, 7)] {
            q.sent(held(n, 1), pkid);
        }
        q.last_pkid = 4;
        assert!(!q.inflight_unordered);
        assert_eq!(q.next_pkid(), 8);

        let mut q = OutQueue::default();
        for (n, pkid) in [(1, 65534), (2, 65535), (3, 1)] {
            q.sent(held(n, 1), pkid);
        }
        assert!(!q.inflight_unordered, "1 after 65535 is in order");
        q.last_pkid = 0;
        assert_eq!(q.next_pkid(), 2, "1 is in flight, after the wrap");
        assert!(matches!(q.ack(65535, kind::PUBACK, false), Acked::Done(2)));
        q.last_pkid = 65533;
        assert_eq!(q.next_pkid(), 65535, "65534 is still in flight");
        q.sent(held(4, 1), 65535);
        assert!(q.inflight_unordered, "65535 after 1, with 65534 the oldest");
        assert_eq!(q.next_pkid(), 2, "0 is never given, 1 is in flight");
        for pkid in [65534, 1, 65535] {
            assert!(matches!(q.ack(pkid, kind::PUBACK, false), Acked::Done(_)));
        }
        assert!(!q.inflight_unordered, "in order again once empty");
        q.sent(held(5, 1), 10);
        q.sent(held(6, 1), 11);
        q.last_pkid = 9;
        assert_eq!(q.next_pkid(), 12);
    }

    #[test]
    fn the_packet_id_is_found_and_written() {
        let p = publish("a/b", 7);
        let at = pkid_offset(&p).unwrap();
        assert_eq!(&p[at..at + 2], &7u16.to_be_bytes());
        let mut m = p.to_vec();
        write_pkid(&mut m, at, 0x1234);
        assert_eq!(crate::codec::publish_header(&m).unwrap().pkid, 0x1234);
        assert_eq!(pkid_offset(&p[..at]), None);
    }

    #[test]
    fn newest_drops_the_new_message_and_oldest_the_oldest_pending() {
        let mut q = OutQueue::default();
        for n in 1..=3 {
            assert_eq!(
                q.offer(held(n, 1), 3, Some(DropPolicy::Newest)),
                Offer::Held
            );
        }
        assert_eq!(
            q.offer(held(4, 1), 3, Some(DropPolicy::Newest)),
            Offer::Dropped
        );
        assert_eq!(
            q.offer(held(5, 1), 3, Some(DropPolicy::Oldest)),
            Offer::DroppedOldest(1)
        );
        assert_eq!(pending_numbers(&q), vec![2, 3, 5]);
        // Backpressure holds beyond the limit.
        assert_eq!(q.offer(held(6, 1), 3, None), Offer::Held);
        assert_eq!(q.len(), 4);
    }

    #[test]
    fn the_limit_counts_what_waits_and_oldest_never_takes_back_a_sent_one() {
        let mut q = OutQueue::default();
        q.offer(held(1, 1), 1, Some(DropPolicy::Oldest));
        let mut w = BytesMut::new();
        q.fill(&mut w, 1);
        assert_eq!(q.in_flight(), 1);
        assert_eq!(
            q.offer(held(2, 1), 1, Some(DropPolicy::Oldest)),
            Offer::Held
        );
        assert_eq!(
            q.offer(held(3, 1), 1, Some(DropPolicy::Oldest)),
            Offer::DroppedOldest(2)
        );
        assert_eq!((q.in_flight(), pending_numbers(&q)), (1, vec![3]));
        // A resumed session's unacknowledged message keeps its place too.
        let mut r = OutQueue::resumed(q.into_saved());
        assert_eq!(
            r.offer(held(4, 1), 1, Some(DropPolicy::Oldest)),
            Offer::DroppedOldest(3)
        );
        assert_eq!(pending_numbers(&r), vec![1, 4]);
    }

    #[test]
    fn the_window_bounds_what_is_sent_and_acks_open_it() {
        let mut q = OutQueue::default();
        for n in 1..=3 {
            q.offer(held(n, 1), 0, None);
        }
        let mut w = BytesMut::new();
        q.fill(&mut w, 2);
        assert_eq!((q.in_flight(), q.len()), (2, 3));
        let first = crate::codec::publish_header(&w).unwrap().pkid;
        assert_eq!(q.ack(first, kind::PUBREC, false), Acked::Unknown);
        assert_eq!(q.ack(first, kind::PUBACK, false), Acked::Done(1));
        assert_eq!(q.ack(first, kind::PUBACK, false), Acked::Unknown);
        q.fill(&mut w, 2);
        assert_eq!((q.in_flight(), q.len()), (2, 2));
    }

    #[test]
    fn qos2_is_released_at_pubrec_and_done_at_pubcomp_and_resumes_as_pubrel() {
        let mut q = OutQueue::default();
        q.offer(held(9, 2), 0, None);
        q.offer(held(10, 2), 0, None);
        let mut w = BytesMut::new();
        q.fill(&mut w, 5);
        assert_eq!(q.ack(1, kind::PUBCOMP, false), Acked::Unknown);
        assert_eq!(q.ack(1, kind::PUBREC, false), Acked::Received(9));
        let saved = q.into_saved();
        assert!(saved.iter().all(|h| h.dup));
        let mut q = OutQueue::resumed(saved);
        let mut w = BytesMut::new();
        q.fill(&mut w, 5);
        // PUBREL for the released flow, the PUBLISH again with DUP and its packet id.
        assert_eq!(&w[..4], &[kind::PUBREL << 4 | 0b0010, 2, 0, 1]);
        let again = crate::codec::publish_header(&w[4..]).unwrap();
        assert_eq!(again.pkid, 2);
        assert_eq!(w[4] & 0b1000, 0b1000);
        // New messages get other packet ids.
        assert_eq!(q.next_pkid(), 3);
        assert_eq!(q.ack(1, kind::PUBCOMP, false), Acked::Done(9));
        assert_eq!(q.ack(2, kind::PUBREC, true), Acked::Done(10));
    }

    #[test]
    fn a_message_sent_again_gets_its_original_id_and_others_avoid_the_reserved_ones() {
        // After a restart: message 7 was sent with id 1 and message 8 with id 3.
        let mut q = OutQueue::default();
        q.reserve(1);
        q.reserve(3);
        // New messages get neither.
        assert_eq!(q.next_pkid(), 2);
        assert_eq!(q.next_pkid(), 4);
        // Message 7 routed again keeps its id (and DUP) and does not free the other.
        let mut again = held(7, 2);
        again.pkid = Some(1);
        again.dup = true;
        q.offer(again, 0, None);
        let mut w = BytesMut::new();
        let mut noted = Vec::new();
        q.fill_noting(&mut w, 5, &mut noted);
        let h = crate::codec::publish_header(&w).unwrap();
        assert_eq!((h.pkid, w[0] & 0b1000), (1, 0b1000));
        assert_eq!(noted, vec![(7, 1)]);
        assert_eq!(q.ack(1, kind::PUBREC, false), Acked::Received(7));
        assert_eq!(q.ack(1, kind::PUBCOMP, false), Acked::Done(7));
        // Its id is free again once its flow ended; 3 stays reserved.
        q.last_pkid = 0;
        assert_eq!(q.next_pkid(), 1);
        q.last_pkid = 2;
        assert_eq!(q.next_pkid(), 4);
    }

    #[test]
    fn a_restored_released_flow_is_sent_as_its_pubrel_and_completed_by_pubcomp() {
        let mut q = OutQueue::resumed(vec![Held::released_flow(42)]);
        q.offer(held(5, 2), 0, None);
        let mut w = BytesMut::new();
        let mut noted = Vec::new();
        assert_eq!(q.fill_noting(&mut w, 5, &mut noted), 1);
        assert_eq!(&w[..4], &[kind::PUBREL << 4 | 0b0010, 2, 0, 42]);
        // The new message does not take the flow's id, and is noted for the store.
        let h = crate::codec::publish_header(&w[4..]).unwrap();
        assert_ne!(h.pkid, 42);
        assert_eq!(noted, vec![(5, h.pkid)]);
        assert_eq!(q.ack(42, kind::PUBREC, false), Acked::Unknown);
        assert_eq!(q.ack(42, kind::PUBCOMP, false), Acked::Done(0));
        assert_eq!(q.in_flight(), 1);
    }
}
