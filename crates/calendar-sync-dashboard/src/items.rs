//! `/items` (filters, search, keyset pages) and `/items/{id}`.
//!
//! Every list reads either a partial index (PENDING, PROCESSING,
//! DEAD_LETTER) or a bounded window of the newest items by primary key (the
//! ids are time-ordered UUIDs): no page's cost grows with the history.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::actions::Done;
use crate::auth::{self, Access};
use crate::layout::{self, CODE_SQL, encode_query_value, optional_timestamp, thousands, timestamp};
use crate::overview::Failure;
use crate::{AppState, server_error};

const STATUSES: [&str; 5] = [
    "PENDING",
    "PROCESSING",
    "DEAD_LETTER",
    "COMPLETED",
    "SUPERSEDED",
];
const OPERATIONS: [&str; 3] = ["UPSERT_EVENT", "CANCEL_EVENT", "REBUILD_ALL"];

/// The list's query string. Empty values count as absent.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Filters {
    status: Option<String>,
    operation: Option<String>,
    workspace: Option<String>,
    calendar: Option<String>,
    source_type: Option<String>,
    source_id: Option<String>,
    code: Option<String>,
    /// One box: an item id, or a source id.
    q: Option<String>,
    /// The id of the last item of the previous page.
    before: Option<String>,
    /// The outcome of the action that led here (`p#notice`).
    done: Option<String>,
}

fn present(v: Option<&String>) -> Option<&str> {
    v.map(|s| s.trim()).filter(|s| !s.is_empty())
}

impl Filters {
    /// The query string of these filters, without the cursor.
    fn query_string(&self) -> String {
        let pairs = [
            ("status", &self.status),
            ("operation", &self.operation),
            ("workspace", &self.workspace),
            ("calendar", &self.calendar),
            ("source_type", &self.source_type),
            ("source_id", &self.source_id),
            ("code", &self.code),
            ("q", &self.q),
        ];
        pairs
            .iter()
            .filter_map(|(k, v)| {
                present(v.as_ref()).map(|v| format!("{k}={}", encode_query_value(v)))
            })
            .collect::<Vec<_>>()
            .join("&")
    }
}

#[derive(Debug)]
struct ItemRow {
    id: Uuid,
    status: String,
    operation: String,
    workspace_id: Option<String>,
    calendar_id: Option<String>,
    source_type: Option<String>,
    source_id: Option<String>,
    title: Option<String>,
    attempts: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_error: Option<String>,
}

const LIST_COLUMNS: &str = "id, status, operation, workspace_id, calendar_id, source_type, \
     source_id, payload -> 'event' ->> 'title', attempts, created_at, updated_at, last_error";

fn item_row(r: &tokio_postgres::Row) -> ItemRow {
    ItemRow {
        id: r.get(0),
        status: r.get(1),
        operation: r.get(2),
        workspace_id: r.get(3),
        calendar_id: r.get(4),
        source_type: r.get(5),
        source_id: r.get(6),
        title: r.get(7),
        attempts: r.get(8),
        created_at: r.get(9),
        updated_at: r.get(10),
        last_error: r.get(11),
    }
}

#[derive(Debug)]
struct Listing {
    items: Vec<ItemRow>,
    /// The cursor of the next (older) page.
    next: Option<Uuid>,
    /// In window mode: how many of the newest items this page looked at.
    window: Option<(i64, Option<DateTime<Utc>>)>,
}

