//! Event resource rules: id format, start/end validation, extended-property limits, read-only
//! fields, patch merging (fact sheet §2, §4).

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::errors::ApiError;

/// Longest extended-property key kept; longer keys are silently dropped.
pub const MAX_EXT_KEY_CHARS: usize = 44;
/// Longest extended-property value; longer values are silently truncated.
pub const MAX_EXT_VALUE_CHARS: usize = 1024;
/// Most extended properties (private + shared) per event.
pub const MAX_EXT_PROPERTIES: usize = 300;
/// Largest total size of extended properties (keys + values, bytes) per event.
pub const MAX_EXT_TOTAL_BYTES: usize = 32 * 1024;

/// Fields the server owns: ignored when a client sends them.
pub(crate) const READ_ONLY: &[&str] = &[
    "kind",
    "etag",
    "id",
    "created",
    "updated",
    "htmlLink",
    "creator",
    "organizer",
    "iCalUID",
    "hangoutLink",
    "privateCopy",
    "locked",
];

/// RFC 3339 with milliseconds and `Z`, as Google writes `created`/`updated`.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `^[a-v0-9]{5,1024}$`.
pub fn is_valid_event_id(id: &str) -> bool {
    (5..=1024).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
}

/// A random 26-character base32hex id, like Google's generated ids.
pub(crate) fn generate_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    let mut rng = rand::rng();
    (0..26)
        .map(|_| ALPHABET[rng.random_range(0..32)] as char)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum When {
    Date(NaiveDate),
    /// Instants; a `dateTime` without offset but with `timeZone` is read as UTC (the fake has
    /// no time zone database), which is close enough for ordering checks.
    Instant(DateTime<Utc>),
}

fn parse_when(v: Option<&Value>, which: &str) -> Result<Option<When>, ApiError> {
    let Some(Value::Object(o)) = v else {
        return Ok(None);
    };
    if let Some(dt) = o.get("dateTime").and_then(Value::as_str) {
        if let Ok(t) = DateTime::parse_from_rfc3339(dt) {
            return Ok(Some(When::Instant(t.with_timezone(&Utc))));
        }
        let naive = NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S%.f")
            .map_err(|_| ApiError::invalid(&format!("Invalid {which} time.")))?;
        if o.get("timeZone").and_then(Value::as_str).is_none() {
            return Err(ApiError::required(&format!(
                "Missing time zone definition for {which} time."
            )));
        }
        return Ok(Some(When::Instant(naive.and_utc())));
    }
    if let Some(d) = o.get("date").and_then(Value::as_str) {
        let d = NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|_| ApiError::invalid(&format!("Invalid {which} time.")))?;
        return Ok(Some(When::Date(d)));
    }
    Ok(None)
}

/// Checks `start`/`end`: present, same kind (date vs dateTime), end after start.
pub(crate) fn check_times(ev: &Map<String, Value>) -> Result<(), ApiError> {
    let end =
        parse_when(ev.get("end"), "end")?.ok_or_else(|| ApiError::required("Missing end time."))?;
    let start = parse_when(ev.get("start"), "start")?
        .ok_or_else(|| ApiError::required("Missing start time."))?;
    match (start, end) {
        (When::Date(_), When::Date(_)) | (When::Instant(_), When::Instant(_)) => {}
        _ => {
            return Err(ApiError::invalid(
                "Start and end times must either both be date or both be dateTime.",
            ));
        }
    }
    if end <= start {
        return Err(ApiError::time_range_empty("end"));
    }
    Ok(())
}

/// Google's event palette: `colorId` "1" to "11" (colors.get, `event` section).
pub const EVENT_COLOR_IDS: std::ops::RangeInclusive<u8> = 1..=11;
/// Most reminder overrides per event.
pub const MAX_REMINDER_OVERRIDES: usize = 5;
/// Latest reminder, in minutes before the start (four weeks).
pub const MAX_REMINDER_MINUTES: i64 = 40_320;

