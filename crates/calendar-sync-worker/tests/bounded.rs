//! Bounded memory whatever the input (issue 12, §6): 100,000 distinct
//! workspaces, with ids of 512 characters, pass through one worker process,
//! and its resident memory afterwards stays under 64 MiB. None of them has a
//! stored connection, so each item costs no Google call: it creates the
//! workspace's access-token slot, finds no connection and dead-letters
//! (`[no_connection]`). What the per-workspace maps of a *successful* call
//! keep (circuit breakers, quota limiters) is outside this test.

use std::time::Duration;

use calendar_sync_tests::{GoogleWorld, count_in, enqueue_all, set_env, source_payload_upsert};

mod common;
use common::worker;
const WORKSPACES: usize = 100_000;

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

// Minutes long (100,000 items through a debug build), so kept out of the
// default `cargo test --workspace`; `.ci/run` runs it on its own with
// `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: run by .ci/run with --ignored"]
async fn a_hundred_thousand_workspaces_leave_the_worker_under_64_mib() {
    let (t, world) = GoogleWorld::with_database(0).await;
    let client = t.client().await;
    let rows: Vec<_> = (0..WORKSPACES)
        .map(|i| {
            let ws = format!("{i:0>512}");
            (
                "UPSERT_EVENT".to_owned(),
                source_payload_upsert(&ws, "task", "v1"),
            )
        })
        .collect();
    let mut env = world.worker_env(&t.url());
    set_env(&mut env, "CALENDAR_SYNC_SHUTDOWN_GRACE_MS", "1000");
    let mut worker = worker("bounded", &env);
    let started = std::time::Instant::now();
    let mut peak = 0;
    for chunk in rows.chunks(10_000) {
        enqueue_all(&client, chunk).await;
        peak = peak.max(rss_kib(worker.pid()));
    }
    drop(rows);
    // Every 2 s, through the partial indexes: a count of the whole outbox
    // (100,000 rows of half a kilobyte of ids) would compete with the worker.
    loop {
        let left: i64 = client
            .query_one(
                "SELECT (SELECT count(*) FROM sync_outbox WHERE status = 'PENDING')
                      + (SELECT count(*) FROM sync_outbox WHERE status = 'PROCESSING')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{left} rows left"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(
        count_in(&client, &["DEAD_LETTER"]).await,
        i64::try_from(WORKSPACES).unwrap()
    );
    let after = rss_kib(worker.pid());
    let took = started.elapsed();
    worker.terminate(Duration::from_secs(10)).await;
    println!(
        "FIGURES bounded_memory: {WORKSPACES} workspaces (512-character ids) in {took:?}; \
         RSS {} KiB afterwards, {} KiB peak while enqueueing",
        after,
        peak.max(after)
    );
    assert!(
        after < 64 * 1024,
        "RSS {after} KiB after {WORKSPACES} workspaces"
    );
}
