//! Support for the reliability tests: real worker processes, a throwaway
//! PostgreSQL cluster the test owns, a fake Google with many workspaces, bulk
//! enqueueing, and the end-of-run audit (nothing lost, nothing duplicated).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use calendar_sync::{Database, GoogleConfig, TokenCipher};
pub use calendar_sync_demo::scratch::{Cluster, ClusterSetup, StopMode};
use fake_google::FakeGoogle;

use crate::TestDb;
use secrecy::SecretString;
use serde_json::Value;
use tokio_postgres::{Client, NoTls};

/// The encryption key the reliability tests give their workers (bytes 0..32).
pub const WORKER_KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The OAuth client the fake Google knows.
pub const WORKER_CLIENT_ID: &str = "reliability-client.apps.example.com";
/// Its secret.
pub const WORKER_CLIENT_SECRET: &str = "GOCSPX-reliability-client-secret";

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    calendar_sync_demo::scratch::free_port().expect("a free port on 127.0.0.1")
}

// ---------------------------------------------------------------------------
// Worker processes

/// A running `calendar-sync-worker` (or any) process. Its stderr goes to a
/// file; dropping the handle kills the process if it still runs (so a failing
/// test leaves no process behind) and keeps the log when the test failed.
pub struct WorkerProcess {
    /// A name for messages.
    pub name: String,
    child: Child,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl WorkerProcess {
    /// Starts `binary args` with a clean environment plus `env`.
    pub fn spawn(name: &str, binary: &Path, args: &[&str], env: &[(String, String)]) -> Self {
        let log_path = std::env::temp_dir().join(format!(
            "calendar-sync-{name}-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let log = fs::File::create(&log_path).expect("create the worker log");
        let mut command = Command::new(binary);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start the worker process");
        Self {
            name: name.to_owned(),
            child,
            log_path,
            exit: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, `STOP`, `CONT`) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// `kill -9`: the process dies at once, without any cleanup of its own.
    pub fn kill9(&mut self) -> ExitStatus {
        self.signal("KILL");
        let status = self.child.wait().expect("wait for the killed worker");
        self.exit = Some(status);
        status
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.try_wait().expect("try_wait") {
            Some(status) => {
                self.exit = Some(status);
                false
            }
            None => true,
        }
    }

    /// Waits up to `timeout` for the process to exit; `None` if it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                return self.exit;
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then the time until exit and the exit status (panics if it
    /// has not exited within `timeout`).
    pub async fn terminate(&mut self, timeout: Duration) -> (Duration, ExitStatus) {
        let started = Instant::now();
        self.signal("TERM");
        let status = self.wait_exit(timeout).await.unwrap_or_else(|| {
            panic!(
                "{} did not exit within {timeout:?} of SIGTERM; log:\n{}",
                self.name,
                self.log_tail(40)
            )
        });
        (started.elapsed(), status)
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}: log kept at {}", self.name, self.log_path.display());
        } else {
            let _ = fs::remove_file(&self.log_path);
        }
    }
}

// ---------------------------------------------------------------------------
// A fake Google with many workspaces

/// A fake Google with `n` workspaces `ws0..`, each with a stored connection
/// (refresh token `rt-wsN`) and a calendar `wsN@example.com`.
pub struct GoogleWorld {
    /// The fake.
    pub google: FakeGoogle,
    /// Workspace ids.
    pub workspaces: Vec<String>,
}

impl GoogleWorld {
    /// Starts the fake and stores every workspace's connection in `db`.
    pub async fn start(db: &Database, workspaces: usize) -> Self {
        let google = FakeGoogle::start().await;
        google.add_client(WORKER_CLIENT_ID, WORKER_CLIENT_SECRET);
        let cipher = Self::cipher();
        let mut ids = Vec::with_capacity(workspaces);
        for i in 0..workspaces {
            let ws = format!("ws{i}");
            let email = Self::calendar_of(&ws);
            google.add_refresh_token(&Self::refresh_token_of(&ws), WORKER_CLIENT_ID, &email);
            google.add_calendar(&email);
            calendar_sync::ops::put_connection(
                db,
                &cipher,
                &ws,
                &email,
                &SecretString::from(Self::refresh_token_of(&ws)),
            )
            .await
            .expect("store the connection");
            ids.push(ws);
        }
        Self {
            google,
            workspaces: ids,
        }
    }

    /// A fresh migrated database, and the fake with `workspaces` workspaces
    /// stored in it.
    pub async fn with_database(workspaces: usize) -> (TestDb, Self) {
        let t = TestDb::new().await;
        let world = Self::start(&t.db, workspaces).await;
        (t, world)
    }

    /// Makes `workspace`'s REBUILD_ALL hang in its list call (other calls
    /// answer, e.g. a worker's calendars.get) and enqueues one; returns its
    /// id.
    pub async fn hung_rebuild(&self, t: &TestDb, workspace: &str) -> uuid::Uuid {
        let calendar = Self::calendar_of(workspace);
        self.google.inject(
            fake_google::Fault::new(fake_google::FaultKind::Hang)
                .method("GET")
                .path(&format!("{calendar}/events"))
                .times(1_000),
        );
        t.insert("REBUILD_ALL", crate::rebuild(workspace, &calendar))
            .await
    }

    /// The cipher matching [`WORKER_KEY_B64`].
    pub fn cipher() -> TokenCipher {
        TokenCipher::new(WORKER_KEY_B64, "").expect("test key")
    }

    /// The calendar of a workspace.
    pub fn calendar_of(workspace: &str) -> String {
        format!("{workspace}@example.com")
    }

    /// The refresh token of a workspace.
    pub fn refresh_token_of(workspace: &str) -> String {
        format!("1//0g-refresh-{workspace}-secret")
    }

    /// Every calendar.
    pub fn calendars(&self) -> Vec<String> {
        self.workspaces
            .iter()
            .map(|w| Self::calendar_of(w))
            .collect()
    }

    /// The environment of a `calendar-sync-worker run` against this fake and
    /// `database_url`, polling every 200 ms, with its own HTTP port.
    pub fn worker_env(&self, database_url: &str) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", database_url.to_owned()),
            ("TOKEN_ENCRYPTION_KEY", WORKER_KEY_B64.to_owned()),
            ("GOOGLE_CLIENT_ID", WORKER_CLIENT_ID.to_owned()),
            ("GOOGLE_CLIENT_SECRET", WORKER_CLIENT_SECRET.to_owned()),
            ("GOOGLE_CALENDAR_API_URL", self.google.calendar_base_url()),
            ("GOOGLE_OAUTH_TOKEN_URL", self.google.token_url()),
            (
                "CALENDAR_SYNC_HTTP_ADDR",
                format!("127.0.0.1:{}", free_port()),
            ),
            ("CALENDAR_SYNC_POLL_INTERVAL_MS", "200".to_owned()),
            ("CALENDAR_SYNC_SHUTDOWN_GRACE_MS", "5000".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// A Google configuration for an in-process drainer against this fake.
    pub fn google_config(&self) -> GoogleConfig {
        let mut config =
            GoogleConfig::new(WORKER_CLIENT_ID, SecretString::from(WORKER_CLIENT_SECRET));
        config.calendar_api_url = self.google.calendar_base_url();
        config.oauth.token_url = self.google.token_url();
        config
    }
}

/// Sets (or adds) one variable of an environment list.
pub fn set_env(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_owned(), value.to_owned()));
}

// ---------------------------------------------------------------------------
// Workloads

/// A small deterministic pseudo-random generator (xorshift64*), so a failing
/// run can be replayed exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// One source of a workload: (workspace, source id).
pub fn source_payload_upsert(workspace: &str, source_id: &str, title: &str) -> Value {
    crate::upsert(
        workspace,
        &GoogleWorld::calendar_of(workspace),
        source_id,
        title,
    )
}

/// A CANCEL_EVENT of a source of a workspace's calendar.
pub fn source_payload_cancel(workspace: &str, source_id: &str) -> Value {
    crate::cancel(workspace, &GoogleWorld::calendar_of(workspace), source_id)
}

/// Inserts rows in order, 500 per statement (one NOTIFY per statement), the
/// way a producer's batch insert would. Returns how many it inserted.
pub async fn enqueue_all(client: &Client, rows: &[(String, Value)]) -> usize {
    for chunk in rows.chunks(500) {
        let ops: Vec<&str> = chunk.iter().map(|(o, _)| o.as_str()).collect();
        let payloads: Vec<&Value> = chunk.iter().map(|(_, p)| p).collect();
        client
            .execute(
                "INSERT INTO sync_outbox (operation, payload)
                 SELECT o, p FROM unnest($1::text[], $2::jsonb[]) WITH ORDINALITY AS x(o, p, n) ORDER BY n",
                &[&ops, &payloads],
            )
            .await
            .expect("enqueue");
    }
    rows.len()
}

/// A plain client on a database, driven by a background task.
pub async fn connect(config: &tokio_postgres::Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// Row counts by status.
pub async fn status_counts(client: &Client) -> BTreeMap<String, i64> {
    client
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

/// Rows whose status is one of `statuses`.
pub async fn count_in(client: &Client, statuses: &[&str]) -> i64 {
    let counts = status_counts(client).await;
    statuses
        .iter()
        .map(|s| counts.get(*s).copied().unwrap_or(0))
        .sum()
}

/// Rows that are finished (COMPLETED, SUPERSEDED, DEAD_LETTER).
pub async fn finished(client: &Client) -> i64 {
    count_in(client, &["COMPLETED", "SUPERSEDED", "DEAD_LETTER"]).await
}

/// Polls (every 50 ms, on a fresh connection each time so that a database
/// restart is survived) until `check` holds; panics after `timeout`.
pub async fn wait_until<F, Fut>(
    config: &tokio_postgres::Config,
    timeout: Duration,
    what: &str,
    mut check: F,
) where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Ok((client, connection))) =
            tokio::time::timeout(Duration::from_secs(2), config.connect(NoTls)).await
        {
            let task = tokio::spawn(connection);
            let done = check(client).await;
            task.abort();
            if done {
                return;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (see [`wait_until`]) until exactly `n` rows have one of `statuses`.
pub async fn wait_for_rows(
    config: &tokio_postgres::Config,
    timeout: Duration,
    statuses: &'static [&'static str],
    n: i64,
) {
    let what = format!("{n} rows {}", statuses.join(" or "));
    wait_until(config, timeout, &what, move |c| async move {
        count_in(&c, statuses).await == n
    })
    .await;
}

/// Advisory locks of the library's namespace held in this database (row locks
/// and the claim mutex alike).
pub async fn namespace_locks(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_locks
              WHERE locktype = 'advisory' AND classid = $1::int4::oid
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&calendar_sync::testing::LOCK_NAMESPACE],
        )
        .await
        .expect("pg_locks")
        .get(0)
}

// ---------------------------------------------------------------------------
// The audit

/// What a finished run came to. `duplicates` and `lost` must be 0.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    /// Outbox rows.
    pub items: usize,
    /// Distinct sources (UPSERT/CANCEL targets).
    pub sources: usize,
    /// Rows per status.
    pub statuses: BTreeMap<String, i64>,
    /// Sources with more than one live Google event.
    pub duplicates: usize,
    /// Sources whose Google state differs from their last operation that took
    /// effect (COMPLETED): a missing event, other content, or an event that
    /// should be gone; plus rows still PENDING or PROCESSING. (A dead-lettered
    /// operation is counted in `statuses`, and the scenario says how many it
    /// expects.)
    pub lost: usize,
    /// Live events of ours that no source in the outbox accounts for.
    pub strays: usize,
    /// SUPERSEDED rows whose `superseded_by` is not a newer row of their source.
    pub bad_supersessions: usize,
    /// Sources whose COMPLETED rows did not complete in insertion order.
    pub order_violations: usize,
    /// Most attempts any row used.
    pub max_attempts: i32,
    /// Rows that needed more than one attempt.
    pub retried_rows: usize,
    /// Google write calls (insert, update, delete) received by the fake.
    pub google_writes: u64,
    /// The first few problems, for the failure message.
    pub problems: Vec<String>,
}

type SourceId = (String, String, String, String);

impl Audit {
    /// Compares the outbox's last operation per source with the fake Google's
    /// live events on `calendars`.
    pub async fn run(client: &Client, google: &FakeGoogle, calendars: &[String]) -> Audit {
        let rows = client
            .query(
                "SELECT id, seq, operation, status, attempts, payload, superseded_by, processed_at
                   FROM sync_outbox ORDER BY seq",
                &[],
            )
            .await
            .expect("read the outbox");
        let mut audit = Audit {
            items: rows.len(),
            ..Audit::default()
        };
        // Per source: the last operation that took effect (COMPLETED), which
        // Google must show, and the status of the last one enqueued.
        let mut last: HashMap<SourceId, Option<Value>> = HashMap::new();
        let mut source_of_id: HashMap<uuid::Uuid, (SourceId, i64)> = HashMap::new();
        let mut completed: HashMap<SourceId, Vec<(i64, chrono::DateTime<chrono::Utc>)>> =
            HashMap::new();
        let mut superseded = Vec::new();
        for r in &rows {
            let id: uuid::Uuid = r.get("id");
            let seq: i64 = r.get("seq");
            let operation: String = r.get("operation");
            let status: String = r.get("status");
            let attempts: i32 = r.get("attempts");
            let payload: Value = r.get("payload");
            *audit.statuses.entry(status.clone()).or_default() += 1;
            audit.max_attempts = audit.max_attempts.max(attempts);
            audit.retried_rows += usize::from(attempts > 1);
            if status == "PENDING" || status == "PROCESSING" {
                audit.lost += 1;
                audit.problem(format!("row {id} (seq {seq}) still {status}"));
            }
            if operation != "UPSERT_EVENT" && operation != "CANCEL_EVENT" {
                continue;
            }
            let text = |k: &str| payload[k].as_str().unwrap_or_default().to_owned();
            let key = (
                text("workspaceId"),
                text("calendarId"),
                text("sourceType"),
                text("sourceId"),
            );
            source_of_id.insert(id, (key.clone(), seq));
            if status == "SUPERSEDED" {
                superseded.push((
                    id,
                    seq,
                    key.clone(),
                    r.get::<_, Option<uuid::Uuid>>("superseded_by"),
                ));
            }
            if status == "COMPLETED"
                && let Some(at) = r.get::<_, Option<chrono::DateTime<chrono::Utc>>>("processed_at")
            {
                completed.entry(key.clone()).or_default().push((seq, at));
            }
            let entry = last.entry(key).or_default();
            if status == "COMPLETED" {
                let mut op = payload.clone();
                op["__operation"] = Value::from(operation);
                *entry = Some(op);
            }
        }
        audit.sources = last.len();
        for (id, seq, key, by) in superseded {
            let ok = by
                .and_then(|b| source_of_id.get(&b))
                .is_some_and(|(k, s)| *k == key && *s > seq);
            if !ok {
                audit.bad_supersessions += 1;
                audit.problem(format!(
                    "row {id} superseded by {by:?}, not a newer row of its source"
                ));
            }
        }
        for (key, mut done) in completed {
            done.sort_by_key(|(seq, _)| *seq);
            if done.windows(2).any(|w| w[1].1 < w[0].1) {
                audit.order_violations += 1;
                audit.problem(format!("{key:?} completed out of order"));
            }
        }

        let mut live: HashMap<SourceId, Vec<Value>> = HashMap::new();
        for calendar in calendars {
            for event in google.live_events(calendar) {
                let props = &event["extendedProperties"]["private"];
                let text = |k: &str| props[k].as_str().unwrap_or_default().to_owned();
                let key = (
                    text("calendarSyncWorkspace"),
                    calendar.clone(),
                    text("calendarSyncSourceType"),
                    text("calendarSyncSourceId"),
                );
                live.entry(key).or_default().push(event);
            }
        }
        for (key, op) in &last {
            let events = live.remove(key).unwrap_or_default();
            if events.len() > 1 {
                audit.duplicates += 1;
                audit.problem(format!("{key:?}: {} live events", events.len()));
            }
            let Some(op) = op.as_ref().filter(|op| op["__operation"] == "UPSERT_EVENT") else {
                // Last effective operation a cancel, or none took effect.
                if !events.is_empty() {
                    audit.lost += 1;
                    audit.problem(format!(
                        "{key:?}: should have no event, has {}",
                        events.len()
                    ));
                }
                continue;
            };
            let want_title = &op["event"]["title"];
            let want_description = &op["event"]["description"];
            match events.first() {
                None => {
                    audit.lost += 1;
                    audit.problem(format!("{key:?}: no live event; last op {op:.200}"));
                }
                Some(e) => {
                    let description_ok = match want_description.as_str() {
                        Some(d) if !d.is_empty() => e["description"] == *want_description,
                        _ => e.get("description").is_none_or(|v| v.is_null() || v == ""),
                    };
                    if e["summary"] != *want_title || !description_ok {
                        audit.lost += 1;
                        audit.problem(format!(
                            "{key:?}: live event {:.80} differs from last op {:.80}",
                            e["summary"].to_string(),
                            want_title.to_string()
                        ));
                    }
                }
            }
        }
        audit.strays = live.values().map(Vec::len).sum();
        for key in live.keys().take(3) {
            audit.problem(format!("{key:?}: live event no outbox row accounts for"));
        }
        audit.google_writes = google.calls(fake_google::ApiMethod::Insert)
            + google.calls(fake_google::ApiMethod::Update)
            + google.calls(fake_google::ApiMethod::Delete);
        audit
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 12 {
            self.problems.push(p);
        }
    }

