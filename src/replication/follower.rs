//! The follower's pusher: one per shard, streaming the shard's durable
//! entries to the leader over `Replicate` and tracking the leader's acks.
//! This file is the I/O driver; the rules live in the sans-I/O
//! [`super::session::Session`], which [`run_pusher`] polls and feeds.
//!
//! A session: connect, ask `GetWatermark` for (this node, this shard), then
//! read the shard's own log from `watermark + 1` on and send it in batches
//! bounded by count and bytes, with at most [`PUSH_BATCHES_UNACKED_MAX`]
//! unacknowledged. Acks advance [`FollowerState::acked`]. Any failure ends
//! the session; the next one starts after a capped, jittered exponential
//! backoff and resumes from the leader's watermark, which is exact (the
//! leader drops duplicates), so nothing is lost or archived twice.
//!
//! With several `--leader` addresses (an archive tier), the session picks
//! where each session connects ([`super::discovery`]): a not-leader refusal
//! with a hint sends the next session straight to the hinted leader (one
//! info line per switch), anything else to the next address of the list.
//!
//! The log is the queue: nothing is buffered beyond the batches in flight,
//! and retention never deletes a segment the leader has not acknowledged
//! ([`FollowerState::retention_deletable_through`]).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_channel::mpsc;
use futures_lite::future;
use futures_util::{SinkExt, StreamExt};
use prost::encoding::{encode_varint, encoded_len_varint};

use super::discovery::Cause;
use super::session::{Action, Config, Session, Window};
use super::Host;
use crate::codec::block;
use crate::grpc::frame;
use crate::grpc::status::{Code, Status};
use crate::grpc::transport::{CallSender, Channel, SEND_ERROR_STATUS_WAIT};
use crate::limits::{LEASE_KEEPALIVE, PUSH_BATCHES_UNACKED_MAX, PUSH_BATCH_BYTES_TARGET};
use crate::proto::{PushAck, PushBatch, WatermarkRequest, WatermarkResponse};
use crate::shard::SharedSeq;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `GetWatermark` may take.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle pusher looks at the stop flag.
const IDLE_CHECK: Duration = Duration::from_millis(50);

const REPLICATE: &str = "/wormdb.v1.WormReplication/Replicate";
const GET_WATERMARK: &str = "/wormdb.v1.WormReplication/GetWatermark";

/// What one core's pusher knows, for stats, retention and shutdown.
#[derive(Default)]
pub struct FollowerState {
    /// The leader addresses this node follows (`--leader`); empty on a node
    /// that follows no one.
    pub leaders: Vec<SocketAddr>,
    /// The address the pusher's current (or next) session uses; `None`
    /// before the pusher starts.
    pub leader_addr: Cell<Option<SocketAddr>>,
    /// Highest seq the leader acknowledged (`None` before first contact);
    /// shared with the shard as retention's veto.
    pub acked: SharedSeq,
    /// A session is up.
    pub connected: Cell<bool>,
    /// Sessions started (1 + reconnects).
    pub sessions: Cell<u64>,
    /// Entries sent (resends after a reconnect included).
    pub sent_entries: Cell<u64>,
    /// Why the last session ended.
    pub last_error: RefCell<Option<String>>,
    /// Set at shutdown: the pusher sends what is durable, then closes.
    pub stopping: Cell<bool>,
}

impl FollowerState {
    /// The state of a node that follows the leader at one of `leaders`
    /// (none when empty).
    pub fn new(leaders: Vec<SocketAddr>) -> FollowerState {
        FollowerState { leaders, ..FollowerState::default() }
    }

    /// This node follows a leader.
    pub fn is_follower(&self) -> bool {
        !self.leaders.is_empty()
    }

    /// Retention's veto, for the shard's config
    /// (`ShardConfig::retention_deletable_through`): a follower keeps every
    /// segment holding an entry the leader has not acknowledged, so it
    /// hands over its acked seq; a node that follows no leader has no veto.
    pub fn retention_deletable_through(&self) -> Option<SharedSeq> {
        self.is_follower().then(|| self.acked.clone())
    }
}

