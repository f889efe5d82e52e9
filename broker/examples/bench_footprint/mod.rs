//! Memory per idle connection (issue 15 item 4): each broker's RSS with N idle TCP
//! connections (`footprint [N]`), sealpost's with N connections over in-process pipes
//! (`footprint-in-process N...`), and rumqttd's router alone (`router-links [N]`); and
//! how long the router takes to let N links waiting on one filter go (`router-leave N...`).
//!
//! Why in-process pipes: a process here may hold at most 20,000 open files (a hard
//! limit that needs `CAP_SYS_RESOURCE` to raise), so 100,000 TCP connections cannot be
//! opened. The broker serves any byte stream the same way (`Broker::serve_stream`, the
//! seam the fuzz targets use), so the same connections over `tokio::io::duplex` pipes
//! show what the broker's own memory does at 100,000, with the pipes' memory measured
//! apart and taken off. What a socket costs the broker's process beyond a pipe (its
//! registration with the runtime's reactor) is the difference between the two tables at
//! the same N, which the in-process table is run at too.
//!
//! `SEALPOST_BENCH_LINK_IDLE_MS=MS` sets the in-process broker's
//! `limits.router_link_idle_ms`: with a short one, few of the connections that publish
//! hold a router link at the same time, which separates what the router's tables keep
//! from a burst of them all from what each connection keeps.

use super::{launch, sealpost_config, Kind};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Quiet time before a row is read: sealpost's connections give back their router links
/// and their queues' memory after `limits.router_link_idle_ms` (10 s, checked every
/// 10 s).
const QUIET: Duration = Duration::from_secs(21);

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What each idle connection did before going quiet.
#[derive(Clone, Copy, PartialEq)]
pub enum Idle {
    /// Connected only.
    Connected,
    /// Published one QoS 1 message (to a topic of its own, `idle/<i>`).
    PublishedOnce,
    /// Subscribed to one filter of its own (`idle/<i>`, QoS 1).
    Subscribed,
}

const ALL: [Idle; 3] = [Idle::Connected, Idle::PublishedOnce, Idle::Subscribed];

impl Idle {
    fn name(self) -> &'static str {
        match self {
            Idle::Connected => "publish-only, connected",
            Idle::PublishedOnce => "publish-only, one message sent",
            Idle::Subscribed => "subscribed (one filter)",
        }
    }

    /// Its name on the command line of a round.
    fn arg(self) -> &'static str {
        match self {
            Idle::Connected => "connected",
            Idle::PublishedOnce => "published",
            Idle::Subscribed => "subscribed",
        }
    }

    /// What connection `i` sends, each packet with the first byte and the length of the
    /// broker's answer to it: an MQTT 3.1.1 CONNECT (clean session, keep-alive 600 s:
    /// rumqttd refuses 0), then the PUBLISH or SUBSCRIBE `self` names.
    fn exchanges(self, i: usize) -> Vec<(Vec<u8>, u8, usize)> {
        fn packet(first: u8, body: Vec<u8>) -> Vec<u8> {
            let mut p = vec![first, body.len() as u8];
            p.extend(body);
            p
        }
        fn string(s: &str) -> Vec<u8> {
            let mut v = (s.len() as u16).to_be_bytes().to_vec();
            v.extend_from_slice(s.as_bytes());
            v
        }
        let mut connect = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0x02, 0x58];
        connect.extend(string(&format!("idle-{i}")));
        let mut v = vec![(packet(0x10, connect), 0x20, 4)];
        let topic = string(&format!("idle/{i}"));
        match self {
            Idle::Connected => {}
            Idle::PublishedOnce => {
                let body = [&topic[..], &[0, 1], b"reading"].concat();
                v.push((packet(0x32, body), 0x40, 4));
            }
            Idle::Subscribed => {
                let body = [&[0, 1], &topic[..], &[1]].concat();
                v.push((packet(0x82, body), 0x90, 5));
            }
        }
        v
    }
}