async fn read_list(
    state: &AppState,
    f: &Filters,
    search: Option<&str>,
) -> Result<Listing, Failure> {
    let page = i64::from(state.options.page_size.max(1));
    let window = i64::from(state.options.scan_window.max(1));
    let status = present(f.status.as_ref()).filter(|s| STATUSES.contains(s));
    let before = present(f.before.as_ref()).and_then(|s| Uuid::parse_str(s).ok());

    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    let mut add = |sql: &str, value: String, params: &mut Vec<Box<dyn ToSql + Sync + Send>>| {
        params.push(Box::new(value));
        conditions.push(format!("{sql} = ${}", params.len()));
    };
    if let Some(op) = present(f.operation.as_ref()) {
        add("operation", op.to_owned(), &mut params);
    }
    if let Some(v) = present(f.workspace.as_ref()) {
        add("workspace_id", v.to_owned(), &mut params);
    }
    if let Some(v) = present(f.calendar.as_ref()) {
        add("calendar_id", v.to_owned(), &mut params);
    }
    if let Some(v) = present(f.source_type.as_ref()) {
        add("source_type", v.to_owned(), &mut params);
    }
    let source = present(f.source_id.as_ref()).or(search);
    if let Some(v) = source {
        add("source_id", v.to_owned(), &mut params);
    }
    if let Some(v) = present(f.code.as_ref()) {
        add(CODE_SQL, v.to_owned(), &mut params);
    }

    let mut client = state.db.client().await?;
    let tx = client.build_transaction().read_only(true).start().await?;
    tx.batch_execute("SET LOCAL statement_timeout = '5s'")
        .await?;

    let indexed = matches!(status, Some("PENDING" | "PROCESSING" | "DEAD_LETTER"));
    // A source id (the search box, or the filter) goes through
    // sync_outbox_source_id_idx: every item of the source, finished or not,
    // whatever its age.
    let by_source = !indexed && source.is_some();
    let sql = if by_source {
        if let Some(status) = status {
            conditions.insert(0, format!("status = '{status}'"));
        }
        if let Some(before) = before {
            params.push(Box::new(before));
            conditions.push(format!("id < ${}", params.len()));
        }
        params.push(Box::new(page + 1));
        format!(
            "SELECT {LIST_COLUMNS} FROM sync_outbox WHERE {} ORDER BY id DESC LIMIT ${}",
            conditions.join(" AND "),
            params.len()
        )
    } else if let Some(status) = status.filter(|_| indexed) {
        // Through the status's partial index: its size is the queue's (or
        // the dead letters'), not the history's.
        conditions.insert(0, format!("status = '{status}'"));
        let dead = status == "DEAD_LETTER";
        let order = if dead {
            "updated_at DESC, seq DESC"
        } else {
            "seq DESC"
        };
        if let Some(before) = before {
            params.push(Box::new(before));
            let n = params.len();
            if dead {
                // The first condition is the one the index can use.
                conditions.push(format!(
                    "updated_at <= (SELECT updated_at FROM sync_outbox WHERE id = ${n})"
                ));
                conditions.push(format!(
                    "(updated_at, seq) < (SELECT updated_at, seq FROM sync_outbox WHERE id = ${n})"
                ));
            } else {
                conditions.push(format!(
                    "seq < (SELECT seq FROM sync_outbox WHERE id = ${n})"
                ));
            }
        }
        params.push(Box::new(page + 1));
        format!(
            "SELECT {LIST_COLUMNS} FROM sync_outbox WHERE {} ORDER BY {order} LIMIT ${}",
            conditions.join(" AND "),
            params.len()
        )
    } else {
        // A window of the newest items by primary key, filtered.
        if let Some(status) = status {
            conditions.insert(0, format!("status = '{status}'"));
        }
        let window_where = before.map(|b| {
            params.push(Box::new(b));
            format!("WHERE id < ${}", params.len())
        });
        params.push(Box::new(window));
        let window_param = params.len();
        params.push(Box::new(page + 1));
        format!(
            "SELECT {LIST_COLUMNS} FROM (SELECT * FROM sync_outbox {} ORDER BY id DESC LIMIT ${window_param}) w
              {} ORDER BY id DESC LIMIT ${}",
            window_where.unwrap_or_default(),
            if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            },
            params.len()
        )
    };
    let refs: Vec<&(dyn ToSql + Sync)> =
        params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
    let mut items: Vec<ItemRow> = tx.query(&sql, &refs).await?.iter().map(item_row).collect();
    let full = i64::try_from(items.len()).unwrap_or(i64::MAX) > page;
    items.truncate(usize::try_from(page).unwrap_or(usize::MAX));
    let mut next = if full {
        items.last().map(|i| i.id)
    } else {
        None
    };
    let mut window_info = None;
    if !indexed && !by_source && !full {
        // The page came up short: was the window the whole rest of the table?
        let row = tx
            .query_one(
                "SELECT count(*), (array_agg(id ORDER BY id))[1], min(created_at) FROM
                   (SELECT id, created_at FROM sync_outbox WHERE ($1::uuid IS NULL OR id < $1)
                     ORDER BY id DESC LIMIT $2) w",
                &[&before, &window],
            )
            .await?;
        let scanned: i64 = row.get(0);
        if scanned >= window {
            next = row.get(1);
            window_info = Some((scanned, row.get(2)));
        }
    }
    tx.commit().await?;
    Ok(Listing {
        items,
        next,
        window: window_info,
    })
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Query(filters): Query<Filters>,
    parts: Parts,
) -> Response {
    let base = layout::base(&parts.extensions);
    let access = auth::access(state.options.token.as_ref(), &parts.headers);
    let q = present(filters.q.as_ref()).map(str::to_owned);
    if let Some(id) = q.as_deref().and_then(|q| Uuid::parse_str(q).ok()) {
        match item_exists(&state, id).await {
            Ok(true) => {
                return Redirect::to(&format!("{base}/items/{id}")).into_response();
            }
            Ok(false) => {} // perhaps a source id that looks like a UUID
            Err(e) => return server_error(&base, &e),
        }
    }
    match read_list(&state, &filters, q.as_deref()).await {
        Ok(listing) => layout::page_for(
            &base,
            "Items",
            Some(access),
            render_list(&base, &state, &filters, q.as_deref(), &listing, access),
        )
        .into_response(),
        Err(e) => server_error(&base, &e),
    }
}

