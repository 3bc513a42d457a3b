//! The optional fields of an event (location, link back, busy/free, privacy,
//! colour, reminders) and the per-`eventType` defaults an application sets
//! once. Producers write them in an UPSERT_EVENT's `event` object; the decoder
//! validates them against Google's limits so that a bad value dead-letters at
//! once instead of failing at Google on every retry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::operation::{DecodeError, MAX_TITLE_LEN};

/// Longest accepted `event.location`, in characters (Google documents no
/// limit; the same bound as the title keeps it well inside what it stores).
pub(crate) const MAX_LOCATION_LEN: usize = 1024;
/// Longest accepted `event.url`, in characters.
pub(crate) const MAX_URL_LEN: usize = 2048;
/// Google's limit on reminder overrides per event.
pub(crate) const MAX_REMINDER_OVERRIDES: usize = 5;
/// Google's latest reminder: four weeks before the event, in minutes.
pub(crate) const MAX_REMINDER_MINUTES: u32 = 40_320;

/// The optional fields of an event. Every field left `None` is not sent, so
/// Google keeps its own default (busy, the calendar's visibility and
/// reminders, no colour). Serialised in the payload's camelCase names, and
/// skipped when `None`, so that the content hash of an event without them is
/// the one earlier releases computed.
///
/// ```
/// use calendar_sync::{ColorId, EventOptions, ReminderMethod, ReminderOverride, Reminders, Transparency};
///
/// let deadline = EventOptions {
///     transparency: Some(Transparency::Transparent),
///     color_id: Some(ColorId::new(11).unwrap()),
///     reminders: Some(Reminders::overrides([ReminderOverride {
///         method: ReminderMethod::Popup,
///         minutes: 60,
///     }])),
///     ..EventOptions::default()
/// };
/// assert!(deadline.validate().is_ok());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventOptions {
    /// Free-form place (Google's `location`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Absolute http(s) link back to the source (Google's `source.url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The link's title (Google's `source.title`); the event's title when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_title: Option<String>,
    /// Busy or free (Google's `transparency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparency: Option<Transparency>,
    /// Who sees the details (Google's `visibility`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
    /// A colour of Google's event palette (Google's `colorId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color_id: Option<ColorId>,
    /// The calendar's default reminders, or up to 5 of the event's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminders: Option<Reminders>,
}

/// Whether the event blocks time (Google's `transparency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transparency {
    /// Busy (Google's default).
    Opaque,
    /// Free: the event does not block time.
    Transparent,
}

/// Who sees the event's details (Google's `visibility`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// The calendar's own visibility (Google's default).
    Default,
    /// Details visible to every reader of the calendar.
    Public,
    /// Details visible to attendees only.
    Private,
    /// Private; kept for compatibility with other clients.
    Confidential,
}

/// One of Google's event palette colours, `"1"` to `"11"`.
///
/// ```
/// use calendar_sync::ColorId;
///
/// assert_eq!(ColorId::new(11).unwrap().to_string(), "11");
/// assert!(ColorId::new(12).is_none());
/// assert!("0".parse::<ColorId>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ColorId(u8);

impl ColorId {
    /// Google's event palette has ids 1 to 11.
    pub const MAX: u8 = 11;

    /// The palette id `id`, if the palette has it.
    pub fn new(id: u8) -> Option<Self> {
        (1..=Self::MAX).contains(&id).then_some(Self(id))
    }

    /// The palette id.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl std::fmt::Display for ColorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for ColorId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<u8>().ok().and_then(Self::new).ok_or_else(|| {
            format!("{s:?} is not a colour of Google's event palette (\"1\" to \"11\")")
        })
    }
}

impl TryFrom<String> for ColorId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ColorId> for String {
    fn from(id: ColorId) -> Self {
        id.to_string()
    }
}

/// The event's reminders (Google's `reminders`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reminders {
    /// The calendar's default reminders; `overrides` must then be empty.
    pub use_default: bool,
    /// The event's own reminders (at most 5); none with `use_default: false`
    /// means no reminder at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<ReminderOverride>,
}

impl Reminders {
    /// The calendar's default reminders.
    pub fn calendar_default() -> Self {
        Self {
            use_default: true,
            overrides: Vec::new(),
        }
    }

    /// The event's own reminders instead of the calendar's.
    pub fn overrides(overrides: impl IntoIterator<Item = ReminderOverride>) -> Self {
        Self {
            use_default: false,
            overrides: overrides.into_iter().collect(),
        }
    }
}

/// One reminder of the event's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReminderOverride {
    /// How the reminder reaches the user.
    pub method: ReminderMethod,
    /// Minutes before the start, 0 to 40320 (four weeks).
    pub minutes: u32,
}

/// How a reminder reaches the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReminderMethod {
    /// A notification in the calendar's UI.
    Popup,
    /// An e-mail to the calendar's owner.
    Email,
}