/// Checks the optional fields Google validates: `colorId` in the palette,
/// `transparency`, `visibility`, `source.url` (http or https), and
/// `reminders` (at most 5 overrides of popup or email, 0 to 40320 minutes, none
/// with `useDefault`). The reasons and texts of these 400s are UNCONFIRMED
/// beyond "The maximum number of override reminders is 5" (the reference).
pub(crate) fn check_fields(ev: &Map<String, Value>) -> Result<(), ApiError> {
    let invalid = |field: &str| Err(ApiError::invalid(&format!("Invalid value for: {field}")));
    if let Some(color) = ev.get("colorId").filter(|v| !v.is_null()) {
        let in_palette = color
            .as_str()
            .and_then(|c| c.parse::<u8>().ok())
            .is_some_and(|c| EVENT_COLOR_IDS.contains(&c));
        if !in_palette {
            return invalid("colorId");
        }
    }
    let one_of = |field: &str, allowed: &[&str]| match ev.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
        Some(_) => invalid(field),
    };
    one_of("transparency", &["opaque", "transparent"])?;
    one_of(
        "visibility",
        &["default", "public", "private", "confidential"],
    )?;
    if let Some(url) = ev.get("source").and_then(|s| s.get("url")) {
        let http = url.as_str().is_some_and(|u| {
            let lower = u.to_ascii_lowercase();
            lower.starts_with("http://") || lower.starts_with("https://")
        });
        if !http {
            return invalid("source.url");
        }
    }
    check_reminders(ev.get("reminders"))
}

fn check_reminders(reminders: Option<&Value>) -> Result<(), ApiError> {
    let Some(Value::Object(r)) = reminders else {
        return Ok(());
    };
    let overrides = match r.get("overrides") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(o)) => o,
        Some(_) => return Err(ApiError::invalid("Invalid value for: reminders.overrides")),
    };
    if overrides.len() > MAX_REMINDER_OVERRIDES {
        return Err(ApiError::invalid(
            "The maximum number of override reminders is 5.",
        ));
    }
    if r.get("useDefault").and_then(Value::as_bool) == Some(true) && !overrides.is_empty() {
        return Err(ApiError::bad_request(
            "Cannot specify both default reminders and overrides at the same time.",
        ));
    }
    for o in overrides {
        let method_ok = matches!(
            o.get("method").and_then(Value::as_str),
            Some("popup" | "email")
        );
        let minutes_ok = o
            .get("minutes")
            .and_then(Value::as_i64)
            .is_some_and(|m| (0..=MAX_REMINDER_MINUTES).contains(&m));
        if !method_ok || !minutes_ok {
            return Err(ApiError::invalid("Invalid value for: reminders.overrides"));
        }
    }
    Ok(())
}

/// The event's [start, end) as instants (dates at UTC midnight), for timeMin/timeMax.
pub(crate) fn span(ev: &Map<String, Value>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let inst = |w: When| match w {
        When::Date(d) => d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()),
        When::Instant(t) => Some(t),
    };
    let s = inst(parse_when(ev.get("start"), "start").ok()??)?;
    let e = inst(parse_when(ev.get("end"), "end").ok()??)?;
    Some((s, e))
}

/// Applies Google's extended-property limits in place: drops keys over 44 characters, truncates
/// values over 1024 characters, then rejects more than 300 properties or more than 32 kB.
/// Non-string values are rejected (400 `invalid`).
pub(crate) fn normalize_ext_props(ev: &mut Map<String, Value>) -> Result<(), ApiError> {
    let Some(ep) = ev.get_mut("extendedProperties") else {
        return Ok(());
    };
    let Value::Object(ep) = ep else {
        return Err(ApiError::invalid("Invalid value for: extendedProperties"));
    };
    let (mut count, mut bytes) = (0usize, 0usize);
    for kind in ["private", "shared"] {
        let Some(m) = ep.get_mut(kind) else { continue };
        let Value::Object(m) = m else {
            return Err(ApiError::invalid(&format!(
                "Invalid value for: extendedProperties.{kind}"
            )));
        };
        m.retain(|k, v| !v.is_null() && k.chars().count() <= MAX_EXT_KEY_CHARS);
        for (k, v) in m.iter_mut() {
            let Value::String(s) = v else {
                return Err(ApiError::invalid(&format!(
                    "Invalid value for: extendedProperties.{kind}.{k}"
                )));
            };
            if s.chars().count() > MAX_EXT_VALUE_CHARS {
                *s = s.chars().take(MAX_EXT_VALUE_CHARS).collect();
            }
            count += 1;
            bytes += k.len() + s.len();
        }
    }
    if count > MAX_EXT_PROPERTIES || bytes > MAX_EXT_TOTAL_BYTES {
        // Google documents the limit, not the error: reason and text are UNCONFIRMED.
        return Err(ApiError::invalid(
            "The event's extended properties exceed the limit of 300 properties totaling 32kB.",
        ));
    }
    Ok(())
}

/// Removes read-only fields from a client body.
pub(crate) fn strip_read_only(body: &mut Map<String, Value>) {
    for f in READ_ONLY {
        body.remove(*f);
    }
}

