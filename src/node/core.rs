//! One core's state ([`Core`]) and the calls that route work to the core
//! that owns it: a query to every shard, an archive batch to its pair's
//! owner, a report from every core.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use futures_channel::{mpsc, oneshot};
use futures_util::SinkExt;

use super::peers::{Request, ShardReport};
use crate::config::NodeConfig;
use crate::limits::{QUERY_CHUNKS_BUFFERED, TAIL_CHUNKS_BUFFERED_MAX};
use crate::proto::{LogEntry, PushAck};
use crate::query::{self, MergedQuery, QuerySpec};
use crate::replication::batch::PushedBatch;
use crate::replication::follower::FollowerState;
use crate::replication::leader::{self, owner_of, Archive};
use crate::replication::{self, Host};
use crate::shard::{EntryFilter, Shard};
use crate::tier::replica::Replica;

/// Requests refused, by reason, on one core (for `/metrics`).
#[derive(Clone, Debug, Default)]
pub struct Rejections {
    /// 400
    pub malformed: u64,
    /// 413
    pub too_large: u64,
    /// 415
    pub unsupported_media_type: u64,
    /// 429
    pub backpressure: u64,
    /// 503
    pub shutting_down: u64,
    /// 507
    pub disk_full: u64,
    /// 500
    pub internal: u64,
}

/// Counters of one core's HTTP traffic.
#[derive(Clone, Debug, Default)]
pub struct HttpCounters {
    /// Ingest requests that stored their entries.
    pub ingest_requests: u64,
    /// Entries stored through this core.
    pub ingest_entries: u64,
    /// Request body bytes of successful ingests.
    pub ingest_bytes: u64,
    /// Refused requests.
    pub rejected: Rejections,
    /// Query requests served.
    pub queries: u64,
    /// Tail subscribers disconnected for falling behind.
    pub tails_lagged: u64,
    /// The shippers' protocols, at [`Protocol::index`](crate::ingest::Protocol::index).
    pub protocols: [ProtocolCounters; crate::ingest::Protocol::ALL.len()],
}

/// Counters of one shipper's protocol on one core (the `protocol` label of
/// `/metrics`).
#[derive(Clone, Debug, Default)]
pub struct ProtocolCounters {
    /// Requests (syslog: batches of frames) stored.
    pub requests: u64,
    /// Entries stored.
    pub entries: u64,
    /// Bytes received of stored requests, as on the wire.
    pub bytes: u64,
    /// Requests refused, by reason.
    pub refused: Rejections,
    /// Messages dropped unread (syslog over UDP).
    pub dropped: u64,
}

/// One core's state: its shard, its way to the other cores, its counters.
pub struct Core {
    /// This core's shard.
    pub shard: Shard,
    /// The node configuration.
    pub config: Arc<NodeConfig>,
    /// One sender per core (index = shard id), this one included.
    pub peers: Vec<mpsc::Sender<Request>>,
    /// Set when shutdown began: ingest answers 503.
    pub closing: Cell<bool>,
    /// Requests being handled (not counting streaming bodies).
    pub in_flight: Cell<usize>,
    /// HTTP counters.
    pub counters: RefCell<HttpCounters>,
    /// The (follower, shard) pairs this core archives as a leader.
    pub archive: Archive,
    /// This shard's pusher, when the node follows a leader.
    pub follower: FollowerState,
    /// This core's replica of its archive group, on a tier member.
    pub tier: Option<Rc<Replica>>,
}

/// Counts a request as in flight while alive.
pub struct InFlight(Rc<Core>);

impl InFlight {
    /// Starts counting.
    pub fn new(core: &Rc<Core>) -> InFlight {
        core.in_flight.set(core.in_flight.get() + 1);
        InFlight(core.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get() - 1);
    }
}

