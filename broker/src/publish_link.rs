//! One router link that connections which only publish, and now and then, share.
//!
//! Why: a router link costs some 3 KiB while it exists (its place in the router's
//! tables, its queues) and leaves the router's tables that much larger when it goes
//! (they keep their high-water mark, and so does the allocator). Most IoT devices only
//! publish, a message every few seconds or minutes: with a link of their own each
//! (`connection::link`, given back after `limits.router_link_idle_ms`), 19,000 of them
//! publishing once within a few seconds left 6.2 KiB per connection instead of 3.6
//! (docs/BENCHMARKS.md, session 17), and a device publishing every few seconds made
//! and dropped a link each time.
//!
//! Who shares it: a connection of a clean session without subscriptions and without a
//! link of its own whose batch for the router is one PUBLISH (see
//! `Connection::send_shared`). A connection that sends more at once takes a link of its
//! own, as before: a busy publisher's messages do not take the detour through the task
//! below.
//!
//! Acknowledgements: the router acknowledges a link's QoS 1 PUBLISHes (the edge sends
//! QoS 2 as QoS 1) in the order it took them. The link keeps, in that order, which
//! connection sent each one and with which packet id, and a task hands each
//! acknowledgement to its connection ([`Acks`]). So a connection's acknowledgements
//! come in the order of its PUBLISHes, as MQTT requires of its PUBACKs; one that then
//! takes a link of its own reads that link only once all of them came (the router took
//! them before anything sent through that link, see below).
//!
//! Order of messages: a connection's PUBLISHes reach the router in the order it sent
//! them, here and across a link of its own made later: every link's packets are taken
//! at the wake-up each batch sends into the router's one ordered event channel, and a
//! new link's CONNECT goes into it after those.
//!
//! The router closes this link only for packets the edge never sends it (a PUBLISH with
//! a topic alias or a subscription identifier, or a topic that is not UTF-8). If it
//! did, every connection waiting for an acknowledgement is told ([`Acks::wait`]) and
//! ends, and connections take links of their own from then on.

use crate::router::{LinkFailed, RouterHandle, RouterSlot};
use rumqttd::local::LinkRx;
use rumqttd::protocol::{Packet, QoS};
use rumqttd::Notification;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use tracing::error;

/// Client id of the shared link in the router; no client id can map to it (see
/// `router::router_client_id`).
pub(crate) const PUBLISH_CLIENT_ID: &str = "%sealpost-publish";

/// The shared link (see the module documentation).
pub struct PublishLink {
    state: Mutex<State>,
}

struct State {
    /// None once the router has closed it.
    slot: Option<RouterSlot>,
    /// For each QoS 1 PUBLISH sent and not yet acknowledged, oldest first: whose it is,
    /// and its packet id.
    waiting: VecDeque<(Arc<Acks>, u16)>,
}

/// One connection's acknowledgements from the shared link: the packet ids of its
/// PUBLISHes the router has taken, oldest first.
#[derive(Default)]
pub struct Acks {
    received: Mutex<Vec<u16>>,
    /// The link is gone: what was not acknowledged never will be.
    closed: AtomicBool,
    notify: Notify,
}

