//! The broker binary as users run it, in a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// A `sealpost-broker` process, killed when dropped.
pub struct BrokerProcess {
    child: Child,
    /// Each listener's kind (as printed, e.g. `Tcp`, `Tls`) and address.
    pub listeners: Vec<(String, SocketAddr)>,
    log: Option<Arc<Mutex<String>>>,
}

impl BrokerProcess {
    /// Starts the binary with `config` and waits until it has printed its
    /// `listeners` listening addresses.
    pub fn start(config: &Path, listeners: usize) -> BrokerProcess {
        let config = config.to_str().expect("UTF-8 path");
        Self::spawn(&["--config", config], "warn", None, listeners)
    }

    /// Starts the binary with `args` and `RUST_LOG=filter` (none if empty), keeping what it logs (see
    /// [`BrokerProcess::log`]), and waits for its `listeners` listening addresses.
    pub fn start_logged(args: &[&str], filter: &str, listeners: usize) -> BrokerProcess {
        Self::spawn(args, filter, Some(Arc::default()), listeners)
    }

    fn spawn(
        args: &[&str],
        filter: &str,
        log: Option<Arc<Mutex<String>>>,
        listeners: usize,
    ) -> BrokerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sealpost-broker"));
        command.args(args).env_remove("RUST_LOG");
        if !filter.is_empty() {
            command.env("RUST_LOG", filter);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(if log.is_some() {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("broker binary starts");
        if let (Some(log), Some(stderr)) = (&log, child.stderr.take()) {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut found = Vec::new();
        while found.len() < listeners {
            let line = lines
                .next()
                .expect("broker printed its listeners before exiting")
                .expect("stdout readable");
            // "sealpost-broker listening on Tcp 127.0.0.1:40000"
            if let Some(rest) = line.strip_prefix("sealpost-broker listening on ") {
                let (kind, addr) = rest.split_once(' ').expect("kind and address");
                found.push((kind.to_owned(), addr.parse().expect("address")));
            }
        }
        // Keep reading stdout so that the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        BrokerProcess {
            child,
            listeners: found,
            log,
        }
    }

    /// What the broker has logged so far (started with [`BrokerProcess::start_logged`]).
    pub fn log(&self) -> String {
        let log = self.log.as_ref().expect("started with start_logged");
        log.lock().unwrap().clone()
    }

    /// Waits until the log contains `text`; false after [`super::WAIT`].
    pub fn wait_for_log(&self, text: &str) -> bool {
        let deadline = std::time::Instant::now() + super::WAIT;
        while std::time::Instant::now() < deadline {
            if self.log().contains(text) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// Address of the first listener of `kind` (`Tcp`, `Tls`...).
    pub fn addr(&self, kind: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, a)| *a)
            .expect("listener of that kind")
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`HUP`, `TERM`...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Stops the broker with SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.child.wait().expect("broker exits")
    }

    /// Resident memory of the broker now, in KiB (`VmRSS` in /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status readable");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
