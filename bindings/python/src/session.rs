//! The session core's `PublisherSession` and `SubscriberSession`, for the package's
//! `Publisher` and `Subscriber` (which move the packets over paho-mqtt).
//!
//! Packets cross as `(topic, payload, qos, retain)` tuples; state crosses as bytes, saved
//! by a Python callable that the core calls before the change it records takes effect.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sealpost_session::{
    Outgoing, Packet, PublisherOutput, PublisherSessionConfig, QoS, SessionError, StateStore,
    SubscriberEvent, SubscriberOutput, SubscriberSessionConfig,
};

use crate::errors::{invalid, kind_error, rejection, seal_err};
use crate::sealing::Message;

/// A packet for `sealpost._mqtt.Connection.send`.
type PyPacket<'py> = (String, Bound<'py, PyBytes>, u8, bool);

fn py_packet<'py>(py: Python<'py>, packet: &Packet) -> PyPacket<'py> {
    let qos = match packet.qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    };
    (
        packet.topic.clone(),
        PyBytes::new(py, &packet.payload),
        qos,
        packet.retain,
    )
}

fn py_packets<'py>(py: Python<'py>, packets: &[Packet]) -> Vec<PyPacket<'py>> {
    packets.iter().map(|p| py_packet(py, p)).collect()
}

fn qos(value: u8) -> PyResult<QoS> {
    match value {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        _ => Err(invalid("qos", "must be 0, 1 or 2")),
    }
}

/// Saves state through a Python callable `save(state: bytes) -> None`.
struct PyStore {
    save: Py<PyAny>,
}

impl StateStore for PyStore {
    fn save(&mut self, state: &[u8]) -> Result<(), String> {
        Python::attach(|py| {
            self.save
                .call1(py, (PyBytes::new(py, state),))
                .map(drop)
                // The exception names the file or the OS error, never the state.
                .map_err(|e| e.value(py).to_string())
        })
    }
}

/// The publisher's state machine (`sealpost_session::PublisherSession`).
#[pyclass(module = "sealpost._native")]
pub struct PublisherSession {
    /// Behind a mutex because Python objects must be shareable between threads, and the
    /// state store (a Python callable) is `Send` only. The Python side serialises calls
    /// anyway: the lock is never contended.
    inner: Mutex<sealpost_session::PublisherSession>,
    /// Packets of the start (clearing the key messages of grantees dropped since).
    startup: Mutex<Vec<Packet>>,
}

/// The session, or an error if an earlier call panicked while holding it (then its
/// state is not trusted any more: fail closed).
fn locked<T>(mutex: &Mutex<T>) -> PyResult<MutexGuard<'_, T>> {
    mutex
        .lock()
        .map_err(|_| PyRuntimeError::new_err("session unusable after an internal error"))
}