impl Core {
    /// A new core's state around its opened shard and its pusher's state
    /// (which the shard's retention veto already shares).
    pub fn new(
        shard: Shard,
        config: Arc<NodeConfig>,
        peers: Vec<mpsc::Sender<Request>>,
        follower: FollowerState,
        tier: Option<Rc<Replica>>,
    ) -> Core {
        Core {
            shard,
            config,
            peers,
            closing: Cell::new(false),
            in_flight: Cell::new(0),
            counters: RefCell::new(HttpCounters::default()),
            archive: Archive::default(),
            follower,
            tier,
        }
    }

    /// This core's shard id.
    pub fn shard_id(&self) -> u32 {
        self.shard.config().shard_id
    }

    /// Sends `request` to core `index`; `Err` when that core is gone.
    async fn send(&self, index: usize, request: Request) -> Result<(), ShuttingDown> {
        self.peers[index].clone().send(request).await.map_err(|_| ShuttingDown)
    }

    /// Starts `spec` on every shard and merges their streams.
    pub async fn query(&self, spec: Arc<QuerySpec>) -> Result<MergedQuery, query::Error> {
        let mut streams = Vec::with_capacity(self.peers.len());
        for index in 0..self.peers.len() {
            let (sink, receiver) = mpsc::channel(QUERY_CHUNKS_BUFFERED);
            self.send(index, Request::Query { spec: spec.clone(), sink })
                .await
                .map_err(|ShuttingDown| query::Error::ShuttingDown)?;
            streams.push((index as u32, receiver));
        }
        MergedQuery::start(streams, &spec).await
    }

    /// Subscribes to every shard's new entries that `filter` keeps: one
    /// stream and one "dropped for falling behind" flag per shard.
    pub async fn tail(
        &self,
        filter: Arc<EntryFilter>,
    ) -> Result<(Vec<mpsc::Receiver<Vec<LogEntry>>>, Vec<Arc<AtomicBool>>), ShuttingDown> {
        let mut streams = Vec::with_capacity(self.peers.len());
        let mut lag_flags = Vec::with_capacity(self.peers.len());
        for index in 0..self.peers.len() {
            let (sink, receiver) = mpsc::channel(TAIL_CHUNKS_BUFFERED_MAX);
            let lagged = Arc::new(AtomicBool::new(false));
            self.send(index, Request::Tail { filter: filter.clone(), sink, lagged: lagged.clone() }).await?;
            streams.push(receiver);
            lag_flags.push(lagged);
        }
        Ok((streams, lag_flags))
    }

    /// Every core's report, in shard order.
    pub async fn reports(&self) -> Result<Vec<ShardReport>, ShuttingDown> {
        let mut replies = Vec::with_capacity(self.peers.len());
        for index in 0..self.peers.len() {
            let (reply, receiver) = oneshot::channel();
            self.send(index, Request::Report { reply }).await?;
            replies.push(receiver);
        }
        let mut reports = Vec::with_capacity(replies.len());
        for receiver in replies {
            reports.push(receiver.await.map_err(|_| ShuttingDown)?);
        }
        Ok(reports)
    }

    /// The core that owns the archive of `(follower_id, shard)`.
    fn owner(&self, follower_id: u32, shard: u32) -> usize {
        owner_of(follower_id, shard, self.peers.len())
    }

    fn is_local(&self, owner: usize) -> bool {
        owner == self.shard_id() as usize
    }

    /// Runs `request` on core `owner` and waits for its answer.
    async fn ask<T>(
        &self,
        owner: usize,
        request: impl FnOnce(oneshot::Sender<Result<T, replication::Error>>) -> Request,
    ) -> Result<T, replication::Error> {
        let (reply, answer) = oneshot::channel();
        self.send(owner, request(reply)).await.map_err(|ShuttingDown| replication::Error::ShuttingDown)?;
        answer.await.map_err(|_| replication::Error::ShuttingDown)?
    }

