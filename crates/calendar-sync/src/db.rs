//! Database access: a connection pool for ordinary statements, and dedicated
//! connections for what must stay on one session (row locks, LISTEN, migrations).

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
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
    config: tokio_postgres::Config,
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
    /// Connects lazily to `url` (a libpq-style URL or key=value string) with a
    /// pool of `pool_size` connections.
    pub fn connect(url: &str, pool_size: usize) -> Result<Self, Error> {
        Self::from_config(url.parse()?, pool_size)
    }

    /// Connects lazily with `config` and a pool of `pool_size` connections.
    pub fn from_config(config: tokio_postgres::Config, pool_size: usize) -> Result<Self, Error> {
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the connection pool: {e}")))?;
        Ok(Self { pool, config })
    }

    /// Uses the host application's pool; `config` opens the dedicated connections.
    pub fn from_pool(pool: Pool, config: tokio_postgres::Config) -> Self {
        Self { pool, config }
    }

    /// The pool for ordinary statements.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Opens a dedicated connection, driven by a background task.
    pub async fn dedicated(&self) -> Result<Client, Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "dedicated connection closed");
            }
        });
        Ok(client)
    }

    /// Opens a worker's lock connection: it holds the row locks, listens for
    /// new-row notifications, and reports its own death.
    pub(crate) async fn lock_connection(&self) -> Result<LockConnection, Error> {
        let (client, mut connection) = self.config.connect(NoTls).await?;
        let notified = Arc::new(Notify::new());
        let closed = CancellationToken::new();
        let (wake, dead) = (notified.clone(), closed.clone());
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "lock connection failed");
                        break;
                    }
                }
            }
            dead.cancel();
        });
        // A session stuck inside a claim transaction would block every worker's
        // claims; PostgreSQL ends such a session (and frees its locks) instead.
        client
            .batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = '30s'; \
                 SET application_name = 'calendar-sync'; LISTEN {NOTIFY_CHANNEL}"
            ))
            .await?;
        Ok(LockConnection {
            client,
            notified,
            closed,
            statements: HashMap::new(),
        })
    }
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
    pub async fn prepared(
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
