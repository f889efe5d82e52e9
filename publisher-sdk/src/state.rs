//! The publisher's persisted state and atomic writes to the state directory.
//!
//! One file, `publisher.state` (CBOR, mode 0600 because it holds content keys), replaced
//! as a whole: written to a temporary file, flushed to disk, renamed over the old one, and
//! the directory flushed, so a crash leaves either the old or the new state, never a mix.
//!
//! A running publisher holds an exclusive advisory lock on `publisher.lock` in the same
//! directory ([`StateLock`]): two publishers on one directory would hand out the same
//! sequence numbers and overwrite each other's keys and grants.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::PublisherError;

/// File name of the state inside the state directory.
pub const STATE_FILE: &str = "publisher.state";
/// File name of the lock a running publisher holds inside the state directory.
pub const LOCK_FILE: &str = "publisher.lock";
/// Format version written; others are refused rather than misread.
const FORMAT: u32 = 1;

/// One granted subscriber.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grant {
    /// Subscriber identity.
    pub subscriber: String,
    /// Its certificate (DER).
    pub certificate_der: Vec<u8>,
    /// The epoch current when it was granted: it receives this epoch and later ones only.
    pub granted_epoch: u64,
}

/// Everything a publisher must remember across restarts.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublisherState {
    format: u32,
    /// Sequence numbers below this may have been used: a restarted publisher starts here.
    pub seq_high_water: u64,
    /// The current key epoch.
    pub epoch: u64,
    /// When the current epoch's key was made (unix seconds).
    pub epoch_started_at: u64,
    /// Recent content keys, `(epoch, key)`, newest last; the current one included.
    pub keys: Vec<(u64, [u8; 32])>,
    /// Granted subscribers.
    pub grants: Vec<Grant>,
}

impl std::fmt::Debug for PublisherState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the keys.
        f.debug_struct("PublisherState")
            .field("seq_high_water", &self.seq_high_water)
            .field("epoch", &self.epoch)
            .field("kept_epochs", &self.keys.len())
            .field("grants", &self.grants.len())
            .finish()
    }
}

impl PublisherState {
    /// A fresh state: epoch 1 with `key`. Sequence numbers start at the current unix time
    /// shifted left by 20 bits, so that even a publisher whose state directory was lost
    /// starts above the numbers it used before (unless it sent over a million messages a
    /// second on average), instead of being rejected as a replay by every subscriber.
    pub fn fresh(key: [u8; 32], now: u64) -> PublisherState {
        PublisherState {
            format: FORMAT,
            seq_high_water: now << 20,
            epoch: 1,
            epoch_started_at: now,
            keys: vec![(1, key)],
            grants: Vec::new(),
        }
    }

    /// Loads the state from `dir`, or `None` if there is none yet.
    pub fn load(dir: &Path) -> Result<Option<PublisherState>, PublisherError> {
        let path = dir.join(STATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(state_err(&path, e)),
        };
        let state: PublisherState =
            ciborium::from_reader(bytes.as_slice()).map_err(|_| PublisherError::State {
                path: path.clone(),
                detail: "corrupt state file".into(),
            })?;
        if state.format != FORMAT {
            return Err(PublisherError::State {
                path,
                detail: format!("unsupported state format {}", state.format),
            });
        }
        Ok(Some(state))
    }

    /// Saves the state to `dir` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), PublisherError> {
        let mut bytes = Vec::new();
        ciborium::into_writer(self, &mut bytes).map_err(|e| PublisherError::State {
            path: dir.join(STATE_FILE),
            detail: e.to_string(),
        })?;
        write_atomically(dir, STATE_FILE, &bytes)
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

/// Writes `dir/name` atomically with mode 0600: temporary file, fsync, rename, fsync dir.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), PublisherError> {
    fs::create_dir_all(dir).map_err(|e| state_err(dir, e))?;
    let path = dir.join(name);
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(|e| state_err(&tmp, e))?;
    file.write_all(bytes).map_err(|e| state_err(&tmp, e))?;
    file.sync_all().map_err(|e| state_err(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| state_err(&path, e))?;
    // The rename is durable only once the directory entry is.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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
        let mut state = PublisherState::fresh([7; 32], 1000);
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
