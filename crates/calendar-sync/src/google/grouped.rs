//! Grouping write calls into Google's batch requests. The writes (insert, update, delete) of
//! one connection that become ready together (each within [`GATHER`] of the last, for at
//! most [`MAX_GATHER`]) go to `POST /batch/calendar/v3` as one HTTP request (see
//! [`super::batch`] for the wire format).
//!
//! Each caller still gets its own call's answer, shaped as a single call's (status, headers,
//! JSON body), so the adapter classifies it exactly as it would a single call. Everything
//! else stays with the caller: the breaker, the budget (one unit per inner call), the token.
//! A call alone in its group is not batched at all: the caller sends it as a single call.
//!
//! Where the endpoint is unavailable (404, 400, an answer that is not multipart, a refused
//! connection), every call of the batch is handed back to be sent on its own at once, and
//! batching stays off for [`FALLBACK_FOR`].

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use google_calendar3::common::{self, Body};
use google_calendar3::hyper::body::{Body as _, Bytes};
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, Method, StatusCode};
use hyper_util::client::legacy::Client;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

use super::Connector;
use super::batch::{self, Headers, InnerRequest, InnerResponse, Limits};

/// A group goes once no call has joined it for this long. Small beside a call's round trip
/// to Google (tens to hundreds of milliseconds); long enough for the items of one claim,
/// started together, to reach their call.
pub(super) const GATHER: Duration = Duration::from_millis(5);

/// A group goes at the latest this long after its first call, however many are still
/// joining (a rebuild's writes arrive as their database round trips finish).
pub(super) const MAX_GATHER: Duration = Duration::from_millis(25);

/// How long batching stays off after the endpoint proved unavailable.
pub(super) const FALLBACK_FOR: Duration = Duration::from_secs(15 * 60);

/// Most bytes read of a batch answer per call in it: far more than an event (Google caps an
/// event's description at 8 KB); past it the answer counts as cut.
const MAX_ANSWER_PER_CALL: usize = 1 << 20;

/// google-calendar3's own user agent, so Google sees one client.
const USER_AGENT_VALUE: &str = "google-api-rust-client/7.0.0";

/// What a caller gets for its call.
#[derive(Debug)]
pub(super) enum PartOutcome {
    /// The answer to this call: its own part, or the whole batch's error answer.
    Answered {
        /// The answer.
        answer: InnerResponse,
        /// `false` when the answer is the whole batch's failure and another call of the
        /// batch counts it for the circuit breaker: one failed request, one failure.
        counted: bool,
    },
    /// No answer for this call (the batch timed out, failed mid-way, or its answer was cut):
    /// the write may or may not have happened, as with a lost reply.
    Unanswered {
        /// Whether the batch request timed out.
        timed_out: bool,
        /// As for `Answered`: only one unanswered call of a batch counts for the breaker.
        counted: bool,
    },
    /// Send the call on its own, now: it was alone, could not be encoded, or the batch
    /// endpoint is unavailable (nothing of it reached a calendar).
    SendAlone,
}

/// One connection's writes gathering for a batch; `token` authorises them all.
struct Gathering {
    generation: u64,
    opened: Instant,
    last_join: Instant,
    token: SecretString,
    calls: Vec<(InnerRequest, oneshot::Sender<PartOutcome>)>,
}

/// Groups are per connection and per access token: a call made with a refreshed token never
/// rides in a batch authorised by the old one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    workspace: String,
    token: u64,
}

