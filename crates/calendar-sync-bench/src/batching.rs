//! Scenario `google-batch`: single calls against Google's batch endpoint
//! (`CALENDAR_SYNC_GOOGLE_BATCH_MAX`), one run each, the same worker binary and fake.
//!
//! The fake runs in this process (its request log and connection count are read
//! directly); the worker runs as its own process (`calendar-sync-worker run`), so its CPU
//! is its own. Grid: the fake's latency at 20, 100 and 250 ms, the quotas at Google's
//! defaults (600 a minute per user, 10,000 per project) and at 10x, each with batching off
//! and at 50. Two workloads: 5,000 new items over 50 connections, and one REBUILD_ALL
//! writing 2,000 events on one calendar (its bindings and events prepared by a fast drain
//! that is not measured, then every event removed from the fake). At Google's quotas the
//! rebuild runs at 100 ms only: the per-user quota paces it, whatever the latency.

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use calendar_sync_tests::TestDb;
use fake_google::{ApiMethod, FakeGoogle};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio_postgres::Client;

use crate::footprint::{bin_dir, ensure_binaries, free_port, terminate, wait_port};
use crate::google_env::{CLIENT_ID, CLIENT_SECRET, KEY, seed_fake, store_connections};
use crate::load::backlog;
use crate::report::Report;
use crate::support::{cpu_seconds, machine, reset};

/// The batch size measured against single calls.
const BATCH: usize = 50;

/// The worker's default `CALENDAR_SYNC_CONCURRENCY`.
const DEFAULT_CONCURRENCY: usize = 32;
/// Items in flight where latency and quota leave room for more.
const WIDE_CONCURRENCY: usize = 256;

/// Google's default quotas per minute: per user, per project.
const GOOGLE_QUOTA: (u32, u32) = (600, 10_000);

#[derive(Clone, Copy)]
enum Workload {
    /// `items` new sources over `workspaces` connections.
    Drain { items: i64, workspaces: usize },
    /// One REBUILD_ALL that creates `events` events on one calendar.
    Rebuild { events: i64 },
}

impl Workload {
    fn label(self) -> String {
        match self {
            Self::Drain { items, workspaces } => {
                format!("drain {items} items / {workspaces} connections")
            }
            Self::Rebuild { events } => format!("REBUILD_ALL of {events} events"),
        }
    }

    fn workspaces(self) -> usize {
        match self {
            Self::Drain { workspaces, .. } => workspaces,
            Self::Rebuild { .. } => 1,
        }
    }

    fn items(self) -> i64 {
        match self {
            Self::Drain { items, .. } => items,
            Self::Rebuild { events } => events,
        }
    }
}

/// One run's figures.
struct Measured {
    seconds: f64,
    http_requests: usize,
    calls: usize,
    batches: usize,
    connections: u64,
    cpu_seconds: f64,
}

