//! Outbox payloads: the typed [`Operation`] and its strict decoder.
//!
//! Producers write camelCase JSON. Decoding never panics: any input either yields
//! a valid operation or a [`DecodeError`] naming the offending field, which sends
//! the row to `DEAD_LETTER` at once.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde_json::{Map, Value, json};

use crate::event_options::{
    ColorId, EventDefaults, EventOptions, MAX_REMINDER_MINUTES, ReminderMethod, ReminderOverride,
    Reminders, Transparency, Visibility,
};

/// Longest accepted workspace, calendar or source id. Ids travel in Google's
/// private extended properties, whose values Google truncates past 1024 characters.
pub(crate) const MAX_ID_LEN: usize = 1024;
/// Longest accepted `sourceType` and `eventType`.
pub(crate) const MAX_TYPE_LEN: usize = 64;
/// Longest `event.title`, in characters. Google documents no limit for
/// `summary`; this bound keeps us well inside what it stores unchanged.
pub(crate) const MAX_TITLE_LEN: usize = 1024;
/// Longest `event.description`, in characters: Google documents none, and
/// about 8,192 is where third parties report it failing or truncating. A longer
/// one dead-letters at once rather than drift after a truncation on every
/// REBUILD_ALL.
pub(crate) const MAX_DESCRIPTION_LEN: usize = 8192;

/// The three operations a producer can enqueue: the values of the
/// `operation` column.
///
/// ```
/// use calendar_sync::OperationKind;
///
/// let kind: OperationKind = "CANCEL_EVENT".parse()?;
/// assert_eq!(kind, OperationKind::CancelEvent);
/// assert_eq!(kind.as_str(), "CANCEL_EVENT");
/// assert!("DELETE_EVENT".parse::<OperationKind>().is_err());
/// # Ok::<(), calendar_sync::DecodeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// Create or update the event of one source.
    UpsertEvent,
    /// Delete the event of one source.
    CancelEvent,
    /// Reconcile a whole (workspace, calendar) with Google.
    RebuildAll,
}

impl OperationKind {
    /// The name used in the `operation` column and in payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UpsertEvent => "UPSERT_EVENT",
            Self::CancelEvent => "CANCEL_EVENT",
            Self::RebuildAll => "REBUILD_ALL",
        }
    }
}

impl FromStr for OperationKind {
    type Err = DecodeError;

    fn from_str(s: &str) -> Result<Self, DecodeError> {
        match s {
            "UPSERT_EVENT" => Ok(Self::UpsertEvent),
            "CANCEL_EVENT" => Ok(Self::CancelEvent),
            "REBUILD_ALL" => Ok(Self::RebuildAll),
            other => Err(DecodeError::new(
                "operation",
                format!(
                    "unknown operation {}; expected UPSERT_EVENT, CANCEL_EVENT or REBUILD_ALL",
                    quote(other)
                ),
            )),
        }
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A (workspace, calendar) pair: the scope of a REBUILD_ALL.
///
/// ```
/// use calendar_sync::{CalendarKey, Operation};
///
/// let calendar = CalendarKey {
///     workspace_id: "acme".into(),
///     calendar_id: "team@acme.example".into(),
/// };
/// let rebuild = Operation::RebuildAll(calendar.clone());
/// assert_eq!(rebuild.calendar(), &calendar);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CalendarKey {
    /// The application's workspace (tenant) id; selects the Google connection.
    pub workspace_id: String,
    /// The Google calendar id, e.g. `primary` or `team@example.com`.
    pub calendar_id: String,
}

/// One application object synced to one calendar: the unit of ordering.
///
/// ```
/// use calendar_sync::{CalendarKey, Operation, SourceKey};
///
/// let task = SourceKey {
///     calendar: CalendarKey { workspace_id: "acme".into(), calendar_id: "primary".into() },
///     source_type: "task".into(),
///     source_id: "42".into(),
/// };
/// // Delete the event of task 42 (after every earlier item of task 42).
/// let cancel = Operation::CancelEvent(task);
/// assert_eq!(cancel.workspace_id(), "acme");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// Where the event lives.
    pub calendar: CalendarKey,
    /// The application's kind of object, e.g. `task`.
    pub source_type: String,
    /// The application's id of the object.
    pub source_id: String,
}