/// Runs the pusher of the host's shard until shutdown has drained it: the
/// I/O driver of a [`Session`], which decides what to do; this function
/// connects, reads the log, sends, and feeds back what happened.
pub async fn run_pusher<H: Host>(host: Rc<H>) {
    if !host.follower().is_follower() {
        return;
    }
    let node = host.node_id();
    let shard = host.shard().config().shard_id;
    let seed = u64::from(node) << 32 | u64::from(shard) ^ 0x5DEE_CE66;
    let clock = Instant::now();
    let state = host.follower();
    let mut session = Session::new(Config::default(), seed, host.shard().durable_seq(), &state.leaders);
    let mut stream: Option<Stream> = None;
    // When the stream last carried something: an idle stream sends a
    // keepalive (an empty batch) every LEASE_KEEPALIVE to renew the
    // follower's lease on a tier.
    let mut last_sent = clock.elapsed();
    loop {
        if state.stopping.get() {
            session.shutdown();
        }
        session.durable(host.shard().durable_seq());
        let action = session.poll(clock.elapsed());
        publish(&session, state);
        match action {
            Action::Done => {
                if session.acked_seq() < Some(session.durable_seq()) {
                    tracing::warn!(shard, "replication: shutting down with entries not acknowledged");
                }
                return;
            }
            Action::Connect { addr } => {
                stream = None;
                match connect(node, shard, addr).await {
                    Ok((watermark, started)) => match session.connected(clock.elapsed(), watermark) {
                        Ok(()) => {
                            tracing::info!(shard, leader = %addr, acked = watermark, "replication session up");
                            stream = Some(started);
                        }
                        Err(error) => ended(shard, addr, &session, state, error.to_string()),
                    },
                    Err(status) => failed(shard, addr, &mut session, state, clock.elapsed(), &status),
                }
            }
            Action::Send(window) => {
                let Some(open) = stream.as_mut() else { unreachable!("a Send comes with a stream") };
                let sent = match encode_batch(&*host, (node, shard), window, session.durable_seq()).await {
                    Ok((framed, to_seq)) => open.sender.send_framed(framed).await.map(|()| to_seq),
                    Err(status) => Err(status),
                };
                match sent {
                    Ok(to_seq) => {
                        last_sent = clock.elapsed();
                        session.sent(window.from_seq, to_seq)
                    }
                    Err(status) => {
                        let status = open.ended_status(status).await;
                        stream = None;
                        failed(shard, session.leader_addr(), &mut session, state, clock.elapsed(), &status);
                    }
                }
            }
            Action::CloseSend => {
                let Some(open) = stream.as_mut() else { unreachable!("a CloseSend comes with a stream") };
                if let Err(status) = open.sender.close_send().await {
                    let status = open.ended_status(status).await;
                    stream = None;
                    failed(shard, session.leader_addr(), &mut session, state, clock.elapsed(), &status);
                }
            }
            Action::Wait => {
                let Some(open) = stream.as_mut() else {
                    glommio::timer::sleep(IDLE_CHECK).await;
                    continue;
                };
                let durable = session.durable_seq();
                let event = future::or(async { open.acks.next().await }, async {
                    future::or(
                        async {
                            // A closing or failed shard answers at once
                            // without progress: do not spin on it.
                            if host.shard().wait_durable_after(durable).await <= durable {
                                glommio::timer::sleep(IDLE_CHECK).await;
                            }
                        },
                        glommio::timer::sleep(IDLE_CHECK),
                    )
                    .await;
                    Some(StreamEvent::Tick)
                })
                .await;
                let now = clock.elapsed();
                let addr = session.leader_addr();
                if matches!(event, Some(StreamEvent::Tick))
                    && now.saturating_sub(last_sent) >= LEASE_KEEPALIVE
                    && session.may_keepalive()
                {
                    last_sent = now;
                    let keepalive = PushBatch {
                        follower_id: node,
                        shard,
                        durable_seq: session.durable_seq(),
                        ..PushBatch::default()
                    };
                    if let Err(status) = open.sender.send(&keepalive).await {
                        let status = open.ended_status(status).await;
                        stream = None;
                        failed(shard, addr, &mut session, state, clock.elapsed(), &status);
                        continue;
                    }
                    session.keepalive_sent();
                }
                let outcome = match event {
                    Some(StreamEvent::Tick) => Ok(()),
                    Some(StreamEvent::Ack(acked_seq)) => session.ack(now, acked_seq),
                    Some(StreamEvent::Closed) | None => session.stream_closed(now),
                    Some(StreamEvent::Failed(status)) => {
                        stream = None;
                        failed(shard, addr, &mut session, state, now, &status);
                        continue;
                    }
                };
                if let Err(error) = outcome {
                    stream = None;
                    ended(shard, addr, &session, state, error.to_string());
                } else if session.is_done() {
                    stream = None;
                }
            }
            Action::Sleep { until } => {
                let left = until.saturating_sub(clock.elapsed());
                glommio::timer::sleep(left.min(IDLE_CHECK)).await;
            }
        }
    }
}

