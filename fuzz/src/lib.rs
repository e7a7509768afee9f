//! The bodies of the wormdb fuzz targets, one function per target, so that
//! they can also run on stable over fixed inputs (`cargo test` here).
//!
//! Each function feeds arbitrary bytes to a decoder that reads from disk or
//! from the network. A decoder may refuse the bytes with an error; it must never panic, and what
//! it accepts must be consistent (see the assertions). Random bytes almost
//! never carry a valid crc32, so each target also runs on a copy whose
//! checksums were recomputed: that is what reaches the checks behind them.

use std::collections::BTreeMap;

use prost::bytes::Bytes;
use wormdb::codec::block::{self, BlockHeader, EntryView};
use wormdb::grpc::frame::{self, Decoder, FrameError};
use wormdb::grpc::status::{Code, Status};
use wormdb::proto::{LogEntry, PushBatch};
use wormdb::replication::batch::{with_fresh_parts, with_pushed_refs, PushedBatch};
use wormdb::shard::scan::{self, Step, Stop};
use wormdb::shard::segment::SegmentHeader;
use wormdb::shard::{EntryRef, ReplicatedPart};

/// The block crc is the last header field (see the table in
/// `src/codec/block.rs`); it covers the header before it and the payload.
const BLOCK_CRC_OFFSET: usize = block::HEADER_BYTES - 4;
/// The segment header crc sits at offset 40 and covers bytes `[0, 40)`.
const SEGMENT_CRC_OFFSET: usize = 40;
/// The index file's body crc at 80 covers the body (from byte 96); the
/// origin table crc at 88 covers the `origin_count` (at 84) records of 32
/// bytes that start the body; the header crc at 92 covers bytes `[0, 92)`.
const INDEX_BODY_CRC_OFFSET: usize = 80;
const INDEX_ORIGIN_COUNT_OFFSET: usize = 84;
const INDEX_ORIGINS_CRC_OFFSET: usize = 88;
/// Where version 2 keeps its header crc (its header is 96 bytes).
const INDEX_HEADER_CRC_OFFSET_V2: usize = 92;
const INDEX_FILTERS_CRC_OFFSET: usize = 108;
const INDEX_FILTERS_BYTES_OFFSET: usize = 112;
const INDEX_HEADER_CRC_OFFSET: usize = 124;
const INDEX_ORIGIN_RECORD_BYTES: usize = wormdb::index::file::ORIGIN_RECORD_BYTES;

fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

/// Recomputes the crc of each block in `bytes`, walking them back to back
/// while their headers parse and they fit.
pub fn resign_blocks(bytes: &mut [u8]) {
    let mut position = 0;
    while let Ok(header) = block::parse_header(&bytes[position..]) {
        let end = position + header.block_bytes();
        if end > bytes.len() {
            return;
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&bytes[position..position + BLOCK_CRC_OFFSET]);
        hasher.update(&bytes[position + block::HEADER_BYTES..end]);
        put_u32(bytes, position + BLOCK_CRC_OFFSET, hasher.finalize());
        position = end;
    }
}

/// Target `block_decode`: one block through `verify_block`, `decode_block`,
/// `decompress_payload`, `for_each_entry` and `EntryView`.
pub fn block_decode(data: &[u8]) {
    check_block(data);
    let mut resigned = data.to_vec();
    resign_blocks(&mut resigned);
    if resigned != data {
        check_block(&resigned);
    }
}

fn check_block(data: &[u8]) {
    let Ok(header) = block::verify_block(data) else {
        return;
    };
    assert_eq!(block::parse_header(data), Ok(header), "verify_block and parse_header disagree");
    assert!(header.block_bytes() <= data.len());

    let mut raw = Vec::new();
    let payload_ok = block::decompress_payload(&header, data, &mut raw).is_ok();
    if payload_ok {
        assert_eq!(raw.len(), header.raw_len as usize);
        let mut count = 0_u64;
        let walked = block::for_each_entry(&header, &raw, |seq, entry| {
            assert_eq!(seq, header.first_seq + count, "entries are numbered densely");
            count += 1;
            check_entry(entry);
            Ok(())
        });
        if walked.is_ok() {
            assert_eq!(count, u64::from(header.entry_count));
        }
    }
    if let Ok((decoded_header, entries)) = block::decode_block(data, 1, 2) {
        assert!(payload_ok, "decode_block accepted a payload that decompress_payload refuses");
        assert_eq!(decoded_header, header);
        assert_eq!(entries.len(), header.entry_count as usize);
        check_ids(&header, &entries);
    }
}

/// The ids come from the header: the origin's when there is one.
fn check_ids(header: &BlockHeader, entries: &[LogEntry]) {
    let (first_seq, node, shard) = match header.origin {
        Some(origin) => (origin.first_seq, origin.node, origin.shard),
        None => (header.first_seq, 1, 2),
    };
    for (index, entry) in entries.iter().enumerate() {
        assert_eq!((entry.seq, entry.node_id, entry.shard), (first_seq + index as u64, node, shard));
    }
}

