//! Latency-by-percentile PNG for `--plot`.
//!
//! Placeholder: the real renderer (plotters) is written in another branch
//! with exactly this API and replaces this file at merge.

/// One latency distribution to draw: a label and (percentile in 0..=100, latency in microseconds) points.
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (percentile in 0..=100, latency in µs), percentiles ascending.
    pub points: Vec<(f64, f64)>,
}

/// Writes a latency-by-percentile PNG (x: percentile on a log "number of nines" axis, y: latency) to `path`.
pub fn write_percentile_plot(path: &std::path::Path, title: &str, series: &[Series]) -> Result<(), String> {
    // Touch every input so the placeholder compiles without dead-code warnings.
    let _ = (path, title, series.iter().map(|one| one.label.len() + one.points.len()).sum::<usize>());
    Err("plot support not merged yet".to_string())
}
