//! Cold compression: sealed segments rewritten with zstd in the background
//! (DESIGN.md section 12). [`plan_cold`] decides which segment is next
//! (pure); the driver below rewrites it and swaps it in.
//!
//! # What is rewritten, and when
//!
//! A sealed segment whose newest entry is older than `--cold-after` (the
//! age retention's `--retention-age` measures too, so the two agree on what
//! "old" means) is rewritten once, block by block: each block is
//! recompressed with zstd ([`crate::codec::zstd`]) unless that does not make
//! it smaller, and keeps its place in the block order, its seqs,
//! timestamps, origin and entry count. The index is the same index with the
//! blocks' new offsets and lengths ([`SegmentIndex::relocated`]): postings,
//! saturation and origins stay valid as they are. The new file holds the
//! blocks only (no preallocated space) under a header flagged cold, which
//! tells the next open that the segment is done. A follower's segment that
//! its leader has not acknowledged is left alone (retention's veto,
//! [`super::ShardConfig::retention_deletable_through`]): the pusher reads it
//! next.
//!
//! The rewrite runs on the shard's executor, in a task queue of its own
//! with [`limits::COLD_TASK_SHARES`] shares, and yields the queue after
//! every [`limits::COLD_STEP_BYTES`] of input it compresses: commits,
//! queries and pushes run first whenever they have work, and the rewrite
//! takes the CPU they leave.
//!
//! # The swap, and why a crash anywhere leaves one valid copy
//!
//! The steps, in order (each a [`faults::cold_step`] for the crash tests):
//!
//! ```text
//! step  does                                             on disk after it (segment, index)
//! 1     create NNN.seg.cold.tmp                          old, old  (+ *.tmp)
//! 2     write the blocks into it                         old, old  (+ *.tmp)
//! 3     write its header page (cold), fdatasync          old, old  (+ *.tmp)
//! 4     write NNN.idx.cold.tmp, fdatasync                old, old  (+ *.tmp)
//! 5     remove NNN.idx, fsync the directory              old, none (+ *.tmp)
//! 6     rename the new segment over NNN.seg, fsync dir   new, none (+ idx tmp)
//! 7     rename the new index to NNN.idx, fsync dir       new, new
//! ```
//!
//! A crash before step 5 leaves the old pair and `*.tmp` files, which
//! recovery deletes. A crash after step 5 and before step 7 leaves a sealed
//! segment without an index, old or new, and recovery rebuilds the index of
//! a sealed segment without one by scanning it (as it does for any missing
//! index). The index is never beside a segment it does not describe: it
//! goes before the segment is replaced, and the new one comes after. Each
//! rename or removal is made durable (directory fsync) before the next
//! step, so they cannot be reordered by a crash. The cost of a crash in the
//! window is one scan of one segment at the next open.
//!
//! # Readers during the swap
//!
//! The shard switches its own copy before step 5: the sealed segment's
//! file handle and index become the new ones together, its generation is
//! bumped, and its index is pinned in memory until step 7 (no reader loads
//! an index file while it is missing). A reader that already holds the old
//! file and the old index goes on reading them (the old file stays readable
//! through its descriptor after the rename), and one that was loading either
//! of them when the generation changed loads both again. A follower's
//! pusher, a snapshot or a catch-up resume by seq, never by offset, so a
//! swap between two of their reads changes nothing for them.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::{DmaFile, OpenOptions};

use super::retention::{self, SegmentSpan};
use super::segment::{self, SegmentHeader, DATA_OFFSET};
use super::{faults, page_ceil, page_floor, recovery, Error, Inner, Result, Shard, PAGE_BYTES};
use crate::codec::block;
use crate::codec::zstd::{Recompressed, Recompressor};
use crate::index::{BlockMeta, SegmentIndex};
use crate::limits;

/// What `--cold-codec` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColdCodec {
    /// Sealed segments stay as written (LZ4): no rewrite.
    #[default]
    Lz4,
    /// Sealed segments are rewritten with zstd once they are old enough.
    Zstd,
}

/// Which sealed segments the cold rewrite recompresses, and when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ColdPolicy {
    /// The codec of cold segments; [`ColdCodec::Lz4`] (the shard's
    /// default, `wormdb serve` defaults to zstd) turns the rewrite off.
    pub codec: ColdCodec,
    /// A sealed segment is rewritten once its newest entry is older than this.
    pub after: Duration,
}

