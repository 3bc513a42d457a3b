//! `POST /batch/calendar/v3`, driven with raw HTTP and a multipart body written here (no
//! calendar-sync code): same state as single calls, per-part faults, whole-batch faults.

mod common;

use bytes::Bytes;
use common::*;
use fake_google::{ApiMethod, FakeGoogle, Fault, FaultKind, Outcome, QuotaConfig};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const B: &str = "batch_test_boundary";

/// One inner call: method, path (from the root), JSON body.
type Call = (&'static str, String, Option<Value>);

fn events_path(cal: &str) -> String {
    format!("/calendar/v3/calendars/{}/events", cal.replace('@', "%40"))
}

fn body_of(calls: &[Call]) -> String {
    let mut out = String::new();
    for (i, (method, path, body)) in calls.iter().enumerate() {
        out.push_str(&format!(
            "--{B}\r\nContent-Type: application/http\r\nContent-ID: <item-{}>\r\n\r\n{method} {path} HTTP/1.1\r\n",
            i + 1
        ));
        match body {
            Some(b) => out.push_str(&format!("Content-Type: application/json\r\n\r\n{b}\r\n")),
            None => out.push_str("\r\n\r\n"),
        }
    }
    out.push_str(&format!("--{B}--\r\n"));
    out
}

/// POSTs a batch; `Err` when the connection closed without an answer.
async fn post(
    g: &FakeGoogle,
    auth: Option<&str>,
    content_type: &str,
    body: String,
) -> Result<(u16, hyper::HeaderMap, String), String> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = hyper::Request::builder()
        .method("POST")
        .uri(format!("{}batch/calendar/v3", g.root_url()))
        .header("content-type", content_type);
    if let Some(token) = auth {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        headers,
        String::from_utf8_lossy(&bytes.to_bytes()).into_owned(),
    ))
}

async fn batch(g: &FakeGoogle, token: &str, calls: &[Call]) -> (u16, hyper::HeaderMap, String) {
    post(
        g,
        Some(token),
        &format!("multipart/mixed; boundary={B}"),
        body_of(calls),
    )
    .await
    .expect("an answer")
}

