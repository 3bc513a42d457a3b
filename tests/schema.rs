//! The schema and the operator functions, in plain SQL.

use calendar_sync::testing as store;
use calendar_sync::{CalendarKey, Operation, SourceKey, enqueue};
use calendar_sync_tests::{TestDb, cancel, upsert};

#[tokio::test]
async fn migrations_rerun_cleanly_and_concurrently() {
    let t = TestDb::new().await;
    let (a, b) = tokio::join!(calendar_sync::migrate(&t.db), calendar_sync::migrate(&t.db));
    assert_eq!(
        a.unwrap() + b.unwrap(),
        0,
        "already migrated: nothing to apply"
    );
    let applied: i64 = t
        .client()
        .await
        .query_one("SELECT count(*) FROM calendar_sync_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        usize::try_from(applied).unwrap(),
        calendar_sync::testing::known_migrations()
    );
}

/// What a fresh migrate creates in the schema: every table, index, view,
/// function (with its signature: the worker, the operator commands and
/// docs/least-privilege.sql call them by it) and trigger, and nothing else.
/// Exactly three functions run with their owner's rights.
const SCHEMA_OBJECTS: &[&str] = &[
    "function (security definer) calendar_sync_forget_aliases()",
    "function (security definer) calendar_sync_key_calendar()",
    "function (security definer) calendar_sync_record_alias(text,text,text,bigint)",
    "function calendar_sync_base32hex20(bytea)",
    "function calendar_sync_base32hex_digit(bytea,integer)",
    "function calendar_sync_bucket_shape(integer,double precision)",
    "function calendar_sync_bucket_store(\"char\",text,double precision,timestamp with time zone)",
    "function calendar_sync_bucket_tokens(\"char\",text,double precision,double precision,timestamp with time zone)",
    "function calendar_sync_claim(integer,integer,double precision,integer,integer,double precision)",
    "function calendar_sync_complete(uuid[],uuid[],jsonb[],text[],text[],text[],text[],text[],integer[],text[],text[],text[],jsonb[],text[])",
    "function calendar_sync_complete(uuid[],uuid[],jsonb[],text[],text[],text[],text[],text[],integer[],text[],text[],text[],jsonb[],text[],text[],boolean[])",
    "function calendar_sync_connection_validity()",
    "function calendar_sync_event_digest(text,text,text,text,integer)",
    "function calendar_sync_event_id(text,text,text,text,integer)",
    "function calendar_sync_fences(text,text)",
    "function calendar_sync_lock_namespace()",
    "function calendar_sync_notify()",
    "function calendar_sync_put_bindings(text[],text[],text[],text[],text[],integer[],text[],text[],text[],jsonb[],text[],uuid[])",
    "function calendar_sync_put_bindings(text[],text[],text[],text[],text[],integer[],text[],text[],text[],jsonb[],text[],uuid[],text[],boolean[])",
    "function calendar_sync_resolve_item(uuid,uuid,text,text,text,bigint)",
    "function calendar_sync_row_key(bigint)",
    "function calendar_sync_take_budget(text,integer,integer,double precision)",
    "function calendar_sync_uuid_v7()",
    "function calendar_sync_wake_workers()",
    "function cleanup_old_outbox_items(integer)",
    "function requeue_dead_letter_items(uuid[],text)",
    "index calendar_aliases_pkey",
    "index calendar_aliases_resolved_idx",
    "index calendar_event_bindings_event_idx",
    "index calendar_event_bindings_pkey",
    "index calendar_sync_budget_pkey",
    "index calendar_sync_claim_cursor_pkey",
    "index calendar_sync_drift_checks_due_idx",
    "index calendar_sync_drift_checks_pkey",
    "index calendar_sync_drift_detected_idx",
    "index calendar_sync_drift_once_idx",
    "index calendar_sync_drift_pkey",
    "index calendar_sync_migrations_pkey",
    "index calendar_sync_minute_counts_pkey",
    "index calendar_sync_waiters_pkey",
    "index google_connections_pkey",
    "index sync_outbox_dead_letter_idx",
    "index sync_outbox_finished_idx",
    "index sync_outbox_group_pending_idx",
    "index sync_outbox_pair_unfinished_idx",
    "index sync_outbox_pending_idx",
    "index sync_outbox_pkey",
    "index sync_outbox_rebuild_idx",
    "index sync_outbox_source_id_idx",
    "index sync_outbox_source_idx",
    "index sync_outbox_source_processing_idx",
    "table calendar_aliases",
    "table calendar_event_bindings",
    "table calendar_sync_budget",
    "table calendar_sync_claim_cursor",
    "table calendar_sync_drift",
    "table calendar_sync_drift_checks",
    "table calendar_sync_migrations",
    "table calendar_sync_minute_counts",
    "table calendar_sync_waiters",
    "table google_connections",
    "table sync_outbox",
    "trigger calendar_sync_connection_validity on google_connections",
    "trigger google_connections_forget_aliases on google_connections",
    "trigger sync_outbox_key_calendar on sync_outbox",
    "trigger sync_outbox_notify on sync_outbox",
    "view calendar_sync_connections_needing_reconnect",
    "view calendar_sync_events",
    "view sync_outbox_dead_letters",
    "view sync_outbox_oldest_pending",
    "view sync_outbox_status",
];

