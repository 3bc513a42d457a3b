//! Drift detection through Google's incremental sync, against fake-google
//! through the real adapter: events edited or deleted by hand are repaired,
//! reported or adopted per policy; our own writes never count as drift.

use std::time::Duration;

use calendar_sync::{DrainerConfig, DriftPolicy, GoogleCalendar, OutboxDrainer};
use calendar_sync_tests::{GoogleEnv, fast_config, upsert};
use serde_json::Value;

const CAL: &str = "w1@example.com";

/// Checks due every millisecond: each drain checks first, then drains.
fn drift_config(policy: DriftPolicy) -> DrainerConfig {
    DrainerConfig {
        drift_check_interval: Duration::from_millis(1),
        drift_policy: policy,
        ..fast_config()
    }
}

/// w1 connected, `sources` synced, and the first (full) listing of its
/// calendar done, so that later checks list only changes.
async fn synced(
    policy: DriftPolicy,
    sources: &[&str],
) -> (GoogleEnv, OutboxDrainer<GoogleCalendar>) {
    let e = GoogleEnv::start(&["w1"]).await;
    let d = e.drainer_with(e.google_config(), drift_config(policy));
    for source in sources {
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL, source, "Ship it"))
            .await;
    }
    e.t.drain_until_idle(&d).await;
    let first = d.check_drift().await.expect("first listing");
    assert_eq!(
        (first.listings_finished, first.deleted + first.edited),
        (1, 0),
        "{first:?}"
    );
    (e, d)
}

/// Every recorded drift: (source, kind, action).
async fn drifts(e: &GoogleEnv) -> Vec<(String, String, String)> {
    e.t.client()
        .await
        .query(
            "SELECT source_id, kind, action FROM calendar_sync_drift ORDER BY id",
            &[],
        )
        .await
        .expect("drifts")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn drift(source: &str, kind: &str, action: &str) -> (String, String, String) {
    (source.into(), kind.into(), action.into())
}

fn event_id(e: &GoogleEnv, source: &str) -> String {
    let live = e.live(CAL, source);
    assert_eq!(live.len(), 1, "{live:?}");
    live[0]["id"].as_str().unwrap().to_owned()
}

fn edit_summary(e: &GoogleEnv, source: &str, summary: &str) {
    let id = event_id(e, source);
    let summary = summary.to_owned();
    assert!(e.g.human_edit(CAL, &id, move |event| {
        event.insert("summary".into(), Value::String(summary));
    }));
}

async fn outbox_rows(e: &GoogleEnv) -> i64 {
    let client = e.t.client().await;
    let row = client
        .query_one("SELECT count(*) FROM sync_outbox", &[])
        .await;
    row.expect("count").get(0)
}

#[tokio::test]
async fn a_hand_deletion_is_repaired_within_one_interval() {
    let (e, d) = synced(DriftPolicy::Repair, &["s1", "s2"]).await;
    let deleted = event_id(&e, "s1");
    assert!(e.g.human_delete(CAL, &deleted));

    e.t.drain_until_idle(&d).await;

    let live = e.live(CAL, "s1");
    assert_eq!(live.len(), 1, "the event is back: {live:?}");
    assert_ne!(live[0]["id"], deleted.as_str(), "under a fresh id");
    assert_eq!(live[0]["summary"], "Ship it");
    assert_eq!(e.events(CAL, "s1").len(), 2, "exactly one new event");
    assert_eq!(e.live(CAL, "s2").len(), 1);
    assert_eq!(drifts(&e).await, [drift("s1", "deleted", "repaired")]);
    // Healed: further checks find nothing.
    e.t.drain_until_idle(&d).await;
    assert_eq!(drifts(&e).await.len(), 1);
    assert_eq!(e.events(CAL, "s1").len(), 2);
}

#[tokio::test]
async fn a_hand_edit_is_repaired() {
    let (e, d) = synced(DriftPolicy::Repair, &["s1"]).await;
    let id = event_id(&e, "s1");
    edit_summary(&e, "s1", "moved by hand");

    let report = d.check_drift().await.expect("check");
    assert_eq!((report.edited, report.deleted), (1, 0), "{report:?}");
    e.t.drain_until_idle(&d).await;

    assert_eq!(event_id(&e, "s1"), id, "the same event, rewritten");
    assert_eq!(e.live(CAL, "s1")[0]["summary"], "Ship it");
    assert_eq!(drifts(&e).await, [drift("s1", "edited", "repaired")]);
}

#[tokio::test]
async fn a_hand_edit_is_only_recorded_under_report() {
    let (e, d) = synced(DriftPolicy::Report, &["s1"]).await;
    edit_summary(&e, "s1", "moved by hand");
    let rows_before = outbox_rows(&e).await;

    e.t.drain_until_idle(&d).await;
    e.t.drain_until_idle(&d).await;

    assert_eq!(e.live(CAL, "s1")[0]["summary"], "moved by hand");
    assert_eq!(outbox_rows(&e).await, rows_before, "nothing queued");
    assert_eq!(drifts(&e).await, [drift("s1", "edited", "reported")]);
}

#[tokio::test]
async fn a_hand_edit_is_adopted_and_a_hand_deletion_cancels_the_binding() {
    let (e, d) = synced(DriftPolicy::Adopt, &["s1", "s2"]).await;
    edit_summary(&e, "s1", "moved by hand");
    let deleted = event_id(&e, "s2");
    assert!(e.g.human_delete(CAL, &deleted));

    e.t.drain_until_idle(&d).await;

    assert_eq!(
        e.live(CAL, "s1")[0]["summary"],
        "moved by hand",
        "left as the user made it"
    );
    assert!(e.live(CAL, "s2").is_empty(), "left deleted");
    let mut found = drifts(&e).await;
    found.sort();
    assert_eq!(
        found,
        [
            drift("s1", "edited", "adopted"),
            drift("s2", "deleted", "adopted")
        ]
    );
    let client = e.t.client().await;
    let row = client
        .query_one(
            "SELECT content->>'summary', etag FROM calendar_event_bindings WHERE source_id = 's1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "moved by hand");
    assert_eq!(
        Some(row.get::<_, String>(1)),
        e.live(CAL, "s1")[0]["etag"].as_str().map(str::to_owned)
    );
    assert_eq!(e.t.binding("s2").await.0, "CANCELLED");

    // The source's next upsert creates its event again.
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL, "s2", "Ship it"))
        .await;
    e.t.drain_until_idle(&d).await;
    assert_eq!(e.live(CAL, "s2").len(), 1);
}

