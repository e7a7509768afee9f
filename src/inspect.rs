//! `wormdb inspect DIR`: a read-only, human-readable dump of what is on disk.
//!
//! `DIR` is a data directory (holding `shard-NNN/` directories) or a single
//! shard directory (holding `*.seg` files). For each shard, inspect reads
//! what recovery reads and feeds it to recovery's own
//! [`RecoveryPlan`], so every "the next open ..." it prints (which segment
//! is active, which index is rebuilt, which file is deleted, where the log
//! is cut, what refuses the shard) is the decision recovery makes, not a
//! copy of it. It lists the segments in seq order with their header page,
//! then:
//!
//! * for a **sealed** segment (any but the newest), the summary of the index
//!   file beside it and whether the whole file verifies
//!   ([`SegmentIndex::decode`]), or a scan if that index is not whole or
//!   recovery would rebuild it;
//! * for the **active** segment (the newest one), a scan of its blocks from
//!   [`DATA_OFFSET`] with the recovery scanner ([`scan_window`]) and the same
//!   checks recovery makes (crc, seq continuity, payload decoding), over
//!   the file rounded up to whole pages as recovery rounds it, so it shows
//!   exactly where the next open will end the log, whether that end is
//!   clean or a torn tail (`docs/format.md` section 4), and the non-zero
//!   bytes in what recovery scrubs after it;
//! * with `--blocks`, one line per block of every segment (sealed segments
//!   are then scanned too, and their index is checked against the scan);
//! * leftovers: `*.tmp` files, an index without its segment, unfinished
//!   segments, unknown files, each with what recovery will do about it;
//! * the shard's **origin watermarks** (highest archived origin seq per
//!   origin node and shard of replicated entries) as the next open rebuilds
//!   them: from the origin tables of the sealed indexes it would use, and
//!   from a scan where it would scan (the active segment, indexes to
//!   rebuild). Each usable index also lists its origin table.
//!
//! # Read-only
//!
//! Every file is opened read-only with plain `std::fs` (no glommio, no
//! O_DIRECT, no executor), and nothing is ever created, written, truncated
//! or removed: inspect says what recovery *would* do and does none of it. It
//! may run beside a live server, but the active segment can then change
//! while it is read, so a block being written may show up as a torn tail.
//!
//! # Bounded memory
//!
//! Segments are read in windows of 8 MiB, never whole: a window holds the
//! largest block, so the scan always advances. An index file is read whole
//! to verify it, only after its size was checked against
//! `INDEX_FILE_BYTES_MAX`.
//!
//! # Errors
//!
//! A `DIR` that cannot be listed, or that holds neither shards nor segment
//! files, is an `Err` naming the path. A file that cannot be read later on
//! is reported where it appears, the dump goes on, and the call returns an
//! `Err` listing those files at the end. Damaged data (bad checksums, torn
//! tails, gaps) is not an error of inspect: it is what inspect reports,
//! under each shard's `problems`.
//!
//! [`scan_window`]: crate::shard::scan::scan_window

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::codec::block::{self, BlockError, BlockHeader, Codec, EntryView};
use crate::index::{self, IndexSummary, OriginKey, OriginSummary, SegmentIndex};
use crate::limits;
use crate::shard::plan::{
    self, IndexDecision, IndexRead, Leftover, Listing, PlanError, RebuildCause, RecoveryPlan, Role, ScanEnd,
};
use crate::shard::scan::{self, Step, Stop};
use crate::shard::segment::{self, HeaderError, SegmentHeader, DATA_OFFSET};
use crate::shard::PAGE_BYTES;

/// Writes one line of output; a failed write (say, a closed pipe) ends the dump.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        writeln!($out, $($arg)*).map_err(OutputError)
    };
}

/// Writing the dump failed: it ends there.
#[derive(Debug)]
struct OutputError(std::io::Error);

