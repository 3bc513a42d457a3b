//! Command line and environment: every flag also reads an environment
//! variable, is validated once at start, and a bad value is one clear line.

use std::net::SocketAddr;
use std::time::Duration;

use calendar_sync::{DrainerConfig, GoogleConfig, TokenCipher};
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

/// Drains the calendar-sync outbox into Google Calendar, and operates it.
#[derive(Debug, Parser)]
#[command(name = "calendar-sync-worker", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the drainer until SIGTERM or SIGINT (the default command).
    Run,
    /// Process everything due now and exit (cron-style runs).
    Drain {
        /// Required: drain once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Apply database migrations (idempotent).
    Migrate,
    /// Show counts by status, the oldest pending age, dead letters and connections.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move DEAD_LETTER items back to PENDING with attempts reset.
    Requeue(RequeueArgs),
    /// Delete finished items older than N days.
    Cleanup {
        /// Age in days of the finished items to delete.
        #[arg(long, value_name = "N")]
        older_than_days: u32,
    },
    /// Store or list Google connections.
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Run the self-contained demo (fake Google, scratch database).
    Demo,
}

#[derive(Debug, Args)]
pub struct RequeueArgs {
    /// The id of one dead-lettered item.
    #[arg(conflicts_with_all = ["dead_letter", "workspace"], required_unless_present = "dead_letter")]
    pub id: Option<uuid::Uuid>,
    /// Requeue every dead letter.
    #[arg(long)]
    pub dead_letter: bool,
    /// With --dead-letter: only this workspace's.
    #[arg(long, requires = "dead_letter")]
    pub workspace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Store a workspace's refresh token, read from standard input (never an
    /// argument: it would show in `ps`), encrypted; marks the connection valid.
    Put {
        /// The workspace id.
        #[arg(long)]
        workspace: String,
        /// The Google account the token belongs to.
        #[arg(long)]
        email: String,
    },
    /// List connections and their validity (never a token).
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings shared by the commands.
#[derive(Debug, Args)]
pub struct Settings {
    /// PostgreSQL URL (a direct or session-pooled connection).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// OAuth client id.
    #[arg(long, env = "GOOGLE_CLIENT_ID", global = true)]
    pub google_client_id: Option<String>,
    /// OAuth client secret (environment only is safest).
    #[arg(
        long,
        env = "GOOGLE_CLIENT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub google_client_secret: Option<String>,
    /// Base64 of the 32-byte key that encrypts refresh tokens.
    #[arg(
        long,
        env = "TOKEN_ENCRYPTION_KEY",
        hide_env_values = true,
        global = true
    )]
    pub token_encryption_key: Option<String>,
    /// Retired keys that still decrypt, comma-separated.
    #[arg(
        long,
        env = "TOKEN_ENCRYPTION_OLD_KEYS",
        hide_env_values = true,
        default_value = "",
        global = true
    )]
    pub token_encryption_old_keys: String,
    /// Rows claimed per poll.
    #[arg(long, env = "CALENDAR_SYNC_BATCH_SIZE", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub batch_size: u32,
    /// Safety-net poll interval in milliseconds (NOTIFY wakes the worker sooner).
    #[arg(long, env = "CALENDAR_SYNC_POLL_INTERVAL_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..), global = true)]
    pub poll_interval_ms: u64,
    /// Milliseconds an item waits, once due, before it is claimed: separate
    /// commits to one source within it collapse into one Google call (0: at once).
    #[arg(long, env = "CALENDAR_SYNC_SETTLE_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3_600_000), global = true)]
    pub settle_ms: u64,
    /// Attempts before an item is dead-lettered.
    #[arg(long, env = "CALENDAR_SYNC_MAX_RETRIES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100), global = true)]
    pub max_retries: u32,
    /// Items in flight at once.
    #[arg(long, env = "CALENDAR_SYNC_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub concurrency: u32,
    /// On SIGTERM, how long in-flight items may finish, in milliseconds.
    #[arg(
        long,
        env = "CALENDAR_SYNC_SHUTDOWN_GRACE_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub shutdown_grace_ms: u64,
    /// Deprecated and ignored (one warning at start): workers share Google's
    /// quotas through the database, however many are running.
    #[arg(long, env = "CALENDAR_SYNC_WORKER_PROCESSES", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub worker_processes: u32,
    /// Google requests per minute for the whole project, all processes together.
    #[arg(long, env = "CALENDAR_SYNC_PROJECT_REQUESTS_PER_MINUTE", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000), global = true)]
    pub project_requests_per_minute: u32,
    /// Google requests per minute per connection (user), all processes together.
    #[arg(long, env = "CALENDAR_SYNC_CONNECTION_REQUESTS_PER_MINUTE", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub connection_requests_per_minute: u32,
    /// The length of the window the two quotas above are counted over (Google:
    /// a minute). Only tests and benchmarks that scale time down change it.
    #[arg(long, env = "CALENDAR_SYNC_QUOTA_WINDOW_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000), global = true, hide = true)]
    pub quota_window_ms: u64,
    /// Google Calendar API base URL.
    #[arg(long, env = "GOOGLE_CALENDAR_API_URL", default_value = calendar_sync::DEFAULT_CALENDAR_API_URL, global = true)]
    pub google_calendar_api_url: String,
    /// Google OAuth token endpoint.
    #[arg(long, env = "GOOGLE_OAUTH_TOKEN_URL", default_value = calendar_sync::DEFAULT_TOKEN_URL, global = true)]
    pub google_oauth_token_url: String,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "CALENDAR_SYNC_HTTP_ADDR",
        default_value = "127.0.0.1:9464",
        global = true
    )]
    pub http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// A configuration problem: printed as one line, exit code 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl Settings {
    pub fn database_url(&self) -> Result<&str, ConfigError> {
        self.database_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| ConfigError("DATABASE_URL is not set (or pass --database-url)".into()))
    }

    pub fn drainer(&self) -> DrainerConfig {
        DrainerConfig {
            batch_size: self.batch_size as usize,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            max_retries: self.max_retries,
            concurrency: self.concurrency as usize,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            settle: Duration::from_millis(self.settle_ms),
            ..DrainerConfig::default()
        }
    }

    pub fn cipher(&self) -> Result<TokenCipher, ConfigError> {
        let key = self.token_encryption_key.as_deref().unwrap_or("");
        TokenCipher::new(key, &self.token_encryption_old_keys)
            .map_err(|e| ConfigError(e.to_string()))
    }

    pub fn google(&self) -> Result<GoogleConfig, ConfigError> {
        let id = required(&self.google_client_id, "GOOGLE_CLIENT_ID")?;
        let secret = required(&self.google_client_secret, "GOOGLE_CLIENT_SECRET")?;
        for (name, url) in [
            ("GOOGLE_CALENDAR_API_URL", &self.google_calendar_api_url),
            ("GOOGLE_OAUTH_TOKEN_URL", &self.google_oauth_token_url),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError(format!(
                    "{name} must be an http(s) URL, got {url:?}"
                )));
            }
        }
        let mut config = GoogleConfig::new(id, SecretString::from(secret.to_owned()));
        config.calendar_api_url = self.google_calendar_api_url.clone();
        config.oauth.token_url = self.google_oauth_token_url.clone();
        config.worker_processes = self.worker_processes;
        config.per_project_per_minute = self.project_requests_per_minute;
        config.per_connection_per_minute = self.connection_requests_per_minute;
        config.quota_window = std::time::Duration::from_millis(self.quota_window_ms);
        Ok(config)
    }
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, ConfigError> {
    value
        .as_deref()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ConfigError(format!("{name} is not set")))
}

/// Turns a clap error into one line naming the flag and its environment variable.
pub fn one_line(error: &clap::Error, command: &clap::Command) -> String {
    let rendered = error.to_string();
    let first = rendered.lines().next().unwrap_or("error").trim().to_owned();
    let env = error
        .get(clap::error::ContextKind::InvalidArg)
        .and_then(|arg| {
            let flag = arg.to_string();
            let long = flag
                .split_whitespace()
                .next()?
                .trim_start_matches("--")
                .to_owned();
            command
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
        });
    match env {
        Some(env) => format!("{first} (environment variable {env})"),
        None => first,
    }
}
