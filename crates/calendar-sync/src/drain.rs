//! The engine: [`OutboxDrainer`] claims due rows, applies them, and records
//! each outcome.
//!
//! A worker owns one dedicated *lock connection*. Claims happen on it, inside a
//! transaction serialised by a claim mutex (so ordering checks see every other
//! worker's claims), and each claimed row's session advisory lock is taken on
//! it *before* the row is marked PROCESSING. The lock is released only after the
//! row's outcome has committed. Hence a PROCESSING row whose lock nobody holds
//! belongs to a worker that died or lost its connection, and any worker's next
//! poll takes it back. Outcomes are written through the pool and are
//! conditional on the claim token, so a worker that lost its claim can never
//! overwrite a newer outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::{Id as TaskId, JoinError, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::budget;
use crate::calendar::Calendar;
use crate::config::DrainerConfig;
use crate::db::{Database, LockConnection};
use crate::desired::EventSource;
use crate::error::Error;
use crate::item::{self, ItemOutcome, Processed};
use crate::stall::StatementBackoff;
use crate::store::{self, ClaimBatch, ClaimedItem};
use crate::sync::Applied;

/// Counts of what a drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Rows claimed for processing.
    pub claimed: u64,
    /// Rows completed (including those that needed no call).
    pub completed: u64,
    /// Of the completed, those whose desired state already held (no write call).
    pub unchanged: u64,
    /// Rows sent back to PENDING for a later attempt.
    pub retried: u64,
    /// Rows moved to DEAD_LETTER (including a workspace's others on an invalid connection).
    pub dead_lettered: u64,
    /// Rows superseded by a newer item of their source.
    pub superseded: u64,
    /// Rows put back to wait without using an attempt (usage-limit pause, shutdown).
    pub deferred: u64,
    /// Long items (REBUILD_ALL chunks) that stored a checkpoint to resume from.
    pub continued: u64,
    /// Rows of dead workers taken back.
    pub recovered: u64,
    /// Rows whose claim another worker had taken over when we finished.
    pub claim_lost: u64,
}

impl DrainReport {
    fn add(&mut self, outcome: ItemOutcome) {
        match outcome {
            ItemOutcome::Completed { changed } => {
                self.completed += 1;
                self.unchanged += u64::from(!changed);
            }
            ItemOutcome::Retried => self.retried += 1,
            ItemOutcome::DeadLettered { others } => self.dead_lettered += 1 + others,
            ItemOutcome::Deferred => self.deferred += 1,
            ItemOutcome::Continued => self.continued += 1,
            ItemOutcome::ClaimLost | ItemOutcome::Abandoned => self.claim_lost += 1,
        }
    }
}

/// What a running drainer has done, and when its loop last went round.
#[derive(Debug, Clone, Copy)]
struct Progress {
    report: DrainReport,
    last_beat: Instant,
}

type SharedProgress = Arc<Mutex<Progress>>;

/// Drains `sync_outbox` into a [`Calendar`]. Cheap to clone; clones share the
/// database and calendar.
pub struct OutboxDrainer<C: Calendar> {
    shared: Arc<Shared<C>>,
}

impl<C: Calendar> Clone for OutboxDrainer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

pub(crate) struct Shared<C> {
    pub db: Database,
    pub calendar: C,
    pub config: DrainerConfig,
    pub event_source: Option<Arc<dyn EventSource>>,
}

impl<C: Calendar> OutboxDrainer<C> {
    /// A drainer over `db` writing to `calendar`.
    pub fn new(db: Database, calendar: C, config: DrainerConfig) -> Result<Self, Error> {
        Self::build(db, calendar, config, None)
    }

    /// A drainer whose REBUILD_ALL takes the desired state from `source` (the
    /// application's own data) instead of the SQL view or the bindings.
    pub fn with_event_source(
        db: Database,
        calendar: C,
        config: DrainerConfig,
        source: Arc<dyn EventSource>,
    ) -> Result<Self, Error> {
        Self::build(db, calendar, config, Some(source))
    }

