//! One core's shard: an append-only log of entries in O_DIRECT segment files.
//!
//! A [`Shard`] lives on one glommio executor and is driven only from it
//! (`Rc`, no locks). Appenders call [`Shard::append`], which validates and
//! encodes their entries into the pending batch at once, and then await the
//! returned [`AppendWait`]. Two tasks move batches to disk:
//!
//! ```text
//! append ─▶ pending batch ─▶ writer task ─────────────▶ syncer task ─▶ acks
//!            (fills while    DMA writes of one batch:    fdatasync issued
//!             the previous   tail page + new blocks,     after the writes
//!             is in flight)  in chunks                   completed
//! ```
//!
//! The writer encodes a large batch in chunks of whole blocks and starts
//! each chunk's write before encoding the next; the writes of a batch cover
//! disjoint pages (the page a chunk ends in is written by the next one), so
//! no two writes in flight ever cover the same page. The writer starts the
//! next batch only after every write of the previous one completed, and
//! stays at most [`UNSYNCED_WRITES_MAX`] batches ahead of the syncer, which
//! bounds how much of a segment a crash can leave torn. A batch is
//! acknowledged only after all its writes completed and an fdatasync issued
//! after that completed.
//!
//! Modules: [`segment`] (segment header and names), [`scan`] (the
//! recovery scanner), [`plan`] (recovery's decisions) and [`filter`] (a
//! query's exact check of each entry) are pure;
//! [`faults`] is the seam that tests inject storage faults through; this
//! module, `writer`, `reader` and `recovery` do the I/O.

pub mod cold;
pub mod faults;
pub mod filter;
pub(crate) mod oneshot;
pub mod plan;
mod reader;
mod recovery;
mod retention;
pub mod scan;
pub mod segment;
mod writer;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use glommio::io::DmaFile;

use crate::codec::block;
pub use crate::codec::{EntryRef, Origin, TagSet};
use crate::index::{self, BlockMeta, OriginKey, OriginSummary, SegmentIndex};
use crate::limits;
pub use cold::{plan_cold, ColdCodec, ColdPolicy, ColdRewrite, ColdSpan, ColdState, ColdStep};
pub use filter::{EntryFilter, PayloadPrefilter, Substrings, SubstringsError};
pub use plan::{RecoveryReport, TornTail};
pub use reader::{OrderedQuery, Query, QueryResult, SnapshotVisit};
pub use retention::{plan_retention, RetentionPolicy, SegmentSpan, SharedSeq};

pub use crate::limits::{PAGE_BYTES, UNSYNCED_WRITES_MAX};

/// When an append is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After its block is written and fdatasync'ed (the default).
    Sync,
    /// After the write completes, with no fdatasync. **Unsafe**: a power loss
    /// can lose acknowledged entries. For benchmarks only.
    None,
}

/// How segment files are prepared.
///
/// Measured on this project's reference machine (virtio disk, ext4;
/// `benches/shard_append.rs`): writing into fallocated but never-written
/// space makes each fdatasync convert extents from "unwritten" to
/// "written" (a journal commit). Raw 1 MiB write+fdatasync ran at
/// 1089 MB/s into fallocated space and 2370 MB/s into zeroed space, and a
/// shard taking single-entry commits from 64 appenders did 1.28x the
/// commits per second with a zero-filled segment (fdatasync 150 µs instead
/// of 240 µs). Zero-filling costs a second write of every segment, so it
/// is done ahead of time, in the background, into a spare file; a roll
/// then only writes the header and renames the spare into place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preallocation {
    /// `fallocate` each segment when it is needed. No extra writes, slower
    /// fdatasyncs.
    Fallocate,
    /// Keep one spare segment, `fallocate`d and overwritten with zeros in
    /// the background while the active one fills (the default). If the
    /// spare is not ready at a roll, the segment is `fallocate`d on the
    /// spot instead, so a roll never waits for zero-filling.
    ZeroFill,
}

/// Settings of one shard.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// The shard's directory (`DATA/shard-NNN`); created if missing.
    pub dir: PathBuf,
    /// This node's id: the `node_id` of entries stored here.
    pub node_id: u32,
    /// This shard's number.
    pub shard_id: u32,
    /// Capacity of each segment file, within
    /// [`limits::SEGMENT_BYTES_MIN`]..=[`limits::SEGMENT_BYTES_MAX`].
    pub segment_bytes: u64,
    /// When appends are acknowledged.
    pub durability: Durability,
    /// How segment space is reserved.
    pub preallocation: Preallocation,
    /// Appends that may wait for one group commit before further appends
    /// are refused with [`Error::Backpressure`]; at most
    /// [`limits::PENDING_APPENDS_MAX`].
    pub pending_appends_max: usize,
    /// Bytes of recent commit buffers kept for readers of recent blocks (at
    /// most [`limits::RECENT_WRITES_BYTES_MAX`]); 0 keeps none. Worth it
    /// when something reads right behind the writer (a follower's pusher);
    /// otherwise it only delays the reuse of write buffers (large appends
    /// measured 20 % slower with it on: `benches/shard_append`).
    pub recent_writes_bytes: usize,
    /// For tests: the storage fault layer the commit path's writes,
    /// fdatasyncs and segment creations go through (see [`faults`]).
    /// `None` (the default) costs one branch per operation.
    pub faults: Option<Arc<faults::Faults>>,
    /// Which sealed segments retention deletes, after every segment roll
    /// and at [`Shard::apply_retention`]; the default deletes nothing.
    pub retention: RetentionPolicy,
    /// Retention's veto: when set, retention deletes only sealed segments
    /// whose last seq is at most the seq this holds, and none while it
    /// holds `None`. A follower hands its shard the seq
    /// its leader acknowledged, so nothing the leader has not archived is
    /// deleted. Unset (the default): no veto.
    pub retention_deletable_through: Option<SharedSeq>,
    /// Which sealed segments are rewritten with zstd, and when (see
    /// [`cold`]); the default rewrites nothing. The veto above holds here
    /// too: a follower's segment its leader has not acknowledged is not
    /// rewritten.
    pub cold: ColdPolicy,
    /// The caps of each segment's index: the production values unless a
    /// test wants the fallbacks reached with little data.
    pub index_caps: index::IndexCaps,
    /// Whether each block written gets a filter of its body words (what
    /// `q=` prunes with). Without one a block is a candidate for every
    /// word query: answers stay exact, word queries read more.
    pub word_filters: bool,
}

