//! The recovery scanner: finds the longest valid prefix of a segment's
//! blocks. Pure code over byte slices; the shard feeds it windows of the file.
//!
//! Recovery policy ("tolerate a torn tail", as in fjall's journal): blocks
//! are accepted in order while each one is complete, passes its crc and
//! starts at exactly the seq that follows the previous one. The first block
//! that does not ends the log. Zero bytes where a header should be are the
//! clean end of a log that was never written further; anything else is a
//! torn or corrupt tail, which the shard zeroes and reports.

use crate::codec::block::{self, BlockError, BlockHeader};

/// Why the scan stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Zero bytes or the end of the file: nothing was written past here.
    Clean,
    /// Something that is not a valid next block.
    Torn(String),
}

/// One step of a scan over a window of bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The window ends inside a block that may be complete in the file:
    /// read again from `offset` (which is where that block starts).
    NeedMore {
        /// File offset to read from.
        offset: u64,
    },
    /// The log ends at `offset`.
    End {
        /// File offset just past the last valid block.
        offset: u64,
        /// What was found there.
        stop: Stop,
    },
}

/// Scans the blocks in `window`, which holds the file bytes from offset
/// `base`. `next_seq` is the seq the next valid block must start with; it
/// advances as blocks are accepted. `at_eof` says that the file ends where
/// the window ends. `visit(offset, header, block_bytes)` sees each valid
/// block in order.
pub fn scan_window(
    window: &[u8],
    base: u64,
    next_seq: &mut u64,
    at_eof: bool,
    mut visit: impl FnMut(u64, &BlockHeader, &[u8]) -> Result<(), BlockError>,
) -> Step {
    let mut position = 0usize;
    loop {
        let offset = base + position as u64;
        let rest = &window[position..];
        if rest.is_empty() && at_eof {
            return Step::End { offset, stop: Stop::Clean };
        }
        let header = match block::parse_header(rest) {
            Ok(header) => header,
            Err(BlockError::Truncated { .. }) if !at_eof => return Step::NeedMore { offset },
            Err(BlockError::Truncated { .. }) if rest.iter().all(|&byte| byte == 0) => {
                return Step::End { offset, stop: Stop::Clean };
            }
            Err(BlockError::Zero) => return Step::End { offset, stop: Stop::Clean },
            Err(error) => return Step::End { offset, stop: Stop::Torn(error.to_string()) },
        };
        if header.block_bytes() > rest.len() {
            if at_eof {
                let error = BlockError::Truncated { needed: header.block_bytes(), available: rest.len() };
                return Step::End { offset, stop: Stop::Torn(error.to_string()) };
            }
            return Step::NeedMore { offset };
        }
        let block_bytes = &rest[..header.block_bytes()];
        if let Err(error) = block::verify_block(block_bytes) {
            return Step::End { offset, stop: Stop::Torn(error.to_string()) };
        }
        if header.first_seq != *next_seq {
            let reason = format!("block starts at seq {}, expected {}", header.first_seq, next_seq);
            return Step::End { offset, stop: Stop::Torn(reason) };
        }
        if let Err(error) = visit(offset, &header, block_bytes) {
            return Step::End { offset, stop: Stop::Torn(error.to_string()) };
        }
        *next_seq = header.next_seq();
        position += header.block_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::block::{encode_block, encode_entry, encoded_bytes_max, BlockSpec, EntryRef};

    fn build_log(blocks: usize) -> (Vec<u8>, Vec<usize>) {
        let mut log = Vec::new();
        let mut ends = Vec::new();
        let mut seq = 1;
        for block_index in 0..blocks {
            let mut raw = Vec::new();
            let count = 1 + block_index % 3;
            for entry_index in 0..count {
                let body = format!("block {block_index} entry {entry_index} some log text here");
                let tags = [("host", "web-01")];
                encode_entry(
                    &EntryRef { fields: &[], timestamp_ns: 5, tags: &tags, body: body.as_bytes() },
                    5,
                    &mut raw,
                );
            }
            let spec = BlockSpec {
                fields: false,
                first_seq: seq,
                entry_count: count as u32,
                min_ts: 5,
                max_ts: 5,
                origin: None,
            };
            let mut out = vec![0; encoded_bytes_max(raw.len())];
            let used = encode_block(&spec, &raw, &mut out);
            log.extend_from_slice(&out[..used]);
            ends.push(log.len());
            seq += count as u64;
        }
        (log, ends)
    }

    fn scan_all(bytes: &[u8]) -> (u64, Stop, usize) {
        let mut next_seq = 1;
        let mut blocks = 0;
        match scan_window(bytes, 0, &mut next_seq, true, |_, _, _| {
            blocks += 1;
            Ok(())
        }) {
            Step::End { offset, stop } => (offset, stop, blocks),
            Step::NeedMore { .. } => unreachable!("at_eof never asks for more"),
        }
    }

    #[test]
    fn every_truncation_recovers_the_longest_complete_prefix() {
        let (log, ends) = build_log(6);
        for cut in 0..=log.len() {
            let (end, _, blocks) = scan_all(&log[..cut]);
            let expected_blocks = ends.iter().filter(|&&end| end <= cut).count();
            assert_eq!(blocks, expected_blocks, "cut at {cut}");
            let expected_end = if expected_blocks == 0 { 0 } else { ends[expected_blocks - 1] };
            assert_eq!(end as usize, expected_end, "cut at {cut}");
        }
    }

    #[test]
    fn a_bit_flip_ends_the_log_at_the_damaged_block() {
        let (log, ends) = build_log(5);
        for byte in 0..log.len() {
            let mut damaged = log.clone();
            damaged[byte] ^= 0x10;
            let (end, stop, blocks) = scan_all(&damaged);
            let damaged_block = ends.iter().position(|&end| byte < end).expect("inside the log");
            assert_eq!(blocks, damaged_block, "flip at {byte}");
            let expected_end = if damaged_block == 0 { 0 } else { ends[damaged_block - 1] };
            assert_eq!(end as usize, expected_end);
            assert!(matches!(stop, Stop::Torn(_)), "flip at {byte} gave {stop:?}");
        }
    }

    #[test]
    fn zero_padding_is_a_clean_end_and_windows_ask_for_more() {
        let (mut log, ends) = build_log(3);
        log.extend_from_slice(&[0; 4096]);
        let (end, stop, blocks) = scan_all(&log);
        assert_eq!((end as usize, stop, blocks), (ends[2], Stop::Clean, 3));

        let mut next_seq = 1;
        let step = scan_window(&log[..ends[0] + 10], 0, &mut next_seq, false, |_, _, _| Ok(()));
        assert_eq!(step, Step::NeedMore { offset: ends[0] as u64 });
        assert_eq!(next_seq, 2);
    }

    #[test]
    fn a_stale_block_with_the_wrong_seq_is_not_accepted() {
        let (log, ends) = build_log(3);
        // Drop the first block: the log now starts with a block whose seq is 2.
        let (end, stop, blocks) = scan_all(&log[ends[0]..]);
        assert_eq!((end, blocks), (0, 0));
        assert!(matches!(stop, Stop::Torn(reason) if reason.contains("expected 1")));
    }
}
