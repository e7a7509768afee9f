//! A pushed batch parsed without copying or allocating per entry: the
//! leader reads `PushBatch` messages as byte ranges of the received
//! message, and hands the shard borrowed entries ([`EntryRef`]), so a
//! pushed entry is copied once, into the archive's block.
//!
//! A wormdb follower pushes its stored blocks instead of entries
//! (`PushBatch.blocks`): each is checked entry by entry
//! ([`check_foreign_block`]) when the batch is parsed, and its compressed
//! payload is archived as is ([`ReplicatedPart::Block`]), so the leader
//! decompresses (cheap) but never compresses pushed data again.
//!
//! A tier snapshot streams an archive's own blocks the same way
//! ([`PushedBatch::parse_archived`]): there a block's seqs are its origin
//! seqs (the header's origin fields, which must name the batch's pair),
//! not the storing shard's.

use std::ops::Range;

use bytes::Bytes;

use super::Error;
use crate::codec::block::{
    check_foreign_block_with, decompress_payload, for_each_entry, read_varint, skip_fixed, split_delimited,
    verify_whole_block, BlockHeader, EntryView, HEADER_BYTES,
};
use crate::index::BlockTerms;
use crate::shard::{EntryRef, ReplicatedPart, TagSet};

/// A `PushBatch` message, validated, with its entries located.
#[derive(Clone, Debug)]
pub struct PushedBatch {
    /// The follower.
    pub follower_id: u32,
    /// The follower's shard.
    pub shard: u32,
    /// The follower shard's last durable seq when it sent the batch (0:
    /// not said).
    pub durable_seq: u64,
    message: Bytes,
    entries: Vec<Located>,
    blocks: Vec<PushedBlock>,
}

/// One pushed block, checked: where it is in the message, its header, and
/// the tags of its entries (given away to the shard when it is appended).
#[derive(Clone, Debug)]
struct PushedBlock {
    block: Range<usize>,
    header: BlockHeader,
    /// The batch seq of its first entry: the header's `first_seq` for a
    /// follower's block, its origin first seq for an archived one.
    first_seq: u64,
    tags: TagSet,
    /// Its entries' tag sets and words, when this node checked the block
    /// entry by entry (not when another node did and sent its tags).
    terms: Option<Box<BlockTerms>>,
}

/// Whose seqs a batch's blocks hold (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockSeqs {
    /// A follower's own blocks: the header's `first_seq ..`.
    Stored,
    /// An archive's blocks: the origin seqs of the header, whose origin
    /// is the batch's pair; the blocks follow one another without a gap.
    Origin,
}

/// One entry of a pushed batch: what parsing found, as ranges of the message.
#[derive(Clone, Debug)]
struct Located {
    seq: u64,
    timestamp_ns: i64,
    entry: Range<usize>,
    body: Range<usize>,
}

fn malformed(error: impl std::fmt::Display) -> Error {
    Error::Malformed(format!("malformed PushBatch: {error}"))
}

impl PushedBatch {
    /// Parses a `PushBatch` message: its protobuf structure and every
    /// entry's fields, once. Malformed input is `INVALID_ARGUMENT`. Tags are
    /// checked (UTF-8) when the entries are appended
    /// ([`with_pushed_refs`]), the one pass that reads them.
    pub fn parse(message: Bytes) -> Result<PushedBatch, Error> {
        PushedBatch::parse_inner(message, None, BlockSeqs::Stored)
    }

    /// Like [`PushedBatch::parse`], for a batch of an archive's own blocks
    /// (a tier snapshot): each block must carry an origin, the batch's
    /// pair, and the blocks' origin seqs must follow one another; those
    /// are the batch's seqs. Entries parse as in any batch.
    pub fn parse_archived(message: Bytes) -> Result<PushedBatch, Error> {
        PushedBatch::parse_inner(message, None, BlockSeqs::Origin)
    }

    /// [`PushedBatch::parse_archived`] with the blocks' tags (and terms)
    /// given, as [`PushedBatch::parse_checked`] takes them: crcs are
    /// verified, payloads are not decompressed.
    pub fn parse_archived_checked(
        message: Bytes,
        block_tags: Vec<TagSet>,
        block_terms: Option<Vec<Option<Box<BlockTerms>>>>,
    ) -> Result<PushedBatch, Error> {
        PushedBatch::parse_with_tags(message, block_tags, block_terms, BlockSeqs::Origin)
    }

