//! Runs the key fetches the session core asks for ([`sealpost_session::KeyFetch`]); which
//! fetches to start, and when to try again, is the core's decision.

use std::collections::HashMap;
use std::sync::Arc;

use sealpost_session::KeyFetch;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{FetchedKey, KdcError, Session};

/// The result of one fetch, handed back to the worker.
#[derive(Debug)]
pub(crate) struct FetchOutcome {
    pub fetch: KeyFetch,
    pub result: Result<FetchedKey, KdcError>,
}

/// The KDC sessions by address, and the fetches under way.
pub(crate) struct Fetcher {
    sessions: HashMap<String, Arc<Session>>,
    tasks: JoinSet<()>,
}

impl Fetcher {
    pub fn new(sessions: Vec<Session>) -> Fetcher {
        Fetcher {
            sessions: sessions
                .into_iter()
                .map(|s| (s.client().address().to_owned(), Arc::new(s)))
                .collect(),
            tasks: JoinSet::new(),
        }
    }

    /// Starts `fetch`, sending its outcome to `results`. The core names only KDCs this
    /// subscriber has credentials for; any other address is ignored all the same, so
    /// credentials never go anywhere else.
    pub fn start<T: From<FetchOutcome> + Send + 'static>(
        &mut self,
        fetch: KeyFetch,
        results: &mpsc::Sender<T>,
    ) {
        let Some(session) = self.sessions.get(&fetch.kdc).cloned() else {
            return;
        };
        while self.tasks.try_join_next().is_some() {}
        let results = results.clone();
        self.tasks.spawn(async move {
            let result = session.fetch_key(fetch.epoch).await;
            let _ = results.send(T::from(FetchOutcome { fetch, result })).await;
        });
    }
}
