//! The dashboard against a real PostgreSQL (a fresh database per test),
//! driven through `tower::ServiceExt::oneshot`.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use calendar_sync_dashboard::{DashboardOptions, router};
use calendar_sync_tests::{TestDb, upsert};
use tower::ServiceExt;
use uuid::Uuid;

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn get(app: &Router, uri: &str) -> Page {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .expect("body");
    Page {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8"),
    }
}

fn nested(t: &TestDb, prefix: &str, options: DashboardOptions) -> Router {
    Router::new().nest(prefix, router(t.db.clone(), options))
}

/// Sets a row's status the way the engine leaves it.
async fn set_status(t: &TestDb, id: Uuid, status: &str, last_error: Option<&str>) {
    t.client()
        .await
        .execute(
            "UPDATE sync_outbox SET status = $2, last_error = $3,
                    claim_token = CASE WHEN $2 = 'PROCESSING' THEN gen_random_uuid() END,
                    processed_at = CASE WHEN $2 IN ('COMPLETED', 'DEAD_LETTER', 'SUPERSEDED') THEN now() END
              WHERE id = $1",
            &[&id, &status, &last_error],
        )
        .await
        .expect("set status");
}

/// The text of the count card of a status.
fn card_count(body: &str, status: &str) -> String {
    let start = body
        .find(&format!("data-status=\"{status}\""))
        .unwrap_or_else(|| panic!("no card for {status}"));
    let rest = &body[start..];
    let open =
        rest.find("<span class=\"count\">").expect("count span") + "<span class=\"count\">".len();
    let close = rest[open..].find("</span>").expect("span end");
    rest[open..open + close].to_owned()
}

async fn seed_counts(t: &TestDb) {
    for i in 0..5 {
        t.insert(
            "UPSERT_EVENT",
            upsert("ws-a", "cal", &format!("p{i}"), "pending"),
        )
        .await;
    }
    let processing = t
        .insert("UPSERT_EVENT", upsert("ws-a", "cal", "r0", "running"))
        .await;
    set_status(t, processing, "PROCESSING", None).await;
    for i in 0..3 {
        let id = t
            .insert(
                "UPSERT_EVENT",
                upsert("ws-a", "cal", &format!("c{i}"), "done"),
            )
            .await;
        set_status(t, id, "COMPLETED", None).await;
    }
    for (i, code) in ["calendar_not_found", "calendar_not_found", "bad_request"]
        .iter()
        .enumerate()
    {
        let id = t
            .insert(
                "UPSERT_EVENT",
                upsert("ws-b", "cal", &format!("d{i}"), "dead"),
            )
            .await;
        set_status(
            t,
            id,
            "DEAD_LETTER",
            Some(&format!("[{code}] Google said no")),
        )
        .await;
    }
    let id = t
        .insert("UPSERT_EVENT", upsert("ws-a", "cal", "s0", "old"))
        .await;
    set_status(t, id, "SUPERSEDED", None).await;
}

#[tokio::test]
async fn overview_counts_by_status() {
    let t = TestDb::new().await;
    seed_counts(&t).await;
    let app = nested(&t, "/dashboard", DashboardOptions::default());
    let page = get(&app, "/dashboard").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(card_count(&page.body, "PENDING"), "5");
    assert_eq!(card_count(&page.body, "PROCESSING"), "1");
    assert_eq!(card_count(&page.body, "COMPLETED"), "3");
    assert_eq!(card_count(&page.body, "DEAD_LETTER"), "3");
    assert_eq!(card_count(&page.body, "SUPERSEDED"), "1");
    assert!(page.body.contains("are exact"), "{}", page.body);
    assert!(page.body.contains("Waiting for"), "{}", page.body);
    // Dead letters by code, the most frequent first.
    let dl = &page.body[page
        .body
        .find("id=\"dead-letters\"")
        .expect("dead letters table")..];
    let nf = dl.find("calendar_not_found").expect("code listed");
    let br = dl.find("bad_request").expect("code listed");
    assert!(nf < br);
}

#[tokio::test]
async fn overview_caps_and_estimates_past_the_limits() {
    let t = TestDb::new().await;
    seed_counts(&t).await;
    t.client()
        .await
        .batch_execute("ANALYZE sync_outbox")
        .await
        .expect("analyze");
    let options = DashboardOptions {
        count_cap: 4,
        exact_count_max_bytes: 0,
        ..DashboardOptions::default()
    };
    let app = nested(&t, "/dashboard", options);
    let page = get(&app, "/dashboard").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(card_count(&page.body, "PENDING"), "4+");
    assert_eq!(card_count(&page.body, "PROCESSING"), "1");
    assert_eq!(card_count(&page.body, "DEAD_LETTER"), "3");
    let completed = card_count(&page.body, "COMPLETED");
    assert!(completed.starts_with("≈ "), "{completed}");
    assert_eq!(completed, "≈ 3", "ANALYZE samples the whole small table");
    assert!(page.body.contains("are estimates"), "{}", page.body);
}

#[tokio::test]
async fn security_headers_and_stylesheet() {
    let t = TestDb::new().await;
    let app = nested(&t, "/dashboard", DashboardOptions::default());
    let page = get(&app, "/dashboard").await;
    assert_eq!(page.status, StatusCode::OK);
    let h = |name: &str| {
        page.headers
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .to_str()
            .expect("ascii")
            .to_owned()
    };
    assert_eq!(
        h("content-security-policy"),
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    assert_eq!(h("x-frame-options"), "DENY");
    assert_eq!(h("cache-control"), "no-store");
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert_eq!(h("referrer-policy"), "no-referrer");
    assert!(h("content-type").starts_with("text/html"));
    assert!(
        !page.body.contains("<script"),
        "no JavaScript in this slice"
    );

    let start = page
        .body
        .find("/dashboard/assets/dashboard-")
        .expect("stylesheet link");
    let end = start + page.body[start..].find('"').expect("end of href");
    let css = get(&app, &page.body[start..end]).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/css")
    );
    assert!(
        css.headers["cache-control"]
            .to_str()
            .expect("ascii")
            .contains("immutable")
    );
    assert_eq!(css.headers["x-content-type-options"], "nosniff");
    assert!(css.body.contains("body {"));
    assert_eq!(
        get(&app, "/dashboard/assets/dashboard-0000.css")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}