    fn build(
        db: Database,
        calendar: C,
        config: DrainerConfig,
        event_source: Option<Arc<dyn EventSource>>,
    ) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                calendar,
                config,
                event_source,
            }),
        })
    }

    /// The calendar this drainer writes to.
    pub fn calendar(&self) -> &C {
        &self.shared.calendar
    }

    /// Processes everything due now (including what becomes due because an
    /// earlier item of its source finished) and returns what happened. Items
    /// scheduled for a later retry are left for later. For tests and cron-style runs.
    pub async fn drain_once(&self) -> Result<DrainReport, Error> {
        let lock = self.shared.db.lock_connection().await?;
        let mut worker = Worker::new(self.shared.clone(), lock);
        worker.run(Mode::Once, &CancellationToken::new()).await?;
        Ok(worker.report)
    }

    /// Starts draining in the background until [`DrainerHandle::stop`]. A lost
    /// database connection is survived: the worker reconnects with backoff.
    pub fn start(&self) -> DrainerHandle {
        let cancel = CancellationToken::new();
        let progress = Arc::new(Mutex::new(Progress {
            report: DrainReport::default(),
            last_beat: Instant::now(),
        }));
        let task = tokio::spawn(run_until_stopped(
            self.shared.clone(),
            cancel.clone(),
            progress.clone(),
        ));
        DrainerHandle {
            cancel,
            task,
            progress,
        }
    }
}

/// A running drainer.
pub struct DrainerHandle {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    progress: SharedProgress,
}

impl DrainerHandle {
    /// What the drainer has done so far.
    pub fn report(&self) -> DrainReport {
        self.progress.lock().expect("progress lock").report
    }

    /// How long ago the drain loop last went round. An idle loop goes round at
    /// least once per `poll_interval`, and while it waits to reconnect after
    /// losing the database; much longer means it is stuck.
    pub fn since_heartbeat(&self) -> Duration {
        self.progress
            .lock()
            .expect("progress lock")
            .last_beat
            .elapsed()
    }

    /// Whether the drain loop has ended (it only ends after `stop`, or on a panic).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops gracefully: no new claims; in-flight items may finish within the
    /// configured grace period, then the rest are released back to PENDING;
    /// every lock is released. Returns the final report.
    pub async fn stop(self) -> DrainReport {
        self.cancel.cancel();
        let _ = self.task.await;
        self.progress.lock().expect("progress lock").report
    }
}

