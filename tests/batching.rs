//! Write calls grouped into Google's batch endpoint (`CALENDAR_SYNC_GOOGLE_BATCH_MAX`), through
//! the real adapter against fake-google's `POST /batch/calendar/v3`: every per-part fault, the
//! whole batch failing, a cut answer, the fallback to single calls, the quota per inner call.

use std::collections::BTreeMap;
use std::time::Duration;

use calendar_sync::{DrainerConfig, GoogleCalendar, GoogleConfig, OutboxDrainer};
use calendar_sync_tests::{GoogleEnv, fast_config, rebuild, upsert};
use fake_google::{ApiMethod, Fault, FaultKind};
use uuid::Uuid;

const CAL1: &str = "w1@example.com";

async fn env() -> GoogleEnv {
    GoogleEnv::start(&["w1", "w2"]).await
}

/// The fake's adapter configuration with batches of up to `max` calls.
fn batching(e: &GoogleEnv, max: usize) -> GoogleConfig {
    GoogleConfig {
        batch_max: max,
        ..e.google_config()
    }
}

fn drainer(e: &GoogleEnv, google: GoogleConfig) -> OutboxDrainer<GoogleCalendar> {
    e.drainer_with(google, fast_config())
}

/// `n` upserts of w1, sources `s0..`, titled `title`.
async fn burst(e: &GoogleEnv, n: usize, title: &str) -> Vec<Uuid> {
    burst_from(e, 0, n, title).await
}

/// `n` upserts of w1, sources `s{first}..`, titled `title`.
async fn burst_from(e: &GoogleEnv, first: usize, n: usize, title: &str) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in first..first + n {
        ids.push(
            e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, &format!("s{i}"), title))
                .await,
        );
    }
    ids
}

/// The number of calls inside each batch request the fake received, in order.
fn batch_sizes(e: &GoogleEnv) -> Vec<usize> {
    let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
    for r in e.g.requests() {
        if let Some(batch) = r.batch {
            *sizes.entry(batch).or_default() += 1;
        }
    }
    sizes.into_values().collect()
}

/// HTTP requests to the Calendar API (batches count once; token requests not at all).
fn http_requests(e: &GoogleEnv) -> usize {
    e.g.requests()
        .iter()
        .filter(|r| r.batch.is_none() && r.api_method != ApiMethod::Token)
        .count()
}

/// Every source `s0..s{n}` has exactly one live event titled `title`, and no other event exists.
fn exactly_one_event_each(e: &GoogleEnv, n: usize, title: &str) {
    for i in 0..n {
        let live = e.live(CAL1, &format!("s{i}"));
        assert_eq!(live.len(), 1, "s{i}: {live:?}");
        assert_eq!(live[0]["summary"], title, "s{i}");
    }
    assert_eq!(e.g.live_events(CAL1).len(), n);
}

async fn all_completed(e: &GoogleEnv, ids: &[Uuid]) {
    for id in ids {
        let row = e.t.row(*id).await;
        assert_eq!(row.status, "COMPLETED", "{id}: {:?}", row.last_error);
    }
}

#[tokio::test]
async fn a_burst_of_one_connection_goes_out_in_batches() {
    let e = env().await;
    let d = drainer(&e, batching(&e, 50));
    let ids = burst(&e, 40, "v1").await;
    e.t.drain_until_idle(&d).await;
    all_completed(&e, &ids).await;
    exactly_one_event_each(&e, 40, "v1");
    let sizes = batch_sizes(&e);
    assert!(
        sizes.iter().any(|&n| n >= 2),
        "no batch of two or more calls: {sizes:?}"
    );
    assert!(sizes.iter().all(|&n| (2..=50).contains(&n)), "{sizes:?}");
    // Every insert ran once, inside a batch or alone.
    assert_eq!(e.g.calls(ApiMethod::Insert), 40);
    assert!(
        http_requests(&e) < 40,
        "batching saved no HTTP request: {} for 40 inserts",
        http_requests(&e)
    );

    // Updates go in batches too, fenced with the etag each event had.
    e.g.clear_requests();
    let ids = burst(&e, 40, "v2").await;
    e.t.drain_until_idle(&d).await;
    all_completed(&e, &ids).await;
    exactly_one_event_each(&e, 40, "v2");
    let fenced =
        e.g.requests()
            .iter()
            .filter(|r| r.batch.is_some() && r.api_method == ApiMethod::Update)
            .filter(|r| r.headers.iter().any(|(k, _)| k == "if-match"))
            .count();
    assert!(fenced >= 2, "fenced updates inside batches: {fenced}");
}

