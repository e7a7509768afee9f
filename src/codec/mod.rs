//! The byte formats of entries and blocks (`docs/format.md`), as pure code:
//! no I/O, no executor. Everything that writes or reads a block (the shard's
//! writer, recovery, readers, `wormdb inspect`, the leader's check of pushed
//! blocks) and everything that turns input into entries (NDJSON, protobuf
//! writes, pushed batches) goes through this layer, which depends on nothing
//! but [`crate::limits`] and the wire types.

pub mod block;
pub mod zstd;

pub use block::{EntryRef, Origin, TagSet};
