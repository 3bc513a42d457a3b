//! The statements of drift detection: which calendars are due a check, where
//! each listing stands, the bindings a page of changes touches, and what a
//! drift policy writes (migration V6).

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::operation::{CalendarKey, SourceKey};

/// A calendar claimed for one step of its drift check.
#[derive(Debug, Clone)]
pub(crate) struct DriftClaim {
    /// The (connection, calendar) listed.
    pub calendar: CalendarKey,
    /// The token of the last finished listing (`None`: list everything).
    pub sync_token: Option<String>,
    /// The page a listing in progress resumes from.
    pub page_token: Option<String>,
    /// Fences this step's writes.
    pub claim_token: Uuid,
    /// When the claim was taken (database clock), before the listing: a
    /// binding written since then may be newer than what the listing saw.
    pub claimed_at: DateTime<Utc>,
}

/// A LIVE binding that a listed event belongs to.
#[derive(Debug, Clone)]
pub(crate) struct WatchedBinding {
    /// The source.
    pub source: SourceKey,
    /// Its Google event id.
    pub google_event_id: String,
    /// The etag our last write returned.
    pub etag: Option<String>,
    /// The content last synced.
    pub content: Option<Value>,
    /// The application's event category.
    pub event_type: Option<String>,
    /// Written since the listing began, or with an unfinished outbox item:
    /// our own write is under way or newer than what the listing saw.
    pub ours_in_flight: bool,
}

/// Adds a check row for every calendar with LIVE bindings of a valid
/// connection that has none yet; returns how many were added.
pub(crate) async fn discover_calendars(
    client: &impl GenericClient,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            r#"
-- discover_calendars: every calendar with live events of a valid connection is checked.
-- The calendars are walked through the bindings' primary key, one index probe per
-- calendar (a loose index scan), so the cost follows the number of calendars, not of
-- bindings.
WITH RECURSIVE calendars AS (
    (SELECT workspace_id, calendar_id FROM calendar_event_bindings
      ORDER BY workspace_id, calendar_id LIMIT 1)
    UNION ALL
    SELECT next.workspace_id, next.calendar_id
      FROM calendars prev,
           LATERAL (SELECT b.workspace_id, b.calendar_id FROM calendar_event_bindings b
                     WHERE (b.workspace_id, b.calendar_id) > (prev.workspace_id, prev.calendar_id)
                     ORDER BY b.workspace_id, b.calendar_id LIMIT 1) next
)
INSERT INTO calendar_sync_drift_checks (workspace_id, calendar_id)
SELECT k.workspace_id, k.calendar_id
  FROM calendars k
  JOIN google_connections c ON c.workspace_id = k.workspace_id AND c.is_valid
 WHERE EXISTS (SELECT 1 FROM calendar_event_bindings b
                WHERE b.workspace_id = k.workspace_id AND b.calendar_id = k.calendar_id
                  AND b.state = 'LIVE')
ON CONFLICT DO NOTHING
"#,
            &[],
        )
        .await
}

/// The database's clock.
pub(crate) async fn database_now(
    client: &impl GenericClient,
) -> Result<DateTime<Utc>, tokio_postgres::Error> {
    Ok(client.query_one("SELECT now()", &[]).await?.get(0))
}

/// Claims one due calendar of a valid connection, moving its next check
/// `lease_secs` ahead so no other worker takes it meanwhile. Only calendars
/// due by `cutoff`, or with a listing to go on with (a next page, a full
/// listing to start), so that one run checks each calendar once however
/// short the interval.
pub(crate) async fn claim_due_calendar(
    client: &impl GenericClient,
    cutoff: DateTime<Utc>,
    lease_secs: f64,
) -> Result<Option<DriftClaim>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            r#"
-- claim_due_calendar: one calendar, one checker
WITH due AS (
    SELECT d.workspace_id, d.calendar_id
      FROM calendar_sync_drift_checks d
      JOIN google_connections c ON c.workspace_id = d.workspace_id AND c.is_valid
     WHERE d.next_check_at <= now()
       AND (d.next_check_at <= $2 OR d.page_token IS NOT NULL OR d.sync_token IS NULL)
     ORDER BY d.next_check_at
     LIMIT 1
       FOR UPDATE OF d SKIP LOCKED
)
UPDATE calendar_sync_drift_checks d
   SET next_check_at = now() + make_interval(secs => $1),
       claim_token = gen_random_uuid()
  FROM due
 WHERE d.workspace_id = due.workspace_id AND d.calendar_id = due.calendar_id
