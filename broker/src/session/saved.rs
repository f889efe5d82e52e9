//! What a persistent session keeps of the edge's per-connection state while its client
//! is away, and where it is kept.
//!
//! This is the seam where a durable store plugs in: connections only `save`, `get`
//! and `discard` whole [`SavedSession`]s by client id, so a store behind these three
//! operations needs no change elsewhere.

use crate::subscriptions::Subscriptions;
use std::collections::HashMap;
use std::sync::Mutex;

/// Subscription tables of persistent sessions, by client id, so that a resumed session
/// keeps its options and identifiers. Saved on every change (not when the connection
/// ends), so that a connection taking over a session finds its table current.
#[derive(Debug, Default)]
pub struct SavedSessions {
    saved: Mutex<HashMap<String, SavedSession>>,
}

/// What a persistent session keeps of the edge's per-connection state.
#[derive(Debug, Clone, Default)]
pub(crate) struct SavedSession {
    pub subscriptions: Subscriptions,
    /// The session's origin id in message markers (no local spans reconnects).
    pub origin: u64,
    /// Numbers of messages sent and not acknowledged when the last connection ended.
    pub unacknowledged: Vec<u64>,
    /// The client's packet ids of routed QoS 2 messages whose PUBREL has not come.
    pub awaiting_release: Vec<u16>,
}

impl SavedSessions {
    /// Keeps a session's state for its next connection.
    pub(crate) fn save(&self, client: &str, session: SavedSession) {
        self.lock().insert(client.to_owned(), session);
    }

    /// A session's saved state.
    pub(crate) fn get(&self, client: &str) -> Option<SavedSession> {
        self.lock().get(client).cloned()
    }

    /// Forgets a session's state (the session ended).
    pub(crate) fn discard(&self, client: &str) {
        self.lock().remove(client);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SavedSession>> {
        // The map holds plain data: a panic elsewhere cannot leave it inconsistent.
        self.saved.lock().unwrap_or_else(|e| e.into_inner())
    }
}
