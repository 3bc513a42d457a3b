//! # calendar-sync-dashboard
//!
//! An operator dashboard for the calendar-sync outbox, as an
//! [`axum::Router`] that an embedding service mounts under any prefix.
//! Read-only unless [`DashboardOptions::token`] is set; then an operator who
//! logs in with the token (or a script sending it as a bearer token) can
//! requeue dead letters and enqueue a REBUILD_ALL, by POST only, and never
//! from another site:
//!
//! ```no_run
//! # fn example(db: calendar_sync::Database) -> Result<(), Box<dyn std::error::Error>> {
//! use calendar_sync_dashboard::{DashboardOptions, DashboardToken, router};
//!
//! let options = DashboardOptions {
//!     // None (the default): read-only.
//!     token: Some(DashboardToken::new(std::env::var("CALENDAR_SYNC_DASHBOARD_TOKEN")?)?),
//!     ..DashboardOptions::default()
//! };
//! let app: axum::Router = axum::Router::new().nest("/dashboard", router(db, options));
//! # let _ = app; Ok(()) }
//! ```
//!
//! Every link is built from the prefix the router is nested at (axum's
//! `NestedPath`), so the same router works under `/dashboard`, `/ops/cs` or
//! at the root. Pages are rendered on the server with `maud`, which escapes
//! every value (titles and descriptions are user content); there is no
//! JavaScript. No query reads the outbox's finished history without a bound:
//! counts of finished items are estimated past a table size, and lists read
//! partial indexes or a bounded window of the newest items.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod actions;
mod assets;
mod auth;
mod charts;
mod connections;
mod items;
mod layout;
mod overview;

pub use auth::{DashboardToken, MIN_TOKEN_LEN, TokenError};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{Next, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use calendar_sync::Database;

/// Limits that keep every page's cost independent of the outbox's history.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    /// Items per page of the items list.
    pub page_size: u32,
    /// The PENDING, PROCESSING and DEAD_LETTER counts are exact up to this
    /// many items (each read through its partial index), shown as
    /// "N+" past it, with the planner's estimate. Dead letters are grouped by
    /// error code among the newest this many, and "requeue every dead letter
    /// of this code" takes at most this many per click. 10,000 by default:
    /// counting recently written rows visits their heap pages.
    pub count_cap: u32,
    /// While `sync_outbox` takes at most this many bytes on disk, every count
    /// is exact; past it, the COMPLETED and SUPERSEDED counts are estimated
    /// from the planner's statistics, and the page says so.
    pub exact_count_max_bytes: i64,
    /// Lists that no partial index serves (finished items, a source's
    /// history) read at most this many of the newest items per page.
    pub scan_window: u32,
    /// The token that enables the write actions (requeue, REBUILD_ALL):
    /// `None` keeps the dashboard read-only. Its `Debug` is redacted.
    pub token: Option<DashboardToken>,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        Self {
            page_size: 50,
            count_cap: 10_000,
            exact_count_max_bytes: 16 * 1024 * 1024,
            scan_window: 10_000,
            token: None,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) db: Database,
    pub(crate) options: DashboardOptions,
}

/// The dashboard: `/` (overview), `/items`, `/items/{id}`, `/connections`,
/// `/login` and its stylesheet, to nest under any prefix. Only POSTs write
/// (`/items/{id}/requeue`, `/requeue`, `/rebuild`), and only with
/// [`DashboardOptions::token`] set and a session or bearer token.
pub fn router(db: Database, options: DashboardOptions) -> Router {
    let state = AppState { db, options };
    let pages = Router::new()
        .route("/", get(overview::page))
        .route("/items", get(items::list))
        .route("/items/{id}", get(items::detail))
        .route("/items/{id}/requeue", post(actions::requeue_one))
        .route("/requeue", post(actions::requeue_many))
        .route("/rebuild", post(actions::rebuild))
        .route("/connections", get(connections::page))
        .route("/login", get(actions::login_page).post(actions::login))
        .route("/logout", post(actions::logout))
        .layer(map_response(data_page_headers))
        .with_state(state);
    Router::new()
        .route(&assets::stylesheet_route(), get(assets::stylesheet))
        .merge(pages)
        .layer(axum::middleware::from_fn(common_headers))
}

/// Headers every response of the dashboard carries.
async fn common_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The policy of every page with data: no script at all, styles only from
/// the dashboard itself, never framed, never cached.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn data_page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A page that could not be read: the details go to the log, not the page.
pub(crate) fn server_error(base: &str, error: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %error, "dashboard query failed");
    (
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        layout::page(
            base,
            "Error",
            maud::html! { p { "The dashboard could not read the outbox; the worker's log has the details." } },
        ),
    )
        .into_response()
}
