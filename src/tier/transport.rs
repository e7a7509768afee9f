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
//! seqs it holds per origin pair, the sender streams its shard's stored
//! blocks holding the (pair, seq)s above them (see [`super::snapshot`]), as
//! `PushBatch`es with a crc, then the `MsgSnapshot` itself. Memory on both
//! sides is about one chunk ([`SNAPSHOT_CHUNK_BYTES_MAX`]) beyond the
//! HTTP/2 windows.
//!
//! A snapshot of blocks goes on a path of its own
//! ([`SNAPSHOT_BLOCKS_PATH`]), which a member of an earlier version
//! refuses with `UNIMPLEMENTED` (it knows only [`SNAPSHOT_PATH`]). During
//! a rolling upgrade a new leader may have to bring such a member up, so
//! the sender then sends the same snapshot again in the form those
//! versions take, decoded entries ([`entry_chunks`]): one `PushBatch` of
//! one pair per chunk in `batch`, with the crc of those bytes, then the
//! same last chunk (its address book is a field those versions skip).
//! Refused blocks cost nothing on the receiver (it read none of the call)
//! and about an HTTP/2 window of reads on the sender. The peer's [`Link`]
//! remembers the refusal, so later snapshots go straight to entries, until
//! the link reconnects: a member restarts to upgrade, which breaks the
//! link, and then gets blocks again. The entries form is about ten times
//! slower (it decodes and re-encodes every entry), a price paid during an
//! upgrade only.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::StreamExt;
use protobuf::Message as _;
use raft::prelude::Message;

use super::machine::Pair;
use super::snapshot::{Chunk, Chunker};
use crate::grpc::status::{Code, Status};
use crate::grpc::transport::{Channel, ClientCall};
use crate::limits::{RAFT_OUTBOX_MESSAGES_MAX, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_CHUNK_ENTRIES};
use crate::proto::{
    LogEntry, Member, OriginWatermark, PushBatch, SnapshotChunk, WatermarksRequest, WatermarksResponse,
};
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
/// See [`SEND_PATH`]: a snapshot of entries (what earlier versions send
/// and read; still sent to them, see the module doc).
pub const SNAPSHOT_PATH: &str = "/wormdb.v1.WormRaft/Snapshot";
/// One group's membership change, sent to the node that leads it.
pub const CHANGE_PATH: &str = "/wormdb.v1.WormRaft/Change";
/// See [`SEND_PATH`]: a snapshot of stored blocks. A path of its own, so
/// that a member of an earlier version, which would read the blocks' seqs
/// as its own, refuses the call (`UNIMPLEMENTED`) instead, and gets
/// entries on [`SNAPSHOT_PATH`].
pub const SNAPSHOT_BLOCKS_PATH: &str = "/wormdb.v1.WormRaft/SnapshotBlocks";
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
    /// The peer refused a snapshot of blocks (an earlier version) since
    /// the link last connected: snapshots go to it as entries.
    entry_snapshots: Cell<bool>,
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
            entry_snapshots: Cell::new(false),
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

    /// Whether snapshots go to the peer as entries (it refused blocks
    /// since the link last connected; see the module doc).
    pub fn entry_snapshots(&self) -> bool {
        self.entry_snapshots.get()
    }

    /// Notes that the peer refused a snapshot of blocks with `status`:
    /// logged once, until the link reconnects.
    fn refused_blocks(&self, status: &Status) {
        if !self.entry_snapshots.replace(true) {
            tracing::info!(
                group = self.group,
                peer = self.peer,
                addr = %self.addr,
                %status,
                "the peer refuses snapshots of stored blocks (an earlier version?): it gets snapshots of entries until its link reconnects"
            );
        }
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
        // Maybe another process now (a member restarted to upgrade): try
        // snapshots of blocks with it again.
        self.entry_snapshots.set(false);
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

/// What a snapshot's data stands for: the sender's watermarks after entry
/// `applied`, and the group's address book.
pub struct SnapshotState {
    /// Every origin pair's watermark.
    pub watermarks: BTreeMap<(u32, u32), u64>,
    /// The entry they stand for.
    pub applied: u64,
    /// The group's members and their addresses.
    pub members: BTreeMap<u32, SocketAddr>,
}

/// Sends a snapshot to `link`'s peer: the stored blocks of this replica's
/// shard holding what the receiver lacks up to the state's watermarks
/// (this replica's state after entry `applied`; see [`snapshot_chunks`]),
/// then `message` (the `MsgSnapshot`) with that state and the address
/// book. A peer that refuses blocks (`UNIMPLEMENTED`: an earlier version)
/// gets the same snapshot as entries ([`entry_chunks`]), and so do later
/// ones until the link reconnects (see the module doc). `Ok` once the
/// receiver installed it.
pub async fn send_snapshot(shard: Shard, link: &Link, message: Message, state: SnapshotState) -> Result<(), Status> {
    let SnapshotState { watermarks, applied, members } = state;
    let (group, from, addr) = (link.group, link.from, link.addr);
    let started = std::time::Instant::now();
    let channel = Channel::connect(addr, CONNECT_TIMEOUT).await?;
    let theirs: WatermarksResponse =
        channel.unary(WATERMARKS_PATH, &WatermarksRequest { group }, Some(Duration::from_secs(10))).await?;
    let theirs: BTreeMap<Pair, u64> =
        theirs.watermarks.iter().map(|watermark| ((watermark.node, watermark.shard), watermark.seq)).collect();
    data_reaching(&shard, &watermarks).await?;
    let mut last = last_chunk(group, from, &message, &watermarks, applied)?;
    last.members = members.iter().map(|(&node_id, addr)| Member { node_id, addr: addr.to_string() }).collect();
    let form = if link.entry_snapshots() {
        None
    } else {
        match send_blocks(&channel, &shard, group, from, theirs.clone(), &watermarks, &last).await {
            Err(status) if status.code == Code::Unimplemented => {
                link.refused_blocks(&status);
                None
            }
            sent => Some(sent?),
        }
    };
    let (form, (entries, bytes)) = match form {
        Some(sent) => ("blocks", sent),
        None => ("entries", send_entries(&channel, &shard, group, from, &theirs, &watermarks, &last).await?),
    };
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        group,
        to = %addr,
        form,
        entries,
        bytes,
        seconds,
        mb_per_s = bytes as f64 / 1e6 / seconds.max(1e-9),
        "snapshot sent"
    );
    Ok(())
}

