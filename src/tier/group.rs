//! One replica of one Raft group, sans I/O: raft-rs's `RawNode` over the
//! in-memory log it reads, with each `Ready` turned into explicit work for
//! a driver — the real one ([`super::replica`]) or the simulator.
//!
//! raft-rs's `Storage` is synchronous, so the log it reads lives in memory
//! ([`MemStorage`]); the driver makes the same entries durable ([`Work`]'s
//! `entries`, `hard_state`, `snapshot`) and only then sends the messages
//! that depend on them (`persisted_messages`) and calls
//! [`Group::persisted`]. The order of one round, as raft-rs requires:
//!
//! 1. [`Group::ready`] → a [`Work`]: send `messages` right away (a leader
//!    may replicate before its own write is durable);
//! 2. persist `snapshot`, `entries` and `hard_state`, fdatasync;
//! 3. send `persisted_messages` (votes and append responses promise what
//!    is now on disk);
//! 4. [`Group::persisted`] → [`After`]: send its messages; apply `committed`
//!    of the `Work`, then of the `After`, in order;
//! 5. [`Group::applied`] once the applied state is durable.
//!
//! The snapshot a lagging peer receives is taken at the **applied** index
//! (raft-rs's `MemStorage` would take it at the commit index, which may run
//! ahead of what is applied): the archive data streamed with it is at least
//! the state at that index, and it comes with the sender's machine state
//! and the index that state stands for, so the receiver's
//! [`super::machine::Machine`] knows which state it got.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use raft::prelude::*;
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, StateRole};

use super::{Error, ELECTION_TICKS, ELECTION_TICKS_MAX, HEARTBEAT_TICKS};
use crate::limits::{PROPOSAL_BYTES_MAX, RAFT_LOG_RETAINED_BYTES, RAFT_LOG_RETAINED_ENTRIES};

/// The (index, term) of the snapshot a new group starts from (see
/// [`Group::new`]).
pub const BOOTSTRAP: (u64, u64) = (1, 1);

/// The in-memory log raft-rs reads, with snapshots taken at the applied
/// index.
#[derive(Clone)]
pub struct GroupStorage {
    mem: MemStorage,
    applied: Rc<Cell<u64>>,
    /// The (index, term) the log starts after: the last snapshot's, or the
    /// last compaction point's. `MemStorage` forgets the term of a
    /// compaction point (it only keeps a snapshot's), but raft-rs reads it
    /// (the term of the entry before the first one), and a checkpoint must
    /// record it: 0 there made a restarted leader send appends whose
    /// previous term did not match anything (found by `tests/sim_raft.rs`).
    log_start: Rc<Cell<(u64, u64)>>,
}

impl Storage for GroupStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let (start, term) = self.log_start.get();
        if index == start {
            return Ok(term);
        }
        self.mem.term(index)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let index = self.applied.get();
        if index < request_index {
            return Err(raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable));
        }
        let mut snapshot = Snapshot::default();
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = self.term(index)?;
        metadata.set_conf_state(self.mem.initial_state()?.conf_state);
        Ok(snapshot)
    }
}

/// What a replica recovered from its disk.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    /// Term, vote and commit.
    pub hard_state: HardState,
    /// The voters (and learners).
    pub conf_state: ConfState,
    /// The index and term of the last snapshot installed (0, 0 if none):
    /// the log starts after it.
    pub snapshot: (u64, u64),
    /// The log after the snapshot, in index order.
    pub entries: Vec<Entry>,
    /// The highest index whose effects are known durable.
    pub applied: u64,
}

/// One round of work from a `Ready` (see the module docs for the order).
#[derive(Debug, Default)]
pub struct Work {
    /// Send now.
    pub messages: Vec<Message>,
    /// Install (the archive data came with it), then persist its metadata.
    pub snapshot: Option<Snapshot>,
    /// Persist, in order; an entry at an index already on disk replaces
    /// it and everything after it.
    pub entries: Vec<Entry>,
    /// Persist.
    pub hard_state: Option<HardState>,
    /// Send once the above is durable.
    pub persisted_messages: Vec<Message>,
    /// Apply, in order.
    pub committed: Vec<Entry>,
    /// ReadIndex answers: the context given to [`Group::read_index`] and
    /// the index to wait for.
    pub read_states: Vec<ReadState>,
    /// The group's leader or term changed to this (leader id, term).
    pub leader_changed: Option<(u64, u64)>,
}