#[tokio::test]
async fn our_own_writes_are_never_drift() {
    let sources: Vec<String> = (0..12).map(|n| format!("s{n}")).collect();
    let names: Vec<&str> = sources.iter().map(String::as_str).collect();
    let (e, d) = synced(DriftPolicy::Repair, &names).await;
    for round in 0..3 {
        for source in &names {
            let title = format!("Ship it, round {round}");
            e.t.insert("UPSERT_EVENT", upsert("w1", CAL, source, &title))
                .await;
        }
        // A check before the writes drain, one after.
        d.check_drift().await.expect("check");
        e.t.drain_until_idle(&d).await;
        d.check_drift().await.expect("check");
    }
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL, "s0", "last"))
        .await;
    e.t.insert("CANCEL_EVENT", calendar_sync_tests::cancel("w1", CAL, "s1"))
        .await;
    e.t.drain_until_idle(&d).await;
    e.t.drain_until_idle(&d).await;

    assert_eq!(drifts(&e).await, []);
    assert_eq!(e.live(CAL, "s0")[0]["summary"], "last");
    assert!(e.live(CAL, "s1").is_empty());
}

#[tokio::test]
async fn a_stale_sync_token_starts_a_full_listing_that_still_finds_the_drift() {
    let (e, d) = synced(DriftPolicy::Repair, &["s1"]).await;
    e.g.invalidate_sync_tokens();
    let deleted = event_id(&e, "s1");
    assert!(e.g.human_delete(CAL, &deleted));

    let report = d.check_drift().await.expect("check");
    assert_eq!(report.full_syncs_required, 1, "{report:?}");
    assert_eq!(
        (report.listings_finished, report.deleted),
        (1, 1),
        "{report:?}"
    );
    e.t.drain_until_idle(&d).await;

    assert_eq!(e.live(CAL, "s1").len(), 1);
    assert_eq!(drifts(&e).await, [drift("s1", "deleted", "repaired")]);
    let token: Option<String> =
        e.t.client()
            .await
            .query_one("SELECT sync_token FROM calendar_sync_drift_checks", &[])
            .await
            .unwrap()
            .get(0);
    assert!(token.is_some(), "a fresh token replaced the stale one");
}

