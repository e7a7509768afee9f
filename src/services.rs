//! The gRPC front door: the services every node serves on `--grpc-addr`,
//! `WormIngest` (write and query, like the HTTP API) and `WormReplication`
//! (the leader side of replication: push streams, watermarks, replay), on
//! the hand-rolled transport of [`crate::grpc`]. Each call is turned into a
//! call on the core ([`Core`]); the archive's rules live in
//! [`crate::replication::leader`], and errors become gRPC statuses here.
//!
//! Every call is authorized ([`crate::auth`]) from its metadata and its
//! connection's certificate before its first message is read; a follower
//! call is checked again against the follower id its first message names,
//! before anything is stored. A token's ingest rate refuses a `Write` over
//! it with `RESOURCE_EXHAUSTED` and a retry pushback, and paces a push
//! stream (each batch waits until the bucket holds it: flow control, not a
//! refusal, so a throttled follower's stream is never torn down and
//! re-pushed).

mod otlp;

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;
use futures_lite::future;

use crate::auth::{self, Grant, Refusal};
use crate::codec::block::{validate_entry, with_log_entry_refs};
use crate::grpc::status::{Code, Status};
use crate::grpc::transport as grpc_transport;
use crate::grpc::transport::{Call, LocalFuture, MessageStream, Service};
use crate::index::words::WordQuery;
use crate::limits::{
    PUSH_BATCHES_IN_FLIGHT_MAX, PUSH_BYTES_IN_FLIGHT_PER_CORE_MAX, QUERY_LIMIT_DEFAULT, QUERY_LIMIT_MAX,
    REPLAY_CHUNK_ENTRIES, WRITE_ENTRIES_MAX,
};
use crate::node::Core;
use crate::proto::{
    ClusterStatusRequest, ClusterStatusResponse, Direction, ForwardWrite, GroupChange, GroupChangeResponse,
    JoinRequest, JoinResponse, Member, OriginWatermark, PushAck, QueryRequest, RaftAck, RaftBatch, RemoveRequest,
    RemoveResponse, ReplayRequest, SnapshotChunk, TransferLeaderRequest, TransferLeaderResponse, WatermarkRequest,
    WatermarkResponse, WatermarksRequest, WatermarksResponse, WriteRequest, WriteResponse,
};
use crate::query::{self, QuerySpec};
use crate::replication::batch::PushedBatch;
use crate::replication::{self, shard_status};
use crate::shard::Substrings;
use crate::tier::replica::Change;
use crate::tier::{self, transport};

/// How long `WormCluster` calls keep trying a group whose leader is being
/// elected or busy with another change.
const CHANGE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// The pause between two tries.
const CHANGE_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Accepts gRPC connections until cancelled, serving each on its own task
/// (its TLS handshake too, when `tls` is given); `auth` is this core's view
/// of the node's authentication.
pub async fn accept_loop(
    core: Rc<Core>,
    listener: glommio::net::TcpListener,
    tls: Option<Arc<crate::tls::NodeTls>>,
    auth: Rc<auth::Local>,
) {
    let services = Rc::new(Services::new(core.clone(), auth.clone()));
    let closing = core.clone();
    let options = Rc::new(grpc_transport::ServerOptions {
        max_message_bytes: crate::limits::MESSAGE_BYTES_MAX,
        closing: Rc::new(move || closing.closing.get()),
    });
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "grpc accept failed");
                glommio::timer::sleep(crate::limits::ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let Some(slot) = auth.guard().grpc_connections.admit_logged("grpc") else { continue };
        let (services, options, tls) = (services.clone(), options.clone(), tls.clone());
        glommio::spawn_local(async move {
            let addr = stream.peer_addr().ok();
            let config = tls.and_then(|tls| tls.config(crate::tls::Listener::Grpc));
            if let Some((stream, identity)) = crate::tls::accept(stream, config, crate::tls::Listener::Grpc).await {
                if let Some(identity) = &identity {
                    // gRPC connections are few and long-lived (followers,
                    // members, tools): worth a line each.
                    tracing::info!(peer = ?addr, %identity, "grpc: client certificate verified");
                }
                let peer = crate::net::Peer { addr, identity };
                grpc_transport::serve_connection(stream, peer, services, options).await;
            }
            drop(slot);
        })
        .detach();
    }
}

