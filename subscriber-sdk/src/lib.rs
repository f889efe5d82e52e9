//! # sealpost-subscriber: the subscriber SDK
//!
//! A thin async shell over [`rumqttc`] and the sans-IO session core ([`sealpost_session`],
//! over [`sealpost_protocol`]): the core decides, this crate moves bytes. A
//! [`Subscriber`] hands its application only messages that were verified (publisher
//! certificate chain, validity, revocation, topic permission, signature), decrypted and
//! de-duplicated; everything else is a typed [`Rejection`] the application can observe
//! and count.
//!
//! ## Features
//! - Follows its own key messages (`sealpost/keys/+/<subscriber id>`, retained), so a
//!   subscriber that was offline during a grant or rotation still gets its keys.
//! - Data that arrives before its key (or its publisher's certificate) is held in a
//!   bounded buffer for a bounded time, retried when keys arrive, then rejected.
//! - Keys from a publisher's key distribution center ([`kdc`]): when a verified envelope
//!   names a KDC this subscriber has credentials for ([`SubscriberConfig::kdc_credentials`]),
//!   it logs in over HTTPS (certificate verified against the CA), fetches the key of that
//!   epoch once, and opens the envelopes held meanwhile. A KDC-only subscriber needs no
//!   certificate or private key ([`SubscriberConfig::kdc_only`]).
//! - Exactly-once delivery over QoS 1: the replay window drops redeliveries and
//!   duplicates, and is persisted before messages are handed over (by default in
//!   `./.sealpost-sub`, [`SubscriberConfig::state_dir`]), so a restarted subscriber does
//!   not deliver them again, even when an attacker re-publishes captured envelopes.
//! - Stale messages are refused: every envelope carries its signed publication time, and
//!   envelopes older than [`SubscriberConfig::max_age`] (24 hours) are rejected, so a
//!   subscriber that never saw a message still refuses an old replay of it.
//! - Revocation: the CA's revocation list is required
//!   ([`SubscriberConfig::revocation_list`]; the only way around it is the loudly named
//!   [`SubscriberConfig::insecure_no_crl`]) and is read again while running, so a
//!   publisher revoked meanwhile is refused from its next message on.
//! - The hold buffer keeps verified messages (waiting for a key) apart from unverifiable
//!   ones (unknown publisher, a small separate share): junk cannot push out genuine
//!   messages.
//! - Several broker addresses ([`SubscriberConfig::failover`]): when its broker goes
//!   away the subscriber moves to the next (exponential backoff with jitter) and
//!   subscribes again there; duplicates that the publisher sends again after a
//!   reconnect are dropped by the replay window. Over TLS the SDK owns the connection and
//!   ends it with close_notify ([`Subscriber::disconnect`]).
//!
//! ## Non-features
//! - Content keys are not persisted: after a restart they come again from the retained
//!   key messages.
//! - A crash between persisting the replay window and the application handling a
//!   message loses that message rather than delivering it twice.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod events;
pub mod kdc;
mod replay_store;
mod subscriber;

pub use error::SubscriberError;
pub use events::{Counters, Event, KeyFetchFailure, Message, Rejection};
pub use kdc::{KdcCredentials, KdcError};
pub use rumqttc::QoS;
pub use sealpost_client::{BrokerAddress, LinkStatus, TlsIdentity};
pub use sealpost_protocol::Rejected;
pub use subscriber::{Subscriber, SubscriberConfig, DEFAULT_STATE_DIR, KEY_TOPIC_PREFIX};