#[pymethods]
impl PublisherSession {
    /// Starts from `saved` state bytes (None: a fresh state, saved before this returns).
    /// `save(bytes)` must store state durably before returning.
    #[new]
    #[pyo3(signature = (certificate_pem, key_pem, ca_pem, crl_pem, saved, save, now_ms, *,
                        rotate_on_grant=true, insecure_no_crl=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        certificate_pem: &str,
        key_pem: &str,
        ca_pem: &str,
        crl_pem: Option<String>,
        saved: Option<Vec<u8>>,
        save: Py<PyAny>,
        now_ms: u64,
        rotate_on_grant: bool,
        insecure_no_crl: bool,
    ) -> PyResult<PublisherSession> {
        let mut config = PublisherSessionConfig::new(certificate_pem, key_pem, ca_pem);
        config.crl_pem = crl_pem;
        config.insecure_no_crl = insecure_no_crl;
        config.rotate_on_grant = rotate_on_grant;
        let store = Box::new(PyStore { save });
        let (inner, output) =
            sealpost_session::PublisherSession::new(config, saved.as_deref(), store, now_ms)
                .map_err(|e| session_err(py, &e))?;
        Ok(PublisherSession {
            inner: Mutex::new(inner),
            startup: Mutex::new(output.packets),
        })
    }

    /// The packets of the start, once.
    fn take_packets<'py>(&self, py: Python<'py>) -> PyResult<Vec<PyPacket<'py>>> {
        Ok(py_packets(
            py,
            &std::mem::take(&mut *locked(&self.startup)?),
        ))
    }

    /// The publisher's id.
    #[getter]
    fn id(&self) -> PyResult<String> {
        Ok(locked(&self.inner)?.id().to_owned())
    }

    /// The current key epoch.
    #[getter]
    fn epoch(&self) -> PyResult<u64> {
        Ok(locked(&self.inner)?.epoch())
    }

    /// The sequence number of the next message.
    #[getter]
    fn next_seq(&self) -> PyResult<u64> {
        Ok(locked(&self.inner)?.next_seq())
    }

    /// The granted subscribers' ids.
    #[getter]
    fn granted(&self) -> PyResult<Vec<String>> {
        Ok(locked(&self.inner)?.granted())
    }

    /// Seals `[(topic, payload)]` as one burst; returns `(sequence numbers, packets)`
    /// (key messages of a rotation that was due first). Nothing is sealed if a topic is
    /// not permitted or the state cannot be saved.
    fn publish<'py>(
        &self,
        py: Python<'py>,
        messages: Vec<(String, Vec<u8>)>,
        qos_level: u8,
        retain: bool,
        now_ms: u64,
    ) -> PyResult<(Vec<u64>, Vec<PyPacket<'py>>)> {
        let qos = qos(qos_level)?;
        let mut guard = locked(&self.inner)?;
        for (topic, _) in &messages {
            guard.check_topic(topic).map_err(|e| session_err(py, &e))?;
        }
        let items: Vec<Outgoing<'_>> = messages
            .iter()
            .map(|(topic, payload)| Outgoing {
                topic,
                payload,
                qos,
                retain,
            })
            .collect();
        let inner = &mut *guard;
        let burst = py
            .detach(|| inner.publish(&items, now_ms))
            .map_err(|e| session_err(py, &e))?;
        let mut packets = py_packets(py, &burst.output.packets);
        let mut seqs = Vec::with_capacity(burst.envelopes.len());
        for envelope in burst.envelopes {
            let (seq, packet) = envelope.map_err(|e| session_err(py, &e))?;
            seqs.push(seq);
            packets.push(py_packet(py, &packet));
        }
        Ok((seqs, packets))
    }

    /// Verifies and grants a subscriber certificate (PEM); returns `(id, packets)`.
    fn grant<'py>(
        &self,
        py: Python<'py>,
        certificate_pem: &str,
        now_ms: u64,
    ) -> PyResult<(String, Vec<PyPacket<'py>>)> {
        let mut guard = locked(&self.inner)?;
        let inner = &mut *guard;
        let (output, id) = py
            .detach(|| inner.grant_pem(certificate_pem, now_ms))
            .map_err(|e| session_err(py, &e))?;
        Ok((id, py_packets(py, &output.packets)))
    }

    /// Revokes a granted subscriber (clears its key message, rotates); returns packets.
    fn revoke<'py>(
        &self,
        py: Python<'py>,
        subscriber: &str,
        now_ms: u64,
    ) -> PyResult<Vec<PyPacket<'py>>> {
        self.rekey(py, |inner| inner.revoke(subscriber, now_ms))
    }

    /// Starts a new epoch; returns its key messages.
    fn rotate<'py>(&self, py: Python<'py>, now_ms: u64) -> PyResult<Vec<PyPacket<'py>>> {
        self.rekey(py, |inner| inner.rotate(now_ms))
    }

    /// Rotates if the key lifetime is over; returns what to publish.
    fn tick<'py>(&self, py: Python<'py>, now_ms: u64) -> PyResult<Vec<PyPacket<'py>>> {
        let output = locked(&self.inner)?.tick(now_ms);
        packets_of(py, output)
    }

    /// Drops (and rotates away from) grantees whose certificates no longer verify.
    fn check_readers<'py>(&self, py: Python<'py>, now_ms: u64) -> PyResult<Vec<PyPacket<'py>>> {
        self.rekey(py, |inner| inner.check_readers(now_ms))
    }

    /// Installs a newer revocation list (PEM) signed by the CA.
    fn set_revocation_list(&self, py: Python<'_>, crl_pem: &str) -> PyResult<()> {
        locked(&self.inner)?
            .set_revocation_list(crl_pem)
            .map_err(|e| session_err(py, &e))
    }

    /// The recent QoS 1/2 envelopes, to publish again `RESEND_DELAY_MS` after a
    /// reconnect (not the first connection): subscribers drop the ones they have.
    fn resend<'py>(&self, py: Python<'py>) -> PyResult<Vec<PyPacket<'py>>> {
        Ok(py_packets(py, &locked(&self.inner)?.resend()))
    }

    /// What to publish after every (re)connect: the current key messages.
    fn connected<'py>(&self, py: Python<'py>) -> PyResult<Vec<PyPacket<'py>>> {
        Ok(py_packets(py, &locked(&self.inner)?.connected()))
    }
}

impl PublisherSession {
    /// Runs a rekeying operation (key wrapping and signing: the GIL released meanwhile)
    /// and returns the packets it asks for.
    fn rekey<'py>(
        &self,
        py: Python<'py>,
        operation: impl FnOnce(&mut sealpost_session::PublisherSession) -> Result<PublisherOutput, SessionError>
            + Send,
    ) -> PyResult<Vec<PyPacket<'py>>> {
        let mut guard = locked(&self.inner)?;
        let inner = &mut *guard;
        let output = py.detach(|| operation(inner));
        packets_of(py, output)
    }
}

