//! The Google implementation of [`Calendar`], through the `google-calendar3`
//! client: per-workspace OAuth, a request timeout, quota limiters, a circuit
//! breaker per connection, and Google's errors classified by HTTP status and
//! `errors[0].reason` (never message text).

pub(crate) mod auth;
mod batch;
mod breaker;
pub(crate) mod budget;
pub(crate) mod evict;
mod fenced;
mod grouped;
pub(crate) mod versions;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use google_calendar3::CalendarHub;
use google_calendar3::api::{
    Event, EventDateTime, EventExtendedProperties, EventReminder, EventReminders,
    EventSource as GoogleEventSource,
};
use google_calendar3::common::{Delegate, Response, Retry};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::calendar::ResolvedCalendar;
use crate::calendar::{
    Calendar, CalendarError, CalendarErrorKind, ChangePage, EventBody, EventPage, EventTime,
    RemoteEvent,
};
use crate::crypto::TokenCipher;
use crate::db::Database;
use crate::engine::backoff::parse_retry_after;
use crate::error::Error;
use crate::event_options::{EventOptions, ReminderOverride, Reminders};
use crate::google::auth::{OAuthConfig, Tokens};
use crate::google::breaker::{Breakers, Change};
use crate::google::evict::IdleMap;
use crate::google::fenced::FencedCall;
use crate::google::grouped::{Grouper, PartOutcome};
use crate::minute_counts::{self, MinuteCounts, Sampling};
use crate::operation::CalendarKey;
use crate::store;
use budget::Budget;

/// Default `GOOGLE_CALENDAR_API_URL`.
pub const DEFAULT_CALENDAR_API_URL: &str = "https://www.googleapis.com/calendar/v3/";
/// Default `CALENDAR_SYNC_GOOGLE_BATCH_MAX`: off (see docs/benchmarks, "Google batch").
pub const DEFAULT_BATCH_MAX: usize = 0;
/// Default `GOOGLE_OAUTH_TOKEN_URL`.
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// How the drainer talks to Google: [`GoogleConfig::new`] gives the defaults
/// for an OAuth client; change what you need.
///
/// ```
/// use std::time::Duration;
/// use calendar_sync::GoogleConfig;
/// use secrecy::SecretString;
///
/// let google = GoogleConfig {
///     request_timeout: Duration::from_secs(10),
///     ..GoogleConfig::new("1234.apps.googleusercontent.com", SecretString::from("client-secret"))
/// };
/// assert_eq!(google.calendar_api_url, calendar_sync::DEFAULT_CALENDAR_API_URL);
/// assert_eq!(google.per_connection_per_minute, 600);
/// ```
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// The OAuth client.
    pub oauth: OAuthConfig,
    /// `GOOGLE_CALENDAR_API_URL`. Default: Google's.
    pub calendar_api_url: String,
    /// A hung Google never stalls a worker longer than this. Default: 30 s.
    pub request_timeout: Duration,
    /// Requests per minute per connection (Google: 600 per user). Default: 600.
    pub per_connection_per_minute: u32,
    /// Requests per minute for the whole Google project (Google: 10,000). Default: 10,000.
    pub per_project_per_minute: u32,
    /// The length of Google's sliding quota windows, over which the two budgets
    /// above are counted: a minute. Only tests and benchmarks that scale time
    /// down change it. Default: 60 s.
    pub quota_window: Duration,
    /// Deprecated and ignored: every worker pays from budgets shared through
    /// the database (`calendar_sync_budget`), however many are running. Default: 1.
    pub worker_processes: u32,
    /// Consecutive retryable failures that open a connection's circuit breaker. Default: 5.
    pub breaker_threshold: u32,
    /// How long an open breaker pauses its connection. Default: 60 s.
    pub breaker_cool_down: Duration,
    /// How long Google's usage limits (403 `quotaExceeded`) pause a
    /// connection. The only setting of this pause: its errors carry it as
    /// their retry-after, which the engine waits out. Default: 1 h.
    pub usage_limit_pause: Duration,
    /// `CALENDAR_SYNC_GOOGLE_BATCH_MAX`: most write calls of one connection
    /// sent together through Google's batch endpoint; 0 or 1 sends every call
    /// on its own, and more than Google's 1000 counts as 1000. Batching saves
    /// HTTP requests and connections, never quota (each call inside a batch
    /// pays its unit). Default: [`DEFAULT_BATCH_MAX`].
    pub batch_max: usize,
    /// `GOOGLE_CALENDAR_BATCH_URL`: the batch endpoint. `None`: derived from
    /// `calendar_api_url` (`…/calendar/v3/` gives `…/batch/calendar/v3`).
    pub batch_url: Option<String>,
}

