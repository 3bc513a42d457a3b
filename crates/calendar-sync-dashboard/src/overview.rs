//! `/`: counts by status, the oldest pending age, dead letters by error
//! code, and the connections that need an operator.

use axum::extract::State;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use crate::layout::{self, CODE_SQL, age, encode_query_value, thousands, timestamp};
use crate::{AppState, server_error};
use crate::{auth, charts};

pub(crate) type Failure = Box<dyn std::error::Error + Send + Sync>;

/// A count as the page shows it.
#[derive(Debug)]
enum Count {
    Exact(i64),
    /// More than the cap: the cap is shown with a "+", and the planner's
    /// estimate beside it when the table has statistics.
    AtLeast {
        cap: i64,
        estimate: Option<i64>,
    },
    Estimate(i64),
    /// Past the size for exact counts, and no statistics yet.
    Unknown,
}

#[derive(Debug)]
struct DeadLetterCode {
    code: String,
    count: i64,
    newest_at: DateTime<Utc>,
    newest_error: Option<String>,
}

#[derive(Debug)]
struct Connection {
    workspace_id: String,
    google_email: String,
    is_valid: bool,
    invalid_reason: Option<String>,
    paused_until: Option<DateTime<Utc>>,
    breaker_open_until: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug)]
struct Overview {
    counts: Vec<(&'static str, Count)>,
    table_bytes: i64,
    oldest_pending: Option<(DateTime<Utc>, f64)>,
    dead_letters: Vec<DeadLetterCode>,
    dead_letters_capped: bool,
    connections_valid: i64,
    connections_invalid: i64,
    connections_paused: i64,
    connections_circuit_open: i64,
    attention: Vec<Connection>,
    charts: charts::Charts,
}

/// The planner's own estimate of each status in `$1`: rows per page at the
/// last ANALYZE, scaled to the table's current size, times the status's
/// frequency in the sample. NULL while the table has no statistics.
const ESTIMATE_SQL: &str = "WITH c AS (
         SELECT CASE WHEN relpages > 0 AND reltuples >= 0
                     THEN reltuples::float8 / relpages
                          * (pg_relation_size(oid)::float8 / current_setting('block_size')::float8)
                END AS total,
                relnamespace::regnamespace::text AS schema, relname
           FROM pg_class WHERE oid = 'sync_outbox'::regclass),
     s AS (
         SELECT unnest(ps.most_common_vals::text::text[]) AS status,
                unnest(ps.most_common_freqs)::float8 AS freq
           FROM pg_stats ps, c
          WHERE ps.schemaname = c.schema AND ps.tablename = c.relname
            AND ps.attname = 'status')
     SELECT st,
            CASE WHEN c.total IS NOT NULL AND EXISTS (SELECT 1 FROM s)
                 THEN round(c.total * coalesce(s.freq, 0))::bigint END
       FROM unnest($1::text[]) AS st
      CROSS JOIN c
       LEFT JOIN s ON s.status = st";

/// Connections listed at most (invalid or paused ones).
const CONNECTIONS_LISTED: i64 = 100;

