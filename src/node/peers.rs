//! What cores ask of each other, over bounded channels: an ordered query
//! stream, a live tail subscription, a stats report. Each request runs as a
//! task on the core that owns the shard; results flow back through bounded
//! channels, so a slow consumer slows only its own stream.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_channel::{mpsc, oneshot};
use futures_util::{SinkExt, StreamExt};

use super::{Core, HttpCounters};
use crate::proto::{LogEntry, PushAck};
use crate::replication::service;
use crate::replication::status::Status;
use crate::shard::{Query, ShardStats, TornTail};

/// Entries per query chunk sent between cores.
pub const QUERY_CHUNK_ENTRIES: usize = 256;
/// Entries a tail reads per pass.
pub const TAIL_READ_ENTRIES: usize = 4096;
/// Chunks buffered per tail subscription and shard before the subscriber
/// is declared too slow and disconnected.
pub const TAIL_CHUNKS_BUFFERED_MAX: usize = 64;

/// An owned query, shared by the per-shard tasks of one request.
#[derive(Clone, Debug)]
pub struct QuerySpec {
    /// `key=value` predicates (AND).
    pub tags: Vec<(String, String)>,
    /// Inclusive lower timestamp bound.
    pub from_ts: i64,
    /// Exclusive upper timestamp bound.
    pub to_ts: i64,
    /// Most entries.
    pub limit: usize,
    /// Newest first.
    pub backward: bool,
}

/// One message of a shard's query stream.
#[derive(Debug)]
pub enum QueryChunk {
    /// The next entries, in order.
    Entries(Vec<LogEntry>),
    /// The stream is complete.
    Done {
        /// Blocks the shard read for this query.
        blocks_read: u64,
    },
    /// The shard could not finish.
    Failed(String),
}

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
}

/// A core's replication numbers: its pusher (when following) and the
/// archive pairs it owns (as a leader).
#[derive(Clone, Debug, Default)]
pub struct ReplicationReport {
    /// The pusher's view, when the node follows a leader.
    pub follower: Option<FollowerReport>,
    /// Archive pairs this core owns: (follower, follower shard) → counters.
    pub archive: std::collections::BTreeMap<(u32, u32), service::PairReport>,
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
    /// Stream newly committed entries matching `tags` until the sink closes.
    Tail {
        /// `key=value` predicates (AND).
        tags: Arc<Vec<(String, String)>>,
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
        reply: oneshot::Sender<Result<PushAck, Status>>,
    },
    /// The archive watermark of a pair this core owns.
    Watermark {
        /// The follower.
        follower_id: u32,
        /// The follower's shard.
        shard: u32,
        /// The highest archived seq.
        reply: oneshot::Sender<Result<u64, Status>>,
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
        reply: oneshot::Sender<Result<Vec<LogEntry>, Status>>,
    },
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
                glommio::spawn_local(run_query(core.clone(), spec, sink)).detach();
            }
            Request::Tail { tags, sink, lagged } => {
                glommio::spawn_local(run_tail(core.clone(), tags, sink, lagged)).detach();
            }
            Request::Report { reply } => {
                let _ = reply.send(report(&core));
            }
            Request::Archive { batch, reply } => service::archive_enqueue(&core, batch, reply),
            Request::Watermark { follower_id, shard, reply } => {
                let core = core.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(service::watermark_local(&core, follower_id, shard).await);
                })
                .detach();
            }
            Request::ReadOrigin { node, shard, from_seq, limit, reply } => {
                let core = core.clone();
                glommio::spawn_local(async move {
                    let read = core.shard.read_origin(node, shard, from_seq, limit).await;
                    let _ = reply.send(read.map_err(|error| Status::internal(error.to_string())));
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
    }
}

fn follower_report(core: &Core) -> Option<FollowerReport> {
    let state = &core.follower;
    state.leader?;
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
    })
}

