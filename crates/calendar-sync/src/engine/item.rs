//! One claimed item from decode to recorded outcome.

use std::time::Duration;

use tokio::task::JoinError;

use crate::apply::rebuild;
use crate::apply::{self, Applied, ApplyError, database_message};
use crate::calendar::{Calendar, CalendarError, CalendarErrorKind, ErrorClass};
use crate::db::Database;
use crate::db::connect::cause;
use crate::engine::Shared;
use crate::engine::backoff::retry_delay;
use crate::engine::outcomes::{self, Outcome, OutcomeKind};
use crate::error::Error;
use crate::minute_counts;
use crate::operation::{CalendarKey, DecodeError, Operation, OperationKind};
use crate::store::{self, ClaimedItem, Completion, FailureStatus, Invalidated, Resolution, Wait};

/// What became of an item, for the drain report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemOutcome {
    /// COMPLETED; `changed` is false when no write call was needed.
    Completed { changed: bool },
    /// Back to PENDING with backoff.
    Retried,
    /// DEAD_LETTER, plus `others` of its workspace when its connection went invalid.
    DeadLettered { others: u64 },
    /// Back to PENDING without using an attempt.
    Deferred,
    /// A long item stored its checkpoint and went back in line.
    Continued,
    /// Another worker owns the row now; nothing was written.
    ClaimLost,
    /// The outcome could not be recorded; the row will be recovered as an orphan.
    Abandoned,
}

impl ItemOutcome {
    /// The `outcome` label of the items metric.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Completed { changed: true } => "completed",
            Self::Completed { changed: false } => "unchanged",
            Self::Retried => "retried",
            Self::DeadLettered { .. } => "dead_letter",
            Self::Deferred => "deferred",
            Self::Continued => "continued",
            Self::ClaimLost => "claim_lost",
            Self::Abandoned => "abandoned",
        }
    }
}

/// What applying the operation came to, before it is recorded.
enum Verdict {
    Done(Box<Applied>),
    Invalid(DecodeError),
    Failed {
        error: CalendarError,
        workspace_id: String,
    },
    /// Our own bookkeeping failed; `[database]` and the driver's chain.
    Database(Error),
    /// The application's event source failed; `[event_source]` and its chain.
    Source(Box<dyn std::error::Error + Send + Sync>),
    Panicked(String),
    ClaimLost,
    /// Back in line under its calendar's own id (already recorded).
    SteppedBack,
}

impl Verdict {
    /// The `last_error` of a failure, `[code] message`; `None` for no failure.
    fn failure(&self) -> Option<String> {
        Some(match self {
            Self::Done(_) | Self::ClaimLost | Self::SteppedBack => return None,
            Self::Invalid(e) => format!("[invalid_payload] {e}"),
            Self::Failed { error, .. } => error.to_string(),
            Self::Database(e) => format!("[database] {}", database_message(e)),
            Self::Source(e) => format!("[event_source] {}", cause(&**e)),
            Self::Panicked(m) => format!("[handler_panicked] {m}"),
        })
    }
}

/// A processed item: its outcome already recorded, or a success that the
/// worker records together with others (one commit for many).
pub(crate) enum Processed {
    /// The outcome is in the database.
    Recorded(ItemOutcome),
    /// Applied; to be recorded as COMPLETED with its binding.
    Done(Box<Applied>),
}

/// Decodes and applies one item, and records any outcome but plain success.
/// Never panics on bad input: a malformed payload is dead-lettered with the
/// offending field named.
pub(crate) async fn process<C: Calendar>(shared: &Shared<C>, item: &ClaimedItem) -> Processed {
    let started = std::time::Instant::now();
    let verdict = apply(shared, item).await;
    metrics::histogram!("calendar_sync_attempt_duration_seconds", "operation" => operation_label(&item.operation))
        .record(started.elapsed().as_secs_f64());
    match verdict {
        Verdict::Done(applied) if !applied.continue_later => Processed::Done(applied),
        verdict => Processed::Recorded(record(shared, item, &verdict).await),
    }
}

