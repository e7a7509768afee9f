//! Helpers shared by the benches (the criterion ones: `block_codec`, `index`,
//! `grpc_frame`, `ndjson`; `shard_append` and `recovery_scan` use a few): the LogHub corpus, the shard's block cut,
//! criterion settings, the median summary printed after criterion's own
//! report, and the machine facts every bench prints with its numbers.
//!
//! LogHub samples: <https://github.com/logpai/loghub>, found by
//! `tests/common/loghub.rs` (the full samples beside the repository, or the
//! subset vendored in `tests/data/loghub/`).
// Each bench uses a different subset of these helpers.
#![allow(dead_code, clippy::unwrap_used)]

#[path = "../../tests/common/mod.rs"]
pub mod common;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use criterion::Criterion;
use wormdb::codec::block;
use wormdb::limits;
use wormdb::shard::EntryRef;

pub use common::loghub_lines;

pub use common::loghub::SOURCES;
/// Distinct `host` tag values of [`loghub_entries`].
pub const HOST_COUNT: usize = 16;
/// Timestamp of the first entry of [`loghub_entries`]; entries are 1 µs apart.
pub const BASE_TIMESTAMP_NS: i64 = 1_700_000_000_000_000_000;
/// Nanoseconds between consecutive entries of [`loghub_entries`].
pub const ENTRY_INTERVAL_NS: i64 = 1_000;

/// The `level` tag of a log line, guessed from its text.
pub fn level_of(line: &str) -> &'static str {
    if line.contains("ERROR") || line.contains("error") || line.contains("FATAL") {
        "error"
    } else if line.contains("WARN") || line.contains("warn") {
        "warn"
    } else {
        "info"
    }
}

/// Every line of the eight samples, interleaved line by line (as a shard
/// that ingests several services sees them), with the sample it came from.
/// Lines are leaked: a bench builds its corpus once and keeps it to the end.
pub fn interleaved_lines() -> Vec<(&'static str, &'static str)> {
    let per_source: Vec<(&'static str, Vec<&'static str>)> = SOURCES
        .iter()
        .map(|&source| (source, loghub_lines(source).into_iter().map(|line| &*line.leak()).collect()))
        .collect();
    let longest = per_source.iter().map(|(_, lines)| lines.len()).max().unwrap_or(0);
    (0..longest)
        .flat_map(|row| per_source.iter().filter_map(move |(source, lines)| Some((*source, *lines.get(row)?))))
        .collect()
}

/// [`interleaved_lines`] as entries with 3 tags (`source`, `level`, `host`
/// among [`HOST_COUNT`] hosts, round-robin) and a body of one line;
/// timestamps start at [`BASE_TIMESTAMP_NS`], [`ENTRY_INTERVAL_NS`] apart.
pub fn loghub_entries() -> Vec<EntryRef<'static>> {
    let hosts: Vec<&'static str> = (0..HOST_COUNT).map(|host| &*format!("node-{host:02}").leak()).collect();
    interleaved_lines()
        .into_iter()
        .enumerate()
        .map(|(index, (source, line))| {
            let tags: &'static [(&str, &str)] =
                Vec::leak(vec![("source", source), ("level", level_of(line)), ("host", hosts[index % HOST_COUNT])]);
            EntryRef {
                fields: &[],
                timestamp_ns: BASE_TIMESTAMP_NS + index as i64 * ENTRY_INTERVAL_NS,
                tags,
                body: line.as_bytes(),
            }
        })
        .collect()
}

/// One block's worth of entries, as the shard would have gathered them.
pub struct BlockInput<'a> {
    /// Sequence number of the block's first entry (the first block's is 1).
    pub first_seq: u64,
    /// The block's entries.
    pub entries: &'a [EntryRef<'a>],
    /// Bytes of the block's raw (uncompressed) payload.
    pub raw_bytes: usize,
}

