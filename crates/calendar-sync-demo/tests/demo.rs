//! The demo end to end: against the local server (or DATABASE_URL), and
//! against a throwaway cluster when the server binaries are installed.

use calendar_sync_demo::{DbChoice, run, run_with};
use tokio_postgres::NoTls;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The scratch database's name, as printed.
fn scratch_name(output: &str) -> String {
    let at = output
        .find("scratch database calendar_sync_demo_")
        .expect("the scratch database is named");
    output[at + "scratch database ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// What every run must show, whatever the database.
fn assert_story(output: &str) {
    // The agenda, sorted, with the rebuild's repairs and the producer's changes.
    let agenda = &output
        [output.find("AGENDA").expect("agenda")..output.find("OUTBOX STATUS").expect("status")];
    let product = &agenda[agenda.find("product@acme.example\n").unwrap()
        ..agenda.find("ops@acme.example\n").unwrap()];
    let titles: Vec<&str> = product.lines().skip(1).map(|l| l.trim()).collect();
    assert_eq!(titles.len(), 6, "{product}");
    assert!(
        titles
            .iter()
            .any(|l| l.ends_with("  Security review sign-off")),
        "re-created: {product}"
    );
    assert!(
        titles.iter().any(|l| l.ends_with("  Beta launch")),
        "edit reverted: {product}"
    );
    assert!(!product.contains("Q3??"), "{product}");
    assert!(
        !product.contains("Draft pricing page copy"),
        "cancelled: {product}"
    );
    assert!(
        titles
            .iter()
            .any(|l| l.contains("16:00-17:00  Complete user interviews")),
        "moved: {product}"
    );
    assert!(
        titles
            .iter()
            .any(|l| l.contains("all day      Team offsite (through")),
        "{product}"
    );
    let mut sorted = titles.clone();
    sorted.sort_by_key(|l| {
        (
            l[4..14].to_owned(),
            !l.contains("all day"),
            l[16..21].to_owned(),
        )
    });
    assert_eq!(titles, sorted, "sorted by date and time");
    let ops = &agenda[agenda.find("ops@acme.example\n").unwrap()
        ..agenda.find("planning@globex.example\n").unwrap()];
    assert_eq!(
        ops.lines().count(),
        7,
        "six release-train events after the rate limits: {ops}"
    );
    assert!(
        agenda.contains("planning@globex.example\n  (nothing"),
        "{agenda}"
    );

    // Three inserts were rate-limited; an item may meet more than one of the
    // faults when its retry overtakes the burst, so 1 to 3 items were retried.
    let first = output
        .lines()
        .find(|l| l.contains("completed ("))
        .expect("first drain summary");
    let retried: u32 = first.split("completed (").nth(1).unwrap()[..1]
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retried), "{first}");
    assert!(
        first.contains(": 13 completed (")
            && first.ends_with("after a rate-limit retry), 1 superseded, 4 dead letters"),
        "{first}"
    );
    assert!(
        output.contains(
            "REBUILD_ALL repaired the drift: created 1, updated 1, deleted 0, unchanged 4"
        ),
        "{output}"
    );

    // The status table and the expected dead letters.
    assert!(
        output.contains("STATUS              ITEMS") || output.contains("STATUS       "),
        "{output}"
    );
    for (status, count) in [
        ("PENDING", 0),
        ("PROCESSING", 0),
        ("COMPLETED", 16),
        ("DEAD_LETTER", 4),
        ("SUPERSEDED", 1),
    ] {
        let line = output
            .lines()
            .find(|l| l.starts_with(&format!("{status} ")))
            .unwrap_or_else(|| panic!("{status} row: {output}"));
        assert!(line.ends_with(&format!(" {count}")), "{line}");
    }
    let explained = &output[output
        .find("The dead letters are the expected ones:")
        .expect("explanations")..];
    let mut globex = 0;
    let mut missing = 0;
    for line in explained
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
    {
        let n: i64 = line
            .split('(')
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        if line.starts_with("  globex / oauth_invalid_grant")
            || line.starts_with("  globex / connection_invalid")
        {
            globex += n;
        } else if line.starts_with("  acme-ops / calendar_not_found") {
            missing += n;
        } else {
            panic!("unexpected dead letter group: {line}");
        }
        assert!(!line.contains("not part of the demo's plan"), "{line}");
    }
    assert_eq!((globex, missing), (3, 1), "{explained}");
    assert!(
        output.contains("globex                   planning@globex.example          NO"),
        "{output}"
    );

    // No secret: refresh tokens start with 1//, the client secret with GOCSPX-.
    assert!(
        !output.contains("1//") && !output.contains("GOCSPX"),
        "{output}"
    );
    assert!(
        output.contains("Cleaned up: dropped calendar_sync_demo_"),
        "{output}"
    );
}

async fn database_exists(name: &str) -> bool {
    let (client, conn) = tokio_postgres::connect(&database_url(), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_against_the_local_server_and_cleans_up() {
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    let result = run(&mut out).await;
    let output = String::from_utf8(out).unwrap();
    println!("{output}");
    result.unwrap_or_else(|e| panic!("demo failed: {e}\n{output}"));
    assert!(started.elapsed().as_secs() < 30);
    assert_story(&output);
    let name = scratch_name(&output);
    assert!(!database_exists(&name).await, "{name} was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_on_a_throwaway_cluster_and_removes_it() {
    let mut out = Vec::new();
    let result = run_with(DbChoice::Throwaway, &mut out).await;
    let output = String::from_utf8(out).unwrap();
    if result.is_err() && output.contains("no PostgreSQL server binaries") {
        eprintln!("skipped: initdb/pg_ctl are not installed");
        return;
    }
    println!("{output}");
    result.unwrap_or_else(|e| panic!("demo failed: {e}\n{output}"));
    assert_story(&output);
    assert!(
        output.contains("stopped and deleted the throwaway cluster"),
        "{output}"
    );
    let dir = output
        .split_whitespace()
        .find(|w| w.contains("calendar-sync-demo-"))
        .expect("the cluster's directory is printed");
    assert!(!std::path::Path::new(dir).exists(), "{dir} was removed");
}

#[tokio::test]
async fn a_bad_url_fails_with_one_line() {
    let mut out = Vec::new();
    let e = run_with(
        DbChoice::Url("postgres://postgres@127.0.0.1:1/postgres".into()),
        &mut out,
    )
    .await
    .unwrap_err();
    let message = e.to_string();
    assert!(!message.contains('\n'), "{message}");
    assert!(
        message.starts_with("cannot connect to PostgreSQL at 127.0.0.1:1, database \"postgres\"")
            && message.contains("Connection refused"),
        "{message}"
    );
}
