//! The only requests that write: log in and out, requeue dead letters (one,
//! selected, of a workspace, of an error code) and enqueue a REBUILD_ALL.
//!
//! Every POST is checked in this order, and a refused one changes nothing:
//! cross-site (403), writes disabled (403), not authenticated (401). Each
//! action goes through `calendar_sync`'s public API and answers with a 303
//! back to the page it came from, with `?done=...` for its `p#notice`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use calendar_sync::{CalendarKey, Operation};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::{self, Access};
use crate::layout::{self, CODE_SQL};
use crate::{AppState, server_error};

/// `application/x-www-form-urlencoded` pairs, in order (a key may repeat).
pub(crate) fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut kv = pair.splitn(2, |&b| b == b'=');
            let key = decode(kv.next().unwrap_or_default());
            let value = decode(kv.next().unwrap_or_default());
            (key, value)
        })
        .collect()
}

fn decode(bytes: &[u8]) -> String {
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A refusal: `#refused`, saying why and what to do.
fn refused(base: &str, status: StatusCode, title: &str, body: Markup) -> Response {
    let mut response = (
        status,
        layout::page(
            base,
            title,
            html! { section #refused { h1 { (title) } (body) } },
        ),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"calendar-sync-dashboard\""),
        );
    }
    response
}

fn read_only(base: &str) -> Response {
    refused(
        base,
        StatusCode::FORBIDDEN,
        "The dashboard is read-only",
        html! {
            p { "No dashboard token is configured, so nothing here can change the outbox." }
            p { "To enable requeue and rebuild, start the worker with "
                code { "CALENDAR_SYNC_DASHBOARD_TOKEN" }
                " set to a secret of at least " (auth::MIN_TOKEN_LEN) " characters, then log in with it." }
        },
    )
}

fn cross_site(base: &str, reason: &str) -> Response {
    refused(
        base,
        StatusCode::FORBIDDEN,
        "Cross-site request refused",
        html! { p { "Nothing was changed: " (reason) "." } },
    )
}

/// The checks every write passes: same site, writes enabled, authenticated.
/// `Some` is the refusal to answer with.
fn refusal(state: &AppState, parts: &Parts, base: &str) -> Option<Response> {
    if let Some(reason) = auth::cross_site(&parts.headers, &parts.uri) {
        return Some(cross_site(base, reason));
    }
    match auth::access(state.options.token.as_ref(), &parts.headers) {
        Access::Writer => None,
        Access::ReadOnly => Some(read_only(base)),
        Access::LoggedOut => Some(refused(
            base,
            StatusCode::UNAUTHORIZED,
            "Log in to act",
            html! {
                p { "Nothing was changed: this needs a session or an "
                    code { "Authorization: Bearer" } " header with the dashboard token." }
                p { a #refused-login href={ (base) "/login" } { "Log in" } }
            },
        )),
    }
}

/// Whether `back` is a path inside the dashboard: `/...`, never `//...`
/// (another host), printable ASCII only.
fn safe_back(back: &str) -> bool {
    back.starts_with('/')
        && !back.starts_with("//")
        && !back.contains('\\')
        && back.bytes().all(|b| b.is_ascii_graphic())
}

/// 303 to `{base}{back}` (or `default`) with `done=<done>` in its query.
fn back_to(base: &str, back: Option<&str>, default: &str, done: &str) -> Response {
    let back = back.filter(|b| safe_back(b)).unwrap_or(default);
    let (path, query) = back.split_once('?').unwrap_or((back, ""));
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("done="))
        .collect();
    let done = format!("done={done}");
    pairs.push(&done);
    Redirect::to(&format!("{base}{path}?{}", pairs.join("&"))).into_response()
}

fn bad_request(base: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        layout::page(
            base,
            "Bad request",
            html! { section #bad-request { h1 { "Nothing was changed" } p { (message) } } },
        ),
    )
        .into_response()
}

/// `POST /items/{id}/requeue`: one dead letter back to PENDING (or nothing,
/// if it is not a dead letter any more).
pub(crate) async fn requeue_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    parts: Parts,
    body: Bytes,
) -> Response {
    let base = layout::base(&parts.extensions);
    if let Some(refusal) = refusal(&state, &parts, &base) {
        return refusal;
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return bad_request(&base, "That is not an item id.");
    };
    let form = parse_form(&body);
    match calendar_sync::ops::requeue(&state.db, Some(&[id]), None).await {
        Ok(n) => {
            tracing::info!(item = %id, requeued = n, "dashboard: requeue one");
            back_to(
                &base,
                field(&form, "back"),
                &format!("/items/{id}"),
                &format!("requeued-{n}"),
            )
        }
        Err(e) => server_error(&base, &e),
    }
}

