//! `POST /batch/calendar/v3`: Google's per-API batch endpoint (fact sheet §6).
//!
//! The body is `multipart/mixed`, one `application/http` part per call; each inner call goes
//! through the same pipeline as a single call (its own log entry, fault, auth, quota, state),
//! and the answer is `multipart/mixed` with one HTTP response per part, in request order,
//! `Content-ID: <response-{request's id}>`. Kept independent of calendar-sync's codec on
//! purpose: the fake checks the library, not itself.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use rand::Rng as _;
use rand::distr::Alphanumeric;

use crate::errors::ApiError;
use crate::faults::Action;
use crate::log::{Outcome, RecordedRequest};
use crate::server::{Req, Resp, Route, api_error_response, raw_response};
use crate::state::Shared;

/// Google's limit: "You're limited to 1000 calls in a single batch request".
pub const MAX_BATCH_CALLS: usize = 1000;

/// One inner request of a batch.
#[derive(Debug)]
struct InnerCall {
    content_id: Option<String>,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// The `boundary` parameter of a `multipart/mixed` Content-Type (quoted or not).
fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    if !params
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/mixed")
    {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

/// Lines of `b` as (start, end without the line break, next start).
fn lines(b: &[u8]) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= b.len() {
            return None;
        }
        let nl = b[pos..].iter().position(|&c| c == b'\n').map(|i| pos + i);
        let next = nl.map_or(b.len(), |i| i + 1);
        let mut end = nl.unwrap_or(b.len());
        if end > pos && b[end - 1] == b'\r' {
            end -= 1;
        }
        let line = (pos, end, next);
        pos = next;
        Some(line)
    })
}

/// Splits the body into parts; an error names what is wrong (answered 400).
fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Vec<InnerCall>, &'static str> {
    let b = boundary(content_type.unwrap_or("")).ok_or("Invalid multipart request")?;
    let (open, close) = (format!("--{b}"), format!("--{b}--"));
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    for (s, e, next) in lines(body) {
        let line = String::from_utf8_lossy(&body[s..e]);
        let line = line.trim_end();
        if line != open && line != close {
            continue;
        }
        if let Some(p) = start {
            // The line break before a delimiter belongs to it.
            let mut end = s;
            if end > p && body[end - 1] == b'\n' {
                end -= 1;
                if end > p && body[end - 1] == b'\r' {
                    end -= 1;
                }
            }
            parts.push(call(&body[p..end])?);
            if parts.len() > MAX_BATCH_CALLS {
                return Err("Too many requests in a batch (more than 1000)");
            }
        }
        if line == close {
            return Ok(parts);
        }
        start = Some(next);
    }
    Err("Unterminated multipart body")
}

/// Header lines from `pos` to the blank line; returns them and where the rest starts.
fn header_block(b: &[u8], pos: usize) -> (Vec<(String, String)>, usize) {
    let mut out = Vec::new();
    for (s, e, next) in lines(&b[pos..]) {
        if s == e {
            return (out, pos + next);
        }
        let line = String::from_utf8_lossy(&b[pos + s..pos + e]);
        if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (out, b.len())
}

fn call(part: &[u8]) -> Result<InnerCall, &'static str> {
    let (mime, pos) = header_block(part, 0);
    let mut content_id = None;
    for (k, v) in &mime {
        if k.eq_ignore_ascii_case("content-type")
            && !v.to_ascii_lowercase().starts_with("application/http")
        {
            return Err("Each part must be Content-Type: application/http");
        }
        if k.eq_ignore_ascii_case("content-id") {
            content_id = Some(v.trim_start_matches('<').trim_end_matches('>').to_string());
        }
    }
    let (s, e, next) = lines(&part[pos..])
        .find(|(s, e, _)| s != e)
        .ok_or("Missing request line")?;
    let request_line = String::from_utf8_lossy(&part[pos + s..pos + e]).into_owned();
    let mut words = request_line.split_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Err("Bad request line");
    };
    let (headers, body_at) = header_block(part, pos + next);
    Ok(InnerCall {
        content_id,
        method: method.to_ascii_uppercase(),
        target: target.to_string(),
        headers,
        body: Bytes::copy_from_slice(&part[body_at..]),
    })
}

/// The inner request: outer headers (but `Content-*`) overridden by the part's own.
fn inner_req(outer: &Req, c: &InnerCall) -> Req {
    let mut headers = outer.headers.clone();
    let content: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("content-"))
        .cloned()
        .collect();
    for k in content {
        headers.remove(k);
    }
    for (k, v) in &c.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    let (path, query) = c.target.split_once('?').unwrap_or((&c.target, ""));
    Req {
        method: c.method.clone(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: c.body.clone(),
    }
}

