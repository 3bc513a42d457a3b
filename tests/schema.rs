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

/// V9: a commit notifies, once per transaction, while a worker is registered
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
