//! Replays the committed corpus of every fuzz target (`fuzz/corpus/<target>/`) through
//! the same target bodies libFuzzer runs (`sealpost_tests::fuzz`), on stable Rust. The
//! seeds, and every input that ever crashed a target (committed there as
//! `crash-<hash>`), thereby stay regression tests of `cargo test`.

use std::path::{Path, PathBuf};

use sealpost_tests::fuzz::{self, TARGETS};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let (_, body) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    fuzz::count_panics();
    let files = corpus(target);
    assert!(
        files.iter().any(|f| f
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))),
        "{target}: the corpus has its seeds"
    );
    for file in files {
        let data = std::fs::read(&file).expect("read corpus file");
        println!("{target}: {}", file.display());
        body(&data);
    }
    assert_eq!(
        fuzz::panics(),
        0,
        "a thread panicked while {target} replayed its corpus"
    );
}

#[test]
fn broker_codec_corpus() {
    replay("broker_codec");
}

#[test]
fn broker_connection_corpus() {
    replay("broker_connection");
}

#[test]
fn protocol_open_corpus() {
    replay("protocol_open");
}

#[test]
fn protocol_burst_corpus() {
    replay("protocol_burst");
}

#[test]
fn kdc_http_corpus() {
    replay("kdc_http");
}

/// Every libFuzzer target in `fuzz/fuzz_targets/` has a body here and a corpus, so
/// none is left out of this replay.
#[test]
fn every_fuzz_target_is_replayed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    let mut found = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/fuzz_targets") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz target {name} has no body in sealpost_tests::fuzz::TARGETS"
        );
        assert!(
            !corpus(&name).is_empty(),
            "fuzz target {name} has no corpus"
        );
        found += 1;
    }
    assert_eq!(found, TARGETS.len(), "a body in TARGETS has no fuzz target");
}
