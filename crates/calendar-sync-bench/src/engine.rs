//! Running the real drainer over a backlog and measuring it from outside:
//! wall time, CPU of the worker and of its PostgreSQL backends, committed
//! transactions, and (through [`WireCounter`]) the round trips it made.

use std::time::{Duration, Instant};

use calendar_sync::{Calendar, Database, DrainReport, DrainerConfig, OutboxDrainer};
use calendar_sync_tests::TestDb;
use tokio_postgres::Client;

use crate::support::{CpuMeter, CpuUse, sessions, settle_stats, wait_finished, xact_commit};
use crate::wire::WireCounter;

/// What one drain of a backlog measured.
#[derive(Debug, Clone, Copy)]
pub struct DrainRun {
    /// Items finished.
    pub items: u64,
    /// Seconds from start to the last item finished.
    pub secs: f64,
    /// CPU used meanwhile.
    pub cpu: CpuUse,
    /// Transactions committed in the database until the drainer stopped
    /// (pg_stat_database).
    pub commits: i64,
    /// Items finished until the drainer stopped (a drainer asked to stop under
    /// load may finish more than `items` first).
    pub processed: u64,
    /// The drainer's own report.
    pub report: DrainReport,
    /// sync_outbox block and update counters per item.
    pub io: Io,
}

impl DrainRun {
    /// Items per second.
    pub fn rate(&self) -> f64 {
        self.items as f64 / self.secs
    }

    /// CPU seconds of the worker process per 1,000 items.
    pub fn worker_cpu_per_1000(&self) -> f64 {
        self.cpu.worker / self.items as f64 * 1000.0
    }

    /// CPU seconds of the PostgreSQL backends per 1,000 items.
    pub fn pg_cpu_per_1000(&self) -> f64 {
        self.cpu.postgres / self.items as f64 * 1000.0
    }

    /// Committed transactions per item.
    pub fn commits_per_item(&self) -> f64 {
        self.commits as f64 / self.processed as f64
    }
}

/// Starts a drainer (its own pool of `min(concurrency, 16) + 4`, as the worker
/// binary sizes it) over `pg`, waits until `n` items are finished, stops it and
/// closes its connections.
pub async fn drain_backlog<C: Calendar>(
    t: &TestDb,
    admin: &Client,
    pg: tokio_postgres::Config,
    calendar: C,
    config: DrainerConfig,
    n: u64,
) -> DrainRun {
    let keep = sessions(admin, &t.name).await;
    let commits_before = xact_commit(admin, &t.name).await;
    let io_before = io(admin).await;
    let db =
        Database::from_config(pg, crate::support::pool_size(config.concurrency)).expect("pool");
    let drainer = OutboxDrainer::new(db, calendar, config).expect("drainer");
    let meter = CpuMeter::start(admin, &t.name).await;
    let started = Instant::now();
    let handle = drainer.start();
    let (report, took) = wait_finished(&handle, n, started, Duration::from_secs(600)).await;
    let cpu = meter.stop(admin).await;
    let last = handle.stop().await;
    let processed = last.completed + last.superseded + last.dead_lettered;
    drop(drainer);
    settle_stats(admin, &t.name, keep).await;
    let commits = xact_commit(admin, &t.name).await - commits_before;
    let io = io(admin).await.minus(&io_before, processed as f64);
    DrainRun {
        items: n,
        secs: took.as_secs_f64(),
        cpu,
        commits,
        processed,
        report,
        io,
    }
}

/// Where the test database listens (host:port), for the proxy.
pub fn upstream(t: &TestDb) -> String {
    let host = t
        .config
        .get_hosts()
        .iter()
        .find_map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => Some(h.clone()),
            #[allow(unreachable_patterns)]
            _ => None,
        })
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let port = t.config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// A connection config for the test database through a proxy: in plaintext,
/// or the proxy could not read the protocol (the default `prefer` negotiates
/// TLS with a server that offers it).
pub fn through(t: &TestDb, proxy: &WireCounter) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(proxy.port)
        .dbname(&t.name)
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    if let Some(user) = t.config.get_user() {
        c.user(user);
    }
    if let Some(password) = t.config.get_password() {
        c.password(password);
    }
    c
}

/// Block and update counters of sync_outbox (pg_statio_user_tables,
/// pg_stat_user_tables); per item once subtracted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Io {
    /// Heap blocks read from outside shared_buffers.
    pub heap_read: f64,
    /// Heap buffer hits.
    pub heap_hit: f64,
    /// Index blocks read from outside shared_buffers.
    pub idx_read: f64,
    /// Index buffer hits.
    pub idx_hit: f64,
    /// Rows updated.
    pub updates: f64,
    /// Of which heap-only (HOT).
    pub hot: f64,
}

impl Io {
    /// Per item: (self - before) / items.
    pub fn minus(&self, before: &Io, items: f64) -> Io {
        Io {
            heap_read: (self.heap_read - before.heap_read) / items,
            heap_hit: (self.heap_hit - before.heap_hit) / items,
            idx_read: (self.idx_read - before.idx_read) / items,
            idx_hit: (self.idx_hit - before.idx_hit) / items,
            updates: (self.updates - before.updates) / items,
            hot: (self.hot - before.hot) / items,
        }
    }
}

pub async fn io(admin: &Client) -> Io {
    let r = admin
        .query_one(
            "SELECT coalesce(s.heap_blks_read, 0)::float8, coalesce(s.heap_blks_hit, 0)::float8,
                    coalesce(s.idx_blks_read, 0)::float8, coalesce(s.idx_blks_hit, 0)::float8,
                    t.n_tup_upd::float8, t.n_tup_hot_upd::float8
               FROM pg_statio_user_tables s JOIN pg_stat_user_tables t USING (relid)
              WHERE s.relname = 'sync_outbox'",
            &[],
        )
        .await
        .expect("table statistics");
    Io {
        heap_read: r.get(0),
        heap_hit: r.get(1),
        idx_read: r.get(2),
        idx_hit: r.get(3),
        updates: r.get(4),
        hot: r.get(5),
    }
}
