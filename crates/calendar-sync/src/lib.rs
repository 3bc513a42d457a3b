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
//!   killing its worker reaches DEAD_LETTER after `max_retries`.
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
//! Retry-After wins); the attempt that reaches `max_retries` dead-letters.
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
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod backoff;
mod budget;
mod calendar;
mod config;
pub mod connect;
pub mod crypto;
mod db;
mod desired;
mod drain;
mod error;
mod evict;
mod fenced;
mod google;
mod item;
mod limits;
mod migrate;
pub mod operation;
pub mod ops;
mod rebuild;
mod stall;
pub mod store;
mod sync;
mod tls;
mod versions;

pub use auth::OAuthConfig;
pub use backoff::retry_delay;
pub use budget::Budget;
pub use calendar::{
    Calendar, CalendarError, CalendarErrorKind, ErrorClass, EventBody, EventPage, EventTime,
    PROP_EVENT_TYPE, PROP_SOURCE_ID, PROP_SOURCE_TYPE, PROP_WORKSPACE, RemoteEvent,
    ResolvedCalendar,
};
pub use config::DrainerConfig;
pub use connect::{ConnectOptions, RootCerts, SslMode, TlsOptions};
pub use crypto::TokenCipher;
pub use db::Database;
pub use desired::{DesiredEvent, EventSource, SourceCursor, SourceFuture};
pub use drain::{DrainReport, DrainerHandle, OutboxDrainer};
pub use error::Error;
pub use google::{DEFAULT_CALENDAR_API_URL, DEFAULT_TOKEN_URL, GoogleCalendar, GoogleConfig};
pub use migrate::{MIGRATION_TABLE, known_migrations, migrate};
pub use operation::{
    CalendarKey, EventDetails, EventTiming, Operation, OperationKind, SourceKey, UpsertEvent,
};
pub use store::{ConnectionInfo, enqueue, row_lock_key};
pub use sync::{content_hash, event_body, event_id};

/// Moves DEAD_LETTER rows back to PENDING with attempts reset: the given ids,
/// or every dead letter (optionally of one workspace) when `ids` is `None`. A
/// dead letter that a newer item of its source has overtaken (completed since)
/// becomes SUPERSEDED instead: it is never sent again. Returns how many rows
/// left DEAD_LETTER.
pub async fn requeue(
    db: &Database,
    ids: Option<&[uuid::Uuid]>,
    workspace_id: Option<&str>,
) -> Result<u64, Error> {
    Ok(store::requeue_dead_letters(&**db.client().await?, ids, workspace_id).await?)
}

/// Deletes finished rows (COMPLETED, DEAD_LETTER, SUPERSEDED) older than
/// `days` days; returns how many were deleted.
pub async fn cleanup(db: &Database, days: i32) -> Result<u64, Error> {
    Ok(store::cleanup_old_items(&**db.client().await?, days).await?)
}

/// Stores a workspace's Google connection: encrypts the refresh token, upserts
/// the row, and marks it valid (re-authorising an invalid connection).
pub async fn put_connection(
    db: &Database,
    cipher: &TokenCipher,
    workspace_id: &str,
    google_email: &str,
    refresh_token: &secrecy::SecretString,
) -> Result<(), Error> {
    let sealed = cipher.encrypt(workspace_id, refresh_token);
    Ok(store::put_connection(&**db.client().await?, workspace_id, google_email, &sealed).await?)
}

/// Every stored connection and its validity; never a token.
pub async fn list_connections(db: &Database) -> Result<Vec<ConnectionInfo>, Error> {
    Ok(store::list_connections(&**db.client().await?).await?)
}