/// Prints what is in `dir` (a data dir or one shard dir) to `out`.
///
/// Strictly read-only: no file or directory is created, modified, truncated
/// or removed. Returns `Err` (with the path) when `dir` cannot be listed or
/// holds neither `shard-NNN` directories nor segment files, when writing to
/// `out` fails, or, after the whole dump, when some file could not be read.
/// Corrupt data is reported in the output and is not an error.
pub fn inspect(dir: &Path, out: &mut dyn Write, show_blocks: bool) -> Result<(), String> {
    let layout = read_layout(dir)?;
    let mut inspector = Inspector { out, show_blocks, window: Vec::new(), unreadable: Vec::new() };
    match inspector.dump(dir, layout) {
        Ok(()) => {}
        // The reader went away (`inspect DIR | head`): nothing is left to report.
        Err(OutputError(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        Err(OutputError(error)) => return Err(format!("cannot write the output: {error}")),
    }
    if inspector.unreadable.is_empty() {
        Ok(())
    } else {
        Err(format!("{} file(s) could not be read: {}", inspector.unreadable.len(), inspector.unreadable.join("; ")))
    }
}

/// What `DIR` is.
enum Layout {
    /// Holds `shard-NNN` directories, sorted by shard number, and maybe other entries.
    DataDir { shards: Vec<(u32, PathBuf)>, other: Vec<PathBuf> },
    /// Holds segment files itself.
    ShardDir,
}

fn read_layout(dir: &Path) -> Result<Layout, String> {
    let mut shards = Vec::new();
    let mut other = Vec::new();
    let mut has_shard_files = false;
    for path in list_dir(dir)? {
        match shard_number(&path) {
            Some(shard) if path.is_dir() => shards.push((shard, path)),
            _ => {
                has_shard_files |= segment::classify(&path).is_some();
                other.push(path);
            }
        }
    }
    if !shards.is_empty() {
        shards.sort();
        Ok(Layout::DataDir { shards, other })
    } else if has_shard_files {
        Ok(Layout::ShardDir)
    } else {
        Err(format!(
            "{}: neither a data dir (no shard-NNN directories) nor a shard dir (no segment files)",
            dir.display()
        ))
    }
}

/// The entries of `dir`, sorted by name.
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let listing = std::fs::read_dir(dir).map_err(|error| format!("cannot list {}: {error}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in listing {
        paths.push(entry.map_err(|error| format!("cannot list {}: {error}", dir.display()))?.path());
    }
    paths.sort();
    Ok(paths)
}

/// `Some(n)` for a directory named `shard-n` (decimal digits).
fn shard_number(path: &Path) -> Option<u32> {
    let digits = path.file_name()?.to_str()?.strip_prefix("shard-")?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned())
}

/// The files of one shard directory, by kind, as recovery sorts them.
fn shard_files(dir: &Path) -> Result<Listing, String> {
    let paths = list_dir(dir)?;
    Ok(Listing::classify(paths.into_iter().map(|path| {
        let is_directory = path.is_dir();
        (path, is_directory)
    })))
}

/// A segment file and its header page, read before roles are assigned.
struct SegmentFile {
    first_seq: u64,
    path: PathBuf,
    file_bytes: u64,
    header: Result<SegmentHeader, HeaderError>,
}

fn read_segment_header(first_seq: u64, path: &Path) -> Result<SegmentFile, String> {
    let file = File::open(path).map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    let file_bytes = file.metadata().map_err(|error| format!("cannot stat {}: {error}", path.display()))?.len();
    let mut page = vec![0u8; file_bytes.min(PAGE_BYTES as u64) as usize];
    file.read_exact_at(&mut page, 0).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    Ok(SegmentFile { first_seq, path: path.to_path_buf(), file_bytes, header: SegmentHeader::decode(&page) })
}

/// Counts for a shard or a whole data dir.
#[derive(Default)]
struct ShardTotals {
    segments: u64,
    entries: u64,
    disk_bytes: u64,
    problems: u64,
}

/// What a scan of one segment found.
#[derive(Debug)]
struct Scan {
    blocks: u64,
    entries: u64,
    first_seq: u64,
    /// The seq the next block would have to start with.
    next_seq: u64,
    time_range: Option<(i64, i64)>,
    raw_bytes: u64,
    /// Payload bytes as stored, without block headers.
    stored_bytes: u64,
    lz4_blocks: u64,
    zstd_blocks: u64,
    /// Replicated blocks by origin (node, shard): first origin seq, next origin seq, blocks.
    origins: BTreeMap<(u32, u32), (u64, u64, u64)>,
    /// Offset just past the last valid block: the logical end.
    end: u64,
    stop: Stop,
    /// Non-zero bytes after `end`, when they were looked for.
    trailing: Option<Trailing>,
}

impl Scan {
    fn new(first_seq: u64) -> Self {
        Scan {
            blocks: 0,
            entries: 0,
            first_seq,
            next_seq: first_seq,
            time_range: None,
            raw_bytes: 0,
            stored_bytes: 0,
            lz4_blocks: 0,
            zstd_blocks: 0,
            origins: BTreeMap::new(),
            end: DATA_OFFSET,
            stop: Stop::Clean,
            trailing: None,
        }
    }

    fn add(&mut self, header: &BlockHeader) {
        self.blocks += 1;
        self.entries += u64::from(header.entry_count);
        self.next_seq = header.next_seq();
        self.time_range = Some(match self.time_range {
            None => (header.min_ts, header.max_ts),
            Some((min_ts, max_ts)) => (min_ts.min(header.min_ts), max_ts.max(header.max_ts)),
        });
        self.raw_bytes += u64::from(header.raw_len);
        self.stored_bytes += u64::from(header.stored_len);
        match header.codec {
            Codec::Lz4 => self.lz4_blocks += 1,
            Codec::Zstd => self.zstd_blocks += 1,
            Codec::None => {}
        }
        if let Some(origin) = header.origin {
            let next = origin.first_seq + u64::from(header.entry_count);
            let span = self.origins.entry((origin.node, origin.shard)).or_insert((origin.first_seq, next, 0));
            span.0 = span.0.min(origin.first_seq);
            span.1 = span.1.max(next);
            span.2 += 1;
        }
    }
}

/// Checks a block's payload the way recovery does before it accepts the
/// block: it decompresses to exactly `entry_count` entries whose fields and
/// tags parse. A block recovery would refuse must end the scan here too.
fn check_payload(header: &BlockHeader, block_bytes: &[u8], scratch: &mut Vec<u8>) -> Result<(), BlockError> {
    block::decompress_payload(header, block_bytes, scratch)?;
    block::for_each_entry(header, scratch, |_, entry| EntryView::parse(entry)?.for_each_tag(|_, _| ()))
}

/// Reads `bytes.len()` bytes of `file` at `offset`. Bytes past the end of
/// the file (of `real_bytes`) read as zeros: recovery rounds an active
/// segment cut short to whole pages before it scans it, and inspect scans
/// what recovery would.
fn read_padded(file: &File, path: &Path, bytes: &mut [u8], offset: u64, real_bytes: u64) -> Result<(), ScanError> {
    let present = real_bytes.saturating_sub(offset).min(bytes.len() as u64) as usize;
    file.read_exact_at(&mut bytes[..present], offset)
        .map_err(|error| ScanError::Read(format!("cannot read {}: {error}", path.display())))?;
    bytes[present..].fill(0);
    Ok(())
}

fn real_bytes_of(file: &File, path: &Path) -> Result<u64, ScanError> {
    let metadata =
        file.metadata().map_err(|error| ScanError::Read(format!("cannot stat {}: {error}", path.display())))?;
    Ok(metadata.len())
}

/// Scans the first `file_bytes` bytes of the segment in `file` (whose first
/// entry is `first_seq`; bytes past the end of the file read as zeros) from
/// [`DATA_OFFSET`], reading `window.len()` bytes at a time, and calls
/// `on_block` for each accepted block in order. The `Err` of `on_block`
/// ends the scan and is returned; so is a read error.
fn scan_segment(
    file: &File,
    path: &Path,
    file_bytes: u64,
    first_seq: u64,
    window: &mut [u8],
    mut on_block: impl FnMut(u64, &BlockHeader) -> Result<(), ScanError>,
) -> Result<Scan, ScanError> {
    let mut scan = Scan::new(first_seq);
    let mut next_seq = first_seq;
    let mut offset = DATA_OFFSET;
    let mut scratch = Vec::new();
    let mut accepted = Vec::new();
    let real_bytes = real_bytes_of(file, path)?;
    loop {
        let length = file_bytes.saturating_sub(offset).min(window.len() as u64) as usize;
        if length == 0 {
            scan.end = offset;
            scan.stop = Stop::Clean;
            return Ok(scan);
        }
        let bytes = &mut window[..length];
        read_padded(file, path, bytes, offset, real_bytes)?;
        let at_eof = offset + length as u64 >= file_bytes;
        accepted.clear();
        let step = scan::scan_window(bytes, offset, &mut next_seq, at_eof, |block_offset, header, block_bytes| {
            check_payload(header, block_bytes, &mut scratch)?;
            accepted.push((block_offset, *header));
            Ok(())
        });
        for (block_offset, header) in &accepted {
            scan.add(header);
            on_block(*block_offset, header)?;
        }
        match step {
            Step::NeedMore { offset: next } if next > offset => offset = next,
            Step::NeedMore { offset: next } => {
                // Only a window smaller than the largest block gets here.
                scan.end = next;
                scan.stop = Stop::Torn(format!("block larger than the {}-byte read window", window.len()));
                return Ok(scan);
            }
            Step::End { offset: end, stop } => {
                debug_assert_eq!(next_seq, scan.next_seq);
                scan.end = end;
                scan.stop = stop;
                return Ok(scan);
            }
        }
    }
}

/// Non-zero bytes found after the end of a log.
#[derive(Debug, PartialEq, Eq)]
struct Trailing {
    /// Bytes looked at: those recovery checks and zeroes after the end
    /// ([`plan::scrub_window`]).
    checked_bytes: u64,
    /// How many of them are not zero.
    nonzero_bytes: u64,
    /// Offset of the last one.
    last_nonzero: Option<u64>,
}

/// Looks for non-zero bytes after a log's `end` in a segment scanned over
/// `file_bytes` bytes, where recovery looks for them.
fn trailing_bytes(
    file: &File,
    path: &Path,
    end: u64,
    file_bytes: u64,
    window: &mut [u8],
) -> Result<Trailing, ScanError> {
    let scrub = plan::scrub_window(end, file_bytes);
    let real_bytes = real_bytes_of(file, path)?;
    let mut trailing = Trailing { checked_bytes: scrub.end - scrub.start, nonzero_bytes: 0, last_nonzero: None };
    let mut offset = scrub.start;
    while offset < scrub.end {
        let length = (scrub.end - offset).min(window.len() as u64) as usize;
        let bytes = &mut window[..length];
        read_padded(file, path, bytes, offset, real_bytes)?;
        trailing.nonzero_bytes += bytes.iter().filter(|&&byte| byte != 0).count() as u64;
        if let Some(last) = bytes.iter().rposition(|&byte| byte != 0) {
            trailing.last_nonzero = Some(offset + last as u64);
        }
        offset += length as u64;
    }
    Ok(trailing)
}

/// What an index file holds, as far as it decodes.
struct IndexCheck {
    file_bytes: u64,
    summary: Result<IndexSummary, String>,
    /// The origin table, which recovery reads with the header.
    origins: Result<BTreeMap<OriginKey, OriginSummary>, String>,
    /// Whether the whole file decodes ([`SegmentIndex::decode`]).
    verified: Result<(), String>,
}

fn check_index(path: &Path) -> Result<IndexCheck, String> {
    let file = File::open(path).map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    let file_bytes = file.metadata().map_err(|error| format!("cannot stat {}: {error}", path.display()))?.len();
    let read = |bytes: &mut [u8]| {
        file.read_exact_at(bytes, 0).map_err(|error| format!("cannot read {}: {error}", path.display()))
    };
    if file_bytes > limits::INDEX_FILE_BYTES_MAX as u64 {
        // Too large to read whole (SegmentIndex::decode would refuse it
        // anyway); its header alone still says what it claims.
        let limit = limits::LimitExceeded {
            name: "INDEX_FILE_BYTES_MAX",
            what: "index file bytes",
            actual: file_bytes,
            limit: limits::INDEX_FILE_BYTES_MAX as u64,
        };
        let mut header = vec![0u8; index::HEADER_BYTES];
        read(&mut header)?;
        let summary = index::decode_summary(&header).map_err(|error| error.to_string());
        // The summary bounds the origin table by INDEX_ORIGINS_MAX records.
        let origins = match &summary {
            Ok(summary) => {
                let mut start = vec![0u8; summary.origin_table_end()];
                read(&mut start)?;
                index::decode_origin_table(&start, summary).map_err(|error| error.to_string())
            }
            Err(error) => Err(error.clone()),
        };
        return Ok(IndexCheck { file_bytes, summary, origins, verified: Err(limit.to_string()) });
    }
    let mut bytes = vec![0u8; file_bytes as usize];
    read(&mut bytes)?;
    let summary = index::decode_summary(&bytes).map_err(|error| error.to_string());
    let origins = match &summary {
        Ok(summary) => index::decode_origin_table(&bytes, summary).map_err(|error| error.to_string()),
        Err(error) => Err(error.clone()),
    };
    Ok(IndexCheck {
        file_bytes,
        summary,
        origins,
        verified: SegmentIndex::decode(&bytes).map(|_| ()).map_err(|error| error.to_string()),
    })
}

struct Inspector<'a> {
    out: &'a mut dyn Write,
    show_blocks: bool,
    /// The read buffer, [`limits::SCAN_WINDOW_BYTES`] once allocated; shared by every read.
    window: Vec<u8>,
    /// Files that could not be read, with the error.
    unreadable: Vec<String>,
}

