//! `calendar-sync-worker`: runs the calendar-sync drainer and its operator
//! commands. Thin by design: it parses, wires and reports; every behaviour
//! lives in the `calendar-sync` library.
//!
//! Exit codes: 0 success, 1 a runtime failure, 2 a bad flag, environment
//! variable or configuration (one line on stderr, no backtrace).
//!
//! Cargo feature `demo` (default): the `demo` subcommand, which links the
//! demo and the fake Google server. `--no-default-features` builds a lean
//! production binary without them; its `demo` says so and exits 2.

mod cli;
mod commands;
mod http;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::with_default_command(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(args) {
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
    let mut stdout = std::io::stdout();
    if let Command::Demo { verbose } = cli.command {
        return report(demo(cli.log_format, verbose, &mut stdout).await);
    }
    init_tracing(cli.log_format, Logs::Stderr);
    let result = match cli.command {
        Command::Run(args) => commands::run(&args).await,
        Command::Dashboard(args) => commands::dashboard(&args).await,
        Command::Drain(args) => commands::drain(&args.drain, args.once, &mut stdout).await,
        Command::Migrate(db) => commands::migrate(&db, &mut stdout).await,
        Command::Status {
            json,
            database,
            keys,
        } => commands::status(&database, &keys, json, &mut stdout).await,
        Command::Requeue(args) => commands::requeue(&args, &mut stdout).await,
        Command::Cleanup {
            older_than_days,
            database,
        } => commands::cleanup(&database, older_than_days, &mut stdout).await,
        Command::Connections(c) => commands::connections(c, &mut stdout).await,
        Command::Demo { .. } => unreachable!("handled above"),
    };
    report(result)
}

fn report(result: Result<(), commands::Failure>) -> ExitCode {
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

/// The demo's story on stdout; its logs (the staged failures' warnings among
/// them) in a file it names, or on stderr with `-v`.
#[cfg(feature = "demo")]
async fn demo(
    format: LogFormat,
    verbose: bool,
    out: &mut std::io::Stdout,
) -> Result<(), commands::Failure> {
    let runtime = |e: &dyn std::fmt::Display| commands::Failure::Runtime(e.to_string());
    let logs = if verbose {
        init_tracing(format, Logs::Stderr);
        "stderr (-v)".to_owned()
    } else {
        let path = std::env::temp_dir().join("calendar-sync-demo.log");
        let file = std::fs::File::create(&path).map_err(|e| runtime(&e))?;
        init_tracing(format, Logs::File(file));
        format!("{} (-v shows them here)", path.display())
    };
    calendar_sync_demo::run_logged(out, &logs)
        .await
        .map_err(|e| runtime(&e))
}

/// A build without the `demo` feature (a lean production build) has no demo:
/// it says so in one line, and how to get one, with exit code 2.
#[cfg(not(feature = "demo"))]
async fn demo(
    _format: LogFormat,
    _verbose: bool,
    _out: &mut std::io::Stdout,
) -> Result<(), commands::Failure> {
    Err(commands::Failure::Config(
        "this build of calendar-sync-worker has no demo (built without the `demo` feature); \
         run it from a default build: cargo run -p calendar-sync-worker -- demo"
            .to_owned(),
    ))
}

/// Where logs go.
enum Logs {
    Stderr,
    /// The demo's log file.
    #[cfg(feature = "demo")]
    File(std::fs::File),
}

/// Logs filtered by RUST_LOG (default `info`), as text or JSON.
fn init_tracing(format: LogFormat, logs: Logs) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match (logs, format) {
        (Logs::Stderr, LogFormat::Text) => builder.with_writer(std::io::stderr).try_init(),
        (Logs::Stderr, LogFormat::Json) => builder.with_writer(std::io::stderr).json().try_init(),
        #[cfg(feature = "demo")]
        (Logs::File(f), LogFormat::Text) => builder
            .with_writer(std::sync::Mutex::new(f))
            .with_ansi(false)
            .try_init(),
        #[cfg(feature = "demo")]
        (Logs::File(f), LogFormat::Json) => builder
            .with_writer(std::sync::Mutex::new(f))
            .json()
            .try_init(),
    };
}
