//! The request log and call counters.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Serialize;

/// Which API method a request was routed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ApiMethod {
    /// `POST calendars/{cal}/events`
    Insert,
    /// `GET calendars/{cal}/events/{id}`
    Get,
    /// `GET calendars/{cal}/events`
    List,
    /// `PUT calendars/{cal}/events/{id}`
    Update,
    /// `PATCH calendars/{cal}/events/{id}`
    Patch,
    /// `DELETE calendars/{cal}/events/{id}`
    Delete,
    /// `GET calendars/{cal}` (calendars.get)
    CalendarGet,
    /// `POST /token`
    Token,
    /// `POST /batch/calendar/v3` (the HTTP request; each inner call is logged under its own
    /// method, with [`RecordedRequest::batch`] set)
    Batch,
    /// Anything else (answered 404).
    Other,
}

/// What became of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Still being handled (latency, or a hang that has not ended).
    Pending,
    /// A response was sent.
    Replied,
    /// The connection was closed without a response (`CommittedReplyLost`, `ConnectionReset`).
    Dropped,
}

/// One request as the fake received it.
#[derive(Clone, Debug, Serialize)]
pub struct RecordedRequest {
    /// Position in the log, from 0 (not reset by `clear_requests`).
    pub seq: usize,
    /// When it arrived.
    pub at: SystemTime,
    /// HTTP method, upper case.
    pub method: String,
    /// Path as sent (still percent-encoded).
    pub path: String,
    /// Query string as sent (without `?`), empty if none.
    pub query: String,
    /// All headers, in order, names lower case (Authorization included).
    pub headers: Vec<(String, String)>,
    /// Body (lossy UTF-8).
    pub body: String,
    /// The method it was routed to.
    pub api_method: ApiMethod,
    /// Status answered, or that the fake would have answered before dropping the connection.
    pub status: Option<u16>,
    /// What became of it.
    pub outcome: Outcome,
    /// For a call inside a batch: the `seq` of the batch's HTTP request. `None` for an HTTP
    /// request of its own (count HTTP requests with `batch.is_none()`).
    pub batch: Option<usize>,
}

impl RecordedRequest {
    /// A pending entry for `req`.
    pub(crate) fn new(
        req: &crate::server::Req,
        api_method: ApiMethod,
        batch: Option<usize>,
    ) -> Self {
        RecordedRequest {
            seq: 0,
            at: SystemTime::now(),
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&req.body).into_owned(),
            api_method,
            status: None,
            outcome: Outcome::Pending,
            batch,
        }
    }

    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Decoded query parameters, in order (repeated names repeat).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }

    /// The body parsed as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Log plus counters.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    pub entries: Vec<RecordedRequest>,
    /// Sequence number of `entries[0]` (entries before it were cleared).
    base: usize,
    pub calls: HashMap<ApiMethod, u64>,
}

impl RequestLog {
    pub(crate) fn record(&mut self, mut r: RecordedRequest) -> usize {
        *self.calls.entry(r.api_method).or_default() += 1;
        r.seq = self.base + self.entries.len();
        let seq = r.seq;
        self.entries.push(r);
        seq
    }

    pub(crate) fn clear(&mut self) {
        self.base += self.entries.len();
        self.entries.clear();
    }

    pub(crate) fn finish(&mut self, seq: usize, status: Option<u16>, outcome: Outcome) {
        let Some(i) = seq.checked_sub(self.base) else {
            return;
        };
        if let Some(e) = self.entries.get_mut(i) {
            e.status = status;
            e.outcome = outcome;
        }
    }
}
