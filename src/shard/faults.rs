//! The storage fault seam of the commit path, for tests.
//!
//! Every I/O by which a shard makes appends durable goes through the three
//! functions at the bottom of this file: the DMA writes of a commit
//! ([`spawn_write`]), the syncer's fdatasync ([`fdatasync`]) and the
//! creation of the next segment at a roll ([`create_segment`]); and every
//! step of the cold rewrite's swap asks [`cold_step`] first. With no
//! [`Faults`] in [`ShardConfig::faults`](super::ShardConfig::faults) (the
//! production case) each of them is one `match` on an `Option` and then the
//! plain glommio call.
//!
//! With a [`Faults`], two things happen:
//!
//! * **Injection.** Operations of each kind ([`Op`]) are counted from 1 in
//!   the order the shard issues them, and the [`FaultPlan`] says which one
//!   fails and how ([`Fault`]). The shard issues writes, syncs and segment
//!   creations in an order fixed by its appends (writes and segment
//!   creations by the single writer task, syncs by the single syncer task),
//!   so a plan hits the same operation on every run of the same workload.
//! * **Tracking for power loss.** For every page a write touches, the page
//!   as it was durable is kept (read from the file before the write is
//!   issued, or carried over from earlier tracking), and every write not yet
//!   covered by a successful fdatasync is kept with its bytes. A write is
//!   covered by an fdatasync of its file only if it had completed when the
//!   fdatasync was issued. A failed fdatasync *loses* the writes it covered:
//!   they are never made durable by a later fdatasync (Linux marks the
//!   pages clean after a writeback error, so a retried fdatasync succeeds
//!   without writing them: "fsyncgate"). After the shard is closed,
//!   [`Faults::restart`] rewrites the tracked pages to what a restart would
//!   find: after a clean stop, every completed write except the lost ones;
//!   after a power loss, only what successful fdatasyncs covered, plus a
//!   seeded prefix of the unsynced writes (whole writes, then a torn one cut
//!   at a 512-byte sector).
//!
//! What is modelled is file data only: creating, renaming and deleting
//! files, and the writes of recovery, of segment headers, index files and
//! zero-filling, are taken as durable as they happen (each of them is
//! fdatasynced, and the directory synced, before the shard relies on it).
//! Tracking keeps at most the pages of unsynced or lost writes: bounded by
//! the shard's own pipeline limits
//! ([`UNSYNCED_WRITES_MAX`](super::UNSYNCED_WRITES_MAX) commits of at most
//! [`COMMIT_WRITE_BYTES_MAX`](crate::limits::COMMIT_WRITE_BYTES_MAX)).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};

use glommio::io::{DmaBuffer, DmaFile};

use super::PAGE_BYTES;

/// The unit a power loss tears a write at: what a disk writes atomically.
pub const SECTOR_BYTES: usize = 512;

/// A kind of storage operation the seam counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// A DMA write of a commit's blocks into the active segment.
    Write,
    /// An fdatasync of the active segment by the syncer.
    Sync,
    /// Creating the next segment at a roll.
    CreateSegment,
    /// One step of the cold rewrite of a sealed segment, before it is
    /// taken (see `cold.rs` for the steps, in order).
    ColdStep,
}

impl Op {
    const ALL: [Op; 4] = [Op::Write, Op::Sync, Op::CreateSegment, Op::ColdStep];

    fn index(self) -> usize {
        match self {
            Op::Write => 0,
            Op::Sync => 1,
            Op::CreateSegment => 2,
            Op::ColdStep => 3,
        }
    }
}

