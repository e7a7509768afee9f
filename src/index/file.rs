//! The persisted index file of a sealed segment: encode and decode.
//!
//! Same layout as `docs/format.md`. Little-endian everywhere.
//!
//! ```text
//! Header, HEADER_BYTES = 128 bytes, covered by its own crc32:
//!
//!  offset size field              meaning
//!  ------ ---- ------------------ ---------------------------------------------
//!       0    4 magic              b"WRMI"
//!       4    2 version            u16, FORMAT_VERSION = 4
//!       6    2 flags              u16, 0 (no flag is defined)
//!       8    8 segment_first_seq  u64, seq of the segment's first entry
//!      16    8 next_seq           u64, last seq + 1 (= segment_first_seq if no block)
//!      24    4 block_count        u32, records in the block table
//!      28    4 tag_values         u32, terms (indexed key=value pairs)
//!      32    4 tag_values_max     u32, the cap the index was built with
//!      36    4 saturated_from     u32, first saturated block; 0xFFFF_FFFF = never
//!      40    8 min_ts             i64, smallest block min_ts (0 if no block)
//!      48    8 max_ts             i64, largest block max_ts (0 if no block)
//!      56    8 data_end           u64, offset + len of the last block (0 if no block)
//!      64    8 raw_bytes          u64, uncompressed payload bytes of all blocks
//!      72    8 body_bytes         u64, length of the body that follows the header
//!      80    4 body_crc           u32, crc32 of the body
//!      84    4 origin_count       u32, records in the origin table, <= INDEX_ORIGINS_MAX
//!      88    4 origins_crc        u32, crc32 of the origin table alone
//!      92    4 tag_sets           u32, records in the tag set table
//!      96    4 tag_sets_max       u32, the cap the index was built with
//!     100    4 tag_set_cells_max  u32, the cap on members + postings of sets
//!     104    4 sets_saturated_from u32, first block without sets; 0xFFFF_FFFF = never
//!     108    4 filters_crc        u32, crc32 of the filter section
//!     112    8 filters_bytes      u64, length of the filter section (0: none)
//!     120    4 filter_probes      u32, probes per word (0 iff no filter section)
//!     124    4 header_crc         u32, crc32 of header bytes [0, 124)
//!     128      (body)
//!
//! Body, body_bytes bytes, right after the header:
//!
//!   origin table: origin_count records of ORIGIN_RECORD_BYTES = 32 bytes,
//!                 strictly increasing by (node, shard); first in the body so
//!                 that a shard can read it with the header at open
//!     +0   4 node         u32, node that first stored the entries
//!     +4   4 shard        u32, shard on that node
//!     +8   8 watermark    u64, highest origin seq known durable when the
//!                         index was built (this segment and earlier ones), >= 1
//!     +16  8 first_seq    u64, lowest origin seq of its blocks here (0 = none)
//!     +24  8 last_seq     u64, highest origin seq of its blocks here (0 = none),
//!                         first_seq <= last_seq <= watermark
//!   block table: block_count records of BLOCK_META_BYTES = 56 bytes, in order
//!     +0   8 offset       u64, byte offset of the block in the segment file
//!     +8   4 len          u32, bytes the block occupies (>= 1)
//!     +12  4 entry_count  u32, 1 ..= BLOCK_ENTRIES_MAX
//!     +16  8 first_seq    u64, seq of the block's first entry
//!     +24  8 min_ts       i64
//!     +32  8 max_ts       i64
//!     +40  8 origin_first_seq  u64, origin seq of the first entry; 0 = not replicated
//!     +48  4 origin_node       u32 (0 unless replicated)
//!     +52  4 origin_shard      u32 (0 unless replicated)
//!   terms: tag_values records, in the order the pairs were first indexed
//!          (a pair's number is its position here), distinct
//!          2 key_len         u16, <= TAG_KEY_BYTES_MAX
//!    key_len key             UTF-8
//!          2 value_len       u16, <= TAG_VALUE_BYTES_MAX
//!  value_len value           UTF-8
//!          4 posting_count   u32, 1 ..= block_count
//!        1-5 postings        posting_count LEB128 u32 varints (minimal): the
//!                            first block position, then each delta (>= 1) to
//!                            the previous one; every position < block_count
//!   tag sets: tag_sets records, in the order the sets were first recorded
//!        1-5 member_count    varint, 1 ..= tag_values
//!        1-5 members         member_count varints: the first pair number,
//!                            then each delta (>= 1); every number < tag_values
//!        1-5 posting_count   varint, 1 ..= sets_end (sets_saturated_from, or
//!                            block_count when never saturated)
//!        1-5 postings        posting_count varints: the first block position,
//!                            then each delta (>= 1); every position < sets_end
//!
//! Filter section, filters_bytes bytes, right after the body, ending the
//! file (absent when filters_bytes is 0: no block has a filter):
//!   block_count records, in block order:
//!          1 filter_log2     u8, the filter has 1 << filter_log2 u64 words
//!                            (<= FILTER_LOG2_MAX); 0xFF = the block has none
//!    8 << filter_log2        the filter's u64 words, little-endian
//! ```
//!
//! Varints are LEB128 u32, minimal. The filter section has its own crc and
//! comes last, so a reader that answers tag queries reads the header and
//! body only ([`SegmentIndex::decode_without_filters`]) and loads the
//! filters when a word query first needs them
//! ([`SegmentIndex::load_filters`]).
//!
//! The encoding is canonical: [`SegmentIndex::decode`] accepts exactly the
//! byte strings that [`SegmentIndex::encode`] produces, so re-encoding a
//! decoded file yields the same bytes ([`fuzz_decode`] checks this).
//!
//! Version 1 (no origin table, 40-byte block records, 88-byte header) is
//! refused with [`Error::OutdatedVersion`]: it cannot tell replicated blocks
//! apart, so the shard rebuilds such an index by scanning its segment.
//!
//! Version 2 (a 96-byte header: the first 92 bytes as above, then its crc;
//! terms strictly increasing by (key bytes, value bytes); no tag sets, no
//! filters) is read as it is: its pairs are numbered in that order, its
//! tag sets are saturated from block 0 (every conjunction falls back to
//! the pair postings, as before) and no block has a word filter (every
//! block is a candidate for any word). It is not rebuilt: it answers as
//! it did, and segments sealed from now on get version 4.
//!
//! Version 3 is laid out exactly as version 4; its filters also hold the
//! words of one and two bytes, which version 4's leave out
//! ([`FILTERED_WORD_BYTES_MIN`]). It is read as it is: a reader never asks
//! a filter about so short a word, so either answers alike. The version
//! changed so that a build from before the change, which would ask version
//! 4 filters about short words and miss them, refuses the file instead
//! ([`Error::UnsupportedVersion`]) and rebuilds it from the segment.
//!
//! [`FILTERED_WORD_BYTES_MIN`]: crate::index::words::FILTERED_WORD_BYTES_MIN

use std::collections::BTreeMap;

use crate::codec::block::Origin;
use crate::index::segment_index::{BlockMeta, OriginKey, OriginSummary, PairTerm, Postings, SegmentIndex};
use crate::index::tag_sets::TagSets;
use crate::index::word_filter::WordFilters;
use crate::index::Error;
use crate::limits::{
    self, BLOCK_ENTRIES_MAX, BLOCK_RAW_BYTES_MAX, INDEX_FILE_BYTES_MAX, INDEX_ORIGINS_MAX,
    INDEX_TAG_SETS_PER_SEGMENT_MAX, INDEX_TAG_SET_CELLS_PER_SEGMENT_MAX, INDEX_TAG_VALUES_PER_SEGMENT_MAX,
    TAG_KEY_BYTES_MAX, TAG_VALUE_BYTES_MAX,
};

/// First four bytes of every index file.
pub const MAGIC: [u8; 4] = *b"WRMI";
/// The only format version this build reads and writes. An older version is
/// refused with [`Error::OutdatedVersion`] (the segment is rescanned), a
/// newer or unknown one with [`Error::UnsupportedVersion`].
pub const FORMAT_VERSION: u16 = 4;
/// The previous format version, still read: laid out as [`FORMAT_VERSION`],
/// its filters also hold words shorter than
/// [`FILTERED_WORD_BYTES_MIN`](crate::index::words::FILTERED_WORD_BYTES_MIN)
/// bytes (see the module documentation).
pub const FORMAT_VERSION_3: u16 = 3;
/// An older format version, still read (see the module documentation).
pub const FORMAT_VERSION_2: u16 = 2;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
const FLAGS_OFFSET: usize = VERSION_OFFSET + 2;
const SEGMENT_FIRST_SEQ_OFFSET: usize = FLAGS_OFFSET + 2;
const NEXT_SEQ_OFFSET: usize = SEGMENT_FIRST_SEQ_OFFSET + 8;
const BLOCK_COUNT_OFFSET: usize = NEXT_SEQ_OFFSET + 8;
const TAG_VALUES_OFFSET: usize = BLOCK_COUNT_OFFSET + 4;
const TAG_VALUES_MAX_OFFSET: usize = TAG_VALUES_OFFSET + 4;
const SATURATED_FROM_OFFSET: usize = TAG_VALUES_MAX_OFFSET + 4;
const MIN_TS_OFFSET: usize = SATURATED_FROM_OFFSET + 4;
const MAX_TS_OFFSET: usize = MIN_TS_OFFSET + 8;
const DATA_END_OFFSET: usize = MAX_TS_OFFSET + 8;
const RAW_BYTES_OFFSET: usize = DATA_END_OFFSET + 8;
const BODY_BYTES_OFFSET: usize = RAW_BYTES_OFFSET + 8;
const BODY_CRC_OFFSET: usize = BODY_BYTES_OFFSET + 8;
const ORIGIN_COUNT_OFFSET: usize = BODY_CRC_OFFSET + 4;
const ORIGINS_CRC_OFFSET: usize = ORIGIN_COUNT_OFFSET + 4;
/// Where version 2 puts its header crc, ending its 96-byte header.
const HEADER_CRC_OFFSET_V2: usize = ORIGINS_CRC_OFFSET + 4;
/// Size of a version 2 header.
pub const HEADER_BYTES_V2: usize = HEADER_CRC_OFFSET_V2 + 4;
const TAG_SETS_OFFSET: usize = ORIGINS_CRC_OFFSET + 4;
const TAG_SETS_MAX_OFFSET: usize = TAG_SETS_OFFSET + 4;
const TAG_SET_CELLS_MAX_OFFSET: usize = TAG_SETS_MAX_OFFSET + 4;
const SETS_SATURATED_FROM_OFFSET: usize = TAG_SET_CELLS_MAX_OFFSET + 4;
const FILTERS_CRC_OFFSET: usize = SETS_SATURATED_FROM_OFFSET + 4;
const FILTERS_BYTES_OFFSET: usize = FILTERS_CRC_OFFSET + 4;
const FILTER_PROBES_OFFSET: usize = FILTERS_BYTES_OFFSET + 8;
const HEADER_CRC_OFFSET: usize = FILTER_PROBES_OFFSET + 4;
/// Size of the fixed header, which [`decode_summary`] reads on its own (a
/// version 2 file has a shorter one, [`HEADER_BYTES_V2`]; reading this
/// many bytes from the start of any index file is enough for either).
pub const HEADER_BYTES: usize = HEADER_CRC_OFFSET + 4;

