//! An in-memory calendar implementing the engine's [`Calendar`] trait, with
//! Google's semantics that matter to the engine (ids stay taken after delete,
//! 409 on a taken id, 410 on a second delete) and fault injection.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calendar_sync::{
    Calendar, CalendarError, CalendarErrorKind, CalendarKey, EventBody, EventPage, PROP_WORKSPACE,
    RemoteEvent,
};

/// One call the engine made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `insert`, `update`, `delete`, `get`, `calendar_get` or `list`.
    pub method: &'static str,
    /// Calendar id.
    pub calendar: String,
    /// Event id (empty for list).
    pub event_id: String,
    /// Title sent, for writes with a body.
    pub summary: Option<String>,
}

/// What an injected fault does.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this error.
    Fail(CalendarError),
    /// Panic inside the call.
    Panic,
    /// Never answer.
    Hang,
    /// Apply the write, then report a transient failure (the reply was lost).
    LoseReply,
}

struct Injected {
    method: Option<&'static str>,
    remaining: usize,
    fault: Fault,
}

struct Stored {
    body: EventBody,
    cancelled: bool,
    version: u64,
}

#[derive(Default)]
struct State {
    events: HashMap<(String, String), Stored>,
    missing_calendars: HashSet<String>,
    faults: Vec<Injected>,
    calls: Vec<Call>,
    latency: Duration,
    active: HashMap<String, usize>,
    max_parallel_per_event: usize,
    restore_on_update: bool,
    page_size: usize,
    version: u64,
    budget: Option<calendar_sync::Budget>,
}

/// The in-memory calendar. Clones share state.
#[derive(Clone)]
pub struct MemoryCalendar {
    state: Arc<Mutex<State>>,
}

impl Default for MemoryCalendar {
    fn default() -> Self {
        let state = State {
            page_size: 3,
            ..State::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }
}

impl MemoryCalendar {
    /// A calendar where every calendar id exists.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory calendar state")
    }

    /// Makes calls to this calendar id answer 404.
    pub fn remove_calendar(&self, calendar: &str) {
        self.state().missing_calendars.insert(calendar.to_owned());
    }

    /// How many events one list page holds.
    pub fn set_page_size(&self, size: usize) {
        self.state().page_size = size.max(1);
    }

    /// Makes the drainer pay every call from the shared budget
    /// (`calendar_sync_budget`), as it does for Google.
    pub fn set_budget(&self, budget: calendar_sync::Budget) {
        self.state().budget = Some(budget);
    }

    /// Delay before every call answers.
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// Whether updating a cancelled event restores it (Google: unconfirmed).
    pub fn set_restore_on_update(&self, restore: bool) {
        self.state().restore_on_update = restore;
    }

    /// The next `times` calls of `method` (any method if `None`) suffer `fault`.
    pub fn inject(&self, method: Option<&'static str>, times: usize, fault: Fault) {
        self.state().faults.push(Injected {
            method,
            remaining: times,
            fault,
        });
    }

    /// Removes all pending faults.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Number of insert, update and delete calls so far.
    pub fn write_calls(&self) -> usize {
        self.state()
            .calls
            .iter()
            .filter(|c| matches!(c.method, "insert" | "update" | "delete"))
            .count()
    }

    /// The most calls that were ever in flight at once for one event id.
    pub fn max_parallel_per_event(&self) -> usize {
        self.state().max_parallel_per_event
    }

    /// Live (not cancelled) events of a calendar: (id, body).
    pub fn live_events(&self, calendar: &str) -> Vec<(String, EventBody)> {
        let mut events: Vec<_> = self
            .state()
            .events
            .iter()
            .filter(|((cal, _), e)| cal == calendar && !e.cancelled)
            .map(|((_, id), e)| (id.clone(), e.body.clone()))
            .collect();
        events.sort_by(|a, b| a.0.cmp(&b.0));
        events
    }

    /// Live events of one source (by its private extended property).
    pub fn live_for_source(&self, calendar: &str, source_id: &str) -> Vec<(String, EventBody)> {
        self.live_events(calendar)
            .into_iter()
            .filter(|(_, body)| {
                body.private_properties
                    .get(calendar_sync::PROP_SOURCE_ID)
                    .map(String::as_str)
                    == Some(source_id)
            })
            .collect()
    }

