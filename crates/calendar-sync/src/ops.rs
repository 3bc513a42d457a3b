//! What operators ask: the outbox's state at a glance, readiness, and the
//! gauges behind `/metrics`. The worker binary renders these; embedding
//! services can call them too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use tokio_postgres::error::SqlState;

use crate::crypto::TokenCipher;
use crate::db::Database;
use crate::db::connect::cause;
use crate::db::migrate::known_migrations;
use crate::error::Error;
use crate::store;
pub use crate::store::ConnectionInfo;

/// Every status an outbox row can have, in display order.
const STATUSES: [&str; 5] = [
    "PENDING",
    "PROCESSING",
    "COMPLETED",
    "DEAD_LETTER",
    "SUPERSEDED",
];

/// Dead letters of one workspace with one error code.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterGroup {
    /// The workspace (absent for payloads without one).
    pub workspace_id: Option<String>,
    /// The stable code of `last_error`, e.g. `google_404_notFound`.
    pub code: String,
    /// How many rows.
    pub count: i64,
    /// The newest row's full `last_error`.
    pub last_error: String,
}

/// The outbox at a glance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    /// Rows per status (every status present, zeros included).
    pub counts: BTreeMap<String, i64>,
    /// Age of the oldest PENDING row, in seconds.
    pub oldest_pending_age_secs: Option<f64>,
    /// Dead letters grouped by workspace and error code, largest groups first.
    pub dead_letters: Vec<DeadLetterGroup>,
    /// Stored Google connections (never a token).
    pub connections: Vec<ConnectionInfo>,
    /// Stored key ids that the reader's configured keys cannot open (filled by
    /// [`StatusReport::check_keys`]; empty when not checked).
    pub unknown_key_ids: Vec<UnknownKeyId>,
}

/// Reads the status report.
///
/// ```no_run
/// # async fn example(
/// #     db: &calendar_sync::Database,
/// #     cipher: &calendar_sync::TokenCipher,
/// # ) -> Result<(), calendar_sync::Error> {
/// let mut report = calendar_sync::ops::status(db).await?;
/// report.check_keys(db, cipher).await?; // optional: key ids no configured key has
/// print!("{}", report.render_table());
/// println!("{} waiting", report.counts["PENDING"]);
/// # Ok(()) }
/// ```
pub async fn status(db: &Database) -> Result<StatusReport, Error> {
    let client = db.client().await?;
    let mut counts: BTreeMap<String, i64> = STATUSES.iter().map(|s| ((*s).to_owned(), 0)).collect();
    for row in client
        .query(
            "SELECT status, count(*) FROM sync_outbox GROUP BY status",
            &[],
        )
        .await?
    {
        counts.insert(row.get(0), row.get(1));
    }
    let oldest_pending_age_secs = client
        .query_opt("SELECT age_seconds FROM sync_outbox_oldest_pending", &[])
        .await?
        .map(|r| r.get::<_, f64>(0));
    let dead_letters = client
        .query(
            r#"
-- dead letters per workspace and error code, with the newest message
SELECT workspace_id, code, count(*) AS n,
       (array_agg(coalesce(last_error, '') ORDER BY updated_at DESC))[1] AS newest
  FROM (SELECT workspace_id, last_error, updated_at,
               coalesce(substring(last_error FROM '^\[([^\]]+)\]'), 'unknown') AS code
          FROM sync_outbox WHERE status = 'DEAD_LETTER') d
 GROUP BY workspace_id, code
 ORDER BY n DESC, workspace_id, code
"#,
            &[],
        )
        .await?
        .iter()
        .map(|r| DeadLetterGroup {
            workspace_id: r.get(0),
            code: r.get(1),
            count: r.get(2),
            last_error: r.get(3),
        })
        .collect();
    let connections = store::list_connections(&**client).await?;
    Ok(StatusReport {
        counts,
        oldest_pending_age_secs,
        dead_letters,
        connections,
        unknown_key_ids: Vec::new(),
    })
}

impl StatusReport {
    /// Fills `unknown_key_ids` against the configured keys.
    pub async fn check_keys(&mut self, db: &Database, cipher: &TokenCipher) -> Result<(), Error> {
        self.unknown_key_ids = unknown_key_ids(db, cipher).await?;
        Ok(())
    }

