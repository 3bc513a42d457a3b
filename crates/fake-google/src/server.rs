//! The HTTP side: accept loop, per-connection tasks (so a fault can drop a connection without
//! answering), the request pipeline (log -> latency -> fault -> route) and routing.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::api;
use crate::errors::{ApiError, ErrorShape, OAuthError};
use crate::faults::{Action, oauth_error_for};
use crate::log::{ApiMethod, Outcome, RecordedRequest};
use crate::state::Shared;

pub(crate) type Resp = Response<Full<Bytes>>;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Calendar events call: method, calendar id, event id (decoded).
    Events(ApiMethod, String, Option<String>),
    /// calendars.get: calendar id (decoded).
    Calendar(String),
    /// `POST /batch/calendar/v3`.
    Batch,
    Token,
    Admin,
    NotFound,
}

pub(crate) fn decode(seg: &str) -> String {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8_lossy()
        .into_owned()
}

impl Route {
    pub(crate) fn parse(method: &str, path: &str) -> Route {
        if path == "/token" {
            return if method == "POST" {
                Route::Token
            } else {
                Route::NotFound
            };
        }
        if path == "/batch/calendar/v3" {
            return if method == "POST" {
                Route::Batch
            } else {
                Route::NotFound
            };
        }
        if path.starts_with("/_fake/") {
            return Route::Admin;
        }
        let Some(rest) = path.strip_prefix("/calendar/v3/calendars/") else {
            return Route::NotFound;
        };
        let segs: Vec<&str> = rest.split('/').collect();
        match (method, segs.as_slice()) {
            ("GET", [cal]) if !cal.is_empty() => Route::Calendar(decode(cal)),
            ("POST", [cal, "events"]) => Route::Events(ApiMethod::Insert, decode(cal), None),
            ("GET", [cal, "events"]) => Route::Events(ApiMethod::List, decode(cal), None),
            (m, [cal, "events", id]) if !id.is_empty() => {
                let am = match m {
                    "GET" => ApiMethod::Get,
                    "PUT" => ApiMethod::Update,
                    "PATCH" => ApiMethod::Patch,
                    "DELETE" => ApiMethod::Delete,
                    _ => return Route::NotFound,
                };
                Route::Events(am, decode(cal), Some(decode(id)))
            }
            _ => Route::NotFound,
        }
    }

    pub(crate) fn api_method(&self) -> ApiMethod {
        match self {
            Route::Batch => ApiMethod::Batch,
            Route::Events(m, _, _) => *m,
            Route::Calendar(_) => ApiMethod::CalendarGet,
            Route::Token => ApiMethod::Token,
            _ => ApiMethod::Other,
        }
    }
}

/// A request with its body read.
#[derive(Debug)]
pub(crate) struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub(crate) fn query_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }
}

/// A JSON response.
pub(crate) fn json_response(status: u16, body: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    r
}

/// An empty response.
pub(crate) fn empty_response(status: u16) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::NO_CONTENT);
    r
}

/// A Calendar API error response.
pub(crate) fn api_error_response(e: &ApiError, shape: ErrorShape) -> Resp {
    let mut r = json_response(e.status, &e.body(shape));
    if let Some(s) = e.retry_after {
        r.headers_mut().insert("retry-after", HeaderValue::from(s));
    }
    if let Some(date) = e
        .retry_after_date
        .as_deref()
        .and_then(|d| HeaderValue::from_str(d).ok())
    {
        r.headers_mut().insert("retry-after", date);
    }
    if e.status == 401 {
        r.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static(
                "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
            ),
        );
    }
    r
}

/// A token endpoint error response.
pub(crate) fn oauth_error_response(e: &OAuthError) -> Resp {
    let mut r = json_response(e.status, &e.body());
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

pub(crate) fn raw_response(status: u16, content_type: &str, body: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

/// Accepts connections until shutdown.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                shared.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(serve_connection(stream, shared.clone()));
            }
            _ = shutdown.wait_for(|v| *v) => break,
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let kill = Arc::new(Notify::new());
    let svc = {
        let (shared, kill) = (shared.clone(), kill.clone());
        hyper::service::service_fn(move |req| handle(shared.clone(), kill.clone(), req))
    };
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        // Dropping the connection future closes the socket with no response written.
        _ = kill.notified() => {}
        _ = shared.shut_down() => {}
    }
}

