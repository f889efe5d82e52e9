//! Fuzz target bodies: what each coverage-guided fuzz target in `fuzz/` does with one
//! input.
//!
//! They live here, in a crate of the workspace, so that the same code runs in two
//! places: under libFuzzer (`cargo +nightly fuzz run <target>`, see `fuzz/README.md`),
//! and on stable Rust in `tests/tests/fuzz_corpus.rs`, which replays every committed
//! input of `fuzz/corpus/<target>/`. An input that once crashed a target is committed
//! there, so it stays a regression test of the ordinary `cargo test`.
//!
//! Each body panics exactly when it finds a bug: a panic in the code under test, or a
//! broken invariant it asserts (nothing forged is ever accepted, a connection always
//! ends and releases what it held, no key leaves the KDC without a valid token).

mod broker;
mod burst;
mod kdc;
mod protocol;
pub mod seeds;

pub use broker::{broker_codec, broker_connection, tolerate_caught_decoder_panics};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Installs (once) a panic hook that counts every panic on any thread, except those of
/// rumqttd's decoders that the edge catches. A target's body sees only panics on its
/// own thread; a panic on a thread it does not join (rumqttd's router thread above
/// all) is seen by libFuzzer's hook, and by [`panics`] on stable.
pub fn count_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !broker::in_rumqttd_decoder(info.location()) {
                PANICS.fetch_add(1, Ordering::SeqCst);
                previous(info);
            }
        }));
    });
}

/// Panics counted since [`count_panics`] was installed.
pub fn panics() -> usize {
    PANICS.load(Ordering::SeqCst)
}
pub use burst::{protocol_burst, GENUINE_ENVELOPES};
pub use kdc::kdc_http;
pub use protocol::protocol_open;

/// What a fuzz target does with one input.
pub type Body = fn(&[u8]);

/// Every fuzz target: its name (the directory of its corpus) and its body.
pub const TARGETS: [(&str, Body); 5] = [
    ("broker_codec", broker_codec),
    ("broker_connection", broker_connection),
    ("protocol_open", protocol_open),
    ("protocol_burst", protocol_burst),
    ("kdc_http", kdc_http),
];
