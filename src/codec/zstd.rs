//! Codec 2: the zstd payload of a block, and the re-encoding of a block
//! with it. Pure code: no I/O, no executor.
//!
//! Only the cold rewrite of sealed segments writes zstd blocks
//! (`shard::cold`); every reader decodes them through
//! [`super::block::decompress_payload`], which comes here.
//!
//! # The payload
//!
//! A zstd payload is exactly one zstd frame (RFC 8878) that spans the whole
//! stored payload and declares its content size, which must equal the
//! header's `raw_len`; the frame carries no checksum of its own (the block's
//! crc32 covers the stored bytes). Anything else (no content size, another
//! size, a skippable frame, bytes after the frame, a second frame) is refused
//! before anything is decompressed, and decompression writes into a buffer of
//! exactly `raw_len` bytes, so a corrupt block can never make a reader
//! allocate or write more than its header's `raw_len`, which
//! `BLOCK_RAW_BYTES_MAX` bounds, as for LZ4. Decompressing into a flat
//! buffer allocates no window either, whatever window size a frame claims.
//!
//! # Re-encoding a block in steps
//!
//! Compressing 256 KiB of log text at level 3 takes about a millisecond, and
//! the largest block (2 MiB) about eight: too long to hold a shard's
//! executor from its commits. [`Recompressor`] is a state machine that the
//! driver steps through a block [`limits::COLD_STEP_BYTES`] of input at a
//! time, yielding to the executor between steps, with no executor of its
//! own: [`Recompressor::start`] takes a verified block and decompresses it,
//! [`Recompressor::step`] compresses the next piece, and
//! [`Recompressor::finish`] writes the new block, with every header field
//! but the codec, the version, the stored length and the crc unchanged (seqs,
//! timestamps, origin, entry count, raw length), or says the block is kept
//! as it is when zstd would not make it smaller.

use std::cell::RefCell;

use zstd::zstd_safe::{self, zstd_sys::ZSTD_EndDirective, CParameter, InBuffer, OutBuffer};

use super::block::{self, BlockError, BlockHeader, BlockSpec, Codec};
use crate::limits;

thread_local! {
    /// One decompression context per thread (per shard executor), made on
    /// first use: a context costs about 100 KiB to set up, a block a few
    /// hundred microseconds to decompress.
    static DECOMPRESSOR: RefCell<Option<zstd_safe::DCtx<'static>>> = const { RefCell::new(None) };
}

/// Decompresses a zstd payload (`stored`, a whole block's stored bytes) into
/// `raw`, which is exactly the header's `raw_len` long; see the module doc
/// for what is refused. Never writes outside `raw`.
pub fn decompress_into(stored: &[u8], raw: &mut [u8]) -> Result<(), BlockError> {
    match zstd_safe::get_frame_content_size(stored) {
        Ok(Some(size)) if size == raw.len() as u64 => {}
        Ok(Some(size)) => {
            return Err(BlockError::Payload(format!("zstd frame holds {size} bytes, header says {}", raw.len())))
        }
        Ok(None) => return Err(BlockError::Payload("zstd frame does not declare its size".into())),
        Err(_) => return Err(BlockError::Payload("not a zstd frame".into())),
    }
    match zstd_safe::find_frame_compressed_size(stored) {
        Ok(size) if size == stored.len() => {}
        Ok(size) => {
            return Err(BlockError::Payload(format!(
                "zstd frame ends at {size} of the payload's {} bytes",
                stored.len()
            )))
        }
        Err(code) => return Err(zstd_error(code)),
    }
    let written = DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let context = cell.get_or_insert_with(zstd_safe::DCtx::create);
        context.decompress(raw, stored)
    });
    match written {
        Ok(written) if written == raw.len() => Ok(()),
        Ok(written) => Err(BlockError::Payload(format!("zstd gave {written} bytes, header says {}", raw.len()))),
        Err(code) => Err(zstd_error(code)),
    }
}