/// Runs the scenario.
pub async fn run(quick: bool) {
    ensure_binaries().await;
    let (latencies, quota_factors, drain, rebuild): (&[u64], &[u32], _, _) = if quick {
        (
            &[20],
            &[10],
            Workload::Drain {
                items: 200,
                workspaces: 10,
            },
            Workload::Rebuild { events: 100 },
        )
    } else {
        (
            &[20, 100, 250],
            &[1, 10],
            Workload::Drain {
                items: 5_000,
                workspaces: 50,
            },
            Workload::Rebuild { events: 2_000 },
        )
    };
    let t = TestDb::new().await;
    let m = machine(&t).await;
    let admin = t.client().await;
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for &factor in quota_factors {
        for workload in [drain, rebuild] {
            for &latency in latencies {
                // At Google's quotas a rebuild is paced by the per-user quota (10 writes a
                // second) whatever the latency: one latency shows it.
                if factor == 1 && matches!(workload, Workload::Rebuild { .. }) && latency != 100 {
                    continue;
                }
                // Batching cannot raise throughput at a given concurrency (each item is
                // still in flight for a round trip); where latency and quota allow more
                // items in flight, the drain is also run at a concurrency of 256.
                let wide = !quick
                    && factor > 1
                    && latency == 250
                    && matches!(workload, Workload::Drain { .. });
                for concurrency in [DEFAULT_CONCURRENCY, WIDE_CONCURRENCY] {
                    if concurrency == WIDE_CONCURRENCY && !wide {
                        continue;
                    }
                    let mut pair = Vec::new();
                    for batch in [0, BATCH] {
                        let o = run_case(&t, &admin, workload, latency, factor, batch, concurrency)
                            .await;
                        let items = workload.items() as f64;
                        println!(
                            "{} | {latency} ms | quota x{factor} | concurrency {concurrency} | batch {batch}: {:.1} s, {:.3} HTTP requests/item, {} connections, {:.2} ms CPU/item",
                            workload.label(),
                            o.seconds,
                            o.http_requests as f64 / items,
                            o.connections,
                            o.cpu_seconds * 1000.0 / items
                        );
                        json_rows.push(json!({
                            "workload": workload.label(), "latency_ms": latency,
                            "quota": format!("x{factor}"), "batch_max": batch,
                            "concurrency": concurrency,
                            "seconds": o.seconds, "http_requests": o.http_requests,
                            "calendar_calls": o.calls, "batch_requests": o.batches,
                            "http_requests_per_item": o.http_requests as f64 / items,
                            "tcp_connections": o.connections,
                            "worker_cpu_ms_per_item": o.cpu_seconds * 1000.0 / items,
                        }));
                        pair.push(o);
                    }
                    let (single, batched) = (&pair[0], &pair[1]);
                    let items = workload.items() as f64;
                    rows.push(vec![
                        workload.label(),
                        format!("{latency} ms"),
                        if factor == 1 {
                            "Google's".to_owned()
                        } else {
                            format!("{factor}x")
                        },
                        concurrency.to_string(),
                        format!(
                            "{:.2} / {:.2}",
                            single.http_requests as f64 / items,
                            batched.http_requests as f64 / items
                        ),
                        format!("{:.1} s / {:.1} s", single.seconds, batched.seconds),
                        format!(
                            "{:.2} / {:.2}",
                            single.cpu_seconds * 1000.0 / items,
                            batched.cpu_seconds * 1000.0 / items
                        ),
                        format!("{} / {}", single.connections, batched.connections),
                        if batched.batches == 0 {
                            "-".to_owned()
                        } else {
                            format!(
                                "{:.1}",
                                (batched.calls - (batched.http_requests - batched.batches)) as f64
                                    / batched.batches as f64
                            )
                        },
                    ]);
                }
            }
        }
    }
    let mut report = Report::new(
        "google-batch",
        "Google batch endpoint: single calls vs batches",
        &m,
        quick,
    );
    report.para(&format!(
        "Each row runs the same workload twice with the worker binary \
         (`calendar-sync-worker run`, its own process, at the default concurrency of 32 unless the row says otherwise): \
         `CALENDAR_SYNC_GOOGLE_BATCH_MAX=0` (single calls) / `={BATCH}`. The fake Google runs \
         in the bench process over plain HTTP/1.1 and answers every call (inside a batch or \
         not) after the given latency; the quotas are the worker's limiter \
         (`CALENDAR_SYNC_CONNECTION_REQUESTS_PER_MINUTE` / `_PROJECT_`), at Google's defaults \
         ({} / {} a minute) or ten times them. Time: first to last Calendar call. HTTP \
         requests: to the Calendar API (a batch counts once; token requests not at all). \
         CPU: the worker process's user + system time over the run, per item. Connections: \
         TCP connections the fake accepted. Batch size: calls per batch request, on average.",
        GOOGLE_QUOTA.0, GOOGLE_QUOTA.1
    ));
    report.table(
        &[
            "workload",
            "latency",
            "quota",
            "concurrency",
            "HTTP requests / item (single / batch)",
            "time",
            "worker CPU ms / item",
            "TCP connections",
            "calls per batch",
        ],
        &rows,
    );
    report.set("batch_max", json!(BATCH));
    report.set("runs", json!(json_rows));
    report.finish(quick);
}

