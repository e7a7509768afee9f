//! Readers: by seq (replay, tail) and by query (tags and time, through the
//! index; then every predicate exactly, see [`super::filter`]). Reads see
//! durable blocks only, go through O_DIRECT reads and verify each block's
//! crc before decoding it.
//!
//! An ordered query ([`OrderedQuery`], what `GET /v1/entries` runs on each
//! shard) is a pipeline: it keeps up to
//! [`limits::QUERY_READ_BYTES_IN_FLIGHT_MAX`] of coalesced block reads in
//! flight while the core decompresses (into one reused buffer) and filters
//! the block before, and it decodes only the entries that match. Its reads
//! start small and grow, and what all of a shard's queries read ahead is
//! bounded by [`limits::QUERY_READ_BYTES_PER_CORE_MAX`]. A block
//! whose payload lacks a `contains=` text (or a `q=` word's part without
//! letters) is skipped after one `memmem` pass, without parsing its
//! entries ([`super::filter::PayloadPrefilter`]).

use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;

use futures_util::stream::{FuturesOrdered, StreamExt};
use glommio::io::{DmaBuffer, DmaFile, ReadResult};

use super::filter::{EntryFilter, PayloadPrefilter, Substrings};
use super::TagSet;
use super::{recovery, Error, Result, Shard, State};
use crate::codec::block::{self, EntryView};
use crate::index::word_filter::WordFilter;
use crate::index::words::WordQuery;
use crate::index::{BlockMeta, OriginKey, Predicates, SegmentIndex};
use crate::limits::{
    self, QUERY_FIRST_READ_BYTES, QUERY_READ_BYTES_IN_FLIGHT_MAX, QUERY_READ_BYTES_PER_CORE_MAX, READ_COALESCE_BYTES,
};
use crate::proto::LogEntry;

/// What [`Shard::read_replicated_blocks`] calls with each block: its
/// header, its bytes, its tags when the index knows them.
pub type SnapshotVisit<'a> = dyn FnMut(&block::BlockHeader, &[u8], Option<TagSet>, Option<WordFilter>) + 'a;

/// A query over one shard.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// Entries must carry all of these `key=value` tags.
    pub tags: &'a [(&'a str, &'a str)],
    /// Entries must carry all of these `key=value` fields (exact; fields
    /// are not indexed, so they are checked on the blocks the tags leave).
    pub fields: &'a [(&'a str, &'a str)],
    /// Smallest timestamp, inclusive.
    pub from_ts: i64,
    /// Largest timestamp, exclusive.
    pub to_ts: i64,
    /// Most entries to return (capped at [`limits::READ_ENTRIES_MAX`]).
    pub limit: usize,
    /// Newest seq first instead of oldest first.
    pub backward: bool,
    /// Whole words the body must hold, all of them (`q=`, ASCII
    /// case-insensitive). Checked on every entry read; the index's word
    /// filters narrow the blocks once they exist (see `candidate_blocks`).
    pub words: &'a WordQuery,
    /// Exact substrings the body must hold, all of them (`contains=`):
    /// brute force over the blocks the other predicates leave.
    pub contains: &'a Substrings,
}

impl Query<'_> {
    /// The exact per-entry check of this query, owned.
    pub fn filter(&self) -> EntryFilter {
        let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
        };
        EntryFilter {
            from_ts: self.from_ts,
            to_ts: self.to_ts,
            tags: owned(self.tags),
            fields: owned(self.fields),
            words: self.words.clone(),
            contains: self.contains.clone(),
        }
    }
}

/// What a query found.
#[derive(Clone, Debug, Default)]
pub struct QueryResult {
    /// Matching entries in seq order (reversed when backward).
    pub entries: Vec<LogEntry>,
    /// Blocks read and decoded to answer: the index's selectivity.
    pub blocks_read: u64,
}

/// One segment's part of a read plan: the blocks to read, in order.
struct Plan {
    file: Rc<DmaFile>,
    path: PathBuf,
    blocks: Vec<BlockMeta>,
}

pub(super) fn evict_indexes(state: &mut State) {
    let sizes: Vec<usize> = state.loaded_indexes.iter().map(|&(_, bytes)| bytes).collect();
    let evict = indexes_to_evict(&sizes, limits::INDEX_CACHE_SEGMENTS_MAX, limits::INDEX_CACHE_BYTES_MAX);
    for _ in 0..evict {
        let Some((first_seq, bytes)) = state.loaded_indexes.pop_front() else { break };
        if let Some(sealed) = state.sealed.iter().find(|sealed| sealed.first_seq == first_seq) {
            if sealed.pinned {
                // Its index file is being renamed: it stays, as if just used.
                state.loaded_indexes.push_back((first_seq, bytes));
                continue;
            }
            sealed.index.borrow_mut().take();
        }
    }
}

/// How many of the loaded indexes (estimated bytes each, least recently
/// used first) to unload so that at most `count_max` stay and they hold at
/// most `bytes_max`, except that the most recent one always stays.
fn indexes_to_evict(sizes: &[usize], count_max: usize, bytes_max: usize) -> usize {
    let mut bytes: usize = sizes.iter().sum();
    let mut evict = 0;
    while sizes.len() - evict > 1 && (sizes.len() - evict > count_max || bytes > bytes_max) {
        bytes -= sizes[evict];
        evict += 1;
    }
    evict
}

/// Which segments a read touches, by first seq, oldest first.
#[derive(Clone, Copy)]
enum Target {
    Sealed(u64),
    Active,
}

impl Shard {
    /// The file, path and index of a sealed segment, loading (and caching)
    /// what is not loaded; with `with_filters`, the index's word filters too.
    async fn sealed_parts(
        &self,
        first_seq: u64,
        with_filters: bool,
    ) -> Result<Option<(Rc<DmaFile>, PathBuf, Rc<SegmentIndex>)>> {
        let parts = self.sealed_parts_with_generation(first_seq, with_filters).await?;
        Ok(parts.map(|(file, path, index, _)| (file, path, index)))
    }

