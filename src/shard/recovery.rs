//! Opening a shard: listing its files, checking sealed segments through
//! their index files, scanning the active segment, zeroing a torn tail.
//! This is the I/O driver of [`RecoveryPlan`] (`plan.rs`), which makes every
//! decision: recovery reads what the plan asks for, feeds it, and deletes,
//! rebuilds, extends and zeroes what the plan says. Also the file operations
//! that recovery shares with the writer: creating a segment, writing an
//! index file, syncing the directory.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use super::plan::{IndexDecision, IndexRead, Leftover, Listing, RebuildCause, RecoveryPlan, RecoveryReport, ScanEnd};
use super::scan::{self, Step, Stop};
use super::segment::{self, SegmentHeader, DATA_OFFSET};
use super::{page_ceil, page_floor, Active, Error, Preallocation, Result, Sealed, ShardConfig, PAGE_BYTES};
use crate::codec::block::{self, BlockError, BlockHeader, EntryView};
use crate::index::{self, BlockMeta, BlockTerms, OriginKey, OriginSummary, SegmentIndex};
use crate::limits::{self, SCAN_WINDOW_BYTES, ZERO_CHUNK_BYTES, ZERO_SYNC_BYTES};

pub(super) struct Recovered {
    pub active: Active,
    pub sealed: VecDeque<Sealed>,
    pub report: RecoveryReport,
    /// Highest durable origin seq per origin, rebuilt from the data.
    pub origin_watermarks: BTreeMap<OriginKey, u64>,
}

pub(super) async fn sync_dir(dir: &Path) -> Result<()> {
    let directory = glommio::io::Directory::open(dir).await.map_err(|error| Error::glommio("open dir", dir, error))?;
    directory.sync().await.map_err(|error| Error::glommio("fsync dir", dir, error))?;
    directory.close().await.map_err(|error| Error::glommio("close dir", dir, error))?;
    Ok(())
}

async fn open_dma(path: &Path, op: &'static str) -> Result<DmaFile> {
    OpenOptions::new().read(true).write(true).dma_open(path).await.map_err(|error| Error::glommio(op, path, error))
}

/// Creates the segment that starts at `first_seq` right away: preallocated
/// with `fallocate` only (zero-filling would stall the caller), header
/// written, synced, directory synced. On failure the file is removed, so a
/// failed creation (for example ENOSPC) leaves nothing behind.
pub(super) async fn create_segment(config: &ShardConfig, first_seq: u64) -> Result<(Rc<DmaFile>, PathBuf)> {
    let temporary = config.dir.join(format!("{}.tmp", segment::segment_file_name(first_seq)));
    let file = prepare_segment_file(config, &temporary, Preallocation::Fallocate, &|| true).await?;
    finish_segment(config, file, &temporary, first_seq).await
}

