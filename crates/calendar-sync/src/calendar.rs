//! The calendar side of the engine: a narrow trait with only the calls the
//! drainer makes, its event vocabulary, and the error classification the
//! engine branches on. The Google implementation lives in its own module; tests
//! may implement the trait in memory.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::event_options::EventOptions;
use crate::operation::CalendarKey;

/// Private extended property naming the workspace that owns an event.
pub const PROP_WORKSPACE: &str = "calendarSyncWorkspace";
/// Private extended property naming the source type of an event.
pub const PROP_SOURCE_TYPE: &str = "calendarSyncSourceType";
/// Private extended property naming the source id of an event.
pub const PROP_SOURCE_ID: &str = "calendarSyncSourceId";
/// Private extended property keeping the application's own event category.
pub const PROP_EVENT_TYPE: &str = "calendarSyncEventType";

/// The start or end of an event, as Google's `EventDateTime`.
///
/// ```
/// use calendar_sync::EventTime;
/// use chrono::DateTime;
///
/// let start = EventTime::DateTime {
///     date_time: DateTime::parse_from_rfc3339("2025-01-15T14:00:00+01:00")?,
///     time_zone: Some("Europe/Paris".into()),
/// };
/// // What a calendar implementation sends for it:
/// let sent = match &start {
///     EventTime::Date(day) => day.to_string(),
///     EventTime::DateTime { date_time, .. } => date_time.to_rfc3339(),
/// };
/// assert_eq!(sent, "2025-01-15T14:00:00+01:00");
/// # Ok::<(), chrono::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventTime {
    /// An all-day boundary (Google's `date`; the end is exclusive).
    Date(NaiveDate),
    /// A timed boundary (Google's `dateTime`, with an optional IANA `timeZone`).
    DateTime {
        /// The instant, with its offset.
        date_time: DateTime<FixedOffset>,
        /// IANA time zone, if the producer gave one.
        time_zone: Option<String>,
    },
}

/// The event content the drainer writes. Its serialisation is hashed to skip
/// unchanged upserts, so field order and map order are stable.
///
/// The drainer builds it from an [`UpsertEvent`](crate::UpsertEvent); a
/// [`Calendar`] implementation sends it, and reads it back in [`RemoteEvent`]s.
///
/// ```
/// use std::collections::BTreeMap;
/// use calendar_sync::{EventBody, EventTime, PROP_SOURCE_ID};
/// use chrono::NaiveDate;
///
/// // All day on 15 January: the end date is exclusive, as in Google.
/// let body = EventBody {
///     summary: "Ship it".into(),
///     description: None,
///     start: EventTime::Date(NaiveDate::from_ymd_opt(2025, 1, 15).unwrap()),
///     end: EventTime::Date(NaiveDate::from_ymd_opt(2025, 1, 16).unwrap()),
///     private_properties: BTreeMap::from([(PROP_SOURCE_ID.to_owned(), "42".to_owned())]),
///     options: Default::default(),
/// };
/// assert_eq!(body.private_properties[PROP_SOURCE_ID], "42");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventBody {
    /// Title.
    pub summary: String,
    /// Description.
    pub description: Option<String>,
    /// Inclusive start.
    pub start: EventTime,
    /// Exclusive end.
    pub end: EventTime,
    /// Private extended properties identifying our events.
    pub private_properties: BTreeMap<String, String>,
    /// The optional fields, in one spelling per meaning: Google's defaults
    /// are `None`, the link's title is resolved. Flattened and skipped when
    /// `None`, so a body without them serialises (and hashes) as in earlier
    /// releases, and bodies they stored still read.
    #[serde(flatten)]
    pub options: EventOptions,
}

/// An event as the calendar reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEvent {
    /// The event id.
    pub id: String,
    /// Google's version tag.
    pub etag: Option<String>,
    /// Whether the event is cancelled (deleted events stay readable in Google).
    pub cancelled: bool,
    /// The content, where the call returned it in a form we can compare.
    pub body: Option<EventBody>,
    /// The event's page in the calendar's web interface (Google's `htmlLink`),
    /// when the service returned one; kept in the binding for applications.
    pub html_link: Option<String>,
}

/// One page of a filtered event listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPage {
    /// Events on this page (may be empty even when more pages follow).
    pub events: Vec<RemoteEvent>,
    /// Token for the next page, if any.
    pub next_page_token: Option<String>,
}

