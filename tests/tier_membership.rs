//! Membership changes of the archive tier (DESIGN.md section 9, issue 16)
//! with real processes on loopback: a node joins with `--join` under
//! follower load, is promoted once caught up (a leader killed in the
//! middle), an original member is removed with `wormdb cluster remove`; a
//! member whose data is lost is replaced by a new id that catches up by
//! snapshot; a rolling restart with SIGTERM hands every leadership over
//! before each member stops. After each, every member's archive equals the
//! follower's log exactly. Every refused request (an id in use, an unknown node, the last
//! voter, a `--join` to a node outside any tier) says why and changes
//! nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::node::{free_port, get, post, wait_acked, writers, Acked, TestNode};
use common::tier::{assert_archives_equal_the_log, start_follower, Tier, CONVERGE, SHARDS};

/// Runs `wormdb ARGS...` to completion.
fn wormdb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wormdb")).args(args).output().unwrap()
}

/// Waits until member `index` holds every group as a voter (not a
/// learner): it was promoted everywhere.
fn wait_voter_everywhere(tier: &Tier, index: usize) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let cluster = get(&tier.nodes[index].url("/v1/cluster")).json();
        let groups = cluster["groups"].as_array().unwrap();
        let voter = groups.len() == 2
            && groups.iter().all(|group| matches!(group["role"].as_str(), Some("leader" | "follower")));
        if voter {
            return;
        }
        assert!(Instant::now() < deadline, "member {} was not promoted: {cluster}", index + 1);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs HTTP writers against the follower for the whole of `work`.
fn while_loaded(follower: &TestNode, acked: &Acked, work: impl FnOnce()) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = writers(follower.url("/v1/entries"), 2, 0, acked.clone(), stop.clone());
    wait_acked(acked, 300, CONVERGE);
    work();
    let count = acked.lock().unwrap().len();
    wait_acked(acked, count + 300, CONVERGE);
    stop.store(true, Ordering::Release);
    for handle in handles {
        handle.join().unwrap();
    }
}

