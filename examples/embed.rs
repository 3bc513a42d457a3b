//! Embedding the drainer in an existing tokio service.
//!
//! - The host and the drainer share one connection pool.
//! - The producer writes its domain row and the outbox row in one transaction.
//! - The drainer stops gracefully together with the host.
//!
//! ```sh
//! DATABASE_URL=postgres://… GOOGLE_CLIENT_ID=… GOOGLE_CLIENT_SECRET=… TOKEN_ENCRYPTION_KEY=… \
//!     cargo run -p calendar-sync-examples --example embed
//! ```

use calendar_sync::{
    CalendarKey, Database, DrainerConfig, EventDetails, EventTiming, GoogleCalendar, GoogleConfig,
    Operation, OutboxDrainer, SourceKey, TokenCipher, UpsertEvent,
};
use chrono::{DateTime, Duration};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use secrecy::SecretString;
use tokio_postgres::NoTls;

type AnyError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    let env = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    // The host's own pool; the drainer borrows it for ordinary statements and
    // opens one dedicated connection of its own for row locks and LISTEN.
    let pg: tokio_postgres::Config = env("DATABASE_URL")?.parse()?;
    let manager = Manager::from_config(
        pg.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(16).build()?;
    let db = Database::from_pool(pool.clone(), pg);
    calendar_sync::migrate(&db).await?;
    pool.get()
        .await?
        .batch_execute("CREATE TABLE IF NOT EXISTS tasks (id uuid PRIMARY KEY, title text NOT NULL, due timestamptz NOT NULL)")
        .await?;

    let cipher = TokenCipher::new(
        &env("TOKEN_ENCRYPTION_KEY")?,
        &std::env::var("TOKEN_ENCRYPTION_OLD_KEYS").unwrap_or_default(),
    )?;
    let google = GoogleConfig::new(
        env("GOOGLE_CLIENT_ID")?,
        SecretString::from(env("GOOGLE_CLIENT_SECRET")?),
    );
    let calendar = GoogleCalendar::new(&db, cipher, google)?;
    let drainer = OutboxDrainer::new(db, calendar, DrainerConfig::default())?;
    let handle = drainer.start();

    // The host's business: a task's deadline is set, and its calendar event follows.
    let task_id = uuid::Uuid::new_v4();
    set_deadline(
        &pool,
        task_id,
        "Complete user interviews",
        "2025-01-15T14:00:00Z",
    )
    .await?;

    // The host shuts down on Ctrl-C; the drainer finishes in-flight items first.
    tokio::signal::ctrl_c().await?;
    let report = handle.stop().await;
    println!("drainer stopped: {report:?}");
    Ok(())
}

/// Writes the domain change and the outbox row in one transaction: both commit
/// or neither does.
async fn set_deadline(
    pool: &Pool,
    task_id: uuid::Uuid,
    title: &str,
    due: &str,
) -> Result<(), AnyError> {
    let due = DateTime::parse_from_rfc3339(due)?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO tasks (id, title, due) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET title = excluded.title, due = excluded.due",
        &[&task_id, &title, &due],
    )
    .await?;
    let operation = Operation::UpsertEvent(UpsertEvent {
        source: SourceKey {
            calendar: CalendarKey {
                workspace_id: "9f1c2a3e-0000-4000-8000-000000000001".into(),
                calendar_id: "primary".into(),
            },
            source_type: "task".into(),
            source_id: task_id.to_string(),
        },
        event_type: "BLOCKER_DEADLINE".into(),
        event: EventDetails {
            title: title.into(),
            description: Some("P1 blocking task".into()),
            timing: EventTiming::Timed {
                start: due,
                end: due + Duration::hours(1),
            },
            time_zone: None,
            options: Default::default(),
        },
    });
    // `&*tx`: the tokio-postgres transaction inside deadpool's wrapper.
    calendar_sync::enqueue(&*tx, &operation).await?;
    tx.commit().await?;
    Ok(())
}