/// A snapshot of blocks on its call ([`SNAPSHOT_BLOCKS_PATH`]), ended by
/// `last`: the entries and bytes sent.
async fn send_blocks(
    channel: &Channel,
    shard: &Shard,
    group: u32,
    from: u32,
    theirs: BTreeMap<Pair, u64>,
    ours: &BTreeMap<Pair, u64>,
    last: &SnapshotChunk,
) -> Result<(u64, u64), Status> {
    let mut call = SnapshotCall::start(channel, SNAPSHOT_BLOCKS_PATH).await?;
    let sent = snapshot_chunks(shard, group, from, theirs, ours, async |chunk| call.send(&chunk).await).await?;
    call.finish(last).await?;
    Ok(sent)
}

/// A snapshot of entries on its call ([`SNAPSHOT_PATH`]), ended by `last`:
/// the entries and bytes sent.
async fn send_entries(
    channel: &Channel,
    shard: &Shard,
    group: u32,
    from: u32,
    theirs: &BTreeMap<Pair, u64>,
    ours: &BTreeMap<Pair, u64>,
    last: &SnapshotChunk,
) -> Result<(u64, u64), Status> {
    let mut call = SnapshotCall::start(channel, SNAPSHOT_PATH).await?;
    let sent = entry_chunks(shard, group, from, theirs, ours, async |chunk| call.send(&chunk).await).await?;
    call.finish(last).await?;
    Ok(sent)
}

/// One snapshot call: chunks, then the last chunk and the receiver's ack.
/// A send that fails reports the status the receiver ended the call with
/// when it did (it may refuse the call before reading it, then reset the
/// request half: see [`crate::grpc::transport`]), so a refusal reads as
/// what it is, `UNIMPLEMENTED` from an earlier version included.
struct SnapshotCall {
    call: ClientCall,
}

