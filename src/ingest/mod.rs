//! The shippers' protocols (DESIGN.md section 11): what OTLP, Loki push,
//! Elasticsearch bulk, JSON lines and syslog send, decoded into
//! [`LogEntry`](crate::proto::LogEntry)s.
//!
//! Everything here is pure: bytes in, entries (or the reason for refusing
//! them) out, with no executor, socket or shard. The front doors
//! ([`crate::http`], [`crate::services`], the syslog listeners) read the
//! bytes, call a decoder, and hand the whole batch to
//! [`Core::store`](crate::node::Core::store), which stores all of it or
//! none and answers only once it is durable. Keeping the decoders pure lets
//! their tests feed them every malformed input without a server, and keeps
//! one storing path for every protocol.

pub mod body;
pub mod es;
pub mod fields;
pub mod jsonline;
pub mod loki;
pub mod otlp;
pub mod streams;
pub mod syslog;

/// Now, in Unix nanoseconds: the time the front doors give the decoders
/// for an entry that carries none (the decoders take it as an argument, so
/// their tests pass a fixed one).
pub fn unix_now_ns() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
}

/// A protocol a shipper speaks to wormdb: the `protocol` label of the
/// `wormdb_protocol_*` metrics, and the name `wormdb-loadgen --protocol`
/// takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OTLP logs over gRPC (`LogsService/Export` on the gRPC port).
    OtlpGrpc,
    /// OTLP logs over HTTP (`POST /v1/logs`, protobuf or JSON).
    OtlpHttp,
    /// Loki push (`POST /loki/api/v1/push`, JSON or snappy protobuf).
    Loki,
    /// Elasticsearch bulk (`/es/_bulk`).
    EsBulk,
    /// JSON lines (`POST /v1/jsonline`).
    JsonLine,
    /// Syslog over TCP (`--syslog-tcp-addr`).
    SyslogTcp,
    /// Syslog over UDP (`--syslog-udp-addr`).
    SyslogUdp,
}

impl Protocol {
    /// Every protocol, in the order of [`Protocol::index`].
    pub const ALL: [Protocol; 7] = [
        Protocol::OtlpGrpc,
        Protocol::OtlpHttp,
        Protocol::Loki,
        Protocol::EsBulk,
        Protocol::JsonLine,
        Protocol::SyslogTcp,
        Protocol::SyslogUdp,
    ];

    /// The protocol's position in [`Protocol::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label value in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::OtlpGrpc => "otlp-grpc",
            Protocol::OtlpHttp => "otlp-http",
            Protocol::Loki => "loki",
            Protocol::EsBulk => "es-bulk",
            Protocol::JsonLine => "jsonline",
            Protocol::SyslogTcp => "syslog-tcp",
            Protocol::SyslogUdp => "syslog-udp",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_sits_at_its_index() {
        for (index, protocol) in Protocol::ALL.iter().enumerate() {
            assert_eq!(protocol.index(), index, "{protocol:?}");
        }
        let labels: std::collections::BTreeSet<_> = Protocol::ALL.iter().map(|p| p.label()).collect();
        assert_eq!(labels.len(), Protocol::ALL.len());
    }
}
