//! Drift detection: calendars that heal themselves. People edit and delete
//! synced events by hand; an unchanged upsert makes no call, so without a
//! look at Google such a change stays until the next changed upsert or a
//! REBUILD_ALL.
//!
//! Every `drift_check_interval`, each calendar with LIVE bindings of a valid
//! connection is listed through Google's incremental sync (one page per
//! step, its page token stored between steps, like REBUILD_ALL's
//! checkpoints; the first listing is a full one and ends with a sync token,
//! later ones list only changes). A listed event of ours that is cancelled
//! was deleted by hand; one whose etag is not the one our last write
//! returned (and whose content is not ours) was edited by hand. Our own
//! writes are never drift: their etag is the binding's, and a source with an
//! unfinished outbox item, or a binding written since the listing began, is
//! left alone (our write is coming, or newer than what was listed).

mod content;
mod policy;

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::apply::content_hash;
use crate::calendar::{Calendar, CalendarErrorKind, EventBody, RemoteEvent};
use crate::db::Database;
use crate::error::Error;
use crate::operation::Operation;
use crate::store;
use crate::store::drift::{self as drift_store, DriftClaim, DriftRecord, WatchedBinding};
use content::upsert_from_content;
pub use policy::DriftPolicy;

/// How long a claimed calendar is kept from other workers while one step of
/// its check runs (a worker that dies mid-step gives it back after this).
const CLAIM_LEASE: Duration = Duration::from_secs(300);

/// The shortest wait before a calendar whose listing failed is tried again.
const MIN_RETRY: Duration = Duration::from_secs(1);

/// What [`OutboxDrainer::check_drift`](crate::OutboxDrainer::check_drift) did.
///
/// ```
/// use calendar_sync::DriftReport;
///
/// let report = DriftReport::default();
/// assert_eq!(report.deleted + report.edited, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriftReport {
    /// Pages of changes listed (one `events.list` call each).
    pub pages: u64,
    /// Listings that ended with a new sync token.
    pub listings_finished: u64,
    /// Events found deleted by hand (newly recorded).
    pub deleted: u64,
    /// Events found edited by hand (newly recorded).
    pub edited: u64,
    /// Listings started again because Google found the sync token too old.
    pub full_syncs_required: u64,
    /// Listings that failed (tried again after the interval).
    pub failed: u64,
}

/// Checks every calendar due now, each until its listing ends (or fails),
/// then returns. Several workers may run it at once: each calendar is
/// claimed by one of them per step.
pub(crate) async fn check_due<C: Calendar>(
    db: &Database,
    calendar: &C,
    policy: DriftPolicy,
    interval: Duration,
) -> Result<DriftReport, Error> {
    let mut report = DriftReport::default();
    let cutoff = {
        let client = db.client().await?;
        drift_store::discover_calendars(&**client).await?;
        drift_store::database_now(&**client).await?
    };
    let lease = CLAIM_LEASE.as_secs_f64();
    loop {
        let client = db.client().await?;
        let claim = drift_store::claim_due_calendar(&**client, cutoff, lease).await?;
        drop(client);
        let Some(claim) = claim else {
            return Ok(report);
        };
        step(db, calendar, policy, interval, &claim, &mut report).await?;
    }
}

/// Runs [`check_due`] every `interval` until cancelled; a failure is logged
/// and the next interval tries again.
pub(crate) async fn run_periodically<C: Calendar>(
    db: &Database,
    calendar: &C,
    policy: DriftPolicy,
    interval: Duration,
    cancel: &CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let checked = tokio::select! {
            _ = cancel.cancelled() => return,
            checked = check_due(db, calendar, policy, interval) => checked,
        };
        match checked {
            Ok(report) if report.deleted + report.edited > 0 => {
                tracing::info!(
                    deleted = report.deleted,
                    edited = report.edited,
                    policy = %policy,
                    "drift check found events changed by hand"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "drift check failed; trying again next interval"),
        }
    }
}

