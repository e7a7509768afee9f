//! One simulated run: followers' pusher sessions ([`Session`]) and the
//! leader's pair archives ([`PairArchive`]) over an in-memory network and a
//! leader storage model, all driven by one seeded generator and one event
//! queue in virtual time. Nothing here reads a clock, touches a socket or
//! iterates a hash map, so a seed replays exactly.
//!
//! # The model
//!
//! - **Followers** write entries to their own log (durable at once: the
//!   follower's disk is not under test) and push them with a `Session`. A
//!   follower crash loses the session and its connections, never its log.
//! - **Network.** A connection carries messages in each direction in order
//!   (it is an HTTP/2 stream over TCP), each after its own delay; a few are
//!   very slow, which holds up the rest of that connection. A connection
//!   can be cut (a message drop, a partition, a crash): every message
//!   behind the cut is lost, a random prefix of those in flight still
//!   arrives, and each end learns of it after a random delay (a reset, or
//!   the keepalive timeout). Separate connections are not ordered with
//!   respect to each other, so batches of a dead session can reach the
//!   leader after the next session got the watermark and started sending.
//!   The network also **duplicates** pushed batches: a copy reaches the
//!   archive later as a push of its own (as a retried `PushEntries` would).
//!   Partitions cut a follower off for a while (connects time out).
//! - **Leader storage.** An append is written at once but durable only at
//!   the next sync (a group commit across pairs). A sync can fail with EIO:
//!   the shard is then poisoned (every append fails) until the leader is
//!   restarted, and the failed appends may or may not be on disk. An append
//!   can also fail with "disk full" (nothing written, shard healthy). A
//!   leader crash keeps what was synced plus a random prefix of what was
//!   written after it; the restarted leader's archives reload their
//!   watermarks from the durable data (the highest durable origin seq, as
//!   the real shards do from their blocks' origins).
//!
//! # The properties
//!
//! Checked at every step: an ack (sent by the leader, or taken by a
//! session) never exceeds the pair's durable archive watermark; each entry
//! that becomes durable in the archive is the next seq of its pair (no
//! repeat, no hole) and is the follower's entry of that seq (same content);
//! the leader's watermark never exceeds a follower's log (no data loss).
//! At the end, once the faults stopped: every follower entry is archived
//! within a deadline, and after shutdown every session finishes with
//! everything acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wormdb::replication::archive::{self, Batch, PairArchive, Step};
use wormdb::replication::session::{self, Action, Session};
use wormdb::replication::Error;
use wormdb::shard;

use super::rng::Rng;

/// Virtual time, in microseconds.
type Micros = u64;

const MS: Micros = 1000;
const SECOND: Micros = 1_000_000;
/// The real transport's keepalive: a silent dead peer is noticed within
/// interval + timeout.
const KEEPALIVE_DETECT_MAX: Micros = 20 * SECOND;
/// The pusher's connect timeout.
const CONNECT_TIMEOUT: Micros = 5 * SECOND;
/// Once faults stop, old notifications, slow messages and duplicates are
/// all delivered within this time.
const SETTLE: Micros = KEEPALIVE_DETECT_MAX + 5 * SECOND;
/// Once the faults stop, the archive must grow at least once in this
/// time until it holds everything (a slow run is fine, a stuck one is not):
/// longer than a keepalive timeout plus the longest backoff.
const STALL_MAX: Micros = 60 * SECOND;
/// Every session must finish within this time after shutdown.
const SHUTDOWN_DEADLINE: Micros = 30 * SECOND;
/// Events of one run; more means the run spins.
const EVENTS_MAX: u64 = 5_000_000;

/// One entry of a follower's log: its seq, its content (a random id that
/// stands for ids, tags and body) and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimEntry {
    pub seq: u64,
    pub content: u64,
    pub bytes: u32,
}

/// A pushed batch.
#[derive(Clone, Debug)]
pub struct SimBatch {
    pub follower: usize,
    pub entries: Vec<SimEntry>,
}

impl Batch for SimBatch {
    fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().map(|entry| entry.seq)
    }

    fn bytes(&self) -> usize {
        self.entries.iter().map(|entry| entry.bytes as usize).sum()
    }
}

/// The knobs of one run, drawn from its seed.
#[derive(Clone, Debug)]
pub struct Params {
    pub followers: usize,
    pub fault_phase: Micros,
    pub write_interval_max: Micros,
    pub write_entries_max: u64,
    pub session: session::Config,
    pub group_bytes_max: usize,
    pub delay_max: Micros,
    pub slow_per_million: u64,
    pub cut_per_million: u64,
    pub duplicate_per_million: u64,
    pub sync_delay_max: Micros,
    pub eio_per_million: u64,
    pub disk_full_per_million: u64,
    pub load_fail_per_million: u64,
    pub chaos_interval_max: Micros,
    pub partition_weight: u64,
    pub leader_crash_weight: u64,
    pub follower_crash_weight: u64,
}