/// The status of a refused call: `UNAUTHENTICATED` for a caller not
/// known, `PERMISSION_DENIED` for one whose credential does not cover it.
fn refusal_status(refusal: Refusal) -> Status {
    let code = if refusal.reason.is_unauthenticated() { Code::Unauthenticated } else { Code::PermissionDenied };
    Status::new(code, refusal.message)
}

/// What a push stream's handler waits for.
enum Event {
    Batch(Result<Option<PushedBatch>, Status>),
    Ack(Result<Result<PushAck, replication::Error>, oneshot::Canceled>),
}

/// The gRPC services of one core.
pub struct Services {
    core: Rc<Core>,
    push_budget: Rc<glommio::sync::Semaphore>,
    auth: Rc<auth::Local>,
}

impl Services {
    /// The services of `core`, authorized by `auth`.
    pub fn new(core: Rc<Core>, auth: Rc<auth::Local>) -> Services {
        Services { core, push_budget: Rc::new(glommio::sync::Semaphore::new(PUSH_BYTES_IN_FLIGHT_PER_CORE_MAX)), auth }
    }

    /// Whether `grant` may act as follower `id` in `call`; a refusal is
    /// counted.
    fn check_follower(&self, grant: &Grant, id: u32, call: &Call) -> Result<(), Status> {
        grant.check_follower(id).map_err(|refusal| {
            self.auth.refused(&refusal, &"a follower call", call.peer.addr);
            refusal_status(refusal)
        })
    }

