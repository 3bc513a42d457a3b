//! Calendar events methods, driven through the real google-calendar3 7 client.

mod common;

use common::*;
use fake_google::{CancelledWritePolicy, ExtPropMatch, PagingMode};
use google_calendar3::api::Event;
use serde_json::{Value, json};

#[tokio::test]
async fn insert_then_get_returns_the_stored_resource() {
    let (g, hub) = setup().await;
    let (resp, ev) = hub
        .events()
        .insert(
            event(Some("abc123def456"), "Lunch", json!({"ws": "w1"})),
            ALICE,
        )
        .doit()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(ev.id.as_deref(), Some("abc123def456"));
    assert_eq!(ev.kind.as_deref(), Some("calendar#event"));
    assert_eq!(ev.status.as_deref(), Some("confirmed"));
    assert_eq!(ev.i_cal_uid.as_deref(), Some("abc123def456@google.com"));
    assert_eq!(ev.sequence, Some(0));
    assert!(ev.created.is_some() && ev.updated.is_some());
    assert!(
        ev.html_link
            .unwrap()
            .starts_with("https://www.google.com/calendar/event?eid=")
    );
    let etag = ev.etag.unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let (_, got) = hub
        .events()
        .get(ALICE, "abc123def456")
        .doit()
        .await
        .unwrap();
    assert_eq!(got.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(got.summary.as_deref(), Some("Lunch"));
    let props = got.extended_properties.unwrap().private.unwrap();
    assert_eq!(props["ws"], "w1");
    // google-calendar3 puts the calendar id into the path unencoded (`alice@example.com`);
    // other clients send `%40`: both reach the same calendar.
    assert!(g.requests()[1].path.contains("alice@example.com"));
    let token = g.requests()[1]
        .header("authorization")
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    let (s, _, body) = cal_raw(
        &g,
        &token,
        "GET",
        "calendars/alice%40example.com/events/abc123def456",
        &[],
        None,
    )
    .await;
    assert_eq!((s, body["id"].as_str()), (200, Some("abc123def456")));
}

#[tokio::test]
async fn insert_without_id_generates_a_base32hex_id() {
    let (g, hub) = setup().await;
    let (_, ev) = hub
        .events()
        .insert(event(None, "x", json!({})), ALICE)
        .doit()
        .await
        .unwrap();
    let id = ev.id.unwrap();
    assert!(fake_google::is_valid_event_id(&id), "{id}");
    assert_eq!(g.events(ALICE).len(), 1);
}

#[tokio::test]
async fn reused_id_is_409_even_after_delete_and_second_delete_is_410() {
    let (g, hub) = setup().await;
    let id = "0123456789abcdefghijklmnopqrstuv";
    hub.events()
        .insert(event(Some(id), "first", json!({})), ALICE)
        .doit()
        .await
        .unwrap();
    let body = bad_request(
        hub.events()
            .insert(event(Some(id), "second", json!({})), ALICE)
            .doit()
            .await,
    );
    assert_eq!(
        body,
        json!({"error":{"errors":[{"domain":"global","reason":"duplicate","message":"The requested identifier already exists."}],"code":409,"message":"The requested identifier already exists."}})
    );
    assert_eq!(
        g.event(ALICE, id).unwrap()["summary"],
        "first",
        "409 leaves the event untouched"
    );

    let resp = hub.events().delete(ALICE, id).doit().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(g.event(ALICE, id).unwrap()["status"], "cancelled");
    let (_, got) = hub.events().get(ALICE, id).doit().await.unwrap();
    assert_eq!(got.status.as_deref(), Some("cancelled"));
    assert_eq!(
        got.summary.as_deref(),
        Some("first"),
        "cancelled events keep their details"
    );

    let body = bad_request(hub.events().delete(ALICE, id).doit().await);
    assert_eq!(
        body,
        json!({"error":{"errors":[{"domain":"global","reason":"deleted","message":"Resource has been deleted"}],"code":410,"message":"Resource has been deleted"}})
    );
    let body = bad_request(
        hub.events()
            .insert(event(Some(id), "third", json!({})), ALICE)
            .doit()
            .await,
    );
    assert_eq!(code_reason(&body), (409, "duplicate".into()));
    assert_eq!(g.events(ALICE).len(), 1);
}

#[tokio::test]
async fn unknown_event_and_unknown_calendar_are_404() {
    let (_g, hub) = setup().await;
    for r in [
        bad_request(hub.events().get(ALICE, "nosuchevent").doit().await),
        bad_request(hub.events().delete(ALICE, "nosuchevent").doit().await),
        bad_request(
            hub.events()
                .update(event(None, "x", json!({})), ALICE, "nosuchevent")
                .doit()
                .await,
        ),
        bad_request(
            hub.events()
                .patch(event(None, "x", json!({})), ALICE, "nosuchevent")
                .doit()
                .await,
        ),
        bad_request(
            hub.events()
                .insert(event(None, "x", json!({})), "bob@example.com")
                .doit()
                .await,
        ),
        bad_request(hub.events().list("bob@example.com").doit().await),
    ] {
        assert_eq!(
            r["error"]["errors"][0],
            json!({"domain":"global","reason":"notFound","message":"Not Found"})
        );
        assert_eq!(r["error"]["code"], 404);
    }
}

#[tokio::test]
async fn insert_validation_errors_are_400() {
    let (g, hub) = setup().await;
    let cases: Vec<(Value, &str, &str)> = vec![
        // a UUID with hyphens is not base32hex
        (
            json!({"id": "123e4567-e89b-12d3-a456-426614174000"}),
            "invalid",
            "Invalid resource id value.",
        ),
        (
            json!({"id": "abcd"}),
            "invalid",
            "Invalid resource id value.",
        ),
        (
            json!({"id": "abcdefghw"}),
            "invalid",
            "Invalid resource id value.",
        ),
        (
            json!({"id": "abcdef12345", "iCalUID": "x@y"}),
            "invalid",
            "Invalid resource id value.",
        ),
        (json!({"end": null}), "required", "Missing end time."),
        (
            json!({"end": {"dateTime": "2030-05-01T10:00:00+02:00"}}),
            "timeRangeEmpty",
            "The specified time range is empty.",
        ),
        (
            json!({"end": {"dateTime": "2030-05-01T09:00:00+02:00"}}),
            "timeRangeEmpty",
            "The specified time range is empty.",
        ),
        (
            json!({"end": {"date": "2030-05-02"}}),
            "invalid",
            "Start and end times must either both be date or both be dateTime.",
        ),
    ];
    for (patch, reason, message) in cases {
        let mut v = serde_json::to_value(event(None, "bad", json!({}))).unwrap();
        for (k, x) in patch.as_object().unwrap() {
            v[k] = x.clone();
        }
        let ev: Event = serde_json::from_value(v).unwrap();
        let body = bad_request(hub.events().insert(ev, ALICE).doit().await);
        assert_eq!(body["error"]["code"], 400, "{body}");
        assert_eq!(body["error"]["errors"][0]["reason"], reason, "{body}");
        assert_eq!(body["error"]["errors"][0]["message"], message, "{body}");
    }
    assert!(g.events(ALICE).is_empty());
}

#[tokio::test]
async fn update_replaces_and_patch_merges_with_new_etags() {
    let (g, hub) = setup().await;
    let id = "evupdate01";
    let (_, v1) = hub
        .events()
        .insert(event(Some(id), "v1", json!({"a": "1", "b": "2"})), ALICE)
        .doit()
        .await
        .unwrap();
    // PUT without `b` and without description: both gone.
    let mut put = event(None, "v2", json!({"a": "1"}));
    put.location = Some("Room 1".into());
    let (_, v2) = hub.events().update(put, ALICE, id).doit().await.unwrap();
    assert_ne!(v1.etag, v2.etag);
    assert!(v2.updated > v1.updated);
    let stored = g.event(ALICE, id).unwrap();
    assert_eq!(stored["extendedProperties"]["private"], json!({"a": "1"}));
    assert_eq!(stored["location"], "Room 1");
    assert_eq!(stored["created"], serde_json::to_value(v1.created).unwrap());

    // PATCH: only summary changes; properties merge.
    let patch: Event = serde_json::from_value(
        json!({"summary": "v3", "extendedProperties": {"private": {"c": "3"}}}),
    )
    .unwrap();
    let (_, v3) = hub.events().patch(patch, ALICE, id).doit().await.unwrap();
    assert_ne!(v2.etag, v3.etag);
    let stored = g.event(ALICE, id).unwrap();
    assert_eq!(stored["summary"], "v3");
    assert_eq!(stored["location"], "Room 1");
    assert_eq!(
        stored["extendedProperties"]["private"],
        json!({"a": "1", "c": "3"})
    );

    // google-calendar3 strips nulls, so a key deletion needs a raw PATCH.
    let token = access_token(&g, REFRESH).await;
    let path = format!("calendars/{ALICE}/events/{id}");
    let (s, _, body) = cal_raw(
        &g,
        &token,
        "PATCH",
        &path,
        &[],
        Some(json!({"extendedProperties": {"private": {"a": null}}})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(body["extendedProperties"]["private"], json!({"c": "3"}));

    // If-Match: stale etag -> 412 conditionNotMet; current etag -> 200.
    let stale = v3.etag.unwrap();
    let (s, _, body) = cal_raw(
        &g,
        &token,
        "PUT",
        &path,
        &[("if-match", &stale)],
        Some(serde_json::to_value(event(None, "v4", json!({}))).unwrap()),
    )
    .await;
    assert_eq!(s, 412);
    assert_eq!(body["error"]["errors"][0]["reason"], "conditionNotMet");
    let current = g.event(ALICE, id).unwrap()["etag"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _, _) = cal_raw(&g, &token, "DELETE", &path, &[("if-match", &current)], None).await;
    assert_eq!(s, 204);
    // If-None-Match on get -> 304, which google-calendar3 reports as Failure (empty body).
    let current = g.event(ALICE, id).unwrap()["etag"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _, _) = cal_raw(
        &g,
        &token,
        "GET",
        &path,
        &[("if-none-match", &current)],
        None,
    )
    .await;
    assert_eq!(s, 304);
}

#[tokio::test]
async fn extended_property_limits() {
    let (g, hub) = setup().await;
    let long_key = "k".repeat(45);
    let key44 = "k".repeat(44);
    let props = json!({ long_key.clone(): "dropped", key44.clone(): "v".repeat(1500) });
    let (_, ev) = hub
        .events()
        .insert(event(Some("eprops0001"), "x", props), ALICE)
        .doit()
        .await
        .unwrap();
    let p = ev.extended_properties.unwrap().private.unwrap();
    assert!(!p.contains_key(&long_key));
    assert_eq!(p[&key44].len(), 1024);
    assert_eq!(
        g.event(ALICE, "eprops0001").unwrap()["extendedProperties"]["private"][&key44]
            .as_str()
            .unwrap()
            .len(),
        1024
    );

    let many: serde_json::Map<String, Value> =
        (0..301).map(|i| (format!("k{i}"), json!("v"))).collect();
    let body = bad_request(
        hub.events()
            .insert(event(None, "x", Value::Object(many)), ALICE)
            .doit()
            .await,
    );
    assert_eq!(body["error"]["code"], 400);
    let big: serde_json::Map<String, Value> = (0..40)
        .map(|i| (format!("k{i}"), json!("v".repeat(1000))))
        .collect();
    let body = bad_request(
        hub.events()
            .insert(event(None, "x", Value::Object(big)), ALICE)
            .doit()
            .await,
    );
    assert_eq!(body["error"]["code"], 400);
    assert_eq!(g.events(ALICE).len(), 1);
}

async fn list_all(
    hub: &Hub,
    max: i32,
    filter: &[&str],
    show_deleted: bool,
) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut call = hub
            .events()
            .list(ALICE)
            .max_results(max)
            .show_deleted(show_deleted);
        for f in filter {
            call = call.add_private_extended_property(f);
        }
        if let Some(t) = &token {
            call = call.page_token(t);
        }
        let (_, page) = call.doit().await.unwrap();
        let items = page.items.unwrap_or_default();
        sizes.push(items.len());
        ids.extend(items.into_iter().map(|e| e.id.unwrap()));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => {
                assert!(page.next_sync_token.is_some());
                return (ids, sizes);
            }
        }
    }
}

