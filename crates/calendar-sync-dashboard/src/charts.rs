//! The overview's charts: items and Google calls per minute over the last
//! hour, and the queue depth over the last hour and the last 24 hours, read
//! from `calendar_sync_minute_counts` (written by every worker) and drawn as
//! inline SVG on the server.
//!
//! No JavaScript and no inline styles (the Content-Security-Policy forbids
//! both): shapes carry SVG presentation attributes (`fill`, `stroke`), the
//! rest is styled by classes in the stylesheet, and every label goes through
//! maud's escaping. Each chart is a `figure.chart` with `data-chart` and
//! `data-total`, its series are `g.series[data-series]`, and a `<details>`
//! table holds the same numbers for screen readers and copying.

use chrono::{DateTime, Duration, Timelike, Utc};
use maud::{Markup, html};

use crate::layout::thousands;
use crate::overview::Failure;

/// Minutes on the per-minute charts.
const HOUR_SLOTS: usize = 60;
/// Minutes per bucket of the 24-hour depth chart.
const DAY_BUCKET_MINUTES: i64 = 15;
/// Buckets of the 24-hour depth chart (24 h of 15 minutes).
const DAY_SLOTS: usize = 96;

/// The last hour's rows: every metric of the minutes in
/// `(now - 60 min, now]`, through the primary key (`minute` leads it).
const HOUR_SQL: &str = "SELECT minute, metric, label, n
       FROM calendar_sync_minute_counts
      WHERE minute > date_trunc('minute', now()) - interval '60 minutes'
        AND minute <= date_trunc('minute', now())";

