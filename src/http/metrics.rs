//! `GET /metrics`: Prometheus text exposition, per shard. Pure.

use std::fmt::Write;

use crate::ingest::Protocol;
use crate::node::peers::ShardReport;
use crate::shard::SYNC_LATENCY_BUCKETS_US;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every shard's counters.
pub fn render(node_id: u32, reports: &[ShardReport]) -> String {
    let mut out = String::new();
    let scalar = |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(&ShardReport) -> u64| {
        family(out, name, kind, help);
        for report in reports {
            let _ = writeln!(out, "{name}{{node=\"{node_id}\",shard=\"{}\"}} {}", report.stats.shard, value(report));
        }
    };
    scalar(&mut out, "wormdb_ingest_entries_total", "counter", "Entries stored through HTTP.", &|r| {
        r.http.ingest_entries
    });
    scalar(&mut out, "wormdb_ingest_bytes_total", "counter", "Request body bytes of stored ingests.", &|r| {
        r.http.ingest_bytes
    });
    scalar(&mut out, "wormdb_ingest_requests_total", "counter", "Ingest requests that stored entries.", &|r| {
        r.http.ingest_requests
    });
    scalar(&mut out, "wormdb_commits_total", "counter", "Group commits written.", &|r| r.stats.commits);
    scalar(&mut out, "wormdb_write_bytes_total", "counter", "Bytes written by DMA writes.", &|r| r.stats.write_bytes);
    scalar(&mut out, "wormdb_last_seq", "gauge", "Highest durable sequence number.", &|r| r.stats.last_seq);
    scalar(&mut out, "wormdb_entries", "gauge", "Entries on disk.", &|r| r.stats.entries);
    scalar(&mut out, "wormdb_raw_bytes", "gauge", "Entry bytes on disk before compression.", &|r| r.stats.raw_bytes);
    scalar(&mut out, "wormdb_disk_bytes", "gauge", "Bytes the blocks occupy on disk.", &|r| r.stats.disk_bytes);
    scalar(&mut out, "wormdb_segments", "gauge", "Segment files.", &|r| r.stats.segments);
    scalar(&mut out, "wormdb_cold_segments_total", "counter", "Sealed segments recompressed with zstd.", &|r| {
        r.stats.cold_segments
    });
    scalar(
        &mut out,
        "wormdb_cold_block_bytes_before_total",
        "counter",
        "Block bytes of recompressed segments before the rewrite.",
        &|r| r.stats.cold_block_bytes_before,
    );
    scalar(
        &mut out,
        "wormdb_cold_block_bytes_after_total",
        "counter",
        "Block bytes of recompressed segments after the rewrite.",
        &|r| r.stats.cold_block_bytes_after,
    );
    scalar(
        &mut out,
        "wormdb_cold_busy_microseconds_total",
        "counter",
        "Time spent decompressing and recompressing cold segments, in microseconds.",
        &|r| r.stats.cold_busy_us,
    );
    scalar(&mut out, "wormdb_cold_failures_total", "counter", "Cold rewrites that failed.", &|r| r.stats.cold_failures);
    scalar(&mut out, "wormdb_append_queue_depth", "gauge", "Appends waiting for the next group commit.", &|r| {
        r.stats.pending_appends
    });
    scalar(&mut out, "wormdb_blocks_read_total", "counter", "Blocks read by queries and tails.", &|r| {
        r.stats.blocks_read
    });
    scalar(&mut out, "wormdb_queries_total", "counter", "Query requests served.", &|r| r.http.queries);
    scalar(&mut out, "wormdb_tails_lagged_total", "counter", "Tail subscribers dropped for falling behind.", &|r| {
        r.http.tails_lagged
    });

    let groups: Vec<_> = reports.iter().filter_map(|r| r.tier.as_ref()).collect();
    if !groups.is_empty() {
        type GroupValue = fn(&crate::tier::replica::ReplicaReport) -> u64;
        let families: [(&str, &str, &str, GroupValue); 10] = [
            ("wormdb_raft_term", "gauge", "The group's current Raft term.", |g| g.status.term),
            ("wormdb_raft_commit_index", "gauge", "The group's commit index as this replica knows it.", |g| {
                g.status.commit
            }),
            ("wormdb_raft_applied_index", "gauge", "The group's index applied (and durable) on this replica.", |g| {
                g.status.applied
            }),
            ("wormdb_raft_leader_changes_total", "counter", "Leader changes this replica saw.", |g| {
                g.counters.leader_changes
            }),
            ("wormdb_raft_is_leader", "gauge", "1 when this replica leads its group.", |g| {
                u64::from(g.status.role == raft::StateRole::Leader)
            }),
            ("wormdb_raft_proposals_total", "counter", "Proposals (group commits) made while leading.", |g| {
                g.counters.proposals
            }),
            ("wormdb_raft_refused_messages_total", "counter", "Peer messages and snapshots refused.", |g| {
                g.counters.refused_messages
            }),
            ("wormdb_raft_snapshots_sent_total", "counter", "Snapshots sent to lagging replicas.", |g| {
                g.counters.snapshots_sent
            }),
            ("wormdb_follower_lease_expired_total", "counter", "Follower leases that expired on this replica.", |g| {
                g.counters.leases_expired
            }),
            ("wormdb_raft_snapshots_installed_total", "counter", "Snapshots installed on this replica.", |g| {
                g.counters.snapshots_installed
            }),
        ];
        for (name, kind, help, value) in families {
            family(&mut out, name, kind, help);
            for group in &groups {
                let _ = writeln!(out, "{name}{{node=\"{node_id}\",group=\"{}\"}} {}", group.group, value(group));
            }
        }
    }

    let followers: Vec<_> =
        reports.iter().filter_map(|r| r.replication.follower.as_ref().map(|f| (r.stats.shard, f))).collect();
    if !followers.is_empty() {
        for (name, kind, help, value) in [
            (
                "wormdb_replication_lag_entries",
                "gauge",
                "Durable entries the leader has not acknowledged.",
                (|f| f.lag_entries) as fn(&crate::node::peers::FollowerReport) -> u64,
            ),
            ("wormdb_replication_lag_bytes", "gauge", "Estimated bytes the leader has not acknowledged.", |f| {
                f.lag_bytes
            }),
            ("wormdb_replication_acked_seq", "gauge", "Highest seq the leader acknowledged.", |f| {
                f.acked_seq.unwrap_or(0)
            }),
            ("wormdb_replication_connected", "gauge", "1 while a session with the leader is up.", |f| {
                u64::from(f.connected)
            }),
            ("wormdb_replication_sessions_total", "counter", "Replication sessions started.", |f| f.sessions),
            ("wormdb_replication_sent_entries_total", "counter", "Entries pushed, resends included.", |f| {
                f.sent_entries
            }),
        ] {
            family(&mut out, name, kind, help);
            for (shard, follower) in &followers {
                let _ = writeln!(out, "{name}{{node=\"{node_id}\",shard=\"{shard}\"}} {}", value(follower));
            }
        }
    }
    let pairs: Vec<_> = reports.iter().flat_map(|r| r.replication.archive.iter()).collect();
    if !pairs.is_empty() {
        for (name, kind, help, value) in [
            (
                "wormdb_archive_watermark",
                "gauge",
                "Highest archived seq of a follower shard.",
                (|p| p.watermark) as fn(&crate::replication::leader::PairReport) -> u64,
            ),
            ("wormdb_archive_written_total", "counter", "Entries archived for a follower shard.", |p| p.written),
            ("wormdb_archive_duplicates_total", "counter", "Pushed entries skipped as already archived.", |p| {
                p.duplicates
            }),
        ] {
            family(&mut out, name, kind, help);
            for ((follower, shard), pair) in &pairs {
                let _ = writeln!(
                    out,
                    "{name}{{node=\"{node_id}\",follower=\"{follower}\",follower_shard=\"{shard}\"}} {}",
                    value(pair)
                );
            }
        }
    }

    family(&mut out, "wormdb_rejected_requests_total", "counter", "Requests refused, by reason.");
    for report in reports {
        let rejected = &report.http.rejected;
        for (reason, count) in [
            ("malformed", rejected.malformed),
            ("too_large", rejected.too_large),
            ("unsupported_media_type", rejected.unsupported_media_type),
            (
                "backpressure",
                rejected.backpressure + report.stats.backpressure_rejections.saturating_sub(rejected.backpressure),
            ),
            ("shutting_down", rejected.shutting_down),
            ("disk_full", rejected.disk_full),
            ("internal", rejected.internal),
        ] {
            let _ = writeln!(
                out,
                "wormdb_rejected_requests_total{{node=\"{node_id}\",shard=\"{}\",reason=\"{reason}\"}} {count}",
                report.stats.shard
            );
        }
    }

    render_protocols(&mut out, node_id, reports);

    family(&mut out, "wormdb_fsync_duration_seconds", "histogram", "fdatasync latency of group commits.");
    for report in reports {
        let shard = report.stats.shard;
        for (bound, count) in SYNC_LATENCY_BUCKETS_US.iter().zip(report.stats.sync_latency_buckets) {
            let _ = writeln!(
                out,
                "wormdb_fsync_duration_seconds_bucket{{node=\"{node_id}\",shard=\"{shard}\",le=\"{}\"}} {count}",
                *bound as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "wormdb_fsync_duration_seconds_bucket{{node=\"{node_id}\",shard=\"{shard}\",le=\"+Inf\"}} {}",
            report.stats.syncs
        );
        let _ = writeln!(
            out,
            "wormdb_fsync_duration_seconds_sum{{node=\"{node_id}\",shard=\"{shard}\"}} {}",
            report.stats.sync_us_total as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "wormdb_fsync_duration_seconds_count{{node=\"{node_id}\",shard=\"{shard}\"}} {}",
            report.stats.syncs
        );
    }
    out
}

/// The shippers' protocols (DESIGN.md section 11), per shard and
/// `protocol`: requests and entries stored, bytes received, refusals by
/// reason, messages dropped (syslog over UDP).
fn render_protocols(out: &mut String, node_id: u32, reports: &[ShardReport]) {
    type Value = fn(&crate::node::ProtocolCounters) -> u64;
    let families: [(&str, &str, Value); 4] = [
        ("wormdb_protocol_requests_total", "Shippers' requests (syslog: batches) stored.", |c| c.requests),
        ("wormdb_protocol_entries_total", "Entries stored through the shippers' protocols.", |c| c.entries),
        ("wormdb_protocol_bytes_total", "Bytes received in stored shippers' requests.", |c| c.bytes),
        ("wormdb_protocol_dropped_total", "Messages dropped unread (syslog over UDP).", |c| c.dropped),
    ];
    for (name, help, value) in families {
        family(out, name, "counter", help);
        for report in reports {
            for protocol in Protocol::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{node=\"{node_id}\",shard=\"{}\",protocol=\"{}\"}} {}",
                    report.stats.shard,
                    protocol.label(),
                    value(&report.http.protocols[protocol.index()])
                );
            }
        }
    }
    let name = "wormdb_protocol_refused_total";
    family(out, name, "counter", "Shippers' requests refused, by protocol and reason.");
    for report in reports {
        for protocol in Protocol::ALL {
            let refused = &report.http.protocols[protocol.index()].refused;
            for (reason, count) in [
                ("malformed", refused.malformed),
                ("too_large", refused.too_large),
                ("unsupported_media_type", refused.unsupported_media_type),
                ("backpressure", refused.backpressure),
                ("unavailable", refused.shutting_down),
                ("disk_full", refused.disk_full),
                ("internal", refused.internal),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{node=\"{node_id}\",shard=\"{}\",protocol=\"{}\",reason=\"{reason}\"}} {count}",
                    report.stats.shard,
                    protocol.label(),
                );
            }
        }
    }
}