/// A source within its calendar, and its position in the (source_type,
/// source_id) order that a REBUILD_ALL walks: byte by byte, source type
/// first, as SQL's `COLLATE "C"` (see [`EventSource`](crate::EventSource)).
///
/// ```
/// use calendar_sync::SourceCursor;
///
/// let at = |source_type: &str, source_id: &str| SourceCursor {
///     source_type: source_type.into(),
///     source_id: source_id.into(),
/// };
/// assert!(at("meeting", "9") < at("task", "10"));
/// assert!(at("task", "10") < at("task", "9"));
/// assert!(at("task", "Z") < at("task", "a"));
/// ```
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct SourceCursor {
    /// The application's kind of object.
    pub source_type: String,
    /// The application's id of the object.
    pub source_id: String,
}

/// When an event happens.
///
/// ```
/// use calendar_sync::EventTiming;
/// use chrono::{DateTime, NaiveDate};
///
/// // The offsite, 3 and 4 March: both days inclusive.
/// let offsite = EventTiming::AllDay {
///     first_day: NaiveDate::from_ymd_opt(2025, 3, 3).unwrap(),
///     last_day: NaiveDate::from_ymd_opt(2025, 3, 4).unwrap(),
/// };
/// // The review, 14:00 to 15:00 in Paris (winter time).
/// let review = EventTiming::Timed {
///     start: DateTime::parse_from_rfc3339("2025-01-15T14:00:00+01:00")?,
///     end: DateTime::parse_from_rfc3339("2025-01-15T15:00:00+01:00")?,
/// };
/// assert_ne!(offsite, review);
/// # Ok::<(), chrono::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTiming {
    /// Whole days, both inclusive (Google's exclusive end is computed when sending).
    AllDay {
        /// First day of the event.
        first_day: NaiveDate,
        /// Last day of the event (inclusive).
        last_day: NaiveDate,
    },
    /// A time range; `end` is after `start`.
    Timed {
        /// Start, with the producer's offset.
        start: DateTime<FixedOffset>,
        /// End, with the producer's offset.
        end: DateTime<FixedOffset>,
    },
}

/// The event content of an UPSERT_EVENT.
///
/// ```
/// use calendar_sync::{EventDetails, EventTiming};
/// use chrono::NaiveDate;
///
/// let day = NaiveDate::from_ymd_opt(2025, 1, 15).unwrap();
/// let release = EventDetails {
///     title: "Release 2.0".into(),
///     description: Some("Freeze at noon".into()),
///     timing: EventTiming::AllDay { first_day: day, last_day: day },
///     time_zone: None,
///     options: Default::default(),
/// };
/// assert_eq!(release.title, "Release 2.0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDetails {
    /// Event title (Google's `summary`).
    pub title: String,
    /// Optional description.
    pub description: Option<String>,
    /// Start and end.
    pub timing: EventTiming,
    /// Optional IANA time zone, validated against the tz database.
    pub time_zone: Option<String>,
    /// Location, link back, busy/free, visibility, colour and reminders: each
    /// `None` unless the producer (or the eventType's defaults) sets it.
    pub options: EventOptions,
}

