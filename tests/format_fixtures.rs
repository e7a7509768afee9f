//! Format-stability fixtures: files written by version 1 of the block, the
//! segment header and the index file formats, kept in `tests/fixtures/v1/`,
//! by version 2 of the index file and block formats (a block whose
//! entries carry fields), in `tests/fixtures/v2/`, by version 3 of the
//! block format (a zstd block, as the cold rewrite writes it) and of the
//! index file (tag sets, word filters), in `tests/fixtures/v3/`, and by
//! version 4 of the index file (filters without short words), in
//! `tests/fixtures/v4/`.
//!
//! Each current file must still decode to exactly the content hard-coded
//! here, and the same bytes with the version field set to the next version
//! must fail with an explicit "upgrade required" (whether or not the
//! checksums were fixed up: every decoder reads the version before the crc).
//! The version 1 index file is outdated: it is refused with an explicit
//! "written by an older build" error, which makes a shard rebuild it by
//! scanning its segment (`crash_recovery.rs` opens a shard with it).
//!
//! The files were written once by the ignored `generate_v1_fixtures` and
//! `generate_v2_fixtures` tests (`cargo test --test format_fixtures --
//! --ignored`). Do not regenerate them to make a failure here go away: a
//! failure means this build reads or writes a format differently from the
//! build that wrote them. A new format version gets its own directory, and
//! the old files stay.
//!
//! The LogHub subset in `tests/data/loghub/`, which tests read when the full
//! samples are not beside the repository, is checked here too.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use prost::Message;
use wormdb::codec::block::{self, BlockError, BlockHeader, BlockSpec, Codec, EntryRef, EntryView, Origin};
use wormdb::index::words::WordQuery;
use wormdb::index::{
    self, decode_origin_table, decode_summary, BlockMeta, BlockTerms, OriginSummary, Predicates, SegmentIndex,
};
use wormdb::limits;
use wormdb::proto::LogEntry;
use wormdb::shard::segment::{HeaderError, SegmentHeader};

const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1/");
const V2_FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v2/");
const V3_FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v3/");
const V4_FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v4/");

/// Every fixture stays below this, so the repository stays small.
const FIXTURE_BYTES_MAX: usize = 8 * 1024;
/// The vendored LogHub subset stays below this (it is about 300 KB), so the
/// repository stays small.
const LOGHUB_SUBSET_BYTES_MAX: usize = 512 * 1024;

// ---- the expected content, which is the format contract ----

/// One entry as stored: timestamp, tags in key order, body.
struct Expected {
    timestamp_ns: i64,
    tags: &'static [(&'static str, &'static str)],
    body: &'static str,
}

const HDFS_TAGS: &[(&str, &str)] = &[("level", "INFO"), ("source", "hdfs")];

/// `block.bin`: the first three lines of LogHub's `HDFS_2k.log`, with the
/// timestamps their text gives (2008-11-09, UTC), seqs 1 to 3, no origin.
const BLOCK_ENTRIES: [Expected; 3] = [
    Expected {
        timestamp_ns: 1_226_262_975_000_000_000,
        tags: HDFS_TAGS,
        body: "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block \
               blk_38865049064139660 terminating",
    },
    Expected {
        timestamp_ns: 1_226_263_087_000_000_000,
        tags: HDFS_TAGS,
        body: "081109 203807 222 INFO dfs.DataNode$PacketResponder: PacketResponder 0 for block \
               blk_-6952295868487656571 terminating",
    },
    Expected {
        timestamp_ns: 1_226_263_205_000_000_000,
        tags: HDFS_TAGS,
        body: "081109 204005 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated: \
               10.251.73.220:50010 is added to blk_7128370237687728475 size 67108864",
    },
];
const BLOCK_FIRST_SEQ: u64 = 1;
/// What the fixed header of `block.bin` says.
const BLOCK_HEADER: BlockHeader = BlockHeader {
    version: 1,
    codec: Codec::Lz4,
    first_seq: BLOCK_FIRST_SEQ,
    entry_count: 3,
    min_ts: 1_226_262_975_000_000_000,
    max_ts: 1_226_263_205_000_000_000,
    raw_len: 528,
    stored_len: 365,
    origin: None,
    crc: 0x40d6_5a83,
};

/// `block-replicated.bin`: a block stored at seqs 4 and 5 of this shard that
/// holds entries first stored on node 2, shard 5, at seqs 1000 and 1001. The
/// first is LogHub's first `OpenSSH_2k.log` line; the second has a negative
/// timestamp and neither tags nor body.
const REPLICATED_ENTRIES: [Expected; 2] = [
    Expected {
        timestamp_ns: 1_260_428_146_000_000_000,
        tags: &[("host", "LabSZ"), ("source", "openssh")],
        body: "Dec 10 06:55:46 LabSZ sshd[24200]: reverse mapping checking getaddrinfo for \
               ns.marryaldkfaczcz.com [173.234.31.186] failed - POSSIBLE BREAK-IN ATTEMPT!",
    },
    Expected { timestamp_ns: -1, tags: &[], body: "" },
];
const REPLICATED_FIRST_SEQ: u64 = 4;
const REPLICATED_ORIGIN: Origin = Origin { node: 2, shard: 5, first_seq: 1000 };
/// What the fixed header of `block-replicated.bin` says.
const REPLICATED_HEADER: BlockHeader = BlockHeader {
    version: 1,
    codec: Codec::None,
    first_seq: REPLICATED_FIRST_SEQ,
    entry_count: 2,
    min_ts: -1,
    max_ts: 1_260_428_146_000_000_000,
    raw_len: 212,
    stored_len: 212,
    origin: Some(REPLICATED_ORIGIN),
    crc: 0x4b5d_89f7,
};

