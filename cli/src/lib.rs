//! # sealpost-cli: the command-line tools
//!
//! `sealpost-pub` (publish, grant, revoke, KDC readers), `sealpost-sub` (receive),
//! `sealpost-gateway` (REST publishing) and `sealpost-certs` (the security center), over
//! the SDK and certificate libraries. What the tools share lives here once: their
//! broker, login and file arguments ([`args`]), connection reports and signals
//! ([`lifecycle`]) and log set-up ([`logging`]); the libraries stay free of `clap` and
//! `tracing-subscriber`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
pub mod lifecycle;
pub mod logging;
