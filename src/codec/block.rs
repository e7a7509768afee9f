//! The block codec: a batch of entries as one checksummed, compressed record.
//!
//! Pure code: no I/O, no executor. The segment writer, recovery and the
//! readers all go through [`encode_block`] and [`parse_header`]/[`decode_block`].
//!
//! ```text
//! offset size field              meaning
//!      0    4 magic              b"WRMB"
//!      4    2 format_version     1; 2 when entries may carry fields; 3 when zstd
//!      6    1 codec              0 = none, 1 = LZ4 block (lz4_flex), 2 = zstd frame
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
//!
//! Version 2 differs from version 1 only in its payload: an entry may carry
//! `fields` (field 7, map entries like `tags`). A block is written at
//! version 2 only when one of its entries has a field, so blocks without
//! fields stay byte-identical to version 1 and an older build keeps reading
//! them; it refuses a block with fields ("upgrade required") instead of
//! silently dropping them.
//!
//! Version 3 is the version of zstd blocks (codec 2), which only the cold
//! rewrite of sealed segments writes (`shard::cold`): a block is at version
//! 3 exactly when its codec is zstd, and its entries may carry fields. The
//! codec alone would not do: a build of version 2 refuses an unknown codec
//! as a corrupt header, while it refuses an unknown version with "upgrade
//! required", which is what a zstd block needs it to say. The zstd payload
//! is one frame that declares its content size, equal to `raw_len`, and
//! spans the whole payload ([`crate::codec::zstd`]).

use crate::limits::{self, LimitExceeded};
use crate::proto::LogEntry;

/// The four bytes that open every block.
pub const MAGIC: [u8; 4] = *b"WRMB";
/// The newest block format this code writes and reads.
pub const FORMAT_VERSION: u16 = FORMAT_VERSION_ZSTD;
/// The version of blocks whose entries carry no fields (the first version).
pub const FORMAT_VERSION_NO_FIELDS: u16 = 1;
/// The version of LZ4 or uncompressed blocks whose entries may carry fields.
pub const FORMAT_VERSION_FIELDS: u16 = 2;
/// The version of zstd blocks (entries may carry fields).
pub const FORMAT_VERSION_ZSTD: u16 = 3;

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

const _: () = assert!(HEADER_BYTES == 64 && HEADER_BYTES == limits::BLOCK_HEADER_BYTES);
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
    /// One zstd frame with its content size (`raw_len`), no checksum (the
    /// block's crc covers it): written by the cold rewrite of sealed
    /// segments, only in blocks of version [`FORMAT_VERSION_ZSTD`].
    Zstd = 2,
}