/// Patch semantics: objects merge recursively, `null` deletes, arrays and scalars replace;
/// `start`/`end` are replaced whole (so a patch can switch date <-> dateTime).
pub(crate) fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) if k != "start" && k != "end" => match target.get_mut(k) {
                Some(Value::Object(t)) => merge_patch(t, p),
                _ => {
                    let mut t = Map::new();
                    merge_patch(&mut t, p);
                    target.insert(k.clone(), Value::Object(t));
                }
            },
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The private extended properties of an event (empty map if none).
pub(crate) fn ext_props<'a>(
    ev: &'a Map<String, Value>,
    kind: &str,
) -> Option<&'a Map<String, Value>> {
    ev.get("extendedProperties")?.get(kind)?.as_object()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn optional_fields_google_refuses() {
        let popup = |minutes: i64| json!({"method": "popup", "minutes": minutes});
        let ok = obj(json!({
            "colorId": "11", "transparency": "transparent", "visibility": "private",
            "source": {"url": "https://app.example/t/1", "title": "Task"},
            "reminders": {"useDefault": false, "overrides": [popup(0), popup(40320)]},
        }));
        assert!(check_fields(&ok).is_ok());
        for bad in [
            json!({"colorId": "12"}),
            json!({"colorId": "0"}),
            json!({"colorId": 5}),
            json!({"transparency": "busy"}),
            json!({"visibility": "secret"}),
            json!({"source": {"url": "ftp://x.example"}}),
            json!({"reminders": {"useDefault": false, "overrides": [popup(1), popup(2), popup(3), popup(4), popup(5), popup(6)]}}),
            json!({"reminders": {"useDefault": false, "overrides": [popup(40321)]}}),
            json!({"reminders": {"useDefault": false, "overrides": [{"method": "sms", "minutes": 5}]}}),
            json!({"reminders": {"useDefault": true, "overrides": [popup(5)]}}),
        ] {
            let error = check_fields(&obj(bad.clone())).unwrap_err();
            assert_eq!(error.status, 400, "{bad}");
        }
    }

    #[test]
    fn ids() {
        assert!(is_valid_event_id("abcde"));
        assert!(is_valid_event_id(&generate_id()));
        assert!(!is_valid_event_id("abcd"));
        assert!(!is_valid_event_id("abcdw"));
        assert!(!is_valid_event_id("ABCDE"));
        assert!(!is_valid_event_id("abc-de"));
        assert!(!is_valid_event_id(&"a".repeat(1025)));
    }

    #[test]
    fn times() {
        let ok = obj(json!({"start":{"date":"2024-01-01"},"end":{"date":"2024-01-02"}}));
        assert!(check_times(&ok).is_ok());
        let same = obj(json!({"start":{"date":"2024-01-01"},"end":{"date":"2024-01-01"}}));
        assert_eq!(check_times(&same).unwrap_err().reason, "timeRangeEmpty");
        let mixed =
            obj(json!({"start":{"date":"2024-01-01"},"end":{"dateTime":"2024-01-02T00:00:00Z"}}));
        assert_eq!(check_times(&mixed).unwrap_err().status, 400);
        let no_end = obj(json!({"start":{"date":"2024-01-01"},"end":{}}));
        assert_eq!(
            check_times(&no_end).unwrap_err().message,
            "Missing end time."
        );
        let tz = obj(
            json!({"start":{"dateTime":"2024-01-01T10:00:00","timeZone":"Europe/Zurich"},
            "end":{"dateTime":"2024-01-01T12:00:00+01:00"}}),
        );
        assert!(check_times(&tz).is_ok());
    }

    #[test]
    fn ext_limits() {
        let long_key = "k".repeat(45);
        let mut ev = obj(json!({"extendedProperties":{"private":{
            long_key.clone(): "x", "ok": "v".repeat(2000)}}}));
        normalize_ext_props(&mut ev).unwrap();
        let p = ext_props(&ev, "private").unwrap();
        assert!(p.get(&long_key).is_none());
        assert_eq!(p["ok"].as_str().unwrap().len(), 1024);
        let many: Map<String, Value> = (0..301).map(|i| (format!("k{i}"), json!("v"))).collect();
        let mut ev = obj(json!({"extendedProperties":{"shared": many}}));
        assert!(normalize_ext_props(&mut ev).is_err());
    }

    #[test]
    fn patch_merge() {
        let mut t = obj(
            json!({"summary":"a","extendedProperties":{"private":{"x":"1","y":"2"}},
            "start":{"date":"2024-01-01"}}),
        );
        let p = obj(json!({"extendedProperties":{"private":{"x":null,"z":"3"}},
            "start":{"dateTime":"2024-01-01T10:00:00Z"}, "summary": null}));
        merge_patch(&mut t, &p);
        assert_eq!(
            t,
            obj(json!({"extendedProperties":{"private":{"y":"2","z":"3"}},
                "start":{"dateTime":"2024-01-01T10:00:00Z"}}))
        );
    }
}
