//! Drift check: what checking calendars for events changed by hand costs, in
//! `events.list` calls and milliseconds per calendar per interval. Calendars
//! of synced events in the fake Google, listed through GoogleCalendar: the
//! first (full) listing, a check with nothing changed, and one after hand
//! edits in every calendar (policy `report`, so that only the check is
//! measured, not the repairs it would queue).

use std::time::{Duration, Instant};

use calendar_sync::{DrainerConfig, DriftPolicy, DriftReport, GoogleCalendar, OutboxDrainer};
use calendar_sync_tests::TestDb;
use fake_google::{ApiMethod, FakeGoogle};
use serde_json::{Value, json};

use crate::google_env::{calendar, seed_fake, store_connections};
use crate::load::{calendar_of, upsert, workspace};
use crate::report::{Report, f};
use crate::support::machine;

/// The fake's answer time per call, as in calls-per-change.
const LATENCY: Duration = Duration::from_millis(100);

/// The sizes of a run.
struct Size {
    calendars: usize,
    events_per_calendar: usize,
    hand_edits_per_calendar: usize,
}

/// One measured check.
struct Measured {
    label: String,
    calls: u64,
    millis: f64,
    report: DriftReport,
}

impl Measured {
    fn row(&self, calendars: usize) -> Vec<String> {
        let n = calendars as f64;
        vec![
            self.label.clone(),
            f(self.calls as f64 / n, 2),
            f(self.millis / n, 1),
            f(
                self.millis / n - LATENCY.as_secs_f64() * 1000.0 * self.calls as f64 / n,
                1,
            ),
            (self.report.edited + self.report.deleted).to_string(),
        ]
    }

    fn json(&self, calendars: usize) -> Value {
        let n = calendars as f64;
        json!({
            "check": self.label,
            "list_calls": self.calls,
            "list_calls_per_calendar": self.calls as f64 / n,
            "ms_per_calendar": self.millis / n,
            "drift_found": self.report.edited + self.report.deleted,
        })
    }
}

async fn measure(
    label: &str,
    t: &TestDb,
    g: &FakeGoogle,
    drainer: &OutboxDrainer<GoogleCalendar>,
) -> Measured {
    // Every calendar due now, whatever the interval.
    t.client()
        .await
        .execute(
            "UPDATE calendar_sync_drift_checks SET next_check_at = now()",
            &[],
        )
        .await
        .expect("make due");
    let calls = g.calls(ApiMethod::List);
    let started = Instant::now();
    let report = drainer.check_drift().await.expect("drift check");
    Measured {
        label: label.to_owned(),
        calls: g.calls(ApiMethod::List) - calls,
        millis: started.elapsed().as_secs_f64() * 1000.0,
        report,
    }
}

/// Edits `n` events of each calendar by hand (a new title, a new etag).
fn edit_by_hand(g: &FakeGoogle, size: &Size) {
    for i in 0..size.calendars {
        let cal = calendar_of(&workspace(i));
        for event in g
            .live_events(&cal)
            .iter()
            .take(size.hand_edits_per_calendar)
        {
            let id = event["id"].as_str().expect("an id");
            g.human_edit(&cal, id, |e| {
                e.insert("summary".into(), json!("moved by hand"));
            });
        }
    }
}

/// Runs the scenario.
pub async fn run(quick: bool) {
    let size = if quick {
        Size {
            calendars: 3,
            events_per_calendar: 20,
            hand_edits_per_calendar: 2,
        }
    } else {
        Size {
            calendars: 20,
            events_per_calendar: 200,
            hand_edits_per_calendar: 10,
        }
    };
    let t = TestDb::new().await;
    let m = machine(&t).await;
    let g = FakeGoogle::start().await;
    seed_fake(&g, size.calendars);
    store_connections(&t, size.calendars).await;
    let config = DrainerConfig {
        drift_check_interval: Duration::from_secs(60),
        drift_policy: DriftPolicy::Report,
        ..DrainerConfig::default()
    };
    let drainer = OutboxDrainer::new(t.db.clone(), calendar(&t.db, &g), config).expect("drainer");
    for i in 0..size.calendars {
        let ws = workspace(i);
        for n in 0..size.events_per_calendar {
            t.insert("UPSERT_EVENT", upsert(&ws, &format!("src-{n}"), "Ship it"))
                .await;
        }
    }
    t.drain_until_idle(&drainer).await;
    g.set_latency(LATENCY);

    let first = measure("first check: full listing", &t, &g, &drainer).await;
    let quiet = measure("nothing changed", &t, &g, &drainer).await;
    edit_by_hand(&g, &size);
    let edited = measure(
        &format!("{} hand edits per calendar", size.hand_edits_per_calendar),
        &t,
        &g,
        &drainer,
    )
    .await;
    let after = measure("nothing changed since", &t, &g, &drainer).await;
    g.shutdown().await;
    let checks = [&first, &quiet, &edited, &after];

    let mut report = Report::new("drift-check", "Drift check: cost per calendar", &m, quick);
    report.para(&format!(
        "{} calendars (one connection each) of {} synced events, checked one after another \
         by one drainer (`OutboxDrainer::check_drift`, policy `report`) through \
         GoogleCalendar against the fake Google ({} ms per call). Each check is every \
         calendar made due once; calls are the fake's `events.list` count. \"Our time\" is \
         the time per calendar less the fake's latency: our side (the shared budget, the token, \
         parsing the page, the check's statements).",
        size.calendars,
        size.events_per_calendar,
        LATENCY.as_millis()
    ));
    report.table(
        &[
            "check",
            "events.list calls / calendar",
            "ms / calendar",
            "our time, ms / calendar",
            "drift found",
        ],
        &checks
            .iter()
            .map(|c| c.row(size.calendars))
            .collect::<Vec<_>>(),
    );
    report.para(
        "A check with nothing changed is one call per calendar per interval; changes add a \
         page only past 2,500 of them. The calls are paid from the connection's budget \
         (600 a minute), like its writes.",
    );
    report.set("calendars", json!(size.calendars));
    report.set("events_per_calendar", json!(size.events_per_calendar));
    report.set(
        "hand_edits_per_calendar",
        json!(size.hand_edits_per_calendar),
    );
    report.set("latency_ms", json!(LATENCY.as_millis() as f64));
    report.set(
        "checks",
        json!(
            checks
                .iter()
                .map(|c| c.json(size.calendars))
                .collect::<Vec<_>>()
        ),
    );
    report.finish(quick);
}
