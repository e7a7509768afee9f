//! SIGKILL while sealed segments are rewritten with zstd (`shard::cold`): a
//! child process (this test binary, re-executed) appends from many
//! concurrent tasks into small segments, with cold compression on and no
//! age (every sealed segment is rewritten as soon as it is sealed, by the
//! shard's background task, while appends go on), and prints every
//! acknowledgement; the parent kills it at a random moment, reopens the
//! shard and checks that every acknowledged entry is there once, whole,
//! with its seq, that the seqs are dense and that no leftover of a rewrite
//! is left. Several rounds on the same directory; a last pass rewrites what
//! is left and the check is made again. `tests/cold_compression.rs` stops
//! the rewrite at each of its steps deterministically.
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::sigkill::{check_acknowledged, expected_bodies, Ack, ChildRun};
use rand::{Rng, SeedableRng};
use wormdb::shard::{ColdPolicy, Shard, ShardConfig};

const CHILD_DIR_VAR: &str = "WORMDB_COLD_SIGKILL_CHILD_DIR";
const CHILD_RUN_VAR: &str = "WORMDB_COLD_SIGKILL_CHILD_RUN";

fn config(dir: &Path) -> ShardConfig {
    // Small segments, each rewritten as soon as it is sealed.
    ShardConfig {
        segment_bytes: wormdb::limits::SEGMENT_BYTES_MIN,
        cold: ColdPolicy::zstd(Duration::ZERO),
        ..ShardConfig::new(dir, 0)
    }
}

fn body(lines: &[String], run: u64, appender: u64, round: u64, index: u64) -> String {
    let line = &lines[((appender * 7919 + round * 31 + index) % lines.len() as u64) as usize];
    // A request id that does not compress: segments fill (and get sealed
    // and rewritten) sooner.
    let mut id = (run << 48) ^ (appender << 40) ^ (round << 16) ^ index;
    let mut hex = String::with_capacity(64);
    for _ in 0..4 {
        id = id.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(0x6a09_e667_f3bc_c909);
        hex.push_str(&format!("{id:016x}"));
    }
    format!("c{run} a{appender} r{round} i{index} id={hex} {line}")
}

/// The child: appends until killed (bounded at 30 s), printing
/// `ACK first last appender round` after each durable append.
#[test]
fn cold_sigkill_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR_VAR) else { return };
    let run: u64 = std::env::var(CHILD_RUN_VAR).unwrap().parse().unwrap();
    let lines = common::loghub_lines("OpenSSH");
    common::run(move || async move {
        let lines = Rc::new(lines);
        let shard = Shard::open(config(Path::new(&dir))).await.unwrap();
        let started = Instant::now();
        let mut tasks = Vec::new();
        // Says when a segment was sealed: its rewrite starts right after.
        let watched = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            let mut segments = watched.stats().segments;
            while started.elapsed() < Duration::from_secs(30) {
                glommio::timer::sleep(Duration::from_millis(1)).await;
                let now = watched.stats().segments;
                if now > segments {
                    segments = now;
                    let mut stdout = std::io::stdout().lock();
                    writeln!(stdout, "SEALED {now}").unwrap();
                    stdout.flush().unwrap();
                }
            }
        }));
        tasks.extend(common::sigkill::spawn_acking_appenders(&shard, &lines, body, run, started));
        for task in tasks {
            task.await;
        }
    });
}

/// Segment files whose header says they were rewritten.
fn cold_segments(dir: &Path) -> u64 {
    let mut cold = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "seg") {
            let page = std::fs::read(&path).unwrap();
            let header = wormdb::shard::segment::SegmentHeader::decode(&page[..4096]).unwrap();
            cold += u64::from(header.cold);
        }
    }
    cold
}

#[test]
fn sigkill_during_cold_rewrites_never_loses_an_acknowledged_entry() {
    let dir = common::durable_temp_dir();
    let shard_dir = dir.path().join("shard-000");
    let lines = common::loghub_lines("OpenSSH");
    let seed = 0xc01d_5191;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut acks: Vec<Ack> = Vec::new();
    for run in 0..6u64 {
        let (sealing, sealed) = std::sync::mpsc::channel();
        let run_text = run.to_string();
        let env = [(CHILD_DIR_VAR, shard_dir.as_os_str()), (CHILD_RUN_VAR, OsStr::new(&run_text))];
        let child = ChildRun::spawn("cold_sigkill_child_writer", env, run, sealing, |line| line.starts_with("SEALED"));
        // Kill soon after a segment was sealed, while its rewrite runs (or
        // about to, or done): at a random moment of the next 0.8 s.
        let _ = sealed.recv_timeout(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..800)));
        acks.extend(child.kill());

        let interrupted: Vec<String> = std::fs::read_dir(&shard_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".cold."))
            .collect();
        eprintln!("run {run}: killed; rewrite files left: {interrupted:?}");
        let shard_dir = shard_dir.clone();
        let expected = expected_bodies(&acks, &lines, body);
        let checked = common::run(move || async move {
            // Without the background rewrite: what is on disk is what the kill left.
            let shard = Shard::open(ShardConfig { cold: ColdPolicy::default(), ..config(&shard_dir) }).await.unwrap();
            let durable = check_acknowledged(&shard, &expected, run).await;
            let leftovers: Vec<String> = std::fs::read_dir(&shard_dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.contains(".cold."))
                .collect();
            assert!(leftovers.is_empty(), "run {run}: {leftovers:?}");
            let cold = cold_segments(&shard_dir);
            eprintln!(
                "run {run}: {} segments, {cold} of them cold, {} index(es) rebuilt at the open",
                shard.stats().segments,
                shard.recovery_report().indexes_rebuilt
            );
            if run == 5 {
                // Whatever the kills interrupted is rewritten now, and reads the same.
                shard.compress_cold(ColdPolicy::zstd(Duration::ZERO), i64::MAX).await.unwrap();
                assert_eq!(check_acknowledged(&shard, &expected, run).await, durable);
                let again = shard.compress_cold(ColdPolicy::zstd(Duration::ZERO), i64::MAX).await.unwrap();
                assert!(again.is_empty(), "all rewritten");
                let sealed = shard.stats().segments - 1;
                assert!(sealed > 0, "the runs sealed segments");
                assert_eq!(cold_segments(&shard_dir), sealed, "every sealed segment is cold");
            }
            shard.close().await.unwrap();
            expected.len()
        });
        eprintln!("run {run}: {checked} acknowledged entries verified");
    }
}
