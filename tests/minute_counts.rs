//! The dashboard's data written by the workers: per-minute counts in
//! `calendar_sync_minute_counts` (item outcomes, Google calls by status,
//! queue depth, two days kept), and each connection's breaker and last token
//! refresh in `google_connections`. Real PostgreSQL, the real Google adapter
//! against the fake Google.

use std::collections::BTreeMap;
use std::time::Duration;

use calendar_sync::{Database, DrainReport, DrainerConfig, GoogleCalendar, OutboxDrainer};
use calendar_sync_tests::{GoogleEnv, TEST_POOL_SIZE, TestDb, fast_config, upsert};
use fake_google::{ApiMethod, Fault, FaultKind};

const CAL1: &str = "w1@example.com";

/// Fast retries, no breaker getting in the way.
fn config() -> DrainerConfig {
    DrainerConfig {
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        ..fast_config()
    }
}

/// The item and call counts in the table, summed over minutes (and over the
/// processes that wrote them): `(metric, label) -> n`; the queue depth aside.
async fn sums(t: &TestDb) -> BTreeMap<(String, String), i64> {
    t.client()
        .await
        .query(
            "SELECT metric, label, sum(n)::bigint FROM calendar_sync_minute_counts
              WHERE metric <> 'queue_depth' GROUP BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect()
}

/// `metric`'s sum with label ''.
fn items(sums: &BTreeMap<(String, String), i64>, metric: &str) -> i64 {
    sums.get(&(metric.to_owned(), String::new()))
        .copied()
        .unwrap_or(0)
}

/// The calls to the Calendar API by status, as the table has them.
fn google_calls(sums: &BTreeMap<(String, String), i64>) -> BTreeMap<String, i64> {
    sums.iter()
        .filter(|((metric, _), _)| metric == "google_calls")
        .map(|((_, label), n)| (label.clone(), *n))
        .collect()
}

/// The calls to the Calendar API by status, as the fake saw them (token
/// requests aside: they are not calendar calls).
fn seen_by_fake(e: &GoogleEnv) -> BTreeMap<String, i64> {
    let mut seen = BTreeMap::new();
    for r in e.g.requests() {
        if r.api_method == ApiMethod::Token {
            continue;
        }
        let label = r
            .status
            .map_or_else(|| "error".to_owned(), |s| s.to_string());
        *seen.entry(label).or_insert(0) += 1;
    }
    seen
}

fn add(total: &mut DrainReport, report: DrainReport) {
    total.completed += report.completed;
    total.retried += report.retried;
    total.dead_lettered += report.dead_lettered;
    total.superseded += report.superseded;
    total.deferred += report.deferred;
}

#[tokio::test]
async fn item_outcomes_and_google_calls_are_counted_once_each() {
    let e = GoogleEnv::start(&["w1"]).await;
    let mut google = e.google_config();
    google.breaker_threshold = 1000;
    let d = e.drainer_with(google, config());
    for i in 0..6 {
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, &format!("s{i}"), "v"))
            .await;
    }
    // A superseded pair: the claim supersedes the older.
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "pair", "old"))
        .await;
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "pair", "new"))
        .await;
    // A malformed payload: dead-lettered at once.
    let mut bad = upsert("w1", CAL1, "bad", "v");
    bad["event"]["start"] = "tomorrow".into();
    e.t.insert("UPSERT_EVENT", bad).await;
    e.g.inject(Fault::new(FaultKind::BackendError).path("/events").times(2));
    e.g.inject(
        Fault::new(FaultKind::TooManyRequests { retry_after: None })
            .path("/events")
            .times(1),
    );

    let mut total = DrainReport::default();
    for _ in 0..20 {
        add(&mut total, d.drain_once().await.unwrap());
        let counts = e.t.counts().await;
        if !counts.contains_key("PENDING") && !counts.contains_key("PROCESSING") {
            break;
        }
        e.t.make_all_due().await;
    }
    assert_eq!(e.g.pending_faults(), 0, "every fault was met");
    assert_eq!(e.t.count("COMPLETED").await, 7);

    let sums = sums(&e.t).await;
    assert_eq!(items(&sums, "completed"), 7, "{sums:?}");
    assert_eq!(
        items(&sums, "retried"),
        3,
        "two 500s and a 429 (a rate-limited wait counts): {sums:?}"
    );
    assert_eq!(items(&sums, "dead_lettered"), 1, "{sums:?}");
    assert_eq!(items(&sums, "superseded"), 1, "{sums:?}");
    // The same as the drain reports say.
    let report_retried = total.retried + total.deferred;
    assert_eq!(
        (
            total.completed,
            report_retried,
            total.dead_lettered,
            total.superseded
        ),
        (7, 3, 1, 1),
        "{total:?}"
    );
    let calls = google_calls(&sums);
    assert_eq!(calls, seen_by_fake(&e), "google_calls by status");
    assert_eq!(calls.get("500"), Some(&2));
    assert_eq!(calls.get("429"), Some(&1));
    assert_eq!(calls.get("200").copied().unwrap_or(0), 8, "{calls:?}");
}