/// Gathers and sends batches; shared by every call of one [`super::GoogleCalendar`].
pub(super) struct Grouper {
    http: Client<Connector, Body>,
    url: String,
    max: usize,
    timeout: Duration,
    generations: AtomicU64,
    gathering: Mutex<HashMap<GroupKey, Gathering>>,
    /// Batch sizes below `max`, per connection, after rate-limited parts.
    shrunk: Mutex<HashMap<String, usize>>,
    off_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Grouper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grouper")
            .field("url", &self.url)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Grouper {
    /// `max` calls per batch at most (at least 2, at most Google's 1000).
    pub(super) fn new(
        http: Client<Connector, Body>,
        url: String,
        max: usize,
        timeout: Duration,
    ) -> Self {
        Self {
            http,
            url,
            max: max.clamp(2, batch::MAX_CALLS),
            timeout,
            generations: AtomicU64::new(0),
            gathering: Mutex::new(HashMap::new()),
            shrunk: Mutex::new(HashMap::new()),
            off_until: Mutex::new(None),
        }
    }

    /// Whether batching is off for now (the endpoint proved unavailable).
    pub(super) fn is_off(&self) -> bool {
        let mut off = self.off_until.lock().expect("off_until");
        match *off {
            Some(until) if until > Instant::now() => true,
            Some(_) => {
                *off = None;
                false
            }
            None => false,
        }
    }

    /// The size a batch of this connection may reach now.
    fn size_for(&self, workspace: &str) -> usize {
        let shrunk = self.shrunk.lock().expect("shrunk");
        shrunk.get(workspace).copied().unwrap_or(self.max)
    }

    /// Puts `request` in its connection's next batch and waits for its answer.
    pub(super) async fn submit(
        self: &Arc<Self>,
        workspace: &str,
        token: &SecretString,
        request: InnerRequest,
    ) -> PartOutcome {
        if self.is_off() {
            return PartOutcome::SendAlone;
        }
        let key = GroupKey {
            workspace: workspace.to_owned(),
            token: fingerprint(token),
        };
        let (reply, answer) = oneshot::channel();
        let size = self.size_for(workspace);
        let (full, lead) = {
            let mut gathering = self.gathering.lock().expect("gathering");
            let now = Instant::now();
            let group = gathering.entry(key.clone()).or_insert_with(|| Gathering {
                generation: self.generations.fetch_add(1, Ordering::Relaxed),
                opened: now,
                last_join: now,
                token: token.clone(),
                calls: Vec::new(),
            });
            group.calls.push((request, reply));
            group.last_join = now;
            if group.calls.len() >= size {
                (gathering.remove(&key), None)
            } else if group.calls.len() == 1 {
                (None, Some(group.generation))
            } else {
                (None, None)
            }
        };
        if let Some(group) = full {
            self.dispatch(workspace, group);
        } else if let Some(generation) = lead {
            // The first call of a group sends it when it is complete, unless it fills up first.
            let this = Arc::clone(self);
            let workspace = workspace.to_owned();
            tokio::spawn(async move {
                let mut wait = GATHER;
                loop {
                    tokio::time::sleep(wait).await;
                    let mut gathering = this.gathering.lock().expect("gathering");
                    let Some(g) = gathering.get(&key).filter(|g| g.generation == generation) else {
                        return;
                    };
                    let due = (g.last_join + GATHER).min(g.opened + MAX_GATHER);
                    match due.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => wait = left,
                        _ => {
                            let group = gathering.remove(&key).expect("just seen");
                            drop(gathering);
                            this.dispatch(&workspace, group);
                            return;
                        }
                    }
                }
            });
        }
        // A sender dropped without an answer (a panic in the batch task) is a lost reply.
        answer.await.unwrap_or(PartOutcome::Unanswered {
            timed_out: false,
            counted: true,
        })
    }

    /// Sends a gathered group in its own task, so that no caller's cancellation cuts the
    /// batch of the others.
    fn dispatch(self: &Arc<Self>, workspace: &str, group: Gathering) {
        if group.calls.len() == 1 {
            for (_, reply) in group.calls {
                let _ = reply.send(PartOutcome::SendAlone);
            }
            return;
        }
        let this = Arc::clone(self);
        let workspace = workspace.to_owned();
        tokio::spawn(async move { this.send(&workspace, group).await });
    }

    async fn send(&self, workspace: &str, group: Gathering) {
        let (requests, replies): (Vec<_>, Vec<_>) = group.calls.into_iter().unzip();
        let count = requests.len();
        let outcomes = self.exchange(&group.token, &requests).await;
        let label = match &outcomes {
            Exchange::Parts {
                truncated: true, ..
            } => "cut",
            Exchange::Parts { .. } => "answered",
            Exchange::Whole(_) => "failed",
            Exchange::Unanswered { .. } => "unanswered",
            Exchange::Unavailable => "unavailable",
        };
        metrics::counter!("calendar_sync_google_batches_total", "outcome" => label).increment(1);
        let mut parts: Vec<Option<InnerResponse>> = (0..count).map(|_| None).collect();
        // A caller that gave up (its item was cancelled) has dropped its receiver.
        let each = |reply: oneshot::Sender<PartOutcome>, outcome| {
            let _ = reply.send(outcome);
        };
        match outcomes {
            Exchange::Unavailable => {
                for reply in replies {
                    each(reply, PartOutcome::SendAlone);
                }
            }
            Exchange::Unanswered { timed_out } => {
                for (i, reply) in replies.into_iter().enumerate() {
                    let counted = i == 0;
                    each(reply, PartOutcome::Unanswered { timed_out, counted });
                }
            }
            Exchange::Whole(answer) => {
                self.adapt(workspace, std::iter::once(&answer), true);
                for (i, reply) in replies.into_iter().enumerate() {
                    let answer = answer.clone();
                    let counted = i == 0;
                    each(reply, PartOutcome::Answered { answer, counted });
                }
            }
            Exchange::Parts {
                parts: answered,
                truncated,
            } => {
                for part in answered {
                    if let Some(slot) = part.item_index().and_then(|i| parts.get_mut(i)) {
                        *slot = Some(part);
                    }
                }
                let complete = !truncated && parts.iter().all(Option::is_some);
                self.adapt(workspace, parts.iter().flatten(), complete);
                // A cut answer is one failure, counted by its first unanswered call.
                let mut first_unanswered = true;
                for (reply, part) in replies.into_iter().zip(parts) {
                    let outcome = match part {
                        Some(answer) => PartOutcome::Answered {
                            answer,
                            counted: true,
                        },
                        None => PartOutcome::Unanswered {
                            timed_out: false,
                            counted: std::mem::take(&mut first_unanswered),
                        },
                    };
                    each(reply, outcome);
                }
            }
        }
    }

