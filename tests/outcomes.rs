//! What the host application learns: the bindings' etag, htmlLink and
//! last write in `calendar_sync_events`, the drainer's subscription of
//! outcomes, and for SQL-only apps the NOTIFY on an invalid connection and the
//! view of connections needing a reconnect. Real PostgreSQL, fake Google
//! through the real adapter.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use calendar_sync::{DrainerConfig, OperationKind, Outcome, OutcomeKind};
use calendar_sync_tests::{CLIENT_ID, GoogleEnv, cancel, fast_config, rebuild, upsert};
use chrono::{DateTime, Utc};
use fake_google::{Fault, FaultKind};
use futures_util::StreamExt;
use secrecy::SecretString;
use tokio_postgres::AsyncMessage;

const CAL1: &str = "w1@example.com";

/// One source's row of `calendar_sync_events`.
#[derive(Debug, PartialEq)]
struct EventRow {
    google_event_id: String,
    state: String,
    etag: Option<String>,
    html_link: Option<String>,
    last_written_at: Option<DateTime<Utc>>,
}

async fn event_row(e: &GoogleEnv, source_id: &str) -> EventRow {
    let r =
        e.t.client()
            .await
            .query_one(
                "SELECT google_event_id, state, etag, html_link, last_written_at
               FROM calendar_sync_events
              WHERE workspace_id = 'w1' AND calendar_id = $1 AND source_type = 'task'
                AND source_id = $2",
                &[&CAL1, &source_id],
            )
            .await
            .expect("the source's row");
    EventRow {
        google_event_id: r.get(0),
        state: r.get(1),
        etag: r.get(2),
        html_link: r.get(3),
        last_written_at: r.get(4),
    }
}

/// Every outcome waiting in the subscription.
fn received(s: &mut calendar_sync::Subscription) -> Vec<Outcome> {
    std::iter::from_fn(|| s.try_recv()).collect()
}

#[tokio::test]
async fn bindings_keep_etag_html_link_and_last_write_and_a_no_op_upsert_leaves_them() {
    let e = GoogleEnv::start(&["w1"]).await;
    let d = e.drainer();
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v1"))
        .await;
    d.drain_once().await.unwrap();
    let inserted = event_row(&e, "s1").await;
    let google = e.g.event(CAL1, &inserted.google_event_id).unwrap();
    assert_eq!(inserted.state, "LIVE");
    assert_eq!(inserted.etag.as_deref(), google["etag"].as_str());
    assert_eq!(inserted.html_link.as_deref(), google["htmlLink"].as_str());
    // As Google builds it: eid is base64url (no padding) of "<event id> <calendar id>".
    let eid = inserted
        .html_link
        .as_deref()
        .unwrap()
        .strip_prefix("https://www.google.com/calendar/event?eid=")
        .unwrap();
    let eid = URL_SAFE_NO_PAD.decode(eid).unwrap();
    assert_eq!(
        String::from_utf8(eid).unwrap(),
        format!("{} {CAL1}", inserted.google_event_id)
    );
    assert!(inserted.last_written_at.is_some());

    // The same content again: no call, nothing in the binding changes.
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v1"))
        .await;
    let report = d.drain_once().await.unwrap();
    assert_eq!(report.unchanged, 1);
    assert_eq!(event_row(&e, "s1").await, inserted);

    // New content: an update, a new etag and a later write.
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v2"))
        .await;
    d.drain_once().await.unwrap();
    let updated = event_row(&e, "s1").await;
    let google = e.g.event(CAL1, &updated.google_event_id).unwrap();
    assert_eq!(updated.google_event_id, inserted.google_event_id);
    assert_eq!(updated.etag.as_deref(), google["etag"].as_str());
    assert_ne!(updated.etag, inserted.etag);
    assert_eq!(updated.html_link, inserted.html_link);
    assert!(updated.last_written_at > inserted.last_written_at);
}

