//! The dashboard in a real browser: headless Chromium driven through
//! chromedriver (WebDriver) against a real `calendar-sync-worker run`
//! serving /dashboard/ on its own port, a fresh PostgreSQL database and the
//! fake Google. Chromium and chromedriver must be installed (see
//! `browser/harness.rs`); every test fails, never skips, without them.
//!
//! Screenshots go to docs/dashboard/ with `CALENDAR_SYNC_UPDATE_SCREENSHOTS=1`
//! (else to a scratch directory, so a test run leaves the committed PNGs
//! alone).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use calendar_sync_tests::{
    GoogleWorld, TestDb, WORKER_CLIENT_ID, WORKER_CLIENT_SECRET, WORKER_KEY_B64, WorkerProcess,
    set_env, upsert,
};
use serde_json::{Value, json};
use uuid::Uuid;

mod common;
#[path = "browser/harness.rs"]
mod harness;
use harness::{Browser, http, http_get, poll, save_screenshot};

/// The dashboard token of the tests that log in (the auth contract wants at
/// least 16 characters).
const DASHBOARD_TOKEN: &str = "browser-test-dashboard-token-0123456789";

/// A worker serving the dashboard, its database and its fake Google.
struct Dash {
    t: TestDb,
    world: GoogleWorld,
    /// Kept for its `Drop` (it kills the process).
    _worker: WorkerProcess,
    port: u16,
}

impl Dash {
    /// A fresh database with `workspaces` connected workspaces (`ws0..`, see
    /// [`GoogleWorld`]) and `calendar-sync-worker run` on it with `env` added,
    /// its dashboard answering.
    async fn start(name: &str, workspaces: usize, env: &[(&str, &str)]) -> Self {
        let (t, world) = GoogleWorld::with_database(workspaces).await;
        Self::start_on(name, t, world, env).await
    }

    async fn start_on(name: &str, t: TestDb, world: GoogleWorld, env: &[(&str, &str)]) -> Self {
        let mut full = world.worker_env(&t.url());
        for (k, v) in env {
            set_env(&mut full, k, v);
        }
        let addr = full
            .iter()
            .find(|(k, _)| k == "CALENDAR_SYNC_HTTP_ADDR")
            .map(|(_, v)| v.clone())
            .expect("worker_env sets CALENDAR_SYNC_HTTP_ADDR");
        let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
        let mut worker = common::worker(name, &full);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if matches!(http_get(port, "/dashboard/").await, Ok((200, _))) {
                break;
            }
            assert!(
                worker.is_running(),
                "the worker exited: {}",
                worker.log_tail(30)
            );
            assert!(
                std::time::Instant::now() < deadline,
                "the dashboard answers on {addr}: {}",
                worker.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            t,
            world,
            _worker: worker,
            port,
        }
    }

    /// The dashboard's URL for `path` (under /dashboard).
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/dashboard{path}", self.port)
    }

    /// Inserts an item that waits a day before its first attempt.
    async fn insert_later(&self, operation: &str, payload: Value) -> Uuid {
        self.t
            .client()
            .await
            .query_one(
                "INSERT INTO sync_outbox (operation, payload, next_attempt_at)
                 VALUES ($1, $2, now() + interval '1 day') RETURNING id",
                &[&operation, &payload],
            )
            .await
            .expect("insert a later item")
            .get(0)
    }

    /// Inserts an item and makes it a dead letter with `last_error`, as the
    /// worker would after its last attempt.
    async fn insert_dead_letter(&self, payload: Value, last_error: &str) -> Uuid {
        let id = self.insert_later("UPSERT_EVENT", payload).await;
        self.t
            .client()
            .await
            .execute(
                "UPDATE sync_outbox SET status = 'DEAD_LETTER', attempts = 5, last_error = $2,
                        updated_at = now() - interval '5 minutes'
                  WHERE id = $1",
                &[&id, &last_error],
            )
            .await
            .expect("make a dead letter");
        id
    }

    /// Waits until nothing is due: every item is finished or waits for a
    /// later attempt.
    async fn wait_until_idle(&self) {
        let client = self.t.client().await;
        poll(Duration::from_secs(45), "the worker drains every due item", || async {
            let due: i64 = client
                .query_one(
                    "SELECT count(*) FROM sync_outbox
                      WHERE status = 'PROCESSING' OR (status = 'PENDING' AND next_attempt_at <= now())",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            due == 0
        })
        .await;
    }

    /// One row's state, to compare before and after.
    async fn row_state(&self, id: Uuid) -> (String, i32, String, String, Option<String>) {
        let r = self
            .t
            .client()
            .await
            .query_one(
                "SELECT status, attempts, updated_at::text, next_attempt_at::text, last_error
                   FROM sync_outbox WHERE id = $1",
                &[&id],
            )
            .await
            .expect("the row");
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
    }

    async fn status_of(&self, id: Uuid) -> String {
        self.row_state(id).await.0
    }

    /// Every status with its count.
    async fn counts(&self) -> BTreeMap<String, i64> {
        self.t.counts().await
    }
}

