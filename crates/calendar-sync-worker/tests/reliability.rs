//! Reliability of the real `calendar-sync-worker run` processes against a real
//! PostgreSQL and the fake Google: kill -9 and restart, four workers at once,
//! terminated database sessions, a PostgreSQL restart, SIGTERM under load, and
//! no secret in what the binary prints. Every scenario ends with an audit of
//! the outbox against the fake Google's live events (see `Audit`) and prints a
//! `FIGURES` line (run with `--nocapture` to see it); docs/guarantees.md
//! quotes them.
//!
//! The heavy scenarios take a shared lock so that they run one at a time: on
//! a two-core machine, several of them at once would measure the scheduler.

use std::time::Duration;

use calendar_sync_tests::{
    Audit, ClusterSetup, GoogleWorld, Rng, StopMode, TestDb, WORKER_CLIENT_SECRET, WORKER_KEY_B64,
    WorkerProcess, connect, count_in, enqueue_all, finished, namespace_locks, set_env,
    source_payload_cancel, source_payload_upsert, start_cluster, wait_until,
};
use serde_json::Value;

mod common;
use common::worker;

/// One heavy scenario at a time (see the module docs).
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn upserts(
    world: &GoogleWorld,
    sources: std::ops::Range<usize>,
    version: &str,
) -> Vec<(String, Value)> {
    sources
        .map(|i| {
            let ws = &world.workspaces[i % world.workspaces.len()];
            (
                "UPSERT_EVENT".to_owned(),
                source_payload_upsert(ws, &format!("task-{i}"), &format!("task {i} {version}")),
            )
        })
        .collect()
}

fn cancels(world: &GoogleWorld, sources: std::ops::Range<usize>) -> Vec<(String, Value)> {
    sources
        .map(|i| {
            let ws = &world.workspaces[i % world.workspaces.len()];
            (
                "CANCEL_EVENT".to_owned(),
                source_payload_cancel(ws, &format!("task-{i}")),
            )
        })
        .collect()
}

/// Waits until at least `n` rows are finished.
async fn until_finished(t: &TestDb, n: i64, timeout: Duration) {
    wait_until(
        &t.config,
        timeout,
        &format!("{n} finished rows"),
        |c| async move { finished(&c).await >= n },
    )
    .await;
}

/// Waits until some row is in flight, then returns at once.
async fn until_in_flight(t: &TestDb) {
    wait_until(
        &t.config,
        Duration::from_secs(30),
        "a row in flight",
        |c| async move { count_in(&c, &["PROCESSING"]).await > 0 },
    )
    .await;
}