impl ColdPolicy {
    /// zstd after `after`.
    pub fn zstd(after: Duration) -> Self {
        ColdPolicy { codec: ColdCodec::Zstd, after }
    }

    /// Whether the policy rewrites anything at all.
    pub fn is_active(&self) -> bool {
        self.codec == ColdCodec::Zstd
    }
}

/// What the shard knows of a sealed segment's cold state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColdState {
    /// Not known yet: its header page says (recovery does not read the
    /// headers of sealed segments).
    Unknown,
    /// Written by the shard's writer (LZ4), not rewritten.
    Warm,
    /// Rewritten by the cold rewrite.
    Cold,
    /// The rewrite failed (logged) at this moment; tried again
    /// [`limits::COLD_RETRY_AFTER`] later (say, once a full disk has room
    /// again), or when the shard is opened again.
    Failed(Instant),
}

/// A sealed segment as the cold rewrite sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColdSpan {
    /// Seqs, newest timestamp and size, as retention sees them.
    pub span: SegmentSpan,
    /// What is known of its cold state.
    pub state: ColdState,
}

/// What the cold rewrite does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColdStep {
    /// Read this segment's header page, to learn whether it is cold.
    ReadHeader(u64),
    /// Rewrite this segment.
    Rewrite(u64),
}

/// The next step of the cold rewrite over `sealed` (oldest first) at
/// `now_ns`: the oldest segment that may be rewritten, is old enough (its
/// newest entry before `now_ns - policy.after`) and that `may_rewrite`
/// allows (the follower's veto); its header first if its state is not
/// known. `None` when there is nothing to do. Pure.
pub fn plan_cold(
    policy: &ColdPolicy,
    sealed: &[ColdSpan],
    now_ns: i64,
    mut may_rewrite: impl FnMut(&SegmentSpan) -> bool,
) -> Option<ColdStep> {
    if !policy.is_active() {
        return None;
    }
    let after_ns = i64::try_from(policy.after.as_nanos()).unwrap_or(i64::MAX);
    let before_ns = now_ns.saturating_sub(after_ns);
    sealed.iter().find_map(|segment| {
        let wanted = matches!(segment.state, ColdState::Unknown | ColdState::Warm)
            && segment.span.max_ts < before_ns
            && may_rewrite(&segment.span);
        match (wanted, segment.state) {
            (false, _) => None,
            (true, ColdState::Unknown) => Some(ColdStep::ReadHeader(segment.span.first_seq)),
            (true, _) => Some(ColdStep::Rewrite(segment.span.first_seq)),
        }
    })
}

/// One segment the cold rewrite replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColdRewrite {
    /// The segment's first seq.
    pub first_seq: u64,
    /// Blocks in it.
    pub blocks: usize,
    /// Of them, recompressed with zstd (the others were kept as they were).
    pub recompressed_blocks: usize,
    /// Bytes of its blocks (headers included) before and after.
    pub block_bytes_before: u64,
    /// See `block_bytes_before`.
    pub block_bytes_after: u64,
    /// Size of the segment file before and after.
    pub file_bytes_before: u64,
    /// See `file_bytes_before`.
    pub file_bytes_after: u64,
    /// Uncompressed payload bytes of its blocks.
    pub raw_bytes: u64,
    /// Time spent decompressing and compressing (on the executor, with no
    /// I/O wait): what the rewrite cost in CPU.
    pub busy: Duration,
}

/// What one rewrite came to.
enum Outcome {
    Done(ColdRewrite),
    /// Retention deleted the segment meanwhile (or it changed): nothing done.
    Gone,
}