/// Appends the node-wide counters of authentication and abuse limits
/// (DESIGN.md section 10): refusals by reason, requests over a token's
/// rate, and per listener the connections open and those closed at accept.
pub fn render_auth(out: &mut String, node_id: u32, counters: &crate::auth::Counters) {
    family(
        out,
        "wormdb_auth_failures_total",
        "counter",
        "Calls refused by authentication or authorization, by reason.",
    );
    for (reason, count) in &counters.failures {
        let _ = writeln!(out, "wormdb_auth_failures_total{{node=\"{node_id}\",reason=\"{reason}\"}} {count}");
    }
    if !counters.rate_limited.is_empty() {
        family(
            out,
            "wormdb_rate_limited_total",
            "counter",
            "Ingest requests refused, or pushed batches held back, over their token's rate_entries_per_s.",
        );
        for (token, count) in &counters.rate_limited {
            let _ = writeln!(out, "wormdb_rate_limited_total{{node=\"{node_id}\",token=\"{token}\"}} {count}");
        }
    }
    family(out, "wormdb_connections_open", "gauge", "Connections open, per listener.");
    for (listener, (open, _)) in &counters.connections {
        let _ = writeln!(out, "wormdb_connections_open{{node=\"{node_id}\",listener=\"{listener}\"}} {open}");
    }
    family(
        out,
        "wormdb_connections_refused_total",
        "counter",
        "Connections closed at accept because the listener had --max-connections open.",
    );
    for (listener, (_, refused)) in &counters.connections {
        let _ =
            writeln!(out, "wormdb_connections_refused_total{{node=\"{node_id}\",listener=\"{listener}\"}} {refused}");
    }
}

