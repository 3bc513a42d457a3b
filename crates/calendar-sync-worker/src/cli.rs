//! Command line and environment: every flag also reads an environment
//! variable, is validated once at start, and a bad value is one clear line.

use std::net::SocketAddr;
use std::time::Duration;

use calendar_sync::{DrainerConfig, DriftPolicy, EventDefaults, GoogleConfig, TokenCipher};
use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

/// Drains the calendar-sync outbox into Google Calendar, and operates it.
///
/// Without a subcommand it runs (`run`). Each subcommand reads only the
/// flags and environment variables its `--help` lists.
#[derive(Debug, Parser)]
#[command(name = "calendar-sync-worker", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format (logs go to stderr).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the drainer until SIGTERM or SIGINT (the default command).
    Run(RunArgs),
    /// Serve the read-only dashboard without draining, until SIGTERM or SIGINT.
    ///
    /// The dashboard at /dashboard/ (and /dashboard), with /healthz and
    /// /readyz, on CALENDAR_SYNC_HTTP_ADDR, as `run` serves it. It claims
    /// nothing and reads only the database: no encryption key, no Google
    /// settings. /readyz answers 200 once the database is reachable and its
    /// schema is current.
    Dashboard(DashboardArgs),
    /// Process everything due now and exit (cron-style runs).
    Drain(DrainArgs),
    /// Apply database migrations (idempotent).
    Migrate(DatabaseArgs),
    /// Show counts by status, the oldest pending age, dead letters and connections.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: DatabaseArgs,
        /// Optional: with the keys, `status` names stored key ids none of them has.
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Move DEAD_LETTER items back to PENDING with attempts reset.
    Requeue(RequeueArgs),
    /// Delete finished items older than N days.
    Cleanup {
        /// Age in days of the finished items to delete.
        #[arg(long, value_name = "N")]
        older_than_days: u32,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Store or list Google connections.
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Run the self-contained demo (fake Google, scratch database; uses
    /// DATABASE_URL if set). Logs go to a file it names unless -v.
    // Hidden where the `demo` feature is off; `demo` then says how to get it.
    #[command(hide = cfg!(not(feature = "demo")))]
    Demo {
        /// Show the worker's logs on stderr instead of writing them to a file.
        #[arg(short, long)]
        verbose: bool,
    },
}

/// `run`: everything the drainer reads, plus the HTTP address.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub drain: DrainerArgs,
    /// Address of /healthz, /readyz, /metrics and the dashboard (/dashboard/).
    #[arg(long, env = "CALENDAR_SYNC_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,
    #[command(flatten)]
    pub dashboard: DashboardAuthArgs,
}

/// The dashboard's write actions: off unless a token is set.
#[derive(Args)]
pub struct DashboardAuthArgs {
    /// Enables the dashboard's write actions (requeue dead letters, enqueue a
    /// REBUILD_ALL) for whoever logs in with this token or sends it as
    /// `Authorization: Bearer`; at least 16 characters. Unset, the dashboard
    /// is read-only. Prefer the variable: a flag shows in `ps`.
    #[arg(long, env = "CALENDAR_SYNC_DASHBOARD_TOKEN", hide_env_values = true)]
    pub dashboard_token: Option<String>,
}

impl std::fmt::Debug for DashboardAuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardAuthArgs")
            .field(
                "dashboard_token",
                &self.dashboard_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl DashboardAuthArgs {
    /// The token, checked: set but empty or short is a configuration error
    /// (which never repeats the value).
    pub fn token(&self) -> Result<Option<calendar_sync_dashboard::DashboardToken>, ConfigError> {
        const VAR: &str = "CALENDAR_SYNC_DASHBOARD_TOKEN";
        let value = match &self.dashboard_token {
            Some(v) => v.clone(),
            // clap reads an empty variable as unset; it is still a mistake.
            None if std::env::var_os(VAR).is_some() => String::new(),
            None => return Ok(None),
        };
        calendar_sync_dashboard::DashboardToken::new(value)
            .map(Some)
            .map_err(|_| {
                ConfigError(format!(
                    "{VAR} must be at least {} characters long (unset it to keep the dashboard read-only)",
                    calendar_sync_dashboard::MIN_TOKEN_LEN
                ))
            })
    }
}

/// Where `run` and `dashboard` listen unless told: local only.
const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:9464";

/// `dashboard`: the database and the HTTP address, nothing else.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address of the dashboard (/dashboard/), /healthz and /readyz.
    #[arg(long, env = "CALENDAR_SYNC_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,
    #[command(flatten)]
    pub dashboard: DashboardAuthArgs,
}