impl ShardConfig {
    /// Defaults for shard `shard_id` in `dir`.
    pub fn new(dir: impl Into<PathBuf>, shard_id: u32) -> Self {
        ShardConfig {
            dir: dir.into(),
            node_id: 0,
            shard_id,
            segment_bytes: limits::SEGMENT_BYTES_DEFAULT,
            durability: Durability::Sync,
            preallocation: Preallocation::ZeroFill,
            pending_appends_max: limits::PENDING_APPENDS_MAX,
            recent_writes_bytes: 0,
            faults: None,
            retention: RetentionPolicy::default(),
            retention_deletable_through: None,
            cold: ColdPolicy::default(),
            index_caps: index::IndexCaps::default(),
            word_filters: true,
        }
    }
}

/// The seqs an append was given: `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqRange {
    /// First seq.
    pub first: u64,
    /// Last seq (inclusive).
    pub last: u64,
}

/// Errors of the shard layer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// The disk has no room for a new segment. Nothing was written; appends
    /// succeed again once space is freed.
    #[error("disk full: {op} {}: {source}", path.display())]
    DiskFull {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error (ENOSPC or EDQUOT).
        source: Arc<std::io::Error>,
    },
    /// An entry of the append is invalid; nothing of the append was stored.
    #[error("entry {index}: {source}")]
    InvalidEntry {
        /// Position of the entry in the append.
        index: usize,
        /// What is wrong.
        source: block::EntryError,
    },
    /// The append is malformed as a whole; nothing of it was stored.
    #[error("invalid append: {0}")]
    InvalidAppend(InvalidAppend),
    /// The pending batch is full; retry after the in-flight commit.
    #[error("shard {shard} is busy: {limit} reached; retry later")]
    Backpressure {
        /// The shard.
        shard: u32,
        /// The limit that was hit.
        limit: &'static str,
    },
    /// A write or fdatasync failed, in this append's commit or an earlier
    /// one. What reached the disk is unknown until recovery scans it again,
    /// so the shard acknowledges nothing more and refuses every append until
    /// it is reopened. It never retries a failed fdatasync: the kernel may
    /// have dropped the unsynced pages, and a retry would then succeed
    /// without having written them ("fsyncgate").
    #[error("shard {shard} failed and must be reopened: {op} {}: {source}", path.display())]
    Failed {
        /// The shard.
        shard: u32,
        /// The operation that failed first.
        op: &'static str,
        /// The file it failed on.
        path: PathBuf,
        /// The OS error it failed with.
        source: Arc<std::io::Error>,
    },
    /// The shard is closing or closed.
    #[error("shard is closed")]
    Closed,
    /// A file on disk is not what it should be.
    #[error("corrupt {}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An index file could not be read.
    #[error("index {}: {source}", path.display())]
    Index {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: Arc<index::Error>,
    },
    /// A block could not be read back.
    #[error("block at {offset} of {}: {source}", path.display())]
    Block {
        /// The segment file.
        path: PathBuf,
        /// File offset of the block.
        offset: u64,
        /// What is wrong.
        source: block::BlockError,
    },
    /// Bad configuration.
    #[error("invalid shard config: {0}")]
    Config(String),
}