/// The current minute, and the queue depth of the last 24 hours in
/// 15-minute buckets (the largest sample of each, and its latest), through
/// the primary key. The `LEFT JOIN` keeps the row of the current minute when
/// no worker sampled anything.
const DAY_SQL: &str = "SELECT w.now_minute, d.bucket, d.depth, d.latest
       FROM (SELECT date_trunc('minute', now()) AS now_minute) w
       LEFT JOIN (
            SELECT date_bin('15 minutes', minute, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
                   max(n) AS depth,
                   (array_agg(n ORDER BY minute DESC))[1] AS latest
              FROM calendar_sync_minute_counts
             WHERE minute >= date_bin('15 minutes', date_trunc('minute', now()),
                                      TIMESTAMPTZ '2000-01-01 00:00:00+00') - interval '1425 minutes'
               AND minute <= date_trunc('minute', now())
               AND metric = 'queue_depth'
             GROUP BY 1) d ON true
      ORDER BY d.bucket";

/// What the charts read.
#[derive(Debug)]
pub(crate) struct Charts {
    now_minute: DateTime<Utc>,
    hour: Vec<(DateTime<Utc>, String, String, i64)>,
    day: Vec<(DateTime<Utc>, i64, i64)>,
}

pub(crate) async fn read(tx: &tokio_postgres::Transaction<'_>) -> Result<Charts, Failure> {
    let day_rows = tx.query(DAY_SQL, &[]).await?;
    let now_minute: DateTime<Utc> = day_rows
        .first()
        .map(|r| r.get(0))
        .ok_or("the depth query returned no row")?;
    let day = day_rows
        .iter()
        .filter_map(|r| {
            let bucket: Option<DateTime<Utc>> = r.get(1);
            bucket.map(|b| (b, r.get(2), r.get(3)))
        })
        .collect();
    let hour = tx
        .query(HOUR_SQL, &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    Ok(Charts {
        now_minute,
        hour,
        day,
    })
}

/// One plotted series.
#[derive(Debug)]
struct Series {
    key: &'static str,
    name: &'static str,
    color: &'static str,
    values: Vec<i64>,
    /// The raw labels grouped into this series, with their totals (Google
    /// calls by status).
    parts: Vec<(String, i64)>,
}

impl Series {
    fn new(key: &'static str, name: &'static str, color: &'static str, slots: usize) -> Self {
        Self {
            key,
            name,
            color,
            values: vec![0; slots],
            parts: Vec::new(),
        }
    }

    fn total(&self) -> i64 {
        self.values.iter().sum()
    }

    /// Whether the legend lists the raw labels: not when the only one is
    /// the series itself ("429", "timeout").
    fn shows_parts(&self) -> bool {
        match self.parts.as_slice() {
            [] => false,
            [(only, _)] => only != self.key,
            _ => true,
        }
    }
}

/// The item metrics, bottom of the stack first.
const ITEM_SERIES: [(&str, &str, &str); 4] = [
    ("dead_lettered", "dead-lettered", "#c62828"),
    ("retried", "retried", "#e08e0b"),
    ("superseded", "superseded", "#9aa4af"),
    ("completed", "completed", "#2e8b57"),
];

/// Google call groups, bottom of the stack first: errors at the baseline,
/// where they stay visible under a tall column of successes.
const GOOGLE_SERIES: [(&str, &str, &str); 7] = [
    ("5xx", "5xx", "#c62828"),
    ("429", "429 rate limited", "#e08e0b"),
    ("4xx", "4xx other", "#8e44ad"),
    ("timeout", "timeout", "#6d4c41"),
    ("error", "no answer (error)", "#37474f"),
    ("other", "other", "#1f77b4"),
    ("2xx", "2xx success", "#7cc08a"),
];

/// The group of a `google_calls` label.
fn google_group(label: &str) -> &'static str {
    match label {
        "429" => "429",
        "timeout" => "timeout",
        "error" => "error",
        _ => match label.parse::<u16>() {
            Ok(200..=299) => "2xx",
            Ok(400..=499) => "4xx",
            Ok(500..=599) => "5xx",
            _ => "other",
        },
    }
}

/// The slot of a minute on the hour axis, if inside it.
fn hour_slot(now_minute: DateTime<Utc>, minute: DateTime<Utc>) -> Option<usize> {
    let back = (now_minute - minute).num_minutes();
    let back = usize::try_from(back).ok()?;
    (back < HOUR_SLOTS).then(|| HOUR_SLOTS - 1 - back)
}

fn hour_axis(now_minute: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    (0..HOUR_SLOTS)
        .map(|i| {
            let back = i64::try_from(HOUR_SLOTS - 1 - i).unwrap_or(0);
            now_minute - Duration::minutes(back)
        })
        .collect()
}

/// The 24-hour axis: 96 buckets of 15 minutes on the quarter hours (UTC,
/// as `date_bin` in `DAY_SQL` cuts them), the last holding the current
/// minute.
fn day_axis(now_minute: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let past_quarter = i64::from(now_minute.minute()) % DAY_BUCKET_MINUTES;
    let last = now_minute - Duration::minutes(past_quarter);
    (0..DAY_SLOTS)
        .map(|i| {
            let back = i64::try_from(DAY_SLOTS - 1 - i).unwrap_or(0);
            last - Duration::minutes(back * DAY_BUCKET_MINUTES)
        })
        .collect()
}

/// Adds a raw label's count to a series' breakdown.
fn add_part(parts: &mut Vec<(String, i64)>, label: &str, n: i64) {
    match parts.iter_mut().find(|(l, _)| l == label) {
        Some((_, total)) => *total += n,
        None => parts.push((label.to_owned(), n)),
    }
}

/// The charts' markup: four figures.
pub(crate) fn render(c: &Charts) -> Markup {
    let minutes = hour_axis(c.now_minute);
    let mut items: Vec<Series> = ITEM_SERIES
        .iter()
        .map(|(k, name, color)| Series::new(k, name, color, HOUR_SLOTS))
        .collect();
    let mut google: Vec<Series> = GOOGLE_SERIES
        .iter()
        .map(|(k, name, color)| Series::new(k, name, color, HOUR_SLOTS))
        .collect();
    let mut depth_hour: Vec<Option<i64>> = vec![None; HOUR_SLOTS];
    let mut items_seen = false;
    for (minute, metric, label, n) in &c.hour {
        let Some(slot) = hour_slot(c.now_minute, *minute) else {
            continue;
        };
        match metric.as_str() {
            "google_calls" => {
                let group = google_group(label);
                if let Some(s) = google.iter_mut().find(|s| s.key == group) {
                    s.values[slot] += n;
                    add_part(&mut s.parts, label, *n);
                }
            }
            "queue_depth" => depth_hour[slot] = Some(*n),
            m => {
                if let Some(s) = items.iter_mut().find(|s| s.key == m) {
                    s.values[slot] += n;
                    items_seen = true;
                }
            }
        }
    }
    // Only the groups of calls seen, each with its statuses in order.
    google.retain(|s| !s.parts.is_empty());
    for s in &mut google {
        s.parts.sort();
    }

    let buckets = day_axis(c.now_minute);
    let mut depth_day: Vec<Option<i64>> = vec![None; DAY_SLOTS];
    let mut day_latest = None;
    // In bucket order: the last one read holds the latest sample.
    for (bucket, depth, latest) in &c.day {
        if let Some(slot) = buckets.iter().position(|b| b == bucket) {
            depth_day[slot] = Some(*depth);
            day_latest = Some(*latest);
        }
    }

    html! {
        div.charts {
            (stacked_chart(&StackedChart {
                id: "items",
                title: "Items per minute",
                units: "items per minute",
                unit: "items",
                minutes: &minutes,
                series: &items,
                empty: !items_seen,
            }))
            (stacked_chart(&StackedChart {
                id: "google",
                title: "Google calls per minute",
                units: "calls per minute, by HTTP status",
                unit: "calls",
                minutes: &minutes,
                series: &google,
                empty: google.is_empty(),
            }))
            (depth_chart(&DepthChart {
                id: "depth-1h",
                title: "Queue depth, last hour",
                units: "PENDING + PROCESSING items, sampled each minute",
                slots: &minutes,
                slot_minutes: 1,
                values: &depth_hour,
                latest: depth_hour.iter().rev().find_map(|v| *v),
            }))
            (depth_chart(&DepthChart {
                id: "depth-24h",
                title: "Queue depth, last 24 hours",
                units: "PENDING + PROCESSING items, largest sample per 15 minutes",
                slots: &buckets,
                slot_minutes: DAY_BUCKET_MINUTES,
                values: &depth_day,
                latest: day_latest,
            }))
        }
    }
}

// ---- geometry -------------------------------------------------------------

/// The SVG's coordinate system (it scales to the figure's width).
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 230.0;
const LEFT: f64 = 54.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 30.0;
const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;
const BASELINE: f64 = TOP + PLOT_H;

/// A count as a coordinate: counts here stay far below 2^52, where an `f64`
/// is exact.
#[allow(clippy::cast_precision_loss)]
fn float(n: i64) -> f64 {
    n as f64
}

fn index_float(i: usize) -> f64 {
    u32::try_from(i).map_or(f64::MAX, f64::from)
}

/// A coordinate with one decimal, for compact markup.
fn coord(x: f64) -> String {
    format!("{x:.1}")
}

/// The y-axis: a round step (1, 2 or 5 times a power of ten) giving at most
/// five intervals, and the top of the axis.
fn y_ticks(max: i64) -> (i64, Vec<i64>) {
    let max = max.max(1);
    let mut magnitude: i64 = 1;
    let step = 'found: loop {
        for k in [1, 2, 5] {
            let step = k * magnitude;
            if step.saturating_mul(5) >= max {
                break 'found step;
            }
        }
        magnitude = magnitude.saturating_mul(10);
    };
    let top = (max + step - 1) / step * step;
    let ticks = (0..=top / step).map(|i| i * step).collect();
    (top, ticks)
}