/// Records successes as COMPLETED, with their bindings, in one statement on a
/// pooled connection (one commit for all); if that fails, one by one (with
/// retries). Returns their outcomes in order.
pub(crate) async fn record_successes<C: Calendar>(
    shared: &Shared<C>,
    done: Vec<(ClaimedItem, Applied)>,
) -> Vec<ItemOutcome> {
    let batch: Vec<Completion<'_>> = done
        .iter()
        .map(|(item, applied)| Completion {
            item,
            binding: applied.binding.as_ref(),
            result: applied.result.as_ref(),
        })
        .collect();
    let started = std::time::Instant::now();
    #[expect(
        clippy::cast_precision_loss,
        reason = "a row count as a metric: f64 is exact to 2^53"
    )]
    metrics::histogram!("calendar_sync_record_batch_rows").record(batch.len() as f64);
    let recorded = async {
        let client = shared.db.client().await?;
        let statement = client.prepare_cached(store::COMPLETE_MANY).await?;
        Ok::<_, Error>(store::complete_many(&**client, &statement, &batch).await?)
    }
    .await;
    metrics::histogram!("calendar_sync_record_batch_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    drop(batch);
    let mut outcomes = Vec::with_capacity(done.len());
    match recorded {
        Ok(ids) => {
            let ids: std::collections::HashSet<_> = ids.into_iter().collect();
            for (item, applied) in &done {
                let outcome = if ids.contains(&item.id) {
                    announce_completed(shared, item, applied);
                    ItemOutcome::Completed {
                        changed: applied.changed,
                    }
                } else {
                    ItemOutcome::ClaimLost
                };
                note(&shared.db, item, None, outcome);
                outcomes.push(outcome);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, items = done.len(), "could not record finished items together; recording them one by one");
            for (item, applied) in done {
                outcomes.push(record(shared, &item, &Verdict::Done(Box::new(applied))).await);
            }
        }
    }
    outcomes
}

/// The `operation` label of the metrics, from a closed set: the column has no
/// CHECK, and every distinct string would otherwise be a series of its own,
/// kept for the life of the process.
fn operation_label(operation: &str) -> &'static str {
    operation
        .parse::<OperationKind>()
        .map_or("invalid", OperationKind::as_str)
}

/// The one place an item's recorded outcome is noted: the log, the items
/// metric and the per-minute counts.
fn note(db: &Database, item: &ClaimedItem, verdict: Option<&Verdict>, outcome: ItemOutcome) {
    count_minute(db, verdict, outcome);
    if let Some(verdict) = verdict {
        log_outcome(item, verdict, outcome);
    } else if let ItemOutcome::Completed { changed } = outcome {
        tracing::debug!(outbox.id = %item.id, changed, "item completed");
    } else {
        tracing::warn!(outbox.id = %item.id, ?outcome, "item outcome");
    }
    metrics::counter!(
        "calendar_sync_items_total",
        "operation" => operation_label(&item.operation),
        "outcome" => outcome.label()
    )
    .increment(1);
}

/// Counts the outcome in the per-minute counts: COMPLETED, back to PENDING
/// after a failed attempt (Google's rate limits and usage limits included,
/// though they use no attempt), DEAD_LETTER (with the workspace's others).
/// Waits that no answer of Google caused (a breaker, a key, a step back, a
/// shutdown) and lost claims are not counted.
fn count_minute(db: &Database, verdict: Option<&Verdict>, outcome: ItemOutcome) {
    let counts = db.minute_counts();
    match outcome {
        ItemOutcome::Completed { .. } => counts.add(minute_counts::COMPLETED, "", 1),
        ItemOutcome::Retried => counts.add(minute_counts::RETRIED, "", 1),
        ItemOutcome::DeadLettered { others } => {
            counts.add(minute_counts::DEAD_LETTERED, "", others.saturating_add(1));
        }
        ItemOutcome::Deferred
            if matches!(verdict, Some(Verdict::Failed { error, .. })
                if matches!(error.kind, CalendarErrorKind::RateLimited | CalendarErrorKind::UsageLimited)) =>
        {
            counts.add(minute_counts::RETRIED, "", 1);
        }
        ItemOutcome::Deferred
        | ItemOutcome::Continued
        | ItemOutcome::ClaimLost
        | ItemOutcome::Abandoned => {}
    }
}

