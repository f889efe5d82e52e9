//! Messages not yet written, and which of their sessions have acknowledged them.
//!
//! A message every session it is queued for has acknowledged needs no storing: nobody
//! would get it from the store after a crash. [`Awaiting`] follows a message's
//! sessions; the writer's transactions use it to cancel out a message and its
//! acknowledgements (see `Cancelling`), and with `sync = "periodic"` [`Unwritten`]
//! keeps each message until the next commit where its sessions' acknowledgements find
//! it.
//!
//! Why `Unwritten`, with `"periodic"`: before, every batch of messages and every
//! batch of acknowledgements went to the writer thread, which held them until the
//! sync, matched them in a map of its own and wrote neither. That hand-off (a batch
//! built on a connection's thread, taken apart and freed on the writer's) cost the
//! broker about 10 % more CPU time than without a data directory (docs/BENCHMARKS.md,
//! session 17), for messages that in the end were not written. Now the publisher's
//! connection puts its messages here, a subscriber's acknowledgement takes its session
//! off them on its own thread (the last one drops the message there, as it would
//! without a store), and the writer takes only what is left when it commits: the
//! messages of sessions that are offline or slow.

use super::Op;
use crate::by_number::ByNumber;
use crate::store::StoredMessage;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

/// The sessions a message is queued for, and which of them have acknowledged it.
pub(super) struct Awaiting {
    clients: Arc<[String]>,
    acked: Acked,
    /// Sessions that have not acknowledged it.
    left: usize,
}

/// Which of a message's sessions acknowledged it (by position in its list).
enum Acked {
    /// Up to 64 sessions: one bit each.
    Few(u64),
    /// More.
    Many(Vec<bool>),
}

impl Awaiting {
    /// A message queued for `clients`, acknowledged by none yet.
    pub(super) fn new(clients: Arc<[String]>) -> Awaiting {
        let acked = match clients.len() {
            0..=64 => Acked::Few(0),
            n => Acked::Many(vec![false; n]),
        };
        Awaiting {
            left: clients.len(),
            clients,
            acked,
        }
    }

    /// Whether the session at `at` (in the list) has acknowledged it.
    fn has_acknowledged(&self, at: usize) -> bool {
        match &self.acked {
            Acked::Few(bits) => bits & (1u64 << at) != 0,
            Acked::Many(flags) => flags[at],
        }
    }

    /// Where `client_id` is in the list, if it is one of those still awaited.
    fn awaited(&self, client_id: &str) -> Option<usize> {
        self.clients
            .iter()
            .position(|c| c == client_id)
            .filter(|&at| !self.has_acknowledged(at))
    }

    /// `client_id` acknowledged it: false if it is not one of the sessions awaited.
    pub(super) fn acknowledge(&mut self, client_id: &str) -> bool {
        let Some(at) = self.awaited(client_id) else {
            return false;
        };
        match &mut self.acked {
            Acked::Few(bits) => *bits |= 1u64 << at,
            Acked::Many(flags) => flags[at] = true,
        }
        self.left -= 1;
        true
    }

    /// Every session has acknowledged it.
    pub(super) fn is_done(&self) -> bool {
        self.left == 0
    }

    /// The sessions that have not acknowledged it.
    pub(super) fn remaining(&self) -> impl Iterator<Item = &String> + '_ {
        self.clients
            .iter()
            .enumerate()
            .filter_map(|(at, c)| (!self.has_acknowledged(at)).then_some(c))
    }

    /// The sessions that have not acknowledged it, as a list to store.
    fn remaining_list(&self) -> Arc<[String]> {
        if self.left == self.clients.len() {
            self.clients.clone()
        } else {
            self.remaining().cloned().collect()
        }
    }
}

/// `sync = "periodic"`: the messages sent to the store and not yet written, by
/// number. Kept under the inbox's lock (see `inbox`), so that what it takes and what
/// goes on to the writer keep their order.
#[derive(Default)]
pub(super) struct Unwritten {
    messages: HashMap<u64, Message, ByNumber>,
}

struct Message {
    message: StoredMessage,
    awaiting: Awaiting,
    /// Packet ids its QoS 2 copies were sent with (position in the list, packet id).
    sent: Vec<(usize, u16)>,
}

