//! A scratch PostgreSQL cluster: `initdb` and `pg_ctl` from the installed
//! server binaries, in a temporary directory, on a free port of 127.0.0.1,
//! run as the `postgres` OS user when we are root (initdb and postgres refuse
//! to run as root). Stopped and deleted on drop, also when its user fails
//! half-way.
//!
//! The demo starts one when no other server answers; the end-to-end tests
//! (`calendar-sync-tests`) start them to restart, crash and TLS-configure a
//! server they own. One module for both, so that a fix to one is a fix to the
//! other.

use std::fmt;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// What a [`Cluster`] gets beyond initdb's defaults.
#[derive(Debug, Default, Clone)]
pub struct ClusterSetup {
    /// Names its directory, `calendar-sync-<name>-<random>` in the temporary
    /// directory (empty: `cluster`).
    pub name: String,
    /// Files (name, contents) written into the data directory, mode 0600.
    pub files: Vec<(String, String)>,
    /// Lines appended to `postgresql.conf`.
    pub conf: String,
    /// A replacement `pg_hba.conf`.
    pub hba: Option<String>,
}

/// Why no cluster started (or stopped); its `Display` is one line.
#[derive(Debug)]
pub struct ScratchError {
    kind: ScratchErrorKind,
    message: String,
    detail: String,
}

/// What kind of failure a [`ScratchError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScratchErrorKind {
    /// initdb and pg_ctl are not installed (PATH, /usr/lib/postgresql/*/bin).
    NoBinaries,
    /// We are root, and there is no `postgres` OS user or no `runuser` to run
    /// the server as.
    Root,
    /// initdb, pg_ctl or the file system failed.
    Failed,
}

impl ScratchError {
    fn new(kind: ScratchErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            detail: String::new(),
        }
    }

    fn failed(message: impl Into<String>) -> Self {
        Self::new(ScratchErrorKind::Failed, message)
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> ScratchErrorKind {
        self.kind
    }

    /// Whether no cluster can be started on this machine at all (no server
    /// binaries, or root without a `postgres` user to run them as), as
    /// opposed to a start that failed.
    pub fn is_unavailable(&self) -> bool {
        self.kind != ScratchErrorKind::Failed
    }

    /// Everything the failed program wrote (and the server log), for a
    /// test's failure message; empty when there is nothing more than the line.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for ScratchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScratchError {}

/// How [`Cluster::stop`] stops the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Clients disconnected, a clean shutdown.
    Fast,
    /// A crash: the next start recovers from the WAL.
    Immediate,
}