/// Creates a spare segment file at `path` (a `*.tmp` name, which recovery
/// deletes if the process dies first): preallocated and, with
/// [`Preallocation::ZeroFill`], overwritten with zeros and synced, so that
/// the fdatasyncs of the commits later written into it find written
/// extents. `keep_going` is asked between chunks of zero-filling; when it
/// says no, preparation stops with [`Error::Closed`]. On failure the file is
/// removed.
pub(super) async fn prepare_segment_file(
    config: &ShardConfig,
    path: &Path,
    preallocation: Preallocation,
    keep_going: &dyn Fn() -> bool,
) -> Result<DmaFile> {
    let result = prepare_segment_file_inner(config, path, preallocation, keep_going).await;
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

async fn prepare_segment_file_inner(
    config: &ShardConfig,
    path: &Path,
    preallocation: Preallocation,
    keep_going: &dyn Fn() -> bool,
) -> Result<DmaFile> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(path)
        .await
        .map_err(|error| Error::glommio("create segment", path, error))?;
    file.pre_allocate(config.segment_bytes, false)
        .await
        .map_err(|error| Error::glommio("fallocate segment", path, error))?;
    if preallocation == Preallocation::ZeroFill {
        let mut zeros = file.alloc_dma_buffer(ZERO_CHUNK_BYTES);
        zeros.as_bytes_mut().fill(0);
        let zeros = Rc::new(zeros);
        let mut offset = DATA_OFFSET;
        while offset < config.segment_bytes {
            let length = (config.segment_bytes - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
            let written = if length == ZERO_CHUNK_BYTES {
                file.write_rc_at(zeros.clone(), offset).await
            } else {
                let mut tail = file.alloc_dma_buffer(length);
                tail.as_bytes_mut().fill(0);
                file.write_at(tail, offset).await
            }
            .map_err(|error| Error::glommio("zero-fill segment", path, error))?;
            if written != length {
                return Err(Error::io("zero-fill segment", path, std::io::Error::other("short write")));
            }
            offset += length as u64;
            if (offset - DATA_OFFSET) % ZERO_SYNC_BYTES == 0 {
                file.fdatasync().await.map_err(|error| Error::glommio("fdatasync segment", path, error))?;
            }
            // Zero-filling runs beside the commits of the active segment:
            // let them through between chunks, and stop early on close.
            glommio::yield_if_needed().await;
            if !keep_going() {
                return Err(Error::Closed);
            }
        }
        file.fdatasync().await.map_err(|error| Error::glommio("fdatasync segment", path, error))?;
    }
    Ok(file)
}

/// Turns a prepared file into the segment that starts at `first_seq`:
/// writes and syncs its header, renames it into place, syncs the directory.
/// On failure the file is removed.
pub(super) async fn finish_segment(
    config: &ShardConfig,
    file: DmaFile,
    temporary: &Path,
    first_seq: u64,
) -> Result<(Rc<DmaFile>, PathBuf)> {
    let path = config.dir.join(segment::segment_file_name(first_seq));
    let result = async {
        let header = SegmentHeader {
            first_seq,
            shard: config.shard_id,
            node: config.node_id,
            capacity_bytes: config.segment_bytes,
            created_unix_ns: super::now_unix_ns() as u64,
            cold: false,
        };
        let mut page = file.alloc_dma_buffer(PAGE_BYTES);
        page.as_bytes_mut().copy_from_slice(&header.encode());
        let written =
            file.write_at(page, 0).await.map_err(|error| Error::glommio("write segment header", temporary, error))?;
        if written != PAGE_BYTES {
            return Err(Error::io("write segment header", temporary, std::io::Error::other("short write")));
        }
        file.fdatasync().await.map_err(|error| Error::glommio("fdatasync segment", temporary, error))?;
        std::fs::rename(temporary, &path).map_err(|error| Error::io("rename segment", &path, error))?;
        sync_dir(&config.dir).await
    }
    .await;
    match result {
        Ok(()) => Ok((Rc::new(file), path)),
        Err(error) => {
            let _ = std::fs::remove_file(temporary);
            let _ = std::fs::remove_file(&path);
            Err(error)
        }
    }
}

/// Writes an encoded index file as the sealed index of the segment starting at
/// `first_seq`: to a temporary file, synced, then renamed into place and the
/// directory synced, so the index file is either whole or absent.
pub(super) async fn write_index_file(dir: &Path, first_seq: u64, bytes: &[u8]) -> Result<PathBuf> {
    let final_path = dir.join(segment::index_file_name(first_seq));
    let temporary = dir.join(format!("{}.tmp", segment::index_file_name(first_seq)));
    write_synced_file(&temporary, bytes).await?;
    std::fs::rename(&temporary, &final_path).map_err(|error| Error::io("rename index", &final_path, error))?;
    sync_dir(dir).await?;
    Ok(final_path)
}

/// Writes `bytes` as the whole file `path` (created or truncated),
/// fdatasynced and closed: an index file before it is renamed into place.
pub(super) async fn write_synced_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(path)
        .await
        .map_err(|error| Error::glommio("create index", path, error))?;
    let mut buffer = file.alloc_dma_buffer(page_ceil(bytes.len() as u64) as usize);
    buffer.as_bytes_mut()[..bytes.len()].copy_from_slice(bytes);
    buffer.as_bytes_mut()[bytes.len()..].fill(0);
    let length = buffer.len();
    let written = file.write_at(buffer, 0).await.map_err(|error| Error::glommio("write index", path, error))?;
    if written != length {
        return Err(Error::io("write index", path, std::io::Error::other("short write")));
    }
    file.truncate(bytes.len() as u64).await.map_err(|error| Error::glommio("truncate index", path, error))?;
    file.fdatasync().await.map_err(|error| Error::glommio("fdatasync index", path, error))?;
    file.close().await.map_err(|error| Error::glommio("close index", path, error))?;
    Ok(())
}

