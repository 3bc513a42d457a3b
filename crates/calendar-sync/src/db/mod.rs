//! Database access: a connection pool for ordinary statements, and dedicated
//! connections for what must stay on one session (row locks, LISTEN, migrations).

pub(crate) mod connect;
pub(crate) mod migrate;
mod tls;

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Client, Config, Connection, NoTls, Socket, Statement};
use tokio_util::sync::CancellationToken;

use crate::db::connect::{ConnectOptions, SslMode, cause};
use crate::error::Error;
use crate::minute_counts::MinuteCounts;
use crate::store::NOTIFY_CHANNEL;

/// How the library reaches PostgreSQL.
///
/// Row locks are session-level advisory locks held on a dedicated connection,
/// so the database must be reached directly or through a *session*-mode pooler.
/// A transaction-mode pooler (PgBouncer `pool_mode = transaction`, Supabase's
/// pooler port 6543) hands each statement to any backend and breaks both the
/// locks and LISTEN.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    config: Config,
    dialer: Dialer,
    target: Arc<str>,
    /// This process's per-minute counts not yet written (shared by clones).
    minute_counts: Arc<MinuteCounts>,
    /// Calls waiting for quota, in line per connection (shared by clones).
    payers: Arc<crate::google::budget::Lines>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio_postgres::Config's Debug redacts the password.
        f.debug_struct("Database")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Connects lazily to `url` (a libpq-style URL or key=value string, with
    /// libpq's `sslmode`, `sslrootcert`, `sslcert`, `sslkey` and `PGSSL*`
    /// variables) with a pool of `pool_size` connections.
    ///
    /// ```no_run
    /// # fn example() -> Result<(), calendar_sync::Error> {
    /// use calendar_sync::Database;
    ///
    /// // Nothing is dialled until the first statement.
    /// let db = Database::connect(
    ///     "postgres://worker@db.internal:5432/app?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem",
    ///     8,
    /// )?;
    /// # let _ = db; Ok(()) }
    /// ```
    pub fn connect(url: &str, pool_size: usize) -> Result<Self, Error> {
        Self::with_options(ConnectOptions::parse(url)?, pool_size)
    }

    /// Connects lazily with `config` (its sslmode disable, prefer or require,
    /// unverified) and a pool of `pool_size` connections.
    pub fn from_config(config: Config, pool_size: usize) -> Result<Self, Error> {
        Self::with_options(ConnectOptions::from_config(config), pool_size)
    }

    /// Connects lazily with `options` and a pool of `pool_size` connections.
    ///
    /// ```no_run
    /// # fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use calendar_sync::{ConnectOptions, Database};
    ///
    /// let mut options = ConnectOptions::parse(&std::env::var("DATABASE_URL")?)?;
    /// // The session name in pg_stat_activity, unless the URL sets one.
    /// options.default_application_name("billing-calendar-sync");
    /// let db = Database::with_options(options, 16)?;
    /// # let _ = db; Ok(()) }
    /// ```
    pub fn with_options(options: ConnectOptions, pool_size: usize) -> Result<Self, Error> {
        let dialer = Dialer(Arc::new(Libpq::new(&options)?));
        let manager = Manager::from_connect(
            options.config.clone(),
            dialer.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the connection pool: {e}")))?;
        Ok(Self::assemble(pool, options.config, dialer))
    }

    /// Uses the host application's pool; `config` opens the dedicated
    /// connections, with `config`'s own sslmode, unverified. Prefer
    /// [`Database::from_pool_with_tls`] to pass the connector the pool uses.
    ///
    /// ```no_run
    /// # fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use calendar_sync::Database;
    /// use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
    /// use tokio_postgres::NoTls;
    ///
    /// let config: tokio_postgres::Config = "host=db.internal user=app dbname=app".parse()?;
    /// let recycling_method = RecyclingMethod::Fast;
    /// let manager = Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method });
    /// let pool = Pool::builder(manager).max_size(16).build()?;
    /// // The application keeps using `pool`; the drainer borrows it.
    /// let db = Database::from_pool(pool.clone(), config);
    /// # let _ = db; Ok(()) }
    /// ```
    pub fn from_pool(pool: Pool, config: Config) -> Self {
        let options = ConnectOptions::from_config(config);
        match Libpq::new(&options) {
            Ok(libpq) => Self::assemble(pool, options.config, Dialer(Arc::new(libpq))),
            Err(_) => Self::from_pool_with_tls(pool, options.config, NoTls),
        }
    }

    /// Uses the host application's pool, and its TLS connector (e.g. a
    /// `tokio_postgres_rustls::MakeRustlsConnect`) for the dedicated connections.
    pub fn from_pool_with_tls<T>(pool: Pool, config: Config, tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        Self::assemble(pool, config, Dialer(Arc::new(Given(tls))))
    }

    fn assemble(pool: Pool, config: Config, dialer: Dialer) -> Self {
        let target = describe_target(&config).into();
        Self {
            pool,
            config,
            dialer,
            target,
            minute_counts: Arc::default(),
            payers: Arc::default(),
        }
    }

    /// Where this process's calls wait for a connection's quota.
    pub(crate) fn payers(&self) -> &crate::google::budget::Lines {
        &self.payers
    }

    /// The per-minute counts of everything using this database (and its clones).
    pub(crate) fn minute_counts(&self) -> &MinuteCounts {
        &self.minute_counts
    }

    /// The pool for ordinary statements.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A pooled session; a failure names the server and the cause.
    pub async fn client(&self) -> Result<Object, Error> {
        self.pool.get().await.map_err(|e| self.unreachable(&e))
    }

    /// What was tried and why it failed, without a password.
    pub(crate) fn unreachable(&self, e: &(dyn std::error::Error + 'static)) -> Error {
        Error::Connect {
            target: self.target.to_string(),
            cause: cause(e),
        }
    }

    /// Opens a dedicated connection, driven by a background task.
    pub async fn dedicated(&self) -> Result<Client, Error> {
        let (client, _, _) = self.dial().await?;
        Ok(client)
    }

    async fn dial(&self) -> Result<(Client, Session, JoinHandle<()>), Error> {
        self.dialer
            .0
            .dial(&self.config)
            .await
            .map_err(|e| self.unreachable(&e))
    }

    /// Opens a worker's lock connection: it holds the row locks, listens for
    /// new-row notifications, and reports its own death.
    pub(crate) async fn lock_connection(&self) -> Result<LockConnection, Error> {
        let (client, session, _) = self.dial().await?;
        // A session stuck inside a claim transaction would block every worker's
        // claims; PostgreSQL ends such a session (and frees its locks) instead.
        client
            .batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = '30s'; LISTEN {NOTIFY_CHANNEL}"
            ))
            .await?;
        // Operators tell it from the pool's sessions in pg_stat_activity.
        let name = self
            .config
            .get_application_name()
            .unwrap_or("calendar-sync");
        client
            .execute(
                "SELECT set_config('application_name', $1, false)",
                &[&format!("{name} (lock)")],
            )
            .await?;
        Ok(LockConnection {
            client,
            notified: session.notified,
            closed: session.closed,
            statements: HashMap::new(),
        })
    }
}

