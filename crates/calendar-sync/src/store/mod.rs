//! Every SQL statement the library runs. Each takes `&impl GenericClient`, so it
//! runs on a pooled client, the worker's lock connection, or inside the caller's
//! transaction. Values are always parameters.
//!
//! An outcome finds its row by id and claim token alone (`WHERE id = $1 AND
//! claim_token = $2`): a token is set exactly while the row is PROCESSING
//! (constraint `sync_outbox_claim_token_held`), and naming the status too would
//! let the planner walk the PROCESSING index, dead entries and all, instead of
//! the primary key.

use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::google::budget::Budget;
use crate::operation::{CalendarKey, Operation, SourceKey};

pub(crate) mod drift;

/// First key of every advisory lock we take (`"csyn"`), so our locks cannot
/// collide with the host application's own two-key advisory locks. The same
/// value as SQL's `calendar_sync_lock_namespace()` (tests/schema.rs checks it);
/// the migration lock needs it before the migrations exist.
pub const LOCK_NAMESPACE: i32 = 0x6373_796e;
// Row keys are 1..=i32::MAX, computed by SQL's `calendar_sync_row_key` and
// returned by the claim and the orphan scan; key 0 is the claim mutex (taken
// inside `calendar_sync_claim`), key -1 the migration lock.
/// The channel the insert trigger notifies.
pub(crate) const NOTIFY_CHANNEL: &str = "calendar_sync_outbox";

/// Writes an outbox row. Call it with the caller's transaction so the row
/// commits (or not) together with the change it describes. Returns the row's id.
///
/// ```no_run
/// # async fn example(db: &calendar_sync::Database) -> Result<(), Box<dyn std::error::Error>> {
/// use calendar_sync::{CalendarKey, Operation, SourceKey};
///
/// let mut client = db.client().await?; // or a client of the application's own pool
/// let tx = client.transaction().await?;
/// tx.execute("UPDATE tasks SET done = true WHERE id = $1", &[&"task-42"]).await?;
/// let cancel = Operation::CancelEvent(SourceKey {
///     calendar: CalendarKey { workspace_id: "acme".into(), calendar_id: "primary".into() },
///     source_type: "task".into(),
///     source_id: "task-42".into(),
/// });
/// // `&*tx`: the tokio-postgres transaction inside deadpool's wrapper.
/// calendar_sync::enqueue(&*tx, &cancel).await?;
/// tx.commit().await?; // the task's change and its outbox row, or neither
/// # Ok(()) }
/// ```
pub async fn enqueue(
    client: &impl GenericClient,
    operation: &Operation,
) -> Result<Uuid, tokio_postgres::Error> {
    let row = client
        .query_one(
            "INSERT INTO sync_outbox (operation, payload) VALUES ($1, $2) RETURNING id",
            &[&operation.kind().as_str(), &operation.to_payload()],
        )
        .await?;
    Ok(row.get(0))
}

/// What the binding table says about a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Google event id (persisted before the insert call).
    pub google_event_id: String,
    /// How many times this source's event has been cancelled and re-created.
    pub generation: i32,
    /// Where the binding stands.
    pub state: BindingState,
    /// Google's version tag of the last synced event.
    pub etag: Option<String>,
    /// SHA-256 of the content last synced.
    pub content_hash: Option<String>,
}

/// The life cycle of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingState {
    /// The id is chosen and persisted; the insert is not yet confirmed.
    Inserting,
    /// The event exists in Google with the recorded content.
    Live,
    /// We deleted the event.
    Cancelled,
}

impl BindingState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Inserting => "INSERTING",
            Self::Live => "LIVE",
            Self::Cancelled => "CANCELLED",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "INSERTING" => Self::Inserting,
            "LIVE" => Self::Live,
            _ => Self::Cancelled,
        }
    }
}

/// A binding to write together with an item's completion.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingWrite {
    /// The source.
    pub source: SourceKey,
    /// Google event id.
    pub google_event_id: String,
    /// Generation of that id.
    pub generation: i32,
    /// New state.
    pub state: BindingState,
    /// Google's etag, when known.
    pub etag: Option<String>,
    /// Hash of the synced content (LIVE only).
    pub content_hash: Option<String>,
    /// The synced content (LIVE only), for REBUILD_ALL.
    pub content: Option<Value>,
    /// The application's event category.
    pub event_type: Option<String>,
    /// Google's `htmlLink` of the event, when its last answer had one (kept
    /// when the write has none and the event id is unchanged).
    pub html_link: Option<String>,
    /// Whether a write call to the calendar (insert, update, delete)
    /// succeeded for this binding: sets `last_written_at`.
    pub written: bool,
}

/// A row this worker claimed: locked, PROCESSING, with its claim token.
#[derive(Debug, Clone)]
pub struct ClaimedItem {
    /// Row id.
    pub id: Uuid,
    /// Advisory-lock key held for the row.
    pub lock_key: i32,
    /// The `operation` column.
    pub operation: String,
    /// The raw payload.
    pub payload: Value,
    /// Attempts including this one.
    pub attempts: i32,
    /// Rate-limited answers met so far (they use no attempt, but lengthen the
    /// retry delay).
    pub rate_limited: i32,
    /// Completion must present this token.
    pub claim_token: Uuid,
    /// The source's binding, read with the claim.
    pub binding: Option<Binding>,
    /// The row's `result`: a long item's checkpoint.
    pub result: Option<Value>,
}

