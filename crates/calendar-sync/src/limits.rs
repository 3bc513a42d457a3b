//! Staying under Google's quotas instead of bouncing off them: a per-connection
//! rate limiter (Google counts 600 requests/min per user), a per-project budget
//! (10,000/min, divided among the worker processes), and a circuit breaker per
//! connection that pauses a connection after repeated retryable failures while
//! other workspaces proceed.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Requests per minute allowed through one process.
pub(crate) struct Limits {
    project: DefaultDirectRateLimiter,
    per_connection: DefaultKeyedRateLimiter<String>,
}

impl Limits {
    /// `per_connection` and `project` are requests per minute; the burst stays
    /// small so that no sliding one-minute window ever exceeds the rate by more
    /// than the burst.
    pub fn new(per_connection: u32, project: u32) -> Self {
        Self {
            project: RateLimiter::direct(quota(project)),
            per_connection: RateLimiter::keyed(quota(per_connection)),
        }
    }

    /// Waits until one more request of this connection fits both budgets.
    pub async fn until_ready(&self, connection: &str) {
        self.per_connection
            .until_key_ready(&connection.to_owned())
            .await;
        self.project.until_ready().await;
    }
}

/// A rate of `per_minute - burst` with a burst of `burst`: a bucket that
/// starts full lets `burst` requests through at once and then `rate` a minute,
/// so no one-minute window (Google's are sliding) ever holds more than
/// `per_minute`.
fn quota(per_minute: u32) -> Quota {
    let per_minute = per_minute.max(2);
    let burst = (per_minute / 60).clamp(1, 100);
    let rate = NonZeroU32::new(per_minute - burst).expect("non-zero");
    Quota::per_minute(rate).allow_burst(NonZeroU32::new(burst).expect("non-zero"))
}

/// Per-connection circuit breakers.
pub(crate) struct Breakers {
    threshold: u32,
    cool_down: Duration,
    state: Mutex<HashMap<String, Breaker>>,
}

#[derive(Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

impl Breakers {
    /// Opens a connection's breaker after `threshold` consecutive retryable
    /// failures, for `cool_down`.
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cool_down,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// How long the connection's breaker stays open, if it is open.
    pub fn open_for(&self, connection: &str) -> Option<Duration> {
        let state = self.state.lock().expect("breaker state");
        let until = state.get(connection)?.open_until?;
        until.checked_duration_since(Instant::now())
    }

    /// Records a call's result: success closes the breaker; a retryable failure
    /// counts towards opening it. Returns true when this failure opened it.
    pub fn record(&self, connection: &str, retryable_failure: bool) -> bool {
        let mut state = self.state.lock().expect("breaker state");
        let breaker = state.entry(connection.to_owned()).or_default();
        if !retryable_failure {
            *breaker = Breaker::default();
            return false;
        }
        breaker.consecutive_failures += 1;
        if breaker.consecutive_failures >= self.threshold {
            breaker.consecutive_failures = 0;
            breaker.open_until = Some(Instant::now() + self.cool_down);
            return true;
        }
        false
    }

    /// Connections whose breaker is open now (for metrics and status).
    pub fn open_connections(&self) -> Vec<String> {
        let now = Instant::now();
        let state = self.state.lock().expect("breaker state");
        state
            .iter()
            .filter(|(_, b)| b.open_until.is_some_and(|u| u > now))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_success_resets() {
        let b = Breakers::new(3, Duration::from_secs(60));
        assert!(!b.record("w", true));
        assert!(!b.record("w", true));
        assert!(!b.record("w", false), "a success resets the count");
        assert!(!b.record("w", true));
        assert!(!b.record("w", true));
        assert!(b.record("w", true));
        assert!(b.open_for("w").is_some());
        assert!(b.open_for("other").is_none());
        assert_eq!(b.open_connections(), ["w"]);
    }

    #[test]
    fn limiter_lets_a_burst_through_then_paces() {
        // 60/min: a burst of one, then 59 a minute.
        let limits = Limits::new(60, 10_000);
        let key = "w".to_owned();
        assert!(limits.per_connection.check_key(&key).is_ok());
        assert!(limits.per_connection.check_key(&key).is_err());
        assert!(
            limits.per_connection.check_key(&"other".to_owned()).is_ok(),
            "per connection"
        );
    }
}
