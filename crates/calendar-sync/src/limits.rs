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
    /// `per_connection` and `project` are requests per `window` (Google's
    /// sliding window: a minute).
    pub fn new(per_connection: u32, project: u32, window: Duration) -> Self {
        Self {
            project: RateLimiter::direct(quota(project, window)),
            per_connection: RateLimiter::keyed(quota(per_connection, window)),
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

/// A burst of `burst` (a sixtieth of the budget, 1 to 100) refilled at
/// `per_window - burst` a window: a bucket that starts full lets `burst`
/// requests through at once and then the refill, so no window (Google's are
/// sliding) ever holds more than `per_window`.
fn quota(per_window: u32, window: Duration) -> Quota {
    let (burst, refill) = split(per_window);
    let period = window / refill;
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .expect("a positive period")
        .allow_burst(NonZeroU32::new(burst).expect("non-zero"))
}

/// (burst, refill per window) of a budget.
fn split(per_window: u32) -> (u32, u32) {
    let per_window = per_window.max(2);
    let burst = (per_window / 60).clamp(1, 100);
    (burst, per_window - burst)
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
        if !retryable_failure {
            // A closed breaker is no entry: the map holds only connections
            // failing now, not every workspace ever served.
            state.remove(connection);
            return false;
        }
        let breaker = state.entry(connection.to_owned()).or_default();
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
    fn no_window_holds_more_than_the_budget() {
        for per_window in [2, 59, 60, 150, 600, 1_000, 10_000, 1_000_000] {
            let (burst, refill) = split(per_window);
            assert_eq!(burst + refill, per_window, "{per_window}");
            assert!((1..=100).contains(&burst));
        }
        // Google's 10,000 a minute: 100 at once, then 9,900 spread over the minute.
        assert_eq!(split(10_000), (100, 9_900));
        let q = quota(10_000, Duration::from_secs(60));
        assert_eq!(q.burst_size().get(), 100);
        assert_eq!(q.replenish_interval(), Duration::from_secs(60) / 9_900);
        // Scaled time (6 s windows, same rate): 16 at once, then 984 per 6 s.
        let q = quota(1_000, Duration::from_secs(6));
        assert_eq!(q.burst_size().get(), 16);
        assert_eq!(q.replenish_interval(), Duration::from_secs(6) / 984);
    }

    /// Calls that `waiters` tasks, each going round `connections`
    /// connections, get through `limits` in `span` of real time (governor
    /// waits on its own clock and timer, not tokio's, so no paused clock).
    async fn calls_through(
        limits: Limits,
        waiters: usize,
        connections: usize,
        span: Duration,
    ) -> u64 {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let limits = Arc::new(limits);
        let calls = Arc::new(AtomicU64::new(0));
        let end = tokio::time::Instant::now() + span;
        let mut tasks = tokio::task::JoinSet::new();
        for first in 0..waiters {
            let (limits, calls) = (limits.clone(), calls.clone());
            tasks.spawn(async move {
                for n in (first..).step_by(waiters) {
                    let connection = format!("w{}", n % connections);
                    tokio::select! {
                        () = limits.until_ready(&connection) => {}
                        () = tokio::time::sleep_until(end) => return,
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        calls.load(Ordering::Relaxed)
    }

    /// What a bucket of `per_window` lets through in `span`: its burst, then
    /// one a replenish interval.
    fn allowed(per_window: u32, span: Duration) -> f64 {
        let q = quota(per_window, Duration::from_secs(60));
        f64::from(q.burst_size().get()) + span.as_secs_f64() / q.replenish_interval().as_secs_f64()
    }

    /// One of 4 processes (the worker at WORKER_PROCESSES=4): 32 items in
    /// flight over 20 connections get the whole of this process's share,
    /// neither less (waiters starving each other, a per-connection cell held
    /// while waiting for the project's) nor more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiters_get_the_whole_share() {
        let span = Duration::from_secs(2);
        let window = Duration::from_secs(60);
        let (project_bound, connection_bound) = tokio::join!(
            // 150/min per connection, 2,500/min per process: the project binds.
            calls_through(Limits::new(150, 2_500, window), 32, 20, span),
            // The same per connection, project unbounded: 20 connections bind.
            calls_through(Limits::new(150, 1_000_000, window), 32, 20, span),
        );
        for (got, allowed) in [
            (project_bound, allowed(2_500, span)),
            (connection_bound, 20.0 * allowed(150, span)),
        ] {
            let got = got as f64;
            // Never more than allowed; the lower bound leaves room for a busy
            // machine delaying wake-ups (a limiter that took two cells a call
            // let 45 % through).
            assert!(
                got >= 0.6 * allowed && got <= allowed + 1.0,
                "{got} calls in {span:?}, the limiter allows {allowed:.0}"
            );
        }
    }

    #[test]
    fn limiter_lets_a_burst_through_then_paces() {
        // 60/min: a burst of one, then 59 a minute.
        let limits = Limits::new(60, 10_000, Duration::from_secs(60));
        let key = "w".to_owned();
        assert!(limits.per_connection.check_key(&key).is_ok());
        assert!(limits.per_connection.check_key(&key).is_err());
        assert!(
            limits.per_connection.check_key(&"other".to_owned()).is_ok(),
            "per connection"
        );
    }
}
