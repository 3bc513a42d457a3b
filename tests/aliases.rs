//! One calendar, one identity (issue 13 §5): `"primary"` and the owner's
//! address name the same calendar, so bindings, ordering and REBUILD_ALL key
//! on the id Google resolves (calendars.get), whichever name an item uses.
//! Through the real google-calendar3 client, against the fake Google, with a
//! real PostgreSQL.

use std::time::Duration;

use calendar_sync::{GoogleCalendar, OutboxDrainer};
use calendar_sync_tests::{CLIENT_ID, GoogleEnv, cancel, fast_config, rebuild, upsert};
use serde_json::Value;

/// Alice's primary calendar: its real id is her address.
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

/// A fresh database and fake Google with Alice's and Bob's accounts;
/// workspace w1 is connected to Alice.
async fn env() -> GoogleEnv {
    let e = GoogleEnv::start(&[]).await;
    for (token, account) in [("rt-alice", ALICE), ("rt-bob", BOB)] {
        e.g.add_refresh_token(token, CLIENT_ID, account);
        e.g.add_calendar(account);
    }
    e.connect("w1", ALICE, "rt-alice").await;
    e
}

/// A drainer whose Google requests may take 5 s.
fn drainer(e: &GoogleEnv) -> OutboxDrainer<GoogleCalendar> {
    let mut google = e.google_config();
    google.request_timeout = Duration::from_secs(5);
    e.drainer_with(google, fast_config())
}

