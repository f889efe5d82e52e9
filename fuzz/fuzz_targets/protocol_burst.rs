//! Version 2 burst envelopes, edited: `sealpost_tests::fuzz::protocol_burst`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Sets up the harness (a CA, a publisher, a sealed burst) outside the timed runs.
fuzz_target!(
    init: sealpost_tests::fuzz::protocol_burst(&[]),
    |data: &[u8]| sealpost_tests::fuzz::protocol_burst(data)
);
