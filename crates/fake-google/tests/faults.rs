//! Fault injection, latency, quota, request log, admin API: and how google-calendar3 7
//! surfaces each failure.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fake_google::{ApiMethod, ErrorShape, FakeGoogle, Fault, FaultKind, Outcome, QuotaConfig};
use google_calendar3::common::{Delegate, Error, Response, Retry};
use serde_json::{Value, json};

#[tokio::test]
async fn error_faults_surface_as_bad_request_with_code_and_reason() {
    let (g, hub) = setup().await;
    let cases = [
        (
            FaultKind::RateLimitExceeded,
            403,
            "rateLimitExceeded",
            "usageLimits",
        ),
        (
            FaultKind::UserRateLimitExceeded,
            403,
            "userRateLimitExceeded",
            "usageLimits",
        ),
        (
            FaultKind::TooManyRequests { retry_after: None },
            429,
            "rateLimitExceeded",
            "usageLimits",
        ),
        (
            FaultKind::QuotaExceeded,
            403,
            "quotaExceeded",
            "usageLimits",
        ),
        (
            FaultKind::InsufficientPermissions,
            403,
            "insufficientPermissions",
            "global",
        ),
        (
            FaultKind::RequiredAccessLevel,
            403,
            "requiredAccessLevel",
            "calendar",
        ),
        (FaultKind::Forbidden, 403, "forbidden", "global"),
        (FaultKind::BackendError, 500, "backendError", "global"),
        (FaultKind::ServiceUnavailable, 503, "backendError", "global"),
    ];
    for (kind, code, reason, domain) in cases {
        g.inject(Fault::new(kind.clone()).method("POST").path("/events"));
        // a GET does not match the fault
        hub.events().list(ALICE).doit().await.unwrap();
        let body = bad_request(
            hub.events()
                .insert(event(None, "x", json!({})), ALICE)
                .doit()
                .await,
        );
        assert_eq!(code_reason(&body), (code, reason.to_string()), "{kind:?}");
        assert_eq!(body["error"]["errors"][0]["domain"], domain);
        assert!(
            body["error"].get("status").is_none(),
            "legacy shape by default"
        );
        assert_eq!(
            g.requests().last().unwrap().status,
            Some(u16::try_from(code).unwrap())
        );
    }
}

#[tokio::test]
async fn quota_exceeded_text_and_with_status_shape() {
    let (g, hub) = setup().await;
    g.inject(Fault::new(FaultKind::QuotaExceeded).shape(ErrorShape::WithStatus));
    let body = bad_request(
        hub.events()
            .insert(event(None, "x", json!({})), ALICE)
            .doit()
            .await,
    );
    assert_eq!(
        body,
        json!({"error": {"errors": [{"domain": "usageLimits", "reason": "quotaExceeded",
            "message": "Calendar usage limits exceeded."}], "code": 403,
            "message": "Calendar usage limits exceeded.", "status": "PERMISSION_DENIED"}})
    );
    g.set_error_shape(ErrorShape::WithStatus);
    g.inject(Fault::new(FaultKind::InsufficientPermissions));
    let body = bad_request(hub.events().list(ALICE).doit().await);
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(
        body["error"]["details"][0]["reason"],
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
    );
    g.inject(Fault::new(FaultKind::BackendError).shape(ErrorShape::Legacy));
    let body = bad_request(hub.events().list(ALICE).doit().await);
    assert!(body["error"].get("status").is_none());
}

/// Captures what only a Delegate can see: the HTTP status and headers of a failure.
#[derive(Default)]
struct Capture {
    status: Option<u16>,
    retry_after: Option<String>,
}

impl Delegate for Capture {
    fn http_failure(&mut self, resp: &Response, _err: Option<&Value>) -> Retry {
        self.status = Some(resp.status().as_u16());
        self.retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        Retry::Abort
    }
}

#[tokio::test]
async fn retry_after_is_only_visible_through_a_delegate() {
    let (g, hub) = setup().await;
    g.inject(
        Fault::new(FaultKind::TooManyRequests {
            retry_after: Some(7),
        })
        .path("/events")
        .times(2),
    );
    let mut cap = Capture::default();
    let body = bad_request(hub.events().list(ALICE).delegate(&mut cap).doit().await);
    assert_eq!(code_reason(&body), (429, "rateLimitExceeded".into()));
    assert_eq!(
        (cap.status, cap.retry_after.as_deref()),
        (Some(429), Some("7"))
    );
    let token = access_token(&g, REFRESH).await;
    let (s, h, _) = cal_raw(
        &g,
        &token,
        "GET",
        &format!("calendars/{ALICE}/events"),
        &[],
        None,
    )
    .await;
    assert_eq!((s, h["retry-after"].to_str().unwrap()), (429, "7"));
}

