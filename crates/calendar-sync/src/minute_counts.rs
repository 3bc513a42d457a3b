//! Per-minute activity counts in `calendar_sync_minute_counts` (V4), the
//! dashboard's charts: what this process saw is added up in memory per
//! (minute, metric, label) and added to the table's rows in one statement
//! every few seconds, so the table holds the sum over every worker process.
//!
//! One accumulator per [`Database`] (its clones share it): the drainer's item
//! outcomes and its `GoogleCalendar`'s calls land in the same one, and the
//! drainer's final flush when it stops writes both.
//!
//! **What a crash loses:** the counts noted since the last flush, at most
//! [`FLUSH_EVERY`] (a few seconds) of them. A failing database loses nothing
//! until it has failed for [`KEEP`]: the counts wait for the next flush, and
//! minutes older than that are dropped. (A flush whose commit succeeded but
//! whose answer was lost is tried again: those counts are then added twice.
//! The charts are for operators, not for billing.)
//!
//! Not counted: rows a worker supersedes when it re-keys a calendar's rows
//! under the calendar's own id (`calendar_sync_resolve_item` does not say how
//! many), rows an operator's `requeue` supersedes.
//!
//! Counting never waits for the database: [`MinuteCounts::add`] takes a
//! mutex for a map insert; flushes run on a task of their own, one at a time,
//! and a failed one is logged (once per streak of failures) and retried later.
//!
//! Besides the counts, where a worker uses the database, the flushes also
//! sample the queue depth once a minute (the first worker per minute writes it; a gauge, never
//! added to) and delete rows older than [`RETENTION_HOURS`], at most once an
//! hour per process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};

use crate::db::Database;
use crate::error::Error;

/// How often the counts are written, at most.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// How long unwritten counts are kept while flushes fail.
pub(crate) const KEEP: Duration = Duration::from_secs(3 * 3600);
/// How often a process deletes old rows, at most.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Rows older than this many hours are deleted (`TRIM`'s `$1`).
pub(crate) const RETENTION_HOURS: i32 = 48;

/// Metric names (the `metric` column).
pub(crate) const COMPLETED: &str = "completed";
pub(crate) const RETRIED: &str = "retried";
pub(crate) const DEAD_LETTERED: &str = "dead_lettered";
pub(crate) const SUPERSEDED: &str = "superseded";
pub(crate) const GOOGLE_CALLS: &str = "google_calls";

/// Adds the counts of one flush: one row per (minute, metric, label), summed
/// into what other processes wrote.
const ADD: &str = "INSERT INTO calendar_sync_minute_counts AS c (minute, metric, label, n)
    SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bigint[])
    ON CONFLICT (minute, metric, label) DO UPDATE SET n = c.n + EXCLUDED.n";

/// The queue depth of this minute, unless a worker sampled it already:
/// PENDING and PROCESSING counted through their partial indexes.
const SAMPLE_DEPTH: &str = "INSERT INTO calendar_sync_minute_counts (minute, metric, label, n)
    SELECT date_trunc('minute', now()), 'queue_depth', '',
           (SELECT count(*) FROM sync_outbox WHERE status = 'PENDING')
         + (SELECT count(*) FROM sync_outbox WHERE status = 'PROCESSING')
     WHERE NOT EXISTS (SELECT 1 FROM calendar_sync_minute_counts
                        WHERE minute = date_trunc('minute', now())
                          AND metric = 'queue_depth' AND label = '')
    ON CONFLICT (minute, metric, label) DO NOTHING";

/// Deletes the rows older than the retention.
const TRIM: &str = "DELETE FROM calendar_sync_minute_counts
    WHERE minute < now() - make_interval(hours => $1)";