#[tokio::test]
async fn a_fresh_migrate_creates_the_schema_and_a_second_changes_nothing() {
    let t = TestDb::new().await;
    assert_eq!(
        calendar_sync::testing::known_migrations(),
        6,
        "V1 schema, V2 functions, V3 operator functions, V4 dashboard, V5 outcomes, V6 drift"
    );
    let client = t.client().await;
    let objects = || async {
        client
            .query(
                "SELECT kind || ' ' || name FROM (
                     SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' ELSE 'index' END AS kind,
                            c.relname::text AS name
                       FROM pg_class c
                      WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v', 'i')
                     UNION ALL
                     SELECT CASE WHEN p.prosecdef THEN 'function (security definer)' ELSE 'function' END,
                            p.oid::regprocedure::text
                       FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
                     UNION ALL
                     SELECT 'trigger', t.tgname || ' on ' || t.tgrelid::regclass::text
                       FROM pg_trigger t WHERE NOT t.tgisinternal
                 ) o ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let fresh = objects().await;
    assert_eq!(fresh, SCHEMA_OBJECTS);

    // Producers write only operation and payload: the calendar key is the
    // resolved id once known, else the payload's name.
    let calendar_id: String = client
        .query_one(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
               JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
              WHERE d.adrelid = 'sync_outbox'::regclass AND a.attname = 'calendar_id'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        calendar_id,
        "COALESCE(calendar_key, (payload ->> 'calendarId'::text))"
    );

    assert_eq!(
        calendar_sync::migrate(&t.db).await.unwrap(),
        0,
        "nothing to apply"
    );
    assert_eq!(objects().await, fresh, "the second migrate changed nothing");
}

/// A database migrated before the squash (other migrations recorded under the
/// same versions) is refused, never patched up: it must be recreated.
#[tokio::test]
async fn a_database_of_the_development_migrations_is_refused() {
    let t = TestDb::new().await;
    t.client()
        .await
        .batch_execute(
            "UPDATE calendar_sync_migrations SET name = 'create_sync_outbox', checksum = '1'
              WHERE version = 1",
        )
        .await
        .unwrap();
    let err = calendar_sync::migrate(&t.db)
        .await
        .expect_err("a divergent history is refused");
    let message = err.to_string();
    assert!(
        message.contains("V1__create_sync_outbox") && message.contains("V1__schema"),
        "{message}"
    );
}

/// Lock keys: the namespace is written in Rust (the migration lock needs it
/// before the schema exists) and in SQL, and both must agree; a row's key is
/// computed by SQL alone (`calendar_sync_row_key`, returned by the claim and
/// the orphan scan): its seq folded into 1..=i32::MAX.
#[tokio::test]
async fn sql_and_rust_agree_on_lock_keys() {
    let t = TestDb::new().await;
    let client = t.client().await;
    let namespace: i32 = client
        .query_one("SELECT calendar_sync_lock_namespace()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(namespace, store::LOCK_NAMESPACE);
    let max = i64::from(i32::MAX);
    for (seq, expected) in [
        (1, 1),
        (2, 2),
        (max - 1, i32::MAX - 1),
        (max, i32::MAX),
        (max + 1, 1),
        (2 * max, i32::MAX),
        (2 * max + 1, 1),
        (i64::MAX, 1),
    ] {
        let key: i32 = client
            .query_one("SELECT calendar_sync_row_key($1)", &[&seq])
            .await
            .unwrap()
            .get(0);
        assert_eq!(key, expected, "seq {seq}");
    }
}

/// The helpers used inside the claim's statements are inlined by the planner
/// (plain SQL, no SET clause, volatility no stricter than their body's): no
/// function call per row, and the fences are read through their index.
#[tokio::test]
async fn the_claims_helpers_are_inlined() {
    let t = TestDb::new().await;
    let client = t.client().await;
    let explain = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let fences = explain(
        "EXPLAIN (VERBOSE, COSTS OFF)
         SELECT min(f.seq) FROM calendar_sync_fences('w', 'c') f",
    )
    .await;
    assert!(fences.contains("sync_outbox_rebuild_idx"), "{fences}");
    assert!(!fences.contains("Function Scan"), "{fences}");
    let per_row = explain(
        "EXPLAIN (VERBOSE, COSTS OFF)
         SELECT calendar_sync_base32hex20(h.digest), calendar_sync_row_key(x.seq),
                calendar_sync_lock_namespace()
           FROM sync_outbox x
          CROSS JOIN LATERAL (
                SELECT calendar_sync_event_digest(x.workspace_id, x.calendar_id, x.source_type,
                                                  x.source_id, x.attempts) AS digest
                OFFSET 0) h",
    )
    .await;
    assert!(!per_row.contains("calendar_sync_"), "{per_row}");
    assert!(
        per_row.contains("get_byte") && per_row.contains("sha256"),
        "{per_row}"
    );
}

#[tokio::test]
async fn producer_writes_only_operation_and_payload() {
    let t = TestDb::new().await;
    let id = t
        .insert("UPSERT_EVENT", upsert("w1", "cal", "s1", "Hello"))
        .await;
    let row = t
        .client()
        .await
        .query_one(
            "SELECT status, attempts, next_attempt_at <= now(), workspace_id, calendar_id, source_type, source_id, seq
               FROM sync_outbox WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "PENDING");
    assert_eq!(row.get::<_, i32>(1), 0);
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, Option<&str>>(3), Some("w1"));
    assert_eq!(row.get::<_, Option<&str>>(4), Some("cal"));
    assert_eq!(row.get::<_, Option<&str>>(5), Some("task"));
    assert_eq!(row.get::<_, Option<&str>>(6), Some("s1"));
}

#[tokio::test]
async fn enqueue_rides_the_callers_transaction() {
    let t = TestDb::new().await;
    let mut client = t.client().await;
    let source = SourceKey {
        calendar: CalendarKey {
            workspace_id: "w1".into(),
            calendar_id: "cal".into(),
        },
        source_type: "task".into(),
        source_id: "s1".into(),
    };
    let tx = client.transaction().await.unwrap();
    enqueue(&tx, &Operation::CancelEvent(source.clone()))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        t.counts().await.values().sum::<i64>(),
        0,
        "rolled back with the caller"
    );

    let tx = client.transaction().await.unwrap();
    let first = enqueue(&tx, &Operation::CancelEvent(source.clone()))
        .await
        .unwrap();
    let second = enqueue(&tx, &Operation::RebuildAll(source.calendar.clone()))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let order: Vec<uuid::Uuid> = client
        .query("SELECT id FROM sync_outbox ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        order,
        [first, second],
        "same now(), insertion order kept by seq"
    );
}

