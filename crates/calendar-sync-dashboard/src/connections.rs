//! `/connections`: one row per workspace's Google connection, the ones that
//! need an operator (invalid, paused, breaker open) first, keyset pages; and
//! the REBUILD_ALL form.
//!
//! The stored refresh token (`refresh_token_encrypted`) is never selected.

use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use crate::auth::{self, Access};
use crate::layout::{self, encode_query_value, optional_timestamp, thousands, timestamp};
use crate::overview::Failure;
use crate::{AppState, server_error};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Params {
    /// The cursor: `<rank>:<workspace>` of the last row of the previous page.
    after: Option<String>,
    /// Prefills the REBUILD_ALL form's workspace.
    rebuild: Option<String>,
    done: Option<String>,
}

#[derive(Debug)]
struct Connection {
    rank: i32,
    workspace_id: String,
    google_email: String,
    is_valid: bool,
    invalid_reason: Option<String>,
    paused_until: Option<DateTime<Utc>>,
    paused: bool,
    breaker_open_until: Option<DateTime<Utc>>,
    breaker_open: bool,
    token_refreshed_at: Option<DateTime<Utc>>,
    connection_version: i64,
    waiting: i64,
    updated_at: DateTime<Utc>,
}

#[derive(Debug)]
struct Listing {
    rows: Vec<Connection>,
    next: Option<String>,
}

async fn read(state: &AppState, after: Option<(i32, &str)>) -> Result<Listing, Failure> {
    let page = i64::from(state.options.page_size.max(1));
    let cap = i64::from(state.options.count_cap);
    let (after_rank, after_ws) = after.map_or((None, None), |(r, w)| (Some(r), Some(w)));
    let mut client = state.db.client().await?;
    let tx = client.build_transaction().read_only(true).start().await?;
    tx.batch_execute("SET LOCAL statement_timeout = '5s'")
        .await?;
    // One row per tenant (the table's size is the number of workspaces);
    // items waiting through the per-source partial index of unfinished
    // items, capped like the overview's counts.
    let rows = tx
        .query(
            "SELECT c.rank, c.workspace_id, c.google_email, c.is_valid, c.invalid_reason,
                    c.paused_until, c.paused, c.breaker_open_until, c.breaker_open,
                    c.token_refreshed_at, c.connection_version, c.updated_at,
                    (SELECT count(*) FROM (SELECT 1 FROM sync_outbox o
                       WHERE o.status IN ('PENDING', 'PROCESSING') AND o.workspace_id = c.workspace_id
                       LIMIT $4) w)
               FROM (SELECT workspace_id, google_email, is_valid, invalid_reason, paused_until,
                            coalesce(paused_until > now(), false) AS paused,
                            breaker_open_until,
                            coalesce(breaker_open_until > now(), false) AS breaker_open,
                            token_refreshed_at, connection_version, updated_at,
                            CASE WHEN NOT is_valid OR coalesce(paused_until > now(), false)
                                      OR coalesce(breaker_open_until > now(), false)
                                 THEN 0 ELSE 1 END AS rank
                       FROM google_connections) c
              WHERE $1::int IS NULL OR (c.rank, c.workspace_id) > ($1::int, $2::text)
              ORDER BY c.rank, c.workspace_id
              LIMIT $3",
            &[&after_rank, &after_ws, &(page + 1), &(cap + 1)],
        )
        .await?;
    tx.commit().await?;
    let mut rows: Vec<Connection> = rows
        .iter()
        .map(|r| Connection {
            rank: r.get(0),
            workspace_id: r.get(1),
            google_email: r.get(2),
            is_valid: r.get(3),
            invalid_reason: r.get(4),
            paused_until: r.get(5),
            paused: r.get(6),
            breaker_open_until: r.get(7),
            breaker_open: r.get(8),
            token_refreshed_at: r.get(9),
            connection_version: r.get(10),
            updated_at: r.get(11),
            waiting: r.get(12),
        })
        .collect();
    let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) > page;
    rows.truncate(usize::try_from(page).unwrap_or(usize::MAX));
    let next = if full {
        rows.last()
            .map(|c| format!("{}:{}", c.rank, c.workspace_id))
    } else {
        None
    };
    Ok(Listing { rows, next })
}

fn parse_after(after: Option<&str>) -> Option<(i32, &str)> {
    let (rank, ws) = after?.split_once(':')?;
    Some((rank.parse().ok()?, ws))
}