const _: () = assert!(HEADER_BYTES == 128, "the header layout in docs/format.md says 128 bytes");
const _: () = assert!(HEADER_BYTES_V2 == 96, "version 2 headers are 96 bytes");
const _: () = assert!(FILTERS_BYTES_OFFSET % 8 == 0);
/// Largest `filter_log2`: a filter is at most the builder's size.
pub const FILTER_LOG2_MAX: u8 = (crate::index::word_filter::BUILD_BITS / 64).trailing_zeros() as u8;
/// `filter_log2` of a block without a filter.
const NO_FILTER: u8 = 0xFF;
/// Most probes per word a file may declare.
const FILTER_PROBES_MAX: u32 = 16;
// The header crc covers everything before it and is the header's last field.
const _: () = assert!(HEADER_CRC_OFFSET + 4 == HEADER_BYTES);
const _: () = assert!(HEADER_CRC_OFFSET_V2 + 4 == HEADER_BYTES_V2);
// Every u64 and i64 field is naturally aligned, so the header can be viewed as a struct.
const _: () = assert!(SEGMENT_FIRST_SEQ_OFFSET % 8 == 0);
const _: () = assert!(NEXT_SEQ_OFFSET % 8 == 0);
const _: () = assert!(MIN_TS_OFFSET % 8 == 0);
const _: () = assert!(MAX_TS_OFFSET % 8 == 0);
const _: () = assert!(DATA_END_OFFSET % 8 == 0);
const _: () = assert!(RAW_BYTES_OFFSET % 8 == 0);
const _: () = assert!(BODY_BYTES_OFFSET % 8 == 0);

/// `saturated_from` value meaning "never saturated". Block positions stay
/// below it (see [`SegmentIndex::push_block`]).
const NOT_SATURATED: u32 = u32::MAX;

const BLOCK_OFFSET_OFFSET: usize = 0;
const BLOCK_LEN_OFFSET: usize = BLOCK_OFFSET_OFFSET + 8;
const BLOCK_ENTRY_COUNT_OFFSET: usize = BLOCK_LEN_OFFSET + 4;
const BLOCK_FIRST_SEQ_OFFSET: usize = BLOCK_ENTRY_COUNT_OFFSET + 4;
const BLOCK_MIN_TS_OFFSET: usize = BLOCK_FIRST_SEQ_OFFSET + 8;
const BLOCK_MAX_TS_OFFSET: usize = BLOCK_MIN_TS_OFFSET + 8;
const BLOCK_ORIGIN_FIRST_SEQ_OFFSET: usize = BLOCK_MAX_TS_OFFSET + 8;
const BLOCK_ORIGIN_NODE_OFFSET: usize = BLOCK_ORIGIN_FIRST_SEQ_OFFSET + 8;
const BLOCK_ORIGIN_SHARD_OFFSET: usize = BLOCK_ORIGIN_NODE_OFFSET + 4;
/// Size of one record of the block table.
const BLOCK_META_BYTES: usize = BLOCK_ORIGIN_SHARD_OFFSET + 4;
const _: () = assert!(BLOCK_META_BYTES == 56, "the block record in docs/format.md says 56 bytes");
const _: () = assert!(BLOCK_ORIGIN_FIRST_SEQ_OFFSET % 8 == 0);

const ORIGIN_NODE_OFFSET: usize = 0;
const ORIGIN_SHARD_OFFSET: usize = ORIGIN_NODE_OFFSET + 4;
const ORIGIN_WATERMARK_OFFSET: usize = ORIGIN_SHARD_OFFSET + 4;
const ORIGIN_FIRST_SEQ_OFFSET: usize = ORIGIN_WATERMARK_OFFSET + 8;
const ORIGIN_LAST_SEQ_OFFSET: usize = ORIGIN_FIRST_SEQ_OFFSET + 8;
/// Size of one record of the origin table.
pub const ORIGIN_RECORD_BYTES: usize = ORIGIN_LAST_SEQ_OFFSET + 8;
const _: () = assert!(ORIGIN_RECORD_BYTES == 32, "the origin record in docs/format.md says 32 bytes");
const _: () = assert!(ORIGIN_WATERMARK_OFFSET % 8 == 0);
// The origin table is read at open together with the header: bound it.
const _: () = assert!(HEADER_BYTES + INDEX_ORIGINS_MAX * ORIGIN_RECORD_BYTES <= INDEX_FILE_BYTES_MAX);
const _: () = assert!(INDEX_ORIGINS_MAX < u32::MAX as usize);

/// Smallest term: two empty strings and one single-byte posting.
const TERM_BYTES_MIN: usize = 2 + 2 + 4 + 1;
/// Longest LEB128 encoding of a u32.
const VARINT_BYTES_MAX: usize = 5;

// Lengths are stored as u16: the limits must fit.
const _: () = assert!(TAG_KEY_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(TAG_VALUE_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(INDEX_TAG_VALUES_PER_SEGMENT_MAX < u32::MAX as usize);
const _: () = assert!(INDEX_TAG_SETS_PER_SEGMENT_MAX < u32::MAX as usize);
const _: () = assert!(INDEX_TAG_SET_CELLS_PER_SEGMENT_MAX < u32::MAX as usize);
/// Smallest tag set record: one member, one posting, each count one byte.
const TAG_SET_BYTES_MIN: usize = 4;
const _: () = assert!(BLOCK_ENTRIES_MAX <= u32::MAX as usize);
const _: () = assert!(HEADER_BYTES <= INDEX_FILE_BYTES_MAX);

/// What the fixed header of an index file says about its segment, read
/// without the body (see [`decode_summary`]).
///
/// A summary that decoded without error is consistent with itself (counts fit
/// the body length, ranges are ordered), but only [`SegmentIndex::decode`]
/// checks it against the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexSummary {
    /// Sequence number of the segment's first entry.
    pub segment_first_seq: u64,
    /// One past the segment's last sequence number; equal to
    /// `segment_first_seq` for a segment with no block.
    pub next_seq: u64,
    /// Number of blocks in the segment.
    pub block_count: u32,
    /// Number of distinct `key=value` pairs indexed.
    pub tag_values: u32,
    /// The cap on `tag_values` that the index was built with.
    pub tag_values_max: u32,
    /// Position of the first block from which the index is saturated, if any.
    pub saturated_from: Option<u32>,
    /// Smallest timestamp in the segment; 0 when `block_count` is 0.
    pub min_ts: i64,
    /// Largest timestamp in the segment; 0 when `block_count` is 0.
    pub max_ts: i64,
    /// End offset (`offset + len`) of the last block; 0 when `block_count` is 0.
    pub data_end: u64,
    /// Uncompressed payload bytes of all blocks, as given to
    /// [`SegmentIndex::encode`] (the index itself does not track it); at most
    /// `block_count * BLOCK_RAW_BYTES_MAX`.
    pub raw_bytes: u64,
    /// Length of the body that follows the header.
    pub body_bytes: u64,
    /// crc32 of the body (which includes the origin table).
    pub body_crc: u32,
    /// Records in the origin table, which starts the body (see
    /// [`decode_origin_table`]).
    pub origin_count: u32,
    /// crc32 of the origin table.
    pub origins_crc: u32,
    /// The file's format version: [`FORMAT_VERSION`], [`FORMAT_VERSION_3`]
    /// or [`FORMAT_VERSION_2`].
    pub version: u16,
    /// Number of tag sets (0 in version 2).
    pub tag_sets: u32,
    /// The cap on `tag_sets` the index was built with.
    pub tag_sets_max: u32,
    /// The cap on members plus postings of the tag sets.
    pub tag_set_cells_max: u32,
    /// Position of the first block whose sets are not recorded, if any
    /// (block 0 for a version 2 file with blocks).
    pub sets_saturated_from: Option<u32>,
    /// Length of the filter section after the body (0: no block has a
    /// filter).
    pub filters_bytes: u64,
    /// crc32 of the filter section.
    pub filters_crc: u32,
    /// Probes per word of the filters (0 when there are none).
    pub filter_probes: u32,
}

impl IndexSummary {
    /// `(min_ts, max_ts)`, both inclusive, or `None` when there is no block.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        (self.block_count > 0).then_some((self.min_ts, self.max_ts))
    }

    /// Length of the header of this file's version.
    pub fn header_bytes(&self) -> usize {
        if self.version == FORMAT_VERSION_2 {
            HEADER_BYTES_V2
        } else {
            HEADER_BYTES
        }
    }

    /// Length of the whole file: header, body and filter section.
    pub fn file_bytes(&self) -> u64 {
        self.filters_offset() + self.filters_bytes
    }

    /// Offset of the filter section: the bytes before it (header and body)
    /// are all that [`SegmentIndex::decode_without_filters`] needs.
    pub fn filters_offset(&self) -> u64 {
        self.header_bytes() as u64 + self.body_bytes
    }

    /// Offset one past the origin table: the bytes [`decode_origin_table`]
    /// needs from the start of the file. At most
    /// `HEADER_BYTES + INDEX_ORIGINS_MAX * ORIGIN_RECORD_BYTES` for a summary
    /// that decoded.
    pub fn origin_table_end(&self) -> usize {
        self.header_bytes() + self.origin_count as usize * ORIGIN_RECORD_BYTES
    }
}

