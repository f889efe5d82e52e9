//! The KDC's HTTP handlers without TLS: `sealpost_tests::fuzz::kdc_http`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Setting up the harness (a CA, RSA and argon2 keys) with an empty input, outside the
// timed runs: under the sanitizer on a busy machine it can exceed libFuzzer's timeout.
fuzz_target!(
    init: sealpost_tests::fuzz::kdc_http(&[]),
    |data: &[u8]| sealpost_tests::fuzz::kdc_http(data)
);
