//! The Google adapter, through the real google-calendar3 client, against the
//! fake Google server, with a real PostgreSQL.

use std::time::Duration;

use calendar_sync::{
    Calendar, CalendarErrorKind, CalendarKey, DrainerConfig, GoogleCalendar, OutboxDrainer,
    TokenCipher,
};
use calendar_sync_tests::{CLIENT_ID, GoogleEnv, OutboxRow, cancel, fast_config, rebuild, upsert};
use fake_google::{ApiMethod, CancelledWritePolicy, ExtPropMatch, Fault, FaultKind, PagingMode};
use secrecy::SecretString;

/// A fresh database and fake Google with workspaces w1 and w2, each with a
/// connection (refresh token `rt-<ws>`) and a calendar `<ws>@example.com`.
async fn env() -> GoogleEnv {
    GoogleEnv::start(&["w1", "w2"]).await
}

/// One item at a time, in insertion order.
fn one_at_a_time() -> DrainerConfig {
    DrainerConfig {
        concurrency: 1,
        batch_size: 1,
        ..fast_config()
    }
}

/// An upsert of w1's `s1` drained once into a fault of `kind` on its first
/// `/events` call; the environment and the row afterwards.
async fn upsert_into(kind: FaultKind) -> (GoogleEnv, uuid::Uuid, OutboxRow) {
    let e = env().await;
    e.g.inject(Fault::new(kind).path("/events").times(1));
    let id =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
            .await;
    e.drainer().drain_once().await.unwrap();
    let row = e.t.row(id).await;
    (e, id, row)
}

const CAL1: &str = "w1@example.com";

#[tokio::test]
async fn create_update_cancel_and_recreate_through_google() {
    let e = env().await;
    let d = e.drainer();
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v1"))
        .await;
    d.drain_once().await.unwrap();
    let live = e.live(CAL1, "s1");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["summary"], "v1");
    assert_eq!(
        live[0]["extendedProperties"]["private"]["calendarSyncWorkspace"],
        "w1"
    );
    assert_eq!(
        live[0]["extendedProperties"]["private"]["calendarSyncEventType"],
        "BLOCKER_DEADLINE"
    );
    let first_id = live[0]["id"].as_str().unwrap().to_owned();

    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v2"))
        .await;
    d.drain_once().await.unwrap();
    assert_eq!(e.live(CAL1, "s1")[0]["summary"], "v2");
    assert_eq!(
        e.g.calls(ApiMethod::Update),
        1,
        "written with update (PUT), not patch"
    );
    assert_eq!(e.g.calls(ApiMethod::Patch), 0);

    // Unchanged content: no call at all.
    let requests = e.g.requests().len();
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v2"))
        .await;
    d.drain_once().await.unwrap();
    assert_eq!(e.g.requests().len(), requests);

    e.t.insert("CANCEL_EVENT", cancel("w1", CAL1, "s1")).await;
    d.drain_once().await.unwrap();
    assert!(e.live(CAL1, "s1").is_empty());
    // A cancel of a source never synced completes without harm.
    e.t.insert("CANCEL_EVENT", cancel("w1", CAL1, "never"))
        .await;
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v3"))
        .await;
    d.drain_once().await.unwrap();
    let live = e.live(CAL1, "s1");
    assert_eq!(live.len(), 1);
    assert_ne!(
        live[0]["id"],
        first_id.as_str(),
        "a deleted id stays taken: a new generation"
    );
    assert_eq!(e.t.count("COMPLETED").await, 6);
}

#[tokio::test]
async fn all_day_and_time_zone_reach_google_in_its_format() {
    let e = env().await;
    let mut p = upsert("w1", CAL1, "s1", "Offsite");
    p["event"] = serde_json::json!({"title": "Offsite", "start": "2025-03-10", "end": "2025-03-11", "isAllDay": true});
    e.t.insert("UPSERT_EVENT", p).await;
    let mut p = upsert("w1", CAL1, "s2", "Standup");
    p["event"]["timeZone"] = "Europe/Zurich".into();
    e.t.insert("UPSERT_EVENT", p).await;
    e.drainer().drain_once().await.unwrap();
    let all_day = &e.live(CAL1, "s1")[0];
    assert_eq!(all_day["start"]["date"], "2025-03-10");
    assert_eq!(
        all_day["end"]["date"], "2025-03-12",
        "Google's end date is exclusive"
    );
    assert_eq!(e.live(CAL1, "s2")[0]["start"]["timeZone"], "Europe/Zurich");
}