#[tokio::test]
async fn two_drainers_on_one_database_add_up() {
    let e = GoogleEnv::start(&["w1", "w2"]).await;
    // Two processes: each its own pool, Google client and counts.
    let mut handles = Vec::new();
    for _ in 0..2 {
        let db = Database::from_config(e.t.config.clone(), TEST_POOL_SIZE).unwrap();
        let calendar = GoogleCalendar::new(&db, e.cipher.clone(), e.google_config()).unwrap();
        let config = DrainerConfig {
            concurrency: 4,
            batch_size: 2,
            ..config()
        };
        handles.push(OutboxDrainer::new(db, calendar, config).unwrap().start());
    }
    for i in 0..40 {
        let ws = if i % 2 == 0 { "w1" } else { "w2" };
        let calendar = format!("{ws}@example.com");
        e.t.insert("UPSERT_EVENT", upsert(ws, &calendar, &format!("s{i}"), "v"))
            .await;
    }
    e.t.wait_for(Duration::from_secs(60), "40 completed", || async {
        e.t.count("COMPLETED").await == 40
    })
    .await;
    let mut reports = Vec::new();
    for h in handles {
        reports.push(h.stop().await);
    }
    assert!(
        reports.iter().all(|r| r.completed > 0),
        "both drainers worked: {reports:?}"
    );
    let sums = sums(&e.t).await;
    assert_eq!(items(&sums, "completed"), 40, "{sums:?}");
    assert_eq!(google_calls(&sums), seen_by_fake(&e));
}

