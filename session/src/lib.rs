//! # sealpost-session: the sans-IO SDK core
//!
//! The logic of the sealpost SDKs as two state machines that take inputs and return
//! outputs, with no network, no files, no async and no clock (time is an argument, unix
//! milliseconds), the way rustls's core serves tokio-rustls and rustls-ffi alike. The
//! Rust async SDKs (`sealpost-publisher`, `sealpost-subscriber`) are shells over it and
//! rumqttc; the Python and C bindings wrap the same core.
//!
//! - [`PublisherSession`]: seals messages ([`PublisherSession::publish`], bursts signed
//!   once), reserves sequence numbers and makes them durable through a [`StateStore`]
//!   before use, grants ([`PublisherSession::grant`]), revokes and rotates, and builds
//!   the key messages each of those calls for ([`Packet`]s to publish, retained, QoS 1);
//!   says what to publish again after a reconnect ([`PublisherSession::connected`],
//!   [`PublisherSession::resend`]). The next epoch can be prepared ahead of time
//!   ([`PublisherSession::preparation`], run by the shell wherever it likes), so that a
//!   revocation only publishes key messages already wrapped and signed.
//! - [`SubscriberSession`]: the filters to subscribe ([`SubscriberSession::subscriptions`]),
//!   incoming PUBLISHes ([`SubscriberSession::process`]) become delivered messages or
//!   typed rejections ([`SubscriberEvent`]); data waiting for its key is held (bounded in
//!   count and time), KDC fetches to start are named ([`KeyFetch`]), and the replay window
//!   comes out as bytes to persist before messages are handed over.
//!
//! Identities, the CA and revocation lists go in as PEM text; state comes out and goes
//! back in as opaque bytes. Nothing here reads a file or a clock.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod fetch;
mod keys;
mod packet;
mod pending;
mod prepared;
mod publisher;
mod resend;
pub mod state;
mod store;
mod subscriber;

pub use error::SessionError;
pub use fetch::{KeyFetch, RETRY_REFUSED_MS, RETRY_TRANSIENT_MS};
pub use packet::{Packet, QoS};
pub use prepared::{Preparation, Prepared};
pub use publisher::{
    Burst, Outgoing, PublisherOutput, PublisherSession, PublisherSessionConfig, Rekey,
    DEFAULT_RESERVE_BLOCK,
};
pub use resend::{DEFAULT_RESEND_WINDOW, RESEND_DELAY};
pub use sealpost_protocol::{ContentKey, KeyRecipient, Opened, Rejected};
pub use store::{MemoryStore, StateStore};
pub use subscriber::{
    FetchFailure, FetchedKey, Input, KdcAccess, SubscriberEvent, SubscriberOutput,
    SubscriberSession, SubscriberSessionConfig, KEY_TOPIC_PREFIX,
};