#[tokio::test]
async fn committed_but_lost_insert_reply_leaves_one_event() {
    let e = env().await;
    e.g.inject(
        Fault::new(FaultKind::CommittedReplyLost)
            .method("POST")
            .path("/events")
            .times(1),
    );
    let d = e.drainer();
    let id =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v1"))
            .await;
    d.drain_once().await.unwrap();
    assert_eq!(e.t.row(id).await.status, "PENDING");
    e.t.make_all_due().await;
    d.drain_once().await.unwrap();
    assert_eq!(e.t.row(id).await.status, "COMPLETED");
    assert_eq!(e.g.events(CAL1).len(), 1, "one event, not two");
    assert_eq!(
        e.g.calls(ApiMethod::Insert),
        2,
        "the retry met 409 on its own id"
    );
}

#[tokio::test]
async fn expired_access_token_is_refreshed_once_and_the_call_retried() {
    let e = env().await;
    let d = e.drainer();
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v1"))
        .await;
    d.drain_once().await.unwrap();
    assert_eq!(e.g.token_refresh_count("rt-w1"), 1);
    e.g.expire_access_tokens();
    let id =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v2"))
            .await;
    d.drain_once().await.unwrap();
    let row = e.t.row(id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("COMPLETED", 1));
    assert_eq!(e.g.token_refresh_count("rt-w1"), 2);
    assert_eq!(e.live(CAL1, "s1")[0]["summary"], "v2");
}

#[tokio::test]
async fn concurrent_items_of_one_connection_share_one_refresh() {
    let e = env().await;
    for i in 0..12 {
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, &format!("s{i}"), "v"))
            .await;
    }
    e.g.set_latency(Duration::from_millis(50));
    let config = DrainerConfig {
        concurrency: 12,
        batch_size: 12,
        ..fast_config()
    };
    e.drainer_with(e.google_config(), config)
        .drain_once()
        .await
        .unwrap();
    assert_eq!(e.t.count("COMPLETED").await, 12);
    assert_eq!(e.g.token_refresh_count("rt-w1"), 1);
}

#[tokio::test]
async fn tokens_expiring_mid_run_are_refreshed() {
    let e = env().await;
    e.g.set_access_token_lifetime(Duration::from_secs(1));
    let handle = e.drainer().start();
    for i in 0..4 {
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, &format!("s{i}"), "v"))
            .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        e.g.expire_access_tokens();
    }
    e.t.wait_for(Duration::from_secs(15), "all completed", || async {
        e.t.count("COMPLETED").await == 4
    })
    .await;
    handle.stop().await;
    assert_eq!(e.t.count("DEAD_LETTER").await, 0);
    assert!(e.g.token_refresh_count("rt-w1") >= 2);
}

#[tokio::test]
async fn rotated_refresh_token_is_stored_encrypted() {
    let e = env().await;
    e.g.rotate_on_next_refresh("rt-w1");
    let d = e.drainer();
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v1"))
        .await;
    d.drain_once().await.unwrap();
    let rotated = e.g.rotated_refresh_token("rt-w1").expect("rotated");
    let stored = e.t.stored_token("w1").await;
    assert!(!stored.contains(&rotated));
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&e.cipher.decrypt("w1", &stored).unwrap()),
        rotated
    );
    // The old token is dead at the fake; the next refresh must use the new one.
    e.g.expire_access_tokens();
    let id =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v2"))
            .await;
    e.drainer().drain_once().await.unwrap();
    assert_eq!(e.t.row(id).await.status, "COMPLETED");
}

