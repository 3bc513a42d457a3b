//! What the worker's integration tests share: the binary, run as a process.
//! A module of each test binary (`mod common;`), not a test of its own; each
//! uses part of it.
#![allow(dead_code)]

use std::process::{Command, Output};

use calendar_sync_tests::WorkerProcess;

/// The binary under test, built with this test build's features.
pub const BIN: &str = env!("CARGO_BIN_EXE_calendar-sync-worker");

/// `calendar-sync-worker ARGS` with a clean environment (PATH, nothing else
/// inherited that could steer it) plus `env`.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied());
    command
}

/// [`command`], run to completion.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env).output().expect("run the binary")
}

/// An output stream as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `calendar-sync-worker run` in the background with `env` (see
/// [`WorkerProcess`]).
pub fn worker(name: &str, env: &[(String, String)]) -> WorkerProcess {
    WorkerProcess::spawn(name, std::path::Path::new(BIN), &["run"], env)
}
