//! REBUILD_ALL: reconcile one (workspace, calendar) with Google instead of
//! cancelling and recreating everything.
//!
//! Desired state: the content last synced for each source, as recorded in the
//! bindings. Actual state: every event on the calendar carrying this
//! workspace's private extended property (all pages), plus the bindings. The
//! difference is applied: missing events are created (under a fresh id, since
//! a deleted id stays taken), drifted ones updated, our events that no binding
//! wants deleted. Events already right get no write call.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Pool;
use serde_json::json;

use crate::calendar::{Calendar, EventBody, PROP_WORKSPACE, RemoteEvent};
use crate::operation::CalendarKey;
use crate::store::{self, BindingState, BindingWrite, ClaimedItem, StoredBinding};
use crate::sync::{Applied, ApplyError, content_hash, event_id};

/// Counts reported in the row's `result` when a rebuild completes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    created: u64,
    updated: u64,
    deleted: u64,
    unchanged: u64,
}

pub(crate) async fn rebuild<C: Calendar>(
    calendar: &C,
    pool: &Pool,
    item: &ClaimedItem,
    target: &CalendarKey,
) -> Result<Applied, ApplyError> {
    let remote = list_ours(calendar, target).await?;
    let bindings = store::bindings_of_calendar(&**pool.get().await?, target).await?;
    let mut counts = Counts::default();
    let mut wanted_ids = HashSet::new();
    for stored in &bindings {
        if stored.binding.state != BindingState::Cancelled {
            wanted_ids.insert(stored.binding.google_event_id.clone());
        }
        let Some(desired) = desired_body(stored) else {
            continue;
        };
        let actual = remote.get(&stored.binding.google_event_id);
        let repaired = match actual {
            Some(event) if event.body.as_ref() == Some(&desired) => {
                counts.unchanged += 1;
                None
            }
            Some(_) => {
                let event = calendar
                    .update_event(target, &stored.binding.google_event_id, &desired)
                    .await?;
                counts.updated += 1;
                Some((
                    stored.binding.google_event_id.clone(),
                    stored.binding.generation,
                    event,
                ))
            }
            None => {
                let generation = stored.binding.generation + 1;
                let id = event_id(&stored.source, generation);
                put(
                    pool,
                    item,
                    stored,
                    &id,
                    generation,
                    BindingState::Inserting,
                    None,
                    None,
                )
                .await?;
                let event = match calendar.insert_event(target, &id, &desired).await {
                    Err(e) if e.kind == crate::calendar::CalendarErrorKind::Duplicate => {
                        calendar.update_event(target, &id, &desired).await?
                    }
                    other => other?,
                };
                wanted_ids.insert(id.clone());
                counts.created += 1;
                Some((id, generation, event))
            }
        };
        if let Some((id, generation, event)) = repaired {
            let hash = content_hash(&desired);
            put(
                pool,
                item,
                stored,
                &id,
                generation,
                BindingState::Live,
                event.etag,
                Some(hash),
            )
            .await?;
        }
    }
    for id in remote.keys().filter(|id| !wanted_ids.contains(*id)) {
        match calendar.delete_event(target, id).await {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind,
                    crate::calendar::CalendarErrorKind::NotFound
                        | crate::calendar::CalendarErrorKind::Gone
                ) => {}
            Err(e) => return Err(e.into()),
        }
        counts.deleted += 1;
    }
    let changed = counts.created + counts.updated + counts.deleted > 0;
    Ok(Applied {
        binding: None,
        result: Some(json!({
            "created": counts.created,
            "updated": counts.updated,
            "deleted": counts.deleted,
            "unchanged": counts.unchanged,
        })),
        changed,
    })
}

/// Every live event of ours on the calendar, by id.
async fn list_ours<C: Calendar>(
    calendar: &C,
    target: &CalendarKey,
) -> Result<HashMap<String, RemoteEvent>, ApplyError> {
    let mut events = HashMap::new();
    let mut page_token: Option<String> = None;
    loop {
        let page = calendar
            .list_events(
                target,
                (PROP_WORKSPACE, &target.workspace_id),
                page_token.as_deref(),
            )
            .await?;
        for event in page.events.into_iter().filter(|e| !e.cancelled) {
            events.insert(event.id.clone(), event);
        }
        match page.next_page_token {
            Some(token) => page_token = Some(token),
            None => return Ok(events),
        }
    }
}

/// The content a LIVE binding says its event should have.
fn desired_body(stored: &StoredBinding) -> Option<EventBody> {
    if stored.binding.state != BindingState::Live {
        return None;
    }
    serde_json::from_value(stored.content.clone()?).ok()
}

#[allow(clippy::too_many_arguments)]
async fn put(
    pool: &Pool,
    item: &ClaimedItem,
    stored: &StoredBinding,
    id: &str,
    generation: i32,
    state: BindingState,
    etag: Option<String>,
    content_hash: Option<String>,
) -> Result<(), ApplyError> {
    let write = BindingWrite {
        source: stored.source.clone(),
        google_event_id: id.to_owned(),
        generation,
        state,
        etag,
        content_hash,
        content: stored.content.clone(),
        event_type: stored.event_type.clone(),
    };
    if store::put_binding(&**pool.get().await?, item, &write).await? {
        Ok(())
    } else {
        Err(ApplyError::ClaimLost)
    }
}
