//! The rumqttd router behind the edge, and the links that connect to it.
//!
//! rumqttd names its router channel with a crate-private type, so the sender is kept
//! inside a closure; everything else goes through the public link API.

use crate::config::RouterSizing;
use futures_util::FutureExt;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Disconnect, DisconnectReasonCode, Packet};
use rumqttd::{Notification, RouterConfig};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

type Connector =
    dyn Fn(&str, bool) -> Result<(LinkTx, LinkRx, Notification), LinkFailed> + Send + Sync;

/// A link as it comes back from the router.
type Link = Result<(LinkTx, LinkRx, Notification), LinkFailed>;

/// [`Connector`] that waits for the router without blocking a thread.
type AsyncConnector =
    dyn Fn(String, bool) -> std::pin::Pin<Box<dyn Future<Output = Link> + Send>> + Send + Sync;

/// The router refused or did not answer a link request (connection limit reached,
/// invalid client id, router gone).
#[derive(Debug, Clone, thiserror::Error)]
#[error("router link failed: {0}")]
pub struct LinkFailed(pub String);

/// Handle to a running router thread.
#[derive(Clone)]
pub struct RouterHandle {
    connect: Arc<Connector>,
    connect_async: Arc<AsyncConnector>,
}

impl RouterHandle {
    /// Spawns the router thread. `max_connections` counts edge connections; the router
    /// gets a few more slots for the broker's own links.
    pub fn spawn(max_connections: usize, sizing: &RouterSizing) -> RouterHandle {
        // RouterConfig::default() is all zeros (no connections, tiny segments), so
        // every field is set explicitly.
        let config = RouterConfig {
            max_connections: max_connections + 8,
            max_outgoing_packet_count: sizing.max_outgoing_packet_count,
            max_segment_size: sizing.max_segment_size,
            max_segment_count: sizing.max_segment_count,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        };
        RouterHandle::start(config)
    }

    /// Spawns the router thread with `config` as it is.
    fn start(config: RouterConfig) -> RouterHandle {
        let router_tx = rumqttd::Router::new(0, config).spawn();
        let tx = router_tx.clone();
        let connect = move |client_id: &str, clean: bool| {
            rumqttd::local::LinkBuilder::new(client_id, tx.clone())
                .clean_session(clean)
                .build()
                .map_err(|e| LinkFailed(e.to_string()))
        };
        let connect_async = move |client_id: String, clean: bool| {
            let tx = router_tx.clone();
            let link = async move {
                rumqttd::local::LinkBuilder::new(&client_id, tx)
                    .clean_session(clean)
                    .build_async()
                    .await
                    .map_err(|e| LinkFailed(e.to_string()))
            };
            Box::pin(link) as std::pin::Pin<Box<dyn Future<Output = Link> + Send>>
        };
        RouterHandle {
            connect: Arc::new(connect),
            connect_async: Arc::new(connect_async),
        }
    }

    /// Registers a connection with the router. Blocks until the router answers, so call
    /// it from a blocking context. The last will is never given to the router: the edge
    /// keeps it, so that it can check it against the ACL and publish it itself.
    ///
    /// The sending half comes back already wrapped in a [`RouterSlot`], so that a caller
    /// that goes away before the answer arrives still releases the slot.
    pub fn link(
        &self,
        client_id: &str,
        clean_session: bool,
    ) -> Result<(RouterSlot, LinkRx, Notification), LinkFailed> {
        let (tx, rx, ack) = (self.connect)(client_id, clean_session)?;
        Ok((RouterSlot::new(tx), rx, ack))
    }

    /// [`RouterHandle::link`] from async code: waits for the router's answer without
    /// holding a thread.
    pub async fn link_async(
        &self,
        client_id: String,
        clean_session: bool,
    ) -> Result<(RouterSlot, LinkRx, Notification), LinkFailed> {
        let (tx, rx, ack) = (self.connect_async)(client_id, clean_session).await?;
        Ok((RouterSlot::new(tx), rx, ack))
    }
}

