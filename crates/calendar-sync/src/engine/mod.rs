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

pub(crate) mod backoff;
pub(crate) mod item;
pub(crate) mod outcomes;
mod stall;
mod worker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::apply::desired::EventSource;
use crate::calendar::Calendar;
use crate::config::DrainerConfig;
use crate::db::Database;
use crate::drift::{self, DriftReport};
use crate::error::Error;
use item::ItemOutcome;
use outcomes::{DEFAULT_SUBSCRIPTION_CAPACITY, OutcomeHub, OutcomeKind, Subscription};
use worker::{Mode, Worker};

/// Counts of what a drain did: returned by [`OutboxDrainer::drain_once`] and
/// [`DrainerHandle::stop`], read while running with [`DrainerHandle::report`].
///
/// ```no_run
/// # async fn example<C: calendar_sync::Calendar>(
/// #     drainer: calendar_sync::OutboxDrainer<C>,
/// # ) -> Result<(), calendar_sync::Error> {
/// // In a test, after the producer wrote three rows:
/// let report = drainer.drain_once().await?;
/// assert_eq!((report.completed, report.dead_lettered), (3, 0), "{report:?}");
/// # Ok(()) }
/// ```
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
///
/// ```no_run
/// use calendar_sync::{Calendar, Database, DrainerConfig, OutboxDrainer};
///
/// # async fn example<C: Calendar>(calendar: C) -> Result<(), calendar_sync::Error> {
/// let db = Database::connect("postgres://worker@db.internal:5432/app", 8)?;
/// calendar_sync::migrate(&db).await?;
/// let drainer = OutboxDrainer::new(db, calendar, DrainerConfig::default())?;
/// let handle = drainer.start(); // drains in the background
/// tokio::signal::ctrl_c().await.ok();
/// let report = handle.stop().await; // in-flight items finish, the rest wait
/// println!("completed {} items", report.completed);
/// # Ok(()) }
/// ```
pub struct OutboxDrainer<C: Calendar> {
    shared: Arc<Shared<C>>,
}

impl<C: Calendar> std::fmt::Debug for OutboxDrainer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxDrainer")
            .field("db", &self.shared.db)
            .field("config", &self.shared.config)
            .field("event_source", &self.shared.event_source.is_some())
            .finish_non_exhaustive()
    }
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
    /// Where committed outcomes are announced to subscribers.
    pub outcomes: OutcomeHub,
}

impl<C: Calendar> OutboxDrainer<C> {
    /// A drainer over `db` writing to `calendar`; fails if `config` does not
    /// [validate](DrainerConfig::validate).
    ///
    /// ```no_run
    /// # fn example(db: calendar_sync::Database) -> Result<(), Box<dyn std::error::Error>> {
    /// use calendar_sync::{DrainerConfig, GoogleCalendar, GoogleConfig, OutboxDrainer, TokenCipher};
    /// use secrecy::SecretString;
    ///
    /// let env = std::env::var;
    /// let cipher = TokenCipher::new(&env("TOKEN_ENCRYPTION_KEY")?, "")?;
    /// let google = GoogleConfig::new(
    ///     env("GOOGLE_CLIENT_ID")?,
    ///     SecretString::from(env("GOOGLE_CLIENT_SECRET")?),
    /// );
    /// let calendar = GoogleCalendar::new(&db, cipher, google)?;
    /// let drainer = OutboxDrainer::new(db, calendar, DrainerConfig::default())?;
    /// # let _ = drainer; Ok(()) }
    /// ```
    pub fn new(db: Database, calendar: C, config: DrainerConfig) -> Result<Self, Error> {
        Self::build(db, calendar, config, None)
    }

