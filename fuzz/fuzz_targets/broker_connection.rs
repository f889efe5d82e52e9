//! Whole client connections of a real broker, before and after CONNECT:
//! `sealpost_tests::fuzz::broker_connection`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: sealpost_tests::fuzz::tolerate_caught_decoder_panics(),
    |data: &[u8]| sealpost_tests::fuzz::broker_connection(data)
);