impl Inspector<'_> {
    /// Dumps the whole `DIR`. An `Err` is an output failure only.
    fn dump(&mut self, dir: &Path, layout: Layout) -> Result<(), OutputError> {
        match layout {
            Layout::ShardDir => {
                self.shard(dir)?;
            }
            Layout::DataDir { shards, other } => {
                let shard_count = count_text(shards.len() as u64, "shard");
                say!(self.out, "data dir {}: {shard_count}", dir.display())?;
                for path in &other {
                    say!(self.out, "  other entry: {}", file_name(path))?;
                }
                let mut totals = ShardTotals::default();
                for (_, path) in &shards {
                    say!(self.out, "")?;
                    let shard = self.shard(path)?;
                    totals.segments += shard.segments;
                    totals.entries += shard.entries;
                    totals.disk_bytes += shard.disk_bytes;
                    totals.problems += shard.problems;
                }
                say!(self.out, "")?;
                say!(
                    self.out,
                    "total: {shard_count}, {}, {}, {} on disk, {}",
                    count_text(totals.segments, "segment"),
                    entries_text(totals.entries),
                    size_text(totals.disk_bytes),
                    count_text(totals.problems, "problem"),
                )?;
            }
        }
        Ok(())
    }

    /// Records an unreadable file and says so where it would have appeared.
    fn unreadable(&mut self, indent: &str, error: String) -> Result<(), OutputError> {
        say!(self.out, "{indent}error: {error}")?;
        self.unreadable.push(error);
        Ok(())
    }

    /// Dumps one shard directory. An `Err` is an output failure only.
    fn shard(&mut self, dir: &Path) -> Result<ShardTotals, OutputError> {
        let shard_id = shard_number(dir);
        say!(self.out, "{} ({})", file_name(dir), dir.display())?;
        let mut totals = ShardTotals::default();
        let listing = match shard_files(dir) {
            Ok(listing) => listing,
            Err(error) => {
                self.unreadable("  ", error)?;
                return Ok(totals);
            }
        };
        let mut problems = Vec::new();
        // Recovery's decisions, fed what inspect reads; inspect shows them.
        let mut plan = RecoveryPlan::new(listing);

        // Every header is read, to be shown; the plan takes the ones it needs.
        let mut segments = Vec::new();
        for (first_seq, path) in plan.listing().segments.clone() {
            match read_segment_header(first_seq, &path) {
                Ok(segment) => {
                    plan.header(first_seq, segment.header.clone());
                    segments.push(segment);
                }
                Err(error) => {
                    plan.header_unreadable(first_seq);
                    self.unreadable("  ", error)?;
                    problems.push(format!("{}: unreadable", file_name(&path)));
                }
            }
        }
        // A bad header of the active segment is reported with that segment.
        let _ = plan.settle_roles();
        if plan.creates_first_segment() {
            let first = segment::segment_file_name(1);
            say!(self.out, "  no segment with a written header: the next open creates {first}")?;
        }

        let mut shard_first_seq = None;
        let mut role_counts = [0u64; 3];
        for segment in &segments {
            let role = plan.role(segment.first_seq).expect("a segment whose header was read has a role");
            role_counts[match role {
                Role::Sealed => 0,
                Role::Active => 1,
                Role::Unfinished => 2,
            }] += 1;
            totals.disk_bytes += segment.file_bytes;
            if role != Role::Unfinished {
                if let Err(PlanError::Gap { expected, .. }) = plan.start_segment(segment.first_seq) {
                    problems.push(format!(
                        "{} starts at seq {}, but the segment before it ends before seq {expected}: the shard will \
                         not open",
                        file_name(&segment.path),
                        segment.first_seq
                    ));
                }
                shard_first_seq.get_or_insert(segment.first_seq);
            }
            let index_path = plan.listing().indexes.get(&segment.first_seq).cloned();
            if let Some(path) = &index_path {
                totals.disk_bytes += std::fs::metadata(path).map_or(0, |metadata| metadata.len());
            }
            self.segment(&mut plan, segment, role, index_path.as_deref(), shard_id, &mut problems)?;
        }

        // Leftovers.
        let mut leftovers = Vec::new();
        for removal in plan.leftovers() {
            let what = match removal.leftover {
                Leftover::Temporary => "temporary file of an interrupted write",
                Leftover::OrphanIndex => "index without its segment (retention was interrupted)",
                Leftover::UnfinishedSegment => "segment whose creation did not finish",
            };
            leftovers.push(format!("{}: {what}; the next open deletes it", file_name(&removal.path)));
        }
        for path in &plan.listing().unknown {
            let kind = if path.is_dir() { "directory" } else { "file" };
            leftovers.push(format!("{}: unknown {kind}, ignored by wormdb", file_name(path)));
        }
        if leftovers.is_empty() {
            say!(self.out, "  leftovers: none")?;
        } else {
            say!(self.out, "  leftovers:")?;
            for leftover in &leftovers {
                say!(self.out, "    {leftover}")?;
            }
        }

        totals.segments = segments.len() as u64;
        let seqs = match (shard_first_seq, plan.next_seq()) {
            (Some(first), Some(next)) => {
                totals.entries = next.saturating_sub(first);
                format!("{}, next seq {next}", seq_range(first, next))
            }
            _ => "seqs unknown".to_string(),
        };
        let [sealed, active_count, unfinished] = role_counts;
        let unfinished = if unfinished > 0 { format!(", {unfinished} unfinished") } else { String::new() };
        say!(
            self.out,
            "  summary: {} ({sealed} sealed, {active_count} active{unfinished}), {seqs}, {} on disk",
            count_text(segments.len() as u64, "segment"),
            size_text(totals.disk_bytes)
        )?;
        let watermarks = plan.origin_watermarks();
        if watermarks.is_empty() {
            say!(self.out, "  origin watermarks: none (no replicated entries)")?;
        } else {
            say!(self.out, "  origin watermarks (highest archived origin seq, as the next open rebuilds them):")?;
            for ((node, shard), watermark) in watermarks {
                say!(self.out, "    node {node} shard {shard}: {watermark}")?;
            }
        }
        totals.problems = problems.len() as u64;
        if problems.is_empty() {
            say!(self.out, "  problems: none")?;
        } else {
            say!(self.out, "  problems: {}", problems.len())?;
            for problem in &problems {
                say!(self.out, "    {problem}")?;
            }
        }
        Ok(totals)
    }

    /// Dumps one segment, and feeds the plan (a kept segment was started
    /// by the caller) what recovery would read of it. An `Err` is an output
    /// failure only.
    fn segment(
        &mut self,
        plan: &mut RecoveryPlan,
        segment: &SegmentFile,
        role: Role,
        index_path: Option<&Path>,
        shard_id: Option<u32>,
        problems: &mut Vec<String>,
    ) -> Result<(), OutputError> {
        let name = file_name(&segment.path);
        let role_text = match role {
            Role::Sealed => "sealed",
            Role::Active => "active",
            Role::Unfinished => "unfinished (its header was never written; the next open deletes it)",
        };
        say!(self.out, "  {name}: {}, {role_text}", size_text(segment.file_bytes))?;
        if role == Role::Unfinished {
            if let Some(path) = index_path {
                say!(self.out, "    index: {} (left beside an unfinished segment)", file_name(path))?;
            }
            return Ok(());
        }
        // Recovery checks the active segment's header only; the others' are shown.
        let refused = role == Role::Active && plan.active_header(&segment.header).is_err();
        let consequence = if refused { ": the shard will not open" } else { "" };
        match &segment.header {
            Ok(header) => {
                // Which codecs the blocks use, as far as the header tells:
                // a scan (--blocks, or the active segment) counts them.
                let codecs = if header.cold {
                    "cold: rewritten with zstd (blocks zstd would not shrink kept as written)"
                } else {
                    "lz4 as written"
                };
                say!(
                    self.out,
                    "    header: first seq {}, shard {}, node {}, capacity {}, created {}, {codecs}",
                    header.first_seq,
                    header.shard,
                    header.node,
                    size_text(header.capacity_bytes),
                    time_text(i128::from(header.created_unix_ns))
                )?;
                if header.first_seq != segment.first_seq {
                    problems.push(format!(
                        "{name}: header says first seq {}, the file name says {}{consequence}",
                        header.first_seq, segment.first_seq
                    ));
                }
                if let Some(shard) = shard_id.filter(|&shard| shard != header.shard) {
                    problems
                        .push(format!("{name}: header says shard {}, the directory is shard {shard}", header.shard));
                }
                if header.capacity_bytes != segment.file_bytes {
                    problems.push(format!(
                        "{name}: file is {} bytes, the header's capacity is {}",
                        segment.file_bytes, header.capacity_bytes
                    ));
                }
            }
            Err(error) => {
                say!(self.out, "    header: invalid: {error}")?;
                problems.push(format!("{name}: invalid segment header ({error}){consequence}"));
            }
        }

        // A sealed segment is trusted through its index; the active one is scanned.
        let mut summary = None;
        let mut index_verified = false;
        let mut read = None;
        if let Some(path) = index_path {
            let index_name = file_name(path);
            match check_index(path) {
                Err(error) => {
                    self.unreadable("    ", error.clone())?;
                    read = Some(IndexRead::Unusable(error));
                }
                Ok(_) if plan.stale_active_index() == Some(path) => {
                    say!(
                        self.out,
                        "    index: {index_name} beside the active segment (a crash between sealing it and \
                         creating the next one); the next open deletes it and appends here again"
                    )?;
                }
                Ok(check) => {
                    let usable = self.index(&index_name, &check, problems)?;
                    index_verified = check.verified.is_ok();
                    read = Some(match &usable {
                        Ok((summary, _)) => IndexRead::Summary { segment_first_seq: summary.segment_first_seq },
                        Err(error) => IndexRead::Unusable(error.clone()),
                    });
                    summary = usable.ok();
                }
            }
        }
        let decision = (role == Role::Sealed).then(|| plan.index_decision(segment.first_seq, read));
        match &decision {
            Some(IndexDecision::Rebuild(RebuildCause::Missing)) => {
                say!(self.out, "    index: missing; the next open rebuilds it by scanning the segment")?;
            }
            Some(IndexDecision::Rebuild(RebuildCause::OtherSegment(other))) => {
                let index_name = index_path.map(file_name).unwrap_or_default();
                problems.push(format!(
                    "{index_name}: belongs to a segment starting at seq {other}, not {name}; the next open rebuilds it"
                ));
            }
            _ => {}
        }
        // What recovery takes from the index, when it trusts it.
        let summary = summary.filter(|_| decision == Some(IndexDecision::Trust));
        let trusted_next_seq = summary.as_ref().map(|(summary, _)| summary.next_seq);
        let trusted_watermarks = summary.as_ref().map(|(_, origins)| table_watermarks(origins)).unwrap_or_default();

        // Scan a sealed segment too when its index is not whole or recovery
        // would rebuild it, to show what it holds.
        let rebuilds = matches!(decision, Some(IndexDecision::Rebuild(_)));
        let scan_needed = role == Role::Active || self.show_blocks || !index_verified || rebuilds;
        if !scan_needed {
            plan.end_sealed(segment.first_seq, trusted_next_seq, trusted_watermarks);
            return Ok(());
        }
        // The active segment is scanned as recovery scans it: rounded up to whole pages.
        let scan_bytes = match role {
            Role::Active => plan.active_file(segment.file_bytes).capacity_bytes,
            _ => segment.file_bytes,
        };
        let check_tail = role == Role::Active;
        let scan = match self.scan(segment, scan_bytes, check_tail) {
            Ok(scan) => scan,
            Err(ScanError::Output(error)) => return Err(error),
            Err(ScanError::Read(error)) => {
                self.unreadable("    ", error)?;
                match role {
                    Role::Active => plan.end_active(None, []),
                    _ => plan.end_sealed(segment.first_seq, trusted_next_seq, trusted_watermarks),
                }
                return Ok(());
            }
        };
        let scan_watermarks: BTreeMap<OriginKey, u64> =
            scan.origins.iter().map(|(&key, &(_, next, _))| (key, next - 1)).collect();
        if role == Role::Active {
            let scan_end = ScanEnd {
                blocks: scan.blocks as usize,
                end: scan.end,
                next_seq: scan.next_seq,
                stop: scan.stop.clone(),
            };
            plan.end_active(Some(scan_end), scan_watermarks);
            let trailing = scan.trailing.as_ref().expect("the active segment's tail was checked");
            debug_assert_eq!(plan.scrub_window().map(|window| window.end - window.start), Some(trailing.checked_bytes));
            plan.tail(trailing.last_nonzero);
            let follow = trailing_text(trailing);
            match (plan.torn_tail(), &scan.stop) {
                (None, _) => say!(self.out, "    end: clean at offset {}; {follow}", scan.end)?,
                (Some(stale), Stop::Clean) => {
                    say!(
                        self.out,
                        "    end: clean at offset {}, but {follow}: stale bytes, which the next open zeroes",
                        stale.offset
                    )?;
                    problems.push(format!(
                        "{name}: {} stale non-zero bytes after the clean end at offset {} (the last at offset {}); \
                         the next open zeroes them",
                        trailing.nonzero_bytes,
                        stale.offset,
                        stale.offset + stale.bytes - 1
                    ));
                }
                (Some(torn), Stop::Torn(_)) => {
                    say!(
                        self.out,
                        "    end: torn tail at offset {}: {}; {follow}; the next open cuts the log here and zeroes \
                         them",
                        torn.offset,
                        torn.reason
                    )?;
                    problems.push(format!(
                        "{name}: torn tail at offset {}: {} (the next open cuts the log there)",
                        torn.offset, torn.reason
                    ));
                }
            }
            return Ok(());
        }

        match (&scan.stop, &scan.trailing) {
            (Stop::Torn(reason), Some(trailing)) => {
                say!(self.out, "    end: torn tail at offset {}: {reason}; {}", scan.end, trailing_text(trailing))?;
            }
            _ => say!(self.out, "    end: clean at offset {}", scan.end)?,
        }
        if let Some((summary, _)) = &summary {
            let scan_data_end = if scan.blocks == 0 { 0 } else { scan.end };
            let agrees = u64::from(summary.block_count) == scan.blocks
                && summary.next_seq == scan.next_seq
                && summary.data_end == scan_data_end
                && summary.raw_bytes == scan.raw_bytes;
            if agrees {
                say!(self.out, "    index agrees with the scan")?;
            } else {
                problems.push(format!(
                    "{name}: the index says {} blocks, next seq {}, data end {}, raw {} bytes; the scan found \
                     {} blocks, next seq {}, data end {scan_data_end}, raw {} bytes",
                    summary.block_count,
                    summary.next_seq,
                    summary.data_end,
                    summary.raw_bytes,
                    scan.blocks,
                    scan.next_seq,
                    scan.raw_bytes
                ));
            }
        }

        if let Stop::Torn(reason) = &scan.stop {
            problems.push(format!("{name}: sealed segment ends early at offset {}: {reason}", scan.end));
        }
        match decision {
            Some(IndexDecision::Trust) => plan.end_sealed(segment.first_seq, trusted_next_seq, trusted_watermarks),
            // Recovery scans this segment to rebuild its index.
            _ => plan.end_sealed(segment.first_seq, Some(scan.next_seq), scan_watermarks),
        }
        Ok(())
    }

    /// Prints an index file's summary, origin table and verification.
    /// Returns the summary and the origin table (the part of the file
    /// recovery reads), or why they do not decode.
    #[allow(clippy::type_complexity)]
    fn index(
        &mut self,
        index_name: &str,
        check: &IndexCheck,
        problems: &mut Vec<String>,
    ) -> Result<Result<(IndexSummary, BTreeMap<OriginKey, OriginSummary>), String>, OutputError> {
        let verified = match &check.verified {
            Ok(()) => "verifies".to_string(),
            Err(error) => format!("does NOT verify: {error}"),
        };
        say!(self.out, "    index: {index_name}, {}, {verified}", size_text(check.file_bytes))?;
        if let Err(error) = &check.verified {
            problems.push(format!("{index_name}: does not verify: {error}"));
        }
        let summary = match &check.summary {
            Ok(summary) => summary,
            Err(error) => {
                say!(self.out, "      header unusable: {error}; the next open rebuilds the index by scanning")?;
                return Ok(Err(error.clone()));
            }
        };
        say!(
            self.out,
            "      {}, {} in {}",
            seq_range(summary.segment_first_seq, summary.next_seq),
            entries_text(summary.next_seq - summary.segment_first_seq),
            count_text(u64::from(summary.block_count), "block")
        )?;
        say!(self.out, "      time {}", time_range_text(summary.time_range()))?;
        // The index keeps no stored byte count: the blocks span DATA_OFFSET..data_end.
        let block_bytes = if summary.block_count == 0 { 0 } else { summary.data_end.saturating_sub(DATA_OFFSET) };
        say!(
            self.out,
            "      data end {}, raw {} in {} of blocks, compression ratio {}",
            summary.data_end,
            size_text(summary.raw_bytes),
            size_text(block_bytes),
            ratio_text(summary.raw_bytes, block_bytes)
        )?;
        let saturation = match summary.saturated_from {
            None => "not saturated".to_string(),
            Some(position) => format!("saturated from block {position}"),
        };
        say!(self.out, "      tag values {} of {}, {saturation}", summary.tag_values, summary.tag_values_max)?;
        let origins = match &check.origins {
            Ok(origins) => origins,
            Err(error) => {
                say!(self.out, "      origin table unusable: {error}; the next open rebuilds the index by scanning")?;
                return Ok(Err(error.clone()));
            }
        };
        for (&(node, shard), origin) in origins {
            let here = match origin.seqs {
                Some((first, last)) => format!("origin seqs {first}..={last} in this segment"),
                None => "no block in this segment (carried over)".to_string(),
            };
            say!(self.out, "      replicated from node {node} shard {shard}: {here}, watermark {}", origin.watermark)?;
        }
        Ok(Ok((*summary, origins.clone())))
    }

    /// Scans a segment over `scan_bytes`, printing its blocks with
    /// `--blocks`, then its totals. Looks for non-zero bytes after its end
    /// with `check_tail`, or wherever it ends torn.
    fn scan(&mut self, segment: &SegmentFile, scan_bytes: u64, check_tail: bool) -> Result<Scan, ScanError> {
        let path = &segment.path;
        let file =
            File::open(path).map_err(|error| ScanError::Read(format!("cannot open {}: {error}", path.display())))?;
        let mut window = std::mem::take(&mut self.window);
        if window.is_empty() {
            window = vec![0u8; limits::SCAN_WINDOW_BYTES];
        }
        let result = self.scan_with(&file, segment, scan_bytes, check_tail, &mut window);
        self.window = window;
        result
    }

    fn scan_with(
        &mut self,
        file: &File,
        segment: &SegmentFile,
        scan_bytes: u64,
        check_tail: bool,
        window: &mut [u8],
    ) -> Result<Scan, ScanError> {
        let path = &segment.path;
        let show_blocks = self.show_blocks;
        if show_blocks {
            say!(self.out, "    blocks:").map_err(ScanError::Output)?;
        }
        let out = &mut *self.out;
        let mut scan = scan_segment(file, path, scan_bytes, segment.first_seq, window, |offset, header| {
            if show_blocks {
                say!(out, "      {}", block_text(offset, header)).map_err(ScanError::Output)?;
            }
            Ok(())
        })?;
        let out = &mut *self.out;
        let scan_line = if scan.blocks == 0 {
            format!("    scan: no blocks, next seq {}", scan.next_seq)
        } else {
            format!(
                "    scan: {} ({} lz4, {} zstd, {} stored as is), {}, {}",
                count_text(scan.blocks, "block"),
                scan.lz4_blocks,
                scan.zstd_blocks,
                scan.blocks - scan.lz4_blocks - scan.zstd_blocks,
                entries_text(scan.entries),
                seq_range(scan.first_seq, scan.next_seq)
            )
        };
        emit(out, scan_line)?;
        if scan.blocks > 0 {
            emit(out, format!("      time {}", time_range_text(scan.time_range)))?;
            emit(
                out,
                format!(
                    "      raw {}, stored {} plus {} of block headers, compression ratio {}",
                    size_text(scan.raw_bytes),
                    size_text(scan.stored_bytes),
                    size_text(scan.blocks * block::HEADER_BYTES as u64),
                    ratio_text(scan.raw_bytes, scan.stored_bytes)
                ),
            )?;
        }
        for ((node, shard), (first, next, blocks)) in &scan.origins {
            emit(
                out,
                format!(
                    "      replicated from node {node} shard {shard}: origin {} in {}",
                    seq_range(*first, *next),
                    count_text(*blocks, "block")
                ),
            )?;
        }
        if segment.file_bytes > 0 {
            let capacity = segment.file_bytes;
            emit(
                out,
                format!(
                    "      logical end {} ({:.1}% of the file)",
                    scan.end,
                    scan.end as f64 * 100.0 / capacity as f64
                ),
            )?;
        }
        // Bytes after the end matter where recovery scrubs them (the active
        // segment) and wherever the log ends torn; the caller says how the
        // log ends.
        if check_tail || matches!(scan.stop, Stop::Torn(_)) {
            scan.trailing = Some(trailing_bytes(file, path, scan.end, scan_bytes, window)?);
        }
        Ok(scan)
    }
}

