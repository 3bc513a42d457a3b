//! The overview's charts and circuit-open connections, against a real
//! PostgreSQL (a fresh database per test). `calendar_sync_minute_counts` is
//! seeded with SQL, minutes relative to `now()`; rows are kept at least a
//! minute inside or outside each window, so a minute turning during a test
//! changes nothing.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use calendar_sync_dashboard::{DashboardOptions, router};
use calendar_sync_tests::TestDb;
use tower::ServiceExt;

async fn overview(t: &TestDb) -> String {
    let app = Router::new().nest(
        "/dashboard",
        router(t.db.clone(), DashboardOptions::default()),
    );
    let response = app
        .oneshot(
            Request::get("/dashboard")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .expect("body");
    let body = String::from_utf8(bytes.to_vec()).expect("utf-8");
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn seed(t: &TestDb, sql: &str) {
    t.client().await.batch_execute(sql).await.expect(sql);
}

/// `n` at each of the given minutes before the current one.
fn rows(metric: &str, label: &str, minutes_back: &str, n: &str) -> String {
    format!(
        "INSERT INTO calendar_sync_minute_counts (minute, metric, label, n)
         SELECT date_trunc('minute', now()) - make_interval(mins => g), '{metric}', '{label}', {n}
           FROM {minutes_back} AS g;"
    )
}

/// The `figure.chart` of a chart.
fn figure<'a>(body: &'a str, chart: &str) -> &'a str {
    let at = body
        .find(&format!("data-chart=\"{chart}\""))
        .unwrap_or_else(|| panic!("no chart {chart}"));
    let start = body[..at].rfind("<figure").expect("figure start");
    let end = at + body[at..].find("</figure>").expect("figure end");
    &body[start..end]
}

/// The value of the first `name="..."` attribute in a fragment.
fn attr<'a>(fragment: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let start = fragment
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {fragment}"))
        + key.len();
    let len = fragment[start..].find('"').expect("attribute end");
    &fragment[start..start + len]
}

/// The `g.series` of a series, if plotted.
fn series<'a>(figure: &'a str, key: &str) -> Option<&'a str> {
    let at = figure.find(&format!("<g class=\"series\" data-series=\"{key}\""))?;
    let end = at + figure[at..].find("</g>").expect("g end");
    Some(&figure[at..end])
}

/// The legend entry of a series.
fn legend<'a>(figure: &'a str, key: &str) -> &'a str {
    let legend = &figure[figure.find("<ul class=\"legend\"").expect("legend")..];
    let at = legend
        .find(&format!("<li data-series=\"{key}\""))
        .unwrap_or_else(|| panic!("no legend entry {key}"));
    let end = at + legend[at..].find("</li>").expect("li end");
    &legend[at..end]
}

fn legend_total(figure: &str, key: &str) -> String {
    let li = legend(figure, key);
    let start = li.find("<span class=\"total\">").expect("total") + "<span class=\"total\">".len();
    let len = li[start..].find("</span>").expect("total end");
    li[start..start + len].to_owned()
}

