//! The command-line tools under test: built once per test run, run with bounded waits.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Directory holding this build's binaries (`target/<profile>`), built on first use:
/// cargo builds another package's binaries for its own tests only, so build them here.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // The test runs from target/<profile>/deps/.
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let target_dir = profile_dir.parent().expect("target dir");
        let mut cargo = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        cargo
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "--quiet",
                "--bin",
                "sealpost-pub",
                "--bin",
                "sealpost-sub",
            ])
            .args(["--bin", "sealpost-certs", "--bin", "sealpost-broker"])
            .args(["-p", "sealpost-cli", "-p", "sealpost-broker"])
            // Selected too, so that dependencies get the features they have in this test
            // build (tokio's test-util): the tools share its artifacts instead of
            // rebuilding every crate above tokio (tests/tests/features.rs).
            .args(["-p", "sealpost-tests", "--target-dir"])
            .arg(target_dir);
        // Not the variables cargo set for this test: build scripts (ring's among them)
        // that watch CARGO_MANIFEST_DIR, CARGO_PKG_NAME or OUT_DIR would run again, and
        // every crate above them be rebuilt, here and again at the next `cargo test`.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&name.as_ref())
            {
                cargo.env_remove(name.as_ref());
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "building the command-line tools failed");
        profile_dir.to_owned()
    })
}

/// A command for the tool `name` with no standard input.
pub fn tool(name: &str) -> Command {
    let mut c = Command::new(bin_dir().join(name));
    c.stdin(Stdio::null());
    c
}

/// Runs `command` to completion (bounded: every command here has its own timeout).
pub fn run(command: &mut Command) -> Output {
    let output = command.output().expect("run tool");
    eprintln!(
        "{command:?}\n  status {}\n  stdout {:?}\n  stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// [`run`], asserting success.
pub fn ok(command: &mut Command) -> Output {
    let output = run(command);
    assert!(output.status.success(), "{command:?} failed");
    output
}

/// A process started in the background, its stdout and stderr collected by threads as
/// it runs; killed on drop.
pub struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Running {
    /// Starts `command` with its output collected.
    pub fn start(command: &mut Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for child")
    }

    /// Waits (bounded by `within`) until its stderr contains `what`; panics with the
    /// output if it does not, or if the process exits first.
    pub fn wait_for_stderr(&mut self, what: &str, within: Duration) {
        self.wait_until(&format!("printing {what:?}"), within, |r| {
            r.stderr().contains(what)
        });
    }

    /// Waits (bounded by `within`) until `ready` holds; panics, naming `what` it waited
    /// for and with the output, if it does not, or if the process exits first.
    pub fn wait_until(&mut self, what: &str, within: Duration, ready: impl Fn(&Running) -> bool) {
        let deadline = Instant::now() + within;
        while !ready(self) {
            if let Some(status) = self.try_wait() {
                panic!("exited ({status}) before {what}: {}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "not {what} within {within:?}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit, at most `within` (then kills).
    pub fn interrupt(&mut self, within: Duration) -> ExitStatus {
        self.signal("INT", within)
    }

    /// Sends the signal `name` (`INT`, `TERM`, ...) and waits for the exit, at most
    /// `within` (then kills).
    pub fn signal(&mut self, name: &str, within: Duration) -> ExitStatus {
        ok(Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .stdout(Stdio::null()));
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "did not stop on SIG{name} within {within:?}: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects everything `pipe` yields, on a thread of its own, until it closes.
fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let sink = Arc::new(Mutex::new(Vec::new()));
    let shared = sink.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            shared.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    sink
}
