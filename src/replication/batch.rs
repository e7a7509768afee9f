//! A pushed batch parsed without copying or allocating per entry: the
//! leader reads `PushBatch` messages as byte ranges of the received
//! message, and hands the shard borrowed entries ([`EntryRef`]), so a
//! pushed entry is copied once, into the archive's block.

use std::ops::Range;

use bytes::Bytes;

use super::status::Status;
use crate::shard::block::{read_varint, skip_fixed, split_delimited, EntryView};
use crate::shard::EntryRef;

/// A `PushBatch` message, validated, with its entries located.
#[derive(Clone, Debug)]
pub struct PushedBatch {
    /// The follower.
    pub follower_id: u32,
    /// The follower's shard.
    pub shard: u32,
    message: Bytes,
    entries: Vec<Located>,
}

/// One entry of a pushed batch: what parsing found, as ranges of the message.
#[derive(Clone, Debug)]
struct Located {
    seq: u64,
    timestamp_ns: i64,
    entry: Range<usize>,
    body: Range<usize>,
}

fn malformed(error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("malformed PushBatch: {error}"))
}

impl PushedBatch {
    /// Parses a `PushBatch` message: its protobuf structure and every
    /// entry's fields, once. Malformed input is `INVALID_ARGUMENT`. Tags are
    /// checked (UTF-8) when the entries are appended
    /// ([`with_pushed_refs`]), the one pass that reads them.
    pub fn parse(message: Bytes) -> Result<PushedBatch, Status> {
        let mut batch = PushedBatch { follower_id: 0, shard: 0, message: message.clone(), entries: Vec::new() };
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
                    }
                    rest = after;
                }
                (_, 0) => {
                    let (_, used) = read_varint(rest).ok_or_else(|| malformed("bad varint"))?;
                    rest = &rest[used..];
                }
                (_, wire_type @ (1 | 5)) => rest = skip_fixed(rest, wire_type).map_err(malformed)?,
                (_, wire_type) => return Err(malformed(format!("unexpected wire type {wire_type}"))),
            }
        }
        Ok(batch)
    }

    /// Entries in the batch.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The batch has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries' seqs, in batch order.
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().map(|located| located.seq)
    }

    /// The message's size in bytes.
    pub fn message_bytes(&self) -> usize {
        self.message.len()
    }

    /// Entry `index`, borrowed from the message (no parsing: `parse` found it).
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
pub fn with_pushed_refs<T>(entries: &[EntryView<'_>], append: impl FnOnce(&[EntryRef<'_>]) -> T) -> Result<T, Status> {
    let mut tags: Vec<(&str, &str)> = Vec::with_capacity(entries.len() * 4);
    let mut spans = Vec::with_capacity(entries.len());
    for (index, view) in entries.iter().enumerate() {
        let start = tags.len();
        view.for_each_tag(|key, value| tags.push((key, value)))
            .map_err(|error| malformed(format!("entry {} (seq {}): {error}", index + 1, view.seq)))?;
        spans.push(start..tags.len());
    }
    let refs: Vec<EntryRef<'_>> = entries
        .iter()
        .zip(spans)
        .map(|(view, span)| EntryRef { timestamp_ns: view.timestamp_ns, tags: &tags[span], body: view.body })
        .collect();
    Ok(append(&refs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::{LogEntry, PushBatch};
    use prost::Message;

    fn entry(seq: u64, body: &str) -> LogEntry {
        LogEntry {
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
        let pushed = PushBatch { follower_id: 7, shard: 2, entries: (1..=5).map(|seq| entry(seq, "body")).collect() };
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

    #[test]
    fn entries_without_a_body_or_tags_parse() {
        let pushed = PushBatch { follower_id: 3, shard: 1, entries: vec![LogEntry { seq: 1, ..LogEntry::default() }] };
        let batch = PushedBatch::parse(pushed.encode_to_vec().into()).unwrap();
        let view = batch.entry(0);
        assert_eq!((view.seq, view.timestamp_ns, view.body), (1, 0, &[][..]));
        with_pushed_refs(&[view], |refs| assert!(refs[0].tags.is_empty() && refs[0].body.is_empty())).unwrap();
    }

    #[test]
    fn malformed_batches_are_invalid_argument() {
        use crate::replication::status::Code;
        let good = PushBatch { follower_id: 1, shard: 0, entries: vec![entry(1, "x")] }.encode_to_vec();
        for cut in 1..good.len() {
            if let Err(status) = PushedBatch::parse(Bytes::copy_from_slice(&good[..cut])) {
                assert_eq!(status.code, Code::InvalidArgument);
            }
        }
        let mut bad_tag = PushBatch { follower_id: 1, shard: 0, entries: vec![] }.encode_to_vec();
        // entry { tags: { key: 0xFF (not UTF-8), value: "v" } }
        bad_tag.extend_from_slice(&[0x1A, 8, 0x1A, 6, 0x0A, 1, 0xFF, 0x12, 1, b'v']);
        // Tags are read (and checked) once, when the entries are appended.
        let batch = PushedBatch::parse(bad_tag.into()).unwrap();
        let status = with_pushed_refs(&[batch.entry(0)], |_| ()).unwrap_err();
        assert_eq!(status.code, Code::InvalidArgument, "{status:?}");
        let status = PushedBatch::parse(Bytes::from_static(&[0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])).unwrap_err();
        assert!(status.message.contains("32 bits"), "{status:?}");
    }
}