/// What raft-rs hands back once a round is persisted.
#[derive(Debug, Default)]
pub struct After {
    /// Send now.
    pub messages: Vec<Message>,
    /// Apply, in order, after the round's own committed entries.
    pub committed: Vec<Entry>,
}

/// A replica's view of its group, for `/v1/cluster` and `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// The known leader (0 when none).
    pub leader: u64,
    /// The current term.
    pub term: u64,
    /// The commit index.
    pub commit: u64,
    /// The applied index.
    pub applied: u64,
    /// Leader, follower, candidate (or pre-candidate).
    pub role: StateRole,
}

/// One replica of one group.
pub struct Group {
    node: RawNode<GroupStorage>,
    storage: GroupStorage,
    /// Entries kept behind the applied index for lagging peers.
    retained: u64,
    /// And at most this many bytes of them.
    retained_bytes: u64,
    /// The size of every entry in the in-memory log.
    sizes: EntrySizes,
    pending: Option<Ready>,
    last_leader: (u64, u64),
    group: u32,
    /// Read requests taken while leading before an entry of this term
    /// committed: raft-rs would drop them without a word (see
    /// [`Group::read_index`]); asked once it can answer.
    deferred_reads: Vec<Vec<u8>>,
}

impl Group {
    /// The replica `id` of group `group`: a new one, or one recovered from
    /// disk. A new replica of a new group starts from a snapshot at
    /// [`BOOTSTRAP`] whose voters are `voters`; a new replica joining a
    /// running group (`voters` empty) starts empty and knows nothing of
    /// the group until its leader sends a snapshot.
    pub fn new(id: u64, group: u32, voters: &[u64], restored: Option<Restored>, logger: &slog::Logger) -> Group {
        let mem = match &restored {
            None if voters.is_empty() => MemStorage::new(),
            None => {
                // As TiKV does: the group begins with a snapshot that names
                // its voters, so its log starts after it. A replica that
                // joins later has an empty log: its leader can only bring
                // it up by snapshot, with the voters in it, never by
                // replaying entries that do not say who the voters were.
                let mem = MemStorage::new();
                let mut snapshot = Snapshot::default();
                snapshot.mut_metadata().index = BOOTSTRAP.0;
                snapshot.mut_metadata().term = BOOTSTRAP.1;
                snapshot.mut_metadata().set_conf_state(ConfState::from((voters.to_vec(), Vec::new())));
                mem.wl().apply_snapshot(snapshot).expect("a fresh storage takes any snapshot");
                mem
            }
            Some(restored) => {
                let mem = MemStorage::new();
                let mut core = mem.wl();
                let mut snapshot = Snapshot::default();
                snapshot.mut_metadata().index = restored.snapshot.0;
                snapshot.mut_metadata().term = restored.snapshot.1;
                snapshot.mut_metadata().set_conf_state(restored.conf_state.clone());
                // A snapshot at index 0 is no snapshot; the conf state is
                // then set on its own.
                if restored.snapshot.0 > 0 {
                    core.apply_snapshot(snapshot).expect("a fresh storage takes any snapshot");
                } else {
                    core.set_conf_state(restored.conf_state.clone());
                }
                core.append(&restored.entries).expect("entries follow the snapshot");
                core.set_hardstate(restored.hard_state.clone());
                drop(core);
                mem
            }
        };
        // raft-rs panics ("applied out of range") if applied runs past
        // commit: after a crash, applied is at most what the hard state
        // says is committed, and at least the snapshot.
        let applied = restored
            .as_ref()
            .map(|restored| restored.applied.min(restored.hard_state.commit).max(restored.snapshot.0))
            .unwrap_or(if voters.is_empty() { 0 } else { BOOTSTRAP.0 });
        let mut sizes = EntrySizes::default();
        if let Some(restored) = &restored {
            sizes.append(&restored.entries);
        }
        sizes.applied_to(applied);
        let log_start = match &restored {
            Some(restored) => restored.snapshot,
            None if voters.is_empty() => (0, 0),
            None => BOOTSTRAP,
        };
        let storage =
            GroupStorage { mem, applied: Rc::new(Cell::new(applied)), log_start: Rc::new(Cell::new(log_start)) };
        let config = Config {
            id,
            election_tick: ELECTION_TICKS,
            min_election_tick: ELECTION_TICKS,
            max_election_tick: ELECTION_TICKS_MAX,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: PROPOSAL_BYTES_MAX as u64,
            max_inflight_msgs: 256,
            max_uncommitted_size: 4 * PROPOSAL_BYTES_MAX as u64,
            max_committed_size_per_ready: 4 * PROPOSAL_BYTES_MAX as u64,
            ..Config::default()
        };
        let node = RawNode::new(&config, storage.clone(), logger).expect("the configuration is valid");
        Group {
            node,
            storage,
            retained: RAFT_LOG_RETAINED_ENTRIES,
            retained_bytes: RAFT_LOG_RETAINED_BYTES,
            sizes,
            pending: None,
            last_leader: (0, 0),
            group,
            deferred_reads: Vec::new(),
        }
    }