/// What goes wrong with one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// [`Op::Write`] fails with EIO; nothing of it lands.
    WriteEio,
    /// [`Op::Write`] lands only its first `pages` pages (at most all but
    /// one) and reports success with that many bytes.
    ShortWrite {
        /// Pages that land.
        pages: usize,
    },
    /// [`Op::Write`] lands only its first `pages` pages (at most all but
    /// one) and fails with EIO.
    TornWrite {
        /// Pages that land.
        pages: usize,
    },
    /// [`Op::Sync`] fails with EIO, and the writes it would have covered are
    /// lost (see the module doc).
    SyncEio,
    /// [`Op::CreateSegment`] fails with ENOSPC; nothing is created.
    NoSpace,
    /// [`Op::ColdStep`] fails with EIO before it does anything: the
    /// rewrite gives up and cleans up after itself, as after any I/O error.
    ColdEio,
    /// Any operation: the power goes out as it is issued. It and every later
    /// operation fail with EIO without touching the disk, and operations in
    /// flight report EIO when they complete (whatever the disk did with
    /// them), as if the process had died with the power.
    PowerLoss,
}

impl Fault {
    /// Whether this fault can hit an operation of kind `op`.
    pub fn fits(self, op: Op) -> bool {
        match self {
            Fault::WriteEio | Fault::ShortWrite { .. } | Fault::TornWrite { .. } => op == Op::Write,
            Fault::SyncEio => op == Op::Sync,
            Fault::NoSpace => op == Op::CreateSegment,
            Fault::ColdEio => op == Op::ColdStep,
            Fault::PowerLoss => true,
        }
    }
}

/// Which operations fail: the `nth` operation of a kind (counted from 1,
/// per [`Faults`]) gets a fault. Build with [`FaultPlan::at`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    faults: BTreeMap<(Op, u64), Fault>,
}

impl FaultPlan {
    /// A plan that injects nothing (tracking for power loss still runs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the `nth` operation of kind `op` (1-based) fail with `fault`.
    /// Panics if `fault` cannot hit `op` or `nth` is 0: a test bug.
    pub fn at(mut self, op: Op, nth: u64, fault: Fault) -> Self {
        assert!(fault.fits(op), "{fault:?} cannot hit {op:?}");
        assert!(nth >= 1, "operations are counted from 1");
        self.faults.insert((op, nth), fault);
        self
    }

    /// The planned faults, in (kind, count) order.
    pub fn faults(&self) -> impl Iterator<Item = (Op, u64, Fault)> + '_ {
        self.faults.iter().map(|(&(op, nth), &fault)| (op, nth, fault))
    }
}

/// How the shard stopped, for [`Faults::restart`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// The process stopped cleanly: every completed write stays on disk,
    /// except the writes a failed fdatasync lost.
    Clean,
    /// The power went out: only what successful fdatasyncs covered stays.
    /// With `torn_seed`, a prefix of the unsynced writes (in the order they
    /// were issued) lands as well, its length drawn from the seed in
    /// [`SECTOR_BYTES`] units: some whole writes, then a torn one.
    PowerLoss {
        /// Seed of the landed prefix; `None` lands nothing unsynced.
        torn_seed: Option<u64>,
    },
}

/// What [`Faults::restart`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restarted {
    /// Writes not covered by a successful fdatasync at the restart (the
    /// lost ones not counted).
    pub unsynced_writes: usize,
    /// Bytes of the unsynced writes that landed.
    pub landed_bytes: u64,
    /// Bytes of the unsynced writes that did not.
    pub dropped_bytes: u64,
    /// Pages that a failed fdatasync lost a write of, put back to their
    /// durable bytes (unless a later write covered them).
    pub lost_pages: usize,
    /// Pages rewritten.
    pub pages_rewritten: usize,
}

/// A fault that fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injected {
    /// The kind of operation.
    pub op: Op,
    /// Its count (1-based).
    pub nth: u64,
    /// What happened to it.
    pub fault: Fault,
}