/// Why an append was refused as a whole (see [`Error::InvalidAppend`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAppend {
    /// The append holds no entry.
    #[error("no entries")]
    Empty,
    /// Replicated entries whose origin seqs would leave `1..u64::MAX`.
    #[error("origin seqs {first_seq} + {entry_count} entries are outside 1..u64::MAX")]
    OriginSeqsOutOfRange {
        /// The origin seq of the first entry.
        first_seq: u64,
        /// Entries in the append.
        entry_count: u64,
    },
    /// A pushed block whose payload length disagrees with its header.
    #[error("a stored block's payload is {payload_bytes} bytes, its header says {header_bytes}")]
    StoredPayloadLength {
        /// The payload's length.
        payload_bytes: usize,
        /// The header's `stored_len`.
        header_bytes: u32,
    },
    /// The append alone is larger than a pending batch may be.
    #[error(
        "append of up to {bytes} bytes is over the pending-batch limit of {limit} bytes \
         (PENDING_RAW_BYTES_MAX, lowered for small segments)"
    )]
    OverPendingBatch {
        /// The append's encoded size bound.
        bytes: usize,
        /// The shard's pending-batch bound.
        limit: usize,
    },
    /// One origin more than [`limits::ORIGINS_PER_SHARD_MAX`].
    #[error("shard {shard} already archives {origins} origins (ORIGINS_PER_SHARD_MAX); node {node} shard {origin_shard} is refused")]
    TooManyOrigins {
        /// This shard.
        shard: u32,
        /// Origins it archives.
        origins: usize,
        /// The refused origin's node.
        node: u32,
        /// The refused origin's shard.
        origin_shard: u32,
    },
}

impl Error {
    /// Wraps an I/O error with the operation and the path; ENOSPC and EDQUOT
    /// become [`Error::DiskFull`].
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        let path = path.to_path_buf();
        let source = Arc::new(source);
        // glommio's errors reach us as custom io::Errors that keep the
        // kind but not the errno, so look at both.
        let disk_full = matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
            || matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded);
        if disk_full {
            Error::DiskFull { op, path, source }
        } else {
            Error::Io { op, path, source }
        }
    }

    fn glommio(op: &'static str, path: &Path, source: glommio::GlommioError<()>) -> Self {
        Error::io(op, path, source.into())
    }

    /// The [`Error::Failed`] that `self` fails shard `shard` with. The
    /// operation, path and OS error of an I/O error are kept; an error
    /// without them (none is expected on the commit path) is kept as text,
    /// against `path`.
    fn into_failure(self, shard: u32, path: &Path) -> Self {
        match self {
            Error::Io { op, path, source } | Error::DiskFull { op, path, source } => {
                Error::Failed { shard, op, path, source }
            }
            failed @ Error::Failed { .. } => failed,
            other => Error::Failed {
                shard,
                op: "commit",
                path: path.to_path_buf(),
                source: Arc::new(std::io::Error::other(other.to_string())),
            },
        }
    }
}

/// Result of the shard layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Counters of a shard since it was opened (and, for sizes, of what is on disk).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// This shard.
    pub shard: u32,
    /// Highest durable seq (0 when empty).
    pub last_seq: u64,
    /// Entries on disk (after retention).
    pub entries: u64,
    /// Entry bytes before compression, on disk.
    pub raw_bytes: u64,
    /// Bytes the blocks occupy in the segment files.
    pub disk_bytes: u64,
    /// Segment files (sealed plus active).
    pub segments: u64,
    /// Group commits written since open.
    pub commits: u64,
    /// fdatasync calls since open.
    pub syncs: u64,
    /// Sum of fdatasync latencies since open, in microseconds.
    pub sync_us_total: u64,
    /// Largest fdatasync latency since open, in microseconds.
    pub sync_us_max: u64,
    /// Bytes written by DMA writes since open (including tail rewrites).
    pub write_bytes: u64,
    /// Appends refused with backpressure since open.
    pub backpressure_rejections: u64,
    /// Blocks read by readers since open.
    pub blocks_read: u64,
    /// Appends waiting for the next group commit right now.
    pub pending_appends: u64,
    /// Sealed segments the cold rewrite recompressed since open.
    pub cold_segments: u64,
    /// Bytes of their blocks (headers included) before the rewrite...
    pub cold_block_bytes_before: u64,
    /// ...and after it: `disk_bytes` went down by the difference.
    pub cold_block_bytes_after: u64,
    /// Uncompressed payload bytes of the blocks of those segments.
    pub cold_raw_bytes: u64,
    /// Microseconds the cold rewrite spent decompressing and compressing.
    pub cold_busy_us: u64,
    /// Cold rewrites that failed since open (logged; the segment stays).
    pub cold_failures: u64,
    /// fdatasync latencies since open: `sync_latency_buckets[i]` counts
    /// syncs that took at most `SYNC_LATENCY_BUCKETS_US[i]` µs (cumulative,
    /// as Prometheus histograms are); syncs above the last bound only count
    /// in `syncs`.
    pub sync_latency_buckets: [u64; SYNC_LATENCY_BUCKETS_US.len()],
}

/// Upper bounds, in microseconds, of the fdatasync latency histogram.
pub const SYNC_LATENCY_BUCKETS_US: [u64; 12] =
    [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 1_000_000];

/// A durable, sealed segment: read-only, with its index file beside it.
struct Sealed {
    first_seq: u64,
    next_seq: u64,
    path: PathBuf,
    index_path: PathBuf,
    summary: index::IndexSummary,
    /// Per origin with blocks in this segment: the lowest and highest
    /// origin seq of those blocks. Small (one entry per origin), kept so
    /// [`Shard::read_origin`] opens only the segments that hold an origin.
    origin_seqs: BTreeMap<OriginKey, (u64, u64)>,
    file_bytes: u64,
    file: RefCell<Option<Rc<DmaFile>>>,
    index: RefCell<Option<Rc<SegmentIndex>>>,
    /// Bumped when the cold rewrite swaps in a new file and index: a
    /// reader that loaded either of them across the swap loads both again.
    generation: u64,
    /// While the cold rewrite renames the files: the index stays loaded
    /// (its file is missing for a moment).
    pinned: bool,
    /// What the cold rewrite knows of the segment.
    cold: ColdState,
}

