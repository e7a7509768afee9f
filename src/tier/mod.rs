//! The archive tier (DESIGN.md section 9): the nodes that followers push
//! to form a cluster, and the archive survives the loss of any one of them.
//!
//! Consensus is raft-rs, driven by hand: one Raft **group** per archive
//! shard, replica `g` of every tier node on core `g`, so a group's
//! `RawNode`, log and state machine live on one executor and the write path
//! keeps no locks and no cross-core hops.
//!
//! What a group replicates is the archive itself. An entry of its log is a
//! [`Proposal`](crate::proto::Proposal): a group commit of pushed batches
//! (a follower's blocks, as they arrived) or of a direct write. Applying an
//! entry is deterministic on every replica ([`machine`]): the watermark
//! rule of section 5 decides, against the replica's own watermarks, what is
//! fresh, so each replica holds each (origin node, origin shard, seq)
//! exactly once. The machine's state (the watermarks and the index they
//! stand for) is persisted in the Raft log once the appends it covers are
//! durable; after a crash it resumes from exactly that state and skips the
//! entries it covers, and appends leave out what the shard already holds.
//!
//! Pure parts, tested without an executor and driven by the simulator
//! (`tests/sim_raft.rs`):
//! - [`machine`]: what applying a committed entry does to the watermarks;
//! - [`group`]: one replica's `RawNode` and the in-memory log raft-rs reads,
//!   turning each `Ready` into explicit work (persist, send, apply);
//! - [`proposal`]: the blocks' tags a leader sends with a proposal, so the
//!   replicas store pushed blocks without checking them entry by entry
//!   again;
//! - [`snapshot`]: which stored blocks a snapshot sends, and how they are
//!   cut and grouped into chunks.
//!
//! I/O, on glommio:
//! - [`log`]: the Raft log and hard state on disk, fdatasynced before any
//!   message that depends on them leaves;
//! - [`transport`]: messages and snapshots to the other members over the
//!   [`crate::grpc`] transport, one HTTP/2 connection per (member, group);
//! - [`replica`]: the loop that ticks, steps, proposes, persists, sends and
//!   applies, on the group's core.
//!
//! Offline, on a stopped node: [`recover`], unsafe recovery after a quorum
//! is lost for good (`wormdb cluster recover`).

pub mod client;
pub mod group;
pub mod log;
pub mod logger;
pub mod machine;
pub mod proposal;
pub mod recover;
pub mod replica;
pub mod snapshot;
pub mod transport;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::grpc::status::{LeaderHint, Status};

/// Time between two `RawNode::tick`s.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks without a leader before a follower campaigns: about 1 s, as
/// DESIGN.md asks, randomized in `[ELECTION_TICKS, ELECTION_TICKS_MAX)`.
pub const ELECTION_TICKS: usize = 10;
/// The top of the randomized election timeout (raft-rs's default is twice
/// the minimum): 1.0 to 1.5 s still keeps two candidates apart by more than
/// a round trip and a fdatasync, and takes half a second off the slowest
/// failovers (measured: `benches/tier/failover.sh`).
pub const ELECTION_TICKS_MAX: usize = 15;
/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: usize = 2;

/// The members of the tier: node id → gRPC address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Members {
    /// Every member, this node included.
    pub addrs: BTreeMap<u32, SocketAddr>,
}

impl Members {
    /// The address of member `id`.
    pub fn addr(&self, id: u32) -> Option<SocketAddr> {
        self.addrs.get(&id).copied()
    }

    /// The voter ids, as raft-rs names them.
    pub fn voters(&self) -> Vec<u64> {
        self.addrs.keys().map(|&id| u64::from(id)).collect()
    }
}

