//! The block codec: a batch of entries as one checksummed, compressed record.
//!
//! Pure code: no I/O, no executor. The segment writer, recovery and the
//! readers all go through [`encode_block`] and [`parse_header`]/[`decode_block`].
//!
//! ```text
//! offset size field              meaning
//!      0    4 magic              b"WRMB"
//!      4    2 format_version     1
//!      6    1 codec              0 = none, 1 = LZ4 block (lz4_flex)
//!      7    1 flags              bit 0: origin fields are set (replicated data)
//!      8    8 first_seq          seq of the first entry in this shard
//!     16    8 min_ts             smallest timestamp_ns in the block
//!     24    8 max_ts             largest timestamp_ns in the block
//!     32    8 origin_first_seq   seq of the first entry on its origin shard
//!     40    4 entry_count        >= 1
//!     44    4 raw_len            payload bytes before compression
//!     48    4 stored_len         payload bytes that follow the header
//!     52    4 origin_node        node that first stored the entries
//!     56    4 origin_shard       shard that first stored the entries
//!     60    4 crc32              crc32 of bytes [0, 60) and of the stored payload
//!     64      payload            stored_len bytes
//! ```
//!
//! Little-endian everywhere. The uncompressed payload is `entry_count`
//! length-delimited protobuf `LogEntry` messages (varint length, then the
//! message) in seq order. Entries are stored without `seq`, `node_id` and
//! `shard`: the header gives them (`first_seq + i`, or `origin_first_seq + i`
//! and the origin node/shard for replicated blocks), so they cost no bytes.

use crate::limits::{self, LimitExceeded};
use crate::proto::LogEntry;

/// The four bytes that open every block.
pub const MAGIC: [u8; 4] = *b"WRMB";
/// The block format this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 4;
const CODEC_OFFSET: usize = VERSION_OFFSET + 2;
const FLAGS_OFFSET: usize = CODEC_OFFSET + 1;
const FIRST_SEQ_OFFSET: usize = FLAGS_OFFSET + 1;
const MIN_TS_OFFSET: usize = FIRST_SEQ_OFFSET + 8;
const MAX_TS_OFFSET: usize = MIN_TS_OFFSET + 8;
const ORIGIN_FIRST_SEQ_OFFSET: usize = MAX_TS_OFFSET + 8;
const ENTRY_COUNT_OFFSET: usize = ORIGIN_FIRST_SEQ_OFFSET + 8;
const RAW_LEN_OFFSET: usize = ENTRY_COUNT_OFFSET + 4;
const STORED_LEN_OFFSET: usize = RAW_LEN_OFFSET + 4;
const ORIGIN_NODE_OFFSET: usize = STORED_LEN_OFFSET + 4;
const ORIGIN_SHARD_OFFSET: usize = ORIGIN_NODE_OFFSET + 4;
const CRC_OFFSET: usize = ORIGIN_SHARD_OFFSET + 4;
/// Size of the fixed block header.
pub const HEADER_BYTES: usize = CRC_OFFSET + 4;

const _: () = assert!(HEADER_BYTES == 64);
// The u64 fields sit on 8-byte boundaries, the u32 fields on 4-byte ones.
const _: () = assert!(FIRST_SEQ_OFFSET % 8 == 0 && ORIGIN_FIRST_SEQ_OFFSET % 8 == 0);
const _: () = assert!(ENTRY_COUNT_OFFSET % 4 == 0 && CRC_OFFSET % 4 == 0);

const FLAG_ORIGIN: u8 = 1;

/// How a block's payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is.
    None = 0,
    /// LZ4 block format (lz4_flex), no size prefix: `raw_len` gives the size.
    Lz4 = 1,
}

/// Where replicated entries were first stored. Local blocks have none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Node that first stored the entries.
    pub node: u32,
    /// Shard on that node.
    pub shard: u32,
    /// Origin seq of the block's first entry; the block covers
    /// `first_seq .. first_seq + entry_count` on the origin shard.
    pub first_seq: u64,
}