#[tokio::test]
async fn revoked_grant_invalidates_the_connection_and_spares_other_workspaces() {
    let e = env().await;
    e.g.revoke_refresh_token("rt-w1");
    for i in 0..5 {
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, &format!("s{i}"), "v"))
            .await;
    }
    let other =
        e.t.insert("UPSERT_EVENT", upsert("w2", "w2@example.com", "s1", "v"))
            .await;
    e.drainer().drain_once().await.unwrap();
    assert_eq!(e.t.count("DEAD_LETTER").await, 5);
    assert_eq!(e.t.row(other).await.status, "COMPLETED");
    assert!(
        e.g.token_refresh_count("rt-w1") == 1,
        "the token endpoint is not hammered"
    );
    let connections = calendar_sync::ops::list_connections(&e.t.db).await.unwrap();
    let w1 = connections.iter().find(|c| c.workspace_id == "w1").unwrap();
    assert!(!w1.is_valid);
    assert!(
        w1.invalid_reason
            .as_deref()
            .unwrap()
            .contains("invalid_grant")
    );

    // New items of the workspace dead-letter without calling Google...
    let requests = e.g.requests().len();
    let late =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "late", "v"))
            .await;
    e.drainer().drain_once().await.unwrap();
    assert_eq!(e.t.row(late).await.status, "DEAD_LETTER");
    assert_eq!(e.g.requests().len(), requests);

    // ...until the connection is re-authorised; requeue brings them back.
    e.g.add_refresh_token("rt-w1-new", CLIENT_ID, "w1@example.com");
    calendar_sync::ops::put_connection(
        &e.t.db,
        &e.cipher,
        "w1",
        "w1@example.com",
        &SecretString::from("rt-w1-new"),
    )
    .await
    .unwrap();
    calendar_sync::ops::requeue(&e.t.db, None, Some("w1"))
        .await
        .unwrap();
    e.drainer().drain_once().await.unwrap();
    assert_eq!(e.t.count("COMPLETED").await, 7);
}

#[tokio::test]
async fn wrong_client_secret_invalidates_the_connection() {
    let e = env().await;
    let mut config = e.google_config();
    config.oauth.client_secret = SecretString::from("wrong");
    let id =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
            .await;
    e.drainer_with(config, fast_config())
        .drain_once()
        .await
        .unwrap();
    let row = e.t.row(id).await;
    assert_eq!(row.status, "DEAD_LETTER");
    assert!(
        row.last_error
            .unwrap()
            .starts_with("[oauth_invalid_client]")
    );
}

#[tokio::test]
async fn missing_scope_invalidates_the_connection() {
    let (e, _, row) = upsert_into(FaultKind::InsufficientPermissions).await;
    assert_eq!(row.status, "DEAD_LETTER");
    assert!(
        row.last_error
            .unwrap()
            .starts_with("[google_403_insufficientPermissions]")
    );
    assert!(!calendar_sync::ops::list_connections(&e.t.db).await.unwrap()[0].is_valid);
}

#[tokio::test]
async fn rate_limits_are_retried_with_growing_delays_and_retry_after_wins() {
    let e = env().await;
    let d = e.drainer();
    let id =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
            .await;
    let mut delays = Vec::new();
    for kind in [
        FaultKind::RateLimitExceeded,
        FaultKind::UserRateLimitExceeded,
        FaultKind::TooManyRequests { retry_after: None },
    ] {
        e.g.inject(Fault::new(kind).path("/events").times(1));
        d.drain_once().await.unwrap();
        let row = e.t.row(id).await;
        assert_eq!(row.status, "PENDING", "{:?}", row.last_error);
        delays.push(row.delay_secs.round());
        e.t.make_all_due().await;
    }
    assert_eq!(delays, [1.0, 2.0, 4.0]);
    e.g.inject(
        Fault::new(FaultKind::TooManyRequests {
            retry_after: Some(30),
        })
        .path("/events")
        .times(1),
    );
    d.drain_once().await.unwrap();
    let row = e.t.row(id).await;
    assert_eq!(row.delay_secs.round(), 30.0);
    assert!(
        row.last_error
            .unwrap()
            .starts_with("[google_429_rateLimitExceeded]")
    );
    e.t.make_all_due().await;
    d.drain_once().await.unwrap();
    assert_eq!(e.t.row(id).await.status, "COMPLETED");
}