#[tokio::test]
async fn an_opening_breaker_is_written_and_cleared_when_it_closes() {
    let e = GoogleEnv::start(&["w1"]).await;
    let mut google = e.google_config();
    google.breaker_threshold = 1;
    google.breaker_cool_down = Duration::from_millis(500);
    let d = e.drainer_with(google, config());
    e.g.inject(Fault::new(FaultKind::BackendError).path("/events").times(1));
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
        .await;
    d.drain_once().await.unwrap();
    let client = e.t.client().await;
    let open: bool = client
        .query_one(
            "SELECT breaker_open_until > now() FROM google_connections WHERE workspace_id = 'w1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(open, "breaker_open_until is in the future");

    tokio::time::sleep(Duration::from_millis(600)).await;
    e.t.drain_until_idle(&d).await;
    assert_eq!(e.t.count("COMPLETED").await, 1);
    let until: Option<chrono::DateTime<chrono::Utc>> = client
        .query_one(
            "SELECT breaker_open_until FROM google_connections WHERE workspace_id = 'w1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(until, None, "a success closed the breaker");
}

#[tokio::test]
async fn minting_an_access_token_sets_token_refreshed_at() {
    let e = GoogleEnv::start(&["w1", "w2"]).await;
    // w2's refresh token is rotated: its refresh is noted with the new token.
    e.g.rotate_on_next_refresh("rt-w2");
    let client = e.t.client().await;
    let refreshed = || async {
        client
            .query(
                "SELECT workspace_id, token_refreshed_at > now() - interval '1 minute'
                   FROM google_connections WHERE token_refreshed_at IS NOT NULL ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
            .collect::<Vec<_>>()
    };
    assert!(refreshed().await.is_empty(), "no refresh yet");
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
        .await;
    e.t.insert("UPSERT_EVENT", upsert("w2", "w2@example.com", "s1", "v"))
        .await;
    e.t.drain_until_idle(&e.drainer()).await;
    assert_eq!(e.t.count("COMPLETED").await, 2);
    assert_eq!(
        refreshed().await,
        [("w1".to_owned(), true), ("w2".to_owned(), true)]
    );
}

#[tokio::test]
async fn a_worker_samples_the_queue_depth() {
    let e = GoogleEnv::start(&["w1"]).await;
    for i in 0..5 {
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, &format!("s{i}"), "v"))
            .await;
    }
    let client = e.t.client().await;
    // Waiting, not due: the depth stays 5 while the worker looks.
    client
        .execute(
            "UPDATE sync_outbox SET next_attempt_at = now() + interval '1 hour'",
            &[],
        )
        .await
        .unwrap();
    e.drainer().drain_once().await.unwrap();
    let rows = client
        .query(
            "SELECT n, minute = date_trunc('minute', minute) AND minute > now() - interval '2 minutes'
               FROM calendar_sync_minute_counts WHERE metric = 'queue_depth' AND label = ''",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one sample this minute");
    assert_eq!(rows[0].get::<_, i64>(0), 5);
    assert!(rows[0].get::<_, bool>(1), "of this minute");
}

#[tokio::test]
async fn rows_older_than_two_days_are_deleted() {
    let e = GoogleEnv::start(&["w1"]).await;
    let client = e.t.client().await;
    client
        .batch_execute(
            "INSERT INTO calendar_sync_minute_counts (minute, metric, label, n) VALUES
                 (date_trunc('minute', now() - interval '49 hours'), 'completed', '', 1),
                 (date_trunc('minute', now() - interval '72 hours'), 'google_calls', '200', 1),
                 (date_trunc('minute', now() - interval '47 hours'), 'completed', '', 2),
                 (date_trunc('minute', now() - interval '1 hour'), 'completed', '', 3)",
        )
        .await
        .unwrap();
    e.drainer().drain_once().await.unwrap();
    let left: Vec<i64> = client
        .query(
            "SELECT n FROM calendar_sync_minute_counts WHERE metric <> 'queue_depth' ORDER BY minute",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, [2, 3], "older than 48 h deleted, newer kept");
}

#[tokio::test]
async fn a_failing_flush_fails_no_item_and_loses_no_count() {
    let e = GoogleEnv::start(&["w1"]).await;
    let d = e.drainer();
    let client = e.t.client().await;
    // The table is away: every flush fails.
    client
        .batch_execute("ALTER TABLE calendar_sync_minute_counts RENAME TO minute_counts_away")
        .await
        .unwrap();
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
        .await;
    let report = d.drain_once().await.unwrap();
    assert_eq!(report.completed, 1, "the item did not fail: {report:?}");
    client
        .batch_execute("ALTER TABLE minute_counts_away RENAME TO calendar_sync_minute_counts")
        .await
        .unwrap();
    // The next flush (this drain's last) writes what the failed ones kept.
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s2", "v"))
        .await;
    d.drain_once().await.unwrap();
    let sums = sums(&e.t).await;
    assert_eq!(items(&sums, "completed"), 2, "{sums:?}");
    assert_eq!(google_calls(&sums), seen_by_fake(&e));
}
