//! Persisting the replay window, so a restarted subscriber does not deliver again what
//! it already delivered (retained messages, QoS 1 redelivery after a reconnect).

use std::path::{Path, PathBuf};

use sealpost_protocol::ReplayState;

use crate::SubscriberError;

/// File name of the replay window inside the state directory.
pub(crate) const REPLAY_FILE: &str = "replay.state";

/// Where (if anywhere) the replay window lives.
pub(crate) struct ReplayStore {
    dir: Option<PathBuf>,
}

impl ReplayStore {
    pub fn new(dir: Option<PathBuf>) -> ReplayStore {
        ReplayStore { dir }
    }

    pub fn load(&self) -> Result<ReplayState, SubscriberError> {
        let Some(dir) = &self.dir else {
            return Ok(ReplayState::default());
        };
        let path = dir.join(REPLAY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => ReplayState::from_bytes(&bytes).map_err(|e| state_err(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ReplayState::default()),
            Err(e) => Err(state_err(&path, e)),
        }
    }

    pub fn save(&self, state: &ReplayState) -> Result<(), SubscriberError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        sealpost_publisher::state::write_atomically(dir, REPLAY_FILE, &state.to_bytes()).map_err(
            |e| SubscriberError::State {
                path: dir.join(REPLAY_FILE),
                detail: e.to_string(),
            },
        )
    }
}

fn state_err(path: &Path, e: impl std::fmt::Display) -> SubscriberError {
    SubscriberError::State {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}