async fn item_exists(state: &AppState, id: Uuid) -> Result<bool, Failure> {
    let client = state.db.client().await?;
    Ok(client
        .query_opt("SELECT 1 FROM sync_outbox WHERE id = $1", &[&id])
        .await?
        .is_some())
}

fn render_list(
    base: &str,
    state: &AppState,
    f: &Filters,
    search: Option<&str>,
    listing: &Listing,
    access: Access,
) -> Markup {
    let value = |v: &Option<String>| present(v.as_ref()).unwrap_or("").to_owned();
    let status = value(&f.status);
    let operation = value(&f.operation);
    let workspace = present(f.workspace.as_ref());
    let code = present(f.code.as_ref());
    let dead = status == "DEAD_LETTER";
    let writer = access == Access::Writer;
    let back = if f.query_string().is_empty() {
        "/items".to_owned()
    } else {
        format!("/items?{}", f.query_string())
    };
    let table = items_table(base, listing, dead && writer);
    html! {
        h1 { "Items" }
        (layout::notice_markup(f.done.as_deref()))
        form.filters method="get" action={ (base) "/items" } {
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for s in STATUSES { option value=(s) selected[status == s] { (s) } }
                }
            }
            label { "Operation"
                select name="operation" {
                    option value="" { "any" }
                    @for o in OPERATIONS { option value=(o) selected[operation == o] { (o) } }
                }
            }
            label { "Workspace" input name="workspace" value=(value(&f.workspace)); }
            label { "Calendar" input name="calendar" value=(value(&f.calendar)); }
            label { "Source type" input name="source_type" value=(value(&f.source_type)); }
            label { "Source id" input name="source_id" value=(search.map_or_else(|| value(&f.source_id), str::to_owned)); }
            label { "Error code" input name="code" value=(value(&f.code)); }
            button type="submit" { "Filter" }
            a href={ (base) "/items" } { "Clear" }
        }
        @if let Some(q) = search {
            p.note { "Items whose source id is " code { (q) } ", finished or not, newest first (no item has that id)." }
        }
        @if writer {
            @if let Some(w) = workspace {
                form #requeue-workspace .action method="post" action={ (base) "/requeue" } {
                    input type="hidden" name="back" value=(back);
                    input type="hidden" name="workspace" value=(w);
                    button #requeue-workspace-button type="submit" { "Requeue every dead letter of workspace " (w) }
                }
            }
            @if let Some(c) = code {
                form #requeue-code .action method="post" action={ (base) "/requeue" } {
                    input type="hidden" name="back" value=(back);
                    input type="hidden" name="error_code" value=(c);
                    @if let Some(w) = workspace { input type="hidden" name="workspace" value=(w); }
                    button #requeue-code-button type="submit" {
                        "Requeue every dead letter with error code " (c)
                        @if let Some(w) = workspace { " of workspace " (w) }
                    }
                }
            }
        } @else if dead || workspace.is_some() || code.is_some() {
            (layout::login_to_act(base, access))
        }
        @if dead && writer && !listing.items.is_empty() {
            form #requeue-selected method="post" action={ (base) "/requeue" } {
                input type="hidden" name="back" value=(back);
                (table)
                button #requeue-selected-button type="submit" { "Requeue selected" }
            }
        } @else {
            (table)
        }
        @if let Some((scanned, oldest)) = listing.window {
            p.note {
                "This page looked at the " (thousands(scanned)) " newest items"
                @if let Some(oldest) = oldest { " (back to " (timestamp(&oldest)) ")" }
                "; older ones are on the next page. Finished items have no index but the primary key, so a page never reads more than "
                (thousands(i64::from(state.options.scan_window))) " of them."
            }
        }
        nav.pager {
            @if f.before.is_some() {
                a href={ (base) "/items?" (f.query_string()) } { "Newest" }
            }
            @if let Some(next) = listing.next {
                a rel="next" href={ (base) "/items?" (f.query_string()) @if !f.query_string().is_empty() { "&" } "before=" (next) } { "Older →" }
            }
        }
    }
}

