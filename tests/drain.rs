//! The drain engine against a real PostgreSQL and an in-memory calendar.

use std::time::Duration;

use calendar_sync::{CalendarError, CalendarErrorKind, DrainerConfig, OutboxDrainer};
use calendar_sync_tests::{Fault, MemoryCalendar, TestDb, cancel, fast_config, rebuild, upsert};
use serde_json::json;

fn drainer(
    t: &TestDb,
    calendar: &MemoryCalendar,
    config: DrainerConfig,
) -> OutboxDrainer<MemoryCalendar> {
    OutboxDrainer::new(t.db.clone(), calendar.clone(), config).expect("valid config")
}

fn transient() -> Fault {
    Fault::Fail(CalendarError::new(
        CalendarErrorKind::Transient,
        "google_503",
        "backend unavailable",
    ))
}

#[tokio::test]
async fn upsert_update_cancel_and_recreate() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    let d = drainer(&t, &cal, fast_config());

    let first = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v1"))
        .await;
    let report = d.drain_once().await.unwrap();
    assert_eq!((report.claimed, report.completed), (1, 1));
    assert_eq!(t.row(first).await.status, "COMPLETED");
    let live = cal.live_for_source("c1", "s1");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].1.summary, "v1");
    let event_id = live[0].0.clone();

    t.insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v2"))
        .await;
    d.drain_once().await.unwrap();
    let live = cal.live_for_source("c1", "s1");
    assert_eq!(
        (live.len(), live[0].0.as_str(), live[0].1.summary.as_str()),
        (1, event_id.as_str(), "v2")
    );

    // Unchanged content: completed without any call.
    let calls = cal.write_calls();
    let same = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v2"))
        .await;
    let report = d.drain_once().await.unwrap();
    assert_eq!((report.completed, report.unchanged), (1, 1));
    assert_eq!(cal.write_calls(), calls, "unchanged upsert makes no call");
    assert_eq!(t.row(same).await.status, "COMPLETED");

    t.insert("CANCEL_EVENT", cancel("w1", "c1", "s1")).await;
    d.drain_once().await.unwrap();
    assert!(cal.live_for_source("c1", "s1").is_empty());

    // Re-created after cancel: Google keeps the old id taken, so a new one.
    t.insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v3"))
        .await;
    d.drain_once().await.unwrap();
    let live = cal.live_for_source("c1", "s1");
    assert_eq!(live.len(), 1);
    assert_ne!(live[0].0, event_id);
    assert_eq!(t.count("COMPLETED").await, 5);
}

#[tokio::test]
async fn all_day_events_end_on_the_day_after() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    let mut payload = upsert("w1", "c1", "s1", "Offsite");
    payload["event"] = json!({"title": "Offsite", "start": "2025-03-10", "end": "2025-03-12T09:00:00+02:00", "isAllDay": true});
    t.insert("UPSERT_EVENT", payload).await;
    drainer(&t, &cal, fast_config()).drain_once().await.unwrap();
    let body = &cal.live_for_source("c1", "s1")[0].1;
    assert_eq!(
        body.start,
        calendar_sync::EventTime::Date("2025-03-10".parse().unwrap())
    );
    assert_eq!(
        body.end,
        calendar_sync::EventTime::Date("2025-03-13".parse().unwrap())
    );
    assert_eq!(
        body.private_properties[calendar_sync::PROP_EVENT_TYPE],
        "BLOCKER_DEADLINE"
    );
}

#[tokio::test]
async fn lost_insert_reply_leaves_one_event() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    cal.inject(Some("insert"), 1, Fault::LoseReply);
    let d = drainer(&t, &cal, fast_config());
    let id = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v1"))
        .await;
    let report = d.drain_once().await.unwrap();
    assert_eq!(report.retried, 1);
    t.make_all_due().await;
    d.drain_once().await.unwrap();
    assert_eq!(t.row(id).await.status, "COMPLETED");
    assert_eq!(
        cal.live_for_source("c1", "s1").len(),
        1,
        "adopted its own event after 409"
    );
    let methods: Vec<_> = cal.calls().iter().map(|c| c.method).collect();
    assert_eq!(methods, ["insert", "insert", "update"]);
}