/// Reads an index file but its word filters (header and body), verifying
/// them: what a tag or time query needs. The filters are read when a word
/// query needs them ([`load_filters`]).
pub(super) async fn load_index(path: &Path) -> Result<SegmentIndex> {
    let index_error = |source: index::Error| Error::Index { path: path.to_path_buf(), source: source.into() };
    let file = DmaFile::open(path).await.map_err(|error| Error::glommio("open index", path, error))?;
    let result = async {
        let size = file.file_size().await.map_err(|error| Error::glommio("stat", path, error))?;
        limits::check("INDEX_FILE_BYTES_MAX", "index file bytes", size as usize, limits::INDEX_FILE_BYTES_MAX)
            .map_err(|limit| Error::Corrupt { path: path.to_path_buf(), reason: limit.to_string() })?;
        let header = file
            .read_at(0, index::HEADER_BYTES.min(size as usize))
            .await
            .map_err(|error| Error::glommio("read index", path, error))?;
        let summary = index::decode_summary(&header).map_err(index_error)?;
        if summary.file_bytes() != size {
            return Err(index_error(index::Error::Truncated { what: "index file" }));
        }
        let core = file
            .read_at(0, summary.filters_offset() as usize)
            .await
            .map_err(|error| Error::glommio("read index", path, error))?;
        SegmentIndex::decode_without_filters(&core).map_err(index_error)
    }
    .await;
    let _ = file.close().await;
    result
}

/// Loads the word filters of `index`, read without them by [`load_index`]
/// from the index file at `path`, unless they are loaded already.
pub(super) async fn load_filters(path: &Path, index: &SegmentIndex) -> Result<()> {
    if index.filters_loaded() {
        return Ok(());
    }
    let index_error = |source: index::Error| Error::Index { path: path.to_path_buf(), source: source.into() };
    let file = DmaFile::open(path).await.map_err(|error| Error::glommio("open index", path, error))?;
    let result = async {
        let header =
            file.read_at(0, index::HEADER_BYTES).await.map_err(|error| Error::glommio("read index", path, error))?;
        let summary = index::decode_summary(&header).map_err(index_error)?;
        let section = file
            .read_at(summary.filters_offset(), summary.filters_bytes as usize)
            .await
            .map_err(|error| Error::glommio("read index", path, error))?;
        index.load_filters(&summary, &section).map_err(index_error)
    }
    .await;
    let _ = file.close().await;
    result
}

/// Reads the header of an index file and the origin table right after it
/// (not the block table nor the postings), verifying both.
async fn read_summary(path: &Path) -> Result<(index::IndexSummary, BTreeMap<OriginKey, OriginSummary>)> {
    let file = DmaFile::open(path).await.map_err(|error| Error::glommio("open index", path, error))?;
    let result = async {
        let index_error = |source: index::Error| Error::Index { path: path.to_path_buf(), source: source.into() };
        let header =
            file.read_at(0, index::HEADER_BYTES).await.map_err(|error| Error::glommio("read index", path, error))?;
        let summary = index::decode_summary(&header).map_err(index_error)?;
        // decode_summary bounded the table by INDEX_ORIGINS_MAX records.
        let origins = if summary.origin_count == 0 {
            BTreeMap::new()
        } else {
            let start = file
                .read_at(0, summary.origin_table_end())
                .await
                .map_err(|error| Error::glommio("read index", path, error))?;
            index::decode_origin_table(&start, &summary).map_err(index_error)?
        };
        Ok((summary, origins))
    }
    .await;
    let _ = file.close().await;
    result
}