    /// Like [`PushedBatch::parse`], for a batch another node already
    /// checked entry by entry (a tier leader, whose committed proposal
    /// carries each block's tags): each block's header and crc are
    /// verified, its payload is not decompressed, and its tags are the
    /// ones given, one set per block in order. The crc still guards every
    /// byte stored. With `block_terms` (`Proposal.block_terms`: one per
    /// block in order, `None` for a block whose are not known), this node
    /// indexes the blocks as the checking node did; without, by their tags.
    pub fn parse_checked(
        message: Bytes,
        block_tags: Vec<TagSet>,
        block_terms: Option<Vec<Option<Box<BlockTerms>>>>,
    ) -> Result<PushedBatch, Error> {
        PushedBatch::parse_with_tags(message, block_tags, block_terms, BlockSeqs::Stored)
    }

    fn parse_with_tags(
        message: Bytes,
        block_tags: Vec<TagSet>,
        block_terms: Option<Vec<Option<Box<BlockTerms>>>>,
        seqs: BlockSeqs,
    ) -> Result<PushedBatch, Error> {
        let count = block_tags.len();
        if let Some(terms) = block_terms.as_ref().filter(|terms| terms.len() != count) {
            return Err(malformed(format!("{count} tag sets, terms of {} blocks", terms.len())));
        }
        let mut tags = block_tags.into_iter();
        let mut batch = PushedBatch::parse_inner(message, Some(&mut tags), seqs)?;
        if batch.blocks.len() != count {
            return Err(malformed(format!("{} blocks, {count} tag sets", batch.blocks.len())));
        }
        for (block, terms) in batch.blocks.iter_mut().zip(block_terms.into_iter().flatten()) {
            block.terms = terms;
        }
        Ok(batch)
    }

    /// The distinct tags of each pushed block, in order (what
    /// [`PushedBatch::parse_checked`] takes).
    pub fn block_tags(&self) -> impl Iterator<Item = &TagSet> {
        self.blocks.iter().map(|block| &block.tags)
    }

    /// The terms of each pushed block, in order, where this node gathered
    /// them (what [`PushedBatch::parse_checked`] takes).
    pub fn block_terms(&self) -> impl Iterator<Item = Option<&BlockTerms>> {
        self.blocks.iter().map(|block| block.terms.as_deref())
    }

    fn parse_inner(
        message: Bytes,
        mut checked_tags: Option<&mut dyn Iterator<Item = TagSet>>,
        seqs: BlockSeqs,
    ) -> Result<PushedBatch, Error> {
        let mut batch = PushedBatch {
            follower_id: 0,
            shard: 0,
            durable_seq: 0,
            message: message.clone(),
            entries: Vec::new(),
            blocks: Vec::new(),
        };
        let mut raw = Vec::new();
        let mut rest: &[u8] = &message;
        while !rest.is_empty() {
            let (key, used) = read_varint(rest).ok_or_else(|| malformed("bad field key"))?;
            rest = &rest[used..];
            match (key >> 3, key & 7) {
                (field @ (1 | 2), 0) => {
                    let (value, used) = read_varint(rest).ok_or_else(|| malformed("bad varint"))?;
                    rest = &rest[used..];
                    let value = u32::try_from(value).map_err(|_| malformed("follower_id or shard over 32 bits"))?;
                    if field == 1 {
                        batch.follower_id = value;
                    } else {
                        batch.shard = value;
                    }
                }
                (field, 2) => {
                    let (field_bytes, after) = split_delimited(rest).map_err(malformed)?;
                    if field == 3 {
                        let index = batch.entries.len();
                        let view = EntryView::parse(field_bytes)
                            .map_err(|error| malformed(format!("entry {}: {error}", index + 1)))?;
                        let offset = |bytes: &[u8]| bytes.as_ptr() as usize - message.as_ptr() as usize;
                        let start = offset(field_bytes);
                        // An entry without a body field has a static empty body.
                        let body_start = if view.body.is_empty() { start } else { offset(view.body) };
                        batch.entries.push(Located {
                            seq: view.seq,
                            timestamp_ns: view.timestamp_ns,
                            entry: start..start + field_bytes.len(),
                            body: body_start..body_start + view.body.len(),
                        });
                    } else if field == 4 {
                        let index = batch.blocks.len();
                        let checked = match checked_tags.as_mut() {
                            None => {
                                let mut terms = BlockTerms::with_words();
                                check_foreign_block_with(field_bytes, &mut raw, |tags, body| {
                                    terms.add_entry(tags.iter().copied());
                                    terms.add_body(body);
                                })
                                .map(|(header, tags)| {
                                    terms.finish_words();
                                    (header, tags, Some(Box::new(terms)))
                                })
                            }
                            Some(tags) => verify_whole_block(field_bytes)
                                .map(|header| (header, tags.next().unwrap_or_default(), None)),
                        };
                        let (header, tags, terms) =
                            checked.map_err(|error| malformed(format!("block {}: {error}", index + 1)))?;
                        let start = field_bytes.as_ptr() as usize - message.as_ptr() as usize;
                        let first_seq = match (seqs, header.origin) {
                            (BlockSeqs::Stored, _) => header.first_seq,
                            (BlockSeqs::Origin, Some(origin)) => origin.first_seq,
                            (BlockSeqs::Origin, None) => {
                                return Err(malformed(format!(
                                    "block {}: an archived block without an origin",
                                    index + 1
                                )))
                            }
                        };
                        let block = start..start + field_bytes.len();
                        batch.blocks.push(PushedBlock { block, header, first_seq, tags, terms });
                    }
                    rest = after;
                }
                (field, 0) => {
                    let (value, used) = read_varint(rest).ok_or_else(|| malformed("bad varint"))?;
                    rest = &rest[used..];
                    if field == 5 {
                        batch.durable_seq = value;
                    }
                }
                (_, wire_type @ (1 | 5)) => rest = skip_fixed(rest, wire_type).map_err(malformed)?,
                (_, wire_type) => return Err(malformed(format!("unexpected wire type {wire_type}"))),
            }
        }
        if !batch.entries.is_empty() && !batch.blocks.is_empty() {
            return Err(malformed("a batch carries entries or blocks, not both"));
        }
        if seqs == BlockSeqs::Origin {
            batch.check_archived_blocks()?;
        }
        Ok(batch)
    }

