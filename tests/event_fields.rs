//! The optional event fields (location, link back, busy/free, visibility,
//! colour, reminders) and the per-eventType defaults, through the real
//! google-calendar3 client against the fake Google and a real PostgreSQL.

use calendar_sync::{DrainerConfig, EventDefaults, GoogleCalendar, OutboxDrainer};
use calendar_sync_tests::{GoogleEnv, fast_config, rebuild, upsert};
use fake_google::ApiMethod;
use serde_json::{Value, json};

const CAL: &str = "w1@example.com";

async fn env() -> GoogleEnv {
    GoogleEnv::start(&["w1"]).await
}

/// An upsert of `source_id` whose `event` carries `fields` too.
fn upsert_with(source_id: &str, fields: Value) -> Value {
    let mut payload = upsert("w1", CAL, source_id, "Ship it");
    for (k, v) in fields.as_object().unwrap() {
        payload["event"][k] = v.clone();
    }
    payload
}

/// The optional fields of an event as the fake stores it.
fn stored_fields(event: &Value) -> Value {
    json!({
        "location": event["location"],
        "source": event["source"],
        "transparency": event["transparency"],
        "visibility": event["visibility"],
        "colorId": event["colorId"],
        "reminders": event["reminders"],
    })
}

fn with_defaults(defaults: Value) -> DrainerConfig {
    DrainerConfig {
        event_defaults: EventDefaults::from_json(&defaults).expect("valid defaults"),
        ..fast_config()
    }
}

fn drainer(e: &GoogleEnv, config: DrainerConfig) -> OutboxDrainer<GoogleCalendar> {
    e.drainer_with(e.google_config(), config)
}

#[tokio::test]
async fn every_field_reaches_google() {
    let e = env().await;
    let d = e.drainer();
    let fields = json!({
        "location": "Room 4, Building B",
        "url": "https://app.example/tasks/1",
        "transparency": "transparent",
        "visibility": "private",
        "colorId": "11",
        "reminders": {"useDefault": false, "overrides": [
            {"method": "email", "minutes": 1440}, {"method": "popup", "minutes": 60}]},
    });
    e.t.insert("UPSERT_EVENT", upsert_with("s1", fields)).await;
    // The colour as a number, and the link's own title.
    let fields = json!({"colorId": 3, "url": "http://app.example/tasks/2", "urlTitle": "Task 2"});
    e.t.insert("UPSERT_EVENT", upsert_with("s2", fields)).await;
    d.drain_once().await.unwrap();
    assert_eq!(e.t.count("COMPLETED").await, 2);

    let stored = stored_fields(&e.live(CAL, "s1")[0]);
    let expected = json!({
        "location": "Room 4, Building B",
        // Without urlTitle, the link is titled as the event.
        "source": {"url": "https://app.example/tasks/1", "title": "Ship it"},
        "transparency": "transparent",
        "visibility": "private",
        "colorId": "11",
        // Sorted by minutes, so that the order a producer writes cannot look like a change.
        "reminders": {"useDefault": false, "overrides": [
            {"method": "popup", "minutes": 60}, {"method": "email", "minutes": 1440}]},
    });
    assert_eq!(stored, expected);
    let other = &e.live(CAL, "s2")[0];
    assert_eq!(other["colorId"], "3");
    assert_eq!(
        other["source"],
        json!({"url": "http://app.example/tasks/2", "title": "Task 2"})
    );
    assert_eq!(other["reminders"], json!({"useDefault": true}));
    assert!(other.get("transparency").is_none(), "{other}");
}

