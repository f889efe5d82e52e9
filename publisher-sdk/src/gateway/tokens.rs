//! Bearer tokens of the REST gateway: random 256-bit secrets, shown once when issued,
//! stored only as SHA-256 hashes (a token is a high-entropy random secret, so a fast
//! hash suffices, as for the KDC's tokens) with a name, the topic filters it may publish
//! to, and whether it may manage readers. The file (`<state dir>/gateway.tokens`, JSON,
//! mode 0600) is replaced atomically; a running gateway re-reads it when it changes.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use rand::RngCore;
use sealpost_certs::topic::{filter_matches, validate_filter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File name of the token store inside the state directory.
pub const TOKENS_FILE: &str = "gateway.tokens";

/// One issued token, as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// A name for operators and logs.
    pub name: String,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// Topic filters this token may publish to.
    pub topics: Vec<String>,
    /// May grant, revoke and list readers.
    pub operator: bool,
}

impl TokenEntry {
    /// May this token publish to `topic`?
    pub fn may_publish(&self, topic: &str) -> bool {
        self.topics.iter().any(|f| filter_matches(f, topic))
    }
}

/// Why a token operation failed. Never contains a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The store could not be read or written.
    #[error("gateway token file {path}: {detail}")]
    Store {
        /// File.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// Bad name or topic filter.
    #[error("invalid token request: {0}")]
    Invalid(String),
    /// No token of that name.
    #[error("no token named {0:?}")]
    Unknown(String),
}

/// The token file of a state directory.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    entries: Vec<TokenEntry>,
    modified: Option<SystemTime>,
}

fn hash(token: &str) -> String {
    hex_lower(&Sha256::digest(token.as_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TokenStore {
    /// Opens (or starts) the store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<TokenStore, TokenError> {
        let mut store = TokenStore {
            path: state_dir.join(TOKENS_FILE),
            entries: Vec::new(),
            modified: None,
        };
        store.reload()?;
        Ok(store)
    }

    fn err(&self, detail: impl std::fmt::Display) -> TokenError {
        TokenError::Store {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }

    /// Reads the file again if it changed since it was last read.
    pub fn reload(&mut self) -> Result<(), TokenError> {
        let modified = match fs::metadata(&self.path) {
            Ok(m) => m.modified().ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.entries.clear();
                self.modified = None;
                return Ok(());
            }
            Err(e) => return Err(self.err(e)),
        };
        if modified.is_some() && modified == self.modified {
            return Ok(());
        }
        let text = fs::read_to_string(&self.path).map_err(|e| self.err(e))?;
        self.entries = serde_json::from_str(&text).map_err(|e| self.err(e))?;
        self.modified = modified;
        Ok(())
    }

    /// The entry of `token`, if it is a live token.
    pub fn authenticate(&self, token: &str) -> Option<&TokenEntry> {
        let h = hash(token);
        self.entries.iter().find(|e| e.sha256 == h)
    }

    /// Issued tokens (names, scopes; never the secrets).
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// Issues a new token named `name` (replacing one of the same name) and returns it:
    /// the only time it is ever shown.
    pub fn issue(
        &mut self,
        name: &str,
        topics: &[String],
        operator: bool,
    ) -> Result<String, TokenError> {
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err(TokenError::Invalid(format!("bad name {name:?}")));
        }
        if let Some(bad) = topics.iter().find(|f| !validate_filter(f)) {
            return Err(TokenError::Invalid(format!("bad topic filter {bad:?}")));
        }
        if topics.is_empty() && !operator {
            return Err(TokenError::Invalid(
                "a token needs topics to publish to, or --operator".into(),
            ));
        }
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        self.reload()?;
        self.entries.retain(|e| e.name != name);
        self.entries.push(TokenEntry {
            name: name.to_owned(),
            sha256: hash(&token),
            topics: topics.to_vec(),
            operator,
        });
        self.save()?;
        Ok(token)
    }

    /// Revokes the token named `name`.
    pub fn revoke(&mut self, name: &str) -> Result<(), TokenError> {
        self.reload()?;
        let before = self.entries.len();
        self.entries.retain(|e| e.name != name);
        if self.entries.len() == before {
            return Err(TokenError::Unknown(name.to_owned()));
        }
        self.save()
    }

    fn save(&mut self) -> Result<(), TokenError> {
        let text = serde_json::to_vec_pretty(&self.entries).map_err(|e| self.err(e))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        sealpost_client::files::write_atomically(dir, TOKENS_FILE, &text)
            .map_err(|e| self.err(e))?;
        self.modified = fs::metadata(&self.path)
            .ok()
            .and_then(|m| m.modified().ok());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_scoped_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TokenStore::open(dir.path()).unwrap();
        let token = store.issue("backend", &["push/#".into()], false).unwrap();
        let text = fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!text.contains(&token), "the token itself is never stored");
        let again = TokenStore::open(dir.path()).unwrap();
        let entry = again.authenticate(&token).expect("a live token");
        assert!(entry.may_publish("push/alice"));
        assert!(!entry.may_publish("other/alice"));
        assert!(again.authenticate("not-a-token").is_none());
        store.revoke("backend").unwrap();
        assert!(TokenStore::open(dir.path())
            .unwrap()
            .authenticate(&token)
            .is_none());
        assert!(matches!(
            store.revoke("backend"),
            Err(TokenError::Unknown(_))
        ));
        assert!(store.issue("x", &["a/#/b".into()], false).is_err());
        assert!(store.issue("no scope", &["a".into()], false).is_err());
        assert!(store.issue("nothing", &[], false).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(TOKENS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