fn zstd_error(code: zstd_safe::ErrorCode) -> BlockError {
    BlockError::Payload(format!("zstd: {}", zstd_safe::get_error_name(code)))
}

/// What [`Recompressor::finish`] made of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recompressed {
    /// A zstd block of this many bytes was written: smaller than the block
    /// it replaces.
    Zstd(usize),
    /// zstd would not make the block smaller (or it is zstd already): keep
    /// the block as it is.
    Keep,
}

/// Re-encodes verified blocks with zstd, one piece of input at a time (see
/// the module doc). Reusable: one per rewrite, its buffers and zstd context
/// kept from block to block. Holds at most the raw payload of one block and
/// its compressed form.
pub struct Recompressor {
    context: zstd_safe::CCtx<'static>,
    level: i32,
    /// The block being re-encoded: its header, and its stored length.
    header: Option<BlockHeader>,
    /// Its raw payload, and how much of it was fed to zstd.
    raw: Vec<u8>,
    fed: usize,
    /// The zstd frame so far.
    compressed: Vec<u8>,
    /// Whether the frame was ended (zstd flushed everything).
    ended: bool,
}

impl Recompressor {
    /// A recompressor at zstd level `level` (1 to 19).
    pub fn new(level: i32) -> Self {
        assert!((1..=19).contains(&level), "zstd level {level} outside 1..=19");
        Recompressor {
            context: zstd_safe::CCtx::create(),
            level,
            header: None,
            raw: Vec::new(),
            fed: 0,
            compressed: Vec::new(),
            ended: false,
        }
    }

    /// Starts on `block` (whole, as [`block::verify_block`] accepted it with
    /// `header`): decompresses its payload. Returns false when there is
    /// nothing to do (the block is zstd already): call [`Self::finish`],
    /// which then says [`Recompressed::Keep`].
    pub fn start(&mut self, header: &BlockHeader, block: &[u8]) -> Result<bool, BlockError> {
        self.header = Some(*header);
        self.fed = 0;
        self.ended = false;
        self.compressed.clear();
        if header.codec == Codec::Zstd {
            self.ended = true;
            return Ok(false);
        }
        block::decompress_payload(header, block, &mut self.raw)?;
        let setup = self
            .context
            .reset(zstd_safe::ResetDirective::SessionOnly)
            .and_then(|_| self.context.set_parameter(CParameter::CompressionLevel(self.level)))
            .and_then(|_| self.context.set_parameter(CParameter::ChecksumFlag(false)))
            .and_then(|_| self.context.set_parameter(CParameter::ContentSizeFlag(true)))
            .and_then(|_| self.context.set_pledged_src_size(Some(self.raw.len() as u64)));
        setup.map_err(zstd_error)?;
        // A frame that would not fit in the block it replaces is of no use;
        // the bound keeps zstd from growing the buffer while it works.
        self.compressed.reserve(zstd_safe::compress_bound(self.raw.len()));
        Ok(true)
    }

    /// Compresses the next piece of the payload, at most
    /// [`limits::COLD_STEP_BYTES`] of input. Returns true once the whole
    /// frame is written.
    pub fn step(&mut self) -> Result<bool, BlockError> {
        assert!(self.header.is_some(), "step before start");
        if self.ended {
            return Ok(true);
        }
        let end = (self.fed + limits::COLD_STEP_BYTES).min(self.raw.len());
        let last = end == self.raw.len();
        let directive = if last { ZSTD_EndDirective::ZSTD_e_end } else { ZSTD_EndDirective::ZSTD_e_continue };
        let mut input = InBuffer::around(&self.raw[self.fed..end]);
        let bound = zstd_safe::compress_bound(self.raw.len());
        loop {
            let written = self.compressed.len();
            let mut output = OutBuffer::around_pos(&mut self.compressed, written);
            let remaining = self.context.compress_stream2(&mut output, &mut input, directive).map_err(zstd_error)?;
            if input.pos == input.src.len() && (!last || remaining == 0) {
                break;
            }
            // zstd holds more than the buffer has room for: give it room,
            // within the bound of a frame (it never needs more).
            if self.compressed.len() == self.compressed.capacity() {
                if self.compressed.len() >= bound {
                    return Err(BlockError::Payload("zstd frame over its bound".into()));
                }
                self.compressed.reserve(remaining.max(limits::PAGE_BYTES));
            }
        }
        self.fed = end;
        self.ended = last;
        Ok(last)
    }

