//! The in-memory index of one segment: block table, postings, memory cap.
//!
//! See the [module documentation](crate::index) for the cap and its fallback.

use std::collections::{BTreeMap, HashMap};

use crate::codec::block::{Origin, TagSet};
use crate::index::block_terms::BlockTerms;
use crate::index::tag_sets::{intersect, TagSets};
use crate::index::word_filter::{WordFilter, WordFilters};
use crate::limits::{
    BLOCK_ENTRIES_MAX, INDEX_TAG_SETS_PER_SEGMENT_MAX, INDEX_TAG_SET_CELLS_PER_SEGMENT_MAX,
    INDEX_TAG_VALUES_PER_SEGMENT_MAX, TAG_KEY_BYTES_MAX, TAG_VALUE_BYTES_MAX,
};

/// An origin of replicated entries: `(node, shard)` of the shard that first
/// stored them.
pub type OriginKey = (u32, u32);

/// Where one block lies in its segment file and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockMeta {
    /// Byte offset of the block's header in the segment file.
    pub offset: u64,
    /// Bytes the block occupies on disk (header plus stored payload); at least 1.
    pub len: u32,
    /// Sequence number of the block's first entry.
    pub first_seq: u64,
    /// Number of entries in the block, from 1 to [`BLOCK_ENTRIES_MAX`].
    pub entry_count: u32,
    /// Smallest `timestamp_ns` of the block's entries.
    pub min_ts: i64,
    /// Largest `timestamp_ns` of the block's entries.
    pub max_ts: i64,
    /// For a block of replicated entries, where they were first stored: the
    /// block covers origin seqs `origin.first_seq ..= origin_last_seq()`.
    /// `None` for entries stored here first.
    pub origin: Option<Origin>,
}

impl BlockMeta {
    /// Offset one past the block's last byte.
    pub fn end_offset(&self) -> u64 {
        self.offset + u64::from(self.len)
    }

    /// Sequence number one past the block's last entry.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + u64::from(self.entry_count)
    }

    /// The `(node, shard)` the block's entries come from, if replicated.
    pub fn origin_key(&self) -> Option<OriginKey> {
        self.origin.map(|origin| (origin.node, origin.shard))
    }

    /// Origin seq of the block's last entry, if replicated. The block covers
    /// the closed range `origin.first_seq ..= origin_last_seq`.
    pub fn origin_last_seq(&self) -> Option<u64> {
        self.origin.map(|origin| origin.first_seq + u64::from(self.entry_count) - 1)
    }

    /// Whether the block's closed timestamp range `[min_ts, max_ts]` overlaps
    /// the half-open range `[from_ts, to_ts)`; false when `from_ts >= to_ts`.
    pub fn overlaps_time(&self, from_ts: i64, to_ts: i64) -> bool {
        from_ts < to_ts && self.min_ts < to_ts && self.max_ts >= from_ts
    }
}

/// What a segment's index knows about one origin of replicated entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginSummary {
    /// Highest origin seq of this origin known durable on the shard when
    /// the index was built: over its blocks in this segment and, carried
    /// over with [`SegmentIndex::carry_watermarks`], in earlier segments
    /// (which retention may since have deleted). At least 1.
    pub watermark: u64,
    /// Lowest and highest origin seq over this origin's blocks in this
    /// segment (a closed range; `lowest <= highest`), or `None` when the
    /// segment holds no block of it and the origin is only carried over.
    pub seqs: Option<(u64, u64)>,
}

/// Postings of all indexed pairs: key, then value, then the pair's number
/// and its increasing block positions. Nested maps of boxed strings let a query look a pair up by two
/// `&str` without allocating or joining them.
/// ahash: fast, and keyed per process, so hostile tag values cannot force
/// collisions (HashDoS) the way they could with a fixed-key fast hash.
pub(crate) type Postings = HashMap<Box<str>, ValuePostings, ahash::RandomState>;
/// Postings of one key's values.
pub(crate) type ValuePostings = HashMap<Box<str>, PairTerm, ahash::RandomState>;

/// What the index knows of one indexed pair.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PairTerm {
    /// Number of the pair: pairs are numbered from 0 in the order they were
    /// first indexed (the order of the terms in the file).
    pub(crate) id: u32,
    /// Increasing positions of the blocks whose entries carry the pair.
    pub(crate) blocks: Vec<u32>,
}

/// What a query asks of a segment's index (see
/// [`SegmentIndex::candidates_for`]).
#[derive(Clone, Copy, Debug)]
pub struct Predicates<'a> {
    /// Entries must carry every one of these `key=value` pairs.
    pub tags: &'a [(&'a str, &'a str)],
    /// Entries' bodies must hold every one of these words, each given by its
    /// [`word_hash`](crate::index::words::word_hash). Only words of at least
    /// [`FILTERED_WORD_BYTES_MIN`](crate::index::words::FILTERED_WORD_BYTES_MIN)
    /// bytes belong here: filters leave shorter ones out
    /// ([`WordQuery::filter_hashes`](crate::index::words::WordQuery::filter_hashes)).
    pub words: &'a [u64],
    /// Smallest timestamp, inclusive.
    pub from_ts: i64,
    /// Largest timestamp, exclusive.
    pub to_ts: i64,
}

/// The index of one segment: its block table and the `key=value` postings of
/// its blocks, with at most `tag_values_max` distinct pairs indexed.
///
/// Blocks are added in sequence order with [`push_block`](Self::push_block);
/// queries never return a false negative (see [`candidates`](Self::candidates)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentIndex {
    pub(crate) segment_first_seq: u64,
    /// One past the last entry's sequence number.
    pub(crate) next_seq: u64,
    pub(crate) tag_values_max: usize,
    /// Number of (key, value) pairs in `postings`.
    pub(crate) tag_values: usize,
    pub(crate) saturated_from: Option<u32>,
    pub(crate) blocks: Vec<BlockMeta>,
    pub(crate) postings: Postings,
    /// The tag sets of the blocks, and which blocks hold each.
    pub(crate) tag_sets: TagSets,
    /// The blocks' word filters; empty while a sealed index's filters are
    /// not loaded (see [`SegmentIndex::load_filters`]).
    pub(crate) filters: std::cell::OnceCell<WordFilters>,
    /// One record per origin of the segment's replicated blocks, plus the
    /// origins carried over: bounded by [`crate::limits::INDEX_ORIGINS_MAX`]
    /// (the shard caps the origins it accepts).
    pub(crate) origins: BTreeMap<OriginKey, OriginSummary>,
}

/// What one tag predicate allows, before intersection.
enum PredicateBlocks<'a> {
    /// Exactly these block positions (postings of an indexed pair).
    Listed(&'a [u32]),
    /// Every block at this position or later (saturation fallback).
    From(u32),
}

/// The caps of one segment's index ([`crate::index`] explains each and its
/// fallback). The default is the production values of [`crate::limits`];
/// tests choose smaller ones to reach the fallbacks with little data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexCaps {
    /// Distinct `key=value` pairs ([`INDEX_TAG_VALUES_PER_SEGMENT_MAX`] at most).
    pub tag_values_max: usize,
    /// Distinct tag sets ([`INDEX_TAG_SETS_PER_SEGMENT_MAX`] at most).
    pub tag_sets_max: usize,
    /// Tag-set members plus postings ([`INDEX_TAG_SET_CELLS_PER_SEGMENT_MAX`] at most).
    pub tag_set_cells_max: usize,
}