/// UPSERT_EVENT: make the source's event exist with this content.
///
/// ```
/// use calendar_sync::{CalendarKey, EventDetails, EventTiming, Operation, SourceKey, UpsertEvent};
/// use chrono::{DateTime, Duration};
///
/// let due = DateTime::parse_from_rfc3339("2025-01-15T14:00:00Z")?;
/// let upsert = Operation::UpsertEvent(UpsertEvent {
///     source: SourceKey {
///         calendar: CalendarKey { workspace_id: "acme".into(), calendar_id: "primary".into() },
///         source_type: "task".into(),
///         source_id: "42".into(),
///     },
///     event_type: "BLOCKER_DEADLINE".into(),
///     event: EventDetails {
///         title: "Complete user interviews".into(),
///         description: None,
///         timing: EventTiming::Timed { start: due, end: due + Duration::hours(1) },
///         time_zone: Some("Europe/Paris".into()),
///         options: Default::default(),
///     },
/// });
/// // The payload `enqueue` writes, and the drainer decodes again:
/// let payload = upsert.to_payload();
/// assert_eq!(payload["event"]["title"], "Complete user interviews");
/// assert_eq!(Operation::decode("UPSERT_EVENT", &payload), Ok(upsert));
/// # Ok::<(), chrono::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertEvent {
    /// The source whose event this is.
    pub source: SourceKey,
    /// The application's own category (e.g. `BLOCKER_DEADLINE`), kept in the
    /// event's private extended properties; not Google's `eventType`.
    pub event_type: String,
    /// The content.
    pub event: EventDetails,
}

/// A decoded outbox payload.
// One is decoded per item being applied, never kept by the thousand: a Box
// would cost every producer's pattern match for a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Create or update one source's event.
    UpsertEvent(UpsertEvent),
    /// Delete one source's event.
    CancelEvent(SourceKey),
    /// Reconcile one (workspace, calendar).
    RebuildAll(CalendarKey),
}

impl Operation {
    /// The operation's kind.
    pub fn kind(&self) -> OperationKind {
        match self {
            Self::UpsertEvent(_) => OperationKind::UpsertEvent,
            Self::CancelEvent(_) => OperationKind::CancelEvent,
            Self::RebuildAll(_) => OperationKind::RebuildAll,
        }
    }

    /// The calendar the operation acts on, as its payload names it.
    pub fn calendar(&self) -> &CalendarKey {
        match self {
            Self::UpsertEvent(u) => &u.source.calendar,
            Self::CancelEvent(s) => &s.calendar,
            Self::RebuildAll(c) => c,
        }
    }

    /// Names the calendar by its own id (see `Calendar::resolve_calendar`).
    pub(crate) fn set_calendar_id(&mut self, calendar_id: String) {
        match self {
            Self::UpsertEvent(u) => u.source.calendar.calendar_id = calendar_id,
            Self::CancelEvent(s) => s.calendar.calendar_id = calendar_id,
            Self::RebuildAll(c) => c.calendar_id = calendar_id,
        }
    }

    /// The workspace the operation belongs to.
    pub fn workspace_id(&self) -> &str {
        match self {
            Self::UpsertEvent(u) => &u.source.calendar.workspace_id,
            Self::CancelEvent(s) => &s.calendar.workspace_id,
            Self::RebuildAll(c) => &c.workspace_id,
        }
    }

