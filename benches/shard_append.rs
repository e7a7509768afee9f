//! Durable group-commit append throughput of one shard on a real file,
//! against a raw O_DIRECT sequential-write baseline measured in the same run.
//!
//! Workloads (each run on a fresh file, 9 short rounds for a and b and 3
//! for c and d; the median run is reported):
//!
//! - **a** raw baseline: a glommio `DmaFile`, fallocated (8 GiB),
//!   sequential `write_at` of 1 MiB buffers with an `fdatasync` after each:
//!   the I/O pattern of a durable shard committing 1 MiB at a time.
//!   **a'** is the same on a zero-filled file (context for workload d).
//!   **a\*** is a with each 1 MiB first copied from a 16 MiB heap pool into
//!   the DMA buffer and crc32'd: the ceiling of any store that takes
//!   borrowed entries (it must copy them once) and checksums them.
//! - **b** incompressible 1 MiB appends (16 entries of 64 KiB random body),
//!   awaiting durability each time, with 1 and with 4 concurrent appenders:
//!   MB/s and percent of (a); target >= 90 %. The disk's speed drifts
//!   between runs by more than the rows differ, so the bench also reports
//!   each b row against the a and a\* runs of the same round, as the
//!   median of per-round ratios.
//! - **c** small entries (3 tags and a 256 B body cut from LogHub lines),
//!   1000 entries per append, 8 concurrent appenders, `Fallocate`, one
//!   1 GiB segment that does not roll: entries/s and CPU time
//!   (`getrusage(RUSAGE_SELF)`, user + sys) per million entries.
//! - **d** `Preallocation::ZeroFill` against `Preallocation::Fallocate`, for
//!   workload c and for single-entry appends from 64 concurrent appenders
//!   (the small-commit, fdatasync-bound case): entries/s, commits/s,
//!   syncs/s, mean fdatasync latency. This decides the default
//!   preallocation. ZeroFill zero-fills the *next* segment in the
//!   background and a new shard's first segment is only fallocated, so a
//!   no-roll run would compare two fallocated segments: d uses the default
//!   256 MiB segments, fills the first one (a warm-up roll), pauses 1 s,
//!   then measures in steady state, rolls and background zero-fills
//!   included.
//!
//! Every workload is bounded in size and in time (whichever ends first).
//! a and b use an 8 GiB file and segment with a 6 GiB budget, because a
//! fast disk writes 1 GiB in well under a second, too short to measure; no
//! shard of b or c rolls (the bench warns if one does). Rows of a group
//! (a, a', b; the d pairs) run round-robin, so drifting background load
//! hits them alike. Files live in a temporary directory under
//! `$WORMDB_TEST_DIR` or the system temp dir (never tmpfs: O_DIRECT would
//! silently be buffered) and are deleted, and the filesystem synced, after
//! every run.
//!
//! Run with `cargo bench --bench shard_append` (the `--bench` argument is
//! ignored; this bench has its own `main` and prints a table, because
//! criterion's iteration model fits poorly with a glommio executor and an
//! fdatasync-bound workload). `WORMDB_BENCH_QUICK=1`, or running the binary
//! without `--bench` (as `cargo test --benches` does), runs a short smoke
//! version whose numbers are not meaningful. `WORMDB_BENCH_ONLY=b` (a comma
//! list of a, a', a*, b, c, d) runs only those rows, for profiling.
#![allow(clippy::unwrap_used)]

mod support;

use support::{common, source_tree, SOURCES};

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::OpenOptions;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use wormdb::shard::{Durability, EntryRef, Error, Preallocation, Shard, ShardConfig};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// Segment size of the shard of workload c, which must not roll.
const SEGMENT_BYTES: u64 = GIB;
/// Pause after the warm-up roll of workload d, before the timed window: the
/// background zero-fill of the next spare segment (ZeroFill) finishes in
/// well under this on the disks measured (1.5 to 2.5 GB/s), so the window
/// starts in steady state. Both preallocations pause alike.
const WARM_UP_PAUSE: Duration = Duration::from_secs(1);
/// One baseline write, and the payload of one incompressible append.
const COMMIT_BYTES: usize = MIB as usize;
const RANDOM_BODY_BYTES: usize = 64 * 1024;
const RANDOM_BODIES_PER_APPEND: usize = COMMIT_BYTES / RANDOM_BODY_BYTES;
/// Distinct random bodies; a 256 KiB block holds 4 of them, all different.
const RANDOM_BODY_COUNT: usize = 256;
const SMALL_BODY_BYTES: usize = 256;
const SMALL_ENTRIES_PER_APPEND: usize = 1000;
const SMALL_APPENDERS: usize = 8;
const SINGLE_APPENDERS: usize = 64;
const INCOMPRESSIBLE_APPENDERS: [usize; 2] = [1, 4];
const RUNS: usize = 3;
const HOST_COUNT: usize = 16;
const SEED: u64 = 0x5eed_2024;
const TARGET_PERCENT_OF_BASELINE: f64 = 90.0;

/// Bounds of every workload: whichever is reached first ends it.
#[derive(Clone, Copy, Debug)]
struct Settings {
    quick: bool,
    time_budget: Duration,
    /// Size of the baseline file and of the segment for workload b: large
    /// enough that the byte budget, not the file, ends the run.
    large_file_bytes: u64,
    /// Payload bytes for workloads a and b.
    bytes_budget: u64,
    /// Entries for workload c and its ZeroFill twin.
    small_entries_budget: u64,
    /// Entries for the single-entry appends.
    single_entries_budget: u64,
    /// Segment size of the workload d shards, which roll.
    rolling_segment_bytes: u64,
    /// Rounds of the a/b group, and the time budget of each of its runs:
    /// many short runs, interleaved, so that each shard run has a baseline
    /// run next to it in time (see `paired_ratios`).
    paired_rounds: usize,
    paired_time_budget: Duration,
}