async fn apply<C: Calendar>(shared: &Shared<C>, item: &ClaimedItem) -> Verdict {
    let mut operation = match Operation::decode(&item.operation, &item.payload) {
        Ok(op) => op,
        Err(e) => return Verdict::Invalid(e),
    };
    if let Operation::UpsertEvent(u) = &mut operation {
        let options = std::mem::take(&mut u.event.options);
        u.event.options = shared.config.event_defaults.apply(&u.event_type, options);
    }
    let named = operation.calendar().clone();
    match resolve(shared, item, &named).await {
        Ok(Some(id)) => operation.set_calendar_id(id),
        Ok(None) => return Verdict::SteppedBack,
        Err(verdict) => return verdict,
    }
    let calendar = &shared.calendar;
    let db = &shared.db;
    let applied = match &operation {
        Operation::UpsertEvent(u) => apply::upsert(calendar, db, item, u).await,
        Operation::CancelEvent(s) => apply::cancel(calendar, item, s).await,
        Operation::RebuildAll(c) => {
            let source = shared.event_source.as_ref();
            let config = &shared.config;
            rebuild::rebuild(calendar, db, source, config, item, c, &named.calendar_id).await
        }
    };
    match applied {
        Ok(mut applied) => {
            applied.calendar = Some(operation.calendar().clone());
            Verdict::Done(Box::new(applied))
        }
        Err(ApplyError::Calendar(error)) => Verdict::Failed {
            error,
            workspace_id: operation.workspace_id().to_owned(),
        },
        Err(ApplyError::Database(error)) => Verdict::Database(error),
        Err(ApplyError::Source(error)) => Verdict::Source(error),
        Err(ApplyError::ClaimLost) => Verdict::ClaimLost,
    }
}

/// The calendar's own id, which every key uses whichever name the payload
/// gives (`primary`, the owner's address): `Ok(None)` when the item's row was
/// keyed by another name and went back in line under the right one, before
/// any write (see `calendar_sync_resolve_item`).
async fn resolve<C: Calendar>(
    shared: &Shared<C>,
    item: &ClaimedItem,
    named: &CalendarKey,
) -> Result<Option<String>, Verdict> {
    let failed = |error| Verdict::Failed {
        error,
        workspace_id: named.workspace_id.clone(),
    };
    let resolved = match shared.calendar.resolve_calendar(named).await {
        Ok(Some(resolved)) => resolved,
        Ok(None) => return Err(failed(apply::calendar_not_found(named))),
        Err(e) => return Err(failed(e)),
    };
    if resolved.id == named.calendar_id {
        return Ok(Some(resolved.id));
    }
    let resolution = async {
        let client = shared.db.client().await?;
        let version = resolved.connection_version;
        Ok::<_, Error>(store::resolve_item(&**client, item, named, &resolved.id, version).await?)
    };
    match resolution.await {
        Ok(Resolution::Keyed) => Ok(Some(resolved.id)),
        Ok(Resolution::Rekeyed { doubled }) => {
            tracing::info!(outbox.id = %item.id, calendar.name = %named.calendar_id, calendar.id = %resolved.id, "calendar name resolved; its rows are keyed by the calendar's own id now");
            if doubled > 0 {
                tracing::warn!(calendar.name = %named.calendar_id, calendar.id = %resolved.id, sources = doubled, "sources had an event under each name of one calendar; the older stays until the next REBUILD_ALL of the calendar deletes it");
            }
            Ok(None)
        }
        Ok(Resolution::Stale) => Err(failed(apply::connection_changed())),
        Ok(Resolution::ClaimLost) => Err(Verdict::ClaimLost),
        Err(e) => Err(Verdict::Database(e)),
    }
}