/// `drain --once`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Required: drain once and exit.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub drain: DrainerArgs,
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
    #[command(flatten)]
    pub database: DatabaseArgs,
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
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// List connections and their validity (never a token).
    List(DatabaseArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the database is.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL or key=value string (a direct or session-pooled connection).
    ///
    /// libpq's sslmode (disable, allow, prefer [default],
    /// require, verify-ca, verify-full), sslrootcert (PEM file or `system`),
    /// sslcert and sslkey are understood, as are PGSSLMODE, PGSSLROOTCERT,
    /// PGSSLCERT and PGSSLKEY. Sessions are named calendar-sync-worker
    /// (application_name), time out after connect_timeout=10 s and send TCP
    /// keepalives after keepalives_idle=60 s, unless the URL says otherwise.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// The keys that encrypt refresh tokens.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Base64 of the 32-byte key that encrypts refresh tokens.
    #[arg(long, env = "TOKEN_ENCRYPTION_KEY", hide_env_values = true)]
    pub token_encryption_key: Option<String>,
    /// Retired keys that still decrypt, comma-separated.
    #[arg(
        long,
        env = "TOKEN_ENCRYPTION_OLD_KEYS",
        hide_env_values = true,
        default_value = ""
    )]
    pub token_encryption_old_keys: String,
}