/// One page of a calendar's changes (Google's incremental sync): every
/// event of the calendar on a full listing, or only those changed since a
/// sync token, deletions included as cancelled events of which only the id
/// is certain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangePage {
    /// Events on this page (may be empty even when more pages follow).
    pub events: Vec<RemoteEvent>,
    /// Token for the next page, if any.
    pub next_page_token: Option<String>,
    /// On the last page: the token to ask for the changes after this listing.
    pub next_sync_token: Option<String>,
}

/// Code of the error [`Calendar::list_changes`] answers when its sync token
/// is too old (Google's 410 `fullSyncRequired`): list everything again.
pub const FULL_SYNC_REQUIRED: &str = "google_410_fullSyncRequired";

/// What a calendar name (`primary`, an address, an id) stands for, as the
/// service resolved it for the workspace's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCalendar {
    /// The calendar's own id: every key of the engine uses it.
    pub id: String,
    /// The connection version the answer came under (`None`: the service
    /// has no connections to change): an answer from before a reconnect is
    /// never recorded.
    pub connection_version: Option<i64>,
}

/// What went wrong with a calendar call, in terms the engine acts on.
///
/// ```
/// use calendar_sync::{CalendarError, CalendarErrorKind, ErrorClass};
///
/// let gone = CalendarError::new(CalendarErrorKind::Gone, "google_410_deleted", "Resource has been deleted");
/// assert!(gone.means_absent());
/// let revoked = CalendarError::new(CalendarErrorKind::ConnectionInvalid, "oauth_invalid_grant", "Token has been revoked.");
/// assert_eq!(revoked.class(), ErrorClass::ConnectionInvalid);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CalendarErrorKind {
    /// 404: the event or the calendar does not exist.
    NotFound,
    /// 410: the event was already deleted.
    Gone,
    /// 409 on insert: the id is taken (by our own earlier attempt, or a cancelled event).
    Duplicate,
    /// 412 `conditionNotMet`: the event changed since the etag we sent in
    /// `If-Match`; re-read it and decide again.
    Conflict,
    /// Rate limited (403 rateLimitExceeded / userRateLimitExceeded, 429): retry later.
    RateLimited,
    /// Google's usage limits (403 quotaExceeded): the calendar is read-only for hours.
    UsageLimited,
    /// Held back on our side (an open circuit breaker): wait `retry_after`
    /// without using an attempt.
    HeldBack,
    /// 5xx, timeouts, connection errors, token endpoint 5xx: retry later.
    Transient,
    /// The OAuth grant is unusable (revoked, wrong client, missing scope): needs re-authorisation.
    ConnectionInvalid,
    /// Anything retrying cannot fix (400, most 403s).
    Permanent,
}

/// A failed calendar call. `code` is stable (for grouping in `status`); the
/// message is for humans and never contains a secret. Build it with
/// [`CalendarError::new`] and the `with_*` methods.
///
///
/// ```
/// use std::time::Duration;
/// use calendar_sync::{CalendarError, CalendarErrorKind, ErrorClass};
///
/// // A calendar implementation reports a rate limit, with the service's hint:
/// let error = CalendarError::new(CalendarErrorKind::RateLimited, "crm_429", "Too many requests")
///     .with_retry_after(Some(Duration::from_secs(30)));
/// assert_eq!(error.to_string(), "[crm_429] Too many requests"); // as `last_error` reads
/// let retry_after = Some(Duration::from_secs(30));
/// assert_eq!(error.class(), ErrorClass::RateLimited { retry_after });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{code}] {message}")]
#[non_exhaustive]
pub struct CalendarError {
    /// What the engine should do about it.
    pub kind: CalendarErrorKind,
    /// Stable machine-readable code, e.g. `google_404_notFound`.
    pub code: String,
    /// Human-readable detail.
    pub message: String,
    /// How long the service asked us to wait, if it said.
    pub retry_after: Option<Duration>,
    /// The HTTP status of the answer, when there was one (Google Calendar's,
    /// or the token endpoint's for `oauth_*` codes); `None` for timeouts,
    /// network failures and refusals of our own.
    pub status: Option<u16>,
}