    /// The blocks of an archived batch are the batch's pair's, and each
    /// starts where the one before ends.
    fn check_archived_blocks(&self) -> Result<(), Error> {
        let pair = (self.follower_id, self.shard);
        let mut next = None;
        for (index, block) in self.blocks.iter().enumerate() {
            let origin = block.header.origin.map(|origin| (origin.node, origin.shard));
            if origin != Some(pair) {
                return Err(malformed(format!("block {}: origin {origin:?} in a batch of {pair:?}", index + 1)));
            }
            if next.is_some_and(|next| next != block.first_seq) {
                return Err(malformed(format!(
                    "block {}: origin seq {} does not follow {next:?}",
                    index + 1,
                    block.first_seq
                )));
            }
            next = Some(block.first_seq + u64::from(block.header.entry_count));
        }
        Ok(())
    }

    /// Entries in the batch (those of its blocks included).
    pub fn len(&self) -> usize {
        self.entries.len() + self.blocks.iter().map(|block| block.header.entry_count as usize).sum::<usize>()
    }

    /// The batch has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries' seqs, in batch order: a block's entries have the
    /// follower seqs `first_seq ..` of its header (its origin seqs in an
    /// archived batch).
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        let entries = self.entries.iter().map(|located| located.seq);
        entries.chain(
            self.blocks.iter().flat_map(|block| block.first_seq..block.first_seq + u64::from(block.header.entry_count)),
        )
    }

    /// The message as it arrived (what a Raft proposal carries).
    pub fn message(&self) -> &Bytes {
        &self.message
    }

    /// The message's size in bytes.
    pub fn message_bytes(&self) -> usize {
        self.message.len()
    }

    /// Entry `index` of a batch of entries, borrowed from the message (no
    /// parsing: `parse` found it).
    pub fn entry(&self, index: usize) -> EntryView<'_> {
        let located = &self.entries[index];
        EntryView::from_parts(
            located.seq,
            located.timestamp_ns,
            &self.message[located.body.clone()],
            &self.message[located.entry.clone()],
        )
    }
}

/// Calls `append` with borrowed [`EntryRef`]s of `entries` (views of pushed
/// entries), with the tags of all of them in one allocation. This is where a
/// pushed entry's tags are read, once; one that is not UTF-8 is
/// `INVALID_ARGUMENT` and nothing is appended.
pub fn with_pushed_refs<T>(entries: &[EntryView<'_>], append: impl FnOnce(&[EntryRef<'_>]) -> T) -> Result<T, Error> {
    let mut tags: Vec<(&str, &str)> = Vec::with_capacity(entries.len() * 4);
    let mut spans = Vec::with_capacity(entries.len());
    for (index, view) in entries.iter().enumerate() {
        let start = tags.len();
        view.for_each_tag(|key, value| tags.push((key, value)))
            .map_err(|error| malformed(format!("entry {} (seq {}): {error}", index + 1, view.seq)))?;
        spans.push(start..tags.len());
    }
    // Fields in one allocation too, made only when an entry has any.
    let mut fields: Vec<(&str, &str)> = Vec::new();
    let mut field_spans = Vec::new();
    if entries.iter().any(EntryView::has_any_field) {
        field_spans.reserve(entries.len());
        for (index, view) in entries.iter().enumerate() {
            let start = fields.len();
            view.for_each_field(|key, value| fields.push((key, value)))
                .map_err(|error| malformed(format!("entry {} (seq {}): {error}", index + 1, view.seq)))?;
            field_spans.push(start..fields.len());
        }
    }
    let refs: Vec<EntryRef<'_>> = entries
        .iter()
        .zip(spans)
        .enumerate()
        .map(|(index, (view, span))| EntryRef {
            timestamp_ns: view.timestamp_ns,
            tags: &tags[span],
            body: view.body,
            fields: field_spans.get(index).map_or(&[], |span| &fields[span.clone()]),
        })
        .collect();
    Ok(append(&refs))
}

