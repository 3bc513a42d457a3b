//! `calendar-sync-worker`: runs the calendar-sync drainer and its operator
//! commands. Thin by design: it parses, wires and reports; every behaviour
//! lives in the `calendar-sync` library.
//!
//! Exit codes: 0 success, 1 a runtime failure, 2 a bad flag, environment
//! variable or configuration (one line on stderr, no backtrace).

mod cli;
mod commands;
mod http;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", cli::one_line(&e, &Cli::command()));
            return ExitCode::from(2);
        }
    };
    init_tracing(cli.settings.log_format);
    let mut stdout = std::io::stdout();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => commands::run(&cli.settings).await,
        Command::Drain { once } => commands::drain(&cli.settings, once, &mut stdout).await,
        Command::Migrate => commands::migrate(&cli.settings, &mut stdout).await,
        Command::Status { json } => commands::status(&cli.settings, json, &mut stdout).await,
        Command::Requeue(args) => commands::requeue(&cli.settings, &args, &mut stdout).await,
        Command::Cleanup { older_than_days } => {
            commands::cleanup(&cli.settings, older_than_days, &mut stdout).await
        }
        Command::Connections(c) => commands::connections(&cli.settings, c, &mut stdout).await,
        Command::Demo => calendar_sync_demo::run(&mut stdout)
            .await
            .map_err(|e| commands::Failure::Runtime(e.to_string())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(commands::Failure::Config(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(commands::Failure::Runtime(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by RUST_LOG (default `info`), as text or JSON.
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