/// Feeds a valid block's entries to the index: decompresses it (into
/// `scratch`) and collects its tags. Returns the block's raw length.
pub(super) fn index_block(
    index: &mut SegmentIndex,
    offset: u64,
    header: &BlockHeader,
    block_bytes: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<u64, BlockError> {
    block::decompress_payload(header, block_bytes, scratch)?;
    push_block_from_raw(index, offset, header, scratch)?;
    Ok(u64::from(header.raw_len))
}

/// Adds a block to `index` given its uncompressed payload.
pub(super) fn push_block_from_raw(
    index: &mut SegmentIndex,
    offset: u64,
    header: &BlockHeader,
    raw: &[u8],
) -> Result<(), BlockError> {
    // A block's entries repeat a few distinct pairs many times (4,000 tags,
    // 300 distinct, in the LogHub benches): parse and check each distinct
    // encoded pair once. Entries are given to the block's terms in order,
    // with their tags in their stored order and their bodies, as the writer
    // gave them while they were appended, so the rebuilt index records the
    // same pairs, sets and word filter in the same order.
    let mut parsed: hashbrown::HashMap<&[u8], (&str, &str), ahash::RandomState> = hashbrown::HashMap::default();
    let mut terms = BlockTerms::with_words();
    let mut tags: Vec<(&str, &str)> = Vec::new();
    block::for_each_entry(header, raw, |_, bytes| {
        let entry = EntryView::parse(bytes)?;
        tags.clear();
        entry.for_each_tag_field(|field| {
            let pair = match parsed.get(field) {
                Some(&pair) => pair,
                None => {
                    let pair = block::parse_tag_field(field)?;
                    parsed.insert(field, pair);
                    pair
                }
            };
            tags.push(pair);
            Ok(())
        })?;
        terms.add_entry(tags.iter().copied());
        terms.add_body(entry.body);
        Ok(())
    })?;
    let meta = BlockMeta {
        offset,
        len: header.block_bytes() as u32,
        first_seq: header.first_seq,
        entry_count: header.entry_count,
        min_ts: header.min_ts,
        max_ts: header.max_ts,
        origin: header.origin,
    };
    index.push_block_terms(meta, &terms);
    Ok(())
}

/// The outcome of scanning one segment file.
struct Scanned {
    index: SegmentIndex,
    end: u64,
    raw_bytes: u64,
    stop: Stop,
}

async fn scan_segment(
    file: &DmaFile,
    path: &Path,
    first_seq: u64,
    file_bytes: u64,
    caps: crate::index::IndexCaps,
) -> Result<Scanned> {
    let mut index = SegmentIndex::with_index_caps(first_seq, caps);
    let mut next_seq = first_seq;
    let mut offset = DATA_OFFSET;
    let mut raw_bytes = 0u64;
    let mut scratch = Vec::new();
    loop {
        let length = (file_bytes.saturating_sub(offset)).min(SCAN_WINDOW_BYTES as u64) as usize;
        if length == 0 {
            return Ok(Scanned { index, end: offset, raw_bytes, stop: Stop::Clean });
        }
        let window = file.read_at(offset, length).await.map_err(|error| Error::glommio("read segment", path, error))?;
        let at_eof = offset + window.len() as u64 >= file_bytes;
        let step = scan::scan_window(&window, offset, &mut next_seq, at_eof, |block_offset, header, bytes| {
            raw_bytes += index_block(&mut index, block_offset, header, bytes, &mut scratch)?;
            Ok(())
        });
        match step {
            Step::NeedMore { offset: next } if next > offset => offset = next,
            Step::NeedMore { offset: next } => {
                // Cannot happen: a window holds the largest block.
                let reason = "block larger than the scan window".to_string();
                return Ok(Scanned { index, end: next, raw_bytes, stop: Stop::Torn(reason) });
            }
            Step::End { offset: end, stop } => return Ok(Scanned { index, end, raw_bytes, stop }),
        }
    }
}

/// Reads `window` (bytes after the log's end, from
/// [`RecoveryPlan::scrub_window`]) and returns the offset of its last
/// non-zero byte, if any.
async fn last_nonzero_byte(file: &DmaFile, path: &Path, window: Range<u64>) -> Result<Option<u64>> {
    // Reads start on the window's page, as O_DIRECT wants.
    let mut offset = page_floor(window.start);
    let mut last_nonzero = None;
    while offset < window.end {
        let length = (window.end - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
        let chunk = file.read_at(offset, length).await.map_err(|error| Error::glommio("read segment", path, error))?;
        let skip = (window.start.saturating_sub(offset) as usize).min(chunk.len());
        if let Some(last) = last_non_zero(&chunk[skip..]) {
            last_nonzero = Some(offset + (skip + last) as u64);
        }
        offset += length as u64;
    }
    Ok(last_nonzero)
}

/// Zeroes `zero` (from [`RecoveryPlan::tail`]), keeping the bytes before it
/// in its first page, and syncs the file.
async fn zero_tail(file: &DmaFile, path: &Path, zero: Range<u64>) -> Result<()> {
    let start = page_floor(zero.start);
    let prefix = file
        .read_at(start, (zero.start - start) as usize)
        .await
        .map_err(|error| Error::glommio("read segment", path, error))?;
    let mut offset = start;
    while offset < zero.end {
        let length = (zero.end - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
        let mut buffer = file.alloc_dma_buffer(length);
        buffer.as_bytes_mut().fill(0);
        if offset == start {
            buffer.as_bytes_mut()[..prefix.len()].copy_from_slice(&prefix);
        }
        let written =
            file.write_at(buffer, offset).await.map_err(|error| Error::glommio("zero torn tail", path, error))?;
        if written != length {
            return Err(Error::io("zero torn tail", path, std::io::Error::other("short write")));
        }
        offset += length as u64;
    }
    file.fdatasync().await.map_err(|error| Error::glommio("fdatasync segment", path, error))?;
    Ok(())
}

/// Position of the last non-zero byte of `bytes`. Skips zero pages with a
/// slice comparison (memcmp), not byte by byte: recovery scrubs up to a
/// whole segment of zeros at every open, which took 0.4 s per 4 MiB in a
/// debug build (the storage simulator opens a shard hundreds of times).
fn last_non_zero(bytes: &[u8]) -> Option<usize> {
    const ZEROS: [u8; PAGE_BYTES] = [0; PAGE_BYTES];
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(PAGE_BYTES);
        if bytes[start..end] != ZEROS[..end - start] {
            return bytes[start..end].iter().rposition(|&byte| byte != 0).map(|last| start + last);
        }
        end = start;
    }
    None
}

async fn read_header(file: &DmaFile, path: &Path) -> Result<std::result::Result<SegmentHeader, segment::HeaderError>> {
    let page = file.read_at(0, PAGE_BYTES).await.map_err(|error| Error::glommio("read segment header", path, error))?;
    Ok(SegmentHeader::decode(&page))
}

/// Settles glommio's io_uring poll-ring probe for the device under `dir`
/// before any segment is opened.
///
/// glommio decides once per thread and device whether O_DIRECT reads may go
/// to the IOPOLL ring, by reading the first file it opens there. If that
/// file is empty (a brand-new segment), the read succeeds without touching
/// the device, the poll ring is wrongly enabled, and every later read fails
/// with EOPNOTSUPP on devices without poll queues (virtio, most cloud
/// disks). Opening a file that has data first makes the probe honest.
async fn settle_iopoll_probe(dir: &Path) -> Result<()> {
    let path = dir.join(".iopoll-probe.tmp");
    std::fs::write(&path, [0x5a; PAGE_BYTES]).map_err(|error| Error::io("write probe", &path, error))?;
    let opened = DmaFile::open(&path).await;
    let _ = std::fs::remove_file(&path);
    let file = opened.map_err(|error| Error::glommio("open probe", &path, error))?;
    let _ = file.close().await;
    Ok(())
}

/// Lists a shard directory.
fn list_shard_dir(dir: &Path) -> Result<Listing> {
    let listing = std::fs::read_dir(dir).map_err(|error| Error::io("list shard dir", dir, error))?;
    let mut entries = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|error| Error::io("list shard dir", dir, error))?;
        let is_directory = entry.file_type().map_err(|error| Error::io("list shard dir", dir, error))?.is_dir();
        entries.push((entry.path(), is_directory));
    }
    Ok(Listing::classify(entries))
}