impl Default for IndexCaps {
    fn default() -> Self {
        IndexCaps {
            tag_values_max: INDEX_TAG_VALUES_PER_SEGMENT_MAX,
            tag_sets_max: INDEX_TAG_SETS_PER_SEGMENT_MAX,
            tag_set_cells_max: INDEX_TAG_SET_CELLS_PER_SEGMENT_MAX,
        }
    }
}

impl SegmentIndex {
    /// An empty index with `caps` (see [`with_caps`](Self::with_caps)).
    pub fn with_index_caps(segment_first_seq: u64, caps: IndexCaps) -> Self {
        Self::with_caps(segment_first_seq, caps.tag_values_max, caps.tag_sets_max, caps.tag_set_cells_max)
    }

    /// An empty index for the segment whose first entry has sequence number
    /// `segment_first_seq`, capped at [`INDEX_TAG_VALUES_PER_SEGMENT_MAX`]
    /// distinct pairs.
    pub fn new(segment_first_seq: u64) -> Self {
        Self::with_tag_values_max(segment_first_seq, INDEX_TAG_VALUES_PER_SEGMENT_MAX)
    }

    /// An empty index with a smaller cap on distinct pairs, so tests can reach
    /// saturation quickly.
    ///
    /// # Panics
    /// If `tag_values_max` exceeds [`INDEX_TAG_VALUES_PER_SEGMENT_MAX`]: the
    /// index file could not be read back.
    pub fn with_tag_values_max(segment_first_seq: u64, tag_values_max: usize) -> Self {
        Self::with_caps(
            segment_first_seq,
            tag_values_max,
            INDEX_TAG_SETS_PER_SEGMENT_MAX,
            INDEX_TAG_SET_CELLS_PER_SEGMENT_MAX,
        )
    }

    /// An empty index with smaller caps on distinct pairs, distinct tag sets
    /// and tag-set cells (members plus postings), so tests can reach
    /// saturation quickly.
    ///
    /// # Panics
    /// If a cap exceeds its production value in [`crate::limits`]: the index
    /// file could not be read back.
    pub fn with_caps(
        segment_first_seq: u64,
        tag_values_max: usize,
        tag_sets_max: usize,
        tag_set_cells_max: usize,
    ) -> Self {
        assert!(
            tag_values_max <= INDEX_TAG_VALUES_PER_SEGMENT_MAX,
            "tag_values_max {tag_values_max} is over INDEX_TAG_VALUES_PER_SEGMENT_MAX"
        );
        assert!(tag_sets_max <= INDEX_TAG_SETS_PER_SEGMENT_MAX, "tag_sets_max is over INDEX_TAG_SETS_PER_SEGMENT_MAX");
        assert!(
            tag_set_cells_max <= INDEX_TAG_SET_CELLS_PER_SEGMENT_MAX,
            "tag_set_cells_max is over INDEX_TAG_SET_CELLS_PER_SEGMENT_MAX"
        );
        Self {
            segment_first_seq,
            next_seq: segment_first_seq,
            tag_values_max,
            tag_values: 0,
            saturated_from: None,
            blocks: Vec::new(),
            postings: HashMap::default(),
            tag_sets: TagSets::new(tag_sets_max, tag_set_cells_max),
            filters: std::cell::OnceCell::from(WordFilters::new()),
            origins: BTreeMap::new(),
        }
    }

