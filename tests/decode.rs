//! Bad input: property-based tests of the payload decoder, hostile and
//! oversized payloads drained end to end through the Google adapter and the
//! fake Google, and a check that no SQL statement is assembled from values.

use std::time::Duration;

use calendar_sync::{
    DecodeError, DrainerConfig, EventTime, GoogleCalendar, Operation, OperationKind, OutboxDrainer,
};
use calendar_sync_tests::{GoogleWorld, TestDb, upsert};
use proptest::prelude::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Property-based tests of `Operation::decode`

const OPERATIONS: [&str; 3] = ["UPSERT_EVENT", "CANCEL_EVENT", "REBUILD_ALL"];

/// Every string field of a payload, as (JSON path under `payload`, max chars
/// for an id or 0).
const STRING_FIELDS: [(&str, usize); 11] = [
    ("operation", 0),
    ("workspaceId", 1024),
    ("calendarId", 1024),
    ("sourceType", 64),
    ("sourceId", 1024),
    ("eventType", 64),
    ("event.title", 0),
    ("event.description", 0),
    ("event.start", 0),
    ("event.end", 0),
    ("event.timeZone", 0),
];

fn template() -> Value {
    let mut p = upsert("w1", "team@example.com", "s1", "Title");
    p["event"]["timeZone"] = json!("Europe/Zurich");
    p
}

fn set_path(payload: &mut Value, path: &str, value: Value) {
    match path.split_once('.') {
        Some((outer, inner)) => payload[outer][inner] = value,
        None => payload[path] = value,
    }
}

