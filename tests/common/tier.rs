//! A tier of real `wormdb serve` members on loopback and a follower pushing
//! to it, with the checks every tier test ends with: each member's archive
//! equals the follower's log exactly.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::node::{contents, free_port, get, wait_acked, wait_drained, writers, Acked, TestNode};

pub const FOLLOWER_ID: u64 = 9;
pub const SHARDS: &str = "2";
/// How long anything in these tests may take to converge: generous, for a
/// debug build of four nodes sharing two cores.
pub const CONVERGE: Duration = Duration::from_secs(120);

/// Three members of one tier.
pub struct Tier {
    /// Member `id` is `nodes[id - 1]` (joined members are pushed in id order).
    pub nodes: Vec<TestNode>,
    /// The members' gRPC addresses, in the same order.
    pub grpc: Vec<String>,
    /// Members removed from the tier (their process may still run).
    pub removed: std::collections::BTreeSet<usize>,
}

/// Each group's leader as `node` sees it (0: none known).
pub fn group_leaders(node: &TestNode) -> BTreeMap<u64, u64> {
    let cluster = get(&node.url("/v1/cluster")).json();
    cluster["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| (group["group"].as_u64().unwrap(), group["leader"].as_u64().unwrap()))
        .collect()
}

/// A failing test shows what every member logged last.
impl Drop for Tier {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (index, member) in self.nodes.iter().enumerate() {
            let text = member.log_text();
            let lines: Vec<&str> = text.lines().filter(|line| !line.contains(" DEBUG ")).collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!("--- member {} (last {} lines) ---\n{}", index + 1, tail.len(), tail.join("\n"));
        }
    }
}

impl Tier {
    pub fn start(dir: &Path) -> Tier {
        Tier::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, extra: &[&str]) -> Tier {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let grpc: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
        let peers: String =
            grpc.iter().enumerate().map(|(index, addr)| format!("{}={addr}", index + 1)).collect::<Vec<_>>().join(",");
        let nodes = (0..3)
            .map(|index| {
                let id = (index + 1).to_string();
                let mut args = vec!["--node-id", &id, "--shards", SHARDS, "--peers", &peers];
                args.extend_from_slice(extra);
                TestNode::start_on(&dir.join(format!("member-{id}")), ports[index], &args)
            })
            .collect();
        Tier { nodes, grpc, removed: Default::default() }
    }

    pub fn leaders_list(&self) -> String {
        self.grpc.join(",")
    }

