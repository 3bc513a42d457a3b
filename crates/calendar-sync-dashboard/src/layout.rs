//! The page frame and the small formatting helpers every page shares.

use axum::extract::NestedPath;
use axum::http::Extensions;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use crate::assets;
use crate::auth::Access;

/// The prefix the router is nested at ("" at the root), without a trailing
/// slash: every link is `{base}/...`.
pub(crate) fn base(extensions: &Extensions) -> String {
    extensions
        .get::<NestedPath>()
        .map(|p| p.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// The overview's link: the prefix itself (`Router::nest` at `/dashboard`
/// routes `/dashboard`), or `/` at the root.
pub(crate) fn home(base: &str) -> String {
    if base.is_empty() {
        "/".to_owned()
    } else {
        base.to_owned()
    }
}

pub(crate) fn page(base: &str, title: &str, content: Markup) -> Markup {
    page_for(base, title, None, content)
}

/// [`page`], with the login or logout control of a request's [`Access`]
/// (none on a read-only dashboard).
pub(crate) fn page_for(base: &str, title: &str, access: Option<Access>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · calendar-sync" }
                link rel="stylesheet" href=(assets::stylesheet_href(base));
            }
            body {
                header.top {
                    a.brand href=(home(base)) { "calendar-sync" }
                    a href=(home(base)) { "Overview" }
                    a href={ (base) "/items" } { "Items" }
                    a href={ (base) "/connections" } { "Connections" }
                    form method="get" action={ (base) "/items" } role="search" {
                        input type="search" name="q" placeholder="Item id or source id" aria-label="Item id or source id";
                        button type="submit" { "Find" }
                    }
                    @match access {
                        Some(Access::Writer) => form #logout method="post" action={ (base) "/logout" } {
                            button #logout-button type="submit" { "Log out" }
                        },
                        Some(Access::LoggedOut) => a #login-link href={ (base) "/login" } { "Log in" },
                        _ => {},
                    }
                }
                main { (content) }
            }
        }
    }
}

/// 1234567 -> "1,234,567".
pub(crate) fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn timestamp(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub(crate) fn optional_timestamp(t: Option<&DateTime<Utc>>) -> String {
    t.map_or_else(|| "—".to_owned(), timestamp)
}

/// A duration in seconds as "3 d 4 h", "5 min 2 s", "0.4 s".
pub(crate) fn age(seconds: f64) -> String {
    if seconds < 10.0 {
        return format!("{seconds:.1} s");
    }
    // Whole seconds: an age is never negative and never near i64's range.
    #[allow(clippy::cast_possible_truncation)]
    let s = seconds.max(0.0).round() as i64;
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min {sec} s")
    } else {
        format!("{sec} s")
    }
}

/// Percent-encodes a query-string value.
pub(crate) fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The error code of a `last_error` (`[code] message`), as the SQL of the
/// pages computes it.
pub(crate) const CODE_SQL: &str =
    r"coalesce(substring(last_error FROM '^\[([^\]]+)\]'), 'unknown')";

/// The short message of `?done=...` after an action: only known forms are
/// shown (nothing of the query string is echoed but a number).
pub(crate) fn notice(done: Option<&str>) -> Option<String> {
    let done = done?;
    if let Some(n) = done.strip_prefix("requeued-") {
        let n: u64 = n.parse().ok()?;
        return Some(match n {
            0 => "Nothing was requeued: no item was a dead letter any more.".to_owned(),
            1 => "Requeued 1 dead letter.".to_owned(),
            n => format!("Requeued {n} dead letters."),
        });
    }
    match done {
        "rebuild-queued" => Some("Enqueued a REBUILD_ALL.".to_owned()),
        "logged-out" => Some("Logged out.".to_owned()),
        _ => None,
    }
}

/// `p#notice`, when there is one.
pub(crate) fn notice_markup(done: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = notice(done) {
            p #notice role="status" { (text) }
        }
    }
}

/// Where the write actions would be, when the visitor is not logged in.
pub(crate) fn login_to_act(base: &str, access: Access) -> Markup {
    html! {
        @if access == Access::LoggedOut {
            p.login-to-act { a href={ (base) "/login" } { "Log in to act" } " (requeue, rebuild)." }
        }
    }
}