/// `host:port, database D, user U` of the first host (no password).
fn describe_target(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("?");
    let user = config.get_user().unwrap_or("?");
    format!("{host}:{port}, database {db:?}, user {user:?}")
}

/// What a session's driver task reports: notifications and the session's end.
#[derive(Clone, Default)]
struct Session {
    notified: Arc<Notify>,
    closed: CancellationToken,
}

/// Opens sessions for the pool and the dedicated connections alike.
#[derive(Clone)]
struct Dialer(Arc<dyn Dial>);

type Dialed = Result<(Client, Session, JoinHandle<()>), tokio_postgres::Error>;

trait Dial: Send + Sync {
    fn dial<'a>(&'a self, config: &'a Config) -> BoxFuture<'a, Dialed>;
}

impl deadpool_postgres::Connect for Dialer {
    fn connect(
        &self,
        config: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let config = config.clone();
        Box::pin(async move {
            let (client, _, driver) = self.0.dial(&config).await?;
            Ok((client, driver))
        })
    }
}

/// libpq's sslmode on rustls: `allow` tries plaintext, then TLS; `prefer`
/// TLS, then plaintext; `require` and `verify-*` TLS only.
struct Libpq {
    mode: SslMode,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Libpq {
    fn new(options: &ConnectOptions) -> Result<Self, Error> {
        Ok(Self {
            mode: options.tls.mode,
            tls: crate::db::tls::connector(&options.tls)?,
        })
    }
}

impl Dial for Libpq {
    fn dial<'a>(&'a self, config: &'a Config) -> BoxFuture<'a, Dialed> {
        use tokio_postgres::config::SslMode as Pg;
        Box::pin(async move {
            let with = |mode| {
                let mut c = config.clone();
                c.ssl_mode(mode);
                c
            };
            let tls = match (&self.tls, self.mode) {
                (Some(tls), SslMode::Allow) => match open(&with(Pg::Disable), NoTls).await {
                    Ok(dialed) => return Ok(dialed),
                    Err(_) => tls,
                },
                (Some(tls), _) => tls,
                (None, _) => return open(&with(Pg::Disable), NoTls).await,
            };
            let mode = match self.mode {
                SslMode::Prefer => Pg::Prefer,
                _ => Pg::Require,
            };
            open(&with(mode), tls.clone()).await
        })
    }
}

/// A connector the host application chose, used as tokio-postgres uses it.
struct Given<T>(T);

impl<T> Dial for Given<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn dial<'a>(&'a self, config: &'a Config) -> BoxFuture<'a, Dialed> {
        Box::pin(open(config, self.0.clone()))
    }
}

/// Connects and spawns the driver, which forwards notifications and cancels
/// `closed` when the session ends.
async fn open<T>(config: &Config, tls: T) -> Dialed
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await?;
    let session = Session::default();
    let driver = tokio::spawn(drive(connection, session.clone()));
    Ok((client, session, driver))
}

async fn drive<S, T>(mut connection: Connection<S, T>, session: Session)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = messages.next().await {
        match message {
            Ok(AsyncMessage::Notification(_)) => session.notified.notify_one(),
            // Such as migrate's "relation … already exists, skipping": not news.
            Ok(AsyncMessage::Notice(notice)) => {
                tracing::debug!(notice = %notice, "PostgreSQL notice");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %cause(&e), "database session failed");
                break;
            }
        }
    }
    session.closed.cancel();
}

/// A worker's dedicated session.
pub(crate) struct LockConnection {
    pub client: Client,
    /// Signalled by each NOTIFY on the outbox channel.
    pub notified: Arc<Notify>,
    /// Cancelled when the connection dies.
    pub closed: CancellationToken,
    /// The hot statements, parsed and planned once per session.
    statements: HashMap<&'static str, Statement>,
}

impl LockConnection {
    /// `sql` prepared on this session (the first use prepares it).
    pub(crate) async fn prepared(
        &mut self,
        sql: &'static str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}
