//! The browser tests' harness: chromedriver and headless Chromium, started by
//! the tests themselves, and a few helpers around fantoccini.
//!
//! - [`Chromedriver`]: one chromedriver per test binary on a free port, shared
//!   by the tests that run at the same time (a `Weak` in a static: the last
//!   test to drop its handle stops it, and a later test starts a new one).
//! - [`Browser`]: one WebDriver session per test, a headless Chromium with a
//!   fresh `--user-data-dir`; dropping it ends the session's Chromium
//!   processes (found by that directory, so only the ones this test started)
//!   and deletes the directory.
//!
//! Chromium and chromedriver are required: a missing one fails the test with
//! what to install (CI installs them in `.ci/run`); nothing is skipped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use calendar_sync_tests::free_port;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where Chromium is (`CHROMIUM` overrides).
pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Where chromedriver is (`CHROMEDRIVER` overrides).
pub fn chromedriver_path() -> PathBuf {
    std::env::var_os("CHROMEDRIVER")
        .map_or_else(|| PathBuf::from("/usr/bin/chromedriver"), PathBuf::from)
}

/// Fails with what to install unless both binaries exist.
fn require_binaries() {
    for (what, path, package) in [
        ("Chromium", chromium_path(), "chromium"),
        ("chromedriver", chromedriver_path(), "chromium-driver"),
    ] {
        assert!(
            path.is_file(),
            "the browser tests need {what} at {} (set CHROMIUM / CHROMEDRIVER to use another \
             path): install it with `apt-get install chromium chromium-driver` (Debian's \
             package {package}; .ci/run installs both)",
            path.display()
        );
    }
}

/// A chromedriver process on 127.0.0.1.
pub struct Chromedriver {
    /// Its port.
    pub port: u16,
    child: Mutex<Child>,
}

static DRIVER: Mutex<Weak<Chromedriver>> = Mutex::new(Weak::new());

impl Chromedriver {
    /// The test binary's chromedriver: the running one, or a new one.
    pub async fn shared() -> Arc<Chromedriver> {
        require_binaries();
        let existing = DRIVER.lock().unwrap().upgrade();
        if let Some(driver) = existing {
            return driver;
        }
        let started = Arc::new(Self::start().await);
        let mut slot = DRIVER.lock().unwrap();
        // Another test may have started one meanwhile: use that one (ours
        // stops when `started` drops).
        if let Some(driver) = slot.upgrade() {
            return driver;
        }
        *slot = Arc::downgrade(&started);
        started
    }

    async fn start() -> Self {
        let port = free_port();
        let child = Command::new(chromedriver_path())
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Self {
            port,
            child: Mutex::new(child),
        };
        poll(
            Duration::from_secs(30),
            "chromedriver answers /status",
            || async { matches!(http_get(port, "/status").await, Ok((200, _))) },
        )
        .await;
        driver
    }

