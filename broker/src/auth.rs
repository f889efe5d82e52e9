//! Password authentication: a file of `username:argon2-PHC-hash` lines.
//!
//! Passwords are never stored or logged in clear. Verification is CPU-heavy on purpose,
//! so it runs on the blocking pool behind a small semaphore: a flood of bad logins
//! cannot starve the connection tasks. Failed logins are counted per client address
//! ([`LoginLimiter`]): an address that failed too often recently is refused without its
//! password being checked, so that passwords cannot be guessed at the speed of argon2.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    write_private(path, out.as_bytes()).map_err(io)
}

/// Replaces `path` atomically by a file only its owner may read (0600 on Unix): the
/// hashes are slow to crack, but an offline attempt needs a copy, so none is handed out.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    // A file left by an earlier run keeps its mode through `open`: set it again.
    #[cfg(unix)]
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The outcome of a password login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// The user exists and the password is right.
    Accepted,
    /// Unknown user or wrong password.
    Refused,
    /// Not checked: the client's address failed too many logins recently.
    Throttled,
}

/// How many failed logins an address may have in a window (see [`LoginLimiter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failed logins for one user name from one address.
    pub per_user: u32,
    /// Failed logins from one address, all user names together.
    pub per_address: u32,
    /// How long failures are remembered, from an address's first failure.
    pub window: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            per_user: 5,
            per_address: 20,
            window: Duration::from_secs(60),
        }
    }
}

/// Addresses tracked at most; beyond, those whose window ended are forgotten first,
/// then the oldest. Each costs at most a few hundred bytes (user names are kept as
/// hashes), so the limiter stays within a few MiB whatever the attack.
const MAX_TRACKED: usize = 16_384;

/// Failed password logins by client address (IPv6 addresses by their /64, which one
/// host usually has all of), and by user name within each address.
///
/// Keyed on the address rather than on the user name alone, so that nobody can lock a
/// user out from elsewhere; the per-address total stops one address from trying many
/// user names. An attempt counts as failed from the moment it starts until its password
/// is found right, so parallel attempts cannot all pass before the first failure is
/// recorded.
#[derive(Debug)]
pub struct LoginLimiter {
    limits: LoginLimits,
    hasher: RandomState,
    by_address: Mutex<HashMap<u128, Failures>>,
}

#[derive(Debug)]
struct Failures {
    since: Instant,
    total: u32,
    /// (hash of the user name, failures); at most `per_address` entries, since each
    /// counts at least one failure of the total.
    users: Vec<(u64, u32)>,
}

impl LoginLimiter {
    /// A limiter with these limits.
    pub fn new(limits: LoginLimits) -> LoginLimiter {
        LoginLimiter {
            limits,
            hasher: RandomState::new(),
            by_address: Mutex::new(HashMap::new()),
        }
    }

    fn key(addr: IpAddr) -> u128 {
        match addr.to_canonical() {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            // The /64, tagged so that it cannot equal an IPv4 key.
            IpAddr::V6(a) => (u128::from(a) >> 64) | (1 << 127),
        }
    }