    /// Shrinks the connection's next batches by half when Google rate-limited a part (as
    /// Google advises); grows them back by a quarter after each clean, complete batch.
    fn adapt<'a>(
        &self,
        workspace: &str,
        answers: impl Iterator<Item = &'a InnerResponse>,
        complete: bool,
    ) {
        let limited = answers.into_iter().any(rate_limited);
        let mut shrunk = self.shrunk.lock().expect("shrunk");
        let now = shrunk.get(workspace).copied().unwrap_or(self.max);
        let next = if limited {
            (now / 2).max(2)
        } else if complete {
            (now + (now / 4).max(1)).min(self.max)
        } else {
            now
        };
        if next >= self.max {
            shrunk.remove(workspace);
        } else {
            shrunk.insert(workspace.to_owned(), next);
        }
        if limited && next < now {
            tracing::info!(
                workspace_id = workspace,
                batch_size = next,
                "Google rate-limited calls of a batch; this connection's next batches are smaller"
            );
        }
    }

    /// One batch request and what came of it.
    async fn exchange(&self, token: &SecretString, requests: &[InnerRequest]) -> Exchange {
        let Ok(encoded) = batch::encode(requests) else {
            // A call that cannot ride in a batch (a header with a line break) goes alone.
            return Exchange::Unavailable;
        };
        let request = http::Request::builder()
            .method(Method::POST)
            .uri(&self.url)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(AUTHORIZATION, format!("Bearer {}", token.expose_secret()))
            .header(CONTENT_TYPE, encoded.content_type)
            .header(CONTENT_LENGTH, encoded.body.len())
            .body(common::to_body(Some(encoded.body)));
        let Ok(request) = request else {
            return Exchange::Unavailable;
        };
        let limit = MAX_ANSWER_PER_CALL * requests.len();
        let answer = tokio::time::timeout(self.timeout, async {
            let response = self.http.request(request).await?;
            let (head, mut body) = response.into_parts();
            let mut bytes = Vec::new();
            let mut whole = true;
            // Keep what arrived before a cut connection: its complete parts count.
            while let Some(frame) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                match frame.map(|f| f.into_data()) {
                    Ok(Ok(data)) if bytes.len() + data.len() <= limit => {
                        bytes.extend_from_slice(&data)
                    }
                    Ok(Ok(_)) | Err(_) => {
                        whole = false;
                        break;
                    }
                    Ok(Err(_trailers)) => {}
                }
            }
            Ok::<_, hyper_util::client::legacy::Error>((head, Bytes::from(bytes), whole))
        })
        .await;
        let (head, body, whole) = match answer {
            Err(_) => return Exchange::Unanswered { timed_out: true },
            Ok(Err(e)) if e.is_connect() => {
                self.fall_back("the connection was refused");
                return Exchange::Unavailable;
            }
            Ok(Err(_)) => return Exchange::Unanswered { timed_out: false },
            Ok(Ok(answer)) => answer,
        };
        let content_type = head
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let multipart = content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/mixed");
        if unavailable_status(head.status) || (head.status.is_success() && !multipart) {
            self.fall_back(&format!("it answered {}", head.status.as_u16()));
            return Exchange::Unavailable;
        }
        if !head.status.is_success() {
            if !whole {
                return Exchange::Unanswered { timed_out: false };
            }
            return Exchange::Whole(whole_answer(head.status, &head.headers, &body));
        }
        let limits = Limits {
            max_parts: requests.len(),
            ..Limits::default()
        };
        match batch::decode(content_type, &body, &limits) {
            Ok(decoded) => Exchange::Parts {
                parts: decoded.parts,
                truncated: decoded.truncated || !whole,
            },
            // An unreadable answer from Google's endpoint: the calls may have run.
            Err(_) => Exchange::Unanswered { timed_out: false },
        }
    }

    fn fall_back(&self, why: &str) {
        let mut off = self.off_until.lock().expect("off_until");
        if off.is_none() {
            tracing::warn!(
                url = %self.url,
                why,
                minutes = FALLBACK_FOR.as_secs() / 60,
                "Google's batch endpoint is unavailable; single calls only for a while"
            );
        }
        *off = Some(Instant::now() + FALLBACK_FOR);
    }
}

