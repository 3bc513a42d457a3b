//! REBUILD_ALL: reconcile one (workspace, calendar) with Google instead of
//! cancelling and recreating everything (which would spam attendees, leave an
//! empty calendar for a while, and cost two calls per event).
//!
//! Desired state comes from the first configured source (see
//! [`crate::apply::desired`]). Actual state is every event on the calendar carrying
//! this workspace's private extended property (all pages, events whose binding
//! was lost included) together with the bindings. The difference is applied:
//! missing events are created, drifted ones updated, ours that nothing wants
//! deleted, and the bindings fixed. Events already right get no write call.
//!
//! The work is bounded: each attempt lists our events, walks one chunk of
//! sources in (source_type, source_id) order, stores a checkpoint in the row's
//! `result`, and puts the row back in line; a killed worker's successor resumes
//! from the last checkpoint. Orphans are deleted after the last chunk.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures_util::{StreamExt as _, stream};
use serde::{Deserialize, Serialize};

use crate::apply::desired::{Desired, EventSource, Wanted};
use crate::apply::{
    Applied, ApplyError, Start, connection_changed, content_hash, delete_event, event_id, fresh,
    live_binding, write_event,
};
use crate::calendar::{
    Calendar, EventBody, PROP_SOURCE_ID, PROP_SOURCE_TYPE, PROP_WORKSPACE, RemoteEvent,
};
use crate::config::DrainerConfig;
use crate::db::Database;
use crate::operation::SourceCursor;
use crate::operation::{CalendarKey, SourceKey};
use crate::store::{self, BindingState, BindingWrite, ClaimedItem, StoredBinding};

/// Progress of a rebuild, stored in the row's `result` between chunks and as
/// the final report.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Progress {
    /// The last source handled; absent once finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<SourceCursor>,
    created: u64,
    updated: u64,
    deleted: u64,
    unchanged: u64,
    /// Desired sources whose content is unusable (left as they are).
    #[serde(default)]
    invalid: u64,
    /// Which desired-state source was used.
    #[serde(default)]
    source: String,
}

/// Most writes of one rebuild in flight at once (a batch of the adapter holds
/// at most this many of them).
const WRITES_AT_ONCE: usize = 50;

/// A write a rebuild decided on: the source's event made to hold `body`.
struct Write {
    source: SourceKey,
    event_type: String,
    body: EventBody,
    start: Start,
}

/// What one attempt works with.
struct Pass<'a, C> {
    calendar: &'a C,
    db: &'a Database,
    item: &'a ClaimedItem,
    target: &'a CalendarKey,
    remote: HashMap<String, RemoteEvent>,
    by_source: HashMap<SourceCursor, Vec<String>>,
    progress: Progress,
}

/// Rebuilds `target`, keyed by the calendar's own id; `named` is the name
/// the REBUILD_ALL gave it (`primary`, say), under which the application may
/// list its desired events.
pub(crate) async fn rebuild<C: Calendar>(
    calendar: &C,
    db: &Database,
    source: Option<&Arc<dyn EventSource>>,
    config: &DrainerConfig,
    item: &ClaimedItem,
    target: &CalendarKey,
    named: &str,
) -> Result<Applied, ApplyError> {
    let chunk = config.rebuild_chunk;
    let desired = Desired::choose(source, db).await?;
    let mut progress: Progress = item
        .result
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    progress.source = desired.name().to_owned();
    if progress.cursor.is_none() {
        carry_over_other_names(calendar, db, target).await?;
    }
    // The bindings are keyed by the calendar's own id alone.
    let names = match desired {
        Desired::Bindings => vec![target.clone()],
        _ => names(db, target, named).await?,
    };
    let remote = list_ours(calendar, target).await?;
    let mut by_source: HashMap<SourceCursor, Vec<String>> = HashMap::new();
    for (id, event) in &remote {
        if let Some(key) = event.body.as_ref().and_then(|b| {
            Some(SourceCursor {
                source_type: b.private_properties.get(PROP_SOURCE_TYPE)?.clone(),
                source_id: b.private_properties.get(PROP_SOURCE_ID)?.clone(),
            })
        }) {
            by_source.entry(key).or_default().push(id.clone());
        }
    }
    let mut pass = Pass {
        calendar,
        db,
        item,
        target,
        remote,
        by_source,
        progress,
    };

    let after = pass.progress.cursor.clone();
    let page = desired
        .page_of_names(db, &names, after.as_ref(), chunk, &config.event_defaults)
        .await?;
    let upto = (page.len() >= chunk)
        .then(|| page.last().map(|w| w.cursor.clone()))
        .flatten();
    let bindings =
        store::bindings_in_range(&**db.client().await?, target, after.as_ref(), upto.as_ref())
            .await?;
    let mut keys: BTreeMap<SourceCursor, (Option<&Wanted>, Option<&StoredBinding>)> =
        BTreeMap::new();
    for wanted in &page {
        keys.entry(wanted.cursor.clone()).or_default().0 = Some(wanted);
    }
    for bound in &bindings {
        let key = SourceCursor {
            source_type: bound.source.source_type.clone(),
            source_id: bound.source.source_id.clone(),
        };
        keys.entry(key).or_default().1 = Some(bound);
    }
    let bindings_are_desired = matches!(desired, Desired::Bindings);
    let mut writes = Vec::new();
    for (key, (wanted, bound)) in keys {
        if let Some(write) = pass
            .reconcile(&key, wanted, bound, bindings_are_desired)
            .await?
        {
            writes.push(write);
        }
    }
    // The chunk's writes go out together, so that the adapter can send them
    // in batches (and, without batching, so that a chunk takes a few round
    // trips rather than one per event); each still pays its quota unit.
    let written: Vec<Result<(), ApplyError>> = stream::iter(writes)
        .map(|write| pass.write(write))
        .buffer_unordered(WRITES_AT_ONCE)
        .collect()
        .await;
    written.into_iter().collect::<Result<(), _>>()?;

    if let Some(upto) = upto {
        pass.progress.cursor = Some(upto);
        return Ok(Applied {
            binding: None,
            result: Some(serde_json::to_value(&pass.progress).expect("progress serialises")),
            changed: true,
            continue_later: true,
            calendar: None,
        });
    }
    pass.delete_orphans().await?;
    pass.progress.cursor = None;
    let p = &pass.progress;
    Ok(Applied {
        binding: None,
        changed: p.created + p.updated + p.deleted > 0,
        result: Some(serde_json::to_value(p).expect("progress serialises")),
        continue_later: false,
        calendar: None,
    })
}

