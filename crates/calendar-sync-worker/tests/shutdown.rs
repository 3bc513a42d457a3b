//! SIGTERM while the database will not let the worker finish (issue 12, §5):
//! a recording blocked behind another session's row lock, and a release of a
//! hung item blocked the same way. The process exits within the grace plus
//! 5 s, says "grace period over" once (no busy loop), and the row it leaves
//! behind is finished by the next worker with one event in Google.

use std::time::Duration;

use calendar_sync_tests::{
    Audit, GoogleWorld, TestDb, enqueue_all, set_env, source_payload_upsert, wait_for_rows,
    wait_until,
};
use tokio_postgres::Client;
use uuid::Uuid;

mod common;
use common::worker;
const GRACE: Duration = Duration::from_millis(1000);

/// Waits until a session of the test database waits for a lock in a statement
/// matching `query` (a LIKE pattern).
async fn until_waiting(t: &TestDb, query: &'static str) {
    wait_until(&t.config, Duration::from_secs(20), query, |c| async move {
        let r = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND wait_event_type = 'Lock'
                        AND query LIKE $1",
                &[&query],
            )
            .await
            .unwrap();
        r.get::<_, i64>(0) > 0
    })
    .await;
}

/// Runs one scenario: Google answers inserts after `latency`; once the row is
/// in flight another session locks it; after `blocked` is seen waiting,
/// SIGTERM. Returns how long the exit took and how many rows it left PROCESSING.
async fn sigterm_while_blocked(name: &str, latency: Duration, blocked: &'static str) {
    let (t, world) = GoogleWorld::with_database(1).await;
    world.google.set_method_latency("POST", latency);
    let client = t.client().await;
    let ws = &world.workspaces[0];
    let rows = [(
        "UPSERT_EVENT".to_owned(),
        source_payload_upsert(ws, "task-1", "v1"),
    )];
    enqueue_all(&client, &rows).await;
    let mut env = world.worker_env(&t.url());
    set_env(
        &mut env,
        "CALENDAR_SYNC_SHUTDOWN_GRACE_MS",
        &GRACE.as_millis().to_string(),
    );
    let mut first = worker(name, &env);
    wait_for_rows(&t.config, Duration::from_secs(20), &["PROCESSING"], 1).await;

    let mut holder = t.client().await;
    let tx = holder.transaction().await.unwrap();
    let id: Uuid = tx
        .query_one("SELECT id FROM sync_outbox FOR UPDATE", &[])
        .await
        .unwrap()
        .get(0);
    if blocked.contains("calendar_sync_complete") {
        until_waiting(&t, blocked).await;
    }
    let (took, status) = first.terminate(Duration::from_secs(15)).await;
    let log = first.log();
    let graces = log.matches("grace period over").count();
    tx.commit().await.unwrap();
    println!(
        "FIGURES {name}: exit {status:?} after {took:?}, {graces} grace warning(s), log {} bytes",
        log.len()
    );
    assert_eq!(status.code(), Some(0), "{}", first.log_tail(20));
    assert!(took < GRACE + Duration::from_secs(5), "exit took {took:?}");
    assert!(graces <= 1, "{graces} 'grace period over' lines");

    // The next worker finishes what was left behind: one event, nothing lost.
    world.google.set_method_latency("POST", Duration::ZERO);
    let mut second = worker(&format!("{name}-after"), &world.worker_env(&t.url()));
    wait_until(
        &t.config,
        Duration::from_secs(30),
        "the row completed",
        |c| async move { status_of(&c, id).await == "COMPLETED" },
    )
    .await;
    second.terminate(Duration::from_secs(10)).await;
    let audit = Audit::run(&client, &world.google, &world.calendars()).await;
    audit.print_and_check(
        name,
        "1 process, then a second",
        "SIGTERM while the database blocks",
        0,
    );
}

async fn status_of(client: &Client, id: Uuid) -> String {
    client
        .query_one("SELECT status FROM sync_outbox WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_in_time_while_a_recording_is_blocked() {
    // The insert answers at once; recording its success waits for the lock.
    sigterm_while_blocked(
        "sigterm-recording-blocked",
        Duration::from_millis(300),
        "%calendar_sync_complete%",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_in_time_while_releasing_a_hung_item_is_blocked() {
    // The insert hangs past the grace; releasing the item waits for the lock.
    sigterm_while_blocked("sigterm-release-blocked", Duration::from_secs(60), "").await;
}
