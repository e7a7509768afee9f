//! A group's Raft log and hard state on disk: append-only segment files of
//! crc'd records, fdatasynced once per round before any message that
//! depends on the round leaves (`docs/format.md`, "Raft log").
//!
//! A round of work ([`Work`]) becomes one write of records — an installed
//! snapshot, the new entries, the hard state, and the applied index noted
//! since the last round — then one fdatasync. Nothing is ever overwritten:
//! an entry record at an index already written replaces that entry and
//! everything after it when the log is read back (raft-rs truncates a
//! follower's uncommitted suffix that way), so a crash mid-write can only
//! leave a torn last record, which recovery cuts.
//!
//! The files are written with O_DIRECT, in whole pages: a round's write
//! starts at the page that holds the end of the log (its bytes are written
//! again, unchanged, so a torn write cannot damage them) and is padded with
//! zeros to the next page; reading back, zeros after the last record end a
//! segment. No page cache: the kernel neither copies the records nor
//! writes them back later, and the round's records are built in one buffer
//! reused round after round.
//!
//! Each segment starts with a checkpoint (the log start, the conf state,
//! the hard state), so whole segments before the compaction point can be
//! deleted without losing any of them. Memory: recovery holds the entries
//! after the last snapshot, which compaction keeps bounded
//! ([`RAFT_LOG_RETAINED_ENTRIES`](crate::limits::RAFT_LOG_RETAINED_ENTRIES)).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState};

use super::group::{Restored, Work};
use super::machine::Pair;
use super::Error;
use crate::limits::{
    ARCHIVE_PAIRS_MAX, PAGE_BYTES, RAFT_LOG_SCRATCH_BYTES_MAX, RAFT_LOG_SEGMENT_BYTES, RAFT_RECORD_BYTES_MAX,
};

/// Bytes of one pair in a `MACHINE` record.
const MACHINE_PAIR_BYTES: usize = 16;
// The whole map fits one record.
const _: () = assert!(9 + ARCHIVE_PAIRS_MAX * MACHINE_PAIR_BYTES < RAFT_RECORD_BYTES_MAX);

/// The archive's state machine as persisted: the index its watermarks
/// stand for, and the watermarks (see `machine.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineState {
    /// The entry the watermarks stand for.
    pub applied: u64,
    /// Every origin pair's watermark.
    pub watermarks: BTreeMap<Pair, u64>,
}

/// Record kinds.
const ENTRY: u8 = 1;
const HARD_STATE: u8 = 2;
/// An installed snapshot: the log restarts after it (every entry dropped).
const SNAPSHOT: u8 = 3;
/// A segment's checkpoint: the log starts after (index, term); entries at
/// or below it are dropped, the others kept.
const LOG_START: u8 = 4;
const CONF_STATE: u8 = 5;
const APPLIED: u8 = 6;
/// The archive's state machine ([`MachineState`]): the index it stands
/// for, a flag (1: the whole map, 0: only the pairs that moved), then
/// (node u32, shard u32, seq u64) per pair.
const MACHINE: u8 = 7;
/// The group's address book: `id=HOST:PORT` lines (UTF-8).
const MEMBERS: u8 = 8;
/// Written by `wormdb cluster recover` ([`fence_record`]): membership
/// changes at or below this index (u64) are never applied.
const CONF_FENCE: u8 = 9;

/// Bytes before a record's payload: length (u32, kind + payload), crc32
/// (of kind and payload), kind.
const RECORD_HEADER_BYTES: usize = 9;

fn log_error(what: &str, path: &Path, error: impl std::fmt::Display) -> Error {
    Error::Log(format!("{what} {}: {error}", path.display()))
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("log-{id:08}"))
}

/// Appends one record whose payload `write` appends to `out` in place (no
/// intermediate buffer: an entry is copied once, into the round's write).
fn record_with(
    out: &mut Vec<u8>,
    kind: u8,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
) -> Result<(), Error> {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.push(kind);
    write(out)?;
    // A longer record would read back as torn, and recovery would cut the
    // log there: never write one (proposals are bounded below this).
    if out.len() - start - 8 > RAFT_RECORD_BYTES_MAX {
        let len = out.len() - start - 8;
        out.truncate(start);
        return Err(Error::Log(format!(
            "a record of {len} bytes is over RAFT_RECORD_BYTES_MAX ({RAFT_RECORD_BYTES_MAX}): not written"
        )));
    }
    let len = (out.len() - start - 8) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Appends one record to `out`.
fn record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let len = (payload.len() + 1) as u32;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

fn u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|value| value.to_le_bytes()).collect()
}

fn read_u64s<const N: usize>(payload: &[u8]) -> Option<[u64; N]> {
    if payload.len() < N * 8 {
        return None;
    }
    let mut values = [0u64; N];
    for (index, value) in values.iter_mut().enumerate() {
        *value = u64::from_le_bytes(payload[index * 8..index * 8 + 8].try_into().ok()?);
    }
    Some(values)
}

