//! Broker assembly: shared state, listeners, the broker's own router link, start and
//! graceful shutdown (mini-redis style: a watch channel tells every task to stop, and
//! shutdown waits for connections to release their permits).

use crate::acl::Acl;
use crate::auth::PasswordFile;
use crate::config::{Config, ListenerKind};
use crate::listener;
use crate::metrics::{inc, Metrics};
use crate::publish_link::PublishLink;
use crate::retained::RetainedStore;
use crate::retained_index::RetainedIndex;
use crate::router::RouterHandle;
use crate::session::Sessions;
pub use crate::shared::Shared;
use crate::store::{Loaded, Store, StoreError};
use crate::system::{SystemLink, SYSTEM_CLIENT_ID};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The password file is unusable.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The store (sessions, retained messages) could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// An ACL rule is invalid.
    #[error("ACL: {0}")]
    Acl(String),
    /// A socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The router did not accept the broker's own link.
    #[error("router link: {0}")]
    Router(String),
}

/// Reloads the revocation lists of the TLS listeners that have one.
#[derive(Clone)]
pub struct CrlReloader {
    lists: Arc<Vec<Arc<crate::tls::Revocation>>>,
    metrics: Arc<Metrics>,
}

impl CrlReloader {
    /// Reads every list again now; installs those that changed and are valid. A list
    /// that cannot be installed is logged as an error and the one in force stays (the
    /// broker never falls back to no list). Returns the number of lists installed.
    pub async fn reload(&self) -> usize {
        let lists = self.lists.clone();
        // File reads and signature checks: off the connection workers.
        let results = tokio::task::spawn_blocking(move || {
            lists.iter().map(|l| l.reload()).collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "revocation list reload failed");
            Vec::new()
        });
        let mut installed = 0;
        for result in results {
            match result {
                Ok(true) => {
                    installed += 1;
                    crate::metrics::inc(&self.metrics.crl_reloads);
                    info!("new revocation list installed");
                }
                Ok(false) => {}
                Err(e) => {
                    crate::metrics::inc(&self.metrics.crl_reload_failures);
                    tracing::error!(error = %e, "revocation list not reloaded; the previous one stays in force");
                }
            }
        }
        installed
    }

    async fn run(self, every: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; the lists were just read
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.reload().await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Creates the data directory if it is missing, readable by the broker's user only (it
/// holds sessions and retained messages, key messages among them).
fn create_data_dir(dir: &std::path::Path) -> Result<(), BrokerError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| BrokerError::DataDir {
        path: dir.to_owned(),
        source,
    })
}

/// A bound listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundListener {
    /// Transport.
    pub kind: ListenerKind,
    /// Actual address (with the real port when 0 was configured).
    pub addr: SocketAddr,
}

/// A running broker.
pub struct Broker {
    listeners: Vec<BoundListener>,
    crl_reloader: CrlReloader,
    metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    permits: Arc<Semaphore>,
}

impl Broker {
    /// Validates the configuration, opens the retained store, starts the router, replays
    /// retained messages and binds every listener.
    pub async fn start(config: Config) -> Result<Broker, BrokerError> {
        config.validate()?;
        let acl = Acl::new(&config.acl).map_err(BrokerError::Acl)?;
        let passwords = match &config.auth.password_file {
            Some(p) => Some(PasswordFile::load(p)?.with_login_limits(config.auth.login_limits())),
            None => None,
        };
        let (store, loaded) = match (&config.storage.path, config.storage.file()) {
            (Some(dir), Some(file)) => {
                create_data_dir(dir)?;
                let (store, loaded) = Store::open(&file, config.storage.store_sync())?;
                // New messages are numbered after the kept ones.
                crate::marker::Mark::resume_numbering(loaded.next_message);
                (Arc::new(store), loaded)
            }
            _ => (Arc::new(Store::in_memory()), Loaded::default()),
        };
        let (retained, stored) = match &config.retained.path {
            _ if store.is_durable() => RetainedStore::within(store.clone())?,
            Some(p) => RetainedStore::open(p)?,
            None => (RetainedStore::in_memory(), Vec::new()),
        };
        let router = RouterHandle::spawn(config.limits.max_connections, &config.router);
        let (system, mut system_rx, _) = router
            .link_async(SYSTEM_CLIENT_ID.to_owned(), true)
            .await
            .map_err(|e| BrokerError::Router(e.to_string()))?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::default());
        let mut tasks = Vec::new();
        // The broker's link receives nothing useful, but its queue must be drained.
        tasks.push(tokio::spawn(async move {
            while let Ok(_n) = system_rx.next().await {}
        }));
        let (publish_link, publish_acks) = PublishLink::start(&router)
            .await
            .map_err(|e| BrokerError::Router(e.to_string()))?;
        tasks.push(publish_acks);

