//! Recovery scan throughput: how fast `Shard::open` gets through an active
//! segment of about 1 GiB.
//!
//! The bench builds the segment first (segment_bytes = 1.5 GiB, entries are
//! LogHub lines with 3 tags, appended with `Durability::None` to build it
//! faster), closes the shard, then times `Shard::open` 3 times. Each open
//! reads the active segment block by block, verifies every crc, decompresses
//! every block and rebuilds the tag and time index, then checks the tail.
//! It reports GB/s of segment bytes scanned (`stats().disk_bytes` over the
//! open time) and the median, beside a raw O_DIRECT sequential read of the
//! same bytes (8 MiB reads, the scanner's window) as the I/O ceiling.
//!
//! If building 1 GiB is projected to take over 2 minutes, the segment is
//! 512 MiB instead, and the output says so.
//!
//! Run with `cargo bench --bench recovery_scan` (the `--bench` argument is
//! ignored: this bench has its own `main`). `WORMDB_BENCH_QUICK=1`, or
//! running the binary without `--bench` (as `cargo test --benches` does),
//! builds a 64 MiB segment instead: a smoke test, not a measurement. Files
//! live in a temporary directory under `$WORMDB_TEST_DIR` or the system temp
//! dir (never tmpfs) and are deleted at the end.
#![allow(clippy::unwrap_used)]

mod support;

use support::{common, source_tree, SOURCES};

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use wormdb::shard::{Durability, EntryRef, Error, Preallocation, Shard, ShardConfig};

const MIB: u64 = 1024 * 1024;
const SEGMENT_BYTES: u64 = 1536 * MIB;
const TARGET_DISK_BYTES: u64 = 1024 * MIB;
const FALLBACK_DISK_BYTES: u64 = 512 * MIB;
const QUICK_DISK_BYTES: u64 = 64 * MIB;
/// Building longer than this falls back to `FALLBACK_DISK_BYTES`.
const BUILD_SECONDS_MAX: f64 = 120.0;
/// The rate is projected once this much of the target is built.
const PROJECT_AFTER_FRACTION: f64 = 0.1;
const BUILD_APPENDERS: usize = 4;
const ENTRIES_PER_APPEND: usize = 1000;
const RUNS: usize = 3;
/// The scanner's read size.
const READ_WINDOW_BYTES: u64 = wormdb::limits::SCAN_WINDOW_BYTES as u64;
const HOST_COUNT: usize = 16;

/// Process CPU time (user, sys) in seconds, from `getrusage(RUSAGE_SELF)`.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

fn level_of(line: &str) -> &'static str {
    if line.contains("ERROR") || line.contains("error") || line.contains("FATAL") {
        "error"
    } else if line.contains("WARN") || line.contains("warn") {
        "warn"
    } else {
        "info"
    }
}

/// LogHub lines, sources interleaved line by line, each with 3 tags; leaked
/// so that appender tasks (which must be `'static`) borrow them. The vector
/// is extended cyclically by `ENTRIES_PER_APPEND`, so that every position
/// below the returned count starts a full append.
fn loghub_entries() -> (&'static [EntryRef<'static>], usize) {
    // LogHub samples: https://github.com/logpai/loghub, found by `tests/common/loghub.rs`.
    let per_source: Vec<(&'static str, Vec<&'static str>)> = SOURCES
        .iter()
        .map(|&source| (source, common::loghub_lines(source).into_iter().map(|line| &*String::leak(line)).collect()))
        .collect();
    let hosts: Vec<&'static str> = (0..HOST_COUNT).map(|host| &*String::leak(format!("node-{host:02}"))).collect();
    let longest = per_source.iter().map(|(_, lines)| lines.len()).max().unwrap_or(0);
    let mut entries = Vec::new();
    for row in 0..longest {
        for (source, lines) in &per_source {
            let Some(line) = lines.get(row) else { continue };
            let tags: &'static [(&'static str, &'static str)] = Vec::leak(vec![
                ("source", *source),
                ("level", level_of(line)),
                ("host", hosts[entries.len() % HOST_COUNT]),
            ]);
            entries.push(EntryRef { fields: &[], timestamp_ns: 0, tags, body: line.as_bytes() });
        }
    }
    let positions = entries.len();
    for index in 0..ENTRIES_PER_APPEND {
        entries.push(entries[index % positions]);
    }
    (Vec::leak(entries), positions)
}

/// How the segment was built.
struct Built {
    seconds: f64,
    target_bytes: u64,
    note: Option<String>,
}

/// Shared state of the build's appenders.
struct BuildProgress {
    started: Instant,
    target_bytes: std::cell::Cell<u64>,
    note: std::cell::RefCell<Option<String>>,
}

