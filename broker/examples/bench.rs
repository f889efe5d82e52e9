//! Broker benchmark: sealpost vs embedded rumqttd (its own listener) vs Mosquitto, with
//! the same client program (rumqttc) for all three, plus a mosquitto_pub/sub run and the
//! memory of 10,000 idle connections.
//!
//! ```text
//! cargo run --release -p sealpost-broker --example bench            # median of 5 runs
//! cargo run --release -p sealpost-broker --example bench -- quick    # 1 run, 1/10 messages
//! SEALPOST_BENCH_ONLY="1->10 QoS0" cargo run --release -p sealpost-broker --example bench
//! ```
//! `durable` and `restart` run the durable-session tables (see `bench_durable`);
//! `footprint [N]` only the memory of N idle connections (default 10,000; the open-file
//! limit must allow N sockets in each process: `ulimit -n`); `footprint-in-process N...`
//! sealpost's memory per connection with N connections over in-process pipes, beyond
//! that limit (see `bench_footprint`); `router-links [N]` the memory of N bare router
//! links, without the edge; `router-leave N...` how long the router takes to let N links
//! waiting on one filter go at once; `topics N FILTERS` what N topics of their own cost
//! the router beside FILTERS filters (see `bench_topics`).
//! Needs `mosquitto` and `mosquitto-clients` (Debian packages). Each broker runs in its
//! own process (this binary re-executed with `serve-sealpost` / `serve-rumqttd`, or
//! `mosquitto -c`), on an ephemeral loopback port.

#[path = "bench_durable/mod.rs"]
mod durable;
#[path = "bench_footprint/mod.rs"]
mod footprint;
#[path = "bench_topics/mod.rs"]
mod topics;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Sealpost,
    Rumqttd,
    Mosquitto,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sealpost => "sealpost",
            Kind::Rumqttd => "rumqttd (embedded, own listener)",
            Kind::Mosquitto => "mosquitto",
        }
    }
}

struct Running {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("broker on port {port} did not start");
}

