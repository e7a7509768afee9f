//! A tier snapshot of stored blocks, end to end without the network: the
//! sender's shard streamed by `tier::transport::snapshot_chunks` straight
//! into a receiving replica's `Replica::install_chunk`. The receiver must
//! end with exactly the sender's archive up to the snapshot's state (the
//! same entries per origin pair, and an index that finds the same entries
//! by tag), whether it starts empty or holding a prefix whose end falls
//! inside one of the sender's blocks; with a follower's pair and the
//! group's direct writes (origin `(0, g)`), over several segments, and a
//! state that ends inside the sender's last block of a pair (the sender
//! cuts it). Also with the blocks' tags left out of the chunks (the
//! receiver then checks every block entry by entry).
//!
//! And over the network, to a member of an earlier version (a rolling
//! upgrade): it refuses the call of blocks (`UNIMPLEMENTED`), so the
//! sender's `send_snapshot` sends the snapshot again as entries, on the
//! path and in the form those versions read, and keeps doing so for that
//! peer until its link reconnects.
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use raft::prelude::{Message, MessageType, Snapshot};
use wormdb::grpc::status::Status;
use wormdb::grpc::transport::{serve_connection, Call, LocalFuture, ServerOptions, Service};
use wormdb::index::words::WordQuery;
use wormdb::proto::{
    LogEntry, OriginWatermark, PushBatch, RaftAck, RaftBatch, SnapshotChunk, WatermarksRequest, WatermarksResponse,
};
use wormdb::replication::batch::PushedBatch;
use wormdb::shard::{EntryRef, Origin, Query, Shard, ShardConfig, Substrings};
use wormdb::tier::replica::Replica;
use wormdb::tier::transport::{
    last_chunk, send_snapshot, snapshot_chunks, Link, SnapshotState, SEND_PATH, SNAPSHOT_BLOCKS_PATH, SNAPSHOT_PATH,
    WATERMARKS_PATH,
};
use wormdb::tier::Members;

const GROUP: u32 = 0;
const FOLLOWER: (u32, u32) = (10, 1);
const DIRECT: (u32, u32) = (0, GROUP);
const APPS: [&str; 3] = ["web", "db", "cache"];

type Pair = (u32, u32);

fn config(dir: &Path, node_id: u32) -> ShardConfig {
    ShardConfig { node_id, segment_bytes: wormdb::limits::SEGMENT_BYTES_MIN, ..ShardConfig::new(dir, GROUP) }
}

/// Entry `seq` of `pair`: a body half text, half pseudo-random hex (so
/// blocks compress some, and the small segments fill), and tags that vary.
fn body(pair: Pair, seq: u64) -> String {
    let mut state = (u64::from(pair.0) << 40) ^ (u64::from(pair.1) << 32) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let noise: String = (0..40)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("{:016x}", state)
        })
        .collect();
    format!("{pair:?} entry {seq}: GET /api/v1/items?page={} 200 {noise}", seq % 97)
}

fn tags(pair: Pair, seq: u64) -> Vec<(String, String)> {
    let kind = if pair == DIRECT { "direct" } else { "pushed" };
    vec![
        ("app".to_string(), APPS[(seq % 3) as usize].to_string()),
        ("kind".to_string(), kind.to_string()),
        ("n".to_string(), (seq % 41).to_string()),
    ]
}

/// Appends entries `seqs` of `pair` to `shard` as one replicated append.
fn append(shard: &Shard, pair: Pair, seqs: std::ops::RangeInclusive<u64>) -> wormdb::shard::AppendWait {
    type Entry = (u64, String, Vec<(String, String)>);
    let bodies: Vec<Entry> = seqs.clone().map(|seq| (seq, body(pair, seq), tags(pair, seq))).collect();
    let tag_refs: Vec<Vec<(&str, &str)>> =
        bodies.iter().map(|(_, _, tags)| tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()).collect();
    let entries: Vec<EntryRef<'_>> = bodies
        .iter()
        .zip(&tag_refs)
        .map(|((seq, body, _), tags)| EntryRef {
            fields: &[],
            timestamp_ns: 1_000 + *seq as i64,
            tags,
            body: body.as_bytes(),
        })
        .collect();
    shard.append_replicated(Origin { node: pair.0, shard: pair.1, first_seq: *seqs.start() }, &entries).unwrap()
}

