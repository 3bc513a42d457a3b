//! Shared test helpers: a real `google-calendar3` hub wired to the fake over plain HTTP, and a
//! tiny raw HTTP client for what the hub cannot send (If-Match, `null` in a patch, …).
#![allow(dead_code)]

use bytes::Bytes;
use fake_google::FakeGoogle;
use google_calendar3::CalendarHub;
use google_calendar3::api::Event;
use google_calendar3::common::Error;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

pub const CLIENT_ID: &str = "client-1.apps.example";
pub const CLIENT_SECRET: &str = "secret-1";
pub const REFRESH: &str = "1//refresh-alice";
pub const ALICE: &str = "alice@example.com";

pub type Hub = CalendarHub<HttpConnector>;

/// A hub whose HTTP client speaks plain HTTP/1 to the fake, authenticated with `token`
/// (`String` implements google-apis-common's `GetToken`).
pub fn hub(g: &FakeGoogle, token: String) -> Hub {
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut hub = CalendarHub::new(client, token);
    hub.base_url(g.calendar_base_url());
    hub.root_url(g.root_url());
    hub
}

/// A fake with one client, one refresh token for alice and alice's calendar.
pub async fn fake() -> FakeGoogle {
    let g = FakeGoogle::start().await;
    g.add_client(CLIENT_ID, CLIENT_SECRET);
    g.add_refresh_token(REFRESH, CLIENT_ID, ALICE);
    g.add_calendar(ALICE);
    g
}

/// A fake plus a hub holding an access token obtained from the fake's /token.
pub async fn setup() -> (FakeGoogle, Hub) {
    let g = fake().await;
    let token = access_token(&g, REFRESH).await;
    let h = hub(&g, token);
    (g, h)
}

/// Refresh grant through the token endpoint (client_secret_post); panics unless 200.
pub async fn access_token(g: &FakeGoogle, refresh: &str) -> String {
    let (status, body) = refresh_grant(g, CLIENT_ID, CLIENT_SECRET, refresh).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

pub async fn refresh_grant(
    g: &FakeGoogle,
    client: &str,
    secret: &str,
    refresh: &str,
) -> (u16, Value) {
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "refresh_token")
        .append_pair("client_id", client)
        .append_pair("client_secret", secret)
        .append_pair("refresh_token", refresh)
        .finish();
    let (s, _, b) = raw(
        "POST",
        &g.token_url(),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form),
    )
    .await;
    (s, b)
}

/// One raw HTTP request; returns status, headers and the body as JSON (`Null` if empty or not
/// JSON).
pub async fn raw(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (u16, hyper::HeaderMap, Value) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let resp = client.request(req).await.expect("raw request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Raw Calendar call with a bearer token; `path` is relative to the calendar base URL.
pub async fn cal_raw(
    g: &FakeGoogle,
    token: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, hyper::HeaderMap, Value) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    raw(
        method,
        &format!("{}{path}", g.calendar_base_url()),
        &headers,
        body.map(|b| b.to_string()),
    )
    .await
}

/// An event body (timed, one hour) with optional id and private properties.
pub fn event(id: Option<&str>, summary: &str, private: Value) -> Event {
    let mut v = json!({
        "summary": summary,
        "start": {"dateTime": "2030-05-01T10:00:00+02:00"},
        "end": {"dateTime": "2030-05-01T11:00:00+02:00"},
        "extendedProperties": {"private": private},
    });
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    serde_json::from_value(v).unwrap()
}

/// Unwraps `Error::BadRequest(body)`, the way google-calendar3 reports non-2xx JSON answers.
pub fn bad_request(r: Result<impl std::fmt::Debug, Error>) -> Value {
    match r {
        Err(Error::BadRequest(v)) => v,
        other => panic!("expected Error::BadRequest, got {other:?}"),
    }
}

/// (code, reason) from a Google error body.
pub fn code_reason(v: &Value) -> (u64, String) {
    (
        v["error"]["code"].as_u64().unwrap(),
        v["error"]["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

/// The connector a production adapter would use (rustls, native roots) with `https_or_http()`,
/// so the same hub type also talks plain HTTP to the fake.
pub type HttpsConn = hyper_rustls::HttpsConnector<HttpConnector>;

pub fn https_or_http_hub(g: &FakeGoogle, token: String) -> CalendarHub<HttpsConn> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .expect("native root certificates")
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let mut hub = CalendarHub::new(client, token);
    hub.base_url(g.calendar_base_url());
    hub.root_url(g.root_url());
    hub
}