/// Parses one entry with `EntryView`; when prost accepts it too, they agree.
fn check_entry(entry: &[u8]) {
    use prost::Message;
    let Ok(view) = EntryView::parse(entry) else {
        return;
    };
    let mut tags = BTreeMap::new();
    let tags_parsed = view.for_each_tag(|key, value| {
        tags.insert(key.to_owned(), value.to_owned());
    });
    let _ = view.has_tags(&[("level", "INFO"), ("", "")]);
    // prost reads a tags field of any wire type as a length-delimited map
    // entry (it never checks the wire type of map fields), where EntryView
    // skips one that is not length-delimited as an unknown field: from there
    // on the two frame the rest of the entry differently (tags, body,
    // timestamp), so they are compared only on entries without one.
    if has_misframed_tags_field(entry) {
        return;
    }
    if let (Ok(expected), Ok(())) = (LogEntry::decode(entry), tags_parsed) {
        assert_eq!(view.timestamp_ns, expected.timestamp_ns);
        assert_eq!(view.body, &expected.body[..]);
        assert_eq!(tags, expected.tags);
    }
}

fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0_u64;
    for (index, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

/// Whether a top-level field 3 (tags) has a wire type other than
/// length-delimited, in an entry that `EntryView::parse` accepted (so wire
/// types are 0, 1, 2 or 5).
fn has_misframed_tags_field(mut entry: &[u8]) -> bool {
    while let Some((key, used)) = read_varint(entry) {
        if key >> 3 == 3 && key & 7 != 2 {
            return true;
        }
        let rest = &entry[used..];
        let skip = match key & 7 {
            // Fixed-size fields carry no length.
            1 => Some(8),
            5 => Some(4),
            wire_type => read_varint(rest).and_then(|(value, value_used)| match wire_type {
                0 => Some(value_used),
                _ => usize::try_from(value).ok().and_then(|length| length.checked_add(value_used)),
            }),
        };
        match skip {
            Some(skip) if skip <= rest.len() => entry = &rest[skip..],
            _ => return false,
        }
    }
    false
}

/// Target `segment_header`: `SegmentHeader::decode`; what it accepts
/// re-encodes to the same fields.
pub fn segment_header(data: &[u8]) {
    check_segment_header(data);
    if data.len() >= SEGMENT_CRC_OFFSET + 4 {
        let mut resigned = data.to_vec();
        let crc = crc32fast::hash(&resigned[..SEGMENT_CRC_OFFSET]);
        put_u32(&mut resigned, SEGMENT_CRC_OFFSET, crc);
        check_segment_header(&resigned);
    }
}

fn check_segment_header(data: &[u8]) {
    let Ok(header) = SegmentHeader::decode(data) else {
        return;
    };
    let page = header.encode();
    assert_eq!(SegmentHeader::decode(&page), Ok(header), "an encoded header does not decode to itself");
    // Every field decode reads, the flags (bytes 6..8) included: it refuses
    // flag bits it does not know. The zero tail of the page is not checked
    // by decode, so it may differ.
    assert_eq!(page[..SEGMENT_CRC_OFFSET], data[..SEGMENT_CRC_OFFSET]);
}

/// Target `index_file_decode`: `wormdb::index::file::fuzz_decode`, which
/// also checks that an accepted file re-encodes to the same bytes.
pub fn index_file_decode(data: &[u8]) {
    wormdb::index::file::fuzz_decode(data);
    // Re-signed as the version it claims (2: 96-byte header; otherwise 3,
    // whose filter section after the body has its own crc), so the checks
    // behind the crcs are reached.
    let version_2 = data.get(4..6) == Some(&[2, 0][..]);
    let (header_bytes, header_crc_offset) = if version_2 {
        (wormdb::index::file::HEADER_BYTES_V2, INDEX_HEADER_CRC_OFFSET_V2)
    } else {
        (wormdb::index::HEADER_BYTES, INDEX_HEADER_CRC_OFFSET)
    };
    if data.len() >= header_bytes {
        let mut resigned = data.to_vec();
        let origin_count = u32::from_le_bytes(
            resigned[INDEX_ORIGIN_COUNT_OFFSET..INDEX_ORIGIN_COUNT_OFFSET + 4].try_into().expect("4 bytes"),
        ) as usize;
        let table_end =
            origin_count.checked_mul(INDEX_ORIGIN_RECORD_BYTES).and_then(|bytes| bytes.checked_add(header_bytes));
        if let Some(table) = table_end.and_then(|end| resigned.get(header_bytes..end)) {
            let origins_crc = crc32fast::hash(table);
            put_u32(&mut resigned, INDEX_ORIGINS_CRC_OFFSET, origins_crc);
        }
        let mut body_end = resigned.len();
        if !version_2 {
            let filters_bytes = u64::from_le_bytes(
                resigned[INDEX_FILTERS_BYTES_OFFSET..INDEX_FILTERS_BYTES_OFFSET + 8].try_into().expect("8 bytes"),
            );
            body_end = usize::try_from(filters_bytes)
                .ok()
                .and_then(|filters| resigned.len().checked_sub(filters))
                .filter(|&end| end >= header_bytes)
                .unwrap_or(resigned.len());
            let filters_crc = crc32fast::hash(&resigned[body_end..]);
            put_u32(&mut resigned, INDEX_FILTERS_CRC_OFFSET, filters_crc);
        }
        let body_crc = crc32fast::hash(&resigned[header_bytes..body_end]);
        put_u32(&mut resigned, INDEX_BODY_CRC_OFFSET, body_crc);
        let header_crc = crc32fast::hash(&resigned[..header_crc_offset]);
        put_u32(&mut resigned, header_crc_offset, header_crc);
        wormdb::index::file::fuzz_decode(&resigned);
    }
}

/// Where a block's data starts in a segment file, as the shard scans it.
const SCAN_BASE: u64 = wormdb::shard::segment::DATA_OFFSET;
/// Window sizes to scan with: smaller than a header, odd, a page, and more.
const SCAN_WINDOWS: [usize; 5] = [40, 64, 97, 4096, 1 << 20];

/// What a scan found: the blocks it accepted (offset, first seq) and where
/// and why it stopped.
type ScanResult = (Vec<(u64, u64)>, u64, Stop);

/// Target `recovery_scan`: `scan_window` over the input as a segment's data
/// area, in one window with `at_eof` true, and in windows of several sizes
/// the way recovery reads a file (`at_eof` false until the last one). Both
/// must find the same blocks and stop at the same place.
pub fn recovery_scan(data: &[u8]) {
    check_scan(data);
    let mut resigned = data.to_vec();
    resign_blocks(&mut resigned);
    if resigned != data {
        check_scan(&resigned);
    }
}

fn check_scan(data: &[u8]) {
    let whole = scan_whole(data);
    let (blocks, end, _) = &whole;
    assert!(*end >= SCAN_BASE && *end <= SCAN_BASE + data.len() as u64);
    let accepted_bytes: u64 = blocks.windows(2).map(|pair| pair[1].0 - pair[0].0).sum();
    assert!(blocks.first().is_none_or(|first| first.0 == SCAN_BASE), "the first block starts the data area");
    assert!(accepted_bytes <= end - SCAN_BASE);
    for window in SCAN_WINDOWS {
        assert_eq!(scan_in_windows(data, window), whole, "window of {window} bytes");
    }
}

/// One valid block as the scanner's visitor sees it: decode it fully, as
/// recovery indexes it.
fn visit_block(header: &BlockHeader, bytes: &[u8]) -> Result<(), block::BlockError> {
    assert_eq!(bytes.len(), header.block_bytes());
    let (_, entries) = block::decode_block(bytes, 1, 2)?;
    check_ids(header, &entries);
    Ok(())
}

fn scan_whole(data: &[u8]) -> ScanResult {
    let mut next_seq = 1;
    let mut blocks = Vec::new();
    let step = scan::scan_window(data, SCAN_BASE, &mut next_seq, true, |offset, header, bytes| {
        visit_block(header, bytes)?;
        blocks.push((offset, header.first_seq));
        Ok(())
    });
    match step {
        Step::End { offset, stop } => (blocks, offset, stop),
        Step::NeedMore { offset } => panic!("a scan at the end of the file asked for more at {offset}"),
    }
}

/// Scans like recovery: reads `window` bytes at a time from where the last
/// step asked. A block larger than the window is read whole (recovery sizes
/// its window for the largest block).
fn scan_in_windows(data: &[u8], window: usize) -> ScanResult {
    let mut next_seq = 1;
    let mut blocks = Vec::new();
    let mut start = 0_usize;
    let mut length = window;
    loop {
        let end = start.saturating_add(length).min(data.len());
        let at_eof = end == data.len();
        let base = SCAN_BASE + start as u64;
        let step = scan::scan_window(&data[start..end], base, &mut next_seq, at_eof, |offset, header, bytes| {
            visit_block(header, bytes)?;
            blocks.push((offset, header.first_seq));
            Ok(())
        });
        match step {
            Step::End { offset, stop } => return (blocks, offset, stop),
            Step::NeedMore { offset } => {
                assert!(!at_eof, "a scan at the end of the file asked for more");
                assert!(offset >= base && offset <= SCAN_BASE + end as u64, "asked for more outside the window");
                let next = (offset - SCAN_BASE) as usize;
                // No progress: the block at `next` is larger than the window.
                length = if next == start { data.len() - start } else { window };
                start = next;
            }
        }
    }
}

/// Most chunk lengths a `grpc_frame` input gives.
const GRPC_CHUNK_LENGTHS_MAX: usize = 8;

/// Target `grpc_frame`: a gRPC message stream through `frame::Decoder`,
/// split into DATA chunks the way the input says. Byte 0 is the maximum
/// message size (0..=255, small so that both sides of it are reached), byte
/// 1 how many chunk lengths follow (1 to 8); the chunks then take those
/// lengths in turn (0 is an empty chunk). The decoder must return what a
/// whole-buffer reference decoder finds, and never hold more than its bound
/// plus the chunk just pushed.
pub fn grpc_frame(data: &[u8]) {
    let Some((&max_message_bytes, rest)) = data.split_first() else {
        return;
    };
    let Some((&count, rest)) = rest.split_first() else {
        return;
    };
    let max_message_bytes = usize::from(max_message_bytes);
    let (lengths, stream) = rest.split_at((usize::from(count) % GRPC_CHUNK_LENGTHS_MAX + 1).min(rest.len()));
    // All-zero (or no) lengths would never make progress: one chunk then.
    let lengths = if lengths.iter().any(|&length| length > 0) { lengths } else { &[u8::MAX][..] };

    let mut decoder = Decoder::new(max_message_bytes);
    let bound = decoder.buffered_bytes_bound();
    let mut messages = Vec::new();
    let mut error = None;
    let mut position = 0;
    for &length in lengths.iter().cycle() {
        if position == stream.len() {
            break;
        }
        let end = (position + usize::from(length)).min(stream.len());
        let chunk = &stream[position..end];
        position = end;
        let before = decoder.buffered_bytes();
        decoder.push(chunk.to_vec().into());
        assert!(decoder.buffered_bytes() <= before + chunk.len());
        assert!(decoder.buffered_bytes() <= bound + chunk.len(), "buffered past the bound");
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    assert!(message.len() <= max_message_bytes);
                    messages.push(message);
                }
                Ok(None) => break,
                Err(found) => {
                    assert_eq!(decoder.buffered_bytes(), 0, "a failed decoder holds nothing");
                    error = Some(found);
                    break;
                }
            }
        }
        assert!(decoder.buffered_bytes() <= bound, "buffered past the bound after draining");
        if error.is_some() {
            break;
        }
    }
    let end = match error {
        Some(error) => {
            assert_eq!(decoder.next_message(), Err(error.clone()), "errors are sticky");
            Err(error)
        }
        None => decoder.finish(),
    };

    let (expected, expected_end) = reference_frames(stream, max_message_bytes);
    assert_eq!(messages.len(), expected.len());
    for (message, expected) in messages.iter().zip(&expected) {
        assert_eq!(&message[..], *expected);
    }
    assert_eq!(end, expected_end);
}

