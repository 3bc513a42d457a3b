//! Scenario 6: Google write calls per change. A realistic mix: every source
//! is created in a burst of 1-10 upserts; then 60 % get another burst of 1-10
//! updates, 10 % are cancelled (after a burst of updates), 5 % are re-upserted
//! with unchanged content, the rest stay untouched. A live worker (defaults,
//! NOTIFY) drains while the producers write, into GoogleCalendar against the
//! fake Google; a wrapper Calendar attributes every call to its source.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calendar_sync::{Database, DrainerConfig, GoogleCalendar, OutboxDrainer};
use calendar_sync_tests::TestDb;
use fake_google::FakeGoogle;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::google_env::{calendar, seed_fake, store_connections};
use crate::load::{cancel, upsert, workspace};
use crate::probe::Probe;
use crate::report::{Report, f, verdict};
use crate::support::{machine, reset, wait_idle};

const WORKSPACES: usize = 20;
const LATENCY: Duration = Duration::from_millis(100);
const PRODUCERS: usize = 4;

/// What happens to a source in the second phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Updated,
    Cancelled,
    Unchanged,
    Untouched,
}

impl Fate {
    fn label(self) -> &'static str {
        match self {
            Self::Updated => "updated again (burst of 1-10)",
            Self::Cancelled => "burst of 1-3 updates, then cancelled",
            Self::Unchanged => "re-upserted unchanged",
            Self::Untouched => "untouched",
        }
    }
}

struct Source {
    ws: String,
    id: String,
    first: usize,
    second: usize,
    fate: Fate,
}

fn plan(n: usize) -> Vec<Source> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    (0..n)
        .map(|i| {
            let fate = match i % 20 {
                0 | 1 => Fate::Cancelled,
                2 => Fate::Unchanged,
                3..=14 => Fate::Updated,
                _ => Fate::Untouched,
            };
            let second = match fate {
                Fate::Updated => rng.random_range(1..=10),
                Fate::Cancelled => rng.random_range(1..=3),
                _ => 0,
            };
            Source {
                ws: workspace(i % WORKSPACES),
                id: format!("src-{i}"),
                first: rng.random_range(1..=10),
                second,
                fate,
            }
        })
        .collect()
}

/// The outbox rows of one burst of a source.
fn burst(s: &Source, phase: u8) -> Vec<(&'static str, Value)> {
    let title = |v: usize| format!("{} v{v}", s.id);
    match (phase, s.fate) {
        (1, _) => (1..=s.first)
            .map(|v| ("UPSERT_EVENT", upsert(&s.ws, &s.id, &title(v))))
            .collect(),
        (_, Fate::Updated) | (_, Fate::Cancelled) => {
            let mut rows: Vec<_> = (1..=s.second)
                .map(|v| ("UPSERT_EVENT", upsert(&s.ws, &s.id, &title(s.first + v))))
                .collect();
            if s.fate == Fate::Cancelled {
                rows.push(("CANCEL_EVENT", cancel(&s.ws, &s.id)));
            }
            rows
        }
        (_, Fate::Unchanged) => vec![("UPSERT_EVENT", upsert(&s.ws, &s.id, &title(s.first)))],
        (_, Fate::Untouched) => Vec::new(),
    }
}