fn y_of(value: i64, top: i64) -> f64 {
    BASELINE - float(value) / float(top) * PLOT_H
}

/// A short axis label: "950", "12k", "1.5M".
fn short(n: i64) -> String {
    if n >= 1_000_000 && n % 100_000 == 0 {
        let tenths = n / 100_000;
        if tenths % 10 == 0 {
            format!("{}M", tenths / 10)
        } else {
            format!("{}.{}M", tenths / 10, tenths % 10)
        }
    } else if n >= 10_000 && n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        thousands(n)
    }
}

fn hhmm(t: &DateTime<Utc>) -> String {
    t.format("%H:%M").to_string()
}

/// Grid lines and labels of the y-axis.
fn y_axis(top: i64, ticks: &[i64]) -> Markup {
    html! {
        g.axis.y-axis {
            @for t in ticks {
                @let y = coord(y_of(*t, top));
                line.grid x1=(coord(LEFT)) x2=(coord(WIDTH - RIGHT)) y1=(y) y2=(y)
                    stroke=(if *t == 0 { "#8a939c" } else { "#e3e7eb" }) stroke-width="1" {}
                text x=(coord(LEFT - 6.0)) y=(coord(y_of(*t, top) + 4.0)) text-anchor="end" { (short(*t)) }
            }
        }
    }
}