    /// How many rows have this status.
    pub fn status(&self, status: &str) -> i64 {
        self.statuses.get(status).copied().unwrap_or(0)
    }

    /// Prints the figures (one line, `FIGURES` first, for the report) and
    /// asserts that nothing was lost or duplicated, every supersession names a
    /// newer row of its source, and per-source order held; `dead_letters` is
    /// how many DEAD_LETTER rows the scenario expects.
    pub fn print_and_check(&self, test: &str, workers: &str, faults: &str, dead_letters: i64) {
        println!(
            "FIGURES {test}: items={} sources={} workers={workers} faults=[{faults}] \
             completed={} superseded={} dead_letter={} google_writes={} retried_rows={} \
             max_attempts={} duplicates={} lost={} strays={}",
            self.items,
            self.sources,
            self.status("COMPLETED"),
            self.status("SUPERSEDED"),
            self.status("DEAD_LETTER"),
            self.google_writes,
            self.retried_rows,
            self.max_attempts,
            self.duplicates,
            self.lost,
            self.strays,
        );
        let summary = format!("{self:#?}");
        assert_eq!(self.duplicates, 0, "duplicates: {summary}");
        assert_eq!(self.lost, 0, "lost: {summary}");
        assert_eq!(self.strays, 0, "strays: {summary}");
        assert_eq!(self.bad_supersessions, 0, "{summary}");
        assert_eq!(self.order_violations, 0, "{summary}");
        assert_eq!(self.status("DEAD_LETTER"), dead_letters, "{summary}");
    }
}

// ---------------------------------------------------------------------------
// A throwaway PostgreSQL cluster

/// Starts a scratch cluster (the demo's [`Cluster`], blocking); `Ok(None)`
/// when none can start here (no initdb/pg_ctl, or root without a `postgres`
/// OS user and `runuser` to run them as).
pub fn start_cluster(setup: &ClusterSetup) -> Result<Option<Cluster>, String> {
    match Cluster::start(setup) {
        Ok(cluster) => Ok(Some(cluster)),
        Err(e) if e.is_unavailable() => Ok(None),
        Err(e) => Err(format!("{e}\n{}", e.detail())),
    }
}
