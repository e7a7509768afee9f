//! SIGKILL in the middle of durable appends: a child process (this test
//! binary, re-executed) appends from many concurrent tasks and prints every
//! acknowledgement; the parent kills it at a random moment, reopens the
//! shard and checks that every acknowledged entry is there, whole, with its
//! seq, and that the seqs are dense. Several rounds on the same directory.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::sigkill::Ack;
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
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sigkill_child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_VAR, &shard_dir)
            .env(CHILD_RUN_VAR, run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (writing, first_ack) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(ack) = Ack::parse(&line, run) {
                    acks.push(ack);
                    let _ = writing.send(());
                }
            }
            acks
        });
        // Kill once the child is writing (its first ack: recovery of the
        // previous runs' data takes a while on a loaded machine), at a
        // random moment after that.
        let _ = first_ack.recv_timeout(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..2000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let run_acks = reader.join().unwrap();
        assert!(!run_acks.is_empty(), "run {run}: the child acknowledged nothing before the kill");
        acks.extend(run_acks);

        let shard_dir = shard_dir.clone();
        let expected: Vec<(u64, u64, String)> = acks
            .iter()
            .flat_map(|ack| {
                (ack.first..=ack.last)
                    .map(|seq| (seq, ack.run, body(&lines, ack.run, ack.appender, ack.round, seq - ack.first)))
            })
            .collect();
        let acked_max = expected.iter().map(|(seq, _, _)| *seq).max().unwrap();
        let checked = common::run(move || async move {
            let shard = Shard::open(config(&shard_dir)).await.unwrap();
            let durable = shard.durable_seq();
            assert!(durable >= acked_max, "run {run}: recovered up to {durable}, but {acked_max} was acknowledged");
            // Read back in pages (a read returns at most READ_ENTRIES_MAX).
            let expected: std::collections::HashMap<u64, &String> =
                expected.iter().map(|(seq, _, text)| (*seq, text)).collect();
            let mut next = 1;
            while next <= durable {
                let entries = shard.read_from(next, 200_000).await.unwrap();
                assert!(!entries.is_empty(), "run {run}: nothing at seq {next} of {durable}");
                for entry in &entries {
                    assert_eq!(entry.seq, next, "run {run}: seqs are dense");
                    if let Some(text) = expected.get(&entry.seq) {
                        assert_eq!(std::str::from_utf8(&entry.body).unwrap(), text.as_str(), "run {run}: seq {next}");
                    }
                    next += 1;
                }
            }
            assert_eq!(next, durable + 1);
            shard.close().await.unwrap();
            expected.len()
        });
        eprintln!("run {run}: {checked} acknowledged entries verified");
    }
}
