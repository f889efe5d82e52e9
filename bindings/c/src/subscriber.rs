//! `sealpost_subscriber`: a `SubscriberSession` of the sans-IO core behind a C handle. It
//! follows key messages, verifies, de-duplicates and decrypts, and holds messages whose
//! key has not arrived yet.

use std::ffi::{c_char, CString};

use sealpost_session::{
    SubscriberEvent, SubscriberOutput, SubscriberSession, SubscriberSessionConfig,
};

use crate::error::sealpost_result;
use crate::ffi::{self, bytes_arg, optional_str_arg, str_arg, with_handle, Handle};
use crate::output::{c_string, sealpost_output, Output, Outputs};

/// A subscriber (opaque). Create with `sealpost_subscriber_new`, release with
/// `sealpost_subscriber_free`. Not thread-safe: use from one thread at a time.
pub struct sealpost_subscriber {
    session: SubscriberSession,
    /// The filter of this subscriber's key messages, for C.
    key_filter: CString,
    outputs: Outputs,
    poisoned: bool,
}

impl Handle for sealpost_subscriber {
    fn poisoned(&mut self) -> &mut bool {
        &mut self.poisoned
    }
    fn outputs(&mut self) -> &mut Outputs {
        &mut self.outputs
    }
}

impl sealpost_subscriber {
    /// Queues what one step of the session produced: the replay windows to store first,
    /// then messages and rejections in order.
    fn queue(&mut self, output: SubscriberOutput) {
        if let Some(state) = output.persist {
            self.outputs.push(Output::Persist(state));
        }
        for event in output.events {
            match event {
                SubscriberEvent::Message(opened) => self.outputs.push(Output::Message {
                    topic: c_string(&opened.topic),
                    publisher: c_string(&opened.publisher),
                    seq: opened.seq,
                    payload: opened.payload,
                }),
                SubscriberEvent::Rejected { topic, reason } => {
                    self.outputs.push(Output::Rejected {
                        topic: c_string(&topic),
                        reason: sealpost_result::from(&reason),
                        detail: c_string(&reason.to_string()),
                    })
                }
                // Key fetches need KDC credentials, which this API does not take: no fetch
                // is ever started, so none can fail.
                _ => {}
            }
        }
    }
}

/// Creates a subscriber.
///
/// - `ca_pem`: the CA certificate (PEM) that issues the publishers it trusts.
/// - `crl_pem`: the CA's revocation list (PEM). Required (NULL is
///   `SEALPOST_REVOCATION_LIST_REQUIRED`): revoked publishers are refused.
/// - `certificate_pem`, `key_pem`: this subscriber's certificate and private key (RSA or
///   X25519), under which publishers wrap content keys for it.
/// - `state`, `state_len`: the last `SEALPOST_OUTPUT_PERSIST` data stored (the replay
///   windows), or NULL and 0 on the very first start.
///
/// Subscribe (QoS 1) to `sealpost_subscriber_key_filter()` and to the data topics wanted,
/// pass everything that arrives to `sealpost_subscriber_incoming`, and call
/// `sealpost_subscriber_tick` every few seconds. Errors: argument errors,
/// `SEALPOST_BAD_IDENTITY`, `SEALPOST_UNTRUSTED_CERTIFICATE`,
/// `SEALPOST_REVOCATION_LIST_REQUIRED`, `SEALPOST_CORRUPT_STATE`. Thread-safe (touches no
/// shared state).
///
/// # Safety
/// Strings are NULL or NUL-terminated; `state` points to `state_len` readable bytes (or is
/// NULL with 0); `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sealpost_subscriber_new(
    ca_pem: *const c_char,
    crl_pem: *const c_char,
    certificate_pem: *const c_char,
    key_pem: *const c_char,
    state: *const u8,
    state_len: usize,
    out: *mut *mut sealpost_subscriber,
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
        let mut config = SubscriberSessionConfig::new(cert, key, ca);
        config.crl_pem = crl.map(str::to_owned);
        let session = SubscriberSession::new(config, (!state.is_empty()).then_some(state))?;
        let filters = session.subscriptions();
        let subscriber = sealpost_subscriber {
            key_filter: c_string(filters.first().map_or("", String::as_str)),
            session,
            outputs: Outputs::default(),
            poisoned: false,
        };
        // SAFETY: `out` is NULL or writable, by our contract.
        unsafe { ffi::give(out, subscriber) }
    })
}