async fn handle(
    shared: Arc<Shared>,
    kill: Arc<Notify>,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let req = Req {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body,
    };
    let route = Route::parse(&req.method, &req.path);
    if route == Route::Admin {
        return Ok(crate::admin::handle(&shared, &req));
    }
    let decoded_path = decode(&req.path);
    let (seq, latency, action, shape) = {
        let mut st = shared.lock();
        let rec = RecordedRequest::new(&req, route.api_method(), None);
        let seq = st.log.record(rec);
        let latency = st.settings.latency_for(&req.method);
        let action = st.faults.take(&req.method, &decoded_path);
        (seq, latency, action, st.settings.error_shape)
    };
    tracing::debug!(method = %req.method, path = %req.path, ?action, "fake-google request");
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let drop_connection = |status: Option<u16>| {
        shared.lock().log.finish(seq, status, Outcome::Dropped);
        kill.notify_one();
    };
    let resp = match &action {
        Some(Action::Hang) => {
            // Never answer; the connection task drops this future on shutdown.
            std::future::pending::<()>().await;
            unreachable!("pending never resolves")
        }
        Some(Action::ConnectionReset) => {
            drop_connection(None);
            std::future::pending::<()>().await;
            unreachable!("pending never resolves")
        }
        Some(Action::Error(e)) => match route {
            Route::Token => oauth_error_response(&oauth_error_for(e)),
            _ => api_error_response(e, shape),
        },
        Some(Action::Raw(status, ct, body)) => raw_response(*status, ct, body),
        Some(Action::Late(delay)) => {
            // On its own task: the client giving up closes the connection, which must not
            // stop the write from landing.
            let (shared, delay) = (shared.clone(), *delay);
            let late = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let Some(resp) = respond(&shared, &route, &req, seq, None).await else {
                    shared.lock().log.finish(seq, Some(200), Outcome::Dropped);
                    return empty_response(500);
                };
                let status = resp.status().as_u16();
                shared
                    .lock()
                    .log
                    .finish(seq, Some(status), Outcome::Replied);
                resp
            });
            return Ok(late.await.unwrap_or_else(|_| empty_response(500)));
        }
        Some(Action::BatchCut(n)) => match respond(&shared, &route, &req, seq, Some(*n)).await {
            Some(resp) => resp,
            None => {
                drop_connection(Some(200));
                std::future::pending::<()>().await;
                unreachable!("pending never resolves")
            }
        },
        Some(Action::CommittedReplyLost) | None => {
            match respond(&shared, &route, &req, seq, None).await {
                Some(resp) => resp,
                None => {
                    drop_connection(Some(200));
                    std::future::pending::<()>().await;
                    unreachable!("pending never resolves")
                }
            }
        }
    };
    let status = resp.status().as_u16();
    if matches!(action, Some(Action::CommittedReplyLost)) {
        drop_connection(Some(status));
        std::future::pending::<()>().await;
    }
    shared
        .lock()
        .log
        .finish(seq, Some(status), Outcome::Replied);
    Ok(resp)
}

/// Handles a routed request whose fault (if any) lets it through; `None`: close the
/// connection without an answer (a batch whose inner call asked for it).
async fn respond(
    shared: &Arc<Shared>,
    route: &Route,
    req: &Req,
    seq: usize,
    cut: Option<u32>,
) -> Option<Resp> {
    if *route != Route::Batch {
        return Some(api::dispatch(shared, route, req));
    }
    match crate::batch::handle(shared, req, seq, cut).await {
        crate::batch::Reply::Answer(r) => Some(r),
        crate::batch::Reply::Drop => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            Route::parse("GET", "/calendar/v3/calendars/a%40b.com/events/abcde"),
            Route::Events(ApiMethod::Get, "a@b.com".into(), Some("abcde".into()))
        );
        assert_eq!(
            Route::parse("POST", "/calendar/v3/calendars/primary/events"),
            Route::Events(ApiMethod::Insert, "primary".into(), None)
        );
        assert_eq!(Route::parse("POST", "/token"), Route::Token);
        assert_eq!(Route::parse("POST", "/batch/calendar/v3"), Route::Batch);
        assert_eq!(Route::parse("GET", "/batch/calendar/v3"), Route::NotFound);
        assert_eq!(Route::parse("POST", "/batch"), Route::NotFound);
        assert_eq!(
            Route::parse("GET", "/calendar/v3/calendars/a%40b.com"),
            Route::Calendar("a@b.com".into())
        );
        assert_eq!(
            Route::parse("POST", "/calendar/v3/calendars/c/events/x"),
            Route::NotFound
        );
    }
}