impl BuildProgress {
    /// Whether to append more; lowers the target once if the build is
    /// projected to take too long.
    fn more(&self, disk_bytes: u64) -> bool {
        let target = self.target_bytes.get();
        let elapsed = self.started.elapsed().as_secs_f64();
        if target > FALLBACK_DISK_BYTES
            && self.note.borrow().is_none()
            && disk_bytes as f64 >= target as f64 * PROJECT_AFTER_FRACTION
        {
            let projected = elapsed * target as f64 / disk_bytes as f64;
            if projected > BUILD_SECONDS_MAX {
                self.target_bytes.set(FALLBACK_DISK_BYTES);
                *self.note.borrow_mut() = Some(format!(
                    "building {} MiB was projected to take {projected:.0} s (> {BUILD_SECONDS_MAX:.0} s) on this \
                     machine, so the segment is {} MiB instead",
                    target / MIB,
                    FALLBACK_DISK_BYTES / MIB
                ));
            } else {
                *self.note.borrow_mut() = Some(String::new());
            }
        }
        disk_bytes < self.target_bytes.get()
    }
}

async fn build_appender(
    shard: Shard,
    entries: &'static [EntryRef<'static>],
    positions: usize,
    index: usize,
    progress: Rc<BuildProgress>,
) {
    let mut position = (index * ENTRIES_PER_APPEND) % positions;
    while progress.more(shard.stats().disk_bytes) {
        let batch = &entries[position..position + ENTRIES_PER_APPEND];
        loop {
            match shard.append(batch) {
                Ok(wait) => {
                    wait.durable().await.unwrap();
                    break;
                }
                Err(Error::Backpressure { .. }) => {
                    let durable = shard.durable_seq();
                    shard.wait_durable_after(durable).await;
                }
                Err(error) => panic!("append failed: {error}"),
            }
        }
        position = (position + BUILD_APPENDERS * ENTRIES_PER_APPEND) % positions;
    }
}

async fn build_segment(config: &ShardConfig, target_bytes: u64) -> Built {
    let (entries, positions) = loghub_entries();
    let shard = Shard::open(config.clone()).await.unwrap();
    let progress = Rc::new(BuildProgress {
        started: Instant::now(),
        target_bytes: std::cell::Cell::new(target_bytes),
        note: std::cell::RefCell::new(None),
    });
    let tasks: Vec<_> = (0..BUILD_APPENDERS)
        .map(|index| glommio::spawn_local(build_appender(shard.clone(), entries, positions, index, progress.clone())))
        .collect();
    for task in tasks {
        task.await;
    }
    shard.close().await.unwrap();
    let seconds = progress.started.elapsed().as_secs_f64();
    let note = progress.note.borrow().clone().filter(|note| !note.is_empty());
    Built { seconds, target_bytes: progress.target_bytes.get(), note }
}

/// One timed `Shard::open`.
struct Opened {
    seconds: f64,
    cpu_user: f64,
    cpu_sys: f64,
    disk_bytes: u64,
    raw_bytes: u64,
    entries: u64,
    active_blocks: usize,
    torn_tail: bool,
}

async fn time_open(config: &ShardConfig) -> Opened {
    let (user_before, sys_before) = cpu_seconds();
    let started = Instant::now();
    let shard = Shard::open(config.clone()).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let (user_after, sys_after) = cpu_seconds();
    let stats = shard.stats();
    let report = shard.recovery_report().clone();
    shard.close().await.unwrap();
    Opened {
        seconds,
        cpu_user: user_after - user_before,
        cpu_sys: sys_after - sys_before,
        disk_bytes: stats.disk_bytes,
        raw_bytes: stats.raw_bytes,
        entries: stats.entries,
        active_blocks: report.active_blocks,
        torn_tail: report.torn_tail.is_some(),
    }
}

