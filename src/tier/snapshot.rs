//! What a snapshot sends, decided block by block: pure, tested without an
//! executor. The sender ([`super::transport::send_snapshot`]) streams its
//! shard's stored blocks in seq order
//! ([`Shard::read_replicated_blocks`](crate::shard::Shard::read_replicated_blocks));
//! a [`Chunker`] picks the ones the receiver lacks and groups them into
//! chunks, each a `PushBatch` of one origin pair whose `blocks` are stored
//! blocks as they are on disk (compressed): nothing is decoded or encoded
//! again, so a snapshot costs about what copying the segments costs.
//!
//! For each origin pair the receiver holds `1..=theirs` (its data's
//! watermark, asked first) and the snapshot stands for `1..=ours` (the
//! sender's machine state it captured, which its data holds). A block of
//! the pair holding origin seqs `first..=last`:
//! - wholly at or below `theirs`, or wholly above `ours`: not sent (whole
//!   sealed segments of such blocks are not even read: [`Wanted`]);
//! - straddling `theirs`: sent whole; the receiver's append leaves out
//!   what it holds (and re-encodes the rest of that one block);
//! - straddling `ours`: cut, its entries up to `ours` sent as a batch of
//!   entries, so the receiver's data ends where the state it is raised to
//!   does (data ahead of the machine would be allowed, see `machine.rs`:
//!   it is what later entries decide again; cutting is cheap, one block
//!   per pair at most, and keeps the receiver tidy);
//! - otherwise sent whole.
//!
//! A chunk holds the wanted blocks of a stretch of the shard, up to
//! [`SNAPSHOT_CHUNK_BYTES_MAX`], as batches: consecutive blocks of one pair
//! form one batch (a `PushBatch` has one pair), and the receiver stores a
//! whole chunk with one fdatasync however many pairs it interleaves (a
//! group archives many followers' shards, whose blocks alternate). A batch
//! carries its blocks' tags when the sender's index knows them all, so the
//! receiver verifies crcs only; blocks with and without tags never share a
//! batch. A hole (a block that
//! does not continue what the receiver will hold: retention deleted
//! older data) fails the snapshot instead of leaving a hole on the
//! receiver, and so does data that ends short of the state.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use prost::encoding::encode_varint;
use prost::Message as _;

use super::machine::Pair;
use super::proposal::{encode_tag_sets, encode_union_terms};
use crate::codec::block::{self, BlockError, BlockHeader, TagSet};
use crate::index::word_filter::WordFilter;
use crate::limits::{
    SNAPSHOT_CHUNK_BATCHES_MAX, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_CHUNK_ENTRIES, SNAPSHOT_CHUNK_TAG_BYTES_MAX,
};
use crate::proto::PushBatch;

/// Why a snapshot cannot be made from the sender's data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The pair's blocks skip seqs the receiver lacks.
    #[error("snapshot: origin {pair:?} seqs {from}..{to} are not in the shard (retention?)")]
    Hole {
        /// The origin pair.
        pair: Pair,
        /// First missing seq.
        from: u64,
        /// The seq the next block starts at.
        to: u64,
    },
    /// The data ends before the state the snapshot stands for.
    #[error("snapshot: origin {pair:?} ends at seq {held} in the shard, the state at {state} (retention?)")]
    Short {
        /// The origin pair.
        pair: Pair,
        /// What the receiver will hold.
        held: u64,
        /// The state's watermark.
        state: u64,
    },
    /// A block handed over is not a replicated block that decodes.
    #[error("snapshot: block at seq {seq}: {error}")]
    Block {
        /// Its seq in the sender's shard.
        seq: u64,
        /// What is wrong.
        error: BlockError,
    },
}

/// Which origin ranges a snapshot wants: above the receiver's watermark
/// and not wholly above the state it stands for. Also judges the origin
/// ranges of whole sealed segments (a segment none of whose ranges is
/// wanted holds no wanted block).
#[derive(Clone, Debug)]
pub struct Wanted {
    theirs: BTreeMap<Pair, u64>,
    ours: BTreeMap<Pair, u64>,
}

impl Wanted {
    /// For a receiver holding `theirs` and a state of `ours`.
    pub fn new(theirs: BTreeMap<Pair, u64>, ours: BTreeMap<Pair, u64>) -> Wanted {
        Wanted { theirs, ours }
    }

    /// Whether origin seqs `first..=last` of `pair` hold one to send.
    pub fn wants(&self, pair: Pair, first: u64, last: u64) -> bool {
        let theirs = self.theirs.get(&pair).copied().unwrap_or(0);
        self.ours.get(&pair).is_some_and(|&ours| first <= ours && last > theirs)
    }
}

