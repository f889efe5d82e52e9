//! The router links that connections without a link of their own publish through.
//!
//! rumqttd preallocates queues for 200 packets at each end of every link
//! (`MAX_CHANNEL_CAPACITY`, a constant): about 40 KiB of memory per link, ten times
//! what an idle connection costs otherwise. A connection that has not subscribed
//! needs none of what a link of its own gives it: the router sends it nothing, the
//! edge keeps its will, its QoS 2 flows and its session state, and its messages
//! carry their QoS and origin in the marker (see `marker`). So a clean-session
//! connection starts without a link and routes its messages through one of these,
//! at QoS 0, as the broker's own link does; the edge acknowledges them to the client
//! once they are in the router's queue (after they are stored, for persistent
//! sessions). It gets its own link when it first sends a SUBSCRIBE the router must
//! see (`connection`).
//!
//! Order: every link feeds the router's one ordered event channel, and a connection
//! always uses the same shared link, so its messages reach the router in the order it
//! sent them, also across the change to its own link (the shared link's batch is
//! sent, its event queued, before the new link's CONNECT).

use crate::router::{LinkFailed, RouterHandle, RouterSlot};
use futures_util::FutureExt;
use rumqttd::local::LinkRx;
use rumqttd::protocol::Packet;
use std::collections::VecDeque;
use std::sync::Mutex;

/// How many shared links there are: a few, so that connections on different worker
/// threads seldom wait for each other's batch.
pub(crate) const PUBLISH_LINKS: usize = 4;

/// Client ids of the shared links (`%` and a letter: no client id maps to them, see
/// `router::router_client_id`).
fn client_id(i: usize) -> String {
    format!("%sealpost-publish-{i}")
}

/// The shared publishing links.
pub struct PublishLinks {
    links: Vec<Mutex<RouterSlot>>,
}

impl PublishLinks {
    /// Opens the links. Their receiving halves come back to be drained: the router
    /// sends nothing to a link that only publishes at QoS 0, but its queue must not
    /// fill if it ever does.
    pub(crate) async fn open(router: &RouterHandle) -> Result<(Self, Vec<LinkRx>), LinkFailed> {
        let mut links = Vec::with_capacity(PUBLISH_LINKS);
        let mut receivers = Vec::with_capacity(PUBLISH_LINKS);
        for i in 0..PUBLISH_LINKS {
            let (slot, rx, _) = router.link_async(client_id(i), true).await?;
            links.push(Mutex::new(slot));
            receivers.push(rx);
        }
        Ok((PublishLinks { links }, receivers))
    }

    /// Sends a batch of packets (QoS 0 PUBLISHes) for the connection with key `key`
    /// (always the same link for one key). `packets` is left empty. Returns false when
    /// the link is gone.
    pub(crate) fn send(&self, key: u64, packets: &mut VecDeque<Packet>) -> bool {
        let link = &self.links[(key % self.links.len() as u64) as usize];
        let mut slot = link.lock().unwrap_or_else(|e| e.into_inner());
        // `RouterSlot::send_batch` never waits (rumqttd's `LinkTx::send` pushes to a
        // buffer and signals the router thread), so one poll completes it.
        slot.send_batch(packets).now_or_never().unwrap_or(false)
    }
}