#[test]
fn the_tier_grows_promotes_and_sheds_a_member_under_load() {
    let dir = common::durable_temp_dir();
    let mut tier = Tier::start(dir.path());
    let follower = start_follower(&dir.path().join("follower"), &tier);
    let acked: Acked = Default::default();
    tier.wait_converged("start");
    while_loaded(&follower, &acked, || {
        // Node 4 joins through member 1: a learner of every group...
        let joined = tier.join(dir.path(), 0, &[]);
        let role = tier.roles(0).get(&4).cloned();
        assert!(matches!(role.as_deref(), Some("learner" | "voter")), "node 4 is a member: {role:?}");
        // ...while the member leading the most groups is killed.
        let victim = tier.busiest_leader();
        tier.nodes[victim].kill();
        tier.nodes[victim].restart();
        wait_voter_everywhere(&tier, joined);
        let roles = tier.roles(joined);
        assert_eq!(roles.values().filter(|role| *role == "voter").count(), 4, "{roles:?}");
        // The leaders report how far behind node 4 is.
        let deadline = Instant::now() + CONVERGE;
        'lag: loop {
            for node in tier.running() {
                let cluster = get(&node.url("/v1/cluster")).json();
                let groups = cluster["groups"].as_array().unwrap();
                if groups.iter().any(|group| group["role"] == "leader" && group["replica_lag"].get("4").is_some()) {
                    break 'lag;
                }
            }
            assert!(Instant::now() < deadline, "no leader reports node 4's lag");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert_archives_equal_the_log(&tier, &follower, &acked, "after node 4 joined");

    // Node 1 leaves, through another member, under load.
    while_loaded(&follower, &acked, || {
        let output = wormdb(&["cluster", "remove", "--to", &tier.grpc[1], "--node-id", "1"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        tier.removed.insert(0);
    });
    tier.nodes[0].wait_for_log("removed from the group", 0, CONVERGE);
    let cluster = get(&tier.nodes[0].url("/v1/cluster")).json();
    assert!(
        cluster["groups"].as_array().unwrap().iter().all(|group| group["role"] == "removed"),
        "the removed node says so: {cluster}"
    );
    let roles = tier.roles(1);
    assert_eq!(roles.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4], "{roles:?}");
    assert_archives_equal_the_log(&tier, &follower, &acked, "after node 1 left");
    for member in &tier.nodes {
        assert!(!member.log_text().contains("panicked"), "{}", member.log_text());
    }
}

#[test]
fn a_member_whose_data_is_lost_is_replaced_by_a_new_id() {
    // A log of 8 entries: the replacement can only come up by snapshot.
    let dir = common::durable_temp_dir();
    let mut tier = Tier::start_with(dir.path(), &["--raft-log-entries", "8"]);
    let follower = start_follower(&dir.path().join("follower"), &tier);
    let acked: Acked = Default::default();
    tier.wait_converged("start");
    while_loaded(&follower, &acked, || {
        // Member 3's disk is gone: it is stopped, removed, and its data wiped.
        tier.nodes[2].kill();
        tier.removed.insert(2);
        let output = wormdb(&["cluster", "remove", "--to", &tier.grpc[0], "--node-id", "3"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        std::fs::remove_dir_all(&tier.nodes[2].data_dir).unwrap();
        // A new machine takes its place under a new id.
        let joined = tier.join(dir.path(), 1, &["--raft-log-entries", "8"]);
        wait_voter_everywhere(&tier, joined);
    });
    assert_archives_equal_the_log(&tier, &follower, &acked, "after the replacement");
    let snapshots: u64 = get(&tier.nodes[3].url("/metrics"))
        .body
        .lines()
        .filter(|line| line.starts_with("wormdb_raft_snapshots_installed_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(snapshots > 0, "the new member came up by snapshot:\n{}", tier.nodes[3].log_text());
}

#[test]
fn refused_membership_requests_say_why_and_change_nothing() {
    let dir = common::durable_temp_dir();
    let tier = Tier::start(dir.path());
    tier.wait_converged("start");
    let before = tier.roles(0);

    // An id in use, from another address: the joining node does not start.
    let port = free_port().to_string();
    let data = dir.path().join("intruder");
    let (http, grpc) = ("127.0.0.1:0".to_string(), format!("127.0.0.1:{port}"));
    let serve = |id: &str, via: &str, data: &std::path::Path| {
        wormdb(&[
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--http-addr",
            &http,
            "--grpc-addr",
            &grpc,
            "--node-id",
            id,
            "--shards",
            SHARDS,
            "--join",
            via,
        ])
    };
    let output = serve("2", &tier.grpc[0], &data);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("node id 2 is already a member"), "{stderr}");

    // Removing or handing a group to a node that is not a member.
    let output = wormdb(&["cluster", "remove", "--to", &tier.grpc[0], "--node-id", "7"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("node 7 is not a member of the tier"), "{stderr}");
    let output = wormdb(&["cluster", "transfer", "--to", &tier.grpc[1], "--group", "0", "--node-id", "7"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("node 7 is not a voter of group 0"), "{stderr}");

    // `--join` through a node that is not a tier member.
    let plain = TestNode::start(&dir.path().join("plain"), &["--shards", SHARDS]);
    let output = serve("5", &plain.grpc_addr, &dir.path().join("joiner"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("not a member of an archive tier"), "{stderr}");

    // Nothing changed, and the tier still takes writes.
    assert_eq!(tier.roles(0), before);
    let reply = post(&tier.nodes[0].url("/v1/entries"), "application/x-ndjson", b"{\"body\":\"still here\"}\n");
    assert_eq!(reply.status, 200, "{}", reply.body);

    // The last voter of a one-member tier cannot leave.
    let port = free_port();
    let peers = format!("1=127.0.0.1:{port}");
    let single = TestNode::start_on(
        &dir.path().join("single"),
        port,
        &["--node-id", "1", "--shards", SHARDS, "--peers", &peers],
    );
    let output = wormdb(&["cluster", "remove", "--to", &single.grpc_addr, "--node-id", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("last voter"), "{stderr}");
}

/// The longest time, in a polling thread, that the follower's acked seqs
/// stood still while it held entries not yet acked (its pushes stalled).
struct StallWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Duration>,
}

impl StallWatch {
    fn start(follower: &TestNode) -> StallWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let url = follower.url("/v1/stats");
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut longest = Duration::ZERO;
            let mut since: Option<(Instant, u64)> = None;
            while !stopped.load(Ordering::Acquire) {
                let stats = get(&url).json();
                let shards = stats["shards"].as_array().unwrap();
                let acked: u64 = shards.iter().map(|shard| shard["acked_seq"].as_u64().unwrap_or(0)).sum();
                let last: u64 = shards.iter().map(|shard| shard["last_seq"].as_u64().unwrap_or(0)).sum();
                match since {
                    Some((at, seen)) if seen == acked && last > acked => longest = longest.max(at.elapsed()),
                    _ => since = Some((Instant::now(), acked)),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            longest
        });
        StallWatch { stop, thread }
    }

    fn finish(self) -> Duration {
        self.stop.store(true, Ordering::Release);
        self.thread.join().unwrap()
    }
}

#[test]
fn a_rolling_restart_hands_leaderships_over_and_loses_nothing() {
    let dir = common::durable_temp_dir();
    let mut tier = Tier::start(dir.path());
    let follower = start_follower(&dir.path().join("follower"), &tier);
    let acked: Acked = Default::default();
    tier.wait_converged("start");
    let mut stalls = Vec::new();
    while_loaded(&follower, &acked, || {
        for index in 0..3 {
            let led: Vec<u64> = tier
                .group_leaders()
                .into_iter()
                .filter(|(_, leader)| *leader == index as u64 + 1)
                .map(|(group, _)| group)
                .collect();
            let watch = StallWatch::start(&follower);
            assert_eq!(tier.nodes[index].terminate(), 0, "{}", tier.nodes[index].log_text());
            // Every group it led was handed over before it stopped.
            let handed = tier.nodes[index].log_count("handed the leadership over");
            assert_eq!(handed, led.len(), "member {} led {led:?}:\n{}", index + 1, tier.nodes[index].log_text());
            tier.nodes[index].restart();
            tier.wait_converged(&format!("after restarting member {}", index + 1));
            let count = acked.lock().unwrap().len();
            wait_acked(&acked, count + 200, CONVERGE);
            stalls.push(watch.finish());
        }
    });
    // Reported, not asserted: wall-clock time on a shared machine.
    eprintln!("longest push stall per restart, from the follower's side: {stalls:?}");
    assert_archives_equal_the_log(&tier, &follower, &acked, "after the rolling restart");
    // A clean stop ends between two rounds of the Raft log: nothing torn
    // to cut at the restart (a round cut short by cancelling its write once
    // took records with it that the leader counted as held here).
    for member in &tier.nodes {
        assert!(!member.log_text().contains("cut a torn last record"), "{}", member.log_text());
    }
}

/// Follower `id`'s lease as member `index` reports it: (state, ms left).
fn lease(tier: &Tier, index: usize, id: u64) -> Option<(String, u64)> {
    let cluster = get(&tier.nodes[index].url("/v1/cluster")).json();
    cluster["followers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|follower| follower["follower_id"] == id)
        .map(|follower| (follower["lease"].as_str().unwrap().to_string(), follower["expires_in_ms"].as_u64().unwrap()))
}

#[test]
fn follower_leases_live_on_keepalives_and_expire_when_the_follower_stops() {
    let dir = common::durable_temp_dir();
    let tier = Tier::start_with(dir.path(), &["--lease-ttl", "3s"]);
    let follower = start_follower(&dir.path().join("follower"), &tier);
    let acked: Acked = Default::default();
    tier.wait_converged("start");
    while_loaded(&follower, &acked, || {});
    common::node::wait_drained(&follower, CONVERGE);
    let id = common::tier::FOLLOWER_ID;
    // Idle for twice the TTL: its keepalives keep the lease alive on every
    // member (each applies the renewals the leader committed).
    let idle_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < idle_until {
        for index in 0..3 {
            let lease = lease(&tier, index, id);
            assert!(matches!(&lease, Some((state, _)) if state == "alive"), "member {}: {lease:?}", index + 1);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Stopped, it renews nothing: the lease expires, counted and logged once
    // per group.
    follower.signal(libc::SIGSTOP);
    let deadline = Instant::now() + CONVERGE;
    while lease(&tier, 0, id).map(|(state, _)| state) != Some("expired".to_string()) {
        assert!(Instant::now() < deadline, "the lease never expired: {:?}", lease(&tier, 0, id));
        std::thread::sleep(Duration::from_millis(100));
    }
    let expired: u64 = get(&tier.nodes[0].url("/metrics"))
        .body
        .lines()
        .filter(|line| line.starts_with("wormdb_follower_lease_expired_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(expired, 2, "one expiry per group");
    assert_eq!(tier.nodes[0].log_count("follower lease expired"), 2, "{}", tier.nodes[0].log_text());
    // Back, it renews at once.
    follower.signal(libc::SIGCONT);
    while lease(&tier, 0, id).map(|(state, _)| state) != Some("alive".to_string()) {
        assert!(Instant::now() < deadline, "the lease never came back: {:?}", lease(&tier, 0, id));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(tier.nodes[0].log_count("follower lease expired"), 2, "an expiry logs once");

    // Its lag is what its pushes say: none once drained; a push of seqs
    // 1..=3 by a follower that says it holds 10 durable leaves 7.
    common::node::wait_drained(&follower, CONVERGE);
    let deadline = Instant::now() + CONVERGE;
    let lag = |index: usize, id: u64| -> Option<u64> {
        let cluster = get(&tier.nodes[index].url("/v1/cluster")).json();
        let followers = cluster["followers"].as_array().unwrap().clone();
        followers.iter().find(|follower| follower["follower_id"] == id).map(|f| f["lag_entries"].as_u64().unwrap())
    };
    while lag(0, id) != Some(0) {
        assert!(Instant::now() < deadline, "a drained follower's lag: {:?}", lag(0, id));
        std::thread::sleep(Duration::from_millis(100));
    }
    let addrs: Vec<std::net::SocketAddr> = tier.grpc.iter().map(|addr| addr.parse().unwrap()).collect();
    let acked = common::run(move || async move { push_to_the_leader(&addrs, 77, 10).await });
    assert_eq!(acked, 3);
    for index in 0..3 {
        while lag(index, 77) != Some(7) {
            assert!(Instant::now() < deadline, "member {}: follower 77's lag {:?}", index + 1, lag(index, 77));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Pushes seqs 1..=3 of follower `id`'s shard 0, saying `durable_seq`, to
/// whichever of `addrs` leads its group; returns the acked seq.
async fn push_to_the_leader(addrs: &[std::net::SocketAddr], id: u32, durable_seq: u64) -> u64 {
    use wormdb::proto::{LogEntry, PushAck, PushBatch};
    let entries = (1..=3).map(|seq| LogEntry { seq, body: format!("pushed {seq}").into(), ..LogEntry::default() });
    let batch = PushBatch { durable_seq, follower_id: id, shard: 0, entries: entries.collect(), blocks: Vec::new() };
    let timeout = Some(Duration::from_secs(5));
    for _ in 0..50 {
        for &addr in addrs {
            let Ok(channel) = wormdb::grpc::transport::Channel::connect(addr, Duration::from_secs(5)).await else {
                continue;
            };
            let Ok(mut call) = channel.start("/wormdb.v1.WormReplication/Replicate", timeout).await else { continue };
            if call.send(&batch).await.is_err() || call.close_send().await.is_err() {
                continue;
            }
            if let Ok(Some(ack)) = call.next::<PushAck>().await {
                return ack.acked_seq;
            }
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
    panic!("no member took the push");
}
