//! `sealpost_publisher`: a `PublisherSession` of the sans-IO core behind a C handle. It
//! seals messages, reserves sequence numbers, grants, revokes and rotates keys; it says
//! what to publish (outputs) and saves its state through the program's callback.

use std::ffi::{c_char, c_int, c_void};

use sealpost_session::{
    Outgoing, Packet, PublisherSession, PublisherSessionConfig, QoS, StateStore,
};

use crate::error::sealpost_result;
use crate::ffi::{self, bytes_arg, optional_str_arg, str_arg, with_handle, CallResult, Handle};
use crate::output::{c_string, sealpost_output, Output, Outputs};

/// Saves the publisher's state: replace what is stored with `state_len` bytes at `state`,
/// durably (write a temporary file, fsync, rename), and return 0 only once that is done;
/// any other value fails the operation, which then has no effect. The bytes hold the
/// publisher's content keys: store them where only this program can read them. `state`
/// is valid during the call only. Called from inside `sealpost_publisher_*` calls (before
/// the change they make takes effect), on the thread making that call.
pub type sealpost_save_callback =
    Option<unsafe extern "C" fn(ctx: *mut c_void, state: *const u8, state_len: usize) -> c_int>;

/// The core's store: the program's save callback.
struct CallbackStore {
    save: unsafe extern "C" fn(*mut c_void, *const u8, usize) -> c_int,
    ctx: *mut c_void,
}

// SAFETY: the store is only called from calls on its publisher handle, and the contract of
// `sealpost_publisher_new` makes the program promise that `save` and `ctx` may be used from
// any thread that uses that handle (one at a time).
unsafe impl Send for CallbackStore {}

impl StateStore for CallbackStore {
    fn save(&mut self, state: &[u8]) -> Result<(), String> {
        // SAFETY: `save` is the program's callback with `ctx` as it passed them; `state` is
        // valid for `state.len()` bytes during the call, as the callback's contract says.
        let status = unsafe { (self.save)(self.ctx, state.as_ptr(), state.len()) };
        if status == 0 {
            Ok(())
        } else {
            Err(format!("the save callback returned {status}"))
        }
    }
}

/// A publisher (opaque). Create with `sealpost_publisher_new`, release with
/// `sealpost_publisher_free`. Not thread-safe: use from one thread at a time.
pub struct sealpost_publisher {
    session: PublisherSession,
    outputs: Outputs,
    poisoned: bool,
}

impl Handle for sealpost_publisher {
    fn poisoned(&mut self) -> &mut bool {
        &mut self.poisoned
    }
    fn outputs(&mut self) -> &mut Outputs {
        &mut self.outputs
    }
}

impl sealpost_publisher {
    /// Queues packets to publish, in order.
    fn queue(&mut self, packets: impl IntoIterator<Item = Packet>) {
        for packet in packets {
            self.outputs.push(Output::Publish {
                topic: c_string(&packet.topic),
                payload: packet.payload.to_vec(),
                qos: match packet.qos {
                    QoS::AtMostOnce => 0,
                    QoS::AtLeastOnce => 1,
                    QoS::ExactlyOnce => 2,
                },
                retain: packet.retain,
            });
        }
    }

    /// Seals `messages` (topic, payload) as one burst (one signature) and queues their
    /// envelopes (QoS 1, not retained), all or none: if one fails, none is queued and its
    /// error is returned.
    fn publish(&mut self, messages: &[(&str, &[u8])], now_ms: u64) -> CallResult {
        let items: Vec<Outgoing<'_>> = messages
            .iter()
            .map(|&(topic, payload)| Outgoing {
                topic,
                payload,
                qos: QoS::AtLeastOnce,
                retain: false,
            })
            .collect();
        let burst = self.session.publish(&items, now_ms)?;
        // A rotation that was due comes first (its key messages), even if sealing failed.
        self.queue(burst.output.packets);
        let packets = burst
            .envelopes
            .into_iter()
            .map(|envelope| envelope.map(|(_seq, packet)| packet))
            .collect::<Result<Vec<_>, _>>()?;
        self.queue(packets);
        Ok(())
    }
}

/// One message of `sealpost_publisher_publish_many`.
#[repr(C)]
pub struct sealpost_message {
    /// The MQTT topic, NUL-terminated.
    pub topic: *const c_char,
    /// The payload (NULL with `payload_len` 0 for an empty one).
    pub payload: *const u8,
    /// Length of `payload` in bytes.
    pub payload_len: usize,
}