impl GoogleConfig {
    /// The quotas every worker pays from, through the database.
    pub fn budget(&self) -> Budget {
        Budget {
            per_connection: self.per_connection_per_minute.max(1),
            per_project: self.per_project_per_minute.max(1),
            window: self.quota_window,
        }
    }

    /// Defaults for the given OAuth client.
    pub fn new(client_id: impl Into<String>, client_secret: SecretString) -> Self {
        Self {
            oauth: OAuthConfig {
                client_id: client_id.into(),
                client_secret,
                token_url: DEFAULT_TOKEN_URL.to_owned(),
            },
            calendar_api_url: DEFAULT_CALENDAR_API_URL.to_owned(),
            request_timeout: Duration::from_secs(30),
            per_connection_per_minute: 600,
            per_project_per_minute: 10_000,
            quota_window: Duration::from_secs(60),
            worker_processes: 1,
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(60),
            usage_limit_pause: Duration::from_secs(3600),
            batch_max: DEFAULT_BATCH_MAX,
            batch_url: None,
        }
    }

    /// The batch endpoint: `batch_url`, else derived from `calendar_api_url`.
    pub fn batch_endpoint(&self) -> String {
        self.batch_url
            .clone()
            .unwrap_or_else(|| grouped::batch_url_for(&self.calendar_api_url))
    }
}

type Connector = HttpsConnector<HttpConnector>;
type Hub = CalendarHub<Connector>;

/// Google Calendar, for every workspace with a stored connection (see
/// [`ops::put_connection`](crate::ops::put_connection)): the [`Calendar`] to
/// give an [`OutboxDrainer`](crate::OutboxDrainer) in production.
///
/// ```no_run
/// # fn example(db: &calendar_sync::Database) -> Result<(), Box<dyn std::error::Error>> {
/// use calendar_sync::{GoogleCalendar, GoogleConfig, TokenCipher};
/// use secrecy::SecretString;
///
/// let env = std::env::var;
/// let cipher = TokenCipher::new(
///     &env("TOKEN_ENCRYPTION_KEY")?,
///     &env("TOKEN_ENCRYPTION_OLD_KEYS").unwrap_or_default(),
/// )?;
/// let google = GoogleConfig::new(
///     env("GOOGLE_CLIENT_ID")?,
///     SecretString::from(env("GOOGLE_CLIENT_SECRET")?),
/// );
/// let calendar = GoogleCalendar::new(db, cipher, google)?;
/// # let _ = calendar; Ok(()) }
/// ```
pub struct GoogleCalendar {
    http: Client<Connector, google_calendar3::common::Body>,
    base_url: String,
    /// Batches of write calls, when `batch_max` turns them on; the API path batch parts start with.
    grouper: Option<(Arc<Grouper>, String)>,
    timeout: Duration,
    tokens: Tokens,
    budget: Budget,
    breakers: Breakers,
    db: Database,
    usage_pause: Duration,
    paused: Mutex<HashMap<String, Instant>>,
    /// What each (workspace, calendar name) resolved to, and under which
    /// connection version.
    resolved: Mutex<IdleMap<Option<(i64, String)>>>,
}

impl std::fmt::Debug for GoogleCalendar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens.
        f.debug_struct("GoogleCalendar")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("budget", &self.budget)
            .field("usage_pause", &self.usage_pause)
            .finish_non_exhaustive()
    }
}

