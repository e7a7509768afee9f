//! The tags a leader found in a proposal's pushed blocks, carried with the
//! proposal so that the replicas need not decompress every block again
//! (`Proposal.block_tags`): the tier's largest cost per entry was each
//! replica checking each block entry by entry, which the leader had done.
//!
//! Layout of one batch's tags: a varint count of blocks; per block a varint
//! count of tags; per tag its key and value, each a varint length and UTF-8
//! bytes.
//!
//! The leader also sends what its index takes from each block
//! (`Proposal.block_terms`, [`encode_block_terms`]), so that a replica's
//! index prunes like the leader's instead of knowing each block only by the
//! union of its tags: a varint count of blocks; per block a flags byte
//! (bit 0: terms follow, bit 1: a word filter follows them); then the
//! block's distinct pairs in order (a varint count, each key and value a
//! varint length and UTF-8 bytes); its distinct tag sets in order (a varint
//! count; per set a varint count of members, then its first pair number
//! and each next one's increase, varints); and the filter (a varint count
//! of 64-bit words, a power of two, then the words, little-endian). About
//! the size of the block's tags plus its filter: 2 to 6 KB per block of
//! 256 KiB raw (LogHub text, 3 tags of 100 values).
//!
//! Pure; decoding is bounded by the input (a count larger than the bytes
//! left could ever hold is refused before anything is allocated).

use crate::codec::block::{insert_tag, read_varint, TagSet};
use crate::index::word_filter::{WordFilter, BUILD_BITS};
use crate::index::BlockTerms;
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

/// Reads a varint count of items of at least `per_item` bytes each, refused
/// if the bytes left could not hold them.
fn count(bytes: &mut &[u8], per_item: usize) -> Result<usize, String> {
    let (value, used) = read_varint(bytes).ok_or("bad varint")?;
    *bytes = &bytes[used..];
    if value > (bytes.len() / per_item.max(1)) as u64 {
        return Err(format!("a count of {value} with {} bytes left", bytes.len()));
    }
    Ok(value as usize)
}

/// Reads a tag pair (each a varint length and UTF-8 bytes) within the
/// limits the index takes (it would refuse a block with a longer tag).
fn read_pair<'a>(bytes: &mut &'a [u8]) -> Result<(&'a str, &'a str), String> {
    let mut pair = [""; 2];
    for text in &mut pair {
        let len = count(bytes, 1)?;
        let (head, rest) = bytes.split_at(len);
        *text = std::str::from_utf8(head).map_err(|error| format!("a tag is not UTF-8: {error}"))?;
        *bytes = rest;
    }
    if pair[0].len() > TAG_KEY_BYTES_MAX || pair[1].len() > TAG_VALUE_BYTES_MAX {
        return Err(format!("a tag of {} + {} bytes is over the limits", pair[0].len(), pair[1].len()));
    }
    Ok((pair[0], pair[1]))
}

fn put_pair(out: &mut Vec<u8>, key: &str, value: &str) {
    for text in [key, value] {
        put_varint(out, text.len() as u64);
        out.extend_from_slice(text.as_bytes());
    }
}

/// Reads what [`encode_block_tags`] wrote.
pub fn decode_block_tags(mut bytes: &[u8]) -> Result<Vec<TagSet>, String> {
    let blocks = count(&mut bytes, 1)?;
    let mut out = Vec::with_capacity(blocks);
    for _ in 0..blocks {
        let tags = count(&mut bytes, 2)?;
        let mut set = TagSet::default();
        for _ in 0..tags {
            let (key, value) = read_pair(&mut bytes)?;
            insert_tag(&mut set, key, value);
        }
        out.push(set);
    }
    if !bytes.is_empty() {
        return Err(format!("{} bytes after the tags", bytes.len()));
    }
    Ok(out)
}

const TERMS: u8 = 1;
const FILTER: u8 = 2;