/// A 500 then a 503 from `path`: each is retried, its `last_error` starting
/// with its `codes`, and the item then completes.
async fn server_errors_then_success(path: &str, codes: [&str; 2]) -> GoogleEnv {
    let e = env().await;
    e.g.inject(Fault::new(FaultKind::BackendError).path(path).times(1));
    e.g.inject(
        Fault::new(FaultKind::ServiceUnavailable)
            .path(path)
            .times(1),
    );
    let d = e.drainer();
    let id =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
            .await;
    for expected in codes {
        d.drain_once().await.unwrap();
        let row = e.t.row(id).await;
        assert_eq!(row.status, "PENDING");
        assert!(
            row.last_error.as_deref().unwrap().starts_with(expected),
            "{:?}",
            row.last_error
        );
        e.t.make_all_due().await;
    }
    d.drain_once().await.unwrap();
    assert_eq!(e.t.row(id).await.status, "COMPLETED");
    e
}

#[tokio::test]
async fn server_errors_are_retried() {
    server_errors_then_success("/events", ["[google_500_backendError]", "[google_503_"]).await;
}

#[tokio::test]
async fn usage_limits_pause_the_connection_without_burning_attempts() {
    let e = env().await;
    e.g.inject(
        Fault::new(FaultKind::QuotaExceeded)
            .path("/events")
            .times(1),
    );
    let first =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
            .await;
    let second =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s2", "v"))
            .await;
    let other =
        e.t.insert("UPSERT_EVENT", upsert("w2", "w2@example.com", "s1", "v"))
            .await;
    let config = one_at_a_time();
    // The pause is the adapter's setting alone; the engine waits it out.
    let mut google = e.google_config();
    google.usage_limit_pause = Duration::from_secs(1800);
    e.drainer_with(google, config).drain_once().await.unwrap();
    for id in [first, second] {
        let row = e.t.row(id).await;
        assert_eq!((row.status.as_str(), row.attempts), ("PENDING", 0));
        assert!((row.delay_secs - 1800.0).abs() < 5.0, "{}", row.delay_secs);
    }
    assert_eq!(
        e.g.calls(ApiMethod::Insert),
        2,
        "the second w1 item made no call; w2 went on"
    );
    assert_eq!(e.t.row(other).await.status, "COMPLETED");
    let paused: bool =
        e.t.client()
            .await
            .query_one(
                "SELECT paused_until > now() FROM google_connections WHERE workspace_id = 'w1'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert!(paused);
}

#[tokio::test]
async fn a_missing_calendar_dead_letters_after_one_attempt() {
    let e = env().await;
    let id =
        e.t.insert(
            "UPSERT_EVENT",
            upsert("w1", "nobody@example.com", "s1", "v"),
        )
        .await;
    e.drainer().drain_once().await.unwrap();
    let row = e.t.row(id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("DEAD_LETTER", 1));
    // calendars.get answered 404 before anything was written.
    assert!(row.last_error.unwrap().starts_with("[calendar_not_found]"));
}

#[tokio::test]
async fn other_permissions_errors_dead_letter_without_retry() {
    let (e, _, row) = upsert_into(FaultKind::RequiredAccessLevel).await;
    assert_eq!((row.status.as_str(), row.attempts), ("DEAD_LETTER", 1));
    assert!(
        row.last_error
            .unwrap()
            .starts_with("[google_403_requiredAccessLevel]")
    );
    assert!(calendar_sync::ops::list_connections(&e.t.db).await.unwrap()[0].is_valid);
}

#[tokio::test]
async fn a_hanging_google_times_out_and_is_retried() {
    let (e, id, row) = upsert_into(FaultKind::Hang).await;
    assert_eq!(row.status, "PENDING");
    assert!(row.last_error.unwrap().starts_with("[google_timeout]"));
    e.t.make_all_due().await;
    e.drainer().drain_once().await.unwrap();
    assert_eq!(e.t.row(id).await.status, "COMPLETED");
}

#[tokio::test]
async fn both_error_shapes_classify_alike() {
    let e = env().await;
    e.g.set_error_shape(fake_google::ErrorShape::WithStatus);
    e.g.inject(
        Fault::new(FaultKind::RateLimitExceeded)
            .path("/events")
            .times(1),
    );
    e.g.inject(Fault::new(FaultKind::Forbidden).path("/events").times(1));
    let a =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
            .await;
    let b =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s2", "v"))
            .await;
    let config = one_at_a_time();
    e.drainer_with(e.google_config(), config)
        .drain_once()
        .await
        .unwrap();
    assert_eq!(e.t.row(a).await.status, "PENDING");
    assert_eq!(e.t.row(b).await.status, "DEAD_LETTER");
}

#[tokio::test]
async fn a_circuit_breaker_pauses_a_failing_connection_while_others_proceed() {
    let e = env().await;
    e.g.inject(
        Fault::new(FaultKind::BackendError)
            .path("/calendars/w1@example.com/")
            .times(3),
    );
    let mut google = e.google_config();
    google.breaker_threshold = 3;
    let config = one_at_a_time();
    let d = e.drainer_with(google, config);
    for i in 0..4 {
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, &format!("s{i}"), "v"))
            .await;
    }
    let other =
        e.t.insert("UPSERT_EVENT", upsert("w2", "w2@example.com", "s1", "v"))
            .await;
    d.drain_once().await.unwrap();
    assert_eq!(e.t.row(other).await.status, "COMPLETED");
    assert_eq!(d.calendar().open_breakers(), ["w1"]);
    let open: i64 =
        e.t.client()
            .await
            .query_one(
                "SELECT count(*) FROM sync_outbox WHERE last_error LIKE '[circuit_open]%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(open, 1, "the fourth w1 item was held back without a call");
    let held: i32 =
        e.t.client()
            .await
            .query_one(
                "SELECT attempts FROM sync_outbox WHERE last_error LIKE '[circuit_open]%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(held, 0, "waiting behind an open breaker uses no attempt");
    assert_eq!(e.g.calls(ApiMethod::Insert), 4);
}

/// Every behaviour of the fake for a write to a cancelled event (Google's is
/// undocumented): an upsert of a source deleted by hand ends with one live event.
#[tokio::test]
async fn upsert_after_a_hand_deletion_ends_live_under_every_cancelled_write_policy() {
    for policy in [
        CancelledWritePolicy::Restore,
        CancelledWritePolicy::FollowBody,
        CancelledWritePolicy::KeepCancelled,
        CancelledWritePolicy::Forbidden,
        CancelledWritePolicy::NotFound,
    ] {
        let e = env().await;
        e.g.set_cancelled_write_policy(policy);
        let d = e.drainer();
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v1"))
            .await;
        d.drain_once().await.unwrap();
        let id = e.live(CAL1, "s1")[0]["id"].as_str().unwrap().to_owned();
        assert!(e.g.human_delete(CAL1, &id));
        let item =
            e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v2"))
                .await;
        d.drain_once().await.unwrap();
        assert_eq!(e.t.row(item).await.status, "COMPLETED", "{policy:?}");
        let live = e.live(CAL1, "s1");
        assert_eq!(live.len(), 1, "{policy:?}");
        assert_eq!(live[0]["summary"], "v2", "{policy:?}");
    }
}

#[tokio::test]
async fn rebuild_through_google_repairs_drift_with_erratic_paging() {
    for matching in [ExtPropMatch::All, ExtPropMatch::Any] {
        rebuild_repairs_drift(matching).await;
    }
}

async fn rebuild_repairs_drift(matching: ExtPropMatch) {
    let e = env().await;
    e.g.set_paging(PagingMode::Erratic);
    e.g.set_ext_prop_match(matching);
    let d = e.drainer();
    for s in ["a", "b", "c", "d"] {
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, s, &format!("title-{s}")))
            .await;
    }
    d.drain_once().await.unwrap();
    let id = |s: &str| e.live(CAL1, s)[0]["id"].as_str().unwrap().to_owned();
    let (a, b) = (id("a"), id("b"));
    e.g.human_delete(CAL1, &a);
    e.g.human_edit(CAL1, &b, |ev| {
        ev.insert("summary".into(), "edited by hand".into());
    });
    let mut orphan = e.live(CAL1, "c")[0].clone();
    orphan["id"] = "ghost00001".into();
    orphan["extendedProperties"]["private"]["calendarSyncSourceId"] = "ghost".into();
    e.g.create_event(CAL1, orphan);
    let rb = e.t.insert("REBUILD_ALL", rebuild("w1", CAL1)).await;
    d.drain_once().await.unwrap();
    let row = e.t.row(rb).await;
    assert_eq!(row.status, "COMPLETED", "{:?}", row.last_error);
    assert_eq!(
        row.result.unwrap(),
        serde_json::json!({"created": 1, "updated": 1, "deleted": 1, "unchanged": 2, "invalid": 0, "source": "bindings"})
    );
    let mut titles: Vec<String> =
        e.g.live_events(CAL1)
            .iter()
            .map(|ev| ev["summary"].as_str().unwrap().to_owned())
            .collect();
    titles.sort();
    assert_eq!(titles, ["title-a", "title-b", "title-c", "title-d"]);
}