pub(crate) async fn page(
    State(state): State<AppState>,
    Query(params): Query<Params>,
    parts: Parts,
) -> Response {
    let base = layout::base(&parts.extensions);
    let access = auth::access(state.options.token.as_ref(), &parts.headers);
    match read(&state, parse_after(params.after.as_deref())).await {
        Ok(listing) => layout::page_for(
            &base,
            "Connections",
            Some(access),
            render(&base, &state, access, &params, &listing),
        )
        .into_response(),
        Err(e) => server_error(&base, &e),
    }
}

/// A word for the shell, single-quoted unless it is plain.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b'/' | b':')
        })
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The worker's command that stores a new connection for the workspace
/// (the refresh token on standard input, never an argument).
fn reconnect_command(c: &Connection) -> String {
    format!(
        "calendar-sync-worker connections put --workspace {} --email {} < refresh-token.txt",
        shell_word(&c.workspace_id),
        shell_word(&c.google_email)
    )
}

fn waiting(state: &AppState, n: i64) -> String {
    let cap = i64::from(state.options.count_cap);
    if n > cap {
        format!("{}+", thousands(cap))
    } else {
        thousands(n)
    }
}

fn render(
    base: &str,
    state: &AppState,
    access: Access,
    params: &Params,
    listing: &Listing,
) -> Markup {
    let prefill = params
        .rebuild
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    html! {
        h1 { "Connections" }
        (layout::notice_markup(params.done.as_deref()))
        p.note {
            "One row per workspace: the ones that need an operator (invalid, paused by Google's limits, circuit breaker open) first. "
            "To reconnect, run the command shown with the new refresh token on standard input, and "
            code { "DATABASE_URL" } " and " code { "TOKEN_ENCRYPTION_KEY" } " set as for the worker."
        }
        @if listing.rows.is_empty() {
            p #no-connections { "No workspace has a Google connection yet." }
        } @else {
            table #connections {
                thead { tr {
                    th { "Workspace" } th { "Google account" } th { "State" } th { "Paused until" }
                    th { "Breaker" } th { "Last token refresh" } th.num { "Version" } th.num { "Items waiting" }
                    th { "Updated" } th { "Reconnect" }
                } }
                tbody {
                    @for c in &listing.rows {
                        tr.attention[c.rank == 0] data-workspace=(c.workspace_id) {
                            td { a href={ (base) "/items?workspace=" (encode_query_value(&c.workspace_id)) } { (c.workspace_id) } }
                            td { (c.google_email) }
                            td.state {
                                @if c.is_valid { span.valid { "valid" } }
                                @else {
                                    span.invalid { "invalid" }
                                    @if let Some(reason) = &c.invalid_reason { ": " span.invalid-reason { (reason) } }
                                }
                                @if c.paused { " " span.paused { "paused" } }
                                @if c.breaker_open { " " span.breaker-open { "breaker open" } }
                            }
                            td { (optional_timestamp(c.paused_until.as_ref())) }
                            td.breaker {
                                @match (&c.breaker_open_until, c.breaker_open) {
                                    (Some(until), true) => { "open until " (timestamp(until)) },
                                    _ => "closed",
                                }
                            }
                            td.refreshed { (optional_timestamp(c.token_refreshed_at.as_ref())) }
                            td.num { (c.connection_version) }
                            td.num.waiting { (waiting(state, c.waiting)) }
                            td.updated { (timestamp(&c.updated_at)) }
                            td {
                                code.reconnect { (reconnect_command(c)) }
                                @if access == Access::Writer {
                                    " " a.rebuild-link href={ (base) "/connections?rebuild=" (encode_query_value(&c.workspace_id)) "#rebuild" } { "Rebuild…" }
                                }
                            }
                        }
                    }
                }
            }
        }
        nav.pager {
            @if params.after.is_some() {
                a href={ (base) "/connections" } { "First" }
            }
            @if let Some(next) = &listing.next {
                a rel="next" href={ (base) "/connections?after=" (encode_query_value(next)) } { "Next →" }
            }
        }
        h2 { "Rebuild a calendar" }
        p.note {
            "Enqueues a REBUILD_ALL: after everything already queued for the calendar, its events are re-read and re-synced."
        }
        @match access {
            Access::Writer => form #rebuild method="post" action={ (base) "/rebuild" } {
                input type="hidden" name="back" value="/connections";
                label { "Workspace " input #rebuild-workspace name="workspace" required value=(prefill.unwrap_or("")); }
                label { "Calendar " input #rebuild-calendar name="calendar" required value="primary"; }
                button #rebuild-button type="submit" { "Enqueue REBUILD_ALL" }
            },
            Access::LoggedOut => (layout::login_to_act(base, access)),
            Access::ReadOnly => p.note { "The dashboard is read-only (no " code { "CALENDAR_SYNC_DASHBOARD_TOKEN" } ")." },
        }
    }
}