impl FromStr for Idle {
    type Err = String;
    fn from_str(s: &str) -> Result<Idle, String> {
        ALL.into_iter()
            .find(|i| i.arg() == s)
            .ok_or_else(|| format!("not connected|published|subscribed: {s}"))
    }
}

/// `n` idle TCP connections to `port`, each having done what `idle` says.
fn idle_connections(port: u16, n: usize, idle: Idle) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for (request, answer, len) in idle.exchanges(i) {
            s.write_all(&request).unwrap();
            let mut reply = [0u8; 5];
            s.read_exact(&mut reply[..len]).unwrap();
            assert_eq!(reply[0], answer);
        }
        v.push(s);
    }
    v
}

/// RSS of each broker with `n` idle TCP connections, publish-only and subscribed. Each
/// process holds `n` sockets: the open-file limit must allow it.
pub fn table(kinds: &[Kind], n: usize) {
    println!("| broker | connections | RSS idle | RSS with them | per connection |");
    println!("|---|---|---:|---:|---:|");
    for idle in ALL {
        for &kind in kinds {
            let broker = launch(kind);
            std::thread::sleep(Duration::from_millis(300));
            let before = rss_kib(broker.child.id());
            let conns = idle_connections(broker.port, n, idle);
            std::thread::sleep(QUIET);
            let after = rss_kib(broker.child.id());
            println!(
                "| {} | {n} {} | {:.1} MiB | {:.1} MiB | {:.1} KiB |",
                kind.name(),
                idle.name(),
                before as f64 / 1024.0,
                after as f64 / 1024.0,
                (after.saturating_sub(before)) as f64 / n as f64
            );
            drop(conns);
        }
    }
}

/// sealpost's RSS per idle connection with each of `ns` connections over in-process
/// pipes. Each figure is two rounds, each in a fresh process: the broker serving the
/// connections, and the same pipes with the same bytes written and read through them
/// but no broker; the second's growth is taken off the first's.
pub fn in_process_table(ns: &[usize]) {
    println!("| sealpost, in-process pipes | RSS growth with the broker | of the pipes alone | per connection |");
    println!("|---|---:|---:|---:|");
    for idle in ALL {
        for &n in ns {
            let round = |who: &str| -> u64 {
                let out = Command::new(std::env::current_exe().unwrap())
                    .args([
                        "footprint-in-process-round",
                        &n.to_string(),
                        idle.arg(),
                        who,
                    ])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{who} round of {n} failed");
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
            };
            let (with_broker, pipes) = (round("broker"), round("pipes"));
            println!(
                "| {n} {} | {:.1} MiB | {:.1} MiB | {:.1} KiB |",
                idle.name(),
                with_broker as f64 / 1024.0,
                pipes as f64 / 1024.0,
                with_broker.saturating_sub(pipes) as f64 / n as f64
            );
        }
    }
}

/// One round of [`in_process_table`]: prints the KiB this process grew by with `n`
/// connections, served by an in-memory broker (`broker`) or by nothing, the pipe's other
/// end then read and answered by hand.
pub fn in_process_round(n: usize, idle: Idle, broker: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let broker = if broker {
            let mut config = sealpost_config(0, n + 1);
            if let Ok(ms) = std::env::var("SEALPOST_BENCH_LINK_IDLE_MS") {
                config.limits.router_link_idle_ms = ms.parse().unwrap();
            }
            let broker = sealpost_broker::Broker::start(config).await.unwrap();
            Some(Arc::new(broker))
        } else {
            None
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss_kib(std::process::id());
        let mut held = Vec::with_capacity(n);
        for i in 0..n {
            // The bound only limits what a pipe holds unread; its buffers grow with use.
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            // The pipe's other end when no broker serves it.
            let mut unserved = match &broker {
                Some(broker) => {
                    let broker = broker.clone();
                    tokio::spawn(async move { broker.serve_stream(server).await });
                    None
                }
                None => Some(server),
            };
            for (request, answer, len) in idle.exchanges(i) {
                client.write_all(&request).await.unwrap();
                if let Some(server) = unserved.as_mut() {
                    server
                        .read_exact(&mut vec![0; request.len()])
                        .await
                        .unwrap();
                    server
                        .write_all(&[answer, 0, 0, 0, 0][..len])
                        .await
                        .unwrap();
                }
                let mut reply = [0u8; 5];
                client.read_exact(&mut reply[..len]).await.unwrap();
                assert_eq!(reply[0], answer);
            }
            held.push((client, unserved));
        }
        tokio::time::sleep(QUIET).await;
        let after = rss_kib(std::process::id());
        println!("{}", after.saturating_sub(before));
        drop(held);
    });
}

