//! `fake-google`: serves the fake on `--addr` (or `FAKE_GOOGLE_ADDR`, default 127.0.0.1:8089).
//!
//! Seeding flags (repeatable): `--client ID:SECRET`, `--refresh-token TOKEN:CLIENT_ID:EMAIL`,
//! `--calendar ID`, `--primary ID`. Everything else goes through the admin API at `/_fake/`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use fake_google::FakeGoogle;

const USAGE: &str = "usage: fake-google [--addr HOST:PORT] [--client ID:SECRET]... \
[--refresh-token TOKEN:CLIENT_ID:EMAIL]... [--calendar ID]... [--primary ID]\n\
env: FAKE_GOOGLE_ADDR (default 127.0.0.1:8089)";

fn die(msg: &str) -> ! {
    eprintln!("fake-google: {msg}\n{USAGE}");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut addr = std::env::var("FAKE_GOOGLE_ADDR").unwrap_or_else(|_| "127.0.0.1:8089".into());
    let mut seeds: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
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