/// The messages of a whole gRPC stream and how it ends, decoded directly:
/// the model `grpc_frame` checks the chunked decoder against.
fn reference_frames(mut stream: &[u8], max: usize) -> (Vec<&[u8]>, Result<(), FrameError>) {
    let mut messages = Vec::new();
    while !stream.is_empty() {
        if stream.len() < frame::PREFIX_BYTES {
            return (messages, Err(FrameError::Truncated { buffered: stream.len() }));
        }
        match stream[0] {
            0 => {}
            1 => return (messages, Err(FrameError::Compressed)),
            flag => return (messages, Err(FrameError::BadFlag(flag))),
        }
        let length = u32::from_be_bytes([stream[1], stream[2], stream[3], stream[4]]);
        if length as usize > max {
            return (messages, Err(FrameError::TooLarge { len: u64::from(length), max }));
        }
        let end = frame::PREFIX_BYTES + length as usize;
        if stream.len() < end {
            return (messages, Err(FrameError::Truncated { buffered: stream.len() }));
        }
        messages.push(&stream[frame::PREFIX_BYTES..end]);
        stream = &stream[end..];
    }
    (messages, Ok(()))
}

/// The protobuf fields of a `PushBatch` (or any message), walked until one
/// does not parse: (field number, wire type, byte range of its value; of
/// its contents for a length-delimited field).
fn message_fields(message: &[u8]) -> Vec<(u64, u64, std::ops::Range<usize>)> {
    let mut fields = Vec::new();
    let mut position = 0;
    while let Some((key, used)) = read_varint(&message[position..]) {
        position += used;
        let (field, wire_type) = (key >> 3, key & 7);
        let contents = match wire_type {
            0 => match read_varint(&message[position..]) {
                Some((_, used)) => position..position + used,
                None => break,
            },
            1 | 5 => position..position + if wire_type == 1 { 8 } else { 4 },
            2 => match read_varint(&message[position..]) {
                Some((length, used)) => {
                    let start = position + used;
                    match usize::try_from(length).ok().and_then(|length| start.checked_add(length)) {
                        Some(end) => start..end,
                        None => break,
                    }
                }
                None => break,
            },
            _ => break,
        };
        if contents.end > message.len() {
            break;
        }
        position = contents.end;
        fields.push((field, wire_type, contents));
    }
    fields
}

