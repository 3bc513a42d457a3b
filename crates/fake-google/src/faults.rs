//! Fault injection: "the next N calls matching (method?, path substring?) answer X".

use serde::{Deserialize, Serialize};

use crate::errors::{ApiError, ErrorShape, OAuthError};

/// What an injected fault does to a matching request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultKind {
    /// 403 `usageLimits`/`rateLimitExceeded` "Rate Limit Exceeded".
    RateLimitExceeded,
    /// 403 `usageLimits`/`userRateLimitExceeded` "User Rate Limit Exceeded".
    UserRateLimitExceeded,
    /// 429 `usageLimits`/`rateLimitExceeded`, optionally with `Retry-After: <secs>`.
    TooManyRequests {
        /// Seconds for the `Retry-After` header; `None` = no header.
        retry_after: Option<u64>,
    },
    /// 429 `usageLimits`/`rateLimitExceeded` with `Retry-After` in the HTTP-date form, e.g.
    /// `Wed, 21 Oct 2015 07:28:00 GMT`.
    TooManyRequestsUntil {
        /// The header value, sent as given.
        http_date: String,
    },
    /// 403 `usageLimits`/`quotaExceeded` "Calendar usage limits exceeded."
    QuotaExceeded,
    /// 403 `global`/`insufficientPermissions` "Insufficient Permission".
    InsufficientPermissions,
    /// 403 `calendar`/`requiredAccessLevel` "You need to have writer access to this calendar."
    RequiredAccessLevel,
    /// 403 `global`/`forbidden` "Forbidden".
    Forbidden,
    /// 500 `global`/`backendError` "Backend Error".
    BackendError,
    /// 503 with a JSON body (reason `backendError`, "The service is currently unavailable.").
    ServiceUnavailable,
    /// Any status with a raw body (e.g. a proxy's HTML 502): exercises non-JSON error bodies.
    Raw {
        /// HTTP status.
        status: u16,
        /// Content-Type header.
        content_type: String,
        /// Body text.
        body: String,
    },
    /// Never answer (until the fake shuts down): the client must give up by itself.
    Hang,
    /// Process the request normally (the write is committed), then close the connection
    /// without sending the response.
    CommittedReplyLost,
    /// Close the connection without processing the request (nothing committed).
    ConnectionReset,
    /// 404 `global`/`notFound` "Not Found" without looking: Google's eventual consistency
    /// (a 404 right after a write) or a calendar whose access is lost for a while.
    NotFound,
    /// 409 `global`/`conflict` "Conflict": what Google answers an inner call of a batch that
    /// conflicts with another call of the same batch (fact sheet §3, §6).
    Conflict,
    /// Batch requests only (give it `.path("/batch")`): every inner call is made, but the
    /// answer holds `after_parts` whole parts, then stops in the middle of the next one (no
    /// closing delimiter; `Connection: close`). With `after_parts` >= the number of calls,
    /// every part is whole but the closing delimiter is missing. Other requests: no effect.
    BatchCut {
        /// Parts answered whole.
        after_parts: u32,
    },
    /// Hold the request for `delay_ms`, then process it (the write is committed late, after
    /// the client has usually given up) and answer. A timed-out write that Google applies anyway.
    HangThenApply {
        /// How long the request waits before it is processed.
        delay_ms: u64,
    },
}

/// One injected fault. Build with [`Fault::new`] and the chained setters.
///
/// Matching: `method` is compared case-insensitively with the HTTP method; `path_contains`
/// is searched in the percent-decoded request path (no query), e.g. `"/events"`, `"/token"`,
/// or an event id. Faults are consulted in injection order; the first match with calls left
/// is used and its count decremented. They apply to the token endpoint too (where error kinds
/// answer OAuth-shaped bodies: 5xx -> `internal_failure`/`temporarily_unavailable`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// HTTP method to match (`None` = any).
    #[serde(default)]
    pub method: Option<String>,
    /// Substring of the decoded path to match (`None` = any path).
    #[serde(default)]
    pub path_contains: Option<String>,
    /// How many matching calls get the fault (JSON default 1).
    #[serde(default = "one")]
    pub times: u32,
    /// What happens.
    pub kind: FaultKind,
    /// Error body shape for this fault (`None` = the fake's setting).
    #[serde(default)]
    pub shape: Option<ErrorShape>,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// A fault for the next single call to any path.
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            method: None,
            path_contains: None,
            times: 1,
            kind,
            shape: None,
        }
    }
    /// Only calls with this HTTP method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }
    /// Only calls whose decoded path contains `s`.
    pub fn path(mut self, s: &str) -> Self {
        self.path_contains = Some(s.to_string());
        self
    }
    /// Applies to the next `n` matching calls.
    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }
    /// Forces an error body shape for this fault.
    pub fn shape(mut self, shape: ErrorShape) -> Self {
        self.shape = Some(shape);
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
    }
}

