//! The publisher's persisted state and atomic writes to the state directory.
//!
//! One file, `publisher.state` (the session core's state bytes, CBOR; mode 0600 because
//! it holds content keys), replaced
//! as a whole: written to a temporary file, flushed to disk, renamed over the old one, and
//! the directory flushed, so a crash leaves either the old or the new state, never a mix.
//!
//! A running publisher holds an exclusive advisory lock on `publisher.lock` in the same
//! directory ([`StateLock`]): two publishers on one directory would hand out the same
//! sequence numbers and overwrite each other's keys and grants.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use sealpost_client::files::write_atomically;
use sealpost_client::ClientError;

use crate::PublisherError;

/// File name of the state inside the state directory.
pub const STATE_FILE: &str = "publisher.state";
/// File name of the lock a running publisher holds inside the state directory.
pub const LOCK_FILE: &str = "publisher.lock";

pub use sealpost_session::state::Grant;

/// The publisher's persisted state (the session core's [`sealpost_session::state::PublisherState`],
/// which it dereferences to), as the state directory holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherState(pub sealpost_session::state::PublisherState);

impl std::ops::Deref for PublisherState {
    type Target = sealpost_session::state::PublisherState;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for PublisherState {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl PublisherState {
    /// Loads the state from `dir`, or `None` if there is none yet.
    pub fn load(dir: &Path) -> Result<Option<PublisherState>, PublisherError> {
        let path = dir.join(STATE_FILE);
        let Some(bytes) = load_bytes(dir)? else {
            return Ok(None);
        };
        sealpost_session::state::PublisherState::from_bytes(&bytes)
            .map(|s| Some(PublisherState(s)))
            .map_err(|e| PublisherError::State {
                path,
                detail: match e {
                    sealpost_session::SessionError::CorruptState(detail) => detail,
                    other => other.to_string(),
                },
            })
    }

    /// Saves the state to `dir` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), PublisherError> {
        Ok(write_atomically(dir, STATE_FILE, &self.to_bytes())?)
    }
}

/// The state file's bytes (for the session core), or `None` if there is none yet.
pub fn load_bytes(dir: &Path) -> Result<Option<Vec<u8>>, PublisherError> {
    let path = dir.join(STATE_FILE);
    match fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_err(&path, e)),
    }
}

/// The session core's [`sealpost_session::StateStore`] over the state directory: each
/// save replaces `publisher.state` atomically, and records how long it took (for
/// [`crate::RekeyTimings::persist`]).
pub(crate) struct FileStore {
    pub dir: PathBuf,
    pub last_save: std::sync::Arc<std::sync::Mutex<std::time::Duration>>,
}

impl sealpost_session::StateStore for FileStore {
    fn save(&mut self, state: &[u8]) -> Result<(), String> {
        let started = std::time::Instant::now();
        let saved = write_atomically(&self.dir, STATE_FILE, state);
        *self.last_save.lock().unwrap_or_else(|p| p.into_inner()) = started.elapsed();
        saved.map_err(|e| match e {
            ClientError::State { path, detail } => format!("{}: {detail}", path.display()),
            other => other.to_string(),
        })
    }
}

/// An exclusive advisory lock (`flock`) on a state directory's [`LOCK_FILE`], held until
/// dropped. The operating system releases it when the process ends, crash included, so a
/// stale lock never needs clearing by hand. Advisory: it keeps out other publishers (which
/// all take it), not other programs.
#[derive(Debug)]
pub struct StateLock {
    // Never read: holding the open file is what holds the lock.
    _file: File,
}

impl StateLock {
    /// Takes the lock on `dir` (created if missing), or fails at once with
    /// [`PublisherError::StateLocked`] if another publisher holds it.
    pub fn acquire(dir: &Path) -> Result<StateLock, PublisherError> {
        fs::create_dir_all(dir).map_err(|e| state_err(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut options = OpenOptions::new();
        // Never truncated or written: the file's contents do not matter, only the lock.
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(|e| state_err(&path, e))?;
        // Called through the trait: std's own File::try_lock needs a newer Rust than the
        // MSRV.
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(fs4::TryLockError::WouldBlock) => Err(PublisherError::StateLocked {
                dir: dir.to_owned(),
            }),
            Err(fs4::TryLockError::Error(e)) => Err(state_err(&path, e)),
        }
    }
}

fn state_err(path: &Path, e: std::io::Error) -> PublisherError {
    PublisherError::State {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PublisherState::load(dir.path()).unwrap().is_none());
        let mut state = PublisherState(sealpost_session::state::PublisherState::fresh(
            [7; 32], 1000,
        ));
        state.grants.push(Grant {
            subscriber: "s1".into(),
            certificate_der: vec![1, 2, 3],
            granted_epoch: 1,
        });
        state.save(dir.path()).unwrap();
        assert_eq!(PublisherState::load(dir.path()).unwrap().unwrap(), state);
        state.seq_high_water += 10;
        state.save(dir.path()).unwrap();
        assert_eq!(
            PublisherState::load(dir.path())
                .unwrap()
                .unwrap()
                .seq_high_water,
            state.seq_high_water
        );
        assert!(!format!("{state:?}").contains("7, 7"));
    }

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        match StateLock::acquire(dir.path()) {
            Err(PublisherError::StateLocked { dir: locked }) => assert_eq!(locked, dir.path()),
            other => panic!("expected StateLocked, got {other:?}"),
        }
        drop(first);
        StateLock::acquire(dir.path()).expect("free again once the holder is gone");
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), b"\xff\x00garbage").unwrap();
        assert!(matches!(
            PublisherState::load(dir.path()),
            Err(PublisherError::State { .. })
        ));
    }
}