    /// The members that run (removed ones left out).
    pub fn running(&self) -> impl Iterator<Item = &TestNode> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(index, node)| node.is_running() && !self.removed.contains(index))
            .map(|(_, node)| node)
    }

    /// Starts member `id` (the next id) with `--join` through member `via`
    /// (0-based), and adds it to the tier.
    pub fn join(&mut self, dir: &Path, via: usize, extra: &[&str]) -> usize {
        let id = (self.nodes.len() + 1).to_string();
        let port = free_port();
        let via = self.grpc[via].clone();
        let mut args = vec!["--node-id", &id, "--shards", SHARDS, "--join", &via];
        args.extend_from_slice(extra);
        let node = TestNode::start_on(&dir.join(format!("member-{id}")), port, &args);
        self.grpc.push(format!("127.0.0.1:{port}"));
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Each member's role as member `index` sees the tier (`/v1/cluster`).
    pub fn roles(&self, index: usize) -> BTreeMap<u64, String> {
        let cluster = get(&self.nodes[index].url("/v1/cluster")).json();
        cluster["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|member| (member["node_id"].as_u64().unwrap(), member["role"].as_str().unwrap().to_string()))
            .collect()
    }

    /// Each group's leader as a running member sees it (0: none known).
    pub fn group_leaders(&self) -> BTreeMap<u64, u64> {
        group_leaders(self.running().next().unwrap())
    }

    /// The index (0-based) of the member that leads most groups.
    pub fn busiest_leader(&self) -> usize {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let mut counts = [0usize; 3];
            for leader in self.group_leaders().values() {
                if (1..=3).contains(leader) {
                    counts[*leader as usize - 1] += 1;
                }
            }
            let (index, most) = counts.iter().enumerate().max_by_key(|(_, count)| **count).unwrap();
            if *most > 0 {
                return index;
            }
            assert!(Instant::now() < deadline, "no group has a leader");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running member sees every group with the same
    /// leader and term, and applied everything committed: the tier is quiet.
    pub fn wait_converged(&self, context: &str) {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let views: Vec<serde_json::Value> =
                self.running().map(|node| get(&node.url("/v1/cluster")).json()).collect();
            let settled = |views: &[serde_json::Value]| -> bool {
                let groups = |view: &serde_json::Value| -> Vec<(u64, u64, u64, u64)> {
                    view["groups"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|group| {
                            (
                                group["leader"].as_u64().unwrap(),
                                group["term"].as_u64().unwrap(),
                                group["commit"].as_u64().unwrap(),
                                group["applied"].as_u64().unwrap(),
                            )
                        })
                        .collect()
                };
                let first = groups(&views[0]);
                first.iter().all(|(leader, _, commit, applied)| *leader != 0 && commit == applied)
                    && views.iter().all(|view| groups(view) == first)
            };
            if settled(&views) {
                return;
            }
            assert!(Instant::now() < deadline, "{context}: the tier did not converge: {views:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn start_follower(dir: &Path, tier: &Tier) -> TestNode {
    TestNode::start(dir, &["--node-id", &FOLLOWER_ID.to_string(), "--shards", SHARDS, "--leader", &tier.leaders_list()])
}

/// Every running member's archive is exactly the follower's log, and all
/// of them are equal.
pub fn assert_archives_equal_the_log(tier: &Tier, follower: &TestNode, acked: &Acked, context: &str) {
    wait_drained(follower, CONVERGE);
    tier.wait_converged(context);
    let log = contents(follower);
    let mut first: Option<HashMap<(u64, u64, u64), Vec<String>>> = None;
    for member in tier.running() {
        let archive: HashMap<_, _> =
            contents(member).into_iter().filter(|((node, _, _), _)| *node == FOLLOWER_ID).collect();
        for (key, bodies) in &archive {
            assert_eq!(bodies.len(), 1, "{context}: {key:?} archived {} times on {}", bodies.len(), member.base);
        }
        assert_eq!(archive.len(), log.len(), "{context}: the archive on {} and the follower's log differ", member.base);
        for (key, bodies) in &log {
            assert_eq!(archive.get(key), Some(bodies), "{context}: {key:?} missing or changed on {}", member.base);
        }
        for ((shard, seq), body) in acked.lock().unwrap().iter() {
            let key = (FOLLOWER_ID, *shard, *seq);
            assert_eq!(archive.get(&key), Some(&vec![body.clone()]), "{context}: acknowledged {key:?} not archived");
        }
        match &first {
            None => first = Some(archive),
            Some(first) => assert_eq!(first, &archive, "{context}: two members' archives differ"),
        }
    }
    // Every member's watermarks agree with the follower's last seqs.
    let follower_stats = get(&follower.url("/v1/stats")).json();
    for member in tier.running() {
        let metrics = get(&member.url("/v1/cluster")).json();
        assert!(metrics["groups"].as_array().unwrap().len() == 2, "{context}: {metrics}");
    }
    for shard in follower_stats["shards"].as_array().unwrap() {
        let (shard_id, last_seq) = (shard["shard"].as_u64().unwrap(), shard["last_seq"].as_u64().unwrap());
        for member in tier.running() {
            let held = log.keys().filter(|(_, s, _)| *s == shard_id).count() as u64;
            let archived =
                contents(member).keys().filter(|(node, s, _)| *node == FOLLOWER_ID && *s == shard_id).count();
            assert_eq!(archived as u64, held, "{context}: shard {shard_id} on {}", member.base);
            assert_eq!(held, last_seq, "{context}: the follower's shard {shard_id} is dense 1..={last_seq}");
        }
    }
}

/// Runs HTTP writers against the follower while `fault` runs: entries are
/// acknowledged before and after it, so it strikes during ingest.
pub fn under_load(follower: &TestNode, acked: &Acked, round: usize, fault: impl FnOnce()) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = writers(follower.url("/v1/entries"), 2, round, acked.clone(), stop.clone());
    let before = acked.lock().unwrap().len();
    wait_acked(acked, before + 500, CONVERGE);
    fault();
    let after = acked.lock().unwrap().len();
    wait_acked(acked, after + 500, CONVERGE);
    stop.store(true, Ordering::Release);
    for handle in handles {
        handle.join().unwrap();
    }
}
