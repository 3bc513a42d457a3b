//! Many tenants, one Google quota, real `calendar-sync-worker run` processes
//! (issue #12 §1-§3, #13 §6.1): a busy tenant never delays another, workers
//! joining and leaving share the quota through PostgreSQL without a 403/429,
//! a REBUILD_ALL's fence never freezes the queue, and nothing of a calendar
//! runs while its REBUILD_ALL is in flight.
//!
//! Quota windows are scaled from a minute down to 12 s or 30 s (same rates: 10 calls/s
//! per user, 166.7/s for the project), so that a window's worth of steady
//! state fits in a short test. Each scenario prints a `FIGURES` line.

use std::time::{Duration, Instant};

use calendar_sync_tests::{
    Audit, GoogleWorld, TestDb, WorkerProcess, enqueue_all, namespace_locks, rebuild, set_env,
    source_payload_upsert, wait_until,
};
use fake_google::{Fault, FaultKind, QuotaConfig};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_calendar-sync-worker");

/// One heavy scenario at a time: on two cores, several at once would measure
/// the scheduler.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Google's quotas over a 12 s window: 120 per user, 2,000 per project.
const WINDOW: Duration = Duration::from_secs(12);

/// For workers joining: a window long enough that their first calls' extra
/// lag (each connection's first access token) stays within the buckets' lag
/// allowance of a sixtieth of the window, as it does in a real minute.
const JOIN_WINDOW: Duration = Duration::from_secs(30);

fn quota_over(window: Duration) -> QuotaConfig {
    QuotaConfig::google().scaled_to(window)
}

fn quota() -> QuotaConfig {
    quota_over(WINDOW)
}

fn worker(name: &str, env: &[(String, String)]) -> WorkerProcess {
    WorkerProcess::spawn(name, std::path::Path::new(BIN), &["run"], env)
}

/// A worker's environment with the fake's quotas over `window` configured.
fn quota_env(world: &GoogleWorld, url: &str, window: Duration) -> Vec<(String, String)> {
    let q = quota_over(window);
    let mut env = world.worker_env(url);
    set_env(
        &mut env,
        "CALENDAR_SYNC_QUOTA_WINDOW_MS",
        &window.as_millis().to_string(),
    );
    set_env(
        &mut env,
        "CALENDAR_SYNC_CONNECTION_REQUESTS_PER_MINUTE",
        &q.per_user.to_string(),
    );
    set_env(
        &mut env,
        "CALENDAR_SYNC_PROJECT_REQUESTS_PER_MINUTE",
        &q.per_project.to_string(),
    );
    env
}

fn upserts(workspace: &str, range: std::ops::Range<usize>, tag: &str) -> Vec<(String, Value)> {
    range
        .map(|i| {
            (
                "UPSERT_EVENT".to_owned(),
                source_payload_upsert(workspace, &format!("{tag}-{i}"), &format!("{tag} {i}")),
            )
        })
        .collect()
}

/// Calendar API calls for `calendar` the fake received in the `span` after
/// `from`.
fn calendar_calls_between(
    world: &GoogleWorld,
    calendar: &str,
    from: std::time::SystemTime,
    span: Duration,
) -> usize {
    let encoded = calendar.replace('@', "%40");
    world
        .google
        .requests()
        .iter()
        .filter(|r| r.api_method != fake_google::ApiMethod::Token)
        .filter(|r| r.path.contains(calendar) || r.path.contains(&encoded))
        .filter(|r| r.at >= from && r.at < from + span)
        .count()
}

/// Calendar API calls the fake received within `span` of the first one.
fn calls_within(world: &GoogleWorld, span: Duration) -> usize {
    let calls: Vec<_> = world
        .google
        .requests()
        .into_iter()
        .filter(|r| r.api_method != fake_google::ApiMethod::Token)
        .map(|r| r.at)
        .collect();
    let Some(first) = calls.iter().min().copied() else {
        return 0;
    };
    calls.iter().filter(|at| **at < first + span).count()
}

