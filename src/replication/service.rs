//! The gRPC services every node serves on `--grpc-addr`: `WormIngest`
//! (write and query, like the HTTP API) and `WormReplication` (the leader
//! side of replication: the exactly-once archive of followers' entries).
//!
//! Each (follower, follower shard) pair has one owner core on this node
//! ([`owner_of`]); a push stream accepted by another core forwards every
//! batch to the owner, which admits it against the pair's watermark
//! ([`super::watermark::admit`]) and appends the fresh entries with
//! [`Shard::append_replicated`](crate::shard::Shard::append_replicated),
//! one batch per pair at a time. So two streams of one pair can never both
//! append, and the archive of every pair is the dense range
//! `1..=watermark`, each seq once. The watermark itself lives in the data
//! (blocks record their origin) and is read back from the shards the first
//! time a pair is touched after a restart.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;
use futures_lite::future;
use futures_util::SinkExt;

use super::batch::{with_fresh_parts, PushedBatch};
use super::grpc::{Call, LocalFuture, MessageStream, Service};
use super::status::{Code, Status};
use super::watermark;
use crate::node::peers::{MergedQuery, QuerySpec, QueryStartError, Request};
use crate::node::Core;
use crate::proto::{
    PushAck, QueryRequest, ReplayRequest, WatermarkRequest, WatermarkResponse, WriteRequest, WriteResponse,
};
use crate::shard::block::with_log_entry_refs;
use crate::shard::{Error, Origin};

/// Entries a `ReplayFrom` reads from the owner core per round trip.
pub const REPLAY_CHUNK_ENTRIES: usize = 4096;
/// Entries one `Write` call may carry.
pub const WRITE_ENTRIES_MAX: usize = 1_000_000;
/// Default `limit` of a `Query` (as in the HTTP API).
pub const QUERY_LIMIT_DEFAULT: usize = 1000;
/// Largest `limit` of a `Query`.
pub const QUERY_LIMIT_MAX: usize = 10_000_000;
/// (follower, shard) pairs one core archives; more are refused, which
/// bounds the archive state.
pub const ARCHIVE_PAIRS_MAX: usize = 65_536;

/// The core of this node that owns the archive of `(follower_id, shard)`.
pub fn owner_of(follower_id: u32, shard: u32, cores: usize) -> usize {
    // A fixed mix (not a seeded hash): ownership must not change between
    // runs, or the first touch after a restart would read the wrong shard.
    let key = (u64::from(follower_id) << 32 | u64::from(shard)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((key >> 32) % cores.max(1) as u64) as usize
}

/// The archive counters of one pair, for stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairReport {
    /// Highest archived seq.
    pub watermark: u64,
    /// Entries archived since this node started.
    pub written: u64,
    /// Entries skipped as already archived since this node started.
    pub duplicates: u64,
}

/// A batch waiting for its pair's committer, and where its ack goes.
type Queued = (PushedBatch, oneshot::Sender<Result<PushAck, Status>>);

struct Pair {
    /// Batches waiting, in arrival order.
    queue: RefCell<Vec<Queued>>,
    /// A committer task is draining `queue`.
    committing: Cell<bool>,
    /// Highest archived (durable) seq; `None` until read from the shards.
    watermark: Cell<Option<u64>>,
    written: Cell<u64>,
    duplicates: Cell<u64>,
}

/// The pairs a core owns.
#[derive(Default)]
pub struct Archive {
    pairs: RefCell<BTreeMap<(u32, u32), Rc<Pair>>>,
}

impl Archive {
    /// Counters of every pair touched since start, by (follower, shard).
    pub fn report(&self) -> BTreeMap<(u32, u32), PairReport> {
        self.pairs
            .borrow()
            .iter()
            .map(|(&key, pair)| {
                let report = PairReport {
                    watermark: pair.watermark.get().unwrap_or(0),
                    written: pair.written.get(),
                    duplicates: pair.duplicates.get(),
                };
                (key, report)
            })
            .collect()
    }

    fn pair(&self, key: (u32, u32)) -> Result<Rc<Pair>, Status> {
        let mut pairs = self.pairs.borrow_mut();
        if let Some(pair) = pairs.get(&key) {
            return Ok(pair.clone());
        }
        if pairs.len() >= ARCHIVE_PAIRS_MAX {
            return Err(Status::resource_exhausted(format!(
                "this core already archives {ARCHIVE_PAIRS_MAX} (follower, shard) pairs (ARCHIVE_PAIRS_MAX)"
            )));
        }
        let pair = Rc::new(Pair {
            queue: RefCell::new(Vec::new()),
            committing: Cell::new(false),
            watermark: Cell::new(None),
            written: Cell::new(0),
            duplicates: Cell::new(0),
        });
        pairs.insert(key, pair.clone());
        Ok(pair)
    }
}