async fn read(state: &AppState) -> Result<Overview, Failure> {
    let options = &state.options;
    let cap = i64::from(options.count_cap);
    let mut client = state.db.client().await?;
    let tx = client.build_transaction().read_only(true).start().await?;
    tx.batch_execute("SET LOCAL statement_timeout = '5s'")
        .await?;

    // Each through its partial index, and never past the cap.
    let row = tx
        .query_one(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM sync_outbox WHERE status = 'PENDING' LIMIT $1) t),
                    (SELECT count(*) FROM (SELECT 1 FROM sync_outbox WHERE status = 'PROCESSING' LIMIT $1) t),
                    (SELECT count(*) FROM (SELECT 1 FROM sync_outbox WHERE status = 'DEAD_LETTER' LIMIT $1) t),
                    pg_relation_size('sync_outbox')",
            &[&(cap + 1)],
        )
        .await?;
    let capped = |n: i64| {
        if n > cap {
            Count::AtLeast {
                cap,
                estimate: None,
            }
        } else {
            Count::Exact(n)
        }
    };
    let table_bytes: i64 = row.get(3);
    let mut counts = vec![
        ("PENDING", capped(row.get(0))),
        ("PROCESSING", capped(row.get(1))),
        ("DEAD_LETTER", capped(row.get(2))),
    ];
    let finished_exact = table_bytes <= options.exact_count_max_bytes;
    if finished_exact {
        let row = tx
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETED'),
                        count(*) FILTER (WHERE status = 'SUPERSEDED')
                   FROM sync_outbox",
                &[],
            )
            .await?;
        counts.push(("COMPLETED", Count::Exact(row.get(0))));
        counts.push(("SUPERSEDED", Count::Exact(row.get(1))));
    } else {
        counts.push(("COMPLETED", Count::Unknown));
        counts.push(("SUPERSEDED", Count::Unknown));
    }
    // The planner's estimate for the finished statuses of a big table and for
    // every status past the cap: cheap, whatever the table holds.
    let to_estimate: Vec<&str> = counts
        .iter()
        .filter(|(status, count)| {
            matches!(count, Count::AtLeast { .. })
                || (!finished_exact && matches!(*status, "COMPLETED" | "SUPERSEDED"))
        })
        .map(|(status, _)| *status)
        .collect();
    if !to_estimate.is_empty() {
        for row in tx.query(ESTIMATE_SQL, &[&to_estimate]).await? {
            let status: String = row.get(0);
            let estimate: Option<i64> = row.get(1);
            if let Some((_, count)) = counts.iter_mut().find(|(s, _)| *s == status) {
                *count = match count {
                    Count::AtLeast { cap, .. } => Count::AtLeast {
                        cap: *cap,
                        estimate,
                    },
                    _ => estimate.map_or(Count::Unknown, Count::Estimate),
                };
            }
        }
    }

    let oldest_pending = tx
        .query_opt(
            "SELECT oldest_created_at, age_seconds FROM sync_outbox_oldest_pending",
            &[],
        )
        .await?
        .map(|r| (r.get(0), r.get(1)));

    let dead_letters: Vec<DeadLetterCode> = tx
        .query(
            &format!(
                "SELECT code, count(*), max(updated_at),
                        (array_agg(last_error ORDER BY updated_at DESC))[1]
                   FROM (SELECT {CODE_SQL} AS code, last_error, updated_at
                           FROM sync_outbox WHERE status = 'DEAD_LETTER'
                          ORDER BY updated_at DESC LIMIT $1) d
                  GROUP BY code ORDER BY count(*) DESC, code"
            ),
            &[&cap],
        )
        .await?
        .iter()
        .map(|r| DeadLetterCode {
            code: r.get(0),
            count: r.get(1),
            newest_at: r.get(2),
            newest_error: r.get(3),
        })
        .collect();
    let dead_letters_capped = matches!(counts[2].1, Count::AtLeast { .. });

    // One row per workspace: its size is the number of tenants, not history.
    // Named columns only: never the token envelope.
    let row = tx
        .query_one(
            "SELECT count(*) FILTER (WHERE is_valid),
                    count(*) FILTER (WHERE NOT is_valid),
                    count(*) FILTER (WHERE paused_until > now()),
                    count(*) FILTER (WHERE breaker_open_until > now())
               FROM google_connections",
            &[],
        )
        .await?;
    let (connections_valid, connections_invalid, connections_paused, connections_circuit_open) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let attention = tx
        .query(
            "SELECT workspace_id, google_email, is_valid, invalid_reason,
                    CASE WHEN paused_until > now() THEN paused_until END,
                    CASE WHEN breaker_open_until > now() THEN breaker_open_until END,
                    updated_at
               FROM google_connections
              WHERE NOT is_valid OR paused_until > now() OR breaker_open_until > now()
              ORDER BY is_valid, updated_at DESC
              LIMIT $1",
            &[&CONNECTIONS_LISTED],
        )
        .await?
        .iter()
        .map(|r| Connection {
            workspace_id: r.get(0),
            google_email: r.get(1),
            is_valid: r.get(2),
            invalid_reason: r.get(3),
            paused_until: r.get(4),
            breaker_open_until: r.get(5),
            updated_at: r.get(6),
        })
        .collect();
    let charts = charts::read(&tx).await?;
    tx.commit().await?;
    Ok(Overview {
        counts,
        table_bytes,
        oldest_pending,
        dead_letters,
        dead_letters_capped,
        connections_valid,
        connections_invalid,
        connections_paused,
        connections_circuit_open,
        attention,
        charts,
    })
}

pub(crate) async fn page(State(state): State<AppState>, parts: Parts) -> Response {
    let base = layout::base(&parts.extensions);
    match read(&state).await {
        Ok(overview) => {
            let access = auth::access(state.options.token.as_ref(), &parts.headers);
            layout::page_for(
                &base,
                "Overview",
                Some(access),
                render(&base, &state, &overview),
            )
            .into_response()
        }
        Err(e) => server_error(&base, &e),
    }
}