impl Codec {
    /// The codec's name, as `wormdb inspect` and the docs write it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
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
    /// Format version: [`FORMAT_VERSION_NO_FIELDS`],
    /// [`FORMAT_VERSION_FIELDS`] when entries may carry fields, or
    /// [`FORMAT_VERSION_ZSTD`] for a zstd block.
    pub version: u16,
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
    #[error("block format version {0} is not supported (this build reads {FORMAT_VERSION_NO_FIELDS} to {FORMAT_VERSION}); upgrade required")]
    UnsupportedVersion(u16),
    /// A codec this build does not know (a later version's).
    #[error("block codec {0} is not supported (this build reads codecs 0 to 2); upgrade required")]
    UnsupportedCodec(u8),
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
    if !(FORMAT_VERSION_NO_FIELDS..=FORMAT_VERSION).contains(&version) {
        return Err(BlockError::UnsupportedVersion(version));
    }
    let codec = match header[CODEC_OFFSET] {
        0 => Codec::None,
        1 => Codec::Lz4,
        2 => Codec::Zstd,
        other => return Err(BlockError::UnsupportedCodec(other)),
    };
    // One encoding per block: version 3 is the version of zstd blocks.
    if (codec == Codec::Zstd) != (version == FORMAT_VERSION_ZSTD) {
        return Err(BlockError::Corrupt("codec 2 (zstd) comes with format version 3, and only it"));
    }
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
    Ok(BlockHeader { version, codec, first_seq, entry_count, min_ts, max_ts, raw_len, stored_len, origin, crc })
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

/// Decompresses a verified block's payload into `raw`, which ends up holding
/// exactly the payload (a reusable buffer: its old bytes are overwritten).
pub fn decompress_payload(header: &BlockHeader, block: &[u8], raw: &mut Vec<u8>) -> Result<(), BlockError> {
    let stored = &block[HEADER_BYTES..header.block_bytes()];
    match header.codec {
        Codec::None => {
            raw.clear();
            raw.extend_from_slice(stored);
        }
        Codec::Lz4 => {
            // Only bytes beyond the buffer's current length are zeroed: the
            // decompressor overwrites all of them or fails.
            raw.truncate(header.raw_len as usize);
            raw.resize(header.raw_len as usize, 0);
            let written = lz4_flex::block::decompress_into(stored, raw)
                .map_err(|error| BlockError::Payload(format!("lz4: {error}")))?;
            if written != header.raw_len as usize {
                return Err(BlockError::Payload(format!("lz4 gave {written} bytes, header says {}", header.raw_len)));
            }
        }
        Codec::Zstd => {
            // As for LZ4: the output is exactly `raw_len` bytes, never more.
            raw.truncate(header.raw_len as usize);
            raw.resize(header.raw_len as usize, 0);
            super::zstd::decompress_into(stored, raw)?;
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
        let (length, prefix) =
            read_varint(rest).ok_or_else(|| BlockError::Payload("bad entry length prefix".into()))?;
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

/// Reads a protobuf varint: its value and how many bytes it took.
pub fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
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
    /// Whether an entry of the payload carries fields: an LZ4 or
    /// uncompressed block is then written at [`FORMAT_VERSION_FIELDS`],
    /// else at [`FORMAT_VERSION_NO_FIELDS`]. A zstd block is always at
    /// [`FORMAT_VERSION_ZSTD`].
    pub fields: bool,
}

impl BlockSpec {
    /// The spec of an existing block: the same seqs, timestamps, origin
    /// and entry count, to encode its entries again (another codec).
    pub fn of(header: &BlockHeader) -> BlockSpec {
        BlockSpec {
            first_seq: header.first_seq,
            entry_count: header.entry_count,
            min_ts: header.min_ts,
            max_ts: header.max_ts,
            origin: header.origin,
            fields: header.version != FORMAT_VERSION_NO_FIELDS,
        }
    }
}

/// Largest number of bytes [`encode_block`] writes for `raw_len` payload bytes.
///
/// This is lz4_flex's own bound (about 1.1x plus 20 bytes), which
/// `compress_into` insists on for its output buffer; what is actually stored
/// is never more than the raw payload, because incompressible payloads are
/// stored as is.
pub const fn encoded_bytes_max(raw_len: usize) -> usize {
    limits::block_encoded_bytes_max(raw_len)
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
    assert!(raw.len() >= spec.entry_count as usize, "every entry has at least its length prefix");
    assert!(out.len() >= encoded_bytes_max(raw.len()));

    let payload = &mut out[HEADER_BYTES..];
    let compressed = if looks_incompressible(raw) {
        usize::MAX
    } else {
        lz4_flex::block::compress_into(raw, payload).unwrap_or(usize::MAX)
    };
    let (codec, stored_len) = if compressed < raw.len() {
        (Codec::Lz4, compressed)
    } else {
        payload[..raw.len()].copy_from_slice(raw);
        (Codec::None, raw.len())
    };
    finish_block(spec, codec, raw.len(), stored_len, out)
}

/// Encodes one block into `out` (at least `HEADER_BYTES + stored.len()`
/// long) around a payload that is already stored: the payload of a block
/// another node encoded ([`check_foreign_block`]), given a header of this
/// shard. Returns the bytes used. Nothing is compressed.
pub fn encode_stored_block(spec: &BlockSpec, codec: Codec, raw_len: usize, stored: &[u8], out: &mut [u8]) -> usize {
    assert!(spec.entry_count >= 1, "a block holds at least one entry");
    assert!(spec.first_seq >= 1, "seqs start at 1");
    assert!(spec.min_ts <= spec.max_ts);
    assert!(raw_len <= limits::BLOCK_RAW_BYTES_MAX && stored.len() <= limits::BLOCK_STORED_BYTES_MAX);
    assert!(codec != Codec::None || stored.len() == raw_len, "an uncompressed payload is its raw bytes");
    out[HEADER_BYTES..HEADER_BYTES + stored.len()].copy_from_slice(stored);
    finish_block(spec, codec, raw_len, stored.len(), out)
}

/// Writes the header of a block whose payload is already in place at
/// `out[HEADER_BYTES..][..stored_len]`, crc last; returns the block's bytes.
fn finish_block(spec: &BlockSpec, codec: Codec, raw_len: usize, stored_len: usize, out: &mut [u8]) -> usize {
    let (header, payload) = out.split_at_mut(HEADER_BYTES);
    header[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&MAGIC);
    let version = match (codec, spec.fields) {
        (Codec::Zstd, _) => FORMAT_VERSION_ZSTD,
        (_, true) => FORMAT_VERSION_FIELDS,
        (_, false) => FORMAT_VERSION_NO_FIELDS,
    };
    header[VERSION_OFFSET..CODEC_OFFSET].copy_from_slice(&version.to_le_bytes());
    header[CODEC_OFFSET] = codec as u8;
    header[FLAGS_OFFSET] = if spec.origin.is_some() { FLAG_ORIGIN } else { 0 };
    header[FIRST_SEQ_OFFSET..MIN_TS_OFFSET].copy_from_slice(&spec.first_seq.to_le_bytes());
    header[MIN_TS_OFFSET..MAX_TS_OFFSET].copy_from_slice(&spec.min_ts.to_le_bytes());
    header[MAX_TS_OFFSET..ORIGIN_FIRST_SEQ_OFFSET].copy_from_slice(&spec.max_ts.to_le_bytes());
    let origin = spec.origin.unwrap_or(Origin { node: 0, shard: 0, first_seq: 0 });
    header[ORIGIN_FIRST_SEQ_OFFSET..ENTRY_COUNT_OFFSET].copy_from_slice(&origin.first_seq.to_le_bytes());
    header[ENTRY_COUNT_OFFSET..RAW_LEN_OFFSET].copy_from_slice(&spec.entry_count.to_le_bytes());
    header[RAW_LEN_OFFSET..STORED_LEN_OFFSET].copy_from_slice(&(raw_len as u32).to_le_bytes());
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

/// Distinct `key=value` pairs, looked up by borrowed [`TagRef`]s (no
/// allocation for a pair already present): the tags of one block, which is
/// what the index records.
pub type TagSet = hashbrown::HashSet<(Box<str>, Box<str>), ahash::RandomState>;

/// A borrowed tag pair that hashes and compares like an owned one.
#[derive(Hash)]
struct TagRef<'a>(&'a str, &'a str);

impl hashbrown::Equivalent<(Box<str>, Box<str>)> for TagRef<'_> {
    fn equivalent(&self, key: &(Box<str>, Box<str>)) -> bool {
        *key.0 == *self.0 && *key.1 == *self.1
    }
}

/// Adds `key=value` to `tags`, allocating only if it is new.
pub fn insert_tag(tags: &mut TagSet, key: &str, value: &str) {
    if !tags.contains(&TagRef(key, value)) {
        tags.insert((key.into(), value.into()));
    }
}

/// [`verify_block`] for a block that must fill `block` exactly (a pushed
/// block): header, limits and crc, and no byte after it.
pub fn verify_whole_block(block: &[u8]) -> Result<BlockHeader, BlockError> {
    let header = verify_block(block)?;
    if block.len() != header.block_bytes() {
        return Err(BlockError::Payload(format!(
            "{} bytes after the block's {}",
            block.len() - header.block_bytes(),
            header.block_bytes()
        )));
    }
    Ok(header)
}

/// Checks a block that another node encoded (a follower's, pushed to its
/// leader) before its payload is stored as is, and gathers its tags for
/// the index. Beyond [`verify_block`] (header, limits, crc), the payload
/// must decompress to exactly `entry_count` entries (decompressed into
/// `raw`, a reusable scratch buffer), each a stored entry as
/// [`encode_entry`] writes it (no seq field, tags UTF-8 and within the
/// limits of [`validate_entry`]), with timestamps whose minimum and maximum
/// are the header's: the index trusts those. The block's own seqs and
/// origin fields are the sender's business; the caller gives it a header
/// of this shard ([`encode_stored_block`]).
pub fn check_foreign_block(block: &[u8], raw: &mut Vec<u8>) -> Result<(BlockHeader, TagSet), BlockError> {
    check_foreign_block_with(block, raw, |_, _| {})
}

/// [`check_foreign_block`], calling `visit(tags, body)` with each entry's
/// tags (in their stored order) and body, in order, once the entry passed
/// its checks: what the index gathers from a block (its tag sets and
/// words) while the check has it decompressed.
pub fn check_foreign_block_with(
    block: &[u8],
    raw: &mut Vec<u8>,
    mut visit: impl FnMut(&[(&str, &str)], &[u8]),
) -> Result<(BlockHeader, TagSet), BlockError> {
    let header = verify_whole_block(block)?;
    decompress_payload(&header, block, raw)?;
    let raw: &[u8] = raw;
    let mut tags = TagSet::default();
    // The tag bytes of entries already checked, with where their parsed
    // tags are in `parsed`: entries of one source mostly repeat a few tag
    // sets, and the same bytes parse to the same tags, which pass the same
    // checks and add nothing new to `tags`. At most one item per entry of
    // the block.
    let mut checked_tags: hashbrown::HashMap<&[u8], (usize, usize), ahash::RandomState> = hashbrown::HashMap::default();
    let mut parsed: Vec<(&str, &str)> = Vec::with_capacity(8);
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    for_each_entry(&header, raw, |seq, bytes| {
        let view = EntryView::parse(bytes)?;
        let bad = |what: String| BlockError::Payload(format!("entry {seq}: {what}"));
        if view.seq != 0 {
            return Err(bad("a stored entry carries no seq field".into()));
        }
        if !view.fields.is_empty() {
            if header.version == FORMAT_VERSION_NO_FIELDS {
                return Err(bad(format!("a block of version {FORMAT_VERSION_NO_FIELDS} carries no fields")));
            }
            let mut fields: Vec<(&str, &str)> = Vec::new();
            view.for_each_field(|key, value| fields.push((key, value)))?;
            validate_fields(&fields).map_err(|error| bad(error.to_string()))?;
        }
        let range = match checked_tags.get(view.tags) {
            None => {
                let start = parsed.len();
                view.for_each_tag(|key, value| parsed.push((key, value)))?;
                let entry_tags = &parsed[start..];
                validate_entry(&EntryRef {
                    timestamp_ns: view.timestamp_ns,
                    tags: entry_tags,
                    body: view.body,
                    fields: &[],
                })
                .map_err(|error| bad(error.to_string()))?;
                for (key, value) in entry_tags {
                    insert_tag(&mut tags, key, value);
                }
                checked_tags.insert(view.tags, (start, parsed.len()));
                (start, parsed.len())
            }
            Some(&range) => {
                // Tags as an entry's before: only the body is left to check.
                validate_entry(&EntryRef { timestamp_ns: view.timestamp_ns, tags: &[], body: view.body, fields: &[] })
                    .map_err(|error| bad(error.to_string()))?;
                range
            }
        };
        visit(&parsed[range.0..range.1], view.body);
        min_ts = min_ts.min(view.timestamp_ns);
        max_ts = max_ts.max(view.timestamp_ns);
        Ok(())
    })?;
    if (min_ts, max_ts) != (header.min_ts, header.max_ts) {
        return Err(BlockError::Payload(format!(
            "entry timestamps span {min_ts}..={max_ts}, the header says {}..={}",
            header.min_ts, header.max_ts
        )));
    }
    Ok((header, tags))
}

/// Whether a large payload is not worth compressing, judged from one
/// sample: LZ4 on random bytes (encrypted or already compressed bodies)
/// costs as much as on text and saves nothing, so a payload whose middle
/// 8 KiB does not shrink by 3 % is stored as is without compressing the rest.
fn looks_incompressible(raw: &[u8]) -> bool {
    const SAMPLE_BYTES: usize = 8 * 1024;
    const SAMPLE_OUT_BYTES: usize = lz4_flex::block::get_maximum_output_size(SAMPLE_BYTES);
    if raw.len() < 8 * SAMPLE_BYTES {
        return false;
    }
    let start = raw.len() / 2 - SAMPLE_BYTES / 2;
    let sample = &raw[start..start + SAMPLE_BYTES];
    let mut out = [0u8; SAMPLE_OUT_BYTES];
    match lz4_flex::block::compress_into(sample, &mut out) {
        Ok(compressed) => compressed * 100 > SAMPLE_BYTES * 97,
        Err(_) => false,
    }
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
    /// `key=value` fields, stored but not indexed; keys are unique within
    /// an entry. Empty for most entries, which then cost nothing extra.
    pub fields: &'a [(&'a str, &'a str)],
}

/// Calls `append` with borrowed [`EntryRef`]s of protobuf entries (a
/// `WriteRequest`'s, a replayed archive's): ingest over protobuf and gRPC.
pub fn with_log_entry_refs<'e, T>(
    entries: impl IntoIterator<Item = &'e crate::proto::LogEntry>,
    append: impl FnOnce(&[EntryRef<'_>]) -> T,
) -> T {
    let entries: Vec<&crate::proto::LogEntry> = entries.into_iter().collect();
    let tags: Vec<Vec<(&str, &str)>> = entries
        .iter()
        .map(|entry| entry.tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect())
        .collect();
    // An empty Vec does not allocate: entries without fields cost nothing.
    let fields: Vec<Vec<(&str, &str)>> = entries
        .iter()
        .map(|entry| entry.fields.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect())
        .collect();
    let refs: Vec<EntryRef<'_>> = entries
        .iter()
        .zip(tags.iter().zip(&fields))
        .map(|(entry, (tags, fields))| EntryRef { timestamp_ns: entry.timestamp_ns, tags, body: &entry.body, fields })
        .collect();
    append(&refs)
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
    /// A field key is empty.
    #[error("empty field key")]
    EmptyFieldKey,
    /// Two fields share a key.
    #[error("duplicate field key {0:?}")]
    DuplicateFieldKey(String),
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
    if !entry.fields.is_empty() {
        validate_fields(entry.fields)?;
    }
    Ok(())
}

/// Checks an entry's fields against their limits ([`validate_entry`] does
/// this too): count, key and value bytes, total bytes, non-empty unique keys.
pub fn validate_fields(fields: &[(&str, &str)]) -> Result<(), EntryError> {
    limits::check("ENTRY_FIELDS_MAX", "entry field count", fields.len(), limits::ENTRY_FIELDS_MAX)?;
    let mut total = 0;
    for (index, (key, value)) in fields.iter().enumerate() {
        if key.is_empty() {
            return Err(EntryError::EmptyFieldKey);
        }
        limits::check("FIELD_KEY_BYTES_MAX", "field key bytes", key.len(), limits::FIELD_KEY_BYTES_MAX)?;
        limits::check("FIELD_VALUE_BYTES_MAX", "field value bytes", value.len(), limits::FIELD_VALUE_BYTES_MAX)?;
        total += key.len() + value.len();
        limits::check("ENTRY_FIELDS_BYTES_MAX", "entry field bytes", total, limits::ENTRY_FIELDS_BYTES_MAX)?;
        if fields[..index].iter().any(|(other, _)| other == key) {
            return Err(EntryError::DuplicateFieldKey((*key).to_owned()));
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
/// (timestamp, tags, body, fields; no seq/node/shard), byte-identical to what prost
/// would encode for the same message with tags in key order. Returns the
/// bytes appended. Written by hand so that the ingest path encodes straight
/// from borrowed input with no intermediate `String`s.
pub fn encode_entry(entry: &EntryRef<'_>, timestamp_ns: i64, out: &mut Vec<u8>) -> usize {
    const TIMESTAMP_TAG: u8 = 2 << 3; // field 2, varint
    const TAGS_TAG: u8 = (3 << 3) | 2; // field 3, length-delimited
    const BODY_TAG: u8 = (4 << 3) | 2; // field 4, length-delimited
    const FIELDS_TAG: u8 = (7 << 3) | 2; // field 7, length-delimited

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
    for (key, value) in entry.fields {
        let inner = map_entry_len(key, value);
        message_len += 1 + varint_len(inner as u64) + inner;
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
        put_map_entry(out, TAGS_TAG, key, value);
    }
    if !entry.body.is_empty() {
        out.push(BODY_TAG);
        put_varint(out, entry.body.len() as u64);
        out.extend_from_slice(entry.body);
    }
    // Field 7 comes after the body, as prost orders fields by number.
    for (key, value) in entry.fields {
        put_map_entry(out, FIELDS_TAG, key, value);
    }
    debug_assert_eq!(out.len() - start, varint_len(message_len as u64) + message_len);
    out.len() - start
}

/// Appends one map entry (`key`, `value`) of the map field whose tag byte
/// is `field_tag`, as prost encodes it.
fn put_map_entry(out: &mut Vec<u8>, field_tag: u8, key: &str, value: &str) {
    const KEY_TAG: u8 = (1 << 3) | 2;
    const VALUE_TAG: u8 = (2 << 3) | 2;
    out.push(field_tag);
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

/// A borrowed view of one stored entry, parsed without allocating.
#[derive(Clone, Copy, Debug)]
pub struct EntryView<'a> {
    /// The `seq` field (1) if present: stored entries have none (their seq
    /// comes from the block header); pushed entries carry their origin seq.
    pub seq: u64,
    /// Timestamp in nanoseconds.
    pub timestamp_ns: i64,
    /// The body bytes.
    pub body: &'a [u8],
    /// Whole fields covering every tag field (3): from the first one's key
    /// to the last one's end. An encoder writes tags back to back, so this
    /// is usually exactly the tags; any other field inside is skipped.
    tags: &'a [u8],
    /// The same for the entry's fields (field 7); empty when it has none.
    fields: &'a [u8],
}

impl<'a> EntryView<'a> {
    /// Parses one entry's protobuf bytes (as [`for_each_entry`] yields them).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BlockError> {
        let mut view = EntryView { seq: 0, timestamp_ns: 0, body: &[], tags: &[], fields: &[] };
        let mut tags_span: Option<(usize, usize)> = None;
        let mut fields_span: Option<(usize, usize)> = None;
        let mut rest = bytes;
        while !rest.is_empty() {
            let field_start = bytes.len() - rest.len();
            let (key, used) = read_varint(rest).ok_or_else(|| BlockError::Payload("bad field key".into()))?;
            rest = &rest[used..];
            match (key >> 3, key & 7) {
                (field @ (1 | 2), 0) => {
                    let (value, used) = read_varint(rest).ok_or_else(|| BlockError::Payload("bad varint".into()))?;
                    if field == 1 {
                        view.seq = value;
                    } else {
                        view.timestamp_ns = value as i64;
                    }
                    rest = &rest[used..];
                }
                (field, 2) => {
                    let (field_bytes, after) = split_delimited(rest)?;
                    if field == 4 {
                        view.body = field_bytes;
                    }
                    rest = after;
                    if field == 3 || field == 7 {
                        let span = if field == 3 { &mut tags_span } else { &mut fields_span };
                        let field_end = bytes.len() - rest.len();
                        let start = span.map_or(field_start, |(start, _)| start);
                        *span = Some((start, field_end));
                    }
                }
                (_, 0) => {
                    let (_, used) = read_varint(rest).ok_or_else(|| BlockError::Payload("bad varint".into()))?;
                    rest = &rest[used..];
                }
                (_, wire_type @ (1 | 5)) => rest = skip_fixed(rest, wire_type)?,
                _ => return Err(BlockError::Payload("unexpected wire type".into())),
            }
        }
        if let Some((start, end)) = tags_span {
            view.tags = &bytes[start..end];
        }
        if let Some((start, end)) = fields_span {
            view.fields = &bytes[start..end];
        }
        Ok(view)
    }

    /// A view of `entry` (one entry's protobuf bytes) from what an earlier
    /// [`EntryView::parse`] of the same bytes found, without parsing again.
    pub(crate) fn from_parts(seq: u64, timestamp_ns: i64, body: &'a [u8], entry: &'a [u8]) -> Self {
        EntryView { seq, timestamp_ns, body, tags: entry, fields: entry }
    }

    /// Whether the entry carries any field.
    pub fn has_any_field(&self) -> bool {
        !self.fields.is_empty()
    }

    /// Calls `visit(key, value)` for each field. Fields that are not valid
    /// UTF-8 are reported as an error.
    pub fn for_each_field(&self, mut visit: impl FnMut(&'a str, &'a str)) -> Result<(), BlockError> {
        for_each_map_field(self.fields, 7, |field| {
            let (key, value) = parse_tag_field(field)?;
            visit(key, value);
            Ok(())
        })
    }

    /// Whether the entry carries every `key=value` pair of `fields` (an
    /// empty list matches everything), compared exactly.
    pub fn has_fields(&self, fields: &[(&str, &str)]) -> bool {
        fields.iter().all(|(want_key, want_value)| {
            let mut found = false;
            let parsed = self.for_each_field(|key, value| found |= key == *want_key && value == *want_value);
            parsed.is_ok() && found
        })
    }

    /// Calls `visit(key, value)` for each tag. Tags that are not valid
    /// UTF-8 are reported as an error.
    pub fn for_each_tag(&self, mut visit: impl FnMut(&'a str, &'a str)) -> Result<(), BlockError> {
        self.for_each_tag_field(|field| {
            let (key, value) = parse_tag_field(field)?;
            visit(key, value);
            Ok(())
        })
    }

    /// Calls `visit(field)` with each tag's encoded map entry, unparsed
    /// ([`parse_tag_field`] parses one), and stops at the first error
    /// either returns: for callers that see the same pair many times and
    /// parse and check each distinct encoding once.
    pub fn for_each_tag_field(&self, visit: impl FnMut(&'a [u8]) -> Result<(), BlockError>) -> Result<(), BlockError> {
        for_each_map_field(self.tags, 3, visit)
    }

    /// Whether the entry carries every `key=value` pair of `tags` (an empty
    /// list matches everything). Each pair is looked up by its own pass
    /// over the tags: queries carry few pairs, and this needs no memory.
    pub fn has_tags(&self, tags: &[(&str, &str)]) -> bool {
        tags.iter().all(|(want_key, want_value)| {
            let mut found = false;
            let parsed = self.for_each_tag(|key, value| found |= key == *want_key && value == *want_value);
            parsed.is_ok() && found
        })
    }
}

/// Calls `visit(field)` with each length-delimited field numbered `number`
/// in `span` (whole encoded fields), skipping every other field.
fn for_each_map_field<'a>(
    span: &'a [u8],
    number: u64,
    mut visit: impl FnMut(&'a [u8]) -> Result<(), BlockError>,
) -> Result<(), BlockError> {
    let mut rest = span;
    while !rest.is_empty() {
        let (key, used) = read_varint(rest).ok_or_else(|| BlockError::Payload("bad field key".into()))?;
        rest = &rest[used..];
        match key & 7 {
            0 => {
                let (_, used) = read_varint(rest).ok_or_else(|| BlockError::Payload("bad varint".into()))?;
                rest = &rest[used..];
            }
            wire_type @ (1 | 5) => rest = skip_fixed(rest, wire_type)?,
            2 => {
                let (field_bytes, after) = split_delimited(rest)?;
                rest = after;
                if key >> 3 == number {
                    visit(field_bytes)?;
                }
            }
            _ => return Err(BlockError::Payload("unexpected wire type".into())),
        }
    }
    Ok(())
}

/// Skips a fixed-width field (wire type 1: 8 bytes, 5: 4 bytes), as prost
/// skips unknown fields, so a future fixed-width field does not hide entries.
pub(crate) fn skip_fixed(bytes: &[u8], wire_type: u64) -> Result<&[u8], BlockError> {
    let width = if wire_type == 1 { 8 } else { 4 };
    bytes.get(width..).ok_or_else(|| BlockError::Payload("fixed-width field runs past the entry".into()))
}

pub(crate) fn split_delimited(bytes: &[u8]) -> Result<(&[u8], &[u8]), BlockError> {
    let (length, used) = read_varint(bytes).ok_or_else(|| BlockError::Payload("bad length".into()))?;
    let rest = &bytes[used..];
    let length = usize::try_from(length).map_err(|_| BlockError::Payload("length overflows".into()))?;
    if length > rest.len() {
        return Err(BlockError::Payload("field runs past the entry".into()));
    }
    Ok(rest.split_at(length))
}

/// One tag's key and value from its encoded map entry (as
/// [`EntryView::for_each_tag_field`] yields it), checked as UTF-8.
pub fn parse_tag_field(bytes: &[u8]) -> Result<(&str, &str), BlockError> {
    let mut key: &[u8] = &[];
    let mut value: &[u8] = &[];
    let mut rest = bytes;
    while !rest.is_empty() {
        let (field_key, used) = read_varint(rest).ok_or_else(|| BlockError::Payload("bad map key".into()))?;
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

#[cfg(test)]
mod tests {
    //! The codec against prost (the reference encoder), LogHub round trips,
    //! every bit flip and truncation, each header check, the entry limits,
    //! and property tests that feed damaged blocks to the decoder.

    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use prost::Message;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// An entry as the tests describe it. Tags come from a map, so they are
    /// unique and in key order, which is what byte-identity with prost needs.
    #[derive(Clone, Debug)]
    struct TestEntry {
        timestamp_ns: i64,
        tags: BTreeMap<String, String>,
        body: Vec<u8>,
        fields: BTreeMap<String, String>,
    }

    impl TestEntry {
        fn new(timestamp_ns: i64, tags: &[(&str, &str)], body: &[u8]) -> Self {
            let tags = tags.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
            TestEntry { timestamp_ns, tags, body: body.to_vec(), fields: BTreeMap::new() }
        }

        fn with_fields(mut self, fields: &[(&str, &str)]) -> Self {
            self.fields = fields.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
            self
        }

        fn tag_refs(&self) -> Vec<(&str, &str)> {
            self.tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect()
        }

        /// Appends the entry with [`encode_entry`]; returns the bytes appended.
        fn encode(&self, out: &mut Vec<u8>) -> usize {
            let tags = self.tag_refs();
            // The entry's own timestamp is ignored: the shard passes the resolved one.
            let fields: Vec<(&str, &str)> =
                self.fields.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
            let entry = EntryRef { fields: &fields, timestamp_ns: 0, tags: &tags, body: &self.body };
            encode_entry(&entry, self.timestamp_ns, out)
        }

        fn to_proto(&self, seq: u64, node_id: u32, shard: u32) -> LogEntry {
            LogEntry {
                fields: self.fields.clone(),
                seq,
                timestamp_ns: self.timestamp_ns,
                tags: self.tags.clone(),
                body: bytes::Bytes::copy_from_slice(&self.body),
                node_id,
                shard,
            }
        }

        /// What prost writes for the stored form (no seq, node or shard).
        fn prost_bytes(&self) -> Vec<u8> {
            self.to_proto(0, 0, 0).encode_length_delimited_to_vec()
        }
    }

    /// The lines of a LogHub sample, as bytes (some samples are not UTF-8).
    fn loghub_lines(file: &str) -> Vec<Vec<u8>> {
        let text = crate::loghub::bytes(file);
        text.split(|&byte| byte == b'\n').filter(|line| !line.is_empty()).map(<[u8]>::to_vec).collect()
    }

    fn level_of(line: &[u8]) -> &'static str {
        let line = String::from_utf8_lossy(line);
        ["ERROR", "WARN", "INFO", "DEBUG", "FATAL"].into_iter().find(|level| line.contains(level)).unwrap_or("none")
    }

    /// LogHub lines as entries with a source and a level tag and timestamps
    /// that step by a fixed amount, some of them before the epoch.
    fn loghub_entries(file: &str) -> Vec<TestEntry> {
        loghub_lines(file)
            .iter()
            .enumerate()
            .map(|(index, line)| {
                let timestamp_ns = -5_000_000_000 + index as i64 * 1_000_003;
                TestEntry::new(timestamp_ns, &[("level", level_of(line)), ("source", file)], line)
            })
            .collect()
    }

    fn raw_payload(entries: &[TestEntry]) -> Vec<u8> {
        let mut raw = Vec::new();
        for entry in entries {
            entry.encode(&mut raw);
        }
        raw
    }

    fn spec_for(entries: &[TestEntry], first_seq: u64, origin: Option<Origin>) -> BlockSpec {
        BlockSpec {
            fields: entries.iter().any(|entry| !entry.fields.is_empty()),
            first_seq,
            entry_count: entries.len() as u32,
            min_ts: entries.iter().map(|entry| entry.timestamp_ns).min().unwrap(),
            max_ts: entries.iter().map(|entry| entry.timestamp_ns).max().unwrap(),
            origin,
        }
    }

    fn encode(spec: &BlockSpec, raw: &[u8]) -> Vec<u8> {
        let mut out = vec![0; encoded_bytes_max(raw.len())];
        let used = encode_block(spec, raw, &mut out);
        out.truncate(used);
        out
    }

    fn encode_entries(entries: &[TestEntry], first_seq: u64, origin: Option<Origin>) -> Vec<u8> {
        encode(&spec_for(entries, first_seq, origin), &raw_payload(entries))
    }

    /// A small LZ4 block of LogHub lines.
    fn small_lz4_block(origin: Option<Origin>) -> Vec<u8> {
        let entries: Vec<TestEntry> = loghub_entries("HDFS").into_iter().take(4).collect();
        let block = encode_entries(&entries, 10, origin);
        assert_eq!(parse_header(&block).unwrap().codec, Codec::Lz4);
        block
    }

    /// A small zstd block: [`small_lz4_block`] recompressed.
    fn small_zstd_block(origin: Option<Origin>) -> Vec<u8> {
        zstd_of(&small_lz4_block(origin))
    }

    /// `block` recompressed with zstd at the cold level; it must shrink.
    fn zstd_of(block: &[u8]) -> Vec<u8> {
        let header = verify_block(block).unwrap();
        let mut recompressor = super::super::zstd::Recompressor::new(limits::COLD_ZSTD_LEVEL);
        let mut out = Vec::new();
        let done = super::super::zstd::recompress_block(&mut recompressor, &header, block, &mut out).unwrap();
        assert_eq!(done, super::super::zstd::Recompressed::Zstd(out.len()), "the block shrinks with zstd");
        assert_eq!(parse_header(&out).unwrap().codec, Codec::Zstd);
        out
    }

    /// A small block that LZ4 cannot shrink, so it is stored as is.
    fn small_stored_block() -> Vec<u8> {
        let mut rng = SmallRng::seed_from_u64(7);
        let body: Vec<u8> = (0..300).map(|_| rng.gen()).collect();
        let entries = [TestEntry::new(3, &[("k", "v")], &body), TestEntry::new(4, &[], b"")];
        let block = encode_entries(&entries, 1, None);
        assert_eq!(parse_header(&block).unwrap().codec, Codec::None);
        block
    }

    fn put_u16(bytes: &mut [u8], offset: usize, value: u16) {
        bytes[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
    }

    fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
        bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn put_u64(bytes: &mut [u8], offset: usize, value: u64) {
        bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// Recomputes the crc over the header and as much of the payload as the
    /// header's `stored_len` claims and the bytes hold, so that an edit
    /// reaches the checks behind the crc.
    fn resign(bytes: &mut [u8]) {
        if bytes.len() < HEADER_BYTES {
            return;
        }
        let stored_len = read_u32(bytes, STORED_LEN_OFFSET) as usize;
        let end = HEADER_BYTES.saturating_add(stored_len).min(bytes.len());
        let crc = block_crc(&bytes[..HEADER_BYTES], &bytes[HEADER_BYTES..end]);
        put_u32(bytes, CRC_OFFSET, crc);
    }

    /// Strips the length prefix of one [`encode_entry`] output.
    fn message_of(encoded: &[u8]) -> &[u8] {
        let (length, prefix) = read_varint(encoded).unwrap();
        assert_eq!(prefix + length as usize, encoded.len(), "one entry, nothing after it");
        &encoded[prefix..]
    }

    /// Checks [`EntryView`] against prost on the bytes of one stored entry.
    fn assert_view_agrees_with_prost(message: &[u8]) {
        let expected = LogEntry::decode(message).unwrap();
        let view = EntryView::parse(message).unwrap();
        assert_eq!(view.timestamp_ns, expected.timestamp_ns);
        assert_eq!(view.body, &expected.body[..]);
        let mut visited = Vec::new();
        view.for_each_tag(|key, value| visited.push((key, value))).unwrap();
        let expected_tags: Vec<(&str, &str)> =
            expected.tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
        assert_eq!(visited, expected_tags, "tags, in the order they are stored");

        assert!(view.has_tags(&[]));
        assert!(view.has_tags(&expected_tags), "all of its own tags");
        for &(key, value) in &expected_tags {
            assert!(view.has_tags(&[(key, value)]), "its own tag {key:?}={value:?}");
            let other_value = format!("{value}~");
            assert!(!view.has_tags(&[(key, &other_value)]), "another value of {key:?}");
            let mut with_missing = expected_tags.clone();
            with_missing.push((key, &other_value));
            assert!(!view.has_tags(&with_missing), "its tags plus a missing one");
        }
        assert!(!view.has_tags(&[("no such key \u{1}", "")]));

        let mut visited = Vec::new();
        view.for_each_field(|key, value| visited.push((key, value))).unwrap();
        let expected_fields: Vec<(&str, &str)> =
            expected.fields.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
        assert_eq!(visited, expected_fields, "fields, in the order they are stored");
        assert_eq!(view.has_any_field(), !expected_fields.is_empty());
        assert!(view.has_fields(&[]));
        assert!(view.has_fields(&expected_fields), "all of its own fields");
        for &(key, value) in &expected_fields {
            let other_value = format!("{value}~");
            assert!(!view.has_fields(&[(key, &other_value)]), "another value of field {key:?}");
            // A field is not a tag, and a tag is not a field.
            assert!(!view.has_tags(&[(key, value)]) || expected.tags.get(key).map(String::as_str) == Some(value));
        }
        for &(key, value) in &expected_tags {
            assert!(!view.has_fields(&[(key, value)]) || expected.fields.get(key).map(String::as_str) == Some(value));
        }
    }

    // ---- encode_entry is prost ----

    #[test]
    fn encode_entry_matches_prost_on_edge_cases() {
        let long_value = "v".repeat(300); // inner map entry length needs two varint bytes
        let long_key = "k".repeat(limits::TAG_KEY_BYTES_MAX);
        let mut cases: Vec<TestEntry> = vec![
            TestEntry::new(0, &[], b""),
            TestEntry::new(1, &[], b""),
            TestEntry::new(-1, &[], b"x"),
            TestEntry::new(i64::MIN, &[], b"min"),
            TestEntry::new(i64::MAX, &[], b"max"),
            TestEntry::new(0, &[("a", "1")], b""),
            TestEntry::new(5, &[("a", ""), ("b", "")], b"empty values"),
            // Keys must not be empty in a write, but the encoding still matches prost's.
            TestEntry::new(5, &[("", "empty key"), ("z", "")], b"body"),
            TestEntry::new(1_700_000_000_123_456_789, &[("host", "web-01"), ("level", "INFO")], b"hello"),
            TestEntry::new(-42, &[("k=\0", "v=\u{e9}\u{1f980}"), ("long", &long_value)], b"unicode"),
            TestEntry::new(9, &[(&long_key, &long_value)], b"long key"),
        ];
        // Body lengths around every varint width boundary, up to four bytes.
        for length in [127, 128, 16_383, 16_384, (1 << 21) - 1, 1 << 21] {
            let body: Vec<u8> = (0..length).map(|index| (index % 251) as u8).collect();
            cases.push(TestEntry::new(length as i64, &[("len", "x")], &body));
        }
        for entry in &cases {
            let expected = entry.prost_bytes();
            // Appending after existing bytes returns only the bytes appended.
            let mut out = vec![0xAA, 0xBB];
            let used = entry.encode(&mut out);
            assert_eq!(used, out.len() - 2);
            assert_eq!(&out[..2], &[0xAA, 0xBB]);
            assert!(out[2..] == expected[..], "encode_entry differs from prost for {:?}", entry.tags);
            assert_view_agrees_with_prost(message_of(&out[2..]));
        }
    }

    #[test]
    fn encode_entry_writes_the_resolved_timestamp_not_the_entry_one() {
        let entry = EntryRef { fields: &[], timestamp_ns: 0, tags: &[], body: b"b" };
        let mut out = Vec::new();
        encode_entry(&entry, 123, &mut out);
        assert_eq!(LogEntry::decode_length_delimited(&out[..]).unwrap().timestamp_ns, 123);
    }

    #[test]
    fn encode_entry_matches_prost_on_random_entries() {
        const CHARS: [char; 10] = ['a', 'b', 'z', '=', ' ', '\0', '\u{e9}', '\u{65e5}', '\u{1f980}', '\u{7f}'];
        fn random_string(rng: &mut SmallRng, length_max: usize) -> String {
            let length = rng.gen_range(0..=length_max);
            (0..length).map(|_| CHARS[rng.gen_range(0..CHARS.len())]).collect()
        }
        let mut rng = SmallRng::seed_from_u64(0x5eed_e17c);
        let mut raw = Vec::new();
        let mut entries = Vec::new();
        for _ in 0..1000 {
            let timestamp_ns = match rng.gen_range(0..4) {
                0 => 0,
                1 => rng.gen(),
                2 => -rng.gen_range(1..1_000_000_i64),
                _ => rng.gen_range(1..1_i64 << 62),
            };
            let mut tags = BTreeMap::new();
            for _ in 0..rng.gen_range(0..=8) {
                let value_length_max = [0, 3, 200][rng.gen_range(0..3)];
                tags.insert(random_string(&mut rng, 12), random_string(&mut rng, value_length_max));
            }
            let body_max = [0, 100, 20_000][rng.gen_range(0..3)];
            let body = (0..rng.gen_range(0..=body_max)).map(|_| rng.gen()).collect();
            let entry = TestEntry { timestamp_ns, tags, body, fields: BTreeMap::new() };
            let start = raw.len();
            entry.encode(&mut raw);
            assert!(raw[start..] == entry.prost_bytes()[..], "encode_entry differs from prost for {entry:?}");
            assert_view_agrees_with_prost(message_of(&raw[start..]));
            entries.push(entry);
        }
        // The concatenation is a payload whose entries come back in order.
        let header = BlockHeader {
            version: 1,
            codec: Codec::None,
            first_seq: 100,
            entry_count: entries.len() as u32,
            min_ts: 0,
            max_ts: 0,
            raw_len: raw.len() as u32,
            stored_len: raw.len() as u32,
            origin: None,
            crc: 0,
        };
        let mut index = 0;
        for_each_entry(&header, &raw, |seq, bytes| {
            assert_eq!(seq, 100 + index as u64);
            assert_eq!(decode_entry(&header, seq, bytes, 4, 5).unwrap(), entries[index].to_proto(seq, 4, 5));
            index += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(index, entries.len());
    }

    #[test]
    fn entry_view_skips_the_id_fields_that_prost_writes() {
        let entry = TestEntry::new(-7, &[("a", "b"), ("c", "")], b"body");
        let full = entry.to_proto(u64::MAX, 3, 2).encode_to_vec();
        assert_view_agrees_with_prost(&full);
        let view = EntryView::parse(&full).unwrap();
        assert_eq!((view.timestamp_ns, view.body), (-7, &b"body"[..]));
    }

    #[test]
    fn prost_reads_a_varint_tags_field_as_a_map_entry() {
        // Field 3 (tags) with wire type 0 and value 0. prost 0.14's generated
        // map merge never looks at the wire type, so it reads the varint as a
        // length and gets one empty map entry; EntryView, like the protobuf
        // spec, takes it for a varint and sees no tag. encode_entry never
        // writes this; the property tests leave this case out when they
        // compare the two decoders.
        let entry = [3 << 3, 0];
        assert_eq!(LogEntry::decode(&entry[..]).unwrap().tags, BTreeMap::from([(String::new(), String::new())]));
        let mut tags = Vec::new();
        EntryView::parse(&entry).unwrap().for_each_tag(|key, value| tags.push((key, value))).unwrap();
        assert_eq!(tags, []);
        assert!(has_tags_field_of_wire_type_varint(&entry));
    }

    #[test]
    fn check_foreign_block_with_visits_each_entry_in_order() {
        let tags: [&[(&str, &str)]; 4] = [&[("a", "1"), ("b", "2")], &[("a", "1"), ("b", "2")], &[], &[("c", "3")]];
        let bodies: [&[u8]; 4] = [b"first body", b"second", b"", b"ERROR last"];
        let mut raw = Vec::new();
        for (index, (tags, body)) in tags.iter().zip(bodies).enumerate() {
            encode_entry(&EntryRef { fields: &[], timestamp_ns: 0, tags, body }, 10 + index as i64, &mut raw);
        }
        let spec = BlockSpec { fields: false, first_seq: 1, entry_count: 4, min_ts: 10, max_ts: 13, origin: None };
        let mut block = vec![0; encoded_bytes_max(raw.len())];
        let used = encode_block(&spec, &raw, &mut block);
        block.truncate(used);
        type Visited = (Vec<(String, String)>, Vec<u8>);
        let mut seen: Vec<Visited> = Vec::new();
        let (header, union) = check_foreign_block_with(&block, &mut Vec::new(), |tags, body| {
            seen.push((tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), body.to_vec()));
        })
        .unwrap();
        assert_eq!(header.entry_count, 4);
        assert_eq!(union.len(), 3);
        let expected: Vec<Visited> = tags
            .iter()
            .zip(bodies)
            .map(|(tags, body)| (tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), body.to_vec()))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn has_tags_checks_every_pair_of_a_long_query() {
        let keys: Vec<String> = (0..64).map(|index| format!("k{index:02}")).collect();
        let tags: Vec<(&str, &str)> = keys.iter().map(|key| (key.as_str(), "v")).collect();
        let mut out = Vec::new();
        encode_entry(&EntryRef { fields: &[], timestamp_ns: 1, tags: &tags, body: b"" }, 1, &mut out);
        let view = EntryView::parse(message_of(&out)).unwrap();
        assert!(view.has_tags(&tags));
        let mut query = tags.clone();
        query.push(("k00", "another value"));
        assert!(!view.has_tags(&query), "the 65th pair is not carried by the entry");
    }

    // ---- block round trips ----

    /// Encodes, verifies and decodes `entries` as one block and checks every
    /// field that comes back. Returns the header.
    #[test]
    fn a_foreign_block_is_stored_as_is_under_a_new_header() {
        let entries: Vec<TestEntry> = loghub_entries("HDFS").into_iter().take(300).collect();
        let lz4 = encode_entries(&entries, 41, None);
        // A block read from a segment of the cold rewrite travels as zstd.
        for (sent, codec) in [(lz4.clone(), Codec::Lz4), (zstd_of(&lz4), Codec::Zstd)] {
            assert_foreign_block_is_stored_as_is(&entries, &sent, codec);
        }
    }

    fn assert_foreign_block_is_stored_as_is(entries: &[TestEntry], sent: &[u8], codec: Codec) {
        let mut raw = Vec::new();
        let (header, tags) = check_foreign_block(sent, &mut raw).unwrap();
        assert_eq!((header.first_seq, header.entry_count, header.codec), (41, 300, codec));
        let mut want_tags = TagSet::default();
        for entry in entries {
            for (key, value) in &entry.tags {
                insert_tag(&mut want_tags, key, value);
            }
        }
        assert_eq!(tags, want_tags);

        let origin = Origin { node: 7, shard: 2, first_seq: 41 };
        let spec = BlockSpec { first_seq: 9000, origin: Some(origin), ..spec_for(entries, 1, None) };
        let payload = &sent[HEADER_BYTES..];
        let mut out = vec![0; HEADER_BYTES + payload.len()];
        let used = encode_stored_block(&spec, header.codec, header.raw_len as usize, payload, &mut out);
        assert_eq!(used, sent.len(), "same payload, same size");
        assert_eq!(&out[HEADER_BYTES..], payload, "the payload is not compressed again");
        let (stored, decoded) = decode_block(&out, 1, 0).unwrap();
        assert_eq!((stored.first_seq, stored.origin, stored.codec), (9000, Some(origin), codec));
        for (index, (entry, want)) in decoded.iter().zip(entries).enumerate() {
            assert_eq!(entry, &want.to_proto(41 + index as u64, 7, 2));
        }
    }

    #[test]
    fn a_foreign_block_that_is_not_what_this_shard_writes_is_refused() {
        let entries: Vec<TestEntry> = loghub_entries("HDFS").into_iter().take(20).collect();
        let good = encode_entries(&entries, 1, None);
        let mut raw = Vec::new();
        let check = |block: &[u8], raw: &mut Vec<u8>| check_foreign_block(block, raw).map(|(header, _)| header);
        assert!(check(&good, &mut raw).is_ok());
        // Damaged anywhere: the crc.
        let mut flipped = good.clone();
        flipped[HEADER_BYTES + 5] ^= 1;
        assert!(matches!(check(&flipped, &mut raw), Err(BlockError::Checksum { .. })));
        // Bytes after the block.
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(check(&longer, &mut raw), Err(BlockError::Payload(message)) if message.contains("after")));
        // A header whose time range is not its entries' (re-signed).
        let mut wider = good.clone();
        put_u64(&mut wider, MIN_TS_OFFSET, (entries[0].timestamp_ns - 1) as u64);
        resign(&mut wider);
        assert!(matches!(check(&wider, &mut raw), Err(BlockError::Payload(message)) if message.contains("span")));
        // An entry carrying a seq field, a tag that is not UTF-8, too many tags.
        let bad_payloads: [(&str, Vec<u8>); 3] = [
            ("seq", vec![0x08, 0x05, 0x10, 0x01]),
            ("UTF-8", vec![0x10, 0x01, 0x1A, 0x05, 0x0A, 0x01, 0xFF, 0x12, 0x00]),
            ("ENTRY_TAGS_MAX", {
                let tags: Vec<(String, String)> =
                    (0..=limits::ENTRY_TAGS_MAX).map(|i| (format!("k{i}"), "v".into())).collect();
                let tags: Vec<(&str, &str)> = tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
                let mut encoded = Vec::new();
                encode_entry(&EntryRef { fields: &[], timestamp_ns: 1, tags: &tags, body: b"x" }, 1, &mut encoded);
                message_of(&encoded).to_vec()
            }),
        ];
        for (what, entry) in bad_payloads {
            let mut payload = Vec::new();
            put_varint(&mut payload, entry.len() as u64);
            payload.extend_from_slice(&entry);
            let spec = BlockSpec { fields: false, first_seq: 1, entry_count: 1, min_ts: 1, max_ts: 1, origin: None };
            let block = encode(&spec, &payload);
            match check(&block, &mut raw) {
                Err(error) => assert!(error.to_string().contains(what), "{what}: {error}"),
                Ok(header) => panic!("{what}: accepted {header:?}"),
            }
        }
    }

    #[test]
    fn a_foreign_block_checks_each_entry_even_when_its_tags_repeat_an_earlier_ones() {
        // Tags checked once per distinct tag bytes: a repeat must still have
        // its body checked, and a tag set split by another field (a foreign
        // encoder may interleave) must still be read whole.
        let tags = [("host", "web-01"), ("level", "info")];
        let mut entry = Vec::new();
        encode_entry(&EntryRef { fields: &[], timestamp_ns: 5, tags: &tags, body: b"ok" }, 5, &mut entry);
        let good = message_of(&entry).to_vec();
        let mut big = Vec::new();
        let body_over = vec![b'x'; limits::ENTRY_BODY_BYTES_MAX + 1];
        encode_entry(&EntryRef { fields: &[], timestamp_ns: 5, tags: &tags, body: &body_over }, 5, &mut big);
        let big = message_of(&big).to_vec();
        // host=web-01, then the timestamp, then level=info, then the body.
        let split: Vec<u8> = {
            let map_entry = |key: &str, value: &str| {
                let mut field = vec![0x1A, (4 + key.len() + value.len()) as u8, 0x0A, key.len() as u8];
                field.extend_from_slice(key.as_bytes());
                field.extend_from_slice(&[0x12, value.len() as u8]);
                field.extend_from_slice(value.as_bytes());
                field
            };
            let mut bytes = map_entry("host", "web-01");
            bytes.extend_from_slice(&[0x10, 0x05]);
            bytes.extend(map_entry("level", "warn"));
            bytes.extend_from_slice(&[0x22, 0x02, b'o', b'k']);
            bytes
        };
        let block_of = |entries: &[&[u8]]| {
            let mut payload = Vec::new();
            for entry in entries {
                put_varint(&mut payload, entry.len() as u64);
                payload.extend_from_slice(entry);
            }
            let spec = BlockSpec {
                fields: false,
                first_seq: 1,
                entry_count: entries.len() as u32,
                min_ts: 5,
                max_ts: 5,
                origin: None,
            };
            encode(&spec, &payload)
        };
        let mut raw = Vec::new();
        let (_, found) = check_foreign_block(&block_of(&[&good, &good, &split, &split]), &mut raw).unwrap();
        let mut want = TagSet::default();
        for (key, value) in [("host", "web-01"), ("level", "info"), ("level", "warn")] {
            insert_tag(&mut want, key, value);
        }
        assert_eq!(found, want);
        let refused = check_foreign_block(&block_of(&[&good, &good, &big]), &mut raw).unwrap_err();
        assert!(
            refused.to_string().contains("entry 3") && refused.to_string().contains("ENTRY_BODY_BYTES_MAX"),
            "{refused}"
        );
    }

    fn assert_block_round_trip(entries: &[TestEntry], first_seq: u64, origin: Option<Origin>) -> BlockHeader {
        const NODE: u32 = 11;
        const SHARD: u32 = 22;
        let raw = raw_payload(entries);
        let spec = spec_for(entries, first_seq, origin);
        let block = encode(&spec, &raw);
        assert!(block.len() <= HEADER_BYTES + raw.len(), "an incompressible payload is stored as is");

        let header = verify_block(&block).unwrap();
        assert_eq!(header.first_seq, first_seq);
        assert_eq!(header.entry_count as usize, entries.len());
        assert_eq!((header.min_ts, header.max_ts), (spec.min_ts, spec.max_ts));
        assert_eq!(header.raw_len as usize, raw.len());
        assert_eq!(header.block_bytes(), block.len());
        assert_eq!(header.next_seq(), first_seq + entries.len() as u64);
        assert_eq!(header.origin, origin);
        match header.codec {
            Codec::None => assert_eq!(header.stored_len, header.raw_len),
            Codec::Lz4 => assert!(header.stored_len < header.raw_len),
            Codec::Zstd => panic!("encode_block writes LZ4 or stores as is"),
        }
        assert_eq!(parse_header(&block), Ok(header));
        // Bytes after the block are not part of it.
        let mut followed = block.clone();
        followed.extend_from_slice(&[0xAB; 100]);
        assert_eq!(verify_block(&followed), Ok(header));

        let mut payload = vec![1, 2, 3];
        decompress_payload(&header, &block, &mut payload).unwrap();
        assert!(payload == raw, "the payload decompresses to what was encoded");

        let (decoded_header, decoded) = decode_block(&followed, NODE, SHARD).unwrap();
        assert_eq!(decoded_header, header);
        assert_eq!(decoded.len(), entries.len());
        for (index, (got, want)) in decoded.iter().zip(entries).enumerate() {
            let expected = match origin {
                Some(origin) => want.to_proto(origin.first_seq + index as u64, origin.node, origin.shard),
                None => want.to_proto(first_seq + index as u64, NODE, SHARD),
            };
            assert_eq!(*got, expected, "entry {index}");
        }
        // for_each_entry numbers entries in the storing shard, origin or not.
        let mut seqs = Vec::new();
        for_each_entry(&header, &payload, |seq, bytes| {
            seqs.push(seq);
            let view = EntryView::parse(bytes)?;
            let want = &entries[(seq - first_seq) as usize];
            assert_eq!((view.timestamp_ns, view.body), (want.timestamp_ns, &want.body[..]));
            assert!(view.has_tags(&want.tag_refs()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seqs, (first_seq..header.next_seq()).collect::<Vec<_>>());
        header
    }

    #[test]
    fn loghub_blocks_round_trip_local_and_replicated() {
        let mut first_seq = 1;
        for file in crate::loghub::SOURCES {
            let entries = loghub_entries(file);
            assert!(entries.len() >= crate::loghub::SUBSET_LINES, "{file} has {} lines", entries.len());
            for (chunk_index, chunk) in entries.chunks(250).enumerate() {
                let origin = (chunk_index % 2 == 1).then_some(Origin {
                    node: 9,
                    shard: chunk_index as u32,
                    first_seq: 1_000_000 + first_seq,
                });
                let header = assert_block_round_trip(chunk, first_seq, origin);
                assert_eq!(header.codec, Codec::Lz4, "{file}: log text compresses");
                first_seq = header.next_seq();
            }
        }
    }

    #[test]
    fn incompressible_payloads_are_stored_as_is_and_round_trip() {
        let mut rng = SmallRng::seed_from_u64(42);
        for body_len in [1, 64, 1000, 100_000] {
            let body: Vec<u8> = (0..body_len).map(|_| rng.gen()).collect();
            let entries = [TestEntry::new(5, &[("kind", "random")], &body)];
            let header = assert_block_round_trip(&entries, 77, None);
            assert_eq!(header.codec, Codec::None, "{body_len} random bytes");
            let origin = Some(Origin { node: 1, shard: 2, first_seq: 3 });
            assert_eq!(assert_block_round_trip(&entries, 77, origin).codec, Codec::None);
        }
    }

    #[test]
    fn blocks_at_the_limits_round_trip() {
        // The most entries a block holds, each the smallest possible entry: one zero length byte.
        let empty = vec![TestEntry::new(0, &[], b""); limits::BLOCK_ENTRIES_MAX];
        let header = assert_block_round_trip(&empty, 1, None);
        assert_eq!(header.raw_len as usize, limits::BLOCK_ENTRIES_MAX);
        // The largest body, alone in its block.
        let body: Vec<u8> = (0..limits::ENTRY_BODY_BYTES_MAX).map(|index| (index % 7) as u8).collect();
        assert_block_round_trip(&[TestEntry::new(1, &[("big", "yes")], &body)], u64::MAX - 1, None);
        // The largest seqs the header allows.
        let origin = Some(Origin { node: u32::MAX, shard: u32::MAX, first_seq: u64::MAX - 2 });
        let two = [TestEntry::new(i64::MIN, &[], b"a"), TestEntry::new(i64::MAX, &[], b"b")];
        assert_block_round_trip(&two, u64::MAX - 2, origin);
    }

    // ---- damage is detected ----

    #[test]
    fn every_bit_flip_is_rejected() {
        let origin = Some(Origin { node: 5, shard: 6, first_seq: 1000 });
        let blocks = [small_lz4_block(None), small_lz4_block(origin), small_stored_block(), small_zstd_block(origin)];
        for block in blocks {
            for byte in 0..block.len() {
                for bit in 0..8 {
                    let mut damaged = block.clone();
                    damaged[byte] ^= 1 << bit;
                    let error = verify_block(&damaged).expect_err("a flipped bit passed verify_block");
                    match byte {
                        0..4 => assert!(matches!(error, BlockError::BadMagic(_)), "{byte}:{bit}: {error:?}"),
                        // Another known version does not go with the block's codec.
                        4..6 => assert!(
                            matches!(error, BlockError::UnsupportedVersion(_) | BlockError::Corrupt(_)),
                            "{byte}:{bit}: {error:?}"
                        ),
                        60..64 => assert!(matches!(error, BlockError::Checksum { .. }), "{byte}:{bit}: {error:?}"),
                        64.. => assert!(matches!(error, BlockError::Checksum { .. }), "{byte}:{bit}: {error:?}"),
                        _ => {}
                    }
                    assert!(decode_block(&damaged, 0, 0).is_err());
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        for block in [small_lz4_block(None), small_stored_block(), small_zstd_block(None)] {
            for length in 0..block.len() {
                let needed = if length < HEADER_BYTES { HEADER_BYTES } else { block.len() };
                assert_eq!(
                    verify_block(&block[..length]),
                    Err(BlockError::Truncated { needed, available: length }),
                    "cut at {length}"
                );
                assert!(decode_block(&block[..length], 0, 0).is_err());
            }
            assert!(verify_block(&block).is_ok());
        }
    }

    #[test]
    fn blocks_with_fields_round_trip_at_version_2_and_others_stay_at_version_1() {
        let plain = vec![TestEntry::new(5, &[("app", "web")], b"no fields"), TestEntry::new(6, &[], b"none either")];
        let header = assert_block_round_trip(&plain, 1, None);
        assert_eq!(header.version, FORMAT_VERSION_NO_FIELDS, "a block without fields is written as before");

        let mut mixed = plain.clone();
        mixed.push(
            TestEntry::new(7, &[("app", "web")], b"with fields")
                .with_fields(&[("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"), ("user", "")]),
        );
        mixed.push(TestEntry::new(8, &[], b"").with_fields(&[("k=v", "a \"quoted\" value\n")]));
        for origin in [None, Some(Origin { node: 3, shard: 1, first_seq: 40 })] {
            let header = assert_block_round_trip(&mixed, 10, origin);
            assert_eq!(header.version, FORMAT_VERSION_FIELDS);
        }
        // Fields do not leak into tags: the entry's tags are only its tags.
        let mut raw = Vec::new();
        mixed[2].encode(&mut raw);
        let view = EntryView::parse(message_of(&raw)).unwrap();
        assert!(
            view.has_tags(&[("app", "web")]) && !view.has_tags(&[("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")])
        );
        assert!(view.has_fields(&[("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"), ("user", "")]));
        assert!(!view.has_fields(&[("app", "web")]));
    }

    #[test]
    fn a_version_1_foreign_block_with_fields_is_refused() {
        let entries = vec![TestEntry::new(5, &[], b"body").with_fields(&[("trace", "1")])];
        let raw = raw_payload(&entries);
        let spec = BlockSpec { fields: false, ..spec_for(&entries, 1, None) };
        let block = encode(&spec, &raw);
        let mut scratch = Vec::new();
        let error = check_foreign_block(&block, &mut scratch).unwrap_err();
        assert!(error.to_string().contains("carries no fields"), "{error}");
        let block = encode(&spec_for(&entries, 1, None), &raw);
        assert!(check_foreign_block(&block, &mut scratch).is_ok());
    }

    #[test]
    fn validate_entry_names_each_field_limit() {
        fn limit_of(fields: &[(&str, &str)]) -> String {
            let entry = EntryRef { timestamp_ns: 1, tags: &[], body: b"", fields };
            match validate_entry(&entry) {
                Err(EntryError::Limit(limit)) => limit.to_string(),
                Err(other) => other.to_string(),
                Ok(()) => "ok".into(),
            }
        }
        let long_key = "k".repeat(limits::FIELD_KEY_BYTES_MAX + 1);
        let long_value = "v".repeat(limits::FIELD_VALUE_BYTES_MAX + 1);
        let max_value = "v".repeat(limits::FIELD_VALUE_BYTES_MAX);
        let keys: Vec<String> = (0..=limits::ENTRY_FIELDS_MAX).map(|index| format!("k{index}")).collect();
        let many: Vec<(&str, &str)> = keys.iter().map(|key| (key.as_str(), "v")).collect();
        let big: Vec<(&str, &str)> = keys[..8].iter().map(|key| (key.as_str(), max_value.as_str())).collect();
        assert_eq!(limit_of(&[("a", "b")]), "ok");
        assert_eq!(limit_of(&many[..limits::ENTRY_FIELDS_MAX]), "ok");
        assert!(limit_of(&many).contains("ENTRY_FIELDS_MAX"));
        assert!(limit_of(&[(long_key.as_str(), "v")]).contains("FIELD_KEY_BYTES_MAX"));
        assert!(limit_of(&[("k", long_value.as_str())]).contains("FIELD_VALUE_BYTES_MAX"));
        assert!(limit_of(&big).contains("ENTRY_FIELDS_BYTES_MAX"));
        assert_eq!(limit_of(&[("", "v")]), "empty field key");
        assert!(limit_of(&[("a", "1"), ("a", "2")]).contains("duplicate field key"));
        // The largest entry still fits its encoded bound.
        let huge: Vec<(&str, &str)> = keys[..3].iter().map(|key| (key.as_str(), max_value.as_str())).collect();
        let body = vec![b'x'; limits::ENTRY_BODY_BYTES_MAX];
        let entry = EntryRef { timestamp_ns: 1, tags: &[], body: &body, fields: &huge };
        validate_entry(&entry).unwrap();
        let mut out = Vec::new();
        assert!(encode_entry(&entry, 1, &mut out) <= limits::ENTRY_ENCODED_BYTES_MAX);
    }

    #[test]
    fn another_version_asks_for_an_upgrade() {
        for version in [0, 4, u16::MAX] {
            let mut block = small_lz4_block(None);
            put_u16(&mut block, VERSION_OFFSET, version);
            // With the crc recomputed, only the version differs from a valid block.
            resign(&mut block);
            let error = verify_block(&block).unwrap_err();
            assert_eq!(error, BlockError::UnsupportedVersion(version));
            assert!(error.to_string().contains("upgrade required"), "{error}");
            assert_eq!(decode_block(&block, 0, 0).unwrap_err(), error);
        }
    }

    #[test]
    fn another_codec_asks_for_an_upgrade() {
        for codec in [3, 4, u8::MAX] {
            let error = verify_edited(|block| block[CODEC_OFFSET] = codec).unwrap_err();
            assert_eq!(error, BlockError::UnsupportedCodec(codec));
            assert!(error.to_string().contains("upgrade required"), "{error}");
        }
    }

    #[test]
    fn only_an_all_zero_header_is_zero() {
        assert_eq!(parse_header(&[0; HEADER_BYTES]), Err(BlockError::Zero));
        assert_eq!(verify_block(&[0; 4096]), Err(BlockError::Zero));
        let mut block = small_lz4_block(None);
        block[..HEADER_BYTES].fill(0);
        assert_eq!(verify_block(&block), Err(BlockError::Zero));
        for byte in 0..HEADER_BYTES {
            let mut header = [0; HEADER_BYTES];
            header[byte] = 1;
            assert!(matches!(parse_header(&header), Err(BlockError::BadMagic(_))), "byte {byte}");
        }
    }

    /// A valid header edited by `edit` and re-signed; returns what verify_block says.
    fn verify_edited(edit: impl FnOnce(&mut [u8])) -> Result<BlockHeader, BlockError> {
        let mut block = small_lz4_block(None);
        edit(&mut block);
        resign(&mut block);
        let verified = verify_block(&block);
        assert_eq!(
            parse_header(&block).map(|header| header.first_seq),
            verified.clone().map(|header| header.first_seq)
        );
        verified
    }

    fn limit_name(result: Result<BlockHeader, BlockError>) -> &'static str {
        match result {
            Err(BlockError::Limit(limit)) => {
                assert!(BlockError::Limit(limit.clone()).to_string().contains(limit.name));
                limit.name
            }
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    #[test]
    fn header_lengths_are_checked_against_the_limits_before_use() {
        // parse_header refuses these from the header alone, so nothing is
        // allocated or decompressed for them (decode_block verifies first).
        assert_eq!(limit_name(verify_edited(|block| put_u32(block, RAW_LEN_OFFSET, u32::MAX))), "BLOCK_RAW_BYTES_MAX");
        let raw_len = limits::BLOCK_RAW_BYTES_MAX as u32 + 1;
        assert_eq!(limit_name(verify_edited(|block| put_u32(block, RAW_LEN_OFFSET, raw_len))), "BLOCK_RAW_BYTES_MAX");
        assert_eq!(
            limit_name(verify_edited(|block| put_u32(block, ENTRY_COUNT_OFFSET, u32::MAX))),
            "BLOCK_ENTRIES_MAX"
        );
        let entries = limits::BLOCK_ENTRIES_MAX as u32 + 1;
        assert_eq!(limit_name(verify_edited(|block| put_u32(block, ENTRY_COUNT_OFFSET, entries))), "BLOCK_ENTRIES_MAX");
        assert_eq!(
            limit_name(verify_edited(|block| put_u32(block, STORED_LEN_OFFSET, u32::MAX))),
            "BLOCK_STORED_BYTES_MAX"
        );
        let mut block = small_lz4_block(None);
        put_u32(&mut block, RAW_LEN_OFFSET, u32::MAX);
        resign(&mut block);
        assert!(matches!(decode_block(&block, 0, 0), Err(BlockError::Limit(_))));
        assert!(matches!(parse_header(&block[..HEADER_BYTES]), Err(BlockError::Limit(_))));

        // At the limit, the header is fine and the payload decides.
        let at_limit = verify_edited(|block| put_u32(block, RAW_LEN_OFFSET, limits::BLOCK_RAW_BYTES_MAX as u32));
        assert!(at_limit.is_ok());
    }

    #[test]
    fn each_header_check_names_its_field() {
        let corrupt = |edit: fn(&mut [u8])| match verify_edited(edit) {
            Err(BlockError::Corrupt(what)) => what,
            other => panic!("expected Corrupt, got {other:?}"),
        };
        let zstd_rule = "codec 2 (zstd) comes with format version 3, and only it";
        assert_eq!(corrupt(|block| block[CODEC_OFFSET] = Codec::Zstd as u8), zstd_rule);
        assert_eq!(corrupt(|block| put_u16(block, VERSION_OFFSET, FORMAT_VERSION_ZSTD)), zstd_rule);
        assert_eq!(corrupt(|block| block[FLAGS_OFFSET] = 2), "unknown flags");
        assert_eq!(corrupt(|block| put_u64(block, FIRST_SEQ_OFFSET, 0)), "first_seq is 0");
        assert_eq!(corrupt(|block| put_u32(block, ENTRY_COUNT_OFFSET, 0)), "entry_count is 0");
        assert_eq!(corrupt(|block| put_u64(block, FIRST_SEQ_OFFSET, u64::MAX - 1)), "seq range overflows");
        assert_eq!(corrupt(|block| put_u64(block, MIN_TS_OFFSET, i64::MAX as u64)), "min_ts > max_ts");
        assert_eq!(corrupt(|block| block[CODEC_OFFSET] = 0), "uncompressed block with stored_len != raw_len");
        assert_eq!(corrupt(|block| put_u32(block, RAW_LEN_OFFSET, 3)), "raw_len smaller than entry_count");
        assert_eq!(corrupt(|block| block[FLAGS_OFFSET] = FLAG_ORIGIN), "bad origin seq range");
        assert_eq!(
            corrupt(|block| {
                block[FLAGS_OFFSET] = FLAG_ORIGIN;
                put_u64(block, ORIGIN_FIRST_SEQ_OFFSET, u64::MAX);
            }),
            "bad origin seq range"
        );
        for offset in [ORIGIN_FIRST_SEQ_OFFSET, ORIGIN_NODE_OFFSET, ORIGIN_SHARD_OFFSET] {
            let mut block = small_lz4_block(None);
            block[offset] = 1;
            resign(&mut block);
            assert_eq!(verify_block(&block), Err(BlockError::Corrupt("origin fields set without the origin flag")));
        }
    }

    #[test]
    fn length_fields_that_disagree_with_the_payload_are_payload_errors() {
        let payload_error = |block: &[u8]| match decode_block(block, 0, 0) {
            Err(BlockError::Payload(message)) => message,
            other => panic!("expected a payload error, got {other:?}"),
        };
        let block = small_lz4_block(None);
        let header = parse_header(&block).unwrap();
        for raw_len in [header.raw_len - 1, header.raw_len + 1] {
            let mut edited = block.clone();
            put_u32(&mut edited, RAW_LEN_OFFSET, raw_len);
            resign(&mut edited);
            assert!(payload_error(&edited).starts_with("lz4"), "raw_len {raw_len}");
        }
        let mut edited = block.clone();
        put_u32(&mut edited, ENTRY_COUNT_OFFSET, header.entry_count + 1);
        resign(&mut edited);
        assert!(payload_error(&edited).contains("bad entry length prefix"));
        let mut edited = block.clone();
        put_u32(&mut edited, ENTRY_COUNT_OFFSET, header.entry_count - 1);
        resign(&mut edited);
        assert!(payload_error(&edited).contains("after the last entry"));

        // The same for a stored payload, where raw_len and stored_len move together.
        let block = small_stored_block();
        let header = parse_header(&block).unwrap();
        let mut edited = block.clone();
        put_u32(&mut edited, RAW_LEN_OFFSET, header.raw_len - 1);
        put_u32(&mut edited, STORED_LEN_OFFSET, header.raw_len - 1);
        resign(&mut edited);
        assert!(payload_error(&edited[..edited.len() - 1]).contains("runs past the payload"));
    }

    // ---- entry limits ----

    #[test]
    fn validate_entry_names_each_limit() {
        fn limit_of(entry: &EntryRef<'_>) -> &'static str {
            match validate_entry(entry) {
                Err(EntryError::Limit(limit)) => {
                    assert!(EntryError::Limit(limit.clone()).to_string().contains(limit.name));
                    limit.name
                }
                other => panic!("expected a limit error, got {other:?}"),
            }
        }
        let body_max = vec![b'x'; limits::ENTRY_BODY_BYTES_MAX];
        assert_eq!(validate_entry(&EntryRef { fields: &[], timestamp_ns: 0, tags: &[], body: &body_max }), Ok(()));
        let body_over = vec![b'x'; limits::ENTRY_BODY_BYTES_MAX + 1];
        assert_eq!(
            limit_of(&EntryRef { fields: &[], timestamp_ns: 0, tags: &[], body: &body_over }),
            "ENTRY_BODY_BYTES_MAX"
        );

        let keys: Vec<String> = (0..=limits::ENTRY_TAGS_MAX).map(|index| format!("key{index}")).collect();
        let tags: Vec<(&str, &str)> = keys.iter().map(|key| (key.as_str(), "v")).collect();
        let at_max = EntryRef { fields: &[], timestamp_ns: 0, tags: &tags[..limits::ENTRY_TAGS_MAX], body: b"" };
        assert_eq!(validate_entry(&at_max), Ok(()));
        assert_eq!(limit_of(&EntryRef { fields: &[], timestamp_ns: 0, tags: &tags, body: b"" }), "ENTRY_TAGS_MAX");

        let key_max = "k".repeat(limits::TAG_KEY_BYTES_MAX);
        let key_over = "k".repeat(limits::TAG_KEY_BYTES_MAX + 1);
        let value_max = "v".repeat(limits::TAG_VALUE_BYTES_MAX);
        let value_over = "v".repeat(limits::TAG_VALUE_BYTES_MAX + 1);
        let tags = [(key_max.as_str(), value_max.as_str())];
        assert_eq!(validate_entry(&EntryRef { fields: &[], timestamp_ns: 0, tags: &tags, body: b"" }), Ok(()));
        let tags = [("a", "1"), (key_over.as_str(), "v")];
        assert_eq!(limit_of(&EntryRef { fields: &[], timestamp_ns: 0, tags: &tags, body: b"" }), "TAG_KEY_BYTES_MAX");
        let tags = [("a", "1"), ("b", value_over.as_str())];
        assert_eq!(limit_of(&EntryRef { fields: &[], timestamp_ns: 0, tags: &tags, body: b"" }), "TAG_VALUE_BYTES_MAX");

        let tags = [("a", "1"), ("", "v")];
        assert_eq!(
            validate_entry(&EntryRef { fields: &[], timestamp_ns: 0, tags: &tags, body: b"" }),
            Err(EntryError::EmptyTagKey)
        );
        let tags = [("a", "1"), ("b", "2"), ("a", "3")];
        assert_eq!(
            validate_entry(&EntryRef { fields: &[], timestamp_ns: 0, tags: &tags, body: b"" }),
            Err(EntryError::DuplicateTagKey("a".to_owned()))
        );
    }

    // ---- property tests: damaged input never panics ----

    /// Runs every decoding step on `bytes`; each may fail, none may panic.
    /// Returns whether the block decoded.
    fn exercise(bytes: &[u8]) -> bool {
        let Ok(header) = verify_block(bytes) else {
            return false;
        };
        assert_eq!(parse_header(bytes), Ok(header));
        assert!(header.block_bytes() <= bytes.len());
        let mut raw = Vec::new();
        if decompress_payload(&header, bytes, &mut raw).is_ok() {
            assert_eq!(raw.len(), header.raw_len as usize);
            let _ = for_each_entry(&header, &raw, |_, entry| {
                exercise_entry(entry);
                Ok(())
            });
        }
        match decode_block(bytes, 1, 2) {
            Ok((decoded_header, entries)) => {
                assert_eq!(decoded_header, header);
                assert_eq!(entries.len(), header.entry_count as usize);
                true
            }
            Err(_) => false,
        }
    }

    /// Parses one entry's bytes both ways; when prost and [`EntryView`]
    /// both accept them, they must agree.
    fn exercise_entry(entry: &[u8]) {
        let Ok(view) = EntryView::parse(entry) else {
            return;
        };
        let mut tags = BTreeMap::new();
        let tags_parsed = view.for_each_tag(|key, value| {
            // A repeated key keeps its last value, as in prost's map.
            tags.insert(key.to_owned(), value.to_owned());
        });
        let _ = view.has_tags(&[("level", "INFO"), ("", "")]);
        if let (Ok(expected), Ok(())) = (LogEntry::decode(entry), tags_parsed) {
            assert_eq!(view.timestamp_ns, expected.timestamp_ns);
            assert_eq!(view.body, &expected.body[..]);
            if !has_tags_field_of_wire_type_varint(entry) {
                assert_eq!(tags, expected.tags);
            }
        }
    }

    /// Whether a top-level field 3 is written as a varint, which prost
    /// wrongly reads as a map entry (see
    /// `prost_reads_a_varint_tags_field_as_a_map_entry`). Only for entries
    /// that [`EntryView::parse`] accepted, so wire types are 0 or 2.
    fn has_tags_field_of_wire_type_varint(mut entry: &[u8]) -> bool {
        while let Some((key, used)) = read_varint(entry) {
            if key == 3 << 3 {
                return true;
            }
            let rest = &entry[used..];
            entry = match key & 7 {
                0 => match read_varint(rest) {
                    Some((_, used)) => &rest[used..],
                    None => return false,
                },
                _ => match split_delimited(rest) {
                    Ok((_, after)) => after,
                    Err(_) => return false,
                },
            };
        }
        false
    }

    /// Rewrites the header of `bytes` (longer than a header) so that it
    /// passes every range check, keeping the arbitrary values where the
    /// format allows them, and signs it: the payload is then what is tested.
    fn make_header_plausible(bytes: &mut [u8]) {
        let payload_len = (bytes.len() - HEADER_BYTES) as u32;
        bytes[..4].copy_from_slice(&MAGIC);
        bytes[CODEC_OFFSET] %= 3;
        let version =
            if bytes[CODEC_OFFSET] == Codec::Zstd as u8 { FORMAT_VERSION_ZSTD } else { FORMAT_VERSION_FIELDS };
        put_u16(bytes, VERSION_OFFSET, version);
        bytes[FLAGS_OFFSET] &= FLAG_ORIGIN;
        let first_seq = (read_u64(bytes, FIRST_SEQ_OFFSET) % (u64::MAX / 2)).max(1);
        put_u64(bytes, FIRST_SEQ_OFFSET, first_seq);
        let (min_ts, max_ts) = (read_u64(bytes, MIN_TS_OFFSET) as i64, read_u64(bytes, MAX_TS_OFFSET) as i64);
        put_u64(bytes, MIN_TS_OFFSET, min_ts.min(max_ts) as u64);
        put_u64(bytes, MAX_TS_OFFSET, min_ts.max(max_ts) as u64);
        let entry_count = (read_u32(bytes, ENTRY_COUNT_OFFSET) % 16 + 1).min(payload_len);
        put_u32(bytes, ENTRY_COUNT_OFFSET, entry_count);
        let raw_len = if bytes[CODEC_OFFSET] == Codec::None as u8 {
            payload_len
        } else {
            (read_u32(bytes, RAW_LEN_OFFSET) % (4 * payload_len + 16)).max(entry_count)
        };
        put_u32(bytes, RAW_LEN_OFFSET, raw_len);
        put_u32(bytes, STORED_LEN_OFFSET, payload_len);
        if bytes[FLAGS_OFFSET] == FLAG_ORIGIN {
            let origin_first_seq = (read_u64(bytes, ORIGIN_FIRST_SEQ_OFFSET) % (u64::MAX / 2)).max(1);
            put_u64(bytes, ORIGIN_FIRST_SEQ_OFFSET, origin_first_seq);
        } else {
            bytes[ORIGIN_FIRST_SEQ_OFFSET..ENTRY_COUNT_OFFSET].fill(0);
            bytes[ORIGIN_NODE_OFFSET..CRC_OFFSET].fill(0);
        }
        resign(bytes);
    }

    /// One protobuf field as a fuzzer would write it: the `LogEntry` field
    /// numbers and others, every wire type, lengths that may run past the
    /// end, and tag map entries whose own fields are just as mixed.
    fn soup_field() -> impl Strategy<Value = Vec<u8>> {
        let text = prop_oneof![".{0,6}".prop_map(String::into_bytes), prop::collection::vec(any::<u8>(), 0..6)];
        let map_field = (0_u64..4, prop_oneof![4 => Just(2_u64), 1 => 0_u64..8], text.clone())
            .prop_map(|(field, wire_type, bytes)| encode_soup_field(field, wire_type, &bytes, 0));
        let map_entry = prop::collection::vec(map_field, 0..4).prop_map(|fields| fields.concat());
        let any_field = (0_u64..8, 0_u64..8, text, any::<u64>())
            .prop_map(|(field, wire_type, bytes, number)| encode_soup_field(field, wire_type, &bytes, number));
        prop_oneof![map_entry.prop_map(|entry| encode_soup_field(3, 2, &entry, 0)), any_field]
    }

    fn encode_soup_field(field: u64, wire_type: u64, bytes: &[u8], number: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, (field << 3) | wire_type);
        match wire_type {
            0 => put_varint(&mut out, number),
            1 => out.extend_from_slice(&number.to_le_bytes()),
            // Now and then a length one past the bytes.
            2 => {
                put_varint(&mut out, bytes.len() as u64 + u64::from(number % 16 == 1));
                out.extend_from_slice(bytes);
            }
            5 => out.extend_from_slice(&(number as u32).to_le_bytes()),
            _ => out.extend_from_slice(bytes),
        }
        out
    }

    fn valid_blocks() -> Vec<Vec<u8>> {
        vec![
            small_lz4_block(None),
            small_lz4_block(Some(Origin { node: 1, shard: 2, first_seq: 3 })),
            small_stored_block(),
            small_zstd_block(None),
        ]
    }

    /// A length field and the value written into it.
    fn length_edit() -> impl Strategy<Value = (usize, u32)> {
        let field = prop::sample::select(vec![ENTRY_COUNT_OFFSET, RAW_LEN_OFFSET, STORED_LEN_OFFSET]);
        let value = prop_oneof![
            Just(0_u32),
            Just(1),
            Just(u32::MAX),
            Just(limits::BLOCK_RAW_BYTES_MAX as u32),
            Just(limits::BLOCK_RAW_BYTES_MAX as u32 + 1),
            0_u32..2048,
            any::<u32>(),
        ];
        (field, value)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            exercise(&bytes);
            // Behind a plausible, signed header, the payload decoder gets arbitrary bytes.
            if bytes.len() > HEADER_BYTES {
                make_header_plausible(&mut bytes);
                prop_assert!(verify_block(&bytes).is_ok());
                exercise(&bytes);
            }
        }

        #[test]
        fn mutated_blocks_never_panic(
            which in 0_usize..4,
            overwrites in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            length_edits in prop::collection::vec(length_edit(), 0..3),
            truncate in prop::option::of(any::<prop::sample::Index>()),
            sign in any::<bool>(),
        ) {
            let mut block = valid_blocks().swap_remove(which);
            for (position, value) in overwrites {
                let position = position.index(block.len());
                block[position] = value;
            }
            for (offset, value) in length_edits {
                put_u32(&mut block, offset, value);
            }
            if let Some(cut) = truncate {
                block.truncate(cut.index(block.len() + 1));
            }
            if sign {
                resign(&mut block);
            }
            exercise(&block);
        }

        #[test]
        fn garbage_payloads_behind_a_valid_crc_never_panic(
            raw in prop::collection::vec(any::<u8>(), 1..1024),
            entry_count in 1_u32..16,
            compressible in any::<bool>(),
        ) {
            // Runs of one byte make LZ4 compress, so both codecs carry garbage.
            let raw = if compressible { raw.iter().flat_map(|&byte| [byte; 8]).collect() } else { raw };
            let entry_count = entry_count.min(raw.len() as u32);
            let spec = BlockSpec { fields: false,  first_seq: 1, entry_count, min_ts: 0, max_ts: 0, origin: None };
            let block = encode(&spec, &raw);
            prop_assert!(verify_block(&block).is_ok());
            exercise(&block);
        }

        #[test]
        fn field_soup_entries_decode_alike_in_prost_and_entry_view(
            entries in prop::collection::vec(prop::collection::vec(soup_field(), 0..6), 1..12),
        ) {
            let mut raw = Vec::new();
            for fields in &entries {
                let message = fields.concat();
                put_varint(&mut raw, message.len() as u64);
                raw.extend_from_slice(&message);
            }
            let spec = BlockSpec { fields: false,  first_seq: 1, entry_count: entries.len() as u32, min_ts: 0, max_ts: 0, origin: None };
            exercise(&encode(&spec, &raw));
        }

        #[test]
        fn random_entries_round_trip_and_match_prost(
            entries in prop::collection::vec(
                (
                    any::<i64>(),
                    prop::collection::btree_map(".{0,12}", ".{0,40}", 0..6),
                    prop::collection::vec(any::<u8>(), 0..600),
                    prop::option::weighted(0.3, prop::collection::btree_map(".{1,12}", ".{0,40}", 0..5)),
                ),
                1..20,
            ),
            first_seq in 1_u64..u64::MAX / 2,
            origin in prop::option::of((any::<u32>(), any::<u32>(), 1_u64..u64::MAX / 2)),
        ) {
            let entries: Vec<TestEntry> = entries
                .into_iter()
                .map(|(timestamp_ns, tags, body, fields)| TestEntry {
                    timestamp_ns,
                    tags,
                    body,
                    fields: fields.unwrap_or_default(),
                })
                .collect();
            for entry in &entries {
                let mut out = Vec::new();
                entry.encode(&mut out);
                prop_assert!(out == entry.prost_bytes());
                assert_view_agrees_with_prost(message_of(&out));
            }
            let origin = origin.map(|(node, shard, first_seq)| Origin { node, shard, first_seq });
            assert_block_round_trip(&entries, first_seq, origin);
        }
    }
}