/// Field 3 of `PushBatch`: one entry.
const PUSH_BATCH_ENTRIES_FIELD: u64 = 3;
/// Field 4 of `PushBatch`: one stored block.
const PUSH_BATCH_BLOCKS_FIELD: u64 = 4;

/// Recomputes the crc of each block the `blocks` fields of a `PushBatch`
/// message carry.
pub fn resign_pushed_blocks(message: &mut [u8]) {
    for (field, wire_type, contents) in message_fields(message) {
        if (field, wire_type) == (PUSH_BATCH_BLOCKS_FIELD, 2) {
            resign_blocks(&mut message[contents]);
        }
    }
}

/// One pushed entry as the leader reads it: seq, timestamp, tags in their
/// order, body.
type PushedEntry = (u64, i64, Vec<(String, String)>, Vec<u8>);

/// The entries of a batch of `count` entries (none for a batch of blocks),
/// or `None` when a tag is not UTF-8 (`with_pushed_refs` refuses the batch
/// then, when it is appended).
fn pushed_entries(batch: &PushedBatch, count: usize) -> Option<Vec<PushedEntry>> {
    let views: Vec<EntryView<'_>> = (0..count).map(|index| batch.entry(index)).collect();
    with_pushed_refs(&views, |refs| {
        views
            .iter()
            .zip(refs)
            .map(|(view, entry)| {
                let tags = entry.tags.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
                (view.seq, entry.timestamp_ns, tags, entry.body.to_vec())
            })
            .collect()
    })
    .ok()
}

