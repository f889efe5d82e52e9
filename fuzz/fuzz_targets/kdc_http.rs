//! The KDC's HTTP handlers without TLS: `sealpost_tests::fuzz::kdc_http`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sealpost_tests::fuzz::kdc_http(data));
