//! The seeded storage simulator (TigerBeetle's VOPR and redb's crash fuzzer
//! as the models), on real files through the fault seam of `shard::faults`.
//!
//! One seed drives a run: a few epochs, each one opening the shard with a
//! seeded fault plan (EIO on a write or an fdatasync, a short or torn write,
//! ENOSPC at a roll, a power cut at some operation), appending a seeded
//! workload (entry counts, body sizes and tags varied, sometimes two
//! commits in flight at once), closing, and restarting the files as a clean
//! stop or a power loss (with a seeded torn prefix of what was not synced)
//! would leave them. Every reopen is checked against a model of the log:
//!
//! * every acknowledged entry is there, byte for byte, at the seq its
//!   acknowledgement gave, and seqs are dense from 1;
//! * past them, the log holds a prefix of the entries whose appends failed
//!   with `Error::Failed` (those may have landed) — never a torn or altered
//!   entry, never one that was not appended, never one of an append
//!   refused before its commit;
//! * once an append got `Error::Failed`, no later append of that epoch is
//!   acknowledged, and `close` reports the failure;
//! * after the last epoch the shard, opened without faults, takes and keeps
//!   an append.
//!
//! `WORMDB_SIM_SEEDS=N` runs seeds `0..N` ([`SEEDS_DEFAULT`] without it);
//! `WORMDB_SIM_SEED=S` runs seed `S` alone; `WORMDB_SIM_THREADS=T` runs T
//! seeds at a time (4: the runs mostly wait for fdatasync), each on an
//! executor and in a directory of its own. A failing seed prints itself and
//! the command that replays it. The workload, the fault plan and the torn
//! prefix replay exactly; the one thing a real disk decides is whether an
//! fdatasync in flight completes before a fault elsewhere fails the shard,
//! which only changes whether a few more appends fail.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use wormdb::shard::faults::{Fault, FaultPlan, Faults, Op, Restart};
use wormdb::shard::{AppendWait, EntryRef, Error, Preallocation, Shard, ShardConfig};

/// Seeds of a default run: 30 s in a debug build on the 2-core reference
/// machine (4 seeds at a time, load average 12 from other jobs), well
/// inside CI's minute.
const SEEDS_DEFAULT: u64 = 64;

/// One entry as appended.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    timestamp_ns: i64,
    tags: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// What the log must hold at the next open.
#[derive(Default)]
struct Expected {
    /// The log as the last open found it (and checked).
    log: Vec<Entry>,
    /// Entries of the last epoch's appends that were acknowledged or failed
    /// in their commit, in seq order: a prefix of them follows `log`.
    candidates: Vec<Entry>,
    /// How many of `candidates` (a prefix) were acknowledged at least.
    acknowledged: usize,
}

/// Counters over a run, printed at the end.
#[derive(Default, Debug)]
struct Totals {
    epochs: u64,
    appends_acknowledged: u64,
    appends_failed: u64,
    appends_disk_full: u64,
    appends_refused: u64,
    appends_backpressure: u64,
    entries_acknowledged: u64,
    unacknowledged_entries_kept: u64,
    power_losses: u64,
    torn_bytes_landed: u64,
    lost_pages: u64,
    rolls: u64,
    faults: BTreeMap<String, u64>,
}

const TAG_KEYS: [&str; 4] = ["host", "level", "app", "region"];
const TAG_VALUES: [&str; 6] = ["web-1", "db-2", "info", "error", "eu-west", "checkout"];
const WORDS: [&str; 12] =
    ["GET", "/api/orders", "200", "took", "ms", "user", "login", "failed", "retry", "disk", "segment", "roll"];

fn random_entry(rng: &mut SmallRng) -> Entry {
    let tag_count = rng.gen_range(0..=3);
    let mut tags = BTreeMap::new();
    for _ in 0..tag_count {
        let key = TAG_KEYS[rng.gen_range(0..TAG_KEYS.len())];
        tags.insert(key.to_owned(), TAG_VALUES[rng.gen_range(0..TAG_VALUES.len())].to_owned());
    }
    let body = match rng.gen_range(0..100) {
        // Short log lines that compress.
        0..=69 => {
            let words = rng.gen_range(0..30);
            let mut line = String::new();
            for _ in 0..words {
                line.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
                line.push_str(&rng.gen_range(0..1000).to_string());
                line.push(' ');
            }
            line.into_bytes()
        }
        // Medium bodies that do not.
        70..=94 => {
            let len = rng.gen_range(200..6000);
            random_bytes(rng, len)
        }
        // Large ones: several pages per entry, and segments fill up.
        _ => {
            let len = rng.gen_range(20_000..120_000);
            random_bytes(rng, len)
        }
    };
    Entry { timestamp_ns: rng.gen_range(1..1_000_000_000_000), tags, body }
}

