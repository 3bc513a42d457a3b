//! Scenario 4: quota saturation. The fake Google enforces Google's quotas
//! (sliding windows, per user and per project, time scaled so the run stays
//! short: same rates, shorter windows) and answers after 100 ms; 100 workspaces;
//! a backlog larger than the quota. The drainers pay from the budgets shared
//! through the database (`calendar_sync_budget`) at their documented shape (a burst of a
//! sixtieth, refilled over the window plus a sixtieth of it).

use std::time::{Duration, SystemTime};

use calendar_sync::{Database, DrainReport, DrainerConfig, OutboxDrainer};
use calendar_sync_tests::TestDb;
use fake_google::{ApiMethod, FakeGoogle, QuotaConfig};
use serde_json::json;

use crate::google_env::{calendar_with, config as google_config, seed_fake, store_connections};
use crate::load::backlog;
use crate::report::{Report, verdict};
use crate::support::{machine, reset};

/// Target: share of the project quota reached.
pub const TARGET_SHARE: f64 = 0.95;
/// The fake's latency.
const LATENCY: Duration = Duration::from_millis(100);

struct Case {
    label: &'static str,
    drainers: u32,
    concurrency: usize,
}

const CASES: [Case; 3] = [
    Case {
        label: "1 drainer, concurrency 32 (all defaults)",
        drainers: 1,
        concurrency: 32,
    },
    Case {
        label: "1 drainer, concurrency 8",
        drainers: 1,
        concurrency: 8,
    },
    Case {
        label: "2 drainers sharing the budget, concurrency 32 each (defaults)",
        drainers: 2,
        concurrency: 32,
    },
];

/// What one case measured.
struct Outcome {
    /// Accepted calls / what the project quota allows, after the first window.
    steady_share: f64,
    /// The fullest sliding window / the project quota.
    peak_share: f64,
    /// Accepted calls in the first window / the project quota.
    first_share: f64,
    accepted: usize,
    rejections: u64,
    rejected_403_429: usize,
    /// 403/429 answers after the first window.
    late_rejections: usize,
    /// When those came, seconds after the first call.
    late_rejection_times: Vec<f64>,
    /// Accepted calls per second, as a share of the quota's rate, over time.
    series: Vec<(f64, f64)>,
    report: DrainReport,
}