/// Maps a shard error to the status a gRPC client sees.
pub fn shard_status(error: Error) -> Status {
    match error {
        Error::InvalidEntry { index, source } => Status::invalid_argument(format!("entry {}: {source}", index + 1)),
        Error::InvalidAppend(message) => Status::resource_exhausted(message),
        error @ (Error::Backpressure { .. } | Error::DiskFull { .. }) => Status::resource_exhausted(error.to_string()),
        Error::Closed => Status::unavailable("shutting down"),
        error => Status::internal(error.to_string()),
    }
}

/// The pair's watermark, read from every shard the first time (after a
/// restart the pair's data may sit in any shard if the shard count changed).
async fn pair_watermark(core: &Core, pair: &Pair, key: (u32, u32)) -> Result<u64, Status> {
    if let Some(watermark) = pair.watermark.get() {
        return Ok(watermark);
    }
    let mut watermark = core.shard.origin_watermark(key.0, key.1);
    for (index, peer) in core.peers.iter().enumerate() {
        if index == core.shard.config().shard_id as usize {
            continue;
        }
        let (reply, answer) = oneshot::channel();
        peer.clone()
            .send(Request::OriginWatermark { node: key.0, shard: key.1, reply })
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        watermark = watermark.max(answer.await.map_err(|_| Status::unavailable("shutting down"))?);
    }
    pair.watermark.set(Some(watermark));
    Ok(watermark)
}

/// Queues one batch for archiving on its owner core (this one); the ack
/// (or the refusal) goes to `reply` once the batch's fresh entries are
/// durable. Synchronous, so batches of a stream queue in stream order.
///
/// One committer task per pair drains the queue: it admits every queued
/// batch in order against the running watermark and appends all their
/// fresh entries as **one** append (group commit, all or nothing), waits
/// for durability, then advances the watermark and answers. Batches that
/// arrive meanwhile form the next group. So the archive never gets a hole:
/// an append that fails leaves the watermark where it was, and nothing
/// queued behind it was appended.
pub fn archive_enqueue(core: &Rc<Core>, batch: PushedBatch, reply: oneshot::Sender<Result<PushAck, Status>>) {
    if core.closing.get() {
        let _ = reply.send(Err(Status::unavailable("shutting down")));
        return;
    }
    let key = (batch.follower_id, batch.shard);
    let pair = match core.archive.pair(key) {
        Ok(pair) => pair,
        Err(status) => {
            let _ = reply.send(Err(status));
            return;
        }
    };
    pair.queue.borrow_mut().push((batch, reply));
    if !pair.committing.replace(true) {
        glommio::spawn_local(commit_loop(core.clone(), pair, key)).detach();
    }
}

async fn commit_loop(core: Rc<Core>, pair: Rc<Pair>, key: (u32, u32)) {
    loop {
        let group = std::mem::take(&mut *pair.queue.borrow_mut());
        if group.is_empty() {
            pair.committing.set(false);
            return;
        }
        commit_group(&core, &pair, key, group).await;
    }
}

/// Raw bytes (bodies and tags) one group append may carry; a larger group
/// is committed in several appends, in order, stopping at the first failure.
const GROUP_BYTES_MAX: usize = 8 << 20;

