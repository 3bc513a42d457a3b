//! events.list: filters (extended properties, showDeleted, updatedMin, timeMin/timeMax,
//! iCalUID), paging (maxResults, pageToken; optionally erratic pages) and sync tokens.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::errors::ApiError;
use crate::event::{ext_props, rfc3339, span};
use crate::store::{Store, StoredEvent};
use crate::switches::{ExtPropMatch, PagingMode};

/// Default `maxResults`.
pub const DEFAULT_MAX_RESULTS: usize = 250;
/// Largest `maxResults` honoured; larger values are capped.
pub const MAX_MAX_RESULTS: usize = 2500;

#[derive(Debug, Default)]
pub(crate) struct ListQuery {
    max_results: usize,
    page_token: Option<String>,
    show_deleted: Option<bool>,
    private: Vec<(String, String)>,
    shared: Vec<(String, String)>,
    updated_min: Option<DateTime<Utc>>,
    sync_token: Option<String>,
    ical_uid: Option<String>,
    time_min: Option<DateTime<Utc>>,
    time_max: Option<DateTime<Utc>>,
}

fn parse_time(name: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::bad_request(&format!("Bad Request: invalid {name}")))
}

fn parse_constraint(v: &str) -> Result<(String, String), ApiError> {
    v.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| ApiError::bad_request("Invalid extended property constraint"))
}

impl ListQuery {
    /// Holds pages to at most `cap` items (at least 1), whatever `maxResults` asked.
    pub(crate) fn cap_page(&mut self, cap: Option<usize>) {
        if let Some(cap) = cap {
            self.max_results = self.max_results.min(cap.max(1));
        }
    }

    pub(crate) fn parse(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut q = ListQuery {
            max_results: DEFAULT_MAX_RESULTS,
            ..Default::default()
        };
        for (k, v) in pairs {
            match k.as_str() {
                "maxResults" => {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| ApiError::invalid(&format!("Invalid value '{v}'.")))?;
                    if n < 1 {
                        return Err(ApiError::invalid(&format!(
                            "Invalid value '{v}'. Values must be within the range: [1, 2500]"
                        )));
                    }
                    q.max_results =
                        usize::try_from(n).map_or(MAX_MAX_RESULTS, |n| n.min(MAX_MAX_RESULTS));
                }
                "pageToken" => q.page_token = Some(v.clone()),
                "showDeleted" => q.show_deleted = Some(v == "true"),
                "privateExtendedProperty" => q.private.push(parse_constraint(v)?),
                "sharedExtendedProperty" => q.shared.push(parse_constraint(v)?),
                "updatedMin" => q.updated_min = Some(parse_time(k, v)?),
                "timeMin" => q.time_min = Some(parse_time(k, v)?),
                "timeMax" => q.time_max = Some(parse_time(k, v)?),
                "syncToken" => q.sync_token = Some(v.clone()),
                "iCalUID" => q.ical_uid = Some(v.clone()),
                _ => {}
            }
        }
        if let (Some(a), Some(b)) = (q.time_min, q.time_max)
            && a >= b
        {
            return Err(ApiError::time_range_empty("timeMax"));
        }
        if q.sync_token.is_some()
            && (!q.private.is_empty()
                || !q.shared.is_empty()
                || q.updated_min.is_some()
                || q.time_min.is_some()
                || q.time_max.is_some()
                || q.ical_uid.is_some()
                || q.show_deleted == Some(false))
        {
            return Err(ApiError::invalid(
                "The syncToken parameter cannot be combined with the other filters given.",
            ));
        }
        Ok(q)
    }
}

fn encode(s: String) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn decode(s: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    String::from_utf8(raw).ok()
}

