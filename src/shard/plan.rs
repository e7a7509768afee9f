//! Recovery's decisions as pure code: what opening a shard keeps, removes,
//! rebuilds, cuts and refuses, decided from what was read, with no file and
//! no executor. As raft-rs's `Ready` says what to do and the caller does it,
//! [`RecoveryPlan`] decides and its callers act: recovery (`recovery.rs`)
//! reads the files, feeds the plan and performs what it decides; `wormdb
//! inspect` (`inspect.rs`) reads the same files, feeds the same plan and
//! prints what it decided, performing none of it. The decisions exist here
//! only.
//!
//! The plan is fed in the order recovery reads, stage after stage:
//!
//! ```text
//! stage       fed with                        decides
//! 1 listing   Listing::classify               leftovers(): *.tmp files, indexes without a segment
//! 2 headers   header_needed() / header()      settle_roles(): unfinished segments (removed), the
//!             (newest segment first)          active one, the sealed ones; refuses a bad header
//! 3 sealed    start_segment()                 refuses a gap in seqs
//!   (oldest   index_decision()                trust its index file, or rebuild it by a scan
//!    first)   end_sealed()                    where it ends; origin watermarks so far
//! 4 active    start_segment()                 refuses a gap in seqs
//!             active_header()                 refuses a header that does not match the name
//!             active_file()                   rounds a cut-short file up to whole pages
//!             end_active()                    where the log ends, the next seq
//! 5 tail      scrub_window() / tail()         the torn-tail record and the bytes to zero
//! ```
//!
//! A stage asserts that the stages before it are done: a caller out of order
//! is a programmer error. A refusal is a [`PlanError`] naming the file; the
//! plan stays usable after one, so that inspect can go on and report every
//! problem, while recovery stops at the first.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::scan::Stop;
use super::segment::{self, FileKind, HeaderError, SegmentHeader};
use super::{page_ceil, page_floor};
use crate::index::OriginKey;
use crate::limits;

/// How far past the recovered end a crash can have left bytes: the writes
/// that were in flight or unsynced. Recovery zeroes this much (counted from
/// the end's page), so stale bytes of a torn write can never be mistaken for
/// later blocks.
pub const SCRUB_BYTES: u64 = ((super::UNSYNCED_WRITES_MAX + 1) * limits::COMMIT_WRITE_BYTES_MAX) as u64;

/// What recovery found and did when a shard was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files kept (sealed plus active).
    pub segments: usize,
    /// Sealed segments whose index file was missing or bad and was rebuilt
    /// by scanning the segment.
    pub indexes_rebuilt: usize,
    /// First seq of the active segment.
    pub active_first_seq: u64,
    /// Valid blocks found in the active segment.
    pub active_blocks: usize,
    /// The next seq the shard will assign.
    pub next_seq: u64,
    /// Where the log ended, if not cleanly: a torn or corrupt tail.
    pub torn_tail: Option<TornTail>,
    /// Files removed as leftovers of an interrupted operation.
    pub removed_files: Vec<PathBuf>,
}

/// A torn or corrupt tail found and zeroed by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub path: PathBuf,
    /// File offset where the valid log ends.
    pub offset: u64,
    /// Bytes past `offset` that were not zero and were zeroed.
    pub bytes: u64,
    /// Why the block at `offset` was not accepted.
    pub reason: String,
}

/// A shard directory's entries, by what their names say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// `NNN.seg` files, by first seq.
    pub segments: BTreeMap<u64, PathBuf>,
    /// `NNN.idx` files, by the first seq of their segment.
    pub indexes: BTreeMap<u64, PathBuf>,
    /// `*.tmp` files, sorted.
    pub temporaries: Vec<PathBuf>,
    /// Everything else, directories included, sorted: wormdb ignores them.
    pub unknown: Vec<PathBuf>,
}

impl Listing {
    /// Sorts a directory's entries, given as `(path, is_directory)`, by their
    /// names ([`segment::classify`]). A directory is never taken for a
    /// segment, an index or a temporary file, whatever its name.
    pub fn classify(entries: impl IntoIterator<Item = (PathBuf, bool)>) -> Listing {
        let mut listing = Listing::default();
        for (path, is_directory) in entries {
            match segment::classify(&path) {
                _ if is_directory => listing.unknown.push(path),
                Some(FileKind::Segment(first_seq)) => {
                    listing.segments.insert(first_seq, path);
                }
                Some(FileKind::Index(first_seq)) => {
                    listing.indexes.insert(first_seq, path);
                }
                Some(FileKind::Temporary) => listing.temporaries.push(path),
                None => listing.unknown.push(path),
            }
        }
        listing.temporaries.sort();
        listing.unknown.sort();
        listing
    }
}

/// Why recovery removes a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leftover {
    /// `*.tmp`: an index or spare segment being written when the process died.
    Temporary,
    /// An index file whose segment is gone: retention died between its two deletes.
    OrphanIndex,
    /// A segment whose header was never written (all zero or shorter than
    /// a header): its creation did not finish, so nothing in it was ever
    /// acknowledged.
    UnfinishedSegment,
}

/// A file recovery removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub leftover: Leftover,
}

/// What recovery makes of a segment, by its place among the shard's segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Older than the active one: trusted through its index file.
    Sealed,
    /// The newest segment whose header was written: scanned, appended to.
    Active,
    /// Newer than the active one, with a header that was never written:
    /// removed.
    Unfinished,
}

/// What reading a sealed segment's index file gave: its header and origin
/// table, the part recovery reads (not the block table nor the postings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexRead {
    /// Header and origin table decoded and verified; the header names the
    /// segment starting at `segment_first_seq`.
    Summary {
        /// First seq of the segment the index describes.
        segment_first_seq: u64,
    },
    /// Unreadable, or failing a check: why.
    Unusable(String),
}

/// How recovery learns where a sealed segment ends and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexDecision {
    /// From its index file, as read.
    Trust,
    /// By scanning the segment and writing a new index file.
    Rebuild(RebuildCause),
}

/// Why a sealed segment's index file is rebuilt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebuildCause {
    /// There is none.
    Missing,
    /// It could not be used (recovery logs why).
    Unusable(String),
    /// It describes the segment starting at this other seq.
    OtherSegment(u64),
}

/// Where a scan of a segment's blocks stopped ([`super::scan::scan_window`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanEnd {
    /// Valid blocks before `end`.
    pub blocks: usize,
    /// File offset just past the last valid block (the data offset if none).
    pub end: u64,
    /// The seq the next block would have had to start with.
    pub next_seq: u64,
    /// Why the scan stopped at `end`.
    pub stop: Stop,
}

/// The active segment's file as recovery scans and appends to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveFile {
    /// Its size on disk.
    pub file_bytes: u64,
    /// The size recovery scans and writes within: the file size rounded up
    /// to whole pages. Larger than `file_bytes` only for a file cut short by
    /// something other than wormdb (segments are whole pages), which
    /// recovery extends so that O_DIRECT can write at its end.
    pub capacity_bytes: u64,
}

