//! Token buckets bounding the mint rate: one per Huawei Cloud host (`host:port`), so that a
//! cluster start, a mass spec change or a retry storm cannot stampede an API, and one across all
//! hosts, so that many hosts together cannot either. A tenant naming many URLs of one host, or
//! many hosts, gets no extra budget.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use url::Url;

/// Most per-host buckets kept; beyond it, idle (full) buckets and then the longest-unused ones go.
pub const MAX_HOSTS: usize = 1024;

/// `rate` tokens per second, up to `burst` saved up.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// ≤ 0 (or NaN) disables the limit.
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }

    /// Whether the rate limits anything (a rate ≤ 0 or NaN disables it).
    pub fn limited(self) -> bool {
        self.per_second.is_finite() && self.per_second > 0.0
    }

    fn burst(self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

/// A bucket per host plus a global one; a mint takes a token from both.
#[derive(Debug)]
pub struct RateLimiter {
    per_host: Rate,
    total: Rate,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    hosts: HashMap<String, Bucket>,
    total: Option<Bucket>,
}

/// One token bucket; the rate is passed in, so the bucket is only its level and time. Shared
/// with the credentials endpoint's limits (`podidentity::limits`), which refuse instead of waiting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(crate) fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst(),
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst());
        self.at = now;
    }

    /// Refills to `now`, takes a token (possibly in advance) and returns the wait before using it.
    fn take(&mut self, rate: Rate, now: Instant) -> Duration {
        self.refill(rate, now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(-self.tokens / rate.per_second).unwrap_or(Duration::MAX)
        }
    }

    /// Refills to `now` and takes a token if one is there, never in advance.
    pub(crate) fn try_take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When a token was last taken (or the bucket made).
    pub(crate) fn last_used(&self) -> Instant {
        self.at
    }

    /// Whether the bucket would be full by `now`: forgetting it changes nothing.
    pub(crate) fn idle(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= rate.burst()
    }
}

