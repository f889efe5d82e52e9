//! Password authentication: a file of `username:argon2-PHC-hash` lines.
//!
//! Passwords are never stored or logged in clear. Verification is CPU-heavy on purpose,
//! so it runs on the blocking pool behind a small semaphore: a flood of bad logins
//! cannot starve the connection tasks.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Why a password file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Reading or writing the file failed.
    #[error("password file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not `username:hash` with a valid PHC hash.
    #[error("password file {path} line {line}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The user name cannot be stored (empty, or contains `:` or a line break).
    #[error("invalid user name")]
    InvalidUserName,
    /// Hashing failed.
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// Cost of new argon2id hashes.
#[derive(Debug, Clone, Copy)]
pub struct HashCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
}

impl Default for HashCost {
    /// The argon2 crate's defaults (OWASP's minimum: 19 MiB, 2 iterations).
    fn default() -> Self {
        HashCost {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
        }
    }
}

/// Hashes `password` with argon2id and a random salt, in PHC string format.
pub fn hash_password(password: &str, cost: HashCost) -> Result<String, AuthError> {
    let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut salt_bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| AuthError::Hash(e.to_string()))?;
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

fn valid_user_name(user: &str) -> bool {
    !user.is_empty() && !user.contains([':', '\n', '\r'])
}

/// Adds or replaces `user` in the password file at `path` (created if absent).
pub fn add_user(path: &Path, user: &str, password: &str, cost: HashCost) -> Result<(), AuthError> {
    if !valid_user_name(user) {
        return Err(AuthError::InvalidUserName);
    }
    let io = |source| AuthError::Io {
        path: path.display().to_string(),
        source,
    };
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    let hash = hash_password(password, cost)?;
    let mut out = String::new();
    for line in existing.lines() {
        if line.split_once(':').map(|(u, _)| u) == Some(user) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("{user}:{hash}\n"));
    std::fs::write(path, out).map_err(io)
}

/// The loaded password file.
#[derive(Clone)]
pub struct PasswordFile {
    users: Arc<HashMap<String, String>>,
    /// Hash verified against when the user is unknown, so that timing does not reveal
    /// which user names exist.
    decoy: Arc<String>,
    limiter: Arc<Semaphore>,
}

impl std::fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordFile")
            .field("users", &self.users.len())
            .finish()
    }
}

impl PasswordFile {
    /// Loads and checks every line of the file.
    pub fn load(path: &Path) -> Result<PasswordFile, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: &str| AuthError::Format {
                path: path.display().to_string(),
                line: i + 1,
                reason: reason.to_owned(),
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| err("expected user:hash"))?;
            if !valid_user_name(user) {
                return Err(err("invalid user name"));
            }
            PasswordHash::new(hash).map_err(|_| err("not a PHC password hash"))?;
            users.insert(user.to_owned(), hash.to_owned());
        }
        let decoy = match users.values().next() {
            Some(h) => h.clone(),
            None => hash_password("decoy", HashCost::default())?,
        };
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(PasswordFile {
            users: Arc::new(users),
            decoy: Arc::new(decoy),
            limiter: Arc::new(Semaphore::new(workers)),
        })
    }

    /// Checks a user name and password.
    pub async fn verify(&self, user: &str, password: &[u8]) -> bool {
        let Ok(_permit) = self.limiter.acquire().await else {
            return false;
        };
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.clone(), true),
            None => ((*self.decoy).clone(), false),
        };
        let password = password.to_vec();
        let ok = tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                return false;
            };
            Argon2::default()
                .verify_password(&password, &parsed)
                .is_ok()
        })
        .await
        .unwrap_or(false);
        ok && known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: HashCost = HashCost {
        memory_kib: 64,
        iterations: 1,
    };

    #[tokio::test]
    async fn added_users_verify_and_wrong_passwords_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        add_user(&path, "alice", "s3cret", CHEAP).unwrap();
        add_user(&path, "bob", "hunter2", CHEAP).unwrap();
        add_user(&path, "alice", "changed", CHEAP).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret") && !text.contains("changed"));
        assert_eq!(text.lines().count(), 2);
        let f = PasswordFile::load(&path).unwrap();
        assert!(f.verify("alice", b"changed").await);
        assert!(!f.verify("alice", b"s3cret").await);
        assert!(f.verify("bob", b"hunter2").await);
        assert!(!f.verify("carol", b"hunter2").await);
    }

    #[test]
    fn malformed_lines_and_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "alice:plaintext\n").unwrap();
        assert!(matches!(
            PasswordFile::load(&path),
            Err(AuthError::Format { line: 1, .. })
        ));
        assert!(matches!(
            add_user(&path, "a:b", "x", CHEAP),
            Err(AuthError::InvalidUserName)
        ));
    }
}