    /// A readable terminal table.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{:<12} {:>10}", "STATUS", "ITEMS");
        for status in STATUSES {
            let _ = writeln!(
                out,
                "{status:<12} {:>10}",
                self.counts.get(status).copied().unwrap_or(0)
            );
        }
        let age = self
            .oldest_pending_age_secs
            .map_or_else(|| "none pending".to_owned(), human_duration);
        let _ = writeln!(out, "\noldest pending: {age}");
        if self.dead_letters.is_empty() {
            let _ = writeln!(out, "dead letters: none");
        } else {
            let _ = writeln!(out, "\nDEAD LETTERS");
            let _ = writeln!(
                out,
                "{:<24} {:<32} {:>6}  NEWEST last_error",
                "WORKSPACE", "CODE", "ITEMS"
            );
            for g in &self.dead_letters {
                let ws = g.workspace_id.as_deref().unwrap_or("-");
                let _ = writeln!(
                    out,
                    "{:<24} {:<32} {:>6}  {}",
                    cut(ws, 24),
                    cut(&g.code, 32),
                    g.count,
                    cut(&g.last_error, 100)
                );
            }
        }
        if let Some(line) = unknown_key_ids_line(&self.unknown_key_ids) {
            let _ = writeln!(out, "\nKEYS: {line}");
        }
        if !self.connections.is_empty() {
            let _ = writeln!(out, "\nCONNECTIONS");
            let _ = writeln!(
                out,
                "{:<24} {:<32} {:<8}  NOTE",
                "WORKSPACE", "GOOGLE ACCOUNT", "VALID"
            );
            for c in &self.connections {
                let note = match (&c.invalid_reason, c.paused) {
                    (Some(reason), _) if !c.is_valid => cut(reason, 80),
                    (_, true) => "paused by Google usage limits".to_owned(),
                    _ => String::new(),
                };
                let valid = if c.is_valid { "yes" } else { "NO" };
                let _ = writeln!(
                    out,
                    "{:<24} {:<32} {valid:<8}  {note}",
                    cut(&c.workspace_id, 24),
                    cut(&c.google_email, 32)
                );
            }
        }
        out
    }

    /// Publishes the report as gauges through the `metrics` facade.
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts as gauges: f64 is exact to 2^53"
    )]
    pub fn record_gauges(&self) {
        for (status, count) in &self.counts {
            metrics::gauge!("calendar_sync_outbox_items", "status" => status.clone())
                .set(*count as f64);
        }
        metrics::gauge!("calendar_sync_oldest_pending_age_seconds")
            .set(self.oldest_pending_age_secs.unwrap_or(0.0));
        metrics::gauge!("calendar_sync_dead_letters")
            .set(self.counts.get("DEAD_LETTER").copied().unwrap_or(0) as f64);
        let invalid = self.connections.iter().filter(|c| !c.is_valid).count();
        metrics::gauge!("calendar_sync_invalid_connections").set(invalid as f64);
        let paused = self.connections.iter().filter(|c| c.paused).count();
        metrics::gauge!("calendar_sync_paused_connections").set(paused as f64);
    }
}

/// A key id that stored refresh tokens are sealed with and no configured key has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownKeyId {
    /// The envelope's key id (not secret).
    pub key_id: String,
    /// How many connections carry it.
    pub connections: i64,
}

/// The stored key ids that `cipher` cannot open: a configuration mistake
/// (a new `TOKEN_ENCRYPTION_KEY` without the old one in
/// `TOKEN_ENCRYPTION_OLD_KEYS`). Their workspaces' items wait, unharmed.
///
/// ```no_run
/// # async fn example(
/// #     db: &calendar_sync::Database,
/// #     cipher: &calendar_sync::TokenCipher,
/// # ) -> Result<(), calendar_sync::Error> {
/// use calendar_sync::ops;
///
/// // At start-up: say so at once rather than let items wait unexplained.
/// let unknown = ops::unknown_key_ids(db, cipher).await?;
/// if let Some(line) = ops::unknown_key_ids_line(&unknown) {
///     eprintln!("{line}");
/// }
/// # Ok(()) }
/// ```
pub async fn unknown_key_ids(
    db: &Database,
    cipher: &TokenCipher,
) -> Result<Vec<UnknownKeyId>, Error> {
    let client = db.pool().get().await?;
    let rows = client
        .query(
            "SELECT split_part(refresh_token_encrypted, ':', 2) AS kid, count(*)
               FROM google_connections WHERE refresh_token_encrypted LIKE 'v1:%'
              GROUP BY kid ORDER BY kid",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| UnknownKeyId {
            key_id: r.get(0),
            connections: r.get(1),
        })
        .filter(|k| !cipher.knows_key_id(&k.key_id))
        .collect())
}

/// The one line `run`, `/readyz` and `status` print about unknown key ids.
pub fn unknown_key_ids_line(unknown: &[UnknownKeyId]) -> Option<String> {
    if unknown.is_empty() {
        return None;
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|k| format!("{} ({} connection(s))", k.key_id, k.connections))
        .collect();
    Some(format!(
        "stored refresh tokens are sealed with key id(s) no configured key has: {}; \
         add the key(s) to TOKEN_ENCRYPTION_OLD_KEYS (their items wait meanwhile)",
        list.join(", ")
    ))
}

