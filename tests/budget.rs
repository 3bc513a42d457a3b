//! The shared budget and the fair claim (`calendar_sync_claim`), at the SQL level:
//! bucket shapes, claims bounded by the buckets, round robin between tenants,
//! and a claim's cost bounded by what it hands out, not by what is blocked.

use std::time::Duration;

use calendar_sync::Budget;
use calendar_sync::testing as store;
use calendar_sync_tests::{TestDb, rebuild, upsert};

/// 60 calls a minute per connection, the project unbounded.
const SLOW: Budget = Budget {
    per_connection: 60,
    per_project: 1_000_000,
    window: Duration::from_secs(60),
};

async fn insert_upserts(t: &TestDb, workspace: &str, n: usize) {
    let payloads: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            upsert(
                workspace,
                &format!("{workspace}@example.com"),
                &format!("s{i}"),
                "x",
            )
        })
        .collect();
    t.client()
        .await
        .execute(
            "INSERT INTO sync_outbox (operation, payload)
             SELECT 'UPSERT_EVENT', p FROM unnest($1::jsonb[]) WITH ORDINALITY AS x(p, n) ORDER BY n",
            &[&payloads],
        )
        .await
        .unwrap();
}

async fn claim(
    client: &tokio_postgres::Client,
    limit: usize,
    budget: Option<Budget>,
) -> store::ClaimBatch {
    store::claim_within(client, store::CLAIM, limit, 1000, Duration::ZERO, budget)
        .await
        .unwrap()
}

fn workspaces(batch: &store::ClaimBatch) -> Vec<String> {
    batch
        .items
        .iter()
        .map(|i| i.payload["workspaceId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn buckets_never_let_a_window_hold_more_than_the_quota() {
    let t = TestDb::new().await;
    let client = t.client().await;
    for (quota, window) in [
        (600, 60.0),
        (10_000, 60.0),
        (120, 12.0),
        (2, 60.0),
        (60, 6.0),
    ] {
        let row = client
            .query_one(
                "SELECT * FROM calendar_sync_bucket_shape($1, $2)",
                &[&quota, &window],
            )
            .await
            .unwrap();
        let (burst, rate): (f64, f64) = (row.get(0), row.get(1));
        // Tokens taken over a window plus the lag allowance (a sixtieth of it).
        let most = burst + rate * window * 61.0 / 60.0;
        assert!(most <= f64::from(quota) + 1e-9, "{quota}/{window}: {most}");
        // From 60 a window on, the steady state uses at least 95 % of it.
        if quota >= 60 {
            assert!(
                rate * window >= 0.95 * f64::from(quota),
                "{quota}/{window}: {rate}"
            );
        }
        assert!((1.0..=100.0).contains(&burst));
    }
}

#[tokio::test]
async fn a_claim_hands_out_no_more_than_the_buckets_hold_and_says_when_to_come_back() {
    let t = TestDb::new().await;
    insert_upserts(&t, "busy", 50).await;
    let client = t.client().await;
    // 60 a minute: a burst of 1, then one a second or so.
    let first = claim(&client, 32, Some(SLOW)).await;
    assert_eq!(first.items.len(), 1, "the burst");
    let second = claim(&client, 32, Some(SLOW)).await;
    assert!(second.items.is_empty());
    let wait = second.budget_wait.expect("says when the next token is due");
    assert!(
        wait > Duration::from_millis(500) && wait <= Duration::from_millis(1100),
        "{wait:?}"
    );
    // Another tenant has its own bucket.
    insert_upserts(&t, "quiet", 3).await;
    let third = claim(&client, 32, Some(SLOW)).await;
    assert_eq!(workspaces(&third), ["quiet"]);
    // A call beyond an item's first pays from the same bucket.
    let paid = store::take_budget(&client, "busy", SLOW).await.unwrap();
    assert!(paid.is_some(), "busy has no token left");
    // Without a budget, everything due is claimed.
    let unbounded = claim(&client, 100, None).await;
    assert_eq!(unbounded.items.len(), 49 + 2);
}

#[tokio::test]
async fn the_project_bucket_is_shared_by_every_tenant() {
    let t = TestDb::new().await;
    for w in 0..10 {
        insert_upserts(&t, &format!("w{w}"), 20).await;
    }
    let client = t.client().await;
    // 120 a minute for the project: a burst of 2.
    let budget = Budget {
        per_connection: 600,
        per_project: 120,
        window: Duration::from_secs(60),
    };
    let batch = claim(&client, 32, Some(budget)).await;
    assert_eq!(batch.items.len(), 2);
    let dry = claim(&client, 32, Some(budget)).await;
    assert!(dry.items.is_empty() && dry.budget_wait.is_some());
}

#[tokio::test]
async fn claims_go_round_robin_between_tenants() {
    let t = TestDb::new().await;
    insert_upserts(&t, "a", 100).await;
    insert_upserts(&t, "b", 5).await;
    insert_upserts(&t, "c", 5).await;
    let client = t.client().await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let batch = claim(&client, 4, None).await;
        seen.extend(workspaces(&batch));
    }
    // A's backlog, inserted first, does not come before B's and C's items.
    assert_eq!(
        seen,
        ["a", "a", "a", "a", "b", "b", "b", "b", "c", "c", "c", "c"]
    );
}

/// Sends a session's statistics now (else they wait up to a second).
async fn flush_statistics(client: &tokio_postgres::Client) {
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
}

/// Index entries of the outbox read so far, once `session`'s have arrived.
async fn index_reads(admin: &tokio_postgres::Client, session: &tokio_postgres::Client) -> i64 {
    flush_statistics(session).await;
    flush_statistics(admin).await;
    admin
        .query_one(
            "SELECT sum(idx_tup_read)::int8 FROM pg_stat_user_indexes WHERE relname = 'sync_outbox'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_claim_passes_any_number_of_blocked_rows_at_a_bounded_cost() {
    let t = TestDb::new().await;
    let admin = t.client().await;
    // A REBUILD_ALL in flight, 5,000 rows of its calendar behind it, and a
    // tenant that has no budget left with 5,000 more.
    t.insert("REBUILD_ALL", rebuild("fenced", "fenced@example.com"))
        .await;
    admin
        .batch_execute(
            "UPDATE sync_outbox SET status = 'PROCESSING', claim_token = gen_random_uuid()",
        )
        .await
        .unwrap();
    insert_upserts(&t, "fenced", 5000).await;
    insert_upserts(&t, "dry", 5000).await;
    insert_upserts(&t, "free", 3).await;
    let client = t.client().await;
    let dry_budget = Budget {
        per_connection: 60,
        ..SLOW
    };
    // Spend dry's burst, and free's (then let free's bucket refill).
    client
        .batch_execute(
            "INSERT INTO calendar_sync_budget VALUES ('c', 'dry', 0, now() + interval '1 hour'),
                                                     ('c', 'fenced', 0, now() + interval '1 hour')",
        )
        .await
        .unwrap();
    let before = index_reads(&admin, &client).await;
    let batch = claim(&client, 32, Some(dry_budget)).await;
    let after = index_reads(&admin, &client).await;
    assert_eq!(workspaces(&batch), ["free"], "the burst of free's bucket");
    let read = after - before;
    println!("index entries read by a claim past 10,000 blocked rows: {read}");
    assert!(read < 100, "{read} index entries read");
}
