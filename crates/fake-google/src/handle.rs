//! [`FakeGoogle`]: the test's handle on one running fake.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::errors::ErrorShape;
use crate::event::generate_id;
use crate::faults::Fault;
use crate::log::{ApiMethod, RecordedRequest};
use crate::oauth::DEFAULT_SCOPE;
use crate::quota::QuotaConfig;
use crate::server::serve;
use crate::state::{Shared, State};
use crate::switches::{CancelledWritePolicy, ExtPropMatch, PagingMode, Settings};

/// Stops the server when the last handle clone is dropped.
#[derive(Debug)]
struct Guard {
    tx: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.tx.send(true);
    }
}

/// Handle on a running fake. Cheap to clone (`Arc` inside), `Send + Sync`; the server stops on
/// [`FakeGoogle::shutdown`] or when the last clone is dropped. Instances are independent.
#[derive(Debug, Clone)]
pub struct FakeGoogle {
    shared: Arc<Shared>,
    guard: Arc<Guard>,
    addr: SocketAddr,
}

impl FakeGoogle {
    /// Starts a fake on `127.0.0.1:0` (a free port). Panics if it cannot bind.
    /// Must be called inside a Tokio runtime.
    pub async fn start() -> FakeGoogle {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("fake-google: bind 127.0.0.1:0")
    }