impl CalendarError {
    /// A new error without a retry-after hint.
    pub fn new(
        kind: CalendarErrorKind,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            code: code.into(),
            message: message.into(),
            retry_after: None,
            status: None,
        }
    }

    /// Adds the HTTP status of the answer.
    pub fn with_status(mut self, status: Option<u16>) -> Self {
        self.status = status;
        self
    }

    /// Adds the service's retry-after hint.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Whether a change listing's sync token was too old: list everything again.
    pub fn means_full_sync_required(&self) -> bool {
        self.kind == CalendarErrorKind::Gone && self.code == FULL_SYNC_REQUIRED
    }

    /// Whether the error says the event may not be there (404, 410). A 404
    /// alone proves nothing (Google's eventual consistency, or the calendar's
    /// access lost for a while): the engine confirms before acting on it.
    pub fn means_absent(&self) -> bool {
        matches!(
            self.kind,
            CalendarErrorKind::NotFound | CalendarErrorKind::Gone
        )
    }

    /// How the engine treats this error when nothing more specific applies.
    pub fn class(&self) -> ErrorClass {
        match self.kind {
            CalendarErrorKind::Transient | CalendarErrorKind::Conflict => ErrorClass::Retryable {
                retry_after: self.retry_after,
            },
            CalendarErrorKind::RateLimited => ErrorClass::RateLimited {
                retry_after: self.retry_after,
            },
            CalendarErrorKind::UsageLimited | CalendarErrorKind::HeldBack => ErrorClass::Paused,
            CalendarErrorKind::ConnectionInvalid => ErrorClass::ConnectionInvalid,
            CalendarErrorKind::NotFound
            | CalendarErrorKind::Gone
            | CalendarErrorKind::Duplicate
            | CalendarErrorKind::Permanent => ErrorClass::Permanent,
        }
    }
}

/// The engine's decision for a failed item.
///
/// ```
/// use calendar_sync::{CalendarError, CalendarErrorKind, ErrorClass};
///
/// let error = CalendarError::new(CalendarErrorKind::Transient, "google_503", "Backend Error");
/// // Back to PENDING, to be tried again after the backoff delay:
/// assert!(matches!(error.class(), ErrorClass::Retryable { retry_after: None }));
/// let bad = CalendarError::new(CalendarErrorKind::Permanent, "google_400_invalid", "Bad Request");
/// assert_eq!(bad.class(), ErrorClass::Permanent); // DEAD_LETTER at once
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Back to PENDING with backoff (the service's retry-after wins when longer).
    Retryable {
        /// The service's hint.
        retry_after: Option<Duration>,
    },
    /// Google asked us to slow down (429, 403 rate limits): back to PENDING
    /// after the backoff delay (or the service's retry-after when longer)
    /// *without* using an attempt. The item is not at fault and succeeds once
    /// the quota window slides; counting these would dead-letter healthy items
    /// during a long storm.
    RateLimited {
        /// The service's hint.
        retry_after: Option<Duration>,
    },
    /// DEAD_LETTER at once.
    Permanent,
    /// DEAD_LETTER, the workspace's connection marked invalid, its other items dead-lettered.
    ConnectionInvalid,
    /// Back to PENDING after the error's `retry_after` (without one:
    /// [`DrainerConfig::backoff_cap`](crate::DrainerConfig::backoff_cap)),
    /// without burning an attempt.
    Paused,
}

