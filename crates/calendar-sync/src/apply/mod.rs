//! Applying one claimed operation to the calendar, idempotently, through the
//! bindings table.
//!
//! Event ids are derived from (workspace, calendar, source type, source id,
//! generation) in Google's base32hex alphabet and persisted before the insert
//! call. A retry after a lost reply therefore re-inserts the *same* id, meets
//! 409, and adopts its own event: a crash can never create a second event.
//! Google keeps a deleted event's id taken, so the generation advances whenever
//! the source's event was cancelled (by us or by hand).

pub(crate) mod desired;
pub(crate) mod rebuild;

use std::collections::BTreeMap;

use chrono::Days;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::calendar::{
    Calendar, CalendarError, CalendarErrorKind, EventBody, EventTime, PROP_EVENT_TYPE,
    PROP_SOURCE_ID, PROP_SOURCE_TYPE, PROP_WORKSPACE, RemoteEvent,
};
use crate::db::Database;
use crate::db::connect::cause;
use crate::error::Error;
use crate::operation::{CalendarKey, EventTiming, SourceKey, UpsertEvent};
use crate::store::{self, BindingState, BindingWrite, ClaimedItem};

/// At most this many write calls per attempt: each further step means Google
/// reported the event cancelled, gone or changed under us, which cannot go on
/// for long legitimately.
const MAX_WRITE_STEPS: u32 = 6;

/// What applying an operation achieved.
#[derive(Debug)]
pub(crate) struct Applied {
    /// Binding to commit with the completion.
    pub binding: Option<BindingWrite>,
    /// Details stored in the row's `result`.
    pub result: Option<Value>,
    /// False when the desired state already held and no write call was made.
    pub changed: bool,
    /// The work is not finished: store `result` as a checkpoint and come back.
    pub continue_later: bool,
    /// The calendar by its own id, which the engine fills in for the
    /// announcement of the outcome (the payload may say `primary`).
    pub calendar: Option<CalendarKey>,
}

impl Applied {
    /// Nothing to do: the desired state already holds.
    pub(crate) fn unchanged() -> Self {
        Self {
            binding: None,
            result: None,
            changed: false,
            continue_later: false,
            calendar: None,
        }
    }
}

/// Why an operation could not be applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    /// The calendar refused or failed.
    #[error(transparent)]
    Calendar(CalendarError),
    /// Our own bookkeeping failed (retryable): a statement, or a pooled
    /// session that could not be had. tokio-postgres' `to_string()` is only
    /// "db error": PostgreSQL's own message is in the source chain, which
    /// [`database_message`] renders.
    #[error("{}", database_message(.0))]
    Database(#[source] Error),
    /// The application's [`EventSource`](desired::EventSource) failed (retryable).
    #[error("the event source failed: {}", cause(&**.0))]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Another worker took the row over; stop quietly.
    #[error("another worker took the row over")]
    ClaimLost,
}

impl From<CalendarError> for ApplyError {
    fn from(e: CalendarError) -> Self {
        Self::Calendar(e)
    }
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(Error::Database(e))
    }
}

// Pooled sessions come from `Database::client`, whose error names host:port,
// database and user.
impl From<Error> for ApplyError {
    fn from(e: Error) -> Self {
        Self::Database(e)
    }
}

/// A failure of our own bookkeeping in words, for `last_error` after
/// `[database]`: a statement's error is the driver's chain, PostgreSQL's
/// message included, without the "database error" the code already says.
pub(crate) fn database_message(error: &Error) -> String {
    match error {
        Error::Database(e) => cause(e),
        other => cause(other),
    }
}