/// What one append takes from a run of batches, in order.
enum Item<'a> {
    /// `views[range]`: entries to encode.
    Views(Range<usize>),
    /// A whole block, stored as is: its header and stored payload.
    Block(BlockHeader, &'a [u8]),
}

/// Calls `append` with the parts of `batches` after the first `skip`
/// entries of each (the duplicates), in order, for one append: pushed
/// entries as borrowed [`EntryRef`]s (their tags read here, once: one that
/// is not UTF-8 is `INVALID_ARGUMENT` and nothing is appended), and pushed
/// blocks as stored blocks, except a block the skip cuts into, whose
/// remaining entries are decompressed and encoded again. The whole blocks'
/// tags are moved to the shard.
pub fn with_fresh_parts<T>(
    batches: &mut [(&mut PushedBatch, usize)],
    append: impl FnOnce(Vec<ReplicatedPart<'_>>) -> T,
) -> Result<T, Error> {
    // First what needs `&mut`: take the tags of whole blocks, decompress cut ones.
    let mut block_tags = Vec::new();
    let mut cut_payloads = Vec::new();
    for (batch, skip) in batches.iter_mut() {
        let mut first = 0usize;
        for block in &mut batch.blocks {
            let count = block.header.entry_count as usize;
            if first >= *skip {
                block_tags.push((std::mem::take(&mut block.tags), block.terms.take()));
            } else if first + count > *skip {
                let mut raw = Vec::new();
                decompress_payload(&block.header, &batch.message[block.block.clone()], &mut raw).map_err(malformed)?;
                cut_payloads.push(raw);
            }
            first += count;
        }
    }
    let mut views: Vec<EntryView<'_>> = Vec::new();
    let mut items = Vec::new();
    let mut cut_payloads = cut_payloads.iter();
    for (batch, skip) in batches.iter() {
        let (batch, skip): (&PushedBatch, usize) = (batch, *skip);
        let run_start = views.len();
        views.extend((skip.min(batch.entries.len())..batch.entries.len()).map(|index| batch.entry(index)));
        if views.len() > run_start {
            items.push(Item::Views(run_start..views.len()));
        }
        let mut first = 0usize;
        for block in &batch.blocks {
            let header = &block.header;
            let count = header.entry_count as usize;
            if first >= skip {
                let payload = &batch.message[block.block.start + HEADER_BYTES..block.block.end];
                items.push(Item::Block(*header, payload));
            } else if first + count > skip {
                let raw = cut_payloads.next().expect("decompressed above");
                let run_start = views.len();
                let keep_from = header.first_seq + (skip - first) as u64;
                for_each_entry(header, raw, |seq, bytes| {
                    if seq >= keep_from {
                        views.push(EntryView::parse(bytes)?);
                    }
                    Ok(())
                })
                .map_err(malformed)?;
                items.push(Item::Views(run_start..views.len()));
            }
            first += count;
        }
    }
    with_pushed_refs(&views, |refs| {
        let mut block_tags = block_tags.into_iter();
        let parts = items
            .into_iter()
            .map(|item| match item {
                Item::Views(range) => ReplicatedPart::Entries(&refs[range]),
                Item::Block(header, payload) => {
                    let (tags, terms) = block_tags.next().expect("one tag set per whole block");
                    ReplicatedPart::Block { header, payload, tags, terms }
                }
            })
            .collect();
        append(parts)
    })
}

/// Pushed batches for tests here and in the layers above.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod testing {
    use bytes::Bytes;
    use prost::Message;

    use crate::proto::PushBatch;
    use crate::shard::EntryRef;

    /// A stored block of `seqs` (the follower's seqs) as a follower's shard writes it.
    pub(crate) fn stored_block(seqs: std::ops::RangeInclusive<u64>) -> Bytes {
        use crate::codec::block::{encode_block, encode_entry, encoded_bytes_max, BlockSpec};
        let mut raw = Vec::new();
        for seq in seqs.clone() {
            let body = format!("line {seq} of a follower's log");
            let tags = [("app", "web"), ("n", if seq % 2 == 0 { "even" } else { "odd" })];
            encode_entry(
                &EntryRef { fields: &[], timestamp_ns: seq as i64, tags: &tags, body: body.as_bytes() },
                seq as i64,
                &mut raw,
            );
        }
        let count = (seqs.end() - seqs.start() + 1) as u32;
        let spec = BlockSpec {
            fields: false,
            first_seq: *seqs.start(),
            entry_count: count,
            min_ts: *seqs.start() as i64,
            max_ts: *seqs.end() as i64,
            origin: None,
        };
        let mut out = vec![0; encoded_bytes_max(raw.len())];
        let used = encode_block(&spec, &raw, &mut out);
        out.truncate(used);
        out.into()
    }

    /// A follower's batch of two stored blocks, seqs 1-3 and 4-6.
    pub(crate) fn two_blocks() -> Bytes {
        let pushed = PushBatch {
            durable_seq: 0,
            follower_id: 4,
            shard: 1,
            entries: Vec::new(),
            blocks: vec![stored_block(1..=3), stored_block(4..=6)],
        };
        pushed.encode_to_vec().into()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::testing::{stored_block, two_blocks};
    use super::*;
    use crate::proto::{LogEntry, PushBatch};
    use proptest::prelude::*;
    use prost::Message;

    fn entry(seq: u64, body: &str) -> LogEntry {
        LogEntry {
            fields: Default::default(),
            seq,
            timestamp_ns: 1_700_000_000_000_000_000 + seq as i64,
            tags: [("app".to_string(), "web".to_string()), ("k".to_string(), format!("v{seq}"))].into(),
            body: body.as_bytes().to_vec().into(),
            node_id: 9,
            shard: 3,
        }
    }

    #[test]
    fn a_prost_encoded_batch_parses_to_the_same_entries() {
        let pushed = PushBatch {
            durable_seq: 0,
            follower_id: 7,
            shard: 2,
            entries: (1..=5).map(|seq| entry(seq, "body")).collect(),
            blocks: Vec::new(),
        };
        let batch = PushedBatch::parse(pushed.encode_to_vec().into()).unwrap();
        assert_eq!((batch.follower_id, batch.shard, batch.len()), (7, 2, 5));
        assert_eq!(batch.seqs().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        for (index, original) in pushed.entries.iter().enumerate() {
            let view = batch.entry(index);
            assert_eq!(view.seq, original.seq);
            assert_eq!(view.timestamp_ns, original.timestamp_ns);
            assert_eq!(view.body, &original.body[..]);
            let mut tags = Vec::new();
            view.for_each_tag(|key, value| tags.push((key.to_string(), value.to_string()))).unwrap();
            assert_eq!(tags, original.tags.clone().into_iter().collect::<Vec<_>>());
        }
        let views: Vec<_> = (0..batch.len()).map(|index| batch.entry(index)).collect();
        let bodies = with_pushed_refs(&views, |refs| {
            assert_eq!(refs[2].tags, &[("app", "web"), ("k", "v3")]);
            refs.iter().map(|entry| entry.body.to_vec()).collect::<Vec<_>>()
        })
        .unwrap();
        assert_eq!(bodies.len(), 5);
    }

    fn part_shapes(batch: &mut PushedBatch, skip: usize) -> Vec<String> {
        with_fresh_parts(&mut [(batch, skip)], |parts| {
            parts
                .iter()
                .map(|part| match part {
                    ReplicatedPart::Entries(entries) => {
                        let bodies: Vec<_> = entries.iter().map(|entry| String::from_utf8_lossy(entry.body)).collect();
                        format!("entries {bodies:?}")
                    }
                    ReplicatedPart::Block { header, tags, .. } => {
                        format!("block {}+{} ({} tags)", header.first_seq, header.entry_count, tags.len())
                    }
                })
                .collect()
        })
        .unwrap()
    }

    #[test]
    fn pushed_blocks_are_archived_whole_unless_the_watermark_cuts_one() {
        let message = two_blocks();
        let batch = PushedBatch::parse(message.clone()).unwrap();
        assert_eq!((batch.follower_id, batch.shard, batch.len()), (4, 1, 6));
        assert_eq!(batch.seqs().collect::<Vec<_>>(), (1..=6).collect::<Vec<_>>());
        let shapes = |skip| part_shapes(&mut PushedBatch::parse(message.clone()).unwrap(), skip);
        assert_eq!(shapes(0), ["block 1+3 (3 tags)", "block 4+3 (3 tags)"]);
        assert_eq!(shapes(3), ["block 4+3 (3 tags)"]);
        let cut = r#"entries ["line 5 of a follower's log", "line 6 of a follower's log"]"#;
        assert_eq!(shapes(4), [cut]);
        assert!(shapes(6).is_empty());
    }

    #[test]
    fn a_checked_parse_takes_the_given_tags_and_still_verifies_every_crc() {
        let message = two_blocks();
        let full = PushedBatch::parse(message.clone()).unwrap();
        let tags: Vec<TagSet> = full.block_tags().cloned().collect();
        let checked = PushedBatch::parse_checked(message.clone(), tags.clone(), None).unwrap();
        assert_eq!(checked.seqs().collect::<Vec<_>>(), full.seqs().collect::<Vec<_>>());
        assert_eq!(checked.block_tags().cloned().collect::<Vec<_>>(), tags);
        // A tag set too few or too many is malformed.
        assert!(PushedBatch::parse_checked(message.clone(), tags[..1].to_vec(), None).is_err());
        // A damaged payload is caught by its crc, without decompressing.
        let mut block = stored_block(1..=3).to_vec();
        block[70] ^= 0x40;
        let damaged =
            PushBatch { durable_seq: 0, follower_id: 4, shard: 1, entries: Vec::new(), blocks: vec![block.into()] };
        let error = PushedBatch::parse_checked(damaged.encode_to_vec().into(), tags[..1].to_vec(), None).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
    }

    #[test]
    fn block_terms_given_to_a_checked_parse_are_kept_for_the_shard() {
        let message = two_blocks();
        let full = PushedBatch::parse(message.clone()).unwrap();
        let tags: Vec<TagSet> = full.block_tags().cloned().collect();
        let terms: Vec<Option<Box<BlockTerms>>> =
            full.block_terms().map(|terms| terms.cloned().map(Box::new)).collect();
        assert!(terms.iter().all(Option::is_some), "a full parse gathers each block's terms");
        let checked = PushedBatch::parse_checked(message.clone(), tags.clone(), Some(terms.clone())).unwrap();
        for (sent, got) in full.block_terms().zip(checked.block_terms()) {
            let (sent, got) = (sent.unwrap(), got.unwrap());
            assert_eq!(got.sets().collect::<Vec<_>>(), sent.sets().collect::<Vec<_>>());
            assert_eq!(got.word_filter(), sent.word_filter());
        }
        // Terms of a block too few or too many are malformed.
        assert!(PushedBatch::parse_checked(message.clone(), tags.clone(), Some(terms[..1].to_vec())).is_err());
        // A checked parse gathers none.
        assert!(PushedBatch::parse_checked(message, tags, None).unwrap().block_terms().all(|terms| terms.is_none()));
    }

    /// An archive's stored block of origin `pair`'s seqs `seqs`, at shard seq 500.
    fn archived_block(pair: (u32, u32), seqs: std::ops::RangeInclusive<u64>) -> Bytes {
        use crate::codec::block::{encode_block, Origin};
        let follower = stored_block(seqs.clone());
        let header = crate::codec::block::verify_block(&follower).unwrap();
        let mut raw = Vec::new();
        decompress_payload(&header, &follower, &mut raw).unwrap();
        let spec = crate::codec::block::BlockSpec {
            fields: false,
            first_seq: 500,
            entry_count: header.entry_count,
            min_ts: header.min_ts,
            max_ts: header.max_ts,
            origin: Some(Origin { node: pair.0, shard: pair.1, first_seq: *seqs.start() }),
        };
        let mut out = vec![0; crate::codec::block::encoded_bytes_max(raw.len())];
        let used = encode_block(&spec, &raw, &mut out);
        out.truncate(used);
        out.into()
    }

    #[test]
    fn archived_blocks_hold_their_origin_seqs_and_must_be_the_batchs_pair_without_a_gap() {
        let batch = |blocks: Vec<Bytes>| {
            PushBatch { durable_seq: 0, follower_id: 4, shard: 1, entries: Vec::new(), blocks }.encode_to_vec()
        };
        let good = batch(vec![archived_block((4, 1), 10..=12), archived_block((4, 1), 13..=14)]);
        let parsed = PushedBatch::parse_archived(good.clone().into()).unwrap();
        assert_eq!(parsed.seqs().collect::<Vec<_>>(), (10..=14).collect::<Vec<_>>());
        let tags: Vec<TagSet> = parsed.block_tags().cloned().collect();
        let checked = PushedBatch::parse_archived_checked(good.clone().into(), tags, None).unwrap();
        assert_eq!(checked.seqs().collect::<Vec<_>>(), (10..=14).collect::<Vec<_>>());
        // As a follower's push, the same blocks hold the shard's seqs.
        assert_eq!(PushedBatch::parse(good.into()).unwrap().seqs().next(), Some(500));
        let error = |blocks| PushedBatch::parse_archived(batch(blocks).into()).unwrap_err().to_string();
        assert!(error(vec![archived_block((4, 2), 1..=2)]).contains("origin Some((4, 2)) in a batch of (4, 1)"));
        assert!(error(vec![stored_block(1..=2)]).contains("without an origin"));
        let gap = error(vec![archived_block((4, 1), 1..=2), archived_block((4, 1), 4..=5)]);
        assert!(gap.contains("does not follow"), "{gap}");
    }

    #[test]
    fn a_bad_block_or_a_batch_mixing_entries_and_blocks_is_invalid_argument() {
        use crate::grpc::status::Code;
        let mut block = stored_block(1..=3).to_vec();
        block[70] ^= 0x40;
        let damaged =
            PushBatch { durable_seq: 0, follower_id: 1, shard: 0, entries: Vec::new(), blocks: vec![block.into()] };
        let status = crate::grpc::Status::from(PushedBatch::parse(damaged.encode_to_vec().into()).unwrap_err());
        assert_eq!(status.code, Code::InvalidArgument);
        assert!(status.message.contains("block 1: block checksum mismatch"), "{status:?}");
        let mixed = PushBatch {
            durable_seq: 0,
            follower_id: 1,
            shard: 0,
            entries: vec![entry(4, "x")],
            blocks: vec![stored_block(1..=3)],
        };
        let status = crate::grpc::Status::from(PushedBatch::parse(mixed.encode_to_vec().into()).unwrap_err());
        assert!(status.message.contains("not both"), "{status:?}");
    }

    #[test]
    fn entries_without_a_body_or_tags_parse() {
        let pushed = PushBatch {
            durable_seq: 0,
            follower_id: 3,
            shard: 1,
            entries: vec![LogEntry { seq: 1, ..LogEntry::default() }],
            blocks: Vec::new(),
        };
        let batch = PushedBatch::parse(pushed.encode_to_vec().into()).unwrap();
        let view = batch.entry(0);
        assert_eq!((view.seq, view.timestamp_ns, view.body), (1, 0, &[][..]));
        with_pushed_refs(&[view], |refs| assert!(refs[0].tags.is_empty() && refs[0].body.is_empty())).unwrap();
    }

    #[test]
    fn malformed_batches_are_invalid_argument() {
        use crate::grpc::status::Code;
        let good =
            PushBatch { durable_seq: 0, follower_id: 1, shard: 0, entries: vec![entry(1, "x")], blocks: Vec::new() }
                .encode_to_vec();
        for cut in 1..good.len() {
            if let Err(error) = PushedBatch::parse(Bytes::copy_from_slice(&good[..cut])) {
                let status = crate::grpc::Status::from(error);
                assert_eq!(status.code, Code::InvalidArgument);
            }
        }
        let mut bad_tag =
            PushBatch { durable_seq: 0, follower_id: 1, shard: 0, entries: vec![], blocks: Vec::new() }.encode_to_vec();
        // entry { tags: { key: 0xFF (not UTF-8), value: "v" } }
        bad_tag.extend_from_slice(&[0x1A, 8, 0x1A, 6, 0x0A, 1, 0xFF, 0x12, 1, b'v']);
        // Tags are read (and checked) once, when the entries are appended.
        let batch = PushedBatch::parse(bad_tag.into()).unwrap();
        let status = crate::grpc::Status::from(with_pushed_refs(&[batch.entry(0)], |_| ()).unwrap_err());
        assert_eq!(status.code, Code::InvalidArgument, "{status:?}");
        let status = crate::grpc::Status::from(
            PushedBatch::parse(Bytes::from_static(&[0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])).unwrap_err(),
        );
        assert!(status.message.contains("32 bits"), "{status:?}");
    }

    // ---- properties (the fuzz target `push_batch` checks more, on nightly) ----

    /// One pushed entry as the leader reads it: seq, timestamp, tags in
    /// their order, body.
    type Pushed = (u64, i64, Vec<(String, String)>, Vec<u8>);

    /// The entries of a batch of entries, or `None` when a tag is not UTF-8
    /// (refused when appended).
    fn entries_of(batch: &PushedBatch) -> Option<Vec<Pushed>> {
        let views: Vec<EntryView<'_>> = (0..batch.entries.len()).map(|index| batch.entry(index)).collect();
        with_pushed_refs(&views, |refs| {
            let tags = |entry: &EntryRef<'_>| -> Vec<(String, String)> {
                entry.tags.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
            };
            let entries = views.iter().zip(refs);
            entries.map(|(view, entry)| (view.seq, entry.timestamp_ns, tags(entry), entry.body.to_vec())).collect()
        })
        .ok()
    }

    fn put_varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    /// A `PushBatch` of `entries`, encoded by hand (prost would sort and
    /// merge tags): each entry is its seq, then its stored form.
    fn encode_batch(follower_id: u32, shard: u32, entries: &[Pushed]) -> Vec<u8> {
        let mut out = vec![1 << 3];
        put_varint(&mut out, u64::from(follower_id));
        out.push(2 << 3);
        put_varint(&mut out, u64::from(shard));
        for (seq, timestamp_ns, tags, body) in entries {
            let tags: Vec<(&str, &str)> = tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
            let mut stored = Vec::new();
            crate::codec::block::encode_entry(
                &EntryRef { fields: &[], timestamp_ns: 0, tags: &tags, body },
                *timestamp_ns,
                &mut stored,
            );
            let (_, prefix) = read_varint(&stored).unwrap();
            let mut entry = vec![1 << 3];
            put_varint(&mut entry, *seq);
            entry.extend_from_slice(&stored[prefix..]);
            out.push((3 << 3) | 2);
            put_varint(&mut out, entry.len() as u64);
            out.extend_from_slice(&entry);
        }
        out
    }

    /// Parses `message`: a refusal is `INVALID_ARGUMENT`; an accepted batch
    /// of entries encodes again to a message that parses to the same ids
    /// and entries. Returns the entries.
    fn check_parse(message: &[u8]) -> Option<Vec<Pushed>> {
        use crate::grpc::status::Code;
        let batch = match PushedBatch::parse(Bytes::copy_from_slice(message)) {
            Ok(batch) => batch,
            Err(error) => {
                let status = crate::grpc::Status::from(error);
                assert_eq!(status.code, Code::InvalidArgument, "{status:?}");
                return None;
            }
        };
        assert_eq!(batch.seqs().count(), batch.len());
        if !batch.blocks.is_empty() {
            return None;
        }
        let entries = entries_of(&batch)?;
        let again = PushedBatch::parse(encode_batch(batch.follower_id, batch.shard, &entries).into())
            .unwrap_or_else(|status| panic!("{entries:?} encoded again: {status:?}"));
        assert_eq!((again.follower_id, again.shard), (batch.follower_id, batch.shard));
        assert_eq!(entries_of(&again).as_ref(), Some(&entries));
        Some(entries)
    }

    fn pushed_entry() -> impl Strategy<Value = Pushed> {
        let tags = prop::collection::btree_map("[a-z]{0,3}", "[a-z0-9]{0,5}", 0..4);
        (any::<u64>(), any::<i64>(), tags, prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(seq, timestamp_ns, tags, body)| (seq, timestamp_ns, tags.into_iter().collect(), body))
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_parse_or_are_refused(message in prop::collection::vec(any::<u8>(), 0..300)) {
            check_parse(&message);
        }

        #[test]
        fn mutated_batches_parse_or_are_refused_and_accepted_ones_encode_again_to_the_same_entries(
            entries in prop::collection::vec(pushed_entry(), 0..6),
            follower_id in any::<u32>(),
            shard in any::<u32>(),
            overwrites in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            truncate in prop::option::of(any::<prop::sample::Index>()),
        ) {
            let protos: Vec<LogEntry> = entries
                .iter()
                .map(|(seq, timestamp_ns, tags, body)| LogEntry { fields: Default::default(),
                    seq: *seq,
                    timestamp_ns: *timestamp_ns,
                    tags: tags.iter().cloned().collect(),
                    body: body.clone().into(),
                    node_id: 0,
                    shard: 0,
                })
                .collect();
            let mut message = PushBatch { durable_seq: 0, follower_id, shard, entries: protos, blocks: Vec::new() }.encode_to_vec();
            prop_assert_eq!(check_parse(&message), Some(entries), "prost's encoding parses to its entries");
            for (position, value) in overwrites {
                if !message.is_empty() {
                    let position = position.index(message.len());
                    message[position] = value;
                }
            }
            if let Some(cut) = truncate {
                message.truncate(cut.index(message.len() + 1));
            }
            check_parse(&message);
        }
    }
}
