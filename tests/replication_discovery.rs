//! Leader discovery, client side, between real processes: a follower
//! started with `--leader DEAD,REPLICA` (an address nobody listens on, then
//! a replica that leads nothing and names the leader, which is in neither)
//! rotates past the dead address, follows the replica's hint to the leader,
//! logs the switch once per shard, and pushes everything exactly once.
//! Then `wormdb restore --from DEAD,REPLICA` finds the leader the same way
//! and rebuilds the lost follower.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::node::{get, ndjson, post, wait_drained, TestNode};
use common::not_leader;
use wormdb::grpc::status::LeaderHint;

const FOLLOWER_ID: u64 = 2;
const TERM: u64 = 3;
/// What the follower (and restore) log when a hint moves them.
const FOLLOWING: &str = "following the leader hint";

/// An address nothing listens on: connecting to it is refused.
fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// (shard, seq) → body of every entry `node` holds of node `origin`.
fn entries_of(node: &TestNode, origin: u64) -> BTreeMap<(u64, u64), String> {
    let reply = get(&node.url("/v1/entries?limit=10000"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply
        .lines()
        .into_iter()
        .filter(|entry| entry["node"].as_u64() == Some(origin))
        .map(|entry| {
            let key = (entry["shard"].as_u64().unwrap(), entry["seq"].as_u64().unwrap());
            (key, entry["body"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn a_follower_and_restore_find_the_leader_by_rotation_and_hint() {
    let dir = common::durable_temp_dir();
    let leader = TestNode::start(&dir.path().join("leader"), &["--node-id", "1", "--shards", "2"]);
    let replica = not_leader::start(Some(LeaderHint { leader_id: 1, addr: leader.grpc_addr.clone(), term: TERM }));
    let leaders = format!("{}, {}", dead_addr(), replica.addr);
    let follower_dir = dir.path().join("follower");
    let args = ["--node-id", "2", "--shards", "2", "--leader", leaders.as_str()];
    let mut follower = TestNode::start(&follower_dir, &args);

    for batch in 0..10 {
        let entries: Vec<_> =
            (0..20).map(|index| (0, vec![("t", "hint")], format!("batch {batch} entry {index}"))).collect();
        let reply = post(&follower.url("/v1/entries"), "application/x-ndjson", &ndjson(&entries));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let stats = wait_drained(&follower, Duration::from_secs(60));
    let local = entries_of(&follower, FOLLOWER_ID);
    assert_eq!(local.len(), 200);
    assert_eq!(entries_of(&leader, FOLLOWER_ID), local, "the leader archived every entry once, under its id");

    // Where each pusher ended up, and the one line per switch.
    for shard in stats["shards"].as_array().unwrap() {
        assert_eq!(shard["replication"]["leader_addr"].as_str(), Some(leader.grpc_addr.as_str()), "{stats}");
    }
    assert_eq!(stats["follower"]["leader"].as_str().unwrap().split(',').count(), 2, "{stats}");
    let switches: Vec<String> =
        follower.log_text().lines().filter(|line| line.contains(FOLLOWING)).map(str::to_owned).collect();
    assert_eq!(switches.len(), 2, "one switch per shard: {switches:#?}");
    for line in &switches {
        let expected = [format!("from={}", replica.addr), format!("to={}", leader.grpc_addr), format!("term={TERM}")];
        assert!(expected.iter().all(|part| line.contains(part.as_str())), "{line}");
    }
    assert!(replica.calls() >= 2, "each pusher asked the replica first");

    // The follower loses its disk; restore goes through the same list.
    assert_eq!(follower.terminate(), 0);
    std::fs::remove_dir_all(&follower_dir).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wormdb"))
        .args(["restore", "--from", &leaders, "--follower-id", "2", "--shards", "2", "--data-dir"])
        .arg(&follower_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "restore failed: {stderr}");
    assert_eq!(stderr.matches(FOLLOWING).count(), 2, "one switch per shard: {stderr}");
    let restored = TestNode::start(&follower_dir, &args);
    assert_eq!(entries_of(&restored, FOLLOWER_ID), local, "restore brings back every entry under its id");
}

#[test]
fn restore_gives_up_with_a_clear_error_when_no_address_answers() {
    let dir = common::durable_temp_dir();
    // A replica that knows no leader (an election that never ends) and a dead address.
    let replica = not_leader::start(None);
    let from = format!("{},{}", replica.addr, dead_addr());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wormdb"))
        .args(["restore", "--from", &from, "--follower-id", "2", "--shards", "1", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("shard 0: gave up after"), "{stderr}");
    assert!(stderr.contains("RESTORE_ATTEMPTS_MAX") && stderr.contains(&from), "{stderr}");
    assert!(replica.calls() >= 2, "rotation came back to the replica");
}