#[tokio::test]
async fn two_drainers_checking_at_once_repair_once() {
    let (e, d1) = synced(DriftPolicy::Repair, &["s1", "s2", "s3"]).await;
    let d2 = e.drainer_with(e.google_config(), drift_config(DriftPolicy::Repair));
    for source in ["s1", "s2", "s3"] {
        let id = event_id(&e, source);
        assert!(e.g.human_delete(CAL, &id));
    }
    let token_before: Option<String> =
        e.t.client()
            .await
            .query_one("SELECT sync_token FROM calendar_sync_drift_checks", &[])
            .await
            .unwrap()
            .get(0);

    let (r1, r2) = tokio::join!(d1.check_drift(), d2.check_drift());
    let (r1, r2) = (r1.expect("check"), r2.expect("check"));
    assert_eq!(r1.deleted + r2.deleted, 3, "{r1:?} {r2:?}");

    // A retried check from the old token meets the same drifts again.
    e.t.client()
        .await
        .execute(
            "UPDATE calendar_sync_drift_checks SET sync_token = $1, next_check_at = now()",
            &[&token_before],
        )
        .await
        .unwrap();
    let again = d2.check_drift().await.expect("check");
    assert_eq!(again.deleted, 0, "{again:?}");

    let pending: i64 =
        e.t.client()
            .await
            .query_one(
                "SELECT count(*) FROM sync_outbox WHERE status = 'PENDING'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(pending, 3, "one repair per deleted event");
    let (a, b) = tokio::join!(d1.drain_once(), d2.drain_once());
    a.expect("drain");
    b.expect("drain");
    e.t.drain_until_idle(&d1).await;
    for source in ["s1", "s2", "s3"] {
        assert_eq!(e.live(CAL, source).len(), 1, "{source} is back");
        assert_eq!(
            e.events(CAL, source).len(),
            2,
            "{source}: exactly one new event"
        );
    }
    assert_eq!(drifts(&e).await.len(), 3);
}

#[tokio::test]
async fn a_check_is_a_single_list_call_when_nothing_changed() {
    let (e, d) = synced(DriftPolicy::Repair, &["s1", "s2"]).await;
    let calls = e.g.calls(fake_google::ApiMethod::List);
    let report = d.check_drift().await.expect("check");
    assert_eq!(
        (report.pages, report.listings_finished),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(e.g.calls(fake_google::ApiMethod::List), calls + 1);
}

#[tokio::test]
async fn a_check_pays_its_call_from_the_connection_s_budget() {
    let e = GoogleEnv::start(&["w1"]).await;
    // A budget refilling at 600 an hour: what a call takes stays visible.
    let mut google = e.google_config();
    google.quota_window = Duration::from_secs(3600);
    let d = e.drainer_with(google, drift_config(DriftPolicy::Repair));
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL, "s1", "Ship it"))
        .await;
    e.t.drain_until_idle(&d).await;
    let tokens = || async {
        let client = e.t.client().await;
        let row = client
            .query_one(
                "SELECT tokens FROM calendar_sync_budget WHERE scope = 'c' AND name = 'w1'",
                &[],
            )
            .await;
        row.expect("w1's bucket").get::<_, f64>(0)
    };
    let before = tokens().await;
    let report = d.check_drift().await.expect("check");
    assert_eq!(report.pages, 1, "{report:?}");
    let after = tokens().await;
    assert!(after <= before - 0.9, "one call paid: {before} -> {after}");
}

#[tokio::test]
async fn a_started_drainer_checks_every_interval_and_heals() {
    let (e, d) = synced(DriftPolicy::Repair, &["s1"]).await;
    let deleted = event_id(&e, "s1");
    assert!(e.g.human_delete(CAL, &deleted));

    let handle = d.start();
    let healed = || async { e.live(CAL, "s1").len() == 1 };
    e.t.wait_for(Duration::from_secs(30), "s1 recreated", healed)
        .await;
    handle.stop().await;

    assert_eq!(e.events(CAL, "s1").len(), 2, "exactly one new event");
    assert_eq!(drifts(&e).await, [drift("s1", "deleted", "repaired")]);
}

#[tokio::test]
async fn a_page_token_google_refuses_starts_the_listing_over() {
    let (e, d) = synced(DriftPolicy::Repair, &["s1"]).await;
    let client = e.t.client().await;
    client
        .execute(
            "UPDATE calendar_sync_drift_checks SET page_token = 'not-a-page', next_check_at = now()",
            &[],
        )
        .await
        .unwrap();
    let refused = d.check_drift().await.expect("check");
    assert_eq!(
        (refused.failed, refused.listings_finished),
        (1, 0),
        "{refused:?}"
    );

    let deleted = event_id(&e, "s1");
    assert!(e.g.human_delete(CAL, &deleted));
    client
        .execute(
            "UPDATE calendar_sync_drift_checks SET next_check_at = now()",
            &[],
        )
        .await
        .unwrap();
    let again = d.check_drift().await.expect("check");
    assert_eq!(
        (again.failed, again.listings_finished, again.deleted),
        (0, 1, 1),
        "{again:?}"
    );
}

#[tokio::test]
async fn cleanup_forgets_old_drift_and_the_checks_of_calendars_without_live_events() {
    let (e, d) = synced(DriftPolicy::Report, &["s1"]).await;
    edit_summary(&e, "s1", "moved by hand");
    d.check_drift().await.expect("check");
    assert_eq!(drifts(&e).await.len(), 1);
    let client = e.t.client().await;
    client
        .batch_execute("UPDATE calendar_sync_drift SET detected_at = now() - interval '31 days'")
        .await
        .unwrap();
    // The source is cancelled: its calendar has no live event left.
    e.t.insert("CANCEL_EVENT", calendar_sync_tests::cancel("w1", CAL, "s1"))
        .await;
    e.t.drain_until_idle(&d).await;

    calendar_sync::ops::cleanup(&e.t.db, 30).await.unwrap();

    assert!(
        drifts(&e).await.is_empty(),
        "drift older than 30 days is gone"
    );
    let checks: i64 = client
        .query_one("SELECT count(*) FROM calendar_sync_drift_checks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(checks, 0, "no check row for a calendar without live events");
}