    /// Decodes and validates a payload. `operation_column` is the row's
    /// `operation` column; the payload's own `operation`, when present, must agree.
    ///
    /// ```
    /// use calendar_sync::{Operation, OperationKind};
    /// use serde_json::json;
    ///
    /// let mut payload = json!({
    ///     "workspaceId": "acme", "calendarId": "primary",
    ///     "sourceType": "task", "sourceId": "42", "eventType": "DEADLINE",
    ///     "event": { "title": "Ship it", "start": "2025-01-15", "end": "2025-01-15", "isAllDay": true },
    /// });
    /// let operation = Operation::decode("UPSERT_EVENT", &payload)?;
    /// assert_eq!(operation.kind(), OperationKind::UpsertEvent);
    /// assert_eq!(operation.workspace_id(), "acme");
    ///
    /// // A payload that does not decode names its field (the row dead-letters at once).
    /// payload["event"]["end"] = json!("2025-01-14");
    /// let error = Operation::decode("UPSERT_EVENT", &payload).unwrap_err();
    /// assert_eq!(error.field, "payload.event.end");
    /// # Ok::<(), calendar_sync::DecodeError>(())
    /// ```
    pub fn decode(operation_column: &str, payload: &Value) -> Result<Self, DecodeError> {
        let kind: OperationKind = operation_column.parse()?;
        let obj = payload
            .as_object()
            .ok_or_else(|| DecodeError::new("payload", "must be a JSON object"))?;
        let fields = Fields {
            obj,
            path: "payload".to_owned(),
        };
        if let Some(named) = fields.optional_str("operation")?
            && named != kind.as_str()
        {
            return Err(DecodeError::new(
                "payload.operation",
                format!(
                    "{} disagrees with the operation column {}",
                    quote(named),
                    quote(kind.as_str())
                ),
            ));
        }
        let calendar = CalendarKey {
            workspace_id: fields.id("workspaceId", MAX_ID_LEN)?,
            calendar_id: fields.id("calendarId", MAX_ID_LEN)?,
        };
        match kind {
            OperationKind::RebuildAll => Ok(Self::RebuildAll(calendar)),
            OperationKind::CancelEvent => Ok(Self::CancelEvent(fields.source(calendar)?)),
            OperationKind::UpsertEvent => {
                let source = fields.source(calendar)?;
                let event_type = fields.id("eventType", MAX_TYPE_LEN)?;
                let event = fields.object("event")?.event_details()?;
                Ok(Self::UpsertEvent(UpsertEvent {
                    source,
                    event_type,
                    event,
                }))
            }
        }
    }

    /// Encodes the operation as the camelCase payload producers write.
    ///
    /// ```
    /// use calendar_sync::{CalendarKey, Operation};
    /// use serde_json::json;
    ///
    /// let calendar = CalendarKey { workspace_id: "acme".into(), calendar_id: "primary".into() };
    /// let rebuild = Operation::RebuildAll(calendar);
    /// assert_eq!(
    ///     rebuild.to_payload(),
    ///     json!({ "operation": "REBUILD_ALL", "workspaceId": "acme", "calendarId": "primary" }),
    /// );
    /// ```
    pub fn to_payload(&self) -> Value {
        match self {
            Self::RebuildAll(c) => json!({
                "operation": "REBUILD_ALL",
                "workspaceId": c.workspace_id,
                "calendarId": c.calendar_id,
            }),
            Self::CancelEvent(s) => json!({
                "operation": "CANCEL_EVENT",
                "workspaceId": s.calendar.workspace_id,
                "calendarId": s.calendar.calendar_id,
                "sourceType": s.source_type,
                "sourceId": s.source_id,
            }),
            Self::UpsertEvent(u) => {
                let (start, end, all_day) = match &u.event.timing {
                    EventTiming::AllDay {
                        first_day,
                        last_day,
                    } => (first_day.to_string(), last_day.to_string(), true),
                    EventTiming::Timed { start, end } => {
                        (start.to_rfc3339(), end.to_rfc3339(), false)
                    }
                };
                let mut event = json!({
                    "title": u.event.title,
                    "description": u.event.description,
                    "start": start,
                    "end": end,
                    "isAllDay": all_day,
                });
                if let Some(tz) = &u.event.time_zone {
                    event["timeZone"] = json!(tz);
                }
                // The options serialise in the payload's own names, each only when set.
                if let (Value::Object(event), Ok(Value::Object(options))) =
                    (&mut event, serde_json::to_value(&u.event.options))
                {
                    event.extend(options);
                }
                json!({
                    "operation": "UPSERT_EVENT",
                    "workspaceId": u.source.calendar.workspace_id,
                    "calendarId": u.source.calendar.calendar_id,
                    "sourceType": u.source.source_type,
                    "sourceId": u.source.source_id,
                    "eventType": u.event_type,
                    "event": event,
                })
            }
        }
    }
}

