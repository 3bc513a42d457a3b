//! Optional API quota enforcement: sliding windows per user and per project (fact sheet §5:
//! 600 requests/min/user, 10,000 requests/min/project, sliding window; patch costs 3 units).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Quota limits. The project is the OAuth client id; the user is the refresh token's email.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaConfig {
    /// Length of the sliding window.
    pub window: Duration,
    /// Units one user may spend per window.
    pub per_user: u32,
    /// Units one project (OAuth client) may spend per window.
    pub per_project: u32,
    /// Status of a rejection: 403 (default) or 429, both with reason `rateLimitExceeded`.
    pub reject_status: u16,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self::google()
    }
}

impl QuotaConfig {
    /// Google's published numbers: 600/min per user, 10,000/min per project, 403.
    pub fn google() -> Self {
        QuotaConfig {
            window: Duration::from_secs(60),
            per_user: 600,
            per_project: 10_000,
            reject_status: 403,
        }
    }

    /// Google's per-second rates over a shorter (or longer) window: the limits scale with the
    /// window, so `QuotaConfig::google().scaled_to(Duration::from_secs(6))` allows 60 per user
    /// and 1,000 per project per 6-second window (same rates and same user:project ratio, but a
    /// burst's effect is over ten times sooner).
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a scaled quota, at least 1: float to int saturates, which is right"
    )]
    pub fn scaled_to(self, window: Duration) -> Self {
        let f = window.as_secs_f64() / self.window.as_secs_f64();
        QuotaConfig {
            window,
            per_user: (f64::from(self.per_user) * f).round().max(1.0) as u32,
            per_project: (f64::from(self.per_project) * f).round().max(1.0) as u32,
            reject_status: self.reject_status,
        }
    }
}

/// Sliding-window counters.
#[derive(Debug, Default)]
pub(crate) struct Quota {
    users: HashMap<String, VecDeque<(Instant, u32)>>,
    projects: HashMap<String, VecDeque<(Instant, u32)>>,
    pub(crate) rejections: u64,
}

fn spent(q: &mut VecDeque<(Instant, u32)>, now: Instant, window: Duration) -> u32 {
    while let Some(&(t, _)) = q.front() {
        if now.duration_since(t) >= window {
            q.pop_front();
        } else {
            break;
        }
    }
    q.iter().map(|&(_, c)| c).sum()
}

impl Quota {
    /// Charges `cost` units to `user` and `project`; false (and nothing charged) when either
    /// window is full.
    pub(crate) fn admit(
        &mut self,
        cfg: &QuotaConfig,
        user: &str,
        project: &str,
        cost: u32,
    ) -> bool {
        let now = Instant::now();
        let uq = self.users.entry(user.to_string()).or_default();
        let u = spent(uq, now, cfg.window);
        let pq = self.projects.entry(project.to_string()).or_default();
        let p = spent(pq, now, cfg.window);
        if u + cost > cfg.per_user || p + cost > cfg.per_project {
            self.rejections += 1;
            return false;
        }
        pq.push_back((now, cost));
        self.users
            .get_mut(user)
            .expect("entry created above")
            .push_back((now, cost));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_limit_and_scaling() {
        let cfg = QuotaConfig::google().scaled_to(Duration::from_secs(6));
        assert_eq!((cfg.per_user, cfg.per_project), (60, 1000));
        let mut q = Quota::default();
        for _ in 0..60 {
            assert!(q.admit(&cfg, "a@x", "p", 1));
        }
        assert!(!q.admit(&cfg, "a@x", "p", 1));
        assert!(q.admit(&cfg, "b@x", "p", 1));
        assert_eq!(q.rejections, 1);
    }
}
