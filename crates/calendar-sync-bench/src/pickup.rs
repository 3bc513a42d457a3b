//! Scenario 3: pickup latency. An idle worker (defaults: LISTEN/NOTIFY wake-up),
//! single-row inserts at random intervals, and the time from each insert's
//! commit to the engine's calendar call (recorded by a [`Probe`] around the
//! in-process MemoryCalendar). Also what producers can insert meanwhile.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use calendar_sync::{Database, DrainerConfig, OutboxDrainer};
use calendar_sync_tests::{MemoryCalendar, TestDb};
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::load::{insert_one, prepare_insert, upsert};
use crate::probe::Probe;
use crate::report::{Report, f, verdict};
use crate::support::{machine, median, percentile, reset, sorted};

/// Target: p50 pickup latency, ms.
pub const TARGET_P50_MS: f64 = 2.0;
/// Target: p99 pickup latency, ms.
pub const TARGET_P99_MS: f64 = 10.0;

/// What one pickup trial measured, per insert (milliseconds).
#[derive(Debug, Default, Clone)]
pub struct Pickup {
    /// Commit acknowledged to the producer -> calendar call.
    pub from_ack: Vec<f64>,
    /// INSERT sent -> calendar call (an upper bound of commit -> call).
    pub from_send: Vec<f64>,
    /// The producer's INSERT (autocommit) round trip.
    pub insert_ms: Vec<f64>,
}

/// Random offsets (from the start) at which to insert: `k` inserts with gaps
/// drawn uniformly from `gap`.
pub fn schedule(k: usize, gap: (u64, u64), seed: u64) -> Vec<Duration> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut at = Duration::ZERO;
    (0..k)
        .map(|_| {
            at += Duration::from_millis(rng.random_range(gap.0..=gap.1));
            at
        })
        .collect()
}

