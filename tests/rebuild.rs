//! REBUILD_ALL as a resumable reconciliation, with each desired-state source.

use std::sync::Arc;
use std::time::Duration;

use calendar_sync::{
    CalendarKey, DesiredEvent, DrainerConfig, EventDetails, EventSource, EventTiming,
    OutboxDrainer, SourceCursor, SourceFuture,
};
use calendar_sync_tests::{MemoryCalendar, TestDb, fast_config, rebuild, upsert};
use serde_json::{Value, json};

const CAL: &str = "c1";

/// The application's state, served in pages like a real `EventSource`.
struct VecSource(Vec<DesiredEvent>);

impl EventSource for VecSource {
    fn desired_events<'a>(
        &'a self,
        calendar: &'a CalendarKey,
        after: Option<&'a SourceCursor>,
        limit: usize,
    ) -> SourceFuture<'a> {
        Box::pin(async move {
            let mut events: Vec<DesiredEvent> = self
                .0
                .iter()
                .filter(|_| calendar.workspace_id == "w1" && calendar.calendar_id == CAL)
                .filter(|e| {
                    let key = SourceCursor {
                        source_type: e.source_type.clone(),
                        source_id: e.source_id.clone(),
                    };
                    after.is_none_or(|a| key > *a)
                })
                .cloned()
                .collect();
            events.sort_by(|a, b| {
                (&a.source_type, &a.source_id).cmp(&(&b.source_type, &b.source_id))
            });
            events.truncate(limit);
            Ok(events)
        })
    }
}

fn desired(id: &str, title: &str) -> DesiredEvent {
    DesiredEvent {
        source_type: "task".into(),
        source_id: id.into(),
        event_type: "BLOCKER_DEADLINE".into(),
        event: EventDetails {
            title: title.into(),
            description: Some("P1 blocking task".into()),
            timing: EventTiming::Timed {
                start: "2025-01-15T14:00:00Z".parse().unwrap(),
                end: "2025-01-15T15:00:00Z".parse().unwrap(),
            },
            time_zone: None,
            options: Default::default(),
        },
    }
}