impl GoogleCalendar {
    /// Builds the client; connections are read from `db` when first needed.
    pub fn new(db: &Database, cipher: TokenCipher, config: GoogleConfig) -> Result<Self, Error> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let http = Client::builder(TokioExecutor::new()).build(connector);
        let mut base_url = config.calendar_api_url.clone();
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        let tokens = Tokens::new(&config.oauth, db.clone(), cipher, config.request_timeout)
            .map_err(Error::Config)?;
        let grouper = (config.batch_max >= 2).then(|| {
            let grouper = Grouper::new(
                http.clone(),
                config.batch_endpoint(),
                config.batch_max,
                config.request_timeout,
            );
            (Arc::new(grouper), grouped::base_path(&base_url))
        });
        Ok(Self {
            http,
            base_url,
            grouper,
            timeout: config.request_timeout,
            tokens,
            budget: config.budget(),
            breakers: Breakers::new(config.breaker_threshold, config.breaker_cool_down),
            db: db.clone(),
            usage_pause: config.usage_limit_pause,
            paused: Mutex::new(HashMap::new()),
            resolved: Mutex::new(IdleMap::new()),
        })
    }

    /// calendars.get: the calendar's own id, `None` on 404.
    async fn get_calendar(&self, target: &CalendarKey) -> Result<Option<String>, CalendarError> {
        match self.call(target, &Request::GetCalendar).await {
            // Google always answers with the id; an answer without one names
            // the calendar as asked.
            Ok(Reply::Calendar(id)) => Ok(Some(id.unwrap_or_else(|| target.calendar_id.clone()))),
            Ok(_) => Err(bad_reply()),
            Err(e) if e.kind == CalendarErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Token refresh requests sent so far.
    pub fn token_refreshes(&self) -> u64 {
        self.tokens.refresh_count()
    }

    /// Workspaces whose circuit breaker is open now.
    pub fn open_breakers(&self) -> Vec<String> {
        self.breakers.open_connections()
    }

    fn hub(&self, token: &SecretString) -> Hub {
        let mut hub = CalendarHub::new(self.http.clone(), token.expose_secret().to_owned());
        hub.base_url(self.base_url.clone());
        hub
    }

    fn paused_for(&self, workspace_id: &str) -> Option<Duration> {
        let paused = self.paused.lock().expect("paused");
        paused
            .get(workspace_id)?
            .checked_duration_since(Instant::now())
    }

    async fn pause(&self, workspace_id: &str) {
        {
            let mut paused = self.paused.lock().expect("paused");
            // Only pauses still running are kept: the map stays as small as
            // the set of connections paused now.
            let now = Instant::now();
            paused.retain(|_, until| *until > now);
            paused.insert(workspace_id.to_owned(), now + self.usage_pause);
        }
        if let Ok(client) = self.db.client().await {
            let _ =
                store::pause_connection(&**client, workspace_id, self.usage_pause.as_secs_f64())
                    .await;
        }
    }

    /// Writes until when the connection's breaker is open (`None`: closed) to
    /// `google_connections.breaker_open_until`, for the dashboard; a failure
    /// is logged, never the call's.
    async fn note_breaker(&self, workspace_id: &str, open_for: Option<Duration>) {
        let written = async {
            let client = self.db.client().await?;
            let secs = open_for.map(|d| d.as_secs_f64());
            store::note_breaker(&**client, workspace_id, secs).await?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = written {
            tracing::warn!(workspace_id, error = %e, "could not record the circuit breaker's state");
        }
    }

    /// Sends one call: inside a batch of its connection's writes when
    /// batching is on and others are ready with it, else on its own.
    async fn send_call(
        &self,
        target: &CalendarKey,
        token: &SecretString,
        request: &Request<'_>,
        capture: &mut Capture,
    ) -> Result<google_calendar3::common::Result<Reply>, Unsent> {
        if let Some((grouper, base_path)) = &self.grouper
            && let Some(inner) = inner_request(base_path, &target.calendar_id, request)
        {
            let outcome = tokio::time::timeout(
                self.timeout + grouped::MAX_GATHER,
                grouper.submit(&target.workspace_id, token, inner),
            )
            .await;
            match outcome {
                Err(_) => return Err(Unsent::TimedOut),
                Ok(PartOutcome::Unanswered { timed_out, counted }) => {
                    capture.shared_failure = !counted;
                    return Err(if timed_out {
                        Unsent::TimedOut
                    } else {
                        Unsent::NoReply
                    });
                }
                Ok(PartOutcome::Answered { answer, counted }) => {
                    capture.shared_failure = !counted;
                    return Ok(part_reply(request, answer, capture));
                }
                Ok(PartOutcome::SendAlone) => {}
            }
        }
        let hub = self.hub(token);
        tokio::time::timeout(
            self.timeout,
            send(
                &hub,
                &self.base_url,
                token,
                &target.calendar_id,
                request,
                capture,
            ),
        )
        .await
        .map_err(|_| Unsent::TimedOut)
    }

    /// One API call with everything around it: breaker, pause, budget, token,
    /// timeout, and on 401 one refresh and one retry.
    async fn call(
        &self,
        target: &CalendarKey,
        request: &Request<'_>,
    ) -> Result<Reply, CalendarError> {
        let workspace = target.workspace_id.as_str();
        if let Some(wait) = self.breakers.open_for(workspace) {
            return Err(CalendarError::new(
                CalendarErrorKind::HeldBack,
                "circuit_open",
                "paused after repeated failures of this connection",
            )
            .with_retry_after(Some(wait)));
        }
        if let Some(remaining) = self.paused_for(workspace) {
            return Err(CalendarError::new(
                CalendarErrorKind::UsageLimited,
                "google_403_quotaExceeded",
                "paused: Google's usage limits made this calendar read-only",
            )
            .with_retry_after(Some(remaining)));
        }
        let mut refreshed = false;
        // Whether this call's outcome counts for the breaker: a failed batch
        // is one failure of the connection, not one per call inside it.
        let mut counted = true;
        let result = loop {
            // The claim paid the item's first call; any other pays now, before
            // the token is fetched: a wait for budget can be long, and a token
            // held through it could expire before it is used.
            if !budget::take_prepaid_call()
                && let Err(e) = budget::pay(&self.db, workspace, self.budget).await
            {
                break Err(e);
            }
            let token = match self.tokens.access_token(workspace).await {
                Ok(token) => token,
                Err(e) => break Err(e),
            };
            let mut capture = Capture::default();
            let sent = self.send_call(target, &token, request, &mut capture).await;
            counted = !capture.shared_failure;
            let status = match &sent {
                Err(Unsent::TimedOut) => "timeout".to_owned(),
                Err(Unsent::NoReply) => "error".to_owned(),
                Ok(Ok(_)) => "ok".to_owned(),
                Ok(Err(_)) => capture
                    .status
                    .map_or_else(|| "error".to_owned(), |s| s.to_string()),
            };
            // The per-minute counts name the status of a success too ('200',
            // '204'; '200' when it was not seen).
            let minute_label = match (&sent, capture.status) {
                (Ok(Ok(_)), None) => "200".to_owned(),
                (Ok(_), Some(s)) => s.to_string(),
                _ => status.clone(),
            };
            self.db
                .minute_counts()
                .add(minute_counts::GOOGLE_CALLS, &minute_label, 1);
            metrics::counter!("calendar_sync_google_calls_total", "method" => request.method(), "status" => status)
                .increment(1);
            let result = match sent {
                Err(Unsent::TimedOut) => Err(CalendarError::new(
                    CalendarErrorKind::Transient,
                    "google_timeout",
                    format!("no answer within {} s", self.timeout.as_secs_f64()),
                )),
                Err(Unsent::NoReply) => Err(CalendarError::new(
                    CalendarErrorKind::Transient,
                    "google_batch_no_reply",
                    "Google's batch answer had no reply for this call",
                )),
                Ok(result) => result.map_err(|e| classify(e, &capture)),
            };
            match result {
                Err(e) if e.status == Some(401) && !refreshed => {
                    self.tokens.forget(workspace, &token).await;
                    refreshed = true;
                }
                Err(e) if e.status == Some(401) => {
                    break Err(CalendarError::new(
                        CalendarErrorKind::ConnectionInvalid,
                        e.code,
                        format!(
                            "Google refused a freshly refreshed access token: {}",
                            e.message
                        ),
                    )
                    .with_status(e.status));
                }
                other => break other,
            }
        };
        MinuteCounts::tick(&self.db, Sampling::CountsOnly);
        let retryable = matches!(&result, Err(e) if matches!(e.kind, CalendarErrorKind::Transient | CalendarErrorKind::RateLimited));
        let change = if counted {
            self.breakers.record(workspace, retryable)
        } else {
            Change::None
        };
        match change {
            Change::Opened => {
                tracing::warn!(
                    workspace_id = workspace,
                    "circuit breaker opened for this connection"
                );
                self.note_breaker(workspace, Some(self.breakers.cool_down()))
                    .await;
            }
            Change::Closed => self.note_breaker(workspace, None).await,
            Change::None => {}
        }
        match result {
            Err(e) if e.kind == CalendarErrorKind::UsageLimited => {
                self.pause(workspace).await;
                Err(e.with_retry_after(Some(self.usage_pause)))
            }
            Err(e) if e.kind == CalendarErrorKind::ConnectionInvalid => {
                self.tokens.forget_all(workspace).await;
                Err(e)
            }
            other => other,
        }
    }
}

/// What we ask Google. Update and Delete carry the etag to fence with.
enum Request<'a> {
    Insert(Event),
    Update(&'a str, Event, Option<&'a str>),
    Get(&'a str),
    Delete(&'a str, Option<&'a str>),
    GetCalendar,
    List {
        property: String,
        page_token: Option<&'a str>,
    },
    /// The calendar's changes since `sync_token` (everything without one).
    Changes {
        sync_token: Option<&'a str>,
        page_token: Option<&'a str>,
    },
}

impl Request<'_> {
    /// The `method` label of the calls metric.
    fn method(&self) -> &'static str {
        match self {
            Self::Insert(_) => "insert",
            Self::Update(..) => "update",
            Self::Get(_) => "get",
            Self::Delete(..) => "delete",
            Self::GetCalendar => "calendar_get",
            Self::List { .. } => "list",
            Self::Changes { .. } => "list_changes",
        }
    }
}

