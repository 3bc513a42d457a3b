//! Applying one claimed operation to the calendar, idempotently, through the
//! bindings table.
//!
//! Event ids are derived from (workspace, calendar, source type, source id,
//! generation) in Google's base32hex alphabet and persisted before the insert
//! call. A retry after a lost reply therefore re-inserts the *same* id, meets
//! 409, and adopts its own event: a crash can never create a second event.
//! Google keeps a deleted event's id taken, so the generation advances whenever
//! the source's event was cancelled (by us or by hand).

use std::collections::BTreeMap;

use chrono::Days;
use deadpool_postgres::Pool;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::calendar::{
    Calendar, CalendarError, CalendarErrorKind, EventBody, EventTime, PROP_EVENT_TYPE,
    PROP_SOURCE_ID, PROP_SOURCE_TYPE, PROP_WORKSPACE,
};
use crate::operation::{CalendarKey, EventTiming, SourceKey, UpsertEvent};
use crate::store::{self, BindingState, BindingWrite, ClaimedItem};

/// At most this many fresh ids per attempt: each step means Google reported the
/// previous id cancelled or gone, which cannot go on for long legitimately.
const MAX_GENERATION_STEPS: u32 = 4;

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
}

impl Applied {
    /// Nothing to do: the desired state already holds.
    pub fn unchanged() -> Self {
        Self {
            binding: None,
            result: None,
            changed: false,
            continue_later: false,
        }
    }
}

/// Why an operation could not be applied.
#[derive(Debug)]
pub(crate) enum ApplyError {
    /// The calendar refused or failed.
    Calendar(CalendarError),
    /// Our own bookkeeping failed (retryable).
    Database(String),
    /// Another worker took the row over; stop quietly.
    ClaimLost,
}

impl From<CalendarError> for ApplyError {
    fn from(e: CalendarError) -> Self {
        Self::Calendar(e)
    }
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for ApplyError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Database(e.to_string())
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
    }
}

/// The private extended properties that mark an event as ours.
pub fn source_properties(source: &SourceKey, event_type: Option<&str>) -> BTreeMap<String, String> {
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
pub fn content_hash(body: &EventBody) -> String {
    let bytes = serde_json::to_vec(body).expect("an EventBody always serialises");
    data_encoding::HEXLOWER.encode(&Sha256::digest(&bytes))
}

/// Where writing a source's event starts.
pub(crate) enum Start {
    /// Update the event we believe is live.
    Update { id: String, generation: i32 },
    /// Insert under this id (persisted first).
    Insert { id: String, generation: i32 },
}

/// The event a source ended up with.
pub(crate) struct Written {
    pub id: String,
    pub generation: i32,
    pub etag: Option<String>,
}

/// Creates or updates the source's event.
pub(crate) async fn upsert<C: Calendar>(
    calendar: &C,
    pool: &Pool,
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
        pool,
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
    }
}

/// Makes the source's event exist with `body`, starting from `start`: an
/// update that finds the event cancelled or gone moves to a fresh id; an
/// insert persists its id first and adopts its own event on 409.
pub(crate) async fn write_event<C: Calendar>(
    calendar: &C,
    pool: &Pool,
    item: &ClaimedItem,
    source: &SourceKey,
    event_type: &str,
    body: &EventBody,
    start: Start,
) -> Result<Written, ApplyError> {
    let target = &source.calendar;
    let (mut id, mut generation, mut update) = match start {
        Start::Update { id, generation } => (id, generation, true),
        Start::Insert { id, generation } => (id, generation, false),
    };
    for _ in 0..MAX_GENERATION_STEPS {
        if update {
            match calendar.update_event(target, &id, body).await {
                Ok(event) if !event.cancelled => {
                    return Ok(Written {
                        id,
                        generation,
                        etag: event.etag,
                    });
                }
                // Deleted by hand (the update left it cancelled, or it is gone):
                // its id stays taken, so move to a fresh one.
                Ok(_) => {}
                Err(e) if e.means_absent() => {}
                Err(e) => return Err(e.into()),
            }
            generation += 1;
            id = event_id(source, generation);
            update = false;
            continue;
        }
        let reservation = BindingWrite {
            source: source.clone(),
            google_event_id: id.clone(),
            generation,
            state: BindingState::Inserting,
            etag: None,
            content_hash: None,
            content: None,
            event_type: Some(event_type.to_owned()),
        };
        // The claim reserves the first id an insert needs (see
        // `calendar_sync_claim`); only a later generation needs writing here.
        let reserved = item.binding.as_ref().is_some_and(|b| {
            b.state == BindingState::Inserting
                && b.google_event_id == id
                && b.generation == generation
        });
        if !reserved && !store::put_binding(&**pool.get().await?, item, &reservation).await? {
            return Err(ApplyError::ClaimLost);
        }
        match calendar.insert_event(target, &id, body).await {
            Ok(event) => {
                return Ok(Written {
                    id,
                    generation,
                    etag: event.etag,
                });
            }
            // Our own id exists: an earlier attempt's insert landed but its
            // reply was lost (or a cancelled event keeps the id). Adopt it.
            Err(e) if e.kind == CalendarErrorKind::Duplicate => update = true,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CalendarError::new(
        CalendarErrorKind::Transient,
        "event_id_churn",
        format!("the event's id was found cancelled {MAX_GENERATION_STEPS} times in one attempt"),
    )
    .into())
}

/// Deletes an event; one that is already gone (404, 410) counts as deleted.
pub(crate) async fn delete_event<C: Calendar>(
    calendar: &C,
    target: &CalendarKey,
    id: &str,
) -> Result<(), ApplyError> {
    match calendar.delete_event(target, id).await {
        Err(e) if !e.means_absent() => Err(e.into()),
        _ => Ok(()),
    }
}

/// Deletes the source's event. A 404 or 410 means the desired state holds.
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
    delete_event(calendar, &source.calendar, &binding.google_event_id).await?;
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
        }),
        result: None,
        changed: true,
        continue_later: false,
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
}
