//! The command line helps: each subcommand's --help lists what it reads,
//! usage errors are complete, variables a subcommand does not read cannot stop
//! it, and the output of migrate and demo is undisturbed by logs.

use calendar_sync_tests::TestDb;

mod common;
use common::{run, text};

#[test]
fn each_subcommands_help_lists_only_what_it_reads() {
    let help = |sub: &str| {
        let out = run(&[sub, "--help"], &[]);
        assert_eq!(out.status.code(), Some(0), "{sub} --help");
        text(&out.stdout)
    };
    let google = [
        "GOOGLE_CLIENT_ID",
        "CALENDAR_SYNC_CONCURRENCY",
        "TOKEN_ENCRYPTION_KEY",
    ];
    for sub in ["migrate", "status", "cleanup", "requeue"] {
        let h = help(sub);
        assert!(h.contains("DATABASE_URL"), "{sub}: {h}");
        for var in google {
            // `status` reads the keys (optionally) to name unknown key ids.
            if sub == "status" && var == "TOKEN_ENCRYPTION_KEY" {
                assert!(h.contains(var), "status --help lacks {var}: {h}");
                continue;
            }
            assert!(!h.contains(var), "{sub} --help shows {var}: {h}");
        }
    }
    let h = help("run");
    for var in google
        .iter()
        .chain(&["DATABASE_URL", "CALENDAR_SYNC_HTTP_ADDR"])
    {
        assert!(h.contains(var), "run --help lacks {var}");
    }
    let h = help("dashboard");
    for var in ["DATABASE_URL", "CALENDAR_SYNC_HTTP_ADDR", "127.0.0.1:9464"] {
        assert!(h.contains(var), "dashboard --help lacks {var}: {h}");
    }
    for var in google {
        assert!(!h.contains(var), "dashboard --help shows {var}: {h}");
    }
    let h = help("drain");
    assert!(
        h.contains("GOOGLE_CLIENT_ID") && !h.contains("CALENDAR_SYNC_HTTP_ADDR"),
        "{h}"
    );
}

#[test]
fn usage_errors_name_what_is_missing_in_one_line() {
    for (args, expected) in [
        (vec!["cleanup"], "--older-than-days <N>"),
        (vec!["requeue"], "<ID>"),
        (vec!["connections", "put"], "--workspace <WORKSPACE>"),
    ] {
        let out = run(&args, &[("DATABASE_URL", "postgres://127.0.0.1/x")]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.contains(expected), "{expected} in {stderr:?}");
    }
}

#[tokio::test]
async fn a_variable_a_subcommand_does_not_read_does_not_stop_it() {
    let t = TestDb::new().await;
    let url = t.url();
    let out = run(
        &["status"],
        &[("DATABASE_URL", &url), ("CALENDAR_SYNC_BATCH_SIZE", "abc")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The global flag before the subcommand.
    let out = run(
        &["--log-format", "json", "status"],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(
        &["drain", "--once"],
        &[("DATABASE_URL", &url), ("CALENDAR_SYNC_BATCH_SIZE", "abc")],
    );
    assert_eq!(out.status.code(), Some(2), "drain reads it");
    assert!(text(&out.stderr).contains("CALENDAR_SYNC_BATCH_SIZE"));
}

#[test]
fn a_bad_drift_setting_is_one_line_and_exit_2() {
    for (var, value) in [
        ("CALENDAR_SYNC_DRIFT_POLICY", "heal"),
        ("CALENDAR_SYNC_DRIFT_CHECK_INTERVAL_MS", "-5"),
        ("CALENDAR_SYNC_DRIFT_CHECK_INTERVAL_MS", "soon"),
    ] {
        let env = [("DATABASE_URL", "postgres://127.0.0.1/x"), (var, value)];
        let out = run(&["drain", "--once"], &env);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.contains(var), "{var} in {stderr:?}");
    }
}

#[tokio::test]
async fn a_second_migrate_prints_no_notice() {
    let t = TestDb::empty().await;
    let url = t.url();
    for _ in 0..2 {
        let out = run(&["migrate"], &[("DATABASE_URL", &url)]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let all = text(&out.stderr) + &text(&out.stdout);
        assert!(!all.contains("NOTICE"), "{all}");
        assert!(!all.contains("already exists"), "{all}");
    }
}

#[cfg(feature = "demo")]
#[test]
fn the_demo_is_listed_in_help() {
    let out = run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("demo ")),
        "{help}"
    );
}

/// `cargo test -p calendar-sync-worker --no-default-features --test usage`
/// runs this one against the lean binary.
#[cfg(not(feature = "demo"))]
#[test]
fn a_build_without_the_demo_says_so_in_one_line_and_exits_2() {
    for args in [vec!["demo"], vec!["demo", "-v"]] {
        let out = run(&args, &[("RUST_BACKTRACE", "1")]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
        assert_eq!(stdout, "");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        assert!(
            stderr.contains("has no demo")
                && stderr.contains("`demo` feature")
                && stderr.contains("cargo run -p calendar-sync-worker -- demo"),
            "{stderr}"
        );
    }
    let out = run(&["--help"], &[]);
    assert!(!text(&out.stdout).contains("demo"), "hidden from --help");
}

#[cfg(feature = "demo")]
#[test]
fn the_demo_tells_its_story_without_log_lines() {
    let out = run(&["demo"], &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    for line in stdout.lines().chain(stderr.lines()) {
        assert!(
            !line.contains(" WARN ") && !line.contains(" INFO "),
            "a log line in the demo's output: {line}"
        );
    }
    assert!(
        stdout.contains("on purpose"),
        "failures announced: {stdout}"
    );
    assert!(stdout.contains("logs:"), "the log file named: {stdout}");
}

/// Issue 16: CALENDAR_SYNC_DASHBOARD_TOKEN, for `run` and `dashboard`, set but
/// empty or shorter than 16 characters is one line and exit 2, without the
/// value; `--help` documents it without showing it.
#[test]
fn a_short_or_empty_dashboard_token_is_one_line_and_exit_2() {
    let db = (
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    for sub in ["run", "dashboard"] {
        for value in ["", "short-secret-1"] {
            let out = run(&[sub], &[db, ("CALENDAR_SYNC_DASHBOARD_TOKEN", value)]);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{sub} {value:?}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
            assert!(
                stderr.contains("CALENDAR_SYNC_DASHBOARD_TOKEN must be at least 16 characters"),
                "{stderr}"
            );
            assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
            if !value.is_empty() {
                assert!(!stderr.contains(value), "the value in {stderr:?}");
            }
        }
        let out = run(
            &[sub, "--help"],
            &[(
                "CALENDAR_SYNC_DASHBOARD_TOKEN",
                "a-secret-that-is-long-enough",
            )],
        );
        let help = text(&out.stdout);
        assert!(
            help.contains("CALENDAR_SYNC_DASHBOARD_TOKEN"),
            "{sub}: {help}"
        );
        assert!(!help.contains("a-secret-that-is-long-enough"), "{help}");
    }
}