#[tokio::test]
async fn batching_off_sends_every_call_alone() {
    let e = env().await;
    for max in [0, 1] {
        let d = drainer(&e, batching(&e, max));
        let ids = burst(&e, 10, &format!("max {max}")).await;
        e.t.drain_until_idle(&d).await;
        all_completed(&e, &ids).await;
    }
    assert_eq!(e.g.calls(ApiMethod::Batch), 0);
    assert!(e.g.requests().iter().all(|r| r.batch.is_none()));
}

#[tokio::test]
async fn a_rate_limited_part_waits_without_an_attempt_and_shrinks_the_next_batch() {
    let e = env().await;
    let d = drainer(&e, batching(&e, 8));
    e.g.inject(
        Fault::new(FaultKind::TooManyRequests {
            retry_after: Some(30),
        })
        .method("post")
        .path("/events")
        .times(1),
    );
    let ids = burst(&e, 8, "v1").await;
    d.drain_once().await.unwrap();
    let mut limited = Vec::new();
    for id in &ids {
        let row = e.t.row(*id).await;
        if row.status == "PENDING" {
            limited.push(row);
        } else {
            assert_eq!(row.status, "COMPLETED", "{:?}", row.last_error);
        }
    }
    assert_eq!(limited.len(), 1, "exactly the rate-limited call waits");
    let row = &limited[0];
    assert_eq!(row.attempts, 0, "a rate limit uses no attempt");
    assert_eq!(row.delay_secs.round(), 30.0, "the part's Retry-After");
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .starts_with("[google_429_rateLimitExceeded]"),
        "{:?}",
        row.last_error
    );
    let before = batch_sizes(&e);
    assert!(
        before.iter().any(|&n| n >= 5),
        "the first batch held most of the 8 calls: {before:?}"
    );

    // The next batches of this connection are at most half as large.
    e.t.make_all_due().await;
    let more = burst_from(&e, 8, 8, "v1").await;
    e.t.drain_until_idle(&d).await;
    all_completed(&e, &ids).await;
    all_completed(&e, &more).await;
    let after = &batch_sizes(&e)[before.len()..];
    assert!(!after.is_empty(), "still batching");
    assert!(after.iter().all(|&n| n <= 4), "{before:?} then {after:?}");
    exactly_one_event_each(&e, 16, "v1");
}

#[tokio::test]
async fn a_conflicting_part_is_retried_alone_and_the_others_complete() {
    let e = env().await;
    let d = drainer(&e, batching(&e, 50));
    e.g.inject(
        Fault::new(FaultKind::Conflict)
            .method("post")
            .path("/events")
            .times(1),
    );
    let ids = burst(&e, 12, "v1").await;
    d.drain_once().await.unwrap();
    let pending: Vec<_> = {
        let mut rows = Vec::new();
        for id in &ids {
            rows.push(e.t.row(*id).await);
        }
        rows.into_iter()
            .filter(|r| r.status != "COMPLETED")
            .collect()
    };
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(
        pending[0]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("[google_409_conflict]"),
        "{:?}",
        pending[0].last_error
    );
    e.t.make_all_due().await;
    e.t.drain_until_idle(&d).await;
    all_completed(&e, &ids).await;
    exactly_one_event_each(&e, 12, "v1");
}

