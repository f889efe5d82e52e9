//! Short-lived bearer tokens handed out at login.
//!
//! Tokens are 32 random bytes (base64url). Only their SHA-256 is kept, in memory: a
//! restart of the KDC invalidates every token (clients log in again), and a memory dump
//! does not yield usable tokens.
//!
//! Each token is bound to the credentials it was issued under (a digest of the reader's
//! password hash, which changes with every issue): once a reader's credentials are issued
//! again, by this process or another one (`sealpost-pub kdc add-reader`), its older tokens
//! no longer match and are refused.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use base64::Engine;
use sha2::{Digest, Sha256};

/// Most live tokens one reader may hold; logging in again past this drops the oldest.
const MAX_TOKENS_PER_READER: usize = 8;
/// Expired tokens are remembered this long, so a late request is told "expired"
/// rather than "invalid".
const REMEMBER_EXPIRED: Duration = Duration::from_secs(600);

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Unknown, malformed, or invalidated by a revocation.
    Invalid,
    /// Was valid, has expired.
    Expired,
}

struct Entry {
    reader: String,
    credential: [u8; 32],
    issued: Instant,
    expires: Instant,
}

/// The live tokens.
pub struct Tokens {
    lifetime: Duration,
    live: HashMap<[u8; 32], Entry>,
}

impl Tokens {
    /// Tokens valid for `lifetime` each.
    pub fn new(lifetime: Duration) -> Tokens {
        Tokens {
            lifetime,
            live: HashMap::new(),
        }
    }

    /// Token lifetime.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A new token for `reader`, logged in with the credentials whose password hash is
    /// `password_hash`.
    pub fn issue(&mut self, reader: &str, password_hash: &str, now: Instant) -> String {
        self.live
            .retain(|_, e| now.saturating_duration_since(e.expires) < REMEMBER_EXPIRED);
        let mut mine: Vec<([u8; 32], Instant)> = self
            .live
            .iter()
            .filter(|(_, e)| e.reader == reader)
            .map(|(h, e)| (*h, e.issued))
            .collect();
        if mine.len() >= MAX_TOKENS_PER_READER {
            mine.sort_by_key(|(_, issued)| *issued);
            for (hash, _) in &mine[..=mine.len() - MAX_TOKENS_PER_READER] {
                self.live.remove(hash);
            }
        }
        let mut raw = [0u8; 32];
        OsRng.fill_bytes(&mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        self.live.insert(
            digest(&token),
            Entry {
                reader: reader.to_owned(),
                credential: digest(password_hash),
                issued: now,
                expires: now + self.lifetime,
            },
        );
        token
    }

    /// The reader a token belongs to, if it is live.
    pub fn check(&self, token: &str, now: Instant) -> Result<TokenOwner, TokenRefusal> {
        let entry = self.live.get(&digest(token)).ok_or(TokenRefusal::Invalid)?;
        if now >= entry.expires {
            return Err(TokenRefusal::Expired);
        }
        Ok(TokenOwner {
            reader: entry.reader.clone(),
            credential: entry.credential,
        })
    }

    /// Invalidates every token of `reader` (on revocation or re-issue).
    pub fn revoke_reader(&mut self, reader: &str) {
        self.live.retain(|_, e| e.reader != reader);
    }
}

/// Who a live token was issued to, and under which credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    /// The reader id.
    pub reader: String,
    credential: [u8; 32],
}

impl TokenOwner {
    /// Were the credentials whose password hash is `password_hash` the ones this token
    /// was issued under? False once the reader's credentials were issued again.
    pub fn issued_under(&self, password_hash: &str) -> bool {
        self.credential == digest(password_hash)
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_are_revoked() {
        let mut t = Tokens::new(Duration::from_secs(60));
        let start = Instant::now();
        let a = t.issue("alice", "hash-a", start);
        let b = t.issue("bob", "hash-b", start);
        let owner = t.check(&a, start).unwrap();
        assert_eq!(owner.reader, "alice");
        assert!(owner.issued_under("hash-a"));
        assert!(!owner.issued_under("hash-a2"), "re-issued credentials");
        assert_eq!(
            t.check(&a, start + Duration::from_secs(61)),
            Err(TokenRefusal::Expired)
        );
        assert_eq!(t.check("nonsense", start), Err(TokenRefusal::Invalid));
        t.revoke_reader("bob");
        assert_eq!(t.check(&b, start), Err(TokenRefusal::Invalid));
        for _ in 0..20 {
            t.issue("alice", "hash-a", start);
        }
        assert!(t.live.len() <= MAX_TOKENS_PER_READER);
    }
}
