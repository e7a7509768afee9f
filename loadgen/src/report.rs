//! The results of a run and their three renderings (pure): the human
//! report, `--json`, and `--hgrm` (HdrHistogram's percentile distribution).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::record::{Acknowledged, LATENCY_SIGNIFICANT_DIGITS};

/// A finished run.
#[derive(Debug)]
pub struct Summary {
    /// `--target`.
    pub target: String,
    /// `http`, `grpc` or `follower`.
    pub mode: String,
    /// Entries per second asked for; `None` for `max`.
    pub rate: Option<u64>,
    /// Entries per request.
    pub batch: usize,
    /// Connections and executor threads.
    pub connections: usize,
    /// See `connections`.
    pub threads: usize,
    /// Measured phase, seconds (from the end of the warmup to the last
    /// acknowledgement or the end of the schedule, whichever is later).
    pub duration_s: f64,
    /// Warmup, seconds.
    pub warmup_s: f64,
    /// Mean body bytes.
    pub body_bytes_mean: f64,
    /// Mean encoded request bytes.
    pub request_bytes_mean: f64,
    /// Requests sent, both phases.
    pub requests_sent: u64,
    /// Requests acknowledged in the measured phase.
    pub requests_acked: u64,
    /// Entries acknowledged in the measured phase.
    pub entries_acked: u64,
    /// Entries acknowledged during warmup.
    pub warmup_entries_acked: u64,
    /// Requests due that were never sent (their connection was busy).
    pub requests_unsent: u64,
    /// (kind, count, first message), by kind.
    pub errors: Vec<(String, u64, String)>,
    /// Latencies of the acknowledged measured requests, µs.
    pub histogram: Histogram<u64>,
    /// The loadgen's own CPU time (user + system) while it sent, seconds.
    pub cpu_s: f64,
    /// What was acknowledged, for verification.
    pub acknowledged: Acknowledged,
    /// What counts as an acknowledgement in this protocol.
    pub acknowledgement: &'static str,
}

