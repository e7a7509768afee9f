//! One simulated run of one Raft group of the archive tier: replicas
//! ([`Group`] and [`Machine`] over a simulated disk and archive), the
//! followers that push to them and a client of direct writes, over an
//! in-memory network, all driven by one seeded generator and one event
//! queue in virtual time. Nothing here reads a clock, touches a socket or
//! iterates a hash map, and raft-rs's election timeouts are drawn from the
//! seed ([`Group::set_election_timeout`]), so a seed replays exactly.
//!
//! # The model
//!
//! - **Replicas** (3, or 5 in some seeds) run the round of
//!   `src/tier/group.rs` as the real driver does: `ready`, send `messages`,
//!   write the round's snapshot metadata, entries (an entry at an index
//!   already on disk replaces it and everything after it) and hard state,
//!   fdatasync (a delay), send `persisted_messages`, `persisted`, send, apply.
//!   While a round is out the replica steps nothing: messages, ticks and
//!   client requests wait in its inbox (raft-rs's rule for `Ready`).
//! - **The machine's state lives in the Raft log**, not in the archive: its
//!   watermarks and the index M they stand for ([`Machine::applied`]). It is
//!   written only at an entry boundary whose archive appends are all
//!   durable: the replica keeps a copy of its machine taken at each archive
//!   sync (the live machine runs ahead of it, by the entries applied since),
//!   and writes that copy with the applied index (now and then, lagging),
//!   in a replica's first round, and whenever the log's start moves on disk
//!   (a compaction's log start, a snapshot's metadata: see "the log start"
//!   below).
//! - **Applying** starts with [`Machine::begin`] (an entry at or below M is
//!   skipped whole), then decodes the entry's [`Proposal`], parses each
//!   batch with [`PushedBatch::parse`], admits it with [`Machine::admit`]
//!   and appends its fresh seqs to the replica's archive, **skipping those
//!   the archive already holds** (it may be ahead of the machine: appends of
//!   later entries that were durable before a crash, a snapshot's data
//!   written before a crash). Each archived seq records the Raft index that
//!   archived it, only so that the properties can check it. Archive appends
//!   are durable only at the next archive sync; only then are the replies of
//!   the applied entries sent and [`Group::applied`] told, between two
//!   rounds (it may compact the log, on disk too, from
//!   [`Group::checkpoint`]).
//! - **Crashes** lose the unsynced: a round whose fdatasync did not finish
//!   is lost (or, sometimes, a prefix of its writes survives), and so is
//!   the archive's unsynced tail (or any prefix of its appends: part of an
//!   entry's, part of a snapshot's). Crashes come at random, around rounds
//!   (likelier around an election's) and in the middle of writing a
//!   snapshot's data. The restarted replica rebuilds [`Restored`] from its
//!   disk and its machine from the state its log holds
//!   ([`Machine::restored`]; empty at the group's bootstrap snapshot when none); raft-rs hands
//!   over again what followed its persisted applied index (or its log
//!   start, if later), and `begin` skips what is at or below M.
//! - **The log start.** raft-rs never hands over again what precedes the
//!   log's start on disk, so the machine state written must always stand
//!   for at least that index: the model writes the synced copy with every
//!   compaction's log start and before a snapshot's metadata in its round
//!   (the simulator found that writing it with the applied index alone
//!   loses entries; see `docs/simulation.md`).
//! - **Snapshots.** A `MsgSnapshot` carries the sender's archive when it was
//!   sent (each seq with the index that archived it) and the sender's machine
//!   then: its watermarks and D, its [`Machine::applied`]. The receiver
//!   writes what lies above its archive and syncs, before the message is
//!   stepped; a crash may come in the middle (a prefix of those appends
//!   survives, the machine is not raised, the sender hears a failure). Once
//!   the data is durable the machine is raised ([`Machine::raise_to`]) to
//!   the sender's watermarks and D, and that raised machine is the synced
//!   copy the next write of the state takes; entries at or below D that
//!   raft-rs hands over later are skipped by `begin`. The sender then hears
//!   `report_snapshot` (a failure when the message was lost).
//! - **Network.** Every message (Raft, client request, reply) may be
//!   dropped, duplicated (not direct writes: HTTP/2 does not duplicate a
//!   request), delayed (a few are very slow), and so reordered. Partitions
//!   isolate one replica or split the group, then heal. Clients are not
//!   partitioned.
//! - **Followers** own dense logs of `(pair, seq, content)`, content a
//!   function of pair and seq. Each pair's pusher sends batches (a window
//!   of them) to the replica it believes leads, moves on `NotLeader`
//!   (following the hint), resumes from its last ack on a timeout, a drop
//!   or a refusal, and from the expected seq on a gap.
//! - **Direct writes** (pair `(0, 0)`): the leader picks the seqs (its
//!   applied watermark + the seqs of its direct writes in flight + 1); a
//!   conflict is retried, as is a write whose outcome is unknown (a
//!   timeout, or a leadership change while it was in flight: then it may
//!   be stored twice, which the contract allows).
//!
//! # The properties
//!
//! After every event: at most one leader per term over the whole run; an
//! index applied anywhere always holds the same entry; a replica applies
//! indexes in order; each archive holds each (pair, seq) at most once,
//! dense from 1, with the right content (pushes: the follower's; direct
//! writes: the same write at the same seq on every replica), archived by
//! the same entry on every replica; a seq an append skips because the
//! archive holds it holds the same content, archived by the same entry; a
//! machine's watermarks never exceed its archive's; a machine that stands
//! for index i holds the same watermarks on every replica (the state after
//! entry i), and a restarted machine or one that installed a snapshot
//! stands for at least what raft-rs will not hand over again; no ack above
//! a follower's log.
//! At the end (faults stopped, partitions healed, everyone restarted),
//! making progress until then: every follower entry and every direct write is
//! acked, every replica has applied the same commit index, the archives
//! are equal and every machine's watermarks are its archive's, every acked
//! direct write is at its seqs, and a direct write whose outcome was never
//! in doubt is stored exactly once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use bytes::Bytes;
use prost::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Message, MessageType, Snapshot};
use raft::StateRole;
use wormdb::proto::{LogEntry, Proposal, PushBatch};
use wormdb::replication::batch::PushedBatch;
use wormdb::tier::group::{Group, Restored, Work, BOOTSTRAP};
use wormdb::tier::machine::{Machine, Pair};
use wormdb::tier::{Error, ELECTION_TICKS, ELECTION_TICKS_MAX};

use super::rng::Rng;

/// Virtual time, in tenths of a tick.
type Time = u64;

/// One [`Group::tick`] (`wormdb::tier::TICK`, 100 ms).
const TICK: Time = 10;
/// The pair of the group's direct writes: node 0 is the tier, 0 the group.
const DIRECT: Pair = (0, 0);
/// Most proposals a leader has in flight (`limits::PROPOSALS_IN_FLIGHT_MAX`).
const PROPOSALS_IN_FLIGHT_MAX: usize = 64;
/// Once the faults stop, the run must make progress (an ack, a direct write
/// done, an entry applied somewhere) at least once in this many ticks until
/// it is quiet: a slow run is fine, a stuck one is a liveness failure.
/// Longer than an election, a pusher's timeout and a snapshot's retry.
const STALL_TICKS_MAX: u64 = 300;
/// And it must be quiet within this many ticks after the faults stopped
/// (progress that never ends, such as resends applied forever, is a
/// liveness failure too).
const FINAL_TICKS_MAX: u64 = 20_000;
/// Events of one run; more means the run spins.
const EVENTS_MAX: u64 = 20_000_000;

/// The knobs of one run, drawn from its seed.
#[derive(Clone, Debug)]
pub struct Params {
    pub replicas: usize,
    pub retained_entries: u64,
    pub followers: u32,
    pub shards: u32,
    pub direct_concurrency: usize,
    pub fault_ticks: u64,
    pub delay_max: Time,
    pub slow_per_million: u64,
    pub drop_per_million: u64,
    pub duplicate_per_million: u64,
    pub crash_per_million: u64,
    pub round_crash_per_million: u64,
    pub election_crash_per_million: u64,
    /// A crash while a snapshot's data is being written.
    pub snapshot_crash_per_million: u64,
    pub downtime_ticks_max: u64,
    pub partition_per_million: u64,
    pub partition_ticks_max: u64,
    pub sync_delay_max: Time,
    pub archive_sync_delay_max: Time,
    pub applied_persist_per_million: u64,
    pub torn_per_million: u64,
    pub write_per_million: u64,
    pub batch_entries_max: u64,
    pub window: u32,
    pub timeout_ticks: u64,
    /// Election timeouts are drawn in `[ELECTION_TICKS, ELECTION_TICKS +
    /// election_spread)` (at most the configured range): a narrow range
    /// makes contested elections common.
    pub election_spread: u64,
}