/// An UPSERT_EVENT payload with a description.
fn upsert_described(workspace: &str, source_id: &str, title: &str, description: &str) -> Value {
    let mut payload = upsert(
        workspace,
        &GoogleWorld::calendar_of(workspace),
        source_id,
        title,
    );
    payload["event"]["description"] = json!(description);
    payload
}

/// A busy-looking history: completed, superseded, pending, dead letters with
/// two error codes, and a workspace whose grant was revoked (its connection
/// becomes invalid and its item a dead letter). Returns the id of a
/// completed item.
async fn seed_history(d: &Dash) -> Uuid {
    let titles = [
        "Quarterly planning",
        "Design review: dashboard",
        "Release 1.4 go/no-go",
        "Customer call (ACME)",
        "Incident retro",
        "Hiring sync",
    ];
    let mut completed = None;
    for (i, title) in titles.iter().enumerate() {
        let id =
            d.t.insert(
                "UPSERT_EVENT",
                upsert_described("ws0", &format!("task-{i}"), title, "Agenda in the doc"),
            )
            .await;
        completed.get_or_insert(id);
    }
    // Three versions of one task enqueued at once.
    for v in 1..=3 {
        d.t.insert(
            "UPSERT_EVENT",
            upsert_described("ws0", "task-edited", &format!("Budget v{v}"), ""),
        )
        .await;
    }
    d.t.insert(
        "CANCEL_EVENT",
        calendar_sync_tests::cancel("ws0", &GoogleWorld::calendar_of("ws0"), "task-4"),
    )
    .await;
    for i in 0..2 {
        d.insert_later(
            "UPSERT_EVENT",
            upsert_described("ws0", &format!("later-{i}"), "Offsite", ""),
        )
        .await;
    }
    for (i, error) in [
        "[google_404_notFound] Not Found",
        "[google_404_notFound] Not Found",
        "[google_403_forbidden] The caller does not have permission",
    ]
    .iter()
    .enumerate()
    {
        d.insert_dead_letter(
            upsert_described("ws0", &format!("dead-{i}"), "Old sync", ""),
            error,
        )
        .await;
    }
    d.world
        .google
        .revoke_refresh_token(&GoogleWorld::refresh_token_of("ws1"));
    d.t.insert(
        "UPSERT_EVENT",
        upsert_described("ws1", "task-revoked", "Standup", ""),
    )
    .await;
    d.wait_until_idle().await;
    completed.unwrap()
}

