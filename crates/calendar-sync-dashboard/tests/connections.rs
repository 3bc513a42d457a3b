//! Issue 16: the connections page, against a real PostgreSQL.

use axum::Router;
use axum::http::StatusCode;
use calendar_sync_dashboard::{DashboardOptions, DashboardToken, router};
use calendar_sync_tests::{TestDb, upsert};

mod support;

const TOKEN: &str = "connections-page-token-0123456789";
const ENVELOPE: &str = "v1:key-2024:U0VDUkVULVJFRlJFU0gtVE9LRU4tZW52ZWxvcGU";

async fn get(app: &Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let page = support::get(app, uri, headers).await;
    (page.status, page.body)
}

fn app(t: &TestDb, options: DashboardOptions) -> Router {
    Router::new().nest("/dashboard", router(t.db.clone(), options))
}

/// ws-breaker, ws-invalid, ws-ok, ws-paused, ws-unpaused (paused in the past).
async fn seed(t: &TestDb) {
    t.client()
        .await
        .execute(
            "INSERT INTO google_connections (workspace_id, google_email, refresh_token_encrypted, is_valid,
                                             invalid_reason, paused_until, breaker_open_until,
                                             token_refreshed_at, connection_version)
             VALUES ('ws-ok', 'ok@example.com', $1, true, NULL, NULL, now() - interval '1 hour',
                     '2026-01-02 03:04:05+00', 7),
                    ('ws-invalid', 'bad@example.com', $1, false, 'invalid_grant: revoked', NULL, NULL, NULL, 2),
                    ('ws-paused', 'p@example.com', $1, true, NULL, now() + interval '1 hour', NULL, NULL, 1),
                    ('ws-unpaused', 'u@example.com', $1, true, NULL, now() - interval '1 hour', NULL, NULL, 1),
                    ('ws-breaker', 'b@example.com', $1, true, NULL, NULL, '2099-01-01 00:00:00+00', NULL, 3)",
            &[&ENVELOPE],
        )
        .await
        .expect("connections");
    let client = t.client().await;
    for i in 0..3 {
        t.insert(
            "UPSERT_EVENT",
            upsert("ws-ok", "cal", &format!("p{i}"), "waiting"),
        )
        .await;
    }
    for (i, status) in ["PROCESSING", "COMPLETED", "COMPLETED", "DEAD_LETTER"]
        .iter()
        .enumerate()
    {
        let id = t
            .insert(
                "UPSERT_EVENT",
                upsert("ws-ok", "cal", &format!("x{i}"), "other"),
            )
            .await;
        client
            .execute(
                "UPDATE sync_outbox SET status = $2,
                        claim_token = CASE WHEN $2 = 'PROCESSING' THEN gen_random_uuid() END,
                        processed_at = CASE WHEN $2 <> 'PROCESSING' THEN now() END
                  WHERE id = $1",
                &[&id, status],
            )
            .await
            .expect("status");
    }
}

/// The `tr` of a workspace.
fn row<'a>(body: &'a str, workspace: &str) -> &'a str {
    let start = body
        .find(&format!("data-workspace=\"{workspace}\""))
        .unwrap_or_else(|| panic!("no row for {workspace}: {body}"));
    let end = start + body[start..].find("</tr>").expect("row end");
    &body[start..end]
}

