//! Where the demo's PostgreSQL comes from: a URL, the local server on
//! 127.0.0.1:5432, or a throwaway [`Cluster`] started from the installed
//! server binaries (stopped and deleted when dropped).

use std::time::Duration;

use calendar_sync::{ConnectOptions, TlsOptions};
use tokio_postgres::{Client, Config};

use crate::DemoError;
use crate::scratch::{Cluster, ClusterSetup, ScratchErrorKind};

/// Which PostgreSQL server the demo uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbChoice {
    /// `DATABASE_URL` if set, else 127.0.0.1:5432 (user postgres) if it answers,
    /// else a throwaway cluster if the server binaries are installed.
    Auto,
    /// This connection URL (libpq style).
    Url(String),
    /// Always a throwaway cluster in a temporary directory.
    Throwaway,
}

const LOCAL_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A server the demo may create a scratch database on.
pub(crate) struct Server {
    /// Connection settings for the server's maintenance database.
    pub config: Config,
    /// TLS as the URL asked for it (libpq's sslmode; `prefer` by default).
    pub tls: TlsOptions,
    /// Where it came from, for the output (never a password).
    pub origin: String,
    /// The throwaway cluster, if the demo started one; stopped on drop.
    pub cluster: Option<Cluster>,
}

impl Server {
    /// A connection to the maintenance database, driven by a background task.
    pub async fn connect(&self) -> Result<Client, DemoError> {
        connect(&self.options()).await
    }

    /// The connection options of the maintenance database.
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            config: self.config.clone(),
            tls: self.tls.clone(),
        }
    }
}

async fn connect(options: &ConnectOptions) -> Result<Client, DemoError> {
    let config = &options.config;
    let db = calendar_sync::Database::with_options(options.clone(), 1)?;
    tokio::time::timeout(Duration::from_secs(5), db.dedicated())
        .await
        .map_err(|_| DemoError::new(format!("{}: no answer within 5 s", describe(config))))?
        .map_err(|e| DemoError::new(e.to_string()))
}

/// `host:port (user u)`, never the password.
pub(crate) fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("(default user)");
    format!("{host}:{port} (user {user})")
}

fn parse(url: &str, what: &str) -> Result<ConnectOptions, DemoError> {
    let mut options = ConnectOptions::parse(url)
        .map_err(|e| DemoError::new(format!("{what} is not a valid PostgreSQL URL: {e}")))?;
    if options.config.get_dbname().is_none() {
        options.config.dbname("postgres");
    }
    options.config.connect_timeout(Duration::from_secs(3));
    options.default_application_name("calendar-sync-demo");
    Ok(options)
}

/// Picks the server; on failure the error is one line naming what is missing.
pub(crate) async fn pick(choice: DbChoice) -> Result<Server, DemoError> {
    let url_server = |url: &str, what: &str| -> Result<Server, DemoError> {
        let ConnectOptions { config, tls } = parse(url, what)?;
        let origin = format!("{} from {what}", describe(&config));
        Ok(Server {
            config,
            tls,
            origin,
            cluster: None,
        })
    };
    match choice {
        DbChoice::Url(url) => url_server(&url, "the given URL"),
        DbChoice::Throwaway => throwaway(None).await,
        DbChoice::Auto => {
            if let Ok(url) = std::env::var("DATABASE_URL")
                && !url.trim().is_empty()
            {
                return url_server(url.trim(), "DATABASE_URL");
            }
            let local = parse(LOCAL_URL, "the default URL")?;
            if connect(&local).await.is_ok() {
                return Ok(Server {
                    origin: format!("the local server at {}", describe(&local.config)),
                    config: local.config,
                    tls: local.tls,
                    cluster: None,
                });
            }
            throwaway(Some(
                "no PostgreSQL: DATABASE_URL is not set, nothing answers on 127.0.0.1:5432 \
                 (user postgres), and initdb/pg_ctl are neither on PATH nor under \
                 /usr/lib/postgresql/*/bin; install the PostgreSQL server or set DATABASE_URL",
            ))
            .await
        }
    }
}

/// Starts a throwaway cluster (see [`crate::scratch`]), tuned for speed: its
/// data is thrown away at the end. `no_binaries` replaces the message when
/// the server binaries are missing.
async fn throwaway(no_binaries: Option<&str>) -> Result<Server, DemoError> {
    let setup = ClusterSetup {
        name: "demo".to_owned(),
        conf: "synchronous_commit = off\nfull_page_writes = off\n".to_owned(),
        ..ClusterSetup::default()
    };
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&setup))
        .await
        .map_err(|e| DemoError::new(format!("starting the throwaway cluster failed: {e}")))?
        .map_err(|e| match (e.kind(), no_binaries) {
            (ScratchErrorKind::NoBinaries, Some(message)) => DemoError::new(message),
            (ScratchErrorKind::Root, _) => DemoError::new(format!(
                "{e}; run the demo as another user or set DATABASE_URL"
            )),
            _ => DemoError::new(e.to_string()),
        })?;
    let config = cluster.config("postgres");
    Ok(Server {
        origin: format!(
            "a throwaway cluster at {} in {}",
            describe(&config),
            cluster.dir().display()
        ),
        config,
        tls: TlsOptions::default(),
        cluster: Some(cluster),
    })
}
