//! The same seal and open loops in Rust, for the benchmark's "Python vs the Rust core in
//! the same run" (`bench/seal_open.py`).

use std::time::Instant;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::sealing::{Opener, Sealer};

/// Seals `count` payloads of `size` bytes with `sealer`, then opens them with `opener`,
/// timing each loop; returns `(seal_seconds, open_seconds)`. With `burst` 0, one
/// message per call (`seal`, `open_at`); otherwise `seal_many` and `open_batch` of
/// `burst` messages. The sealer must have `count` sequence numbers reserved and the
/// opener its key.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn rust_seal_open(
    py: Python<'_>,
    sealer: &Bound<'_, Sealer>,
    opener: &Bound<'_, Opener>,
    topic: &str,
    size: usize,
    count: usize,
    burst: usize,
    now: i64,
) -> PyResult<(f64, f64)> {
    let mut sealer = sealer.borrow_mut();
    let mut opener = opener.borrow_mut();
    let (sealer, opener) = (sealer.inner_mut(), opener.inner_mut());
    let payload = vec![0x5a_u8; size];
    let run = || -> Result<(f64, f64), String> {
        let start = Instant::now();
        let mut sealed = Vec::with_capacity(count);
        if burst == 0 {
            for _ in 0..count {
                sealed.push(
                    sealer
                        .seal(topic, &payload, now)
                        .map_err(|e| e.to_string())?,
                );
            }
        } else {
            let messages = vec![(topic, payload.as_slice()); count];
            for chunk in messages.chunks(burst) {
                sealed.extend(sealer.seal_many(chunk, now).map_err(|e| e.to_string())?);
            }
        }
        let seal_secs = start.elapsed().as_secs_f64();
        let start = Instant::now();
        if burst == 0 {
            for envelope in &sealed {
                opener
                    .open_at(topic, envelope, now)
                    .map_err(|e| e.to_string())?;
            }
        } else {
            let items: Vec<(&str, &[u8])> = sealed.iter().map(|e| (topic, e.as_slice())).collect();
            for chunk in items.chunks(burst) {
                for result in opener.open_batch(chunk, now) {
                    result.map_err(|e| e.to_string())?;
                }
            }
        }
        Ok((seal_secs, start.elapsed().as_secs_f64()))
    };
    py.detach(run).map_err(PyRuntimeError::new_err)
}