async fn run_until_stopped<C: Calendar>(
    shared: Arc<Shared<C>>,
    cancel: CancellationToken,
    progress: SharedProgress,
) {
    let mut failures = 0u32;
    while !cancel.is_cancelled() {
        let lock = tokio::select! {
            _ = cancel.cancelled() => return,
            lock = shared.db.lock_connection() => lock,
        };
        let outcome = match lock {
            Ok(lock) => {
                let began = Instant::now();
                let mut worker = Worker::new(shared.clone(), lock).with_progress(progress.clone());
                let outcome = worker.run(Mode::UntilStopped, &cancel).await;
                if outcome.is_ok() {
                    return;
                }
                // A connection that served a while starts the backoff afresh:
                // today's blip should not wait as long as last week's outage.
                if began.elapsed() >= MAX_RECONNECT_DELAY {
                    failures = 0;
                }
                outcome
            }
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            failures += 1;
            let delay = reconnect_delay(failures);
            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "drainer lost the database; reconnecting");
            progress.lock().expect("progress lock").last_beat = Instant::now();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// Sleeps until `at`, or forever when it is not set (a `select!` branch that
/// never fires).
async fn sleep_until_set(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long after the grace period a stopping worker waits for the database
/// (recording, releasing) before it leaves its rows to orphan recovery.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(3);

/// Resolves `grace` + [`SHUTDOWN_MARGIN`] after `cancel` fires: the latest a
/// stopping worker returns, whatever the database does.
async fn hard_stop(cancel: &CancellationToken, grace: Duration) {
    cancel.cancelled().await;
    tokio::time::sleep(grace + SHUTDOWN_MARGIN).await;
}

/// The longest wait between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// 0.5 s, 1 s, 2 s … up to 30 s between reconnection attempts.
fn reconnect_delay(failures: u32) -> Duration {
    let delay =
        Duration::from_millis(500u64.saturating_mul(1 << failures.saturating_sub(1).min(6)));
    delay.min(MAX_RECONNECT_DELAY)
}

/// A claim looks at no more than this many due rows and (workspace, calendar)
/// groups per row it may claim (and at least [`MIN_EXAMINED`]), so that many
/// blocked groups cannot make one claim expensive; the next claim goes on
/// where a capped one stopped (V8's cursor).
const MAX_EXAMINED_PER_CLAIMED: usize = 20;
const MIN_EXAMINED: usize = 1000;

/// The shortest sleep for a token: a claim for each token would cost more
/// than the few milliseconds it saves.
const MIN_BUDGET_WAIT: Duration = Duration::from_millis(5);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Return when nothing is due and nothing is in flight.
    Once,
    /// Run until the cancellation token fires.
    UntilStopped,
}

/// One worker: a lock connection and the items in flight on it.
struct Worker<C: Calendar> {
    shared: Arc<Shared<C>>,
    lock: LockConnection,
    in_flight: JoinSet<Processed>,
    /// The batch of successes being recorded through the pool (one at a time),
    /// and its rows' lock keys: the rows stay locked until it has committed.
    recording: JoinSet<Vec<ItemOutcome>>,
    recording_keys: Vec<i32>,
    /// Successes waiting for the running batch to commit (group commit: the
    /// next batch takes everything that finished meanwhile).
    unrecorded: Vec<(ClaimedItem, Applied)>,
    by_task: HashMap<TaskId, ClaimedItem>,
    /// Locks of settled rows whose unlock failed; released once statements work again.
    unlock_later: Vec<i32>,
    /// Failed statements on the lock connection wait here before the next try.
    backoff: StatementBackoff,
    /// Whether this worker is registered as waiting for a wake-up (producers'
    /// commits notify only while some worker is).
    waiting: bool,
    report: DrainReport,
    progress: Option<SharedProgress>,
}

impl<C: Calendar> Worker<C> {
    fn new(shared: Arc<Shared<C>>, lock: LockConnection) -> Self {
        Self {
            shared,
            lock,
            in_flight: JoinSet::new(),
            recording: JoinSet::new(),
            recording_keys: Vec::new(),
            unrecorded: Vec::new(),
            by_task: HashMap::new(),
            unlock_later: Vec::new(),
            backoff: StatementBackoff::default(),
            waiting: false,
            report: DrainReport::default(),
            progress: None,
        }
    }

    fn with_progress(mut self, progress: SharedProgress) -> Self {
        self.report = progress.lock().expect("progress lock").report;
        self.progress = Some(progress);
        self
    }

    /// Shares the report with the handle and marks the loop alive.
    fn publish(&self) {
        if let Some(progress) = &self.progress {
            *progress.lock().expect("progress lock") = Progress {
                report: self.report,
                last_beat: Instant::now(),
            };
        }
    }

    async fn run(&mut self, mode: Mode, cancel: &CancellationToken) -> Result<(), Error> {
        let grace = self.shared.config.shutdown_grace;
        let result = tokio::select! {
            result = self.run_loop(mode, cancel) => result,
            _ = hard_stop(cancel, grace) => {
                tracing::warn!(
                    in_flight = self.in_flight.len(),
                    recording = self.recording_keys.len(),
                    "the database did not answer by the shutdown deadline; leaving rows to orphan recovery"
                );
                // Dropping the lock connection (with this worker) frees the
                // rows' locks: any worker's next poll takes them back.
                self.recording.abort_all();
                Ok(())
            }
        };
        if result.is_err() {
            // The lock connection is gone or unusable: so are our locks. Stop
            // work on every item it guarded; their rows are orphans now.
            self.in_flight.abort_all();
            while self.in_flight.join_next().await.is_some() {}
            // Batches being recorded may have committed or not; either way
            // their rows are safe (claim tokens), and any left PROCESSING are
            // orphans like the rest.
            self.recording.abort_all();
            while self.recording.join_next().await.is_some() {}
            self.recording_keys.clear();
            self.unlock_later.clear();
            self.unrecorded.clear();
            self.by_task.clear();
        }
        self.publish();
        result
    }

    async fn run_loop(&mut self, mode: Mode, cancel: &CancellationToken) -> Result<(), Error> {
        let config = self.shared.config.clone();
        let recovered = self.recover_orphans().await;
        self.absorb("recover_orphans", recovered)?;
        let mut poll =
            tokio::time::interval_at(Instant::now() + config.poll_interval, config.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stopping: Option<Instant> = None;
        let mut grace_over = false;
        let mut idle_rounds = 0u32;
        // With a settle time, rows are claimed a while after they became due:
        // look again then, after a wake-up or a claim that found work (the
        // rows committed meanwhile send no wake-up: work was waiting).
        let mut settle_wake: Option<Instant> = None;
        // Due rows left for want of budget: claim again when the next token
        // is due, not a poll interval later.
        let mut budget_wake: Option<Instant> = None;
        // Whether the last claim came back with fewer rows than it asked for.
        let mut came_up_short = false;
        let budgeted = self.shared.calendar.budget().is_some();
        loop {
            let mut progressed = false;
            let mut contended = false;
            // Whether a claim ran this round, and whether its last came up short.
            let mut short = None;
            self.unlock_deferred().await?;
            // Claim in batches: when idle, or once enough room has freed up.
            // While the budget sets the pace (claims come back short of
            // tokens), as soon as a slot is free: waiting for half the slots
            // let tokens go unused (one drainer at 100 ms a call used 88 % of
            // the project quota), and the quota keeps such claims as rare as
            // calls. A backlog the budget does not hold back is claimed in
            // batches (4,546 items/s against 2,817 claiming one at a time).
            let threshold = if budgeted && came_up_short {
                1
            } else {
                config.batch_size.min(config.concurrency.div_ceil(2))
            };
            // A stop is noticed before claiming more, even while items keep
            // finishing (the select below handles those first).
            while stopping.is_none()
                && !cancel.is_cancelled()
                && self.backoff.ready()
                && (self.busy() == 0 || self.room() >= threshold)
            {
                let room = self.room().min(config.batch_size);
                let batch = match self.claim(room).await {
                    Ok(batch) => batch,
                    // drain_once reports a failed claim to its caller.
                    Err(e) if mode == Mode::Once => return Err(e),
                    Err(e) => {
                        self.claim_failed(e).await?;
                        break;
                    }
                };
                let claimed = batch.items.len();
                came_up_short = !batch.more;
                budget_wake = batch
                    .budget_wait
                    .map(|wait| Instant::now() + wait.clamp(MIN_BUDGET_WAIT, config.poll_interval));
                progressed |= claimed > 0 || batch.superseded > 0;
                contended |= batch.busy > 0;
                self.report.superseded += (batch.superseded + batch.stale) as u64;
                for item in batch.items {
                    self.spawn(item);
                }
                short = Some(!batch.more);
                if !batch.more || (claimed == 0 && batch.superseded == 0) {
                    break;
                }
            }
            let wants_wake_up = mode == Mode::UntilStopped
                && stopping.is_none()
                && self.room() > 0
                && short.unwrap_or(self.waiting);
            if self.set_waiting(wants_wake_up).await? && wants_wake_up {
                // Rows committed before the registration sent no NOTIFY.
                continue;
            }
            if progressed && !config.settle.is_zero() {
                settle_wake = Some(Instant::now() + config.settle);
            }
            self.publish();
            if stopping.is_some() && self.busy() == 0 {
                return Ok(());
            }
            if self.busy() == 0 && progressed {
                // Only superseded rows this round: there may be more to claim.
                continue;
            }
            if mode == Mode::Once && self.busy() == 0 {
                if let Some(at) = budget_wake.take() {
                    // Due, only not paid for yet.
                    tokio::time::sleep_until(at).await;
                    continue;
                }
                // Rows whose locks another session still holds for a moment
                // (it is between committing their outcome and unlocking) are
                // worth a few short retries; anything else is not due.
                if contended && idle_rounds < 50 {
                    idle_rounds += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                return Ok(());
            }
            idle_rounds = 0;
            tokio::select! {
                biased;
                _ = self.lock.closed.cancelled() => return Err(Error::LockConnectionLost),
                Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    let mut finished = vec![joined];
                    while let Some(more) = self.in_flight.try_join_next_with_id() {
                        finished.push(more);
                    }
                    self.settle(finished).await?;
                }
                Some(recorded) = self.recording.join_next(), if !self.recording.is_empty() => {
                    self.recorded(recorded).await?;
                }
                _ = cancel.cancelled(), if stopping.is_none() => {
                    tracing::info!(in_flight = self.in_flight.len(), "drainer stopping");
                    stopping = Some(Instant::now() + config.shutdown_grace);
                    self.set_waiting(false).await?;
                }
                _ = sleep_until_set(stopping), if !grace_over => {
                    // Once: past the deadline this branch would be ready on
                    // every pass while a recording is still running.
                    grace_over = true;
                    tracing::warn!(in_flight = self.in_flight.len(), "grace period over; releasing in-flight items");
                    self.in_flight.abort_all();
                    let mut finished = Vec::new();
                    while let Some(joined) = self.in_flight.join_next_with_id().await {
                        finished.push(joined);
                    }
                    self.settle(finished).await?;
                }
                _ = self.lock.notified.notified(), if mode == Mode::UntilStopped && stopping.is_none() => {
                    if !config.settle.is_zero() {
                        settle_wake.get_or_insert(Instant::now() + config.settle);
                    }
                }
                _ = sleep_until_set(settle_wake), if stopping.is_none() => {
                    settle_wake = None;
                }
                _ = sleep_until_set(self.backoff.until()), if stopping.is_none() => {}
                _ = sleep_until_set(budget_wake), if stopping.is_none() => {
                    budget_wake = None;
                }
                _ = poll.tick(), if mode == Mode::UntilStopped && stopping.is_none() => {
                    let recovered = self.recover_orphans().await;
                    self.absorb("recover_orphans", recovered)?;
                }
            }
        }
    }

    fn spawn(&mut self, item: ClaimedItem) {
        self.report.claimed += 1;
        let shared = self.shared.clone();
        let span = tracing::info_span!("outbox_item", outbox.id = %item.id, operation = %item.operation, attempt = item.attempts);
        let task_item = item.clone();
        let handle = self.in_flight.spawn(
            budget::with_prepaid_call(async move { item::process(&shared, &task_item).await })
                .instrument(span),
        );
        self.by_task.insert(handle.id(), item);
    }

    /// Items claimed and not yet released: running, or being recorded.
    fn busy(&self) -> usize {
        self.in_flight.len() + self.unrecorded.len() + self.recording_keys.len()
    }

    /// How many more items may start. `concurrency` bounds the items being
    /// applied (calls to Google); items waiting to be recorded do not count,
    /// so claiming and recording overlap, unless recording falls far behind.
    fn room(&self) -> usize {
        let concurrency = self.shared.config.concurrency;
        let waiting = self.unrecorded.len() + self.recording_keys.len();
        if waiting >= 4 * concurrency.max(self.shared.config.batch_size) {
            return 0;
        }
        concurrency.saturating_sub(self.in_flight.len())
    }

    /// Sends the waiting successes to be recorded in one statement through the
    /// pool, unless a batch is being recorded already (then they go with the
    /// next one, when it has committed).
    fn record_unrecorded(&mut self) {
        if self.unrecorded.is_empty() || !self.recording.is_empty() {
            return;
        }
        let done = std::mem::take(&mut self.unrecorded);
        self.recording_keys = done.iter().map(|(item, _)| item.lock_key).collect();
        let shared = self.shared.clone();
        self.recording
            .spawn(async move { item::record_successes(&shared, done).await });
    }

    /// Takes in finished tasks: failures are recorded already (a panicked or
    /// aborted task is failed or released here) and their locks released now;
    /// successes go to the pool to be recorded in one statement, while this
    /// connection goes on claiming.
    async fn settle(
        &mut self,
        finished: Vec<Result<(TaskId, Processed), JoinError>>,
    ) -> Result<(), Error> {
        let mut keys = Vec::with_capacity(finished.len());
        let mut done = Vec::new();
        for joined in finished {
            let (task_id, processed) = match joined {
                Ok(joined) => joined,
                Err(e) => {
                    let task_id = e.id();
                    let Some(item) = self.by_task.get(&task_id) else {
                        continue;
                    };
                    let outcome = item::settle_interrupted(&self.shared, item, e).await;
                    (task_id, Processed::Recorded(outcome))
                }
            };
            let Some(item) = self.by_task.remove(&task_id) else {
                continue;
            };
            match processed {
                Processed::Recorded(outcome) => {
                    keys.push(item.lock_key);
                    self.report.add(outcome);
                }
                Processed::Done(applied) => done.push((item, *applied)),
            }
        }
        self.unrecorded.extend(done);
        self.record_unrecorded();
        self.unlock(&keys).await?;
        self.publish();
        Ok(())
    }

    /// A batch of successes has been recorded: release its rows. (Should the
    /// recording task have panicked, rows it left PROCESSING become orphans
    /// once released, and any worker's next poll takes them back.)
    async fn recorded(&mut self, joined: Result<Vec<ItemOutcome>, JoinError>) -> Result<(), Error> {
        let outcomes = joined.unwrap_or_else(|e| {
            tracing::error!(error = %e, "recording finished items failed");
            Vec::new()
        });
        let keys = std::mem::take(&mut self.recording_keys);
        for outcome in outcomes {
            self.report.add(outcome);
        }
        self.record_unrecorded();
        self.unlock(&keys).await?;
        self.publish();
        Ok(())
    }

    /// Releases row locks; should the statement fail with the session alive,
    /// they are released on a later pass (the rows' outcomes are recorded:
    /// holding their locks longer only delays their sources' next items).
    async fn unlock(&mut self, keys: &[i32]) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let unlocked = self.unlock_now(keys).await;
        if unlocked.is_err() {
            self.unlock_later.extend_from_slice(keys);
        }
        self.absorb("unlock", unlocked)
    }

    async fn unlock_now(&mut self, keys: &[i32]) -> Result<(), Error> {
        let unlock = self.lock.prepared(store::UNLOCK).await?;
        store::unlock_rows(&self.lock.client, &unlock, keys).await?;
        Ok(())
    }

    /// Retries the unlocks that failed, once statements may run again.
    async fn unlock_deferred(&mut self) -> Result<(), Error> {
        if self.unlock_later.is_empty() || !self.backoff.ready() {
            return Ok(());
        }
        let keys = std::mem::take(&mut self.unlock_later);
        self.unlock(&keys).await
    }

    /// Registers this worker as waiting for a wake-up, or removes it; returns
    /// whether the registration changed. A failure leaves it as it was (the
    /// poll remains the safety net) and is retried on a later pass.
    async fn set_waiting(&mut self, waiting: bool) -> Result<bool, Error> {
        if waiting == self.waiting || !self.backoff.ready() {
            return Ok(false);
        }
        let result = if waiting {
            store::register_waiter(&self.lock.client).await
        } else {
            store::unregister_waiter(&self.lock.client).await
        };
        let changed = result.is_ok();
        self.absorb("wait_for_wake_up", result.map_err(Error::from))?;
        if changed {
            self.waiting = waiting;
        }
        Ok(changed)
    }

    /// Passes a lock-connection statement's result through the backoff: an
    /// error the session survives is logged once and retried later; only a
    /// lost session is returned (and stops the in-flight items).
    fn absorb(&mut self, statement: &'static str, result: Result<(), Error>) -> Result<(), Error> {
        match result {
            Ok(()) => Ok(()),
            Err(e) => self.backoff.failed(statement, e),
        }
    }

    /// A claim failed. It may have taken row locks before failing (session
    /// locks outlive the rolled-back statement): release every lock this
    /// session holds but no claimed item of ours owns, so that those rows are
    /// not BUSY to every worker until this session ends.
    async fn claim_failed(&mut self, error: Error) -> Result<(), Error> {
        self.backoff.failed("claim", error)?;
        let ours: std::collections::HashSet<i32> = self
            .by_task
            .values()
            .map(|item| item.lock_key)
            .chain(self.unrecorded.iter().map(|(item, _)| item.lock_key))
            .chain(self.recording_keys.iter().copied())
            .chain(self.unlock_later.iter().copied())
            .collect();
        let released = async {
            let held = store::own_row_locks(&self.lock.client).await?;
            let strays: Vec<i32> = held.into_iter().filter(|k| !ours.contains(k)).collect();
            store::release_row_locks(&self.lock.client, &strays).await?;
            Ok::<_, Error>(())
        }
        .await;
        match released {
            Err(e) => self.backoff.failed("release_stray_locks", e),
            Ok(()) => Ok(()),
        }
    }

    /// Claims up to `limit` rows in one statement. On error the session may
    /// still hold locks of rows it did not claim: the caller drops the
    /// connection, which releases them.
    async fn claim(&mut self, limit: usize) -> Result<ClaimBatch, Error> {
        let statement = self.lock.prepared(store::CLAIM).await?;
        let max_examined = limit
            .saturating_mul(MAX_EXAMINED_PER_CLAIMED)
            .max(MIN_EXAMINED);
        let started = std::time::Instant::now();
        let settle = self.shared.config.settle;
        let budget = self.shared.calendar.budget();
        let batch = store::claim_within(
            &self.lock.client,
            &statement,
            limit,
            max_examined,
            settle,
            budget,
        )
        .await?;
        self.backoff.succeeded();
        metrics::histogram!("calendar_sync_claim_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("calendar_sync_claim_rows").record(batch.items.len() as f64);
        Ok(batch)
    }

    /// Takes back rows left PROCESSING by workers that died.
    async fn recover_orphans(&mut self) -> Result<(), Error> {
        let orphans = store::find_orphans(&self.lock.client).await?;
        if orphans.is_empty() {
            return Ok(());
        }
        let keys: Vec<i32> = orphans.iter().map(|o| o.lock_key).collect();
        let locked = store::try_lock_rows(&self.lock.client, &keys).await?;
        let ours: Vec<_> = orphans
            .into_iter()
            .filter(|o| locked.contains(&o.lock_key))
            .collect();
        let recovered = store::recover_orphans(
            &self.lock.client,
            &ours,
            self.shared.config.max_retries as i32,
        )
        .await;
        self.unlock(&locked).await?;
        let (requeued, dead) = recovered?;
        if requeued + dead > 0 {
            tracing::warn!(
                requeued,
                dead_lettered = dead,
                "recovered rows of a worker that died"
            );
        }
        self.report.recovered += requeued + dead;
        self.report.dead_lettered += dead;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_double_up_to_the_cap() {
        let delays: Vec<u64> = (1..=9)
            .map(|f| reconnect_delay(f).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(reconnect_delay(u32::MAX), MAX_RECONNECT_DELAY);
    }
}