    /// A sealed segment's file and index (loaded if need be, and cached),
    /// which always belong together, and the generation they are of; `None`
    /// if retention deleted the segment. With `with_filters`, the index's
    /// word filters are loaded too. A cold rewrite that swaps the
    /// segment while one of them loads makes the load start again, so a
    /// reader never pairs an old file with a new index (or the reverse).
    pub(super) async fn sealed_parts_with_generation(
        &self,
        first_seq: u64,
        with_filters: bool,
    ) -> Result<Option<(Rc<DmaFile>, PathBuf, Rc<SegmentIndex>, u64)>> {
        // A segment is swapped once (a cold segment is not rewritten
        // again): a second attempt finds the new pair, loaded or not.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (path, index_path, file, index, generation) = {
                let state = self.inner.state.borrow();
                let Some(sealed) = state.sealed.iter().find(|sealed| sealed.first_seq == first_seq) else {
                    return Ok(None); // deleted by retention meanwhile
                };
                let file = sealed.file.borrow().clone();
                let index = sealed.index.borrow().clone();
                (sealed.path.clone(), sealed.index_path.clone(), file, index, sealed.generation)
            };
            let loaded = async {
                let file = match file {
                    Some(file) => file,
                    None => {
                        let file =
                            DmaFile::open(&path).await.map_err(|error| Error::glommio("open segment", &path, error))?;
                        Rc::new(file)
                    }
                };
                let index = match index {
                    Some(index) => index,
                    None => Rc::new(recovery::load_index(&index_path).await?),
                };
                if with_filters {
                    recovery::load_filters(&index_path, &index).await?;
                }
                Ok::<_, Error>((file, index))
            }
            .await;
            let mut state = self.inner.state.borrow_mut();
            let Some(sealed) = state.sealed.iter().find(|sealed| sealed.first_seq == first_seq) else {
                return Ok(None);
            };
            if sealed.generation != generation && attempts < 3 {
                continue;
            }
            let (file, index) = loaded?;
            *sealed.file.borrow_mut() = Some(file.clone());
            let was_loaded = sealed.index.borrow().is_some();
            *sealed.index.borrow_mut() = Some(index.clone());
            state.loaded_indexes.retain(|&(first, _)| first != first_seq);
            state.loaded_indexes.push_back((first_seq, index.memory_bytes()));
            if !was_loaded {
                evict_indexes(&mut state);
            }
            return Ok(Some((file, path, index, generation)));
        }
    }

    /// Plans the blocks of one segment that `select` picks from its index;
    /// for the active segment, only durable blocks.
    /// With `with_filters`, a sealed index's word filters are loaded before
    /// `select` runs (a query with words needs them to prune blocks).
    async fn plan(
        &self,
        target: Target,
        with_filters: bool,
        select: impl Fn(&SegmentIndex, usize) -> Vec<BlockMeta>,
    ) -> Result<Option<Plan>> {
        match target {
            Target::Sealed(first_seq) => {
                let Some((file, path, index)) = self.sealed_parts(first_seq, with_filters).await? else {
                    return Ok(None);
                };
                let visible = index.blocks().len();
                Ok(Some(Plan { file, path, blocks: select(&index, visible) }))
            }
            Target::Active => {
                let state = self.inner.state.borrow();
                let active = &state.active;
                Ok(Some(Plan {
                    file: active.file.clone(),
                    path: active.path.clone(),
                    blocks: select(&active.index, active.durable_blocks),
                }))
            }
        }
    }

    fn targets(&self, overlaps: impl Fn(u64, u64, i64, i64) -> bool) -> Vec<Target> {
        let state = self.inner.state.borrow();
        let mut targets: Vec<Target> = state
            .sealed
            .iter()
            .filter(|sealed| match sealed.summary.time_range() {
                Some((min_ts, max_ts)) => overlaps(sealed.first_seq, sealed.next_seq, min_ts, max_ts),
                None => false,
            })
            .map(|sealed| Target::Sealed(sealed.first_seq))
            .collect();
        targets.push(Target::Active);
        targets
    }

    /// Reads and decodes `plan`'s blocks in order (or reverse order), calling
    /// `visit` with each block's entries (already filtered by `keep`) until
    /// it returns false. A block whose payload `rules_out` is not parsed.
    async fn read_plan(
        &self,
        plan: &Plan,
        backward: bool,
        keep: &dyn Fn(u64, &EntryView<'_>) -> bool,
        rules_out: &dyn Fn(&[u8]) -> bool,
        visit: &mut dyn FnMut(Vec<LogEntry>) -> bool,
    ) -> Result<bool> {
        let (node, shard) = (self.inner.config.node_id, self.inner.config.shard_id);
        let mut raw = Vec::new();
        self.read_blocks(plan, backward, &mut |meta, block_bytes| {
            let mut entries: Vec<LogEntry> = matching_entries(block_bytes, &mut raw, node, shard, rules_out, keep)
                .map_err(|source| Error::Block { path: plan.path.clone(), offset: meta.offset, source })?
                .into_iter()
                .map(|(_, entry)| entry)
                .collect();
            if backward {
                entries.reverse();
            }
            Ok(entries.is_empty() || visit(entries))
        })
        .await
    }

    /// Reads `plan`'s blocks (adjacent ones in one read), in order or in
    /// reverse order, calling `visit` with each block's bytes until it
    /// returns false.
    async fn read_blocks(
        &self,
        plan: &Plan,
        backward: bool,
        visit: &mut dyn FnMut(&BlockMeta, &[u8]) -> Result<bool>,
    ) -> Result<bool> {
        let groups = coalesce(&plan.blocks);
        let ordered: Box<dyn Iterator<Item = &[BlockMeta]>> = if backward {
            Box::new(groups.iter().rev().map(|group| group.as_slice()))
        } else {
            Box::new(groups.iter().map(|group| group.as_slice()))
        };
        for group in ordered {
            let start = group[0].offset;
            let end = group[group.len() - 1].offset + u64::from(group[group.len() - 1].len);
            let bytes = match self.recent_bytes(&plan.path, start, end) {
                Some(bytes) => GroupBytes::Recent(bytes),
                None => GroupBytes::Read(
                    plan.file
                        .read_at(start, (end - start) as usize)
                        .await
                        .map_err(|error| Error::glommio("read segment", &plan.path, error))?,
                ),
            };
            let bytes = bytes.as_slice();
            self.inner.state.borrow_mut().stats.blocks_read += group.len() as u64;
            let block_order: Box<dyn Iterator<Item = &BlockMeta>> =
                if backward { Box::new(group.iter().rev()) } else { Box::new(group.iter()) };
            for meta in block_order {
                let local = (meta.offset - start) as usize;
                let block_bytes = bytes.get(local..local + meta.len as usize).ok_or_else(|| Error::Block {
                    path: plan.path.clone(),
                    offset: meta.offset,
                    source: block::BlockError::Truncated {
                        needed: meta.len as usize,
                        available: bytes.len().saturating_sub(local),
                    },
                })?;
                if !visit(meta, block_bytes)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The bytes `start..end` of segment `path` if a recent commit buffer
    /// still holds them (they are then the same bytes as on disk).
    fn recent_bytes(&self, path: &Path, start: u64, end: u64) -> Option<(Rc<DmaBuffer>, Range<usize>)> {
        let state = self.inner.state.borrow();
        let write = state
            .recent_writes
            .iter()
            .rev()
            .find(|write| write.path == path && write.start <= start && end <= write.end)?;
        let local = (start - write.start) as usize..(end - write.start) as usize;
        Some((write.buffer.clone(), local))
    }

    /// Plans, segment by segment, the durable blocks holding seqs from
    /// `from_seq` on, about `limit` entries' worth.
    async fn plans_from(&self, from_seq: u64, limit: usize) -> Result<Vec<Plan>> {
        let mut plans = Vec::new();
        let mut planned = 0usize;
        for target in self.targets(|_, next_seq, _, _| next_seq > from_seq) {
            if planned >= limit {
                break;
            }
            let room = limit - planned;
            let plan = self
                .plan(target, false, |index, visible| {
                    let blocks = &index.blocks()[..visible];
                    let start = blocks.partition_point(|meta| meta.first_seq + u64::from(meta.entry_count) <= from_seq);
                    let mut picked = Vec::new();
                    let mut entries = 0usize;
                    for meta in &blocks[start..] {
                        if entries >= room {
                            break;
                        }
                        entries += meta.entry_count as usize;
                        picked.push(*meta);
                    }
                    picked
                })
                .await?;
            if let Some(plan) = plan {
                planned += plan.blocks.iter().map(|meta| meta.entry_count as usize).sum::<usize>();
                plans.push(plan);
            }
        }
        Ok(plans)
    }

    /// Visits up to `limit` durable entries with seq >= `from_seq`, in seq
    /// order, as their stored bytes (a protobuf `LogEntry` without its
    /// length prefix and with no seq/node/shard fields), stopping early once
    /// `bytes_max` entry bytes were visited. No decoding: this is how a
    /// follower's pusher builds its batches. Returns the entries visited.
    pub async fn read_raw_from(
        &self,
        from_seq: u64,
        limit: usize,
        bytes_max: usize,
        visit: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<usize> {
        let limit = limit.min(limits::READ_ENTRIES_MAX);
        let mut visited = 0usize;
        let mut bytes = 0usize;
        let mut raw = Vec::new();
        for plan in self.plans_from(from_seq, limit).await? {
            let complete = self
                .read_blocks(&plan, false, &mut |meta, block_bytes| {
                    let block_error = |source| Error::Block { path: plan.path.clone(), offset: meta.offset, source };
                    let header = block::verify_block(block_bytes).map_err(block_error)?;
                    block::decompress_payload(&header, block_bytes, &mut raw).map_err(block_error)?;
                    block::for_each_entry(&header, &raw, |seq, entry| {
                        if seq >= from_seq && visited < limit && bytes < bytes_max {
                            visit(seq, entry);
                            visited += 1;
                            bytes += entry.len();
                        }
                        Ok(())
                    })
                    .map_err(block_error)?;
                    Ok(visited < limit && bytes < bytes_max)
                })
                .await?;
            if !complete {
                break;
            }
        }
        Ok(visited)
    }

    /// Visits whole durable blocks, crc-checked but not decoded, in seq
    /// order from the one holding `from_seq` (which may start before it),
    /// while `visit(header, block bytes)` returns true, up to about `limit`
    /// entries and until `bytes_max` block bytes were visited. This is what
    /// a follower's pusher sends. Returns the blocks visited.
    pub async fn read_stored_blocks_from(
        &self,
        from_seq: u64,
        limit: usize,
        bytes_max: usize,
        visit: &mut dyn FnMut(&block::BlockHeader, &[u8]) -> bool,
    ) -> Result<usize> {
        let limit = limit.min(limits::READ_ENTRIES_MAX);
        let mut visited = 0usize;
        let mut bytes = 0usize;
        for plan in self.plans_from(from_seq, limit).await? {
            let complete = self
                .read_blocks(&plan, false, &mut |meta, block_bytes| {
                    let block_error = |source| Error::Block { path: plan.path.clone(), offset: meta.offset, source };
                    let header = block::verify_block(block_bytes).map_err(block_error)?;
                    if !visit(&header, &block_bytes[..header.block_bytes()]) {
                        return Ok(false);
                    }
                    visited += 1;
                    bytes += header.block_bytes();
                    Ok(bytes < bytes_max)
                })
                .await?;
            if !complete {
                break;
            }
        }
        Ok(visited)
    }

    /// Visits the durable replicated blocks a snapshot sends, whole and
    /// crc-checked but not decoded, in seq order: from the block holding
    /// `from_seq` through the one holding `through_seq`, those whose origin
    /// seqs `wanted(origin, first, last)` accepts, with their tags when the
    /// segment's index knows them all ([`SegmentIndex::block_tags`]) and
    /// their word filters ([`SegmentIndex::word_filter`]), until
    /// about `bytes_max` block bytes were visited. A sealed segment none
    /// of whose origin ranges `wanted` accepts is passed over unread, its
    /// index not even loaded: what a receiver already holds costs nothing.
    /// Blocks without an origin are passed over. Returns the seq to go on
    /// from: past `through_seq` once done.
    pub async fn read_replicated_blocks(
        &self,
        from_seq: u64,
        through_seq: u64,
        wanted: &dyn Fn(OriginKey, u64, u64) -> bool,
        bytes_max: usize,
        visit: &mut SnapshotVisit<'_>,
    ) -> Result<u64> {
        /// A segment to read, or one passed over up to its end.
        enum Step {
            Read(Target),
            PassOver(u64),
        }
        let steps: Vec<Step> = {
            let state = self.inner.state.borrow();
            let mut steps: Vec<Step> = state
                .sealed
                .iter()
                .filter(|sealed| sealed.next_seq > from_seq && sealed.first_seq <= through_seq)
                .map(|sealed| {
                    if sealed.origin_seqs.iter().any(|(&key, &(first, last))| wanted(key, first, last)) {
                        Step::Read(Target::Sealed(sealed.first_seq))
                    } else {
                        Step::PassOver(sealed.next_seq)
                    }
                })
                .collect();
            steps.push(Step::Read(Target::Active));
            steps
        };
        let mut next = from_seq;
        let mut bytes = 0usize;
        for step in steps {
            let target = match step {
                Step::PassOver(end) => {
                    next = next.max(end);
                    continue;
                }
                Step::Read(target) => target,
            };
            let considered = std::cell::Cell::new(next);
            let tags = std::cell::RefCell::new(Vec::new());
            let filters = std::cell::RefCell::new(Vec::new());
            let room = bytes_max.saturating_sub(bytes);
            let plan = self
                .plan(target, true, |index, visible| {
                    let blocks = &index.blocks()[..visible];
                    let start = blocks.partition_point(|meta| meta.next_seq() <= next);
                    let (mut picked, mut positions) = (Vec::new(), Vec::new());
                    let mut planned = 0usize;
                    for (position, meta) in blocks.iter().enumerate().skip(start) {
                        if meta.first_seq > through_seq || planned >= room {
                            break;
                        }
                        considered.set(meta.next_seq());
                        let (Some(key), Some(origin), Some(last)) =
                            (meta.origin_key(), meta.origin, meta.origin_last_seq())
                        else {
                            continue;
                        };
                        if wanted(key, origin.first_seq, last) {
                            planned += meta.len as usize;
                            picked.push(*meta);
                            positions.push(position as u32);
                        }
                    }
                    *tags.borrow_mut() = index.block_tags(&positions);
                    *filters.borrow_mut() = positions.iter().map(|&position| index.word_filter(position)).collect();
                    picked
                })
                .await?;
            // A sealed segment retention deleted meanwhile: its seqs are gone
            // (the caller finds the hole).
            let Some(plan) = plan else { continue };
            let (mut tags, mut filters) = (tags.take().into_iter(), filters.take().into_iter());
            self.read_blocks(&plan, false, &mut |meta, block_bytes| {
                let block_error = |source| Error::Block { path: plan.path.clone(), offset: meta.offset, source };
                let header = block::verify_block(block_bytes).map_err(block_error)?;
                bytes += header.block_bytes();
                visit(&header, &block_bytes[..header.block_bytes()], tags.next().flatten(), filters.next().flatten());
                Ok(true)
            })
            .await?;
            next = considered.get();
            if bytes >= bytes_max {
                break;
            }
        }
        Ok(next)
    }

    /// Up to `limit` durable entries with seq >= `from_seq`, in seq order.
    /// Entries below [`Shard::first_seq`] are gone (retention): reading
    /// starts at the first one still on disk.
    pub async fn read_from(&self, from_seq: u64, limit: usize) -> Result<Vec<LogEntry>> {
        let limit = limit.min(limits::READ_ENTRIES_MAX);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for plan in self.plans_from(from_seq, limit).await? {
            let keep = |seq: u64, _: &EntryView<'_>| seq >= from_seq;
            let complete = self
                .read_plan(&plan, false, &keep, &|_| false, &mut |entries| {
                    let room = limit - out.len();
                    out.extend(entries.into_iter().take(room));
                    out.len() < limit
                })
                .await?;
            if !complete || out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `limit` durable replicated entries of origin `(node, shard)`
    /// with origin seq >= `from_seq`, in origin-seq order, with their
    /// original ids (`LogEntry.node_id`, `shard` and `seq` are the origin's).
    ///
    /// Only the segments whose origin summary holds such entries are opened,
    /// and in them only this origin's blocks (picked from the index) are
    /// read. Entries come out in the order they were stored, which is
    /// origin-seq order when each origin's entries were appended once and in
    /// order (see [`Shard::append_replicated`]); an entry whose origin seq is
    /// not above the previous one returned (a batch stored twice) is
    /// skipped, so the result is always strictly increasing. Empty when
    /// `from_seq` is past the origin's watermark or the shard holds nothing
    /// of it (any more: retention).
    pub async fn read_origin(&self, node: u32, shard: u32, from_seq: u64, limit: usize) -> Result<Vec<LogEntry>> {
        let limit = limit.min(limits::READ_ENTRIES_MAX);
        let mut out: Vec<LogEntry> = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let key = (node, shard);
        let targets: Vec<Target> = {
            let state = self.inner.state.borrow();
            let mut targets: Vec<Target> = state
                .sealed
                .iter()
                .filter(|sealed| sealed.origin_seqs.get(&key).is_some_and(|&(_, last)| last >= from_seq))
                .map(|sealed| Target::Sealed(sealed.first_seq))
                .collect();
            targets.push(Target::Active);
            targets
        };
        // The lowest origin seq still to return.
        let mut next_wanted = from_seq.max(1);
        let mut targets = targets.into_iter();
        let mut target = targets.next();
        while let Some(current) = target {
            let wanted = next_wanted;
            let remaining = limit - out.len();
            let picked = std::cell::Cell::new(false);
            let select = |index: &SegmentIndex, visible: usize| {
                let (blocks, truncated) = origin_blocks(index, visible, key, wanted, remaining);
                picked.set(truncated);
                blocks
            };
            let plan = self.plan(current, false, select).await?;
            // A plan cut short by the limit is continued in the same segment
            // (entries skipped as repeats may leave room); else the next one.
            target = if picked.get() { Some(current) } else { targets.next() };
            let Some(plan) = plan.filter(|plan| !plan.blocks.is_empty()) else { continue };
            // Decode only the entries at or above `wanted` (the first block
            // may start below it).
            let keep = |seq: u64, _: &EntryView<'_>| origin_seq_of(&plan.blocks, seq).is_some_and(|seq| seq >= wanted);
            let complete = self
                .read_plan(&plan, false, &keep, &|_| false, &mut |entries| {
                    for entry in entries {
                        if (entry.node_id, entry.shard) != key || entry.seq < next_wanted {
                            continue;
                        }
                        next_wanted = entry.seq.saturating_add(1);
                        out.push(entry);
                        if out.len() >= limit {
                            return false;
                        }
                    }
                    true
                })
                .await?;
            if !complete || out.len() >= limit {
                break;
            }
            // Progress: every picked block ends below `next_wanted` now, so
            // planning the same segment again picks none of them.
            debug_assert!(plan.blocks.iter().all(|meta| meta.origin_last_seq() < Some(next_wanted)));
        }
        Ok(out)
    }

    /// Entries matching `query`: the index picks candidate blocks (tags and
    /// time), which are then filtered exactly.
    pub async fn query(&self, query: &Query<'_>) -> Result<QueryResult> {
        let limit = query.limit.min(limits::READ_ENTRIES_MAX);
        let mut result = QueryResult::default();
        if limit == 0 || query.from_ts >= query.to_ts {
            return Ok(result);
        }
        let mut targets = self.targets(|_, _, min_ts, max_ts| min_ts < query.to_ts && max_ts >= query.from_ts);
        if query.backward {
            targets.reverse();
        }
        let blocks_read_before = self.inner.state.borrow().stats.blocks_read;
        let filter = query.filter();
        let keep = |_: u64, view: &EntryView<'_>| filter.keeps(view);
        let prefilter = PayloadPrefilter::of(&filter);
        let rules_out = |payload: &[u8]| prefilter.rules_out(payload);
        for target in targets {
            let Some(plan) = self
                .plan(target, !query.words.is_empty(), |index, visible| candidate_blocks(index, visible, query))
                .await?
            else {
                continue;
            };
            let entries = &mut result.entries;
            let complete = self
                .read_plan(&plan, query.backward, &keep, &rules_out, &mut |found| {
                    let room = limit - entries.len();
                    entries.extend(found.into_iter().take(room));
                    entries.len() < limit
                })
                .await?;
            if !complete || result.entries.len() >= limit {
                break;
            }
        }
        result.blocks_read = self.inner.state.borrow().stats.blocks_read - blocks_read_before;
        Ok(result)
    }
}

/// Verifies one block, decompresses it into `raw`, and decodes the entries
/// that `keep` accepts (judged on a zero-copy view first), with their seq in
/// this shard; none at all, without parsing, when `rules_out` the payload.
/// Every query path goes through here.
fn matching_entries(
    block_bytes: &[u8],
    raw: &mut Vec<u8>,
    node: u32,
    shard: u32,
    rules_out: &dyn Fn(&[u8]) -> bool,
    keep: &dyn Fn(u64, &EntryView<'_>) -> bool,
) -> Result<Vec<(u64, LogEntry)>, block::BlockError> {
    let header = block::verify_block(block_bytes)?;
    block::decompress_payload(&header, block_bytes, raw)?;
    let mut entries = Vec::new();
    if rules_out(raw) {
        return Ok(entries);
    }
    block::for_each_entry(&header, raw, |seq, entry_bytes| {
        let view = EntryView::parse(entry_bytes)?;
        if keep(seq, &view) {
            entries.push((seq, block::decode_entry(&header, seq, entry_bytes, node, shard)?));
        }
        Ok(())
    })?;
    Ok(entries)
}

/// The blocks of a segment that may hold matches of `query`, among the
/// first `visible` (the durable ones): the index prunes by tag sets, time
/// and the per-block word filters (a segment planned with its filters, see
/// `plan`); substrings are not indexed and are checked on the blocks left.
fn candidate_blocks(index: &SegmentIndex, visible: usize, query: &Query<'_>) -> Vec<BlockMeta> {
    let predicates =
        Predicates { tags: query.tags, words: query.words.filter_hashes(), from_ts: query.from_ts, to_ts: query.to_ts };
    index
        .candidates_for(&predicates)
        .into_iter()
        .filter(|&position| (position as usize) < visible)
        .map(|position| index.blocks()[position as usize])
        .collect()
}

/// The blocks, among the first `visible` of a segment, of origin `key` that
/// hold an origin seq >= `from_seq`, in storage order, stopping once they
/// hold `limit` such entries; and whether it stopped there (more blocks of
/// the origin may follow).
fn origin_blocks(
    index: &SegmentIndex,
    visible: usize,
    key: OriginKey,
    from_seq: u64,
    limit: usize,
) -> (Vec<BlockMeta>, bool) {
    if index.origins().get(&key).and_then(|summary| summary.seqs).is_none_or(|(_, last)| last < from_seq) {
        return (Vec::new(), false);
    }
    let mut picked = Vec::new();
    let mut entries = 0u64;
    for meta in &index.blocks()[..visible] {
        if entries >= limit as u64 {
            return (picked, true);
        }
        let (Some(origin), Some(last)) = (meta.origin, meta.origin_last_seq()) else { continue };
        if (origin.node, origin.shard) != key || last < from_seq {
            continue;
        }
        entries += last - origin.first_seq.max(from_seq) + 1;
        picked.push(*meta);
    }
    (picked, false)
}

/// The origin seq of the entry stored at `seq`, if it is in one of
/// `blocks` (sorted by seq) and that block is replicated.
fn origin_seq_of(blocks: &[BlockMeta], seq: u64) -> Option<u64> {
    let position = blocks.partition_point(|meta| meta.first_seq <= seq).checked_sub(1)?;
    let meta = &blocks[position];
    (seq < meta.next_seq()).then_some(())?;
    meta.origin.map(|origin| origin.first_seq + (seq - meta.first_seq))
}

/// Groups blocks that are adjacent on disk, so each group is one read.
fn coalesce(blocks: &[BlockMeta]) -> Vec<Vec<BlockMeta>> {
    let mut groups: Vec<Vec<BlockMeta>> = Vec::new();
    for meta in blocks {
        if let Some(group) = groups.last_mut() {
            let first = group[0];
            let last = group[group.len() - 1];
            let adjacent = last.offset + u64::from(last.len) == meta.offset;
            if adjacent && meta.offset + u64::from(meta.len) - first.offset <= READ_COALESCE_BYTES {
                group.push(*meta);
                continue;
            }
        }
        groups.push(vec![*meta]);
    }
    groups
}

/// An entry waiting in [`OrderedQuery`]'s heap, ordered by timestamp then
/// seq (reversed for backward queries).
struct Pending {
    key: (i64, u64),
    entry: LogEntry,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// A candidate block of an ordered query, with the segment it lives in.
struct Candidate {
    file: Rc<DmaFile>,
    path: Rc<PathBuf>,
    /// Which segment (which of the query's plans) it lives in.
    segment: usize,
    meta: BlockMeta,
}

/// One coalesced read of consecutive candidates (in visiting order) that
/// lie back to back in one file.
struct GroupRead {
    /// The first candidate it covers (an index into the candidate list).
    first: usize,
    /// One past the last candidate it covers.
    end: usize,
    /// The file offset of `bytes[0]`.
    start: u64,
    /// The bytes asked for (`bytes` may be shorter if the file is).
    span: u64,
    /// Whether `span` is counted in the shard's `query_read_bytes`.
    charged: bool,
    bytes: ReadResult,
}

/// A read in flight: resolves to the group, or the error that read gave.
type PendingRead = Pin<Box<dyn Future<Output = Result<GroupRead>>>>;

/// How long an ordered query pauses after issuing reads: any timer makes
/// the executor turn, and glommio submits queued I/O only then (once no
/// task is runnable); a short one keeps that turn from idling. As the
/// writer does with its chunks (`shard::writer`).
const READ_SUBMIT_PAUSE: std::time::Duration = std::time::Duration::from_micros(1);

/// Polls `read` once, so that its I/O is queued now: an async read does
/// nothing before its first poll, and a [`FuturesOrdered`] polls what it
/// holds only when it is awaited, after the block being decoded.
fn started(mut read: PendingRead) -> PendingRead {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match read.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => Box::pin(std::future::ready(output)),
        std::task::Poll::Pending => read,
    }
}

/// Which blocks, from `first` on in visiting order, one read covers: those
/// that follow one another in the same segment without a gap (upwards for
/// a forward query, downwards for a backward one), within
/// `bytes_max` (the first block alone may be larger). `blocks` are
/// (segment, offset, length). Returns one past the last one and the file
/// range `start..end` to read. Pure.
fn read_group(blocks: &[(usize, u64, u64)], first: usize, bytes_max: u64) -> (usize, u64, u64) {
    let (segment, offset, len) = blocks[first];
    let (mut start, mut end) = (offset, offset + len);
    let mut next = first + 1;
    while let Some(&(next_segment, offset, len)) = blocks.get(next) {
        if next_segment != segment {
            break;
        }
        let (_, previous_offset, previous_len) = blocks[next - 1];
        // Growing one way only: upwards while the previous block ends the
        // range, downwards while it starts it.
        let after = offset == previous_offset + previous_len && end == offset;
        let before = offset + len == previous_offset && start == previous_offset;
        let (new_start, new_end) = match (after, before) {
            (true, _) => (start, offset + len),
            (_, true) => (offset, end),
            _ => break,
        };
        if new_end - new_start > bytes_max {
            break;
        }
        (start, end) = (new_start, new_end);
        next += 1;
    }
    (next, start, end)
}

/// What an ordered query does about its next read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NextRead {
    /// Issue it, counted against the shard's budget.
    Charged,
    /// Issue a small one instead, uncounted: the query has nothing in
    /// flight and must progress.
    Small,
    /// Issue nothing now: the query has reads in flight, and its bound or
    /// the shard's budget is reached.
    Later,
}

/// The decision for a read of `span` bytes by a query with `in_flight`
/// bytes of reads in flight, when the shard's queries hold `shard_charged`
/// bytes of its budget. Pure.
fn next_read(in_flight: u64, shard_charged: u64, span: u64) -> NextRead {
    let room =
        in_flight + span <= QUERY_READ_BYTES_IN_FLIGHT_MAX && shard_charged + span <= QUERY_READ_BYTES_PER_CORE_MAX;
    match (room, in_flight) {
        (true, _) => NextRead::Charged,
        (false, 0) => NextRead::Small,
        (false, _) => NextRead::Later,
    }
}

/// A query whose results come out in timestamp order (ties by seq), chunk
/// by chunk, without holding the whole result: candidate blocks are visited
/// in order of their time range, and an entry is released only once no
/// unvisited block can hold an earlier one. Memory is the candidate block
/// list, the entries of blocks whose time ranges overlap, and the reads:
/// at most [`QUERY_READ_BYTES_IN_FLIGHT_MAX`] in flight beside the one being
/// decoded, all counted against the shard's
/// [`QUERY_READ_BYTES_PER_CORE_MAX`] except one read of at most
/// [`QUERY_FIRST_READ_BYTES`] (or one block) that a query may always make.
pub struct OrderedQuery {
    shard: Shard,
    filter: EntryFilter,
    /// What rules a whole block out before its entries are parsed.
    prefilter: PayloadPrefilter,
    backward: bool,
    remaining: usize,
    candidates: Vec<Candidate>,
    /// Each candidate's (segment, offset, length), for [`read_group`].
    spans: Vec<(usize, u64, u64)>,
    /// The next candidate to decode.
    next_candidate: usize,
    /// Reads issued, in visiting order, covering the candidates from the
    /// current group's end to `next_unread`.
    reads: FuturesOrdered<PendingRead>,
    /// The first candidate no read was issued for yet.
    next_unread: usize,
    /// Bytes of the reads in `reads`.
    bytes_in_flight: u64,
    /// The largest read to issue next: [`QUERY_FIRST_READ_BYTES`] at first,
    /// doubling with each read consumed up to [`READ_COALESCE_BYTES`].
    read_bytes_max: u64,
    /// Bytes of `reads` and `current` counted in the shard's
    /// `query_read_bytes`, given back as they are consumed and on drop.
    charged_bytes: u64,
    /// The read holding `next_candidate`, once it arrived.
    current: Option<GroupRead>,
    /// The decompression buffer, reused from block to block.
    raw: Vec<u8>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Pending>>,
    blocks_read: u64,
}

impl OrderedQuery {
    /// Blocks read so far.
    pub fn blocks_read(&self) -> u64 {
        self.blocks_read
    }

    /// The next up to `max` entries, in order; empty when the query is done.
    pub async fn next_chunk(&mut self, max: usize) -> Result<Vec<LogEntry>> {
        let mut out = Vec::new();
        while out.len() < max && self.remaining > 0 {
            // Visit blocks while one could hold an entry that sorts before
            // the best one waiting.
            while self.next_candidate < self.candidates.len() {
                let meta = &self.candidates[self.next_candidate].meta;
                let block_key = if self.backward { -(meta.max_ts as i128) } else { meta.min_ts as i128 };
                let must_visit = match self.heap.peek() {
                    None => true,
                    Some(std::cmp::Reverse(best)) => block_key <= i128::from(best.key.0),
                };
                if !must_visit {
                    break;
                }
                self.visit_next().await?;
                // A scan that matches little decodes block after block
                // without waiting for the disk: let the core's other work in.
                glommio::yield_if_needed().await;
            }
            match self.heap.pop() {
                Some(std::cmp::Reverse(pending)) => {
                    out.push(pending.entry);
                    self.remaining -= 1;
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Issues reads for the candidates after those already asked for, while
    /// this query's bytes in flight and the shard's budget allow; one small
    /// read is always issued when none is in flight. Returns how many.
    fn issue_reads(&mut self) -> usize {
        let mut issued = 0;
        while self.next_unread < self.candidates.len() {
            let first = self.next_unread;
            let (mut end, mut start, mut stop) = read_group(&self.spans, first, self.read_bytes_max);
            let mut span = stop - start;
            let charged = {
                let mut state = self.shard.inner.state.borrow_mut();
                match next_read(self.bytes_in_flight, state.query_read_bytes, span) {
                    NextRead::Charged => {
                        state.query_read_bytes += span;
                        true
                    }
                    NextRead::Small => {
                        (end, start, stop) = read_group(&self.spans, first, QUERY_FIRST_READ_BYTES);
                        span = stop - start;
                        false
                    }
                    NextRead::Later => break,
                }
            };
            if charged {
                self.charged_bytes += span;
            }
            let file = self.candidates[first].file.clone();
            let path = self.candidates[first].path.clone();
            self.reads.push_back(started(Box::pin(async move {
                let bytes = file
                    .read_at(start, span as usize)
                    .await
                    .map_err(|error| Error::glommio("read segment", &path, error))?;
                Ok(GroupRead { first, end, start, span, charged, bytes })
            })));
            self.bytes_in_flight += span;
            self.next_unread = end;
            issued += 1;
        }
        issued
    }

    /// Makes `current` the read holding candidate `index`: it already is, or
    /// it is the next one to arrive (more are issued before and after
    /// waiting for it, so the disk works while this core decodes).
    async fn load_group_holding(&mut self, index: usize) -> Result<()> {
        if !self.current.as_ref().is_some_and(|group| group.first <= index && index < group.end) {
            if let Some(done) = self.current.take() {
                self.give_back(&done);
            }
            self.issue_reads();
            let group = match self.reads.next().await {
                Some(group) => group?,
                None => unreachable!("a read was issued for every candidate before the next one to decode"),
            };
            debug_assert_eq!(group.first, index, "reads arrive in visiting order");
            self.bytes_in_flight -= group.span;
            self.read_bytes_max = (self.read_bytes_max * 2).min(READ_COALESCE_BYTES);
            self.current = Some(group);
            if self.issue_reads() > 0 {
                // Submit them before decoding this group, not after.
                glommio::timer::sleep(READ_SUBMIT_PAUSE).await;
            }
        }
        Ok(())
    }

    /// Gives a consumed read's bytes back to the shard's budget.
    fn give_back(&mut self, group: &GroupRead) {
        if group.charged {
            self.charged_bytes -= group.span;
            self.shard.inner.state.borrow_mut().query_read_bytes -= group.span;
        }
    }

    async fn visit_next(&mut self) -> Result<()> {
        let index = self.next_candidate;
        self.next_candidate += 1;
        let (meta, path) = (self.candidates[index].meta, self.candidates[index].path.clone());
        self.load_group_holding(index).await?;
        let Some(group) = &self.current else { unreachable!("loaded above") };
        let block_error = |source| Error::Block { path: path.as_ref().clone(), offset: meta.offset, source };
        let local = (meta.offset - group.start) as usize;
        let block_bytes = group.bytes.get(local..local + meta.len as usize).ok_or_else(|| {
            block_error(block::BlockError::Truncated {
                needed: meta.len as usize,
                available: group.bytes.len().saturating_sub(local),
            })
        })?;
        let (node, shard) = (self.shard.inner.config.node_id, self.shard.inner.config.shard_id);
        let (filter, prefilter) = (&self.filter, &self.prefilter);
        let found = matching_entries(
            block_bytes,
            &mut self.raw,
            node,
            shard,
            &|payload| prefilter.rules_out(payload),
            &|_, view| filter.keeps(view),
        )
        .map_err(block_error)?;
        self.blocks_read += 1;
        self.shard.inner.state.borrow_mut().stats.blocks_read += 1;
        let backward = self.backward;
        for (seq, entry) in found {
            let timestamp_ns = entry.timestamp_ns;
            let key = if backward { (-timestamp_ns.max(i64::MIN + 1), u64::MAX - seq) } else { (timestamp_ns, seq) };
            self.heap.push(std::cmp::Reverse(Pending { key, entry }));
        }
        Ok(())
    }
}

impl Drop for OrderedQuery {
    /// Gives back what the query still holds of the shard's read budget
    /// (its reads in flight are dropped with it).
    fn drop(&mut self) {
        self.shard.inner.state.borrow_mut().query_read_bytes -= self.charged_bytes;
    }
}

impl Shard {
    /// Starts a query whose results come out in timestamp order (newest
    /// first when `query.backward`), ties broken by seq. See
    /// [`OrderedQuery`].
    pub async fn query_ordered(&self, query: &Query<'_>) -> Result<OrderedQuery> {
        let mut candidates = Vec::new();
        if query.limit > 0 && query.from_ts < query.to_ts {
            let targets = self.targets(|_, _, min_ts, max_ts| min_ts < query.to_ts && max_ts >= query.from_ts);
            for (segment, target) in targets.into_iter().enumerate() {
                let Some(plan) = self
                    .plan(target, !query.words.is_empty(), |index, visible| candidate_blocks(index, visible, query))
                    .await?
                else {
                    continue;
                };
                let path = Rc::new(plan.path);
                candidates.extend(plan.blocks.into_iter().map(|meta| Candidate {
                    file: plan.file.clone(),
                    path: path.clone(),
                    segment,
                    meta,
                }));
            }
        }
        if query.backward {
            candidates.sort_by_key(|candidate| {
                (std::cmp::Reverse(candidate.meta.max_ts), std::cmp::Reverse(candidate.meta.first_seq))
            });
        } else {
            candidates.sort_by_key(|candidate| (candidate.meta.min_ts, candidate.meta.first_seq));
        }
        let spans = candidates
            .iter()
            .map(|candidate| (candidate.segment, candidate.meta.offset, u64::from(candidate.meta.len)))
            .collect();
        let filter = query.filter();
        Ok(OrderedQuery {
            shard: self.clone(),
            prefilter: PayloadPrefilter::of(&filter),
            filter,
            backward: query.backward,
            remaining: query.limit,
            candidates,
            spans,
            next_candidate: 0,
            reads: FuturesOrdered::new(),
            next_unread: 0,
            bytes_in_flight: 0,
            read_bytes_max: QUERY_FIRST_READ_BYTES,
            charged_bytes: 0,
            current: None,
            raw: Vec::new(),
            heap: std::collections::BinaryHeap::new(),
            blocks_read: 0,
        })
    }
}

/// A group of blocks' bytes: from a recent commit buffer, or read from disk.
enum GroupBytes {
    Recent((Rc<DmaBuffer>, Range<usize>)),
    Read(glommio::io::ReadResult),
}

impl GroupBytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            GroupBytes::Recent((buffer, range)) => &buffer.as_bytes()[range.clone()],
            GroupBytes::Read(read) => read,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ahead_within_the_query_bound_and_the_shard_budget_and_always_progress() {
        let block = 1 << 20;
        assert_eq!(next_read(0, 0, READ_COALESCE_BYTES), NextRead::Charged);
        assert_eq!(next_read(READ_COALESCE_BYTES, 0, READ_COALESCE_BYTES), NextRead::Charged);
        assert_eq!(next_read(QUERY_READ_BYTES_IN_FLIGHT_MAX, 0, block), NextRead::Later, "the query's bound");
        let full = QUERY_READ_BYTES_PER_CORE_MAX;
        assert_eq!(next_read(block, full - block, block), NextRead::Charged, "the budget's last bytes");
        assert_eq!(next_read(block, full - block + 1, block), NextRead::Later, "the shard's budget");
        assert_eq!(next_read(0, full, block), NextRead::Small, "nothing in flight: progress anyway");
        assert_eq!(next_read(0, 0, QUERY_READ_BYTES_IN_FLIGHT_MAX + 1), NextRead::Small);
    }

    #[test]
    fn reads_coalesce_back_to_back_blocks_of_one_segment_either_way() {
        let forward = [(0, 0, 10), (0, 10, 5), (0, 15, 5), (0, 40, 5), (1, 45, 5), (1, 50, 5)];
        let max = READ_COALESCE_BYTES;
        assert_eq!(read_group(&forward, 0, max), (3, 0, 20), "a gap ends a read");
        assert_eq!(read_group(&forward, 3, max), (4, 40, 45), "so does another segment");
        assert_eq!(read_group(&forward, 4, max), (6, 45, 55));
        let backward = [(0, 15, 5), (0, 10, 5), (0, 0, 10), (0, 20, 5)];
        assert_eq!(read_group(&backward, 0, max), (3, 0, 20), "downwards");
        assert_eq!(read_group(&backward, 3, max), (4, 20, 25));
        let zigzag = [(0, 10, 5), (0, 15, 5), (0, 5, 5)];
        assert_eq!(read_group(&zigzag, 0, max), (2, 10, 20), "one direction per read");
        let half = READ_COALESCE_BYTES / 2;
        let large = [(0, 0, half), (0, half, half), (0, 2 * half, 1)];
        assert_eq!(read_group(&large, 0, max), (2, 0, READ_COALESCE_BYTES), "bounded");
        assert_eq!(read_group(&large, 2, max), (3, 2 * half, 2 * half + 1));
        assert_eq!(read_group(&forward, 0, 15), (2, 0, 15), "by the bound given");
        assert_eq!(read_group(&forward, 0, 4), (1, 0, 10), "the first block even when larger");
    }

    #[test]
    fn loaded_indexes_are_capped_by_count_and_bytes_keeping_the_newest() {
        assert_eq!(indexes_to_evict(&[], 16, 100), 0);
        assert_eq!(indexes_to_evict(&[10, 10, 10], 16, 100), 0);
        assert_eq!(indexes_to_evict(&[10, 10, 10], 2, 100), 1, "count");
        assert_eq!(indexes_to_evict(&[60, 30, 30], 16, 100), 1, "bytes: the oldest goes first");
        assert_eq!(indexes_to_evict(&[60, 30, 30], 16, 59), 2);
        assert_eq!(indexes_to_evict(&[60, 30, 300], 16, 100), 2, "the newest stays even alone over the budget");
    }
}
