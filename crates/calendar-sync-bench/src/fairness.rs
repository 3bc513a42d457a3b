//! Scenarios "noisy-neighbour" and "workers-come-and-go": Google's quotas
//! shared through PostgreSQL (`calendar_sync_budget`) by drainers against the fake
//! Google enforcing both quotas over scaled windows.
//!
//! * noisy-neighbour: tenant A has a backlog of minutes of its own quota;
//!   tenant B's items, committed afterwards, are timed commit -> COMPLETED,
//!   and A's share of its own quota is counted at the fake.
//! * workers-come-and-go: 40 tenants (the project's quota binds), drainers
//!   1 -> 3 -> 2; the share of the project quota, the fullest window and the
//!   403/429 answers are counted at the fake.

use std::time::{Duration, SystemTime};

use calendar_sync::{Database, DrainerConfig, DrainerHandle, OutboxDrainer};
use calendar_sync_tests::TestDb;
use fake_google::{ApiMethod, FakeGoogle, QuotaConfig};
use serde_json::json;

use crate::google_env::{calendar_with, config as google_config, seed_fake, store_connections};
use crate::load::{backlog, upsert, workspace};
use crate::report::{Report, f, verdict};
use crate::support::{machine, percentile, reset, sorted};

/// Google's latency in both scenarios.
const LATENCY: Duration = Duration::from_millis(20);

/// Starts a drainer with its own pool and GoogleCalendar (as a process would)
/// whose budgets match the fake's quotas.
fn start(t: &TestDb, g: &FakeGoogle, quota: QuotaConfig) -> DrainerHandle {
    let config = DrainerConfig::default();
    let db = Database::from_config(
        t.config.clone(),
        crate::support::pool_size(config.concurrency),
    )
    .expect("pool");
    let mut google = google_config(g.calendar_base_url(), g.token_url());
    google.quota_window = quota.window;
    google.per_project_per_minute = quota.per_project;
    google.per_connection_per_minute = quota.per_user;
    let calendar = calendar_with(&db, google);
    OutboxDrainer::new(db, calendar, config)
        .expect("drainer")
        .start()
}

async fn fake(workspaces: usize, quota: QuotaConfig) -> FakeGoogle {
    let g = FakeGoogle::start().await;
    seed_fake(&g, workspaces);
    g.set_latency(LATENCY);
    g.set_quota(Some(quota));
    g
}

/// Times of the calls the fake accepted (calendar API only), for `calendar`
/// or all, and how many it answered 403/429.
fn calls(g: &FakeGoogle, calendar: Option<&str>) -> (Vec<SystemTime>, usize) {
    let mut accepted = Vec::new();
    let mut rejected = 0;
    for r in g.requests() {
        if matches!(r.api_method, ApiMethod::Token | ApiMethod::Other) {
            continue;
        }
        if calendar.is_some_and(|c| !r.path.contains(&c.replace('@', "%40")) && !r.path.contains(c))
        {
            continue;
        }
        match r.status {
            Some(403 | 429) => rejected += 1,
            Some(s) if (200..300).contains(&s) => accepted.push(r.at),
            _ => {}
        }
    }
    accepted.sort();
    (accepted, rejected)
}

/// The most calls in any sliding window.
fn fullest_window(calls: &[SystemTime], window: Duration) -> usize {
    let mut best = 0;
    let mut j = 0;
    for i in 0..calls.len() {
        while j < calls.len() && calls[j] < calls[i] + window {
            j += 1;
        }
        best = best.max(j - i);
    }
    best
}

/// Runs "noisy-neighbour".
pub async fn noisy_neighbour(quick: bool) {
    let (window, backlog_a, measured) = if quick {
        (Duration::from_secs(3), 200, Duration::from_secs(2))
    } else {
        (Duration::from_secs(12), 3000, Duration::from_secs(20))
    };
    let quota = QuotaConfig::google().scaled_to(window);
    let t = TestDb::new().await;
    let m = machine(&t).await;
    store_connections(&t, 2).await;
    let admin = t.client().await;
    reset(&admin).await;
    backlog(&admin, backlog_a, 1, "a").await;
    let g = fake(2, quota).await;
    let handle = start(&t, &g, quota);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = workspace(1);
    let committed = SystemTime::now();
    for i in 0..10 {
        admin
            .execute(
                "INSERT INTO sync_outbox (operation, payload) VALUES ('UPSERT_EVENT', $1)",
                &[&upsert(&b, &format!("b{i}"), "tenant B")],
            )
            .await
            .expect("insert");
    }
    tokio::time::sleep(measured + Duration::from_millis(500)).await;
    handle.stop().await;
    let pickups: Vec<f64> = admin
        .query(
            "SELECT extract(epoch FROM processed_at - created_at)::float8 FROM sync_outbox
              WHERE workspace_id = $1 AND status = 'COMPLETED'",
            &[&b],
        )
        .await
        .expect("pickups")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let pickups = sorted(&pickups);
    let a_calendar = crate::load::calendar_of(&workspace(0));
    let (a_calls, _) = calls(&g, Some(&a_calendar));
    let a_measured = a_calls
        .iter()
        .filter(|at| **at >= committed && **at < committed + measured)
        .count();
    let allowed = f64::from(quota.per_user) * measured.as_secs_f64() / window.as_secs_f64();
    let a_share = a_measured as f64 / allowed;
    let (_, rejected) = calls(&g, None);
    g.shutdown().await;
    let b_max = pickups.last().copied().unwrap_or(f64::NAN);
    let met = pickups.len() == 10 && b_max <= 2.0 && a_share >= 0.95 && rejected == 0;
    let mut report = Report::new("noisy-neighbour", "Noisy neighbour", &m, quick);
    report.para(&format!(
        "One drainer (defaults: concurrency 32) against the fake Google with {lat} ms latency, \
         enforcing {pu} calls per user and {pp} per project per {ws} s window (Google's rates, \
         window scaled). Tenant A has {backlog_a} items queued; 3 s in, tenant B commits 10 \
         items. B's items go at B's own pace (a burst of {burst}, then its refill), never \
         behind A's backlog; A's share is counted at the fake over {ms} s from B's commit.",
        lat = LATENCY.as_millis(),
        pu = quota.per_user,
        pp = quota.per_project,
        ws = window.as_secs(),
        burst = (quota.per_user / 60).clamp(1, 100),
        ms = measured.as_secs(),
    ));
    report.table(
        &[
            "B completed",
            "B commit -> COMPLETED p50",
            "B max",
            "A's calls / its quota",
            "403/429 answers",
            "target: B <= 2 s, A >= 95 %, zero 403/429",
        ],
        &[vec![
            format!("{}/10", pickups.len()),
            format!("{} s", f(percentile(&pickups, 50.0), 3)),
            format!("{} s", f(b_max, 3)),
            format!("{a_measured} / {allowed:.0} = {:.1} %", a_share * 100.0),
            rejected.to_string(),
            verdict(met),
        ]],
    );
    report.set("window_s", json!(window.as_secs_f64()));
    report.set("b_pickups_s", json!(pickups));
    report.set("a_share_of_own_quota", json!(a_share));
    report.set("answers_403_or_429", json!(rejected));
    report.finish(quick);
}

