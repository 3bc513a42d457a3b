//! Where the demo's PostgreSQL comes from: a URL, the local server on
//! 127.0.0.1:5432, or a throwaway cluster started from the installed server
//! binaries (stopped and deleted when dropped).

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use calendar_sync::{ConnectOptions, TlsOptions};
use tokio_postgres::{Client, Config};

use crate::DemoError;

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
        DbChoice::Throwaway => {
            let bins = find_binaries().ok_or_else(|| {
                DemoError::new(
                    "no PostgreSQL server binaries: initdb and pg_ctl are neither on PATH nor \
                     under /usr/lib/postgresql/*/bin",
                )
            })?;
            throwaway(bins).await
        }
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
            match find_binaries() {
                Some(bins) => throwaway(bins).await,
                None => Err(DemoError::new(
                    "no PostgreSQL: DATABASE_URL is not set, nothing answers on 127.0.0.1:5432 \
                     (user postgres), and initdb/pg_ctl are neither on PATH nor under \
                     /usr/lib/postgresql/*/bin; install the PostgreSQL server or set DATABASE_URL",
                )),
            }
        }
    }
}

/// Paths of `initdb` and `pg_ctl`, found together in one directory.
struct Binaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

fn find_binaries() -> Option<Binaries> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // Debian/Ubuntu keep the server binaries off PATH; newest version first.
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    dirs.extend(versions.into_iter().map(|(_, dir)| dir));
    dirs.into_iter().find_map(|dir| {
        let (initdb, pg_ctl) = (dir.join("initdb"), dir.join("pg_ctl"));
        (initdb.is_file() && pg_ctl.is_file()).then(|| Binaries {
            initdb: initdb.canonicalize().unwrap_or(initdb),
            pg_ctl: pg_ctl.canonicalize().unwrap_or(pg_ctl),
        })
    })
}

async fn throwaway(bins: Binaries) -> Result<Server, DemoError> {
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(bins))
        .await
        .map_err(|e| DemoError::new(format!("starting the throwaway cluster failed: {e}")))??;
    let mut config = Config::new();
    config
        .host("127.0.0.1")
        .port(cluster.port)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(3));
    Ok(Server {
        origin: format!(
            "a throwaway cluster at {} in {}",
            describe(&config),
            cluster.dir.display()
        ),
        config,
        tls: TlsOptions::default(),
        cluster: Some(cluster),
    })
}

/// A PostgreSQL cluster in a temporary directory, stopped and deleted on drop
/// (also when the demo fails half-way).
pub(crate) struct Cluster {
    dir: PathBuf,
    pg_ctl: PathBuf,
    /// `runuser` when we are root: initdb and postgres refuse to run as root.
    run_as_postgres: Option<PathBuf>,
    port: u16,
    started: bool,
}

impl Cluster {
    fn start(bins: Binaries) -> Result<Cluster, DemoError> {
        let dir = std::env::temp_dir().join(format!(
            "calendar-sync-demo-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        fs::create_dir(&dir)
            .map_err(|e| DemoError::new(format!("cannot create {}: {e}", dir.display())))?;
        let mut cluster = Cluster {
            dir,
            pg_ctl: bins.pg_ctl,
            run_as_postgres: None,
            port: 0,
            started: false,
        };
        if is_root() {
            let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    DemoError::new(
                        "initdb refuses to run as root and runuser is not installed to run it \
                         as the postgres user; run the demo as another user or set DATABASE_URL",
                    )
                })?;
            let (uid, gid) = os_user("postgres").ok_or_else(|| {
                DemoError::new(
                    "initdb refuses to run as root and there is no `postgres` OS user to run \
                     it as; run the demo as another user or set DATABASE_URL",
                )
            })?;
            std::os::unix::fs::chown(&cluster.dir, Some(uid), Some(gid))
                .map_err(|e| DemoError::new(format!("chown {}: {e}", cluster.dir.display())))?;
            cluster.run_as_postgres = Some(runuser);
        }
        let data = cluster.dir.join("data");
        let output = cluster
            .command(&bins.initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .output();
        check("initdb", output)?;

        cluster.port = free_port()?;
        let options = format!(
            "-p {} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            cluster.port,
            cluster.dir.display()
        );
        cluster.started = true; // from here on, drop tries to stop it
        let output = cluster
            .command(&cluster.pg_ctl)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(cluster.dir.join("server.log"))
            .args(["-w", "-t", "30", "-o", &options, "start"])
            .output();
        check("pg_ctl start", output).map_err(|e| {
            let log = fs::read_to_string(cluster.dir.join("server.log")).unwrap_or_default();
            match log.lines().rev().find(|l| !l.trim().is_empty()) {
                Some(last) => DemoError::new(format!("{e} (server log: {last})")),
                None => e,
            }
        })?;
        Ok(cluster)
    }

    /// `program`, as the postgres user when we are root, run in the cluster's
    /// directory (the postgres user may not be able to enter ours).
    fn command(&self, program: &Path) -> Command {
        let mut command = match &self.run_as_postgres {
            Some(runuser) => {
                let mut command = Command::new(runuser);
                command.args(["-u", "postgres", "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        command.current_dir(&self.dir);
        command
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.started {
            let _ = self
                .command(&self.pg_ctl)
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w", "-t", "30", "stop"])
                .output();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn check(what: &str, output: std::io::Result<Output>) -> Result<(), DemoError> {
    let output = output.map_err(|e| DemoError::new(format!("{what} could not run: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stderr
        .lines()
        .chain(stdout.lines())
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("no output");
    Err(DemoError::new(format!(
        "{what} failed ({}): {last}",
        output.status
    )))
}

fn free_port() -> Result<u16, DemoError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DemoError::new(format!("no free TCP port on 127.0.0.1: {e}")))
}

fn is_root() -> bool {
    // /proc/self belongs to the process's effective user.
    match fs::metadata("/proc/self") {
        Ok(m) => m.uid() == 0,
        Err(_) => Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0"),
    }
}

/// uid and gid of an OS user, from /etc/passwd.
fn os_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 3 && fields[0] == name)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}
