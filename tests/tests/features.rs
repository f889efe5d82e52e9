//! Every dependency gets the same features whichever packages a command builds (issue 14
//! item 6), so switching between the README's commands rebuilds nothing. Checked with
//! `cargo tree` (no build): for each group of commands that share a profile, every crate
//! that two of them build has the same features in both. `workspace-hack/Cargo.toml`
//! holds the union; a failure names the crate and features to add there.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Crate (`name vX.Y.Z`) -> the feature sets it is built with (one per host/target
/// instance), in one package selection.
type Features = BTreeMap<String, BTreeSet<String>>;

fn features(selection: &[&str], edges: &str) -> Features {
    let output = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree", "--locked", "--prefix", "none", "-f", "{p} {f}", "-e", edges,
        ])
        .args(selection)
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree {selection:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut crates = Features::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let line = line.replace(" (*)", "").replace(" (proc-macro)", "");
        let mut words = line.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        // Workspace packages carry their path: they are what is built, not a dependency.
        if words.clone().any(|w| w.starts_with('(')) {
            continue;
        }
        let features = words.next().unwrap_or("").to_owned();
        crates
            .entry(format!("{name} {version}"))
            .or_default()
            .insert(features);
    }
    assert!(crates.len() > 20, "cargo tree printed {crates:?}");
    crates
}

/// Asserts that every crate built by two of the `commands` has the same features in both
/// (one build may also use a crate on the host side that the other does not: a subset).
fn assert_same_features(commands: &[(&str, Features)]) {
    let mut conflicts = Vec::new();
    for (i, (a, fa)) in commands.iter().enumerate() {
        for (b, fb) in &commands[i + 1..] {
            for (krate, sa) in fa {
                let Some(sb) = fb.get(krate) else { continue };
                if !sa.is_subset(sb) && !sb.is_subset(sa) {
                    conflicts.push(format!("{krate}: `{a}` {sa:?}, `{b}` {sb:?}"));
                }
            }
        }
    }
    assert!(
        conflicts.is_empty(),
        "dependencies built with different features (add the union to \
         workspace-hack/Cargo.toml):\n{}",
        conflicts.join("\n")
    );
}

/// The command-line tools and the broker (the README's build command).
const TOOLS: &[&str] = &["-p", "sealpost-cli", "-p", "sealpost-broker"];

#[test]
fn the_readme_build_and_run_commands_share_every_dependency() {
    // `cargo run --release -p <package>` for the broker and the tools, the walkthrough's
    // build of both, and builds of each library alone.
    let edges = "normal,build";
    assert_same_features(&[
        (
            "cargo build -p sealpost-cli -p sealpost-broker",
            features(TOOLS, edges),
        ),
        (
            "cargo run -p sealpost-broker",
            features(&["-p", "sealpost-broker"], edges),
        ),
        (
            "cargo run -p sealpost-cli --bin sealpost-certs",
            features(&["-p", "sealpost-cli"], edges),
        ),
        (
            "cargo build -p sealpost-certs",
            features(&["-p", "sealpost-certs"], edges),
        ),
        (
            "cargo build -p sealpost-publisher",
            features(&["-p", "sealpost-publisher"], edges),
        ),
        (
            "cargo build -p sealpost-subscriber",
            features(&["-p", "sealpost-subscriber"], edges),
        ),
        (
            "cargo build -p sealpost-protocol",
            features(&["-p", "sealpost-protocol"], edges),
        ),
    ]);
}

#[test]
fn the_test_commands_share_every_dependency() {
    // scripts/test (cargo test --workspace), the end-to-end tests alone, and the tools
    // they build (tests/src/tools.rs: the CLI's and the broker's binaries, with sealpost-tests
    // selected so that its tokio test-util is in every one of these builds). The tests of
    // another package alone (`cargo test -p sealpost-broker`) build tokio without it:
    // test-util stays out of workspace-hack/, or it would be in every release binary.
    let mut tools: Vec<&str> = TOOLS.to_vec();
    tools.extend(["-p", "sealpost-tests"]);
    assert_same_features(&[
        (
            "cargo test --workspace",
            features(&["--workspace"], "normal,build,dev"),
        ),
        (
            "cargo test -p sealpost-tests",
            features(&["-p", "sealpost-tests"], "normal,build,dev"),
        ),
        (
            "the tools the tests build",
            features(&tools, "normal,build"),
        ),
    ]);
}