/// Why a payload was rejected: the field (a JSON path) and what is wrong with it.
///
/// ```
/// use calendar_sync::Operation;
///
/// let error = Operation::decode("REBUILD_ALL", &serde_json::json!({ "calendarId": "primary" }))
///     .unwrap_err();
/// assert_eq!(error.to_string(), "payload.workspaceId: is missing");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DecodeError {
    /// The offending field, e.g. `payload.event.start`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl DecodeError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A JSON object being decoded, with its path for error messages.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    fn field(&self, name: &str) -> String {
        format!("{}.{name}", self.path)
    }

    fn optional(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    fn optional_str(&self, name: &str) -> Result<Option<&'a str>, DecodeError> {
        match self.optional(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(DecodeError::new(
                self.field(name),
                format!("must be a string, got {}", json_type(other)),
            )),
        }
    }

    fn required_str(&self, name: &str) -> Result<&'a str, DecodeError> {
        let value = self
            .optional_str(name)?
            .ok_or_else(|| DecodeError::new(self.field(name), "is missing"))?;
        if value.trim().is_empty() {
            return Err(DecodeError::new(self.field(name), "must not be empty"));
        }
        Ok(value)
    }

    /// Refuses text longer than `max_len` characters, naming the field.
    fn within(&self, name: &str, value: &str, max_len: usize) -> Result<(), DecodeError> {
        let len = value.chars().count();
        if len > max_len {
            return Err(DecodeError::new(
                self.field(name),
                format!("is {len} characters long; the limit is {max_len}"),
            ));
        }
        Ok(())
    }

    /// A required identifier: non-empty, bounded, free of control characters.
    fn id(&self, name: &str, max_len: usize) -> Result<String, DecodeError> {
        let value = self.required_str(name)?;
        self.within(name, value, max_len)?;
        if value.chars().any(char::is_control) {
            return Err(DecodeError::new(
                self.field(name),
                "must not contain control characters",
            ));
        }
        Ok(value.to_owned())
    }

    fn object(&self, name: &str) -> Result<Fields<'a>, DecodeError> {
        match self.optional(name) {
            None => Err(DecodeError::new(self.field(name), "is missing")),
            Some(Value::Object(obj)) => Ok(Fields {
                obj,
                path: self.field(name),
            }),
            Some(other) => Err(DecodeError::new(
                self.field(name),
                format!("must be an object, got {}", json_type(other)),
            )),
        }
    }

    fn source(&self, calendar: CalendarKey) -> Result<SourceKey, DecodeError> {
        Ok(SourceKey {
            calendar,
            source_type: self.id("sourceType", MAX_TYPE_LEN)?,
            source_id: self.id("sourceId", MAX_ID_LEN)?,
        })
    }

    fn event_details(&self) -> Result<EventDetails, DecodeError> {
        let title = self.required_str("title")?.to_owned();
        self.within("title", &title, MAX_TITLE_LEN)?;
        let description = self.optional_str("description")?.map(str::to_owned);
        if let Some(d) = &description {
            self.within("description", d, MAX_DESCRIPTION_LEN)?;
        }
        let is_all_day = match self.optional("isAllDay") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(DecodeError::new(
                    self.field("isAllDay"),
                    format!("must be a boolean, got {}", json_type(other)),
                ));
            }
        };
        let time_zone = match self.optional_str("timeZone")? {
            None => None,
            Some(tz) => {
                chrono_tz::Tz::from_str(tz).map_err(|_| {
                    DecodeError::new(
                        self.field("timeZone"),
                        format!("{} is not an IANA time zone", quote(tz)),
                    )
                })?;
                Some(tz.to_owned())
            }
        };
        let timing = if is_all_day {
            let first_day = self.day("start")?;
            let last_day = self.day("end")?;
            if last_day.checked_add_days(chrono::Days::new(1)).is_none() {
                return Err(DecodeError::new(self.field("end"), "date is out of range"));
            }
            if last_day < first_day {
                return Err(DecodeError::new(
                    self.field("end"),
                    format!("{last_day} is before event.start {first_day}"),
                ));
            }
            EventTiming::AllDay {
                first_day,
                last_day,
            }
        } else {
            let start = self.timestamp("start")?;
            let end = self.timestamp("end")?;
            if end <= start {
                return Err(DecodeError::new(
                    self.field("end"),
                    format!(
                        "{} must be after event.start {}",
                        end.to_rfc3339(),
                        start.to_rfc3339()
                    ),
                ));
            }
            EventTiming::Timed { start, end }
        };
        Ok(EventDetails {
            options: self.event_options()?,
            title,
            description,
            timing,
            time_zone,
        })
    }

    /// The optional fields of an event (see [`EventOptions`]).
    fn event_options(&self) -> Result<EventOptions, DecodeError> {
        let location = self.optional_str("location")?.map(str::to_owned);
        let url = self.optional_str("url")?.map(str::to_owned);
        let url_title = self.optional_str("urlTitle")?.map(str::to_owned);
        let transparency = self.choice(
            "transparency",
            &[
                ("opaque", Transparency::Opaque),
                ("transparent", Transparency::Transparent),
            ],
        )?;
        let visibility = self.choice(
            "visibility",
            &[
                ("default", Visibility::Default),
                ("public", Visibility::Public),
                ("private", Visibility::Private),
                ("confidential", Visibility::Confidential),
            ],
        )?;
        let reminders = match self.optional("reminders") {
            None => None,
            Some(_) => Some(self.object("reminders")?.reminders()?),
        };
        let options = EventOptions {
            location,
            url,
            url_title,
            transparency,
            visibility,
            color_id: self.color_id("colorId")?,
            reminders,
        };
        // Lengths, the URL and Google's reminder rules: the checks a
        // configured default goes through too.
        options
            .validate()
            .map_err(|e| DecodeError::new(self.field(&e.field), e.message))?;
        Ok(options)
    }

    /// One of a fixed set of strings.
    fn choice<T: Copy>(&self, name: &str, choices: &[(&str, T)]) -> Result<Option<T>, DecodeError> {
        let expected = || {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
            match names.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            }
        };
        match self.optional(name) {
            None => Ok(None),
            Some(Value::String(s)) => choices
                .iter()
                .find(|(n, _)| n == s)
                .map(|(_, v)| Some(*v))
                .ok_or_else(|| {
                    DecodeError::new(
                        self.field(name),
                        format!("expected {}, got {}", expected(), quote(s)),
                    )
                }),
            Some(other) => Err(DecodeError::new(
                self.field(name),
                format!("expected {}, got {}", expected(), json_type(other)),
            )),
        }
    }

    /// A palette colour: `"1"` to `"11"`, or the number.
    fn color_id(&self, name: &str) -> Result<Option<ColorId>, DecodeError> {
        let bad = |shown: String| {
            DecodeError::new(
                self.field(name),
                format!(
                    "expected a colour of Google's event palette, \"1\" to \"11\", got {shown}"
                ),
            )
        };
        match self.optional(name) {
            None => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| bad(quote(s))),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .and_then(ColorId::new)
                .map(Some)
                .ok_or_else(|| bad(n.to_string())),
            Some(other) => Err(bad(json_type(other).to_owned())),
        }
    }

    /// `{"useDefault": true}` or `{"useDefault": false, "overrides": [...]}`.
    fn reminders(&self) -> Result<Reminders, DecodeError> {
        let use_default = match self.optional("useDefault") {
            Some(Value::Bool(b)) => *b,
            None => return Err(DecodeError::new(self.field("useDefault"), "is missing")),
            Some(other) => {
                return Err(DecodeError::new(
                    self.field("useDefault"),
                    format!("must be a boolean, got {}", json_type(other)),
                ));
            }
        };
        let items = match self.optional("overrides") {
            None => &[][..],
            Some(Value::Array(items)) => items.as_slice(),
            Some(other) => {
                return Err(DecodeError::new(
                    self.field("overrides"),
                    format!("must be an array, got {}", json_type(other)),
                ));
            }
        };
        let mut overrides = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", self.field("overrides"));
            let Value::Object(obj) = item else {
                return Err(DecodeError::new(
                    path,
                    format!("must be an object, got {}", json_type(item)),
                ));
            };
            overrides.push(Fields { obj, path }.reminder_override()?);
        }
        Ok(Reminders {
            use_default,
            overrides,
        })
    }

    fn reminder_override(&self) -> Result<ReminderOverride, DecodeError> {
        let method = self
            .choice(
                "method",
                &[
                    ("popup", ReminderMethod::Popup),
                    ("email", ReminderMethod::Email),
                ],
            )?
            .ok_or_else(|| DecodeError::new(self.field("method"), "is missing"))?;
        let minutes = match self.optional("minutes") {
            None => return Err(DecodeError::new(self.field("minutes"), "is missing")),
            Some(Value::Number(n)) => {
                n.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        DecodeError::new(
                            self.field("minutes"),
                            format!("{n} is not a whole number in 0..={MAX_REMINDER_MINUTES}"),
                        )
                    })?
            }
            Some(other) => {
                return Err(DecodeError::new(
                    self.field("minutes"),
                    format!("must be a number, got {}", json_type(other)),
                ));
            }
        };
        Ok(ReminderOverride { method, minutes })
    }

    fn timestamp(&self, name: &str) -> Result<DateTime<FixedOffset>, DecodeError> {
        let raw = self.required_str(name)?;
        DateTime::parse_from_rfc3339(raw).map_err(|e| {
            DecodeError::new(
                self.field(name),
                format!("{} is not an RFC 3339 timestamp ({e})", quote(raw)),
            )
        })
    }

    /// An all-day boundary: a date, or a timestamp whose date (as written) counts.
    fn day(&self, name: &str) -> Result<NaiveDate, DecodeError> {
        let raw = self.required_str(name)?;
        if let Ok(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
            return Ok(day);
        }
        DateTime::parse_from_rfc3339(raw)
            .map(|t| t.date_naive())
            .map_err(|_| {
                DecodeError::new(
                    self.field(name),
                    format!(
                        "{} is neither a date (YYYY-MM-DD) nor an RFC 3339 timestamp",
                        quote(raw)
                    ),
                )
            })
    }
}

