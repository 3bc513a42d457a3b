//! # fake-google
//!
//! An in-memory, in-process HTTP server that imitates the Google Calendar v3 **events** API and
//! Google's OAuth **token endpoint** (refresh grant), for tests and demos that cannot reach
//! Google. It speaks the real wire format, so the real `google-calendar3` client can drive it.
//!
//! ```no_run
//! # async fn demo() {
//! use fake_google::{FakeGoogle, Fault, FaultKind};
//! let g = FakeGoogle::start().await;                 // binds 127.0.0.1:0
//! g.add_client("client-1", "secret-1");
//! g.add_refresh_token("rt-1", "client-1", "alice@example.com");
//! g.add_calendar("alice@example.com");               // `primary` for alice
//! let base = g.calendar_base_url();                  // http://127.0.0.1:PORT/calendar/v3/
//! let token_url = g.token_url();                     // http://127.0.0.1:PORT/token
//! g.inject(Fault::new(FaultKind::TooManyRequests { retry_after: Some(2) }).method("POST"));
//! // ... run the code under test ...
//! let all = g.events("alice@example.com");           // cancelled events included
//! let log = g.requests();
//! g.shutdown().await;
//! # }
//! ```
//!
//! ## Wiring `google-calendar3` 7 to the fake
//! ```ignore
//! use google_calendar3::CalendarHub;
//! use hyper_util::client::legacy::{Client, connect::HttpConnector};
//! use hyper_util::rt::TokioExecutor;
//!
//! // Plain HTTP connector…
//! let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
//! // …or the production one, which also speaks http:// thanks to `https_or_http()`
//! // (needs hyper-rustls 0.27 with its `http1` feature; google-calendar3 enables only http2):
//! // let conn = hyper_rustls::HttpsConnectorBuilder::new()
//! //     .with_native_roots()?.https_or_http().enable_http1().build();
//! // let client = Client::builder(TokioExecutor::new()).build(conn);
//! let access_token: String = /* POST g.token_url() with the refresh grant */;
//! let mut hub = CalendarHub::new(client, access_token); // String implements GetToken
//! hub.base_url(g.calendar_base_url());
//! hub.root_url(g.root_url());
//! ```
//!
//! ## Routes
//! - `POST/GET {root}calendar/v3/calendars/{cal}/events`,
//!   `GET/PUT/PATCH/DELETE {root}calendar/v3/calendars/{cal}/events/{id}`: path segments are
//!   percent-decoded (`a%40b.com` and `a@b.com` are the same calendar).
//! - `GET {root}calendar/v3/calendars/{cal}` (calendars.get): `{kind, etag, id, summary,
//!   timeZone}` with `primary` resolved to the real id; unknown calendar: 404.
//! - `POST {root}batch/calendar/v3`: Google's batch endpoint (`multipart/mixed` of
//!   `application/http` parts); each inner call goes through the single-call pipeline (log
//!   entry with [`RecordedRequest::batch`] set, fault, auth, quota, state); the answer is
//!   `multipart/mixed` with `Content-ID: <response-...>` parts in request order. See the
//!   README's "Batch endpoint" for the format and its faults ([`FaultKind::Conflict`],
//!   [`FaultKind::BatchCut`], [`FakeGoogle::set_batch_endpoint`]).
//! - `POST {root}token`: `grant_type=refresh_token`, client authentication by
//!   `client_secret_post` (form fields) or `client_secret_basic` (Authorization header).
//! - `{root}_fake/…`: a JSON admin API for out-of-process use (see the `admin` module docs).
//!
//! ## Behaviour (fact sheet §9 of `google-calendar-api.md`)
//! - Every Calendar call needs `Authorization: Bearer <token>` issued by this fake's `/token`
//!   (or [`FakeGoogle::issue_access_token`]) and not expired; else 401 `authError`
//!   "Invalid Credentials" (no header at all: 401 `required` "Login Required."). The
//!   refresh token's scope must include a Calendar write scope for writes (default
//!   `calendar.events`), else 403 `insufficientPermissions`.
//! - Pipeline per request: log -> latency -> injected fault -> auth -> scope -> quota ->
//!   calendar lookup (404) -> method.
//! - insert: id `^[a-v0-9]{5,1024}$` else 400 `invalid` "Invalid resource id value."; `id` and
//!   `iCalUID` together: same 400; missing start/end 400 `required` ("Missing end time.");
//!   date vs dateTime mixed: 400 `invalid`; end <= start: 400 `timeRangeEmpty`; an id already
//!   used (cancelled events included): 409 `duplicate`, stored event untouched. Answers 200
//!   with `kind`, `id`, `etag` (quoted digits), `status`, `htmlLink`, `created`, `updated`,
//!   `iCalUID` (`{id}@google.com`), `sequence`, `creator`, `organizer`, `reminders`, `eventType`.
//! - get: 200 for live and cancelled events; `If-None-Match` equal to the etag: 304.
//! - update (PUT) replaces the resource (server-owned fields kept, absent extended properties
//!   dropped); patch merges objects recursively (`null` deletes a key, arrays and
//!   `start`/`end` replaced whole). Every write (and a human edit) gives a new `etag` and a later
//!   `updated`; `If-Match` not matching (not `*`): 412 `conditionNotMet`. Unknown id: 404.
//!   `sequence` keeps the larger of the stored and the sent value.
//! - delete: live -> 204 (see [`Settings::delete_status`]), status becomes `cancelled`;
//!   already cancelled -> 410 `deleted`; unknown -> 404.
//! - list: `privateExtendedProperty`/`sharedExtendedProperty` (`k=v`, repeatable; see
//!   [`ExtPropMatch`]), `showDeleted`, `updatedMin` (includes cancelled events updated since),
//!   `timeMin`/`timeMax`, `iCalUID`, `maxResults` (default 250, capped at 2500, < 1 -> 400),
//!   `pageToken`, `syncToken` (incremental: everything written since, cancelled included;
//!   cannot be combined with filters -> 400; after [`FakeGoogle::invalidate_sync_tokens`] ->
//!   410 `fullSyncRequired`). The last page carries `nextSyncToken`. In an incremental
//!   listing a cancelled event is, as Google only guarantees, its `id`, `status` and `etag`.
//! - Extended properties: keys over 44 characters dropped, values over 1024 characters
//!   truncated (silently); over 300 properties or 32 kB (keys + values, private + shared) ->
//!   400 `invalid` (reason and text UNCONFIRMED).
//! - `primary`: the calendar registered under the caller's email, else the one set by
//!   [`FakeGoogle::set_primary`], else 404. Any valid token may use any registered calendar.
//!
//! ## Token endpoint
//! Checks, in order: `grant_type` (400 `unsupported_grant_type`), client id known (401
//! `invalid_client` "The OAuth client was not found."), secret (401 `invalid_client`
//! "Unauthorized"), `refresh_token` present (400 `invalid_request`), token known and not
//! revoked (400 `invalid_grant` "Token has been expired or revoked."), token minted for this
//! client (401 `unauthorized_client` "Unauthorized"). Success: 200
//! `{"access_token","expires_in","scope","token_type":"Bearer"}`, no `refresh_token` unless
//! [`FakeGoogle::rotate_on_next_refresh`] was called for it; then the answer carries a new
//! `refresh_token` and **the old one is revoked** (see [`FakeGoogle::rotated_refresh_token`]).
//! [`FakeGoogle::revoke_refresh_token`] also kills the access tokens issued from it.
//! Injected 5xx faults on `/token` answer OAuth-shaped bodies (`internal_failure`,
//! `temporarily_unavailable`).
//!
//! ## Switches (all on [`Settings`]) and their defaults
//! - [`CancelledWritePolicy`] (PUT/PATCH on a cancelled event; Google UNCONFIRMED): `Restore`.
//! - [`ExtPropMatch`] (several constraints of one kind): `All` (discovery doc); `Any` (guide).
//! - [`PagingMode`]: `Exact`; `Erratic` gives empty/short pages that still carry `nextPageToken`.
//! - `max_page_size`: `None`; `Some(n)` holds every list page to `n` items whatever `maxResults`
//!   asks, so a client asking for 2,500 still pages.
//! - [`ErrorShape`]: `Legacy`; `WithStatus` adds `error.status`. A [`Fault`] may set its own.
//! - `delete_status`: 204. `access_token_lifetime`: 3599 s. `latency`: 0 (per method too).
//! - [`QuotaConfig`]: off; when on, sliding windows per user (token's email) and per project
//!   (OAuth client), patch costs 3; excess -> 403 (or 429) `rateLimitExceeded`, counted by
//!   [`FakeGoogle::quota_rejections`].
//!
//! ## How `google-calendar3` 7 surfaces the fake's answers
//! (`google_calendar3::common::Error`, i.e. `google_apis_common::Error`; verified by the tests
//! in `tests/`):
//! - Any non-2xx answer whose body is JSON -> `Error::BadRequest(serde_json::Value)`: the
//!   **whole body** (`value["error"]["code"]`, `value["error"]["errors"][0]["reason"]`,
//!   `value["error"]["status"]` when present). The HTTP status and headers are **lost**: the
//!   status must be read from `error.code`, and a `Retry-After` header is not visible.
//! - A non-2xx answer whose body is not JSON (e.g. [`FaultKind::Raw`] with an HTML 502) ->
//!   `Error::Failure(hyper::Response)`: status and headers available.
//! - A dropped connection (`CommittedReplyLost`, `ConnectionReset`, a fake shut down under a
//!   pending call) -> `Error::HttpError(e)`, printed as
//!   `hyper_util::client::legacy::Error(SendRequest, hyper::Error(IncompleteMessage))`; nothing
//!   tells whether the write was committed (that is the point of `CommittedReplyLost`).
//! - A hang never resolves: `google-calendar3` has no timeout of its own; wrap `doit()` in
//!   `tokio::time::timeout`. (The fake keeps a hung request open until it shuts down.)
//! - [`FaultKind::NotFound`] answers 404 `notFound` without looking (Google's eventual
//!   consistency right after a write, or a calendar whose access is lost for a while);
//!   [`FaultKind::HangThenApply`] holds a request, then applies it (on its own task, so the
//!   client giving up does not stop it) and answers: a timed-out write that Google applies
//!   late; [`FaultKind::TooManyRequestsUntil`] sends `Retry-After` as an HTTP-date.
//! - Faults without a path also match `POST /token`; give Calendar faults `.path("/events")`
//!   when the code under test may refresh a token first.
//! - delete's success is `Ok(hyper::Response)` with the status (204); the other methods return
//!   `Ok((Response, Event))` / `Ok((Response, Events))` with `Event.etag` the quoted etag.
//! - A `Retry-After` header therefore only reaches an adapter that uses a custom
//!   `common::Delegate` (its `http_failure(&Response, Option<&Value>)` sees the headers) or
//!   that does not use the hub for that call.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// `ApiError` is ~170 bytes and travels in `Result`s on a test server's request path, where its
// size costs nothing measurable; boxing it everywhere would only add noise.
#![allow(clippy::result_large_err)]

mod admin;
mod api;
mod batch;
mod errors;
mod event;
mod faults;
mod handle;
mod list;
mod log;
mod oauth;
mod quota;
mod server;
mod state;
mod store;
mod switches;

pub use batch::MAX_BATCH_CALLS;
pub use errors::{ApiError, ErrorShape, OAuthError, grpc_status};
pub use event::{
    MAX_EXT_KEY_CHARS, MAX_EXT_PROPERTIES, MAX_EXT_TOTAL_BYTES, MAX_EXT_VALUE_CHARS,
    is_valid_event_id,
};
pub use faults::{Fault, FaultKind};
pub use handle::FakeGoogle;
pub use list::{DEFAULT_MAX_RESULTS, MAX_MAX_RESULTS};
pub use log::{ApiMethod, Outcome, RecordedRequest};
pub use oauth::DEFAULT_SCOPE;
pub use quota::QuotaConfig;
pub use switches::{CancelledWritePolicy, ExtPropMatch, PagingMode, Settings};