/// What follows a log's end, for its `end:` line.
fn trailing_text(trailing: &Trailing) -> String {
    match trailing.last_nonzero {
        None => format!("no non-zero byte in the next {} bytes", trailing.checked_bytes),
        Some(last) => format!(
            "{} non-zero bytes follow in the next {} bytes (the last at offset {last})",
            trailing.nonzero_bytes, trailing.checked_bytes
        ),
    }
}

/// The watermarks of an index's origin table.
fn table_watermarks(origins: &BTreeMap<OriginKey, OriginSummary>) -> BTreeMap<OriginKey, u64> {
    origins.iter().map(|(&key, origin)| (key, origin.watermark)).collect()
}

/// Writes one line of a scan's report.
fn emit(out: &mut dyn Write, line: String) -> Result<(), ScanError> {
    say!(out, "{line}").map_err(ScanError::Output)
}

/// Why a scan stopped early.
#[derive(Debug)]
enum ScanError {
    /// The segment could not be read: reported, and the dump goes on.
    Read(String),
    /// The output could not be written: the dump ends.
    Output(OutputError),
}

fn block_text(offset: u64, header: &BlockHeader) -> String {
    let codec = header.codec.name();
    let origin = match header.origin {
        None => String::new(),
        Some(origin) => format!(
            ", origin node {} shard {} {}",
            origin.node,
            origin.shard,
            seq_range(origin.first_seq, origin.first_seq + u64::from(header.entry_count))
        ),
    };
    // Blocks of the versions that carry entry fields say so; the others
    // (version 1, no fields) print as they always did.
    let fields = match header.version {
        block::FORMAT_VERSION_NO_FIELDS => String::new(),
        block::FORMAT_VERSION_FIELDS => format!(", version {} (entries with fields)", header.version),
        version => format!(", version {version} (zstd, entries may have fields)"),
    };
    format!(
        "block at {offset}, {} bytes: {}, {}, time {}, {codec}, raw {} stored {}{origin}{fields}",
        header.block_bytes(),
        seq_range(header.first_seq, header.next_seq()),
        entries_text(u64::from(header.entry_count)),
        time_range_text(Some((header.min_ts, header.max_ts))),
        header.raw_len,
        header.stored_len
    )
}