#[tokio::test]
async fn item_and_google_charts_total_the_last_hour() {
    let t = TestDb::new().await;
    seed(
        &t,
        &[
            // 10 + g at each of 50 minutes: 500 + 1,275.
            rows("completed", "", "generate_series(1, 50)", "10 + g"),
            rows("retried", "", "generate_series(5, 6)", "3"),
            rows("dead_lettered", "", "generate_series(10, 10)", "2"),
            rows("superseded", "", "generate_series(20, 20)", "4"),
            // Outside the window: ignored.
            rows("completed", "", "unnest(ARRAY[61, 90, 2880])", "1000"),
            rows("dead_lettered", "", "unnest(ARRAY[75])", "1000"),
            rows("google_calls", "200", "generate_series(1, 30)", "20"),
            rows("google_calls", "204", "generate_series(3, 3)", "1"),
            rows("google_calls", "429", "generate_series(7, 8)", "5"),
            rows("google_calls", "404", "generate_series(9, 9)", "2"),
            rows("google_calls", "403", "generate_series(9, 9)", "1"),
            rows("google_calls", "503", "generate_series(11, 13)", "1"),
            rows("google_calls", "500", "generate_series(12, 12)", "1"),
            rows("google_calls", "timeout", "generate_series(14, 15)", "1"),
            rows("google_calls", "error", "generate_series(16, 16)", "1"),
            rows(
                "google_calls",
                "<script>alert(1)</script>",
                "generate_series(17, 17)",
                "7",
            ),
            rows("google_calls", "500", "unnest(ARRAY[65, 1440])", "1000"),
        ]
        .concat(),
    )
    .await;
    let body = overview(&t).await;

    let items = figure(&body, "items");
    assert_eq!(attr(items, "data-total"), "1787", "{items}");
    for (key, total) in [
        ("completed", "1,775"),
        ("retried", "6"),
        ("dead_lettered", "2"),
        ("superseded", "4"),
    ] {
        let s = series(items, key).unwrap_or_else(|| panic!("no series {key}"));
        assert_eq!(attr(s, "data-points"), "60", "{key}");
        assert_eq!(s.matches("<rect").count(), 60, "{key}");
        assert_eq!(legend_total(items, key), total, "{key}");
    }
    assert!(items.contains("role=\"img\""), "{items}");
    assert!(items.contains("aria-label=\"Items per minute"), "{items}");
    assert!(items.contains("<details>"), "{items}");
    assert!(items.contains("x: time (UTC)"), "{items}");
    assert!(!items.contains("1,000"), "an old row is plotted: {items}");

    let google = figure(&body, "google");
    assert_eq!(attr(google, "data-total"), "628", "{google}");
    for (key, total, statuses) in [
        ("2xx", "601", &["200", "204"][..]),
        ("429", "10", &["429"][..]),
        ("4xx", "3", &["403", "404"][..]),
        ("5xx", "4", &["500", "503"][..]),
        ("timeout", "2", &["timeout"][..]),
        ("error", "1", &["error"][..]),
        ("other", "7", &["&lt;script&gt;alert(1)&lt;/script&gt;"][..]),
    ] {
        let s = series(google, key).unwrap_or_else(|| panic!("no series {key}"));
        assert_eq!(s.matches("<rect").count(), 60, "{key}");
        assert_eq!(legend_total(google, key), total, "{key}");
        let li = legend(google, key);
        if statuses.len() > 1 || statuses[0] != key {
            for status in statuses {
                assert!(
                    li.contains(&format!("<code>{status}</code>")),
                    "{key}: {li}"
                );
            }
        }
    }
    // The 5xx group is 503 three times and 500 once; the old 500s are not in it.
    assert!(
        legend(google, "5xx").contains("<code>500</code>: 1"),
        "{google}"
    );
    assert!(!body.contains("<script>"), "a label is not escaped");
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[tokio::test]
async fn depth_gaps_are_gaps_and_24_hours_are_bucketed() {
    let t = TestDb::new().await;
    seed(
        &t,
        &[
            // Two runs in the last hour: 1..=10 and 20..=30 minutes ago.
            rows("queue_depth", "", "generate_series(1, 10)", "100 + g"),
            rows("queue_depth", "", "generate_series(20, 30)", "200"),
            // Earlier today: every minute from 2 h to 6 h ago, a spike at 3 h.
            rows(
                "queue_depth",
                "",
                "generate_series(120, 360)",
                "CASE WHEN g = 180 THEN 5000 ELSE 50 END",
            ),
            // Older than 24 hours: ignored.
            rows(
                "queue_depth",
                "",
                "unnest(ARRAY[1500, 2000, 4000])",
                "99999",
            ),
        ]
        .concat(),
    )
    .await;
    let body = overview(&t).await;

    let hour = figure(&body, "depth-1h");
    assert_eq!(attr(hour, "data-total"), "101", "the latest sample: {hour}");
    let s = series(hour, "queue_depth").expect("depth series");
    assert_eq!(attr(s, "data-points"), "21", "{s}");
    assert_eq!(s.matches("<circle").count(), 21, "{s}");
    assert_eq!(attr(s, "data-runs"), "2", "{s}");
    let line = &s[s.find("class=\"line\"").expect("line")..];
    let d = attr(line, "d");
    assert_eq!(
        d.matches('M').count(),
        2,
        "a gap is not a new sub-path: {d}"
    );
    assert_eq!(d.matches('L').count(), 19, "{d}");
    // The gaps are "no sample" in the table, never 0.
    assert_eq!(hour.matches("no sample").count(), 39, "{hour}");
    assert!(!hour.contains("<td class=\"num\">0</td>"), "{hour}");
    assert!(hour.contains("gaps: no worker sampled"), "{hour}");

    let day = figure(&body, "depth-24h");
    assert_eq!(attr(day, "data-total"), "101", "the latest sample: {day}");
    let expected: i64 = t
        .client()
        .await
        .query_one(
            "SELECT count(DISTINCT date_bin('15 minutes', minute, TIMESTAMPTZ '2000-01-01 00:00:00+00'))
               FROM calendar_sync_minute_counts
              WHERE metric = 'queue_depth' AND minute > now() - interval '23 hours'",
            &[],
        )
        .await
        .expect("buckets")
        .get(0);
    let s = series(day, "queue_depth").expect("depth series");
    assert_eq!(attr(s, "data-points"), expected.to_string(), "{s}");
    assert_eq!(
        s.matches("<circle").count(),
        usize::try_from(expected).expect("count")
    );
    assert!(
        day.contains("5,000"),
        "the largest sample of the bucket: {day}"
    );
    assert!(!day.contains("99,999") && !hour.contains("99,999"), "{day}");
    assert_eq!(legend_total(day, "queue_depth"), "latest 101, max 5,000");
}

#[tokio::test]
async fn empty_charts_say_so() {
    let t = TestDb::new().await;
    // Only rows outside every window.
    seed(
        &t,
        &[
            rows("completed", "", "unnest(ARRAY[61, 3000])", "5"),
            rows("google_calls", "200", "unnest(ARRAY[61])", "5"),
            rows("queue_depth", "", "unnest(ARRAY[1500, 3000])", "5"),
        ]
        .concat(),
    )
    .await;
    let body = overview(&t).await;
    for chart in ["items", "google", "depth-1h", "depth-24h"] {
        let f = figure(&body, chart);
        assert_eq!(attr(f, "data-total"), "0", "{f}");
        assert!(
            f.contains("No activity recorded in the last")
                && f.contains("(workers write these counts; none ran?)"),
            "{f}"
        );
        assert!(!f.contains("<svg"), "{f}");
        assert!(f.contains("<figcaption>"), "{f}");
    }
    assert!(figure(&body, "items").contains("No activity recorded in the last hour (workers"));
    assert!(figure(&body, "depth-24h").contains("No activity recorded in the last 24 hours"));
}

#[tokio::test]
async fn charts_need_no_inline_style_or_script() {
    let t = TestDb::new().await;
    seed(
        &t,
        &[
            rows("completed", "", "generate_series(0, 30)", "5"),
            rows("google_calls", "200", "generate_series(0, 30)", "5"),
            rows("queue_depth", "", "generate_series(0, 300)", "5"),
        ]
        .concat(),
    )
    .await;
    let body = overview(&t).await;
    let start = body.find("<div class=\"charts\">").expect("charts");
    let end = start + body[start..].find("<h2>").expect("the next section");
    let charts = &body[start..end];
    for forbidden in [" style=", "<style", "<script", "javascript:", "href="] {
        assert!(
            !charts.contains(forbidden),
            "the charts contain {forbidden}"
        );
    }
    for (i, _) in charts.match_indices(" on") {
        let name: String = charts[i + 1..]
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        assert!(
            !charts[i + 1 + name.len()..].starts_with('='),
            "an event handler attribute: {name}"
        );
    }
    // Every SVG element is closed explicitly (an HTML parser does not know
    // SVG's void elements).
    assert!(!charts.contains("/>"), "{charts}");
    for chart in ["items", "google", "depth-1h", "depth-24h"] {
        let f = figure(&body, chart);
        assert_eq!(
            f.matches("<svg").count(),
            f.matches("</svg>").count(),
            "{f}"
        );
        assert!(
            f.contains("role=\"img\" ") || f.contains("role=\"img\">"),
            "{f}"
        );
    }
}

#[tokio::test]
async fn circuit_open_connections_are_listed_and_counted() {
    let t = TestDb::new().await;
    seed(
        &t,
        "INSERT INTO google_connections (workspace_id, google_email, refresh_token_encrypted, breaker_open_until)
         VALUES ('ws-open', 'open@example.com', 'x', now() + interval '10 minutes'),
                ('ws-closed', 'closed@example.com', 'x', now() - interval '10 minutes'),
                ('ws-fine', 'fine@example.com', 'x', NULL);",
    )
    .await;
    let body = overview(&t).await;
    assert!(body.contains("1 circuit open"), "{body}");
    let start = body
        .find("<tr data-workspace=\"ws-open\"")
        .expect("ws-open listed");
    let row = &body[start..start + body[start..].find("</tr>").expect("row end")];
    assert!(row.contains("circuit open"), "{row}");
    assert!(row.contains(" UTC"), "until when: {row}");
    assert!(
        !body.contains("ws-closed") && !body.contains("ws-fine"),
        "{body}"
    );
}

/// A query of `src/charts.rs`, by its constant's name.
fn query(name: &str) -> String {
    let source = include_str!("../src/charts.rs");
    let key = format!("const {name}: &str = \"");
    let start = source.find(&key).expect("query constant") + key.len();
    let len = source[start..].find("\";").expect("query end");
    source[start..start + len].to_owned()
}

#[tokio::test]
async fn chart_queries_read_the_window_through_the_primary_key() {
    let t = TestDb::new().await;
    // Three days of rows, every minute: 12 metrics and labels.
    let mut sql = String::new();
    for (metric, label) in [
        ("completed", ""),
        ("retried", ""),
        ("dead_lettered", ""),
        ("superseded", ""),
        ("queue_depth", ""),
        ("google_calls", "200"),
        ("google_calls", "201"),
        ("google_calls", "404"),
        ("google_calls", "429"),
        ("google_calls", "500"),
        ("google_calls", "timeout"),
        ("google_calls", "error"),
    ] {
        sql.push_str(&rows(
            metric,
            label,
            "generate_series(0, 3 * 1440 - 1)",
            "3",
        ));
    }
    sql.push_str("ANALYZE calendar_sync_minute_counts;");
    seed(&t, &sql).await;
    let client = t.client().await;
    for name in ["HOUR_SQL", "DAY_SQL"] {
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {}", query(name)), &[])
            .await
            .expect("explain")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        println!("{name}:\n{plan}\n");
        assert!(
            plan.contains("Index Scan using calendar_sync_minute_counts_pkey")
                || plan.contains("Bitmap Index Scan on calendar_sync_minute_counts_pkey"),
            "{name} does not use the primary key:\n{plan}"
        );
        assert!(!plan.contains("Seq Scan"), "{name}:\n{plan}");
    }
    // And the page: a full hour of every series.
    let body = overview(&t).await;
    assert_eq!(
        attr(figure(&body, "items"), "data-total"),
        (60 * 4 * 3).to_string()
    );
    assert_eq!(
        attr(figure(&body, "google"), "data-total"),
        (60 * 7 * 3).to_string()
    );
    assert_eq!(attr(figure(&body, "depth-1h"), "data-total"), "3");
    let s = series(figure(&body, "depth-24h"), "queue_depth").expect("depth");
    assert_eq!(attr(s, "data-points"), "96", "{s}");
}

/// Writes an overview with a day of plausible activity to the file named by
/// `CHARTS_HTML`, to look at in a browser:
/// `CHARTS_HTML=/tmp/page.html cargo test -p calendar-sync-dashboard --test charts -- --ignored`
/// (with `CHARTS_EMPTY=1`: an overview without any counts).
#[tokio::test]
#[ignore = "writes a sample page for screenshots"]
async fn sample_page() {
    let Ok(path) = std::env::var("CHARTS_HTML") else {
        return;
    };
    let t = TestDb::new().await;
    if std::env::var_os("CHARTS_EMPTY").is_some() {
        std::fs::write(&path, overview(&t).await).expect("write the page");
        return;
    }
    seed(
        &t,
        &[
            rows("completed", "", "generate_series(0, 59)", "(40 + 25 * sin(g / 6.0) + (g % 7) * 3)::bigint"),
            rows("retried", "", "generate_series(0, 59)", "CASE WHEN g BETWEEN 12 AND 18 THEN 6 + g % 4 WHEN g % 11 = 0 THEN 2 ELSE 0 END"),
            rows("dead_lettered", "", "unnest(ARRAY[14, 15, 33])", "CASE WHEN g = 33 THEN 1 ELSE 3 END"),
            rows("superseded", "", "generate_series(0, 59)", "(g % 5 = 0)::int * 4"),
            rows("google_calls", "200", "generate_series(0, 59)", "(45 + 25 * sin(g / 6.0) + (g % 7) * 3)::bigint"),
            rows("google_calls", "204", "generate_series(0, 59)", "3"),
            rows("google_calls", "429", "generate_series(12, 18)", "8 + g % 3"),
            rows("google_calls", "404", "unnest(ARRAY[3, 27, 44])", "1"),
            rows("google_calls", "503", "unnest(ARRAY[14, 15])", "4"),
            rows("google_calls", "timeout", "unnest(ARRAY[15, 40])", "2"),
            rows("queue_depth", "", "generate_series(0, 22)", "(120 + 60 * sin(g / 5.0))::bigint"),
            rows("queue_depth", "", "generate_series(31, 59)", "(300 - g * 3)::bigint"),
            rows("queue_depth", "", "generate_series(60, 1439)", "CASE WHEN g BETWEEN 600 AND 700 THEN 0 ELSE (200 + 150 * sin(g / 90.0) + (g % 13) * 8)::bigint END"),
            "DELETE FROM calendar_sync_minute_counts WHERE metric = 'queue_depth' AND minute < now() - interval '8 hours' AND minute > now() - interval '10 hours';".to_owned(),
            "INSERT INTO google_connections (workspace_id, google_email, refresh_token_encrypted, is_valid, invalid_reason, paused_until, breaker_open_until)
             VALUES ('ws-acme', 'ops@acme.example', 'x', true, NULL, NULL, now() + interval '4 minutes'),
                    ('ws-globex', 'it@globex.example', 'x', false, 'invalid_grant', NULL, NULL);".to_owned(),
        ]
        .concat(),
    )
    .await;
    std::fs::write(&path, overview(&t).await).expect("write the page");
}