    /// Keeps `entries` (at least 1) behind the applied index instead of
    /// [`RAFT_LOG_RETAINED_ENTRIES`]: fewer make lagging peers need a
    /// snapshot sooner (tests and the simulator use that).
    pub fn set_retained_entries(&mut self, entries: u64) {
        self.retained = entries.max(1);
    }

    /// Keeps at most `bytes` of entries behind the applied index instead of
    /// [`RAFT_LOG_RETAINED_BYTES`] (tests).
    pub fn set_retained_bytes(&mut self, bytes: u64) {
        self.retained_bytes = bytes;
    }

    /// Replaces the election timeout raft-rs drew at its last reset (which
    /// happens whenever the term or the role changes) from the thread's
    /// RNG: the simulator draws it from its seed instead, so a run replays
    /// exactly. `ticks` lies in the configured range, `[ELECTION_TICKS,
    /// ELECTION_TICKS_MAX)`.
    pub fn set_election_timeout(&mut self, ticks: usize) {
        assert!((ELECTION_TICKS..ELECTION_TICKS_MAX).contains(&ticks), "election timeout {ticks} out of range");
        self.node.raft.set_randomized_election_timeout(ticks);
    }

    /// Advances the logical clock by one [`super::TICK`].
    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// Takes in a message from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), Error> {
        self.node.step(message).map_err(|error| Error::Malformed(format!("raft message refused: {error}")))
    }

    /// Proposes `data` as the next entry; returns its (index, term), which
    /// the entry carries when it is applied if it was not overtaken.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(u64, u64), Error> {
        if self.node.raft.state != StateRole::Leader {
            return Err(self.not_leader());
        }
        self.node.propose(Vec::new(), data).map_err(|_| Error::Dropped { group: self.group })?;
        Ok((self.node.raft.raft_log.last_index(), self.node.raft.term))
    }

    /// Asks for a linearizable read point; the answer comes back in a later
    /// [`Work::read_states`] with `context`, unless the leadership moves
    /// first (the caller then fails the read itself: no answer comes).
    ///
    /// raft-rs drops a read a new leader takes before an entry of its term
    /// committed (it cannot know the commit index yet), and says nothing:
    /// the reader would wait for its timeout (a follower's watermark read
    /// right after a leadership transfer waited 10 s that way). Such a
    /// read is held here and asked once the term's first entry commits.
    pub fn read_index(&mut self, context: Vec<u8>) -> Result<(), Error> {
        if self.node.raft.state != StateRole::Leader {
            return Err(self.not_leader());
        }
        if self.node.raft.commit_to_current_term() {
            self.node.read_index(context);
        } else {
            self.deferred_reads.push(context);
        }
        Ok(())
    }

    /// Asks the held reads once raft-rs can answer them; forgets them when
    /// this replica no longer leads (their readers were failed then).
    fn ask_deferred_reads(&mut self) {
        if self.deferred_reads.is_empty() {
            return;
        }
        if self.node.raft.state != StateRole::Leader {
            self.deferred_reads.clear();
        } else if self.node.raft.commit_to_current_term() {
            for context in std::mem::take(&mut self.deferred_reads) {
                self.node.read_index(context);
            }
        }
    }

    /// The refusal for a request that needs the leader, with the leader's
    /// id when known (the caller maps it to an address).
    pub fn not_leader(&self) -> Error {
        let leader = self.node.raft.leader_id;
        // A leader not heard from for two heartbeats is probably gone:
        // pointing clients at it would only make them wait for its
        // connection to fail. They try the others until one is elected.
        let heard_lately = self.node.raft.election_elapsed <= 2 * HEARTBEAT_TICKS;
        let leader =
            (leader != 0 && leader != self.node.raft.id && heard_lately).then_some((leader as u32, unknown_addr()));
        Error::NotLeader { group: self.group, leader, term: self.node.raft.term }
    }

    /// Tells raft-rs that a peer could not be reached.
    pub fn report_unreachable(&mut self, peer: u64) {
        self.node.report_unreachable(peer);
    }

    /// Tells raft-rs how sending a snapshot to `peer` went.
    pub fn report_snapshot(&mut self, peer: u64, done: bool) {
        let status = if done { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
        self.node.report_snapshot(peer, status);
    }

    /// Whether a round of work is waiting.
    pub fn has_ready(&self) -> bool {
        self.pending.is_none() && self.node.has_ready()
    }

    /// The next round of work, if any. Call [`Group::persisted`] before
    /// asking again.
    pub fn ready(&mut self) -> Option<Work> {
        assert!(self.pending.is_none(), "a round is already out: call persisted first");
        self.ask_deferred_reads();
        if !self.node.has_ready() {
            return None;
        }
        let mut ready = self.node.ready();
        let mut work = Work { messages: ready.take_messages(), ..Work::default() };
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            let index = snapshot.get_metadata().index;
            // In memory first, so raft-rs reads the new log start; the
            // driver persists it with the rest of the round.
            let mut core = self.storage.mem.wl();
            core.apply_snapshot(snapshot.clone()).expect("raft-rs only hands over newer snapshots");
            drop(core);
            self.storage.log_start.set((index, snapshot.get_metadata().term));
            self.storage.applied.set(self.storage.applied.get().max(index));
            self.sizes = EntrySizes::default();
            self.sizes.applied_to(self.storage.applied.get());
            work.snapshot = Some(snapshot);
        }
        work.committed = ready.take_committed_entries();
        if !ready.entries().is_empty() {
            work.entries = ready.take_entries();
            self.storage.mem.wl().append(&work.entries).expect("raft-rs appends after its log start");
            self.sizes.append(&work.entries);
        }
        if let Some(hard_state) = ready.hs() {
            work.hard_state = Some(hard_state.clone());
            self.storage.mem.wl().set_hardstate(hard_state.clone());
        }
        work.persisted_messages = ready.take_persisted_messages();
        work.read_states = ready.take_read_states();
        let leader = (self.node.raft.leader_id, self.node.raft.term);
        if leader.0 != 0 && leader != self.last_leader {
            self.last_leader = leader;
            work.leader_changed = Some(leader);
        }
        self.pending = Some(ready);
        Some(work)
    }

    /// The round [`Group::ready`] gave is durable.
    pub fn persisted(&mut self) -> After {
        let ready = self.pending.take().expect("persisted follows ready");
        let snapshot_index = (!ready.snapshot().is_empty()).then(|| ready.snapshot().get_metadata().index);
        let mut light = self.node.advance_append(ready);
        // raft-rs leaves its applied index where it was when a snapshot is
        // installed; behind the snapshot, it points into the compacted log,
        // and the next campaign (which scans the unapplied entries for
        // configuration changes) panics on `Compacted`. The snapshot's
        // state is the applied state now.
        if let Some(index) = snapshot_index {
            self.node.advance_apply_to(index);
        }
        if let Some(commit) = light.commit_index() {
            self.storage.mem.wl().mut_hard_state().commit = commit;
        }
        After { messages: light.take_messages(), committed: light.take_committed_entries() }
    }

    /// Entries up to `index` are applied and their effects durable: raft-rs
    /// may snapshot at that index, and the in-memory log is compacted to
    /// keep [`RAFT_LOG_RETAINED_ENTRIES`] (or what
    /// [`Group::set_retained_entries`] set) behind it, and no more than
    /// [`RAFT_LOG_RETAINED_BYTES`] of them. Returns the new first index of
    /// the log when it was compacted.
    pub fn applied(&mut self, index: u64) -> Option<u64> {
        if index <= self.storage.applied.get() {
            return None;
        }
        self.storage.applied.set(index);
        self.node.advance_apply_to(index);
        self.sizes.applied_to(index);
        let first = self.storage.mem.first_index().unwrap_or(1);
        let compact_to = index.saturating_sub(self.retained).max(self.sizes.keep_from(self.retained_bytes));
        if compact_to > first {
            // The new log start's term, while its entry is still there.
            let term = self.storage.mem.term(compact_to - 1).expect("compaction stays below the applied index");
            self.storage.mem.wl().compact(compact_to).expect("compaction stays below the applied index");
            self.storage.log_start.set((compact_to - 1, term));
            self.sizes.compact(compact_to);
            return Some(compact_to);
        }
        None
    }

    /// The replica's view of its group.
    pub fn status(&self) -> GroupStatus {
        GroupStatus {
            leader: self.node.raft.leader_id,
            term: self.node.raft.term,
            commit: self.node.raft.raft_log.committed,
            applied: self.storage.applied.get(),
            role: self.node.raft.state,
        }
    }

    /// This replica leads its group.
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The index of the first entry still in the log.
    pub fn first_index(&self) -> u64 {
        self.storage.mem.first_index().unwrap_or(1)
    }

    /// The hard state, conf state and log start, for a new log segment's
    /// first record.
    pub fn checkpoint(&self) -> (HardState, ConfState, (u64, u64)) {
        let state = self.storage.mem.initial_state().unwrap_or_default();
        let log_start = self.storage.log_start.get();
        debug_assert_eq!(log_start.0 + 1, self.first_index(), "the log starts after its checkpoint");
        (state.hard_state, state.conf_state, log_start)
    }

    /// The group's index.
    pub fn group(&self) -> u32 {
        self.group
    }

    /// Proposes a membership change (raft-rs allows one at a time: while
    /// one is pending, or off the leader, it is refused). Between two
    /// rounds only, as every proposal.
    pub fn propose_conf_change(&mut self, change: ConfChangeV2) -> Result<u64, Error> {
        assert!(self.pending.is_none(), "a proposal while a round is out: raft-rs would panic at its end");
        if self.node.raft.state != StateRole::Leader {
            return Err(self.not_leader());
        }
        if self.node.raft.has_pending_conf() {
            return Err(Error::Busy(format!("group {}: a membership change is under way", self.group)));
        }
        self.node.propose_conf_change(Vec::new(), change).map_err(|_| Error::Dropped { group: self.group })?;
        Ok(self.node.raft.raft_log.last_index())
    }

    /// Applies a committed membership change; returns the new membership,
    /// which the driver persists. Applying the same change again (an entry
    /// handed over again after a restart) changes nothing.
    pub fn apply_conf_change(&mut self, change: &ConfChangeV2) -> Result<ConfState, Error> {
        let conf = self
            .node
            .apply_conf_change(change)
            .map_err(|error| Error::Malformed(format!("group {}: membership change refused: {error}", self.group)))?;
        self.storage.mem.wl().set_conf_state(conf.clone());
        Ok(conf)
    }

    /// The group's voters and learners.
    pub fn conf_state(&self) -> ConfState {
        self.storage.mem.initial_state().map(|state| state.conf_state).unwrap_or_default()
    }

    /// Asks the leader to hand its leadership to `to` (raft-rs brings `to`
    /// up to date, then tells it to campaign at once).
    pub fn transfer_leader(&mut self, to: u64) {
        assert!(self.pending.is_none(), "a transfer while a round is out");
        self.node.transfer_leader(to);
    }

    /// On the leader: how far behind the leader's log replica `id` is (in
    /// entries), or `None` when unknown (not the leader, or not a member),
    /// or when the replica does not hold the log's start yet: a new
    /// replica is behind by a whole snapshot, however short the log.
    pub fn lag_of(&self, id: u64) -> Option<u64> {
        if self.node.raft.state != StateRole::Leader {
            return None;
        }
        let matched = self.node.raft.prs().get(id)?.matched;
        if matched == 0 || matched < self.storage.log_start.get().0 {
            return None;
        }
        Some(self.node.raft.raft_log.last_index().saturating_sub(matched))
    }

    /// A membership change is proposed and not yet applied.
    pub fn has_pending_conf(&self) -> bool {
        self.node.raft.has_pending_conf()
    }
}