/// The decoded fixed header of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// Payload codec.
    pub codec: Codec,
    /// Seq of the first entry in the storing shard.
    pub first_seq: u64,
    /// Number of entries, at least 1.
    pub entry_count: u32,
    /// Smallest timestamp in the block.
    pub min_ts: i64,
    /// Largest timestamp in the block.
    pub max_ts: i64,
    /// Uncompressed payload bytes.
    pub raw_len: u32,
    /// Payload bytes following the header on disk.
    pub stored_len: u32,
    /// Set for replicated data.
    pub origin: Option<Origin>,
    /// The checksum as stored.
    pub crc: u32,
}

impl BlockHeader {
    /// Bytes the whole block occupies: header plus stored payload.
    pub fn block_bytes(&self) -> usize {
        HEADER_BYTES + self.stored_len as usize
    }

    /// Seq after the last entry of the block.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + u64::from(self.entry_count)
    }
}

/// Why bytes are not a valid block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The header is all zero bytes: never-written space, the clean end of a log.
    #[error("no block here (zero bytes)")]
    Zero,
    /// Fewer bytes than the header or payload needs.
    #[error("block truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the block needs.
        needed: usize,
        /// Bytes that were there.
        available: usize,
    },
    /// The first four bytes are not [`MAGIC`].
    #[error("bad block magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// Written by another format version.
    #[error("block format version {0} is not supported (this build reads {FORMAT_VERSION}); upgrade required")]
    UnsupportedVersion(u16),
    /// A header field is out of range.
    #[error("corrupt block header: {0}")]
    Corrupt(&'static str),
    /// A length or count is over a limit.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// The stored checksum does not match the bytes.
    #[error("block checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The crc in the header.
        stored: u32,
        /// The crc of the bytes read.
        computed: u32,
    },
    /// The payload does not decode to `entry_count` entries.
    #[error("corrupt block payload: {0}")]
    Payload(String),
}

fn read_u16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

