//! The instant wake-up of a real `calendar-sync-worker run` (issue 12, §4):
//! rows written inside a released savepoint (Django's nested `atomic()`,
//! SQLAlchemy's `begin_nested()`, Rails' `requires_new`, pgjdbc's `autosave`),
//! and rows written while another source's due rows are blocked, behind its
//! in-flight item or behind a REBUILD_ALL's fence. The poll interval is the
//! default 5 s, so a lost wake-up shows as seconds. Pickup = commit
//! acknowledged -> row COMPLETED (seen by polling the row every 2 ms), with
//! the fake Google answering at once.

use std::time::{Duration, Instant};

use calendar_sync_tests::{
    GoogleWorld, TestDb, WorkerProcess, count_in, set_env, source_payload_upsert, wait_for_rows,
};
use tokio_postgres::Client;
use uuid::Uuid;

mod common;
use common::worker;
const ROWS: usize = 30;

/// One scenario at a time: pickup figures, not the scheduler's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start(name: &str) -> (TestDb, GoogleWorld, WorkerProcess) {
    let (t, world) = GoogleWorld::with_database(2).await;
    let mut env = world.worker_env(&t.url());
    set_env(&mut env, "CALENDAR_SYNC_POLL_INTERVAL_MS", "5000");
    set_env(&mut env, "CALENDAR_SYNC_SHUTDOWN_GRACE_MS", "500");
    let worker = worker(name, &env);
    // Let it connect, find nothing and go to sleep.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    (t, world, worker)
}

/// Inserts one row in a transaction, inside a released savepoint when asked.
async fn insert(client: &mut Client, payload: &serde_json::Value, savepoint: bool) -> Uuid {
    let mut tx = client.transaction().await.unwrap();
    let id = if savepoint {
        let nested = tx.savepoint("nested").await.unwrap();
        let id = insert_row(&nested, payload).await;
        nested.commit().await.unwrap();
        id
    } else {
        insert_row(&tx, payload).await
    };
    tx.commit().await.unwrap();
    id
}

async fn insert_row(client: &tokio_postgres::Transaction<'_>, payload: &serde_json::Value) -> Uuid {
    client
        .query_one(
            "INSERT INTO sync_outbox (operation, payload) VALUES ('UPSERT_EVENT', $1) RETURNING id",
            &[payload],
        )
        .await
        .unwrap()
        .get(0)
}

/// Milliseconds from commit to COMPLETED for `ROWS` new sources of `ws`;
/// stops early once one pickup took over 2 s (the poll fallback, not a wake-up).
async fn pickups(t: &TestDb, ws: &str, savepoint: bool) -> Vec<f64> {
    let mut producer = t.client().await;
    let watcher = t.client().await;
    let mut took = Vec::new();
    for i in 0..ROWS {
        tokio::time::sleep(Duration::from_millis(50 + (i as u64 * 37) % 100)).await;
        let payload = source_payload_upsert(ws, &format!("pickup-{i}"), "v1");
        let id = insert(&mut producer, &payload, savepoint).await;
        let committed = Instant::now();
        loop {
            let status: String = watcher
                .query_one("SELECT status FROM sync_outbox WHERE id = $1", &[&id])
                .await
                .unwrap()
                .get(0);
            if status == "COMPLETED" {
                break;
            }
            if committed.elapsed() > Duration::from_secs(10) {
                panic!("row {i} not COMPLETED 10 s after its commit");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        took.push(committed.elapsed().as_secs_f64() * 1000.0);
        if *took.last().unwrap() > 2000.0 {
            break;
        }
    }
    took
}

fn check(name: &str, mut took: Vec<f64>) {
    took.sort_by(f64::total_cmp);
    // Nearest rank: the smallest value with at least `pct` % at or below it.
    let at = |pct: usize| took[(took.len() * pct).div_ceil(100).clamp(1, took.len()) - 1];
    let (p50, p99) = (at(50), at(99));
    println!(
        "FIGURES {name}: {} pickups, p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms",
        took.len(),
        took.last().unwrap()
    );
    assert_eq!(took.len(), ROWS, "a pickup fell back to the poll: {took:?}");
    assert!(p50 < 50.0, "p50 {p50:.1} ms");
    assert!(p99 < 200.0, "p99 {p99:.1} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_inside_a_released_savepoint_wake_the_worker() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (t, world, mut worker) = start("wakeup-savepoint").await;
    let took = pickups(&t, &world.workspaces[0], true).await;
    worker.terminate(Duration::from_secs(10)).await;
    check("wakeup_savepoint", took);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_row_does_not_suppress_the_wake_up() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (t, world, mut worker) = start("wakeup-blocked").await;
    let mut producer = t.client().await;
    let ws = &world.workspaces[1];
    // Source "stuck": its insert completes; its update hangs in Google; its
    // next change is due but blocked behind the in-flight update.
    let first = insert(
        &mut producer,
        &source_payload_upsert(ws, "stuck", "v1"),
        false,
    )
    .await;
    wait_for_rows(&t.config, Duration::from_secs(20), &["COMPLETED"], 1).await;
    world
        .google
        .set_method_latency("PUT", Duration::from_secs(600));
    insert(
        &mut producer,
        &source_payload_upsert(ws, "stuck", "v2"),
        false,
    )
    .await;
    wait_for_rows(&t.config, Duration::from_secs(20), &["PROCESSING"], 1).await;
    insert(
        &mut producer,
        &source_payload_upsert(ws, "stuck", "v3"),
        false,
    )
    .await;
    let took = pickups(&t, &world.workspaces[0], false).await;
    let pending = count_in(&t.client().await, &["PENDING"]).await;
    worker.terminate(Duration::from_secs(15)).await;
    assert_eq!(pending, 1, "the blocked row stayed blocked throughout");
    let _ = first;
    check("wakeup_blocked", took);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_fenced_behind_a_rebuild_do_not_suppress_the_wake_up() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (t, world, mut worker) = start("wakeup-fenced").await;
    let mut producer = t.client().await;
    let ws = &world.workspaces[1];
    // A REBUILD_ALL of ws1 whose list call hangs in Google: ws1's rows
    // written after it are due, and fenced for as long as it is in flight.
    let fence = world.hung_rebuild(&t, ws).await;
    wait_for_rows(&t.config, Duration::from_secs(20), &["PROCESSING"], 1).await;
    for source in ["fenced-a", "fenced-b", "fenced-c"] {
        insert(
            &mut producer,
            &source_payload_upsert(ws, source, "v1"),
            false,
        )
        .await;
    }
    // Let the worker claim, find them fenced, and go to sleep.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = pickups(&t, &world.workspaces[0], false).await;
    let (pending, rebuilding) = {
        let c = t.client().await;
        (count_in(&c, &["PENDING"]).await, t.row(fence).await.status)
    };
    worker.terminate(Duration::from_secs(15)).await;
    assert_eq!(pending, 3, "the fenced rows stayed fenced throughout");
    assert_eq!(rebuilding, "PROCESSING", "the REBUILD_ALL stayed in flight");
    check("wakeup_fenced", took);
}