/// A PostgreSQL cluster in a temporary directory, owned by its creator: it
/// can stop, crash and restart it. Stopped (immediately: its data is thrown
/// away) and deleted on drop.
pub struct Cluster {
    dir: PathBuf,
    pg_ctl: PathBuf,
    /// `runuser` when we are root.
    runuser: Option<PathBuf>,
    port: u16,
    running: bool,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Creates and starts a cluster (blocking: call it from
    /// `spawn_blocking` in async code). The server trusts every local
    /// connection of user `postgres` and runs with `fsync=off`.
    pub fn start(setup: &ClusterSetup) -> Result<Cluster, ScratchError> {
        let (initdb, pg_ctl) = server_binaries().ok_or_else(|| {
            ScratchError::new(
                ScratchErrorKind::NoBinaries,
                "no PostgreSQL server binaries: initdb and pg_ctl are neither on PATH nor \
                 under /usr/lib/postgresql/*/bin",
            )
        })?;
        let name = if setup.name.is_empty() {
            "cluster"
        } else {
            &setup.name
        };
        let dir = std::env::temp_dir().join(format!(
            "calendar-sync-{name}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        fs::create_dir(&dir)
            .map_err(|e| ScratchError::failed(format!("cannot create {}: {e}", dir.display())))?;
        // From here on, drop deletes the directory.
        let mut cluster = Cluster {
            dir,
            pg_ctl,
            runuser: None,
            port: 0,
            running: false,
        };
        if is_root() {
            cluster.runuser = Some(cluster.run_as_postgres()?);
        }
        let data = cluster.dir.join("data");
        let output = cluster
            .command(&initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .output();
        check("initdb", output)?;
        cluster.configure(&data, setup)?;
        cluster.port = free_port()
            .map_err(|e| ScratchError::failed(format!("no free TCP port on 127.0.0.1: {e}")))?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// `runuser`, with the directory handed to the `postgres` OS user.
    fn run_as_postgres(&self) -> Result<PathBuf, ScratchError> {
        let root = |what: &str| {
            ScratchError::new(
                ScratchErrorKind::Root,
                format!("initdb refuses to run as root and {what}"),
            )
        };
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| root("runuser is not installed to run it as the postgres user"))?;
        let (uid, gid) = os_user("postgres")
            .ok_or_else(|| root("there is no `postgres` OS user to run it as"))?;
        std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid))
            .map_err(|e| ScratchError::failed(format!("chown {}: {e}", self.dir.display())))?;
        Ok(runuser)
    }

    /// Writes the setup's files (owned by the server's user, mode 0600) and
    /// configuration into the data directory.
    fn configure(&self, data: &Path, setup: &ClusterSetup) -> Result<(), ScratchError> {
        let failed = |what: &str, path: &Path, e: std::io::Error| {
            ScratchError::failed(format!("{what} {}: {e}", path.display()))
        };
        let owner = self.runuser.as_ref().and_then(|_| os_user("postgres"));
        let hba = setup
            .hba
            .as_ref()
            .map(|h| ("pg_hba.conf".to_owned(), h.clone()));
        for (name, text) in setup.files.iter().cloned().chain(hba) {
            let path = data.join(&name);
            fs::write(&path, text).map_err(|e| failed("write", &path, e))?;
            fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(|e| failed("chmod", &path, e))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|e| failed("chown", &path, e))?;
            }
        }
        if setup.conf.is_empty() {
            return Ok(());
        }
        let conf = data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).map_err(|e| failed("read", &conf, e))?;
        text.push('\n');
        text.push_str(&setup.conf);
        fs::write(&conf, text).map_err(|e| failed("write", &conf, e))
    }

    /// `program`, as the postgres user when we are root, run in the cluster's
    /// directory (the postgres user may not be able to enter ours).
    fn command(&self, program: &Path) -> Command {
        let mut command = match &self.runuser {
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

    fn start_server(&mut self) -> Result<(), ScratchError> {
        let options = format!(
            "-p {} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        self.running = true; // from here on, drop tries to stop it
        let output = self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "30", "-o", &options, "start"])
            .output();
        check("pg_ctl start", output).map_err(|mut e| {
            let log = self.server_log();
            if let Some(last) = log.lines().rev().find(|l| !l.trim().is_empty()) {
                e.message
                    .push_str(&format!(" (server log: {})", last.trim()));
            }
            e.detail.push_str(&format!("\nserver log:\n{log}"));
            e
        })
    }

    /// Stops the server.
    pub fn stop(&mut self, mode: StopMode) -> Result<(), ScratchError> {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let output = self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", mode, "-w", "-t", "30", "stop"])
            .output();
        check("pg_ctl stop", output)?;
        self.running = false;
        Ok(())
    }

    /// Starts the stopped server again, on the same port.
    pub fn restart(&mut self) -> Result<(), ScratchError> {
        self.start_server()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (its data, its log, and the server's Unix
    /// socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Connection settings for a database of the cluster: user `postgres`
    /// over TCP, a 3 s connect timeout.
    pub fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(3));
        config
    }

    /// The URL of a database of the cluster (user `postgres`).
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    /// The server's log so far.
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.stop(StopMode::Immediate);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A free TCP port on 127.0.0.1 (free when asked: another process may take
/// it before it is used).
pub fn free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// `initdb` and `pg_ctl` from one directory: PATH, then Debian's
/// /usr/lib/postgresql/<version>/bin (kept off PATH), newest first.
fn server_binaries() -> Option<(PathBuf, PathBuf)> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    dirs.extend(versions.into_iter().map(|(_, dir)| dir));
    dirs.into_iter().find_map(|dir| {
        let (initdb, pg_ctl) = (dir.join("initdb"), dir.join("pg_ctl"));
        (initdb.is_file() && pg_ctl.is_file()).then(|| {
            (
                initdb.canonicalize().unwrap_or(initdb),
                pg_ctl.canonicalize().unwrap_or(pg_ctl),
            )
        })
    })
}

/// Ok when the program ran and succeeded; else one line (the last line it
/// wrote) and, as the detail, all it wrote.
fn check(what: &str, output: std::io::Result<Output>) -> Result<(), ScratchError> {
    let output = output.map_err(|e| ScratchError::failed(format!("{what} could not run: {e}")))?;
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
    let mut e = ScratchError::failed(format!(
        "{what} failed ({}): {}",
        output.status,
        last.trim()
    ));
    e.detail = format!("{stderr}{stdout}");
    Err(e)
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
