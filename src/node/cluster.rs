//! The tier as one node sees it: the `GET /v1/cluster` document (DESIGN.md
//! section 9; its keys are a contract), and the table `wormdb cluster
//! status` prints from it. Pure: built from the cores' reports.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::peers::ShardReport;
use crate::tier::Members;

/// The role name of a raft-rs state.
fn role(role: raft::StateRole) -> &'static str {
    match role {
        raft::StateRole::Leader => "leader",
        raft::StateRole::Follower => "follower",
        raft::StateRole::Candidate | raft::StateRole::PreCandidate => "candidate",
    }
}

/// The `/v1/cluster` document of node `node_id`.
pub fn document(node_id: u32, members: Option<&Members>, reports: &[ShardReport]) -> Value {
    // Roles from the first group's membership (every group goes through
    // the same changes, one after the other).
    let conf = reports.iter().find_map(|report| report.tier.as_ref());
    let member_role = |id: u32| match conf {
        Some(tier) if !tier.voters.contains(&u64::from(id)) => "learner",
        _ => "voter",
    };
    let members: Vec<Value> = members
        .map(|members| {
            members
                .addrs
                .iter()
                .map(|(&id, addr)| json!({"node_id": id, "addr": addr.to_string(), "role": member_role(id)}))
                .collect()
        })
        .unwrap_or_default();
    let groups: Vec<Value> = reports
        .iter()
        .filter_map(|report| report.tier.as_ref())
        .map(|tier| {
            json!({
                "group": tier.group,
                "leader": tier.status.leader,
                "term": tier.status.term,
                "commit": tier.status.commit,
                "applied": tier.status.applied,
                // The leader's view of the other replicas (entries behind
                // its log); empty on the others.
                "replica_lag": tier.replica_lag.iter().map(|(id, lag)| (id.to_string(), json!(lag))).collect::<serde_json::Map<_, _>>(),
                "role": if tier.removed {
                    "removed"
                } else if !tier.voters.contains(&u64::from(node_id)) {
                    // A learner, or a joining node that has not heard of
                    // its group's members yet.
                    "learner"
                } else {
                    role(tier.status.role)
                },
            })
        })
        .collect();
    // Followers: their leases in the groups this node replicates (a
    // follower's shards go to several groups): alive while one of them is,
    // with the most time left and the latest renewal.
    // Its lag: the sum over its shards (each archived by one group).
    let mut leases = std::collections::BTreeMap::<u32, (bool, u64, i64, u64)>::new();
    for tier in reports.iter().filter_map(|report| report.tier.as_ref()) {
        for (&follower, lease) in &tier.leases {
            let entry = leases.entry(follower).or_insert((false, 0, 0, 0));
            *entry = (
                entry.0 || lease.alive,
                entry.1.max(lease.expires_in_ms),
                entry.2.max(lease.last_seen_ns),
                entry.3 + lease.lag_entries,
            );
        }
    }
    let followers: Vec<Value> = leases
        .into_iter()
        .map(|(follower, (alive, left, seen, lag))| {
            json!({
                "follower_id": follower,
                "lease": if alive { "alive" } else { "expired" },
                "expires_in_ms": left,
                "lag_entries": lag,
                "last_seen_ns": seen,
            })
        })
        .collect();
    json!({"node_id": node_id, "members": members, "groups": groups, "followers": followers})
}

/// The document as a table, readable at a glance.
pub fn render(document: &Value) -> String {
    let mut out = String::new();
    let node = document["node_id"].as_u64().unwrap_or(0);
    let members = document["members"].as_array().cloned().unwrap_or_default();
    if members.is_empty() {
        let _ = writeln!(out, "node {node} is not a member of an archive tier");
    } else {
        let _ = writeln!(out, "node {node}, member of a tier of {}:", members.len());
        for member in &members {
            let _ = writeln!(
                out,
                "  node {:<3} {:<24} {}",
                text(&member["node_id"]),
                text(&member["addr"]),
                text(&member["role"])
            );
        }
        let _ = writeln!(
            out,
            "
  GROUP  LEADER  TERM          COMMIT      APPLIED  ROLE HERE   REPLICA LAG (on the leader)"
        );
        for group in document["groups"].as_array().into_iter().flatten() {
            let leader = match group["leader"].as_u64() {
                Some(0) | None => "-".to_string(),
                Some(id) => id.to_string(),
            };
            let lag: Vec<String> = group["replica_lag"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(id, lag)| format!("node {id}: {lag}"))
                .collect();
            let lag = if lag.is_empty() { "-".to_string() } else { lag.join(", ") };
            let _ = writeln!(
                out,
                "  {:<6} {:<7} {:<7} {:>12} {:>12}  {:<9}   {}",
                text(&group["group"]),
                leader,
                text(&group["term"]),
                text(&group["commit"]),
                text(&group["applied"]),
                text(&group["role"]),
                lag
            );
        }
    }
    let followers = document["followers"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "\n  {} follower(s)", followers.len());
    for follower in &followers {
        let _ = writeln!(
            out,
            "  follower {:<4} {:<8} expires in {} ms",
            text(&follower["follower_id"]),
            text(&follower["lease"]),
            follower["expires_in_ms"]
        );
    }
    out
}

fn text(value: &Value) -> String {
    value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())
}