    /// A drainer whose REBUILD_ALL takes the desired state from `source` (the
    /// application's own data) instead of the SQL view or the bindings.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use calendar_sync::{Calendar, Database, DrainerConfig, EventSource, OutboxDrainer};
    ///
    /// # fn example<C: Calendar>(
    /// #     db: Database,
    /// #     calendar: C,
    /// #     deadlines: impl EventSource,
    /// # ) -> Result<(), calendar_sync::Error> {
    /// // `deadlines` reads the application's tables: see `EventSource`.
    /// let drainer = OutboxDrainer::with_event_source(
    ///     db,
    ///     calendar,
    ///     DrainerConfig::default(),
    ///     Arc::new(deadlines),
    /// )?;
    /// # let _ = drainer; Ok(()) }
    /// ```
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
                outcomes: OutcomeHub::default(),
            }),
        })
    }

    /// The calendar this drainer writes to.
    pub fn calendar(&self) -> &C {
        &self.shared.calendar
    }

    /// Subscribes to this drainer's outcomes of `kinds` (an empty list: every
    /// kind), each announced once it has committed in PostgreSQL. Holds up to
    /// [`DEFAULT_SUBSCRIPTION_CAPACITY`] (1,024) unread outcomes; beyond
    /// that, new ones are dropped for this subscriber and counted
    /// ([`Subscription::dropped`]): draining never waits for a subscriber.
    ///
    /// A subscription sees what this drainer and its clones do (their
    /// [`start`](Self::start)ed loops and [`drain_once`](Self::drain_once)
    /// calls), not other drainers of the process or other processes: those
    /// are heard through SQL (`LISTEN calendar_sync_connection_invalid`, the
    /// views of the README's "What your app can read").
    ///
    /// ```no_run
    /// use calendar_sync::{Calendar, Outcome, OutcomeKind, OutboxDrainer};
    ///
    /// # async fn example<C: Calendar>(drainer: OutboxDrainer<C>) {
    /// let mut outcomes = drainer.subscribe(&[OutcomeKind::Completed, OutcomeKind::ConnectionInvalidated]);
    /// let handle = drainer.start();
    /// while let Some(outcome) = outcomes.recv().await {
    ///     match outcome {
    ///         Outcome::Completed { source_id, html_link, .. } => {
    ///             println!("{source_id:?} is in the calendar: {html_link:?}");
    ///         }
    ///         Outcome::ConnectionInvalidated { workspace_id, .. } => {
    ///             println!("ask the owner of {workspace_id} to connect Google again");
    ///         }
    ///         _ => {}
    ///     }
    /// }
    /// # handle.stop().await; }
    /// ```
    pub fn subscribe(&self, kinds: &[OutcomeKind]) -> Subscription {
        self.subscribe_with_capacity(kinds, DEFAULT_SUBSCRIPTION_CAPACITY)
    }

    /// [`subscribe`](Self::subscribe), holding up to `capacity` (at least 1)
    /// unread outcomes.
    pub fn subscribe_with_capacity(&self, kinds: &[OutcomeKind], capacity: usize) -> Subscription {
        self.shared.outcomes.subscribe(kinds, capacity)
    }

    /// Processes everything due now (including what becomes due because an
    /// earlier item of its source finished) and returns what happened. Items
    /// scheduled for a later retry are left for later. For tests and cron-style runs.
    ///
    /// ```no_run
    /// # async fn example<C: calendar_sync::Calendar>(
    /// #     drainer: calendar_sync::OutboxDrainer<C>,
    /// # ) -> Result<(), calendar_sync::Error> {
    /// // A cron job: everything due now, then exit.
    /// let report = drainer.drain_once().await?;
    /// println!(
    ///     "{} claimed, {} completed, {} retried later, {} dead-lettered",
    ///     report.claimed, report.completed, report.retried, report.dead_lettered
    /// );
    /// # Ok(()) }
    /// ```
    pub async fn drain_once(&self) -> Result<DrainReport, Error> {
        if !self.shared.config.drift_check_interval.is_zero() {
            self.check_drift().await?;
        }
        let lock = self.shared.db.lock_connection().await?;
        let mut worker = Worker::new(self.shared.clone(), lock);
        worker.run(Mode::Once, &CancellationToken::new()).await?;
        Ok(worker.report)
    }

    /// Checks every calendar whose drift check is due now (see
    /// [`DrainerConfig::drift_check_interval`]) and acts per
    /// [`DrainerConfig::drift_policy`]; a repair is queued, for the next
    /// drain. [`drain_once`](Self::drain_once) runs it first when the interval
    /// is not zero, and a started drainer every interval.
    ///
    /// ```no_run
    /// # async fn example<C: calendar_sync::Calendar>(
    /// #     drainer: calendar_sync::OutboxDrainer<C>,
    /// # ) -> Result<(), calendar_sync::Error> {
    /// let drift = drainer.check_drift().await?;
    /// println!("{} deleted and {} edited by hand", drift.deleted, drift.edited);
    /// # Ok(()) }
    /// ```
    pub async fn check_drift(&self) -> Result<DriftReport, Error> {
        let config = &self.shared.config;
        drift::check_due(
            &self.shared.db,
            &self.shared.calendar,
            config.drift_policy,
            config.drift_check_interval,
        )
        .await
    }

    /// Starts draining in the background until [`DrainerHandle::stop`]. A lost
    /// database connection is survived: the worker reconnects with backoff.
    /// Call it inside a tokio runtime.
    ///
    /// ```no_run
    /// # async fn example<C: calendar_sync::Calendar>(drainer: calendar_sync::OutboxDrainer<C>) {
    /// let handle = drainer.start();
    /// // ... the service runs; on shutdown:
    /// let report = handle.stop().await;
    /// # let _ = report; }
    /// ```
    pub fn start(&self) -> DrainerHandle {
        let cancel = CancellationToken::new();
        let progress = Arc::new(Mutex::new(Progress {
            report: DrainReport::default(),
            last_beat: Instant::now(),
        }));
        let shared = self.shared.clone();
        let stop = cancel.clone();
        let drain = run_until_stopped(self.shared.clone(), cancel.clone(), progress.clone());
        let task = tokio::spawn(async move {
            let interval = shared.config.drift_check_interval;
            if interval.is_zero() {
                return drain.await;
            }
            let policy = shared.config.drift_policy;
            let checks =
                drift::run_periodically(&shared.db, &shared.calendar, policy, interval, &stop);
            tokio::join!(drain, checks);
        });
        DrainerHandle {
            cancel,
            task,
            progress,
        }
    }
}