type Key = (i64, &'static str, String);

/// A process's counts not yet written, and when it last wrote.
#[derive(Default)]
pub(crate) struct MinuteCounts {
    state: Mutex<State>,
    /// One flush at a time; the final flush waits for a running one.
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    counts: HashMap<Key, i64>,
    /// When the last flush started (`None`: never).
    last_flush: Option<Instant>,
    last_trim: Option<Instant>,
    /// The minute (Unix seconds) whose queue depth this process wrote or
    /// found written.
    sampled_minute: Option<i64>,
    /// Whether the last flush failed (a streak is logged once).
    failing: bool,
    /// Whether a worker uses this database: then every flush (whoever starts
    /// it) also samples the queue depth and trims old rows when due.
    worker: bool,
}

impl std::fmt::Debug for MinuteCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pending = self.state.lock().map_or(0, |s| s.counts.len());
        f.debug_struct("MinuteCounts")
            .field("unwritten_rows", &pending)
            .finish_non_exhaustive()
    }
}

/// The start of the current minute, in Unix seconds.
fn this_minute() -> i64 {
    let now = Utc::now().timestamp();
    now - now.rem_euclid(60)
}

/// Which flushes a call asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sampling {
    /// Only the counts (a `GoogleCalendar`), unless a worker uses the
    /// same database.
    CountsOnly,
    /// Also the queue depth and the retention (a worker), whichever user of
    /// the database starts the flush.
    Worker,
}

impl MinuteCounts {
    /// Counts `n` of `metric` with `label` in the current minute.
    pub(crate) fn add(&self, metric: &'static str, label: &str, n: u64) {
        if n == 0 {
            return;
        }
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let mut state = self.state.lock().expect("minute counts");
        let count = state
            .counts
            .entry((this_minute(), metric, label.to_owned()))
            .or_default();
        *count = count.saturating_add(n);
    }

    /// Starts a flush on a task of its own when the last one started at
    /// least [`FLUSH_EVERY`] ago (and none is running); returns at once.
    pub(crate) fn tick(db: &Database, sampling: Sampling) {
        let counts = db.minute_counts();
        {
            let mut state = counts.state.lock().expect("minute counts");
            state.worker |= sampling == Sampling::Worker;
            if state.last_flush.is_some_and(|t| t.elapsed() < FLUSH_EVERY) {
                return;
            }
            state.last_flush = Some(Instant::now());
        }
        let db = db.clone();
        tokio::spawn(async move {
            let counts = db.minute_counts();
            let Ok(_running) = counts.flushing.try_lock() else {
                return;
            };
            counts.flush_now(&db).await;
        });
    }

    /// Writes what is counted now (the drainer calls it as it stops), after
    /// any flush running; gives up after `within`.
    pub(crate) async fn flush(db: &Database, within: Duration) {
        let counts = db.minute_counts();
        let flushed = tokio::time::timeout(within, async {
            let _running = counts.flushing.lock().await;
            counts.state.lock().expect("minute counts").last_flush = Some(Instant::now());
            counts.flush_now(db).await;
        })
        .await;
        if flushed.is_err() {
            tracing::warn!(
                "the per-minute counts were not written before the drainer stopped: the database did not answer in time"
            );
        }
    }

