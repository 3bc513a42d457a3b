//! The library's error type.

/// Errors of the drainer and its operator functions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A statement or connection failed.
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// No pooled connection could be had.
    #[error("database pool error: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
    /// A configuration value is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The worker's lock connection died; its in-flight items were abandoned and
    /// will be recovered by the next poll of any worker.
    #[error("the lock connection to the database was lost")]
    LockConnectionLost,
}
