//! Durability through the whole server: concurrent HTTP writers, the node
//! SIGKILLed at a random moment, restarted, and every acknowledged entry
//! checked (same shard, same seq, same body), with dense per-shard seqs;
//! several rounds. And a graceful shutdown under load that loses nothing
//! acknowledged.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::node::{get, ndjson, try_post, wait_acked, writers, Acked, TestNode};
use rand::{Rng, SeedableRng};

/// Checks that the node holds every acknowledged entry and dense seqs.
fn verify(node: &TestNode, acked: &Acked, context: &str) {
    let stats = get(&node.url("/v1/stats")).json();
    let total: u64 = stats["shards"].as_array().unwrap().iter().map(|shard| shard["entries"].as_u64().unwrap()).sum();
    let reply = get(&node.url(&format!("/v1/entries?limit={}", total.max(1))));
    assert_eq!(reply.status, 200);
    let mut stored: HashMap<(u64, u64), String> = HashMap::new();
    let mut per_shard: HashMap<u64, Vec<u64>> = HashMap::new();
    for entry in reply.lines() {
        let key = (entry["shard"].as_u64().unwrap(), entry["seq"].as_u64().unwrap());
        per_shard.entry(key.0).or_default().push(key.1);
        stored.insert(key, entry["body"].as_str().unwrap().to_string());
    }
    for (shard, seqs) in per_shard.iter_mut() {
        seqs.sort();
        assert!(
            seqs.iter().enumerate().all(|(index, seq)| *seq == index as u64 + 1),
            "{context}: shard {shard} seqs not dense"
        );
    }
    let acked = acked.lock().unwrap();
    for (key, body) in acked.iter() {
        assert_eq!(stored.get(key), Some(body), "{context}: acknowledged entry {key:?} lost or changed");
    }
}

#[test]
fn sigkill_under_concurrent_http_writes_loses_nothing_acknowledged() {
    let dir = common::durable_temp_dir();
    let mut node = TestNode::start(dir.path(), &["--shards", "2", "--segment-bytes", "4194304"]);
    let acked: Acked = Default::default();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0xdead_beef);
    for round in 0..4 {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = writers(node.url("/v1/entries"), 6, round, acked.clone(), stop.clone());
        // Kill once this round's writers are getting through (a restart
        // recovers the previous rounds first), at a random moment after that.
        let before = acked.lock().unwrap().len();
        wait_acked(&acked, before + 1, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(rng.gen_range(500..2000)));
        node.kill();
        stop.store(true, Ordering::Release);
        for handle in handles {
            handle.join().unwrap();
        }
        node.restart();
        verify(&node, &acked, &format!("round {round}"));
    }
    assert!(acked.lock().unwrap().len() > 1000, "the writers got through");
}

#[test]
fn graceful_shutdown_under_load_loses_nothing_acknowledged() {
    let dir = common::durable_temp_dir();
    let mut node = TestNode::start(dir.path(), &["--shards", "2"]);
    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let handles = writers(node.url("/v1/entries"), 6, 0, acked.clone(), stop.clone());
    // SIGTERM once the writers are well under way; they go on writing
    // while the node shuts down.
    wait_acked(&acked, 1000, Duration::from_secs(60));
    assert_eq!(node.terminate(), 0, "clean exit on SIGTERM:\n{}", node.log_text());
    stop.store(true, Ordering::Release);
    let statuses: Vec<u16> = handles.into_iter().flat_map(|handle| handle.join().unwrap()).collect();
    assert!(statuses.iter().all(|status| [0, 200, 503].contains(status)), "{statuses:?}");
    assert!(node.log_text().contains("shard closed"));
    node.restart();
    verify(&node, &acked, "after SIGTERM");
}

#[test]
fn disk_full_answers_507_and_ingest_resumes_once_space_is_freed() {
    let root = common::durable_temp_dir();
    let mount = common::loopfs::LoopMount::new(root.path(), 96 * 1024 * 1024);
    let data_dir = mount.mount_point.join("data");
    let ballast = mount.mount_point.join("ballast");
    // One shard; room for the first 16 MiB segment and part of a second.
    let free = common::loopfs::free_bytes(&mount.mount_point);
    std::fs::write(&ballast, vec![0x5a; (free - 24 * 1024 * 1024) as usize]).unwrap();
    let node = TestNode::start(&data_dir, &["--shards", "1", "--segment-bytes", "16777216"]);
    let lines = common::loghub_lines("Linux");
    let mut acked = 0u64;
    let mut statuses = Vec::new();
    for batch in 0..2000 {
        let entries: Vec<_> = (0..500)
            .map(|index| {
                (0, vec![], format!("{batch}-{index} {:x} {}", batch * 7919 + index, lines[index % lines.len()]))
            })
            .collect();
        let reply = try_post(&node.url("/v1/entries"), "application/x-ndjson", &ndjson(&entries)).unwrap();
        statuses.push(reply.status);
        if reply.status == 507 {
            assert!(reply.json()["error"].as_str().unwrap().contains("disk full"), "{}", reply.body);
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        acked += 500;
    }
    assert_eq!(statuses.last(), Some(&507), "never ran out of space");
    assert_eq!(get(&node.url("/healthz")).status, 200);
    let entries = |node: &TestNode| get(&node.url("/v1/stats")).json()["shards"][0]["entries"].as_u64().unwrap();
    assert_eq!(entries(&node), acked, "the refused request stored nothing");
    std::fs::remove_file(&ballast).unwrap();
    let reply =
        try_post(&node.url("/v1/entries"), "application/x-ndjson", &ndjson(&[(0, vec![], "after".into())])).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(entries(&node), acked + 1);
    drop(node);
    drop(mount);
}
