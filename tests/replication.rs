//! Replication between real processes on loopback: a follower node pushes
//! everything it stores to a leader node. After every fault (leader
//! SIGKILLed or gracefully restarted during sustained ingest, follower
//! SIGKILLed and restarted, follower shut down), the leader must hold
//! exactly the follower's log: every (follower, shard, seq) once, under the
//! follower's ids, with the same bodies, and the lag drains to zero. And a
//! follower that lost its disk is rebuilt from the archive by
//! `wormdb restore`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::node::{contents, get, ndjson, post, wait_acked, wait_drained, writers, Acked, TestNode};

const FOLLOWER_ID: u64 = 2;
/// What a follower logs when its session with the leader breaks.
const SESSION_ENDED: &str = "replication session ended";

fn start_leader(dir: &std::path::Path) -> TestNode {
    TestNode::start(dir, &["--node-id", "1", "--shards", "2"])
}

fn start_follower(dir: &std::path::Path, leader: &TestNode) -> TestNode {
    TestNode::start(dir, &["--node-id", "2", "--shards", "2", "--leader", &leader.grpc_addr])
}

/// The leader's archive is exactly the follower's log: same ids, same
/// bodies, each once; every acknowledged entry is in it.
fn assert_exact_archive(leader: &TestNode, follower: &TestNode, acked: &Acked, context: &str) {
    let local = contents(follower);
    let archive: HashMap<_, _> =
        contents(leader).into_iter().filter(|((node, _, _), _)| *node == FOLLOWER_ID).collect();
    for (key, bodies) in &archive {
        assert_eq!(bodies.len(), 1, "{context}: {key:?} archived {} times", bodies.len());
    }
    assert_eq!(archive.len(), local.len(), "{context}: archive and follower log differ in size");
    for (key, bodies) in &local {
        assert_eq!(archive.get(key), Some(bodies), "{context}: {key:?} missing or changed in the archive");
    }
    for ((shard, seq), body) in acked.lock().unwrap().iter() {
        let key = (FOLLOWER_ID, *shard, *seq);
        assert_eq!(archive.get(&key), Some(&vec![body.clone()]), "{context}: acknowledged {key:?} not archived");
    }
    // The leader's watermarks agree with the follower's last seqs.
    let stats = get(&leader.url("/v1/stats")).json();
    let follower_stats = get(&follower.url("/v1/stats")).json();
    for shard in follower_stats["shards"].as_array().unwrap() {
        let last_seq = shard["last_seq"].as_u64().unwrap();
        if last_seq == 0 {
            continue;
        }
        let watermark = stats["watermarks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|pair| pair["follower_id"] == FOLLOWER_ID && pair["shard"] == shard["shard"])
            .unwrap_or_else(|| panic!("{context}: no watermark for shard {}: {stats}", shard["shard"]));
        assert_eq!(watermark["acked_seq"].as_u64(), Some(last_seq), "{context}: {watermark}");
    }
}

/// Posts `batches` batches of 50 entries and records what was acknowledged.
fn ingest(node: &TestNode, batches: usize, tag: &str, acked: &Acked) {
    for batch in 0..batches {
        let bodies: Vec<String> = (0..50).map(|index| format!("{tag} batch {batch} entry {index}")).collect();
        let entries: Vec<_> = bodies.iter().map(|body| (0, vec![("t", tag)], body.clone())).collect();
        let reply = post(&node.url("/v1/entries"), "application/x-ndjson", &ndjson(&entries));
        assert_eq!(reply.status, 200, "{}", reply.body);
        let answer = reply.json();
        let (shard, first) = (answer["shard"].as_u64().unwrap(), answer["first_seq"].as_u64().unwrap());
        let mut acked = acked.lock().unwrap();
        for (offset, body) in bodies.into_iter().enumerate() {
            acked.insert((shard, first + offset as u64), body);
        }
    }
}

/// Entries the writers get acknowledged before a fault, and again after it,
/// so that the fault strikes during ingest and ingest goes on after it,
/// however fast the machine is.
const ENTRIES_AROUND_FAULT: usize = 1000;

/// Runs writers against the follower while `fault` runs, then stops them.
fn under_load(url: String, acked: &Acked, round: usize, fault: impl FnOnce()) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = writers(url, 2, round, acked.clone(), stop.clone());
    let before = acked.lock().unwrap().len();
    wait_acked(acked, before + ENTRIES_AROUND_FAULT, Duration::from_secs(60));
    fault();
    let after = acked.lock().unwrap().len();
    wait_acked(acked, after + ENTRIES_AROUND_FAULT, Duration::from_secs(60));
    stop.store(true, Ordering::Release);
    for handle in handles {
        handle.join().unwrap();
    }
}