async fn read_segment_header(path: &Path) -> Result<std::result::Result<SegmentHeader, segment::HeaderError>> {
    let file = DmaFile::open(path).await.map_err(|error| Error::glommio("open segment", path, error))?;
    let header = read_header(&file, path).await;
    let _ = file.close().await;
    header
}

/// Lists, checks and opens a shard's files (see the module doc): reads what
/// the [`RecoveryPlan`] asks for, and does what it decides.
pub(super) async fn recover(config: &ShardConfig) -> Result<Recovered> {
    let dir = &config.dir;
    std::fs::create_dir_all(dir).map_err(|error| Error::io("create shard dir", dir, error))?;
    settle_iopoll_probe(dir).await?;
    let mut plan = RecoveryPlan::new(list_shard_dir(dir)?);
    for removal in plan.leftovers() {
        let op = match removal.leftover {
            Leftover::Temporary => "remove temporary",
            Leftover::OrphanIndex => "remove orphan index",
            Leftover::UnfinishedSegment => "remove unfinished segment",
        };
        std::fs::remove_file(&removal.path).map_err(|error| Error::io(op, &removal.path, error))?;
    }

    while let Some(first_seq) = plan.header_needed() {
        let header = read_segment_header(&plan.listing().segments[&first_seq]).await?;
        plan.header(first_seq, header);
    }
    let roles = plan.settle_roles();
    for removal in plan.unfinished() {
        let path = &removal.path;
        tracing::warn!(path = %path.display(), "removing a segment whose creation did not finish");
        std::fs::remove_file(path).map_err(|error| Error::io("remove unfinished segment", path, error))?;
    }
    roles?;
    if plan.creates_first_segment() {
        // A brand-new shard: only then is there no segment at all.
        let (_file, path) = create_segment(config, 1).await?;
        plan.first_segment_created(path);
    }

    let mut sealed = VecDeque::new();
    for first_seq in plan.sealed_first_seqs().to_vec() {
        plan.start_segment(first_seq)?;
        let path = plan.listing().segments[&first_seq].clone();
        let index_path = dir.join(segment::index_file_name(first_seq));
        let summary =
            if plan.listing().indexes.contains_key(&first_seq) { Some(read_summary(&index_path).await) } else { None };
        let read = summary.as_ref().map(|summary| match summary {
            Ok((summary, _)) => IndexRead::Summary { segment_first_seq: summary.segment_first_seq },
            Err(error) => IndexRead::Unusable(error.to_string()),
        });
        let (summary, origins) = match (plan.index_decision(first_seq, read), summary) {
            (IndexDecision::Trust, Some(Ok(summary))) => summary,
            (IndexDecision::Trust, _) => unreachable!("the plan trusts only an index whose summary was read"),
            (IndexDecision::Rebuild(cause), _) => {
                if let RebuildCause::Unusable(error) = cause {
                    tracing::warn!(%error, "sealed segment index unusable; rebuilding it from the segment");
                }
                let file = open_dma(&path, "open segment").await?;
                let file_bytes =
                    file.file_size().await.map_err(|error| Error::glommio("stat segment", &path, error))?;
                let mut scanned = scan_segment(&file, &path, first_seq, file_bytes, config.index_caps).await?;
                let _ = file.close().await;
                if let Stop::Torn(reason) = &scanned.stop {
                    tracing::warn!(path = %path.display(), offset = scanned.end, %reason, "sealed segment ends early");
                }
                // Built oldest segment first, so that an index rebuilt by a
                // scan carries the watermarks of the segments before it, as
                // the original did.
                scanned.index.carry_watermarks(plan.origin_watermarks());
                write_index_file(dir, first_seq, &scanned.index.encode(scanned.raw_bytes)).await?;
                read_summary(&index_path).await?
            }
        };
        let watermarks = origins.iter().map(|(&key, origin)| (key, origin.watermark));
        plan.end_sealed(first_seq, Some(summary.next_seq), watermarks);
        let file_bytes = std::fs::metadata(&path).map_err(|error| Error::io("stat segment", &path, error))?.len();
        sealed.push_back(Sealed {
            first_seq,
            next_seq: summary.next_seq,
            path,
            index_path,
            summary,
            origin_seqs: super::own_origin_seqs(&origins),
            file_bytes,
            file: std::cell::RefCell::new(None),
            index: std::cell::RefCell::new(None),
            generation: 0,
            pinned: false,
            cold: super::ColdState::Unknown,
        });
    }

    let active_first_seq = plan.active_first_seq().expect("an active segment, found or created");
    plan.start_segment(active_first_seq)?;
    let active_path = plan.listing().segments[&active_first_seq].clone();
    if let Some(index_path) = plan.stale_active_index() {
        std::fs::remove_file(index_path).map_err(|error| Error::io("remove index", index_path, error))?;
    }
    let file = open_dma(&active_path, "open segment").await?;
    plan.active_header(&read_header(&file, &active_path).await?)?;
    let file_bytes = file.file_size().await.map_err(|error| Error::glommio("stat segment", &active_path, error))?;
    let capacity = plan.active_file(file_bytes).capacity_bytes;
    if capacity != file_bytes {
        file.truncate(capacity).await.map_err(|error| Error::glommio("extend segment", &active_path, error))?;
    }
    let scanned = scan_segment(&file, &active_path, active_first_seq, capacity, config.index_caps).await?;
    // Every block the scan accepted is durable (recovery scrubs the rest).
    let watermarks = scanned.index.origins().iter().map(|(&key, origin)| (key, origin.watermark));
    let scan_end = ScanEnd {
        blocks: scanned.index.blocks().len(),
        end: scanned.end,
        next_seq: scanned.index.next_seq(),
        stop: scanned.stop,
    };
    plan.end_active(Some(scan_end), watermarks);
    let window = plan.scrub_window().expect("the active segment was scanned");
    let zero = plan.tail(last_nonzero_byte(&file, &active_path, window).await?);
    if !zero.is_empty() {
        zero_tail(&file, &active_path, zero).await?;
    }
    if let Some(torn) = plan.torn_tail() {
        tracing::warn!(path = %torn.path.display(), offset = torn.offset, bytes = torn.bytes, reason = %torn.reason, "truncated a torn tail");
    }
    let tail_start = page_floor(scanned.end);
    let tail = if scanned.end > tail_start {
        file.read_at(tail_start, (scanned.end - tail_start) as usize)
            .await
            .map_err(|error| Error::glommio("read segment", &active_path, error))?
            .to_vec()
    } else {
        Vec::new()
    };
    let report = plan.report();
    let blocks = scanned.index.blocks().len();
    let active = Active {
        first_seq: active_first_seq,
        path: active_path,
        file: Rc::new(file),
        capacity,
        index: scanned.index,
        durable_blocks: blocks,
        durable_end: scanned.end,
        write_end: scanned.end,
        tail,
        raw_bytes_written: scanned.raw_bytes,
        raw_bytes_durable: scanned.raw_bytes,
    };
    Ok(Recovered { active, sealed, report, origin_watermarks: plan.origin_watermarks().clone() })
}