    /// Ends the block started last: writes the zstd block into `out`
    /// (cleared first) if it is smaller than the block as it was, and
    /// returns what it did. Every step must have run.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Recompressed {
        let header = self.header.take().expect("finish after start");
        assert!(self.ended, "finish before the last step");
        if header.codec == Codec::Zstd || self.compressed.len() >= header.stored_len as usize {
            return Recompressed::Keep;
        }
        debug_assert_eq!(self.fed, header.raw_len as usize);
        out.clear();
        out.resize(block::HEADER_BYTES + self.compressed.len(), 0);
        let spec = BlockSpec::of(&header);
        let used = block::encode_stored_block(&spec, Codec::Zstd, header.raw_len as usize, &self.compressed, out);
        debug_assert_eq!(used, out.len());
        Recompressed::Zstd(used)
    }
}

/// Re-encodes `block` (verified, with `header`) with zstd in one go, into
/// `out`: [`Recompressor`] without the steps, for tests and tools.
pub fn recompress_block(
    recompressor: &mut Recompressor,
    header: &BlockHeader,
    block: &[u8],
    out: &mut Vec<u8>,
) -> Result<Recompressed, BlockError> {
    recompressor.start(header, block)?;
    while !recompressor.step()? {}
    Ok(recompressor.finish(out))
}

#[cfg(test)]
mod tests {
    //! zstd blocks against the LZ4 blocks they replace: LogHub round trips
    //! keeping every header field, what is kept as it is, payloads that are
    //! not one frame of exactly `raw_len` bytes, and damage behind a valid
    //! crc (property tests).

    use proptest::prelude::*;

    use super::*;
    use crate::codec::block::{encode_block, encode_entry, encoded_bytes_max, verify_block, EntryRef, Origin};

    /// A block of `lines` (one entry each, two tags), LZ4 or stored as is.
    fn block_of(lines: &[Vec<u8>], first_seq: u64, origin: Option<Origin>) -> Vec<u8> {
        let mut raw = Vec::new();
        for (index, line) in lines.iter().enumerate() {
            let tags = [("source", "loghub"), ("level", if index % 3 == 0 { "warn" } else { "info" })];
            let entry = EntryRef { fields: &[], timestamp_ns: 0, tags: &tags, body: line };
            encode_entry(&entry, 1_000 + index as i64, &mut raw);
        }
        let spec = BlockSpec {
            fields: false,
            first_seq,
            entry_count: lines.len() as u32,
            min_ts: 1_000,
            max_ts: 1_000 + lines.len() as i64 - 1,
            origin,
        };
        let mut out = vec![0; encoded_bytes_max(raw.len())];
        let used = encode_block(&spec, &raw, &mut out);
        out.truncate(used);
        out
    }

