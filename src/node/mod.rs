//! The node's per-core state and how cores talk: one glommio executor per
//! shard, each owning a [`Core`] (its shard, its archive pairs, its pusher
//! state, its counters). Cores talk only through bounded channels
//! ([`peers`]): query fan-out, tail subscriptions, stats, archive batches.
//!
//! This layer names no front door: the HTTP API (`crate::http`) and the
//! gRPC services (`crate::services`) hold an `Rc<Core>` and call down into
//! it; `crate::server` starts the executors and wires everything together.

pub mod balance;
pub mod cluster;
mod core;
pub mod peers;
mod store;

pub use self::core::{Core, HttpCounters, InFlight, ProtocolCounters, Rejections, ShuttingDown};
pub use self::store::{Refused, RefusedKind, Stored, RETRY_AFTER_DEFAULT};
