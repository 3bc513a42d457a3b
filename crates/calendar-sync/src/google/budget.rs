//! Google's quotas, shared by every worker through PostgreSQL (`calendar_sync_budget`):
//! a token bucket per connection and one for the project. The claim pays an
//! item's first call (a row the buckets cannot pay for is never claimed);
//! each further call of the item (a 409 adoption, a list page, a 401 retry)
//! pays here before it is sent.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::calendar::{CalendarError, CalendarErrorKind};
use crate::db::Database;
use crate::db::connect::cause;
use crate::store;

/// Google's quotas as the drainer pays them: calls per `window` (Google
/// counts over sliding windows of a minute).
///
/// [`GoogleConfig::budget`](crate::GoogleConfig::budget) gives Google's; a
/// [`Calendar`](crate::Calendar) over another metered service returns its
/// own from [`Calendar::budget`](crate::Calendar::budget).
///
/// ```
/// use std::time::Duration;
/// use calendar_sync::{Budget, GoogleConfig};
/// use secrecy::SecretString;
///
/// let google = GoogleConfig {
///     per_connection_per_minute: 300,
///     ..GoogleConfig::new("client-id", SecretString::from("client-secret"))
/// };
/// let window = Duration::from_secs(60);
/// assert_eq!(google.budget(), Budget { per_connection: 300, per_project: 10_000, window });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Calls per window per connection (Google: 600 per user).
    pub per_connection: u32,
    /// Calls per window for the whole project (Google: 10,000).
    pub per_project: u32,
    /// The window: a minute, scaled down only by tests and benchmarks.
    pub window: Duration,
}

tokio::task_local! {
    /// Whether the item this task runs still has the call its claim paid for.
    static PREPAID: Cell<bool>;
}

/// Runs an item's work with the one call its claim paid for.
pub(crate) async fn with_prepaid_call<F: Future>(work: F) -> F::Output {
    PREPAID.scope(Cell::new(true), work).await
}

/// Uses up the claim's paid call, if this task still has it.
pub(crate) fn take_prepaid_call() -> bool {
    PREPAID.try_with(|p| p.replace(false)).unwrap_or(false)
}

/// Longest single sleep while waiting for a token (the wait is re-asked).
const MAX_WAIT: Duration = Duration::from_secs(5);

/// The calls of one process waiting for a connection's quota, in line: one
/// asks the database at a time and the others wait their turn (first come,
/// first served), instead of every waiting call waking up for each token. A
/// REBUILD_ALL writes 50 events at once: at Google's 10 calls a second, 50
/// callers polling the bucket cost about 7 ms of worker CPU per call.
#[derive(Default)]
pub(crate) struct Lines(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

impl Lines {
    /// The line of `workspace` (kept while someone stands in it).
    fn of(&self, workspace: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut lines = self.0.lock().expect("lines");
        if let Some(line) = lines.get(workspace).and_then(Weak::upgrade) {
            return line;
        }
        lines.retain(|_, line| line.strong_count() > 0);
        let line = Arc::new(tokio::sync::Mutex::new(()));
        lines.insert(workspace.to_owned(), Arc::downgrade(&line));
        line
    }
}

/// Pays one call of `workspace`, waiting (in line with this process's other
/// calls of the connection) until both buckets can.
pub(crate) async fn pay(
    db: &Database,
    workspace: &str,
    budget: Budget,
) -> Result<(), CalendarError> {
    let line = db.payers().of(workspace);
    let _turn = line.lock().await;
    loop {
        let wait = match db.client().await {
            Ok(client) => store::take_budget(&**client, workspace, budget).await,
            Err(e) => return Err(unavailable(&e)),
        };
        match wait {
            Ok(None) => return Ok(()),
            Ok(Some(wait)) => tokio::time::sleep(wait.min(MAX_WAIT)).await,
            Err(e) => return Err(unavailable(&e)),
        }
    }
}

fn unavailable(error: &(dyn std::error::Error + 'static)) -> CalendarError {
    CalendarError::new(
        CalendarErrorKind::Transient,
        "budget_unavailable",
        format!(
            "could not pay for a call from the shared quota: {}",
            cause(error)
        ),
    )
}
