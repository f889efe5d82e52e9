//! Acknowledgements of outgoing messages: the client's PUBACK/PUBREC/PUBCOMP are
//! passed to the router in the order the router sent the messages, which it requires.

use super::io::queue;
use super::state::{Comp, Connection};
use crate::codec::kind;
use bytes::BytesMut;
use rumqttd::protocol::{
    Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, PubRel,
    PubRelReason,
};
use tracing::debug;

impl Connection {
    /// A PUBACK/PUBREC from the client for an outgoing message.
    pub(super) fn client_ack(&mut self, pkid: u16, ack: u8) {
        match self
            .out_acks
            .iter_mut()
            .find(|a| a.client_pkid == pkid && a.client_ack == ack && !a.done)
        {
            Some(a) => {
                a.done = true;
                let message = a.message;
                if ack == kind::PUBACK {
                    // The client has it: the store no longer keeps it for this session
                    // (a loss in a crash only costs a duplicate).
                    self.unstore(message);
                    self.inflight_out = self.inflight_out.saturating_sub(1);
                    self.pkids.complete(pkid);
                } else if self.durable() {
                    // The message goes, and the flow's PUBREL state is kept instead,
                    // stored before the router sees this PUBREC and so before the
                    // client gets the PUBREL: a crash after it sends the PUBREL
                    // again, never the message.
                    self.to_store.push(crate::store::Op::Released {
                        client_id: self.client_id.clone(),
                        number: message,
                        pkid,
                    });
                }
            }
            None => debug!(client_id = %self.client_id, pkid, "unsolicited ack ignored"),
        }
        self.flush_acks();
    }

    /// A message the edge will never send this client (dropped, or not for it): if
    /// it was stored for the session, the store lets it go now rather than keep it
    /// until the session ends.
    pub(super) fn unstore(&mut self, message: u64) {
        if message != 0 && self.durable() {
            self.store_acks
                .push(crate::store::Op::Ack(self.client_id.clone(), message));
        }
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
                    client_pkid: a.client_pkid,
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
            if c.pkid != 0 {
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

    /// The client's PUBCOMP for an outgoing QoS 2 flow.
    pub(super) fn client_pubcomp(&mut self, pkid: u16) {
        let found = self
            .comps
            .iter_mut()
            .find(|c| c.client_pkid == pkid && !c.auto && !c.done);
        if let Some(c) = found {
            c.done = true;
            self.inflight_out = self.inflight_out.saturating_sub(1);
            self.pkids.complete(pkid);
            if self.durable() {
                self.store_acks
                    .push(crate::store::Op::Completed(self.client_id.clone(), pkid));
            }
        }
        self.flush_comps();
    }

    /// At the start of a resumed session: the PUBRELs of flows the router does not
    /// know (restored from the store after a restart), which the edge sends itself.
    pub(super) fn resend_releases(&self, wbuf: &mut BytesMut) {
        for c in self.comps.iter().filter(|c| c.pkid == 0) {
            let rel = PubRel {
                pkid: c.client_pkid,
                reason: PubRelReason::Success,
            };
            queue(wbuf, Packet::PubRel(rel, None), self.version);
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