/// Decodes the fixed header at the start of `header`, which must hold at least
/// [`HEADER_BYTES`] bytes; anything after them is ignored, so the whole file
/// may be passed too.
///
/// Checks the magic, the version, the header crc and the consistency of the
/// header fields among themselves and with [`crate::limits`]; the body is
/// neither read nor verified.
pub fn decode_summary(header: &[u8]) -> Result<IndexSummary, Error> {
    let Some(start) = header.get(..VERSION_OFFSET + 2) else {
        return Err(Error::Truncated { what: "header" });
    };
    if start[MAGIC_OFFSET..VERSION_OFFSET] != MAGIC {
        return Err(Error::BadMagic);
    }
    // The version comes before the crc: another version places its crc
    // elsewhere (version 1 at offset 84, with an 88-byte header; version 2
    // at 92, with a 96-byte header).
    let version = u16::from_le_bytes(array(start, VERSION_OFFSET));
    if (1..FORMAT_VERSION_2).contains(&version) {
        return Err(Error::OutdatedVersion(version));
    }
    let crc_offset = match version {
        FORMAT_VERSION_2 => HEADER_CRC_OFFSET_V2,
        FORMAT_VERSION_3 | FORMAT_VERSION => HEADER_CRC_OFFSET,
        _ => return Err(Error::UnsupportedVersion(version)),
    };
    let Some(header) = header.get(..crc_offset + 4) else {
        return Err(Error::Truncated { what: "header" });
    };
    let expected = u32::from_le_bytes(array(header, crc_offset));
    let actual = crc32fast::hash(&header[..crc_offset]);
    if expected != actual {
        return Err(Error::Checksum { what: "header", expected, actual });
    }
    if u16::from_le_bytes(array(header, FLAGS_OFFSET)) != 0 {
        return Err(corrupt("unknown flags are set"));
    }
    let saturated_from = u32::from_le_bytes(array(header, SATURATED_FROM_OFFSET));
    let summary = IndexSummary {
        segment_first_seq: u64::from_le_bytes(array(header, SEGMENT_FIRST_SEQ_OFFSET)),
        next_seq: u64::from_le_bytes(array(header, NEXT_SEQ_OFFSET)),
        block_count: u32::from_le_bytes(array(header, BLOCK_COUNT_OFFSET)),
        tag_values: u32::from_le_bytes(array(header, TAG_VALUES_OFFSET)),
        tag_values_max: u32::from_le_bytes(array(header, TAG_VALUES_MAX_OFFSET)),
        saturated_from: (saturated_from != NOT_SATURATED).then_some(saturated_from),
        min_ts: i64::from_le_bytes(array(header, MIN_TS_OFFSET)),
        max_ts: i64::from_le_bytes(array(header, MAX_TS_OFFSET)),
        data_end: u64::from_le_bytes(array(header, DATA_END_OFFSET)),
        raw_bytes: u64::from_le_bytes(array(header, RAW_BYTES_OFFSET)),
        body_bytes: u64::from_le_bytes(array(header, BODY_BYTES_OFFSET)),
        body_crc: u32::from_le_bytes(array(header, BODY_CRC_OFFSET)),
        origin_count: u32::from_le_bytes(array(header, ORIGIN_COUNT_OFFSET)),
        origins_crc: u32::from_le_bytes(array(header, ORIGINS_CRC_OFFSET)),
        version,
        tag_sets: 0,
        tag_sets_max: INDEX_TAG_SETS_PER_SEGMENT_MAX as u32,
        tag_set_cells_max: INDEX_TAG_SET_CELLS_PER_SEGMENT_MAX as u32,
        sets_saturated_from: None,
        filters_bytes: 0,
        filters_crc: 0,
        filter_probes: 0,
    };
    let summary = if version == FORMAT_VERSION_2 {
        // Version 2 records no set: every block falls back to the pairs.
        IndexSummary { sets_saturated_from: (summary.block_count > 0).then_some(0), ..summary }
    } else {
        let sets_saturated_from = u32::from_le_bytes(array(header, SETS_SATURATED_FROM_OFFSET));
        IndexSummary {
            tag_sets: u32::from_le_bytes(array(header, TAG_SETS_OFFSET)),
            tag_sets_max: u32::from_le_bytes(array(header, TAG_SETS_MAX_OFFSET)),
            tag_set_cells_max: u32::from_le_bytes(array(header, TAG_SET_CELLS_MAX_OFFSET)),
            sets_saturated_from: (sets_saturated_from != NOT_SATURATED).then_some(sets_saturated_from),
            filters_bytes: u64::from_le_bytes(array(header, FILTERS_BYTES_OFFSET)),
            filters_crc: u32::from_le_bytes(array(header, FILTERS_CRC_OFFSET)),
            filter_probes: u32::from_le_bytes(array(header, FILTER_PROBES_OFFSET)),
            ..summary
        }
    };
    check_summary(&summary)?;
    Ok(summary)
}

/// Header-only consistency checks, so that a summary which decodes can be
/// trusted as far as the header goes, and so that the body parser can size
/// its allocations from header counts.
fn check_summary(summary: &IndexSummary) -> Result<(), Error> {
    let body_bytes = usize::try_from(summary.body_bytes).unwrap_or(usize::MAX);
    let filters_bytes = usize::try_from(summary.filters_bytes).unwrap_or(usize::MAX);
    limits::check(
        "INDEX_FILE_BYTES_MAX",
        "index file bytes",
        summary.header_bytes().saturating_add(body_bytes).saturating_add(filters_bytes),
        INDEX_FILE_BYTES_MAX,
    )?;
    limits::check(
        "INDEX_TAG_SETS_PER_SEGMENT_MAX",
        "tag sets cap of an index file",
        summary.tag_sets_max as usize,
        INDEX_TAG_SETS_PER_SEGMENT_MAX,
    )?;
    limits::check(
        "INDEX_TAG_SET_CELLS_PER_SEGMENT_MAX",
        "tag set cells cap of an index file",
        summary.tag_set_cells_max as usize,
        INDEX_TAG_SET_CELLS_PER_SEGMENT_MAX,
    )?;
    if summary.tag_sets > summary.tag_sets_max {
        return Err(corrupt("more tag sets than the cap"));
    }
    if (summary.filters_bytes == 0) != (summary.filter_probes == 0) {
        return Err(corrupt("filter probes disagree with the filter section"));
    }
    if summary.filter_probes > FILTER_PROBES_MAX {
        return Err(corrupt("too many filter probes"));
    }
    if summary.filters_bytes != 0 && summary.filters_bytes < u64::from(summary.block_count) {
        return Err(corrupt("filter section is shorter than one byte per block"));
    }
    if let Some(sets_from) = summary.sets_saturated_from {
        if sets_from >= summary.block_count {
            return Err(corrupt("sets_saturated_from is past the last block"));
        }
        if summary.saturated_from.is_some_and(|pairs_from| pairs_from < sets_from) {
            return Err(corrupt("tag sets saturate after the pairs"));
        }
    } else if summary.saturated_from.is_some() {
        return Err(corrupt("pairs saturated but not the tag sets"));
    }
    let tag_values_max = summary.tag_values_max as usize;
    limits::check(
        "INDEX_TAG_VALUES_PER_SEGMENT_MAX",
        "tag values cap of an index file",
        tag_values_max,
        INDEX_TAG_VALUES_PER_SEGMENT_MAX,
    )?;
    let tag_values = summary.tag_values as usize;
    if tag_values > tag_values_max {
        return Err(corrupt("more tag values than the cap"));
    }
    let origin_count = summary.origin_count as usize;
    limits::check("INDEX_ORIGINS_MAX", "origins of an index file", origin_count, INDEX_ORIGINS_MAX)?;
    let block_count = summary.block_count as usize;
    // The counts come from the file: saturate rather than overflow.
    let origins_bytes = origin_count.saturating_mul(ORIGIN_RECORD_BYTES);
    let table_bytes = block_count.saturating_mul(BLOCK_META_BYTES);
    let terms_bytes_min = tag_values.saturating_mul(TERM_BYTES_MIN);
    let sets_bytes_min = (summary.tag_sets as usize).saturating_mul(TAG_SET_BYTES_MIN);
    if origins_bytes.saturating_add(table_bytes).saturating_add(terms_bytes_min).saturating_add(sets_bytes_min)
        > body_bytes
    {
        return Err(corrupt("origin, block, term and set counts do not fit the body length"));
    }
    if let Some(saturated_from) = summary.saturated_from {
        if saturated_from >= summary.block_count {
            return Err(corrupt("saturated_from is past the last block"));
        }
        if summary.tag_values != summary.tag_values_max {
            return Err(corrupt("saturated while tag values are below the cap"));
        }
    }
    if summary.block_count == 0 {
        let empty = summary.next_seq == summary.segment_first_seq
            && summary.tag_values == 0
            && summary.min_ts == 0
            && summary.max_ts == 0
            && summary.data_end == 0
            && summary.raw_bytes == 0
            && summary.tag_sets == 0
            && summary.filters_bytes == 0;
        if !empty {
            return Err(corrupt("an index with no block has non-zero fields"));
        }
    } else {
        let entry_count = summary.next_seq.checked_sub(summary.segment_first_seq);
        let entries_min = u64::from(summary.block_count);
        let entries_max = entries_min * BLOCK_ENTRIES_MAX as u64;
        if !entry_count.is_some_and(|count| (entries_min..=entries_max).contains(&count)) {
            return Err(corrupt("sequence range does not fit the block count"));
        }
        if summary.min_ts > summary.max_ts {
            return Err(corrupt("min_ts is after max_ts"));
        }
        if summary.data_end < u64::from(summary.block_count) {
            return Err(corrupt("data_end is before the end of the blocks"));
        }
        if summary.raw_bytes > raw_bytes_max(summary.block_count) {
            return Err(corrupt("raw_bytes is over BLOCK_RAW_BYTES_MAX per block"));
        }
    }
    Ok(())
}