#[tokio::test]
async fn cleanup_deletes_only_old_finished_rows() {
    let t = TestDb::new().await;
    let client = t.client().await;
    for status in [
        "COMPLETED",
        "DEAD_LETTER",
        "SUPERSEDED",
        "PENDING",
        "PROCESSING",
    ] {
        for age_days in [40, 1] {
            let id = t.insert("CANCEL_EVENT", cancel("w1", "cal", status)).await;
            client
                .execute(
                    "UPDATE sync_outbox SET status = $2, updated_at = now() - make_interval(days => $3),
                            claim_token = CASE WHEN $2 = 'PROCESSING' THEN gen_random_uuid() END
                      WHERE id = $1",
                    &[&id, &status, &age_days],
                )
                .await
                .unwrap();
        }
    }
    let deleted: i32 = client
        .query_one("SELECT cleanup_old_outbox_items(30)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(deleted, 3, "old COMPLETED, DEAD_LETTER and SUPERSEDED");
    let counts = t.counts().await;
    assert_eq!(counts["PENDING"], 2, "never PENDING");
    assert_eq!(counts["PROCESSING"], 2, "never PROCESSING");
    assert_eq!(counts["COMPLETED"], 1);
    assert_eq!(calendar_sync::ops::cleanup(&t.db, 0).await.unwrap(), 3);
    let err = client
        .query_one("SELECT cleanup_old_outbox_items(-1)", &[])
        .await;
    assert!(err.is_err(), "negative days are refused");
}

#[tokio::test]
async fn monitoring_views_answer_in_plain_sql() {
    let t = TestDb::new().await;
    t.insert("CANCEL_EVENT", cancel("w1", "cal", "a")).await;
    let dead = t.insert("CANCEL_EVENT", cancel("w1", "cal", "b")).await;
    let client = t.client().await;
    client
        .execute(
            "UPDATE sync_outbox SET status = 'DEAD_LETTER', last_error = '[x] boom' WHERE id = $1",
            &[&dead],
        )
        .await
        .unwrap();
    let rows = client
        .query(
            "SELECT status, items FROM sync_outbox_status ORDER BY status",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        [("DEAD_LETTER".to_owned(), 1), ("PENDING".to_owned(), 1)]
    );
    let dl = client
        .query_one("SELECT id, last_error FROM sync_outbox_dead_letters", &[])
        .await
        .unwrap();
    assert_eq!(dl.get::<_, uuid::Uuid>(0), dead);
    let age: f64 = client
        .query_one("SELECT age_seconds FROM sync_outbox_oldest_pending", &[])
        .await
        .unwrap()
        .get(0);
    assert!(age >= 0.0);
}

#[tokio::test]
async fn claim_plan_reads_only_pending_rows() {
    let t = TestDb::new().await;
    let client = t.client().await;
    client
        .batch_execute(
            "INSERT INTO sync_outbox (operation, payload, status)
             SELECT 'CANCEL_EVENT', jsonb_build_object('workspaceId', 'w', 'calendarId', 'c',
                    'sourceType', 't', 'sourceId', g::text), 'COMPLETED'
               FROM generate_series(1, 20000) g;
             ANALYZE sync_outbox;",
        )
        .await
        .unwrap();
    let plan: Vec<String> = client
        .query(
            "EXPLAIN SELECT id FROM sync_outbox WHERE status = 'PENDING' AND next_attempt_at <= now() ORDER BY seq LIMIT 10",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("sync_outbox_pending_idx"),
        "claim uses the partial index:\n{plan}"
    );
}

/// Notifications received on `LISTEN calendar_sync_outbox` within a short wait
/// after `sql` ran on another session.
async fn notifications_after(t: &TestDb, sql: &str) -> usize {
    use futures_util::StreamExt;
    let (listener, mut connection) = t.config.connect(tokio_postgres::NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.channel().to_owned());
            }
        }
    });
    listener
        .batch_execute("LISTEN calendar_sync_outbox")
        .await
        .unwrap();
    t.client().await.batch_execute(sql).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    n
}