/// A fault plan being applied to one shard, and the tracking of what is
/// durable. Shared (`Arc`) between the test, which keeps a handle to call
/// [`Faults::restart`], and the [`ShardConfig`](super::ShardConfig) of the
/// shard it watches. One `Faults` watches one shard at a time.
pub struct Faults {
    plan: FaultPlan,
    state: Mutex<Tracker>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tracker = self.lock();
        formatter
            .debug_struct("Faults")
            .field("plan", &self.plan)
            .field("counts", &tracker.counts)
            .field("injected", &tracker.injected)
            .field("power_cut", &tracker.power_cut)
            .finish()
    }
}

#[derive(Default)]
struct Tracker {
    counts: [u64; Op::ALL.len()],
    injected: Vec<Injected>,
    power_cut: bool,
    next_write_id: u64,
    files: BTreeMap<PathBuf, FileTrack>,
}

#[derive(Default)]
struct FileTrack {
    /// Page offset → the page's durable bytes, for every page a tracked
    /// write touched whose bytes on disk may differ from them.
    durable: BTreeMap<u64, Vec<u8>>,
    /// Pages a failed fdatasync lost a write of.
    lost: BTreeSet<u64>,
    /// Writes not covered by a successful fdatasync, in issue order.
    unsynced: Vec<TrackedWrite>,
}

struct TrackedWrite {
    id: u64,
    offset: u64,
    /// The bytes that reached the file (a short or torn write's prefix).
    bytes: Vec<u8>,
    completed: bool,
}

impl TrackedWrite {
    fn pages(&self) -> impl Iterator<Item = u64> {
        let page = PAGE_BYTES as u64;
        let end = self.offset + self.bytes.len() as u64;
        (self.offset / page * page..end).step_by(PAGE_BYTES)
    }

    /// Copies the part of this write that falls in `page` (at `page_offset`)
    /// into it, up to `landed` bytes of the write.
    fn overlay(&self, page_offset: u64, page: &mut [u8], landed: usize) {
        let start = self.offset.max(page_offset);
        let end = (self.offset + landed as u64).min(page_offset + PAGE_BYTES as u64);
        if start < end {
            let from = (start - self.offset) as usize..(end - self.offset) as usize;
            let to = (start - page_offset) as usize..(end - page_offset) as usize;
            page[to].copy_from_slice(&self.bytes[from]);
        }
    }
}

/// What the seam decided for one write.
pub(super) struct WriteTicket {
    id: Option<u64>,
    landed: usize,
    outcome: WriteOutcome,
}

#[derive(Clone, Copy)]
enum WriteOutcome {
    Proceed,
    Eio,
    Short,
}

fn eio() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::EIO)
}