impl Unwritten {
    /// How many messages it holds.
    pub(super) fn len(&self) -> usize {
        self.messages.len()
    }

    /// Takes from `ops` what concerns the messages kept here, and returns the rest,
    /// for the writer, in their order (`ops` is left empty):
    /// - a message queued for sessions ([`Op::Enqueue`]) is kept here;
    /// - an acknowledgement ([`Op::Ack`]) of one takes the session off it, and the
    ///   last one drops it; a PUBREC ([`Op::Released`]) too (its flow's state goes on
    ///   to the writer);
    /// - the packet id a QoS 2 copy was sent with ([`Op::Sent`]) is noted with it;
    /// - a session that ends ([`Op::EndSession`]) is taken off every message here, so
    ///   that none is written for it (or for a new session of the same client id,
    ///   which the messages queued after the end are for).
    pub(super) fn absorb(&mut self, ops: &mut Vec<Op>) -> Vec<Op> {
        // Drained, not consumed: the caller keeps the queue's memory for its next batch.
        let mut rest = Vec::new();
        for op in ops.drain(..) {
            if let Some(op) = self.absorb_one(op) {
                rest.push(op);
            }
        }
        rest
    }

    /// [`Unwritten::absorb`] for one operation: what goes on to the writer, if anything.
    fn absorb_one(&mut self, op: Op) -> Option<Op> {
        match op {
            Op::Enqueue {
                number,
                message,
                clients,
            } => {
                self.messages.insert(
                    number,
                    Message {
                        message,
                        awaiting: Awaiting::new(clients),
                        sent: Vec::new(),
                    },
                );
                None
            }
            Op::Ack(client_id, mut numbers) => {
                numbers.retain(|&n| !self.acknowledge(&client_id, n));
                (!numbers.is_empty()).then_some(Op::Ack(client_id, numbers))
            }
            Op::Released {
                ref client_id,
                number,
                ..
            } => {
                self.acknowledge(client_id, number);
                Some(op)
            }
            Op::Sent {
                ref client_id,
                number,
                pkid,
            } => {
                if let Some(m) = self.messages.get_mut(&number) {
                    if let Some(at) = m.awaiting.awaited(client_id) {
                        m.sent.push((at, pkid));
                        return None;
                    }
                }
                Some(op)
            }
            Op::EndSession(ref client_id) => {
                self.messages.retain(|_, m| {
                    m.awaiting.acknowledge(client_id);
                    !m.awaiting.is_done()
                });
                Some(op)
            }
            other => Some(other),
        }
    }

    /// `client_id` acknowledged message `number`: true if it is kept here and was
    /// awaited from that session.
    fn acknowledge(&mut self, client_id: &str, number: u64) -> bool {
        // One lookup for both: every message is looked up by each of its sessions.
        let Entry::Occupied(mut m) = self.messages.entry(number) else {
            return false;
        };
        if !m.get_mut().awaiting.acknowledge(client_id) {
            return false;
        }
        if m.get().awaiting.is_done() {
            m.remove();
        }
        true
    }