/// `seqs A..=B`, or `no entries` for an empty range starting at `first`.
fn seq_range(first: u64, next: u64) -> String {
    if next > first {
        format!("seqs {first}..={}", next - 1)
    } else {
        "no entries".to_string()
    }
}

/// A Unix time in nanoseconds as RFC 3339 (UTC), or the raw number if it
/// cannot be written that way.
fn time_text(unix_ns: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
        .ok()
        .and_then(|time| time.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{unix_ns} ns"))
}

fn time_range_text(range: Option<(i64, i64)>) -> String {
    match range {
        None => "none".to_string(),
        Some((min_ts, max_ts)) => {
            format!("{} ..= {}", time_text(i128::from(min_ts)), time_text(i128::from(max_ts)))
        }
    }
}

/// Bytes, exact, with a binary-unit approximation from 1 KiB on.
fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{bytes} bytes ({value:.1} {})", UNITS[unit])
}

/// `1 entry`, `2 entries`.
fn entries_text(count: u64) -> String {
    if count == 1 {
        "1 entry".to_string()
    } else {
        format!("{count} entries")
    }
}

/// `1 block`, `2 blocks`.
fn count_text(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

fn ratio_text(raw_bytes: u64, stored_bytes: u64) -> String {
    if stored_bytes == 0 {
        "-".to_string()
    } else {
        format!("{:.2}", raw_bytes as f64 / stored_bytes as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::block::{encode_block, encode_entry, encoded_bytes_max, BlockSpec, EntryRef, Origin};
    use crate::index::BlockMeta;

    const CAPACITY: u64 = 256 * 1024;

    /// A segment image: header page, `blocks` blocks of 1 to 3 entries, zeros
    /// up to `CAPACITY`. Returns the image and each block's (offset, end).
    fn segment_image(first_seq: u64, blocks: usize, origin: Option<Origin>) -> (Vec<u8>, Vec<(u64, u64)>) {
        let header =
            SegmentHeader { first_seq, shard: 0, node: 1, capacity_bytes: CAPACITY, created_unix_ns: 1, cold: false };
        let mut image = header.encode().to_vec();
        let mut spans = Vec::new();
        let mut seq = first_seq;
        for block_index in 0..blocks {
            let count = 1 + block_index % 3;
            let mut raw = Vec::new();
            for entry_index in 0..count {
                let body = format!("block {block_index} entry {entry_index}: GET /index.html 200 ").repeat(4);
                let tags = [("host", "web-01")];
                let entry = EntryRef {
                    fields: &[],
                    timestamp_ns: 1_000 + block_index as i64,
                    tags: &tags,
                    body: body.as_bytes(),
                };
                encode_entry(&entry, entry.timestamp_ns, &mut raw);
            }
            let ts = 1_000 + block_index as i64;
            let origin = origin.map(|origin| Origin { first_seq: origin.first_seq + seq - first_seq, ..origin });
            let spec =
                BlockSpec { fields: false, first_seq: seq, entry_count: count as u32, min_ts: ts, max_ts: ts, origin };
            let mut out = vec![0; encoded_bytes_max(raw.len())];
            let used = encode_block(&spec, &raw, &mut out);
            let offset = image.len() as u64;
            image.extend_from_slice(&out[..used]);
            spans.push((offset, image.len() as u64));
            seq += count as u64;
        }
        image.resize(CAPACITY as usize, 0);
        (image, spans)
    }

    fn scan_image(dir: &Path, image: &[u8], window_bytes: usize) -> Scan {
        let path = dir.join("segment");
        std::fs::write(&path, image).unwrap();
        let file = File::open(&path).unwrap();
        let mut window = vec![0u8; window_bytes];
        scan_segment(&file, &path, image.len() as u64, 1, &mut window, |_, _| Ok(())).unwrap()
    }

    #[test]
    fn small_windows_scan_like_one_big_window() {
        let dir = tempfile::tempdir().unwrap();
        let (image, spans) = segment_image(1, 40, None);
        let whole = scan_image(dir.path(), &image, image.len());
        assert_eq!(whole.blocks, 40);
        assert_eq!(whole.end, spans[39].1);
        assert_eq!(whole.stop, Stop::Clean);
        for window_bytes in [600, 1000, 4096, 10_000] {
            let windowed = scan_image(dir.path(), &image, window_bytes);
            assert_eq!(
                (windowed.blocks, windowed.entries, windowed.next_seq, windowed.end, &windowed.stop),
                (whole.blocks, whole.entries, whole.next_seq, whole.end, &whole.stop),
                "window {window_bytes}"
            );
            assert_eq!((windowed.raw_bytes, windowed.stored_bytes), (whole.raw_bytes, whole.stored_bytes));
        }
        // A window smaller than a block cannot advance: reported, not a loop.
        let tiny = scan_image(dir.path(), &image, 100);
        assert_eq!((tiny.blocks, tiny.end), (0, DATA_OFFSET));
        assert!(matches!(tiny.stop, Stop::Torn(reason) if reason.contains("read window")));
    }

    #[test]
    fn a_flipped_byte_is_a_torn_tail_at_its_block_with_trailing_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut image, spans) = segment_image(1, 10, None);
        let (offset, end) = spans[6];
        image[(offset + end) as usize / 2] ^= 0x40;
        let scan = scan_image(dir.path(), &image, 1000);
        assert_eq!((scan.blocks, scan.end), (6, offset));
        assert!(matches!(&scan.stop, Stop::Torn(reason) if reason.contains("checksum")), "{:?}", scan.stop);
        let file = File::open(dir.path().join("segment")).unwrap();
        let mut window = vec![0u8; 1000];
        let trailing = trailing_bytes(&file, Path::new("segment"), scan.end, CAPACITY, &mut window).unwrap();
        assert_eq!(trailing.checked_bytes, CAPACITY - offset);
        assert_eq!(trailing.last_nonzero, Some(spans[9].1 - 1));
        assert!(trailing.nonzero_bytes > 0 && trailing.nonzero_bytes <= spans[9].1 - offset);
    }

    #[test]
    fn replicated_blocks_are_summed_by_origin() {
        let dir = tempfile::tempdir().unwrap();
        let origin = Origin { node: 7, shard: 3, first_seq: 100 };
        let (image, _) = segment_image(1, 4, Some(origin));
        let scan = scan_image(dir.path(), &image, image.len());
        // 1 + 2 + 3 + 1 entries.
        assert_eq!(scan.origins.get(&(7, 3)), Some(&(100, 107, 4)));
    }

    /// Writes a shard directory by hand, a sealed segment with its index and
    /// an active one, and returns the active segment's block spans. With
    /// `origin`, every block is replicated from it, origin seqs continuing
    /// from the sealed segment into the active one.
    fn build_shard_from(dir: &Path, origin: Option<Origin>) -> Vec<(u64, u64)> {
        let (sealed, sealed_spans) = segment_image(1, 5, origin);
        let mut index = SegmentIndex::new(1);
        let mut raw_bytes = 0;
        let mut scratch = Vec::new();
        for &(offset, end) in &sealed_spans {
            let block_bytes = &sealed[offset as usize..end as usize];
            let header = block::verify_block(block_bytes).unwrap();
            block::decompress_payload(&header, block_bytes, &mut scratch).unwrap();
            raw_bytes += u64::from(header.raw_len);
            let meta = BlockMeta {
                offset,
                len: (end - offset) as u32,
                first_seq: header.first_seq,
                entry_count: header.entry_count,
                min_ts: header.min_ts,
                max_ts: header.max_ts,
                origin: header.origin,
            };
            index.push_block(meta, [("host", "web-01")]);
        }
        let next_seq = index.next_seq();
        let active_origin = origin.map(|origin| Origin { first_seq: origin.first_seq + next_seq - 1, ..origin });
        let (active, active_spans) = segment_image(next_seq, 3, active_origin);
        std::fs::write(dir.join(segment::segment_file_name(1)), &sealed).unwrap();
        std::fs::write(dir.join(segment::index_file_name(1)), index.encode(raw_bytes)).unwrap();
        std::fs::write(dir.join(segment::segment_file_name(next_seq)), &active).unwrap();
        active_spans
    }

    fn build_shard(dir: &Path) -> Vec<(u64, u64)> {
        build_shard_from(dir, None)
    }

    fn inspect_text(dir: &Path, show_blocks: bool) -> (Result<(), String>, String) {
        let mut out = Vec::new();
        let result = inspect(dir, &mut out, show_blocks);
        (result, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_shard_dir_is_dumped_with_its_leftovers() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("shard-000");
        std::fs::create_dir(&dir).unwrap();
        let active_spans = build_shard(&dir);
        std::fs::write(dir.join("00000000000000000009.idx"), b"orphan").unwrap();
        std::fs::write(dir.join("00000000000000000001.idx.tmp"), b"partial").unwrap();
        std::fs::write(dir.join("notes.txt"), b"hello").unwrap();

        let (result, text) = inspect_text(&dir, false);
        assert_eq!(result, Ok(()), "{text}");
        assert!(text.contains("00000000000000000001.seg: 262144 bytes (256.0 KiB), sealed"), "{text}");
        assert!(text.contains("index: 00000000000000000001.idx"), "{text}");
        assert!(text.contains("verifies"), "{text}");
        assert!(text.contains("seqs 1..=9, 9 entries in 5 blocks"), "{text}");
        assert!(text.contains("00000000000000000010.seg: 262144 bytes (256.0 KiB), active"), "{text}");
        assert!(text.contains("scan: 3 blocks"), "{text}");
        assert!(text.contains("seqs 10..=15"), "{text}");
        assert!(text.contains(&format!("end: clean at offset {}; no non-zero byte", active_spans[2].1)), "{text}");
        assert!(text.contains("00000000000000000009.idx: index without its segment"), "{text}");
        assert!(text.contains("00000000000000000001.idx.tmp: temporary file"), "{text}");
        assert!(text.contains("notes.txt: unknown file"), "{text}");
        assert!(text.contains("summary: 2 segments (1 sealed, 1 active), seqs 1..=15, next seq 16"), "{text}");
        assert!(text.contains("problems: none"), "{text}");
        assert!(text.contains("origin watermarks: none"), "{text}");
        assert!(!text.contains("block at"), "{text}");

        // The data dir above it gives the same shard, plus totals.
        let (result, text) = inspect_text(data.path(), true);
        assert_eq!(result, Ok(()), "{text}");
        assert!(text.contains("data dir"), "{text}");
        assert_eq!(text.matches("      block at ").count(), 8, "{text}");
        assert!(text.contains("index agrees with the scan"), "{text}");
        assert!(text.contains("total: 1 shard, 2 segments, 15 entries"), "{text}");
    }

    #[test]
    fn origin_watermarks_come_from_the_index_and_the_active_scan() {
        let dir = tempfile::tempdir().unwrap();
        // Seqs 1..=9 sealed hold origin seqs 100..=108, seqs 10..=15 active 109..=114.
        build_shard_from(dir.path(), Some(Origin { node: 7, shard: 3, first_seq: 100 }));
        let (result, text) = inspect_text(dir.path(), false);
        assert_eq!(result, Ok(()), "{text}");
        assert!(
            text.contains("replicated from node 7 shard 3: origin seqs 100..=108 in this segment, watermark 108"),
            "{text}"
        );
        assert!(text.contains("origin watermarks (highest archived origin seq"), "{text}");
        assert!(text.contains("    node 7 shard 3: 114\n"), "{text}");

        // Without the active segment's blocks, the sealed index decides; with
        // its index gone, the scan that would rebuild it does.
        let active = dir.path().join(segment::segment_file_name(10));
        let mut image = std::fs::read(&active).unwrap();
        image[DATA_OFFSET as usize..].fill(0);
        std::fs::write(&active, &image).unwrap();
        let (_, text) = inspect_text(dir.path(), false);
        assert!(text.contains("    node 7 shard 3: 108\n"), "{text}");
        std::fs::remove_file(dir.path().join(segment::index_file_name(1))).unwrap();
        let (_, text) = inspect_text(dir.path(), false);
        assert!(text.contains("    node 7 shard 3: 108\n"), "{text}");
    }

    #[test]
    fn damage_is_reported_as_problems() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("shard-002");
        std::fs::create_dir(&dir).unwrap();
        build_shard(&dir);
        // A bad index body, a stray byte after the active segment's end.
        let index_path = dir.join(segment::index_file_name(1));
        let mut index = std::fs::read(&index_path).unwrap();
        let last = index.len() - 1;
        index[last] ^= 1;
        std::fs::write(&index_path, &index).unwrap();
        let active_path = dir.join(segment::segment_file_name(10));
        let mut active = std::fs::read(&active_path).unwrap();
        active[200_000] = 1;
        std::fs::write(&active_path, &active).unwrap();

        let (result, text) = inspect_text(&dir, false);
        assert_eq!(result, Ok(()), "{text}");
        assert!(text.contains("does NOT verify"), "{text}");
        assert!(text.contains("header says shard 0, the directory is shard 2"), "{text}");
        assert!(text.contains("but 1 non-zero bytes follow"), "{text}");
        assert!(text.contains("(the last at offset 200000)"), "{text}");
        assert!(text.contains("problems: 4"), "{text}");
    }

    #[test]
    fn recovery_roles_follow_the_newest_written_header() {
        let dir = tempfile::tempdir().unwrap();
        build_shard(dir.path());
        // A creation that died before its header was written, and the index
        // of a seal that died before the next segment existed.
        std::fs::write(dir.path().join(segment::segment_file_name(16)), vec![0u8; 2 * PAGE_BYTES]).unwrap();
        std::fs::write(dir.path().join(segment::index_file_name(10)), b"stale").unwrap();

        let (result, text) = inspect_text(dir.path(), false);
        assert_eq!(result, Ok(()), "{text}");
        assert!(text.contains("00000000000000000010.seg: 262144 bytes (256.0 KiB), active"), "{text}");
        assert!(text.contains("index: 00000000000000000010.idx beside the active segment"), "{text}");
        assert!(text.contains("00000000000000000016.seg: 8192 bytes (8.0 KiB), unfinished"), "{text}");
        assert!(text.contains("(1 sealed, 1 active, 1 unfinished), seqs 1..=15, next seq 16"), "{text}");
    }

    /// A reader that went away: every write fails with a broken pipe.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_output_pipe_ends_the_dump_quietly() {
        let dir = tempfile::tempdir().unwrap();
        build_shard(dir.path());
        assert_eq!(inspect(dir.path(), &mut ClosedPipe, true), Ok(()));
    }

    #[test]
    fn an_unreadable_or_foreign_dir_is_an_error_naming_it() {
        let (result, _) = inspect_text(Path::new("/nonexistent/wormdb-inspect"), false);
        assert!(result.unwrap_err().contains("/nonexistent/wormdb-inspect"));
        let empty = tempfile::tempdir().unwrap();
        let (result, _) = inspect_text(empty.path(), false);
        assert!(result.unwrap_err().contains("neither a data dir"));
    }
}
