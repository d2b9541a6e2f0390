//! What keeps one object from hurting the others: a reconcile that panics becomes an error of
//! that object (never a process exit), and reconcile errors back off per object instead of
//! retrying every few seconds. One namespace's share of the reconcile slots is
//! [`super::namespace_gate`]'s.

use std::{
    any::Any,
    collections::HashMap,
    future::Future,
    hash::{Hash, Hasher},
    panic::AssertUnwindSafe,
    sync::Mutex,
    time::Duration,
};

use futures::FutureExt;

/// Runs `fut`, turning a panic inside it into `Err` with the panic's message. kube-runtime
/// re-raises a reconcile's panic on the task that drives the controller, which ends the process
/// for every tenant; contained here, the panic is one object's error.
pub async fn contained<T>(fut: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(fut).catch_unwind().await.map_err(panic_message)
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Per-object backoff for reconcile errors (the API server failing or refusing a write): 5 s,
/// doubling per consecutive error up to 5 minutes, with a stable jitter of up to a fifth.
#[derive(Default)]
pub struct ErrorBackoff(Mutex<HashMap<String, u32>>);

const FIRST_RETRY: Duration = Duration::from_secs(5);
const LONGEST_RETRY: Duration = Duration::from_secs(300);

impl ErrorBackoff {
    /// Records one more consecutive error of `key` and returns how long to wait.
    pub fn failed(&self, key: &str) -> Duration {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        error_delay(key, *n)
    }

    /// `key` reconciled cleanly: its next error starts from the first delay again.
    pub fn succeeded(&self, key: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(key);
    }
}

/// The wait after the `attempt`th consecutive error of `key` (1-based).
pub fn error_delay(key: &str, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    let base = FIRST_RETRY.saturating_mul(1u32 << exp).min(LONGEST_RETRY);
    let jitter_ms = u64::try_from(base.as_millis() / 5).unwrap_or(0);
    let jitter = if jitter_ms == 0 {
        0
    } else {
        spread(key, attempt) % jitter_ms
    };
    base + Duration::from_millis(jitter)
}

/// A stable spread of `key` (with `salt`), for jitter that differs per object.
pub fn spread(key: &str, salt: u32) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    salt.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_with_its_message() {
        let out = contained(async {
            if out_of_range(3) {
                panic!("index 3 out of range");
            }
            0
        })
        .await;
        let message = out.expect_err("the panic is contained");
        assert!(message.contains("out of range"), "{message}");
        assert_eq!(contained(async { 7 }).await, Ok(7));
    }

    fn out_of_range(i: usize) -> bool {
        i > 2
    }

    #[tokio::test]
    async fn a_timestamp_overflow_panic_is_contained() {
        let out = contained(async { jiff::Timestamp::MIN - jiff::SignedDuration::from_secs(600) }).await;
        assert!(out.is_err());
    }

    #[test]
    fn errors_back_off_and_a_success_resets() {
        let b = ErrorBackoff::default();
        let d1 = b.failed("ns/a");
        let d2 = b.failed("ns/a");
        let d3 = b.failed("ns/a");
        assert!(d1 >= FIRST_RETRY && d1 < FIRST_RETRY * 2, "{d1:?}");
        assert!(d2 > d1 && d3 > d2, "{d1:?} {d2:?} {d3:?}");
        b.succeeded("ns/a");
        assert!(b.failed("ns/a") < FIRST_RETRY * 2);
        assert!(
            b.failed("ns/other") < FIRST_RETRY * 2,
            "objects back off separately"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn error_delays_stay_between_five_seconds_and_six_minutes(key in ".{0,40}", attempt in any::<u32>()) {
            let d = error_delay(&key, attempt);
            prop_assert!(d >= FIRST_RETRY);
            prop_assert!(d <= LONGEST_RETRY + LONGEST_RETRY / 5);
        }
    }
}
