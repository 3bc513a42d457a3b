//! `/healthz`, `/readyz`, `/metrics` and the dashboard (`/dashboard/`,
//! read-only unless CALENDAR_SYNC_DASHBOARD_TOKEN is set) on
//! CALENDAR_SYNC_HTTP_ADDR: all of them for `run`; the
//! dashboard, `/healthz` and `/readyz` for `dashboard`, which does not drain.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use calendar_sync::{Database, DrainerHandle, TokenCipher};
use calendar_sync_dashboard::{DashboardOptions, DashboardToken};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::commands::Failure;

#[derive(Clone)]
struct AppState {
    db: Database,
    cipher: TokenCipher,
    drainer: Arc<DrainerHandle>,
    metrics: PrometheusHandle,
    stuck_after: Duration,
}

/// Installs the Prometheus recorder behind the library's `metrics` calls.
pub fn install_metrics() -> Result<PrometheusHandle, Failure> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("duration_seconds".into()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        )
        .map_err(|e| Failure::Runtime(e.to_string()))?
        .install_recorder()
        .map_err(|e| Failure::Runtime(format!("cannot install the metrics recorder: {e}")))
}

/// Serves until the task is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    db: Database,
    cipher: TokenCipher,
    drainer: Arc<DrainerHandle>,
    metrics: PrometheusHandle,
    poll_interval: Duration,
    dashboard_token: Option<DashboardToken>,
) {
    let state = AppState {
        db,
        cipher,
        drainer,
        metrics,
        // An idle loop goes round once per poll interval.
        stuck_after: (poll_interval * 3).max(Duration::from_secs(30)),
    };
    let app = Router::new()
        .nest_service("/dashboard", dashboard(&state.db, dashboard_token))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .with_state(state);
    serve_app(listener, app).await;
}

/// `dashboard`: the dashboard, `/healthz` and `/readyz` alone (no drainer,
/// no keys), until the task is aborted.
pub async fn serve_dashboard(
    listener: tokio::net::TcpListener,
    db: Database,
    token: Option<DashboardToken>,
) {
    let app = Router::new()
        .nest_service("/dashboard", dashboard(&db, token))
        // Serving is all this process does: it is healthy while it answers.
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(dashboard_readyz))
        .with_state(db);
    serve_app(listener, app).await;
}

/// The dashboard, mounted with `nest_service("/dashboard", ..)`, which routes
/// both `/dashboard` and `/dashboard/` to its overview. Read-only without a
/// token; with one, its POSTs requeue and rebuild for a logged-in operator.
/// Local by default like the rest of this server.
fn dashboard(db: &Database, token: Option<DashboardToken>) -> Router {
    calendar_sync_dashboard::router(
        db.clone(),
        DashboardOptions {
            token,
            ..DashboardOptions::default()
        },
    )
}

async fn serve_app(listener: tokio::net::TcpListener, app: Router) {
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

async fn healthz(State(s): State<AppState>) -> (StatusCode, String) {
    let since = s.drainer.since_heartbeat();
    if !s.drainer.is_finished() && since < s.stuck_after {
        (StatusCode::OK, "ok\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("drain loop silent for {} s\n", since.as_secs()),
        )
    }
}

/// Not ready while stored tokens are sealed with a key this worker lacks: a
/// rollout that forgot TOKEN_ENCRYPTION_OLD_KEYS stops at its first pod.
async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    if let Err(not_ready) = database_ready(&s.db).await {
        return not_ready;
    }
    match calendar_sync::ops::unknown_key_ids(&s.db, &s.cipher).await {
        Ok(unknown) => match calendar_sync::ops::unknown_key_ids_line(&unknown) {
            None => (StatusCode::OK, "ready\n".into()),
            Some(line) => (StatusCode::SERVICE_UNAVAILABLE, format!("{line}\n")),
        },
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

/// `dashboard`'s: the database answers and its schema is current (it holds
/// no keys to check).
async fn dashboard_readyz(State(db): State<Database>) -> (StatusCode, String) {
    match database_ready(&db).await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(not_ready) => not_ready,
    }
}

async fn database_ready(db: &Database) -> Result<(), (StatusCode, String)> {
    calendar_sync::ops::readiness(db)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")))
}

async fn metrics_page(State(s): State<AppState>) -> (StatusCode, String) {
    match calendar_sync::ops::status(&s.db).await {
        Ok(report) => report.record_gauges(),
        Err(e) => tracing::warn!(error = %e, "could not read outbox gauges"),
    }
    (StatusCode::OK, s.metrics.render())
}