/// Errors of the tier.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// This replica does not lead the group: the client should go to the
    /// leader when one is known (`UNAVAILABLE` with the hint trailers).
    #[error("group {group}: this node does not lead it{}", match leader { Some((id, _)) => format!(" (node {id} does, term {term})"), None => " (no leader known: an election is under way or there is no quorum)".to_string() })]
    NotLeader {
        /// The group.
        group: u32,
        /// The leader's id and gRPC address, when known.
        leader: Option<(u32, SocketAddr)>,
        /// The term of that knowledge.
        term: u64,
    },
    /// The proposal was overtaken by a leader change, or the node stepped
    /// down before it committed: it may or may not be archived; a resend
    /// is safe (pushes are exactly-once; a direct write may be stored once
    /// more).
    #[error("group {group}: leadership changed before the write committed; retry")]
    Dropped {
        /// The group.
        group: u32,
    },
    /// A direct write's seqs were taken by another write proposed in an
    /// earlier term (only right after an election): retry.
    #[error("group {group}: the write's seqs were taken by an earlier leader's write; retry")]
    Conflict {
        /// The group.
        group: u32,
    },
    /// A bound was reached.
    #[error("{0}")]
    Exhausted(String),
    /// A write or batch larger than one proposal holds: never retry it as
    /// it is (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    /// Another membership change is under way: retry once it is done.
    #[error("{0}")]
    Busy(String),
    /// A membership request that cannot be done (an unknown node, the
    /// last voter, an id in use): retrying does not help.
    #[error("{0}")]
    Refused(String),
    /// The node is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// A malformed or refused peer message.
    #[error("{0}")]
    Malformed(String),
    /// A peer call from a node that is not a member of the tier.
    #[error("{0}")]
    NotMember(String),
    /// The Raft log on disk failed.
    #[error("raft log: {0}")]
    Log(String),
    /// The push's batch was refused by the archive's rules.
    #[error(transparent)]
    Replication(#[from] crate::replication::Error),
}

impl From<Error> for crate::replication::Error {
    fn from(error: Error) -> crate::replication::Error {
        use crate::replication::Error as Replication;
        match error {
            Error::NotLeader { leader, term, .. } => {
                Replication::NotLeader { message: error.to_string(), leader, term }
            }
            error @ (Error::Dropped { .. } | Error::Conflict { .. } | Error::Busy(_)) => {
                Replication::Unavailable(error.to_string())
            }
            Error::ShuttingDown => Replication::ShuttingDown,
            Error::Refused(message) => Replication::Malformed(message),
            Error::Exhausted(message) => Replication::Exhausted(message),
            Error::Malformed(message) | Error::NotMember(message) | Error::TooLarge(message) => {
                Replication::Malformed(message)
            }
            error @ Error::Log(_) => Replication::Unavailable(error.to_string()),
            Error::Replication(error) => error,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::NotLeader { leader, term, .. } => {
                let hint = leader.map(|(leader_id, addr)| LeaderHint { leader_id, addr: addr.to_string(), term });
                Status::not_leader(error.to_string(), hint)
            }
            error @ (Error::Dropped { .. } | Error::Conflict { .. } | Error::ShuttingDown | Error::Busy(_)) => {
                Status::unavailable(error.to_string())
            }
            Error::Refused(message) => Status::new(crate::grpc::status::Code::FailedPrecondition, message),
            Error::Exhausted(message) => Status::resource_exhausted(message),
            Error::Malformed(message) | Error::TooLarge(message) => Status::invalid_argument(message),
            Error::NotMember(message) => Status::new(crate::grpc::status::Code::PermissionDenied, message),
            error @ Error::Log(_) => Status::internal(error.to_string()),
            Error::Replication(error) => error.into(),
        }
    }
}

/// The file, in the data directory, that holds the tier's membership once
/// a node has joined it (`id=HOST:PORT` lines).
pub const MEMBERS_FILE: &str = "raft/members";

/// The file, in the data directory, that says which member the directory
/// belongs to (its node id, one line): the membership alone cannot tell,
/// and offline tools (`wormdb cluster recover`) need to know.
pub const NODE_ID_FILE: &str = "raft/node-id";

