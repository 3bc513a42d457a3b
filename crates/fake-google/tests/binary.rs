//! The `fake-google` binary explains itself: `--help` says what each seeding
//! flag means and where the admin API is, and a bad flag is one line, exit 2.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fake-google");

#[test]
fn help_explains_every_flag_and_the_admin_api() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--addr HOST:PORT",
        "FAKE_GOOGLE_ADDR",
        "--client ID:SECRET",
        "--refresh-token TOKEN:CLIENT_ID:EMAIL",
        "--calendar ID",
        "--primary ID",
        "\"primary\"",
        "/_fake/calendars/{cal}/events",
        "/_fake/faults",
        "GOOGLE_CALENDAR_API_URL",
        "GOOGLE_OAUTH_TOKEN_URL",
    ] {
        assert!(help.contains(needle), "{needle} in --help:\n{help}");
    }
}

#[test]
fn a_bad_flag_is_one_line_and_exit_2() {
    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--bogus") && stderr.contains("--help"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}
