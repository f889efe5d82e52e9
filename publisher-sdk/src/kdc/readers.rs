//! The readers a publisher issued KDC credentials to, persisted in its state directory.
//!
//! One JSON file, `kdc.readers` (mode 0600), holding for each reader only the argon2id
//! hash of its password (PHC string), the epoch it was granted at and whether it was
//! revoked. It is replaced atomically on every change and re-read whenever it changed on
//! disk, so `sealpost-pub kdc add-reader` can add readers while a publisher serves keys.
//!
//! Every change is a read-modify-write under an exclusive advisory lock on
//! `kdc.readers.lock` (the list itself is replaced by rename, so it cannot carry the
//! lock): two processes changing the list at once (an `add-reader` racing a revocation)
//! are serialised, and neither undoes the other's change.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::KdcError;

/// File name of the reader list inside the state directory.
pub const READERS_FILE: &str = "kdc.readers";
/// File name of the lock taken across every change of the reader list.
pub const LOCK_FILE: &str = "kdc.readers.lock";
/// Format version written; others are refused rather than misread.
const FORMAT: u32 = 1;
/// Random bytes in a generated password (base64url: 32 characters, 192 bits).
const PASSWORD_BYTES: usize = 24;

/// One reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderRecord {
    /// argon2id hash of the password, PHC string format.
    pub password_hash: String,
    /// The epoch current when the credentials were issued: older keys are refused.
    pub granted_epoch: u64,
    /// When the credentials were issued (unix seconds).
    pub issued_at: u64,
    /// When the reader was revoked (unix seconds), if it was.
    pub revoked_at: Option<u64>,
    /// Added while no publisher could start a new epoch for it (`sealpost-pub kdc
    /// add-reader`): the KDC serves it no key at all until a publisher enables it, at its
    /// next start or, while it runs, within [`crate::kdc::PENDING_READER_CHECK`]. The
    /// publisher first rotates (unless the current key has sealed nothing, or
    /// `rotate_on_grant` is off) and sets `granted_epoch` to its current epoch, so the
    /// reader never gets a key that sealed anything before it was added. Until then
    /// `granted_epoch` is the epoch after the one current when it was added (so a KDC
    /// that did not know this field would not serve that epoch's key either).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ReadersFile {
    format: u32,
    /// The KDC address last served, so `add-reader` can write complete credentials.
    address: Option<String>,
    /// SHA-256 (hex) of the certificate the KDC last served with, pinned in credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate_sha256: Option<String>,
    readers: BTreeMap<String, ReaderRecord>,
}

/// Identifies one version of the file on disk (atomic replacement changes the inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

/// The reader list, backed by the state directory.
#[derive(Debug)]
pub struct ReaderStore {
    dir: PathBuf,
    file: ReadersFile,
    stamp: Option<Stamp>,
}

impl ReaderStore {
    /// Opens (or starts) the reader list in `dir`.
    pub fn open(dir: &Path) -> Result<ReaderStore, KdcError> {
        let mut store = ReaderStore {
            dir: dir.to_owned(),
            file: ReadersFile {
                format: FORMAT,
                ..ReadersFile::default()
            },
            stamp: None,
        };
        store.refresh()?;
        Ok(store)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(READERS_FILE)
    }