/// The application's table and the view the standalone worker reads.
async fn create_view(t: &TestDb, ids: &[&str]) {
    let client = t.client().await;
    client
        .batch_execute(
            r#"
            CREATE TABLE app_tasks (id text PRIMARY KEY, title text NOT NULL, due timestamptz NOT NULL);
            CREATE VIEW calendar_sync_desired_events AS
                SELECT 'w1'::text AS workspace_id, 'c1'::text AS calendar_id,
                       'task'::text AS source_type, id AS source_id, 'BLOCKER_DEADLINE'::text AS event_type,
                       title, 'P1 blocking task'::text AS description,
                       due AS start_at, due + interval '1 hour' AS end_at,
                       false AS is_all_day, NULL::text AS time_zone
                  FROM app_tasks;
            "#,
        )
        .await
        .unwrap();
    for id in ids {
        client
            .execute(
                "INSERT INTO app_tasks VALUES ($1, $2, '2025-01-15T14:00:00Z')",
                &[id, &format!("title-{id}")],
            )
            .await
            .unwrap();
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    Trait,
    View,
    Bindings,
}

fn drainer(
    t: &TestDb,
    cal: &MemoryCalendar,
    source: Source,
    ids: &[&str],
    config: DrainerConfig,
) -> OutboxDrainer<MemoryCalendar> {
    match source {
        Source::Trait => {
            let events = ids
                .iter()
                .map(|id| desired(id, &format!("title-{id}")))
                .collect();
            OutboxDrainer::with_event_source(
                t.db.clone(),
                cal.clone(),
                config,
                Arc::new(VecSource(events)),
            )
            .unwrap()
        }
        Source::View | Source::Bindings => {
            OutboxDrainer::new(t.db.clone(), cal.clone(), config).unwrap()
        }
    }
}

fn counts(result: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| result[k].as_u64().unwrap();
    (n("created"), n("updated"), n("deleted"), n("unchanged"))
}

/// Drift by hand: a deletes, b edited, an orphan of ours, and d's binding row lost.
async fn drift_repair(source: Source) {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    let ids = ["a", "b", "c", "d"];
    if source == Source::View {
        create_view(&t, &ids).await;
    }
    let d = drainer(&t, &cal, source, &ids, fast_config());
    for id in ids {
        t.insert(
            "UPSERT_EVENT",
            upsert("w1", CAL, id, &format!("title-{id}")),
        )
        .await;
    }
    d.drain_once().await.unwrap();
    assert_eq!(cal.live_events(CAL).len(), 4);
    let event = |s: &str| cal.live_for_source(CAL, s)[0].clone();
    cal.delete_by_hand(CAL, &event("a").0);
    cal.edit_by_hand(CAL, &event("b").0, "edited by hand");
    let mut ghost = event("c").1;
    ghost
        .private_properties
        .insert(calendar_sync::PROP_SOURCE_ID.into(), "ghost".into());
    cal.create_by_hand(CAL, "ghost00000", ghost);
    t.client()
        .await
        .execute(
            "DELETE FROM calendar_event_bindings WHERE source_id = 'd'",
            &[],
        )
        .await
        .unwrap();

    let rb = t.insert("REBUILD_ALL", rebuild("w1", CAL)).await;
    d.drain_once().await.unwrap();
    let row = t.row(rb).await;
    assert_eq!(row.status, "COMPLETED", "{source:?}: {:?}", row.last_error);
    let result = row.result.unwrap();
    let mut titles: Vec<String> = cal
        .live_events(CAL)
        .into_iter()
        .map(|(_, b)| b.summary)
        .collect();
    titles.sort();
    match source {
        // The application still wants d: its event is adopted, not duplicated.
        Source::Trait | Source::View => {
            assert_eq!(
                titles,
                ["title-a", "title-b", "title-c", "title-d"],
                "{source:?}"
            );
            assert_eq!(counts(&result), (1, 1, 1, 2), "{source:?}: {result}");
            assert_eq!(cal.live_for_source(CAL, "d").len(), 1);
        }
        // Only the bindings know what is desired: d's event is now an orphan.
        Source::Bindings => {
            assert_eq!(titles, ["title-a", "title-b", "title-c"], "{source:?}");
            assert_eq!(counts(&result), (1, 1, 2, 1), "{source:?}: {result}");
        }
    }
    let expected_source = match source {
        Source::Trait => "event_source",
        Source::View => "sql_view",
        Source::Bindings => "bindings",
    };
    assert_eq!(result["source"], expected_source);
    assert!(result.get("cursor").is_none());

    // Nothing drifted now: a second rebuild makes no write call.
    let writes = cal.write_calls();
    let again = t.insert("REBUILD_ALL", rebuild("w1", CAL)).await;
    d.drain_once().await.unwrap();
    assert_eq!(
        cal.write_calls(),
        writes,
        "{source:?}: no write call when nothing drifted"
    );
    let (created, updated, deleted, _) = counts(&t.row(again).await.result.unwrap());
    assert_eq!((created, updated, deleted), (0, 0, 0));
}

#[tokio::test]
async fn drift_repair_with_an_event_source() {
    drift_repair(Source::Trait).await;
}

#[tokio::test]
async fn drift_repair_with_the_sql_view() {
    drift_repair(Source::View).await;
}

#[tokio::test]
async fn drift_repair_with_the_bindings() {
    drift_repair(Source::Bindings).await;
}

#[tokio::test]
async fn a_source_no_longer_desired_loses_its_event() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    create_view(&t, &["a", "b"]).await;
    let d = drainer(&t, &cal, Source::View, &[], fast_config());
    t.insert("REBUILD_ALL", rebuild("w1", CAL)).await;
    d.drain_once().await.unwrap();
    assert_eq!(cal.live_events(CAL).len(), 2, "created from the view");
    t.client()
        .await
        .execute("DELETE FROM app_tasks WHERE id = 'a'", &[])
        .await
        .unwrap();
    let rb = t.insert("REBUILD_ALL", rebuild("w1", CAL)).await;
    d.drain_once().await.unwrap();
    assert_eq!(counts(&t.row(rb).await.result.unwrap()), (0, 0, 1, 1));
    assert!(cal.live_for_source(CAL, "a").is_empty());
}