/// One batch of a chunk: a `PushBatch` of one pair and its blocks' tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The origin pair.
    pub pair: Pair,
    /// Where the encoded `PushBatch` is in the chunk's buffer.
    pub range: Range<usize>,
    /// Its blocks' tags for `SnapshotChunk.block_tags` (empty: none).
    pub block_tags: Vec<u8>,
    /// Its blocks' terms for `SnapshotChunk.block_terms`, as
    /// `Proposal.block_terms` lays them out (empty: none): each block's tags
    /// as its one set, and its word filter, so that the receiver's index
    /// prunes the block by word as the sender's does.
    pub block_terms: Vec<u8>,
    /// Entries in the batch.
    pub entries: u64,
}

/// One chunk to send: batches, in the order they were made, one after the
/// other in one buffer (allocated once per chunk, at its bound: no block
/// is copied twice on its way into it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    /// The batches' bytes.
    pub buffer: Vec<u8>,
    /// The batches.
    pub batches: Vec<Batch>,
    /// Bytes of their tags.
    pub tag_bytes: usize,
}

impl Chunk {
    /// The encoded `PushBatch` of batch `index`.
    pub fn batch(&self, index: usize) -> &[u8] {
        &self.buffer[self.batches[index].range.clone()]
    }
}

/// The batch being filled, at the end of the chunk's buffer.
struct Open {
    pair: Pair,
    /// Where it starts in the chunk's buffer.
    start: usize,
    /// The origin seq after its last block's.
    next_seq: u64,
    entries: u64,
    /// One tag set per block, or `None`: the batch's blocks go without.
    tags: Option<Vec<TagSet>>,
    /// With the tags, one word filter per block, where the sender has one.
    filters: Vec<Option<WordFilter>>,
}

/// Picks, cuts and groups the blocks of a snapshot into chunks (see the
/// module doc). Feed it every block in the shard's seq order
/// ([`Chunker::push_block`]), send what [`Chunker::take_ready`] gives
/// between feeds, and [`Chunker::finish`] at the end.
pub struct Chunker {
    wanted: Wanted,
    /// Per pair, the last seq the receiver will hold once the chunks made
    /// so far are installed.
    covered: BTreeMap<Pair, u64>,
    /// The chunk being filled (its batches closed so far) and its open batch.
    chunk: Chunk,
    open: Option<Open>,
    ready: VecDeque<Chunk>,
    bytes_max: usize,
    tag_bytes_max: usize,
}

impl Chunker {
    /// For a receiver whose data holds `theirs`, a snapshot of state `ours`.
    pub fn new(theirs: BTreeMap<Pair, u64>, ours: BTreeMap<Pair, u64>) -> Chunker {
        Chunker::with_limits(theirs, ours, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_CHUNK_TAG_BYTES_MAX)
    }

    /// [`Chunker::new`] with other chunk bounds (tests).
    pub fn with_limits(
        theirs: BTreeMap<Pair, u64>,
        ours: BTreeMap<Pair, u64>,
        bytes_max: usize,
        tag_bytes_max: usize,
    ) -> Chunker {
        Chunker {
            covered: theirs.clone(),
            wanted: Wanted::new(theirs, ours),
            chunk: Chunk::default(),
            open: None,
            ready: VecDeque::new(),
            bytes_max,
            tag_bytes_max,
        }
    }

    /// What the snapshot wants (for the reader's filter).
    pub fn wanted(&self) -> &Wanted {
        &self.wanted
    }