async fn commit_group(core: &Core, pair: &Pair, key: (u32, u32), group: Vec<Queued>) {
    let mut watermark = match pair_watermark(core, pair, key).await {
        Ok(watermark) => watermark,
        Err(status) => {
            for (_, reply) in group {
                let _ = reply.send(Err(status.clone()));
            }
            return;
        }
    };
    let mut group = group.into_iter().peekable();
    while group.peek().is_some() {
        // Admit batches in order while they fit one append.
        let mut admitted: Vec<(Queued, Result<watermark::Admission, Status>)> = Vec::new();
        let mut expected = watermark;
        let mut bytes = 0usize;
        while let Some((batch, _)) = group.peek() {
            if !admitted.is_empty() && bytes + batch.message_bytes() > GROUP_BYTES_MAX {
                break;
            }
            bytes += batch.message_bytes();
            let queued = group.next().expect("peeked");
            let admission = watermark::admit(expected, queued.0.seqs());
            if let Ok(admission) = &admission {
                expected += admission.fresh as u64;
            }
            admitted.push((queued, admission));
        }
        let outcome = if expected > watermark {
            let origin = Origin { node: key.0, shard: key.1, first_seq: watermark + 1 };
            append_fresh(core, origin, &mut admitted).await
        } else {
            Ok(())
        };
        let failed = outcome.is_err();
        if !failed {
            watermark = expected;
            pair.watermark.set(Some(watermark));
        }
        let mut acked = watermark;
        for ((batch, reply), admission) in admitted {
            let result = match (&outcome, admission) {
                (Err(status), _) => Err(status.clone()),
                (Ok(()), Err(status)) => Err(status),
                (Ok(()), Ok(admission)) => {
                    pair.written.set(pair.written.get() + admission.fresh as u64);
                    pair.duplicates.set(pair.duplicates.get() + admission.duplicates as u64);
                    if admission.fresh > 0 {
                        acked = admission.watermark_after();
                    }
                    Ok(PushAck {
                        shard: batch.shard,
                        acked_seq: acked,
                        written: admission.fresh as u64,
                        duplicates: admission.duplicates as u64,
                    })
                }
            };
            let _ = reply.send(result);
        }
        if failed {
            let status = Status::new(Code::Aborted, "an earlier batch of this stream failed to archive");
            for (_, reply) in group {
                let _ = reply.send(Err(status.clone()));
            }
            return;
        }
    }
}

/// Appends the fresh entries of the admitted batches as one append, and
/// waits until they are durable.
async fn append_fresh(
    core: &Core,
    origin: Origin,
    admitted: &mut [(Queued, Result<watermark::Admission, Status>)],
) -> Result<(), Status> {
    let mut fresh: Vec<(&mut PushedBatch, usize)> = admitted
        .iter_mut()
        .filter_map(|((batch, _), admission)| admission.as_ref().ok().map(|admission| (batch, admission.duplicates)))
        .collect();
    let wait = with_fresh_parts(&mut fresh, |parts| core.shard.append_replicated_parts(origin, parts))?
        .map_err(shard_status)?;
    wait.durable().await.map(|_| ()).map_err(shard_status)
}

/// The watermark of a pair, answered by its owner core.
pub async fn watermark_local(core: &Core, follower_id: u32, shard: u32) -> Result<u64, Status> {
    let key = (follower_id, shard);
    let pair = core.archive.pair(key)?;
    pair_watermark(core, &pair, key).await
}

/// Batches of one push stream being archived at once.
pub const PUSH_BATCHES_IN_FLIGHT_MAX: usize = 16;

/// What a push stream's handler waits for.
enum Event {
    Batch(Result<Option<PushedBatch>, Status>),
    Ack(Result<Result<PushAck, Status>, oneshot::Canceled>),
}

/// Bytes of pushed batches one core may hold between reading them from
/// their streams and their acks (all streams together); a stream waits
/// (and HTTP/2 flow control stops its sender) while the budget is spent.
pub const PUSH_BYTES_IN_FLIGHT_PER_CORE_MAX: u64 = 256 << 20;

/// The gRPC services of one core.
pub struct Services {
    core: Rc<Core>,
    push_budget: Rc<glommio::sync::Semaphore>,
}

impl Services {
    /// The services of `core`.
    pub fn new(core: Rc<Core>) -> Services {
        Services { core, push_budget: Rc::new(glommio::sync::Semaphore::new(PUSH_BYTES_IN_FLIGHT_PER_CORE_MAX)) }
    }

    fn owner(&self, follower_id: u32, shard: u32) -> usize {
        owner_of(follower_id, shard, self.core.peers.len())
    }

    fn is_local(&self, owner: usize) -> bool {
        owner == self.core.shard.config().shard_id as usize
    }

    /// Runs `request` on core `owner` and waits for its answer.
    async fn ask<T>(
        &self,
        owner: usize,
        request: impl FnOnce(oneshot::Sender<Result<T, Status>>) -> Request,
    ) -> Result<T, Status> {
        let (reply, answer) = oneshot::channel();
        self.core.peers[owner].clone().send(request(reply)).await.map_err(|_| Status::unavailable("shutting down"))?;
        answer.await.map_err(|_| Status::unavailable("shutting down"))?
    }