/// The sender's archive: interleaved appends of both pairs (1 to 40
/// entries each) over several small segments. Returns each append's seqs
/// per pair, in order.
async fn fill_sender(shard: &Shard) -> BTreeMap<Pair, Vec<(u64, u64)>> {
    let mut appends: BTreeMap<Pair, Vec<(u64, u64)>> = BTreeMap::new();
    let mut next = BTreeMap::from([(FOLLOWER, 1u64), (DIRECT, 1u64)]);
    for round in 0..500u64 {
        let mut waits = Vec::new();
        for pair in [FOLLOWER, DIRECT] {
            let count = 1 + (round * 7 + u64::from(pair.0)) % 40;
            let first = next[&pair];
            waits.push(append(shard, pair, first..=first + count - 1));
            appends.entry(pair).or_default().push((first, first + count - 1));
            next.insert(pair, first + count);
        }
        for wait in waits {
            wait.durable().await.unwrap();
        }
    }
    appends
}

fn ids(entries: &[LogEntry]) -> Vec<(u32, u32, u64, i64, Vec<u8>)> {
    let mut ids: Vec<_> = entries
        .iter()
        .map(|entry| (entry.node_id, entry.shard, entry.seq, entry.timestamp_ns, entry.body.to_vec()))
        .collect();
    ids.sort();
    ids
}

/// Everything `shard` holds of `pair` up to `through`, with its tags.
async fn contents(shard: &Shard, pair: Pair, through: u64) -> Vec<LogEntry> {
    let entries = shard.read_origin(pair.0, pair.1, 1, wormdb::limits::READ_ENTRIES_MAX).await.unwrap();
    entries.into_iter().filter(|entry| entry.seq <= through).collect()
}

/// What the index finds by tag, up to the state.
async fn found(shard: &Shard, tags: &[(&str, &str)], ours: &BTreeMap<Pair, u64>) -> Vec<(u32, u32, u64, i64, Vec<u8>)> {
    let query = Query {
        fields: &[],
        tags,
        from_ts: 0,
        to_ts: i64::MAX,
        limit: wormdb::limits::READ_ENTRIES_MAX,
        backward: false,
        words: &Default::default(),
        contains: &Default::default(),
    };
    let result = shard.query(&query).await.unwrap();
    let kept: Vec<LogEntry> =
        result.entries.into_iter().filter(|entry| entry.seq <= ours[&(entry.node_id, entry.shard)]).collect();
    ids(&kept)
}

/// How a snapshot went: chunks, and their batches of blocks with tags,
/// without, of entries.
#[derive(Debug, Default)]
struct Sent {
    chunks: usize,
    /// Chunks offered with their terms damaged, and refused.
    damaged_refused: usize,
    tagged: usize,
    untagged: usize,
    entries: usize,
    bytes: u64,
}

/// The Raft index the snapshots stand for.
const SNAPSHOT_INDEX: u64 = 5;

/// The `MsgSnapshot` from member 1 to member 2 that ends every snapshot.
fn snapshot_message() -> Message {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgSnapshot);
    (message.from, message.to) = (1, 2);
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = SNAPSHOT_INDEX;
    snapshot.mut_metadata().term = 1;
    message.set_snapshot(snapshot);
    message
}

/// The sender's address book, which comes with a snapshot: member 3 joined
/// while the receiver was behind (it never applied that entry).
fn book() -> BTreeMap<u32, SocketAddr> {
    [(1, "127.0.0.1:1"), (2, "127.0.0.1:2"), (3, "127.0.0.1:3")]
        .into_iter()
        .map(|(node_id, addr)| (node_id, addr.parse().unwrap()))
        .collect()
}