#[tokio::test]
async fn malformed_payloads_dead_letter_at_once_naming_the_field() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    // Each case has a source of its own, so none supersedes another.
    let mut n = 0;
    let mut good = || {
        n += 1;
        upsert("w1", "c1", &format!("case{n}"), "ok")
    };
    let with = |mut p: serde_json::Value, path: &[&str], value: serde_json::Value| {
        let mut target = &mut p;
        for key in &path[..path.len() - 1] {
            target = &mut target[*key];
        }
        target[path[path.len() - 1]] = value;
        p
    };
    let without = |mut p: serde_json::Value, path: &[&str]| {
        let mut target = &mut p;
        for key in &path[..path.len() - 1] {
            target = &mut target[*key];
        }
        target.as_object_mut().unwrap().remove(path[path.len() - 1]);
        p
    };
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("DELETE_EVERYTHING", good(), "operation: unknown operation"),
        (
            "UPSERT_EVENT",
            json!([1, 2]),
            "payload: must be a JSON object",
        ),
        (
            "UPSERT_EVENT",
            json!("text"),
            "payload: must be a JSON object",
        ),
        (
            "UPSERT_EVENT",
            without(good(), &["workspaceId"]),
            "payload.workspaceId: is missing",
        ),
        (
            "UPSERT_EVENT",
            with(good(), &["calendarId"], json!("  ")),
            "payload.calendarId: must not be empty",
        ),
        (
            "UPSERT_EVENT",
            with(good(), &["sourceId"], json!(42)),
            "payload.sourceId: must be a string",
        ),
        (
            "UPSERT_EVENT",
            without(good(), &["event"]),
            "payload.event: is missing",
        ),
        (
            "UPSERT_EVENT",
            without(good(), &["event", "title"]),
            "payload.event.title: is missing",
        ),
        (
            "UPSERT_EVENT",
            with(good(), &["event", "start"], json!("tomorrow")),
            "payload.event.start: \"tomorrow\" is not an RFC 3339",
        ),
        (
            "UPSERT_EVENT",
            with(good(), &["event", "end"], json!("2025-01-15T13:00:00Z")),
            "payload.event.end:",
        ),
        (
            "UPSERT_EVENT",
            with(good(), &["event", "timeZone"], json!("Mars/Olympus")),
            "payload.event.timeZone:",
        ),
        (
            "UPSERT_EVENT",
            with(good(), &["event", "isAllDay"], json!("yes")),
            "payload.event.isAllDay: must be a boolean",
        ),
        (
            "UPSERT_EVENT",
            with(good(), &["operation"], json!("CANCEL_EVENT")),
            "payload.operation: \"CANCEL_EVENT\" disagrees",
        ),
        (
            "CANCEL_EVENT",
            without(cancel("w1", "c1", "case-cancel"), &["sourceType"]),
            "payload.sourceType: is missing",
        ),
        (
            "UPSERT_EVENT",
            with(good(), &["sourceId"], json!("x".repeat(2000))),
            "payload.sourceId: is 2000 characters",
        ),
    ];
    let mut ids = Vec::new();
    for (op, payload, _) in &cases {
        ids.push(t.insert(op, payload.clone()).await);
    }
    let valid = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s-valid", "fine"))
        .await;
    let handle = drainer(&t, &cal, fast_config()).start();
    t.wait_for(Duration::from_secs(20), "all rows finished", || async {
        t.count("PENDING").await + t.count("PROCESSING").await == 0
    })
    .await;
    assert!(!handle.is_finished(), "the worker keeps running");
    for ((_, _, expected), id) in cases.iter().zip(&ids) {
        let row = t.row(*id).await;
        assert_eq!(row.status, "DEAD_LETTER", "{expected}");
        assert_eq!(row.attempts, 1, "no retry for {expected}");
        let error = row.last_error.unwrap();
        assert!(error.starts_with("[invalid_payload] "), "{error}");
        assert!(
            error.contains(expected),
            "expected {expected:?} in {error:?}"
        );
        assert!(error.len() < 400, "bounded message: {error}");
    }
    assert_eq!(t.row(valid).await.status, "COMPLETED");
    handle.stop().await;
}