#[tokio::test]
async fn defaults_of_the_event_type_apply_and_the_payload_wins_field_by_field() {
    let e = env().await;
    let config = with_defaults(json!({
        "BLOCKER_DEADLINE": {
            "transparency": "transparent",
            "colorId": "11",
            "reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 60}]},
        },
    }));
    let d = drainer(&e, config);
    e.t.insert("UPSERT_EVENT", upsert_with("plain", json!({})))
        .await;
    let own = json!({"colorId": "3", "transparency": "opaque", "location": "Room 4"});
    e.t.insert("UPSERT_EVENT", upsert_with("own", own)).await;
    let mut meeting = upsert_with("meeting", json!({}));
    meeting["eventType"] = json!("MEETING");
    e.t.insert("UPSERT_EVENT", meeting).await;
    d.drain_once().await.unwrap();
    assert_eq!(e.t.count("COMPLETED").await, 3);

    let popup = json!({"useDefault": false, "overrides": [{"method": "popup", "minutes": 60}]});
    let plain = &e.live(CAL, "plain")[0];
    assert_eq!(
        (
            &plain["transparency"],
            &plain["colorId"],
            &plain["reminders"]
        ),
        (&json!("transparent"), &json!("11"), &popup)
    );
    let own = &e.live(CAL, "own")[0];
    assert_eq!(own["colorId"], "3", "the payload's colour wins");
    // "opaque" is Google's default: it wins over the default by not being sent.
    assert!(own.get("transparency").is_none(), "{own}");
    assert_eq!(
        own["reminders"], popup,
        "what the payload leaves out comes from the defaults"
    );
    assert_eq!(own["location"], "Room 4");
    let meeting = &e.live(CAL, "meeting")[0];
    assert!(meeting.get("colorId").is_none(), "{meeting}");
    assert_eq!(meeting["reminders"], json!({"useDefault": true}));
}

/// Each bad value: (the `event` fields, the field named, the message's start).
const INVALID: &[(&str, &str, &str)] = &[
    (
        r#"{"transparency": "busy"}"#,
        "payload.event.transparency",
        r#"expected "opaque" or "transparent", got "busy""#,
    ),
    (
        r#"{"transparency": true}"#,
        "payload.event.transparency",
        "expected",
    ),
    (
        r#"{"visibility": "secret"}"#,
        "payload.event.visibility",
        r#"expected "default", "public", "private" or "confidential""#,
    ),
    (
        r#"{"colorId": "12"}"#,
        "payload.event.colorId",
        "expected a colour of Google's event palette",
    ),
    (
        r#"{"colorId": 0}"#,
        "payload.event.colorId",
        "expected a colour of Google's event palette",
    ),
    (
        r#"{"colorId": "red"}"#,
        "payload.event.colorId",
        "expected a colour",
    ),
    (
        r#"{"url": "app.example/tasks/1"}"#,
        "payload.event.url",
        "expected an absolute http or https URL",
    ),
    (
        r#"{"url": "ftp://app.example/tasks/1"}"#,
        "payload.event.url",
        "expected an absolute http or https URL",
    ),
    (
        r#"{"url": "javascript:alert(1)"}"#,
        "payload.event.url",
        "expected an absolute http or https URL",
    ),
    (
        r#"{"urlTitle": 5}"#,
        "payload.event.urlTitle",
        "must be a string",
    ),
    (
        r#"{"location": 5}"#,
        "payload.event.location",
        "must be a string",
    ),
    (
        r#"{"reminders": "none"}"#,
        "payload.event.reminders",
        "must be an object",
    ),
    (
        r#"{"reminders": {}}"#,
        "payload.event.reminders.useDefault",
        "is missing",
    ),
    (
        r#"{"reminders": {"useDefault": true, "overrides": [{"method": "popup", "minutes": 5}]}}"#,
        "payload.event.reminders.overrides",
        "must be empty when useDefault is true",
    ),
    (
        r#"{"reminders": {"useDefault": false, "overrides": [{"method": "sms", "minutes": 5}]}}"#,
        "payload.event.reminders.overrides[0].method",
        r#"expected "popup" or "email", got "sms""#,
    ),
    (
        r#"{"reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 40321}]}}"#,
        "payload.event.reminders.overrides[0].minutes",
        "40321 is outside 0..=40320",
    ),
    (
        r#"{"reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": -1}]}}"#,
        "payload.event.reminders.overrides[0].minutes",
        "-1 is not a whole number in 0..=40320",
    ),
    (
        r#"{"reminders": {"useDefault": false, "overrides": [{"method": "popup"}]}}"#,
        "payload.event.reminders.overrides[0].minutes",
        "is missing",
    ),
    (
        r#"{"reminders": {"useDefault": false, "overrides": [1,2,3,4,5,6]}}"#,
        "payload.event.reminders.overrides[0]",
        "must be an object",
    ),
];

