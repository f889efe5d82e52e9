//! Result codes and their messages.

use std::ffi::c_char;

use sealpost_protocol::{Rejected, SealError};
use sealpost_session::SessionError;

/// The outcome of every call, and the reason of every rejected message.
///
/// `SEALPOST_OK` is 0. Codes from 100 are errors of the call; codes from 300 are the
/// reasons the subscriber refused a message (the core's rejection kinds), which also
/// arrive as `SEALPOST_OUTPUT_REJECTED` outputs.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum sealpost_result {
    /// Success.
    SEALPOST_OK = 0,
    /// `*_next_output`: no output is waiting (not an error).
    SEALPOST_NO_OUTPUT = 1,
    /// A required pointer argument was NULL.
    SEALPOST_NULL_ARGUMENT = 100,
    /// A string argument was not valid UTF-8.
    SEALPOST_INVALID_UTF8 = 101,
    /// An argument was out of range (for example a negative time).
    SEALPOST_INVALID_ARGUMENT = 102,
    /// A panic inside the library was caught; the handle it happened on refuses every
    /// later call except its `free`.
    SEALPOST_PANIC = 103,
    /// This party's own certificate or private key, or the revocation list, could not be
    /// parsed or does not fit (wrong role, key does not match the certificate).
    SEALPOST_BAD_IDENTITY = 110,
    /// A certificate (the CA's, or a subscriber's being granted) is unusable: not parsable,
    /// not issued by the CA, outside its validity, revoked, or the wrong role; or the
    /// revocation list is past its next update.
    SEALPOST_UNTRUSTED_CERTIFICATE = 111,
    /// The stored state handed to `*_new` is not state this library wrote.
    SEALPOST_CORRUPT_STATE = 112,
    /// No revocation list was given: it is required (fail closed).
    SEALPOST_REVOCATION_LIST_REQUIRED = 113,
    /// The save callback reported failure: the operation had no effect (try again).
    SEALPOST_PERSIST_FAILED = 114,
    /// `sealpost_publisher_revoke`: no granted subscriber has this id.
    SEALPOST_NOT_GRANTED = 115,
    /// This publisher's certificate does not permit the topic.
    SEALPOST_TOPIC_NOT_PERMITTED = 120,
    /// Not a valid MQTT topic name (empty, or with wildcards).
    SEALPOST_INVALID_TOPIC = 121,
    /// Sealing failed (encoding or key wrapping).
    SEALPOST_SEAL_FAILED = 122,
    /// Rejected: not a well-formed sealpost envelope.
    SEALPOST_REJECTED_MALFORMED = 300,
    /// Rejected: larger than the limit.
    SEALPOST_REJECTED_OVERSIZED = 301,
    /// Rejected: unknown protocol version.
    SEALPOST_REJECTED_UNKNOWN_VERSION = 302,
    /// Rejected: unsupported COSE algorithm.
    SEALPOST_REJECTED_UNSUPPORTED_ALGORITHM = 303,
    /// Rejected: sequence number already accepted or older than the replay window.
    SEALPOST_REJECTED_REPLAYED = 304,
    /// Rejected: no certificate known for the publisher yet.
    SEALPOST_REJECTED_UNKNOWN_PUBLISHER = 305,
    /// Rejected: publication time outside the accepted age.
    SEALPOST_REJECTED_STALE = 306,
    /// Rejected: publisher certificate does not chain to the CA or has the wrong role.
    SEALPOST_REJECTED_UNTRUSTED_PUBLISHER = 307,
    /// Rejected: publisher certificate outside its validity period.
    SEALPOST_REJECTED_EXPIRED = 308,
    /// Rejected: publisher certificate revoked (or revocation status unknown).
    SEALPOST_REJECTED_REVOKED = 309,
    /// Rejected: the publisher may not publish to this topic.
    SEALPOST_REJECTED_TOPIC_NOT_PERMITTED = 310,
    /// Rejected: the signature does not verify (tampered, wrong topic, forged).
    SEALPOST_REJECTED_BAD_SIGNATURE = 311,
    /// Rejected: the content key of this epoch has not arrived.
    SEALPOST_REJECTED_UNKNOWN_KEY = 312,
    /// Rejected: authenticated decryption failed.
    SEALPOST_REJECTED_DECRYPT_FAILED = 313,
    /// Rejected: a burst inclusion proof that cannot be evaluated.
    SEALPOST_REJECTED_BAD_INCLUSION_PROOF = 314,
    /// Rejected: a key wrapped for another key type than this subscriber's.
    SEALPOST_REJECTED_WRONG_KEY_TYPE = 315,
    /// Rejected: a key message addressed to another subscriber.
    SEALPOST_REJECTED_NOT_FOR_US = 316,
    /// Rejected for a reason this version of the C API has no code for.
    SEALPOST_REJECTED_OTHER = 399,
}