#[tokio::test]
async fn newer_items_supersede_older_waiting_ones() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    let d = drainer(&t, &cal, fast_config());
    // An older item waiting for a retry is superseded too.
    cal.inject(None, 1, transient());
    let waiting = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v1"))
        .await;
    d.drain_once().await.unwrap();
    assert_eq!(t.row(waiting).await.status, "PENDING");

    let v2 = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v2"))
        .await;
    let v3 = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v3"))
        .await;
    let other = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s2", "other"))
        .await;
    let last = t.insert("CANCEL_EVENT", cancel("w1", "c1", "s1")).await;
    let report = d.drain_once().await.unwrap();
    assert_eq!(report.superseded, 3, "{report:?}");
    for id in [waiting, v2, v3] {
        let row = t.row(id).await;
        assert_eq!(
            (row.status.as_str(), row.superseded_by),
            ("SUPERSEDED", Some(last))
        );
    }
    assert_eq!(t.row(other).await.status, "COMPLETED");
    assert_eq!(t.row(last).await.status, "COMPLETED");
    assert!(
        cal.calls()
            .iter()
            .all(|c| c.summary.as_deref() != Some("v2") && c.summary.as_deref() != Some("v3")),
        "superseded items are never sent"
    );
}

#[tokio::test]
async fn a_dead_letter_never_blocks_newer_items_and_requeue_respects_newest_intent() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    let d = drainer(&t, &cal, fast_config());
    cal.inject(
        None,
        1,
        Fault::Fail(CalendarError::new(
            CalendarErrorKind::Permanent,
            "google_400_invalid",
            "bad request",
        )),
    );
    let dead = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v1"))
        .await;
    d.drain_once().await.unwrap();
    let row = t.row(dead).await;
    assert_eq!((row.status.as_str(), row.attempts), ("DEAD_LETTER", 1));
    assert_eq!(
        row.last_error.as_deref(),
        Some("[google_400_invalid] bad request")
    );

    let newer = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v2"))
        .await;
    d.drain_once().await.unwrap();
    assert_eq!(t.row(newer).await.status, "COMPLETED");

    // Requeued, the stale item is superseded by the newer completed one.
    assert_eq!(
        calendar_sync::ops::requeue(&t.db, Some(&[dead]), None)
            .await
            .unwrap(),
        1
    );
    // The requeue itself settles it: the claim no longer looks at completed
    // items of a source.
    let row = t.row(dead).await;
    assert_eq!(row.attempts, 0);
    assert_eq!(
        (row.status.as_str(), row.superseded_by),
        ("SUPERSEDED", Some(newer))
    );
    d.drain_once().await.unwrap();
    let row = t.row(dead).await;
    assert_eq!(
        (row.status.as_str(), row.superseded_by),
        ("SUPERSEDED", Some(newer))
    );
    assert_eq!(cal.live_for_source("c1", "s1")[0].1.summary, "v2");
}

#[tokio::test]
async fn requeue_brings_dead_letters_back_by_id_and_by_workspace() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    let d = drainer(&t, &cal, fast_config());
    cal.inject(
        None,
        3,
        Fault::Fail(CalendarError::new(
            CalendarErrorKind::Permanent,
            "google_403_forbidden",
            "no",
        )),
    );
    let a = t.insert("UPSERT_EVENT", upsert("w1", "c1", "a", "a")).await;
    let b = t.insert("UPSERT_EVENT", upsert("w2", "c1", "b", "b")).await;
    let c = t.insert("UPSERT_EVENT", upsert("w2", "c1", "c", "c")).await;
    d.drain_once().await.unwrap();
    assert_eq!(t.count("DEAD_LETTER").await, 3);
    assert_eq!(
        calendar_sync::ops::requeue(&t.db, None, Some("w2"))
            .await
            .unwrap(),
        2
    );
    d.drain_once().await.unwrap();
    assert_eq!(t.row(b).await.status, "COMPLETED");
    assert_eq!(t.row(c).await.status, "COMPLETED");
    assert_eq!(t.row(a).await.status, "DEAD_LETTER");
    let requeued: i32 = t
        .client()
        .await
        .query_one("SELECT requeue_dead_letter_items(ARRAY[$1::uuid])", &[&a])
        .await
        .unwrap()
        .get(0);
    assert_eq!(requeued, 1);
    d.drain_once().await.unwrap();
    assert_eq!(t.row(a).await.status, "COMPLETED");
}

