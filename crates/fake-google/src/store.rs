//! In-memory calendars and the event write operations: insert, get, update (PUT), patch,
//! delete, plus the "human in the Google UI" edits. events.list lives in [`crate::list`].

use std::collections::HashMap;

use base64::Engine;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{Map, Value, json};

use crate::errors::ApiError;
use crate::event::{
    check_fields, check_times, generate_id, is_valid_event_id, merge_patch, normalize_ext_props,
    rfc3339, strip_read_only,
};
use crate::switches::CancelledWritePolicy;

/// One stored event: its JSON resource plus bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub body: Map<String, Value>,
    /// Store-wide sequence number of the last write (for sync tokens).
    pub write_seq: u64,
    pub updated: DateTime<Utc>,
}

impl StoredEvent {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.body.get("status").and_then(Value::as_str) == Some("cancelled")
    }
    fn etag(&self) -> &str {
        self.body.get("etag").and_then(Value::as_str).unwrap_or("")
    }
}

/// One calendar: events in insertion order.
#[derive(Debug, Default)]
pub(crate) struct Calendar {
    pub events: Vec<StoredEvent>,
    index: HashMap<String, usize>,
}

impl Calendar {
    fn find(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }
}

/// All calendars of one fake.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub calendars: HashMap<String, Calendar>,
    /// Calendar that `primary` means when the caller's email is not itself a calendar.
    pub primary: Option<String>,
    etag_seq: u64,
    pub write_seq: u64,
    last_updated: Option<DateTime<Utc>>,
    /// Bumped by `invalidate_sync_tokens`; sync tokens of an older epoch answer 410.
    pub sync_epoch: u64,
}

/// Preconditions a write carries.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteCtx<'a> {
    pub if_match: Option<&'a str>,
    pub cancelled_policy: CancelledWritePolicy,
}

fn check_if_match(ev: &StoredEvent, if_match: Option<&str>) -> Result<(), ApiError> {
    match if_match {
        None => Ok(()),
        Some(m) if m.trim() == "*" => Ok(()),
        Some(m) if m.split(',').any(|t| t.trim() == ev.etag()) => Ok(()),
        Some(_) => Err(ApiError::condition_not_met()),
    }
}

fn as_object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request("Parse Error")),
    }
}

impl Store {
    pub(crate) fn add_calendar(&mut self, id: &str) {
        self.calendars.entry(id.to_string()).or_default();
    }

    /// Resolves `primary` (the caller's own calendar if registered under their email, else the
    /// configured alias) and checks the calendar exists (404 `notFound` otherwise).
    pub(crate) fn resolve(&self, cal: &str, user: Option<&str>) -> Result<String, ApiError> {
        let id = if cal == "primary" {
            match user {
                Some(u) if self.calendars.contains_key(u) => u.to_string(),
                _ => self.primary.clone().ok_or_else(ApiError::not_found)?,
            }
        } else {
            cal.to_string()
        };
        if self.calendars.contains_key(&id) {
            Ok(id)
        } else {
            Err(ApiError::not_found())
        }
    }

    fn cal_mut(&mut self, cal: &str) -> Result<&mut Calendar, ApiError> {
        self.calendars.get_mut(cal).ok_or_else(ApiError::not_found)
    }