/// The rate-limit key of an endpoint: its `host:port`, lower-cased (default port filled in).
pub fn host_key(endpoint: &Url) -> String {
    let host = endpoint.host_str().unwrap_or_default().to_ascii_lowercase();
    match endpoint.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

impl RateLimiter {
    /// `per_host` for each host, `total` across all hosts; a rate ≤ 0 disables that limit.
    pub fn new(per_host: Rate, total: Rate) -> Self {
        Self {
            per_host,
            total,
            state: Mutex::default(),
        }
    }

    /// Waits until a token for `endpoint`'s host and a global token are available and takes
    /// them. Waiters are served in the order they reserved: each reservation moves the buckets
    /// into debt instead of polling.
    pub async fn acquire(&self, endpoint: &Url) {
        let wait = self.reserve(&host_key(endpoint), Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a token from `key`'s bucket and the global one (possibly in advance) and returns how
    /// long to wait before using them.
    fn reserve(&self, key: &str, now: Instant) -> Duration {
        // A poisoned lock only means another reservation panicked mid-update; the buckets are
        // still valid.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = Duration::ZERO;
        if self.total.limited() {
            let total = self.total;
            let b = state.total.get_or_insert_with(|| Bucket::full(total, now));
            wait = wait.max(b.take(total, now));
        }
        if self.per_host.limited() {
            if !state.hosts.contains_key(key) && state.hosts.len() >= MAX_HOSTS {
                evict(&mut state.hosts, self.per_host, now);
            }
            let rate = self.per_host;
            let b = state
                .hosts
                .entry(key.to_owned())
                .or_insert_with(|| Bucket::full(rate, now));
            wait = wait.max(b.take(rate, now));
        }
        wait
    }

    #[cfg(test)]
    fn hosts(&self) -> usize {
        self.state.lock().map(|s| s.hosts.len()).unwrap_or_default()
    }
}

/// Makes room for one more bucket: drops every idle bucket, or else the longest-unused one.
fn evict(hosts: &mut HashMap<String, Bucket>, rate: Rate, now: Instant) {
    hosts.retain(|_, b| !b.idle(rate, now));
    if hosts.len() >= MAX_HOSTS
        && let Some(oldest) = hosts.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| k.clone())
    {
        hosts.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFF: Rate = Rate {
        per_second: 0.0,
        burst: 1,
    };

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let l = RateLimiter::new(Rate::new(10.0, 5), OFF);
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.reserve("sts", now), Duration::ZERO);
        }
        // the sixth waits one token (0.1 s), the seventh two
        assert_eq!(l.reserve("sts", now), Duration::from_millis(100));
        assert_eq!(l.reserve("sts", now), Duration::from_millis(200));
        // buckets are per host
        assert_eq!(l.reserve("portal", now), Duration::ZERO);
    }

    #[test]
    fn tokens_refill_over_time_up_to_the_burst() {
        let l = RateLimiter::new(Rate::new(10.0, 2), OFF);
        let t0 = Instant::now();
        l.reserve("sts", t0);
        l.reserve("sts", t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(l.reserve("sts", later), Duration::ZERO);
        assert_eq!(l.reserve("sts", later), Duration::ZERO);
        assert!(l.reserve("sts", later) > Duration::ZERO);
    }

    #[test]
    fn a_zero_rate_disables_limiting() {
        let l = RateLimiter::new(OFF, OFF);
        for _ in 0..100 {
            assert_eq!(l.reserve("sts", Instant::now()), Duration::ZERO);
        }
        let nan = RateLimiter::new(Rate::new(f64::NAN, 1), Rate::new(-1.0, 1));
        assert_eq!(nan.reserve("sts", Instant::now()), Duration::ZERO);
    }

    #[test]
    fn every_url_of_one_host_shares_one_bucket() {
        let keys: Vec<String> = [
            "https://evil.example.com/a",
            "https://EVIL.example.com/b/c/",
            "https://evil.example.com:443/d",
        ]
        .iter()
        .map(|u| host_key(&url(u)))
        .collect();
        assert!(keys.iter().all(|k| k == "evil.example.com:443"), "{keys:?}");
        assert_eq!(host_key(&url("http://127.0.0.1:8080/x")), "127.0.0.1:8080");
        assert_eq!(host_key(&url("http://[::1]:9/")), "[::1]:9");
        assert_ne!(
            host_key(&url("https://evil.example.com:8443/")),
            host_key(&url("https://evil.example.com/"))
        );
    }

    #[test]
    fn the_global_bucket_caps_all_hosts_together() {
        let l = RateLimiter::new(Rate::new(100.0, 100), Rate::new(10.0, 3));
        let now = Instant::now();
        assert_eq!(l.reserve("a:443", now), Duration::ZERO);
        assert_eq!(l.reserve("b:443", now), Duration::ZERO);
        assert_eq!(l.reserve("c:443", now), Duration::ZERO);
        // a fresh host still waits for the global bucket
        assert_eq!(l.reserve("d:443", now), Duration::from_millis(100));
        // and a host's own limit still applies under a generous global one
        let l = RateLimiter::new(Rate::new(10.0, 1), Rate::new(1000.0, 1000));
        assert_eq!(l.reserve("a:443", now), Duration::ZERO);
        assert_eq!(l.reserve("a:443", now), Duration::from_millis(100));
    }

    #[test]
    fn the_bucket_map_stays_bounded_however_many_hosts_are_named() {
        let l = RateLimiter::new(Rate::new(1.0, 1), OFF);
        let t0 = Instant::now();
        for i in 0..MAX_HOSTS * 3 {
            l.reserve(&format!("h{i}:443"), t0 + Duration::from_millis(i as u64));
            assert!(l.hosts() <= MAX_HOSTS, "{}", l.hosts());
        }

        let l = RateLimiter::new(Rate::new(1.0, 1), OFF);
        for i in 0..MAX_HOSTS {
            l.reserve(&format!("h{i}:443"), t0);
        }
        // every bucket is in use: the longest-unused one makes room
        l.reserve("extra:443", t0);
        assert_eq!(l.hosts(), MAX_HOSTS);
        // an hour later every bucket is full again (idle), so all of them go at once
        l.reserve("late:443", t0 + Duration::from_secs(3600));
        assert_eq!(l.hosts(), 1);
    }
}