RETURNING d.workspace_id, d.calendar_id, d.sync_token, d.page_token, d.claim_token, now()
"#,
            &[&lease_secs, &cutoff],
        )
        .await?;
    Ok(row.map(|row| DriftClaim {
        calendar: CalendarKey {
            workspace_id: row.get(0),
            calendar_id: row.get(1),
        },
        sync_token: row.get(2),
        page_token: row.get(3),
        claim_token: row.get(4),
        claimed_at: row.get(5),
    }))
}

/// The LIVE bindings of `claim`'s calendar among `event_ids`.
pub(crate) async fn watched_bindings(
    client: &impl GenericClient,
    claim: &DriftClaim,
    event_ids: &[String],
) -> Result<Vec<WatchedBinding>, tokio_postgres::Error> {
    let rows = client
        .query(
            r#"
-- watched_bindings: the live bindings a page of changes touches
SELECT b.source_type, b.source_id, b.google_event_id, b.etag, b.content, b.event_type,
       b.updated_at >= $4
       OR EXISTS (SELECT 1 FROM sync_outbox o
                   WHERE o.source_id = b.source_id AND o.source_type = b.source_type
                     AND o.workspace_id = b.workspace_id
                     AND o.status IN ('PENDING', 'PROCESSING'))
  FROM calendar_event_bindings b
 WHERE b.google_event_id = ANY($3) AND b.calendar_id = $2 AND b.workspace_id = $1
   AND b.state = 'LIVE'
"#,
            &[
                &claim.calendar.workspace_id,
                &claim.calendar.calendar_id,
                &event_ids,
                &claim.claimed_at,
            ],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| WatchedBinding {
            source: SourceKey {
                calendar: claim.calendar.clone(),
                source_type: row.get(0),
                source_id: row.get(1),
            },
            google_event_id: row.get(2),
            etag: row.get(3),
            content: row.get(4),
            event_type: row.get(5),
            ours_in_flight: row.get(6),
        })
        .collect())
}

/// One drift as recorded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DriftRecord<'a> {
    pub binding: &'a WatchedBinding,
    /// `deleted` or `edited`.
    pub kind: &'a str,
    /// `repaired`, `reported` or `adopted`.
    pub action: &'a str,
    pub remote_etag: &'a str,
}

