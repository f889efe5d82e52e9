//! End-to-end benchmark of the SDKs through a real broker (see docs/BENCHMARKS.md,
//! "SDK end to end"). A bench target rather than a test: it measures, it asserts nothing.
//!
//! ```sh
//! cargo bench -p sealpost-tests --bench sdk_e2e                 # everything, on Mosquitto
//! cargo bench -p sealpost-tests --bench sdk_e2e -- --broker sealpost
//! cargo bench -p sealpost-tests --bench sdk_e2e -- --only rekey  # or throughput, breakdown
//! cargo bench -p sealpost-tests --bench sdk_e2e -- --only throughput --cell 256/0/1 --rounds 3
//! cargo bench -p sealpost-tests --bench sdk_e2e -- --only throughput --cell 256/0/1 --mode sealed
//! cargo bench -p sealpost-tests --bench sdk_e2e -- --only rekey --sizes 100,1000
//! cargo bench -p sealpost-tests --bench sdk_e2e -- --only rekey --key x25519  # HPKE readers
//! cargo bench -p sealpost-tests --bench sdk_e2e -- --only rekey --key xwing   # X-Wing readers
//! ```
//!
//! Throughput: one publisher floods `n` messages, each of `k` subscribers must receive
//! them; msg/s = messages published / (last receipt - first send). Latency: the same
//! pipeline paced at a fixed rate, so that p50/p99 measure the path, not a queue.
//! Plain runs use raw rumqttc clients, sealed runs the SDKs, over the same broker and
//! the same transport (plain TCP on Mosquitto).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use sealpost_certs::SubscriberKey;
use sealpost_publisher::Publisher;
use sealpost_subscriber::{Event, Subscriber};
use sealpost_tests::{Broker, BrokerKind, Pki};
use tokio::sync::mpsc;

mod certs_cache {
    use std::path::PathBuf;

    use rayon::prelude::*;
    use sealpost_certs::{CertificateAuthority, Profile, SubscriberKey, Validity};

