//! Schema migrations: the plain `.sql` files in `migrations/`, embedded at
//! build time and applied in order by refinery.

use crate::db::Database;
use crate::error::Error;
use crate::store::LOCK_NAMESPACE;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Table in which applied migrations are recorded.
pub const MIGRATION_TABLE: &str = "calendar_sync_migrations";
/// Advisory key serialising migrations, so workers starting together do not race.
const MIGRATION_LOCK_KEY: i32 = -1;

/// Applies every migration not yet applied; returns how many it applied.
/// Safe to run concurrently and repeatedly.
///
/// ```no_run
/// # async fn example(db: &calendar_sync::Database) -> Result<(), calendar_sync::Error> {
/// // At start-up, before the drainer: every process may run it.
/// let applied = calendar_sync::migrate(db).await?;
/// println!("{applied} migrations applied");
/// # Ok(()) }
/// ```
pub async fn migrate(db: &Database) -> Result<usize, Error> {
    let mut client = db.dedicated().await?;
    client
        .execute(
            "SELECT pg_advisory_lock($1, $2)",
            &[&LOCK_NAMESPACE, &MIGRATION_LOCK_KEY],
        )
        .await?;
    let report = embedded::migrations::runner()
        .set_migration_table_name(MIGRATION_TABLE)
        .run_async(&mut client)
        .await;
    // The lock also ends with the connection; unlock explicitly all the same.
    let _ = client
        .execute(
            "SELECT pg_advisory_unlock($1, $2)",
            &[&LOCK_NAMESPACE, &MIGRATION_LOCK_KEY],
        )
        .await;
    Ok(report?.applied_migrations().len())
}

/// The number of migrations this build knows. `status` and `/readyz` compare it
/// with what the database has applied.
pub fn known_migrations() -> usize {
    embedded::migrations::runner().get_migrations().len()
}
