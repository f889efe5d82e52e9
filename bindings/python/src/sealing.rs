//! The protocol core's `Sealer` and `Opener`, one message or a batch per call.
//!
//! For applications that move envelopes themselves (and for the benchmark): the
//! `Publisher` and `Subscriber` classes of the package do key messages, sequence
//! reservation and replay persistence on top.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sealpost_certs::Verifier;
use sealpost_protocol::{
    ContentKey, KeyLocation, Opened, PublisherIdentity, ReplayState, SubscriberIdentity,
};

use crate::errors::{invalid, rejected_err, rejection, seal_err};

/// A message that passed every check, decrypted.
#[pyclass(module = "sealpost", frozen, get_all)]
pub struct Message {
    /// The topic it arrived on (and was signed for).
    pub topic: String,
    /// The publisher's verified identity (certificate id).
    pub publisher: String,
    /// The publisher's sequence number.
    pub seq: u64,
    /// The key epoch it was encrypted under.
    pub epoch: u64,
    /// The publication time the publisher signed (unix seconds).
    pub published_at: u64,
    /// The plaintext.
    pub payload: Py<PyBytes>,
}

impl Message {
    /// Converts an opened message (copying the plaintext into a Python `bytes`).
    pub fn from_opened(py: Python<'_>, opened: Opened) -> Message {
        Message {
            payload: PyBytes::new(py, &opened.payload).unbind(),
            topic: opened.topic,
            publisher: opened.publisher,
            seq: opened.seq,
            epoch: opened.epoch,
            published_at: opened.published_at,
        }
    }
}

#[pymethods]
impl Message {
    fn __repr__(&self) -> String {
        format!(
            "Message(topic={:?}, publisher={:?}, seq={}, epoch={})",
            self.topic, self.publisher, self.seq, self.epoch
        )
    }
}

/// PEM text given as `str` or `bytes`.
fn pem_text(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    if let Ok(text) = obj.extract::<String>() {
        return Ok(text);
    }
    let bytes: &[u8] = obj
        .extract()
        .map_err(|_| invalid(what, "expected PEM text as str or bytes"))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| invalid(what, "not PEM text"))
}

/// Reads a 32-byte content key.
fn content_key(key: &[u8]) -> PyResult<ContentKey> {
    ContentKey::from_slice(key).ok_or_else(|| invalid("content key", "must be 32 bytes"))
}

/// Seals payloads for one publisher (see `sealpost-protocol`'s `Sealer`).
#[pyclass(module = "sealpost")]
pub struct Sealer {
    inner: sealpost_protocol::Sealer,
}

#[pymethods]
impl Sealer {
    /// A sealer for the publisher certificate and Ed25519 key (PEM), under the content key
    /// `key` (32 bytes) of `epoch`, announcing keys on the publisher's conventional key
    /// topic. `resume_from` is the persisted sequence high-water mark (0 the first time).
    /// `embed_certificate` carries the publisher certificate in every envelope (for
    /// subscribers that get no key message to learn it from).
    #[new]
    #[pyo3(signature = (certificate_pem, key_pem, epoch, key, resume_from=0, *, embed_certificate=false))]
    fn new(
        certificate_pem: &Bound<'_, PyAny>,
        key_pem: &Bound<'_, PyAny>,
        epoch: u64,
        key: &[u8],
        resume_from: u64,
        embed_certificate: bool,
    ) -> PyResult<Sealer> {
        let certificate_pem = pem_text(certificate_pem, "publisher certificate")?;
        let key_pem = pem_text(key_pem, "publisher key")?;
        let identity = PublisherIdentity::from_pem(&certificate_pem, &key_pem)
            .map_err(|e| invalid("publisher identity", e))?;
        let location = KeyLocation::key_topic_for(identity.id());
        let key = content_key(key)?;
        let mut inner =
            sealpost_protocol::Sealer::new(identity, location, epoch, &key, resume_from);
        inner.set_embed_certificate(embed_certificate);
        Ok(Sealer { inner })
    }

    /// Reserves `count` more sequence numbers; returns the new high-water mark, which must
    /// be stored durably before sealing with them.
    fn reserve(&mut self, count: u64) -> u64 {
        self.inner.reserve(count)
    }

    /// The sequence number the next message will carry.
    #[getter]
    fn next_seq(&self) -> u64 {
        self.inner.next_seq()
    }

    /// The current key epoch.
    #[getter]
    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }

    /// Seals one payload for `topic` at `now` (unix seconds).
    fn seal<'py>(
        &mut self,
        py: Python<'py>,
        topic: &str,
        payload: &[u8],
        now: i64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let sealed = self
            .inner
            .seal(topic, payload, now)
            .map_err(|e| seal_err(py, &e))?;
        Ok(PyBytes::new(py, &sealed))
    }

    /// Seals `[(topic, payload), ...]` as bursts signed once each; all or nothing.
    fn seal_many<'py>(
        &mut self,
        py: Python<'py>,
        messages: Vec<(String, Vec<u8>)>,
        now: i64,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let borrowed: Vec<(&str, &[u8])> = messages
            .iter()
            .map(|(t, p)| (t.as_str(), p.as_slice()))
            .collect();
        let inner = &mut self.inner;
        let sealed = py
            .detach(|| inner.seal_many(&borrowed, now))
            .map_err(|e| seal_err(py, &e))?;
        Ok(sealed.iter().map(|e| PyBytes::new(py, e)).collect())
    }
}