/// An open `Replicate` stream: the sending half, and the acks a task reads
/// from the receiving half (so that waiting for one never cancels a read
/// midway). Dropping it cancels the call.
struct Stream {
    sender: CallSender,
    acks: mpsc::Receiver<StreamEvent>,
    reader: glommio::task::JoinHandle<()>,
    _channel: Channel,
}

impl Stream {
    /// The status the stream ended with, once sending on it failed with
    /// `send_error`: a server that refuses the stream (a replica that
    /// stopped leading) ends its response and resets the request half, so
    /// the send fails with a bare HTTP/2 error while the ack reader holds
    /// the server's status and its leader hint. Waits for it at most
    /// [`SEND_ERROR_STATUS_WAIT`]; acks still queued are dropped (the next
    /// session starts from the leader's watermark).
    async fn ended_status(&mut self, send_error: Status) -> Status {
        let ended = future::or(
            async {
                while let Some(event) = self.acks.next().await {
                    match event {
                        StreamEvent::Failed(status) => return Some(status),
                        StreamEvent::Closed => return None,
                        StreamEvent::Ack(_) | StreamEvent::Tick => {}
                    }
                }
                None
            },
            async {
                glommio::timer::sleep(SEND_ERROR_STATUS_WAIT).await;
                None
            },
        )
        .await;
        ended.unwrap_or(send_error)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // A detached task outlives its handle: stop the reader with the call.
        self.reader.cancel();
    }
}

/// What the ack reader saw, or a timer tick.
enum StreamEvent {
    Ack(u64),
    Closed,
    Failed(Status),
    Tick,
}

/// Connects, asks the leader's watermark of (node, shard), and opens the
/// `Replicate` stream.
async fn connect(node: u32, shard: u32, leader: SocketAddr) -> Result<(u64, Stream), Status> {
    let channel = Channel::connect(leader, CONNECT_TIMEOUT).await?;
    let request = WatermarkRequest { follower_id: node, shard };
    let watermark: WatermarkResponse = channel.unary(GET_WATERMARK, &request, Some(WATERMARK_TIMEOUT)).await?;
    let (sender, receiver) = channel.start(REPLICATE, None).await?.split();
    // One event per batch in flight, plus the stream's end.
    let (mut events, acks) = mpsc::channel(PUSH_BATCHES_UNACKED_MAX + 1);
    let reader = glommio::spawn_local(async move {
        let mut receiver = receiver;
        loop {
            let event = match receiver.next::<PushAck>().await {
                Ok(Some(ack)) => StreamEvent::Ack(ack.acked_seq),
                Ok(None) => StreamEvent::Closed,
                Err(status) => StreamEvent::Failed(status),
            };
            let last = !matches!(event, StreamEvent::Ack(_));
            if events.send(event).await.is_err() || last {
                return;
            }
        }
    })
    .detach();
    Ok((watermark.acked_seq, Stream { sender, acks, reader, _channel: channel }))
}

/// Mirrors the session into the state stats, retention and shutdown read.
fn publish(session: &Session, state: &FollowerState) {
    state.leader_addr.set(Some(session.leader_addr()));
    state.acked.set(session.acked_seq());
    state.connected.set(session.is_connected());
    state.sessions.set(session.sessions());
    state.sent_entries.set(session.sent_entries());
}

/// Feeds a failed session's `status` (with its leader hint, if any) into
/// the session. A switch of address that follows a hint is logged as one
/// info line (it is how a tier's leader change looks, not a fault); any
/// other end as [`ended`] does.
fn failed(shard: u32, addr: SocketAddr, session: &mut Session, state: &FollowerState, now: Duration, status: &Status) {
    let next = session.failed_with(now, status);
    match next.cause {
        Cause::Hint { term } if next.to != next.from && !session.is_done() => {
            tracing::info!(shard, from = %next.from, to = %next.to, term, "replication: following the leader hint");
            *state.last_error.borrow_mut() = Some(status.to_string());
            state.connected.set(false);
        }
        _ => ended(shard, addr, session, state, status.to_string()),
    }
}