    /// Starts a fake on `addr`.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<FakeGoogle> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(rx));
        let task = tokio::spawn(serve(listener, shared.clone()));
        tracing::debug!(%addr, "fake-google started");
        Ok(FakeGoogle {
            shared,
            guard: Arc::new(Guard {
                tx,
                task: Mutex::new(Some(task)),
            }),
            addr,
        })
    }

    /// Stops accepting, closes every connection (hung requests included) and waits for the
    /// accept loop to end. Other clones then see a dead server.
    pub async fn shutdown(&self) {
        let _ = self.guard.tx.send(true);
        let task = self.guard.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.lock()
    }

    // ---- URLs ----

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Root URL, `http://127.0.0.1:PORT/` (for `CalendarHub::root_url`).
    pub fn root_url(&self) -> String {
        format!("http://{}/", self.addr)
    }
    /// `http://127.0.0.1:PORT/calendar/v3/` (for `CalendarHub::base_url`).
    pub fn calendar_base_url(&self) -> String {
        format!("http://{}/calendar/v3/", self.addr)
    }
    /// `http://127.0.0.1:PORT/token`.
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }
    /// `http://127.0.0.1:PORT/_fake/` (admin API, see the crate docs).
    pub fn admin_url(&self) -> String {
        format!("http://{}/_fake/", self.addr)
    }

    // ---- OAuth ----

    /// Registers an OAuth client.
    pub fn add_client(&self, client_id: &str, client_secret: &str) {
        self.st().oauth.add_client(client_id, client_secret);
    }
    /// Registers a refresh token for `client_id` and `user_email`, scope [`DEFAULT_SCOPE`].
    pub fn add_refresh_token(&self, token: &str, client_id: &str, user_email: &str) {
        self.add_refresh_token_with_scope(token, client_id, user_email, DEFAULT_SCOPE);
    }
    /// Registers a refresh token with explicit (space-separated) scopes.
    pub fn add_refresh_token_with_scope(
        &self,
        token: &str,
        client_id: &str,
        user_email: &str,
        scope: &str,
    ) {
        self.st()
            .oauth
            .add_refresh_token(token, client_id, user_email, scope);
    }
    /// Revokes a refresh token (next refresh: 400 `invalid_grant`) and the access tokens
    /// issued from it (next Calendar call: 401).
    pub fn revoke_refresh_token(&self, token: &str) {
        self.st().oauth.revoke(token);
    }
    /// The next successful refresh with `token` returns a new `refresh_token`; `token` is then
    /// revoked.
    pub fn rotate_on_next_refresh(&self, token: &str) {
        self.st().oauth.rotate_next(token);
    }
    /// The refresh token that replaced `old` by rotation, if any.
    pub fn rotated_refresh_token(&self, old: &str) -> Option<String> {
        self.st().oauth.rotations.get(old).cloned()
    }
    /// Issues an access token for a (valid) refresh token without a token endpoint call.
    pub fn issue_access_token(&self, refresh_token: &str) -> Option<String> {
        let mut st = self.st();
        let life = st.settings.access_token_lifetime;
        st.oauth.mint(refresh_token, life)
    }
    /// Expires every access token issued so far (later ones are fresh).
    pub fn expire_access_tokens(&self) {
        self.st().oauth.expire_all();
    }
    /// Lifetime (and `expires_in`) of access tokens issued from now on. Default 3599 s.
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        self.st().settings.access_token_lifetime = lifetime;
    }
    /// Token endpoint requests that named this refresh token (successful or not).
    pub fn token_refresh_count(&self, refresh_token: &str) -> u64 {
        self.st()
            .oauth
            .refresh_counts
            .get(refresh_token)
            .copied()
            .unwrap_or(0)
    }
    /// All token endpoint requests that reached the grant logic (not faulted).
    pub fn token_request_count(&self) -> u64 {
        self.st().oauth.token_requests
    }

    // ---- calendars and events ----

    /// Registers a calendar (idempotent). Unregistered calendars answer 404.
    pub fn add_calendar(&self, calendar_id: &str) {
        self.st().store.add_calendar(calendar_id);
    }
    /// Makes `primary` mean `calendar_id` for callers whose email is not a calendar.
    pub fn set_primary(&self, calendar_id: &str) {
        let mut st = self.st();
        st.store.add_calendar(calendar_id);
        st.store.primary = Some(calendar_id.to_string());
    }
    /// Every event of a calendar in insertion order, cancelled ones included (empty if the
    /// calendar is unknown).
    pub fn events(&self, calendar_id: &str) -> Vec<Value> {
        self.st()
            .store
            .calendars
            .get(calendar_id)
            .map(|c| {
                c.events
                    .iter()
                    .map(|e| Value::Object(e.body.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Events whose status is not `cancelled`.
    pub fn live_events(&self, calendar_id: &str) -> Vec<Value> {
        self.events(calendar_id)
            .into_iter()
            .filter(|e| e["status"] != "cancelled")
            .collect()
    }
    /// One event, cancelled or not.
    pub fn event(&self, calendar_id: &str, event_id: &str) -> Option<Value> {
        self.st()
            .store
            .get(calendar_id, event_id)
            .ok()
            .map(|e| Value::Object(e.body.clone()))
    }

    // ---- a human in the Google UI ----

    /// A human deletes the event (status `cancelled`, new etag). False if unknown.
    pub fn human_delete(&self, calendar_id: &str, event_id: &str) -> bool {
        self.st().store.human_delete(calendar_id, event_id)
    }
    /// A human edits the event: `edit` may change any field; etag and `updated` advance.
    /// False if unknown.
    pub fn human_edit(
        &self,
        calendar_id: &str,
        event_id: &str,
        edit: impl FnOnce(&mut Map<String, Value>),
    ) -> bool {
        self.st().store.human_edit(calendar_id, event_id, edit)
    }
    /// Creates an event directly, without validation (e.g. an orphan carrying our extended
    /// properties). Uses `event["id"]` if present, else a generated id. Returns the stored
    /// event. Registers the calendar if needed.
    pub fn create_event(&self, calendar_id: &str, event: Value) -> Value {
        let mut body = match event {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let id = body
            .remove("id")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(generate_id);
        let ical = body
            .remove("iCalUID")
            .and_then(|v| v.as_str().map(str::to_string));
        self.st()
            .store
            .create(calendar_id, id, ical, body, calendar_id)
    }
    /// Removes an event for good (Google eventually forgets cancelled events).
    pub fn purge_event(&self, calendar_id: &str, event_id: &str) -> bool {
        self.st().store.purge(calendar_id, event_id)
    }
    /// Every sync token issued so far answers 410 `fullSyncRequired`.
    pub fn invalidate_sync_tokens(&self) {
        self.st().store.sync_epoch += 1;
    }

    // ---- faults and timing ----

    /// Queues a fault (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.st().faults.push(fault);
    }
    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.st().faults.clear();
    }
    /// Fault uses still queued.
    pub fn pending_faults(&self) -> u32 {
        self.st().faults.remaining()
    }
    /// Delay before answering every request.
    pub fn set_latency(&self, latency: Duration) {
        self.st().settings.latency = latency;
    }
    /// Delay for one HTTP method (e.g. `"POST"`), replacing the global one.
    pub fn set_method_latency(&self, method: &str, latency: Duration) {
        self.st()
            .settings
            .method_latency
            .insert(method.to_ascii_uppercase(), latency);
    }

    // ---- switches ----

    /// Current switches.
    pub fn settings(&self) -> Settings {
        self.st().settings.clone()
    }
    /// Changes switches in one go.
    pub fn update_settings(&self, f: impl FnOnce(&mut Settings)) {
        f(&mut self.st().settings);
    }
    /// See [`CancelledWritePolicy`] (default `Restore`).
    pub fn set_cancelled_write_policy(&self, p: CancelledWritePolicy) {
        self.st().settings.cancelled_write = p;
    }
    /// See [`ExtPropMatch`] (default `All`).
    pub fn set_ext_prop_match(&self, m: ExtPropMatch) {
        self.st().settings.ext_prop_match = m;
    }
    /// See [`PagingMode`] (default `Exact`).
    pub fn set_paging(&self, p: PagingMode) {
        self.st().settings.paging = p;
    }
    /// Most items per events.list page, whatever `maxResults` asks (default `None`: as asked,
    /// up to 2,500).
    pub fn set_max_page_size(&self, max: Option<usize>) {
        self.st().settings.max_page_size = max;
    }
    /// See [`ErrorShape`] (default `Legacy`).
    pub fn set_error_shape(&self, s: ErrorShape) {
        self.st().settings.error_shape = s;
    }
    /// Status of a successful delete (default 204; must be 2xx to make sense).
    pub fn set_delete_status(&self, status: u16) {
        self.st().settings.delete_status = status;
    }
    /// Whether the batch endpoint exists (default `true`; `false`: 404 with an HTML body).
    pub fn set_batch_endpoint(&self, enabled: bool) {
        self.st().settings.batch_endpoint = enabled;
    }
    /// Turns quota enforcement on (`Some`) or off (`None`, default).
    pub fn set_quota(&self, q: Option<QuotaConfig>) {
        self.st().settings.quota = q;
    }

    // ---- observation ----

    /// The request log (Calendar and token calls; admin calls are not logged).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.st().log.entries.clone()
    }
    /// Empties the request log (counters are kept).
    pub fn clear_requests(&self) {
        self.st().log.clear();
    }
    /// Requests routed to this method so far (faulted ones included).
    pub fn calls(&self, method: ApiMethod) -> u64 {
        self.st().log.calls.get(&method).copied().unwrap_or(0)
    }
    /// Requests rejected by the quota switch.
    pub fn quota_rejections(&self) -> u64 {
        self.st().quota.rejections
    }

    /// TCP connections accepted since the start (HTTP/1.1 clients open one per request
    /// they send at the same time, and keep them for reuse).
    pub fn connections_accepted(&self) -> u64 {
        self.shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