#[tokio::test]
async fn connections_show_each_state_attention_first_and_never_a_token() {
    let t = TestDb::new().await;
    seed(&t).await;
    let options = DashboardOptions {
        token: Some(DashboardToken::new(TOKEN).expect("token")),
        ..DashboardOptions::default()
    };
    let app = app(&t, options);
    let (status, body) = get(&app, "/dashboard/connections", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("<table id=\"connections\""), "{body}");
    assert!(
        body.contains("href=\"/dashboard/connections\""),
        "in the nav"
    );

    let invalid = row(&body, "ws-invalid");
    assert!(
        invalid.contains("invalid") && invalid.contains("invalid_grant: revoked"),
        "{invalid}"
    );
    assert!(invalid.contains("bad@example.com"));
    assert!(
        invalid.contains(
            "calendar-sync-worker connections put --workspace ws-invalid --email bad@example.com"
        ),
        "{invalid}"
    );
    let paused = row(&body, "ws-paused");
    assert!(paused.contains("class=\"paused\""), "{paused}");
    let unpaused = row(&body, "ws-unpaused");
    assert!(
        !unpaused.contains("class=\"paused\""),
        "paused in the past: {unpaused}"
    );
    let breaker = row(&body, "ws-breaker");
    assert!(
        breaker.contains("open until 2099-01-01 00:00:00 UTC"),
        "{breaker}"
    );
    let ok = row(&body, "ws-ok");
    assert!(ok.contains("class=\"valid\""), "{ok}");
    assert!(ok.contains("closed"), "breaker closed again: {ok}");
    assert!(ok.contains("2026-01-02 03:04:05 UTC"), "last refresh: {ok}");
    assert!(ok.contains(">7<"), "connection version: {ok}");
    assert!(
        ok.contains("<td class=\"num waiting\">4</td>"),
        "3 pending + 1 processing: {ok}"
    );

    // The ones that need an operator first, then the rest by workspace.
    let at = |w: &str| body.find(&format!("data-workspace=\"{w}\"")).expect("row");
    let attention = [at("ws-breaker"), at("ws-invalid"), at("ws-paused")];
    assert!(attention.windows(2).all(|w| w[0] < w[1]), "{attention:?}");
    assert!(attention[2] < at("ws-ok") && at("ws-ok") < at("ws-unpaused"));

    for part in ENVELOPE.split(':') {
        assert!(!body.contains(part), "a part of the stored token: {part}");
    }
    assert!(!body.contains(TOKEN));
    // Not logged in: no rebuild form, a way to log in.
    assert!(!body.contains("id=\"rebuild\""));
    assert!(body.contains("Log in to act"));

    // Logged in (the bearer works for pages too): the form, prefilled.
    let bearer = format!("Bearer {TOKEN}");
    let (_, body) = get(
        &app,
        "/dashboard/connections?rebuild=ws-ok",
        &[("authorization", &bearer)],
    )
    .await;
    assert!(
        body.contains("<form id=\"rebuild\" method=\"post\" action=\"/dashboard/rebuild\">"),
        "{body}"
    );
    assert!(
        body.contains("name=\"workspace\" required value=\"ws-ok\""),
        "{body}"
    );
    assert!(
        body.contains("name=\"calendar\" required value=\"primary\""),
        "{body}"
    );
    assert!(!body.contains(TOKEN));
    for part in ENVELOPE.split(':') {
        assert!(!body.contains(part));
    }
}

#[tokio::test]
async fn connections_page_by_keyset_and_cap_the_waiting_count() {
    let t = TestDb::new().await;
    seed(&t).await;
    let options = DashboardOptions {
        page_size: 2,
        count_cap: 2,
        ..DashboardOptions::default()
    };
    let app = app(&t, options);
    let mut seen = Vec::new();
    let mut uri = "/dashboard/connections".to_owned();
    for _ in 0..10 {
        let (status, body) = get(&app, &uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for (i, m) in body.match_indices("data-workspace=\"") {
            let rest = &body[i + m.len()..];
            seen.push(rest[..rest.find('"').expect("quote")].to_owned());
        }
        if body.contains("data-workspace=\"ws-ok\"") {
            assert!(
                body.contains("<td class=\"num waiting\">2+</td>"),
                "capped: {body}"
            );
        }
        match body.find("rel=\"next\" href=\"") {
            Some(i) => {
                let rest = &body[i + "rel=\"next\" href=\"".len()..];
                uri = rest[..rest.find('"').expect("quote")].replace("&amp;", "&");
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "ws-breaker",
            "ws-invalid",
            "ws-paused",
            "ws-ok",
            "ws-unpaused"
        ],
        "every workspace once, the ones that need an operator first"
    );
}

#[tokio::test]
async fn the_reconnect_command_quotes_odd_workspace_ids() {
    let t = TestDb::new().await;
    t.client()
        .await
        .execute(
            "INSERT INTO google_connections (workspace_id, google_email, refresh_token_encrypted)
             VALUES ('it''s <b>ws</b>', 'o@example.com', 'v1:k:eA')",
            &[],
        )
        .await
        .expect("connection");
    let app = app(&t, DashboardOptions::default());
    let (_, body) = get(&app, "/dashboard/connections", &[]).await;
    assert!(!body.contains("<b>ws</b>"), "escaped: {body}");
    assert!(
        body.contains("--workspace 'it'\\''s &lt;b&gt;ws&lt;/b&gt;'"),
        "shell-quoted and escaped: {body}"
    );
}