/// What the drainer reads: database, keys, Google and the tuning knobs.
#[derive(Debug, Args)]
pub struct DrainerArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// OAuth client id.
    #[arg(long, env = "GOOGLE_CLIENT_ID")]
    pub google_client_id: Option<String>,
    /// OAuth client secret (environment only is safest).
    #[arg(long, env = "GOOGLE_CLIENT_SECRET", hide_env_values = true)]
    pub google_client_secret: Option<String>,
    /// Rows claimed per poll.
    #[arg(long, env = "CALENDAR_SYNC_BATCH_SIZE", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch_size: u32,
    /// Safety-net poll interval in milliseconds (NOTIFY wakes the worker sooner).
    #[arg(long, env = "CALENDAR_SYNC_POLL_INTERVAL_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_interval_ms: u64,
    /// Milliseconds an item waits, once due, before it is claimed: separate
    /// commits to one source within it collapse into one Google call (0: at once).
    #[arg(long, env = "CALENDAR_SYNC_SETTLE_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub settle_ms: u64,
    /// Milliseconds between two drift checks of a calendar: each calendar
    /// with live events is listed through Google's incremental sync to find
    /// events edited or deleted by hand (0: never).
    #[arg(long, env = "CALENDAR_SYNC_DRIFT_CHECK_INTERVAL_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=604_800_000))]
    pub drift_check_interval_ms: u64,
    /// What a drift check does about an event changed by hand: repair
    /// (re-assert our content), report (only record it) or adopt (accept it).
    #[arg(long, env = "CALENDAR_SYNC_DRIFT_POLICY", default_value_t = DriftPolicy::Repair, value_parser = parse_drift_policy)]
    pub drift_policy: DriftPolicy,
    /// Attempts an item may use before it is dead-lettered.
    #[arg(long, env = "CALENDAR_SYNC_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// The first design's name for --max-attempts (it always counted
    /// attempts), still read so that existing deployments keep their setting.
    #[arg(long, env = "CALENDAR_SYNC_MAX_RETRIES", hide = true, conflicts_with = "max_attempts", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_retries: Option<u32>,
    /// Items in flight at once.
    #[arg(long, env = "CALENDAR_SYNC_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: u32,
    /// On SIGTERM, how long in-flight items may finish, in milliseconds.
    #[arg(
        long,
        env = "CALENDAR_SYNC_SHUTDOWN_GRACE_MS",
        default_value_t = 30_000
    )]
    pub shutdown_grace_ms: u64,
    /// Deprecated and ignored (one warning at start): workers share Google's
    /// quotas through the database, however many are running.
    #[arg(long, env = "CALENDAR_SYNC_WORKER_PROCESSES", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub worker_processes: u32,
    /// Google requests per minute for the whole project, all processes together.
    #[arg(long, env = "CALENDAR_SYNC_PROJECT_REQUESTS_PER_MINUTE", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub project_requests_per_minute: u32,
    /// Google requests per minute per connection (user), all processes together.
    #[arg(long, env = "CALENDAR_SYNC_CONNECTION_REQUESTS_PER_MINUTE", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connection_requests_per_minute: u32,
    /// The length of the window the two quotas above are counted over (Google:
    /// a minute). Only tests and benchmarks that scale time down change it.
    #[arg(long, env = "CALENDAR_SYNC_QUOTA_WINDOW_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000), hide = true)]
    pub quota_window_ms: u64,
    /// JSON file of optional event fields per eventType, e.g.
    /// {"BLOCKER_DEADLINE": {"transparency": "transparent", "colorId": "11"}};
    /// a payload's own values win (none by default).
    #[arg(long, env = "CALENDAR_SYNC_EVENT_DEFAULTS_FILE")]
    pub event_defaults_file: Option<std::path::PathBuf>,
    /// Google Calendar API base URL.
    #[arg(long, env = "GOOGLE_CALENDAR_API_URL", default_value = calendar_sync::DEFAULT_CALENDAR_API_URL)]
    pub google_calendar_api_url: String,
    /// Google OAuth token endpoint.
    #[arg(long, env = "GOOGLE_OAUTH_TOKEN_URL", default_value = calendar_sync::DEFAULT_TOKEN_URL)]
    pub google_oauth_token_url: String,
    /// Google's batch endpoint (default: derived from GOOGLE_CALENDAR_API_URL,
    /// `…/calendar/v3/` gives `…/batch/calendar/v3`).
    #[arg(long, env = "GOOGLE_CALENDAR_BATCH_URL")]
    pub google_calendar_batch_url: Option<String>,
    /// Most write calls of one connection sent together in one batch request;
    /// 0 or 1: every call on its own. Google's limit is 1000.
    #[arg(long, env = "CALENDAR_SYNC_GOOGLE_BATCH_MAX", default_value_t = calendar_sync::DEFAULT_BATCH_MAX, value_parser = clap::value_parser!(u16).range(0..=1000).map(usize::from))]
    pub google_batch_max: usize,
}

fn parse_drift_policy(value: &str) -> Result<DriftPolicy, String> {
    value
        .parse()
        .map_err(|_| "expected repair, report or adopt".to_owned())
}

/// A configuration problem: printed as one line, exit code 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl DatabaseArgs {
    pub fn database_url(&self) -> Result<&str, ConfigError> {
        self.database_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| ConfigError("DATABASE_URL is not set (or pass --database-url)".into()))
    }
}

impl KeyArgs {
    pub fn cipher(&self) -> Result<TokenCipher, ConfigError> {
        let key = self.token_encryption_key.as_deref().unwrap_or("");
        TokenCipher::new(key, &self.token_encryption_old_keys)
            .map_err(|e| ConfigError(e.to_string()))
    }
}