    /// Takes the next block of the sender's shard: `block` is its bytes
    /// (crc-checked), `header` its header, `tags` its tags when known and
    /// `filter` its word filter when it has one.
    pub fn push_block(
        &mut self,
        header: &BlockHeader,
        block: &[u8],
        tags: Option<TagSet>,
        filter: Option<WordFilter>,
    ) -> Result<(), SnapshotError> {
        let Some(origin) = header.origin else { return Ok(()) };
        let pair = (origin.node, origin.shard);
        let (first, last) = (origin.first_seq, origin.first_seq + u64::from(header.entry_count) - 1);
        let Some(&ours) = self.wanted.ours.get(&pair) else { return Ok(()) };
        let covered = self.covered.get(&pair).copied().unwrap_or(0);
        if last <= covered || first > ours {
            return Ok(());
        }
        if first > covered + 1 {
            return Err(SnapshotError::Hole { pair, from: covered + 1, to: first });
        }
        if last > ours {
            self.flush();
            return self.cut(header, block, pair, covered, ours);
        }
        // Tags (and the filter) the chunk can carry, or none (the receiver
        // reads the tags, and keeps no filter).
        let tag_bytes = tags.as_ref().map_or(0, |tags| {
            let bytes = tags.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>();
            // With a filter, the terms repeat the tags.
            bytes + filter.as_ref().map_or(0, |filter| bytes + filter.bytes() + 8)
        });
        let (tags, tag_bytes) = match tags {
            Some(tags) if tag_bytes <= self.tag_bytes_max => (Some(tags), tag_bytes),
            _ => (None, 0),
        };
        let room = self.chunk.buffer.len() + block.len() + 16 <= self.bytes_max
            && self.chunk.tag_bytes + tag_bytes <= self.tag_bytes_max
            && self.chunk.batches.len() < SNAPSHOT_CHUNK_BATCHES_MAX;
        if !room {
            self.flush();
        }
        let joins = self
            .open
            .as_ref()
            .is_some_and(|open| open.pair == pair && open.next_seq == first && open.tags.is_some() == tags.is_some());
        if !joins {
            self.close_batch();
        }
        let buffer = &mut self.chunk.buffer;
        if buffer.capacity() == 0 {
            buffer.reserve_exact(self.bytes_max + 64);
        }
        let open = self.open.get_or_insert_with(|| {
            let start = buffer.len();
            batch_header(pair, buffer);
            Open { pair, start, next_seq: first, entries: 0, tags: tags.is_some().then(Vec::new), filters: Vec::new() }
        });
        encode_varint((4 << 3) | 2, buffer);
        encode_varint(block.len() as u64, buffer);
        buffer.extend_from_slice(block);
        open.next_seq = last + 1;
        open.entries += u64::from(header.entry_count);
        if let (Some(all), Some(tags)) = (open.tags.as_mut(), tags) {
            all.push(tags);
            open.filters.push(filter);
            self.chunk.tag_bytes += tag_bytes;
        }
        self.covered.insert(pair, last);
        Ok(())
    }

    /// Sends the entries of a block straddling the state's watermark `ours`
    /// up to it (and above `covered`), as chunks of batches of entries.
    fn cut(
        &mut self,
        header: &BlockHeader,
        block: &[u8],
        pair: Pair,
        covered: u64,
        ours: u64,
    ) -> Result<(), SnapshotError> {
        let (_, entries) = block::decode_block(block, pair.0, pair.1)
            .map_err(|error| SnapshotError::Block { seq: header.first_seq, error })?;
        let kept: Vec<_> = entries.into_iter().filter(|entry| entry.seq > covered && entry.seq <= ours).collect();
        for part in kept.chunks(SNAPSHOT_CHUNK_ENTRIES) {
            let batch = PushBatch {
                durable_seq: 0,
                follower_id: pair.0,
                shard: pair.1,
                entries: part.to_vec(),
                blocks: Vec::new(),
            };
            let buffer = batch.encode_to_vec();
            let batch = Batch {
                pair,
                range: 0..buffer.len(),
                block_tags: Vec::new(),
                block_terms: Vec::new(),
                entries: part.len() as u64,
            };
            self.ready.push_back(Chunk { buffer, batches: vec![batch], tag_bytes: 0 });
        }
        self.covered.insert(pair, ours);
        Ok(())
    }

    /// Closes the batch being filled into the chunk.
    fn close_batch(&mut self) {
        if let Some(open) = self.open.take() {
            let (block_tags, block_terms) = match &open.tags {
                None => (Vec::new(), Vec::new()),
                Some(tags) => {
                    let blocks: Vec<_> =
                        tags.iter().zip(&open.filters).map(|(tags, filter)| (Some(tags), filter.as_ref())).collect();
                    (encode_tag_sets(&tags.iter().collect::<Vec<_>>()), encode_union_terms(&blocks))
                }
            };
            let range = open.start..self.chunk.buffer.len();
            self.chunk.batches.push(Batch { pair: open.pair, range, block_tags, block_terms, entries: open.entries });
        }
    }

    /// Closes the chunk being filled.
    fn flush(&mut self) {
        self.close_batch();
        if !self.chunk.batches.is_empty() {
            self.ready.push_back(std::mem::take(&mut self.chunk));
        }
    }

    /// The next chunk ready to send.
    pub fn take_ready(&mut self) -> Option<Chunk> {
        self.ready.pop_front()
    }