/// A running drainer, from [`OutboxDrainer::start`]. Dropping it leaves the
/// drainer running; [`DrainerHandle::stop`] stops it gracefully.
///
/// ```no_run
/// use std::time::Duration;
///
/// # async fn example<C: calendar_sync::Calendar>(drainer: calendar_sync::OutboxDrainer<C>) {
/// let handle = drainer.start();
/// // A liveness probe: an idle loop still goes round once per poll_interval (5 s).
/// let alive = !handle.is_finished() && handle.since_heartbeat() < Duration::from_secs(60);
/// println!("alive: {alive}; so far: {:?}", handle.report());
/// let report = handle.stop().await;
/// # let _ = report; }
/// ```
pub struct DrainerHandle {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    progress: SharedProgress,
}

impl std::fmt::Debug for DrainerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainerHandle")
            .field("stopping", &self.cancel.is_cancelled())
            .field("finished", &self.task.is_finished())
            .finish_non_exhaustive()
    }
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
    /// every lock is released, and the per-minute counts not yet written
    /// (`calendar_sync_minute_counts`) are written. Returns the final report.
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
            let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            tracing::warn!(error = %e, retry_in_ms, "drainer lost the database; reconnecting");
            progress.lock().expect("progress lock").last_beat = Instant::now();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// The longest wait between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// 0.5 s, 1 s, 2 s … up to 30 s between reconnection attempts.
fn reconnect_delay(failures: u32) -> Duration {
    let delay =
        Duration::from_millis(500u64.saturating_mul(1 << failures.saturating_sub(1).min(6)));
    delay.min(MAX_RECONNECT_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_double_up_to_the_cap() {
        let delays: Vec<u128> = (1..=9).map(|f| reconnect_delay(f).as_millis()).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(reconnect_delay(u32::MAX), MAX_RECONNECT_DELAY);
    }
}
