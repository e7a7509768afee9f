//! raft-rs logs through `slog`; this drain forwards its records to
//! `tracing`, so the tier's consensus events land in the node's one log
//! with the group as a field.

use std::fmt::Write as _;

use slog::{Drain, Key, Level, OwnedKVList, Record, KV};

/// A `slog` drain that re-emits every record as a `tracing` event.
pub struct TracingDrain;

/// Collects a record's key-value pairs as `key=value` text.
struct Fields(String);

impl slog::Serializer for Fields {
    fn emit_arguments(&mut self, key: Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut fields = Fields(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let message = record.msg();
        let fields = fields.0;
        // raft-rs is chatty at info (every vote, every campaign): those go
        // to debug; warnings and errors stay what they are.
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{message}{fields}"),
            Level::Warning => tracing::warn!(target: "raft", "{message}{fields}"),
            Level::Info | Level::Debug => tracing::debug!(target: "raft", "{message}{fields}"),
            Level::Trace => tracing::trace!(target: "raft", "{message}{fields}"),
        }
        Ok(())
    }
}

/// The logger handed to a group's `RawNode`.
pub fn for_group(node_id: u32, group: u32) -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!("node" => node_id, "group" => group))
}