impl Faults {
    /// A new fault layer applying `plan`, with nothing tracked yet.
    pub fn new(plan: FaultPlan) -> Arc<Faults> {
        Arc::new(Faults { plan, state: Mutex::new(Tracker::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, Tracker> {
        // A panic while holding the lock is a test failure already; the
        // tracking stays usable for the report.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many operations of kind `op` were issued so far.
    pub fn count(&self, op: Op) -> u64 {
        self.lock().counts[op.index()]
    }

    /// The faults that fired so far, in the order they fired.
    pub fn injected(&self) -> Vec<Injected> {
        self.lock().injected.clone()
    }

    /// Whether the power is out ([`Fault::PowerLoss`] fired, or
    /// [`Faults::cut_power`] was called).
    pub fn power_is_cut(&self) -> bool {
        self.lock().power_cut
    }

    /// Cuts the power now: every later operation fails with EIO, and the
    /// ones in flight report EIO when they complete.
    pub fn cut_power(&self) {
        self.lock().power_cut = true;
    }

    /// Counts an operation of kind `op` and returns its fault, if any. Once
    /// the power is out every operation gets [`Fault::PowerLoss`].
    fn next(&self, tracker: &mut Tracker, op: Op, path: &Path) -> Option<Fault> {
        tracker.counts[op.index()] += 1;
        let nth = tracker.counts[op.index()];
        if tracker.power_cut {
            return Some(Fault::PowerLoss);
        }
        let fault = self.plan.faults.get(&(op, nth)).copied()?;
        if fault == Fault::PowerLoss {
            tracker.power_cut = true;
        }
        tracker.injected.push(Injected { op, nth, fault });
        tracing::debug!(?op, nth, ?fault, path = %path.display(), "injecting a storage fault");
        Some(fault)
    }

    /// Decides the fate of a write of `bytes` at `offset` of `path` and
    /// starts tracking the part that will land. Called before the write is
    /// issued, in issue order.
    pub(super) fn begin_write(&self, path: &Path, offset: u64, bytes: &[u8]) -> std::io::Result<WriteTicket> {
        assert_eq!(offset % PAGE_BYTES as u64, 0, "segment writes are page aligned");
        assert_eq!(bytes.len() % PAGE_BYTES, 0, "segment writes are whole pages");
        let mut tracker = self.lock();
        let fault = self.next(&mut tracker, Op::Write, path);
        let pages = bytes.len() / PAGE_BYTES;
        let (landed_pages, outcome) = match fault {
            None => (pages, WriteOutcome::Proceed),
            Some(Fault::WriteEio | Fault::PowerLoss) => (0, WriteOutcome::Eio),
            Some(Fault::ShortWrite { pages: landed }) => (landed.min(pages.saturating_sub(1)), WriteOutcome::Short),
            Some(Fault::TornWrite { pages: landed }) => (landed.min(pages.saturating_sub(1)), WriteOutcome::Eio),
            Some(other) => unreachable!("{other:?} does not fit a write"),
        };
        let landed = landed_pages * PAGE_BYTES;
        if landed == 0 {
            return Ok(WriteTicket { id: None, landed, outcome });
        }
        let id = tracker.next_write_id;
        tracker.next_write_id += 1;
        let track = tracker.files.entry(path.to_path_buf()).or_default();
        let write = TrackedWrite { id, offset, bytes: bytes[..landed].to_vec(), completed: false };
        // The pages as they are durable: on disk, unless a tracked write
        // touched them already (then `durable` has them).
        let mut file = None;
        for page in write.pages() {
            if track.durable.contains_key(&page) {
                continue;
            }
            let file = match &mut file {
                Some(file) => file,
                None => file.insert(std::fs::File::open(path)?),
            };
            let mut bytes = vec![0; PAGE_BYTES];
            let mut read = 0;
            while read < PAGE_BYTES {
                match file.read_at(&mut bytes[read..], page + read as u64)? {
                    0 => break, // past the end of the file: zeros
                    count => read += count,
                }
            }
            track.durable.insert(page, bytes);
        }
        track.unsynced.push(write);
        Ok(WriteTicket { id: Some(id), landed, outcome })
    }

    fn end_write(&self, id: u64) {
        let mut tracker = self.lock();
        for track in tracker.files.values_mut() {
            if let Some(write) = track.unsynced.iter_mut().find(|write| write.id == id) {
                write.completed = true;
                return;
            }
        }
    }

    /// An fdatasync of `file`, through the plan.
    async fn fdatasync(&self, file: &DmaFile, path: &Path) -> std::io::Result<()> {
        let covered: Vec<u64> = {
            let mut tracker = self.lock();
            let fault = self.next(&mut tracker, Op::Sync, path);
            let track = tracker.files.entry(path.to_path_buf()).or_default();
            let covered = track.unsynced.iter().filter(|write| write.completed).map(|write| write.id).collect();
            match fault {
                None => covered,
                Some(Fault::PowerLoss) => return Err(eio()),
                Some(Fault::SyncEio) => {
                    lose(track, &covered);
                    return Err(eio());
                }
                Some(other) => unreachable!("{other:?} does not fit a sync"),
            }
        };
        let synced = file.fdatasync().await.map_err(std::io::Error::from);
        let mut tracker = self.lock();
        if tracker.power_cut {
            // The power went out before the shard saw this complete.
            return Err(eio());
        }
        let track = tracker.files.entry(path.to_path_buf()).or_default();
        match synced {
            Ok(()) => {
                make_durable(track, &covered);
                Ok(())
            }
            Err(error) => {
                lose(track, &covered);
                Err(error)
            }
        }
    }

    /// Creating the segment `path` at a roll, through the plan.
    fn create_segment(&self, path: &Path) -> std::io::Result<()> {
        let mut tracker = self.lock();
        match self.next(&mut tracker, Op::CreateSegment, path) {
            None => Ok(()),
            Some(Fault::NoSpace) => Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
            Some(Fault::PowerLoss) => Err(eio()),
            Some(other) => unreachable!("{other:?} does not fit a segment creation"),
        }
    }

    /// A step of the cold rewrite on `path`, through the plan: with
    /// [`Fault::PowerLoss`] the process is as good as dead there (the
    /// rewrite stops without cleaning up).
    fn cold_step(&self, path: &Path) -> std::io::Result<()> {
        let mut tracker = self.lock();
        match self.next(&mut tracker, Op::ColdStep, path) {
            None => Ok(()),
            Some(Fault::ColdEio | Fault::PowerLoss) => Err(eio()),
            Some(other) => unreachable!("{other:?} does not fit a cold step"),
        }
    }

    /// Rewrites every tracked page to what a restart after `how` finds, and
    /// starts tracking afresh (the power is back). Call it only once the
    /// shard is closed (or its executor gone): with I/O in flight the
    /// result is undefined. Files deleted since they were written are
    /// skipped.
    pub fn restart(&self, how: Restart) -> std::io::Result<Restarted> {
        let mut tracker = self.lock();
        let files = std::mem::take(&mut tracker.files);
        tracker.power_cut = false;
        drop(tracker);
        let mut report = Restarted::default();
        // How many bytes of the unsynced writes (all files, issue order) land.
        let mut writes: Vec<(&Path, &TrackedWrite)> = files
            .iter()
            .flat_map(|(path, track)| track.unsynced.iter().map(move |write| (path.as_path(), write)))
            .collect();
        writes.sort_by_key(|(_, write)| write.id);
        let unsynced_bytes: u64 = writes.iter().map(|(_, write)| write.bytes.len() as u64).sum();
        let landed_total = match how {
            Restart::Clean => unsynced_bytes,
            Restart::PowerLoss { torn_seed: None } => 0,
            Restart::PowerLoss { torn_seed: Some(seed) } => {
                let sectors = unsynced_bytes / SECTOR_BYTES as u64;
                SplitMix64(seed).below(sectors + 1) * SECTOR_BYTES as u64
            }
        };
        let mut landed_by_id = BTreeMap::new();
        let mut left = landed_total;
        for (_, write) in &writes {
            let landed = left.min(write.bytes.len() as u64);
            landed_by_id.insert(write.id, landed as usize);
            left -= landed;
        }
        report.unsynced_writes = writes.len();
        report.lost_pages = files.values().map(|track| track.lost.len()).sum();
        report.landed_bytes = landed_total;
        report.dropped_bytes = unsynced_bytes - landed_total;
        for (path, track) in &files {
            if track.durable.is_empty() || !path.exists() {
                continue;
            }
            let file = std::fs::OpenOptions::new().write(true).open(path)?;
            for (&page_offset, durable) in &track.durable {
                let mut page = durable.clone();
                for write in &track.unsynced {
                    write.overlay(page_offset, &mut page, landed_by_id[&write.id]);
                }
                file.write_all_at(&page, page_offset)?;
                report.pages_rewritten += 1;
            }
            file.sync_all()?;
        }
        Ok(report)
    }
}

/// The writes `covered` by a failed fdatasync are lost: never durable, and
/// their pages go back to their durable bytes at a restart.
fn lose(track: &mut FileTrack, covered: &[u64]) {
    let (lost, kept): (Vec<_>, Vec<_>) =
        std::mem::take(&mut track.unsynced).into_iter().partition(|write| covered.contains(&write.id));
    track.unsynced = kept;
    for write in &lost {
        track.lost.extend(write.pages());
    }
}

/// The writes `covered` by a successful fdatasync are durable: fold them
/// into the durable pages, and forget the pages whose bytes on disk are now
/// the durable ones.
fn make_durable(track: &mut FileTrack, covered: &[u64]) {
    let (synced, kept): (Vec<_>, Vec<_>) =
        std::mem::take(&mut track.unsynced).into_iter().partition(|write| covered.contains(&write.id));
    track.unsynced = kept;
    let mut touched = BTreeSet::new();
    for write in &synced {
        for page_offset in write.pages() {
            let page = track.durable.get_mut(&page_offset).expect("a written page has its durable bytes");
            write.overlay(page_offset, page, write.bytes.len());
            // Writes are whole pages: this one replaced what was lost there.
            track.lost.remove(&page_offset);
            touched.insert(page_offset);
        }
    }
    for page_offset in touched {
        let still_written = track.unsynced.iter().any(|write| write.pages().any(|page| page == page_offset));
        if !still_written && !track.lost.contains(&page_offset) {
            track.durable.remove(&page_offset);
        }
    }
}

/// A tiny seeded generator (splitmix64), so the library needs no `rand`.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut value = self.0;
        value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        value ^ (value >> 31)
    }

    /// A value in `0..bound` (`bound > 0`); the modulo bias is irrelevant here.
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// Starts the DMA write of `buffer` at `position` of the segment `path`
/// (`file`), through `faults` if any, and returns its task (dropping it
/// cancels the write; the writer awaits every one). The fault
/// decision is taken here, synchronously, so that writes are counted in
/// the order the writer issues them. The task resolves to the bytes
/// written, as glommio's `write_rc_at` does.
pub(super) fn spawn_write(
    faults: Option<&Arc<Faults>>,
    file: Rc<DmaFile>,
    path: &Path,
    buffer: Rc<DmaBuffer>,
    position: u64,
) -> glommio::Task<std::io::Result<usize>> {
    let Some(faults) = faults else {
        return glommio::spawn_local(async move { file.write_rc_at(buffer, position).await.map_err(Into::into) });
    };
    let ticket = faults.begin_write(path, position, buffer.as_bytes());
    let faults = faults.clone();
    glommio::spawn_local(async move {
        let ticket = ticket?;
        if ticket.landed > 0 {
            let written = if ticket.landed == buffer.len() {
                file.write_rc_at(buffer, position).await
            } else {
                let mut prefix = file.alloc_dma_buffer(ticket.landed);
                prefix.as_bytes_mut().copy_from_slice(&buffer.as_bytes()[..ticket.landed]);
                file.write_at(prefix, position).await
            };
            // Tracked as landed even if the real write failed: what reached
            // the disk is then unknown, and a restart may keep it.
            if let Some(id) = ticket.id {
                faults.end_write(id);
            }
            let written = written?;
            if faults.power_is_cut() {
                return Err(eio());
            }
            return match ticket.outcome {
                WriteOutcome::Proceed => Ok(written),
                WriteOutcome::Short => Ok(ticket.landed),
                WriteOutcome::Eio => Err(eio()),
            };
        }
        // A real failed write completes in a later turn of the reactor, not
        // at once: give the other tasks (the syncer) their turn first.
        futures_lite::future::yield_now().await;
        match ticket.outcome {
            WriteOutcome::Short => Ok(0),
            WriteOutcome::Proceed | WriteOutcome::Eio => Err(eio()),
        }
    })
}

/// An fdatasync of the segment `path` (`file`), through `faults` if any.
pub(super) async fn fdatasync(faults: Option<&Arc<Faults>>, file: &DmaFile, path: &Path) -> std::io::Result<()> {
    match faults {
        None => file.fdatasync().await.map_err(Into::into),
        Some(faults) => faults.fdatasync(file, path).await,
    }
}

/// Asks `faults`, if any, whether the next step of the cold rewrite of
/// `path` may be taken; an error is what the step fails with.
pub(super) fn cold_step(faults: Option<&Arc<Faults>>, path: &Path) -> std::io::Result<()> {
    match faults {
        None => Ok(()),
        Some(faults) => faults.cold_step(path),
    }
}

/// Asks `faults`, if any, whether the segment `path` may be created at a
/// roll; an error is what the creation would have failed with.
pub(super) fn create_segment(faults: Option<&Arc<Faults>>, path: &Path) -> std::io::Result<()> {
    match faults {
        None => Ok(()),
        Some(faults) => faults.create_segment(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(id: u64, offset: u64, byte: u8, pages: usize) -> TrackedWrite {
        TrackedWrite { id, offset, bytes: vec![byte; pages * PAGE_BYTES], completed: true }
    }

    fn track_with(writes: Vec<TrackedWrite>) -> FileTrack {
        let mut track = FileTrack::default();
        for write in &writes {
            for page in write.pages() {
                track.durable.entry(page).or_insert_with(|| vec![0; PAGE_BYTES]);
            }
        }
        track.unsynced = writes;
        track
    }

    #[test]
    fn a_synced_write_is_forgotten_unless_a_later_write_shares_its_page() {
        let page = PAGE_BYTES as u64;
        let mut track = track_with(vec![write(0, 0, 1, 2), write(1, page, 2, 2)]);
        make_durable(&mut track, &[0]);
        // Page 0 is durable on disk now; page 1 holds write 0's bytes as its
        // durable image while write 1 is still unsynced.
        assert_eq!(track.durable.keys().copied().collect::<Vec<_>>(), vec![page, 2 * page]);
        assert!(track.durable[&page].iter().all(|&byte| byte == 1));
        assert!(track.durable[&(2 * page)].iter().all(|&byte| byte == 0));
        make_durable(&mut track, &[1]);
        assert!(track.durable.is_empty() && track.unsynced.is_empty());
    }

    #[test]
    fn a_lost_write_stays_lost_after_a_later_successful_sync() {
        let page = PAGE_BYTES as u64;
        let mut track = track_with(vec![write(0, 0, 1, 2), write(1, page, 2, 1)]);
        lose(&mut track, &[0]);
        make_durable(&mut track, &[1]);
        // Page 0 must go back to zeros; page 1 was rewritten and synced.
        assert_eq!(track.durable.keys().copied().collect::<Vec<_>>(), vec![0]);
        assert!(track.durable[&0].iter().all(|&byte| byte == 0));
        assert!(track.lost.contains(&0) && !track.lost.contains(&page));
    }

    #[test]
    fn overlay_copies_only_the_landed_part_within_the_page() {
        let write = write(0, PAGE_BYTES as u64, 7, 2);
        let mut page = vec![0; PAGE_BYTES];
        write.overlay(2 * PAGE_BYTES as u64, &mut page, PAGE_BYTES + SECTOR_BYTES);
        assert!(page[..SECTOR_BYTES].iter().all(|&byte| byte == 7));
        assert!(page[SECTOR_BYTES..].iter().all(|&byte| byte == 0));
        let mut untouched = vec![0; PAGE_BYTES];
        write.overlay(0, &mut untouched, write.bytes.len());
        assert!(untouched.iter().all(|&byte| byte == 0));
    }

    #[test]
    #[should_panic(expected = "cannot hit")]
    fn a_plan_refuses_a_fault_that_cannot_hit_the_operation() {
        let _ = FaultPlan::new().at(Op::Sync, 1, Fault::WriteEio);
    }
}