/// Creates a publisher.
///
/// - `ca_pem`: the CA certificate (PEM) that issued this publisher and its subscribers.
/// - `crl_pem`: the CA's revocation list (PEM). Required (NULL is
///   `SEALPOST_REVOCATION_LIST_REQUIRED`): revoked subscribers are never granted.
/// - `certificate_pem`, `key_pem`: this publisher's certificate and Ed25519 private key.
/// - `state`, `state_len`: the bytes last saved through `save`, or NULL and 0 on the very
///   first start (then a fresh state is saved before this returns).
/// - `save`, `save_ctx`: the callback that stores the state (see
///   `sealpost_save_callback`), and the pointer passed to it. Both must stay usable, from
///   whichever thread uses the handle, until the handle is freed.
/// - `now_ms`: the current time, unix milliseconds (the library reads no clock).
///
/// On success `*out` is the new handle; outputs may be queued (clearing the key messages
/// of stored grants whose certificates no longer verify). Publish
/// `sealpost_publisher_connected` after every (re)connect. Errors: argument errors,
/// `SEALPOST_BAD_IDENTITY`, `SEALPOST_UNTRUSTED_CERTIFICATE`,
/// `SEALPOST_REVOCATION_LIST_REQUIRED`, `SEALPOST_CORRUPT_STATE`,
/// `SEALPOST_PERSIST_FAILED`. Thread-safe (touches no shared state).
///
/// # Safety
/// Strings are NULL or NUL-terminated; `state` points to `state_len` readable bytes (or is
/// NULL with 0); `out` is NULL or writable; `save` and `save_ctx` as above.
#[no_mangle]
// A flat C signature (no options struct to build) is what C callers expect here.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sealpost_publisher_new(
    ca_pem: *const c_char,
    crl_pem: *const c_char,
    certificate_pem: *const c_char,
    key_pem: *const c_char,
    state: *const u8,
    state_len: usize,
    save: sealpost_save_callback,
    save_ctx: *mut c_void,
    now_ms: u64,
    out: *mut *mut sealpost_publisher,
) -> sealpost_result {
    ffi::guard(|| {
        // SAFETY: the arguments meet the contracts of these helpers, by ours.
        let (ca, crl, cert, key, state) = unsafe {
            (
                str_arg(ca_pem)?,
                optional_str_arg(crl_pem)?,
                str_arg(certificate_pem)?,
                str_arg(key_pem)?,
                bytes_arg(state, state_len)?,
            )
        };
        let save = save.ok_or(sealpost_result::SEALPOST_NULL_ARGUMENT)?;
        let mut config = PublisherSessionConfig::new(cert, key, ca);
        config.crl_pem = crl.map(str::to_owned);
        let saved = (!state.is_empty()).then_some(state);
        let store = Box::new(CallbackStore {
            save,
            ctx: save_ctx,
        });
        let (session, output) = PublisherSession::new(config, saved, store, now_ms)?;
        let mut publisher = sealpost_publisher {
            session,
            outputs: Outputs::default(),
            poisoned: false,
        };
        publisher.queue(output.packets);
        // SAFETY: `out` is NULL or writable, by our contract.
        unsafe { ffi::give(out, publisher) }
    })
}

/// Queues what to publish after every (re)connect to the broker: the current key message
/// of every granted subscriber (retained), in case the broker lost its retained messages.
/// Not thread-safe for the same handle.
///
/// # Safety
/// `publisher` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn sealpost_publisher_connected(
    publisher: *mut sealpost_publisher,
) -> sealpost_result {
    // SAFETY: `publisher` is NULL or a live handle used by this thread only, by contract.
    unsafe {
        with_handle(publisher, |p| {
            let packets = p.session.connected();
            p.queue(packets);
            Ok(())
        })
    }
}