/// Records a drift; false when this one (same event, same remote etag) was
/// already recorded, by another worker or an earlier try of this check.
pub(crate) async fn record_drift(
    client: &impl GenericClient,
    drift: DriftRecord<'_>,
) -> Result<bool, tokio_postgres::Error> {
    let source = &drift.binding.source;
    let n = client
        .execute(
            r#"
-- record_drift: once per drift
INSERT INTO calendar_sync_drift
       (workspace_id, calendar_id, source_type, source_id, google_event_id, kind, action, remote_etag)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT DO NOTHING
"#,
            &[
                &source.calendar.workspace_id,
                &source.calendar.calendar_id,
                &source.source_type,
                &source.source_id,
                &drift.binding.google_event_id,
                &drift.kind,
                &drift.action,
                &drift.remote_etag,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Forgets the binding's content hash, so that the repair's upsert is not
/// skipped as unchanged; false if the binding moved on since it was read.
pub(crate) async fn forget_content_hash(
    client: &impl GenericClient,
    binding: &WatchedBinding,
) -> Result<bool, tokio_postgres::Error> {
    let source = &binding.source;
    let n = client
        .execute(
            r#"
-- forget_content_hash: a repair must not be skipped as unchanged
UPDATE calendar_event_bindings
   SET content_hash = NULL, updated_at = now()
 WHERE workspace_id = $1 AND calendar_id = $2 AND source_type = $3 AND source_id = $4
   AND state = 'LIVE' AND google_event_id = $5 AND etag IS NOT DISTINCT FROM $6
"#,
            &[
                &source.calendar.workspace_id,
                &source.calendar.calendar_id,
                &source.source_type,
                &source.source_id,
                &binding.google_event_id,
                &binding.etag,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Adopts the remote event as the last synced one: its content and etag
/// (`content` `None`: it was deleted, and the binding becomes CANCELLED so
/// the source's next upsert creates a new event). False if the binding moved
/// on since it was read.
pub(crate) async fn adopt_remote(
    client: &impl GenericClient,
    binding: &WatchedBinding,
    remote_etag: &str,
    content: Option<(&Value, &str)>,
) -> Result<bool, tokio_postgres::Error> {
    let source = &binding.source;
    let (content, hash) = content.unzip();
    let n = client
        .execute(
            r#"
-- adopt_remote: the user's edit becomes the last synced content
UPDATE calendar_event_bindings
   SET state = CASE WHEN $7::jsonb IS NULL THEN 'CANCELLED' ELSE 'LIVE' END,
       content = coalesce($7::jsonb, content),
       content_hash = $8,
       etag = $9,
       updated_at = now()
 WHERE workspace_id = $1 AND calendar_id = $2 AND source_type = $3 AND source_id = $4
   AND state = 'LIVE' AND google_event_id = $5 AND etag IS NOT DISTINCT FROM $6
"#,
            &[
                &source.calendar.workspace_id,
                &source.calendar.calendar_id,
                &source.source_type,
                &source.source_id,
                &binding.google_event_id,
                &binding.etag,
                &content,
                &hash,
                &remote_etag,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Where the claimed listing goes next: the next page at once, or (with a
/// sync token) the next check after `interval_secs`. False if the claim was lost.
pub(crate) async fn advance_listing(
    client: &impl GenericClient,
    claim: &DriftClaim,
    next_page_token: Option<&str>,
    next_sync_token: Option<&str>,
    interval_secs: f64,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            r#"
-- advance_listing: a page done; the next one now, or the next check later
UPDATE calendar_sync_drift_checks
   SET page_token = $4,
       sync_token = coalesce($5, sync_token),
       next_check_at = CASE WHEN $5::text IS NULL THEN now()
                            ELSE now() + make_interval(secs => $6) END,
       checked_at = CASE WHEN $5::text IS NULL THEN checked_at ELSE now() END,
       claim_token = NULL
 WHERE workspace_id = $1 AND calendar_id = $2 AND claim_token = $3
"#,
            &[
                &claim.calendar.workspace_id,
                &claim.calendar.calendar_id,
                &claim.claim_token,
                &next_page_token,
                &next_sync_token,
                &interval_secs,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Google said the sync token is too old: forget it, and list everything
/// again at once. False if the claim was lost.
pub(crate) async fn restart_listing(
    client: &impl GenericClient,
    claim: &DriftClaim,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            r#"
-- restart_listing: 410 fullSyncRequired
UPDATE calendar_sync_drift_checks
   SET sync_token = NULL, page_token = NULL, next_check_at = now(), claim_token = NULL
 WHERE workspace_id = $1 AND calendar_id = $2 AND claim_token = $3
"#,
            &[
                &claim.calendar.workspace_id,
                &claim.calendar.calendar_id,
                &claim.claim_token,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// The listing failed: try again after `retry_secs`, the same page, or
/// (`start_over`) a full listing from the start.
pub(crate) async fn postpone_listing(
    client: &impl GenericClient,
    claim: &DriftClaim,
    retry_secs: f64,
    start_over: bool,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            r#"
-- postpone_listing: the calendar failed; same page later, or everything again
UPDATE calendar_sync_drift_checks
   SET next_check_at = now() + make_interval(secs => $4), claim_token = NULL,
       sync_token = CASE WHEN $5 THEN NULL ELSE sync_token END,
       page_token = CASE WHEN $5 THEN NULL ELSE page_token END
 WHERE workspace_id = $1 AND calendar_id = $2 AND claim_token = $3
"#,
            &[
                &claim.calendar.workspace_id,
                &claim.calendar.calendar_id,
                &claim.claim_token,
                &retry_secs,
                &start_over,
            ],
        )
        .await?;
    Ok(())
}
