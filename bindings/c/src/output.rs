//! Outputs of the state machines, queued in each handle until C drains them.

use std::collections::VecDeque;
use std::ffi::{c_char, CString};

use crate::error::sealpost_result;

/// What an output asks of the program.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum sealpost_output_kind {
    /// Publish `data` on `topic` with `qos` and `retain` (publisher: envelopes and key
    /// messages).
    SEALPOST_OUTPUT_PUBLISH = 1,
    /// Subscriber: store `data` (the replay windows) durably, replacing what was stored
    /// before, and hand it to `sealpost_subscriber_new` at the next start. Store it before
    /// acting on the MESSAGE outputs after it, so a restart never delivers them again.
    SEALPOST_OUTPUT_PERSIST = 2,
    /// Subscriber: a message that passed every check; `data` is the plaintext,
    /// `publisher` and `seq` who sent it.
    SEALPOST_OUTPUT_MESSAGE = 3,
    /// Subscriber: a message (data envelope or key message) on `topic` was refused for
    /// `reason`; `detail` says more. Nothing of it was delivered.
    SEALPOST_OUTPUT_REJECTED = 4,
}

/// One output. Every pointer in it is owned by the handle that produced it and stays
/// valid until the next call on that handle (copy what you keep). Fields that do not apply
/// to the `kind` are NULL or 0.
#[repr(C)]
#[derive(Debug)]
pub struct sealpost_output {
    /// What to do.
    pub kind: sealpost_output_kind,
    /// PUBLISH, MESSAGE, REJECTED: the MQTT topic, NUL-terminated.
    pub topic: *const c_char,
    /// PUBLISH: the packet payload (empty: clear the retained message); PERSIST: the
    /// state; MESSAGE: the plaintext.
    pub data: *const u8,
    /// Length of `data` in bytes.
    pub data_len: usize,
    /// PUBLISH: the MQTT QoS (0, 1 or 2).
    pub qos: u8,
    /// PUBLISH: the MQTT retain flag.
    pub retain: bool,
    /// MESSAGE: the publisher's verified identity, NUL-terminated.
    pub publisher: *const c_char,
    /// MESSAGE: the publisher's sequence number.
    pub seq: u64,
    /// REJECTED: why.
    pub reason: sealpost_result,
    /// REJECTED: a description with details (no key material), NUL-terminated.
    pub detail: *const c_char,
}

/// An output as the library keeps it (owning its bytes).
#[derive(Debug)]
pub(crate) enum Output {
    Publish {
        topic: CString,
        payload: Vec<u8>,
        qos: u8,
        retain: bool,
    },
    Persist(Vec<u8>),
    Message {
        topic: CString,
        publisher: CString,
        seq: u64,
        payload: Vec<u8>,
    },
    Rejected {
        topic: CString,
        reason: sealpost_result,
        detail: CString,
    },
}

/// A string for C: interior NULs (which MQTT topics and certificate names cannot hold,
/// but a detail message might quote) are dropped rather than failing the call.
pub(crate) fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// The outputs waiting in a handle, and the one last handed to C (kept alive until the
/// next call, since C holds pointers into it).
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    queue: VecDeque<Output>,
    current: Option<Output>,
}

impl Outputs {
    /// Queues an output.
    pub(crate) fn push(&mut self, output: Output) {
        self.queue.push_back(output);
    }

    /// Called at the start of every call on the handle: the output handed out last is
    /// released (C's pointers into it are no longer valid, as documented).
    pub(crate) fn release_current(&mut self) {
        self.current = None;
    }

    /// The next output as C sees it, or `None` when the queue is empty.
    pub(crate) fn next(&mut self) -> Option<sealpost_output> {
        let output = self.current.insert(self.queue.pop_front()?);
        let mut view = sealpost_output {
            kind: sealpost_output_kind::SEALPOST_OUTPUT_PERSIST,
            topic: std::ptr::null(),
            data: std::ptr::null(),
            data_len: 0,
            qos: 0,
            retain: false,
            publisher: std::ptr::null(),
            seq: 0,
            reason: sealpost_result::SEALPOST_OK,
            detail: std::ptr::null(),
        };
        match output {
            Output::Publish {
                topic,
                payload,
                qos,
                retain,
            } => {
                view.kind = sealpost_output_kind::SEALPOST_OUTPUT_PUBLISH;
                view.topic = topic.as_ptr();
                (view.data, view.data_len) = (payload.as_ptr(), payload.len());
                (view.qos, view.retain) = (*qos, *retain);
            }
            Output::Persist(state) => {
                (view.data, view.data_len) = (state.as_ptr(), state.len());
            }
            Output::Message {
                topic,
                publisher,
                seq,
                payload,
            } => {
                view.kind = sealpost_output_kind::SEALPOST_OUTPUT_MESSAGE;
                view.topic = topic.as_ptr();
                view.publisher = publisher.as_ptr();
                view.seq = *seq;
                (view.data, view.data_len) = (payload.as_ptr(), payload.len());
            }
            Output::Rejected {
                topic,
                reason,
                detail,
            } => {
                view.kind = sealpost_output_kind::SEALPOST_OUTPUT_REJECTED;
                view.topic = topic.as_ptr();
                view.reason = *reason;
                view.detail = detail.as_ptr();
            }
        }
        Some(view)
    }
}