#[test]
fn a_follower_pushes_everything_once_and_the_leader_keeps_its_ids() {
    let dir = common::durable_temp_dir();
    let leader = start_leader(&dir.path().join("leader"));
    let follower = start_follower(&dir.path().join("follower"), &leader);
    let acked = Acked::default();
    ingest(&follower, 20, "basic", &acked);
    wait_drained(&follower, Duration::from_secs(60));
    assert_exact_archive(&leader, &follower, &acked, "basic");
    let metrics = get(&leader.url("/metrics")).body;
    assert!(metrics.contains("wormdb_archive_watermark{"), "{metrics}");
    let metrics = get(&follower.url("/metrics")).body;
    assert!(metrics.contains("wormdb_replication_lag_entries{"), "{metrics}");

    // Entry fields survive the push unchanged: the archived lines are the
    // follower's, fields and all, and `field=` finds them on the leader.
    let lines: String = (0..20)
        .map(|index| {
            let fields = if index % 2 == 0 {
                format!(r#","fields":{{"trace_id":"t-{index}","span":"s"}}"#)
            } else {
                String::new()
            };
            format!(
                "{{\"ts\":{},\"tags\":{{\"t\":\"fields\"}}{fields},\"body\":\"with fields {index}\"}}\n",
                100 + index
            )
        })
        .collect();
    let reply = post(&follower.url("/v1/entries"), "application/x-ndjson", lines.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.body);
    wait_drained(&follower, Duration::from_secs(60));
    let query = "/v1/entries?tag=t=fields&limit=100";
    let local = get(&follower.url(query)).lines();
    let archived = get(&leader.url(query)).lines();
    assert_eq!(local.len(), 20);
    assert_eq!(archived, local, "the archive holds the follower's entries, fields included");
    assert_eq!(archived[0]["fields"], serde_json::json!({"span": "s", "trace_id": "t-0"}));
    let found = get(&leader.url("/v1/entries?field=trace_id=t-4&field=span=s")).lines();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0]["node"].as_u64(), found[0]["body"].as_str()), (Some(FOLLOWER_ID), Some("with fields 4")));
}

#[test]
fn leader_sigkilled_and_restarted_during_ingest_archives_everything_exactly_once() {
    let dir = common::durable_temp_dir();
    let mut leader = start_leader(&dir.path().join("leader"));
    let follower = start_follower(&dir.path().join("follower"), &leader);
    let acked = Acked::default();
    for round in 0..2 {
        under_load(follower.url("/v1/entries"), &acked, round, || {
            // The leader stays down until the follower noticed: its
            // pushes fail and it reconnects.
            let ended = follower.log_count(SESSION_ENDED);
            leader.kill();
            follower.wait_for_log(SESSION_ENDED, ended, Duration::from_secs(60));
            leader.restart();
        });
    }
    wait_drained(&follower, Duration::from_secs(60));
    assert_exact_archive(&leader, &follower, &acked, "leader SIGKILL");
    // The restarted leader rebuilt its watermarks from its data and told
    // the follower where to resume.
    assert!(follower.log_text().contains("replication session up"), "{}", follower.log_text());
}