impl<C: Calendar> Pass<'_, C> {
    fn source(&self, key: &SourceCursor) -> SourceKey {
        SourceKey {
            calendar: self.target.clone(),
            source_type: key.source_type.clone(),
            source_id: key.source_id.clone(),
        }
    }

    /// Brings one source to its desired state, or says which write will:
    /// deletes and binding fixes are done here, event writes are returned.
    async fn reconcile(
        &mut self,
        key: &SourceCursor,
        wanted: Option<&Wanted>,
        bound: Option<&StoredBinding>,
        bindings_are_desired: bool,
    ) -> Result<Option<Write>, ApplyError> {
        let source = self.source(key);
        let Some(wanted) = wanted else {
            // Ours but no longer desired. With bindings as the desired state, an
            // INSERTING binding (content unknown) is left alone.
            match bound {
                Some(b)
                    if b.binding.state == BindingState::Live
                        || (b.binding.state == BindingState::Inserting
                            && !bindings_are_desired) =>
                {
                    self.retire(&source, b).await?;
                }
                _ => {}
            }
            return Ok(None);
        };
        let body = match &wanted.body {
            Ok(body) => body,
            Err(reason) => {
                tracing::warn!(source_type = %key.source_type, source_id = %key.source_id, reason, "desired event unusable; left as it is");
                self.progress.invalid += 1;
                return Ok(None);
            }
        };
        let generation = bound.map_or(0, |b| b.binding.generation);
        let actual = self.actual(&source, key, bound).cloned();
        let start = match &actual {
            Some(event) if event.body.as_ref() == Some(body) => {
                self.progress.unchanged += 1;
                let hash = content_hash(body);
                let in_step = bound.is_some_and(|b| {
                    b.binding.google_event_id == event.id
                        && b.binding.state == BindingState::Live
                        && b.binding.content_hash.as_deref() == Some(hash.as_str())
                        && b.binding.etag == event.etag
                });
                if !in_step {
                    let written = crate::apply::Written {
                        id: event.id.clone(),
                        generation,
                        etag: event.etag.clone(),
                        html_link: event.html_link.clone(),
                        written: false,
                    };
                    self.put(&live_binding(&source, &wanted.event_type, body, written))
                        .await?;
                }
                return Ok(None);
            }
            Some(event) => {
                self.progress.updated += 1;
                Start::Update {
                    id: event.id.clone(),
                    generation,
                    etag: event.etag.clone(),
                }
            }
            None => {
                self.progress.created += 1;
                match bound {
                    Some(b) if b.binding.state == BindingState::Inserting => Start::Insert {
                        id: b.binding.google_event_id.clone(),
                        generation,
                    },
                    Some(_) => fresh(&source, generation + 1),
                    None => fresh(&source, 0),
                }
            }
        };
        Ok(Some(Write {
            source,
            event_type: wanted.event_type.clone(),
            body: body.clone(),
            start,
        }))
    }

    /// Writes one source's event and binds it.
    async fn write(&self, write: Write) -> Result<(), ApplyError> {
        let written = write_event(
            self.calendar,
            self.db,
            self.item,
            &write.source,
            &write.event_type,
            &write.body,
            write.start,
        )
        .await?;
        self.put(&live_binding(
            &write.source,
            &write.event_type,
            &write.body,
            written,
        ))
        .await
    }

    /// The source's live event: the bound one, else one carrying its
    /// properties (a lost binding), preferring the id we would have chosen.
    fn actual(
        &self,
        source: &SourceKey,
        key: &SourceCursor,
        bound: Option<&StoredBinding>,
    ) -> Option<&RemoteEvent> {
        if let Some(event) = bound.and_then(|b| self.remote.get(&b.binding.google_event_id)) {
            return Some(event);
        }
        let candidates = self.by_source.get(key)?;
        let preferred = event_id(source, bound.map_or(0, |b| b.binding.generation));
        let id = candidates
            .iter()
            .find(|id| **id == preferred)
            .or_else(|| candidates.iter().min())?;
        self.remote.get(id)
    }

    /// Deletes a source's event that is no longer desired.
    async fn retire(
        &mut self,
        source: &SourceKey,
        bound: &StoredBinding,
    ) -> Result<(), ApplyError> {
        let id = &bound.binding.google_event_id;
        let present = self.remote.contains_key(id);
        if present {
            self.delete(id).await?;
        }
        self.put(&BindingWrite {
            source: source.clone(),
            google_event_id: id.clone(),
            generation: bound.binding.generation,
            state: BindingState::Cancelled,
            etag: None,
            content_hash: None,
            content: None,
            event_type: None,
            html_link: None,
            written: present,
        })
        .await
    }

    /// Deletes our events that no binding wants (after the last chunk, every
    /// desired source is bound to exactly one event).
    async fn delete_orphans(&mut self) -> Result<(), ApplyError> {
        let keep = store::bound_event_ids(&**self.db.client().await?, self.target).await?;
        let orphans: BTreeSet<String> = self
            .remote
            .keys()
            .filter(|id| !keep.contains(*id))
            .cloned()
            .collect();
        for id in orphans {
            self.delete(&id).await?;
        }
        Ok(())
    }

    async fn delete(&mut self, id: &str) -> Result<(), ApplyError> {
        let etag = self.remote.get(id).and_then(|e| e.etag.clone());
        delete_event(self.calendar, self.target, id, etag).await?;
        self.remote.remove(id);
        self.progress.deleted += 1;
        Ok(())
    }

    async fn put(&self, binding: &BindingWrite) -> Result<(), ApplyError> {
        if store::put_binding(&**self.db.client().await?, self.item, binding).await? {
            Ok(())
        } else {
            Err(ApplyError::ClaimLost)
        }
    }
}

