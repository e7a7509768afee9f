//! Segment files: naming and the header page. Pure code.
//!
//! A segment is one preallocated file holding a run of a shard's log. Its
//! first 4 KiB page is the segment header; blocks follow from offset
//! [`DATA_OFFSET`], packed back to back, up to the file's capacity.
//!
//! ```text
//! offset size field            meaning
//!      0    4 magic            b"WRMS"
//!      4    2 format_version   1
//!      6    2 flags            bit 0: cold (rewritten with zstd); others 0
//!      8    8 first_seq        seq of the segment's first entry (also its name)
//!     16    4 shard            shard number that owns the file
//!     20    4 node             node id that wrote it
//!     24    8 capacity_bytes   preallocated file size
//!     32    8 created_unix_ns  creation time
//!     40    4 crc32            crc32 of bytes [0, 40)
//!     44 4052 zero
//! ```
//!
//! A **cold** segment is one that the cold rewrite (`shard::cold`) wrote
//! in place of a sealed segment: its blocks may be zstd (codec 2), its
//! index was rewritten with it, and the file holds its blocks only, up to
//! the page after the last one (`capacity_bytes` is that size). The flag
//! tells the rewrite, after a restart, which segments are done, at the cost
//! of one page read per sealed segment. A build from before the flag reads
//! the bits as reserved and ignores them (it reads sealed headers only in
//! `wormdb inspect`); a later flag bit is refused with "upgrade required".

use std::path::Path;

use super::PAGE_BYTES;

/// The four bytes that open every segment file.
pub const MAGIC: [u8; 4] = *b"WRMS";
/// The segment header format this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 4;
const FLAGS_OFFSET: usize = VERSION_OFFSET + 2;
const FIRST_SEQ_OFFSET: usize = FLAGS_OFFSET + 2;
const SHARD_OFFSET: usize = FIRST_SEQ_OFFSET + 8;
const NODE_OFFSET: usize = SHARD_OFFSET + 4;
const CAPACITY_OFFSET: usize = NODE_OFFSET + 4;
const CREATED_OFFSET: usize = CAPACITY_OFFSET + 8;
const CRC_OFFSET: usize = CREATED_OFFSET + 8;
const HEADER_USED_BYTES: usize = CRC_OFFSET + 4;

/// Flag bit: the segment was rewritten by the cold rewrite.
const FLAG_COLD: u16 = 1;

/// Where the first block of a segment starts: right after the header page.
pub const DATA_OFFSET: u64 = PAGE_BYTES as u64;

const _: () = assert!(HEADER_USED_BYTES == 44);
const _: () = assert!(HEADER_USED_BYTES <= PAGE_BYTES);

/// The decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Seq of the first entry stored in the segment.
    pub first_seq: u64,
    /// Owning shard.
    pub shard: u32,
    /// Writing node.
    pub node: u32,
    /// Preallocated size of the file.
    pub capacity_bytes: u64,
    /// Creation time, nanoseconds since the Unix epoch. A cold segment
    /// keeps the time of the segment it replaced.
    pub created_unix_ns: u64,
    /// Written by the cold rewrite (see the module doc).
    pub cold: bool,
}

/// Why a header page is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Never written (all zero): a segment whose creation did not finish.
    #[error("segment header was never written")]
    Zero,
    /// Not a wormdb segment.
    #[error("bad segment magic")]
    BadMagic,
    /// Written by another format version.
    #[error("segment format version {0} is not supported; upgrade required")]
    UnsupportedVersion(u16),
    /// Flag bits this build does not know.
    #[error("segment header flags {0:#06x} are not supported; upgrade required")]
    UnsupportedFlags(u16),
    /// The checksum does not match.
    #[error("segment header checksum mismatch")]
    Checksum,
    /// Shorter than a page.
    #[error("segment header truncated")]
    Truncated,
}

impl SegmentHeader {
    /// Encodes the header into a full page.
    pub fn encode(&self) -> [u8; PAGE_BYTES] {
        let mut page = [0u8; PAGE_BYTES];
        page[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&MAGIC);
        page[VERSION_OFFSET..FLAGS_OFFSET].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let flags = if self.cold { FLAG_COLD } else { 0 };
        page[FLAGS_OFFSET..FIRST_SEQ_OFFSET].copy_from_slice(&flags.to_le_bytes());
        page[FIRST_SEQ_OFFSET..SHARD_OFFSET].copy_from_slice(&self.first_seq.to_le_bytes());
        page[SHARD_OFFSET..NODE_OFFSET].copy_from_slice(&self.shard.to_le_bytes());
        page[NODE_OFFSET..CAPACITY_OFFSET].copy_from_slice(&self.node.to_le_bytes());
        page[CAPACITY_OFFSET..CREATED_OFFSET].copy_from_slice(&self.capacity_bytes.to_le_bytes());
        page[CREATED_OFFSET..CRC_OFFSET].copy_from_slice(&self.created_unix_ns.to_le_bytes());
        let crc = crc32fast::hash(&page[..CRC_OFFSET]);
        page[CRC_OFFSET..HEADER_USED_BYTES].copy_from_slice(&crc.to_le_bytes());
        page
    }

