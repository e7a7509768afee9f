//! Unsafe recovery with real processes on loopback (DESIGN.md section 9,
//! `wormdb cluster recover`): a three-member tier (two Raft groups) takes a
//! follower's pushes under HTTP load; all three are SIGKILLed and two data
//! directories deleted (a quorum lost for good). `cluster recover` makes the
//! survivor the only member; restarted alone (with the same `--peers`,
//! ignored: its persisted membership wins), it leads every group, the
//! follower drains to it, and its archive equals the follower's log exactly:
//! what the survivor lacked is pushed again, nothing twice; two fresh nodes
//! then join it under load and end with the same archive. Before that,
//! while the tier runs, a second `serve` on a member's data directory and
//! `cluster recover` on it are both refused, and change nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::node::{contents, free_port, get, wait_acked, wait_drained, Acked, TestNode};
use common::tier::{group_leaders, under_load};

const FOLLOWER_ID: u64 = 9;
const SHARDS: &str = "2";
/// How long anything here may take to converge: generous, for a debug
/// build of four nodes sharing two cores.
const CONVERGE: Duration = Duration::from_secs(120);

fn wormdb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wormdb")).args(args).env("RUST_LOG", "warn").output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits until every group has a leader that every node in `nodes` agrees on.
fn wait_leaders(nodes: &[&TestNode], context: &str) -> BTreeMap<u64, u64> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let views: Vec<BTreeMap<u64, u64>> = nodes.iter().map(|node| group_leaders(node)).collect();
        if views[0].len() == 2 && views[0].values().all(|&leader| leader != 0) && views.iter().all(|v| *v == views[0]) {
            return views[0].clone();
        }
        assert!(Instant::now() < deadline, "{context}: no agreed leaders: {views:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The follower's entries `member` archived, by id (more than one body: a
/// duplicate).
fn archive(member: &TestNode) -> HashMap<(u64, u64, u64), Vec<String>> {
    contents(member).into_iter().filter(|((node, _, _), _)| *node == FOLLOWER_ID).collect()
}

/// Waits until `member`'s archive is exactly the follower's log (every
/// entry once, same bodies) and holds every acknowledged entry.
fn assert_archive_equals_the_log(member: &TestNode, follower: &TestNode, acked: &Acked, context: &str) {
    wait_drained(follower, CONVERGE);
    let deadline = Instant::now() + CONVERGE;
    let log = contents(follower);
    loop {
        let archived = archive(member);
        for (key, bodies) in &archived {
            assert_eq!(bodies.len(), 1, "{context}: {key:?} archived {} times", bodies.len());
        }
        if archived == log {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: the archive ({} entries) never equalled the follower's log ({} entries)\n{}",
            archived.len(),
            log.len(),
            member.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for ((shard, seq), body) in acked.lock().unwrap().iter() {
        let key = (FOLLOWER_ID, *shard, *seq);
        assert_eq!(log.get(&key), Some(&vec![body.clone()]), "{context}: acknowledged {key:?} not in the log");
    }
    let stats = get(&follower.url("/v1/stats")).json();
    for shard in stats["shards"].as_array().unwrap() {
        let (shard_id, last_seq) = (shard["shard"].as_u64().unwrap(), shard["last_seq"].as_u64().unwrap());
        let held = log.keys().filter(|(_, s, _)| *s == shard_id).count() as u64;
        assert_eq!(held, last_seq, "{context}: the follower's shard {shard_id} is dense 1..={last_seq}");
    }
}

/// A second `serve` on `data_dir` (whose node runs): it must exit at once.
fn second_serve(data_dir: &Path, peers: &str) -> Output {
    let data = data_dir.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wormdb"))
        .args(["serve", "--data-dir", data, "--node-id", "1", "--shards", SHARDS, "--peers", peers])
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("a second serve on {data} did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_quorum_lost_for_good_is_recovered_on_the_survivor_and_followers_drain_to_it() {
    let dir = common::durable_temp_dir();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers: String = ports
        .iter()
        .enumerate()
        .map(|(index, port)| format!("{}=127.0.0.1:{port}", index + 1))
        .collect::<Vec<_>>()
        .join(",");
    let member_dir = |index: usize| dir.path().join(format!("member-{}", index + 1));
    let mut members: Vec<TestNode> = (0..3)
        .map(|index| {
            let id = (index + 1).to_string();
            TestNode::start_on(
                &member_dir(index),
                ports[index],
                &["--node-id", &id, "--shards", SHARDS, "--peers", &peers],
            )
        })
        .collect();
    let leaders_list: String = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
    let follower = TestNode::start(
        &dir.path().join("follower"),
        &["--node-id", &FOLLOWER_ID.to_string(), "--shards", SHARDS, "--leader", &leaders_list],
    );
    let acked: Acked = Default::default();
    wait_leaders(&members.iter().collect::<Vec<_>>(), "start");
    for (index, _) in members.iter().enumerate() {
        let node_id = std::fs::read_to_string(member_dir(index).join("raft/node-id")).unwrap();
        assert_eq!(node_id.trim(), (index + 1).to_string(), "serve persists its node id");
    }

    // While the tier runs: a second node on a member's directory, and a
    // recovery of it, are refused, and change nothing.
    // (The Raft logs are left out: a round may land meanwhile.)
    let kept = ["raft/members", "raft/node-id", "LOCK"];
    let files =
        |dir: &Path| -> Vec<Vec<u8>> { kept.iter().map(|file| std::fs::read(dir.join(file)).unwrap()).collect() };
    let before = files(&member_dir(0));
    let refused = second_serve(&member_dir(0), &peers);
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("is in use") && stderr.contains(&member_dir(0).display().to_string()), "{stderr}");
    let refused = wormdb(&["cluster", "recover", "--data-dir", member_dir(0).to_str().unwrap()]);
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("node still running") && stderr.contains("nothing was changed"), "{stderr}");
    let not_member = wormdb(&["cluster", "recover", "--data-dir", dir.path().join("follower").to_str().unwrap()]);
    assert!(!not_member.status.success());
    assert!(text(&not_member.stderr).contains("not a tier member"), "{}", text(&not_member.stderr));
    assert_eq!(files(&member_dir(0)), before, "a refused command changed the directory");

    // Under load: the survivor-to-be stopped while the other two commit
    // without it (so it lacks a suffix the follower saw acknowledged),
    // then every member killed at once, and two of them lost for good. The
    // survivor leads no group (two groups, three members), so no election
    // is needed while it is stopped.
    let leaders = group_leaders(&members[0]);
    let survivor = (0..3).find(|index| !leaders.values().any(|&leader| leader == *index as u64 + 1)).unwrap();
    under_load(&follower, &acked, 0, || {
        members[survivor].signal(libc::SIGSTOP);
        let stopped_at = acked.lock().unwrap().len();
        wait_acked(&acked, stopped_at + 500, CONVERGE);
        // ...and until the two others have acknowledged pushes the
        // survivor never saw (the follower's local acks alone say nothing
        // of the tier's).
        let archived = || -> u64 {
            let stats = get(&follower.url("/v1/stats")).json();
            stats["shards"]
                .as_array()
                .unwrap()
                .iter()
                .map(|shard| shard["replication"]["acked_seq"].as_u64().unwrap_or(0))
                .sum()
        };
        let before = archived();
        let deadline = Instant::now() + CONVERGE;
        while archived() < before + 100 {
            assert!(Instant::now() < deadline, "the two others acknowledged nothing without the survivor");
            std::thread::sleep(Duration::from_millis(20));
        }
        for member in &mut members {
            member.kill();
        }
    });
    for index in (0..3).filter(|&index| index != survivor) {
        std::fs::remove_dir_all(member_dir(index)).unwrap();
    }
    // What the lost quorum acknowledged, per follower shard.
    let stats = get(&follower.url("/v1/stats")).json();
    let acked_by_the_lost: BTreeMap<u64, u64> = stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|shard| (shard["shard"].as_u64().unwrap(), shard["replication"]["acked_seq"].as_u64().unwrap_or(0)))
        .collect();
    let follower_lines = follower.log.lock().unwrap().len();
    let survivor_id = survivor as u64 + 1;

    let recovered = wormdb(&["cluster", "recover", "--data-dir", member_dir(survivor).to_str().unwrap()]);
    let stdout = text(&recovered.stdout);
    assert!(recovered.status.success(), "{}\n{stdout}", text(&recovered.stderr));
    eprintln!("cluster recover printed:\n{stdout}");
    for needle in [
        format!("node {survivor_id} (127.0.0.1:{}", ports[survivor]),
        "is now the only member".to_string(),
        "group 0: voters [1, 2, 3]".to_string(),
        "group 1: voters [1, 2, 3]".to_string(),
        "commit index".to_string(),
        "What may be missing".to_string(),
    ] {
        assert!(stdout.contains(&needle), "{needle:?} not in:\n{stdout}");
    }
    let members_file = std::fs::read_to_string(member_dir(survivor).join("raft/members")).unwrap();
    assert_eq!(members_file, format!("{survivor_id}=127.0.0.1:{}\n", ports[survivor]));

    // Alone, with the same flags: the persisted membership wins.
    let survivor_node = &mut members[survivor];
    survivor_node.restart();
    assert!(survivor_node.log_text().contains("--peers differs from the persisted membership"));
    let leaders = wait_leaders(&[survivor_node], "after recovery");
    assert!(leaders.values().all(|&leader| leader == survivor_id), "{leaders:?}");
    let cluster = get(&survivor_node.url("/v1/cluster")).json();
    let ids: Vec<u64> =
        cluster["members"].as_array().unwrap().iter().map(|member| member["node_id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![survivor_id], "{cluster}");
    assert_archive_equals_the_log(survivor_node, &follower, &acked, "after recovery");
    // The survivor lacked what the others committed while it was stopped:
    // the follower's first session with it started below what the lost
    // quorum had acknowledged, and the suffix was pushed again.
    let resumed: BTreeMap<u64, u64> = follower.log.lock().unwrap()[follower_lines..]
        .iter()
        .filter(|line| line.contains("replication session up"))
        .filter_map(|line| {
            let field = |name: &str| line.split(name).nth(1)?.split_whitespace().next()?.parse::<u64>().ok();
            Some((field(" shard=")?, field(" acked=")?))
        })
        .fold(BTreeMap::new(), |mut first, (shard, acked)| {
            first.entry(shard).or_insert(acked);
            first
        });
    assert!(
        resumed.iter().any(|(shard, &from)| from < acked_by_the_lost[shard]),
        "the survivor lacked nothing: sessions resumed at {resumed:?}, the lost quorum acknowledged {acked_by_the_lost:?}"
    );

    // It goes on alone under load, and across a restart.
    under_load(&follower, &acked, 1, || {
        survivor_node.kill();
        survivor_node.restart();
    });
    assert_archive_equals_the_log(survivor_node, &follower, &acked, "alone, after a restart");
    assert!(!survivor_node.log_text().contains("panicked"), "{}", survivor_node.log_text());

    // Two fresh machines join the survivor under load (new ids, empty
    // data): each catches up by snapshot and becomes a voter of every group.
    let survivor_grpc = survivor_node.grpc_addr.clone();
    let mut joined = Vec::new();
    under_load(&follower, &acked, 2, || {
        for id in [4u64, 5] {
            let port = free_port();
            let id_text = id.to_string();
            let args = ["--node-id", id_text.as_str(), "--shards", SHARDS, "--join", survivor_grpc.as_str()];
            joined.push(TestNode::start_on(&dir.path().join(format!("fresh-{id}")), port, &args));
            let node = joined.last().unwrap();
            let deadline = Instant::now() + CONVERGE;
            loop {
                let cluster = node.get_or_log("/v1/cluster").json();
                let groups = cluster["groups"].as_array().unwrap();
                if groups.len() == 2
                    && groups.iter().all(|group| matches!(group["role"].as_str(), Some("leader" | "follower")))
                {
                    break;
                }
                assert!(Instant::now() < deadline, "node {id} was not promoted: {cluster}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    assert_archive_equals_the_log(survivor_node, &follower, &acked, "after two nodes joined");
    for node in &joined {
        assert_archive_equals_the_log(node, &follower, &acked, "on a node that joined");
    }
}