/// What one claim statement did.
#[derive(Debug, Default)]
pub struct ClaimBatch {
    /// Rows claimed: locked, PROCESSING, bindings read (ids reserved).
    pub items: Vec<ClaimedItem>,
    /// Due rows superseded by a newer item of their source.
    pub superseded: usize,
    /// Waiting (not yet due) rows superseded by the claimed ones.
    pub stale: usize,
    /// Free rows whose lock another session held for a moment.
    pub busy: usize,
    /// The walk stopped early (enough claimed, or the examined cap reached):
    /// more due rows may be waiting.
    pub more: bool,
    /// Nothing could be claimed for want of budget: the next token is due
    /// this long from now.
    pub budget_wait: Option<std::time::Duration>,
}

/// Claims up to `limit` due rows for this session (which keeps their advisory
/// locks until [`unlock_rows`]), in one statement: see `calendar_sync_claim`
/// in the migrations for the rules. Looks at no more than `max_examined` due
/// rows; a row counts as due once it has been due for `settle`. On error,
/// locks it took may stay held by the session: close it. No budget: see
/// [`claim_within`].
pub async fn claim<S>(
    client: &impl GenericClient,
    statement: &S,
    limit: usize,
    max_examined: usize,
    settle: std::time::Duration,
) -> Result<ClaimBatch, tokio_postgres::Error>
where
    S: ?Sized + tokio_postgres::ToStatement + Sync + Send,
{
    claim_within(client, statement, limit, max_examined, settle, None).await
}

/// [`claim`], each claimed row paying one call from the shared `budget`
/// (`calendar_sync_budget`); rows it cannot pay for are left, and
/// [`ClaimBatch::budget_wait`] says when the next token is due.
pub async fn claim_within<S>(
    client: &impl GenericClient,
    statement: &S,
    limit: usize,
    max_examined: usize,
    settle: std::time::Duration,
    budget: Option<Budget>,
) -> Result<ClaimBatch, tokio_postgres::Error>
where
    S: ?Sized + tokio_postgres::ToStatement + Sync + Send,
{
    let limit = i32::try_from(limit).unwrap_or(i32::MAX);
    let max_examined = i32::try_from(max_examined).unwrap_or(i32::MAX);
    let settle = settle.as_secs_f64();
    let per_connection = budget.map(|b| quota_param(b.per_connection));
    let per_project = budget.map(|b| quota_param(b.per_project));
    let window = budget.map_or(60.0, |b| b.window.as_secs_f64().max(0.001));
    let rows = client
        .query(
            statement,
            &[
                &limit,
                &max_examined,
                &settle,
                &per_connection,
                &per_project,
                &window,
            ],
        )
        .await?;
    let mut batch = ClaimBatch::default();
    let mut claimed = 0usize;
    for r in &rows {
        match r.get::<_, &str>("outcome") {
            "CLAIMED" => {
                claimed += 1;
                batch.stale += usize::try_from(r.get::<_, i32>("superseded_older")).unwrap_or(0);
                batch.items.push(claimed_item(r));
            }
            "SUPERSEDED" => batch.superseded += 1,
            "BUSY" => batch.busy += 1,
            "BUDGET" => {
                let secs: f64 = r.get("wait_secs");
                batch.budget_wait =
                    Some(std::time::Duration::from_secs_f64(secs.clamp(0.0, 3600.0)));
            }
            _ => batch.more = true,
        }
    }
    batch.more |= claimed >= usize::try_from(limit).unwrap_or(usize::MAX);
    Ok(batch)
}

fn quota_param(quota: u32) -> i32 {
    i32::try_from(quota.max(1)).unwrap_or(i32::MAX)
}

fn claimed_item(r: &tokio_postgres::Row) -> ClaimedItem {
    let binding = r
        .get::<_, Option<String>>("google_event_id")
        .map(|google_event_id| Binding {
            google_event_id,
            generation: r.get("generation"),
            state: BindingState::parse(r.get("binding_state")),
            etag: r.get("etag"),
            content_hash: r.get("content_hash"),
        });
    ClaimedItem {
        id: r.get("id"),
        lock_key: r.get("lock_key"),
        operation: r.get("operation"),
        payload: r.get("payload"),
        attempts: r.get("attempts"),
        rate_limited: r.get("rate_limited"),
        claim_token: r.get("claim_token"),
        binding,
        result: r.get("result"),
    }
}

/// The claim statement.
pub const CLAIM: &str = "SELECT * FROM calendar_sync_claim($1, $2, $3, $4, $5, $6)";

/// Pays one call of `workspace` from the shared budget: `None` when paid, else
/// how long until both buckets could pay (nothing is taken then).
pub async fn take_budget(
    client: &impl GenericClient,
    workspace: &str,
    budget: Budget,
) -> Result<Option<std::time::Duration>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT calendar_sync_take_budget($1, $2, $3, $4)",
            &[
                &workspace,
                &quota_param(budget.per_connection),
                &quota_param(budget.per_project),
                &budget.window.as_secs_f64().max(0.001),
            ],
        )
        .await?;
    let wait: f64 = row.get(0);
    Ok((wait > 0.0).then(|| std::time::Duration::from_secs_f64(wait.min(3600.0))))
}

/// Tries to take the advisory lock of each key; returns the keys it got.
/// The lock call sits in the select list of a plain `unnest`, so PostgreSQL
/// evaluates it exactly once per key (no planner-multiplied, leaked locks).
pub(crate) async fn try_lock_rows(
    client: &impl GenericClient,
    keys: &[i32],
) -> Result<Vec<i32>, tokio_postgres::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT k FROM (SELECT k, pg_try_advisory_lock($1, k) AS got FROM unnest($2::int4[]) AS k) t WHERE got",
            &[&LOCK_NAMESPACE, &keys],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Releases row locks held by this session.
