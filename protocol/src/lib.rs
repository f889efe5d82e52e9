//! # sealpost-protocol: the sans-IO core
//!
//! Seals MQTT payloads so that only subscribers the publisher granted can read them, and
//! opens them on the other side, with no network, no async and no files: callers move the
//! bytes and persist the state.
//!
//! ## Features
//! - Data envelopes ([`Sealer::seal`], [`Opener::open`]): AES-256-GCM content encryption,
//!   Ed25519 signature over ciphertext, key index, sequence number and topic name, encoded
//!   as COSE (RFC 9052) with registered algorithm ids; the signed protected header also
//!   carries the publication time (CWT claim `iat`, RFC 9597), and openers refuse
//!   envelopes older than a maximum age ([`Opener::with_max_age`]).
//! - Tree-signed bursts (protocol version 2, the default): [`Sealer::seal_many`] signs up
//!   to [`Sealer::max_burst`] messages with one Ed25519 signature over the root of an
//!   RFC 9162 Merkle tree ([`merkle`]); each envelope carries its inclusion proof and the
//!   root signature and opens on its own; openers verify each root signature once through
//!   a bounded cache of verified roots ([`Opener::with_root_cache`]). Version 1 envelopes
//!   (one signature each) stay readable, and are written on request
//!   ([`Sealer::set_wire_version`]).
//! - Key messages ([`seal_key_message`], [`Opener::accept_key_message`]): content keys of
//!   recent epochs wrapped for one subscriber, signed; wrappings can be kept and reused
//!   across rotations ([`KeyRecipient::wrap`], [`seal_key_message_wrapped`]). The wrapping
//!   follows the subscriber certificate's key ([`WrapAlgorithm`]): RSA-OAEP-SHA256 for RSA
//!   keys, HPKE (RFC 9180, X25519, AES-256-GCM; COSE-HPKE Key Encryption) for X25519 keys.
//! - Replay protection ([`ReplayState`]): a persisted sliding window per publisher.
//! - Batched signature verification ([`Opener::open_batch`]).
//! - Typed rejections ([`Rejected`]) for every failed check.
//!
//! ## Non-features
//! - No way to skip a check, and no unsigned or unencrypted mode.
//! - No transport or storage, and no clock: the caller passes the time to
//!   [`Sealer::seal`] and [`Opener::open_at`] (only the [`Opener::open`] convenience reads
//!   the system clock).
//! - Key messages are not replay-protected: replaying one only re-delivers keys its
//!   recipient was already granted.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod envelope;
mod error;
mod identity;
mod key_message;
mod keyring;
pub mod merkle;
mod opener;
pub mod replay;
mod root_cache;
mod sealer;
mod wrap;

pub use envelope::{peek, BurstPosition, EnvelopeHeader, KeyIndex, KeyLocation};
pub use error::{Rejected, SealError};
pub use identity::{PublisherIdentity, SubscriberIdentity};
pub use key_message::{
    seal_key_message, seal_key_message_wrapped, KeyRecipient, WrappedKey, MAX_KEY_ENTRIES,
};
pub use keyring::{ContentKey, Keyring, CONTENT_KEY_LEN, DEFAULT_KEPT_EPOCHS};
pub use opener::{KeyUpdate, Opened, Opener, DEFAULT_CLOCK_SKEW_SECS, DEFAULT_MAX_AGE_SECS};
pub use replay::{ReplayCheck, ReplayState};
pub use root_cache::DEFAULT_ROOT_CACHE;
pub use sealer::{Sealer, DEFAULT_MAX_BURST};
pub use sealpost_certs as certs;
pub use wrap::{WrapAlgorithm, COSE_ALG_HPKE_X25519_SHA256_A256GCM_KE, COSE_HEADER_EK};

/// The README's Rust example, compiled and run as a doctest so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