/// Target `push_batch`: `PushedBatch::parse`, the leader's decoder of a
/// follower's `PushBatch` message (entries, or stored blocks checked entry
/// by entry). It refuses with `INVALID_ARGUMENT` or accepts; what it
/// accepts has as many seqs as entries, agrees with prost where prost
/// accepts the message too, re-encodes (ids, then its entries or blocks) to
/// a message that parses to the same entries, and appends, after any
/// number of duplicates skipped, exactly the entries after them.
pub fn push_batch(data: &[u8]) {
    check_push_batch(data);
    let mut resigned = data.to_vec();
    resign_pushed_blocks(&mut resigned);
    if resigned != data {
        check_push_batch(&resigned);
    }
}

fn check_push_batch(data: &[u8]) {
    use prost::Message;
    let batch = match PushedBatch::parse(Bytes::copy_from_slice(data)) {
        Ok(batch) => batch,
        Err(error) => {
            let status = Status::from(error);
            assert_eq!(status.code, Code::InvalidArgument, "{status:?}");
            return;
        }
    };
    assert_eq!(batch.message_bytes(), data.len());
    assert_eq!(batch.seqs().count(), batch.len());
    // Parsed, so its fields walk to the end; each entry or block is one.
    let fields = message_fields(data);
    assert_eq!(fields.last().map_or(0, |(_, _, contents)| contents.end), data.len());
    let count_of =
        |wanted: u64| fields.iter().filter(|(field, wire_type, _)| (*field, *wire_type) == (wanted, 2)).count();
    let (entry_count, block_count) = (count_of(PUSH_BATCH_ENTRIES_FIELD), count_of(PUSH_BATCH_BLOCKS_FIELD));
    assert!(entry_count == 0 || block_count == 0, "entries and blocks, accepted");
    let is_entry_batch = block_count == 0;
    if is_entry_batch {
        assert_eq!(batch.len(), entry_count);
    } else {
        assert!(batch.len() >= block_count, "a block holds at least one entry");
    }
    let entries = pushed_entries(&batch, entry_count);

    let entry_fields: Vec<&[u8]> = fields
        .iter()
        .filter(|(field, wire_type, _)| (*field, *wire_type) == (PUSH_BATCH_ENTRIES_FIELD, 2))
        .map(|(_, _, contents)| &data[contents.clone()])
        .collect();
    for entry in &entry_fields {
        check_entry(entry);
    }
    if let Ok(expected) = PushBatch::decode(data) {
        assert_eq!((batch.follower_id, batch.shard), (expected.follower_id, expected.shard));
        if is_entry_batch {
            assert_eq!(batch.len(), expected.entries.len());
            for (index, (entry, expected)) in entry_fields.iter().zip(&expected.entries).enumerate() {
                // check_entry compared the other fields, and says why an
                // entry with a misframed tags field is left out.
                if !has_misframed_tags_field(entry) {
                    let view = batch.entry(index);
                    assert_eq!(
                        (view.seq, view.timestamp_ns, view.body),
                        (expected.seq, expected.timestamp_ns, &expected.body[..])
                    );
                }
            }
        } else {
            let blocks: Vec<&[u8]> = fields
                .iter()
                .filter(|(field, wire_type, _)| (*field, *wire_type) == (PUSH_BATCH_BLOCKS_FIELD, 2))
                .map(|(_, _, contents)| &data[contents.clone()])
                .collect();
            assert_eq!(blocks, expected.blocks.iter().map(|block| &block[..]).collect::<Vec<_>>());
        }
    }

    // Encoded again: the ids, then the entries (seq and the stored form,
    // tags in their order) or the blocks' bytes; unknown fields dropped.
    let mut again = Vec::new();
    put_varint_field(&mut again, 1 << 3, u64::from(batch.follower_id));
    put_varint_field(&mut again, 2 << 3, u64::from(batch.shard));
    let reencoded = if is_entry_batch {
        entries.as_ref().map(|entries| {
            for (seq, timestamp_ns, tags, body) in entries {
                let tags: Vec<(&str, &str)> = tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
                let mut stored = Vec::new();
                block::encode_entry(
                    &EntryRef { timestamp_ns: 0, tags: &tags, body, fields: &[] },
                    *timestamp_ns,
                    &mut stored,
                );
                let (_, prefix) = read_varint(&stored).expect("encode_entry writes a length first");
                let mut entry = Vec::new();
                put_varint_field(&mut entry, 1 << 3, *seq);
                entry.extend_from_slice(&stored[prefix..]);
                put_varint(&mut again, (3 << 3) | 2);
                put_varint(&mut again, entry.len() as u64);
                again.extend_from_slice(&entry);
            }
        })
    } else {
        for (field, wire_type, contents) in &fields {
            if (*field, *wire_type) == (PUSH_BATCH_BLOCKS_FIELD, 2) {
                put_varint(&mut again, (PUSH_BATCH_BLOCKS_FIELD << 3) | 2);
                put_varint(&mut again, contents.len() as u64);
                again.extend_from_slice(&data[contents.clone()]);
            }
        }
        Some(())
    };
    if reencoded.is_some() {
        let parsed = PushedBatch::parse(again.into()).expect("a batch encoded again parses");
        assert_eq!((parsed.follower_id, parsed.shard, parsed.len()), (batch.follower_id, batch.shard, batch.len()));
        assert!(parsed.seqs().eq(batch.seqs()));
        assert_eq!(pushed_entries(&parsed, entry_count), entries);
    }

    // Appended after `skip` duplicates: exactly the rest.
    let skip = data.len() % (batch.len() + 1);
    let mut appended = batch.clone();
    let parts = with_fresh_parts(&mut [(&mut appended, skip)], |parts| {
        parts
            .iter()
            .map(|part| match part {
                ReplicatedPart::Entries(entries) => entries.len(),
                ReplicatedPart::Block { header, .. } => header.entry_count as usize,
            })
            .sum::<usize>()
    });
    match parts {
        Ok(count) => assert_eq!(count, batch.len() - skip, "{skip} skipped"),
        Err(error) => {
            let status = Status::from(error);
            assert_eq!(status.code, Code::InvalidArgument);
            assert!(is_entry_batch && entries.is_none(), "only a tag that is not UTF-8 fails: {status:?}");
        }
    }
}