    /// Hands a batch to its pair's owner core, in order; the receiver
    /// yields its ack once the batch is archived.
    async fn submit(&self, batch: PushedBatch) -> Result<oneshot::Receiver<Result<PushAck, Status>>, Status> {
        let owner = self.owner(batch.follower_id, batch.shard);
        let (reply, answer) = oneshot::channel();
        if self.is_local(owner) {
            archive_enqueue(&self.core, batch, reply);
        } else {
            self.core.peers[owner]
                .clone()
                .send(Request::Archive { batch, reply })
                .await
                .map_err(|_| Status::unavailable("shutting down"))?;
        }
        Ok(answer)
    }

    async fn write(&self, call: &mut Call) -> Result<(), Status> {
        let request: WriteRequest = single_message(call).await?;
        if request.entries.is_empty() {
            return Err(Status::invalid_argument("no entries in the WriteRequest"));
        }
        if request.entries.len() > WRITE_ENTRIES_MAX {
            return Err(Status::resource_exhausted(format!("over {WRITE_ENTRIES_MAX} entries in one WriteRequest")));
        }
        let wait = with_log_entry_refs(&request.entries, |refs| self.core.shard.append(refs)).map_err(shard_status)?;
        let range = wait.durable().await.map_err(shard_status)?;
        {
            let mut counters = self.core.counters.borrow_mut();
            counters.ingest_requests += 1;
            counters.ingest_entries += request.entries.len() as u64;
        }
        let response =
            WriteResponse { shard: self.core.shard.config().shard_id, first_seq: range.first, last_seq: range.last };
        call.send(&response).await
    }

    async fn query(&self, call: &mut Call) -> Result<(), Status> {
        let request: QueryRequest = single_message(call).await?;
        let to_ts = if request.to_ns == 0 { i64::MAX } else { request.to_ns };
        if request.from_ns > to_ts {
            return Err(Status::invalid_argument("from_ns is after to_ns"));
        }
        let limit = match request.limit as usize {
            0 => QUERY_LIMIT_DEFAULT,
            limit => limit.min(QUERY_LIMIT_MAX),
        };
        let spec = Arc::new(QuerySpec {
            tags: request.tags.into_iter().collect(),
            from_ts: request.from_ns,
            to_ts,
            limit,
            backward: false,
        });
        self.core.counters.borrow_mut().queries += 1;
        let mut merged = match MergedQuery::start(&self.core, spec).await {
            Ok(merged) => merged,
            Err(QueryStartError::ShuttingDown) => return Err(Status::unavailable("shutting down")),
            Err(QueryStartError::Failed(message)) => return Err(Status::internal(message)),
        };
        while let Some(entry) = merged.next().await.map_err(Status::internal)? {
            call.send(&entry).await?;
        }
        Ok(())
    }

    /// PushEntries (one final ack) and Replicate (an ack per batch, as soon
    /// as it is durable). Up to [`PUSH_BATCHES_IN_FLIGHT_MAX`] batches of a
    /// stream are being archived at once (they group-commit on the owner);
    /// acks go out in batch order.
    async fn push(&self, call: &mut Call, ack_each: bool) -> Result<(), Status> {
        let mut key = None;
        let mut total = PushAck::default();
        let mut in_flight: VecDeque<(oneshot::Receiver<Result<PushAck, Status>>, glommio::sync::StaticPermit)> =
            VecDeque::new();
        let mut input_done = false;
        let mut refused = None;
        if ack_each {
            // Response headers now, as a tonic server does: a client may wait
            // for them before it sends its first batch.
            call.flush().await?;
        }
        loop {
            let can_read = !input_done && in_flight.len() < PUSH_BATCHES_IN_FLIGHT_MAX;
            let event = match in_flight.front_mut().map(|(head, _)| head) {
                None if !can_read => break,
                None => Event::Batch(next_batch(&mut call.messages).await),
                Some(head) if !can_read => Event::Ack(head.await),
                Some(head) => {
                    future::or(async { Event::Ack(head.await) }, async {
                        Event::Batch(next_batch(&mut call.messages).await)
                    })
                    .await
                }
            };
            match event {
                Event::Batch(Err(status)) => {
                    // Answer the batches before the bad one, then fail.
                    refused = Some(status);
                    input_done = true;
                }
                Event::Batch(Ok(None)) => input_done = true,
                Event::Batch(Ok(Some(batch))) => {
                    let batch_key = (batch.follower_id, batch.shard);
                    match key {
                        None => key = Some(batch_key),
                        Some(key) if key != batch_key => {
                            refused = Some(Status::invalid_argument(format!(
                                "a stream carries one (follower, shard) pair: got ({}, {}) after ({}, {})",
                                batch_key.0, batch_key.1, key.0, key.1
                            )));
                            input_done = true;
                            continue;
                        }
                        Some(_) => {}
                    }
                    let bytes = (batch.message_bytes() as u64).min(PUSH_BYTES_IN_FLIGHT_PER_CORE_MAX);
                    let permit = self
                        .push_budget
                        .acquire_static_permit(bytes)
                        .await
                        .map_err(|_| Status::unavailable("shutting down"))?;
                    in_flight.push_back((self.submit(batch).await?, permit));
                }
                Event::Ack(answer) => {
                    in_flight.pop_front();
                    let ack = answer.map_err(|_| Status::unavailable("shutting down"))??;
                    total = PushAck {
                        shard: ack.shard,
                        acked_seq: ack.acked_seq,
                        written: total.written + ack.written,
                        duplicates: total.duplicates + ack.duplicates,
                    };
                    if ack_each {
                        call.send(&total).await?;
                        call.flush().await?;
                    }
                }
            }
        }
        if let Some(status) = refused {
            return Err(status);
        }
        if !ack_each {
            if let Some((follower_id, shard)) = key.filter(|_| total.acked_seq == 0) {
                // Only empty batches: still answer with the watermark.
                total.shard = shard;
                total.acked_seq = self.watermark(follower_id, shard).await?;
            }
            call.send(&total).await?;
        }
        Ok(())
    }