    fn stamp_now(&self) -> Result<Option<Stamp>, KdcError> {
        match std::fs::metadata(self.path()) {
            Ok(m) => Ok(Some(Stamp {
                modified: m.modified().ok(),
                len: m.len(),
                #[cfg(unix)]
                inode: std::os::unix::fs::MetadataExt::ino(&m),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.store_err(e.to_string())),
        }
    }

    /// Re-reads the file if another process replaced it.
    pub fn refresh(&mut self) -> Result<(), KdcError> {
        let stamp = self.stamp_now()?;
        if stamp == self.stamp {
            return Ok(());
        }
        self.reload(stamp)
    }

    /// Reads the file (version `stamp`) unconditionally.
    fn reload(&mut self, stamp: Option<Stamp>) -> Result<(), KdcError> {
        if stamp.is_some() {
            let bytes = std::fs::read(self.path()).map_err(|e| self.store_err(e.to_string()))?;
            let file: ReadersFile = serde_json::from_slice(&bytes)
                .map_err(|_| self.store_err("corrupt reader file".into()))?;
            if file.format != FORMAT {
                return Err(self.store_err(format!("unsupported format {}", file.format)));
            }
            self.file = file;
        }
        self.stamp = stamp;
        Ok(())
    }

    /// Runs `change` on the current list (read again under the lock) and writes the
    /// result if `change` says it changed anything, all under the exclusive lock, so no
    /// other writer's change made meanwhile is lost.
    fn update<R>(
        &mut self,
        change: impl FnOnce(&mut ReadersFile) -> Result<(R, bool), KdcError>,
    ) -> Result<R, KdcError> {
        let _lock = self.lock()?;
        // Forced: a replacement within the stamp's resolution must not be missed.
        let stamp = self.stamp_now()?;
        self.reload(stamp)?;
        let (result, changed) = change(&mut self.file)?;
        if changed {
            self.save()?;
        }
        Ok(result)
        // The lock is released when `_lock` is closed.
    }

    /// Takes the exclusive lock (blocking while another writer holds it; writers hold it
    /// only to re-read and write a small file).
    fn lock(&self) -> Result<File, KdcError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.store_err(e.to_string()))?;
        let path = self.dir.join(LOCK_FILE);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&path)
            .map_err(|e| self.store_err(format!("lock {}: {e}", path.display())))?;
        // Called through the trait: std's own File::lock needs a newer Rust than the MSRV.
        fs4::FileExt::lock(&file)
            .map_err(|e| self.store_err(format!("lock {}: {e}", path.display())))?;
        Ok(file)
    }

    fn save(&mut self) -> Result<(), KdcError> {
        let bytes = serde_json::to_vec_pretty(&self.file).expect("reader list serialises");
        sealpost_client::files::write_atomically(&self.dir, READERS_FILE, &bytes)
            .map_err(|e| self.store_err(e.to_string()))?;
        self.stamp = self.stamp_now()?;
        Ok(())
    }

    fn store_err(&self, detail: String) -> KdcError {
        KdcError::Store {
            path: self.path(),
            detail,
        }
    }

    /// Issues (or re-issues, invalidating the old password) credentials for `reader`,
    /// granted from `epoch` on. Returns the new password, which is not stored anywhere.
    pub fn add_reader(&mut self, reader: &str, epoch: u64) -> Result<String, KdcError> {
        self.issue(reader, |_| (epoch, false))
    }

    /// Issues credentials for `reader` as [`ReaderRecord::pending`], for a process that
    /// cannot start a new epoch (no publisher of its own): `next_epoch` is the epoch
    /// after the current one. Re-issuing the credentials of a reader that is active
    /// already keeps what it was entitled to (it holds those keys anyway).
    pub fn add_pending_reader(
        &mut self,
        reader: &str,
        next_epoch: u64,
    ) -> Result<String, KdcError> {
        self.issue(reader, |old| match old {
            Some(r) if r.revoked_at.is_none() => (r.granted_epoch, r.pending),
            _ => (next_epoch, true),
        })
    }

    /// Issues a new password for `reader`; `entitlement` decides, from the record in
    /// force (read under the lock), its `granted_epoch` and `pending`.
    fn issue(
        &mut self,
        reader: &str,
        entitlement: impl FnOnce(Option<&ReaderRecord>) -> (u64, bool),
    ) -> Result<String, KdcError> {
        sealpost_certs::validate_id(reader)
            .map_err(|_| KdcError::InvalidReader(reader.to_owned()))?;
        let mut raw = [0u8; PASSWORD_BYTES];
        OsRng.fill_bytes(&mut raw);
        let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        // Hashed before taking the lock: argon2 takes tens of milliseconds.
        let password_hash = hash_password(&password)?;
        self.update(|file| {
            let (granted_epoch, pending) = entitlement(file.readers.get(reader));
            let record = ReaderRecord {
                password_hash,
                granted_epoch,
                issued_at: sealpost_certs::now_unix().max(0) as u64,
                revoked_at: None,
                pending,
            };
            file.readers.insert(reader.to_owned(), record);
            Ok(((), true))
        })?;
        Ok(password)
    }

    /// Whether any active reader is [`ReaderRecord::pending`] (re-read from disk if the
    /// file changed).
    pub fn has_pending(&mut self) -> Result<bool, KdcError> {
        self.refresh()?;
        Ok(self
            .file
            .readers
            .values()
            .any(|r| r.pending && r.revoked_at.is_none()))
    }

    /// Enables every pending reader from `epoch` on, which must be an epoch whose key has
    /// sealed nothing yet (or, with `rotate_on_grant` off, the current one). Returns
    /// their ids.
    pub fn enable_pending(&mut self, epoch: u64) -> Result<Vec<String>, KdcError> {
        self.update(|file| {
            let mut enabled = Vec::new();
            for (id, record) in &mut file.readers {
                if record.pending && record.revoked_at.is_none() {
                    record.pending = false;
                    record.granted_epoch = epoch;
                    enabled.push(id.clone());
                }
            }
            let changed = !enabled.is_empty();
            Ok((enabled, changed))
        })
    }

    /// Revokes `reader`. Returns whether it was an active reader.
    pub fn revoke(&mut self, reader: &str) -> Result<bool, KdcError> {
        self.update(|file| match file.readers.get_mut(reader) {
            Some(record) if record.revoked_at.is_none() => {
                record.revoked_at = Some(sealpost_certs::now_unix().max(0) as u64);
                Ok((true, true))
            }
            _ => Ok((false, false)),
        })
    }

    /// The current record of `reader` (re-read from disk if it changed).
    pub fn record(&mut self, reader: &str) -> Result<Option<ReaderRecord>, KdcError> {
        self.refresh()?;
        Ok(self.file.readers.get(reader).cloned())
    }

    /// Active (not revoked) readers.
    pub fn active(&self) -> Vec<String> {
        self.file
            .readers
            .iter()
            .filter(|(_, r)| r.revoked_at.is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The KDC address last recorded.
    pub fn address(&self) -> Option<&str> {
        self.file.address.as_deref()
    }

    /// The SHA-256 (hex) of the certificate the KDC last served with.
    pub fn certificate_sha256(&self) -> Option<&str> {
        self.file.certificate_sha256.as_deref()
    }

    /// Records the address the KDC serves at and the SHA-256 (hex) of its certificate.
    pub fn set_served(&mut self, address: &str, certificate_sha256: &str) -> Result<(), KdcError> {
        self.update(|file| {
            if file.address.as_deref() == Some(address)
                && file.certificate_sha256.as_deref() == Some(certificate_sha256)
            {
                return Ok(((), false));
            }
            file.address = Some(address.to_owned());
            file.certificate_sha256 = Some(certificate_sha256.to_owned());
            Ok(((), true))
        })
    }
}

fn hash_password(password: &str) -> Result<String, KdcError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| KdcError::Internal("password hashing failed"))
}

