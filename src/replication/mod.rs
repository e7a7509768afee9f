//! Replication over gRPC (hand-rolled on h2): follower pusher, leader
//! service and per-(follower, shard) watermarks. Not built yet: see the
//! replication issue. The storage side is ready for it: blocks record the
//! origin (node, shard, seq range) of replicated entries
//! ([`crate::shard::Shard::append_replicated`]), so a leader can rebuild its
//! watermarks from its own data.