/// The size of every entry of the in-memory log, in index order (entries
/// are contiguous), and the total of those at or below the applied index:
/// what the byte bound of compaction reads, without touching the entries.
#[derive(Debug, Default)]
struct EntrySizes {
    sizes: VecDeque<(u64, u64)>,
    applied: u64,
    applied_bytes: u64,
}

impl EntrySizes {
    /// Bytes an entry is counted for: its data and context, and a little
    /// for its header.
    fn size(entry: &Entry) -> u64 {
        (entry.data.len() + entry.context.len() + 32) as u64
    }

    /// Entries appended; one at an index already held replaces it and
    /// everything after it (only entries after the applied index are ever
    /// replaced).
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        while self.sizes.back().is_some_and(|&(index, _)| index >= first.index) {
            if let Some((index, size)) = self.sizes.pop_back() {
                if index <= self.applied {
                    self.applied_bytes -= size;
                }
            }
        }
        self.sizes.extend(entries.iter().map(|entry| (entry.index, EntrySizes::size(entry))));
    }

    /// Entries up to `index` are applied.
    fn applied_to(&mut self, index: u64) {
        if index <= self.applied {
            return;
        }
        let front = self.sizes.front().map_or(index + 1, |&(first, _)| first);
        let skip = (self.applied + 1).saturating_sub(front) as usize;
        let newly =
            self.sizes.iter().skip(skip).take_while(|&&(at, _)| at <= index).map(|&(_, size)| size).sum::<u64>();
        self.applied_bytes += newly;
        self.applied = index;
    }

    /// The first index to keep so that the entries kept up to the applied
    /// index hold at most `bound` bytes (never past the applied index).
    fn keep_from(&self, bound: u64) -> u64 {
        let mut bytes = self.applied_bytes;
        for &(index, size) in &self.sizes {
            if bytes <= bound || index >= self.applied {
                return index;
            }
            bytes -= size;
        }
        0
    }

    /// The log now starts at `first`.
    fn compact(&mut self, first: u64) {
        while self.sizes.front().is_some_and(|&(index, _)| index < first) {
            if let Some((index, size)) = self.sizes.pop_front() {
                if index <= self.applied {
                    self.applied_bytes -= size;
                }
            }
        }
    }
}

