//! What a KDC (key distribution center) and its readers agree on: the HTTPS API's wire
//! types ([`api`], specified in `docs/PROTOCOL.md`) and the credentials file a publisher
//! issues and a subscriber logs in with ([`KdcCredentials`]). The server is the
//! publisher SDK's, the client the subscriber SDK's.

pub mod api;
mod credentials;

pub use credentials::{CredentialsError, KdcCredentials};
