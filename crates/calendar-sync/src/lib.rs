//! # calendar-sync
//!
//! Drains a PostgreSQL *transactional outbox* (`sync_outbox`) into Google
//! Calendar: exactly once, in order, surviving crashes, rate limits and revoked
//! OAuth grants.
//!
//! Applications write a row in the same transaction as their own change:
//!
//! ```sql
//! INSERT INTO sync_outbox (operation, payload) VALUES ('UPSERT_EVENT', '{...}');
//! ```
//!
//! and an [`OutboxDrainer`] turns rows into calendar calls.
//!
//! ## Guarantees
//! - **One event per source.** Event ids are derived from the source and
//!   persisted before the insert call; a retry after a lost reply adopts its own
//!   event (409) instead of creating a second. `calendar_event_bindings` records
//!   what was synced; an unchanged upsert makes no call.
//! - **Per-source order.** Items of one (workspace, calendar, sourceType,
//!   sourceId) apply in insertion order across any number of workers. A newer
//!   UPSERT/CANCEL supersedes older waiting ones (status SUPERSEDED, with
//!   `superseded_by`). A REBUILD_ALL runs alone for its (workspace, calendar),
//!   after everything enqueued before it.
//! - **Crash recovery without timeouts.** Each claimed row holds a session
//!   advisory lock on the worker's connection. A PROCESSING row whose lock is
//!   gone belongs to a dead worker and is taken back by the next poll.
//! - **No poison loops.** Attempts are counted at claim time; a row that keeps
//!   killing its worker reaches DEAD_LETTER after `max_attempts`.
//!
//! ## Payloads (camelCase JSON)
//! - `UPSERT_EVENT`: `workspaceId`, `calendarId`, `sourceType`, `sourceId`,
//!   `eventType`, `event {title, description?, start, end, isAllDay?, timeZone?}`.
//!   Timed events use RFC 3339 timestamps; all-day events use dates (or
//!   timestamps whose written date counts) and cover `start..=end`.
//! - `CANCEL_EVENT`: `workspaceId`, `calendarId`, `sourceType`, `sourceId`.
//! - `REBUILD_ALL`: `workspaceId`, `calendarId`.
//!
//! An optional `operation` field must match the `operation` column. A payload
//! that does not decode goes to DEAD_LETTER at once, with `last_error` naming
//! the field.
//!
//! ## Outcomes
//! Success: COMPLETED. Retryable failure (rate limit, 5xx, timeout): PENDING
//! again after 1 s, 2 s, 4 s … (±20 % jitter, capped at 1 h; Google's
//! Retry-After wins); the attempt that reaches `max_attempts` dead-letters.
//! Permanent failure (400, 404 calendar, most 403s): DEAD_LETTER at once. A
//! revoked or unusable OAuth grant: DEAD_LETTER, the connection marked invalid,
//! and the workspace's other waiting items dead-lettered. `last_error` is
//! always `[code] message`.
//!
//! ## Quick start
//! ```no_run
//! # async fn example<C: calendar_sync::Calendar>(calendar: C) -> Result<(), calendar_sync::Error> {
//! use calendar_sync::{Database, DrainerConfig, OutboxDrainer};
//!
//! let db = Database::connect("postgres://postgres@127.0.0.1:5432/app", 8)?;
//! calendar_sync::migrate(&db).await?;
//! let drainer = OutboxDrainer::new(db, calendar, DrainerConfig::default())?;
//! let handle = drainer.start();
//! // ... on shutdown:
//! let report = handle.stop().await;
//! # let _ = report; Ok(()) }
//! ```
//!
//! ## The public API
//! Every public item, by what it is for; their methods and fields aside,
//! nothing else is public. `.ci/public-api` checks this list against what
//! `cargo doc` shows (through `crates/calendar-sync/public-api.txt`).
//! - **Running the engine:** [`OutboxDrainer`] (with [`OutboxDrainer::start`]
//!   returning a [`DrainerHandle`], or [`OutboxDrainer::drain_once`] returning a
//!   [`DrainReport`]), configured by [`DrainerConfig`]; [`Error`]. Drift
//!   detection ([`OutboxDrainer::check_drift`]) returns a [`DriftReport`] and
//!   acts per [`DriftPolicy`].
//! - **Hearing what happened:** [`OutboxDrainer::subscribe`] (and
//!   [`OutboxDrainer::subscribe_with_capacity`], default
//!   [`DEFAULT_SUBSCRIPTION_CAPACITY`]) returns a [`Subscription`] of
//!   committed [`Outcome`]s of the chosen [`OutcomeKind`]s.
//! - **The database:** [`Database`] (a pool plus the dedicated sessions the
//!   engine needs), [`ConnectOptions`], [`TlsOptions`], [`SslMode`],
//!   [`RootCerts`]; [`migrate`] creates or updates the schema.
//! - **Producing work:** [`enqueue`] writes an [`Operation`] inside the
//!   caller's transaction; [`Operation::decode`] is the decoder the drainer
//!   uses, with [`DecodeError`] naming the field; the payload types
//!   [`OperationKind`], [`UpsertEvent`], [`EventDetails`], [`EventTiming`],
//!   [`CalendarKey`], [`SourceKey`], [`SourceCursor`]; the optional event
//!   fields [`EventOptions`] ([`Transparency`], [`Visibility`], [`ColorId`],
//!   [`Reminders`], [`ReminderOverride`], [`ReminderMethod`]) and their
//!   per-eventType [`EventDefaults`] (a [`DrainerConfig`] field).
//! - **The calendar side:** the [`Calendar`] trait and its vocabulary
//!   ([`EventBody`], [`EventTime`], [`EventPage`], [`ChangePage`] with
//!   [`FULL_SYNC_REQUIRED`], [`RemoteEvent`],
//!   [`ResolvedCalendar`], and the names of the private extended properties
//!   that mark our events: [`PROP_WORKSPACE`], [`PROP_SOURCE_TYPE`],
//!   [`PROP_SOURCE_ID`], [`PROP_EVENT_TYPE`]), its error [`CalendarError`]
//!   with [`CalendarErrorKind`] and [`ErrorClass`]; [`GoogleCalendar`] with
//!   [`GoogleConfig`], [`OAuthConfig`], [`Budget`] and the default endpoints
//!   [`DEFAULT_CALENDAR_API_URL`], [`DEFAULT_TOKEN_URL`] and [`DEFAULT_BATCH_MAX`].
//! - **REBUILD_ALL from the application's data:** [`EventSource`],
//!   [`DesiredEvent`], [`SourceFuture`].
//! - **Secrets:** [`TokenCipher`] seals refresh tokens. It lives in
//!   [`crypto`] (as [`crypto::TokenCipher`]), with its key errors
//!   ([`crypto::KeyError`], [`crypto::KeySource`]), its envelope errors
//!   ([`crypto::DecryptError`], [`crypto::EnvelopePart`]) and the key length
//!   [`crypto::KEY_LEN`] that [`TokenCipher::from_keys`] takes.
//! - **Operators:** [`ops`]: [`ops::put_connection`],
//!   [`ops::list_connections`] (of [`ops::ConnectionInfo`]), [`ops::requeue`],
//!   [`ops::cleanup`], [`ops::status`] (a [`ops::StatusReport`], with
//!   [`ops::DeadLetterGroup`] and [`ops::UnknownKeyId`]), [`ops::readiness`] (with [`ops::NotReady`]),
//!   [`ops::unknown_key_ids`] and the line that reports them, [`ops::unknown_key_ids_line`].
//!
//! (`testing` is hidden: it opens the claim statement and event ids to this
//! workspace's own tests and benchmarks, and may change in any release.)
//!
//! ## Words
//! - **drain**: the engine's loop: claim due rows, apply each, record its
//!   outcome, release its lock ([`OutboxDrainer`]).
//! - **item**: one claimed outbox row, from decode to recorded outcome.
//! - **apply**: make the calendar match one operation (an upsert, a cancel,
//!   a REBUILD_ALL), idempotently, through the bindings.
//! - **settle**: the time a due row waits before it is claimed, so that quick
//!   successive writes to one source collapse into one call
//!   ([`DrainerConfig::settle`]). Taking in finished tasks is *reaping*.
//! - **attempt**: one claim of an item that counts; an item that reaches
//!   [`DrainerConfig::max_attempts`] and fails is dead-lettered. Waits for
//!   quota, pauses and shutdown use no attempt.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod apply;
mod calendar;
mod config;
pub mod crypto;
mod db;
mod drift;
mod engine;
mod error;
mod event_options;
mod google;
mod minute_counts;
mod operation;
pub mod ops;
mod store;
#[doc(hidden)]
pub mod testing;

