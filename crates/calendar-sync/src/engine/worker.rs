//! One worker: a dedicated lock connection and the items in flight on it.
//! Its loop claims due rows while there is room, starts each as a task,
//! reaps finished tasks (failures are recorded by the item itself, successes
//! are recorded in groups through the pool), releases row locks once outcomes
//! have committed, and sleeps until a wake-up, a poll, the settle time, a
//! budget token or the shutdown deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{Id as TaskId, JoinError, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::item::{self, ItemOutcome, Processed};
use super::stall::StatementBackoff;
use super::{DrainReport, Progress, Shared, SharedProgress};
use crate::apply::Applied;
use crate::calendar::Calendar;
use crate::db::LockConnection;
use crate::error::Error;
use crate::google::budget;
use crate::minute_counts::{self, MinuteCounts, Sampling};
use crate::store::{self, ClaimBatch, ClaimedItem};

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

/// A claim looks at no more than this many due rows and (workspace, calendar)
/// groups per row it may claim (and at least [`MIN_EXAMINED`]), so that many
/// blocked groups cannot make one claim expensive; the next claim goes on
/// where a capped one stopped (the claim's persisted cursor).
const MAX_EXAMINED_PER_CLAIMED: usize = 20;
const MIN_EXAMINED: usize = 1000;

/// The shortest sleep for a token: a claim for each token would cost more
/// than the few milliseconds it saves.
const MIN_BUDGET_WAIT: Duration = Duration::from_millis(5);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Return when nothing is due and nothing is in flight.
    Once,
    /// Run until the cancellation token fires.
    UntilStopped,
}

/// What the loop remembers between rounds.
#[derive(Default)]
struct LoopState {
    /// When the shutdown grace period ends, once a stop was asked for.
    stopping: Option<Instant>,
    /// Whether the in-flight items were released at the end of the grace period.
    grace_over: bool,
    /// Short retries spent on rows that other sessions held for a moment.
    idle_rounds: u32,
    /// With a settle time, rows are claimed a while after they became due:
    /// look again then, after a wake-up or a claim that found work (the rows
    /// committed meanwhile send no wake-up: work was waiting).
    settle_wake: Option<Instant>,
    /// Due rows left for want of budget: claim again when the next token is
    /// due, not a poll interval later.
    budget_wake: Option<Instant>,
    /// Whether the last claim came back with fewer rows than it asked for.
    came_up_short: bool,
}

/// What one round of claims found.
#[derive(Default)]
struct Round {
    /// Rows were claimed or superseded.
    progressed: bool,
    /// Some due rows were locked by another session.
    contended: bool,
    /// Whether a claim ran, and whether the last one came up short.
    short: Option<bool>,
}

/// What the loop does after a round of claims.
enum Next {
    Return,
    Again,
    Wait,
}

/// One worker: a lock connection and the items in flight on it.
pub(super) struct Worker<C: Calendar> {
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
    /// Locks of reaped rows whose unlock failed; released once statements work again.
    unlock_later: Vec<i32>,
    /// Failed statements on the lock connection wait here before the next try.
    backoff: StatementBackoff,
    /// Whether this worker is registered as waiting for a wake-up (producers'
    /// commits notify only while some worker is).
    waiting: bool,
    pub(super) report: DrainReport,
    progress: Option<SharedProgress>,
}