impl Params {
    fn draw(rng: &mut Rng) -> Params {
        Params {
            replicas: if rng.below(4) == 0 { 5 } else { 3 },
            // Mostly a short log, so that compaction and snapshots happen
            // within a run; sometimes the production default.
            retained_entries: if rng.below(5) == 0 {
                wormdb::limits::RAFT_LOG_RETAINED_ENTRIES
            } else {
                rng.between(1, 40)
            },
            followers: rng.between(2, 3) as u32,
            shards: rng.between(1, 2) as u32,
            direct_concurrency: rng.below(4) as usize,
            fault_ticks: rng.between(100, 300),
            delay_max: rng.between(1, 3 * TICK),
            slow_per_million: rng.rate(20_000),
            drop_per_million: rng.rate(150_000),
            duplicate_per_million: rng.rate(50_000),
            crash_per_million: rng.rate(30_000),
            round_crash_per_million: rng.rate(3_000),
            election_crash_per_million: rng.rate(200_000),
            snapshot_crash_per_million: rng.rate(300_000),
            downtime_ticks_max: rng.between(1, 60),
            partition_per_million: rng.rate(30_000),
            partition_ticks_max: rng.between(5, 80),
            sync_delay_max: rng.between(0, 2 * TICK),
            archive_sync_delay_max: rng.between(0, 2 * TICK),
            applied_persist_per_million: rng.between(50_000, 1_000_000),
            torn_per_million: rng.rate(500_000),
            write_per_million: rng.between(100_000, 600_000),
            batch_entries_max: rng.between(1, 12),
            window: rng.between(1, 4) as u32,
            timeout_ticks: rng.between(15, 60),
            election_spread: if rng.below(3) == 0 {
                rng.between(1, 2)
            } else {
                (ELECTION_TICKS_MAX - ELECTION_TICKS) as u64
            },
        }
    }
}

/// What happened in a run, to compare replays and to see that the faults
/// and mechanisms under test were exercised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub terms_led: u64,
    pub crashes: u64,
    pub torn_rounds: u64,
    pub partitions: u64,
    pub entries_applied: u64,
    pub entries_reapplied: u64,
    pub entries_skipped: u64,
    /// Fresh seqs not appended: the archive held them already.
    pub seqs_held: u64,
    pub snapshots_sent: u64,
    pub snapshot_crashes: u64,
    /// Snapshots whose sender's machine stood for an index past the
    /// snapshot's (D > the `MsgSnapshot`'s index).
    pub snapshots_ahead: u64,
    pub snapshots_installed: u64,
    pub compactions: u64,
    pub push_acks: u64,
    pub gaps: u64,
    pub direct_acks: u64,
    pub conflicts: u64,
    pub dropped_proposals: u64,
    pub entries_archived: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.events += other.events;
        self.terms_led += other.terms_led;
        self.crashes += other.crashes;
        self.torn_rounds += other.torn_rounds;
        self.partitions += other.partitions;
        self.entries_applied += other.entries_applied;
        self.entries_reapplied += other.entries_reapplied;
        self.entries_skipped += other.entries_skipped;
        self.seqs_held += other.seqs_held;
        self.snapshots_sent += other.snapshots_sent;
        self.snapshot_crashes += other.snapshot_crashes;
        self.snapshots_ahead += other.snapshots_ahead;
        self.snapshots_installed += other.snapshots_installed;
        self.compactions += other.compactions;
        self.push_acks += other.push_acks;
        self.gaps += other.gaps;
        self.direct_acks += other.direct_acks;
        self.conflicts += other.conflicts;
        self.dropped_proposals += other.dropped_proposals;
        self.entries_archived += other.entries_archived;
    }
}

/// splitmix64's finalizer: contents and digests.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The content of a follower's entry: a function of where it comes from,
/// so any copy can be checked. The top bit is clear.
fn push_content(pair: Pair, seq: u64) -> u64 {
    mix(mix((u64::from(pair.0) << 32) | u64::from(pair.1)) ^ seq) >> 1
}

/// The content of part `part` of direct write `write`: top bit set, and
/// the write and part readable back.
fn direct_content(write: usize, part: usize) -> u64 {
    (1 << 63) | ((write as u64) << 8) | part as u64
}

fn direct_parts(content: u64) -> Option<(usize, usize)> {
    (content >> 63 == 1).then_some((((content & !(1 << 63)) >> 8) as usize, (content & 0xff) as usize))
}