    /// Everything kept, as the writer writes it: each message queued for the sessions
    /// that have not acknowledged it, followed by the packet ids it was sent to them
    /// with.
    pub(super) fn into_ops(self) -> Vec<Op> {
        let mut ops = Vec::with_capacity(self.messages.len());
        for (number, m) in self.messages {
            let Message {
                message,
                awaiting,
                sent,
            } = m;
            ops.push(Op::Enqueue {
                number,
                message,
                clients: awaiting.remaining_list(),
            });
            for (at, pkid) in sent {
                if !awaiting.has_acknowledged(at) {
                    ops.push(Op::Sent {
                        client_id: awaiting.clients[at].clone(),
                        number,
                        pkid,
                    });
                }
            }
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn enqueue(number: u64, clients: &[&str]) -> Op {
        Op::Enqueue {
            number,
            message: StoredMessage {
                topic: Bytes::from_static(b"t"),
                qos: 2,
                retain: false,
                origin: 1,
                payload: Bytes::from_static(b"m"),
                properties: None,
            },
            clients: clients.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// (number, sessions) of each message taken.
    type Messages = Vec<(u64, Vec<String>)>;
    /// (client, number, packet id) of each packet id taken.
    type PacketIds = Vec<(String, u64, u16)>;

    /// What `into_ops` gives, sorted.
    fn taken(u: &mut Unwritten) -> (Messages, PacketIds) {
        let (mut messages, mut sent) = (Vec::new(), Vec::new());
        for op in std::mem::take(u).into_ops() {
            match op {
                Op::Enqueue {
                    number, clients, ..
                } => messages.push((number, clients.to_vec())),
                Op::Sent {
                    client_id,
                    number,
                    pkid,
                } => sent.push((client_id, number, pkid)),
                other => panic!("not taken from here: {other:?}"),
            }
        }
        messages.sort();
        sent.sort();
        (messages, sent)
    }

    #[test]
    fn acknowledgements_take_their_sessions_off_and_the_last_drops_the_message() {
        let mut u = Unwritten::default();
        assert!(u
            .absorb(&mut vec![enqueue(1, &["a", "b"]), enqueue(2, &["a"])])
            .is_empty());
        assert_eq!(u.len(), 2);
        // 3 is not kept here (written already): its acknowledgement goes on.
        let rest = u.absorb(&mut vec![Op::Ack("a".into(), vec![1, 2, 3])]);
        assert!(matches!(&rest[..], [Op::Ack(c, n)] if c == "a" && n == &[3]));
        // Repeated: a is no longer awaited, so it goes on (and changes nothing there).
        let rest = u.absorb(&mut vec![Op::Ack("a".into(), vec![1])]);
        assert!(matches!(&rest[..], [Op::Ack(c, n)] if c == "a" && n == &[1]));
        assert_eq!(u.len(), 1, "2 went with a's acknowledgement");
        assert_eq!(taken(&mut u), (vec![(1, vec!["b".into()])], vec![]));
        assert_eq!(u.len(), 0);
    }

    #[test]
    fn qos2_packet_ids_and_pubrecs_follow_their_message() {
        let mut u = Unwritten::default();
        let sent = |client_id: &str, number, pkid| Op::Sent {
            client_id: client_id.into(),
            number,
            pkid,
        };
        let rest = u.absorb(&mut vec![
            enqueue(5, &["a", "b", "c"]),
            sent("a", 5, 10),
            sent("b", 5, 11),
            // Not kept here: goes on.
            sent("a", 6, 12),
        ]);
        assert!(matches!(&rest[..], [Op::Sent { number: 6, .. }]));
        // a's PUBREC: a is taken off, and the flow's state goes on to the writer.
        let released = Op::Released {
            client_id: "a".into(),
            number: 5,
            pkid: 10,
        };
        let rest = u.absorb(&mut vec![released]);
        assert!(matches!(&rest[..], [Op::Released { pkid: 10, .. }]));
        let (messages, sent) = taken(&mut u);
        assert_eq!(messages, vec![(5, vec!["b".into(), "c".into()])]);
        assert_eq!(sent, vec![("b".into(), 5, 11)]);
    }

    #[test]
    fn a_session_that_ends_is_taken_off_every_message_kept() {
        let mut u = Unwritten::default();
        let _ = u.absorb(&mut vec![enqueue(1, &["a", "b"]), enqueue(2, &["a"])]);
        let rest = u.absorb(&mut vec![Op::EndSession("a".into())]);
        assert!(matches!(&rest[..], [Op::EndSession(c)] if c == "a"));
        // A new session of a's, after the end: the message queued now is for it.
        let _ = u.absorb(&mut vec![enqueue(3, &["a"])]);
        assert_eq!(
            taken(&mut u).0,
            vec![(1, vec!["b".into()]), (3, vec!["a".into()])]
        );
    }

    #[test]
    fn more_than_64_sessions_are_followed_too() {
        let clients: Vec<String> = (0..70).map(|i| format!("c{i}")).collect();
        let mut awaiting = Awaiting::new(clients.clone().into());
        for c in &clients[..69] {
            assert!(awaiting.acknowledge(c));
            assert!(!awaiting.acknowledge(c), "once");
        }
        assert!(!awaiting.is_done());
        assert_eq!(awaiting.remaining().collect::<Vec<_>>(), vec!["c69"]);
        assert!(awaiting.acknowledge("c69") && awaiting.is_done());
        assert!(!awaiting.acknowledge("nobody"));
    }
}