fn random_bytes(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// An epoch's fault plan. Counts are drawn over the operations a workload
/// of `waves` waves issues (about one write and one fdatasync per commit).
fn random_plan(rng: &mut SmallRng, waves: u64) -> FaultPlan {
    let mut plan = FaultPlan::new();
    if rng.gen_bool(0.3) {
        return plan;
    }
    for _ in 0..rng.gen_range(1..=2) {
        let commits = 2 * waves;
        plan = match rng.gen_range(0..7) {
            0 => plan.at(Op::Write, rng.gen_range(1..=commits), Fault::WriteEio),
            1 => plan.at(Op::Write, rng.gen_range(1..=commits), Fault::ShortWrite { pages: rng.gen_range(0..4) }),
            2 => plan.at(Op::Write, rng.gen_range(1..=commits), Fault::TornWrite { pages: rng.gen_range(0..8) }),
            3 => plan.at(Op::Sync, rng.gen_range(1..=commits), Fault::SyncEio),
            4 => {
                // The epoch's first roll (few epochs roll twice); sometimes
                // the disk stays full for the next attempt as well.
                let plan = plan.at(Op::CreateSegment, 1, Fault::NoSpace);
                if rng.gen_bool(0.3) {
                    plan.at(Op::CreateSegment, 2, Fault::NoSpace)
                } else {
                    plan
                }
            }
            5 => plan.at(Op::Write, rng.gen_range(1..=commits), Fault::PowerLoss),
            _ => plan.at(Op::Sync, rng.gen_range(1..=commits), Fault::PowerLoss),
        };
    }
    plan
}

fn config(dir: &Path, preallocation: Preallocation, faults: Option<Arc<Faults>>) -> ShardConfig {
    ShardConfig { segment_bytes: wormdb::limits::SEGMENT_BYTES_MIN, preallocation, faults, ..ShardConfig::new(dir, 0) }
}

/// Opens the shard and checks its log against `expected`; returns the
/// shard and the log it holds.
async fn open_and_check(seed: u64, epoch: usize, config: ShardConfig, expected: &Expected) -> (Shard, Vec<Entry>) {
    let context = format!("seed {seed} epoch {epoch}");
    let shard = Shard::open(config).await.unwrap_or_else(|error| panic!("{context}: open failed: {error}"));
    let bound = expected.log.len() + expected.candidates.len();
    let read = shard.read_from(1, bound + 1).await.unwrap_or_else(|error| panic!("{context}: read failed: {error}"));
    let found = read.len();
    assert_eq!(shard.durable_seq(), found as u64, "{context}: durable seq and entries read disagree");
    assert!(
        found >= expected.log.len() + expected.acknowledged,
        "{context}: lost acknowledged entries: the log holds {found}, {} were acknowledged",
        expected.log.len() + expected.acknowledged
    );
    assert!(found <= bound, "{context}: {found} entries, but only {bound} were ever appended");
    let mut log = Vec::with_capacity(found);
    for (index, entry) in read.into_iter().enumerate() {
        assert_eq!(entry.seq, index as u64 + 1, "{context}: seqs are not dense");
        let entry = Entry { timestamp_ns: entry.timestamp_ns, tags: entry.tags, body: entry.body.to_vec() };
        let want = if index < expected.log.len() {
            &expected.log[index]
        } else {
            &expected.candidates[index - expected.log.len()]
        };
        assert!(entry == *want, "{context}: seq {} differs from what was appended", index + 1);
        log.push(entry);
    }
    (shard, log)
}

/// How one append ended.
enum Outcome {
    Acknowledged { first: u64, last: u64 },
    Failed,
    DiskFull,
    Refused,
    Backpressure,
}

/// Runs one epoch's workload on `shard`, whose log is `log`. Returns what
/// the next open must find.
async fn run_workload(
    seed: u64,
    epoch: usize,
    shard: &Shard,
    rng: &mut SmallRng,
    waves: u64,
    log: Vec<Entry>,
    totals: &mut Totals,
) -> (Expected, bool) {
    let context = format!("seed {seed} epoch {epoch}");
    let mut submitted: Vec<(Vec<Entry>, Result<AppendWait, Error>)> = Vec::new();
    let mut outcomes: Vec<(Vec<Entry>, Outcome)> = Vec::new();
    let mut wave = 0;
    while wave < waves {
        // One wave, or two with a yield between them: the writer then
        // commits the second while the first one's fdatasync is in flight.
        let in_flight = if rng.gen_bool(0.3) { 2 } else { 1 };
        for part in 0..in_flight {
            if part > 0 {
                futures_lite::future::yield_now().await;
            }
            for _ in 0..rng.gen_range(1..=3) {
                let entries: Vec<Entry> = match rng.gen_range(0..100) {
                    // Bulk: about a third of a segment, so that rolls happen.
                    0..=9 => (0..rng.gen_range(6..=12))
                        .map(|_| {
                            let len = rng.gen_range(50_000..120_000);
                            Entry { body: random_bytes(rng, len), ..random_entry(rng) }
                        })
                        .collect(),
                    10..=19 => (0..rng.gen_range(10..60)).map(|_| random_entry(rng)).collect(),
                    _ => (0..rng.gen_range(1..=8)).map(|_| random_entry(rng)).collect(),
                };
                let tags: Vec<Vec<(&str, &str)>> = entries
                    .iter()
                    .map(|entry| entry.tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect())
                    .collect();
                let refs: Vec<EntryRef<'_>> = entries
                    .iter()
                    .zip(&tags)
                    .map(|(entry, tags)| EntryRef {
                        fields: &[],
                        timestamp_ns: entry.timestamp_ns,
                        tags,
                        body: &entry.body,
                    })
                    .collect();
                let wait = shard.append(&refs);
                submitted.push((entries, wait));
            }
            wave += 1;
        }
        for (entries, wait) in submitted.drain(..) {
            let outcome = match wait {
                Err(Error::Failed { .. }) => Outcome::Refused,
                Err(Error::Backpressure { .. }) => Outcome::Backpressure,
                Err(error) => panic!("{context}: unexpected refusal: {error}"),
                Ok(wait) => match wait.durable().await {
                    Ok(range) => Outcome::Acknowledged { first: range.first, last: range.last },
                    Err(Error::Failed { .. }) => Outcome::Failed,
                    Err(Error::DiskFull { op: "create segment", .. }) => Outcome::DiskFull,
                    Err(error) => panic!("{context}: unexpected append error: {error}"),
                },
            };
            outcomes.push((entries, outcome));
        }
    }
    // Appends that failed in a commit may have landed; the ones refused by
    // `append` itself, or refused at a roll, are in no commit.
    let mut expected = Expected { log, ..Expected::default() };
    let mut failed = false;
    for (entries, outcome) in outcomes {
        let next_seq = (expected.log.len() + expected.candidates.len()) as u64 + 1;
        match outcome {
            Outcome::Acknowledged { first, last } => {
                assert!(!failed, "{context}: an append was acknowledged after the shard failed");
                assert_eq!((first, last), (next_seq, next_seq + entries.len() as u64 - 1), "{context}: acked seqs");
                totals.appends_acknowledged += 1;
                totals.entries_acknowledged += entries.len() as u64;
                expected.candidates.extend(entries);
                expected.acknowledged = expected.candidates.len();
            }
            Outcome::Failed => {
                failed = true;
                totals.appends_failed += 1;
                expected.candidates.extend(entries);
            }
            Outcome::DiskFull => {
                assert!(!failed, "{context}: disk full after the shard failed");
                totals.appends_disk_full += 1;
            }
            Outcome::Refused => {
                assert!(failed, "{context}: an append was refused as failed before any commit failed");
                totals.appends_refused += 1;
            }
            Outcome::Backpressure => totals.appends_backpressure += 1,
        }
    }
    (expected, failed)
}

async fn run_seed(seed: u64, root: &Path) -> Totals {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut totals = Totals::default();
    let dir = root.join(format!("seed-{seed}"));
    let preallocation = if rng.gen_bool(0.25) { Preallocation::ZeroFill } else { Preallocation::Fallocate };
    let mut expected = Expected::default();
    let epochs = rng.gen_range(2..=4);
    for epoch in 0..epochs {
        let waves = rng.gen_range(3..=16);
        let plan = random_plan(&mut rng, waves);
        let faults = Faults::new(plan);
        let (shard, log) =
            open_and_check(seed, epoch, config(&dir, preallocation, Some(faults.clone())), &expected).await;
        totals.unacknowledged_entries_kept += (log.len() - expected.log.len() - expected.acknowledged) as u64;
        let segments_before = shard.stats().segments;
        let (next, failed) = run_workload(seed, epoch, &shard, &mut rng, waves, log, &mut totals).await;
        totals.rolls += shard.stats().segments.saturating_sub(segments_before);
        let closed = shard.close().await;
        assert_eq!(closed.is_err(), failed, "seed {seed} epoch {epoch}: close must report the failure: {closed:?}");
        if let Err(error) = closed {
            assert!(matches!(error, Error::Failed { .. }), "seed {seed} epoch {epoch}: {error}");
        }
        let power_loss = faults.power_is_cut() || rng.gen_bool(0.5);
        let restart = if power_loss {
            totals.power_losses += 1;
            Restart::PowerLoss { torn_seed: if rng.gen_bool(0.8) { Some(rng.gen()) } else { None } }
        } else {
            Restart::Clean
        };
        let restarted = faults.restart(restart).unwrap();
        if power_loss {
            totals.torn_bytes_landed += restarted.landed_bytes;
        }
        totals.lost_pages += restarted.lost_pages as u64;
        for injected in faults.injected() {
            let kind = format!("{:?}", injected.fault).split([' ', '{']).next().unwrap().to_owned();
            *totals.faults.entry(kind).or_default() += 1;
        }
        totals.epochs += 1;
        expected = next;
    }
    // Without faults: the log is what the model says, and the shard takes
    // and keeps an append.
    let (shard, log) = open_and_check(seed, epochs, config(&dir, preallocation, None), &expected).await;
    totals.unacknowledged_entries_kept += (log.len() - expected.log.len() - expected.acknowledged) as u64;
    let tags = [("after", "sim")];
    let range = shard
        .append(&[EntryRef { fields: &[], timestamp_ns: 1, tags: &tags, body: b"after the faults" }])
        .unwrap()
        .durable()
        .await
        .unwrap_or_else(|error| panic!("seed {seed}: the reopened shard refused an append: {error}"));
    assert_eq!(range.first, log.len() as u64 + 1, "seed {seed}: seq after the faults");
    shard.close().await.unwrap();
    let last = Entry {
        timestamp_ns: 1,
        tags: BTreeMap::from([("after".to_owned(), "sim".to_owned())]),
        body: b"after the faults".to_vec(),
    };
    let expected = Expected { log, candidates: vec![last], acknowledged: 1 };
    let (shard, _) = open_and_check(seed, epochs + 1, config(&dir, preallocation, None), &expected).await;
    shard.close().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    totals
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("WORMDB_SIM_SEED").ok().and_then(|seed| seed.parse().ok()) {
        return vec![seed];
    }
    let count = std::env::var("WORMDB_SIM_SEEDS").ok().and_then(|count| count.parse().ok()).unwrap_or(SEEDS_DEFAULT);
    (0..count).collect()
}

/// Runs one seed on an executor of its own; `None` if it failed (its panic
/// message is already on stderr).
fn run_one(seed: u64, root: &Path) -> Option<Totals> {
    let root = root.to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .name(&format!("sim-{seed}"))
        .spawn(move || async move { run_seed(seed, &root).await })
        .unwrap()
        .join()
        .ok()
}

#[test]
fn seeded_storage_faults_never_lose_or_tear_an_acknowledged_entry() {
    let root = common::durable_temp_dir();
    let started = std::time::Instant::now();
    let seeds = seeds();
    // The runs wait on fdatasync most of the time: overlap a few.
    let workers = std::env::var("WORMDB_SIM_THREADS").ok().and_then(|count| count.parse().ok()).unwrap_or(4usize);
    wormdb::runtime::ensure_memlock(workers as u64 * wormdb::runtime::MEMLOCK_BYTES_PER_EXECUTOR).unwrap();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&seed) = seeds.get(index) else { break };
                let result = run_one(seed, root.path());
                results.lock().unwrap().push((seed, result));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(seed, _)| *seed);
    let mut sum = Totals::default();
    let mut failed = Vec::new();
    for (seed, result) in results {
        let Some(totals) = result else {
            eprintln!(
                "sim_storage: seed {seed} failed; replay it with:\n    \
                 WORMDB_SIM_SEED={seed} cargo test --test sim_storage -- --nocapture"
            );
            failed.push(seed);
            continue;
        };
        sum.epochs += totals.epochs;
        sum.appends_acknowledged += totals.appends_acknowledged;
        sum.appends_failed += totals.appends_failed;
        sum.appends_disk_full += totals.appends_disk_full;
        sum.appends_refused += totals.appends_refused;
        sum.appends_backpressure += totals.appends_backpressure;
        sum.entries_acknowledged += totals.entries_acknowledged;
        sum.unacknowledged_entries_kept += totals.unacknowledged_entries_kept;
        sum.power_losses += totals.power_losses;
        sum.torn_bytes_landed += totals.torn_bytes_landed;
        sum.lost_pages += totals.lost_pages;
        sum.rolls += totals.rolls;
        for (kind, count) in totals.faults {
            *sum.faults.entry(kind).or_default() += count;
        }
    }
    println!(
        "sim_storage: {} seeds ({workers} at a time) in {:.1} s: {sum:#?}",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failed.is_empty(), "sim_storage: seeds {failed:?} failed (replay commands above)");
}