impl Settings {
    fn new(quick: bool) -> Self {
        if quick {
            Settings {
                quick,
                time_budget: Duration::from_millis(1500),
                large_file_bytes: GIB,
                bytes_budget: 64 * MIB,
                small_entries_budget: 200_000,
                single_entries_budget: 20_000,
                rolling_segment_bytes: 32 * MIB,
                paired_rounds: 2,
                paired_time_budget: Duration::from_millis(500),
            }
        } else {
            Settings {
                quick,
                time_budget: Duration::from_secs(10),
                // A fast disk writes 1 MiB + fdatasync in under a millisecond,
                // so the baseline needs gigabytes to last a few seconds. The
                // budget leaves room in the segment for block headers and the
                // writer's worst-case bound, so that nothing rolls.
                large_file_bytes: 8 * GIB,
                bytes_budget: 6 * GIB,
                // About 2 GB of entries, 0.4 GB once compressed: fits a 1 GiB segment.
                small_entries_budget: 6_000_000,
                single_entries_budget: 1_000_000,
                // The default segment size.
                rolling_segment_bytes: wormdb::limits::SEGMENT_BYTES_DEFAULT,
                // The disk's speed here drifts by +-30 % within a minute:
                // 2 s runs in 9 rounds keep each shard run within seconds
                // of a baseline run.
                paired_rounds: 9,
                paired_time_budget: Duration::from_secs(2),
            }
        }
    }
}

/// What one run measured.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    seconds: f64,
    /// Time to open the shard: creating (and for ZeroFill, zeroing) the segment.
    open_seconds: f64,
    entries: u64,
    appends: u64,
    /// Entry bytes made durable (shard) or bytes written (baseline).
    payload_bytes: u64,
    write_bytes: u64,
    commits: u64,
    syncs: u64,
    sync_us_total: u64,
    sync_us_max: u64,
    cpu: CpuTime,
    backpressure_retries: u64,
    /// Segments at the end of the run.
    segments: u64,
    /// Rolls during the timed window.
    rolls: u64,
    /// Whether the workload was meant to roll (d); others must not.
    rolling: bool,
}

impl Run {
    fn payload_mb_per_second(&self) -> f64 {
        self.payload_bytes as f64 / self.seconds / 1e6
    }
    fn entries_per_second(&self) -> f64 {
        self.entries as f64 / self.seconds
    }
    fn commits_per_second(&self) -> f64 {
        self.commits as f64 / self.seconds
    }
    fn syncs_per_second(&self) -> f64 {
        self.syncs as f64 / self.seconds
    }
    fn mean_sync_us(&self) -> f64 {
        if self.syncs == 0 {
            0.0
        } else {
            self.sync_us_total as f64 / self.syncs as f64
        }
    }
    /// CPU seconds (user, sys) per million entries.
    fn cpu_per_million_entries(&self) -> (f64, f64) {
        let per = |micros: u64| micros as f64 / 1e6 / self.entries.max(1) as f64 * 1e6;
        (per(self.cpu.user_us), per(self.cpu.sys_us))
    }
}

/// Process CPU time from `getrusage(RUSAGE_SELF)`: the executor thread and
/// the kernel work done on its behalf (the main thread only waits).
#[derive(Clone, Copy, Debug, Default)]
struct CpuTime {
    user_us: u64,
    sys_us: u64,
}

impl CpuTime {
    fn now() -> Self {
        // SAFETY: getrusage fills the struct we own.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
        let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
        CpuTime { user_us: micros(usage.ru_utime), sys_us: micros(usage.ru_stime) }
    }

    fn since(self, before: CpuTime) -> CpuTime {
        CpuTime { user_us: self.user_us - before.user_us, sys_us: self.sys_us - before.sys_us }
    }
}

/// Entries left to append and the deadline, shared by a run's appenders.
struct Budget {
    deadline: Instant,
    entries_left: Cell<u64>,
    /// For a warm-up: stop once the shard has this many segments.
    until_segments: Option<(Shard, u64)>,
}

impl Budget {
    fn new(time_budget: Duration, entries: u64) -> Budget {
        Budget { deadline: Instant::now() + time_budget, entries_left: Cell::new(entries), until_segments: None }
    }

    /// Takes `count` entries from the budget; false once it is spent, the
    /// deadline passed or the segment target is reached.
    fn take(&self, count: u64) -> bool {
        if Instant::now() >= self.deadline || self.entries_left.get() < count {
            return false;
        }
        if let Some((shard, segments)) = &self.until_segments {
            if shard.stats().segments >= *segments {
                return false;
            }
        }
        self.entries_left.set(self.entries_left.get() - count);
        true
    }
}

/// A pool of prepared entries. Appender `i` of `n` appends
/// `entries[position..position + batch_len]` with positions `i * batch_len`,
/// then stepping by `n * batch_len`, wrapping. The pool is leaked so that
/// appender tasks (which must be `'static`) borrow it without copying.
#[derive(Clone, Copy)]
struct Pool {
    entries: &'static [EntryRef<'static>],
    /// Positions `0..positions` start a full batch.
    positions: usize,
}

impl Pool {
    /// Leaks `entries`, extended cyclically so every position in
    /// `0..entries.len()` starts a batch of up to `batch_len_max` entries.
    fn new(mut entries: Vec<EntryRef<'static>>, batch_len_max: usize) -> Pool {
        let positions = entries.len();
        for index in 0..batch_len_max {
            entries.push(entries[index % positions]);
        }
        Pool { entries: Vec::leak(entries), positions }
    }