impl Shard {
    /// Rewrites, one after the other, every sealed segment that
    /// [`plan_cold`] picks under `policy` at `now_ns` (with the shard's
    /// veto, [`super::ShardConfig::retention_deletable_through`]), and
    /// returns what it rewrote. One pass runs at a time. A segment whose
    /// rewrite fails is left as it was and not tried again until the shard
    /// is opened again; the error of the first such failure is returned
    /// after the pass.
    pub async fn compress_cold(&self, policy: ColdPolicy, now_ns: i64) -> Result<Vec<ColdRewrite>> {
        let _pass = self.inner.cold_lock.acquire_permit(1).await.map_err(|_| Error::Closed)?;
        let mut done = Vec::new();
        let mut first_error = None;
        while let Some(step) = self.next_cold_step(&policy, now_ns) {
            if self.inner.state.borrow().closing {
                break;
            }
            match step {
                ColdStep::ReadHeader(first_seq) => {
                    let state = match self.read_cold_state(first_seq).await {
                        Ok(state) => state,
                        Err(error) => {
                            tracing::error!(shard = self.inner.config.shard_id, first_seq, %error, "cannot read a sealed segment's header");
                            first_error.get_or_insert(error);
                            ColdState::Failed(Instant::now())
                        }
                    };
                    self.set_cold_state(first_seq, state);
                }
                ColdStep::Rewrite(first_seq) => match rewrite(&self.inner, first_seq).await {
                    Ok(Outcome::Done(rewrite)) => {
                        tracing::info!(
                            shard = self.inner.config.shard_id,
                            first_seq,
                            before = rewrite.block_bytes_before,
                            after = rewrite.block_bytes_after,
                            "recompressed a cold segment with zstd"
                        );
                        done.push(rewrite);
                    }
                    Ok(Outcome::Gone) => {}
                    Err(Error::Closed) => break,
                    Err(error) => {
                        tracing::error!(shard = self.inner.config.shard_id, first_seq, %error, "cold rewrite failed; the segment stays as it was");
                        self.set_cold_state(first_seq, ColdState::Failed(Instant::now()));
                        self.inner.state.borrow_mut().stats.cold_failures += 1;
                        first_error.get_or_insert(error);
                    }
                },
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(done),
        }
    }

    /// [`Shard::compress_cold`] with the shard's own policy
    /// ([`super::ShardConfig::cold`]). The shard's background task runs it
    /// after each roll and every [`limits::COLD_CHECK_INTERVAL`].
    pub async fn apply_cold(&self, now_ns: i64) -> Result<Vec<ColdRewrite>> {
        self.compress_cold(self.inner.config.cold, now_ns).await
    }

    fn next_cold_step(&self, policy: &ColdPolicy, now_ns: i64) -> Option<ColdStep> {
        let state = self.inner.state.borrow();
        let spans: Vec<ColdSpan> = state
            .sealed
            .iter()
            .map(|sealed| {
                let cold = match sealed.cold {
                    ColdState::Failed(at) if at.elapsed() >= limits::COLD_RETRY_AFTER => ColdState::Unknown,
                    cold => cold,
                };
                ColdSpan { span: retention::span_of(sealed), state: cold }
            })
            .collect();
        let through = self.inner.config.retention_deletable_through.as_ref();
        plan_cold(policy, &spans, now_ns, |span| retention::deletable(through, span))
    }

    fn set_cold_state(&self, first_seq: u64, cold: ColdState) {
        let mut state = self.inner.state.borrow_mut();
        if let Some(sealed) = state.sealed.iter_mut().find(|sealed| sealed.first_seq == first_seq) {
            sealed.cold = cold;
        }
    }

    async fn read_cold_state(&self, first_seq: u64) -> Result<ColdState> {
        let Some(path) = self.sealed_path(first_seq) else { return Ok(ColdState::Failed(Instant::now())) };
        let header = read_segment_header(&path).await?;
        Ok(if header.cold { ColdState::Cold } else { ColdState::Warm })
    }

    fn sealed_path(&self, first_seq: u64) -> Option<PathBuf> {
        let state = self.inner.state.borrow();
        state.sealed.iter().find(|sealed| sealed.first_seq == first_seq).map(|sealed| sealed.path.clone())
    }
}

async fn read_segment_header(path: &Path) -> Result<SegmentHeader> {
    let file = DmaFile::open(path).await.map_err(|error| Error::glommio("open segment", path, error))?;
    let page = file.read_at(0, PAGE_BYTES).await.map_err(|error| Error::glommio("read segment header", path, error));
    let _ = file.close().await;
    SegmentHeader::decode(&page?)
        .map_err(|error| Error::Corrupt { path: path.to_path_buf(), reason: format!("segment header: {error}") })
}

/// Starts the shard's background task: a pass of [`Shard::apply_cold`]
/// after each roll and every [`limits::COLD_CHECK_INTERVAL`], in a task
/// queue of low shares. Nothing when the policy is off.
pub(super) fn start(inner: &Rc<Inner>) {
    if !inner.config.cold.is_active() {
        return;
    }
    let queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(limits::COLD_TASK_SHARES),
        glommio::Latency::NotImportant,
        "cold-rewrite",
    );
    let shard = Shard { inner: inner.clone() };
    let task = glommio::spawn_local_into(
        async move {
            loop {
                if shard.inner.state.borrow().closing {
                    return;
                }
                let wake = shard.inner.cold_wake.wait();
                // Errors were logged, and the segment is not tried again.
                let _ = shard.apply_cold(super::now_unix_ns()).await;
                if shard.inner.state.borrow().closing {
                    return;
                }
                futures_lite::future::or(wake, glommio::timer::sleep(limits::COLD_CHECK_INTERVAL)).await;
            }
        },
        queue,
    );
    match task {
        Ok(task) => *inner.cold_task.borrow_mut() = Some(task.detach()),
        Err(error) => tracing::error!(shard = inner.config.shard_id, %error, "cannot start the cold rewrite"),
    }
}