impl<C: Calendar> Worker<C> {
    pub(super) fn new(shared: Arc<Shared<C>>, lock: LockConnection) -> Self {
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

    pub(super) fn with_progress(mut self, progress: SharedProgress) -> Self {
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

    pub(super) async fn run(
        &mut self,
        mode: Mode,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let grace = self.shared.config.shutdown_grace;
        let mut unanswered = false;
        let result = tokio::select! {
            result = self.run_loop(mode, cancel) => result,
            _ = hard_stop(cancel, grace) => {
                unanswered = true;
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
        if result.is_ok() && !unanswered {
            // A graceful stop: what this process counted (its calendar's
            // calls included, when it shares the database) is written now.
            // (Not when the database stopped answering: the stop would wait
            // longer for it.)
            MinuteCounts::flush(&self.shared.db, SHUTDOWN_MARGIN).await;
        }
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

    /// The loop of the README's "How draining works": claim while there is
    /// room, ask for a wake-up when the outbox ran dry, then wait for the next
    /// thing to happen (a task finishing, a wake-up, a timer, a stop).
    async fn run_loop(&mut self, mode: Mode, cancel: &CancellationToken) -> Result<(), Error> {
        let recovered = self.recover_orphans().await;
        self.absorb("recover_orphans", recovered)?;
        let interval = self.shared.config.poll_interval;
        let mut poll = tokio::time::interval_at(Instant::now() + interval, interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut state = LoopState::default();
        loop {
            MinuteCounts::tick(&self.shared.db, Sampling::Worker);
            self.unlock_deferred().await?;
            let round = self.claim_while_room(mode, cancel, &mut state).await?;
            let wants_wake_up = mode == Mode::UntilStopped
                && state.stopping.is_none()
                && self.room() > 0
                && round.short.unwrap_or(self.waiting);
            if self.set_waiting(wants_wake_up).await? && wants_wake_up {
                // Rows committed before the registration sent no NOTIFY.
                continue;
            }
            let settle = self.shared.config.settle;
            if round.progressed && !settle.is_zero() {
                state.settle_wake = Some(Instant::now() + settle);
            }
            self.publish();
            match self.after_round(mode, &mut state, &round).await {
                Next::Return => return Ok(()),
                Next::Again => continue,
                Next::Wait => {}
            }
            self.wait_for_event(mode, cancel, &mut state, &mut poll)
                .await?;
        }
    }

    /// Claims in batches while there is room: when idle, or once enough room
    /// has freed up. While the budget sets the pace (claims come back short of
    /// tokens), as soon as a slot is free: waiting for half the slots let
    /// tokens go unused (one drainer at 100 ms a call used 88 % of the project
    /// quota), and the quota keeps such claims as rare as calls. A backlog the
    /// budget does not hold back is claimed in batches (4,546 items/s against
    /// 2,817 claiming one at a time). A stop is noticed before claiming more,
    /// even while items keep finishing.
    async fn claim_while_room(
        &mut self,
        mode: Mode,
        cancel: &CancellationToken,
        state: &mut LoopState,
    ) -> Result<Round, Error> {
        let config = self.shared.config.clone();
        let budgeted = self.shared.calendar.budget().is_some();
        let threshold = if budgeted && state.came_up_short {
            1
        } else {
            config.batch_size.min(config.concurrency.div_ceil(2))
        };
        let mut round = Round::default();
        while state.stopping.is_none()
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
            state.came_up_short = !batch.more;
            state.budget_wake = batch
                .budget_wait
                .map(|wait| Instant::now() + wait.clamp(MIN_BUDGET_WAIT, config.poll_interval));
            round.progressed |= claimed > 0 || batch.superseded > 0;
            round.contended |= batch.busy > 0;
            round.short = Some(!batch.more);
            let superseded = (batch.superseded + batch.stale) as u64;
            self.report.superseded += superseded;
            // The one place superseded rows are counted: the claim supersedes
            // each at most once.
            self.shared
                .db
                .minute_counts()
                .add(minute_counts::SUPERSEDED, "", superseded);
            let exhausted = !batch.more || (claimed == 0 && batch.superseded == 0);
            for item in batch.items {
                self.spawn(item);
            }
            if exhausted {
                break;
            }
        }
        Ok(round)
    }

    /// What follows a round of claims: return (stopped, or drained once),
    /// claim again at once, or wait for something to happen.
    async fn after_round(&mut self, mode: Mode, state: &mut LoopState, round: &Round) -> Next {
        if state.stopping.is_some() && self.busy() == 0 {
            return Next::Return;
        }
        if self.busy() == 0 && round.progressed {
            // Only superseded rows this round: there may be more to claim.
            return Next::Again;
        }
        if mode == Mode::UntilStopped || self.busy() > 0 {
            state.idle_rounds = 0;
            return Next::Wait;
        }
        if let Some(at) = state.budget_wake.take() {
            // Due, only not paid for yet.
            tokio::time::sleep_until(at).await;
            return Next::Again;
        }
        // Rows whose locks another session still holds for a moment (it is
        // between committing their outcome and unlocking) are worth a few
        // short retries; anything else is not due.
        if round.contended && state.idle_rounds < 50 {
            state.idle_rounds += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            return Next::Again;
        }
        Next::Return
    }

    /// Waits for the first of: the lock connection closing, tasks finishing,
    /// a recorded batch, a stop, the grace deadline, a wake-up, a timer.
    async fn wait_for_event(
        &mut self,
        mode: Mode,
        cancel: &CancellationToken,
        state: &mut LoopState,
        poll: &mut tokio::time::Interval,
    ) -> Result<(), Error> {
        let running = state.stopping.is_none();
        let listening = mode == Mode::UntilStopped && running;
        let settle = self.shared.config.settle;
        tokio::select! {
            biased;
            _ = self.lock.closed.cancelled() => return Err(Error::LockConnectionLost),
            Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                let mut finished = vec![joined];
                while let Some(more) = self.in_flight.try_join_next_with_id() {
                    finished.push(more);
                }
                self.reap(finished).await?;
            }
            Some(recorded) = self.recording.join_next(), if !self.recording.is_empty() => {
                self.recorded(recorded).await?;
            }
            _ = cancel.cancelled(), if running => {
                tracing::info!(in_flight = self.in_flight.len(), "drainer stopping");
                state.stopping = Some(Instant::now() + self.shared.config.shutdown_grace);
                self.set_waiting(false).await?;
            }
            // Once: past the deadline this branch would be ready on every pass
            // while a recording is still running.
            _ = sleep_until_set(state.stopping), if !state.grace_over => {
                state.grace_over = true;
                self.release_in_flight().await?;
            }
            _ = self.lock.notified.notified(), if listening => {
                if !settle.is_zero() {
                    state.settle_wake.get_or_insert(Instant::now() + settle);
                }
            }
            _ = sleep_until_set(state.settle_wake), if running => state.settle_wake = None,
            _ = sleep_until_set(self.backoff.until()), if running => {}
            _ = sleep_until_set(state.budget_wake), if running => state.budget_wake = None,
            _ = poll.tick(), if listening => {
                let recovered = self.recover_orphans().await;
                self.absorb("recover_orphans", recovered)?;
            }
        }
        Ok(())
    }

    /// The grace period is over: abort the items still running and release
    /// their rows (back to PENDING without using an attempt).
    async fn release_in_flight(&mut self) -> Result<(), Error> {
        tracing::warn!(
            in_flight = self.in_flight.len(),
            "grace period over; releasing in-flight items"
        );
        self.in_flight.abort_all();
        let mut finished = Vec::new();
        while let Some(joined) = self.in_flight.join_next_with_id().await {
            finished.push(joined);
        }
        self.reap(finished).await
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
    async fn reap(
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
                    let outcome = item::record_interrupted(&self.shared, item, e).await;
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
        #[expect(
            clippy::cast_precision_loss,
            reason = "a row count as a metric: f64 is exact to 2^53"
        )]
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
        let recovered =
            store::recover_orphans(&self.lock.client, &ours, self.shared.config.attempt_limit())
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
        // A dead worker's attempt failed: retried, or dead-lettered once it
        // has used its attempts.
        let counts = self.shared.db.minute_counts();
        counts.add(minute_counts::RETRIED, "", requeued);
        counts.add(minute_counts::DEAD_LETTERED, "", dead);
        Ok(())
    }
}
