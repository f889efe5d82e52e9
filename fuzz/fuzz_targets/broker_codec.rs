//! MQTT framing and decoding at the broker's edge: `sealpost_tests::fuzz::broker_codec`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: sealpost_tests::fuzz::tolerate_caught_decoder_panics(),
    |data: &[u8]| sealpost_tests::fuzz::broker_codec(data)
);