#[cfg(test)]
mod tests {
    //! Rebuilding a block's index entry from its payload (the recovery path).

    use super::*;
    use crate::codec::block::{BlockSpec, EntryRef};

    const HOSTS: [&str; 7] = ["web-1", "web-2", "web-3", "db-1", "db-2", "cache-1", "cache-2"];
    const LEVELS: [&str; 3] = ["info", "warn", "error"];

    /// The tags of entry `index`: repeating pairs, as real blocks have.
    fn tags_of(index: usize) -> [(&'static str, &'static str); 3] {
        [("host", HOSTS[index % HOSTS.len()]), ("level", LEVELS[index / 2 % LEVELS.len()]), ("app", "shop")]
    }

    /// A block of `count` entries (tag values go through `edit_raw` before
    /// encoding), as its header and bytes.
    fn block_of(count: usize, edit_raw: impl FnOnce(&mut Vec<u8>)) -> (BlockHeader, Vec<u8>) {
        let mut raw = Vec::new();
        for index in 0..count {
            let tags = tags_of(index);
            let entry = EntryRef { fields: &[], timestamp_ns: 0, tags: &tags, body: b"body" };
            block::encode_entry(&entry, 1_000 + index as i64, &mut raw);
        }
        edit_raw(&mut raw);
        let spec = BlockSpec {
            fields: false,
            first_seq: 1,
            entry_count: count as u32,
            min_ts: 1_000,
            max_ts: 1_000 + count as i64 - 1,
            origin: None,
        };
        let mut out = vec![0; block::encoded_bytes_max(raw.len())];
        let used = block::encode_block(&spec, &raw, &mut out);
        out.truncate(used);
        (block::parse_header(&out).unwrap(), out)
    }

