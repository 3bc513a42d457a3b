//! The real `calendar-sync-worker run` over TLS (`sslmode=verify-full` with the
//! test's own CA) against a throwaway cluster that refuses plaintext: every
//! session it opens is encrypted, and a kill -9 mid-run loses and duplicates
//! nothing.

use std::time::Duration;

use calendar_sync::Database;
use calendar_sync_tests::{
    Audit, GoogleWorld, TlsCluster, count_in, enqueue_all, finished, namespace_locks,
    source_payload_upsert, wait_until,
};

mod common;
use common::worker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_verify_full_encrypts_every_session_and_survives_kill_9() {
    let Some(c) = TlsCluster::start().await.expect("start a TLS cluster") else {
        println!("SKIPPED: no initdb/pg_ctl (or no postgres OS user to run them as root)");
        return;
    };
    let url = c.url(
        "localhost",
        "postgres",
        &format!("sslmode=verify-full&{}", TlsCluster::root(&c.pki.ca)),
    );
    let db = Database::connect(&url, 4).unwrap();
    calendar_sync::migrate(&db).await.unwrap();
    let world = GoogleWorld::start(&db, 10).await;
    world.google.set_latency(Duration::from_millis(5));
    let admin = c.admin().await;
    let rows: Vec<_> = (0..600)
        .map(|i| {
            let ws = &world.workspaces[i % 10];
            let payload = source_payload_upsert(ws, &format!("task-{i}"), &format!("task {i}"));
            ("UPSERT_EVENT".to_owned(), payload)
        })
        .collect();
    enqueue_all(&admin, &rows).await;
    let socket = c.socket_config();
    let until = |n: i64| {
        let socket = socket.clone();
        async move {
            let what = format!("{n} finished");
            wait_until(&socket, Duration::from_secs(90), &what, |c| async move {
                finished(&c).await >= n && (n == 600 || count_in(&c, &["PROCESSING"]).await > 0)
            })
            .await;
        }
    };
    let env = world.worker_env(&url);
    let mut first = worker("tls-first", &env);
    until(150).await;
    let (sessions, encrypted) = worker_sessions(&admin).await;
    assert!(
        sessions >= 2,
        "the pool's and the lock connection: {sessions}"
    );
    assert_eq!(encrypted, sessions, "every worker session shows ssl = t");
    first.kill9();
    let mut second = worker("tls-second", &env);
    until(600).await;
    let (sessions, encrypted) = worker_sessions(&admin).await;
    assert_eq!(encrypted, sessions, "after the restart too: {sessions}");
    let (_, status) = second.terminate(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", second.log_tail(20));
    assert_eq!(namespace_locks(&admin).await, 0);
    let audit = Audit::run(&admin, &world.google, &world.calendars()).await;
    audit.print_and_check(
        "tls_kill_9",
        "1 process, then another (default concurrency, 32), sslmode=verify-full",
        "kill -9 mid-run",
        0,
    );
}

/// The worker's sessions (application_name calendar-sync-worker…) and how many
/// of them are encrypted.
async fn worker_sessions(admin: &tokio_postgres::Client) -> (i64, i64) {
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE 'calendar-sync-worker%'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}