/// The MQTT topic filter of this subscriber's key messages
/// (`sealpost/keys/+/<subscriber id>`), NUL-terminated, owned by the handle and valid
/// until it is freed; NULL for a NULL handle. Thread-safe (reads immutable data).
///
/// # Safety
/// `subscriber` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn sealpost_subscriber_key_filter(
    subscriber: *const sealpost_subscriber,
) -> *const c_char {
    // SAFETY: NULL or a live handle, by contract; only an immutable field is read.
    match unsafe { subscriber.as_ref() } {
        Some(s) => s.key_filter.as_ptr(),
        None => std::ptr::null(),
    }
}

/// Hands the subscriber a message that arrived on `topic` (`payload_len` bytes) at
/// `now_ms` (unix milliseconds). Queues a PERSIST and then MESSAGE outputs for what
/// opened (a key message may release held messages too), REJECTED outputs for what was
/// refused, nothing for an accepted key message or a message held until its key or
/// publisher certificate arrives (at most 10 s, then it is REJECTED). A refused message is
/// an output, not an error: the result is `SEALPOST_OK` unless the arguments are bad. Not
/// thread-safe for the same handle.
///
/// # Safety
/// `subscriber` is NULL or a live handle; `topic` NULL or NUL-terminated; `payload` points
/// to `payload_len` readable bytes (or is NULL with 0).
#[no_mangle]
pub unsafe extern "C" fn sealpost_subscriber_incoming(
    subscriber: *mut sealpost_subscriber,
    topic: *const c_char,
    payload: *const u8,
    payload_len: usize,
    now_ms: u64,
) -> sealpost_result {
    // SAFETY: `subscriber` is NULL or a live handle used by this thread only, by contract.
    unsafe {
        with_handle(subscriber, |s| {
            // SAFETY: the arguments meet these helpers' contracts, by ours.
            let (topic, payload) = (str_arg(topic)?, bytes_arg(payload, payload_len)?);
            let output = s.session.incoming(topic, payload, now_ms);
            s.queue(output);
            Ok(())
        })
    }
}

/// Installs the CA's latest revocation list (PEM): from then on, messages of publishers
/// it revokes are REJECTED (`SEALPOST_REJECTED_REVOKED`). Call it whenever the CA
/// publishes a new list.
///
/// Errors: `SEALPOST_BAD_IDENTITY` (not a revocation list signed by the CA, or older than
/// the one in force, which then stays), argument errors. Not thread-safe for the same
/// handle.
///
/// # Safety
/// `subscriber` is NULL or a live handle; `crl_pem` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sealpost_subscriber_set_revocation_list(
    subscriber: *mut sealpost_subscriber,
    crl_pem: *const c_char,
) -> sealpost_result {
    // SAFETY: `subscriber` is NULL or a live handle used by this thread only, by contract.
    unsafe {
        with_handle(subscriber, |s| {
            // SAFETY: NULL or NUL-terminated, by our contract.
            let pem = str_arg(crl_pem)?;
            s.session
                .set_revocation_list(pem)
                .map_err(|_| sealpost_result::SEALPOST_BAD_IDENTITY)
        })
    }
}

/// Expires held messages whose key or publisher did not arrive in time (queued as
/// REJECTED with the reason they could not open). Call it every few seconds, also when
/// nothing arrives. Not thread-safe for the same handle.
///
/// # Safety
/// `subscriber` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn sealpost_subscriber_tick(
    subscriber: *mut sealpost_subscriber,
    now_ms: u64,
) -> sealpost_result {
    // SAFETY: `subscriber` is NULL or a live handle used by this thread only, by contract.
    unsafe {
        with_handle(subscriber, |s| {
            let output = s.session.tick(now_ms);
            s.queue(output);
            Ok(())
        })
    }
}

/// Takes the next queued output into `*out`: `SEALPOST_OK`, or `SEALPOST_NO_OUTPUT` when
/// none is waiting. Its pointers stay valid until the next call on this handle. Act on
/// outputs in order. Not thread-safe for the same handle.
///
/// # Safety
/// `subscriber` is NULL or a live handle; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sealpost_subscriber_next_output(
    subscriber: *mut sealpost_subscriber,
    out: *mut sealpost_output,
) -> sealpost_result {
    // SAFETY: `subscriber` is NULL or a live handle used by this thread only, and `out`
    // NULL or writable, by contract.
    unsafe { ffi::next_output(subscriber, out) }
}

/// Releases a subscriber and everything it owns. NULL is ignored. The handle is invalid
/// afterwards. Not thread-safe for the same handle.
///
/// # Safety
/// `subscriber` is NULL or a live handle from `sealpost_subscriber_new`, freed only once.
#[no_mangle]
pub unsafe extern "C" fn sealpost_subscriber_free(subscriber: *mut sealpost_subscriber) {
    // SAFETY: NULL or a live handle from `sealpost_subscriber_new`, by contract.
    unsafe { ffi::free(subscriber) }
}