/// Logs a session's end, once per distinct reason, and keeps the reason.
fn ended(shard: u32, leader: SocketAddr, session: &Session, state: &FollowerState, reason: String) {
    if state.last_error.borrow().as_deref() != Some(reason.as_str()) && !session.is_done() {
        tracing::warn!(shard, %leader, reason = %reason, "replication session ended; reconnecting");
    }
    *state.last_error.borrow_mut() = Some(reason);
    state.connected.set(false);
}

/// Builds the framed `PushBatch` of the durable entries from `next` on:
/// the shard's stored blocks as they are (see [`PushBatchWriter::push_block`]),
/// except when `next` falls inside a block (a resume from a watermark the
/// leader got otherwise): then the batch holds that block's entries from
/// `next` on, straight from their stored bytes ([`PushBatchWriter::push`]).
/// Returns the message and the seq after its last entry.
async fn encode_batch<H: Host>(
    host: &H,
    (node, shard): (u32, u32),
    window: Window,
    durable_seq: u64,
) -> Result<(Bytes, u64), Status> {
    let next = window.from_seq;
    let entries_max = usize::try_from(window.to_seq_max - next).unwrap_or(usize::MAX);
    let mut writer = PushBatchWriter::new(node, shard, PUSH_BATCH_BYTES_TARGET + PUSH_BATCH_BYTES_TARGET / 8);
    writer.durable_seq(durable_seq);
    let mut expected = next;
    let mut out_of_order = None;
    let mut cut_block = None;
    host.shard()
        .read_stored_blocks_from(next, entries_max, window.bytes_target, &mut |header, block| {
            if header.first_seq < next && header.next_seq() > next {
                cut_block = Some((*header, block.to_vec()));
                return false;
            }
            if header.first_seq != expected {
                out_of_order.get_or_insert(header.first_seq);
                return false;
            }
            if header.next_seq() > window.to_seq_max && expected > next {
                // Blocks are not cut at the end: the next batch takes it.
                return false;
            }
            writer.push_block(block);
            expected = header.next_seq();
            true
        })
        .await
        .map_err(|error| Status::internal(error.to_string()))?;
    if let Some((header, block)) = cut_block {
        let mut raw = Vec::new();
        let result = block::decompress_payload(&header, &block, &mut raw).and_then(|()| {
            block::for_each_entry(&header, &raw, |seq, entry| {
                if seq >= next {
                    writer.push(seq, entry);
                }
                Ok(())
            })
        });
        result.map_err(|error| Status::internal(format!("stored block at seq {}: {error}", header.first_seq)))?;
        expected = header.next_seq();
    }
    let sent = expected - next;
    if sent == 0 || out_of_order.is_some() {
        return Err(Status::new(
            Code::DataLoss,
            format!(
                "seq {next} is no longer in the local log (read {sent} entries, first block out of order: \
                 {out_of_order:?}); it cannot be replicated"
            ),
        ));
    }
    if expected > window.to_seq_max {
        return Err(Status::internal(format!(
            "the stored blocks from seq {next} end at {expected}, past the batch's window end {}",
            window.to_seq_max
        )));
    }
    Ok((writer.finish(), expected))
}

/// Writes a framed `PushBatch` message from stored data: whole stored
/// blocks (field `blocks`), or stored entries: each stored entry is a
/// `LogEntry` without ids, so appending its `seq` field makes it the
/// `LogEntry` the leader needs (protobuf fields may come in any order).
pub struct PushBatchWriter {
    out: BytesMut,
}

impl PushBatchWriter {
    const FOLLOWER_ID_TAG: u8 = 1 << 3; // field 1, varint
    const SHARD_TAG: u8 = 2 << 3; // field 2, varint
    const ENTRIES_TAG: u8 = (3 << 3) | 2; // field 3, length-delimited
    const BLOCKS_TAG: u8 = (4 << 3) | 2; // field 4, length-delimited
    const DURABLE_SEQ_TAG: u8 = 5 << 3; // field 5, varint
    const SEQ_TAG: u8 = 1 << 3; // LogEntry field 1, varint

    /// A batch of follower `node`'s shard `shard`, with room for `capacity` bytes.
    pub fn new(node: u32, shard: u32, capacity: usize) -> PushBatchWriter {
        let mut out = BytesMut::with_capacity(capacity);
        out.put_slice(&[0; frame::PREFIX_BYTES]);
        out.put_u8(Self::FOLLOWER_ID_TAG);
        encode_varint(u64::from(node), &mut out);
        out.put_u8(Self::SHARD_TAG);
        encode_varint(u64::from(shard), &mut out);
        PushBatchWriter { out }
    }