#[tokio::test]
async fn a_lost_batch_reply_is_retried_and_our_own_ids_are_adopted() {
    let e = env().await;
    let d = drainer(&e, batching(&e, 50));
    // Google runs every call of the batch, then the connection drops.
    e.g.inject(
        Fault::new(FaultKind::CommittedReplyLost)
            .method("post")
            .path("/events")
            .times(1),
    );
    let ids = burst(&e, 12, "v1").await;
    e.t.drain_until_idle(&d).await;
    all_completed(&e, &ids).await;
    exactly_one_event_each(&e, 12, "v1");
    let duplicates =
        e.g.requests()
            .iter()
            .filter(|r| r.api_method == ApiMethod::Insert && r.status == Some(409))
            .count();
    assert!(duplicates >= 1, "the retried inserts met their own ids");
}

#[tokio::test]
async fn a_whole_batch_503_is_retried_like_a_lost_reply() {
    let e = env().await;
    let d = drainer(&e, batching(&e, 50));
    e.g.inject(
        Fault::new(FaultKind::ServiceUnavailable)
            .path("/batch")
            .times(1),
    );
    let ids = burst(&e, 12, "v1").await;
    d.drain_once().await.unwrap();
    let mut retried = 0;
    for id in &ids {
        let row = e.t.row(*id).await;
        if row.status == "PENDING" {
            retried += 1;
            assert!(
                row.last_error
                    .as_deref()
                    .unwrap()
                    .starts_with("[google_503"),
                "{:?}",
                row.last_error
            );
        }
    }
    assert!(
        retried >= 2,
        "the batch's calls wait for a retry: {retried}"
    );
    e.t.make_all_due().await;
    e.t.drain_until_idle(&d).await;
    all_completed(&e, &ids).await;
    exactly_one_event_each(&e, 12, "v1");
}

#[tokio::test]
async fn a_cut_answer_retries_only_the_unanswered_calls() {
    let e = env().await;
    let d = drainer(&e, batching(&e, 50));
    e.g.inject(
        Fault::new(FaultKind::BatchCut { after_parts: 3 })
            .path("/batch")
            .times(1),
    );
    let ids = burst(&e, 12, "v1").await;
    d.drain_once().await.unwrap();
    let cut = batch_sizes(&e)[0];
    let mut rows = Vec::new();
    for id in &ids {
        rows.push(e.t.row(*id).await);
    }
    let unanswered: Vec<_> = rows.iter().filter(|r| r.status == "PENDING").collect();
    // The cut batch answered 3 calls whole; the rest of it got no reply.
    assert_eq!(unanswered.len(), cut - 3, "{rows:?}");
    for row in &unanswered {
        assert!(
            row.last_error
                .as_deref()
                .unwrap()
                .starts_with("[google_batch_no_reply]"),
            "{:?}",
            row.last_error
        );
    }
    e.t.make_all_due().await;
    e.t.drain_until_idle(&d).await;
    all_completed(&e, &ids).await;
    // The unanswered calls had run: their retries adopted the events, none doubled.
    exactly_one_event_each(&e, 12, "v1");
}

#[tokio::test]
async fn without_the_endpoint_calls_go_alone_at_once_and_it_is_remembered() {
    let e = env().await;
    e.g.set_batch_endpoint(false);
    let d = drainer(&e, batching(&e, 50));
    let ids = burst(&e, 12, "v1").await;
    d.drain_once().await.unwrap();
    for id in &ids {
        let row = e.t.row(*id).await;
        // Nothing waits for a retry: the refused batch's calls went alone at once.
        assert_eq!((row.status.as_str(), row.attempts), ("COMPLETED", 1));
    }
    assert_eq!(e.g.calls(ApiMethod::Batch), 1);
    let more = burst(&e, 12, "v2").await;
    e.t.drain_until_idle(&d).await;
    all_completed(&e, &more).await;
    assert_eq!(e.g.calls(ApiMethod::Batch), 1, "the fallback is remembered");
    exactly_one_event_each(&e, 12, "v2");
}