enum Reply {
    Event(Box<Event>),
    Deleted,
    /// calendars.get: the calendar's own id.
    Calendar(Option<String>),
    Page(Box<google_calendar3::api::Events>),
}

/// A call that got no answer.
enum Unsent {
    /// None within the request timeout.
    TimedOut,
    /// Its batch answered, but not for this call (cut, or unreadable).
    NoReply,
}

/// The call as a part of a batch, if it is a write (insert, update, delete).
fn inner_request(
    base_path: &str,
    calendar_id: &str,
    request: &Request<'_>,
) -> Option<batch::InnerRequest> {
    let json = |event: &Event| {
        let mut value = serde_json::to_value(event).expect("an Event always serialises");
        google_calendar3::common::remove_json_null_values(&mut value);
        serde_json::to_vec(&value).expect("JSON always serialises")
    };
    let fence = |inner: batch::InnerRequest, etag: &Option<&str>| match etag {
        Some(etag) => inner.with_header("If-Match", etag),
        None => inner,
    };
    Some(match request {
        Request::Insert(event) => batch::InnerRequest::insert(base_path, calendar_id, json(event)),
        Request::Update(id, event, etag) => fence(
            batch::InnerRequest::update(base_path, calendar_id, id, json(event)),
            etag,
        ),
        Request::Delete(id, etag) => fence(
            batch::InnerRequest::delete(base_path, calendar_id, id),
            etag,
        ),
        Request::Get(_) | Request::GetCalendar | Request::List { .. } | Request::Changes { .. } => {
            return None;
        }
    })
}

