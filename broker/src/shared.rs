//! The state every connection is handed: configuration, router, authorization, stores,
//! counters, the shutdown signal and the sessions.
//!
//! It is assembled once by `server` and read by `listener` and `connection`; nothing
//! below the connection (sessions, stores, the router) refers to it, so the
//! dependencies run one way.

use crate::acl::Acl;
use crate::auth::PasswordFile;
use crate::backpressure::Backpressure;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::publish_link::PublishLink;
use crate::retained::{RetainedOwners, RetainedStore};
use crate::retained_index::RetainedIndex;
use crate::router::RouterHandle;
use crate::session::Sessions;
use crate::system::SystemLink;
use std::sync::Arc;
use tokio::sync::watch;

/// State shared by all connections.
pub struct Shared {
    /// The configuration in force.
    pub config: Config,
    /// The router.
    pub router: RouterHandle,
    /// The router link that connections which only publish, now and then, share.
    pub(crate) publish_link: Arc<PublishLink>,
    /// Authorization.
    pub acl: Acl,
    /// Password file, when configured.
    pub passwords: Option<PasswordFile>,
    /// Durable retained messages.
    pub retained: Arc<RetainedStore>,
    /// Durable sessions (and, with a data directory, the retained messages' database).
    pub store: Arc<crate::store::Store>,
    /// Who created each retained topic (`limits.max_retained_per_client`).
    pub retained_owners: RetainedOwners,
    /// The retained messages as routed, for repeated subscriptions (see
    /// `retained_index`).
    pub(crate) retained_index: Arc<RetainedIndex>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Becomes true at shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// The broker's own router link (wills, restored retained messages).
    pub system: Arc<SystemLink>,
    /// Sessions beyond one connection: the client id registry, saved state, timers.
    pub sessions: Arc<Sessions>,
    /// Sessions over their queue limit, which hold the publishers back
    /// (`limits.slow_subscriber = "backpressure"`).
    pub backpressure: Backpressure,
}