    /// After the last block: closes the last chunk and checks that the
    /// receiver will hold every pair up to the state.
    pub fn finish(&mut self) -> Result<(), SnapshotError> {
        self.flush();
        for (&pair, &state) in &self.wanted.ours {
            let held = self.covered.get(&pair).copied().unwrap_or(0);
            if held < state {
                return Err(SnapshotError::Short { pair, held, state });
            }
        }
        Ok(())
    }
}

/// Writes a `PushBatch`'s pair fields.
fn batch_header(pair: Pair, out: &mut Vec<u8>) {
    encode_varint(1 << 3, out);
    encode_varint(u64::from(pair.0), out);
    encode_varint(2 << 3, out);
    encode_varint(u64::from(pair.1), out);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::block::{encode_block, encode_entry, encoded_bytes_max, insert_tag, BlockSpec, Origin};
    use crate::replication::batch::PushedBatch;
    use crate::shard::EntryRef;
    use bytes::Bytes;

    const A: Pair = (7, 1);
    const D: Pair = (0, 3);

    /// A stored block of `pair`'s origin seqs `seqs`, at shard seq `local`.
    fn block(pair: Pair, seqs: std::ops::RangeInclusive<u64>, local: u64) -> (BlockHeader, Vec<u8>) {
        let mut raw = Vec::new();
        for seq in seqs.clone() {
            let body = format!("entry {seq} of {pair:?}");
            encode_entry(
                &EntryRef { fields: &[], timestamp_ns: seq as i64, tags: &[("app", "web")], body: body.as_bytes() },
                seq as i64,
                &mut raw,
            );
        }
        let spec = BlockSpec {
            fields: false,
            first_seq: local,
            entry_count: (seqs.end() - seqs.start() + 1) as u32,
            min_ts: *seqs.start() as i64,
            max_ts: *seqs.end() as i64,
            origin: Some(Origin { node: pair.0, shard: pair.1, first_seq: *seqs.start() }),
        };
        let mut out = vec![0; encoded_bytes_max(raw.len())];
        let used = encode_block(&spec, &raw, &mut out);
        out.truncate(used);
        (block::verify_block(&out).unwrap(), out)
    }

    fn tags() -> TagSet {
        let mut tags = TagSet::default();
        insert_tag(&mut tags, "app", "web");
        tags
    }

    /// A chunk as (pair, seqs, tagged) per batch.
    type Shape = Vec<(Pair, Vec<u64>, bool)>;

    /// Feeds `blocks` (pair, first, last, tagged) in order and returns the
    /// chunks made.
    fn run(chunker: &mut Chunker, blocks: &[(Pair, u64, u64, bool)]) -> Result<Vec<Shape>, SnapshotError> {
        let mut local = 1;
        for &(pair, first, last, tagged) in blocks {
            let (header, bytes) = block(pair, first..=last, local);
            local += last - first + 1;
            // Tagged blocks come with a filter too, whose one word is `first`.
            let filter = tagged.then(|| WordFilter::from_words(vec![first].into()));
            chunker.push_block(&header, &bytes, tagged.then(tags), filter)?;
        }
        chunker.finish()?;
        let mut chunks = Vec::new();
        while let Some(chunk) = chunker.take_ready() {
            let ends: Vec<usize> = chunk.batches.iter().map(|batch| batch.range.end).collect();
            let starts: Vec<usize> = chunk.batches.iter().map(|batch| batch.range.start).collect();
            assert_eq!((starts[0], ends[ends.len() - 1]), (0, chunk.buffer.len()), "batches fill the buffer");
            assert_eq!(starts[1..], ends[..ends.len() - 1], "one after the other");
            let batches = chunk
                .batches
                .iter()
                .enumerate()
                .map(|(index, batch)| {
                    let bytes = Bytes::copy_from_slice(chunk.batch(index));
                    let parsed = PushedBatch::parse_archived(bytes.clone()).unwrap();
                    assert_eq!((parsed.follower_id, parsed.shard), batch.pair);
                    assert_eq!(parsed.len() as u64, batch.entries);
                    if !batch.block_tags.is_empty() {
                        let sets = super::super::proposal::decode_block_tags(&batch.block_tags).unwrap();
                        PushedBatch::parse_archived_checked(bytes.clone(), sets.clone(), None).unwrap();
                        // The terms: each block's tags as its one set, and its filter.
                        let terms = super::super::proposal::decode_block_terms(&batch.block_terms).unwrap().unwrap();
                        let checked = PushedBatch::parse_archived_checked(bytes, sets, Some(terms)).unwrap();
                        let firsts: Vec<u64> = checked
                            .block_terms()
                            .map(|terms| {
                                let terms = terms.unwrap();
                                assert_eq!(terms.pairs().collect::<Vec<_>>(), [("app", "web")]);
                                assert_eq!(terms.sets().collect::<Vec<_>>(), [&[0_u32][..]]);
                                terms.word_filter().unwrap().words()[0]
                            })
                            .collect();
                        let starts: Vec<u64> = parsed.seqs().filter(|seq| firsts.contains(seq)).collect();
                        assert_eq!(firsts, starts, "each block's own filter, in order");
                    } else {
                        assert!(batch.block_terms.is_empty());
                    }
                    (batch.pair, parsed.seqs().collect(), !batch.block_tags.is_empty())
                })
                .collect();
            chunks.push(batches);
        }
        Ok(chunks)
    }

    fn seqs(range: std::ops::RangeInclusive<u64>) -> Vec<u64> {
        range.collect()
    }

    #[test]
    fn blocks_the_receiver_holds_or_past_the_state_stay_and_interleaved_pairs_share_a_chunk() {
        let theirs = BTreeMap::from([(A, 5)]);
        let ours = BTreeMap::from([(A, 14), (D, 4)]);
        let mut chunker = Chunker::new(theirs, ours);
        let chunks = run(
            &mut chunker,
            &[
                (A, 1, 3, true),  // held
                (D, 1, 2, true),  // sent
                (A, 4, 7, true),  // straddles theirs: whole
                (A, 8, 9, true),  // joins the batch
                (D, 3, 4, false), // no tags: its own batch
                (A, 10, 12, true),
                (A, 13, 16, true), // straddles the state: cut to 13..=14
                (A, 17, 20, true), // past it
                (D, 5, 6, true),   // past it
            ],
        )
        .unwrap();
        assert_eq!(
            chunks,
            vec![
                vec![(D, seqs(1..=2), true), (A, seqs(4..=9), true), (D, seqs(3..=4), false), (A, seqs(10..=12), true)],
                vec![(A, seqs(13..=14), false)],
            ]
        );
    }

    #[test]
    fn a_chunk_ends_at_its_byte_bound_and_a_batch_at_a_gap_in_tags() {
        let (_, one) = block(A, 1..=3, 1);
        let ours = BTreeMap::from([(A, 30)]);
        // Room for two blocks of this size, not three.
        let mut chunker = Chunker::with_limits(BTreeMap::new(), ours, one.len() * 2 + 64, 1 << 20);
        let blocks: Vec<_> = (0..10).map(|index| (A, index * 3 + 1, index * 3 + 3, index != 4)).collect();
        let chunks = run(&mut chunker, &blocks).unwrap();
        let shape: Vec<Vec<(usize, bool)>> =
            chunks.iter().map(|chunk| chunk.iter().map(|(_, seqs, tagged)| (seqs.len(), *tagged)).collect()).collect();
        assert_eq!(
            shape,
            vec![vec![(6, true)], vec![(6, true)], vec![(3, false), (3, true)], vec![(6, true)], vec![(6, true)],]
        );
        let all: Vec<u64> = chunks.iter().flatten().flat_map(|(_, seqs, _)| seqs.clone()).collect();
        assert_eq!(all, seqs(1..=30));
    }

    #[test]
    fn a_hole_or_data_short_of_the_state_fails_the_snapshot() {
        let ours = BTreeMap::from([(A, 10)]);
        let mut chunker = Chunker::new(BTreeMap::from([(A, 2)]), ours.clone());
        let error = run(&mut chunker, &[(A, 1, 2, true), (A, 5, 10, true)]).unwrap_err();
        assert_eq!(error, SnapshotError::Hole { pair: A, from: 3, to: 5 });
        let mut chunker = Chunker::new(BTreeMap::new(), ours);
        let error = run(&mut chunker, &[(A, 1, 6, true)]).unwrap_err();
        assert_eq!(error, SnapshotError::Short { pair: A, held: 6, state: 10 });
    }

    #[test]
    fn wanted_ranges_are_above_the_receiver_and_not_past_the_state() {
        let wanted = Wanted::new(BTreeMap::from([(A, 10)]), BTreeMap::from([(A, 20), (D, 5)]));
        assert!(!wanted.wants(A, 1, 10));
        assert!(wanted.wants(A, 5, 11));
        assert!(wanted.wants(A, 20, 30));
        assert!(!wanted.wants(A, 21, 30));
        assert!(wanted.wants(D, 1, 1));
        assert!(!wanted.wants((9, 9), 1, 1), "a pair outside the state");
    }
}