    /// One flush: the counts, and for a worker the queue depth and the
    /// retention when due. Failures are logged, never returned: the counts
    /// stay for the next flush.
    async fn flush_now(&self, db: &Database) {
        let minute = this_minute();
        let (taken, sample, trim) = {
            let mut state = self.state.lock().expect("minute counts");
            let sample = state.worker && state.sampled_minute != Some(minute);
            let trim = state.worker
                && state
                    .last_trim
                    .is_none_or(|t| t.elapsed() >= RETENTION_EVERY);
            (std::mem::take(&mut state.counts), sample, trim)
        };
        if taken.is_empty() && !sample && !trim {
            return;
        }
        // Each statement on its own: counts written are never put back
        // because a later statement failed (they would be added twice).
        let mut failure: Option<Error> = None;
        let mut written = taken.is_empty();
        let mut sampled = false;
        match db.client().await {
            Err(e) => failure = Some(e),
            Ok(client) => {
                if !written {
                    match add_counts(&client, &taken).await {
                        Ok(()) => written = true,
                        Err(e) => failure = Some(e.into()),
                    }
                }
                if sample {
                    match client.execute(SAMPLE_DEPTH, &[]).await {
                        Ok(_) => sampled = true,
                        Err(e) => {
                            failure.get_or_insert(e.into());
                        }
                    }
                }
                if trim && let Err(e) = client.execute(TRIM, &[&RETENTION_HOURS]).await {
                    failure.get_or_insert(e.into());
                }
            }
        }
        let mut state = self.state.lock().expect("minute counts");
        if sampled {
            state.sampled_minute = Some(minute);
        }
        if trim {
            // Tried: at most once an hour, whatever came of it.
            state.last_trim = Some(Instant::now());
        }
        let unwritten = if written { 0 } else { taken.len() };
        if !written {
            keep(&mut state.counts, taken, minute);
        }
        match failure {
            None => {
                if state.failing {
                    tracing::info!("the per-minute counts are written again");
                }
                state.failing = false;
            }
            Some(e) => {
                if !state.failing {
                    tracing::warn!(error = %e, unwritten, "could not write the per-minute counts; what was not written waits for the next try");
                }
                state.failing = true;
            }
        }
    }
}

/// Puts the counts of a failed flush back with those noted since, dropping
/// minutes older than [`KEEP`] before `minute`.
fn keep(counts: &mut HashMap<Key, i64>, failed: HashMap<Key, i64>, minute: i64) {
    let oldest = minute.saturating_sub(i64::try_from(KEEP.as_secs()).unwrap_or(0));
    for (key, n) in failed {
        if key.0 >= oldest {
            let count = counts.entry(key).or_default();
            *count = count.saturating_add(n);
        }
    }
    counts.retain(|key, _| key.0 >= oldest);
}

/// Adds `counts` to the table: one statement, one row per key.
async fn add_counts(
    client: &deadpool_postgres::Object,
    counts: &HashMap<Key, i64>,
) -> Result<(), tokio_postgres::Error> {
    let mut minutes: Vec<DateTime<Utc>> = Vec::with_capacity(counts.len());
    let mut metrics = Vec::with_capacity(counts.len());
    let mut labels = Vec::with_capacity(counts.len());
    let mut ns = Vec::with_capacity(counts.len());
    for ((minute, metric, label), n) in counts {
        minutes.push(Utc.timestamp_opt(*minute, 0).single().unwrap_or_default());
        metrics.push(*metric);
        labels.push(label.as_str());
        ns.push(*n);
    }
    let add = client.prepare_cached(ADD).await?;
    client
        .execute(&add, &[&minutes, &metrics, &labels, &ns])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_of_a_failed_flush_wait_for_the_next_but_not_for_ever() {
        let now: i64 = 1_800_000_000; // a whole minute
        let hours = |h: i64| now - h * 3600;
        let key = |minute: i64, label: &str| (minute, GOOGLE_CALLS, label.to_owned());
        let mut counts = HashMap::from([(key(now, "200"), 2), (key(hours(4), "500"), 1)]);
        let failed = HashMap::from([
            (key(now, "200"), 3),
            (key(hours(2), "429"), 4),
            (key(hours(3) - 60, "200"), 5),
        ]);
        keep(&mut counts, failed, now);
        let mut kept: Vec<_> = counts.into_iter().collect();
        kept.sort();
        assert_eq!(kept, [(key(hours(2), "429"), 4), (key(now, "200"), 5)]);
    }

    #[test]
    fn counts_add_up_per_minute_metric_and_label() {
        let counts = MinuteCounts::default();
        counts.add(COMPLETED, "", 1);
        counts.add(COMPLETED, "", 2);
        counts.add(GOOGLE_CALLS, "200", 1);
        counts.add(RETRIED, "", 0);
        let state = counts.state.lock().unwrap();
        let mut seen: Vec<_> = state
            .counts
            .iter()
            .map(|((_, m, l), n)| (*m, l.as_str(), *n))
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, [(COMPLETED, "", 3), (GOOGLE_CALLS, "200", 1)]);
    }
}