/// A batch part's answer as the single call's would have been: the same
/// reply or error values, the status and Retry-After kept in `capture`.
#[expect(
    clippy::result_large_err,
    reason = "google-calendar3's own error type, as its calls return it, so that one classify serves both"
)]
fn part_reply(
    request: &Request<'_>,
    part: batch::InnerResponse,
    capture: &mut Capture,
) -> google_calendar3::common::Result<Reply> {
    use google_calendar3::common::Error as E;
    capture.status = Some(part.status);
    if !(200..300).contains(&part.status) {
        capture.retry_after = part
            .header("Retry-After")
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        return Err(match serde_json::from_slice::<Value>(&part.body) {
            Ok(value) => E::BadRequest(value),
            Err(_) => {
                let mut response =
                    http::Response::new(google_calendar3::common::to_body(Some(part.body)));
                *response.status_mut() = http::StatusCode::from_u16(part.status)
                    .unwrap_or(http::StatusCode::BAD_GATEWAY);
                E::Failure(response)
            }
        });
    }
    if matches!(request, Request::Delete(..)) {
        return Ok(Reply::Deleted);
    }
    serde_json::from_slice::<Event>(&part.body)
        .map(|e| Reply::Event(Box::new(e)))
        .map_err(|e| E::JsonDecodeError(String::from_utf8_lossy(&part.body).into_owned(), e))
}

async fn send(
    hub: &Hub,
    base_url: &str,
    token: &SecretString,
    calendar_id: &str,
    request: &Request<'_>,
    capture: &mut Capture,
) -> google_calendar3::common::Result<Reply> {
    let fenced = |event_id, etag, event| FencedCall {
        base_url,
        calendar_id,
        event_id,
        etag,
        event,
    };
    let events = hub.events();
    match request {
        Request::Update(id, event, Some(etag)) => fenced(id, etag, Some(event))
            .send(&hub.client, token.expose_secret(), capture)
            .await
            .map(|(status, e)| {
                capture.status = Some(status);
                Reply::Event(Box::new(e.unwrap_or_default()))
            }),
        Request::Delete(id, Some(etag)) => fenced(id, etag, None)
            .send(&hub.client, token.expose_secret(), capture)
            .await
            .map(|(status, _)| {
                capture.status = Some(status);
                Reply::Deleted
            }),
        Request::GetCalendar => hub
            .calendars()
            .get(calendar_id)
            .delegate(capture)
            .doit()
            .await
            .map(|(response, calendar)| {
                capture.status = Some(response.status().as_u16());
                Reply::Calendar(calendar.id)
            }),
        Request::Insert(event) => events
            .insert(event.clone(), calendar_id)
            .delegate(capture)
            .doit()
            .await
            .map(|(response, e)| capture.event(&response, e)),
        Request::Update(id, event, None) => events
            .update(event.clone(), calendar_id, id)
            .delegate(capture)
            .doit()
            .await
            .map(|(response, e)| capture.event(&response, e)),
        Request::Get(id) => events
            .get(calendar_id, id)
            .delegate(capture)
            .doit()
            .await
            .map(|(response, e)| capture.event(&response, e)),
        Request::Delete(id, None) => events
            .delete(calendar_id, id)
            .delegate(capture)
            .doit()
            .await
            .map(|response| {
                capture.status = Some(response.status().as_u16());
                Reply::Deleted
            }),
        Request::List {
            property,
            page_token,
        } => {
            let mut call = events
                .list(calendar_id)
                .add_private_extended_property(property)
                .show_deleted(false)
                .max_results(2500)
                .delegate(capture);
            if let Some(token) = page_token {
                call = call.page_token(token);
            }
            call.doit().await.map(|(response, page)| {
                capture.status = Some(response.status().as_u16());
                Reply::Page(Box::new(page))
            })
        }
        Request::Changes {
            sync_token,
            page_token,
        } => {
            // No filter: Google refuses one next to a sync token. Deleted
            // events too, so a full listing finds earlier deletions by hand.
            let mut call = events
                .list(calendar_id)
                .show_deleted(true)
                .max_results(2500)
                .delegate(capture);
            if let Some(token) = sync_token {
                call = call.sync_token(token);
            }
            if let Some(token) = page_token {
                call = call.page_token(token);
            }
            call.doit().await.map(|(response, page)| {
                capture.status = Some(response.status().as_u16());
                Reply::Page(Box::new(page))
            })
        }
    }
}

