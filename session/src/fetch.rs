//! Key fetch decisions: at most one fetch per `(publisher, epoch)` in flight, none again
//! after success, and a pause before trying again after a failure. The fetching itself
//! (HTTPS to the KDC) is the shell's.

use std::collections::{HashMap, HashSet};

/// Most `(publisher, epoch)` entries remembered; past this, finished ones are forgotten
/// (a forgotten successful epoch is in the opener's keyring anyway).
const MAX_ENTRIES: usize = 4096;
/// Pause before fetching an epoch again after a transient failure (milliseconds).
pub const RETRY_TRANSIENT_MS: u64 = 2_000;
/// Pause before trying again after a refusal: credentials, revocation, grant
/// (milliseconds).
pub const RETRY_REFUSED_MS: u64 = 30_000;

/// A key to fetch from a KDC: the shell logs in there with the credentials it holds for
/// that address and reports the outcome with
/// [`crate::SubscriberSession::key_fetched`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyFetch {
    /// The KDC address (as signed in the envelope's key index).
    pub kdc: String,
    /// The publisher whose key is wanted.
    pub publisher: String,
    /// Its epoch.
    pub epoch: u64,
}

enum Status {
    InFlight,
    Done,
    Failed { retry_at_ms: u64 },
}

/// Which fetches to start.
pub(crate) struct Fetches {
    /// KDC addresses the shell has credentials for: credentials are only ever sent to
    /// the KDC they were issued for, so other addresses are never fetched from.
    kdcs: HashSet<String>,
    status: HashMap<(String, u64), Status>,
}

impl Fetches {
    pub fn new(kdcs: impl IntoIterator<Item = String>) -> Fetches {
        Fetches {
            kdcs: kdcs.into_iter().collect(),
            status: HashMap::new(),
        }
    }

    /// Whether to start fetching the key of `publisher` at `epoch` from `kdc` now: not if
    /// there are no credentials for it, or it is done, under way, or failed too
    /// recently. A fetch to start is recorded as under way.
    pub fn want(&mut self, kdc: &str, publisher: &str, epoch: u64, now_ms: u64) -> bool {
        if !self.kdcs.contains(kdc) {
            return false;
        }
        let key = (publisher.to_owned(), epoch);
        match self.status.get(&key) {
            Some(Status::InFlight | Status::Done) => return false,
            Some(Status::Failed { retry_at_ms }) if now_ms < *retry_at_ms => return false,
            _ => {}
        }
        if self.status.len() >= MAX_ENTRIES {
            self.status
                .retain(|_, s| matches!(s, Status::InFlight | Status::Failed { .. }));
        }
        self.status.insert(key, Status::InFlight);
        true
    }

    /// Records how a fetch ended: `None` success, `Some(transient)` a failure.
    pub fn finished(&mut self, publisher: &str, epoch: u64, failure: Option<bool>, now_ms: u64) {
        let status = match failure {
            None => Status::Done,
            Some(true) => Status::Failed {
                retry_at_ms: now_ms + RETRY_TRANSIENT_MS,
            },
            Some(false) => Status::Failed {
                retry_at_ms: now_ms + RETRY_REFUSED_MS,
            },
        };
        self.status.insert((publisher.to_owned(), epoch), status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fetch_per_epoch_retries_after_pauses_and_only_known_kdcs() {
        let mut f = Fetches::new(["https://kdc".to_owned()]);
        assert!(!f.want("https://other", "p", 1, 0), "no credentials there");
        assert!(f.want("https://kdc", "p", 1, 0));
        assert!(!f.want("https://kdc", "p", 1, 1), "under way");
        assert!(f.want("https://kdc", "p", 2, 1), "another epoch");
        f.finished("p", 1, Some(true), 10);
        assert!(!f.want("https://kdc", "p", 1, 10 + RETRY_TRANSIENT_MS - 1));
        assert!(f.want("https://kdc", "p", 1, 10 + RETRY_TRANSIENT_MS));
        f.finished("p", 1, Some(false), 100);
        assert!(!f.want("https://kdc", "p", 1, 100 + RETRY_TRANSIENT_MS));
        assert!(f.want("https://kdc", "p", 1, 100 + RETRY_REFUSED_MS));
        f.finished("p", 1, None, 200);
        assert!(!f.want("https://kdc", "p", 1, u64::MAX), "done");
    }
}