impl SegmentIndex {
    /// Encodes the whole index (header and body) into the file format above.
    /// `raw_bytes`, the uncompressed payload bytes of all the segment's
    /// blocks, is stored in the header for stats ([`IndexSummary::raw_bytes`]).
    ///
    /// # Panics
    /// If `raw_bytes` is over [`BLOCK_RAW_BYTES_MAX`] per block (so not 0 for
    /// an index with no block): [`decode`] would refuse the file.
    ///
    /// For a pathological segment (very many blocks times very many tag
    /// values) the result can exceed [`INDEX_FILE_BYTES_MAX`]; [`decode`]
    /// refuses such a file with [`Error::Limit`], so a caller should not
    /// write it and scan the segment instead.
    ///
    /// [`decode`]: Self::decode
    pub fn encode(&self, raw_bytes: u64) -> Vec<u8> {
        let block_count = self.blocks.len() as u32;
        assert!(raw_bytes <= raw_bytes_max(block_count), "raw_bytes is over BLOCK_RAW_BYTES_MAX per block");
        // Terms in the order of their numbers.
        let mut terms: Vec<(&str, &str, &[u32])> = vec![("", "", &[]); self.tag_values];
        let mut seen = 0;
        for (key, values) in &self.postings {
            for (value, term) in values {
                terms[term.id as usize] = (&**key, &**value, term.blocks.as_slice());
                seen += 1;
            }
        }
        assert_eq!(seen, self.tag_values, "tag_values disagrees with the postings");
        assert!(self.origins.len() <= INDEX_ORIGINS_MAX, "more origins than INDEX_ORIGINS_MAX");
        let filters = self.filters.get().expect("encoding an index whose filters are not loaded");

        let mut bytes = Vec::with_capacity(HEADER_BYTES + self.blocks.len() * BLOCK_META_BYTES);
        bytes.resize(HEADER_BYTES, 0);
        // BTreeMap order is the (node, shard) order the format asks for.
        for (&(node, shard), summary) in &self.origins {
            let (first_seq, last_seq) = summary.seqs.unwrap_or((0, 0));
            bytes.extend_from_slice(&node.to_le_bytes());
            bytes.extend_from_slice(&shard.to_le_bytes());
            bytes.extend_from_slice(&summary.watermark.to_le_bytes());
            bytes.extend_from_slice(&first_seq.to_le_bytes());
            bytes.extend_from_slice(&last_seq.to_le_bytes());
        }
        let origins_crc = crc32fast::hash(&bytes[HEADER_BYTES..]);
        for block in &self.blocks {
            let origin = block.origin.unwrap_or(Origin { node: 0, shard: 0, first_seq: 0 });
            bytes.extend_from_slice(&block.offset.to_le_bytes());
            bytes.extend_from_slice(&block.len.to_le_bytes());
            bytes.extend_from_slice(&block.entry_count.to_le_bytes());
            bytes.extend_from_slice(&block.first_seq.to_le_bytes());
            bytes.extend_from_slice(&block.min_ts.to_le_bytes());
            bytes.extend_from_slice(&block.max_ts.to_le_bytes());
            bytes.extend_from_slice(&origin.first_seq.to_le_bytes());
            bytes.extend_from_slice(&origin.node.to_le_bytes());
            bytes.extend_from_slice(&origin.shard.to_le_bytes());
        }
        for (key, value, blocks) in terms {
            // push_block bounds the lengths well below u16::MAX.
            bytes.extend_from_slice(&(key.len() as u16).to_le_bytes());
            bytes.extend_from_slice(key.as_bytes());
            bytes.extend_from_slice(&(value.len() as u16).to_le_bytes());
            bytes.extend_from_slice(value.as_bytes());
            bytes.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
            put_increasing(&mut bytes, blocks);
        }
        self.tag_sets.for_each_set(|members, blocks| {
            put_varint(&mut bytes, members.len() as u32);
            put_increasing(&mut bytes, members);
            put_varint(&mut bytes, blocks.len() as u32);
            put_increasing(&mut bytes, blocks);
        });
        let body_bytes = bytes.len() - HEADER_BYTES;
        let body_crc = crc32fast::hash(&bytes[HEADER_BYTES..]);

        let filters_start = bytes.len();
        if filters.any() {
            assert_eq!(filters.len(), self.blocks.len(), "one filter record per block");
            for position in 0..block_count {
                match filters.filter(position) {
                    None => bytes.push(NO_FILTER),
                    Some(words) => {
                        bytes.push(words.len().trailing_zeros() as u8);
                        for word in words {
                            bytes.extend_from_slice(&word.to_le_bytes());
                        }
                    }
                }
            }
        }
        let filters_bytes = bytes.len() - filters_start;
        let filters_crc = crc32fast::hash(&bytes[filters_start..]);
        let filter_probes = if filters_bytes == 0 { 0 } else { filters.probes };

        let (min_ts, max_ts) = self.time_range().unwrap_or((0, 0));
        let header = &mut bytes[..HEADER_BYTES];
        header[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&MAGIC);
        header[VERSION_OFFSET..FLAGS_OFFSET].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[FLAGS_OFFSET..SEGMENT_FIRST_SEQ_OFFSET].copy_from_slice(&0_u16.to_le_bytes());
        put(header, SEGMENT_FIRST_SEQ_OFFSET, &self.segment_first_seq.to_le_bytes());
        put(header, NEXT_SEQ_OFFSET, &self.next_seq.to_le_bytes());
        put(header, BLOCK_COUNT_OFFSET, &block_count.to_le_bytes());
        put(header, TAG_VALUES_OFFSET, &(self.tag_values as u32).to_le_bytes());
        put(header, TAG_VALUES_MAX_OFFSET, &(self.tag_values_max as u32).to_le_bytes());
        put(header, SATURATED_FROM_OFFSET, &self.saturated_from.unwrap_or(NOT_SATURATED).to_le_bytes());
        put(header, MIN_TS_OFFSET, &min_ts.to_le_bytes());
        put(header, MAX_TS_OFFSET, &max_ts.to_le_bytes());
        put(header, DATA_END_OFFSET, &self.data_end().to_le_bytes());
        put(header, RAW_BYTES_OFFSET, &raw_bytes.to_le_bytes());
        put(header, BODY_BYTES_OFFSET, &(body_bytes as u64).to_le_bytes());
        put(header, BODY_CRC_OFFSET, &body_crc.to_le_bytes());
        put(header, ORIGIN_COUNT_OFFSET, &(self.origins.len() as u32).to_le_bytes());
        put(header, ORIGINS_CRC_OFFSET, &origins_crc.to_le_bytes());
        put(header, TAG_SETS_OFFSET, &(self.tag_sets.len() as u32).to_le_bytes());
        put(header, TAG_SETS_MAX_OFFSET, &(self.tag_sets.sets_max as u32).to_le_bytes());
        put(header, TAG_SET_CELLS_MAX_OFFSET, &(self.tag_sets.cells_max as u32).to_le_bytes());
        let sets_saturated_from = self.tag_sets.saturated_from.unwrap_or(NOT_SATURATED);
        put(header, SETS_SATURATED_FROM_OFFSET, &sets_saturated_from.to_le_bytes());
        put(header, FILTERS_CRC_OFFSET, &filters_crc.to_le_bytes());
        put(header, FILTERS_BYTES_OFFSET, &(filters_bytes as u64).to_le_bytes());
        put(header, FILTER_PROBES_OFFSET, &filter_probes.to_le_bytes());
        let header_crc = crc32fast::hash(&header[..HEADER_CRC_OFFSET]);
        put(header, HEADER_CRC_OFFSET, &header_crc.to_le_bytes());
        bytes
    }

    /// Decodes a whole index file (header, body and filter section),
    /// verifying every crc, every length and count (against the bytes that
    /// remain and against [`crate::limits`]) before allocating for it, and
    /// every invariant that [`push_block`](Self::push_block) guarantees.
    /// Never panics: bad input gives an [`Error`].
    ///
    /// `bytes` must be exactly the file: trailing bytes are
    /// [`Error::Corrupt`], missing ones [`Error::Truncated`].
    pub fn decode(bytes: &[u8]) -> Result<SegmentIndex, Error> {
        limits::check("INDEX_FILE_BYTES_MAX", "index file bytes", bytes.len(), INDEX_FILE_BYTES_MAX)?;
        let summary = decode_summary(bytes)?;
        // check_summary bounded the lengths by INDEX_FILE_BYTES_MAX, so they fit.
        let filters_offset = summary.filters_offset() as usize;
        if bytes.len() < filters_offset {
            return Err(Error::Truncated { what: "body" });
        }
        let index = Self::decode_parts(&bytes[..filters_offset], &summary)?;
        index.load_filters(&summary, &bytes[filters_offset..])?;
        Ok(index)
    }

    /// Decodes an index file without its filter section: `bytes` is the
    /// file up to [`IndexSummary::filters_offset`] exactly (the header and
    /// the body). Word filters are then not loaded
    /// ([`filters_loaded`](Self::filters_loaded)) until
    /// [`load_filters`](Self::load_filters) is given the rest of the file.
    pub fn decode_without_filters(bytes: &[u8]) -> Result<SegmentIndex, Error> {
        limits::check("INDEX_FILE_BYTES_MAX", "index file bytes", bytes.len(), INDEX_FILE_BYTES_MAX)?;
        let summary = decode_summary(bytes)?;
        if bytes.len() < summary.filters_offset() as usize {
            return Err(Error::Truncated { what: "body" });
        }
        if bytes.len() > summary.filters_offset() as usize {
            return Err(corrupt("bytes after the body"));
        }
        Self::decode_parts(bytes, &summary)
    }

    fn decode_parts(bytes: &[u8], summary: &IndexSummary) -> Result<SegmentIndex, Error> {
        // check_summary bounded body_bytes by INDEX_FILE_BYTES_MAX, so this fits.
        let body_bytes = summary.body_bytes as usize;
        let body = &bytes[summary.header_bytes()..];
        if body.len() < body_bytes {
            return Err(Error::Truncated { what: "body" });
        }
        if body.len() > body_bytes {
            return Err(corrupt("bytes after the body"));
        }
        let actual = crc32fast::hash(body);
        if actual != summary.body_crc {
            return Err(Error::Checksum { what: "body", expected: summary.body_crc, actual });
        }

        let origins = decode_origin_table(bytes, summary)?;
        let mut reader = Reader { bytes: &body[summary.origin_table_end() - summary.header_bytes()..] };
        let blocks = decode_blocks(&mut reader, summary)?;
        check_origins_against_blocks(&origins, &blocks)?;
        let postings = decode_terms(&mut reader, summary)?;
        let tag_sets = decode_sets(&mut reader, summary)?;
        if !reader.bytes.is_empty() {
            return Err(corrupt("bytes after the last term or set"));
        }
        // Without a filter section no block has a filter: loaded, empty.
        let filters = std::cell::OnceCell::new();
        if summary.filters_bytes == 0 {
            let mut none = WordFilters::new();
            for _ in 0..blocks.len() {
                none.push(None);
            }
            let _ = filters.set(none);
        }
        Ok(SegmentIndex {
            segment_first_seq: summary.segment_first_seq,
            next_seq: summary.next_seq,
            tag_values_max: summary.tag_values_max as usize,
            tag_values: summary.tag_values as usize,
            saturated_from: summary.saturated_from,
            blocks,
            postings,
            tag_sets,
            filters,
            origins,
        })
    }

    /// Loads the word filters of an index decoded without them, from the
    /// filter section of its file (`section`: the bytes from
    /// [`IndexSummary::filters_offset`] to the end of the file) whose header
    /// decoded to `summary`. Checks the section's crc and every record.
    /// Does nothing if the filters are loaded already.
    pub fn load_filters(&self, summary: &IndexSummary, section: &[u8]) -> Result<(), Error> {
        if self.filters.get().is_some() {
            return if section.is_empty() { Ok(()) } else { Err(corrupt("bytes after the body")) };
        }
        let filters = decode_filters(section, summary, self.blocks.len())?;
        let _ = self.filters.set(filters);
        Ok(())
    }
}

/// Writes increasing `values` as varints: the first, then each delta.
fn put_increasing(bytes: &mut Vec<u8>, values: &[u32]) {
    let mut previous = None;
    for &value in values {
        put_varint(bytes, previous.map_or(value, |previous| value - previous));
        previous = Some(value);
    }
}

/// Reads the filter section.
fn decode_filters(section: &[u8], summary: &IndexSummary, block_count: usize) -> Result<WordFilters, Error> {
    if (section.len() as u64) < summary.filters_bytes {
        return Err(Error::Truncated { what: "filter section" });
    }
    if (section.len() as u64) > summary.filters_bytes {
        return Err(corrupt("bytes after the filter section"));
    }
    let actual = crc32fast::hash(section);
    if actual != summary.filters_crc {
        return Err(Error::Checksum { what: "filter section", expected: summary.filters_crc, actual });
    }
    let mut filters = WordFilters { probes: summary.filter_probes, ..WordFilters::new() };
    if section.is_empty() {
        for _ in 0..block_count {
            filters.push(None);
        }
        return Ok(filters);
    }
    let mut reader = Reader { bytes: section };
    // Every filter is at least 8 bytes: bound the allocation by the section.
    filters.words.reserve(section.len() / 8);
    filters.ends.reserve(block_count);
    for _ in 0..block_count {
        let log2 = reader.take(1, "filter section runs short")?[0];
        if log2 == NO_FILTER {
            filters.ends.push(filters.words.len() as u32);
            continue;
        }
        if log2 > FILTER_LOG2_MAX {
            return Err(corrupt("word filter is larger than FILTER_LOG2_MAX"));
        }
        let words = reader.take(8 << log2, "filter runs past the filter section")?;
        filters.words.extend(words.chunks_exact(8).map(|word| u64::from_le_bytes(array(word, 0))));
        filters.ends.push(filters.words.len() as u32);
    }
    if !reader.bytes.is_empty() {
        return Err(corrupt("bytes after the last filter"));
    }
    if !filters.any() {
        return Err(corrupt("a filter section in which no block has a filter"));
    }
    Ok(filters)
}