/// Why [`readiness`] says the worker is not ready.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// No session to the database could be had; the error names host:port,
    /// database and user, and the cause.
    #[error("{0}")]
    Unreachable(#[source] Error),
    /// The applied migrations could not be read, for another reason than the
    /// schema being absent: a role without SELECT on the table, a session
    /// that died. PostgreSQL's own words are in the source.
    #[error("cannot read the applied migrations: {}", cause(.0))]
    MigrationsUnreadable(#[source] tokio_postgres::Error),
    /// The schema is behind this build: fewer migrations are applied than it
    /// knows (`applied` is 0 when the schema was never created).
    #[error("{applied} of {known} migrations applied; run `calendar-sync-worker migrate`")]
    MigrationsMissing {
        /// Migrations recorded in the database.
        applied: usize,
        /// Migrations this build knows.
        known: usize,
    },
}

/// Whether the database answers and has every migration this build knows.
///
/// ```no_run
/// # async fn example(db: &calendar_sync::Database) {
/// // A readiness probe: ready once the schema is in place, else the reason.
/// match calendar_sync::ops::readiness(db).await {
///     Ok(()) => println!("ready"),
///     Err(why) => println!("not ready: {why}"),
/// }
/// # }
/// ```
pub async fn readiness(db: &Database) -> Result<(), NotReady> {
    let known = known_migrations();
    let client = db.client().await.map_err(NotReady::Unreachable)?;
    let applied = match client
        .query_one("SELECT count(*) FROM calendar_sync_migrations", &[])
        .await
    {
        // count(*) is never negative.
        Ok(row) => usize::try_from(row.get::<_, i64>(0)).unwrap_or(0),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => 0,
        Err(e) => return Err(NotReady::MigrationsUnreadable(e)),
    };
    if applied < known {
        return Err(NotReady::MigrationsMissing { applied, known });
    }
    Ok(())
}

fn cut(text: &str, max: usize) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    if text.chars().count() > max {
        out.pop();
        out.push('…');
    }
    out
}

fn human_duration(secs: f64) -> String {
    // Whole seconds; an age too large for a Duration reads as the largest.
    let s = Duration::try_from_secs_f64(secs.max(0.0).round()).map_or(u64::MAX, |d| d.as_secs());
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// Moves DEAD_LETTER rows back to PENDING with attempts reset: the given ids,
/// or every dead letter (optionally of one workspace) when `ids` is `None`. A
/// dead letter that a newer item of its source has overtaken (completed since)
/// becomes SUPERSEDED instead: it is never sent again. Returns how many rows
/// left DEAD_LETTER.
///
/// ```no_run
/// # async fn example(db: &calendar_sync::Database) -> Result<(), calendar_sync::Error> {
/// // Every dead letter of one workspace, after its owner reconnected:
/// let requeued = calendar_sync::ops::requeue(db, None, Some("acme")).await?;
/// # let _ = requeued; Ok(()) }
/// ```
pub async fn requeue(
    db: &Database,
    ids: Option<&[uuid::Uuid]>,
    workspace_id: Option<&str>,
) -> Result<u64, Error> {
    Ok(store::requeue_dead_letters(&**db.client().await?, ids, workspace_id).await?)
}

/// Deletes finished rows (COMPLETED, DEAD_LETTER, SUPERSEDED) older than
/// `days` days; returns how many were deleted.
///
/// ```no_run
/// # async fn example(db: &calendar_sync::Database) -> Result<(), calendar_sync::Error> {
/// let deleted = calendar_sync::ops::cleanup(db, 30).await?;
/// # let _ = deleted; Ok(()) }
/// ```
pub async fn cleanup(db: &Database, days: i32) -> Result<u64, Error> {
    Ok(store::cleanup_old_items(&**db.client().await?, days).await?)
}

/// Stores a workspace's Google connection: encrypts the refresh token, upserts
/// the row, and marks it valid (re-authorising an invalid connection). A
/// connection to another Google account starts a new connection version: calls
/// begun under the old grant can no longer write.
///
/// ```no_run
/// # async fn example(db: &calendar_sync::Database) -> Result<(), Box<dyn std::error::Error>> {
/// use calendar_sync::TokenCipher;
/// use secrecy::SecretString;
///
/// let cipher = TokenCipher::new(&std::env::var("TOKEN_ENCRYPTION_KEY")?, "")?;
/// let refresh_token = SecretString::from("1//0g-refresh-token-from-the-oauth-callback");
/// calendar_sync::ops::put_connection(db, &cipher, "acme", "owner@acme.example", &refresh_token)
///     .await?;
/// # Ok(()) }
/// ```
pub async fn put_connection(
    db: &Database,
    cipher: &TokenCipher,
    workspace_id: &str,
    google_email: &str,
    refresh_token: &secrecy::SecretString,
) -> Result<(), Error> {
    let sealed = cipher.encrypt(workspace_id, refresh_token);
    Ok(store::put_connection(&**db.client().await?, workspace_id, google_email, &sealed).await?)
}

/// Every stored connection and its validity; never a token.
///
/// ```no_run
/// # async fn example(db: &calendar_sync::Database) -> Result<(), calendar_sync::Error> {
/// for connection in calendar_sync::ops::list_connections(db).await? {
///     if !connection.is_valid {
///         println!("{} must reconnect: {:?}", connection.workspace_id, connection.invalid_reason);
///     }
/// }
/// # Ok(()) }
/// ```
pub async fn list_connections(db: &Database) -> Result<Vec<ConnectionInfo>, Error> {
    Ok(store::list_connections(&**db.client().await?).await?)
}