/// Labels of the x-axis: the slots whose time is a multiple of `every`
/// minutes, at the slot's centre.
fn x_axis(slots: &[DateTime<Utc>], every: u32) -> Markup {
    let slot_w = PLOT_W / index_float(slots.len());
    html! {
        g.axis.x-axis {
            @for (i, t) in slots.iter().enumerate() {
                @if (t.hour() * 60 + t.minute()) % every == 0 {
                    @let x = LEFT + (index_float(i) + 0.5) * slot_w;
                    line x1=(coord(x)) x2=(coord(x)) y1=(coord(BASELINE)) y2=(coord(BASELINE + 4.0)) stroke="#8a939c" stroke-width="1" {}
                    text x=(coord(x)) y=(coord(BASELINE + 17.0)) text-anchor="middle" { (hhmm(t)) }
                }
            }
            text.axis-unit x=(coord(WIDTH - RIGHT)) y=(coord(HEIGHT - 1.0)) text-anchor="end" { "UTC" }
        }
    }
}

fn empty_message(id: &str, slot_minutes: i64) -> Markup {
    let span = if slot_minutes == 1 {
        "the last hour"
    } else {
        "the last 24 hours"
    };
    html! {
        p.chart-empty data-chart-empty=(id) {
            "No activity recorded in " (span) " (workers write these counts; none ran?)"
        }
    }
}

fn caption(title: &str, units: &str, headline: Option<String>) -> Markup {
    html! {
        figcaption {
            span.chart-title { (title) }
            @if let Some(headline) = headline {
                span.chart-headline { (headline) }
            }
            span.chart-units { "y: " (units) " · x: time (UTC)" }
        }
    }
}

// ---- stacked bars -----------------------------------------------------------

struct StackedChart<'a> {
    id: &'static str,
    title: &'static str,
    units: &'static str,
    unit: &'static str,
    minutes: &'a [DateTime<Utc>],
    /// Bottom of the stack first.
    series: &'a [Series],
    empty: bool,
}