#[tokio::test]
async fn subscribers_hear_completed_and_dead_lettered_items_after_they_commit() {
    let e = GoogleEnv::start(&["w1"]).await;
    let d = e.drainer();
    let mut all = d.subscribe(&[]);
    let mut dead_only = d.subscribe(&[OutcomeKind::DeadLettered]);
    let ok =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v1"))
            .await;
    let mut bad_payload = upsert("w1", CAL1, "s2", "v1");
    bad_payload["event"]["start"] = "not a time".into();
    let bad = e.t.insert("UPSERT_EVENT", bad_payload).await;
    d.drain_once().await.unwrap();

    let row = event_row(&e, "s1").await;
    let outcomes = received(&mut all);
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    let completed = outcomes
        .iter()
        .find(|o| o.kind() == OutcomeKind::Completed)
        .unwrap();
    let Outcome::Completed {
        outbox_id,
        operation,
        workspace_id,
        calendar_id,
        source_type,
        source_id,
        google_event_id,
        html_link,
        changed,
        ..
    } = completed
    else {
        unreachable!()
    };
    assert_eq!(
        (
            *outbox_id,
            *operation,
            workspace_id.as_str(),
            calendar_id.as_str()
        ),
        (ok, OperationKind::UpsertEvent, "w1", CAL1)
    );
    assert_eq!(
        (source_type.as_deref(), source_id.as_deref()),
        (Some("task"), Some("s1"))
    );
    assert_eq!(
        google_event_id.as_deref(),
        Some(row.google_event_id.as_str())
    );
    assert_eq!(*html_link, row.html_link);
    assert!(*changed);
    // Committed before it was announced.
    assert_eq!(e.t.row(ok).await.status, "COMPLETED");

    let dead = received(&mut dead_only);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let Outcome::DeadLettered {
        outbox_id,
        operation,
        workspace_id,
        code,
        message,
        ..
    } = &dead[0]
    else {
        panic!("{dead:?}")
    };
    assert_eq!((*outbox_id, operation.as_str()), (bad, "UPSERT_EVENT"));
    assert_eq!(workspace_id.as_deref(), Some("w1"));
    assert_eq!(code, "invalid_payload");
    assert!(message.contains("event.start"), "{message}");
    assert_eq!(
        e.t.row(bad).await.last_error.unwrap(),
        format!("[{code}] {message}")
    );
    assert_eq!((all.dropped(), dead_only.dropped()), (0, 0));
}

#[tokio::test]
async fn completed_outcomes_name_the_calendar_by_its_own_id_whatever_the_payload_says() {
    let e = GoogleEnv::start(&["w1"]).await;
    let d = e.drainer();
    let mut s = d.subscribe(&[OutcomeKind::Completed]);
    // A cancel of a source never synced and a rebuild: no binding is written
    // with either, so the calendar comes from the item itself.
    e.t.insert("CANCEL_EVENT", cancel("w1", "primary", "never"))
        .await;
    e.t.insert("REBUILD_ALL", rebuild("w1", "primary")).await;
    e.t.drain_until_idle(&d).await;
    let calendars: Vec<(OperationKind, String)> = received(&mut s)
        .into_iter()
        .map(|o| match o {
            Outcome::Completed {
                operation,
                calendar_id,
                ..
            } => (operation, calendar_id),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        calendars,
        [
            (OperationKind::CancelEvent, CAL1.to_owned()),
            (OperationKind::RebuildAll, CAL1.to_owned())
        ]
    );
}

#[tokio::test]
async fn subscribers_hear_a_connection_invalidated_once_with_its_dead_letters() {
    let e = GoogleEnv::start(&["w1"]).await;
    e.g.revoke_refresh_token("rt-w1");
    for i in 0..3 {
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, &format!("s{i}"), "v"))
            .await;
    }
    let d = e.drainer_with(
        e.google_config(),
        DrainerConfig {
            concurrency: 1,
            batch_size: 1,
            ..fast_config()
        },
    );
    let mut s = d.subscribe(&[
        OutcomeKind::ConnectionInvalidated,
        OutcomeKind::DeadLettered,
    ]);
    d.drain_once().await.unwrap();
    let outcomes = received(&mut s);
    let invalidated: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::ConnectionInvalidated {
                workspace_id,
                reason,
                dead_lettered,
                ..
            } => Some((workspace_id.as_str(), reason.as_str(), *dead_lettered)),
            _ => None,
        })
        .collect();
    assert_eq!(invalidated.len(), 1, "{outcomes:?}");
    let (workspace, reason, others) = invalidated[0];
    assert_eq!((workspace, others), ("w1", 2));
    assert!(reason.starts_with("[oauth_invalid_grant]"), "{reason}");
    assert!(!reason.contains("rt-w1"), "never the token: {reason}");
    let dead = outcomes
        .iter()
        .filter(|o| o.kind() == OutcomeKind::DeadLettered)
        .count();
    assert_eq!(dead, 1, "the item that met the refusal: {outcomes:?}");
}