/// One page of one calendar's listing, and what the policy does about it.
async fn step<C: Calendar>(
    db: &Database,
    calendar: &C,
    policy: DriftPolicy,
    interval: Duration,
    claim: &DriftClaim,
    report: &mut DriftReport,
) -> Result<(), Error> {
    let listed = calendar
        .list_changes(
            &claim.calendar,
            claim.sync_token.as_deref(),
            claim.page_token.as_deref(),
        )
        .await;
    report.pages += 1;
    let page = match listed {
        Ok(page) => page,
        // Not when already listing everything from the start: a 410 then is
        // a failure like any other, or one run could restart forever.
        Err(e)
            if e.means_full_sync_required()
                && (claim.sync_token.is_some() || claim.page_token.is_some()) =>
        {
            report.full_syncs_required += 1;
            drift_store::restart_listing(&**db.client().await?, claim).await?;
            return Ok(());
        }
        Err(e) => {
            report.failed += 1;
            tracing::warn!(
                workspace_id = %claim.calendar.workspace_id,
                calendar_id = %claim.calendar.calendar_id,
                error = %e,
                "drift check could not list the calendar's changes"
            );
            // Never at once: one run must not keep trying a failing calendar.
            let retry = e
                .retry_after
                .unwrap_or(interval)
                .max(interval)
                .max(MIN_RETRY);
            // A refused request (a page or sync token Google no longer
            // takes) is not asked again: the next try lists everything.
            let start_over = e.kind == CalendarErrorKind::Permanent;
            let client = db.client().await?;
            drift_store::postpone_listing(&**client, claim, retry.as_secs_f64(), start_over)
                .await?;
            return Ok(());
        }
    };
    let mut pooled = db.client().await?;
    let client: &mut tokio_postgres::Client = &mut pooled;
    let ids: Vec<String> = page.events.iter().map(|e| e.id.clone()).collect();
    let watched = drift_store::watched_bindings(&*client, claim, &ids).await?;
    let mut tx = client.transaction().await?;
    if !watched.is_empty() {
        // Serialised with claims, which lock the same bindings and outbox rows.
        store::lock_claims(&tx).await?;
    }
    for binding in &watched {
        let Some(remote) = page.events.iter().find(|e| e.id == binding.google_event_id) else {
            continue;
        };
        if let Some(kind) = drift_kind(binding, remote) {
            apply_policy(&mut tx, policy, binding, remote, kind, report).await?;
        }
    }
    let advanced = drift_store::advance_listing(
        &tx,
        claim,
        page.next_page_token.as_deref(),
        page.next_sync_token.as_deref(),
        interval.as_secs_f64(),
    )
    .await?;
    if advanced {
        tx.commit().await?;
        report.listings_finished += u64::from(page.next_sync_token.is_some());
    }
    // A lost claim rolls back: the worker that holds it now records the same drifts.
    Ok(())
}

/// Deleted or edited by hand, or `None`: no drift, or our own write.
fn drift_kind(binding: &WatchedBinding, remote: &RemoteEvent) -> Option<DriftKind> {
    if binding.ours_in_flight {
        return None;
    }
    if remote.cancelled {
        return Some(DriftKind::Deleted);
    }
    if remote.etag.is_none() || remote.etag == binding.etag {
        return None;
    }
    // A new etag over our own content (a guest's reply, a reminder) is no drift.
    let ours = binding
        .content
        .as_ref()
        .and_then(|c| serde_json::from_value::<EventBody>(c.clone()).ok());
    if ours.is_some() && ours == remote.body {
        return None;
    }
    Some(DriftKind::Edited)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DriftKind {
    Deleted,
    Edited,
}

impl DriftKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::Edited => "edited",
        }
    }
}

/// Records the drift (once) and does what the policy says, in the caller's
/// transaction; a binding that moved on since it was read is left alone.
async fn apply_policy(
    tx: &mut tokio_postgres::Transaction<'_>,
    policy: DriftPolicy,
    binding: &WatchedBinding,
    remote: &RemoteEvent,
    kind: DriftKind,
    report: &mut DriftReport,
) -> Result<(), Error> {
    let remote_etag = remote.etag.as_deref().unwrap_or("");
    let repair = match policy {
        DriftPolicy::Repair => repair_of(binding),
        _ => None,
    };
    let adopted = match (policy, kind) {
        (DriftPolicy::Adopt, DriftKind::Deleted) => Some(None),
        (DriftPolicy::Adopt, DriftKind::Edited) => remote.body.as_ref().map(|body| {
            let json = serde_json::to_value(body).expect("an EventBody always serialises");
            Some((json, content_hash(body)))
        }),
        _ => None,
    };
    let action = match (&repair, &adopted) {
        (Some(_), _) => "repaired",
        (_, Some(_)) => "adopted",
        _ => "reported",
    };
    let savepoint = tx.savepoint("drift").await?;
    let record = DriftRecord {
        binding,
        kind: kind.as_str(),
        action,
        remote_etag,
    };
    if !drift_store::record_drift(&savepoint, record).await? {
        return Ok(());
    }
    let acted = match (&repair, &adopted) {
        (Some(upsert), _) => {
            let forgotten = drift_store::forget_content_hash(&savepoint, binding).await?;
            if forgotten {
                store::enqueue(&savepoint, upsert).await?;
            }
            forgotten
        }
        (_, Some(content)) => {
            let content = content.as_ref().map(|(json, hash)| (json, hash.as_str()));
            drift_store::adopt_remote(&savepoint, binding, remote_etag, content).await?
        }
        _ => true,
    };
    if !acted {
        savepoint.rollback().await?;
        return Ok(());
    }
    savepoint.commit().await?;
    metrics::counter!("calendar_sync_drift_detected_total", "kind" => kind.as_str()).increment(1);
    match kind {
        DriftKind::Deleted => report.deleted += 1,
        DriftKind::Edited => report.edited += 1,
    }
    Ok(())
}

/// The UPSERT_EVENT re-asserting the binding's last synced content, if it has one.
fn repair_of(binding: &WatchedBinding) -> Option<Operation> {
    let content: &Value = binding.content.as_ref()?;
    let body: EventBody = serde_json::from_value(content.clone()).ok()?;
    let event_type = binding.event_type.as_deref()?;
    upsert_from_content(&binding.source, event_type, &body).map(Operation::UpsertEvent)
}
