//! HdrHistogram's percentile distribution text (`outputPercentileDistribution`, 5 ticks per
//! half distance, values in milliseconds), which HdrHistogram's plotter and most tooling read.

use hdrhistogram::Histogram;
use std::fmt::Write as _;

/// Nanoseconds per output unit (milliseconds).
const SCALE: f64 = 1e6;

pub fn render(histogram: &Histogram<u64>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !histogram.is_empty() {
        for step in histogram.iter_quantiles(5) {
            total += step.count_since_last_iteration();
            let value = step.value_iterated_to() as f64 / SCALE;
            let quantile = step.quantile_iterated_to();
            if quantile < 1.0 {
                let _ = writeln!(
                    s,
                    "{value:12.3} {quantile:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - quantile)
                );
            } else {
                let _ = writeln!(s, "{value:12.3} {quantile:2.12} {total:10}");
            }
        }
    }
    let mean = if !histogram.is_empty() {
        histogram.mean() / SCALE
    } else {
        0.0
    };
    let stdev = if !histogram.is_empty() {
        histogram.stdev() / SCALE
    } else {
        0.0
    };
    let _ = writeln!(s, "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]");
    let _ = writeln!(
        s,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        histogram.max() as f64 / SCALE,
        histogram.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        histogram.buckets(),
        sub_buckets(histogram.sigfig())
    );
    s
}

/// Sub-buckets per bucket, as HdrHistogram computes them from the significant digits.
fn sub_buckets(sigfig: u8) -> u64 {
    let largest_single_unit = 2 * 10u64.pow(u32::from(sigfig));
    largest_single_unit.next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_has_the_header_rows_and_footer() {
        let mut histogram = crate::stats::histogram();
        for v in 1..=10_000u64 {
            histogram.record(v * 1000).unwrap();
        }
        let text = render(&histogram);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        // First row: the smallest value (0.001 ms), percentile 0, count 1.
        let first: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(first, ["0.001", "0.000000000000", "1", "1.00"]);
        let rows: Vec<&&str> = lines
            .iter()
            .filter(|l| !l.starts_with('#'))
            .skip(2)
            .collect();
        let last: Vec<&str> = rows.last().unwrap().split_whitespace().collect();
        assert_eq!(
            last.len(),
            3,
            "the 100% row has no 1/(1-p) column: {last:?}"
        );
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "10000");
        // Percentiles never go down.
        let quantiles: Vec<f64> = rows
            .iter()
            .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(quantiles.windows(2).all(|w| w[0] <= w[1]));
        assert!(text.contains("#[Mean    =        5.00"), "{text}");
        assert!(text.contains("Total count    =        10000]"), "{text}");
        assert!(text.lines().last().unwrap().starts_with("#[Buckets ="));
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
    }

    #[test]
    fn empty_histogram_has_header_and_footer_only() {
        let text = render(&crate::stats::histogram());
        assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 4);
    }
}