fn stacked_chart(c: &StackedChart<'_>) -> Markup {
    let total: i64 = c.series.iter().map(Series::total).sum();
    let column_max = (0..c.minutes.len())
        .map(|i| c.series.iter().map(|s| s.values[i]).sum::<i64>())
        .max()
        .unwrap_or(0);
    let (top, ticks) = y_ticks(column_max);
    let slot_w = PLOT_W / index_float(c.minutes.len());
    let bar_w = (slot_w * 0.78).max(1.0);
    // Stack offsets, column by column.
    let mut below = vec![0_i64; c.minutes.len()];
    let mut stacked: Vec<Vec<(i64, i64)>> = Vec::with_capacity(c.series.len());
    for s in c.series {
        let mut bars = Vec::with_capacity(s.values.len());
        for (i, v) in s.values.iter().enumerate() {
            bars.push((below[i], *v));
            below[i] += v;
        }
        stacked.push(bars);
    }
    let first = c.minutes.first().map(hhmm).unwrap_or_default();
    let last = c.minutes.last().map(hhmm).unwrap_or_default();
    html! {
        figure.chart data-chart=(c.id) data-total=(total) {
            (caption(c.title, c.units, (!c.empty).then(|| format!("{} {} in 60 min", thousands(total), c.unit))))
            @if c.empty {
                (empty_message(c.id, 1))
            } @else {
                svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" preserveAspectRatio="xMidYMid meet"
                    aria-label={ (c.title) ", " (first) " to " (last) " UTC: " (thousands(total)) " " (c.unit) " in total; "
                        @for (n, s) in c.series.iter().rev().enumerate() { @if n > 0 { ", " } (s.name) " " (thousands(s.total())) } } {
                    (y_axis(top, &ticks))
                    @for (s, bars) in c.series.iter().zip(&stacked) {
                        g.series data-series=(s.key) data-points=(bars.len()) fill=(s.color) {
                            @for (i, (base, v)) in bars.iter().enumerate() {
                                @let y_top = y_of(base + v, top);
                                rect x=(coord(LEFT + index_float(i) * slot_w + (slot_w - bar_w) / 2.0))
                                    y=(coord(y_top)) width=(coord(bar_w))
                                    height=(coord(y_of(*base, top) - y_top)) {}
                            }
                        }
                    }
                    (x_axis(c.minutes, 10))
                    // Hover targets: one column per minute, its numbers as a tooltip.
                    g.hover {
                        @for (i, t) in c.minutes.iter().enumerate() {
                            rect x=(coord(LEFT + index_float(i) * slot_w)) y=(coord(TOP)) width=(coord(slot_w)) height=(coord(PLOT_H))
                                fill="#000" fill-opacity="0" {
                                title {
                                    (hhmm(t)) " UTC"
                                    @for s in c.series.iter().rev() { "\n" (s.name) ": " (thousands(s.values[i])) }
                                }
                            }
                        }
                    }
                }
                ul.legend {
                    @for s in c.series.iter().rev() {
                        li data-series=(s.key) {
                            svg.swatch width="12" height="12" viewBox="0 0 12 12" aria-hidden="true" { rect width="12" height="12" rx="2" fill=(s.color) {} }
                            span.name { (s.name) }
                            " "
                            span.total { (thousands(s.total())) }
                            @if s.shows_parts() {
                                " "
                                span.parts {
                                    "("
                                    @for (n, (label, count)) in s.parts.iter().enumerate() {
                                        @if n > 0 { ", " }
                                        span.part data-status=(label) { code { (label) } ": " (thousands(*count)) }
                                    }
                                    ")"
                                }
                            }
                        }
                    }
                }
                details {
                    summary { "The numbers" }
                    div.chart-table { table.chart-data {
                        thead { tr {
                            th { "Minute (UTC)" }
                            @for s in c.series.iter().rev() { th.num { (s.name) } }
                            th.num { "Total" }
                        } }
                        tbody {
                            @for (i, t) in c.minutes.iter().enumerate() {
                                tr {
                                    td { (hhmm(t)) }
                                    @for s in c.series.iter().rev() { td.num { (thousands(s.values[i])) } }
                                    td.num { (thousands(c.series.iter().map(|s| s.values[i]).sum::<i64>())) }
                                }
                            }
                        }
                    } }
                }
            }
        }
    }
}

// ---- depth lines ------------------------------------------------------------

struct DepthChart<'a> {
    id: &'static str,
    title: &'static str,
    units: &'static str,
    slots: &'a [DateTime<Utc>],
    slot_minutes: i64,
    /// `None`: no worker sampled in that slot (drawn as a gap).
    values: &'a [Option<i64>],
    latest: Option<i64>,
}