/// A replica of member 2 on `receiver`, its Raft log in `dir`.
async fn receiving_replica(receiver: &Shard, dir: &Path) -> Rc<Replica> {
    let members =
        Members { addrs: BTreeMap::from([(1, "127.0.0.1:1".parse().unwrap()), (2, "127.0.0.1:2".parse().unwrap())]) };
    let voters = members.voters();
    Replica::open(2, GROUP, members, &voters, &dir.join("raft"), receiver.clone(), 8).await.unwrap()
}

/// Streams a snapshot of `sender` at state `ours` into a replica opened on
/// `receiver`, and checks the receiver's archive against the sender's.
/// `strip_tags`: the chunks go without their blocks' tags.
async fn snapshot_into(
    sender: &Shard,
    receiver: Shard,
    dir: &Path,
    ours: &BTreeMap<Pair, u64>,
    strip_tags: bool,
) -> Sent {
    let replica = receiving_replica(&receiver, dir).await;
    let theirs = receiver.origin_watermarks();
    let mut sent = Sent::default();
    let (_, bytes) = snapshot_chunks(sender, GROUP, 1, theirs, ours, async |mut chunk| {
        if strip_tags {
            chunk.block_tags.clear();
            chunk.block_terms.clear();
            chunk.crc32 = chunk
                .batches
                .iter()
                .fold(crc32fast::Hasher::new(), |mut crc, batch| {
                    crc.update(batch);
                    crc
                })
                .finalize();
        }
        sent.chunks += 1;
        // The first chunk with terms is offered damaged first: refused
        // whole by the terms' crc, before anything of it is applied (the
        // check against the sender's archive at the end would see it).
        if let Some(position) = chunk.block_terms.iter().position(|terms| !terms.is_empty()) {
            if sent.damaged_refused == 0 {
                let mut damaged = chunk.clone();
                let mut terms = damaged.block_terms[position].to_vec();
                *terms.last_mut().unwrap() ^= 1;
                damaged.block_terms[position] = terms.into();
                let refusal = replica.install_chunk(damaged).await.unwrap_err().to_string();
                assert!(refusal.contains("block terms fail their crc"), "{refusal}");
                sent.damaged_refused += 1;
            }
        }
        for (index, batch) in chunk.batches.iter().enumerate() {
            let blocks = !<PushBatch as prost::Message>::decode(batch.clone()).unwrap().blocks.is_empty();
            match (blocks, chunk.block_tags.get(index).is_none_or(|tags| tags.is_empty())) {
                (false, _) => sent.entries += 1,
                (true, true) => sent.untagged += 1,
                (true, false) => sent.tagged += 1,
            }
        }
        replica.install_chunk(chunk).await.map_err(|error| Status::internal(error.to_string()))
    })
    .await
    .unwrap();
    sent.bytes = bytes;
    let mut last = last_chunk(GROUP, 1, &snapshot_message(), ours, SNAPSHOT_INDEX).unwrap();
    last.members =
        book().into_iter().map(|(node_id, addr)| wormdb::proto::Member { node_id, addr: addr.to_string() }).collect();
    replica.install_chunk(last).await.unwrap();
    check_received(sender, &receiver, &replica, ours).await;
    receiver.close().await.unwrap();
    sent
}

