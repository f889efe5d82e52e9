//! Rate limiting of failed logins, per client address.
//!
//! Each address (an IPv4 address, or the /64 network of an IPv6 one, which one client
//! usually holds whole) may fail `max_failures` times within `window`; past that, its
//! logins are refused with 429 without even checking the password, until the oldest
//! failure leaves the window. Logins still being checked count as failures until they
//! are decided, so a burst of parallel attempts from one address gets no more argon2
//! runs than failures it is allowed.
//!
//! The limit is deliberately not kept per reader id: anyone could then lock a reader out
//! by failing for its id, while guessing one 192-bit password online is hopeless anyway.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Most keys tracked; past this the key whose last failure is oldest is forgotten, so
/// memory stays bounded under a flood from many addresses.
const MAX_KEYS: usize = 10_000;

/// The limit on failed logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimit {
    /// Failures allowed per key within `window`.
    pub max_failures: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Default for LoginLimit {
    fn default() -> Self {
        LoginLimit {
            max_failures: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// The key under which a client address is limited: the IPv4 address itself (also for
/// an IPv4-mapped IPv6 address), or the /64 network of an IPv6 address.
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Failure history, and the attempts being checked.
pub struct Limiter {
    limit: LoginLimit,
    failures: HashMap<String, VecDeque<Instant>>,
    pending: HashMap<String, u32>,
}

impl Limiter {
    /// A limiter enforcing `limit`.
    pub fn new(limit: LoginLimit) -> Limiter {
        Limiter {
            limit,
            failures: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// Starts a login attempt for `key`: `Err(retry_after)` if its recent failures plus
    /// its attempts still being checked reach the limit; otherwise the attempt counts as
    /// pending until [`Limiter::finish`].
    pub fn begin(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        let max = self.limit.max_failures.max(1) as usize;
        let pending = self.pending.get(key).copied().unwrap_or(0) as usize;
        let failed = match self.failures.get_mut(key) {
            Some(times) => {
                prune(times, now, self.limit.window);
                times.len()
            }
            None => 0,
        };
        if failed + pending >= max {
            // Told to come back when the oldest failure leaves the window (or, when only
            // attempts in progress block, in a second, by when they are decided).
            let wait = match self.failures.get(key).and_then(|t| t.front()) {
                Some(oldest) if failed >= max => {
                    (*oldest + self.limit.window).saturating_duration_since(now)
                }
                _ => Duration::from_secs(1),
            };
            return Err(wait.max(Duration::from_secs(1)));
        }
        *self.pending.entry(key.to_owned()).or_default() += 1;
        Ok(())
    }

    /// Ends an attempt started with [`Limiter::begin`]; `failed` records it as a failure.
    pub fn finish(&mut self, key: &str, failed: bool, now: Instant) {
        if let Some(n) = self.pending.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending.remove(key);
            }
        }
        if failed {
            self.failed(key, now);
        }
    }

    fn failed(&mut self, key: &str, now: Instant) {
        if !self.failures.contains_key(key) && self.failures.len() >= MAX_KEYS {
            self.evict(now);
        }
        let times = self.failures.entry(key.to_owned()).or_default();
        prune(times, now, self.limit.window);
        times.push_back(now);
        while times.len() > self.limit.max_failures.max(1) as usize {
            times.pop_front();
        }
    }

    fn evict(&mut self, now: Instant) {
        let window = self.limit.window;
        self.failures.retain(|_, t| {
            prune(t, now, window);
            !t.is_empty()
        });
        if self.failures.len() >= MAX_KEYS {
            let oldest = self
                .failures
                .iter()
                .min_by_key(|(_, t)| t.back().copied())
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.failures.remove(&k);
            }
        }
    }
}

/// Bounds how many password checks (argon2: tens of milliseconds of CPU and 19 MiB of
/// memory each) run at once, whoever asks; the others wait their turn.
#[derive(Clone)]
pub struct PasswordChecks {
    permits: Arc<Semaphore>,
}

impl PasswordChecks {
    /// At most `max` checks at once (at least one).
    pub fn new(max: usize) -> PasswordChecks {
        PasswordChecks {
            permits: Arc::new(Semaphore::new(max.max(1))),
        }
    }

    /// Runs `check` on the blocking thread pool once a place is free. The place goes
    /// with the closure: a caller that stops waiting (a client that hung up) does not free
    /// it while the check still runs. `None` if the check panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            check()
        })
        .await
        .ok()
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_per_minute() -> Limiter {
        Limiter::new(LoginLimit {
            max_failures: 3,
            window: Duration::from_secs(60),
        })
    }

    #[test]
    fn limits_then_recovers() {
        let mut l = three_per_minute();
        let t0 = Instant::now();
        for _ in 0..3 {
            l.begin("ip:a", t0).unwrap();
            l.finish("ip:a", true, t0);
        }
        let wait = l.begin("ip:a", t0).unwrap_err();
        assert!(wait > Duration::from_secs(50), "{wait:?}");
        l.begin("ip:b", t0).unwrap();
        l.finish("ip:b", false, t0);
        l.begin("ip:a", t0 + Duration::from_secs(61)).unwrap();
    }

    #[test]
    fn attempts_in_progress_count_against_the_limit() {
        let mut l = three_per_minute();
        let t0 = Instant::now();
        for _ in 0..3 {
            l.begin("ip:a", t0).unwrap();
        }
        assert_eq!(l.begin("ip:a", t0), Err(Duration::from_secs(1)));
        // A success frees its place; a failure keeps it.
        l.finish("ip:a", false, t0);
        l.begin("ip:a", t0).unwrap();
        l.finish("ip:a", true, t0);
        assert!(l.begin("ip:a", t0).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_checks_run_at_most_max_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let checks = PasswordChecks::new(3);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..24 {
            let (checks, running, peak) = (checks.clone(), running.clone(), peak.clone());
            tasks.spawn(async move {
                checks
                    .run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                    .unwrap();
            });
        }
        while tasks.join_next().await.is_some() {}
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn addresses_are_keyed_by_host_or_ipv6_network() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), "ip:192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "ip:192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