#[tokio::test]
async fn each_invalid_field_dead_letters_at_once_naming_the_field() {
    let e = env().await;
    let d = e.drainer();
    let mut rows = Vec::new();
    for (i, (fields, _, _)) in INVALID.iter().enumerate() {
        let fields: Value = serde_json::from_str(fields).unwrap();
        let id =
            e.t.insert("UPSERT_EVENT", upsert_with(&format!("s{i}"), fields))
                .await;
        rows.push(id);
    }
    let popup = json!({"method": "popup", "minutes": 5});
    let six = json!({"reminders": {"useDefault": false, "overrides": vec![popup; 6]}});
    let too_many = e.t.insert("UPSERT_EVENT", upsert_with("six", six)).await;
    let long = json!({"location": "x".repeat(1025)});
    let too_long = e.t.insert("UPSERT_EVENT", upsert_with("long", long)).await;
    e.t.drain_until_idle(&d).await;

    let mut expected: Vec<(uuid::Uuid, String)> = INVALID
        .iter()
        .zip(&rows)
        .map(|((_, field, message), id)| (*id, format!("[invalid_payload] {field}: {message}")))
        .collect();
    expected.push((
        too_many,
        "[invalid_payload] payload.event.reminders.overrides: has 6 reminders; Google allows at most 5".into(),
    ));
    expected.push((
        too_long,
        "[invalid_payload] payload.event.location: is 1025 characters long; the limit is 1024"
            .into(),
    ));
    for (id, start) in expected {
        let row = e.t.row(id).await;
        let error = row.last_error.unwrap_or_default();
        assert_eq!(
            (row.status.as_str(), row.attempts),
            ("DEAD_LETTER", 1),
            "{start}"
        );
        assert!(
            error.starts_with(&start),
            "{error:?} should start with {start:?}"
        );
    }
    assert_eq!(e.g.calls(ApiMethod::Insert), 0, "nothing reached Google");
}

#[tokio::test]
async fn rebuild_all_repairs_a_drifted_colour_and_transparency() {
    let e = env().await;
    let d = e.drainer();
    let fields = json!({
        "transparency": "transparent", "colorId": "11", "location": "Room 4",
        "url": "https://app.example/tasks/1", "visibility": "public",
        "reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 60}]},
    });
    e.t.insert("UPSERT_EVENT", upsert_with("drifted", fields.clone()))
        .await;
    e.t.insert("UPSERT_EVENT", upsert_with("kept", fields))
        .await;
    d.drain_once().await.unwrap();
    let wanted = stored_fields(&e.live(CAL, "drifted")[0]);
    let drifted = e.live(CAL, "drifted")[0]["id"].as_str().unwrap().to_owned();
    e.g.human_edit(CAL, &drifted, |ev| {
        ev.insert("colorId".into(), json!("2"));
        ev.insert("transparency".into(), json!("opaque"));
    });
    let updates = e.g.calls(ApiMethod::Update);

    e.t.insert("REBUILD_ALL", rebuild("w1", CAL)).await;
    e.t.drain_until_idle(&d).await;
    assert_eq!(e.t.count("DEAD_LETTER").await, 0);
    assert_eq!(stored_fields(&e.live(CAL, "drifted")[0]), wanted);
    assert_eq!(
        e.g.calls(ApiMethod::Update),
        updates + 1,
        "the drifted event rewritten; the other, read back equal, left alone"
    );
}

