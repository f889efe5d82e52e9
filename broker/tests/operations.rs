//! Operations: the binary, its configuration file, metrics and graceful shutdown.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn example_config_file_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/broker.example.toml");
    let c = sealpost_broker::Config::load(std::path::Path::new(path)).expect("example parses");
    assert_eq!(c.listeners[0].bind.to_string(), "127.0.0.1:1883");
}

#[test]
fn invalid_config_is_reported_and_the_binary_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[limits]\nmax_conections = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost-broker"))
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_conections"));
}

/// Runs the binary on ephemeral ports, uses it, and stops it with SIGTERM.
#[test]
fn binary_prints_its_listeners_serves_metrics_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.toml");
    std::fs::write(
        &path,
        "[[listener]]\nkind = \"tcp\"\nbind = \"127.0.0.1:0\"\n[metrics]\nbind = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sealpost-broker"))
        .args(["--config", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listen_line = lines.next().unwrap().unwrap();
    let metrics_line = lines.next().unwrap().unwrap();
    assert!(
        listen_line.starts_with("sealpost-broker listening on Tcp 127.0.0.1:"),
        "{listen_line}"
    );
    let mqtt: std::net::SocketAddr = listen_line.rsplit(' ').next().unwrap().parse().unwrap();
    let metrics = metrics_line
        .trim_start_matches("sealpost-broker metrics on http://")
        .trim_end_matches("/metrics")
        .to_owned();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(assert_serving(mqtt));

    let mut s = std::net::TcpStream::connect(&metrics).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"));
    assert!(body.contains("# TYPE sealpost_messages_in_total counter"));
    let line = body
        .lines()
        .find(|l| l.starts_with("sealpost_messages_in_total "))
        .unwrap();
    let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1, "the health-check publish was counted");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "broker did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")));
}

#[tokio::test]
async fn shutdown_sends_v5_clients_server_shutting_down() {
    let (broker, addr) = start(tcp_config()).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(&connect_packet(5, "bye")).await.unwrap();
    let mut first = [0u8; 2];
    s.read_exact(&mut first).await.unwrap();
    let mut rest = vec![0u8; first[1] as usize];
    s.read_exact(&mut rest).await.unwrap();
    let stop = tokio::spawn(broker.shutdown(WAIT));
    let (bytes, closed) = read_until_closed(&mut s).await;
    assert_eq!(bytes, vec![0xe0, 0x01, 0x8b]);
    assert!(closed);
    stop.await.unwrap();
}

#[tokio::test]
async fn metrics_endpoint_answers_404_elsewhere() {
    let mut c = tcp_config();
    c.metrics.bind = Some("127.0.0.1:0".parse().unwrap());
    let (broker, _) = start(c).await;
    let m = broker.metrics_addr().unwrap();
    let (reply, _) = raw_exchange(m, b"GET /nope HTTP/1.1\r\n\r\n").await;
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 404"));
    broker.shutdown(WAIT).await;
}