/// Writes the phase's bursts from several producers at once, each burst as
/// back-to-back autocommit inserts or as one transaction.
async fn produce(t: &TestDb, bursts: Vec<Vec<(&'static str, Value)>>, one_transaction: bool) {
    let queue = Arc::new(Mutex::new(bursts));
    let mut tasks = Vec::new();
    for _ in 0..PRODUCERS {
        let mut client = t.client().await;
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let sql = "INSERT INTO sync_outbox (operation, payload) VALUES ($1, $2)";
            loop {
                let Some(rows) = queue.lock().expect("queue").pop() else {
                    break;
                };
                if one_transaction {
                    let tx = client.transaction().await.expect("begin");
                    for (op, payload) in &rows {
                        tx.execute(sql, &[op, payload]).await.expect("insert");
                    }
                    tx.commit().await.expect("commit");
                } else {
                    for (op, payload) in &rows {
                        client.execute(sql, &[op, payload]).await.expect("insert");
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("producer");
    }
}

/// Write calls (insert, update, delete) per source id since the probe was cleared.
fn calls_by_source(
    probe: &Probe<GoogleCalendar>,
    ids: &HashMap<String, String>,
) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for call in probe.calls() {
        if !matches!(call.method, "insert" | "update" | "delete") {
            continue;
        }
        let source = call
            .source_id
            .clone()
            .or_else(|| ids.get(&call.event_id).cloned())
            .unwrap_or_default();
        *by.entry(source).or_default() += 1;
    }
    by
}

struct Variant {
    label: String,
    rows: Vec<Vec<String>>,
    json: Value,
    per_burst: f64,
    unchanged_calls: usize,
}

/// A settle time long enough for a burst of back-to-back commits.
const SETTLE: Duration = Duration::from_millis(100);

async fn variant(
    t: &TestDb,
    sources: &[Source],
    one_transaction: bool,
    settle: Duration,
) -> Variant {
    let admin = t.client().await;
    reset(&admin).await;
    let g = FakeGoogle::start().await;
    seed_fake(&g, WORKSPACES);
    g.set_latency(LATENCY);
    let db = Database::from_config(
        t.config.clone(),
        crate::support::pool_size(DrainerConfig::default().concurrency),
    )
    .expect("pool");
    let probe = Probe::new(calendar(&db, &g));
    let config = DrainerConfig {
        settle,
        ..DrainerConfig::default()
    };
    let drainer = OutboxDrainer::new(db, probe.clone(), config).expect("drainer");
    let handle = drainer.start();
    let mut rng = rand::rngs::StdRng::seed_from_u64(if one_transaction { 61 } else { 62 });
    let mut rows = Vec::new();
    let mut totals = (0usize, 0usize, 0usize);
    let mut groups = Vec::new();
    let mut ids: HashMap<String, String> = HashMap::new();
    for phase in [1u8, 2] {
        probe.clear();
        let mut bursts: Vec<_> = sources
            .iter()
            .map(|s| burst(s, phase))
            .filter(|b| !b.is_empty())
            .collect();
        bursts.shuffle(&mut rng);
        let items: usize = bursts.iter().map(Vec::len).sum();
        let n_bursts = bursts.len();
        produce(t, bursts, one_transaction).await;
        wait_idle(&admin, Duration::from_secs(300)).await;
        for call in probe.calls() {
            if let Some(s) = &call.source_id {
                ids.insert(call.event_id.clone(), s.clone());
            }
        }
        let by = calls_by_source(&probe, &ids);
        let calls: usize = by.values().sum();
        totals = (totals.0 + items, totals.1 + calls, totals.2 + n_bursts);
        rows.push(vec![
            if phase == 1 {
                "1: every source created (burst of 1-10)".to_owned()
            } else {
                "2: the mix below".to_owned()
            },
            items.to_string(),
            n_bursts.to_string(),
            calls.to_string(),
            f(calls as f64 / items as f64, 3),
            f(calls as f64 / n_bursts as f64, 3),
        ]);
        if phase == 2 {
            for fate in [Fate::Updated, Fate::Cancelled, Fate::Unchanged] {
                let members: Vec<_> = sources.iter().filter(|s| s.fate == fate).collect();
                let items: usize = members.iter().map(|s| burst(s, 2).len()).sum();
                let calls: usize = members
                    .iter()
                    .map(|s| by.get(&s.id).copied().unwrap_or(0))
                    .sum();
                groups.push((fate, members.len(), items, calls));
            }
        }
    }
    handle.stop().await;
    g.shutdown().await;
    let superseded: i64 = admin
        .query_one(
            "SELECT count(*) FROM sync_outbox WHERE status = 'SUPERSEDED'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    let unchanged_calls = groups
        .iter()
        .find(|g| g.0 == Fate::Unchanged)
        .map_or(0, |g| g.3);
    for (fate, n, items, calls) in &groups {
        rows.push(vec![
            format!("2, {}: {n} sources", fate.label()),
            items.to_string(),
            n.to_string(),
            calls.to_string(),
            f(*calls as f64 / *items as f64, 3),
            f(*calls as f64 / *n as f64, 3),
        ]);
    }
    let unchanged_sources = groups
        .iter()
        .find(|g| g.0 == Fate::Unchanged)
        .map_or(0, |g| g.1);
    // Bursts that change something: every one but the unchanged re-upserts.
    let per_burst = (totals.1 - unchanged_calls) as f64 / (totals.2 - unchanged_sources) as f64;
    let json = json!({
        "items": totals.0, "write_calls": totals.1, "bursts": totals.2,
        "sources": sources.len(), "superseded_rows": superseded,
        "calls_per_item": totals.1 as f64 / totals.0 as f64,
        "calls_per_source": totals.1 as f64 / sources.len() as f64,
        "calls_per_burst": totals.1 as f64 / totals.2 as f64,
        "calls_per_changing_burst": per_burst,
        "groups": groups.iter().map(|(fate, n, items, calls)| json!({
            "group": fate.label(), "sources": n, "items": items, "write_calls": calls})).collect::<Vec<_>>(),
    });
    rows.push(vec![
        format!(
            "all ({} sources; {superseded} rows superseded)",
            sources.len()
        ),
        totals.0.to_string(),
        totals.2.to_string(),
        totals.1.to_string(),
        f(totals.1 as f64 / totals.0 as f64, 3),
        f(totals.1 as f64 / totals.2 as f64, 3),
    ]);
    Variant {
        label: match (one_transaction, settle.is_zero()) {
            (true, _) => "each burst in one transaction".to_owned(),
            (false, true) => "each change its own transaction, back to back".to_owned(),
            (false, false) => format!(
                "each change its own transaction, back to back; the worker with settle {} ms",
                settle.as_millis()
            ),
        },
        rows,
        json,
        per_burst,
        unchanged_calls,
    }
}

/// Runs the scenario.
pub async fn run(quick: bool) {
    let n = if quick { 40 } else { 300 };
    let t = TestDb::new().await;
    let m = machine(&t).await;
    store_connections(&t, WORKSPACES).await;
    let sources = plan(n);
    let separate = variant(&t, &sources, false, Duration::ZERO).await;
    let settled = variant(&t, &sources, false, SETTLE).await;
    let together = variant(&t, &sources, true, Duration::ZERO).await;
    let mut report = Report::new(
        "calls-per-change",
        "Scenario 6: Google write calls per change",
        &m,
        quick,
    );
    report.para(&format!(
        "{n} sources in {WORKSPACES} workspaces, {PRODUCERS} producers writing bursts (in \
         random order) while one worker at the defaults (concurrency 32, batch 32, LISTEN/NOTIFY) drains \
         into GoogleCalendar against the fake Google ({} ms latency, no quota). Phase 1 \
         creates every source with a burst of 1-10 upserts; phase 2 (after phase 1 drained): \
         60 % get a burst of 1-10 updates, 10 % a burst of 1-3 updates then a cancel, 5 % one \
         upsert with unchanged content, 25 % nothing. Write calls (insert, update, delete) are \
         counted per source by a wrapper Calendar. Ideal: one call per burst, none for \
         unchanged content.",
        LATENCY.as_millis()
    ));
    for v in [&separate, &settled, &together] {
        report.para(&format!("**{}**", v.label));
        report.table(
            &[
                "phase / group",
                "outbox items",
                "bursts (sources)",
                "write calls",
                "calls / item",
                "calls / burst",
            ],
            &v.rows,
        );
    }
    report.table(
        &["target", "measured", "verdict"],
        &[
            vec![
                "one call per source per burst of changes (back-to-back commits)".to_owned(),
                f(separate.per_burst, 3),
                verdict(separate.per_burst <= 1.0),
            ],
            vec![
                format!(
                    "one call per source per burst of changes (back-to-back commits, settle {} ms)",
                    SETTLE.as_millis()
                ),
                f(settled.per_burst, 3),
                verdict(settled.per_burst <= 1.0),
            ],
            vec![
                "one call per source per burst of changes (burst in one transaction)".to_owned(),
                f(together.per_burst, 3),
                verdict(together.per_burst <= 1.0),
            ],
            vec![
                "zero calls for unchanged content".to_owned(),
                format!(
                    "{} / {} / {}",
                    separate.unchanged_calls, settled.unchanged_calls, together.unchanged_calls
                ),
                verdict(
                    separate.unchanged_calls + settled.unchanged_calls + together.unchanged_calls
                        == 0,
                ),
            ],
        ],
    );
    report.set("sources", json!(n));
    report.set(
        "calendar",
        json!("Probe(GoogleCalendar) -> fake Google, 100 ms latency"),
    );
    report.set("back_to_back", separate.json);
    report.set(
        "back_to_back_settle_ms",
        json!(u64::try_from(SETTLE.as_millis()).expect("ms")),
    );
    report.set("back_to_back_settled", settled.json);
    report.set("one_transaction", together.json);
    report.finish(quick);
}