impl Summary {
    /// Acknowledged measured entries per second.
    pub fn entries_per_s(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.entries_acked as f64 / self.duration_s
        } else {
            0.0
        }
    }

    /// Failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.iter().map(|(_, count, _)| count).sum()
    }

    /// CPU seconds per million acknowledged entries (both phases).
    pub fn cpu_s_per_million(&self) -> f64 {
        let entries = self.entries_acked + self.warmup_entries_acked;
        if entries == 0 {
            0.0
        } else {
            self.cpu_s / entries as f64 * 1e6
        }
    }

    fn quantile_us(&self, quantile: f64) -> u64 {
        self.histogram.value_at_quantile(quantile)
    }

    /// The human-readable report.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let rate = match self.rate {
            Some(rate) => format!("{rate} entries/s (open loop, latency from the intended send time)"),
            None => "max (closed loop, latency from the actual send time)".to_string(),
        };
        let _ = writeln!(out, "wormdb-loadgen: {} {}", self.mode, self.target);
        let _ = writeln!(
            out,
            "  rate {rate}; batch {}; {} connections on {} threads; body {:.0} B, request {:.0} B mean",
            self.batch, self.connections, self.threads, self.body_bytes_mean, self.request_bytes_mean
        );
        let _ = writeln!(out, "  measured {:.2} s after {:.2} s warmup", self.duration_s, self.warmup_s);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  achieved     {:>12.0} entries/s  ({:.0} requests/s)",
            self.entries_per_s(),
            self.requests_acked as f64 / self.duration_s.max(f64::MIN_POSITIVE)
        );
        let _ = writeln!(
            out,
            "  acknowledged {:>12} entries in {} requests (+{} entries in warmup)",
            self.entries_acked, self.requests_acked, self.warmup_entries_acked
        );
        let _ = writeln!(out, "  acknowledged by {}", self.acknowledgement);
        let _ = writeln!(out, "  errors       {:>12}", self.error_count());
        for (kind, count, message) in &self.errors {
            let _ = writeln!(out, "    {count:>10}  {kind}  (first: {message})");
        }
        if self.requests_unsent > 0 {
            let _ = writeln!(
                out,
                "  unsent       {:>12} requests were due but their connection was still busy --timeout after the end",
                self.requests_unsent
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  latency (ms)   p50 {:>9.3}   p90 {:>9.3}   p99 {:>9.3}",
            ms(self.quantile_us(0.5)),
            ms(self.quantile_us(0.9)),
            ms(self.quantile_us(0.99))
        );
        let _ = writeln!(
            out,
            "                p99.9 {:>7.3}   p99.99 {:>6.3}   max {:>9.3}   ({} samples)",
            ms(self.quantile_us(0.999)),
            ms(self.quantile_us(0.9999)),
            ms(self.histogram.max()),
            self.histogram.len()
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  loadgen CPU  {:.2} s ({:.3} CPU-s per million entries)",
            self.cpu_s,
            self.cpu_s_per_million()
        );
        out
    }

    /// The `--json` document.
    pub fn json(&self) -> serde_json::Value {
        let errors_by_kind: serde_json::Map<String, serde_json::Value> =
            self.errors.iter().map(|(kind, count, _)| (kind.clone(), json!(count))).collect();
        let error_messages: serde_json::Map<String, serde_json::Value> =
            self.errors.iter().map(|(kind, _, message)| (kind.clone(), json!(message))).collect();
        json!({
            "target": self.target,
            "protocol": self.mode,
            "rate": self.rate.map(|rate| json!(rate)).unwrap_or(json!("max")),
            "batch": self.batch,
            "connections": self.connections,
            "threads": self.threads,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "body_bytes_mean": self.body_bytes_mean,
            "request_bytes_mean": self.request_bytes_mean,
            "requests": self.requests_acked,
            "requests_sent": self.requests_sent,
            "requests_unsent": self.requests_unsent,
            "entries_acked": self.entries_acked,
            "warmup_entries_acked": self.warmup_entries_acked,
            "entries_per_s": self.entries_per_s(),
            "errors": self.error_count(),
            "errors_by_kind": errors_by_kind,
            "error_messages": error_messages,
            "latency_us": {
                "p50": self.quantile_us(0.5),
                "p90": self.quantile_us(0.9),
                "p99": self.quantile_us(0.99),
                "p999": self.quantile_us(0.999),
                "p9999": self.quantile_us(0.9999),
                "max": self.histogram.max(),
                "mean": self.histogram.mean(),
                "count": self.histogram.len(),
            },
            "cpu_s": self.cpu_s,
            "cpu_s_per_million_entries": self.cpu_s_per_million(),
            "acknowledged": self.acknowledged,
            "acknowledgement": self.acknowledgement,
        })
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Percentile points of `histogram` for a plot: (percentile 0..=100, µs).
pub fn percentile_points(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    histogram
        .iter_quantiles(5)
        .map(|step| (step.quantile_iterated_to() * 100.0, step.value_iterated_to() as f64))
        .collect()
}

/// `histogram` (µs) in HdrHistogram's classic percentile-distribution text
/// (what Java's `outputPercentileDistribution` and wrk2 print), values in
/// milliseconds, 5 ticks per half distance.
pub fn hgrm(histogram: &Histogram<u64>) -> String {
    const SCALE: f64 = 1000.0;
    let mut out = String::new();
    let _ = writeln!(out, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    let mut total = 0u64;
    if !histogram.is_empty() {
        for step in histogram.iter_quantiles(5) {
            total += step.count_since_last_iteration();
            let value = step.value_iterated_to() as f64 / SCALE;
            let quantile = step.quantile_iterated_to();
            if quantile < 1.0 {
                let _ = writeln!(out, "{value:12.3} {quantile:2.12} {total:10} {:14.2}", 1.0 / (1.0 - quantile));
            } else {
                let _ = writeln!(out, "{value:12.3} {quantile:2.12} {total:10}");
            }
        }
    }
    let sub_buckets = (2.0 * 10f64.powi(i32::from(LATENCY_SIGNIFICANT_DIGITS))).log2().ceil().exp2() as u64;
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        histogram.mean() / SCALE,
        histogram.stdev() / SCALE
    );
    let _ =
        writeln!(out, "#[Max     = {:12.3}, Total count    = {:12}]", histogram.max() as f64 / SCALE, histogram.len());
    let _ = writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", histogram.buckets(), sub_buckets);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::new_histogram;

    #[test]
    fn hgrm_has_the_classic_layout() {
        let mut histogram = new_histogram();
        for value in 1..=10_000u64 {
            histogram.record(value).unwrap();
        }
        let text = hgrm(&histogram);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines[1], "");
        let rows: Vec<Vec<f64>> = lines[2..]
            .iter()
            .take_while(|line| !line.starts_with('#'))
            .map(|line| line.split_whitespace().map(|field| field.parse().unwrap()).collect())
            .collect();
        assert!(rows.len() > 20);
        assert!(rows.windows(2).all(|pair| pair[0][0] <= pair[1][0] && pair[0][1] <= pair[1][1]));
        let last = rows.last().unwrap();
        assert_eq!(last[1], 1.0);
        assert_eq!(last[2], 10_000.0);
        assert!((last[0] - 10.0).abs() < 0.02, "max 10 ms: {last:?}");
        assert!(text.contains("#[Mean    =        5.00"), "{text}");
        assert!(text.contains("Total count    =        10000]"));
        assert!(text.contains("SubBuckets     =         2048]"));
    }

    #[test]
    fn percentile_points_rise() {
        let mut histogram = new_histogram();
        for value in [100u64, 200, 300, 5000] {
            histogram.record(value).unwrap();
        }
        let points = percentile_points(&histogram);
        assert!(points.windows(2).all(|pair| pair[0].0 <= pair[1].0 && pair[0].1 <= pair[1].1));
        assert_eq!(points.last().unwrap().0, 100.0);
        assert!(percentile_points(&new_histogram()).is_empty());
    }
}