    /// Decodes and verifies a header page.
    pub fn decode(page: &[u8]) -> Result<Self, HeaderError> {
        if page.len() < HEADER_USED_BYTES {
            return Err(HeaderError::Truncated);
        }
        if page[MAGIC_OFFSET..VERSION_OFFSET] != MAGIC {
            if page[..HEADER_USED_BYTES].iter().all(|&byte| byte == 0) {
                return Err(HeaderError::Zero);
            }
            return Err(HeaderError::BadMagic);
        }
        let version = u16::from_le_bytes([page[VERSION_OFFSET], page[VERSION_OFFSET + 1]]);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let u64_at = |offset: usize| {
            let mut word = [0; 8];
            word.copy_from_slice(&page[offset..offset + 8]);
            u64::from_le_bytes(word)
        };
        let u32_at = |offset: usize| {
            let mut word = [0; 4];
            word.copy_from_slice(&page[offset..offset + 4]);
            u32::from_le_bytes(word)
        };
        if crc32fast::hash(&page[..CRC_OFFSET]) != u32_at(CRC_OFFSET) {
            return Err(HeaderError::Checksum);
        }
        let flags = u16::from_le_bytes([page[FLAGS_OFFSET], page[FLAGS_OFFSET + 1]]);
        if flags & !FLAG_COLD != 0 {
            return Err(HeaderError::UnsupportedFlags(flags));
        }
        Ok(SegmentHeader {
            first_seq: u64_at(FIRST_SEQ_OFFSET),
            shard: u32_at(SHARD_OFFSET),
            node: u32_at(NODE_OFFSET),
            capacity_bytes: u64_at(CAPACITY_OFFSET),
            created_unix_ns: u64_at(CREATED_OFFSET),
            cold: flags & FLAG_COLD != 0,
        })
    }
}

/// File name of the segment whose first entry is `first_seq`. Zero-padded
/// so that names sort like the numbers.
pub fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// File name of the index written when that segment is sealed.
pub fn index_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.idx")
}

/// File name of the new segment file the cold rewrite writes before it
/// takes the segment's name (a `*.tmp`, which recovery deletes).
pub fn cold_segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg.cold.tmp")
}

/// File name of the index the cold rewrite writes for that file.
pub fn cold_index_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.idx.cold.tmp")
}

/// What kind of file a directory entry is, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `NNN.seg`
    Segment(u64),
    /// `NNN.idx`
    Index(u64),
    /// `*.tmp`: an index file, a spare segment or a cold rewrite being
    /// written when the process died.
    Temporary,
}

/// Classifies a file in a shard directory; `None` for anything else.
pub fn classify(path: &Path) -> Option<FileKind> {
    let name = path.file_name()?.to_str()?;
    if name.ends_with(".tmp") {
        return Some(FileKind::Temporary);
    }
    let (stem, extension) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let first_seq: u64 = stem.parse().ok()?;
    match extension {
        "seg" => Some(FileKind::Segment(first_seq)),
        "idx" => Some(FileKind::Index(first_seq)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_every_bit_flip() {
        let header = SegmentHeader {
            first_seq: 42,
            shard: 3,
            node: 7,
            capacity_bytes: 1 << 28,
            created_unix_ns: 123,
            cold: false,
        };
        let page = header.encode();
        assert_eq!(SegmentHeader::decode(&page), Ok(header));
        let cold = SegmentHeader { cold: true, capacity_bytes: 1 << 20, ..header };
        assert_eq!(SegmentHeader::decode(&cold.encode()), Ok(cold));
        assert_eq!(cold.encode()[FLAGS_OFFSET..FIRST_SEQ_OFFSET], [1, 0]);
        let mut later_flag = cold.encode();
        later_flag[FLAGS_OFFSET] = 3;
        let crc = crc32fast::hash(&later_flag[..CRC_OFFSET]);
        later_flag[CRC_OFFSET..HEADER_USED_BYTES].copy_from_slice(&crc.to_le_bytes());
        let error = SegmentHeader::decode(&later_flag).unwrap_err();
        assert_eq!(error, HeaderError::UnsupportedFlags(3));
        assert!(error.to_string().contains("upgrade required"));
        for byte in 0..HEADER_USED_BYTES {
            for bit in 0..8 {
                let mut bad = page;
                bad[byte] ^= 1 << bit;
                assert!(SegmentHeader::decode(&bad).is_err(), "flip at {byte}:{bit} accepted");
            }
        }
        assert_eq!(SegmentHeader::decode(&[0u8; PAGE_BYTES]), Err(HeaderError::Zero));
    }

    #[test]
    fn names_sort_like_numbers_and_classify_back() {
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(classify(Path::new(&segment_file_name(77))), Some(FileKind::Segment(77)));
        assert_eq!(classify(Path::new(&index_file_name(77))), Some(FileKind::Index(77)));
        assert_eq!(classify(Path::new("x.idx.tmp")), Some(FileKind::Temporary));
        assert_eq!(classify(Path::new(&cold_segment_file_name(77))), Some(FileKind::Temporary));
        assert_eq!(classify(Path::new(&cold_index_file_name(77))), Some(FileKind::Temporary));
        assert_eq!(classify(Path::new("notes.txt")), None);
        assert_eq!(classify(Path::new("12.seg")), None);
    }
}