#[tokio::test]
async fn retries_back_off_exponentially_then_dead_letter() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    cal.inject(None, 100, transient());
    let d = drainer(&t, &cal, fast_config());
    let id = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v1"))
        .await;
    let mut delays = Vec::new();
    for attempt in 1..=4 {
        d.drain_once().await.unwrap();
        let row = t.row(id).await;
        assert_eq!((row.status.as_str(), row.attempts), ("PENDING", attempt));
        assert_eq!(
            row.last_error.as_deref(),
            Some("[google_503] backend unavailable")
        );
        delays.push(row.delay_secs.round());
        // Not due yet: a drain now does nothing.
        assert_eq!(d.drain_once().await.unwrap().claimed, 0);
        t.make_all_due().await;
    }
    assert_eq!(delays, [1.0, 2.0, 4.0, 8.0]);
    d.drain_once().await.unwrap();
    let row = t.row(id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("DEAD_LETTER", 5));
    assert!(row.last_error.unwrap().contains("gave up after 5 attempts"));
}

#[tokio::test]
async fn retry_after_from_the_service_wins() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    cal.inject(
        None,
        1,
        Fault::Fail(
            CalendarError::new(
                CalendarErrorKind::RateLimited,
                "google_429_rateLimitExceeded",
                "slow down",
            )
            .with_retry_after(Some(Duration::from_secs(120))),
        ),
    );
    let id = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v1"))
        .await;
    drainer(&t, &cal, fast_config()).drain_once().await.unwrap();
    let row = t.row(id).await;
    assert_eq!(row.status, "PENDING");
    assert_eq!(row.delay_secs.round(), 120.0);
}

#[tokio::test]
async fn usage_limits_pause_without_burning_attempts() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    cal.inject(
        None,
        1,
        Fault::Fail(CalendarError::new(
            CalendarErrorKind::UsageLimited,
            "google_403_quotaExceeded",
            "Calendar usage limits exceeded.",
        )),
    );
    let id = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v1"))
        .await;
    // A calendar that does not say how long waits the longest retry delay.
    let config = DrainerConfig {
        backoff_cap: Duration::from_secs(1800),
        ..fast_config()
    };
    let report = drainer(&t, &cal, config).drain_once().await.unwrap();
    assert_eq!(report.deferred, 1);
    let row = t.row(id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("PENDING", 0));
    assert_eq!(row.delay_secs.round(), 1800.0);
}

