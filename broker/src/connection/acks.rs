//! Acknowledgements of outgoing messages: the client's PUBACK/PUBREC/PUBCOMP are
//! passed to the router in the order the router sent the messages, which it requires.

use super::state::{Comp, Connection};
use crate::codec::kind;
use rumqttd::protocol::{
    Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason,
};
use tracing::debug;

impl Connection {
    /// A PUBACK/PUBREC from the client for an outgoing message.
    pub(super) fn client_ack(&mut self, pkid: u16, ack: u8) {
        let durable = self.durable();
        match self
            .out_acks
            .iter_mut()
            .find(|a| a.pkid == pkid && a.client_ack == ack && !a.done)
        {
            Some(a) => {
                a.done = true;
                if a.message != 0 && durable {
                    // The client has it: the store no longer keeps it for this session.
                    self.store_acks
                        .push(crate::store::Op::Ack(self.client_id.clone(), a.message));
                }
                if ack == kind::PUBACK {
                    self.inflight_out = self.inflight_out.saturating_sub(1);
                }
            }
            None => debug!(client_id = %self.client_id, pkid, "unsolicited ack ignored"),
        }
        self.flush_acks();
    }

    /// Sends completed acknowledgements to the router, oldest first.
    pub(super) fn flush_acks(&mut self) {
        while self.out_acks.front().is_some_and(|a| a.done) {
            let Some(a) = self.out_acks.pop_front() else {
                break;
            };
            if a.router_ack == kind::PUBACK {
                self.send_router(Packet::PubAck(
                    PubAck {
                        pkid: a.pkid,
                        reason: PubAckReason::Success,
                    },
                    None,
                ));
            } else {
                self.comps.push_back(Comp {
                    pkid: a.pkid,
                    auto: a.client_ack != kind::PUBREC,
                    done: false,
                });
                self.send_router(pubrec(a.pkid, PubRecReason::Success));
            }
        }
    }

    pub(super) fn flush_comps(&mut self) {
        while self.comps.front().is_some_and(|c| c.done) {
            let Some(c) = self.comps.pop_front() else {
                break;
            };
            self.send_router(Packet::PubComp(
                PubComp {
                    pkid: c.pkid,
                    reason: PubCompReason::Success,
                },
                None,
            ));
        }
    }
}

/// A PUBREC for packet id `pkid` (to the client for its publish, or to the router).
pub(super) fn pubrec(pkid: u16, reason: PubRecReason) -> Packet {
    Packet::PubRec(PubRec { pkid, reason }, None)
}

/// The acknowledgement the router expects for a message it sent at `qos`.
pub(super) fn router_ack(qos: u8) -> u8 {
    if qos == 1 {
        kind::PUBACK
    } else {
        kind::PUBREC
    }
}