async fn run_case(
    t: &TestDb,
    admin: &Client,
    workload: Workload,
    latency: u64,
    factor: u32,
    batch: usize,
    concurrency: usize,
) -> Measured {
    let started = std::time::Instant::now();
    reset(admin).await;
    admin
        .batch_execute(
            "TRUNCATE calendar_event_bindings, google_connections, calendar_sync_budget CASCADE",
        )
        .await
        .expect("clean");
    let workspaces = workload.workspaces();
    store_connections(t, workspaces).await;
    let g = FakeGoogle::start().await;
    seed_fake(&g, workspaces);
    if let Workload::Rebuild { events } = workload {
        // Bindings and events from a fast, unmeasured drain; then the events vanish.
        backlog(admin, events, 1, "r").await;
        let mut worker = start_worker(t, &g, 0, 1_000, DEFAULT_CONCURRENCY).await;
        wait_finished(admin).await;
        terminate(std::slice::from_mut(&mut worker)).await;
        for event in g.events(&crate::load::calendar_of(&crate::load::workspace(0))) {
            let id = event["id"].as_str().expect("id");
            g.purge_event(&crate::load::calendar_of(&crate::load::workspace(0)), id);
        }
        admin
            .batch_execute(
                "INSERT INTO sync_outbox (operation, payload) VALUES ('REBUILD_ALL', \
                 '{\"operation\":\"REBUILD_ALL\",\"workspaceId\":\"w0\",\"calendarId\":\"w0@example.com\"}');
                 TRUNCATE calendar_sync_budget",
            )
            .await
            .expect("enqueue the rebuild");
    } else {
        backlog(
            admin,
            workload.items(),
            i64::try_from(workspaces).expect("workspaces"),
            "d",
        )
        .await;
    }
    eprintln!("  set up in {:.1} s", started.elapsed().as_secs_f64());
    g.clear_requests();
    g.set_latency(Duration::from_millis(latency));
    let connections_before = g.connections_accepted();
    let mut worker = start_worker(t, &g, batch, factor, concurrency).await;
    let pid = worker.id().expect("pid").to_string();
    let cpu_before = cpu_seconds(&pid).unwrap_or(0.0);
    wait_finished(admin).await;
    let cpu = cpu_seconds(&pid).unwrap_or(0.0) - cpu_before;
    eprintln!("  drained at {:.1} s", started.elapsed().as_secs_f64());
    terminate(std::slice::from_mut(&mut worker)).await;
    eprintln!("  stopped at {:.1} s", started.elapsed().as_secs_f64());
    let requests: Vec<_> = g
        .requests()
        .into_iter()
        .filter(|r| !matches!(r.api_method, ApiMethod::Token | ApiMethod::Other))
        .collect();
    let times: Vec<SystemTime> = requests.iter().map(|r| r.at).collect();
    let seconds = match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) => b.duration_since(*a).unwrap_or_default().as_secs_f64(),
        _ => 0.0,
    };
    let measured = Measured {
        seconds,
        http_requests: requests.iter().filter(|r| r.batch.is_none()).count(),
        calls: requests
            .iter()
            .filter(|r| r.api_method != ApiMethod::Batch)
            .count(),
        batches: requests
            .iter()
            .filter(|r| r.api_method == ApiMethod::Batch)
            .count(),
        connections: g.connections_accepted() - connections_before,
        cpu_seconds: cpu,
    };
    g.shutdown().await;
    measured
}

/// Waits until nothing is PENDING or PROCESSING.
async fn wait_finished(admin: &Client) {
    loop {
        let left: i64 = admin
            .query_one(
                "SELECT count(*) FROM sync_outbox WHERE status IN ('PENDING', 'PROCESSING')",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The worker binary against the in-process fake, quotas at `factor` x Google's.
async fn start_worker(
    t: &TestDb,
    g: &FakeGoogle,
    batch: usize,
    factor: u32,
    concurrency: usize,
) -> Child {
    let http = free_port();
    let child = Command::new(bin_dir().join("calendar-sync-worker"))
        .arg("run")
        .env("DATABASE_URL", t.url())
        .env("GOOGLE_CLIENT_ID", CLIENT_ID)
        .env("GOOGLE_CLIENT_SECRET", CLIENT_SECRET)
        .env(
            "TOKEN_ENCRYPTION_KEY",
            base64::engine::general_purpose::STANDARD.encode(KEY),
        )
        .env("GOOGLE_CALENDAR_API_URL", g.calendar_base_url())
        .env("GOOGLE_OAUTH_TOKEN_URL", g.token_url())
        .env("CALENDAR_SYNC_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("CALENDAR_SYNC_GOOGLE_BATCH_MAX", batch.to_string())
        .env(
            "CALENDAR_SYNC_CONNECTION_REQUESTS_PER_MINUTE",
            (GOOGLE_QUOTA.0 * factor).to_string(),
        )
        .env(
            "CALENDAR_SYNC_PROJECT_REQUESTS_PER_MINUTE",
            (GOOGLE_QUOTA.1 * factor).to_string(),
        )
        .env("CALENDAR_SYNC_POLL_INTERVAL_MS", "100")
        .env("CALENDAR_SYNC_CONCURRENCY", concurrency.to_string())
        .env("RUST_LOG", "warn")
        .env("CALENDAR_SYNC_SHUTDOWN_GRACE_MS", "2000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start calendar-sync-worker");
    wait_port(http).await;
    child
}
