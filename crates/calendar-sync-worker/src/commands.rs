//! One function per subcommand: build the library objects from the settings,
//! call the library, write the result to `out`.

use std::io::{Read, Write};

use calendar_sync::{ConnectOptions, Database, GoogleCalendar, OutboxDrainer};
use secrecy::SecretString;

use crate::cli::{
    ConfigError, ConnectionsCommand, DashboardArgs, DatabaseArgs, DrainerArgs, KeyArgs,
    RequeueArgs, RunArgs,
};

/// Why a command failed: bad configuration (exit 2) or a runtime failure (exit 1).
#[derive(Debug)]
pub enum Failure {
    Config(String),
    Runtime(String),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::Config(e.0)
    }
}

impl From<calendar_sync::Error> for Failure {
    fn from(e: calendar_sync::Error) -> Self {
        match e {
            calendar_sync::Error::Config(m) => Self::Config(m),
            other => Self::Runtime(other.to_string()),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Self::Runtime(e.to_string())
    }
}

type Outcome = Result<(), Failure>;

fn database(settings: &DatabaseArgs, pool_size: usize) -> Result<Database, Failure> {
    let url = settings.database_url()?;
    let unusable =
        |e: calendar_sync::Error| Failure::Config(format!("DATABASE_URL is not usable: {e}"));
    let mut options = ConnectOptions::parse(url).map_err(unusable)?;
    options.default_application_name(APPLICATION_NAME);
    Database::with_options(options, pool_size).map_err(unusable)
}

/// How the worker's sessions show in `pg_stat_activity` unless the URL names them.
const APPLICATION_NAME: &str = "calendar-sync-worker";

fn drainer(settings: &DrainerArgs) -> Result<(Database, OutboxDrainer<GoogleCalendar>), Failure> {
    let config = settings.drainer()?;
    let cipher = settings.keys.cipher()?;
    let google = settings.google()?;
    if settings.worker_processes != 1 {
        tracing::warn!(
            "CALENDAR_SYNC_WORKER_PROCESSES is deprecated and ignored: workers share Google's quotas through the database"
        );
    }
    // Items touch the pool only around their call (token refresh, a rare
    // reservation, a failure); successes are recorded in batches.
    let pool_size = (settings.concurrency as usize).min(16) + 4;
    let db = database(&settings.database, pool_size)?;
    let calendar = GoogleCalendar::new(&db, cipher, google)?;
    let drainer = OutboxDrainer::new(db.clone(), calendar, config)?;
    Ok((db, drainer))
}

/// `run`: the drainer until SIGTERM/SIGINT, with /healthz, /readyz, /metrics.
pub async fn run(args: &RunArgs) -> Outcome {
    let dashboard_token = args.dashboard.token()?;
    let settings = &args.drain;
    let (db, drainer) = drainer(settings)?;
    let cipher = settings.keys.cipher()?;
    let metrics = crate::http::install_metrics()?;
    let listener = listen(args.http_addr).await?;
    if let Err(e) = calendar_sync::ops::readiness(&db).await {
        tracing::warn!(error = %e, "not ready yet; the drainer keeps trying");
    }
    if let Ok(unknown) = calendar_sync::ops::unknown_key_ids(&db, &cipher).await
        && let Some(line) = calendar_sync::ops::unknown_key_ids_line(&unknown)
    {
        tracing::error!("{line}");
    }
    let handle = std::sync::Arc::new(drainer.start());
    tracing::info!(
        http = %args.http_addr,
        dashboard_writes = dashboard_token.is_some(),
        "calendar-sync worker running"
    );
    let server = crate::http::serve(
        listener,
        db,
        cipher,
        handle.clone(),
        metrics,
        std::time::Duration::from_millis(settings.poll_interval_ms),
        dashboard_token,
    );
    let server = tokio::spawn(server);
    shutdown_signal().await;
    tracing::info!("signal received; stopping");
    server.abort();
    // Wait until the server (and its share of the handle) is gone.
    let _ = server.await;
    let handle = std::sync::Arc::into_inner(handle)
        .ok_or_else(|| Failure::Runtime("drainer handle still shared".into()))?;
    let report = handle.stop().await;
    tracing::info!(?report, "stopped");
    Ok(())
}

/// `dashboard`: the read-only dashboard with /healthz and /readyz until
/// SIGTERM/SIGINT; it claims nothing, and needs only the database.
pub async fn dashboard(args: &DashboardArgs) -> Outcome {
    let token = args.dashboard.token()?;
    // A page's queries, a few pages at once.
    let db = database(&args.database, 4)?;
    let listener = listen(args.http_addr).await?;
    if let Err(e) = calendar_sync::ops::readiness(&db).await {
        tracing::warn!(error = %e, "not ready yet; the dashboard's pages fail until it is");
    }
    tracing::info!(
        http = %args.http_addr,
        writes = token.is_some(),
        "calendar-sync dashboard serving /dashboard/ (no draining)"
    );
    let server = tokio::spawn(crate::http::serve_dashboard(listener, db, token));
    shutdown_signal().await;
    tracing::info!("signal received; stopping");
    server.abort();
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

async fn listen(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, Failure> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Failure::Runtime(format!(
            "cannot listen on CALENDAR_SYNC_HTTP_ADDR {addr}: {e}"
        ))
    })
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// `drain --once`: everything due now, then exit with the counts.
pub async fn drain(settings: &DrainerArgs, once: bool, out: &mut impl Write) -> Outcome {
    if !once {
        return Err(Failure::Config(
            "`drain` needs --once (use `run` to keep draining)".into(),
        ));
    }
    let (_, drainer) = drainer(settings)?;
    let r = drainer.drain_once().await?;
    writeln!(
        out,
        "claimed {} completed {} (unchanged {}) retried {} dead_lettered {} superseded {} deferred {} recovered {}",
        r.claimed,
        r.completed,
        r.unchanged,
        r.retried,
        r.dead_lettered,
        r.superseded,
        r.deferred,
        r.recovered
    )?;
    Ok(())
}

/// `migrate`: apply pending migrations.
pub async fn migrate(settings: &DatabaseArgs, out: &mut impl Write) -> Outcome {
    let db = database(settings, 1)?;
    let applied = calendar_sync::migrate(&db).await?;
    writeln!(out, "applied {applied} migration(s); schema is current")?;
    Ok(())
}

/// `status [--json]`.
pub async fn status(
    settings: &DatabaseArgs,
    keys: &KeyArgs,
    json: bool,
    out: &mut impl Write,
) -> Outcome {
    let db = database(settings, 1)?;
    let mut report = calendar_sync::ops::status(&db).await?;
    // Without TOKEN_ENCRYPTION_KEY there is nothing to check the keys against.
    if keys.token_encryption_key.is_some()
        && let Ok(cipher) = keys.cipher()
    {
        report.check_keys(&db, &cipher).await?;
    }
    if json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| Failure::Runtime(e.to_string()))?;
        writeln!(out, "{text}")?;
    } else {
        write!(out, "{}", report.render_table())?;
    }
    Ok(())
}