    fn meta_of(header: &BlockHeader) -> BlockMeta {
        BlockMeta {
            offset: DATA_OFFSET,
            len: header.block_bytes() as u32,
            first_seq: header.first_seq,
            entry_count: header.entry_count,
            min_ts: header.min_ts,
            max_ts: header.max_ts,
            origin: None,
        }
    }

    #[test]
    fn last_non_zero_finds_the_last_set_byte_across_pages() {
        let mut bytes = vec![0u8; 3 * PAGE_BYTES + 100];
        assert_eq!(last_non_zero(&bytes), None);
        assert_eq!(last_non_zero(&[]), None);
        for position in [0, 1, PAGE_BYTES - 1, PAGE_BYTES, 2 * PAGE_BYTES + 7, bytes.len() - 1] {
            bytes[position] = 0x10;
            assert_eq!(last_non_zero(&bytes), Some(position));
        }
        bytes[PAGE_BYTES + 3] = 1;
        assert_eq!(last_non_zero(&bytes), Some(bytes.len() - 1), "the last one wins");
    }

    #[test]
    fn a_rebuilt_block_indexes_like_its_tags_one_by_one() {
        let (header, bytes) = block_of(500, |_| ());
        // Uncapped, and capped in the middle of the block's distinct pairs.
        for cap in [limits::INDEX_TAG_VALUES_PER_SEGMENT_MAX, 5] {
            let mut rebuilt = SegmentIndex::with_tag_values_max(1, cap);
            let raw_len = index_block(&mut rebuilt, DATA_OFFSET, &header, &bytes, &mut Vec::new()).unwrap();
            assert_eq!(raw_len, u64::from(header.raw_len));
            let mut expected = SegmentIndex::with_tag_values_max(1, cap);
            expected.push_block(meta_of(&header), (0..500).flat_map(tags_of));
            assert_eq!(rebuilt.saturated_from(), expected.saturated_from(), "cap {cap}");
            assert_eq!(rebuilt.blocks(), expected.blocks());
            let pairs = HOSTS.iter().map(|host| ("host", *host)).chain(LEVELS.iter().map(|level| ("level", *level)));
            for (key, value) in pairs.chain([("app", "shop"), ("host", "nowhere")]) {
                assert_eq!(rebuilt.postings(key, value), expected.postings(key, value), "cap {cap}: {key}={value}");
            }
        }
        let mut rebuilt = SegmentIndex::new(1);
        index_block(&mut rebuilt, DATA_OFFSET, &header, &bytes, &mut Vec::new()).unwrap();
        assert_eq!(rebuilt.postings("host", "web-3"), Some(&[0][..]));
        assert_eq!(rebuilt.saturated_from(), None);
    }

