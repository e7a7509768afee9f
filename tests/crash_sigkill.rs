//! SIGKILL in the middle of durable appends: a child process (this test
//! binary, re-executed) appends from many concurrent tasks and prints every
//! acknowledgement; the parent kills it at a random moment, reopens the
//! shard and checks that every acknowledged entry is there, whole, with its
//! seq, and that the seqs are dense. Several rounds on the same directory.
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::sigkill::{check_acknowledged, expected_bodies, Ack, ChildRun};
use rand::{Rng, SeedableRng};
use wormdb::shard::{Shard, ShardConfig};

const CHILD_DIR_VAR: &str = "WORMDB_SIGKILL_CHILD_DIR";
const CHILD_RUN_VAR: &str = "WORMDB_SIGKILL_CHILD_RUN";

fn config(dir: &Path) -> ShardConfig {
    // Small segments, so that kills also land around roll-overs.
    ShardConfig { segment_bytes: wormdb::limits::SEGMENT_BYTES_MIN, ..ShardConfig::new(dir, 0) }
}

fn body(lines: &[String], run: u64, appender: u64, round: u64, index: u64) -> String {
    let line = &lines[((appender * 7919 + round * 31 + index) % lines.len() as u64) as usize];
    format!("c{run} a{appender} r{round} i{index} {line}")
}

/// The child: appends until killed (bounded at 30 s), printing
/// `ACK first last appender round` after each durable append.
#[test]
fn sigkill_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR_VAR) else { return };
    let run: u64 = std::env::var(CHILD_RUN_VAR).unwrap().parse().unwrap();
    let lines = common::loghub_lines("OpenSSH");
    common::run(move || async move {
        let lines = Rc::new(lines);
        let shard = Shard::open(config(Path::new(&dir))).await.unwrap();
        let started = Instant::now();
        let mut tasks = Vec::new();
        tasks.extend(common::sigkill::spawn_acking_appenders(&shard, &lines, body, run, started));
        for task in tasks {
            task.await;
        }
    });
}

#[test]
fn sigkill_never_loses_an_acknowledged_entry() {
    let dir = common::durable_temp_dir();
    let shard_dir = dir.path().join("shard-000");
    let lines = common::loghub_lines("OpenSSH");
    let seed = 0x5191_c111;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut acks: Vec<Ack> = Vec::new();
    for run in 0..5u64 {
        let (writing, first_ack) = std::sync::mpsc::channel();
        let run_text = run.to_string();
        let env = [(CHILD_DIR_VAR, shard_dir.as_os_str()), (CHILD_RUN_VAR, OsStr::new(&run_text))];
        let child = ChildRun::spawn("sigkill_child_writer", env, run, writing, |line| line.starts_with("ACK"));
        // Kill once the child is writing (its first ack: recovery of the
        // previous runs' data takes a while on a loaded machine), at a
        // random moment after that.
        let _ = first_ack.recv_timeout(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..2000)));
        acks.extend(child.kill());

        let shard_dir = shard_dir.clone();
        let expected = expected_bodies(&acks, &lines, body);
        let checked = common::run(move || async move {
            let shard = Shard::open(config(&shard_dir)).await.unwrap();
            check_acknowledged(&shard, &expected, run).await;
            shard.close().await.unwrap();
            expected.len()
        });
        eprintln!("run {run}: {checked} acknowledged entries verified");
    }
}