impl Params {
    fn draw(rng: &mut Rng) -> Params {
        Params {
            followers: rng.between(1, 3) as usize,
            fault_phase: rng.between(1, 5) * SECOND,
            write_interval_max: rng.between(5, 100) * MS,
            write_entries_max: rng.between(1, 4),
            session: session::Config {
                batch_entries_max: rng.between(1, 8),
                batch_bytes_target: rng.between(1, 300) as usize,
                batches_in_flight_max: rng.between(1, 4) as usize,
            },
            group_bytes_max: rng.between(1, 600) as usize,
            delay_max: rng.between(50, 20_000),
            slow_per_million: rng.rate(20_000),
            cut_per_million: rng.rate(50_000),
            duplicate_per_million: rng.rate(200_000),
            sync_delay_max: rng.between(100, 5000),
            eio_per_million: rng.rate(20_000),
            disk_full_per_million: rng.rate(30_000),
            load_fail_per_million: rng.rate(100_000),
            chaos_interval_max: rng.between(100, 3000) * MS,
            partition_weight: rng.rate(10),
            leader_crash_weight: rng.rate(10),
            follower_crash_weight: rng.rate(10),
        }
    }
}

/// Counters of one run, summed over runs for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub entries: u64,
    pub batches: u64,
    pub acks: u64,
    pub sessions: u64,
    pub duplicates_skipped: u64,
    pub refusals: u64,
    pub ack_backwards: u64,
    pub cuts: u64,
    pub duplicated_batches: u64,
    /// Batches that reached the leader after their follower had dropped
    /// their connection (a newer session may be running).
    pub late_batches: u64,
    /// `GetWatermark` loads that finished with a value below the one known
    /// by then (stale).
    pub stale_loads: u64,
    pub eio: u64,
    pub disk_full: u64,
    pub leader_crashes: u64,
    pub follower_crashes: u64,
    pub partitions: u64,
    pub virtual_seconds: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.events += other.events;
        self.entries += other.entries;
        self.batches += other.batches;
        self.acks += other.acks;
        self.sessions += other.sessions;
        self.duplicates_skipped += other.duplicates_skipped;
        self.refusals += other.refusals;
        self.ack_backwards += other.ack_backwards;
        self.cuts += other.cuts;
        self.duplicated_batches += other.duplicated_batches;
        self.late_batches += other.late_batches;
        self.stale_loads += other.stale_loads;
        self.eio += other.eio;
        self.disk_full += other.disk_full;
        self.leader_crashes += other.leader_crashes;
        self.follower_crashes += other.follower_crashes;
        self.partitions += other.partitions;
        self.virtual_seconds += other.virtual_seconds;
    }
}

#[derive(Clone, Debug)]
enum Message {
    /// Connect and `GetWatermark`.
    Hello,
    Watermark(Result<u64, String>),
    Batch(SimBatch),
    CloseSend,
    Ack(u64),
    StreamError(String),
    StreamEnd,
}

const TO_LEADER: usize = 0;
const TO_FOLLOWER: usize = 1;

/// Why a load was asked for.
#[derive(Clone, Copy, Debug)]
enum LoadFor {
    Committer,
    GetWatermark { conn: usize },
}

#[derive(Clone, Debug)]
enum Event {
    Deliver {
        conn: usize,
        direction: usize,
        index: u64,
        message: Message,
    },
    /// One end of a connection learns it is dead.
    Dead {
        conn: usize,
        at_leader: bool,
    },
    Write {
        follower: usize,
    },
    Wake {
        follower: usize,
        epoch: u64,
    },
    FollowerRestart {
        follower: usize,
    },
    LeaderCrash,
    LeaderRestart,
    Load {
        epoch: u64,
        follower: usize,
        value: Option<u64>,
        purpose: LoadFor,
    },
    Sync {
        epoch: u64,
    },
    /// An append that failed at once (poisoned shard).
    AppendFailed {
        epoch: u64,
        follower: usize,
    },
    PartitionEnd {
        follower: usize,
    },
    Duplicate {
        batch: SimBatch,
    },
    Chaos,
    Shutdown,
}

struct Conn {
    follower: usize,
    follower_epoch: u64,
    /// Messages sent per direction.
    sent: [u64; 2],
    /// Messages with an index at or above this are lost (a cut).
    deliver_below: [u64; 2],
    /// When the last message of each direction arrives (order is kept).
    last_arrival: [Micros; 2],
}

struct Follower {
    up: bool,
    epoch: u64,
    log: Vec<SimEntry>,
    session: Option<Session>,
    conn: Option<usize>,
    wake_at: Option<Micros>,
    partitioned: bool,
}

/// The leader's side of one `Replicate` stream.
struct Stream {
    follower: usize,
    /// Tokens of the batches not answered yet, in stream order.
    pending: VecDeque<u64>,
    results: BTreeMap<u64, Result<archive::Ack, Error>>,
    input_done: bool,
}

#[derive(Clone, Copy, Debug)]
enum Route {
    Stream { conn: usize },
    Duplicate,
}

/// An append written to the leader's disk and not yet synced.
struct Written {
    follower: usize,
    entries: Vec<SimEntry>,
    disk_full: bool,
}

struct Leader {
    up: bool,
    epoch: u64,
    pairs: Vec<PairArchive<SimBatch, u64>>,
    streams: BTreeMap<usize, Stream>,
    tokens: BTreeMap<u64, Route>,
    next_token: u64,
    /// Synced entries per follower, in archive order: the durable archive.
    durable: Vec<Vec<SimEntry>>,
    /// The highest seq in `durable`, per follower.
    durable_max: Vec<u64>,
    unsynced: Vec<Written>,
    /// Appends failed by EIO: maybe on disk, maybe not.
    limbo: Vec<Written>,
    poisoned: bool,
    sync_scheduled: bool,
    restart_scheduled: bool,
}