/// The event id of a source at a generation: 32 base32hex characters
/// (`[0-9a-v]`), within Google's `^[a-v0-9]{5,1024}$`.
pub fn event_id(source: &SourceKey, generation: i32) -> String {
    let mut hasher = Sha256::new();
    for part in [
        "calendar-sync/v1",
        &source.calendar.workspace_id,
        &source.calendar.calendar_id,
        &source.source_type,
        &source.source_id,
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hasher.update(generation.to_be_bytes());
    let digest = hasher.finalize();
    data_encoding::BASE32HEX_NOPAD
        .encode(&digest[..20])
        .to_ascii_lowercase()
}

/// The Google event body for an upsert.
pub fn event_body(upsert: &UpsertEvent) -> EventBody {
    let event = &upsert.event;
    let (start, end) = match &event.timing {
        EventTiming::AllDay {
            first_day,
            last_day,
        } => (
            EventTime::Date(*first_day),
            // Google's end date is exclusive; ours is inclusive. The decoder
            // guarantees the day after exists.
            EventTime::Date(last_day.checked_add_days(Days::new(1)).unwrap_or(*last_day)),
        ),
        EventTiming::Timed { start, end } => (
            EventTime::DateTime {
                date_time: *start,
                time_zone: event.time_zone.clone(),
            },
            EventTime::DateTime {
                date_time: *end,
                time_zone: event.time_zone.clone(),
            },
        ),
    };
    EventBody {
        summary: event.title.clone(),
        // Google drops an empty description; so do we, or it would always look drifted.
        description: event.description.clone().filter(|d| !d.is_empty()),
        start,
        end,
        private_properties: source_properties(&upsert.source, Some(&upsert.event_type)),
        options: event.options.clone().canonical(&event.title),
    }
}

/// The private extended properties that mark an event as ours.
pub(crate) fn source_properties(
    source: &SourceKey,
    event_type: Option<&str>,
) -> BTreeMap<String, String> {
    let mut props = BTreeMap::from([
        (
            PROP_WORKSPACE.to_owned(),
            source.calendar.workspace_id.clone(),
        ),
        (PROP_SOURCE_TYPE.to_owned(), source.source_type.clone()),
        (PROP_SOURCE_ID.to_owned(), source.source_id.clone()),
    ]);
    if let Some(t) = event_type {
        props.insert(PROP_EVENT_TYPE.to_owned(), t.to_owned());
    }
    props
}

/// SHA-256 (hex) of the body as we would send it.
pub(crate) fn content_hash(body: &EventBody) -> String {
    let bytes = serde_json::to_vec(body).expect("an EventBody always serialises");
    data_encoding::HEXLOWER.encode(&Sha256::digest(&bytes))
}

/// Where writing a source's event starts.
pub(crate) enum Start {
    /// Update the event we believe is live, fenced by the etag we last saw.
    Update {
        id: String,
        generation: i32,
        etag: Option<String>,
    },
    /// Insert under this id (persisted first).
    Insert { id: String, generation: i32 },
}

/// The event a source ended up with.
pub(crate) struct Written {
    pub id: String,
    pub generation: i32,
    pub etag: Option<String>,
    /// Google's `htmlLink`, when its answer had one.
    pub html_link: Option<String>,
    /// False when no write call was made (a binding repaired to match the
    /// event as listed).
    pub written: bool,
}

/// Creates or updates the source's event.
pub(crate) async fn upsert<C: Calendar>(
    calendar: &C,
    db: &Database,
    item: &ClaimedItem,
    upsert: &UpsertEvent,
) -> Result<Applied, ApplyError> {
    let body = event_body(upsert);
    let hash = content_hash(&body);
    let start = match &item.binding {
        Some(b)
            if b.state == BindingState::Live
                && b.content_hash.as_deref() == Some(hash.as_str()) =>
        {
            return Ok(Applied::unchanged());
        }
        Some(b) => match b.state {
            BindingState::Live => Start::Update {
                id: b.google_event_id.clone(),
                generation: b.generation,
                etag: b.etag.clone(),
            },
            BindingState::Inserting => Start::Insert {
                id: b.google_event_id.clone(),
                generation: b.generation,
            },
            BindingState::Cancelled => fresh(&upsert.source, b.generation + 1),
        },
        None => fresh(&upsert.source, 0),
    };
    let written = write_event(
        calendar,
        db,
        item,
        &upsert.source,
        &upsert.event_type,
        &body,
        start,
    )
    .await?;
    Ok(Applied {
        binding: Some(live_binding(
            &upsert.source,
            &upsert.event_type,
            &body,
            written,
        )),
        result: None,
        changed: true,
        continue_later: false,
        calendar: None,
    })
}

/// An insert under the id of `generation`.
pub(crate) fn fresh(source: &SourceKey, generation: i32) -> Start {
    Start::Insert {
        id: event_id(source, generation),
        generation,
    }
}

/// The LIVE binding of a written event.
pub(crate) fn live_binding(
    source: &SourceKey,
    event_type: &str,
    body: &EventBody,
    written: Written,
) -> BindingWrite {
    BindingWrite {
        source: source.clone(),
        google_event_id: written.id,
        generation: written.generation,
        state: BindingState::Live,
        etag: written.etag,
        content_hash: Some(content_hash(body)),
        content: Some(serde_json::to_value(body).expect("an EventBody always serialises")),
        event_type: Some(event_type.to_owned()),
        html_link: written.html_link,
        written: written.written,
    }
}

/// One step of writing a source's event.
enum Step {
    /// A full update, fenced by this etag when we know it.
    Update(Option<String>),
    /// An insert under the current id.
    Insert,
}

/// Makes the source's event exist with `body`, starting from `start`: an
/// update that finds the event confirmed cancelled or gone moves to a fresh
/// id; an insert persists its id first and adopts its own event on 409.
pub(crate) async fn write_event<C: Calendar>(
    calendar: &C,
    db: &Database,
    item: &ClaimedItem,
    source: &SourceKey,
    event_type: &str,
    body: &EventBody,
    start: Start,
) -> Result<Written, ApplyError> {
    let target = &source.calendar;
    let (mut id, mut generation, mut step) = match start {
        Start::Update {
            id,
            generation,
            etag,
        } => (id, generation, Step::Update(etag)),
        Start::Insert { id, generation } => (id, generation, Step::Insert),
    };
    for _ in 0..MAX_WRITE_STEPS {
        step = match step {
            Step::Update(etag) => match update(calendar, target, &id, body, etag).await? {
                Updated::Done(event) => {
                    return Ok(Written {
                        id,
                        generation,
                        etag: event.etag,
                        html_link: event.html_link,
                        written: true,
                    });
                }
                Updated::Again(etag) => Step::Update(etag),
                // Deleted by hand (or by a late delete): its id stays taken.
                Updated::Gone => {
                    generation += 1;
                    id = event_id(source, generation);
                    Step::Insert
                }
            },
            Step::Insert => {
                reserve(db, item, source, event_type, &id, generation).await?;
                match calendar.insert_event(target, &id, body).await {
                    Ok(event) => {
                        return Ok(Written {
                            id,
                            generation,
                            etag: event.etag,
                            html_link: event.html_link,
                            written: true,
                        });
                    }
                    // Our own id exists: an earlier attempt's insert landed but
                    // its reply was lost (or a cancelled event keeps the id).
                    Err(e) if e.kind == CalendarErrorKind::Duplicate => Step::Update(None),
                    Err(e) => return Err(e.into()),
                }
            }
        };
    }
    Err(CalendarError::new(
        CalendarErrorKind::Transient,
        "event_write_churn",
        format!("the event changed or vanished {MAX_WRITE_STEPS} times in one attempt"),
    )
    .into())
}

/// Persists the id an insert is about to use. The claim reserves the first id
/// an insert needs (see `calendar_sync_claim`); only a later one is written here.
async fn reserve(
    db: &Database,
    item: &ClaimedItem,
    source: &SourceKey,
    event_type: &str,
    id: &str,
    generation: i32,
) -> Result<(), ApplyError> {
    let reserved = item.binding.as_ref().is_some_and(|b| {
        b.state == BindingState::Inserting && b.google_event_id == id && b.generation == generation
    });
    if reserved {
        return Ok(());
    }
    let reservation = BindingWrite {
        source: source.clone(),
        google_event_id: id.to_owned(),
        generation,
        state: BindingState::Inserting,
        etag: None,
        content_hash: None,
        content: None,
        event_type: Some(event_type.to_owned()),
        html_link: None,
        written: false,
    };
    if store::put_binding(&**db.client().await?, item, &reservation).await? {
        Ok(())
    } else {
        Err(ApplyError::ClaimLost)
    }
}

/// What one fenced update came to.
enum Updated {
    /// Written; the event as Google answered (its new etag and link).
    Done(Box<RemoteEvent>),
    /// The event changed under us (a hand edit, or a late write of ours):
    /// ours is the newest content, so write again at its current etag.
    Again(Option<String>),
    /// Confirmed cancelled or gone.
    Gone,
}

/// Updates with `If-Match`; a refusal is read back before anything follows
/// from it: a 404 only counts once a GET confirms it.
async fn update<C: Calendar>(
    calendar: &C,
    target: &CalendarKey,
    id: &str,
    body: &EventBody,
    etag: Option<String>,
) -> Result<Updated, ApplyError> {
    let error = match calendar
        .update_event(target, id, body, etag.as_deref())
        .await
    {
        Ok(event) if !event.cancelled => return Ok(Updated::Done(Box::new(event))),
        Ok(_) => return Ok(Updated::Gone),
        Err(e) if e.means_absent() || e.kind == CalendarErrorKind::Conflict => e,
        Err(e) => return Err(e.into()),
    };
    match look(calendar, target, id).await? {
        Found::Gone => Ok(Updated::Gone),
        Found::Live(current) if error.kind == CalendarErrorKind::Conflict => {
            Ok(Updated::Again(current))
        }
        Found::Live(_) => Err(unconfirmed(&error).into()),
    }
}

/// What Google says about an event a write could not find or fence.
pub(crate) enum Found {
    /// There and not cancelled, at this etag.
    Live(Option<String>),
    /// Cancelled, 410, or 404 on a calendar that exists.
    Gone,
}

/// Reads the event back after a 404, 410 or 412. A 404 on the calendar itself
/// is an error that dead-letters without a new id: once access returns, the
/// old event is still there.
pub(crate) async fn look<C: Calendar>(
    calendar: &C,
    target: &CalendarKey,
    id: &str,
) -> Result<Found, ApplyError> {
    match calendar.get_event(target, id).await {
        Ok(event) if event.cancelled => Ok(Found::Gone),
        Ok(event) => Ok(Found::Live(event.etag)),
        Err(e) if e.kind == CalendarErrorKind::Gone => Ok(Found::Gone),
        Err(e) if e.kind == CalendarErrorKind::NotFound => {
            if calendar.calendar_exists(target).await? {
                Ok(Found::Gone)
            } else {
                Err(calendar_not_found(target).into())
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// A calendar Google does not know (calendars.get: 404): dead-lettered
/// without a new event id, since the old event is still there once access
/// returns.
pub(crate) fn calendar_not_found(target: &CalendarKey) -> CalendarError {
    CalendarError::new(
        CalendarErrorKind::Permanent,
        "calendar_not_found",
        format!(
            "calendar {} does not exist for this connection (or its access is lost); \
             requeue once it is back",
            target.calendar_id
        ),
    )
}

/// The connection changed while a calendar name was being resolved: ask
/// again at once, without using an attempt.
pub(crate) fn connection_changed() -> CalendarError {
    CalendarError::new(
        CalendarErrorKind::HeldBack,
        "connection_changed",
        "the connection changed while its calendar was resolved; asking again",
    )
    .with_retry_after(Some(std::time::Duration::ZERO))
}

/// A 404 that the read-back contradicts: retry later.
fn unconfirmed(error: &CalendarError) -> CalendarError {
    CalendarError::new(
        CalendarErrorKind::Transient,
        "google_404_unconfirmed",
        format!(
            "Google answered {} but the event is still there",
            error.code
        ),
    )
}

/// Deletes an event, fenced by `etag` when known. Done once Google confirms it
/// gone (the delete, a 410, or a read-back); a 404 the read-back contradicts is
/// retryable, and a 412 deletes again at the current etag.
pub(crate) async fn delete_event<C: Calendar>(
    calendar: &C,
    target: &CalendarKey,
    id: &str,
    etag: Option<String>,
) -> Result<(), ApplyError> {
    let mut etag = etag;
    for _ in 0..MAX_WRITE_STEPS {
        let error = match calendar.delete_event(target, id, etag.as_deref()).await {
            Ok(()) => return Ok(()),
            Err(e) if e.kind == CalendarErrorKind::Gone => return Ok(()),
            Err(e) if e.means_absent() || e.kind == CalendarErrorKind::Conflict => e,
            Err(e) => return Err(e.into()),
        };
        match look(calendar, target, id).await? {
            Found::Gone => return Ok(()),
            Found::Live(current) if error.kind == CalendarErrorKind::Conflict => etag = current,
            Found::Live(_) => return Err(unconfirmed(&error).into()),
        }
    }
    Err(CalendarError::new(
        CalendarErrorKind::Transient,
        "event_write_churn",
        format!("the event changed {MAX_WRITE_STEPS} times while being deleted"),
    )
    .into())
}

/// Deletes the source's event; COMPLETED only once Google confirms it gone.
pub(crate) async fn cancel<C: Calendar>(
    calendar: &C,
    item: &ClaimedItem,
    source: &SourceKey,
) -> Result<Applied, ApplyError> {
    let Some(binding) = &item.binding else {
        // Never synced: nothing to delete.
        return Ok(Applied::unchanged());
    };
    if binding.state == BindingState::Cancelled {
        return Ok(Applied::unchanged());
    }
    // An INSERTING id may never have reached Google: no etag to fence with.
    let etag = (binding.state == BindingState::Live)
        .then(|| binding.etag.clone())
        .flatten();
    delete_event(calendar, &source.calendar, &binding.google_event_id, etag).await?;
    Ok(Applied {
        binding: Some(BindingWrite {
            source: source.clone(),
            google_event_id: binding.google_event_id.clone(),
            generation: binding.generation,
            state: BindingState::Cancelled,
            etag: None,
            content_hash: None,
            content: None,
            event_type: None,
            html_link: None,
            written: true,
        }),
        result: None,
        changed: true,
        continue_later: false,
        calendar: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operation::CalendarKey;

    fn source(id: &str) -> SourceKey {
        SourceKey {
            calendar: CalendarKey {
                workspace_id: "w1".into(),
                calendar_id: "c@example.com".into(),
            },
            source_type: "task".into(),
            source_id: id.into(),
        }
    }

    #[test]
    fn event_ids_fit_googles_alphabet_and_differ_per_generation() {
        let a = event_id(&source("1"), 0);
        let b = event_id(&source("1"), 1);
        let c = event_id(&source("2"), 0);
        for id in [&a, &b, &c] {
            assert_eq!(id.len(), 32);
            assert!(
                id.chars().all(|ch| matches!(ch, '0'..='9' | 'a'..='v')),
                "{id}"
            );
        }
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, event_id(&source("1"), 0));
    }

    /// A failed statement keeps the driver's error as the source (PostgreSQL's
    /// SQLSTATE and words in it), and says the words without the wrapper.
    #[tokio::test]
    async fn a_failed_statement_keeps_the_driver_error_as_its_source() {
        use std::error::Error as _;
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let db = Database::connect(&url, 1).unwrap();
        let failed = db
            .client()
            .await
            .unwrap()
            .query_one("SELECT 1 / 0", &[])
            .await
            .unwrap_err();
        let error = ApplyError::from(failed);
        assert_eq!(error.to_string(), "ERROR: division by zero");
        let source = error.source().expect("a source");
        let Some(Error::Database(pg)) = source.downcast_ref::<Error>() else {
            panic!("{source:?}");
        };
        assert_eq!(
            pg.code(),
            Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
        );
    }
}
