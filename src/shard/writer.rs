//! The group-commit pipeline: the writer task turns each pending batch into
//! DMA writes (one per chunk of blocks, see [`WRITE_CHUNK_RAW_BYTES`]); the
//! syncer task makes them durable and acknowledges them.

use std::rc::Rc;

use super::recovery;
use super::{
    page_ceil, page_floor, Durability, Error, Inner, Pending, Result, SeqRange, Unsynced, UNSYNCED_WRITES_MAX,
};
use crate::codec::block::{self, BlockSpec};
use crate::index::{BlockMeta, SegmentIndex};

/// Fails every append of `pending` with `error`.
fn fail_pending(pending: &mut Pending, error: &Error) {
    for append in pending.appends.drain(..) {
        append.done.send(Err(error.clone()));
    }
    pending.clear();
}

/// Fails the shard with `error` and fails every append not yet
/// acknowledged: the pending batch and the written batches waiting for
/// their fdatasync (even one whose fdatasync is in flight: the syncer
/// acknowledges nothing once the shard failed). The first failure is the
/// shard's for good and the only one logged at error level; returns it (an
/// [`Error::Failed`]) for the caller's own appends. The writer and the
/// syncer stop at their next step: nothing is written, retried or
/// acknowledged afterwards.
fn fail_shard(inner: &Inner, error: Error) -> Error {
    let failed = {
        let mut state = inner.state.borrow_mut();
        let failed = match &state.failure {
            Some(failure) => {
                tracing::debug!(shard = inner.config.shard_id, %error, "after the shard failed");
                failure.clone()
            }
            None => {
                let failure = error.into_failure(inner.config.shard_id, &state.active.path);
                tracing::error!(
                    shard = inner.config.shard_id,
                    error = %failure,
                    "shard I/O failed; refusing appends until reopened"
                );
                state.failure = Some(failure.clone());
                failure
            }
        };
        let state = &mut *state;
        fail_pending(&mut state.pending, &failed);
        for batch in state.unsynced.drain(..) {
            for (_, done) in batch.appends {
                done.send(Err(failed.clone()));
            }
        }
        failed
    };
    inner.durable_wake.notify();
    inner.syncer_wake.notify();
    inner.writer_wake.notify();
    failed
}

/// Largest number of bytes the blocks of `pending` can take once encoded.
fn encoded_bound(pending: &Pending) -> u64 {
    pending.blocks.iter().map(|block| block_encoded_bound(block) as u64).sum()
}

/// Largest number of bytes one pending block can take once encoded: a
/// stored payload is written as is behind its header.
fn block_encoded_bound(block: &super::PendingBlock) -> usize {
    match block.stored {
        Some(_) => block::HEADER_BYTES + (block.raw_end - block.raw_start),
        None => block::encoded_bytes_max(block.raw_end - block.raw_start),
    }
}

pub(super) async fn run_writer(inner: Rc<Inner>) {
    loop {
        // Wait for work, and for room in the sync pipeline.
        let mut batch = loop {
            let wake = inner.writer_wake.wait();
            {
                let mut state = inner.state.borrow_mut();
                if state.failure.is_some() {
                    return;
                }
                let has_work = !state.pending.is_empty();
                if has_work && state.unsynced.len() < UNSYNCED_WRITES_MAX {
                    let state = &mut *state;
                    std::mem::swap(&mut state.pending, &mut state.spare);
                    break std::mem::take(&mut state.spare);
                }
                if !has_work && state.closing {
                    state.writer_finished = true;
                    drop(state);
                    inner.syncer_wake.notify();
                    return;
                }
            }
            wake.await;
        };
        let result = commit(&inner, &mut batch).await;
        let mut state = inner.state.borrow_mut();
        match result {
            Ok(()) => {}
            Err(error @ Error::DiskFull { .. }) => {
                // Only a roll reports a full disk (a write's error fails the
                // shard inside `commit`): nothing was written, the shard
                // stays healthy and a later append retries the roll once
                // space is free.
                tracing::warn!(shard = inner.config.shard_id, %error, "append failed: disk full");
                fail_pending(&mut batch, &error);
            }
            Err(error) => {
                drop(state);
                let failed = fail_shard(&inner, error);
                fail_pending(&mut batch, &failed);
                state = inner.state.borrow_mut();
            }
        }
        batch.clear();
        state.spare = batch;
    }
}

