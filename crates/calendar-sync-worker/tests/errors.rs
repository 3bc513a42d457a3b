//! Errors an operator sees name what was tried (host:port, database, user, the
//! token endpoint) and the underlying cause, never a secret.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use calendar_sync_tests::{
    PASSWORD, PASSWORD_USER, TestDb, TlsCluster, WORKER_KEY_B64 as KEY, free_port, upsert,
};

mod common;
use common::{command, run};

/// `status` against `url`: exit 1 and its stderr.
fn status_fails(url: &str) -> String {
    let out = run(&["status"], &[("DATABASE_URL", url)]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    println!("{stderr}");
    stderr
}

#[test]
fn connection_refused_names_host_port_and_the_os_error() {
    let e = status_fails("postgres://postgres@127.0.0.1:1/postgres?sslmode=disable");
    assert!(
        e.contains("127.0.0.1:1") && e.contains("\"postgres\""),
        "{e}"
    );
    assert!(e.contains("Connection refused"), "{e}");
}

/// What `run` and `drain --once` need besides the database.
fn drainer_env(url: &str, http_addr: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", url.to_owned()),
        ("TOKEN_ENCRYPTION_KEY", KEY.to_owned()),
        ("GOOGLE_CLIENT_ID", "client-1".to_owned()),
        ("GOOGLE_CLIENT_SECRET", "secret-never-printed".to_owned()),
        ("CALENDAR_SYNC_HTTP_ADDR", http_addr.to_owned()),
    ]
}

#[test]
fn drain_once_against_a_closed_port_names_host_port_and_the_os_error() {
    let target = format!("127.0.0.1:{}", free_port());
    let url = format!("postgres://postgres@{target}/postgres?sslmode=disable");
    let env = drainer_env(&url, "127.0.0.1:0");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run(&["drain", "--once"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(
        line.contains(&target) && line.contains("Connection refused"),
        "{stderr}"
    );
    assert!(!stderr.contains("never-printed"), "{stderr}");
}

/// `run` keeps trying a database that is not there, and says in its log what
/// it tried and why that failed.
#[test]
fn run_against_a_closed_port_logs_host_port_and_the_os_error() {
    let target = format!("127.0.0.1:{}", free_port());
    let url = format!("postgres://postgres@{target}/postgres?sslmode=disable");
    let http = format!("127.0.0.1:{}", free_port());
    let mut cmd = command(&["run"], &[]);
    cmd.envs(drainer_env(&url, &http))
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start the worker");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("drainer lost the database") => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let line = found.unwrap_or_else(|| panic!("no reconnect warning in:\n{}", seen.join("\n")));
    println!("{line}");
    assert!(line.contains(&target), "host:port: {line}");
    assert!(line.contains("Connection refused"), "the cause: {line}");
    assert!(!line.contains("never-printed"), "{line}");
}

#[test]
fn a_missing_database_or_role_keeps_postgresqls_message() {
    let e = status_fails("postgres://postgres@127.0.0.1:5432/cs_no_such_db");
    assert!(
        e.contains("database \"cs_no_such_db\" does not exist"),
        "{e}"
    );
    let e = status_fails("postgres://cs_no_such_role@127.0.0.1:5432/postgres");
    assert!(e.contains("role \"cs_no_such_role\" does not exist"), "{e}");
    assert!(e.contains("127.0.0.1:5432"), "{e}");
}

#[tokio::test]
async fn a_wrong_password_and_a_tls_failure_are_said_in_words() {
    let Some(c) = TlsCluster::start().await.expect("start a TLS cluster") else {
        println!("SKIPPED: no throwaway cluster here");
        return;
    };
    let url = |password: &str, params: &str| {
        let port = c.cluster.port();
        format!("postgres://{PASSWORD_USER}:{password}@localhost:{port}/postgres?{params}")
    };
    // The right password over TLS with channel binding (SCRAM-SHA-256-PLUS).
    let ok = run(
        &["migrate"],
        &[(
            "DATABASE_URL",
            &url(PASSWORD, "sslmode=require&channel_binding=require"),
        )],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let e = status_fails(&url("wrong-pw-xyz", "sslmode=require"));
    assert!(
        e.contains("password authentication failed for user \"pwuser\""),
        "{e}"
    );
    assert!(
        !e.contains("wrong-pw-xyz"),
        "no password in the message: {e}"
    );
    let wrong = TlsCluster::root(&c.pki.wrong_ca);
    let e = status_fails(&url(PASSWORD, &format!("sslmode=verify-full&{wrong}")));
    assert!(e.contains("not signed by a CA in sslrootcert"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");
}

#[tokio::test]
async fn an_unreachable_token_endpoint_names_its_host_and_the_cause() {
    let t = TestDb::new().await;
    let cipher = calendar_sync::TokenCipher::new(KEY, "").unwrap();
    let token = secrecy::SecretString::from("rt-never-printed");
    calendar_sync::ops::put_connection(&t.db, &cipher, "w1", "w1@example.com", &token)
        .await
        .unwrap();
    let id = t
        .insert("UPSERT_EVENT", upsert("w1", "w1@example.com", "s1", "v"))
        .await;
    let url = t.url();
    let out = run(
        &["drain", "--once"],
        &[
            ("DATABASE_URL", &url),
            ("TOKEN_ENCRYPTION_KEY", KEY),
            ("GOOGLE_CLIENT_ID", "client-1"),
            ("GOOGLE_CLIENT_SECRET", "secret-never-printed"),
            ("GOOGLE_OAUTH_TOKEN_URL", "http://127.0.0.1:1/token"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let error = t.row(id).await.last_error.expect("a last_error");
    println!("{error}");
    assert!(error.starts_with("[oauth_network]"), "{error}");
    assert!(
        error.contains("127.0.0.1:1"),
        "the token URL's host: {error}"
    );
    assert!(error.contains("Connection refused"), "the cause: {error}");
    assert!(!error.contains("never-printed"), "{error}");
}