/// What the server must do for a faulted request.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    /// Answer this Calendar error instead of handling the request.
    Error(ApiError),
    /// Answer a raw response.
    Raw(u16, String, String),
    Hang,
    CommittedReplyLost,
    ConnectionReset,
    /// Wait, then process normally.
    Late(std::time::Duration),
    /// A batch answered only this many parts whole, then cut.
    BatchCut(u32),
}

impl Action {
    pub(crate) fn from_fault(f: &Fault) -> Action {
        let err = match &f.kind {
            FaultKind::RateLimitExceeded => ApiError::rate_limit(403),
            FaultKind::UserRateLimitExceeded => ApiError::user_rate_limit(),
            FaultKind::TooManyRequests { retry_after } => {
                let mut e = ApiError::rate_limit(429);
                e.retry_after = *retry_after;
                e
            }
            FaultKind::TooManyRequestsUntil { http_date } => {
                let mut e = ApiError::rate_limit(429);
                e.retry_after_date = Some(http_date.clone());
                e
            }
            FaultKind::QuotaExceeded => ApiError::quota_exceeded(),
            FaultKind::InsufficientPermissions => ApiError::insufficient_permissions(),
            FaultKind::RequiredAccessLevel => ApiError::required_access_level(),
            FaultKind::Forbidden => ApiError::forbidden(),
            FaultKind::BackendError => ApiError::backend_error(),
            FaultKind::NotFound => ApiError::not_found(),
            FaultKind::Conflict => ApiError::conflict(),
            FaultKind::BatchCut { after_parts } => return Action::BatchCut(*after_parts),
            FaultKind::ServiceUnavailable => ApiError::service_unavailable(),
            FaultKind::Raw {
                status,
                content_type,
                body,
            } => return Action::Raw(*status, content_type.clone(), body.clone()),
            FaultKind::Hang => return Action::Hang,
            FaultKind::CommittedReplyLost => return Action::CommittedReplyLost,
            FaultKind::ConnectionReset => return Action::ConnectionReset,
            FaultKind::HangThenApply { delay_ms } => {
                return Action::Late(std::time::Duration::from_millis(*delay_ms));
            }
        };
        Action::Error(ApiError {
            shape: f.shape,
            ..err
        })
    }
}

/// The token endpoint's rendering of a Calendar-style fault.
pub(crate) fn oauth_error_for(e: &ApiError) -> OAuthError {
    match e.status {
        500 => OAuthError::new(500, "internal_failure", "Backend Error"),
        503 => OAuthError::new(503, "temporarily_unavailable", "Service unavailable"),
        429 => OAuthError::new(429, "rate_limit_exceeded", "Rate Limit Exceeded"),
        s => OAuthError::new(s, "access_denied", &e.message),
    }
}

/// The queue of pending faults.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pending: Vec<Fault>,
}

impl Faults {
    pub(crate) fn push(&mut self, f: Fault) {
        if f.times > 0 {
            self.pending.push(f);
        }
    }
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }
    pub(crate) fn remaining(&self) -> u32 {
        self.pending.iter().map(|f| f.times).sum()
    }
    /// Takes one use of the first fault matching the request.
    pub(crate) fn take(&mut self, method: &str, path: &str) -> Option<Action> {
        let i = self.pending.iter().position(|f| f.matches(method, path))?;
        let action = Action::from_fault(&self.pending[i]);
        self.pending[i].times -= 1;
        if self.pending[i].times == 0 {
            self.pending.remove(i);
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_down_and_matches() {
        let mut f = Faults::default();
        f.push(
            Fault::new(FaultKind::BackendError)
                .method("post")
                .path("/events")
                .times(2),
        );
        assert!(f.take("GET", "/calendar/v3/calendars/c/events").is_none());
        assert!(f.take("POST", "/calendar/v3/calendars/c/events").is_some());
        assert!(f.take("POST", "/calendar/v3/calendars/c/events").is_some());
        assert!(f.take("POST", "/calendar/v3/calendars/c/events").is_none());
        assert_eq!(f.remaining(), 0);
    }
}
