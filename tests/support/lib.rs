//! Support for calendar-sync's end-to-end tests: a fresh PostgreSQL database
//! per test, and an in-memory [`Calendar`] with fault injection.

mod memory_calendar;
mod pki;
mod processes;

use std::collections::HashMap;
use std::time::Duration;

use calendar_sync::{Database, DrainerConfig, store::LOCK_NAMESPACE};
use serde_json::Value;
use tokio_postgres::NoTls;
use uuid::Uuid;

pub use memory_calendar::{Call, Fault, MemoryCalendar};
pub use pki::{CERT_USER, PASSWORD, PASSWORD_USER, Pki, TlsCluster};
pub use processes::{
    Audit, Cluster, ClusterSetup, GoogleWorld, Rng, StopMode, WORKER_CLIENT_ID,
    WORKER_CLIENT_SECRET, WORKER_KEY_B64, WorkerProcess, connect, count_in, enqueue_all, finished,
    free_port, namespace_locks, set_env, source_payload_cancel, source_payload_upsert,
    start_cluster, status_counts, wait_until,
};

/// The server tests run against.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A uniquely named, migrated database, dropped when the test passes and kept
/// (with its name printed) when it fails.
pub struct TestDb {
    /// The database's name.
    pub name: String,
    /// Connection config for it.
    pub config: tokio_postgres::Config,
    /// The library's handle on it.
    pub db: Database,
}

impl TestDb {
    /// Creates and migrates a fresh database.
    pub async fn new() -> Self {
        let t = Self::empty().await;
        calendar_sync::migrate(&t.db).await.expect("migrate");
        t
    }

    /// Creates a fresh database without the schema.
    pub async fn empty() -> Self {
        let admin_config: tokio_postgres::Config =
            database_url().parse().expect("DATABASE_URL parses");
        let name = format!("cs_test_{}", Uuid::new_v4().simple());
        let (admin, conn) = admin_config
            .connect(NoTls)
            .await
            .expect("connect to DATABASE_URL");
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let mut config = admin_config.clone();
        config.dbname(&name);
        let db = Database::from_config(config.clone(), 16).expect("pool");
        Self { name, config, db }
    }

    /// A URL for this database (for child processes).
    pub fn url(&self) -> String {
        let base = database_url();
        match base.rfind('/') {
            Some(i) if base[..i].contains("://") => format!("{}/{}", &base[..i], self.name),
            _ => format!("{base} dbname={}", self.name),
        }
    }

