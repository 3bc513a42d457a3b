//! The desired state of a calendar, for REBUILD_ALL, from the first source that
//! is configured:
//! 1. an [`EventSource`] the embedding service implements;
//! 2. the SQL view `calendar_sync_desired_events`, when the application defines it;
//! 3. otherwise the content last synced, as recorded in the bindings.
//!
//! Every source is read in pages in ascending byte order of
//! (source_type, source_id), so a rebuild can walk it in bounded chunks and
//! resume after a crash.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::operation::SourceCursor;
use serde_json::json;

use crate::apply::{ApplyError, event_body};
use crate::calendar::EventBody;
use crate::db::Database;
use crate::event_options::EventDefaults;
use crate::operation::{CalendarKey, EventDetails, Operation, SourceKey, UpsertEvent};
use crate::store;

/// One event the application wants on the calendar: what an [`EventSource`]
/// returns (see its example).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredEvent {
    /// The application's kind of object.
    pub source_type: String,
    /// The application's id of the object.
    pub source_id: String,
    /// The application's own category.
    pub event_type: String,
    /// The content.
    pub event: EventDetails,
}

/// A boxed future, so that [`EventSource`] can be used as a trait object. Its
/// error is the application's own, boxed: a failed page is retried with
/// backoff, and `last_error` reads `[event_source]` and the error's chain.
pub type SourceFuture<'a> = Pin<
    Box<
        dyn Future<Output = Result<Vec<DesiredEvent>, Box<dyn std::error::Error + Send + Sync>>>
            + Send
            + 'a,
    >,
>;

/// The application's current state, for REBUILD_ALL. Give it to
/// [`OutboxDrainer::with_event_source`](crate::OutboxDrainer::with_event_source).
///
/// Here every open task with a due date is an all-day event, read from the
/// application's own table (it syncs one calendar per workspace):
///
/// ```no_run
/// use calendar_sync::{
///     CalendarKey, DesiredEvent, EventDetails, EventSource, EventTiming, SourceCursor,
///     SourceFuture,
/// };
/// use chrono::NaiveDate;
///
/// struct TaskDeadlines {
///     pool: deadpool_postgres::Pool,
/// }
///
/// impl EventSource for TaskDeadlines {
///     fn desired_events<'a>(
///         &'a self,
///         calendar: &'a CalendarKey,
///         after: Option<&'a SourceCursor>,
///         limit: usize,
///     ) -> SourceFuture<'a> {
///         Box::pin(async move {
///             // One source type ("task"), so the order is the ids' byte order.
///             let after_id = match after {
///                 None => "",
///                 Some(cursor) if cursor.source_type.as_str() < "task" => "",
///                 Some(cursor) if cursor.source_type == "task" => cursor.source_id.as_str(),
///                 Some(_) => return Ok(Vec::new()), // past every task
///             };
///             let client = self.pool.get().await.map_err(|e| e.to_string())?;
///             let rows = client
///                 .query(
///                     r#"SELECT id::text, title, due FROM tasks
///                         WHERE workspace_id = $1 AND due IS NOT NULL AND NOT done
///                           AND id::text COLLATE "C" > $2
///                         ORDER BY id::text COLLATE "C" LIMIT $3"#,
///                     &[&calendar.workspace_id, &after_id, &(limit as i64)],
///                 )
///                 .await
///                 .map_err(|e| e.to_string())?;
///             Ok(rows
///                 .iter()
///                 .map(|row| {
///                     let due: NaiveDate = row.get(2);
///                     DesiredEvent {
///                         source_type: "task".into(),
///                         source_id: row.get(0),
///                         event_type: "DEADLINE".into(),
///                         event: EventDetails {
///                             title: row.get(1),
///                             description: None,
///                             timing: EventTiming::AllDay { first_day: due, last_day: due },
///                             time_zone: None,
///                             options: Default::default(),
///                         },
///                     }
///                 })
///                 .collect())
///         })
///     }
/// }
/// ```
pub trait EventSource: Send + Sync + 'static {
    /// Up to `limit` desired events of `calendar` whose (source_type,
    /// source_id) comes after `after` (all from the start when `None`), in
    /// ascending byte order of (source_type, source_id) — as SQL's
    /// `ORDER BY source_type COLLATE "C", source_id COLLATE "C"`.
    fn desired_events<'a>(
        &'a self,
        calendar: &'a CalendarKey,
        after: Option<&'a SourceCursor>,
        limit: usize,
    ) -> SourceFuture<'a>;
}

/// Where desired state comes from for one rebuild.
pub(crate) enum Desired {
    Source(Arc<dyn EventSource>),
    View,
    Bindings,
}

/// A desired source and its content, or why its content is unusable.
pub(crate) struct Wanted {
    pub cursor: SourceCursor,
    pub event_type: String,
    pub body: Result<EventBody, String>,
}

impl Desired {
    /// The first configured source.
    pub(crate) async fn choose(
        source: Option<&Arc<dyn EventSource>>,
        db: &Database,
    ) -> Result<Self, ApplyError> {
        if let Some(source) = source {
            return Ok(Self::Source(source.clone()));
        }
        if store::desired_view_exists(&**db.client().await?).await? {
            return Ok(Self::View);
        }
        Ok(Self::Bindings)
    }

