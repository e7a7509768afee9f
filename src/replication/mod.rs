//! Replication between nodes (DESIGN.md section 5): a follower stores every
//! entry locally first; one pusher per shard streams the shard's durable
//! entries to the leader, which archives each (follower, shard, seq) exactly
//! once and acks continuously. The follower's log is the queue: a slow or
//! absent leader costs no memory and loses nothing.
//!
//! Pure parts, tested without an executor:
//! - [`watermark`]: the exactly-once rule, one batch against a watermark;
//! - [`batch`]: `PushBatch` parsing in place, and writing one from stored
//!   blocks;
//! - [`archive`]: the leader's group commit of one (follower, shard) pair,
//!   as a state machine (queue, admit, one append per chunk, acks);
//! - [`session`]: the follower pusher's sessions, as a state machine
//!   (connect, resume from the leader's watermark, batches in flight, acks,
//!   backoff, shutdown drain, retention veto);
//! - [`discovery`]: which of the leader addresses to try next (follow a
//!   not-leader hint of a current term, else rotate the list), for the
//!   pusher's sessions and for restore.
//!
//! I/O drivers, on glommio and the [`crate::grpc`] transport:
//! - [`leader`]: the archive of the pairs one core owns (group commit per
//!   pair, watermarks rebuilt from the data);
//! - [`follower`]: the pusher of one shard;
//! - [`restore`]: rebuilding a lost follower from the archive.
//!
//! This layer sees the node only through [`Host`], so it imports nothing
//! above the shard and the gRPC transport; errors crossing cores are
//! [`Error`], turned into a gRPC status only at the front door.

pub mod archive;
pub mod batch;
pub mod discovery;
pub mod follower;
pub mod leader;
pub mod restore;
pub mod session;
pub mod watermark;

use std::future::Future;

use crate::grpc::status::{Code, LeaderHint, Status};
use crate::shard::{self, Shard};

/// Errors of the replication layer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// A pushed batch or request is malformed (`INVALID_ARGUMENT`).
    #[error("{0}")]
    Malformed(String),
    /// A batch would leave a hole in the archive (`FAILED_PRECONDITION`):
    /// the follower resumes at `expected`.
    #[error("gap: expected seq {expected}, got {got}")]
    Gap {
        /// The seq the archive needs next.
        expected: u64,
        /// The first fresh seq the batch carried.
        got: u64,
    },
    /// A bound of this layer was reached (`RESOURCE_EXHAUSTED`).
    #[error("{0}")]
    Exhausted(String),
    /// An earlier batch of the same stream failed to archive, so this one
    /// was not tried (`ABORTED`).
    #[error("an earlier batch of this stream failed to archive")]
    Aborted,
    /// The node is shutting down (`UNAVAILABLE`).
    #[error("shutting down")]
    ShuttingDown,
    /// On an archive tier: this node does not lead the group the batch
    /// belongs to (`UNAVAILABLE`, with the leader hint trailers when the
    /// leader is known).
    #[error("{message}")]
    NotLeader {
        /// Why, for people.
        message: String,
        /// The leader's id and gRPC address, when known.
        leader: Option<(u32, std::net::SocketAddr)>,
        /// The term of that knowledge.
        term: u64,
    },
    /// The archive cannot take the batch now; a retry may succeed
    /// (`UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// The shard refused or failed.
    #[error(transparent)]
    Shard(#[from] shard::Error),
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::Malformed(message) => Status::invalid_argument(message),
            error @ Error::Gap { .. } => Status::failed_precondition(error.to_string()),
            Error::Exhausted(message) => Status::resource_exhausted(message),
            error @ Error::Aborted => Status::new(Code::Aborted, error.to_string()),
            Error::ShuttingDown => Status::unavailable("shutting down"),
            Error::NotLeader { message, leader, term } => {
                let hint = leader.map(|(leader_id, addr)| LeaderHint { leader_id, addr: addr.to_string(), term });
                Status::not_leader(message, hint)
            }
            Error::Unavailable(message) => Status::unavailable(message),
            Error::Shard(error) => shard_status(error),
        }
    }
}

/// Maps a shard error to the status a gRPC client sees.
pub fn shard_status(error: shard::Error) -> Status {
    use shard::Error;
    match error {
        Error::InvalidEntry { index, source } => Status::invalid_argument(format!("entry {}: {source}", index + 1)),
        Error::InvalidAppend(refusal) => Status::resource_exhausted(refusal.to_string()),
        error @ (Error::Backpressure { .. } | Error::DiskFull { .. }) => Status::resource_exhausted(error.to_string()),
        Error::Closed => Status::unavailable("shutting down"),
        error => Status::internal(error.to_string()),
    }
}

/// What replication needs of the core it runs on: a narrow handle, so that
/// the node implements it and this layer never names the node.
pub trait Host: 'static {
    /// This node's id.
    fn node_id(&self) -> u32;
    /// This core's shard.
    fn shard(&self) -> &Shard;
    /// Set once shutdown began: refuse new work.
    fn closing(&self) -> bool;
    /// The archive pairs this core owns.
    fn archive(&self) -> &leader::Archive;
    /// This shard's pusher state (its leader list is empty on a node that
    /// follows no one).
    fn follower(&self) -> &follower::FollowerState;
    /// The highest origin seq of `(node, shard)` archived in the shards of
    /// the other cores of this node (0 when none): after a restart, a pair's
    /// data may sit in any shard if the shard count changed.
    fn origin_watermark_elsewhere(&self, node: u32, shard: u32) -> impl Future<Output = Result<u64, Error>>;
}