pub async fn unlock_rows<S>(
    client: &impl GenericClient,
    statement: &S,
    keys: &[i32],
) -> Result<(), tokio_postgres::Error>
where
    S: ?Sized + tokio_postgres::ToStatement + Sync + Send,
{
    if keys.is_empty() {
        return Ok(());
    }
    client.execute(statement, &[&LOCK_NAMESPACE, &keys]).await?;
    Ok(())
}

/// The unlock statement.
pub const UNLOCK: &str =
    "SELECT count(*) FROM (SELECT pg_advisory_unlock($1, k) FROM unnest($2::int4[]) AS k) t";

/// The row locks this session holds (after a failed claim, some may belong
/// to rows it did not claim: session-level advisory locks survive a rollback).
pub(crate) async fn own_row_locks(
    client: &impl GenericClient,
) -> Result<Vec<i32>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT objid::int8 FROM pg_locks
              WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                AND classid = $1::int4::oid AND objsubid = 2 AND objid <> 0",
            &[&LOCK_NAMESPACE],
        )
        .await?;
    // objid is the key's bits as an oid.
    Ok(rows
        .iter()
        .filter_map(|r| u32::try_from(r.get::<_, i64>(0)).ok())
        .map(u32::cast_signed)
        .collect())
}

/// Releases row locks however many times this session took them.
pub(crate) async fn release_row_locks(
    client: &impl GenericClient,
    keys: &[i32],
) -> Result<(), tokio_postgres::Error> {
    let mut held = keys.to_vec();
    // A lock taken n times needs n unlocks; a claim takes each at most twice.
    for _ in 0..8 {
        if held.is_empty() {
            break;
        }
        let rows = client
            .query(
                "SELECT k FROM (SELECT k, pg_advisory_unlock($1, k) AS freed FROM unnest($2::int4[]) AS k) t WHERE freed",
                &[&LOCK_NAMESPACE, &held],
            )
            .await?;
        held = rows.iter().map(|r| r.get(0)).collect();
    }
    Ok(())
}

/// A PROCESSING row whose advisory lock nobody holds: its worker died or lost
/// its lock connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Orphan {
    /// Row id.
    pub id: Uuid,
    /// Its lock key.
    pub lock_key: i32,
    /// The claim token it was left with.
    pub claim_token: Option<Uuid>,
}

/// PROCESSING rows with no advisory lock held in this database.
pub(crate) async fn find_orphans(
    client: &impl GenericClient,
) -> Result<Vec<Orphan>, tokio_postgres::Error> {
    let rows = client
        .query(
            r#"
-- find_orphans: in-flight rows whose lock vanished with their worker's connection.
SELECT o.id, calendar_sync_row_key(o.seq) AS lock_key, o.claim_token
  FROM sync_outbox o
 WHERE o.status = 'PROCESSING'
   AND NOT EXISTS (
       SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = calendar_sync_lock_namespace()::oid
          AND l.objid = calendar_sync_row_key(o.seq)::oid)
"#,
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Orphan {
            id: r.get("id"),
            lock_key: r.get("lock_key"),
            claim_token: r.get("claim_token"),
        })
        .collect())
}

/// Puts orphans (whose locks the caller now holds) back to PENDING, or to
/// DEAD_LETTER when they have used up their attempts: an item that kills its
/// worker every time must not loop forever. Returns (requeued, dead-lettered).
pub(crate) async fn recover_orphans(
    client: &impl GenericClient,
    orphans: &[Orphan],
    max_attempts: i32,
) -> Result<(u64, u64), tokio_postgres::Error> {
    let ids: Vec<Uuid> = orphans.iter().map(|o| o.id).collect();
    let tokens: Vec<Option<Uuid>> = orphans.iter().map(|o| o.claim_token).collect();
    let rows = client
        .query(
            r#"
-- recover_orphans: conditional on the claim token we saw, so a late finisher wins.
UPDATE sync_outbox o
   SET status = CASE WHEN o.attempts >= $3 THEN 'DEAD_LETTER' ELSE 'PENDING' END,
       last_error = CASE WHEN o.attempts >= $3
           THEN '[worker_lost] the worker stopped during each of ' || o.attempts || ' attempts (crash or lost database connection)'
           ELSE '[worker_lost] the worker stopped during attempt ' || o.attempts || ' (crash or lost database connection)'
       END,
       next_attempt_at = now(), claim_token = NULL, updated_at = now()
  FROM unnest($1::uuid[], $2::uuid[]) AS x(id, token)
 WHERE o.id = x.id AND o.status = 'PROCESSING' AND o.claim_token IS NOT DISTINCT FROM x.token
RETURNING o.status
"#,
            &[&ids, &tokens, &max_attempts],
        )
        .await?;
    let dead = rows
        .iter()
        .filter(|r| r.get::<_, &str>(0) == "DEAD_LETTER")
        .count() as u64;
    Ok((rows.len() as u64 - dead, dead))
}

/// A finished item to record as COMPLETED, with the binding to write.
#[derive(Debug)]
pub struct Completion<'a> {
    /// The claimed row.
    pub item: &'a ClaimedItem,
    /// Binding to write with it.
    pub binding: Option<&'a BindingWrite>,
    /// The row's `result`.
    pub result: Option<&'a Value>,
}