/// `requeue <ID>` or `requeue --dead-letter [--workspace W]`.
pub async fn requeue(args: &RequeueArgs, out: &mut impl Write) -> Outcome {
    let db = database(&args.database, 1)?;
    let n = match args.id {
        Some(id) => {
            let n = calendar_sync::ops::requeue(&db, Some(&[id]), None).await?;
            if n == 0 {
                return Err(Failure::Runtime(format!(
                    "no DEAD_LETTER item with id {id}"
                )));
            }
            n
        }
        None => calendar_sync::ops::requeue(&db, None, args.workspace.as_deref()).await?,
    };
    writeln!(out, "requeued {n} item(s)")?;
    Ok(())
}

/// `cleanup --older-than-days N`.
pub async fn cleanup(settings: &DatabaseArgs, days: u32, out: &mut impl Write) -> Outcome {
    let db = database(settings, 1)?;
    let days = i32::try_from(days)
        .map_err(|_| Failure::Config("--older-than-days is too large".into()))?;
    let n = calendar_sync::ops::cleanup(&db, days).await?;
    writeln!(out, "deleted {n} finished item(s) older than {days} day(s)")?;
    Ok(())
}

/// `connections put` (token on stdin) and `connections list`.
pub async fn connections(command: ConnectionsCommand, out: &mut impl Write) -> Outcome {
    match command {
        ConnectionsCommand::Put {
            workspace,
            email,
            database: settings,
            keys,
        } => {
            let cipher = keys.cipher()?;
            let db = database(&settings, 1)?;
            let mut token = String::new();
            std::io::stdin().read_to_string(&mut token)?;
            let token = SecretString::from(token.trim().to_owned());
            if secrecy::ExposeSecret::expose_secret(&token).is_empty() {
                return Err(Failure::Config("no refresh token on standard input".into()));
            }
            calendar_sync::ops::put_connection(&db, &cipher, &workspace, &email, &token).await?;
            writeln!(
                out,
                "stored the connection of workspace {workspace} ({email}); it is valid"
            )?;
        }
        ConnectionsCommand::List(settings) => {
            let db = database(&settings, 1)?;
            let connections = calendar_sync::ops::list_connections(&db).await?;
            writeln!(
                out,
                "{:<36} {:<32} {:<6} {:<7} REASON",
                "WORKSPACE", "GOOGLE ACCOUNT", "VALID", "PAUSED"
            )?;
            for c in connections {
                writeln!(
                    out,
                    "{:<36} {:<32} {:<6} {:<7} {}",
                    c.workspace_id,
                    c.google_email,
                    if c.is_valid { "yes" } else { "NO" },
                    if c.paused { "yes" } else { "no" },
                    c.invalid_reason.unwrap_or_default()
                )?;
            }
        }
    }
    Ok(())
}