/// `POST /requeue`: the selected dead letters (repeated `id`), or every dead
/// letter of a `workspace` or of an `error_code` (both: of that code in that
/// workspace).
pub(crate) async fn requeue_many(
    State(state): State<AppState>,
    parts: Parts,
    body: Bytes,
) -> Response {
    let base = layout::base(&parts.extensions);
    if let Some(refusal) = refusal(&state, &parts, &base) {
        return refusal;
    }
    let form = parse_form(&body);
    let ids: Vec<&str> = form
        .iter()
        .filter(|(k, v)| k == "id" && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
        .collect();
    let workspace = field(&form, "workspace");
    let code = field(&form, "error_code");
    let result = if !ids.is_empty() {
        if workspace.is_some() || code.is_some() {
            return bad_request(
                &base,
                "Either select items or name a workspace or error code.",
            );
        }
        let Ok(ids) = ids
            .iter()
            .map(|s| Uuid::parse_str(s))
            .collect::<Result<Vec<_>, _>>()
        else {
            return bad_request(&base, "A selected id is not an item id.");
        };
        calendar_sync::ops::requeue(&state.db, Some(&ids), None)
            .await
            .map_err(|e| Box::new(e) as crate::overview::Failure)
    } else if let Some(code) = code {
        match dead_letters_of_code(&state, code, workspace).await {
            Ok(ids) if ids.is_empty() => Ok(0),
            Ok(ids) => calendar_sync::ops::requeue(&state.db, Some(&ids), None)
                .await
                .map_err(|e| Box::new(e) as crate::overview::Failure),
            Err(e) => Err(e),
        }
    } else if let Some(workspace) = workspace {
        calendar_sync::ops::requeue(&state.db, None, Some(workspace))
            .await
            .map_err(|e| Box::new(e) as crate::overview::Failure)
    } else {
        return bad_request(&base, "No item selected.");
    };
    match result {
        Ok(n) => {
            tracing::info!(
                selected = ids.len(),
                workspace = workspace.unwrap_or(""),
                error_code = code.unwrap_or(""),
                requeued = n,
                "dashboard: requeue"
            );
            back_to(
                &base,
                field(&form, "back"),
                "/items?status=DEAD_LETTER",
                &format!("requeued-{n}"),
            )
        }
        Err(e) => server_error(&base, &e),
    }
}

/// The dead letters whose `last_error` starts with `[code]`, through the
/// DEAD_LETTER partial index (newest first, at most `count_cap`).
async fn dead_letters_of_code(
    state: &AppState,
    code: &str,
    workspace: Option<&str>,
) -> Result<Vec<Uuid>, crate::overview::Failure> {
    let client = state.db.client().await?;
    let cap = i64::from(state.options.count_cap.max(1));
    let rows = client
        .query(
            &format!(
                "SELECT id FROM sync_outbox
                  WHERE status = 'DEAD_LETTER' AND {CODE_SQL} = $1
                    AND ($2::text IS NULL OR workspace_id = $2)
                  ORDER BY updated_at DESC LIMIT $3"
            ),
            &[&code, &workspace, &cap],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// `POST /rebuild`: enqueue a REBUILD_ALL of (`workspace`, `calendar`;
/// "primary" when empty) for a workspace with a stored connection.
pub(crate) async fn rebuild(State(state): State<AppState>, parts: Parts, body: Bytes) -> Response {
    let base = layout::base(&parts.extensions);
    if let Some(refusal) = refusal(&state, &parts, &base) {
        return refusal;
    }
    let form = parse_form(&body);
    let Some(workspace) = field(&form, "workspace") else {
        return bad_request(&base, "Name the workspace to rebuild.");
    };
    let calendar = field(&form, "calendar").unwrap_or("primary");
    let result: Result<Option<Uuid>, crate::overview::Failure> = async {
        let client = state.db.client().await?;
        let known = client
            .query_opt(
                "SELECT 1 FROM google_connections WHERE workspace_id = $1",
                &[&workspace],
            )
            .await?
            .is_some();
        if !known {
            return Ok(None);
        }
        let operation = Operation::RebuildAll(CalendarKey {
            workspace_id: workspace.to_owned(),
            calendar_id: calendar.to_owned(),
        });
        Ok(Some(calendar_sync::enqueue(&**client, &operation).await?))
    }
    .await;
    match result {
        Ok(Some(id)) => {
            tracing::info!(item = %id, workspace, calendar, "dashboard: REBUILD_ALL enqueued");
            back_to(
                &base,
                field(&form, "back"),
                "/connections",
                "rebuild-queued",
            )
        }
        Ok(None) => bad_request(&base, "No workspace of that id has a Google connection."),
        Err(e) => server_error(&base, &e),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Done {
    pub(crate) done: Option<String>,
}

fn login_form(base: &str) -> Markup {
    html! {
        form #login method="post" action={ (base) "/login" } {
            label { "Dashboard token "
                input #token type="password" name="token" autocomplete="current-password" required;
            }
            button #login-button type="submit" { "Log in" }
        }
    }
}

/// `GET /login`.
pub(crate) async fn login_page(
    State(state): State<AppState>,
    Query(done): Query<Done>,
    parts: Parts,
) -> Response {
    let base = layout::base(&parts.extensions);
    let access = auth::access(state.options.token.as_ref(), &parts.headers);
    let content = html! {
        h1 { "Log in" }
        (layout::notice_markup(done.done.as_deref()))
        @if access == Access::ReadOnly {
            p #read-only {
                "This dashboard is read-only: no dashboard token is configured. Start the worker with "
                code { "CALENDAR_SYNC_DASHBOARD_TOKEN" } " (at least " (auth::MIN_TOKEN_LEN)
                " characters) to enable requeue and rebuild."
            }
        } @else {
            @if access == Access::Writer { p #logged-in { "You are logged in." } }
            p { "Requeue and rebuild need the dashboard token. A session lasts 12 hours." }
            (login_form(&base))
        }
    };
    layout::page_for(&base, "Log in", Some(access), content).into_response()
}

/// `POST /login`: the right token sets the session cookie and goes to the
/// overview; a wrong one is a 401 with the form again.
pub(crate) async fn login(State(state): State<AppState>, parts: Parts, body: Bytes) -> Response {
    let base = layout::base(&parts.extensions);
    if let Some(reason) = auth::cross_site(&parts.headers, &parts.uri) {
        return cross_site(&base, reason);
    }
    let Some(token) = state.options.token.as_ref() else {
        return read_only(&base);
    };
    let form = parse_form(&body);
    let given = field(&form, "token").unwrap_or("");
    if auth::token_matches(token, given) {
        let cookie = auth::mint_session(token, auth::now());
        let secure = auth::over_https(&parts.headers, &parts.uri);
        let mut response = Redirect::to(&layout::home(&base)).into_response();
        if let Ok(value) = HeaderValue::from_str(&auth::set_cookie(&base, Some(&cookie), secure)) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        tracing::info!("dashboard: logged in");
        response
    } else {
        tracing::warn!("dashboard: a login with a wrong token");
        let content = html! {
            h1 { "Log in" }
            p #login-error role="alert" { "That is not the dashboard token." }
            (login_form(&base))
        };
        let mut response = (
            StatusCode::UNAUTHORIZED,
            layout::page_for(&base, "Log in", Some(Access::LoggedOut), content),
        )
            .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"calendar-sync-dashboard\""),
        );
        response
    }
}

/// `POST /logout`: clears the session cookie.
pub(crate) async fn logout(parts: Parts) -> Response {
    let base = layout::base(&parts.extensions);
    if let Some(reason) = auth::cross_site(&parts.headers, &parts.uri) {
        return cross_site(&base, reason);
    }
    let secure = auth::over_https(&parts.headers, &parts.uri);
    let mut response = Redirect::to(&format!("{base}/login?done=logged-out")).into_response();
    if let Ok(value) = HeaderValue::from_str(&auth::set_cookie(&base, None, secure)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        assert_eq!(
            parse_form(b"id=a&id=b&workspace=ws+1%2Fx&bad=%zz&e="),
            vec![
                ("id".into(), "a".into()),
                ("id".into(), "b".into()),
                ("workspace".into(), "ws 1/x".into()),
                ("bad".into(), "%zz".into()),
                ("e".into(), String::new()),
            ]
        );
    }

    #[test]
    fn back_stays_inside() {
        assert!(safe_back("/items?status=DEAD_LETTER"));
        assert!(!safe_back("//evil.example/"));
        assert!(!safe_back("https://evil.example/"));
        assert!(!safe_back("/\\evil.example"));
        assert!(!safe_back("/a b"));
    }
}
