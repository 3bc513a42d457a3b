//! `calendar-sync-worker`: runs the calendar-sync drainer and its operator commands.
//!
//! This first cut offers `migrate`; the drain loop and the operator commands
//! arrive with the Google adapter.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("migrate") => migrate().await,
        _ => {
            eprintln!("usage: calendar-sync-worker migrate   (reads DATABASE_URL)");
            ExitCode::from(2)
        }
    }
}

async fn migrate() -> ExitCode {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("error: DATABASE_URL is not set");
        return ExitCode::from(2);
    };
    let db = match calendar_sync::Database::connect(&url, 1) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: DATABASE_URL: {e}");
            return ExitCode::from(2);
        }
    };
    match calendar_sync::migrate(&db).await {
        Ok(applied) => {
            println!("applied {applied} migration(s); schema is current");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
