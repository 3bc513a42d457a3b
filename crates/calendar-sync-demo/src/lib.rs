//! The self-contained demo behind `calendar-sync-worker demo`: no Google
//! account, no setup.
//!
//! It finds a PostgreSQL server (`DATABASE_URL`, else 127.0.0.1:5432, else a
//! throwaway cluster from the installed server binaries), creates and migrates
//! a scratch database, starts the fake Google in-process, stores encrypted
//! connections, enqueues a realistic mix of outbox rows with plain SQL (as any
//! producer would), drains them with the real [`OutboxDrainer`] and
//! [`GoogleCalendar`] adapter, prints the resulting calendars and the outbox
//! status, and removes everything it created, also when it fails.
//!
//! Its [`scratch`] module (a throwaway PostgreSQL cluster) is shared with the
//! end-to-end tests, which start such clusters to restart, crash and
//! TLS-configure a server they own.

use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use calendar_sync::{Database, DrainerConfig, GoogleCalendar, GoogleConfig, OutboxDrainer};
use calendar_sync::{TokenCipher, ops};
use chrono::{DateTime, Datelike as _, Days, NaiveDate, Utc};
use fake_google::{FakeGoogle, Fault, FaultKind};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_postgres::Client;

mod postgres;
pub mod scratch;

pub use postgres::DbChoice;

/// Why the demo stopped; its `Display` is one line.
#[derive(Debug)]
pub struct DemoError(String);

impl DemoError {
    fn new(message: impl Into<String>) -> Self {
        let message: String = message.into();
        Self(message.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DemoError {}

impl From<std::io::Error> for DemoError {
    fn from(e: std::io::Error) -> Self {
        Self::new(format!("cannot write the demo's output: {e}"))
    }
}

impl From<calendar_sync::Error> for DemoError {
    fn from(e: calendar_sync::Error) -> Self {
        Self::new(e.to_string())
    }
}

impl From<tokio_postgres::Error> for DemoError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => Self::new(format!("database error: {}", db.message())),
            None => Self::new(format!("database error: {}", chain(&e))),
        }
    }
}

/// An error and its sources, `a: b: c`.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Runs the demo with the automatic choice of database ([`DbChoice::Auto`]).
/// The text goes to `out`; a progress bar goes to stderr when it is a terminal.
pub async fn run(out: &mut (dyn Write + Send)) -> Result<(), DemoError> {
    run_with(DbChoice::Auto, out).await
}

/// Runs the demo against the chosen database server.
pub async fn run_with(choice: DbChoice, out: &mut (dyn Write + Send)) -> Result<(), DemoError> {
    run_inner(choice, None, out).await
}

/// [`run`], saying up front where the worker's logs go (`logs`).
pub async fn run_logged(out: &mut (dyn Write + Send), logs: &str) -> Result<(), DemoError> {
    run_inner(DbChoice::Auto, Some(logs), out).await
}

