//! `sealpost._native`: the Rust half of the `sealpost` Python package.
//!
//! Thin PyO3 wrappers over the sans-IO core: no sockets, no files, no clock reads (every
//! method takes the time as an argument). The Python half (`python/sealpost/`) drives
//! them with paho-mqtt as the transport. Rejections cross the boundary as the typed
//! exceptions of `sealpost.errors`, built from `Rejected::kind()`.
#![forbid(unsafe_code)]

mod bench;
mod errors;
mod sealing;
mod session;

use pyo3::prelude::*;

/// The module object; the Python package re-exports its classes.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<sealing::Sealer>()?;
    m.add_class::<sealing::Opener>()?;
    m.add_class::<sealing::Message>()?;
    m.add_class::<session::PublisherSession>()?;
    m.add_class::<session::SubscriberSession>()?;
    m.add_function(wrap_pyfunction!(bench::rust_seal_open, m)?)?;
    m.add(
        "RESEND_DELAY_MS",
        sealpost_session::RESEND_DELAY.as_millis() as u64,
    )?;
    Ok(())
}
