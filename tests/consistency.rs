//! One right event per source whatever Google does in between (issue 13):
//! transient 404s, a calendar that is gone for a while, and late writes that
//! Google applies after a newer one. Through the real google-calendar3 client,
//! against the fake Google, with a real PostgreSQL.

use std::time::Duration;

use calendar_sync_tests::{GoogleEnv, cancel, upsert};
use fake_google::{ApiMethod, FakeGoogle, Fault, FaultKind};

const CAL1: &str = "w1@example.com";

/// A fresh database and fake Google with workspace w1 (refresh token `rt-w1`,
/// calendar `w1@example.com`).
async fn env() -> GoogleEnv {
    GoogleEnv::start(&["w1"]).await
}

#[tokio::test]
async fn a_transient_404_on_update_never_creates_a_second_event() {
    let e = env().await;
    let d = e.drainer();
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v1"))
        .await;
    d.drain_once().await.unwrap();
    e.g.inject(Fault::new(FaultKind::NotFound).method("PUT"));
    let id =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v2"))
            .await;
    d.drain_once().await.unwrap();
    e.t.make_all_due().await;
    d.drain_once().await.unwrap();
    assert_eq!(e.t.row(id).await.status, "COMPLETED");
    assert_eq!(
        e.events(CAL1, "s1").len(),
        1,
        "one event ever, no second id"
    );
    let live = e.live(CAL1, "s1");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["summary"], "v2");
    assert_eq!(e.t.binding("s1").await.1, live[0]["id"].as_str().unwrap());
}

#[tokio::test]
async fn a_calendar_gone_for_a_while_dead_letters_without_reserving_a_new_id() {
    let e = env().await;
    let d = e.drainer();
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v1"))
        .await;
    d.drain_once().await.unwrap();
    let (_, first_id) = e.t.binding("s1").await;
    // Access lost: every call on the calendar answers 404 for a while.
    e.g.inject(
        Fault::new(FaultKind::NotFound)
            .path(&format!("/calendars/{CAL1}"))
            .times(20),
    );
    let id =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v2"))
            .await;
    d.drain_once().await.unwrap();
    let row = e.t.row(id).await;
    assert_eq!(row.status, "DEAD_LETTER");
    assert!(
        row.last_error.as_deref().unwrap_or("").contains("calendar"),
        "{:?}",
        row.last_error
    );
    assert_eq!(
        e.t.binding("s1").await,
        ("LIVE".to_owned(), first_id.clone())
    );
    // Access is back; the operator requeues.
    e.g.clear_faults();
    calendar_sync::ops::requeue(&e.t.db, None, None)
        .await
        .unwrap();
    d.drain_once().await.unwrap();
    assert_eq!(e.t.row(id).await.status, "COMPLETED");
    let live = e.live(CAL1, "s1");
    assert_eq!(live.len(), 1, "no duplicate once access returns");
    assert_eq!(live[0]["id"], first_id.as_str());
    assert_eq!(live[0]["summary"], "v2");
}

#[tokio::test]
async fn a_cancel_meeting_a_transient_404_completes_only_once_the_event_is_gone() {
    let e = env().await;
    let d = e.drainer();
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v1"))
        .await;
    d.drain_once().await.unwrap();
    e.g.inject(Fault::new(FaultKind::NotFound).method("DELETE"));
    let id = e.t.insert("CANCEL_EVENT", cancel("w1", CAL1, "s1")).await;
    d.drain_once().await.unwrap();
    let row = e.t.row(id).await;
    assert_eq!(
        (row.status.as_str(), e.live(CAL1, "s1").len()),
        ("PENDING", 1),
        "the event still exists, so the cancel is not done: {:?}",
        row.last_error
    );
    e.t.make_all_due().await;
    d.drain_once().await.unwrap();
    assert_eq!(e.t.row(id).await.status, "COMPLETED");
    assert!(e.live(CAL1, "s1").is_empty());
    assert_eq!(e.t.binding("s1").await.0, "CANCELLED");
}