/// A commit notifies, once per transaction, while a worker is registered
/// as waiting for a wake-up, whatever else is in the outbox, savepoints included;
/// and never while none is (busy workers do not register).
#[tokio::test]
async fn inserts_notify_once_per_transaction_while_a_worker_waits_and_never_otherwise() {
    let t = TestDb::new().await;
    let insert = "INSERT INTO sync_outbox (operation, payload) VALUES ('CANCEL_EVENT', '{}')";
    let several = format!("BEGIN; {insert}; {insert}; {insert}; COMMIT;");
    // No worker waits: no notification, on an empty queue or not.
    assert_eq!(notifications_after(&t, &several).await, 0);
    assert_eq!(notifications_after(&t, insert).await, 0);
    // A worker waits (due rows, blocked or not, change nothing): one
    // notification per transaction, rows in released savepoints included.
    let admin = t.client().await;
    admin
        .batch_execute("INSERT INTO calendar_sync_waiters (pid) VALUES (pg_backend_pid())")
        .await
        .unwrap();
    assert_eq!(notifications_after(&t, &several).await, 1);
    assert_eq!(notifications_after(&t, insert).await, 1);
    let nested = format!("BEGIN; SAVEPOINT a; {insert}; RELEASE SAVEPOINT a; COMMIT;");
    assert_eq!(notifications_after(&t, &nested).await, 1);
    let rolled_back = format!("BEGIN; SAVEPOINT a; {insert}; ROLLBACK TO SAVEPOINT a; COMMIT;");
    assert_eq!(notifications_after(&t, &rolled_back).await, 0);
    admin
        .batch_execute("DELETE FROM calendar_sync_waiters")
        .await
        .unwrap();
    assert_eq!(notifications_after(&t, insert).await, 0);
}

