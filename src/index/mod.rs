//! The per-segment tag, word and time index (DESIGN.md sections 4 and 12).
//!
//! A segment is a file of blocks; each block holds a batch of entries with
//! dense sequence numbers. The index answers two questions without touching
//! the segment file:
//!
//! * *which block holds sequence number `seq`?* ([`SegmentIndex::block_for_seq`],
//!   a binary search over the block table), and
//! * *which blocks may hold entries carrying all of these `key=value` tags,
//!   with all of these words in their body and a timestamp in
//!   `[from_ts, to_ts)`?* ([`SegmentIndex::candidates_for`]).
//!
//! Everything here is pure and synchronous: no I/O, no executor. The shard
//! gathers what each block gives the index in a [`BlockTerms`] while the
//! block fills (and again while it scans the active segment on recovery),
//! feeds blocks in with [`SegmentIndex::push_block_terms`], writes
//! [`SegmentIndex::encode`] beside a segment when it seals it, and later reads
//! it back with [`SegmentIndex::decode`], or only its fixed header with
//! [`decode_summary`] when it merely needs the segment's sequence and time
//! range. The byte layout is in `docs/format.md` and at the top of
//! [`file`](mod@file).
//!
//! # What is indexed
//!
//! * A **block table**: one [`BlockMeta`] per block, in sequence order, with
//!   the block's byte range, first sequence number, entry count, the
//!   smallest and largest timestamp of its entries, and for replicated
//!   entries their origin (node, shard, first origin seq).
//! * An **origin summary**: per origin `(node, shard)` of replicated entries,
//!   the range of origin seqs its blocks hold in this segment and a
//!   watermark that also carries the shard's watermarks over from earlier
//!   segments ([`OriginSummary`]). It is stored first in the file, so a
//!   shard reads the watermarks of every sealed segment at open without
//!   loading postings.
//! * **Tag sets** (streams): the distinct sets of pairs that entries carry,
//!   each with the blocks that hold it, and per pair the sets that hold it.
//!   A conjunction of two or more pairs intersects the pairs' sets, then
//!   reads only the blocks of those sets: none when no set has them all,
//!   although every block may carry each pair on its own (three tags of 100
//!   values drawn independently: every block holds every value, and pair
//!   postings prune nothing). Capped, with a saturation point like the
//!   pairs' below ([`crate::limits::INDEX_TAG_SETS_PER_SEGMENT_MAX`],
//!   [`crate::limits::INDEX_TAG_SET_CELLS_PER_SEGMENT_MAX`]): blocks from it
//!   on fall back to the pair postings; the sets saturate no later than the
//!   pairs, so before that point every set is recorded whole.
//! * **Word filters**: per block, a Bloom filter of the words of its bodies
//!   ([`word_filter`]), kept in a section of the file of its own, loaded
//!   only for word queries.
//! * **Postings**: for each distinct `key=value` pair, the increasing list of
//!   the positions (in the block table) of the blocks in which at least one
//!   entry carries that pair. Postings are block-granular: a query decodes the
//!   candidate blocks and filters their entries exactly. Keys and values are
//!   arbitrary strings (they may contain `=` or NUL); a pair is the two
//!   strings, never a joined `"key=value"`.
//!
//! # Memory cap and fallback
//!
//! At most `tag_values_max` distinct `key=value` pairs are indexed per segment
//! ([`INDEX_TAG_VALUES_PER_SEGMENT_MAX`] unless a test chooses a smaller cap),
//! so a segment whose tags have unbounded cardinality (request ids, say) cannot
//! grow the index without bound. The rules:
//!
//! 1. While fewer than `tag_values_max` pairs are indexed, every new pair is
//!    indexed.
//! 2. The first time a block brings a pair that is not indexed while the index
//!    is full, the index becomes **saturated** from that block on:
//!    [`SegmentIndex::saturated_from`] returns that block's position. It never
//!    changes afterwards.
//! 3. Once saturated, no new pair is ever indexed again (even if the cap were
//!    raised), and pairs first seen from then on are not remembered at all.
//! 4. Pairs already indexed keep receiving postings for every block that
//!    carries them, before and after saturation, so their postings are always
//!    complete.
//!
//! A query then resolves each predicate to a set of blocks:
//!
//! * an indexed pair: its postings (exact at block granularity);
//! * a pair that is not indexed, when the index is saturated from block `s`:
//!   every block at position `>= s` (the pair may be one of those that went
//!   unrecorded, and it cannot occur before `s`, because before `s` every pair
//!   was indexed);
//! * a pair that is not indexed, when the index never saturated: no block (the
//!   pair does not occur in this segment).
//!
//! It intersects these sets over all predicates (no predicate means every
//! block), then keeps the blocks whose `[min_ts, max_ts]` overlaps the
//! half-open `[from_ts, to_ts)`. The result can contain blocks with no
//! matching entry (false positives, removed by the exact filter), but it never
//! misses a block that holds a matching entry (no false negatives).
//!
//! Memory is therefore bounded by the block table (one [`BlockMeta`] per
//! block, bounded by the segment size) plus at most `tag_values_max` pairs, each
//! with at most one posting per block.
//!
//! [`INDEX_TAG_VALUES_PER_SEGMENT_MAX`]: crate::limits::INDEX_TAG_VALUES_PER_SEGMENT_MAX

pub mod block_terms;
pub mod file;
pub mod segment_index;
mod set_table;
mod tag_sets;
pub mod word_filter;
pub mod words;

pub use block_terms::BlockTerms;
pub use file::{decode_origin_table, decode_summary, IndexSummary, FORMAT_VERSION, HEADER_BYTES, MAGIC};
pub use segment_index::{BlockMeta, IndexCaps, OriginKey, OriginSummary, Predicates, SegmentIndex};

/// Errors of the index layer. They all come from reading an index file: the
/// in-memory index has no operating errors (misuse is a programmer error and
/// panics).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes are an index file, but something in them is inconsistent
    /// (an ordering, a range, a count that disagrees with another). The file
    /// must not be trusted; the segment can be scanned instead.
    #[error("index file is corrupt: {what}")]
    Corrupt {
        /// Which check failed, in words.
        what: &'static str,
    },
    /// The file does not start with [`MAGIC`]: it is not an index file.
    #[error("not a wormdb index file (bad magic)")]
    BadMagic,
    /// The file was written in a format version this build cannot read.
    #[error("index file format version {0} is not supported by this build, which reads version {FORMAT_VERSION}: upgrade required")]
    UnsupportedVersion(u16),
    /// The file was written by an older build in a format version that
    /// lacks what this build needs (version 1 has no block origins). It is
    /// not used: the shard rebuilds the index by scanning its segment.
    #[error("index file format version {0} was written by an older build; this build reads version {FORMAT_VERSION} and rebuilds the index from its segment")]
    OutdatedVersion(u16),
    /// A stored crc32 does not match the bytes it covers.
    #[error("index file {what} checksum mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    Checksum {
        /// `"header"` or `"body"`.
        what: &'static str,
        /// The crc stored in the file.
        expected: u32,
        /// The crc of the bytes as read.
        actual: u32,
    },
    /// The file ends before a part that its header or its counts announce.
    #[error("index file is truncated: {what} runs past the end")]
    Truncated {
        /// Which part runs past the end.
        what: &'static str,
    },
    /// A size or count in the file crosses a bound of [`crate::limits`].
    #[error(transparent)]
    Limit(#[from] crate::limits::LimitExceeded),
}
