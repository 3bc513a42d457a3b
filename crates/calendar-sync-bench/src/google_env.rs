//! The fake Google, seeded with one OAuth client and one connection and
//! calendar per workspace, and the adapter wired to it (as tests/google.rs does).

use std::time::Duration;

use calendar_sync::{GoogleCalendar, GoogleConfig, TokenCipher};
use calendar_sync_tests::TestDb;
use fake_google::FakeGoogle;
use secrecy::SecretString;

use crate::load::{calendar_of, workspace};

/// The OAuth client the fake knows.
pub const CLIENT_ID: &str = "bench-client.apps.example.com";
/// Its secret.
pub const CLIENT_SECRET: &str = "GOCSPX-bench-secret";
/// The token encryption key (raw bytes) the bench stores connections with.
pub const KEY: [u8; 32] = [42; 32];

/// The cipher for [`KEY`].
pub fn cipher() -> TokenCipher {
    TokenCipher::from_keys(KEY, vec![])
}

/// The refresh token of a workspace.
pub fn refresh_token(ws: &str) -> String {
    format!("rt-{ws}")
}

/// Registers the client, and each workspace's refresh token and calendar, in the fake.
pub fn seed_fake(g: &FakeGoogle, workspaces: usize) {
    g.add_client(CLIENT_ID, CLIENT_SECRET);
    for i in 0..workspaces {
        let ws = workspace(i);
        g.add_refresh_token(&refresh_token(&ws), CLIENT_ID, &calendar_of(&ws));
        g.add_calendar(&calendar_of(&ws));
    }
}

/// Stores each workspace's connection (encrypted refresh token) in the database.
pub async fn store_connections(t: &TestDb, workspaces: usize) {
    let cipher = cipher();
    for i in 0..workspaces {
        let ws = workspace(i);
        calendar_sync::ops::put_connection(
            &t.db,
            &cipher,
            &ws,
            &calendar_of(&ws),
            &SecretString::from(refresh_token(&ws)),
        )
        .await
        .expect("put connection");
    }
}

/// The adapter's configuration for a fake at `calendar_base_url` / `token_url`,
/// limiter at its documented defaults.
pub fn config(calendar_base_url: String, token_url: String) -> GoogleConfig {
    let mut config = GoogleConfig::new(CLIENT_ID, SecretString::from(CLIENT_SECRET));
    config.calendar_api_url = calendar_base_url;
    config.oauth.token_url = token_url;
    config.request_timeout = Duration::from_secs(10);
    config
}

/// The adapter for an in-process fake.
pub fn calendar(db: &calendar_sync::Database, g: &FakeGoogle) -> GoogleCalendar {
    calendar_with(db, config(g.calendar_base_url(), g.token_url()))
}

/// The adapter with a given configuration.
pub fn calendar_with(db: &calendar_sync::Database, config: GoogleConfig) -> GoogleCalendar {
    GoogleCalendar::new(db, cipher(), config).expect("google calendar")
}
