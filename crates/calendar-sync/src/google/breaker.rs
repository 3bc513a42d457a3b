//! A circuit breaker per connection that pauses a connection after repeated
//! retryable failures while other workspaces proceed. (Google's quotas are
//! paid from budgets shared through the database: see `budget`.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per-connection circuit breakers.
pub(crate) struct Breakers {
    threshold: u32,
    cool_down: Duration,
    state: Mutex<HashMap<String, Breaker>>,
}

/// What a call's result did to its connection's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// This failure opened it.
    Opened,
    /// This result closed a breaker that had opened (its cool-down over).
    Closed,
    /// Nothing worth writing down.
    None,
}

#[derive(Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

impl Breakers {
    /// Opens a connection's breaker after `threshold` consecutive retryable
    /// failures, for `cool_down`.
    pub(super) fn new(threshold: u32, cool_down: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cool_down,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// How long the connection's breaker stays open, if it is open.
    pub(super) fn open_for(&self, connection: &str) -> Option<Duration> {
        let state = self.state.lock().expect("breaker state");
        let until = state.get(connection)?.open_until?;
        until.checked_duration_since(Instant::now())
    }

    /// How long an open breaker stays open.
    pub(super) fn cool_down(&self) -> Duration {
        self.cool_down
    }

    /// Records a call's result: success closes the breaker; a retryable failure
    /// counts towards opening it. Says whether this result opened the breaker,
    /// or closed one that had opened (a success of a connection that never
    /// opened changes nothing worth writing).
    pub(super) fn record(&self, connection: &str, retryable_failure: bool) -> Change {
        let mut state = self.state.lock().expect("breaker state");
        if !retryable_failure {
            // A closed breaker is no entry: the map holds only connections
            // failing now, not every workspace ever served.
            let had_opened = state
                .remove(connection)
                .is_some_and(|b| b.open_until.is_some());
            return if had_opened {
                Change::Closed
            } else {
                Change::None
            };
        }
        let breaker = state.entry(connection.to_owned()).or_default();
        breaker.consecutive_failures += 1;
        if breaker.consecutive_failures >= self.threshold {
            breaker.consecutive_failures = 0;
            breaker.open_until = Some(Instant::now() + self.cool_down);
            return Change::Opened;
        }
        Change::None
    }

    /// Connections whose breaker is open now (for metrics and status).
    pub(super) fn open_connections(&self) -> Vec<String> {
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
        assert_eq!(b.record("w", true), Change::None);
        assert_eq!(b.record("w", true), Change::None);
        assert_eq!(
            b.record("w", false),
            Change::None,
            "a success resets the count"
        );
        assert_eq!(b.record("w", true), Change::None);
        assert_eq!(b.record("w", true), Change::None);
        assert_eq!(b.record("w", true), Change::Opened);
        assert!(b.open_for("w").is_some());
        assert!(b.open_for("other").is_none());
        assert_eq!(b.open_connections(), ["w"]);
        assert_eq!(b.record("w", false), Change::Closed, "it had opened");
        assert_eq!(b.record("w", false), Change::None, "closed already");
    }
}