    fn mean_encoded_bytes(&self) -> f64 {
        let mut raw = Vec::new();
        for entry in &self.entries[..self.positions] {
            wormdb::codec::block::encode_entry(entry, 1_700_000_000_000_000_000, &mut raw);
        }
        raw.len() as f64 / self.positions as f64
    }
}

/// One shard workload: `appenders` tasks, each appending `batch_len`
/// entries at a time and awaiting durability before the next append.
#[derive(Clone, Copy)]
struct Workload {
    label: &'static str,
    preallocation: Preallocation,
    segment_bytes: u64,
    /// Roll once (with the small-entry batched workload) before the timed
    /// window, and let the window roll: see workload d in the module doc.
    warm_up_roll: bool,
    appenders: usize,
    batch_len: usize,
    pool: Pool,
    entries_budget: u64,
}

async fn appender(
    shard: Shard,
    pool: Pool,
    batch_len: usize,
    index: usize,
    appenders: usize,
    budget: Rc<Budget>,
) -> (u64, u64) {
    let mut position = (index * batch_len) % pool.positions;
    let stride = appenders * batch_len;
    let mut appends = 0u64;
    let mut retries = 0u64;
    while budget.take(batch_len as u64) {
        let batch = &pool.entries[position..position + batch_len];
        loop {
            match shard.append(batch) {
                Ok(wait) => {
                    wait.durable().await.unwrap();
                    break;
                }
                Err(Error::Backpressure { .. }) => {
                    retries += 1;
                    let durable = shard.durable_seq();
                    shard.wait_durable_after(durable).await;
                }
                Err(error) => panic!("append failed: {error}"),
            }
        }
        appends += 1;
        position = (position + stride) % pool.positions;
    }
    (appends, retries)
}

/// Runs `appenders` appender tasks of `pool` against `shard` until `budget`
/// is spent; returns (appends, backpressure retries).
async fn run_appenders(
    shard: &Shard,
    pool: Pool,
    batch_len: usize,
    appenders: usize,
    budget: Rc<Budget>,
) -> (u64, u64) {
    let tasks: Vec<_> = (0..appenders)
        .map(|index| glommio::spawn_local(appender(shard.clone(), pool, batch_len, index, appenders, budget.clone())))
        .collect();
    let mut appends = 0;
    let mut backpressure_retries = 0;
    for task in tasks {
        let (task_appends, task_retries) = task.await;
        appends += task_appends;
        backpressure_retries += task_retries;
    }
    (appends, backpressure_retries)
}

async fn run_shard(dir: &Path, workload: &Workload, run_index: usize, settings: &Settings) -> Run {
    let shard_dir =
        dir.join(format!("shard-{}-{}-{:?}-{run_index}", workload.label, workload.appenders, workload.preallocation));
    let config = ShardConfig {
        segment_bytes: workload.segment_bytes,
        durability: Durability::Sync,
        preallocation: workload.preallocation,
        ..ShardConfig::new(&shard_dir, 0)
    };
    let opening = Instant::now();
    let shard = Shard::open(config).await.unwrap();
    let open_seconds = opening.elapsed().as_secs_f64();
    if workload.warm_up_roll {
        // The first segment of a new shard is always fallocated; with
        // ZeroFill the next one is zero-filled in the background meanwhile.
        // Fill the first one with the batched small-entry workload, so the
        // timed window starts in a second segment, as in steady state.
        let mut warm_up = Budget::new(Duration::from_secs(120), u64::MAX);
        warm_up.until_segments = Some((shard.clone(), 2));
        run_appenders(&shard, workload.pool, SMALL_ENTRIES_PER_APPEND, SMALL_APPENDERS, Rc::new(warm_up)).await;
        assert!(shard.stats().segments >= 2, "the warm-up did not roll within 120 s");
        glommio::timer::sleep(WARM_UP_PAUSE).await;
    }

    let before = shard.stats();
    let cpu_before = CpuTime::now();
    let started = Instant::now();
    let budget = Rc::new(Budget::new(settings.time_budget, workload.entries_budget));
    let (appends, backpressure_retries) =
        run_appenders(&shard, workload.pool, workload.batch_len, workload.appenders, budget).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuTime::now().since(cpu_before);
    let after = shard.stats();
    shard.close().await.unwrap();
    std::fs::remove_dir_all(&shard_dir).unwrap();
    settle_filesystem(dir);
    Run {
        seconds,
        open_seconds,
        entries: after.last_seq - before.last_seq,
        appends,
        payload_bytes: after.raw_bytes - before.raw_bytes,
        write_bytes: after.write_bytes - before.write_bytes,
        commits: after.commits - before.commits,
        syncs: after.syncs - before.syncs,
        sync_us_total: after.sync_us_total - before.sync_us_total,
        sync_us_max: after.sync_us_max,
        cpu,
        backpressure_retries,
        segments: after.segments,
        rolls: after.segments - before.segments,
        rolling: workload.warm_up_roll,
    }
}