fn encode_start(out: &mut Vec<u8>, kind: u8, (index, term): (u64, u64), conf_state: &ConfState) -> Result<(), Error> {
    let mut payload = u64s(&[index, term]);
    payload.extend(conf_state.write_to_bytes().map_err(|error| Error::Log(format!("encode conf state: {error}")))?);
    record(out, kind, &payload);
    Ok(())
}

fn encode_machine(out: &mut Vec<u8>, applied: u64, full: bool, watermarks: &BTreeMap<Pair, u64>) {
    let mut payload = Vec::with_capacity(9 + watermarks.len() * MACHINE_PAIR_BYTES);
    payload.extend_from_slice(&applied.to_le_bytes());
    payload.push(u8::from(full));
    for (&(node, shard), &seq) in watermarks {
        payload.extend_from_slice(&node.to_le_bytes());
        payload.extend_from_slice(&shard.to_le_bytes());
        payload.extend_from_slice(&seq.to_le_bytes());
    }
    record(out, MACHINE, &payload);
}

fn replay_machine(machine: &mut Option<MachineState>, payload: &[u8]) -> Result<(), String> {
    let [applied] = read_u64s::<1>(payload).ok_or("short machine state")?;
    let (Some(&full), pairs) = (payload.get(8), payload.get(9..).unwrap_or_default()) else {
        return Err("short machine state".to_string());
    };
    if pairs.len() % MACHINE_PAIR_BYTES != 0 || full > 1 {
        return Err("malformed machine state".to_string());
    }
    let state = machine.get_or_insert_with(MachineState::default);
    if full == 1 {
        state.watermarks.clear();
    }
    state.applied = applied;
    for pair in pairs.chunks_exact(MACHINE_PAIR_BYTES) {
        let node = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]);
        let shard = u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]);
        let [seq] = read_u64s::<1>(&pair[8..]).ok_or("short machine pair")?;
        state.watermarks.insert((node, shard), seq);
    }
    if state.watermarks.len() > ARCHIVE_PAIRS_MAX {
        return Err(format!("more than {ARCHIVE_PAIRS_MAX} pairs in the machine state"));
    }
    Ok(())
}

fn encode_addrs(out: &mut Vec<u8>, addrs: &BTreeMap<u32, SocketAddr>) {
    let text: String = addrs.iter().map(|(id, addr)| format!("{id}={addr}\n")).collect();
    record(out, MEMBERS, text.as_bytes());
}

fn decode_addrs(payload: &[u8]) -> Result<BTreeMap<u32, SocketAddr>, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "an address book that is not UTF-8".to_string())?;
    text.lines()
        .map(|line| {
            line.split_once('=')
                .and_then(|(id, addr)| Some((id.parse().ok()?, addr.parse().ok()?)))
                .ok_or_else(|| format!("a bad address book line {line:?}"))
        })
        .collect()
}

/// A `MEMBERS` record, whole (header included): the group's address book
/// from this point of the log on (the last one read back wins).
pub fn addrs_record(addrs: &BTreeMap<u32, SocketAddr>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_addrs(&mut out, addrs);
    out
}

/// A `CONF_STATE` record, whole (header included): the group's voters and
/// learners from this point of the log on (the last one read back wins).
/// The one place that says what the record carries; [`decode_conf_state`]
/// reads it back.
pub fn conf_state_record(conf_state: &ConfState) -> Result<Vec<u8>, Error> {
    let payload = conf_state.write_to_bytes().map_err(|error| Error::Log(format!("encode conf state: {error}")))?;
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
    record(&mut out, CONF_STATE, &payload);
    Ok(out)
}

/// A `CONF_FENCE` record, whole: membership-change entries at or below
/// `index` are never applied from this point of the log on.
///
/// `wormdb cluster recover` writes it with the log's last index, after the
/// `CONF_STATE` that leaves the survivor alone: a membership change in
/// the log after the applied index (committed but not applied yet, or in
/// the uncommitted suffix the survivor will commit alone) would otherwise
/// be applied on top of it and bring a lost member back as a voter, and
/// the group could never reach a quorum again.
///
/// The fence needs no copy in later checkpoints: compaction deletes a
/// segment only once every entry in it is applied, and the segment holding
/// the fence holds the entry at its index. Nor does it travel to other
/// replicas: the survivor accepts no membership change (a join) until it
/// has applied its whole log, fence included (raft-rs refuses one while an
/// earlier one may be pending), and a joiner starts from a snapshot taken
/// at the applied index, after every fenced entry.
pub fn fence_record(index: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + 8);
    record(&mut out, CONF_FENCE, &u64s(&[index]));
    out
}

/// The payload of a `CONF_STATE` record (see [`conf_state_record`]).
fn decode_conf_state(payload: &[u8]) -> Result<ConfState, String> {
    ConfState::parse_from_bytes(payload).map_err(|error| format!("bad conf state: {error}"))
}