/// A commit's blocks are encoded and written in chunks of whole blocks:
/// the first of at least this many raw bytes, each next one of at least
/// twice the previous. Each chunk's write is started before the next chunk
/// is encoded, so a 1 MiB commit (four 256 KiB blocks) starts writing after
/// encoding one block instead of four, and a 4 MiB commit goes out in five
/// writes, each encoded while the previous ones are in flight (encoding
/// runs several times faster than the disk writes). Writes of one commit
/// cover disjoint pages and are all awaited before the commit is handed to
/// the syncer, so a crash tears a commit no worse than one large write.
const WRITE_CHUNK_RAW_BYTES: usize = crate::limits::BLOCK_RAW_BYTES_TARGET;

/// How long the writer sleeps after starting a chunk's write: any timer
/// makes the executor turn (and submit the write) before the writer runs
/// again; a short one keeps that turn from idling.
const CHUNK_SUBMIT_PAUSE: std::time::Duration = std::time::Duration::from_micros(1);

/// Writes one batch (rolling to a new segment first if it does not fit) and
/// hands it to the syncer. [`Error::DiskFull`] means a roll found no room
/// and nothing was written; after any other error the shard has failed.
async fn commit(inner: &Rc<Inner>, batch: &mut Pending) -> Result<()> {
    let bound = encoded_bound(batch);
    let needs_roll = {
        let state = inner.state.borrow();
        state.active.write_end + bound > state.active.capacity
    };
    if needs_roll {
        roll(inner).await?;
    }

    let (file, path, write_start, mut carry, mut seq) = {
        let mut state = inner.state.borrow_mut();
        let active = &mut state.active;
        let write_start = page_floor(active.write_end);
        debug_assert_eq!((active.write_end - write_start) as usize, active.tail.len());
        let capacity = page_ceil(active.tail.len() as u64 + bound) as usize;
        assert!(capacity <= crate::limits::COMMIT_WRITE_BYTES_MAX, "pending limits bound one write");
        let carry = std::mem::take(&mut active.tail);
        (active.file.clone(), active.path.clone(), write_start, carry, state.next_seq)
    };

    // Encode the blocks behind the tail, a chunk at a time, index them (the
    // index hides blocks that are not yet durable) and start each chunk's
    // write before encoding the next, so that encoding overlaps the I/O.
    let recent_max = inner.config.recent_writes_bytes.min(crate::limits::RECENT_WRITES_BYTES_MAX);
    let mut writes = Vec::new();
    let mut recent = Vec::new();
    let mut chunk_start = write_start;
    let mut raw_bytes = 0u64;
    let mut write_bytes = 0u64;
    let mut first_block = 0;
    let mut chunk_target = WRITE_CHUNK_RAW_BYTES;
    let new_end = loop {
        let mut end_block = first_block;
        let mut chunk_raw_bytes = 0;
        let mut chunk_bound = 0;
        while end_block < batch.blocks.len() && (end_block == first_block || chunk_raw_bytes < chunk_target) {
            let block_raw_bytes = batch.blocks[end_block].raw_end - batch.blocks[end_block].raw_start;
            chunk_raw_bytes += block_raw_bytes;
            chunk_bound += block_encoded_bound(&batch.blocks[end_block]);
            end_block += 1;
        }
        let last = end_block == batch.blocks.len();
        let mut buffer = file.alloc_dma_buffer(page_ceil((carry.len() + chunk_bound) as u64) as usize);
        buffer.as_bytes_mut()[..carry.len()].copy_from_slice(&carry);
        let mut used = carry.len();
        {
            let mut state = inner.state.borrow_mut();
            for pending_block in &batch.blocks[first_block..end_block] {
                let raw = &batch.raw[pending_block.raw_start..pending_block.raw_end];
                let spec = BlockSpec {
                    first_seq: seq,
                    entry_count: pending_block.entry_count,
                    min_ts: pending_block.min_ts,
                    max_ts: pending_block.max_ts,
                    origin: pending_block.origin,
                    fields: pending_block.fields,
                };
                let out = &mut buffer.as_bytes_mut()[used..];
                let (block_len, raw_len) = match pending_block.stored {
                    Some(stored) => {
                        (block::encode_stored_block(&spec, stored.codec, stored.raw_len, raw, out), stored.raw_len)
                    }
                    None => (block::encode_block(&spec, raw, out), raw.len()),
                };
                let header = block::parse_header(out).expect("a block just encoded parses");
                let meta = BlockMeta {
                    offset: chunk_start + used as u64,
                    len: header.block_bytes() as u32,
                    first_seq: header.first_seq,
                    entry_count: header.entry_count,
                    min_ts: header.min_ts,
                    max_ts: header.max_ts,
                    origin: header.origin,
                };
                state.active.index.push_block_terms(meta, &pending_block.terms);
                used += block_len;
                seq += u64::from(pending_block.entry_count);
                raw_bytes += raw_len as u64;
            }
        }
        // The page that holds the end is written by the next chunk (or, after
        // the last chunk, rewritten by the next commit), so that no two
        // writes in flight cover the same page.
        let full_pages = page_floor(used as u64) as usize;
        carry.clear();
        carry.extend_from_slice(&buffer.as_bytes()[full_pages..used]);
        let write_len = if last { page_ceil(used as u64) as usize } else { full_pages };
        buffer.as_bytes_mut()[used.min(write_len)..write_len].fill(0);
        buffer.trim_to_size(write_len);
        if write_len > 0 {
            let buffer = Rc::new(buffer);
            if recent_max > 0 {
                recent.push((chunk_start, chunk_start + used.min(write_len) as u64, buffer.clone()));
            }
            let write =
                super::faults::spawn_write(inner.config.faults.as_ref(), file.clone(), &path, buffer, chunk_start);
            writes.push((write, write_len));
            write_bytes += write_len as u64;
        }
        if last {
            break chunk_start + used as u64;
        }
        chunk_start += full_pages as u64;
        first_block = end_block;
        chunk_target *= 2;
        // glommio submits queued I/O only once no task is runnable: give
        // way until the next reactor turn, so the write above is in flight
        // while the next chunk is encoded.
        glommio::timer::sleep(CHUNK_SUBMIT_PAUSE).await;
    };

    // Await every write, even after one failed: none may be in flight once
    // the shard is poisoned.
    let mut written = Ok(());
    for (write, write_len) in writes {
        let result = match write.await {
            Ok(done) if done == write_len => Ok(()),
            Ok(done) => Err(Error::io(
                "write segment",
                &path,
                std::io::Error::other(format!("short write: {done} of {write_len}")),
            )),
            Err(error) => Err(Error::io("write segment", &path, error)),
        };
        if written.is_ok() {
            written = result;
        }
    }

    let mut state = inner.state.borrow_mut();
    if written.is_ok() {
        if let Some(failure) = &state.failure {
            // The syncer failed while these writes were in flight and
            // stopped: nothing would acknowledge them.
            written = Err(failure.clone());
        }
    }
    // Give each append its seqs, in arrival order.
    let last_seq = seq - 1;
    let mut appends = Vec::with_capacity(batch.appends.len());
    let mut next = state.next_seq;
    for append in batch.appends.drain(..) {
        let range = SeqRange { first: next, last: next + append.entry_count - 1 };
        next += append.entry_count;
        appends.push((range, append.done));
    }
    assert_eq!(next, seq, "appends and blocks count the same entries");
    if let Err(error) = written {
        // Whatever the error (ENOSPC included: blocks may have landed), the
        // blocks of this batch are indexed but not written, and the tail
        // page was taken: the shard cannot go on. The appends were taken
        // out of the batch: fail them here.
        drop(state);
        let failed = fail_shard(inner, error);
        for (_, done) in appends {
            done.send(Err(failed.clone()));
        }
        return Err(failed);
    }
    state.active.tail = carry;
    // Readers of these blocks (once durable) find them here.
    if recent_max > 0 {
        for (start, end, buffer) in recent {
            state.recent_writes.push_back(super::RecentWrite { path: path.clone(), start, end, buffer });
        }
        let mut recent_bytes: usize = state.recent_writes.iter().map(|write| write.buffer.len()).sum();
        while recent_bytes > recent_max {
            let Some(oldest) = state.recent_writes.pop_front() else { break };
            recent_bytes -= oldest.buffer.len();
        }
    }
    state.active.write_end = new_end;
    state.active.raw_bytes_written += raw_bytes;
    state.next_seq = last_seq + 1;
    state.stats.commits += 1;
    state.stats.write_bytes += write_bytes;
    let raw_bytes = state.active.raw_bytes_written;
    let blocks = state.active.index.blocks().len();
    state.unsynced.push_back(Unsynced { appends, last_seq, write_end: new_end, blocks, raw_bytes });
    drop(state);
    inner.syncer_wake.notify();
    Ok(())
}