/// Runs the scenario.
pub async fn run(quick: bool) {
    let (window, duration, workspaces) = if quick {
        (Duration::from_secs(1), Duration::from_secs(2), 20)
    } else {
        (Duration::from_secs(6), Duration::from_secs(30), 100)
    };
    let quota = QuotaConfig::google().scaled_to(window);
    let t = TestDb::new().await;
    let m = machine(&t).await;
    store_connections(&t, workspaces).await;
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    let mut series = Vec::new();
    // The target is about the defaults: concurrency 8 cannot fill the quota
    // at 100 ms a call by construction (8 in flight / ~0.12 s < 166.7/s).
    let default_concurrency = DrainerConfig::default().concurrency;
    let mut defaults_met = true;
    for case in &CASES {
        let o = run_case(&t, case, quota, duration, workspaces).await;
        let met = o.steady_share >= TARGET_SHARE && o.rejected_403_429 == 0;
        if case.concurrency == default_concurrency {
            defaults_met &= met;
        }
        rows.push(vec![
            case.label.to_owned(),
            format!("{:.1} %", o.steady_share * 100.0),
            format!("{:.1} %", o.peak_share * 100.0),
            format!("{:.1} %", o.first_share * 100.0),
            o.accepted.to_string(),
            format!(
                "{} ({} after the first window{})",
                o.rejected_403_429,
                o.late_rejections,
                match (
                    o.late_rejection_times.first(),
                    o.late_rejection_times.last()
                ) {
                    (Some(a), Some(b)) => format!(", at {a:.1}-{b:.1} s"),
                    _ => String::new(),
                }
            ),
            o.report.retried.to_string(),
            verdict(met),
        ]);
        json_rows.push(json!({
            "case": case.label, "drainers": case.drainers, "concurrency": case.concurrency,
            "steady_share_of_project_quota": o.steady_share,
            "peak_window_share": o.peak_share,
            "first_window_share": o.first_share,
            "accepted_calls": o.accepted,
            "quota_rejections": o.rejections,
            "answers_403_or_429": o.rejected_403_429,
            "answers_403_or_429_after_first_window": o.late_rejections,
            "answers_403_or_429_after_first_window_at_s": o.late_rejection_times,
            "items_retried": o.report.retried,
            "items_completed": o.report.completed,
            "per_second_share": o.series,
        }));
        series.push((case.label.to_owned(), o.series));
    }
    let mut report = Report::new("quota", "Scenario 4: quota saturation", &m, quick);
    report.para(&format!(
        "The fake Google (in-process, real HTTP through google-calendar3) with quota \
         enforcement scaled to {ws} s windows: {pu} calls per user and {pp} per project per \
         window (Google's 600/min and 10,000/min at the same rates), {lat} ms latency on every \
         call, {workspaces} workspaces (one connection and calendar each), a backlog of new \
         sources (one insert call each) larger than {secs} s of quota. The shared budget \
         at its documented shape but for its window (below); each drainer has its own GoogleCalendar, as separate \
         processes would. Each case runs {secs} s. Share = accepted calls / calls the project \
         quota allows; steady = after the first window; peak = the fullest sliding window.",
        ws = window.as_secs_f64(),
        pu = quota.per_user,
        pp = quota.per_project,
        lat = LATENCY.as_millis(),
        secs = duration.as_secs(),
    ));
    let window_s = window.as_secs_f64();
    report.para(&format!(
        "Budget window: the buckets (`calendar_sync_budget`) count over \
         `GoogleConfig::quota_window`, a minute by default; here it is scaled like the \
         fake's, to {window_s} s, with the quotas per window set to the fake's ({} per \
         project, {} per connection), shared by however many drainers run. A bucket lets a \
         burst through at once ({} project calls) and refills so that the burst plus a \
         window and a sixtieth of refill is the quota: no window, the first included, holds \
         more than the quota even when a call leaves a little after its token was taken.",
        quota.per_project,
        quota.per_user,
        (quota.per_project / 60).clamp(1, 100),
    ));
    report.table(
        &[
            "case",
            "share of project quota (steady)",
            "peak window",
            "first window",
            "accepted calls",
            "403/429 answers",
            "items retried",
            "target >= 95 % and zero 403/429",
        ],
        &rows,
    );
    report.para(&format!(
        "Target (>= 95 % of the project quota with zero 403/429) at the default \
         concurrency ({default_concurrency}, 1 and 2 drainers): {}; concurrency 8 is shown for \
         how filling the quota depends on concurrency x latency.",
        if defaults_met {
            "met"
        } else {
            "**not met** (see the rows)"
        }
    ));
    report.set("window_s", json!(window.as_secs_f64()));
    report.set("per_user", json!(quota.per_user));
    report.set("per_project", json!(quota.per_project));
    report.set(
        "latency_ms",
        json!(u64::try_from(LATENCY.as_millis()).expect("ms")),
    );
    report.set("workspaces", json!(workspaces));
    report.set("duration_s", json!(duration.as_secs_f64()));
    report.set(
        "calendar",
        json!("GoogleCalendar -> fake Google (in-process HTTP)"),
    );
    report.set("cases", json!(json_rows));
    if !quick {
        crate::chart::lines(
            "quota.svg",
            "Scenario 4: accepted Google calls per second / project quota rate",
            (
                "seconds since the first call",
                "share of the project quota's rate",
            ),
            &series,
            Some(crate::chart::Target {
                value: 1.0,
                label: "project quota",
            }),
        );
        report.para("![quota saturation](quota.svg)");
    }
    report.finish(quick);
}