/// Bindings written under another name of this calendar (`primary` and the
/// owner's address), by this release or one before calendars were resolved,
/// move to its own id before anything can count as an orphan: a rebuild
/// never deletes an event its source is bound to under another name. Names
/// Google does not know, or refuses for good, are other calendars' business.
async fn carry_over_other_names<C: Calendar>(
    calendar: &C,
    db: &Database,
    target: &CalendarKey,
) -> Result<(), ApplyError> {
    let others = store::binding_calendar_names(
        &**db.client().await?,
        &target.workspace_id,
        &target.calendar_id,
    )
    .await?;
    for name in others {
        let other = CalendarKey {
            workspace_id: target.workspace_id.clone(),
            calendar_id: name,
        };
        let resolved = match calendar.resolve_calendar(&other).await {
            Ok(Some(resolved)) if resolved.id == target.calendar_id => resolved,
            Ok(_) => continue,
            Err(e) if e.class() == crate::calendar::ErrorClass::Permanent => continue,
            Err(e) => return Err(e.into()),
        };
        let client = db.client().await?;
        let version = resolved.connection_version;
        match store::record_alias(&**client, &other, &resolved.id, version).await? {
            Some(doubled) if doubled > 0 => {
                tracing::warn!(calendar.name = %other.calendar_id, calendar.id = %resolved.id, sources = doubled, "sources had an event under each name of one calendar; this rebuild deletes the older");
            }
            Some(_) => {}
            None => return Err(connection_changed().into()),
        }
    }
    Ok(())
}

/// Every name of the calendar its desired events may be listed under: its
/// own id, the name the REBUILD_ALL used, and the names known to resolve to it.
async fn names(
    db: &Database,
    target: &CalendarKey,
    named: &str,
) -> Result<Vec<CalendarKey>, ApplyError> {
    let mut names = vec![target.clone()];
    let aliases = store::calendar_aliases(&**db.client().await?, target).await?;
    for name in std::iter::once(named.to_owned()).chain(aliases) {
        if names.iter().all(|n| n.calendar_id != name) {
            names.push(CalendarKey {
                workspace_id: target.workspace_id.clone(),
                calendar_id: name,
            });
        }
    }
    Ok(names)
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