    /// Where generated subscriber certificates are kept between runs: generating 10,000
    /// RSA-2048 keys takes many minutes, measuring with them does not.
    pub fn dir() -> PathBuf {
        std::env::var_os("SEALPOST_BENCH_CERTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sealpost-bench-certs")
            })
    }

    /// Where the subscriber certificates with `key` are kept: RSA ones in [`dir`], X25519
    /// and X-Wing ones in its `x25519/` and `xwing/` (same CA).
    pub fn key_dir(key: SubscriberKey) -> PathBuf {
        match key {
            SubscriberKey::Rsa => dir(),
            SubscriberKey::X25519 => dir().join("x25519"),
            SubscriberKey::XWing => dir().join("xwing"),
        }
    }

    /// The cached CA and `n` subscriber certificates (DER) with `key`, generating what is
    /// missing.
    pub fn load(n: usize, key: SubscriberKey) -> (CertificateAuthority, Vec<Vec<u8>>) {
        let dir = dir();
        std::fs::create_dir_all(key_dir(key)).expect("cache dir");
        let ca_cert = dir.join("ca.pem");
        let ca_key = dir.join("ca.key");
        let ca = if ca_cert.exists() {
            CertificateAuthority::from_pem(
                &std::fs::read_to_string(&ca_cert).unwrap(),
                &std::fs::read_to_string(&ca_key).unwrap(),
            )
            .expect("cached CA")
        } else {
            let ca = CertificateAuthority::create("bench CA", Validity::days_from_now(3650))
                .expect("CA");
            std::fs::write(&ca_key, ca.private_key_pem()).unwrap();
            std::fs::write(&ca_cert, ca.certificate_pem()).unwrap();
            ca
        };
        let path = |i: usize| key_dir(key).join(format!("sub-{i:05}.pem"));
        let missing: Vec<usize> = (0..n).filter(|i| !path(*i).exists()).collect();
        let reuse = std::env::var("SEALPOST_BENCH_REUSE_KEYS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok());
        if let (Some(pool), false, SubscriberKey::Rsa) = (reuse, missing.is_empty(), key) {
            // Fill the gaps quickly with certificates for keys already generated (CSR
            // signed by the CA): wrapping costs the same whichever key it is under, only
            // the number of distinct keys differs, and the run reports it.
            let pool: Vec<String> = (0..pool)
                .filter(|i| path(*i).exists())
                .map(|i| {
                    let text = std::fs::read_to_string(path(i)).unwrap();
                    let at = text.find("-----BEGIN PRIVATE KEY-----").unwrap();
                    text[at..].to_owned()
                })
                .collect();
            assert!(!pool.is_empty(), "no generated key to reuse");
            eprintln!(
                "issuing {} certificates for {} existing keys...",
                missing.len(),
                pool.len()
            );
            missing.par_iter().for_each(|i| {
                let key_pem = &pool[i % pool.len()];
                let key = rcgen::KeyPair::from_pem(key_pem).expect("RSA key");
                let csr = rcgen::CertificateParams::new(Vec::<String>::new())
                    .unwrap()
                    .serialize_request(&key)
                    .unwrap()
                    .pem()
                    .unwrap();
                let cert = ca
                    .sign_csr(
                        &csr,
                        &Profile::Subscriber {
                            id: format!("sub-{i:05}"),
                        },
                        Validity::days_from_now(3650),
                    )
                    .expect("sign CSR");
                let tmp = dir.join(format!(".sub-{i:05}.tmp"));
                std::fs::write(&tmp, format!("{cert}{key_pem}")).unwrap();
                std::fs::rename(&tmp, path(*i)).unwrap();
            });
        } else if !missing.is_empty() {
            eprintln!(
                "generating {} {key:?} subscriber certificates into {} (once)...",
                missing.len(),
                key_dir(key).display()
            );
            let started = std::time::Instant::now();
            let done = std::sync::atomic::AtomicUsize::new(0);
            missing.par_iter().for_each(|i| {
                let issued = ca
                    .issue_subscriber(&format!("sub-{i:05}"), key, Validity::days_from_now(3650))
                    .expect("issue subscriber");
                // Certificate then key in one file; written under a temporary name and
                // renamed so an interrupted run never leaves half a file.
                let tmp = key_dir(key).join(format!(".sub-{i:05}.tmp"));
                std::fs::write(
                    &tmp,
                    format!("{}{}", issued.certificate_pem, issued.private_key_pem),
                )
                .unwrap();
                std::fs::rename(&tmp, path(*i)).unwrap();
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if d.is_multiple_of(500) {
                    eprintln!("  {d} in {:.0?}", started.elapsed());
                }
            });
        }
        let ders = (0..n)
            .map(|i| {
                let text = std::fs::read_to_string(path(i)).unwrap();
                sealpost_certs::pemfile::decode(&text, sealpost_certs::pemfile::CERTIFICATE)
                    .unwrap()
            })
            .collect();
        (ca, ders)
    }
}

/// What one receiving client saw: per message, the latency in microseconds, and when
/// the last message arrived.
struct Received {
    latencies_us: Vec<u64>,
    last: Option<Instant>,
}

/// Which pipeline.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Plain,
    Sealed,
}

/// Nanoseconds since `base`, written into the first 8 bytes of every payload.
fn stamp(base: Instant, payload: &mut [u8]) {
    let nanos = base.elapsed().as_nanos() as u64;
    payload[..8].copy_from_slice(&nanos.to_be_bytes());
}

fn latency_us(base: Instant, payload: &[u8]) -> u64 {
    let sent = u64::from_be_bytes(payload[..8].try_into().unwrap_or_default());
    (base.elapsed().as_nanos() as u64).saturating_sub(sent) / 1000
}

/// Receives until `n` messages or `idle` without any; returns what it saw.
async fn collect(
    mut rx: mpsc::Receiver<Vec<u8>>,
    base: Instant,
    n: usize,
    idle: Duration,
) -> Received {
    let mut out = Received {
        latencies_us: Vec::with_capacity(n),
        last: None,
    };
    while out.latencies_us.len() < n {
        match tokio::time::timeout(idle, rx.recv()).await {
            Ok(Some(payload)) => {
                out.latencies_us.push(latency_us(base, &payload));
                out.last = Some(Instant::now());
            }
            _ => break,
        }
    }
    out
}