    /// Which source this is, for the row's `result`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Source(_) => "event_source",
            Self::View => "sql_view",
            Self::Bindings => "bindings",
        }
    }

    /// The next page of desired sources after `after`, over every name of one
    /// calendar (its own id first): the application may list a source under
    /// `primary` or under the owner's address. The bindings are keyed by the
    /// calendar's own id alone: they read the first name only.
    pub(crate) async fn page_of_names(
        &self,
        db: &Database,
        names: &[CalendarKey],
        after: Option<&SourceCursor>,
        limit: usize,
        defaults: &EventDefaults,
    ) -> Result<Vec<Wanted>, ApplyError> {
        let (first, others) = names.split_first().expect("a calendar has a name");
        if others.is_empty() || matches!(self, Self::Bindings) {
            return self.page(db, first, after, limit, defaults).await;
        }
        // Each name's page holds its first `limit` sources, so the first
        // `limit` of their union are exactly the union's first `limit`.
        let mut union: BTreeMap<SourceCursor, Wanted> = BTreeMap::new();
        for name in names {
            for wanted in self.page(db, name, after, limit, defaults).await? {
                union.entry(wanted.cursor.clone()).or_insert(wanted);
            }
        }
        Ok(union.into_values().take(limit).collect())
    }

    /// The next page of desired sources after `after`.
    pub(crate) async fn page(
        &self,
        db: &Database,
        calendar: &CalendarKey,
        after: Option<&SourceCursor>,
        limit: usize,
        defaults: &EventDefaults,
    ) -> Result<Vec<Wanted>, ApplyError> {
        let mut page: Vec<Wanted> = match self {
            Self::Source(source) => source
                .desired_events(calendar, after, limit)
                .await
                .map_err(ApplyError::Source)?
                .into_iter()
                .map(|d| {
                    wanted(
                        defaults,
                        calendar,
                        d.source_type,
                        d.source_id,
                        d.event_type,
                        Ok(d.event),
                    )
                })
                .collect(),
            Self::View => store::desired_view_page(
                &**db.client().await?,
                calendar,
                after,
                i64::try_from(limit).unwrap_or(i64::MAX),
            )
            .await?
            .into_iter()
            .map(|row| {
                let payload = json!({
                    "workspaceId": calendar.workspace_id, "calendarId": calendar.calendar_id,
                    "sourceType": row.source_type, "sourceId": row.source_id,
                    "eventType": row.event_type,
                    "event": {
                        "title": row.title, "description": row.description,
                        "start": row.start_at, "end": row.end_at,
                        "isAllDay": row.is_all_day, "timeZone": row.time_zone,
                    },
                });
                let details = match Operation::decode("UPSERT_EVENT", &payload) {
                    Ok(Operation::UpsertEvent(u)) => Ok(u.event),
                    Ok(_) => Err("not an event".to_owned()),
                    Err(e) => Err(e.to_string()),
                };
                let event_type = row.event_type.unwrap_or_default();
                wanted(
                    defaults,
                    calendar,
                    row.source_type,
                    row.source_id,
                    event_type,
                    details,
                )
            })
            .collect(),
            Self::Bindings => {
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                store::live_bindings_page(&**db.client().await?, calendar, after, limit)
                    .await?
                    .into_iter()
                    .map(|b| Wanted {
                        cursor: SourceCursor {
                            source_type: b.source.source_type,
                            source_id: b.source.source_id,
                        },
                        event_type: b.event_type.unwrap_or_default(),
                        body: b
                            .content
                            .ok_or_else(|| "no synced content recorded".to_owned())
                            .and_then(|c| serde_json::from_value(c).map_err(|e| e.to_string())),
                    })
                    .collect()
            }
        };
        page.sort_by(|a, b| a.cursor.cmp(&b.cursor));
        Ok(page)
    }
}

/// A desired source with its body as an upsert would write it: the
/// eventType's defaults merged first, so that a rebuild and an upsert agree.
fn wanted(
    defaults: &EventDefaults,
    calendar: &CalendarKey,
    source_type: String,
    source_id: String,
    event_type: String,
    details: Result<EventDetails, String>,
) -> Wanted {
    let source = SourceKey {
        calendar: calendar.clone(),
        source_type: source_type.clone(),
        source_id: source_id.clone(),
    };
    let body = details.map(|mut event| {
        event.options = defaults.apply(&event_type, event.options);
        event_body(&UpsertEvent {
            source,
            event_type: event_type.clone(),
            event,
        })
    });
    Wanted {
        cursor: SourceCursor {
            source_type,
            source_id,
        },
        event_type,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pooled session that cannot be had names the server and the cause
    /// (the pool's own error says neither).
    #[tokio::test]
    async fn a_pool_failure_names_host_port_and_the_cause() {
        let url = "postgres://postgres@127.0.0.1:1/app?sslmode=disable&connect_timeout=5";
        let db = Database::connect(url, 1).unwrap();
        let Err(ApplyError::Database(error)) = Desired::choose(None, &db).await else {
            panic!("the pool cannot connect");
        };
        assert!(matches!(error, crate::Error::Connect { .. }), "{error:?}");
        let message = ApplyError::Database(error).to_string();
        assert!(
            message.contains("127.0.0.1:1, database \"app\""),
            "{message}"
        );
        assert!(message.contains("Connection refused"), "{message}");
    }
}
