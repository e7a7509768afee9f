//! The tags a leader found in a proposal's pushed blocks, carried with the
//! proposal so that the replicas need not decompress every block again
//! (`Proposal.block_tags`): the tier's largest cost per entry was each
//! replica checking each block entry by entry, which the leader had done.
//!
//! Layout of one batch's tags: a varint count of blocks; per block a varint
//! count of tags; per tag its key and value, each a varint length and UTF-8
//! bytes. Pure; decoding is bounded by the input (a count larger than the
//! bytes left could ever hold is refused before anything is allocated).

use crate::codec::block::{insert_tag, read_varint, TagSet};
use crate::limits::{TAG_KEY_BYTES_MAX, TAG_VALUE_BYTES_MAX};
use crate::replication::batch::PushedBatch;

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The tags of each block of `batch`, laid out as the module doc says.
pub fn encode_block_tags(batch: &PushedBatch) -> Vec<u8> {
    let blocks: Vec<&TagSet> = batch.block_tags().collect();
    encode_tag_sets(&blocks)
}

/// Tag sets, one per block, laid out as the module doc says (what a
/// snapshot chunk of blocks carries too).
pub fn encode_tag_sets(blocks: &[&TagSet]) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, blocks.len() as u64);
    for &tags in blocks {
        put_varint(&mut out, tags.len() as u64);
        for (key, value) in tags {
            for text in [key, value] {
                put_varint(&mut out, text.len() as u64);
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
    out
}

/// Reads what [`encode_block_tags`] wrote.
pub fn decode_block_tags(mut bytes: &[u8]) -> Result<Vec<TagSet>, String> {
    let count = |bytes: &mut &[u8], per_item: usize| -> Result<usize, String> {
        let (value, used) = read_varint(bytes).ok_or("bad varint")?;
        *bytes = &bytes[used..];
        if value > (bytes.len() / per_item.max(1)) as u64 {
            return Err(format!("a count of {value} with {} bytes left", bytes.len()));
        }
        Ok(value as usize)
    };
    let blocks = count(&mut bytes, 1)?;
    let mut out = Vec::with_capacity(blocks);
    for _ in 0..blocks {
        let tags = count(&mut bytes, 2)?;
        let mut set = TagSet::default();
        for _ in 0..tags {
            let mut pair = [""; 2];
            for text in &mut pair {
                let len = count(&mut bytes, 1)?;
                let (head, rest) = bytes.split_at(len);
                *text = std::str::from_utf8(head).map_err(|error| format!("a tag is not UTF-8: {error}"))?;
                bytes = rest;
            }
            // The index takes no longer tag (it would refuse the block).
            if pair[0].len() > TAG_KEY_BYTES_MAX || pair[1].len() > TAG_VALUE_BYTES_MAX {
                return Err(format!("a tag of {} + {} bytes is over the limits", pair[0].len(), pair[1].len()));
            }
            insert_tag(&mut set, pair[0], pair[1]);
        }
        out.push(set);
    }
    if !bytes.is_empty() {
        return Err(format!("{} bytes after the tags", bytes.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_garbage_is_refused() {
        let mut a = TagSet::default();
        insert_tag(&mut a, "app", "web");
        insert_tag(&mut a, "level", "error");
        let b = TagSet::default();
        let mut out = Vec::new();
        put_varint(&mut out, 2);
        for set in [&a, &b] {
            put_varint(&mut out, set.len() as u64);
            for (key, value) in set {
                for text in [key, value] {
                    put_varint(&mut out, text.len() as u64);
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
        assert_eq!(decode_block_tags(&out).unwrap(), vec![a, b]);
        assert!(decode_block_tags(&[0xff]).is_err());
        assert!(decode_block_tags(&[200, 1]).is_err(), "a count beyond the input");
        assert!(decode_block_tags(&[1, 1, 1, b'k', 1]).is_err(), "truncated");
        assert!(decode_block_tags(&[1, 1, 1, 0xff, 1, b'v']).is_err(), "not UTF-8");
        let mut extra = out.clone();
        extra.push(0);
        assert!(decode_block_tags(&extra).is_err());
    }
}