/// The address the group does not know (the driver fills in the member's).
fn unknown_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([0, 0, 0, 0], 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logger() -> slog::Logger {
        slog::Logger::root(slog::Discard, slog::o!())
    }

    /// Drives three replicas by hand, delivering every message at once.
    fn settle(groups: &mut [Group]) -> Vec<(usize, Entry)> {
        settle_apart(groups, None)
    }

    /// Like [`settle`], dropping every message to or from replica `apart`.
    fn settle_apart(groups: &mut [Group], apart: Option<usize>) -> Vec<(usize, Entry)> {
        let mut applied = Vec::new();
        for _ in 0..100 {
            let mut outbox = Vec::new();
            let mut any = false;
            for (index, group) in groups.iter_mut().enumerate() {
                while let Some(work) = group.ready() {
                    any = true;
                    outbox.extend(work.messages);
                    outbox.extend(work.persisted_messages);
                    applied.extend(work.committed.into_iter().map(|entry| (index, entry)));
                    let after = group.persisted();
                    outbox.extend(after.messages);
                    applied.extend(after.committed.into_iter().map(|entry| (index, entry)));
                }
            }
            for message in outbox {
                let (from, to) = (message.from as usize - 1, message.to as usize - 1);
                if apart.is_some_and(|apart| apart == from || apart == to) {
                    continue;
                }
                groups[to].step(message).unwrap();
            }
            if !any {
                break;
            }
        }
        applied
    }

    #[test]
    fn an_applied_index_past_the_persisted_commit_does_not_panic() {
        // A crash after applying entries whose commit only the light ready
        // carried (not yet in a persisted hard state): raft-rs would panic
        // with "applied out of range" if given applied > commit.
        let entries: Vec<Entry> =
            (1..=3).map(|index| Entry { index, term: 1, data: vec![index as u8].into(), ..Entry::default() }).collect();
        let restored = Restored {
            hard_state: HardState { term: 1, vote: 1, commit: 2, ..HardState::default() },
            conf_state: ConfState::from((vec![1, 2, 3], vec![])),
            snapshot: (0, 0),
            entries,
            applied: 3,
        };
        let mut group = Group::new(1, 0, &[1, 2, 3], Some(restored), &logger());
        assert_eq!(group.status().applied, 2);
        assert_eq!(group.status().commit, 2);
        // Entries after the clamped applied index come again (applying is
        // idempotent), nothing before it.
        let mut reapplied = Vec::new();
        while let Some(work) = group.ready() {
            reapplied.extend(work.committed.iter().map(|entry| entry.index));
            let after = group.persisted();
            reapplied.extend(after.committed.iter().map(|entry| entry.index));
        }
        assert!(reapplied.iter().all(|&index| index > 2), "{reapplied:?}");
    }

    #[test]
    fn three_replicas_elect_a_leader_and_commit_a_proposal_everywhere() {
        let voters = [1, 2, 3];
        let mut groups: Vec<Group> = voters.iter().map(|&id| Group::new(id, 0, &voters, None, &logger())).collect();
        assert!(matches!(groups[0].propose(b"x".to_vec()), Err(Error::NotLeader { leader: None, .. })));
        for _ in 0..2 * ELECTION_TICKS {
            groups[0].tick();
        }
        settle(&mut groups);
        assert!(groups[0].is_leader());
        assert!(matches!(groups[1].propose(b"x".to_vec()), Err(Error::NotLeader { leader: Some((1, _)), .. })));
        let (index, term) = groups[0].propose(b"hello".to_vec()).unwrap();
        let applied = settle(&mut groups);
        let hellos: Vec<usize> = applied
            .iter()
            .filter(|(_, entry)| &entry.data[..] == b"hello")
            .inspect(|(_, entry)| assert_eq!((entry.index, entry.term), (index, term)))
            .map(|(replica, _)| *replica)
            .collect();
        assert_eq!(hellos.len(), 3, "{hellos:?}");
    }

    #[test]
    fn a_read_taken_before_the_new_leader_commits_in_its_term_is_answered() {
        let voters = [1, 2, 3];
        let mut groups: Vec<Group> = voters.iter().map(|&id| Group::new(id, 0, &voters, None, &logger())).collect();
        for _ in 0..2 * ELECTION_TICKS {
            groups[0].tick();
        }
        let mut asked = false;
        let mut answered = Vec::new();
        for _ in 0..100 {
            if groups[0].is_leader() && !asked {
                assert!(!groups[0].node.raft.commit_to_current_term(), "the term's first entry is not committed yet");
                groups[0].read_index(b"early".to_vec()).unwrap();
                asked = true;
            }
            let mut outbox = Vec::new();
            for group in groups.iter_mut() {
                while let Some(work) = group.ready() {
                    answered.extend(work.read_states.iter().map(|read| read.request_ctx.clone()));
                    outbox.extend(work.messages);
                    outbox.extend(work.persisted_messages);
                    outbox.extend(group.persisted().messages);
                }
            }
            for message in outbox {
                let to = message.to as usize - 1;
                groups[to].step(message).unwrap();
            }
        }
        assert!(asked, "replica 1 was elected");
        assert_eq!(answered, vec![b"early".to_vec()], "the early read is answered, once");
    }

    #[test]
    fn the_log_behind_the_applied_index_is_bounded_in_bytes_too() {
        let mut group = Group::new(1, 0, &[1], None, &logger());
        group.set_retained_bytes(3 * (1000 + 32));
        for _ in 0..2 * ELECTION_TICKS {
            group.tick();
        }
        let drive = |group: &mut Group| {
            let mut applied = 0;
            while let Some(work) = group.ready() {
                applied = work.committed.iter().map(|entry| entry.index).max().unwrap_or(applied);
                let after = group.persisted();
                applied = after.committed.iter().map(|entry| entry.index).max().unwrap_or(applied);
                if applied > 0 {
                    group.applied(applied);
                }
            }
        };
        drive(&mut group);
        assert!(group.is_leader());
        let mut last = 0;
        for _ in 0..10 {
            last = group.propose(vec![7; 1000]).unwrap().0;
            drive(&mut group);
        }
        assert_eq!(group.status().applied, last);
        // 4096 entries would be kept by count; 3 of 1000 bytes by size.
        assert_eq!(group.first_index(), last - 2, "the entries kept behind the applied index: {}", last);
        // A small entry fits beside them: the bound counts bytes.
        let small = group.propose(vec![1; 10]).unwrap().0;
        drive(&mut group);
        assert_eq!(group.first_index(), small - 2);
    }

    /// Three replicas with replica 0 leading and `entries` proposals
    /// committed while replica 2 was cut off.
    fn lagging_third(entries: usize) -> Vec<Group> {
        let voters = [1, 2, 3];
        let mut groups: Vec<Group> = voters.iter().map(|&id| Group::new(id, 0, &voters, None, &logger())).collect();
        for _ in 0..2 * ELECTION_TICKS {
            groups[0].tick();
        }
        settle(&mut groups);
        assert!(groups[0].is_leader());
        for entry in 0..entries {
            groups[0].propose(vec![entry as u8]).unwrap();
            settle_apart(&mut groups, Some(2));
        }
        groups
    }

    #[test]
    fn a_checkpoint_after_compaction_keeps_the_term_of_the_log_start() {
        let mut groups = lagging_third(5);
        let status = groups[0].status();
        groups[0].set_retained_entries(2);
        assert_eq!(groups[0].applied(status.commit), Some(status.commit - 2));
        let (_, _, (index, term)) = groups[0].checkpoint();
        assert_eq!(index + 1, groups[0].first_index());
        // The entry before the log's first was written in the leader's term
        // (MemStorage alone answers "compacted", which made it 0).
        assert_eq!(term, status.term);
        // A replica restarted from that checkpoint answers the same.
        let restored = Restored {
            hard_state: HardState { term: status.term, vote: 1, commit: index, ..HardState::default() },
            conf_state: ConfState::from((vec![1, 2, 3], Vec::new())),
            snapshot: (index, term),
            entries: Vec::new(),
            applied: index,
        };
        let restarted = Group::new(1, 0, &[1, 2, 3], Some(restored), &logger());
        assert_eq!(restarted.checkpoint().2, (index, term));
    }

    #[test]
    fn a_replica_that_installed_a_snapshot_can_campaign() {
        let mut groups = lagging_third(5);
        let commit = groups[0].status().commit;
        groups[0].set_retained_entries(1);
        assert!(groups[0].applied(commit).is_some());
        // The leader's next heartbeat finds replica 2 behind its log: a
        // snapshot, then the rest.
        groups[0].tick();
        groups[0].tick();
        settle(&mut groups);
        groups[0].report_snapshot(3, true);
        settle(&mut groups);
        assert_eq!(groups[2].status().commit, commit);
        // Cut off again, it campaigns: raft-rs first scans the entries it
        // has not applied, which must not start in the compacted log.
        for _ in 0..2 * ELECTION_TICKS {
            groups[2].tick();
        }
        settle_apart(&mut groups, Some(0));
    }
}