/// The segment being written.
struct Active {
    first_seq: u64,
    path: PathBuf,
    file: Rc<DmaFile>,
    capacity: u64,
    /// Every written block; only the first `durable_blocks` are visible.
    index: SegmentIndex,
    durable_blocks: usize,
    /// Logical end of durable data.
    durable_end: u64,
    /// Logical end of written data (>= `durable_end`).
    write_end: u64,
    /// The bytes of the page that holds `write_end`, up to `write_end`:
    /// rewritten at the start of the next write.
    tail: Vec<u8>,
    /// Raw bytes of the blocks in `index`, and of the durable ones.
    raw_bytes_written: u64,
    raw_bytes_durable: u64,
}

/// Blocks being gathered for the next group commit.
struct PendingBlock {
    raw_start: usize,
    raw_end: usize,
    entry_count: u32,
    min_ts: i64,
    max_ts: i64,
    origin: Option<Origin>,
    /// The distinct `key=value` pairs and tag sets of the block's entries,
    /// and the word filter of their bodies, gathered as they are appended,
    /// so the commit indexes the block without parsing its entries again.
    terms: index::BlockTerms,
    /// Set for a block another node encoded: `raw_start..raw_end` holds its
    /// stored payload, which the commit writes as is (no compression).
    stored: Option<StoredPayload>,
    /// Whether an entry of the block carries fields: the block is then
    /// written at the block format version that has them.
    fields: bool,
}

/// How a pending block's payload, encoded by another node, is stored.
#[derive(Clone, Copy)]
struct StoredPayload {
    codec: block::Codec,
    raw_len: usize,
}

struct PendingAppend {
    entry_count: u64,
    done: oneshot::Sender<Result<SeqRange>>,
}

#[derive(Default)]
struct Pending {
    raw: Vec<u8>,
    blocks: Vec<PendingBlock>,
    appends: Vec<PendingAppend>,
}

impl Pending {
    fn with_capacity() -> Self {
        Pending {
            raw: Vec::with_capacity(limits::PENDING_RAW_BYTES_MAX),
            blocks: Vec::with_capacity(limits::PENDING_RAW_BYTES_MAX / limits::BLOCK_RAW_BYTES_TARGET + 2),
            appends: Vec::with_capacity(limits::PENDING_APPENDS_MAX),
        }
    }

    fn is_empty(&self) -> bool {
        self.appends.is_empty()
    }

    fn clear(&mut self) {
        self.raw.clear();
        self.blocks.clear();
        self.appends.clear();
    }
}

/// A written batch waiting for its fdatasync.
struct Unsynced {
    appends: Vec<(SeqRange, oneshot::Sender<Result<SeqRange>>)>,
    last_seq: u64,
    write_end: u64,
    blocks: usize,
    raw_bytes: u64,
}

struct State {
    active: Active,
    sealed: VecDeque<Sealed>,
    pending: Pending,
    /// The batch buffers not in use, swapped with `pending` by the writer.
    spare: Pending,
    unsynced: VecDeque<Unsynced>,
    next_seq: u64,
    durable_seq: u64,
    /// Set once, by the first write or fdatasync that failed: always an
    /// [`Error::Failed`], handed to every append from then on.
    failure: Option<Error>,
    closing: bool,
    writer_finished: bool,
    stats: ShardStats,
    /// Highest durable origin seq per origin of replicated entries (see
    /// [`Shard::origin_watermarks`]); at most about
    /// [`limits::ORIGINS_PER_SHARD_MAX`] entries.
    origin_watermarks: BTreeMap<OriginKey, u64>,
    /// Sealed segments whose index is loaded, least recent first: first seq
    /// and the index's estimated heap bytes ([`SegmentIndex::memory_bytes`]).
    loaded_indexes: VecDeque<(u64, usize)>,
    /// The spare segment file, once prepared ([`Preallocation::ZeroFill`]).
    spare_segment: Option<(DmaFile, PathBuf)>,
    /// Whether a task is preparing the spare segment.
    preparing_spare: bool,
    /// The last commits' write buffers, newest last: readers of recent
    /// blocks (a follower's pusher, a tail) take them from memory instead
    /// of reading them back from disk. Bounded by
    /// [`limits::RECENT_WRITES_BYTES_MAX`].
    recent_writes: VecDeque<RecentWrite>,
    /// Bytes of block reads the shard's ordered queries hold against
    /// [`limits::QUERY_READ_BYTES_PER_CORE_MAX`] (see `reader::OrderedQuery`).
    query_read_bytes: u64,
}

/// One commit's write buffer, as written at `start` of the segment `path`.
/// Only `start..end` holds blocks: the zero padding after `end` is
/// overwritten on disk by the next commit (which rewrites the tail page).
struct RecentWrite {
    path: PathBuf,
    start: u64,
    end: u64,
    buffer: Rc<glommio::io::DmaBuffer>,
}

