//! One replica of one archive group, on the group's core: the I/O driver of
//! [`Group`] and [`Machine`].
//!
//! Two tasks share the replica's state:
//!
//! - the **raft loop** ticks the group every [`TICK`], steps the messages
//!   peers sent, proposes what is queued (a group commit: every push and
//!   direct write that arrived since the last proposal, up to
//!   [`PROPOSAL_BYTES_MAX`]), and handles each `Ready` in raft-rs's order:
//!   send what may go now, make the round durable ([`RaftLog::persist`],
//!   one fdatasync), send what depended on it, advance, and hand committed
//!   entries to the applier. Proposals queued meanwhile wait for the next
//!   round, so the fdatasync is what batches them.
//! - the **applier** applies committed entries in order: each batch of an
//!   entry is admitted by the [`Machine`] (the same decision on every
//!   replica) and its fresh entries appended to the shard; once they are
//!   durable, the proposer (when this replica proposed the entry, in the
//!   same term) is answered, and the group learns the applied index.
//!
//! A push is therefore acknowledged only when committed on a quorum and
//! applied here; a follower that loses its ack resends, and the watermark
//! rule skips what is already there.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType,
};

use super::group::{Group, GroupStatus, Work, BOOTSTRAP};
use super::log::{MachineState, RaftLog};
use super::machine::{Machine, Pair};
use super::transport::{self, Link};
use super::{logger, Error, Members, TICK};
use crate::grpc::transport::Channel;
use crate::limits::{
    ARCHIVE_PAIRS_MAX, PROMOTE_LAG_ENTRIES, PROPOSALS_IN_FLIGHT_MAX, PROPOSAL_BYTES_MAX, PROPOSAL_QUEUE_BYTES_MAX,
    READ_INDEX_WAITING_MAX, TIER_MEMBERS_MAX,
};
use crate::proto::{LogEntry, Proposal, PushAck, PushBatch, SnapshotChunk};
use crate::replication::batch::{with_fresh_parts, PushedBatch};
use crate::replication::leader::AckSender;
use crate::replication::watermark::Admission;
use crate::shard::{self, Origin, Shard};

/// What applying one batch came to: its pair, what was admitted, and the
/// pair's watermark after it; or the refusal.
type BatchOutcome = Result<(Pair, Admission, u64), Error>;

/// Where a linearizable watermark read's answer goes.
type ReadSender = oneshot::Sender<Result<u64, Error>>;
/// How sending a snapshot went, once known (`Some(true)`: installed).
type SnapshotOutcome = Rc<Cell<Option<bool>>>;

/// Where a direct write's answer goes: its (first, last) seq.
pub type DirectSender = oneshot::Sender<Result<(u64, u64), Error>>;

/// How long the applier waits before trying a transiently refused append
/// again (backpressure, a full disk).
const APPLY_RETRY: Duration = Duration::from_millis(50);
/// How long a direct write forwarded to the leader's node may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a membership change forwarded to the leader's node may take.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a leader looks for learners to promote, in ticks.
const PROMOTE_CHECK_TICKS: u64 = 5;

/// A membership request for one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Adds `node`, at `addr`, as a learner (a node joining the tier).
    AddLearner {
        /// The joining node.
        node: u32,
        /// Its gRPC address.
        addr: SocketAddr,
    },
    /// Makes learner `node` a voter.
    Promote {
        /// The learner.
        node: u32,
    },
    /// Removes `node` from the group.
    Remove {
        /// The member to remove.
        node: u32,
    },
    /// Hands the group's leadership to voter `node`.
    Transfer {
        /// The next leader.
        node: u32,
    },
}

impl Change {
    fn to_proto(self, group: u32) -> crate::proto::GroupChange {
        use crate::proto::group_change::Op;
        let (op, node_id, addr) = match self {
            Change::AddLearner { node, addr } => (Op::AddLearner, node, addr.to_string()),
            Change::Promote { node } => (Op::Promote, node, String::new()),
            Change::Remove { node } => (Op::Remove, node, String::new()),
            Change::Transfer { node } => (Op::Transfer, node, String::new()),
        };
        crate::proto::GroupChange { group, op: op as i32, node_id, addr }
    }

    /// The change a `GroupChange` asks for.
    pub fn from_proto(change: &crate::proto::GroupChange) -> Result<Change, Error> {
        use crate::proto::group_change::Op;
        let node = change.node_id;
        if node == 0 {
            return Err(Error::Refused("node id 0 stands for the tier itself; members are 1 and up".into()));
        }
        Ok(match Op::try_from(change.op) {
            Ok(Op::AddLearner) => Change::AddLearner {
                node,
                addr: change
                    .addr
                    .parse()
                    .map_err(|_| Error::Refused(format!("{:?} is not a HOST:PORT address", change.addr)))?,
            },
            Ok(Op::Promote) => Change::Promote { node },
            Ok(Op::Remove) => Change::Remove { node },
            Ok(Op::Transfer) => Change::Transfer { node },
            Err(_) => return Err(Error::Malformed(format!("unknown membership change {}", change.op))),
        })
    }
}

/// What a membership change on the leader takes.
enum Planned {
    /// Nothing: it is done already.
    Done,
    /// Its entry, once applied.
    Proposed(oneshot::Receiver<Result<(), Error>>),
    /// The leadership moving to this node.
    Transfer(u32),
}

/// A membership change queued for the raft loop, with its proposer.
type QueuedChange = (ConfChangeV2, Option<oneshot::Sender<Result<(), Error>>>);

/// A proposal's waiting writers, in batch order.
enum Waiter {
    Push(AckSender),
    Direct(DirectSender),
    Conf(oneshot::Sender<Result<(), Error>>),
}