/// A step of the swap: asks the fault layer first (see the module doc).
fn step(inner: &Inner, path: &Path) -> Result<()> {
    faults::cold_step(inner.config.faults.as_ref(), path).map_err(|error| Error::io("cold rewrite step", path, error))
}

/// Whether the process is to be taken as dead (tests: the power went out
/// at a step): then nothing is cleaned up.
fn power_is_cut(inner: &Inner) -> bool {
    inner.config.faults.as_ref().is_some_and(|faults| faults.power_is_cut())
}

/// Rewrites the sealed segment `first_seq` (see the module doc).
async fn rewrite(inner: &Rc<Inner>, first_seq: u64) -> Result<Outcome> {
    let shard = Shard { inner: inner.clone() };
    let Some((old_file, path, old_index, generation)) = shard.sealed_parts_with_generation(first_seq, true).await?
    else {
        return Ok(Outcome::Gone);
    };
    let (index_path, raw_bytes, file_bytes_before) = {
        let state = inner.state.borrow();
        let Some(sealed) = state.sealed.iter().find(|sealed| sealed.first_seq == first_seq) else {
            return Ok(Outcome::Gone);
        };
        (sealed.index_path.clone(), sealed.summary.raw_bytes, sealed.file_bytes)
    };
    let dir = &inner.config.dir;
    let new_path = dir.join(segment::cold_segment_file_name(first_seq));
    let new_index_path = dir.join(segment::cold_index_file_name(first_seq));
    let result = async {
        let old_header = read_segment_header(&path).await?;
        if old_header.first_seq != first_seq {
            return Err(Error::Corrupt {
                path: path.clone(),
                reason: format!("header says first seq {}, the name {first_seq}", old_header.first_seq),
            });
        }
        step(inner, &new_path)?;
        let new_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&new_path)
            .await
            .map_err(|error| Error::glommio("create segment", &new_path, error))?;
        let new_file = Rc::new(new_file);
        let written = write_blocks(inner, &old_file, &path, &old_index, &new_file, &new_path).await?;
        step(inner, &new_path)?;
        let file_bytes_after = page_ceil(written.end);
        let header = SegmentHeader { capacity_bytes: file_bytes_after, cold: true, ..old_header };
        let mut page = new_file.alloc_dma_buffer(PAGE_BYTES);
        page.as_bytes_mut().copy_from_slice(&header.encode());
        write_all(&new_file, &new_path, page, 0, "write segment header").await?;
        new_file.fdatasync().await.map_err(|error| Error::glommio("fdatasync segment", &new_path, error))?;

        step(inner, &new_index_path)?;
        let new_index = old_index.relocated(&written.locations);
        let index_bytes = new_index.encode(raw_bytes);
        let summary = crate::index::decode_summary(&index_bytes)
            .map_err(|source| Error::Index { path: new_index_path.clone(), source: source.into() })?;
        recovery::write_synced_file(&new_index_path, &index_bytes).await?;

        // Retention deletes nothing while the files change names.
        let _retention = inner.retention_lock.acquire_permit(1).await.map_err(|_| Error::Closed)?;
        let old_file_handle = {
            let mut state = inner.state.borrow_mut();
            let state = &mut *state;
            let Some(sealed) = state.sealed.iter_mut().find(|sealed| sealed.first_seq == first_seq) else {
                return Ok(None);
            };
            if sealed.generation != generation {
                return Ok(None);
            }
            let old = sealed.file.borrow_mut().replace(new_file.clone());
            *sealed.index.borrow_mut() = Some(Rc::new(new_index));
            sealed.summary = summary;
            sealed.file_bytes = file_bytes_after;
            sealed.generation += 1;
            sealed.pinned = true;
            sealed.cold = ColdState::Cold;
            let index_bytes = sealed.index.borrow().as_ref().map_or(0, |index| index.memory_bytes());
            state.loaded_indexes.retain(|&(first, _)| first != first_seq);
            state.loaded_indexes.push_back((first_seq, index_bytes));
            // Commit buffers of the segment when it was active hold the old bytes.
            state.recent_writes.retain(|write| write.path != path);
            state.stats.cold_segments += 1;
            state.stats.cold_block_bytes_before += written.block_bytes_before;
            state.stats.cold_block_bytes_after += written.block_bytes_after;
            state.stats.cold_raw_bytes += raw_bytes;
            state.stats.cold_busy_us += written.busy.as_micros() as u64;
            old
        };
        // From here on the shard reads the new file; the names follow.
        step(inner, &index_path)?;
        std::fs::remove_file(&index_path).map_err(|error| Error::io("remove index", &index_path, error))?;
        recovery::sync_dir(dir).await?;
        step(inner, &path)?;
        std::fs::rename(&new_path, &path).map_err(|error| Error::io("rename segment", &path, error))?;
        recovery::sync_dir(dir).await?;
        step(inner, &index_path)?;
        std::fs::rename(&new_index_path, &index_path).map_err(|error| Error::io("rename index", &index_path, error))?;
        recovery::sync_dir(dir).await?;
        {
            let mut state = inner.state.borrow_mut();
            if let Some(sealed) = state.sealed.iter_mut().find(|sealed| sealed.first_seq == first_seq) {
                sealed.pinned = false;
            }
            super::reader::evict_indexes(&mut state);
        }
        drop(old_file);
        if let Some(Ok(file)) = old_file_handle.map(Rc::try_unwrap) {
            let _ = file.close().await;
        }
        Ok(Some(ColdRewrite {
            first_seq,
            blocks: written.locations.len(),
            recompressed_blocks: written.recompressed_blocks,
            block_bytes_before: written.block_bytes_before,
            block_bytes_after: written.block_bytes_after,
            file_bytes_before,
            file_bytes_after,
            raw_bytes,
            busy: written.busy,
        }))
    }
    .await;
    match result {
        Ok(Some(rewrite)) => Ok(Outcome::Done(rewrite)),
        Ok(None) => {
            remove_leftovers(&new_path, &new_index_path);
            Ok(Outcome::Gone)
        }
        Err(error) => {
            if !power_is_cut(inner) {
                remove_leftovers(&new_path, &new_index_path);
            }
            Err(error)
        }
    }
}

