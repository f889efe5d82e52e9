//! At most one key fetch per `(publisher, epoch)`, however many envelopes need it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{FetchedKey, KdcError, Session};

/// Most `(publisher, epoch)` entries remembered; past this, finished ones are forgotten
/// (a forgotten successful epoch is in the opener's keyring anyway).
const MAX_ENTRIES: usize = 4096;
/// Pause before fetching an epoch again after a transient failure.
const RETRY_TRANSIENT: Duration = Duration::from_secs(2);
/// Pause before trying again after a refusal (credentials, revocation, grant).
const RETRY_REFUSED: Duration = Duration::from_secs(30);

/// The result of one fetch, handed back to the worker.
#[derive(Debug)]
pub(crate) struct FetchOutcome {
    pub kdc: String,
    pub publisher: String,
    pub epoch: u64,
    pub result: Result<FetchedKey, KdcError>,
}

enum Status {
    InFlight,
    Done,
    Failed { retry_at: Instant },
}

/// Starts fetches and remembers which epochs were asked for.
pub(crate) struct Fetcher {
    sessions: HashMap<String, Arc<Session>>,
    status: HashMap<(String, u64), Status>,
    tasks: JoinSet<()>,
}

impl Fetcher {
    pub fn new(sessions: Vec<Session>) -> Fetcher {
        Fetcher {
            sessions: sessions
                .into_iter()
                .map(|s| (s.client().address().to_owned(), Arc::new(s)))
                .collect(),
            status: HashMap::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Starts fetching the key of `publisher` at `epoch` from `kdc`, unless that is
    /// already done, under way, or failed too recently. Returns whether a fetch started.
    /// Credentials are only ever sent to the KDC they were issued for: an address this
    /// subscriber has no credentials for is ignored.
    pub fn want<T: From<FetchOutcome> + Send + 'static>(
        &mut self,
        kdc: &str,
        publisher: &str,
        epoch: u64,
        results: &mpsc::Sender<T>,
        now: Instant,
    ) -> bool {
        let Some(session) = self.sessions.get(kdc).cloned() else {
            return false;
        };
        while self.tasks.try_join_next().is_some() {}
        let key = (publisher.to_owned(), epoch);
        match self.status.get(&key) {
            Some(Status::InFlight | Status::Done) => return false,
            Some(Status::Failed { retry_at }) if now < *retry_at => return false,
            _ => {}
        }
        if self.status.len() >= MAX_ENTRIES {
            self.status
                .retain(|_, s| matches!(s, Status::InFlight | Status::Failed { .. }));
        }
        self.status.insert(key, Status::InFlight);
        let results = results.clone();
        let (kdc, publisher) = (kdc.to_owned(), publisher.to_owned());
        self.tasks.spawn(async move {
            let result = session.fetch_key(epoch).await;
            let outcome = FetchOutcome {
                kdc,
                publisher,
                epoch,
                result,
            };
            let _ = results.send(T::from(outcome)).await;
        });
        true
    }

    /// Records how a fetch ended.
    pub fn finished(
        &mut self,
        publisher: &str,
        epoch: u64,
        error: Option<&KdcError>,
        now: Instant,
    ) {
        let status = match error {
            None => Status::Done,
            Some(e) if e.is_transient() => Status::Failed {
                retry_at: now + RETRY_TRANSIENT,
            },
            Some(_) => Status::Failed {
                retry_at: now + RETRY_REFUSED,
            },
        };
        self.status.insert((publisher.to_owned(), epoch), status);
    }
}