    async fn watermark(&self, follower_id: u32, shard: u32) -> Result<u64, Status> {
        let owner = self.owner(follower_id, shard);
        if self.is_local(owner) {
            watermark_local(&self.core, follower_id, shard).await
        } else {
            self.ask(owner, |reply| Request::Watermark { follower_id, shard, reply }).await
        }
    }

    async fn get_watermark(&self, call: &mut Call) -> Result<(), Status> {
        let request: WatermarkRequest = single_message(call).await?;
        let acked_seq = self.watermark(request.follower_id, request.shard).await?;
        call.send(&WatermarkResponse { acked_seq }).await
    }

    async fn replay_from(&self, call: &mut Call) -> Result<(), Status> {
        let request: ReplayRequest = single_message(call).await?;
        let (node, shard) = (request.follower_id, request.shard);
        let owner = self.owner(node, shard);
        let mut from_seq = request.from_seq.max(1);
        loop {
            let entries = self
                .ask(owner, |reply| Request::ReadOrigin { node, shard, from_seq, limit: REPLAY_CHUNK_ENTRIES, reply })
                .await?;
            let Some(last) = entries.last() else { return Ok(()) };
            from_seq = last.seq + 1;
            for entry in &entries {
                call.send(entry).await?;
            }
        }
    }
}

/// The next pushed batch of a stream, parsed in place.
async fn next_batch(messages: &mut MessageStream) -> Result<Option<PushedBatch>, Status> {
    match messages.next_bytes().await? {
        None => Ok(None),
        Some(message) => PushedBatch::parse(message).map(Some),
    }
}

/// Reads the one request message of a unary or server-streaming call.
async fn single_message<M: prost::Message + Default>(call: &mut Call) -> Result<M, Status> {
    let message = call.messages.next::<M>().await?.ok_or_else(|| Status::invalid_argument("no request message"))?;
    if call.messages.next_bytes().await?.is_some() {
        return Err(Status::invalid_argument("more than one request message"));
    }
    Ok(message)
}

impl Service for Services {
    fn call<'a>(self: Rc<Self>, path: &'a str, call: &'a mut Call) -> LocalFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            if self.core.closing.get() {
                return Err(Status::unavailable("shutting down"));
            }
            match path {
                "/wormdb.v1.WormIngest/Write" => self.write(call).await,
                "/wormdb.v1.WormIngest/Query" => self.query(call).await,
                "/wormdb.v1.WormReplication/PushEntries" => self.push(call, false).await,
                "/wormdb.v1.WormReplication/Replicate" => self.push(call, true).await,
                "/wormdb.v1.WormReplication/GetWatermark" => self.get_watermark(call).await,
                "/wormdb.v1.WormReplication/ReplayFrom" => self.replay_from(call).await,
                _ => Err(Status::unimplemented(format!("unknown method {path}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_stable_and_spreads_pairs() {
        assert_eq!(owner_of(7, 3, 1), 0);
        let mut counts = [0usize; 4];
        for follower in 0..64 {
            for shard in 0..4 {
                let owner = owner_of(follower, shard, 4);
                assert_eq!(owner, owner_of(follower, shard, 4));
                counts[owner] += 1;
            }
        }
        assert!(counts.iter().all(|&count| count > 32), "{counts:?}");
    }
}
