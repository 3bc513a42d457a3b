//! Producing work: bulk backlogs generated inside PostgreSQL (one statement,
//! so setting up 10,000 or 1,000,000 rows takes seconds), and single inserts
//! as an application would write them.

use std::time::Instant;

use serde_json::Value;
use tokio_postgres::Client;

/// The calendar of a workspace: `<workspace>@example.com`, so the same
/// backlog works against the in-memory calendar and the fake Google.
pub fn calendar_of(workspace: &str) -> String {
    format!("{workspace}@example.com")
}

/// The workspace with this index.
pub fn workspace(i: usize) -> String {
    format!("w{i}")
}

/// An UPSERT_EVENT payload, as the tests write them.
pub fn upsert(workspace: &str, source_id: &str, title: &str) -> Value {
    calendar_sync_tests::upsert(workspace, &calendar_of(workspace), source_id, title)
}

/// A CANCEL_EVENT payload.
pub fn cancel(workspace: &str, source_id: &str) -> Value {
    calendar_sync_tests::cancel(workspace, &calendar_of(workspace), source_id)
}

/// SQL building an upsert payload for row `g` (workspace `w{g % $ws}`,
/// source `{prefix}{g}`), the same shape as [`upsert`].
const PAYLOAD_SQL: &str = "jsonb_build_object(
    'operation', 'UPSERT_EVENT',
    'workspaceId', 'w' || (g % $2::bigint),
    'calendarId', 'w' || (g % $2::bigint) || '@example.com',
    'sourceType', 'task',
    'sourceId', $3::text || g,
    'eventType', 'BLOCKER_DEADLINE',
    'event', jsonb_build_object(
        'title', 'Task ' || g, 'description', 'P1 blocking task',
        'start', '2025-01-15T14:00:00Z', 'end', '2025-01-15T15:00:00Z', 'isAllDay', false))";

/// Inserts `n` due UPSERT_EVENTs of distinct new sources, round-robin over
/// `workspaces` workspaces, in one statement; then ANALYZE.
pub async fn backlog(client: &Client, n: i64, workspaces: i64, prefix: &str) {
    backlog_unanalyzed(client, n, workspaces, prefix).await;
    client
        .batch_execute("ANALYZE sync_outbox")
        .await
        .expect("analyze");
}

/// [`backlog`] without the ANALYZE: what the planner sees right after a burst,
/// until autovacuum next analyzes the table.
pub async fn backlog_unanalyzed(client: &Client, n: i64, workspaces: i64, prefix: &str) {
    let sql = format!(
        "INSERT INTO sync_outbox (operation, payload)
         SELECT 'UPSERT_EVENT', {PAYLOAD_SQL} FROM generate_series(1, $1::bigint) AS g ORDER BY g"
    );
    client
        .execute(&sql, &[&n, &workspaces, &prefix])
        .await
        .expect("insert backlog");
}

/// Inserts `n` finished rows (history): 90 % COMPLETED, 8 % SUPERSEDED, 2 %
/// DEAD_LETTER, finished over the last 30 days, sources `{prefix}{g % sources}`.
pub async fn history(client: &Client, n: i64, workspaces: i64, prefix: &str) {
    let sql = format!(
        "INSERT INTO sync_outbox (operation, payload, status, attempts, created_at, updated_at, processed_at, last_error)
         SELECT 'UPSERT_EVENT', {PAYLOAD_SQL},
                CASE WHEN g % 50 = 0 THEN 'DEAD_LETTER' WHEN g % 50 < 5 THEN 'SUPERSEDED' ELSE 'COMPLETED' END,
                1, t, t, t,
                CASE WHEN g % 50 = 0 THEN '[google_400_invalid] history' END
           FROM generate_series(1, $1::bigint) AS g,
                LATERAL (SELECT now() - make_interval(secs => (($1 - g) * 2.5)::float8)) AS x(t)
          ORDER BY g"
    );
    client
        .execute(&sql, &[&n, &workspaces, &prefix])
        .await
        .expect("insert history");
}

/// Inserts one row as a producer would (autocommit); returns when the commit
/// was acknowledged, with the instants the statement was sent and acknowledged.
pub async fn insert_one(
    client: &Client,
    stmt: &tokio_postgres::Statement,
    operation: &str,
    payload: &Value,
) -> (Instant, Instant) {
    let sent = Instant::now();
    client
        .execute(stmt, &[&operation, payload])
        .await
        .expect("insert");
    (sent, Instant::now())
}

/// The prepared producer statement.
pub async fn prepare_insert(client: &Client) -> tokio_postgres::Statement {
    client
        .prepare("INSERT INTO sync_outbox (operation, payload) VALUES ($1, $2)")
        .await
        .expect("prepare insert")
}
