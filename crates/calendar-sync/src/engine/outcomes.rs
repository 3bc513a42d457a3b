//! Telling the embedding service what happened: [`Outcome`]s, announced to
//! each [`Subscription`] of a drainer once they have committed.
//!
//! Modelled on River's event subscription: a subscriber names the kinds it
//! wants and reads them from a bounded channel. The engine never waits for a
//! subscriber: when a subscriber's channel is full, the outcome is dropped for
//! it and counted ([`Subscription::dropped`], metric
//! `calendar_sync_subscription_dropped_total`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use uuid::Uuid;

use crate::apply::Applied;
use crate::operation::{Operation, OperationKind};
use crate::store::ClaimedItem;

/// How many outcomes a [`Subscription`] holds unread before new ones are
/// dropped for it, unless [`OutboxDrainer::subscribe_with_capacity`](crate::OutboxDrainer::subscribe_with_capacity)
/// says otherwise.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 1024;

/// The kinds of [`Outcome`] a subscription may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OutcomeKind {
    /// [`Outcome::Completed`].
    Completed,
    /// [`Outcome::DeadLettered`].
    DeadLettered,
    /// [`Outcome::ConnectionInvalidated`].
    ConnectionInvalidated,
    /// [`Outcome::ConnectionPaused`].
    ConnectionPaused,
}

impl OutcomeKind {
    /// Every kind.
    pub const ALL: [OutcomeKind; 4] = [
        Self::Completed,
        Self::DeadLettered,
        Self::ConnectionInvalidated,
        Self::ConnectionPaused,
    ];

    fn bit(self) -> u8 {
        match self {
            Self::Completed => 1,
            Self::DeadLettered => 2,
            Self::ConnectionInvalidated => 4,
            Self::ConnectionPaused => 8,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::DeadLettered => "dead_lettered",
            Self::ConnectionInvalidated => "connection_invalidated",
            Self::ConnectionPaused => "connection_paused",
        }
    }
}

/// Something a drainer did, announced after it committed in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// An item is COMPLETED (its binding written in the same commit).
    #[non_exhaustive]
    Completed {
        /// The outbox row.
        outbox_id: Uuid,
        /// Its operation.
        operation: OperationKind,
        /// The workspace.
        workspace_id: String,
        /// The calendar's own id (`primary` resolved), as in the bindings.
        calendar_id: String,
        /// The source's type; `None` for a `REBUILD_ALL`.
        source_type: Option<String>,
        /// The source's id; `None` for a `REBUILD_ALL`.
        source_id: Option<String>,
        /// The Google event the source is bound to, when it has one.
        google_event_id: Option<String>,
        /// Google's `htmlLink` of the event, when this item's calls returned it
        /// (not for an unchanged upsert, which made no call; the binding keeps
        /// the last one: view `calendar_sync_events`).
        html_link: Option<String>,
        /// False when the desired state already held and no write call was made.
        changed: bool,
    },
    /// An item is DEAD_LETTER.
    #[non_exhaustive]
    DeadLettered {
        /// The outbox row.
        outbox_id: Uuid,
        /// Its `operation` column, as written (it may be what made it fail).
        operation: String,
        /// The workspace, when the payload names one.
        workspace_id: Option<String>,
        /// The calendar as the payload names it, when it does.
        calendar_id: Option<String>,
        /// The stable code of `last_error`, e.g. `invalid_payload`, `google_400_invalid`.
        code: String,
        /// The rest of `last_error`.
        message: String,
    },
    /// A workspace's Google connection became invalid (a revoked grant, a
    /// wrong client): the user must connect again. The workspace's waiting
    /// items were dead-lettered with it.
    #[non_exhaustive]
    ConnectionInvalidated {
        /// The workspace.
        workspace_id: String,
        /// Why, as `invalid_reason` reads (`[code] message`; never a secret).
        reason: String,
        /// The workspace's other items dead-lettered with it.
        dead_lettered: u64,
    },
    /// Google's usage limits made a workspace's calendar read-only: its items
    /// wait until `until` without using attempts. Announced once per pause.
    #[non_exhaustive]
    ConnectionPaused {
        /// The workspace.
        workspace_id: String,
        /// When its items go again.
        until: DateTime<Utc>,
    },
}