fn launch(kind: Kind) -> Running {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let child = match kind {
        Kind::Sealpost => Command::new(exe)
            .args(["serve-sealpost", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        Kind::Rumqttd => Command::new(exe)
            .args(["serve-rumqttd", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        Kind::Mosquitto => {
            let conf = dir.path().join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\nmax_connections -1\nlog_type none\n"),
            )
            .unwrap();
            Command::new("mosquitto")
                .args(["-c", conf.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto installed")
        }
    };
    wait_port(port);
    Running {
        child,
        port,
        _dir: dir,
    }
}

fn serve_sealpost(port: u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut c = sealpost_config(port, 20_000);
        // SEALPOST_BENCH_METRICS=ADDR: the metrics endpoint, to look inside while it runs.
        c.metrics.bind = std::env::var("SEALPOST_BENCH_METRICS")
            .ok()
            .map(|a| a.parse().unwrap());
        let _b = sealpost_broker::Broker::start(c).await.unwrap();
        std::future::pending::<()>().await;
    });
}

/// The in-memory sealpost of the tables, on `port` of 127.0.0.1 (0: any).
fn sealpost_config(port: u16, max_connections: usize) -> sealpost_broker::Config {
    let mut c = sealpost_broker::Config::default();
    c.listeners[0].bind = SocketAddr::from(([127, 0, 0, 1], port));
    c.limits.max_connections = max_connections;
    // Unbounded queues, as Mosquitto's `max_queued_messages 0` in the same table.
    c.limits.max_queued_messages = 0;
    c
}

fn serve_rumqttd(port: u16) {
    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
    use std::collections::HashMap;
    let router = RouterConfig {
        max_connections: 20_000,
        max_outgoing_packet_count: 200,
        max_segment_size: 4 * 1024 * 1024,
        max_segment_count: 4,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let server = ServerSettings {
        name: "v4".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: 1024 * 1024,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let mut v4 = HashMap::new();
    v4.insert("v4".to_string(), server);
    let config = Config {
        id: 0,
        router,
        v4: Some(v4),
        ..Default::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    broker.start().unwrap();
}

struct Outcome {
    published: u64,
    delivered: u64,
    expected: u64,
    secs: f64,
}

async fn scenario(port: u16, subs: usize, qos: QoS, size: usize, count: u64) -> Outcome {
    scenario_with(port, subs, qos, size, count, false).await
}

/// `persistent`: the subscribers' sessions outlive their connections (clean session 0).
async fn scenario_with(
    port: u16,
    subs: usize,
    qos: QoS,
    size: usize,
    count: u64,
    persistent: bool,
) -> Outcome {
    let topic = format!("bench/{}", rand_suffix());
    // Each subscriber reports how many messages it got and when the last one came, so
    // that a run with lost QoS 0 messages is timed to its last delivery, not to the
    // idle timeout that ends it (the loss shows in the delivered column).
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let mut sub_clients = Vec::new();
    for i in 0..subs {
        let mut o = MqttOptions::new(format!("bsub-{i}-{}", rand_suffix()), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_clean_session(!persistent);
        let (c, mut el) = AsyncClient::new(o, 10_000);
        c.subscribe(&topic, qos).await.unwrap();
        wait_suback(&mut el).await;
        let tx = done_tx.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut last = Instant::now();
            loop {
                match tokio::time::timeout(Duration::from_secs(3), el.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                        n += 1;
                        last = Instant::now();
                        if n == count {
                            break;
                        }
                    }
                    Ok(Ok(_)) => {}
                    _ => break, // idle (messages lost) or error
                }
            }
            let _ = tx.send((n, last));
        });
        sub_clients.push(c);
    }
    let mut o = MqttOptions::new(format!("bpub-{}", rand_suffix()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    // The request queue holds the whole run, so the publishing loop never waits for
    // room. With a smaller queue it sleeps whenever the queue is full and is woken as
    // acknowledgements free places, how often depending on their timing (per 100,000
    // messages at 1->10, 32,500 times against sealpost and 18,700 against rumqttd in
    // one pair of runs): a cost of the client, on the same two cores as the broker,
    // that was deciding the comparison. QoS 1 is still paced by the PUBACK window
    // (rumqttc's 100 messages in flight), QoS 0 by TCP.
    let (publisher, mut el) = AsyncClient::new(o, count as usize);
    let pub_loop = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    // One buffer shared by all the requests: the queue holds the whole run.
    let payload = bytes::Bytes::from(vec![0xa5u8; size]);
    let start = Instant::now();
    for _ in 0..count {
        publisher
            .publish_bytes(&topic, qos, false, payload.clone())
            .await
            .unwrap();
    }
    let mut delivered = 0;
    let mut end = start;
    for _ in 0..subs {
        if let Some((n, last)) = done_rx.recv().await {
            delivered += n;
            end = end.max(last);
        }
    }
    let secs = end.duration_since(start).as_secs_f64().max(1e-9);
    pub_loop.abort();
    drop(sub_clients);
    Outcome {
        published: count,
        delivered,
        expected: count * subs as u64,
        secs,
    }
}

/// The order `repeat` rounds of runs take the `kinds` brokers (their indexes) in: the
/// rows of a balanced Latin square (Williams' design), one per round, so that over as
/// many rounds as it has rows (`kinds`, or twice that for an odd number) each broker
/// runs in each place once and right after each other broker equally often. Whatever a
/// run leaves to the machine (a data file being deleted, the kernel writing back what it
/// synced) then falls on all alike. A fixed order always put a column after the same
/// one; a rotation of it still did in all but one round of each cycle (with four
/// brokers, `"periodic"` ran right after `"always"` in three rounds of four, see
/// docs/BENCHMARKS.md, session 18).
fn turns(repeat: usize, kinds: usize) -> impl Iterator<Item = usize> {
    // First row 0, 1, n-1, 2, n-2, ...; row i adds i to each (mod n); for an odd n the
    // rows reversed follow.
    let first: Vec<usize> = (0..kinds)
        .map(|j| match j {
            0 => 0,
            j if j % 2 == 1 => j.div_ceil(2),
            j => kinds - j / 2,
        })
        .collect();
    let mut rows: Vec<Vec<usize>> = (0..kinds)
        .map(|i| first.iter().map(|&k| (k + i) % kinds).collect())
        .collect();
    if kinds % 2 == 1 {
        let reversed: Vec<Vec<usize>> = rows
            .iter()
            .map(|r| r.iter().rev().copied().collect())
            .collect();
        rows.extend(reversed);
    }
    (0..repeat).flat_map(move |round| rows[round % rows.len()].clone())
}

/// Polls a client's event loop until its SUBACK comes.
async fn wait_suback(el: &mut rumqttc::EventLoop) {
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => return,
            Ok(_) => {}
            Err(e) => panic!("no SUBACK: {e}"),
        }
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn mosquitto_clients_run(port: u16, count: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lines");
    let line = "x".repeat(99) + "\n";
    std::fs::write(&file, line.repeat(count)).unwrap();
    let topic = format!("bench/mq/{}", rand_suffix());
    let port = port.to_string();
    let both = ["-h", "127.0.0.1", "-p", &port, "-t", &topic, "-q", "1"];
    let mut sub = Command::new("mosquitto_sub")
        .args(both)
        .args(["-C", &count.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let status = Command::new("mosquitto_pub")
        .args(both)
        .arg("-l")
        .stdin(std::fs::File::open(&file).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if sub.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = sub.kill();
            return f64::NAN;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    count as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve-sealpost") => return serve_sealpost(args[2].parse().unwrap()),
        Some("serve-rumqttd") => return serve_rumqttd(args[2].parse().unwrap()),
        Some("serve-sealpost-durable") => {
            return durable::serve_durable(args[2].parse().unwrap(), args[3].as_ref(), &args[4])
        }
        // `load PORT SUBS QOS SIZE COUNT [RUNS]`: one scenario against a broker already
        // running, e.g. one started under a profiler with `serve-sealpost PORT` (or
        // `serve-sealpost-durable PORT DIR SYNC`); SEALPOST_BENCH_PERSISTENT=1 gives the
        // subscribers persistent sessions, as the durable table does.
        Some("load") => {
            let n = |i: usize| -> u64 { args[i].parse().unwrap() };
            let qos = if n(4) == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            // An optional 7th argument repeats the scenario in the same process.
            let runs = args.get(7).map_or(1, |_| n(7));
            let persistent = std::env::var_os("SEALPOST_BENCH_PERSISTENT").is_some();
            let rt = tokio::runtime::Runtime::new().unwrap();
            for _ in 0..runs {
                let o = rt.block_on(scenario_with(
                    n(2) as u16,
                    n(3) as usize,
                    qos,
                    n(5) as usize,
                    n(6),
                    persistent,
                ));
                println!(
                    "{:.0} msg/s published, {}/{} delivered",
                    o.published as f64 / o.secs,
                    o.delivered,
                    o.expected
                );
            }
            return;
        }
        _ => {}
    }
    let quick = args.iter().skip(1).any(|a| a == "quick");
    let scale: u64 = if quick { 10 } else { 1 };
    // SEALPOST_BENCH_REPEAT=N: runs per cell and broker (default 5), for a steadier
    // median where a cell swings between runs.
    let repeat = match std::env::var("SEALPOST_BENCH_REPEAT") {
        Ok(n) => n
            .parse()
            .ok()
            .filter(|&n: &usize| n > 0)
            .expect("SEALPOST_BENCH_REPEAT is a number of runs, at least 1"),
        Err(_) if quick => 1,
        Err(_) => 5,
    };
    // SEALPOST_BENCH_ONLY="1->10 QoS0 1024": only the scenarios whose label contains it
    // (and no mosquitto_pub or memory runs).
    let only = std::env::var("SEALPOST_BENCH_ONLY").ok();
    match args.get(1).map(String::as_str) {
        Some("durable") => return durable::table(repeat, scale, only.as_deref()),
        Some("restart") => return durable::restart(repeat.min(3)),
        // `footprint [N]`: only the RSS table, with N connections (default 10,000).
        Some("topics") => {
            let n = |i: usize| -> u64 { args[i].parse().unwrap() };
            return topics::table(n(2), n(3) as usize);
        }
        Some("footprint") => {
            let n = args.get(2).map_or(10_000, |n| n.parse().unwrap());
            let kinds = [Kind::Sealpost, Kind::Rumqttd, Kind::Mosquitto];
            return footprint::table(&kinds, n);
        }
        // `footprint-in-process N...`: sealpost's memory per connection with N
        // connections over in-process pipes, beyond the open-file limit.
        Some("footprint-in-process") => {
            let ns: Vec<usize> = args[2..].iter().map(|n| n.parse().unwrap()).collect();
            return footprint::in_process_table(&ns);
        }
        Some("footprint-in-process-round") => {
            return footprint::in_process_round(
                args[2].parse().unwrap(),
                args[3].parse().unwrap(),
                args[4] == "broker",
            );
        }
        Some("router-links") => {
            return footprint::router_links_table(
                args.get(2).map_or(10_000, |n| n.parse().unwrap()),
            );
        }
        Some("router-leave") => {
            let ns: Vec<usize> = args[2..].iter().map(|n| n.parse().unwrap()).collect();
            return footprint::router_leave_table(&ns);
        }
        Some("router-links-round") => {
            return footprint::router_links_round(args[2].parse().unwrap(), args[3] == "1");
        }
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let kinds = [Kind::Sealpost, Kind::Rumqttd, Kind::Mosquitto];
    println!("| scenario | broker | published msg/s | delivered msg/s | delivered/expected (worst run) |");
    println!("|---|---|---:|---:|---:|");
    for (subs, qos, size, count) in [
        // About a second per run for sealpost: shorter runs are dominated by how the
        // threads happen to be scheduled at the start.
        (1, QoS::AtMostOnce, 100, 500_000u64),
        (1, QoS::AtLeastOnce, 100, 300_000),
        (1, QoS::AtMostOnce, 1024, 300_000),
        (1, QoS::AtLeastOnce, 1024, 200_000),
        (10, QoS::AtMostOnce, 100, 200_000),
        (10, QoS::AtLeastOnce, 100, 100_000),
        (10, QoS::AtMostOnce, 1024, 100_000),
        (10, QoS::AtLeastOnce, 1024, 100_000),
    ] {
        let count = count / scale;
        let label = format!("1->{subs} QoS{} {size} B", qos as u8);
        if only.as_ref().is_some_and(|o| !label.contains(o.as_str())) {
            continue;
        }
        // Median of `repeat` runs (each on a fresh broker) against machine noise, the
        // brokers taking turns (see `turns`); the delivered column is the worst run.
        let mut runs: Vec<Vec<Outcome>> = kinds.iter().map(|_| Vec::new()).collect();
        for k in turns(repeat, kinds.len()) {
            let broker = launch(kinds[k]);
            runs[k].push(rt.block_on(scenario(broker.port, subs, qos, size, count)));
        }
        for (kind, mut runs) in kinds.into_iter().zip(runs) {
            runs.sort_by(|a, b| {
                (a.delivered as f64 / a.secs).total_cmp(&(b.delivered as f64 / b.secs))
            });
            let o = &runs[runs.len() / 2];
            let worst = runs.iter().map(|r| r.delivered).min().unwrap_or(0);
            println!(
                "| {label} | {} | {:.0} | {:.0} | {}/{} |",
                kind.name(),
                o.published as f64 / o.secs,
                o.delivered as f64 / o.secs,
                worst,
                o.expected
            );
        }
    }
    if only.is_some() {
        return;
    }
    println!();
    println!("| mosquitto_pub -l / mosquitto_sub, QoS 1, 100 B, 1->1 | msg/s |");
    println!("|---|---:|");
    for kind in kinds {
        let broker = launch(kind);
        let rate = mosquitto_clients_run(broker.port, (50_000 / scale) as usize);
        println!("| {} | {rate:.0} |", kind.name());
    }
    println!();
    footprint::table(&kinds, (10_000 / scale) as usize);
}
