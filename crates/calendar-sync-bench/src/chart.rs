//! SVG charts (plotters, no font files needed) under `docs/benchmarks/`.

use plotters::prelude::*;

use crate::report::out_dir;

const PALETTE: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
];

/// A horizontal reference line with its label.
pub struct Target<'a> {
    /// Its value.
    pub value: f64,
    /// What it is.
    pub label: &'a str,
}

/// Bars with their values written above them, and an optional target line.
pub fn bars(
    file: &str,
    title: &str,
    y_label: &str,
    bars: &[(String, f64)],
    target: Option<Target<'_>>,
) {
    let path = out_dir().join(file);
    let root = SVGBackend::new(&path, (900, 460)).into_drawing_area();
    root.fill(&WHITE).expect("fill");
    let top = bars
        .iter()
        .map(|b| b.1)
        .chain(target.as_ref().map(|t| t.value))
        .fold(1.0, f64::max)
        * 1.18;
    let n = bars.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(10)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n, 0.0..top)
        .expect("chart");
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc(y_label)
        .draw()
        .expect("mesh");
    for (i, (label, value)) in bars.iter().enumerate() {
        let x = i as f64;
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x + 0.15, 0.0), (x + 0.85, *value)],
                color.mix(0.75).filled(),
            )))
            .expect("bar");
        let style = TextStyle::from(("sans-serif", 14).into_font()).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Bottom,
            ),
        );
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{label}: {value:.0}"),
                (x + 0.5, *value + top * 0.01),
                style,
            )))
            .expect("label");
    }
    if let Some(t) = target {
        chart
            .draw_series(LineSeries::new(
                [(0.0, t.value), (n, t.value)],
                BLACK.stroke_width(2),
            ))
            .expect("target")
            .label(t.label)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .expect("legend");
    }
    root.present().expect("write chart");
}

/// Cumulative distributions on a logarithmic x axis (latencies).
pub fn cdf(file: &str, title: &str, x_label: &str, series: &[(String, Vec<f64>)]) {
    let path = out_dir().join(file);
    let root = SVGBackend::new(&path, (900, 460)).into_drawing_area();
    root.fill(&WHITE).expect("fill");
    let all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|v| *v > 0.0)
        .collect();
    let lo = all.iter().copied().fold(f64::MAX, f64::min).max(0.01) / 1.5;
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0) * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..100.0)
        .expect("chart");
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("% of items picked up within")
        .draw()
        .expect("mesh");
    for (i, (name, values)) in series.iter().enumerate() {
        let mut v = values.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len().max(1) as f64;
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                v.iter()
                    .enumerate()
                    .map(|(k, x)| (x.max(lo), (k + 1) as f64 / n * 100.0)),
                color.stroke_width(2),
            ))
            .expect("series")
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .expect("legend");
    root.present().expect("write chart");
}

/// Lines over time, with an optional reference line.
pub fn lines(
    file: &str,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[(String, Vec<(f64, f64)>)],
    target: Option<Target<'_>>,
) {
    let path = out_dir().join(file);
    let root = SVGBackend::new(&path, (900, 460)).into_drawing_area();
    root.fill(&WHITE).expect("fill");
    let x_hi = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let y_hi = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .chain(target.as_ref().map(|t| t.value))
        .fold(1.0, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_hi, 0.0..y_hi)
        .expect("chart");
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .expect("mesh");
    for (i, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .expect("series")
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    if let Some(t) = target {
        chart
            .draw_series(LineSeries::new(
                [(0.0, t.value), (x_hi, t.value)],
                BLACK.stroke_width(1),
            ))
            .expect("target")
            .label(t.label)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .expect("legend");
    root.present().expect("write chart");
}
