//! The group-commit pipeline: the writer task turns pending batches into one
//! DMA write each; the syncer task makes them durable and acknowledges them.

use std::rc::Rc;

use super::block::{self, BlockSpec};
use super::recovery;
use super::{
    page_ceil, page_floor, Durability, Error, Inner, Pending, Result, SeqRange, Unsynced, UNSYNCED_WRITES_MAX,
};
use crate::index::{BlockMeta, SegmentIndex};

/// Fails every append of `pending` with `error`.
fn fail_pending(pending: &mut Pending, error: &Error) {
    for append in pending.appends.drain(..) {
        append.done.send(Err(error.clone()));
    }
    pending.clear();
}

/// Marks the shard failed and fails everything queued or unsynced.
fn poison(inner: &Inner, error: Error) {
    tracing::error!(shard = inner.config.shard_id, %error, "shard I/O failed; refusing appends until reopened");
    {
        let mut state = inner.state.borrow_mut();
        if state.failure.is_none() {
            state.failure = Some(error.to_string());
        }
        let failed = Error::Failed(error.to_string());
        let state = &mut *state;
        fail_pending(&mut state.pending, &failed);
        for batch in state.unsynced.drain(..) {
            for (_, done) in batch.appends {
                done.send(Err(failed.clone()));
            }
        }
    }
    inner.durable_wake.notify();
    inner.syncer_wake.notify();
}

/// Largest number of bytes the blocks of `pending` can take once encoded.
fn encoded_bound(pending: &Pending) -> u64 {
    let block_bound = |block: &super::PendingBlock| match block.stored {
        Some(_) => block::HEADER_BYTES + (block.raw_end - block.raw_start),
        None => block::encoded_bytes_max(block.raw_end - block.raw_start),
    };
    pending.blocks.iter().map(|block| block_bound(block) as u64).sum()
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
                // Nothing was written: the shard stays healthy and a later
                // append retries the roll once space is free.
                tracing::warn!(shard = inner.config.shard_id, %error, "append failed: disk full");
                fail_pending(&mut batch, &error);
            }
            Err(error) => {
                fail_pending(&mut batch, &error);
                drop(state);
                poison(&inner, error);
                state = inner.state.borrow_mut();
            }
        }
        batch.clear();
        state.spare = batch;
    }
}