impl SnapshotCall {
    async fn start(channel: &Channel, path: &str) -> Result<SnapshotCall, Status> {
        Ok(SnapshotCall { call: channel.start(path, Some(SNAPSHOT_TIMEOUT)).await? })
    }

    async fn send(&mut self, chunk: &SnapshotChunk) -> Result<(), Status> {
        match self.call.send(chunk).await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.call.status_after_send_error(error).await),
        }
    }

    /// Sends `last`, ends the stream and waits for the receiver's ack.
    async fn finish(mut self, last: &SnapshotChunk) -> Result<(), Status> {
        self.send(last).await?;
        if let Err(error) = self.call.close_send().await {
            return Err(self.call.status_after_send_error(error).await);
        }
        self.call.next::<crate::proto::RaftAck>().await?;
        Ok(())
    }
}

/// Makes the chunks of a snapshot of `shard` (replica `from` of `group`)
/// for a receiver whose data holds `theirs`, standing for the state
/// `ours`, which the shard's durable data must hold: its stored blocks
/// picked, cut and grouped by a [`Chunker`], read in seq order up to the
/// shard's durable seq now (no later block holds a seq at or below the
/// state: each pair's seqs grow with the shard's), and hands each to
/// `send`, one at a time. Returns the entries and bytes of the batches.
pub async fn snapshot_chunks(
    shard: &Shard,
    group: u32,
    from: u32,
    theirs: BTreeMap<(u32, u32), u64>,
    ours: &BTreeMap<(u32, u32), u64>,
    mut send: impl AsyncFnMut(SnapshotChunk) -> Result<(), Status>,
) -> Result<(u64, u64), Status> {
    let through_seq = shard.durable_seq();
    let mut chunker = Chunker::new(theirs, ours.clone());
    let wanted = chunker.wanted().clone();
    let (mut entries, mut bytes) = (0u64, 0u64);
    let mut next = shard.first_seq();
    let mut finished = false;
    loop {
        while let Some(chunk) = chunker.take_ready() {
            entries += chunk.batches.iter().map(|batch| batch.entries).sum::<u64>();
            bytes += chunk.buffer.len() as u64;
            send(snapshot_chunk(group, from, chunk)).await?;
        }
        if finished {
            return Ok((entries, bytes));
        }
        if next > through_seq {
            chunker.finish().map_err(|error| Status::internal(error.to_string()))?;
            finished = true;
            continue;
        }
        let mut failed = None;
        let before = next;
        next = shard
            .read_replicated_blocks(
                next,
                through_seq,
                &|pair, first, last| wanted.wants(pair, first, last),
                SNAPSHOT_CHUNK_BYTES_MAX,
                &mut |header, block, tags, filter| {
                    if failed.is_none() {
                        failed = chunker.push_block(header, block, tags, filter).err();
                    }
                },
            )
            .await
            .map_err(|error| Status::internal(format!("snapshot read: {error}")))?;
        if let Some(error) = failed {
            return Err(Status::internal(error.to_string()));
        }
        if next == before {
            return Err(Status::internal(format!("snapshot: the shard's blocks stop at seq {next}")));
        }
    }
}

/// The message of one chunk of batches, with its crc.
fn snapshot_chunk(group: u32, from: u32, chunk: Chunk) -> SnapshotChunk {
    let mut crc = crc32fast::Hasher::new();
    let (mut batches, mut block_tags, mut block_terms) = (Vec::new(), Vec::new(), Vec::new());
    let buffer = bytes::Bytes::from(chunk.buffer);
    for batch in chunk.batches {
        let bytes = buffer.slice(batch.range);
        crc.update(&bytes);
        batches.push(bytes);
        block_tags.push(batch.block_tags);
        block_terms.push(batch.block_terms);
    }
    // Trailing empty tag sets and terms need not travel.
    for list in [&mut block_tags, &mut block_terms] {
        while list.last().is_some_and(Vec::is_empty) {
            list.pop();
        }
    }
    for tags in &block_tags {
        crc.update(tags);
    }
    // The terms have a crc of their own, which a receiver from before them
    // never reads (its crc32 covers what it knows).
    let terms_crc32 = block_terms.iter().fold(crc32fast::Hasher::new(), |mut crc, terms| {
        crc.update(terms);
        crc
    });
    let block_tags = block_tags.into_iter().map(Into::into).collect();
    let (terms_crc32, block_terms) = (terms_crc32.finalize(), block_terms.into_iter().map(Into::into).collect());
    SnapshotChunk {
        group,
        from,
        crc32: crc.finalize(),
        batches,
        block_tags,
        block_terms,
        terms_crc32,
        ..Default::default()
    }
}