async fn run_inner(
    choice: DbChoice,
    logs: Option<&str>,
    out: &mut (dyn Write + Send),
) -> Result<(), DemoError> {
    let started = Instant::now();
    writeln!(
        out,
        "calendar-sync demo: a PostgreSQL outbox drained into (a fake) Google Calendar\n\n\
         Some failures are staged on purpose (rate limits, a missing calendar, a revoked\n\
         grant): they show how each one ends, and the worker logs a warning for each."
    )?;
    if let Some(logs) = logs {
        writeln!(out, "Worker logs: {logs}")?;
    }
    writeln!(out)?;
    let server = match postgres::pick(choice).await {
        Ok(server) => server,
        Err(e) => {
            writeln!(out, "{e}")?;
            return Err(DemoError::new("demo aborted: no PostgreSQL server to use"));
        }
    };
    let throwaway = server.cluster.is_some();
    let name = format!(
        "calendar_sync_demo_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    writeln!(out, "PostgreSQL  {}", server.origin)?;
    let admin = server.connect().await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    writeln!(out, "            scratch database {name}")?;
    let mut options = server.options();
    options.config.dbname(&name);
    let outcome = scenario(options, out).await;
    let dropped = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    drop(admin);
    drop(server); // stops and deletes a throwaway cluster
    outcome?;
    dropped?;
    writeln!(
        out,
        "\nCleaned up: dropped {name}, stopped the fake Google{}. {:.1} s in all.",
        if throwaway {
            ", stopped and deleted the throwaway cluster"
        } else {
            ""
        },
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

const CLIENT_ID: &str = "calendar-sync-demo.apps.example.com";
const PRODUCT: &str = "acme-product";
const PRODUCT_CAL: &str = "product@acme.example";
const OPS: &str = "acme-ops";
const OPS_CAL: &str = "ops@acme.example";
const MISSING_CAL: &str = "ops-archive@acme.example";
const GLOBEX: &str = "globex";
const GLOBEX_CAL: &str = "planning@globex.example";

async fn scenario(
    options: calendar_sync::ConnectOptions,
    out: &mut (dyn Write + Send),
) -> Result<(), DemoError> {
    let db = Database::with_options(options, 8)?;
    calendar_sync::migrate(&db).await?;
    let google = FakeGoogle::start().await;
    let outcome = story(&db, &google, out).await;
    google.shutdown().await;
    outcome
}

async fn story(
    db: &Database,
    google: &FakeGoogle,
    out: &mut (dyn Write + Send),
) -> Result<(), DemoError> {
    writeln!(
        out,
        "Google      fake Calendar API and OAuth token endpoint at {} (in-process)",
        google.root_url()
    )?;

    // Secrets are random per run and never printed.
    let client_secret = SecretString::from(format!("GOCSPX-{}", uuid::Uuid::new_v4().simple()));
    google.add_client(
        CLIENT_ID,
        secrecy::ExposeSecret::expose_secret(&client_secret),
    );
    let cipher = TokenCipher::from_keys(rand::random(), vec![]);
    for (workspace, email, revoked) in [
        (PRODUCT, PRODUCT_CAL, false),
        (OPS, OPS_CAL, false),
        (GLOBEX, GLOBEX_CAL, true),
    ] {
        let token = format!("1//demo-{}", uuid::Uuid::new_v4().simple());
        google.add_refresh_token(&token, CLIENT_ID, email);
        google.add_calendar(email);
        calendar_sync::ops::put_connection(
            db,
            &cipher,
            workspace,
            email,
            &SecretString::from(token.clone()),
        )
        .await?;
        if revoked {
            google.revoke_refresh_token(&token);
        }
    }
    writeln!(out, "Workspaces  {PRODUCT:<13} -> {PRODUCT_CAL}")?;
    writeln!(
        out,
        "            {OPS:<13} -> {OPS_CAL} (and {MISSING_CAL}, which Google does not have)"
    )?;
    writeln!(
        out,
        "            {GLOBEX:<13} -> {GLOBEX_CAL} (its user has revoked calendar-sync's access)"
    )?;
    writeln!(
        out,
        "            refresh tokens stored AES-256-GCM encrypted (key id {}), never printed",
        cipher.current_key_id()
    )?;

    let mut google_config = GoogleConfig::new(CLIENT_ID, client_secret);
    google_config.calendar_api_url = google.calendar_base_url();
    google_config.oauth.token_url = google.token_url();
    google_config.request_timeout = Duration::from_secs(5);
    let calendar = GoogleCalendar::new(db, cipher, google_config)?;
    let drainer = OutboxDrainer::new(
        db.clone(),
        calendar,
        DrainerConfig {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            poll_interval: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(5),
            ..DrainerConfig::default()
        },
    )?;
    let producer = db.dedicated().await?;

    // 1. What the application enqueued while nobody was draining.
    let monday = next_monday();
    let items: Vec<Value> = FIRST_BATCH.iter().map(|row| upsert(monday, row)).collect();
    writeln!(
        out,
        "\n1. The app writes {} outbox rows with plain INSERTs (no library needed), e.g.",
        items.len()
    )?;
    writeln!(out, "   {}", example_sql(&items[0]))?;
    for line in [
        "acme-product: tasks and milestones, an all-day offsite, a deadline moved twice before the worker ran",
        "acme-ops:     a burst of 6 release-train events; Google answers 3 of them with 403/429 rate limits",
        "acme-ops:     an event for a calendar Google does not have (404)",
        "globex:       3 events for the workspace whose grant was revoked",
    ] {
        writeln!(out, "   - {line}")?;
    }
    for payload in &items {
        insert(&producer, "UPSERT_EVENT", payload).await?;
    }
    let burst = format!("/calendars/{OPS_CAL}/events");
    for kind in [
        FaultKind::RateLimitExceeded,
        FaultKind::TooManyRequests { retry_after: None },
        FaultKind::UserRateLimitExceeded,
    ] {
        google.inject(Fault::new(kind).method("POST").path(&burst));
    }

    let handle = drainer.start();
    let outcome = async {
        let took = wait_until_drained(&producer, "draining the outbox").await?;
        let row = producer
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETED'),
                        count(*) FILTER (WHERE status = 'COMPLETED' AND rate_limited > 0),
                        count(*) FILTER (WHERE status = 'SUPERSEDED'),
                        count(*) FILTER (WHERE status = 'DEAD_LETTER')
                   FROM sync_outbox",
                &[],
            )
            .await?;
        let n = |i: usize| row.get::<_, i64>(i);
        writeln!(
            out,
            "   drained in {:.1} s: {} completed ({} after a rate-limit retry), {} superseded, {} dead letters",
            took.as_secs_f64(),
            n(0),
            n(1),
            n(2),
            n(3)
        )?;

        // 2. Someone edits the calendar by hand; the app moves on.
        let deleted_title = "Security review sign-off";
        let edited_title = "Beta launch";
        let deleted = event_id_of(google, PRODUCT_CAL, "task-103")?;
        let edited = event_id_of(google, PRODUCT_CAL, "milestone-7")?;
        google.human_delete(PRODUCT_CAL, &deleted);
        google.human_edit(PRODUCT_CAL, &edited, |event| {
            event.insert("summary".into(), "Beta launch (moved to Q3??)".into());
        });
        writeln!(out, "\n2. Drift, then a REBUILD_ALL")?;
        writeln!(
            out,
            "   in Google, someone deletes \"{deleted_title}\" and renames \"{edited_title}\""
        )?;
        writeln!(
            out,
            "   the app moves \"Complete user interviews\" to Tuesday, cancels \"Draft pricing page copy\","
        )?;
        writeln!(out, "   and enqueues REBUILD_ALL for {PRODUCT_CAL}, all in one transaction")?;
        let rebuild = second_batch(&producer, monday).await?;
        let took = wait_until_drained(&producer, "draining the outbox").await?;
        let row = producer
            .query_one(
                "SELECT status, result, last_error FROM sync_outbox WHERE id = $1",
                &[&rebuild],
            )
            .await?;
        let (status, result, error): (String, Option<Value>, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        let result = result.unwrap_or(Value::Null);
        let count = |key: &str| result[key].as_i64().unwrap_or(0);
        match status.as_str() {
            "COMPLETED" => writeln!(
                out,
                "   drained in {:.1} s: REBUILD_ALL repaired the drift: created {}, updated {}, deleted {}, unchanged {}",
                took.as_secs_f64(),
                count("created"),
                count("updated"),
                count("deleted"),
                count("unchanged")
            )?,
            _ => writeln!(
                out,
                "   REBUILD_ALL ended {status}: {}",
                error.unwrap_or_default()
            )?,
        }
        Ok::<(), DemoError>(())
    }
    .await;
    handle.stop().await;
    outcome?;

    // What Google shows now, and what operators see.
    writeln!(
        out,
        "\nAGENDA (what Google Calendar shows now; times in UTC)"
    )?;
    for (calendar, note) in [
        (PRODUCT_CAL, ""),
        (OPS_CAL, ""),
        (
            GLOBEX_CAL,
            "nothing: calendar-sync lost access to this workspace",
        ),
        (MISSING_CAL, "does not exist at Google"),
    ] {
        write!(out, "{}", agenda(google, calendar, note))?;
    }
    let report = ops::status(db).await?;
    writeln!(out, "\nOUTBOX STATUS (calendar-sync-worker status)")?;
    write!(out, "{}", report.render_table())?;
    writeln!(out, "\nThe dead letters are the expected ones:")?;
    for group in &report.dead_letters {
        writeln!(
            out,
            "  {} / {} ({}): {}",
            group.workspace_id.as_deref().unwrap_or("-"),
            group.code,
            group.count,
            explain(&group.code)
        )?;
    }
    Ok(())
}

/// The next Monday after today (UTC), so the agenda always lies ahead.
fn next_monday() -> NaiveDate {
    let today = Utc::now().date_naive();
    let ahead = 7 - u64::from(today.weekday().num_days_from_monday());
    today + Days::new(ahead)
}

/// When an event happens, in days after the demo's Monday.
#[derive(Clone, Copy)]
enum When {
    /// Day, hour, minute, length in minutes (UTC).
    At(u64, u32, u32, u32),
    /// All day, first and last day (inclusive).
    AllDay(u64, u64),
}
use When::{AllDay, At};

/// workspace, calendar, sourceType, sourceId, eventType, title, when.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    When,
);

/// What the application enqueued while nobody was draining, in order.
#[rustfmt::skip]
const FIRST_BATCH: &[Row] = &[
    (PRODUCT, PRODUCT_CAL, "task", "task-101", "BLOCKER_DEADLINE", "Complete user interviews", At(0, 14, 0, 60)),
    (PRODUCT, PRODUCT_CAL, "task", "task-102", "TASK_DEADLINE", "Draft pricing page copy", At(2, 10, 0, 60)),
    (PRODUCT, PRODUCT_CAL, "task", "task-103", "TASK_DEADLINE", "Security review sign-off", At(3, 9, 0, 30)),
    (PRODUCT, PRODUCT_CAL, "task", "task-104", "TASK_DEADLINE", "Update onboarding checklist", At(1, 11, 0, 60)),
    (PRODUCT, PRODUCT_CAL, "milestone", "milestone-7", "MILESTONE", "Beta launch", At(3, 17, 0, 60)),
    (PRODUCT, PRODUCT_CAL, "milestone", "milestone-8", "MILESTONE", "Public launch", AllDay(11, 11)),
    (PRODUCT, PRODUCT_CAL, "event", "offsite-2", "TEAM_EVENT", "Team offsite", AllDay(7, 8)),
    // The deadline moved again before the worker ran: the first row is superseded.
    (PRODUCT, PRODUCT_CAL, "task", "task-104", "TASK_DEADLINE", "Update onboarding checklist", At(4, 11, 0, 60)),
    // A burst on one calendar; the fake answers three inserts with rate limits.
    (OPS, OPS_CAL, "release", "rel-2.4-freeze", "RELEASE", "Release 2.4: code freeze", At(0, 9, 0, 30)),
    (OPS, OPS_CAL, "release", "rel-2.4-staging", "RELEASE", "Release 2.4: staging sign-off", At(1, 13, 0, 30)),
    (OPS, OPS_CAL, "release", "rel-2.4-go", "RELEASE", "Release 2.4: go/no-go", At(2, 15, 0, 30)),
    (OPS, OPS_CAL, "release", "rel-2.4-ship", "RELEASE", "Release 2.4: ship", At(2, 16, 0, 60)),
    (OPS, OPS_CAL, "release", "rel-2.4-check", "RELEASE", "Release 2.4: post-release check", At(3, 10, 0, 30)),
    (OPS, OPS_CAL, "rota", "oncall-w1", "ON_CALL", "On-call handover", At(4, 8, 0, 30)),
    (OPS, MISSING_CAL, "retro", "incident-4711", "RETRO", "Retro: incident 4711", At(4, 14, 0, 60)),
    (GLOBEX, GLOBEX_CAL, "task", "g-31", "TASK_DEADLINE", "Quarterly planning draft", At(1, 9, 0, 60)),
    (GLOBEX, GLOBEX_CAL, "task", "g-32", "TASK_DEADLINE", "Board deck due", At(2, 12, 0, 30)),
    (GLOBEX, GLOBEX_CAL, "milestone", "g-m1", "MILESTONE", "Hiring plan approved", At(4, 16, 0, 30)),
];

/// The UPSERT_EVENT payload of a row, as a producer writes it.
fn upsert(monday: NaiveDate, row: &Row) -> Value {
    let &(workspace, calendar, source_type, source_id, event_type, title, when) = row;
    let day = |n: u64| monday + Days::new(n);
    let at =
        |n: u64, minutes: u32| format!("{}T{:02}:{:02}:00Z", day(n), minutes / 60, minutes % 60);
    let event = match when {
        At(n, h, m, length) => {
            json!({"title": title, "start": at(n, h * 60 + m), "end": at(n, h * 60 + m + length)})
        }
        AllDay(first, last) => {
            let (start, end) = (day(first).to_string(), day(last).to_string());
            json!({"title": title, "start": start, "end": end, "isAllDay": true})
        }
    };
    json!({
        "workspaceId": workspace, "calendarId": calendar, "sourceType": source_type,
        "sourceId": source_id, "eventType": event_type, "event": event,
    })
}

/// A payload as the SQL a producer runs, fields in the README's order.
fn example_sql(p: &Value) -> String {
    let e = &p["event"];
    format!(
        "INSERT INTO sync_outbox (operation, payload) VALUES ('UPSERT_EVENT', '{{\"workspaceId\": {}, \
         \"calendarId\": {}, \"sourceType\": {}, \"sourceId\": {}, \"eventType\": {}, \
         \"event\": {{\"title\": {}, \"start\": {}, \"end\": {}}}}}');",
        p["workspaceId"],
        p["calendarId"],
        p["sourceType"],
        p["sourceId"],
        p["eventType"],
        e["title"],
        e["start"],
        e["end"]
    )
}

/// The app's second round, in one transaction: a moved deadline, a cancelled
/// task, and a REBUILD_ALL of the calendar. Returns the REBUILD_ALL row's id.
async fn second_batch(producer: &Client, monday: NaiveDate) -> Result<uuid::Uuid, DemoError> {
    let moved = upsert(
        monday,
        &(
            PRODUCT,
            PRODUCT_CAL,
            "task",
            "task-101",
            "BLOCKER_DEADLINE",
            "Complete user interviews",
            At(1, 16, 0, 60),
        ),
    );
    let cancel = json!({
        "workspaceId": PRODUCT, "calendarId": PRODUCT_CAL, "sourceType": "task", "sourceId": "task-102",
    });
    let rebuild = json!({"workspaceId": PRODUCT, "calendarId": PRODUCT_CAL});
    producer.batch_execute("BEGIN").await?;
    let outcome = async {
        insert(producer, "UPSERT_EVENT", &moved).await?;
        insert(producer, "CANCEL_EVENT", &cancel).await?;
        let id = insert(producer, "REBUILD_ALL", &rebuild).await?;
        producer.batch_execute("COMMIT").await?;
        Ok::<_, DemoError>(id)
    }
    .await;
    if outcome.is_err() {
        let _ = producer.batch_execute("ROLLBACK").await;
    }
    outcome
}

async fn insert(
    client: &Client,
    operation: &str,
    payload: &Value,
) -> Result<uuid::Uuid, DemoError> {
    Ok(client
        .query_one(
            "INSERT INTO sync_outbox (operation, payload) VALUES ($1, $2) RETURNING id",
            &[&operation, payload],
        )
        .await?
        .get(0))
}

/// Waits, with a progress bar on stderr (hidden when it is not a terminal),
/// until no row is PENDING or PROCESSING; fails after 60 s.
async fn wait_until_drained(client: &Client, label: &str) -> Result<Duration, DemoError> {
    const LIMIT: Duration = Duration::from_secs(60);
    let started = Instant::now();
    // Drawn only once it knows its length.
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template("   {spinner} {msg} [{bar:30}] {pos}/{len} rows finished")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(label.to_owned());
    let mut drawing = false;
    loop {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE status IN ('PENDING', 'PROCESSING')), count(*)
                   FROM sync_outbox",
                &[],
            )
            .await?;
        let (open, total): (i64, i64) = (row.get(0), row.get(1));
        bar.set_length(u64::try_from(total).unwrap_or(0));
        bar.set_position(u64::try_from(total - open).unwrap_or(0));
        if !drawing {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            drawing = true;
        }
        bar.tick();
        if open == 0 {
            bar.finish_and_clear();
            return Ok(started.elapsed());
        }
        if started.elapsed() > LIMIT {
            bar.abandon();
            return Err(DemoError::new(format!(
                "the outbox did not drain within {} s ({open} rows still PENDING or PROCESSING)",
                LIMIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fake's id of the live event of one source.
fn event_id_of(google: &FakeGoogle, calendar: &str, source_id: &str) -> Result<String, DemoError> {
    google
        .live_events(calendar)
        .iter()
        .find(|e| e["extendedProperties"]["private"]["calendarSyncSourceId"] == source_id)
        .and_then(|e| e["id"].as_str().map(str::to_owned))
        .ok_or_else(|| {
            DemoError::new(format!(
                "no event of {source_id} in {calendar} after the first drain"
            ))
        })
}

/// One calendar's live events, sorted by date and time.
fn agenda(google: &FakeGoogle, calendar: &str, note: &str) -> String {
    let mut lines: Vec<((NaiveDate, String, String), String)> = google
        .live_events(calendar)
        .iter()
        .filter_map(|event| {
            let title = event["summary"].as_str().unwrap_or("(no title)").to_owned();
            let (start, end) = (&event["start"], &event["end"]);
            if let (Some(first), Some(end)) = (date(&start["date"]), date(&end["date"])) {
                // Google's end date is exclusive.
                let last = end.pred_opt().unwrap_or(end);
                let span = if last > first {
                    format!(" (through {})", last.format("%a %Y-%m-%d"))
                } else {
                    String::new()
                };
                let line = format!(
                    "{}  all day      {title}{span}",
                    first.format("%a %Y-%m-%d")
                );
                return Some(((first, String::new(), title), line));
            }
            let (start, end) = (instant(&start["dateTime"])?, instant(&end["dateTime"])?);
            let line = format!(
                "{}  {}-{}  {title}",
                start.format("%a %Y-%m-%d"),
                start.format("%H:%M"),
                end.format("%H:%M")
            );
            Some((
                (start.date_naive(), start.format("%H:%M").to_string(), title),
                line,
            ))
        })
        .collect();
    lines.sort();
    let mut text = format!("{calendar}\n");
    if lines.is_empty() {
        text.push_str(&format!(
            "  ({})\n",
            if note.is_empty() { "no events" } else { note }
        ));
    }
    for (_, line) in lines {
        text.push_str(&format!("  {line}\n"));
    }
    text
}

fn date(v: &Value) -> Option<NaiveDate> {
    v.as_str()?.parse().ok()
}

fn instant(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Why a dead-letter group is expected, and what an operator would do.
fn explain(code: &str) -> &'static str {
    match code {
        "oauth_invalid_grant" => {
            "Google refused the refresh token (the user revoked access), so the connection is now \
             marked invalid; fix: re-authorise with `connections put`, then `requeue --dead-letter --workspace globex`"
        }
        "connection_invalid" => {
            "not sent to Google at all: the workspace's connection was marked invalid by the revoked \
             grant; they go back with the same requeue once it is re-authorised"
        }
        "calendar_not_found" => {
            "the calendar does not exist at Google (deleted, or never shared with the account): \
             permanent, dead-lettered after one attempt; fix the calendarId, then requeue"
        }
        _ => "not part of the demo's plan",
    }
}