/// The body release 0.1 stored for [`old_payload`], byte for byte, and its
/// SHA-256: computed by the code of `main` before the optional fields existed.
const OLD_CONTENT: &str = r#"{"summary":"Ship","description":"Freeze at noon","start":{"dateTime":{"date_time":"2030-05-01T10:00:00+02:00","time_zone":"Europe/Paris"}},"end":{"dateTime":{"date_time":"2030-05-01T11:00:00+02:00","time_zone":"Europe/Paris"}},"privateProperties":{"calendarSyncEventType":"DEADLINE","calendarSyncSourceId":"s1","calendarSyncSourceType":"task","calendarSyncWorkspace":"w1"}}"#;
const OLD_HASH: &str = "8700fd1c82c69a62236cb5a2ff732f416127a0d20e826d8a254ee55ab6deb35f";

fn old_payload() -> Value {
    json!({
        "operation": "UPSERT_EVENT", "workspaceId": "w1", "calendarId": CAL,
        "sourceType": "task", "sourceId": "s1", "eventType": "DEADLINE",
        "event": {
            "title": "Ship", "description": "Freeze at noon",
            "start": "2030-05-01T10:00:00+02:00", "end": "2030-05-01T11:00:00+02:00",
            "isAllDay": false, "timeZone": "Europe/Paris",
        },
    })
}

#[tokio::test]
async fn an_upgrade_leaves_old_events_alone_until_a_field_is_added() {
    let e = env().await;
    // What the old release left: the event on Google and its LIVE binding.
    let calendar_sync::Operation::UpsertEvent(old) =
        calendar_sync::Operation::decode("UPSERT_EVENT", &old_payload()).unwrap()
    else {
        unreachable!()
    };
    let body = calendar_sync::testing::event_body(&old);
    assert_eq!(serde_json::to_string(&body).unwrap(), OLD_CONTENT);
    let event_id = calendar_sync::testing::event_id(&old.source, 0);
    let created = e.g.create_event(
        CAL,
        json!({
            "id": event_id, "summary": "Ship", "description": "Freeze at noon",
            "start": {"dateTime": "2030-05-01T10:00:00+02:00", "timeZone": "Europe/Paris"},
            "end": {"dateTime": "2030-05-01T11:00:00+02:00", "timeZone": "Europe/Paris"},
            "extendedProperties": {"private": body.private_properties},
        }),
    );
    let content: Value = serde_json::from_str(OLD_CONTENT).unwrap();
    e.t.client()
        .await
        .execute(
            "INSERT INTO calendar_event_bindings (workspace_id, calendar_id, source_type, \
             source_id, google_event_id, generation, state, etag, content_hash, content, event_type) \
             VALUES ('w1', $1, 'task', 's1', $2, 0, 'LIVE', $3, $4, $5, 'DEADLINE')",
            &[&CAL, &event_id.as_str(), &created["etag"].as_str(), &OLD_HASH, &content],
        )
        .await
        .unwrap();

    // The new release: a first item warms the token and the calendar name up.
    let d = e.drainer();
    e.t.insert("UPSERT_EVENT", upsert("w1", CAL, "warm-up", "Warm up"))
        .await;
    d.drain_once().await.unwrap();
    let requests = e.g.requests().len();
    e.t.insert("UPSERT_EVENT", old_payload()).await;
    let report = d.drain_once().await.unwrap();
    assert_eq!((report.completed, report.unchanged), (1, 1));
    assert_eq!(
        e.g.requests().len(),
        requests,
        "an unchanged old payload makes no call"
    );

    // REBUILD_ALL reads the old content back from the binding: nothing to repair.
    let updates = e.g.calls(ApiMethod::Update);
    e.t.insert("REBUILD_ALL", rebuild("w1", CAL)).await;
    e.t.drain_until_idle(&d).await;
    assert_eq!(e.t.count("DEAD_LETTER").await, 0);
    assert_eq!(e.g.calls(ApiMethod::Update), updates);

    // A new field in the payload rewrites the event, once.
    let mut with_colour = old_payload();
    with_colour["event"]["colorId"] = json!("5");
    e.t.insert("UPSERT_EVENT", with_colour.clone()).await;
    d.drain_once().await.unwrap();
    assert_eq!(e.g.calls(ApiMethod::Update), updates + 1);
    assert_eq!(e.g.event(CAL, &event_id).unwrap()["colorId"], "5");
    e.t.insert("UPSERT_EVENT", with_colour).await;
    d.drain_once().await.unwrap();
    assert_eq!(e.g.calls(ApiMethod::Update), updates + 1);
}