/// Why the shard will not open: a decision of the plan, not an I/O error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// The newest segment whose header was written has a header that is
    /// not valid (a bad magic, checksum or version).
    BadHeader {
        /// The segment file.
        path: PathBuf,
        /// What is wrong with its header.
        error: HeaderError,
    },
    /// A kept segment does not start where the previous one ends.
    Gap {
        /// The segment file.
        path: PathBuf,
        /// The seq it starts at (its name).
        first_seq: u64,
        /// The seq the previous segment ends before.
        expected: u64,
        /// Whether it is the active segment.
        active: bool,
    },
    /// The active segment's header names another first seq than its file name.
    HeaderFirstSeq {
        /// The segment file.
        path: PathBuf,
        /// The first seq in its header.
        header_first_seq: u64,
        /// The first seq in its name.
        name_first_seq: u64,
    },
}

impl PlanError {
    /// The file the refusal is about.
    pub fn path(&self) -> &Path {
        match self {
            PlanError::BadHeader { path, .. }
            | PlanError::Gap { path, .. }
            | PlanError::HeaderFirstSeq { path, .. } => path,
        }
    }

    /// What is wrong, in the words of the shard's `Corrupt` error.
    pub fn reason(&self) -> String {
        match self {
            PlanError::BadHeader { error, .. } => error.to_string(),
            PlanError::Gap { first_seq, expected, active: false, .. } => {
                format!("segment starts at seq {first_seq}, but the previous one ends before {expected}")
            }
            PlanError::Gap { first_seq, expected, active: true, .. } => {
                format!("active segment starts at seq {first_seq}, but the previous one ends before {expected}")
            }
            PlanError::HeaderFirstSeq { header_first_seq, name_first_seq, .. } => {
                format!("header says first seq {header_first_seq}, file name says {name_first_seq}")
            }
        }
    }
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "corrupt {}: {}", self.path().display(), self.reason())
    }
}

impl std::error::Error for PlanError {}

impl From<PlanError> for super::Error {
    fn from(error: PlanError) -> Self {
        super::Error::Corrupt { path: error.path().to_path_buf(), reason: error.reason() }
    }
}

/// The bytes after a log's `end` that recovery checks for non-zero bytes
/// and zeroes: the [`SCRUB_BYTES`] from the end's page on, within a file of
/// `file_bytes`. Empty when the log ends at the end of the file.
pub fn scrub_window(end: u64, file_bytes: u64) -> Range<u64> {
    debug_assert!(end <= file_bytes, "the log ends at {end}, past the file's {file_bytes} bytes");
    end..file_bytes.min(page_floor(end) + SCRUB_BYTES).max(end)
}

/// The roles of the segments, once their headers settled them.
#[derive(Clone, Debug)]
struct Roles {
    /// Oldest first.
    sealed: Vec<u64>,
    /// `None` when no segment has a written header: the open creates the first.
    active: Option<u64>,
    /// Newest first.
    unfinished: Vec<u64>,
}

/// The active segment, as far as it was fed.
#[derive(Clone, Debug)]
struct ActiveState {
    file: Option<ActiveFile>,
    /// `None` before [`RecoveryPlan::end_active`], and after it when the scan
    /// could not be done (inspect only).
    scan: Option<ScanEnd>,
    ended: bool,
    torn_tail: Option<TornTail>,
    tail_decided: bool,
}

/// Recovery's decisions for one shard directory, fed what was read (see the
/// module doc for the stages). Pure: no file, no clock, no executor.
#[derive(Clone, Debug)]
pub struct RecoveryPlan {
    listing: Listing,
    headers: BTreeMap<u64, Result<SegmentHeader, HeaderError>>,
    /// Segments whose header could not be read (inspect only): left out.
    unreadable: BTreeSet<u64>,
    roles: Option<Roles>,
    /// Kept segments started so far: sealed ones in order, then the active one.
    started: usize,
    /// Whether the last started segment was ended.
    ended: bool,
    /// The seq the next kept segment must start with, when known.
    expected_first_seq: Option<u64>,
    /// Index decisions of the sealed segments, in order.
    index_decisions: Vec<IndexDecision>,
    origin_watermarks: BTreeMap<OriginKey, u64>,
    active: ActiveState,
    /// What stage 1 removes, decided from the listing as it was read (a
    /// first segment created later must not turn an orphan index back into
    /// a kept one).
    leftovers: Vec<Removal>,
}

impl RecoveryPlan {
    /// Stage 1: a plan for the shard directory that holds `listing`.
    pub fn new(listing: Listing) -> RecoveryPlan {
        let temporaries =
            listing.temporaries.iter().map(|path| Removal { path: path.clone(), leftover: Leftover::Temporary });
        let orphans = listing
            .indexes
            .iter()
            .filter(|(first_seq, _)| !listing.segments.contains_key(first_seq))
            .map(|(_, path)| Removal { path: path.clone(), leftover: Leftover::OrphanIndex });
        let leftovers = temporaries.chain(orphans).collect();
        RecoveryPlan {
            leftovers,
            listing,
            headers: BTreeMap::new(),
            unreadable: BTreeSet::new(),
            roles: None,
            started: 0,
            ended: true,
            expected_first_seq: None,
            index_decisions: Vec::new(),
            origin_watermarks: BTreeMap::new(),
            active: ActiveState { file: None, scan: None, ended: false, torn_tail: None, tail_decided: false },
        }
    }

    /// The directory's entries.
    pub fn listing(&self) -> &Listing {
        &self.listing
    }

    /// Files removed before any segment is read: the `*.tmp` files, then
    /// the index files whose segment is gone, by seq.
    pub fn leftovers(&self) -> Vec<Removal> {
        self.leftovers.clone()
    }

    /// Stage 2: the segment whose header must be read next, newest first,
    /// or `None` once the active segment is known (or there is none).
    /// Headers of segments older than the newest written one are never
    /// needed: sealed segments are trusted through their index files.
    pub fn header_needed(&self) -> Option<u64> {
        for &first_seq in self.listing.segments.keys().rev() {
            if self.unreadable.contains(&first_seq) {
                continue;
            }
            match self.headers.get(&first_seq) {
                None => return Some(first_seq),
                Some(Err(HeaderError::Zero | HeaderError::Truncated)) => continue,
                Some(_) => return None,
            }
        }
        None
    }

    /// Feeds the header page read from segment `first_seq` (any segment of
    /// the listing, needed or not, before [`Self::settle_roles`]).
    pub fn header(&mut self, first_seq: u64, header: Result<SegmentHeader, HeaderError>) {
        assert!(self.roles.is_none(), "a header fed after the roles were settled");
        assert!(self.listing.segments.contains_key(&first_seq), "a header of a segment not listed: {first_seq}");
        self.headers.insert(first_seq, header);
    }

