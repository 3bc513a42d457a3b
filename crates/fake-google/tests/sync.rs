//! Incremental sync (events.list with `syncToken`) as drift detection uses it,
//! through the real google-calendar3 client, with a human editing and deleting
//! events through the admin API.

mod common;

use common::*;
use google_calendar3::api::Events;
use serde_json::{Value, json};

/// Lists the whole calendar (`sync`: from that token), page by page; the
/// items and the sync token of the last page. Asserts that only the last
/// page carries a sync token.
async fn list_pages(hub: &Hub, sync: Option<&str>, max: i32) -> (Vec<Value>, String) {
    let mut items = Vec::new();
    let mut page_token: Option<String> = None;
    loop {
        let mut call = hub.events().list(ALICE).max_results(max);
        if let Some(token) = sync {
            call = call.sync_token(token);
        }
        if let Some(token) = &page_token {
            call = call.page_token(token);
        }
        let (_, page): (_, Events) = call.doit().await.unwrap();
        items.extend(
            page.items
                .unwrap_or_default()
                .into_iter()
                .map(|e| serde_json::to_value(e).unwrap()),
        );
        match page.next_page_token {
            Some(next) => {
                assert!(page.next_sync_token.is_none(), "only the last page has one");
                page_token = Some(next);
            }
            None => return (items, page.next_sync_token.expect("the last page has one")),
        }
    }
}

async fn insert(hub: &Hub, id: &str) -> Value {
    let (_, event) = hub
        .events()
        .insert(event(Some(id), id, json!({ "ours": "yes" })), ALICE)
        .doit()
        .await
        .unwrap();
    serde_json::to_value(event).unwrap()
}

async fn admin_post(g: &fake_google::FakeGoogle, path: &str, body: Value) -> u16 {
    let url = format!("{}{path}", g.admin_url());
    let headers = [("content-type", "application/json")];
    raw("POST", &url, &headers, Some(body.to_string())).await.0
}

#[tokio::test]
async fn a_paged_full_listing_ends_with_a_token_that_yields_only_later_changes() {
    let (_g, hub) = setup().await;
    for n in 0..5 {
        insert(&hub, &format!("paged{n:04}")).await;
    }
    let (items, sync) = list_pages(&hub, None, 2).await;
    assert_eq!(items.len(), 5);

    let (changes, next) = list_pages(&hub, Some(&sync), 2).await;
    assert!(changes.is_empty(), "nothing changed: {changes:?}");
    insert(&hub, "paged0005").await;
    let (changes, _) = list_pages(&hub, Some(&next), 2).await;
    let ids: Vec<&str> = changes.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["paged0005"]);
}

#[tokio::test]
async fn hand_edits_and_deletions_arrive_with_new_etags_and_cancellations_are_bare() {
    let (g, hub) = setup().await;
    let kept = insert(&hub, "hand0001").await;
    let deleted = insert(&hub, "hand0002").await;
    let (_, sync) = list_pages(&hub, None, 250).await;

    let edit = json!({ "summary": "moved by hand" });
    let status = admin_post(&g, &format!("calendars/{ALICE}/events/hand0001/edit"), edit).await;
    assert_eq!(status, 200);
    let status = admin_post(
        &g,
        &format!("calendars/{ALICE}/events/hand0002/delete"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let unknown = admin_post(
        &g,
        &format!("calendars/{ALICE}/events/nothere01/edit"),
        json!({}),
    )
    .await;
    assert_eq!(unknown, 404);

    let (changes, _) = list_pages(&hub, Some(&sync), 250).await;
    assert_eq!(changes.len(), 2, "{changes:?}");
    let edited = &changes[0];
    assert_eq!(edited["id"], "hand0001");
    assert_eq!(edited["summary"], "moved by hand");
    assert_ne!(edited["etag"], kept["etag"]);
    let cancelled = &changes[1];
    assert_eq!(cancelled["id"], "hand0002");
    assert_eq!(cancelled["status"], "cancelled");
    assert_ne!(cancelled["etag"], deleted["etag"]);
    assert!(
        cancelled["summary"].is_null(),
        "only the id is guaranteed: {cancelled}"
    );
    assert!(cancelled["extendedProperties"].is_null());
}

#[tokio::test]
async fn a_sync_token_with_a_filter_is_400() {
    let (_g, hub) = setup().await;
    let (_, sync) = list_pages(&hub, None, 250).await;
    let with_time = hub
        .events()
        .list(ALICE)
        .sync_token(&sync)
        .time_min(chrono::Utc::now())
        .doit()
        .await;
    assert_eq!(
        code_reason(&bad_request(with_time)),
        (400, "invalid".into())
    );
    let with_property = hub
        .events()
        .list(ALICE)
        .sync_token(&sync)
        .add_private_extended_property("ours=yes")
        .doit()
        .await;
    assert_eq!(code_reason(&bad_request(with_property)).0, 400);
}

#[tokio::test]
async fn the_admin_route_expires_sync_tokens_with_google_s_410_body() {
    let (g, hub) = setup().await;
    let (_, sync) = list_pages(&hub, None, 250).await;
    assert_eq!(
        admin_post(&g, "sync_tokens/invalidate", json!({})).await,
        200
    );
    let body = bad_request(hub.events().list(ALICE).sync_token(&sync).doit().await);
    assert_eq!(code_reason(&body), (410, "fullSyncRequired".into()));
    assert_eq!(body["error"]["errors"][0]["domain"], "calendar");
    let garbage = bad_request(
        hub.events()
            .list(ALICE)
            .sync_token("not-a-token")
            .doit()
            .await,
    );
    assert_eq!(code_reason(&garbage), (410, "fullSyncRequired".into()));
    // A fresh full listing gives a token that works again.
    let (_, fresh) = list_pages(&hub, None, 250).await;
    let (changes, _) = list_pages(&hub, Some(&fresh), 250).await;
    assert!(changes.is_empty());
}

#[tokio::test]
async fn a_deletion_between_pages_skips_no_event_of_the_listing() {
    let (g, hub) = setup().await;
    for n in 0..5 {
        insert(&hub, &format!("skip{n:04}")).await;
    }
    let (_, first) = hub
        .events()
        .list(ALICE)
        .max_results(2)
        .doit()
        .await
        .unwrap();
    let first_ids: Vec<String> = first
        .items
        .unwrap()
        .into_iter()
        .map(|e| e.id.unwrap())
        .collect();
    assert_eq!(first_ids, ["skip0000", "skip0001"]);
    assert!(g.human_delete(ALICE, "skip0000"));

    let mut ids = first_ids;
    let mut page_token = first.next_page_token;
    while let Some(token) = page_token {
        let call = hub.events().list(ALICE).max_results(2).page_token(&token);
        let (_, page) = call.doit().await.unwrap();
        ids.extend(
            page.items
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.id.unwrap()),
        );
        page_token = page.next_page_token;
    }
    assert_eq!(
        ids,
        ["skip0000", "skip0001", "skip0002", "skip0003", "skip0004"]
    );
}