/// Makes the chunks of a snapshot of entries (the form of earlier
/// versions, on [`SNAPSHOT_PATH`]) of `shard` (replica `from` of `group`)
/// for a receiver whose data holds `theirs`, standing for the state
/// `ours`, which the shard's durable data must hold: for each pair, its
/// entries above `theirs` up to `ours`, read by origin, in batches of at
/// most [`SNAPSHOT_CHUNK_ENTRIES`] entries and [`SNAPSHOT_CHUNK_BYTES_MAX`]
/// bytes, one per chunk ([`entries_chunk`]), each handed to `send`.
/// Returns the entries and bytes of the batches.
pub async fn entry_chunks(
    shard: &Shard,
    group: u32,
    from: u32,
    theirs: &BTreeMap<Pair, u64>,
    ours: &BTreeMap<Pair, u64>,
    mut send: impl AsyncFnMut(SnapshotChunk) -> Result<(), Status>,
) -> Result<(u64, u64), Status> {
    let (mut entries, mut bytes) = (0u64, 0u64);
    for (&pair, &state) in ours {
        let mut from_seq = theirs.get(&pair).copied().unwrap_or(0) + 1;
        while from_seq <= state {
            let limit = SNAPSHOT_CHUNK_ENTRIES.min((state - from_seq + 1) as usize);
            let mut read = shard
                .read_origin(pair.0, pair.1, from_seq, limit)
                .await
                .map_err(|error| Status::internal(format!("snapshot read: {error}")))?;
            if read.first().is_none_or(|entry| entry.seq != from_seq) {
                return Err(Status::internal(format!(
                    "snapshot: origin {pair:?} seq {from_seq} is not in the shard (retention?)"
                )));
            }
            from_seq = read.last().map_or(from_seq, |entry| entry.seq + 1);
            while !read.is_empty() {
                let rest = read.split_off(entries_fitting(&read, SNAPSHOT_CHUNK_BYTES_MAX));
                let batch = std::mem::replace(&mut read, rest);
                entries += batch.len() as u64;
                let chunk = entries_chunk(group, from, pair, batch);
                bytes += chunk.batch.len() as u64;
                send(chunk).await?;
            }
        }
    }
    Ok((entries, bytes))
}

/// How many of `entries`, from the first, make a `PushBatch` of at most
/// `bytes_max` bytes; at least one (an entry fits a chunk alone: see
/// `limits.rs`).
fn entries_fitting(entries: &[LogEntry], bytes_max: usize) -> usize {
    let mut bytes = 16; // the pair's fields
    let count = entries
        .iter()
        .take_while(|entry| {
            let size = prost::Message::encoded_len(*entry);
            bytes += size + prost::encoding::encoded_len_varint(size as u64) + 1;
            bytes <= bytes_max
        })
        .count();
    count.max(1)
}

/// One chunk of a snapshot of entries, exactly as versions before the
/// snapshots of blocks sent and read it: `batch` is an encoded `PushBatch`
/// of `pair` whose `entries` are `entries` (their seqs the origin's, one
/// after the other), `crc32` the crc of those bytes; nothing else is set.
pub fn entries_chunk(group: u32, from: u32, pair: Pair, entries: Vec<LogEntry>) -> SnapshotChunk {
    let batch = PushBatch { durable_seq: 0, follower_id: pair.0, shard: pair.1, entries, blocks: Vec::new() };
    let batch = prost::Message::encode_to_vec(&batch);
    let crc32 = crc32fast::hash(&batch);
    SnapshotChunk { group, from, batch: batch.into(), crc32, ..Default::default() }
}