#[tokio::test]
async fn key_rotation_keeps_old_rows_readable_and_reseals_them() {
    let e = env().await;
    let rotated = TokenCipher::from_keys([9; 32], vec![[7; 32]]);
    let calendar = GoogleCalendar::new(&e.t.db, rotated.clone(), e.google_config()).unwrap();
    let d = OutboxDrainer::new(e.t.db.clone(), calendar, fast_config()).unwrap();
    let id =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
            .await;
    d.drain_once().await.unwrap();
    assert_eq!(e.t.row(id).await.status, "COMPLETED");
    let stored = e.t.stored_token("w1").await;
    assert!(
        stored.starts_with(&format!("v1:{}:", rotated.current_key_id())),
        "re-sealed with the new key"
    );
}

#[tokio::test]
async fn a_token_under_an_unconfigured_key_waits_and_resumes_once_the_key_is_back() {
    let e = env().await;
    // A new TOKEN_ENCRYPTION_KEY deployed without the old one in TOKEN_ENCRYPTION_OLD_KEYS.
    let forgot = TokenCipher::from_keys([1; 32], vec![]);
    let unknown = calendar_sync::ops::unknown_key_ids(&e.t.db, &forgot)
        .await
        .unwrap();
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0].key_id, e.cipher.current_key_id());
    assert_eq!(unknown[0].connections, 2);
    let calendar = GoogleCalendar::new(&e.t.db, forgot, e.google_config()).unwrap();
    let d = OutboxDrainer::new(e.t.db.clone(), calendar, fast_config()).unwrap();
    let id =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
            .await;
    d.drain_once().await.unwrap();
    let row = e.t.row(id).await;
    assert_eq!(
        (row.status.as_str(), row.attempts),
        ("PENDING", 0),
        "{row:?}"
    );
    let error = row.last_error.unwrap();
    assert!(error.starts_with("[token_key_unknown]"), "{error}");
    assert!(error.contains(e.cipher.current_key_id()), "{error}");
    assert!(
        calendar_sync::ops::list_connections(&e.t.db)
            .await
            .unwrap()
            .iter()
            .all(|c| c.is_valid),
        "nothing marked invalid"
    );
    assert_eq!(e.t.count("DEAD_LETTER").await, 0);
    assert_eq!(e.g.token_request_count(), 0, "Google was not called");
    // The operator adds the old key; the worker restarts; nobody re-consents.
    let fixed = TokenCipher::from_keys([1; 32], vec![[7; 32]]);
    assert!(
        calendar_sync::ops::unknown_key_ids(&e.t.db, &fixed)
            .await
            .unwrap()
            .is_empty()
    );
    let calendar = GoogleCalendar::new(&e.t.db, fixed, e.google_config()).unwrap();
    let d = OutboxDrainer::new(e.t.db.clone(), calendar, fast_config()).unwrap();
    e.t.make_all_due().await;
    d.drain_once().await.unwrap();
    assert_eq!(e.t.row(id).await.status, "COMPLETED");
}