/// Tells the drainer's subscribers of a completed item (committed).
fn announce_completed<C: Calendar>(shared: &Shared<C>, item: &ClaimedItem, applied: &Applied) {
    if shared.outcomes.wants(OutcomeKind::Completed)
        && let Some(outcome) = outcomes::completed(item, applied)
    {
        shared.outcomes.publish(&outcome);
    }
}

/// Tells the drainer's subscribers of an item's recorded outcome, when it is
/// one they can subscribe to.
fn announce<C: Calendar>(
    shared: &Shared<C>,
    item: &ClaimedItem,
    verdict: &Verdict,
    outcome: ItemOutcome,
) {
    match (verdict, outcome) {
        (Verdict::Done(applied), ItemOutcome::Completed { .. }) => {
            announce_completed(shared, item, applied);
        }
        (_, ItemOutcome::DeadLettered { .. })
            if shared.outcomes.wants(OutcomeKind::DeadLettered) =>
        {
            let last_error = verdict.failure().unwrap_or_default();
            shared
                .outcomes
                .publish(&outcomes::dead_lettered(item, &last_error));
        }
        _ => {}
    }
}

/// Tries at recording one outcome: 100 ms, 200 ms … 5 s apart, about 16 s in
/// all, so that a lock held for a while by another session (a lock_timeout, a
/// deadlock victim) costs a wait, not a repeated Google call.
const RECORD_ATTEMPTS: u32 = 8;

/// Records the verdict; a failing database gets tries with backoff before the
/// row is left to orphan recovery.
async fn record<C: Calendar>(
    shared: &Shared<C>,
    item: &ClaimedItem,
    verdict: &Verdict,
) -> ItemOutcome {
    for attempt in 0..RECORD_ATTEMPTS {
        match record_once(shared, item, verdict).await {
            Ok(outcome) => {
                note(&shared.db, item, Some(verdict), outcome);
                announce(shared, item, verdict, outcome);
                return outcome;
            }
            Err(e) if attempt == 0 || attempt + 1 == RECORD_ATTEMPTS => {
                tracing::warn!(outbox.id = %item.id, error = %e, attempt, "could not record the item's outcome; retrying");
            }
            Err(e) => {
                tracing::debug!(outbox.id = %item.id, error = %e, attempt, "could not record the item's outcome")
            }
        }
        let delay = Duration::from_millis(100u64 << attempt).min(Duration::from_secs(5));
        tokio::time::sleep(delay).await;
    }
    ItemOutcome::Abandoned
}

/// One try at recording the verdict, in the order the README's "How draining
/// works" tells it: success (or a checkpoint), a malformed payload, a failure
/// of ours, then Google's answer by class.
async fn record_once<C: Calendar>(
    shared: &Shared<C>,
    item: &ClaimedItem,
    verdict: &Verdict,
) -> Result<ItemOutcome, Error> {
    let mut pooled = shared.db.client().await?;
    let client: &tokio_postgres::Client = &pooled;
    Ok(match verdict {
        Verdict::ClaimLost => ItemOutcome::ClaimLost,
        Verdict::SteppedBack => ItemOutcome::Deferred,
        Verdict::Done(applied) => record_done(client, item, applied).await?,
        Verdict::Invalid(e) => {
            let status =
                store::dead_letter(client, item, &format!("[invalid_payload] {e}")).await?;
            dead_or_lost(status, 0)
        }
        Verdict::Database(_) | Verdict::Source(_) | Verdict::Panicked(_) => {
            let error = verdict.failure().unwrap_or_default();
            retry(shared, client, item, None, &error).await?
        }
        Verdict::Failed {
            error,
            workspace_id,
        } => record_failure(shared, &mut pooled, item, error, workspace_id).await?,
    })
}