#[tokio::test]
async fn invalid_connection_dead_letters_the_workspace_only() {
    let t = TestDb::new().await;
    let client = t.client().await;
    client
        .execute(
            "INSERT INTO google_connections (workspace_id, google_email, refresh_token_encrypted)
             VALUES ('w1', 'a@example.com', 'x'), ('w2', 'b@example.com', 'y')",
            &[],
        )
        .await
        .unwrap();
    let cal = MemoryCalendar::new();
    cal.inject(
        None,
        1,
        Fault::Fail(CalendarError::new(
            CalendarErrorKind::ConnectionInvalid,
            "oauth_invalid_grant",
            "Token has been expired or revoked.",
        )),
    );
    let first = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v1"))
        .await;
    let mut others = Vec::new();
    for i in 0..3 {
        others.push(
            t.insert("UPSERT_EVENT", upsert("w1", "c1", &format!("o{i}"), "x"))
                .await,
        );
    }
    let unaffected = t
        .insert("UPSERT_EVENT", upsert("w2", "c1", "s9", "fine"))
        .await;
    let config = DrainerConfig {
        concurrency: 1,
        batch_size: 1,
        ..fast_config()
    };
    drainer(&t, &cal, config).drain_once().await.unwrap();
    let row = t.row(first).await;
    assert_eq!(row.status, "DEAD_LETTER");
    for id in others {
        let row = t.row(id).await;
        assert_eq!(row.status, "DEAD_LETTER");
        assert!(
            row.last_error
                .unwrap()
                .starts_with("[connection_invalid] connection invalid: ")
        );
    }
    assert_eq!(t.row(unaffected).await.status, "COMPLETED");
    let (valid, reason): (bool, Option<String>) = {
        let r = client
            .query_one(
                "SELECT is_valid, invalid_reason FROM google_connections WHERE workspace_id = 'w1'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(!valid);
    assert!(reason.unwrap().contains("invalid_grant"));
    assert_eq!(cal.write_calls(), 2, "the other w1 items made no call");
}

#[tokio::test]
async fn a_panicking_handler_counts_an_attempt_and_the_worker_goes_on() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    cal.inject(None, 1, Fault::Panic);
    let d = drainer(&t, &cal, fast_config());
    let id = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v1"))
        .await;
    let report = d.drain_once().await.unwrap();
    assert_eq!(report.retried, 1);
    let row = t.row(id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("PENDING", 1));
    assert!(
        row.last_error
            .unwrap()
            .starts_with("[handler_panicked] injected panic")
    );
    assert_eq!(t.held_row_locks().await, 0, "unlocked after a panic");
    t.make_all_due().await;
    d.drain_once().await.unwrap();
    assert_eq!(t.row(id).await.status, "COMPLETED");
}

#[tokio::test]
async fn notify_wakes_an_idle_worker() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    let config = DrainerConfig {
        poll_interval: Duration::from_secs(600),
        ..fast_config()
    };
    let handle = drainer(&t, &cal, config).start();
    // Let the worker connect, find nothing, and go idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v1"))
        .await;
    // Polling alone would take ten minutes.
    t.wait_for(Duration::from_secs(10), "the NOTIFY wake-up", || async {
        t.row(id).await.status == "COMPLETED"
    })
    .await;
    handle.stop().await;
}

#[tokio::test]
async fn pg_locks_holds_exactly_the_rows_in_flight() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    cal.inject(None, 1000, Fault::Hang);
    for i in 0..10 {
        t.insert("UPSERT_EVENT", upsert("w1", "c1", &format!("s{i}"), "v"))
            .await;
    }
    let config = DrainerConfig {
        concurrency: 4,
        shutdown_grace: Duration::from_millis(200),
        ..fast_config()
    };
    let handle = drainer(&t, &cal, config).start();
    t.wait_for(Duration::from_secs(10), "4 rows in flight", || async {
        t.count("PROCESSING").await == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.count("PROCESSING").await, 4);
    assert_eq!(
        t.held_row_locks().await,
        4,
        "one lock per row in flight, none leaked"
    );

    // Graceful stop: the hung items are released after the grace period.
    let report = handle.stop().await;
    assert_eq!(report.deferred, 4);
    assert_eq!(t.held_row_locks().await, 0);
    assert_eq!(t.count("PROCESSING").await, 0);
    assert_eq!(t.count("PENDING").await, 10);
    let attempts: i64 = t
        .client()
        .await
        .query_one("SELECT sum(attempts) FROM sync_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 0, "released items keep their attempts");
}

#[tokio::test]
async fn graceful_stop_lets_in_flight_items_finish() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    cal.set_latency(Duration::from_millis(300));
    for i in 0..6 {
        t.insert("UPSERT_EVENT", upsert("w1", "c1", &format!("s{i}"), "v"))
            .await;
    }
    let handle = drainer(&t, &cal, fast_config()).start();
    t.wait_for(Duration::from_secs(10), "items in flight", || async {
        t.count("PROCESSING").await > 0
    })
    .await;
    let report = handle.stop().await;
    assert_eq!(report.completed, report.claimed, "{report:?}");
    assert_eq!(t.count("PROCESSING").await, 0);
    assert_eq!(t.held_row_locks().await, 0);
}

