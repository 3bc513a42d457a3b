//! Statements on the lock connection that fail while the session lives on.
//!
//! A claim that meets `lock_timeout`, `statement_timeout`, a deadlock or a
//! serialization failure leaves the session, and with it every row lock of
//! the items in flight, intact. Dropping the connection for it would turn
//! those items into orphans whose Google calls are made again; so the worker
//! waits and tries again instead, and only a session that is gone stops work.

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::error::SqlState;

use crate::error::Error;

/// Whether the lock connection is still usable after `error`: true for an
/// error the server reported about one statement, false when the session
/// itself ended (connection closed, I/O failure, terminated backend).
pub(crate) fn session_survives(error: &Error) -> bool {
    let Error::Database(e) = error else {
        return false;
    };
    if e.is_closed() {
        return false;
    }
    let Some(code) = e.code() else {
        // No SQLSTATE: the error did not come from the server (I/O, protocol).
        return false;
    };
    let ended = [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
    ];
    !code.code().starts_with("08") && !ended.contains(code)
}

/// The longest wait before a failed statement is tried again.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// 50 ms, 100 ms, 200 ms … up to 5 s after consecutive failures.
fn delay(failures: u32) -> Duration {
    let millis = 50u64.saturating_mul(1 << failures.saturating_sub(1).min(10));
    Duration::from_millis(millis).min(MAX_DELAY)
}

/// Backoff state of the lock connection's statements: when the next may run,
/// and whether the current run of failures has been logged yet (once).
#[derive(Debug, Default)]
pub(crate) struct StatementBackoff {
    failures: u32,
    until: Option<Instant>,
}

impl StatementBackoff {
    /// Whether statements may run now.
    pub(crate) fn ready(&self) -> bool {
        self.until.is_none_or(|at| at <= Instant::now())
    }

    /// When the current wait ends, if one is running.
    pub(crate) fn until(&self) -> Option<Instant> {
        self.until.filter(|at| *at > Instant::now())
    }

    /// Counts a failure of `statement`; returns the error when the session is
    /// gone (the caller must stop), or waits a little longer each time.
    pub(crate) fn failed(&mut self, statement: &'static str, error: Error) -> Result<(), Error> {
        if !session_survives(&error) {
            return Err(error);
        }
        self.failures += 1;
        let wait = delay(self.failures);
        if self.failures == 1 {
            tracing::warn!(statement, error = %error, "statement failed; retrying with backoff, in-flight items carry on");
        }
        metrics::counter!("calendar_sync_statement_retries_total", "statement" => statement)
            .increment(1);
        self.until = Some(Instant::now() + wait);
        Ok(())
    }

    /// A statement succeeded: the run of failures, if any, is over.
    pub(crate) fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failures = self.failures,
                "statements succeed again after failures"
            );
        }
        self.failures = 0;
        self.until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let delays: Vec<u128> = (1..=9).map(|f| delay(f).as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(delay(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn a_lost_session_is_not_retried() {
        assert!(!session_survives(&Error::LockConnectionLost));
        let mut backoff = StatementBackoff::default();
        assert!(backoff.failed("claim", Error::LockConnectionLost).is_err());
        assert!(backoff.ready());
    }
}