    /// Hands a pushed batch to its pair's owner core, in order; the
    /// receiver yields its ack once the batch is archived.
    pub async fn archive_batch(
        self: &Rc<Self>,
        batch: PushedBatch,
    ) -> Result<oneshot::Receiver<Result<PushAck, replication::Error>>, replication::Error> {
        let owner = self.owner(batch.follower_id, batch.shard);
        let (reply, answer) = oneshot::channel();
        if self.is_local(owner) {
            self.archive_here(batch, reply);
        } else {
            self.send(owner, Request::Archive { batch, reply })
                .await
                .map_err(|ShuttingDown| replication::Error::ShuttingDown)?;
        }
        Ok(answer)
    }

    /// Archives a batch whose pair this core owns: proposed to this core's
    /// group on a tier member, else straight into the shard.
    pub fn archive_here(self: &Rc<Self>, batch: PushedBatch, reply: leader::AckSender) {
        match &self.tier {
            Some(replica) => replica.propose_push(batch, reply),
            None => leader::enqueue(self, batch, reply),
        }
    }

    /// The watermark of a pair this core owns: linearizable (ReadIndex) on
    /// a tier member, which refuses unless it leads the group.
    pub async fn watermark_here(&self, follower_id: u32, shard: u32) -> Result<u64, replication::Error> {
        match &self.tier {
            Some(replica) => replica.read_watermark((follower_id, shard)).await.map_err(Into::into),
            None => leader::watermark(self, follower_id, shard).await,
        }
    }

    /// Runs `work` on core `index` with that core's state, and waits for
    /// its answer: how the tier's peer calls reach their group's core.
    pub async fn run_on<T, F, Fut>(self: &Rc<Self>, index: usize, work: F) -> Result<T, ShuttingDown>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Core>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
    {
        if self.is_local(index) {
            return Ok(work(self.clone()).await);
        }
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn FnOnce(Rc<Core>) + Send> = Box::new(move |core| {
            glommio::spawn_local(async move {
                let _ = reply.send(work(core).await);
            })
            .detach();
        });
        self.send(index, Request::OnCore(job)).await?;
        answer.await.map_err(|_| ShuttingDown)
    }

    /// The archive watermark of `(follower_id, shard)`, from its owner core.
    pub async fn archive_watermark(&self, follower_id: u32, shard: u32) -> Result<u64, replication::Error> {
        let owner = self.owner(follower_id, shard);
        if self.is_local(owner) {
            self.watermark_here(follower_id, shard).await
        } else {
            self.ask(owner, |reply| Request::Watermark { follower_id, shard, reply }).await
        }
    }

    /// Archived entries of `(node, shard)` from origin seq `from_seq` on,
    /// at most `limit`, from the pair's owner core.
    pub async fn archived_entries(
        &self,
        node: u32,
        shard: u32,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, replication::Error> {
        let owner = self.owner(node, shard);
        self.ask(owner, |reply| Request::ReadOrigin { node, shard, from_seq, limit, reply }).await
    }
}

/// A core the request needed is gone: the node is shutting down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("shutting down")]
pub struct ShuttingDown;

impl Host for Core {
    fn node_id(&self) -> u32 {
        self.config.node_id
    }

    fn shard(&self) -> &Shard {
        &self.shard
    }

    fn closing(&self) -> bool {
        self.closing.get()
    }

    fn archive(&self) -> &Archive {
        &self.archive
    }

    fn follower(&self) -> &FollowerState {
        &self.follower
    }

    async fn origin_watermark_elsewhere(&self, node: u32, shard: u32) -> Result<u64, replication::Error> {
        let mut watermark = 0;
        for index in 0..self.peers.len() {
            if index == self.shard_id() as usize {
                continue;
            }
            let (reply, answer) = oneshot::channel();
            self.send(index, Request::OriginWatermark { node, shard, reply })
                .await
                .map_err(|ShuttingDown| replication::Error::ShuttingDown)?;
            watermark = watermark.max(answer.await.map_err(|_| replication::Error::ShuttingDown)?);
        }
        Ok(watermark)
    }
}
