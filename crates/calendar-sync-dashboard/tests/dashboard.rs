//! The dashboard against a real PostgreSQL (a fresh database per test),
//! driven through `tower::ServiceExt::oneshot`.

use axum::Router;
use axum::http::StatusCode;
use calendar_sync_dashboard::{DashboardOptions, router};
use calendar_sync_tests::{TestDb, upsert};
use uuid::Uuid;

mod support;
use support::Page;

/// `GET uri` without headers.
async fn get(app: &Router, uri: &str) -> Page {
    support::get(app, uri, &[]).await
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
    // Past the cap, the planner's estimate says how far past.
    assert!(
        page.body.contains("counted up to 4; ≈ 5 estimated"),
        "{}",
        page.body
    );
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
    assert_eq!(h("referrer-policy"), "same-origin");
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

#[tokio::test]
async fn search_finds_an_item_by_source_id_and_by_id() {
    let t = TestDb::new().await;
    seed_counts(&t).await;
    let wanted = t
        .insert(
            "UPSERT_EVENT",
            upsert("ws-a", "cal", "task-4711", "Find me"),
        )
        .await;
    set_status(&t, wanted, "COMPLETED", None).await;
    let app = nested(&t, "/dashboard", DashboardOptions::default());

    let page = get(&app, "/dashboard/items?q=task-4711").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(&format!("/dashboard/items/{wanted}")),
        "{}",
        page.body
    );
    assert!(page.body.contains("Find me"));
    assert!(!page.body.contains("pending"), "only the source's items");

    let page = get(&app, &format!("/dashboard/items?q={wanted}")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.headers["location"],
        format!("/dashboard/items/{wanted}").as_str()
    );

    let page = get(&app, &format!("/dashboard/items?q={}", Uuid::new_v4())).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"no-items\""));
}

#[tokio::test]
async fn items_filter_and_paginate() {
    let t = TestDb::new().await;
    seed_counts(&t).await;
    let options = DashboardOptions {
        page_size: 2,
        scan_window: 4,
        ..DashboardOptions::default()
    };
    let app = nested(&t, "/ops/cs", options);
    let ids_on = |body: &str| -> Vec<String> {
        body.match_indices("href=\"/ops/cs/items/")
            .map(|(i, m)| body[i + m.len()..i + m.len() + 36].to_owned())
            .collect()
    };
    let next_on = |body: &str| -> Option<String> {
        let i = body.find("rel=\"next\" href=\"")? + "rel=\"next\" href=\"".len();
        Some(body[i..i + body[i..].find('"')?].replace("&amp;", "&"))
    };
    // Every filter mode pages through all its items exactly once.
    for (filter, expected) in [
        ("status=PENDING", 5),
        ("status=DEAD_LETTER", 3),
        ("status=DEAD_LETTER&code=calendar_not_found", 2),
        ("status=COMPLETED", 3),
        ("", 13),
        ("workspace=ws-b", 3),
        ("operation=UPSERT_EVENT&source_type=task&source_id=p3", 1),
    ] {
        let mut seen = Vec::new();
        let mut uri = format!("/ops/cs/items?{filter}");
        for _ in 0..20 {
            let page = get(&app, &uri).await;
            assert_eq!(page.status, StatusCode::OK, "{uri}: {}", page.body);
            seen.extend(ids_on(&page.body));
            match next_on(&page.body) {
                Some(next) => uri = next,
                None => break,
            }
        }
        let unique: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{filter}: no item twice");
        assert_eq!(seen.len(), expected, "{filter}: {seen:?}");
    }
}