/// Writes one batch (rolling to a new segment first if it does not fit) and
/// hands it to the syncer.
async fn commit(inner: &Rc<Inner>, batch: &mut Pending) -> Result<()> {
    let bound = encoded_bound(batch);
    let needs_roll = {
        let state = inner.state.borrow();
        state.active.write_end + bound > state.active.capacity
    };
    if needs_roll {
        roll(inner).await?;
    }

    let (file, path, write_start, mut buffer, tail_len) = {
        let state = inner.state.borrow();
        let active = &state.active;
        let write_start = page_floor(active.write_end);
        let tail_len = (active.write_end - write_start) as usize;
        debug_assert_eq!(tail_len, active.tail.len());
        let capacity = page_ceil(tail_len as u64 + bound) as usize;
        assert!(capacity <= crate::limits::COMMIT_WRITE_BYTES_MAX, "pending limits bound one write");
        let mut buffer = active.file.alloc_dma_buffer(capacity);
        buffer.as_bytes_mut()[..tail_len].copy_from_slice(&active.tail);
        (active.file.clone(), active.path.clone(), write_start, buffer, tail_len)
    };

    // Encode every block behind the tail and index it (the index hides
    // blocks that are not yet durable).
    let (write_len, used, new_end, last_seq, blocks, raw_bytes, appends) = {
        let mut state = inner.state.borrow_mut();
        let state = &mut *state;
        let mut used = tail_len;
        let mut seq = state.next_seq;
        let mut raw_bytes = 0u64;
        for pending_block in &batch.blocks {
            let raw = &batch.raw[pending_block.raw_start..pending_block.raw_end];
            let spec = BlockSpec {
                first_seq: seq,
                entry_count: pending_block.entry_count,
                min_ts: pending_block.min_ts,
                max_ts: pending_block.max_ts,
                origin: pending_block.origin,
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
                offset: write_start + used as u64,
                len: header.block_bytes() as u32,
                first_seq: header.first_seq,
                entry_count: header.entry_count,
                min_ts: header.min_ts,
                max_ts: header.max_ts,
                origin: header.origin,
            };
            state.active.index.push_block(meta, pending_block.tags.iter().map(|(key, value)| (&**key, &**value)));
            used += block_len;
            seq += u64::from(pending_block.entry_count);
            raw_bytes += raw_len as u64;
        }
        let write_len = page_ceil(used as u64) as usize;
        buffer.as_bytes_mut()[used..write_len].fill(0);
        buffer.trim_to_size(write_len);
        // Give each append its seqs, in arrival order.
        let mut appends = Vec::with_capacity(batch.appends.len());
        let mut next = state.next_seq;
        for append in batch.appends.drain(..) {
            let range = SeqRange { first: next, last: next + append.entry_count - 1 };
            next += append.entry_count;
            appends.push((range, append.done));
        }
        assert_eq!(next, seq, "appends and blocks count the same entries");
        let blocks = state.active.index.blocks().len();
        (write_len, used, write_start + used as u64, seq - 1, blocks, raw_bytes, appends)
    };

    let buffer = Rc::new(buffer);
    let written = file.write_rc_at(buffer.clone(), write_start).await;
    let written = written.map_err(|error| Error::glommio("write segment", &path, error));
    let written = match written {
        Ok(written) if written == write_len => Ok(()),
        Ok(written) => Err(Error::io(
            "write segment",
            &path,
            std::io::Error::other(format!("short write: {written} of {write_len}")),
        )),
        Err(error) => Err(error),
    };
    let mut state = inner.state.borrow_mut();
    if let Err(error) = written {
        // The appends were taken out of the batch: fail them here.
        for (_, done) in appends {
            done.send(Err(error.clone()));
        }
        return Err(error);
    }
    let tail_start = (page_floor(new_end) - write_start) as usize;
    state.active.tail.clear();
    state.active.tail.extend_from_slice(&buffer.as_bytes()[tail_start..used]);
    // Readers of these blocks (once durable) find them here.
    let recent_max = inner.config.recent_writes_bytes.min(crate::limits::RECENT_WRITES_BYTES_MAX);
    if recent_max > 0 {
        state.recent_writes.push_back(super::RecentWrite {
            path: path.clone(),
            start: write_start,
            end: new_end,
            buffer: buffer.clone(),
        });
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
    state.stats.write_bytes += write_len as u64;
    let raw_bytes = state.active.raw_bytes_written;
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
    loop {
        let wake = inner.writer_wake.wait();
        {
            let state = inner.state.borrow();
            if let Some(failure) = &state.failure {
                return Err(Error::Failed(failure.clone()));
            }
            if state.unsynced.is_empty() {
                break;
            }
        }
        wake.await;
    }
    let next_first_seq = inner.state.borrow().next_seq;
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
        index: SegmentIndex::new(next_first_seq),
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
        index: std::cell::RefCell::new(Some(Rc::new(old.index))),
    });
    state.loaded_indexes.push_back(old.first_seq);
    super::reader::evict_indexes(&mut state);
    drop(state);
    tracing::info!(shard = inner.config.shard_id, first_seq = next_first_seq, "rolled to a new segment");
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
            Durability::Sync => {
                file.fdatasync().await.map_err(|error| Error::glommio("fdatasync segment", &path, error))
            }
            Durability::None => Ok(()),
        };
        let elapsed_us = started.elapsed().as_micros() as u64;
        if let Err(error) = synced {
            poison(&inner, error);
            return;
        }
        let mut state = inner.state.borrow_mut();
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