impl EventOptions {
    /// Checks the lengths, the URL and Google's reminder rules, as the
    /// payload decoder does; the error's field is relative to the event
    /// object, in the payload's camelCase (`reminders.overrides`).
    pub fn validate(&self) -> Result<(), DecodeError> {
        let within = |field: &str, value: &Option<String>, max_len: usize| match value {
            Some(v) if v.chars().count() > max_len => Err(DecodeError::new(
                field,
                format!(
                    "is {} characters long; the limit is {max_len}",
                    v.chars().count()
                ),
            )),
            _ => Ok(()),
        };
        within("location", &self.location, MAX_LOCATION_LEN)?;
        within("url", &self.url, MAX_URL_LEN)?;
        within("urlTitle", &self.url_title, MAX_TITLE_LEN)?;
        if let Some(url) = &self.url {
            check_url(url).map_err(|message| DecodeError::new("url", message))?;
        }
        match &self.reminders {
            Some(reminders) => check_reminders(reminders),
            None => Ok(()),
        }
    }

    /// These options, each field left `None` taken from `defaults`: the
    /// producer's values win, field by field.
    pub fn or(self, defaults: &EventOptions) -> EventOptions {
        EventOptions {
            location: self.location.or_else(|| defaults.location.clone()),
            url: self.url.or_else(|| defaults.url.clone()),
            url_title: self.url_title.or_else(|| defaults.url_title.clone()),
            transparency: self.transparency.or(defaults.transparency),
            visibility: self.visibility.or(defaults.visibility),
            color_id: self.color_id.or(defaults.color_id),
            reminders: self.reminders.or_else(|| defaults.reminders.clone()),
        }
    }

    /// The options as the event body carries them, one spelling per meaning
    /// so that what Google reads back compares equal: Google's defaults
    /// (opaque, default visibility, the calendar's reminders, no location)
    /// become `None`, the link's title is resolved (`summary` unless given),
    /// and reminder overrides are sorted.
    pub(crate) fn canonical(self, summary: &str) -> EventOptions {
        let reminders = self.reminders.filter(|r| !r.use_default).map(|mut r| {
            r.overrides.sort();
            r
        });
        EventOptions {
            location: self.location.filter(|l| !l.is_empty()),
            url_title: self
                .url
                .as_ref()
                .map(|_| self.url_title.unwrap_or_else(|| summary.to_owned())),
            url: self.url,
            transparency: self.transparency.filter(|t| *t != Transparency::Opaque),
            visibility: self.visibility.filter(|v| *v != Visibility::Default),
            color_id: self.color_id,
            reminders,
        }
    }
}

/// An absolute http or https URL.
fn check_url(url: &str) -> Result<(), String> {
    let absolute = ["http://", "https://"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            && url.len() > scheme.len()
    });
    let host_start = url.find("://").map_or(0, |i| i + 3);
    let has_host = url[host_start..]
        .chars()
        .next()
        .is_some_and(|c| !matches!(c, '/' | '?' | '#'));
    if !absolute || !has_host || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("expected an absolute http or https URL".to_owned());
    }
    Ok(())
}

/// Google's reminder rules.
fn check_reminders(reminders: &Reminders) -> Result<(), DecodeError> {
    let overrides = &reminders.overrides;
    if reminders.use_default && !overrides.is_empty() {
        return Err(DecodeError::new(
            "reminders.overrides",
            "must be empty when useDefault is true",
        ));
    }
    if overrides.len() > MAX_REMINDER_OVERRIDES {
        return Err(DecodeError::new(
            "reminders.overrides",
            format!(
                "has {} reminders; Google allows at most {MAX_REMINDER_OVERRIDES}",
                overrides.len()
            ),
        ));
    }
    match overrides
        .iter()
        .position(|o| o.minutes > MAX_REMINDER_MINUTES)
    {
        Some(i) => Err(DecodeError::new(
            format!("reminders.overrides[{i}].minutes"),
            format!(
                "{} is outside 0..={MAX_REMINDER_MINUTES}",
                overrides[i].minutes
            ),
        )),
        None => Ok(()),
    }
}

/// Per-`eventType` defaults for the optional fields: an application says once
/// that every `BLOCKER_DEADLINE` is free time in colour 11 with a popup an
/// hour before. The producer's values win, field by field.
///
/// Defaults are merged into the event before its content hash is taken, so a
/// change of defaults rewrites each event of that type on its next upsert (or
/// at the next REBUILD_ALL), and never before.
///
/// ```
/// use calendar_sync::{EventDefaults, EventOptions, Transparency};
///
/// let defaults = EventDefaults::from_json(&serde_json::json!({
///     "BLOCKER_DEADLINE": { "transparency": "transparent", "colorId": "11" },
/// }))?;
/// let merged = defaults.apply("BLOCKER_DEADLINE", EventOptions::default());
/// assert_eq!(merged.transparency, Some(Transparency::Transparent));
/// assert_eq!(defaults.apply("MEETING", EventOptions::default()), EventOptions::default());
/// # Ok::<(), calendar_sync::DecodeError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventDefaults {
    /// The defaults of each eventType.
    pub by_event_type: BTreeMap<String, EventOptions>,
}

