//! The publisher's persisted state, as bytes (CBOR). Where the bytes are stored is the
//! shell's business ([`crate::StateStore`]); the format is the one `publisher.state` files
//! have always had, so existing state directories stay readable.

use sealpost_protocol::{ContentKey, DEFAULT_KEPT_EPOCHS};
use serde::{Deserialize, Serialize};

use crate::SessionError;

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
    /// A fresh state: epoch 1 with `key`. Sequence numbers start at `now` (unix seconds)
    /// shifted left by 20 bits, so that even a publisher whose state was lost starts
    /// above the numbers it used before (unless it sent over a million messages a second
    /// on average), instead of being rejected as a replay by every subscriber.
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

    /// The state as bytes, for a [`crate::StateStore`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        ciborium::into_writer(self, &mut bytes).expect("CBOR encoding into memory cannot fail");
        bytes
    }

    /// Reads bytes written by [`PublisherState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<PublisherState, SessionError> {
        let state: PublisherState = ciborium::from_reader(bytes)
            .map_err(|_| SessionError::CorruptState("corrupt state file".into()))?;
        if state.format != FORMAT {
            return Err(SessionError::CorruptState(format!(
                "unsupported state format {}",
                state.format
            )));
        }
        Ok(state)
    }

    /// Starts a new epoch with a fresh content key made at `now` (unix seconds), keeping
    /// the most recent epochs' keys, and returns the key.
    pub(crate) fn start_epoch(&mut self, now: u64) -> ContentKey {
        self.start_epoch_with(ContentKey::generate(), now)
    }

    /// [`PublisherState::start_epoch`] with a key made earlier: a prepared next epoch's,
    /// which has sealed nothing and was published to no one (see `crate::prepared`).
    pub(crate) fn start_epoch_with(&mut self, key: ContentKey, now: u64) -> ContentKey {
        self.epoch += 1;
        self.epoch_started_at = now;
        self.keys.push((self.epoch, *key.as_bytes()));
        let excess = self.keys.len().saturating_sub(DEFAULT_KEPT_EPOCHS);
        self.keys.drain(..excess);
        key
    }

    /// The kept keys, `(epoch, key)`, newest last.
    pub fn recent_keys(&self) -> Vec<(u64, ContentKey)> {
        self.keys
            .iter()
            .map(|(e, k)| (*e, ContentKey::from_bytes(*k)))
            .collect()
    }

    /// The current epoch and its key.
    pub(crate) fn current_key(&self) -> (u64, ContentKey) {
        self.keys
            .iter()
            .find(|(e, _)| *e == self.epoch)
            .map(|(e, k)| (*e, ContentKey::from_bytes(*k)))
            .unwrap_or_else(|| (self.epoch, ContentKey::generate()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage_and_other_formats() {
        let mut state = PublisherState::fresh([7; 32], 1000);
        state.grants.push(Grant {
            subscriber: "s1".into(),
            certificate_der: vec![1, 2, 3],
            granted_epoch: 1,
        });
        assert_eq!(
            PublisherState::from_bytes(&state.to_bytes()).unwrap(),
            state
        );
        assert!(!format!("{state:?}").contains("7, 7"), "keys never printed");
        assert!(matches!(
            PublisherState::from_bytes(b"\xff\x00garbage"),
            Err(SessionError::CorruptState(_))
        ));
        let mut other = state.clone();
        other.format = 2;
        match PublisherState::from_bytes(&other.to_bytes()) {
            Err(SessionError::CorruptState(m)) => assert!(m.contains("format 2"), "{m}"),
            other => panic!("expected CorruptState, got {other:?}"),
        }
    }

    #[test]
    fn start_epoch_keeps_only_the_recent_keys() {
        let mut state = PublisherState::fresh([1; 32], 10);
        for n in 0..DEFAULT_KEPT_EPOCHS + 2 {
            state.start_epoch(20 + n as u64);
        }
        assert_eq!(state.keys.len(), DEFAULT_KEPT_EPOCHS);
        assert_eq!(state.keys.last().unwrap().0, state.epoch);
        assert_eq!(state.current_key().0, state.epoch);
        assert_eq!(state.epoch_started_at, 20 + DEFAULT_KEPT_EPOCHS as u64 + 1);
    }
}