    /// A person deletes the event in Google's UI.
    pub fn delete_by_hand(&self, calendar: &str, id: &str) {
        if let Some(e) = self
            .state()
            .events
            .get_mut(&(calendar.to_owned(), id.to_owned()))
        {
            e.cancelled = true;
        }
    }

    /// A person edits the event's title in Google's UI.
    pub fn edit_by_hand(&self, calendar: &str, id: &str, summary: &str) {
        let mut state = self.state();
        state.version += 1;
        let version = state.version;
        if let Some(e) = state.events.get_mut(&(calendar.to_owned(), id.to_owned())) {
            e.body.summary = summary.to_owned();
            e.version = version;
        }
    }

    /// An event appears that nothing in the bindings accounts for.
    pub fn create_by_hand(&self, calendar: &str, id: &str, body: EventBody) {
        let mut state = self.state();
        state.version += 1;
        let version = state.version;
        state.events.insert(
            (calendar.to_owned(), id.to_owned()),
            Stored {
                body,
                cancelled: false,
                version,
            },
        );
    }

    /// Logs the call, applies latency and faults, and tracks parallelism.
    async fn enter(
        &self,
        method: &'static str,
        target: &CalendarKey,
        event_id: &str,
        summary: Option<&str>,
    ) -> Result<Option<Fault>, CalendarError> {
        let (latency, fault) = {
            let mut state = self.state();
            state.calls.push(Call {
                method,
                calendar: target.calendar_id.clone(),
                event_id: event_id.to_owned(),
                summary: summary.map(str::to_owned),
            });
            let active = state.active.entry(event_id.to_owned()).or_default();
            *active += 1;
            let now_active = *active;
            if !event_id.is_empty() {
                state.max_parallel_per_event = state.max_parallel_per_event.max(now_active);
            }
            let fault = state
                .faults
                .iter_mut()
                .find(|f| f.remaining > 0 && f.method.is_none_or(|m| m == method))
                .map(|f| {
                    f.remaining -= 1;
                    f.fault.clone()
                });
            (state.latency, fault)
        };
        let _guard = ActiveGuard {
            calendar: self.clone(),
            event_id: event_id.to_owned(),
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if self.state().missing_calendars.contains(&target.calendar_id) {
            return Err(CalendarError::new(
                CalendarErrorKind::NotFound,
                "google_404_notFound",
                format!("calendar {} not found", target.calendar_id),
            ));
        }
        match fault {
            Some(Fault::Fail(e)) => Err(e),
            Some(Fault::Panic) => panic!("injected panic in {method}"),
            Some(Fault::Hang) => std::future::pending().await,
            other => Ok(other),
        }
    }

    fn lost_reply() -> CalendarError {
        CalendarError::new(
            CalendarErrorKind::Transient,
            "network",
            "connection reset before the reply",
        )
    }

    fn remote(id: &str, stored: &Stored) -> RemoteEvent {
        RemoteEvent {
            id: id.to_owned(),
            etag: Some(format!("\"{}\"", stored.version)),
            cancelled: stored.cancelled,
            body: Some(stored.body.clone()),
            html_link: None,
        }
    }
}

struct ActiveGuard {
    calendar: MemoryCalendar,
    event_id: String,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if let Ok(mut state) = self.calendar.state.lock()
            && let Some(n) = state.active.get_mut(&self.event_id)
        {
            *n -= 1;
        }
    }
}

/// 412 when `if_match` names another version than the stored one.
fn check_if_match(stored: &Stored, if_match: Option<&str>) -> Result<(), CalendarError> {
    match if_match {
        Some(etag) if etag != format!("\"{}\"", stored.version) => Err(CalendarError::new(
            CalendarErrorKind::Conflict,
            "google_412_conditionNotMet",
            "Precondition Failed",
        )),
        _ => Ok(()),
    }
}

fn not_found(id: &str) -> CalendarError {
    CalendarError::new(
        CalendarErrorKind::NotFound,
        "google_404_notFound",
        format!("event {id} not found"),
    )
}

impl Calendar for MemoryCalendar {
    fn budget(&self) -> Option<calendar_sync::Budget> {
        self.state().budget
    }

