//! Where a [`crate::PublisherSession`] makes its state durable.
//!
//! The publisher's state (sequence high-water mark, recent content keys, grants) must be on
//! stable storage *before* the change it records takes effect: a sequence number used but
//! not recorded would be used again after a restart, and a key sent but not recorded could
//! not be served again. So the session calls [`StateStore::save`] in the middle of an
//! operation, and applies the change only if it succeeded (a failed save changes nothing).
//! The shell decides where the bytes go (an atomically replaced file, a database row, a
//! flash page); the bytes are opaque, and handed back to [`crate::PublisherSession::new`].

/// Durable storage for a session's state bytes.
pub trait StateStore: Send {
    /// Replaces the stored state with `state`, durably (e.g. write, fsync, rename), before
    /// returning `Ok`. An error message must not contain the state (it holds keys).
    fn save(&mut self, state: &[u8]) -> Result<(), String>;
}

/// Closures are stores: `|bytes: &[u8]| -> Result<(), String>`.
impl<F> StateStore for F
where
    F: FnMut(&[u8]) -> Result<(), String> + Send,
{
    fn save(&mut self, state: &[u8]) -> Result<(), String> {
        self(state)
    }
}

/// Keeps the last saved state in memory only (tests, and publishers that accept losing
/// their state: a lost state makes a restarted publisher start a new sequence range from
/// the clock and new keys).
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    /// The bytes last saved.
    pub saved: Option<Vec<u8>>,
    /// Saves so far.
    pub saves: usize,
}

impl StateStore for MemoryStore {
    fn save(&mut self, state: &[u8]) -> Result<(), String> {
        self.saved = Some(state.to_vec());
        self.saves += 1;
        Ok(())
    }
}