/// Grants a subscriber (its certificate, PEM): verifies it against the CA and revocation
/// list at `now_ms`, starts a new key epoch if anything was sealed under the current one
/// (so it cannot read what was sealed before), and queues the key messages (PUBLISH,
/// retained, on `sealpost/keys/<publisher>/<subscriber>`).
///
/// Errors: `SEALPOST_UNTRUSTED_CERTIFICATE` (not from the CA, expired, revoked, not a
/// subscriber), `SEALPOST_PERSIST_FAILED`, `SEALPOST_SEAL_FAILED`, argument errors. Not
/// thread-safe for the same handle.
///
/// # Safety
/// `publisher` is NULL or a live handle; `certificate_pem` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sealpost_publisher_grant(
    publisher: *mut sealpost_publisher,
    certificate_pem: *const c_char,
    now_ms: u64,
) -> sealpost_result {
    // SAFETY: `publisher` is NULL or a live handle used by this thread only, by contract.
    unsafe {
        with_handle(publisher, |p| {
            // SAFETY: NULL or NUL-terminated, by our contract.
            let pem = str_arg(certificate_pem)?;
            let (output, _id) = p.session.grant_pem(pem, now_ms)?;
            p.queue(output.packets);
            Ok(())
        })
    }
}

/// Revokes the granted subscriber `subscriber_id`: queues the clearing of its retained
/// key message, starts a new key epoch and queues the new key's messages for the others
/// only, so it cannot read anything published from now on.
///
/// Errors: `SEALPOST_NOT_GRANTED`, `SEALPOST_PERSIST_FAILED`, argument errors. Not
/// thread-safe for the same handle.
///
/// # Safety
/// `publisher` is NULL or a live handle; `subscriber_id` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sealpost_publisher_revoke(
    publisher: *mut sealpost_publisher,
    subscriber_id: *const c_char,
    now_ms: u64,
) -> sealpost_result {
    // SAFETY: `publisher` is NULL or a live handle used by this thread only, by contract.
    unsafe {
        with_handle(publisher, |p| {
            // SAFETY: NULL or NUL-terminated, by our contract.
            let id = str_arg(subscriber_id)?;
            let output = p.session.revoke(id, now_ms)?;
            p.queue(output.packets);
            Ok(())
        })
    }
}

/// Seals `payload` (`payload_len` bytes) for `topic` and queues the envelope (PUBLISH,
/// QoS 1, not retained). Sequence numbers are reserved in blocks, saved through the save
/// callback before use.
///
/// Errors: `SEALPOST_TOPIC_NOT_PERMITTED` (the certificate does not allow the topic),
/// `SEALPOST_INVALID_TOPIC`, `SEALPOST_PERSIST_FAILED`, `SEALPOST_SEAL_FAILED`, argument
/// errors; no envelope is queued then. Not thread-safe for the same handle.
///
/// # Safety
/// `publisher` is NULL or a live handle; `topic` NULL or NUL-terminated; `payload` points
/// to `payload_len` readable bytes (or is NULL with 0).
#[no_mangle]
pub unsafe extern "C" fn sealpost_publisher_publish(
    publisher: *mut sealpost_publisher,
    topic: *const c_char,
    payload: *const u8,
    payload_len: usize,
    now_ms: u64,
) -> sealpost_result {
    // SAFETY: `publisher` is NULL or a live handle used by this thread only, by contract.
    unsafe {
        with_handle(publisher, |p| {
            // SAFETY: the arguments meet these helpers' contracts, by ours.
            let (topic, payload) = (str_arg(topic)?, bytes_arg(payload, payload_len)?);
            p.publish(&[(topic, payload)], now_ms)
        })
    }
}

/// Seals `count` messages as one burst and queues their envelopes (PUBLISH, QoS 1, not
/// retained) in order: one signature for the burst, however many messages (up to the
/// core's maximum burst; more are sealed as several bursts), each envelope still opened
/// on its own by a subscriber that sees only some of them. All or none: if one message
/// fails, no envelope is queued and its error is returned (key messages of a rotation
/// that was due are queued all the same, and must be published).
///
/// Errors: as `sealpost_publisher_publish`. Not thread-safe for the same handle.
///
/// # Safety
/// `publisher` is NULL or a live handle; `messages` points to `count` readable
/// `sealpost_message`s (or is NULL with 0), each as its field comments say.
#[no_mangle]
pub unsafe extern "C" fn sealpost_publisher_publish_many(
    publisher: *mut sealpost_publisher,
    messages: *const sealpost_message,
    count: usize,
    now_ms: u64,
) -> sealpost_result {
    // SAFETY: `publisher` is NULL or a live handle used by this thread only, by contract.
    unsafe {
        with_handle(publisher, |p| {
            if count == 0 {
                return Ok(());
            }
            if messages.is_null() {
                return Err(sealpost_result::SEALPOST_NULL_ARGUMENT);
            }
            // SAFETY: `messages` points to `count` readable messages, by our contract.
            let messages = std::slice::from_raw_parts(messages, count);
            let messages = messages
                .iter()
                // SAFETY: each message's fields meet these helpers' contracts, by ours.
                .map(|m| Ok((str_arg(m.topic)?, bytes_arg(m.payload, m.payload_len)?)))
                .collect::<Result<Vec<_>, sealpost_result>>()?;
            p.publish(&messages, now_ms)
        })
    }
}