fn put_varint_field(out: &mut Vec<u8>, key: u64, value: u64) {
    put_varint(out, key);
    put_varint(out, value);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The resource attributes the `otlp_decode` target makes tags.
const OTLP_TAG_ATTRIBUTES: [&str; 2] = ["service.name", "host.name"];

/// Target `otlp_decode`: the input as a protobuf and as an OTLP/JSON
/// `ExportLogsServiceRequest`, each accepted one mapped to entries. A
/// decoded request maps to one entry per record (or is refused for a time
/// out of range), whose tags are only the tag attributes and `level`; a
/// JSON request encodes to protobuf that decodes and encodes to the same
/// bytes.
pub fn otlp_decode(data: &[u8]) {
    use prost::Message;
    use wormdb::ingest::otlp;
    let tags: Vec<String> = OTLP_TAG_ATTRIBUTES.iter().map(|key| key.to_string()).collect();
    let check = |request: wormdb::proto::opentelemetry::proto::collector::logs::v1::ExportLogsServiceRequest| {
        let count = otlp::record_count(&request);
        if let Ok(entries) = otlp::entries(request, &tags, 7) {
            assert_eq!(entries.len(), count);
            for entry in &entries {
                assert!(entry.tags.keys().all(|key| key == otlp::LEVEL_TAG || tags.contains(key)), "{entry:?}");
            }
        }
    };
    if let Ok(request) = otlp::decode_protobuf(data) {
        check(request);
    }
    if let Ok(request) = otlp::json::decode(data) {
        let bytes = request.encode_to_vec();
        let again = otlp::decode_protobuf(&bytes).expect("prost reads what it wrote");
        assert_eq!(again.encode_to_vec(), bytes);
        check(request);
    }
}

/// Target `syslog`: a syslog TCP stream through `ingest::syslog::TcpFramer`.
/// Byte 0 is the largest message (0..=255, small so that both sides of it
/// are reached), byte 1 the read size (1..=256); the rest is the stream,
/// fed read by read as the listener does. The frames (and the error that
/// ends the stream, if any) must be those of the stream fed whole, the
/// buffer must stay within a message, its count and one read, and every
/// frame must parse into an entry the shard accepts.
pub fn syslog(data: &[u8]) {
    use wormdb::ingest::syslog::{self as syslog_ingest, Frame, FrameError, Options, TcpFramer};
    let [max, read, stream @ ..] = data else {
        return;
    };
    let (max, read) = (usize::from(*max), usize::from(*read) + 1);
    let frames = |framer: &mut TcpFramer, out: &mut Vec<Result<Vec<u8>, String>>| loop {
        match framer.next_frame() {
            Ok(Some(Frame::Message(range))) => out.push(Ok(framer.bytes()[range].to_vec())),
            Ok(Some(Frame::TooLarge)) => out.push(Err("too large".into())),
            Ok(None) => return true,
            // What it shows of the count depends on what was read.
            Err(error) => {
                let kind = match error {
                    FrameError::BadOctetCount(_) => "bad octet count",
                    FrameError::TooLarge { .. } => "octet count too large",
                };
                out.push(Err(kind.into()));
                return false;
            }
        }
    };
    let mut whole = TcpFramer::new(max);
    whole.feed(stream);
    let mut expected = Vec::new();
    frames(&mut whole, &mut expected);
    let mut pieces = TcpFramer::new(max);
    let mut got = Vec::new();
    for chunk in stream.chunks(read) {
        let spare = pieces.spare();
        let count = spare.len().min(chunk.len());
        spare[..count].copy_from_slice(&chunk[..count]);
        pieces.filled(count);
        let mut rest = &chunk[count..];
        let mut going = frames(&mut pieces, &mut got);
        while going && !rest.is_empty() {
            let spare = pieces.spare();
            let count = spare.len().min(rest.len());
            spare[..count].copy_from_slice(&rest[..count]);
            pieces.filled(count);
            rest = &rest[count..];
            going = frames(&mut pieces, &mut got);
        }
        assert!(
            pieces.bytes().len() <= max + 9 + read.max(wormdb::limits::SYSLOG_READ_BYTES),
            "buffered past the bound"
        );
        if !going {
            break;
        }
    }
    assert_eq!(got, expected, "read sizes change nothing");
    for frame in got.iter().flatten() {
        let message = syslog_ingest::parse(syslog_ingest::trim_line_end(frame), 1, &Options::default());
        syslog_ingest::with_entry_refs(std::slice::from_ref(&message), |refs| {
            block::validate_entry(&refs[0]).expect("every syslog line makes a valid entry");
        });
    }
}

#[cfg(test)]
mod tests {
    //! Runs the targets over the format fixtures and mutations of them, so
    //! that they are exercised on stable too.

    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/v1/");
    const V2_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/v2/");
    const V3_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/v3/");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}{name}")).expect("the format fixtures are checked in")
    }

    fn v2_fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{V2_FIXTURES}{name}")).expect("the format fixtures are checked in")
    }

    fn v3_fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{V3_FIXTURES}{name}")).expect("the format fixtures are checked in")
    }

    /// Every input with one byte changed to a few values, and every prefix.
    fn mutations(data: &[u8]) -> Vec<Vec<u8>> {
        let mut inputs = vec![data.to_vec()];
        for position in 0..data.len() {
            for value in [0, 1, 0x80, 0xff, data[position] ^ 0x04] {
                let mut mutated = data.to_vec();
                mutated[position] = value;
                inputs.push(mutated);
            }
        }
        inputs.extend((0..data.len()).map(|length| data[..length].to_vec()));
        inputs
    }

    #[test]
    fn otlp_decode_runs_on_the_specification_example_and_its_mutations() {
        use prost::Message;
        let json = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/otlp/logs.json")).unwrap();
        let protobuf = wormdb::ingest::otlp::json::decode(&json).unwrap().encode_to_vec();
        for input in mutations(&protobuf) {
            otlp_decode(&input);
        }
        // A JSON document's prefixes and byte flips; every 7th position, to
        // keep the run short.
        for input in mutations(&json).into_iter().step_by(7) {
            otlp_decode(&input);
        }
    }

    #[test]
    fn block_decode_runs_on_fixtures() {
        for name in ["block.bin", "block-replicated.bin"] {
            for input in mutations(&fixture(name)) {
                block_decode(&input);
            }
        }
        // Codec 2: a zstd frame behind the header, damaged everywhere.
        let zstd = v3_fixture("block-zstd.bin");
        assert!(wormdb::codec::block::decode_block(&zstd, 1, 0).is_ok());
        for input in mutations(&zstd) {
            block_decode(&input);
        }
    }

    #[test]
    fn recovery_scan_runs_on_a_log_of_fixtures() {
        // Blocks at seqs 1..=3 and 4..=5 back to back: a valid two-block log.
        let mut log = fixture("block.bin");
        log.extend_from_slice(&fixture("block-replicated.bin"));
        let (blocks, end, stop) = scan_whole(&log);
        assert_eq!((blocks.len(), end, stop), (2, SCAN_BASE + log.len() as u64, Stop::Clean));
        log.extend_from_slice(&[0; 100]);
        for input in mutations(&log) {
            recovery_scan(&input);
        }
    }

    #[test]
    fn segment_header_and_index_run_on_fixtures() {
        let page = fixture("segment-header.bin");
        assert!(SegmentHeader::decode(&page).is_ok());
        for input in mutations(&page[..64]) {
            segment_header(&input);
        }
        // The version 1 index is refused (outdated); version 2 is read,
        // version 3 (tag sets, word filters) is current.
        for input in mutations(&fixture("index.idx")) {
            index_file_decode(&input);
        }
        for index in [v2_fixture("index.idx"), v3_fixture("index.idx")] {
            assert!(wormdb::index::SegmentIndex::decode(&index).is_ok());
            for input in mutations(&index) {
                index_file_decode(&input);
            }
        }
    }

    /// Found by `push_batch`: prost reads a tags field of any wire type as
    /// a map entry, where `EntryView` skips it; first one of wire type
    /// varint behind a fixed64 field (whose first byte the helper took for a
    /// length), then one of wire type fixed32, then one of wire type fixed64
    /// after which prost frames the body away.
    #[test]
    fn a_tags_field_that_is_not_length_delimited_is_the_known_prost_quirk() {
        let behind_fixed64 = [(13 << 3) | 1, 0x69, 0x69, 0x28, 0x18, 0x18, 0x18, 0x18, 0x18, 3 << 3, 24];
        // prost: tags {"app": "web"}; EntryView: 4 bytes skipped, then field 14 and field 2 (wire type 2).
        let fixed32 = b"\x08\x01\x10\x05\x1d\x0a\x0a\x03app\x12\x03web\x22\x04body";
        // prost: the map entry takes 9 bytes, field 15 (fixed64) the body;
        // EntryView: 8 bytes skipped, field 8, then the body.
        let fixed64 = b"\x08\x01\x19\x09\x29\x97\x00\x00XRMB\x03yeb\x22\x04body";
        for entry in [&behind_fixed64[..], &fixed32[..], &fixed64[..]] {
            assert!(EntryView::parse(entry).is_ok(), "{entry:?}");
            assert!(has_misframed_tags_field(entry), "{entry:?}");
            check_entry(entry);
        }
    }

    /// Found by `push_batch`: the same quirk in a pushed entry, a tags field
    /// of wire type varint (prost: a 10-byte map entry that swallows the
    /// body; the leader: body `d\0XX`).
    #[test]
    fn a_pushed_entry_with_a_misframed_tags_field_is_not_compared_with_prost() {
        let entry = b"\x08\x01\x10\x05\x18\x0a\x22\x04d\x00XXXhhhhhhhhh";
        let mut batch = vec![0x08, 7, 0x10, 2, 0x1a, entry.len() as u8];
        batch.extend_from_slice(entry);
        assert_eq!(PushedBatch::parse(batch.clone().into()).unwrap().entry(0).body, b"d\0XX");
        push_batch(&batch);
    }

    #[test]
    fn push_batch_runs_on_batches_and_their_mutations() {
        use prost::Message;
        let entry = |seq: u64, body: &str| LogEntry {
            seq,
            timestamp_ns: 1_700_000_000_000_000_000 + seq as i64,
            tags: [("app".to_owned(), "web".to_owned()), ("k".to_owned(), format!("v{seq}"))].into(),
            body: body.as_bytes().to_vec().into(),
            node_id: 0,
            shard: 0,
            fields: Default::default(),
        };
        let entries = PushBatch {
            follower_id: 7,
            shard: 2,
            entries: vec![entry(1, "first"), LogEntry { seq: 2, ..LogEntry::default() }, entry(3, "")],
            blocks: Vec::new(),
            durable_seq: 0,
        };
        // The block fixture (seqs 1..=3) is what a follower's shard stores.
        let blocks = PushBatch {
            follower_id: 7,
            shard: 2,
            entries: Vec::new(),
            blocks: vec![fixture("block.bin").into(), fixture("block.bin").into()],
            durable_seq: 0,
        };
        for batch in [&entries, &blocks] {
            let message = batch.encode_to_vec();
            let parsed = PushedBatch::parse(message.clone().into()).expect("a valid batch parses");
            assert_eq!(parsed.len(), batch.entries.len() + 3 * batch.blocks.len());
            for input in mutations(&message) {
                push_batch(&input);
            }
        }
    }

    #[test]
    fn syslog_runs_on_streams_and_their_mutations() {
        let stream = b"26 <13>1 - h lie - - - before<14>Dec  6 11:00:00 host tag[1]: x\r\n\n5 abcde<15>1 - h a - - [x a=\"1\"] m\n";
        for max in [0u8, 8, 40, 255] {
            for read in [0u8, 3, 255] {
                for input in mutations(stream) {
                    let mut data = vec![max, read];
                    data.extend_from_slice(&input);
                    syslog(&data);
                }
            }
        }
    }

    #[test]
    fn grpc_frame_runs_on_a_stream_and_its_mutations() {
        let mut stream = Vec::new();
        for message in [&b"first"[..], b"", &[0xab; 40], b"last message"] {
            stream.extend_from_slice(&frame::prefix(message.len()));
            stream.extend_from_slice(message);
        }
        let entry = LogEntry { seq: 9, body: b"body".to_vec().into(), ..LogEntry::default() };
        let mut encoded = Default::default();
        frame::encode_message(&entry, &mut encoded);
        stream.extend_from_slice(&encoded);
        for (max_message_bytes, lengths) in [(64, &[3, 1, 7][..]), (40, &[0, 5]), (39, &[255]), (0, &[1])] {
            let mut input = vec![max_message_bytes, lengths.len() as u8 - 1];
            input.extend_from_slice(lengths);
            input.extend_from_slice(&stream);
            for input in mutations(&input) {
                grpc_frame(&input);
            }
        }
    }
}