/// Records many successful items, with their bindings, in one statement (one
/// commit). Returns the ids whose claim still held: the others were taken over
/// and nothing was written for them. Items must be of distinct sources, which
/// claims guarantee (one item of a source in flight at a time).
pub async fn complete_many<S>(
    client: &impl GenericClient,
    statement: &S,
    done: &[Completion<'_>],
) -> Result<Vec<Uuid>, tokio_postgres::Error>
where
    S: ?Sized + tokio_postgres::ToStatement + Sync + Send,
{
    if done.is_empty() {
        return Ok(Vec::new());
    }
    let n = done.len();
    let mut ids = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut results: Vec<Option<&Value>> = Vec::with_capacity(n);
    let mut workspaces: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut calendars: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut types: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut sources: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut event_ids: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut generations: Vec<Option<i32>> = Vec::with_capacity(n);
    let mut states: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut etags: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut hashes: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut contents: Vec<Option<&Value>> = Vec::with_capacity(n);
    let mut event_types: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut html_links: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut written: Vec<Option<bool>> = Vec::with_capacity(n);
    for d in done {
        ids.push(d.item.id);
        tokens.push(d.item.claim_token);
        results.push(d.result);
        let b = d.binding;
        workspaces.push(b.map(|b| b.source.calendar.workspace_id.as_str()));
        calendars.push(b.map(|b| b.source.calendar.calendar_id.as_str()));
        types.push(b.map(|b| b.source.source_type.as_str()));
        sources.push(b.map(|b| b.source.source_id.as_str()));
        event_ids.push(b.map(|b| b.google_event_id.as_str()));
        generations.push(b.map(|b| b.generation));
        states.push(b.map(|b| b.state.as_str()));
        etags.push(b.and_then(|b| b.etag.as_deref()));
        hashes.push(b.and_then(|b| b.content_hash.as_deref()));
        contents.push(b.and_then(|b| b.content.as_ref()));
        event_types.push(b.and_then(|b| b.event_type.as_deref()));
        html_links.push(b.and_then(|b| b.html_link.as_deref()));
        written.push(b.map(|b| b.written));
    }
    let rows = client
        .query(
            statement,
            &[
                &ids,
                &tokens,
                &results,
                &workspaces,
                &calendars,
                &types,
                &sources,
                &event_ids,
                &generations,
                &states,
                &etags,
                &hashes,
                &contents,
                &event_types,
                &html_links,
                &written,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The statement of [`complete_many`]: `calendar_sync_complete` (in the
/// migrations) writes COMPLETED where the claim still holds, and their bindings
/// (with Google's `htmlLink` and, for a write call, `last_written_at`: V5).
pub const COMPLETE_MANY: &str = "SELECT * FROM calendar_sync_complete($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)";

/// Writes a binding while the claim still holds (returns false if it was
/// lost). Used to persist the id about to be inserted (state INSERTING) before
/// calling Google, so a crash between Google's answer and our write cannot lead
/// to a second event; and by REBUILD_ALL for each source it repairs. The write
/// is `calendar_sync_put_bindings`, as the claim's and the group commit's are.
pub(crate) async fn put_binding(
    client: &impl GenericClient,
    item: &ClaimedItem,
    binding: &BindingWrite,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            r#"
-- put_binding: written only while the claim holds
SELECT calendar_sync_put_bindings(
           ARRAY[$3::text], ARRAY[$4::text], ARRAY[$5::text], ARRAY[$6::text], ARRAY[$7::text],
           ARRAY[$8::int4], ARRAY[$9::text], ARRAY[$10::text], ARRAY[$11::text],
           ARRAY[$12::jsonb], ARRAY[$13::text], ARRAY[o.id], ARRAY[$14::text], ARRAY[$15::bool])
  FROM sync_outbox o
 WHERE o.id = $1 AND o.claim_token = $2
"#,
            &[
                &item.id,
                &item.claim_token,
                &binding.source.calendar.workspace_id,
                &binding.source.calendar.calendar_id,
                &binding.source.source_type,
                &binding.source.source_id,
                &binding.google_event_id,
                &binding.generation,
                &binding.state.as_str(),
                &binding.etag,
                &binding.content_hash,
                &binding.content,
                &binding.event_type,
                &binding.html_link,
                &binding.written,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// A binding row as REBUILD_ALL reads it.
#[derive(Debug, Clone)]
pub(crate) struct StoredBinding {
    /// The source.
    pub source: SourceKey,
    /// Binding state and ids.
    pub binding: Binding,
    /// Last synced content.
    pub content: Option<Value>,
    /// The application's event category.
    pub event_type: Option<String>,
}

/// The outcome of a failed attempt, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureStatus {
    /// Will be retried.
    Pending,
    /// Given up.
    DeadLetter,
    /// The claim was lost; nothing was written.
    ClaimLost,
}

/// Schedules a retry `delay_secs` from now (database clock), or dead-letters
/// the row when this was its last allowed attempt.
pub(crate) async fn fail_retryable(
    client: &impl GenericClient,
    item: &ClaimedItem,
    max_attempts: i32,
    delay_secs: f64,
    error: &str,
) -> Result<FailureStatus, tokio_postgres::Error> {
    let row = client
        .query_opt(
            r#"
-- fail_retryable
UPDATE sync_outbox
   SET status = CASE WHEN attempts >= $3 THEN 'DEAD_LETTER' ELSE 'PENDING' END,
       last_error = CASE WHEN attempts >= $3
           THEN $5 || ' (gave up after ' || attempts || ' attempts)' ELSE $5 END,
       next_attempt_at = now() + make_interval(secs => $4),
       claim_token = NULL, updated_at = now()
 WHERE id = $1 AND claim_token = $2
RETURNING status
"#,
            &[
                &item.id,
                &item.claim_token,
                &max_attempts,
                &delay_secs,
                &error,
            ],
        )
        .await?;
    Ok(failure_status(row))
}

/// Why an item waits without using an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Google asked us to slow down; counted in `rate_limited`.
    RateLimited,
    /// A pause, a breaker cool-down, a shutdown.
    Other,
}

/// Puts the row back to wait `delay_secs` without counting the attempt: the
/// failure was not the item's (rate limits, usage-limit pause, shutdown).
pub(crate) async fn defer(
    client: &impl GenericClient,
    item: &ClaimedItem,
    delay_secs: f64,
    error: &str,
    wait: Wait,
) -> Result<FailureStatus, tokio_postgres::Error> {
    let row = client
        .query_opt(
            r#"
-- defer
UPDATE sync_outbox
   SET status = 'PENDING', attempts = greatest(attempts - 1, 0), last_error = $4,
       rate_limited = rate_limited + $5::int4,
       next_attempt_at = now() + make_interval(secs => $3),
       claim_token = NULL, updated_at = now()
 WHERE id = $1 AND claim_token = $2
RETURNING status
"#,
            &[
                &item.id,
                &item.claim_token,
                &delay_secs,
                &error,
                &i32::from(wait == Wait::RateLimited),
            ],
        )
        .await?;
    Ok(failure_status(row))
}

/// Dead-letters the row at once.
pub(crate) async fn dead_letter(
    client: &impl GenericClient,
    item: &ClaimedItem,
    error: &str,
) -> Result<FailureStatus, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "UPDATE sync_outbox SET status = 'DEAD_LETTER', last_error = $3, claim_token = NULL, updated_at = now()
              WHERE id = $1 AND claim_token = $2
             RETURNING status",
            &[&item.id, &item.claim_token, &error],
        )
        .await?;
    Ok(failure_status(row))
}

/// Registers this session as a worker waiting for a wake-up: producers'
/// commits notify while some worker is registered (`calendar_sync_notify`).
/// Also removes the
/// registrations of sessions that no longer exist (workers that died).
pub(crate) async fn register_waiter(
    client: &impl GenericClient,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            r#"
-- register_waiter
WITH gone AS (
    DELETE FROM calendar_sync_waiters w
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = w.pid)
)
INSERT INTO calendar_sync_waiters (pid) VALUES (pg_backend_pid())
ON CONFLICT (pid) DO UPDATE SET since = now()
"#,
            &[],
        )
        .await?;
    Ok(())
}

/// Removes this session's registration: it has work and needs no wake-up.
pub(crate) async fn unregister_waiter(
    client: &impl GenericClient,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM calendar_sync_waiters WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(())
}

/// Holds claims off until the end of the caller's transaction (the claim
/// mutex, shared: such transactions do not wait for one another), so a
/// statement that locks many PENDING rows cannot deadlock with a claim.
pub(crate) async fn lock_claims(client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "-- lock_claims: claims wait until this transaction ends\nSELECT pg_advisory_xact_lock_shared($1, 0)",
            &[&LOCK_NAMESPACE],
        )
        .await?;
    Ok(())
}

