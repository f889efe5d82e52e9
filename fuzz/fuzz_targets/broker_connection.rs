//! Whole client connections of a real broker, before and after CONNECT:
//! `sealpost_tests::fuzz::broker_connection`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    // Setting up the harness (a broker) with an empty input, outside the timed runs.
    init: {
        sealpost_tests::fuzz::tolerate_caught_decoder_panics();
        sealpost_tests::fuzz::broker_connection(&[]);
    },
    |data: &[u8]| sealpost_tests::fuzz::broker_connection(data)
);
