//! `calendar-sync-bench`: figures measured against the real PostgreSQL, printed
//! and written under `docs/benchmarks/` (markdown + JSON, and SVG charts).
//!
//! ```text
//! cargo run --release -p calendar-sync-bench -- <scenario> [--quick]
//! cargo run --release -p calendar-sync-bench -- all [--quick]
//! ```
//!
//! `--quick` runs a tiny size and only prints (a smoke test that keeps the
//! suite from rotting); full runs write their results. See
//! `docs/benchmarks/README.md`.

#![expect(
    clippy::cast_precision_loss,
    reason = "benchmark statistics: counts, sizes and durations far below 2^53, as f64"
)]

mod backlog_scale;
mod baseline;
mod batching;
mod calls;
mod chart;
mod dashboard;
mod drift_check;
mod engine;
mod fairness;
mod footprint;
mod google_env;
mod load;
mod pickup;
mod probe;
mod producer;
mod quota;
mod report;
mod support;
mod throughput;
mod tls;
mod wire;

use std::time::Instant;

/// The scenarios, in the issue's order: (number, name, what it measures).
const SCENARIOS: [(&str, &str, &str); 15] = [
    ("1", "throughput", "engine throughput at concurrency 1/8/32"),
    ("2", "baseline", "the seed's design vs ours"),
    (
        "3",
        "pickup-latency",
        "commit-to-calendar latency of an idle worker",
    ),
    ("4", "quota", "quota saturation against the fake Google"),
    (
        "5",
        "backlog-scale",
        "throughput with 1M finished rows of history",
    ),
    (
        "6",
        "calls-per-change",
        "Google write calls per item and per source",
    ),
    ("7", "footprint", "worker binary RSS, and 1 vs 4 processes"),
    (
        "-",
        "producer-insert-rate",
        "what the NOTIFY trigger costs producers",
    ),
    ("-", "tls", "throughput with sslmode=require vs plaintext"),
    (
        "-",
        "noisy-neighbour",
        "a busy tenant vs another's items, shared budget",
    ),
    (
        "-",
        "workers-come-and-go",
        "drainers 1 -> 3 -> 2 sharing the project quota",
    ),
    (
        "-",
        "dashboard-pages",
        "every dashboard page on 1M finished + 100k pending",
    ),
    (
        "-",
        "dashboard-load",
        "throughput with the dashboard refreshing vs without",
    ),
    (
        "-",
        "google-batch",
        "single calls vs Google's batch endpoint",
    ),
    (
        "-",
        "drift-check",
        "events.list calls and ms per calendar per drift check",
    ),
];

fn usage() -> ! {
    eprintln!("usage: calendar-sync-bench <scenario>|all [--quick]\n\nscenarios:");
    for (n, name, what) in SCENARIOS {
        eprintln!("  {n} {name:<22} {what}");
    }
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let Some(which) = args.iter().find(|a| !a.starts_with("--")) else {
        usage()
    };
    if which == "engine-worker" {
        // A child process of the footprint scenario: one drainer into an
        // in-memory calendar until its standard input closes.
        footprint::engine_worker(&args).await;
        return;
    }
    if which == "profile-drain" {
        throughput::profile_drain(&args).await;
        return;
    }
    let names: Vec<&str> = if which == "all" {
        SCENARIOS.iter().map(|s| s.1).collect()
    } else {
        match SCENARIOS.iter().find(|s| s.0 == which || s.1 == which) {
            Some(s) => vec![s.1],
            None => usage(),
        }
    };
    let started = Instant::now();
    for name in names {
        let t = Instant::now();
        println!("\n=== {name}{} ===\n", if quick { " (quick)" } else { "" });
        run(name, quick).await;
        println!("\n({name}: {:.1} s)", t.elapsed().as_secs_f64());
    }
    println!("\ntotal: {:.1} s", started.elapsed().as_secs_f64());
}

async fn run(name: &str, quick: bool) {
    match name {
        "throughput" => throughput::run(quick).await,
        "baseline" => baseline::run(quick).await,
        "pickup-latency" => pickup::run(quick).await,
        "quota" => quota::run(quick).await,
        "backlog-scale" => backlog_scale::run(quick).await,
        "calls-per-change" => calls::run(quick).await,
        "footprint" => footprint::run(quick).await,
        "producer-insert-rate" => producer::run(quick).await,
        "tls" => tls::run(quick).await,
        "noisy-neighbour" => fairness::noisy_neighbour(quick).await,
        "workers-come-and-go" => fairness::workers_come_and_go(quick).await,
        "dashboard-pages" => dashboard::pages(quick).await,
        "dashboard-load" => dashboard::load(quick).await,
        "google-batch" => batching::run(quick).await,
        "drift-check" => drift_check::run(quick).await,
        _ => usage(),
    }
}