    async fn insert_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
        body: &EventBody,
    ) -> Result<RemoteEvent, CalendarError> {
        let fault = self
            .enter("insert", target, event_id, Some(&body.summary))
            .await?;
        let mut state = self.state();
        let key = (target.calendar_id.clone(), event_id.to_owned());
        if state.events.contains_key(&key) {
            return Err(CalendarError::new(
                CalendarErrorKind::Duplicate,
                "google_409_duplicate",
                "The requested identifier already exists.",
            ));
        }
        state.version += 1;
        let stored = Stored {
            body: body.clone(),
            cancelled: false,
            version: state.version,
        };
        let remote = Self::remote(event_id, &stored);
        state.events.insert(key, stored);
        match fault {
            Some(Fault::LoseReply) => Err(Self::lost_reply()),
            _ => Ok(remote),
        }
    }

    async fn update_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
        body: &EventBody,
        if_match: Option<&str>,
    ) -> Result<RemoteEvent, CalendarError> {
        let fault = self
            .enter("update", target, event_id, Some(&body.summary))
            .await?;
        let mut state = self.state();
        state.version += 1;
        let version = state.version;
        let restore = state.restore_on_update;
        let stored = state
            .events
            .get_mut(&(target.calendar_id.clone(), event_id.to_owned()))
            .ok_or_else(|| not_found(event_id))?;
        check_if_match(stored, if_match)?;
        stored.body = body.clone();
        stored.version = version;
        if restore {
            stored.cancelled = false;
        }
        let remote = Self::remote(event_id, stored);
        match fault {
            Some(Fault::LoseReply) => Err(Self::lost_reply()),
            _ => Ok(remote),
        }
    }

    async fn delete_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
        if_match: Option<&str>,
    ) -> Result<(), CalendarError> {
        let fault = self.enter("delete", target, event_id, None).await?;
        let mut state = self.state();
        state.version += 1;
        let version = state.version;
        let stored = state
            .events
            .get_mut(&(target.calendar_id.clone(), event_id.to_owned()))
            .ok_or_else(|| not_found(event_id))?;
        check_if_match(stored, if_match)?;
        if stored.cancelled {
            return Err(CalendarError::new(
                CalendarErrorKind::Gone,
                "google_410_deleted",
                "Resource has been deleted",
            ));
        }
        stored.cancelled = true;
        stored.version = version;
        match fault {
            Some(Fault::LoseReply) => Err(Self::lost_reply()),
            _ => Ok(()),
        }
    }

    async fn get_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
    ) -> Result<RemoteEvent, CalendarError> {
        self.enter("get", target, event_id, None).await?;
        let state = self.state();
        let stored = state
            .events
            .get(&(target.calendar_id.clone(), event_id.to_owned()))
            .ok_or_else(|| not_found(event_id))?;
        Ok(Self::remote(event_id, stored))
    }

    async fn calendar_exists(&self, target: &CalendarKey) -> Result<bool, CalendarError> {
        match self.enter("calendar_get", target, "", None).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind == CalendarErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn list_events(
        &self,
        target: &CalendarKey,
        property: (&str, &str),
        page_token: Option<&str>,
    ) -> Result<EventPage, CalendarError> {
        self.enter("list", target, "", None).await?;
        let state = self.state();
        let mut matching: Vec<RemoteEvent> = state
            .events
            .iter()
            .filter(|((cal, _), e)| {
                cal == &target.calendar_id
                    && !e.cancelled
                    && e.body
                        .private_properties
                        .get(property.0)
                        .map(String::as_str)
                        == Some(property.1)
            })
            .map(|((_, id), e)| Self::remote(id, e))
            .collect();
        matching.sort_by(|a, b| a.id.cmp(&b.id));
        let start: usize = page_token.and_then(|t| t.parse().ok()).unwrap_or(0);
        let end = (start + state.page_size).min(matching.len());
        let next_page_token = (end < matching.len()).then(|| end.to_string());
        debug_assert_eq!(property.0, PROP_WORKSPACE);
        Ok(EventPage {
            events: matching[start.min(end)..end].to_vec(),
            next_page_token,
        })
    }
}