#[tokio::test]
async fn a_killed_lock_connection_leaves_a_row_another_drainer_finishes() {
    let t = TestDb::new().await;
    let slow = MemoryCalendar::new();
    slow.set_latency(Duration::from_secs(3));
    let id = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v1"))
        .await;
    let a = drainer(&t, &slow, fast_config()).start();
    t.wait_for(Duration::from_secs(10), "A to claim", || async {
        t.count("PROCESSING").await == 1
    })
    .await;
    assert_eq!(t.kill_lock_connections().await, 1);

    let fast = MemoryCalendar::new();
    let b = drainer(&t, &fast, fast_config());
    let mut report = b.drain_once().await.unwrap();
    for _ in 0..50 {
        if report.recovered > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        report = b.drain_once().await.unwrap();
    }
    assert_eq!(report.recovered, 1, "{report:?}");
    let row = t.row(id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("COMPLETED", 2));
    // A stopped its work on the item: it never finishes the write it started.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        slow.live_events("c1").is_empty(),
        "A abandoned its in-flight call"
    );
    assert_eq!(t.row(id).await.status, "COMPLETED");
    assert_eq!(fast.live_for_source("c1", "s1").len(), 1);
    a.stop().await;
    assert_eq!(t.held_row_locks().await, 0);
}

#[tokio::test]
async fn an_item_that_keeps_killing_its_worker_reaches_dead_letter() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    cal.inject(None, 1000, Fault::Hang);
    let id = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "poison", "v1"))
        .await;
    let config = DrainerConfig {
        max_attempts: 3,
        ..fast_config()
    };
    for attempt in 1..=3 {
        let handle = drainer(&t, &cal, config.clone()).start();
        t.wait_for(Duration::from_secs(10), "claim", || async {
            let row = t.row(id).await;
            row.status == "PROCESSING" && row.attempts == attempt
        })
        .await;
        // The worker "crashes": its connection dies with its locks.
        t.kill_lock_connections().await;
        handle.stop().await;
        assert_eq!(t.row(id).await.attempts, attempt);
    }
    let report = drainer(&t, &cal, config).drain_once().await.unwrap();
    assert_eq!(report.recovered, 1);
    let row = t.row(id).await;
    assert_eq!(row.status, "DEAD_LETTER");
    assert!(
        row.last_error
            .unwrap()
            .starts_with("[worker_lost] the worker stopped during each of 3 attempts")
    );
}

#[tokio::test]
async fn four_drainers_keep_per_source_order_and_never_share_a_row() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    cal.set_latency(Duration::from_millis(3));
    let sources = 12;
    let versions = 15;
    // Interleave sources; every few versions a cancel, and two rows per transaction.
    let client = t.client().await;
    let mut expected_last = std::collections::HashMap::new();
    for v in 0..versions {
        for s in 0..sources {
            let source = format!("s{s}");
            let cancel_now = (v + s) % 5 == 4;
            let (op, payload) = if cancel_now {
                ("CANCEL_EVENT", cancel("w1", "c1", &source))
            } else {
                (
                    "UPSERT_EVENT",
                    upsert("w1", "c1", &source, &format!("{source}-v{v:02}")),
                )
            };
            client
                .execute(
                    "INSERT INTO sync_outbox (operation, payload) VALUES ($1, $2), ($1, $2)",
                    &[&op, &payload],
                )
                .await
                .unwrap();
            expected_last.insert(source, (!cancel_now).then(|| format!("s{s}-v{v:02}")));
        }
    }
    let config = DrainerConfig {
        concurrency: 4,
        batch_size: 4,
        ..fast_config()
    };
    let handles: Vec<_> = (0..4)
        .map(|_| drainer(&t, &cal, config.clone()).start())
        .collect();
    t.wait_for(Duration::from_secs(60), "the outbox to drain", || async {
        t.count("PENDING").await + t.count("PROCESSING").await == 0
    })
    .await;
    for h in handles {
        h.stop().await;
    }
    assert_eq!(t.count("DEAD_LETTER").await, 0);
    assert_eq!(
        cal.max_parallel_per_event(),
        1,
        "no event was written by two workers at once"
    );
    for (source, last) in &expected_last {
        let live = cal.live_for_source("c1", source);
        match last {
            Some(title) => {
                assert_eq!(live.len(), 1, "{source}: exactly one live event");
                assert_eq!(&live[0].1.summary, title, "{source}: last intent wins");
            }
            None => assert!(live.is_empty(), "{source}: cancelled last"),
        }
        // Versions sent for this source only ever move forward.
        let sent: Vec<String> = cal
            .calls()
            .iter()
            .filter_map(|c| c.summary.clone())
            .filter(|s| s.starts_with(&format!("{source}-v")))
            .collect();
        let mut sorted = sent.clone();
        sorted.sort();
        assert_eq!(sent, sorted, "{source}: applied in enqueue order");
    }
    assert_eq!(t.held_row_locks().await, 0);
}