/// Runs "workers-come-and-go".
pub async fn workers_come_and_go(quick: bool) {
    let (window, phase, workspaces) = if quick {
        (Duration::from_secs(3), Duration::from_secs(1), 10)
    } else {
        (Duration::from_secs(30), Duration::from_secs(10), 40)
    };
    let quota = QuotaConfig::google().scaled_to(window);
    let t = TestDb::new().await;
    let m = machine(&t).await;
    store_connections(&t, workspaces).await;
    let admin = t.client().await;
    reset(&admin).await;
    // More than the run can drain: the backlog lasts.
    let rate = f64::from(quota.per_project) / window.as_secs_f64();
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a backlog size from a rate: float to int saturates, which is right"
    )]
    let n = (rate * (phase * 4).as_secs_f64() * 1.3) as i64;
    backlog(
        &admin,
        n,
        i64::try_from(workspaces).expect("workspaces"),
        "c",
    )
    .await;
    let g = fake(workspaces, quota).await;
    let mut handles = vec![start(&t, &g, quota)];
    tokio::time::sleep(phase).await;
    handles.push(start(&t, &g, quota));
    handles.push(start(&t, &g, quota));
    tokio::time::sleep(phase).await;
    let leaving = handles.remove(1);
    leaving.stop().await;
    tokio::time::sleep(phase * 2).await;
    for h in handles {
        h.stop().await;
    }
    let (accepted, rejected) = calls(&g, None);
    g.shutdown().await;
    let span = (phase * 4).as_secs_f64();
    let first = accepted.first().copied().unwrap_or(SystemTime::now());
    let in_span = accepted
        .iter()
        .filter(|at| at.duration_since(first).unwrap_or_default().as_secs_f64() < span)
        .count();
    let allowed = f64::from(quota.per_project) * span / window.as_secs_f64();
    let share = in_span as f64 / allowed;
    let peak = fullest_window(&accepted, window) as f64 / f64::from(quota.per_project);
    let met = share >= 0.95 && rejected == 0 && peak <= 1.0;
    let mut report = Report::new("workers-come-and-go", "Workers come and go", &m, quick);
    report.para(&format!(
        "{workspaces} tenants with a backlog of {n} new sources, the fake Google ({lat} ms) \
         enforcing {pu} per user and {pp} per project per {ws} s window: the project binds. \
         Drainers (each with its own pool and GoogleCalendar, as processes) 1 for {ph} s, \
         then 3 for {ph} s, then 2 (one stopped) for {ph2} s, none told of the others: they \
         share the budgets in the database. (The process test \
         `workers_coming_and_going_share_the_project_quota` does the same with a kill -9.)",
        lat = LATENCY.as_millis(),
        pu = quota.per_user,
        pp = quota.per_project,
        ws = window.as_secs(),
        ph = phase.as_secs(),
        ph2 = (phase * 2).as_secs(),
    ));
    report.table(
        &[
            "accepted calls",
            "share of the project quota",
            "fullest window / quota",
            "403/429 answers",
            "target: >= 95 %, zero 403/429",
        ],
        &[vec![
            format!("{in_span} in {span:.0} s"),
            format!("{:.1} %", share * 100.0),
            format!("{:.1} %", peak * 100.0),
            rejected.to_string(),
            verdict(met),
        ]],
    );
    report.set("window_s", json!(window.as_secs_f64()));
    report.set("share_of_project_quota", json!(share));
    report.set("fullest_window_share", json!(peak));
    report.set("answers_403_or_429", json!(rejected));
    report.finish(quick);
}