/// Appends encoded `records` (e.g. [`conf_state_record`]) to the log in
/// `dir` while no replica has it open: for offline tools, run on a stopped
/// node whose data directory lock they hold (`wormdb cluster recover`).
///
/// `segments` is what [`RaftLog::recover`] just found in `dir`; the records
/// go right after the valid records of the last one, as a round would
/// write them: the last partial page is written again with the records
/// after it, padded with zeros to the page, anything after it (a torn
/// round) is cut, and the file is fsynced. The log read back is the one
/// before with the records at its end.
pub fn append_offline(dir: &Path, segments: &[FoundSegment], records: &[u8]) -> Result<(), Error> {
    use std::os::unix::fs::FileExt as _;
    let Some(&(id, _, valid)) = segments.last() else {
        return Err(log_error("append to", dir, "no log segment"));
    };
    let path = segment_path(dir, id);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|error| log_error("open", &path, error))?;
    let tail_start = valid - valid % PAGE_BYTES as u64;
    let mut pages = vec![0; (valid - tail_start) as usize];
    file.read_exact_at(&mut pages, tail_start).map_err(|error| log_error("read", &path, error))?;
    pages.extend_from_slice(records);
    pages.resize(pages.len().div_ceil(PAGE_BYTES) * PAGE_BYTES, 0);
    file.write_all_at(&pages, tail_start)
        .and_then(|()| file.set_len(tail_start + pages.len() as u64))
        .and_then(|()| file.sync_all())
        .map_err(|error| log_error("write", &path, error))
}

fn encode_hard_state(out: &mut Vec<u8>, hard_state: &HardState) {
    record(out, HARD_STATE, &u64s(&[hard_state.term, hard_state.vote, hard_state.commit]));
}

/// The durable log of one group on one replica.
pub struct RaftLog {
    dir: PathBuf,
    /// Closed segments: (id, highest entry index written in it).
    closed: Vec<(u64, u64)>,
    active: DmaFile,
    active_id: u64,
    /// Bytes of records in the active segment (the file runs on with zeros
    /// to the end of its last page).
    active_len: u64,
    /// The records in the active segment's last, partial page: the start
    /// of the next write.
    tail: Vec<u8>,
    /// Where a round's records are built (kept between rounds, up to
    /// `RAFT_LOG_SCRATCH_BYTES_MAX`).
    scratch: Vec<u8>,
    /// Highest entry index written in the active segment.
    active_last_index: u64,
    /// The applied index to note in the next write.
    applied: Option<u64>,
    /// The machine state as the log holds it once the next write is
    /// durable (each checkpoint carries it whole) ...
    machine: MachineState,
    /// ... and the pairs that moved since the last write.
    machine_changed: Option<BTreeMap<Pair, u64>>,
    /// The group's membership and address book as the log holds them once
    /// the next write is durable (each checkpoint carries the book) ...
    addrs: BTreeMap<u32, SocketAddr>,
    /// ... and a change of them to write.
    conf_changed: Option<ConfState>,
    addrs_changed: bool,
}

/// What reading a group's log back found.
#[derive(Default)]
pub struct Recovered {
    /// The state to rebuild the group from (`None`: a new replica).
    pub restored: Option<Restored>,
    /// The archive's state machine (`None`: a log written before it was
    /// persisted, or a new replica).
    pub machine: Option<MachineState>,
    /// The group's address book, when the log holds one (`None`: the
    /// node's members file has it).
    pub addrs: Option<BTreeMap<u32, SocketAddr>>,
    /// Membership changes at or below this index are skipped when applied
    /// (0: none): recovery's [`fence_record`].
    pub conf_fence: u64,
    /// Bytes cut from a torn last record.
    pub torn_bytes: u64,
}

/// A segment found by [`RaftLog::recover`]: (id, highest entry index
/// written in it, bytes of valid records).
pub type FoundSegment = (u64, u64, u64);