/// A success recorded on its own (the worker groups the others), or a long
/// item's checkpoint.
async fn record_done(
    client: &tokio_postgres::Client,
    item: &ClaimedItem,
    applied: &Applied,
) -> Result<ItemOutcome, Error> {
    if applied.continue_later {
        let progress = applied.result.clone().unwrap_or_default();
        return Ok(match store::checkpoint(client, item, &progress).await? {
            FailureStatus::ClaimLost => ItemOutcome::ClaimLost,
            _ => ItemOutcome::Continued,
        });
    }
    let done = Completion {
        item,
        binding: applied.binding.as_ref(),
        result: applied.result.as_ref(),
    };
    let completed = store::complete_many(client, store::COMPLETE_MANY, &[done]).await?;
    Ok(if completed.is_empty() {
        ItemOutcome::ClaimLost
    } else {
        ItemOutcome::Completed {
            changed: applied.changed,
        }
    })
}

/// Google's (or the token endpoint's) refusal, recorded by its class.
async fn record_failure<C: Calendar>(
    shared: &Shared<C>,
    pooled: &mut tokio_postgres::Client,
    item: &ClaimedItem,
    error: &CalendarError,
    workspace_id: &str,
) -> Result<ItemOutcome, Error> {
    let config = &shared.config;
    let message = error.to_string();
    Ok(match error.class() {
        ErrorClass::Retryable { retry_after } => {
            retry(shared, &*pooled, item, retry_after, &message).await?
        }
        ErrorClass::RateLimited { retry_after } => {
            let delay = backoff_for(config, item, retry_after);
            defer(&*pooled, item, delay, &message, Wait::RateLimited).await?
        }
        ErrorClass::Permanent => {
            dead_or_lost(store::dead_letter(&*pooled, item, &message).await?, 0)
        }
        ErrorClass::Paused => {
            // The calendar knows how long its pauses last (Google's usage
            // limits: `GoogleConfig::usage_limit_pause`); one that does not say
            // waits the longest retry delay.
            let pause = error.retry_after.unwrap_or(config.backoff_cap);
            let outcome = defer(&*pooled, item, pause, &message, Wait::Other).await?;
            if outcome == ItemOutcome::Deferred && error.kind == CalendarErrorKind::UsageLimited {
                shared
                    .outcomes
                    .publish_pause(workspace_id, outcomes::pause_end(pause));
            }
            outcome
        }
        ErrorClass::ConnectionInvalid => {
            let invalidated = invalidate_connection(pooled, item, workspace_id, &message).await?;
            if invalidated.connection_changed {
                shared.outcomes.publish(&Outcome::ConnectionInvalidated {
                    workspace_id: workspace_id.to_owned(),
                    reason: message.clone(),
                    dead_lettered: invalidated.others,
                });
            }
            dead_or_lost(invalidated.status, invalidated.others)
        }
    })
}

/// Back in line after `delay`, without using an attempt.
async fn defer(
    client: &tokio_postgres::Client,
    item: &ClaimedItem,
    delay: Duration,
    error: &str,
    wait: Wait,
) -> Result<ItemOutcome, Error> {
    Ok(
        match store::defer(client, item, delay.as_secs_f64(), error, wait).await? {
            FailureStatus::ClaimLost => ItemOutcome::ClaimLost,
            _ => ItemOutcome::Deferred,
        },
    )
}

/// Dead-letters the workspace's waiting rows while holding the claim mutex: a
/// claim locks rows of the same workspace (the one it marks PROCESSING, the
/// older ones it supersedes), and without the mutex the two statements took
/// row locks in orders that deadlock (tests/statements.rs).
async fn invalidate_connection(
    client: &mut tokio_postgres::Client,
    item: &ClaimedItem,
    workspace_id: &str,
    error: &str,
) -> Result<Invalidated, Error> {
    let tx = client.transaction().await?;
    store::lock_claims(&tx).await?;
    let result = store::invalidate_connection(&tx, item, workspace_id, error).await?;
    tx.commit().await?;
    Ok(result)
}