/// Reads `bytes` of `path` from its start with sequential O_DIRECT reads
/// of the scanner's window size, one at a time; returns seconds.
async fn time_raw_read(path: &Path, bytes: u64) -> f64 {
    let file = glommio::io::DmaFile::open(path).await.unwrap();
    let started = Instant::now();
    let mut offset = 0;
    while offset < bytes {
        let length = (bytes - offset).min(READ_WINDOW_BYTES) as usize;
        let read = file.read_at(offset, length).await.unwrap();
        assert_eq!(read.len(), length);
        offset += length as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    file.close().await.unwrap();
    seconds
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|text| text.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

fn cpu_model() -> String {
    let text = read_trimmed("/proc/cpuinfo");
    text.lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split(':').nth(1))
        .map(|model| model.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn filesystem_type(path: &Path) -> String {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statfs fills the struct we own from a valid C string.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return "unknown".into();
    }
    match stat.f_type as i64 {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        other => format!("f_type {other:#x}"),
    }
}

fn segment_path(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .expect("the shard has a segment file")
}

async fn bench(dir: PathBuf, quick: bool, memlock: u64) {
    let shard_dir = dir.join("shard-000");
    let config = ShardConfig {
        segment_bytes: SEGMENT_BYTES,
        durability: Durability::None,
        preallocation: Preallocation::Fallocate,
        ..ShardConfig::new(&shard_dir, 0)
    };
    println!("== recovery_scan: conditions ==");
    println!(
        "machine: nproc={} cpu=\"{}\" kernel={} loadavg at start: {}",
        std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        cpu_model(),
        read_trimmed("/proc/sys/kernel/osrelease"),
        read_trimmed("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    println!(
        "files: {} ({}, O_DIRECT through glommio DmaFile); RLIMIT_MEMLOCK={memlock} bytes; one glommio executor",
        shard_dir.display(),
        filesystem_type(&dir)
    );
    println!("source tree: {}", source_tree());
    let target_bytes = if quick { QUICK_DISK_BYTES } else { TARGET_DISK_BYTES };
    println!(
        "build: segment_bytes={} MiB, target {} MiB of blocks, Durability::None, Preallocation::Fallocate, \
         {BUILD_APPENDERS} appenders x {ENTRIES_PER_APPEND} LogHub lines (3 tags each) per append{}",
        SEGMENT_BYTES / MIB,
        target_bytes / MIB,
        if quick { "; QUICK MODE: a smoke test, not a measurement" } else { "" }
    );

    let built = build_segment(&config, target_bytes).await;
    if let Some(note) = &built.note {
        println!("NOTE: {note}");
    }
    // Reopened with the build's settings: the scan does not depend on them.
    let mut opens = Vec::new();
    for _ in 0..RUNS {
        opens.push(time_open(&config).await);
    }
    let last = &opens[opens.len() - 1];
    println!(
        "segment: {:.1} MiB of blocks ({} bytes; target {} MiB), {} entries, {} blocks, {:.1} MiB raw \
         (LZ4 ratio {:.2}x); built in {:.1} s",
        last.disk_bytes as f64 / MIB as f64,
        last.disk_bytes,
        built.target_bytes / MIB,
        last.entries,
        last.active_blocks,
        last.raw_bytes as f64 / MIB as f64,
        last.raw_bytes as f64 / last.disk_bytes.max(1) as f64,
        built.seconds
    );
    println!(
        "note: O_DIRECT bypasses the guest page cache; a virtual disk may still be cached by the host. \
         GB = 10^9 bytes."
    );
    println!();

    println!("[open] Shard::open: scan + crc + LZ4 decompress + index rebuild + tail check");
    for (index, opened) in opens.iter().enumerate() {
        println!(
            "    run {}: {:.3} s  {:.3} GB/s of segment bytes  {:.3} GB/s raw  {:.2} M entries/s  \
             cpu {:.2}+{:.2} s (cpu/wall {:.0} %)  torn tail: {}",
            index + 1,
            opened.seconds,
            opened.disk_bytes as f64 / opened.seconds / 1e9,
            opened.raw_bytes as f64 / opened.seconds / 1e9,
            opened.entries as f64 / opened.seconds / 1e6,
            opened.cpu_user,
            opened.cpu_sys,
            100.0 * (opened.cpu_user + opened.cpu_sys) / opened.seconds,
            if opened.torn_tail { "YES (unexpected)" } else { "no" }
        );
    }
    let open_rates: Vec<f64> = opens.iter().map(|opened| opened.disk_bytes as f64 / opened.seconds / 1e9).collect();
    let open_median = median(&open_rates);
    let cpu_per_gb: Vec<f64> =
        opens.iter().map(|opened| (opened.cpu_user + opened.cpu_sys) / (opened.disk_bytes as f64 / 1e9)).collect();
    println!(
        "    median: {open_median:.3} GB/s of segment bytes scanned; {:.1} CPU s per GB of segment",
        median(&cpu_per_gb)
    );
    println!();

    let segment = segment_path(&shard_dir);
    let read_bytes = last.disk_bytes.div_ceil(4096) * 4096;
    println!("[read] raw O_DIRECT sequential read of the same bytes, 8 MiB reads, one at a time (I/O ceiling)");
    let mut read_rates = Vec::new();
    for index in 0..RUNS {
        let seconds = time_raw_read(&segment, read_bytes).await;
        read_rates.push(read_bytes as f64 / seconds / 1e9);
        println!("    run {}: {seconds:.3} s  {:.2} GB/s", index + 1, read_rates[index]);
    }
    let read_median = median(&read_rates);
    println!("    median: {read_median:.2} GB/s");
    println!();
    println!(
        "== summary: Shard::open scans {open_median:.3} GB/s (median of {RUNS}) of a {:.0} MiB active segment; \
         raw read {read_median:.2} GB/s; open = {:.1} % of raw read ==",
        last.disk_bytes as f64 / MIB as f64,
        100.0 * open_median / read_median
    );
    println!(
        "loadavg at end: {} (other load on the machine slows the CPU-bound scan)",
        read_trimmed("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    std::fs::remove_dir_all(&shard_dir).unwrap();
}

fn main() {
    let quick = std::env::var_os("WORMDB_BENCH_QUICK").is_some_and(|value| value != "0")
        || !std::env::args().any(|argument| argument == "--bench");
    let memlock = wormdb::runtime::ensure_memlock(wormdb::runtime::MEMLOCK_BYTES_PER_EXECUTOR).unwrap();
    let temp = common::durable_temp_dir();
    let dir = temp.path().to_path_buf();
    common::run(move || bench(dir, quick, memlock));
    drop(temp);
}