/// Appends the TLS counters: failed server handshakes by listener label
/// (`wormdb_tls_handshake_failures_total{listener}`, DESIGN.md section 10).
pub fn render_tls(out: &mut String, node_id: u32, handshake_failures: &[(&str, u64)]) {
    let name = "wormdb_tls_handshake_failures_total";
    family(out, name, "counter", "Server TLS handshakes that failed or timed out, by listener.");
    for (listener, count) in handshake_failures {
        let _ = writeln!(out, "{name}{{node=\"{node_id}\",listener=\"{listener}\"}} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_counters_render_as_prometheus_families() {
        let counters = crate::auth::Counters {
            failures: vec![("missing", 3), ("scope", 1)],
            rate_limited: vec![("shipper".into(), 2)],
            connections: [("http", (5, 1)), ("grpc", (0, 0))],
        };
        let mut out = String::new();
        render_auth(&mut out, 4, &counters);
        for line in [
            "# TYPE wormdb_auth_failures_total counter",
            "wormdb_auth_failures_total{node=\"4\",reason=\"missing\"} 3",
            "wormdb_auth_failures_total{node=\"4\",reason=\"scope\"} 1",
            "wormdb_rate_limited_total{node=\"4\",token=\"shipper\"} 2",
            "wormdb_connections_open{node=\"4\",listener=\"http\"} 5",
            "wormdb_connections_refused_total{node=\"4\",listener=\"http\"} 1",
            "wormdb_connections_refused_total{node=\"4\",listener=\"grpc\"} 0",
        ] {
            assert!(out.lines().any(|candidate| candidate == line), "{line} in\n{out}");
        }
    }
}
