//! Measuring from outside the library: CPU time and memory from `/proc`, the
//! machine and PostgreSQL it runs on, database counters, percentiles.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use calendar_sync::{DrainReport, DrainerHandle};
use calendar_sync_tests::TestDb;
use tokio_postgres::Client;

/// Linux reports process CPU time in clock ticks of 1/100 s (USER_HZ is 100 on
/// every architecture Rust targets for Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU seconds of a process (all its threads), from `/proc/PID/stat`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the name start at field 3 (state); utime is 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// CPU seconds used so far by this process.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds("self").unwrap_or(0.0)
}

/// Resident set size and its peak (VmRSS, VmHWM) of a process, in MiB.
pub fn rss_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Busy and total jiffies of the whole machine, from `/proc/stat`.
fn machine_jiffies() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// CPU use of this process, of the PostgreSQL backends serving one database,
/// and of the whole machine, between `start` and `stop`.
pub struct CpuMeter {
    dbname: String,
    own: f64,
    backends: HashMap<String, f64>,
    machine: (f64, f64),
}

/// What a [`CpuMeter`] measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// CPU seconds of this (the worker's) process.
    pub worker: f64,
    /// CPU seconds of the PostgreSQL backends connected to the database.
    pub postgres: f64,
    /// Busy share of all cores of the machine (0..=1).
    pub machine_busy: f64,
}

impl CpuMeter {
    /// Starts measuring; `admin` is any connection able to read `pg_stat_activity`.
    pub async fn start(admin: &Client, dbname: &str) -> Self {
        Self {
            dbname: dbname.to_owned(),
            own: own_cpu_seconds(),
            backends: backend_cpu(admin, dbname).await,
            machine: machine_jiffies(),
        }
    }

    /// Stops measuring. Backends that connected meanwhile count from zero;
    /// call this before the measured connections close.
    pub async fn stop(&self, admin: &Client) -> CpuUse {
        let now = backend_cpu(admin, &self.dbname).await;
        let postgres = now
            .iter()
            .map(|(pid, cpu)| cpu - self.backends.get(pid).copied().unwrap_or(0.0))
            .sum();
        let (busy, total) = machine_jiffies();
        let machine_busy = if total > self.machine.1 {
            (busy - self.machine.0) / (total - self.machine.1)
        } else {
            0.0
        };
        CpuUse {
            worker: own_cpu_seconds() - self.own,
            postgres,
            machine_busy,
        }
    }
}

async fn backend_cpu(admin: &Client, dbname: &str) -> HashMap<String, f64> {
    let rows = admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1",
            &[&dbname],
        )
        .await
        .expect("pg_stat_activity");
    rows.iter()
        .filter_map(|r| {
            let pid = r.get::<_, i32>(0).to_string();
            cpu_seconds(&pid).map(|cpu| (pid, cpu))
        })
        .collect()
}

/// Committed transactions of a database so far (pg_stat_database). Backends
/// report on exit or at most every few seconds: close the measured
/// connections and use [`settle_stats`] before reading.
pub async fn xact_commit(admin: &Client, dbname: &str) -> i64 {
    admin
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1",
            &[&dbname],
        )
        .await
        .expect("pg_stat_database")
        .get(0)
}

/// Waits until at most `keep` sessions remain on the database (the measured
/// ones have exited and flushed their statistics).
pub async fn settle_stats(admin: &Client, dbname: &str, keep: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&dbname],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n <= keep {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Sessions connected to the database now.
pub async fn sessions(admin: &Client, dbname: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
            &[&dbname],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

/// Waits until the running drainer has finished `n` items (completed or
/// superseded, dead letters included); returns the report and the time it took
/// from `since`. Panics after `timeout`.
pub async fn wait_finished(
    handle: &DrainerHandle,
    n: u64,
    since: Instant,
    timeout: Duration,
) -> (DrainReport, Duration) {
    loop {
        let r = handle.report();
        if r.completed + r.superseded + r.dead_lettered >= n {
            return (r, since.elapsed());
        }
        assert!(
            since.elapsed() < timeout,
            "timed out: {} of {n} items finished ({r:?})",
            r.completed + r.superseded + r.dead_lettered
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until no row is PENDING or PROCESSING (everything due is finished).
pub async fn wait_idle(admin: &Client, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM sync_outbox WHERE status IN ('PENDING', 'PROCESSING')",
                &[],
            )
            .await
            .expect("count unfinished")
            .get(0);
        if n == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "timed out: {n} rows unfinished");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Empties the outbox, the bindings and the shared budget, and puts the
/// claim's cursor back to the start.
pub async fn reset(admin: &Client) {
    admin
        .batch_execute(
            "TRUNCATE sync_outbox, calendar_event_bindings, calendar_sync_budget;
             UPDATE calendar_sync_claim_cursor SET pair = NULL, seq = NULL",
        )
        .await
        .expect("truncate");
}

/// The `p`-th percentile (0..=100) of sorted values, nearest rank.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a rank in 1..=len: float to int saturates, and the clamp bounds it"
)]
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts a copy of the values.
pub fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The median of the values.
pub fn median(values: &[f64]) -> f64 {
    percentile(&sorted(values), 50.0)
}

/// One line describing the machine and the PostgreSQL server.
pub async fn machine(t: &TestDb) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_owned(), |s| s.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let client = t.client().await;
    let setting = |name: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .map(|r| r.get::<_, String>(0))
                .unwrap_or_default()
        }
    };
    let version = setting("server_version").await;
    let settings = format!(
        "shared_buffers {}, work_mem {}, synchronous_commit {}, max_connections {}",
        setting("shared_buffers").await,
        setting("work_mem").await,
        setting("synchronous_commit").await,
        setting("max_connections").await
    );
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned();
    Machine {
        cpu,
        cores,
        mem_gib,
        kernel,
        postgres: format!("PostgreSQL {version} on 127.0.0.1 (loopback), {settings}"),
        load,
    }
}

/// The machine a run happened on.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Cores available.
    pub cores: usize,
    /// Memory.
    pub mem_gib: f64,
    /// Linux release.
    pub kernel: String,
    /// Server version and the settings that matter here.
    pub postgres: String,
    /// 1-minute load average when the run started (others share the machine).
    pub load: String,
}

impl Machine {
    /// A one-line description for the reports.
    pub fn line(&self) -> String {
        format!(
            "{} cores ({}), {:.0} GiB RAM, Linux {}; {}; load average {} at start",
            self.cores, self.cpu, self.mem_gib, self.kernel, self.postgres, self.load
        )
    }

    /// As JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "cpu": self.cpu,
            "cores": self.cores,
            "mem_gib": (self.mem_gib * 10.0).round() / 10.0,
            "kernel": self.kernel,
            "postgres": self.postgres,
            "load_at_start": self.load,
        })
    }
}

/// A short pause that lets autovacuum and the stats collector catch up
/// between measured runs.
pub async fn breathe() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The pool the worker binary gives a drainer of `concurrency`
/// (calendar-sync-worker's commands.rs: items use the pool only around their
/// call, successes are recorded in batches).
pub fn pool_size(concurrency: usize) -> usize {
    concurrency.min(16) + 4
}
