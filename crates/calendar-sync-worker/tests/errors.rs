//! Errors an operator sees name what was tried (host:port, database, user, the
//! token endpoint) and the underlying cause, never a secret.

use std::process::{Command, Output};

use calendar_sync_tests::{PASSWORD, PASSWORD_USER, TestDb, TlsCluster, upsert};

const BIN: &str = env!("CARGO_BIN_EXE_calendar-sync-worker");
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the binary")
}

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
        let port = c.cluster.port;
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
    calendar_sync::put_connection(&t.db, &cipher, "w1", "w1@example.com", &token)
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
