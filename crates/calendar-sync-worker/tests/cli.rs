//! The real binary, driven as a process against a real PostgreSQL and the fake Google.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use calendar_sync_tests::{TestDb, WORKER_KEY_B64 as KEY, free_port, upsert};
use fake_google::FakeGoogle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{command, run, text};

#[test]
fn bad_configuration_is_one_clear_line_and_exit_2() {
    let db = (
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["status"], vec![], "DATABASE_URL is not set"),
        (
            vec!["run"],
            vec![db, ("CALENDAR_SYNC_BATCH_SIZE", "abc")],
            "CALENDAR_SYNC_BATCH_SIZE",
        ),
        (
            vec!["run"],
            vec![db, ("CALENDAR_SYNC_BATCH_SIZE", "0")],
            "CALENDAR_SYNC_BATCH_SIZE",
        ),
        (
            vec!["run"],
            vec![db, ("CALENDAR_SYNC_POLL_INTERVAL_MS", "-5")],
            "CALENDAR_SYNC_POLL_INTERVAL_MS",
        ),
        (
            vec!["run"],
            vec![db, ("CALENDAR_SYNC_SETTLE_MS", "3600001")],
            "CALENDAR_SYNC_SETTLE_MS",
        ),
        (
            vec!["status"],
            vec![db, ("LOG_FORMAT", "xml")],
            "LOG_FORMAT",
        ),
        (
            vec!["run"],
            vec![db, ("CALENDAR_SYNC_PROJECT_REQUESTS_PER_MINUTE", "0")],
            "CALENDAR_SYNC_PROJECT_REQUESTS_PER_MINUTE",
        ),
        (
            vec!["run"],
            vec![db, ("CALENDAR_SYNC_HTTP_ADDR", "here")],
            "CALENDAR_SYNC_HTTP_ADDR",
        ),
        (vec!["status", "--bogus"], vec![db], "--bogus"),
        (vec!["dashboard"], vec![], "DATABASE_URL is not set"),
        (
            vec!["dashboard"],
            vec![db, ("CALENDAR_SYNC_HTTP_ADDR", "here")],
            "CALENDAR_SYNC_HTTP_ADDR",
        ),
        (
            vec!["dashboard"],
            vec![("DATABASE_URL", "not a url at all ::")],
            "DATABASE_URL",
        ),
        (
            vec!["run"],
            vec![db, ("TOKEN_ENCRYPTION_KEY", "c2hvcnQ=")],
            "TOKEN_ENCRYPTION_KEY must be base64 of 32 bytes",
        ),
        (vec!["run"], vec![db], "TOKEN_ENCRYPTION_KEY"),
        (
            vec!["run"],
            vec![db, ("TOKEN_ENCRYPTION_KEY", KEY)],
            "GOOGLE_CLIENT_ID is not set",
        ),
        (
            vec!["run"],
            vec![
                db,
                ("TOKEN_ENCRYPTION_KEY", KEY),
                ("GOOGLE_CLIENT_ID", "x"),
                ("GOOGLE_CLIENT_SECRET", "y"),
                ("GOOGLE_OAUTH_TOKEN_URL", "ftp://x"),
            ],
            "GOOGLE_OAUTH_TOKEN_URL must be an http(s) URL",
        ),
        (
            vec!["status"],
            vec![("DATABASE_URL", "not a url at all ::")],
            "DATABASE_URL",
        ),
        (vec!["drain"], vec![db], "--once"),
        (
            vec!["run"],
            vec![db, ("CALENDAR_SYNC_MAX_ATTEMPTS", "0")],
            "CALENDAR_SYNC_MAX_ATTEMPTS",
        ),
        // The first design's name is read too, but never beside the new one.
        (
            vec!["run"],
            vec![
                db,
                ("CALENDAR_SYNC_MAX_ATTEMPTS", "3"),
                ("CALENDAR_SYNC_MAX_RETRIES", "4"),
            ],
            "max-attempts",
        ),
    ];
    for (args, env, expected) in cases {
        let out = run(&args, &env);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.contains(expected), "{expected:?} in {stderr:?}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
}