/// Kills the worker with SIGKILL while a row is in flight and waits until its
/// locks have vanished with its connection; returns the rows it left
/// PROCESSING (orphans, until another worker's poll takes them back).
async fn kill9_in_flight(t: &TestDb, worker: &mut WorkerProcess) -> i64 {
    until_in_flight(t).await;
    worker.kill9();
    wait_until(
        &t.config,
        Duration::from_secs(10),
        "locks released",
        |c| async move { namespace_locks(&c).await == 0 },
    )
    .await;
    count_in(&t.client().await, &["PROCESSING"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_and_restart_lose_and_duplicate_nothing() {
    let _heavy = HEAVY.lock().await;
    let started = std::time::Instant::now();
    let (t, world) = GoogleWorld::with_database(40).await;
    world.google.set_latency(Duration::from_millis(15));
    let env = {
        let mut env = world.worker_env(&t.url());
        set_env(&mut env, "CALENDAR_SYNC_CONCURRENCY", "16");
        env
    };
    let client = t.client().await;
    // 2,000 items: 1,200 sources created, 500 of them updated while the first
    // worker runs, 300 cancelled while no worker runs at all.
    enqueue_all(&client, &upserts(&world, 0..1200, "v1")).await;
    let mut first = worker("kill9-first", &env);
    until_finished(&t, 300, Duration::from_secs(60)).await;
    enqueue_all(&client, &upserts(&world, 0..500, "v2")).await;
    until_finished(&t, 700, Duration::from_secs(60)).await;
    let orphaned_first = kill9_in_flight(&t, &mut first).await;
    enqueue_all(&client, &cancels(&world, 500..800)).await;

    let mut second = worker("kill9-second", &env);
    until_finished(&t, 1400, Duration::from_secs(60)).await;
    let orphaned_second = kill9_in_flight(&t, &mut second).await;

    let mut third = worker("kill9-third", &env);
    until_finished(&t, 2000, Duration::from_secs(120)).await;
    let (_, status) = third.terminate(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", third.log_tail(20));
    assert!(
        orphaned_first + orphaned_second > 0,
        "the kills hit rows in flight"
    );
    if orphaned_second > 0 {
        assert!(
            third.log().contains("recovered rows of a worker that died"),
            "the restarted worker took the orphans back: {}",
            third.log_tail(20)
        );
    }
    assert_eq!(namespace_locks(&client).await, 0);

    let audit = Audit::run(&client, &world.google, &world.calendars()).await;
    assert_eq!(audit.items, 2000);
    audit.print_and_check(
        "kill_9",
        "3 processes in turn (concurrency 16)",
        &format!(
            "2 x kill -9 with {orphaned_first}+{orphaned_second} rows in flight, Google latency 15 ms"
        ),
        0,
    );
    assert!(
        audit.max_attempts <= 3,
        "no retry storm: {}",
        audit.max_attempts
    );
    println!("kill_9 took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_end_with_the_last_operation_of_every_source() {
    let _heavy = HEAVY.lock().await;
    let started = std::time::Instant::now();
    let (t, world) = GoogleWorld::with_database(20).await;
    world.google.set_latency(Duration::from_millis(5));
    let mut workers: Vec<WorkerProcess> = (0..4)
        .map(|i| {
            let mut env = world.worker_env(&t.url());
            set_env(&mut env, "CALENDAR_SYNC_WORKER_PROCESSES", "4");
            worker(&format!("four-{i}"), &env)
        })
        .collect();
    // 5,000 items (RELIABILITY_FOUR_WORKERS_ITEMS to change it) on one source
    // per 20 items: upserts with a new title every time and one cancel in
    // five, in ten waves while the workers drain.
    let items: usize = std::env::var("RELIABILITY_FOUR_WORKERS_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let sources = (items / 20).max(1) as u64;
    let client = t.client().await;
    let mut rng = Rng::new(0x5eed_cafe);
    for wave in 0..10 {
        let rows: Vec<(String, Value)> = (0..items / 10)
            .map(|n| {
                let s = usize::try_from(rng.below(sources)).unwrap();
                let ws = &world.workspaces[s % world.workspaces.len()];
                let source = format!("task-{s}");
                if rng.below(5) == 0 {
                    (
                        "CANCEL_EVENT".to_owned(),
                        source_payload_cancel(ws, &source),
                    )
                } else {
                    let title = format!("task {s} wave {wave} #{n}");
                    (
                        "UPSERT_EVENT".to_owned(),
                        source_payload_upsert(ws, &source, &title),
                    )
                }
            })
            .collect();
        enqueue_all(&client, &rows).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let items = i64::try_from(items / 10 * 10).unwrap();
    until_finished(&t, items, Duration::from_secs(180)).await;
    for w in &mut workers {
        let (took, status) = w.terminate(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(0), "{}: {}", w.name, w.log_tail(20));
        assert!(took < Duration::from_secs(6), "{}: {took:?}", w.name);
    }
    assert_eq!(namespace_locks(&client).await, 0);
    let audit = Audit::run(&client, &world.google, &world.calendars()).await;
    assert_eq!(
        (i64::try_from(audit.items).unwrap(), audit.sources),
        (items, sources as usize)
    );
    audit.print_and_check(
        "four_workers",
        "4 processes at once (default concurrency, 32)",
        "none: concurrency only; 80% upserts, 20% cancels, 10 waves while draining",
        0,
    );
    assert_eq!(audit.max_attempts, 1, "no item needed a second attempt");
    println!("four_workers took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_database_sessions_are_survived() {
    let _heavy = HEAVY.lock().await;
    let started = std::time::Instant::now();
    let (t, world) = GoogleWorld::with_database(20).await;
    world.google.set_latency(Duration::from_millis(10));
    let client = t.client().await;
    enqueue_all(&client, &upserts(&world, 0..800, "v1")).await;
    enqueue_all(&client, &upserts(&world, 0..200, "v2")).await;
    drop(client);
    let mut workers: Vec<WorkerProcess> = (0..2)
        .map(|i| worker(&format!("terminate-{i}"), &world.worker_env(&t.url())))
        .collect();
    let mut killed = Vec::new();
    // The lock connections (application_name `... (lock)`), then every
    // session of the database (pools included), then the lock connections again.
    for (at, filter) in [
        (150, "application_name LIKE '% (lock)'"),
        (400, "true"),
        (650, "application_name LIKE '% (lock)'"),
    ] {
        until_finished(&t, at, Duration::from_secs(60)).await;
        until_in_flight(&t).await;
        let n = t.kill_sessions(filter).await;
        assert!(n >= 1, "terminated {filter}");
        killed.push(n);
    }
    until_finished(&t, 1000, Duration::from_secs(120)).await;
    let client = t.client().await;
    for w in &mut workers {
        assert!(w.is_running(), "{} survived: {}", w.name, w.log_tail(20));
        let (_, status) = w.terminate(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(0), "{}", w.log_tail(20));
        assert!(w.log().contains("reconnecting"), "{}", w.log_tail(20));
    }
    assert_eq!(namespace_locks(&client).await, 0);
    let audit = Audit::run(&client, &world.google, &world.calendars()).await;
    audit.print_and_check(
        "pg_terminate_backend",
        "2 processes at once (default concurrency, 32)",
        &format!(
            "3 rounds of pg_terminate_backend: lock connections, every session, lock connections ({} sessions)",
            killed.iter().sum::<i64>()
        ),
        0,
    );
    assert!(audit.max_attempts <= 4, "{}", audit.max_attempts);
    println!("pg_terminate_backend took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_mid_run_is_survived() {
    let _heavy = HEAVY.lock().await;
    let started = std::time::Instant::now();
    let Some(mut cluster) = tokio::task::spawn_blocking(|| start_cluster(&ClusterSetup::default()))
        .await
        .unwrap()
        .expect("start a throwaway cluster")
    else {
        println!(
            "SKIPPED a_postgresql_restart_mid_run_is_survived: no initdb/pg_ctl (or no postgres \
             OS user to run them as root)"
        );
        return;
    };
    let config = cluster.config("postgres");
    let db = calendar_sync::Database::from_config(config.clone(), 4).unwrap();
    calendar_sync::migrate(&db).await.unwrap();
    let world = GoogleWorld::start(&db, 20).await;
    world.google.set_latency(Duration::from_millis(10));
    let client = connect(&config).await;
    let rows: Vec<(String, Value)> = (0..1000)
        .map(|i| {
            let ws = &world.workspaces[i % 20];
            (
                "UPSERT_EVENT".to_owned(),
                source_payload_upsert(ws, &format!("task-{i}"), &format!("task {i}")),
            )
        })
        .collect();
    enqueue_all(&client, &rows).await;
    drop(client);
    drop(db);
    let mut w = worker("pg-restart", &world.worker_env(&cluster.url("postgres")));
    let wait_for = |n: i64| {
        let config = config.clone();
        async move {
            wait_until(
                &config,
                Duration::from_secs(90),
                &format!("{n} finished"),
                |c| async move { finished(&c).await >= n },
            )
            .await;
        }
    };
    wait_for(300).await;
    // A clean restart (clients disconnected), then a crash (immediate stop:
    // recovery from the WAL at the next start).
    cluster.stop(StopMode::Fast).expect("stop the cluster");
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.restart().expect("start the cluster again");
    wait_for(650).await;
    cluster
        .stop(StopMode::Immediate)
        .expect("crash the cluster");
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.restart().expect("start the cluster again");
    wait_for(1000).await;
    assert!(w.is_running(), "the worker survived: {}", w.log_tail(20));
    let (_, status) = w.terminate(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", w.log_tail(20));
    let client = connect(&config).await;
    assert_eq!(namespace_locks(&client).await, 0);
    let audit = Audit::run(&client, &world.google, &world.calendars()).await;
    audit.print_and_check(
        "postgresql_restart",
        "1 process (default concurrency, 32)",
        "PostgreSQL restarted twice: pg_ctl stop -m fast, then -m immediate (crash)",
        0,
    );
    assert!(audit.max_attempts <= 4, "{}", audit.max_attempts);
    println!("postgresql_restart took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_within_the_grace_and_leaves_nothing_held() {
    let _heavy = HEAVY.lock().await;
    let (t, world) = GoogleWorld::with_database(10).await;
    let client = t.client().await;
    enqueue_all(&client, &upserts(&world, 0..400, "v1")).await;
    let mut env = world.worker_env(&t.url());
    set_env(&mut env, "CALENDAR_SYNC_SHUTDOWN_GRACE_MS", "1000");
    let mut first = worker("sigterm", &env);
    until_finished(&t, 50, Duration::from_secs(30)).await;
    // Google now answers writes after 4 s: whatever is in flight at SIGTERM
    // cannot finish within the 1 s grace and must be released.
    world
        .google
        .set_method_latency("POST", Duration::from_secs(4));
    world
        .google
        .set_method_latency("PUT", Duration::from_secs(4));
    // Claimed after the switch (the budget paces claims, so rows claimed
    // before it may all be fast ones waiting to be recorded).
    let switched = std::time::SystemTime::now();
    wait_until(
        &t.config,
        Duration::from_secs(20),
        "8 slow items in flight",
        move |c| async move {
            c.query_one(
                "SELECT count(*) FROM sync_outbox WHERE status = 'PROCESSING' AND updated_at >= $1",
                &[&switched],
            )
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) >= 8)
        },
    )
    .await;
    let (took, status) = first.terminate(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", first.log_tail(20));
    assert!(
        took < Duration::from_millis(1000 + 1500),
        "exited within the grace period (+ margin): {took:?}"
    );
    assert_eq!(count_in(&client, &["PROCESSING"]).await, 0);
    assert_eq!(namespace_locks(&client).await, 0, "no advisory lock left");
    let released: i64 = client
        .query_one(
            "SELECT count(*) FROM sync_outbox WHERE status = 'PENDING' AND last_error LIKE '[shutdown]%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(released >= 8, "in-flight items released: {released}");

    // A new worker finishes everything; the aborted inserts create no duplicate.
    world.google.set_method_latency("POST", Duration::ZERO);
    world.google.set_method_latency("PUT", Duration::ZERO);
    let mut second = worker("sigterm-after", &world.worker_env(&t.url()));
    until_finished(&t, 400, Duration::from_secs(60)).await;
    let (_, status) = second.terminate(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
    let audit = Audit::run(&client, &world.google, &world.calendars()).await;
    audit.print_and_check(
        "sigterm",
        "1 process, then a second",
        &format!("SIGTERM with {released} writes hung past the 1 s grace; exit 0 after {took:?}"),
        0,
    );
    let attempts_of_released: i32 = client
        .query_one("SELECT coalesce(max(attempts), 0) FROM sync_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        attempts_of_released, 1,
        "a release at shutdown does not use an attempt"
    );
}

/// `status`, `status --json`, `connections list`, `drain --once` at trace
/// level, `--help` and rejected keys print no refresh token, access token,
/// client secret or encryption key (tests/secrets.rs covers the library's
/// logs, `last_error`, `Debug` and the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_no_secret() {
    let (t, world) = GoogleWorld::with_database(2).await;
    let g = &world.google;
    let client = t.client().await;
    enqueue_all(&client, &upserts(&world, 0..4, "v1")).await;
    let mut env = world.worker_env(&t.url());
    set_env(&mut env, "RUST_LOG", "trace");
    // The fake Google runs on this runtime's other thread while the binary runs.
    let run = |args: &[&str], env: &[(String, String)]| {
        let out = tokio::task::block_in_place(|| {
            common::command(args, &[])
                .envs(env.iter().map(|(k, v)| (k, v)))
                .output()
        })
        .expect("run the binary");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let mut outputs = Vec::new();
    let (code, text) = run(&["drain", "--once"], &env);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("TRACE"), "trace level was on");
    outputs.push(("drain --once (trace)", text));
    // Revoke ws0's grant: its next items dead-letter and the connection turns
    // invalid, with a reason operators read in `status` and `connections list`.
    g.revoke_refresh_token(&GoogleWorld::refresh_token_of("ws0"));
    g.expire_access_tokens();
    enqueue_all(&client, &upserts(&world, 0..4, "v2")).await;
    let (code, text) = run(&["drain", "--once"], &env);
    assert_eq!(code, Some(0), "{text}");
    outputs.push(("drain --once after revocation (trace)", text));
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["connections", "list"],
    ] {
        let (code, text) = run(args, &env);
        assert_eq!(code, Some(0), "{args:?}: {text}");
        outputs.push(("status/connections", text));
    }
    assert!(
        outputs[2].1.contains("oauth_invalid_grant") && outputs[4].1.contains("NO"),
        "the revoked connection shows: {}\n{}",
        outputs[2].1,
        outputs[4].1
    );
    // --help with every secret set in the environment.
    let (code, text) = run(&["--help"], &env);
    assert_eq!(code, Some(0));
    outputs.push(("--help", text));
    // A rejected key (one byte short, then a bad character) is named, not echoed.
    for bad in [
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd$h8=",
    ] {
        let mut bad_env = env.clone();
        set_env(&mut bad_env, "TOKEN_ENCRYPTION_KEY", bad);
        let (code, text) = run(&["drain", "--once"], &bad_env);
        assert_eq!(code, Some(2), "{text}");
        assert!(text.contains("TOKEN_ENCRYPTION_KEY"), "{text}");
        assert!(!text.contains(bad) && !text.contains(&bad[..20]), "{text}");
        outputs.push(("bad key", text));
    }

    let mut secrets = vec![
        WORKER_CLIENT_SECRET.to_owned(),
        WORKER_KEY_B64.to_owned(),
        GoogleWorld::refresh_token_of("ws0"),
        GoogleWorld::refresh_token_of("ws1"),
    ];
    let access: Vec<String> = g
        .requests()
        .iter()
        .filter_map(|r| {
            r.header("authorization")
                .map(|h| h.trim_start_matches("Bearer ").to_owned())
        })
        .collect();
    assert!(!access.is_empty());
    secrets.extend(access);
    secrets.sort();
    secrets.dedup();
    for secret in &secrets {
        for (name, text) in &outputs {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked into {name}"
            );
        }
    }
    println!(
        "FIGURES binary_secrets: outputs={} secrets_searched={} leaks=0",
        outputs.len(),
        secrets.len()
    );
}
