//! Support for calendar-sync's end-to-end tests: a fresh PostgreSQL database
//! per test, and an in-memory [`Calendar`] with fault injection.

mod google_env;
mod memory_calendar;
mod pki;
mod processes;

use std::collections::BTreeMap;
use std::time::Duration;

use calendar_sync::testing::LOCK_NAMESPACE;
use calendar_sync::{Calendar, Database, DrainerConfig, OutboxDrainer};
use serde_json::Value;
use tokio_postgres::NoTls;
use uuid::Uuid;

pub use google_env::{CLIENT_ID, CLIENT_SECRET, GoogleEnv};
pub use memory_calendar::{Call, Fault, MemoryCalendar};
pub use pki::{CERT_USER, PASSWORD, PASSWORD_USER, Pki, TlsCluster};
pub use processes::{
    Audit, Cluster, ClusterSetup, GoogleWorld, Rng, StopMode, WORKER_CLIENT_ID,
    WORKER_CLIENT_SECRET, WORKER_KEY_B64, WorkerProcess, connect, count_in, enqueue_all, finished,
    free_port, namespace_locks, set_env, source_payload_cancel, source_payload_upsert,
    start_cluster, status_counts, wait_for_rows, wait_until,
};

/// The server tests run against.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Connections at most in each test's pool ([`TestDb::db`]). A test binary
/// runs as many tests at once as the machine has cores, and other checkouts
/// may run theirs against the same server (default `max_connections`: 100):
/// a test that wants more (a
/// drainer at high concurrency) builds its own [`Database`] on
/// [`TestDb::config`]. Beyond the pool, each test holds its keeper session
/// and whatever plain clients it opens.
pub const TEST_POOL_SIZE: usize = 4;

/// The `application_name` of the session each [`TestDb`] keeps open on its
/// own database for as long as it lives (see [`TestDb`]); helpers that
/// terminate a test's sessions spare it.
pub const KEEPER_APPLICATION_NAME: &str = "calendar-sync-tests keeper";

/// How old a test database must be before another run's sweep may drop it.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);