/// Keeps what google-calendar3 otherwise drops: the HTTP status and the
/// Retry-After header of a failed call (and the status of a success, for the
/// per-minute counts).
#[derive(Default)]
struct Capture {
    status: Option<u16>,
    retry_after: Option<Duration>,
    /// The batch this call rode in failed as a whole, and another of its
    /// calls counts that failure for the breaker.
    shared_failure: bool,
}

impl Capture {
    /// An event answered, its status kept.
    fn event(&mut self, response: &Response, event: Event) -> Reply {
        self.status = Some(response.status().as_u16());
        Reply::Event(Box::new(event))
    }
}

impl Delegate for Capture {
    fn http_failure(&mut self, response: &Response, _body: Option<&Value>) -> Retry {
        self.status = Some(response.status().as_u16());
        self.retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        Retry::Abort
    }
}

/// Maps a failed call to what the engine should do, from the HTTP status and
/// Google's `errors[0].reason`.
fn classify(error: google_calendar3::common::Error, capture: &Capture) -> CalendarError {
    use google_calendar3::common::Error as E;
    let (status, reason, message) = match &error {
        E::BadRequest(body) => {
            let err = &body["error"];
            let status = err["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .or(capture.status)
                .unwrap_or(400);
            let reason = err["errors"][0]["reason"]
                .as_str()
                .or_else(|| err["status"].as_str())
                .unwrap_or("unknown")
                .to_owned();
            let message = err["message"].as_str().unwrap_or("").to_owned();
            (status, reason, message)
        }
        E::Failure(response) => (response.status().as_u16(), "http".to_owned(), String::new()),
        other => {
            return CalendarError::new(
                CalendarErrorKind::Transient,
                "google_network",
                first_line(&other.to_string()),
            );
        }
    };
    let kind = match (status, reason.as_str()) {
        (403 | 429, "rateLimitExceeded" | "userRateLimitExceeded") | (429, _) => {
            CalendarErrorKind::RateLimited
        }
        (403, "quotaExceeded" | "dailyLimitExceeded" | "calendarUsageLimitsExceeded") => {
            CalendarErrorKind::UsageLimited
        }
        (403, "insufficientPermissions" | "PERMISSION_DENIED") => {
            CalendarErrorKind::ConnectionInvalid
        }
        (401, _) => CalendarErrorKind::ConnectionInvalid,
        (404, _) => CalendarErrorKind::NotFound,
        (410, _) => CalendarErrorKind::Gone,
        (409, "duplicate") => CalendarErrorKind::Duplicate,
        (412, _) => CalendarErrorKind::Conflict,
        (408 | 409, _) => CalendarErrorKind::Transient,
        (s, _) if s >= 500 => CalendarErrorKind::Transient,
        _ => CalendarErrorKind::Permanent,
    };
    CalendarError::new(
        kind,
        format!("google_{status}_{reason}"),
        first_line(&message),
    )
    .with_retry_after(capture.retry_after)
    .with_status(Some(status))
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

fn to_google(id: Option<&str>, body: &EventBody) -> Event {
    let time = |t: &EventTime| match t {
        EventTime::Date(d) => EventDateTime {
            date: Some(*d),
            ..Default::default()
        },
        EventTime::DateTime {
            date_time,
            time_zone,
        } => EventDateTime {
            date_time: Some(date_time.to_utc()),
            time_zone: time_zone.clone(),
            ..Default::default()
        },
    };
    Event {
        id: id.map(str::to_owned),
        summary: Some(body.summary.clone()),
        description: body.description.clone(),
        start: Some(time(&body.start)),
        end: Some(time(&body.end)),
        status: Some("confirmed".to_owned()),
        extended_properties: Some(EventExtendedProperties {
            private: Some(body.private_properties.clone().into_iter().collect()),
            shared: None,
        }),
        ..options_to_google(&body.options)
    }
}

/// The optional fields in Google's names. Reminders are always sent: a full
/// update without them would keep no overrides, but saying so is clearer.
fn options_to_google(options: &EventOptions) -> Event {
    let reminders = options
        .reminders
        .clone()
        .unwrap_or_else(Reminders::calendar_default);
    Event {
        location: options.location.clone(),
        source: options.url.as_ref().map(|url| GoogleEventSource {
            url: Some(url.clone()),
            title: options.url_title.clone(),
        }),
        transparency: options.transparency.map(|t| enum_name(&t)),
        visibility: options.visibility.map(|v| enum_name(&v)),
        color_id: options.color_id.map(String::from),
        reminders: Some(EventReminders {
            use_default: Some(reminders.use_default),
            overrides: (!reminders.use_default).then(|| {
                reminders
                    .overrides
                    .iter()
                    .map(|o| EventReminder {
                        method: Some(enum_name(&o.method)),
                        minutes: i32::try_from(o.minutes).ok(),
                    })
                    .collect()
            }),
        }),
        ..Default::default()
    }
}

/// The serde name of one of our unit enums (`Transparency::Transparent` →
/// `transparent`), which is Google's.
fn enum_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// One of our unit enums from Google's name for it (see `enum_name`).
fn parse<T: serde::de::DeserializeOwned>(name: &Option<String>) -> Option<T> {
    let name = name.as_ref()?;
    serde_json::from_value(serde_json::Value::String(name.clone())).ok()
}

/// Google's optional fields read back, in the body's spelling (see
/// `EventOptions::canonical`); a value we cannot represent reads as absent.
fn options_from_google(event: &Event, summary: &str) -> EventOptions {
    let reminders = event.reminders.as_ref().map(|r| Reminders {
        use_default: r.use_default.unwrap_or(false),
        overrides: r
            .overrides
            .iter()
            .flatten()
            .filter_map(|o| {
                Some(ReminderOverride {
                    method: parse(&o.method)?,
                    minutes: u32::try_from(o.minutes?).ok()?,
                })
            })
            .collect(),
    });
    EventOptions {
        location: event.location.clone(),
        url: event.source.as_ref().and_then(|s| s.url.clone()),
        url_title: event.source.as_ref().and_then(|s| s.title.clone()),
        transparency: parse(&event.transparency),
        visibility: parse(&event.visibility),
        color_id: event.color_id.as_ref().and_then(|c| c.parse().ok()),
        // Google's default when absent.
        reminders: reminders.or_else(|| Some(Reminders::calendar_default())),
    }
    .canonical(summary)
}

fn from_google(event: Event) -> Result<RemoteEvent, CalendarError> {
    let id = event.id.clone().ok_or_else(|| {
        CalendarError::new(
            CalendarErrorKind::Transient,
            "google_bad_reply",
            "Google returned an event without an id",
        )
    })?;
    let time = |t: &Option<EventDateTime>| -> Option<EventTime> {
        let t = t.as_ref()?;
        match (t.date, t.date_time) {
            (Some(d), _) => Some(EventTime::Date(d)),
            (None, Some(dt)) => Some(EventTime::DateTime {
                date_time: dt.fixed_offset(),
                time_zone: t.time_zone.clone(),
            }),
            _ => None,
        }
    };
    let body = match (time(&event.start), time(&event.end)) {
        (Some(start), Some(end)) => Some(EventBody {
            summary: event.summary.clone().unwrap_or_default(),
            description: event.description.clone().filter(|d| !d.is_empty()),
            start,
            end,
            private_properties: event
                .extended_properties
                .as_ref()
                .and_then(|p| p.private.clone())
                .map(|p| p.into_iter().collect::<BTreeMap<_, _>>())
                .unwrap_or_default(),
            options: options_from_google(&event, event.summary.as_deref().unwrap_or_default()),
        }),
        _ => None,
    };
    Ok(RemoteEvent {
        id,
        etag: event.etag.clone(),
        cancelled: event.status.as_deref() == Some("cancelled"),
        body,
        html_link: event.html_link.clone(),
    })
}

/// A reply of another kind than the call asked for.
fn bad_reply() -> CalendarError {
    CalendarError::new(
        CalendarErrorKind::Transient,
        "google_bad_reply",
        "unexpected reply",
    )
}

fn expect_event(reply: Reply) -> Result<RemoteEvent, CalendarError> {
    match reply {
        Reply::Event(e) => from_google(*e),
        _ => Err(bad_reply()),
    }
}

/// An events.list page: its events, and the raw page for its tokens.
fn expect_page(
    reply: Reply,
) -> Result<(Vec<RemoteEvent>, Box<google_calendar3::api::Events>), CalendarError> {
    match reply {
        Reply::Page(mut page) => {
            let events = page
                .items
                .take()
                .unwrap_or_default()
                .into_iter()
                .map(from_google)
                .collect::<Result<_, _>>()?;
            Ok((events, page))
        }
        _ => Err(bad_reply()),
    }
}

impl Calendar for GoogleCalendar {
    fn budget(&self) -> Option<Budget> {
        Some(self.budget)
    }

    async fn insert_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
        body: &EventBody,
    ) -> Result<RemoteEvent, CalendarError> {
        expect_event(
            self.call(target, &Request::Insert(to_google(Some(event_id), body)))
                .await?,
        )
    }

    async fn update_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
        body: &EventBody,
        if_match: Option<&str>,
    ) -> Result<RemoteEvent, CalendarError> {
        let request = Request::Update(event_id, to_google(None, body), if_match);
        match self.call(target, &request).await {
            Ok(reply) => expect_event(reply),
            // Whether Google lets a cancelled event be updated is undocumented;
            // if it refuses, look: a cancelled event needs a fresh id, which the
            // engine takes when it sees `cancelled`.
            Err(e) if e.kind == CalendarErrorKind::Permanent && e.status == Some(403) => {
                let current = expect_event(self.call(target, &Request::Get(event_id)).await?)?;
                if current.cancelled {
                    Ok(current)
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
        if_match: Option<&str>,
    ) -> Result<(), CalendarError> {
        self.call(target, &Request::Delete(event_id, if_match))
            .await
            .map(|_| ())
    }

    async fn get_event(
        &self,
        target: &CalendarKey,
        event_id: &str,
    ) -> Result<RemoteEvent, CalendarError> {
        expect_event(self.call(target, &Request::Get(event_id)).await?)
    }

    async fn calendar_exists(&self, target: &CalendarKey) -> Result<bool, CalendarError> {
        Ok(self.get_calendar(target).await?.is_some())
    }

    /// Asked once per connection version and calendar name in this process
    /// (concurrent askers wait for the first answer); a reconnect asks again.
    async fn resolve_calendar(
        &self,
        target: &CalendarKey,
    ) -> Result<Option<ResolvedCalendar>, CalendarError> {
        let version = self.tokens.version(&target.workspace_id).await?;
        let key = format!("{}\u{0}{}", target.workspace_id, target.calendar_id);
        let entry = self
            .resolved
            .lock()
            .expect("resolved calendars")
            .get(&key, |known: &Option<(i64, String)>| known.is_some());
        let mut known = entry.lock().await;
        if let Some((v, id)) = known.as_ref()
            && *v == version
        {
            return Ok(Some(ResolvedCalendar {
                id: id.clone(),
                connection_version: Some(version),
            }));
        }
        let Some(id) = self.get_calendar(target).await? else {
            return Ok(None);
        };
        *known = Some((version, id.clone()));
        Ok(Some(ResolvedCalendar {
            id,
            connection_version: Some(version),
        }))
    }

    async fn list_events(
        &self,
        target: &CalendarKey,
        property: (&str, &str),
        page_token: Option<&str>,
    ) -> Result<EventPage, CalendarError> {
        let request = Request::List {
            property: format!("{}={}", property.0, property.1),
            page_token,
        };
        let (events, page) = expect_page(self.call(target, &request).await?)?;
        Ok(EventPage {
            events,
            next_page_token: page.next_page_token,
        })
    }

    /// events.list without filters, through the same budget, breaker and
    /// token handling as every other call. A cancelled event of an
    /// incremental listing may carry only its id: its `body` is `None`.
    async fn list_changes(
        &self,
        target: &CalendarKey,
        sync_token: Option<&str>,
        page_token: Option<&str>,
    ) -> Result<ChangePage, CalendarError> {
        let request = Request::Changes {
            sync_token,
            page_token,
        };
        let (events, page) = expect_page(self.call(target, &request).await?)?;
        Ok(ChangePage {
            events,
            next_page_token: page.next_page_token,
            next_sync_token: page.next_sync_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_processes_no_longer_split_the_budget() {
        let mut config = GoogleConfig::new("id", SecretString::from("secret"));
        config.worker_processes = 4;
        let budget = config.budget();
        assert_eq!((budget.per_connection, budget.per_project), (600, 10_000));
        assert_eq!(budget.window, Duration::from_secs(60));
    }
}