/// What one batch request came to.
enum Exchange {
    /// A multipart answer: the parts received (all of them unless `truncated`).
    Parts {
        parts: Vec<InnerResponse>,
        truncated: bool,
    },
    /// The whole request failed with an HTTP error (401, 429, 5xx): it is every call's answer.
    Whole(InnerResponse),
    /// No usable answer: the calls may or may not have run.
    Unanswered { timed_out: bool },
    /// The endpoint is not there: send every call on its own.
    Unavailable,
}

/// Statuses that mean "no batch endpoint here" rather than an answer about the calls: 404
/// and 405 (no such route), 410 (retired), 501, and 400 (Google refuses a batch it cannot
/// read with 400; each call alone then gets its own verdict).
fn unavailable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 404 | 405 | 410 | 501)
}

/// The whole request's error answer, as each call's answer.
fn whole_answer(status: StatusCode, headers: &HeaderMap, body: &Bytes) -> InnerResponse {
    let headers: Headers = headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.into())))
        .collect();
    InnerResponse {
        content_id: None,
        status: status.as_u16(),
        headers,
        body: body.to_vec(),
    }
}

/// Whether Google rate-limited this call (429, or 403 `rateLimitExceeded` /
/// `userRateLimitExceeded`).
fn rate_limited(answer: &InnerResponse) -> bool {
    match answer.status {
        429 => true,
        403 => serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| {
                v["error"]["errors"][0]["reason"]
                    .as_str()
                    .map(|r| matches!(r, "rateLimitExceeded" | "userRateLimitExceeded"))
            })
            .unwrap_or(false),
        _ => false,
    }
}

/// A token's fingerprint for grouping (never logged; the token itself is kept only in the
/// group that uses it).
fn fingerprint(token: &SecretString) -> u64 {
    let mut hasher = DefaultHasher::new();
    token.expose_secret().hash(&mut hasher);
    hasher.finish()
}

/// The batch endpoint for an API base URL: `https://www.googleapis.com/calendar/v3/` gives
/// `https://www.googleapis.com/batch/calendar/v3`.
pub(crate) fn batch_url_for(api_url: &str) -> String {
    let (origin, path) = split_origin(api_url);
    format!("{origin}/batch{}", path.trim_end_matches('/'))
}

/// The path of an API base URL, with its trailing `/`: what batch parts start with.
pub(super) fn base_path(api_url: &str) -> String {
    let (_, path) = split_origin(api_url);
    let mut path = path.to_owned();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    if !path.ends_with('/') {
        path.push('/');
    }
    path
}

/// `("https://host:port", "/the/path")`.
fn split_origin(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => url.split_at(after_scheme + i),
        None => (url, "/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_url_follows_the_api_url() {
        assert_eq!(
            batch_url_for("https://www.googleapis.com/calendar/v3/"),
            "https://www.googleapis.com/batch/calendar/v3"
        );
        assert_eq!(
            batch_url_for("http://127.0.0.1:8080/calendar/v3"),
            "http://127.0.0.1:8080/batch/calendar/v3"
        );
        assert_eq!(
            batch_url_for("https://proxy.example/google/calendar/v3/"),
            "https://proxy.example/batch/google/calendar/v3"
        );
        assert_eq!(
            base_path("https://www.googleapis.com/calendar/v3/"),
            "/calendar/v3/"
        );
        assert_eq!(base_path("http://127.0.0.1:1/calendar/v3"), "/calendar/v3/");
        assert_eq!(base_path("http://127.0.0.1:1"), "/");
    }

    #[test]
    fn rate_limits_are_read_from_status_and_reason() {
        let answer = |status, reason: &str| InnerResponse {
            content_id: None,
            status,
            headers: Vec::new(),
            body: format!(r#"{{"error":{{"errors":[{{"reason":"{reason}"}}]}}}}"#).into_bytes(),
        };
        assert!(rate_limited(&answer(429, "x")));
        assert!(rate_limited(&answer(403, "userRateLimitExceeded")));
        assert!(rate_limited(&answer(403, "rateLimitExceeded")));
        assert!(!rate_limited(&answer(403, "quotaExceeded")));
        assert!(!rate_limited(&answer(409, "duplicate")));
    }

    #[test]
    fn only_statuses_that_deny_the_endpoint_turn_batching_off() {
        for s in [400, 404, 405, 410, 501] {
            assert!(unavailable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [401, 403, 429, 500, 503] {
            assert!(!unavailable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
