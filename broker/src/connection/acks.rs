//! Acknowledgements of outgoing messages. The router's duty for a message ends when
//! the edge takes it (see `queue`): the edge acknowledges it to the router at once, in
//! the order the router sent it, which the router requires. The client's
//! PUBACK/PUBREC/PUBCOMP then end the flow in the edge's queue.

use super::state::Connection;
use crate::codec::kind;
use crate::queue::Acked;
use bytes::{BufMut, BytesMut};
use rumqttd::protocol::{
    Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason,
};
use tracing::debug;

impl Connection {
    /// A PUBACK, PUBREC or PUBCOMP (`ack`) from the client for an outgoing message;
    /// `refused`: an MQTT 5 PUBREC with a failure reason, which ends the flow. Sends
    /// what waited for the window.
    pub(super) fn client_ack(&mut self, wbuf: &mut BytesMut, pkid: u16, ack: u8, refused: bool) {
        let stored = match self.queue.ack(pkid, ack, refused) {
            Acked::Received(message) => {
                if self.durable() {
                    // The message goes, and the flow's PUBREL state is kept instead,
                    // written with the next batch for the router, before the socket
                    // (see `event_loop`): a crash after the PUBREL sends the PUBREL
                    // again, never the message.
                    self.store_later(crate::store::Op::Released {
                        client_id: self.client_id.clone(),
                        number: message,
                        pkid,
                    });
                }
                // MQTT 4.3.3: PUBREL answers PUBREC.
                wbuf.put_u8(kind::PUBREL << 4 | 0b0010);
                wbuf.put_u8(2);
                wbuf.put_u16(pkid);
                0
            }
            // The store let go of a QoS 2 message at its PUBREC already; the flow's
            // PUBREL state goes now.
            Acked::Done(_) if ack == kind::PUBCOMP => {
                if self.durable() {
                    self.store_acks
                        .push(crate::store::Op::Completed(self.client_id.clone(), pkid));
                }
                0
            }
            Acked::Done(message) => message,
            Acked::Unknown => {
                debug!(client_id = %self.client_id, pkid, "unsolicited ack ignored");
                0
            }
        };
        if stored != 0 && self.durable() {
            // The client has it: the store no longer keeps it for this session.
            self.store_ack(stored);
        }
        self.send_queued(wbuf);
    }

    /// Sends what the queue holds while the client's window has room.
    pub(super) fn send_queued(&mut self, wbuf: &mut BytesMut) {
        let window = self.window();
        let mut qos2_sent = Vec::new();
        let sent = self.queue.fill_noting(wbuf, window, &mut qos2_sent);
        self.unreported.messages_out += sent as u64;
        self.note_sent(qos2_sent);
        self.note_queue_level();
    }

    /// Stores the packet ids QoS 2 messages were sent with (a persistent session with
    /// a data directory), with the next batch for the router, which is written before
    /// the socket: after a crash they are sent again with them.
    pub(super) fn note_sent(&mut self, qos2_sent: Vec<(u64, u16)>) {
        if qos2_sent.is_empty() || !self.durable() {
            return;
        }
        for (number, pkid) in qos2_sent {
            if number != 0 {
                self.store_later(crate::store::Op::Sent {
                    client_id: self.client_id.clone(),
                    number,
                    pkid,
                });
            }
        }
    }

    /// A message the edge will never send this client (dropped, or not for it): if
    /// it was stored for the session, the store lets it go now rather than keep it
    /// until the session ends.
    pub(super) fn unstore(&mut self, message: u64) {
        if message != 0 && self.durable() {
            self.store_ack(message);
        }
    }

    /// Tells the store (with the next batch) that the session no longer needs message
    /// `number`: one operation for all of the batch's, not one client id per message.
    fn store_ack(&mut self, number: u64) {
        match self.store_acks.last_mut() {
            Some(crate::store::Op::Ack(_, numbers)) => numbers.push(number),
            _ => {
                // (One acknowledgement to the router for each message delivered: the
                // last batch's size is a fair guess of how many.)
                let mut numbers = Vec::with_capacity(self.batch_room());
                numbers.push(number);
                self.store_acks
                    .push(crate::store::Op::Ack(self.client_id.clone(), numbers));
            }
        }
    }

    /// Acknowledges to the router a message it sent at `qos` (1 or 2) with `pkid`: the
    /// edge holds it from now on (or has dropped it, counted).
    pub(super) fn ack_router(&mut self, pkid: u16, qos: u8) {
        if qos == 1 {
            self.send_router(Packet::PubAck(
                PubAck {
                    pkid,
                    reason: PubAckReason::Success,
                },
                None,
            ));
        } else {
            self.send_router(pubrec(pkid, PubRecReason::Success));
        }
    }

    /// Answers the router's PUBREL (second half of a QoS 2 message it sent: the edge
    /// took the message at PUBREC).
    pub(super) fn complete_router(&mut self, pkid: u16) {
        self.send_router(Packet::PubComp(
            PubComp {
                pkid,
                reason: PubCompReason::Success,
            },
            None,
        ));
    }
}

/// A PUBREC for packet id `pkid` (to the client for its publish, or to the router).
pub(super) fn pubrec(pkid: u16, reason: PubRecReason) -> Packet {
    Packet::PubRec(PubRec { pkid, reason }, None)
}