#[tokio::test]
async fn a_killed_thousand_event_rebuild_resumes_without_duplicates() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    cal.set_page_size(250);
    cal.set_latency(Duration::from_millis(2));
    let ids: Vec<String> = (0..1000).map(|i| format!("t{i:04}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let config = DrainerConfig {
        rebuild_chunk: 100,
        ..fast_config()
    };
    let rb = t.insert("REBUILD_ALL", rebuild("w1", CAL)).await;
    let first = drainer(&t, &cal, Source::Trait, &id_refs, config.clone()).start();
    t.wait_for(Duration::from_secs(60), "a few chunks done", || async {
        t.row(rb)
            .await
            .result
            .is_some_and(|r| r["created"].as_u64().unwrap_or(0) >= 300)
    })
    .await;
    // The worker dies mid-rebuild: its connection goes, its in-flight chunk is lost.
    t.kill_lock_connections().await;
    first.stop().await;
    let checkpoint = t.row(rb).await.result.unwrap();
    assert!(
        checkpoint.get("cursor").is_some(),
        "a checkpoint to resume from: {checkpoint}"
    );
    let inserts_before = cal.calls().iter().filter(|c| c.method == "insert").count();
    assert!(inserts_before < 1000);

    let second = drainer(&t, &cal, Source::Trait, &id_refs, config);
    let mut report = second.drain_once().await.unwrap();
    for _ in 0..20 {
        if t.row(rb).await.status == "COMPLETED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = second.drain_once().await.unwrap();
    }
    let row = t.row(rb).await;
    assert_eq!(row.status, "COMPLETED", "{:?} {report:?}", row.last_error);
    let live = cal.live_events(CAL);
    assert_eq!(live.len(), 1000, "every desired event exists");
    let mut sources: Vec<String> = live
        .iter()
        .map(|(_, b)| b.private_properties[calendar_sync::PROP_SOURCE_ID].clone())
        .collect();
    sources.sort();
    sources.dedup();
    assert_eq!(sources.len(), 1000, "no duplicates");
    let inserts = cal.calls().iter().filter(|c| c.method == "insert").count();
    assert!(
        inserts <= 1000 + 100,
        "resumed from the checkpoint, not from zero: {inserts} inserts"
    );
    let (created, updated, deleted, unchanged) = counts(&row.result.unwrap());
    assert_eq!(deleted, 0);
    assert!(created + updated + unchanged >= 1000);
}

#[tokio::test]
async fn a_long_rebuild_lets_other_work_through_between_chunks() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    let ids: Vec<String> = (0..50).map(|i| format!("t{i:03}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let config = DrainerConfig {
        rebuild_chunk: 10,
        ..fast_config()
    };
    let d = drainer(&t, &cal, Source::Trait, &id_refs, config);
    let rb = t.insert("REBUILD_ALL", rebuild("w1", CAL)).await;
    let elsewhere = t
        .insert("UPSERT_EVENT", upsert("w2", "other", "x", "other calendar"))
        .await;
    let report = d.drain_once().await.unwrap();
    // Five full chunks each end in a checkpoint; a sixth, empty one finishes.
    assert_eq!(report.continued, 5, "{report:?}");
    assert_eq!(t.row(rb).await.status, "COMPLETED");
    assert_eq!(t.row(rb).await.attempts, 1, "checkpoints use no attempts");
    assert_eq!(t.row(elsewhere).await.status, "COMPLETED");
    assert_eq!(cal.live_events(CAL).len(), 50);
    let result: Value = t.row(rb).await.result.unwrap();
    assert_eq!(counts(&result), (50, 0, 0, 0));
    assert_eq!(result["source"], json!("event_source"));
}

/// An application's state that cannot be read: its own error, boxed.
struct FailingSource;

impl EventSource for FailingSource {
    fn desired_events<'a>(
        &'a self,
        _calendar: &'a CalendarKey,
        _after: Option<&'a SourceCursor>,
        _limit: usize,
    ) -> SourceFuture<'a> {
        let cause =
            std::io::Error::new(std::io::ErrorKind::TimedOut, "the app's database timed out");
        Box::pin(async move { Err(cause.into()) })
    }
}

/// A failing `EventSource` is retried like a failure of ours, and
/// `last_error` says whose it was and keeps the error's words.
#[tokio::test]
async fn a_failing_event_source_is_retried_with_its_error() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    let d = OutboxDrainer::with_event_source(
        t.db.clone(),
        cal.clone(),
        fast_config(),
        Arc::new(FailingSource),
    )
    .unwrap();
    let rb = t.insert("REBUILD_ALL", rebuild("w1", CAL)).await;
    let report = d.drain_once().await.unwrap();
    assert_eq!(report.retried, 1, "{report:?}");
    let row = t.row(rb).await;
    assert_eq!((row.status.as_str(), row.attempts), ("PENDING", 1));
    assert_eq!(
        row.last_error.as_deref(),
        Some("[event_source] the app's database timed out")
    );
}