impl RaftLog {
    /// Reads the log in `dir` back (blocking: once, before the group
    /// starts). A torn last record of the last segment is cut; a bad record
    /// anywhere else is corruption, refused with its place.
    pub fn recover(dir: &Path) -> Result<(Recovered, Vec<FoundSegment>), Error> {
        let mut ids: Vec<u64> = match std::fs::read_dir(dir) {
            Ok(listing) => listing
                .filter_map(|item| item.ok())
                .filter_map(|item| item.file_name().to_str()?.strip_prefix("log-")?.parse().ok())
                .collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(log_error("read", dir, error)),
        };
        ids.sort_unstable();
        if ids.is_empty() {
            return Ok((Recovered::default(), Vec::new()));
        }
        let mut files = Vec::with_capacity(ids.len());
        for &id in &ids {
            let path = segment_path(dir, id);
            files.push(std::fs::read(&path).map_err(|error| log_error("read", &path, error))?);
        }
        let mut restored = Restored::default();
        // Where the log starts: the latest log start or snapshot of all the
        // segments left (compaction writes one before it deletes the
        // segments it covers), so a segment whose own checkpoint is older
        // does not leave a hole before its first entry.
        for bytes in &files {
            let mut offset = 0usize;
            while let Some((kind, payload, used)) = bytes.get(offset..).and_then(read_record) {
                if let (SNAPSHOT | LOG_START, Some([index, term])) = (kind, read_u64s::<2>(payload)) {
                    if index > restored.snapshot.0 {
                        restored.snapshot = (index, term);
                    }
                }
                offset += used;
            }
        }
        restored.applied = restored.snapshot.0;
        let mut torn_bytes = 0;
        let mut machine = None;
        let mut addrs = None;
        let mut conf_fence = 0;
        // (id, last entry index, valid length) of every segment.
        let mut segments = Vec::new();
        for (position, (&id, bytes)) in ids.iter().zip(&files).enumerate() {
            let path = segment_path(dir, id);
            let mut offset = 0usize;
            let mut last_index = 0;
            while offset < bytes.len() {
                match read_record(&bytes[offset..]) {
                    Some((kind, payload, used)) => {
                        let replayed = match kind {
                            MACHINE => replay_machine(&mut machine, payload),
                            MEMBERS => decode_addrs(payload).map(|book| addrs = Some(book)),
                            CONF_FENCE => read_u64s::<1>(payload)
                                .map(|[index]| conf_fence = conf_fence.max(index))
                                .ok_or_else(|| "short membership fence".to_string()),
                            _ => replay(&mut restored, kind, payload, &mut last_index),
                        };
                        replayed.map_err(|error| log_error("replay", &path, format!("offset {offset}: {error}")))?;
                        offset += used;
                    }
                    // Zeros to the end: the padding of the last page.
                    None if bytes[offset..].iter().all(|&byte| byte == 0) => break,
                    None if position + 1 == ids.len() => {
                        torn_bytes = (bytes.len() - offset) as u64;
                        break;
                    }
                    None => return Err(log_error("corrupt record in", &path, format!("offset {offset}"))),
                }
            }
            segments.push((id, last_index, offset as u64));
        }
        Ok((Recovered { restored: Some(restored), machine, addrs, conf_fence, torn_bytes }, segments))
    }

    /// Opens the log for writing after [`RaftLog::recover`]: the last
    /// segment is cut to its valid length and appended to; a new log gets
    /// a first segment whose checkpoint is `start`. `machine` is the state
    /// machine the replica starts from (the recovered one, or the one
    /// rebuilt from the shard when the log had none); it is written whole
    /// at once.
    pub async fn open(
        dir: &Path,
        segments: Vec<FoundSegment>,
        start: (HardState, ConfState, (u64, u64)),
        machine: MachineState,
        addrs: BTreeMap<u32, SocketAddr>,
    ) -> Result<RaftLog, Error> {
        std::fs::create_dir_all(dir).map_err(|error| log_error("create", dir, error))?;
        let mut segments = segments;
        let Some((active_id, active_last_index, valid)) = segments.pop() else {
            let mut log = RaftLog::create_segment(dir, 1, Vec::new(), 0, machine, addrs).await?;
            log.write_checkpoint(start).await?;
            return Ok(log);
        };
        let path = segment_path(dir, active_id);
        // The records of the last partial page: written again by the next round.
        let tail_start = valid - valid % PAGE_BYTES as u64;
        let mut tail = vec![0; (valid - tail_start) as usize];
        std::fs::File::open(&path)
            .and_then(|file| std::os::unix::fs::FileExt::read_exact_at(&file, &mut tail, tail_start))
            .map_err(|error| log_error("read", &path, error))?;
        let active = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(&path)
            .await
            .map_err(|error| log_error("open", &path, error))?;
        // Whatever follows the records (a torn round) goes.
        active.truncate(valid).await.map_err(|error| log_error("truncate", &path, error))?;
        active.fdatasync().await.map_err(|error| log_error("fdatasync", &path, error))?;
        let mut log = RaftLog {
            dir: dir.to_path_buf(),
            closed: segments.into_iter().map(|(id, last, _)| (id, last)).collect(),
            active,
            active_id,
            active_len: valid,
            tail,
            scratch: Vec::new(),
            active_last_index,
            applied: None,
            machine,
            machine_changed: None,
            addrs,
            conf_changed: None,
            addrs_changed: false,
        };
        let mut out = Vec::new();
        encode_machine(&mut out, log.machine.applied, true, &log.machine.watermarks);
        encode_addrs(&mut out, &log.addrs);
        log.write(&out).await?;
        Ok(log)
    }