    /// Gives `ev` a new etag, `updated` time and write sequence number.
    fn stamp(&mut self, body: &mut Map<String, Value>) -> (DateTime<Utc>, u64) {
        // Millisecond precision (as rendered), strictly increasing per fake.
        let t = Utc::now();
        let mut now = DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t);
        if let Some(last) = self.last_updated
            && now <= last
        {
            now = last + ChronoDuration::milliseconds(1);
        }
        self.last_updated = Some(now);
        let base = u64::try_from(now.timestamp_micros()).unwrap_or(0);
        self.etag_seq = (self.etag_seq + 1).max(base);
        self.write_seq += 1;
        body.insert("etag".into(), json!(format!("\"{}\"", self.etag_seq)));
        body.insert("updated".into(), json!(rfc3339(now)));
        (now, self.write_seq)
    }

    /// events.insert.
    pub(crate) fn insert(&mut self, cal: &str, body: Value, user: &str) -> Result<Value, ApiError> {
        let mut body = as_object(body)?;
        let id = body.get("id").and_then(Value::as_str).map(str::to_string);
        let ical = body
            .get("iCalUID")
            .and_then(Value::as_str)
            .map(str::to_string);
        if id.is_some() && ical.is_some() {
            return Err(ApiError::invalid_id());
        }
        if id.as_deref().is_some_and(|id| !is_valid_event_id(id)) {
            return Err(ApiError::invalid_id());
        }
        check_times(&body)?;
        check_fields(&body)?;
        normalize_ext_props(&mut body)?;
        let calendar = self.cal_mut(cal)?;
        if id.as_deref().is_some_and(|id| calendar.find(id).is_some()) {
            return Err(ApiError::duplicate());
        }
        let id = id.unwrap_or_else(generate_id);
        strip_read_only(&mut body);
        Ok(self.create(cal, id, ical, body, user))
    }

    /// Stores a new event without validation (used by insert and by `create_orphan`).
    pub(crate) fn create(
        &mut self,
        cal: &str,
        id: String,
        ical: Option<String>,
        mut body: Map<String, Value>,
        user: &str,
    ) -> Value {
        let eid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{id} {cal}"));
        let (now, seq) = self.stamp(&mut body);
        body.insert("kind".into(), json!("calendar#event"));
        body.insert("id".into(), json!(id));
        body.entry("status").or_insert(json!("confirmed"));
        body.insert(
            "htmlLink".into(),
            json!(format!("https://www.google.com/calendar/event?eid={eid}")),
        );
        body.insert("created".into(), json!(rfc3339(now)));
        body.insert("creator".into(), json!({ "email": user }));
        body.insert("organizer".into(), json!({ "email": cal, "self": true }));
        body.insert(
            "iCalUID".into(),
            json!(ical.unwrap_or_else(|| format!("{id}@google.com"))),
        );
        body.entry("sequence").or_insert(json!(0));
        body.entry("reminders")
            .or_insert(json!({ "useDefault": true }));
        body.entry("eventType").or_insert(json!("default"));
        let out = Value::Object(body.clone());
        let calendar = self.calendars.entry(cal.to_string()).or_default();
        calendar.index.insert(id, calendar.events.len());
        calendar.events.push(StoredEvent {
            body,
            write_seq: seq,
            updated: now,
        });
        out
    }

    /// events.get (live and cancelled events alike).
    pub(crate) fn get(&self, cal: &str, id: &str) -> Result<&StoredEvent, ApiError> {
        let calendar = self.calendars.get(cal).ok_or_else(ApiError::not_found)?;
        let i = calendar.find(id).ok_or_else(ApiError::not_found)?;
        Ok(&calendar.events[i])
    }

    /// Finds the event for a PUT/PATCH and applies If-Match and the cancelled-event policy.
    /// Returns its index and whether it was cancelled.
    fn prepare_write(
        &mut self,
        cal: &str,
        id: &str,
        ctx: &WriteCtx,
    ) -> Result<(usize, bool), ApiError> {
        let calendar = self.cal_mut(cal)?;
        let i = calendar.find(id).ok_or_else(ApiError::not_found)?;
        let ev = &calendar.events[i];
        check_if_match(ev, ctx.if_match)?;
        let cancelled = ev.is_cancelled();
        if cancelled {
            match ctx.cancelled_policy {
                CancelledWritePolicy::Forbidden => return Err(ApiError::forbidden()),
                CancelledWritePolicy::NotFound => return Err(ApiError::not_found()),
                _ => {}
            }
        }
        Ok((i, cancelled))
    }

    /// Validates and stores the new version of an event.
    fn commit(
        &mut self,
        cal: &str,
        i: usize,
        mut new: Map<String, Value>,
        was_cancelled: bool,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        check_times(&new)?;
        check_fields(&new)?;
        normalize_ext_props(&mut new)?;
        if was_cancelled {
            match ctx.cancelled_policy {
                CancelledWritePolicy::Restore
                    if new.get("status").and_then(Value::as_str) != Some("tentative") =>
                {
                    new.insert("status".into(), json!("confirmed"));
                }
                CancelledWritePolicy::KeepCancelled => {
                    new.insert("status".into(), json!("cancelled"));
                }
                _ => {}
            }
        }
        let old = self.calendars[cal].events[i].body.clone();
        for f in [
            "kind",
            "id",
            "created",
            "htmlLink",
            "creator",
            "organizer",
            "iCalUID",
        ] {
            if let Some(v) = old.get(f) {
                new.insert(f.to_string(), v.clone());
            }
        }
        let old_seq = old.get("sequence").and_then(Value::as_i64).unwrap_or(0);
        let seq = new
            .get("sequence")
            .and_then(Value::as_i64)
            .unwrap_or(old_seq)
            .max(old_seq);
        new.insert("sequence".into(), json!(seq));
        new.entry("status").or_insert(json!("confirmed"));
        new.entry("eventType").or_insert(json!("default"));
        let (now, wseq) = self.stamp(&mut new);
        let ev = &mut self.cal_mut(cal)?.events[i];
        ev.body = new;
        ev.updated = now;
        ev.write_seq = wseq;
        Ok(Value::Object(ev.body.clone()))
    }

    /// events.update (PUT): replaces the whole resource except server-owned fields.
    pub(crate) fn update(
        &mut self,
        cal: &str,
        id: &str,
        body: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let mut body = as_object(body)?;
        let (i, cancelled) = self.prepare_write(cal, id, ctx)?;
        strip_read_only(&mut body);
        if !body.contains_key("reminders") {
            body.insert("reminders".into(), json!({ "useDefault": true }));
        }
        self.commit(cal, i, body, cancelled, ctx)
    }

    /// events.patch: merges the body into the stored resource.
    pub(crate) fn patch(
        &mut self,
        cal: &str,
        id: &str,
        body: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let mut body = as_object(body)?;
        let (i, cancelled) = self.prepare_write(cal, id, ctx)?;
        strip_read_only(&mut body);
        let mut merged = self.calendars[cal].events[i].body.clone();
        merge_patch(&mut merged, &body);
        self.commit(cal, i, merged, cancelled, ctx)
    }

    /// events.delete: live -> cancelled; cancelled -> 410; unknown -> 404.
    pub(crate) fn delete(
        &mut self,
        cal: &str,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), ApiError> {
        let calendar = self.cal_mut(cal)?;
        let i = calendar.find(id).ok_or_else(ApiError::not_found)?;
        let ev = &calendar.events[i];
        check_if_match(ev, if_match)?;
        if ev.is_cancelled() {
            return Err(ApiError::deleted());
        }
        self.set_cancelled(cal, i);
        Ok(())
    }

    fn set_cancelled(&mut self, cal: &str, i: usize) {
        let mut body = self.calendars[cal].events[i].body.clone();
        body.insert("status".into(), json!("cancelled"));
        let (now, seq) = self.stamp(&mut body);
        let ev = &mut self.calendars.get_mut(cal).expect("checked").events[i];
        ev.body = body;
        ev.updated = now;
        ev.write_seq = seq;
    }

    /// A human deletes the event in the Google UI (status `cancelled`). False if unknown.
    pub(crate) fn human_delete(&mut self, cal: &str, id: &str) -> bool {
        match self.calendars.get(cal).and_then(|c| c.find(id)) {
            Some(i) => {
                self.set_cancelled(cal, i);
                true
            }
            None => false,
        }
    }

    /// A human edits the event in the Google UI: `edit` changes the JSON freely; etag,
    /// `updated` and the write sequence advance. False if unknown.
    pub(crate) fn human_edit(
        &mut self,
        cal: &str,
        id: &str,
        edit: impl FnOnce(&mut Map<String, Value>),
    ) -> bool {
        let Some(i) = self.calendars.get(cal).and_then(|c| c.find(id)) else {
            return false;
        };
        let mut body = self.calendars[cal].events[i].body.clone();
        edit(&mut body);
        let (now, seq) = self.stamp(&mut body);
        let ev = &mut self.calendars.get_mut(cal).expect("checked").events[i];
        ev.body = body;
        ev.updated = now;
        ev.write_seq = seq;
        true
    }

    /// Removes an event for good, as Google eventually does with cancelled events.
    pub(crate) fn purge(&mut self, cal: &str, id: &str) -> bool {
        let Some(calendar) = self.calendars.get_mut(cal) else {
            return false;
        };
        let Some(i) = calendar.find(id) else {
            return false;
        };
        calendar.events.remove(i);
        calendar.index = calendar
            .events
            .iter()
            .enumerate()
            .filter_map(|(n, e)| Some((e.body.get("id")?.as_str()?.to_string(), n)))
            .collect();
        true
    }
}