/// A connection's slot in the router, released exactly once however the connection ends.
///
/// Dropping it (normal return, error, panic unwinding, task abort) sends DISCONNECT
/// through the link, which makes the router free the slot.
pub struct RouterSlot {
    tx: Option<LinkTx>,
}

impl RouterSlot {
    /// Takes ownership of a link's sending half.
    pub fn new(tx: LinkTx) -> RouterSlot {
        RouterSlot { tx: Some(tx) }
    }

    /// No slot (yet): a connection without a link of its own (see `connection::link`).
    /// Sending through it fails.
    pub fn unlinked() -> RouterSlot {
        RouterSlot { tx: None }
    }

    /// Sends a batch of packets with a single wake-up of the router thread (rumqttd's
    /// own connections batch the same way; one event per packet costs throughput).
    /// `packets` is left empty. Returns false when the slot is gone.
    ///
    /// An UNSUBSCRIBE always starts a batch of its own, sent once the router has taken
    /// everything before it. rumqttd 0.20 hands a waiting subscription that a PUBLISH
    /// woke back to its connection only at the end of the batch holding that PUBLISH;
    /// an UNSUBSCRIBE later in the same batch does not find it, so the subscription
    /// outlives its UNSUBACK, and the next SUBSCRIBE of that filter adds a second one:
    /// every message twice, and in debug builds a router panic (found by the
    /// `broker_connection` fuzz target). Unsubscribes are rare; the wait costs nothing
    /// elsewhere.
    pub async fn send_batch(&mut self, packets: &mut VecDeque<Packet>) -> bool {
        let unsubscribe = |p: &Packet| matches!(p, Packet::Unsubscribe(..));
        loop {
            if packets.front().is_some_and(unsubscribe) && !self.until_taken().await {
                packets.clear();
                return false;
            }
            let Some(at) = packets.iter().skip(1).position(unsubscribe) else {
                return self.send_whole(packets);
            };
            let rest = packets.split_off(at + 1);
            if !self.send_whole(packets) {
                return false;
            }
            *packets = rest;
        }
    }

    /// Waits until the router has taken every packet sent so far (it takes a link's
    /// whole buffer at once and handles it before it looks at that link again).
    /// Returns false when the slot is gone.
    async fn until_taken(&mut self) -> bool {
        loop {
            match self.tx.as_mut() {
                None => return false,
                Some(tx) if tx.buffer().is_empty() => return true,
                Some(_) => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
            }
        }
    }

    /// [`RouterSlot::send_batch`] without the rule for UNSUBSCRIBE. Not async (see
    /// [`RouterSlot::release`] on why it need not be): an async fn would hold the last
    /// (400-byte) packet in the future of every connection.
    pub(crate) fn send_whole(&mut self, packets: &mut VecDeque<Packet>) -> bool {
        let Some(last) = packets.pop_back() else {
            return true;
        };
        let Some(tx) = self.tx.as_mut() else {
            packets.clear();
            return false;
        };
        {
            let mut buffer = tx.buffer();
            if buffer.is_empty() {
                // The router has taken everything sent before: trade buffers instead
                // of moving each (400-byte) packet.
                std::mem::swap(&mut *buffer, packets);
            } else {
                buffer.extend(packets.drain(..));
            }
        }
        matches!(tx.send(last).now_or_never(), Some(Ok(_)))
    }