/// Seconds from commit to COMPLETED of the slowest of `workspace`'s rows, once
/// all are COMPLETED (within `timeout`), else the panic names the statuses.
async fn slowest_pickup(t: &TestDb, workspace: &str, n: i64, timeout: Duration) -> f64 {
    let ws = workspace.to_owned();
    wait_until(
        &t.config,
        timeout,
        &format!("{n} rows of {workspace} COMPLETED"),
        move |c| {
            let ws = ws.clone();
            async move {
                c.query_one(
                    "SELECT count(*) FROM sync_outbox WHERE workspace_id = $1 AND status = 'COMPLETED'",
                    &[&ws],
                )
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) >= n)
            }
        },
    )
    .await;
    t.client()
        .await
        .query_one(
            "SELECT extract(epoch FROM max(processed_at - created_at))::float8
               FROM sync_outbox WHERE workspace_id = $1",
            &[&workspace],
        )
        .await
        .expect("pickup")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_tenant_does_not_hold_the_others_hostage() {
    let _heavy = HEAVY.lock().await;
    let t = TestDb::new().await;
    let world = GoogleWorld::start(&t.db, 2).await;
    world.google.set_latency(Duration::from_millis(20));
    world.google.set_quota(Some(quota()));
    let client = t.client().await;
    // Tenant A: 3,000 items, 25 windows of its own quota.
    enqueue_all(&client, &upserts("ws0", 0..3000, "a")).await;
    let mut w = worker("noisy", &quota_env(&world, &t.url(), WINDOW));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Tenant B: 10 items, committed while A's backlog drains.
    let b_committed = std::time::SystemTime::now();
    enqueue_all(&client, &upserts("ws1", 0..10, "b")).await;
    let slowest = slowest_pickup(&t, "ws1", 10, Duration::from_secs(15)).await;
    // A's pace over 20 s of steady state, from B's commit on.
    let span = Duration::from_secs(20);
    tokio::time::sleep(span + Duration::from_secs(1)).await;
    let a_done = calendar_calls_between(&world, "ws0@example.com", b_committed, span);
    let allowed = f64::from(quota().per_user) * span.as_secs_f64() / WINDOW.as_secs_f64();
    let share = a_done as f64 / allowed;
    let rejections = world.google.quota_rejections();
    println!(
        "FIGURES noisy_neighbour: B slowest commit->COMPLETED {slowest:.3} s; \
         A {a_done} calls in {span:?} = {:.1} % of its quota; quota rejections {rejections}",
        share * 100.0
    );
    let (_, status) = w.terminate(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", w.log_tail(20));
    assert!(slowest <= 2.0, "B waited {slowest:.3} s behind A");
    assert_eq!(rejections, 0, "the fake rejected calls over quota");
    assert!(share >= 0.95, "A used {:.1} % of its quota", share * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_coming_and_going_share_the_project_quota() {
    let _heavy = HEAVY.lock().await;
    let t = TestDb::new().await;
    // 40 tenants at 10/s each could do 400/s: the project's 166.7/s binds.
    let world = GoogleWorld::start(&t.db, 40).await;
    world.google.set_latency(Duration::from_millis(20));
    world.google.set_quota(Some(quota_over(JOIN_WINDOW)));
    let client = t.client().await;
    let rows: Vec<(String, Value)> = (0..40)
        .flat_map(|w| upserts(&format!("ws{w}"), 0..160, "s"))
        .collect();
    let items = enqueue_all(&client, &rows).await as i64;
    // Each with its own HTTP port.
    let start = |name: &str| worker(name, &quota_env(&world, &t.url(), JOIN_WINDOW));
    let begun = Instant::now();
    let mut workers = vec![start("come-0")];
    tokio::time::sleep(Duration::from_secs(6)).await;
    workers.push(start("come-1"));
    workers.push(start("come-2"));
    tokio::time::sleep(Duration::from_secs(8)).await;
    workers[1].kill9();
    // Whatever is left drains at two workers.
    wait_until(
        &t.config,
        Duration::from_secs(90),
        "everything finished",
        move |c| async move {
            c.query_one(
                "SELECT count(*) FROM sync_outbox WHERE status IN ('PENDING', 'PROCESSING')",
                &[],
            )
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 0)
        },
    )
    .await;
    let took = begun.elapsed();
    // Calls Google received over the first window from the first call
    // (every tenant still has a backlog then: round robin drains them evenly),
    // 1 -> 3 -> 2 workers and the kill included.
    let span = JOIN_WINDOW;
    let done = calls_within(&world, span);
    let allowed = f64::from(quota_over(JOIN_WINDOW).per_project);
    let share = done as f64 / allowed;
    let rejections = world.google.quota_rejections();
    for w in workers.iter_mut().filter(|w| w.name != "come-1") {
        let (_, status) = w.terminate(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(0), "{}: {}", w.name, w.log_tail(20));
    }
    assert_eq!(namespace_locks(&client).await, 0);
    let audit = Audit::run(&client, &world.google, &world.calendars()).await;
    assert_eq!(audit.items as i64, items);
    println!(
        "FIGURES workers_come_and_go: {items} items in {took:?}; {done} calls in the first \
         {span:?} = {:.1} % of the project quota; quota rejections {rejections}",
        share * 100.0
    );
    audit.print_and_check(
        "workers_come_and_go",
        "1 -> 3 -> 2 processes, one kill -9",
        "fake enforcing 300/user and 5,000/project per 30 s",
        0,
    );
    assert_eq!(rejections, 0, "the fake rejected calls over quota");
    assert!(share >= 0.95, "{:.1} % of the project quota", share * 100.0);
}

/// Starts a REBUILD_ALL of ws0 whose list call hangs, and waits until it is
/// in flight.
async fn hanging_rebuild(t: &TestDb, world: &GoogleWorld) -> WorkerProcess {
    // Its list call hangs; other GETs (each worker's calendars.get of a
    // calendar it meets first) answer.
    world.google.inject(
        Fault::new(FaultKind::Hang)
            .method("GET")
            .path(&format!("{}/events", GoogleWorld::calendar_of("ws0")))
            .times(1_000),
    );
    t.insert(
        "REBUILD_ALL",
        rebuild("ws0", &GoogleWorld::calendar_of("ws0")),
    )
    .await;
    let w = worker("fenced", &world.worker_env(&t.url()));
    wait_until(
        &t.config,
        Duration::from_secs(20),
        "the REBUILD_ALL in flight",
        |c| async move {
            c.query_one(
                "SELECT count(*) FROM sync_outbox WHERE operation = 'REBUILD_ALL' AND status = 'PROCESSING'",
                &[],
            )
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 1)
        },
    )
    .await;
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_fenced_behind_a_hung_rebuild_do_not_freeze_the_queue() {
    let _heavy = HEAVY.lock().await;
    let t = TestDb::new().await;
    let world = GoogleWorld::start(&t.db, 2).await;
    let client = t.client().await;
    let mut w = hanging_rebuild(&t, &world).await;
    enqueue_all(&client, &upserts("ws0", 0..5000, "fenced")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    enqueue_all(&client, &upserts("ws1", 0..1, "free")).await;
    let slowest = slowest_pickup(&t, "ws1", 1, Duration::from_secs(10)).await;
    println!("FIGURES fenced_5000: the other workspace's item took {slowest:.3} s");
    assert!(slowest <= 2.0, "{slowest:.3} s");
    let fenced: i64 = client
        .query_one(
            "SELECT count(*) FROM sync_outbox WHERE workspace_id = 'ws0' AND status = 'PENDING'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fenced, 5000, "the fence held");
    w.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_a_calendar_runs_while_its_rebuild_is_in_flight() {
    let _heavy = HEAVY.lock().await;
    let t = TestDb::new().await;
    let world = GoogleWorld::start(&t.db, 2).await;
    let client = t.client().await;
    // A dead letter older than the REBUILD_ALL.
    let dead = t
        .insert(
            "UPSERT_EVENT",
            source_payload_upsert("ws0", "old", "old dead letter"),
        )
        .await;
    client
        .execute(
            "UPDATE sync_outbox SET status = 'DEAD_LETTER', attempts = 5, processed_at = now()
              WHERE id = $1",
            &[&dead],
        )
        .await
        .unwrap();
    let mut w = hanging_rebuild(&t, &world).await;
    let requeued: i32 = client
        .query_one(
            "SELECT requeue_dead_letter_items(ARRAY[$1::uuid])",
            &[&dead],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(requeued, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status: String = client
        .query_one("SELECT status FROM sync_outbox WHERE id = $1", &[&dead])
        .await
        .unwrap()
        .get(0);
    w.kill9();
    assert_eq!(
        status, "PENDING",
        "the requeued item waits for the REBUILD_ALL in flight"
    );
}