/// `segment-header.bin`: the header page of the segment the blocks are in.
const SEGMENT_HEADER: SegmentHeader = SegmentHeader {
    first_seq: 1,
    shard: 3,
    node: 7,
    capacity_bytes: limits::SEGMENT_BYTES_DEFAULT,
    created_unix_ns: 1_226_262_974_000_000_000,
    cold: false,
};
/// The node and shard that `block.bin` was stored by.
const NODE: u32 = 7;
const SHARD: u32 = 3;

/// `v2/index.idx`: the index of that segment (`v1/index.idx` described the
/// same blocks, without their origins). Its first two blocks are the block
/// fixtures, packed from the end of the header page; the third is not a
/// fixture file.
const INDEX_BLOCKS: [BlockMeta; 3] = [
    BlockMeta {
        offset: 4096,
        len: 429,
        first_seq: 1,
        entry_count: 3,
        min_ts: 1_226_262_975_000_000_000,
        max_ts: 1_226_263_205_000_000_000,
        origin: None,
    },
    BlockMeta {
        offset: 4525,
        len: 276,
        first_seq: 4,
        entry_count: 2,
        min_ts: -1,
        max_ts: 1_260_428_146_000_000_000,
        origin: Some(REPLICATED_ORIGIN),
    },
    BlockMeta {
        offset: 4801,
        len: 1234,
        first_seq: 6,
        entry_count: 10,
        min_ts: 1_226_263_300_000_000_000,
        max_ts: 1_226_263_400_000_000_000,
        origin: None,
    },
];
/// The watermarks `v2/index.idx` carries over from earlier segments: node 2
/// shard 5 (whose blocks here end at origin seq 1001) and node 4 shard 1
/// (which has no block here).
const INDEX_CARRIED_WATERMARKS: [((u32, u32), u64); 2] = [((2, 5), 999), ((4, 1), 77)];
/// The origin table of `v2/index.idx`.
const INDEX_ORIGINS: [((u32, u32), OriginSummary); 2] = [
    ((2, 5), OriginSummary { watermark: 1001, seqs: Some((1000, 1001)) }),
    ((4, 1), OriginSummary { watermark: 77, seqs: None }),
];
/// The tags of each index block.
const INDEX_BLOCK_TAGS: [&[(&str, &str)]; 3] =
    [HDFS_TAGS, &[("host", "LabSZ"), ("source", "openssh")], &[("level", "WARN"), ("source", "hdfs")]];
/// Every indexed pair and its postings, in key then value order.
const INDEX_POSTINGS: [(&str, &str, &[u32]); 5] = [
    ("host", "LabSZ", &[1]),
    ("level", "INFO", &[0]),
    ("level", "WARN", &[2]),
    ("source", "hdfs", &[0, 2]),
    ("source", "openssh", &[1]),
];
const INDEX_RAW_BYTES: u64 = 5000;

// ---- helpers ----

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(FIXTURE_DIR).join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    read_fixture_at(fixture_path(name))
}

fn read_v2_fixture(name: &str) -> Vec<u8> {
    read_fixture_at(PathBuf::from(V2_FIXTURE_DIR).join(name))
}

fn read_v3_fixture(name: &str) -> Vec<u8> {
    read_fixture_at(PathBuf::from(V3_FIXTURE_DIR).join(name))
}

fn read_fixture_at(path: PathBuf) -> Vec<u8> {
    let name = path.display().to_string();
    let bytes = std::fs::read(&path).unwrap_or_else(|error| {
        panic!("fixture {} cannot be read ({error}); it is checked in with the tests", path.display())
    });
    assert!(bytes.len() < FIXTURE_BYTES_MAX, "{name} is {} bytes", bytes.len());
    bytes
}

fn expected_proto(entry: &Expected, seq: u64, node_id: u32, shard: u32) -> LogEntry {
    LogEntry {
        fields: Default::default(),
        seq,
        timestamp_ns: entry.timestamp_ns,
        tags: entry.tags.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect(),
        body: entry.body.as_bytes().to_vec().into(),
        node_id,
        shard,
    }
}

/// The uncompressed payload that this build writes for `entries`.
fn raw_payload(entries: &[Expected]) -> Vec<u8> {
    let mut raw = Vec::new();
    for entry in entries {
        let entry_ref =
            EntryRef { fields: &[], timestamp_ns: entry.timestamp_ns, tags: entry.tags, body: entry.body.as_bytes() };
        block::validate_entry(&entry_ref).unwrap();
        block::encode_entry(&entry_ref, entry.timestamp_ns, &mut raw);
    }
    raw
}