/// Verifies and opens envelopes for one subscriber (see `sealpost-protocol`'s `Opener`).
#[pyclass(module = "sealpost")]
pub struct Opener {
    inner: sealpost_protocol::Opener,
}

#[pymethods]
impl Opener {
    /// An opener trusting the CA (PEM) with its revocation list (PEM), optionally with the
    /// subscriber certificate and private key (PEM) that unwrap key messages.
    #[new]
    #[pyo3(signature = (ca_pem, crl_pem, certificate_pem=None, key_pem=None))]
    fn new(
        ca_pem: &Bound<'_, PyAny>,
        crl_pem: &Bound<'_, PyAny>,
        certificate_pem: Option<&Bound<'_, PyAny>>,
        key_pem: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Opener> {
        let verifier = Verifier::new(&pem_text(ca_pem, "CA certificate")?)
            .map_err(|e| invalid("CA certificate", e))?
            .with_revocation_list(&pem_text(crl_pem, "revocation list")?)
            .map_err(|e| invalid("revocation list", e))?;
        let mut inner = sealpost_protocol::Opener::new(verifier);
        match (certificate_pem, key_pem) {
            (Some(cert), Some(key)) => {
                let cert = pem_text(cert, "subscriber certificate")?;
                let key = pem_text(key, "subscriber key")?;
                let identity = SubscriberIdentity::from_pem(&cert, &key)
                    .map_err(|e| invalid("subscriber identity", e))?;
                inner = inner.with_identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(invalid(
                    "subscriber identity",
                    "give both the certificate and its key, or neither",
                ))
            }
        }
        Ok(Opener { inner })
    }

    /// Adds a content key obtained out of band; True if it was new.
    fn add_key(&mut self, publisher: &str, epoch: u64, key: &[u8]) -> PyResult<bool> {
        Ok(self.inner.add_key(publisher, epoch, content_key(key)?))
    }

    /// Verifies a key message and learns its content keys; returns
    /// `(publisher, new_epochs)`, or raises the rejection.
    fn accept_key_message(
        &mut self,
        py: Python<'_>,
        topic: &str,
        data: &[u8],
        now: i64,
    ) -> PyResult<(String, Vec<u64>)> {
        let update = self
            .inner
            .accept_key_message_at(topic, data, now)
            .map_err(|e| rejected_err(py, &e))?;
        Ok((update.publisher, update.new_epochs))
    }

    /// Opens one envelope received on `topic` at `now`; raises the rejection.
    fn open(&mut self, py: Python<'_>, topic: &str, data: &[u8], now: i64) -> PyResult<Message> {
        let opened = self
            .inner
            .open_at(topic, data, now)
            .map_err(|e| rejected_err(py, &e))?;
        Ok(Message::from_opened(py, opened))
    }

    /// Opens `[(topic, envelope), ...]` at once (signatures verified as a batch, burst
    /// roots once); returns, in order, a `Message` or the rejection (not raised) for each.
    fn open_batch(
        &mut self,
        py: Python<'_>,
        envelopes: Vec<(String, Vec<u8>)>,
        now: i64,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let borrowed: Vec<(&str, &[u8])> = envelopes
            .iter()
            .map(|(t, e)| (t.as_str(), e.as_slice()))
            .collect();
        let inner = &mut self.inner;
        let results = py.detach(|| inner.open_batch(&borrowed, now));
        results
            .into_iter()
            .zip(&envelopes)
            .map(|(result, (topic, _))| match result {
                Ok(opened) => Ok(Py::new(py, Message::from_opened(py, opened))?.into_any()),
                Err(rejected) => rejection(py, &rejected, Some(topic)),
            })
            .collect()
    }

    /// The replay windows, to persist.
    fn replay_state<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.replay_state().to_bytes())
    }

    /// Restores persisted replay windows.
    fn set_replay_state(&mut self, state: &[u8]) -> PyResult<()> {
        let state = ReplayState::from_bytes(state).map_err(|e| invalid("replay state", e))?;
        self.inner.set_replay_state(state);
        Ok(())
    }
}

impl Sealer {
    /// The core sealer, for the Rust benchmark loop.
    pub fn inner_mut(&mut self) -> &mut sealpost_protocol::Sealer {
        &mut self.inner
    }
}

impl Opener {
    /// The core opener, for the Rust benchmark loop.
    pub fn inner_mut(&mut self) -> &mut sealpost_protocol::Opener {
        &mut self.inner
    }
}