#[tokio::test]
async fn item_detail_shows_payload_source_items_and_binding() {
    let t = TestDb::new().await;
    let old = t
        .insert("UPSERT_EVENT", upsert("ws-a", "cal", "task-1", "v1"))
        .await;
    let new = t
        .insert("UPSERT_EVENT", upsert("ws-a", "cal", "task-1", "v2"))
        .await;
    let client = t.client().await;
    client
        .execute(
            "UPDATE sync_outbox SET status = 'SUPERSEDED', superseded_by = $2, processed_at = now() WHERE id = $1",
            &[&old, &new],
        )
        .await
        .expect("supersede");
    client
        .execute(
            "INSERT INTO calendar_event_bindings
                 (workspace_id, calendar_id, source_type, source_id, google_event_id, state, content_hash, last_outbox_id)
             VALUES ('ws-a', 'cal', 'task', 'task-1', 'csabc123', 'LIVE', 'hash-xyz', $1)",
            &[&new],
        )
        .await
        .expect("binding");
    let app = nested(&t, "/dashboard", DashboardOptions::default());
    let page = get(&app, &format!("/dashboard/items/{old}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("SUPERSEDED"));
    assert!(
        page.body
            .contains(&format!("href=\"/dashboard/items/{new}\"")),
        "superseded_by linked"
    );
    assert!(
        page.body.contains("&quot;title&quot;: &quot;v1&quot;"),
        "pretty-printed payload: {}",
        page.body
    );
    assert!(
        page.body.contains("csabc123") && page.body.contains("hash-xyz"),
        "binding"
    );
    // A live event links to its page in Google Calendar: base64 of
    // "<event id> <calendar id>", as Google's htmlLink.
    assert!(
        page.body.contains(
            "id=\"event-link\" href=\"https://www.google.com/calendar/event?eid=Y3NhYmMxMjMgY2Fs\""
        ),
        "{}",
        page.body
    );
    // Google's own htmlLink, once the binding has one, is preferred.
    client
        .execute(
            "UPDATE calendar_event_bindings
                SET html_link = 'https://www.google.com/calendar/event?eid=c3RvcmVk',
                    last_written_at = '2025-01-15T14:00:00Z'",
            &[],
        )
        .await
        .expect("binding link");
    let page = get(&app, &format!("/dashboard/items/{old}")).await;
    assert!(
        page.body.contains(
            "id=\"event-link\" href=\"https://www.google.com/calendar/event?eid=c3RvcmVk\""
        ),
        "{}",
        page.body
    );
    let siblings = &page.body[page.body.find("id=\"source-items\"").expect("source items")..];
    assert!(
        siblings.find(&old.to_string()) < siblings.find(&new.to_string()),
        "in order"
    );

    assert_eq!(
        get(&app, &format!("/dashboard/items/{}", Uuid::new_v4()))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/dashboard/items/not-a-uuid").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn user_content_is_escaped() {
    let t = TestDb::new().await;
    let img = "<img src=x onerror=alert(1)>";
    let script = "</script><script>alert(1)</script>";
    let mut payload = upsert("ws-<b>x</b>", "cal", "<i>src</i>", img);
    payload["event"]["description"] = serde_json::Value::from(script);
    let id = t.insert("UPSERT_EVENT", payload).await;
    set_status(
        &t,
        id,
        "DEAD_LETTER",
        Some(&format!("[bad_request] {script}")),
    )
    .await;
    t.client()
        .await
        .execute(
            "INSERT INTO google_connections (workspace_id, google_email, refresh_token_encrypted, is_valid, invalid_reason)
             VALUES ('ws-<b>x</b>', '<svg onload=alert(1)>@example.com', 'v1:k:SECRET-ENVELOPE', false, $1)",
            &[&script],
        )
        .await
        .expect("connection");
    let app = nested(&t, "/dashboard", DashboardOptions::default());
    for uri in [
        "/dashboard".to_owned(),
        "/dashboard/items".to_owned(),
        "/dashboard/items?status=DEAD_LETTER".to_owned(),
        format!("/dashboard/items/{id}"),
        "/dashboard/items?q=%3Ci%3Esrc%3C%2Fi%3E".to_owned(),
    ] {
        let page = get(&app, &uri).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}");
        for raw in [img, script, "<script", "<img", "<svg", "<b>", "<i>"] {
            assert!(!page.body.contains(raw), "{uri} contains {raw} raw");
        }
        assert!(page.body.contains("&lt;"), "{uri}: escaped content shown");
    }
    let detail = get(&app, &format!("/dashboard/items/{id}")).await.body;
    assert!(
        detail.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{detail}"
    );
    assert!(detail.contains("&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[tokio::test]
async fn links_work_under_two_prefixes() {
    let t = TestDb::new().await;
    seed_counts(&t).await;
    for prefix in ["/dashboard", "/ops/cs"] {
        let app = nested(&t, prefix, DashboardOptions::default());
        let mut queue = vec![prefix.to_owned()];
        let mut visited = std::collections::BTreeSet::new();
        while let Some(uri) = queue.pop() {
            if !visited.insert(uri.clone()) || visited.len() > 60 {
                continue;
            }
            let page = get(&app, &uri).await;
            assert!(
                page.status == StatusCode::OK,
                "{prefix}: {uri} -> {}",
                page.status
            );
            for attr in ["href=\"", "action=\""] {
                for (i, m) in page.body.match_indices(attr) {
                    let rest = &page.body[i + m.len()..];
                    let link = rest[..rest.find('"').expect("quoted")].replace("&amp;", "&");
                    assert!(
                        link.starts_with(&format!("{prefix}/")) || link == prefix,
                        "{prefix}: {uri} links outside the prefix: {link}"
                    );
                    queue.push(link);
                }
            }
        }
        assert!(
            visited.iter().any(|u| u.contains("/items/")),
            "{prefix}: an item page was visited"
        );
        assert!(
            visited.iter().any(|u| u.contains("/assets/")),
            "{prefix}: the stylesheet was fetched"
        );
    }
    // At the root too.
    let app = router(t.db.clone(), DashboardOptions::default());
    let page = get(&app, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("href=\"/items?status=PENDING\""));
}

#[tokio::test]
async fn no_token_in_any_page() {
    let t = TestDb::new().await;
    seed_counts(&t).await;
    let envelope = "v1:key-2024:U0VDUkVULVJFRlJFU0gtVE9LRU4tZW52ZWxvcGU";
    t.client()
        .await
        .execute(
            "INSERT INTO google_connections (workspace_id, google_email, refresh_token_encrypted, is_valid, invalid_reason, paused_until)
             VALUES ('ws-a', 'a@example.com', $1, false, 'invalid_grant', now() + interval '1 hour'),
                    ('ws-b', 'b@example.com', $1, true, NULL, now() + interval '1 hour')",
            &[&envelope],
        )
        .await
        .expect("connections");
    let app = nested(&t, "/dashboard", DashboardOptions::default());
    let overview = get(&app, "/dashboard").await.body;
    assert!(
        overview.contains("invalid_grant") && overview.contains("a@example.com"),
        "{overview}"
    );
    let mut uris = vec![
        "/dashboard".to_owned(),
        "/dashboard/items".to_owned(),
        "/dashboard/items?workspace=ws-a".to_owned(),
    ];
    let items = get(&app, "/dashboard/items").await.body;
    for (i, m) in items.match_indices("href=\"/dashboard/items/") {
        uris.push(format!(
            "/dashboard/items/{}",
            &items[i + m.len()..i + m.len() + 36]
        ));
    }
    for uri in &uris {
        let body = get(&app, uri).await.body;
        for part in envelope.split(':') {
            assert!(
                !body.contains(part),
                "{uri} shows a part of the token envelope: {part}"
            );
        }
    }
}

/// Issue 16 §5: the search box finds a source's items through the source-id
/// index, however old: a COMPLETED item behind more than `scan_window`
/// newer items is on the first page.
#[tokio::test]
async fn source_id_search_reaches_past_the_scan_window() {
    let t = TestDb::new().await;
    let old = t
        .insert("UPSERT_EVENT", upsert("ws-a", "cal", "task-old", "Ancient"))
        .await;
    set_status(&t, old, "COMPLETED", None).await;
    for i in 0..12 {
        let id = t
            .insert(
                "UPSERT_EVENT",
                upsert("ws-a", "cal", &format!("n{i}"), "newer"),
            )
            .await;
        set_status(&t, id, "COMPLETED", None).await;
    }
    let newer = t
        .insert("UPSERT_EVENT", upsert("ws-a", "cal", "task-old", "Again"))
        .await;
    let options = DashboardOptions {
        scan_window: 5,
        page_size: 1,
        ..DashboardOptions::default()
    };
    let app = nested(&t, "/dashboard", options);
    let page = get(&app, "/dashboard/items?q=task-old").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(&format!("/dashboard/items/{newer}")),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("looked at the"),
        "no window: {}",
        page.body
    );
    // The next page (keyset by id) is the old one.
    let start =
        page.body.find("rel=\"next\" href=\"").expect("next page") + "rel=\"next\" href=\"".len();
    let next =
        page.body[start..start + page.body[start..].find('"').expect("end")].replace("&amp;", "&");
    let page = get(&app, &next).await;
    assert!(
        page.body.contains(&format!("/dashboard/items/{old}")),
        "{}",
        page.body
    );
    assert!(page.body.contains("Ancient"));
    assert!(!page.body.contains("rel=\"next\""), "nothing older");
    // The source id filter goes the same way, with a status.
    let page = get(&app, "/dashboard/items?source_id=task-old&status=COMPLETED").await;
    assert!(
        page.body.contains(&format!("/dashboard/items/{old}")),
        "{}",
        page.body
    );
}