/// The terms of each block of `batch` that this node gathered (checking the
/// block entry by entry), laid out as the module doc says; empty when it
/// gathered none (then a replica records each block's union).
pub fn encode_block_terms(batch: &PushedBatch) -> Vec<u8> {
    let blocks: Vec<Option<&BlockTerms>> = batch.block_terms().collect();
    encode_terms(&blocks)
}

/// Terms of blocks, one per block (`None`: not known), laid out as the
/// module doc says; empty when none is known. What a snapshot chunk
/// carries for a batch of stored blocks, too.
pub fn encode_terms(blocks: &[Option<&BlockTerms>]) -> Vec<u8> {
    if blocks.iter().all(Option::is_none) {
        return Vec::new();
    }
    let mut out = Vec::new();
    put_varint(&mut out, blocks.len() as u64);
    for &terms in blocks {
        let Some(terms) = terms else {
            out.push(0);
            continue;
        };
        let filter = terms.word_filter();
        out.push(if filter.is_some() { TERMS | FILTER } else { TERMS });
        put_varint(&mut out, terms.pair_count() as u64);
        for (key, value) in terms.pairs() {
            put_pair(&mut out, key, value);
        }
        put_varint(&mut out, terms.set_count() as u64);
        for set in terms.sets() {
            put_varint(&mut out, set.len() as u64);
            let mut previous = 0;
            for (index, &number) in set.iter().enumerate() {
                put_varint(&mut out, u64::from(if index == 0 { number } else { number - previous }));
                previous = number;
            }
        }
        if let Some(filter) = filter {
            put_varint(&mut out, filter.words().len() as u64);
            for word in filter.words() {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
    }
    out
}

/// Terms of blocks known by their tags and word filters, laid out as
/// [`encode_terms`] lays out whole terms: each block's tags (`None`: the
/// block's terms are not known) as its one set, and its filter, written
/// straight from them (a snapshot sends this for every stored block).
/// Empty when no block has a filter: the tags say the rest.
pub fn encode_union_terms<'a>(blocks: &[(Option<&'a TagSet>, Option<&'a WordFilter>)]) -> Vec<u8> {
    if blocks.iter().all(|(_, filter)| filter.is_none()) {
        return Vec::new();
    }
    let mut out = Vec::new();
    put_varint(&mut out, blocks.len() as u64);
    for &(tags, filter) in blocks {
        let Some(tags) = tags else {
            out.push(0);
            continue;
        };
        out.push(if filter.is_some() { TERMS | FILTER } else { TERMS });
        put_varint(&mut out, tags.len() as u64);
        for (key, value) in tags {
            put_pair(&mut out, key, value);
        }
        if tags.is_empty() {
            put_varint(&mut out, 0);
        } else {
            // One set: every pair, numbers 0, then increases of 1.
            put_varint(&mut out, 1);
            put_varint(&mut out, tags.len() as u64);
            out.push(0);
            out.extend(std::iter::repeat_n(1, tags.len() - 1));
        }
        if let Some(filter) = filter {
            put_varint(&mut out, filter.words().len() as u64);
            for word in filter.words() {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
    }
    out
}

/// Reads what [`encode_block_terms`] wrote: per block, its terms if they
/// were sent. `None` for the whole batch when `bytes` is empty (nothing was
/// sent).
pub fn decode_block_terms(mut bytes: &[u8]) -> Result<Option<Vec<Option<Box<BlockTerms>>>>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let blocks = count(&mut bytes, 1)?;
    let mut out = Vec::with_capacity(blocks);
    for block in 0..blocks {
        let (&flags, rest) = bytes.split_first().ok_or("truncated")?;
        bytes = rest;
        if flags == 0 {
            out.push(None);
            continue;
        }
        if flags & !(TERMS | FILTER) != 0 || flags & TERMS == 0 {
            return Err(format!("block {block}: flags {flags:#x}"));
        }
        let pair_count = count(&mut bytes, 2)?;
        let pairs = (0..pair_count).map(|_| read_pair(&mut bytes)).collect::<Result<Vec<_>, _>>()?;
        let set_count = count(&mut bytes, 2)?;
        let mut sets = Vec::with_capacity(set_count);
        for _ in 0..set_count {
            let members = count(&mut bytes, 1)?;
            let mut set = Vec::with_capacity(members);
            for index in 0..members {
                let (value, used) = read_varint(bytes).ok_or("bad varint")?;
                bytes = &bytes[used..];
                let number = if index == 0 {
                    Some(value)
                } else {
                    set.last().and_then(|&last: &u32| u64::from(last).checked_add(value))
                };
                // Past the pairs is refused below, as is an increase of 0.
                set.push(number.and_then(|number| u32::try_from(number).ok()).unwrap_or(u32::MAX));
            }
            sets.push(set);
        }
        let filter = if flags & FILTER != 0 {
            let words = count(&mut bytes, 8)?;
            if !words.is_power_of_two() || words > BUILD_BITS / 64 {
                return Err(format!("block {block}: a word filter of {words} words"));
            }
            let (head, rest) = bytes.split_at(words * 8);
            bytes = rest;
            let words: Box<[u64]> =
                head.chunks_exact(8).map(|word| u64::from_le_bytes(word.try_into().expect("8 bytes"))).collect();
            Some(WordFilter::from_words(words))
        } else {
            None
        };
        let terms = BlockTerms::from_parts(pairs, sets.iter().map(Vec::as_slice), filter)
            .map_err(|error| format!("block {block}: {error}"))?;
        out.push(Some(Box::new(terms)));
    }
    if !bytes.is_empty() {
        return Err(format!("{} bytes after the terms", bytes.len()));
    }
    Ok(Some(out))
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

    /// One block's terms: `pairs` (keys and values of one byte), then
    /// `sets` as written (first number, then increases), then `filter`.
    fn block_terms(flags: u8, pairs: &[(&str, &str)], sets: &[&[u64]], filter: Option<&[u64]>) -> Vec<u8> {
        let mut out = vec![1, flags];
        put_varint(&mut out, pairs.len() as u64);
        for (key, value) in pairs {
            put_pair(&mut out, key, value);
        }
        put_varint(&mut out, sets.len() as u64);
        for set in sets {
            put_varint(&mut out, set.len() as u64);
            set.iter().for_each(|&number| put_varint(&mut out, number));
        }
        if let Some(words) = filter {
            put_varint(&mut out, words.len() as u64);
            words.iter().for_each(|word| out.extend_from_slice(&word.to_le_bytes()));
        }
        out
    }

    #[test]
    fn the_terms_a_leader_gathered_reach_the_replica_as_they_were() {
        use crate::replication::batch::testing::two_blocks;
        let message = two_blocks();
        let full = PushedBatch::parse(message.clone()).unwrap();
        let tags: Vec<TagSet> = full.block_tags().cloned().collect();
        let terms = decode_block_terms(&encode_block_terms(&full)).unwrap().expect("terms were gathered");
        let replica = PushedBatch::parse_checked(message.clone(), tags.clone(), Some(terms)).unwrap();
        for (sent, got) in full.block_terms().zip(replica.block_terms()) {
            let (sent, got) = (sent.unwrap(), got.unwrap());
            assert_eq!(got.pairs().collect::<Vec<_>>(), sent.pairs().collect::<Vec<_>>());
            assert_eq!(got.sets().collect::<Vec<_>>(), sent.sets().collect::<Vec<_>>());
            assert_eq!(got.set_count(), 2, "n=odd and n=even, each with app=web");
            assert!(got.word_filter().is_some());
            assert_eq!(got.word_filter(), sent.word_filter());
        }
        // A batch checked with its tags gathered none, and sends none.
        assert!(encode_block_terms(&PushedBatch::parse_checked(message, tags, None).unwrap()).is_empty());
        assert!(decode_block_terms(&[]).unwrap().is_none());
    }

    #[test]
    fn union_terms_are_the_terms_of_one_set_of_every_tag() {
        let mut tags = TagSet::default();
        for (key, value) in [("app", "web"), ("host", "a"), ("level", "info")] {
            insert_tag(&mut tags, key, value);
        }
        let filter = WordFilter::from_words(vec![3, 5].into());
        let blocks = [(Some(&tags), Some(&filter)), (None, None), (Some(&TagSet::default()), None)];
        let decoded = decode_block_terms(&encode_union_terms(&blocks)).unwrap().unwrap();
        let first = decoded[0].as_ref().unwrap();
        let pairs: Vec<(&str, &str)> = tags.iter().map(|(key, value)| (&**key, &**value)).collect();
        assert_eq!(first.pairs().collect::<Vec<_>>(), pairs, "the tags in the order the tags field has them");
        assert_eq!(first.sets().collect::<Vec<_>>(), [&[0_u32, 1, 2][..]]);
        assert_eq!(first.word_filter().as_deref(), Some(&filter));
        assert!(decoded[1].is_none());
        let untagged = decoded[2].as_ref().unwrap();
        assert_eq!((untagged.pair_count(), untagged.set_count(), untagged.word_filter()), (0, 0, None));
        assert!(encode_union_terms(&[(Some(&tags), None)]).is_empty(), "no filter: nothing to add to the tags");
    }

    #[test]
    fn block_terms_decode_and_garbage_is_refused_without_a_panic() {
        let pairs = [("a", "1"), ("b", "2"), ("c", "3")];
        let good = block_terms(TERMS | FILTER, &pairs, &[&[0, 2], &[1]], Some(&[5, 0]));
        let decoded = decode_block_terms(&good).unwrap().unwrap();
        let terms = decoded[0].as_ref().unwrap();
        assert_eq!(terms.pairs().collect::<Vec<_>>(), pairs);
        assert_eq!(terms.sets().collect::<Vec<_>>(), [&[0_u32, 2][..], &[1]]);
        assert_eq!(terms.word_filter().unwrap().words(), [5, 0]);
        assert!(decode_block_terms(&[2, 0, 0]).unwrap().unwrap().iter().all(Option::is_none));

        let refused = |bytes: &[u8], why: &str| {
            let error = decode_block_terms(bytes).unwrap_err();
            assert!(error.contains(why), "{error} (expected {why:?})");
        };
        refused(&block_terms(4, &pairs, &[], None), "flags");
        refused(&block_terms(FILTER, &pairs, &[], None), "flags");
        refused(&block_terms(TERMS, &pairs, &[&[0, 0]], None), "set 0");
        refused(&block_terms(TERMS, &pairs, &[&[3]], None), "set 0");
        refused(&block_terms(TERMS, &pairs, &[&[0, u64::MAX]], None), "set 0");
        refused(&block_terms(TERMS, &pairs, &[&[1], &[1]], None), "set 1 is given twice");
        refused(&block_terms(TERMS, &[("a", "1"), ("a", "1")], &[], None), "twice");
        refused(&block_terms(TERMS | FILTER, &pairs, &[], Some(&[1, 2, 3])), "a word filter of 3 words");
        refused(&block_terms(TERMS | FILTER, &pairs, &[], Some(&vec![0; BUILD_BITS / 32])), "a word filter of");
        refused(&good[..good.len() - 1], "bytes left");
        refused(&[200, 1], "bytes left");
        let mut extra = good.clone();
        extra.push(0);
        refused(&extra, "after the terms");
        // Every cut of a good encoding is refused, never a panic.
        for cut in 1..good.len() {
            assert!(decode_block_terms(&good[..cut]).is_err(), "cut at {cut}");
        }
    }
}