impl sealpost_result {
    /// The static, NUL-terminated description of a code.
    pub fn message(self) -> &'static std::ffi::CStr {
        use sealpost_result::*;
        match self {
            SEALPOST_OK => c"ok",
            SEALPOST_NO_OUTPUT => c"no output waiting",
            SEALPOST_NULL_ARGUMENT => c"a required pointer argument was NULL",
            SEALPOST_INVALID_UTF8 => c"a string argument is not valid UTF-8",
            SEALPOST_INVALID_ARGUMENT => c"an argument is out of range",
            SEALPOST_PANIC => c"internal error (panic caught); free this handle",
            SEALPOST_BAD_IDENTITY => {
                c"certificate, private key or revocation list unusable (unparsable, wrong role, or key does not match)"
            }
            SEALPOST_UNTRUSTED_CERTIFICATE => {
                c"certificate unusable: not issued by the CA, outside its validity, revoked, wrong role, or revocation list out of date"
            }
            SEALPOST_CORRUPT_STATE => c"stored state is corrupt or was not written by this library",
            SEALPOST_REVOCATION_LIST_REQUIRED => c"a revocation list (the CA's CRL, PEM) is required",
            SEALPOST_PERSIST_FAILED => c"the save callback failed; the operation had no effect",
            SEALPOST_NOT_GRANTED => c"no granted subscriber has this id",
            SEALPOST_TOPIC_NOT_PERMITTED => c"this publisher's certificate does not permit the topic",
            SEALPOST_INVALID_TOPIC => c"not a valid MQTT topic name",
            SEALPOST_SEAL_FAILED => c"sealing failed",
            SEALPOST_REJECTED_MALFORMED => c"rejected: malformed envelope",
            SEALPOST_REJECTED_OVERSIZED => c"rejected: envelope larger than the limit",
            SEALPOST_REJECTED_UNKNOWN_VERSION => c"rejected: unknown envelope version",
            SEALPOST_REJECTED_UNSUPPORTED_ALGORITHM => c"rejected: unsupported algorithm",
            SEALPOST_REJECTED_REPLAYED => c"rejected: replayed message",
            SEALPOST_REJECTED_UNKNOWN_PUBLISHER => c"rejected: no certificate known for the publisher",
            SEALPOST_REJECTED_STALE => c"rejected: publication time outside the accepted age",
            SEALPOST_REJECTED_UNTRUSTED_PUBLISHER => c"rejected: untrusted publisher certificate",
            SEALPOST_REJECTED_EXPIRED => c"rejected: publisher certificate outside its validity",
            SEALPOST_REJECTED_REVOKED => c"rejected: publisher certificate revoked",
            SEALPOST_REJECTED_TOPIC_NOT_PERMITTED => {
                c"rejected: the publisher may not publish to this topic"
            }
            SEALPOST_REJECTED_BAD_SIGNATURE => c"rejected: bad signature",
            SEALPOST_REJECTED_UNKNOWN_KEY => c"rejected: content key not (yet) known",
            SEALPOST_REJECTED_DECRYPT_FAILED => c"rejected: decryption failed",
            SEALPOST_REJECTED_BAD_INCLUSION_PROOF => c"rejected: bad inclusion proof",
            SEALPOST_REJECTED_WRONG_KEY_TYPE => c"rejected: key wrapped for another key type",
            SEALPOST_REJECTED_NOT_FOR_US => c"rejected: key message addressed to another subscriber",
            SEALPOST_REJECTED_OTHER => c"rejected",
        }
    }
}

impl From<&Rejected> for sealpost_result {
    fn from(r: &Rejected) -> Self {
        use sealpost_result::*;
        match r {
            Rejected::Malformed(_) => SEALPOST_REJECTED_MALFORMED,
            Rejected::Oversized { .. } => SEALPOST_REJECTED_OVERSIZED,
            Rejected::UnknownVersion(_) => SEALPOST_REJECTED_UNKNOWN_VERSION,
            Rejected::UnsupportedAlgorithm => SEALPOST_REJECTED_UNSUPPORTED_ALGORITHM,
            Rejected::Replayed { .. } => SEALPOST_REJECTED_REPLAYED,
            Rejected::UnknownPublisher { .. } => SEALPOST_REJECTED_UNKNOWN_PUBLISHER,
            Rejected::Stale { .. } => SEALPOST_REJECTED_STALE,
            Rejected::UntrustedPublisher(_) => SEALPOST_REJECTED_UNTRUSTED_PUBLISHER,
            Rejected::Expired(_) => SEALPOST_REJECTED_EXPIRED,
            Rejected::Revoked(_) => SEALPOST_REJECTED_REVOKED,
            Rejected::TopicNotPermitted { .. } => SEALPOST_REJECTED_TOPIC_NOT_PERMITTED,
            Rejected::BadSignature => SEALPOST_REJECTED_BAD_SIGNATURE,
            Rejected::UnknownKey { .. } => SEALPOST_REJECTED_UNKNOWN_KEY,
            Rejected::DecryptFailed => SEALPOST_REJECTED_DECRYPT_FAILED,
            Rejected::BadInclusionProof(_) => SEALPOST_REJECTED_BAD_INCLUSION_PROOF,
            Rejected::WrongKeyType { .. } => SEALPOST_REJECTED_WRONG_KEY_TYPE,
            Rejected::NotForUs => SEALPOST_REJECTED_NOT_FOR_US,
            _ => SEALPOST_REJECTED_OTHER,
        }
    }
}