    async fn create_segment(
        dir: &Path,
        id: u64,
        closed: Vec<(u64, u64)>,
        active_last_index: u64,
        machine: MachineState,
        addrs: BTreeMap<u32, SocketAddr>,
    ) -> Result<RaftLog, Error> {
        let path = segment_path(dir, id);
        let active = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&path)
            .await
            .map_err(|error| log_error("create", &path, error))?;
        Ok(RaftLog {
            dir: dir.to_path_buf(),
            closed,
            active,
            active_id: id,
            active_len: 0,
            tail: Vec::new(),
            scratch: Vec::new(),
            active_last_index,
            applied: None,
            machine,
            machine_changed: None,
            addrs,
            conf_changed: None,
            addrs_changed: false,
        })
    }

    /// A checkpoint's records: the whole machine state and address book
    /// first (a torn write keeps a prefix: the log must never start past
    /// the machine), then the log start and the hard state.
    fn checkpoint_records(
        &self,
        (hard_state, conf_state, start): (HardState, ConfState, (u64, u64)),
    ) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        encode_machine(&mut out, self.machine.applied, true, &self.machine.watermarks);
        encode_addrs(&mut out, &self.addrs);
        encode_start(&mut out, LOG_START, start, &conf_state)?;
        encode_hard_state(&mut out, &hard_state);
        Ok(out)
    }

    async fn write_checkpoint(&mut self, checkpoint: (HardState, ConfState, (u64, u64))) -> Result<(), Error> {
        let out = self.checkpoint_records(checkpoint)?;
        self.write(&out).await?;
        // The new file's name must survive a crash too.
        sync_dir(&self.dir)
    }

    /// Writes `records` at the end of the active segment (with the
    /// partial page before them, padded with zeros to a whole page), then
    /// fdatasyncs.
    async fn write(&mut self, records: &[u8]) -> Result<(), Error> {
        let path = segment_path(&self.dir, self.active_id);
        let used = self.tail.len() + records.len();
        let total = used.div_ceil(PAGE_BYTES) * PAGE_BYTES;
        let mut buffer = self.active.alloc_dma_buffer(total);
        let bytes = buffer.as_bytes_mut();
        bytes[..self.tail.len()].copy_from_slice(&self.tail);
        bytes[self.tail.len()..used].copy_from_slice(records);
        bytes[used..].fill(0);
        let tail = bytes[used - used % PAGE_BYTES..used].to_vec();
        let position = self.active_len - self.tail.len() as u64;
        let wrote = self.active.write_at(buffer, position).await.map_err(|error| log_error("write", &path, error))?;
        if wrote < total {
            let _ = self.active.truncate(self.active_len).await;
            return Err(log_error("write", &path, format!("short write, {wrote} of {total} bytes (disk full?)")));
        }
        self.active.fdatasync().await.map_err(|error| log_error("fdatasync", &path, error))?;
        self.active_len += records.len() as u64;
        self.tail = tail;
        Ok(())
    }

    /// Notes raft-rs's applied index: written with the next round (it may
    /// lag: the entries after it are handed over again, and the machine's
    /// own state says which of them it holds).
    pub fn note_applied(&mut self, applied: u64) {
        self.applied = Some(applied);
    }

    /// Notes the state machine for the next write: it now stands for entry
    /// `applied`, with `changes` (the watermarks that moved). Only a state
    /// whose appends are all durable is noted.
    pub fn note_machine(&mut self, applied: u64, changes: BTreeMap<Pair, u64>) {
        if applied == self.machine.applied && changes.is_empty() {
            return;
        }
        self.machine.applied = applied;
        self.machine.watermarks.extend(changes.iter().map(|(&pair, &seq)| (pair, seq)));
        self.machine_changed.get_or_insert_with(BTreeMap::new).extend(changes);
    }

    /// Notes a membership change for the next write: the group's voters
    /// and learners, and its address book.
    pub fn note_conf(&mut self, conf: ConfState, addrs: BTreeMap<u32, SocketAddr>) {
        self.conf_changed = Some(conf);
        if addrs != self.addrs {
            self.addrs = addrs;
            self.addrs_changed = true;
        }
    }

    /// Notes the group's address book for the next write (it came with a
    /// snapshot, whose own record carries the voters).
    pub fn note_addrs(&mut self, addrs: BTreeMap<u32, SocketAddr>) {
        if addrs != self.addrs {
            self.addrs = addrs;
            self.addrs_changed = true;
        }
    }

    /// Makes a round durable: one write, one fdatasync. When the segment
    /// is full, the next round starts a new one with `checkpoint()`.
    pub async fn persist(
        &mut self,
        work: &Work,
        checkpoint: impl FnOnce() -> (HardState, ConfState, (u64, u64)),
    ) -> Result<(), Error> {
        let entry_bytes: usize =
            work.entries.iter().map(|entry| entry.compute_size() as usize + RECORD_HEADER_BYTES).sum();
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        out.reserve(entry_bytes + 256);
        // The machine first: a torn round keeps a prefix of its records, and
        // the log must never start (a snapshot) past the machine's state, or
        // raft-rs would never hand over the entries in between.
        if let Some(changed) = self.machine_changed.take() {
            encode_machine(&mut out, self.machine.applied, false, &changed);
        }
        if let Some(snapshot) = &work.snapshot {
            let metadata = snapshot.get_metadata();
            encode_start(&mut out, SNAPSHOT, (metadata.index, metadata.term), metadata.get_conf_state())?;
        }
        for entry in &work.entries {
            record_with(&mut out, ENTRY, |out| {
                entry.write_to_vec(out).map_err(|error| Error::Log(format!("encode entry: {error}")))
            })?;
            self.active_last_index = entry.index;
        }
        if let Some(hard_state) = &work.hard_state {
            encode_hard_state(&mut out, hard_state);
        }
        // A membership change before the applied index that covers it: a
        // torn round that keeps the index keeps the change too (applying
        // the same change again, when only the change is kept, changes
        // nothing).
        if self.addrs_changed {
            self.addrs_changed = false;
            encode_addrs(&mut out, &self.addrs);
        }
        if let Some(conf) = self.conf_changed.take() {
            out.extend_from_slice(&conf_state_record(&conf)?);
        }
        if let Some(applied) = self.applied.take() {
            record(&mut out, APPLIED, &u64s(&[applied]));
        }
        let written = if out.is_empty() { Ok(()) } else { self.write(&out).await };
        if out.capacity() <= RAFT_LOG_SCRATCH_BYTES_MAX {
            self.scratch = out;
        }
        written?;
        if self.active_len >= RAFT_LOG_SEGMENT_BYTES {
            self.roll(checkpoint()).await?;
        }
        Ok(())
    }

    async fn roll(&mut self, checkpoint: (HardState, ConfState, (u64, u64))) -> Result<(), Error> {
        let mut closed = std::mem::take(&mut self.closed);
        closed.push((self.active_id, self.active_last_index));
        let (machine, addrs) = (self.machine.clone(), self.addrs.clone());
        let next =
            RaftLog::create_segment(&self.dir, self.active_id + 1, closed, self.active_last_index, machine, addrs)
                .await?;
        let previous = std::mem::replace(self, next);
        let _ = previous.active.close().await;
        self.write_checkpoint(checkpoint).await
    }

    /// Deletes the closed segments whose every entry is below
    /// `first_index` (the log was compacted there; the newer segments'
    /// checkpoints carry everything else).
    pub async fn compact(&mut self, checkpoint: (HardState, ConfState, (u64, u64))) -> Result<(), Error> {
        let first_index = checkpoint.2 .0 + 1;
        let deletable = self.closed.iter().take_while(|&&(_, last_index)| last_index < first_index).count();
        if deletable == 0 {
            return Ok(());
        }
        // First say durably where the log starts now: the segments after
        // the deleted ones may begin with an older checkpoint, and the
        // entries between it and their first entry are in the deleted ones.
        // The machine's deltas in the segments about to go are folded into
        // its whole state here.
        let out = self.checkpoint_records(checkpoint)?;
        self.write(&out).await?;
        for _ in 0..deletable {
            let (id, _) = self.closed[0];
            let path = segment_path(&self.dir, id);
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "raft log: cannot delete a compacted segment");
                break;
            }
            self.closed.remove(0);
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir).and_then(|file| file.sync_all()).map_err(|error| log_error("fsync", dir, error))
}

