//! `fake-google`: serves the fake on `--addr` (or `FAKE_GOOGLE_ADDR`, default 127.0.0.1:8089).
//!
//! Seeding flags (repeatable): `--client ID:SECRET`, `--refresh-token TOKEN:CLIENT_ID:EMAIL`,
//! `--calendar ID`, `--primary ID`. Everything else goes through the admin API at `/_fake/`.
//! `--help` explains each (the crate's README has a whole session).
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use fake_google::FakeGoogle;

const HELP: &str = r#"fake-google: an in-memory Google Calendar v3 events API and OAuth token endpoint,
for testing an application end to end without Google. Everything lives in memory and is
gone when the process stops (Ctrl-C).

usage: fake-google [--addr HOST:PORT] [--client ID:SECRET]... [--refresh-token TOKEN:CLIENT_ID:EMAIL]...
                   [--calendar ID]... [--primary ID]

  --addr HOST:PORT   where to listen (env FAKE_GOOGLE_ADDR; default 127.0.0.1:8089)
  --client ID:SECRET an OAuth client the token endpoint accepts (the worker's
                     GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET). Repeatable.
  --refresh-token TOKEN:CLIENT_ID:EMAIL
                     a refresh token the token endpoint exchanges for access tokens:
                     TOKEN is what `calendar-sync-worker connections put` stores, CLIENT_ID
                     the client it was issued to (a --client), EMAIL the Google account it
                     belongs to; the account's own calendar is the calendar named EMAIL.
                     TOKEN and CLIENT_ID cannot contain ':'. Repeatable.
  --calendar ID      a calendar that exists (e.g. alice@example.com or a group calendar
                     id); calls to a calendar not registered answer 404 notFound. Repeatable.
  --primary ID       what the calendar id "primary" means for a caller whose email is
                     not itself a --calendar (by default "primary" is the caller's EMAIL).
  -h, --help         this text

Point the worker at it:
  GOOGLE_CALENDAR_API_URL=http://HOST:PORT/calendar/v3/
  GOOGLE_OAUTH_TOKEN_URL=http://HOST:PORT/token

Admin API (JSON; not logged, delayed or faulted):
  GET    /_fake/                                      the list of endpoints
  POST   /_fake/clients                               {"client_id","client_secret"}
  POST   /_fake/refresh_tokens                        {"refresh_token","client_id","user_email","scope"?}
  POST   /_fake/refresh_tokens/revoke                 {"refresh_token"}: later refreshes get invalid_grant
  POST   /_fake/calendars                             {"calendar_id","primary"?: true}
  GET    /_fake/calendars/{cal}/events                every event of {cal}, cancelled ones included
  POST   /_fake/calendars/{cal}/events/{id}/delete    a person deletes the event in Google's UI
  POST   /_fake/faults                                {"kind":"BackendError","method"?,"path_contains"?,"times"?}
  DELETE /_fake/faults                                clears every fault
  POST   /_fake/expire_access_tokens                  every issued access token expires
  POST   /_fake/latency                               {"millis": n} before every answer
  GET    /_fake/requests                              the request log
  GET    /_fake/stats                                 calls per method, token refreshes, quota rejections

Fault kinds: RateLimitExceeded, UserRateLimitExceeded, {"TooManyRequests":{"retry_after":5}},
QuotaExceeded, InsufficientPermissions, RequiredAccessLevel, Forbidden, BackendError,
ServiceUnavailable, {"Raw":{"status":502,"content_type":"text/html","body":"..."}}, Hang,
CommittedReplyLost, ConnectionReset. See crates/fake-google/README.md for a whole session."#;

fn die(msg: &str) -> ! {
    eprintln!("fake-google: {msg} (see fake-google --help)");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut addr = std::env::var("FAKE_GOOGLE_ADDR").unwrap_or_else(|_| "127.0.0.1:8089".into());
    let mut seeds: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{HELP}");
            return;
        }
        if !matches!(
            flag.as_str(),
            "--addr" | "--client" | "--refresh-token" | "--calendar" | "--primary"
        ) {
            die(&format!("unknown argument {flag}"));
        }
        let value = args
            .next()
            .unwrap_or_else(|| die(&format!("{flag} needs a value")));
        if flag == "--addr" {
            addr = value;
        } else {
            seeds.push((flag, value));
        }
    }
    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|_| die(&format!("bad address {addr}")));
    let g = FakeGoogle::start_on(addr)
        .await
        .unwrap_or_else(|e| die(&format!("cannot bind {addr}: {e}")));
    for (flag, value) in seeds {
        let n = if flag == "--client" { 2 } else { 3 };
        let parts: Vec<&str> = value.splitn(n, ':').collect();
        match (flag.as_str(), parts.as_slice()) {
            ("--client", [id, secret]) => g.add_client(id, secret),
            ("--refresh-token", [t, c, e]) => g.add_refresh_token(t, c, e),
            ("--calendar", _) => g.add_calendar(&value),
            ("--primary", _) => g.set_primary(&value),
            _ => die(&format!("bad value for {flag}: {value}")),
        }
    }
    println!("fake-google listening on http://{}", g.addr());
    println!("calendar base url: {}", g.calendar_base_url());
    println!("token url:         {}", g.token_url());
    println!("admin api:         {}", g.admin_url());
    let _ = tokio::signal::ctrl_c().await;
    g.shutdown().await;
}