fn raw_options(name: &str, broker: &Broker) -> MqttOptions {
    let mut o = MqttOptions::new(name, "127.0.0.1", broker.port);
    o.set_max_packet_size(2_000_000, 2_000_000);
    o.set_inflight(1000);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// A raw subscriber feeding payloads into a channel; ready once subscribed.
async fn raw_subscriber(
    broker: &Broker,
    name: &str,
    filter: &str,
    qos: QoS,
) -> (mpsc::Receiver<Vec<u8>>, tokio::task::JoinHandle<()>) {
    raw_subscriber_with(raw_options(name, broker), filter, qos).await
}

/// [`raw_subscriber`] with the given connection options.
async fn raw_subscriber_with(
    options: MqttOptions,
    filter: &str,
    qos: QoS,
) -> (mpsc::Receiver<Vec<u8>>, tokio::task::JoinHandle<()>) {
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    // The same socket options as the SDKs, so plain and sealed differ only by sealing.
    eventloop.set_network_options(sealpost_publisher::transport::network_options());
    let (tx, rx) = mpsc::channel(100_000);
    let (ready_tx, mut ready_rx) = mpsc::channel(1);
    client.subscribe(filter, qos).await.unwrap();
    let task = tokio::spawn(async move {
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    if tx.send(p.payload.to_vec()).await.is_err() {
                        return;
                    }
                }
                Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.try_send(());
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("raw subscriber: {e}");
                    return;
                }
            }
        }
    });
    ready_rx.recv().await;
    (rx, task)
}

/// A sealed subscriber feeding plaintexts into a channel; ready once it holds a key.
async fn sealed_subscriber(
    pki: &Pki,
    broker: &Broker,
    cert_and_key: &str,
    filter: &str,
    qos: QoS,
) -> (
    mpsc::Receiver<Vec<u8>>,
    tokio::task::JoinHandle<()>,
    Arc<sealpost_subscriber::Counters>,
) {
    let split = cert_and_key.find("-----BEGIN PRIVATE KEY-----").unwrap();
    let mut config = sealpost_subscriber::SubscriberConfig::new(
        broker.address(),
        &cert_and_key[..split],
        &cert_and_key[split..],
        pki.ca_pem(),
    );
    config.event_capacity = 16_384;
    config.revocation_list = Some(pki.crl_path());
    // In memory, as in the runs docs/BENCHMARKS.md reports.
    config.state_dir = None;
    if broker.kind == BrokerKind::Sealpost {
        // There key messages go only to their recipients: the subscriber presents its
        // certificate over TLS (as the publisher does).
        config.broker = broker.tls_address();
        config.tls = Some(sealpost_publisher::TlsIdentity {
            ca_pem: pki.ca_pem(),
            client: Some((
                cert_and_key[..split].to_owned(),
                cert_and_key[split..].to_owned(),
            )),
        });
    }
    let mut s = Subscriber::connect(config)
        .await
        .expect("subscriber connects");
    s.subscribe(filter, qos).await.expect("subscribe");
    let counters = s.counters();
    let (tx, rx) = mpsc::channel(100_000);
    let task = tokio::spawn(async move {
        while let Some(event) = s.next().await {
            match event {
                Event::Message(m) => {
                    if tx.send(m.payload).await.is_err() {
                        return;
                    }
                }
                Event::Rejected(r) => eprintln!("rejected: {r:?}"),
                Event::KeyFetchFailed(f) => eprintln!("key fetch failed: {f:?}"),
            }
        }
    });
    (rx, task, counters)
}

struct RunResult {
    msgs_per_s: f64,
    lost: usize,
    p50_us: u64,
    p99_us: u64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The subscriber certificates (with keys) the sealed runs use: the first ten cached.
fn subscriber_files(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            std::fs::read_to_string(certs_cache::dir().join(format!("sub-{i:05}.pem"))).unwrap()
        })
        .collect()
}

/// Requests the plain client queues (rumqttc's request channel capacity).
const CLIENT_QUEUE: usize = 1024;