/// Removes the new files of a rewrite that did not happen (recovery would
/// at the next open: they are `*.tmp`).
fn remove_leftovers(new_path: &Path, new_index_path: &Path) {
    for path in [new_path, new_index_path] {
        if let Err(error) = std::fs::remove_file(path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), %error, "cannot remove a leftover of the cold rewrite");
            }
        }
    }
}

/// What [`write_blocks`] wrote.
struct Written {
    /// Where each block went, in order.
    locations: Vec<(u64, u32)>,
    /// Offset just past the last block.
    end: u64,
    recompressed_blocks: usize,
    block_bytes_before: u64,
    block_bytes_after: u64,
    busy: Duration,
}

/// Reads the blocks of `old_index` from `old_file`, recompresses each, and
/// writes them back to back into `new_file` from [`DATA_OFFSET`]. Checks
/// that each block is the one its index entry describes. Stops with
/// [`Error::Closed`] when the shard closes.
async fn write_blocks(
    inner: &Inner,
    old_file: &DmaFile,
    old_path: &Path,
    old_index: &SegmentIndex,
    new_file: &DmaFile,
    new_path: &Path,
) -> Result<Written> {
    let mut recompressor = Recompressor::new(limits::COLD_ZSTD_LEVEL);
    let mut zstd_block = Vec::new();
    let mut written = Written {
        locations: Vec::with_capacity(old_index.blocks().len()),
        end: DATA_OFFSET,
        recompressed_blocks: 0,
        block_bytes_before: 0,
        block_bytes_after: 0,
        busy: Duration::ZERO,
    };
    // Bytes from `pending_offset` (a page boundary) not written yet.
    let mut pending: Vec<u8> = Vec::with_capacity(limits::COLD_WRITE_BYTES + limits::BLOCK_STORED_BYTES_MAX);
    let mut pending_offset = DATA_OFFSET;
    let mut first_write = true;
    for group in read_groups(old_index.blocks()) {
        let start = group[0].offset;
        let end = group[group.len() - 1].end_offset();
        let bytes = old_file
            .read_at(start, (end - start) as usize)
            .await
            .map_err(|error| Error::glommio("read segment", old_path, error))?;
        for meta in group {
            if inner.state.borrow().closing {
                return Err(Error::Closed);
            }
            let local = (meta.offset - start) as usize;
            let block_error = |source| Error::Block { path: old_path.to_path_buf(), offset: meta.offset, source };
            let block_bytes = bytes.get(local..local + meta.len as usize).ok_or_else(|| {
                block_error(block::BlockError::Truncated { needed: meta.len as usize, available: bytes.len() - local })
            })?;
            let header = block::verify_block(block_bytes).map_err(block_error)?;
            check_matches(&header, meta).map_err(|reason| Error::Corrupt { path: old_path.to_path_buf(), reason })?;
            let started = Instant::now();
            let mut work = recompressor.start(&header, block_bytes).map_err(block_error)?;
            written.busy += started.elapsed();
            while work {
                let started = Instant::now();
                work = !recompressor.step().map_err(block_error)?;
                written.busy += started.elapsed();
                if work {
                    // Let every other task of the shard run first.
                    glommio::executor().yield_task_queue_now().await;
                }
            }
            let started = Instant::now();
            let new_block: &[u8] = match recompressor.finish(&mut zstd_block) {
                Recompressed::Zstd(used) => {
                    written.recompressed_blocks += 1;
                    &zstd_block[..used]
                }
                Recompressed::Keep => block_bytes,
            };
            written.busy += started.elapsed();
            written.locations.push((written.end, new_block.len() as u32));
            written.end += new_block.len() as u64;
            written.block_bytes_before += u64::from(meta.len);
            written.block_bytes_after += new_block.len() as u64;
            pending.extend_from_slice(new_block);
            if pending.len() >= limits::COLD_WRITE_BYTES {
                if first_write {
                    step(inner, new_path)?;
                    first_write = false;
                }
                let whole = page_floor(pending.len() as u64) as usize;
                write_bytes(new_file, new_path, &pending[..whole], pending_offset).await?;
                pending.drain(..whole);
                pending_offset += whole as u64;
            }
            glommio::executor().yield_task_queue_now().await;
        }
    }
    if first_write {
        step(inner, new_path)?;
    }
    if !pending.is_empty() {
        write_bytes(new_file, new_path, &pending, pending_offset).await?;
    }
    Ok(written)
}

