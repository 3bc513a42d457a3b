//! A fresh database and the fake Google behind the real adapter
//! (google-calendar3): the set-up of the tests that drain in-process through
//! Google (google.rs, consistency.rs, aliases.rs).

use std::time::Duration;

use calendar_sync::{DrainerConfig, GoogleCalendar, GoogleConfig, OutboxDrainer, TokenCipher};
use fake_google::FakeGoogle;
use secrecy::SecretString;
use serde_json::Value;

use crate::{TestDb, fast_config};

/// The OAuth client the fake knows.
pub const CLIENT_ID: &str = "client-1.apps.example.com";
/// Its secret.
pub const CLIENT_SECRET: &str = "GOCSPX-client-secret-for-tests";

/// A migrated database, a fake Google that knows [`CLIENT_ID`], and the
/// cipher connections are stored with.
pub struct GoogleEnv {
    /// The database.
    pub t: TestDb,
    /// The fake.
    pub g: FakeGoogle,
    /// Encrypts the stored refresh tokens (key bytes all 7).
    pub cipher: TokenCipher,
}

impl GoogleEnv {
    /// Starts it with `workspaces` connected: each `ws` has a refresh token
    /// `rt-<ws>` of the account `<ws>@example.com`, whose calendar exists.
    pub async fn start(workspaces: &[&str]) -> Self {
        let g = FakeGoogle::start().await;
        g.add_client(CLIENT_ID, CLIENT_SECRET);
        let e = Self {
            t: TestDb::new().await,
            g,
            cipher: TokenCipher::from_keys([7; 32], vec![]),
        };
        for ws in workspaces {
            let (token, email) = (format!("rt-{ws}"), format!("{ws}@example.com"));
            e.g.add_refresh_token(&token, CLIENT_ID, &email);
            e.g.add_calendar(&email);
            e.connect(ws, &email, &token).await;
        }
        e
    }

    /// Stores `workspace`'s connection: the refresh token `token` of `email`.
    pub async fn connect(&self, workspace: &str, email: &str, token: &str) {
        calendar_sync::ops::put_connection(
            &self.t.db,
            &self.cipher,
            workspace,
            email,
            &SecretString::from(token),
        )
        .await
        .expect("store the connection");
    }

    /// The adapter's configuration for the fake; requests time out after
    /// 800 ms (the fake answers in milliseconds unless told to hang).
    pub fn google_config(&self) -> GoogleConfig {
        let mut config = GoogleConfig::new(CLIENT_ID, SecretString::from(CLIENT_SECRET));
        config.calendar_api_url = self.g.calendar_base_url();
        config.oauth.token_url = self.g.token_url();
        config.request_timeout = Duration::from_millis(800);
        config
    }

    /// A drainer through the adapter with these configurations.
    pub fn drainer_with(
        &self,
        google: GoogleConfig,
        config: DrainerConfig,
    ) -> OutboxDrainer<GoogleCalendar> {
        let calendar =
            GoogleCalendar::new(&self.t.db, self.cipher.clone(), google).expect("the adapter");
        OutboxDrainer::new(self.t.db.clone(), calendar, config).expect("the drainer")
    }

    /// A drainer with [`GoogleEnv::google_config`] and [`fast_config`].
    pub fn drainer(&self) -> OutboxDrainer<GoogleCalendar> {
        self.drainer_with(self.google_config(), fast_config())
    }

    /// The events of a source on a calendar, cancelled ones included.
    pub fn events(&self, calendar: &str, source_id: &str) -> Vec<Value> {
        self.g
            .events(calendar)
            .into_iter()
            .filter(|e| e["extendedProperties"]["private"]["calendarSyncSourceId"] == source_id)
            .collect()
    }

    /// The live events of a source on a calendar.
    pub fn live(&self, calendar: &str, source_id: &str) -> Vec<Value> {
        self.events(calendar, source_id)
            .into_iter()
            .filter(|e| e["status"] != "cancelled")
            .collect()
    }
}