#[tokio::test]
async fn subscribers_hear_a_usage_limit_pause_once() {
    let e = GoogleEnv::start(&["w1"]).await;
    e.g.inject(
        Fault::new(FaultKind::QuotaExceeded)
            .path("/events")
            .times(1),
    );
    for i in 0..2 {
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, &format!("s{i}"), "v"))
            .await;
    }
    let mut google = e.google_config();
    google.usage_limit_pause = Duration::from_secs(1800);
    let config = DrainerConfig {
        concurrency: 1,
        batch_size: 1,
        ..fast_config()
    };
    let d = e.drainer_with(google, config);
    let mut s = d.subscribe(&[OutcomeKind::ConnectionPaused]);
    let before = Utc::now();
    d.drain_once().await.unwrap();
    let outcomes = received(&mut s);
    assert_eq!(outcomes.len(), 1, "one pause, two items held: {outcomes:?}");
    let Outcome::ConnectionPaused {
        workspace_id,
        until,
        ..
    } = &outcomes[0]
    else {
        panic!("{outcomes:?}")
    };
    assert_eq!(workspace_id, "w1");
    let pause = (*until - before).num_seconds();
    assert!((1790..=1810).contains(&pause), "{pause}");
}

#[tokio::test]
async fn a_subscriber_that_never_reads_loses_outcomes_and_the_drain_completes() {
    const ITEMS: i64 = 2000;
    const CAPACITY: usize = 16;
    let e = GoogleEnv::start(&["w1"]).await;
    e.t.client()
        .await
        .execute(
            "INSERT INTO sync_outbox (operation, payload)
             SELECT 'UPSERT_EVENT', jsonb_set($1::jsonb, '{sourceId}', to_jsonb('s' || n))
               FROM generate_series(1, $2::int8) n",
            &[&upsert("w1", CAL1, "template", "v"), &ITEMS],
        )
        .await
        .unwrap();
    let mut google = e.google_config();
    google.per_connection_per_minute = 1_000_000;
    google.per_project_per_minute = 1_000_000;
    let d = e.drainer_with(google, fast_config());
    let never_read = d.subscribe_with_capacity(&[OutcomeKind::Completed], CAPACITY);
    let report = d.drain_once().await.unwrap();
    assert_eq!(report.completed, u64::try_from(ITEMS).unwrap());
    assert_eq!(e.t.count("COMPLETED").await, ITEMS);
    assert_eq!(
        never_read.dropped(),
        u64::try_from(ITEMS).unwrap() - CAPACITY as u64
    );
}

/// A fresh session listening on `channel` (keep the client), and the
/// payloads of its notifications as they arrive.
async fn listen(
    e: &GoogleEnv,
    channel: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (client, mut connection) =
        e.t.config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .expect("listen");
    (client, rx)
}

#[tokio::test]
async fn sql_apps_hear_an_invalid_connection_and_see_it_until_it_is_reconnected() {
    let e = GoogleEnv::start(&["w1", "w2"]).await;
    let (_listener, mut notifications) = listen(&e, "calendar_sync_connection_invalid").await;
    e.g.revoke_refresh_token("rt-w1");
    let item =
        e.t.insert("UPSERT_EVENT", upsert("w1", CAL1, "s1", "v"))
            .await;
    e.t.insert("UPSERT_EVENT", upsert("w2", "w2@example.com", "s1", "v"))
        .await;
    e.drainer().drain_once().await.unwrap();
    let payload = tokio::time::timeout(Duration::from_secs(30), notifications.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(payload, "w1", "the workspace id and nothing else");
    assert_eq!(e.t.row(item).await.status, "DEAD_LETTER");

    let client = e.t.client().await;
    let needing = || async {
        client
            .query(
                "SELECT * FROM calendar_sync_connections_needing_reconnect",
                &[],
            )
            .await
            .unwrap()
    };
    let rows = needing().await;
    assert_eq!(rows.len(), 1);
    let columns: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(
        columns,
        [
            "workspace_id",
            "google_email",
            "invalid_reason",
            "since",
            "items_waiting"
        ]
    );
    assert_eq!(rows[0].get::<_, String>("workspace_id"), "w1");
    let reason: String = rows[0].get("invalid_reason");
    assert!(reason.starts_with("[oauth_invalid_grant]"), "{reason}");
    assert!(rows[0].get::<_, DateTime<Utc>>("since") <= Utc::now());
    assert_eq!(rows[0].get::<_, i64>("items_waiting"), 1);

    e.g.add_refresh_token("rt-w1-new", CLIENT_ID, CAL1);
    calendar_sync::ops::put_connection(
        &e.t.db,
        &e.cipher,
        "w1",
        CAL1,
        &SecretString::from("rt-w1-new"),
    )
    .await
    .unwrap();
    assert!(needing().await.is_empty(), "reconnected");
    assert!(notifications.try_recv().is_err(), "one notification only");
}