/// What became of a batch: an answer, or the connection must close without one.
pub(crate) enum Reply {
    Answer(Resp),
    Drop,
}

/// Handles a batch request (outer fault already applied). `cut`: answer only that many
/// parts whole, then stop in the middle of the next one (the calls are all made).
pub(crate) async fn handle(shared: &Arc<Shared>, req: &Req, seq: usize, cut: Option<u32>) -> Reply {
    let (enabled, shape, auth) = {
        let st = shared.lock();
        let auth = st.oauth.authenticate(req.header("authorization")).err();
        (st.settings.batch_endpoint, st.settings.error_shape, auth)
    };
    if !enabled {
        return Reply::Answer(raw_response(
            404,
            "text/html; charset=UTF-8",
            "<!DOCTYPE html><html><title>Error 404 (Not Found)!!1</title><p>The requested URL was not found on this server.</p></html>",
        ));
    }
    if let Some(e) = auth {
        return Reply::Answer(api_error_response(&e, shape));
    }
    let calls = match parse(req.header("content-type"), &req.body) {
        Ok(c) => c,
        Err(msg) => return Reply::Answer(api_error_response(&ApiError::bad_request(msg), shape)),
    };
    let mut answers = Vec::with_capacity(calls.len());
    let mut drop_after = false;
    for (i, c) in calls.iter().enumerate() {
        let inner = inner_req(req, c);
        let route = match Route::parse(&inner.method, &inner.path) {
            r @ (Route::Events(..) | Route::Calendar(_)) => r,
            // Only Calendar calls are batched ("All the inner requests must go to the same
            // Google API").
            _ => Route::NotFound,
        };
        let (inner_seq, action, shape) = {
            let mut st = shared.lock();
            let rec = RecordedRequest::new(&inner, route.api_method(), Some(seq));
            let inner_seq = st.log.record(rec);
            let decoded = crate::server::decode(&inner.path);
            let action = st.faults.take(&inner.method, &decoded);
            (inner_seq, action, st.settings.error_shape)
        };
        let resp = match action {
            Some(Action::Hang) => std::future::pending().await,
            Some(Action::ConnectionReset) => {
                shared.lock().log.finish(inner_seq, None, Outcome::Dropped);
                return Reply::Drop;
            }
            Some(Action::Error(e)) => api_error_response(&e, shape),
            Some(Action::Raw(status, ct, body)) => raw_response(status, &ct, &body),
            Some(Action::Late(delay)) => {
                tokio::time::sleep(delay).await;
                crate::api::dispatch(shared, &route, &inner)
            }
            Some(Action::CommittedReplyLost) => {
                drop_after = true;
                crate::api::dispatch(shared, &route, &inner)
            }
            Some(Action::BatchCut(_)) | None => crate::api::dispatch(shared, &route, &inner),
        };
        let status = resp.status().as_u16();
        let outcome = if drop_after {
            Outcome::Dropped
        } else {
            Outcome::Replied
        };
        shared.lock().log.finish(inner_seq, Some(status), outcome);
        let id = c
            .content_id
            .clone()
            .unwrap_or_else(|| format!("item-{}", i + 1));
        answers.push((id, resp));
    }
    if drop_after {
        return Reply::Drop;
    }
    let boundary: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    let boundary = format!("batch_{boundary}");
    let mut body = Vec::new();
    let mut cut_at = None;
    for (i, (id, resp)) in answers.into_iter().enumerate() {
        let part_start = body.len();
        let (parts, payload) = resp.into_parts();
        let payload = payload
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let reason = parts.status.canonical_reason().unwrap_or("");
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <response-{id}>\r\n\r\nHTTP/1.1 {} {reason}\r\n",
                parts.status.as_u16()
            )
            .as_bytes(),
        );
        for (k, v) in &parts.headers {
            body.extend_from_slice(k.as_str().as_bytes());
            body.extend_from_slice(b": ");
            body.extend_from_slice(v.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("Content-Length: {}\r\n\r\n", payload.len()).as_bytes());
        body.extend_from_slice(&payload);
        body.extend_from_slice(b"\r\n");
        if cut.is_some_and(|n| usize::try_from(n).is_ok_and(|n| n == i)) {
            // Stop in the middle of this part.
            cut_at = Some(part_start + (body.len() - part_start) / 2);
        }
    }
    match cut_at {
        Some(at) => body.truncate(at),
        // Asked to cut after the last part: no closing delimiter.
        None if cut.is_some() => {}
        None => body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes()),
    }
    let mut r = hyper::Response::new(http_body_util::Full::new(Bytes::from(body)));
    if let Ok(v) = HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}")) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    if cut.is_some() {
        r.headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
    }
    Reply::Answer(r)
}