/// Decodes the origin table of an index file whose header decoded to
/// `summary`: `bytes` is the file from its start, at least up to
/// [`IndexSummary::origin_table_end`] (anything after is ignored), so a
/// shard can read the watermarks of a sealed segment without its postings.
/// Checks the table's own crc, the order of the records and each record;
/// only [`SegmentIndex::decode`] also checks them against the block table.
pub fn decode_origin_table(bytes: &[u8], summary: &IndexSummary) -> Result<BTreeMap<OriginKey, OriginSummary>, Error> {
    // decode_summary bounded origin_count by INDEX_ORIGINS_MAX, so this is small.
    let Some(table) = bytes.get(summary.header_bytes()..summary.origin_table_end()) else {
        return Err(Error::Truncated { what: "origin table" });
    };
    let actual = crc32fast::hash(table);
    if actual != summary.origins_crc {
        return Err(Error::Checksum { what: "origin table", expected: summary.origins_crc, actual });
    }
    let mut origins = BTreeMap::new();
    let mut previous: Option<OriginKey> = None;
    for record in table.chunks_exact(ORIGIN_RECORD_BYTES) {
        let key = (
            u32::from_le_bytes(array(record, ORIGIN_NODE_OFFSET)),
            u32::from_le_bytes(array(record, ORIGIN_SHARD_OFFSET)),
        );
        let watermark = u64::from_le_bytes(array(record, ORIGIN_WATERMARK_OFFSET));
        let first_seq = u64::from_le_bytes(array(record, ORIGIN_FIRST_SEQ_OFFSET));
        let last_seq = u64::from_le_bytes(array(record, ORIGIN_LAST_SEQ_OFFSET));
        if previous.is_some_and(|previous| previous >= key) {
            return Err(corrupt("origins are not strictly increasing"));
        }
        previous = Some(key);
        if watermark == 0 {
            return Err(corrupt("origin watermark is 0"));
        }
        let seqs = match (first_seq, last_seq) {
            (0, 0) => None,
            (first, last) if first >= 1 && first <= last && last <= watermark => Some((first, last)),
            _ => return Err(corrupt("origin seq range is out of order")),
        };
        origins.insert(key, OriginSummary { watermark, seqs });
    }
    Ok(origins)
}

/// The origin seqs in the table must be exactly those of the blocks: every
/// replicated block's origin has a record whose range is the lowest and
/// highest origin seq over its blocks, and no record claims blocks that are
/// not there.
fn check_origins_against_blocks(
    origins: &BTreeMap<OriginKey, OriginSummary>,
    blocks: &[BlockMeta],
) -> Result<(), Error> {
    // One origin after another, so memory stays at one entry per origin.
    let mut spans: BTreeMap<OriginKey, (u64, u64)> = BTreeMap::new();
    for block in blocks {
        if let (Some(key), Some(origin), Some(last)) = (block.origin_key(), block.origin, block.origin_last_seq()) {
            let span = spans.entry(key).or_insert((origin.first_seq, last));
            *span = (span.0.min(origin.first_seq), span.1.max(last));
            if spans.len() > origins.len() {
                return Err(corrupt("a block's origin has no record in the origin table"));
            }
        }
    }
    for (key, span) in &spans {
        if origins.get(key).and_then(|summary| summary.seqs) != Some(*span) {
            return Err(corrupt("origin table disagrees with the blocks"));
        }
    }
    if origins.iter().any(|(key, summary)| summary.seqs.is_some() && !spans.contains_key(key)) {
        return Err(corrupt("origin table claims blocks that are not there"));
    }
    Ok(())
}

/// Reads the block table and checks it against itself and the header.
fn decode_blocks(reader: &mut Reader<'_>, summary: &IndexSummary) -> Result<Vec<BlockMeta>, Error> {
    let block_count = summary.block_count as usize;
    // check_summary made sure the table fits the body; check again here so
    // the allocation below does not depend on a check made elsewhere.
    if block_count.saturating_mul(BLOCK_META_BYTES) > reader.bytes.len() {
        return Err(corrupt("block table runs past the body"));
    }
    let mut blocks = Vec::with_capacity(block_count);
    let mut next_seq = summary.segment_first_seq;
    let mut data_end = 0_u64;
    let mut min_ts = i64::MAX;
    let mut max_ts = i64::MIN;
    for _ in 0..block_count {
        let record = reader.take(BLOCK_META_BYTES, "block table runs past the body")?;
        let block = BlockMeta {
            offset: u64::from_le_bytes(array(record, BLOCK_OFFSET_OFFSET)),
            len: u32::from_le_bytes(array(record, BLOCK_LEN_OFFSET)),
            entry_count: u32::from_le_bytes(array(record, BLOCK_ENTRY_COUNT_OFFSET)),
            first_seq: u64::from_le_bytes(array(record, BLOCK_FIRST_SEQ_OFFSET)),
            min_ts: i64::from_le_bytes(array(record, BLOCK_MIN_TS_OFFSET)),
            max_ts: i64::from_le_bytes(array(record, BLOCK_MAX_TS_OFFSET)),
            origin: None,
        };
        let origin = Origin {
            node: u32::from_le_bytes(array(record, BLOCK_ORIGIN_NODE_OFFSET)),
            shard: u32::from_le_bytes(array(record, BLOCK_ORIGIN_SHARD_OFFSET)),
            first_seq: u64::from_le_bytes(array(record, BLOCK_ORIGIN_FIRST_SEQ_OFFSET)),
        };
        let block = match origin {
            Origin { node: 0, shard: 0, first_seq: 0 } => block,
            Origin { first_seq: 0, .. } => return Err(corrupt("origin node or shard set without an origin seq")),
            origin => {
                // A checked end, as push_block asserts.
                if origin.first_seq.checked_add(u64::from(block.entry_count)).is_none() {
                    return Err(corrupt("origin seq range overflows"));
                }
                BlockMeta { origin: Some(origin), ..block }
            }
        };
        // The same invariants as the assertions of push_block, as errors.
        if block.first_seq != next_seq {
            return Err(corrupt("block sequence numbers are not dense"));
        }
        if block.offset < data_end {
            return Err(corrupt("blocks overlap"));
        }
        if block.len == 0 {
            return Err(corrupt("block has no bytes"));
        }
        if block.entry_count == 0 || block.entry_count as usize > BLOCK_ENTRIES_MAX {
            return Err(corrupt("block entry count out of range"));
        }
        if block.min_ts > block.max_ts {
            return Err(corrupt("block min_ts is after max_ts"));
        }
        next_seq =
            block.first_seq.checked_add(u64::from(block.entry_count)).ok_or_else(|| corrupt("sequence overflows"))?;
        data_end = block.offset.checked_add(u64::from(block.len)).ok_or_else(|| corrupt("block offset overflows"))?;
        min_ts = min_ts.min(block.min_ts);
        max_ts = max_ts.max(block.max_ts);
        blocks.push(block);
    }
    if block_count == 0 {
        (min_ts, max_ts) = (0, 0);
    }
    if next_seq != summary.next_seq {
        return Err(corrupt("header next_seq disagrees with the blocks"));
    }
    if data_end != summary.data_end {
        return Err(corrupt("header data_end disagrees with the blocks"));
    }
    if (min_ts, max_ts) != (summary.min_ts, summary.max_ts) {
        return Err(corrupt("header time range disagrees with the blocks"));
    }
    Ok(blocks)
}

/// Reads the terms and their postings.
fn decode_terms(reader: &mut Reader<'_>, summary: &IndexSummary) -> Result<Postings, Error> {
    let block_count = summary.block_count;
    let mut postings = Postings::default();
    let mut previous: Option<(&[u8], &[u8])> = None;
    for id in 0..summary.tag_values {
        let key = reader.take_string(TAG_KEY_BYTES_MAX, "TAG_KEY_BYTES_MAX", "tag key bytes")?;
        let value = reader.take_string(TAG_VALUE_BYTES_MAX, "TAG_VALUE_BYTES_MAX", "tag value bytes")?;
        let term = (key.as_bytes(), value.as_bytes());
        // Version 2 sorts its terms; versions 3 and 4 keep them in the order they
        // were first indexed, distinct (checked on insertion below).
        if summary.version == FORMAT_VERSION_2 && previous.is_some_and(|previous| previous >= term) {
            return Err(corrupt("terms are not strictly increasing"));
        }
        previous = Some(term);

        let count = u32::from_le_bytes(array(reader.take(4, "posting count runs past the body")?, 0));
        if count == 0 || count > block_count {
            return Err(corrupt("posting count out of range"));
        }
        // Every posting takes at least one byte.
        if count as usize > reader.bytes.len() {
            return Err(corrupt("postings run past the body"));
        }
        let mut blocks = Vec::with_capacity(count as usize);
        let mut position = reader.take_varint()?;
        blocks.push(position);
        for _ in 1..count {
            let delta = reader.take_varint()?;
            if delta == 0 {
                return Err(corrupt("postings are not strictly increasing"));
            }
            position = position.checked_add(delta).ok_or_else(|| corrupt("posting overflows"))?;
            blocks.push(position);
        }
        if position >= block_count {
            return Err(corrupt("posting is past the last block"));
        }
        if summary.saturated_from.is_some_and(|saturated_from| blocks[0] > saturated_from) {
            return Err(corrupt("a pair is indexed that was first seen after saturation"));
        }

        // Look the key up before inserting it, to allocate it only once.
        let term = PairTerm { id, blocks };
        let replaced = if let Some(values) = postings.get_mut(key) {
            values.insert(value.into(), term)
        } else {
            postings.entry(key.into()).or_default().insert(value.into(), term)
        };
        if replaced.is_some() {
            return Err(corrupt("a pair is indexed twice"));
        }
    }
    Ok(postings)
}

