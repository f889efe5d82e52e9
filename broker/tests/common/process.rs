//! The broker binary as users run it, in a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `sealpost-broker --config FILE` process, killed when dropped.
pub struct BrokerProcess {
    child: Child,
    /// Each listener's kind (as printed, e.g. `Tcp`, `Tls`) and address.
    pub listeners: Vec<(String, SocketAddr)>,
}

impl BrokerProcess {
    /// Starts the binary with `config` and waits until it has printed its
    /// `listeners` listening addresses.
    pub fn start(config: &Path, listeners: usize) -> BrokerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sealpost-broker"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("broker binary starts");
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
        }
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