/// Seals the active segment and starts the next one. Waits until everything
/// written so far is durable, so a sealed segment is complete on disk. The
/// new segment is created before the old one is sealed: if creation fails
/// (disk full), the old segment simply stays active.
async fn roll(inner: &Rc<Inner>) -> Result<()> {
    // Almost always finished long ago: it only waits when a whole segment
    // filled faster than the previous pass could delete.
    super::retention::wait_for_pass(inner).await;
    loop {
        let wake = inner.writer_wake.wait();
        {
            let state = inner.state.borrow();
            if let Some(failure) = &state.failure {
                return Err(failure.clone());
            }
            if state.unsynced.is_empty() {
                break;
            }
        }
        wake.await;
    }
    let next_first_seq = inner.state.borrow().next_seq;
    let next_path = inner.config.dir.join(super::segment::segment_file_name(next_first_seq));
    super::faults::create_segment(inner.config.faults.as_ref(), &next_path)
        .map_err(|error| Error::io("create segment", &next_path, error))?;
    let spare = inner.state.borrow_mut().spare_segment.take();
    let (file, path) = match spare {
        Some((file, temporary)) => recovery::finish_segment(&inner.config, file, &temporary, next_first_seq).await?,
        None => recovery::create_segment(&inner.config, next_first_seq).await?,
    };
    // Encode the index before the first await, so readers keep seeing the
    // active segment's index in place while the file is written. Every
    // block of the segment is durable now (no write is unsynced), so the
    // shard's watermarks count them all; the index carries them over, so
    // that they survive a restart after retention deleted older segments.
    let (old_first_seq, index_bytes) = {
        let mut state = inner.state.borrow_mut();
        let state = &mut *state;
        state.active.index.carry_watermarks(&state.origin_watermarks);
        (state.active.first_seq, state.active.index.encode(state.active.raw_bytes_durable))
    };
    let index_path = match recovery::write_index_file(&inner.config.dir, old_first_seq, &index_bytes).await {
        Ok(path) => path,
        Err(error) => {
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
    };
    let summary = crate::index::decode_summary(&index_bytes)
        .map_err(|source| Error::Index { path: index_path.clone(), source: source.into() })?;
    // Preallocated to exactly this. (Not `file_size()`: glommio stats the
    // path the file was opened under, which the rename just replaced.)
    let capacity = inner.config.segment_bytes;
    let mut state = inner.state.borrow_mut();
    let new_active = super::Active {
        first_seq: next_first_seq,
        path,
        file,
        capacity,
        index: SegmentIndex::with_index_caps(next_first_seq, inner.config.index_caps),
        durable_blocks: 0,
        durable_end: super::segment::DATA_OFFSET,
        write_end: super::segment::DATA_OFFSET,
        tail: Vec::new(),
        raw_bytes_written: 0,
        raw_bytes_durable: 0,
    };
    let old = std::mem::replace(&mut state.active, new_active);
    let file_bytes = old.capacity;
    let origin_seqs = super::own_origin_seqs(old.index.origins());
    state.sealed.push_back(super::Sealed {
        first_seq: old.first_seq,
        next_seq: old.index.next_seq(),
        path: old.path,
        index_path,
        summary,
        origin_seqs,
        file_bytes,
        file: std::cell::RefCell::new(Some(old.file)),
        // The written index is dropped rather than cached: it holds its word
        // filters and its tag sets by block (built for appending), several
        // times the memory of the file's form, which the first query that
        // needs it loads without the filters (see `recovery::load_index`).
        index: std::cell::RefCell::new(None),
        generation: 0,
        pinned: false,
        cold: super::ColdState::Warm,
    });
    drop(state);
    tracing::info!(shard = inner.config.shard_id, first_seq = next_first_seq, "rolled to a new segment");
    super::retention::start_after_roll(inner);
    inner.cold_wake.notify();
    prepare_spare_segment(inner);
    Ok(())
}

/// Starts preparing the next segment file in the background, if the shard
/// zero-fills its segments and no spare is ready or being prepared. A
/// failure (for example ENOSPC) is only logged: the next roll then creates
/// its segment on the spot and reports the error to the appenders.
pub(super) fn prepare_spare_segment(inner: &Rc<Inner>) {
    {
        let mut state = inner.state.borrow_mut();
        if inner.config.preallocation != super::Preallocation::ZeroFill
            || state.spare_segment.is_some()
            || state.preparing_spare
            || state.closing
        {
            return;
        }
        state.preparing_spare = true;
    }
    let task_inner = inner.clone();
    let task = glommio::spawn_local(async move {
        let inner = task_inner;
        // A name of its own, so a task of an earlier open of this directory
        // can never touch this one's file.
        let path = inner.config.dir.join(format!("spare-{}.seg.tmp", super::now_unix_ns()));
        let keep_going = || !inner.state.borrow().closing;
        let prepared =
            recovery::prepare_segment_file(&inner.config, &path, super::Preallocation::ZeroFill, &keep_going).await;
        let mut state = inner.state.borrow_mut();
        state.preparing_spare = false;
        match prepared {
            Ok(file) if !state.closing => state.spare_segment = Some((file, path)),
            Ok(_) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(Error::Closed) => {}
            Err(error) => tracing::warn!(shard = inner.config.shard_id, %error, "could not prepare the next segment"),
        }
    })
    .detach();
    // Close waits for it: it stops at the next chunk once the shard closes.
    // (Cancelling it instead could let an in-flight create land after the
    // close removed the spare files.)
    inner.spare_task.borrow_mut().replace(task);
}

pub(super) async fn run_syncer(inner: Rc<Inner>) {
    loop {
        let (file, path, batches) = loop {
            let wake = inner.syncer_wake.wait();
            {
                let state = inner.state.borrow();
                if state.failure.is_some() {
                    return;
                }
                if !state.unsynced.is_empty() {
                    break (state.active.file.clone(), state.active.path.clone(), state.unsynced.len());
                }
                if state.writer_finished {
                    return;
                }
            }
            wake.await;
        };
        let started = std::time::Instant::now();
        let synced = match inner.config.durability {
            Durability::Sync => super::faults::fdatasync(inner.config.faults.as_ref(), &file, &path)
                .await
                .map_err(|error| Error::io("fdatasync segment", &path, error)),
            Durability::None => Ok(()),
        };
        let elapsed_us = started.elapsed().as_micros() as u64;
        if let Err(error) = synced {
            // Never retried (see `Error::Failed`): the batches it covered
            // are failed, and the syncer stops.
            fail_shard(&inner, error);
            return;
        }
        let mut state = inner.state.borrow_mut();
        if state.failure.is_some() {
            // The writer failed the shard while this fdatasync was in
            // flight and failed its batches then: acknowledge nothing.
            return;
        }
        if inner.config.durability == Durability::Sync {
            state.stats.syncs += 1;
            state.stats.sync_us_total += elapsed_us;
            state.stats.sync_us_max = state.stats.sync_us_max.max(elapsed_us);
            for (bucket, bound) in state.stats.sync_latency_buckets.iter_mut().zip(super::SYNC_LATENCY_BUCKETS_US) {
                *bucket += u64::from(elapsed_us <= bound);
            }
        }
        // Only the batches whose writes completed before the fdatasync was
        // issued are durable now.
        let mut acked = Vec::new();
        for _ in 0..batches {
            let batch = state.unsynced.pop_front().expect("batches are only removed here");
            state.durable_seq = batch.last_seq;
            state.active.durable_end = batch.write_end;
            // Watermarks count a block only now that it is durable.
            let state = &mut *state;
            let newly_durable = &state.active.index.blocks()[state.active.durable_blocks..batch.blocks];
            super::advance_watermarks(&mut state.origin_watermarks, newly_durable);
            state.active.durable_blocks = batch.blocks;
            state.active.raw_bytes_durable = batch.raw_bytes;
            acked.extend(batch.appends);
        }
        drop(state);
        for (range, done) in acked {
            done.send(Ok(range));
        }
        inner.durable_wake.notify();
        inner.writer_wake.notify();
    }
}