impl Outcome {
    /// Its kind.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Self::Completed { .. } => OutcomeKind::Completed,
            Self::DeadLettered { .. } => OutcomeKind::DeadLettered,
            Self::ConnectionInvalidated { .. } => OutcomeKind::ConnectionInvalidated,
            Self::ConnectionPaused { .. } => OutcomeKind::ConnectionPaused,
        }
    }
}

/// The outcomes of one drainer (and its clones) that a subscriber asked for,
/// from [`OutboxDrainer::subscribe`](crate::OutboxDrainer::subscribe).
/// Dropping it ends the subscription.
pub struct Subscription {
    receiver: mpsc::Receiver<Outcome>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("unread", &self.receiver.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Subscription {
    /// The next outcome; `None` once the drainer and all its clones are gone.
    pub async fn recv(&mut self) -> Option<Outcome> {
        self.receiver.recv().await
    }

    /// The next outcome if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Outcome> {
        self.receiver.try_recv().ok()
    }

    /// How many outcomes were dropped for this subscriber because it had
    /// `capacity` of them unread.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One subscriber as the drainer sees it.
struct Subscriber {
    kinds: u8,
    sender: mpsc::Sender<Outcome>,
    dropped: Arc<AtomicU64>,
}

/// Hands outcomes to subscribers without ever waiting for them.
#[derive(Default)]
pub(crate) struct OutcomeHub {
    subscribers: Mutex<Vec<Subscriber>>,
    /// The end of the last pause announced per workspace: a pause is announced
    /// once, not once per item it holds back.
    paused: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl OutcomeHub {
    pub(crate) fn subscribe(&self, kinds: &[OutcomeKind], capacity: usize) -> Subscription {
        let kinds = if kinds.is_empty() {
            &OutcomeKind::ALL[..]
        } else {
            kinds
        };
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        self.subscribers
            .lock()
            .expect("subscribers lock")
            .push(Subscriber {
                kinds: kinds.iter().fold(0, |bits, k| bits | k.bit()),
                sender,
                dropped: dropped.clone(),
            });
        Subscription { receiver, dropped }
    }

    /// Whether any subscriber wants outcomes of `kind` (so that none is built
    /// for nobody).
    pub(crate) fn wants(&self, kind: OutcomeKind) -> bool {
        self.subscribers
            .lock()
            .expect("subscribers lock")
            .iter()
            .any(|s| s.kinds & kind.bit() != 0 && !s.sender.is_closed())
    }

    /// Offers `outcome` to every subscriber of its kind: a full channel drops
    /// it for that subscriber (counted); a closed one is forgotten.
    pub(crate) fn publish(&self, outcome: &Outcome) {
        let kind = outcome.kind();
        let mut subscribers = self.subscribers.lock().expect("subscribers lock");
        subscribers.retain(|s| !s.sender.is_closed());
        for s in subscribers.iter().filter(|s| s.kinds & kind.bit() != 0) {
            if let Err(TrySendError::Full(_)) = s.sender.try_send(outcome.clone()) {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("calendar_sync_subscription_dropped_total", "kind" => kind.label())
                    .increment(1);
            }
        }
    }

    /// Announces a pause of `workspace_id` until `until`, unless one announced
    /// earlier still runs.
    pub(crate) fn publish_pause(&self, workspace_id: &str, until: DateTime<Utc>) {
        let now = Utc::now();
        {
            let mut paused = self.paused.lock().expect("paused lock");
            paused.retain(|_, end| *end > now);
            if paused.contains_key(workspace_id) {
                return;
            }
            paused.insert(workspace_id.to_owned(), until);
        }
        self.publish(&Outcome::ConnectionPaused {
            workspace_id: workspace_id.to_owned(),
            until,
        });
    }
}

/// The announcement of a completed item: the calendar as the engine resolved
/// it, the source from the payload, the event from the binding written with
/// it, else the claim's.
pub(crate) fn completed(item: &ClaimedItem, applied: &Applied) -> Option<Outcome> {
    let operation = Operation::decode(&item.operation, &item.payload).ok()?;
    let (source_type, source_id) = match &operation {
        Operation::UpsertEvent(u) => (Some(&u.source.source_type), Some(&u.source.source_id)),
        Operation::CancelEvent(s) => (Some(&s.source_type), Some(&s.source_id)),
        Operation::RebuildAll(_) => (None, None),
    };
    let calendar = applied
        .calendar
        .as_ref()
        .unwrap_or_else(|| operation.calendar());
    let google_event_id = applied
        .binding
        .as_ref()
        .map(|b| b.google_event_id.clone())
        .or_else(|| {
            let bound = item.binding.as_ref().filter(|_| source_id.is_some());
            bound.map(|b| b.google_event_id.clone())
        });
    Some(Outcome::Completed {
        outbox_id: item.id,
        operation: operation.kind(),
        workspace_id: calendar.workspace_id.clone(),
        calendar_id: calendar.calendar_id.clone(),
        source_type: source_type.cloned(),
        source_id: source_id.cloned(),
        google_event_id,
        html_link: applied.binding.as_ref().and_then(|b| b.html_link.clone()),
        changed: applied.changed,
    })
}

/// The announcement of a dead-lettered item, with its `last_error`.
pub(crate) fn dead_lettered(item: &ClaimedItem, last_error: &str) -> Outcome {
    let calendar = |field: &str| {
        item.payload
            .get(field)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let (code, message) = split_error(last_error);
    Outcome::DeadLettered {
        outbox_id: item.id,
        operation: item.operation.clone(),
        workspace_id: calendar("workspaceId"),
        calendar_id: calendar("calendarId"),
        code,
        message,
    }
}

/// When a pause of `pause` from now ends (the end of time for a pause too
/// long to add).
pub(crate) fn pause_end(pause: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(pause)
        .ok()
        .and_then(|pause| Utc::now().checked_add_signed(pause))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `[code] message` split in two; a text without a code is all message.
pub(crate) fn split_error(last_error: &str) -> (String, String) {
    last_error
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
        .map_or_else(
            || (String::new(), last_error.to_owned()),
            |(code, message)| (code.to_owned(), message.to_owned()),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_errors_split_into_code_and_message() {
        assert_eq!(
            split_error("[google_400_invalid] Bad Request"),
            ("google_400_invalid".to_owned(), "Bad Request".to_owned())
        );
        assert_eq!(
            split_error("no code"),
            (String::new(), "no code".to_owned())
        );
    }

    #[test]
    fn a_pause_too_long_to_add_ends_at_the_end_of_time() {
        assert_eq!(
            pause_end(std::time::Duration::MAX),
            DateTime::<Utc>::MAX_UTC
        );
        let hour = pause_end(std::time::Duration::from_secs(3600)) - Utc::now();
        assert!((3590..=3600).contains(&hour.num_seconds()), "{hour}");
    }

    #[tokio::test]
    async fn a_full_subscriber_loses_new_outcomes_and_counts_them() {
        let hub = OutcomeHub::default();
        let mut slow = hub.subscribe(&[OutcomeKind::ConnectionPaused], 2);
        let mut other = hub.subscribe(&[OutcomeKind::Completed], 2);
        for i in 0..5 {
            hub.publish(&Outcome::ConnectionPaused {
                workspace_id: format!("w{i}"),
                until: Utc::now(),
            });
        }
        assert_eq!(slow.dropped(), 3);
        let first = slow.recv().await.unwrap();
        assert!(
            matches!(first, Outcome::ConnectionPaused { workspace_id, .. } if workspace_id == "w0")
        );
        assert!(other.try_recv().is_none(), "a kind it did not ask for");
        assert_eq!(other.dropped(), 0);
        drop(other);
        assert!(!hub.wants(OutcomeKind::Completed));
    }
}