/// What [`invalidate_connection`] did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Invalidated {
    /// The item's own status (dead-lettered, or its claim lost).
    pub status: FailureStatus,
    /// The workspace's other items dead-lettered.
    pub others: u64,
    /// Whether the connection went from valid to invalid (a trigger of V5
    /// then notifies `calendar_sync_connection_invalid` at commit).
    pub connection_changed: bool,
}

/// Dead-letters the row, marks the workspace's Google connection invalid, and
/// dead-letters the workspace's other waiting items: none of them can succeed
/// until the connection is re-authorised.
pub(crate) async fn invalidate_connection(
    client: &impl GenericClient,
    item: &ClaimedItem,
    workspace_id: &str,
    error: &str,
) -> Result<Invalidated, tokio_postgres::Error> {
    let row = client
        .query_one(
            r#"
-- invalidate_connection
WITH this AS (
    UPDATE sync_outbox SET status = 'DEAD_LETTER', last_error = $4, claim_token = NULL, updated_at = now()
     WHERE id = $1 AND claim_token = $2
 RETURNING id
),
conn AS (
    UPDATE google_connections SET is_valid = false, invalid_reason = $4, updated_at = now()
     WHERE workspace_id = $3 AND is_valid AND EXISTS (SELECT 1 FROM this)
 RETURNING 1
),
-- Through the per-source index (workspace first): `status = (SELECT …)` hides the
-- value from the planner, which otherwise ANDed in the whole PENDING index on young
-- statistics (measured: a walk of 90,000 entries per call, under the claim mutex).
others AS (
    UPDATE sync_outbox SET status = 'DEAD_LETTER', claim_token = NULL, updated_at = now(),
           last_error = '[connection_invalid] connection invalid: ' || $4
     WHERE workspace_id = $3 AND status IN ('PENDING', 'PROCESSING')
       AND status = (SELECT 'PENDING'::text) AND id <> $1 AND EXISTS (SELECT 1 FROM this)
 RETURNING id
)
SELECT (SELECT count(*) FROM this), (SELECT count(*) FROM others), (SELECT count(*) FROM conn)
"#,
            &[&item.id, &item.claim_token, &workspace_id, &error],
        )
        .await?;
    let status = if row.get::<_, i64>(0) == 1 {
        FailureStatus::DeadLetter
    } else {
        FailureStatus::ClaimLost
    };
    Ok(Invalidated {
        status,
        others: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
        connection_changed: row.get::<_, i64>(2) == 1,
    })
}

