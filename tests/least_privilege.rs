//! Access: the drainer runs as the least-privilege role of
//! docs/least-privilege.sql (and a producer enqueues with its role), and no
//! secret appears in a panic message of an embedding service that unwraps the
//! library's errors. (tests/secrets.rs covers logs, `last_error`, the
//! connection listing, `Debug` and the database; the worker crate's
//! reliability tests cover what the binary prints.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use calendar_sync::{
    Calendar, CalendarKey, Database, DrainerConfig, GoogleCalendar, Operation, OutboxDrainer,
    TokenCipher,
};
use calendar_sync_tests::{
    GoogleWorld, MemoryCalendar, TestDb, WORKER_CLIENT_SECRET, WORKER_KEY_B64, cancel, enqueue_all,
    fast_config, rebuild, source_payload_upsert, upsert, wait_until,
};
use secrecy::SecretString;
use serde_json::Value;
use tokio_postgres::NoTls;

const SQL: &str = include_str!("../docs/least-privilege.sql");

/// The roles of docs/least-privilege.sql under unique names, dropped (with
/// their grants) at the end of a passing test.
struct Roles {
    worker: String,
    producer: String,
    admin: tokio_postgres::Client,
}

impl Roles {
    async fn create(t: &TestDb) -> Roles {
        let suffix = &t.name["cs_test_".len()..][..12];
        let worker = format!("cs_worker_{suffix}");
        let producer = format!("cs_producer_{suffix}");
        let sql = SQL
            .replace("calendar_sync_worker", &worker)
            .replace("calendar_sync_producer", &producer);
        let admin = t.client().await;
        admin
            .batch_execute(&sql)
            .await
            .expect("docs/least-privilege.sql applies");
        Roles {
            worker,
            producer,
            admin,
        }
    }

    /// Connection settings for the worker role.
    fn worker_config(&self, t: &TestDb) -> tokio_postgres::Config {
        let mut config = t.config.clone();
        config.user(&self.worker);
        config
    }

    async fn drop_all(self) {
        let roles = format!("{}, {}", self.worker, self.producer);
        self.admin
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN ('{}', '{}');
                 DROP OWNED BY {roles}; DROP ROLE {roles};",
                self.worker, self.producer
            ))
            .await
            .expect("drop the roles");
    }
}