/// Parses and range-checks the header at the start of `bytes` (at least
/// [`HEADER_BYTES`] long). It does not verify the crc, which covers the
/// payload too: [`verify_block`] does.
pub fn parse_header(bytes: &[u8]) -> Result<BlockHeader, BlockError> {
    if bytes.len() < HEADER_BYTES {
        return Err(BlockError::Truncated { needed: HEADER_BYTES, available: bytes.len() });
    }
    let header = &bytes[..HEADER_BYTES];
    let magic = [header[0], header[1], header[2], header[3]];
    if magic != MAGIC {
        if header.iter().all(|&byte| byte == 0) {
            return Err(BlockError::Zero);
        }
        return Err(BlockError::BadMagic(magic));
    }
    let version = read_u16(header, VERSION_OFFSET);
    if version != FORMAT_VERSION {
        return Err(BlockError::UnsupportedVersion(version));
    }
    let codec = match header[CODEC_OFFSET] {
        0 => Codec::None,
        1 => Codec::Lz4,
        _ => return Err(BlockError::Corrupt("unknown codec")),
    };
    let flags = header[FLAGS_OFFSET];
    if flags & !FLAG_ORIGIN != 0 {
        return Err(BlockError::Corrupt("unknown flags"));
    }
    let first_seq = read_u64(header, FIRST_SEQ_OFFSET);
    let min_ts = read_u64(header, MIN_TS_OFFSET) as i64;
    let max_ts = read_u64(header, MAX_TS_OFFSET) as i64;
    let origin_first_seq = read_u64(header, ORIGIN_FIRST_SEQ_OFFSET);
    let entry_count = read_u32(header, ENTRY_COUNT_OFFSET);
    let raw_len = read_u32(header, RAW_LEN_OFFSET);
    let stored_len = read_u32(header, STORED_LEN_OFFSET);
    let origin_node = read_u32(header, ORIGIN_NODE_OFFSET);
    let origin_shard = read_u32(header, ORIGIN_SHARD_OFFSET);
    let crc = read_u32(header, CRC_OFFSET);

    if first_seq == 0 {
        return Err(BlockError::Corrupt("first_seq is 0"));
    }
    if entry_count == 0 {
        return Err(BlockError::Corrupt("entry_count is 0"));
    }
    if first_seq.checked_add(u64::from(entry_count)).is_none() {
        return Err(BlockError::Corrupt("seq range overflows"));
    }
    if min_ts > max_ts {
        return Err(BlockError::Corrupt("min_ts > max_ts"));
    }
    limits::check("BLOCK_ENTRIES_MAX", "block entry count", entry_count as usize, limits::BLOCK_ENTRIES_MAX)?;
    limits::check("BLOCK_RAW_BYTES_MAX", "block raw length", raw_len as usize, limits::BLOCK_RAW_BYTES_MAX)?;
    limits::check(
        "BLOCK_STORED_BYTES_MAX",
        "block stored length",
        stored_len as usize,
        limits::BLOCK_STORED_BYTES_MAX,
    )?;
    if codec == Codec::None && stored_len != raw_len {
        return Err(BlockError::Corrupt("uncompressed block with stored_len != raw_len"));
    }
    // Every entry takes at least its one-byte length prefix.
    if (raw_len as u64) < u64::from(entry_count) {
        return Err(BlockError::Corrupt("raw_len smaller than entry_count"));
    }
    let origin = if flags & FLAG_ORIGIN != 0 {
        if origin_first_seq == 0 || origin_first_seq.checked_add(u64::from(entry_count)).is_none() {
            return Err(BlockError::Corrupt("bad origin seq range"));
        }
        Some(Origin { node: origin_node, shard: origin_shard, first_seq: origin_first_seq })
    } else {
        if origin_node != 0 || origin_shard != 0 || origin_first_seq != 0 {
            return Err(BlockError::Corrupt("origin fields set without the origin flag"));
        }
        None
    };
    Ok(BlockHeader { codec, first_seq, entry_count, min_ts, max_ts, raw_len, stored_len, origin, crc })
}

fn block_crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..CRC_OFFSET]);
    hasher.update(payload);
    hasher.finalize()
}

/// Parses the header at the start of `bytes` and verifies the crc over the
/// header and the payload that follows it. On success the whole block,
/// `bytes[..header.block_bytes()]`, is intact.
pub fn verify_block(bytes: &[u8]) -> Result<BlockHeader, BlockError> {
    let header = parse_header(bytes)?;
    let needed = header.block_bytes();
    if bytes.len() < needed {
        return Err(BlockError::Truncated { needed, available: bytes.len() });
    }
    let computed = block_crc(&bytes[..HEADER_BYTES], &bytes[HEADER_BYTES..needed]);
    if computed != header.crc {
        return Err(BlockError::Checksum { stored: header.crc, computed });
    }
    Ok(header)
}

/// Decompresses a verified block's payload into `raw` (cleared first).
pub fn decompress_payload(header: &BlockHeader, block: &[u8], raw: &mut Vec<u8>) -> Result<(), BlockError> {
    let stored = &block[HEADER_BYTES..header.block_bytes()];
    raw.clear();
    match header.codec {
        Codec::None => raw.extend_from_slice(stored),
        Codec::Lz4 => {
            raw.resize(header.raw_len as usize, 0);
            let written = lz4_flex::block::decompress_into(stored, raw)
                .map_err(|error| BlockError::Payload(format!("lz4: {error}")))?;
            if written != header.raw_len as usize {
                return Err(BlockError::Payload(format!("lz4 gave {written} bytes, header says {}", header.raw_len)));
            }
        }
    }
    Ok(())
}

