//! Scenario "tls": engine throughput with `sslmode=require` against plaintext
//! (`sslmode=disable`), side by side in one run: the same backlog, the same
//! drainer at its defaults, the modes alternated three times (median rate).

use calendar_sync::DrainerConfig;
use calendar_sync_tests::{MemoryCalendar, TestDb};
use serde_json::json;
use tokio_postgres::config::SslMode;

use crate::engine::drain_backlog;
use crate::load::backlog;
use crate::report::{Report, f, verdict};
use crate::support::{breathe, machine, median, reset};

/// Target: TLS throughput as a fraction of plaintext.
pub const TARGET_RATIO: f64 = 0.8;

/// Runs the scenario.
pub async fn run(quick: bool) {
    let (n, rounds) = if quick { (200, 1) } else { (10_000, 3) };
    let t = TestDb::new().await;
    let m = machine(&t).await;
    let admin = t.client().await;
    let modes = [("disable", SslMode::Disable), ("require", SslMode::Require)];
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, (_, mode)) in modes.iter().enumerate() {
            reset(&admin).await;
            backlog(&admin, n, 20, "s").await;
            breathe().await;
            let mut pg = t.config.clone();
            pg.ssl_mode(*mode);
            let config = DrainerConfig::default();
            let run = drain_backlog(
                &t,
                &admin,
                pg,
                MemoryCalendar::new(),
                config,
                u64::try_from(n).expect("a count"),
            )
            .await;
            rates[i].push(run.rate());
        }
    }
    let plain = median(&rates[0]);
    let tls = median(&rates[1]);
    let ratio = tls / plain;
    let mut report = Report::new("tls", "TLS to PostgreSQL: throughput", &m, quick);
    report.para(&format!(
        "{n} UPSERT_EVENTs of new sources over 20 workspaces, drained by one drainer at its \
         defaults (concurrency 32, batch_size 32) into the in-process MemoryCalendar, over \
         the local server's TCP port: plaintext (`sslmode=disable`) and TLS 1.3 on rustls/ring \
         (`sslmode=require`, the server's certificate not verified), alternated {rounds} times; \
         the median items/s of each. The machine was shared with other work while it ran."
    ));
    let all = |r: &[f64]| r.iter().map(|x| f(*x, 0)).collect::<Vec<_>>().join(", ");
    report.table(
        &["sslmode", "items/s (median)", "runs"],
        &[
            vec!["disable".into(), f(plain, 0), all(&rates[0])],
            vec!["require".into(), f(tls, 0), all(&rates[1])],
        ],
    );
    report.table(
        &["target", "measured", "verdict"],
        &[vec![
            format!("require >= {TARGET_RATIO}x disable"),
            format!("{}x", f(ratio, 2)),
            verdict(ratio >= TARGET_RATIO),
        ]],
    );
    report.set("items", json!(n));
    report.set("disable_items_per_s", json!(rates[0]));
    report.set("require_items_per_s", json!(rates[1]));
    report.set("ratio", json!(ratio));
    report.set("target_ratio", json!(TARGET_RATIO));
    report.finish(quick);
}