#[test]
fn leader_graceful_restart_during_ingest_archives_everything_exactly_once() {
    let dir = common::durable_temp_dir();
    let mut leader = start_leader(&dir.path().join("leader"));
    let follower = start_follower(&dir.path().join("follower"), &leader);
    let acked = Acked::default();
    under_load(follower.url("/v1/entries"), &acked, 0, || {
        assert_eq!(leader.terminate(), 0);
        leader.restart();
    });
    wait_drained(&follower, Duration::from_secs(60));
    assert_exact_archive(&leader, &follower, &acked, "leader SIGTERM");
}

#[test]
fn follower_sigkilled_and_restarted_resumes_from_the_leader_watermark() {
    let dir = common::durable_temp_dir();
    let leader = start_leader(&dir.path().join("leader"));
    let mut follower = start_follower(&dir.path().join("follower"), &leader);
    let acked = Acked::default();
    under_load(follower.url("/v1/entries"), &acked, 0, || {
        follower.kill();
        follower.restart();
    });
    wait_drained(&follower, Duration::from_secs(60));
    assert_exact_archive(&leader, &follower, &acked, "follower SIGKILL");
}

#[test]
fn follower_shutdown_drains_to_the_leader_and_a_lost_follower_is_restored() {
    let dir = common::durable_temp_dir();
    let leader = start_leader(&dir.path().join("leader"));
    let follower_dir = dir.path().join("follower");
    let mut follower = start_follower(&follower_dir, &leader);
    let acked = Acked::default();
    ingest(&follower, 40, "drain", &acked);
    let before = contents(&follower);
    // SIGTERM right after the last ack: shutdown pushes the rest.
    assert_eq!(follower.terminate(), 0);
    let archive: HashMap<_, _> =
        contents(&leader).into_iter().filter(|((node, _, _), _)| *node == FOLLOWER_ID).collect();
    assert_eq!(archive, before, "graceful shutdown drained everything to the leader");

    // The follower loses its disk: a push now would reuse seqs the leader
    // already has, so the pusher refuses until the node is restored.
    std::fs::remove_dir_all(&follower_dir).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wormdb"))
        .args(["restore", "--from", &leader.grpc_addr, "--follower-id", "2", "--shards", "2", "--data-dir"])
        .arg(&follower_dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "restore failed: {}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("shard 0: restored") && printed.contains("shard 1: restored"), "{printed}");
    let restored = start_follower(&follower_dir, &leader);
    assert_eq!(contents(&restored), before, "restore brings back every entry under its original id");
    // And it carries on: new entries continue the seqs and reach the leader.
    ingest(&restored, 5, "after-restore", &acked);
    wait_drained(&restored, Duration::from_secs(60));
    assert_exact_archive(&leader, &restored, &acked, "after restore");
}

#[test]
fn a_follower_that_lost_its_data_does_not_push_over_the_archive() {
    let dir = common::durable_temp_dir();
    let leader = start_leader(&dir.path().join("leader"));
    let follower_dir = dir.path().join("follower");
    let mut first = start_follower(&follower_dir, &leader);
    let acked = Acked::default();
    ingest(&first, 4, "lost", &acked);
    wait_drained(&first, Duration::from_secs(60));
    first.kill();
    std::fs::remove_dir_all(&follower_dir).unwrap();
    let second = start_follower(&follower_dir, &leader);
    ingest(&second, 1, "reused-seqs", &Acked::default());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !second.log_text().contains("wormdb restore") {
        assert!(Instant::now() < deadline, "no refusal logged:\n{}", second.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The archive still holds the first follower's entries, untouched.
    let archive = contents(&leader);
    for ((shard, seq), body) in acked.lock().unwrap().iter() {
        assert_eq!(archive.get(&(FOLLOWER_ID, *shard, *seq)), Some(&vec![body.clone()]));
    }
}