struct Inner {
    config: ShardConfig,
    state: RefCell<State>,
    /// Wakes the writer: new pending work, a finished sync, shutdown.
    writer_wake: oneshot::Signal,
    /// Wakes the syncer: a new written batch, shutdown.
    syncer_wake: oneshot::Signal,
    /// Wakes readers waiting for new durable entries.
    durable_wake: oneshot::Signal,
    recovery: RecoveryReport,
    tasks: RefCell<Vec<glommio::task::JoinHandle<()>>>,
    /// The task preparing the spare segment, if any.
    spare_task: RefCell<Option<glommio::task::JoinHandle<()>>>,
    /// The retention pass the last roll started, if it may still run.
    retention_task: RefCell<Option<glommio::task::JoinHandle<()>>>,
    /// One permit: retention passes run one at a time, and no cold
    /// rewrite renames files during one.
    retention_lock: glommio::sync::Semaphore,
    /// One permit: cold rewrite passes run one at a time.
    cold_lock: glommio::sync::Semaphore,
    /// Wakes the cold rewrite's task: a roll, shutdown.
    cold_wake: oneshot::Signal,
    /// The cold rewrite's task, if the policy has one.
    cold_task: RefCell<Option<glommio::task::JoinHandle<()>>>,
}

/// One shard of the log, owned by the executor that opened it. Cloning is
/// cheap and shares the shard.
#[derive(Clone)]
pub struct Shard {
    inner: Rc<Inner>,
}

/// One part of a replicated append ([`Shard::append_replicated_parts`]).
pub enum ReplicatedPart<'a> {
    /// Entries to encode, in blocks of their own.
    Entries(&'a [EntryRef<'a>]),
    /// A block another node encoded, checked with
    /// [`block::check_foreign_block`]: its payload is stored as is.
    Block {
        /// The block's header as checked (its seqs and origin fields are
        /// the sender's and are not used).
        header: block::BlockHeader,
        /// The stored payload, `header.stored_len` bytes.
        payload: &'a [u8],
        /// The distinct tags of its entries, as the check gathered them.
        tags: TagSet,
        /// Its entries' tag sets and words, if the check gathered them
        /// ([`block::check_foreign_block_with`]); else the index records the
        /// union of `tags` as its one set and no word filter.
        /// Boxed: a `BlockTerms` is a few hundred bytes of tables and vectors.
        terms: Option<Box<index::BlockTerms>>,
    },
}

impl ReplicatedPart<'_> {
    fn entry_count(&self) -> u64 {
        match self {
            ReplicatedPart::Entries(entries) => entries.len() as u64,
            ReplicatedPart::Block { header, .. } => u64::from(header.entry_count),
        }
    }
}

/// Resolves once an append is durable (or failed). Dropping it does not
/// cancel the append.
pub struct AppendWait {
    receiver: oneshot::Receiver<Result<SeqRange>>,
}

impl AppendWait {
    /// Waits until the append's entries are durable; returns their seqs.
    pub async fn durable(self) -> Result<SeqRange> {
        self.receiver.await.unwrap_or(Err(Error::Closed))
    }
}

fn now_unix_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as i64)
        .unwrap_or(1)
}

/// Rounds `value` down to a page boundary.
pub(crate) fn page_floor(value: u64) -> u64 {
    value & !(PAGE_BYTES as u64 - 1)
}

/// Rounds `value` up to a page boundary.
pub(crate) fn page_ceil(value: u64) -> u64 {
    page_floor(value + PAGE_BYTES as u64 - 1)
}

/// Most bytes one entry can take in the pending buffer, from its sizes: an
/// upper bound computed before encoding.
fn entry_bytes_bound(entry: &EntryRef<'_>) -> usize {
    let tags: usize = entry.tags.iter().map(|(key, value)| key.len() + value.len() + 16).sum();
    entry.body.len() + tags + 32
}

