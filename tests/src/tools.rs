//! The command-line tools under test: built once per test run, run with bounded waits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

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
            .args(["--bin", "sealpost-certs"])
            .args(["-p", "sealpost-publisher", "-p", "sealpost-subscriber"])
            .args(["-p", "sealpost-certs", "--target-dir"])
            .arg(target_dir);
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