    /// Adds the next block of the segment with the tags of its entries.
    ///
    /// `tags` may repeat pairs (it is typically every tag of every entry); a
    /// block gets at most one posting per pair. Pairs are indexed in the order
    /// they come, subject to the cap described in the
    /// [module documentation](crate::index).
    ///
    /// # Panics
    /// On a programmer error: the block does not follow the previous one
    /// (`first_seq` is not [`next_seq`](Self::next_seq), or it starts before
    /// [`data_end`](Self::data_end)), its `len` is 0, its `entry_count` is 0 or
    /// over [`BLOCK_ENTRIES_MAX`], `min_ts > max_ts`, a sequence number or
    /// offset overflows, an origin's first seq is 0 or its range overflows,
    /// or a tag key or value is longer than [`TAG_KEY_BYTES_MAX`] or
    /// [`TAG_VALUE_BYTES_MAX`].
    pub fn push_block<'a>(&mut self, meta: BlockMeta, tags: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.push_block_terms(meta, &BlockTerms::from_union(tags));
    }

    /// Adds the next block of the segment with what its entries gave
    /// ([`BlockTerms`]): its distinct pairs, in the order they are indexed,
    /// and its distinct tag sets.
    ///
    /// # Panics
    /// As [`push_block`](Self::push_block); also on an index that was
    /// decoded from a file (it is sealed).
    pub fn push_block_terms(&mut self, meta: BlockMeta, terms: &BlockTerms) {
        assert_eq!(meta.first_seq, self.next_seq, "block does not follow the previous one in sequence");
        assert!(meta.offset >= self.data_end(), "block overlaps the previous one");
        assert!(meta.len >= 1, "block has no bytes");
        assert!(meta.entry_count >= 1, "block has no entries");
        assert!(meta.entry_count as usize <= BLOCK_ENTRIES_MAX, "block has too many entries");
        assert!(meta.min_ts <= meta.max_ts, "block min_ts is after max_ts");
        assert!(meta.offset.checked_add(u64::from(meta.len)).is_some(), "block end offset overflows");
        let next_seq = meta.first_seq.checked_add(u64::from(meta.entry_count));
        // u32::MAX is reserved as "not saturated" in the file, so positions stop below it.
        let position = u32::try_from(self.blocks.len()).ok().filter(|&position| position < u32::MAX);
        let (Some(next_seq), Some(position)) = (next_seq, position) else {
            panic!("segment has too many entries or blocks");
        };
        if let Some(origin) = meta.origin {
            assert!(origin.first_seq >= 1, "block origin seqs start at 1");
            assert!(
                origin.first_seq.checked_add(u64::from(meta.entry_count)).is_some(),
                "block origin seq range overflows"
            );
        }

        let mut numbers = Vec::with_capacity(terms.pair_count());
        for (key, value) in terms.pairs() {
            assert!(key.len() <= TAG_KEY_BYTES_MAX, "tag key is over TAG_KEY_BYTES_MAX");
            assert!(value.len() <= TAG_VALUE_BYTES_MAX, "tag value is over TAG_VALUE_BYTES_MAX");
            numbers.push(self.add_posting(key, value, position));
        }
        // Sets are recorded only while every pair of the block is indexed:
        // a set with a pair that is not would be recorded short of it. The
        // sets' members, as the segment's pair numbers, set after set.
        let sets = numbers.iter().all(Option::is_some).then(|| {
            let mut members = Vec::with_capacity(terms.set_members());
            let mut ends = Vec::with_capacity(terms.set_count());
            for set in terms.sets() {
                let start = members.len();
                members.extend(set.iter().map(|&local| numbers[local as usize].unwrap_or(u32::MAX)));
                members[start..].sort_unstable();
                ends.push(members.len() as u32);
            }
            (members, ends)
        });
        self.tag_sets.push_block(position, sets.as_ref().map(|(members, ends)| (&members[..], &ends[..])));
        let filter = terms.word_filter();
        self.filters.get_mut().expect("a decoded index is sealed: no block can be added to it").push(filter.as_deref());
        if let (Some(key), Some(origin), Some(last)) = (meta.origin_key(), meta.origin, meta.origin_last_seq()) {
            let summary = self.origins.entry(key).or_insert(OriginSummary { watermark: last, seqs: None });
            summary.watermark = summary.watermark.max(last);
            summary.seqs = Some(match summary.seqs {
                None => (origin.first_seq, last),
                Some((lowest, highest)) => (lowest.min(origin.first_seq), highest.max(last)),
            });
        }
        self.blocks.push(meta);
        self.next_seq = next_seq;
    }

    /// This index for the same blocks stored elsewhere: block `i` at
    /// `locations[i]`, an `(offset, len)` pair, in a rewritten segment file
    /// (the cold rewrite recompresses blocks in place of a sealed segment).
    /// Everything else is kept (seqs, timestamps, origins, postings and
    /// saturation, and whatever else the index records per position), so
    /// every position still names the same block.
    ///
    /// # Panics
    /// On a programmer error: not one location per block, a block of no
    /// bytes, or blocks out of order or overlapping.
    pub fn relocated(&self, locations: &[(u64, u32)]) -> SegmentIndex {
        assert_eq!(locations.len(), self.blocks.len(), "one location per block");
        let mut index = self.clone();
        let mut end = 0u64;
        for (meta, &(offset, len)) in index.blocks.iter_mut().zip(locations) {
            assert!(len >= 1, "block has no bytes");
            assert!(offset >= end, "block overlaps the previous one");
            meta.offset = offset;
            meta.len = len;
            end = offset.checked_add(u64::from(len)).expect("block end offset overflows");
        }
        index
    }

    /// Carries the shard's origin watermarks into this index (keeping, per
    /// origin, the larger of the two), so that the index file written when
    /// the segment is sealed remembers them even after retention deletes
    /// the segments that hold those entries. Zero watermarks are ignored.
    pub fn carry_watermarks(&mut self, watermarks: &BTreeMap<OriginKey, u64>) {
        for (&key, &watermark) in watermarks {
            if watermark == 0 {
                continue;
            }
            let summary = self.origins.entry(key).or_insert(OriginSummary { watermark, seqs: None });
            summary.watermark = summary.watermark.max(watermark);
        }
    }

    /// Per origin of replicated entries: its watermark and the origin seqs
    /// of its blocks in this segment (see [`OriginSummary`]), by `(node, shard)`.
    pub fn origins(&self) -> &BTreeMap<OriginKey, OriginSummary> {
        &self.origins
    }

    /// Records that the block at `position` carries `key=value`; returns
    /// the pair's number, or `None` if it is not indexed.
    fn add_posting(&mut self, key: &str, value: &str, position: u32) -> Option<u32> {
        if let Some(term) = self.postings.get_mut(key).and_then(|values| values.get_mut(value)) {
            // Postings only ever grow at the end, so a repeat within this
            // block is always the last element.
            if term.blocks.last() != Some(&position) {
                term.blocks.push(position);
            }
            return Some(term.id);
        }
        if self.saturated_from.is_some() {
            return None;
        }
        if self.tag_values >= self.tag_values_max {
            self.saturated_from = Some(position);
            return None;
        }
        let id = self.tag_values as u32;
        let term = PairTerm { id, blocks: vec![position] };
        self.postings.entry(key.into()).or_default().insert(value.into(), term);
        self.tag_values += 1;
        Some(id)
    }

    /// The block table, in sequence order. A block's position in this slice
    /// is the number that [`candidates`](Self::candidates) and
    /// [`block_for_seq`](Self::block_for_seq) return.
    pub fn blocks(&self) -> &[BlockMeta] {
        &self.blocks
    }

    /// Sequence number of the segment's first entry (given at construction).
    pub fn segment_first_seq(&self) -> u64 {
        self.segment_first_seq
    }

    /// Sequence number one past the last entry indexed;
    /// [`segment_first_seq`](Self::segment_first_seq) when there is no block.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Smallest and largest timestamp over all blocks (both inclusive), or
    /// `None` when there is no block.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let min_ts = self.blocks.iter().map(|block| block.min_ts).min()?;
        let max_ts = self.blocks.iter().map(|block| block.max_ts).max()?;
        Some((min_ts, max_ts))
    }

    /// Offset one past the last block's last byte (`offset + len`), or 0
    /// when there is no block. The next block must start at or after it.
    pub fn data_end(&self) -> u64 {
        self.blocks.last().map_or(0, BlockMeta::end_offset)
    }

    /// Position (in [`blocks`](Self::blocks)) of the block holding the entry
    /// with sequence number `seq`, or `None` if `seq` is outside
    /// `[segment_first_seq, next_seq)`. Binary search, O(log blocks).
    pub fn block_for_seq(&self, seq: u64) -> Option<usize> {
        if seq < self.segment_first_seq || seq >= self.next_seq {
            return None;
        }
        // Blocks are dense in sequence, so the holder is the last block whose
        // first_seq is <= seq, and it exists since seq >= segment_first_seq.
        let position = self.blocks.partition_point(|block| block.first_seq <= seq).checked_sub(1)?;
        debug_assert!(seq < self.blocks[position].next_seq());
        Some(position)
    }

    /// Positions, increasing, of the blocks that may hold an entry carrying
    /// every `(key, value)` pair of `tags` and a timestamp in the half-open
    /// range `[from_ts, to_ts)`: [`candidates_for`](Self::candidates_for)
    /// without words.
    pub fn candidates(&self, tags: &[(&str, &str)], from_ts: i64, to_ts: i64) -> Vec<u32> {
        self.candidates_for(&Predicates { tags, words: &[], from_ts, to_ts })
    }

    /// Positions, increasing, of the blocks that may hold an entry matching
    /// `predicates`: carrying every pair of `tags`, with every word of
    /// `words` in its body and a timestamp in `[from_ts, to_ts)`.
    ///
    /// Never misses a block that holds such an entry; may return blocks that
    /// hold none (block-granular postings, the saturation fallbacks, word
    /// filters' false positives, time ranges that merely overlap), so the
    /// caller filters entries exactly. No predicate matches every block;
    /// `from_ts >= to_ts` matches none.
    ///
    /// Two or more distinct tags resolve through the tag sets first: the
    /// sets that hold every pair, then the blocks that hold one of those
    /// (none if no set does); blocks from the tag sets' saturation point on
    /// fall back to intersecting the pairs' postings. One tag reads its
    /// pair's postings directly (they are exact and cheaper than the union
    /// of its sets' blocks).
    pub fn candidates_for(&self, predicates: &Predicates<'_>) -> Vec<u32> {
        let Predicates { tags, words, from_ts, to_ts } = *predicates;
        if from_ts >= to_ts {
            return Vec::new();
        }
        let mut distinct: Vec<(&str, &str)> = tags.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let mut blocks = if distinct.len() >= 2 {
            self.tag_set_candidates(&distinct)
        } else {
            self.pair_candidates(&distinct, 0, from_ts, to_ts)
        };
        blocks.retain(|&position| self.blocks[position as usize].overlaps_time(from_ts, to_ts));
        self.retain_word_candidates(&mut blocks, words);
        blocks
    }

    /// Blocks that hold a tag set with every pair of `tags` (two or more,
    /// distinct), then from the sets' saturation point on the pair-postings
    /// fallback.
    fn tag_set_candidates(&self, tags: &[(&str, &str)]) -> Vec<u32> {
        let block_count = self.blocks.len() as u32;
        let sets_end = self.tag_sets.saturated_from.unwrap_or(block_count);
        let mut out = Vec::new();
        if sets_end > 0 {
            // Before sets_end every pair of every block is indexed (the sets
            // saturate no later than the pairs), so a pair that is not
            // indexed occurs in none of those blocks.
            let lists: Option<Vec<&[u32]>> =
                tags.iter().map(|&(key, value)| Some(self.tag_sets.sets_of_pair(self.term(key, value)?.id))).collect();
            if let Some(lists) = lists {
                out = self.tag_sets.blocks_of(&intersect(&lists));
            }
        }
        if sets_end < block_count {
            out.extend(self.pair_candidates(tags, sets_end, i64::MIN, i64::MAX));
        }
        out
    }

    /// Blocks at `from_position` or later allowed by the pair postings of
    /// every tag (today's rule: see the module documentation), among those
    /// that overlap `[from_ts, to_ts)` when there is no tag.
    fn pair_candidates(&self, tags: &[(&str, &str)], from_position: u32, from_ts: i64, to_ts: i64) -> Vec<u32> {
        let mut shortest: Option<&[u32]> = None;
        let mut from_position = from_position;
        let mut lists = Vec::with_capacity(tags.len());
        for &(key, value) in tags {
            match self.predicate_blocks(key, value) {
                None => return Vec::new(),
                Some(PredicateBlocks::From(position)) => from_position = from_position.max(position),
                Some(PredicateBlocks::Listed(list)) => {
                    if shortest.is_none_or(|shortest| list.len() < shortest.len()) {
                        shortest = Some(list);
                    }
                    lists.push(list);
                }
            }
        }
        let in_time = |position: &u32| self.blocks[*position as usize].overlaps_time(from_ts, to_ts);
        match shortest {
            // Only unindexed pairs (or none): every block from the fallback on.
            None => {
                let block_count = self.blocks.len() as u32;
                (from_position..block_count).filter(in_time).collect()
            }
            // Walk the shortest list, probing the others by binary search:
            // O(shortest * predicates * log blocks).
            Some(shortest) => {
                let start = shortest.partition_point(|&position| position < from_position);
                shortest[start..]
                    .iter()
                    .copied()
                    .filter(|position| lists.iter().all(|list| list.binary_search(position).is_ok()))
                    .collect()
            }
        }
    }

    /// Keeps the blocks whose word filter may hold every word (a block
    /// without a filter may hold any).
    fn retain_word_candidates(&self, blocks: &mut Vec<u32>, words: &[u64]) {
        if words.is_empty() {
            return;
        }
        // Filters not loaded: no block can be ruled out (the caller loads
        // them first, see `filters_loaded`).
        if let Some(filters) = self.filters.get() {
            blocks.retain(|&position| filters.may_contain_all(position, words));
        }
    }

    /// Whether the word filters are in memory (always for an index built by
    /// pushing blocks or decoded whole; for one decoded without them, once
    /// [`load_filters`](Self::load_filters) succeeded). A word query over an
    /// index whose filters are not loaded prunes nothing by words.
    pub fn filters_loaded(&self) -> bool {
        self.filters.get().is_some()
    }

    /// The word filters, if loaded.
    pub fn word_filters(&self) -> Option<&WordFilters> {
        self.filters.get()
    }

    /// The word filter of the block at `position`, if it has one and the
    /// filters are loaded.
    pub fn word_filter(&self, position: u32) -> Option<WordFilter> {
        let words = self.filters.get()?.filter(position)?;
        Some(WordFilter::from_words(words.into()))
    }

    fn term(&self, key: &str, value: &str) -> Option<&PairTerm> {
        self.postings.get(key)?.get(value)
    }

    /// The blocks one predicate allows, or `None` if it matches no block.
    fn predicate_blocks(&self, key: &str, value: &str) -> Option<PredicateBlocks<'_>> {
        match self.postings(key, value) {
            Some(list) => Some(PredicateBlocks::Listed(list)),
            None => self.saturated_from.map(PredicateBlocks::From),
        }
    }

    /// Postings of an indexed pair: the increasing positions of the blocks
    /// that carry it. `None` if the pair is not indexed (see
    /// [`saturated_from`](Self::saturated_from) for what that implies).
    pub fn postings(&self, key: &str, value: &str) -> Option<&[u32]> {
        self.term(key, value).map(|term| term.blocks.as_slice())
    }

    /// The distinct `key=value` pairs of the blocks at `positions`
    /// (increasing), read back from the postings: what their entries
    /// carry, exactly, for a block before the saturation point; `None` for
    /// a block at or after it (some of its pairs may not be indexed).
    /// O(indexed pairs * log blocks + postings found).
    pub fn block_tags(&self, positions: &[u32]) -> Vec<Option<TagSet>> {
        let known = |position: u32| self.saturated_from.is_none_or(|from| position < from);
        let mut out: Vec<Option<TagSet>> =
            positions.iter().map(|&position| known(position).then(TagSet::default)).collect();
        let (Some(&first), Some(&last)) = (positions.first(), positions.last()) else { return out };
        for (key, values) in &self.postings {
            for (value, term) in values {
                let list = &term.blocks;
                let start = list.partition_point(|&position| position < first);
                for &position in list[start..].iter().take_while(|&&position| position <= last) {
                    if let Ok(slot) = positions.binary_search(&position) {
                        if let Some(tags) = &mut out[slot] {
                            tags.insert((key.clone(), value.clone()));
                        }
                    }
                }
            }
        }
        out
    }

    /// Number of distinct `key=value` pairs indexed; at most
    /// [`tag_values_max`](Self::tag_values_max).
    pub fn tag_values(&self) -> usize {
        self.tag_values
    }

    /// The cap on distinct pairs this index was built with.
    pub fn tag_values_max(&self) -> usize {
        self.tag_values_max
    }

    /// Number of distinct tag sets recorded.
    pub fn tag_sets(&self) -> usize {
        self.tag_sets.len()
    }

    /// Position of the first block whose tag sets are not recorded (a cap
    /// was reached, or a pair of the block is not indexed), or `None`. From
    /// that block on, conjunctions fall back to the pair postings.
    pub fn tag_sets_saturated_from(&self) -> Option<u32> {
        self.tag_sets.saturated_from
    }

    /// Position of the first block that brought a pair the full index could
    /// not take, or `None` if the cap was never hit. From that block on,
    /// predicates on pairs that are not indexed match every block.
    pub fn saturated_from(&self) -> Option<u32> {
        self.saturated_from
    }

    /// Gives back the spare capacity of the block table and the postings
    /// lists (grown by doubling, so up to half of them): called once the
    /// segment is sealed and its index only read.
    pub fn shrink_to_fit(&mut self) {
        self.blocks.shrink_to_fit();
        for values in self.postings.values_mut() {
            for term in values.values_mut() {
                term.blocks.shrink_to_fit();
            }
        }
        self.tag_sets.shrink_to_fit();
    }

    /// A rough estimate of the heap bytes held, for stats: string bytes,
    /// postings and block table capacity plus a per-entry allowance for the
    /// hash tables. Not exact: stats, and the shard's budget of loaded
    /// sealed indexes (`limits::INDEX_CACHE_BYTES_MAX`).
    pub fn memory_bytes(&self) -> usize {
        // A hashbrown slot is the (key, value) pair plus one control byte;
        // tables run at most 7/8 full, so count 8/7 of the entries.
        fn table_bytes<V>(len: usize) -> usize {
            (len * 8 / 7 + 1) * (std::mem::size_of::<(Box<str>, V)>() + 1)
        }
        let mut bytes = std::mem::size_of::<Self>();
        bytes += self.blocks.capacity() * std::mem::size_of::<BlockMeta>();
        bytes += self.origins.len() * (std::mem::size_of::<(OriginKey, OriginSummary)>() + 16);
        bytes += table_bytes::<ValuePostings>(self.postings.len());
        for (key, values) in &self.postings {
            bytes += key.len();
            bytes += table_bytes::<PairTerm>(values.len());
            for (value, term) in values {
                bytes += value.len() + term.blocks.capacity() * std::mem::size_of::<u32>();
            }
        }
        bytes + self.tag_sets.memory_bytes() + self.filters.get().map_or(0, WordFilters::memory_bytes)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// A block of `entry_count` entries right after the last one of `index`.
    pub(crate) fn next_meta(index: &SegmentIndex, entry_count: u32, min_ts: i64, max_ts: i64) -> BlockMeta {
        BlockMeta {
            offset: index.data_end(),
            len: 100 + entry_count,
            first_seq: index.next_seq(),
            entry_count,
            min_ts,
            max_ts,
            origin: None,
        }
    }

    fn push(index: &mut SegmentIndex, min_ts: i64, max_ts: i64, tags: &[(&str, &str)]) {
        let meta = next_meta(index, 2, min_ts, max_ts);
        index.push_block(meta, tags.iter().copied());
    }

    fn tag_list(tags: &Option<TagSet>) -> Option<Vec<(String, String)>> {
        let mut list: Vec<_> = tags.as_ref()?.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        list.sort();
        Some(list)
    }

    #[test]
    fn block_tags_are_read_back_from_the_postings_up_to_the_saturation_point() {
        let mut index = SegmentIndex::with_tag_values_max(1, 3);
        push(&mut index, 0, 9, &[("app", "web"), ("app", "web"), ("host", "a")]);
        push(&mut index, 10, 19, &[("host", "a")]);
        push(&mut index, 20, 29, &[("app", "web"), ("env", "prod")]);
        // Saturated here: `host=b` is not indexed.
        push(&mut index, 30, 39, &[("app", "web"), ("host", "b")]);
        let pairs = |list: &[(&str, &str)]| Some(list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let got: Vec<_> = index.block_tags(&[0, 2, 3]).iter().map(tag_list).collect();
        assert_eq!(got, vec![pairs(&[("app", "web"), ("host", "a")]), pairs(&[("app", "web"), ("env", "prod")]), None]);
        let got: Vec<_> = index.block_tags(&[1]).iter().map(tag_list).collect();
        assert_eq!(got, vec![pairs(&[("host", "a")])]);
        assert!(index.block_tags(&[]).is_empty());
    }

    /// Four blocks: 0 and 2 carry `app=web`, 1 and 2 carry `env=prod`,
    /// 3 carries `app=db`; times 0..10, 10..20, 20..30, 30..40 (max inclusive 9, 19, ...).
    fn sample() -> SegmentIndex {
        let mut index = SegmentIndex::new(1);
        push(&mut index, 0, 9, &[("app", "web"), ("app", "web"), ("host", "a")]);
        push(&mut index, 10, 19, &[("env", "prod"), ("host", "a")]);
        push(&mut index, 20, 29, &[("app", "web"), ("env", "prod"), ("app", "web")]);
        push(&mut index, 30, 39, &[("app", "db"), ("host", "b")]);
        index
    }

    #[test]
    fn a_relocated_index_changes_only_where_its_blocks_are() {
        let mut index = SegmentIndex::with_tag_values_max(1, 3);
        push(&mut index, 0, 9, &[("app", "web"), ("host", "a")]);
        push(&mut index, 10, 19, &[("app", "db"), ("host", "b")]);
        push(&mut index, 20, 29, &[("app", "web"), ("zone", "x")]);
        index.carry_watermarks(&[((4, 5), 77)].into_iter().collect());
        let locations = [(4096, 40), (4136, 9), (5000, 1)];
        let relocated = index.relocated(&locations);
        for (position, (meta, moved)) in index.blocks().iter().zip(relocated.blocks()).enumerate() {
            assert_eq!((moved.offset, moved.len), locations[position]);
            assert_eq!(BlockMeta { offset: meta.offset, len: meta.len, ..*moved }, *meta);
        }
        assert_eq!(relocated.data_end(), 5001);
        assert_eq!(relocated.saturated_from(), Some(1), "host=b is the fourth pair");
        assert_eq!(relocated.origins(), index.origins());
        for query in [&[("app", "web")][..], &[("host", "b")], &[("zone", "x")], &[]] {
            assert_eq!(relocated.candidates(query, 0, 30), index.candidates(query, 0, 30), "{query:?}");
        }
        assert_eq!(
            relocated.relocated(&index.blocks().iter().map(|meta| (meta.offset, meta.len)).collect::<Vec<_>>()),
            index
        );
    }

    #[test]
    #[should_panic(expected = "overlaps")]
    fn a_relocation_that_overlaps_is_a_programmer_error() {
        let index = sample();
        let mut locations: Vec<(u64, u32)> = index.blocks().iter().map(|meta| (meta.offset, meta.len)).collect();
        locations[1].0 = locations[0].0;
        index.relocated(&locations);
    }

    #[test]
    fn shrink_to_fit_gives_back_capacity_and_changes_nothing_else() {
        let mut index = SegmentIndex::new(1);
        for block in 0..1000 {
            let host = format!("h{}", block % 3);
            push(&mut index, block, block, &[("app", "web"), ("host", &host)]);
        }
        let (before_bytes, before_file) = (index.memory_bytes(), index.encode(0));
        index.shrink_to_fit();
        assert!(index.memory_bytes() < before_bytes, "{} then {}", before_bytes, index.memory_bytes());
        assert_eq!(index.encode(0), before_file);
    }

    #[test]
    fn block_table_accessors() {
        let index = sample();
        assert_eq!(index.blocks().len(), 4);
        assert_eq!(index.segment_first_seq(), 1);
        assert_eq!(index.next_seq(), 9);
        assert_eq!(index.time_range(), Some((0, 39)));
        assert_eq!(index.data_end(), 4 * 102);
        assert_eq!(index.tag_values(), 5);
        assert_eq!(index.saturated_from(), None);
        assert_eq!(index.postings("app", "web"), Some(&[0, 2][..]));
        assert!(index.memory_bytes() > 0);

        let empty = SegmentIndex::new(42);
        assert_eq!(empty.next_seq(), 42);
        assert_eq!(empty.time_range(), None);
        assert_eq!(empty.data_end(), 0);
        assert_eq!(empty.block_for_seq(42), None);
        assert_eq!(empty.candidates(&[], i64::MIN, i64::MAX), Vec::<u32>::new());
    }

    #[test]
    fn block_for_seq_finds_each_entry() {
        let index = sample();
        assert_eq!(index.block_for_seq(0), None);
        for seq in 1..9 {
            assert_eq!(index.block_for_seq(seq), Some(((seq - 1) / 2) as usize), "seq {seq}");
        }
        assert_eq!(index.block_for_seq(9), None);
        assert_eq!(index.block_for_seq(u64::MAX), None);
    }

    #[test]
    fn candidates_intersect_predicates() {
        let index = sample();
        let all = (i64::MIN, i64::MAX);
        assert_eq!(index.candidates(&[], all.0, all.1), vec![0, 1, 2, 3]);
        assert_eq!(index.candidates(&[("app", "web")], all.0, all.1), vec![0, 2]);
        assert_eq!(index.candidates(&[("env", "prod")], all.0, all.1), vec![1, 2]);
        assert_eq!(index.candidates(&[("app", "web"), ("env", "prod")], all.0, all.1), vec![2]);
        assert_eq!(index.candidates(&[("env", "prod"), ("app", "web")], all.0, all.1), vec![2]);
        assert_eq!(index.candidates(&[("app", "web"), ("app", "web")], all.0, all.1), vec![0, 2]);
        assert_eq!(index.candidates(&[("app", "db"), ("env", "prod")], all.0, all.1), Vec::<u32>::new());
    }

    #[test]
    fn candidates_of_unknown_pair_are_empty() {
        let index = sample();
        assert_eq!(index.candidates(&[("app", "nope")], i64::MIN, i64::MAX), Vec::<u32>::new());
        assert_eq!(index.candidates(&[("nope", "web")], i64::MIN, i64::MAX), Vec::<u32>::new());
        assert_eq!(index.candidates(&[("app", "web"), ("x", "y")], i64::MIN, i64::MAX), Vec::<u32>::new());
        // A pair is two strings, not a joined "key=value".
        assert_eq!(index.candidates(&[("app=web", "")], i64::MIN, i64::MAX), Vec::<u32>::new());
        assert_eq!(index.candidates(&[("", "app=web")], i64::MIN, i64::MAX), Vec::<u32>::new());
    }

    #[test]
    fn candidates_filter_time_half_open() {
        let index = sample();
        // [10, 20) holds only block 1 (10..=19).
        assert_eq!(index.candidates(&[], 10, 20), vec![1]);
        // to_ts is exclusive: [0, 10) does not reach block 1 whose min is 10.
        assert_eq!(index.candidates(&[], 0, 10), vec![0]);
        // from_ts is inclusive: [9, 10) reaches block 0 whose max is 9.
        assert_eq!(index.candidates(&[], 9, 10), vec![0]);
        assert_eq!(index.candidates(&[], 9, 11), vec![0, 1]);
        assert_eq!(index.candidates(&[], 39, 40), vec![3]);
        assert_eq!(index.candidates(&[], 40, i64::MAX), Vec::<u32>::new());
        assert_eq!(index.candidates(&[], i64::MIN, 0), Vec::<u32>::new());
        // Empty and inverted ranges match nothing.
        assert_eq!(index.candidates(&[], 15, 15), Vec::<u32>::new());
        assert_eq!(index.candidates(&[], 20, 10), Vec::<u32>::new());
        assert_eq!(index.candidates(&[("app", "web")], 5, 25), vec![0, 2]);
        assert_eq!(index.candidates(&[("app", "web")], 10, 20), Vec::<u32>::new());
    }

    #[test]
    fn keys_and_values_may_hold_any_character() {
        let mut index = SegmentIndex::new(1);
        push(&mut index, 0, 0, &[("a=b", "c"), ("a", "b=c"), ("k\0", "v\0"), ("", "")]);
        push(&mut index, 0, 0, &[("a", "b"), ("é", "ü")]);
        assert_eq!(index.candidates(&[("a=b", "c")], 0, 1), vec![0]);
        assert_eq!(index.candidates(&[("a", "b=c")], 0, 1), vec![0]);
        assert_eq!(index.candidates(&[("k\0", "v\0")], 0, 1), vec![0]);
        assert_eq!(index.candidates(&[("", "")], 0, 1), vec![0]);
        assert_eq!(index.candidates(&[("a", "b")], 0, 1), vec![1]);
        assert_eq!(index.candidates(&[("é", "ü")], 0, 1), vec![1]);
        assert_eq!(index.tag_values(), 6);
    }

    #[test]
    fn saturation_falls_back_to_every_later_block() {
        let mut index = SegmentIndex::with_tag_values_max(1, 4);
        push(&mut index, 0, 0, &[("k", "1"), ("k", "2")]); // 0
        push(&mut index, 0, 0, &[("k", "1"), ("k", "3")]); // 1
        assert_eq!(index.saturated_from(), None);
        // Block 2 fills the last slot with k=4, then k=5 does not fit.
        push(&mut index, 0, 0, &[("k", "4"), ("k", "5"), ("k", "1")]); // 2
        assert_eq!(index.saturated_from(), Some(2));
        assert_eq!(index.tag_values(), 4);
        push(&mut index, 0, 0, &[("k", "6")]); // 3
        push(&mut index, 0, 0, &[("k", "1"), ("k", "2")]); // 4
        push(&mut index, 5, 5, &[("k", "6")]); // 5
        assert_eq!(index.saturated_from(), Some(2));
        assert_eq!(index.tag_values(), 4);

        // Indexed pairs keep exact postings, after saturation too.
        assert_eq!(index.candidates(&[("k", "1")], 0, 10), vec![0, 1, 2, 4]);
        assert_eq!(index.candidates(&[("k", "2")], 0, 10), vec![0, 4]);
        assert_eq!(index.candidates(&[("k", "4")], 0, 10), vec![2]);
        // Pairs first seen at or after saturation fall back to blocks >= 2.
        assert_eq!(index.candidates(&[("k", "5")], 0, 10), vec![2, 3, 4, 5]);
        assert_eq!(index.candidates(&[("k", "6")], 0, 10), vec![2, 3, 4, 5]);
        assert_eq!(index.candidates(&[("k", "6")], 5, 10), vec![5]);
        // Including pairs that never occur: their absence was not recorded.
        assert_eq!(index.candidates(&[("never", "seen")], 0, 10), vec![2, 3, 4, 5]);
        // Mixed: indexed postings restricted to the fallback range.
        assert_eq!(index.candidates(&[("k", "1"), ("k", "6")], 0, 10), vec![2, 4]);
        assert_eq!(index.candidates(&[("k", "2"), ("k", "5")], 0, 10), vec![4]);
    }

    #[test]
    fn zero_cap_saturates_at_first_pair() {
        let mut index = SegmentIndex::with_tag_values_max(1, 0);
        push(&mut index, 0, 0, &[]);
        push(&mut index, 0, 0, &[("a", "b")]);
        push(&mut index, 0, 0, &[]);
        assert_eq!(index.saturated_from(), Some(1));
        assert_eq!(index.candidates(&[("a", "b")], 0, 1), vec![1, 2]);
        assert_eq!(index.candidates(&[], 0, 1), vec![0, 1, 2]);
    }

    #[test]
    fn origins_summarize_replicated_blocks_and_carried_watermarks() {
        let mut index = SegmentIndex::new(1);
        let replicated = |index: &SegmentIndex, node, first_seq, entry_count| BlockMeta {
            origin: Some(Origin { node, shard: 1, first_seq }),
            ..next_meta(index, entry_count, 0, 0)
        };
        push(&mut index, 0, 0, &[]);
        index.push_block(replicated(&index, 7, 10, 3), []); // 10..=12
        push(&mut index, 0, 0, &[]);
        index.push_block(replicated(&index, 7, 13, 2), []); // 13..=14
        index.push_block(replicated(&index, 8, 1, 1), []); // 1..=1
        assert_eq!(index.blocks()[1].origin_key(), Some((7, 1)));
        assert_eq!(index.blocks()[1].origin_last_seq(), Some(12));
        assert_eq!(index.blocks()[0].origin_last_seq(), None);
        let expected = BTreeMap::from([
            ((7, 1), OriginSummary { watermark: 14, seqs: Some((10, 14)) }),
            ((8, 1), OriginSummary { watermark: 1, seqs: Some((1, 1)) }),
        ]);
        assert_eq!(index.origins(), &expected);
        // Carrying keeps the larger watermark and adds origins without blocks.
        index.carry_watermarks(&BTreeMap::from([((7, 1), 9), ((8, 1), 5), ((9, 9), 40), ((9, 10), 0)]));
        let expected = BTreeMap::from([
            ((7, 1), OriginSummary { watermark: 14, seqs: Some((10, 14)) }),
            ((8, 1), OriginSummary { watermark: 5, seqs: Some((1, 1)) }),
            ((9, 9), OriginSummary { watermark: 40, seqs: None }),
        ]);
        assert_eq!(index.origins(), &expected);
    }

    #[test]
    #[should_panic(expected = "origin seqs start at 1")]
    fn push_block_rejects_origin_seq_zero() {
        let mut index = SegmentIndex::new(1);
        let meta = BlockMeta { origin: Some(Origin { node: 1, shard: 1, first_seq: 0 }), ..next_meta(&index, 1, 0, 0) };
        index.push_block(meta, []);
    }

    #[test]
    #[should_panic(expected = "does not follow")]
    fn push_block_rejects_a_gap_in_sequence() {
        let mut index = SegmentIndex::new(1);
        let mut meta = next_meta(&index, 1, 0, 0);
        meta.first_seq = 2;
        index.push_block(meta, []);
    }

    #[test]
    #[should_panic(expected = "overlaps")]
    fn push_block_rejects_overlapping_bytes() {
        let mut index = SegmentIndex::new(1);
        push(&mut index, 0, 0, &[]);
        let mut meta = next_meta(&index, 1, 0, 0);
        meta.offset -= 1;
        index.push_block(meta, []);
    }

    #[test]
    #[should_panic(expected = "no entries")]
    fn push_block_rejects_an_empty_block() {
        let mut index = SegmentIndex::new(1);
        let meta = next_meta(&index, 0, 0, 0);
        index.push_block(meta, []);
    }

    #[test]
    #[should_panic(expected = "min_ts is after max_ts")]
    fn push_block_rejects_inverted_time_range() {
        let mut index = SegmentIndex::new(1);
        let meta = next_meta(&index, 1, 1, 0);
        index.push_block(meta, []);
    }

    /// One entry of the model: its timestamp and its tags.
    pub(crate) type ModelEntry = (i64, Vec<(String, String)>);

    /// One random segment: blocks of entries, each entry with a timestamp and tags.
    pub(crate) struct ModelSegment {
        pub(crate) index: SegmentIndex,
        /// Per block, its entries.
        pub(crate) entries: Vec<Vec<ModelEntry>>,
    }

    /// Builds a random segment from `rng`, capped at `tag_values_max`.
    pub(crate) fn random_segment(rng: &mut SmallRng, tag_values_max: usize) -> ModelSegment {
        let mut index = SegmentIndex::with_tag_values_max(rng.gen_range(1..1_000), tag_values_max);
        let mut entries = Vec::new();
        let block_count = rng.gen_range(0..40);
        let mut offset = rng.gen_range(0..4096_u64);
        for _ in 0..block_count {
            let entry_count = rng.gen_range(1..6_u32);
            let block_entries: Vec<ModelEntry> = (0..entry_count)
                .map(|_| {
                    let timestamp = rng.gen_range(-50..200_i64);
                    let tag_count = rng.gen_range(0..4);
                    let tags = (0..tag_count)
                        .map(|_| (format!("k{}", rng.gen_range(0..3)), format!("v{}", rng.gen_range(0..8))))
                        .collect();
                    (timestamp, tags)
                })
                .collect();
            let min_ts = block_entries.iter().map(|entry| entry.0).min().unwrap();
            let max_ts = block_entries.iter().map(|entry| entry.0).max().unwrap();
            let len = rng.gen_range(1..5000_u32);
            // Some blocks are replicated, from one of three origins.
            let origin = match rng.gen_range(0..6_u32) {
                node @ 0..=2 => Some(Origin { node, shard: 7, first_seq: rng.gen_range(1..1_000_000) }),
                _ => None,
            };
            let meta = BlockMeta { offset, len, first_seq: index.next_seq(), entry_count, min_ts, max_ts, origin };
            offset += u64::from(len) + rng.gen_range(0..3_u64);
            let tags = block_entries
                .iter()
                .flat_map(|entry| entry.1.iter().map(|(key, value)| (key.as_str(), value.as_str())));
            index.push_block(meta, tags);
            entries.push(block_entries);
        }
        ModelSegment { index, entries }
    }

    /// Blocks holding at least one entry that matches exactly.
    fn exact_matches(segment: &ModelSegment, tags: &[(&str, &str)], from_ts: i64, to_ts: i64) -> Vec<u32> {
        let entry_matches = |(timestamp, entry_tags): &ModelEntry| {
            (from_ts..to_ts).contains(timestamp)
                && tags.iter().all(|&(key, value)| entry_tags.iter().any(|(k, v)| k == key && v == value))
        };
        (0..segment.entries.len() as u32)
            .filter(|&block| segment.entries[block as usize].iter().any(entry_matches))
            .collect()
    }

    /// Blocks whose pairs (over all entries) include every predicate and whose
    /// time range overlaps: what exact postings without a cap would give.
    fn uncapped_candidates(segment: &ModelSegment, tags: &[(&str, &str)], from_ts: i64, to_ts: i64) -> Vec<u32> {
        (0..segment.entries.len() as u32)
            .filter(|&block| {
                let entries = &segment.entries[block as usize];
                segment.index.blocks()[block as usize].overlaps_time(from_ts, to_ts)
                    && tags.iter().all(|&(key, value)| {
                        entries.iter().any(|(_, entry_tags)| entry_tags.iter().any(|(k, v)| k == key && v == value))
                    })
            })
            .collect()
    }

    fn random_query(rng: &mut SmallRng) -> (Vec<(String, String)>, i64, i64) {
        let predicate_count = rng.gen_range(0..3);
        let tags = (0..predicate_count)
            .map(|_| (format!("k{}", rng.gen_range(0..4)), format!("v{}", rng.gen_range(0..9))))
            .collect();
        let from_ts = rng.gen_range(-60..210);
        let to_ts = if rng.gen_bool(0.2) { i64::MAX } else { rng.gen_range(-60..210) };
        (tags, from_ts, to_ts)
    }

    /// One entry of the streams model: timestamp, tags, body.
    struct StreamEntry {
        timestamp: i64,
        tags: Vec<(String, String)>,
        body: String,
    }

    /// A random segment whose blocks are given entry by entry (tag sets and
    /// words), some only by the union of their tags (no sets, no filter).
    struct StreamSegment {
        index: SegmentIndex,
        entries: Vec<Vec<StreamEntry>>,
        union_only: Vec<bool>,
    }

    fn random_stream_segment(rng: &mut SmallRng, caps: (usize, usize, usize)) -> StreamSegment {
        let mut index = SegmentIndex::with_caps(1, caps.0, caps.1, caps.2);
        let (mut entries, mut union_only) = (Vec::new(), Vec::new());
        for _ in 0..rng.gen_range(0..30) {
            let count = rng.gen_range(1..8_u32);
            let block: Vec<StreamEntry> = (0..count)
                .map(|_| StreamEntry {
                    timestamp: rng.gen_range(-50..200),
                    tags: (0..rng.gen_range(0..4))
                        .map(|_| (format!("k{}", rng.gen_range(0..3)), format!("v{}", rng.gen_range(0..4))))
                        .collect(),
                    body: (0..rng.gen_range(0..5)).map(|_| format!("w{} ", rng.gen_range(0..40))).collect(),
                })
                .collect();
            let min_ts = block.iter().map(|entry| entry.timestamp).min().unwrap();
            let max_ts = block.iter().map(|entry| entry.timestamp).max().unwrap();
            let meta = next_meta(&index, count, min_ts, max_ts);
            let only_union = rng.gen_bool(0.15);
            let terms = if only_union {
                BlockTerms::from_union(block.iter().flat_map(|entry| entry.tags.iter().map(|(k, v)| (&**k, &**v))))
            } else {
                let mut terms = BlockTerms::with_words();
                for entry in &block {
                    terms.add_entry(entry.tags.iter().map(|(k, v)| (&**k, &**v)));
                    terms.add_body(entry.body.as_bytes());
                }
                terms
            };
            index.push_block_terms(meta, &terms);
            entries.push(block);
            union_only.push(only_union);
        }
        StreamSegment { index, entries, union_only }
    }

    fn holds(entry_tags: &[(String, String)], tags: &[(&str, &str)]) -> bool {
        tags.iter().all(|&(key, value)| entry_tags.iter().any(|(k, v)| k == key && v == value))
    }

    #[test]
    fn candidates_for_never_miss_and_tag_sets_are_exact_until_saturated() {
        const SEED: u64 = 0x57_4ea5;
        let mut rng = SmallRng::seed_from_u64(SEED);
        let (mut saturated, mut pruned_by_sets) = (0, 0);
        for round in 0..300 {
            let caps =
                [(100, 1000, 100_000), (6, 1000, 100_000), (100, 5, 100_000), (100, 1000, 40), (3, 2, 10)][round % 5];
            let segment = random_stream_segment(&mut rng, caps);
            let decoded = SegmentIndex::decode(&segment.index.encode(0)).unwrap();
            let summary = crate::index::decode_summary(&segment.index.encode(0)).unwrap();
            let bytes = segment.index.encode(0);
            let without = SegmentIndex::decode_without_filters(&bytes[..summary.filters_offset() as usize]).unwrap();
            let sets_saturated = segment.index.tag_sets.saturated_from.is_some();
            saturated += usize::from(sets_saturated);
            for _ in 0..30 {
                let tags: Vec<(String, String)> = (0..rng.gen_range(0..4))
                    .map(|_| (format!("k{}", rng.gen_range(0..4)), format!("v{}", rng.gen_range(0..5))))
                    .collect();
                let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let words: Vec<String> =
                    (0..rng.gen_range(0..3)).map(|_| format!("W{}", rng.gen_range(0..45))).collect();
                // W0 to W9 are shorter than filters keep: never pruned by word.
                let query = crate::index::words::WordQuery::parse(words.iter().map(String::as_str)).unwrap();
                let hashes = query.filter_hashes();
                let from_ts = rng.gen_range(-60..210);
                let to_ts = if rng.gen_bool(0.3) { i64::MAX } else { rng.gen_range(-60..210) };
                let predicates = Predicates { tags: &tags, words: hashes, from_ts, to_ts };
                let context = format!("seed {SEED:#x} round {round}: {tags:?} {words:?} [{from_ts}, {to_ts})");
                let candidates = segment.index.candidates_for(&predicates);
                assert!(candidates.windows(2).all(|pair| pair[0] < pair[1]), "unsorted: {context}");
                assert_eq!(decoded.candidates_for(&predicates), candidates, "decoded differs: {context}");
                let exact: Vec<u32> = (0..segment.entries.len() as u32)
                    .filter(|&block| {
                        segment.entries[block as usize].iter().any(|entry| {
                            (from_ts..to_ts).contains(&entry.timestamp)
                                && holds(&entry.tags, &tags)
                                && words.iter().all(|word| {
                                    entry.body.split(' ').any(|body_word| body_word.eq_ignore_ascii_case(word))
                                })
                        })
                    })
                    .collect();
                assert!(exact.iter().all(|block| candidates.contains(block)), "false negative: {context}");
                // Filters not loaded: nothing is pruned by words, nothing missed.
                let unloaded = without.candidates_for(&predicates);
                assert!(candidates.iter().all(|block| unloaded.contains(block)), "{context}");

                let mut distinct = tags.clone();
                distinct.sort_unstable();
                distinct.dedup();
                if !sets_saturated && distinct.len() >= 2 && words.is_empty() {
                    // Exactly the blocks with a set (or a union) holding every tag.
                    let by_sets: Vec<u32> = (0..segment.entries.len() as u32)
                        .filter(|&block| {
                            let entries = &segment.entries[block as usize];
                            let union: Vec<(String, String)> =
                                entries.iter().flat_map(|entry| entry.tags.iter().cloned()).collect();
                            segment.index.blocks()[block as usize].overlaps_time(from_ts, to_ts)
                                && if segment.union_only[block as usize] {
                                    holds(&union, &distinct)
                                } else {
                                    entries.iter().any(|entry| holds(&entry.tags, &distinct))
                                }
                        })
                        .collect();
                    assert_eq!(candidates, by_sets, "not exact through the sets: {context}");
                    let by_pairs = segment.index.pair_candidates(&distinct, 0, i64::MIN, i64::MAX);
                    if by_sets.len()
                        < by_pairs
                            .iter()
                            .filter(|&&block| segment.index.blocks()[block as usize].overlaps_time(from_ts, to_ts))
                            .count()
                    {
                        pruned_by_sets += 1;
                    }
                }
            }
        }
        assert!(saturated > 40 && saturated < 250, "{saturated} segments saturated their sets");
        assert!(pruned_by_sets > 20, "sets pruned beyond the pair postings only {pruned_by_sets} times");
    }

    #[test]
    fn candidates_agree_with_brute_force_model() {
        const SEED: u64 = 0x5eed_1de8;
        let mut rng = SmallRng::seed_from_u64(SEED);
        let mut saturated_segments = 0;
        for round in 0..400 {
            let tag_values_max = [0, 1, 4, 8, 16, 100][round % 6];
            let segment = random_segment(&mut rng, tag_values_max);
            if segment.index.saturated_from().is_some() {
                saturated_segments += 1;
            }
            for _ in 0..20 {
                let (tags, from_ts, to_ts) = random_query(&mut rng);
                let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let candidates = segment.index.candidates(&tags, from_ts, to_ts);
                let context = format!("seed {SEED:#x} round {round} query {tags:?} [{from_ts}, {to_ts})");
                assert!(candidates.windows(2).all(|pair| pair[0] < pair[1]), "unsorted: {context}");
                let exact = exact_matches(&segment, &tags, from_ts, to_ts);
                assert!(exact.iter().all(|block| candidates.contains(block)), "false negative: {context}");
                let uncapped = uncapped_candidates(&segment, &tags, from_ts, to_ts);
                if segment.index.saturated_from().is_none() {
                    assert_eq!(candidates, uncapped, "not exact without saturation: {context}");
                } else {
                    assert!(uncapped.iter().all(|block| candidates.contains(block)), "{context}");
                }
            }
        }
        // The test means nothing unless both regimes occur.
        assert!(saturated_segments > 50, "only {saturated_segments} saturated segments");
        assert!(saturated_segments < 350, "{saturated_segments} saturated segments");
    }
}