/// Waits until the fake has processed every request of `method`.
async fn settled(g: &FakeGoogle, method: ApiMethod) {
    for _ in 0..100 {
        if g.requests()
            .iter()
            .filter(|r| r.api_method == method)
            .all(|r| r.status.is_some())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the fake never finished the {method:?} requests");
}

#[tokio::test]
async fn a_late_delete_after_a_newer_upsert_leaves_the_newest_event_live() {
    let e = env().await;
    let d = e.drainer();
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v1"))
        .await;
    d.drain_once().await.unwrap();
    // The delete times out (800 ms) but Google applies it at 1.5 s.
    e.g.inject(Fault::new(FaultKind::HangThenApply { delay_ms: 1500 }).method("DELETE"));
    let cancel_id = e.t.insert("CANCEL_EVENT", cancel("w1", CAL1, "s1")).await;
    d.drain_once().await.unwrap();
    assert_eq!(e.t.row(cancel_id).await.status, "PENDING");
    // The newer upsert overtakes the waiting cancel and writes first.
    let id =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v2"))
            .await;
    e.t.make_all_due().await;
    d.drain_once().await.unwrap();
    assert_eq!(e.t.row(id).await.status, "COMPLETED");
    settled(&e.g, ApiMethod::Delete).await;
    // Later unchanged upserts make no call: the binding must be right now.
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v2"))
        .await;
    e.t.make_all_due().await;
    d.drain_once().await.unwrap();
    let live = e.live(CAL1, "s1");
    assert_eq!(
        live.len(),
        1,
        "the late delete must not win: {:?}",
        e.events(CAL1, "s1")
    );
    assert_eq!(live[0]["summary"], "v2");
    let (state, bound) = e.t.binding("s1").await;
    assert_eq!(
        (state.as_str(), bound.as_str()),
        ("LIVE", live[0]["id"].as_str().unwrap())
    );
}

#[tokio::test]
async fn a_late_update_after_a_newer_cancel_never_revives_the_event() {
    let e = env().await;
    let d = e.drainer();
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v1"))
        .await;
    d.drain_once().await.unwrap();
    e.g.inject(Fault::new(FaultKind::HangThenApply { delay_ms: 1500 }).method("PUT"));
    let up =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v2"))
            .await;
    d.drain_once().await.unwrap();
    assert_eq!(e.t.row(up).await.status, "PENDING");
    let id = e.t.insert("CANCEL_EVENT", cancel("w1", CAL1, "s1")).await;
    e.t.make_all_due().await;
    d.drain_once().await.unwrap();
    assert_eq!(e.t.row(id).await.status, "COMPLETED");
    settled(&e.g, ApiMethod::Update).await;
    assert!(
        e.live(CAL1, "s1").is_empty(),
        "the late update must not bring the event back: {:?}",
        e.live(CAL1, "s1")
    );
    assert_eq!(e.t.binding("s1").await.0, "CANCELLED");
}

#[tokio::test]
async fn a_longer_backoff_beats_a_short_retry_after_and_an_http_date_is_honoured() {
    let e = env().await;
    let d = e.drainer();
    let id =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
            .await;
    let mut delays = Vec::new();
    let until = (chrono::Utc::now() + chrono::Duration::seconds(600))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    for kind in [
        FaultKind::RateLimitExceeded,
        FaultKind::RateLimitExceeded,
        FaultKind::RateLimitExceeded,
        // The backoff is 8 s by now: a 1 s Retry-After must not shorten it.
        FaultKind::TooManyRequests {
            retry_after: Some(1),
        },
        // Ten minutes, as an HTTP-date: longer than the 16 s backoff.
        FaultKind::TooManyRequestsUntil { http_date: until },
    ] {
        e.g.inject(Fault::new(kind).path("/events"));
        d.drain_once().await.unwrap();
        let row = e.t.row(id).await;
        assert_eq!(row.status, "PENDING", "{:?}", row.last_error);
        delays.push(row.delay_secs.round());
        e.t.make_all_due().await;
    }
    assert_eq!(delays[..4], [1.0, 2.0, 4.0, 8.0], "{delays:?}");
    assert!((595.0..=600.0).contains(&delays[4]), "{delays:?}");
    let error = e.t.row(id).await.last_error.unwrap();
    assert!(
        error.starts_with("[google_429_rateLimitExceeded]"),
        "{error}"
    );
}

#[tokio::test]
async fn an_over_long_field_dead_letters_at_once_naming_the_field_and_the_limit() {
    let e = env().await;
    let d = e.drainer();
    let mut long_description = upsert("w1", CAL1, "s1", "v");
    long_description["event"]["description"] = "d".repeat(8_193).into();
    let mut long_title = upsert("w1", CAL1, "s2", "v");
    long_title["event"]["title"] = "t".repeat(1_025).into();
    let mut at_the_limits = upsert("w1", CAL1, "s3", "v");
    at_the_limits["event"]["description"] = "é".repeat(8_192).into();
    at_the_limits["event"]["title"] = "t".repeat(1_024).into();
    let a = e.t.insert("UPSERT_EVENT", long_description).await;
    let b = e.t.insert("UPSERT_EVENT", long_title).await;
    let c = e.t.insert("UPSERT_EVENT", at_the_limits).await;
    d.drain_once().await.unwrap();
    for (id, expected) in [
        (
            a,
            "[invalid_payload] payload.event.description: is 8193 characters long; the limit is 8192",
        ),
        (
            b,
            "[invalid_payload] payload.event.title: is 1025 characters long; the limit is 1024",
        ),
    ] {
        let row = e.t.row(id).await;
        assert_eq!(row.status, "DEAD_LETTER");
        assert_eq!(row.last_error.as_deref(), Some(expected));
    }
    assert_eq!(e.t.row(c).await.status, "COMPLETED");
    assert_eq!(
        e.g.calls(ApiMethod::Insert),
        1,
        "only the one within the limits"
    );
    assert_eq!(
        e.live(CAL1, "s3")[0]["description"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        8_192
    );
}
