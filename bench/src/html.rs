//! One self-contained HTML page: the latency percentile plot (x: percentile on HdrHistogram's
//! log scale of 1/(1-p), y: ms) and the rate-over-time chart, as inline SVG drawn here, plus the
//! report's JSON embedded for anyone who wants the numbers. No scripts, no CDN.

use crate::report::Report;
use hdrhistogram::Histogram;
use std::fmt::Write as _;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 320.0;
const MARGIN: f64 = 56.0;

/// (percentile in %, latency in ms) points of the distribution, from HdrHistogram's iterator.
pub fn distribution(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    histogram
        .iter_quantiles(5)
        .map(|step| {
            (
                step.quantile_iterated_to() * 100.0,
                step.value_iterated_to() as f64 / 1e6,
            )
        })
        .collect()
}

pub fn render(report: &Report, latency: &[(f64, f64)], report_json: &str) -> String {
    let mut page = String::new();
    let title = format!(
        "ringmq-bench {:?}: {} publishers, {} subscribers",
        report.config.mode, report.config.publishers, report.config.subscribers
    );
    let _ = write!(
        page,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>body{{font:14px sans-serif;margin:24px}}svg{{background:#fff;border:1px solid #ddd;margin:8px 0}}pre{{background:#f6f6f6;padding:8px}}</style></head><body>\n<h1>{}</h1>\n<pre>{}</pre>\n",
        escape(&title),
        escape(&title),
        escape(&report.summary())
    );
    page.push_str("<h2>End-to-end latency by percentile</h2>\n");
    page.push_str(&latency_chart(latency));
    page.push_str("<h2>Rates over time</h2>\n");
    page.push_str(&rate_chart(report));
    let _ = write!(
        page,
        "<h2>Data</h2>\n<script type=\"application/json\" id=\"report\">{}</script>\n<details><summary>latency points (percentile %, ms)</summary><pre id=\"latency\">{}</pre></details>\n</body></html>\n",
        report_json.replace("</", "<\\/"),
        latency
            .iter()
            .map(|(p, v)| format!("{p:.6} {v:.3}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    page
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// HdrHistogram's x axis: log10(1 / (1 - p)), capped at 99.9999%.
fn percentile_x(percent: f64) -> f64 {
    let tail = (1.0 - percent / 100.0).max(1e-6);
    (1.0 / tail).log10()
}

fn latency_chart(points: &[(f64, f64)]) -> String {
    if points.is_empty() {
        return String::from("<p>No latency samples.</p>\n");
    }
    let x_max = points
        .iter()
        .map(|(p, _)| percentile_x(*p))
        .fold(1.0, f64::max)
        .ceil();
    let y_max = nice(points.iter().map(|(_, v)| *v).fold(0.0, f64::max));
    let line: Vec<(f64, f64)> = points.iter().map(|(p, v)| (percentile_x(*p), *v)).collect();
    let ticks: Vec<(f64, String)> = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]
        .iter()
        .enumerate()
        .filter(|(i, _)| (*i as f64) <= x_max)
        .map(|(i, label)| (i as f64, label.to_string()))
        .collect();
    chart(
        &[("latency ms", "#c0392b", line)],
        x_max,
        y_max,
        &ticks,
        "ms",
    )
}

fn rate_chart(report: &Report) -> String {
    let samples = &report.per_second;
    if samples.is_empty() {
        return String::from("<p>No samples.</p>\n");
    }
    let x_max = samples.last().map_or(1.0, |s| s.second as f64).max(1.0);
    let series = [
        (
            "pub/s",
            "#2471a3",
            samples
                .iter()
                .map(|s| (s.second as f64, s.pub_rate))
                .collect(),
        ),
        (
            "recv/s",
            "#229954",
            samples
                .iter()
                .map(|s| (s.second as f64, s.recv_rate))
                .collect(),
        ),
        (
            "conn/s",
            "#7d3c98",
            samples
                .iter()
                .map(|s| (s.second as f64, s.conn_rate))
                .collect(),
        ),
    ];
    let y_max = nice(
        samples
            .iter()
            .map(|s| s.pub_rate.max(s.recv_rate).max(s.conn_rate))
            .fold(0.0, f64::max),
    );
    let step = (x_max / 10.0).ceil().max(1.0);
    let ticks: Vec<(f64, String)> = (0..=((x_max / step) as u64))
        .map(|i| (i as f64 * step, format!("{}s", i as f64 * step)))
        .collect();
    chart(&series, x_max, y_max, &ticks, "/s")
}

/// A rounded-up axis maximum: 1, 2 or 5 times a power of ten.
fn nice(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * power)
}

type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

fn chart(
    series: &[Series<'_>],
    x_max: f64,
    y_max: f64,
    ticks: &[(f64, String)],
    unit: &str,
) -> String {
    let plot_w = WIDTH - 2.0 * MARGIN;
    let plot_h = HEIGHT - 2.0 * MARGIN;
    let px = |x: f64| MARGIN + x / x_max * plot_w;
    let py = |y: f64| HEIGHT - MARGIN - y / y_max * plot_h;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">\n"
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{MARGIN}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/><line x1=\"{MARGIN}\" y1=\"{MARGIN}\" x2=\"{MARGIN}\" y2=\"{}\" stroke=\"#333\"/>",
        HEIGHT - MARGIN,
        WIDTH - MARGIN,
        HEIGHT - MARGIN,
        HEIGHT - MARGIN
    );
    for (x, label) in ticks {
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{MARGIN}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#eee\"/><text x=\"{0:.1}\" y=\"{2}\" font-size=\"11\" text-anchor=\"middle\">{3}</text>",
            px(*x),
            HEIGHT - MARGIN,
            HEIGHT - MARGIN + 16.0,
            escape(label)
        );
    }
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{MARGIN}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#eee\"/><text x=\"{2}\" y=\"{0:.1}\" font-size=\"11\" text-anchor=\"end\">{3}{unit}</text>",
            py(y),
            WIDTH - MARGIN,
            MARGIN - 4.0,
            short(y)
        );
    }
    for (k, (name, color, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{color}\">{}</text>",
            path.join(" "),
            MARGIN + 10.0 + 110.0 * k as f64,
            MARGIN - 12.0,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn short(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else if value >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained_and_carries_the_data() {
        let mut histogram = crate::stats::histogram();
        for v in 1..=1000u64 {
            histogram.record(v * 10_000).unwrap();
        }
        let report = crate::report::tests::sample_report();
        let json = report.to_json().unwrap();
        let points = distribution(&histogram);
        let page = render(&report, &points, &json);
        assert!(page.starts_with("<!doctype html>"));
        assert_eq!(page.matches("<svg").count(), 2, "two charts");
        assert!(page.contains("<polyline"));
        assert!(page.contains("\"received\": 8000"), "report JSON embedded");
        assert!(
            page.contains("\n100.000000 10.0"),
            "the max latency point is listed"
        );
        assert!(
            !page.contains("http://") || !page.contains("src=\"http"),
            "nothing fetched"
        );
        assert!(!page.contains("<script src"));
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(3.2), 5.0);
        assert_eq!(nice(17.0), 20.0);
        assert_eq!(nice(1000.0), 1000.0);
        assert!((percentile_x(99.0) - 2.0).abs() < 1e-9);
        assert_eq!(percentile_x(0.0), 0.0);
    }
}
