//! Scenario 7: footprint. The real worker binary (`calendar-sync-worker run`)
//! against the fake Google run as a process: RSS idle and while draining the
//! scenario-1 backlog, and total throughput with 1 and 4 worker processes.
//! The binary's limiter cannot be switched off (it is Google's quota), so the
//! engine's own scaling across processes is measured too, with child
//! processes of this binary draining into an in-memory calendar.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use calendar_sync::{Database, DrainerConfig, OutboxDrainer};
use calendar_sync_tests::{MemoryCalendar, TestDb};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_postgres::Client;

use crate::google_env::{CLIENT_ID, CLIENT_SECRET, KEY, refresh_token, store_connections};
use crate::load::{backlog, calendar_of, workspace};
use crate::report::{Report, f, verdict};
use crate::support::{cpu_seconds, machine, reset, rss_mib};

/// Target: idle RSS, MiB.
pub const TARGET_IDLE_MIB: f64 = 20.0;
/// Target: busy RSS, MiB.
pub const TARGET_BUSY_MIB: f64 = 64.0;
const WORKSPACES: usize = 20;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .expect("current exe")
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

/// Builds the worker and the fake in this profile's target directory.
pub(crate) async fn ensure_binaries() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "-q",
        "-p",
        "calendar-sync-worker",
        "-p",
        "fake-google",
    ]);
    if bin_dir().ends_with("release") {
        cmd.arg("--release");
    }
    let status = cmd.status().await.expect("run cargo build");
    assert!(
        status.success(),
        "cargo build of the worker and the fake failed"
    );
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub(crate) async fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_fake(port: u16) -> Child {
    let mut cmd = Command::new(bin_dir().join("fake-google"));
    cmd.arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--client")
        .arg(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    for i in 0..WORKSPACES {
        let ws = workspace(i);
        cmd.arg("--refresh-token")
            .arg(format!(
                "{}:{CLIENT_ID}:{}",
                refresh_token(&ws),
                calendar_of(&ws)
            ))
            .arg("--calendar")
            .arg(calendar_of(&ws));
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start fake-google");
    wait_port(port).await;
    child
}

async fn start_worker(t: &TestDb, fake_port: u16, processes: usize, concurrency: usize) -> Child {
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
        .env(
            "GOOGLE_CALENDAR_API_URL",
            format!("http://127.0.0.1:{fake_port}/calendar/v3/"),
        )
        .env(
            "GOOGLE_OAUTH_TOKEN_URL",
            format!("http://127.0.0.1:{fake_port}/token"),
        )
        .env("CALENDAR_SYNC_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("CALENDAR_SYNC_WORKER_PROCESSES", processes.to_string())
        .env("CALENDAR_SYNC_CONCURRENCY", concurrency.to_string())
        .env("RUST_LOG", "warn")
        // Stopping does not wait for in-flight items longer than this (measured
        // figures do not depend on it).
        .env("CALENDAR_SYNC_SHUTDOWN_GRACE_MS", "2000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start calendar-sync-worker");
    wait_port(http).await;
    child
}

/// SIGTERM to each (a graceful stop), then wait for all.
pub(crate) async fn terminate(children: &mut [Child]) {
    for child in children.iter() {
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
    }
    for child in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(40), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

async fn finished(admin: &Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM sync_outbox WHERE status NOT IN ('PENDING', 'PROCESSING')",
            &[],
        )
        .await
        .expect("count finished")
        .get(0)
}

/// RSS of each process sampled every 100 ms for `span`; returns the highest
/// sample per process.
async fn sample_rss(pids: &[u32], span: Duration) -> Vec<f64> {
    let mut max = vec![0.0f64; pids.len()];
    let end = Instant::now() + span;
    while Instant::now() < end {
        for (i, pid) in pids.iter().enumerate() {
            if let Some((rss, _)) = rss_mib(*pid) {
                max[i] = max[i].max(rss);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    max
}

struct BinaryRun {
    processes: usize,
    declared: usize,
    concurrency: usize,
    idle_rss: Vec<f64>,
    busy_rss: Vec<f64>,
    peak_hwm: Vec<f64>,
    cpu: Vec<f64>,
    rate: f64,
    calls_per_item: f64,
}

/// One run of the worker binary. `prefix` names its sources: the fake keeps
/// every event across runs, and a source drained again finds its event (same
/// id) there: its insert is refused (409) and adopted by an update, two calls
/// an item instead of one. So each run drains sources of its own.
async fn binary_run(
    t: &TestDb,
    admin: &Client,
    fake_port: u16,
    (processes, declared, concurrency): (usize, usize, usize),
    (items, prefix): (i64, &str),
    (idle_wait, span): (Duration, Duration),
) -> BinaryRun {
    reset(admin).await;
    let mut children = Vec::new();
    for _ in 0..processes {
        children.push(start_worker(t, fake_port, declared, concurrency).await);
    }
    let pids: Vec<u32> = children.iter().filter_map(Child::id).collect();
    tokio::time::sleep(idle_wait).await;
    let idle_rss = pids
        .iter()
        .map(|p| rss_mib(*p).map_or(f64::NAN, |r| r.0))
        .collect();
    let calls_before = api_calls(fake_port).await;
    backlog(
        admin,
        items,
        i64::try_from(WORKSPACES).expect("workspaces"),
        prefix,
    )
    .await;
    let before = finished(admin).await;
    let cpu_before: Vec<f64> = pids
        .iter()
        .map(|p| cpu_seconds(&p.to_string()).unwrap_or(0.0))
        .collect();
    let busy_rss = sample_rss(&pids, span).await;
    let cpu = pids
        .iter()
        .zip(&cpu_before)
        .map(|(p, b)| cpu_seconds(&p.to_string()).unwrap_or(0.0) - b)
        .collect();
    let done = finished(admin).await - before;
    let peak_hwm = pids
        .iter()
        .map(|p| rss_mib(*p).map_or(f64::NAN, |r| r.1))
        .collect();
    terminate(&mut children).await;
    // Every item is a new source: one insert each, or the run measured
    // something else than the limiter (its sources' events existed already).
    let calls = api_calls(fake_port).await - calls_before;
    let completed: i64 = admin
        .query_one(
            "SELECT count(*) FROM sync_outbox WHERE status = 'COMPLETED'",
            &[],
        )
        .await
        .expect("count completed")
        .get(0);
    // Each process also asks once per calendar what its id is (calendars.get).
    let resolutions = i64::try_from(processes * WORKSPACES).expect("resolutions");
    let calls_per_item = calls.saturating_sub(resolutions) as f64 / completed.max(1) as f64;
    assert!(
        completed > 0 && calls_per_item < 1.05,
        "{calls} Google calls ({resolutions} of them calendars.get at most) for {completed} \
         items of new sources: not one insert each"
    );
    BinaryRun {
        processes,
        declared,
        concurrency,
        idle_rss,
        busy_rss,
        peak_hwm,
        cpu,
        rate: done as f64 / span.as_secs_f64(),
        calls_per_item,
    }
}

/// Engine processes (this binary's `engine-worker`) draining `items` into
/// in-memory calendars: items/s.
async fn engine_processes(t: &TestDb, admin: &Client, processes: usize, items: i64) -> f64 {
    reset(admin).await;
    let mut children = Vec::new();
    for _ in 0..processes {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args(["engine-worker", "--url", &t.url(), "--concurrency", "32"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start engine worker");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines.next_line().await.expect("read").unwrap_or_default();
        assert_eq!(ready, "ready", "engine worker did not start");
        children.push(child);
    }
    let started = Instant::now();
    backlog(
        admin,
        items,
        i64::try_from(WORKSPACES).expect("workspaces"),
        "e",
    )
    .await;
    while finished(admin).await < items {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "engine workers too slow"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = items as f64 / started.elapsed().as_secs_f64();
    for child in &mut children {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    rate
}

/// `engine-worker --url URL --concurrency N`: one drainer into an in-memory
/// calendar; prints `ready`, drains until standard input closes.
pub async fn engine_worker(args: &[String]) {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let url = value("--url").expect("--url");
    let concurrency: usize = value("--concurrency")
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let db = Database::connect(&url, crate::support::pool_size(concurrency)).expect("db");
    let config = DrainerConfig {
        concurrency,
        ..DrainerConfig::default()
    };
    let drainer = OutboxDrainer::new(db, MemoryCalendar::new(), config).expect("drainer");
    let handle = drainer.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("ready");
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
    })
    .await;
    let report = handle.stop().await;
    println!("{report:?}");
}

/// `GET path` on 127.0.0.1:`port`: the response body.
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
        .split_once("\r\n\r\n")
        .map_or(response.clone(), |(_, body)| body.to_owned())
}

/// Calendar API calls the fake has answered so far (token requests aside).
async fn api_calls(fake_port: u16) -> i64 {
    let stats: serde_json::Value =
        serde_json::from_str(&http_get(fake_port, "/_fake/stats").await).expect("fake stats");
    stats["calls"]
        .as_object()
        .expect("calls")
        .iter()
        .filter(|(method, _)| method.as_str() != "Token")
        .map(|(_, n)| n.as_i64().unwrap_or(0))
        .sum()
}

/// Runs the scenario.
pub async fn run(quick: bool) {
    let (items, span, engine_items) = if quick {
        (1_000, Duration::from_secs(1), 200)
    } else {
        (10_000, Duration::from_secs(20), 5_000)
    };
    let build = Instant::now();
    ensure_binaries().await;
    println!(
        "(building calendar-sync-worker and fake-google: {:.1} s)",
        build.elapsed().as_secs_f64()
    );
    let t = TestDb::new().await;
    let m = machine(&t).await;
    let admin = t.client().await;
    store_connections(&t, WORKSPACES).await;
    let fake_port = free_port();
    let mut fake = start_fake(fake_port).await;
    let idle_wait = Duration::from_millis(if quick { 500 } else { 1_500 });
    let times = (idle_wait, span);
    let one = binary_run(&t, &admin, fake_port, (1, 1, 32), (items, "f1-"), times).await;
    let four = binary_run(&t, &admin, fake_port, (4, 4, 32), (items, "f4-"), times).await;
    // More items in flight per process than the default.
    let four_deep = binary_run(&t, &admin, fake_port, (4, 4, 128), (items, "f4c-"), times).await;
    // Each process believing it has the whole project budget (what a wrong
    // WORKER_PROCESSES would do): shows whether anything but the limiter binds.
    let greedy = binary_run(&t, &admin, fake_port, (4, 1, 32), (items, "f4w-"), times).await;
    let _ = fake.kill().await;
    let engine_one = engine_processes(&t, &admin, 1, engine_items).await;
    let engine_four = engine_processes(&t, &admin, 4, engine_items).await;

    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    let mut report = Report::new("footprint", "Scenario 7: footprint", &m, quick);
    report.para(&format!(
        "`target/release/calendar-sync-worker run` at its defaults (concurrency 32, pool 20, \
         limiter 600/min per connection and 10,000/min per project, each divided by \
         CALENDAR_SYNC_WORKER_PROCESSES) against `fake-google` run as a process (zero \
         latency, no quota), {WORKSPACES} workspaces. Idle: {:.1} s after start, empty outbox. \
         Busy: the scenario-1 backlog ({items} UPSERTs of new sources over {WORKSPACES} \
         workspaces) inserted, RSS sampled every 100 ms for {} s; throughput = rows finished \
         in that span. RSS from /proc/PID/status (VmRSS; VmHWM = peak).",
        idle_wait.as_secs_f64(),
        span.as_secs()
    ));
    report.table(
        &[
            "worker processes",
            "idle RSS MiB (each)",
            "busy RSS MiB (max sample)",
            "peak VmHWM MiB",
            "total RSS busy MiB",
            "CPU s while busy (each)",
            "items/s (all processes)",
            "Google calls per item",
        ],
        &[&one, &four, &four_deep, &greedy]
            .iter()
            .map(|r| {
                vec![
                    format!(
                        "{} (WORKER_PROCESSES={}, concurrency {})",
                        r.processes, r.declared, r.concurrency
                    ),
                    r.idle_rss
                        .iter()
                        .map(|v| f(*v, 1))
                        .collect::<Vec<_>>()
                        .join(", "),
                    f(max(&r.busy_rss), 1),
                    f(max(&r.peak_hwm), 1),
                    f(sum(&r.busy_rss), 1),
                    r.cpu
                        .iter()
                        .map(|v| f(*v, 2))
                        .collect::<Vec<_>>()
                        .join(", "),
                    f(r.rate, 0),
                    f(r.calls_per_item, 2),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let idle = max(&one.idle_rss);
    let busy = max(&one.peak_hwm);
    report.table(
        &["target", "measured", "verdict"],
        &[
            vec![
                format!("idle RSS < {TARGET_IDLE_MIB} MB"),
                format!("{} MiB", f(idle, 1)),
                verdict(idle < TARGET_IDLE_MIB),
            ],
            vec![
                format!("busy RSS < {TARGET_BUSY_MIB} MB"),
                format!("{} MiB (peak)", f(busy, 1)),
                verdict(busy < TARGET_BUSY_MIB),
            ],
        ],
    );
    report.para(&format!(
        "The binary's throughput is its limiter's: 10,000/min per project = 166.7 calls/s, \
         divided among the processes: 4 processes (WORKER_PROCESSES=4) drain {:.0} items/s in \
         total against {:.0} for one ({:.2}x); more processes add availability, not quota. \
         At concurrency 128 the 4 processes drain {:.0} items/s. \
         Each run drains sources of its own (the fake keeps every event across runs, and a \
         source drained again finds its event there: insert refused with 409, then adopted \
         by an update, two calls an item), so every item costs one insert (column: calendar \
         calls the fake answered / items completed). \
         With WORKER_PROCESSES=1 in each of 4 processes (each spending the whole project \
         budget, which would overrun Google's quota 4x) they drain {:.0} items/s. Engine scaling \
         without the limiter, child processes of this binary each running one drainer \
         (concurrency 32) into an in-memory calendar, {engine_items} items: 1 process \
         {engine_one:.0} items/s, 4 processes {engine_four:.0} items/s ({:.2}x) on this \
         2-core machine, where the processes and PostgreSQL share the same two cores and \
         claims are serialised by the claim mutex.",
        four.rate,
        one.rate,
        four.rate / one.rate,
        four_deep.rate,
        greedy.rate,
        engine_four / engine_one
    ));
    report.set("workspaces", json!(WORKSPACES));
    report.set("busy_items", json!(items));
    report.set("busy_span_s", json!(span.as_secs_f64()));
    report.set(
        "calendar",
        json!("calendar-sync-worker -> fake-google process"),
    );
    for (key, r) in [
        ("one_process", &one),
        ("four_processes", &four),
        ("four_processes_concurrency_128", &four_deep),
        ("four_processes_each_whole_budget", &greedy),
    ] {
        report.set(
            key,
            json!({"processes": r.processes, "worker_processes_setting": r.declared, "concurrency": r.concurrency, "idle_rss_mib": r.idle_rss, "busy_rss_mib": r.busy_rss,
                   "peak_hwm_mib": r.peak_hwm, "busy_cpu_s": r.cpu, "items_per_s": r.rate,
                   "google_calls_per_item": r.calls_per_item}),
        );
    }
    report.set(
        "engine_processes",
        json!({"items": engine_items, "one_items_per_s": engine_one, "four_items_per_s": engine_four,
               "calendar": "MemoryCalendar in each child process"}),
    );
    report.set(
        "targets",
        json!({"idle_mib": TARGET_IDLE_MIB, "busy_mib": TARGET_BUSY_MIB}),
    );
    report.finish(quick);
}