    /// Starts an attempt: false if `addr` (or `user` from it) failed too often in the
    /// window. A started attempt counts as a failure until [`LoginLimiter::succeeded`].
    pub fn begin(&self, addr: IpAddr, user: &str, now: Instant) -> bool {
        let key = Self::key(addr);
        let user = self.hasher.hash_one(user);
        let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&key) && map.len() >= MAX_TRACKED {
            let window = self.limits.window;
            map.retain(|_, f| now.duration_since(f.since) < window);
            if map.len() >= MAX_TRACKED {
                // The oldest eighth goes at once, so that a flood of new addresses
                // costs one sort per thousands of logins, not a scan per login.
                let mut ages: Vec<(Instant, u128)> =
                    map.iter().map(|(k, f)| (f.since, *k)).collect();
                let cut = MAX_TRACKED / 8;
                ages.select_nth_unstable(cut);
                for (_, k) in &ages[..cut] {
                    map.remove(k);
                }
            }
        }
        let f = map.entry(key).or_insert_with(|| Failures {
            since: now,
            total: 0,
            users: Vec::new(),
        });
        if now.duration_since(f.since) >= self.limits.window {
            *f = Failures {
                since: now,
                total: 0,
                users: Vec::new(),
            };
        }
        let of_user = f
            .users
            .iter()
            .find(|(u, _)| *u == user)
            .map_or(0, |(_, n)| *n);
        if f.total >= self.limits.per_address || of_user >= self.limits.per_user {
            return false;
        }
        f.total += 1;
        match f.users.iter_mut().find(|(u, _)| *u == user) {
            Some((_, n)) => *n += 1,
            None => f.users.push((user, 1)),
        }
        true
    }

    /// The attempt begun for `user` from `addr` was right: it is not a failure.
    pub fn succeeded(&self, addr: IpAddr, user: &str) {
        let key = Self::key(addr);
        let user = self.hasher.hash_one(user);
        let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = map.get_mut(&key) {
            f.total = f.total.saturating_sub(1);
            if let Some((_, n)) = f.users.iter_mut().find(|(u, _)| *u == user) {
                *n = n.saturating_sub(1);
            }
            f.users.retain(|(_, n)| *n > 0);
            if f.total == 0 {
                map.remove(&key);
            }
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.by_address
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// The loaded password file.
#[derive(Clone)]
pub struct PasswordFile {
    users: Arc<HashMap<String, String>>,
    /// Hash verified against when the user is unknown, so that timing does not reveal
    /// which user names exist.
    decoy: Arc<String>,
    limiter: Arc<Semaphore>,
    failures: Arc<LoginLimiter>,
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
            failures: Arc::new(LoginLimiter::new(LoginLimits::default())),
        })
    }

    /// The same file with these failed-login limits.
    pub fn with_login_limits(mut self, limits: LoginLimits) -> PasswordFile {
        self.failures = Arc::new(LoginLimiter::new(limits));
        self
    }

    /// A login from `addr` (`None`: unknown, counted as one address): refused without
    /// checking the password when the address failed too often recently, otherwise
    /// [`PasswordFile::verify`].
    pub async fn login(&self, addr: Option<IpAddr>, user: &str, password: &[u8]) -> Login {
        let addr = addr.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        if !self.failures.begin(addr, user, Instant::now()) {
            return Login::Throttled;
        }
        if self.verify(user, password).await {
            self.failures.succeeded(addr, user);
            Login::Accepted
        } else {
            Login::Refused
        }
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

    #[cfg(unix)]
    #[test]
    fn the_password_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        // Also when the file existed before with a wider mode.
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        add_user(&path, "alice", "s3cret", CHEAP).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("alice:"));
    }

    #[test]
    fn failures_are_limited_per_user_and_per_address_within_the_window() {
        let limits = LoginLimits {
            per_user: 2,
            per_address: 3,
            window: Duration::from_secs(60),
        };
        let l = LoginLimiter::new(limits);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let t = Instant::now();
        assert!(l.begin(a, "alice", t) && l.begin(a, "alice", t));
        assert!(!l.begin(a, "alice", t), "third failure for alice");
        assert!(l.begin(a, "bob", t));
        assert!(!l.begin(a, "carol", t), "fourth failure from the address");
        // Another address is not affected, nor is an IPv6 host in another /64; the
        // same /64 is one address.
        assert!(l.begin("192.0.2.2".parse().unwrap(), "alice", t));
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        for i in 0..3 {
            assert!(l.begin(v6(&format!("2001:db8::{i}")), &format!("user{i}"), t));
        }
        assert!(!l.begin(v6("2001:db8::ffff"), "y", t));
        assert!(l.begin(v6("2001:db8:0:1::1"), "y", t));
        // A success takes its attempt back; the window's end forgets the rest.
        l.succeeded(a, "bob");
        assert!(l.begin(a, "dave", t));
        assert!(l.begin(a, "alice", t + limits.window));
    }

    #[test]
    fn the_limiter_tracks_a_bounded_number_of_addresses() {
        let l = LoginLimiter::new(LoginLimits::default());
        let t = Instant::now();
        for i in 0..(MAX_TRACKED as u32 * 2) {
            l.begin(IpAddr::V4(i.into()), "u", t);
        }
        assert!(l.tracked() <= MAX_TRACKED);
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