impl EventDefaults {
    /// Reads `{"EVENT_TYPE": {<optional event fields>}, ...}`, each field
    /// checked as in a payload; the error names the eventType and the field.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, crate::DecodeError> {
        crate::operation::decode_event_defaults(value)
    }

    /// `options` with the defaults of `event_type` filling its gaps.
    pub fn apply(&self, event_type: &str, options: EventOptions) -> EventOptions {
        match self.by_event_type.get(event_type) {
            Some(defaults) => options.or(defaults),
            None => options,
        }
    }

    /// Checks every eventType's defaults; the error's field starts with the
    /// eventType (`BLOCKER_DEADLINE.colorId`).
    pub fn validate(&self) -> Result<(), DecodeError> {
        for (event_type, options) in &self.by_event_type {
            options
                .validate()
                .map_err(|e| DecodeError::new(format!("{event_type}.{}", e.field), e.message))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_http_or_https() {
        for good in [
            "https://app.example/t/42",
            "HTTP://x.example",
            "http://x:8080/?a=b",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "app.example/t/42",
            "/t/42",
            "ftp://x.example",
            "javascript:alert(1)",
            "https://",
            "https:///path",
            "https://x.example/a b",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    /// What `Operation::to_payload` writes, the decoder reads back.
    #[test]
    fn every_field_round_trips_through_a_payload() {
        use crate::{CalendarKey, EventDetails, EventTiming, Operation, SourceKey, UpsertEvent};
        let day = chrono::NaiveDate::from_ymd_opt(2025, 1, 15).unwrap();
        let upsert = Operation::UpsertEvent(UpsertEvent {
            source: SourceKey {
                calendar: CalendarKey {
                    workspace_id: "w".into(),
                    calendar_id: "c".into(),
                },
                source_type: "task".into(),
                source_id: "1".into(),
            },
            event_type: "DEADLINE".into(),
            event: EventDetails {
                title: "Ship".into(),
                description: None,
                timing: EventTiming::AllDay {
                    first_day: day,
                    last_day: day,
                },
                time_zone: None,
                options: EventOptions {
                    location: Some("Room 4".into()),
                    url: Some("https://app.example/t/1".into()),
                    url_title: Some("Task 1".into()),
                    transparency: Some(Transparency::Transparent),
                    visibility: Some(Visibility::Confidential),
                    color_id: ColorId::new(7),
                    reminders: Some(Reminders::overrides([ReminderOverride {
                        method: ReminderMethod::Email,
                        minutes: 40_320,
                    }])),
                },
            },
        });
        let payload = upsert.to_payload();
        assert_eq!(payload["event"]["colorId"], "7");
        assert_eq!(Operation::decode("UPSERT_EVENT", &payload), Ok(upsert));
    }

    #[test]
    fn google_defaults_have_one_spelling() {
        let spelled_out = EventOptions {
            location: Some(String::new()),
            transparency: Some(Transparency::Opaque),
            visibility: Some(Visibility::Default),
            reminders: Some(Reminders::calendar_default()),
            ..EventOptions::default()
        };
        assert_eq!(spelled_out.canonical("Ship"), EventOptions::default());
    }

    #[test]
    fn a_link_without_title_takes_the_summary() {
        let options = EventOptions {
            url: Some("https://app.example/t/42".into()),
            ..EventOptions::default()
        };
        assert_eq!(options.canonical("Ship").url_title.as_deref(), Some("Ship"));
    }

    /// Defaults given as a struct skip the decoder: building the drainer
    /// checks them (a config error, not a dead letter per item).
    #[test]
    fn bad_defaults_are_a_config_error_naming_event_type_and_field() {
        let popup = ReminderOverride {
            method: ReminderMethod::Popup,
            minutes: 5,
        };
        let cases = [
            (
                EventOptions {
                    reminders: Some(Reminders::overrides([popup; 6])),
                    ..EventOptions::default()
                },
                "event_defaults.BLOCKER_DEADLINE.reminders.overrides: has 6 reminders",
            ),
            (
                EventOptions {
                    url: Some("app.example/t/1".into()),
                    ..EventOptions::default()
                },
                "event_defaults.BLOCKER_DEADLINE.url: expected an absolute http or https URL",
            ),
            (
                EventOptions {
                    reminders: Some(Reminders::overrides([ReminderOverride {
                        minutes: 40_321,
                        ..popup
                    }])),
                    ..EventOptions::default()
                },
                "event_defaults.BLOCKER_DEADLINE.reminders.overrides[0].minutes",
            ),
        ];
        for (options, expected) in cases {
            let config = crate::DrainerConfig {
                event_defaults: EventDefaults {
                    by_event_type: BTreeMap::from([("BLOCKER_DEADLINE".to_owned(), options)]),
                },
                ..crate::DrainerConfig::default()
            };
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(expected), "{expected:?} in {error:?}");
        }
    }
}
