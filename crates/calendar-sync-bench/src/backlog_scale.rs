//! Scenario 5: backlog scale. Throughput with 1,000,000 finished rows plus
//! 100,000 pending versus the same 100,000 pending on an empty history; the
//! claim (`calendar_sync_claim`, through `store::claim`) timed on statistics
//! from before the load and after ANALYZE, and the plan of its page query.

use std::time::Instant;

use calendar_sync::DrainerConfig;
use calendar_sync::testing as store;
use calendar_sync_tests::{MemoryCalendar, TestDb};
use serde_json::json;
use tokio_postgres::Client;

use crate::engine::{DrainRun, Io, drain_backlog};
use crate::load::{backlog_unanalyzed, history};
use crate::report::{Report, f, verdict};
use crate::support::{machine, median, reset};

/// Target: throughput with history / without.
pub const TARGET_RATIO: f64 = 0.9;

/// Items asked of each timed claim (the default batch_size).
const CLAIM_LIMIT: usize = 32;
/// What the drainer passes as `max_examined` for a claim of 32
/// (`max(32 x 20, 1,000)`).
const MAX_EXAMINED: usize = 1_000;
/// Timed claims per measurement.
const CLAIMS: usize = 20;

/// The walk `calendar_sync_claim` makes for each page (at most 256 rows
/// inside, the page size outside), with the first page's values written in
/// (after seq 0, page size 32), without the per-row judging subqueries.
const PAGE_QUERY: &str = "SELECT * FROM (SELECT o.id, o.seq, o.operation, o.workspace_id, \
     o.calendar_id, o.source_type, o.source_id FROM sync_outbox o WHERE o.status = 'PENDING' \
     AND o.seq > 0 AND o.next_attempt_at <= now() ORDER BY o.seq LIMIT 256) o \
     ORDER BY o.seq LIMIT 32";

/// Timings of the real claim in one state of the statistics.
#[derive(Clone, Debug)]
struct ClaimTimes {
    /// The first claim of a new session (plpgsql compiles the function and
    /// plans its queries), client-side ms.
    first_ms: f64,
    /// The median of the next claims on the same session and prepared
    /// statement, client-side ms.
    median_ms: f64,
    /// Rows each claim handed out.
    claimed: usize,
    /// EXPLAIN (ANALYZE, BUFFERS) of the page query.
    plan: String,
    page_planning_ms: f64,
    page_execution_ms: f64,
}

impl ClaimTimes {
    fn json(&self) -> serde_json::Value {
        json!({"first_claim_ms": self.first_ms, "claim_median_ms": self.median_ms,
               "claimed_per_claim": self.claimed, "page_query_planning_ms": self.page_planning_ms,
               "page_query_execution_ms": self.page_execution_ms, "page_query_plan": self.plan})
    }
}

/// What one table measured.
struct State {
    run: DrainRun,
    stale: ClaimTimes,
    analyzed: ClaimTimes,
    io: Io,
    size: String,
}

