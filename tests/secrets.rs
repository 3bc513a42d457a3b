//! No secret (refresh token, access token, client secret, encryption key)
//! reaches a log line at trace level, an error, `last_error`, the connection
//! listing or `Debug` output; the database holds no plaintext token.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use calendar_sync::{GoogleCalendar, GoogleConfig, OutboxDrainer, TokenCipher};
use calendar_sync_tests::{TestDb, fast_config, upsert};
use fake_google::FakeGoogle;
use secrecy::SecretString;

const CLIENT_ID: &str = "client-1.apps.example.com";
const CLIENT_SECRET: &str = "GOCSPX-very-secret-client-secret";
const REFRESH_TOKEN: &str = "1//0gREFRESH-secret-token-w1";
const KEY: [u8; 32] = [0x5a; 32];

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_trace_level_drain_leaks_no_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber in this test binary");

    let g = FakeGoogle::start().await;
    g.add_client(CLIENT_ID, CLIENT_SECRET);
    g.add_refresh_token(REFRESH_TOKEN, CLIENT_ID, "w1@example.com");
    g.add_calendar("w1@example.com");
    g.rotate_on_next_refresh(REFRESH_TOKEN);
    let t = TestDb::new().await;
    let cipher = TokenCipher::from_keys(KEY, vec![]);
    calendar_sync::ops::put_connection(
        &t.db,
        &cipher,
        "w1",
        "w1@example.com",
        &SecretString::from(REFRESH_TOKEN),
    )
    .await
    .unwrap();
    let mut config = GoogleConfig::new(CLIENT_ID, SecretString::from(CLIENT_SECRET));
    config.calendar_api_url = g.calendar_base_url();
    config.oauth.token_url = g.token_url();
    config.request_timeout = Duration::from_secs(2);
    let debug_config = format!("{config:?} {cipher:?} {:?}", t.db);
    let calendar = GoogleCalendar::new(&t.db, cipher.clone(), config).unwrap();
    let d = OutboxDrainer::new(t.db.clone(), calendar, fast_config()).unwrap();

    // A sync, a 401 and refresh (with a rotated refresh token), then a revoked grant.
    t.insert("UPSERT_EVENT", upsert("w1", "w1@example.com", "s1", "v1"))
        .await;
    d.drain_once().await.unwrap();
    let rotated = g.rotated_refresh_token(REFRESH_TOKEN).expect("rotated");
    g.expire_access_tokens();
    t.insert("UPSERT_EVENT", upsert("w1", "w1@example.com", "s1", "v2"))
        .await;
    d.drain_once().await.unwrap();
    g.revoke_refresh_token(&rotated);
    g.expire_access_tokens();
    t.insert("UPSERT_EVENT", upsert("w1", "w1@example.com", "s1", "v3"))
        .await;
    d.drain_once().await.unwrap();
    assert_eq!(t.count("COMPLETED").await, 2);
    assert_eq!(t.count("DEAD_LETTER").await, 1);

    let access_tokens: Vec<String> = g
        .requests()
        .iter()
        .filter_map(|r| {
            r.header("authorization")
                .map(|h| h.trim_start_matches("Bearer ").to_owned())
        })
        .collect();
    assert!(!access_tokens.is_empty());
    let mut secrets = vec![
        REFRESH_TOKEN.to_owned(),
        rotated.clone(),
        CLIENT_SECRET.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(KEY),
    ];
    secrets.extend(access_tokens);

    let client = t.client().await;
    let errors: Vec<String> = client
        .query("SELECT coalesce(last_error, '') FROM sync_outbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let connections = format!(
        "{:?}",
        calendar_sync::ops::list_connections(&t.db).await.unwrap()
    );
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(log.contains("TRACE"), "trace level was on");
    assert!(log.contains("item completed"));
    let outputs = [
        ("log", log),
        ("last_error", errors.join("\n")),
        ("connections", connections),
        ("Debug", debug_config),
    ];
    for secret in &secrets {
        for (name, text) in &outputs {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked into {name}"
            );
        }
    }

    // The database holds no plaintext token anywhere.
    let dump: String = client
        .query_one(
            "SELECT string_agg(t::text, E'\\n') FROM (
                 SELECT row_to_json(c)::text AS t FROM google_connections c
                 UNION ALL SELECT row_to_json(o)::text FROM sync_outbox o
                 UNION ALL SELECT row_to_json(b)::text FROM calendar_event_bindings b) x",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for secret in &secrets {
        assert!(
            !dump.contains(secret.as_str()),
            "a plaintext secret is stored in the database"
        );
    }
}
