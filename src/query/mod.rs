//! Queries across the shards of a node: each shard streams its matches in
//! timestamp order ([`stream_shard`]), the core that took the request merges
//! the streams ([`MergedQuery`]); live tails follow each shard's commits
//! ([`tail_shard`]).
//!
//! This layer knows shards and channels, not cores: the node hands it one
//! stream per shard and runs each shard's half on the core that owns it.
//! Every stream is a bounded channel, so a slow consumer slows only its own
//! query, and memory stays bounded however large the limit.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_channel::mpsc;
use futures_util::{SinkExt, StreamExt};

use crate::index::words::WordQuery;
use crate::limits::{QUERY_CHUNK_ENTRIES, TAIL_READ_ENTRIES};
use crate::proto::LogEntry;
use crate::shard::{self, EntryFilter, Query, Shard, Substrings};

/// An owned query, shared by the per-shard tasks of one request.
#[derive(Clone, Debug)]
pub struct QuerySpec {
    /// `key=value` predicates (AND).
    pub tags: Vec<(String, String)>,
    /// `key=value` field predicates (AND, exact, not indexed).
    pub fields: Vec<(String, String)>,
    /// Inclusive lower timestamp bound.
    pub from_ts: i64,
    /// Exclusive upper timestamp bound.
    pub to_ts: i64,
    /// Most entries.
    pub limit: usize,
    /// Newest first.
    pub backward: bool,
    /// Whole words of the body, all required (`q=`).
    pub words: WordQuery,
    /// Exact substrings of the body, all required (`contains=`).
    pub contains: Substrings,
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
    Failed(shard::Error),
}

/// Why a query could not start or finish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A shard's core is gone: the node is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// A shard failed to read its part.
    #[error("shard {shard}: {source}")]
    Shard {
        /// The shard whose stream failed.
        shard: u32,
        /// What failed.
        source: shard::Error,
    },
}

/// Streams `shard`'s matches of `spec` into `sink`, in order, in chunks of
/// [`QUERY_CHUNK_ENTRIES`], ending with [`QueryChunk::Done`] or
/// [`QueryChunk::Failed`]. Stops early when the receiver is dropped.
pub async fn stream_shard(shard: &Shard, spec: &QuerySpec, mut sink: mpsc::Sender<QueryChunk>) {
    let tags: Vec<(&str, &str)> = spec.tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
    let fields: Vec<(&str, &str)> = spec.fields.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
    let query = Query {
        tags: &tags,
        fields: &fields,
        from_ts: spec.from_ts,
        to_ts: spec.to_ts,
        limit: spec.limit,
        backward: spec.backward,
        words: &spec.words,
        contains: &spec.contains,
    };
    let mut ordered = match shard.query_ordered(&query).await {
        Ok(ordered) => ordered,
        Err(error) => {
            let _ = sink.send(QueryChunk::Failed(error)).await;
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
                let _ = sink.send(QueryChunk::Failed(error)).await;
                return;
            }
        }
    }
}

/// How a tail subscription of one shard ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailEnd {
    /// The subscriber left, or the shard closed.
    Closed,
    /// The subscriber fell [`crate::limits::TAIL_CHUNKS_BUFFERED_MAX`] chunks behind and
    /// was dropped (`lagged` is set).
    Lagged,
    /// Reading the shard failed.
    Failed,
}

/// Streams `shard`'s newly committed entries that `filter` keeps into
/// `sink` until the subscriber leaves, the shard closes, or the subscriber
/// falls behind (then `lagged` is set, so the merging side can say why).
/// Filtering here, on the shard's core, keeps what is not wanted off the
/// channel between cores.
pub async fn tail_shard(
    shard: &Shard,
    filter: &EntryFilter,
    mut sink: mpsc::Sender<Vec<LogEntry>>,
    lagged: &AtomicBool,
) -> TailEnd {
    let mut after = shard.durable_seq();
    loop {
        let durable = shard.wait_durable_after(after).await;
        if durable <= after || sink.is_closed() {
            return TailEnd::Closed;
        }
        while after < durable {
            let entries = match shard.read_from(after + 1, TAIL_READ_ENTRIES).await {
                Ok(entries) if !entries.is_empty() => entries,
                Ok(_) => return TailEnd::Closed,
                Err(error) => {
                    tracing::error!(%error, "tail read failed");
                    return TailEnd::Failed;
                }
            };
            after = entries.last().map(|entry| entry.seq).unwrap_or(durable);
            let matching: Vec<LogEntry> = entries.into_iter().filter(|entry| filter.keeps_entry(entry)).collect();
            if matching.is_empty() {
                continue;
            }
            if let Err(error) = sink.try_send(matching) {
                if error.is_full() {
                    lagged.store(true, Ordering::Release);
                    return TailEnd::Lagged;
                }
                return TailEnd::Closed;
            }
        }
    }
}

/// One query over every shard of the node, merged into one stream in
/// timestamp order (then by entry id), newest first when backward.
pub struct MergedQuery {
    streams: Vec<mpsc::Receiver<QueryChunk>>,
    /// The shard of each stream, for errors.
    shards: Vec<u32>,
    heads: Vec<VecDeque<LogEntry>>,
    done: Vec<bool>,
    backward: bool,
    remaining: usize,
}

/// Sort key of a query result: timestamp, then the entry's global id.
fn order_key(entry: &LogEntry) -> (i64, u32, u32, u64) {
    (entry.timestamp_ns, entry.node_id, entry.shard, entry.seq)
}

impl MergedQuery {
    /// Merges `streams` (shard id, its stream of [`stream_shard`]) and waits
    /// for each one's first answer, so that a failure to start is an error
    /// rather than a cut stream.
    pub async fn start(
        streams: Vec<(u32, mpsc::Receiver<QueryChunk>)>,
        spec: &QuerySpec,
    ) -> Result<MergedQuery, Error> {
        let (shards, mut streams): (Vec<u32>, Vec<_>) = streams.into_iter().unzip();
        let mut heads = Vec::with_capacity(streams.len());
        let mut done = Vec::with_capacity(streams.len());
        for (stream, &shard) in streams.iter_mut().zip(&shards) {
            match stream.next().await {
                Some(QueryChunk::Entries(entries)) => {
                    heads.push(entries.into());
                    done.push(false);
                }
                Some(QueryChunk::Done { .. }) => {
                    heads.push(VecDeque::new());
                    done.push(true);
                }
                Some(QueryChunk::Failed(source)) => return Err(Error::Shard { shard, source }),
                None => return Err(Error::ShuttingDown),
            }
        }
        Ok(MergedQuery { streams, shards, heads, done, backward: spec.backward, remaining: spec.limit })
    }

    /// The next entry in order, `None` when the query is complete; `Err`
    /// when a shard failed midway.
    pub async fn next(&mut self) -> Result<Option<LogEntry>, Error> {
        if self.remaining == 0 {
            return Ok(None);
        }
        // Refill every shard whose buffer ran dry.
        for (index, stream) in self.streams.iter_mut().enumerate() {
            if self.heads[index].is_empty() && !self.done[index] {
                match stream.next().await {
                    Some(QueryChunk::Entries(entries)) => self.heads[index].extend(entries),
                    Some(QueryChunk::Done { .. }) => self.done[index] = true,
                    Some(QueryChunk::Failed(source)) => return Err(Error::Shard { shard: self.shards[index], source }),
                    // A stream that ends without `Done` was cut: its core
                    // is going away.
                    None => return Err(Error::ShuttingDown),
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
