//! The library's error type. Every message keeps its cause: tokio-postgres
//! puts PostgreSQL's own message and the OS error in `source()`, so the
//! variants print the whole chain.

use crate::db::connect::cause;

/// Errors of the drainer and its operator functions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A statement or connection failed.
    #[error("database error: {}", cause(.0))]
    Database(#[from] tokio_postgres::Error),
    /// No pooled connection could be had.
    #[error("database pool error: {}", cause(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A session to the server could not be opened.
    #[error("cannot connect to PostgreSQL at {target}: {cause}")]
    Connect {
        /// `host:port, database, user` (never a password).
        target: String,
        /// Why, as the server or the operating system said it.
        cause: String,
    },
    /// Applying migrations failed.
    #[error("migration failed: {}", cause(.0))]
    Migration(#[from] refinery::Error),
    /// A configuration value is unusable: the text names the setting, what
    /// is wrong with it and, where there is one, the cause (the file that
    /// could not be read, the parser's words). Text on purpose, not a variant
    /// per setting: nothing branches on which setting is wrong (an embedding
    /// service fixes its configuration, the worker exits with code 2), and
    /// the causes here are complete in their message.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The worker's lock connection died; its in-flight items were abandoned and
    /// will be recovered by the next poll of any worker.
    #[error("the lock connection to the database was lost")]
    LockConnectionLost,
}
