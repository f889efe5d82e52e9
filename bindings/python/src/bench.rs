//! The same seal and open loops in Rust, for the benchmark's "Python vs the Rust core in
//! the same run" (`bench/seal_open.py`).

use std::time::Instant;

use pyo3::prelude::*;

use crate::sealing::{Opener, Sealer};

/// Seals `count` payloads of `size` bytes one by one with `sealer`, then opens them one
/// by one with `opener`, timing each loop; returns `(seal_seconds, open_seconds)`.
/// The sealer must have `count` sequence numbers reserved and the opener its key.
#[pyfunction]
pub fn rust_seal_open(
    py: Python<'_>,
    sealer: &Bound<'_, Sealer>,
    opener: &Bound<'_, Opener>,
    topic: &str,
    size: usize,
    count: usize,
    now: i64,
) -> PyResult<(f64, f64)> {
    let mut sealer = sealer.borrow_mut();
    let mut opener = opener.borrow_mut();
    let (sealer, opener) = (sealer.inner_mut(), opener.inner_mut());
    let payload = vec![0x5a_u8; size];
    py.detach(|| {
        let start = Instant::now();
        let mut sealed = Vec::with_capacity(count);
        for _ in 0..count {
            sealed.push(sealer.seal(topic, &payload, now).map_err(|e| e.to_string())?);
        }
        let seal_secs = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for envelope in &sealed {
            opener.open_at(topic, envelope, now).map_err(|e| e.to_string())?;
        }
        Ok((seal_secs, start.elapsed().as_secs_f64()))
    })
    .map_err(|e: String| pyo3::exceptions::PyRuntimeError::new_err(e))
}