/// Whether `header` (read from the segment) is the block `meta` (from its
/// index) describes; why not if not.
fn check_matches(header: &block::BlockHeader, meta: &BlockMeta) -> std::result::Result<(), String> {
    let read = (header.first_seq, header.entry_count, header.min_ts, header.max_ts, header.origin);
    let indexed = (meta.first_seq, meta.entry_count, meta.min_ts, meta.max_ts, meta.origin);
    if read != indexed || header.block_bytes() != meta.len as usize {
        return Err(format!("block at {} is not the block its index describes", meta.offset));
    }
    Ok(())
}

/// The blocks in runs that are adjacent on disk, each at most
/// [`limits::READ_COALESCE_BYTES`] (or one block), so each run is one read.
fn read_groups(blocks: &[BlockMeta]) -> Vec<&[BlockMeta]> {
    let mut groups = Vec::new();
    let mut start = 0;
    for index in 1..=blocks.len() {
        let cut = index == blocks.len() || {
            let (first, previous, next) = (&blocks[start], &blocks[index - 1], &blocks[index]);
            previous.end_offset() != next.offset || next.end_offset() - first.offset > limits::READ_COALESCE_BYTES
        };
        if cut {
            groups.push(&blocks[start..index]);
            start = index;
        }
    }
    groups
}

/// Writes `bytes` at `offset` (a page boundary), padded with zeros to whole pages.
async fn write_bytes(file: &DmaFile, path: &Path, bytes: &[u8], offset: u64) -> Result<()> {
    debug_assert_eq!(offset % PAGE_BYTES as u64, 0);
    let length = page_ceil(bytes.len() as u64) as usize;
    let mut buffer = file.alloc_dma_buffer(length);
    buffer.as_bytes_mut()[..bytes.len()].copy_from_slice(bytes);
    buffer.as_bytes_mut()[bytes.len()..].fill(0);
    write_all(file, path, buffer, offset, "write segment").await
}