/// Workload a: 1 MiB DMA writes, each followed by fdatasync, into a fresh
/// fallocated (and, with `zero_fill`, zero-written) file.
async fn run_raw_baseline(dir: &Path, run_index: usize, zero_fill: bool, copy_in: bool, settings: &Settings) -> Run {
    let path = dir.join(format!("raw-baseline-{run_index}.dat"));
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).dma_open(&path).await.unwrap();
    let opening = Instant::now();
    let file_bytes = settings.large_file_bytes;
    file.pre_allocate(file_bytes, false).await.unwrap();
    let mut buffer = file.alloc_dma_buffer(COMMIT_BYTES);
    if zero_fill {
        buffer.as_bytes_mut().fill(0);
        let zeros = Rc::new(buffer);
        for offset in (0..file_bytes).step_by(COMMIT_BYTES) {
            assert_eq!(file.write_rc_at(zeros.clone(), offset).await.unwrap(), COMMIT_BYTES);
        }
        buffer = file.alloc_dma_buffer(COMMIT_BYTES);
    }
    // As the shard does after creating a segment: its metadata is durable
    // before the first commit.
    file.fdatasync().await.unwrap();
    let open_seconds = opening.elapsed().as_secs_f64();
    let mut rng = SmallRng::seed_from_u64(SEED ^ run_index as u64);
    rng.fill_bytes(buffer.as_bytes_mut());
    let mut buffer = Rc::new(buffer);
    // As much borrowed data as workload b cycles through (its 256 distinct
    // 64 KiB bodies), so the copy meets the same cache misses.
    let mut source = vec![0u8; if copy_in { RANDOM_BODY_COUNT * RANDOM_BODY_BYTES } else { 0 }];
    rng.fill_bytes(&mut source);
    let mut crcs = 0u32;

    let cpu_before = CpuTime::now();
    let started = Instant::now();
    let deadline = started + settings.time_budget;
    let mut offset = 0u64;
    let mut sync_us_total = 0u64;
    let mut sync_us_max = 0u64;
    let mut writes = 0u64;
    while offset + COMMIT_BYTES as u64 <= settings.bytes_budget.min(file_bytes) && Instant::now() < deadline {
        if copy_in {
            // The least a block store does per byte before its write: copy
            // the caller's (borrowed) data once, and checksum it.
            let bytes = Rc::get_mut(&mut buffer).expect("the previous write released the buffer").as_bytes_mut();
            let start = (writes as usize * COMMIT_BYTES) % source.len();
            bytes[..COMMIT_BYTES].copy_from_slice(&source[start..start + COMMIT_BYTES]);
            crcs ^= crc32fast::hash(&bytes[..COMMIT_BYTES]);
        }
        assert_eq!(file.write_rc_at(buffer.clone(), offset).await.unwrap(), COMMIT_BYTES);
        let syncing = Instant::now();
        file.fdatasync().await.unwrap();
        let sync_us = syncing.elapsed().as_micros() as u64;
        sync_us_total += sync_us;
        sync_us_max = sync_us_max.max(sync_us);
        offset += COMMIT_BYTES as u64;
        writes += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuTime::now().since(cpu_before);
    std::hint::black_box(crcs);
    file.close().await.unwrap();
    std::fs::remove_file(&path).unwrap();
    settle_filesystem(dir);
    Run {
        seconds,
        open_seconds,
        entries: writes,
        appends: writes,
        payload_bytes: offset,
        write_bytes: offset,
        commits: writes,
        syncs: writes,
        sync_us_total,
        sync_us_max,
        cpu,
        backpressure_retries: 0,
        segments: 1,
        rolls: 0,
        rolling: false,
    }
}

/// Makes glommio's per-thread, per-device IOPOLL probe read a file that has
/// data, before this thread opens any other `DmaFile` on the device.
///
/// glommio probes once per thread and device, with a read of the first file
/// opened there. The raw baseline opens a brand-new (empty) file first; that
/// read succeeds without reaching the device, the poll ring is wrongly
/// enabled, and every later read on this thread fails with EOPNOTSUPP
/// (`Shard::open` then fails reading the segment header). `Shard::open`
/// settles the probe itself, but only if it is the first opener on the
/// thread, so the bench settles it first, the same way.
async fn settle_iopoll_probe(dir: &Path) {
    let path = dir.join("iopoll-probe.dat");
    std::fs::write(&path, [0x5a; 4096]).unwrap();
    let file = glommio::io::DmaFile::open(&path).await.unwrap();
    file.close().await.unwrap();
    std::fs::remove_file(&path).unwrap();
}

/// Commits the filesystem after a run deleted its files, outside any timed
/// window: on a filesystem mounted with `discard`, deleting gigabytes
/// queues discards that the next journal commit waits for, which would
/// otherwise land in the next run's first fdatasyncs. Blocks the executor,
/// which has nothing else to do between runs.
fn settle_filesystem(dir: &Path) {
    let directory = std::fs::File::open(dir).unwrap();
    // SAFETY: syncfs on a file descriptor we own.
    assert_eq!(unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&directory)) }, 0);
}

/// The mount (device, type, options) that holds `path`, from /proc/self/mounts.
fn mount_of(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [device, mount_point, kind, options, ..] = fields[..] else { return None };
            path.starts_with(mount_point)
                .then(|| (mount_point.len(), format!("{device} on {mount_point} type {kind} ({options})")))
        })
        .max_by_key(|(length, _)| *length)
        .map(|(_, mount)| mount)
        .unwrap_or_else(|| "unknown".into())
}

/// "min..max" of `metric` over `runs`: on a shared machine the spread says
/// how far to trust the median.
fn spread(runs: &[Run], metric: impl Fn(&Run) -> f64) -> String {
    let values: Vec<f64> = runs.iter().map(metric).collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.0}..{max:.0}")
}

/// The median run by `metric`.
fn median_by(runs: &[Run], metric: impl Fn(&Run) -> f64) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|left, right| metric(left).total_cmp(&metric(right)));
    sorted[sorted.len() / 2]
}

fn describe(run: &Run) -> String {
    let (user, sys) = run.cpu_per_million_entries();
    format!(
        "{:>8.1} MB/s  {:>9.0} entries/s  {:>6.0} commits/s  {:>6.0} syncs/s  fdatasync mean {:>6.0} us max {:>6} us  \
         {:>5.1} appends/commit  write {:>7.1} MB/s  cpu/1M entries {:.2}+{:.2} s  {:.2} s for {} entries  open {:.2} s  \
         retries {}  rolls {}",
        run.payload_mb_per_second(),
        run.entries_per_second(),
        run.commits_per_second(),
        run.syncs_per_second(),
        run.mean_sync_us(),
        run.sync_us_max,
        run.appends as f64 / run.commits.max(1) as f64,
        run.write_bytes as f64 / run.seconds / 1e6,
        user,
        sys,
        run.seconds,
        run.entries,
        run.open_seconds,
        run.backpressure_retries,
        run.rolls,
    )
}

