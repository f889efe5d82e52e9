//! Envelope and key-message parsing and verification: `sealpost_tests::fuzz::protocol_open`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sealpost_tests::fuzz::protocol_open(data));