/// A uniquely named, migrated database, dropped when the test passes and kept
/// (with its name printed) when it fails.
///
/// Its name is `cs_test_<unix seconds at creation>_<16 random hex digits>`.
/// The first `TestDb` of each test process sweeps the databases that earlier
/// runs left behind (a failed test keeps its database; a killed run drops
/// nothing): it drops a `cs_test_*` database when
/// - its name says it was created over [`STALE_AFTER`] (an hour) ago, by this
///   machine's clock (for names of the older form `cs_test_<uuid>`: its
///   `PG_VERSION` file is that old, which only a superuser may read), and
/// - no session is connected to it: the sweep's `DROP DATABASE` has no
///   `FORCE`, so PostgreSQL itself refuses while anyone is connected.
///
/// A live `TestDb` keeps one session on its database from just after
/// `CREATE DATABASE` until it drops the database (the keeper,
/// [`KEEPER_APPLICATION_NAME`]), so a sweep in another process can never drop
/// the database of a test that is still running, however long it runs; the
/// hour covers the instant between `CREATE DATABASE` and the keeper's
/// connection, and leaves a failed test's database for inspection for a while.
pub struct TestDb {
    /// The database's name.
    pub name: String,
    /// Connection config for it.
    pub config: tokio_postgres::Config,
    /// The library's handle on it: a pool of at most [`TEST_POOL_SIZE`].
    pub db: Database,
    /// The keeper session: while it is connected, no sweep can drop the
    /// database.
    _keeper: tokio_postgres::Client,
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
        let (admin, conn) = admin_config
            .connect(NoTls)
            .await
            .expect("connect to DATABASE_URL");
        tokio::spawn(conn);
        sweep_once(&admin).await;
        let name = format!(
            "cs_test_{}_{}",
            unix_now(),
            &Uuid::new_v4().simple().to_string()[..16]
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let mut config = admin_config.clone();
        config.dbname(&name);
        let (keeper, conn) = config
            .clone()
            .application_name(KEEPER_APPLICATION_NAME)
            .connect(NoTls)
            .await
            .expect("connect the keeper session");
        tokio::spawn(conn);
        let db = Database::from_config(config.clone(), TEST_POOL_SIZE).expect("pool");
        Self {
            name,
            config,
            db,
            _keeper: keeper,
        }
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
    pub async fn counts(&self) -> BTreeMap<String, i64> {
        status_counts(&self.client().await).await
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

    /// Drains until no row is PENDING or PROCESSING, making waiting rows due
    /// between rounds (items that step back, e.g. after learning their
    /// calendar's real id, go round again); panics after 20 rounds.
    pub async fn drain_until_idle<C: Calendar>(&self, d: &OutboxDrainer<C>) {
        for _ in 0..20 {
            d.drain_once().await.expect("drain");
            let counts = self.counts().await;
            if !counts.contains_key("PENDING") && !counts.contains_key("PROCESSING") {
                return;
            }
            self.make_all_due().await;
        }
        panic!("the outbox did not drain: {:?}", self.counts().await);
    }

    /// Every binding: (calendar_id, source_id, state), in that order.
    pub async fn bindings(&self) -> Vec<(String, String, String)> {
        self.client()
            .await
            .query(
                "SELECT calendar_id, source_id, state FROM calendar_event_bindings ORDER BY 1, 2",
                &[],
            )
            .await
            .expect("bindings")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    /// The (state, Google event id) of a source's binding (one calendar).
    pub async fn binding(&self, source_id: &str) -> (String, String) {
        let row = self
            .client()
            .await
            .query_one(
                "SELECT state, google_event_id FROM calendar_event_bindings WHERE source_id = $1",
                &[&source_id],
            )
            .await
            .expect("one binding");
        (row.get(0), row.get(1))
    }

    /// A workspace's stored (encrypted) refresh token.
    pub async fn stored_token(&self, workspace: &str) -> String {
        self.client()
            .await
            .query_one(
                "SELECT refresh_token_encrypted FROM google_connections WHERE workspace_id = $1",
                &[&workspace],
            )
            .await
            .expect("a stored connection")
            .get(0)
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
    /// lock connections and pooled connections alike) but the keeper.
    pub async fn kill_connections(&self) -> i64 {
        self.kill_sessions("true").await
    }

    /// Terminates the other sessions of this database that match `filter`
    /// (a SQL condition on `pg_stat_activity`), the keeper never; returns
    /// how many.
    pub async fn kill_sessions(&self, filter: &str) -> i64 {
        self.client()
            .await
            .query_one(
                &format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                      WHERE datname = current_database() AND pid <> pg_backend_pid()
                        AND application_name <> $1 AND ({filter})"
                ),
                &[&KEEPER_APPLICATION_NAME],
            )
            .await
            .expect("terminate sessions")
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

/// Seconds since the Unix epoch, by this machine's clock.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When a test database of the current form was created, from its name
/// (`cs_test_<unix seconds>_<16 hex digits>`); `None` for any other name.
fn created_at(name: &str) -> Option<u64> {
    let (secs, random) = name.strip_prefix("cs_test_")?.split_once('_')?;
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    (random.len() == 16 && random.chars().all(hex) && secs.chars().all(|c| c.is_ascii_digit()))
        .then(|| secs.parse().ok())
        .flatten()
}

/// [`sweep_stale_databases`], once per test process.
async fn sweep_once(admin: &tokio_postgres::Client) {
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        sweep_stale_databases(admin).await;
    }
}

/// Drops the test databases earlier runs left behind (the rule is on
/// [`TestDb`]), best effort: a database that cannot be dropped (someone is
/// connected) is left alone. Returns the names it dropped.
pub async fn sweep_stale_databases(admin: &tokio_postgres::Client) -> Vec<String> {
    let now = unix_now();
    let Ok(rows) = admin
        .query(
            r"SELECT datname FROM pg_database WHERE datname LIKE 'cs\_test\_%'",
            &[],
        )
        .await
    else {
        return Vec::new();
    };
    let mut stale: Vec<String> = rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|name| {
            created_at(name).is_some_and(|at| now.saturating_sub(at) > STALE_AFTER.as_secs())
        })
        .collect();
    // Names of the older form say nothing of their age; the database's
    // PG_VERSION file does (its reading is a superuser's: else skipped).
    if let Ok(rows) = admin
        .query(
            "SELECT datname FROM pg_database
              WHERE datname ~ '^cs_test_[0-9a-f]{32}$'
                AND (pg_stat_file('base/' || oid || '/PG_VERSION')).modification
                    < now() - make_interval(secs => $1)",
            &[&STALE_AFTER.as_secs_f64()],
        )
        .await
    {
        stale.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    let mut dropped = Vec::new();
    for name in stale {
        // No FORCE: PostgreSQL refuses while any session is connected.
        match admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
        {
            Ok(()) => {
                eprintln!("dropped {name}, left by an earlier test run");
                dropped.push(name);
            }
            Err(e) => eprintln!("kept {name}, left by an earlier test run: {e}"),
        }
    }
    dropped
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_databases_name_says_when_it_was_made() {
        assert_eq!(
            created_at("cs_test_1700000000_0123456789abcdef"),
            Some(1_700_000_000)
        );
        for other in [
            "cs_test_0123456789abcdef0123456789abcdef",
            "cs_test_1700000000_0123456789abcdeF",
            "cs_test_1700000000_0123456789abcde",
            "cs_test_17000x0000_0123456789abcdef",
            "cs_test__0123456789abcdef",
            "calendar_sync_demo_0123456789ab",
        ] {
            assert_eq!(created_at(other), None, "{other}");
        }
    }

    /// The sweep drops an old database nobody is connected to, and keeps an
    /// old one with a session (a test still running, or someone looking) and
    /// a young one (a test between `CREATE DATABASE` and its keeper).
    #[tokio::test]
    async fn the_sweep_drops_only_old_databases_nobody_uses() {
        let admin = connect(&database_url().parse().expect("url")).await;
        let suffix = || Uuid::new_v4().simple().to_string()[..16].to_owned();
        let old = unix_now() - STALE_AFTER.as_secs() - 60;
        let abandoned = format!("cs_test_{old}_{}", suffix());
        let in_use = format!("cs_test_{old}_{}", suffix());
        let young = format!("cs_test_{}_{}", unix_now() - 60, suffix());
        for name in [&abandoned, &in_use, &young] {
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
        }
        let mut config: tokio_postgres::Config = database_url().parse().unwrap();
        config.dbname(&in_use);
        let session = connect(&config).await;

        let dropped = sweep_stale_databases(&admin).await;
        let exists = |name: String| {
            let admin = &admin;
            async move {
                admin
                    .query_one(
                        "SELECT count(*) FROM pg_database WHERE datname = $1",
                        &[&name],
                    )
                    .await
                    .unwrap()
                    .get::<_, i64>(0)
                    == 1
            }
        };
        // Another process's sweep may have dropped it first.
        assert!(!exists(abandoned.clone()).await, "{dropped:?}");
        assert!(exists(in_use.clone()).await);
        assert!(exists(young.clone()).await);
        assert!(!dropped.contains(&in_use) && !dropped.contains(&young));
        drop(session);
        for name in [&in_use, &young] {
            admin
                .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .await
                .unwrap();
        }
    }
}