const DEPTH_COLOR: &str = "#0b57d0";

fn depth_chart(c: &DepthChart<'_>) -> Markup {
    let samples = c.values.iter().flatten().count();
    let max = c.values.iter().flatten().copied().max().unwrap_or(0);
    let (top, ticks) = y_ticks(max);
    let slot_w = PLOT_W / index_float(c.slots.len());
    let x = |i: usize| LEFT + (index_float(i) + 0.5) * slot_w;
    // One sub-path per run of sampled slots: a slot without a sample breaks
    // the line instead of dropping it to zero.
    let mut line = String::new();
    let mut area = String::new();
    let mut run: Vec<(f64, f64)> = Vec::new();
    let mut runs = 0_usize;
    let mut flush = |run: &mut Vec<(f64, f64)>, line: &mut String, area: &mut String| {
        if let (Some(first), Some(last)) = (run.first(), run.last()) {
            runs += 1;
            for (n, (px, py)) in run.iter().enumerate() {
                line.push_str(if n == 0 { "M" } else { "L" });
                line.push_str(&format!("{} {}", coord(*px), coord(*py)));
            }
            area.push_str(&format!("M{} {}", coord(first.0), coord(BASELINE)));
            for (px, py) in run.iter() {
                area.push_str(&format!("L{} {}", coord(*px), coord(*py)));
            }
            area.push_str(&format!("L{} {}Z", coord(last.0), coord(BASELINE)));
        }
        run.clear();
    };
    for (i, v) in c.values.iter().enumerate() {
        match v {
            Some(v) => run.push((x(i), y_of(*v, top))),
            None => flush(&mut run, &mut line, &mut area),
        }
    }
    flush(&mut run, &mut line, &mut area);
    let every = if c.slot_minutes == 1 { 10 } else { 180 };
    let slot_end = |t: &DateTime<Utc>| hhmm(&(*t + Duration::minutes(c.slot_minutes - 1)));
    let span = match (c.slots.first(), c.slots.last()) {
        (Some(first), Some(last)) if c.slot_minutes == 1 => {
            format!("{} to {} UTC", hhmm(first), hhmm(last))
        }
        (_, Some(last)) => format!("the 24 hours to {} UTC", slot_end(last)),
        _ => String::new(),
    };
    let gaps = c.values.iter().filter(|v| v.is_none()).count();
    // When the latest sample was taken: its minute, or its bucket.
    let latest_at = c.values.iter().rposition(Option::is_some).map(|i| {
        if c.slot_minutes == 1 {
            format!("at {} UTC", hhmm(&c.slots[i]))
        } else {
            format!("in {}–{} UTC", hhmm(&c.slots[i]), slot_end(&c.slots[i]))
        }
    });
    let headline = c
        .latest
        .zip(latest_at)
        .map(|(n, at)| format!("latest {} {at}", thousands(n)));
    html! {
        figure.chart.depth data-chart=(c.id) data-total=(c.latest.unwrap_or(0)) {
            (caption(c.title, c.units, headline))
            @if samples == 0 {
                (empty_message(c.id, c.slot_minutes))
            } @else {
                svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" preserveAspectRatio="xMidYMid meet"
                    aria-label={ (c.title) ", " (span) ": latest " (thousands(c.latest.unwrap_or(0)))
                        " items, at most " (thousands(max)) "; " (gaps) " of " (c.slots.len())
                        @if c.slot_minutes == 1 { " minutes" } @else { " quarter hours" } " without a sample" } {
                    (y_axis(top, &ticks))
                    g.series data-series="queue_depth" data-points=(samples) data-runs=(runs) {
                        path.area d=(area) fill=(DEPTH_COLOR) fill-opacity="0.12" stroke="none" {}
                        path.line d=(line) fill="none" stroke=(DEPTH_COLOR) stroke-width="2" stroke-linejoin="round" stroke-linecap="round" {}
                        @for (i, v) in c.values.iter().enumerate() {
                            @if let Some(v) = v {
                                @let isolated = (i == 0 || c.values[i - 1].is_none()) && c.values.get(i + 1).is_none_or(Option::is_none);
                                circle.point cx=(coord(x(i))) cy=(coord(y_of(*v, top)))
                                    r=(if isolated { "3.2" } else if c.slot_minutes == 1 { "2.4" } else { "1.6" })
                                    fill=(if c.slot_minutes == 1 && !isolated { "#fff" } else { DEPTH_COLOR }) stroke=(DEPTH_COLOR) stroke-width=(if c.slot_minutes == 1 { "1.5" } else { "0" }) {
                                    title { (hhmm(&c.slots[i])) " UTC: " (thousands(*v)) " items" }
                                }
                            }
                        }
                    }
                    (x_axis(c.slots, every))
                }
                ul.legend {
                    li data-series="queue_depth" {
                        svg.swatch width="12" height="12" viewBox="0 0 12 12" aria-hidden="true" { rect width="12" height="12" rx="2" fill=(DEPTH_COLOR) {} }
                        span.name { "queue depth" } " "
                        span.total { "latest " (thousands(c.latest.unwrap_or(0))) ", max " (thousands(max)) }
                    }
                    @if gaps > 0 {
                        li.gap-note { "gaps: no worker sampled" }
                    }
                }
                details {
                    summary { "The numbers" }
                    div.chart-table { table.chart-data {
                        thead { tr {
                            th { @if c.slot_minutes == 1 { "Minute (UTC)" } @else { "From (UTC)" } }
                            th.num { @if c.slot_minutes == 1 { "Depth" } @else { "Largest depth" } }
                        } }
                        tbody {
                            @for (t, v) in c.slots.iter().zip(c.values) {
                                tr {
                                    td { (t.format("%m-%d %H:%M")) }
                                    td.num { @match v { Some(v) => (thousands(*v)), None => "no sample" } }
                                }
                            }
                        }
                    } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn y_ticks_are_round_and_cover_the_maximum() {
        assert_eq!(y_ticks(0), (1, vec![0, 1]));
        assert_eq!(y_ticks(7), (8, vec![0, 2, 4, 6, 8]));
        assert_eq!(y_ticks(96), (100, vec![0, 20, 40, 60, 80, 100]));
        assert_eq!(y_ticks(446), (500, vec![0, 100, 200, 300, 400, 500]));
        assert_eq!(y_ticks(120_001).0, 150_000);
    }

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(short(950), "950");
        assert_eq!(short(5_000), "5,000");
        assert_eq!(short(20_000), "20k");
        assert_eq!(short(1_500_000), "1.5M");
        assert_eq!(short(2_000_000), "2M");
    }

    #[test]
    fn statuses_are_grouped() {
        for (label, group) in [
            ("200", "2xx"),
            ("204", "2xx"),
            ("429", "429"),
            ("404", "4xx"),
            ("400", "4xx"),
            ("500", "5xx"),
            ("503", "5xx"),
            ("timeout", "timeout"),
            ("error", "error"),
            ("302", "other"),
            ("<b>", "other"),
        ] {
            assert_eq!(google_group(label), group, "{label}");
        }
    }

    #[test]
    fn the_day_axis_ends_in_the_current_quarter_hour() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T10:37:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let axis = day_axis(now);
        assert_eq!(axis.len(), 96);
        assert_eq!(hhmm(&axis[95]), "10:30");
        assert_eq!(hhmm(&axis[0]), "10:45");
        assert_eq!(hour_slot(now, now), Some(59));
        assert_eq!(hour_slot(now, now - Duration::minutes(59)), Some(0));
        assert_eq!(hour_slot(now, now - Duration::minutes(60)), None);
        assert_eq!(hour_slot(now, now + Duration::minutes(1)), None);
    }
}
