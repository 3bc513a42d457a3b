//! Scenario 5: backlog scale. Throughput with 1,000,000 finished rows plus
//! 100,000 pending versus the same 100,000 pending on an empty history, and
//! the claim statement's plan in both (run by hand with EXPLAIN ANALYZE).

use std::time::Instant;

use calendar_sync::DrainerConfig;
use calendar_sync_tests::{MemoryCalendar, TestDb};
use serde_json::json;
use tokio_postgres::Client;

use crate::engine::{DrainRun, Io, drain_backlog};
use crate::load::{backlog, backlog_unanalyzed, history};
use crate::report::{Report, f, verdict};
use crate::support::{machine, median, reset};

/// Target: throughput with history / without.
pub const TARGET_RATIO: f64 = 0.9;

/// The library's source, for statements it keeps private.
const STORE_RS: &str = include_str!("../../calendar-sync/src/store.rs");

/// The text of a `const NAME: &str = r#"…"#;` in store.rs.
pub fn statement(name: &str) -> &'static str {
    let start = format!("const {name}: &str = r#\"");
    let from = STORE_RS
        .find(&start)
        .unwrap_or_else(|| panic!("{name} not found in store.rs"))
        + start.len();
    let len = STORE_RS[from..].find("\"#;").expect("end of statement");
    &STORE_RS[from..from + len]
}

/// What one state of the table measured.
struct State {
    run: DrainRun,
    plan: String,
    planning_ms: f64,
    execution_ms: f64,
    judge_ms: f64,
    prepared_ms: f64,
    generic_ms: f64,
    literal_ms: f64,
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

    reset(&admin).await;
    backlog(&admin, pending_n, 20, "h").await;
    let empty = measure(&t, &admin, measured).await;

    reset(&admin).await;
    let started = Instant::now();
    history(&admin, history_n, 20, "h").await;
    backlog(&admin, pending_n, 20, "h").await;
    let setup_s = started.elapsed().as_secs_f64();
    let full = measure(&t, &admin, measured).await;

    let stale_n = if quick { 600 } else { 3_000 };
    let stale = stale_claim(stale_n).await;

    let ratio = full.run.rate() / empty.run.rate();
    let mut report = Report::new("backlog-scale", "Scenario 5: backlog scale", &m, quick);
    report.para(&format!(
        "One worker at the defaults (concurrency 8, batch 10) into the in-process \
         MemoryCalendar (zero latency), timed over the first {measured} items of \
         {pending_n} pending UPSERT_EVENTs, on an empty history and with {history_n} finished \
         rows (90 % COMPLETED, 8 % SUPERSEDED, 2 % DEAD_LETTER, of the same sources) in the \
         table. VACUUM ANALYZE after loading (setting up the history took {setup_s:.0} s). \
         The claim statement (judge_candidates, LIMIT 10) was run by hand with EXPLAIN \
         (ANALYZE, BUFFERS) before draining; \"as the library runs it\" is the median of 20 \
         client-side timings of prepare + execute, the way the library sends it (it plans \
         every time); then variants a library change could use: \"cached \
         prepared statement\" is the median of 20 executions of one statement prepared \
         once (what statement caching would give), and the same with plan_cache_mode = \
         force_generic_plan (PostgreSQL otherwise keeps choosing a custom plan for it, and \
         plans it on every execution)."
    ));
    let row = |label: &str, s: &State| {
        vec![
            label.to_owned(),
            s.size.clone(),
            f(s.run.rate(), 0),
            f(s.planning_ms, 3),
            f(s.execution_ms, 3),
            f(s.judge_ms, 3),
            f(s.prepared_ms, 3),
            f(s.generic_ms, 3),
            f(s.literal_ms, 3),
            f(s.run.pg_cpu_per_1000(), 3),
        ]
    };
    report.table(
        &[
            "table",
            "sync_outbox size",
            "items/s",
            "claim planning ms",
            "claim execution ms",
            "claim as the library runs it, ms",
            "claim as a cached prepared statement, ms",
            "prepared, generic plan forced, ms",
            "prepared with LIMIT 10 written in, ms",
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
        "**Stale statistics.** The plans above are made with fresh statistics (ANALYZE after \
         loading). Right after a burst they are not: autovacuum looks at a database at most once \
         per autovacuum_naptime (1 min). {stale_n} pending rows of one (workspace, calendar) \
         inserted into an outbox that was never analyzed (a new installation, or after a \
         TRUNCATE): one claim (LIMIT 10) took **{:.0} ms** (planning {:.1} ms), and {:.2} ms once the table \
         was analyzed. The planner, believing the table nearly empty, evaluates the \
         \"another item of this source is PROCESSING\" subquery for every pending row through \
         the (workspace, calendar) index and filters the whole calendar each time: quadratic \
         in the calendar's backlog. A worker stuck in that claim holds the claim mutex, so \
         every worker stalls until autovacuum runs (in one run of pickup-latency's producer phase, \
         6,000 rows of one calendar stalled the worker for over two minutes). With statistics \
         from a history of finished rows the planner walks the pending index in order and stops \
         at the LIMIT, as above. Plan:",
        stale.0, stale.1, stale.2
    ));
    report.code(&stale.3);
    report.para("Claim plan with the history in the table:");
    report.code(&full.plan);
    report.para("Claim plan on an empty history:");
    report.code(&empty.plan);
    report.set("history_rows", json!(history_n));
    report.set("pending_rows", json!(pending_n));
    report.set("measured_items", json!(measured));
    report.set(
        "calendar",
        json!("MemoryCalendar (in-process, zero latency)"),
    );
    for (key, s) in [("empty_history", &empty), ("with_history", &full)] {
        report.set(
            key,
            json!({"items_per_s": s.run.rate(), "table_size": s.size,
                   "claim_planning_ms": s.planning_ms, "claim_execution_ms": s.execution_ms,
                   "claim_client_ms": s.judge_ms, "claim_prepared_ms": s.prepared_ms, "claim_prepared_generic_ms": s.generic_ms,
                   "claim_prepared_literal_limit_ms": s.literal_ms,
                   "per_item": {"heap_blocks_read": s.io.heap_read, "heap_blocks_hit": s.io.heap_hit,
                                "index_blocks_read": s.io.idx_read, "index_blocks_hit": s.io.idx_hit,
                                "updates": s.io.updates, "hot_updates": s.io.hot}, "postgres_cpu_s_per_1000": s.run.pg_cpu_per_1000(),
                   "plan": s.plan}),
        );
    }
    report.set(
        "stale_statistics",
        json!({"pending_rows_one_calendar": stale_n, "claim_execution_ms": stale.0,
               "claim_planning_ms": stale.1, "after_analyze_ms": stale.2, "plan": stale.3}),
    );
    report.set("ratio", json!(ratio));
    report.set("target_ratio", json!(TARGET_RATIO));
    report.finish(quick);
}