    /// Says that segment `first_seq`'s header could not be read. Only
    /// inspect goes on after that (recovery fails with the I/O error): the
    /// segment is then left out of the roles.
    pub fn header_unreadable(&mut self, first_seq: u64) {
        assert!(self.roles.is_none(), "a header fed after the roles were settled");
        self.unreadable.insert(first_seq);
    }

    /// Ends stage 2: the newest segments whose header was never written are
    /// unfinished (and removed), the newest one after them is active, the
    /// older ones are sealed. Refuses ([`PlanError::BadHeader`]) when the
    /// active one's header is written but not valid; the roles are settled
    /// even then.
    pub fn settle_roles(&mut self) -> Result<(), PlanError> {
        assert!(self.header_needed().is_none(), "roles settled before the headers they need");
        assert!(self.roles.is_none(), "roles settled twice");
        let mut unfinished = Vec::new();
        let mut active = None;
        for &first_seq in self.listing.segments.keys().rev() {
            if self.unreadable.contains(&first_seq) {
                continue;
            }
            match self.headers.get(&first_seq) {
                Some(Err(HeaderError::Zero | HeaderError::Truncated)) => unfinished.push(first_seq),
                _ => {
                    active = Some(first_seq);
                    break;
                }
            }
        }
        let sealed = match active {
            Some(active) => self
                .listing
                .segments
                .range(..active)
                .map(|(&first_seq, _)| first_seq)
                .filter(|first_seq| !self.unreadable.contains(first_seq))
                .collect(),
            None => Vec::new(),
        };
        self.roles = Some(Roles { sealed, active, unfinished });
        match active.map(|first_seq| (first_seq, self.headers.get(&first_seq))) {
            Some((first_seq, Some(Err(error)))) => {
                Err(PlanError::BadHeader { path: self.listing.segments[&first_seq].clone(), error: error.clone() })
            }
            _ => Ok(()),
        }
    }

    fn roles(&self) -> &Roles {
        self.roles.as_ref().expect("the roles are settled (RecoveryPlan::settle_roles)")
    }

    /// The role of segment `first_seq`; `None` for a segment not listed, or
    /// whose header could not be read.
    pub fn role(&self, first_seq: u64) -> Option<Role> {
        let roles = self.roles();
        if roles.active == Some(first_seq) {
            Some(Role::Active)
        } else if roles.sealed.contains(&first_seq) {
            Some(Role::Sealed)
        } else if roles.unfinished.contains(&first_seq) {
            Some(Role::Unfinished)
        } else {
            None
        }
    }

    /// The segments whose creation did not finish, newest first: removed.
    pub fn unfinished(&self) -> Vec<Removal> {
        self.roles()
            .unfinished
            .iter()
            .map(|first_seq| Removal {
                path: self.listing.segments[first_seq].clone(),
                leftover: Leftover::UnfinishedSegment,
            })
            .collect()
    }

    /// The sealed segments, oldest first.
    pub fn sealed_first_seqs(&self) -> &[u64] {
        &self.roles().sealed
    }

    /// The active segment, if the listing has one.
    pub fn active_first_seq(&self) -> Option<u64> {
        self.roles().active
    }

    /// Whether no segment has a written header, so that the open creates
    /// the first segment, which starts at seq 1: a brand-new shard.
    pub fn creates_first_segment(&self) -> bool {
        self.roles().active.is_none()
    }

    /// Says that the first segment was created at `path` (see
    /// [`Self::creates_first_segment`]): it is the active one.
    pub fn first_segment_created(&mut self, path: PathBuf) {
        assert!(self.creates_first_segment(), "a first segment created beside an active one");
        // An index of seq 1 was an orphan, removed at stage 1: not the
        // new segment's stale index.
        self.listing.indexes.remove(&1);
        self.listing.segments.insert(1, path);
        if let Some(roles) = self.roles.as_mut() {
            roles.active = Some(1);
        }
    }

    fn kept(&self, position: usize) -> Option<(u64, Role)> {
        let roles = self.roles();
        match roles.sealed.get(position) {
            Some(&first_seq) => Some((first_seq, Role::Sealed)),
            None if position == roles.sealed.len() => roles.active.map(|first_seq| (first_seq, Role::Active)),
            None => None,
        }
    }

    /// Stages 3 and 4: starts the next kept segment, the sealed ones oldest
    /// first and then the active one. Refuses ([`PlanError::Gap`]) when it
    /// does not start where the previous one ends: entries would be missing
    /// or repeated. The oldest kept segment may start anywhere (retention
    /// deletes segments from the oldest).
    pub fn start_segment(&mut self, first_seq: u64) -> Result<(), PlanError> {
        assert!(self.ended, "segment {first_seq} started before the previous one ended");
        let (expected_first_seq, role) =
            self.kept(self.started).unwrap_or_else(|| panic!("segment {first_seq} started after the active one"));
        assert_eq!(first_seq, expected_first_seq, "kept segments are started in order");
        self.started += 1;
        self.ended = false;
        match self.expected_first_seq {
            Some(expected) if expected != first_seq => Err(PlanError::Gap {
                path: self.listing.segments[&first_seq].clone(),
                first_seq,
                expected,
                active: role == Role::Active,
            }),
            _ => Ok(()),
        }
    }

    fn current(&self, role: Role) -> u64 {
        let (first_seq, current_role) =
            self.started.checked_sub(1).and_then(|position| self.kept(position)).expect("a segment was started");
        assert_eq!(current_role, role, "a {role:?} step on the {current_role:?} segment");
        assert!(!self.ended, "segment {first_seq} already ended");
        first_seq
    }

    /// Stage 3: whether the sealed segment just started is trusted through
    /// its index file. `read` is what reading that file gave, `None` when
    /// the listing has none.
    pub fn index_decision(&mut self, first_seq: u64, read: Option<IndexRead>) -> IndexDecision {
        assert_eq!(self.current(Role::Sealed), first_seq, "an index decision for another segment");
        assert_eq!(self.index_decisions.len() + 1, self.started, "one index decision per sealed segment");
        let decision = match read {
            None => IndexDecision::Rebuild(RebuildCause::Missing),
            Some(IndexRead::Unusable(why)) => IndexDecision::Rebuild(RebuildCause::Unusable(why)),
            Some(IndexRead::Summary { segment_first_seq }) if segment_first_seq != first_seq => {
                IndexDecision::Rebuild(RebuildCause::OtherSegment(segment_first_seq))
            }
            Some(IndexRead::Summary { .. }) => IndexDecision::Trust,
        };
        self.index_decisions.push(decision.clone());
        decision
    }

    /// Ends the sealed segment just started: the seq after its last entry
    /// and its origin watermarks, from the source [`Self::index_decision`]
    /// chose. `next_seq` is `None` when that source could not be read
    /// (inspect only): the next segment's start is then not checked.
    pub fn end_sealed(
        &mut self,
        first_seq: u64,
        next_seq: Option<u64>,
        watermarks: impl IntoIterator<Item = (OriginKey, u64)>,
    ) {
        assert_eq!(self.current(Role::Sealed), first_seq, "ended another segment than the one started");
        assert_eq!(self.index_decisions.len(), self.started, "a sealed segment ended before its index decision");
        self.end(next_seq, watermarks);
    }

