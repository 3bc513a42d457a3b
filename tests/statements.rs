//! One failing statement must not tear down unrelated work (issue 12, §5): a
//! claim that fails on `lock_timeout`, a recording blocked by another session,
//! and a claim racing `invalidate_connection` for the same workspace's rows.
//! In-flight items keep their single attempt and their single call.

use std::time::Duration;

use calendar_sync::testing::LOCK_NAMESPACE;
use calendar_sync::{CalendarError, CalendarErrorKind, OutboxDrainer};
use calendar_sync_tests::{Fault, MemoryCalendar, TestDb, fast_config, upsert};
use uuid::Uuid;

fn drainer(t: &TestDb, calendar: &MemoryCalendar) -> OutboxDrainer<MemoryCalendar> {
    OutboxDrainer::new(t.db.clone(), calendar.clone(), fast_config()).expect("valid config")
}

/// Every new session of the test database gives up on a lock after 200 ms.
async fn set_lock_timeout(t: &TestDb) {
    let sql = format!("ALTER DATABASE {} SET lock_timeout = '200ms'", t.name);
    t.client().await.batch_execute(&sql).await.unwrap();
}

fn calls_for(calendar: &MemoryCalendar, summary: &str) -> usize {
    let calls = calendar.calls();
    calls
        .iter()
        .filter(|c| c.summary.as_deref() == Some(summary))
        .count()
}

async fn until_status(t: &TestDb, id: Uuid, status: &str, timeout: Duration) {
    t.wait_for(timeout, status, || async {
        t.row(id).await.status == status
    })
    .await;
}

#[tokio::test]
async fn a_claim_failing_on_lock_timeout_leaves_in_flight_items_alone() {
    let t = TestDb::new().await;
    set_lock_timeout(&t).await;
    let cal = MemoryCalendar::new();
    cal.set_latency(Duration::from_millis(1500));
    let handle = drainer(&t, &cal).start();
    let first = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "first"))
        .await;
    until_status(&t, first, "PROCESSING", Duration::from_secs(10)).await;

    // Another session holds the claim mutex for a second: every claim meanwhile
    // fails with lock_timeout (55P03).
    let mut holder = t.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_NAMESPACE])
        .await
        .unwrap();
    let second = t
        .insert("UPSERT_EVENT", upsert("w2", "c1", "s2", "second"))
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    tx.commit().await.unwrap();

    until_status(&t, first, "COMPLETED", Duration::from_secs(15)).await;
    until_status(&t, second, "COMPLETED", Duration::from_secs(15)).await;
    let row = t.row(first).await;
    assert_eq!(
        row.attempts, 1,
        "the in-flight item kept its attempt: {row:?}"
    );
    assert_eq!(
        calls_for(&cal, "first"),
        1,
        "one Google call for the in-flight item"
    );
    let report = handle.stop().await;
    assert_eq!(report.recovered, 0, "{report:?}");
    assert_eq!(t.held_row_locks().await, 0);
}

#[tokio::test]
async fn a_recording_blocked_past_lock_timeout_is_retried_not_abandoned() {
    let t = TestDb::new().await;
    set_lock_timeout(&t).await;
    let cal = MemoryCalendar::new();
    cal.set_latency(Duration::from_millis(1000));
    let handle = drainer(&t, &cal).start();
    let id = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "only"))
        .await;
    until_status(&t, id, "PROCESSING", Duration::from_secs(10)).await;

    // Another session holds the row while the item finishes: recording it
    // fails on lock_timeout again and again for 3 s.
    let mut holder = t.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM sync_outbox WHERE id = $1 FOR UPDATE", &[&id])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    tx.commit().await.unwrap();

    until_status(&t, id, "COMPLETED", Duration::from_secs(30)).await;
    let row = t.row(id).await;
    assert_eq!(
        row.attempts, 1,
        "recorded by the worker that made the call: {row:?}"
    );
    assert_eq!(calls_for(&cal, "only"), 1, "no repeated Google call");
    handle.stop().await;
    assert_eq!(t.held_row_locks().await, 0);
}

/// A claim takes the claim mutex, then row locks of a workspace's PENDING rows
/// (marking one PROCESSING, superseding older ones). `invalidate_connection`
/// updates every PENDING row of the workspace. Here a session does what a
/// claim does, by hand and slowly: lock the mutex, lock one row, then others.
#[tokio::test]
async fn invalidating_a_connection_waits_for_the_claim_instead_of_deadlocking() {
    let t = TestDb::new().await;
    let client = t.client().await;
    client
        .execute(
            "INSERT INTO google_connections (workspace_id, google_email, refresh_token_encrypted)
             VALUES ('w1', 'a@example.com', 'x')",
            &[],
        )
        .await
        .unwrap();
    let cal = MemoryCalendar::new();
    cal.set_latency(Duration::from_millis(500));
    cal.inject(
        None,
        1,
        Fault::Fail(CalendarError::new(
            CalendarErrorKind::ConnectionInvalid,
            "oauth_invalid_grant",
            "Token has been expired or revoked.",
        )),
    );
    let failing = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s0", "x"))
        .await;
    let mut waiting = Vec::new();
    for i in 1..=6 {
        waiting.push(
            t.insert("UPSERT_EVENT", upsert("w1", "c1", &format!("s{i}"), "x"))
                .await,
        );
    }
    // Not due: the drainer leaves them alone, invalidate_connection does not.
    client
        .execute(
            "UPDATE sync_outbox SET next_attempt_at = now() + interval '1 hour' WHERE id <> $1",
            &[&failing],
        )
        .await
        .unwrap();
    let handle = drainer(&t, &cal).start();
    until_status(&t, failing, "PROCESSING", Duration::from_secs(10)).await;

    let mut claim = t.client().await;
    claim
        .batch_execute("SET deadlock_timeout = '50ms'")
        .await
        .unwrap();
    let tx = claim.transaction().await.unwrap();
    tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_NAMESPACE])
        .await
        .unwrap();
    let last = *waiting.last().unwrap();
    tx.execute(
        "UPDATE sync_outbox SET updated_at = now() WHERE id = $1",
        &[&last],
    )
    .await
    .unwrap();
    t.wait_for(
        Duration::from_secs(10),
        "invalidate_connection to wait",
        || async {
            let r = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND wait_event_type = 'Lock'
                    AND (query LIKE '%invalidate_connection%' OR query LIKE '%lock_claims%')",
                    &[],
                )
                .await
                .unwrap();
            r.get::<_, i64>(0) == 1
        },
    )
    .await;
    let others = tx
        .execute(
            "UPDATE sync_outbox SET updated_at = now() WHERE id = ANY($1) AND id <> $2",
            &[&waiting, &last],
        )
        .await;
    assert!(
        others.is_ok(),
        "the claim's row locks deadlocked: {others:?}"
    );
    tx.commit().await.unwrap();

    until_status(&t, failing, "DEAD_LETTER", Duration::from_secs(10)).await;
    for id in waiting {
        assert_eq!(t.row(id).await.status, "DEAD_LETTER");
    }
    handle.stop().await;
}