/// Sets the u16 version field at offset 4 (the same place in all three formats).
fn set_version(bytes: &mut [u8], version: u16) {
    bytes[4..6].copy_from_slice(&version.to_le_bytes());
}

/// Rewrites the crc at `crc_offset`, which covers `bytes[..crc_offset]` and
/// then `also`.
fn put_crc(bytes: &mut [u8], crc_offset: usize, also: std::ops::Range<usize>) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..crc_offset]);
    hasher.update(&bytes[also]);
    let crc = hasher.finalize();
    bytes[crc_offset..crc_offset + 4].copy_from_slice(&crc.to_le_bytes());
}

fn resign_block(bytes: &mut [u8]) {
    put_crc(bytes, 60, block::HEADER_BYTES..bytes.len());
}

fn resign_segment_header(bytes: &mut [u8]) {
    put_crc(bytes, 40, 0..0);
}

/// Re-signs the header of a version 2 index file (its crc sits at 92).
fn resign_index(bytes: &mut [u8]) {
    put_crc(bytes, 92, 0..0);
}

// ---- blocks ----

/// Checks a block fixture against its expected header and entries.
fn assert_block_fixture(name: &str, expected_header: BlockHeader, entries: &[Expected]) {
    let bytes = read_fixture(name);
    assert_eq!(&bytes[..4], b"WRMB");
    assert_eq!(&bytes[4..6], &[1, 0], "format version 1, little-endian");

    let header = block::verify_block(&bytes).unwrap();
    assert_eq!(header, expected_header);
    assert_eq!(header.block_bytes(), bytes.len());

    let (_, decoded) = block::decode_block(&bytes, NODE, SHARD).unwrap();
    assert_eq!(decoded.len(), entries.len());
    for (index, (got, want)) in decoded.iter().zip(entries).enumerate() {
        let expected = match header.origin {
            Some(origin) => expected_proto(want, origin.first_seq + index as u64, origin.node, origin.shard),
            None => expected_proto(want, header.first_seq + index as u64, NODE, SHARD),
        };
        assert_eq!(*got, expected, "{name}: entry {index}");
    }

    // This build still writes the entries of version 1 byte for byte.
    let mut payload = Vec::new();
    block::decompress_payload(&header, &bytes, &mut payload).unwrap();
    assert!(payload == raw_payload(entries), "{name}: encode_entry no longer writes the stored bytes");
    let mut index = 0;
    block::for_each_entry(&header, &payload, |seq, entry_bytes| {
        let want = &entries[index];
        assert_eq!(seq, header.first_seq + index as u64);
        let view = EntryView::parse(entry_bytes)?;
        assert_eq!((view.timestamp_ns, view.body), (want.timestamp_ns, want.body.as_bytes()));
        assert!(view.has_tags(want.tags));
        assert_eq!(
            LogEntry::decode(entry_bytes).unwrap(),
            expected_proto(want, 0, 0, 0),
            "no seq, node or shard stored"
        );
        index += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(index, entries.len());
}

#[test]
fn v1_block_decodes_to_its_entries() {
    assert_block_fixture("block.bin", BLOCK_HEADER, &BLOCK_ENTRIES);
    assert_eq!(BLOCK_HEADER.block_bytes(), INDEX_BLOCKS[0].len as usize);
}

#[test]
fn v1_replicated_block_decodes_with_its_origin_ids() {
    assert_block_fixture("block-replicated.bin", REPLICATED_HEADER, &REPLICATED_ENTRIES);
    assert_eq!(REPLICATED_HEADER.block_bytes(), INDEX_BLOCKS[1].len as usize);
}

#[test]
fn v4_blocks_ask_for_an_upgrade() {
    for (name, bytes) in [
        ("block.bin", read_fixture("block.bin")),
        ("block-replicated.bin", read_fixture("block-replicated.bin")),
        ("v3/block-zstd.bin", read_v3_fixture("block-zstd.bin")),
    ] {
        let mut bytes = bytes;
        set_version(&mut bytes, 4);
        // The version is read before the crc, so a stale crc does not hide it...
        let stale = block::verify_block(&bytes).unwrap_err();
        // ...and with the crc fixed up, only the version is wrong.
        resign_block(&mut bytes);
        let resigned = block::decode_block(&bytes, NODE, SHARD).unwrap_err();
        for error in [stale, resigned] {
            assert_eq!(error, BlockError::UnsupportedVersion(4), "{name}");
            assert!(error.to_string().contains("upgrade required"), "{name}: {error}");
        }
    }
}

/// A build of block version 2 refuses a zstd block by its version (3),
/// which it does not know: "upgrade required", where the codec byte (2)
/// alone would have been "corrupt block header: unknown codec". This build
/// pairs the two both ways: version 3 is zstd, and zstd is version 3.
#[test]
fn version_3_and_codec_2_go_together() {
    let mut lz4_at_3 = read_fixture("block.bin");
    set_version(&mut lz4_at_3, 3);
    resign_block(&mut lz4_at_3);
    let mut zstd_at_2 = read_v3_fixture("block-zstd.bin");
    set_version(&mut zstd_at_2, 2);
    resign_block(&mut zstd_at_2);
    for bytes in [lz4_at_3, zstd_at_2] {
        assert!(matches!(block::verify_block(&bytes), Err(BlockError::Corrupt(_))));
    }
    let mut codec_3 = read_v3_fixture("block-zstd.bin");
    codec_3[6] = 3;
    resign_block(&mut codec_3);
    let error = block::verify_block(&codec_3).unwrap_err();
    assert_eq!(error, BlockError::UnsupportedCodec(3));
    assert!(error.to_string().contains("upgrade required"), "{error}");
}

/// `v3/block-zstd.bin`: the entries of `block.bin` (seqs 1 to 3, no
/// origin), recompressed with zstd as the cold rewrite does: every header
/// field of `block.bin` but the version, the codec, the stored length and
/// the crc.
#[test]
fn v3_zstd_block_decodes_to_its_entries() {
    let bytes = read_v3_fixture("block-zstd.bin");
    assert_eq!(&bytes[..7], b"WRMB\x03\x00\x02", "format version 3, codec 2 (zstd)");
    let header = block::verify_block(&bytes).unwrap();
    assert_eq!(
        header,
        BlockHeader { version: 3, codec: Codec::Zstd, stored_len: V3_STORED_LEN, crc: V3_CRC, ..BLOCK_HEADER }
    );
    assert_eq!(header.block_bytes(), bytes.len());
    // One zstd frame (its magic number first), with its content size.
    assert_eq!(&bytes[block::HEADER_BYTES..block::HEADER_BYTES + 4], &[0x28, 0xb5, 0x2f, 0xfd]);
    let (_, decoded) = block::decode_block(&bytes, NODE, SHARD).unwrap();
    assert_eq!(decoded.len(), BLOCK_ENTRIES.len());
    for (index, (got, want)) in decoded.iter().zip(&BLOCK_ENTRIES).enumerate() {
        assert_eq!(*got, expected_proto(want, BLOCK_FIRST_SEQ + index as u64, NODE, SHARD), "entry {index}");
    }
    // The same payload as the LZ4 block, byte for byte.
    let mut payload = Vec::new();
    block::decompress_payload(&header, &bytes, &mut payload).unwrap();
    assert!(payload == raw_payload(&BLOCK_ENTRIES), "the zstd payload is the entries as encode_entry writes them");
    // The stored bytes are not pinned: another zstd library may compress
    // the same payload differently, and every such frame decodes alike.
}

/// What `v3/block-zstd.bin`'s header says besides `block.bin`'s fields.
const V3_STORED_LEN: u32 = 342;
const V3_CRC: u32 = 0xd109_91a7;

fn zstd_block() -> Vec<u8> {
    let lz4 = read_fixture("block.bin");
    let header = block::verify_block(&lz4).unwrap();
    let mut recompressor = wormdb::codec::zstd::Recompressor::new(limits::COLD_ZSTD_LEVEL);
    let mut out = Vec::new();
    let done = wormdb::codec::zstd::recompress_block(&mut recompressor, &header, &lz4, &mut out).unwrap();
    assert_eq!(done, wormdb::codec::zstd::Recompressed::Zstd(out.len()), "zstd shrinks block.bin");
    out
}

/// Writes `v3/block-zstd.bin`, the first block of version 3.
#[test]
#[ignore = "writes tests/fixtures/v3/block-zstd.bin: run once, when the block version 3 was introduced"]
fn generate_v3_block_fixture() {
    std::fs::create_dir_all(V3_FIXTURE_DIR).unwrap();
    let block = zstd_block();
    assert!(block.len() < FIXTURE_BYTES_MAX);
    std::fs::write(PathBuf::from(V3_FIXTURE_DIR).join("block-zstd.bin"), &block).unwrap();
    eprintln!("wrote v3/block-zstd.bin: {} bytes", block.len());
    eprintln!("v3/block-zstd.bin header: {:?}", block::parse_header(&block).unwrap());
}

/// `v2/block-fields.bin`: the entries of `block.bin` at seqs 1 to 3, the
/// first and the last with fields (the middle one has none, as entries of a
/// version 2 block may), no origin.
const FIELDS_BLOCK_FIELDS: [&[(&str, &str)]; 3] =
    [&[("request_id", "r-1"), ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")], &[], &[("size", "67108864")]];

#[test]
fn v2_block_with_fields_decodes_to_its_entries() {
    let bytes = read_v2_fixture("block-fields.bin");
    assert_eq!(&bytes[..6], b"WRMB\x02\x00", "format version 2, little-endian");
    let header = block::verify_block(&bytes).unwrap();
    assert_eq!(header.version, 2);
    assert_eq!((header.first_seq, header.entry_count, header.origin), (1, 3, None));
    assert_eq!((header.min_ts, header.max_ts), (BLOCK_ENTRIES[0].timestamp_ns, BLOCK_ENTRIES[2].timestamp_ns));
    assert_eq!(header.block_bytes(), bytes.len());
    let (_, decoded) = block::decode_block(&bytes, NODE, SHARD).unwrap();
    assert_eq!(decoded.len(), 3);
    for (index, (got, (want, fields))) in decoded.iter().zip(BLOCK_ENTRIES.iter().zip(FIELDS_BLOCK_FIELDS)).enumerate()
    {
        let mut expected = expected_proto(want, 1 + index as u64, NODE, SHARD);
        expected.fields = fields.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
        assert_eq!(*got, expected, "entry {index}");
    }
    // This build still writes the entries byte for byte.
    let mut payload = Vec::new();
    block::decompress_payload(&header, &bytes, &mut payload).unwrap();
    assert!(payload == fields_block_payload(), "encode_entry no longer writes the stored bytes");
    assert_eq!(fields_block(), bytes, "this build writes the same block");
}

fn fields_block_payload() -> Vec<u8> {
    let mut raw = Vec::new();
    for (entry, fields) in BLOCK_ENTRIES.iter().zip(FIELDS_BLOCK_FIELDS) {
        let entry_ref =
            EntryRef { fields, timestamp_ns: entry.timestamp_ns, tags: entry.tags, body: entry.body.as_bytes() };
        block::validate_entry(&entry_ref).unwrap();
        block::encode_entry(&entry_ref, entry.timestamp_ns, &mut raw);
    }
    raw
}

fn fields_block() -> Vec<u8> {
    let raw = fields_block_payload();
    let spec = BlockSpec {
        fields: true,
        first_seq: 1,
        entry_count: 3,
        min_ts: BLOCK_ENTRIES[0].timestamp_ns,
        max_ts: BLOCK_ENTRIES[2].timestamp_ns,
        origin: None,
    };
    let mut out = vec![0; block::encoded_bytes_max(raw.len())];
    let used = block::encode_block(&spec, &raw, &mut out);
    out.truncate(used);
    out
}

/// Writes `v2/block-fields.bin`, the first block of version 2.
#[test]
#[ignore = "writes tests/fixtures/v2/block-fields.bin: run once, when the block version 2 was introduced"]
fn generate_v2_block_fixture() {
    std::fs::create_dir_all(V2_FIXTURE_DIR).unwrap();
    let block = fields_block();
    assert!(block.len() < FIXTURE_BYTES_MAX);
    std::fs::write(PathBuf::from(V2_FIXTURE_DIR).join("block-fields.bin"), &block).unwrap();
    eprintln!("wrote v2/block-fields.bin: {} bytes", block.len());
}

// ---- segment header ----

#[test]
fn v1_segment_header_decodes_to_its_fields() {
    let bytes = read_fixture("segment-header.bin");
    assert_eq!(bytes.len(), 4096, "a whole page");
    assert_eq!(&bytes[..4], b"WRMS");
    assert_eq!(&bytes[4..6], &[1, 0], "format version 1, little-endian");
    assert_eq!(SegmentHeader::decode(&bytes), Ok(SEGMENT_HEADER));
    assert!(SEGMENT_HEADER.encode()[..] == bytes[..], "this build writes the same page");
}

#[test]
fn v2_segment_header_asks_for_an_upgrade() {
    let mut bytes = read_fixture("segment-header.bin");
    set_version(&mut bytes, 2);
    let stale = SegmentHeader::decode(&bytes).unwrap_err();
    resign_segment_header(&mut bytes);
    let resigned = SegmentHeader::decode(&bytes).unwrap_err();
    for error in [stale, resigned] {
        assert_eq!(error, HeaderError::UnsupportedVersion(2));
        assert!(error.to_string().contains("upgrade required"), "{error}");
    }
}

// ---- index file ----

#[test]
fn v1_index_is_refused_as_outdated_so_its_segment_is_rescanned() {
    let bytes = read_fixture("index.idx");
    assert_eq!(&bytes[..4], b"WRMI");
    assert_eq!(&bytes[4..6], &[1, 0], "format version 1, little-endian");
    // The file is still what version 1 wrote: its header crc (at 84, over
    // [0, 84)) and its body crc (at 80, over the body from 88) hold.
    let stored = |offset: usize| u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap());
    assert_eq!(stored(84), crc32fast::hash(&bytes[..84]));
    assert_eq!(stored(80), 0xfe94_8bda);
    assert_eq!(crc32fast::hash(&bytes[88..]), 0xfe94_8bda);
    for error in [SegmentIndex::decode(&bytes).unwrap_err(), decode_summary(&bytes).unwrap_err()] {
        assert_eq!(error, index::Error::OutdatedVersion(1));
        assert!(error.to_string().contains("rebuilds the index from its segment"), "{error}");
    }
}

#[test]
fn v2_index_decodes_to_its_blocks_origins_and_postings() {
    let bytes = read_v2_fixture("index.idx");
    assert_eq!(&bytes[..4], b"WRMI");
    assert_eq!(&bytes[4..6], &[2, 0], "format version 2, little-endian");
    let index = SegmentIndex::decode(&bytes).unwrap();
    assert_eq!(index.blocks(), &INDEX_BLOCKS[..]);
    assert_eq!(index.segment_first_seq(), 1);
    assert_eq!(index.next_seq(), 16);
    assert_eq!(index.tag_values(), INDEX_POSTINGS.len());
    assert_eq!(index.tag_values_max(), limits::INDEX_TAG_VALUES_PER_SEGMENT_MAX);
    assert_eq!(index.saturated_from(), None);
    assert_eq!(index.time_range(), Some((-1, 1_260_428_146_000_000_000)));
    assert_eq!(index.data_end(), 6035);
    assert_eq!(index.origins().iter().map(|(key, origin)| (*key, *origin)).collect::<Vec<_>>(), INDEX_ORIGINS);
    for (key, value, positions) in INDEX_POSTINGS {
        assert_eq!(index.postings(key, value), Some(positions), "{key}={value}");
    }
    assert_eq!(index.postings("level", "ERROR"), None);
    assert_eq!(index.candidates(&[("source", "hdfs")], i64::MIN, i64::MAX), [0, 2]);
    assert_eq!(index.block_for_seq(5), Some(1));

    let summary = decode_summary(&bytes).unwrap();
    assert_eq!((summary.segment_first_seq, summary.next_seq), (1, 16));
    assert_eq!((summary.block_count, summary.tag_values, summary.origin_count), (3, 5, 2));
    assert_eq!(summary.tag_values_max as usize, limits::INDEX_TAG_VALUES_PER_SEGMENT_MAX);
    assert_eq!(summary.saturated_from, None);
    assert_eq!(summary.time_range(), index.time_range());
    assert_eq!(summary.data_end, index.data_end());
    assert_eq!(summary.raw_bytes, INDEX_RAW_BYTES);
    assert_eq!(summary.file_bytes(), bytes.len() as u64);
    assert_eq!((summary.body_crc, summary.origins_crc), V2_INDEX_CRCS);
    // The origin table decodes from the start of the file alone.
    let origins = decode_origin_table(&bytes[..summary.origin_table_end()], &summary).unwrap();
    assert_eq!(&origins, index.origins());

    // This build writes version 4; the version 2 file re-encodes to a
    // version 4 file that decodes to the same index: no tag set (every
    // conjunction falls back to the pair postings) and no word filter.
    let again = SegmentIndex::decode(&index.encode(INDEX_RAW_BYTES)).unwrap();
    assert!(again == index, "a version 2 index re-encoded as version 4 changed");
    assert_eq!(index.candidates(&[("level", "INFO"), ("source", "hdfs")], i64::MIN, i64::MAX), [0]);
    assert_eq!(index.candidates(&[("level", "WARN"), ("source", "hdfs")], i64::MIN, i64::MAX), [2]);
    let words = WordQuery::parse(["PacketResponder"]).unwrap();
    let predicates = Predicates { tags: &[], words: words.filter_hashes(), from_ts: i64::MIN, to_ts: i64::MAX };
    assert_eq!(index.candidates_for(&predicates), [0, 1, 2], "no filter: every block may hold any word");
}

/// `(body_crc, origins_crc)` of `v2/index.idx`.
const V2_INDEX_CRCS: (u32, u32) = (0xc0ba_abe3, 0x7947_b678);

/// `v3/index.idx` and `v4/index.idx`: the same three blocks, now with what
/// version 3 added: blocks 0 and 1 were given their entries (tag sets and
/// word filters of `block.bin` and `replicated.bin`), block 2 only the union
/// of its tags (one set, no word filter), as a block pushed by another node
/// is. Version 4 is the same file, but its filters leave out the words of
/// one and two bytes, which version 3's hold.
fn current_index_file_with_terms() -> Vec<u8> {
    let mut index = SegmentIndex::new(SEGMENT_HEADER.first_seq);
    for (position, (meta, tags)) in INDEX_BLOCKS.into_iter().zip(INDEX_BLOCK_TAGS).enumerate() {
        let entries: &[Expected] = match position {
            0 => &BLOCK_ENTRIES,
            1 => &REPLICATED_ENTRIES,
            _ => &[],
        };
        let terms = if entries.is_empty() {
            BlockTerms::from_union(tags.iter().copied())
        } else {
            let mut terms = BlockTerms::with_words();
            for entry in entries {
                terms.add_entry(entry.tags.iter().copied());
                terms.add_body(entry.body.as_bytes());
            }
            terms
        };
        index.push_block_terms(meta, &terms);
    }
    index.carry_watermarks(&INDEX_CARRIED_WATERMARKS.into_iter().collect());
    index.encode(INDEX_RAW_BYTES)
}

#[test]
#[ignore = "writes tests/fixtures/v4/index.idx: run once, when a format version is introduced"]
fn generate_v4_fixtures() {
    std::fs::create_dir_all(V4_FIXTURE_DIR).unwrap();
    let index_file = current_index_file_with_terms();
    assert!(index_file.len() < FIXTURE_BYTES_MAX, "index.idx is {} bytes", index_file.len());
    std::fs::write(PathBuf::from(V4_FIXTURE_DIR).join("index.idx"), &index_file).unwrap();
    eprintln!("wrote v4/index.idx: {} bytes", index_file.len());
    eprintln!("v4/index.idx summary: {:?}", decode_summary(&index_file).unwrap());
}

/// Checks that `bytes`, `v3/index.idx` or `v4/index.idx`, decodes to its
/// blocks, sets and filters, and returns the index.
fn check_index_with_sets_and_filters(bytes: &[u8], version: u16) -> SegmentIndex {
    assert_eq!(&bytes[..4], b"WRMI");
    assert_eq!(&bytes[4..6], &version.to_le_bytes(), "format version {version}, little-endian");
    let index = SegmentIndex::decode(bytes).unwrap();
    assert_eq!(index.blocks(), &INDEX_BLOCKS[..]);
    assert_eq!(index.next_seq(), 16);
    assert_eq!(index.tag_values(), INDEX_POSTINGS.len());
    assert_eq!(index.origins().iter().map(|(key, origin)| (*key, *origin)).collect::<Vec<_>>(), INDEX_ORIGINS);
    for (key, value, positions) in INDEX_POSTINGS {
        assert_eq!(index.postings(key, value), Some(positions), "{key}={value}");
    }
    let all = (i64::MIN, i64::MAX);
    assert_eq!(index.candidates(&[("level", "INFO"), ("source", "hdfs")], all.0, all.1), [0]);
    // No entry carries both, though blocks 0 and 1 carry each: no set does.
    assert_eq!(index.candidates(&[("level", "INFO"), ("host", "LabSZ")], all.0, all.1), Vec::<u32>::new());
    assert_eq!(index.candidates(&[("host", "LabSZ"), ("source", "openssh")], all.0, all.1), [1]);
    assert_eq!(index.candidates(&[("level", "WARN"), ("source", "hdfs")], all.0, all.1), [2]);
    let with_words = |list: &[&str]| {
        let query = WordQuery::parse(list.iter().copied()).unwrap();
        index.candidates_for(&Predicates { tags: &[], words: query.filter_hashes(), from_ts: all.0, to_ts: all.1 })
    };
    // Block 2 has no filter: a candidate for any word.
    assert_eq!(with_words(&["packetresponder"]), [0, 2]);
    assert_eq!(with_words(&["BREAK", "in", "sshd"]), [1, 2]);
    assert_eq!(with_words(&["blk_7128370237687728475", "terminating"]), [0, 2]);
    assert_eq!(with_words(&["absent"]), [2]);
    assert_eq!(with_words(&["terminating", "sshd"]), [2], "no block holds both");
    // A word shorter than filters keep is never ruled out by one.
    assert_eq!(with_words(&["zz"]), [0, 1, 2]);

    let summary = decode_summary(bytes).unwrap();
    assert_eq!((summary.version, summary.tag_sets, summary.sets_saturated_from), (version, 3, None));
    assert!(summary.filters_bytes > 0);
    assert_eq!(summary.file_bytes(), bytes.len() as u64);
    // The body alone decodes; the filters load after.
    let without = SegmentIndex::decode_without_filters(&bytes[..summary.filters_offset() as usize]).unwrap();
    assert!(!without.filters_loaded());
    without.load_filters(&summary, &bytes[summary.filters_offset() as usize..]).unwrap();
    assert!(without == index);
    index
}

#[test]
fn v3_index_decodes_to_its_blocks_sets_and_filters() {
    let bytes = read_v3_fixture("index.idx");
    let index = check_index_with_sets_and_filters(&bytes, 3);
    // Re-encoded as version 4, with the same filters (a superset of what
    // version 4 builds, which a reader may use alike).
    let again = index.encode(INDEX_RAW_BYTES);
    assert_eq!(decode_summary(&again).unwrap().version, 4);
    assert!(SegmentIndex::decode(&again).unwrap() == index);
}

#[test]
fn v4_index_decodes_to_its_blocks_sets_and_filters() {
    let bytes = read_fixture_at(PathBuf::from(V4_FIXTURE_DIR).join("index.idx"));
    check_index_with_sets_and_filters(&bytes, 4);
    assert!(current_index_file_with_terms() == bytes, "this build writes the same file");
    // Version 3 built the same blocks with the short words in the filters.
    assert!(bytes.len() < read_v3_fixture("index.idx").len());
}

#[test]
fn v5_index_asks_for_an_upgrade() {
    let mut bytes = read_v2_fixture("index.idx");
    set_version(&mut bytes, 5);
    let stale = SegmentIndex::decode(&bytes).unwrap_err();
    let stale_summary = decode_summary(&bytes).unwrap_err();
    resign_index(&mut bytes);
    let resigned = SegmentIndex::decode(&bytes).unwrap_err();
    for error in [stale, stale_summary, resigned] {
        assert_eq!(error, index::Error::UnsupportedVersion(5));
        assert!(error.to_string().contains("upgrade required"), "{error}");
    }
}

// ---- the vendored LogHub subset ----

/// `tests/data/loghub/` is what its README says: the first
/// `SUBSET_LINES` lines of each sample, line ends as LogHub ships them, with
/// LogHub's license beside them, small; and, where the full samples are
/// beside the repository, their prefix byte for byte (so a test sees the
/// same first lines either way).
#[test]
fn vendored_loghub_subset_is_the_head_of_each_sample() {
    use common::loghub;
    let mut total_bytes = 0;
    for name in loghub::SOURCES {
        let file = format!("{name}_2k.log");
        let subset = std::fs::read(loghub::subset_dir().join(&file)).unwrap();
        total_bytes += subset.len();
        let lines = subset.split_inclusive(|&byte| byte == b'\n');
        assert_eq!(lines.clone().count(), loghub::SUBSET_LINES, "{file}");
        assert!(lines.clone().all(|line| line.ends_with(b"\r\n")), "{file}: every line ends in CRLF, as in LogHub");
        match std::fs::read(loghub::full_dir().join(&file)) {
            Ok(full) => assert!(full.starts_with(&subset), "{file} is not the head of the full sample"),
            Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{file}"),
        }
    }
    assert!(total_bytes < LOGHUB_SUBSET_BYTES_MAX, "the subset holds {total_bytes} bytes");
    let license = std::fs::read_to_string(loghub::subset_dir().join("LICENSE")).unwrap();
    assert!(license.contains("https://github.com/logpai/loghub"), "{license}");
}

// ---- the generator ----

fn encode_block_of(entries: &[Expected], first_seq: u64, origin: Option<Origin>) -> Vec<u8> {
    let raw = raw_payload(entries);
    let spec = BlockSpec {
        fields: false,
        first_seq,
        entry_count: entries.len() as u32,
        min_ts: entries.iter().map(|entry| entry.timestamp_ns).min().unwrap(),
        max_ts: entries.iter().map(|entry| entry.timestamp_ns).max().unwrap(),
        origin,
    };
    let mut out = vec![0; block::encoded_bytes_max(raw.len())];
    let used = block::encode_block(&spec, &raw, &mut out);
    out.truncate(used);
    out
}

/// The first `count` lines of a LogHub sample, without their CRLF.
fn loghub_lines(name: &str, count: usize) -> Vec<String> {
    common::loghub::lines(name).into_iter().take(count).collect()
}

/// The index file of the block fixtures' segment, as this build writes it.
fn current_index_file() -> Vec<u8> {
    let mut index = SegmentIndex::new(SEGMENT_HEADER.first_seq);
    for (meta, tags) in INDEX_BLOCKS.into_iter().zip(INDEX_BLOCK_TAGS) {
        index.push_block(meta, tags.iter().copied());
    }
    index.carry_watermarks(&INDEX_CARRIED_WATERMARKS.into_iter().collect());
    index.encode(INDEX_RAW_BYTES)
}

#[test]
#[ignore = "writes tests/fixtures/v2: run once, when a format version is introduced"]
fn generate_v2_fixtures() {
    // Only the index file is at version 2; blocks and segment headers stay at 1.
    std::fs::create_dir_all(V2_FIXTURE_DIR).unwrap();
    let block = encode_block_of(&BLOCK_ENTRIES, BLOCK_FIRST_SEQ, None);
    let replicated = encode_block_of(&REPLICATED_ENTRIES, REPLICATED_FIRST_SEQ, Some(REPLICATED_ORIGIN));
    assert_eq!((INDEX_BLOCKS[0].len as usize, INDEX_BLOCKS[1].len as usize), (block.len(), replicated.len()));
    let index_file = current_index_file();
    assert!(index_file.len() < FIXTURE_BYTES_MAX, "index.idx is {} bytes", index_file.len());
    std::fs::write(PathBuf::from(V2_FIXTURE_DIR).join("index.idx"), &index_file).unwrap();
    eprintln!("wrote v2/index.idx: {} bytes", index_file.len());
    eprintln!("v2/index.idx summary: {:?}", decode_summary(&index_file).unwrap());
}

/// Writes the version 1 block and segment header fixtures. The version 1
/// index file (`v1/index.idx`) was written by the build of that version;
/// this build writes version 2 and cannot write it again.
#[test]
#[ignore = "writes tests/fixtures/v1: run once, when a format version is introduced"]
fn generate_v1_fixtures() {
    // The hard-coded bodies are LogHub's lines.
    let hdfs = loghub_lines("HDFS", 3);
    assert_eq!(hdfs, BLOCK_ENTRIES.map(|entry| entry.body));
    assert_eq!(loghub_lines("OpenSSH", 1), [REPLICATED_ENTRIES[0].body]);

    std::fs::create_dir_all(FIXTURE_DIR).unwrap();
    let block = encode_block_of(&BLOCK_ENTRIES, BLOCK_FIRST_SEQ, None);
    let replicated = encode_block_of(&REPLICATED_ENTRIES, REPLICATED_FIRST_SEQ, Some(REPLICATED_ORIGIN));
    let segment_header = SEGMENT_HEADER.encode();
    // The index describes the two block fixtures: when writing the fixtures
    // of a new version, set their lengths and offsets from these.
    assert_eq!((INDEX_BLOCKS[0].len as usize, INDEX_BLOCKS[1].len as usize), (block.len(), replicated.len()));

    for (name, bytes) in [
        ("block.bin", &block[..]),
        ("block-replicated.bin", &replicated[..]),
        ("segment-header.bin", &segment_header[..]),
    ] {
        assert!(bytes.len() < FIXTURE_BYTES_MAX, "{name} is {} bytes", bytes.len());
        std::fs::write(fixture_path(name), bytes).unwrap();
        eprintln!("wrote {name}: {} bytes", bytes.len());
    }
    // The values the tests above hard-code.
    eprintln!("block.bin header: {:?}", block::parse_header(&block).unwrap());
    eprintln!("block-replicated.bin header: {:?}", block::parse_header(&replicated).unwrap());
}