/// Page token: page number, offset into the filtered list, write sequence when paging began.
fn parse_page_token(t: &str) -> Option<(usize, usize, u64)> {
    let s = decode(t)?;
    let mut it = s.strip_prefix("page:")?.split(':');
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

/// Sync token: epoch and write sequence.
fn parse_sync_token(t: &str) -> Option<(u64, u64)> {
    let s = decode(t)?;
    let (e, q) = s.strip_prefix("sync:")?.split_once(':')?;
    Some((e.parse().ok()?, q.parse().ok()?))
}

fn matches_props(
    ev: &StoredEvent,
    kind: &str,
    cons: &[(String, String)],
    mode: ExtPropMatch,
) -> bool {
    if cons.is_empty() {
        return true;
    }
    let props = ext_props(&ev.body, kind);
    let one = |(k, v): &(String, String)| {
        props.and_then(|p| p.get(k)).and_then(Value::as_str) == Some(v.as_str())
    };
    match mode {
        ExtPropMatch::All => cons.iter().all(one),
        ExtPropMatch::Any => cons.iter().any(one),
    }
}

/// Whether a listing that began at write sequence `snapshot` counts the
/// event. An event cancelled after the listing began keeps its place (see
/// [`hidden`]), so that the pages after it skip nothing.
fn selected(
    ev: &StoredEvent,
    q: &ListQuery,
    mode: ExtPropMatch,
    since: Option<u64>,
    snapshot: u64,
) -> bool {
    if let Some(seq) = since {
        return ev.write_seq > seq;
    }
    if let Some(min) = q.updated_min {
        if ev.updated < min {
            return false;
        }
    } else if ev.is_cancelled() && !q.show_deleted.unwrap_or(false) && ev.write_seq <= snapshot {
        return false;
    }
    if let Some(uid) = &q.ical_uid
        && ev.body.get("iCalUID").and_then(Value::as_str) != Some(uid.as_str())
    {
        return false;
    }
    if q.time_min.is_some() || q.time_max.is_some() {
        let Some((s, e)) = span(&ev.body) else {
            return false;
        };
        if q.time_min.is_some_and(|t| e <= t) || q.time_max.is_some_and(|t| s >= t) {
            return false;
        }
    }
    matches_props(ev, "private", &q.private, mode) && matches_props(ev, "shared", &q.shared, mode)
}

/// A place holder: cancelled after the listing began, in a listing that
/// shows no deleted events.
fn hidden(ev: &StoredEvent, q: &ListQuery, since: Option<u64>) -> bool {
    since.is_none()
        && q.updated_min.is_none()
        && ev.is_cancelled()
        && !q.show_deleted.unwrap_or(false)
}

/// An event as a listing shows it: of a cancelled event an incremental
/// listing keeps only what Google guarantees (its id and status).
fn listed(event: &StoredEvent, incremental: bool) -> Value {
    if incremental && event.is_cancelled() {
        let keep = ["kind", "etag", "id", "status"];
        let minimal = event
            .body
            .iter()
            .filter(|(name, _)| keep.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        return Value::Object(minimal);
    }
    Value::Object(event.body.clone())
}

/// Runs events.list on calendar `cal` (already resolved).
pub(crate) fn list(
    store: &Store,
    cal: &str,
    q: &ListQuery,
    paging: PagingMode,
    ext_match: ExtPropMatch,
) -> Result<Value, ApiError> {
    let calendar = store.calendars.get(cal).ok_or_else(ApiError::not_found)?;
    let since = match &q.sync_token {
        None => None,
        Some(t) => match parse_sync_token(t) {
            Some((epoch, seq)) if epoch == store.sync_epoch => Some(seq),
            _ => return Err(ApiError::full_sync_required()),
        },
    };
    let (page_no, offset, snapshot) = match &q.page_token {
        None => (0, 0, store.write_seq),
        Some(t) => {
            parse_page_token(t).ok_or_else(|| ApiError::invalid("Invalid page token value."))?
        }
    };
    let matching: Vec<&StoredEvent> = calendar
        .events
        .iter()
        .filter(|e| selected(e, q, ext_match, since, snapshot))
        .collect();
    let max = q.max_results;
    let take = match paging {
        PagingMode::Exact => max,
        PagingMode::Erratic => [0, 1, (max / 2).max(1), max][page_no % 4],
    };
    let start = offset.min(matching.len());
    let end = (start + take).min(matching.len());
    let items: Vec<Value> = matching[start..end]
        .iter()
        .filter(|e| !hidden(e, q, since))
        .map(|e| listed(e, since.is_some()))
        .collect();
    let more = end < matching.len() || (paging == PagingMode::Erratic && end > start);
    let mut out = json!({
        "kind": "calendar#events",
        "etag": format!("\"p{}\"", store.write_seq),
        "summary": cal,
        "description": "",
        "updated": rfc3339(
            calendar.events.iter().map(|e| e.updated).max().unwrap_or_else(Utc::now)
        ),
        "timeZone": "UTC",
        "accessRole": "owner",
        "defaultReminders": [],
        "items": items,
    });
    if more {
        out["nextPageToken"] = json!(encode(format!("page:{}:{}:{}", page_no + 1, end, snapshot)));
    } else {
        out["nextSyncToken"] = json!(encode(format!("sync:{}:{}", store.sync_epoch, snapshot)));
    }
    Ok(out)
}
