//! A token bucket per Huawei Cloud endpoint, bounding the mint rate so that a cluster start, a
//! mass spec change or a retry storm cannot stampede an API.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// `rate` tokens per second, up to `burst` saved up, per key.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `rate` ≤ 0 disables limiting.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until a token for `key` is available and takes it. Waiters are served in the order
    /// they reserved: each reservation moves the bucket into debt instead of polling.
    pub async fn acquire(&self, key: &str) {
        let wait = self.reserve(key, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a token (possibly in advance) and returns how long to wait before using it.
    fn reserve(&self, key: &str, now: Instant) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        // A poisoned lock only means another reservation panicked mid-update; the map is still
        // a valid set of buckets.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let l = RateLimiter::new(10.0, 5);
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.reserve("sts", now), Duration::ZERO);
        }
        // the sixth waits one token (0.1 s), the seventh two
        assert_eq!(l.reserve("sts", now), Duration::from_millis(100));
        assert_eq!(l.reserve("sts", now), Duration::from_millis(200));
        // buckets are per endpoint
        assert_eq!(l.reserve("portal", now), Duration::ZERO);
    }

    #[test]
    fn tokens_refill_over_time_up_to_the_burst() {
        let l = RateLimiter::new(10.0, 2);
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
        let l = RateLimiter::new(0.0, 1);
        for _ in 0..100 {
            assert_eq!(l.reserve("sts", Instant::now()), Duration::ZERO);
        }
    }
}