    /// Its WebDriver URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The browser's window (and, for screenshots, viewport) size.
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 1000;

/// A WebDriver session on a headless Chromium of its own.
pub struct Browser {
    /// The fantoccini client (cheap to clone).
    pub client: Client,
    profile: PathBuf,
    driver: Arc<Chromedriver>,
}

impl Browser {
    /// Starts a headless Chromium through the shared chromedriver.
    pub async fn start() -> Self {
        let driver = Chromedriver::shared().await;
        let profile = std::env::temp_dir().join(format!(
            "calendar-sync-browser-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&profile).expect("create the Chromium profile directory");
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-quic".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={WIDTH},{HEIGHT}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": chromium_path().display().to_string(),
                "args": args,
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| {
                panic!("start a headless Chromium session through chromedriver: {e}")
            });
        client
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(30)),
                Some(Duration::ZERO),
            ))
            .await
            .expect("set the session's timeouts");
        Self {
            client,
            profile,
            driver,
        }
    }

    /// Opens `url` (the page has loaded when this returns).
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("the current URL")
            .to_string()
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns
    /// its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("run {script:?}: {e}"))
    }

    /// `document.body.innerText`.
    pub async fn text(&self) -> String {
        self.js(
            "return document.body ? document.body.innerText : ''",
            vec![],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// The serialized DOM (WebDriver's page source).
    pub async fn source(&self) -> String {
        self.client.source().await.expect("the page source")
    }

    /// Waits until an element matches `css`, and returns it.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => panic!("an element {css} on {}: {e}", self.url_string().await),
        }
    }

    /// Every element matching `css` now.
    pub async fn all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
    }

    /// Waits until the current URL satisfies `check`.
    pub async fn wait_for_url(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let url = self.url().await;
            let ready = self
                .js("return document.readyState", vec![])
                .await
                .as_str()
                .is_some_and(|s| s == "complete");
            if ready && check(&url) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} (at {url})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn url_string(&self) -> String {
        self.client
            .current_url()
            .await
            .map_or_else(|e| format!("(no URL: {e})"), |u| u.to_string())
    }

    /// A PNG of the whole page, however tall: Chromium's own
    /// `Page.captureScreenshot` with `captureBeyondViewport`, through
    /// chromedriver's CDP endpoint (WebDriver's screenshot is the viewport
    /// only).
    pub async fn full_page_png(&self) -> Vec<u8> {
        let size = self
            .js(
                "const e = document.documentElement;
                 return [Math.ceil(e.scrollWidth), Math.ceil(Math.max(e.scrollHeight, document.body.scrollHeight))]",
                vec![],
            )
            .await;
        let (width, height) = (size[0].as_u64().unwrap(), size[1].as_u64().unwrap());
        let session = self
            .client
            .session_id()
            .await
            .expect("the session id")
            .expect("a session");
        let body = json!({
            "cmd": "Page.captureScreenshot",
            "params": {
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
        })
        .to_string();
        let (status, response) = http(
            self.driver.port,
            &format!(
                "POST /session/{session}/goog/cdp/execute HTTP/1.1\r\nContent-Type: application/json\r\n"
            ),
            &body,
        )
        .await
        .expect("chromedriver answers");
        assert_eq!(status, 200, "Page.captureScreenshot: {response}");
        let json_start = response.find("\r\n\r\n").expect("a body") + 4;
        let answer: Value =
            serde_json::from_str(&response[json_start..]).expect("chromedriver's JSON");
        let data = answer["value"]["data"].as_str().expect("the PNG, base64");
        let png = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data)
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        png
    }

    /// Ends the session (its Chromium exits).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // If the test failed before `close`, or Chromium lingers, end the
        // processes this session started: those whose command line names
        // this session's own profile directory. Then remove the directory
        // (Chromium may still be writing to it for a moment after it quits).
        let marker = format!("--user-data-dir={}", self.profile.display());
        for _ in 0..40 {
            let pids = pids_with_argument(&marker);
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The processes with `argument` among their command-line arguments.
fn pids_with_argument(argument: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|b| *b == 0)
                    .any(|arg| arg == argument.as_bytes())
            })
        })
        .collect()
}

/// Polls `check` every 50 ms until it holds; panics after `timeout`.
pub async fn poll<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port`: (status, the raw response,
/// head and body). Reads until the end of the body its `Content-Length`
/// announces (chromedriver keeps the connection open whatever the request
/// says), or the end of the stream; gives up after 10 s.
pub async fn http(port: u16, head: &str, body: &str) -> std::io::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!(
            "{head}Host: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..n]);
            if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if length.is_some_and(|length| response.len() >= end + 4 + length) {
                    break;
                }
            }
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 10 s"))??;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, response))
}

/// `GET path`.
pub async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http(port, &format!("GET {path} HTTP/1.1\r\n"), "").await
}

/// Where the screenshots go: docs/dashboard/ when
/// `CALENDAR_SYNC_UPDATE_SCREENSHOTS=1`, else a scratch directory (so a test
/// run leaves the committed PNGs alone).
pub fn screenshot_dir() -> PathBuf {
    if std::env::var("CALENDAR_SYNC_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard")
    } else {
        std::env::temp_dir().join("calendar-sync-dashboard-screenshots")
    }
}

/// Writes `png` as `name` under [`screenshot_dir`]; returns its path.
pub fn save_screenshot(name: &str, png: &[u8]) -> PathBuf {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("write the screenshot");
    path
}
