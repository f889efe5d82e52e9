//! Packet ids of outgoing QoS 1/2 messages as the client sees them.
//!
//! The router numbers a link's outgoing messages itself, 1 to 100 and from 1 again on
//! every new link, so a message it sends again to a resumed session, or one the broker
//! routes again after a restart, comes with a new packet id. MQTT wants it sent again
//! with its original one (3.1.1 §4.4, 5 §4.4), and a QoS 2 receiver that still holds
//! the original id awaiting PUBREL would take a new id for a new message. So the edge
//! gives such a message its original id, and reserves the ids of the session's
//! earlier flows (messages to send again, PUBRELs awaiting PUBCOMP) until they
//! complete; a new message the router numbered with a reserved id gets one above the
//! router's range instead. Without earlier flows (nearly always) the client sees the
//! router's ids unchanged and nothing here is consulted.

use std::collections::{HashMap, HashSet};

/// The highest packet id the router gives (rumqttd's `MAX_PKID`).
const ROUTER_MAX: u16 = 100;

/// A connection's translation of the router's packet ids into the client's.
#[derive(Debug, Default)]
pub(super) struct PacketIds {
    /// Messages an earlier connection sent and the client did not acknowledge, by
    /// number: the packet id the client saw (0: not known). Sent again with DUP.
    redeliver: HashMap<u64, u16>,
    /// Client packet ids in use that the router may give to another message: a new
    /// message never gets one of them.
    reserved: HashSet<u16>,
}

impl PacketIds {
    /// For a resumed session: the messages it had not acknowledged (number, client
    /// packet id or 0) and its flows awaiting PUBCOMP (router id, client id).
    pub(super) fn resumed(unacknowledged: &[(u64, u16)], releasing: &[(u16, u16)]) -> Self {
        let reserved = unacknowledged
            .iter()
            .map(|&(_, pkid)| pkid)
            .chain(releasing.iter().map(|&(_, pkid)| pkid))
            .filter(|&pkid| pkid != 0)
            .collect();
        PacketIds {
            redeliver: unacknowledged.iter().copied().collect(),
            reserved,
        }
    }

    /// The messages still to be sent again (number, client packet id or 0).
    pub(super) fn pending(&self) -> impl Iterator<Item = (u64, u16)> + '_ {
        self.redeliver.iter().map(|(&n, &p)| (n, p))
    }

    /// The client's packet id for message `message`, which the router sent with
    /// `router_pkid`, and whether it is a re-delivery (DUP).
    pub(super) fn assign(&mut self, message: u64, router_pkid: u16) -> (u16, bool) {
        if self.redeliver.is_empty() && self.reserved.is_empty() {
            return (router_pkid, false);
        }
        match self.redeliver.remove(&message) {
            Some(original) if original != 0 => (original, true),
            Some(_) => (self.fresh(router_pkid), true),
            None => (self.fresh(router_pkid), false),
        }
    }

    /// The router's id unless it is reserved; then the lowest free one above the
    /// router's range (reserved until its flow completes).
    fn fresh(&mut self, router_pkid: u16) -> u16 {
        if !self.reserved.contains(&router_pkid) {
            return router_pkid;
        }
        // At most 100 flows are open at once, and a reserved id is one of them: a
        // free id is always found long before the end of the range.
        let free = (ROUTER_MAX + 1..=u16::MAX)
            .find(|p| !self.reserved.contains(p))
            .unwrap_or(router_pkid);
        self.reserved.insert(free);
        free
    }

    /// The flow with the client's packet id `pkid` completed (PUBACK, PUBCOMP, or not
    /// delivered): its id is free again.
    pub(super) fn complete(&mut self, pkid: u16) {
        if !self.reserved.is_empty() {
            self.reserved.remove(&pkid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_earlier_flows_the_routers_ids_are_the_clients() {
        let mut ids = PacketIds::default();
        assert_eq!(ids.assign(10, 1), (1, false));
        assert_eq!(ids.assign(11, 2), (2, false));
    }

    #[test]
    fn a_message_sent_again_gets_its_original_id_and_others_avoid_the_reserved_ones() {
        // Messages 7 (client id 5) and 8 (id unknown) are to be sent again; the flow
        // with client id 1 awaits PUBCOMP.
        let mut ids = PacketIds::resumed(&[(7, 5), (8, 0)], &[(0, 1)]);
        assert_eq!(ids.assign(7, 1), (5, true), "original id, DUP");
        // The router's id 1 is the open flow's: a new message gets another.
        assert_eq!(ids.assign(20, 1), (101, false));
        assert_eq!(
            ids.assign(8, 2),
            (2, true),
            "no original known: the router's"
        );
        // Id 5 is still in use until its flow completes.
        assert_eq!(ids.assign(21, 5), (102, false));
        ids.complete(5);
        assert_eq!(ids.assign(22, 5), (5, false));
        ids.complete(1);
        ids.complete(101);
        ids.complete(102);
        assert_eq!(ids.assign(23, 1), (1, false));
        assert_eq!(ids.pending().count(), 0);
    }
}
