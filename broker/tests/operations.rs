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

/// Writes a configuration with one plain listener on an ephemeral loopback port.
fn ephemeral_config(dir: &std::path::Path) -> String {
    let path = dir.join("broker.toml");
    std::fs::write(
        &path,
        "[[listener]]\nkind = \"tcp\"\nbind = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// Issue 14 item 4: ordinary connections log "client connected" and "client
/// disconnected" (with the reason) and nothing at ERROR, without ANSI colours when the
/// log is not a terminal. Each client pipelines CONNECT, PUBLISH and DISCONNECT, which
/// made rumqttd log "no-connection id N is already gone" at ERROR.
#[test]
fn normal_connections_log_connected_and_disconnected_and_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = ephemeral_config(dir.path());
    let broker = common::process::BrokerProcess::start_logged(&["--config", &config], "info", 1);
    let addr = broker.addr("Tcp");
    let rt = tokio::runtime::Runtime::new().unwrap();
    const CLIENTS: usize = 30;
    rt.block_on(async {
        for i in 0..CLIENTS {
            let version = if i % 2 == 0 { 4 } else { 5 };
            let mut bytes = connect_packet(version, &format!("log-{i}"));
            // QoS 0 PUBLISH "t" "x" (MQTT 5: with an empty property block).
            if version == 5 {
                bytes.extend_from_slice(&[0x30, 0x05, 0x00, 0x01, b't', 0x00, b'x']);
            } else {
                bytes.extend_from_slice(&[0x30, 0x04, 0x00, 0x01, b't', b'x']);
            }
            bytes.extend_from_slice(&[0xe0, 0x00]);
            let (_, closed) = raw_exchange(addr, &bytes).await;
            assert!(closed, "the broker closes after DISCONNECT");
        }
    });
    let last = format!(
        "client disconnected client_id=log-{} reason=DISCONNECT",
        CLIENTS - 1
    );
    assert!(broker.wait_for_log(&last), "{}", broker.log());
    // The router handles the last DISCONNECT on its own thread: give it time to log.
    std::thread::sleep(Duration::from_millis(300));
    let log = broker.log();
    assert_eq!(
        log.matches("client connected").count(),
        CLIENTS,
        "one line per connection: {log}"
    );
    assert_eq!(log.matches("client disconnected").count(), CLIENTS, "{log}");
    assert!(
        !log.contains("ERROR"),
        "an ERROR line in normal operation: {log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log that is no terminal"
    );
}

/// Issue 15 item 5: `-p PORT` (and `--bind ADDR`) without a configuration file replace
/// the default listener.
#[test]
fn port_and_bind_options_choose_the_listener_without_a_config_file() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for args in [
        &["-p", "0"][..],
        &["--bind", "127.0.0.1", "--port", "0"][..],
    ] {
        let broker = common::process::BrokerProcess::start_logged(args, "warn", 1);
        let addr = broker.addr("Tcp");
        assert_eq!(addr.ip().to_string(), "127.0.0.1", "{args:?}");
        assert_ne!(addr.port(), 1883, "{args:?}");
        rt.block_on(assert_serving(addr));
    }
}

/// With `--config`, `-p` adds a plain listener to the configured ones.
#[test]
fn port_option_adds_a_listener_to_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = ephemeral_config(dir.path());
    let broker =
        common::process::BrokerProcess::start_logged(&["--config", &config, "-p", "0"], "warn", 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (_, addr) in &broker.listeners {
        rt.block_on(assert_serving(*addr));
    }
    assert_ne!(broker.listeners[0].1, broker.listeners[1].1);
}

/// `-v` logs at debug level (here: a connection closed before CONNECT, which is
/// logged at debug only).
#[test]
fn verbose_option_logs_debug_lines() {
    let broker = common::process::BrokerProcess::start_logged(&["-p", "0", "-v"], "", 1);
    drop(std::net::TcpStream::connect(broker.addr("Tcp")).unwrap());
    assert!(
        broker.wait_for_log("connection refused before CONNECT"),
        "{}",
        broker.log()
    );
}

/// `--data-dir DIR`: created (mode 0700) when missing, and retained messages are kept
/// in it across a restart.
#[test]
fn data_dir_option_keeps_retained_messages_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_arg = data.to_str().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut broker = common::process::BrokerProcess::start_logged(
        &["-p", "0", "--data-dir", data_arg],
        "warn",
        1,
    );
    rt.block_on(async {
        let mut c = V4::connect("dd-pub", broker.addr("Tcp")).await;
        c.client
            .publish("dd/t", rumqttc::QoS::AtLeastOnce, true, "kept")
            .await
            .unwrap();
        tokio::time::timeout(WAIT, async {
            while !matches!(
                c.next().await,
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))
            ) {}
        })
        .await
        .expect("PUBACK");
    });
    assert!(broker.terminate().success());
    assert!(data.join("sealpost.redb").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    let broker = common::process::BrokerProcess::start_logged(
        &["-p", "0", "--data-dir", data_arg],
        "warn",
        1,
    );
    rt.block_on(async {
        let mut c = V4::connect("dd-sub", broker.addr("Tcp")).await;
        c.subscribe("dd/t", rumqttc::QoS::AtLeastOnce).await;
        let m = c.publish_msg().await.expect("the retained message");
        assert_eq!(&m.payload[..], b"kept");
        assert!(m.retain);
    });
}
