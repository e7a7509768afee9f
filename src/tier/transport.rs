//! Raft messages and snapshots from one replica to the others, over the
//! [`crate::grpc`] transport (service `wormdb.v1.WormRaft`, internal).
//!
//! Each (peer, group) pair has a [`Link`]: a bounded outbox and a task that
//! keeps one HTTP/2 connection and one client stream open to the peer and
//! sends whatever the outbox holds as one `RaftBatch` per wake-up (so the
//! messages of one `Ready` travel together). Messages are raft-rs's own
//! encoding, opaque to our protobuf. When the peer cannot be reached, the
//! link drops its outbox (Raft resends what matters: heartbeats repeat and
//! appends are retried from the peer's match index), tells the group so it
//! probes instead of streaming, and reconnects with backoff.
//!
//! A snapshot ([`send_snapshot`]) is its own call: the receiver says which
//! seqs it holds per origin pair, the sender streams every (pair, seq) it
//! holds above them, as `PushBatch`es with a crc, then the `MsgSnapshot`
//! itself. Memory on both sides is one chunk
//! ([`SNAPSHOT_CHUNK_ENTRIES`]).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::StreamExt;
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::Message;

use crate::grpc::status::Status;
use crate::grpc::transport::Channel;
use crate::limits::{RAFT_OUTBOX_MESSAGES_MAX, SNAPSHOT_CHUNK_ENTRIES};
use crate::proto::{OriginWatermark, PushBatch, SnapshotChunk, WatermarksRequest, WatermarksResponse};
use crate::shard::Shard;

/// How long a connection attempt to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// First and longest wait between two connection attempts to a peer.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a whole snapshot may take before the sender gives up (the
/// group then tries again).
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);

/// Method paths of the internal service.
pub const SEND_PATH: &str = "/wormdb.v1.WormRaft/Send";
/// See [`SEND_PATH`].
pub const WATERMARKS_PATH: &str = "/wormdb.v1.WormRaft/Watermarks";
/// See [`SEND_PATH`].
pub const SNAPSHOT_PATH: &str = "/wormdb.v1.WormRaft/Snapshot";
/// One group's membership change, sent to the node that leads it.
pub const CHANGE_PATH: &str = "/wormdb.v1.WormRaft/Change";
/// See [`SEND_PATH`].
pub const WRITE_PATH: &str = "/wormdb.v1.WormRaft/Write";

/// The way to one peer's replica of one group.
pub struct Link {
    group: u32,
    from: u32,
    peer: u32,
    addr: SocketAddr,
    outbox: RefCell<VecDeque<Message>>,
    wake: RefCell<mpsc::Sender<()>>,
    wakeups: RefCell<Option<mpsc::Receiver<()>>>,
    unreachable: Cell<bool>,
    /// Messages dropped (outbox full, or the peer unreachable).
    pub dropped: Cell<u64>,
    /// Messages sent.
    pub sent: Cell<u64>,
}

impl Link {
    /// A link from replica `from` of `group` to replica `peer` at `addr`;
    /// [`Link::run`] drives it.
    pub fn new(group: u32, from: u32, peer: u32, addr: SocketAddr) -> Rc<Link> {
        let (wake, wakeups) = mpsc::channel(1);
        Rc::new(Link {
            group,
            from,
            peer,
            addr,
            outbox: RefCell::new(VecDeque::new()),
            wake: RefCell::new(wake),
            wakeups: RefCell::new(Some(wakeups)),
            unreachable: Cell::new(false),
            dropped: Cell::new(0),
            sent: Cell::new(0),
        })
    }