/// One answer part: Content-ID, status, headers (lower-case names), body.
#[derive(Debug)]
struct Part {
    id: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Part {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// The whole parts of a multipart answer, and whether it was closed.
fn parts(headers: &hyper::HeaderMap, body: &str) -> (Vec<Part>, bool) {
    let ct = headers["content-type"].to_str().unwrap();
    let boundary = ct
        .split("boundary=")
        .nth(1)
        .expect("boundary")
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let segs: Vec<&str> = body.split(&*delim).collect();
    let closed = segs.last().is_some_and(|s| s.starts_with("--"));
    let whole = &segs[1..segs.len() - 1];
    let parts = whole
        .iter()
        .map(|seg| {
            let seg = seg
                .strip_prefix("\r\n")
                .unwrap()
                .strip_suffix("\r\n")
                .unwrap();
            let (mime, http) = seg.split_once("\r\n\r\n").unwrap();
            assert!(mime.contains("Content-Type: application/http"), "{mime}");
            let id = mime
                .split("Content-ID: <")
                .nth(1)
                .unwrap()
                .split('>')
                .next()
                .unwrap();
            let (head, body) = http.split_once("\r\n\r\n").unwrap();
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            let headers = lines
                .map(|l| {
                    let (n, v) = l.split_once(": ").unwrap();
                    (n.to_ascii_lowercase(), v.to_string())
                })
                .collect();
            Part {
                id: id.to_string(),
                status,
                headers,
                body: body.to_string(),
            }
        })
        .collect();
    (parts, closed)
}

fn ev(id: &str, summary: &str) -> Value {
    json!({
        "id": id,
        "summary": summary,
        "start": {"dateTime": "2030-05-01T10:00:00Z"},
        "end": {"dateTime": "2030-05-01T11:00:00Z"},
    })
}

fn inserts(ids: &[&str]) -> Vec<Call> {
    ids.iter()
        .map(|id| ("POST", events_path(ALICE), Some(ev(id, id))))
        .collect()
}

/// What matters of the stored events (no server times).
fn state(g: &FakeGoogle) -> Vec<(Value, Value, Value, Value)> {
    g.events(ALICE)
        .into_iter()
        .map(|e| {
            (
                e["id"].clone(),
                e["status"].clone(),
                e["summary"].clone(),
                e["sequence"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_batch_of_writes_gives_the_same_state_as_single_calls() {
    let round1 = inserts(&["evta1", "evta2", "evta3"]);
    let round2: Vec<Call> = vec![
        (
            "PUT",
            format!("{}/evta1", events_path(ALICE)),
            Some(ev("evta1", "renamed")),
        ),
        ("DELETE", format!("{}/evta2", events_path(ALICE)), None),
        ("POST", events_path(ALICE), Some(ev("evta4", "four"))),
    ];

    let batched = fake().await;
    let token = access_token(&batched, REFRESH).await;
    let (s, h, body) = batch(&batched, &token, &round1).await;
    assert_eq!(s, 200);
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("multipart/mixed; boundary=")
    );
    let (p, closed) = parts(&h, &body);
    assert!(closed);
    let ids: Vec<_> = p.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        ["response-item-1", "response-item-2", "response-item-3"]
    );
    assert!(p.iter().all(|p| p.status == 200));
    assert_eq!(p[1].json()["id"], "evta2");
    assert!(
        p[1].header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let (s, h, body) = batch(&batched, &token, &round2).await;
    assert_eq!(s, 200);
    let statuses: Vec<_> = parts(&h, &body).0.iter().map(|p| p.status).collect();
    assert_eq!(statuses, [200, 204, 200]);

    let single = fake().await;
    let token1 = access_token(&single, REFRESH).await;
    for (method, path, body) in round1.iter().chain(&round2) {
        let path = path.strip_prefix("/calendar/v3/").unwrap();
        let (s, _, _) = cal_raw(&single, &token1, method, path, &[], body.clone()).await;
        assert!(s == 200 || s == 204, "{method} {path}: {s}");
    }
    assert_eq!(state(&batched), state(&single));
    assert_eq!(state(&batched).len(), 4);

    // Two HTTP requests (plus the token call) carried six calls.
    let log = batched.requests();
    let http: Vec<_> = log.iter().filter(|r| r.batch.is_none()).collect();
    let inner: Vec<_> = log.iter().filter(|r| r.batch.is_some()).collect();
    assert_eq!(http.len(), 3);
    assert_eq!(inner.len(), 6);
    assert_eq!(batched.calls(ApiMethod::Batch), 2);
    assert_eq!(batched.calls(ApiMethod::Insert), 4);
    assert_eq!(batched.calls(ApiMethod::Delete), 1);
    let outer = http
        .iter()
        .find(|r| r.api_method == ApiMethod::Batch)
        .unwrap();
    assert_eq!((outer.status, outer.outcome), (Some(200), Outcome::Replied));
    assert!(inner.iter().take(3).all(|r| r.batch == Some(outer.seq)));
    // Inner calls carry the outer Authorization.
    assert_eq!(
        inner[0].header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(inner[0].path, events_path(ALICE));
}

#[tokio::test]
async fn per_part_faults_429_with_retry_after_and_409s() {
    let g = fake().await;
    let token = access_token(&g, REFRESH).await;
    g.create_event(ALICE, ev("taken1", "already there"));
    g.inject(
        Fault::new(FaultKind::TooManyRequests {
            retry_after: Some(7),
        })
        .method("POST")
        .path("/events"),
    );
    g.inject(Fault::new(FaultKind::Conflict).path("/events/evtc4"));
    let mut calls = inserts(&["evtc1", "evtc2", "taken1"]);
    calls.push((
        "PUT",
        format!("{}/evtc4", events_path(ALICE)),
        Some(ev("evtc4", "x")),
    ));
    let (s, h, body) = batch(&g, &token, &calls).await;
    assert_eq!(s, 200, "inner failures leave the batch 200");
    let (p, closed) = parts(&h, &body);
    assert!(closed);
    let got: Vec<_> = p
        .iter()
        .map(|p| (p.status, p.json()["error"]["errors"][0]["reason"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (429, json!("rateLimitExceeded")),
            (200, Value::Null),
            (409, json!("duplicate")),
            (409, json!("conflict")),
        ]
    );
    assert_eq!(p[0].header("retry-after"), Some("7"));
    assert_eq!(p[0].json()["error"]["code"], 429);
    let ids: Vec<_> = g.events(ALICE).iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids, [json!("taken1"), json!("evtc2")]);
    assert_eq!(g.pending_faults(), 0);
}

#[tokio::test]
async fn the_whole_batch_503_does_nothing() {
    let g = fake().await;
    let token = access_token(&g, REFRESH).await;
    g.inject(Fault::new(FaultKind::ServiceUnavailable).path("/batch"));
    let (s, h, body) = batch(&g, &token, &inserts(&["evtd1", "evtd2"])).await;
    assert_eq!(s, 503);
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], 503);
    assert!(g.events(ALICE).is_empty());
    assert!(g.requests().iter().all(|r| r.batch.is_none()));
    // The same batch again goes through.
    let (s, _, _) = batch(&g, &token, &inserts(&["evtd1", "evtd2"])).await;
    assert_eq!((s, g.events(ALICE).len()), (200, 2));
}

#[tokio::test]
async fn a_cut_answer_stops_mid_part_after_every_call_was_made() {
    let g = fake().await;
    let token = access_token(&g, REFRESH).await;
    g.inject(Fault::new(FaultKind::BatchCut { after_parts: 1 }).path("/batch"));
    let (s, h, body) = batch(&g, &token, &inserts(&["evte1", "evte2", "evte3"])).await;
    assert_eq!(s, 200);
    assert_eq!(h.get("connection").unwrap(), "close");
    let (p, closed) = parts(&h, &body);
    assert!(!closed, "no closing delimiter");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].json()["id"], "evte1");
    assert!(!body.contains("response-item-3"));
    assert_eq!(g.events(ALICE).len(), 3, "the calls were all made");

    // Cut after the last part: every part whole, the closing delimiter missing.
    g.inject(Fault::new(FaultKind::BatchCut { after_parts: 9 }).path("/batch"));
    let (_, h, body) = batch(&g, &token, &inserts(&["evte4", "evte5"])).await;
    let (p, closed) = parts(&h, &body);
    assert_eq!(
        (p.len(), closed),
        (1, false),
        "the last part has no delimiter after it"
    );
    assert!(body.contains("\"evte5\""));
}

#[tokio::test]
async fn an_inner_committed_reply_lost_drops_the_batch_after_the_writes() {
    let g = fake().await;
    let token = access_token(&g, REFRESH).await;
    g.inject(Fault::new(FaultKind::CommittedReplyLost).path("/events"));
    let r = post(
        &g,
        Some(&token),
        &format!("multipart/mixed; boundary={B}"),
        body_of(&inserts(&["evtf1", "evtf2"])),
    )
    .await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(g.events(ALICE).len(), 2);
    let outer = g
        .requests()
        .into_iter()
        .find(|r| r.api_method == ApiMethod::Batch)
        .unwrap();
    assert_eq!(outer.outcome, Outcome::Dropped);
}

#[tokio::test]
async fn an_absent_endpoint_answers_404_html() {
    let g = fake().await;
    let token = access_token(&g, REFRESH).await;
    g.set_batch_endpoint(false);
    let (s, h, body) = batch(&g, &token, &inserts(&["evtg1"])).await;
    assert_eq!(s, 404);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(body.contains("404"));
    assert!(g.events(ALICE).is_empty());
    // Through the admin API, for an out-of-process fake.
    let (s, _, _) = raw(
        "POST",
        &format!("{}batch", g.admin_url()),
        &[],
        Some(r#"{"enabled": true}"#.into()),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, _) = batch(&g, &token, &inserts(&["evtg1"])).await;
    assert_eq!(s, 200);
    // The global endpoint was retired in 2020.
    let (s, _, _) = raw("POST", &format!("{}batch", g.root_url()), &[], None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn the_outer_bearer_is_checked() {
    let g = fake().await;
    let ct = format!("multipart/mixed; boundary={B}");
    let (s, _, body) = post(&g, None, &ct, body_of(&inserts(&["evth1"])))
        .await
        .unwrap();
    assert_eq!(s, 401, "{body}");
    let (s, _, _) = post(&g, Some("not-a-token"), &ct, body_of(&inserts(&["evth1"])))
        .await
        .unwrap();
    assert_eq!(s, 401);
    assert!(g.events(ALICE).is_empty());
}

#[tokio::test]
async fn malformed_batches_answer_400() {
    let g = fake().await;
    let token = access_token(&g, REFRESH).await;
    let body = body_of(&inserts(&["evti1"]));
    for ct in [
        "multipart/mixed",
        "application/json",
        "multipart/mixed; boundary=other",
    ] {
        let (s, _, _) = post(&g, Some(&token), ct, body.clone()).await.unwrap();
        assert_eq!(s, 400, "{ct}");
    }
    let cut = body[..body.len() - 10].to_string();
    let (s, _, _) = post(
        &g,
        Some(&token),
        &format!("multipart/mixed; boundary={B}"),
        cut,
    )
    .await
    .unwrap();
    assert_eq!(s, 400);
    assert!(g.events(ALICE).is_empty());
    // LF-only lines and a quoted boundary are fine; a call outside the Calendar API is 404.
    let lf = body_of(&[
        ("POST", events_path(ALICE), Some(ev("evti2", "x"))),
        ("POST", "/token".to_string(), None),
    ])
    .replace("\r\n", "\n");
    let (s, h, answer) = post(
        &g,
        Some(&token),
        &format!("multipart/mixed; boundary=\"{B}\""),
        lf,
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    let statuses: Vec<_> = parts(&h, &answer).0.iter().map(|p| p.status).collect();
    assert_eq!(statuses, [200, 404]);
}

#[tokio::test]
async fn quota_counts_each_inner_call() {
    let g = fake().await;
    let token = access_token(&g, REFRESH).await;
    g.set_quota(Some(QuotaConfig {
        per_user: 3,
        ..QuotaConfig::google()
    }));
    let (s, h, body) = batch(
        &g,
        &token,
        &inserts(&["evtj1", "evtj2", "evtj3", "evtj4", "evtj5"]),
    )
    .await;
    assert_eq!(s, 200);
    let statuses: Vec<_> = parts(&h, &body).0.iter().map(|p| p.status).collect();
    assert_eq!(statuses, [200, 200, 200, 403, 403]);
    assert_eq!(g.quota_rejections(), 2);
}