#[tokio::test]
async fn list_filters_and_pages() {
    let (g, hub) = setup().await;
    let mut mine = Vec::new();
    for i in 0..7 {
        let id = format!("listevent{i:02}");
        let ws = if i % 2 == 0 { "w1" } else { "w2" };
        hub.events()
            .insert(
                event(Some(&id), "x", json!({"ws": ws, "n": i.to_string()})),
                ALICE,
            )
            .doit()
            .await
            .unwrap();
        if ws == "w1" {
            mine.push(id);
        }
    }
    hub.events()
        .delete(ALICE, "listevent00")
        .doit()
        .await
        .unwrap();

    let (ids, sizes) = list_all(&hub, 2, &["ws=w1"], false).await;
    assert_eq!(ids, mine[1..].to_vec());
    assert_eq!(sizes, vec![2, 1]);
    let (ids, _) = list_all(&hub, 2, &["ws=w1"], true).await;
    assert_eq!(ids, mine);
    let (ids, _) = list_all(&hub, 250, &[], false).await;
    assert_eq!(ids.len(), 6);

    // Several constraints: AND by default (discovery doc), OR with the switch (guide).
    let (ids, _) = list_all(&hub, 10, &["ws=w1", "n=2"], false).await;
    assert_eq!(ids, vec!["listevent02"]);
    g.set_ext_prop_match(ExtPropMatch::Any);
    let (ids, _) = list_all(&hub, 10, &["ws=w1", "n=1"], false).await;
    assert_eq!(
        ids,
        vec!["listevent01", "listevent02", "listevent04", "listevent06"]
    );
    g.set_ext_prop_match(ExtPropMatch::All);

    // Erratic paging: empty and short pages that still carry nextPageToken.
    g.set_paging(PagingMode::Erratic);
    let (ids, sizes) = list_all(&hub, 4, &[], true).await;
    assert_eq!(ids.len(), 7);
    assert_eq!(
        sizes[0], 0,
        "first page is empty but has a nextPageToken: {sizes:?}"
    );
    assert!(sizes.len() > 3 && *sizes.last().unwrap() == 0, "{sizes:?}");
    g.set_paging(PagingMode::Exact);

    // A page size cap holds pages short whatever maxResults asks.
    g.set_max_page_size(Some(2));
    let (ids, sizes) = list_all(&hub, 2500, &[], true).await;
    assert_eq!(ids.len(), 7);
    assert_eq!(sizes, [2, 2, 2, 1]);
    g.set_max_page_size(None);

    // updatedMin includes cancelled events updated since then.
    let since = g.event(ALICE, "listevent00").unwrap()["updated"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    hub.events()
        .patch(
            serde_json::from_value(json!({"summary": "later"})).unwrap(),
            ALICE,
            "listevent05",
        )
        .doit()
        .await
        .unwrap();
    let (_, page) = hub
        .events()
        .list(ALICE)
        .updated_min(since)
        .doit()
        .await
        .unwrap();
    let ids: Vec<_> = page
        .items
        .unwrap()
        .into_iter()
        .map(|e| e.id.unwrap())
        .collect();
    assert_eq!(ids, vec!["listevent00", "listevent05"]);

    // maxResults above 2500 is capped; below 1 is 400.
    let (_, page) = hub
        .events()
        .list(ALICE)
        .max_results(100000)
        .doit()
        .await
        .unwrap();
    assert_eq!(page.items.unwrap().len(), 6);
    let body = bad_request(hub.events().list(ALICE).max_results(0).doit().await);
    assert_eq!(body["error"]["code"], 400);
}

#[tokio::test]
async fn sync_tokens_and_full_sync_required() {
    let (g, hub) = setup().await;
    hub.events()
        .insert(event(Some("sevent001"), "a", json!({})), ALICE)
        .doit()
        .await
        .unwrap();
    hub.events()
        .insert(event(Some("sevent002"), "b", json!({})), ALICE)
        .doit()
        .await
        .unwrap();
    let (_, page) = hub.events().list(ALICE).doit().await.unwrap();
    let sync = page.next_sync_token.unwrap();
    hub.events()
        .delete(ALICE, "sevent001")
        .doit()
        .await
        .unwrap();
    hub.events()
        .insert(event(Some("sevent003"), "c", json!({})), ALICE)
        .doit()
        .await
        .unwrap();
    let (_, page) = hub
        .events()
        .list(ALICE)
        .sync_token(&sync)
        .doit()
        .await
        .unwrap();
    let got: Vec<_> = page
        .items
        .unwrap()
        .into_iter()
        .map(|e| (e.id.unwrap(), e.status.unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("sevent001".into(), "cancelled".into()),
            ("sevent003".into(), "confirmed".into())
        ]
    );
    let body = bad_request(
        hub.events()
            .list(ALICE)
            .sync_token(&sync)
            .add_private_extended_property("a=b")
            .doit()
            .await,
    );
    assert_eq!(body["error"]["code"], 400);
    g.invalidate_sync_tokens();
    let body = bad_request(hub.events().list(ALICE).sync_token(&sync).doit().await);
    assert_eq!(code_reason(&body), (410, "fullSyncRequired".into()));
}

#[tokio::test]
async fn writes_to_cancelled_events_follow_the_switch() {
    let (g, hub) = setup().await;
    let cases = [
        (
            CancelledWritePolicy::Restore,
            Ok("confirmed"),
            Ok("confirmed"),
        ),
        (
            CancelledWritePolicy::FollowBody,
            Ok("confirmed"),
            Ok("cancelled"),
        ),
        (
            CancelledWritePolicy::KeepCancelled,
            Ok("cancelled"),
            Ok("cancelled"),
        ),
        (
            CancelledWritePolicy::Forbidden,
            Err((403, "forbidden")),
            Err((403, "forbidden")),
        ),
        (
            CancelledWritePolicy::NotFound,
            Err((404, "notFound")),
            Err((404, "notFound")),
        ),
    ];
    for (n, (policy, put, patch)) in cases.into_iter().enumerate() {
        g.set_cancelled_write_policy(policy);
        for (m, expected) in [("put", put), ("patch", patch)] {
            let id = format!("cancelled{n}{m}");
            hub.events()
                .insert(event(Some(&id), "orig", json!({})), ALICE)
                .doit()
                .await
                .unwrap();
            assert!(g.human_delete(ALICE, &id), "a human deletes it in the UI");
            let body = event(None, "edited", json!({}));
            let r = if m == "put" {
                hub.events().update(body, ALICE, &id).doit().await
            } else {
                hub.events().patch(body, ALICE, &id).doit().await
            };
            let stored = g.event(ALICE, &id).unwrap();
            match expected {
                Ok(status) => {
                    let (_, ev) = r.unwrap();
                    assert_eq!(ev.status.as_deref(), Some(status), "{policy:?} {m}");
                    assert_eq!(stored["summary"], "edited");
                }
                Err((code, reason)) => {
                    assert_eq!(
                        code_reason(&bad_request(r)),
                        (code, reason.to_string()),
                        "{policy:?} {m}"
                    );
                    assert_eq!(stored["summary"], "orig");
                    assert_eq!(stored["status"], "cancelled");
                }
            }
        }
    }
    assert_eq!(g.settings().cancelled_write, CancelledWritePolicy::NotFound);
}

#[tokio::test]
async fn primary_alias_human_edits_orphans_and_delete_status() {
    let (g, hub) = setup().await;
    // alice's email is a calendar, so `primary` is it.
    hub.events()
        .insert(event(Some("prim0001"), "p", json!({})), "primary")
        .doit()
        .await
        .unwrap();
    assert_eq!(g.events(ALICE).len(), 1);

    // Bob has no calendar of his own; `primary` is the alias.
    g.add_refresh_token("rt-bob", CLIENT_ID, "bob@example.com");
    let bob = hub_for(&g, "rt-bob").await;
    let body = bad_request(bob.events().list("primary").doit().await);
    assert_eq!(body["error"]["code"], 404);
    g.set_primary("shared@group.calendar.google.com");
    bob.events()
        .insert(event(Some("prim0002"), "b", json!({})), "primary")
        .doit()
        .await
        .unwrap();
    assert_eq!(g.events("shared@group.calendar.google.com").len(), 1);

    // A human edit changes the etag; an orphan is found by its property.
    let before = g.event(ALICE, "prim0001").unwrap()["etag"].clone();
    assert!(g.human_edit(ALICE, "prim0001", |e| {
        e.insert("summary".into(), json!("renamed by hand"));
    }));
    let (_, ev) = hub.events().get(ALICE, "prim0001").doit().await.unwrap();
    assert_eq!(ev.summary.as_deref(), Some("renamed by hand"));
    assert_ne!(json!(ev.etag), before);
    let orphan = g.create_event(
        ALICE,
        json!({"summary": "orphan",
        "start": {"date": "2030-01-01"}, "end": {"date": "2030-01-02"},
        "extendedProperties": {"private": {"ws": "w9"}}}),
    );
    let (_, page) = hub
        .events()
        .list(ALICE)
        .add_private_extended_property("ws=w9")
        .doit()
        .await
        .unwrap();
    assert_eq!(page.items.unwrap()[0].id.as_deref(), orphan["id"].as_str());
    assert!(g.purge_event(ALICE, orphan["id"].as_str().unwrap()));
    assert_eq!(
        code_reason(&bad_request(
            hub.events()
                .get(ALICE, orphan["id"].as_str().unwrap())
                .doit()
                .await
        ))
        .0,
        404
    );

    g.set_delete_status(200);
    let resp = hub.events().delete(ALICE, "prim0001").doit().await.unwrap();
    assert_eq!(resp.status(), 200);
}

async fn hub_for(g: &fake_google::FakeGoogle, refresh: &str) -> Hub {
    let token = access_token(g, refresh).await;
    hub(g, token)
}

#[tokio::test]
async fn production_connector_with_https_or_http_reaches_the_fake() {
    let g = fake().await;
    let token = access_token(&g, REFRESH).await;
    let hub = https_or_http_hub(&g, token);
    let (_, ev) = hub
        .events()
        .insert(event(Some("rustls001"), "x", json!({})), ALICE)
        .doit()
        .await
        .unwrap();
    assert_eq!(ev.id.as_deref(), Some("rustls001"));
}

/// The optional fields the drainer sends, on a client event.
fn with_fields(mut v: Value, fields: &Value) -> Event {
    for (k, x) in fields.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn optional_fields_are_stored_and_returned_on_every_read() {
    let (_g, hub) = setup().await;
    let base =
        serde_json::to_value(event(Some("evfields01"), "Ship", json!({"ws": "w1"}))).unwrap();
    let first = json!({
        "location": "Room 4",
        "source": {"url": "https://app.example/t/1", "title": "Task 1"},
        "transparency": "transparent",
        "visibility": "private",
        "colorId": "11",
        "reminders": {"useDefault": false, "overrides": [
            {"method": "popup", "minutes": 60}, {"method": "email", "minutes": 1440}]},
    });
    let fields = |ev: &Event| {
        let v = serde_json::to_value(ev).unwrap();
        json!({
            "location": v["location"], "source": v["source"], "transparency": v["transparency"],
            "visibility": v["visibility"], "colorId": v["colorId"], "reminders": v["reminders"],
        })
    };
    let (_, inserted) = hub
        .events()
        .insert(with_fields(base.clone(), &first), ALICE)
        .doit()
        .await
        .unwrap();
    assert_eq!(fields(&inserted), first);
    let (_, got) = hub.events().get(ALICE, "evfields01").doit().await.unwrap();
    assert_eq!(fields(&got), first);

    let second = json!({
        "location": "Room 5",
        "source": {"url": "http://app.example/t/2", "title": "Task 2"},
        "transparency": "opaque",
        "visibility": "public",
        "colorId": "1",
        "reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 0}]},
    });
    let (_, updated) = hub
        .events()
        .update(with_fields(base, &second), ALICE, "evfields01")
        .doit()
        .await
        .unwrap();
    assert_eq!(fields(&updated), second);
    let (_, listed) = hub.events().list(ALICE).doit().await.unwrap();
    assert_eq!(fields(&listed.items.unwrap()[0]), second);
}

#[tokio::test]
async fn optional_fields_google_refuses_are_400_on_insert_and_update() {
    let (g, hub) = setup().await;
    let base = serde_json::to_value(event(Some("evfields02"), "Ship", json!({}))).unwrap();
    hub.events()
        .insert(with_fields(base.clone(), &json!({})), ALICE)
        .doit()
        .await
        .unwrap();
    let popup = |minutes: u32| json!({"method": "popup", "minutes": minutes});
    let refused = [
        json!({"reminders": {"useDefault": false,
            "overrides": [popup(1), popup(2), popup(3), popup(4), popup(5), popup(6)]}}),
        json!({"reminders": {"useDefault": false, "overrides": [popup(40321)]}}),
        json!({"colorId": "12"}),
        json!({"colorId": "0"}),
        json!({"transparency": "busy"}),
        json!({"visibility": "secret"}),
        json!({"source": {"url": "ftp://app.example/t/1"}}),
    ];
    for fields in refused {
        let mut new = base.clone();
        new["id"] = json!("evfields03");
        let body = bad_request(
            hub.events()
                .insert(with_fields(new, &fields), ALICE)
                .doit()
                .await,
        );
        assert_eq!(body["error"]["code"], 400, "insert {fields}: {body}");
        assert!(body["error"]["errors"][0]["reason"].is_string(), "{body}");
        let body = bad_request(
            hub.events()
                .update(with_fields(base.clone(), &fields), ALICE, "evfields02")
                .doit()
                .await,
        );
        assert_eq!(body["error"]["code"], 400, "update {fields}: {body}");
    }
    assert_eq!(g.events(ALICE).len(), 1);
}