    /// The peer's id.
    pub fn peer(&self) -> u32 {
        self.peer
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues messages for the peer (the oldest go when the outbox is full).
    pub fn send(&self, messages: impl IntoIterator<Item = Message>) {
        let mut outbox = self.outbox.borrow_mut();
        for message in messages {
            if outbox.len() >= RAFT_OUTBOX_MESSAGES_MAX {
                outbox.pop_front();
                self.dropped.set(self.dropped.get() + 1);
            }
            outbox.push_back(message);
        }
        drop(outbox);
        let _ = self.wake.borrow_mut().try_send(());
    }

    /// Stops the link: [`Link::run`] returns once its outbox is sent (the
    /// peer left the group).
    pub fn close(&self) {
        self.outbox.borrow_mut().clear();
        // Dropping the only sender ends `run`'s wait for work.
        *self.wake.borrow_mut() = mpsc::channel(1).0;
    }

    /// Whether the peer became unreachable since the last call.
    pub fn take_unreachable(&self) -> bool {
        self.unreachable.replace(false)
    }

    /// Sends the outbox to the peer until cancelled, reconnecting with
    /// backoff.
    pub async fn run(self: Rc<Self>) {
        let Some(mut wakeups) = self.wakeups.borrow_mut().take() else { return };
        let mut backoff = BACKOFF_MIN;
        loop {
            let sent_before = self.sent.get();
            match self.session(&mut wakeups).await {
                Ok(()) => return,
                Err(status) => {
                    tracing::debug!(group = self.group, peer = self.peer, addr = %self.addr, %status, "raft link down");
                    let lost = self.outbox.borrow_mut().drain(..).count() as u64;
                    self.dropped.set(self.dropped.get() + lost);
                    self.unreachable.set(true);
                }
            }
            // A connection that carried messages was healthy: start over.
            if self.sent.get() > sent_before {
                backoff = BACKOFF_MIN;
            }
            glommio::timer::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            // Nothing to say: wait until there is before connecting again.
            while self.outbox.borrow().is_empty() {
                if wakeups.next().await.is_none() {
                    return;
                }
            }
        }
    }

    /// One connection: sends batches until it fails (or every sender of
    /// wake-ups is gone: `Ok`).
    async fn session(&self, wakeups: &mut mpsc::Receiver<()>) -> Result<(), Status> {
        let channel = Channel::connect(self.addr, CONNECT_TIMEOUT).await?;
        let call = channel.start(SEND_PATH, None).await?;
        let (mut sender, mut receiver) = call.split();
        // The server answers only when the stream ends or fails: watch for
        // that while sending.
        let failed = Rc::new(RefCell::new(None::<Status>));
        let watcher = {
            let failed = failed.clone();
            glommio::spawn_local(async move {
                let status = match receiver.next::<crate::proto::RaftAck>().await {
                    Ok(_) => Status::unavailable("the peer ended the raft stream"),
                    Err(status) => status,
                };
                *failed.borrow_mut() = Some(status);
            })
            .detach()
        };
        let result = async {
            loop {
                if let Some(status) = failed.borrow_mut().take() {
                    return Err(status);
                }
                let messages: Vec<Message> = self.outbox.borrow_mut().drain(..).collect();
                if messages.is_empty() {
                    let woken = futures_lite::future::or(async { wakeups.next().await.is_some() }, async {
                        // Look at the watcher now and then even when idle.
                        glommio::timer::sleep(Duration::from_millis(200)).await;
                        true
                    })
                    .await;
                    if !woken {
                        return Ok(());
                    }
                    continue;
                }
                let count = messages.len() as u64;
                let framed = self.frame_batch(&messages)?;
                sender.send_framed(framed).await?;
                self.sent.set(self.sent.get() + count);
            }
        }
        .await;
        watcher.cancel();
        if result.is_err() {
            sender.cancel();
        }
        result
    }
}

impl Link {
    /// One `RaftBatch` of `messages`, framed for gRPC, written in one pass:
    /// each raft-rs message is encoded straight into the frame (the
    /// entries of an append are copied once, not once per encoding layer).
    fn frame_batch(&self, messages: &[Message]) -> Result<bytes::Bytes, Status> {
        use prost::encoding::{encode_key, encode_varint, uint32, WireType};
        let sizes: Vec<u32> = messages.iter().map(|message| message.compute_size()).collect();
        let bound = sizes.iter().map(|&size| size as usize + 16).sum::<usize>() + 32;
        let mut body = Vec::with_capacity(crate::grpc::frame::PREFIX_BYTES + bound);
        body.extend_from_slice(&[0; crate::grpc::frame::PREFIX_BYTES]);
        uint32::encode(1, &self.group, &mut body);
        uint32::encode(2, &self.from, &mut body);
        uint32::encode(3, &self.peer, &mut body);
        for (message, &size) in messages.iter().zip(&sizes) {
            encode_key(4, WireType::LengthDelimited, &mut body);
            encode_varint(u64::from(size), &mut body);
            message
                .write_to_vec(&mut body)
                .map_err(|error| Status::internal(format!("encode raft message: {error}")))?;
        }
        let length = body.len() - crate::grpc::frame::PREFIX_BYTES;
        body[..crate::grpc::frame::PREFIX_BYTES].copy_from_slice(&crate::grpc::frame::prefix(length));
        Ok(body.into())
    }
}

/// Sends a snapshot to the replica at `addr`: the (pair, seq)s this
/// replica's shard holds above the receiver's watermarks up to
/// `watermarks` (this replica's state after entry `applied`), then
/// `message` (the `MsgSnapshot`) with that state. `Ok` once the receiver
/// installed it.
pub async fn send_snapshot(
    shard: Shard,
    group: u32,
    from: u32,
    addr: SocketAddr,
    message: Message,
    watermarks: BTreeMap<(u32, u32), u64>,
    applied: u64,
) -> Result<(), Status> {
    let channel = Channel::connect(addr, CONNECT_TIMEOUT).await?;
    let theirs: WatermarksResponse =
        channel.unary(WATERMARKS_PATH, &WatermarksRequest { group }, Some(Duration::from_secs(10))).await?;
    let theirs: BTreeMap<(u32, u32), u64> =
        theirs.watermarks.iter().map(|watermark| ((watermark.node, watermark.shard), watermark.seq)).collect();
    let mut call = channel.start(SNAPSHOT_PATH, Some(SNAPSHOT_TIMEOUT)).await?;
    let mut sent_entries = 0u64;
    for (&(node, origin_shard), &ours) in &watermarks {
        let mut from_seq = theirs.get(&(node, origin_shard)).copied().unwrap_or(0) + 1;
        while from_seq <= ours {
            let limit = SNAPSHOT_CHUNK_ENTRIES.min((ours - from_seq + 1) as usize);
            let entries = shard
                .read_origin(node, origin_shard, from_seq, limit)
                .await
                .map_err(|error| Status::internal(format!("snapshot read: {error}")))?;
            let Some(last) = entries.last() else {
                return Err(Status::internal(format!(
                    "snapshot: origin ({node}, {origin_shard}) seq {from_seq} is not in the shard (retention?)"
                )));
            };
            from_seq = last.seq + 1;
            sent_entries += entries.len() as u64;
            let batch =
                PushBatch { follower_id: node, shard: origin_shard, entries, blocks: Vec::new() }.encode_to_vec();
            let crc32 = crc32fast::hash(&batch);
            call.send(&SnapshotChunk { group, from, batch: batch.into(), crc32, ..Default::default() }).await?;
        }
    }
    let raft_message =
        message.write_to_bytes().map_err(|error| Status::internal(format!("encode raft message: {error}")))?;
    let state = watermarks.iter().map(|(&(node, shard), &seq)| OriginWatermark { node, shard, seq }).collect();
    let last = SnapshotChunk {
        group,
        from,
        raft_message: raft_message.into(),
        applied,
        watermarks: state,
        ..Default::default()
    };
    call.send(&last).await?;
    call.close_send().await?;
    call.next::<crate::proto::RaftAck>().await?;
    tracing::info!(group, to = %addr, entries = sent_entries, "snapshot sent");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_batch_decodes_as_a_raft_batch_of_the_same_messages() {
        let link = Link::new(3, 1, 2, "127.0.0.1:1".parse().unwrap());
        let messages: Vec<Message> = (1..=3u64)
            .map(|index| {
                let mut message = Message::default();
                message.set_msg_type(raft::prelude::MessageType::MsgAppend);
                message.from = 1;
                message.to = 2;
                message.index = index;
                let entry =
                    raft::prelude::Entry { index, term: 7, data: vec![index as u8; 300].into(), ..Default::default() };
                message.set_entries(vec![entry].into());
                message
            })
            .collect();
        let framed = link.frame_batch(&messages).unwrap();
        let length = u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize;
        assert_eq!((framed[0], length), (0, framed.len() - crate::grpc::frame::PREFIX_BYTES));
        let batch = <crate::proto::RaftBatch as prost::Message>::decode(&framed[5..]).unwrap();
        assert_eq!((batch.group, batch.from, batch.to), (3, 1, 2));
        let decoded: Vec<Message> =
            batch.messages.iter().map(|bytes| Message::parse_from_carllerche_bytes(bytes).unwrap()).collect();
        assert_eq!(decoded, messages);
    }
}