pub use apply::desired::{DesiredEvent, EventSource, SourceFuture};
pub use calendar::{
    Calendar, CalendarError, CalendarErrorKind, ChangePage, ErrorClass, EventBody, EventPage,
    EventTime, FULL_SYNC_REQUIRED, PROP_EVENT_TYPE, PROP_SOURCE_ID, PROP_SOURCE_TYPE,
    PROP_WORKSPACE, RemoteEvent, ResolvedCalendar,
};
pub use config::DrainerConfig;
pub use crypto::TokenCipher;
pub use db::Database;
pub use db::connect::{ConnectOptions, RootCerts, SslMode, TlsOptions};
pub use db::migrate::migrate;
pub use drift::{DriftPolicy, DriftReport};
pub use engine::outcomes::{DEFAULT_SUBSCRIPTION_CAPACITY, Outcome, OutcomeKind, Subscription};
pub use engine::{DrainReport, DrainerHandle, OutboxDrainer};
pub use error::Error;
pub use event_options::{
    ColorId, EventDefaults, EventOptions, ReminderMethod, ReminderOverride, Reminders,
    Transparency, Visibility,
};
pub use google::auth::OAuthConfig;
pub use google::budget::Budget;
pub use google::{
    DEFAULT_BATCH_MAX, DEFAULT_CALENDAR_API_URL, DEFAULT_TOKEN_URL, GoogleCalendar, GoogleConfig,
};
pub use operation::{
    CalendarKey, DecodeError, EventDetails, EventTiming, Operation, OperationKind, SourceCursor,
    SourceKey, UpsertEvent,
};
pub use store::enqueue;