/// RSS of `n` bare router links, without the edge or any socket: what rumqttd's router
/// costs per connection (`router-links [N]`; vendor/rumqttd/SEALPOST.md). Each row is
/// measured in a process of its own (`router-links-round N 0|1`), so that one row does
/// not reuse the memory another freed.
pub fn router_links_table(n: usize) {
    println!("| router links | RSS per link |");
    println!("|---|---:|");
    for (subscribed, name) in [("0", "without a filter"), ("1", "with one filter each")] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["router-links-round", &n.to_string(), subscribed])
            .output()
            .unwrap();
        let kib = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("| {n} {name} | {kib} KiB |");
    }
}

/// One row of [`router_links_table`]: prints the KiB per link.
pub fn router_links_round(n: usize, subscribed: bool) {
    let sizing = sealpost_broker::config::RouterSizing::default();
    let router = sealpost_broker::router::RouterHandle::spawn(n, &sizing);
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(std::process::id());
    let mut links = Vec::with_capacity(n);
    for i in 0..n {
        let (mut slot, rx, _) = router.link(&format!("link-{i}"), true).unwrap();
        if subscribed {
            subscribe_link(&mut slot, &format!("idle/{i}"));
        }
        links.push((slot, rx));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let after = rss_kib(std::process::id());
    println!("{:.1}", after.saturating_sub(before) as f64 / n as f64);
}

/// Sends a router link's SUBSCRIBE to `filter` (QoS 1), without waiting for its SUBACK.
fn subscribe_link(slot: &mut sealpost_broker::router::RouterSlot, filter: &str) {
    use rumqttd::protocol::{Filter, Packet, RetainForwardRule, Subscribe};
    let filter = Filter {
        path: filter.to_owned(),
        qos: rumqttd::protocol::QoS::AtLeastOnce,
        nolocal: false,
        preserve_retain: false,
        retain_forward_rule: RetainForwardRule::Never,
    };
    let subscribe = Subscribe {
        pkid: 1,
        filters: vec![filter],
    };
    let mut batch = [Packet::Subscribe(subscribe, None)].into();
    futures_util::FutureExt::now_or_never(slot.send_batch(&mut batch));
}

/// How long the router takes to let `n` links that wait on one filter go at once (an
/// outage, or the restart of a gateway many devices reach the broker through), for each
/// `n` (`router-leave N...`; vendor/rumqttd/SEALPOST.md): from the first link dropped
/// until a link made after the last one is accepted (the router takes its links'
/// events in order). Bare router links, as `router-links`; while this lasts the
/// router thread serves no other connection.
pub fn router_leave_table(ns: &[usize]) {
    println!("| links waiting on one filter | router busy letting them go |");
    println!("|---|---:|");
    for &n in ns {
        let sizing = sealpost_broker::config::RouterSizing::default();
        let router = sealpost_broker::router::RouterHandle::spawn(n + 1, &sizing);
        let mut links = Vec::with_capacity(n);
        for i in 0..n {
            let (mut slot, rx, _) = router.link(&format!("link-{i}"), true).unwrap();
            subscribe_link(&mut slot, "broadcast");
            links.push((slot, rx));
        }
        // Accepted once the router has taken every SUBSCRIBE; then a moment for it to
        // read the (empty) filter for each and park them all as waiting.
        drop(router.link("barrier", true).unwrap());
        std::thread::sleep(Duration::from_secs(2));
        let start = std::time::Instant::now();
        drop(links);
        let _after = router.link("after", true).unwrap();
        println!("| {n} | {:.3} s |", start.elapsed().as_secs_f64());
    }
}