/// Live events of a calendar: (source id, title), sorted.
fn live(e: &GoogleEnv, calendar: &str) -> Vec<(String, String)> {
    let mut live: Vec<(String, String)> =
        e.g.live_events(calendar)
            .into_iter()
            .map(|e: Value| {
                (
                    e["extendedProperties"]["private"]["calendarSyncSourceId"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                    e["summary"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
    live.sort();
    live
}

async fn rebuild_result(e: &GoogleEnv, id: uuid::Uuid) -> Value {
    let row = e.t.row(id).await;
    assert_eq!(row.status, "COMPLETED", "{:?}", row.last_error);
    row.result.expect("a finished rebuild reports its counts")
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_rebuild_of_primary_keeps_the_events_synced_under_the_calendars_own_id() {
    let e = env().await;
    let d = drainer(&e);
    for (calendar, source) in [
        (ALICE, "s1"),
        (ALICE, "s2"),
        ("primary", "s3"),
        ("primary", "s4"),
    ] {
        e.t.insert("UPSERT_EVENT", upsert("w1", calendar, source, source))
            .await;
    }
    e.t.drain_until_idle(&d).await;
    assert_eq!(live(&e, ALICE).len(), 4);
    let id = e.t.insert("REBUILD_ALL", rebuild("w1", "primary")).await;
    e.t.drain_until_idle(&d).await;
    let result = rebuild_result(&e, id).await;
    assert_eq!(result["deleted"], 0, "{result}");
    assert_eq!(
        live(&e, ALICE),
        pairs(&[("s1", "s1"), ("s2", "s2"), ("s3", "s3"), ("s4", "s4")])
    );
    // Every binding under the calendar's real id, whichever name wrote it.
    assert!(
        e.t.bindings()
            .await
            .iter()
            .all(|(c, _, s)| c == ALICE && s == "LIVE"),
        "{:?}",
        e.t.bindings().await
    );
}

#[tokio::test]
async fn a_rebuild_of_the_calendars_own_id_keeps_the_events_synced_under_primary() {
    let e = env().await;
    let d = drainer(&e);
    for (calendar, source) in [("primary", "s1"), ("primary", "s2"), (ALICE, "s3")] {
        e.t.insert("UPSERT_EVENT", upsert("w1", calendar, source, source))
            .await;
    }
    e.t.drain_until_idle(&d).await;
    let id = e.t.insert("REBUILD_ALL", rebuild("w1", ALICE)).await;
    e.t.drain_until_idle(&d).await;
    let result = rebuild_result(&e, id).await;
    assert_eq!(result["deleted"], 0, "{result}");
    assert_eq!(
        live(&e, ALICE),
        pairs(&[("s1", "s1"), ("s2", "s2"), ("s3", "s3")])
    );
}

#[tokio::test]
async fn one_source_written_under_both_names_has_one_event_and_keeps_its_order() {
    let e = env().await;
    let d = drainer(&e);
    e.t.insert("UPSERT_EVENT", upsert("w1", "primary", "s1", "v1"))
        .await;
    e.t.drain_until_idle(&d).await;
    e.t.insert("UPSERT_EVENT", upsert("w1", ALICE, "s1", "v2"))
        .await;
    e.t.drain_until_idle(&d).await;
    assert_eq!(
        live(&e, ALICE),
        pairs(&[("s1", "v2")]),
        "one event, newest content"
    );
    assert_eq!(e.g.events(ALICE).len(), 1, "never a second event id");

    // Both names in one transaction, newest last: the newest wins.
    let mut c = e.t.client().await;
    let tx = c.transaction().await.unwrap();
    for (calendar, title) in [(ALICE, "v3"), ("primary", "v4"), (ALICE, "v5")] {
        tx.execute(
            "INSERT INTO sync_outbox (operation, payload) VALUES ('UPSERT_EVENT', $1)",
            &[&upsert("w1", calendar, "s1", title)],
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    e.t.drain_until_idle(&d).await;
    assert_eq!(live(&e, ALICE), pairs(&[("s1", "v5")]));

    e.t.insert("CANCEL_EVENT", cancel("w1", "primary", "s1"))
        .await;
    e.t.drain_until_idle(&d).await;
    assert!(live(&e, ALICE).is_empty(), "cancelled under the other name");
    assert_eq!(
        e.t.bindings().await,
        vec![(ALICE.to_owned(), "s1".to_owned(), "CANCELLED".to_owned())]
    );
}

#[tokio::test]
async fn bindings_written_under_primary_before_the_upgrade_are_carried_over() {
    let e = env().await;
    let d = drainer(&e);
    for source in ["s1", "s2"] {
        e.t.insert("UPSERT_EVENT", upsert("w1", "primary", source, source))
            .await;
    }
    e.t.drain_until_idle(&d).await;
    // What a release before calendar resolution left behind: bindings keyed
    // by the name as written, and no resolution recorded.
    let admin = e.t.client().await;
    admin
        .batch_execute(
            "UPDATE calendar_event_bindings SET calendar_id = 'primary';
             DELETE FROM calendar_aliases;",
        )
        .await
        .unwrap();
    // A fresh worker (nothing cached) rebuilds the calendar under its own id.
    let d = {
        drop(d);
        drainer(&e)
    };
    let id = e.t.insert("REBUILD_ALL", rebuild("w1", ALICE)).await;
    e.t.drain_until_idle(&d).await;
    let result = rebuild_result(&e, id).await;
    assert_eq!(result["deleted"], 0, "{result}");
    assert_eq!(live(&e, ALICE), pairs(&[("s1", "s1"), ("s2", "s2")]));
    assert!(
        e.t.bindings().await.iter().all(|(c, _, _)| c == ALICE),
        "{:?}",
        e.t.bindings().await
    );
    // And an update through the old name still finds its event.
    e.t.insert("UPSERT_EVENT", upsert("w1", "primary", "s1", "s1 again"))
        .await;
    e.t.drain_until_idle(&d).await;
    assert_eq!(live(&e, ALICE), pairs(&[("s1", "s1 again"), ("s2", "s2")]));
    assert_eq!(e.g.events(ALICE).len(), 2);
}

#[tokio::test]
async fn a_reconnect_to_another_account_resolves_primary_anew() {
    let e = env().await;
    let d = drainer(&e);
    e.t.insert("UPSERT_EVENT", upsert("w1", "primary", "s1", "alice's"))
        .await;
    e.t.drain_until_idle(&d).await;
    e.connect("w1", BOB, "rt-bob").await;
    e.t.insert("UPSERT_EVENT", upsert("w1", "primary", "s2", "bob's"))
        .await;
    e.t.drain_until_idle(&d).await;
    assert_eq!(live(&e, ALICE), pairs(&[("s1", "alice's")]));
    assert_eq!(live(&e, BOB), pairs(&[("s2", "bob's")]));
    let bindings = e.t.bindings().await;
    assert!(
        bindings.contains(&(BOB.to_owned(), "s2".to_owned(), "LIVE".to_owned())),
        "{bindings:?}"
    );
}

#[tokio::test]
async fn a_rebuild_reads_the_desired_state_under_every_name_of_its_calendar() {
    let e = env().await;
    let d = drainer(&e);
    for (calendar, source) in [("primary", "s1"), (ALICE, "s2")] {
        e.t.insert("UPSERT_EVENT", upsert("w1", calendar, source, source))
            .await;
    }
    e.t.drain_until_idle(&d).await;
    // The application lists s1 under "primary" and s2 under the address.
    e.t.client()
        .await
        .batch_execute(
            "CREATE TABLE app_tasks (calendar text, id text, title text);
             INSERT INTO app_tasks VALUES ('primary', 's1', 's1 desired'), ('alice@example.com', 's2', 's2 desired');
             CREATE VIEW calendar_sync_desired_events AS
             SELECT 'w1'::text AS workspace_id, calendar AS calendar_id, 'task'::text AS source_type,
                    id AS source_id, 'BLOCKER_DEADLINE'::text AS event_type, title,
                    'P1 blocking task'::text AS description,
                    '2025-01-15T14:00:00Z'::timestamptz AS start_at,
                    '2025-01-15T15:00:00Z'::timestamptz AS end_at,
                    false AS is_all_day, NULL::text AS time_zone
               FROM app_tasks;",
        )
        .await
        .unwrap();
    let id = e.t.insert("REBUILD_ALL", rebuild("w1", ALICE)).await;
    e.t.drain_until_idle(&d).await;
    let result = rebuild_result(&e, id).await;
    assert_eq!(result["source"], "sql_view", "{result}");
    assert_eq!(result["deleted"], 0, "{result}");
    assert_eq!(
        live(&e, ALICE),
        pairs(&[("s1", "s1 desired"), ("s2", "s2 desired")])
    );
}