/// Calls `visit(seq, entry bytes)` for each entry of an uncompressed payload,
/// checking that there are exactly `header.entry_count` of them. The entry
/// bytes are one protobuf `LogEntry` without seq, node and shard.
pub fn for_each_entry<'a>(
    header: &BlockHeader,
    raw: &'a [u8],
    mut visit: impl FnMut(u64, &'a [u8]) -> Result<(), BlockError>,
) -> Result<(), BlockError> {
    let mut rest = raw;
    for index in 0..u64::from(header.entry_count) {
        let (length, prefix) = read_varint(rest).ok_or(BlockError::Payload("bad entry length prefix".into()))?;
        rest = &rest[prefix..];
        let length = usize::try_from(length).map_err(|_| BlockError::Payload("entry length overflows".into()))?;
        if length > rest.len() {
            return Err(BlockError::Payload(format!("entry {index} runs past the payload")));
        }
        let (entry, after) = rest.split_at(length);
        visit(header.first_seq + index, entry)?;
        rest = after;
    }
    if !rest.is_empty() {
        return Err(BlockError::Payload(format!("{} bytes after the last entry", rest.len())));
    }
    Ok(())
}

/// Decodes every entry of a verified block, filling in seq, node and shard
/// from the header (`node`/`shard` are the storing shard's, used when the
/// block has no origin).
pub fn decode_block(block: &[u8], node: u32, shard: u32) -> Result<(BlockHeader, Vec<LogEntry>), BlockError> {
    let header = verify_block(block)?;
    let mut raw = Vec::new();
    decompress_payload(&header, block, &mut raw)?;
    let mut entries = Vec::with_capacity(header.entry_count as usize);
    for_each_entry(&header, &raw, |seq, bytes| {
        entries.push(decode_entry(&header, seq, bytes, node, shard)?);
        Ok(())
    })?;
    Ok((header, entries))
}

/// Decodes one entry's bytes (from [`for_each_entry`]) into a full
/// `LogEntry` carrying its global id.
pub fn decode_entry(
    header: &BlockHeader,
    seq: u64,
    bytes: &[u8],
    node: u32,
    shard: u32,
) -> Result<LogEntry, BlockError> {
    use prost::Message;
    let mut entry = LogEntry::decode(bytes).map_err(|error| BlockError::Payload(format!("entry {seq}: {error}")))?;
    match header.origin {
        Some(origin) => {
            entry.seq = origin.first_seq + (seq - header.first_seq);
            entry.node_id = origin.node;
            entry.shard = origin.shard;
        }
        None => {
            entry.seq = seq;
            entry.node_id = node;
            entry.shard = shard;
        }
    }
    Ok(entry)
}

fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (index, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

/// What [`encode_block`] needs besides the payload.
#[derive(Clone, Copy, Debug)]
pub struct BlockSpec {
    /// Seq of the first entry in the storing shard.
    pub first_seq: u64,
    /// Number of entries in the payload.
    pub entry_count: u32,
    /// Smallest timestamp.
    pub min_ts: i64,
    /// Largest timestamp.
    pub max_ts: i64,
    /// Set for replicated data.
    pub origin: Option<Origin>,
}

/// Largest number of bytes [`encode_block`] writes for `raw_len` payload bytes.
///
/// This is lz4_flex's own bound (about 1.1x plus 20 bytes), which
/// `compress_into` insists on for its output buffer; what is actually stored
/// is never more than the raw payload, because incompressible payloads are
/// stored as is.
pub const fn encoded_bytes_max(raw_len: usize) -> usize {
    HEADER_BYTES + lz4_flex::block::get_maximum_output_size(raw_len)
}

/// Encodes one block into `out` (at least `encoded_bytes_max(raw.len())`
/// long) and returns the bytes used. `raw` is the concatenation of
/// `spec.entry_count` length-delimited entries ([`encode_entry`]).
///
/// The payload is LZ4-compressed, unless that would not save space, in
/// which case it is stored as is (incompressible bodies cost no inflation).
pub fn encode_block(spec: &BlockSpec, raw: &[u8], out: &mut [u8]) -> usize {
    assert!(spec.entry_count >= 1, "a block holds at least one entry");
    assert!(spec.first_seq >= 1, "seqs start at 1");
    assert!(spec.min_ts <= spec.max_ts);
    assert!(raw.len() <= limits::BLOCK_RAW_BYTES_MAX, "caller splits batches into blocks");
    assert!(spec.entry_count as usize <= limits::BLOCK_ENTRIES_MAX);
    assert!(out.len() >= encoded_bytes_max(raw.len()));

    let (header, payload) = out.split_at_mut(HEADER_BYTES);
    let compressed = lz4_flex::block::compress_into(raw, payload).unwrap_or(usize::MAX);
    let (codec, stored_len) = if compressed < raw.len() {
        (Codec::Lz4, compressed)
    } else {
        payload[..raw.len()].copy_from_slice(raw);
        (Codec::None, raw.len())
    };

    header[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&MAGIC);
    header[VERSION_OFFSET..CODEC_OFFSET].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[CODEC_OFFSET] = codec as u8;
    header[FLAGS_OFFSET] = if spec.origin.is_some() { FLAG_ORIGIN } else { 0 };
    header[FIRST_SEQ_OFFSET..MIN_TS_OFFSET].copy_from_slice(&spec.first_seq.to_le_bytes());
    header[MIN_TS_OFFSET..MAX_TS_OFFSET].copy_from_slice(&spec.min_ts.to_le_bytes());
    header[MAX_TS_OFFSET..ORIGIN_FIRST_SEQ_OFFSET].copy_from_slice(&spec.max_ts.to_le_bytes());
    let origin = spec.origin.unwrap_or(Origin { node: 0, shard: 0, first_seq: 0 });
    header[ORIGIN_FIRST_SEQ_OFFSET..ENTRY_COUNT_OFFSET].copy_from_slice(&origin.first_seq.to_le_bytes());
    header[ENTRY_COUNT_OFFSET..RAW_LEN_OFFSET].copy_from_slice(&spec.entry_count.to_le_bytes());
    header[RAW_LEN_OFFSET..STORED_LEN_OFFSET].copy_from_slice(&(raw.len() as u32).to_le_bytes());
    header[STORED_LEN_OFFSET..ORIGIN_NODE_OFFSET].copy_from_slice(&(stored_len as u32).to_le_bytes());
    header[ORIGIN_NODE_OFFSET..ORIGIN_SHARD_OFFSET].copy_from_slice(&origin.node.to_le_bytes());
    header[ORIGIN_SHARD_OFFSET..CRC_OFFSET].copy_from_slice(&origin.shard.to_le_bytes());
    let crc = block_crc(header, &payload[..stored_len]);
    header[CRC_OFFSET..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());

    let block_len = HEADER_BYTES + stored_len;
    // Pair the assertion: what we wrote reads back as the block we meant.
    debug_assert_eq!(verify_block(&out[..block_len]).map(|h| h.first_seq), Ok(spec.first_seq));
    block_len
}

/// A borrowed entry to append: nothing is copied until it is encoded.
#[derive(Clone, Copy, Debug)]
pub struct EntryRef<'a> {
    /// Nanoseconds since the Unix epoch; 0 means "now" to the shard.
    pub timestamp_ns: i64,
    /// `key=value` tags; keys are unique within an entry.
    pub tags: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

/// Why an entry cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A size or count is over its limit.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// A tag key is empty.
    #[error("empty tag key")]
    EmptyTagKey,
    /// Two tags share a key.
    #[error("duplicate tag key {0:?}")]
    DuplicateTagKey(String),
}