async fn run_case(
    t: &TestDb,
    case: &Case,
    quota: QuotaConfig,
    duration: Duration,
    workspaces: usize,
) -> Outcome {
    let admin = t.client().await;
    reset(&admin).await;
    admin
        .batch_execute("UPDATE google_connections SET paused_until = NULL")
        .await
        .expect("unpause");
    let rate = f64::from(quota.per_project) / quota.window.as_secs_f64();
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a backlog size from a rate: float to int saturates, which is right"
    )]
    let n = (rate * duration.as_secs_f64() * 1.5) as i64;
    backlog(
        &admin,
        n,
        i64::try_from(workspaces).expect("workspaces"),
        "q",
    )
    .await;
    let g = FakeGoogle::start().await;
    seed_fake(&g, workspaces);
    g.set_latency(LATENCY);
    g.set_quota(Some(quota));
    let mut handles = Vec::new();
    for _ in 0..case.drainers {
        let db = Database::from_config(
            t.config.clone(),
            crate::support::pool_size(case.concurrency),
        )
        .expect("pool");
        let mut config = google_config(g.calendar_base_url(), g.token_url());
        // The budget's window scaled like the fake's: the same quotas per
        // (shortened) window.
        config.quota_window = quota.window;
        config.per_project_per_minute = quota.per_project;
        config.per_connection_per_minute = quota.per_user;
        let calendar = calendar_with(&db, config);
        let drainer_config = DrainerConfig {
            concurrency: case.concurrency,
            ..DrainerConfig::default()
        };
        let drainer = OutboxDrainer::new(db, calendar, drainer_config).expect("drainer");
        handles.push(drainer.start());
    }
    // Run a little longer than measured, so the measured span is full.
    tokio::time::sleep(duration + quota.window / 4).await;
    let mut report = DrainReport::default();
    for handle in handles {
        let r = handle.stop().await;
        report.claimed += r.claimed;
        report.completed += r.completed;
        report.retried += r.retried;
        report.dead_lettered += r.dead_lettered;
    }
    let outcome = measure(&g, quota, duration, report);
    g.shutdown().await;
    outcome
}

fn measure(g: &FakeGoogle, quota: QuotaConfig, duration: Duration, report: DrainReport) -> Outcome {
    let calls: Vec<(SystemTime, Option<u16>)> = g
        .requests()
        .into_iter()
        .filter(|r| !matches!(r.api_method, ApiMethod::Token | ApiMethod::Other))
        .map(|r| (r.at, r.status))
        .collect();
    let t0 = calls.first().map_or(SystemTime::now(), |c| c.0);
    let secs = |at: SystemTime| at.duration_since(t0).unwrap_or_default().as_secs_f64();
    let accepted: Vec<f64> = calls
        .iter()
        .filter(|c| c.1.is_some_and(|s| (200..300).contains(&s)))
        .map(|c| secs(c.0))
        .collect();
    let rejected: Vec<f64> = calls
        .iter()
        .filter(|c| matches!(c.1, Some(403 | 429)))
        .map(|c| secs(c.0))
        .collect();
    let rejected_403_429 = rejected.len();
    let w = quota.window.as_secs_f64();
    let late_rejection_times: Vec<f64> = rejected.iter().copied().filter(|&s| s >= w).collect();
    let late_rejections = late_rejection_times.len();
    let end = duration.as_secs_f64();
    let per = f64::from(quota.per_project);
    let steady = accepted.iter().filter(|&&s| s >= w && s < end).count() as f64;
    let steady_share = steady / (per * (end - w) / w);
    let first_share = accepted.iter().filter(|&&s| s < w).count() as f64 / per;
    let mut peak = 0usize;
    let mut j = 0;
    for i in 0..accepted.len() {
        while j < accepted.len() && accepted[j] < accepted[i] + w {
            j += 1;
        }
        peak = peak.max(j - i);
    }
    let rate = per / w;
    // One bucket per whole second of the run (times are non-negative seconds).
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "whole seconds of a run: float to int saturates, which is right"
    )]
    let second = |s: f64| s as usize;
    let mut counts = vec![0usize; second(end.ceil())];
    for s in &accepted {
        if let Some(c) = counts.get_mut(second(*s)) {
            *c += 1;
        }
    }
    let series = counts
        .iter()
        .enumerate()
        .map(|(i, c)| (i as f64 + 0.5, *c as f64 / rate))
        .collect();
    Outcome {
        steady_share,
        peak_share: peak as f64 / per,
        first_share,
        accepted: accepted.len(),
        rejections: g.quota_rejections(),
        rejected_403_429,
        late_rejections,
        late_rejection_times,
        series,
        report,
    }
}