    /// A plain client on the test database.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = self.config.connect(NoTls).await.expect("connect");
        tokio::spawn(conn);
        client
    }

    /// Inserts a raw outbox row, as a producer in any language would.
    pub async fn insert(&self, operation: &str, payload: Value) -> Uuid {
        self.client()
            .await
            .query_one(
                "INSERT INTO sync_outbox (operation, payload) VALUES ($1, $2) RETURNING id",
                &[&operation, &payload],
            )
            .await
            .expect("insert outbox row")
            .get(0)
    }

    /// Row counts by status.
    pub async fn counts(&self) -> HashMap<String, i64> {
        self.client()
            .await
            .query(
                "SELECT status, count(*) FROM sync_outbox GROUP BY status",
                &[],
            )
            .await
            .expect("counts")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// How many rows have this status.
    pub async fn count(&self, status: &str) -> i64 {
        self.counts().await.get(status).copied().unwrap_or(0)
    }

    /// One outbox row.
    pub async fn row(&self, id: Uuid) -> OutboxRow {
        let r = self
            .client()
            .await
            .query_one(
                "SELECT status, attempts, last_error, superseded_by, result,
                        extract(epoch FROM next_attempt_at - updated_at)::float8 AS delay_secs
                   FROM sync_outbox WHERE id = $1",
                &[&id],
            )
            .await
            .expect("row");
        OutboxRow {
            status: r.get("status"),
            attempts: r.get("attempts"),
            last_error: r.get("last_error"),
            superseded_by: r.get("superseded_by"),
            result: r.get("result"),
            delay_secs: r.get("delay_secs"),
        }
    }

    /// Makes every waiting row due now (instead of sleeping through backoff).
    pub async fn make_all_due(&self) {
        self.client()
            .await
            .execute(
                "UPDATE sync_outbox SET next_attempt_at = now() WHERE status = 'PENDING'",
                &[],
            )
            .await
            .expect("make due");
    }

    /// Advisory locks in our namespace currently held in this database.
    pub async fn held_row_locks(&self) -> i64 {
        self.client()
            .await
            .query_one(
                "SELECT count(*) FROM pg_locks
                  WHERE locktype = 'advisory' AND granted AND classid = $1::int4::oid AND objsubid = 2
                    AND objid <> 0
                    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&LOCK_NAMESPACE],
            )
            .await
            .expect("pg_locks")
            .get(0)
    }

    /// Terminates every other session connected to this database (workers'
    /// lock connections and pooled connections alike).
    pub async fn kill_connections(&self) -> i64 {
        let client = self.client().await;
        client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("terminate")
            .get(0)
    }

    /// Terminates the sessions that hold row locks (workers' lock connections).
    pub async fn kill_lock_connections(&self) -> i64 {
        self.client()
            .await
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM (
                     SELECT DISTINCT pid FROM pg_locks
                      WHERE locktype = 'advisory' AND classid = $1::int4::oid AND objsubid = 2
                        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) p",
                &[&LOCK_NAMESPACE],
            )
            .await
            .expect("terminate lock holders")
            .get(0)
    }

    /// Waits until `check` holds, polling the database; panics after `timeout`.
    pub async fn wait_for<F, Fut>(&self, timeout: Duration, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed; database {} kept for inspection", self.name);
            return;
        }
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let admin: tokio_postgres::Config = database_url().parse().expect("url");
                if let Ok((client, conn)) = admin.connect(NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A row's interesting columns.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Status.
    pub status: String,
    /// Attempts used.
    pub attempts: i32,
    /// Why it failed last.
    pub last_error: Option<String>,
    /// Newer item that superseded it.
    pub superseded_by: Option<Uuid>,
    /// Outcome details.
    pub result: Option<Value>,
    /// Seconds between the last update and the next attempt (the backoff).
    pub delay_secs: f64,
}

/// Settings for fast tests: exact backoff, short polls and grace.
pub fn fast_config() -> DrainerConfig {
    DrainerConfig {
        poll_interval: Duration::from_millis(200),
        backoff_jitter: 0.0,
        shutdown_grace: Duration::from_secs(5),
        ..DrainerConfig::default()
    }
}

/// An UPSERT_EVENT payload for a timed event.
pub fn upsert(workspace: &str, calendar: &str, source_id: &str, title: &str) -> Value {
    serde_json::json!({
        "operation": "UPSERT_EVENT",
        "workspaceId": workspace,
        "calendarId": calendar,
        "sourceType": "task",
        "sourceId": source_id,
        "eventType": "BLOCKER_DEADLINE",
        "event": {
            "title": title,
            "description": "P1 blocking task",
            "start": "2025-01-15T14:00:00Z",
            "end": "2025-01-15T15:00:00Z",
            "isAllDay": false
        }
    })
}

/// A CANCEL_EVENT payload.
pub fn cancel(workspace: &str, calendar: &str, source_id: &str) -> Value {
    serde_json::json!({
        "operation": "CANCEL_EVENT",
        "workspaceId": workspace,
        "calendarId": calendar,
        "sourceType": "task",
        "sourceId": source_id,
    })
}

/// A REBUILD_ALL payload.
pub fn rebuild(workspace: &str, calendar: &str) -> Value {
    serde_json::json!({
        "operation": "REBUILD_ALL",
        "workspaceId": workspace,
        "calendarId": calendar,
    })
}