impl From<SealError> for sealpost_result {
    fn from(e: SealError) -> Self {
        use sealpost_result::*;
        match e {
            SealError::TopicNotPermitted(_) => SEALPOST_TOPIC_NOT_PERMITTED,
            SealError::InvalidTopic(_) => SEALPOST_INVALID_TOPIC,
            SealError::InvalidTime(_) => SEALPOST_INVALID_ARGUMENT,
            SealError::Identity(_) => SEALPOST_BAD_IDENTITY,
            _ => SEALPOST_SEAL_FAILED,
        }
    }
}

impl sealpost_result {
    /// Every code, to map an integer from C back to a code.
    const ALL: [sealpost_result; 33] = {
        use sealpost_result::*;
        [
            SEALPOST_OK,
            SEALPOST_NO_OUTPUT,
            SEALPOST_NULL_ARGUMENT,
            SEALPOST_INVALID_UTF8,
            SEALPOST_INVALID_ARGUMENT,
            SEALPOST_PANIC,
            SEALPOST_BAD_IDENTITY,
            SEALPOST_UNTRUSTED_CERTIFICATE,
            SEALPOST_CORRUPT_STATE,
            SEALPOST_REVOCATION_LIST_REQUIRED,
            SEALPOST_PERSIST_FAILED,
            SEALPOST_NOT_GRANTED,
            SEALPOST_TOPIC_NOT_PERMITTED,
            SEALPOST_INVALID_TOPIC,
            SEALPOST_SEAL_FAILED,
            SEALPOST_REJECTED_MALFORMED,
            SEALPOST_REJECTED_OVERSIZED,
            SEALPOST_REJECTED_UNKNOWN_VERSION,
            SEALPOST_REJECTED_UNSUPPORTED_ALGORITHM,
            SEALPOST_REJECTED_REPLAYED,
            SEALPOST_REJECTED_UNKNOWN_PUBLISHER,
            SEALPOST_REJECTED_STALE,
            SEALPOST_REJECTED_UNTRUSTED_PUBLISHER,
            SEALPOST_REJECTED_EXPIRED,
            SEALPOST_REJECTED_REVOKED,
            SEALPOST_REJECTED_TOPIC_NOT_PERMITTED,
            SEALPOST_REJECTED_BAD_SIGNATURE,
            SEALPOST_REJECTED_UNKNOWN_KEY,
            SEALPOST_REJECTED_DECRYPT_FAILED,
            SEALPOST_REJECTED_BAD_INCLUSION_PROOF,
            SEALPOST_REJECTED_WRONG_KEY_TYPE,
            SEALPOST_REJECTED_NOT_FOR_US,
            SEALPOST_REJECTED_OTHER,
        ]
    };

    /// The code with this number, if there is one.
    pub fn from_code(code: u32) -> Option<sealpost_result> {
        Self::ALL.iter().copied().find(|r| *r as u32 == code)
    }
}

impl From<SessionError> for sealpost_result {
    fn from(e: SessionError) -> Self {
        use sealpost_result::*;
        match e {
            SessionError::Certificate(_) => SEALPOST_UNTRUSTED_CERTIFICATE,
            SessionError::Seal(e) => e.into(),
            SessionError::NotGranted(_) => SEALPOST_NOT_GRANTED,
            SessionError::CorruptState(_) => SEALPOST_CORRUPT_STATE,
            SessionError::Persist(_) => SEALPOST_PERSIST_FAILED,
            SessionError::RevocationList(_) => SEALPOST_BAD_IDENTITY,
            SessionError::RevocationListRequired => SEALPOST_REVOCATION_LIST_REQUIRED,
            _ => SEALPOST_SEAL_FAILED,
        }
    }
}

/// The static, NUL-terminated English description of a result code (a
/// `sealpost_result` value, passed as an integer so that any number is safe to pass:
/// unknown numbers get "unknown result code"). Never NULL; the string is never freed.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn sealpost_result_message(result: u32) -> *const c_char {
    match sealpost_result::from_code(result) {
        Some(r) => r.message().as_ptr(),
        None => c"unknown result code".as_ptr(),
    }
}
