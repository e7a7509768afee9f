//! What cores ask of each other, over bounded channels: an ordered query
//! stream, a live tail subscription, a stats report, and the archive's
//! cross-core calls (a batch for the pair's owner, a watermark, archived
//! entries). Each request runs as a task on the core that owns the shard;
//! results flow back through bounded channels, so a slow consumer slows
//! only its own stream. Replies carry this crate's own error types
//! ([`replication::Error`]), never a front door's.

use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;

use super::{Core, HttpCounters};
use crate::proto::LogEntry;
use crate::query::{self, QueryChunk, QuerySpec, TailEnd};
use crate::replication::{self, leader};
use crate::shard::{EntryFilter, ShardStats, TornTail};

/// A shard's numbers for `/v1/stats` and `/metrics`.
#[derive(Clone, Debug)]
pub struct ShardReport {
    /// Storage counters.
    pub stats: ShardStats,
    /// What recovery cut when the shard opened.
    pub torn_tail: Option<TornTail>,
    /// The core's HTTP counters.
    pub http: HttpCounters,
    /// Replication as this core sees it.
    pub replication: ReplicationReport,
    /// This core's replica of its archive group, on a tier member.
    pub tier: Option<crate::tier::replica::ReplicaReport>,
}

/// A core's replication numbers: its pusher (when following) and the
/// archive pairs it owns (as a leader).
#[derive(Clone, Debug, Default)]
pub struct ReplicationReport {
    /// The pusher's view, when the node follows a leader.
    pub follower: Option<FollowerReport>,
    /// Archive pairs this core owns: (follower, follower shard) → counters.
    pub archive: std::collections::BTreeMap<(u32, u32), leader::PairReport>,
}

/// One shard's replication lag as its pusher sees it.
#[derive(Clone, Debug, Default)]
pub struct FollowerReport {
    /// Highest seq the leader acknowledged (`None` before first contact).
    pub acked_seq: Option<u64>,
    /// Durable entries the leader has not acknowledged.
    pub lag_entries: u64,
    /// Their size before compression (estimated from the shard's mean entry size).
    pub lag_bytes: u64,
    /// A session with the leader is up.
    pub connected: bool,
    /// Sessions started (1 + reconnects).
    pub sessions: u64,
    /// Entries sent, resends included.
    pub sent_entries: u64,
    /// Why the last session ended.
    pub last_error: Option<String>,
    /// The leader address the pusher's current (or next) session uses.
    pub leader_addr: Option<std::net::SocketAddr>,
}

/// A request from one core to another (or to itself).
pub enum Request {
    /// Stream the shard's matches in timestamp order.
    Query {
        /// The query.
        spec: Arc<QuerySpec>,
        /// Where chunks go.
        sink: mpsc::Sender<QueryChunk>,
    },
    /// Stream newly committed entries that `filter` keeps until the sink
    /// closes.
    Tail {
        /// The predicates (tags, fields, words, substrings).
        filter: Arc<EntryFilter>,
        /// Where chunks go; when full, the subscriber is too slow.
        sink: mpsc::Sender<Vec<LogEntry>>,
        /// Set when this shard dropped the subscriber for being too slow.
        lagged: Arc<AtomicBool>,
    },
    /// Report counters.
    Report {
        /// Where the report goes.
        reply: oneshot::Sender<ShardReport>,
    },
    /// Archive a follower's batch (this core owns its pair).
    Archive {
        /// The batch.
        batch: crate::replication::batch::PushedBatch,
        /// The ack, once the fresh entries are durable.
        reply: leader::AckSender,
    },
    /// The archive watermark of a pair this core owns.
    Watermark {
        /// The follower.
        follower_id: u32,
        /// The follower's shard.
        shard: u32,
        /// The highest archived seq.
        reply: oneshot::Sender<Result<u64, replication::Error>>,
    },
    /// Archived entries of a pair this core owns, from an origin seq on.
    ReadOrigin {
        /// The follower.
        node: u32,
        /// The follower's shard.
        shard: u32,
        /// First origin seq wanted.
        from_seq: u64,
        /// Most entries.
        limit: usize,
        /// The entries, in origin-seq order, under their original ids.
        reply: oneshot::Sender<Result<Vec<LogEntry>, replication::Error>>,
    },
    /// Run a job on this core (it answers through its own channel).
    OnCore(Box<dyn FnOnce(Rc<Core>) + Send>),
    /// The highest origin seq of (node, shard) stored in this core's shard.
    OriginWatermark {
        /// The origin node.
        node: u32,
        /// The origin shard.
        shard: u32,
        /// The seq (0 if none).
        reply: oneshot::Sender<u64>,
    },
}

/// Serves requests from the other cores until every sender is gone.
pub async fn serve_inbox(core: Rc<Core>, mut inbox: mpsc::Receiver<Request>) {
    while let Some(request) = inbox.next().await {
        match request {
            Request::Query { spec, sink } => {
                let core = core.clone();
                glommio::spawn_local(async move { query::stream_shard(&core.shard, &spec, sink).await }).detach();
            }
            Request::Tail { filter, sink, lagged } => {
                let core = core.clone();
                glommio::spawn_local(async move {
                    if query::tail_shard(&core.shard, &filter, sink, &lagged).await == TailEnd::Lagged {
                        core.counters.borrow_mut().tails_lagged += 1;
                    }
                })
                .detach();
            }
            Request::Report { reply } => {
                let _ = reply.send(report(&core));
            }
            Request::Archive { batch, reply } => core.archive_here(batch, reply),
            Request::Watermark { follower_id, shard, reply } => {
                let core = core.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(core.watermark_here(follower_id, shard).await);
                })
                .detach();
            }
            Request::OnCore(job) => job(core.clone()),
            Request::ReadOrigin { node, shard, from_seq, limit, reply } => {
                let core = core.clone();
                glommio::spawn_local(async move {
                    let read = core.shard.read_origin(node, shard, from_seq, limit).await;
                    let _ = reply.send(read.map_err(replication::Error::from));
                })
                .detach();
            }
            Request::OriginWatermark { node, shard, reply } => {
                let _ = reply.send(core.shard.origin_watermark(node, shard));
            }
        }
    }
}

/// This core's report.
pub fn report(core: &Core) -> ShardReport {
    ShardReport {
        stats: core.shard.stats(),
        torn_tail: core.shard.recovery_report().torn_tail.clone(),
        http: core.counters.borrow().clone(),
        replication: ReplicationReport { follower: follower_report(core), archive: core.archive.report() },
        tier: core.tier.as_ref().map(|replica| replica.report()),
    }
}

fn follower_report(core: &Core) -> Option<FollowerReport> {
    let state = &core.follower;
    if !state.is_follower() {
        return None;
    }
    let stats = core.shard.stats();
    let durable = core.shard.durable_seq();
    let lag_entries = durable.saturating_sub(state.acked.get().unwrap_or(0));
    let mean_entry_bytes = stats.raw_bytes.checked_div(stats.entries).unwrap_or(0);
    Some(FollowerReport {
        acked_seq: state.acked.get(),
        lag_entries,
        lag_bytes: lag_entries.saturating_mul(mean_entry_bytes),
        connected: state.connected.get(),
        sessions: state.sessions.get(),
        sent_entries: state.sent_entries.get(),
        last_error: state.last_error.borrow().clone(),
        leader_addr: state.leader_addr.get(),
    })
}