fn describe_raw(run: &Run) -> String {
    format!(
        "{:>8.1} MB/s  {:>6.0} writes+fdatasyncs/s  fdatasync mean {:>5.0} us max {:>6} us  cpu {:.2}+{:.2} s  \
         {} MiB in {:.2} s  file prep {:.2} s",
        run.payload_mb_per_second(),
        run.syncs_per_second(),
        run.mean_sync_us(),
        run.sync_us_max,
        run.cpu.user_us as f64 / 1e6,
        run.cpu.sys_us as f64 / 1e6,
        run.payload_bytes / MIB,
        run.seconds,
        run.open_seconds,
    )
}

fn print_runs(runs: &[Run], describe: fn(&Run) -> String) {
    for (index, run) in runs.iter().enumerate() {
        println!("    run {}: {}", index + 1, describe(run));
        if !run.rolling && run.segments != 1 {
            println!("    WARNING: run {} rolled to {} segments; the budget is too large", index + 1, run.segments);
        }
    }
}

fn level_of(body: &[u8]) -> &'static str {
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|window| window == needle);
    if contains(b"ERROR") || contains(b"error") || contains(b"FATAL") {
        "error"
    } else if contains(b"WARN") || contains(b"warn") {
        "warn"
    } else {
        "info"
    }
}

/// Entries of 3 tags and a `SMALL_BODY_BYTES` body: each source's LogHub
/// lines joined with newlines and cut into consecutive pieces, sources
/// interleaved piece by piece.
fn small_entries() -> Vec<EntryRef<'static>> {
    // LogHub samples: https://github.com/logpai/loghub, found by `tests/common/loghub.rs`.
    let texts: Vec<(&'static str, &'static [u8])> = SOURCES
        .iter()
        .map(|&source| (source, String::leak(common::loghub_lines(source).join("\n")).as_bytes()))
        .collect();
    let hosts: Vec<&'static str> = (0..HOST_COUNT).map(|host| &*String::leak(format!("node-{host:02}"))).collect();
    let longest = texts.iter().map(|(_, text)| text.len() / SMALL_BODY_BYTES).max().unwrap_or(0);
    let mut entries = Vec::new();
    for piece in 0..longest {
        for (source, text) in &texts {
            let Some(body) = text.get(piece * SMALL_BODY_BYTES..(piece + 1) * SMALL_BODY_BYTES) else { continue };
            let tags: &'static [(&'static str, &'static str)] = Vec::leak(vec![
                ("source", *source),
                ("level", level_of(body)),
                ("host", hosts[entries.len() % HOST_COUNT]),
            ]);
            entries.push(EntryRef { fields: &[], timestamp_ns: 0, tags, body });
        }
    }
    entries
}

/// `RANDOM_BODY_COUNT` entries with distinct random 64 KiB bodies.
fn random_entries() -> Vec<EntryRef<'static>> {
    let mut bytes = vec![0u8; RANDOM_BODY_COUNT * RANDOM_BODY_BYTES];
    SmallRng::seed_from_u64(SEED).fill_bytes(&mut bytes);
    let bytes: &'static [u8] = Vec::leak(bytes);
    let tags: &'static [(&'static str, &'static str)] = &[("source", "random"), ("level", "info"), ("host", "node-00")];
    bytes.chunks_exact(RANDOM_BODY_BYTES).map(|body| EntryRef { fields: &[], timestamp_ns: 0, tags, body }).collect()
}

fn nproc() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(0)
}

fn first_line_after(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|line| line.starts_with(prefix))?;
    Some(line.split(':').nth(1)?.trim().to_string())
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|text| text.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