#[tokio::test]
async fn a_refused_batch_connection_falls_back_to_single_calls() {
    let e = env().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let google = GoogleConfig {
        batch_url: Some(format!("http://127.0.0.1:{port}/batch/calendar/v3")),
        ..batching(&e, 50)
    };
    let d = drainer(&e, google);
    let ids = burst(&e, 12, "v1").await;
    d.drain_once().await.unwrap();
    for id in &ids {
        let row = e.t.row(*id).await;
        assert_eq!((row.status.as_str(), row.attempts), ("COMPLETED", 1));
    }
    exactly_one_event_each(&e, 12, "v1");
}

#[tokio::test]
async fn an_html_answer_or_a_400_about_batching_falls_back_to_single_calls() {
    let refusals = [
        (
            200,
            "text/html; charset=UTF-8",
            "<html><body>Sign in</body></html>",
        ),
        (
            400,
            "application/json; charset=UTF-8",
            r#"{"error":{"code":400,"message":"Batch requests are not supported","errors":[{"reason":"badRequest"}]}}"#,
        ),
    ];
    for (status, content_type, body) in refusals {
        let e = env().await;
        e.g.inject(
            Fault::new(FaultKind::Raw {
                status,
                content_type: content_type.into(),
                body: body.into(),
            })
            .path("/batch")
            .times(1),
        );
        let d = drainer(&e, batching(&e, 50));
        let ids = burst(&e, 12, "v1").await;
        d.drain_once().await.unwrap();
        for id in &ids {
            let row = e.t.row(*id).await;
            assert_eq!(
                (row.status.as_str(), row.attempts),
                ("COMPLETED", 1),
                "{status}"
            );
        }
        exactly_one_event_each(&e, 12, "v1");
        assert_eq!(e.g.calls(ApiMethod::Batch), 1, "{status}: remembered");
    }
}

#[tokio::test]
async fn every_call_in_a_batch_pays_its_quota_unit() {
    let e = env().await;
    // A bucket of 20 calls that refills at 0.3 a second: 1,200 calls an hour.
    let google = GoogleConfig {
        per_connection_per_minute: 1_200,
        quota_window: Duration::from_secs(3600),
        ..batching(&e, 50)
    };
    let d = e.drainer_with(
        google,
        DrainerConfig {
            concurrency: 50,
            batch_size: 50,
            ..fast_config()
        },
    );
    let ids = burst(&e, 40, "v1").await;
    let running = d.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.stop().await;
    let mut completed = 0;
    for id in &ids {
        completed += usize::from(e.t.row(*id).await.status == "COMPLETED");
    }
    let inserts = e.g.calls(ApiMethod::Insert);
    // The bucket's 20 calls (plus what refilled) bought that many calls, not that many batches.
    assert!((19..=22).contains(&completed), "{completed} completed");
    assert_eq!(inserts, completed as u64);
    let sizes = batch_sizes(&e);
    assert!(sizes.iter().any(|&n| n >= 5), "{sizes:?}");
}

#[tokio::test]
async fn a_rebuild_writes_its_chunk_in_batches() {
    let e = env().await;
    // A quota that does not pace the writes one by one (at Google's 600 a minute, a rebuild
    // writes 10 events a second, and they rarely meet in a batch).
    let google = GoogleConfig {
        per_connection_per_minute: 60_000,
        ..batching(&e, 50)
    };
    let d = drainer(&e, google);
    let ids = burst(&e, 60, "v1").await;
    e.t.drain_until_idle(&d).await;
    all_completed(&e, &ids).await;
    // Someone deletes every event by hand; the rebuild puts them back.
    for event in e.g.live_events(CAL1) {
        assert!(e.g.human_delete(CAL1, event["id"].as_str().unwrap()));
    }
    e.g.clear_requests();
    let id = e.t.insert("REBUILD_ALL", rebuild("w1", CAL1)).await;
    e.t.drain_until_idle(&d).await;
    assert_eq!(e.t.row(id).await.status, "COMPLETED");
    exactly_one_event_each(&e, 60, "v1");
    let sizes = batch_sizes(&e);
    assert!(
        sizes.iter().any(|&n| n >= 2),
        "the rebuild's inserts went out in batches: {sizes:?}"
    );
    assert!(http_requests(&e) < 60 + 2, "{sizes:?}");
}