/// The calls the drainer makes on a calendar service. Every call names the
/// (workspace, calendar) it acts for; the workspace selects the credentials.
///
/// Implementations must be idempotent-friendly: `insert_event` uses the given
/// id and reports [`CalendarErrorKind::Duplicate`] when it is taken.
///
/// [`GoogleCalendar`](crate::GoogleCalendar) is the implementation for
/// Google. A complete in-memory one, with Google's semantics and fault
/// injection, is `tests/support/memory_calendar.rs` in the repository. The
/// smallest useful implementation wraps another calendar and delegates every
/// call, including the three with defaults, here counting the writes it lets
/// through (it could as well log, meter or refuse them):
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use calendar_sync::{
///     Budget, Calendar, CalendarError, CalendarKey, ChangePage, EventBody, EventPage,
///     RemoteEvent, ResolvedCalendar,
/// };
///
/// struct Counted<C> {
///     inner: C,
///     writes: AtomicU64,
/// }
///
/// impl<C: Calendar> Counted<C> {
///     fn count(&self) {
///         self.writes.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// impl<C: Calendar> Calendar for Counted<C> {
///     fn budget(&self) -> Option<Budget> {
///         self.inner.budget()
///     }
///
///     async fn insert_event(
///         &self,
///         target: &CalendarKey,
///         event_id: &str,
///         body: &EventBody,
///     ) -> Result<RemoteEvent, CalendarError> {
///         self.count();
///         self.inner.insert_event(target, event_id, body).await
///     }
///
///     async fn update_event(
///         &self,
///         target: &CalendarKey,
///         event_id: &str,
///         body: &EventBody,
///         if_match: Option<&str>,
///     ) -> Result<RemoteEvent, CalendarError> {
///         self.count();
///         self.inner.update_event(target, event_id, body, if_match).await
///     }
///
///     async fn delete_event(
///         &self,
///         target: &CalendarKey,
///         event_id: &str,
///         if_match: Option<&str>,
///     ) -> Result<(), CalendarError> {
///         self.count();
///         self.inner.delete_event(target, event_id, if_match).await
///     }
///
///     async fn get_event(
///         &self,
///         target: &CalendarKey,
///         event_id: &str,
///     ) -> Result<RemoteEvent, CalendarError> {
///         self.inner.get_event(target, event_id).await
///     }
///
///     async fn calendar_exists(&self, target: &CalendarKey) -> Result<bool, CalendarError> {
///         self.inner.calendar_exists(target).await
///     }
///
///     async fn resolve_calendar(
///         &self,
///         target: &CalendarKey,
///     ) -> Result<Option<ResolvedCalendar>, CalendarError> {
///         self.inner.resolve_calendar(target).await
///     }
///
///     async fn list_events(
///         &self,
///         target: &CalendarKey,
///         property: (&str, &str),
///         page_token: Option<&str>,
///     ) -> Result<EventPage, CalendarError> {
///         self.inner.list_events(target, property, page_token).await
///     }
///
///     async fn list_changes(
///         &self,
///         target: &CalendarKey,
///         sync_token: Option<&str>,
///         page_token: Option<&str>,
///     ) -> Result<ChangePage, CalendarError> {
///         self.inner.list_changes(target, sync_token, page_token).await
///     }
/// }
/// ```
pub trait Calendar: Send + Sync + 'static {
    /// The quotas this service's calls are paid from, shared by every worker
    /// through the database; `None` (the default): unlimited.
    fn budget(&self) -> Option<crate::Budget> {
        None
    }

    /// Creates an event with a client-chosen id.
    fn insert_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
        body: &EventBody,
    ) -> impl Future<Output = Result<RemoteEvent, CalendarError>> + Send;

    /// Replaces an event's content (a full update, not a patch). With
    /// `if_match`, only if the event's etag is still that one
    /// ([`CalendarErrorKind::Conflict`] otherwise): a late write cannot land
    /// over a newer one.
    fn update_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
        body: &EventBody,
        if_match: Option<&str>,
    ) -> impl Future<Output = Result<RemoteEvent, CalendarError>> + Send;

    /// Deletes an event; with `if_match`, only if its etag is still that one.
    fn delete_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
        if_match: Option<&str>,
    ) -> impl Future<Output = Result<(), CalendarError>> + Send;

    /// Reads one event, cancelled or not.
    fn get_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
    ) -> impl Future<Output = Result<RemoteEvent, CalendarError>> + Send;

    /// Whether the calendar exists for this connection (calendars.get, asked
    /// now, never cached): false on 404.
    fn calendar_exists(
        &self,
        target: &CalendarKey,
    ) -> impl Future<Output = Result<bool, CalendarError>> + Send;

    /// The calendar's own id (`None` on 404): `primary` and the owner's
    /// address are one calendar, so bindings, ordering and REBUILD_ALL key on
    /// this id whichever name an item uses. May be cached per connection.
    /// Default: every name is its own id.
    fn resolve_calendar(
        &self,
        target: &CalendarKey,
    ) -> impl Future<Output = Result<Option<ResolvedCalendar>, CalendarError>> + Send {
        let id = target.calendar_id.clone();
        async move {
            Ok(Some(ResolvedCalendar {
                id,
                connection_version: None,
            }))
        }
    }

    /// Lists the events whose private extended property `key` equals `value`
    /// (cancelled ones excluded), one page at a time.
    fn list_events(
        &self,
        target: &CalendarKey,
        property: (&str, &str),
        page_token: Option<&str>,
    ) -> impl Future<Output = Result<EventPage, CalendarError>> + Send;

    /// One page of the calendar's changes: without `sync_token` every event
    /// (a full listing), with it only what changed since, cancellations
    /// included; the last page carries the next sync token. A token too old
    /// answers [`CalendarErrorKind::Gone`] with code [`FULL_SYNC_REQUIRED`].
    /// Drift detection calls it; the default answers a permanent
    /// `list_changes_unsupported` error, so calendars without it are never
    /// checked for drift.
    fn list_changes(
        &self,
        target: &CalendarKey,
        sync_token: Option<&str>,
        page_token: Option<&str>,
    ) -> impl Future<Output = Result<ChangePage, CalendarError>> + Send {
        let _ = (target, sync_token, page_token);
        async {
            Err(CalendarError::new(
                CalendarErrorKind::Permanent,
                "list_changes_unsupported",
                "this calendar cannot list its changes",
            ))
        }
    }
}