/// One record at the start of `bytes`: (kind, payload, bytes used), or
/// `None` when it is torn or fails its crc.
fn read_record(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let header = bytes.get(..RECORD_HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    if len == 0 || len > RAFT_RECORD_BYTES_MAX {
        return None;
    }
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let body = bytes.get(8..8 + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    Some((body[0], &body[1..], 8 + len))
}

/// Applies one record to the state being rebuilt.
fn replay(restored: &mut Restored, kind: u8, payload: &[u8], last_index: &mut u64) -> Result<(), String> {
    match kind {
        ENTRY => {
            let entry = Entry::parse_from_bytes(payload).map_err(|error| format!("bad entry: {error}"))?;
            let first = restored.entries.first().map_or(restored.snapshot.0 + 1, |first| first.index);
            if entry.index <= restored.snapshot.0 {
                return Ok(());
            }
            let next = first + restored.entries.len() as u64;
            if entry.index > next {
                return Err(format!("entry {} after a log ending at {}", entry.index, next - 1));
            }
            // Replaces that index and everything after it.
            restored.entries.truncate((entry.index - first) as usize);
            *last_index = entry.index;
            restored.entries.push(entry);
        }
        HARD_STATE => {
            let [term, vote, commit] = read_u64s::<3>(payload).ok_or("short hard state")?;
            restored.hard_state = HardState { term, vote, commit, ..HardState::default() };
        }
        SNAPSHOT | LOG_START => {
            let [index, term] = read_u64s::<2>(payload).ok_or("short log start")?;
            let conf_state =
                ConfState::parse_from_bytes(&payload[16..]).map_err(|error| format!("bad conf state: {error}"))?;
            if kind == SNAPSHOT {
                restored.entries.clear();
            } else {
                restored.entries.retain(|entry| entry.index > index);
            }
            if index >= restored.snapshot.0 {
                restored.snapshot = (index, term);
            }
            restored.conf_state = conf_state;
            restored.applied = restored.applied.max(if kind == SNAPSHOT { index } else { 0 });
        }
        CONF_STATE => restored.conf_state = decode_conf_state(payload)?,
        APPLIED => {
            let [applied] = read_u64s::<1>(payload).ok_or("short applied index")?;
            restored.applied = restored.applied.max(applied);
        }
        kind => return Err(format!("unknown record kind {kind}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry { index, term, data: data.to_vec().into(), ..Entry::default() }
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make().unwrap().run(future)
    }

    #[test]
    fn a_record_that_could_not_be_read_back_is_never_written() {
        let mut out = b"earlier records".to_vec();
        let error = record_with(&mut out, ENTRY, |out| {
            out.resize(out.len() + RAFT_RECORD_BYTES_MAX, 7);
            Ok(())
        })
        .unwrap_err();
        assert!(error.to_string().contains("RAFT_RECORD_BYTES_MAX"), "{error}");
        assert_eq!(out, b"earlier records", "nothing of it is left in the round");
        // The largest record that reads back is written.
        record_with(&mut out, ENTRY, |out| {
            out.resize(out.len() + RAFT_RECORD_BYTES_MAX - 1, 7);
            Ok(())
        })
        .unwrap();
        let (kind, payload, used) = read_record(&out[b"earlier records".len()..]).unwrap();
        assert_eq!((kind, payload.len(), used), (ENTRY, RAFT_RECORD_BYTES_MAX - 1, RAFT_RECORD_BYTES_MAX + 8));
    }

    #[test]
    fn rounds_come_back_with_overwrites_and_a_torn_tail_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let conf = ConfState::from((vec![1, 2, 3], vec![]));
        let written = path.clone();
        run(async move {
            let mut log = RaftLog::open(
                &written,
                Vec::new(),
                (HardState::default(), conf, (0, 0)),
                MachineState::default(),
                BTreeMap::new(),
            )
            .await
            .unwrap();
            let mut work =
                Work { entries: vec![entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")], ..Work::default() };
            work.hard_state = Some(HardState { term: 1, vote: 1, commit: 1, ..HardState::default() });
            log.persist(&work, || unreachable!()).await.unwrap();
            // A new leader overwrites the uncommitted suffix from index 2.
            let work = Work {
                entries: vec![entry(2, 2, b"B")],
                hard_state: Some(HardState { term: 2, vote: 2, commit: 2, ..HardState::default() }),
                ..Work::default()
            };
            log.note_applied(2);
            log.persist(&work, || unreachable!()).await.unwrap();
        });
        // A torn record after the last good one.
        let segment = segment_path(&path, 1);
        let mut bytes = std::fs::read(&segment).unwrap();
        // Whole pages: the records, then zeros, which end the log quietly.
        assert_eq!(bytes.len() % PAGE_BYTES, 0);
        let (recovered, segments) = RaftLog::recover(&path).unwrap();
        assert_eq!(recovered.torn_bytes, 0);
        let good = segments[0].2 as usize;
        assert!(good < bytes.len() && bytes[good..].iter().all(|&byte| byte == 0));
        // A torn round after them.
        bytes.truncate(good);
        bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]);
        std::fs::write(&segment, &bytes).unwrap();

        let (recovered, segments) = RaftLog::recover(&path).unwrap();
        assert_eq!(recovered.torn_bytes, 7);
        assert_eq!(segments, vec![(1, 2, good as u64)]);
        let restored = recovered.restored.unwrap();
        let entries: Vec<(u64, u64, Vec<u8>)> =
            restored.entries.iter().map(|entry| (entry.index, entry.term, entry.data.to_vec())).collect();
        assert_eq!(entries, vec![(1, 1, b"a".to_vec()), (2, 2, b"B".to_vec())]);
        assert_eq!((restored.hard_state.term, restored.hard_state.vote, restored.hard_state.commit), (2, 2, 2));
        assert_eq!(restored.applied, 2);
        assert_eq!(restored.conf_state.voters, vec![1, 2, 3]);
    }

    #[test]
    fn a_full_segment_rolls_over_with_a_checkpoint_and_compaction_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let conf = ConfState::from((vec![1, 2, 3], vec![]));
        let written = path.clone();
        let (rolled_at, last) = run(async move {
            let mut log = RaftLog::open(
                &written,
                Vec::new(),
                (HardState::default(), conf.clone(), (0, 0)),
                MachineState::default(),
                BTreeMap::new(),
            )
            .await
            .unwrap();
            let body = vec![7u8; 1 << 20];
            let mut index = 0;
            let mut rolled_at = None;
            while rolled_at.is_none() {
                index += 1;
                let work = Work {
                    entries: vec![entry(index, 1, &body)],
                    hard_state: Some(HardState { term: 1, vote: 1, commit: index, ..HardState::default() }),
                    ..Work::default()
                };
                // The checkpoint of the next segment: the log now starts
                // after `index - 2` (two entries kept).
                let start = (index.saturating_sub(2), 1);
                let hard_state = HardState { term: 1, vote: 1, commit: index, ..HardState::default() };
                // The machine moves one of three pairs per round: only
                // deltas are written, until a checkpoint writes it whole.
                log.note_machine(index, BTreeMap::from([((1, (index % 3) as u32), index)]));
                log.persist(&work, || (hard_state, conf.clone(), start)).await.unwrap();
                if log.active_id == 2 {
                    rolled_at = Some(index);
                }
            }
            let rolled_at = rolled_at.unwrap();
            // Two more rounds in the new segment, then compaction past the
            // first segment's entries.
            for index in rolled_at + 1..=rolled_at + 2 {
                let work = Work { entries: vec![entry(index, 1, b"x")], ..Work::default() };
                log.persist(&work, || unreachable!()).await.unwrap();
            }
            // The group compacted to keep two entries: the log starts after
            // `rolled_at`, past every entry of the first segment.
            let checkpoint = (
                HardState { term: 1, vote: 1, commit: rolled_at + 2, ..HardState::default() },
                ConfState::from((vec![1, 2, 3], vec![])),
                (rolled_at, 1),
            );
            // The closed segment ends with the zeros of its last page: not
            // corruption.
            let (recovered, segments) = RaftLog::recover(&written).unwrap();
            assert_eq!((segments.len(), recovered.torn_bytes), (2, 0));
            log.compact(checkpoint).await.unwrap();
            (rolled_at, rolled_at + 2)
        });
        assert!(!segment_path(&path, 1).exists(), "the compacted segment is deleted");
        let (recovered, segments) = RaftLog::recover(&path).unwrap();
        assert_eq!(segments.len(), 1);
        let restored = recovered.restored.unwrap();
        // The new segment begins with an older checkpoint (`rolled_at - 2`)
        // whose next entries were in the deleted segment: the log start
        // compaction wrote says where the log starts, and the entries after
        // it come back with no hole.
        assert_eq!(restored.snapshot, (rolled_at, 1));
        assert_eq!(restored.entries.first().map(|entry| entry.index), Some(rolled_at + 1));
        assert_eq!(restored.entries.last().map(|entry| entry.index), Some(last));
        assert_eq!(restored.hard_state.commit, rolled_at + 2);
        // The machine's deltas in the deleted segment live on in the whole
        // state compaction wrote.
        let machine = recovered.machine.unwrap();
        assert_eq!(machine.applied, rolled_at);
        let expected: BTreeMap<Pair, u64> =
            (rolled_at - 2..=rolled_at).map(|index| ((1, (index % 3) as u32), index)).collect();
        assert_eq!(machine.watermarks, expected);
    }

    #[test]
    fn the_machine_comes_back_from_its_last_whole_state_and_the_deltas_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let conf = ConfState::from((vec![1], vec![]));
        let start = MachineState { applied: 0, watermarks: BTreeMap::from([((9, 0), 5)]) };
        let written = path.clone();
        run(async move {
            let mut log =
                RaftLog::open(&written, Vec::new(), (HardState::default(), conf, (0, 0)), start, BTreeMap::new())
                    .await
                    .unwrap();
            log.note_machine(3, BTreeMap::from([((1, 0), 10)]));
            log.note_machine(4, BTreeMap::from([((2, 0), 7), ((1, 0), 12)]));
            log.persist(&Work::default(), || unreachable!()).await.unwrap();
            // Nothing moved: nothing is written.
            log.note_machine(4, BTreeMap::new());
            assert!(log.machine_changed.is_none());
            log.note_machine(6, BTreeMap::new());
            log.persist(&Work::default(), || unreachable!()).await.unwrap();
            // Noted but never written (a crash before the round): lost.
            log.note_machine(7, BTreeMap::from([((1, 0), 20)]));
        });
        let machine = RaftLog::recover(&path).unwrap().0.machine.unwrap();
        assert_eq!(machine.applied, 6);
        assert_eq!(machine.watermarks, BTreeMap::from([((9, 0), 5), ((1, 0), 12), ((2, 0), 7)]));
    }

    #[test]
    fn a_reopened_log_writes_its_last_page_again_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let conf = ConfState::from((vec![1], vec![]));
        let session = |indexes: std::ops::RangeInclusive<u64>| {
            let (recovered, segments) = RaftLog::recover(&path).unwrap();
            let machine = recovered.machine.unwrap_or_default();
            let (path, conf) = (path.clone(), conf.clone());
            run(async move {
                let mut log =
                    RaftLog::open(&path, segments, (HardState::default(), conf, (0, 0)), machine, BTreeMap::new())
                        .await
                        .unwrap();
                // Records of odd sizes, so rounds end mid-page.
                for index in indexes {
                    let work =
                        Work { entries: vec![entry(index, 1, &vec![b'e'; 1000 + index as usize])], ..Work::default() };
                    log.persist(&work, || unreachable!()).await.unwrap();
                }
            });
        };
        session(1..=3);
        session(4..=9);
        let restored = RaftLog::recover(&path).unwrap().0.restored.unwrap();
        let lengths: Vec<(u64, usize)> = restored.entries.iter().map(|entry| (entry.index, entry.data.len())).collect();
        assert_eq!(lengths, (1..=9).map(|index| (index, 1000 + index as usize)).collect::<Vec<_>>());
    }

    #[test]
    fn a_bad_record_before_the_last_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(segment_path(dir.path(), 1), [9u8; 32]).unwrap();
        std::fs::write(segment_path(dir.path(), 2), []).unwrap();
        let error = RaftLog::recover(dir.path()).err().unwrap();
        assert!(error.to_string().contains("corrupt record"), "{error}");
    }
}