        let mut bound = Vec::new();
        let mut sockets = Vec::new();
        let mut revocations = Vec::new();
        for l in &config.listeners {
            let socket = tokio::net::TcpListener::bind(l.bind)
                .await
                .map_err(|source| BrokerError::Bind {
                    addr: l.bind,
                    source,
                })?;
            let addr = socket.local_addr().map_err(|source| BrokerError::Bind {
                addr: l.bind,
                source,
            })?;
            let tls = match (&l.kind, &l.tls) {
                (ListenerKind::Tls | ListenerKind::Wss, Some(t)) => Some(crate::tls::acceptor(t)?),
                _ => None,
            };
            if let Some(r) = tls.as_ref().and_then(|t| t.revocation.as_ref()) {
                if r.has_list() {
                    revocations.push(r.clone());
                }
            }
            bound.push(BoundListener { kind: l.kind, addr });
            sockets.push((socket, l.kind, tls));
        }
        let metrics_socket = match config.metrics.bind {
            Some(addr) => Some(
                crate::metrics::bind(addr)
                    .await
                    .map_err(|source| BrokerError::Bind { addr, source })?,
            ),
            None => None,
        };
        let metrics_addr = metrics_socket.as_ref().and_then(|s| s.local_addr().ok());

        let crl_reloader = CrlReloader {
            lists: Arc::new(revocations),
            metrics: metrics.clone(),
        };
        let interval = config.limits.crl_reload_interval_ms;
        if interval > 0 && !crl_reloader.lists.is_empty() {
            tasks.push(tokio::spawn(
                crl_reloader
                    .clone()
                    .run(Duration::from_millis(interval), shutdown_rx.clone()),
            ));
        }
        let permits = Arc::new(Semaphore::new(config.limits.max_connections));
        let retained = Arc::new(retained);
        let retained_index = Arc::new(RetainedIndex::default());
        let system = Arc::new(SystemLink::new(
            system,
            retained.clone(),
            retained_index.clone(),
        ));
        let sessions = Arc::new(Sessions::new(
            router.clone(),
            system.clone(),
            shutdown_rx.clone(),
            store.clone(),
        ));
        let shared = Arc::new(Shared {
            config,
            router,
            publish_link,
            acl,
            passwords,
            retained,
            store,
            retained_owners: Default::default(),
            retained_index,
            metrics: metrics.clone(),
            shutdown: shutdown_rx.clone(),
            system,
            sessions,
            backpressure: Default::default(),
        });
        // Sessions first; then the retained messages, whose live copies those sessions
        // skip (see `Sessions::replay_boundary`). The messages kept for the sessions
        // are not routed again: each session gets them from the store when its client
        // comes back (`Connection::deliver_stored`).
        let restored_sessions = loaded.sessions.len();
        let kept_messages = loaded.messages.len();
        shared
            .sessions
            .restore(loaded.sessions, loaded.due_wills)
            .await
            .map_err(BrokerError::Router)?;
        shared.system.replay(stored).await;
        shared.sessions.restored();
        if restored_sessions > 0 {
            info!(
                sessions = restored_sessions,
                messages = kept_messages,
                "persistent sessions restored"
            );
        }

        for (socket, kind, tls) in sockets {
            tasks.push(tokio::spawn(listener::run(
                socket,
                kind,
                tls,
                shared.clone(),
                permits.clone(),
            )));
        }
        if let Some(socket) = metrics_socket {
            tasks.push(tokio::spawn(crate::metrics::serve(
                socket,
                metrics,
                shutdown_rx,
            )));
        }
        for b in &bound {
            info!(kind = ?b.kind, addr = %b.addr, "listening");
        }
        Ok(Broker {
            listeners: bound,
            crl_reloader,
            metrics_addr,
            shared,
            shutdown_tx,
            tasks,
            permits,
        })
    }

    /// The listeners, with their actual addresses.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// Address of the first listener of `kind`.
    pub fn addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.kind == kind)
            .map(|l| l.addr)
    }

    /// Address of the metrics endpoint, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The broker's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// What reloads the TLS listeners' revocation lists (for SIGHUP; they are also
    /// reloaded every `limits.crl_reload_interval_ms`).
    pub fn crl_reloader(&self) -> CrlReloader {
        self.crl_reloader.clone()
    }

    /// Serves one client connection over any byte stream, as a plain listener does after
    /// accepting it (under the connection limit, with no certificate identity), and
    /// returns when the connection has ended. This is the seam the fuzz targets feed
    /// bytes through without sockets (`fuzz/`); it is not a supported API.
    #[doc(hidden)]
    pub async fn serve_stream<S>(&self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    {
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            inc(&self.shared.metrics.connections_rejected);
            return;
        };
        inc(&self.shared.metrics.connections_total);
        crate::connection::serve(stream, self.shared.clone(), Default::default()).await;
    }

    /// Stops accepting, tells every connection to close (MQTT 5 clients get DISCONNECT
    /// 0x8B), waits up to `grace` for them, then closes the retained store.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown_tx.send(true);
        let max = self.shared.config.limits.max_connections as u32;
        let drained = tokio::time::timeout(grace, self.permits.acquire_many(max)).await;
        if drained.is_err() {
            warn!("some connections did not close within the shutdown grace period");
        }
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        self.shared.retained.close();
        self.shared.store.close();
        info!("broker stopped");
    }
}