/// The chunk that ends a snapshot: the `MsgSnapshot` and the state
/// (`watermarks` after entry `applied`) the receiver's machine becomes.
pub fn last_chunk(
    group: u32,
    from: u32,
    message: &Message,
    watermarks: &BTreeMap<(u32, u32), u64>,
    applied: u64,
) -> Result<SnapshotChunk, Status> {
    let raft_message =
        message.write_to_bytes().map_err(|error| Status::internal(format!("encode raft message: {error}")))?;
    let state = watermarks.iter().map(|(&(node, shard), &seq)| OriginWatermark { node, shard, seq }).collect();
    Ok(SnapshotChunk {
        group,
        from,
        raft_message: raft_message.into(),
        applied,
        watermarks: state,
        ..Default::default()
    })
}

/// How long a snapshot waits for the appends its state covers to become
/// durable (they are in flight when the state is taken mid-commit).
const DATA_WAIT: Duration = Duration::from_secs(10);

/// Waits until the shard's durable data holds every pair up to
/// `watermarks` (the state a snapshot stands for, taken while appends of
/// the entry it includes may still be in flight).
async fn data_reaching(shard: &Shard, watermarks: &BTreeMap<(u32, u32), u64>) -> Result<(), Status> {
    let deadline = std::time::Instant::now() + DATA_WAIT;
    loop {
        let durable = shard.durable_seq();
        let short =
            watermarks.iter().find(|(&(node, origin_shard), &seq)| shard.origin_watermark(node, origin_shard) < seq);
        let Some((pair, seq)) = short else { return Ok(()) };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(Status::internal(format!(
                "snapshot: the shard holds {pair:?} up to {}, short of the state's {seq}",
                shard.origin_watermark(pair.0, pair.1)
            )));
        }
        futures_lite::future::or(
            async {
                shard.wait_durable_after(durable).await;
            },
            glommio::timer::sleep(left.min(Duration::from_millis(100))),
        )
        .await;
    }
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

    fn entry(seq: u64, body_bytes: usize) -> LogEntry {
        LogEntry {
            fields: Default::default(),
            node_id: 7,
            shard: 1,
            seq,
            timestamp_ns: seq as i64,
            tags: [("app".to_string(), "web".to_string())].into_iter().collect(),
            body: vec![b'x'; body_bytes].into(),
        }
    }

    #[test]
    fn an_entries_chunk_is_what_earlier_versions_read() {
        let entries: Vec<LogEntry> = (5..=9).map(|seq| entry(seq, 100)).collect();
        let chunk = entries_chunk(3, 1, (7, 1), entries.clone());
        // What a receiver before the snapshots of blocks read: `batch` and
        // its crc, parsed as a pushed batch of entries; nothing else.
        assert_eq!((chunk.group, chunk.from), (3, 1));
        assert_eq!(crc32fast::hash(&chunk.batch), chunk.crc32);
        assert!(chunk.batches.is_empty() && chunk.block_tags.is_empty() && chunk.raft_message.is_empty());
        assert!(chunk.watermarks.is_empty() && chunk.members.is_empty() && chunk.applied == 0);
        let parsed = crate::replication::batch::PushedBatch::parse(chunk.batch.clone()).unwrap();
        assert_eq!((parsed.follower_id, parsed.shard), (7, 1));
        assert_eq!(parsed.seqs().collect::<Vec<_>>(), (5..=9).collect::<Vec<_>>());
        let decoded = <PushBatch as prost::Message>::decode(chunk.batch).unwrap();
        assert!(decoded.blocks.is_empty());
        assert_eq!(decoded.entries, entries);
    }

    #[test]
    fn entries_are_cut_into_batches_under_the_byte_bound_and_a_large_one_goes_alone() {
        let entries: Vec<LogEntry> = (1..=10).map(|seq| entry(seq, 1000)).collect();
        let one = prost::Message::encoded_len(&entries[0]) + 3;
        let fitting = entries_fitting(&entries, 16 + one * 4);
        assert_eq!(fitting, 4);
        let chunk = entries_chunk(0, 1, (7, 1), entries[..fitting].to_vec());
        assert!(chunk.batch.len() <= 16 + one * 4, "{} bytes", chunk.batch.len());
        assert_eq!(entries_fitting(&entries, 16 + one * 4 - 1), 3);
        assert_eq!(entries_fitting(&entries, 10), 1, "an entry too large for the bound still goes");
        assert_eq!(entries_fitting(&entries, usize::MAX / 2), 10);
    }
}