fn packets_of<'py>(
    py: Python<'py>,
    output: Result<PublisherOutput, SessionError>,
) -> PyResult<Vec<PyPacket<'py>>> {
    output
        .map(|o| py_packets(py, &o.packets))
        .map_err(|e| session_err(py, &e))
}

/// What one subscriber step gives the Python side: the replay state to persist before
/// handing anything over, and the events in order (`Message`s and rejections).
type PyOutput<'py> = (Option<Bound<'py, PyBytes>>, Vec<Py<PyAny>>);

fn py_output<'py>(py: Python<'py>, output: SubscriberOutput) -> PyResult<PyOutput<'py>> {
    let persist = output.persist.map(|state| PyBytes::new(py, &state));
    let mut events = Vec::with_capacity(output.events.len());
    for event in output.events {
        match event {
            SubscriberEvent::Message(opened) => {
                events.push(Py::new(py, Message::from_opened(py, opened))?.into_any())
            }
            SubscriberEvent::Rejected { topic, reason } => {
                events.push(rejection(py, &reason, Some(&topic))?)
            }
            // No KDC credentials are configured from Python, so no fetch is ever asked
            // for, and none can fail.
            SubscriberEvent::KeyFetchFailed { .. } => {}
        }
    }
    Ok((persist, events))
}

/// The subscriber's state machine (`sealpost_session::SubscriberSession`).
#[pyclass(module = "sealpost._native")]
pub struct SubscriberSession {
    /// Behind a mutex as [`PublisherSession`]'s.
    inner: Mutex<sealpost_session::SubscriberSession>,
}

#[pymethods]
impl SubscriberSession {
    /// A session for the subscriber identity (PEM), trusting the CA (PEM) with its
    /// revocation list (PEM), resuming the replay window from `saved_replay` bytes.
    #[new]
    #[pyo3(signature = (certificate_pem, key_pem, ca_pem, crl_pem, saved_replay, *,
                        insecure_no_crl=false, max_age_secs=86_400, hold_time_ms=10_000))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        certificate_pem: &str,
        key_pem: &str,
        ca_pem: &str,
        crl_pem: Option<String>,
        saved_replay: Option<Vec<u8>>,
        insecure_no_crl: bool,
        max_age_secs: u64,
        hold_time_ms: u64,
    ) -> PyResult<SubscriberSession> {
        let mut config = SubscriberSessionConfig::new(certificate_pem, key_pem, ca_pem);
        config.crl_pem = crl_pem;
        config.insecure_no_crl = insecure_no_crl;
        config.max_age = Duration::from_secs(max_age_secs);
        config.hold_time = Duration::from_millis(hold_time_ms);
        let inner = sealpost_session::SubscriberSession::new(config, saved_replay.as_deref())
            .map_err(|e| session_err(py, &e))?;
        Ok(SubscriberSession {
            inner: Mutex::new(inner),
        })
    }

    /// The subscriber's id.
    #[getter]
    fn id(&self) -> PyResult<String> {
        Ok(locked(&self.inner)?.id().to_owned())
    }

    /// Filters to subscribe besides the application's: its own key messages.
    fn subscriptions(&self) -> PyResult<Vec<String>> {
        Ok(locked(&self.inner)?.subscriptions())
    }

    /// One PUBLISH received; returns `(persist, events)`.
    fn incoming<'py>(
        &self,
        py: Python<'py>,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> PyResult<PyOutput<'py>> {
        let mut guard = locked(&self.inner)?;
        let inner = &mut *guard;
        let output = py.detach(|| inner.incoming(topic, payload, now_ms));
        py_output(py, output)
    }

    /// Expires held messages; returns `(persist, events)`.
    fn tick<'py>(&self, py: Python<'py>, now_ms: u64) -> PyResult<PyOutput<'py>> {
        let output = locked(&self.inner)?.tick(now_ms);
        py_output(py, output)
    }

    /// Installs a newer revocation list (PEM) signed by the CA.
    fn set_revocation_list(&self, crl_pem: &str) -> PyResult<()> {
        locked(&self.inner)?
            .set_revocation_list(crl_pem)
            .map_err(|e| invalid("revocation list", e))
    }
}

/// A session failure: `sealpost.errors.SealError` for sealing, else
/// `sealpost.errors.SessionError` with the kind of failure.
pub fn session_err(py: Python<'_>, error: &SessionError) -> PyErr {
    let kind = match error {
        SessionError::Seal(e) => return seal_err(py, e),
        SessionError::Certificate(_) => "certificate",
        SessionError::NotGranted(_) => "not_granted",
        SessionError::CorruptState(_) => "corrupt_state",
        SessionError::Persist(_) => "persist",
        SessionError::RevocationList(_) => "revocation_list",
        SessionError::RevocationListRequired => "revocation_list_required",
        SessionError::KeyMessagesDisabled => "key_messages_disabled",
        _ => "session",
    };
    kind_error(py, "SessionError", kind, &error.to_string())
}
