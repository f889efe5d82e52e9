//! Rate limiting of failed logins, per client address and per reader id.
//!
//! Each key (an address, a reader id) may fail `max_failures` times within `window`;
//! past that, logins for that key are refused with 429 without even checking the
//! password, until the oldest failure leaves the window. This stops online guessing and
//! keeps a flood of logins from burning CPU on argon2.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

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

/// Failure history.
pub struct Limiter {
    limit: LoginLimit,
    failures: HashMap<String, VecDeque<Instant>>,
}

impl Limiter {
    /// A limiter enforcing `limit`.
    pub fn new(limit: LoginLimit) -> Limiter {
        Limiter {
            limit,
            failures: HashMap::new(),
        }
    }

    /// `Err(retry_after)` if any key is over its limit.
    pub fn check(&mut self, keys: &[&str], now: Instant) -> Result<(), Duration> {
        let mut wait = None::<Duration>;
        for key in keys {
            let Some(times) = self.failures.get_mut(*key) else {
                continue;
            };
            prune(times, now, self.limit.window);
            if times.len() >= self.limit.max_failures.max(1) as usize {
                let oldest = times.front().copied().unwrap_or(now);
                let until = (oldest + self.limit.window).saturating_duration_since(now);
                wait = Some(wait.map_or(until, |w| w.max(until)));
            }
        }
        match wait {
            Some(w) => Err(w.max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    /// Records a failed login for every key.
    pub fn failed(&mut self, keys: &[&str], now: Instant) {
        for key in keys {
            if !self.failures.contains_key(*key) && self.failures.len() >= MAX_KEYS {
                self.evict(now);
            }
            let times = self.failures.entry((*key).to_owned()).or_default();
            prune(times, now, self.limit.window);
            times.push_back(now);
            while times.len() > self.limit.max_failures.max(1) as usize {
                times.pop_front();
            }
        }
    }

    /// Forgets the failures of `key` (after a successful login for that reader).
    pub fn succeeded(&mut self, key: &str) {
        self.failures.remove(key);
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

    #[test]
    fn limits_then_recovers() {
        let mut l = Limiter::new(LoginLimit {
            max_failures: 3,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check(&["ip:a", "reader:x"], t0).is_ok());
            l.failed(&["ip:a", "reader:x"], t0);
        }
        assert!(l.check(&["ip:a"], t0).is_err());
        assert!(l.check(&["ip:b", "reader:x"], t0).is_err());
        assert!(l.check(&["ip:b", "reader:y"], t0).is_ok());
        assert!(l.check(&["ip:a"], t0 + Duration::from_secs(61)).is_ok());
    }
}
