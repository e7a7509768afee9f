//! The archive tier (DESIGN.md section 9) with real processes on loopback:
//! three members with two shards each (two Raft groups), a follower pushing
//! under HTTP load. After every fault — the node leading most groups
//! SIGKILLed and restarted again and again, a leader SIGSTOPped past its
//! election timeout, two of three members down, every member restarted at
//! once — every member's archive must equal the follower's log exactly
//! (each (follower, shard, seq) once, same bodies), the watermarks agree,
//! and the lag drains to zero. Direct writes to the tier under leader kills
//! keep every acknowledged write exactly once on every member. Bad peer
//! input is refused and counted, and changes nothing. Every member indexes
//! the pushed blocks as their leader does (tag sets and word filters).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::node::{contents, get, ndjson, post, wait_acked, wait_drained, writers, Acked, TestNode};
use common::tier::{assert_archives_equal_the_log, start_follower, under_load, Tier, CONVERGE};

#[test]
fn the_archive_survives_its_leaders_being_killed_again_and_again() {
    let dir = common::durable_temp_dir();
    let mut tier = Tier::start(dir.path());
    let follower = start_follower(&dir.path().join("follower"), &tier);
    let acked: Acked = Default::default();
    tier.wait_converged("start");
    for round in 0..5 {
        under_load(&follower, &acked, round, || {
            let victim = tier.busiest_leader();
            tier.nodes[victim].kill();
            // The others elect new leaders for its groups, and pushes go on.
            tier.nodes[victim].restart();
        });
        assert_archives_equal_the_log(&tier, &follower, &acked, &format!("after kill {}", round + 1));
    }
    // A restarted replica never trips raft-rs's "applied out of range".
    for member in &tier.nodes {
        assert!(!member.log_text().contains("panicked"), "{}", member.log_text());
    }
}

/// Blocks `node` read, summed over its shards.
fn blocks_read(node: &TestNode) -> u64 {
    let stats = get(&node.url("/v1/stats")).json();
    stats["shards"].as_array().unwrap().iter().map(|shard| shard["blocks_read"].as_u64().unwrap()).sum()
}