impl Shard {
    /// Opens (or creates) the shard in `config.dir` and recovers it: sealed
    /// segments are checked through their index files, the active segment is
    /// scanned block by block and any torn tail is zeroed and reported.
    /// Starts the writer and syncer tasks on the current executor.
    pub async fn open(mut config: ShardConfig) -> Result<Shard> {
        // glommio opens directories relative to no directory fd, so a
        // relative path fails with EBADF: make it absolute first.
        config.dir =
            std::path::absolute(&config.dir).map_err(|error| Error::io("resolve shard dir", &config.dir, error))?;
        if !(limits::SEGMENT_BYTES_MIN..=limits::SEGMENT_BYTES_MAX).contains(&config.segment_bytes) {
            return Err(Error::Config(format!(
                "segment_bytes {} outside {}..={}",
                config.segment_bytes,
                limits::SEGMENT_BYTES_MIN,
                limits::SEGMENT_BYTES_MAX
            )));
        }
        if config.pending_appends_max == 0 || config.pending_appends_max > limits::PENDING_APPENDS_MAX {
            return Err(Error::Config(format!(
                "pending_appends_max {} outside 1..={}",
                config.pending_appends_max,
                limits::PENDING_APPENDS_MAX
            )));
        }
        if config.segment_bytes % PAGE_BYTES as u64 != 0 {
            return Err(Error::Config(format!("segment_bytes {} is not a multiple of 4096", config.segment_bytes)));
        }
        let recovered = recovery::recover(&config).await?;
        let durable_seq = recovered.active.index.next_seq() - 1;
        let mut stats = ShardStats { shard: config.shard_id, ..ShardStats::default() };
        stats.last_seq = durable_seq;
        let state = State {
            next_seq: durable_seq + 1,
            durable_seq,
            active: recovered.active,
            sealed: recovered.sealed,
            pending: Pending::with_capacity(),
            spare: Pending::with_capacity(),
            unsynced: VecDeque::with_capacity(UNSYNCED_WRITES_MAX),
            failure: None,
            closing: false,
            writer_finished: false,
            stats,
            origin_watermarks: recovered.origin_watermarks,
            loaded_indexes: VecDeque::new(),
            spare_segment: None,
            preparing_spare: false,
            recent_writes: VecDeque::new(),
            query_read_bytes: 0,
        };
        let shard = Shard {
            inner: Rc::new(Inner {
                config,
                state: RefCell::new(state),
                writer_wake: oneshot::Signal::default(),
                syncer_wake: oneshot::Signal::default(),
                durable_wake: oneshot::Signal::default(),
                recovery: recovered.report,
                tasks: RefCell::new(Vec::new()),
                spare_task: RefCell::new(None),
                retention_task: RefCell::new(None),
                retention_lock: glommio::sync::Semaphore::new(1),
                cold_lock: glommio::sync::Semaphore::new(1),
                cold_wake: oneshot::Signal::default(),
                cold_task: RefCell::new(None),
            }),
        };
        let writer = glommio::spawn_local(writer::run_writer(shard.inner.clone())).detach();
        let syncer = glommio::spawn_local(writer::run_syncer(shard.inner.clone())).detach();
        shard.inner.tasks.borrow_mut().extend([writer, syncer]);
        writer::prepare_spare_segment(&shard.inner);
        cold::start(&shard.inner);
        Ok(shard)
    }

    /// The configuration the shard was opened with.
    pub fn config(&self) -> &ShardConfig {
        &self.inner.config
    }

