//! # sealpost-client: what the publisher and subscriber SDKs share
//!
//! Both SDKs are MQTT clients of a broker and parties of a KDC; this crate holds what
//! they need alike, so that neither depends on the other:
//!
//! - broker addresses, TLS settings and rumqttc options ([`transport`]);
//! - the SDK's own TCP/TLS connection with close_notify and failover routes ([`tunnel`]);
//! - connection health, reasons for failures and reconnect backoff ([`link`]);
//! - atomic replacement of state files ([`files`]);
//! - reading and reloading the CA's revocation list file ([`crl`]);
//! - the KDC's wire types and credentials files ([`kdc`]).
//!
//! It does no sealing or opening (that is `sealpost-protocol` and `sealpost-session`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod crl;
mod error;
pub mod files;
pub mod kdc;
pub mod link;
pub mod transport;
pub mod tunnel;

pub use error::ClientError;
pub use link::LinkStatus;
pub use transport::{BrokerAddress, TlsIdentity};
