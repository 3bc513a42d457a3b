//! The retry schedule: a pure function. The schedule itself lives in the
//! database as `next_attempt_at`, so no retry crate is needed.

use std::time::Duration;

/// Longest wait we honour from a service's Retry-After.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The delay before the next attempt after `attempt` failed attempts (1-based):
/// `base · 2^(attempt-1)`, capped at `cap`, spread by `±jitter` using `sample`
/// in `[0, 1)`, and never above `cap`. A service's `retry_after` wins.
pub fn retry_delay(
    attempt: u32,
    base: Duration,
    cap: Duration,
    jitter: f64,
    sample: f64,
    retry_after: Option<Duration>,
) -> Duration {
    if let Some(after) = retry_after {
        return after.min(MAX_RETRY_AFTER);
    }
    let exponent = attempt.saturating_sub(1).min(32) as i32;
    let nominal = (base.as_secs_f64() * 2f64.powi(exponent)).min(cap.as_secs_f64());
    let spread = 1.0 - jitter + 2.0 * jitter * sample.clamp(0.0, 1.0);
    Duration::from_secs_f64((nominal * spread).min(cap.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn doubles_from_base_without_jitter() {
        let delays: Vec<u64> = (1..=6)
            .map(|a| retry_delay(a, S, H, 0.0, 0.5, None).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32]);
    }

    #[test]
    fn caps_at_one_hour() {
        assert_eq!(retry_delay(13, S, H, 0.0, 0.0, None), H);
        assert_eq!(retry_delay(400, S, H, 0.2, 0.99, None), H);
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let low = retry_delay(4, S, H, 0.2, 0.0, None).as_secs_f64();
        let high = retry_delay(4, S, H, 0.2, 0.999_999, None).as_secs_f64();
        assert!((low - 6.4).abs() < 1e-9, "{low}");
        assert!((high - 9.6).abs() < 1e-3, "{high}");
    }

    #[test]
    fn retry_after_wins() {
        let after = Duration::from_secs(90);
        assert_eq!(retry_delay(1, S, H, 0.2, 0.3, Some(after)), after);
        assert_eq!(
            retry_delay(1, S, H, 0.2, 0.3, Some(Duration::from_secs(10 * 86400))),
            MAX_RETRY_AFTER
        );
    }
}