/// Runs the scenario.
pub async fn run(quick: bool) {
    let (history_n, pending_n, measured) = if quick {
        (10_000, 1_000, 300)
    } else {
        (1_000_000, 100_000, 10_000)
    };
    let t = TestDb::new().await;
    let m = machine(&t).await;
    let admin = t.client().await;

    let empty = measure(&t, &admin, 0, pending_n, measured).await.0;
    let (full, setup_s) = measure(&t, &admin, history_n, pending_n, measured).await;

    let stale_n = if quick { 600 } else { 3_000 };
    let (one_stale, one_analyzed) = one_calendar(stale_n).await;

    let ratio = full.run.rate() / empty.run.rate();
    let mut report = Report::new("backlog-scale", "Scenario 5: backlog scale", &m, quick);
    report.para(&format!(
        "One worker at the defaults (concurrency 32, batch 32) into the in-process \
         MemoryCalendar (zero latency), timed over the first {measured} items of \
         {pending_n} pending UPSERT_EVENTs, on an empty history and with {history_n} finished \
         rows (90 % COMPLETED, 8 % SUPERSEDED, 2 % DEAD_LETTER, of the same sources) in the \
         table (setting up the history took {setup_s:.0} s). Each table is loaded with \
         autovacuum off for sync_outbox and never analyzed, which is what the planner \
         sees right after a burst into a new or truncated outbox until autovacuum gets to \
         it; the claim is timed there (\"stale statistics\"), then again after VACUUM \
         ANALYZE, then the worker drains. The claim is the library's own: \
         `store::claim` with `store::CLAIM` (`SELECT * FROM calendar_sync_claim($1, ..., $6)`), \
         limit {CLAIM_LIMIT}, max_examined {MAX_EXAMINED} (what the drainer passes for a claim \
         of {CLAIM_LIMIT}), prepared once on a new session as the drainer does; \"first\" is the first \
         claim of the session (plpgsql compiles the function and plans its queries), \
         \"median\" the median of the next {CLAIMS}, client-side. Each timed claim runs in \
         its own transaction, rolled back (and its advisory locks released), so each claims \
         the same head of the queue. \"Page query\" is EXPLAIN (ANALYZE, BUFFERS) of the \
         SELECT the function runs for each page, with the first page's values written in \
         (after seq 0, page size 32 outside a walk of at most 256), without the per-row \
         judging subqueries; inside the function it runs with plpgsql variables as \
         parameters under the generic plan the function keeps."
    ));
    let row = |label: &str, s: &State| {
        vec![
            label.to_owned(),
            s.size.clone(),
            f(s.run.rate(), 0),
            format!("{} / {}", f(s.stale.first_ms, 2), f(s.stale.median_ms, 2)),
            f(s.stale.page_execution_ms, 3),
            format!(
                "{} / {}",
                f(s.analyzed.first_ms, 2),
                f(s.analyzed.median_ms, 2)
            ),
            f(s.analyzed.page_execution_ms, 3),
            s.analyzed.claimed.to_string(),
            f(s.run.pg_cpu_per_1000(), 3),
        ]
    };
    report.table(
        &[
            "table",
            "sync_outbox size",
            "items/s",
            "claim, stale statistics: first / median ms",
            "page query, stale statistics, execution ms",
            "claim after ANALYZE: first / median ms",
            "page query after ANALYZE, execution ms",
            "rows per claim",
            "PostgreSQL CPU s / 1,000 items",
        ],
        &[
            row(&format!("{pending_n} pending, empty history"), &empty),
            row(
                &format!("{pending_n} pending + {history_n} finished"),
                &full,
            ),
        ],
    );
    let io_row = |label: &str, s: &State| {
        vec![
            label.to_owned(),
            f(s.io.heap_read + s.io.idx_read, 2),
            f(s.io.heap_hit + s.io.idx_hit, 1),
            f(s.io.idx_hit + s.io.idx_read, 1),
            f(s.io.updates, 2),
            f(s.io.hot, 2),
        ]
    };
    report.para(
        "Where the extra cost is, per item drained (pg_statio_user_tables and \
         pg_stat_user_tables of sync_outbox, deltas over the measured drain):",
    );
    report.table(
        &[
            "table",
            "blocks read outside shared_buffers",
            "buffer hits",
            "of which index blocks",
            "row updates",
            "of which HOT",
        ],
        &[
            io_row("empty history", &empty),
            io_row("with history", &full),
        ],
    );
    report.table(
        &["target", "measured", "verdict"],
        &[vec![
            format!("throughput ratio >= {TARGET_RATIO}"),
            f(ratio, 2),
            verdict(ratio >= TARGET_RATIO),
        ]],
    );
    report.para(&format!(
        "**Stale statistics, one calendar.** The case that used to stall the drainer: \
         {stale_n} pending rows of one (workspace, calendar) inserted into an outbox that was \
         never analyzed. Before the one-statement claim, one claim took 0.9 to 3.9 s there \
         (the judging query probed the source's rows for every pending row). Now one claim \
         takes **{:.2} ms** (first of the session) / {:.2} ms (median of the next {CLAIMS}), \
         claiming {} rows each, and {:.2} / {:.2} ms once the table is analyzed. Page query \
         plan on the stale statistics:",
        one_stale.first_ms,
        one_stale.median_ms,
        one_stale.claimed,
        one_analyzed.first_ms,
        one_analyzed.median_ms
    ));
    report.code(&one_stale.plan);
    report.para("Page query plan with the history in the table, after ANALYZE:");
    report.code(&full.analyzed.plan);
    report.para("Page query plan with the history in the table, stale statistics:");
    report.code(&full.stale.plan);
    report.para("Page query plan on an empty history, after ANALYZE:");
    report.code(&empty.analyzed.plan);
    report.set("history_rows", json!(history_n));
    report.set("pending_rows", json!(pending_n));
    report.set("measured_items", json!(measured));
    report.set(
        "calendar",
        json!("MemoryCalendar (in-process, zero latency)"),
    );
    report.set(
        "claim",
        json!({"statement": store::CLAIM, "limit": CLAIM_LIMIT, "max_examined": MAX_EXAMINED,
               "timed_claims": CLAIMS, "page_query": PAGE_QUERY}),
    );
    for (key, s) in [("empty_history", &empty), ("with_history", &full)] {
        report.set(
            key,
            json!({"items_per_s": s.run.rate(), "table_size": s.size,
                   "claim_stale_statistics": s.stale.json(),
                   "claim_after_analyze": s.analyzed.json(),
                   "per_item": {"heap_blocks_read": s.io.heap_read, "heap_blocks_hit": s.io.heap_hit,
                                "index_blocks_read": s.io.idx_read, "index_blocks_hit": s.io.idx_hit,
                                "updates": s.io.updates, "hot_updates": s.io.hot},
                   "postgres_cpu_s_per_1000": s.run.pg_cpu_per_1000()}),
        );
    }
    report.set(
        "stale_statistics_one_calendar",
        json!({"pending_rows_one_calendar": stale_n, "stale": one_stale.json(),
               "after_analyze": one_analyzed.json()}),
    );
    report.set("ratio", json!(ratio));
    report.set("target_ratio", json!(TARGET_RATIO));
    report.finish(quick);
}