/// The claim reserves event ids in SQL (`calendar_sync_event_id`); they must be
/// the ids the library derives, for any text.
#[tokio::test]
async fn sql_event_ids_equal_the_librarys() {
    let t = TestDb::new().await;
    let client = t.client().await;
    let texts = [
        "w1",
        "c@example.com",
        "task",
        "",
        "ünïcødé ✓ 日本語",
        "with\ttab and 'quotes' \"double\"",
        "a",
        "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz",
    ];
    let mut checked = 0;
    for (i, ws) in texts.iter().enumerate() {
        for (j, st) in texts.iter().enumerate() {
            let source = calendar_sync::SourceKey {
                calendar: calendar_sync::CalendarKey {
                    workspace_id: (*ws).to_owned(),
                    calendar_id: texts[(i + j) % texts.len()].to_owned(),
                },
                source_type: (*st).to_owned(),
                source_id: texts[(i * 3 + j) % texts.len()].to_owned(),
            };
            for generation in [0, 1, 7, 65_536, i32::MAX] {
                let sql: String = client
                    .query_one(
                        "SELECT calendar_sync_event_id($1, $2, $3, $4, $5)",
                        &[
                            &source.calendar.workspace_id,
                            &source.calendar.calendar_id,
                            &source.source_type,
                            &source.source_id,
                            &generation,
                        ],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(
                    sql,
                    calendar_sync::testing::event_id(&source, generation),
                    "{source:?} generation {generation}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 320);
}

/// Outbox ids are UUIDv7 (time first), so primary-key inserts stay on recent
/// index pages however long the history.
#[tokio::test]
async fn outbox_ids_are_time_ordered_uuid_v7() {
    let t = TestDb::new().await;
    let client = t.client().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let op = Operation::CancelEvent(SourceKey {
            calendar: CalendarKey {
                workspace_id: "w1".into(),
                calendar_id: "c@example.com".into(),
            },
            source_type: "task".into(),
            source_id: format!("s{i}"),
        });
        ids.push(enqueue(&client, &op).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    for id in &ids {
        assert_eq!(id.get_version_num(), 7, "{id}");
        assert_eq!(id.as_bytes()[8] >> 6, 0b10, "RFC 4122 variant: {id}");
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let millis = |id: &uuid::Uuid| {
        let b = id.as_bytes();
        b[..6]
            .iter()
            .fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(
        now.abs_diff(u128::from(millis(&ids[0]))) < 60_000,
        "{}",
        ids[0]
    );
}

/// A claim token is held exactly while a row is PROCESSING; outcomes rely on
/// it to find their row through the primary key alone.
#[tokio::test]
async fn claim_token_is_held_exactly_while_processing() {
    let t = TestDb::new().await;
    let client = t.client().await;
    let id = t.insert("CANCEL_EVENT", cancel("w1", "cal", "s1")).await;
    for (sql, refused) in [
        (
            "UPDATE sync_outbox SET status = 'PROCESSING' WHERE id = $1",
            true,
        ),
        (
            "UPDATE sync_outbox SET claim_token = gen_random_uuid() WHERE id = $1",
            true,
        ),
        (
            "UPDATE sync_outbox SET status = 'PROCESSING', claim_token = gen_random_uuid() WHERE id = $1",
            false,
        ),
        (
            "UPDATE sync_outbox SET status = 'COMPLETED' WHERE id = $1",
            true,
        ),
        (
            "UPDATE sync_outbox SET status = 'COMPLETED', claim_token = NULL WHERE id = $1",
            false,
        ),
    ] {
        let result = client.execute(sql, &[&id]).await;
        match result {
            Err(e) if refused => assert_eq!(
                e.as_db_error().and_then(|d| d.constraint()),
                Some("sync_outbox_claim_token_held"),
                "{sql}: {e:?}"
            ),
            Ok(_) if !refused => {}
            other => panic!("{sql}: {other:?}"),
        }
    }
}

/// Plans made on young statistics are kept for a session: claims and
/// outcomes must reach rows through their own indexes whatever the
/// statistics said, never by reading a whole table (or every entry of the
/// PROCESSING index). Bindings and outbox start empty and never analyzed, the
/// plans are generic, and the counters of PostgreSQL itself tell.
#[tokio::test]
async fn claims_and_outcomes_never_scan_a_whole_table() {
    let t = TestDb::new().await;
    let admin = t.client().await;
    let client = t.client().await;
    client
        .batch_execute("SET plan_cache_mode = force_generic_plan")
        .await
        .unwrap();
    // 600 waiting, 120 of them claimed below; inserted in one statement.
    let payloads: Vec<serde_json::Value> = (0..600)
        .map(|i| upsert("w1", "w1@example.com", &format!("s{i}"), "x"))
        .collect();
    admin
        .execute(
            "INSERT INTO sync_outbox (operation, payload)
             SELECT 'UPSERT_EVENT', p FROM unnest($1::jsonb[]) WITH ORDINALITY AS x(p, n) ORDER BY n",
            &[&payloads],
        )
        .await
        .unwrap();
    let before = whole_table_scans(&admin).await;
    let claim = client.prepare(store::CLAIM).await.unwrap();
    let complete = client.prepare(store::COMPLETE_MANY).await.unwrap();
    for _ in 0..6 {
        let batch = store::claim(&client, &claim, 20, 1000, std::time::Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(batch.items.len(), 20);
        for item in &batch.items {
            let binding = item.binding.as_ref().expect("the claim reserves the id");
            let source = SourceKey {
                calendar: CalendarKey {
                    workspace_id: "w1".to_owned(),
                    calendar_id: "w1@example.com".to_owned(),
                },
                source_type: "task".to_owned(),
                source_id: item.payload["sourceId"].as_str().unwrap().to_owned(),
            };
            assert_eq!(
                binding.google_event_id,
                calendar_sync::testing::event_id(&source, 0)
            );
        }
        let done: Vec<store::Completion<'_>> = batch
            .items
            .iter()
            .map(|item| store::Completion {
                item,
                binding: None,
                result: None,
            })
            .collect();
        let ids = store::complete_many(&client, &complete, &done)
            .await
            .unwrap();
        assert_eq!(ids.len(), 20);
        let keys: Vec<i32> = batch.items.iter().map(|i| i.lock_key).collect();
        store::unlock_rows(&client, store::UNLOCK, &keys)
            .await
            .unwrap();
    }
    flush_statistics(&client).await;
    let after = whole_table_scans(&admin).await;
    assert_eq!(
        (after.0, after.1),
        (before.0, before.1),
        "whole-table scans (bindings, outbox) by claims and outcomes"
    );
    // The PENDING index is walked by each claim's page (20 rows, and the dead
    // entries of rows claimed before), not read whole by the statements that
    // write the rows the page found (600 waiting at first).
    let pending_read = after.2 - before.2;
    assert!(pending_read <= 6 * 100, "{pending_read}");
}

/// Makes this session's statistics visible to others now, not when it next idles.
async fn flush_statistics(client: &tokio_postgres::Client) {
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
}

/// Sequential scans of the bindings and of the outbox so far, and entries
/// read from the PENDING index (after the admin session's own statistics,
/// which did the inserts, have arrived).
async fn whole_table_scans(admin: &tokio_postgres::Client) -> (i64, i64, i64) {
    flush_statistics(admin).await;
    let row = admin
        .query_one(
            "SELECT sum(seq_scan) FILTER (WHERE relname = 'calendar_event_bindings')::int8,
                    sum(seq_scan) FILTER (WHERE relname = 'sync_outbox')::int8,
                    (SELECT idx_tup_read FROM pg_stat_user_indexes
                      WHERE indexrelname = 'sync_outbox_pending_idx')
               FROM pg_stat_user_tables",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}