/// A defaults file that cannot be read, is not JSON, or holds a bad field
/// stops the worker before it starts: one line naming the file and the
/// field, exit code 2.
#[test]
fn a_bad_event_defaults_file_is_one_line_naming_file_and_field_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("event-defaults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        path.display().to_string()
    };
    let missing = dir.join("missing.json").display().to_string();
    let cases = [
        (missing.clone(), "cannot read it".to_owned()),
        (
            file("broken.json", "{\"BLOCKER\": "),
            "is not JSON".to_owned(),
        ),
        (
            file(
                "transparency.json",
                r#"{"BLOCKER_DEADLINE": {"transparency": "busy"}}"#,
            ),
            r#"BLOCKER_DEADLINE.transparency: expected "opaque" or "transparent", got "busy""#
                .to_owned(),
        ),
        (
            file("colour.json", r#"{"BLOCKER_DEADLINE": {"colorId": "12"}}"#),
            "BLOCKER_DEADLINE.colorId".to_owned(),
        ),
        (
            file("typo.json", r#"{"BLOCKER_DEADLINE": {"colourId": "1"}}"#),
            "BLOCKER_DEADLINE.colourId: is not a field defaults may set".to_owned(),
        ),
        (
            file(
                "reminders.json",
                r#"{"BLOCKER_DEADLINE": {"reminders": {"useDefault": false, "overrides": [
                    {"method": "popup", "minutes": 1}, {"method": "popup", "minutes": 2},
                    {"method": "popup", "minutes": 3}, {"method": "popup", "minutes": 4},
                    {"method": "popup", "minutes": 5}, {"method": "popup", "minutes": 6}]}}}"#,
            ),
            "BLOCKER_DEADLINE.reminders.overrides: has 6 reminders; Google allows at most 5"
                .to_owned(),
        ),
    ];
    for (path, expected) in cases {
        let env = [
            (
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
            ("TOKEN_ENCRYPTION_KEY", KEY),
            ("GOOGLE_CLIENT_ID", "x"),
            ("GOOGLE_CLIENT_SECRET", "y"),
            ("CALENDAR_SYNC_EVENT_DEFAULTS_FILE", path.as_str()),
        ];
        let out = run(&["run"], &env);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        assert!(
            stderr.contains(&format!("CALENDAR_SYNC_EVENT_DEFAULTS_FILE {path}: ")),
            "{stderr}"
        );
        assert!(stderr.contains(&expected), "{expected:?} in {stderr:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_documents_each_variable_with_its_default() {
    let out = run(&["run", "--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for (var, default) in [
        ("CALENDAR_SYNC_BATCH_SIZE", "32"),
        ("CALENDAR_SYNC_CONCURRENCY", "32"),
        ("CALENDAR_SYNC_POLL_INTERVAL_MS", "5000"),
        ("CALENDAR_SYNC_SETTLE_MS", "0"),
        ("CALENDAR_SYNC_MAX_ATTEMPTS", "5"),
        ("CALENDAR_SYNC_HTTP_ADDR", "127.0.0.1:9464"),
        ("LOG_FORMAT", "text"),
    ] {
        assert!(help.contains(var), "{var} in --help");
        assert!(
            help.contains(&format!("[default: {default}]")),
            "default {default} in --help"
        );
    }
    for var in [
        "DATABASE_URL",
        "GOOGLE_CLIENT_ID",
        "GOOGLE_CLIENT_SECRET",
        "TOKEN_ENCRYPTION_KEY",
        "GOOGLE_CALENDAR_API_URL",
        "GOOGLE_OAUTH_TOKEN_URL",
    ] {
        assert!(help.contains(var), "{var} in --help");
    }
}

#[tokio::test]
async fn migrate_twice_is_harmless() {
    let t = TestDb::empty().await;
    let url = t.url();
    let first = run(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains(&format!(
        "applied {} migration(s)",
        calendar_sync::testing::known_migrations()
    )));
    let second = run(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(second.status.code(), Some(0));
    assert!(text(&second.stdout).contains("applied 0 migration(s)"));
}

#[tokio::test]
async fn status_requeue_cleanup_and_connections_do_what_they_say() {
    let t = TestDb::new().await;
    let url = t.url();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("TOKEN_ENCRYPTION_KEY", KEY),
    ];
    let dead = t
        .insert("UPSERT_EVENT", upsert("w1", "c1", "s1", "v"))
        .await;
    let client = t.client().await;
    client
        .execute(
            "UPDATE sync_outbox SET status = 'DEAD_LETTER', attempts = 5, last_error = '[google_404_notFound] Not Found' WHERE id = $1",
            &[&dead],
        )
        .await
        .unwrap();
    t.insert(
        "CANCEL_EVENT",
        calendar_sync_tests::cancel("w1", "c1", "s2"),
    )
    .await;

    let out = run(&["status"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("PENDING") && table.contains("google_404_notFound"),
        "{table}"
    );
    let out = run(&["status", "--json"], &env);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["counts"]["DEAD_LETTER"], 1);
    assert_eq!(json["dead_letters"][0]["workspace_id"], "w1");

    let id = dead.to_string();
    let out = run(&["requeue", &id], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("requeued 1 item(s)"));
    assert_eq!(t.row(dead).await.status, "PENDING");
    assert_eq!(t.row(dead).await.attempts, 0);
    let out = run(&["requeue", &id], &env);
    assert_eq!(out.status.code(), Some(1), "not dead any more");
    client
        .execute(
            "UPDATE sync_outbox SET status = 'DEAD_LETTER' WHERE id = $1",
            &[&dead],
        )
        .await
        .unwrap();
    let out = run(&["requeue", "--dead-letter", "--workspace", "w1"], &env);
    assert!(text(&out.stdout).contains("requeued 1 item(s)"));

    client
        .execute(
            "UPDATE sync_outbox SET status = 'COMPLETED', updated_at = now() - interval '40 days' WHERE id = $1",
            &[&dead],
        )
        .await
        .unwrap();
    let out = run(&["cleanup", "--older-than-days", "30"], &env);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("deleted 1 finished item(s)"));

    let token = "1//0gTOKEN-from-stdin-never-argv";
    let mut child = command(
        &[
            "connections",
            "put",
            "--workspace",
            "w9",
            "--email",
            "w9@example.com",
        ],
        &env,
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stored: String = client
        .query_one(
            "SELECT refresh_token_encrypted FROM google_connections WHERE workspace_id = 'w9'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("v1:") && !stored.contains(token));
    let cipher = calendar_sync::TokenCipher::new(KEY, "").unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&cipher.decrypt("w9", &stored).unwrap()),
        token
    );
    let out = run(&["connections", "list"], &env);
    let listing = text(&out.stdout);
    assert!(
        listing.contains("w9@example.com") && listing.contains("yes"),
        "{listing}"
    );
    for printed in [listing, text(&out.stderr), table] {
        assert!(!printed.contains(token) && !printed.contains(&stored));
    }
}

async fn http_get(port: u16, path: &str) -> (u16, String) {
    http(port, &format!("GET {path} HTTP/1.1\r\n")).await
}

async fn http_post(port: u16, path: &str) -> (u16, String) {
    http(
        port,
        &format!("POST {path} HTTP/1.1\r\nContent-Length: 0\r\n"),
    )
    .await
}

/// Sends one request (its request line and any headers) and reads the whole
/// response: (status, raw response).
async fn http(port: u16, head: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!("{head}Host: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

#[tokio::test]
async fn run_serves_health_and_metrics_and_stops_cleanly_on_sigterm() {
    let g = FakeGoogle::start().await;
    g.add_client("client-1", "secret-1");
    g.add_refresh_token("rt-1", "client-1", "w1@example.com");
    g.add_calendar("w1@example.com");
    g.set_latency(Duration::from_millis(30));
    let t = TestDb::new().await;
    let cipher = calendar_sync::TokenCipher::new(KEY, "").unwrap();
    calendar_sync::ops::put_connection(
        &t.db,
        &cipher,
        "w1",
        "w1@example.com",
        &secrecy::SecretString::from("rt-1"),
    )
    .await
    .unwrap();
    for i in 0..300 {
        t.insert(
            "UPSERT_EVENT",
            upsert("w1", "w1@example.com", &format!("s{i}"), "v"),
        )
        .await;
    }
    // A dead letter, for the dashboard's bearer-authenticated requeue.
    let dead = t
        .insert(
            "UPSERT_EVENT",
            upsert("w1", "w1@example.com", "dead-1", "v"),
        )
        .await;
    t.client()
        .await
        .execute(
            "UPDATE sync_outbox SET status = 'DEAD_LETTER', last_error = '[bad_request] no', processed_at = now()
              WHERE id = $1",
            &[&dead],
        )
        .await
        .unwrap();
    const DASHBOARD_TOKEN: &str = "run-test-dashboard-token-0042";
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let url = t.url();
    let api = g.calendar_base_url();
    let token_url = g.token_url();
    let mut child = command(
        &["run"],
        &[
            ("DATABASE_URL", &url),
            ("TOKEN_ENCRYPTION_KEY", KEY),
            ("GOOGLE_CLIENT_ID", "client-1"),
            ("GOOGLE_CLIENT_SECRET", "secret-1"),
            ("GOOGLE_CALENDAR_API_URL", &api),
            ("GOOGLE_OAUTH_TOKEN_URL", &token_url),
            ("CALENDAR_SYNC_HTTP_ADDR", &addr),
            ("CALENDAR_SYNC_CONCURRENCY", "4"),
            ("CALENDAR_SYNC_SHUTDOWN_GRACE_MS", "5000"),
            ("CALENDAR_SYNC_DASHBOARD_TOKEN", DASHBOARD_TOKEN),
            ("LOG_FORMAT", "json"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    t.wait_for(Duration::from_secs(20), "some items completed", || async {
        t.count("COMPLETED").await >= 20
    })
    .await;
    let (status, _) = http_get(port, "/healthz").await;
    assert_eq!(status, 200);
    let (status, _) = http_get(port, "/readyz").await;
    assert_eq!(status, 200);
    let (status, metrics) = http_get(port, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "calendar_sync_items_total",
        "calendar_sync_google_calls_total",
        "calendar_sync_attempt_duration_seconds_bucket",
        "calendar_sync_outbox_items",
        "calendar_sync_oldest_pending_age_seconds",
        "calendar_sync_token_refreshes_total",
        "calendar_sync_invalid_connections",
    ] {
        assert!(metrics.contains(name), "{name} in /metrics");
    }
    // The read-only dashboard, at /dashboard/ and /dashboard.
    for path in ["/dashboard/", "/dashboard"] {
        let (status, page) = http_get(port, path).await;
        assert_eq!(status, 200, "{path}: {page}");
        assert!(page.contains("data-status=\"COMPLETED\""), "{path}: {page}");
        assert!(
            page.contains("href=\"/dashboard/items\""),
            "{path}: links under the prefix"
        );
        let lower = page.to_ascii_lowercase();
        assert!(
            lower.contains("content-security-policy: default-src 'none'"),
            "{page}"
        );
        assert!(lower.contains("cache-control: no-store"), "{page}");
    }
    let (status, page) = http_get(port, "/dashboard/items?q=s7").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("/dashboard/items/"),
        "search by source id: {page}"
    );
    let envelope: String = t
        .client()
        .await
        .query_one(
            "SELECT refresh_token_encrypted FROM google_connections WHERE workspace_id = 'w1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!page.contains(&envelope) && !page.contains("rt-1"));
    let (status, _) = http_post(port, "/dashboard/items").await;
    assert_eq!(status, 405, "the items list takes no POST");
    // Issue 16: a write needs the token; with the bearer, the dead letter is
    // requeued (and then drained like any item).
    let requeue = format!("/dashboard/items/{dead}/requeue");
    let (status, _) = http_post(port, &requeue).await;
    assert_eq!(status, 401, "no bearer, no session");
    assert_eq!(t.row(dead).await.status, "DEAD_LETTER");
    let (status, response) = http(
        port,
        &format!(
            "POST {requeue} HTTP/1.1\r\nAuthorization: Bearer {DASHBOARD_TOKEN}\r\nContent-Length: 0\r\n"
        ),
    )
    .await;
    assert_eq!(status, 303, "{response}");
    assert!(response.contains("done=requeued-1"), "{response}");
    let row = t.row(dead).await;
    assert_ne!(row.status, "DEAD_LETTER");
    // Completed already, or waiting with the requeue's mark.
    assert!(
        row.status == "COMPLETED"
            || row
                .last_error
                .as_deref()
                .unwrap_or("")
                .starts_with("requeued after: [bad_request]"),
        "{row:?}"
    );

    // SIGTERM mid-load: exit 0 within the grace period, nothing left behind.
    assert!(t.count("PENDING").await > 0, "still under load");
    let (status, stderr) = terminate(&mut child, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(t.count("PROCESSING").await, 0);
    assert_eq!(t.held_row_locks().await, 0);
    assert!(
        stderr.lines().all(|l| l.starts_with('{')),
        "LOG_FORMAT=json: {stderr}"
    );
    assert!(!stderr.contains("secret-1") && !stderr.contains("rt-1"));
    assert!(!stderr.contains(DASHBOARD_TOKEN));
}

/// Sends SIGTERM to `child` and returns its exit status and stderr, failing
/// unless it exits within `within`.
async fn terminate(
    child: &mut std::process::Child,
    within: Duration,
) -> (std::process::ExitStatus, String) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < within, "exited within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).unwrap();
    }
    (status, stderr)
}

/// The status count the overview shows on its card for `status`.
fn card_count(page: &str, status: &str) -> Option<String> {
    let card = page.split(&format!("data-status=\"{status}\"")).nth(1)?;
    let card = &card[..card.find("</a>")?];
    let count = card.split("class=\"count\">").nth(1)?;
    Some(count[..count.find('<')?].to_owned())
}

/// `dashboard` serves the dashboard, /healthz and /readyz with only
/// DATABASE_URL, claims nothing (a due item stays PENDING), and stops on
/// SIGTERM with exit 0.
#[tokio::test]
async fn dashboard_serves_the_dashboard_alone_and_claims_nothing() {
    let t = TestDb::new().await;
    let id = t
        .insert("UPSERT_EVENT", upsert("w1", "w1@example.com", "s1", "v"))
        .await;
    let due: bool = t
        .client()
        .await
        .query_one(
            "SELECT next_attempt_at <= now() FROM sync_outbox WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(due, "the item is due: a drainer would claim it at once");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let url = t.url();
    let mut child = command(
        &["dashboard"],
        &[
            ("DATABASE_URL", &url),
            ("CALENDAR_SYNC_HTTP_ADDR", &addr),
            // What `run` would need, and `dashboard` does not read.
            ("TOKEN_ENCRYPTION_KEY", "not a key"),
            ("CALENDAR_SYNC_BATCH_SIZE", "abc"),
            ("LOG_FORMAT", "json"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_until_listening(&mut child, port).await;

    let (status, body) = http_get(port, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(port, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("ready\n"), "{body}");
    for path in ["/dashboard/", "/dashboard"] {
        let (status, page) = http_get(port, path).await;
        assert_eq!(status, 200, "{path}: {page}");
        assert_eq!(
            card_count(&page, "PENDING").as_deref(),
            Some("1"),
            "{path}: {page}"
        );
        for other in ["PROCESSING", "COMPLETED", "DEAD_LETTER"] {
            assert_eq!(
                card_count(&page, other).as_deref(),
                Some("0"),
                "{path} {other}: {page}"
            );
        }
        assert!(
            page.contains("href=\"/dashboard/items\""),
            "{path}: links under the prefix"
        );
    }
    let (status, page) = http_get(port, "/dashboard/items?q=s1").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(&id.to_string()),
        "search by source id: {page}"
    );
    let (status, _) = http_get(port, "/metrics").await;
    assert_eq!(status, 404, "no metrics: nothing is drained here");

    // Past any poll interval, the due item is still untouched.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let row = t.row(id).await;
    assert_eq!(row.status, "PENDING");
    assert_eq!(row.attempts, 0, "never claimed");
    assert_eq!(t.held_row_locks().await, 0);

    let (status, stderr) = terminate(&mut child, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.lines().all(|l| l.starts_with('{')),
        "LOG_FORMAT=json: {stderr}"
    );
    assert_eq!(t.counts().await.get("PENDING"), Some(&1), "nothing changed");
    let row = t.row(id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("PENDING", 0));
}

/// Issue 16: with CALENDAR_SYNC_DASHBOARD_TOKEN, the served dashboard
/// requeues a dead letter for a POST with `Authorization: Bearer`; without
/// it, the same POST is refused and nothing changes.
#[tokio::test]
async fn the_dashboard_requeues_a_dead_letter_for_the_bearer() {
    const DASHBOARD_TOKEN: &str = "worker-test-dashboard-token-42";
    let t = TestDb::new().await;
    let id = t
        .insert("UPSERT_EVENT", upsert("w1", "w1@example.com", "s1", "v"))
        .await;
    t.client()
        .await
        .execute(
            "UPDATE sync_outbox SET status = 'DEAD_LETTER', last_error = '[bad_request] no', processed_at = now()
              WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let url = t.url();
    for token in [None, Some(DASHBOARD_TOKEN)] {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut env = vec![
            ("DATABASE_URL", url.as_str()),
            ("CALENDAR_SYNC_HTTP_ADDR", addr.as_str()),
        ];
        if let Some(token) = token {
            env.push(("CALENDAR_SYNC_DASHBOARD_TOKEN", token));
        }
        let mut child = command(&["dashboard"], &env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until_listening(&mut child, port).await;
        let (status, response) = http(
            port,
            &format!(
                "POST /dashboard/items/{id}/requeue HTTP/1.1\r\nAuthorization: Bearer {DASHBOARD_TOKEN}\r\nContent-Length: 0\r\n"
            ),
        )
        .await;
        if token.is_none() {
            assert_eq!(status, 403, "read-only: {response}");
            assert!(
                response.contains("CALENDAR_SYNC_DASHBOARD_TOKEN"),
                "{response}"
            );
            assert_eq!(t.row(id).await.status, "DEAD_LETTER", "nothing changed");
        } else {
            assert_eq!(status, 303, "{response}");
            assert!(
                response.contains(&format!("location: /dashboard/items/{id}?done=requeued-1")),
                "{response}"
            );
            let row = t.row(id).await;
            assert_eq!((row.status.as_str(), row.attempts), ("PENDING", 0));
            // Without the bearer: 401, and a wrong one too.
            let (status, _) = http_post(port, &format!("/dashboard/items/{id}/requeue")).await;
            assert_eq!(status, 401);
        }
        let (status, stderr) = terminate(&mut child, Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(0), "{stderr}");
        assert!(
            !stderr.contains(DASHBOARD_TOKEN),
            "the token in the log: {stderr}"
        );
    }
}

/// Issue 13 §4: a new TOKEN_ENCRYPTION_KEY without the old one is reported at
/// start-up in one line, in `/readyz` and in `status`; nothing is invalidated.
#[tokio::test]
async fn a_forgotten_old_key_is_one_line_at_start_up_in_readyz_and_in_status() {
    const NEW_KEY: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
    let t = TestDb::new().await;
    let old = calendar_sync::TokenCipher::new(KEY, "").unwrap();
    calendar_sync::ops::put_connection(
        &t.db,
        &old,
        "w1",
        "w1@example.com",
        &secrecy::SecretString::from("rt-1"),
    )
    .await
    .unwrap();
    let url = t.url();
    let kid = old.current_key_id().to_owned();
    let out = run(
        &["status"],
        &[("DATABASE_URL", &url), ("TOKEN_ENCRYPTION_KEY", NEW_KEY)],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("KEYS: stored refresh tokens are sealed with key id(s) no configured key has: {kid} (1 connection(s))")),
        "{stdout}"
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = command(
        &["run"],
        &[
            ("DATABASE_URL", &url),
            ("TOKEN_ENCRYPTION_KEY", NEW_KEY),
            ("GOOGLE_CLIENT_ID", "client-1"),
            ("GOOGLE_CLIENT_SECRET", "secret-1"),
            ("CALENDAR_SYNC_HTTP_ADDR", &addr),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut readyz = (0, String::new());
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            readyz = http_get(port, "/readyz").await;
            break;
        }
    }
    assert_eq!(readyz.0, 503, "{}", readyz.1);
    assert!(readyz.1.contains(&kid), "{}", readyz.1);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("no configured key has"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(&kid), "{stderr}");
    assert!(
        calendar_sync::ops::list_connections(&t.db).await.unwrap()[0].is_valid,
        "nothing marked invalid"
    );
}

/// Waits (up to 10 s) until the `dashboard` child accepts connections on
/// `port`, failing if it exits first.
async fn wait_until_listening(child: &mut std::process::Child, port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "dashboard exited early"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("dashboard listens on 127.0.0.1:{port}");
}
