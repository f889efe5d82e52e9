//! Persisting the replay window, so a restarted subscriber does not deliver again what
//! it already delivered (retained messages, QoS 1 redelivery after a reconnect, or an
//! attacker re-publishing captured envelopes).

use std::path::{Path, PathBuf};

use crate::SubscriberError;

/// Where (if anywhere) the replay window lives: `<dir>/replay-<subscriber id>.state`, one
/// file per subscriber id, so that several subscribers can share a state directory (the
/// default one, `./.sealpost-sub`, above all).
pub(crate) struct ReplayStore {
    location: Option<(PathBuf, String)>,
}

impl ReplayStore {
    /// The store of subscriber `id` in `dir`, or an in-memory-only store (`None`).
    pub fn new(dir: Option<PathBuf>, id: &str) -> ReplayStore {
        ReplayStore {
            location: dir.map(|dir| (dir, file_name(id))),
        }
    }

    /// The file, if the window is persisted at all.
    pub fn path(&self) -> Option<PathBuf> {
        self.location.as_ref().map(|(dir, name)| dir.join(name))
    }

    /// The saved window's bytes (the session core reads them), or `None` if there are
    /// none yet (or the store is in memory only).
    pub fn load(&self) -> Result<Option<Vec<u8>>, SubscriberError> {
        let Some(path) = self.path() else {
            return Ok(None);
        };
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(state_err(&path, e)),
        }
    }

    /// Replaces the saved window with `state` (bytes from the session core), atomically.
    pub fn save(&self, state: &[u8]) -> Result<(), SubscriberError> {
        let Some((dir, name)) = &self.location else {
            return Ok(());
        };
        sealpost_client::files::write_atomically(dir, name, state)
            .map_err(|e| state_err(&dir.join(name), e))
    }
}

/// `replay-<id>.state`, with every byte of the id outside `A-Z a-z 0-9 . _ -` written as
/// `%XX`, so that no id can name another file or directory.
fn file_name(id: &str) -> String {
    let mut name = String::from("replay-");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name.push_str(".state");
    name
}

fn state_err(path: &Path, e: impl std::fmt::Display) -> SubscriberError {
    SubscriberError::State {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_inside_the_directory_and_apart() {
        assert_eq!(file_name("alice"), "replay-alice.state");
        assert_eq!(file_name("../x"), "replay-..%2Fx.state");
        assert_ne!(file_name("a/b"), file_name("a%2Fb"));
        assert!(!file_name("a/b\\c").contains(['/', '\\']));
    }

    #[test]
    fn subscribers_sharing_a_directory_keep_their_own_windows() {
        use sealpost_protocol::ReplayState;
        let dir = tempfile::tempdir().unwrap();
        let alice = ReplayStore::new(Some(dir.path().to_owned()), "alice");
        let bob = ReplayStore::new(Some(dir.path().to_owned()), "bob");
        let mut state = ReplayState::default();
        assert!(state.record("pub", 7));
        alice.save(&state.to_bytes()).unwrap();
        bob.save(&ReplayState::default().to_bytes()).unwrap();
        let load = |store: &ReplayStore| ReplayState::from_bytes(&store.load().unwrap().unwrap());
        assert_eq!(load(&alice).unwrap(), state);
        assert_eq!(load(&bob).unwrap(), ReplayState::default());
    }
}