impl Members {
    /// The membership this node persisted, or, on a first start with
    /// `--peers`, that list (persisted now). `None`: not a tier member.
    /// A persisted membership wins over `--peers` (a restarted member keeps
    /// what it agreed to; changing it is the next issue's `cluster` work).
    /// Either way the node's id is persisted beside it ([`NODE_ID_FILE`]).
    pub fn load_or_bootstrap(
        data_dir: &std::path::Path,
        peers: &BTreeMap<u32, SocketAddr>,
        node_id: u32,
    ) -> Result<Option<Members>, String> {
        let members = match Members::read(data_dir)? {
            Some(members) => {
                if !members.addrs.contains_key(&node_id) {
                    return Err(format!(
                        "{} does not list this node (--node-id {node_id}): this data directory belongs to another \
                         member",
                        data_dir.join(MEMBERS_FILE).display()
                    ));
                }
                if !peers.is_empty() && *peers != members.addrs {
                    tracing::warn!(
                        file = %data_dir.join(MEMBERS_FILE).display(),
                        "--peers differs from the persisted membership: the persisted one is used"
                    );
                }
                members
            }
            None if peers.is_empty() => return Ok(None),
            None => {
                let members = Members { addrs: peers.clone() };
                members.write(data_dir)?;
                members
            }
        };
        if read_node_id(data_dir)? != Some(node_id) {
            write_atomically(&data_dir.join(NODE_ID_FILE), &format!("{node_id}\n"))?;
        }
        Ok(Some(members))
    }

    /// The membership persisted in `data_dir` (`None`: there is none, the
    /// node is not a tier member).
    pub fn read(data_dir: &std::path::Path) -> Result<Option<Members>, String> {
        let path = data_dir.join(MEMBERS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("{}: {error}", path.display())),
        };
        let mut addrs = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
            let parsed = line
                .split_once('=')
                .and_then(|(id, addr)| Some((id.parse::<u32>().ok()?, addr.parse::<SocketAddr>().ok()?)));
            let (id, addr) = parsed.ok_or_else(|| format!("{}: bad line {line:?}", path.display()))?;
            addrs.insert(id, addr);
        }
        Ok(Some(Members { addrs }))
    }

    /// Persists the membership in `data_dir`, atomically (a crash leaves
    /// the old file or the new one).
    pub fn write(&self, data_dir: &std::path::Path) -> Result<(), String> {
        let text: String = self.addrs.iter().map(|(id, addr)| format!("{id}={addr}\n")).collect();
        write_atomically(&data_dir.join(MEMBERS_FILE), &text)
    }
}

/// The node id persisted in `data_dir` ([`NODE_ID_FILE`]; `None`: none).
pub fn read_node_id(data_dir: &std::path::Path) -> Result<Option<u32>, String> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            text.trim().parse().map(Some).map_err(|_| format!("{}: not a node id: {:?}", path.display(), text.trim()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(format!("{}: {error}", path.display())),
    }
}

/// Writes `text` to `path` so that a crash leaves the old file or the new
/// one: a temporary file, fsync, rename, fsync of the directory (created
/// if needed).
pub fn write_atomically(path: &std::path::Path, text: &str) -> Result<(), String> {
    let dir = path.parent().ok_or_else(|| format!("{}: no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let temporary = path.with_extension("tmp");
    let written = std::fs::write(&temporary, text)
        .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path))
        .and_then(|()| std::fs::File::open(dir)?.sync_all());
    written.map_err(|error| format!("{}: {error}", path.display()))
}

/// The file, in the data directory, that says this node joined a running
/// tier (`--join`) instead of forming it: its groups start empty and learn
/// their members from their leaders. Written before the members file.
pub const JOINED_FILE: &str = "raft/joined";

/// Whether the node whose data directory is `data_dir` joined its tier.
pub fn joined(data_dir: &std::path::Path) -> bool {
    data_dir.join(JOINED_FILE).exists()
}

/// The directory of group `group`'s Raft log.
pub fn group_dir(data_dir: &std::path::Path, group: u32) -> std::path::PathBuf {
    data_dir.join(format!("raft/group-{group:03}"))
}

/// Direct-write entries as proposals carry them: protobuf `LogEntry`s
/// (the leader gives them their seqs).
pub fn direct_entries(entries: &[crate::shard::EntryRef<'_>]) -> Vec<crate::proto::LogEntry> {
    entries
        .iter()
        .map(|entry| crate::proto::LogEntry {
            timestamp_ns: entry.timestamp_ns,
            tags: entry.tags.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
            body: bytes::Bytes::copy_from_slice(entry.body),
            ..crate::proto::LogEntry::default()
        })
        .collect()
}