fn failure_status(row: Option<tokio_postgres::Row>) -> FailureStatus {
    match row {
        None => FailureStatus::ClaimLost,
        Some(r) if r.get::<_, &str>(0) == "DEAD_LETTER" => FailureStatus::DeadLetter,
        Some(_) => FailureStatus::Pending,
    }
}

/// Moves DEAD_LETTER rows back to PENDING with attempts reset: the given ids,
/// or every dead letter (optionally of one workspace) when `ids` is `None`.
pub(crate) async fn requeue_dead_letters(
    client: &impl GenericClient,
    ids: Option<&[Uuid]>,
    workspace_id: Option<&str>,
) -> Result<u64, tokio_postgres::Error> {
    let ids: Option<Vec<Uuid>> = ids.map(<[Uuid]>::to_vec);
    let row = client
        .query_one(
            "SELECT requeue_dead_letter_items($1, $2)",
            &[&ids, &workspace_id],
        )
        .await?;
    Ok(u64::try_from(row.get::<_, i32>(0)).unwrap_or(0))
}

/// Deletes finished rows older than `days` days; returns how many.
pub(crate) async fn cleanup_old_items(
    client: &impl GenericClient,
    days: i32,
) -> Result<u64, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT cleanup_old_outbox_items($1)", &[&days])
        .await?;
    Ok(u64::try_from(row.get::<_, i32>(0)).unwrap_or(0))
}

/// A stored Google connection, as the token refresher reads it.
#[derive(Clone)]
pub(crate) struct ConnectionRow {
    /// The Google account.
    pub google_email: String,
    /// The encrypted refresh token (an envelope, never plaintext).
    pub refresh_token_encrypted: String,
    /// False once Google refused the grant; set back by storing a new token.
    pub is_valid: bool,
    /// Why it is invalid.
    pub invalid_reason: Option<String>,
    /// Bumped by every reconnect (see [`connection_version`]).
    pub version: i64,
}

impl std::fmt::Debug for ConnectionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionRow")
            .field("google_email", &self.google_email)
            .field("is_valid", &self.is_valid)
            .field("invalid_reason", &self.invalid_reason)
            .finish_non_exhaustive()
    }
}

/// The workspace's connection, if one is stored.
pub(crate) async fn connection(
    client: &impl GenericClient,
    workspace_id: &str,
) -> Result<Option<ConnectionRow>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT google_email, refresh_token_encrypted, is_valid, invalid_reason,
                    connection_version
               FROM google_connections WHERE workspace_id = $1",
            &[&workspace_id],
        )
        .await?;
    Ok(row.map(|r| ConnectionRow {
        google_email: r.get(0),
        refresh_token_encrypted: r.get(1),
        is_valid: r.get(2),
        invalid_reason: r.get(3),
        version: r.get(4),
    }))
}

/// Connections' versions, read by primary key before each Google call so
/// that a reconnect is never missed (see `versions`).
pub(crate) const CONNECTION_VERSIONS: &str =
    "SELECT workspace_id, connection_version FROM google_connections WHERE workspace_id = ANY ($1)";

/// What [`resolve_item`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// The row is keyed by the calendar's own id: go on.
    Keyed,
    /// It was keyed by another name: re-keyed (with its workspace's waiting
    /// rows of that name) and back in line without using an attempt.
    Rekeyed {
        /// Sources that had a binding under both names with different events
        /// (the older event may still be live; REBUILD_ALL removes it).
        doubled: i32,
    },
    /// The connection changed since the calendar was resolved: ask again.
    Stale,
    /// Another worker owns the row now.
    ClaimLost,
}

/// An item whose payload names its calendar `name` learnt that it is
/// `resolved` (under connection `version`): see `calendar_sync_resolve_item`
/// in the migrations.
pub(crate) async fn resolve_item(
    client: &impl GenericClient,
    item: &ClaimedItem,
    calendar: &CalendarKey,
    resolved: &str,
    version: Option<i64>,
) -> Result<Resolution, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT verdict, doubled FROM calendar_sync_resolve_item($1, $2, $3, $4, $5, $6)",
            &[
                &item.id,
                &item.claim_token,
                &calendar.workspace_id,
                &calendar.calendar_id,
                &resolved,
                &version,
            ],
        )
        .await?;
    Ok(match row.get::<_, &str>(0) {
        "KEYED" => Resolution::Keyed,
        "REKEYED" => Resolution::Rekeyed {
            doubled: row.get(1),
        },
        "STALE" => Resolution::Stale,
        _ => Resolution::ClaimLost,
    })
}

/// Records that `calendar` names `resolved` and carries its bindings over
/// (`calendar_sync_record_alias`): `None` when the connection changed since `version`, else
/// how many sources had a binding under both names with different events.
pub(crate) async fn record_alias(
    client: &impl GenericClient,
    calendar: &CalendarKey,
    resolved: &str,
    version: Option<i64>,
) -> Result<Option<i32>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT calendar_sync_record_alias($1, $2, $3, $4)",
            &[
                &calendar.workspace_id,
                &calendar.calendar_id,
                &resolved,
                &version,
            ],
        )
        .await?;
    let doubled: i32 = row.get(0);
    Ok((doubled >= 0).then_some(doubled))
}