async fn denied(client: &tokio_postgres::Client, sql: &str) {
    let err = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("refused: {sql}"));
    let code = err.code().map(|c| c.code().to_owned()).unwrap_or_default();
    assert!(
        code == "42501" || code == "42P01",
        "{sql}: insufficient privilege expected, got {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drainer_runs_as_the_least_privilege_role() {
    let t = TestDb::new().await;
    let roles = Roles::create(&t).await;
    let worker_config = roles.worker_config(&t);
    let db = Database::from_config(worker_config.clone(), 8).unwrap();
    // `connections put` as the worker role.
    let world = GoogleWorld::start(&db, 3).await;
    let g = world.google.clone();
    // A per-minute count older than two days: the role's drainer deletes it.
    roles
        .admin
        .batch_execute(
            "INSERT INTO calendar_sync_minute_counts (minute, metric, label, n)
             VALUES (date_trunc('minute', now() - interval '3 days'), 'completed', '', 1000)",
        )
        .await
        .unwrap();

    // A producer enqueues with its role (INSERT … RETURNING id, as
    // calendar_sync::enqueue does, then the wake-up trigger at commit).
    let mut producer = t.client().await;
    let tx = producer.transaction().await.unwrap();
    tx.batch_execute(&format!("SET LOCAL ROLE {}", roles.producer))
        .await
        .unwrap();
    let mut rows: Vec<(String, Value)> = Vec::new();
    for i in 0..30 {
        let ws = &world.workspaces[i % 3];
        rows.push((
            "UPSERT_EVENT".into(),
            source_payload_upsert(ws, &format!("s{i}"), "v1"),
        ));
    }
    rows.push((
        "UPSERT_EVENT".into(),
        upsert("ws0", "ws0@example.com", "s0", "v2"),
    ));
    rows.push((
        "CANCEL_EVENT".into(),
        cancel("ws1", "ws1@example.com", "s1"),
    ));
    rows.push(("REBUILD_ALL".into(), rebuild("ws2", "ws2@example.com")));
    // Through "primary": resolved, re-keyed, bindings carried over.
    rows.push(("UPSERT_EVENT".into(), upsert("ws0", "primary", "p1", "v1")));
    rows.push(("REBUILD_ALL".into(), rebuild("ws0", "primary")));
    rows.push((
        "UPSERT_EVENT".into(),
        serde_json::json!({"workspaceId": "ws0"}),
    ));
    let op = Operation::decode(
        "UPSERT_EVENT",
        &upsert("ws0", "ws0@example.com", "lib", "x"),
    )
    .unwrap();
    let id = calendar_sync::enqueue(&tx, &op)
        .await
        .expect("enqueue as the producer");
    for (operation, payload) in &rows {
        tx.execute(
            "INSERT INTO sync_outbox (operation, payload) VALUES ($1, $2)",
            &[operation, payload],
        )
        .await
        .expect("insert as the producer");
    }
    tx.commit()
        .await
        .expect("the wake-up trigger runs with the producer's rights");
    producer
        .batch_execute(&format!("SET ROLE {}", roles.producer))
        .await
        .unwrap();
    for sql in [
        "SELECT payload FROM sync_outbox",
        "SELECT last_error FROM sync_outbox",
        "UPDATE sync_outbox SET status = 'PENDING'",
        "SELECT * FROM google_connections",
        "SELECT * FROM calendar_event_bindings",
    ] {
        denied(&producer, sql).await;
    }
    drop(producer);

    // The worker: a running drainer (LISTEN, claims, advisory locks, orphan
    // scans of pg_locks), a token rotation, an invalid grant.
    g.rotate_on_next_refresh(&GoogleWorld::refresh_token_of("ws1"));
    let drainer = |db: &Database| {
        let calendar =
            GoogleCalendar::new(db, GoogleWorld::cipher(), world.google_config()).unwrap();
        OutboxDrainer::new(db.clone(), calendar, fast_config()).unwrap()
    };
    let handle = drainer(&db).start();
    wait_until(
        &t.config,
        Duration::from_secs(30),
        "all finished",
        |c| async move { calendar_sync_tests::count_in(&c, &["PENDING", "PROCESSING"]).await == 0 },
    )
    .await;
    assert_eq!(t.row(id).await.status, "COMPLETED");
    assert_eq!(t.count("DEAD_LETTER").await, 1, "the malformed one");
    let bound_under: String = t
        .client()
        .await
        .query_one(
            "SELECT calendar_id FROM calendar_event_bindings WHERE source_id = 'p1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        bound_under, "ws0@example.com",
        "primary resolved as the role"
    );

    // Orphan recovery as the role: a killed lock connection mid-run.
    g.set_latency(Duration::from_millis(300));
    let more: Vec<(String, Value)> = (0..6)
        .map(|i| {
            (
                "UPSERT_EVENT".into(),
                source_payload_upsert("ws2", &format!("o{i}"), "x"),
            )
        })
        .collect();
    enqueue_all(&t.client().await, &more).await;
    wait_until(
        &t.config,
        Duration::from_secs(10),
        "in flight",
        |c| async move { calendar_sync_tests::count_in(&c, &["PROCESSING"]).await > 0 },
    )
    .await;
    assert!(t.kill_lock_connections().await >= 1);
    g.set_latency(Duration::ZERO);
    wait_until(
        &t.config,
        Duration::from_secs(30),
        "recovered",
        |c| async move { calendar_sync_tests::count_in(&c, &["PENDING", "PROCESSING"]).await == 0 },
    )
    .await;
    let report = handle.stop().await;
    assert!(report.completed >= 30, "{report:?}");

    // A revoked grant: the connection is marked invalid and the workspace's items dead-lettered.
    g.revoke_refresh_token(&GoogleWorld::refresh_token_of("ws0"));
    g.expire_access_tokens();
    enqueue_all(
        &t.client().await,
        &[(
            "UPSERT_EVENT".into(),
            upsert("ws0", "ws0@example.com", "s0", "v3"),
        )],
    )
    .await;
    drainer(&db).drain_once().await.unwrap();
    let connections = calendar_sync::ops::list_connections(&db).await.unwrap();
    assert!(
        !connections
            .iter()
            .find(|c| c.workspace_id == "ws0")
            .unwrap()
            .is_valid
    );
    // The application, with the producer's role, reads what it may of the
    // outcome: its events and the connections to reconnect (never a token).
    let app = t.client().await;
    app.batch_execute(&format!("SET ROLE {}", roles.producer))
        .await
        .unwrap();
    let live: i64 = app
        .query_one(
            "SELECT count(*) FROM calendar_sync_events WHERE state = 'LIVE' AND html_link IS NOT NULL",
            &[],
        )
        .await
        .expect("the app reads calendar_sync_events")
        .get(0);
    assert!(live >= 30, "{live}");
    let reconnect: Vec<String> = app
        .query(
            "SELECT workspace_id FROM calendar_sync_connections_needing_reconnect",
            &[],
        )
        .await
        .expect("the app reads calendar_sync_connections_needing_reconnect")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(reconnect, ["ws0"]);
    drop(app);
    let rotated: String = roles
        .admin
        .query_one(
            "SELECT refresh_token_encrypted FROM google_connections WHERE workspace_id = 'ws1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let token = GoogleWorld::cipher().decrypt("ws1", &rotated).unwrap();
    assert_eq!(
        Some(secrecy::ExposeSecret::expose_secret(&token).to_owned()),
        g.rotated_refresh_token(&GoogleWorld::refresh_token_of("ws1")),
        "the rotated refresh token was stored by the role"
    );

    // The dashboard's data, written as the role: per-minute counts added to,
    // the queue depth sampled, old minutes deleted; token refresh times.
    let dashboard = roles
        .admin
        .query_one(
            "SELECT coalesce(sum(n) FILTER (WHERE metric = 'completed'), 0)::bigint,
                    coalesce(sum(n) FILTER (WHERE metric = 'google_calls'), 0)::bigint,
                    count(*) FILTER (WHERE metric = 'queue_depth'),
                    (SELECT count(*) FROM google_connections WHERE token_refreshed_at IS NOT NULL)
               FROM calendar_sync_minute_counts",
            &[],
        )
        .await
        .unwrap();
    let (completed, calls, depth, refreshed): (i64, i64, i64, i64) = (
        dashboard.get(0),
        dashboard.get(1),
        dashboard.get(2),
        dashboard.get(3),
    );
    assert!(
        (1..1000).contains(&completed),
        "counted, and the old minute deleted: {completed}"
    );
    assert!(calls > 0 && depth > 0 && refreshed > 0, "{dashboard:?}");

    // Operator commands as the role.
    let status = calendar_sync::ops::status(&db).await.expect("status");
    assert_eq!(status.counts["DEAD_LETTER"], 2);
    calendar_sync::ops::readiness(&db).await.expect("readiness");
    assert_eq!(
        calendar_sync::ops::requeue(&db, None, Some("ws0"))
            .await
            .unwrap(),
        2
    );
    roles
        .admin
        .batch_execute("UPDATE sync_outbox SET updated_at = now() - interval '40 days' WHERE status = 'COMPLETED'")
        .await
        .unwrap();
    assert!(calendar_sync::ops::cleanup(&db, 30).await.unwrap() >= 30);

    // And nothing more.
    let (worker, conn) = worker_config.connect(NoTls).await.unwrap();
    tokio::spawn(conn);
    for sql in [
        "INSERT INTO sync_outbox (operation, payload) VALUES ('REBUILD_ALL', '{}')",
        "TRUNCATE sync_outbox",
        "DROP TABLE calendar_event_bindings",
        "ALTER TABLE google_connections ADD COLUMN x int",
        "DELETE FROM calendar_event_bindings",
        "DELETE FROM google_connections",
        "DELETE FROM calendar_aliases",
        "UPDATE calendar_sync_migrations SET name = name",
        "CREATE TABLE public.worker_table (x int)",
        "CREATE OR REPLACE FUNCTION calendar_sync_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
    ] {
        denied(&worker, sql).await;
    }
    drop(worker);
    drop(db);
    println!(
        "FIGURES least_privilege: role grants from docs/least-privilege.sql; items drained as the role: \
         {}; operations refused: 10",
        report.completed
    );
    roles.drop_all().await;
}

// ---------------------------------------------------------------------------
// Secrets in panic messages

/// Unwraps `result` inside `catch_unwind` and returns the panic message, as an
/// embedding service's `.unwrap()` would print it.
fn panic_message_of<T, E: std::fmt::Debug>(result: Result<T, E>) -> String {
    static CAPTURED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let previous = Arc::new(std::panic::take_hook());
    let forward = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        CAPTURED.lock().unwrap().push(info.to_string());
        if !info.to_string().contains("on an `Err` value") {
            forward(info);
        }
    }));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = result.unwrap();
    }));
    let _ = std::panic::take_hook();
    assert!(outcome.is_err(), "it was an error");
    CAPTURED.lock().unwrap().pop().expect("a panic message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwrapped_errors_print_no_secret_in_their_panic_message() {
    let t = TestDb::new().await;
    let world = GoogleWorld::start(&t.db, 1).await;
    let g = &world.google;
    let calendar =
        GoogleCalendar::new(&t.db, GoogleWorld::cipher(), world.google_config()).unwrap();
    let target = CalendarKey {
        workspace_id: "ws0".into(),
        calendar_id: "ws0@example.com".into(),
    };
    let op = Operation::decode(
        "UPSERT_EVENT",
        &upsert("ws0", "ws0@example.com", "s1", "v1"),
    )
    .unwrap();
    let Operation::UpsertEvent(u) = &op else {
        unreachable!()
    };
    let body = calendar_sync::testing::event_body(u);
    let id = calendar_sync::testing::event_id(&u.source, 0);
    calendar
        .insert_event(&target, &id, &body)
        .await
        .expect("a first call refreshes a token");
    let mut messages = Vec::new();
    // A revoked grant (refresh refused), then a 401 on a revoked access token.
    g.revoke_refresh_token(&GoogleWorld::refresh_token_of("ws0"));
    messages.push(panic_message_of(
        calendar.update_event(&target, &id, &body, None).await,
    ));
    g.expire_access_tokens();
    messages.push(panic_message_of(
        calendar.delete_event(&target, &id, None).await,
    ));
    // A tampered envelope, an envelope moved to another workspace, a key of the wrong size.
    let cipher = GoogleWorld::cipher();
    let sealed = cipher.encrypt(
        "ws0",
        &SecretString::from(GoogleWorld::refresh_token_of("ws0")),
    );
    let mut tampered = sealed.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    messages.push(panic_message_of(
        cipher.decrypt("ws0", std::str::from_utf8(&tampered).unwrap()),
    ));
    messages.push(panic_message_of(
        cipher.decrypt("another-workspace", &sealed),
    ));
    let short_key = &WORKER_KEY_B64[..40];
    messages.push(panic_message_of(TokenCipher::new(short_key, "")));
    messages.push(panic_message_of(TokenCipher::new(
        WORKER_KEY_B64,
        "not*base64",
    )));
    // A database password in the URL of an unreachable server.
    let password = "pg-password-never-printed";
    let db = Database::connect(
        &format!("postgres://worker:{password}@127.0.0.1:1/app?connect_timeout=1"),
        1,
    )
    .unwrap();
    messages.push(panic_message_of(calendar_sync::migrate(&db).await));
    messages.push(panic_message_of(
        calendar_sync::ops::list_connections(&db).await,
    ));
    let drained = OutboxDrainer::new(db.clone(), MemoryCalendar::new(), DrainerConfig::default())
        .unwrap()
        .drain_once()
        .await;
    messages.push(panic_message_of(drained));

    let mut secrets = vec![
        GoogleWorld::refresh_token_of("ws0"),
        WORKER_CLIENT_SECRET.to_owned(),
        WORKER_KEY_B64.to_owned(),
        short_key.to_owned(),
        sealed.clone(),
        password.to_owned(),
    ];
    secrets.extend(g.requests().iter().filter_map(|r| {
        r.header("authorization")
            .map(|h| h.trim_start_matches("Bearer ").to_owned())
    }));
    for m in &messages {
        assert!(m.contains("on an `Err` value"), "{m}");
        for s in &secrets {
            assert!(!m.contains(s.as_str()), "a secret in a panic message: {m}");
        }
    }
    println!(
        "FIGURES panic_messages: messages={} secrets_searched={} leaks=0",
        messages.len(),
        secrets.len()
    );
}