    /// Releases the slot now.
    pub fn release(&mut self) {
        if let Some(mut tx) = self.tx.take() {
            let disconnect = Packet::Disconnect(
                Disconnect {
                    reason_code: DisconnectReasonCode::NormalDisconnection,
                },
                None,
            );
            // rumqttd takes a link's whole buffer at each wake-up. When packets are
            // still waiting, the wake-up sent for them takes the DISCONNECT too; a
            // wake-up of its own would then find the connection gone and log an error
            // ("no-connection id N is already gone") after a normal disconnect.
            // (`send_batch` wakes the router at every batch: skipping wake-ups there
            // too measured slower QoS 1 delivery.)
            let mut buffer = tx.buffer();
            if !buffer.is_empty() {
                buffer.push_back(disconnect);
                return;
            }
            drop(buffer);
            // LinkTx::send never awaits (it pushes to a buffer and signals the router
            // thread), so one poll completes it, even from Drop.
            let _ = tx.send(disconnect).now_or_never();
        }
    }

    /// Forgets the slot without telling the router, for when the router has already
    /// removed the connection (its id may be reused by then).
    pub fn forget(&mut self) {
        self.tx = None;
    }
}

impl Drop for RouterSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Makes a client id safe for the router, which refuses `+ $ # /` and keys sessions by
/// id. Percent-encoding keeps distinct ids distinct, and ids the broker uses for itself
/// (starting with `%` and a non-hex letter) can never be produced from a client's id.
pub(crate) fn router_client_id(client_id: &str) -> String {
    let mut out = String::with_capacity(client_id.len());
    for c in client_id.chars() {
        match c {
            '%' | '+' | '$' | '#' | '/' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A router with room for exactly `n` links (`spawn` adds headroom for the
    /// broker's internal links).
    fn router_of(n: usize) -> RouterHandle {
        RouterHandle::start(RouterConfig {
            max_connections: n,
            max_outgoing_packet_count: 200,
            max_segment_size: RouterSizing::default().max_segment_size,
            max_segment_count: 2,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        })
    }

    #[test]
    fn router_refuses_a_second_connection_while_the_slot_is_held() {
        let router = router_of(1);
        let (_slot, _rx, _) = router.link("a", true).unwrap();
        assert!(router.link("b", true).is_err());
    }

    #[tokio::test]
    async fn a_panicking_connection_task_releases_its_slot() {
        let router = router_of(1);
        let (slot, rx, _) = router.link("a", true).unwrap();
        let task = tokio::spawn(async move {
            let _slot = slot;
            let _rx = rx;
            panic!("simulated bug in a connection task");
        });
        assert!(task.await.unwrap_err().is_panic());
        let r = router.clone();
        let second = tokio::task::spawn_blocking(move || r.link("b", true))
            .await
            .unwrap();
        assert!(second.is_ok(), "slot was not released after a panic");
    }

    #[tokio::test]
    async fn an_aborted_connection_task_releases_its_slot() {
        let router = router_of(1);
        let (slot, rx, _) = router.link("a", true).unwrap();
        let task = tokio::spawn(async move {
            let _slot = slot;
            let _rx = rx;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        let r = router.clone();
        let second = tokio::task::spawn_blocking(move || r.link("b", true))
            .await
            .unwrap();
        assert!(second.is_ok(), "slot was not released after abort");
    }

    fn subscribe(pkid: u16, filter: &str) -> Packet {
        use rumqttd::protocol::{Filter, QoS, RetainForwardRule, Subscribe};
        let filter = Filter {
            path: filter.into(),
            qos: QoS::AtMostOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::Never,
        };
        let filters = vec![filter];
        Packet::Subscribe(Subscribe { pkid, filters }, None)
    }

    fn publish(topic: &str) -> Packet {
        let publish = rumqttd::protocol::Publish::new(topic.to_owned(), "m".into(), false);
        Packet::Publish(publish, None)
    }

    async fn send(slot: &mut RouterSlot, packet: Packet) {
        assert!(slot.send_batch(&mut VecDeque::from([packet])).await);
    }

    /// Waits for the first notification `wanted` accepts; returns the topics of the
    /// messages forwarded before it and with it (in the same hand-over, which holds all
    /// that the router read for the link at once).
    async fn topics_until(rx: &mut LinkRx, wanted: impl Fn(&Notification) -> bool) -> Vec<String> {
        let mut topics = Vec::new();
        let mut note = |n: &Notification| {
            if let Notification::Forward(f) = n {
                topics.push(String::from_utf8_lossy(&f.publish.topic).into_owned());
            }
        };
        let deadline = std::time::Duration::from_secs(10);
        loop {
            let n = tokio::time::timeout(deadline, rx.next()).await;
            let Some(n) = n.expect("router answered").expect("link open") else {
                continue;
            };
            note(&n);
            if wanted(&n) {
                break;
            }
        }
        while let Ok(Some(n)) = rx.recv_deadline(std::time::Instant::now()) {
            note(&n);
        }
        topics
    }

    fn forward_of(topic: &'static str) -> impl Fn(&Notification) -> bool {
        move |n| matches!(n, Notification::Forward(f) if f.publish.topic == topic)
    }

    fn suback(n: &Notification) -> bool {
        matches!(Option::<Packet>::from(n.clone()), Some(Packet::SubAck(..)))
    }

    fn unsuback(n: &Notification) -> bool {
        matches!(
            Option::<Packet>::from(n.clone()),
            Some(Packet::UnsubAck(..))
        )
    }

    // Regression: rumqttd 0.20 looked for a shared subscription's waiting request
    // under the `$share/...` name, which has no log, and left it waiting after the
    // UNSUBSCRIBE, so the next message woke it (vendor/rumqttd/SEALPOST.md).
    #[tokio::test]
    async fn an_unsubscribed_shared_subscription_is_sent_nothing_more() {
        let router = router_of(2);
        let (mut publisher, _publisher_rx, _) = router.link("p", true).unwrap();
        let (mut subscriber, mut rx, _) = router.link("s", true).unwrap();
        send(&mut subscriber, subscribe(1, "$share/g/t")).await;
        send(&mut subscriber, subscribe(2, "control")).await;
        // A first message: the subscription has been read and waits for the next.
        send(&mut publisher, publish("t")).await;
        topics_until(&mut rx, forward_of("t")).await;
        let unsubscribe = rumqttd::protocol::Unsubscribe {
            pkid: 3,
            filters: vec!["$share/g/t".into()],
        };
        send(&mut subscriber, Packet::Unsubscribe(unsubscribe, None)).await;
        topics_until(&mut rx, unsuback).await;
        send(&mut publisher, publish("t")).await;
        send(&mut publisher, publish("control")).await;
        let topics = topics_until(&mut rx, forward_of("control")).await;
        assert_eq!(topics, ["control"], "a message of the unsubscribed filter");
    }

    // The router frees a link's waiting requests where its subscriptions wait, not in
    // every filter's log (vendor/rumqttd/SEALPOST.md): a link that takes over a gone
    // link's slot is sent nothing of the gone one's filters, shared or not.
    #[tokio::test]
    async fn a_link_in_a_freed_slot_is_sent_nothing_of_the_last_ones_filters() {
        let router = router_of(2);
        let (mut publisher, _publisher_rx, _) = router.link("p", true).unwrap();
        let (mut gone, mut gone_rx, _) = router.link("gone", true).unwrap();
        for (pkid, filter) in [(1, "t"), (2, "$share/g/u")] {
            send(&mut gone, subscribe(pkid, filter)).await;
            topics_until(&mut gone_rx, suback).await;
        }
        drop(gone);
        drop(gone_rx);
        // The only slot free is the one `gone` had.
        let (mut next, mut rx, _) = tokio::task::spawn_blocking({
            let router = router.clone();
            move || router.link("next", true)
        })
        .await
        .unwrap()
        .unwrap();
        send(&mut next, subscribe(1, "control")).await;
        topics_until(&mut rx, suback).await;
        for topic in ["t", "u", "control"] {
            send(&mut publisher, publish(topic)).await;
        }
        let topics = topics_until(&mut rx, forward_of("control")).await;
        assert_eq!(topics, ["control"], "a message of the last link's filters");
    }

    /// A fresh link in one of `router`'s free slots.
    async fn relink(router: &RouterHandle, name: &'static str) -> (RouterSlot, LinkRx) {
        // `link` blocks until the router answers; on a thread of its own, which a test
        // whose router died does not wait for when it ends.
        let router = router.clone();
        let (tx, linked) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(router.link(name, true));
        });
        let (slot, rx, _) = tokio::time::timeout(std::time::Duration::from_secs(10), linked)
            .await
            .expect("the router answered")
            .unwrap()
            .unwrap();
        (slot, rx)
    }

    // A filter's waiting requests are found through an index of who waits where (the
    // vendored `Waiters`), which every removal must keep right: the request moved into
    // a freed place, a link with two requests on one log (`t` and `$share/g/t`), an
    // UNSUBSCRIBE of one of the two. Each link that stays is sent the next message of
    // `t` exactly once, and the links in the gone ones' slots are sent none.
    #[tokio::test]
    async fn many_links_waiting_on_one_filter_leave_it_in_any_order() {
        let router = router_of(7);
        let (mut publisher, _publisher_rx, _) = router.link("p", true).unwrap();
        let mut links = Vec::new();
        for name in ["s0", "s1", "s2", "s3", "s4", "s5"] {
            let (mut slot, mut rx, _) = router.link(name, true).unwrap();
            send(&mut slot, subscribe(1, "t")).await;
            topics_until(&mut rx, suback).await;
            if name == "s1" || name == "s3" {
                send(&mut slot, subscribe(2, "$share/g/t")).await;
                topics_until(&mut rx, suback).await;
            }
            links.push(Some((slot, rx)));
        }
        // Everyone reads a first message and waits for the next.
        send(&mut publisher, publish("t")).await;
        for link in links.iter_mut().flatten() {
            topics_until(&mut link.1, forward_of("t")).await;
        }
        let unsubscribe = rumqttd::protocol::Unsubscribe {
            pkid: 3,
            filters: vec!["$share/g/t".into()],
        };
        let s1 = links[1].as_mut().unwrap();
        send(&mut s1.0, Packet::Unsubscribe(unsubscribe, None)).await;
        topics_until(&mut s1.1, unsuback).await;
        // The first waiter, then one with two requests, then the last.
        for gone in [0, 3, 5] {
            links[gone] = None;
        }
        let mut newcomers = Vec::new();
        for name in ["n0", "n3", "n5"] {
            let (mut slot, mut rx) = relink(&router, name).await;
            send(&mut slot, subscribe(1, "control")).await;
            topics_until(&mut rx, suback).await;
            newcomers.push((slot, rx));
        }
        send(&mut publisher, publish("t")).await;
        send(&mut publisher, publish("control")).await;
        for (name, link) in [("s1", 1), ("s2", 2), ("s4", 4)] {
            let rx = &mut links[link].as_mut().unwrap().1;
            let topics = topics_until(rx, forward_of("t")).await;
            assert_eq!(topics, ["t"], "{name}");
        }
        for (_, rx) in &mut newcomers {
            let topics = topics_until(rx, forward_of("control")).await;
            assert_eq!(
                topics,
                ["control"],
                "a newcomer was sent a gone link's message"
            );
        }
    }

    #[test]
    fn router_ids_are_escaped_injectively() {
        assert_eq!(router_client_id("plain-id"), "plain-id");
        assert_eq!(router_client_id("a/b"), "a%2Fb");
        assert_eq!(router_client_id("%2F"), "%252F");
        assert_ne!(router_client_id("a/b"), router_client_id("a%2Fb"));
        for c in ['+', '$', '#', '/'] {
            assert!(!router_client_id(&format!("x{c}y")).contains(c));
        }
    }
}