#[tokio::test]
async fn a_tampered_token_under_a_known_key_invalidates_only_its_connection() {
    let e = env().await;
    let client = e.t.client().await;
    let stored = e.t.stored_token("w1").await;
    let (head, payload) = stored.rsplit_once(':').unwrap();
    let flipped = if payload.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{head}:{flipped}{}", &payload[1..]);
    client
        .execute(
            "UPDATE google_connections SET refresh_token_encrypted = $1 WHERE workspace_id = 'w1'",
            &[&tampered],
        )
        .await
        .unwrap();
    let d = e.drainer();
    let id =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
            .await;
    let other =
        e.t.insert("UPSERT_EVENT", upsert("w2", "w2@example.com", "s1", "v"))
            .await;
    d.drain_once().await.unwrap();
    let row = e.t.row(id).await;
    assert_eq!(row.status, "DEAD_LETTER");
    let error = row.last_error.unwrap();
    assert!(
        error.starts_with("[token_undecryptable] the stored refresh token cannot be used"),
        "{error}"
    );
    assert!(error.contains("failed authentication"), "{error}");
    assert_eq!(e.t.row(other).await.status, "COMPLETED");
    let connections = calendar_sync::ops::list_connections(&e.t.db).await.unwrap();
    assert_eq!(
        connections
            .iter()
            .map(|c| (c.workspace_id.as_str(), c.is_valid))
            .collect::<Vec<_>>(),
        [("w1", false), ("w2", true)]
    );
}