    /// Says the follower shard's last durable seq (the tier reports the
    /// follower's lag from it).
    pub fn durable_seq(&mut self, seq: u64) {
        self.out.put_u8(Self::DURABLE_SEQ_TAG);
        encode_varint(seq, &mut self.out);
    }

    /// Appends one stored entry (its bytes without the length prefix) with its seq.
    pub fn push(&mut self, seq: u64, entry: &[u8]) {
        self.out.put_u8(Self::ENTRIES_TAG);
        encode_varint((entry.len() + 1 + encoded_len_varint(seq)) as u64, &mut self.out);
        self.out.put_slice(entry);
        self.out.put_u8(Self::SEQ_TAG);
        encode_varint(seq, &mut self.out);
    }

    /// Appends one stored block, whole (header, payload, crc).
    pub fn push_block(&mut self, block: &[u8]) {
        self.out.put_u8(Self::BLOCKS_TAG);
        encode_varint(block.len() as u64, &mut self.out);
        self.out.put_slice(block);
    }

    /// The framed message (5-byte gRPC prefix included).
    pub fn finish(mut self) -> Bytes {
        let len = self.out.len() - frame::PREFIX_BYTES;
        self.out[..frame::PREFIX_BYTES].copy_from_slice(&frame::prefix(len));
        self.out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_batch_decodes_as_the_push_batch_prost_would_read() {
        use crate::codec::block::{encode_entry, read_varint};
        use crate::proto::{LogEntry, PushBatch};
        use crate::shard::EntryRef;
        use prost::Message;
        let tags = [("app", "web"), ("level", "info")];
        let mut writer = PushBatchWriter::new(7, 3, 1024);
        writer.durable_seq(1234);
        for seq in [41u64, 42, 300] {
            let body = format!("entry {seq}");
            let mut stored = Vec::new();
            encode_entry(
                &EntryRef { fields: &[], timestamp_ns: 5, tags: &tags, body: body.as_bytes() },
                5,
                &mut stored,
            );
            let (_, prefix) = read_varint(&stored).unwrap_or_else(|| unreachable!());
            writer.push(seq, &stored[prefix..]);
        }
        let framed = writer.finish();
        assert_eq!(framed[0], 0, "uncompressed");
        let len = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize;
        assert_eq!(len, framed.len() - frame::PREFIX_BYTES);
        let batch = PushBatch::decode(&framed[frame::PREFIX_BYTES..]).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!((batch.follower_id, batch.shard, batch.durable_seq), (7, 3, 1234));
        // And as the tier reads it.
        let pushed = crate::replication::batch::PushedBatch::parse(framed.slice(frame::PREFIX_BYTES..))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!((pushed.follower_id, pushed.shard, pushed.durable_seq), (7, 3, 1234));
        let expected: Vec<LogEntry> = [41u64, 42, 300]
            .iter()
            .map(|&seq| LogEntry {
                fields: Default::default(),
                seq,
                timestamp_ns: 5,
                tags: tags.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
                body: format!("entry {seq}").into_bytes().into(),
                node_id: 0,
                shard: 0,
            })
            .collect();
        assert_eq!(batch.entries, expected);
    }

    #[test]
    fn written_blocks_decode_as_the_push_batch_blocks_prost_would_read() {
        use crate::proto::PushBatch;
        use prost::Message;
        let blocks: [&[u8]; 2] = [b"first block bytes", &[7u8; 300]];
        let mut writer = PushBatchWriter::new(2, 9, 1024);
        for block in blocks {
            writer.push_block(block);
        }
        let framed = writer.finish();
        let batch = PushBatch::decode(&framed[frame::PREFIX_BYTES..]).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!((batch.follower_id, batch.shard, batch.entries.len()), (2, 9, 0));
        assert_eq!(batch.blocks, blocks.map(Bytes::copy_from_slice).to_vec());
    }

    #[test]
    fn retention_keeps_what_the_leader_has_not_acknowledged() {
        assert!(FollowerState::new(Vec::new()).retention_deletable_through().is_none(), "no leader: no veto");
        let following = FollowerState::new(vec!["127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!())]);
        let Some(through) = following.retention_deletable_through() else { unreachable!("a follower has a veto") };
        assert_eq!(through.get(), None, "unknown watermark: keep everything");
        following.acked.set(Some(99));
        assert_eq!(through.get(), Some(99), "the shard sees every ack");
        following.acked.set(Some(100));
        assert_eq!(through.get(), Some(100));
    }
}
