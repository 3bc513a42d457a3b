//! A [`Calendar`] wrapper that records when the engine calls the calendar, for
//! which source, and how the call ended: the engine's side of every latency and
//! calls-per-change figure.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use calendar_sync::{
    Calendar, CalendarError, CalendarKey, EventBody, EventPage, PROP_SOURCE_ID, RemoteEvent,
};

/// One call as the engine made it.
#[derive(Debug, Clone)]
pub struct ProbeCall {
    /// `insert`, `update`, `delete` or `list`.
    pub method: &'static str,
    /// The event id.
    pub event_id: String,
    /// The source (from the body's private properties; none for delete and list).
    pub source_id: Option<String>,
    /// When the engine called.
    pub at: Instant,
}

/// Wraps a calendar; clones share the calendar and the log.
pub struct Probe<C> {
    inner: Arc<C>,
    log: Arc<Mutex<Vec<ProbeCall>>>,
}

impl<C> Clone for Probe<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            log: self.log.clone(),
        }
    }
}

impl<C: Calendar> Probe<C> {
    /// Wraps `inner`.
    pub fn new(inner: C) -> Self {
        Self {
            inner: Arc::new(inner),
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<ProbeCall> {
        self.log.lock().expect("probe log").clone()
    }

    /// Forgets the calls so far.
    pub fn clear(&self) {
        self.log.lock().expect("probe log").clear();
    }

    fn record(&self, method: &'static str, event_id: &str, body: Option<&EventBody>, at: Instant) {
        let source_id = body.and_then(|b| b.private_properties.get(PROP_SOURCE_ID).cloned());
        self.log.lock().expect("probe log").push(ProbeCall {
            method,
            event_id: event_id.to_owned(),
            source_id,
            at,
        });
    }
}

impl<C: Calendar> Calendar for Probe<C> {
    async fn insert_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
        body: &EventBody,
    ) -> Result<RemoteEvent, CalendarError> {
        let at = Instant::now();
        let result = self.inner.insert_event(target, event_id, body).await;
        self.record("insert", event_id, Some(body), at);
        result
    }

    async fn update_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
        body: &EventBody,
        if_match: Option<&str>,
    ) -> Result<RemoteEvent, CalendarError> {
        let at = Instant::now();
        let result = self
            .inner
            .update_event(target, event_id, body, if_match)
            .await;
        self.record("update", event_id, Some(body), at);
        result
    }

    async fn delete_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
        if_match: Option<&str>,
    ) -> Result<(), CalendarError> {
        let at = Instant::now();
        let result = self.inner.delete_event(target, event_id, if_match).await;
        self.record("delete", event_id, None, at);
        result
    }

    async fn get_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
    ) -> Result<RemoteEvent, CalendarError> {
        let at = Instant::now();
        let result = self.inner.get_event(target, event_id).await;
        self.record("get", event_id, None, at);
        result
    }

    async fn calendar_exists(&self, target: &CalendarKey) -> Result<bool, CalendarError> {
        let at = Instant::now();
        let result = self.inner.calendar_exists(target).await;
        self.record("calendar_get", "", None, at);
        result
    }

    async fn list_events(
        &self,
        target: &CalendarKey,
        property: (&str, &str),
        page_token: Option<&str>,
    ) -> Result<EventPage, CalendarError> {
        let at = Instant::now();
        let result = self.inner.list_events(target, property, page_token).await;
        self.record("list", "", None, at);
        result
    }
}
