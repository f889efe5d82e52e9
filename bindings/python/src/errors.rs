//! Rust errors to the Python exceptions of `sealpost.errors`.
//!
//! The exception classes live in Python (docstrings, `isinstance` hierarchy, pickling);
//! this side only names the kind and the fields, so both stay one list: the
//! `Rejected::kind()` names.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use sealpost_protocol::{Rejected, SealError};

/// Builds the `sealpost.errors` exception for a rejection (an instance, not raised) of a
/// message that arrived on `topic`, if known.
pub fn rejection(py: Python<'_>, rejected: &Rejected, topic: Option<&str>) -> PyResult<Py<PyAny>> {
    let fields = PyDict::new(py);
    fields.set_item("topic", topic)?;
    match rejected {
        Rejected::Replayed { publisher, seq } => {
            fields.set_item("publisher", publisher)?;
            fields.set_item("seq", seq)?;
        }
        Rejected::UnknownPublisher { publisher } => fields.set_item("publisher", publisher)?,
        Rejected::Stale {
            publisher,
            published_at,
        } => {
            fields.set_item("publisher", publisher)?;
            fields.set_item("published_at", published_at)?;
        }
        Rejected::TopicNotPermitted { publisher, topic } => {
            fields.set_item("publisher", publisher)?;
            fields.set_item("topic", topic)?;
        }
        Rejected::UnknownKey {
            publisher, epoch, ..
        } => {
            fields.set_item("publisher", publisher)?;
            fields.set_item("epoch", epoch)?;
        }
        _ => {}
    }
    let build = py.import("sealpost.errors")?.getattr("_rejection")?;
    Ok(build
        .call1((rejected.kind(), rejected.to_string(), fields))?
        .unbind())
}

/// The rejection as a raisable `PyErr`.
pub fn rejected_err(py: Python<'_>, rejected: &Rejected) -> PyErr {
    match rejection(py, rejected, None) {
        Ok(exception) => PyErr::from_value(exception.into_bound(py)),
        Err(e) => e,
    }
}

/// A sealing failure as `sealpost.errors.SealError` with the kind of failure.
pub fn seal_err(py: Python<'_>, error: &SealError) -> PyErr {
    let kind = match error {
        SealError::TopicNotPermitted(_) => "topic_not_permitted",
        SealError::InvalidTopic(_) => "invalid_topic",
        SealError::SequenceExhausted => "sequence_exhausted",
        SealError::InvalidTime(_) => "invalid_time",
        SealError::UnsupportedVersion(_) => "unsupported_version",
        SealError::Identity(_) => "identity",
        SealError::Wrap { .. } => "wrap",
        _ => "encoding",
    };
    kind_error(py, "SealError", kind, &error.to_string())
}

/// `sealpost.errors.<class_name>(kind, message)` as a raisable error.
pub fn kind_error(py: Python<'_>, class_name: &str, kind: &str, message: &str) -> PyErr {
    let built = py
        .import("sealpost.errors")
        .and_then(|m| m.getattr(class_name))
        .and_then(|class| class.call1((kind, message)));
    match built {
        Ok(exception) => PyErr::from_value(exception),
        Err(e) => e,
    }
}

/// Unusable input from the caller (a PEM that does not parse, a key of the wrong size).
pub fn invalid(what: &str, detail: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{what}: {detail}"))
}
