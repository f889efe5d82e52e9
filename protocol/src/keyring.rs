//! Content keys and the recent epochs a party keeps.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use aes_gcm::aead::KeyInit;
use aes_gcm::Aes256Gcm;
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

/// Length of a content key (AES-256).
pub const CONTENT_KEY_LEN: usize = 32;
/// How many recent epochs are kept by default, so messages in flight across a rotation
/// still open.
pub const DEFAULT_KEPT_EPOCHS: usize = 4;

/// An AES-256 content key. Zeroed on drop; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ContentKey(Zeroizing<[u8; CONTENT_KEY_LEN]>);

impl ContentKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> ContentKey {
        let mut key = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
        OsRng.fill_bytes(key.as_mut());
        ContentKey(key)
    }

    /// Wraps existing key bytes (from a key message, the KDC, or persisted state).
    pub fn from_bytes(bytes: [u8; CONTENT_KEY_LEN]) -> ContentKey {
        ContentKey(Zeroizing::new(bytes))
    }

    /// Wraps a slice, which must be exactly [`CONTENT_KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<ContentKey> {
        let array: [u8; CONTENT_KEY_LEN] = bytes.try_into().ok()?;
        Some(ContentKey::from_bytes(array))
    }

    /// The key bytes. Handle with care: never log them.
    pub fn as_bytes(&self) -> &[u8; CONTENT_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentKey(<redacted>)")
    }
}

/// The content keys of the most recent epochs of several publishers.
///
/// Only the newest `kept` epochs per publisher are retained: an old epoch falls out when a
/// newer one arrives, which bounds memory and ends access to old keys.
#[derive(Debug, Clone)]
pub struct Keyring {
    kept: usize,
    keys: HashMap<String, BTreeMap<u64, Entry>>,
}

/// A kept key with its AES-GCM key schedule, expanded once when the key arrives rather
/// than for every message it opens.
#[derive(Clone)]
struct Entry {
    key: ContentKey,
    cipher: Aes256Gcm,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key.fmt(f)
    }
}

impl Default for Keyring {
    fn default() -> Self {
        Keyring::new(DEFAULT_KEPT_EPOCHS)
    }
}

impl Keyring {
    /// A keyring keeping `kept` (at least 1) epochs per publisher.
    pub fn new(kept: usize) -> Keyring {
        Keyring {
            kept: kept.max(1),
            keys: HashMap::new(),
        }
    }

    /// Adds a key. Returns `false` (and keeps nothing) when the epoch is older than every
    /// epoch kept and the ring is full.
    pub fn insert(&mut self, publisher: &str, epoch: u64, key: ContentKey) -> bool {
        let epochs = self.keys.entry(publisher.to_owned()).or_default();
        let cipher = Aes256Gcm::new(key.as_bytes().into());
        epochs.insert(epoch, Entry { key, cipher });
        while epochs.len() > self.kept {
            epochs.pop_first();
        }
        epochs.contains_key(&epoch)
    }

    /// The key of `publisher` at `epoch`, if kept.
    pub fn get(&self, publisher: &str, epoch: u64) -> Option<&ContentKey> {
        self.keys.get(publisher)?.get(&epoch).map(|e| &e.key)
    }

    /// The AES-256-GCM instance of `publisher`'s key at `epoch`, if kept.
    pub(crate) fn cipher(&self, publisher: &str, epoch: u64) -> Option<&Aes256Gcm> {
        self.keys.get(publisher)?.get(&epoch).map(|e| &e.cipher)
    }

    /// Is this epoch's key kept?
    pub fn contains(&self, publisher: &str, epoch: u64) -> bool {
        self.get(publisher, epoch).is_some()
    }

    /// The kept epochs of `publisher`, oldest first.
    pub fn epochs<'a>(&'a self, publisher: &str) -> impl Iterator<Item = (u64, &'a ContentKey)> {
        self.keys
            .get(publisher)
            .into_iter()
            .flat_map(|m| m.iter().map(|(e, k)| (*e, &k.key)))
    }

    /// The newest epoch of `publisher`.
    pub fn latest(&self, publisher: &str) -> Option<(u64, &ContentKey)> {
        self.keys
            .get(publisher)?
            .iter()
            .next_back()
            .map(|(e, k)| (*e, &k.key))
    }

    /// Forgets every key of `publisher`.
    pub fn remove_publisher(&mut self, publisher: &str) {
        self.keys.remove(publisher);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_newest_epochs() {
        let mut ring = Keyring::new(2);
        assert!(ring.insert("p", 1, ContentKey::generate()));
        assert!(ring.insert("p", 2, ContentKey::generate()));
        assert!(ring.insert("p", 3, ContentKey::generate()));
        assert!(!ring.contains("p", 1));
        assert!(ring.contains("p", 2) && ring.contains("p", 3));
        // An epoch older than all kept is not stored.
        assert!(!ring.insert("p", 1, ContentKey::generate()));
        assert_eq!(ring.latest("p").map(|(e, _)| e), Some(3));
        assert!(!ring.contains("q", 3));
    }

    #[test]
    fn debug_does_not_leak_keys() {
        let key = ContentKey::from_bytes([0xAB; 32]);
        assert!(!format!("{key:?}").to_lowercase().contains("ab"));
    }
}