    fn end(&mut self, next_seq: Option<u64>, watermarks: impl IntoIterator<Item = (OriginKey, u64)>) {
        self.ended = true;
        self.expected_first_seq = next_seq;
        for (key, watermark) in watermarks {
            let highest = self.origin_watermarks.entry(key).or_insert(0);
            *highest = (*highest).max(watermark);
        }
    }

    /// The highest origin seq per origin over the segments ended so far:
    /// what the shard's origin watermarks are rebuilt from. A rebuilt index
    /// carries those of the segments before it, as the original did.
    pub fn origin_watermarks(&self) -> &BTreeMap<OriginKey, u64> {
        &self.origin_watermarks
    }

    /// Stage 4: an index file beside the active segment. The process died
    /// after sealing the segment but before the next one existed: the index
    /// is removed, the segment appended to and sealed again at the next roll.
    pub fn stale_active_index(&self) -> Option<&Path> {
        self.roles().active.and_then(|first_seq| self.listing.indexes.get(&first_seq)).map(PathBuf::as_path)
    }

    /// Stage 4: checks the active segment's header page. Refuses a header
    /// that is not valid ([`PlanError::BadHeader`]) or that names another
    /// first seq than the file name ([`PlanError::HeaderFirstSeq`]).
    pub fn active_header(&self, header: &Result<SegmentHeader, HeaderError>) -> Result<(), PlanError> {
        let first_seq = self.roles().active.expect("an active segment");
        let path = &self.listing.segments[&first_seq];
        match header {
            Err(error) => Err(PlanError::BadHeader { path: path.clone(), error: error.clone() }),
            Ok(header) if header.first_seq != first_seq => Err(PlanError::HeaderFirstSeq {
                path: path.clone(),
                header_first_seq: header.first_seq,
                name_first_seq: first_seq,
            }),
            Ok(_) => Ok(()),
        }
    }

    /// Stage 4: the active segment's file, from its size on disk.
    pub fn active_file(&mut self, file_bytes: u64) -> ActiveFile {
        self.current(Role::Active);
        let file = ActiveFile { file_bytes, capacity_bytes: page_ceil(file_bytes) };
        self.active.file = Some(file);
        file
    }

    /// Stage 4: ends the active segment with the scan of its blocks (over
    /// [`ActiveFile::capacity_bytes`]) and the origin watermarks of those
    /// blocks. `None` when the scan could not be done (inspect only).
    pub fn end_active(&mut self, scan: Option<ScanEnd>, watermarks: impl IntoIterator<Item = (OriginKey, u64)>) {
        let first_seq = self.current(Role::Active);
        let capacity_bytes =
            self.active.file.expect("the active file is known (RecoveryPlan::active_file)").capacity_bytes;
        if let Some(scan) = &scan {
            assert!(scan.next_seq >= first_seq, "the scan of segment {first_seq} ends at seq {}", scan.next_seq);
            assert!(
                scan.end <= capacity_bytes,
                "the scan ends at {}, past the file's {capacity_bytes} bytes",
                scan.end
            );
        }
        self.end(scan.as_ref().map(|scan| scan.next_seq), watermarks);
        self.active.scan = scan;
        self.active.ended = true;
    }

    /// Stage 5: the bytes after the log's end that must be read for
    /// non-zero bytes ([`scrub_window`]); `None` when the active segment was
    /// not scanned.
    pub fn scrub_window(&self) -> Option<Range<u64>> {
        assert!(self.active.ended, "the scrub window asked for before the active segment ended");
        let capacity_bytes = self.active.file?.capacity_bytes;
        self.active.scan.as_ref().map(|scan| scrub_window(scan.end, capacity_bytes))
    }

    /// Stage 5: decides the tail from `last_nonzero`, the offset of the last
    /// non-zero byte in [`Self::scrub_window`] if any. Returns the bytes to
    /// zero (empty when there are none): from the log's end up to the page
    /// after that byte, within the file. A tail is torn when the scan
    /// stopped at something that is not a valid next block, or when
    /// non-zero bytes follow a clean end ("stale bytes after a clean end").
    pub fn tail(&mut self, last_nonzero: Option<u64>) -> Range<u64> {
        let window = self.scrub_window().expect("the active segment was scanned");
        assert!(!self.active.tail_decided, "the tail decided twice");
        let (Some(scan), Some(file)) = (&self.active.scan, self.active.file) else {
            unreachable!("a scrub window implies a scan and a file");
        };
        self.active.tail_decided = true;
        let end = scan.end;
        let zero = match last_nonzero {
            Some(last) => {
                assert!(window.contains(&last), "non-zero byte {last} outside the scrub window {window:?}");
                end..page_ceil(last + 1).min(file.capacity_bytes)
            }
            None => end..end,
        };
        let bytes = last_nonzero.map_or(0, |last| last + 1 - end);
        let reason = match &scan.stop {
            Stop::Torn(reason) => Some(reason.clone()),
            Stop::Clean if bytes > 0 => Some("stale bytes after a clean end".to_string()),
            Stop::Clean => None,
        };
        let first_seq = self.roles().active.expect("an active segment");
        self.active.torn_tail = reason.map(|reason| TornTail {
            path: self.listing.segments[&first_seq].clone(),
            offset: end,
            bytes,
            reason,
        });
        zero
    }

