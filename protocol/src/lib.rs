//! # sealpost-protocol: the sans-IO core
//!
//! Seals MQTT payloads so that only subscribers the publisher granted can read them, and
//! opens them on the other side, with no network, no async and no files: callers move the
//! bytes and persist the state.
//!
//! ## Features
//! - Data envelopes ([`Sealer::seal`], [`Opener::open`]): AES-256-GCM content encryption,
//!   Ed25519 signature over ciphertext, key index, sequence number and topic name, encoded
//!   as COSE (RFC 9052) with registered algorithm ids.
//! - Key messages ([`seal_key_message`], [`Opener::accept_key_message`]): content keys of
//!   recent epochs wrapped for one subscriber with RSA-OAEP-SHA256, signed; wrappings can be
//!   kept and reused across rotations ([`KeyRecipient::wrap`], [`seal_key_message_wrapped`]).
//! - Replay protection ([`ReplayState`]): a persisted sliding window per publisher.
//! - Batched signature verification ([`Opener::open_batch`]).
//! - Typed rejections ([`Rejected`]) for every failed check.
//!
//! ## Non-features
//! - No way to skip a check, and no unsigned or unencrypted mode.
//! - No transport, storage or clock beyond `now_unix()`: the SDKs provide those.
//! - Key messages are not replay-protected: replaying one only re-delivers keys its
//!   recipient was already granted.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod envelope;
mod error;
mod identity;
mod key_message;
mod keyring;
mod opener;
pub mod replay;
mod sealer;

pub use envelope::{peek, EnvelopeHeader, KeyIndex, KeyLocation};
pub use error::{Rejected, SealError};
pub use identity::{PublisherIdentity, SubscriberIdentity};
pub use key_message::{
    seal_key_message, seal_key_message_wrapped, KeyRecipient, WrappedKey, MAX_KEY_ENTRIES,
};
pub use keyring::{ContentKey, Keyring, CONTENT_KEY_LEN, DEFAULT_KEPT_EPOCHS};
pub use opener::{KeyUpdate, Opened, Opener};
pub use replay::{ReplayCheck, ReplayState};
pub use sealer::Sealer;
pub use sealpost_certs as certs;