/// Checks an entry against the limits, before anything is allocated for it.
pub fn validate_entry(entry: &EntryRef<'_>) -> Result<(), EntryError> {
    limits::check("ENTRY_BODY_BYTES_MAX", "entry body bytes", entry.body.len(), limits::ENTRY_BODY_BYTES_MAX)?;
    limits::check("ENTRY_TAGS_MAX", "entry tag count", entry.tags.len(), limits::ENTRY_TAGS_MAX)?;
    for (index, (key, value)) in entry.tags.iter().enumerate() {
        if key.is_empty() {
            return Err(EntryError::EmptyTagKey);
        }
        limits::check("TAG_KEY_BYTES_MAX", "tag key bytes", key.len(), limits::TAG_KEY_BYTES_MAX)?;
        limits::check("TAG_VALUE_BYTES_MAX", "tag value bytes", value.len(), limits::TAG_VALUE_BYTES_MAX)?;
        if entry.tags[..index].iter().any(|(other, _)| other == key) {
            return Err(EntryError::DuplicateTagKey((*key).to_owned()));
        }
    }
    Ok(())
}

fn varint_len(value: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn map_entry_len(key: &str, value: &str) -> usize {
    let mut len = 0;
    if !key.is_empty() {
        len += 1 + varint_len(key.len() as u64) + key.len();
    }
    if !value.is_empty() {
        len += 1 + varint_len(value.len() as u64) + value.len();
    }
    len
}

/// Appends `entry` to `out` as a length-delimited protobuf `LogEntry`
/// (timestamp, tags, body; no seq/node/shard), byte-identical to what prost
/// would encode for the same message with tags in key order. Returns the
/// bytes appended. Written by hand so that the ingest path encodes straight
/// from borrowed input with no intermediate `String`s.
pub fn encode_entry(entry: &EntryRef<'_>, timestamp_ns: i64, out: &mut Vec<u8>) -> usize {
    const TIMESTAMP_TAG: u8 = 2 << 3; // field 2, varint
    const TAGS_TAG: u8 = (3 << 3) | 2; // field 3, length-delimited
    const BODY_TAG: u8 = (4 << 3) | 2; // field 4, length-delimited
    const KEY_TAG: u8 = (1 << 3) | 2;
    const VALUE_TAG: u8 = (2 << 3) | 2;

    let mut message_len = 0;
    if timestamp_ns != 0 {
        message_len += 1 + varint_len(timestamp_ns as u64);
    }
    for (key, value) in entry.tags {
        let inner = map_entry_len(key, value);
        message_len += 1 + varint_len(inner as u64) + inner;
    }
    if !entry.body.is_empty() {
        message_len += 1 + varint_len(entry.body.len() as u64) + entry.body.len();
    }
    let start = out.len();
    out.reserve(message_len + 10);
    put_varint(out, message_len as u64);
    if timestamp_ns != 0 {
        out.push(TIMESTAMP_TAG);
        put_varint(out, timestamp_ns as u64);
    }
    // prost emits map entries in BTreeMap (key) order; sorting here would
    // need an allocation, so tags are emitted in the order given. Decoding
    // is order-independent; only byte-identity with prost needs sorted keys.
    for (key, value) in entry.tags {
        out.push(TAGS_TAG);
        put_varint(out, map_entry_len(key, value) as u64);
        if !key.is_empty() {
            out.push(KEY_TAG);
            put_varint(out, key.len() as u64);
            out.extend_from_slice(key.as_bytes());
        }
        if !value.is_empty() {
            out.push(VALUE_TAG);
            put_varint(out, value.len() as u64);
            out.extend_from_slice(value.as_bytes());
        }
    }
    if !entry.body.is_empty() {
        out.push(BODY_TAG);
        put_varint(out, entry.body.len() as u64);
        out.extend_from_slice(entry.body);
    }
    debug_assert_eq!(out.len() - start, varint_len(message_len as u64) + message_len);
    out.len() - start
}

/// A borrowed view of one stored entry, parsed without allocating.
#[derive(Clone, Copy, Debug)]
pub struct EntryView<'a> {
    /// Timestamp in nanoseconds.
    pub timestamp_ns: i64,
    /// The body bytes.
    pub body: &'a [u8],
    tags: &'a [u8],
}