/// Reads the tag sets (none in version 2: saturated from block 0).
fn decode_sets(reader: &mut Reader<'_>, summary: &IndexSummary) -> Result<TagSets, Error> {
    let tag_values = summary.tag_values;
    let sets_end = summary.sets_saturated_from.unwrap_or(summary.block_count);
    let set_count = summary.tag_sets as usize;
    // check_summary made sure the minimal records fit the body.
    let mut pair_sets: Vec<Vec<u32>> = vec![Vec::new(); tag_values as usize];
    let mut members = 0_usize;
    let mut offsets = Vec::with_capacity(set_count + 1);
    let mut deltas = Vec::new();
    let mut postings = 0_usize;
    offsets.push(0);
    for number in 0..set_count as u32 {
        let member_count = reader.take_varint()?;
        if member_count == 0 || member_count > tag_values {
            return Err(corrupt("tag set member count out of range"));
        }
        if member_count as usize > reader.bytes.len() {
            return Err(corrupt("tag set runs past the body"));
        }
        let mut member = 0_u32;
        for index in 0..member_count {
            let delta = reader.take_varint()?;
            if index > 0 && delta == 0 {
                return Err(corrupt("tag set members are not strictly increasing"));
            }
            member = member.checked_add(delta).ok_or_else(|| corrupt("tag set member overflows"))?;
            let Some(sets) = pair_sets.get_mut(member as usize) else {
                return Err(corrupt("tag set member is not an indexed pair"));
            };
            sets.push(number);
        }
        members += member_count as usize;

        let posting_count = reader.take_varint()?;
        if posting_count == 0 || posting_count > sets_end {
            return Err(corrupt("tag set posting count out of range"));
        }
        if posting_count as usize > reader.bytes.len() {
            return Err(corrupt("tag set postings run past the body"));
        }
        let start = reader.bytes;
        let mut position = reader.take_varint()?;
        for _ in 1..posting_count {
            let delta = reader.take_varint()?;
            if delta == 0 {
                return Err(corrupt("tag set postings are not strictly increasing"));
            }
            position = position.checked_add(delta).ok_or_else(|| corrupt("tag set posting overflows"))?;
        }
        if position >= sets_end {
            return Err(corrupt("tag set posting is past the blocks with sets"));
        }
        deltas.extend_from_slice(&start[..start.len() - reader.bytes.len()]);
        offsets.push(deltas.len() as u32);
        postings += posting_count as usize;
        if members + postings > summary.tag_set_cells_max as usize {
            return Err(corrupt("tag sets hold more cells than their cap"));
        }
    }
    Ok(TagSets::decoded(
        summary.tag_sets_max as usize,
        summary.tag_set_cells_max as usize,
        summary.sets_saturated_from,
        set_count,
        pair_sets,
        members,
        offsets,
        deltas,
        postings,
    ))
}

/// Largest `raw_bytes` that `block_count` blocks can hold.
fn raw_bytes_max(block_count: u32) -> u64 {
    u64::from(block_count) * BLOCK_RAW_BYTES_MAX as u64
}

#[cfg(test)]
fn varint_bytes(value: u32) -> usize {
    let significant_bits = 32 - value.leading_zeros() as usize;
    significant_bits.div_ceil(7).max(1)
}

fn put_varint(bytes: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        bytes.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
}

/// A cursor over the body; every read is bounds-checked and fails with
/// [`Error::Corrupt`], since the body length itself was verified.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize, what: &'static str) -> Result<&'a [u8], Error> {
        if count > self.bytes.len() {
            return Err(corrupt(what));
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    /// A u16 length, checked against `limit` before the string is read.
    fn take_string(&mut self, limit: usize, limit_name: &'static str, what: &'static str) -> Result<&'a str, Error> {
        let len = u16::from_le_bytes(array(self.take(2, "string length runs past the body")?, 0)) as usize;
        limits::check(limit_name, what, len, limit)?;
        let bytes = self.take(len, "string runs past the body")?;
        std::str::from_utf8(bytes).map_err(|_| corrupt("tag is not UTF-8"))
    }

    /// A minimal LEB128 u32.
    #[inline]
    fn take_varint(&mut self) -> Result<u32, Error> {
        // One and two bytes, nearly every posting, without the loop.
        match *self.bytes {
            [first, ..] if first < 0x80 => {
                self.bytes = &self.bytes[1..];
                return Ok(u32::from(first));
            }
            [first, second, ..] if second < 0x80 && second != 0 => {
                self.bytes = &self.bytes[2..];
                return Ok(u32::from(first & 0x7f) | (u32::from(second) << 7));
            }
            _ => {}
        }
        let mut value = 0_u32;
        for index in 0..VARINT_BYTES_MAX {
            let byte = self.take(1, "posting runs past the body")?[0];
            // The fifth byte holds bits 28..32: anything above 0x0f overflows
            // (or continues, which is longer than a u32 needs).
            if index == VARINT_BYTES_MAX - 1 && byte > 0x0f {
                return Err(corrupt("posting overflows u32"));
            }
            value |= u32::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                if index > 0 && byte == 0 {
                    return Err(corrupt("posting varint is not minimal"));
                }
                return Ok(value);
            }
        }
        Err(corrupt("posting overflows u32"))
    }
}

fn corrupt(what: &'static str) -> Error {
    Error::Corrupt { what }
}

/// `N` bytes of `bytes` at `offset`. Offsets are constants within records
/// whose length was checked, so an out-of-range slice is a programmer error.
fn array<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[offset..offset + N]);
    out
}

fn put(header: &mut [u8], offset: usize, value: &[u8]) {
    header[offset..offset + value.len()].copy_from_slice(value);
}