fn render(base: &str, state: &AppState, o: &Overview) -> Markup {
    let any_estimate = o
        .counts
        .iter()
        .any(|(_, c)| matches!(c, Count::Estimate(_) | Count::Unknown));
    html! {
        h1 { "Overview" }
        h2 { "Items by status" }
        div.cards {
            @for (status, count) in &o.counts {
                a.card href={ (base) "/items?status=" (status) } data-status=(status) {
                    div.label { (status) }
                    div.value.{ "status-" (status) } {
                        @match count {
                            Count::Exact(n) => span.count { (thousands(*n)) },
                            Count::AtLeast { cap, .. } => span.count { (thousands(*cap)) "+" },
                            Count::Estimate(n) => span.count { "≈ " (thousands(*n)) },
                            Count::Unknown => span.count { "?" },
                        }
                    }
                    @match count {
                        Count::Estimate(_) => div.estimate { "estimate" },
                        Count::Unknown => div.estimate { "no statistics yet (ANALYZE sync_outbox)" },
                        Count::AtLeast { cap, estimate: Some(e) } => div.estimate { "counted up to " (thousands(*cap)) "; ≈ " (thousands(*e)) " estimated" },
                        Count::AtLeast { cap, estimate: None } => div.estimate { "counted up to " (thousands(*cap)) },
                        Count::Exact(_) => {},
                    }
                }
            }
        }
        p.note {
            "PENDING, PROCESSING and DEAD_LETTER are counted exactly through their partial indexes (up to "
            (thousands(i64::from(state.options.count_cap))) "). "
            @if any_estimate {
                "COMPLETED and SUPERSEDED are estimates from the planner's statistics: sync_outbox takes "
                (thousands(o.table_bytes / 1024)) " KiB, past the exact-count limit of "
                (thousands(state.options.exact_count_max_bytes / 1024)) " KiB."
            } @else {
                "COMPLETED and SUPERSEDED are exact: the table is under the exact-count limit."
            }
        }
        h2 { "Activity" }
        (charts::render(&o.charts))
        h2 { "Oldest pending item" }
        @match &o.oldest_pending {
            Some((created, secs)) => p #oldest-pending { "Waiting for " strong { (age(*secs)) } " (enqueued " (timestamp(created)) ")." },
            None => p #oldest-pending { "Nothing is pending." },
        }
        h2 { "Dead letters by error code" }
        @if o.dead_letters.is_empty() {
            p { "No dead letters." }
        } @else {
            @if o.dead_letters_capped {
                p.note { "Among the newest " (thousands(i64::from(state.options.count_cap))) " dead letters." }
            }
            table #dead-letters {
                thead { tr { th { "Error code" } th.num { "Items" } th { "Newest" } th { "Newest error" } } }
                tbody {
                    @for d in &o.dead_letters {
                        tr {
                            td { a href={ (base) "/items?status=DEAD_LETTER&code=" (encode_query_value(&d.code)) } { code { (d.code) } } }
                            td.num { (thousands(d.count)) }
                            td { (timestamp(&d.newest_at)) }
                            td { (d.newest_error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        h2 { "Connections" }
        p #connections {
            span.ok { (thousands(o.connections_valid)) " valid" } ", "
            span.bad { (thousands(o.connections_invalid)) " invalid" } ", "
            span.warn { (thousands(o.connections_paused)) " paused" } ", "
            span.warn { (thousands(o.connections_circuit_open)) " circuit open" } "."
        }
        @if !o.attention.is_empty() {
            table #connections-attention {
                thead { tr { th { "Workspace" } th { "Account" } th { "State" } th { "Reason" } th { "Paused until" } th { "Circuit open until" } th { "Updated" } } }
                tbody {
                    @for c in &o.attention {
                        tr data-workspace=(c.workspace_id) {
                            td { a href={ (base) "/items?workspace=" (encode_query_value(&c.workspace_id)) } { (c.workspace_id) } }
                            td { (c.google_email) }
                            td {
                                @if c.is_valid { span.ok { "valid" } } @else { span.bad { "invalid" } }
                                @if c.paused_until.is_some() { " " span.warn.state-paused { "paused" } }
                                @if c.breaker_open_until.is_some() { " " span.warn.state-circuit-open { "circuit open" } }
                            }
                            td { (c.invalid_reason.as_deref().unwrap_or("")) }
                            td { (layout::optional_timestamp(c.paused_until.as_ref())) }
                            td.circuit-open-until { (layout::optional_timestamp(c.breaker_open_until.as_ref())) }
                            td { (timestamp(&c.updated_at)) }
                        }
                    }
                }
            }
            @if i64::try_from(o.attention.len()).unwrap_or(i64::MAX) >= CONNECTIONS_LISTED {
                p.note { "The first " (CONNECTIONS_LISTED) " shown." }
            }
        }
    }
}