#[tokio::test]
async fn rebuild_all_runs_alone_after_earlier_items_and_repairs_drift() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    let d = drainer(&t, &cal, fast_config());
    for s in ["a", "b", "c"] {
        t.insert("UPSERT_EVENT", upsert("w1", "c1", s, &format!("title-{s}")))
            .await;
    }
    d.drain_once().await.unwrap();
    let ids: std::collections::HashMap<String, String> = ["a", "b", "c"]
        .iter()
        .map(|s| (s.to_string(), cal.live_for_source("c1", s)[0].0.clone()))
        .collect();
    // Drift by hand: one deleted, one edited, one orphan of ours.
    cal.delete_by_hand("c1", &ids["a"]);
    cal.edit_by_hand("c1", &ids["b"], "edited by hand");
    let mut orphan = cal.live_for_source("c1", "c")[0].1.clone();
    orphan
        .private_properties
        .insert(calendar_sync::PROP_SOURCE_ID.into(), "ghost".into());
    cal.create_by_hand("c1", "ghost00000", orphan);

    // An earlier retrying item of the calendar holds the rebuild back.
    cal.inject(None, 1, transient());
    let before = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "d", "title-d"))
        .await;
    let rb = t.insert("REBUILD_ALL", rebuild("w1", "c1")).await;
    let after = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "e", "title-e"))
        .await;
    d.drain_once().await.unwrap();
    assert_eq!(t.row(before).await.status, "PENDING");
    assert_eq!(
        t.row(rb).await.status,
        "PENDING",
        "waits for what was enqueued before it"
    );
    assert_eq!(
        t.row(after).await.status,
        "PENDING",
        "nothing of the pair runs past the rebuild"
    );

    t.make_all_due().await;
    d.drain_once().await.unwrap();
    for id in [before, rb, after] {
        assert_eq!(t.row(id).await.status, "COMPLETED");
    }
    let result = t.row(rb).await.result.unwrap();
    // a re-created, b restored, the ghost deleted; c and d were right already.
    assert_eq!(
        result,
        json!({"created": 1, "updated": 1, "deleted": 1, "unchanged": 2, "invalid": 0, "source": "bindings"})
    );
    let titles: Vec<String> = cal
        .live_events("c1")
        .into_iter()
        .map(|(_, b)| b.summary)
        .collect();
    let mut titles = titles;
    titles.sort();
    assert_eq!(
        titles,
        ["title-a", "title-b", "title-c", "title-d", "title-e"]
    );

    // Nothing drifted: a second rebuild makes no write call.
    let writes = cal.write_calls();
    let again = t.insert("REBUILD_ALL", rebuild("w1", "c1")).await;
    d.drain_once().await.unwrap();
    assert_eq!(cal.write_calls(), writes);
    assert_eq!(
        t.row(again).await.result.unwrap(),
        json!({"created": 0, "updated": 0, "deleted": 0, "unchanged": 5, "invalid": 0, "source": "bindings"})
    );
}

#[tokio::test]
async fn a_missing_calendar_dead_letters_after_one_attempt() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    cal.remove_calendar("gone@example.com");
    let id = t
        .insert("UPSERT_EVENT", upsert("w1", "gone@example.com", "s1", "v1"))
        .await;
    drainer(&t, &cal, fast_config()).drain_once().await.unwrap();
    let row = t.row(id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("DEAD_LETTER", 1));
    assert!(row.last_error.unwrap().starts_with("[google_404_notFound]"));
}