    /// The torn tail the open cuts and reports, once [`Self::tail`] decided it.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        assert!(self.active.tail_decided, "the torn tail asked for before it was decided");
        self.active.torn_tail.as_ref()
    }

    /// Where the log ends: the active segment's scan, once ended.
    pub fn active_scan(&self) -> Option<&ScanEnd> {
        self.active.scan.as_ref()
    }

    /// The seq the shard assigns next, once the active segment ended with
    /// its scan.
    pub fn next_seq(&self) -> Option<u64> {
        self.active.scan.as_ref().map(|scan| scan.next_seq)
    }

    /// What recovery reports, once the tail is decided.
    pub fn report(&self) -> RecoveryReport {
        let scan = self.active.scan.as_ref().expect("the active segment was scanned");
        let rebuilt = self.index_decisions.iter().filter(|decision| **decision != IndexDecision::Trust).count();
        RecoveryReport {
            segments: self.roles().sealed.len() + 1,
            indexes_rebuilt: rebuilt,
            active_first_seq: self.roles().active.expect("an active segment"),
            active_blocks: scan.blocks,
            next_seq: scan.next_seq,
            torn_tail: self.torn_tail().cloned(),
            removed_files: self.leftovers().into_iter().chain(self.unfinished()).map(|removal| removal.path).collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The plan driven with no file and no executor: one test per documented
    //! case, then any listing with any header, index and scan results
    //! against a model of the rules, written independently of the plan.

    use super::*;
    use crate::shard::segment::{index_file_name, segment_file_name, DATA_OFFSET};
    use crate::shard::PAGE_BYTES;
    use proptest::prelude::*;

    const CAPACITY_BYTES: u64 = 1 << 20;

    fn segment_path(first_seq: u64) -> PathBuf {
        PathBuf::from(segment_file_name(first_seq))
    }

    fn index_path(first_seq: u64) -> PathBuf {
        PathBuf::from(index_file_name(first_seq))
    }

    fn written(first_seq: u64) -> Result<SegmentHeader, HeaderError> {
        Ok(SegmentHeader {
            first_seq,
            shard: 0,
            node: 1,
            capacity_bytes: CAPACITY_BYTES,
            created_unix_ns: 1,
            cold: false,
        })
    }

    /// What recovery would read of one shard directory.
    #[derive(Clone, Debug)]
    struct Facts {
        /// File names, and whether each is a directory.
        files: Vec<(String, bool)>,
        /// Header page of each segment.
        headers: BTreeMap<u64, Result<SegmentHeader, HeaderError>>,
        /// What reading each index file gives.
        index_reads: BTreeMap<u64, IndexRead>,
        /// The next seq each index file says its segment ends before.
        index_next_seqs: BTreeMap<u64, u64>,
        /// The next seq a scan of each segment finds (a rebuilt index says the same).
        scan_next_seqs: BTreeMap<u64, u64>,
        /// Origin watermark of each segment (one origin, (7, 3)).
        watermarks: BTreeMap<u64, u64>,
        active_file_bytes: u64,
        active_scan_end: u64,
        active_stop: Stop,
        /// Where the last non-zero byte after the end is, as a fraction of
        /// the scrub window (`None`: all zero).
        last_nonzero_at: Option<f64>,
    }

    impl Facts {
        fn new() -> Facts {
            Facts {
                files: Vec::new(),
                headers: BTreeMap::new(),
                index_reads: BTreeMap::new(),
                index_next_seqs: BTreeMap::new(),
                scan_next_seqs: BTreeMap::new(),
                watermarks: BTreeMap::new(),
                active_file_bytes: CAPACITY_BYTES,
                active_scan_end: DATA_OFFSET,
                active_stop: Stop::Clean,
                last_nonzero_at: None,
            }
        }

        /// A segment `first_seq..next_seq` with a written header, a good
        /// index file, and a scan that agrees with it.
        fn segment(mut self, first_seq: u64, next_seq: u64) -> Facts {
            self.files.push((segment_file_name(first_seq), false));
            self.files.push((index_file_name(first_seq), false));
            self.headers.insert(first_seq, written(first_seq));
            self.index_reads.insert(first_seq, IndexRead::Summary { segment_first_seq: first_seq });
            self.index_next_seqs.insert(first_seq, next_seq);
            self.scan_next_seqs.insert(first_seq, next_seq);
            self
        }

        fn file(mut self, name: &str) -> Facts {
            self.files.push((name.to_string(), false));
            self
        }

        fn without(mut self, name: &str) -> Facts {
            self.files.retain(|(file, _)| file != name);
            self
        }
    }

    /// What driving the plan as recovery does gave.
    struct Outcome {
        plan: RecoveryPlan,
        result: Result<RecoveryReport, PlanError>,
        header_reads: Vec<u64>,
        /// Bytes to zero, once the tail was decided.
        zero: Option<Range<u64>>,
        /// Where each kept segment ends, as fed.
        kept_ends: Vec<(u64, u64)>,
    }

    /// Drives the plan the way `recovery::recover` does, from memory.
    fn recover(facts: &Facts) -> Outcome {
        let listing =
            Listing::classify(facts.files.iter().map(|(name, is_directory)| (PathBuf::from(name), *is_directory)));
        let mut outcome = Outcome {
            plan: RecoveryPlan::new(listing),
            result: Err(PlanError::BadHeader { path: PathBuf::new(), error: HeaderError::Zero }),
            header_reads: Vec::new(),
            zero: None,
            kept_ends: Vec::new(),
        };
        outcome.result = recover_into(facts, &mut outcome);
        outcome
    }

    fn recover_into(facts: &Facts, outcome: &mut Outcome) -> Result<RecoveryReport, PlanError> {
        let plan = &mut outcome.plan;
        while let Some(first_seq) = plan.header_needed() {
            outcome.header_reads.push(first_seq);
            plan.header(first_seq, facts.headers[&first_seq].clone());
        }
        plan.settle_roles()?;
        let created = plan.creates_first_segment();
        if created {
            plan.first_segment_created(segment_path(1));
        }
        let origin = |first_seq: u64| facts.watermarks.get(&first_seq).map(|&watermark| ((7, 3), watermark));
        for first_seq in plan.sealed_first_seqs().to_vec() {
            plan.start_segment(first_seq)?;
            let read = plan.listing().indexes.contains_key(&first_seq).then(|| facts.index_reads[&first_seq].clone());
            let next_seq = match plan.index_decision(first_seq, read) {
                IndexDecision::Trust => facts.index_next_seqs[&first_seq],
                IndexDecision::Rebuild(_) => facts.scan_next_seqs[&first_seq],
            };
            plan.end_sealed(first_seq, Some(next_seq), origin(first_seq));
            outcome.kept_ends.push((first_seq, next_seq));
        }
        let first_seq = plan.active_first_seq().unwrap();
        plan.start_segment(first_seq)?;
        // A created segment has the header create_segment wrote.
        let header = if created { written(1) } else { facts.headers[&first_seq].clone() };
        plan.active_header(&header)?;
        let file = plan.active_file(facts.active_file_bytes);
        let next_seq = if created { 1 } else { facts.scan_next_seqs[&first_seq] };
        let scan = ScanEnd { blocks: 3, end: facts.active_scan_end, next_seq, stop: facts.active_stop.clone() };
        plan.end_active(Some(scan), origin(first_seq));
        outcome.kept_ends.push((first_seq, next_seq));
        let window = plan.scrub_window().unwrap();
        assert_eq!(window, scrub_window(facts.active_scan_end, file.capacity_bytes));
        let last_nonzero = facts
            .last_nonzero_at
            .filter(|_| !window.is_empty())
            .map(|at| window.start + ((window.end - window.start - 1) as f64 * at) as u64);
        outcome.zero = Some(plan.tail(last_nonzero));
        Ok(plan.report())
    }

    fn corrupt_text(error: PlanError) -> String {
        crate::shard::Error::from(error).to_string()
    }

    #[test]
    fn a_brand_new_shard_creates_segment_one_and_removes_leftovers() {
        let facts =
            Facts::new().file("00000000000000000005.idx").file("00000000000000000005.idx.tmp").file("notes.txt");
        let outcome = recover(&facts);
        let report = outcome.result.unwrap();
        assert!(outcome.header_reads.is_empty());
        assert_eq!((report.segments, report.active_first_seq, report.next_seq), (1, 1, 1));
        assert_eq!(report.removed_files, [PathBuf::from("00000000000000000005.idx.tmp"), index_path(5)]);
        assert_eq!(outcome.plan.listing().unknown, [PathBuf::from("notes.txt")]);
        assert_eq!(report.torn_tail, None);
    }

    #[test]
    fn unfinished_segments_are_removed_and_the_newest_written_one_is_active() {
        let mut facts = Facts::new().segment(1, 10).segment(10, 20).segment(20, 20).segment(21, 21);
        facts.headers.insert(20, Err(HeaderError::Truncated));
        facts.headers.insert(21, Err(HeaderError::Zero));
        facts.scan_next_seqs.insert(10, 20);
        let outcome = recover(&facts);
        let report = outcome.result.unwrap();
        assert_eq!(outcome.header_reads, [21, 20, 10], "newest first, and never a sealed segment's");
        assert_eq!(report.active_first_seq, 10);
        assert_eq!(outcome.plan.role(1), Some(Role::Sealed));
        assert_eq!(outcome.plan.role(21), Some(Role::Unfinished));
        assert_eq!(report.removed_files, [segment_path(21), segment_path(20)]);
        assert_eq!(report.segments, 2);
        // The index beside the active segment is removed, not reported.
        assert_eq!(outcome.plan.stale_active_index(), Some(index_path(10).as_path()));
        // The index beside an unfinished segment stays: the next open finds it orphaned.
        assert!(!report.removed_files.contains(&index_path(20)));
    }

    #[test]
    fn an_orphan_index_of_seq_1_is_removed_once_when_the_first_segment_is_created() {
        // Found by the property test: the report listed nothing, and the
        // created segment 1 had the removed index as its "stale index".
        let listing = Listing::classify([(index_path(1), false)]);
        let mut plan = RecoveryPlan::new(listing);
        assert_eq!(plan.header_needed(), None);
        plan.settle_roles().unwrap();
        assert!(plan.creates_first_segment());
        assert_eq!(plan.leftovers(), [Removal { path: index_path(1), leftover: Leftover::OrphanIndex }]);
        plan.first_segment_created(segment_path(1));
        assert_eq!(plan.stale_active_index(), None);
        assert_eq!(plan.leftovers().len(), 1);
    }

    #[test]
    fn with_no_header_written_every_segment_is_removed_and_segment_one_created() {
        let mut facts = Facts::new().segment(1, 1).segment(2, 2);
        facts.headers.insert(1, Err(HeaderError::Zero));
        facts.headers.insert(2, Err(HeaderError::Truncated));
        let outcome = recover(&facts);
        let report = outcome.result.unwrap();
        assert_eq!(outcome.header_reads, [2, 1]);
        // Removed first, then created anew at the same name.
        assert_eq!(report.removed_files, [segment_path(2), segment_path(1)]);
        assert_eq!((report.segments, report.active_first_seq, report.next_seq), (1, 1, 1));
    }

    #[test]
    fn a_bad_header_on_the_newest_written_segment_refuses_the_shard() {
        let mut facts = Facts::new().segment(1, 10).segment(10, 20).segment(20, 20);
        facts.headers.insert(10, Err(HeaderError::Checksum));
        facts.headers.insert(20, Err(HeaderError::Zero));
        let outcome = recover(&facts);
        let error = outcome.result.unwrap_err();
        assert_eq!(corrupt_text(error), "corrupt 00000000000000000010.seg: segment header checksum mismatch");
        // The roles still stand (inspect shows them), and the unfinished one is still removed.
        assert_eq!(outcome.plan.active_first_seq(), Some(10));
        assert_eq!(outcome.plan.unfinished().len(), 1);
        // A bad header on a sealed segment is never read.
        let mut facts = Facts::new().segment(1, 10).segment(10, 20);
        facts.headers.insert(1, Err(HeaderError::BadMagic));
        assert!(recover(&facts).result.is_ok());
    }

    #[test]
    fn a_gap_between_kept_segments_refuses_the_shard() {
        let facts = Facts::new().segment(1, 10).segment(12, 20).segment(20, 25);
        let error = recover(&facts).result.unwrap_err();
        assert_eq!(
            corrupt_text(error),
            "corrupt 00000000000000000012.seg: segment starts at seq 12, but the previous one ends before 10"
        );
        let facts = Facts::new().segment(5, 10).segment(11, 20);
        let error = recover(&facts).result.unwrap_err();
        assert_eq!(
            corrupt_text(error),
            "corrupt 00000000000000000011.seg: active segment starts at seq 11, but the previous one ends before 10"
        );
        // The oldest kept segment may start anywhere: retention deleted the ones before it.
        assert!(recover(&Facts::new().segment(5, 10).segment(10, 11)).result.is_ok());
    }

    #[test]
    fn an_active_header_naming_another_seq_refuses_the_shard() {
        let mut facts = Facts::new().segment(1, 10).segment(10, 20);
        facts.headers.insert(10, written(7));
        let error = recover(&facts).result.unwrap_err();
        assert_eq!(corrupt_text(error), "corrupt 00000000000000000010.seg: header says first seq 7, file name says 10");
    }

    #[test]
    fn a_sealed_index_is_trusted_only_when_it_reads_and_names_its_segment() {
        let mut facts = Facts::new().segment(1, 10).segment(10, 20).segment(20, 30).segment(30, 40);
        facts = facts.without(&index_file_name(1));
        facts.index_reads.insert(10, IndexRead::Unusable("index header checksum mismatch".into()));
        facts.index_reads.insert(20, IndexRead::Summary { segment_first_seq: 21 });
        let outcome = recover(&facts);
        assert_eq!(outcome.result.unwrap().indexes_rebuilt, 3);
        assert_eq!(
            outcome.plan.index_decisions,
            [
                IndexDecision::Rebuild(RebuildCause::Missing),
                IndexDecision::Rebuild(RebuildCause::Unusable("index header checksum mismatch".into())),
                IndexDecision::Rebuild(RebuildCause::OtherSegment(21)),
            ]
        );
        // A trusted index decides where its segment ends, even against a scan.
        let mut facts = Facts::new().segment(1, 10).segment(10, 20);
        facts.scan_next_seqs.insert(1, 9);
        assert_eq!(recover(&facts).result.unwrap().indexes_rebuilt, 0);
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_scan_end_and_zeroed_to_the_page_after_its_last_byte() {
        let mut facts = Facts::new().segment(1, 5);
        facts.active_scan_end = DATA_OFFSET + 1000;
        facts.active_stop = Stop::Torn("block checksum mismatch".into());
        facts.last_nonzero_at = Some(0.0);
        let outcome = recover(&facts);
        let torn = outcome.result.unwrap().torn_tail.unwrap();
        assert_eq!(torn.path, segment_path(1));
        assert_eq!((torn.offset, torn.bytes, torn.reason.as_str()), (DATA_OFFSET + 1000, 1, "block checksum mismatch"));
        assert_eq!(outcome.zero, Some(DATA_OFFSET + 1000..2 * DATA_OFFSET));

        // Stale bytes after a clean end are a torn tail too; zeroing stops at the file's end.
        facts.active_stop = Stop::Clean;
        facts.active_scan_end = CAPACITY_BYTES - 10;
        facts.last_nonzero_at = Some(1.0);
        let outcome = recover(&facts);
        let torn = outcome.result.unwrap().torn_tail.unwrap();
        assert_eq!((torn.bytes, torn.reason.as_str()), (10, "stale bytes after a clean end"));
        assert_eq!(outcome.zero, Some(CAPACITY_BYTES - 10..CAPACITY_BYTES));

        // A clean end with nothing after it: nothing to report or zero.
        facts.last_nonzero_at = None;
        let outcome = recover(&facts);
        assert_eq!(outcome.result.unwrap().torn_tail, None);
        assert!(outcome.zero.unwrap().is_empty());
    }

    #[test]
    fn the_scrub_window_starts_at_the_end_and_reaches_scrub_bytes_past_its_page() {
        let end = DATA_OFFSET + 100;
        assert_eq!(scrub_window(end, u64::MAX / 2), end..DATA_OFFSET + SCRUB_BYTES);
        assert_eq!(scrub_window(end, 3 * DATA_OFFSET), end..3 * DATA_OFFSET);
        assert!(scrub_window(3 * DATA_OFFSET, 3 * DATA_OFFSET).is_empty());
    }

    #[test]
    fn an_active_segment_cut_short_is_scanned_as_whole_pages() {
        let mut facts = Facts::new().segment(1, 5);
        facts.active_file_bytes = 3 * PAGE_BYTES as u64 + 17;
        facts.active_scan_end = 3 * PAGE_BYTES as u64;
        let outcome = recover(&facts);
        assert!(outcome.result.is_ok());
        let file = outcome.plan.active.file.unwrap();
        assert_eq!((file.file_bytes, file.capacity_bytes), (3 * PAGE_BYTES as u64 + 17, 4 * PAGE_BYTES as u64));
    }

    #[test]
    fn directories_are_ignored_whatever_their_names() {
        let entries = [(segment_path(1), true), (PathBuf::from("x.tmp"), true), (index_path(1), false)];
        let listing = Listing::classify(entries);
        assert!(listing.segments.is_empty() && listing.temporaries.is_empty());
        assert_eq!(listing.unknown, [segment_path(1), PathBuf::from("x.tmp")]);
        assert_eq!(RecoveryPlan::new(listing).leftovers().len(), 1, "the index is orphaned");
    }

    #[test]
    fn origin_watermarks_are_the_highest_over_kept_segments() {
        let mut facts = Facts::new().segment(1, 10).segment(10, 20).segment(20, 30);
        facts.watermarks.insert(1, 50);
        facts.watermarks.insert(10, 40);
        facts.watermarks.insert(20, 45);
        let outcome = recover(&facts);
        assert_eq!(outcome.plan.origin_watermarks(), &BTreeMap::from([((7, 3), 50)]));
    }

    #[test]
    fn inspect_goes_on_past_refusals_and_unreadable_files() {
        let listing = Listing::classify([1, 12, 20].map(|first_seq| (segment_path(first_seq), false)));
        let mut plan = RecoveryPlan::new(listing);
        plan.header(1, written(1));
        plan.header(12, written(12));
        plan.header_unreadable(20);
        plan.settle_roles().unwrap();
        assert_eq!(plan.role(20), None);
        assert_eq!(plan.active_first_seq(), Some(12));
        plan.start_segment(1).unwrap();
        plan.index_decision(1, None);
        plan.end_sealed(1, Some(10), []);
        assert!(matches!(plan.start_segment(12), Err(PlanError::Gap { expected: 10, active: true, .. })));
        plan.active_file(CAPACITY_BYTES);
        plan.end_active(None, []);
        assert_eq!((plan.next_seq(), plan.scrub_window()), (None, None));
    }

    /// How a generated segment differs from a healthy one.
    #[derive(Clone, Copy, Debug)]
    struct Damage {
        header: u8,
        index: u8,
        index_next_seq_off: bool,
        scan_next_seq_off: bool,
    }

    fn damage() -> impl Strategy<Value = Damage> {
        (0u8..12, 0u8..10, proptest::bool::weighted(0.1), proptest::bool::weighted(0.1)).prop_map(
            |(header, index, index_next_seq_off, scan_next_seq_off)| Damage {
                header,
                index,
                index_next_seq_off,
                scan_next_seq_off,
            },
        )
    }

    /// A shard directory: segments of 1 to 40 entries from `start`, each
    /// maybe damaged, plus leftovers, and how the active segment's scan ended.
    fn facts() -> impl Strategy<Value = Facts> {
        let segments = proptest::collection::vec((1u64..40, damage(), 0u64..100), 0..7);
        let leftovers = (0usize..3, proptest::collection::vec(1u64..400, 0..3), 0usize..2);
        let tail = (0u64..=256, any::<bool>(), proptest::option::of(0.0f64..=1.0), 0u64..3);
        (1u64..50, segments, leftovers, tail).prop_map(|(start, segments, leftovers, tail)| {
            let mut facts = Facts::new();
            let mut first_seq = start;
            for (entries, damage, watermark) in segments {
                let next_seq = first_seq + entries;
                facts = facts.segment(first_seq, next_seq);
                facts.watermarks.insert(first_seq, watermark);
                match damage.header {
                    0 => facts.headers.insert(first_seq, Err(HeaderError::Zero)),
                    1 => facts.headers.insert(first_seq, Err(HeaderError::Truncated)),
                    2 => facts.headers.insert(first_seq, Err(HeaderError::Checksum)),
                    3 => facts.headers.insert(first_seq, written(first_seq + 1)),
                    _ => None,
                };
                match damage.index {
                    0 => facts = facts.without(&index_file_name(first_seq)),
                    1 => drop(facts.index_reads.insert(first_seq, IndexRead::Unusable("bad".into()))),
                    2 => drop(facts.index_reads.insert(first_seq, IndexRead::Summary { segment_first_seq: 1 })),
                    _ => {}
                }
                if damage.index_next_seq_off {
                    facts.index_next_seqs.insert(first_seq, next_seq + 1);
                }
                if damage.scan_next_seq_off {
                    facts.scan_next_seqs.insert(first_seq, next_seq - 1);
                }
                first_seq = next_seq;
            }
            let (temporaries, orphans, unknown) = leftovers;
            for temporary in 0..temporaries {
                facts = facts.file(&format!("{}.tmp", segment_file_name(temporary as u64)));
            }
            for orphan in orphans {
                if !facts.headers.contains_key(&orphan) {
                    facts = facts.file(&index_file_name(orphan));
                }
            }
            for file in 0..unknown {
                facts = facts.file(&format!("notes-{file}.txt"));
            }
            let (end_pages, torn, last_nonzero_at, cut_bytes) = tail;
            facts.active_file_bytes = CAPACITY_BYTES - cut_bytes;
            facts.active_scan_end = DATA_OFFSET + end_pages * 4000;
            facts.active_stop = if torn { Stop::Torn("block checksum mismatch".into()) } else { Stop::Clean };
            facts.last_nonzero_at = last_nonzero_at;
            facts
        })
    }

    /// The rules, restated plainly: the first refusal recovery makes, if any.
    fn model_refusal(facts: &Facts) -> Option<PlanError> {
        let segments: Vec<u64> = facts.headers.keys().copied().collect();
        let unfinished =
            |first_seq: &u64| matches!(facts.headers[first_seq], Err(HeaderError::Zero | HeaderError::Truncated));
        let active = segments.iter().rev().find(|first_seq| !unfinished(first_seq)).copied()?;
        let path = segment_path(active);
        if let Err(error) = &facts.headers[&active] {
            return Some(PlanError::BadHeader { path, error: error.clone() });
        }
        let mut previous_end = None;
        for &first_seq in segments.iter().filter(|&&first_seq| first_seq <= active) {
            if let Some(expected) = previous_end.filter(|&expected| expected != first_seq) {
                let path = segment_path(first_seq);
                return Some(PlanError::Gap { path, first_seq, expected, active: first_seq == active });
            }
            let indexed = facts.files.iter().any(|(name, _)| *name == index_file_name(first_seq));
            let trusted =
                indexed && facts.index_reads[&first_seq] == IndexRead::Summary { segment_first_seq: first_seq };
            previous_end =
                Some(if trusted { facts.index_next_seqs[&first_seq] } else { facts.scan_next_seqs[&first_seq] });
        }
        match facts.headers[&active] {
            Ok(header) if header.first_seq != active => {
                Some(PlanError::HeaderFirstSeq { path, header_first_seq: header.first_seq, name_first_seq: active })
            }
            _ => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn any_shard_directory_gets_the_plan_the_rules_say(facts in facts()) {
            let outcome = recover(&facts);
            let plan = &outcome.plan;
            let refusal = model_refusal(&facts);
            let report = match (&outcome.result, refusal) {
                (Err(error), Some(expected)) => {
                    prop_assert_eq!(error, &expected);
                    return Ok(());
                }
                (Ok(report), None) => report,
                (result, expected) => {
                    return Err(TestCaseError::fail(format!("got {result:?}, the rules say {expected:?}")));
                }
            };
            let segments: Vec<u64> = facts.headers.keys().copied().collect();
            let written: Vec<u64> = segments
                .iter()
                .copied()
                .filter(|first_seq| !matches!(facts.headers[first_seq], Err(HeaderError::Zero | HeaderError::Truncated)))
                .collect();

            // The active segment is the newest with a written header; newer
            // ones are unfinished. With none written, all are unfinished, and
            // a new segment 1 (maybe where an unfinished one was) is active.
            let active = report.active_first_seq;
            let created = written.is_empty();
            prop_assert_eq!(written.last().copied().unwrap_or(1), active);
            for &first_seq in &segments {
                let role = plan.role(first_seq).unwrap();
                let expected = match first_seq.cmp(&active) {
                    std::cmp::Ordering::Less => Role::Sealed,
                    std::cmp::Ordering::Equal => Role::Active,
                    std::cmp::Ordering::Greater => Role::Unfinished,
                };
                prop_assert_eq!(role, expected, "segment {}", first_seq);
            }
            // Only the headers from the newest segment down to the active one are read.
            let read: Vec<u64> = segments.iter().rev().copied().filter(|&first_seq| first_seq >= active).collect();
            prop_assert_eq!(&outcome.header_reads, &read);

            // Kept segments follow one another without a gap.
            prop_assert_eq!(report.segments, outcome.kept_ends.len());
            for pair in outcome.kept_ends.windows(2) {
                prop_assert_eq!(pair[0].1, pair[1].0, "kept segments {:?}", outcome.kept_ends);
            }

            // Removed: every *.tmp, every index without a segment, every
            // unfinished segment, and never a kept segment or its index.
            let removed: BTreeSet<&PathBuf> = report.removed_files.iter().collect();
            prop_assert_eq!(removed.len(), report.removed_files.len(), "removed twice");
            for (first_seq, _) in outcome.kept_ends.iter().filter(|_| !created) {
                prop_assert!(!removed.contains(&segment_path(*first_seq)));
                prop_assert!(!removed.contains(&index_path(*first_seq)));
            }
            for (name, _) in &facts.files {
                let path = PathBuf::from(name);
                let expected = match segment::classify(&path) {
                    Some(FileKind::Temporary) => true,
                    Some(FileKind::Index(first_seq)) => !facts.headers.contains_key(&first_seq),
                    Some(FileKind::Segment(first_seq)) => first_seq > active || created,
                    None => false,
                };
                prop_assert_eq!(removed.contains(&path), expected, "{}", name);
            }
            let stale = plan.stale_active_index().map(Path::to_path_buf);
            let indexed = !created && facts.files.iter().any(|(name, _)| *name == index_file_name(active));
            prop_assert_eq!(stale, indexed.then(|| index_path(active)));

            // An index is rebuilt exactly when recovery cannot trust it.
            let rebuilt = outcome.kept_ends[..outcome.kept_ends.len() - 1]
                .iter()
                .filter(|(first_seq, _)| {
                    let indexed = facts.files.iter().any(|(name, _)| *name == index_file_name(*first_seq));
                    !indexed || facts.index_reads[first_seq] != IndexRead::Summary { segment_first_seq: *first_seq }
                })
                .count();
            prop_assert_eq!(report.indexes_rebuilt, rebuilt);

            // The log ends where the active segment's scan stopped, at the
            // first block it did not accept; the torn tail is reported there.
            prop_assert_eq!(report.next_seq, outcome.kept_ends.last().unwrap().1);
            let capacity_bytes = page_ceil(facts.active_file_bytes);
            let window = scrub_window(facts.active_scan_end, capacity_bytes);
            let zero = outcome.zero.clone().unwrap();
            let torn = matches!(facts.active_stop, Stop::Torn(_));
            match &report.torn_tail {
                None => {
                    prop_assert!(!torn);
                    prop_assert!(zero.is_empty());
                }
                Some(tail) => {
                    prop_assert_eq!(tail.offset, facts.active_scan_end);
                    prop_assert_eq!(&tail.path, &segment_path(active));
                    prop_assert!(torn || tail.bytes > 0);
                    prop_assert!(tail.bytes <= window.end - window.start);
                    prop_assert_eq!(zero.start, tail.offset);
                    prop_assert!(zero.end - zero.start >= tail.bytes);
                    prop_assert!(zero.is_empty() || zero.end % PAGE_BYTES as u64 == 0 || zero.end == capacity_bytes);
                    prop_assert!(zero.end <= capacity_bytes);
                }
            }
            let watermark = facts.watermarks.iter().filter(|(first_seq, _)| **first_seq <= active).map(|(_, w)| *w).max();
            prop_assert_eq!(plan.origin_watermarks().get(&(7, 3)).copied(), watermark);
        }
    }
}