/// Checks that `replica` on `receiver` took a snapshot of `sender` at state
/// `ours` with an address book of members 1 to 3: exactly the sender's
/// archive up to the state, found the same by tag.
async fn check_received(sender: &Shard, receiver: &Shard, replica: &Replica, ours: &BTreeMap<Pair, u64>) {
    assert_eq!(replica.members().addrs.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(&replica.report().watermarks, ours, "the receiver's state is the snapshot's");
    assert_eq!(&receiver.origin_watermarks(), ours, "the receiver's data ends at the state, not past it");
    for (&pair, &through) in ours {
        let want = contents(sender, pair, through).await;
        let got = contents(receiver, pair, u64::MAX).await;
        assert_eq!(want.len() as u64, through, "{pair:?}");
        assert_eq!(ids(&got), ids(&want), "{pair:?}: the receiver holds exactly the sender's entries");
        let tags = |entries: &[LogEntry]| entries.iter().map(|entry| entry.tags.clone()).collect::<Vec<_>>();
        assert_eq!(tags(&got), tags(&want), "{pair:?}: tags");
    }
    for query in [&[("app", "web")][..], &[("kind", "direct"), ("n", "7")], &[("app", "db"), ("kind", "pushed")]] {
        assert_eq!(found(receiver, query, ours).await, found(sender, query, ours).await, "query {query:?}");
    }
    // The blocks came with their word filters: a word no entry holds reads
    // (nearly) none of them, where a scan for a text no entry holds reads
    // every one.
    let blocks_read = async |words: &[&str], contains: &[&str]| {
        let (words, contains) =
            (WordQuery::parse(words.iter().copied()).unwrap(), Substrings::parse(contains.iter().copied()).unwrap());
        let query = Query {
            fields: &[],
            tags: &[],
            from_ts: 0,
            to_ts: i64::MAX,
            limit: wormdb::limits::READ_ENTRIES_MAX,
            backward: false,
            words: &words,
            contains: &contains,
        };
        let before = receiver.stats().blocks_read;
        assert!(receiver.query(&query).await.unwrap().entries.is_empty());
        receiver.stats().blocks_read - before
    };
    let every = blocks_read(&[], &["nowhere q7zx"]).await;
    let by_word = blocks_read(&["nowhere_q7zx"], &[]).await;
    assert!(every >= 20 && by_word * 20 <= every, "q= read {by_word} of {every} blocks: the filters were not sent");
}

/// A state that ends 3 entries into the follower's last append (a block
/// the sender cuts), and at the direct writes' end.
fn cut_state(sender: &Shard, appends: &BTreeMap<Pair, Vec<(u64, u64)>>) -> BTreeMap<Pair, u64> {
    let (first, last) = *appends[&FOLLOWER].last().unwrap();
    assert!(last - first >= 5);
    BTreeMap::from([(FOLLOWER, first + 2), (DIRECT, sender.origin_watermark(DIRECT.0, DIRECT.1))])
}

#[test]
fn a_snapshot_of_stored_blocks_reproduces_the_senders_archive() {
    let dir = common::durable_temp_dir();
    let dir = dir.path().to_path_buf();
    common::run(move || async move {
        let sender = Shard::open(config(&dir.join("sender"), 1)).await.unwrap();
        let appends = fill_sender(&sender).await;
        assert!(sender.stats().segments >= 3, "several segments: {:?}", sender.stats());
        let ours = cut_state(&sender, &appends);

        // An empty receiver: every block, sent as stored, with its tags.
        let empty = Shard::open(config(&dir.join("empty"), 2)).await.unwrap();
        let full = snapshot_into(&sender, empty, &dir.join("empty-replica"), &ours, false).await;
        assert!(full.tagged > 4 && full.untagged == 0, "{full:?}");
        assert_eq!(full.damaged_refused, 1, "{full:?}");
        assert_eq!(full.entries, 1, "the block past the state is cut: {full:?}");
        // The pairs' blocks alternate: a chunk holds many batches.
        assert!(full.chunks * 10 < full.tagged, "{full:?}");

        // A receiver holding a prefix of each pair that ends inside one of the
        // sender's blocks (appends of the sender are its blocks here).
        for strip_tags in [false, true] {
            let name = format!("prefix-{strip_tags}");
            let prefix = Shard::open(config(&dir.join(&name), 2)).await.unwrap();
            for (pair, at) in [(FOLLOWER, 150), (DIRECT, 300)] {
                let (first, last) = appends[&pair][at];
                assert!(last > first, "a block of several entries");
                for start in (1..=first).step_by(500) {
                    append(&prefix, pair, start..=first.min(start + 499)).durable().await.unwrap();
                }
            }
            let part = snapshot_into(&sender, prefix, &dir.join(format!("{name}-replica")), &ours, strip_tags).await;
            assert!(part.bytes < full.bytes * 3 / 4, "what the receiver holds is not sent again: {part:?} vs {full:?}");
            assert_eq!(part.tagged > 0, !strip_tags, "{part:?}");
        }
        sender.close().await.unwrap();
    });
}

/// A member of a version before the snapshots of blocks, as a snapshot
/// sees it: it answers `Watermarks`, takes a snapshot of entries on
/// `WormRaft/Snapshot` (each chunk holding only what those versions read:
/// one batch of entries and its crc, or the last chunk) into a replica of
/// today, takes Raft batches (its link connecting), and knows no other
/// method: `SnapshotBlocks` gets `UNIMPLEMENTED`, unread, as from the
/// fallthrough of that version's router.
struct EarlierVersion {
    replica: Rc<Replica>,
    shard: Shard,
    blocks_refused: Cell<u32>,
    entry_snapshots: Cell<u32>,
    entry_chunks: Cell<u32>,
}

impl EarlierVersion {
    /// Calls of blocks refused and snapshots of entries taken so far.
    fn calls(&self) -> (u32, u32) {
        (self.blocks_refused.get(), self.entry_snapshots.get())
    }

    async fn snapshot(&self, call: &mut Call) -> Result<(), Status> {
        while let Some(chunk) = call.messages.next::<SnapshotChunk>().await? {
            if !chunk.batches.is_empty() || !chunk.block_tags.is_empty() {
                return Err(Status::invalid_argument("a chunk with fields an earlier version does not read"));
            }
            if !chunk.batch.is_empty() {
                if crc32fast::hash(&chunk.batch) != chunk.crc32 {
                    return Err(Status::invalid_argument("a chunk fails its crc"));
                }
                // What that version parsed it with: a pushed batch whose
                // entries carry their origin seqs.
                let batch =
                    PushedBatch::parse(chunk.batch.clone()).map_err(|error| Status::internal(error.to_string()))?;
                let seqs: Vec<u64> = batch.seqs().collect();
                let decoded = <PushBatch as prost::Message>::decode(chunk.batch.clone()).unwrap();
                let from_entries: Vec<u64> = decoded.entries.iter().map(|entry| entry.seq).collect();
                if !decoded.blocks.is_empty() || seqs.is_empty() || seqs != from_entries {
                    return Err(Status::invalid_argument("a chunk that is not a batch of entries"));
                }
                if seqs.windows(2).any(|pair| pair[1] != pair[0] + 1) {
                    return Err(Status::invalid_argument("a batch's seqs do not follow one another"));
                }
                self.entry_chunks.set(self.entry_chunks.get() + 1);
            }
            self.replica.install_chunk(chunk).await.map_err(|error| Status::internal(error.to_string()))?;
        }
        self.entry_snapshots.set(self.entry_snapshots.get() + 1);
        call.send(&RaftAck {}).await
    }
}

impl Service for EarlierVersion {
    fn call<'a>(self: Rc<Self>, path: &'a str, call: &'a mut Call) -> LocalFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            match path {
                WATERMARKS_PATH => {
                    let request = call.messages.next::<WatermarksRequest>().await?.unwrap();
                    assert_eq!(request.group, GROUP);
                    let watermarks = self.shard.origin_watermarks().into_iter();
                    let watermarks = watermarks.map(|((node, shard), seq)| OriginWatermark { node, shard, seq });
                    call.send(&WatermarksResponse { watermarks: watermarks.collect() }).await
                }
                SNAPSHOT_PATH => self.snapshot(call).await,
                SEND_PATH => {
                    while call.messages.next::<RaftBatch>().await?.is_some() {}
                    call.send(&RaftAck {}).await
                }
                _ => {
                    if path == SNAPSHOT_BLOCKS_PATH {
                        self.blocks_refused.set(self.blocks_refused.get() + 1);
                    }
                    Err(Status::unimplemented(format!("unknown method {path}")))
                }
            }
        })
    }
}