async fn retry<C: Calendar>(
    shared: &Shared<C>,
    client: &impl tokio_postgres::GenericClient,
    item: &ClaimedItem,
    retry_after: Option<Duration>,
    error: &str,
) -> Result<ItemOutcome, Error> {
    let config = &shared.config;
    let delay = backoff_for(config, item, retry_after);
    let status = store::fail_retryable(
        client,
        item,
        config.attempt_limit(),
        delay.as_secs_f64(),
        error,
    )
    .await?;
    Ok(match status {
        FailureStatus::Pending => ItemOutcome::Retried,
        other => dead_or_lost(other, 0),
    })
}

/// The retry delay after this item's attempt: it grows with attempts and with
/// rate-limited answers met (the service's hint wins when longer).
fn backoff_for(
    config: &crate::config::DrainerConfig,
    item: &ClaimedItem,
    retry_after: Option<Duration>,
) -> Duration {
    retry_delay(
        item.attempts
            .max(1)
            .unsigned_abs()
            .saturating_add(item.rate_limited.max(0).unsigned_abs()),
        config.backoff_base,
        config.backoff_cap,
        config.backoff_jitter,
        rand::random::<f64>(),
        retry_after,
    )
}

fn dead_or_lost(status: FailureStatus, others: u64) -> ItemOutcome {
    match status {
        FailureStatus::ClaimLost => ItemOutcome::ClaimLost,
        _ => ItemOutcome::DeadLettered { others },
    }
}

fn log_outcome(item: &ClaimedItem, verdict: &Verdict, outcome: ItemOutcome) {
    match (outcome, verdict.failure()) {
        (ItemOutcome::Completed { changed }, _) => tracing::debug!(changed, "item completed"),
        (ItemOutcome::Deferred, None) => tracing::debug!("item back in line"),
        (outcome, Some(reason)) => {
            tracing::warn!(?outcome, attempts = item.attempts, error = %reason, "item failed")
        }
        (outcome, None) => tracing::warn!(?outcome, "item outcome not recorded"),
    }
}

/// Records an item whose task panicked (a retryable failure: the attempt
/// counts) or was aborted at the end of the shutdown grace period (released
/// back to PENDING without using the attempt).
pub(crate) async fn record_interrupted<C: Calendar>(
    shared: &Shared<C>,
    item: &ClaimedItem,
    error: JoinError,
) -> ItemOutcome {
    if error.is_panic() {
        let message = panic_message(error.into_panic());
        tracing::error!(outbox.id = %item.id, panic = %message, "item handler panicked");
        return record(shared, item, &Verdict::Panicked(message)).await;
    }
    let released = async {
        let client = shared.db.client().await?;
        let status = store::defer(
            &**client,
            item,
            0.0,
            "[shutdown] released unfinished when the worker stopped",
            Wait::Other,
        )
        .await?;
        Ok::<_, Error>(status)
    };
    match released.await {
        Ok(FailureStatus::ClaimLost) => ItemOutcome::ClaimLost,
        Ok(_) => ItemOutcome::Deferred,
        // The row stays PROCESSING; once our lock is released it is an orphan
        // that the next poll of any worker takes back.
        Err(_) => ItemOutcome::Abandoned,
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".to_owned());
    text.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::operation_label;

    #[test]
    fn operation_labels_come_from_a_closed_set() {
        assert_eq!(operation_label("UPSERT_EVENT"), "UPSERT_EVENT");
        assert_eq!(operation_label("CANCEL_EVENT"), "CANCEL_EVENT");
        assert_eq!(operation_label("REBUILD_ALL"), "REBUILD_ALL");
        for bad in ["", "upsert_event", "BOGUS_1", &"X".repeat(1024)] {
            assert_eq!(operation_label(bad), "invalid");
        }
    }
}