impl DrainerArgs {
    pub fn drainer(&self) -> Result<DrainerConfig, ConfigError> {
        Ok(DrainerConfig {
            batch_size: self.batch_size as usize,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            max_attempts: self.max_retries.unwrap_or(self.max_attempts),
            concurrency: self.concurrency as usize,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            settle: Duration::from_millis(self.settle_ms),
            event_defaults: self.event_defaults()?,
            drift_check_interval: Duration::from_millis(self.drift_check_interval_ms),
            drift_policy: self.drift_policy,
            ..DrainerConfig::default()
        })
    }

    /// The defaults file, read and checked once at start.
    fn event_defaults(&self) -> Result<EventDefaults, ConfigError> {
        let Some(path) = &self.event_defaults_file else {
            return Ok(EventDefaults::default());
        };
        let fail = |what: String| {
            ConfigError(format!(
                "CALENDAR_SYNC_EVENT_DEFAULTS_FILE {}: {what}",
                path.display()
            ))
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| fail(format!("is not JSON: {e}")))?;
        EventDefaults::from_json(&json).map_err(|e| fail(e.to_string()))
    }

    pub fn google(&self) -> Result<GoogleConfig, ConfigError> {
        let id = required(&self.google_client_id, "GOOGLE_CLIENT_ID")?;
        let secret = required(&self.google_client_secret, "GOOGLE_CLIENT_SECRET")?;
        let batch_url = self.google_calendar_batch_url.as_ref();
        for (name, url) in [
            (
                "GOOGLE_CALENDAR_API_URL",
                Some(&self.google_calendar_api_url),
            ),
            ("GOOGLE_OAUTH_TOKEN_URL", Some(&self.google_oauth_token_url)),
            ("GOOGLE_CALENDAR_BATCH_URL", batch_url),
        ]
        .into_iter()
        .filter_map(|(name, url)| Some((name, url?)))
        {
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
        config.batch_max = self.google_batch_max;
        config.batch_url = self.google_calendar_batch_url.clone();
        Ok(config)
    }
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, ConfigError> {
    value
        .as_deref()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ConfigError(format!("{name} is not set")))
}

/// Subcommand names; a command line starting with none of them runs `run`.
const SUBCOMMANDS: [&str; 10] = [
    "run",
    "dashboard",
    "drain",
    "migrate",
    "status",
    "requeue",
    "cleanup",
    "connections",
    "demo",
    "help",
];

/// The arguments with `run` inserted when no subcommand is given, so that
/// `calendar-sync-worker --batch-size 8` still means `run --batch-size 8`.
pub fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let top_level = ["-h", "--help", "-V", "--version"].contains(&first);
    // `--log-format json status`: the global flag may come first.
    let named = args
        .iter()
        .skip(1)
        .any(|a| a.to_str().is_some_and(|a| SUBCOMMANDS.contains(&a)));
    if !top_level && !named {
        args.insert(1.min(args.len()), "run".into());
    }
    args
}

/// Turns a clap error into one line: clap's whole message (what is wrong and
/// what was expected), the usage, and the flag's environment variable.
pub fn one_line(error: &clap::Error, command: &clap::Command) -> String {
    let rendered = error.render().to_string();
    let mut parts = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = line.strip_prefix("Usage: ") {
            usage = Some(u.to_owned());
        } else if !line.starts_with("For more information") && !line.starts_with("tip:") {
            parts.push(line.to_owned());
        }
    }
    let mut text = parts.join(" ").replace(":  ", ": ");
    if let Some(env) = env_of(error, command) {
        text.push_str(&format!(" (environment variable {env})"));
    }
    if let Some(usage) = usage {
        text.push_str(&format!("; usage: {usage}"));
    }
    text
}

/// The environment variable of the flag the error is about, searched in
/// every subcommand.
fn env_of(error: &clap::Error, command: &clap::Command) -> Option<String> {
    let arg = error.get(clap::error::ContextKind::InvalidArg)?.to_string();
    let long = arg
        .split_whitespace()
        .next()?
        .trim_start_matches("--")
        .to_owned();
    find_env(command, &long)
}

fn find_env(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|c| find_env(c, long)))
}
