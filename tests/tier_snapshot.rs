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
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use raft::prelude::{Message, MessageType, Snapshot};
use wormdb::grpc::status::Status;
use wormdb::proto::{LogEntry, PushBatch};
use wormdb::shard::{EntryRef, Origin, Query, Shard, ShardConfig};
use wormdb::tier::replica::Replica;
use wormdb::tier::transport::{last_chunk, snapshot_chunks};
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
        .map(|((seq, body, _), tags)| EntryRef { timestamp_ns: 1_000 + *seq as i64, tags, body: body.as_bytes() })
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
    let query = Query { tags, from_ts: 0, to_ts: i64::MAX, limit: wormdb::limits::READ_ENTRIES_MAX, backward: false };
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
    tagged: usize,
    untagged: usize,
    entries: usize,
    bytes: u64,
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
    let members =
        Members { addrs: BTreeMap::from([(1, "127.0.0.1:1".parse().unwrap()), (2, "127.0.0.1:2".parse().unwrap())]) };
    let voters = members.voters();
    let replica: Rc<Replica> =
        Replica::open(2, GROUP, members, &voters, &dir.join("raft"), receiver.clone(), 8).await.unwrap();
    let theirs = receiver.origin_watermarks();
    let mut sent = Sent::default();
    let (_, bytes) = snapshot_chunks(sender, GROUP, 1, theirs, ours, async |mut chunk| {
        if strip_tags {
            chunk.block_tags.clear();
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
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgSnapshot);
    (message.from, message.to) = (1, 2);
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = 5;
    snapshot.mut_metadata().term = 1;
    message.set_snapshot(snapshot);
    // The sender's address book comes with it: member 3 joined while this
    // replica was behind (it never applied that entry).
    let mut last = last_chunk(GROUP, 1, &message, ours, 5).unwrap();
    last.members = [(1, "127.0.0.1:1"), (2, "127.0.0.1:2"), (3, "127.0.0.1:3")]
        .into_iter()
        .map(|(node_id, addr)| wormdb::proto::Member { node_id, addr: addr.to_string() })
        .collect();
    replica.install_chunk(last).await.unwrap();
    assert_eq!(replica.members().addrs.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(&replica.report().watermarks, ours, "the receiver's state is the snapshot's");
    assert_eq!(&receiver.origin_watermarks(), ours, "the receiver's data ends at the state, not past it");
    for (&pair, &through) in ours {
        let want = contents(sender, pair, through).await;
        let got = contents(&receiver, pair, u64::MAX).await;
        assert_eq!(want.len() as u64, through, "{pair:?}");
        assert_eq!(ids(&got), ids(&want), "{pair:?}: the receiver holds exactly the sender's entries");
        let tags = |entries: &[LogEntry]| entries.iter().map(|entry| entry.tags.clone()).collect::<Vec<_>>();
        assert_eq!(tags(&got), tags(&want), "{pair:?}: tags");
    }
    for query in [&[("app", "web")][..], &[("kind", "direct"), ("n", "7")], &[("app", "db"), ("kind", "pushed")]] {
        assert_eq!(found(&receiver, query, ours).await, found(sender, query, ours).await, "query {query:?}");
    }
    receiver.close().await.unwrap();
    sent
}

#[test]
fn a_snapshot_of_stored_blocks_reproduces_the_senders_archive() {
    let dir = common::durable_temp_dir();
    let dir = dir.path().to_path_buf();
    common::run(move || async move {
        let sender = Shard::open(config(&dir.join("sender"), 1)).await.unwrap();
        let appends = fill_sender(&sender).await;
        assert!(sender.stats().segments >= 3, "several segments: {:?}", sender.stats());
        // The state ends 3 entries into the follower's last append (a block
        // the sender cuts), and at the direct writes' end.
        let (first, last) = *appends[&FOLLOWER].last().unwrap();
        assert!(last - first >= 5);
        let ours = BTreeMap::from([(FOLLOWER, first + 2), (DIRECT, sender.origin_watermark(DIRECT.0, DIRECT.1))]);

        // An empty receiver: every block, sent as stored, with its tags.
        let empty = Shard::open(config(&dir.join("empty"), 2)).await.unwrap();
        let full = snapshot_into(&sender, empty, &dir.join("empty-replica"), &ours, false).await;
        assert!(full.tagged > 4 && full.untagged == 0, "{full:?}");
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