    async fn write(&self, call: &mut Call, grant: &Grant) -> Result<(), Status> {
        let request: WriteRequest = single_message(call).await?;
        if request.entries.is_empty() {
            return Err(Status::invalid_argument("no entries in the WriteRequest"));
        }
        if request.entries.len() > WRITE_ENTRIES_MAX {
            return Err(Status::resource_exhausted(format!("over {WRITE_ENTRIES_MAX} entries in one WriteRequest")));
        }
        if let Some(rate) = grant.rate() {
            if let Err(wait) = rate.take(request.entries.len() as u64) {
                return Err(Status::resource_exhausted_for(
                    format!(
                        "{} is over its rate of {} entries/s; retry in {} ms",
                        grant.holder(),
                        rate.entries_per_s(),
                        wait.as_millis() + 1
                    ),
                    wait,
                ));
            }
        }
        if let Some(replica) = &self.core.tier {
            // On the tier a write is replicated: validated here, proposed to
            // this core's group (through its leader), answered once committed.
            with_log_entry_refs(&request.entries, |entries| {
                entries.iter().enumerate().try_for_each(|(index, entry)| {
                    validate_entry(entry)
                        .map_err(|error| Status::invalid_argument(format!("entry {}: {error}", index + 1)))
                })
            })?;
            let count = request.entries.len() as u64;
            let (first_seq, last_seq) = replica.write(request.entries).await?;
            {
                let mut counters = self.core.counters.borrow_mut();
                counters.ingest_requests += 1;
                counters.ingest_entries += count;
            }
            return call.send(&WriteResponse { shard: replica.group_id(), first_seq, last_seq }).await;
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
        if request.fields.len() > crate::limits::QUERY_FIELDS_MAX {
            return Err(Status::invalid_argument(format!(
                "more than {} field predicates (QUERY_FIELDS_MAX)",
                crate::limits::QUERY_FIELDS_MAX
            )));
        }
        let words = WordQuery::parse(request.words.iter().map(String::as_str))
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        // proto3 cannot tell an empty string from an absent one: empty is none.
        let contains = Substrings::parse((!request.contains.is_empty()).then_some(request.contains.as_str()))
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let backward = match Direction::try_from(request.direction) {
            Ok(Direction::Forward) => false,
            Ok(Direction::Backward) => true,
            Err(_) => return Err(Status::invalid_argument(format!("unknown direction {}", request.direction))),
        };
        let spec = Arc::new(QuerySpec {
            tags: request.tags.into_iter().collect(),
            fields: request.fields.into_iter().collect(),
            from_ts: request.from_ns,
            to_ts,
            limit,
            backward,
            words,
            contains,
        });
        self.core.counters.borrow_mut().queries += 1;
        let mut merged = self.core.query(spec).await.map_err(query_status)?;
        while let Some(entry) = merged.next().await.map_err(query_status)? {
            call.send(&entry).await?;
        }
        Ok(())
    }

    /// PushEntries (one final ack) and Replicate (an ack per batch, as soon
    /// as it is durable). Up to [`PUSH_BATCHES_IN_FLIGHT_MAX`] batches of a
    /// stream are being archived at once (they group-commit on the owner);
    /// acks go out in batch order.
    async fn push(&self, call: &mut Call, grant: &Grant, ack_each: bool) -> Result<(), Status> {
        let mut key = None;
        let mut total = PushAck::default();
        let mut in_flight: VecDeque<(
            oneshot::Receiver<Result<PushAck, replication::Error>>,
            glommio::sync::StaticPermit,
        )> = VecDeque::new();
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
                        None => {
                            if let Err(status) = self.check_follower(grant, batch.follower_id, call) {
                                refused = Some(status);
                                input_done = true;
                                continue;
                            }
                            key = Some(batch_key);
                        }
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
                    if let Some(rate) = grant.rate() {
                        // Paced, not refused (see the module doc).
                        while let Err(wait) = rate.take(batch.len() as u64) {
                            glommio::timer::sleep(wait).await;
                        }
                    }
                    let bytes = (batch.message_bytes() as u64).min(PUSH_BYTES_IN_FLIGHT_PER_CORE_MAX);
                    let permit = self
                        .push_budget
                        .acquire_static_permit(bytes)
                        .await
                        .map_err(|_| Status::unavailable("shutting down"))?;
                    in_flight.push_back((self.core.archive_batch(batch).await?, permit));
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
                total.acked_seq = self.core.archive_watermark(follower_id, shard).await?;
            }
            call.send(&total).await?;
        }
        Ok(())
    }

    /// The index of the group a peer call names, checked.
    fn group_index(&self, group: u32) -> Result<usize, Status> {
        if self.core.tier.is_none() {
            return Err(Status::failed_precondition("this node is not a member of an archive tier"));
        }
        if group as usize >= self.core.peers.len() {
            return Err(Status::invalid_argument(format!(
                "group {group}: this node has {} groups (--shards differs across the tier?)",
                self.core.peers.len()
            )));
        }
        Ok(group as usize)
    }

    /// `WormRaft.Send`: a member's stream of Raft message batches, each
    /// handed to its group's core.
    async fn raft_send(&self, call: &mut Call) -> Result<(), Status> {
        while let Some(batch) = call.messages.next::<RaftBatch>().await? {
            let index = self.group_index(batch.group)?;
            let received = self
                .core
                .run_on(index, move |core| async move {
                    match &core.tier {
                        Some(replica) => replica.receive(batch.from, batch.to, &batch.messages),
                        None => Err(tier::Error::ShuttingDown),
                    }
                })
                .await
                .map_err(|_| Status::unavailable("shutting down"))?;
            received?;
        }
        call.send(&RaftAck {}).await
    }

    /// `WormRaft.Watermarks`: this replica's origin watermarks.
    async fn raft_watermarks(&self, call: &mut Call) -> Result<(), Status> {
        let request: WatermarksRequest = single_message(call).await?;
        let index = self.group_index(request.group)?;
        let watermarks =
            self.core
                .run_on(index, |core| async move {
                    core.tier.as_ref().map(|replica| replica.watermarks()).unwrap_or_default()
                })
                .await
                .map_err(|_| Status::unavailable("shutting down"))?;
        let watermarks =
            watermarks.into_iter().map(|((node, shard), seq)| OriginWatermark { node, shard, seq }).collect();
        call.send(&WatermarksResponse { watermarks }).await
    }

    /// `WormRaft.Snapshot`: a snapshot stream, chunk by chunk into the
    /// group's shard, then its `MsgSnapshot` into the group.
    async fn raft_snapshot(&self, call: &mut Call) -> Result<(), Status> {
        while let Some(chunk) = call.messages.next::<SnapshotChunk>().await? {
            let index = self.group_index(chunk.group)?;
            let installed = self
                .core
                .run_on(index, move |core| async move {
                    match &core.tier {
                        Some(replica) => replica.install_chunk(chunk).await,
                        None => Err(tier::Error::ShuttingDown),
                    }
                })
                .await
                .map_err(|_| Status::unavailable("shutting down"))?;
            installed?;
        }
        call.send(&RaftAck {}).await
    }

    /// `WormRaft.Write`: a direct write another member forwarded to this
    /// node because it leads the group; proposed here, never forwarded on.
    async fn raft_write(&self, call: &mut Call) -> Result<(), Status> {
        let request: ForwardWrite = single_message(call).await?;
        let index = self.group_index(request.group)?;
        if request.entries.is_empty() || request.entries.len() > WRITE_ENTRIES_MAX {
            return Err(Status::invalid_argument("a forwarded write holds 1 to WRITE_ENTRIES_MAX entries"));
        }
        let group = request.group;
        let written = self
            .core
            .run_on(index, move |core| async move {
                match &core.tier {
                    Some(replica) => match replica.propose_direct(request.entries).await {
                        Ok(answer) => answer,
                        Err(_) => Err(tier::Error::ShuttingDown),
                    },
                    None => Err(tier::Error::ShuttingDown),
                }
            })
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let (first_seq, last_seq) = written?;
        call.send(&WriteResponse { shard: group, first_seq, last_seq }).await
    }

    /// Runs `change` on group `group` from its core (which sends it to the
    /// group's leader), trying again while the group elects or finishes
    /// another change.
    async fn change_group(&self, group: u32, change: Change) -> Result<(), tier::Error> {
        let deadline = std::time::Instant::now() + CHANGE_DEADLINE;
        loop {
            let outcome = self
                .core
                .run_on(group as usize, move |core| async move {
                    match &core.tier {
                        Some(replica) => replica.change(change).await,
                        None => Err(tier::Error::Refused("this node is not a member of an archive tier".into())),
                    }
                })
                .await
                .map_err(|_| tier::Error::ShuttingDown)?;
            match outcome {
                Err(tier::Error::NotLeader { .. } | tier::Error::Busy(_) | tier::Error::Dropped { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    glommio::timer::sleep(CHANGE_RETRY).await;
                }
                outcome => return outcome,
            }
        }
    }

    fn groups(&self) -> std::ops::Range<u32> {
        0..self.core.peers.len() as u32
    }

    /// `WormCluster.Join`: adds the node as a learner of every group (each
    /// promotes it once it caught up); answers the members.
    async fn cluster_join(&self, call: &mut Call) -> Result<(), Status> {
        let request: JoinRequest = single_message(call).await?;
        self.group_index(0)?;
        let addr: std::net::SocketAddr = request
            .addr
            .parse()
            .map_err(|_| Status::invalid_argument(format!("join: {:?} is not a HOST:PORT address", request.addr)))?;
        let change =
            Change::from_proto(&GroupChange { node_id: request.node_id, addr: request.addr, ..Default::default() })?;
        for group in self.groups() {
            self.change_group(group, change).await?;
        }
        tracing::info!(node = request.node_id, %addr, "a node joined the tier as a learner of every group");
        let members = self.core.tier.as_ref().map(|replica| replica.members().addrs).unwrap_or_default();
        let members = members.into_iter().map(|(node_id, addr)| Member { node_id, addr: addr.to_string() }).collect();
        call.send(&JoinResponse { members }).await
    }

    /// `WormCluster.Remove`: takes the node out of every group (each hands
    /// its leadership over first when the node leads it).
    async fn cluster_remove(&self, call: &mut Call) -> Result<(), Status> {
        let request: RemoveRequest = single_message(call).await?;
        self.group_index(0)?;
        let node = request.node_id;
        let known = self.core.tier.as_ref().is_some_and(|replica| replica.members().addr(node).is_some());
        if !known {
            return Err(Status::failed_precondition(format!("remove: node {node} is not a member of the tier")));
        }
        for group in self.groups() {
            match self.change_group(group, Change::Remove { node }).await {
                // Already out of this group (a remove retried).
                Err(tier::Error::Refused(message)) if message.contains("is not a member") => {}
                outcome => outcome?,
            }
        }
        tracing::info!(node, "a node was removed from the tier");
        call.send(&RemoveResponse {}).await
    }

    /// `WormCluster.TransferLeader`: hands group `group`'s leadership to
    /// the node.
    async fn cluster_transfer(&self, call: &mut Call) -> Result<(), Status> {
        let request: TransferLeaderRequest = single_message(call).await?;
        self.group_index(request.group)?;
        if request.node_id == 0 {
            return Err(Status::invalid_argument("transfer: node ids are 1 and up"));
        }
        self.change_group(request.group, Change::Transfer { node: request.node_id }).await?;
        call.send(&TransferLeaderResponse {}).await
    }

    /// `WormRaft.Change`: a membership change another member sent to this
    /// node because it leads the group; done here, never sent on.
    async fn raft_change(&self, call: &mut Call) -> Result<(), Status> {
        let request: GroupChange = single_message(call).await?;
        let index = self.group_index(request.group)?;
        let change = Change::from_proto(&request)?;
        let outcome = self
            .core
            .run_on(index, move |core| async move {
                match &core.tier {
                    Some(replica) => replica.change_here(change).await,
                    None => Err(tier::Error::ShuttingDown),
                }
            })
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        outcome?;
        call.send(&GroupChangeResponse {}).await
    }

    /// `WormCluster.Status`: the `/v1/cluster` document.
    async fn cluster_status(&self, call: &mut Call) -> Result<(), Status> {
        let _: ClusterStatusRequest = single_message(call).await?;
        let reports = self.core.reports().await.map_err(|_| Status::unavailable("shutting down"))?;
        let members = self.core.tier.as_ref().map(|replica| replica.members());
        let document = crate::node::cluster::document(self.core.config.node_id, members.as_ref(), &reports);
        call.send(&ClusterStatusResponse { json: document.to_string() }).await
    }

    async fn get_watermark(&self, call: &mut Call, grant: &Grant) -> Result<(), Status> {
        let request: WatermarkRequest = single_message(call).await?;
        self.check_follower(grant, request.follower_id, call)?;
        let acked_seq = self.core.archive_watermark(request.follower_id, request.shard).await?;
        call.send(&WatermarkResponse { acked_seq }).await
    }

    async fn replay_from(&self, call: &mut Call, grant: &Grant) -> Result<(), Status> {
        let request: ReplayRequest = single_message(call).await?;
        self.check_follower(grant, request.follower_id, call)?;
        let (node, shard) = (request.follower_id, request.shard);
        let mut from_seq = request.from_seq.max(1);
        loop {
            let entries = self.core.archived_entries(node, shard, from_seq, REPLAY_CHUNK_ENTRIES).await?;
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
        Some(message) => PushedBatch::parse(message).map(Some).map_err(Status::from),
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
            let authorization = call.headers.get(http::header::AUTHORIZATION).map(http::HeaderValue::as_bytes);
            let grant = self
                .auth
                .authorize(call.peer.identity.as_ref(), authorization, auth::grpc_need(path), &path, call.peer.addr)
                .map_err(refusal_status)?;
            match path {
                "/wormdb.v1.WormIngest/Write" => self.write(call, &grant).await,
                "/wormdb.v1.WormIngest/Query" => self.query(call).await,
                auth::OTLP_LOGS_EXPORT => otlp::export(&self.core, call, &grant).await,
                "/wormdb.v1.WormReplication/PushEntries" => self.push(call, &grant, false).await,
                "/wormdb.v1.WormReplication/Replicate" => self.push(call, &grant, true).await,
                "/wormdb.v1.WormReplication/GetWatermark" => self.get_watermark(call, &grant).await,
                "/wormdb.v1.WormReplication/ReplayFrom" => self.replay_from(call, &grant).await,
                transport::SEND_PATH => self.raft_send(call).await,
                transport::WATERMARKS_PATH => self.raft_watermarks(call).await,
                transport::SNAPSHOT_PATH | transport::SNAPSHOT_BLOCKS_PATH => self.raft_snapshot(call).await,
                transport::WRITE_PATH => self.raft_write(call).await,
                transport::CHANGE_PATH => self.raft_change(call).await,
                "/wormdb.v1.WormCluster/Status" => self.cluster_status(call).await,
                "/wormdb.v1.WormCluster/Join" => self.cluster_join(call).await,
                "/wormdb.v1.WormCluster/Remove" => self.cluster_remove(call).await,
                "/wormdb.v1.WormCluster/TransferLeader" => self.cluster_transfer(call).await,
                _ => Err(Status::unimplemented(format!("unknown method {path}"))),
            }
        })
    }

    /// OTLP exporters compress by default (`grpc-encoding: gzip`); wormdb's
    /// own peers never do.
    fn accepts_gzip(&self, path: &str) -> bool {
        path == auth::OTLP_LOGS_EXPORT
    }
}