#[test]
fn every_member_prunes_pushed_blocks_by_tag_set_and_word_as_the_leader() {
    let dir = common::durable_temp_dir();
    let tier = Tier::start(dir.path());
    let follower = start_follower(&dir.path().join("follower"), &tier);
    tier.wait_converged("start");
    // One request after the other, so each is a block of its own on the
    // follower, pushed as it is stored: two entries whose tag sets cross
    // (a=x, b=x and a=y, b=y), the first with a word no other block has.
    const REQUESTS: usize = 12;
    for request in 0..REQUESTS {
        let (x, y) = (format!("x{request}"), format!("y{request}"));
        let entries = [
            (0, vec![("a", x.as_str()), ("b", x.as_str())], format!("request needle{request}q served")),
            (0, vec![("a", y.as_str()), ("b", y.as_str())], "request served".to_owned()),
        ];
        let reply = post(&follower.url("/v1/entries"), "application/x-ndjson", &ndjson(&entries));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    wait_drained(&follower, CONVERGE);
    tier.wait_converged("pushed");
    // Every member holds every block, and its index answers as the leader's
    // (which checked each block entry by entry): the word is in one block
    // only, and no block holds an entry of both x7 and y7, though block 7
    // holds both pairs (its union would make it a candidate).
    for member in tier.running() {
        let query = |query: &str| {
            let before = blocks_read(member);
            let lines = get(&member.url(&format!("/v1/entries?{query}"))).lines();
            (lines.len(), blocks_read(member) - before)
        };
        let all = get(&member.url("/v1/entries?tag=b=y3")).lines();
        assert_eq!(all.len(), 1, "{}: the archive holds the pushed entries", member.base);
        assert_eq!(query("q=needle7q"), (1, 1), "{}: q= reads only the block of the word", member.base);
        assert_eq!(query("tag=a=x7&tag=b=y7"), (0, 0), "{}: no tag set holds both pairs", member.base);
        assert_eq!(query("tag=a=x7&tag=b=x7"), (1, 1), "{}", member.base);
    }
}

#[test]
fn a_stopped_leader_steps_down_and_a_lost_quorum_only_delays_the_archive() {
    let dir = common::durable_temp_dir();
    let mut tier = Tier::start(dir.path());
    let follower = start_follower(&dir.path().join("follower"), &tier);
    let acked: Acked = Default::default();
    tier.wait_converged("start");

    // SIGSTOP the busiest leader past its election timeout: the others
    // elect new leaders; once it runs again it learns the newer terms and
    // follows. No two members ever lead one group in one term.
    under_load(&follower, &acked, 0, || {
        let victim = tier.busiest_leader();
        let led: Vec<u64> = tier
            .group_leaders()
            .into_iter()
            .filter(|(_, leader)| *leader == victim as u64 + 1)
            .map(|(g, _)| g)
            .collect();
        tier.nodes[victim].signal(libc::SIGSTOP);
        let deadline = Instant::now() + CONVERGE;
        loop {
            let others: Vec<&TestNode> =
                tier.nodes.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, n)| n).collect();
            let view = get(&others[0].url("/v1/cluster")).json();
            let moved = view["groups"].as_array().unwrap().iter().all(|group| {
                !led.contains(&group["group"].as_u64().unwrap()) || group["leader"].as_u64() != Some(victim as u64 + 1)
            });
            if moved {
                break;
            }
            assert!(Instant::now() < deadline, "no new leader while node {} is stopped: {view}", victim + 1);
            std::thread::sleep(Duration::from_millis(50));
        }
        tier.nodes[victim].signal(libc::SIGCONT);
    });
    assert_archives_equal_the_log(&tier, &follower, &acked, "after SIGSTOP");
    let mut leaders_by_term: HashMap<(u64, u64), u64> = HashMap::new();
    for member in &tier.nodes {
        for line in member.log_text().lines().filter(|line| line.contains(" leads in term ")) {
            // "group G: node L leads in term T"
            let words: Vec<&str> = line.split_whitespace().collect();
            let position = words.iter().position(|word| *word == "leads").unwrap();
            let leader: u64 = words[position - 1].parse().unwrap();
            let term: u64 = words[position + 3].parse().unwrap();
            let group: u64 = words[position - 3].trim_end_matches(':').parse().unwrap();
            let known = *leaders_by_term.entry((group, term)).or_insert(leader);
            assert_eq!(known, leader, "two leaders of group {group} in term {term}");
        }
    }

    // Two of three down: pushes are refused, the follower keeps taking
    // writes (its log is the queue) and its lag grows; once they are back
    // it drains, exactly once.
    let stop = Arc::new(AtomicBool::new(false));
    tier.nodes[1].kill();
    tier.nodes[2].kill();
    let handles = writers(follower.url("/v1/entries"), 2, 1, acked.clone(), stop.clone());
    let before = acked.lock().unwrap().len();
    wait_acked(&acked, before + 500, CONVERGE);
    let stats = get(&follower.url("/v1/stats")).json();
    let lag: u64 = stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|shard| shard["replication"]["lag_entries"].as_u64().unwrap())
        .sum();
    assert!(lag >= 500, "the follower's lag grows without a quorum: {stats}");
    // check_quorum: a leader that hears from no quorum for an election
    // timeout steps down.
    let deadline = Instant::now() + CONVERGE;
    loop {
        let cluster = get(&tier.nodes[0].url("/v1/cluster")).json();
        if cluster["groups"].as_array().unwrap().iter().all(|group| group["role"] != "leader") {
            break;
        }
        assert!(Instant::now() < deadline, "a lone member still leads: {cluster}");
        std::thread::sleep(Duration::from_millis(50));
    }
    tier.nodes[1].restart();
    tier.nodes[2].restart();
    stop.store(true, Ordering::Release);
    for handle in handles {
        handle.join().unwrap();
    }
    assert_archives_equal_the_log(&tier, &follower, &acked, "after two of three came back");

    // Every member restarted at once.
    for member in &mut tier.nodes {
        member.kill();
    }
    for member in &mut tier.nodes {
        member.restart();
    }
    under_load(&follower, &acked, 2, || {});
    assert_archives_equal_the_log(&tier, &follower, &acked, "after restarting everyone");
}

