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
    /// Transactions committed in the database meanwhile (pg_stat_database).
    pub commits: i64,
    /// The drainer's own report.
    pub report: DrainReport,
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
        self.commits as f64 / self.items as f64
    }
}

/// Starts a drainer (its own pool of `concurrency + 4`, as the worker binary
/// sizes it) over `pg`, waits until `n` items are finished, stops it and
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
    let db = Database::from_config(pg, config.concurrency + 4).expect("pool");
    let drainer = OutboxDrainer::new(db, calendar, config).expect("drainer");
    let meter = CpuMeter::start(admin, &t.name).await;
    let started = Instant::now();
    let handle = drainer.start();
    let (report, took) = wait_finished(&handle, n, started, Duration::from_secs(600)).await;
    let cpu = meter.stop(admin).await;
    handle.stop().await;
    drop(drainer);
    settle_stats(admin, &t.name, keep).await;
    let commits = xact_commit(admin, &t.name).await - commits_before;
    DrainRun {
        items: n,
        secs: took.as_secs_f64(),
        cpu,
        commits,
        report,
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

/// A connection config for the test database through a proxy.
pub fn through(t: &TestDb, proxy: &WireCounter) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1").port(proxy.port).dbname(&t.name);
    if let Some(user) = t.config.get_user() {
        c.user(user);
    }
    if let Some(password) = t.config.get_password() {
        c.password(password);
    }
    c
}