/// The status of a query that failed to start or to finish.
fn query_status(error: query::Error) -> Status {
    match error {
        query::Error::ShuttingDown => Status::unavailable("shutting down"),
        error @ query::Error::Shard { .. } => Status::internal(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Need;

    /// Every method [`Services::call`] routes has its own need: none falls
    /// to the "any credential" of unknown methods, and every peer-to-peer
    /// method of the tier is members-only.
    #[test]
    fn every_routed_method_is_classified() {
        let source = include_str!("services.rs");
        let body = &source[source.find("impl Service for Services").unwrap()..];
        let body = &body[..body.find("\n}\n").unwrap()];
        let routed: Vec<&str> = body
            .lines()
            .filter_map(|line| line.trim().strip_prefix('"').and_then(|rest| rest.split('"').next()))
            .collect();
        assert_eq!(routed.len(), 10, "{routed:?}");
        for path in routed {
            assert_ne!(auth::grpc_need(path), Need::Authenticated, "{path}");
        }
        for path in [
            transport::SEND_PATH,
            transport::WATERMARKS_PATH,
            transport::SNAPSHOT_PATH,
            transport::SNAPSHOT_BLOCKS_PATH,
            transport::WRITE_PATH,
            transport::CHANGE_PATH,
        ] {
            assert_eq!(auth::grpc_need(path), Need::Member, "{path}");
        }
        assert_eq!(
            auth::grpc_need(crate::tier::client::JOIN_PATH),
            Need::Scope(auth::tokens::Scopes::of(auth::Scope::Admin))
        );
    }
}