async fn measure(t: &TestDb, admin: &Client, measured: i64) -> State {
    admin
        .batch_execute("VACUUM ANALYZE sync_outbox")
        .await
        .expect("vacuum");
    let size: String = admin
        .query_one(
            "SELECT pg_size_pretty(pg_total_relation_size('sync_outbox'))",
            &[],
        )
        .await
        .expect("size")
        .get(0);
    let judge = statement("JUDGE_CANDIDATES");
    let plan_rows = admin
        .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {judge}"), &[&10i64])
        .await
        .expect("explain");
    let plan: Vec<String> = plan_rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let time_of = |label: &str| {
        plan.iter()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|v| v.trim().trim_end_matches(" ms").parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let (planning_ms, execution_ms) = (time_of("Planning Time:"), time_of("Execution Time:"));
    let mut timings = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        admin.query(judge, &[&10i64]).await.expect("judge");
        timings.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let prepared = admin.prepare(judge).await.expect("prepare judge");
    let mut prepared_timings = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        admin.query(&prepared, &[&10i64]).await.expect("judge");
        prepared_timings.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    // PostgreSQL keeps re-planning it (its generic plan, with LIMIT unknown, looks
    // dearer than a custom one); forcing the generic plan removes the planning.
    admin
        .batch_execute("SET plan_cache_mode = force_generic_plan")
        .await
        .expect("set plan_cache_mode");
    let generic = admin.prepare(judge).await.expect("prepare judge");
    let mut generic_timings = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        admin.query(&generic, &[&10i64]).await.expect("judge");
        generic_timings.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    admin
        .batch_execute("RESET plan_cache_mode")
        .await
        .expect("reset plan_cache_mode");
    // The limit written into the text: a statement without parameters gets a
    // generic plan that knows the limit.
    let literal = admin
        .prepare(&judge.replace("LIMIT $1", "LIMIT 10"))
        .await
        .expect("prepare literal judge");
    let mut literal_timings = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        admin.query(&literal, &[]).await.expect("judge");
        literal_timings.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let run = drain_backlog(
        t,
        admin,
        t.config.clone(),
        MemoryCalendar::new(),
        DrainerConfig::default(),
        measured as u64,
    )
    .await;
    let io = run.io;
    State {
        run,
        plan: plan.join("\n"),
        planning_ms,
        execution_ms,
        judge_ms: median(&timings),
        prepared_ms: median(&prepared_timings),
        generic_ms: median(&generic_timings),
        literal_ms: median(&literal_timings),
        io,
        size,
    }
}

/// EXPLAIN ANALYZE of the claim statement: (execution ms, planning ms, plan).
async fn explain_judge(admin: &Client) -> (f64, f64, String) {
    let rows = admin
        .query(
            &format!(
                "EXPLAIN (ANALYZE, BUFFERS) {}",
                statement("JUDGE_CANDIDATES")
            ),
            &[&10i64],
        )
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

/// One claim right after a burst of `n` rows of one calendar into a table
/// never analyzed (new, or truncated), before autovacuum got to it:
/// (execution ms, planning ms, execution ms after ANALYZE, plan).
async fn stale_claim(n: i64) -> (f64, f64, f64, String) {
    let fresh = TestDb::new().await;
    let admin = &fresh.client().await;
    admin
        .batch_execute("ALTER TABLE sync_outbox SET (autovacuum_enabled = false)")
        .await
        .expect("autovacuum off");
    backlog_unanalyzed(admin, n, 1, "b").await;
    let (stale_ms, planning_ms, plan) = explain_judge(admin).await;
    admin
        .batch_execute("ALTER TABLE sync_outbox RESET (autovacuum_enabled); ANALYZE sync_outbox")
        .await
        .expect("analyze");
    let (fresh_ms, _, _) = explain_judge(admin).await;
    (stale_ms, planning_ms, fresh_ms, plan)
}