/// Entry point for the cargo-fuzz target of the index file: feeds `data` to
/// [`SegmentIndex::decode`] and [`decode_summary`], which must not panic,
/// and checks that an accepted file re-encodes to the very same bytes and
/// that its summary agrees with its body.
///
/// # Panics
/// When one of those properties fails: that is a bug for the fuzzer to report.
pub fn fuzz_decode(data: &[u8]) {
    let summary = decode_summary(data);
    let Ok(index) = SegmentIndex::decode(data) else {
        return;
    };
    let Ok(summary) = summary else {
        panic!("decode accepted a file whose header decode_summary refuses");
    };
    assert_eq!(summary.block_count as usize, index.blocks().len());
    assert_eq!(summary.tag_values as usize, index.tag_values());
    assert_eq!(summary.next_seq, index.next_seq());
    assert_eq!(summary.time_range(), index.time_range());
    assert_eq!(summary.data_end, index.data_end());
    assert!(summary.raw_bytes <= raw_bytes_max(summary.block_count));
    assert_eq!(summary.saturated_from, index.saturated_from());
    assert_eq!(summary.file_bytes(), data.len() as u64);
    match decode_origin_table(data, &summary) {
        Ok(origins) => assert!(&origins == index.origins(), "the origin table alone decodes differently"),
        Err(error) => panic!("decode accepted a file whose origin table does not decode alone: {error}"),
    }
    for (key, summary) in index.origins() {
        assert!(summary.watermark >= 1, "{key:?}");
        if let Some((first, last)) = summary.seqs {
            assert!(1 <= first && first <= last && last <= summary.watermark, "{key:?}");
        }
    }

    assert_eq!(summary.tag_sets as usize, index.tag_sets.len());
    assert_eq!(summary.sets_saturated_from, index.tag_sets.saturated_from);
    // Without its filters, the same index until they are loaded.
    let filters_offset = summary.filters_offset() as usize;
    match SegmentIndex::decode_without_filters(&data[..filters_offset]) {
        Ok(without) => {
            assert_eq!(without.filters_loaded(), summary.filters_bytes == 0);
            if let Err(error) = without.load_filters(&summary, &data[filters_offset..]) {
                panic!("decode accepted filters that load_filters refuses: {error}");
            }
            assert!(without == index, "decoding in two steps differs");
        }
        Err(error) => panic!("decode accepted a file whose body alone does not decode: {error}"),
    }

    let encoded = index.encode(summary.raw_bytes);
    // An older version re-encodes as the current one: compare what it
    // decodes to.
    if summary.version == FORMAT_VERSION {
        assert!(encoded == data, "re-encoding a decoded file changed its bytes");
    }
    match SegmentIndex::decode(&encoded) {
        Ok(again) => assert!(again == index, "decoding a re-encoded index changed it"),
        Err(error) => panic!("a re-encoded index does not decode: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::segment_index::tests::{next_meta, random_segment};
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn sample(tag_values_max: usize) -> SegmentIndex {
        let mut index = SegmentIndex::with_tag_values_max(7, tag_values_max);
        let tags: [&[(&str, &str)]; 5] = [
            &[("app", "web"), ("host", "a"), ("app", "web")],
            &[("env", "prod"), ("k=\0", "v=\u{e9}")],
            &[("app", "web"), ("env", "prod")],
            &[("app", "db"), ("host", "b"), ("trace", "1")],
            &[("app", "web"), ("trace", "2")],
        ];
        for (block, tags) in tags.iter().enumerate() {
            let block = block as i64;
            let meta = next_meta(&index, 3, block * 10 - 20, block * 10 - 11);
            index.push_block(meta, tags.iter().copied());
        }
        index
    }

    /// Encodes with a made-up `raw_bytes` that grows with the block count.
    fn encode(index: &SegmentIndex) -> Vec<u8> {
        index.encode(index.blocks().len() as u64 * 1000)
    }

    fn assert_round_trip(index: &SegmentIndex) -> Vec<u8> {
        let bytes = encode(index);
        let decoded = SegmentIndex::decode(&bytes).unwrap();
        assert_eq!(&decoded, index);
        assert_eq!(decoded.blocks(), index.blocks());
        assert_eq!(encode(&decoded), bytes);
        let summary = decode_summary(&bytes).unwrap();
        assert_eq!(summary.segment_first_seq, index.segment_first_seq());
        assert_eq!(summary.next_seq, index.next_seq());
        assert_eq!(summary.block_count as usize, index.blocks().len());
        assert_eq!(summary.tag_values as usize, index.tag_values());
        assert_eq!(summary.tag_values_max as usize, index.tag_values_max());
        assert_eq!(summary.saturated_from, index.saturated_from());
        assert_eq!(summary.time_range(), index.time_range());
        assert_eq!(summary.data_end, index.data_end());
        assert_eq!(summary.raw_bytes, index.blocks().len() as u64 * 1000);
        assert_eq!(summary.file_bytes(), bytes.len() as u64);
        assert_eq!(summary.body_crc, crc32fast::hash(&bytes[HEADER_BYTES..]));
        // Only the header is needed for the summary.
        assert_eq!(decode_summary(&bytes[..HEADER_BYTES]).unwrap(), summary);
        fuzz_decode(&bytes);
        bytes
    }

    #[test]
    fn round_trip_keeps_blocks_postings_and_summary() {
        let index = sample(INDEX_TAG_VALUES_PER_SEGMENT_MAX);
        let bytes = assert_round_trip(&index);
        let decoded = SegmentIndex::decode(&bytes).unwrap();
        for query in [
            &[("app", "web")][..],
            &[("app", "web"), ("env", "prod")],
            &[("k=\0", "v=\u{e9}")],
            &[("trace", "2")],
            &[("nope", "x")],
            &[],
        ] {
            assert_eq!(decoded.candidates(query, i64::MIN, i64::MAX), index.candidates(query, i64::MIN, i64::MAX));
            assert_eq!(decoded.candidates(query, -5, 15), index.candidates(query, -5, 15));
        }
        assert_eq!(decoded.candidates(&[("app", "web")], i64::MIN, i64::MAX), vec![0, 2, 4]);
    }

    #[test]
    fn round_trip_empty_and_saturated() {
        assert_round_trip(&SegmentIndex::new(1));
        assert_round_trip(&SegmentIndex::with_tag_values_max(u64::MAX, 0));
        let saturated = sample(3);
        assert_eq!(saturated.saturated_from(), Some(1));
        let bytes = assert_round_trip(&saturated);
        let decoded = SegmentIndex::decode(&bytes).unwrap();
        assert_eq!(decoded.candidates(&[("trace", "2")], i64::MIN, i64::MAX), vec![1, 2, 3, 4]);
        assert_eq!(decoded.candidates(&[("app", "web")], i64::MIN, i64::MAX), vec![0, 2, 4]);
    }

    #[test]
    fn round_trip_random_segments() {
        let mut rng = SmallRng::seed_from_u64(0x1dec0de);
        for round in 0..200 {
            let segment = random_segment(&mut rng, [0, 3, 10, 1000][round % 4]);
            assert_round_trip(&segment.index);
        }
    }

    #[test]
    fn round_trip_large_postings() {
        // Deltas and positions that need multi-byte varints.
        let mut index = SegmentIndex::new(1);
        for block in 0..20_000_u32 {
            let meta = next_meta(&index, 1, 0, 0);
            let tags = [("every", "block"), ("sparse", if block % 300 == 0 { "yes" } else { "no" })];
            index.push_block(meta, tags);
        }
        let bytes = assert_round_trip(&index);
        let decoded = SegmentIndex::decode(&bytes).unwrap();
        assert_eq!(decoded.postings("every", "block").map(<[u32]>::len), Some(20_000));
        assert_eq!(decoded.candidates(&[("sparse", "yes")], 0, 1).len(), 67);
    }

    /// The exact bytes of a tiny index, so an accidental format change fails
    /// here rather than on files already written.
    #[test]
    fn format_is_stable() {
        let mut index = SegmentIndex::with_tag_values_max(5, 9);
        index.push_block(
            BlockMeta { offset: 16, len: 32, first_seq: 5, entry_count: 2, min_ts: -1, max_ts: 3, origin: None },
            [("a", "b")],
        );
        let origin = Some(Origin { node: 3, shard: 4, first_seq: 10 });
        index.push_block(
            BlockMeta { offset: 48, len: 200, first_seq: 7, entry_count: 1, min_ts: 1, max_ts: 2, origin },
            [("a", "b"), ("c", "")],
        );
        // Node 1 shard 2 has no block here; its watermark is carried over.
        index.carry_watermarks(&BTreeMap::from([((1, 2), 70), ((3, 4), 9)]));
        let bytes = index.encode(300);
        let origins: &[u8] = &[
            // node 1 shard 2: watermark 70, no seqs here
            1, 0, 0, 0, 2, 0, 0, 0, 70, 0, 0, 0, 0, 0, 0, 0, //
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
            // node 3 shard 4: watermark 10, seqs 10..=10
            3, 0, 0, 0, 4, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, //
            10, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, //
        ];
        let body: &[u8] = &[
            // block 0: offset 16, len 32, entry_count 2, first_seq 5, min_ts -1, max_ts 3, no origin
            16, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, //
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0, 0, 0, 0, 0, //
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
            // block 1: offset 48, len 200, entry_count 1, first_seq 7, min_ts 1, max_ts 2,
            // origin first seq 10, node 3, shard 4
            48, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, //
            1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, //
            10, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, //
            // term a=b: postings [0, 1] as 0, delta 1
            1, 0, b'a', 1, 0, b'b', 2, 0, 0, 0, 0, 1, //
            // term c="": postings [1]
            1, 0, b'c', 0, 0, 1, 0, 0, 0, 1, //
            // set 0 {a=b}: 1 member, pair 0; 1 posting, block 0
            1, 0, 1, 0, //
            // set 1 {a=b, c=""}: 2 members, pairs 0 then delta 1; 1 posting, block 1
            2, 0, 1, 1, 1,
        ];
        let body: Vec<u8> = [origins, body].concat();
        let body_crc = crc32fast::hash(&body).to_le_bytes();
        let mut header = vec![];
        header.extend_from_slice(b"WRMI");
        header.extend_from_slice(&[4, 0, 0, 0]); // version 4, flags 0
        header.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0]); // segment_first_seq
        header.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]); // next_seq
        header.extend_from_slice(&[2, 0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0]); // block_count, tag_values, tag_values_max
        header.extend_from_slice(&[0xff; 4]); // saturated_from: never
        header.extend_from_slice(&[0xff; 8]); // min_ts -1
        header.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]); // max_ts
        header.extend_from_slice(&[248, 0, 0, 0, 0, 0, 0, 0]); // data_end
        header.extend_from_slice(&[44, 1, 0, 0, 0, 0, 0, 0]); // raw_bytes 300
        header.extend_from_slice(&[body.len() as u8, 0, 0, 0, 0, 0, 0, 0]); // body_bytes
        header.extend_from_slice(&body_crc);
        header.extend_from_slice(&[2, 0, 0, 0]); // origin_count
        header.extend_from_slice(&crc32fast::hash(origins).to_le_bytes()); // origins_crc
        header.extend_from_slice(&[2, 0, 0, 0]); // tag_sets
        header.extend_from_slice(&[0, 0, 0x10, 0]); // tag_sets_max 1 << 20
        header.extend_from_slice(&[0, 0, 0x80, 0]); // tag_set_cells_max 1 << 23
        header.extend_from_slice(&[0xff; 4]); // sets_saturated_from: never
        header.extend_from_slice(&[0; 4]); // filters_crc: crc32 of nothing
        header.extend_from_slice(&[0; 8]); // filters_bytes: no filter section
        header.extend_from_slice(&[0; 4]); // filter_probes
        let header_crc = crc32fast::hash(&header).to_le_bytes();
        header.extend_from_slice(&header_crc);
        assert_eq!(header.len(), HEADER_BYTES);
        assert_eq!(&bytes[..HEADER_BYTES], &header[..]);
        assert_eq!(&bytes[HEADER_BYTES..], &body[..]);
        assert_round_trip(&index);
        let summary = decode_summary(&bytes).unwrap();
        assert_eq!(
            decode_origin_table(&bytes[..summary.origin_table_end()], &summary).unwrap(),
            BTreeMap::from([
                ((1, 2), OriginSummary { watermark: 70, seqs: None }),
                ((3, 4), OriginSummary { watermark: 10, seqs: Some((10, 10)) }),
            ])
        );
    }

    #[test]
    fn origin_table_must_agree_with_the_blocks() {
        let mut index = SegmentIndex::new(5);
        let origin = |first_seq| Some(Origin { node: 3, shard: 4, first_seq });
        index.push_block(BlockMeta { origin: origin(10), ..next_meta(&index, 2, 0, 0) }, []);
        index.push_block(BlockMeta { origin: origin(12), ..next_meta(&index, 3, 0, 0) }, []);
        assert_eq!(index.origins()[&(3, 4)], OriginSummary { watermark: 14, seqs: Some((10, 14)) });
        let bytes = assert_round_trip(&index);
        let record = HEADER_BYTES;
        let edits: &[(usize, u64, &str)] = &[
            (record + ORIGIN_LAST_SEQ_OFFSET, 13, "origin table disagrees with the blocks"),
            (record + ORIGIN_FIRST_SEQ_OFFSET, 0, "origin seq range is out of order"),
            (record + ORIGIN_WATERMARK_OFFSET, 13, "origin seq range is out of order"),
            (record + ORIGIN_WATERMARK_OFFSET, 0, "origin watermark is 0"),
        ];
        for &(offset, value, what) in edits {
            let mut edited = bytes.clone();
            edited[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
            resign(&mut edited);
            assert_eq!(SegmentIndex::decode(&edited), Err(Error::Corrupt { what }), "{what}");
        }
        // A block whose origin has no record: the second block's node.
        let mut edited = bytes.clone();
        let block = HEADER_BYTES + ORIGIN_RECORD_BYTES + BLOCK_META_BYTES;
        edited[block + BLOCK_ORIGIN_NODE_OFFSET] = 9;
        resign(&mut edited);
        assert!(matches!(SegmentIndex::decode(&edited), Err(Error::Corrupt { .. })));
        // An origin node without an origin seq.
        let mut edited = bytes.clone();
        edited[block + BLOCK_ORIGIN_FIRST_SEQ_OFFSET..block + BLOCK_ORIGIN_NODE_OFFSET].fill(0);
        resign(&mut edited);
        assert_eq!(
            SegmentIndex::decode(&edited),
            Err(Error::Corrupt { what: "origin node or shard set without an origin seq" })
        );
    }

    #[test]
    fn version_1_is_outdated_and_refused() {
        let mut bytes = encode(&sample(100));
        bytes[VERSION_OFFSET..FLAGS_OFFSET].copy_from_slice(&1_u16.to_le_bytes());
        let error = SegmentIndex::decode(&bytes).unwrap_err();
        assert_eq!(error, Error::OutdatedVersion(1));
        assert!(error.to_string().contains("rebuilds the index"), "{error}");
        assert_eq!(decode_summary(&bytes), Err(Error::OutdatedVersion(1)));
    }

    #[test]
    #[should_panic(expected = "raw_bytes is over")]
    fn encode_rejects_impossible_raw_bytes() {
        SegmentIndex::new(1).encode(1);
    }

    #[test]
    fn every_single_byte_flip_is_an_error() {
        for bytes in [encode(&sample(100)), encode(&sample(3)), encode(&SegmentIndex::new(3))] {
            for position in 0..bytes.len() {
                for mask in [0x01, 0x80, 0xff] {
                    let mut flipped = bytes.clone();
                    flipped[position] ^= mask;
                    assert!(SegmentIndex::decode(&flipped).is_err(), "flip {mask:#x} at {position} accepted");
                    fuzz_decode(&flipped);
                    if position < HEADER_BYTES {
                        assert!(decode_summary(&flipped).is_err(), "header flip at {position} accepted");
                    }
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode(&sample(100));
        for len in 0..bytes.len() {
            let error = SegmentIndex::decode(&bytes[..len]).unwrap_err();
            assert!(matches!(error, Error::Truncated { .. }), "length {len}: {error:?}");
            assert_eq!(decode_summary(&bytes[..len]).is_ok(), len >= HEADER_BYTES, "length {len}");
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode(&sample(100));
        bytes.push(0);
        assert_eq!(SegmentIndex::decode(&bytes), Err(Error::Corrupt { what: "bytes after the body" }));
    }

    #[test]
    fn other_version_says_upgrade_required() {
        let mut bytes = encode(&sample(100));
        let newer = FORMAT_VERSION + 1;
        bytes[VERSION_OFFSET..FLAGS_OFFSET].copy_from_slice(&newer.to_le_bytes());
        let header_crc = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
        bytes[HEADER_CRC_OFFSET..HEADER_BYTES].copy_from_slice(&header_crc.to_le_bytes());
        let error = SegmentIndex::decode(&bytes).unwrap_err();
        assert_eq!(error, Error::UnsupportedVersion(newer));
        assert!(error.to_string().contains("upgrade required"), "{error}");
        assert_eq!(decode_summary(&bytes), Err(Error::UnsupportedVersion(newer)));
    }

    #[test]
    fn version_3_reads_as_version_4() {
        let index = sample(100);
        let mut bytes = encode(&index);
        bytes[VERSION_OFFSET..FLAGS_OFFSET].copy_from_slice(&FORMAT_VERSION_3.to_le_bytes());
        let header_crc = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
        bytes[HEADER_CRC_OFFSET..HEADER_BYTES].copy_from_slice(&header_crc.to_le_bytes());
        assert_eq!(decode_summary(&bytes).unwrap().version, FORMAT_VERSION_3);
        let decoded = SegmentIndex::decode(&bytes).unwrap();
        assert!(decoded == index);
        assert_eq!(
            decode_summary(&encode(&decoded)).unwrap().version,
            FORMAT_VERSION,
            "written as the current version"
        );
    }

    #[test]
    fn bad_magic_and_oversized_files() {
        let mut bytes = encode(&sample(100));
        bytes[0] = b'X';
        assert_eq!(SegmentIndex::decode(&bytes), Err(Error::BadMagic));
        let too_big = vec![0_u8; INDEX_FILE_BYTES_MAX + 1];
        assert!(matches!(SegmentIndex::decode(&too_big), Err(Error::Limit(_))));
    }

    /// Re-signs a header after editing it, so that the checks behind the crc
    /// are reached.
    fn resign(bytes: &mut [u8]) {
        let origin_count = u32::from_le_bytes(array(bytes, ORIGIN_COUNT_OFFSET)) as usize;
        let table_end = HEADER_BYTES.saturating_add(origin_count.saturating_mul(ORIGIN_RECORD_BYTES));
        if let Some(table) = bytes.get(HEADER_BYTES..table_end) {
            let origins_crc = crc32fast::hash(table);
            bytes[ORIGINS_CRC_OFFSET..ORIGINS_CRC_OFFSET + 4].copy_from_slice(&origins_crc.to_le_bytes());
        }
        // The body ends where the filter section starts, if the header's
        // filter length fits; else the body is the rest.
        let filters_bytes = u64::from_le_bytes(array(bytes, FILTERS_BYTES_OFFSET));
        let body_end = usize::try_from(filters_bytes)
            .ok()
            .and_then(|filters| bytes.len().checked_sub(filters))
            .filter(|&end| end >= HEADER_BYTES)
            .unwrap_or(bytes.len());
        let body_crc = crc32fast::hash(&bytes[HEADER_BYTES..body_end]);
        bytes[BODY_CRC_OFFSET..ORIGIN_COUNT_OFFSET].copy_from_slice(&body_crc.to_le_bytes());
        let filters_crc = crc32fast::hash(&bytes[body_end..]);
        bytes[FILTERS_CRC_OFFSET..FILTERS_CRC_OFFSET + 4].copy_from_slice(&filters_crc.to_le_bytes());
        let header_crc = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
        bytes[HEADER_CRC_OFFSET..HEADER_BYTES].copy_from_slice(&header_crc.to_le_bytes());
    }

    #[test]
    fn inconsistent_but_well_signed_files_are_corrupt() {
        let bytes = encode(&sample(100));
        let edits: &[(usize, &[u8], &str)] = &[
            (FLAGS_OFFSET, &[1, 0], "flags"),
            (NEXT_SEQ_OFFSET, &[0; 8], "next_seq"),
            (BLOCK_COUNT_OFFSET, &[0xff, 0xff, 0xff, 0x7f], "huge block_count"),
            (TAG_VALUES_OFFSET, &[0xff, 0xff, 0, 0], "huge tag_values"),
            (TAG_VALUES_MAX_OFFSET, &[0xff, 0xff, 0xff, 0xff], "huge tag_values_max"),
            (SATURATED_FROM_OFFSET, &[0, 0, 0, 0], "saturated below the cap"),
            (MIN_TS_OFFSET, &[0; 8], "min_ts"),
            (DATA_END_OFFSET, &[1, 0, 0, 0, 0, 0, 0, 0], "data_end"),
            (RAW_BYTES_OFFSET, &[0xff; 8], "huge raw_bytes"),
            (BODY_BYTES_OFFSET, &[0xff; 8], "huge body_bytes"),
            // Body: block 1's first_seq, the first term's key length, its posting count.
            (HEADER_BYTES + BLOCK_META_BYTES + BLOCK_FIRST_SEQ_OFFSET, &[0], "first_seq"),
            (HEADER_BYTES + 5 * BLOCK_META_BYTES, &[0xff, 0xff], "key length"),
            (HEADER_BYTES + 5 * BLOCK_META_BYTES + 2 + 3 + 2 + 2, &[0xff, 0xff, 0xff, 0xff], "posting count"),
        ];
        for &(offset, replacement, name) in edits {
            let mut edited = bytes.clone();
            edited[offset..offset + replacement.len()].copy_from_slice(replacement);
            resign(&mut edited);
            let result = SegmentIndex::decode(&edited);
            assert!(matches!(result, Err(Error::Corrupt { .. } | Error::Limit(_))), "{name}: {result:?}");
            fuzz_decode(&edited);
        }
    }

    #[test]
    fn unsorted_terms_and_non_minimal_varints_are_corrupt() {
        // Two terms "a"="b" then "c"="" (see format_is_stable). Versions 3 and 4
        // keep terms in the order they were indexed, so "d"="b" before
        // "c"="" is fine, but a pair twice is not.
        let mut index = SegmentIndex::new(5);
        index.push_block(next_meta(&index, 1, 0, 0), [("a", "b")]);
        index.push_block(next_meta(&index, 1, 0, 0), [("a", "b"), ("c", "")]);
        let bytes = encode(&index);
        let terms = HEADER_BYTES + 2 * BLOCK_META_BYTES;
        let mut unsorted = bytes.clone();
        unsorted[terms + 2] = b'd';
        resign(&mut unsorted);
        let decoded = SegmentIndex::decode(&unsorted).unwrap();
        assert_eq!(decoded.postings("d", "b"), Some(&[0, 1][..]));
        assert_eq!(encode(&decoded), unsorted);
        let mut duplicate = bytes.clone();
        duplicate[terms + 12 + 2] = b'a';
        duplicate[terms + 12 + 3] = 1;
        let mut duplicate: Vec<u8> = [&duplicate[..terms + 12 + 5], b"b", &duplicate[terms + 12 + 5..]].concat();
        let body_bytes = (duplicate.len() - HEADER_BYTES) as u64;
        duplicate[BODY_BYTES_OFFSET..BODY_CRC_OFFSET].copy_from_slice(&body_bytes.to_le_bytes());
        resign(&mut duplicate);
        assert_eq!(SegmentIndex::decode(&duplicate), Err(Error::Corrupt { what: "a pair is indexed twice" }));

        // Postings of "a"="b" are [0, 1], stored as 0 then delta 1.
        let posting = terms + 2 + 1 + 2 + 1 + 4;
        assert_eq!(bytes[posting..posting + 2], [0, 1]);
        for (delta, what) in [(0, "postings are not strictly increasing"), (2, "posting is past the last block")] {
            let mut edited = bytes.clone();
            edited[posting + 1] = delta;
            resign(&mut edited);
            assert_eq!(SegmentIndex::decode(&edited), Err(Error::Corrupt { what }));
        }
        // Posting 0 as a two-byte varint 0x80 0x00, file grown by one byte.
        let mut long: Vec<u8> = [&bytes[..posting], &[0x80, 0x00], &bytes[posting + 1..]].concat();
        let body_bytes = (long.len() - HEADER_BYTES) as u64;
        long[BODY_BYTES_OFFSET..BODY_CRC_OFFSET].copy_from_slice(&body_bytes.to_le_bytes());
        resign(&mut long);
        assert_eq!(SegmentIndex::decode(&long), Err(Error::Corrupt { what: "posting varint is not minimal" }));
    }

    #[test]
    fn pair_indexed_after_saturation_is_corrupt() {
        // Cap 1: "a"="b" is indexed in block 0, "c"="" saturates block 1.
        let mut index = SegmentIndex::with_tag_values_max(5, 1);
        index.push_block(next_meta(&index, 1, 0, 0), [("a", "b")]);
        index.push_block(next_meta(&index, 1, 0, 0), [("c", "")]);
        index.push_block(next_meta(&index, 1, 0, 0), [("a", "b")]);
        assert_eq!(index.saturated_from(), Some(1));
        let bytes = assert_round_trip(&index);
        // Rewrite the postings of "a"="b" from [0, 2] to [2]: a pair first
        // seen after block 1 could not have been indexed.
        let posting = HEADER_BYTES + 3 * BLOCK_META_BYTES + 2 + 1 + 2 + 1 + 4;
        assert_eq!(bytes[posting..posting + 2], [0, 2]);
        let mut edited: Vec<u8> = [&bytes[..posting - 4], &[1, 0, 0, 0, 2], &bytes[posting + 2..]].concat();
        let body_bytes = (edited.len() - HEADER_BYTES) as u64;
        edited[BODY_BYTES_OFFSET..BODY_CRC_OFFSET].copy_from_slice(&body_bytes.to_le_bytes());
        resign(&mut edited);
        assert_eq!(
            SegmentIndex::decode(&edited),
            Err(Error::Corrupt { what: "a pair is indexed that was first seen after saturation" })
        );
    }

    #[test]
    fn seeded_bit_flips_of_random_segments() {
        const SEED: u64 = 0xb17_f11b;
        let mut rng = SmallRng::seed_from_u64(SEED);
        for round in 0..100 {
            let bytes = encode(&random_segment(&mut rng, [2, 50][round % 2]).index);
            for _ in 0..50 {
                let mut flipped = bytes.clone();
                let bit = rng.gen_range(0..bytes.len() * 8);
                flipped[bit / 8] ^= 1 << (bit % 8);
                assert!(SegmentIndex::decode(&flipped).is_err(), "seed {SEED:#x} round {round} bit {bit}");
            }
        }
    }

    #[test]
    fn varints_round_trip() {
        for value in [0, 1, 127, 128, 16_383, 16_384, 1 << 21, (1 << 28) - 1, 1 << 28, u32::MAX] {
            let mut bytes = Vec::new();
            put_varint(&mut bytes, value);
            assert_eq!(bytes.len(), varint_bytes(value), "{value}");
            let mut reader = Reader { bytes: &bytes };
            assert_eq!(reader.take_varint(), Ok(value));
            assert!(reader.bytes.is_empty());
        }
        for bad in [&[0x80, 0x80, 0x80, 0x80, 0x10][..], &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &[0x81, 0x00], &[0x80]]
        {
            assert!(Reader { bytes: bad }.take_varint().is_err(), "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            fuzz_decode(&data);
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_magic_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            bytes.extend_from_slice(&data);
            fuzz_decode(&bytes);
        }

        #[test]
        fn mutated_encodings_never_panic(
            seed in any::<u64>(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            resigned in any::<bool>(),
            truncate in proptest::option::of(any::<usize>()),
        ) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut bytes = encode(&random_segment(&mut rng, 6).index);
            for (position, value) in edits {
                let len = bytes.len();
                bytes[position % len] = value;
            }
            if let Some(len) = truncate {
                bytes.truncate(len % (bytes.len() + 1));
            }
            // Re-signing reaches the structural checks behind the crcs.
            if resigned && bytes.len() >= HEADER_BYTES {
                resign(&mut bytes);
            }
            fuzz_decode(&bytes);
        }
    }
}