    /// What recovery found when the shard was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Queues `entries` for the next group commit, all or nothing. Entries
    /// with `timestamp_ns == 0` get the current time. Fails at once, storing
    /// nothing, on an invalid entry, on backpressure or on a failed shard.
    /// The returned [`AppendWait`] resolves with the entries' dense seqs once
    /// they are durable.
    pub fn append(&self, entries: &[EntryRef<'_>]) -> Result<AppendWait> {
        self.append_with_origin(entries, None)
    }

    /// Like [`Shard::append`], for entries replicated from another node:
    /// they keep their origin id (node, shard, seq) and get a block of their
    /// own. Origin seqs of `entries` are `origin.first_seq ..`, dense, and
    /// `origin.first_seq >= 1`. The shard does not deduplicate: the caller
    /// appends each origin's entries once, in increasing origin seq order
    /// (what the leader's watermark check gives). At most
    /// [`limits::ORIGINS_PER_SHARD_MAX`] distinct origins are accepted; an
    /// append from one more fails with [`Error::InvalidAppend`].
    pub fn append_replicated(&self, origin: Origin, entries: &[EntryRef<'_>]) -> Result<AppendWait> {
        self.append_with_origin(entries, Some(origin))
    }

    /// Like [`Shard::append_replicated`], for a run of parts, all or
    /// nothing, as one append: entries to encode, or whole blocks that the
    /// origin node encoded (a follower's blocks, pushed to its leader),
    /// whose payload is stored as is under a header of this shard, so the
    /// leader does not compress what the follower already compressed.
    /// Origin seqs run from `origin.first_seq` on, dense, across the parts
    /// in order.
    pub fn append_replicated_parts(&self, origin: Origin, parts: Vec<ReplicatedPart<'_>>) -> Result<AppendWait> {
        self.append_parts(Some(origin), parts)
    }

    fn append_with_origin(&self, entries: &[EntryRef<'_>], origin: Option<Origin>) -> Result<AppendWait> {
        self.append_parts(origin, vec![ReplicatedPart::Entries(entries)])
    }

    fn append_parts(&self, origin: Option<Origin>, parts: Vec<ReplicatedPart<'_>>) -> Result<AppendWait> {
        let entry_count: u64 = parts.iter().map(ReplicatedPart::entry_count).sum();
        if entry_count == 0 {
            return Err(Error::InvalidAppend(InvalidAppend::Empty));
        }
        if let Some(origin) = origin {
            let fits = origin.first_seq >= 1 && origin.first_seq.checked_add(entry_count).is_some();
            if !fits {
                return Err(Error::InvalidAppend(InvalidAppend::OriginSeqsOutOfRange {
                    first_seq: origin.first_seq,
                    entry_count,
                }));
            }
        }
        let mut bound = 0usize;
        let mut index = 0usize;
        for part in &parts {
            match part {
                ReplicatedPart::Entries(entries) => {
                    for entry in entries.iter() {
                        block::validate_entry(entry).map_err(|source| Error::InvalidEntry { index, source })?;
                        bound += entry_bytes_bound(entry);
                        index += 1;
                    }
                }
                ReplicatedPart::Block { header, payload, .. } => {
                    if payload.len() != header.stored_len as usize {
                        return Err(Error::InvalidAppend(InvalidAppend::StoredPayloadLength {
                            payload_bytes: payload.len(),
                            header_bytes: header.stored_len,
                        }));
                    }
                    bound += payload.len();
                    index += header.entry_count as usize;
                }
            }
        }
        let word_filters = self.inner.config.word_filters;
        let pending_max = limits::pending_raw_bytes_max(self.inner.config.segment_bytes);
        if bound > pending_max {
            return Err(Error::InvalidAppend(InvalidAppend::OverPendingBatch { bytes: bound, limit: pending_max }));
        }
        let mut state = self.inner.state.borrow_mut();
        if let Some(failure) = &state.failure {
            return Err(failure.clone());
        }
        if state.closing {
            return Err(Error::Closed);
        }
        if let Some(origin) = origin {
            let watermarks = &state.origin_watermarks;
            if !watermarks.contains_key(&(origin.node, origin.shard))
                && watermarks.len() >= limits::ORIGINS_PER_SHARD_MAX
            {
                return Err(Error::InvalidAppend(InvalidAppend::TooManyOrigins {
                    shard: self.inner.config.shard_id,
                    origins: watermarks.len(),
                    node: origin.node,
                    origin_shard: origin.shard,
                }));
            }
        }
        let limit = if state.pending.appends.len() >= self.inner.config.pending_appends_max {
            Some("PENDING_APPENDS_MAX")
        } else if state.pending.raw.len() + bound > pending_max {
            Some("PENDING_RAW_BYTES_MAX")
        } else {
            None
        };
        if let Some(limit) = limit {
            state.stats.backpressure_rejections += 1;
            return Err(Error::Backpressure { shard: self.inner.config.shard_id, limit });
        }

        let now = now_unix_ns();
        let pending = &mut state.pending;
        let mut origin_seq = origin.map(|origin| origin.first_seq);
        let origin_at = |seq: Option<u64>| seq.zip(origin).map(|(first_seq, origin)| Origin { first_seq, ..origin });
        for part in parts {
            let entries = match part {
                ReplicatedPart::Entries(entries) => entries,
                ReplicatedPart::Block { header, payload, tags, terms } => {
                    let start = pending.raw.len();
                    pending.raw.extend_from_slice(payload);
                    pending.blocks.push(PendingBlock {
                        raw_start: start,
                        raw_end: pending.raw.len(),
                        entry_count: header.entry_count,
                        min_ts: header.min_ts,
                        max_ts: header.max_ts,
                        origin: origin_at(origin_seq),
                        // The sender's block: its entries' sets and words
                        // are known if this node checked it entry by entry,
                        // else only its pairs (see BlockTerms).
                        terms: terms.map_or_else(|| index::BlockTerms::from_tag_set(&tags), |terms| *terms),
                        stored: Some(StoredPayload { codec: header.codec, raw_len: header.raw_len as usize }),
                        fields: header.version != block::FORMAT_VERSION_NO_FIELDS,
                    });
                    if let Some(seq) = origin_seq.as_mut() {
                        *seq += u64::from(header.entry_count);
                    }
                    continue;
                }
            };
            // A replicated run starts a block of its own, so that one block
            // never mixes origins.
            let mut force_new_block = origin.is_some();
            for entry in entries {
                let timestamp_ns = if entry.timestamp_ns == 0 { now } else { entry.timestamp_ns };
                let start = pending.raw.len();
                let needs_new_block = match pending.blocks.last() {
                    None => true,
                    Some(last) => {
                        // A replicated append continues its own block (its
                        // origin seqs are contiguous); a local append never
                        // joins a replicated block.
                        force_new_block
                            || last.stored.is_some()
                            || last.origin.is_some() != origin.is_some()
                            || last.raw_end - last.raw_start >= limits::BLOCK_RAW_BYTES_TARGET
                            || last.entry_count as usize >= limits::BLOCK_ENTRIES_MAX
                    }
                };
                if needs_new_block {
                    pending.blocks.push(PendingBlock {
                        raw_start: start,
                        raw_end: start,
                        entry_count: 0,
                        min_ts: timestamp_ns,
                        max_ts: timestamp_ns,
                        origin: origin_at(origin_seq),
                        terms: if word_filters { index::BlockTerms::with_words() } else { index::BlockTerms::new() },
                        stored: None,
                        fields: false,
                    });
                    force_new_block = false;
                }
                block::encode_entry(entry, timestamp_ns, &mut pending.raw);
                let end = pending.raw.len();
                let block = pending.blocks.last_mut().expect("a block was pushed above");
                block.raw_end = end;
                block.entry_count += 1;
                block.min_ts = block.min_ts.min(timestamp_ns);
                block.max_ts = block.max_ts.max(timestamp_ns);
                block.fields |= !entry.fields.is_empty();
                block.terms.add_entry(entry.tags.iter().copied());
                block.terms.add_body(entry.body);
                // Keep replicated blocks within one contiguous origin range, and
                // every block under the raw size the codec accepts.
                if let Some(seq) = origin_seq.as_mut() {
                    *seq += 1;
                }
                debug_assert!(block.raw_end - block.raw_start <= limits::BLOCK_RAW_BYTES_MAX);
            }
        }
        let (sender, receiver) = oneshot::channel();
        pending.appends.push(PendingAppend { entry_count, done: sender });
        drop(state);
        self.inner.writer_wake.notify();
        Ok(AppendWait { receiver })
    }

    /// Highest durable seq (0 if the shard is empty).
    pub fn durable_seq(&self) -> u64 {
        self.inner.state.borrow().durable_seq
    }

    /// Lowest seq still on disk (after retention); `durable_seq() + 1` when empty.
    pub fn first_seq(&self) -> u64 {
        let state = self.inner.state.borrow();
        state.sealed.front().map(|sealed| sealed.first_seq).unwrap_or(state.active.first_seq)
    }

    /// Highest durable origin seq per (origin node, origin shard) over the
    /// replicated entries this shard holds; an origin is absent if none.
    /// Rebuilt at open from the data (the origin tables of the sealed
    /// segments' index files, which also carry the watermarks of segments
    /// retention deleted, plus the recovery scan of the active segment), and
    /// updated when commits become durable: a block that is written but not
    /// yet durable is never counted. Retention never lowers it while the
    /// shard is open. See `docs/format.md` for what a restart keeps.
    pub fn origin_watermarks(&self) -> BTreeMap<(u32, u32), u64> {
        self.inner.state.borrow().origin_watermarks.clone()
    }

    /// The watermark of one origin (see [`Shard::origin_watermarks`]); 0 if
    /// the shard holds none of its entries.
    pub fn origin_watermark(&self, node: u32, shard: u32) -> u64 {
        self.inner.state.borrow().origin_watermarks.get(&(node, shard)).copied().unwrap_or(0)
    }

    /// Waits until a seq above `seq` is durable, or the shard closes or fails.
    /// Returns the durable seq then.
    pub async fn wait_durable_after(&self, seq: u64) -> u64 {
        loop {
            let wait = self.inner.durable_wake.wait();
            {
                let state = self.inner.state.borrow();
                if state.durable_seq > seq || state.closing || state.failure.is_some() {
                    return state.durable_seq;
                }
            }
            wait.await;
        }
    }

    /// Counters and sizes.
    pub fn stats(&self) -> ShardStats {
        let state = self.inner.state.borrow();
        let mut stats = state.stats.clone();
        stats.last_seq = state.durable_seq;
        stats.pending_appends = state.pending.appends.len() as u64;
        let first = state.sealed.front().map(|sealed| sealed.first_seq).unwrap_or(state.active.first_seq);
        stats.entries = state.durable_seq + 1 - first;
        stats.segments = state.sealed.len() as u64 + 1;
        let sealed_disk: u64 = state.sealed.iter().map(|sealed| sealed.summary.data_end - segment::DATA_OFFSET).sum();
        stats.disk_bytes = sealed_disk + (state.active.durable_end - segment::DATA_OFFSET);
        stats.raw_bytes =
            state.sealed.iter().map(|sealed| sealed.summary.raw_bytes).sum::<u64>() + state.active.raw_bytes_durable;
        stats
    }

    /// Stops accepting appends, waits until everything already accepted is
    /// durable (or failed), and stops the shard's tasks. Idempotent.
    pub async fn close(&self) -> Result<()> {
        self.inner.state.borrow_mut().closing = true;
        self.inner.writer_wake.notify();
        self.inner.syncer_wake.notify();
        self.inner.durable_wake.notify();
        self.inner.cold_wake.notify();
        let cold_task = self.inner.cold_task.borrow_mut().take();
        if let Some(task) = cold_task {
            task.await;
        }
        let spare_task = self.inner.spare_task.borrow_mut().take();
        if let Some(task) = spare_task {
            task.await;
        }
        let tasks: Vec<_> = self.inner.tasks.borrow_mut().drain(..).collect();
        for task in tasks {
            task.await;
        }
        // The writer has stopped, so no roll starts another pass.
        retention::wait_for_pass(&self.inner).await;
        // The spare segment is not part of the log: leave no file behind.
        self.inner.state.borrow_mut().spare_segment.take();
        if let Ok(listing) = std::fs::read_dir(&self.inner.config.dir) {
            for entry in listing.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("spare-") && name.ends_with(".seg.tmp") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let state = self.inner.state.borrow();
        match &state.failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(()),
        }
    }
}

/// Raises `watermarks` to the last origin seq of each replicated block of
/// `blocks` (blocks that just became durable).
fn advance_watermarks(watermarks: &mut BTreeMap<OriginKey, u64>, blocks: &[BlockMeta]) {
    for block in blocks {
        if let (Some(key), Some(last)) = (block.origin_key(), block.origin_last_seq()) {
            let watermark = watermarks.entry(key).or_insert(0);
            *watermark = (*watermark).max(last);
        }
    }
}

/// The origin seq ranges of the origins that have blocks in a segment
/// (leaving out the ones only carried over).
fn own_origin_seqs(origins: &BTreeMap<OriginKey, OriginSummary>) -> BTreeMap<OriginKey, (u64, u64)> {
    origins.iter().filter_map(|(&key, summary)| summary.seqs.map(|seqs| (key, seqs))).collect()
}