/// Checks `password` against `hash` (a PHC string), or against a fixed dummy hash when
/// there is no reader, so that unknown readers cost the same time as wrong passwords and
/// timing does not tell which reader ids exist. CPU-heavy: run it off the async threads.
pub fn verify_password(hash: Option<&str>, password: &str) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| {
        let mut raw = [0u8; PASSWORD_BYTES];
        OsRng.fill_bytes(&mut raw);
        hash_password(&hex_of(&raw)).unwrap_or_default()
    });
    let (phc, real) = match hash {
        Some(h) => (h, true),
        None => (dummy.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_verifies_revokes_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ReaderStore::open(dir.path()).unwrap();
        let pw = store.add_reader("alice", 3).unwrap();
        let record = store.record("alice").unwrap().unwrap();
        assert!(!record.password_hash.contains(&pw));
        assert!(record.password_hash.starts_with("$argon2id$"));
        assert!(verify_password(Some(&record.password_hash), &pw));
        assert!(!verify_password(Some(&record.password_hash), "wrong"));
        assert!(!verify_password(None, &pw));
        // Another handle (another process) sees the reader and the revocation.
        let mut other = ReaderStore::open(dir.path()).unwrap();
        assert_eq!(other.active(), vec!["alice".to_string()]);
        assert!(other.revoke("alice").unwrap());
        assert!(!other.revoke("alice").unwrap());
        assert!(store.record("alice").unwrap().unwrap().revoked_at.is_some());
        assert!(store.active().is_empty());
        assert!(store.add_reader("bad/id", 1).is_err());
        let text = std::fs::read_to_string(dir.path().join(READERS_FILE)).unwrap();
        assert!(!text.contains(&pw));
    }

    /// A reader added without a publisher (pending) gets no entitlement until enabled;
    /// re-issuing an active reader's credentials keeps its entitlement; enabling skips
    /// revoked readers.
    #[test]
    fn pending_readers_are_enabled_from_the_epoch_given() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ReaderStore::open(dir.path()).unwrap();
        store.add_reader("alice", 3).unwrap();
        store.add_pending_reader("alice", 5).unwrap();
        let alice = store.record("alice").unwrap().unwrap();
        assert_eq!((alice.granted_epoch, alice.pending), (3, false));
        store.add_pending_reader("bob", 5).unwrap();
        store.add_pending_reader("carol", 5).unwrap();
        let bob = store.record("bob").unwrap().unwrap();
        assert_eq!((bob.granted_epoch, bob.pending), (5, true));
        assert!(store.revoke("carol").unwrap());
        assert!(store.has_pending().unwrap());
        assert_eq!(store.enable_pending(7).unwrap(), vec!["bob".to_string()]);
        assert!(!store.has_pending().unwrap());
        let bob = ReaderStore::open(dir.path())
            .unwrap()
            .record("bob")
            .unwrap()
            .unwrap();
        assert_eq!((bob.granted_epoch, bob.pending), (7, false));
        // Revoked, then issued again: pending again.
        store.add_pending_reader("carol", 8).unwrap();
        assert!(store.record("carol").unwrap().unwrap().pending);
    }

    /// Writers in parallel, each with its own handle (as separate processes would be):
    /// `add-reader`s racing each other and a revocation. Every change survives; above
    /// all, no `add-reader` writes back the revoked reader as active.
    #[test]
    fn concurrent_writers_lose_no_update() {
        let dir = tempfile::tempdir().unwrap();
        ReaderStore::open(dir.path())
            .unwrap()
            .add_reader("alice", 1)
            .unwrap();
        let adders = 6;
        let barrier = std::sync::Barrier::new(adders + 1);
        std::thread::scope(|scope| {
            for i in 0..adders {
                let (barrier, dir) = (&barrier, dir.path());
                scope.spawn(move || {
                    let mut store = ReaderStore::open(dir).unwrap();
                    barrier.wait();
                    store.add_reader(&format!("r{i}"), 1).unwrap();
                });
            }
            let mut store = ReaderStore::open(dir.path()).unwrap();
            barrier.wait();
            assert!(store.revoke("alice").unwrap());
        });
        let mut store = ReaderStore::open(dir.path()).unwrap();
        let expected: Vec<String> = (0..adders).map(|i| format!("r{i}")).collect();
        assert_eq!(store.active(), expected);
        let alice = store.record("alice").unwrap().unwrap();
        assert!(alice.revoked_at.is_some(), "the revocation was undone");
    }
}