#[test]
fn direct_writes_to_the_tier_survive_a_leader_kill_exactly_once() {
    let dir = common::durable_temp_dir();
    let mut tier = Tier::start(dir.path());
    tier.wait_converged("start");
    let acked: Acked = Default::default();
    // Writers on a member that is not killed: its cores forward to the
    // groups' leaders, wherever they are.
    let victim = tier.busiest_leader();
    let writer_node = (victim + 1) % 3;
    let stop = Arc::new(AtomicBool::new(false));
    let handles = writers(tier.nodes[writer_node].url("/v1/entries"), 2, 0, acked.clone(), stop.clone());
    wait_acked(&acked, 500, CONVERGE);
    tier.nodes[victim].kill();
    let after = acked.lock().unwrap().len();
    wait_acked(&acked, after + 500, CONVERGE);
    tier.nodes[victim].restart();
    stop.store(true, Ordering::Release);
    let statuses: Vec<u16> = handles.into_iter().flat_map(|handle| handle.join().unwrap()).collect();
    assert!(statuses.iter().all(|status| [200, 429, 503].contains(status)), "{statuses:?}");
    tier.wait_converged("after the kill");

    let mut first: Option<HashMap<(u64, u64, u64), Vec<String>>> = None;
    for member in &tier.nodes {
        let held = contents(member);
        for (key, bodies) in &held {
            assert_eq!(key.0, 0, "direct writes have node id 0: {key:?}");
            assert_eq!(bodies.len(), 1, "{key:?} stored {} times on {}", bodies.len(), member.base);
        }
        for ((group, seq), body) in acked.lock().unwrap().iter() {
            assert_eq!(held.get(&(0, *group, *seq)), Some(&vec![body.clone()]), "acknowledged ({group}, {seq}) lost");
        }
        // Each group's seqs are dense from 1.
        for group in 0..2u64 {
            let seqs: Vec<u64> = {
                let mut seqs: Vec<u64> = held.keys().filter(|(_, g, _)| *g == group).map(|(_, _, seq)| *seq).collect();
                seqs.sort_unstable();
                seqs
            };
            assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "group {group} on {}", member.base);
        }
        match &first {
            None => first = Some(held),
            Some(first) => assert_eq!(first, &held, "members differ"),
        }
    }
}

/// Sends one `RaftBatch` on a `WormRaft.Send` stream and returns the
/// status the member ends the stream with.
async fn send_raft(addr: std::net::SocketAddr, batch: wormdb::proto::RaftBatch) -> wormdb::grpc::status::Status {
    let channel = wormdb::grpc::transport::Channel::connect(addr, Duration::from_secs(5)).await.unwrap();
    let mut call = channel.start("/wormdb.v1.WormRaft/Send", Some(Duration::from_secs(5))).await.unwrap();
    let _ = call.send(&batch).await;
    let _ = call.close_send().await;
    match call.next::<wormdb::proto::RaftAck>().await {
        Ok(_) => wormdb::grpc::status::Status::ok(),
        Err(status) => status,
    }
}