/// Cuts `entries` into blocks the way the shard does: a block closes once
/// its raw payload reaches `BLOCK_RAW_BYTES_TARGET` (or it holds
/// `BLOCK_ENTRIES_MAX` entries). A last partial block is dropped so that
/// every block has the target size.
pub fn cut_blocks<'a>(entries: &'a [EntryRef<'a>]) -> Vec<BlockInput<'a>> {
    let mut blocks = Vec::new();
    let mut raw = Vec::new();
    let mut start = 0;
    for (index, entry) in entries.iter().enumerate() {
        block::encode_entry(entry, entry.timestamp_ns, &mut raw);
        let count = index + 1 - start;
        if raw.len() >= limits::BLOCK_RAW_BYTES_TARGET || count == limits::BLOCK_ENTRIES_MAX {
            blocks.push(BlockInput {
                first_seq: start as u64 + 1,
                entries: &entries[start..=index],
                raw_bytes: raw.len(),
            });
            raw.clear();
            start = index + 1;
        }
    }
    blocks
}

/// Criterion settings, full or quick (`WORMDB_BENCH_QUICK=1`: fewer, shorter
/// samples, for a check that the bench runs rather than for numbers).
pub struct Settings {
    /// Whether `WORMDB_BENCH_QUICK` asked for the short version.
    pub quick: bool,
    /// Criterion's samples per benchmark.
    pub sample_size: usize,
    /// Criterion's warm-up time per benchmark.
    pub warm_up: Duration,
    /// Criterion's target measurement time per benchmark.
    pub measurement: Duration,
}

impl Settings {
    /// Reads `WORMDB_BENCH_QUICK` from the environment.
    pub fn from_env() -> Self {
        let quick = std::env::var_os("WORMDB_BENCH_QUICK").is_some_and(|value| value != "0");
        if quick {
            Settings {
                quick,
                sample_size: 10,
                warm_up: Duration::from_millis(300),
                measurement: Duration::from_secs(1),
            }
        } else {
            Settings { quick, sample_size: 100, warm_up: Duration::from_secs(3), measurement: Duration::from_secs(5) }
        }
    }

    /// A criterion configured with these settings, then with the command
    /// line (`--quick`, a filter, `--sample-size`, ...), which wins.
    pub fn criterion(&self) -> Criterion {
        Criterion::default()
            .sample_size(self.sample_size)
            .warm_up_time(self.warm_up)
            .measurement_time(self.measurement)
            .configure_from_args()
    }

    /// One line for the conditions block.
    pub fn describe(&self) -> String {
        format!(
            "criterion: sample_size={} warm_up={:?} measurement={:?}{}",
            self.sample_size,
            self.warm_up,
            self.measurement,
            if self.quick { " (WORMDB_BENCH_QUICK)" } else { "" }
        )
    }
}

/// Per-call timings that criterion measured through `iter_custom`, kept for
/// a summary in the units a bench cares about (criterion reports one
/// throughput per benchmark and a mean-based estimate; this gives medians,
/// in any number of units, from the same samples).
#[derive(Default)]
pub struct Samples {
    /// (iterations, elapsed) of each call, in call order.
    calls: RefCell<Vec<(u64, Duration)>>,
}

impl Samples {
    /// Runs `routine` `iterations` times, records and returns the elapsed
    /// time: the body of a `bencher.iter_custom` closure.
    pub fn time(&self, iterations: u64, mut routine: impl FnMut()) -> Duration {
        let started = Instant::now();
        for _ in 0..iterations {
            routine();
        }
        let elapsed = started.elapsed();
        self.calls.borrow_mut().push((iterations, elapsed));
        elapsed
    }

    /// Median, mean (total units over total time) and min..max units per
    /// second over the last `count` calls, for `units_per_iteration` units
    /// (bytes, entries, messages) per iteration. Criterion's measurement
    /// phase is exactly its last `sample_size` calls (the earlier ones are
    /// warm-up); with `--quick` it is the last 2, and the earlier, shorter
    /// calls of its doubling search are included too. `None` if nothing
    /// was measured (filtered out, or test mode).
    pub fn rates(&self, units_per_iteration: f64, count: usize) -> Option<Rates> {
        let calls = self.calls.borrow();
        let measured = &calls[calls.len().saturating_sub(count)..];
        let mut per_call: Vec<f64> = measured
            .iter()
            .filter(|(_, elapsed)| !elapsed.is_zero())
            .map(|(iterations, elapsed)| units_per_iteration * *iterations as f64 / elapsed.as_secs_f64())
            .collect();
        if per_call.is_empty() {
            return None;
        }
        per_call.sort_by(f64::total_cmp);
        let iterations: u64 = measured.iter().map(|(iterations, _)| iterations).sum();
        let seconds: f64 = measured.iter().map(|(_, elapsed)| elapsed.as_secs_f64()).sum();
        Some(Rates {
            median: per_call[per_call.len() / 2],
            mean: units_per_iteration * iterations as f64 / seconds,
            min: per_call[0],
            max: per_call[per_call.len() - 1],
        })
    }
}

/// Units per second of one benchmark.
pub struct Rates {
    /// Median over the calls.
    pub median: f64,
    /// Total units over total time.
    pub mean: f64,
    /// Slowest call.
    pub min: f64,
    /// Fastest call.
    pub max: f64,
}

impl Rates {
    /// `median M (mean, samples min..max)`, each divided by `scale` and
    /// followed by `unit` (e.g. `1e6, "MB/s"`).
    pub fn describe(&self, scale: f64, unit: &str) -> String {
        format!(
            "median {:>8.2} {unit} (mean {:.2}, samples {:.2}..{:.2})",
            self.median / scale,
            self.mean / scale,
            self.min / scale,
            self.max / scale
        )
    }
}

/// Prints the machine facts that every bench result comes with.
pub fn print_machine(bench: &str) {
    println!("== {bench}: conditions ==");
    println!(
        "machine: nproc={} cpu=\"{}\" loadavg at start: {}; single thread, no executor, no I/O",
        nproc(),
        cpu_model(),
        load_average()
    );
    println!("source tree: {}", source_tree());
}

/// Prints the load at the end, which a reader needs to judge the numbers.
pub fn print_load_at_end() {
    println!("loadavg at end: {} (nproc={}; other load on the machine slows every number)", load_average(), nproc());
}

/// Logical CPUs available to this process.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(0)
}

/// The CPU model name from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The source tree the bench runs from (`git describe --always --dirty`, at
/// run time): other work lands while benches run, so results name it.
pub fn source_tree() -> String {
    std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
