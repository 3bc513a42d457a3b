//! The retry schedule: a pure function. The schedule itself lives in the
//! database as `next_attempt_at`, so no retry crate is needed.

use std::time::Duration;

/// Longest wait we honour from a service's Retry-After.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The delay before the next attempt after `attempt` failed attempts (1-based):
/// `base · 2^(attempt-1)`, capped at `cap`, spread by `±jitter` using `sample`
/// in `[0, 1)`, and never above `cap`. A service's `retry_after` wins when it
/// is longer (up to a day): a short hint never undoes our own backing off.
pub(crate) fn retry_delay(
    attempt: u32,
    base: Duration,
    cap: Duration,
    jitter: f64,
    sample: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let exponent = f64::from(attempt.saturating_sub(1).min(32));
    let nominal = (base.as_secs_f64() * 2f64.powf(exponent)).min(cap.as_secs_f64());
    let spread = 1.0 - jitter + 2.0 * jitter * sample.clamp(0.0, 1.0);
    let ours = Duration::from_secs_f64((nominal * spread).min(cap.as_secs_f64()));
    retry_after.map_or(ours, |after| ours.max(after.min(MAX_RETRY_AFTER)))
}

/// A `Retry-After` header value (RFC 9110 §10.2.3): delta-seconds, or an
/// HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`) read against `now`; a date in
/// the past means no wait.
pub(crate) fn parse_retry_after(
    value: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.to_utc() - now).to_std().unwrap_or(Duration::ZERO))
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
    fn the_longer_of_retry_after_and_the_backoff_wins() {
        let after = Duration::from_secs(90);
        assert_eq!(retry_delay(1, S, H, 0.2, 0.3, Some(after)), after);
        assert_eq!(
            retry_delay(1, S, H, 0.2, 0.3, Some(Duration::from_secs(10 * 86400))),
            MAX_RETRY_AFTER
        );
        let short = Some(Duration::from_secs(1));
        assert_eq!(retry_delay(5, S, H, 0.0, 0.5, short).as_secs(), 16);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .to_utc();
        let secs = |v| parse_retry_after(v, now).map(|d| d.as_secs());
        assert_eq!(secs("120"), Some(120));
        assert_eq!(secs(" 7 "), Some(7));
        assert_eq!(secs("Wed, 21 Oct 2015 07:28:00 GMT"), Some(60));
        assert_eq!(secs("Wed, 21 Oct 2015 07:00:00 GMT"), Some(0));
        assert_eq!(secs("soon"), None);
        assert_eq!(secs("-5"), None);
    }
}