pub struct World {
    rng: Rng,
    pub params: Params,
    now: Micros,
    queue: BTreeMap<(Micros, u64), Event>,
    next_event: u64,
    followers: Vec<Follower>,
    leader: Leader,
    conns: Vec<Conn>,
    healed: bool,
    converged_at: Option<Micros>,
    /// The last time an archived entry became durable.
    progress_at: Micros,
    shutdown_at: Option<Micros>,
    trace: bool,
    pub stats: Stats,
    violation: Option<String>,
}

impl World {
    pub fn new(seed: u64, trace: bool) -> World {
        let mut rng = Rng::new(seed);
        let params = Params::draw(&mut rng);
        let followers = (0..params.followers)
            .map(|_| Follower {
                up: true,
                epoch: 0,
                log: Vec::new(),
                session: None,
                conn: None,
                wake_at: None,
                partitioned: false,
            })
            .collect();
        let leader = Leader {
            up: true,
            epoch: 0,
            pairs: Vec::new(),
            streams: BTreeMap::new(),
            tokens: BTreeMap::new(),
            next_token: 0,
            durable: vec![Vec::new(); params.followers],
            durable_max: vec![0; params.followers],
            unsynced: Vec::new(),
            limbo: Vec::new(),
            poisoned: false,
            sync_scheduled: false,
            restart_scheduled: false,
        };
        let mut world = World {
            rng,
            params,
            now: 0,
            queue: BTreeMap::new(),
            next_event: 0,
            followers,
            leader,
            conns: Vec::new(),
            healed: false,
            converged_at: None,
            progress_at: 0,
            shutdown_at: None,
            trace,
            stats: Stats::default(),
            violation: None,
        };
        world.leader_start();
        for follower in 0..world.params.followers {
            world.follower_start(follower);
            let at = world.rng.below(world.params.write_interval_max);
            world.schedule(at, Event::Write { follower });
        }
        let at = world.rng.below(world.params.chaos_interval_max);
        world.schedule(at, Event::Chaos);
        world
    }

    /// Runs to the end; `Err` names the first property that failed.
    pub fn run(&mut self) -> Result<(), String> {
        while let Some(((at, _), event)) = self.queue.pop_first() {
            debug_assert!(at >= self.now);
            self.now = at;
            self.stats.events += 1;
            if self.stats.events > EVENTS_MAX {
                return Err(format!("over {EVENTS_MAX} events: the run spins"));
            }
            if !self.healed && self.now >= self.params.fault_phase {
                self.heal();
            }
            if self.trace {
                eprintln!("{:>12} {:?}", self.now, event);
            }
            self.handle(event);
            if let Some(violation) = self.violation.take() {
                return Err(format!("at {} us: {violation}", self.now));
            }
            if self.healed {
                if let Some(result) = self.check_end() {
                    self.stats.virtual_seconds = self.now / SECOND;
                    return result;
                }
            }
        }
        Err(format!("liveness: nothing left to happen (every session waits) before the end: {}", self.lag()))
    }

    fn violate(&mut self, message: String) {
        if self.violation.is_none() {
            self.violation = Some(message);
        }
    }