/// The calendar names a workspace's bindings use, other than `except`.
pub(crate) async fn binding_calendar_names(
    client: &impl GenericClient,
    workspace_id: &str,
    except: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT DISTINCT calendar_id FROM calendar_event_bindings
              WHERE workspace_id = $1 AND calendar_id <> $2",
            &[&workspace_id, &except],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The names known to resolve to `calendar`'s id, other than that id.
pub(crate) async fn calendar_aliases(
    client: &impl GenericClient,
    calendar: &CalendarKey,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT calendar_id FROM calendar_aliases
              WHERE workspace_id = $1 AND resolved_id = $2 AND calendar_id <> $2
              ORDER BY 1",
            &[&calendar.workspace_id, &calendar.calendar_id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Stores (or replaces) a workspace's connection and marks it valid.
pub(crate) async fn put_connection(
    client: &impl GenericClient,
    workspace_id: &str,
    google_email: &str,
    refresh_token_encrypted: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO google_connections (workspace_id, google_email, refresh_token_encrypted)
             VALUES ($1, $2, $3)
             ON CONFLICT (workspace_id) DO UPDATE
                SET google_email = excluded.google_email,
                    refresh_token_encrypted = excluded.refresh_token_encrypted,
                    is_valid = true, invalid_reason = NULL, paused_until = NULL, updated_at = now(),
                    connection_version = google_connections.connection_version + 1",
            &[&workspace_id, &google_email, &refresh_token_encrypted],
        )
        .await?;
    Ok(())
}

/// Replaces the stored refresh token after Google rotated it, unless someone
/// stored a different one meanwhile, and notes the refresh
/// (`token_refreshed_at`) in the same statement.
pub(crate) async fn replace_refresh_token(
    client: &impl GenericClient,
    workspace_id: &str,
    old_envelope: &str,
    new_envelope: &str,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            "UPDATE google_connections
                SET refresh_token_encrypted = $3, updated_at = now(), token_refreshed_at = now()
              WHERE workspace_id = $1 AND refresh_token_encrypted = $2",
            &[&workspace_id, &old_envelope, &new_envelope],
        )
        .await?;
    Ok(n == 1)
}

/// Records until when a worker's circuit breaker keeps the connection's
/// calls back (`None`: it closed), for the dashboard.
pub(crate) async fn note_breaker(
    client: &impl GenericClient,
    workspace_id: &str,
    open_secs: Option<f64>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE google_connections
                SET breaker_open_until = now() + make_interval(secs => $2)
              WHERE workspace_id = $1",
            &[&workspace_id, &open_secs],
        )
        .await?;
    Ok(())
}

/// Records that a worker minted an access token from the connection's
/// refresh token (when the refresh token was not stored again with it).
pub(crate) async fn note_token_refresh(
    client: &impl GenericClient,
    workspace_id: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE google_connections SET token_refreshed_at = now() WHERE workspace_id = $1",
            &[&workspace_id],
        )
        .await?;
    Ok(())
}

/// Records that Google's usage limits made the workspace's calendar read-only.
pub(crate) async fn pause_connection(
    client: &impl GenericClient,
    workspace_id: &str,
    pause_secs: f64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE google_connections SET paused_until = now() + make_interval(secs => $2), updated_at = now()
              WHERE workspace_id = $1",
            &[&workspace_id, &pause_secs],
        )
        .await?;
    Ok(())
}

/// A connection as operators see it: never the token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionInfo {
    /// The workspace.
    pub workspace_id: String,
    /// The Google account.
    pub google_email: String,
    /// Whether the grant is usable.
    pub is_valid: bool,
    /// Why not.
    pub invalid_reason: Option<String>,
    /// Whether Google's usage limits pause it now.
    pub paused: bool,
}

/// Every stored connection, without tokens.
pub(crate) async fn list_connections(
    client: &impl GenericClient,
) -> Result<Vec<ConnectionInfo>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT workspace_id, google_email, is_valid, invalid_reason,
                    coalesce(paused_until > now(), false)
               FROM google_connections ORDER BY workspace_id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ConnectionInfo {
            workspace_id: r.get(0),
            google_email: r.get(1),
            is_valid: r.get(2),
            invalid_reason: r.get(3),
            paused: r.get(4),
        })
        .collect())
}

