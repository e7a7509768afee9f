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
//! exactly once, and applying an entry twice (a crash between the shard's
//! fdatasync and the applied index reaching disk) changes nothing.
//!
//! Pure parts, tested without an executor and driven by the simulator
//! (`tests/sim_raft.rs`):
//! - [`machine`]: what applying a committed entry does to the watermarks;
//! - [`group`]: one replica's `RawNode` and the in-memory log raft-rs reads,
//!   turning each `Ready` into explicit work (persist, send, apply).
//!
//! I/O, on glommio:
//! - [`log`]: the Raft log and hard state on disk, fdatasynced before any
//!   message that depends on them leaves;
//! - [`transport`]: messages and snapshots to the other members over the
//!   [`crate::grpc`] transport, one HTTP/2 connection per (member, group);
//! - [`replica`]: the loop that ticks, steps, proposes, persists, sends and
//!   applies, on the group's core.

pub mod group;
pub mod log;
pub mod logger;
pub mod machine;
pub mod replica;
pub mod transport;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::grpc::status::{LeaderHint, Status};

/// Time between two `RawNode::tick`s.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks without a leader before a follower campaigns (raft-rs randomizes
/// it in `[ELECTION_TICKS, 2 * ELECTION_TICKS)`): about 1 s, as DESIGN.md
/// asks.
pub const ELECTION_TICKS: usize = 10;
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
    /// The node is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// A malformed or refused peer message.
    #[error("{0}")]
    Malformed(String),
    /// The Raft log on disk failed.
    #[error("raft log: {0}")]
    Log(String),
    /// The push's batch was refused by the archive's rules.
    #[error(transparent)]
    Replication(#[from] crate::replication::Error),
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::NotLeader { leader, term, .. } => {
                let hint = leader.map(|(leader_id, addr)| LeaderHint { leader_id, addr: addr.to_string(), term });
                Status::not_leader(error.to_string(), hint)
            }
            error @ (Error::Dropped { .. } | Error::Conflict { .. } | Error::ShuttingDown) => {
                Status::unavailable(error.to_string())
            }
            Error::Exhausted(message) => Status::resource_exhausted(message),
            Error::Malformed(message) => Status::invalid_argument(message),
            error @ Error::Log(_) => Status::internal(error.to_string()),
            Error::Replication(error) => error.into(),
        }
    }
}