/// Starts a new key epoch now: a fresh content key, and its key messages for every
/// granted subscriber (checked again against the CA and the revocation list, as every
/// rekey is; those that fail are dropped and their key messages cleared). Queues those
/// packets.
///
/// Errors: `SEALPOST_PERSIST_FAILED`, `SEALPOST_SEAL_FAILED`. Not thread-safe for the
/// same handle.
///
/// # Safety
/// `publisher` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn sealpost_publisher_rotate(
    publisher: *mut sealpost_publisher,
    now_ms: u64,
) -> sealpost_result {
    // SAFETY: `publisher` is NULL or a live handle used by this thread only, by contract.
    unsafe {
        with_handle(publisher, |p| {
            let output = p.session.rotate(now_ms)?;
            p.queue(output.packets);
            Ok(())
        })
    }
}

/// Installs the CA's latest revocation list (PEM) and checks every granted subscriber
/// against it at `now_ms`: those it revokes (or whose certificates expired) are dropped,
/// their key messages cleared and the key rotated, so they read nothing published from
/// then on; the packets for that are queued. Call it whenever the CA publishes a new list.
///
/// Errors: `SEALPOST_BAD_IDENTITY` (not a revocation list signed by the CA, or older than
/// the one in force, which then stays), `SEALPOST_UNTRUSTED_CERTIFICATE` (the new list is
/// past its next update), `SEALPOST_PERSIST_FAILED`, argument errors. Not thread-safe for
/// the same handle.
///
/// # Safety
/// `publisher` is NULL or a live handle; `crl_pem` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sealpost_publisher_set_revocation_list(
    publisher: *mut sealpost_publisher,
    crl_pem: *const c_char,
    now_ms: u64,
) -> sealpost_result {
    // SAFETY: `publisher` is NULL or a live handle used by this thread only, by contract.
    unsafe {
        with_handle(publisher, |p| {
            // SAFETY: NULL or NUL-terminated, by our contract.
            let pem = str_arg(crl_pem)?;
            p.session
                .set_revocation_list(pem)
                .map_err(|_| sealpost_result::SEALPOST_BAD_IDENTITY)?;
            let output = p.session.check_readers(now_ms)?;
            p.queue(output.packets);
            p.session.check_crl_fresh(now_ms)?;
            Ok(())
        })
    }
}

/// Takes the next queued output (always `SEALPOST_OUTPUT_PUBLISH` for a publisher) into
/// `*out`: `SEALPOST_OK`, or `SEALPOST_NO_OUTPUT` when none is waiting. Its pointers stay
/// valid until the next call on this handle. Publish outputs in order. Not thread-safe
/// for the same handle.
///
/// # Safety
/// `publisher` is NULL or a live handle; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sealpost_publisher_next_output(
    publisher: *mut sealpost_publisher,
    out: *mut sealpost_output,
) -> sealpost_result {
    // SAFETY: `publisher` is NULL or a live handle used by this thread only, and `out`
    // NULL or writable, by contract.
    unsafe { ffi::next_output(publisher, out) }
}

/// Releases a publisher and everything it owns (queued outputs included). NULL is
/// ignored. The handle is invalid afterwards. Not thread-safe for the same handle.
///
/// # Safety
/// `publisher` is NULL or a live handle from `sealpost_publisher_new`, freed only once.
#[no_mangle]
pub unsafe extern "C" fn sealpost_publisher_free(publisher: *mut sealpost_publisher) {
    // SAFETY: NULL or a live handle from `sealpost_publisher_new`, by contract.
    unsafe { ffi::free(publisher) }
}