#[tokio::test]
async fn non_json_error_bodies_surface_as_failure() {
    let (g, hub) = setup().await;
    g.inject(Fault::new(FaultKind::Raw {
        status: 502,
        content_type: "text/html".into(),
        body: "<html><body>Bad Gateway</body></html>".into(),
    }));
    match hub.events().list(ALICE).doit().await {
        Err(Error::Failure(resp)) => assert_eq!(resp.status(), 502),
        other => panic!("expected Failure, got {other:?}"),
    }
}

#[tokio::test]
async fn hang_needs_a_client_side_timeout() {
    let (g, hub) = setup().await;
    g.inject(Fault::new(FaultKind::Hang).method("DELETE"));
    hub.events()
        .insert(event(Some("hang00001"), "x", json!({})), ALICE)
        .doit()
        .await
        .unwrap();
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        hub.events().delete(ALICE, "hang00001").doit(),
    )
    .await;
    assert!(r.is_err(), "the call must still be pending");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let last = g.requests().pop().unwrap();
    assert_eq!(
        (last.api_method, last.outcome, last.status),
        (ApiMethod::Delete, Outcome::Pending, None)
    );
    assert_eq!(
        g.event(ALICE, "hang00001").unwrap()["status"],
        "confirmed",
        "a hang commits nothing"
    );
    // The next call is served normally.
    hub.events()
        .delete(ALICE, "hang00001")
        .doit()
        .await
        .unwrap();
}

#[tokio::test]
async fn committed_reply_lost_applies_the_insert_then_the_retry_meets_409() {
    let (g, hub) = setup().await;
    g.inject(
        Fault::new(FaultKind::CommittedReplyLost)
            .method("POST")
            .path("/events"),
    );
    let r = hub
        .events()
        .insert(event(Some("lost00001"), "x", json!({})), ALICE)
        .doit()
        .await;
    match r {
        Err(Error::HttpError(e)) => {
            let text = format!("{e:?}");
            assert!(
                text.contains("Incomplete") || text.contains("closed"),
                "{text}"
            );
        }
        other => panic!("expected HttpError, got {other:?}"),
    }
    assert_eq!(g.events(ALICE).len(), 1, "the write was committed");
    let log = g.requests();
    let last = log.last().unwrap();
    assert_eq!((last.outcome, last.status), (Outcome::Dropped, Some(200)));
    let body = bad_request(
        hub.events()
            .insert(event(Some("lost00001"), "x", json!({})), ALICE)
            .doit()
            .await,
    );
    assert_eq!(code_reason(&body), (409, "duplicate".into()));
    assert_eq!(g.events(ALICE).len(), 1);
}

#[tokio::test]
async fn connection_reset_commits_nothing() {
    let (g, hub) = setup().await;
    g.inject(Fault::new(FaultKind::ConnectionReset).method("POST"));
    let r = hub
        .events()
        .insert(event(Some("reset0001"), "x", json!({})), ALICE)
        .doit()
        .await;
    assert!(matches!(r, Err(Error::HttpError(_))), "{r:?}");
    assert!(g.events(ALICE).is_empty());
    assert_eq!(g.requests().last().unwrap().outcome, Outcome::Dropped);
}

#[tokio::test]
async fn latency_global_and_per_method() {
    let (g, hub) = setup().await;
    g.set_method_latency("GET", Duration::from_millis(250));
    let t = Instant::now();
    hub.events()
        .insert(event(Some("lat000001"), "x", json!({})), ALICE)
        .doit()
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_millis(200));
    let t = Instant::now();
    hub.events().get(ALICE, "lat000001").doit().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(250));
    g.set_latency(Duration::from_millis(150));
    let t = Instant::now();
    hub.events()
        .delete(ALICE, "lat000001")
        .doit()
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn quota_windows_per_user_and_project() {
    let (g, hub) = setup().await;
    g.set_quota(Some(QuotaConfig {
        window: Duration::from_millis(600),
        per_user: 4,
        per_project: 6,
        reject_status: 429,
    }));
    hub.events()
        .insert(event(Some("quota0001"), "x", json!({})), ALICE)
        .doit()
        .await
        .unwrap();
    // patch costs 3 units: 1 + 3 = 4 = the user's window
    hub.events()
        .patch(
            serde_json::from_value(json!({"summary": "y"})).unwrap(),
            ALICE,
            "quota0001",
        )
        .doit()
        .await
        .unwrap();
    let body = bad_request(hub.events().get(ALICE, "quota0001").doit().await);
    assert_eq!(code_reason(&body), (429, "rateLimitExceeded".into()));
    // Bob (same project) still has room until the project's 6 units are spent.
    g.add_refresh_token("rt-bob", CLIENT_ID, "bob@example.com");
    let bob = hub_for(&g, "rt-bob").await;
    bob.events().list(ALICE).doit().await.unwrap();
    bob.events().list(ALICE).doit().await.unwrap();
    assert_eq!(
        code_reason(&bad_request(bob.events().list(ALICE).doit().await)).0,
        429
    );
    assert_eq!(g.quota_rejections(), 2);
    tokio::time::sleep(Duration::from_millis(650)).await;
    hub.events().get(ALICE, "quota0001").doit().await.unwrap();
    let scaled = QuotaConfig::google().scaled_to(Duration::from_secs(6));
    assert_eq!((scaled.per_user, scaled.per_project), (60, 1000));
}