/// The block device's cache mode (`write back` means fdatasync flushes it).
fn device_write_cache(path: &Path) -> String {
    let Ok(metadata) = std::fs::metadata(path) else { return "unknown".into() };
    let device = std::os::unix::fs::MetadataExt::dev(&metadata);
    let (major, minor) = (libc::major(device), libc::minor(device));
    let queue = format!("/sys/dev/block/{major}:{minor}/queue/write_cache");
    let partition_queue = format!("/sys/dev/block/{major}:{minor}/../queue/write_cache");
    std::fs::read_to_string(&queue)
        .or_else(|_| std::fs::read_to_string(&partition_queue))
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
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

fn print_conditions(dir: &Path, settings: &Settings, memlock: u64, small_entry_bytes: f64, random_entry_bytes: f64) {
    println!("== shard_append: conditions ==");
    println!(
        "machine: nproc={} cpu=\"{}\" kernel={} loadavg at start: {}",
        nproc(),
        first_line_after("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into()),
        read_trimmed("/proc/sys/kernel/osrelease"),
        read_trimmed("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    println!(
        "files: {} ({}, O_DIRECT through glommio DmaFile); RLIMIT_MEMLOCK={} bytes",
        dir.display(),
        filesystem_type(dir),
        memlock
    );
    println!(
        "mount: {}; device write cache: {}; files are deleted and the filesystem synced after every run",
        mount_of(dir),
        device_write_cache(dir)
    );
    println!("executor: one glommio LocalExecutor (unpinned); appenders are spawn_local tasks on it");
    println!("source tree: {}", source_tree());
    println!(
        "shard: segment_bytes={} MiB for b (and the baseline file size), {} MiB for c, {} MiB for d (rolling, \
         after a warm-up roll and a {:?} pause); durability=Sync (ack after write + fdatasync); preallocation as \
         stated per row",
        settings.large_file_bytes / MIB,
        SEGMENT_BYTES / MIB,
        settings.rolling_segment_bytes / MIB,
        WARM_UP_PAUSE
    );
    println!(
        "entries: incompressible = {RANDOM_BODIES_PER_APPEND} x {} KiB random bodies per append ({:.0} B encoded each); \
         small = 3 tags + {SMALL_BODY_BYTES} B LogHub body ({:.0} B encoded each, mean)",
        RANDOM_BODY_BYTES / 1024,
        random_entry_bytes,
        small_entry_bytes
    );
    println!(
        "bounds per run: {:?} or {} MiB (a, b; {} rounds) / {:?} (c, d; {RUNS} rounds) / {} entries (c) / {} \
         entries (single-entry), whichever first; median reported{}",
        settings.paired_time_budget,
        settings.bytes_budget / MIB,
        settings.paired_rounds,
        settings.time_budget,
        settings.small_entries_budget,
        settings.single_entries_budget,
        if settings.quick { "; QUICK MODE: numbers are a smoke test, not a measurement" } else { "" }
    );
    println!("units: MB = 10^6 bytes; MB/s counts entry bytes made durable (shard) or bytes written (baseline)");
    println!();
}

/// One line of the table: the raw baseline or a shard workload.
#[derive(Clone, Copy)]
enum Job {
    /// Workload a (and a', a*): `copy_in` copies each 1 MiB from a heap pool
    /// into the DMA buffer and checksums it before the write.
    Raw {
        zero_fill: bool,
        copy_in: bool,
    },
    Shard(Workload),
}

/// A job with its tag (for `WORMDB_BENCH_ONLY`), its title and its runs.
struct Row {
    tag: &'static str,
    title: String,
    job: Job,
    runs: Vec<Run>,
}

impl Row {
    fn new(tag: &'static str, title: String, job: Job) -> Row {
        Row { tag, title, job, runs: Vec::with_capacity(RUNS) }
    }
}

/// Runs the rows of a group round-robin, `rounds` rounds, so that a drift
/// in background load on a shared machine hits every row of the group alike.
async fn run_group(dir: &Path, rows: &mut [Row], rounds: usize, settings: &Settings) {
    for run_index in 0..rounds {
        for row in rows.iter_mut() {
            let run = match row.job {
                Job::Raw { zero_fill, copy_in } => run_raw_baseline(dir, run_index, zero_fill, copy_in, settings).await,
                Job::Shard(workload) => run_shard(dir, &workload, run_index, settings).await,
            };
            row.runs.push(run);
        }
    }
}

/// `row`'s MB/s over `baseline`'s, round by round (runs `i` of both rows
/// are seconds apart), in percent.
fn paired_ratios(row: &Row, baseline: &Row) -> Vec<f64> {
    row.runs
        .iter()
        .zip(&baseline.runs)
        .map(|(run, base)| 100.0 * run.payload_mb_per_second() / base.payload_mb_per_second())
        .collect()
}

/// The median of `values` and their range, as "median (min..max)".
fn median_and_range(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match (sorted.first(), sorted.last()) {
        (Some(min), Some(max)) => format!("{:.1} % ({min:.1}..{max:.1})", sorted[sorted.len() / 2]),
        _ => "-".into(),
    }
}

/// Each row of the a/b group against [a] and against [a*], as the median
/// of per-round ratios. The disk's speed drifts between rounds more than
/// the rows differ, so a ratio of medians taken from different minutes
/// says less than the median of ratios taken seconds apart.
fn print_paired_ratios(throughput: &[Row]) {
    let find = |tag: &str| throughput.iter().find(|row| row.tag == tag);
    let (raw, copy_ceiling) = (find("a"), find("a*"));
    if raw.is_none() && copy_ceiling.is_none() {
        return;
    }
    println!("== paired: each row against the baselines of the same round (median of per-round ratios) ==");
    for row in throughput.iter().filter(|row| row.tag != "a") {
        let label = match row.job {
            Job::Shard(workload) => format!("[b] {} appender(s)", workload.appenders),
            Job::Raw { .. } => format!("[{}]", row.tag),
        };
        let mut line = format!("{label:<18}");
        if let Some(raw) = raw {
            line += &format!("  % of [a]: {}", median_and_range(&paired_ratios(row, raw)));
        }
        if let (Some(ceiling), Job::Shard(_)) = (copy_ceiling, row.job) {
            line += &format!("  % of [a*]: {}", median_and_range(&paired_ratios(row, ceiling)));
        }
        println!("{line}");
    }
    println!("target: [b] >= {TARGET_PERCENT_OF_BASELINE:.0} % of [a]");
    println!();
}

/// Which workloads to run: `WORMDB_BENCH_ONLY=a,b` keeps those tags (a
/// profiling aid); all by default.
fn selected(tag: &str) -> bool {
    match std::env::var("WORMDB_BENCH_ONLY") {
        Ok(only) => only.split(',').any(|wanted| wanted.trim() == tag),
        Err(_) => true,
    }
}

async fn bench(dir: PathBuf, settings: Settings, memlock: u64) {
    settle_iopoll_probe(&dir).await;
    let small = Pool::new(small_entries(), SMALL_ENTRIES_PER_APPEND);
    let random = Pool::new(random_entries(), RANDOM_BODIES_PER_APPEND);
    print_conditions(&dir, &settings, memlock, small.mean_encoded_bytes(), random.mean_encoded_bytes());

    let large = settings.large_file_bytes;
    let mut throughput = vec![
        Row::new(
            "a",
            format!(
                "[a] raw baseline: DmaFile fallocated to {} GiB, sequential 1 MiB write_at + fdatasync after each",
                large / GIB
            ),
            Job::Raw { zero_fill: false, copy_in: false },
        ),
        Row::new(
            "a'",
            "[a'] raw baseline on a zero-filled file (as Preallocation::ZeroFill leaves it; context for d)".into(),
            Job::Raw { zero_fill: true, copy_in: false },
        ),
        Row::new(
            "a*",
            "[a*] raw baseline, each 1 MiB first copied from a 16 MiB heap pool into the DMA buffer and crc32'd \
             (the least per-byte work of a store that takes borrowed entries)"
                .into(),
            Job::Raw { zero_fill: false, copy_in: true },
        ),
    ];
    for appenders in INCOMPRESSIBLE_APPENDERS {
        throughput.push(Row::new(
            "b",
            format!(
                "[b] shard (Fallocate, {} GiB segment), incompressible 1 MiB appends \
                 ({RANDOM_BODIES_PER_APPEND} x 64 KiB random), {appenders} appender(s)",
                large / GIB
            ),
            Job::Shard(Workload {
                label: "incompressible",
                preallocation: Preallocation::Fallocate,
                segment_bytes: large,
                warm_up_roll: false,
                appenders,
                batch_len: RANDOM_BODIES_PER_APPEND,
                pool: random,
                entries_budget: settings.bytes_budget / RANDOM_BODY_BYTES as u64,
            }),
        ));
    }
    let small_workload = |preallocation, segment_bytes, warm_up_roll, appenders, batch_len, entries_budget| Workload {
        label: if batch_len == 1 { "single" } else { "small" },
        preallocation,
        segment_bytes,
        warm_up_roll,
        appenders,
        batch_len,
        pool: small,
        entries_budget,
    };
    let batched = vec![Row::new(
        "c",
        format!(
            "[c] shard (Fallocate, {} MiB segment, no roll), small entries: {SMALL_ENTRIES_PER_APPEND} per append, \
             {SMALL_APPENDERS} appenders",
            SEGMENT_BYTES / MIB
        ),
        Job::Shard(small_workload(
            Preallocation::Fallocate,
            SEGMENT_BYTES,
            false,
            SMALL_APPENDERS,
            SMALL_ENTRIES_PER_APPEND,
            settings.small_entries_budget,
        )),
    )];
    let preallocations = [Preallocation::Fallocate, Preallocation::ZeroFill];
    let rolling_batched: Vec<Row> = preallocations
        .iter()
        .map(|&preallocation| {
            Row::new(
                "d",
                format!(
                    "[d] shard ({preallocation:?}, {} MiB segments, rolling after a warm-up roll), small entries: \
                     {SMALL_ENTRIES_PER_APPEND} per append, {SMALL_APPENDERS} appenders",
                    settings.rolling_segment_bytes / MIB
                ),
                Job::Shard(small_workload(
                    preallocation,
                    settings.rolling_segment_bytes,
                    true,
                    SMALL_APPENDERS,
                    SMALL_ENTRIES_PER_APPEND,
                    settings.small_entries_budget,
                )),
            )
        })
        .collect();
    let rolling_single: Vec<Row> = preallocations
        .iter()
        .map(|&preallocation| {
            Row::new(
                "d",
                format!(
                    "[d] shard ({preallocation:?}, {} MiB segments, rolling after a warm-up roll), single-entry \
                     appends, {SINGLE_APPENDERS} appenders",
                    settings.rolling_segment_bytes / MIB
                ),
                Job::Shard(small_workload(
                    preallocation,
                    settings.rolling_segment_bytes,
                    true,
                    SINGLE_APPENDERS,
                    1,
                    settings.single_entries_budget,
                )),
            )
        })
        .collect();

    let paired = Settings { time_budget: settings.paired_time_budget, ..settings };
    let mut groups = [throughput, batched, rolling_batched, rolling_single];
    for (index, group) in groups.iter_mut().enumerate() {
        let mut rows: Vec<Row> = std::mem::take(group).into_iter().filter(|row| selected(row.tag)).collect();
        if index == 0 {
            run_group(&dir, &mut rows, settings.paired_rounds, &paired).await;
        } else {
            run_group(&dir, &mut rows, RUNS, &settings).await;
        }
        *group = rows;
    }
    let [throughput, batched, rolling_batched, rolling_single] = groups;

    let baseline =
        throughput.iter().find(|row| row.tag == "a").map(|row| median_by(&row.runs, Run::payload_mb_per_second));
    let mut summary: Vec<(String, Run, bool)> = Vec::new();
    for row in &throughput {
        println!("{}", row.title);
        let median = median_by(&row.runs, Run::payload_mb_per_second);
        match row.job {
            Job::Raw { zero_fill, copy_in } => {
                print_runs(&row.runs, describe_raw);
                println!(
                    "    median: {:.1} MB/s (runs {}){}",
                    median.payload_mb_per_second(),
                    spread(&row.runs, Run::payload_mb_per_second),
                    if zero_fill {
                        format!(" (zero-filling the file took {:.2} s)", median.open_seconds)
                    } else {
                        String::new()
                    }
                );
                summary.push((
                    if zero_fill {
                        "a' raw baseline, zero-filled".into()
                    } else if copy_in {
                        "a* raw baseline, copy + crc first".into()
                    } else {
                        "a  raw baseline, fallocated".into()
                    },
                    median,
                    false,
                ));
            }
            Job::Shard(workload) => {
                print_runs(&row.runs, describe);
                match baseline {
                    Some(baseline) => {
                        let percent = 100.0 * median.payload_mb_per_second() / baseline.payload_mb_per_second();
                        println!(
                            "    median: {:.1} MB/s (runs {}) = {percent:.1} % of [a] \
                             (target >= {TARGET_PERCENT_OF_BASELINE:.0} %: {})",
                            median.payload_mb_per_second(),
                            spread(&row.runs, Run::payload_mb_per_second),
                            if percent >= TARGET_PERCENT_OF_BASELINE { "meets" } else { "BELOW" }
                        );
                    }
                    None => println!("    median: {:.1} MB/s ([a] not run)", median.payload_mb_per_second()),
                }
                summary.push((format!("b  incompressible 1 MiB, {} appender(s)", workload.appenders), median, true));
            }
        }
        println!();
    }

    print_paired_ratios(&throughput);

    let mut comparison: Vec<(String, Preallocation, Run)> = Vec::new();
    for row in batched.iter().chain(&rolling_batched) {
        let Job::Shard(workload) = row.job else { unreachable!("batched rows are shard workloads") };
        println!("{}", row.title);
        print_runs(&row.runs, describe);
        let median = median_by(&row.runs, Run::entries_per_second);
        let (user, sys) = median.cpu_per_million_entries();
        println!(
            "    median: {:.0} entries/s (runs {}; {:.1} MB/s), CPU {:.2} s per million entries \
             (user {user:.2} + sys {sys:.2})",
            median.entries_per_second(),
            spread(&row.runs, Run::entries_per_second),
            median.payload_mb_per_second(),
            user + sys
        );
        println!();
        let name = format!("{SMALL_APPENDERS} x {SMALL_ENTRIES_PER_APPEND}-entry appends");
        if workload.warm_up_roll {
            summary.push((format!("d  {name}, {:?}, rolling", workload.preallocation), median, true));
            comparison.push((name, workload.preallocation, median));
        } else {
            summary.push((format!("c  {name}, {:?}", workload.preallocation), median, true));
        }
    }
    for row in &rolling_single {
        let Job::Shard(workload) = row.job else { unreachable!("single-entry rows are shard workloads") };
        println!("{}", row.title);
        print_runs(&row.runs, describe);
        let median = median_by(&row.runs, Run::commits_per_second);
        println!(
            "    median: {:.0} commits/s (runs {}), {:.0} syncs/s, fdatasync mean {:.0} us, {:.0} entries/s",
            median.commits_per_second(),
            spread(&row.runs, Run::commits_per_second),
            median.syncs_per_second(),
            median.mean_sync_us(),
            median.entries_per_second()
        );
        println!();
        let name = format!("{SINGLE_APPENDERS} x single-entry appends");
        summary.push((format!("d  {name}, {:?}, rolling", workload.preallocation), median, true));
        comparison.push((name, workload.preallocation, median));
    }

    if !comparison.is_empty() {
        println!(
            "== preallocation comparison (median runs, {} MiB segments, after one warm-up roll; decides the \
             default) ==",
            settings.rolling_segment_bytes / MIB
        );
        println!(
            "{:<30} {:<10} {:>12} {:>10} {:>10} {:>15} {:>9} {:>16}",
            "workload", "prealloc", "entries/s", "commits/s", "syncs/s", "fdatasync us", "MB/s", "rolls in window"
        );
        for (name, preallocation, run) in &comparison {
            println!(
                "{:<30} {:<10} {:>12.0} {:>10.0} {:>10.0} {:>15.0} {:>9.1} {:>16}",
                name,
                format!("{preallocation:?}"),
                run.entries_per_second(),
                run.commits_per_second(),
                run.syncs_per_second(),
                run.mean_sync_us(),
                run.payload_mb_per_second(),
                run.rolls
            );
        }
        for pair in comparison.chunks(2) {
            if let [(name, _, fallocate), (_, _, zero_fill)] = pair {
                println!(
                    "{name}: ZeroFill / Fallocate = {:.2}x entries/s, {:.2}x commits/s, fdatasync {:.2}x as long",
                    zero_fill.entries_per_second() / fallocate.entries_per_second(),
                    zero_fill.commits_per_second() / fallocate.commits_per_second(),
                    zero_fill.mean_sync_us() / fallocate.mean_sync_us().max(1.0)
                );
            }
        }
        println!(
            "ZeroFill zero-fills the next segment in the background (a second write of every segment, \
             included above); the first segment of a new shard is only fallocated, hence the warm-up roll."
        );
        println!();
    }

    println!("== summary (median runs; % is of [a]) ==");
    println!(
        "{:<46} {:>9} {:>7} {:>11} {:>10} {:>9} {:>13} {:>14}",
        "workload", "MB/s", "% of a", "entries/s", "commits/s", "syncs/s", "fdatasync us", "cpu s/1M ent."
    );
    for (name, run, is_shard) in &summary {
        let (user, sys) = run.cpu_per_million_entries();
        let percent = match baseline {
            Some(baseline) => format!("{:.1}", 100.0 * run.payload_mb_per_second() / baseline.payload_mb_per_second()),
            None => "-".into(),
        };
        println!(
            "{:<46} {:>9.1} {:>7} {:>11} {:>10.0} {:>9.0} {:>13.0} {:>14}",
            name,
            run.payload_mb_per_second(),
            percent,
            if *is_shard { format!("{:.0}", run.entries_per_second()) } else { "-".into() },
            run.commits_per_second(),
            run.syncs_per_second(),
            run.mean_sync_us(),
            if *is_shard { format!("{:.2}", user + sys) } else { "-".into() },
        );
    }
    println!(
        "loadavg at end: {} (nproc={}; other load on the machine slows the CPU-bound rows)",
        read_trimmed("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        nproc()
    );
}

fn main() {
    let quick = std::env::var_os("WORMDB_BENCH_QUICK").is_some_and(|value| value != "0")
        || !std::env::args().any(|argument| argument == "--bench");
    let settings = Settings::new(quick);
    let memlock = wormdb::runtime::ensure_memlock(wormdb::runtime::MEMLOCK_BYTES_PER_EXECUTOR).unwrap();
    let temp = common::durable_temp_dir();
    let dir = temp.path().to_path_buf();
    common::run(move || bench(dir, settings, memlock));
    drop(temp);
}
