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
use crate::proto::LogEntry;
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
        }
    }
}

/// This core's report.
pub fn report(core: &Core) -> ShardReport {
    ShardReport {
        stats: core.shard.stats(),
        torn_tail: core.shard.recovery_report().torn_tail.clone(),
        http: core.counters.borrow().clone(),
    }
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
