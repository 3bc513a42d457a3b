//! Issue 14 §2: when an item's own database work fails, its `last_error`
//! keeps PostgreSQL's message (tokio-postgres' `to_string()` is only "db
//! error"; the message is in the error's source chain), and so does the
//! readiness check behind `/readyz` and `run`'s start-up warning.

use std::error::Error as _;

use calendar_sync::ops::NotReady;
use calendar_sync::{GoogleCalendar, GoogleConfig, OutboxDrainer, TokenCipher};
use calendar_sync_tests::{MemoryCalendar, TestDb, fast_config, rebuild, upsert};
use secrecy::SecretString;
use tokio_postgres::error::SqlState;

/// What a failed item's row must say: the `[database]` code, the server's own
/// words, and not the bare wrapper.
fn assert_keeps_postgresqls_message(last_error: Option<String>, message: &str) {
    let error = last_error.expect("a last_error");
    println!("{error}");
    assert!(error.starts_with("[database] "), "{error}");
    assert!(error.contains(message), "{error}");
}

#[tokio::test]
async fn a_failing_binding_write_keeps_postgresqls_message() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    let d = OutboxDrainer::new(t.db.clone(), cal.clone(), fast_config()).unwrap();
    t.insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v1"))
        .await;
    d.drain_once().await.unwrap();
    let (id, _) = cal.live_for_source("c1", "s1").remove(0);
    // Deleted by hand: the next upsert moves to a fresh id, which the item
    // reserves in its binding before the insert; the database refuses that.
    cal.delete_by_hand("c1", &id);
    t.client()
        .await
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'boom from the test'; END $$;
             CREATE TRIGGER refuse BEFORE UPDATE ON calendar_event_bindings
                 FOR EACH ROW WHEN (NEW.state = 'INSERTING') EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    let item = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v2"))
        .await;
    let report = d.drain_once().await.unwrap();
    assert_eq!(report.retried, 1, "{report:?}");
    let row = t.row(item).await;
    assert_eq!(row.status, "PENDING");
    assert_keeps_postgresqls_message(row.last_error, "boom from the test");
}

#[tokio::test]
async fn a_failing_desired_state_view_keeps_postgresqls_message() {
    let t = TestDb::new().await;
    let cal = MemoryCalendar::new();
    t.client()
        .await
        .batch_execute(
            "CREATE FUNCTION boom() RETURNS SETOF text LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'boom from the test'; END $$;
             CREATE VIEW calendar_sync_desired_events AS
                 SELECT 'w1'::text AS workspace_id, 'c1'::text AS calendar_id,
                        'task'::text AS source_type, b AS source_id,
                        'BLOCKER_DEADLINE'::text AS event_type, b AS title,
                        NULL::text AS description, now() AS start_at, now() AS end_at,
                        false AS is_all_day, NULL::text AS time_zone
                   FROM boom() AS b;",
        )
        .await
        .unwrap();
    let d = OutboxDrainer::new(t.db.clone(), cal.clone(), fast_config()).unwrap();
    let item = t.insert("REBUILD_ALL", rebuild("w1", "c1")).await;
    let report = d.drain_once().await.unwrap();
    assert_eq!(report.retried, 1, "{report:?}");
    assert_keeps_postgresqls_message(t.row(item).await.last_error, "boom from the test");
}

#[tokio::test]
async fn a_failing_connection_read_keeps_postgresqls_message() {
    let t = TestDb::new().await;
    let cipher = TokenCipher::from_keys([0x5a; 32], vec![]);
    let token = SecretString::from("1//0g-refresh-never-printed");
    calendar_sync::ops::put_connection(&t.db, &cipher, "w1", "w1@example.com", &token)
        .await
        .unwrap();
    // The version read before every call, and the connection read, now fail.
    t.client()
        .await
        .batch_execute("ALTER TABLE google_connections RENAME connection_version TO renamed")
        .await
        .unwrap();
    let mut config = GoogleConfig::new("client-1", SecretString::from("secret-never-printed"));
    config.calendar_api_url = "http://127.0.0.1:1/".into();
    config.oauth.token_url = "http://127.0.0.1:1/token".into();
    let calendar = GoogleCalendar::new(&t.db, cipher, config).unwrap();
    let d = OutboxDrainer::new(t.db.clone(), calendar, fast_config()).unwrap();
    let item = t
        .insert("UPSERT_EVENT", upsert("w1", "w1@example.com", "s1", "v1"))
        .await;
    let report = d.drain_once().await.unwrap();
    assert_eq!(report.retried, 1, "{report:?}");
    let error = t.row(item).await.last_error;
    assert!(!format!("{error:?}").contains("never-printed"), "{error:?}");
    assert_keeps_postgresqls_message(error, "column \"connection_version\" does not exist");
}

/// Readiness says why in a variant, with PostgreSQL's own words kept in the
/// source where there are any.
#[tokio::test]
async fn readiness_says_why_in_a_variant() {
    let t = TestDb::empty().await;
    let known = calendar_sync::testing::known_migrations();
    let e = calendar_sync::ops::readiness(&t.db).await.unwrap_err();
    println!("{e}");
    assert!(
        matches!(e, NotReady::MigrationsMissing { applied: 0, known: k } if k == known),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("0 of {known} migrations applied; run `calendar-sync-worker migrate`")
    );

    // A migrations table that cannot be read: the driver's error is the source.
    t.client()
        .await
        .batch_execute(
            "CREATE FUNCTION boom() RETURNS SETOF int LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'boom from the test'; END $$;
             CREATE VIEW calendar_sync_migrations AS SELECT * FROM boom() AS version;",
        )
        .await
        .unwrap();
    let e = calendar_sync::ops::readiness(&t.db).await.unwrap_err();
    println!("{e}");
    let NotReady::MigrationsUnreadable(pg) = &e else {
        panic!("{e:?}");
    };
    assert_eq!(pg.code(), Some(&SqlState::RAISE_EXCEPTION));
    let source = e.source().expect("a source");
    assert!(source.downcast_ref::<tokio_postgres::Error>().is_some());
    assert!(
        e.to_string()
            .starts_with("cannot read the applied migrations: "),
        "{e}"
    );
    assert!(e.to_string().contains("boom from the test"), "{e}");

    // No session at all: the pool's error, naming the server, is the source.
    let db = calendar_sync::Database::connect(
        "postgres://postgres@127.0.0.1:1/app?sslmode=disable&connect_timeout=5",
        1,
    )
    .unwrap();
    let e = calendar_sync::ops::readiness(&db).await.unwrap_err();
    println!("{e}");
    assert!(matches!(e, NotReady::Unreachable(_)), "{e:?}");
    let source = e.source().expect("a source");
    assert!(
        matches!(
            source.downcast_ref::<calendar_sync::Error>(),
            Some(calendar_sync::Error::Connect { .. })
        ),
        "{source:?}"
    );
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    assert!(e.to_string().contains("Connection refused"), "{e}");

    let t = TestDb::new().await;
    calendar_sync::ops::readiness(&t.db).await.expect("ready");
}