/// Starts an idle drainer with `config`, inserts one UPSERT per offset of
/// `schedule` (each a new source, autocommit), and measures when each reaches
/// the calendar.
pub async fn pickup_trial(t: &TestDb, config: DrainerConfig, schedule: &[Duration]) -> Pickup {
    let admin = t.client().await;
    reset(&admin).await;
    let probe = Probe::new(MemoryCalendar::new());
    let db = Database::from_config(
        t.config.clone(),
        crate::support::pool_size(config.concurrency),
    )
    .expect("pool");
    let poll = config.poll_interval;
    let drainer = OutboxDrainer::new(db, probe.clone(), config).expect("drainer");
    let handle = drainer.start();
    // Let it connect, LISTEN and find nothing to do.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let producer = t.client().await;
    let stmt = prepare_insert(&producer).await;
    let mut committed = HashMap::new();
    let start = Instant::now();
    for (i, offset) in schedule.iter().enumerate() {
        tokio::time::sleep_until((start + *offset).into()).await;
        let source = format!("pick-{i}");
        let payload = upsert(&crate::load::workspace(i % 20), &source, "Pickup");
        let times = insert_one(&producer, &stmt, "UPSERT_EVENT", &payload).await;
        committed.insert(source, times);
    }
    let deadline = Instant::now() + poll + Duration::from_secs(10);
    while probe.calls().len() < schedule.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handle.stop().await;
    let mut out = Pickup::default();
    for call in probe.calls() {
        let Some((sent, ack)) = call.source_id.as_ref().and_then(|s| committed.get(s)) else {
            continue;
        };
        out.from_ack
            .push(call.at.saturating_duration_since(*ack).as_secs_f64() * 1000.0);
        out.from_send
            .push(call.at.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
    }
    out.insert_ms = committed
        .values()
        .map(|(sent, ack)| (*ack - *sent).as_secs_f64() * 1000.0)
        .collect();
    assert_eq!(
        out.from_ack.len(),
        schedule.len(),
        "every insert reached the calendar"
    );
    out
}

/// p50 / p95 / p99 / max of a sample, formatted in ms.
pub fn quantiles(values: &[f64]) -> [f64; 4] {
    let s = sorted(values);
    [
        percentile(&s, 50.0),
        percentile(&s, 95.0),
        percentile(&s, 99.0),
        s.last().copied().unwrap_or(f64::NAN),
    ]
}

fn qrow(label: &str, values: &[f64]) -> Vec<String> {
    let q = quantiles(values);
    let mut row = vec![label.to_owned(), values.len().to_string()];
    row.extend(q.iter().map(|v| f(*v, 2)));
    row
}

/// Runs the scenario.
pub async fn run(quick: bool) {
    let (k, producers, per_producer, rounds) = if quick {
        (30, 2, 200, 1)
    } else {
        (200, 4, 1_500, 2)
    };
    let t = TestDb::new().await;
    let m = machine(&t).await;
    let plan = schedule(k, (10, 60), 3);
    let pickup = pickup_trial(&t, DrainerConfig::default(), &plan).await;

    // Producers at full speed, with the worker listening and draining, and without it.
    let admin = t.client().await;
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut drained = Vec::new();
    for _ in 0..rounds {
        reset(&admin).await;
        without.push(producer_rate(&t, producers, per_producer).await);
        reset(&admin).await;
        let db = Database::from_config(
            t.config.clone(),
            crate::support::pool_size(DrainerConfig::default().concurrency),
        )
        .expect("pool");
        let drainer =
            OutboxDrainer::new(db, MemoryCalendar::new(), DrainerConfig::default()).expect("d");
        let handle = drainer.start();
        tokio::time::sleep(Duration::from_millis(300)).await;
        with.push(producer_rate(&t, producers, per_producer).await);
        drained.push(handle.report().completed as f64);
        handle.stop().await;
    }
    let (rate_with, rate_without) = (median(&with), median(&without));
    let drained = median(&drained);

    let mut report = Report::new("pickup-latency", "Scenario 3: pickup latency", &m, quick);
    report.para(&format!(
        "One idle worker at the defaults (LISTEN/NOTIFY wake-up, poll 5 s, concurrency 32, batch 32). \
         {k} single-row UPSERT_EVENTs (autocommit, one new source each) at random intervals \
         of 10-60 ms. Latency: from the moment the producer's commit is acknowledged (and, as \
         an upper bound, from the moment the INSERT was sent) to the engine's calendar call, \
         recorded by a wrapper Calendar around the in-process MemoryCalendar (zero latency); \
         one process, one monotonic clock."
    ));
    report.table(
        &["milliseconds", "n", "p50", "p95", "p99", "max"],
        &[
            qrow("commit acknowledged -> calendar call", &pickup.from_ack),
            qrow("INSERT sent -> calendar call", &pickup.from_send),
            qrow(
                "producer's INSERT + commit (during the run)",
                &pickup.insert_ms,
            ),
        ],
    );
    let q = quantiles(&pickup.from_ack);
    report.table(
        &["target", "measured", "verdict"],
        &[
            vec![
                format!("p50 < {TARGET_P50_MS} ms"),
                format!("{} ms", f(q[0], 2)),
                verdict(q[0] < TARGET_P50_MS),
            ],
            vec![
                format!("p99 < {TARGET_P99_MS} ms"),
                format!("{} ms", f(q[2], 2)),
                verdict(q[2] < TARGET_P99_MS),
            ],
        ],
    );
    report.para(&format!(
        "Producers' insert rate: {producers} producers x {per_producer} single-row INSERT \
         transactions as fast as they can, trigger on, median of {rounds} round(s): \
         {rate_without:.0} inserts/s with no worker, {rate_with:.0} inserts/s while one \
         worker (defaults, MemoryCalendar) wakes on every commit and drains ({:.0} % of the \
         rate without); the worker finished {drained:.0} of the {} items meanwhile. Rows \
         spread over 20 workspaces. On 2 cores the worker and its backends compete with the \
         producers for CPU; the trigger's own cost is in producer-insert-rate.md.",
        rate_with / rate_without * 100.0,
        producers * per_producer
    ));
    report.set("inserts", json!(k));
    report.set("calendar", json!("Probe(MemoryCalendar), zero latency"));
    report.set(
        "from_ack_ms",
        json!({"p50": q[0], "p95": q[1], "p99": q[2], "max": q[3], "samples": pickup.from_ack}),
    );
    let qs = quantiles(&pickup.from_send);
    report.set(
        "from_send_ms",
        json!({"p50": qs[0], "p95": qs[1], "p99": qs[2], "max": qs[3]}),
    );
    let qi = quantiles(&pickup.insert_ms);
    report.set(
        "producer_insert_ms",
        json!({"p50": qi[0], "p95": qi[1], "p99": qi[2], "max": qi[3]}),
    );
    report.set(
        "producer_inserts_per_s",
        json!({"producers": producers, "per_producer": per_producer,
               "without_worker": rate_without, "with_worker": rate_with,
               "drained_meanwhile": drained,
               "rounds_without": without, "rounds_with": with}),
    );
    report.set(
        "targets",
        json!({"p50_ms": TARGET_P50_MS, "p99_ms": TARGET_P99_MS}),
    );
    if !quick {
        crate::chart::cdf(
            "pickup-latency.svg",
            "Scenario 3: commit -> calendar call, idle worker (defaults)",
            "milliseconds (log scale)",
            &[
                (
                    "from commit acknowledged".to_owned(),
                    pickup.from_ack.clone(),
                ),
                ("from INSERT sent".to_owned(), pickup.from_send.clone()),
            ],
        );
        report.para("![pickup latency](pickup-latency.svg)");
    }
    report.finish(quick);
}

/// `producers` connections each inserting `per_producer` single-row UPSERTs
/// (autocommit, new sources over 20 workspaces) as fast as they can: inserts/s.
async fn producer_rate(t: &TestDb, producers: usize, per_producer: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let client = t.client().await;
        tasks.push(tokio::spawn(async move {
            let stmt = prepare_insert(&client).await;
            for i in 0..per_producer {
                let ws = crate::load::workspace(i % 20);
                let payload = upsert(&ws, &format!("prod-{p}-{i}"), "Producer");
                insert_one(&client, &stmt, "UPSERT_EVENT", &payload).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("producer");
    }
    (producers * per_producer) as f64 / started.elapsed().as_secs_f64()
}