#[tokio::test]
async fn any_2xx_answer_to_delete_is_success() {
    for status in [200, 204] {
        let e = env().await;
        e.g.set_delete_status(status);
        let d = e.drainer();
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
            .await;
        d.drain_once().await.unwrap();
        e.t.insert("CANCEL_EVENT", cancel("w1", CAL1, "s1")).await;
        d.drain_once().await.unwrap();
        assert_eq!(e.t.count("COMPLETED").await, 2, "delete answered {status}");
        assert_eq!(e.g.calls(ApiMethod::Delete), 1);
        assert!(e.live(CAL1, "s1").is_empty());
    }
}

#[tokio::test]
async fn token_endpoint_failures_are_retried() {
    let e = server_errors_then_success("/token", ["[oauth_500]", "[oauth_503]"]).await;
    assert!(calendar_sync::ops::list_connections(&e.t.db).await.unwrap()[0].is_valid);
}

/// `CalendarError::status` is the HTTP status of the answer (the token
/// endpoint's for `oauth_*` codes), `None` when none came; the adapter tells
/// a second 401 by it.
#[tokio::test]
async fn calendar_errors_carry_the_http_status_of_the_answer() {
    let e = env().await;
    let calendar = GoogleCalendar::new(&e.t.db, e.cipher.clone(), e.google_config()).unwrap();
    let key = |ws: &str| CalendarKey {
        workspace_id: ws.into(),
        calendar_id: format!("{ws}@example.com"),
    };
    let err = calendar
        .get_event(&key("w1"), "nosuchevent")
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.status),
        (CalendarErrorKind::NotFound, Some(404)),
        "{err}"
    );

    e.g.inject(Fault::new(FaultKind::Hang).path("/events").times(1));
    let err = calendar
        .get_event(&key("w1"), "nosuchevent")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code.as_str(), err.status),
        ("google_timeout", None),
        "{err}"
    );

    // A 401 refreshes the token and retries once; a second one is final.
    let unauthorized = FaultKind::Raw {
        status: 401,
        content_type: "application/json".into(),
        body: r#"{"error":{"code":401,"message":"Invalid Credentials","errors":[{"reason":"authError"}]}}"#.into(),
    };
    e.g.inject(Fault::new(unauthorized).path("/events").times(2));
    let refreshes = e.g.token_refresh_count("rt-w1");
    let err = calendar
        .get_event(&key("w1"), "nosuchevent")
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.code.as_str(), err.status),
        (
            CalendarErrorKind::ConnectionInvalid,
            "google_401_authError",
            Some(401)
        ),
        "{err}"
    );
    assert_eq!(e.g.token_refresh_count("rt-w1"), refreshes + 1);

    e.g.inject(
        Fault::new(FaultKind::ServiceUnavailable)
            .path("/token")
            .times(1),
    );
    let err = calendar
        .get_event(&key("w2"), "nosuchevent")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code.as_str(), err.status),
        ("oauth_503", Some(503)),
        "{err}"
    );
}