/// The names an [`EventOptions`] has in a payload: the only keys a defaults
/// file may use.
const OPTION_FIELDS: &[&str] = &[
    "location",
    "url",
    "urlTitle",
    "transparency",
    "visibility",
    "colorId",
    "reminders",
];

/// Decodes `{"EVENT_TYPE": {<optional event fields>}, ...}` (see
/// [`EventDefaults::from_json`]).
pub(crate) fn decode_event_defaults(value: &Value) -> Result<EventDefaults, DecodeError> {
    let Value::Object(types) = value else {
        return Err(DecodeError::new(
            "defaults",
            format!(
                "must be an object of eventType to fields, got {}",
                json_type(value)
            ),
        ));
    };
    let mut defaults = EventDefaults::default();
    for (event_type, fields) in types {
        if event_type.trim().is_empty() || event_type.chars().count() > MAX_TYPE_LEN {
            return Err(DecodeError::new(
                quote(event_type),
                format!("an eventType must have 1 to {MAX_TYPE_LEN} characters"),
            ));
        }
        let Value::Object(obj) = fields else {
            return Err(DecodeError::new(
                event_type.clone(),
                format!("must be an object, got {}", json_type(fields)),
            ));
        };
        if let Some(unknown) = obj.keys().find(|k| !OPTION_FIELDS.contains(&k.as_str())) {
            return Err(DecodeError::new(
                format!("{event_type}.{unknown}"),
                format!(
                    "is not a field defaults may set ({})",
                    OPTION_FIELDS.join(", ")
                ),
            ));
        }
        let options = Fields {
            obj,
            path: event_type.clone(),
        }
        .event_options()?;
        defaults.by_event_type.insert(event_type.clone(), options);
    }
    Ok(defaults)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Quotes a producer's value for an error message, cut short so that a huge or
/// hostile value cannot bloat `last_error`.
fn quote(value: &str) -> String {
    const MAX: usize = 64;
    let mut shown: String = value.chars().take(MAX).collect();
    if value.chars().count() > MAX {
        shown.push('…');
    }
    format!("{shown:?}")
}