async fn hub_for(g: &FakeGoogle, refresh: &str) -> Hub {
    hub(g, access_token(g, refresh).await)
}

#[tokio::test]
async fn request_log_records_everything() {
    let (g, hub) = setup().await;
    g.clear_requests();
    hub.events()
        .insert(event(Some("logged001"), "x", json!({"ws": "w1"})), ALICE)
        .send_updates("none")
        .doit()
        .await
        .unwrap();
    hub.events()
        .list(ALICE)
        .add_private_extended_property("ws=w1")
        .doit()
        .await
        .unwrap();
    let log = g.requests();
    assert_eq!(log.len(), 2);
    let ins = &log[0];
    assert_eq!(
        (ins.method.as_str(), ins.api_method, ins.status),
        ("POST", ApiMethod::Insert, Some(200))
    );
    assert_eq!(ins.path, "/calendar/v3/calendars/alice@example.com/events");
    assert!(
        ins.query_pairs()
            .contains(&("sendUpdates".into(), "none".into()))
    );
    assert!(
        ins.header("authorization")
            .unwrap()
            .starts_with("Bearer ya29.")
    );
    assert_eq!(ins.json()["id"], "logged001");
    let list = &log[1];
    assert!(
        list.query.contains("privateExtendedProperty=ws%3Dw1"),
        "{}",
        list.query
    );
    assert!(
        list.query_pairs()
            .contains(&("privateExtendedProperty".into(), "ws=w1".into()))
    );
    assert_eq!(g.calls(ApiMethod::Insert), 1);
    assert_eq!(g.calls(ApiMethod::List), 1);
    assert_eq!(g.calls(ApiMethod::Token), 1);
}

#[tokio::test]
async fn admin_api_seeds_and_inspects_a_separate_process_fake() {
    let g = FakeGoogle::start().await;
    let admin = g.admin_url();
    let post = |path: &str, body: Value| {
        let url = format!("{admin}{path}");
        async move {
            raw(
                "POST",
                &url,
                &[("content-type", "application/json")],
                Some(body.to_string()),
            )
            .await
        }
    };
    assert_eq!(
        post("clients", json!({"client_id": "c", "client_secret": "s"}))
            .await
            .0,
        200
    );
    post(
        "refresh_tokens",
        json!({"refresh_token": "r", "client_id": "c", "user_email": "u@x.org"}),
    )
    .await;
    post("calendars", json!({"calendar_id": "u@x.org"})).await;
    post(
        "faults",
        json!({"kind": {"TooManyRequests": {"retry_after": 3}}, "method": "GET"}),
    )
    .await;
    let (s, b) = refresh_grant(&g, "c", "s", "r").await;
    assert_eq!(s, 200);
    let h = hub(&g, b["access_token"].as_str().unwrap().to_string());
    assert_eq!(
        code_reason(&bad_request(h.events().list("u@x.org").doit().await)).0,
        429
    );
    h.events()
        .insert(event(Some("admin0001"), "x", json!({})), "u@x.org")
        .doit()
        .await
        .unwrap();
    post("calendars/u@x.org/events/admin0001/delete", Value::Null).await;
    let (s, _, events) = raw(
        "GET",
        &format!("{admin}calendars/u%40x.org/events"),
        &[],
        None,
    )
    .await;
    assert_eq!((s, events[0]["status"].as_str()), (200, Some("cancelled")));
    let (_, _, stats) = raw("GET", &format!("{admin}stats"), &[], None).await;
    assert_eq!(stats["calls"]["Insert"], 1);
    let (_, _, log) = raw("GET", &format!("{admin}requests"), &[], None).await;
    assert_eq!(log.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn instances_are_independent_and_shut_down() {
    let (a, hub_a) = setup().await;
    let (b, _hub_b) = setup().await;
    assert_ne!(a.addr(), b.addr());
    hub_a
        .events()
        .insert(event(None, "x", json!({})), ALICE)
        .doit()
        .await
        .unwrap();
    assert_eq!((a.events(ALICE).len(), b.events(ALICE).len()), (1, 0));
    a.inject(Fault::new(FaultKind::Hang));
    let pending = tokio::spawn({
        let a = a.clone();
        async move {
            let token = a.issue_access_token(REFRESH).unwrap();
            hub(&a, token).events().list(ALICE).doit().await.map(|_| ())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.shutdown().await;
    // The hung request is cut off when the fake shuts down.
    let r = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(Error::HttpError(_))), "{r:?}");
    let r = hub_a.events().list(ALICE).doit().await;
    assert!(matches!(r, Err(Error::HttpError(_))), "{r:?}");
}