    #[test]
    fn a_rebuilt_block_has_the_written_tag_sets_and_word_filter() {
        // Entries as the writer gets them: tags in their order, LogHub-like bodies.
        let bodies: Vec<String> = (0..300)
            .map(|index| {
                format!(
                    "{} Received block blk_{} of size {} from /10.251.{}.{}",
                    index % 7,
                    index * 31,
                    index * 977,
                    index % 13,
                    index % 5
                )
            })
            .collect();
        let tags: Vec<[(&str, &str); 3]> = (0..300).map(tags_of).collect();
        let mut raw = Vec::new();
        let mut terms = BlockTerms::with_words();
        for (index, body) in bodies.iter().enumerate() {
            let entry = EntryRef { fields: &[], timestamp_ns: 0, tags: &tags[index], body: body.as_bytes() };
            block::encode_entry(&entry, 1_000 + index as i64, &mut raw);
            // What Shard::append_replicated_parts gives each pending block.
            terms.add_entry(entry.tags.iter().copied());
            terms.add_body(entry.body);
        }
        let spec =
            BlockSpec { fields: false, first_seq: 1, entry_count: 300, min_ts: 1_000, max_ts: 1_299, origin: None };
        let mut bytes = vec![0; block::encoded_bytes_max(raw.len())];
        let used = block::encode_block(&spec, &raw, &mut bytes);
        bytes.truncate(used);
        let header = block::parse_header(&bytes).unwrap();

        for caps in [(65_536, 1 << 20, 1 << 23), (65_536, 10, 1 << 23), (5, 1 << 20, 1 << 23)] {
            let mut written = SegmentIndex::with_caps(1, caps.0, caps.1, caps.2);
            written.push_block_terms(meta_of(&header), &terms);
            let mut rebuilt = SegmentIndex::with_caps(1, caps.0, caps.1, caps.2);
            index_block(&mut rebuilt, DATA_OFFSET, &header, &bytes, &mut Vec::new()).unwrap();
            let raw_len = u64::from(header.raw_len);
            assert!(rebuilt.encode(raw_len) == written.encode(raw_len), "caps {caps:?}: the rebuilt index differs");
        }
        let mut rebuilt = SegmentIndex::new(1);
        index_block(&mut rebuilt, DATA_OFFSET, &header, &bytes, &mut Vec::new()).unwrap();
        let filters = rebuilt.word_filters().unwrap();
        // Words of three bytes or more: shorter ones ("10") are left out.
        for word in ["received", "BLK_31", "251"] {
            assert!(filters.may_contain_all(0, &[crate::index::words::word_hash(word.as_bytes())]), "{word}");
        }
        // Distinct sets: 7 hosts x 3 levels, in a cycle of 42 entries.
        assert_eq!(rebuilt.candidates(&[("host", "web-1"), ("level", "warn")], 0, i64::MAX), [0]);
    }

    #[test]
    fn a_tag_that_is_not_utf8_fails_the_block_however_often_it_repeats() {
        // "cache-1" becomes "cache\xff1" in every entry that carries it.
        let (header, bytes) = block_of(100, |raw| {
            let needle = b"cache-1";
            let mut at = 0;
            while let Some(found) = raw[at..].windows(needle.len()).position(|window| window == needle) {
                raw[at + found + 5] = 0xff;
                at += found + needle.len();
            }
        });
        let mut index = SegmentIndex::new(1);
        let error = index_block(&mut index, DATA_OFFSET, &header, &bytes, &mut Vec::new()).unwrap_err();
        assert!(error.to_string().contains("tag value is not UTF-8"), "{error}");
        assert!(index.blocks().is_empty(), "a failed block is not indexed");
    }
}