/// Loads `history_n` finished and `pending_n` pending rows into an outbox
/// that autovacuum leaves alone, times the claim on those statistics, VACUUM
/// ANALYZE, times it again, then drains `measured` items. Also returns how
/// long the load took.
async fn measure(
    t: &TestDb,
    admin: &Client,
    history_n: i64,
    pending_n: i64,
    measured: i64,
) -> (State, f64) {
    reset(admin).await;
    admin
        .batch_execute("ALTER TABLE sync_outbox SET (autovacuum_enabled = false)")
        .await
        .expect("autovacuum off");
    let started = Instant::now();
    if history_n > 0 {
        history(admin, history_n, 20, "h").await;
    }
    backlog_unanalyzed(admin, pending_n, 20, "h").await;
    let setup_s = started.elapsed().as_secs_f64();
    let stale = time_claims(t).await;
    admin
        .batch_execute("ALTER TABLE sync_outbox RESET (autovacuum_enabled)")
        .await
        .expect("autovacuum on");
    admin
        .batch_execute("VACUUM ANALYZE sync_outbox")
        .await
        .expect("vacuum");
    let analyzed = time_claims(t).await;
    let size: String = admin
        .query_one(
            "SELECT pg_size_pretty(pg_total_relation_size('sync_outbox'))",
            &[],
        )
        .await
        .expect("size")
        .get(0);
    let run = drain_backlog(
        t,
        admin,
        t.config.clone(),
        MemoryCalendar::new(),
        DrainerConfig::default(),
        u64::try_from(measured).expect("a count"),
    )
    .await;
    let io = run.io;
    (
        State {
            run,
            stale,
            analyzed,
            io,
            size,
        },
        setup_s,
    )
}

/// Times the library's claim on a new session (see [`ClaimTimes`]), each
/// claim in a transaction rolled back, and explains the page query.
async fn time_claims(t: &TestDb) -> ClaimTimes {
    let client = t.client().await;
    let statement = client.prepare(store::CLAIM).await.expect("prepare claim");
    let mut first_ms = f64::NAN;
    let mut timings = Vec::new();
    let mut claimed = 0;
    for i in 0..=CLAIMS {
        client.batch_execute("BEGIN").await.expect("begin");
        let started = Instant::now();
        let batch = store::claim(
            &client,
            &statement,
            CLAIM_LIMIT,
            MAX_EXAMINED,
            std::time::Duration::ZERO,
        )
        .await
        .expect("claim");
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        client
            .batch_execute("ROLLBACK; SELECT pg_advisory_unlock_all()")
            .await
            .expect("rollback");
        claimed = batch.items.len();
        if i == 0 {
            first_ms = ms;
        } else {
            timings.push(ms);
        }
    }
    let (page_execution_ms, page_planning_ms, plan) = explain_page(&client).await;
    ClaimTimes {
        first_ms,
        median_ms: median(&timings),
        claimed,
        plan,
        page_planning_ms,
        page_execution_ms,
    }
}

/// EXPLAIN (ANALYZE, BUFFERS) of the claim's page query: (execution ms,
/// planning ms, plan).
async fn explain_page(client: &Client) -> (f64, f64, String) {
    let rows = client
        .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {PAGE_QUERY}"), &[])
        .await
        .expect("explain");
    let plan: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let time_of = |label: &str| {
        plan.iter()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|v| v.trim().trim_end_matches(" ms").parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (
        time_of("Execution Time:"),
        time_of("Planning Time:"),
        plan.join("\n"),
    )
}

/// The claim right after a burst of `n` rows of one calendar into a table
/// never analyzed (new, or truncated), before autovacuum got to it, and after
/// ANALYZE.
async fn one_calendar(n: i64) -> (ClaimTimes, ClaimTimes) {
    let fresh = TestDb::new().await;
    let admin = &fresh.client().await;
    admin
        .batch_execute("ALTER TABLE sync_outbox SET (autovacuum_enabled = false)")
        .await
        .expect("autovacuum off");
    backlog_unanalyzed(admin, n, 1, "b").await;
    let stale = time_claims(&fresh).await;
    admin
        .batch_execute("ALTER TABLE sync_outbox RESET (autovacuum_enabled); ANALYZE sync_outbox")
        .await
        .expect("analyze");
    let analyzed = time_claims(&fresh).await;
    (stale, analyzed)
}