impl Acks {
    /// Waits until acknowledgements have come, and takes them (oldest first); fails
    /// when the link is gone. Cancel-safe: what came stays until taken.
    pub(crate) async fn wait(&self) -> Result<Vec<u16>, LinkFailed> {
        loop {
            // What comes between the look and the wait is not missed: `Notify` keeps
            // the `notify_one` that found no waiter for the next wait.
            let notified = self.notify.notified();
            let received = std::mem::take(&mut *lock(&self.received));
            if !received.is_empty() {
                return Ok(received);
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(LinkFailed("the shared publishing link closed".into()));
            }
            notified.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere cannot leave it inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PublishLink {
    /// Links to the router and starts the task that hands out its acknowledgements
    /// (returned, to be kept with the broker's other tasks).
    pub(crate) async fn start(
        router: &RouterHandle,
    ) -> Result<(Arc<PublishLink>, tokio::task::JoinHandle<()>), LinkFailed> {
        let (slot, rx, _) = router
            .link_async(PUBLISH_CLIENT_ID.to_owned(), true)
            .await?;
        let link = Arc::new(PublishLink {
            state: Mutex::new(State {
                slot: Some(slot),
                waiting: VecDeque::new(),
            }),
        });
        let task = tokio::spawn(link.clone().hand_out(rx));
        Ok((link, task))
    }

    /// Sends a connection's batch of PUBLISHes (QoS 0 or 1; `acks` receives the
    /// acknowledgements of those at QoS 1), leaving `packets` empty, and returns how
    /// many acknowledgements will come. `Ok(None)` when the link is gone, with
    /// `packets` untouched (for a link of the connection's own); an error when it went
    /// while they were being sent (what of them reached the router is then unknown).
    pub(crate) fn send(
        &self,
        acks: &Arc<Acks>,
        packets: &mut VecDeque<Packet>,
    ) -> Result<Option<usize>, LinkFailed> {
        let mut state = lock(&self.state);
        let State { slot, waiting } = &mut *state;
        let Some(link) = slot.as_mut() else {
            return Ok(None);
        };
        let before = waiting.len();
        for p in packets.iter() {
            if let Packet::Publish(publish, _) = p {
                if publish.qos() == QoS::AtLeastOnce {
                    waiting.push_back((acks.clone(), publish.pkid()));
                }
            }
        }
        // Under the lock: the order of `waiting` is the router's.
        if !link.send_whole(packets) {
            waiting.truncate(before);
            drop(state);
            self.close();
            return Err(LinkFailed("the shared publishing link closed".into()));
        }
        Ok(Some(waiting.len() - before))
    }

    /// Hands each acknowledgement the router sends to the connection it is for, until
    /// the link closes.
    async fn hand_out(self: Arc<Self>, mut rx: LinkRx) {
        loop {
            let notification = match rx.next().await {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(_) => break,
            };
            match notification {
                Notification::DeviceAck(ack) => {
                    let pkid = match Option::<Packet>::from(Notification::DeviceAck(ack)) {
                        Some(Packet::PubAck(ack, _)) => ack.pkid,
                        other => {
                            error!(?other, "shared publishing link: unexpected acknowledgement");
                            break;
                        }
                    };
                    if !self.acknowledged(pkid) {
                        break;
                    }
                }
                // (Sent when the link's queue filled up: it is read again now.)
                Notification::Unschedule if rx.wake().await.is_err() => break,
                Notification::Disconnect(..) => break,
                _ => {}
            }
        }
        self.close();
    }

    /// The router acknowledged the oldest QoS 1 PUBLISH waiting, with `pkid`: its
    /// connection is told. False when it is not the one expected (then the link can no
    /// longer say whose its acknowledgements are).
    fn acknowledged(&self, pkid: u16) -> bool {
        let next = lock(&self.state).waiting.pop_front();
        match next {
            Some((acks, expected)) if expected == pkid => {
                lock(&acks.received).push(pkid);
                acks.notify.notify_one();
                true
            }
            other => {
                error!(
                    pkid,
                    expected = ?other.map(|(_, p)| p),
                    "shared publishing link: acknowledgement out of order"
                );
                false
            }
        }
    }

    /// The link is gone: connections send through links of their own from now on, and
    /// those waiting for acknowledgements here are told.
    fn close(&self) {
        let (slot, waiting) = {
            let mut state = lock(&self.state);
            (state.slot.take(), std::mem::take(&mut state.waiting))
        };
        drop(slot);
        for (acks, _) in waiting {
            acks.closed.store(true, Ordering::Release);
            acks.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouterSizing;
    use bytes::BytesMut;
    use rumqttd::protocol::{v4::V4, v5::V5, Protocol};
    use std::time::Duration;

    /// A 3.1.1 PUBLISH to `t` at QoS 1 with packet id `pkid` (0: QoS 0), as the edge
    /// hands it to the router.
    fn publish(pkid: u16) -> Packet {
        let bytes = if pkid == 0 {
            vec![0x30, 4, 0, 1, b't', b'm']
        } else {
            let [hi, lo] = pkid.to_be_bytes();
            vec![0x32, 6, 0, 1, b't', hi, lo, b'm']
        };
        V4.read_mut(&mut BytesMut::from(&bytes[..]), 1024).unwrap()
    }

    async fn acks_of(acks: &Acks) -> Vec<u16> {
        tokio::time::timeout(Duration::from_secs(5), acks.wait())
            .await
            .expect("acknowledged in time")
            .expect("link open")
    }

    async fn start() -> Arc<PublishLink> {
        let router = RouterHandle::spawn(8, &RouterSizing::default());
        PublishLink::start(&router).await.unwrap().0
    }

    #[tokio::test]
    async fn each_connection_gets_the_acknowledgements_of_its_own_publishes_in_order() {
        let link = start().await;
        let (a, b) = (Arc::new(Acks::default()), Arc::new(Acks::default()));
        // The same packet ids from two connections, and QoS 0 between them, which the
        // router does not acknowledge.
        for (acks, batch, sent) in [
            (&a, vec![publish(1)], 1),
            (&b, vec![publish(1), publish(0), publish(2)], 2),
            (&a, vec![publish(7)], 1),
        ] {
            let mut packets = VecDeque::from(batch);
            assert_eq!(link.send(acks, &mut packets).unwrap(), Some(sent));
            assert!(packets.is_empty());
        }
        let mut got_a = acks_of(&a).await;
        if got_a.len() < 2 {
            got_a.extend(acks_of(&a).await);
        }
        let mut got_b = acks_of(&b).await;
        if got_b.len() < 2 {
            got_b.extend(acks_of(&b).await);
        }
        assert_eq!((got_a, got_b), (vec![1, 7], vec![1, 2]));
        assert!(lock(&link.state).waiting.is_empty());
    }

    #[tokio::test]
    async fn a_link_the_router_closes_fails_the_connections_waiting_and_is_not_used_again() {
        let link = start().await;
        let waiting = Arc::new(Acks::default());
        let mut packets = VecDeque::from([publish(1)]);
        assert_eq!(link.send(&waiting, &mut packets).unwrap(), Some(1));
        assert_eq!(acks_of(&waiting).await, [1]);
        // A PUBLISH carrying a subscription identifier, which the edge never sends: the
        // router closes the link. The one waiting behind it is told.
        let mut bad = BytesMut::from(&[0x32, 10, 0, 1, b't', 0, 2, 2, 0x0b, 1, b'm', b'!'][..]);
        let bad = V5.read_mut(&mut bad, 1024).unwrap();
        let mut packets = VecDeque::from([bad, publish(3)]);
        assert_eq!(link.send(&waiting, &mut packets).unwrap(), Some(2));
        let closed = tokio::time::timeout(Duration::from_secs(5), waiting.wait())
            .await
            .expect("told in time");
        assert!(closed.is_err(), "acknowledged: {closed:?}");
        // Later batches go to links of the connections' own, untouched.
        let mut packets = VecDeque::from([publish(4)]);
        let gone = link.send(&Arc::new(Acks::default()), &mut packets).unwrap();
        assert_eq!(gone, None);
        assert_eq!(packets.len(), 1);
    }
}