/// Whether the application defines the desired-state view.
pub(crate) async fn desired_view_exists(
    client: &impl GenericClient,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT to_regclass('calendar_sync_desired_events') IS NOT NULL",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// A row of the application's `calendar_sync_desired_events` view.
#[derive(Debug, Clone)]
pub(crate) struct DesiredRow {
    /// Source type.
    pub source_type: String,
    /// Source id.
    pub source_id: String,
    /// The application's event category.
    pub event_type: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Start, as ISO text.
    pub start_at: Option<String>,
    /// End, as ISO text.
    pub end_at: Option<String>,
    /// All-day flag.
    pub is_all_day: Option<bool>,
    /// IANA time zone.
    pub time_zone: Option<String>,
}

/// The next page of the view's rows of one calendar after `after`, in byte
/// order of (source_type, source_id). Timestamps and dates are read through
/// JSON, which renders them in ISO 8601 whatever their column type.
pub(crate) async fn desired_view_page(
    client: &impl GenericClient,
    calendar: &CalendarKey,
    after: Option<&crate::operation::SourceCursor>,
    limit: i64,
) -> Result<Vec<DesiredRow>, tokio_postgres::Error> {
    let (after_type, after_id) = split_cursor(after);
    let rows = client
        .query(
            r#"
-- desired_view_page
SELECT source_type::text, source_id::text, event_type::text, title::text, description::text,
       to_jsonb(start_at) #>> '{}', to_jsonb(end_at) #>> '{}', is_all_day, time_zone::text
  FROM calendar_sync_desired_events
 WHERE workspace_id::text = $1 AND calendar_id::text = $2
   AND ($3::text IS NULL
        OR (source_type::text COLLATE "C", source_id::text COLLATE "C") > ($3::text COLLATE "C", $4::text COLLATE "C"))
 ORDER BY source_type::text COLLATE "C", source_id::text COLLATE "C"
 LIMIT $5
"#,
            &[&calendar.workspace_id, &calendar.calendar_id, &after_type, &after_id, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| DesiredRow {
            source_type: r.get(0),
            source_id: r.get(1),
            event_type: r.get(2),
            title: r.get(3),
            description: r.get(4),
            start_at: r.get(5),
            end_at: r.get(6),
            is_all_day: r.get(7),
            time_zone: r.get(8),
        })
        .collect())
}

fn split_cursor(cursor: Option<&crate::operation::SourceCursor>) -> (Option<&str>, Option<&str>) {
    (
        cursor.map(|c| c.source_type.as_str()),
        cursor.map(|c| c.source_id.as_str()),
    )
}

/// LIVE bindings of one calendar after `after`, in byte order, at most `limit`.
pub(crate) async fn live_bindings_page(
    client: &impl GenericClient,
    calendar: &CalendarKey,
    after: Option<&crate::operation::SourceCursor>,
    limit: i64,
) -> Result<Vec<StoredBinding>, tokio_postgres::Error> {
    bindings_query(client, calendar, after, None, true, limit).await
}

/// Bindings (any state) of one calendar with keys in `(after, upto]`.
pub(crate) async fn bindings_in_range(
    client: &impl GenericClient,
    calendar: &CalendarKey,
    after: Option<&crate::operation::SourceCursor>,
    upto: Option<&crate::operation::SourceCursor>,
) -> Result<Vec<StoredBinding>, tokio_postgres::Error> {
    bindings_query(client, calendar, after, upto, false, i64::MAX).await
}

async fn bindings_query(
    client: &impl GenericClient,
    calendar: &CalendarKey,
    after: Option<&crate::operation::SourceCursor>,
    upto: Option<&crate::operation::SourceCursor>,
    live_only: bool,
    limit: i64,
) -> Result<Vec<StoredBinding>, tokio_postgres::Error> {
    let (after_type, after_id) = split_cursor(after);
    let (upto_type, upto_id) = split_cursor(upto);
    let rows = client
        .query(
            r#"
-- bindings_query: one calendar's bindings in a key range, in byte order
SELECT source_type, source_id, google_event_id, generation, state, etag, content_hash, content, event_type
  FROM calendar_event_bindings
 WHERE workspace_id = $1 AND calendar_id = $2
   AND ($3::text IS NULL OR (source_type COLLATE "C", source_id COLLATE "C") > ($3::text COLLATE "C", $4::text COLLATE "C"))
   AND ($5::text IS NULL OR (source_type COLLATE "C", source_id COLLATE "C") <= ($5::text COLLATE "C", $6::text COLLATE "C"))
   AND (NOT $7 OR state = 'LIVE')
 ORDER BY source_type COLLATE "C", source_id COLLATE "C"
 LIMIT $8
"#,
            &[
                &calendar.workspace_id,
                &calendar.calendar_id,
                &after_type,
                &after_id,
                &upto_type,
                &upto_id,
                &live_only,
                &limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| stored_binding(calendar, r)).collect())
}

fn stored_binding(calendar: &CalendarKey, r: &tokio_postgres::Row) -> StoredBinding {
    StoredBinding {
        source: SourceKey {
            calendar: calendar.clone(),
            source_type: r.get("source_type"),
            source_id: r.get("source_id"),
        },
        binding: Binding {
            google_event_id: r.get("google_event_id"),
            generation: r.get("generation"),
            state: BindingState::parse(r.get("state")),
            etag: r.get("etag"),
            content_hash: r.get("content_hash"),
        },
        content: r.get("content"),
        event_type: r.get("event_type"),
    }
}

/// Event ids the calendar's bindings want kept (LIVE or being inserted).
pub(crate) async fn bound_event_ids(
    client: &impl GenericClient,
    calendar: &CalendarKey,
) -> Result<std::collections::HashSet<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT google_event_id FROM calendar_event_bindings
              WHERE workspace_id = $1 AND calendar_id = $2 AND state IN ('LIVE', 'INSERTING')",
            &[&calendar.workspace_id, &calendar.calendar_id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Stores a long item's checkpoint and puts it back in line without using an
/// attempt, so that it resumes from there (after other work had a turn).
pub(crate) async fn checkpoint(
    client: &impl GenericClient,
    item: &ClaimedItem,
    progress: &Value,
) -> Result<FailureStatus, tokio_postgres::Error> {
    let row = client
        .query_opt(
            r#"
-- checkpoint
UPDATE sync_outbox
   SET status = 'PENDING', attempts = greatest(attempts - 1, 0), result = $3,
       next_attempt_at = now(), claim_token = NULL, updated_at = now()
 WHERE id = $1 AND claim_token = $2
RETURNING status
"#,
            &[&item.id, &item.claim_token, progress],
        )
        .await?;
    Ok(failure_status(row))
}