impl Waiter {
    fn fail(self, error: Error) {
        match self {
            Waiter::Conf(reply) => {
                let _ = reply.send(Err(error));
            }
            Waiter::Push(reply) => {
                let _ = reply.send(Err(error.into()));
            }
            Waiter::Direct(reply) => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// What waits to be proposed.
enum Queued {
    /// A follower's batch, with what the proposal carries beside it: its
    /// blocks' tags and terms, encoded once when it is queued, so that a
    /// proposal's size counts them.
    Push(PushedBatch, Beside, AckSender),
    Direct(Vec<LogEntry>, DirectSender),
}

/// A batch's `Proposal.block_tags` and `Proposal.block_terms`.
struct Beside {
    tags: Bytes,
    terms: Bytes,
}

impl Beside {
    fn of(batch: &PushedBatch) -> Beside {
        let (tags, terms) = fit_beside(
            batch.message_bytes(),
            super::proposal::encode_block_tags(batch),
            super::proposal::encode_block_terms(batch),
        );
        Beside { tags: tags.into(), terms: terms.into() }
    }
}

/// What a batch of `message_bytes` carries beside it in a proposal, within
/// [`PROPOSAL_BYTES_MAX`] in all: the blocks' terms and tags save the
/// replicas work but are never needed, so the terms are left out when they
/// would not fit (the replicas index the blocks by their tags), then the
/// tags (the replicas check the blocks entry by entry). Tags of blocks whose
/// entries carry many distinct long tags can outweigh the compressed blocks.
fn fit_beside(message_bytes: usize, tags: Vec<u8>, terms: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    if message_bytes + tags.len() + terms.len() <= PROPOSAL_BYTES_MAX {
        (tags, terms)
    } else if message_bytes + tags.len() <= PROPOSAL_BYTES_MAX {
        (tags, Vec::new())
    } else {
        (Vec::new(), Vec::new())
    }
}

/// The bytes a direct write's entries take in a proposal, about.
fn direct_write_bytes(entries: &[LogEntry]) -> usize {
    entries.iter().map(|entry| entry.encoded_len() + 8).sum()
}

/// A direct write's bytes in a proposal, if it fits one: refused
/// ([`Error::TooLarge`]) if not.
fn direct_write_fits(entries: &[LogEntry]) -> Result<usize, Error> {
    match direct_write_bytes(entries) {
        bytes if bytes > PROPOSAL_BYTES_MAX => Err(too_large("a write", bytes)),
        bytes => Ok(bytes),
    }
}

/// Why a write or a batch too large for one proposal is refused: one Raft
/// entry holds at most [`PROPOSAL_BYTES_MAX`], so that every record of the
/// log reads back (`RAFT_RECORD_BYTES_MAX`).
fn too_large(what: &str, bytes: usize) -> Error {
    Error::TooLarge(format!(
        "{what} of {bytes} bytes is over the {PROPOSAL_BYTES_MAX} bytes one proposal of the tier holds \
         (PROPOSAL_BYTES_MAX): send it in smaller parts"
    ))
}

impl Queued {
    fn bytes(&self) -> usize {
        match self {
            Queued::Push(batch, beside, _) => batch.message_bytes() + beside.tags.len() + beside.terms.len(),
            Queued::Direct(entries, _) => direct_write_bytes(entries),
        }
    }
}

/// Counters of one replica, for `/metrics` and `/v1/cluster`.
#[derive(Clone, Debug, Default)]
pub struct ReplicaCounters {
    /// Leader changes seen.
    pub leader_changes: u64,
    /// Proposals made while leading.
    pub proposals: u64,
    /// Entries applied.
    pub applied_entries: u64,
    /// Peer messages refused (malformed, from a non-member, bad snapshot).
    pub refused_messages: u64,
    /// Snapshots sent and installed.
    pub snapshots_sent: u64,
    /// See [`ReplicaCounters::snapshots_sent`].
    pub snapshots_installed: u64,
    /// Follower leases that expired here.
    pub leases_expired: u64,
}

/// A follower's lease on the group, as this replica keeps it. Renewed by
/// every applied entry that carries one of the follower's batches (its
/// pushes, or an empty keepalive batch when it has nothing to push): the
/// renewals are replicated, their clock is each replica's own.
#[derive(Clone, Copy, Debug)]
struct Lease {
    expires: Instant,
    /// When the last renewal was applied here (ns since the epoch; 0 when
    /// none since this replica started).
    last_seen_ns: i64,
    expired: bool,
}

/// A follower's lease, for `/v1/cluster`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseReport {
    /// Renewed within its TTL.
    pub alive: bool,
    /// Time left before it expires (0 once expired).
    pub expires_in_ms: u64,
    /// When the last renewal was applied here (ns since the epoch; 0 when
    /// none since this replica started).
    pub last_seen_ns: i64,
    /// Entries the follower's shards in this group held durable and the
    /// group had not archived, as of each shard's last push applied here
    /// (0 when its pushes do not say: an earlier follower).
    pub lag_entries: u64,
}

/// A replica's report.
#[derive(Clone, Debug)]
pub struct ReplicaReport {
    /// The group.
    pub group: u32,
    /// Raft's view.
    pub status: GroupStatus,
    /// Counters.
    pub counters: ReplicaCounters,
    /// Each origin pair's watermark here.
    pub watermarks: BTreeMap<Pair, u64>,
    /// Each follower's lease here.
    pub leases: BTreeMap<u32, LeaseReport>,
    /// The group's voters and learners, as this replica knows them.
    pub voters: Vec<u64>,
    /// See `voters`.
    pub learners: Vec<u64>,
    /// This node was removed from the group.
    pub removed: bool,
    /// On the leader: how many entries each other replica lags behind its
    /// log (empty elsewhere, or for a replica that does not hold the log's
    /// start yet).
    pub replica_lag: BTreeMap<u64, u64>,
}

struct Proposed {
    term: u64,
    waiters: Vec<Waiter>,
    /// The batches of a push proposal as the front door parsed them: the
    /// leader applies its own entry without parsing it again.
    parsed: Option<Vec<PushedBatch>>,
}

struct State {
    group: Group,
    /// The state after the last entry the applier decided.
    machine: Machine,
    /// Peer messages to step, in arrival order.
    inbound: VecDeque<Message>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    proposals: BTreeMap<u64, Proposed>,
    /// Committed entries for the applier.
    committed: VecDeque<Entry>,
    /// The last entry the applier decided (its appends may not be durable yet).
    decided: u64,
    /// ReadIndex requests sent to raft-rs, by context.
    reads_asked: BTreeMap<u64, (Pair, ReadSender)>,
    /// ReadIndex answers waiting for the applier to reach their index.
    reads_ready: Vec<(u64, Pair, ReadSender)>,
    next_read: u64,
    /// The highest direct-write seq proposed in `direct_term`.
    direct_proposed: (u64, u64),
    /// Peers a snapshot is being sent to.
    snapshotting: BTreeSet<u64>,
    /// Membership changes to propose, by the raft loop between two rounds
    /// (raft-rs must not take a proposal while a round is out).
    changes: VecDeque<QueuedChange>,
    /// A leadership transfer to start between two rounds.
    transfer: Option<u64>,
    counters: ReplicaCounters,
    failed: Option<String>,
    /// The followers' leases (at most ARCHIVE_PAIRS_MAX: one per origin
    /// pair at most).
    leases: BTreeMap<u32, Lease>,
    /// Each follower shard's lag as of its last push applied here: the
    /// durable seq the push said, less the watermark after it.
    lags: BTreeMap<Pair, u64>,
}

/// One replica of one group.
pub struct Replica {
    node_id: u32,
    group_id: u32,
    /// The group's address book (changes with its membership).
    members: RefCell<Members>,
    shard: Shard,
    state: RefCell<State>,
    /// One link per other member of the group.
    links: RefCell<BTreeMap<u32, Rc<Link>>>,
    link_tasks: RefCell<Vec<glommio::task::JoinHandle<()>>>,
    /// A membership change applied, for the log's next round.
    conf_noted: RefCell<Option<ConfState>>,
    /// The address book changed (a snapshot's), for the log's next round.
    addrs_noted: Cell<bool>,
    /// This node is no longer a member of the group: it stops.
    removed: Cell<bool>,
    /// Membership changes at or below this index are skipped, never
    /// applied (`wormdb cluster recover`'s fence; 0: none).
    conf_fence: u64,
    ticks: Cell<u64>,
    /// `--lease-ttl`.
    lease_ttl: Cell<Duration>,
    /// Only the raft loop writes the log.
    log: RefCell<Option<RaftLog>>,
    /// The applied index to note in the log's next round.
    applied: Cell<u64>,
    /// The machine state to note in the log's next round: the index it
    /// stands for and the watermarks that moved (only ever a state whose
    /// appends are durable).
    machine_noted: RefCell<Option<(u64, BTreeMap<Pair, u64>)>>,
    /// Held by whoever appends to the shard (the applier for one entry, a
    /// snapshot for one chunk) until its appends are durable: each sees
    /// the other's data whole, and the machine moves between entries only.
    apply_lock: futures_util::lock::Mutex<()>,
    /// Snapshots being sent: (peer, outcome once known).
    snapshot_outcomes: RefCell<Vec<(u64, SnapshotOutcome)>>,
    /// The connection forwarded direct writes take to the leader's node.
    forward: RefCell<Option<(SocketAddr, Rc<Channel>)>>,
    wake: RefCell<mpsc::Sender<()>>,
    wakeups: RefCell<Option<mpsc::Receiver<()>>>,
    apply_wake: RefCell<mpsc::Sender<()>>,
    apply_wakeups: RefCell<Option<mpsc::Receiver<()>>>,
    closing: Cell<bool>,
}

impl Replica {
    /// Opens replica `node_id` of group `group_id`: its Raft log from `dir`
    /// (a new log when there is none, whose voters are the members), its
    /// state machine from the shard's data.
    pub async fn open(
        node_id: u32,
        group_id: u32,
        members: Members,
        voters: &[u64],
        dir: &Path,
        shard: Shard,
        retained_entries: u64,
    ) -> Result<Rc<Replica>, Error> {
        let (recovered, segments) = RaftLog::recover(dir)?;
        // The state machine as the log persisted it; a log without one (a
        // new replica) starts from the shard's data, standing for no entry.
        let machine = match recovered.machine {
            Some(state) => Machine::restored(state.watermarks, state.applied),
            // A new replica of a new group: the state stands for the
            // snapshot the group starts from.
            None if recovered.restored.is_none() && !voters.is_empty() => {
                Machine::restored(shard.origin_watermarks(), BOOTSTRAP.0)
            }
            None => Machine::new(shard.origin_watermarks()),
        };
        if recovered.torn_bytes > 0 {
            tracing::warn!(group = group_id, bytes = recovered.torn_bytes, "raft log: cut a torn last record");
        }
        let logger = logger::for_group(node_id, group_id);
        // The group's own address book wins over the node's members file
        // (it follows the group's membership changes exactly).
        let members = match recovered.addrs {
            Some(addrs) if !addrs.is_empty() => Members { addrs },
            _ => members,
        };
        let mut group = Group::new(u64::from(node_id), group_id, voters, recovered.restored, &logger);
        group.set_retained_entries(retained_entries);
        let persisted = MachineState { applied: machine.applied(), watermarks: machine.watermarks().clone() };
        let log = RaftLog::open(dir, segments, group.checkpoint(), persisted, members.addrs.clone()).await?;
        let conf = group.conf_state();
        let me = u64::from(node_id);
        let known = !conf.voters.is_empty() || !conf.learners.is_empty();
        let removed = known && !conf.voters.contains(&me) && !conf.learners.contains(&me);
        let status = group.status();
        tracing::info!(
            group = group_id,
            term = status.term,
            commit = status.commit,
            applied = status.applied,
            machine_applied = machine.applied(),
            "raft group opened"
        );
        let links = members
            .addrs
            .iter()
            .filter(|(&id, _)| id != node_id)
            .map(|(&id, &addr)| (id, Link::new(group_id, node_id, id, addr)))
            .collect();
        let members = RefCell::new(members);
        let (wake, wakeups) = mpsc::channel(1);
        let (apply_wake, apply_wakeups) = mpsc::channel(1);
        Ok(Rc::new(Replica {
            node_id,
            group_id,
            members,
            shard,
            state: RefCell::new(State {
                decided: status.applied,
                group,
                machine,
                inbound: VecDeque::new(),
                queue: VecDeque::new(),
                queued_bytes: 0,
                proposals: BTreeMap::new(),
                committed: VecDeque::new(),
                reads_asked: BTreeMap::new(),
                reads_ready: Vec::new(),
                next_read: 1,
                direct_proposed: (0, 0),
                snapshotting: BTreeSet::new(),
                changes: VecDeque::new(),
                transfer: None,
                counters: ReplicaCounters::default(),
                failed: None,
                leases: BTreeMap::new(),
                lags: BTreeMap::new(),
            }),
            links: RefCell::new(links),
            link_tasks: RefCell::new(Vec::new()),
            conf_noted: RefCell::new(None),
            addrs_noted: Cell::new(false),
            removed: Cell::new(removed),
            conf_fence: recovered.conf_fence,
            ticks: Cell::new(0),
            lease_ttl: Cell::new(crate::limits::LEASE_TTL_DEFAULT),
            log: RefCell::new(Some(log)),
            applied: Cell::new(status.applied),
            machine_noted: RefCell::new(None),
            apply_lock: futures_util::lock::Mutex::new(()),
            snapshot_outcomes: RefCell::new(Vec::new()),
            forward: RefCell::new(None),
            wake: RefCell::new(wake),
            wakeups: RefCell::new(Some(wakeups)),
            apply_wake: RefCell::new(apply_wake),
            apply_wakeups: RefCell::new(Some(apply_wakeups)),
            closing: Cell::new(false),
        }))
    }

    /// Starts the raft loop, the applier and the links; returns their
    /// tasks (cancel them to stop).
    pub fn start(self: &Rc<Self>) -> Vec<glommio::task::JoinHandle<()>> {
        if self.removed.get() {
            tracing::warn!(group = self.group_id, "this node was removed from the group: its replica stays stopped");
            self.closing.set(true);
            return Vec::new();
        }
        let tasks = vec![
            glommio::spawn_local(self.clone().raft_loop()).detach(),
            glommio::spawn_local(self.clone().apply_loop()).detach(),
        ];
        let mut link_tasks = self.link_tasks.borrow_mut();
        for link in self.links.borrow().values() {
            link_tasks.push(glommio::spawn_local(link.clone().run()).detach());
        }
        tasks
    }

    /// Whether this node was removed from the group.
    pub fn removed(&self) -> bool {
        self.removed.get()
    }

    /// The group.
    pub fn group_id(&self) -> u32 {
        self.group_id
    }

    /// The group's members and their addresses.
    pub fn members(&self) -> Members {
        self.members.borrow().clone()
    }

    /// The group's voters and learners, as this replica knows them.
    pub fn conf_state(&self) -> ConfState {
        self.state.borrow().group.conf_state()
    }

    fn wake(&self) {
        let _ = self.wake.borrow_mut().try_send(());
    }

    /// Stops taking new work: queued and waiting writers are refused.
    pub fn close(&self) {
        self.closing.set(true);
        self.wake();
        let _ = self.apply_wake.borrow_mut().try_send(());
        for task in self.link_tasks.borrow_mut().drain(..) {
            task.cancel();
        }
        let mut state = self.state.borrow_mut();
        state.queued_bytes = 0;
        for queued in std::mem::take(&mut state.queue) {
            match queued {
                Queued::Push(_, _, reply) => Waiter::Push(reply).fail(Error::ShuttingDown),
                Queued::Direct(_, reply) => Waiter::Direct(reply).fail(Error::ShuttingDown),
            }
        }
        for (_, reply) in std::mem::take(&mut state.changes) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(Error::ShuttingDown));
            }
        }
        for (_, proposed) in std::mem::take(&mut state.proposals) {
            proposed.waiters.into_iter().for_each(|waiter| waiter.fail(Error::ShuttingDown));
        }
        // Watermark reads too: the raft loop that would answer them stops,
        // and a reader left waiting holds its caller until a timeout.
        let reads = std::mem::take(&mut state.reads_asked).into_values();
        for (_, reply) in
            reads.chain(std::mem::take(&mut state.reads_ready).into_iter().map(|(_, pair, reply)| (pair, reply)))
        {
            let _ = reply.send(Err(Error::ShuttingDown));
        }
    }

    /// The refusal for work that needs the leader, with its address.
    fn not_leader(&self, state: &State) -> Error {
        match state.group.not_leader() {
            Error::NotLeader { group, leader, term } => Error::NotLeader {
                group,
                leader: leader.and_then(|(id, _)| Some((id, self.members.borrow().addr(id)?))),
                term,
            },
            other => other,
        }
    }

    /// Refuses unless this replica leads and has room for `bytes` more.
    fn admit_work(&self, state: &State, bytes: usize) -> Result<(), Error> {
        if self.closing.get() {
            return Err(Error::ShuttingDown);
        }
        if let Some(failure) = &state.failed {
            return Err(Error::Log(failure.clone()));
        }
        if !state.group.is_leader() {
            return Err(self.not_leader(state));
        }
        if state.queued_bytes + bytes > PROPOSAL_QUEUE_BYTES_MAX {
            return Err(Error::Exhausted(format!(
                "group {}: {} bytes wait to be proposed (PROPOSAL_QUEUE_BYTES_MAX)",
                self.group_id, state.queued_bytes
            )));
        }
        Ok(())
    }

    /// Queues a follower's batch for the next proposal; `reply` gets its
    /// ack once committed and applied here, or the refusal.
    pub fn propose_push(&self, batch: PushedBatch, reply: AckSender) {
        let mut state = self.state.borrow_mut();
        // Admitted by its own bytes, before anything is encoded for it (a
        // refused batch costs nothing); what it carries beside is counted
        // once queued.
        if batch.message_bytes() > PROPOSAL_BYTES_MAX {
            // A follower's batches stay well below (PUSH_BATCH_BYTES_TARGET).
            let _ = reply.send(Err(too_large("a pushed batch", batch.message_bytes()).into()));
            return;
        }
        if let Err(error) = self.admit_work(&state, batch.message_bytes()) {
            let _ = reply.send(Err(error.into()));
            return;
        }
        let beside = Beside::of(&batch);
        let queued = Queued::Push(batch, beside, reply);
        state.queued_bytes += queued.bytes();
        state.queue.push_back(queued);
        drop(state);
        self.wake();
    }

    /// Queues a direct write (ids `(0, group, seq)`, seqs given at
    /// proposal); the answer is its (first, last) seq once committed and
    /// applied here.
    pub fn propose_direct(&self, entries: Vec<LogEntry>) -> oneshot::Receiver<Result<(u64, u64), Error>> {
        let (reply, answer) = oneshot::channel();
        let mut state = self.state.borrow_mut();
        let bytes = match direct_write_fits(&entries).and_then(|bytes| self.admit_work(&state, bytes).map(|()| bytes)) {
            Ok(bytes) => bytes,
            Err(error) => {
                let _ = reply.send(Err(error));
                return answer;
            }
        };
        state.queued_bytes += bytes;
        state.queue.push_back(Queued::Direct(entries, reply));
        drop(state);
        self.wake();
        answer
    }

    /// A direct write to this core's group: proposed here when this
    /// replica leads, else forwarded to the leader's node (which proposes
    /// it to its replica of the same group, and forwards no further).
    /// Answers the (first, last) seq of ids `(0, group, seq)`.
    pub async fn write(&self, entries: Vec<LogEntry>) -> Result<(u64, u64), Error> {
        if self.is_leader() {
            return self.propose_direct(entries).await.map_err(|_| Error::ShuttingDown)?;
        }
        let (leader, term) = self.leader();
        let Some((leader_id, addr)) = leader.filter(|(id, _)| *id != self.node_id) else {
            return Err(self.not_leader(&self.state.borrow()));
        };
        // Refused here rather than by the leader, whose refusal comes back
        // as a plain INVALID_ARGUMENT.
        direct_write_fits(&entries)?;
        let channel = self.forward_channel(addr).await.map_err(|status| Error::NotLeader {
            group: self.group_id,
            leader: None,
            term: term.max(status.leader.as_ref().map_or(0, |hint| hint.term)),
        })?;
        let request = crate::proto::ForwardWrite { group: self.group_id, entries };
        let answer: Result<crate::proto::WriteResponse, _> =
            channel.unary(transport::WRITE_PATH, &request, Some(FORWARD_TIMEOUT)).await;
        match answer {
            Ok(response) => Ok((response.first_seq, response.last_seq)),
            Err(status) => {
                self.forward.borrow_mut().take();
                let leader = status
                    .leader
                    .as_ref()
                    .and_then(|hint| Some((hint.leader_id, hint.addr.parse().ok()?)))
                    .or(Some((leader_id, addr)));
                match status.code {
                    crate::grpc::status::Code::Unavailable => {
                        Err(Error::NotLeader { group: self.group_id, leader, term })
                    }
                    crate::grpc::status::Code::InvalidArgument => Err(Error::Malformed(status.message)),
                    crate::grpc::status::Code::ResourceExhausted => Err(Error::Exhausted(status.message)),
                    _ => Err(Error::Log(format!("forwarded write to node {leader_id}: {}", status.message))),
                }
            }
        }
    }

    /// The connection to the leader's node for forwarded writes, kept while
    /// the leader stays.
    async fn forward_channel(&self, addr: SocketAddr) -> Result<Rc<Channel>, crate::grpc::status::Status> {
        if let Some((known, channel)) = self.forward.borrow().as_ref() {
            if *known == addr {
                return Ok(channel.clone());
            }
        }
        let channel = Rc::new(Channel::connect(addr, transport::CONNECT_TIMEOUT).await?);
        *self.forward.borrow_mut() = Some((addr, channel.clone()));
        Ok(channel)
    }

    /// The watermark of `pair`, linearizable: the leader confirms it still
    /// leads (ReadIndex) and answers once it applied up to that point.
    pub async fn read_watermark(&self, pair: Pair) -> Result<u64, Error> {
        let answer = {
            let mut state = self.state.borrow_mut();
            if self.closing.get() {
                return Err(Error::ShuttingDown);
            }
            if state.reads_asked.len() + state.reads_ready.len() >= READ_INDEX_WAITING_MAX {
                return Err(Error::Exhausted(format!(
                    "group {}: {READ_INDEX_WAITING_MAX} watermark reads wait (READ_INDEX_WAITING_MAX)",
                    self.group_id
                )));
            }
            let context = state.next_read;
            state.next_read += 1;
            if state.group.read_index(context.to_le_bytes().to_vec()).is_err() {
                return Err(self.not_leader(&state));
            }
            let (reply, answer) = oneshot::channel();
            state.reads_asked.insert(context, (pair, reply));
            answer
        };
        self.wake();
        answer.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Every origin pair's watermark in this replica's data (what a
    /// snapshot sender needs to know: the data may be ahead of the state
    /// machine after a restart, never behind).
    pub fn watermarks(&self) -> BTreeMap<Pair, u64> {
        self.shard.origin_watermarks()
    }

    /// Counts and logs a refused peer call (`what`, from node `from`).
    fn refused(&self, what: &str, from: u32, error: Error) -> Error {
        self.state.borrow_mut().counters.refused_messages += 1;
        tracing::warn!(group = self.group_id, from, "{what} refused: {error}");
        error
    }

    /// Only the other members may speak Raft to this replica.
    fn check_member(&self, what: &str, from: u32) -> Result<(), Error> {
        if from == self.node_id || self.members.borrow().addr(from).is_none() {
            let error = Error::NotMember(format!("node {from} is not a member of the tier"));
            return Err(self.refused(what, from, error));
        }
        Ok(())
    }

    /// Takes in a batch of messages from member `from`, each raft-rs's
    /// encoding. A message from a non-member, to another node, for another
    /// group, or that does not decode, refuses the batch (counted).
    pub fn receive(&self, from: u32, to: u32, messages: &[Bytes]) -> Result<(), Error> {
        let refuse = |reason: String| Err(self.refused("raft messages", from, Error::Malformed(reason)));
        self.check_member("raft messages", from)?;
        if to != self.node_id {
            return refuse(format!("messages for node {to} reached node {}", self.node_id));
        }
        let mut decoded = Vec::with_capacity(messages.len());
        for bytes in messages {
            // Zero-copy: an append's entries keep pointing into `bytes`.
            let message = match Message::parse_from_carllerche_bytes(bytes) {
                Ok(message) => message,
                Err(error) => return refuse(format!("malformed raft message: {error}")),
            };
            if message.from != u64::from(from) || message.to != u64::from(to) {
                return refuse(format!(
                    "a message from {} to {} in a batch from {from} to {to}",
                    message.from, message.to
                ));
            }
            if message.get_msg_type() == MessageType::MsgSnapshot {
                return refuse("snapshots travel on their own stream".to_string());
            }
            decoded.push(message);
        }
        self.state.borrow_mut().inbound.extend(decoded);
        self.wake();
        Ok(())
    }

    /// Installs one chunk of a snapshot stream from member `from`. A
    /// chunk's batches (the sender's stored blocks of one origin pair each,
    /// see `snapshot.rs`) are appended where the data lacks them, and made
    /// durable together (the machine does not move: the data is ahead of
    /// it until the end, which a crash meanwhile leaves so). The last chunk raises the machine to the
    /// sender's state, once every batch is durable, and its `MsgSnapshot`
    /// is stepped.
    pub async fn install_chunk(&self, chunk: SnapshotChunk) -> Result<(), Error> {
        let from = chunk.from;
        let refuse = |reason: String| Err(self.refused("snapshot", from, Error::Malformed(reason)));
        self.check_member("snapshot", from)?;
        let _installing = self.apply_lock.lock().await;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&chunk.batch);
        chunk.batches.iter().chain(&chunk.block_tags).for_each(|bytes| crc.update(bytes));
        let carries_batches = !chunk.batch.is_empty() || !chunk.batches.is_empty();
        if carries_batches && crc.finalize() != chunk.crc32 {
            return refuse("a snapshot chunk fails its crc".to_string());
        }
        if chunk.block_tags.len() > chunk.batches.len() {
            return refuse("a snapshot chunk has more tag sets than batches".to_string());
        }
        if chunk.block_terms.len() > chunk.block_tags.len() {
            return refuse("a snapshot chunk has terms of batches without tags".to_string());
        }
        let mut terms_crc = crc32fast::Hasher::new();
        chunk.block_terms.iter().for_each(|bytes| terms_crc.update(bytes));
        if !chunk.block_terms.is_empty() && terms_crc.finalize() != chunk.terms_crc32 {
            return refuse("a snapshot chunk's block terms fail their crc".to_string());
        }
        // The batches of a chunk are appended together and made durable
        // with one fdatasync; `appends` knows what each pair holds meanwhile.
        let mut appends = Appends::default();
        let (mut block_tags, mut block_terms) = (chunk.block_tags.into_iter(), chunk.block_terms.into_iter());
        let single = (!chunk.batch.is_empty()).then_some(chunk.batch);
        let batches = single.map(|batch| (batch, Bytes::new(), Bytes::new()));
        let batches = batches.into_iter().chain(
            chunk
                .batches
                .into_iter()
                .map(|batch| (batch, block_tags.next().unwrap_or_default(), block_terms.next().unwrap_or_default())),
        );
        for (bytes, tags, terms) in batches {
            // The sender's stored blocks; with their tags (from its index),
            // only their crcs are checked, and with their terms, they are
            // indexed with the sender's word filters.
            let parsed = if tags.is_empty() {
                PushedBatch::parse_archived(bytes)
            } else {
                let tags = match super::proposal::decode_block_tags(&tags) {
                    Ok(tags) => tags,
                    Err(error) => return refuse(format!("a snapshot batch's block tags: {error}")),
                };
                match super::proposal::decode_block_terms(&terms) {
                    Ok(terms) => PushedBatch::parse_archived_checked(bytes, tags, terms),
                    Err(error) => return refuse(format!("a snapshot batch's block terms: {error}")),
                }
            };
            let mut batch = match parsed {
                Ok(batch) => batch,
                Err(error) => return refuse(format!("a snapshot chunk is malformed: {error}")),
            };
            let pair = (batch.follower_id, batch.shard);
            let (Some(first_seq), Some(last_seq)) = (batch.seqs().next(), batch.seqs().last()) else {
                return refuse("an empty snapshot batch".to_string());
            };
            let held = appends.held(&self.shard, pair);
            if first_seq > held + 1 {
                return refuse(format!(
                    "a snapshot chunk of {pair:?} starts at {first_seq}, the data holds 1..={held}"
                ));
            }
            if last_seq > held {
                let origin = Origin { node: pair.0, shard: pair.1, first_seq };
                if let Some(refusal) = self.append_fresh(&mut batch, origin, 0, &mut appends).await? {
                    return refuse(format!("a snapshot chunk does not apply: {refusal}"));
                }
            }
        }
        appends.durable().await?;
        if !chunk.raft_message.is_empty() {
            let message = match Message::parse_from_bytes(&chunk.raft_message) {
                Ok(message) if message.get_msg_type() == MessageType::MsgSnapshot => message,
                Ok(_) => return refuse("the last chunk is not a MsgSnapshot".to_string()),
                Err(error) => return refuse(format!("malformed raft message: {error}")),
            };
            if chunk.watermarks.len() > ARCHIVE_PAIRS_MAX {
                return refuse(format!("a snapshot of more than {ARCHIVE_PAIRS_MAX} origin pairs"));
            }
            let index = message.get_snapshot().get_metadata().index;
            if chunk.applied < index {
                return refuse(format!("a snapshot at index {index} whose data stands for {}", chunk.applied));
            }
            let mut watermarks = BTreeMap::new();
            for watermark in &chunk.watermarks {
                let pair = (watermark.node, watermark.shard);
                let held = self.shard.origin_watermark(pair.0, pair.1);
                if held < watermark.seq {
                    return refuse(format!("the snapshot left {pair:?} at {held}, its state at {}", watermark.seq));
                }
                watermarks.insert(pair, watermark.seq);
            }
            // The sender's address book: this replica may have missed the
            // entries that added members (they are in the snapshot now).
            let mut book = BTreeMap::new();
            for member in &chunk.members {
                match member.addr.parse::<SocketAddr>() {
                    Ok(addr) if book.len() < crate::limits::TIER_MEMBERS_MAX => {
                        book.insert(member.node_id, addr);
                    }
                    _ => return refuse(format!("a bad address book entry in a snapshot: {member:?}")),
                }
            }
            if !book.is_empty() && book != self.members.borrow().addrs {
                self.members.borrow_mut().addrs = book;
                self.addrs_noted.set(true);
                self.sync_links();
            }
            let mut state = self.state.borrow_mut();
            state.machine.raise_to(&watermarks, chunk.applied);
            state.decided = state.decided.max(state.machine.applied());
            self.note_machine(&mut state.machine);
            state.counters.snapshots_installed += 1;
            state.inbound.push_back(message);
            drop(state);
            self.wake();
        }
        Ok(())
    }

    /// Hands the machine's state to the log's next round. Only called when
    /// every append the state covers is durable.
    fn note_machine(&self, machine: &mut Machine) {
        let (applied, changes) = machine.take_changes();
        let mut noted = self.machine_noted.borrow_mut();
        let (noted_applied, noted_changes) = noted.get_or_insert_with(Default::default);
        *noted_applied = applied;
        noted_changes.extend(changes);
    }

    /// This replica's report.
    pub fn report(&self) -> ReplicaReport {
        let state = self.state.borrow();
        let conf = state.group.conf_state();
        ReplicaReport {
            group: self.group_id,
            status: state.group.status(),
            counters: state.counters.clone(),
            watermarks: state.machine.watermarks().clone(),
            leases: state
                .leases
                .iter()
                .map(|(&follower, lease)| {
                    // Expiry is decided at the tick (which counts and logs
                    // it): the report says what the tick decided.
                    let left = lease.expires.saturating_duration_since(Instant::now());
                    let alive = !lease.expired;
                    let lags = state.lags.range((follower, 0)..=(follower, u32::MAX));
                    let report = LeaseReport {
                        alive,
                        expires_in_ms: if alive { left.as_millis() as u64 } else { 0 },
                        last_seen_ns: lease.last_seen_ns,
                        lag_entries: lags.map(|(_, lag)| lag).sum(),
                    };
                    (follower, report)
                })
                .collect(),
            replica_lag: conf
                .voters
                .iter()
                .chain(&conf.learners)
                .filter(|&&id| id != u64::from(self.node_id))
                .filter_map(|&id| Some((id, state.group.lag_of(id)?)))
                .collect(),
            voters: conf.voters,
            learners: conf.learners,
            removed: self.removed.get(),
        }
    }

    /// The leader this replica knows, with its address, and the term.
    pub fn leader(&self) -> (Option<(u32, SocketAddr)>, u64) {
        let status = self.state.borrow().group.status();
        let leader = (status.leader != 0)
            .then_some(status.leader as u32)
            .and_then(|id| Some((id, self.members.borrow().addr(id)?)));
        (leader, status.term)
    }

    /// Whether this replica leads its group.
    pub fn is_leader(&self) -> bool {
        self.state.borrow().group.is_leader()
    }

    async fn raft_loop(self: Rc<Self>) {
        let Some(mut wakeups) = self.wakeups.borrow_mut().take() else { return };
        let mut next_tick = Instant::now() + TICK;
        loop {
            // Closed: stop between two rounds, never in the middle of one's
            // write (a write cut short by cancelling it could damage the
            // log's last page, which it writes again).
            if self.closing.get() {
                return;
            }
            let now = Instant::now();
            if now < next_tick {
                let wait = next_tick - now;
                futures_lite::future::or(
                    async {
                        wakeups.next().await;
                    },
                    glommio::timer::sleep(wait),
                )
                .await;
            }
            if Instant::now() >= next_tick {
                self.state.borrow_mut().group.tick();
                let ticks = self.ticks.get() + 1;
                self.ticks.set(ticks);
                if ticks % PROMOTE_CHECK_TICKS == 0 {
                    self.promote_caught_up();
                }
                self.expire_leases();
                next_tick += TICK;
                if next_tick < Instant::now() {
                    // A stalled executor: do not tick in a burst.
                    next_tick = Instant::now() + TICK;
                }
            }
            self.step_inbound();
            self.propose_queued();
            self.propose_changes();
            if let Err(error) = self.handle_ready().await {
                // The log cannot be written: this replica must not promise
                // anything more. It stops here; the others carry on.
                tracing::error!(group = self.group_id, %error, "raft log failed: this replica stops");
                let mut state = self.state.borrow_mut();
                state.failed = Some(error.to_string());
                drop(state);
                self.close();
                return;
            }
            if self.removed.get() && self.conf_noted.borrow().is_none() {
                // The change that removed it is durable: it stops here.
                self.close();
                return;
            }
            // Advancing may have made more work ready (a commit the leader
            // now knows, queued proposals): go round again without waiting.
            let more = {
                let state = self.state.borrow();
                state.group.has_ready() || (!state.queue.is_empty() && state.proposals.len() < PROPOSALS_IN_FLIGHT_MAX)
            };
            if more {
                self.wake();
            }
        }
    }

    fn step_inbound(&self) {
        let mut state = self.state.borrow_mut();
        self.snapshot_outcomes.borrow_mut().retain(|(peer, outcome)| match outcome.get() {
            None => true,
            Some(done) => {
                state.group.report_snapshot(*peer, done);
                state.snapshotting.remove(peer);
                if done {
                    state.counters.snapshots_sent += 1;
                }
                false
            }
        });
        for link in self.links.borrow().values() {
            if link.take_unreachable() {
                state.group.report_unreachable(u64::from(link.peer()));
            }
        }
        while let Some(message) = state.inbound.pop_front() {
            if let Err(error) = state.group.step(message) {
                tracing::debug!(group = self.group_id, %error, "raft step");
            }
        }
    }

    /// Proposes the queued membership changes and starts a queued
    /// leadership transfer (between two rounds).
    fn propose_changes(&self) {
        let mut state = self.state.borrow_mut();
        if let Some(to) = state.transfer.take() {
            if state.group.is_leader() {
                state.group.transfer_leader(to);
            }
        }
        while let Some((change, reply)) = state.changes.pop_front() {
            let term = state.group.status().term;
            match state.group.propose_conf_change(change) {
                Ok(index) => {
                    let waiters = reply.map(Waiter::Conf).into_iter().collect();
                    state.proposals.insert(index, Proposed { term, waiters, parsed: None });
                }
                Err(error) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(error));
                    }
                }
            }
        }
    }

    /// Turns queued writes into proposals while this replica leads.
    fn propose_queued(&self) {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        if state.queue.is_empty() {
            return;
        }
        if !state.group.is_leader() {
            let error = self.not_leader(state);
            state.queued_bytes = 0;
            for queued in std::mem::take(&mut state.queue) {
                match queued {
                    Queued::Push(_, _, reply) => Waiter::Push(reply).fail(error.clone()),
                    Queued::Direct(_, reply) => Waiter::Direct(reply).fail(error.clone()),
                }
            }
            return;
        }
        let term = state.group.status().term;
        if state.direct_proposed.0 != term {
            state.direct_proposed = (term, 0);
        }
        while !state.queue.is_empty() && state.proposals.len() < PROPOSALS_IN_FLIGHT_MAX {
            let direct = matches!(state.queue.front(), Some(Queued::Direct(..)));
            let mut proposal =
                Proposal { batches: Vec::new(), direct, block_tags: Vec::new(), block_terms: Vec::new() };
            let mut waiters = Vec::new();
            let mut parsed = Vec::new();
            let mut bytes = 0usize;
            while let Some(front) = state.queue.front() {
                let size = front.bytes();
                if matches!(front, Queued::Direct(..)) != direct
                    || (!proposal.batches.is_empty() && bytes + size > PROPOSAL_BYTES_MAX)
                {
                    break;
                }
                bytes += size;
                state.queued_bytes -= size;
                match state.queue.pop_front() {
                    Some(Queued::Push(batch, beside, reply)) => {
                        proposal.batches.push(batch.message().clone());
                        proposal.block_tags.push(beside.tags);
                        proposal.block_terms.push(beside.terms);
                        parsed.push(batch);
                        waiters.push(Waiter::Push(reply));
                    }
                    Some(Queued::Direct(mut entries, reply)) => {
                        // Seqs continue what this leader knows is taken:
                        // applied, or proposed by it in this term.
                        let pair = (0, self.group_id);
                        let first = state.direct_proposed.1.max(state.machine.watermark(pair)) + 1;
                        let now = now_ns();
                        for (offset, entry) in entries.iter_mut().enumerate() {
                            entry.seq = first + offset as u64;
                            entry.node_id = 0;
                            entry.shard = self.group_id;
                            if entry.timestamp_ns == 0 {
                                entry.timestamp_ns = now;
                            }
                        }
                        state.direct_proposed.1 = first + entries.len() as u64 - 1;
                        let batch = PushBatch {
                            durable_seq: 0,
                            follower_id: 0,
                            shard: self.group_id,
                            entries,
                            blocks: Vec::new(),
                        };
                        proposal.batches.push(batch.encode_to_vec().into());
                        waiters.push(Waiter::Direct(reply));
                    }
                    None => break,
                }
            }
            match state.group.propose(proposal.encode_to_vec()) {
                Ok((index, term)) => {
                    state.counters.proposals += 1;
                    let parsed = (!direct).then_some(parsed);
                    state.proposals.insert(index, Proposed { term, waiters, parsed });
                }
                Err(error) => waiters.into_iter().for_each(|waiter| waiter.fail(error.clone())),
            }
        }
    }

    /// One round of the group's `Ready`, in raft-rs's order.
    async fn handle_ready(&self) -> Result<(), Error> {
        let Some(mut work) = self.state.borrow_mut().group.ready() else { return Ok(()) };
        if let Some(snapshot) = &work.snapshot {
            // Its data came first (install_chunk): the state is at least
            // the snapshot's.
            let mut state = self.state.borrow_mut();
            state.decided = state.decided.max(snapshot.get_metadata().index);
            self.applied.set(self.applied.get().max(snapshot.get_metadata().index));
        }
        self.send(std::mem::take(&mut work.messages));
        if let Some((leader, term)) = work.leader_changed {
            self.leader_changed(leader, term);
        }
        {
            // Only this task touches the log: it is taken out for the write
            // so no borrow is held across it.
            let mut log = self.log.borrow_mut().take().ok_or_else(|| Error::Log("the log is gone".into()))?;
            log.note_applied(self.applied.get());
            if let Some((applied, changes)) = self.machine_noted.borrow_mut().take() {
                log.note_machine(applied, changes);
            }
            if let Some(conf) = self.conf_noted.borrow_mut().take() {
                log.note_conf(conf, self.members.borrow().addrs.clone());
            }
            if self.addrs_noted.replace(false) {
                log.note_addrs(self.members.borrow().addrs.clone());
            }
            let checkpoint = || self.state.borrow().group.checkpoint();
            let persisted = log.persist(&work, checkpoint).await;
            let compacted = match persisted {
                Ok(()) => {
                    let checkpoint = self.state.borrow().group.checkpoint();
                    log.compact(checkpoint).await
                }
                Err(error) => Err(error),
            };
            *self.log.borrow_mut() = Some(log);
            compacted?;
        }
        self.send(std::mem::take(&mut work.persisted_messages));
        let after = self.state.borrow_mut().group.persisted();
        self.send(after.messages);
        let Work { committed, read_states, .. } = work;
        let mut state = self.state.borrow_mut();
        for read in read_states {
            let context = read.request_ctx.get(..8).and_then(|bytes| bytes.try_into().ok()).map(u64::from_le_bytes);
            if let Some((pair, reply)) = context.and_then(|context| state.reads_asked.remove(&context)) {
                state.reads_ready.push((read.index, pair, reply));
            }
        }
        let had = state.committed.len();
        state.committed.extend(committed);
        state.committed.extend(after.committed);
        let woke = state.committed.len() > had || !state.reads_ready.is_empty();
        drop(state);
        if woke {
            let _ = self.apply_wake.borrow_mut().try_send(());
        }
        Ok(())
    }

    fn leader_changed(&self, leader: u64, term: u64) {
        let mut state = self.state.borrow_mut();
        state.counters.leader_changes += 1;
        tracing::info!(
            group = self.group_id,
            term,
            leader,
            "group {}: node {leader} leads in term {term}",
            self.group_id
        );
        if leader != u64::from(self.node_id) {
            // Proposals of an earlier term of ours may still commit, or be
            // overwritten: their writers are told to retry either way
            // (pushes are exactly-once; the ack will come to the resend).
            let error = self.not_leader(&state);
            for (_, proposed) in std::mem::take(&mut state.proposals) {
                proposed.waiters.into_iter().for_each(|waiter| waiter.fail(error.clone()));
            }
            for (_, (_, reply)) in std::mem::take(&mut state.reads_asked) {
                let _ = reply.send(Err(error.clone()));
            }
        } else {
            drop(state);
            self.extend_leases();
        }
    }

    /// Sends messages to their peers; a snapshot goes on its own stream.
    fn send(&self, messages: Vec<Message>) {
        let mut by_peer: BTreeMap<u32, Vec<Message>> = BTreeMap::new();
        for message in messages {
            if message.get_msg_type() == MessageType::MsgSnapshot {
                self.start_snapshot(message);
                continue;
            }
            by_peer.entry(message.to as u32).or_default().push(message);
        }
        for (peer, messages) in by_peer {
            if let Some(link) = self.links.borrow().get(&peer) {
                link.send(messages);
            }
        }
    }

    fn start_snapshot(&self, message: Message) {
        let peer = message.to;
        let Some(link) = self.links.borrow().get(&(peer as u32)).cloned() else { return };
        let mut state = self.state.borrow_mut();
        if !state.snapshotting.insert(peer) {
            return;
        }
        if state.decided < state.machine.applied() {
            // The applier is in the middle of an entry (an append waiting
            // out backpressure): the watermarks are not yet the state after
            // any entry. raft-rs hears of a failure and sends it again.
            drop(state);
            self.snapshot_outcomes.borrow_mut().push((peer, Rc::new(Cell::new(Some(false)))));
            return;
        }
        // The state the data sent stands for: the receiver skips the entries
        // up to `applied` (their effects come with the data).
        let members = self.members.borrow().addrs.clone();
        let snapshot = transport::SnapshotState {
            watermarks: state.machine.watermarks().clone(),
            applied: state.machine.applied(),
            members,
        };
        drop(state);
        let (shard, group, addr) = (self.shard.clone(), self.group_id, link.addr());
        let outcome = Rc::new(Cell::new(None));
        let done = outcome.clone();
        let mut wake = self.wake.borrow().clone();
        glommio::spawn_local(async move {
            let sent = transport::send_snapshot(shard, &link, message, snapshot).await;
            if let Err(status) = &sent {
                tracing::warn!(group, to = %addr, %status, "snapshot failed");
            }
            done.set(Some(sent.is_ok()));
            let _ = wake.try_send(());
        })
        .detach();
        self.snapshot_outcomes.borrow_mut().push((peer, outcome));
    }

    async fn apply_loop(self: Rc<Self>) {
        let Some(mut wakeups) = self.apply_wakeups.borrow_mut().take() else { return };
        loop {
            if self.closing.get() {
                return;
            }
            let entry = self.state.borrow_mut().committed.pop_front();
            let Some(entry) = entry else {
                self.answer_reads();
                if wakeups.next().await.is_none() {
                    return;
                }
                continue;
            };
            let index = entry.index;
            if let Err(error) = self.apply(entry).await {
                tracing::error!(group = self.group_id, index, %error, "apply failed: this replica stops applying");
                self.state.borrow_mut().failed = Some(error.to_string());
                self.close();
                return;
            }
            let mut state = self.state.borrow_mut();
            state.counters.applied_entries += 1;
            // Compaction of the in-memory log happens here; the files
            // follow at the raft loop's next round.
            state.group.applied(index);
            drop(state);
            self.applied.set(index);
            self.answer_reads();
        }
    }

    fn answer_reads(&self) {
        let mut state = self.state.borrow_mut();
        let decided = state.decided;
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut state.reads_ready).into_iter().partition(|(index, _, _)| *index <= decided);
        state.reads_ready = waiting;
        for (_, pair, reply) in ready {
            let _ = reply.send(Ok(state.machine.watermark(pair)));
        }
    }

    /// Applies one committed entry; answers its proposer when it is ours.
    async fn apply(&self, entry: Entry) -> Result<(), Error> {
        let index = entry.index;
        let _applying = self.apply_lock.lock().await;
        // Taken now: answered below whatever happens to the leadership
        // meanwhile (the entry is committed, its outcome is final).
        let mut proposed = self.state.borrow_mut().proposals.remove(&index);
        if entry.get_entry_type() == EntryType::EntryConfChangeV2 {
            self.apply_conf_change(&entry, proposed);
            return Ok(());
        }
        let fresh = self.state.borrow_mut().machine.begin(index);
        if !fresh {
            // The state holds this entry's effects already (a restart, or a
            // snapshot's data): its outcome for a writer is not known here.
            let mut state = self.state.borrow_mut();
            state.decided = state.decided.max(index);
            drop(state);
            for waiter in proposed.into_iter().flat_map(|proposed| proposed.waiters) {
                waiter.fail(Error::Dropped { group: self.group_id });
            }
            return Ok(());
        }
        if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
            // A new leader's empty entry, or a membership change (the next
            // issue's): nothing for the archive.
            let mut state = self.state.borrow_mut();
            state.decided = index;
            self.note_machine(&mut state.machine);
            return Ok(());
        }
        let ours = proposed.as_ref().is_some_and(|proposed| proposed.term == entry.term);
        let outcomes = match proposed.as_mut().and_then(|proposed| proposed.parsed.take()).filter(|_| ours) {
            Some(mut batches) => {
                self.apply_batches(&mut batches, false, |batch: &PushedBatch| (batch.follower_id, batch.shard)).await?
            }
            None => self.decode_and_apply(&entry).await?,
        };
        // Every append of the entry is durable: the state may be persisted.
        let mut state = self.state.borrow_mut();
        state.decided = index;
        self.note_machine(&mut state.machine);
        drop(state);
        if let Some(proposed) = proposed {
            if proposed.term != entry.term {
                proposed.waiters.into_iter().for_each(|waiter| waiter.fail(Error::Dropped { group: self.group_id }));
            } else {
                let mut outcomes = outcomes.into_iter();
                for waiter in proposed.waiters {
                    let outcome = outcomes.next().unwrap_or(Err(Error::Dropped { group: self.group_id }));
                    match (waiter, outcome) {
                        (Waiter::Push(reply), outcome) => {
                            let _ = reply.send(
                                outcome
                                    .map(|(pair, admission, watermark)| PushAck {
                                        shard: pair.1,
                                        acked_seq: watermark,
                                        written: admission.fresh as u64,
                                        duplicates: admission.duplicates as u64,
                                    })
                                    .map_err(Into::into),
                            );
                        }
                        (Waiter::Direct(reply), outcome) => {
                            let _ =
                                reply.send(outcome.map(|(_, admission, watermark)| (admission.first_seq, watermark)));
                        }
                        (waiter @ Waiter::Conf(_), _) => waiter.fail(Error::Dropped { group: self.group_id }),
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies a committed membership change to raft-rs (always: a change
    /// the machine's state already covers, after a snapshot or a restart,
    /// still tells raft-rs who the members are; applying it again changes
    /// nothing), to the address book and the links; answers its proposer.
    fn apply_conf_change(&self, entry: &Entry, proposed: Option<Proposed>) {
        let index = entry.index;
        let change = match ConfChangeV2::parse_from_bytes(&entry.data) {
            Ok(change) => change,
            Err(error) => {
                tracing::error!(group = self.group_id, index, %error, "a committed membership change does not decode");
                return;
            }
        };
        let mut state = self.state.borrow_mut();
        if index <= self.conf_fence {
            // From before `cluster recover`: the conf state it wrote stands.
            tracing::warn!(group = self.group_id, index, "skipped a membership change fenced by `cluster recover`");
            let _ = state.machine.begin(index);
            state.decided = state.decided.max(index);
            self.note_machine(&mut state.machine);
            drop(state);
            for waiter in proposed.into_iter().flat_map(|proposed| proposed.waiters) {
                waiter.fail(Error::Dropped { group: self.group_id });
            }
            return;
        }
        let applied = state.group.apply_conf_change(&change);
        let _ = state.machine.begin(index);
        state.decided = state.decided.max(index);
        self.note_machine(&mut state.machine);
        let outcome = match applied {
            Ok(conf) => {
                let mut members = self.members.borrow_mut();
                for single in change.get_changes() {
                    let node = single.node_id as u32;
                    match single.get_change_type() {
                        ConfChangeType::AddLearnerNode | ConfChangeType::AddNode => {
                            let addr =
                                std::str::from_utf8(change.get_context()).ok().and_then(|addr| addr.parse().ok());
                            if let Some(addr) = addr {
                                members.addrs.insert(node, addr);
                            }
                        }
                        ConfChangeType::RemoveNode => {
                            members.addrs.remove(&node);
                        }
                    }
                }
                drop(members);
                tracing::info!(
                    group = self.group_id,
                    index,
                    voters = ?conf.voters,
                    learners = ?conf.learners,
                    "membership changed"
                );
                let me = u64::from(self.node_id);
                if !conf.voters.contains(&me) && !conf.learners.contains(&me) {
                    tracing::warn!(group = self.group_id, "this node was removed from the group: it stops serving it");
                    self.removed.set(true);
                }
                *self.conf_noted.borrow_mut() = Some(conf);
                Ok(())
            }
            Err(error) => {
                tracing::error!(group = self.group_id, index, %error, "a committed membership change was refused");
                Err(error)
            }
        };
        drop(state);
        self.sync_links();
        if let Some(proposed) = proposed {
            let mut outcome = Some(outcome);
            for waiter in proposed.waiters {
                match (waiter, proposed.term == entry.term) {
                    (Waiter::Conf(reply), true) => {
                        let _ = reply.send(outcome.take().unwrap_or(Ok(())));
                    }
                    (waiter, _) => waiter.fail(Error::Dropped { group: self.group_id }),
                }
            }
        }
    }

    /// One link per other member in the address book: new members get one,
    /// removed members' links stop.
    fn sync_links(&self) {
        if self.closing.get() {
            return;
        }
        let members = self.members.borrow().addrs.clone();
        let mut links = self.links.borrow_mut();
        links.retain(|id, link| {
            let keep = members.get(id) == Some(&link.addr());
            if !keep {
                link.close();
            }
            keep
        });
        for (&id, &addr) in &members {
            if id != self.node_id && !links.contains_key(&id) {
                let link = Link::new(self.group_id, self.node_id, id, addr);
                self.link_tasks.borrow_mut().push(glommio::spawn_local(link.clone().run()).detach());
                links.insert(id, link);
            }
        }
    }

    /// A membership change of this group, from any member: done here when
    /// this replica leads, else sent to the leader's node once (which does
    /// it there and sends it no further). `NotLeader` or `Busy` when no
    /// leader is known or another change is under way: try again.
    pub async fn change(&self, change: Change) -> Result<(), Error> {
        if self.is_leader() {
            return self.change_here(change).await;
        }
        let (leader, term) = self.leader();
        let Some((leader_id, addr)) = leader.filter(|(id, _)| *id != self.node_id) else {
            return Err(self.not_leader(&self.state.borrow()));
        };
        let channel = Channel::connect(addr, transport::CONNECT_TIMEOUT).await.map_err(|_| Error::NotLeader {
            group: self.group_id,
            leader: None,
            term,
        })?;
        let answer: Result<crate::proto::GroupChangeResponse, _> =
            channel.unary(transport::CHANGE_PATH, &change.to_proto(self.group_id), Some(CHANGE_TIMEOUT)).await;
        answer.map(|_| ()).map_err(|status| {
            use crate::grpc::status::Code;
            match status.code {
                Code::FailedPrecondition => Error::Refused(status.message),
                Code::InvalidArgument => Error::Malformed(status.message),
                Code::Unavailable => Error::Busy(format!("node {leader_id}: {}", status.message)),
                _ => Error::Busy(format!("membership change sent to node {leader_id}: {}", status.message)),
            }
        })
    }

    /// A membership change on the leader: checked, proposed, and answered
    /// once applied here (a transfer: once the leadership moved).
    pub async fn change_here(&self, change: Change) -> Result<(), Error> {
        let planned = self.plan_change(change);
        self.wake();
        match planned? {
            Planned::Done => Ok(()),
            Planned::Proposed(answer) => answer.await.map_err(|_| Error::ShuttingDown)?,
            Planned::Transfer(node) => self.wait_leader(node).await,
        }
    }

    /// Checks a membership change on the leader and queues what it takes.
    fn plan_change(&self, change: Change) -> Result<Planned, Error> {
        {
            let mut state = self.state.borrow_mut();
            if !state.group.is_leader() {
                return Err(self.not_leader(&state));
            }
            let conf = state.group.conf_state();
            let member = |node: u32| conf.voters.contains(&u64::from(node)) || conf.learners.contains(&u64::from(node));
            let single = |kind: ConfChangeType, node: u32| {
                let mut single = ConfChangeSingle::default();
                single.set_change_type(kind);
                single.node_id = u64::from(node);
                let mut change = ConfChangeV2::default();
                change.set_changes(vec![single].into());
                change
            };
            let proposal = match change {
                Change::AddLearner { node, addr } => {
                    if member(node) {
                        let known = self.members.borrow().addr(node);
                        if known == Some(addr) {
                            return Ok(Planned::Done);
                        }
                        return Err(Error::Refused(format!(
                            "node id {node} is already a member (at {})",
                            known.map_or("an unknown address".to_string(), |addr| addr.to_string())
                        )));
                    }
                    if conf.voters.len() + conf.learners.len() >= TIER_MEMBERS_MAX {
                        return Err(Error::Refused(format!(
                            "the tier has {} members already (TIER_MEMBERS_MAX)",
                            TIER_MEMBERS_MAX
                        )));
                    }
                    let mut proposal = single(ConfChangeType::AddLearnerNode, node);
                    proposal.set_context(addr.to_string().into_bytes().into());
                    proposal
                }
                Change::Promote { node } => {
                    if conf.voters.contains(&u64::from(node)) {
                        return Ok(Planned::Done);
                    }
                    if !conf.learners.contains(&u64::from(node)) {
                        return Err(Error::Refused(format!("node {node} is not a learner of group {}", self.group_id)));
                    }
                    single(ConfChangeType::AddNode, node)
                }
                Change::Remove { node } => {
                    if !member(node) {
                        return Err(Error::Refused(format!("node {node} is not a member of group {}", self.group_id)));
                    }
                    if conf.voters == [u64::from(node)] {
                        return Err(Error::Refused(format!(
                            "node {node} is the last voter of group {}: the group would be lost",
                            self.group_id
                        )));
                    }
                    if node == self.node_id {
                        // The leader leaves last: it hands over first.
                        let next = conf
                            .voters
                            .iter()
                            .copied()
                            .filter(|&voter| voter != u64::from(node))
                            .min_by_key(|&voter| state.group.lag_of(voter).unwrap_or(u64::MAX));
                        state.transfer = next;
                        return Err(Error::Busy(format!(
                            "group {}: node {node} leads it and hands its leadership over first; try again",
                            self.group_id
                        )));
                    }
                    single(ConfChangeType::RemoveNode, node)
                }
                Change::Transfer { node } => {
                    if !conf.voters.contains(&u64::from(node)) {
                        return Err(Error::Refused(format!("node {node} is not a voter of group {}", self.group_id)));
                    }
                    if node == self.node_id {
                        return Ok(Planned::Done);
                    }
                    state.transfer = Some(u64::from(node));
                    return Ok(Planned::Transfer(node));
                }
            };
            let (reply, answer) = oneshot::channel();
            state.changes.push_back((proposal, Some(reply)));
            Ok(Planned::Proposed(answer))
        }
    }

    /// At shutdown: when this replica leads, hands the group to the voter
    /// that is furthest along and waits (up to `timeout`) until it leads,
    /// so the group does not wait an election timeout to miss this node.
    pub async fn hand_over(&self, timeout: Duration) {
        let to = {
            let mut state = self.state.borrow_mut();
            if !state.group.is_leader() {
                return;
            }
            let me = u64::from(self.node_id);
            let conf = state.group.conf_state();
            let next = conf
                .voters
                .iter()
                .copied()
                .filter(|&voter| voter != me)
                .filter_map(|voter| Some((state.group.lag_of(voter)?, voter)))
                .min();
            let Some((_, next)) = next else {
                tracing::info!(group = self.group_id, "shutdown: no caught-up voter to hand the leadership to");
                return;
            };
            state.transfer = Some(next);
            next
        };
        self.wake();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let leader = self.state.borrow().group.status().leader;
            if leader != u64::from(self.node_id) && leader != 0 {
                tracing::info!(group = self.group_id, to = leader, "shutdown: handed the leadership over");
                return;
            }
            glommio::timer::sleep(TICK).await;
        }
        tracing::warn!(group = self.group_id, to, "shutdown: the leadership was not handed over in time");
    }

    /// Waits (up to two election timeouts) until `node` leads the group.
    async fn wait_leader(&self, node: u32) -> Result<(), Error> {
        let deadline = Instant::now() + 2 * TICK * super::ELECTION_TICKS_MAX as u32;
        loop {
            let status = self.state.borrow().group.status();
            if status.leader == u64::from(node) {
                return Ok(());
            }
            if Instant::now() >= deadline || self.closing.get() {
                return Err(Error::Busy(format!(
                    "group {}: node {node} did not take the leadership in time (it may be behind or unreachable)",
                    self.group_id
                )));
            }
            glommio::timer::sleep(TICK).await;
        }
    }

    /// Renews `follower`'s lease: an entry carrying one of its batches was
    /// applied here.
    fn renew_lease(&self, state: &mut State, follower: u32) {
        if follower == 0 || (state.leases.len() >= ARCHIVE_PAIRS_MAX && !state.leases.contains_key(&follower)) {
            return;
        }
        let lease = Lease { expires: Instant::now() + self.lease_ttl.get(), last_seen_ns: now_ns(), expired: false };
        if let Some(old) = state.leases.insert(follower, lease) {
            if old.expired {
                tracing::info!(group = self.group_id, follower, "follower lease renewed after it expired");
            }
        }
    }

    /// Marks the leases whose time ran out (each logs and counts once).
    fn expire_leases(&self) {
        let mut state = self.state.borrow_mut();
        let now = Instant::now();
        let mut expired = Vec::new();
        for (&follower, lease) in state.leases.iter_mut() {
            if !lease.expired && now >= lease.expires {
                lease.expired = true;
                expired.push(follower);
            }
        }
        for follower in expired {
            state.counters.leases_expired += 1;
            tracing::warn!(
                group = self.group_id,
                follower,
                ttl_ms = self.lease_ttl.get().as_millis() as u64,
                "follower lease expired: no push or keepalive for its TTL"
            );
        }
    }

    /// A new leader gives every lease one more election timeout, as etcd
    /// does: a failover expires none (the followers were waiting for it).
    fn extend_leases(&self) {
        let until = Instant::now() + TICK * super::ELECTION_TICKS_MAX as u32;
        for lease in self.state.borrow_mut().leases.values_mut().filter(|lease| !lease.expired) {
            lease.expires = lease.expires.max(until);
        }
    }

    /// Sets the followers' lease TTL (`--lease-ttl`) and grants a lease to
    /// every follower the state machine knows: a restarted replica knows
    /// no renewal time, and treats them as renewed now.
    pub fn set_lease_ttl(&self, ttl: Duration) {
        self.lease_ttl.set(ttl);
        let mut state = self.state.borrow_mut();
        let followers: Vec<u32> =
            state.machine.watermarks().keys().map(|&(node, _)| node).filter(|&node| node != 0).collect();
        let expires = Instant::now() + ttl;
        for follower in followers.into_iter().take(ARCHIVE_PAIRS_MAX) {
            state.leases.entry(follower).or_insert(Lease { expires, last_seen_ns: 0, expired: false });
        }
    }

    /// On the leader: proposes the promotion of a learner whose log is
    /// within [`PROMOTE_LAG_ENTRIES`] of the leader's (one at a time).
    fn promote_caught_up(&self) {
        let mut state = self.state.borrow_mut();
        if !state.group.is_leader() || state.group.has_pending_conf() {
            return;
        }
        let conf = state.group.conf_state();
        for learner in conf.learners {
            let Some(lag) = state.group.lag_of(learner) else { continue };
            if lag <= PROMOTE_LAG_ENTRIES {
                let mut single = ConfChangeSingle::default();
                single.set_change_type(ConfChangeType::AddNode);
                single.node_id = learner;
                let mut change = ConfChangeV2::default();
                change.set_changes(vec![single].into());
                if state.changes.is_empty() {
                    tracing::info!(group = self.group_id, learner, lag, "promoting a learner");
                    state.changes.push_back((change, None));
                }
                return;
            }
        }
    }

    /// Decodes a committed entry's proposal and applies its batches.
    async fn decode_and_apply(&self, entry: &Entry) -> Result<Vec<BatchOutcome>, Error> {
        let index = entry.index;
        Ok(match Proposal::decode(entry.data.clone()) {
            Ok(proposal) => {
                let direct = proposal.direct;
                let mut batches = Vec::with_capacity(proposal.batches.len());
                let mut parse_errors = Vec::new();
                // The leader checked the blocks entry by entry and sent their
                // tags: verify crcs only. Without them (or if they do not
                // decode), check everything here.
                // With the tags come the blocks' terms, so that this
                // node's index prunes as the leader's (a leader before
                // them sent none: the blocks' unions are indexed).
                let mut block_tags = proposal.block_tags.into_iter();
                let mut block_terms = proposal.block_terms.into_iter();
                let checked = !direct && block_tags.len() == proposal.batches.len();
                for (position, bytes) in proposal.batches.into_iter().enumerate() {
                    let tags = block_tags.next().filter(|_| checked);
                    let terms = block_terms.next().unwrap_or_default();
                    let parsed = match tags.map(|tags| super::proposal::decode_block_tags(&tags)) {
                        Some(Ok(tags)) => {
                            let terms = super::proposal::decode_block_terms(&terms).unwrap_or_else(|error| {
                                tracing::warn!(group = self.group_id, index, %error, "a batch's block terms do not decode: its blocks are indexed by their tags");
                                None
                            });
                            PushedBatch::parse_checked(bytes, tags, terms)
                        }
                        _ => PushedBatch::parse(bytes),
                    };
                    match parsed {
                        Ok(batch) => batches.push(batch),
                        Err(error) => parse_errors.push((position, error)),
                    }
                }
                let group = self.group_id;
                let pair_of = move |batch: &PushedBatch| {
                    if direct {
                        (0, group)
                    } else {
                        (batch.follower_id, batch.shard)
                    }
                };
                let mut outcomes = self.apply_batches(&mut batches, direct, pair_of).await?;
                // A batch that does not parse was refused at the front door
                // already; should one be here, it is refused the same way
                // on every replica.
                for (position, error) in parse_errors {
                    outcomes.insert(position.min(outcomes.len()), Err(Error::Replication(error)));
                }
                outcomes
            }
            Err(error) => {
                tracing::error!(group = self.group_id, index, %error, "a committed entry does not decode: skipped");
                Vec::new()
            }
        })
    }

    /// Admits `batches` in order and appends their fresh entries; returns,
    /// per batch, (pair, admission, the pair's watermark after it) or the
    /// refusal, once every append is durable.
    async fn apply_batches(
        &self,
        batches: &mut [PushedBatch],
        direct: bool,
        pair_of: impl Fn(&PushedBatch) -> Pair,
    ) -> Result<Vec<BatchOutcome>, Error> {
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut appends = Appends::default();
        for batch in batches.iter_mut() {
            let pair = pair_of(batch);
            let admission = {
                let state = self.state.borrow();
                state.machine.check(pair, batch.seqs(), direct)
            };
            let admission = match admission {
                Ok(admission) => admission,
                Err(error) => {
                    outcomes.push(Err(error));
                    continue;
                }
            };
            if admission.fresh > 0 {
                let origin = Origin { node: pair.0, shard: pair.1, first_seq: admission.first_seq };
                if let Some(refusal) = self.append_fresh(batch, origin, admission.duplicates, &mut appends).await? {
                    outcomes.push(Err(refusal));
                    continue;
                }
            }
            let mut state = self.state.borrow_mut();
            state.machine.advance(pair, &admission);
            let watermark = state.machine.watermark(pair);
            if !direct {
                self.renew_lease(&mut state, pair.0);
                if batch.durable_seq > 0 && (state.lags.len() < ARCHIVE_PAIRS_MAX || state.lags.contains_key(&pair)) {
                    state.lags.insert(pair, batch.durable_seq.saturating_sub(watermark));
                }
            }
            outcomes.push(Ok((pair, admission, watermark)));
        }
        appends.durable().await?;
        Ok(outcomes)
    }
}

/// The appends of one entry (or one snapshot chunk) in flight.
#[derive(Default)]
struct Appends {
    waits: Vec<shard::AppendWait>,
    /// The last seq appended per pair, durable or not.
    appended: BTreeMap<Pair, u64>,
}

impl Appends {
    /// The highest seq of `pair` the shard holds or will.
    fn held(&self, shard: &Shard, pair: Pair) -> u64 {
        let durable = shard.origin_watermark(pair.0, pair.1);
        self.appended.get(&pair).map_or(durable, |&appended| appended.max(durable))
    }

    async fn durable(&mut self) -> Result<(), Error> {
        for wait in self.waits.drain(..) {
            wait.durable().await.map_err(|error| Error::Log(format!("apply: {error}")))?;
        }
        Ok(())
    }
}

impl Replica {
    /// Appends the entries of `batch` after its first `skip` (duplicates),
    /// the first of them at `origin.first_seq`, leaving out those the shard
    /// holds already (its data may be ahead of the machine: see
    /// `machine.rs`). `Ok(Some(refusal))` when the batch's content is
    /// refused (the same on every replica); transient refusals
    /// (backpressure, a full disk) are waited out.
    async fn append_fresh(
        &self,
        batch: &mut PushedBatch,
        mut origin: Origin,
        mut skip: usize,
        appends: &mut Appends,
    ) -> Result<Option<Error>, Error> {
        let pair = (origin.node, origin.shard);
        let held = appends.held(&self.shard, pair);
        if held + 1 < origin.first_seq {
            // The machine never runs ahead of the data: this is a bug or a
            // damaged shard, and applying on would leave a hole.
            return Err(Error::Log(format!(
                "apply: {pair:?} seq {} follows data that ends at {held}",
                origin.first_seq
            )));
        }
        let count = batch.len();
        if held >= origin.first_seq {
            let already = (held - origin.first_seq + 1) as usize;
            if skip + already >= count {
                return Ok(None);
            }
            skip += already;
            origin.first_seq = held + 1;
        }
        let last_seq = origin.first_seq + (count - skip) as u64 - 1;
        loop {
            let appended = {
                let mut fresh = [(&mut *batch, skip)];
                with_fresh_parts(&mut fresh, |parts| self.shard.append_replicated_parts(origin, parts))
            };
            match appended {
                Ok(Ok(wait)) => {
                    appends.waits.push(wait);
                    appends.appended.insert(pair, last_seq);
                    return Ok(None);
                }
                Err(error) => return Ok(Some(Error::Replication(error))),
                Ok(Err(error @ (shard::Error::InvalidEntry { .. } | shard::Error::InvalidAppend(_)))) => {
                    return Ok(Some(Error::Replication(error.into())))
                }
                Ok(Err(shard::Error::Closed)) => return Err(Error::ShuttingDown),
                Ok(Err(error @ (shard::Error::Backpressure { .. } | shard::Error::DiskFull { .. }))) => {
                    tracing::debug!(group = self.group_id, %error, "apply: append refused for now");
                    appends.durable().await?;
                    glommio::timer::sleep(APPLY_RETRY).await;
                    if self.closing.get() {
                        return Err(Error::ShuttingDown);
                    }
                }
                // The shard failed (an fdatasync error poisons it): this
                // replica can apply nothing more; the caller stops it.
                Ok(Err(error)) => return Err(Error::Log(format!("apply: the shard failed: {error}"))),
            }
        }
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_batch_carries_beside_it_is_left_out_rather_than_overflow_a_proposal() {
        let (tags, terms) = (vec![1; 1000], vec![2; 5000]);
        assert_eq!(fit_beside(1 << 20, tags.clone(), terms.clone()), (tags.clone(), terms.clone()));
        let full = PROPOSAL_BYTES_MAX - 1000;
        assert_eq!(fit_beside(full, tags.clone(), terms.clone()), (tags.clone(), Vec::new()), "terms first");
        assert_eq!(fit_beside(full + 1, tags.clone(), terms.clone()), (Vec::new(), Vec::new()), "then the tags");
        assert_eq!(fit_beside(PROPOSAL_BYTES_MAX - 6000, tags.clone(), terms.clone()), (tags, terms), "exactly full");
    }
}