/// The counts the overview's cards show, by status.
async fn overview_counts(b: &Browser) -> BTreeMap<String, i64> {
    let cards = b
        .js(
            "return Array.from(document.querySelectorAll('a.card[data-status]')).map(c =>
                 [c.dataset.status, c.querySelector('.count').textContent])",
            vec![],
        )
        .await;
    let mut counts = BTreeMap::new();
    for card in cards.as_array().expect("an array") {
        let status = card[0].as_str().unwrap().to_owned();
        let text = card[1].as_str().unwrap();
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        assert_eq!(
            digits.len(),
            text.chars().filter(|c| *c != ',').count(),
            "{status}: an exact count, not {text:?}"
        );
        counts.insert(status, digits.parse::<i64>().unwrap());
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_counts_match_the_database() {
    let d = Dash::start("browser-counts", 2, &[]).await;
    seed_history(&d).await;
    let b = Browser::start().await;
    // The worker is idle, but a retry may still come due: compare the page
    // with the table until both agree (each read is a fresh page load).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        b.goto(&d.url("/")).await;
        let shown = overview_counts(&b).await;
        let mut actual = d.counts().await;
        for status in shown.keys() {
            actual.entry(status.clone()).or_insert(0);
        }
        if shown == actual {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the overview's counts {shown:?} match SELECT count(*) {actual:?}"
        );
    }
    let shown = overview_counts(&b).await;
    for status in [
        "PENDING",
        "PROCESSING",
        "COMPLETED",
        "DEAD_LETTER",
        "SUPERSEDED",
    ] {
        assert!(shown.contains_key(status), "a card for {status}: {shown:?}");
    }
    assert!(shown["COMPLETED"] >= 7, "{shown:?}");
    assert_eq!(shown["PENDING"], 2, "{shown:?}");
    assert_eq!(
        shown["DEAD_LETTER"], 4,
        "three seeded, one revoked: {shown:?}"
    );

    // The dead letters by error code, as the table says.
    let codes = b
        .js(
            "return Array.from(document.querySelectorAll('#dead-letters tbody tr')).map(r =>
                 [r.cells[0].innerText.trim(), r.cells[1].innerText.trim()])",
            vec![],
        )
        .await;
    let codes: BTreeMap<String, String> = codes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        codes.get("google_404_notFound").map(String::as_str),
        Some("2"),
        "{codes:?}"
    );
    assert_eq!(
        codes.get("google_403_forbidden").map(String::as_str),
        Some("1"),
        "{codes:?}"
    );

    // Clicking a card lists exactly the items with that status.
    b.wait_for("a.card[data-status='DEAD_LETTER']")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for_url("the dead letters' list", |u| {
        u.contains("status=DEAD_LETTER")
    })
    .await;
    let statuses = b
        .js(
            "return Array.from(document.querySelectorAll('#items tbody tr .status')).map(s => s.textContent)",
            vec![],
        )
        .await;
    let statuses = statuses.as_array().unwrap();
    assert_eq!(statuses.len(), 4, "{statuses:?}");
    assert!(statuses.iter().all(|s| s == "DEAD_LETTER"), "{statuses:?}");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_by_source_id_finds_the_item() {
    let d = Dash::start("browser-search", 1, &[]).await;
    let mut ids = Vec::new();
    for source in ["task-alpha", "task-beta", "task-gamma"] {
        ids.push(
            d.t.insert(
                "UPSERT_EVENT",
                upsert_described("ws0", source, &format!("About {source}"), ""),
            )
            .await,
        );
    }
    d.wait_until_idle().await;
    let b = Browser::start().await;
    b.goto(&d.url("/")).await;

    // The nav's search box, by source id: the list of that source's items.
    let q = b.wait_for("header input[name=q]").await;
    q.send_keys("task-beta").await.unwrap();
    b.wait_for("header form[role=search] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for_url("the search's results", |u| u.contains("q=task-beta"))
        .await;
    let links = b
        .js(
            "return Array.from(document.querySelectorAll('#items tbody tr td:first-child a')).map(a => a.textContent)",
            vec![],
        )
        .await;
    assert_eq!(links, json!([ids[1].to_string()]), "only task-beta's item");
    assert!(b.text().await.contains("About task-beta"));

    // Its link opens the item.
    b.wait_for("#items tbody tr td:first-child a")
        .await
        .click()
        .await
        .unwrap();
    let item = format!("/dashboard/items/{}", ids[1]);
    b.wait_for_url("the item's page", |u| u.ends_with(&item))
        .await;
    let heading = b.wait_for("h1").await.text().await.unwrap();
    assert!(heading.contains(&ids[1].to_string()), "{heading}");
    assert!(
        b.wait_for("#item")
            .await
            .text()
            .await
            .unwrap()
            .contains("COMPLETED"),
        "drained through the fake Google"
    );
    assert!(
        b.wait_for("#payload")
            .await
            .text()
            .await
            .unwrap()
            .contains("task-beta")
    );

    // By item id: straight to the item.
    let q = b.wait_for("header input[name=q]").await;
    q.send_keys(&ids[2].to_string()).await.unwrap();
    q.send_keys("\u{E007}").await.unwrap(); // Enter
    let item = format!("/dashboard/items/{}", ids[2]);
    b.wait_for_url("the searched item's page", |u| u.ends_with(&item))
        .await;
    b.close().await;
}

/// Markup that would run a script if a page did not escape it.
const XSS_TITLE: &str = "<img src=x onerror=\"window.__xss=1\">";
const XSS_DESCRIPTION: &str = "</script><script>window.__xss=2</script>";
const XSS_WORKSPACE: &str = "<svg onload=\"window.__xss=3\">";
const XSS_SOURCE: &str = "\"><script>window.__xss=4</script>";
const XSS_ERROR: &str = "[google_400_badRequest] <img src=y onerror=\"window.__xss=5\">";

/// Fails unless the page ran no injected script and has no injected
/// element. The CSP (`default-src 'none'`) alone would stop the scripts, so
/// the DOM is checked too: a missed escape would show up as an element.
async fn assert_inert(b: &Browser, page: &str) {
    let verdict = b
        .js(
            "return {
                 xss: typeof window.__xss,
                 scripts: document.querySelectorAll('script').length,
                 imgs: document.querySelectorAll('img').length
                     + Array.from(document.querySelectorAll('svg')).filter(s => !s.closest('figure.chart')).length,
                 handlers: Array.from(document.querySelectorAll('*')).filter(e =>
                     Array.from(e.attributes).some(a => a.name.startsWith('on'))).length,
             }",
            vec![],
        )
        .await;
    assert_eq!(
        verdict,
        json!({"xss": "undefined", "scripts": 0, "imgs": 0, "handlers": 0}),
        "{page}: no injected script ran and no injected element exists"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xss_payloads_run_no_script_and_show_as_text() {
    let d = Dash::start("browser-xss", 1, &[]).await;
    // In the title, description, workspace and source id (a workspace with
    // no connection: the item waits or dead-letters, either way it is shown).
    let mut payload = upsert_described(XSS_WORKSPACE, XSS_SOURCE, XSS_TITLE, XSS_DESCRIPTION);
    payload["calendarId"] = json!("xss@example.com");
    let item = d.insert_later("UPSERT_EVENT", payload).await;
    // And in last_error, shown on the overview and the lists.
    let dead = d
        .insert_dead_letter(
            upsert_described("ws0", XSS_SOURCE, XSS_TITLE, XSS_DESCRIPTION),
            XSS_ERROR,
        )
        .await;
    let b = Browser::start().await;

    b.goto(&d.url(&format!("/items/{item}"))).await;
    b.wait_for("#payload").await;
    assert_inert(&b, "the item page").await;
    let payload_text = b.wait_for("#payload").await.text().await.unwrap();
    // Pretty-printed JSON: the quotes are escaped, the markup is not.
    for shown in [
        serde_json::to_string(XSS_TITLE).unwrap(),
        serde_json::to_string(XSS_DESCRIPTION).unwrap(),
        serde_json::to_string(XSS_WORKSPACE).unwrap(),
        serde_json::to_string(XSS_SOURCE).unwrap(),
    ] {
        assert!(
            payload_text.contains(&shown),
            "{shown} literally in the payload: {payload_text}"
        );
    }
    let fields = b.wait_for("#item").await.text().await.unwrap();
    for shown in [XSS_WORKSPACE, XSS_SOURCE] {
        assert!(fields.contains(shown), "{shown} literally: {fields}");
    }

    b.goto(&d.url(&format!("/items/{dead}"))).await;
    b.wait_for("#item").await;
    assert_inert(&b, "the dead letter's page").await;
    assert!(b.text().await.contains(XSS_ERROR));

    // The lists: all items, by workspace, and the search by source id.
    for (path, shown) in [
        (
            "/items".to_owned(),
            vec![XSS_TITLE, XSS_WORKSPACE, XSS_SOURCE, XSS_ERROR],
        ),
        (
            format!("/items?workspace={}", query_value(XSS_WORKSPACE)),
            vec![XSS_TITLE, XSS_WORKSPACE, XSS_SOURCE],
        ),
        (
            format!("/items?q={}", query_value(XSS_SOURCE)),
            vec![XSS_TITLE, XSS_SOURCE],
        ),
    ] {
        b.goto(&d.url(&path)).await;
        b.wait_for("#items").await;
        assert_inert(&b, &path).await;
        let text = b.text().await;
        for s in shown {
            assert!(text.contains(s), "{path}: {s} literally in {text}");
        }
    }
    // The search box itself, typed as a user would.
    b.goto(&d.url("/")).await;
    let q = b.wait_for("header input[name=q]").await;
    q.send_keys(XSS_SOURCE).await.unwrap();
    q.send_keys("\u{E007}").await.unwrap();
    b.wait_for_url("the search's results", |u| u.contains("q="))
        .await;
    b.wait_for("#items").await;
    assert_inert(&b, "the typed search").await;
    let value = b
        .js(
            "return document.querySelector('input[name=source_id]').value",
            vec![],
        )
        .await;
    assert_eq!(
        value,
        json!(XSS_SOURCE),
        "the filter keeps the text as text"
    );

    b.goto(&d.url("/")).await;
    b.wait_for("#dead-letters").await;
    assert_inert(&b, "the overview").await;
    assert!(b.text().await.contains(XSS_ERROR));
    b.close().await;
}

/// `value` percent-encoded for a query string.
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_page() {
    // With writes enabled, so that the dashboard token is a secret too.
    let d = Dash::start(
        "browser-secrets",
        2,
        &[("CALENDAR_SYNC_DASHBOARD_TOKEN", DASHBOARD_TOKEN)],
    )
    .await;
    seed_history(&d).await;
    // The fake minted access tokens while the worker drained: all start so.
    assert!(
        d.world
            .google
            .token_refresh_count(&GoogleWorld::refresh_token_of("ws0"))
            > 0,
        "the worker refreshed ws0's token"
    );
    let envelope = d.t.stored_token("ws0").await;
    let mut secrets: Vec<String> = vec![
        GoogleWorld::refresh_token_of("ws0"),
        GoogleWorld::refresh_token_of("ws1"),
        WORKER_CLIENT_SECRET.to_owned(),
        WORKER_KEY_B64.to_owned(),
        DASHBOARD_TOKEN.to_owned(),
        "ya29.".to_owned(),
        envelope.clone(),
    ];
    // Any sizeable piece of the envelope (its ciphertext, nonce, ...).
    secrets.extend(
        envelope
            .split(':')
            .filter(|part| part.len() >= 12)
            .map(str::to_owned),
    );
    let b = Browser::start().await;
    let origin = format!("http://127.0.0.1:{}", d.port);
    let mut queue = VecDeque::from([d.url("/")]);
    let mut seen = BTreeSet::new();
    const MAX_PAGES: usize = 60;
    while let Some(url) = queue.pop_front() {
        if seen.len() >= MAX_PAGES || !seen.insert(url.clone()) {
            continue;
        }
        let path = &url[origin.len()..];
        // The response as sent (headers and body)...
        let (status, response) = http_get(d.port, path).await.expect("GET");
        assert!(
            matches!(status, 200 | 303),
            "{path} answers: {status} {response}"
        );
        for secret in &secrets {
            assert!(
                !response.contains(secret.as_str()),
                "{secret} in the response of {path}"
            );
        }
        if path.contains("/assets/") {
            continue;
        }
        // ...and the DOM the browser built from it.
        b.goto(&url).await;
        let dom = b.source().await;
        for secret in &secrets {
            assert!(
                !dom.contains(secret.as_str()),
                "{secret} in the DOM of {path}"
            );
        }
        let links = b
            .js(
                "return Array.from(document.querySelectorAll('a[href], link[href]')).map(a => a.href)",
                vec![],
            )
            .await;
        for link in links.as_array().unwrap() {
            let link = link.as_str().unwrap();
            let link = link.split('#').next().unwrap();
            if link.starts_with(&format!("{origin}/dashboard")) && !seen.contains(link) {
                queue.push_back(link.to_owned());
            }
        }
    }
    // The crawl reached the overview, the lists, items and the stylesheet.
    assert!(seen.len() >= 15, "{seen:#?}");
    for needle in ["/items?status=", "/items/", "/assets/"] {
        assert!(
            seen.iter().any(|u| u.contains(needle)),
            "the crawl reached {needle}: {seen:#?}"
        );
    }
    b.close().await;
}

/// Opens the overview, reloading until the items chart counts the drained
/// items (the workers write their counts every 5 s).
async fn open_overview_with_chart_data(b: &Browser, d: &Dash) {
    let totals = "return Object.fromEntries(Array.from(document.querySelectorAll('figure.chart[data-chart]'))
                      .map(f => [f.dataset.chart, f.dataset.total]))";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        b.goto(&d.url("/")).await;
        let t = b.js(totals, vec![]).await;
        if t["items"]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(|n| n > 0.0)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the items chart counts the drained items: {t}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_of_the_overview_and_an_item() {
    let d = Dash::start("browser-screenshots", 2, &[]).await;
    let completed = seed_history(&d).await;
    let b = Browser::start().await;

    open_overview_with_chart_data(&b, &d).await;
    let path = save_screenshot("overview.png", &b.full_page_png().await);
    eprintln!("wrote {}", path.display());

    b.goto(&d.url(&format!("/items/{completed}"))).await;
    b.wait_for("#binding").await;
    let path = save_screenshot("item.png", &b.full_page_png().await);
    eprintln!("wrote {}", path.display());

    b.goto(&d.url("/items?status=DEAD_LETTER")).await;
    b.wait_for("#items").await;
    let path = save_screenshot("dead-letters.png", &b.full_page_png().await);
    eprintln!("wrote {}", path.display());
    b.close().await;
}

// ---------------------------------------------------------------------------
// Auth and actions, charts, the connections page. The tests that log in
// through the form found that Chromium's own POSTs were refused as
// cross-site (`Origin: null` under `Referrer-Policy: no-referrer`).

/// Logs in through the login form with `token`.
async fn log_in(b: &Browser, d: &Dash, token: &str) {
    b.goto(&d.url("/login")).await;
    b.wait_for("form#login input[name=token]")
        .await
        .send_keys(token)
        .await
        .unwrap();
    b.wait_for("form#login button, form#login input[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    // The answer: the overview, or the login page again with an error.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while b.url().await.ends_with("/dashboard/login")
        && b.all("#login-error, #refused").await.is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "an answer to the login: {}",
            b.text().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = b.url().await;
    assert!(
        url.trim_end_matches('/').ends_with("/dashboard"),
        "logged in and sent to the overview, not {url}: {}",
        b.text().await
    );
}

/// Clicks the item page's requeue button (the page must be open).
async fn click_requeue(b: &Browser) {
    b.wait_for("form#requeue button#requeue-button")
        .await
        .click()
        .await
        .unwrap();
}

/// Posts the requeue form of item `id` from its page, as a logged-out
/// visitor who kept the form from an earlier session would: the page shows
/// no button then ("Log in to act"), so the test puts the same form there
/// (WebDriver's scripts are not bound by the page's CSP) and submits it.
async fn post_requeue_from_the_page(b: &Browser, d: &Dash, id: Uuid) {
    b.goto(&d.url(&format!("/items/{id}"))).await;
    if b.all("form#requeue button#requeue-button").await.is_empty() {
        b.js(
            "const f = document.createElement('form');
             f.id = 'requeue'; f.method = 'post'; f.action = arguments[0];
             const button = document.createElement('button');
             button.id = 'requeue-button'; button.type = 'submit'; button.textContent = 'Requeue';
             f.appendChild(button); document.body.appendChild(f);",
            vec![json!(d.url(&format!("/items/{id}/requeue")))],
        )
        .await;
    }
    click_requeue(b).await;
}

/// A dead letter of a workspace whose grant was revoked (its connection
/// marked invalid by the worker), then reconnected with a new grant: a
/// requeue can now complete it.
async fn reconnected_dead_letter(d: &Dash) -> Uuid {
    d.world
        .google
        .revoke_refresh_token(&GoogleWorld::refresh_token_of("ws1"));
    let id =
        d.t.insert(
            "UPSERT_EVENT",
            upsert_described("ws1", "task-revoked", "Standup", ""),
        )
        .await;
    d.t.wait_for(Duration::from_secs(30), "a dead letter", || async {
        d.status_of(id).await == "DEAD_LETTER"
    })
    .await;
    let new_grant = "1//0g-refresh-ws1-reconnected-secret";
    d.world.google.add_refresh_token(
        new_grant,
        WORKER_CLIENT_ID,
        &GoogleWorld::calendar_of("ws1"),
    );
    calendar_sync::ops::put_connection(
        &d.t.db,
        &GoogleWorld::cipher(),
        "ws1",
        &GoogleWorld::calendar_of("ws1"),
        &secrecy::SecretString::from(new_grant),
    )
    .await
    .expect("reconnect ws1");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_with_the_token_completes_a_dead_letter() {
    let d = Dash::start(
        "browser-requeue",
        2,
        &[("CALENDAR_SYNC_DASHBOARD_TOKEN", DASHBOARD_TOKEN)],
    )
    .await;
    let id = reconnected_dead_letter(&d).await;
    let b = Browser::start().await;
    log_in(&b, &d, DASHBOARD_TOKEN).await;
    let cookies = b.client.get_all_cookies().await.unwrap();
    assert!(
        cookies.iter().any(
            |c| c.http_only() == Some(true) && format!("{:?}", c.same_site()) == "Some(Strict)"
        ),
        "an HttpOnly, SameSite=Strict session cookie: {cookies:?}"
    );
    assert_eq!(
        b.js("return document.cookie", vec![]).await,
        json!(""),
        "scripts cannot read the session"
    );
    b.goto(&d.url(&format!("/items/{id}"))).await;
    click_requeue(&b).await;
    d.t.wait_for(
        Duration::from_secs(30),
        "the requeued item completes",
        || async { d.status_of(id).await == "COMPLETED" },
    )
    .await;
    assert!(
        !d.world
            .google
            .live_events(&GoogleWorld::calendar_of("ws1"))
            .is_empty()
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_without_a_session_is_refused() {
    let d = Dash::start(
        "browser-refused",
        2,
        &[("CALENDAR_SYNC_DASHBOARD_TOKEN", DASHBOARD_TOKEN)],
    )
    .await;
    let id = reconnected_dead_letter(&d).await;
    let before = d.row_state(id).await;
    let b = Browser::start().await;
    post_requeue_from_the_page(&b, &d, id).await;
    // The session's refusal (401), not the cross-site one: the browser's own
    // POST must pass that check.
    b.wait_for("#refused #refused-login").await;
    // A wrong token does not log in either.
    b.goto(&d.url("/login")).await;
    b.wait_for("form#login input[name=token]")
        .await
        .send_keys("not-the-dashboard-token-at-all")
        .await
        .unwrap();
    b.wait_for("form#login button, form#login input[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for("#login-error").await;
    post_requeue_from_the_page(&b, &d, id).await;
    b.wait_for("#refused #refused-login").await;
    // The status code, which a browser does not show.
    let (status, response) = http(
        d.port,
        &format!("POST /dashboard/items/{id}/requeue HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"),
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "{response}");
    assert!(response.contains("id=\"refused\""), "{response}");
    assert_eq!(d.row_state(id).await, before, "the row is unchanged");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_is_forbidden_without_a_configured_token() {
    let d = Dash::start("browser-no-token", 2, &[]).await;
    let id = reconnected_dead_letter(&d).await;
    let before = d.row_state(id).await;
    let (status, response) = http(
        d.port,
        &format!("POST /dashboard/items/{id}/requeue HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"),
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, 403, "{response}");
    assert!(response.contains("id=\"refused\""), "{response}");
    let b = Browser::start().await;
    b.goto(&d.url("/login")).await;
    b.wait_for("#read-only").await;
    b.goto(&d.url(&format!("/items/{id}"))).await;
    assert!(
        b.all("form#requeue").await.is_empty(),
        "no button without a configured token"
    );
    post_requeue_from_the_page(&b, &d, id).await;
    b.wait_for("#refused").await;
    assert_eq!(d.row_state(id).await, before, "the row is unchanged");
    b.close().await;
}

/// Serves `page` at / on `ip`:<free port>, as another site would; returns
/// its URL.
async fn serve_other_origin(ip: &str, page: String) -> String {
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    page,
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requeue_is_refused() {
    let d = Dash::start(
        "browser-cross-site",
        2,
        &[("CALENDAR_SYNC_DASHBOARD_TOKEN", DASHBOARD_TOKEN)],
    )
    .await;
    let id = reconnected_dead_letter(&d).await;
    let before = d.row_state(id).await;
    let target = d.url(&format!("/items/{id}/requeue"));
    let page = format!(
        "<!doctype html><title>win a prize</title>\
         <form id=f method=post action=\"{target}\"><input type=hidden name=x value=1></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    let b = Browser::start().await;
    log_in(&b, &d, DASHBOARD_TOKEN).await;
    // Another origin of the same site (the SameSite=Strict cookie goes
    // along: the Origin check must refuse), and another site.
    for ip in ["127.0.0.1", "127.0.0.2"] {
        let other = serve_other_origin(ip, page.clone()).await;
        b.goto(&other).await;
        b.wait_for_url("the forged form's answer", |u| u == target)
            .await;
        assert_eq!(
            d.row_state(id).await,
            before,
            "a requeue posted from {other} changed nothing"
        );
    }
    // The same with a raw request carrying the session cookie.
    let cookie = b
        .client
        .get_all_cookies()
        .await
        .unwrap()
        .iter()
        .map(|c| format!("{}={}", c.name(), c.value()))
        .collect::<Vec<_>>()
        .join("; ");
    for header in [
        "Sec-Fetch-Site: cross-site\r\n",
        "Origin: http://evil.example\r\n",
    ] {
        let (status, response) = http(
            d.port,
            &format!("POST /dashboard/items/{id}/requeue HTTP/1.1\r\nCookie: {cookie}\r\n{header}Content-Type: application/x-www-form-urlencoded\r\n"),
            "",
        )
        .await
        .unwrap();
        assert_eq!(status, 403, "{header}: {response}");
    }
    assert_eq!(d.row_state(id).await, before, "the row is unchanged");
    // The session itself was good: the dashboard's own button works.
    b.goto(&d.url(&format!("/items/{id}"))).await;
    click_requeue(&b).await;
    d.t.wait_for(
        Duration::from_secs(30),
        "the requeued item completes",
        || async { d.status_of(id).await == "COMPLETED" },
    )
    .await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_render_with_data() {
    let d = Dash::start("browser-charts", 2, &[]).await;
    seed_history(&d).await;
    let b = Browser::start().await;
    open_overview_with_chart_data(&b, &d).await;
    let charts = b
        .js(
            "return Array.from(document.querySelectorAll('figure.chart[data-chart]')).map(f => ({
                 chart: f.dataset.chart,
                 total: f.getAttribute('data-total'),
                 series: Array.from(f.querySelectorAll('svg .series')).map(s => {
                     const r = s.getBoundingClientRect();
                     return [r.width, r.height];
                 }),
             }))",
            vec![],
        )
        .await;
    let charts = charts.as_array().unwrap();
    for name in ["items", "google", "depth-1h", "depth-24h"] {
        let chart = charts
            .iter()
            .find(|c| c["chart"] == name)
            .unwrap_or_else(|| panic!("a figure.chart[data-chart={name}]: {charts:?}"));
        assert!(chart["total"].is_string(), "{name} has data-total: {chart}");
        assert!(
            !chart["series"].as_array().unwrap().is_empty(),
            "{name} has svg .series: {chart}"
        );
    }
    let items = charts.iter().find(|c| c["chart"] == "items").unwrap();
    assert!(
        items["series"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| { r[0].as_f64().unwrap_or(0.0) > 0.0 && r[1].as_f64().unwrap_or(0.0) > 0.0 }),
        "a drawn series: {items}"
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connections_page_lists_each_workspace() {
    let d = Dash::start("browser-connections", 2, &[]).await;
    seed_history(&d).await;
    let b = Browser::start().await;
    b.goto(&d.url("/connections")).await;
    b.wait_for("table#connections").await;
    for ws in ["ws0", "ws1"] {
        b.wait_for(&format!("table#connections tr[data-workspace='{ws}']"))
            .await;
    }
    let revoked = b
        .wait_for("table#connections tr[data-workspace='ws1']")
        .await
        .text()
        .await
        .unwrap();
    assert!(revoked.contains("invalid"), "{revoked}");
    let path = save_screenshot("connections.png", &b.full_page_png().await);
    eprintln!("wrote {}", path.display());
    b.close().await;
}
