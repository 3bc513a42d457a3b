//! Issue 13 §3: a reconnect (`put_connection` with another Google account)
//! takes effect in every running worker process before its next call: no item
//! written after it goes to the previous account with a cached access token.

use std::time::Duration;

use calendar_sync_tests::{GoogleWorld, TestDb, WORKER_CLIENT_ID, upsert};
use secrecy::SecretString;

mod common;
use common::worker;
const NEW_ACCOUNT: &str = "someone-else@example.com";
const NEW_REFRESH_TOKEN: &str = "1//0g-refresh-new-account-secret";

async fn enqueue(t: &TestDb, range: std::ops::Range<usize>) {
    for i in range {
        let payload = upsert("ws0", "primary", &format!("task-{i}"), &format!("task {i}"));
        t.insert("UPSERT_EVENT", payload).await;
    }
}

/// Our events on a calendar, by source id.
fn sources_on(world: &GoogleWorld, calendar: &str) -> Vec<String> {
    let mut ids: Vec<String> = world
        .google
        .live_events(calendar)
        .iter()
        .filter_map(|e| e["extendedProperties"]["private"]["calendarSyncSourceId"].as_str())
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_reconnect_to_another_account_takes_effect_in_every_worker_at_once() {
    let (t, world) = GoogleWorld::with_database(1).await;
    let old_account = GoogleWorld::calendar_of("ws0");
    world
        .google
        .add_refresh_token(NEW_REFRESH_TOKEN, WORKER_CLIENT_ID, NEW_ACCOUNT);
    world.google.add_calendar(NEW_ACCOUNT);
    // Slow enough that both workers take part and cache a token.
    world.google.set_latency(Duration::from_millis(40));
    let env = world.worker_env(&t.url());
    let mut workers = [
        worker("w-a", &env),
        worker("w-b", &{
            let mut env = env.clone();
            calendar_sync_tests::set_env(
                &mut env,
                "CALENDAR_SYNC_HTTP_ADDR",
                &format!("127.0.0.1:{}", calendar_sync_tests::free_port()),
            );
            env
        }),
    ];
    enqueue(&t, 0..40).await;
    t.wait_for(Duration::from_secs(60), "the first items", || async {
        t.count("COMPLETED").await == 40
    })
    .await;
    let refreshes = world
        .google
        .token_refresh_count(&GoogleWorld::refresh_token_of("ws0"));
    assert_eq!(refreshes, 2, "each worker cached an access token");
    assert_eq!(sources_on(&world, &old_account).len(), 40);

    let cipher = GoogleWorld::cipher();
    calendar_sync::ops::put_connection(
        &t.db,
        &cipher,
        "ws0",
        NEW_ACCOUNT,
        &SecretString::from(NEW_REFRESH_TOKEN),
    )
    .await
    .unwrap();
    enqueue(&t, 100..110).await;
    t.wait_for(
        Duration::from_secs(60),
        "the items after the reconnect",
        || async { t.count("COMPLETED").await == 50 },
    )
    .await;
    let mut expected: Vec<String> = (100..110).map(|i| format!("task-{i}")).collect();
    expected.sort();
    assert_eq!(
        sources_on(&world, NEW_ACCOUNT),
        expected,
        "every item after the reconnect went to the new account"
    );
    assert_eq!(
        sources_on(&world, &old_account).len(),
        40,
        "none to the old one"
    );
    for w in &mut workers {
        let (_, status) = w.terminate(Duration::from_secs(10)).await;
        assert!(status.success(), "{}", w.log_tail(20));
    }
}
