//! A loopback TCP proxy in front of PostgreSQL that reads the frontend side of
//! the wire protocol and counts what the library asks of the server: every
//! `Sync` (the end of an extended-protocol exchange, which the client awaits
//! unless it is a fire-and-forget `Close`) and every simple `Query`, attributed
//! to statements by their text. pg_stat_statements needs
//! `shared_preload_libraries` and a server restart; this needs nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counts of one proxy's traffic.
#[derive(Debug, Clone, Default)]
pub struct WireStats {
    /// Exchanges that parse (prepare) a statement: Parse … Sync.
    pub prepares: u64,
    /// Exchanges that execute a prepared statement: Bind/Execute … Sync.
    pub executes: u64,
    /// Exchanges that only close statements (not awaited by tokio-postgres).
    pub closes: u64,
    /// Simple-protocol queries (BEGIN, COMMIT, SET, LISTEN …).
    pub simple: u64,
    /// Executions per statement label.
    pub by_statement: HashMap<String, u64>,
    /// Parse messages (statements prepared) by statement label.
    pub parsed_by_statement: HashMap<String, u64>,
}

impl WireStats {
    /// Exchanges the client waits for: prepares, executes and simple queries.
    pub fn round_trips(&self) -> u64 {
        self.prepares + self.executes + self.simple
    }
}

/// A running proxy.
pub struct WireCounter {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    stats: Arc<Mutex<WireStats>>,
}

impl WireCounter {
    /// Starts a proxy to `upstream` (host:port).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let stats = Arc::new(Mutex::new(WireStats::default()));
        let shared = stats.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let stats = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, stats).await;
                    }
                });
            }
        });
        Self { port, stats }
    }

    /// The counts so far.
    pub fn stats(&self) -> WireStats {
        self.stats.lock().expect("wire stats").clone()
    }

    /// Sets the counts back to zero.
    pub fn reset(&self) {
        *self.stats.lock().expect("wire stats") = WireStats::default();
    }
}

async fn relay(client: TcpStream, server: TcpStream, stats: Arc<Mutex<WireStats>>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    });
    let mut parser = Parser::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if sw.write_all(&buf[..n]).await.is_err() {
            break;
        }
        parser.feed(&buf[..n], &stats);
    }
    let _ = sw.shutdown().await;
    let _ = down.await;
}

/// Frontend message parser: the startup phase has untyped messages, then each
/// message is a type byte and a length.
#[derive(Default)]
struct Parser {
    pending: Vec<u8>,
    started: bool,
    /// Statement name -> label, from Parse messages.
    names: HashMap<String, String>,
    /// What the current exchange (since the last Sync) contained.
    saw_parse: bool,
    saw_execute: bool,
}

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

impl Parser {
    fn feed(&mut self, bytes: &[u8], stats: &Mutex<WireStats>) {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        let mut stats = stats.lock().expect("wire stats");
        loop {
            let rest = &self.pending[at..];
            if !self.started {
                if rest.len() < 8 {
                    break;
                }
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if rest.len() < len {
                    break;
                }
                let code = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
                self.started = code != SSL_REQUEST && code != GSSENC_REQUEST;
                at += len;
                continue;
            }
            if rest.len() < 5 {
                break;
            }
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            if rest.len() < 1 + len {
                break;
            }
            let body = rest[5..1 + len].to_vec();
            self.message(rest[0], &body, &mut stats);
            at += 1 + len;
        }
        self.pending.drain(..at);
    }

    fn message(&mut self, kind: u8, body: &[u8], stats: &mut WireStats) {
        match kind {
            b'P' => {
                let (name, rest) = cstr(body);
                let (query, _) = cstr(rest);
                let label = label(query);
                *stats.parsed_by_statement.entry(label.clone()).or_default() += 1;
                self.names.insert(name.to_owned(), label);
                self.saw_parse = true;
            }
            b'B' => {
                let (_portal, rest) = cstr(body);
                let (statement, _) = cstr(rest);
                let label = self
                    .names
                    .get(statement)
                    .cloned()
                    .unwrap_or_else(|| "(unknown)".to_owned());
                *stats.by_statement.entry(label).or_default() += 1;
                self.saw_execute = true;
            }
            b'E' => self.saw_execute = true,
            b'Q' => {
                let (query, _) = cstr(body);
                stats.simple += 1;
                *stats.by_statement.entry(label(query)).or_default() += 1;
            }
            b'S' => {
                if self.saw_parse {
                    stats.prepares += 1;
                } else if self.saw_execute {
                    stats.executes += 1;
                } else {
                    stats.closes += 1;
                }
                self.saw_parse = false;
                self.saw_execute = false;
            }
            _ => {}
        }
    }
}

fn cstr(bytes: &[u8]) -> (&str, &[u8]) {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = std::str::from_utf8(&bytes[..end]).unwrap_or("");
    (text, bytes.get(end + 1..).unwrap_or(&[]))
}

/// A statement's label: its leading `-- name:` comment, else its first words.
fn label(query: &str) -> String {
    let trimmed = query.trim_start();
    if let Some(comment) = trimmed.strip_prefix("--") {
        let first = comment.trim().split([':', '\n']).next().unwrap_or("");
        return first.trim().to_owned();
    }
    let words: Vec<&str> = trimmed.split_whitespace().take(6).collect();
    let mut text = words.join(" ");
    if text.len() > 60 {
        text.truncate(60);
    }
    text
}
