//! # sealpost-broker: a hardened MQTT edge around the rumqttd router
//!
//! sealpost owns every client connection (TCP, TLS, WebSocket plain or over TLS),
//! validates MQTT 3.1.1 and 5 packets, authenticates (password file, client
//! certificates), authorizes (ACL, publisher certificate topics, key-message topics),
//! applies limits and timeouts, and forwards valid packets into rumqttd's router through
//! its public link API. Retained messages are persisted in redb and replayed at start.
//! The broker never decodes payloads.
//!
//! ```no_run
//! # async fn run() -> Result<(), sealpost_broker::BrokerError> {
//! let broker = sealpost_broker::Broker::start(sealpost_broker::Config::default()).await?;
//! println!("{:?}", broker.listeners());
//! broker.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acl;
pub mod auth;
mod backpressure;
mod by_number;
pub mod codec;
pub mod config;
pub mod connection;
mod listener;
mod marker;
pub mod metrics;
mod publish_link;
mod queue;
pub mod retained;
mod retained_index;
pub mod router;
mod router_gaps;
pub mod server;
pub mod session;
mod shared;
pub mod store;
mod subscriptions;
mod system;
pub mod tls;
pub mod topic;

pub use config::{Config, ListenerKind};
pub use server::{BoundListener, Broker, BrokerError, CrlReloader};
