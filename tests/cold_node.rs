//! `wormdb serve --cold-after 0s`: a running node rewrites its sealed
//! segments with zstd in the background while it takes writes, answers
//! queries the same before and after, reports the rewrite in `/v1/stats`
//! and `/metrics` (with `disk_bytes` the rewritten size), and `wormdb
//! inspect` shows the cold segments. `tests/cold_compression.rs` tests the
//! rewrite itself (crashes, readers, the follower's veto).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::node::{get, ndjson, post, TestNode};

/// 2020-09-13T12:26:40Z: old enough for any `--cold-after`.
const TS_BASE: i64 = 1_600_000_000_000_000_000;
const BATCH: usize = 2000;

fn shard_stats(node: &TestNode) -> serde_json::Value {
    node.get_or_log("/v1/stats").json()["shards"][0].clone()
}

/// The bodies of the entries tagged `batch=BATCH_INDEX`, in seq order.
fn batch_bodies(node: &TestNode, batch: usize) -> Vec<String> {
    let reply = get(&node.url(&format!("/v1/entries?tag=batch={batch}&limit={}", BATCH + 1)));
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.lines().iter().map(|entry| entry["body"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_node_rewrites_its_sealed_segments_and_answers_the_same() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(
        dir.path(),
        &["--shards", "1", "--segment-bytes", "4MiB", "--cold-codec", "zstd", "--cold-after", "0s"],
    );
    let lines = common::loghub_all();
    let mut sent: Vec<Vec<String>> = Vec::new();
    // Until three segments are sealed.
    while shard_stats(&node)["segments"].as_u64().unwrap() < 4 {
        let batch = sent.len();
        let tag = batch.to_string();
        let entries: Vec<_> = (0..BATCH)
            .map(|index| {
                let (source, line) = &lines[(batch * BATCH + index) % lines.len()];
                let ts = TS_BASE + (batch * BATCH + index) as i64;
                (ts, vec![("source", *source), ("batch", tag.as_str())], line.clone())
            })
            .collect();
        let reply = post(&node.url("/v1/entries"), "application/x-ndjson", &ndjson(&entries));
        assert_eq!(reply.status, 200, "{}", reply.body);
        sent.push(entries.into_iter().map(|(_, _, body)| body).collect());
    }
    // The rewrite runs after each roll; wait until the three are done.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stats = loop {
        let stats = shard_stats(&node);
        if stats["cold"]["segments"].as_u64().unwrap() >= 3 {
            break stats;
        }
        assert!(Instant::now() < deadline, "no rewrite within 60 s: {stats}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let cold = &stats["cold"];
    assert_eq!(cold["failures"], 0);
    let (before, after) = (cold["block_bytes_before"].as_u64().unwrap(), cold["block_bytes_after"].as_u64().unwrap());
    assert!(after * 3 < before * 2, "zstd saves a third at least: {cold}");
    // disk_bytes is what is on disk now: the three rewritten segments and the active one.
    let (raw, disk) = (stats["raw_bytes"].as_u64().unwrap(), stats["disk_bytes"].as_u64().unwrap());
    assert!(disk < before, "{stats}");
    assert!(raw > 6 * disk, "raw {raw} / disk {disk}");
    for batch in [0, sent.len() / 2, sent.len() - 1] {
        assert_eq!(batch_bodies(&node, batch), sent[batch], "batch {batch}");
    }
    let metrics = node.get_or_log("/metrics").body;
    let line = metrics.lines().find(|line| line.starts_with("wormdb_cold_segments_total{")).unwrap();
    assert!(line.ends_with(" 3") || line.ends_with(" 4"), "{line}");
    assert!(metrics.contains("wormdb_cold_block_bytes_after_total{"), "{metrics}");

    // inspect, beside the running node, sees them cold.
    let output = Command::new(env!("CARGO_BIN_EXE_wormdb")).arg("inspect").arg(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.matches("cold: rewritten with zstd").count() >= 3, "{text}");
}