#[tokio::test]
async fn a_running_drainer_survives_losing_every_connection() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    cal.set_latency(Duration::from_millis(20));
    for i in 0..30 {
        t.insert("UPSERT_EVENT", upsert("w1", "c1", &format!("s{i}"), "v"))
            .await;
    }
    let handle = drainer(&t, &cal, fast_config()).start();
    t.wait_for(Duration::from_secs(10), "progress", || async {
        t.count("COMPLETED").await >= 5
    })
    .await;
    assert!(t.kill_connections().await >= 1);
    for i in 30..40 {
        t.insert("UPSERT_EVENT", upsert("w1", "c1", &format!("s{i}"), "v"))
            .await;
    }
    t.wait_for(
        Duration::from_secs(30),
        "every item completed after reconnecting",
        || async { t.count("COMPLETED").await == 40 },
    )
    .await;
    assert!(!handle.is_finished(), "no crash");
    assert!(handle.since_heartbeat() < Duration::from_secs(5));
    handle.stop().await;
    assert_eq!(
        cal.live_events("c1").len(),
        40,
        "exactly one event per source"
    );
    assert_eq!(t.held_row_locks().await, 0);
}

/// With a settle time, changes to one source committed separately within it
/// reach the calendar as one write; without, an idle worker picks the first
/// one up at once and writes again for the rest.
#[tokio::test]
async fn a_settle_time_collapses_a_burst_of_separate_commits_into_one_call() {
    for settle in [Duration::from_millis(800), Duration::ZERO] {
        let t = TestDb::new().await;
        let cal = MemoryCalendar::new();
        // The safety-net poll must not be what finds the rows: wake-ups only.
        let config = DrainerConfig {
            settle,
            poll_interval: Duration::from_secs(60),
            ..fast_config()
        };
        let handle = drainer(&t, &cal, config).start();
        // Let the drainer reach its idle wait (LISTEN) first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let first = t
            .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v1"))
            .await;
        if settle.is_zero() {
            t.wait_for(Duration::from_secs(10), "first change synced", || async {
                t.row(first).await.status == "COMPLETED"
            })
            .await;
        }
        for title in ["v2", "v3"] {
            t.insert("UPSERT_EVENT", upsert("w1", "c1", "s1", title))
                .await;
        }
        t.wait_for(
            Duration::from_secs(20),
            "the last change synced",
            || async {
                cal.live_for_source("c1", "s1")
                    .first()
                    .is_some_and(|(_, body)| body.summary == "v3")
                    && t.count("PENDING").await + t.count("PROCESSING").await == 0
            },
        )
        .await;
        let writes = cal.write_calls();
        if settle.is_zero() {
            assert!(
                writes > 1,
                "without a settle time the burst is split: {writes}"
            );
        } else {
            assert_eq!(writes, 1, "one write for the burst");
        }
        handle.stop().await;
    }
}

/// Producers notify only while a worker waits (`calendar_sync_waiters`): an idle worker is
/// registered, a saturated one is not, a stopped one has left.
#[tokio::test]
async fn only_a_worker_with_free_slots_and_nothing_to_claim_waits_for_a_wake_up() {
    let t = TestDb::new().await;
    let client = t.client().await;
    let waiters = || async {
        client
            .query_one("SELECT count(*) FROM calendar_sync_waiters", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let cal = MemoryCalendar::new();
    cal.inject(None, 1000, Fault::Hang);
    let config = DrainerConfig {
        concurrency: 2,
        batch_size: 2,
        shutdown_grace: Duration::from_millis(200),
        ..fast_config()
    };
    let handle = drainer(&t, &cal, config).start();
    t.wait_for(
        Duration::from_secs(10),
        "the idle worker to wait",
        || async { waiters().await == 1 },
    )
    .await;
    for i in 0..4 {
        t.insert("UPSERT_EVENT", upsert("w1", "c1", &format!("s{i}"), "v"))
            .await;
    }
    t.wait_for(Duration::from_secs(10), "both slots busy", || async {
        t.count("PROCESSING").await == 2
    })
    .await;
    t.wait_for(
        Duration::from_secs(10),
        "the saturated worker to leave",
        || async { waiters().await == 0 },
    )
    .await;
    handle.stop().await;
    assert_eq!(waiters().await, 0, "a stopped worker waits for nothing");
}
