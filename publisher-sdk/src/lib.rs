//! # sealpost-publisher: the publisher SDK
//!
//! A thin async shell over [`rumqttc`] and the sans-IO session core ([`sealpost_session`],
//! over [`sealpost_protocol`]): the core decides what to seal, persist and publish, this
//! crate moves the bytes (MQTT, files, the KDC's HTTPS). A
//! [`Publisher`] seals every payload (AES-256-GCM, Ed25519, sequence number, topic) and
//! decides who can read it: [`Publisher::grant_pem`] adds a subscriber, [`Publisher::revoke`]
//! removes one and rotates the content key, and one retained key message per granted
//! subscriber carries the keys (O(1) bytes each, however many subscribers there are).
//!
//! ## Features
//! - Works over any MQTT 3.1.1 broker: TCP, TLS (rustls with the `ring` provider) and
//!   WebSocket ([`BrokerAddress`]).
//! - State that must outlive a restart (sequence high-water mark, recent content keys,
//!   grants) is kept in a state directory and replaced atomically ([`state`]), always
//!   before the change it records takes effect (a failed write changes nothing). A
//!   running publisher locks its state directory against a second one.
//! - Readers are checked, not just trusted once: every grantee's certificate is verified
//!   against the CA and its revocation list ([`PublisherConfig::crl`], required unless
//!   [`PublisherConfig::insecure_no_crl`]) at start, on every rekey and periodically
//!   (the list reloaded); a grantee that fails is dropped and the key rotates
//!   ([`Publisher::check_readers`]).
//! - Granting a new reader rotates the key ([`PublisherConfig::rotate_on_grant`]), so a
//!   reader cannot open what was sealed before its grant; revoking always rotates.
//! - Key distribution center mode ([`kdc`]): the publisher serves its keys over HTTPS to
//!   readers it issued credentials to, instead of or beside key messages
//!   ([`PublisherConfig::kdc`], [`PublisherConfig::key_messages`]).
//! - Key messages are wrapped in parallel and published again after every reconnect, in
//!   case the broker lost its retained messages. Each carries the current and the previous
//!   epoch, but a rotation wraps only the new one: the previous epoch's wrapping for each
//!   subscriber is kept in memory and reused ([`Rekey::wrapped`], [`Rekey::timings`]).
//!   The next epoch is prepared in the background after every rekey
//!   ([`PublisherConfig::prepare_next_epoch`]), so a revocation publishes key messages
//!   wrapped and signed beforehand ([`Rekey::prepared`]).
//! - The SDK owns its TLS connection ([`tunnel`]): it ends with close_notify when the
//!   publisher disconnects. Several broker addresses ([`PublisherConfig::failover`]): a
//!   lost broker is replaced by the next, with exponential backoff and jitter
//!   ([`link`]), and the key messages and recent messages
//!   ([`PublisherConfig::resend_window`]) are sent again there.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod gateway;
pub mod kdc;
mod publisher;
pub mod state;

// The connection code both SDKs share (sealpost-client), under the paths it always had.
pub use sealpost_client::{link, transport, tunnel};

pub use error::PublisherError;
pub use publisher::{
    Publisher, PublisherConfig, QoS, Rekey, RekeyTimings, DEFAULT_CRL_RELOAD_INTERVAL,
    DEFAULT_KEY_MESSAGE_CONFIRMATION, DEFAULT_REQUEST_QUEUE, DEFAULT_RESERVE_BLOCK,
};
pub use sealpost_session::{DEFAULT_RESEND_WINDOW, RESEND_DELAY};
pub use transport::{BrokerAddress, TlsIdentity};