async fn run_query(core: Rc<Core>, spec: Arc<QuerySpec>, mut sink: mpsc::Sender<QueryChunk>) {
    let tags: Vec<(&str, &str)> = spec.tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
    let query =
        Query { tags: &tags, from_ts: spec.from_ts, to_ts: spec.to_ts, limit: spec.limit, backward: spec.backward };
    let mut ordered = match core.shard.query_ordered(&query).await {
        Ok(ordered) => ordered,
        Err(error) => {
            let _ = sink.send(QueryChunk::Failed(error.to_string())).await;
            return;
        }
    };
    loop {
        match ordered.next_chunk(QUERY_CHUNK_ENTRIES).await {
            Ok(chunk) if chunk.is_empty() => {
                let _ = sink.send(QueryChunk::Done { blocks_read: ordered.blocks_read() }).await;
                return;
            }
            Ok(chunk) => {
                // The receiver is gone when the client went away: stop.
                if sink.send(QueryChunk::Entries(chunk)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                let _ = sink.send(QueryChunk::Failed(error.to_string())).await;
                return;
            }
        }
    }
}

fn matches(entry: &LogEntry, tags: &[(String, String)]) -> bool {
    tags.iter().all(|(key, value)| entry.tags.get(key) == Some(value))
}

async fn run_tail(
    core: Rc<Core>,
    tags: Arc<Vec<(String, String)>>,
    mut sink: mpsc::Sender<Vec<LogEntry>>,
    lagged: Arc<AtomicBool>,
) {
    let mut after = core.shard.durable_seq();
    loop {
        let durable = core.shard.wait_durable_after(after).await;
        if durable <= after || sink.is_closed() {
            return; // the shard is closing, or the subscriber left
        }
        while after < durable {
            let entries = match core.shard.read_from(after + 1, TAIL_READ_ENTRIES).await {
                Ok(entries) if !entries.is_empty() => entries,
                Ok(_) => return,
                Err(error) => {
                    tracing::error!(%error, "tail read failed");
                    return;
                }
            };
            after = entries.last().map(|entry| entry.seq).unwrap_or(durable);
            let matching: Vec<LogEntry> = entries.into_iter().filter(|entry| matches(entry, &tags)).collect();
            if matching.is_empty() {
                continue;
            }
            if let Err(error) = sink.try_send(matching) {
                if error.is_full() {
                    lagged.store(true, Ordering::Release);
                    core.counters.borrow_mut().tails_lagged += 1;
                }
                return;
            }
        }
    }
}

/// Query chunks buffered per shard stream of one merged query.
const QUERY_CHUNKS_BUFFERED: usize = 4;

/// Why a merged query could not start.
#[derive(Debug)]
pub enum QueryStartError {
    /// A core is gone: the node is shutting down.
    ShuttingDown,
    /// A shard failed to start its part.
    Failed(String),
}

/// One query over every shard of the node, merged into one stream in
/// timestamp order (then by entry id), newest first when backward. Each
/// shard streams its matches in order through a bounded channel, so memory
/// stays bounded however large the limit.
pub struct MergedQuery {
    streams: Vec<mpsc::Receiver<QueryChunk>>,
    heads: Vec<std::collections::VecDeque<LogEntry>>,
    done: Vec<bool>,
    backward: bool,
    remaining: usize,
}

/// Sort key of a query result: timestamp, then the entry's global id.
fn order_key(entry: &LogEntry) -> (i64, u32, u32, u64) {
    (entry.timestamp_ns, entry.node_id, entry.shard, entry.seq)
}

impl MergedQuery {
    /// Sends `spec` to every core and waits for each one's first answer,
    /// so that a failure to start is an error rather than a cut stream.
    pub async fn start(core: &Core, spec: Arc<QuerySpec>) -> Result<MergedQuery, QueryStartError> {
        let mut streams = Vec::new();
        for peer in &core.peers {
            let (sink, receiver) = mpsc::channel(QUERY_CHUNKS_BUFFERED);
            if peer.clone().send(Request::Query { spec: spec.clone(), sink }).await.is_err() {
                return Err(QueryStartError::ShuttingDown);
            }
            streams.push(receiver);
        }
        let mut heads = Vec::new();
        let mut done = Vec::new();
        for stream in &mut streams {
            match stream.next().await {
                Some(QueryChunk::Entries(entries)) => {
                    heads.push(entries.into());
                    done.push(false);
                }
                Some(QueryChunk::Done { .. }) => {
                    heads.push(Default::default());
                    done.push(true);
                }
                Some(QueryChunk::Failed(message)) => return Err(QueryStartError::Failed(message)),
                None => return Err(QueryStartError::ShuttingDown),
            }
        }
        Ok(MergedQuery { streams, heads, done, backward: spec.backward, remaining: spec.limit })
    }

    /// The next entry in order, `None` when the query is complete; `Err`
    /// when a shard failed midway.
    pub async fn next(&mut self) -> Result<Option<LogEntry>, String> {
        if self.remaining == 0 {
            return Ok(None);
        }
        // Refill every shard whose buffer ran dry.
        for (index, stream) in self.streams.iter_mut().enumerate() {
            if self.heads[index].is_empty() && !self.done[index] {
                match stream.next().await {
                    Some(QueryChunk::Entries(entries)) => self.heads[index].extend(entries),
                    Some(QueryChunk::Done { .. }) | None => self.done[index] = true,
                    Some(QueryChunk::Failed(message)) => return Err(message),
                }
            }
        }
        let backward = self.backward;
        let best = self
            .heads
            .iter()
            .enumerate()
            .filter_map(|(index, head)| head.front().map(|entry| (index, order_key(entry))))
            .reduce(|best, candidate| {
                let better = if backward { candidate.1 > best.1 } else { candidate.1 < best.1 };
                if better {
                    candidate
                } else {
                    best
                }
            });
        let Some((index, _)) = best else { return Ok(None) };
        self.remaining -= 1;
        Ok(self.heads[index].pop_front())
    }
}