/// Any JSON value: scalars, strings with any characters, and nested arrays and
/// objects whose keys are often the payload's own field names.
fn any_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => prop::sample::select(vec![
            "operation", "workspaceId", "calendarId", "sourceType", "sourceId", "eventType",
            "event", "title", "description", "start", "end", "isAllDay", "timeZone",
        ])
        .prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::from),
        prop::sample::select(vec![
            "2025-01-15T14:00:00Z",
            "2025-01-15",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "UPSERT_EVENT",
            "CANCEL_EVENT",
            "REBUILD_ALL",
            "Europe/Zurich",
            "",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 10, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..10)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Whether an operation reads this payload field.
fn relevant(column: &str, path: &str) -> bool {
    match column {
        "REBUILD_ALL" => matches!(path, "operation" | "workspaceId" | "calendarId"),
        "CANCEL_EVENT" => matches!(
            path,
            "operation" | "workspaceId" | "calendarId" | "sourceType" | "sourceId"
        ),
        _ => true,
    }
}

fn any_operation_column() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(OPERATIONS.to_vec()).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// A decoded operation must round-trip; an error must name a field of the
/// payload (or the operation column), say something, and stay short however
/// large the input (it becomes `last_error`).
fn check_outcome(
    column: &str,
    payload: &Value,
    result: &Result<Operation, DecodeError>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(op) => {
            prop_assert_eq!(op.kind().as_str(), column);
            let again = Operation::decode(column, &op.to_payload());
            prop_assert_eq!(again.as_ref(), Ok(op), "round trip of {}", payload);
        }
        Err(e) => {
            prop_assert!(
                e.field == "operation" || e.field == "payload" || e.field.starts_with("payload."),
                "field {:?}",
                e.field
            );
            prop_assert!(!e.message.trim().is_empty());
            let shown = e.to_string();
            prop_assert!(shown.starts_with(&format!("{}: ", e.field)), "{}", shown);
            prop_assert!(
                shown.chars().count() <= 400,
                "bounded: {} chars",
                shown.len()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_never_panics_and_yields_an_operation_or_a_clear_error(
        column in any_operation_column(),
        payload in any_json(),
    ) {
        let result = Operation::decode(&column, &payload);
        check_outcome(&column, &payload, &result)?;
        if column.parse::<OperationKind>().is_err() {
            prop_assert_eq!(result.unwrap_err().field, "operation");
        }
    }

    #[test]
    fn an_arbitrary_string_in_any_field_is_kept_verbatim_or_named(
        column in prop::sample::select(OPERATIONS.to_vec()),
        field in prop::sample::select(STRING_FIELDS.to_vec()),
        value in prop_oneof![
            3 => any::<String>(),
            1 => "\\PC{0,3}[\\x00-\\x1f\\x7f\\x{85}]\\PC{0,3}",
            1 => "[ \\t\\n]{0,3}",
            1 => prop::collection::vec(any::<char>(), 1000..1100).prop_map(|c| c.into_iter().collect()),
        ],
    ) {
        let (path, max) = field;
        let mut payload = template();
        payload["operation"] = json!(column);
        set_path(&mut payload, path, json!(value));
        let result = Operation::decode(column, &payload);
        check_outcome(column, &payload, &result)?;
        let named = format!("payload.{path}");
        match &result {
            Err(e) => {
                // Only the replaced field can be wrong (a new start may put
                // the end before it).
                let ok = e.field == named || (path == "event.start" && e.field == "payload.event.end");
                prop_assert!(ok, "{} named for a bad {}", e.field, named);
            }
            Ok(op) => {
                let encoded = op.to_payload();
                let kept = match path.split_once('.') {
                    Some((o, i)) => encoded[o][i].clone(),
                    None => encoded[path].clone(),
                };
                // Ids, types and text come out exactly as they went in.
                if relevant(column, path) && (max > 0 || path == "event.title" || path == "event.description") {
                    prop_assert_eq!(kept, json!(value));
                }
            }
        }
        // The id rules, exactly, for the fields the operation reads; the
        // others are ignored.
        if !relevant(column, path) {
            prop_assert!(result.is_ok(), "{} is not read by {}", named, column);
        } else if max > 0 {
            let valid = !value.trim().is_empty()
                && value.chars().count() <= max
                && !value.chars().any(char::is_control);
            prop_assert_eq!(result.is_ok(), valid, "{} = {:?}", named, value);
        }
    }

    #[test]
    fn a_non_string_in_any_string_field_is_named(
        field in prop::sample::select(STRING_FIELDS.to_vec()),
        value in any_json().prop_filter("not a string", |v| !v.is_string()),
    ) {
        let (path, _) = field;
        let mut payload = template();
        set_path(&mut payload, path, value.clone());
        let result = Operation::decode("UPSERT_EVENT", &payload);
        check_outcome("UPSERT_EVENT", &payload, &result)?;
        let optional = matches!(path, "operation" | "event.description" | "event.timeZone");
        if value.is_null() && optional {
            prop_assert!(result.is_ok());
        } else {
            prop_assert_eq!(result.unwrap_err().field, format!("payload.{path}"));
        }
    }

    #[test]
    fn dates_anywhere_in_time_decode_or_are_named(
        start in date_like(),
        end in date_like(),
        all_day in any::<bool>(),
    ) {
        let mut payload = template();
        payload["event"]["start"] = json!(start);
        payload["event"]["end"] = json!(end);
        payload["event"]["isAllDay"] = json!(all_day);
        let result = Operation::decode("UPSERT_EVENT", &payload);
        check_outcome("UPSERT_EVENT", &payload, &result)?;
        if let Err(e) = &result {
            prop_assert!(e.field == "payload.event.start" || e.field == "payload.event.end", "{}", e);
        }
        if let Ok(Operation::UpsertEvent(u)) = &result {
            // What reaches Google is well formed: the end after the start.
            let body = calendar_sync::testing::event_body(u);
            let ordered = match (&body.start, &body.end) {
                (EventTime::Date(a), EventTime::Date(b)) => b > a,
                (EventTime::DateTime { date_time: a, .. }, EventTime::DateTime { date_time: b, .. }) => b > a,
                _ => false,
            };
            prop_assert!(ordered, "{:?}", body);
        }
    }
}

/// Dates and timestamps from year 0 to 9999 (and a few beyond), with any
/// offset, sometimes malformed.
fn date_like() -> impl Strategy<Value = String> {
    let year = prop_oneof![
        Just(0u32),
        Just(1),
        Just(1969),
        Just(1970),
        Just(2038),
        Just(9999),
        0u32..10000,
        10000u32..100000
    ];
    (
        year,
        1u32..14,
        0u32..33,
        0u32..25,
        0u32..61,
        0u32..62,
        prop::sample::select(vec![
            "Z",
            "+00:00",
            "-23:59",
            "+23:59",
            "+14:00",
            "",
            "+24:00",
            ".999999999Z",
        ]),
        any::<bool>(),
    )
        .prop_map(|(y, m, d, h, min, s, off, date_only)| {
            if date_only {
                format!("{y:04}-{m:02}-{d:02}")
            } else {
                format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}{off}")
            }
        })
}

// ---------------------------------------------------------------------------
// Hostile and oversized payloads, drained end to end

struct Case {
    name: &'static str,
    payload: Value,
    /// `None`: synced faithfully; `Some(texts)`: DEAD_LETTER whose last_error
    /// contains one of them.
    dead: Option<&'static [&'static str]>,
}

fn with_event(source: &str, f: impl FnOnce(&mut Value)) -> Value {
    let mut p = upsert("ws0", "ws0@example.com", source, "Title");
    f(&mut p["event"]);
    p
}

fn hostile_cases() -> Vec<Case> {
    let controls: String =
        "bell\u{7} tab\t newline\n cr\r esc\u{1b}[31m del\u{7f} nel\u{85} ls\u{2028} end".into();
    let unicode: String =
        "emoji 😀👩‍👩‍👧 combining é rtl \u{202e}txet bom \u{feff} nonchar \u{ffff} max \u{10ffff} zwj \u{200d}".into();
    vec![
        Case {
            name: "1 MB description",
            payload: with_event("big-description", |e| {
                e["description"] = json!("0123456789abcdef".repeat(65_536));
            }),
            // Over Google's (undocumented, ~8 kB) limit: refused at once, never truncated.
            dead: Some(&[
                "payload.event.description: is 1048576 characters long; the limit is 8192",
            ]),
        },
        Case {
            name: "10,000-character title",
            payload: with_event("long-title", |e| {
                e["title"] = json!("T".repeat(9_999) + "!")
            }),
            dead: Some(&["payload.event.title: is 10000 characters long; the limit is 1024"]),
        },
        Case {
            name: "control characters in title and description",
            payload: with_event("controls", |e| {
                e["title"] = json!(controls.clone());
                e["description"] = json!(controls.clone());
            }),
            dead: None,
        },
        Case {
            name: "emoji, combining marks, RTL override, BOM, noncharacters",
            payload: with_event("unicode", |e| {
                e["title"] = json!(unicode.clone());
                e["description"] = json!(unicode.clone());
            }),
            dead: None,
        },
        Case {
            name: "unicode source id",
            payload: upsert("ws0", "ws0@example.com", "задача-😀-\u{202e}", "Unicode id"),
            dead: None,
        },
        Case {
            name: "control character in the source id",
            payload: upsert("ws0", "ws0@example.com", "bad\u{1}id", "x"),
            dead: Some(&[
                "[invalid_payload] payload.sourceId: must not contain control characters",
            ]),
        },
        Case {
            name: "far past (year 1)",
            payload: with_event("year-1", |e| {
                e["start"] = json!("0001-01-01T00:00:00Z");
                e["end"] = json!("0001-01-01T01:00:00Z");
            }),
            dead: None,
        },
        Case {
            name: "far future (year 9999)",
            payload: with_event("year-9999", |e| {
                e["start"] = json!("9999-12-31T22:00:00Z");
                e["end"] = json!("9999-12-31T23:59:59Z");
            }),
            dead: None,
        },
        Case {
            name: "far future all-day ending on 9999-12-31",
            payload: with_event("all-day-9999", |e| {
                e["start"] = json!("9999-12-30");
                e["end"] = json!("9999-12-31");
                e["isAllDay"] = json!(true);
            }),
            dead: None,
        },
        Case {
            // 10000-01-01 in UTC, which RFC 3339 cannot write: Google refuses
            // it (400) and the item dead-letters after that one call. (Better
            // still would be the decoder naming the field.)
            name: "end past year 9999 in UTC",
            payload: with_event("offset-9999", |e| {
                e["start"] = json!("9999-12-31T20:00:00-23:00");
                e["end"] = json!("9999-12-31T21:00:00-23:00");
            }),
            dead: Some(&[
                "[invalid_payload] payload.event.",
                "[google_400_invalid] Invalid end time.",
            ]),
        },
        Case {
            name: "year 0",
            payload: with_event("year-0", |e| {
                e["start"] = json!("0000-01-01T00:00:00Z");
                e["end"] = json!("0000-01-01T01:00:00Z");
            }),
            dead: None,
        },
        Case {
            name: "time zone that does not exist",
            payload: with_event("tz-mars", |e| e["timeZone"] = json!("Mars/Olympus_Mons")),
            dead: Some(&[
                "[invalid_payload] payload.event.timeZone: \"Mars/Olympus_Mons\" is not an IANA time zone",
            ]),
        },
        Case {
            name: "time zone with a bogus offset",
            payload: with_event("tz-utc25", |e| e["timeZone"] = json!("UTC+25")),
            dead: Some(&["[invalid_payload] payload.event.timeZone"]),
        },
        Case {
            name: "empty time zone",
            payload: with_event("tz-empty", |e| e["timeZone"] = json!("")),
            dead: Some(&["[invalid_payload] payload.event.timeZone"]),
        },
        Case {
            name: "a 10 kB bogus time zone",
            payload: with_event("tz-huge", |e| e["timeZone"] = json!("Europe/".repeat(1500))),
            dead: Some(&["[invalid_payload] payload.event.timeZone"]),
        },
    ]
}

fn drainer(t: &TestDb, world: &GoogleWorld) -> OutboxDrainer<GoogleCalendar> {
    let mut google = world.google_config();
    google.request_timeout = Duration::from_secs(10);
    let calendar = GoogleCalendar::new(&t.db, GoogleWorld::cipher(), google).unwrap();
    let config = DrainerConfig {
        backoff_jitter: 0.0,
        ..DrainerConfig::default()
    };
    OutboxDrainer::new(t.db.clone(), calendar, config).unwrap()
}

fn live_of(world: &GoogleWorld, calendar: &str, source: &str) -> Vec<Value> {
    world
        .google
        .live_events(calendar)
        .into_iter()
        .filter(|e| e["extendedProperties"]["private"]["calendarSyncSourceId"] == source)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_oversized_payloads_sync_verbatim_or_dead_letter_once() {
    let t = TestDb::new().await;
    let world = GoogleWorld::start(&t.db, 1).await;
    let cases = hostile_cases();
    let mut ids = Vec::new();
    for c in &cases {
        ids.push(t.insert("UPSERT_EVENT", c.payload.clone()).await);
    }
    let d = drainer(&t, &world);
    let report = d.drain_once().await.unwrap();
    assert_eq!(report.claimed, cases.len() as u64, "{report:?}");
    let mut synced = 0;
    let mut dead = 0;
    let mut google_refused = 0;
    let mut wrong = Vec::new();
    for (c, id) in cases.iter().zip(&ids) {
        let row = t.row(*id).await;
        let source = c.payload["sourceId"].as_str().unwrap();
        let live = live_of(&world, "ws0@example.com", source);
        let error = row.last_error.clone().unwrap_or_default();
        println!(
            "{}: {} after {} attempt(s) {error:.200}",
            c.name, row.status, row.attempts
        );
        // Never a retry storm: one attempt decides every case.
        if row.attempts != 1 {
            wrong.push(format!("{}: {} attempts", c.name, row.attempts));
        }
        match c.dead {
            None => {
                synced += 1;
                if row.status != "COMPLETED" || live.len() != 1 {
                    wrong.push(format!(
                        "{}: {} with {} live events: {error:.200}",
                        c.name,
                        row.status,
                        live.len()
                    ));
                    continue;
                }
                let e = &c.payload["event"];
                let (got, want) = (&live[0], e);
                if got["summary"] != want["title"] || got["description"] != want["description"] {
                    wrong.push(format!("{}: title or description not verbatim", c.name));
                }
                let same_start = if want["isAllDay"] == true {
                    got["start"]["date"] == want["start"]
                } else {
                    let parse = |v: &Value| {
                        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default()).ok()
                    };
                    parse(&got["start"]["dateTime"]).is_some()
                        && parse(&got["start"]["dateTime"]) == parse(&want["start"])
                };
                if !same_start {
                    wrong.push(format!(
                        "{}: start {} for {}",
                        c.name, got["start"], want["start"]
                    ));
                }
            }
            Some(expected) => {
                dead += 1;
                google_refused += usize::from(error.starts_with("[google_"));
                if row.status != "DEAD_LETTER"
                    || !expected.iter().any(|x| error.contains(x))
                    || !live.is_empty()
                {
                    wrong.push(format!(
                        "{}: {} {error:.200}, expected DEAD_LETTER with {expected:?}",
                        c.name, row.status
                    ));
                }
                if error.len() >= 400 {
                    wrong.push(format!("{}: a {}-byte last_error", c.name, error.len()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The worker is fine afterwards.
    let after = t
        .insert(
            "UPSERT_EVENT",
            upsert("ws0", "ws0@example.com", "after", "after"),
        )
        .await;
    d.drain_once().await.unwrap();
    assert_eq!(t.row(after).await.status, "COMPLETED");
    let calls = world
        .google
        .requests()
        .iter()
        .filter(|r| r.path.contains("/events"))
        .count();
    assert_eq!(
        calls,
        synced + google_refused + 1,
        "one call per synced case (and per case only Google refused), none for the others"
    );
    println!(
        "FIGURES bad_input: cases={} synced_verbatim={synced} dead_lettered_at_once={dead} \
         max_attempts=1 google_calls={calls} crashes=0",
        cases.len()
    );
}

#[tokio::test]
async fn postgresql_refuses_nul_and_lone_surrogates_at_the_producer() {
    let t = TestDb::new().await;
    let client = t.client().await;
    for (name, text) in [
        ("NUL", r#"{"workspaceId": "w\u0000", "calendarId": "c"}"#),
        (
            "lone surrogate",
            r#"{"workspaceId": "w\ud800", "calendarId": "c"}"#,
        ),
    ] {
        let sql = format!(
            "INSERT INTO sync_outbox (operation, payload) VALUES ('REBUILD_ALL', '{text}'::jsonb)"
        );
        let err = client.batch_execute(&sql).await.expect_err(name);
        println!("{name}: {err:?}");
    }
    // Sent as a parameter the same way a Rust producer would: refused too.
    let err = client
        .execute(
            "INSERT INTO sync_outbox (operation, payload) VALUES ('REBUILD_ALL', $1)",
            &[&json!({"workspaceId": "w\u{0}", "calendarId": "c"})],
        )
        .await
        .expect_err("NUL as a parameter");
    assert!(
        err.to_string().contains("db error") || err.as_db_error().is_some(),
        "{err}"
    );
    assert_eq!(
        t.counts().await.values().sum::<i64>(),
        0,
        "nothing enqueued"
    );
}

/// Quotes, SQL fragments and placeholders in every field: stored and synced
/// byte for byte, and every table still there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_full_of_quotes_and_sql_is_stored_and_synced_verbatim() {
    let t = TestDb::new().await;
    let world = GoogleWorld::start(&t.db, 1).await;
    let workspace = "ws'; DROP TABLE google_connections; --";
    let calendar = "o'brien\"; DELETE FROM sync_outbox; --@example.com";
    let refresh = "1//0g-refresh-sql-secret";
    world
        .google
        .add_refresh_token(refresh, calendar_sync_tests::WORKER_CLIENT_ID, calendar);
    world.google.add_calendar(calendar);
    calendar_sync::ops::put_connection(
        &t.db,
        &GoogleWorld::cipher(),
        workspace,
        calendar,
        &secrecy::SecretString::from(refresh),
    )
    .await
    .unwrap();
    let source = "x' OR '1'='1'); TRUNCATE calendar_event_bindings; --";
    let title = "Robert'); DROP TABLE sync_outbox; -- $1 $$ ; $$ \\' E'\\x00' %s {} \\\\";
    let description = "'; UPDATE google_connections SET is_valid = false WHERE ''=''; --\n\
                       \" OR 1=1 -- /* */ ; SELECT pg_sleep(10); $tag$ x $tag$ ?; :name @var";
    let mut payload = upsert(workspace, calendar, source, title);
    payload["sourceType"] = json!("type'--");
    payload["eventType"] = json!("ev\"; DROP --");
    payload["event"]["description"] = json!(description);
    let id = t.insert("UPSERT_EVENT", payload.clone()).await;
    let client = t.client().await;
    let stored: Value = client
        .query_one("SELECT payload FROM sync_outbox WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, payload, "stored verbatim");

    drainer(&t, &world).drain_once().await.unwrap();
    let row = t.row(id).await;
    assert_eq!(
        (row.status.as_str(), row.attempts),
        ("COMPLETED", 1),
        "{:?}",
        row.last_error
    );
    let live = live_of(&world, calendar, source);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["summary"], title);
    assert_eq!(live[0]["description"], description);
    let props = &live[0]["extendedProperties"]["private"];
    assert_eq!(props["calendarSyncWorkspace"], workspace);
    assert_eq!(props["calendarSyncSourceType"], "type'--");
    assert_eq!(props["calendarSyncEventType"], "ev\"; DROP --");
    let binding = client
        .query_one(
            "SELECT workspace_id, calendar_id, source_type, source_id, event_type, content->>'summary'
               FROM calendar_event_bindings",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(binding.get::<_, String>(0), workspace);
    assert_eq!(binding.get::<_, String>(1), calendar);
    assert_eq!(binding.get::<_, String>(3), source);
    assert_eq!(binding.get::<_, String>(4), "ev\"; DROP --");
    assert_eq!(binding.get::<_, String>(5), title);
    // Every table is there and untouched but for this row's own effects.
    let counts: (i64, i64, i64, bool) = {
        let r = client
            .query_one(
                "SELECT (SELECT count(*) FROM sync_outbox), (SELECT count(*) FROM calendar_event_bindings),
                        (SELECT count(*) FROM google_connections),
                        (SELECT bool_and(is_valid) FROM google_connections)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!(counts, (1, 1, 2, true));
}

/// Every statement the library sends takes its values as parameters: no SQL
/// text in the library is built with `format!` but the one that names a
/// constant channel (LISTEN cannot take a parameter).
#[test]
fn every_sql_statement_is_parameterised() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/calendar-sync/src");
    let files = rust_files(&src);
    assert!(files.len() > 20, "the library's sources: {files:?}");
    let mut built = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("format!(") {
            rest = &rest[at + "format!(".len()..];
            let literal: String = rest
                .chars()
                .take_while(|c| *c != ',' && *c != ')')
                .collect();
            let sql = [
                "SELECT ", "INSERT ", "UPDATE ", "DELETE ", "LISTEN ", "SET ", " WHERE ", "VALUES",
            ]
            .iter()
            .any(|k| literal.contains(k));
            if sql {
                let file = path.strip_prefix(&src).unwrap().to_string_lossy();
                built.push((file.into_owned(), literal));
            }
        }
    }
    assert_eq!(built.len(), 1, "SQL built with format!: {built:#?}");
    let (file, literal) = &built[0];
    assert_eq!(file, "db/mod.rs");
    let placeholders: Vec<&str> = literal
        .split('{')
        .skip(1)
        .map(|p| p.split('}').next().unwrap())
        .collect();
    assert_eq!(placeholders, ["NOTIFY_CHANNEL"], "{literal}");
}

/// Every `.rs` file under `dir`, in its folders too.
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