    fn schedule(&mut self, delay: Micros, event: Event) {
        self.next_event += 1;
        self.queue.insert((self.now + delay, self.next_event), event);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { conn, direction, index, message } => self.deliver(conn, direction, index, message),
            Event::Dead { conn, at_leader } => self.dead(conn, at_leader),
            Event::Write { follower } => self.write(follower),
            Event::Wake { follower, epoch } => {
                if self.followers[follower].epoch == epoch {
                    self.followers[follower].wake_at = None;
                    self.drive_follower(follower);
                }
            }
            Event::FollowerRestart { follower } => {
                self.followers[follower].up = true;
                self.follower_start(follower);
            }
            // The operator's restart of a failed leader may find it down.
            Event::LeaderCrash if self.leader.up => self.leader_crash(),
            Event::LeaderCrash => {}
            Event::LeaderRestart => self.leader_start(),
            Event::Load { epoch, follower, value, purpose } => self.load_done(epoch, follower, value, purpose),
            Event::Sync { epoch } => self.sync(epoch),
            Event::AppendFailed { epoch, follower } => {
                if self.leader.up && self.leader.epoch == epoch {
                    self.leader.pairs[follower].append_done(Err(eio()));
                    self.drive_pair(follower);
                }
            }
            Event::PartitionEnd { follower } => self.followers[follower].partitioned = false,
            Event::Duplicate { batch } => {
                if self.leader.up {
                    let follower = batch.follower;
                    let token = self.token(Route::Duplicate);
                    self.leader.pairs[follower].enqueue(batch, token);
                    self.drive_pair(follower);
                }
            }
            Event::Chaos => self.chaos(),
            Event::Shutdown => {
                for follower in 0..self.followers.len() {
                    if let Some(session) = &mut self.followers[follower].session {
                        session.shutdown();
                    }
                    self.drive_follower(follower);
                }
            }
        }
    }

    // --- Faults --------------------------------------------------------------

    fn chaos(&mut self) {
        if self.healed {
            return;
        }
        let weights =
            [self.params.partition_weight, self.params.leader_crash_weight, self.params.follower_crash_weight];
        let total: u64 = weights.iter().sum();
        if total > 0 {
            let mut pick = self.rng.below(total);
            let kind = weights.iter().position(|&weight| {
                if pick < weight {
                    true
                } else {
                    pick -= weight;
                    false
                }
            });
            let follower = self.rng.below(self.followers.len() as u64) as usize;
            match kind {
                Some(0) if !self.followers[follower].partitioned => {
                    self.stats.partitions += 1;
                    self.followers[follower].partitioned = true;
                    let conns: Vec<usize> =
                        (0..self.conns.len()).filter(|&conn| self.conns[conn].follower == follower).collect();
                    for conn in conns {
                        self.cut(conn);
                    }
                    let length = self.rng.between(10 * MS, 5 * SECOND);
                    self.schedule(length, Event::PartitionEnd { follower });
                }
                Some(1) if self.leader.up => self.leader_crash(),
                Some(2) if self.followers[follower].up => self.follower_crash(follower),
                _ => {}
            }
        }
        let next = self.rng.between(1, self.params.chaos_interval_max);
        self.schedule(next, Event::Chaos);
    }

    /// Faults stop: partitions end; crashed nodes come back as scheduled.
    fn heal(&mut self) {
        self.healed = true;
        for follower in &mut self.followers {
            follower.partitioned = false;
        }
    }

    /// Where each follower's replication stands, for a liveness failure.
    fn lag(&self) -> String {
        let lag: Vec<String> = self
            .followers
            .iter()
            .enumerate()
            .map(|(index, follower)| {
                let session = follower.session.as_ref();
                format!(
                    "follower {index}: log {} archived {} acked {:?} up {} last error {:?}",
                    follower.log.len(),
                    self.leader.durable[index].len(),
                    session.and_then(Session::acked_seq),
                    follower.up,
                    session.and_then(Session::last_error),
                )
            })
            .collect();
        lag.join("; ")
    }

    fn check_end(&mut self) -> Option<Result<(), String>> {
        if self.converged_at.is_none() {
            let converged = self.leader.up
                && self
                    .followers
                    .iter()
                    .enumerate()
                    .all(|(index, follower)| follower.up && self.leader.durable[index].len() == follower.log.len());
            if converged {
                self.converged_at = Some(self.now);
                // Shut down once every old notification, slow message and
                // duplicate has arrived: nothing adversarial is left.
                let at = (self.params.fault_phase + SETTLE).max(self.now);
                self.schedule(at - self.now, Event::Shutdown);
                self.shutdown_at = Some(at);
            } else if self.now - self.progress_at.max(self.params.fault_phase) > STALL_MAX {
                return Some(Err(format!(
                    "liveness: the archive did not grow for {} s after the faults stopped: {}",
                    STALL_MAX / SECOND,
                    self.lag()
                )));
            }
            return None;
        }
        let shutdown_at = self.shutdown_at.expect("set with converged_at");
        if self.now < shutdown_at {
            return None;
        }
        let done = self.followers.iter().all(|follower| follower.session.as_ref().is_some_and(Session::is_done));
        if done {
            for (index, follower) in self.followers.iter().enumerate() {
                let acked = follower.session.as_ref().and_then(Session::acked_seq);
                if acked != Some(follower.log.len() as u64) {
                    return Some(Err(format!(
                        "shutdown: follower {index} finished with acked {acked:?} of {} entries",
                        follower.log.len()
                    )));
                }
                if self.leader.durable[index].len() != follower.log.len() {
                    return Some(Err(format!("follower {index}: the archive changed after convergence")));
                }
            }
            for follower in &self.followers {
                self.stats.sessions += follower.session.as_ref().map_or(0, Session::sessions);
            }
            return Some(Ok(()));
        }
        if self.now > shutdown_at + SHUTDOWN_DEADLINE {
            return Some(Err(format!("shutdown: sessions not done {} s after shutdown", SHUTDOWN_DEADLINE / SECOND)));
        }
        None
    }

    // --- Network -------------------------------------------------------------

    fn open(&mut self, follower: usize) -> usize {
        self.conns.push(Conn {
            follower,
            follower_epoch: self.followers[follower].epoch,
            sent: [0; 2],
            deliver_below: [u64::MAX; 2],
            last_arrival: [self.now; 2],
        });
        self.conns.len() - 1
    }

    fn send(&mut self, conn: usize, direction: usize, message: Message) {
        let index = self.conns[conn].sent[direction];
        self.conns[conn].sent[direction] += 1;
        if index >= self.conns[conn].deliver_below[direction] {
            return;
        }
        if !self.healed && self.rng.chance(self.params.cut_per_million) {
            self.stats.cuts += 1;
            self.conns[conn].deliver_below[direction] = index;
            self.cut(conn);
            return;
        }
        let mut delay = self.rng.below(self.params.delay_max + 1);
        if !self.healed && self.rng.chance(self.params.slow_per_million) {
            delay += self.rng.below(2 * SECOND);
        }
        let arrival = self.conns[conn].last_arrival[direction].max(self.now + delay);
        self.conns[conn].last_arrival[direction] = arrival;
        self.schedule(arrival - self.now, Event::Deliver { conn, direction, index, message });
    }

    /// Cuts a connection: a random prefix of what is in flight still
    /// arrives, the rest is lost, and each end learns of it later.
    fn cut(&mut self, conn: usize) {
        if !self.conns[conn].deliver_below.contains(&u64::MAX) {
            return; // already cut or closed: both ends know or will
        }
        for direction in [TO_LEADER, TO_FOLLOWER] {
            let state = &self.conns[conn];
            if state.deliver_below[direction] != u64::MAX {
                continue;
            }
            let keep = self.rng.below(4);
            // Keep none, all, or a random part of what is in flight; the
            // index of the first lost message is at most `sent`.
            let sent = state.sent[direction];
            let below = match keep {
                0 => sent,
                1 => sent.saturating_sub(self.rng.below(4)),
                _ => sent.saturating_sub(self.rng.below(64)),
            };
            self.conns[conn].deliver_below[direction] = below;
        }
        self.notify(conn, true);
        self.notify(conn, false);
    }

    /// One end of `conn` learns it is dead: soon (a reset) or after the
    /// keepalive timeout, never before what still arrives on it.
    fn notify(&mut self, conn: usize, at_leader: bool) {
        let delay = if self.rng.below(2) == 0 {
            self.rng.between(1, 50 * MS)
        } else {
            self.rng.between(1, KEEPALIVE_DETECT_MAX)
        };
        let direction = if at_leader { TO_LEADER } else { TO_FOLLOWER };
        let after = self.conns[conn].last_arrival[direction].saturating_sub(self.now);
        self.schedule(delay.max(after + 1), Event::Dead { conn, at_leader });
    }

    /// The follower drops a connection: what it sent still arrives, the
    /// leader learns of the close after that.
    fn close_by_follower(&mut self, conn: usize) {
        let state = &mut self.conns[conn];
        state.deliver_below[TO_LEADER] = state.deliver_below[TO_LEADER].min(state.sent[TO_LEADER]);
        state.deliver_below[TO_FOLLOWER] = state.deliver_below[TO_FOLLOWER].min(state.sent[TO_FOLLOWER]);
        let after = state.last_arrival[TO_LEADER].saturating_sub(self.now);
        let delay = after + self.rng.between(1, 50 * MS);
        self.schedule(delay, Event::Dead { conn, at_leader: true });
    }

    fn deliver(&mut self, conn: usize, direction: usize, index: u64, message: Message) {
        if index >= self.conns[conn].deliver_below[direction] {
            return;
        }
        if direction == TO_LEADER {
            self.leader_receive(conn, message);
        } else {
            self.follower_receive(conn, message);
        }
    }

    fn dead(&mut self, conn: usize, at_leader: bool) {
        if at_leader {
            self.leader.streams.remove(&conn);
            return;
        }
        let follower = self.conns[conn].follower;
        let state = &self.followers[follower];
        if state.up && state.epoch == self.conns[conn].follower_epoch && state.conn == Some(conn) {
            self.followers[follower].conn = None;
            let now = self.duration();
            self.followers[follower].session.as_mut().expect("up").failed(now, "connection lost");
            self.drive_follower(follower);
        }
    }

    // --- Followers -----------------------------------------------------------

    fn duration(&self) -> Duration {
        Duration::from_micros(self.now)
    }

    fn follower_start(&mut self, follower: usize) {
        let seed = self.rng.next_u64();
        let durable = self.followers[follower].log.len() as u64;
        // One leader: the simulated network routes every connect to it.
        let leader = [std::net::SocketAddr::from(([127, 0, 0, 1], 50051))];
        self.followers[follower].session = Some(Session::new(self.params.session, seed, durable, &leader));
        self.drive_follower(follower);
    }

    fn follower_crash(&mut self, follower: usize) {
        self.stats.follower_crashes += 1;
        let state = &mut self.followers[follower];
        state.up = false;
        state.epoch += 1;
        state.wake_at = None;
        if let Some(session) = state.session.take() {
            self.stats.sessions += session.sessions();
        }
        if let Some(conn) = state.conn.take() {
            self.close_by_follower(conn);
        }
        let delay = self.rng.between(MS, 2 * SECOND);
        self.schedule(delay, Event::FollowerRestart { follower });
    }

    fn write(&mut self, follower: usize) {
        if self.healed {
            return;
        }
        if self.followers[follower].up {
            let count = self.rng.between(1, self.params.write_entries_max);
            for _ in 0..count {
                let seq = self.followers[follower].log.len() as u64 + 1;
                let entry = SimEntry { seq, content: self.rng.next_u64(), bytes: self.rng.between(1, 100) as u32 };
                self.followers[follower].log.push(entry);
            }
            self.stats.entries += count;
            let durable = self.followers[follower].log.len() as u64;
            self.followers[follower].session.as_mut().expect("up").durable(durable);
            self.drive_follower(follower);
        }
        let next = self.rng.between(1, self.params.write_interval_max);
        self.schedule(next, Event::Write { follower });
    }

    /// Does what the follower's session asks until it waits.
    fn drive_follower(&mut self, follower: usize) {
        if !self.followers[follower].up {
            return;
        }
        loop {
            let now = self.duration();
            let action = self.followers[follower].session.as_mut().expect("up").poll(now);
            match action {
                Action::Connect { .. } => {
                    let conn = self.open(follower);
                    self.followers[follower].conn = Some(conn);
                    if self.followers[follower].partitioned || !self.leader.up {
                        // Refused at once (leader down) or timed out
                        // (partition): the leader never sees it.
                        self.conns[conn].deliver_below = [0, 0];
                        let delay = if self.followers[follower].partitioned {
                            self.rng.between(1, CONNECT_TIMEOUT)
                        } else {
                            self.rng.between(1, 10 * MS)
                        };
                        self.schedule(delay, Event::Dead { conn, at_leader: false });
                    } else {
                        self.send(conn, TO_LEADER, Message::Hello);
                    }
                }
                Action::Send(window) => {
                    let state = &self.followers[follower];
                    let conn = state.conn.expect("streaming");
                    let mut entries = Vec::new();
                    let mut bytes = 0usize;
                    for seq in window.from_seq..window.to_seq_max {
                        if !entries.is_empty() && bytes >= window.bytes_target {
                            break;
                        }
                        let entry = state.log[seq as usize - 1];
                        bytes += entry.bytes as usize;
                        entries.push(entry);
                    }
                    let to_seq = window.from_seq + entries.len() as u64;
                    self.stats.batches += 1;
                    self.send(conn, TO_LEADER, Message::Batch(SimBatch { follower, entries }));
                    self.followers[follower].session.as_mut().expect("up").sent(window.from_seq, to_seq);
                }
                Action::CloseSend => {
                    let conn = self.followers[follower].conn.expect("streaming");
                    self.send(conn, TO_LEADER, Message::CloseSend);
                }
                Action::Sleep { until } => {
                    // Rounded up: waking before `until` would only sleep again.
                    let until = until.as_nanos().div_ceil(1000) as Micros;
                    let state = &mut self.followers[follower];
                    if state.wake_at.is_none_or(|at| at > until) {
                        state.wake_at = Some(until);
                        let epoch = state.epoch;
                        self.schedule(until - self.now, Event::Wake { follower, epoch });
                    }
                    return;
                }
                Action::Wait | Action::Done => return,
            }
        }
    }

    fn follower_receive(&mut self, conn: usize, message: Message) {
        let follower = self.conns[conn].follower;
        let state = &self.followers[follower];
        if !state.up || state.epoch != self.conns[conn].follower_epoch || state.conn != Some(conn) {
            return;
        }
        let now = self.duration();
        let session = self.followers[follower].session.as_mut().expect("up");
        let result = match message {
            Message::Watermark(Ok(watermark)) => session.connected(now, watermark),
            Message::Watermark(Err(reason)) | Message::StreamError(reason) => {
                session.failed(now, reason);
                Err(session::Error::Failed(String::new()))
            }
            Message::Ack(acked_seq) => {
                self.stats.acks += 1;
                session.ack(now, acked_seq)
            }
            Message::StreamEnd => session.stream_closed(now),
            Message::Hello | Message::Batch(_) | Message::CloseSend => unreachable!("sent to the leader"),
        };
        let (acked, session_done) = (session.acked_seq(), session.is_done());
        let durable = self.durable_watermark(follower);
        if let Some(acked) = acked.filter(|&acked| acked > durable) {
            self.violate(format!(
                "follower {follower} holds ack {acked} but the archive is durable only up to {durable}"
            ));
        }
        match result {
            Ok(()) if !session_done => {}
            Ok(()) => self.followers[follower].conn = None,
            Err(error) => {
                match error {
                    session::Error::DataLoss { .. } => {
                        self.violate(format!("follower {follower}: {error}"));
                    }
                    session::Error::AckWentBackwards { .. } => self.stats.ack_backwards += 1,
                    _ => {}
                }
                self.followers[follower].conn = None;
                self.close_by_follower(conn);
            }
        }
        self.drive_follower(follower);
    }

    // --- Leader --------------------------------------------------------------

    fn leader_start(&mut self) {
        let leader = &mut self.leader;
        leader.up = true;
        leader.restart_scheduled = false;
        leader.pairs = (0..self.params.followers)
            .map(|_| PairArchive::with_group_bytes_max(self.params.group_bytes_max))
            .collect();
    }

    fn leader_crash(&mut self) {
        self.stats.leader_crashes += 1;
        let leader = &mut self.leader;
        leader.up = false;
        leader.epoch += 1;
        leader.streams.clear();
        leader.tokens.clear();
        leader.pairs.clear();
        leader.sync_scheduled = false;
        // Power loss: what was written but not synced survives as a prefix
        // (recovery cuts the log at the first torn block).
        let mut written: Vec<Written> = std::mem::take(&mut leader.limbo);
        written.extend(std::mem::take(&mut leader.unsynced).into_iter().filter(|written| !written.disk_full));
        let total: u64 = written.iter().map(|written| written.entries.len() as u64).sum();
        let mut keep = if self.rng.below(2) == 0 { 0 } else { self.rng.below(total + 1) };
        for written in written {
            for entry in written.entries {
                if keep == 0 {
                    break;
                }
                keep -= 1;
                self.make_durable(written.follower, entry);
            }
        }
        self.leader.poisoned = false;
        for conn in 0..self.conns.len() {
            if self.conns[conn].deliver_below.contains(&u64::MAX) {
                self.conns[conn].deliver_below[TO_LEADER] = 0;
                self.cut(conn);
            }
        }
        let delay = self.rng.between(MS, 3 * SECOND);
        self.schedule(delay, Event::LeaderRestart);
    }

    fn token(&mut self, route: Route) -> u64 {
        self.leader.next_token += 1;
        self.leader.tokens.insert(self.leader.next_token, route);
        self.leader.next_token
    }

    /// The highest durable seq of a pair (what a restarted leader reads
    /// back from its blocks' origins).
    fn durable_watermark(&self, follower: usize) -> u64 {
        self.leader.durable_max[follower]
    }

    fn leader_receive(&mut self, conn: usize, message: Message) {
        if !self.leader.up {
            return;
        }
        let follower = self.conns[conn].follower;
        match message {
            Message::Hello => {
                let stream = Stream { follower, pending: VecDeque::new(), results: BTreeMap::new(), input_done: false };
                self.leader.streams.insert(conn, stream);
                match self.leader.pairs[follower].watermark() {
                    Some(watermark) => self.send(conn, TO_FOLLOWER, Message::Watermark(Ok(watermark))),
                    None => self.load(follower, LoadFor::GetWatermark { conn }),
                }
            }
            Message::Batch(batch) => {
                let Some(stream) = self.leader.streams.get(&conn) else { return };
                if stream.input_done {
                    return;
                }
                if !self.healed && self.rng.chance(self.params.duplicate_per_million) {
                    self.stats.duplicated_batches += 1;
                    // Right behind the original (a duplicated packet) or
                    // much later (a retried push).
                    let delay = if self.rng.below(2) == 0 {
                        self.rng.between(1, self.params.delay_max + 1)
                    } else {
                        self.rng.between(1, 3 * SECOND)
                    };
                    self.schedule(delay, Event::Duplicate { batch: batch.clone() });
                }
                let state = &self.followers[follower];
                if !state.up || state.epoch != self.conns[conn].follower_epoch || state.conn != Some(conn) {
                    self.stats.late_batches += 1;
                }
                let token = self.token(Route::Stream { conn });
                self.leader.streams.get_mut(&conn).expect("checked").pending.push_back(token);
                self.leader.pairs[follower].enqueue(batch, token);
                self.drive_pair(follower);
            }
            Message::CloseSend => {
                if let Some(stream) = self.leader.streams.get_mut(&conn) {
                    stream.input_done = true;
                    self.flush(conn);
                }
            }
            Message::Watermark(_) | Message::Ack(_) | Message::StreamError(_) | Message::StreamEnd => {
                unreachable!("sent to a follower")
            }
        }
    }

    /// Reads the durable watermark now; the answer arrives later (the real
    /// leader asks every shard).
    fn load(&mut self, follower: usize, purpose: LoadFor) {
        let value = if self.rng.chance(self.params.load_fail_per_million) {
            None
        } else {
            Some(self.durable_watermark(follower))
        };
        // Usually quick; sometimes a busy shard answers late.
        let delay = if self.rng.below(4) == 0 { self.rng.between(1, 300 * MS) } else { self.rng.between(1, 500) };
        let epoch = self.leader.epoch;
        self.schedule(delay, Event::Load { epoch, follower, value, purpose });
    }

    fn load_done(&mut self, epoch: u64, follower: usize, value: Option<u64>, purpose: LoadFor) {
        if !self.leader.up || self.leader.epoch != epoch {
            return;
        }
        match purpose {
            LoadFor::Committer => {
                self.leader.pairs[follower].watermark_loaded(value.ok_or(Error::ShuttingDown));
                self.drive_pair(follower);
            }
            LoadFor::GetWatermark { conn } => {
                if !self.leader.streams.contains_key(&conn) {
                    return;
                }
                let answer = match value {
                    Some(value) => {
                        if self.leader.pairs[follower].watermark().is_some_and(|known| known > value) {
                            self.stats.stale_loads += 1;
                        }
                        Ok(self.leader.pairs[follower].watermark_read(value))
                    }
                    None => Err(Error::ShuttingDown.to_string()),
                };
                self.send(conn, TO_FOLLOWER, Message::Watermark(answer));
            }
        }
    }

    /// Does what the pair's archive asks until it waits.
    fn drive_pair(&mut self, follower: usize) {
        loop {
            match self.leader.pairs[follower].poll() {
                Step::Reply { reply, result } => self.reply(follower, reply, result),
                Step::LoadWatermark => self.load(follower, LoadFor::Committer),
                Step::Append { first_seq, entries } => {
                    let fresh: Vec<SimEntry> = self.leader.pairs[follower]
                        .fresh_parts_mut()
                        .flat_map(|(batch, skip)| batch.entries[skip..].to_vec())
                        .collect();
                    let seqs: Vec<u64> = fresh.iter().map(|entry| entry.seq).collect();
                    if seqs != (first_seq..first_seq + entries).collect::<Vec<_>>() {
                        self.violate(format!("pair {follower}: append of {seqs:?} for {first_seq} + {entries}"));
                    }
                    self.append(follower, fresh);
                }
                Step::Idle => return,
            }
        }
    }

    fn append(&mut self, follower: usize, entries: Vec<SimEntry>) {
        let epoch = self.leader.epoch;
        if self.leader.poisoned {
            self.schedule(0, Event::AppendFailed { epoch, follower });
            return;
        }
        let disk_full = self.rng.chance(self.params.disk_full_per_million);
        self.leader.unsynced.push(Written { follower, entries, disk_full });
        if !self.leader.sync_scheduled {
            self.leader.sync_scheduled = true;
            let delay = self.rng.between(1, self.params.sync_delay_max);
            self.schedule(delay, Event::Sync { epoch });
        }
    }

    /// The group commit: every written append becomes durable, or all fail.
    fn sync(&mut self, epoch: u64) {
        if !self.leader.up || self.leader.epoch != epoch {
            return;
        }
        self.leader.sync_scheduled = false;
        let written = std::mem::take(&mut self.leader.unsynced);
        let failed = !self.healed && self.rng.chance(self.params.eio_per_million);
        let mut done = Vec::new();
        if failed {
            self.stats.eio += 1;
            self.leader.poisoned = true;
            for written in written {
                done.push((written.follower, Err(eio())));
                if !written.disk_full {
                    self.leader.limbo.push(written);
                }
            }
            if !self.leader.restart_scheduled {
                // The operator restarts the failed node.
                self.leader.restart_scheduled = true;
                let delay = self.rng.between(10 * MS, 3 * SECOND);
                self.schedule(delay, Event::LeaderCrash);
            }
        } else {
            for written in written {
                if written.disk_full {
                    self.stats.disk_full += 1;
                    done.push((written.follower, Err(disk_full())));
                    continue;
                }
                for entry in written.entries {
                    self.make_durable(written.follower, entry);
                }
                done.push((written.follower, Ok(())));
            }
        }
        for (follower, result) in done {
            self.leader.pairs[follower].append_done(result);
            self.drive_pair(follower);
        }
    }

    /// An archived entry became durable: it must be its pair's next seq and
    /// the follower's entry.
    fn make_durable(&mut self, follower: usize, entry: SimEntry) {
        let expected = self.leader.durable[follower].len() as u64 + 1;
        if entry.seq != expected {
            let what = if entry.seq < expected { "archived twice" } else { "a hole in the archive" };
            self.violate(format!("pair {follower}: {what}: seq {} durable after {}", entry.seq, expected - 1));
        }
        match self.followers[follower].log.get(entry.seq as usize - 1) {
            Some(original) if *original == entry => {}
            original => {
                self.violate(format!("pair {follower}: archived {entry:?}, the follower's log has {original:?}"))
            }
        }
        self.leader.durable[follower].push(entry);
        self.leader.durable_max[follower] = self.leader.durable_max[follower].max(entry.seq);
        self.progress_at = self.now;
    }

    fn reply(&mut self, follower: usize, token: u64, result: Result<archive::Ack, Error>) {
        match &result {
            Ok(ack) => {
                let durable = self.durable_watermark(follower);
                if ack.acked_seq > durable {
                    self.violate(format!(
                        "pair {follower}: ack {} sent with the archive durable only up to {durable}",
                        ack.acked_seq
                    ));
                }
                self.stats.duplicates_skipped += ack.duplicates;
            }
            Err(Error::Gap { .. } | Error::Malformed(_)) => self.stats.refusals += 1,
            Err(_) => {}
        }
        let Some(Route::Stream { conn }) = self.leader.tokens.remove(&token) else { return };
        let Some(stream) = self.leader.streams.get_mut(&conn) else { return };
        stream.results.insert(token, result);
        self.flush(conn);
    }

    /// Sends a stream's answers in batch order: an ack per batch, or the
    /// first error, which ends the stream; the end once the follower
    /// half-closed and everything is answered.
    fn flush(&mut self, conn: usize) {
        loop {
            let Some(stream) = self.leader.streams.get_mut(&conn) else { return };
            let Some(&head) = stream.pending.front() else { break };
            let Some(result) = stream.results.remove(&head) else { return };
            stream.pending.pop_front();
            match result {
                Ok(ack) => self.send(conn, TO_FOLLOWER, Message::Ack(ack.acked_seq)),
                Err(error) => {
                    let stream = self.leader.streams.remove(&conn).expect("present");
                    for token in stream.pending {
                        self.leader.tokens.remove(&token);
                    }
                    self.send(conn, TO_FOLLOWER, Message::StreamError(error.to_string()));
                    return;
                }
            }
        }
        let stream = &self.leader.streams[&conn];
        if stream.input_done && stream.pending.is_empty() {
            debug_assert_eq!(stream.follower, self.conns[conn].follower);
            self.leader.streams.remove(&conn);
            self.send(conn, TO_FOLLOWER, Message::StreamEnd);
        }
    }
}

/// What a poisoned shard answers (its first failure was an fdatasync EIO).
fn eio() -> Error {
    Error::Shard(shard::Error::Failed {
        shard: 0,
        op: "fdatasync",
        path: PathBuf::from("segment"),
        source: Arc::new(std::io::Error::from_raw_os_error(5)),
    })
}

/// A roll that found no room: nothing written, the shard stays healthy.
fn disk_full() -> Error {
    Error::Shard(shard::Error::DiskFull {
        op: "fallocate",
        path: PathBuf::from("segment"),
        source: Arc::new(std::io::Error::from_raw_os_error(28)),
    })
}
