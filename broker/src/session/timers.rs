//! The timer of a disconnected session: publishes a delayed will, then ends the
//! session when it expires, unless the client came back in the meantime.

use super::registry::Entry;
use super::Sessions;
use std::sync::Arc;
use tokio::time::Instant;

/// Waits for a delayed will and then for session expiry, acting only while the
/// generation it was started for is still the latest and disconnected.
pub(super) async fn timer(
    sessions: Arc<Sessions>,
    client_id: String,
    generation: u64,
    will_at: Option<Instant>,
    expire_at: Option<Instant>,
) {
    let mut shutdown = sessions.shutdown.clone();
    let still_ours = |e: &Entry| e.current == generation && !e.connected && e.timer;
    if let Some(at) = will_at {
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let mut lock = sessions.registry.lock(&client_id).await;
        if !still_ours(&lock.entry) {
            sessions.registry.unlock(lock);
            return;
        }
        if let Some(will) = lock.entry.pending_will.take() {
            sessions.system.publish_will(will).await;
            sessions
                .store
                .send(vec![crate::store::Op::Will(client_id.clone(), None)]);
        }
        if expire_at.is_none() {
            lock.entry.timer = false;
        }
        sessions.registry.unlock(lock);
    }
    let Some(at) = expire_at else {
        return;
    };
    tokio::select! {
        _ = tokio::time::sleep_until(at) => {}
        _ = shutdown.wait_for(|s| *s) => return,
    }
    let Ok(_permit) = sessions.registry.timer_links.acquire().await else {
        return;
    };
    let mut lock = sessions.registry.lock(&client_id).await;
    if still_ours(&lock.entry) {
        sessions.end_session(&mut lock).await;
    }
    sessions.registry.unlock(lock);
}