/// The items table; with a checkbox per row (`name="id"`) when the rows can
/// be selected for a requeue.
fn items_table(base: &str, listing: &Listing, selectable: bool) -> Markup {
    html! {
        @if listing.items.is_empty() {
            p #no-items { "No items match." }
        } @else {
            table #items {
                thead { tr {
                    @if selectable { th { span.visually-hidden { "Select" } } }
                    th { "Item" } th { "Status" } th { "Operation" } th { "Workspace" } th { "Calendar" }
                    th { "Source" } th { "Title" } th.num { "Attempts" } th { "Created" } th { "Updated" } th { "Last error" }
                } }
                tbody {
                    @for i in &listing.items {
                        tr {
                            @if selectable {
                                td { input type="checkbox" name="id" value=(i.id) aria-label={ "Select " (i.id) }; }
                            }
                            td.mono { a href={ (base) "/items/" (i.id) } { (i.id) } }
                            td { span.status.{ "status-" (i.status) } { (i.status) } }
                            td { (i.operation) }
                            td { (i.workspace_id.as_deref().unwrap_or("")) }
                            td { (i.calendar_id.as_deref().unwrap_or("")) }
                            td { (i.source_type.as_deref().unwrap_or("")) " " (i.source_id.as_deref().unwrap_or("")) }
                            td { (i.title.as_deref().unwrap_or("")) }
                            td.num { (i.attempts) }
                            td { (timestamp(&i.created_at)) }
                            td { (timestamp(&i.updated_at)) }
                            td { (i.last_error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
struct Item {
    id: Uuid,
    seq: i64,
    operation: String,
    payload: serde_json::Value,
    status: String,
    attempts: i32,
    rate_limited: i32,
    next_attempt_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    processed_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    superseded_by: Option<Uuid>,
    result: Option<serde_json::Value>,
    workspace_id: Option<String>,
    calendar_id: Option<String>,
    source_type: Option<String>,
    source_id: Option<String>,
}

#[derive(Debug)]
struct Sibling {
    id: Uuid,
    status: String,
    operation: String,
    created_at: DateTime<Utc>,
}

#[derive(Debug)]
struct Binding {
    google_event_id: String,
    calendar_id: String,
    generation: i32,
    state: String,
    content_hash: Option<String>,
    content: Option<serde_json::Value>,
    event_type: Option<String>,
    last_outbox_id: Option<Uuid>,
    updated_at: DateTime<Utc>,
    /// Google's own `htmlLink`, once a write or read returned it.
    html_link: Option<String>,
    last_written_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct Detail {
    item: Item,
    siblings: Vec<Sibling>,
    binding: Option<Binding>,
}

/// A source's other items listed at most.
const SIBLINGS: i64 = 50;

async fn read_detail(state: &AppState, id: Uuid) -> Result<Option<Detail>, Failure> {
    let mut client = state.db.client().await?;
    let tx = client.build_transaction().read_only(true).start().await?;
    tx.batch_execute("SET LOCAL statement_timeout = '5s'")
        .await?;
    let Some(r) = tx
        .query_opt(
            "SELECT id, seq, operation, payload, status, attempts, rate_limited, next_attempt_at,
                    created_at, updated_at, processed_at, last_error, superseded_by, result,
                    workspace_id, calendar_id, source_type, source_id
               FROM sync_outbox WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let item = Item {
        id: r.get(0),
        seq: r.get(1),
        operation: r.get(2),
        payload: r.get(3),
        status: r.get(4),
        attempts: r.get(5),
        rate_limited: r.get(6),
        next_attempt_at: r.get(7),
        created_at: r.get(8),
        updated_at: r.get(9),
        processed_at: r.get(10),
        last_error: r.get(11),
        superseded_by: r.get(12),
        result: r.get(13),
        workspace_id: r.get(14),
        calendar_id: r.get(15),
        source_type: r.get(16),
        source_id: r.get(17),
    };
    let mut siblings = Vec::new();
    let mut binding = None;
    if let (Some(w), Some(c), Some(t), Some(s)) = (
        &item.workspace_id,
        &item.calendar_id,
        &item.source_type,
        &item.source_id,
    ) {
        // Every unfinished item of the source (its partial index), and the
        // finished ones among the scan window's items around this one (by
        // primary key): bounded whatever the history.
        let half = i64::from(state.options.scan_window.max(2)) / 2;
        siblings = tx
            .query(
                "SELECT id, status, operation, created_at FROM (
                     SELECT id, seq, status, operation, created_at FROM sync_outbox
                      WHERE status IN ('PENDING', 'PROCESSING')
                        AND workspace_id = $1 AND calendar_id = $2 AND source_type = $3 AND source_id = $4
                     UNION
                     SELECT id, seq, status, operation, created_at FROM (
                         (SELECT * FROM sync_outbox WHERE id <= $5 ORDER BY id DESC LIMIT $6)
                         UNION ALL
                         (SELECT * FROM sync_outbox WHERE id > $5 ORDER BY id LIMIT $6)) w
                      WHERE workspace_id = $1 AND calendar_id = $2 AND source_type = $3 AND source_id = $4
                 ) s ORDER BY seq LIMIT $7",
                &[w, c, t, s, &item.id, &half, &SIBLINGS],
            )
            .await?
            .iter()
            .map(|r| Sibling {
                id: r.get(0),
                status: r.get(1),
                operation: r.get(2),
                created_at: r.get(3),
            })
            .collect();
        binding = tx
            .query_opt(
                "SELECT google_event_id, generation, state, content_hash, content, event_type,
                        last_outbox_id, updated_at, calendar_id, html_link, last_written_at
                   FROM calendar_event_bindings
                  WHERE workspace_id = $1 AND calendar_id = $2 AND source_type = $3 AND source_id = $4",
                &[w, c, t, s],
            )
            .await?
            .map(|r| Binding {
                google_event_id: r.get(0),
                generation: r.get(1),
                state: r.get(2),
                content_hash: r.get(3),
                content: r.get(4),
                event_type: r.get(5),
                last_outbox_id: r.get(6),
                updated_at: r.get(7),
                calendar_id: r.get(8),
                html_link: r.get(9),
                last_written_at: r.get(10),
            });
    }
    tx.commit().await?;
    Ok(Some(Detail {
        item,
        siblings,
        binding,
    }))
}

pub(crate) async fn detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(done): Query<Done>,
    parts: Parts,
) -> Response {
    let base = layout::base(&parts.extensions);
    let access = auth::access(state.options.token.as_ref(), &parts.headers);
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            layout::page(
                &base,
                "Not found",
                html! { h1 { "No such item" } p { "No item has the id " code { (id) } "." } },
            ),
        )
            .into_response()
    };
    let Ok(uuid) = Uuid::parse_str(&id) else {
        return not_found();
    };
    match read_detail(&state, uuid).await {
        Ok(Some(d)) => {
            let content = render_detail(&base, &state, &d, access, done.done.as_deref());
            layout::page_for(&base, "Item", Some(access), content).into_response()
        }
        Ok(None) => not_found(),
        Err(e) => server_error(&base, &e),
    }
}

/// The event's page in Google Calendar when the binding has no `htmlLink`
/// of Google's (written before V5), built as Google builds it: `eid` is the base64 of "<event id> <calendar id>" without padding (the
/// bindings keep the calendar's resolved id, its owner's address for
/// "primary"). Opens for a user who can see that calendar.
fn event_link(event_id: &str, calendar_id: &str) -> String {
    let eid = data_encoding::BASE64_NOPAD.encode(format!("{event_id} {calendar_id}").as_bytes());
    format!(
        "https://www.google.com/calendar/event?eid={}",
        encode_query_value(&eid)
    )
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn render_detail(
    base: &str,
    state: &AppState,
    d: &Detail,
    access: Access,
    done: Option<&str>,
) -> Markup {
    let i = &d.item;
    let item_link = |id: &Uuid| html! { a.mono href={ (base) "/items/" (id) } { (id) } };
    html! {
        h1 { "Item " span.mono { (i.id) } }
        (layout::notice_markup(done))
        @if i.status == "DEAD_LETTER" {
            @if access == Access::Writer {
                form #requeue .action method="post" action={ (base) "/items/" (i.id) "/requeue" } {
                    input type="hidden" name="back" value={ "/items/" (i.id) };
                    button #requeue-button type="submit" { "Requeue this dead letter" }
                }
            } @else {
                (layout::login_to_act(base, access))
            }
        }
        dl.fields #item {
            dt { "Status" } dd { span.status.{ "status-" (i.status) } { (i.status) } }
            dt { "Operation" } dd { (i.operation) }
            dt { "Workspace" } dd { (i.workspace_id.as_deref().unwrap_or("—")) }
            dt { "Calendar" } dd { (i.calendar_id.as_deref().unwrap_or("—")) }
            dt { "Source" } dd { (i.source_type.as_deref().unwrap_or("—")) " " (i.source_id.as_deref().unwrap_or("")) }
            dt { "Sequence" } dd { (i.seq) }
            dt { "Attempts" } dd { (i.attempts) }
            dt { "Rate limited" } dd { (i.rate_limited) }
            dt { "Next attempt" } dd { (timestamp(&i.next_attempt_at)) }
            dt { "Created" } dd { (timestamp(&i.created_at)) }
            dt { "Updated" } dd { (timestamp(&i.updated_at)) }
            dt { "Processed" } dd { (optional_timestamp(i.processed_at.as_ref())) }
            dt { "Last error" } dd #last-error { (i.last_error.as_deref().unwrap_or("—")) }
            dt { "Superseded by" } dd #superseded-by {
                @match &i.superseded_by { Some(s) => (item_link(s)), None => "—" }
            }
        }
        h2 { "Payload" }
        pre #payload { (pretty(&i.payload)) }
        @if let Some(result) = &i.result {
            h2 { "Result" }
            pre #result { (pretty(result)) }
        }
        @if i.source_id.is_some() {
            h2 { "The source's items, in order" }
            p.note {
                "Every unfinished one, and the finished ones among the "
                (thousands(i64::from(state.options.scan_window))) " items around this one; at most " (SIBLINGS) ". "
                a href={ (base) "/items?workspace=" (encode_query_value(i.workspace_id.as_deref().unwrap_or("")))
                    "&calendar=" (encode_query_value(i.calendar_id.as_deref().unwrap_or("")))
                    "&source_type=" (encode_query_value(i.source_type.as_deref().unwrap_or("")))
                    "&source_id=" (encode_query_value(i.source_id.as_deref().unwrap_or(""))) } { "All of them" }
            }
            table #source-items {
                thead { tr { th { "Item" } th { "Status" } th { "Operation" } th { "Created" } } }
                tbody {
                    @for s in &d.siblings {
                        tr.current[s.id == i.id] {
                            td { @if s.id == i.id { span.mono { (s.id) } " (this one)" } @else { (item_link(&s.id)) } }
                            td { span.status.{ "status-" (s.status) } { (s.status) } }
                            td { (s.operation) }
                            td { (timestamp(&s.created_at)) }
                        }
                    }
                }
            }
            h2 { "Binding" }
            @match &d.binding {
                None => p #binding { "No event is bound to this source yet." },
                Some(b) => dl.fields #binding {
                    dt { "Google event id" } dd.mono { (b.google_event_id) }
                    dt { "State" } dd { (b.state) }
                    @if b.state == "LIVE" {
                        dt { "In Google Calendar" }
                        dd { a #event-link href=(b.html_link.clone().unwrap_or_else(|| event_link(&b.google_event_id, &b.calendar_id))) rel="noreferrer" { "Open the event" } }
                    }
                    dt { "Generation" } dd { (b.generation) }
                    dt { "Event type" } dd { (b.event_type.as_deref().unwrap_or("—")) }
                    dt { "Content hash" } dd.mono { (b.content_hash.as_deref().unwrap_or("—")) }
                    dt { "Last item" } dd { @match &b.last_outbox_id { Some(l) => (item_link(l)), None => "—" } }
                    dt { "Updated" } dd { (timestamp(&b.updated_at)) }
                    dt { "Last written to Google" } dd { @match &b.last_written_at { Some(t) => (timestamp(t)), None => "—" } }
                    @if let Some(content) = &b.content {
                        dt { "Last synced content" } dd { pre { (pretty(content)) } }
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::event_link;

    #[test]
    fn event_links_carry_the_event_and_its_calendar() {
        let link = event_link("ijjc63j5tao5sk9pm08e3jgvctsm2d9k", "ws0@example.com");
        let eid = link
            .strip_prefix("https://www.google.com/calendar/event?eid=")
            .expect("Google Calendar's event page");
        let eid = eid.replace("%2B", "+").replace("%2F", "/");
        let decoded = data_encoding::BASE64_NOPAD
            .decode(eid.as_bytes())
            .expect("base64 without padding");
        assert_eq!(decoded, b"ijjc63j5tao5sk9pm08e3jgvctsm2d9k ws0@example.com");
    }
}