impl<'a> EntryView<'a> {
    /// Parses one entry's protobuf bytes (as [`for_each_entry`] yields them).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BlockError> {
        let mut view = EntryView { timestamp_ns: 0, body: &[], tags: bytes };
        let mut rest = bytes;
        while !rest.is_empty() {
            let (key, used) = read_varint(rest).ok_or(BlockError::Payload("bad field key".into()))?;
            rest = &rest[used..];
            match (key >> 3, key & 7) {
                (2, 0) => {
                    let (value, used) = read_varint(rest).ok_or(BlockError::Payload("bad timestamp".into()))?;
                    view.timestamp_ns = value as i64;
                    rest = &rest[used..];
                }
                (field, 2) => {
                    let (field_bytes, after) = split_delimited(rest)?;
                    if field == 4 {
                        view.body = field_bytes;
                    }
                    rest = after;
                }
                (_, 0) => {
                    let (_, used) = read_varint(rest).ok_or(BlockError::Payload("bad varint".into()))?;
                    rest = &rest[used..];
                }
                _ => return Err(BlockError::Payload("unexpected wire type".into())),
            }
        }
        Ok(view)
    }

    /// Calls `visit(key, value)` for each tag. Tags that are not valid
    /// UTF-8 are reported as an error.
    pub fn for_each_tag(&self, mut visit: impl FnMut(&'a str, &'a str)) -> Result<(), BlockError> {
        let mut rest = self.tags;
        while !rest.is_empty() {
            let (key, used) = read_varint(rest).ok_or(BlockError::Payload("bad field key".into()))?;
            rest = &rest[used..];
            match key & 7 {
                0 => {
                    let (_, used) = read_varint(rest).ok_or(BlockError::Payload("bad varint".into()))?;
                    rest = &rest[used..];
                }
                2 => {
                    let (field_bytes, after) = split_delimited(rest)?;
                    rest = after;
                    if key >> 3 == 3 {
                        let (tag_key, tag_value) = parse_map_entry(field_bytes)?;
                        visit(tag_key, tag_value);
                    }
                }
                _ => return Err(BlockError::Payload("unexpected wire type".into())),
            }
        }
        Ok(())
    }

    /// Whether the entry carries every `key=value` pair of `tags`.
    pub fn has_tags(&self, tags: &[(&str, &str)]) -> bool {
        if tags.is_empty() {
            return true;
        }
        let mut found = 0u64;
        let parsed = self.for_each_tag(|key, value| {
            for (index, (want_key, want_value)) in tags.iter().enumerate().take(64) {
                if *want_key == key && *want_value == value {
                    found |= 1 << index;
                }
            }
        });
        parsed.is_ok() && found.count_ones() as usize == tags.len().min(64)
    }
}

fn split_delimited(bytes: &[u8]) -> Result<(&[u8], &[u8]), BlockError> {
    let (length, used) = read_varint(bytes).ok_or(BlockError::Payload("bad length".into()))?;
    let rest = &bytes[used..];
    let length = usize::try_from(length).map_err(|_| BlockError::Payload("length overflows".into()))?;
    if length > rest.len() {
        return Err(BlockError::Payload("field runs past the entry".into()));
    }
    Ok(rest.split_at(length))
}

fn parse_map_entry(bytes: &[u8]) -> Result<(&str, &str), BlockError> {
    let mut key: &[u8] = &[];
    let mut value: &[u8] = &[];
    let mut rest = bytes;
    while !rest.is_empty() {
        let (field_key, used) = read_varint(rest).ok_or(BlockError::Payload("bad map key".into()))?;
        rest = &rest[used..];
        if field_key & 7 != 2 {
            return Err(BlockError::Payload("unexpected wire type in tag".into()));
        }
        let (field_bytes, after) = split_delimited(rest)?;
        rest = after;
        match field_key >> 3 {
            1 => key = field_bytes,
            2 => value = field_bytes,
            _ => {}
        }
    }
    let key = std::str::from_utf8(key).map_err(|_| BlockError::Payload("tag key is not UTF-8".into()))?;
    let value = std::str::from_utf8(value).map_err(|_| BlockError::Payload("tag value is not UTF-8".into()))?;
    Ok((key, value))
}