async fn write_all(
    file: &DmaFile,
    path: &Path,
    buffer: glommio::io::DmaBuffer,
    offset: u64,
    op: &'static str,
) -> Result<()> {
    let length = buffer.len();
    let written = file.write_at(buffer, offset).await.map_err(|error| Error::glommio(op, path, error))?;
    if written != length {
        return Err(Error::io(op, path, std::io::Error::other("short write")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(max_ts: &[i64], states: &[ColdState]) -> Vec<ColdSpan> {
        max_ts
            .iter()
            .zip(states)
            .enumerate()
            .map(|(index, (&max_ts, &state))| ColdSpan {
                span: SegmentSpan {
                    first_seq: 1 + 10 * index as u64,
                    last_seq: 10 + 10 * index as u64,
                    max_ts,
                    file_bytes: 100,
                },
                state,
            })
            .collect()
    }

    #[test]
    fn the_oldest_warm_segment_past_the_age_goes_first_and_headers_are_read_before() {
        use ColdState::*;
        let policy = ColdPolicy::zstd(Duration::from_nanos(100));
        let sealed = spans(&[10, 500, 20, 30, 40], &[Cold, Warm, Failed(Instant::now()), Unknown, Warm]);
        // At 150, older than 50: the 500 one is too young, the cold and
        // failed ones are done; the unknown one needs its header first.
        assert_eq!(plan_cold(&policy, &sealed, 150, |_| true), Some(ColdStep::ReadHeader(31)));
        let mut known = sealed.clone();
        known[3].state = Cold;
        assert_eq!(plan_cold(&policy, &known, 150, |_| true), Some(ColdStep::Rewrite(41)));
        assert_eq!(plan_cold(&policy, &known, 1_000, |_| true), Some(ColdStep::Rewrite(11)));
        // Exactly at the age is not older than it.
        assert_eq!(plan_cold(&policy, &known, 140, |_| true), None);
        assert_eq!(plan_cold(&policy, &[], 1_000, |_| true), None);
    }

    #[test]
    fn lz4_rewrites_nothing_and_the_veto_holds_back_what_the_leader_lacks() {
        use ColdState::*;
        let sealed = spans(&[1, 2, 3], &[Warm, Warm, Warm]);
        assert_eq!(plan_cold(&ColdPolicy::default(), &sealed, i64::MAX, |_| true), None);
        let policy = ColdPolicy::zstd(Duration::ZERO);
        let through = retention::SharedSeq::default();
        let veto = |span: &SegmentSpan| retention::deletable(Some(&through), span);
        assert_eq!(plan_cold(&policy, &sealed, 10, veto), None, "nothing acknowledged yet");
        through.set(Some(19));
        let veto = |span: &SegmentSpan| retention::deletable(Some(&through), span);
        assert_eq!(plan_cold(&policy, &sealed, 10, veto), Some(ColdStep::Rewrite(1)));
        let mut first_done = sealed.clone();
        first_done[0].state = Cold;
        let veto = |span: &SegmentSpan| retention::deletable(Some(&through), span);
        assert_eq!(plan_cold(&policy, &first_done, 10, veto), None, "seqs 11..=20 are not all acknowledged");
        // An age past i64 means never.
        assert_eq!(plan_cold(&ColdPolicy::zstd(Duration::MAX), &sealed, i64::MAX, |_| true), None);
    }

    #[test]
    fn read_groups_cut_at_gaps_and_at_the_read_size() {
        let meta = |offset: u64, len: u32| BlockMeta {
            offset,
            len,
            first_seq: 1,
            entry_count: 1,
            min_ts: 0,
            max_ts: 0,
            origin: None,
        };
        let big = limits::READ_COALESCE_BYTES as u32 / 2;
        let blocks = [
            meta(4096, 100),
            meta(4196, 100),
            meta(5000, big),
            meta(5000 + u64::from(big), big),
            meta(5000 + 2 * u64::from(big), 10),
        ];
        let groups: Vec<usize> = read_groups(&blocks).iter().map(|group| group.len()).collect();
        assert_eq!(groups, [2, 2, 1]);
        assert!(read_groups(&[]).is_empty());
    }
}