#[tokio::test]
async fn a_change_of_defaults_rewrites_an_event_on_its_next_upsert() {
    let e = env().await;
    let blue = with_defaults(json!({"BLOCKER_DEADLINE": {"colorId": "9"}}));
    e.t.insert("UPSERT_EVENT", upsert_with("s1", json!({})))
        .await;
    drainer(&e, blue.clone()).drain_once().await.unwrap();
    assert_eq!(e.live(CAL, "s1")[0]["colorId"], "9");

    // The same payload under the same defaults: nothing to write.
    e.t.insert("UPSERT_EVENT", upsert_with("s1", json!({})))
        .await;
    drainer(&e, blue).drain_once().await.unwrap();
    assert_eq!(e.g.calls(ApiMethod::Update), 0);

    // New defaults: the next upsert rewrites it.
    let red = with_defaults(json!({"BLOCKER_DEADLINE": {"colorId": "11"}}));
    e.t.insert("UPSERT_EVENT", upsert_with("s1", json!({})))
        .await;
    drainer(&e, red).drain_once().await.unwrap();
    assert_eq!(e.g.calls(ApiMethod::Update), 1);
    assert_eq!(e.live(CAL, "s1")[0]["colorId"], "11");
}

/// The SQL view has no optional fields: a REBUILD_ALL from it merges the
/// eventType's defaults as an upsert does, so it finds nothing to repair.
#[tokio::test]
async fn a_rebuild_from_the_sql_view_applies_the_defaults_too() {
    let e = env().await;
    let config = with_defaults(json!({
        "BLOCKER_DEADLINE": {"transparency": "transparent", "colorId": "11"},
    }));
    let d = drainer(&e, config);
    e.t.insert("UPSERT_EVENT", upsert_with("s1", json!({})))
        .await;
    d.drain_once().await.unwrap();
    e.t.client()
        .await
        .batch_execute(
            "CREATE VIEW calendar_sync_desired_events AS
             SELECT 'w1'::text AS workspace_id, 'w1@example.com'::text AS calendar_id,
                    'task'::text AS source_type, 's1'::text AS source_id,
                    'BLOCKER_DEADLINE'::text AS event_type, 'Ship it'::text AS title,
                    'P1 blocking task'::text AS description,
                    '2025-01-15T14:00:00Z'::timestamptz AS start_at,
                    '2025-01-15T15:00:00Z'::timestamptz AS end_at,
                    false AS is_all_day, NULL::text AS time_zone",
        )
        .await
        .unwrap();
    let id = e.t.insert("REBUILD_ALL", rebuild("w1", CAL)).await;
    e.t.drain_until_idle(&d).await;
    let row = e.t.row(id).await;
    assert_eq!(row.status, "COMPLETED");
    assert_eq!(row.result.unwrap()["source"], "sql_view");
    assert_eq!(e.g.calls(ApiMethod::Update), 0, "nothing to repair");
    let event = &e.live(CAL, "s1")[0];
    assert_eq!(
        (&event["transparency"], &event["colorId"]),
        (&json!("transparent"), &json!("11"))
    );
}
