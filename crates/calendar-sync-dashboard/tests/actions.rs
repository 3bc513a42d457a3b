//! Issue 16: login, the write actions, and every way a write is refused (a
//! refused request changes no row), against a real PostgreSQL through
//! `tower::ServiceExt::oneshot`.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use calendar_sync_dashboard::{DashboardOptions, DashboardToken, router};
use calendar_sync_tests::{TestDb, rebuild, upsert};
use sha2::{Digest, Sha256};
use uuid::Uuid;

mod support;
use support::{Page, get, send};

const TOKEN: &str = "s3cret-dashboard-token-0123456789";
const OTHER_TOKEN: &str = "another-dashboard-token-9876543210";

async fn post(app: &Router, uri: &str, form: &str, headers: &[(&str, &str)]) -> Page {
    let mut request = Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("host", "localhost");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send(
        app,
        request.body(Body::from(form.to_owned())).expect("request"),
    )
    .await
}

fn app(t: &TestDb, token: Option<&str>) -> Router {
    let options = DashboardOptions {
        token: token.map(|t| DashboardToken::new(t).expect("token")),
        ..DashboardOptions::default()
    };
    Router::new().nest("/dashboard", router(t.db.clone(), options))
}

/// Logs in; the `Cookie` header value of the session.
async fn login(app: &Router, token: &str) -> String {
    let page = post(app, "/dashboard/login", &format!("token={token}"), &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let cookie = page.set_cookie().expect("a session cookie");
    cookie.split(';').next().expect("name=value").to_owned()
}

/// HMAC-SHA256, to build cookies the way the dashboard does (and forge
/// expired ones) in the test.
fn hmac(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

fn session_cookie(token: &str, expires: i64) -> String {
    let mac = hmac(
        token.as_bytes(),
        format!("calendar-sync-dashboard session v1 {expires}").as_bytes(),
    );
    format!("calendar_sync_dashboard_session=v1.{expires}.{mac}")
}

/// Every row of the outbox, every column, in order.
async fn snapshot(t: &TestDb) -> Vec<String> {
    t.client()
        .await
        .query(
            "SELECT to_jsonb(o)::text FROM sync_outbox o ORDER BY seq",
            &[],
        )
        .await
        .expect("snapshot")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The rows whose text differs between two snapshots, by id.
fn changed(before: &[String], after: &[String]) -> Vec<Uuid> {
    assert_eq!(before.len(), after.len(), "rows added or removed");
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| b != a)
        .map(|(_, a)| {
            let v: serde_json::Value = serde_json::from_str(a).expect("json");
            Uuid::parse_str(v["id"].as_str().expect("id")).expect("uuid")
        })
        .collect()
}

async fn set_status(t: &TestDb, id: Uuid, status: &str, last_error: Option<&str>) {
    t.client()
        .await
        .execute(
            "UPDATE sync_outbox SET status = $2, last_error = $3,
                    processed_at = CASE WHEN $2 IN ('COMPLETED', 'DEAD_LETTER', 'SUPERSEDED') THEN now() END
              WHERE id = $1",
            &[&id, &status, &last_error],
        )
        .await
        .expect("set status");
}

struct Seed {
    /// ws-a [x], ws-a [y], ws-b [x], ws-b [y], ws-c [z].
    dead: Vec<Uuid>,
}

async fn seed(t: &TestDb) -> Seed {
    let mut dead = Vec::new();
    for (i, (ws, code)) in [
        ("ws-a", "x_code"),
        ("ws-a", "y_code"),
        ("ws-b", "x_code"),
        ("ws-b", "y_code"),
        ("ws-c", "z_code"),
    ]
    .iter()
    .enumerate()
    {
        let id = t
            .insert("UPSERT_EVENT", upsert(ws, "cal", &format!("d{i}"), "dead"))
            .await;
        set_status(t, id, "DEAD_LETTER", Some(&format!("[{code}] no"))).await;
        dead.push(id);
    }
    t.insert("UPSERT_EVENT", upsert("ws-a", "cal", "p0", "pending"))
        .await;
    let done = t
        .insert("UPSERT_EVENT", upsert("ws-b", "cal", "c0", "done"))
        .await;
    set_status(t, done, "COMPLETED", None).await;
    t.client()
        .await
        .execute(
            "INSERT INTO google_connections (workspace_id, google_email, refresh_token_encrypted)
             VALUES ('ws-a', 'a@example.com', 'v1:k:ZW52ZWxvcGU')",
            &[],
        )
        .await
        .expect("connection");
    Seed { dead }
}

async fn status_of(t: &TestDb, id: Uuid) -> String {
    t.row(id).await.status
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_a_wrong_token_is_401() {
    let t = TestDb::new().await;
    let app = app(&t, Some(TOKEN));
    let page = get(&app, "/dashboard/login", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"login\""), "{}", page.body);
    assert!(page.body.contains("name=\"token\""), "{}", page.body);

    let page = post(&app, "/dashboard/login", &format!("token={TOKEN}"), &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), "/dashboard");
    let cookie = page.set_cookie().expect("cookie");
    assert!(
        cookie.starts_with("calendar_sync_dashboard_session=v1."),
        "{cookie}"
    );
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/dashboard",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    assert!(!cookie.contains(TOKEN));

    // Over https (a proxy says so): Secure too.
    let page = post(
        &app,
        "/dashboard/login",
        &format!("token={TOKEN}"),
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert!(page.set_cookie().expect("cookie").contains("; Secure"));

    // At the root, the cookie's path is "/".
    let root = Router::new().merge(router(
        t.db.clone(),
        DashboardOptions {
            token: Some(DashboardToken::new(TOKEN).expect("token")),
            ..DashboardOptions::default()
        },
    ));
    let page = post(&root, "/login", &format!("token={TOKEN}"), &[]).await;
    assert_eq!(page.location(), "/");
    assert!(page.set_cookie().expect("cookie").contains("Path=/;"));

    let page = post(
        &app,
        "/dashboard/login",
        "token=wrong-token-but-long-enough",
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.set_cookie().is_none());
    assert!(page.body.contains("id=\"login\""), "the form again");
    assert!(page.body.contains("id=\"login-error\""));
    let page = post(&app, "/dashboard/login", "", &[]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);

    // Logged in, the pages offer a logout; logging out clears the cookie.
    let session = login(&app, TOKEN).await;
    let page = get(&app, "/dashboard/items", &[("cookie", &session)]).await;
    assert!(page.body.contains("id=\"logout\""), "{}", page.body);
    let page = post(&app, "/dashboard/logout", "", &[("cookie", &session)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard/login?done=logged-out");
    let cleared = page.set_cookie().expect("cookie cleared");
    assert!(
        cleared.starts_with("calendar_sync_dashboard_session=;") && cleared.contains("Max-Age=0")
    );
    let page = get(&app, page.location(), &[]).await;
    assert!(page.body.contains("id=\"notice\""), "{}", page.body);

    // Without a token there is nothing to log in to.
    let read_only = self::app(&t, None);
    let page = get(&read_only, "/dashboard/login", &[]).await;
    assert!(!page.body.contains("id=\"login\""));
    assert!(page.body.contains("CALENDAR_SYNC_DASHBOARD_TOKEN"));
    let page = post(
        &read_only,
        "/dashboard/login",
        &format!("token={TOKEN}"),
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.set_cookie().is_none());
}

#[tokio::test]
async fn requeue_one_selected_workspace_and_code_move_exactly_those_rows() {
    let t = TestDb::new().await;
    let s = seed(&t).await;
    let app = app(&t, Some(TOKEN));
    let session = login(&app, TOKEN).await;
    let cookie = [("cookie", session.as_str())];
    let bearer_value = format!("Bearer {TOKEN}");
    let bearer = [("authorization", bearer_value.as_str())];

    // One, with the session: back to its page with a notice.
    let before = snapshot(&t).await;
    let uri = format!("/dashboard/items/{}/requeue", s.dead[0]);
    let page = post(&app, &uri, &format!("back=/items/{}", s.dead[0]), &cookie).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(
        page.location(),
        format!("/dashboard/items/{}?done=requeued-1", s.dead[0])
    );
    assert_eq!(changed(&before, &snapshot(&t).await), vec![s.dead[0]]);
    assert_eq!(status_of(&t, s.dead[0]).await, "PENDING");
    let shown = get(&app, page.location(), &cookie).await;
    assert!(shown.body.contains("<p id=\"notice\""), "{}", shown.body);
    assert!(shown.body.contains("Requeued 1 dead letter."));

    // Again: it is not a dead letter any more, so nothing happens.
    let before = snapshot(&t).await;
    let page = post(&app, &uri, "", &bearer).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(
        page.location().ends_with("done=requeued-0"),
        "{}",
        page.location()
    );
    assert!(changed(&before, &snapshot(&t).await).is_empty());

    // Selected, with the bearer.
    let before = snapshot(&t).await;
    let page = post(
        &app,
        "/dashboard/requeue",
        &format!(
            "back=%2Fitems%3Fstatus%3DDEAD_LETTER&id={}&id={}",
            s.dead[1], s.dead[2]
        ),
        &bearer,
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(
        page.location(),
        "/dashboard/items?status=DEAD_LETTER&done=requeued-2"
    );
    let mut moved = changed(&before, &snapshot(&t).await);
    moved.sort();
    let mut expected = vec![s.dead[1], s.dead[2]];
    expected.sort();
    assert_eq!(moved, expected);

    // Every dead letter of a workspace, with the session: ws-b's [y] only
    // (its [x] is already pending).
    let before = snapshot(&t).await;
    let page = post(&app, "/dashboard/requeue", "workspace=ws-b", &cookie).await;
    assert_eq!(
        page.location(),
        "/dashboard/items?status=DEAD_LETTER&done=requeued-1"
    );
    assert_eq!(changed(&before, &snapshot(&t).await), vec![s.dead[3]]);

    // Every dead letter of an error code, with the bearer.
    let before = snapshot(&t).await;
    let page = post(&app, "/dashboard/requeue", "error_code=z_code", &bearer).await;
    assert!(
        page.location().ends_with("done=requeued-1"),
        "{}",
        page.location()
    );
    assert_eq!(changed(&before, &snapshot(&t).await), vec![s.dead[4]]);
    for id in &s.dead {
        assert_eq!(status_of(&t, *id).await, "PENDING");
    }

    // A code with nothing left, and nonsense: nothing changes.
    let before = snapshot(&t).await;
    let page = post(&app, "/dashboard/requeue", "error_code=z_code", &bearer).await;
    assert!(page.location().ends_with("done=requeued-0"));
    for bad in [
        "",
        "id=not-a-uuid",
        &format!("id={}&workspace=ws-a", s.dead[0]),
    ] {
        let page = post(&app, "/dashboard/requeue", bad, &bearer).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // A `back` that leaves the dashboard is ignored.
    let page = post(
        &app,
        "/dashboard/requeue",
        "back=//evil.example/&workspace=ws-a",
        &bearer,
    )
    .await;
    assert_eq!(
        page.location(),
        "/dashboard/items?status=DEAD_LETTER&done=requeued-0"
    );
    assert!(changed(&before, &snapshot(&t).await).is_empty());
}

#[tokio::test]
async fn a_code_within_a_workspace_requeues_only_those() {
    let t = TestDb::new().await;
    let s = seed(&t).await;
    let app = app(&t, Some(TOKEN));
    let bearer_value = format!("Bearer {TOKEN}");
    let before = snapshot(&t).await;
    let page = post(
        &app,
        "/dashboard/requeue",
        "error_code=x_code&workspace=ws-b",
        &[("authorization", &bearer_value)],
    )
    .await;
    assert!(
        page.location().ends_with("done=requeued-1"),
        "{}",
        page.location()
    );
    assert_eq!(changed(&before, &snapshot(&t).await), vec![s.dead[2]]);
}

#[tokio::test]
async fn refused_writes_change_nothing() {
    let t = TestDb::new().await;
    let s = seed(&t).await;
    let app = app(&t, Some(TOKEN));
    let read_only = self::app(&t, None);
    let session = login(&app, TOKEN).await;
    let other_app = self::app(&t, Some(OTHER_TOKEN));
    let other_session = login(&other_app, OTHER_TOKEN).await;
    let now = chrono::Utc::now().timestamp();
    let expired = session_cookie(TOKEN, now - 10);
    let too_long = session_cookie(TOKEN, now + 13 * 3600);
    let valid_built = session_cookie(TOKEN, now + 3600);
    let forged = session_cookie("not-the-token-at-all-xx", now + 3600);
    let bearer = format!("Bearer {TOKEN}");
    let wrong_bearer = format!("Bearer {OTHER_TOKEN}");

    let one = format!("/dashboard/items/{}/requeue", s.dead[0]);
    let selected = format!("id={}&id={}", s.dead[1], s.dead[2]);
    let writes: Vec<(&str, &str)> = vec![
        (&one, ""),
        ("/dashboard/requeue", &selected),
        ("/dashboard/requeue", "workspace=ws-a"),
        ("/dashboard/requeue", "error_code=x_code"),
        ("/dashboard/rebuild", "workspace=ws-a&calendar=primary"),
    ];
    // Sanity: the test's own cookie is accepted (so the refusals below are
    // about what they vary).
    let page = get(
        &app,
        &format!("/dashboard/items/{}", s.dead[0]),
        &[("cookie", &valid_built)],
    )
    .await;
    assert!(page.body.contains("id=\"requeue-button\""), "{}", page.body);

    type Case<'a> = (&'a str, &'a Router, Vec<(&'a str, &'a str)>, StatusCode);
    let cases: Vec<Case> = vec![
        ("no auth", &app, vec![], StatusCode::UNAUTHORIZED),
        (
            "wrong bearer",
            &app,
            vec![("authorization", &wrong_bearer)],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "forged cookie",
            &app,
            vec![("cookie", &forged)],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired cookie",
            &app,
            vec![("cookie", &expired)],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "cookie past 12 h",
            &app,
            vec![("cookie", &too_long)],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "other token's cookie",
            &app,
            vec![("cookie", &other_session)],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "garbage cookie",
            &app,
            vec![(
                "cookie",
                "calendar_sync_dashboard_session=v1.99999999999.00",
            )],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "writes disabled",
            &read_only,
            vec![("authorization", &bearer)],
            StatusCode::FORBIDDEN,
        ),
        (
            "Sec-Fetch-Site: cross-site",
            &app,
            vec![("cookie", &session), ("sec-fetch-site", "cross-site")],
            StatusCode::FORBIDDEN,
        ),
        (
            "Sec-Fetch-Site: same-site",
            &app,
            vec![("authorization", &bearer), ("sec-fetch-site", "same-site")],
            StatusCode::FORBIDDEN,
        ),
        (
            "foreign Origin",
            &app,
            vec![("cookie", &session), ("origin", "https://evil.example")],
            StatusCode::FORBIDDEN,
        ),
        (
            "Origin on another port",
            &app,
            vec![
                ("authorization", &bearer),
                ("origin", "http://localhost:8081"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            "Origin null",
            &app,
            vec![("cookie", &session), ("origin", "null")],
            StatusCode::FORBIDDEN,
        ),
    ];
    for (what, router, headers, expected) in &cases {
        for (uri, form) in &writes {
            let before = snapshot(&t).await;
            let page = post(router, uri, form, headers).await;
            assert_eq!(page.status, *expected, "{what} {uri} {form}: {}", page.body);
            assert!(
                page.body.contains("id=\"refused\""),
                "{what} {uri}: {}",
                page.body
            );
            if *expected == StatusCode::UNAUTHORIZED {
                assert!(
                    page.body.contains("href=\"/dashboard/login\""),
                    "{what}: {}",
                    page.body
                );
            }
            if *what == "writes disabled" {
                assert!(
                    page.body.contains("read-only")
                        && page.body.contains("CALENDAR_SYNC_DASHBOARD_TOKEN")
                );
            }
            assert_eq!(
                snapshot(&t).await,
                before,
                "{what} {uri} {form} changed a row"
            );
            assert!(page.set_cookie().is_none());
        }
    }
    // Login is checked for cross-site requests too.
    for headers in [
        vec![("sec-fetch-site", "cross-site")],
        vec![("origin", "https://evil.example")],
    ] {
        let page = post(
            &app,
            "/dashboard/login",
            &format!("token={TOKEN}"),
            &headers,
        )
        .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert!(page.body.contains("id=\"refused\""));
        assert!(page.set_cookie().is_none());
    }
    // Same-origin requests pass: a browser's own form post.
    let before = snapshot(&t).await;
    let page = post(
        &app,
        &one,
        "",
        &[
            ("cookie", &session),
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://localhost"),
        ],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(changed(&before, &snapshot(&t).await), vec![s.dead[0]]);
    // GET never writes: no route takes a GET to an action.
    let page = get(
        &app,
        "/dashboard/requeue?workspace=ws-a",
        &[("cookie", &session)],
    )
    .await;
    assert_eq!(page.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn rebuild_all_is_enqueued_with_its_payload() {
    let t = TestDb::new().await;
    seed(&t).await;
    let app = app(&t, Some(TOKEN));
    let session = login(&app, TOKEN).await;
    let page = post(
        &app,
        "/dashboard/rebuild",
        "back=%2Fconnections&workspace=ws-a&calendar=team%40example.com",
        &[("cookie", &session)],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(
        page.location(),
        "/dashboard/connections?done=rebuild-queued"
    );
    let rows = t
        .client()
        .await
        .query(
            "SELECT payload, status, workspace_id, calendar_id FROM sync_outbox WHERE operation = 'REBUILD_ALL'",
            &[],
        )
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    let payload: serde_json::Value = rows[0].get(0);
    assert_eq!(payload, rebuild("ws-a", "team@example.com"));
    assert_eq!(rows[0].get::<_, String>(1), "PENDING");
    assert_eq!(
        rows[0].get::<_, Option<String>>(3).as_deref(),
        Some("team@example.com")
    );

    // The calendar defaults to "primary".
    let bearer = format!("Bearer {TOKEN}");
    let page = post(
        &app,
        "/dashboard/rebuild",
        "workspace=ws-a&calendar=",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let n: i64 = t
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM sync_outbox WHERE operation = 'REBUILD_ALL' AND calendar_id = 'primary'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1);

    // A workspace without a connection, or none: nothing is enqueued.
    let before = snapshot(&t).await;
    for form in ["workspace=nobody&calendar=primary", "calendar=primary"] {
        let page = post(
            &app,
            "/dashboard/rebuild",
            form,
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{form}");
    }
    assert_eq!(snapshot(&t).await, before);
}

#[tokio::test]
async fn buttons_only_when_writes_are_enabled_and_the_token_is_never_shown() {
    let t = TestDb::new().await;
    let s = seed(&t).await;
    let options = DashboardOptions {
        token: Some(DashboardToken::new(TOKEN).expect("token")),
        ..DashboardOptions::default()
    };
    let debug = format!("{options:?}");
    assert!(
        !debug.contains(TOKEN) && debug.contains("redacted"),
        "{debug}"
    );
    assert!(!format!("{:?}", options.token).contains(TOKEN));
    assert!(DashboardToken::new("short").is_err());
    assert!(DashboardToken::new("").is_err());
    assert!(
        !DashboardToken::new("x")
            .unwrap_err()
            .to_string()
            .contains('x')
    );

    let app = app(&t, Some(TOKEN));
    let read_only = self::app(&t, None);
    let session = login(&app, TOKEN).await;
    let item = format!("/dashboard/items/{}", s.dead[0]);
    let dead_list = "/dashboard/items?status=DEAD_LETTER";
    let ws_list = "/dashboard/items?workspace=ws-a";
    let code_list = "/dashboard/items?code=x_code";

    // Read-only: no forms, no login link.
    for uri in [
        item.as_str(),
        dead_list,
        ws_list,
        code_list,
        "/dashboard/connections",
    ] {
        let page = get(&read_only, uri, &[]).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}");
        assert!(
            !page.body.contains("method=\"post\""),
            "{uri}: {}",
            page.body
        );
        assert!(!page.body.contains("Log in"), "{uri}");
    }
    // Writes enabled, not logged in: a link to log in instead.
    for uri in [
        item.as_str(),
        dead_list,
        ws_list,
        code_list,
        "/dashboard/connections",
    ] {
        let page = get(&app, uri, &[]).await;
        assert!(
            !page.body.contains("method=\"post\""),
            "{uri}: {}",
            page.body
        );
        assert!(page.body.contains("Log in to act"), "{uri}: {}", page.body);
    }
    // Logged in: the forms.
    let cookie = [("cookie", session.as_str())];
    let page = get(&app, &item, &cookie).await;
    assert!(
        page.body.contains(&format!(
            "id=\"requeue\" method=\"post\" action=\"/dashboard/items/{}/requeue\">",
            s.dead[0]
        )),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"requeue-button\""));
    let pending = t
        .client()
        .await
        .query_one("SELECT id FROM sync_outbox WHERE status = 'PENDING'", &[])
        .await
        .expect("pending")
        .get::<_, Uuid>(0);
    let page = get(&app, &format!("/dashboard/items/{pending}"), &cookie).await;
    assert!(!page.body.contains("id=\"requeue\""), "only dead letters");

    let page = get(&app, dead_list, &cookie).await;
    let form_start = page
        .body
        .find("<form id=\"requeue-selected\"")
        .expect("requeue-selected form");
    let form =
        &page.body[form_start..form_start + page.body[form_start..].find("</form>").expect("end")];
    for id in &s.dead {
        assert!(
            form.contains(&format!(
                "<input type=\"checkbox\" name=\"id\" value=\"{id}\""
            )),
            "{id} selectable: {form}"
        );
    }
    assert!(form.contains("action=\"/dashboard/requeue\""));
    let page = get(&app, "/dashboard/items", &cookie).await;
    assert!(
        !page.body.contains("type=\"checkbox\""),
        "only on the dead letters' list"
    );

    let page = get(&app, ws_list, &cookie).await;
    assert!(
        page.body
            .contains("id=\"requeue-workspace\" method=\"post\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("name=\"workspace\" value=\"ws-a\""));
    let page = get(&app, code_list, &cookie).await;
    assert!(
        page.body.contains("id=\"requeue-code\" method=\"post\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("name=\"error_code\" value=\"x_code\""));
    let page = get(&app, "/dashboard/connections", &cookie).await;
    assert!(page.body.contains("<form id=\"rebuild\""), "{}", page.body);

    // Notices are chosen, never echoed.
    let page = get(
        &app,
        &format!("{item}?done=%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
        &cookie,
    )
    .await;
    assert!(!page.body.contains("id=\"notice\"") && !page.body.contains("<script"));

    // The token is on no page, logged in or not, refused or not.
    let mut pages = Vec::new();
    for uri in [
        "/dashboard",
        "/dashboard/items",
        item.as_str(),
        dead_list,
        ws_list,
        code_list,
        "/dashboard/connections",
        "/dashboard/login",
    ] {
        pages.push(get(&app, uri, &cookie).await);
        pages.push(get(&app, uri, &[]).await);
    }
    pages.push(
        post(
            &app,
            "/dashboard/login",
            "token=wrong-token-but-long-enough",
            &[],
        )
        .await,
    );
    pages.push(post(&app, "/dashboard/requeue", "workspace=ws-a", &[]).await);
    pages.push(post(&read_only, "/dashboard/requeue", "workspace=ws-a", &[]).await);
    pages.push(
        post(
            &app,
            "/dashboard/login",
            &format!("token={TOKEN}"),
            &[("sec-fetch-site", "cross-site")],
        )
        .await,
    );
    for page in &pages {
        assert!(
            !page.body.contains(TOKEN),
            "the token on a page: {}",
            page.body
        );
        for value in page.headers.values() {
            assert!(!value.to_str().unwrap_or("").contains(TOKEN));
        }
        if page.status == StatusCode::OK || page.status.is_client_error() {
            assert!(page.headers.contains_key("content-security-policy"));
        }
    }
}

/// Two operators requeue the same dead letters at once: each row leaves
/// DEAD_LETTER once, and the notices add up to the rows moved.
#[tokio::test]
async fn concurrent_requeues_move_each_row_once() {
    let t = TestDb::new().await;
    let s = seed(&t).await;
    let app = app(&t, Some(TOKEN));
    let bearer = format!("Bearer {TOKEN}");
    let headers = [("authorization", bearer.as_str())];
    let form = format!("id={}&id={}&id={}", s.dead[0], s.dead[1], s.dead[2]);
    let before = snapshot(&t).await;
    let (a, b, c) = tokio::join!(
        post(&app, "/dashboard/requeue", &form, &headers),
        post(&app, "/dashboard/requeue", &form, &headers),
        post(&app, "/dashboard/requeue", "workspace=ws-a", &headers),
    );
    let n = |p: &Page| -> u64 {
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
        let l = p.location();
        l[l.find("done=requeued-").expect("notice") + "done=requeued-".len()..]
            .parse()
            .expect("a number")
    };
    assert_eq!(n(&a) + n(&b) + n(&c), 3, "every row requeued exactly once");
    let mut moved = changed(&before, &snapshot(&t).await);
    moved.sort();
    let mut expected = s.dead[..3].to_vec();
    expected.sort();
    assert_eq!(moved, expected);
}