/// Serves `service` on an ephemeral port of this executor; its address.
fn serve(service: Rc<EarlierVersion>) -> SocketAddr {
    let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let options =
        Rc::new(ServerOptions { max_message_bytes: wormdb::limits::MESSAGE_BYTES_MAX, closing: Rc::new(|| false) });
    glommio::spawn_local(async move {
        loop {
            let Ok(stream) = listener.accept().await else { continue };
            glommio::spawn_local(serve_connection(
                stream,
                wormdb::net::Peer::default(),
                service.clone(),
                options.clone(),
            ))
            .detach();
        }
    })
    .detach();
    addr
}

#[test]
fn a_member_of_an_earlier_version_gets_its_snapshot_as_entries() {
    let dir = common::durable_temp_dir();
    let dir = dir.path().to_path_buf();
    common::run(move || async move {
        let sender = Shard::open(config(&dir.join("sender"), 1)).await.unwrap();
        let appends = fill_sender(&sender).await;
        let ours = cut_state(&sender, &appends);
        let receiver = Shard::open(config(&dir.join("receiver"), 2)).await.unwrap();
        let replica = receiving_replica(&receiver, &dir.join("receiver-replica")).await;
        let earlier = Rc::new(EarlierVersion {
            replica: replica.clone(),
            shard: receiver.clone(),
            blocks_refused: Cell::new(0),
            entry_snapshots: Cell::new(0),
            entry_chunks: Cell::new(0),
        });
        let link = Link::new(GROUP, 1, 2, serve(earlier.clone()));
        let state = |watermarks: &BTreeMap<Pair, u64>| SnapshotState {
            watermarks: watermarks.clone(),
            applied: SNAPSHOT_INDEX,
            members: book(),
        };

        // Blocks refused, then the whole snapshot as entries, in several
        // chunks (SNAPSHOT_CHUNK_ENTRIES each at most).
        send_snapshot(sender.clone(), &link, snapshot_message(), state(&ours)).await.unwrap();
        assert_eq!(earlier.calls(), (1, 1));
        let total: u64 = ours.values().sum();
        assert!(u64::from(earlier.entry_chunks.get()) >= total / wormdb::limits::SNAPSHOT_CHUNK_ENTRIES as u64 + 2);
        assert!(link.entry_snapshots(), "the link remembers the refusal");
        check_received(&sender, &receiver, &replica, &ours).await;

        // More data, a later state: straight to entries, no call of blocks.
        for pair in [FOLLOWER, DIRECT] {
            let next = sender.origin_watermark(pair.0, pair.1) + 1;
            append(&sender, pair, next..=next + 99).durable().await.unwrap();
        }
        let later: BTreeMap<Pair, u64> = sender.origin_watermarks();
        send_snapshot(sender.clone(), &link, snapshot_message(), state(&later)).await.unwrap();
        assert_eq!(earlier.calls(), (1, 2));
        check_received(&sender, &receiver, &replica, &later).await;

        // The link reconnects (the member may have restarted on the new
        // version): blocks are tried again.
        glommio::spawn_local(link.clone().run()).detach();
        let mut heartbeat = Message::default();
        heartbeat.set_msg_type(MessageType::MsgHeartbeat);
        (heartbeat.from, heartbeat.to) = (1, 2);
        link.send([heartbeat]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while link.sent.get() == 0 {
            assert!(Instant::now() < deadline, "the link never connected");
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        assert!(!link.entry_snapshots(), "a reconnected link forgets the refusal");
        send_snapshot(sender.clone(), &link, snapshot_message(), state(&later)).await.unwrap();
        assert_eq!(earlier.calls(), (2, 3));
        assert!(link.entry_snapshots());
        link.close();
        receiver.close().await.unwrap();
        sender.close().await.unwrap();
    });
}