    fn loghub_lines(source: &str) -> Vec<Vec<u8>> {
        crate::loghub::bytes(source)
            .split(|&byte| byte == b'\n')
            .filter(|line| !line.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn recompress(block: &[u8]) -> (Recompressed, Vec<u8>) {
        let header = verify_block(block).unwrap();
        let mut out = Vec::new();
        let done = recompress_block(&mut Recompressor::new(limits::COLD_ZSTD_LEVEL), &header, block, &mut out).unwrap();
        (done, out)
    }

    fn payload_of(block: &[u8]) -> Vec<u8> {
        let header = verify_block(block).unwrap();
        let mut raw = Vec::new();
        block::decompress_payload(&header, block, &mut raw).unwrap();
        raw
    }

    /// A zstd block around `frame` (any bytes) that claims `raw_len`, signed.
    fn zstd_block_around(frame: &[u8], raw_len: usize) -> Vec<u8> {
        let spec = BlockSpec { fields: true, first_seq: 1, entry_count: 1, min_ts: 0, max_ts: 0, origin: None };
        let mut out = vec![0; block::HEADER_BYTES + frame.len()];
        let used = block::encode_stored_block(&spec, Codec::Zstd, raw_len, frame, &mut out);
        out.truncate(used);
        out
    }

    #[test]
    fn loghub_blocks_recompress_to_the_same_entries_and_header() {
        let mut first_seq = 1;
        for (index, source) in crate::loghub::SOURCES.into_iter().enumerate() {
            let origin = (index % 2 == 1).then_some(Origin { node: 3, shard: 4, first_seq: 500 + first_seq });
            let lz4 = block_of(&loghub_lines(source), first_seq, origin);
            let (done, zstd) = recompress(&lz4);
            assert_eq!(done, Recompressed::Zstd(zstd.len()), "{source}");
            let (before, after) = (verify_block(&lz4).unwrap(), verify_block(&zstd).unwrap());
            assert!(after.stored_len < before.stored_len, "{source}: zstd is smaller than LZ4");
            assert_eq!((after.codec, after.version), (Codec::Zstd, block::FORMAT_VERSION_ZSTD));
            // Every field but the codec, the version, the stored length and the crc.
            let unchanged =
                |header: BlockHeader| BlockHeader { codec: Codec::None, version: 0, stored_len: 0, crc: 0, ..header };
            assert_eq!(unchanged(after), unchanged(before), "{source}");
            assert_eq!(payload_of(&zstd), payload_of(&lz4), "{source}");
            assert_eq!(block::decode_block(&zstd, 7, 8).unwrap().1, block::decode_block(&lz4, 7, 8).unwrap().1);
            first_seq = before.next_seq();
        }
    }

    #[test]
    fn a_payload_over_one_step_is_compressed_in_steps_to_one_frame() {
        // About 1 MiB of LogHub lines (a block holds at most 2 MiB).
        let mut lines: Vec<Vec<u8>> = crate::loghub::SOURCES.iter().flat_map(|source| loghub_lines(source)).collect();
        let mut bytes = 0;
        lines.retain(|line| {
            bytes += line.len() + 40;
            bytes < 1 << 20
        });
        let lz4 = block_of(&lines, 1, None);
        let header = verify_block(&lz4).unwrap();
        assert!(header.raw_len as usize > 4 * limits::COLD_STEP_BYTES);
        let mut recompressor = Recompressor::new(limits::COLD_ZSTD_LEVEL);
        assert!(recompressor.start(&header, &lz4).unwrap());
        let mut steps = 1;
        while !recompressor.step().unwrap() {
            steps += 1;
        }
        assert_eq!(steps, (header.raw_len as usize).div_ceil(limits::COLD_STEP_BYTES));
        let mut zstd = Vec::new();
        assert!(matches!(recompressor.finish(&mut zstd), Recompressed::Zstd(_)));
        assert_eq!(payload_of(&zstd), payload_of(&lz4));
        // The recompressor is reused: the next block starts afresh.
        let small = block_of(&lines[..10], 1, None);
        let mut out = Vec::new();
        let done = recompress_block(&mut recompressor, &verify_block(&small).unwrap(), &small, &mut out).unwrap();
        assert!(matches!(done, Recompressed::Zstd(_)));
        assert_eq!(payload_of(&out), payload_of(&small));
    }

    #[test]
    fn zstd_and_incompressible_blocks_are_kept_as_they_are() {
        let (_, zstd) = recompress(&block_of(&loghub_lines("HDFS"), 1, None));
        assert_eq!(recompress(&zstd).0, Recompressed::Keep, "zstd already");
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let random: Vec<u8> = (0..300)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut raw = Vec::new();
        encode_entry(&EntryRef { fields: &[], timestamp_ns: 0, tags: &[], body: &random }, 5, &mut raw);
        let spec = BlockSpec { fields: false, first_seq: 1, entry_count: 1, min_ts: 5, max_ts: 5, origin: None };
        let mut stored = vec![0; encoded_bytes_max(raw.len())];
        let used = encode_block(&spec, &raw, &mut stored);
        stored.truncate(used);
        assert_eq!(verify_block(&stored).unwrap().codec, Codec::None);
        assert_eq!(recompress(&stored).0, Recompressed::Keep, "random bytes do not shrink");
    }

    #[test]
    fn a_zstd_payload_must_be_one_frame_of_exactly_raw_len_bytes() {
        let raw = b"\x05hello\x05world".repeat(40);
        let frame = zstd::bulk::compress(&raw, 3).unwrap();
        let decode = |block: &[u8]| {
            let header = verify_block(block).unwrap();
            let mut out = Vec::new();
            block::decompress_payload(&header, block, &mut out).map(|()| out)
        };
        assert_eq!(decode(&zstd_block_around(&frame, raw.len())).unwrap(), raw);
        let refused = |block: Vec<u8>, why: &str| {
            let error = decode(&block).unwrap_err();
            assert!(matches!(&error, BlockError::Payload(text) if text.contains(why)), "{why}: {error}");
        };
        // Another size than the header's: found before anything is written.
        refused(zstd_block_around(&frame, raw.len() - 1), "header says");
        refused(zstd_block_around(&frame, raw.len() + 1), "header says");
        // Bytes after the frame, a second frame.
        refused(zstd_block_around(&[&frame[..], &[0]].concat(), raw.len()), "frame ends at");
        refused(zstd_block_around(&[&frame[..], &frame[..]].concat(), raw.len()), "frame ends at");
        // A frame that does not say its size.
        let mut context = zstd_safe::CCtx::create();
        context.set_parameter(CParameter::ContentSizeFlag(false)).unwrap();
        let mut unsized_frame = vec![0; zstd_safe::compress_bound(raw.len())];
        let written = context.compress2(&mut unsized_frame[..], &raw).unwrap();
        unsized_frame.truncate(written);
        refused(zstd_block_around(&unsized_frame, raw.len()), "does not declare its size");
        // A skippable frame, and bytes that are no frame at all.
        let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18];
        skippable.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        skippable.extend_from_slice(&raw);
        assert!(decode(&zstd_block_around(&skippable, raw.len())).is_err());
        refused(zstd_block_around(b"not zstd at all", raw.len()), "not a zstd frame");
        // A tiny frame of a large payload under a small raw_len: refused by size.
        let zeros = zstd::bulk::compress(&vec![0; limits::BLOCK_RAW_BYTES_MAX], 3).unwrap();
        assert!(zeros.len() < 1000);
        refused(zstd_block_around(&zeros, 1000), "header says");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// A valid frame damaged anywhere, behind a re-signed header: refused
        /// or decoded to exactly `raw_len` bytes, never a panic.
        #[test]
        fn damaged_frames_never_panic_nor_overrun(
            raw in prop::collection::vec(0_u8..4, 1..4096),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            truncate in prop::option::of(any::<prop::sample::Index>()),
            claimed in prop::option::of(1_usize..8192),
        ) {
            let mut frame = zstd::bulk::compress(&raw, 3).unwrap();
            for (position, value) in edits {
                let position = position.index(frame.len());
                frame[position] = value;
            }
            if let Some(cut) = truncate {
                frame.truncate(cut.index(frame.len()).max(1));
            }
            let raw_len = claimed.unwrap_or(raw.len());
            let block = zstd_block_around(&frame, raw_len);
            let header = verify_block(&block).unwrap();
            let mut out = vec![7; 3];
            if block::decompress_payload(&header, &block, &mut out).is_ok() {
                prop_assert_eq!(out.len(), raw_len);
            }
            let _ = block::decode_block(&block, 1, 2);
        }
    }
}