#[allow(clippy::too_many_arguments)]
async fn run(
    pki: &Pki,
    broker: &Broker,
    publisher: &Arc<Publisher>,
    subscribers: &[String],
    mode: Mode,
    size: usize,
    qos: QoS,
    fanout: usize,
    n: usize,
    pace: Option<Duration>,
    tag: &str,
) -> RunResult {
    let topic = format!("bench/{tag}");
    let base = Instant::now();
    let mut receivers = Vec::new();
    let mut tasks = Vec::new();
    for (i, files) in subscribers.iter().enumerate().take(fanout) {
        match mode {
            Mode::Plain => {
                let (rx, task) = raw_subscriber(broker, &format!("{tag}-s{i}"), &topic, qos).await;
                receivers.push(rx);
                tasks.push(task);
            }
            Mode::Sealed => {
                let (rx, task, counters) = sealed_subscriber(pki, broker, files, &topic, qos).await;
                // Wait for the retained key message, so no data waits in the hold buffer.
                let deadline = Instant::now() + Duration::from_secs(20);
                while counters.key_messages_total() == 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                receivers.push(rx);
                tasks.push(task);
            }
        }
    }
    let collectors: Vec<_> = receivers
        .into_iter()
        .map(|rx| tokio::spawn(collect(rx, base, n, Duration::from_secs(3))))
        .collect();
    let raw = match mode {
        Mode::Plain => {
            let (client, mut eventloop) =
                AsyncClient::new(raw_options(&format!("{tag}-pub"), broker), CLIENT_QUEUE);
            eventloop.set_network_options(sealpost_publisher::transport::network_options());
            tasks.push(tokio::spawn(async move {
                while eventloop.poll().await.is_ok() {}
            }));
            Some(client)
        }
        Mode::Sealed => None,
    };
    let mut payload = vec![0x5a_u8; size];
    let mut ticker = pace.map(|p| {
        let mut t = tokio::time::interval(p);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    // Sealed publish calls in flight at most: as many as the plain client's request
    // queue holds, so both modes queue the same way. Calls that queue up while a burst is
    // sealed are sealed together (protocol version 2); paced runs have one at a time.
    let mut in_flight = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..n {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        stamp(base, &mut payload);
        match &raw {
            Some(client) => client
                .publish(topic.as_str(), qos, false, payload.clone())
                .await
                .unwrap(),
            None => {
                let (publisher, topic, payload) =
                    (publisher.clone(), topic.clone(), payload.clone());
                in_flight.spawn(async move {
                    publisher
                        .publish(&topic, &payload, qos, false)
                        .await
                        .unwrap();
                });
                while in_flight.len() >= CLIENT_QUEUE {
                    in_flight.join_next().await;
                }
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
    let mut latencies = Vec::new();
    let mut last = started;
    let mut lost = 0;
    for c in collectors {
        let r = c.await.unwrap();
        lost += n - r.latencies_us.len();
        if let Some(l) = r.last {
            last = last.max(l);
        }
        latencies.extend(r.latencies_us);
    }
    for t in tasks {
        t.abort();
    }
    latencies.sort_unstable();
    RunResult {
        msgs_per_s: n as f64 / (last - started).as_secs_f64(),
        lost,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
    }
}

fn qos_name(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// Which cells of the throughput table to run, and how: `--cell SIZE/QOS/FANOUT` (may be
/// given several times; default every cell), `--mode plain|sealed` (default both: one
/// pipeline only, e.g. to profile it; the other's columns print `-`), `--rounds N` (each
/// cell N times, one row each; default 1) and `--no-latency` (skip the paced runs).
struct Cells {
    cells: Vec<(usize, QoS, usize)>,
    modes: Vec<Mode>,
    rounds: usize,
    latency: bool,
}

impl Cells {
    fn from_args(args: &[String]) -> Cells {
        let mut cells = Vec::new();
        for (i, a) in args.iter().enumerate() {
            if a != "--cell" {
                continue;
            }
            let spec = args.get(i + 1).map(String::as_str).unwrap_or_default();
            let parts: Vec<&str> = spec.split('/').collect();
            let parsed = match parts.as_slice() {
                [size, qos, fanout] => {
                    size.parse()
                        .ok()
                        .zip(fanout.parse().ok())
                        .and_then(|(size, fanout)| match *qos {
                            "0" => Some((size, QoS::AtMostOnce, fanout)),
                            "1" => Some((size, QoS::AtLeastOnce, fanout)),
                            _ => None,
                        })
                }
                _ => None,
            };
            cells.push(parsed.unwrap_or_else(|| panic!("--cell SIZE/QOS/FANOUT, not {spec:?}")));
        }
        if cells.is_empty() {
            for size in [256usize, 1024] {
                for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                    for fanout in [1usize, 10] {
                        cells.push((size, qos, fanout));
                    }
                }
            }
        }
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1).cloned())
        };
        let modes = match value("--mode").as_deref() {
            Some("plain") => vec![Mode::Plain],
            Some("sealed") => vec![Mode::Sealed],
            _ => vec![Mode::Plain, Mode::Sealed],
        };
        Cells {
            cells,
            modes,
            rounds: value("--rounds").and_then(|v| v.parse().ok()).unwrap_or(1),
            latency: !args.iter().any(|a| a == "--no-latency"),
        }
    }
}

async fn throughput(kind: BrokerKind, flood: usize, paced: usize, rate: u64, cells: &Cells) {
    let (ca, _) = certs_cache::load(10, SubscriberKey::Rsa);
    let pki = Pki::with_ca(ca);
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("bench-pub", &["bench/#"]);
    let publisher =
        Arc::new(sealpost_tests::publisher(pki.publisher_config(&broker, &pub_cert, "pub")).await);
    let subscribers = subscriber_files(10);
    let ders: Vec<Vec<u8>> = subscribers
        .iter()
        .map(|t| sealpost_certs::pemfile::decode(t, sealpost_certs::pemfile::CERTIFICATE).unwrap())
        .collect();
    publisher.grant_many(&ders).await.unwrap();
    println!(
        "\n### Throughput and latency ({kind:?}; flood of {flood} messages; latency at {rate} msg/s, {paced} messages)\n"
    );
    println!("| size | QoS | fan-out | plain msg/s | sealed msg/s | sealed/plain | plain p50 / p99 | sealed p50 / p99 | lost (plain/sealed) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut tag = 0;
    for _ in 0..cells.rounds {
        for &(size, qos, fanout) in &cells.cells {
            let mut results = Vec::new();
            for &mode in &cells.modes {
                tag += 1;
                let n = if fanout == 1 { flood } else { flood / 4 };
                let t = run(
                    &pki,
                    &broker,
                    &publisher,
                    &subscribers,
                    mode,
                    size,
                    qos,
                    fanout,
                    n,
                    None,
                    &format!("t{tag}"),
                )
                .await;
                tag += 1;
                let l = if cells.latency {
                    Some(
                        run(
                            &pki,
                            &broker,
                            &publisher,
                            &subscribers,
                            mode,
                            size,
                            qos,
                            fanout,
                            paced,
                            Some(Duration::from_micros(1_000_000 / rate)),
                            &format!("l{tag}"),
                        )
                        .await,
                    )
                } else {
                    None
                };
                results.push((mode, t, l));
            }
            let of = |mode: Mode| results.iter().find(|(m, _, _)| *m == mode);
            let rate = |mode: Mode| of(mode).map(|(_, t, _)| t.msgs_per_s);
            let cell = |mode: Mode, show: &dyn Fn(&RunResult, Option<&RunResult>) -> String| {
                of(mode).map_or("-".to_owned(), |(_, t, l)| show(t, l.as_ref()))
            };
            let rate_text = |t: &RunResult, _: Option<&RunResult>| format!("{:.0}", t.msgs_per_s);
            let latency_text = |_: &RunResult, l: Option<&RunResult>| {
                l.map_or("-".to_owned(), |l| {
                    format!("{} / {} µs", l.p50_us, l.p99_us)
                })
            };
            let lost_text = |t: &RunResult, l: Option<&RunResult>| {
                format!("{}+{}", t.lost, l.map_or(0, |l| l.lost))
            };
            println!(
                "| {size} B | {} | 1 -> {fanout} | {} | {} | {} | {} | {} | {} / {} |",
                qos_name(qos),
                cell(Mode::Plain, &rate_text),
                cell(Mode::Sealed, &rate_text),
                match (rate(Mode::Plain), rate(Mode::Sealed)) {
                    (Some(p), Some(s)) => format!("{:.0}%", 100.0 * s / p),
                    _ => "-".to_owned(),
                },
                cell(Mode::Plain, &latency_text),
                cell(Mode::Sealed, &latency_text),
                cell(Mode::Plain, &lost_text),
                cell(Mode::Sealed, &lost_text),
            );
        }
    }
}

/// Where the time of the sealed 1 -> 1 pipeline goes, 256 B, measured in the same run:
/// the protocol core alone (seal; open_batch as the subscriber SDK calls it), then each
/// SDK against the broker with the other side played by raw clients.
async fn breakdown(kind: BrokerKind, n: usize) {
    use sealpost_protocol::{
        seal_key_message, ContentKey, KeyLocation, KeyRecipient, Opener, PublisherIdentity, Sealer,
        SubscriberIdentity,
    };
    let (ca, _) = certs_cache::load(1, SubscriberKey::Rsa);
    let pki = Pki::with_ca(ca);
    let broker = Broker::start(kind, &pki);
    let pub_cert = pki.publisher("bd-pub", &["bench/#"]);
    let sub_files = subscriber_files(1);
    let split = sub_files[0].find("-----BEGIN PRIVATE KEY-----").unwrap();
    let (sub_cert, sub_key) = (&sub_files[0][..split], &sub_files[0][split..]);
    let identity =
        PublisherIdentity::from_pem(&pub_cert.certificate_pem, &pub_cert.private_key_pem).unwrap();
    let key = ContentKey::generate();
    let location = KeyLocation::key_topic_for(identity.id());
    let mut sealer = Sealer::new(identity.clone(), location.clone(), 1, &key, 1);
    sealer.reserve(n as u64 * 2);
    let topic = "bench/bd";
    let plaintext = vec![0x5a_u8; 256];
    println!("\n### Where the time goes: sealed 1 -> 1, 256 B ({kind:?}, {n} messages)\n");
    println!("| stage | msg/s |");
    println!("|---|---|");
    let rate = |started: Instant| n as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let envelopes: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            sealer
                .seal(topic, &plaintext, sealpost_certs::now_unix())
                .unwrap()
        })
        .collect();
    println!("| protocol: seal (one thread) | {:.0} |", rate(started));

    let recipient = KeyRecipient::new(
        sealpost_certs::parse(
            &sealpost_certs::pemfile::decode(sub_cert, sealpost_certs::pemfile::CERTIFICATE)
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let key_topic = location.key_message_topic(recipient.id()).unwrap();
    let key_message = seal_key_message(&identity, &recipient, &[(1, &key)], &key_topic, 0).unwrap();
    let mut opener = Opener::new(sealpost_certs::Verifier::new(&pki.ca_pem()).unwrap())
        .with_identity(SubscriberIdentity::from_pem(sub_cert, sub_key).unwrap());
    opener.accept_key_message(&key_topic, &key_message).unwrap();
    let now = sealpost_certs::now_unix();
    let started = Instant::now();
    for chunk in envelopes.chunks(256) {
        let items: Vec<(&str, &[u8])> = chunk.iter().map(|e| (topic, e.as_slice())).collect();
        for r in opener.open_batch(&items, now) {
            r.unwrap();
        }
    }
    println!(
        "| protocol: open_batch of 256 (one thread) | {:.0} |",
        rate(started)
    );

    // Publisher SDK alone: publish into the broker with a raw subscriber counting.
    let (rx, task) = raw_subscriber(&broker, "bd-raw-sub", topic, QoS::AtMostOnce).await;
    let collector = tokio::spawn(collect(rx, Instant::now(), n, Duration::from_secs(3)));
    let publisher =
        sealpost_tests::publisher(pki.publisher_config(&broker, &pub_cert, "bd-pub")).await;
    let started = Instant::now();
    for _ in 0..n {
        publisher
            .publish(topic, &plaintext, QoS::AtMostOnce, false)
            .await
            .unwrap();
    }
    let got = collector.await.unwrap();
    let elapsed = got.last.map_or(started.elapsed(), |l| l - started);
    println!(
        "| publisher SDK -> broker -> raw subscriber, QoS 0 ({} lost) | {:.0} |",
        n - got.latencies_us.len(),
        n as f64 / elapsed.as_secs_f64()
    );
    task.abort();
    drop(publisher);

    // Subscriber SDK alone: pre-sealed envelopes sent by a raw publisher.
    let (client, mut eventloop) = AsyncClient::new(raw_options("bd-raw-pub", &broker), 1024);
    eventloop.set_network_options(sealpost_publisher::transport::network_options());
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    client
        .publish(
            key_topic.as_str(),
            QoS::AtLeastOnce,
            true,
            key_message.clone(),
        )
        .await
        .unwrap();
    let (rx, task, counters) =
        sealed_subscriber(&pki, &broker, &sub_files[0], topic, QoS::AtMostOnce).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while counters.key_messages_total() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let collector = tokio::spawn(async move {
        let mut rx = rx;
        let mut got = 0;
        let mut last = None;
        while got < n {
            match tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
                Ok(Some(_)) => {
                    got += 1;
                    last = Some(Instant::now());
                }
                _ => break,
            }
        }
        (got, last)
    });
    let started = Instant::now();
    for e in envelopes {
        client
            .publish(topic, QoS::AtMostOnce, false, e)
            .await
            .unwrap();
    }
    let (got, last) = collector.await.unwrap();
    let elapsed = last.map_or(started.elapsed(), |l| l - started);
    println!(
        "| raw publisher -> broker -> subscriber SDK, QoS 0 ({} lost) | {:.0} |",
        n - got,
        n as f64 / elapsed.as_secs_f64()
    );
    task.abort();
    poller.abort();
}

/// Grants `n` subscribers at once, then revokes one; times both until the calls return
/// and until a spy on `sealpost/keys/#` has received every key message from the broker.
/// Each size runs twice, one publisher after the other: with the next epoch prepared
/// before the revoke (the publisher's default; the bench waits for the preparation, and
/// times it), and with preparing turned off (the revoke wraps and signs for everyone).
async fn rekey(kind: BrokerKind, sizes: &[usize], key: SubscriberKey) {
    let max = sizes.iter().copied().max().unwrap_or(0);
    let (ca, ders) = certs_cache::load(max, key);
    let distinct_keys: std::collections::HashSet<Vec<u8>> = ders
        .iter()
        .map(|d| {
            let info = sealpost_certs::parse(d).unwrap();
            match info.public_key {
                sealpost_certs::SubjectKey::X25519(k) => k.to_vec(),
                _ => format!("{:?}", info.rsa_public_key().unwrap()).into_bytes(),
            }
        })
        .collect();
    let pki = Pki::with_ca(ca);
    let broker = Broker::start(kind, &pki);
    println!(
        "\n### Grant and revoke ({kind:?}; {} rayon threads; {} certificates, {} distinct {key:?} keys)\n",
        rayon::current_num_threads(),
        ders.len(),
        distinct_keys.len()
    );
    println!("| subscribers | next epoch prepared | grant: returned / all delivered | next epoch ready, after the grant returned | grant bytes | revoke: returned / all delivered | revoke bytes | revoke key messages / wraps / prepared |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut phases = Vec::new();
    let runs = sizes
        .iter()
        .flat_map(|&n| [(n, true), (n, false)])
        .enumerate();
    for (round, (n, prepare)) in runs {
        let pub_cert = pki.publisher(&format!("rekey-{round}"), &["bench/#"]);
        let keys_filter = format!("sealpost/keys/rekey-{round}/#");
        let spy_id = format!("spy-{round}");
        let spy_options = match kind {
            BrokerKind::Mosquitto => raw_options(&spy_id, &broker),
            // The sealpost broker gives key messages to their recipients only: the spy
            // presents the publisher's certificate, which reads its own key topics.
            BrokerKind::Sealpost => sealpost_publisher::transport::mqtt_options(
                &spy_id,
                &broker.tls_address(),
                Some(&pki.tls_identity(Some(&pub_cert))),
                Duration::from_secs(30),
            )
            .expect("spy options"),
        };
        let (mut spy, spy_task) =
            raw_subscriber_with(spy_options, &keys_filter, QoS::AtLeastOnce).await;
        let mut config = pki.publisher_config(&broker, &pub_cert, &format!("pub-{round}"));
        config.prepare_next_epoch = prepare;
        let publisher = sealpost_tests::publisher(config).await;
        let started = Instant::now();
        let (grant, _) = publisher.grant_many(&ders[..n]).await.unwrap();
        let grant_returned = started.elapsed();
        wait_for_key_messages(&mut spy, grant.key_messages).await;
        let grant_delivered = started.elapsed();
        // The background preparation started when the grant returned; wait for the rest.
        publisher.prepare_next_epoch().await.unwrap();
        let preparing = started.elapsed() - grant_returned;
        let prepared = publisher.prepared_readers().await;

        let started = Instant::now();
        let revoke = publisher.revoke("sub-00000").await.unwrap();
        let revoke_returned = started.elapsed();
        // The revoked subscriber's key message is deleted by an empty retained message.
        wait_for_key_messages(&mut spy, revoke.key_messages + 1).await;
        let revoke_delivered = started.elapsed();
        println!(
            "| {n} | {} | {:.3} s / {:.3} s | {} | {} | {:.3} s / {:.3} s | {} | {} / {} / {} |",
            if prepare {
                format!("yes ({prepared})")
            } else {
                "no".to_owned()
            },
            grant_returned.as_secs_f64(),
            grant_delivered.as_secs_f64(),
            if prepare {
                format!("{:.3} s", preparing.as_secs_f64())
            } else {
                "-".to_owned()
            },
            grant.bytes,
            revoke_returned.as_secs_f64(),
            revoke_delivered.as_secs_f64(),
            revoke.bytes,
            revoke.key_messages,
            revoke.wrapped,
            revoke.prepared,
        );
        phases.push((n, prepare, grant.timings, revoke.timings));
        let _ = publisher.disconnect().await;
        spy_task.abort();
    }
    // Where the time of each call went, as the SDK measured it (`Rekey::timings`); the
    // rest of "returned" is the empty retained message of the revoked subscriber and
    // taking the publisher's lock.
    println!("\n| subscribers | next epoch prepared | call | verify | persist state | wrap + sign (all cores) | hand to MQTT client |");
    println!("|---|---|---|---|---|---|---|");
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    for (n, prepare, grant, revoke) in phases {
        for (call, t) in [("grant", grant), ("revoke", revoke)] {
            println!(
                "| {n} | {} | {call} | {} | {} | {} | {} |",
                if prepare { "yes" } else { "no" },
                ms(t.verify),
                ms(t.persist),
                ms(t.build),
                ms(t.send)
            );
        }
    }
}

/// Waits for `count` messages on the spy.
async fn wait_for_key_messages(spy: &mut mpsc::Receiver<Vec<u8>>, count: usize) {
    for _ in 0..count {
        tokio::time::timeout(Duration::from_secs(60), spy.recv())
            .await
            .expect("key messages arrive")
            .expect("spy running");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let key = match value("--key").as_deref() {
        Some("x25519") => SubscriberKey::X25519,
        Some("xwing") => SubscriberKey::XWing,
        _ => SubscriberKey::Rsa,
    };
    if args.iter().any(|a| a == "--certs-only") {
        certs_cache::load(10_000, key);
        return;
    }
    let kind = match value("--broker").as_deref() {
        Some("sealpost") => BrokerKind::Sealpost,
        _ => BrokerKind::Mosquitto,
    };
    let only = value("--only");
    let flood: usize = value("--messages")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if only.is_none() || only.as_deref() == Some("throughput") {
            throughput(kind, flood, 1_000, 500, &Cells::from_args(&args)).await;
        }
        if only.is_none() || only.as_deref() == Some("breakdown") {
            breakdown(kind, flood).await;
        }
        if only.is_none() || only.as_deref() == Some("rekey") {
            let sizes: Vec<usize> = value("--sizes")
                .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
                .unwrap_or_else(|| vec![100, 1_000, 10_000]);
            rekey(kind, &sizes, key).await;
        }
    });
}