/// FNV-1a, to remember an entry's data without keeping it.
fn digest(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// A replica's Raft log and hard state: what survived the last fdatasync.
#[derive(Clone, Debug, Default)]
struct Disk {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the last snapshot or compaction point.
    snapshot: (u64, u64),
    /// The log after `snapshot`, in index order.
    entries: Vec<Entry>,
    /// The applied index, persisted now and then.
    applied: u64,
    /// The machine's state (watermarks, and the index they stand for) at
    /// an entry boundary whose archive appends are durable; none on a
    /// fresh disk until its first round.
    machine: Option<Machine>,
}

impl Disk {
    fn install_snapshot(&mut self, snapshot: &Snapshot) {
        let metadata = snapshot.get_metadata();
        self.snapshot = (metadata.index, metadata.term);
        self.conf_state = metadata.get_conf_state().clone();
        self.entries.clear();
        // As raft-rs's MemStorage: the snapshot is committed.
        self.hard_state.commit = self.hard_state.commit.max(metadata.index);
        self.hard_state.term = self.hard_state.term.max(metadata.term);
    }

    /// Writes `entries` from their first index on, replacing what was there.
    fn write_entries(&mut self, entries: &[Entry]) -> Result<(), String> {
        let Some(first) = entries.first() else { return Ok(()) };
        let last = self.entries.last().map_or(self.snapshot.0, |entry| entry.index);
        if first.index <= self.snapshot.0 || first.index > last + 1 {
            return Err(format!(
                "entries from {} written to a log holding {}..={last} after snapshot {:?}",
                first.index,
                self.snapshot.0 + 1,
                self.snapshot
            ));
        }
        self.entries.truncate((first.index - self.snapshot.0 - 1) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Drops what precedes a compaction point (the new first segment's
    /// checkpoint, as the real log writes it).
    fn compact(&mut self, checkpoint: (HardState, ConfState, (u64, u64))) {
        let (hard_state, conf_state, snapshot) = checkpoint;
        if snapshot.0 <= self.snapshot.0 {
            return;
        }
        let drop = ((snapshot.0 - self.snapshot.0) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.snapshot = snapshot;
        self.conf_state = conf_state;
        self.hard_state = hard_state;
    }

    fn restored(&self) -> Restored {
        Restored {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
            snapshot: self.snapshot,
            entries: self.entries.clone(),
            applied: self.applied,
        }
    }
}

/// A replica's archive: every pair's entries by seq (index `seq - 1`), each
/// with the Raft index of the entry that appended it (kept only for the
/// properties: recovery does not read it); the last `tail.len()` appends
/// are not synced yet.
#[derive(Clone, Debug, Default)]
struct Archive {
    pairs: BTreeMap<Pair, Vec<Archived>>,
    /// The pair of each unsynced append, in append order.
    tail: Vec<Pair>,
}

/// One archived entry: its content and the Raft index that appended it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Archived {
    content: u64,
    index: u64,
}

/// What a `MsgSnapshot` carries: the sender's archive when it was sent (the
/// batches streamed ahead of the message) and its machine then.
#[derive(Debug)]
struct Streamed {
    archive: BTreeMap<Pair, Vec<Archived>>,
    watermarks: BTreeMap<Pair, u64>,
    /// D: the index the sender's watermarks stand for.
    applied: u64,
}

impl Archive {
    fn len(&self, pair: Pair) -> u64 {
        self.pairs.get(&pair).map_or(0, |entries| entries.len() as u64)
    }

    fn append(&mut self, pair: Pair, seq: u64, archived: Archived) -> Result<(), String> {
        let entries = self.pairs.entry(pair).or_default();
        if seq != entries.len() as u64 + 1 {
            return Err(format!("{pair:?} seq {seq} appended to an archive holding 1..={}", entries.len()));
        }
        entries.push(archived);
        self.tail.push(pair);
        Ok(())
    }

    fn sync(&mut self) {
        self.tail.clear();
    }

    /// A crash: the first `keep` unsynced appends survive.
    fn crash(&mut self, keep: usize) {
        for &pair in self.tail[keep..].iter().rev() {
            if let Some(entries) = self.pairs.get_mut(&pair) {
                entries.pop();
            }
        }
        self.tail.clear();
    }

    /// What the archive holds at (pair, seq).
    fn get(&self, pair: Pair, seq: u64) -> Option<Archived> {
        let at = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.pairs.get(&pair)?.get(at).copied()
    }
}

/// A round whose writes wait for their fdatasync.
#[derive(Debug)]
struct Round {
    /// The machine's state, written first (before a snapshot's metadata:
    /// the log start must never pass the state on disk).
    machine: Option<Machine>,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
    persisted_messages: Vec<Message>,
    committed: Vec<Entry>,
}

impl Round {
    fn writes(&self) -> usize {
        usize::from(self.machine.is_some())
            + usize::from(self.snapshot.is_some())
            + self.entries.len()
            + usize::from(self.hard_state.is_some())
    }

    /// Puts the first `count` writes on `disk`, in the order they are
    /// written (machine, snapshot, entries, hard state).
    fn persist(&self, disk: &mut Disk, mut count: usize) -> Result<(), String> {
        if let Some(machine) = &self.machine {
            if count == 0 {
                return Ok(());
            }
            disk.machine = Some(machine.clone());
            count -= 1;
        }
        if let Some(snapshot) = &self.snapshot {
            if count == 0 {
                return Ok(());
            }
            disk.install_snapshot(snapshot);
            count -= 1;
        }
        let entries = count.min(self.entries.len());
        disk.write_entries(&self.entries[..entries])?;
        count -= entries;
        if let Some(hard_state) = &self.hard_state {
            if count > 0 {
                disk.hard_state = hard_state.clone();
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Request {
    Push { pusher: usize, session: u64, batch: Bytes },
    Direct { write: usize, attempt: u64, contents: Vec<u64> },
}

#[derive(Clone, Debug)]
enum Reply {
    PushAck {
        pusher: usize,
        acked_seq: u64,
    },
    PushGap {
        pusher: usize,
        session: u64,
        expected: u64,
    },
    PushRefused {
        pusher: usize,
        session: u64,
        hint: Option<usize>,
    },
    DirectAck {
        write: usize,
        first_seq: u64,
    },
    DirectConflict {
        write: usize,
        attempt: u64,
    },
    /// Not proposed (`proposed: false`: not the leader, or raft-rs refused
    /// it), or overtaken by a leadership change (may be stored).
    DirectRefused {
        write: usize,
        attempt: u64,
        hint: Option<usize>,
        proposed: bool,
    },
}

/// Who waits on a batch of a proposal.
#[derive(Clone, Debug)]
enum Waiter {
    Push { pusher: usize, session: u64 },
    Direct { write: usize, attempt: u64 },
}

#[derive(Debug)]
struct Pending {
    term: u64,
    waiters: Vec<Waiter>,
    direct_seqs: u64,
}

#[derive(Debug)]
enum Input {
    Tick,
    Raft { from: usize, message: Message, archive: Option<Rc<Streamed>> },
    Request(Request),
    SnapshotReport { peer: u64, done: bool },
    Unreachable(u64),
}

#[derive(Debug)]
enum Event {
    Tick(usize, u64),
    Raft { from: usize, incarnation: u64, to: usize, message: Message, archive: Option<Rc<Streamed>> },
    SyncDone(usize, u64),
    ArchiveSync(usize, u64),
    SnapshotReport { sender: usize, incarnation: u64, peer: u64, done: bool },
    Unreachable { sender: usize, incarnation: u64, peer: u64 },
    Request { to: usize, request: Request },
    Reply(Reply),
    Wake,
    Crash(usize, u64),
    Restart(usize),
    Heal,
}

struct Replica {
    id: u64,
    up: bool,
    incarnation: u64,
    group: Option<Group>,
    /// (term, role) when the election timeout was last drawn.
    drawn_for: (u64, StateRole),
    machine: Machine,
    disk: Disk,
    archive: Archive,
    round: Option<Round>,
    inbox: VecDeque<Input>,
    /// The index of the last entry applied (or snapshot installed).
    last_applied: u64,
    /// The index through which applied effects are synced in the archive.
    synced_through: u64,
    /// The machine as of the last archive sync (or restart, or snapshot
    /// raise): its effects are all durable, so it is what the disk may
    /// take. The live machine runs ahead of it by the entries applied since.
    synced: Machine,
    /// The highest index applied before this incarnation started.
    reapply_through: u64,
    /// Client requests waiting for a proposal.
    queue: Vec<(Waiter, Bytes)>,
    /// This leadership's proposals, by index.
    pending: BTreeMap<u64, Pending>,
    lead_term: u64,
    direct_in_flight: u64,
    /// Replies of applied entries, sent once the archive is synced.
    held: Vec<Reply>,
    archive_sync_scheduled: bool,
}

impl Replica {
    fn group(&mut self) -> &mut Group {
        self.group.as_mut().expect("an up replica has its group")
    }
}

struct Pusher {
    pair: Pair,
    log_len: u64,
    acked: u64,
    next: u64,
    /// The last seq of each batch of this session not acked yet.
    in_flight: VecDeque<u64>,
    session: u64,
    target: usize,
    last_progress: Time,
    /// When the session's last request reaches the replica: a session is
    /// one gRPC stream, whose messages arrive in order.
    stream_clock: Time,
}

struct DirectWrite {
    contents: Vec<u64>,
    attempt: u64,
    target: usize,
    sent_at: Time,
    done: bool,
    /// Its outcome was in doubt once (timeout, or overtaken): it may be
    /// stored more than once.
    ambiguous: bool,
    /// The first seq of every acked attempt.
    acked_at: Vec<u64>,
}

/// One run.
pub struct World {
    pub params: Params,
    pub stats: Stats,
    rng: Rng,
    trace: bool,
    now: Time,
    /// Boxed: a Raft message is large, and the queue moves its values.
    queue: BTreeMap<(Time, u64), Box<Event>>,
    next_event: u64,
    replicas: Vec<Replica>,
    voters: Vec<u64>,
    pushers: Vec<Pusher>,
    writes: Vec<DirectWrite>,
    writes_open: usize,
    /// Directed links that are cut.
    cut: BTreeSet<(usize, usize)>,
    faults: bool,
    fault_end: Time,
    /// term → the replica that led it.
    leaders: BTreeMap<u64, u64>,
    /// index → (term, data digest) of every entry applied anywhere.
    committed: BTreeMap<u64, (u64, u64)>,
    /// (0, 0, seq) → content, as first archived anywhere.
    direct_seen: BTreeMap<u64, u64>,
    /// (pair, seq) → the Raft index of the entry that archived it, first
    /// anywhere: every replica must archive it from the same entry.
    archived_by: BTreeMap<(Pair, u64), u64>,
    /// index → the watermarks after that entry, as first seen anywhere: a
    /// machine that stands for an index holds them on every replica.
    states: BTreeMap<u64, BTreeMap<Pair, u64>>,
    logger: slog::Logger,
}

impl World {
    pub fn new(seed: u64, trace: bool) -> World {
        let mut rng = Rng::new(seed);
        let params = Params::draw(&mut rng);
        let voters: Vec<u64> = (1..=params.replicas as u64).collect();
        let mut pushers = Vec::new();
        for follower in 1..=params.followers {
            for shard in 0..params.shards {
                pushers.push(Pusher {
                    pair: (follower, shard),
                    log_len: 0,
                    acked: 0,
                    next: 1,
                    in_flight: VecDeque::new(),
                    session: 0,
                    target: rng.below(params.replicas as u64) as usize,
                    last_progress: 0,
                    stream_clock: 0,
                });
            }
        }
        let fault_end = params.fault_ticks * TICK;
        let replicas = voters
            .iter()
            .map(|&id| Replica {
                id,
                up: false,
                incarnation: 0,
                group: None,
                drawn_for: (0, StateRole::Follower),
                machine: Machine::default(),
                disk: Disk { conf_state: ConfState::from((voters.clone(), Vec::new())), ..Disk::default() },
                archive: Archive::default(),
                round: None,
                inbox: VecDeque::new(),
                last_applied: 0,
                synced_through: 0,
                synced: Machine::default(),
                reapply_through: 0,
                queue: Vec::new(),
                pending: BTreeMap::new(),
                lead_term: 0,
                direct_in_flight: 0,
                held: Vec::new(),
                archive_sync_scheduled: false,
            })
            .collect();
        World {
            params,
            stats: Stats::default(),
            rng,
            trace,
            now: 0,
            queue: BTreeMap::new(),
            next_event: 0,
            replicas,
            voters,
            pushers,
            writes: Vec::new(),
            writes_open: 0,
            cut: BTreeSet::new(),
            faults: true,
            fault_end,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            direct_seen: BTreeMap::new(),
            archived_by: BTreeMap::new(),
            states: BTreeMap::from([(0, BTreeMap::new())]),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
        }
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.trace {
            println!("{:>7}.{} {}", self.now / TICK, self.now % TICK, what());
        }
    }

    fn schedule(&mut self, at: Time, event: Event) {
        self.next_event += 1;
        self.queue.insert((at, self.next_event), Box::new(event));
    }

    /// Runs the seed to its end: `Err` names the property that failed.
    pub fn run(&mut self) -> Result<(), String> {
        for index in 0..self.replicas.len() {
            self.start(index, None)?;
        }
        self.schedule(0, Event::Wake);
        let mut progress = (0, self.fault_end);
        while let Some(((time, _), event)) = self.queue.pop_first() {
            self.now = time;
            if self.faults && time >= self.fault_end {
                self.end_faults();
            }
            self.stats.events += 1;
            if self.stats.events > EVENTS_MAX {
                return Err(format!("more than {EVENTS_MAX} events: the run spins"));
            }
            self.handle(*event)?;
            self.check_leaders()?;
            if !self.faults && self.quiet() {
                return self.check_end();
            }
            if !self.faults {
                let done = self.done();
                if done != progress.0 {
                    progress = (done, time);
                } else if time > progress.1 + STALL_TICKS_MAX * TICK {
                    return Err(format!(
                        "liveness: no progress for {STALL_TICKS_MAX} ticks after the faults stopped: {}",
                        self.progress()
                    ));
                }
                if time > self.fault_end + FINAL_TICKS_MAX * TICK {
                    return Err(format!(
                        "liveness: not quiet {FINAL_TICKS_MAX} ticks after the faults stopped: {}",
                        self.progress()
                    ));
                }
            }
        }
        Err("the event queue ran dry".to_string())
    }

    /// Boots replica `index` on its disk (a fresh one when `restored` is None).
    fn start(&mut self, index: usize, restored: Option<Restored>) -> Result<(), String> {
        let retained = self.params.retained_entries;
        let replica = &mut self.replicas[index];
        let fresh = restored.is_none();
        let group = {
            let mut group = Group::new(replica.id, 0, &self.voters, restored, &self.logger);
            group.set_retained_entries(retained);
            group
        };
        if fresh {
            // As the real log does when it is created: its first checkpoint
            // (a new group starts from its bootstrap snapshot).
            let (hard_state, conf_state, start) = group.checkpoint();
            replica.disk.hard_state = hard_state;
            replica.disk.conf_state = conf_state;
            replica.disk.snapshot = start;
        }
        replica.last_applied = group.status().applied;
        replica.synced_through = replica.last_applied;
        replica.reapply_through = replica.reapply_through.max(replica.last_applied);
        // The machine is the state the log holds, not what the archive
        // holds (which may be ahead of it).
        replica.machine = match &replica.disk.machine {
            Some(persisted) => Machine::restored(persisted.watermarks().clone(), persisted.applied()),
            // A new group's state is empty, and stands for the snapshot it
            // starts from.
            None => Machine::restored(BTreeMap::new(), BOOTSTRAP.0),
        };
        replica.synced = replica.machine.clone();
        let resumes_after = replica.last_applied;
        let stands_for = replica.machine.applied();
        replica.group = Some(group);
        replica.up = true;
        replica.drawn_for = (u64::MAX, StateRole::Follower);
        let incarnation = replica.incarnation;
        if stands_for < resumes_after {
            return Err(format!(
                "replica {index} restarts with its machine at index {stands_for}, raft-rs resumes after \
                 {resumes_after}: entries {}..={resumes_after} are never applied to it",
                stands_for + 1
            ));
        }
        self.check_machine(index)?;
        self.draw_election_timeout(index);
        let first_tick = self.now + 1 + self.rng.below(TICK);
        self.schedule(first_tick, Event::Tick(index, incarnation));
        Ok(())
    }

    /// raft-rs draws a new election timeout from the thread's RNG whenever
    /// the term or the role changes: replace it with one from the seed.
    fn draw_election_timeout(&mut self, index: usize) {
        let status = self.replicas[index].group().status();
        if (status.term, status.role) != self.replicas[index].drawn_for {
            let ticks = ELECTION_TICKS + self.rng.below(self.params.election_spread) as usize;
            let replica = &mut self.replicas[index];
            replica.drawn_for = (status.term, status.role);
            replica.group().set_election_timeout(ticks);
        }
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Tick(index, incarnation) => {
                if self.replicas[index].incarnation != incarnation || !self.replicas[index].up {
                    return Ok(());
                }
                // A little drift, so that the replicas' clocks do not beat together.
                let next = self.now + TICK - 1 + self.rng.below(3);
                self.schedule(next, Event::Tick(index, incarnation));
                self.replicas[index].inbox.push_back(Input::Tick);
                self.pump(index)
            }
            Event::Raft { from, incarnation, to, message, archive } => {
                let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
                if self.cut.contains(&(from, to)) || !self.replicas[to].up {
                    if snapshot {
                        self.snapshot_failed(from, incarnation, message.to);
                    }
                    return Ok(());
                }
                self.replicas[to].inbox.push_back(Input::Raft { from, message, archive });
                self.pump(to)
            }
            Event::SyncDone(index, incarnation) => {
                if self.replicas[index].incarnation != incarnation {
                    return Ok(());
                }
                self.finish_round(index)?;
                self.pump(index)
            }
            Event::ArchiveSync(index, incarnation) => {
                if self.replicas[index].incarnation != incarnation {
                    return Ok(());
                }
                self.replicas[index].archive_sync_scheduled = false;
                self.sync_archive(index);
                self.pump(index)
            }
            Event::SnapshotReport { sender, incarnation, peer, done } => {
                if self.replicas[sender].incarnation == incarnation && self.replicas[sender].up {
                    self.replicas[sender].inbox.push_back(Input::SnapshotReport { peer, done });
                    self.pump(sender)?;
                }
                Ok(())
            }
            Event::Unreachable { sender, incarnation, peer } => {
                if self.replicas[sender].incarnation == incarnation && self.replicas[sender].up {
                    self.replicas[sender].inbox.push_back(Input::Unreachable(peer));
                    self.pump(sender)?;
                }
                Ok(())
            }
            Event::Request { to, request } => {
                if self.replicas[to].up {
                    self.replicas[to].inbox.push_back(Input::Request(request));
                    self.pump(to)?;
                }
                Ok(())
            }
            Event::Reply(reply) => self.client_reply(reply),
            Event::Wake => {
                self.schedule(self.now + TICK, Event::Wake);
                self.wake()
            }
            Event::Crash(index, incarnation) => {
                if self.replicas[index].incarnation == incarnation && self.replicas[index].up {
                    self.crash(index);
                }
                Ok(())
            }
            Event::Restart(index) => {
                if self.replicas[index].up {
                    return Ok(());
                }
                let disk = &self.replicas[index].disk;
                let machine = disk.machine.as_ref().map_or(0, Machine::applied);
                self.trace(|| {
                    format!(
                        "replica {index} restarts: log start {}, applied {}, machine at {machine}",
                        disk.snapshot.0, disk.applied
                    )
                });
                let restored = self.replicas[index].disk.restored();
                self.start(index, Some(restored))
            }
            Event::Heal => {
                self.cut.clear();
                Ok(())
            }
        }
    }

    /// Drives replica `index` while it is not waiting for an fdatasync:
    /// its next round, else its next input.
    fn pump(&mut self, index: usize) -> Result<(), String> {
        while self.replicas[index].up && self.replicas[index].round.is_none() {
            self.tell_applied(index);
            if let Some(work) = self.replicas[index].group().ready() {
                self.start_round(index, work)?;
                continue;
            }
            let Some(input) = self.replicas[index].inbox.pop_front() else { break };
            self.input(index, input)?;
            if !self.replicas[index].up {
                // It crashed while writing a snapshot's data.
                break;
            }
            self.draw_election_timeout(index);
            self.check_leadership(index);
        }
        Ok(())
    }

    fn input(&mut self, index: usize, input: Input) -> Result<(), String> {
        match input {
            Input::Tick => {
                self.replicas[index].group().tick();
                self.flush(index);
            }
            Input::Raft { from, message, archive } => {
                let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
                if let Some(archive) = archive {
                    // The stream's batches come first, then the message.
                    if !self.install_streamed(index, &archive, &message)? {
                        // A crash in the middle: the stream broke.
                        let incarnation = self.replicas[from].incarnation;
                        self.snapshot_failed(from, incarnation, message.to);
                        return Ok(());
                    }
                }
                // A refused message (a stale response from a removed peer, …)
                // is the sender's problem, not the receiver's.
                let _ = self.replicas[index].group().step(message);
                if snapshot {
                    let incarnation = self.replicas[from].incarnation;
                    let at = self.now + self.rng.between(1, TICK);
                    let peer = self.replicas[index].id;
                    self.schedule(at, Event::SnapshotReport { sender: from, incarnation, peer, done: true });
                }
            }
            Input::Request(request) => {
                if !self.replicas[index].group().is_leader() {
                    let hint = self.hint(index);
                    let reply = match request {
                        Request::Push { pusher, session, .. } => Reply::PushRefused { pusher, session, hint },
                        Request::Direct { write, attempt, .. } => {
                            Reply::DirectRefused { write, attempt, hint, proposed: false }
                        }
                    };
                    self.send_reply(reply);
                    return Ok(());
                }
                let queued = match request {
                    Request::Push { pusher, session, batch } => (Waiter::Push { pusher, session }, batch),
                    Request::Direct { write, attempt, contents } => {
                        // The seqs are chosen when proposed; the bodies travel here.
                        let bodies: Vec<u8> = contents.iter().flat_map(|content| content.to_le_bytes()).collect();
                        (Waiter::Direct { write, attempt }, Bytes::from(bodies))
                    }
                };
                self.replicas[index].queue.push(queued);
                if self.rng.below(2) == 0 {
                    self.flush(index);
                }
            }
            Input::SnapshotReport { peer, done } => self.replicas[index].group().report_snapshot(peer, done),
            Input::Unreachable(peer) => self.replicas[index].group().report_unreachable(peer),
        }
        Ok(())
    }

    /// The leader hint of a refusal, as a replica index.
    fn hint(&mut self, index: usize) -> Option<usize> {
        match self.replicas[index].group().not_leader() {
            Error::NotLeader { leader: Some((id, _)), .. } => Some(id as usize - 1),
            _ => None,
        }
    }

    /// The batches streamed ahead of a `MsgSnapshot` (what the sender's
    /// archive holds, each with the index that archived it): what lies
    /// above this replica's archive is written and synced, and only then is
    /// the machine raised to the sender's (its watermarks and D, the index
    /// they stand for), before the message is stepped (whether raft-rs then
    /// takes the snapshot or not: the data is committed either way). The
    /// raised machine is the synced copy the disk takes next. `false` when
    /// the replica crashed in the middle: a prefix of the appends survives,
    /// the machine is not raised.
    fn install_streamed(&mut self, index: usize, streamed: &Streamed, message: &Message) -> Result<bool, String> {
        for (&pair, entries) in &streamed.archive {
            let held = self.replicas[index].archive.len(pair);
            for seq in held + 1..=entries.len() as u64 {
                self.archive_append(index, pair, seq, entries[seq as usize - 1])?;
            }
        }
        if self.faults && self.rng.chance(self.params.snapshot_crash_per_million) {
            self.stats.snapshot_crashes += 1;
            self.trace(|| format!("replica {index} crashes while writing a snapshot's data"));
            self.crash_with(index, true);
            return Ok(false);
        }
        self.sync_archive(index);
        if streamed.applied > message.get_snapshot().get_metadata().index {
            self.stats.snapshots_ahead += 1;
        }
        let replica = &mut self.replicas[index];
        replica.machine.raise_to(&streamed.watermarks, streamed.applied);
        replica.synced = replica.machine.clone();
        self.check_machine(index)?;
        Ok(true)
    }

    /// Replica `index`'s machine never holds more than its archive, and
    /// holds what every machine holds after the entry it stands for.
    fn check_machine(&mut self, index: usize) -> Result<(), String> {
        let machine = &self.replicas[index].machine;
        let archive = &self.replicas[index].archive;
        for (&pair, &watermark) in machine.watermarks() {
            let held = archive.len(pair);
            if watermark > held {
                return Err(format!("replica {index}: {pair:?} machine watermark {watermark}, archive holds {held}"));
            }
        }
        let applied = machine.applied();
        let state = self.states.entry(applied).or_insert_with(|| machine.watermarks().clone());
        if state != machine.watermarks() {
            return Err(format!(
                "replica {index}: its machine stands for index {applied} with watermarks {:?}, the state after \
                 entry {applied} is {state:?}",
                machine.watermarks()
            ));
        }
        Ok(())
    }

    /// A fresh seq of an admitted batch: appended, unless the archive holds
    /// it already (appended before a crash by this very entry, or written
    /// from a snapshot's data), which must then be what this entry appends.
    fn archive_fresh(&mut self, index: usize, pair: Pair, seq: u64, archived: Archived) -> Result<(), String> {
        let Some(held) = self.replicas[index].archive.get(pair, seq) else {
            return self.archive_append(index, pair, seq, archived);
        };
        if held != archived {
            return Err(format!(
                "replica {index}: entry {} appends {pair:?} seq {seq} with content {:#x}; the archive holds it from \
                 entry {} with content {:#x}",
                archived.index, archived.content, held.index, held.content
            ));
        }
        self.stats.seqs_held += 1;
        Ok(())
    }

    /// Appends to replica `index`'s archive, checking that the entry is the
    /// next of its pair and has the right content.
    fn archive_append(&mut self, index: usize, pair: Pair, seq: u64, archived: Archived) -> Result<(), String> {
        let replica = &mut self.replicas[index];
        replica.archive.append(pair, seq, archived).map_err(|error| format!("replica {index}: {error}"))?;
        let content = archived.content;
        let by = *self.archived_by.entry((pair, seq)).or_insert(archived.index);
        if by != archived.index {
            return Err(format!(
                "replica {index} archives {pair:?} seq {seq} from entry {}, another replica did from entry {by}",
                archived.index
            ));
        }
        self.stats.entries_archived += 1;
        if pair.0 != 0 {
            if content != push_content(pair, seq) {
                return Err(format!("replica {index}: {pair:?} seq {seq} archived with another entry's content"));
            }
            let pusher = self.pushers.iter().find(|pusher| pusher.pair == pair);
            if pusher.is_none_or(|pusher| seq > pusher.log_len) {
                return Err(format!("replica {index}: {pair:?} seq {seq} archived, beyond the follower's log"));
            }
        } else {
            match direct_parts(content) {
                Some((write, part)) if self.writes.get(write).is_some_and(|w| part < w.contents.len()) => {}
                _ => return Err(format!("replica {index}: direct seq {seq} holds {content:#x}, no write's content")),
            }
            let seen = *self.direct_seen.entry(seq).or_insert(content);
            if seen != content {
                return Err(format!(
                    "replica {index}: direct seq {seq} holds write {:?}, another replica holds {:?} there",
                    direct_parts(content),
                    direct_parts(seen)
                ));
            }
        }
        Ok(())
    }

    /// The archive's unsynced tail is durable: send the replies it held;
    /// the group hears it between two rounds ([`World::tell_applied`]).
    fn sync_archive(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        replica.archive.sync();
        replica.synced_through = replica.last_applied;
        replica.synced = replica.machine.clone();
        for reply in std::mem::take(&mut replica.held) {
            self.send_reply(reply);
        }
    }

    /// Tells the group what is applied and durable (between rounds: raft-rs's
    /// rule), compacts the log on disk as in memory (the log start carries
    /// the synced machine), and now and then persists the applied index
    /// with the synced machine.
    fn tell_applied(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        let synced_through = replica.synced_through;
        if synced_through <= replica.group().status().applied {
            return;
        }
        if replica.group().applied(synced_through).is_some() {
            let checkpoint = replica.group().checkpoint();
            // The new log start: raft-rs will not hand over again what
            // precedes it, so the state written with it covers it.
            replica.disk.compact(checkpoint);
            replica.disk.machine = Some(replica.synced.clone());
            self.stats.compactions += 1;
        }
        if self.rng.chance(self.params.applied_persist_per_million) {
            let replica = &mut self.replicas[index];
            replica.disk.applied = replica.group().status().applied;
            replica.disk.machine = Some(replica.synced.clone());
        }
    }

    fn schedule_archive_sync(&mut self, index: usize) {
        if !self.replicas[index].archive_sync_scheduled {
            self.replicas[index].archive_sync_scheduled = true;
            let at = self.now + self.rng.between(0, self.params.archive_sync_delay_max);
            let incarnation = self.replicas[index].incarnation;
            self.schedule(at, Event::ArchiveSync(index, incarnation));
        }
    }

    fn start_round(&mut self, index: usize, mut work: Work) -> Result<(), String> {
        for message in std::mem::take(&mut work.messages) {
            self.send_raft(index, message);
        }
        if let Some(snapshot) = &work.snapshot {
            // raft-rs took it: its data came first (install_streamed), and
            // raised the machine to the sender's, which stands for at least
            // the snapshot's index; raft-rs hands over nothing up to it.
            let snapshot_index = snapshot.get_metadata().index;
            let stands_for = self.replicas[index].machine.applied();
            if stands_for < snapshot_index {
                return Err(format!(
                    "replica {index} takes a snapshot at {snapshot_index}, its machine stands for index \
                     {stands_for}: entries {}..={snapshot_index} are never applied to it",
                    stands_for + 1
                ));
            }
        }
        // The machine's state goes to a fresh disk with its first round,
        // and ahead of a snapshot's metadata (which moves the log start).
        let replica = &self.replicas[index];
        let write_machine = replica.disk.machine.is_none() || work.snapshot.is_some();
        let machine = write_machine.then(|| replica.synced.clone());
        let round = Round {
            machine,
            snapshot: work.snapshot,
            entries: work.entries,
            hard_state: work.hard_state,
            persisted_messages: work.persisted_messages,
            committed: work.committed,
        };
        let writes = round.writes();
        // A round that persists a new term or vote: an election is on.
        let disk = &self.replicas[index].disk.hard_state;
        let election = round
            .hard_state
            .as_ref()
            .is_some_and(|hard_state| (hard_state.term, hard_state.vote) != (disk.term, disk.vote));
        self.replicas[index].round = Some(round);
        if writes == 0 {
            // Nothing to make durable: no fdatasync.
            return self.finish_round(index);
        }
        let slow = if self.faults && self.rng.chance(self.params.slow_per_million) { 10 * TICK } else { 0 };
        let at = self.now + self.rng.between(0, self.params.sync_delay_max) + self.rng.below(slow + 1);
        let incarnation = self.replicas[index].incarnation;
        self.schedule(at, Event::SyncDone(index, incarnation));
        let crash = if election { self.params.election_crash_per_million } else { self.params.round_crash_per_million };
        if self.faults && self.rng.chance(crash) {
            // A crash around this round: before its fdatasync (the round
            // is lost), or just after its messages (a vote) left.
            let crash_at = self.now + self.rng.between(0, at - self.now + TICK);
            self.schedule(crash_at, Event::Crash(index, incarnation));
        }
        Ok(())
    }

    /// The round's fdatasync finished: persist, send, apply.
    fn finish_round(&mut self, index: usize) -> Result<(), String> {
        let round = self.replicas[index].round.take().expect("a round is out");
        let writes = round.writes();
        round.persist(&mut self.replicas[index].disk, writes).map_err(|error| format!("replica {index}: {error}"))?;
        for message in round.persisted_messages {
            self.send_raft(index, message);
        }
        let after = self.replicas[index].group().persisted();
        for message in after.messages {
            self.send_raft(index, message);
        }
        if let Some(snapshot) = &round.snapshot {
            let snapshot_index = snapshot.get_metadata().index;
            let replica = &mut self.replicas[index];
            if snapshot_index < replica.last_applied {
                return Err(format!(
                    "replica {index} installed a snapshot at {snapshot_index} behind its applied index {}",
                    replica.last_applied
                ));
            }
            replica.last_applied = snapshot_index;
            self.stats.snapshots_installed += 1;
            self.trace(|| format!("replica {index} installed a snapshot at {snapshot_index}"));
        }
        self.check_leadership(index);
        let committed: Vec<Entry> = round.committed.into_iter().chain(after.committed).collect();
        if !committed.is_empty() {
            for entry in committed {
                self.apply(index, entry)?;
            }
            self.schedule_archive_sync(index);
        }
        Ok(())
    }

    fn apply(&mut self, index: usize, entry: Entry) -> Result<(), String> {
        let replica = &mut self.replicas[index];
        if entry.index != replica.last_applied + 1 {
            return Err(format!("replica {index} applies index {} after {}", entry.index, replica.last_applied));
        }
        replica.last_applied = entry.index;
        let begun = replica.machine.begin(entry.index);
        let again = entry.index <= replica.reapply_through;
        match (begun, again) {
            (false, _) => self.stats.entries_skipped += 1,
            (true, true) => self.stats.entries_reapplied += 1,
            (true, false) => self.stats.entries_applied += 1,
        }
        let identity = (entry.term, digest(&entry.data));
        let known = *self.committed.entry(entry.index).or_insert(identity);
        if known != identity {
            return Err(format!(
                "replica {index} applies (term {}, digest {:#x}) at index {}, where (term {}, digest {:#x}) was applied",
                identity.0, identity.1, entry.index, known.0, known.1
            ));
        }
        if !begun {
            // Its effects are in the archive already.
            if let Some(pending) = self.replicas[index].pending.remove(&entry.index) {
                return Err(format!("replica {index} skips entry {}, which it proposed: {pending:?}", entry.index));
            }
            return Ok(());
        }
        let mut outcomes = Vec::new();
        if !entry.data.is_empty() {
            let proposal =
                Proposal::decode(entry.data.clone()).map_err(|error| format!("entry {}: {error}", entry.index))?;
            for batch in proposal.batches {
                let batch =
                    PushedBatch::parse(batch).map_err(|error| format!("entry {}: batch: {error}", entry.index))?;
                let pair = (batch.follower_id, batch.shard);
                let outcome = self.replicas[index].machine.admit(pair, batch.seqs(), proposal.direct);
                if let Ok(admission) = &outcome {
                    for position in admission.duplicates..batch.len() {
                        let view = batch.entry(position);
                        let content = u64::from_le_bytes(view.body.try_into().map_err(|_| "a body of 8 bytes")?);
                        let archived = Archived { content, index: entry.index };
                        self.archive_fresh(index, pair, view.seq, archived)?;
                    }
                }
                let replica = &self.replicas[index];
                let (machine, archive) = (replica.machine.watermark(pair), replica.archive.len(pair));
                if machine > archive {
                    return Err(format!(
                        "replica {index}: {pair:?} machine watermark {machine}, archive holds {archive}"
                    ));
                }
                if self.trace {
                    let seqs: Vec<u64> = batch.seqs().collect();
                    let (first, last) = (seqs.first().copied().unwrap_or(0), seqs.last().copied().unwrap_or(0));
                    self.trace(|| {
                        format!("replica {index} index {}: {pair:?} {first}..={last}: {outcome:?}", entry.index)
                    });
                }
                outcomes.push(outcome.map(|admission| (admission.first_seq, machine)));
            }
        }
        self.check_machine(index)?;
        let Some(pending) = self.replicas[index].pending.remove(&entry.index) else { return Ok(()) };
        self.replicas[index].direct_in_flight -= pending.direct_seqs;
        if pending.term != entry.term {
            self.refuse_waiters(index, pending.waiters, true);
            return Ok(());
        }
        if pending.waiters.len() != outcomes.len() {
            return Err(format!(
                "entry {}: {} waiters for {} batches",
                entry.index,
                pending.waiters.len(),
                outcomes.len()
            ));
        }
        for (waiter, outcome) in pending.waiters.into_iter().zip(outcomes) {
            let reply = match (waiter, outcome) {
                (Waiter::Push { pusher, .. }, Ok((_, watermark))) => Reply::PushAck { pusher, acked_seq: watermark },
                (
                    Waiter::Push { pusher, session },
                    Err(Error::Replication(wormdb::replication::Error::Gap { expected, .. })),
                ) => Reply::PushGap { pusher, session, expected },
                (Waiter::Direct { write, .. }, Ok((first_seq, _))) => Reply::DirectAck { write, first_seq },
                (Waiter::Direct { write, attempt }, Err(Error::Conflict { .. })) => {
                    Reply::DirectConflict { write, attempt }
                }
                (waiter, Err(error)) => {
                    return Err(format!("entry {}: {waiter:?} refused at apply: {error}", entry.index));
                }
            };
            self.replicas[index].held.push(reply);
        }
        Ok(())
    }

    /// Proposals wait on the leadership (term) that made them: once it
    /// ends, their waiters hear they may or may not be stored.
    fn check_leadership(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        if !replica.up {
            return;
        }
        let status = replica.group().status();
        let leader = status.role == StateRole::Leader;
        if !replica.pending.is_empty() && (!leader || status.term != replica.lead_term) {
            let pending = std::mem::take(&mut replica.pending);
            replica.direct_in_flight = 0;
            for (_, pending) in pending {
                self.refuse_waiters(index, pending.waiters, true);
            }
        }
        let replica = &mut self.replicas[index];
        if replica.pending.is_empty() {
            replica.lead_term = status.term;
        }
        if !leader && !replica.queue.is_empty() {
            let queued: Vec<Waiter> = replica.queue.drain(..).map(|(waiter, _)| waiter).collect();
            self.refuse_waiters(index, queued, false);
        }
    }

    fn refuse_waiters(&mut self, index: usize, waiters: Vec<Waiter>, proposed: bool) {
        let hint = self.hint(index);
        if proposed {
            self.stats.dropped_proposals += 1;
        }
        for waiter in waiters {
            let reply = match waiter {
                Waiter::Push { pusher, session } => Reply::PushRefused { pusher, session, hint },
                Waiter::Direct { write, attempt } => Reply::DirectRefused { write, attempt, hint, proposed },
            };
            self.send_reply(reply);
        }
    }

    /// Proposes what the leader's queue holds: the pushes as one group
    /// commit, the direct writes as another, with their seqs.
    fn flush(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        if replica.queue.is_empty() || replica.pending.len() >= PROPOSALS_IN_FLIGHT_MAX {
            return;
        }
        if !replica.group().is_leader() {
            return self.check_leadership(index);
        }
        let queued = std::mem::take(&mut replica.queue);
        let mut pushes = (Vec::new(), Vec::new());
        let mut directs = (Vec::new(), Vec::new());
        let mut next_direct = replica.machine.watermark(DIRECT) + replica.direct_in_flight + 1;
        let first_direct = next_direct;
        for (waiter, bytes) in queued {
            match waiter {
                Waiter::Push { .. } => {
                    pushes.0.push(waiter);
                    pushes.1.push(bytes);
                }
                Waiter::Direct { .. } => {
                    let entries = bytes
                        .chunks(8)
                        .map(|body| {
                            next_direct += 1;
                            LogEntry { seq: next_direct - 1, body: Bytes::copy_from_slice(body), ..LogEntry::default() }
                        })
                        .collect();
                    let batch = PushBatch {
                        durable_seq: 0,
                        follower_id: DIRECT.0,
                        shard: DIRECT.1,
                        entries,
                        blocks: Vec::new(),
                    };
                    directs.0.push(waiter);
                    directs.1.push(Bytes::from(batch.encode_to_vec()));
                }
            }
        }
        for (direct, (waiters, batches)) in [(false, pushes), (true, directs)] {
            if waiters.is_empty() {
                continue;
            }
            let direct_seqs = if direct { next_direct - first_direct } else { 0 };
            let data = Proposal { batches, direct, block_tags: Vec::new(), block_terms: Vec::new() }.encode_to_vec();
            let replica = &mut self.replicas[index];
            match replica.group().propose(data) {
                Ok((proposed_index, term)) => {
                    debug_assert!(replica.pending.is_empty() || replica.lead_term == term);
                    replica.lead_term = term;
                    replica.direct_in_flight += direct_seqs;
                    replica.pending.insert(proposed_index, Pending { term, waiters, direct_seqs });
                }
                Err(_) => self.refuse_waiters(index, waiters, false),
            }
        }
    }

    fn delay(&mut self) -> Time {
        let slow = if self.faults && self.rng.chance(self.params.slow_per_million) { 10 * TICK } else { 0 };
        self.rng.between(0, self.params.delay_max) + self.rng.below(slow + 1)
    }

    fn send_raft(&mut self, from: usize, message: Message) {
        let to = message.to as usize - 1;
        let incarnation = self.replicas[from].incarnation;
        let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
        let archive = snapshot.then(|| {
            let sender = &self.replicas[from];
            Rc::new(Streamed {
                archive: sender.archive.pairs.clone(),
                watermarks: sender.machine.watermarks().clone(),
                applied: sender.machine.applied(),
            })
        });
        if snapshot {
            self.stats.snapshots_sent += 1;
            self.trace(|| {
                format!("replica {from} sends a snapshot at {} to {to}", message.get_snapshot().get_metadata().index)
            });
        }
        let cut = self.cut.contains(&(from, to));
        if cut || (self.faults && self.rng.chance(self.params.drop_per_million)) {
            if snapshot {
                self.snapshot_failed(from, incarnation, message.to);
            } else if cut && self.rng.below(4) == 0 {
                let at = self.now + self.rng.between(1, TICK);
                self.schedule(at, Event::Unreachable { sender: from, incarnation, peer: message.to });
            }
            return;
        }
        if self.faults && self.rng.chance(self.params.duplicate_per_million) {
            let at = self.now + self.delay();
            let event = Event::Raft { from, incarnation, to, message: message.clone(), archive: archive.clone() };
            self.schedule(at, event);
        }
        let at = self.now + self.delay();
        self.schedule(at, Event::Raft { from, incarnation, to, message, archive });
    }

    /// The transport tells the sender its snapshot did not make it (after
    /// its stream timed out).
    fn snapshot_failed(&mut self, sender: usize, incarnation: u64, peer: u64) {
        let at = self.now + self.rng.between(TICK, 5 * TICK);
        self.schedule(at, Event::SnapshotReport { sender, incarnation, peer, done: false });
    }

    /// Client traffic: drops and delays, duplicates for pushes only.
    fn send_client(&mut self, event: Event, may_duplicate: bool) {
        let at = self.now + self.delay();
        self.send_client_at(at, event, may_duplicate);
    }

    /// Client traffic arriving at `at` (a duplicate arrives whenever: a
    /// retried push of its own).
    fn send_client_at(&mut self, at: Time, event: Event, may_duplicate: bool) {
        if self.faults && self.rng.chance(self.params.drop_per_million) {
            return;
        }
        if may_duplicate && self.faults && self.rng.chance(self.params.duplicate_per_million) {
            let copy = match &event {
                Event::Request { to, request } => Event::Request { to: *to, request: request.clone() },
                Event::Reply(reply) => Event::Reply(reply.clone()),
                _ => unreachable!("client traffic"),
            };
            let at = self.now + self.delay();
            self.schedule(at, copy);
        }
        self.schedule(at, event);
    }

    fn send_reply(&mut self, reply: Reply) {
        let may_duplicate = matches!(reply, Reply::PushAck { .. } | Reply::PushGap { .. } | Reply::PushRefused { .. });
        self.send_client(Event::Reply(reply), may_duplicate);
    }

    /// Once a tick: faults, followers' writes, clients' timeouts and sends.
    fn wake(&mut self) -> Result<(), String> {
        if self.faults {
            if self.rng.chance(self.params.crash_per_million) {
                let index = self.rng.below(self.replicas.len() as u64) as usize;
                if self.replicas[index].up {
                    self.crash(index);
                }
            }
            if self.cut.is_empty() && self.rng.chance(self.params.partition_per_million) {
                self.partition();
            }
            for pusher in 0..self.pushers.len() {
                if self.rng.chance(self.params.write_per_million) {
                    self.pushers[pusher].log_len += self.rng.between(1, 4);
                }
            }
            while self.writes_open < self.params.direct_concurrency {
                let parts = self.rng.between(1, 3) as usize;
                let write = self.writes.len();
                let target = self.rng.below(self.replicas.len() as u64) as usize;
                self.writes.push(DirectWrite {
                    contents: (0..parts).map(|part| direct_content(write, part)).collect(),
                    attempt: 0,
                    target,
                    sent_at: 0,
                    done: false,
                    ambiguous: false,
                    acked_at: Vec::new(),
                });
                self.writes_open += 1;
                self.send_direct(write);
            }
        }
        for pusher in 0..self.pushers.len() {
            let timeout = self.params.timeout_ticks * TICK;
            let state = &self.pushers[pusher];
            if !state.in_flight.is_empty() && self.now > state.last_progress + timeout {
                self.new_session(pusher, None);
            }
            self.push(pusher);
        }
        for write in 0..self.writes.len() {
            let state = &self.writes[write];
            if !state.done && self.now > state.sent_at + self.params.timeout_ticks * TICK {
                self.writes[write].ambiguous = true;
                self.writes[write].target = self.rng.below(self.replicas.len() as u64) as usize;
                self.send_direct(write);
            }
        }
        Ok(())
    }

    fn crash(&mut self, index: usize) {
        self.crash_with(index, false);
    }

    /// A crash; `writing` when it comes in the middle of archive appends
    /// (a snapshot's data): some of them reached the disk.
    fn crash_with(&mut self, index: usize, writing: bool) {
        self.stats.crashes += 1;
        let torn = self.rng.chance(self.params.torn_per_million);
        let replica = &mut self.replicas[index];
        if let Some(round) = replica.round.take() {
            // The fdatasync did not finish: the round is lost, or a prefix
            // of its writes reached the disk anyway.
            if torn {
                let keep = self.rng.below(round.writes() as u64 + 1) as usize;
                // Writes of a round follow the log, so the prefix applies.
                let _ = round.persist(&mut replica.disk, keep);
                self.stats.torn_rounds += 1;
            }
        }
        // What reached the disk of the archive: nothing unsynced, or any
        // prefix of the unsynced appends (part of an entry's, part of a
        // snapshot's data).
        let unsynced = replica.archive.tail.len() as u64;
        let keep = if torn || writing { self.rng.below(unsynced + 1) as usize } else { 0 };
        replica.archive.crash(keep);
        replica.up = false;
        replica.incarnation += 1;
        replica.group = None;
        // A snapshot that arrived but was not stepped yet: its stream
        // breaks, and the sender hears it failed.
        let lost_snapshots: Vec<(usize, u64)> = replica
            .inbox
            .drain(..)
            .filter_map(|input| match input {
                Input::Raft { from, message, .. } if message.get_msg_type() == MessageType::MsgSnapshot => {
                    Some((from, message.to))
                }
                _ => None,
            })
            .collect();
        replica.queue.clear();
        replica.pending.clear();
        replica.direct_in_flight = 0;
        replica.held.clear();
        replica.archive_sync_scheduled = false;
        replica.reapply_through = replica.reapply_through.max(replica.last_applied);
        // Sometimes back at once (a process restarted by its supervisor),
        // while the election it took part in is still going on.
        for (sender, peer) in lost_snapshots {
            let incarnation = self.replicas[sender].incarnation;
            self.snapshot_failed(sender, incarnation, peer);
        }
        let downtime = if self.rng.below(3) == 0 {
            self.rng.between(1, TICK)
        } else {
            self.rng.between(1, self.params.downtime_ticks_max) * TICK
        };
        self.trace(|| format!("replica {index} crashes for {}.{} ticks", downtime / TICK, downtime % TICK));
        self.schedule(self.now + downtime, Event::Restart(index));
    }

    fn partition(&mut self) {
        self.stats.partitions += 1;
        let count = self.replicas.len();
        // One replica alone, or a minority apart from the rest.
        let size = if self.rng.below(2) == 0 { 1 } else { self.rng.between(1, (count as u64 - 1) / 2) as usize };
        let mut apart = BTreeSet::new();
        while apart.len() < size {
            apart.insert(self.rng.below(count as u64) as usize);
        }
        for &a in &apart {
            for b in (0..count).filter(|b| !apart.contains(b)) {
                self.cut.insert((a, b));
                self.cut.insert((b, a));
            }
        }
        let duration = self.rng.between(1, self.params.partition_ticks_max) * TICK;
        self.trace(|| format!("partition: {apart:?} apart for {} ticks", duration / TICK));
        self.schedule(self.now + duration, Event::Heal);
    }

    fn end_faults(&mut self) {
        self.faults = false;
        self.cut.clear();
        self.trace(|| "faults stop".to_string());
        for index in 0..self.replicas.len() {
            if !self.replicas[index].up {
                self.schedule(self.now, Event::Restart(index));
            }
        }
    }

    fn new_session(&mut self, pusher: usize, target: Option<usize>) {
        let replicas = self.replicas.len() as u64;
        let fallback = self.rng.below(replicas) as usize;
        let state = &mut self.pushers[pusher];
        state.session += 1;
        state.in_flight.clear();
        state.next = state.acked + 1;
        state.target = target.unwrap_or(fallback);
        state.last_progress = self.now;
    }

    /// Sends the pusher's next batches, up to its window.
    fn push(&mut self, pusher: usize) {
        loop {
            let state = &self.pushers[pusher];
            if state.in_flight.len() >= self.params.window as usize || state.next > state.log_len {
                return;
            }
            let count = self.rng.between(1, self.params.batch_entries_max).min(state.log_len - state.next + 1);
            let (pair, first) = (state.pair, state.next);
            let entries = (first..first + count)
                .map(|seq| LogEntry {
                    seq,
                    body: Bytes::copy_from_slice(&push_content(pair, seq).to_le_bytes()),
                    ..LogEntry::default()
                })
                .collect();
            let batch = PushBatch { durable_seq: 0, follower_id: pair.0, shard: pair.1, entries, blocks: Vec::new() };
            let state = &mut self.pushers[pusher];
            if state.in_flight.is_empty() {
                state.last_progress = self.now;
            }
            state.next += count;
            state.in_flight.push_back(state.next - 1);
            let request = Request::Push { pusher, session: state.session, batch: Bytes::from(batch.encode_to_vec()) };
            let to = state.target;
            let at = (self.now + self.delay()).max(self.pushers[pusher].stream_clock);
            self.pushers[pusher].stream_clock = at;
            self.send_client_at(at, Event::Request { to, request }, true);
        }
    }

    fn send_direct(&mut self, write: usize) {
        let state = &mut self.writes[write];
        state.attempt += 1;
        state.sent_at = self.now;
        let request = Request::Direct { write, attempt: state.attempt, contents: state.contents.clone() };
        let to = state.target;
        self.send_client(Event::Request { to, request }, false);
    }

    fn client_reply(&mut self, reply: Reply) -> Result<(), String> {
        match reply {
            Reply::PushAck { pusher, acked_seq } => {
                self.stats.push_acks += 1;
                let state = &mut self.pushers[pusher];
                if acked_seq > state.log_len {
                    return Err(format!(
                        "{:?} acked through seq {acked_seq}, its log ends at {}",
                        state.pair, state.log_len
                    ));
                }
                state.acked = state.acked.max(acked_seq);
                // Acks may come twice or late: what they cover is what counts.
                while state.in_flight.front().is_some_and(|&last| last <= state.acked) {
                    state.in_flight.pop_front();
                    state.last_progress = self.now;
                }
                state.next = state.next.max(state.acked + 1);
                self.push(pusher);
            }
            Reply::PushGap { pusher, session, expected } => {
                self.stats.gaps += 1;
                if session == self.pushers[pusher].session {
                    let target = self.pushers[pusher].target;
                    self.new_session(pusher, Some(target));
                    let state = &mut self.pushers[pusher];
                    if expected > state.log_len + 1 {
                        return Err(format!(
                            "{:?}: the archive expects seq {expected}, the log ends at {}",
                            state.pair, state.log_len
                        ));
                    }
                    state.next = expected.max(state.acked + 1);
                    self.push(pusher);
                }
            }
            Reply::PushRefused { pusher, session, hint } => {
                if session == self.pushers[pusher].session {
                    self.new_session(pusher, hint);
                    self.push(pusher);
                }
            }
            Reply::DirectAck { write, first_seq } => {
                self.stats.direct_acks += 1;
                let state = &mut self.writes[write];
                if !state.acked_at.contains(&first_seq) {
                    state.acked_at.push(first_seq);
                }
                if !state.done {
                    state.done = true;
                    self.writes_open -= 1;
                }
            }
            Reply::DirectConflict { write, attempt } => {
                self.stats.conflicts += 1;
                let state = &self.writes[write];
                if attempt == state.attempt && !state.done {
                    self.send_direct(write);
                }
            }
            Reply::DirectRefused { write, attempt, hint, proposed } => {
                let replicas = self.replicas.len() as u64;
                let fallback = self.rng.below(replicas) as usize;
                let state = &mut self.writes[write];
                state.ambiguous |= proposed;
                if attempt == state.attempt && !state.done {
                    state.target = hint.unwrap_or(fallback);
                    self.send_direct(write);
                }
            }
        }
        Ok(())
    }

    /// At most one leader per term, over the whole run.
    fn check_leaders(&mut self) -> Result<(), String> {
        for replica in &self.replicas {
            let Some(group) = replica.group.as_ref().filter(|_| replica.up) else { continue };
            if !group.is_leader() {
                continue;
            }
            let term = group.status().term;
            let known = *self.leaders.entry(term).or_insert(replica.id);
            if known != replica.id {
                return Err(format!("two leaders in term {term}: replicas {known} and {}", replica.id));
            }
        }
        self.stats.terms_led = self.leaders.len() as u64;
        Ok(())
    }

    /// Everything is acked, applied and synced everywhere.
    fn quiet(&self) -> bool {
        if self.writes_open > 0 || self.pushers.iter().any(|pusher| pusher.acked < pusher.log_len) {
            return false;
        }
        let Some(first) = self.replicas.first() else { return true };
        let target = first.last_applied;
        self.replicas.iter().all(|replica| {
            let Some(group) = replica.group.as_ref().filter(|_| replica.up) else { return false };
            let status = group.status();
            replica.round.is_none()
                && replica.inbox.is_empty()
                && replica.archive.tail.is_empty()
                && replica.held.is_empty()
                && replica.pending.is_empty()
                && replica.queue.is_empty()
                && replica.last_applied == target
                && status.commit == target
                && status.applied == target
        })
    }

    /// A count that grows with every ack, direct write done and entry
    /// applied.
    fn done(&self) -> u64 {
        let acked: u64 = self.pushers.iter().map(|pusher| pusher.acked).sum();
        let applied: u64 = self.replicas.iter().map(|replica| replica.last_applied).sum();
        acked + applied + (self.writes.len() - self.writes_open) as u64
    }

    fn progress(&self) -> String {
        let pushers: Vec<String> = self
            .pushers
            .iter()
            .map(|pusher| format!("{:?} acked {}/{}", pusher.pair, pusher.acked, pusher.log_len))
            .collect();
        let replicas: Vec<String> = self
            .replicas
            .iter()
            .map(|replica| match replica.group.as_ref().filter(|_| replica.up) {
                Some(group) => {
                    let status = group.status();
                    format!(
                        "{}: {:?} term {} commit {} applied {} (group {}) round {}",
                        replica.id,
                        status.role,
                        status.term,
                        status.commit,
                        replica.last_applied,
                        status.applied,
                        replica.round.is_some()
                    )
                }
                None => format!("{}: down", replica.id),
            })
            .collect();
        format!("writes open {}; {pushers:?}; {replicas:?}", self.writes_open)
    }

    /// The end: the archives are equal, and hold what was acked.
    fn check_end(&self) -> Result<(), String> {
        let first = &self.replicas[0].archive.pairs;
        for replica in &self.replicas {
            for (&pair, contents) in &replica.archive.pairs {
                if replica.machine.watermark(pair) != contents.len() as u64 {
                    return Err(format!("replica {}: {pair:?} machine and archive disagree at the end", replica.id));
                }
            }
            if &replica.archive.pairs != first {
                let lens = |pairs: &BTreeMap<Pair, Vec<Archived>>| -> Vec<(Pair, usize)> {
                    pairs.iter().map(|(&pair, contents)| (pair, contents.len())).collect()
                };
                return Err(format!(
                    "archives differ at the end: replica 1 {:?}, replica {} {:?}",
                    lens(first),
                    replica.id,
                    lens(&replica.archive.pairs)
                ));
            }
        }
        for pusher in &self.pushers {
            let archived = first.get(&pusher.pair).map_or(0, |contents| contents.len() as u64);
            if archived != pusher.log_len || pusher.acked != pusher.log_len {
                return Err(format!(
                    "{:?}: log {}, acked {}, archived {archived}",
                    pusher.pair, pusher.log_len, pusher.acked
                ));
            }
        }
        let direct: Vec<u64> = first
            .get(&DIRECT)
            .map(|entries| entries.iter().map(|archived| archived.content).collect())
            .unwrap_or_default();
        // Every direct seq belongs to a whole copy of one write.
        let mut copies = vec![0usize; self.writes.len()];
        let mut position = 0;
        while position < direct.len() {
            let Some((write, 0)) = direct_parts(direct[position]) else {
                return Err(format!("direct seq {}: a part of a write without its start", position + 1));
            };
            let contents = &self.writes[write].contents;
            if direct.get(position..position + contents.len()) != Some(contents.as_slice()) {
                return Err(format!("direct seq {}: write {write} is not stored whole", position + 1));
            }
            copies[write] += 1;
            position += contents.len();
        }
        for (index, write) in self.writes.iter().enumerate() {
            for &first_seq in &write.acked_at {
                let at = first_seq as usize - 1;
                if direct.get(at..at + write.contents.len()) != Some(write.contents.as_slice()) {
                    return Err(format!("direct write {index} acked at seq {first_seq}, not archived there"));
                }
            }
            if !write.ambiguous && (copies[index] != 1 || write.acked_at.len() != 1) {
                return Err(format!(
                    "direct write {index} (never in doubt) stored {} times, acked {} times",
                    copies[index],
                    write.acked_at.len()
                ));
            }
        }
        Ok(())
    }
}