fn refused_messages(node: &TestNode) -> u64 {
    get(&node.url("/metrics"))
        .body
        .lines()
        .filter(|line| line.starts_with("wormdb_raft_refused_messages_total{"))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn bad_peer_input_is_refused_counted_and_changes_nothing() {
    use protobuf::Message as _;
    use wormdb::grpc::status::Code;
    use wormdb::proto::{PushBatch, RaftBatch, SnapshotChunk};

    let dir = common::durable_temp_dir();
    let tier = Tier::start(dir.path());
    tier.wait_converged("start");
    let target = &tier.nodes[0];
    let reply = common::node::post(&target.url("/v1/entries"), "application/x-ndjson", b"{\"body\":\"before\"}\n");
    assert_eq!(reply.status, 200, "{}", reply.body);
    tier.wait_converged("after a write");
    let before = contents(target);
    let addr: std::net::SocketAddr = tier.grpc[0].parse().unwrap();

    // A message that would be valid from a member: a heartbeat of a huge
    // term, which would depose every leader if it were stepped.
    let mut heartbeat = raft::prelude::Message::default();
    heartbeat.set_msg_type(raft::prelude::MessageType::MsgHeartbeat);
    heartbeat.from = 42;
    heartbeat.to = 1;
    heartbeat.term = 1_000_000;
    let heartbeat_bytes: bytes::Bytes = heartbeat.write_to_bytes().unwrap().into();
    let statuses = common::run(move || async move {
        let mut statuses = Vec::new();
        // From a node that is not a member.
        statuses.push(
            send_raft(addr, RaftBatch { group: 0, from: 42, to: 1, messages: vec![heartbeat_bytes.clone()] }).await,
        );
        // Garbage claiming to come from member 2.
        statuses.push(
            send_raft(
                addr,
                RaftBatch { group: 0, from: 2, to: 1, messages: vec![bytes::Bytes::from_static(b"\xff\xff\xff\x01")] },
            )
            .await,
        );
        // A group this node does not have.
        statuses.push(send_raft(addr, RaftBatch { group: 7, from: 2, to: 1, messages: vec![] }).await);
        // A snapshot chunk whose crc is wrong.
        let batch = PushBatch {
            durable_seq: 0,
            follower_id: 5,
            shard: 0,
            entries: vec![wormdb::proto::LogEntry { seq: 1, body: "forged".into(), ..Default::default() }],
            blocks: vec![],
        };
        let batch = prost::Message::encode_to_vec(&batch);
        let crc32 = crc32fast::hash(&batch) ^ 1;
        let channel = wormdb::grpc::transport::Channel::connect(addr, Duration::from_secs(5)).await.unwrap();
        let mut call = channel.start("/wormdb.v1.WormRaft/Snapshot", Some(Duration::from_secs(5))).await.unwrap();
        let _ = call.send(&SnapshotChunk { group: 0, from: 2, batch: batch.into(), crc32, ..Default::default() }).await;
        let _ = call.close_send().await;
        statuses.push(match call.next::<wormdb::proto::RaftAck>().await {
            Ok(_) => wormdb::grpc::status::Status::ok(),
            Err(status) => status,
        });
        statuses
    });
    let codes: Vec<Code> = statuses.iter().map(|status| status.code).collect();
    assert_eq!(
        codes,
        vec![Code::PermissionDenied, Code::InvalidArgument, Code::InvalidArgument, Code::InvalidArgument],
        "{statuses:?}"
    );
    assert!(refused_messages(target) >= 3, "refusals are counted");
    // A write larger than one proposal holds is refused whole (written, it
    // would be a Raft log record too long to read back).
    let line = format!("{{\"body\":\"{}\"}}\n", "x".repeat(300));
    let big = line.repeat((wormdb::limits::PROPOSAL_BYTES_MAX / 300) + 1000);
    let reply = common::node::post(&target.url("/v1/entries"), "application/x-ndjson", big.as_bytes());
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.body.contains("PROPOSAL_BYTES_MAX"), "{}", reply.body);
    assert!(target.log_text().contains("raft messages refused"), "refusals are logged");
    // Nothing applied: no term jump, no forged entry; the tier still works.
    let cluster = get(&target.url("/v1/cluster")).json();
    assert!(cluster["groups"].as_array().unwrap().iter().all(|group| group["term"].as_u64().unwrap() < 1_000_000));
    assert_eq!(contents(target), before);
    let reply = common::node::post(&target.url("/v1/entries"), "application/x-ndjson", b"{\"body\":\"after\"}\n");
    assert_eq!(reply.status, 200, "{}", reply.body);

    // `wormdb cluster status` shows the same tier, as JSON and as a table.
    let status = |json: bool| -> String {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_wormdb"));
        command.args(["cluster", "status", "--to", &tier.grpc[1]]);
        if json {
            command.arg("--json");
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let document: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
    assert_eq!(document["node_id"], 2);
    assert_eq!(document["members"].as_array().unwrap().len(), 3);
    assert_eq!(document["groups"].as_array().unwrap().len(), 2);
    for key in ["group", "leader", "term", "commit", "applied", "role"] {
        assert!(document["groups"][0].get(key).is_some(), "{key} in {document}");
    }
    let table = status(false);
    assert!(table.contains("member of a tier of 3") && table.contains("GROUP"), "{table}");
}

fn metric_sum(node: &TestNode, name: &str) -> u64 {
    get(&node.url("/metrics"))
        .body
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn members_killed_mid_apply_replay_nothing_twice() {
    // Any member, leader or not, killed while it applies (its appends
    // durable, the state machine not yet persisted), with a log of 8
    // entries so a restarted member often comes back by snapshot, and a
    // follower whose window of pushes meets leader changes (gaps refused).
    // A replica that admitted an entry again against a later state would
    // hold entries the others lack, or ack past them.
    let dir = common::durable_temp_dir();
    let mut tier = Tier::start_with(dir.path(), &["--raft-log-entries", "8"]);
    let follower = start_follower(&dir.path().join("follower"), &tier);
    let acked: Acked = Default::default();
    tier.wait_converged("start");
    let stop = Arc::new(AtomicBool::new(false));
    let handles = writers(follower.url("/v1/entries"), 2, 0, acked.clone(), stop.clone());
    for round in 0..8usize {
        let victim = (round * 7 + round / 3) % 3;
        let before = acked.lock().unwrap().len();
        wait_acked(&acked, before + 100 + (round % 3) * 150, CONVERGE);
        tier.nodes[victim].kill();
        // The other two keep a quorum: ingest and archiving go on.
        let after = acked.lock().unwrap().len();
        wait_acked(&acked, after + 200, CONVERGE);
        tier.nodes[victim].restart();
    }
    stop.store(true, Ordering::Release);
    for handle in handles {
        handle.join().unwrap();
    }
    assert_archives_equal_the_log(&tier, &follower, &acked, "after 8 kills");
    for member in &tier.nodes {
        assert!(!member.log_text().contains("panicked"), "{}", member.log_text());
    }
}

#[test]
fn a_member_too_far_behind_catches_up_by_snapshot() {
    // A log of 8 entries behind the applied index: a member that misses
    // more than that can only come back through a snapshot.
    let dir = common::durable_temp_dir();
    let mut tier = Tier::start_with(dir.path(), &["--raft-log-entries", "8"]);
    let follower = start_follower(&dir.path().join("follower"), &tier);
    let acked: Acked = Default::default();
    tier.wait_converged("start");
    let lagging = (tier.busiest_leader() + 1) % 3;
    under_load(&follower, &acked, 0, || tier.nodes[lagging].kill());
    // Direct writes too, so the snapshot carries the tier's own range.
    let writer = (lagging + 1) % 3;
    for index in 0..40 {
        let body = format!("{{\"body\":\"direct {index}\"}}\n");
        // The killed member may have led a group: until the others elect,
        // a write is refused unproposed (503, no leader known), and a
        // client tries again.
        let deadline = Instant::now() + CONVERGE;
        loop {
            let reply =
                common::node::post(&tier.nodes[writer].url("/v1/entries"), "application/x-ndjson", body.as_bytes());
            if reply.status == 503 && reply.body.contains("no leader known") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            assert_eq!(reply.status, 200, "{}", reply.body);
            break;
        }
    }
    tier.nodes[lagging].restart();
    assert_archives_equal_the_log(&tier, &follower, &acked, "after the snapshot");
    assert!(
        metric_sum(&tier.nodes[lagging], "wormdb_raft_snapshots_installed_total") > 0,
        "the member came back by snapshot:\n{}",
        tier.nodes[lagging].log_text()
    );
    let direct = |node: &TestNode| -> HashMap<(u64, u64, u64), Vec<String>> {
        contents(node).into_iter().filter(|((origin, _, _), _)| *origin == 0).collect()
    };
    assert_eq!(direct(&tier.nodes[lagging]), direct(&tier.nodes[writer]), "direct writes after the snapshot");
    assert_eq!(direct(&tier.nodes[lagging]).len(), 40);
}
