//! Node configuration: command-line flags over an optional TOML file over
//! defaults (DESIGN.md section 8). The TOML keys are the flag names
//! (`data-dir = "/var/lib/wormdb"`, `shards = 4`, ...).
//!
//! Durations are written `30s`, `15m`, `12h`, `7d` ([`parse_duration`]);
//! byte sizes as a plain number of bytes or with a unit, `16MiB`, `256 MB`,
//! `1.5GiB` ([`parse_byte_size`]), on the command line and in the file
//! alike (where a plain TOML integer also works). `--leader` takes a
//! comma-separated list of gRPC addresses, `HOST:PORT,HOST:PORT`
//! ([`parse_leader_addrs`]; a TOML string in the file). The TLS files
//! (`tls-cert`, `tls-key`, `tls-client-ca`, `peer-ca`) are paths, relative
//! to the directory the node starts in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::ingest::syslog::Zone;
use crate::limits;
use crate::shard::{ColdCodec, ColdPolicy, Durability, RetentionPolicy};
use crate::tls::TlsFiles;

/// Default HTTP listen address.
pub const HTTP_ADDR_DEFAULT: &str = "127.0.0.1:8080";
/// Default gRPC listen address.
pub const GRPC_ADDR_DEFAULT: &str = "127.0.0.1:50051";
/// Default data directory.
pub const DATA_DIR_DEFAULT: &str = "./wormdb-data";
/// Default time a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default `--shutdown-timeout`.
pub const SHUTDOWN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default `--otlp-tag-attributes`: the OTLP resource attributes (semantic
/// conventions) that say who sent an entry and from where, few-valued
/// enough to index (DESIGN.md section 11).
pub const OTLP_TAG_ATTRIBUTES_DEFAULT: &str = "service.name,service.namespace,service.instance.id,\
     deployment.environment,host.name,k8s.namespace.name,k8s.pod.name,k8s.container.name,container.name,cloud.region";

/// Every `serve` setting; each is optional here, so that flags and the file
/// can be merged (flags win).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--http-addr`
    pub http_addr: Option<String>,
    /// `--grpc-addr`
    pub grpc_addr: Option<String>,
    /// `--shards`
    pub shards: Option<usize>,
    /// `--node-id`
    pub node_id: Option<u32>,
    /// `--leader` (`HOST:PORT,HOST:PORT,...`)
    pub leader: Option<String>,
    /// `--peers` (`1=HOST:PORT,2=HOST:PORT,...`: the archive tier's members)
    pub peers: Option<String>,
    /// `--join` (`HOST:PORT`: a member of the tier to join)
    pub join: Option<String>,
    /// `--lease-ttl` (a duration: followers' leases on the tier)
    pub lease_ttl: Option<String>,
    /// `--raft-log-entries` (entries a tier member keeps behind the applied
    /// index for lagging peers)
    pub raft_log_entries: Option<u64>,
    /// `--durability` (`sync` or `none`)
    pub durability: Option<String>,
    /// `--segment-bytes`
    #[serde(default, deserialize_with = "deserialize_byte_size")]
    pub segment_bytes: Option<u64>,
    /// `--retention-bytes` (per shard)
    #[serde(default, deserialize_with = "deserialize_byte_size")]
    pub retention_bytes: Option<u64>,
    /// `--retention-age` (`30s`, `15m`, `12h`, `7d`)
    pub retention_age: Option<String>,
    /// `--cold-codec` (`zstd` or `lz4`)
    pub cold_codec: Option<String>,
    /// `--cold-after` (a duration: age of a sealed segment's newest entry
    /// before it is rewritten with zstd)
    pub cold_after: Option<String>,
    /// `--word-filters` (`on` or `off`)
    pub word_filters: Option<String>,
    /// `--max-body-bytes`
    #[serde(default, deserialize_with = "deserialize_byte_size")]
    pub max_body_bytes: Option<u64>,
    /// `--max-body-bytes-in-flight` (per core)
    #[serde(default, deserialize_with = "deserialize_byte_size")]
    pub max_body_bytes_in_flight: Option<u64>,
    /// `--max-pending-appends` (per shard)
    pub max_pending_appends: Option<usize>,
    /// `--header-read-timeout` (`10s`)
    pub header_read_timeout: Option<String>,
    /// `--shutdown-timeout` (`10s`)
    pub shutdown_timeout: Option<String>,
    /// `--auth-tokens` (the token file, DESIGN.md section 10)
    pub auth_tokens: Option<PathBuf>,
    /// `--peer-token-file` (the secret this node presents on its own calls)
    pub peer_token_file: Option<PathBuf>,
    /// `--max-connections` (per listener)
    pub max_connections: Option<usize>,
    /// `--insecure` (serve beyond loopback with neither tokens nor mTLS)
    pub insecure: Option<bool>,
    /// `--tls-cert` (PEM certificate chain)
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key` (PEM private key)
    pub tls_key: Option<PathBuf>,
    /// `--tls-client-ca` (PEM CA of client certificates)
    pub tls_client_ca: Option<PathBuf>,
    /// `--peer-ca` (PEM CA that outgoing gRPC connections verify servers with)
    pub peer_ca: Option<PathBuf>,
    /// `--otlp-tag-attributes` (`a,b,c`: the OTLP resource attributes that
    /// become tags)
    pub otlp_tag_attributes: Option<String>,
    /// `--syslog-tcp-addr` (off when unset)
    pub syslog_tcp_addr: Option<String>,
    /// `--syslog-udp-addr` (off when unset)
    pub syslog_udp_addr: Option<String>,
    /// `--syslog-timezone` (the zone of RFC 3164 timestamps: `UTC`, `+02:00`)
    pub syslog_timezone: Option<String>,
}

impl Settings {
    /// Reads a TOML file of settings.
    pub fn from_file(path: &Path) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path).map_err(|error| format!("--config {}: {error}", path.display()))?;
        toml::from_str(&text).map_err(|error| format!("--config {}: {error}", path.display()))
    }

    /// `self` with every unset value taken from `base`.
    pub fn over(self, base: Settings) -> Settings {
        Settings {
            data_dir: self.data_dir.or(base.data_dir),
            http_addr: self.http_addr.or(base.http_addr),
            grpc_addr: self.grpc_addr.or(base.grpc_addr),
            shards: self.shards.or(base.shards),
            node_id: self.node_id.or(base.node_id),
            leader: self.leader.or(base.leader),
            peers: self.peers.or(base.peers),
            join: self.join.or(base.join),
            lease_ttl: self.lease_ttl.or(base.lease_ttl),
            raft_log_entries: self.raft_log_entries.or(base.raft_log_entries),
            durability: self.durability.or(base.durability),
            segment_bytes: self.segment_bytes.or(base.segment_bytes),
            retention_bytes: self.retention_bytes.or(base.retention_bytes),
            retention_age: self.retention_age.or(base.retention_age),
            cold_codec: self.cold_codec.or(base.cold_codec),
            cold_after: self.cold_after.or(base.cold_after),
            word_filters: self.word_filters.or(base.word_filters),
            max_body_bytes: self.max_body_bytes.or(base.max_body_bytes),
            max_body_bytes_in_flight: self.max_body_bytes_in_flight.or(base.max_body_bytes_in_flight),
            max_pending_appends: self.max_pending_appends.or(base.max_pending_appends),
            header_read_timeout: self.header_read_timeout.or(base.header_read_timeout),
            shutdown_timeout: self.shutdown_timeout.or(base.shutdown_timeout),
            auth_tokens: self.auth_tokens.or(base.auth_tokens),
            peer_token_file: self.peer_token_file.or(base.peer_token_file),
            max_connections: self.max_connections.or(base.max_connections),
            insecure: self.insecure.or(base.insecure),
            tls_cert: self.tls_cert.or(base.tls_cert),
            tls_key: self.tls_key.or(base.tls_key),
            tls_client_ca: self.tls_client_ca.or(base.tls_client_ca),
            peer_ca: self.peer_ca.or(base.peer_ca),
            otlp_tag_attributes: self.otlp_tag_attributes.or(base.otlp_tag_attributes),
            syslog_tcp_addr: self.syslog_tcp_addr.or(base.syslog_tcp_addr),
            syslog_udp_addr: self.syslog_udp_addr.or(base.syslog_udp_addr),
            syslog_timezone: self.syslog_timezone.or(base.syslog_timezone),
        }
    }
}

/// The validated configuration of a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Holds one `shard-NNN` directory per shard.
    pub data_dir: PathBuf,
    /// HTTP API address; port 0 picks a free port (shared by all shards).
    pub http_addr: SocketAddr,
    /// gRPC address (ingest, query, replication); port 0 picks a free port.
    pub grpc_addr: SocketAddr,
    /// The gRPC addresses of the leader (a single node, or the nodes of an
    /// archive tier, tried in this order) when this node is a follower;
    /// empty otherwise. At most [`limits::LEADER_ADDRS_MAX`], no two alike.
    pub leaders: Vec<SocketAddr>,
    /// The archive tier's members, node id → gRPC address (empty: this node
    /// is not a tier member). A restarted member uses the membership it
    /// persisted instead.
    pub peers: std::collections::BTreeMap<u32, SocketAddr>,
    /// A member of the tier to ask to add this node (`--join`), on its
    /// first start; a node that has joined uses its persisted membership.
    pub join: Option<SocketAddr>,
    /// How long a follower's lease on the tier lasts without a push or a
    /// keepalive (`--lease-ttl`).
    pub lease_ttl: Duration,
    /// Raft log entries a tier member keeps behind its applied index for
    /// lagging peers; a peer further behind gets a snapshot.
    pub raft_log_entries: u64,
    /// How long shutdown may take to finish requests and drain replication.
    pub shutdown_timeout: Duration,
    /// Number of shards, one executor each.
    pub shards: usize,
    /// This node's id.
    pub node_id: u32,
    /// When appends are acknowledged.
    pub durability: Durability,
    /// Segment file size.
    pub segment_bytes: u64,
    /// Retention, applied per shard.
    pub retention: RetentionPolicy,
    /// Cold compression of sealed segments, per shard.
    pub cold: ColdPolicy,
    /// Whether the writer builds each block's word filter (`--word-filters`).
    pub word_filters: bool,
    /// Cap on one HTTP request body.
    pub max_body_bytes: usize,
    /// Cap on the HTTP request body bytes one core holds at once, over all
    /// its connections; at least `max_body_bytes`. Ingest over it gets 429.
    pub max_body_bytes_in_flight: usize,
    /// Appends (requests) that may wait for one group commit per shard;
    /// more get 429.
    pub max_pending_appends: usize,
    /// A connection that does not finish sending a request's headers within
    /// this time is closed.
    pub header_read_timeout: Duration,
    /// The token file (`--auth-tokens`); `None`: no tokens.
    pub auth_tokens: Option<PathBuf>,
    /// The file holding the secret this node presents on its own calls
    /// (`--peer-token-file`).
    pub peer_token_file: Option<PathBuf>,
    /// Connections each listener serves at once (`--max-connections`).
    pub max_connections: usize,
    /// Serve beyond loopback with neither tokens nor mTLS (`--insecure`).
    pub insecure: bool,
    /// The TLS files (`--tls-cert`, `--tls-key`, `--tls-client-ca`,
    /// `--peer-ca`), absolute; which go together is checked, the files are
    /// read at start ([`crate::tls::NodeTls::load`]).
    pub tls: TlsFiles,
    /// The syslog TCP listener's address (`--syslog-tcp-addr`); `None`: off.
    pub syslog_tcp_addr: Option<SocketAddr>,
    /// The syslog UDP listener's address (`--syslog-udp-addr`); `None`: off.
    pub syslog_udp_addr: Option<SocketAddr>,
    /// The zone of RFC 3164 timestamps (`--syslog-timezone`, default UTC).
    pub syslog_timezone: Zone,
    /// The OTLP resource attributes that become tags
    /// (`--otlp-tag-attributes`, [`parse_otlp_tag_attributes`]).
    pub otlp_tag_attributes: Vec<String>,
}

/// Parses `--otlp-tag-attributes a,b,c`: attribute keys as written (dots
/// and all), spaces around them ignored, empty items skipped (so `""` is
/// no tag attribute at all); each a valid tag key (at most
/// [`limits::TAG_KEY_BYTES_MAX`] bytes), not `level` (the severity's tag),
/// none twice, at most [`limits::OTLP_TAG_ATTRIBUTES_MAX`].
pub fn parse_otlp_tag_attributes(text: &str) -> Result<Vec<String>, String> {
    let mut keys: Vec<String> = Vec::new();
    for key in text.split(',').map(str::trim).filter(|key| !key.is_empty()) {
        if key == "level" {
            return Err("--otlp-tag-attributes: `level` is the severity's tag, not a resource attribute's".into());
        }
        if key.len() > limits::TAG_KEY_BYTES_MAX {
            return Err(format!(
                "--otlp-tag-attributes: {key:?} is over {} bytes (TAG_KEY_BYTES_MAX)",
                limits::TAG_KEY_BYTES_MAX
            ));
        }
        if keys.iter().any(|seen| seen == key) {
            return Err(format!("--otlp-tag-attributes: {key:?} is named twice"));
        }
        keys.push(key.to_string());
    }
    if keys.len() > limits::OTLP_TAG_ATTRIBUTES_MAX {
        return Err(format!(
            "--otlp-tag-attributes: {} attributes, at most {} (OTLP_TAG_ATTRIBUTES_MAX)",
            keys.len(),
            limits::OTLP_TAG_ATTRIBUTES_MAX
        ));
    }
    Ok(keys)
}

/// Parses `30s`, `15m`, `12h`, `7d` (or a bare number of seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|character: char| !character.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("bad duration {text:?}: use e.g. 30s, 15m, 12h, 7d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("bad duration unit in {text:?}: use s, m, h or d")),
    };
    number.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| format!("duration {text:?} is too large"))
}

/// `--cold-codec` and `--cold-after`: zstd after
/// [`limits::COLD_AFTER_DEFAULT`] unless told otherwise.
fn parse_cold(codec: Option<&str>, after: Option<&str>) -> Result<ColdPolicy, String> {
    let codec = match codec.unwrap_or("zstd") {
        "zstd" => ColdCodec::Zstd,
        "lz4" => ColdCodec::Lz4,
        other => return Err(format!("--cold-codec {other}: must be `zstd` or `lz4`")),
    };
    let after = match after {
        Some(text) => parse_duration(text).map_err(|error| format!("--cold-after: {error}"))?,
        None => limits::COLD_AFTER_DEFAULT,
    };
    Ok(ColdPolicy { codec, after })
}

/// The units [`parse_byte_size`] accepts (matched ignoring case), with
/// their size in bytes.
const BYTE_SIZE_UNITS: [(&str, u64); 9] = [
    ("B", 1),
    ("KB", 1000),
    ("MB", 1000 * 1000),
    ("GB", 1000 * 1000 * 1000),
    ("TB", 1000 * 1000 * 1000 * 1000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// Most significant decimal places [`parse_byte_size`] reads: more than a
/// setting ever needs, few enough that its integer arithmetic is exact.
const BYTE_SIZE_DECIMALS_MAX: usize = 18;

/// What a byte-size setting may look like, for error messages.
pub const BYTE_SIZE_FORMS: &str = "a number of bytes, or a number and a unit: B, KB, MB, GB, TB (powers of 1000) \
     or KiB, MiB, GiB, TiB (powers of 1024), e.g. 16MiB, 256 MB, 1.5GiB";

/// Parses a byte size: a whole number of bytes (`16777216`), or a number
/// and a unit with an optional space between (`16MiB`, `256 MB`): `B`;
/// `KB`, `MB`, `GB`, `TB` (powers of 1000); `KiB`, `MiB`, `GiB`, `TiB`
/// (powers of 1024); units match ignoring case. A bare `K`, `M` or `G` is
/// refused: it does not say which of the two powers it means.
///
/// A decimal fraction is accepted when it comes to a whole number of bytes
/// (`1.5GiB`, `2.5KB`) and refused otherwise (`1.5B`, `0.3KiB`): a setting
/// is never rounded behind the operator's back. The result is computed
/// exactly (no floating point), and anything above `u64::MAX` bytes is an
/// error, never a wrapped value. Pure; callers check the ranges and name
/// the flag.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let bad = || format!("bad byte size {text:?}: use {BYTE_SIZE_FORMS}");
    let number_end = trimmed.find(|character: char| !(character.is_ascii_digit() || character == '.'));
    let (number, unit) = trimmed.split_at(number_end.unwrap_or(trimmed.len()));
    let unit = unit.trim_start();
    let unit_bytes = if unit.is_empty() {
        1
    } else {
        BYTE_SIZE_UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            .map(|&(_, bytes)| bytes)
            .ok_or_else(|| format!("bad unit {unit:?} in byte size {text:?}: use {BYTE_SIZE_FORMS}"))?
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !digits(whole) || (number.contains('.') && !digits(fraction)) {
        return Err(bad());
    }
    // value = (whole * 10^k + fraction) * unit_bytes / 10^k, in integers.
    // With k <= 18 every overflow of u128 below means a value over
    // u64::MAX, since unit_bytes <= 2^40.
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > BYTE_SIZE_DECIMALS_MAX {
        return Err(format!("byte size {text:?} has more than {BYTE_SIZE_DECIMALS_MAX} decimal places"));
    }
    let too_large = || format!("byte size {text:?} is too large: at most {} bytes", u64::MAX);
    let scale = 10u128.pow(fraction.len() as u32);
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let fraction: u128 = if fraction.is_empty() { 0 } else { fraction.parse().map_err(|_| bad())? };
    let scaled = whole
        .checked_mul(scale)
        .and_then(|value| value.checked_add(fraction))
        .and_then(|value| value.checked_mul(u128::from(unit_bytes)))
        .ok_or_else(too_large)?;
    if scaled % scale != 0 {
        return Err(format!("byte size {text:?} is not a whole number of bytes"));
    }
    u64::try_from(scaled / scale).map_err(|_| too_large())
}

/// Writes `bytes` in the largest binary unit that divides it exactly
/// (`4MiB`, `64GiB`), or as plain bytes; [`parse_byte_size`] reads it back.
pub fn format_byte_size(bytes: u64) -> String {
    for (name, unit_bytes) in BYTE_SIZE_UNITS.iter().rev().take(4) {
        if bytes != 0 && bytes % unit_bytes == 0 {
            return format!("{}{name}", bytes / unit_bytes);
        }
    }
    bytes.to_string()
}

/// Reads a byte-size TOML value: an integer number of bytes, or a string
/// for [`parse_byte_size`].
fn deserialize_byte_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct ByteSizeVisitor;
    impl serde::de::Visitor<'_> for ByteSizeVisitor {
        type Value = u64;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(formatter, "a byte size: {BYTE_SIZE_FORMS}")
        }

        fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<u64, E> {
            Ok(bytes)
        }

        fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<u64, E> {
            u64::try_from(bytes).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(bytes), &self))
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u64, E> {
            parse_byte_size(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(ByteSizeVisitor).map(Some)
}

/// Parses a list of gRPC addresses, `HOST:PORT,HOST:PORT,...` (`--leader`,
/// and `wormdb restore --from`): spaces around an item are ignored; at
/// least one and at most [`limits::LEADER_ADDRS_MAX`] items. Each item is
/// resolved now (its first address); an error names the flag and the item.
///
/// Two items that resolve to the same address are refused rather than
/// merged: the list names the archive tier's nodes, and a repeated one is
/// almost surely a node typed twice in place of another.
pub fn parse_leader_addrs(flag: &str, text: &str) -> Result<Vec<SocketAddr>, String> {
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    if items.len() > limits::LEADER_ADDRS_MAX {
        return Err(format!(
            "{flag} {text}: {} addresses, at most {} (LEADER_ADDRS_MAX)",
            items.len(),
            limits::LEADER_ADDRS_MAX
        ));
    }
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        if item.is_empty() {
            return Err(format!("{flag} {text:?}: address {} is empty: use HOST:PORT,HOST:PORT,...", index + 1));
        }
        let addr = parse_addr(flag, item)?;
        if let Some(earlier) = addrs.iter().position(|&seen| seen == addr) {
            return Err(format!("{flag}: {item} and {} are the same address ({addr})", items[earlier]));
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

fn parse_addr(flag: &str, text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .map_err(|error| format!("{flag} {text}: {error}"))?
        .next()
        .ok_or_else(|| format!("{flag} {text}: no address"))
}

impl NodeConfig {
    /// Validates merged settings; `cores` is the default shard count.
    pub fn from_settings(settings: Settings, cores: usize) -> Result<NodeConfig, String> {
        let shards = settings.shards.unwrap_or(cores);
        if shards == 0 || shards > limits::SHARDS_MAX {
            return Err(format!("--shards {shards}: must be between 1 and {}", limits::SHARDS_MAX));
        }
        let durability = match settings.durability.as_deref().unwrap_or("sync") {
            "sync" => Durability::Sync,
            "none" => Durability::None,
            other => return Err(format!("--durability {other}: must be `sync` or `none`")),
        };
        let segment_bytes = settings.segment_bytes.unwrap_or(limits::SEGMENT_BYTES_DEFAULT);
        if !(limits::SEGMENT_BYTES_MIN..=limits::SEGMENT_BYTES_MAX).contains(&segment_bytes)
            || segment_bytes % 4096 != 0
        {
            return Err(format!(
                "--segment-bytes {segment_bytes}: must be a multiple of 4096 between {} and {} (SEGMENT_BYTES_MIN, \
                 SEGMENT_BYTES_MAX)",
                format_byte_size(limits::SEGMENT_BYTES_MIN),
                format_byte_size(limits::SEGMENT_BYTES_MAX)
            ));
        }
        let max_body_bytes = settings.max_body_bytes.unwrap_or(limits::HTTP_BODY_BYTES_DEFAULT as u64);
        if max_body_bytes == 0 || max_body_bytes > limits::HTTP_BODY_BYTES_LIMIT as u64 {
            return Err(format!(
                "--max-body-bytes {max_body_bytes}: must be between 1 and {} (HTTP_BODY_BYTES_LIMIT)",
                format_byte_size(limits::HTTP_BODY_BYTES_LIMIT as u64)
            ));
        }
        let max_body_bytes = max_body_bytes as usize;
        let in_flight_max = limits::HTTP_BODY_BYTES_IN_FLIGHT_PER_CORE_MAX;
        let max_body_bytes_in_flight = settings.max_body_bytes_in_flight.unwrap_or(in_flight_max as u64);
        if max_body_bytes_in_flight < max_body_bytes as u64 || max_body_bytes_in_flight > in_flight_max as u64 {
            return Err(format!(
                "--max-body-bytes-in-flight {max_body_bytes_in_flight}: must be between --max-body-bytes ({}) and {} \
                 (HTTP_BODY_BYTES_IN_FLIGHT_PER_CORE_MAX)",
                format_byte_size(max_body_bytes as u64),
                format_byte_size(in_flight_max as u64)
            ));
        }
        let max_body_bytes_in_flight = max_body_bytes_in_flight as usize;
        let max_pending_appends = settings.max_pending_appends.unwrap_or(limits::PENDING_APPENDS_MAX);
        if max_pending_appends == 0 || max_pending_appends > limits::PENDING_APPENDS_MAX {
            return Err(format!(
                "--max-pending-appends {max_pending_appends}: must be between 1 and {}",
                limits::PENDING_APPENDS_MAX
            ));
        }
        let header_read_timeout = match settings.header_read_timeout.as_deref() {
            Some(text) => parse_duration(text)?,
            None => HEADER_READ_TIMEOUT_DEFAULT,
        };
        if header_read_timeout.is_zero() {
            return Err("--header-read-timeout must be at least 1s".into());
        }
        let shutdown_timeout = match settings.shutdown_timeout.as_deref() {
            Some(text) => parse_duration(text)?,
            None => SHUTDOWN_TIMEOUT_DEFAULT,
        };
        let leaders = match settings.leader.as_deref() {
            Some(text) => parse_leader_addrs("--leader", text)?,
            None => Vec::new(),
        };
        let age_max = settings.retention_age.as_deref().map(parse_duration).transpose()?;
        let cold = parse_cold(settings.cold_codec.as_deref(), settings.cold_after.as_deref())?;
        let word_filters = match settings.word_filters.as_deref().unwrap_or("on") {
            "on" => true,
            "off" => false,
            other => return Err(format!("--word-filters {other}: must be `on` or `off`")),
        };
        let node_id = settings.node_id.unwrap_or(1);
        let raft_log_entries = settings.raft_log_entries.unwrap_or(limits::RAFT_LOG_RETAINED_ENTRIES);
        if raft_log_entries == 0 || raft_log_entries > limits::RAFT_LOG_RETAINED_ENTRIES {
            return Err(format!(
                "--raft-log-entries {raft_log_entries}: must be between 1 and {} (RAFT_LOG_RETAINED_ENTRIES)",
                limits::RAFT_LOG_RETAINED_ENTRIES
            ));
        }
        let peers = match settings.peers.as_deref() {
            None => std::collections::BTreeMap::new(),
            Some(text) => parse_peers(text, node_id)?,
        };
        let join = settings.join.as_deref().map(|addr| parse_addr("--join", addr)).transpose()?;
        let lease_ttl = match settings.lease_ttl.as_deref() {
            Some(text) => parse_duration(text).map_err(|error| format!("--lease-ttl: {error}"))?,
            None => limits::LEASE_TTL_DEFAULT,
        };
        if lease_ttl < limits::LEASE_TTL_MIN {
            return Err(format!(
                "--lease-ttl {lease_ttl:?}: at least {:?} (LEASE_TTL_MIN: a few keepalives must fit in it)",
                limits::LEASE_TTL_MIN
            ));
        }
        let max_connections = settings.max_connections.unwrap_or(limits::CONNECTIONS_PER_LISTENER_DEFAULT);
        if max_connections == 0 || max_connections > limits::CONNECTIONS_PER_LISTENER_MAX {
            return Err(format!(
                "--max-connections {max_connections}: must be between 1 and {} (CONNECTIONS_PER_LISTENER_MAX)",
                limits::CONNECTIONS_PER_LISTENER_MAX
            ));
        }
        if join.is_some() && !peers.is_empty() {
            return Err("--join and --peers: a node either forms the tier (--peers) or joins it (--join)".into());
        }
        let absolute = |flag: &str, path: Option<PathBuf>| {
            path.map(|path| std::path::absolute(&path).map_err(|error| format!("{flag} {}: {error}", path.display())))
                .transpose()
        };
        let tls = TlsFiles {
            cert: absolute("--tls-cert", settings.tls_cert)?,
            key: absolute("--tls-key", settings.tls_key)?,
            client_ca: absolute("--tls-client-ca", settings.tls_client_ca)?,
            peer_ca: absolute("--peer-ca", settings.peer_ca)?,
        };
        tls.check()?;
        let otlp_tag_attributes =
            parse_otlp_tag_attributes(settings.otlp_tag_attributes.as_deref().unwrap_or(OTLP_TAG_ATTRIBUTES_DEFAULT))?;
        let syslog_tcp_addr =
            settings.syslog_tcp_addr.as_deref().map(|addr| parse_addr("--syslog-tcp-addr", addr)).transpose()?;
        let syslog_udp_addr =
            settings.syslog_udp_addr.as_deref().map(|addr| parse_addr("--syslog-udp-addr", addr)).transpose()?;
        let syslog_timezone = settings.syslog_timezone.as_deref().map(Zone::parse).transpose()?.unwrap_or(Zone::UTC);
        Ok(NodeConfig {
            data_dir: std::path::absolute(settings.data_dir.unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT)))
                .map_err(|error| format!("--data-dir: {error}"))?,
            http_addr: parse_addr("--http-addr", settings.http_addr.as_deref().unwrap_or(HTTP_ADDR_DEFAULT))?,
            grpc_addr: parse_addr("--grpc-addr", settings.grpc_addr.as_deref().unwrap_or(GRPC_ADDR_DEFAULT))?,
            leaders,
            peers,
            join,
            lease_ttl,
            raft_log_entries,
            shutdown_timeout,
            shards,
            node_id,
            durability,
            segment_bytes,
            retention: RetentionPolicy { bytes_max: settings.retention_bytes, age_max },
            cold,
            word_filters,
            max_body_bytes,
            max_body_bytes_in_flight,
            max_pending_appends,
            header_read_timeout,
            auth_tokens: settings.auth_tokens,
            peer_token_file: settings.peer_token_file,
            max_connections,
            insecure: settings.insecure.unwrap_or(false),
            tls,
            otlp_tag_attributes,
            syslog_tcp_addr,
            syslog_udp_addr,
            syslog_timezone,
        })
    }
}

/// Parses `--peers 1=HOST:PORT,2=HOST:PORT,...`: unique ids from 1 (node id
/// 0 names the tier itself in entry ids), at most
/// [`limits::TIER_MEMBERS_MAX`], this node (`node_id`) among them.
pub fn parse_peers(text: &str, node_id: u32) -> Result<std::collections::BTreeMap<u32, SocketAddr>, String> {
    let mut peers = std::collections::BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let (id, addr) = item.split_once('=').ok_or_else(|| format!("--peers {item:?}: expected ID=HOST:PORT"))?;
        let id: u32 = id.trim().parse().map_err(|_| format!("--peers {item:?}: the id is not a number"))?;
        if id == 0 {
            return Err(format!("--peers {item:?}: node ids start at 1 (0 names the tier in entry ids)"));
        }
        let addr = parse_addr("--peers", addr.trim())?;
        if peers.insert(id, addr).is_some() {
            return Err(format!("--peers: node {id} is listed twice"));
        }
    }
    if peers.is_empty() {
        return Err("--peers: no members listed".into());
    }
    if peers.len() > limits::TIER_MEMBERS_MAX {
        return Err(format!(
            "--peers: {} members, at most {} (TIER_MEMBERS_MAX)",
            peers.len(),
            limits::TIER_MEMBERS_MAX
        ));
    }
    if !peers.contains_key(&node_id) {
        return Err(format!("--peers does not list this node (--node-id {node_id})"));
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file: Settings = toml::from_str("data-dir = \"/srv/w\"\nshards = 3\nretention-age = \"7d\"\n").unwrap();
        let flags = Settings { shards: Some(2), ..Settings::default() };
        let config = NodeConfig::from_settings(flags.over(file), 8).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/w"));
        assert_eq!(config.shards, 2);
        assert_eq!(config.retention.age_max, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(config.http_addr.to_string(), HTTP_ADDR_DEFAULT);
        assert_eq!(config.segment_bytes, limits::SEGMENT_BYTES_DEFAULT);
        assert_eq!(config.cold, ColdPolicy::zstd(limits::COLD_AFTER_DEFAULT), "zstd after an hour unless told");
        assert!(config.word_filters, "word filters unless told");
        let file: Settings = toml::from_str("word-filters = \"off\"\n").unwrap();
        assert!(!NodeConfig::from_settings(file, 1).unwrap().word_filters);
    }

    #[test]
    fn cold_compression_comes_from_flags_or_the_file() {
        let file: Settings = toml::from_str("cold-codec = \"lz4\"\ncold-after = \"6h\"\n").unwrap();
        let config = NodeConfig::from_settings(file.clone(), 1).unwrap();
        assert_eq!(config.cold, ColdPolicy { codec: ColdCodec::Lz4, after: Duration::from_secs(6 * 3600) });
        assert!(!config.cold.is_active());
        let flags = Settings { cold_codec: Some("zstd".into()), cold_after: Some("0s".into()), ..Settings::default() };
        let config = NodeConfig::from_settings(flags.over(file), 1).unwrap();
        assert_eq!(config.cold, ColdPolicy::zstd(Duration::ZERO));
    }

    #[test]
    fn security_settings_come_from_flags_or_the_file() {
        let file: Settings = toml::from_str(
            "auth-tokens = \"/etc/wormdb/tokens.toml\"\npeer-token-file = \"/etc/wormdb/peer.secret\"\n\
             max-connections = 500\ninsecure = true\n",
        )
        .unwrap();
        let config = NodeConfig::from_settings(Settings::default().over(file), 1).unwrap();
        assert_eq!(config.auth_tokens, Some(PathBuf::from("/etc/wormdb/tokens.toml")));
        assert_eq!(config.peer_token_file, Some(PathBuf::from("/etc/wormdb/peer.secret")));
        assert_eq!((config.max_connections, config.insecure), (500, true));
        let defaults = NodeConfig::from_settings(Settings::default(), 1).unwrap();
        assert_eq!((defaults.max_connections, defaults.insecure), (limits::CONNECTIONS_PER_LISTENER_DEFAULT, false));
        assert!(defaults.auth_tokens.is_none() && defaults.peer_token_file.is_none());
    }

    #[test]
    fn otlp_tag_attributes_default_parse_and_refuse_with_the_reason() {
        let defaults = NodeConfig::from_settings(Settings::default(), 1).unwrap();
        assert_eq!(defaults.otlp_tag_attributes.len(), 10);
        assert_eq!(defaults.otlp_tag_attributes[0], "service.name");
        assert_eq!(defaults.otlp_tag_attributes[9], "cloud.region");
        assert!(defaults.otlp_tag_attributes.iter().all(|key| !key.contains(' ')));
        let file: Settings = toml::from_str("otlp-tag-attributes = \" service.name , team,,\"\n").unwrap();
        let config = NodeConfig::from_settings(Settings::default().over(file), 1).unwrap();
        assert_eq!(config.otlp_tag_attributes, ["service.name", "team"]);
        assert_eq!(parse_otlp_tag_attributes(""), Ok(vec![]));
        for (text, needle) in [
            ("service.name,level", "severity"),
            ("a,b,a", "twice"),
            (&"k".repeat(257), "TAG_KEY_BYTES_MAX"),
            (&(0..64).map(|index| format!("k{index}")).collect::<Vec<_>>().join(","), "OTLP_TAG_ATTRIBUTES_MAX"),
        ] {
            let error = parse_otlp_tag_attributes(text).unwrap_err();
            assert!(error.contains(needle) && error.contains("--otlp-tag-attributes"), "{error}");
        }
    }

    #[test]
    fn syslog_listeners_are_off_unless_asked_for() {
        let defaults = NodeConfig::from_settings(Settings::default(), 1).unwrap();
        assert_eq!((defaults.syslog_tcp_addr, defaults.syslog_udp_addr), (None, None));
        assert_eq!(defaults.syslog_timezone, Zone::UTC);
        let file: Settings = toml::from_str(
            "syslog-tcp-addr = \"127.0.0.1:514\"\nsyslog-udp-addr = \"127.0.0.1:5514\"\nsyslog-timezone = \"+02:00\"\n",
        )
        .unwrap();
        let config = NodeConfig::from_settings(file, 1).unwrap();
        assert_eq!(config.syslog_tcp_addr.unwrap().port(), 514);
        assert_eq!(config.syslog_udp_addr.unwrap().port(), 5514);
        assert_eq!(config.syslog_timezone.offset_s, 7200);
        let bad = Settings { syslog_timezone: Some("Mars/Olympus".into()), ..Settings::default() };
        assert!(NodeConfig::from_settings(bad, 1).unwrap_err().contains("--syslog-timezone"));
    }

    #[test]
    fn peers_parse_and_refuse_with_the_reason() {
        let peers = parse_peers("1=127.0.0.1:7001, 2=127.0.0.1:7002,3=127.0.0.1:7003", 2).unwrap();
        assert_eq!(peers.len(), 3);
        assert_eq!(peers[&3].to_string(), "127.0.0.1:7003");
        for (text, node, needle) in [
            ("1=127.0.0.1:7001,1=127.0.0.1:7002", 1, "twice"),
            ("0=127.0.0.1:7001", 1, "start at 1"),
            ("1=127.0.0.1:7001", 2, "does not list this node"),
            ("127.0.0.1:7001", 1, "ID=HOST:PORT"),
            ("x=127.0.0.1:7001", 1, "not a number"),
            ("", 1, "no members"),
        ] {
            let error = parse_peers(text, node).unwrap_err();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn bad_settings_are_refused_with_the_flag_named() {
        let error = toml::from_str::<Settings>("data_dir = \"x\"").unwrap_err().to_string();
        assert!(error.contains("unknown field"), "{error}");
        for (settings, flag) in [
            (Settings { shards: Some(0), ..Settings::default() }, "--shards"),
            (Settings { durability: Some("maybe".into()), ..Settings::default() }, "--durability"),
            (Settings { segment_bytes: Some(1000), ..Settings::default() }, "--segment-bytes"),
            (Settings { http_addr: Some("nowhere".into()), ..Settings::default() }, "--http-addr"),
            (Settings { retention_age: Some("3 weeks".into()), ..Settings::default() }, "duration"),
            (Settings { cold_codec: Some("gzip".into()), ..Settings::default() }, "--cold-codec gzip"),
            (Settings { word_filters: Some("maybe".into()), ..Settings::default() }, "--word-filters maybe"),
            (Settings { cold_after: Some("later".into()), ..Settings::default() }, "--cold-after"),
            (Settings { raft_log_entries: Some(0), ..Settings::default() }, "--raft-log-entries"),
            (Settings { raft_log_entries: Some(1 << 40), ..Settings::default() }, "--raft-log-entries"),
            (Settings { peers: Some("1=127.0.0.1:1".into()), node_id: Some(2), ..Settings::default() }, "--peers"),
            (Settings { leader: Some("no-such-host".into()), ..Settings::default() }, "--leader"),
            (Settings { shutdown_timeout: Some("soon".into()), ..Settings::default() }, "duration"),
            (Settings { max_connections: Some(0), ..Settings::default() }, "--max-connections 0"),
            (Settings { max_connections: Some(100_001), ..Settings::default() }, "CONNECTIONS_PER_LISTENER_MAX"),
        ] {
            let error = NodeConfig::from_settings(settings, 2).unwrap_err();
            assert!(error.contains(flag), "{error}");
        }
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn tls_flags_that_do_not_go_together_are_refused() {
        let file: Settings = toml::from_str(
            "tls-cert = \"c.pem\"\ntls-key = \"k.pem\"\ntls-client-ca = \"ca.pem\"\npeer-ca = \"ca.pem\"\n",
        )
        .unwrap();
        let config = NodeConfig::from_settings(file, 1).unwrap();
        assert!(config.tls.cert.as_ref().unwrap().is_absolute(), "paths are made absolute for reloads");
        assert!(config.tls.client_ca.is_some() && config.tls.peer_ca.is_some());
        let path = |name: &str| Some(PathBuf::from(name));
        for (settings, expected) in [
            (Settings { tls_cert: path("c.pem"), ..Settings::default() }, "--tls-cert needs --tls-key"),
            (Settings { tls_key: path("k.pem"), ..Settings::default() }, "--tls-key needs --tls-cert"),
            (Settings { tls_client_ca: path("ca.pem"), ..Settings::default() }, "--tls-client-ca needs --tls-cert"),
        ] {
            let error = NodeConfig::from_settings(settings, 1).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
        let only_peer_ca = Settings { peer_ca: path("ca.pem"), ..Settings::default() };
        assert!(NodeConfig::from_settings(only_peer_ca, 1).is_ok(), "dialling TLS needs no certificate of its own");
    }

    fn leaders_of(text: &str) -> Result<Vec<SocketAddr>, String> {
        let settings = Settings { leader: Some(text.into()), ..Settings::default() };
        NodeConfig::from_settings(settings, 1).map(|config| config.leaders)
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn leader_takes_one_address_or_a_list_in_order() {
        assert_eq!(NodeConfig::from_settings(Settings::default(), 1).unwrap().leaders, [], "not a follower");
        assert_eq!(leaders_of("127.0.0.1:50051"), Ok(vec![addr("127.0.0.1:50051")]), "one address, as before");
        assert_eq!(
            leaders_of("10.0.0.1:1,10.0.0.2:2,[::1]:3"),
            Ok(vec![addr("10.0.0.1:1"), addr("10.0.0.2:2"), addr("[::1]:3")])
        );
        assert_eq!(leaders_of(" 10.0.0.1:1 , 10.0.0.2:2\t"), Ok(vec![addr("10.0.0.1:1"), addr("10.0.0.2:2")]));
        assert_eq!(leaders_of("localhost:7").unwrap().len(), 1, "host names are resolved");
        let file: Settings = toml::from_str("leader = \"10.0.0.1:1,10.0.0.2:2\"\n").unwrap();
        assert_eq!(NodeConfig::from_settings(file, 1).unwrap().leaders.len(), 2, "the same list in the file");
        let longest = (1..=limits::LEADER_ADDRS_MAX).map(|port| format!("10.0.0.1:{port}")).collect::<Vec<_>>();
        assert_eq!(leaders_of(&longest.join(",")).unwrap().len(), limits::LEADER_ADDRS_MAX);
    }

    #[test]
    fn a_bad_leader_list_names_the_item() {
        for (text, expected) in [
            ("10.0.0.1:1,no-such-host,10.0.0.2:2", "--leader no-such-host:"),
            ("10.0.0.1:1,10.0.0.2:port", "--leader 10.0.0.2:port:"),
            ("10.0.0.1:1,,10.0.0.2:2", "address 2 is empty"),
            ("10.0.0.1:1,", "address 2 is empty"),
            ("", "address 1 is empty"),
            (" , ", "address 1 is empty"),
            ("10.0.0.1:1,10.0.0.2:2, 10.0.0.1:1", "10.0.0.1:1 and 10.0.0.1:1 are the same address"),
        ] {
            let error = leaders_of(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(error.starts_with("--leader"), "{error}");
        }
        let too_many = (1..=limits::LEADER_ADDRS_MAX + 1).map(|port| format!("10.0.0.1:{port}")).collect::<Vec<_>>();
        let error = leaders_of(&too_many.join(",")).unwrap_err();
        assert!(error.contains("17 addresses, at most 16 (LEADER_ADDRS_MAX)"), "{error}");
        assert!(parse_leader_addrs("--from", "nowhere").unwrap_err().starts_with("--from nowhere"));
    }

    #[test]
    fn byte_sizes_take_plain_numbers_and_both_kinds_of_unit() {
        for (text, bytes) in [
            ("0", 0),
            ("0B", 0),
            ("0 GiB", 0),
            ("16777216", 16 << 20),
            ("16MiB", 16 << 20),
            ("16 MiB", 16 << 20),
            ("  16mib ", 16 << 20),
            ("256MB", 256_000_000),
            ("4096 b", 4096),
            ("2KB", 2000),
            ("2KiB", 2048),
            ("1GB", 1_000_000_000),
            ("1GiB", 1 << 30),
            ("3TB", 3_000_000_000_000),
            ("3TiB", 3 << 40),
            ("007KiB", 7 << 10),
            ("1.5GiB", 3 << 29),
            ("2.5KB", 2500),
            ("1.50KiB", 1536),
            ("0.5KiB", 512),
            ("1.000000000000000000000000000000000000000000000000GiB", 1 << 30),
            ("18446744073709551615", u64::MAX),
            ("18446744073709551615B", u64::MAX),
            ("16777215.5TiB", (16777215 << 40) + (1 << 39)),
            ("0.000000000001TB", 1),
        ] {
            assert_eq!(parse_byte_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn byte_sizes_refuse_garbage_fractions_of_a_byte_and_overflow() {
        for (text, expected) in [
            ("", "use a number of bytes"),
            ("MiB", "use a number of bytes"),
            ("-1", "use a number of bytes"),
            ("+1", "use a number of bytes"),
            ("1.MiB", "use a number of bytes"),
            (".5MiB", "use a number of bytes"),
            ("1.2.3MiB", "use a number of bytes"),
            ("1,5GiB", "bad unit"),
            ("16M", "bad unit \"M\""),
            ("16K", "bad unit"),
            ("16 XB", "bad unit \"XB\""),
            ("16PiB", "bad unit"),
            ("1e6", "bad unit"),
            ("16 Mi B", "bad unit"),
            ("1.5B", "not a whole number of bytes"),
            ("0.3KiB", "not a whole number of bytes"),
            ("0.0001KB", "not a whole number of bytes"),
            ("16777215.9999999999999TiB", "not a whole number of bytes"),
            ("1.0000000000000000001KiB", "more than 18 decimal places"),
            ("18446744073709551616", "too large"),
            ("16777216TiB", "too large"),
            ("18446744073709551616000000000000000000000000000000", "too large"),
            ("99999999999999999999999TB", "too large"),
        ] {
            let error = parse_byte_size(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(error.contains(&format!("{text:?}")), "the error quotes the input: {error}");
        }
        let error = parse_byte_size("16M").unwrap_err();
        assert!(error.contains("KiB, MiB") && error.contains("KB, MB"), "the error lists the forms: {error}");
    }

    #[test]
    fn a_formatted_byte_size_parses_back() {
        for bytes in [0, 1, 1000, 1536, 4096, 4 << 20, 64 << 30, 1 << 40, 5 << 40, u64::MAX] {
            assert_eq!(parse_byte_size(&format_byte_size(bytes)), Ok(bytes), "{}", format_byte_size(bytes));
        }
        assert_eq!(format_byte_size(4 << 20), "4MiB");
        assert_eq!(format_byte_size(1000), "1000");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn any_number_with_any_unit_is_exact_or_too_large(
            number in proptest::prelude::any::<u64>(),
            unit in 0..BYTE_SIZE_UNITS.len(),
            space in proptest::prelude::any::<bool>(),
        ) {
            let (name, unit_bytes) = BYTE_SIZE_UNITS[unit];
            let text = format!("{number}{}{name}", if space { " " } else { "" });
            match number.checked_mul(unit_bytes) {
                Some(bytes) => proptest::prop_assert_eq!(parse_byte_size(&text), Ok(bytes)),
                None => proptest::prop_assert!(parse_byte_size(&text).unwrap_err().contains("too large")),
            }
        }
    }

    #[test]
    fn toml_byte_sizes_are_integers_or_strings_and_ranges_still_hold() {
        let file: Settings =
            toml::from_str("segment-bytes = \"16 MiB\"\nretention-bytes = 3000000000\nmax-body-bytes = \"1MB\"\n")
                .unwrap();
        assert_eq!(file.segment_bytes, Some(16 << 20));
        assert_eq!(file.retention_bytes, Some(3_000_000_000));
        let config = NodeConfig::from_settings(file, 1).unwrap();
        assert_eq!(config.segment_bytes, 16 << 20);
        assert_eq!(config.retention.bytes_max, Some(3_000_000_000));
        assert_eq!(config.max_body_bytes, 1_000_000);
        assert_eq!(config.max_body_bytes_in_flight, limits::HTTP_BODY_BYTES_IN_FLIGHT_PER_CORE_MAX);

        for (text, expected) in [
            ("segment-bytes = \"16XB\"", "bad unit"),
            ("retention-bytes = -5", "expected a byte size"),
            ("retention-bytes = 1.5", "expected a byte size"),
            ("max-body-bytes = true", "expected a byte size"),
            ("max-body-bytes = \"99999999999999TiB\"", "too large"),
        ] {
            let error = toml::from_str::<Settings>(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(error.contains(text.split(' ').next().unwrap()), "the error shows the key: {error}");
        }

        for (settings, expected) in [
            (Settings { segment_bytes: Some(2 << 20), ..Settings::default() }, "--segment-bytes 2097152"),
            (Settings { segment_bytes: Some((4 << 20) + 1), ..Settings::default() }, "4MiB and 64GiB"),
            (Settings { max_body_bytes: Some(0), ..Settings::default() }, "--max-body-bytes 0"),
            (Settings { max_body_bytes: Some(65 << 20), ..Settings::default() }, "64MiB"),
            (
                Settings { max_body_bytes: Some(1 << 20), max_body_bytes_in_flight: Some(1000), ..Settings::default() },
                "--max-body-bytes-in-flight 1000: must be between --max-body-bytes (1MiB) and 256MiB",
            ),
            (Settings { max_body_bytes_in_flight: Some(257 << 20), ..Settings::default() }, "256MiB"),
        ] {
            let error = NodeConfig::from_settings(settings, 1).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
        let small = Settings {
            max_body_bytes: Some(64 << 10),
            max_body_bytes_in_flight: Some(64 << 10),
            ..Settings::default()
        };
        assert_eq!(NodeConfig::from_settings(small, 1).unwrap().max_body_bytes_in_flight, 64 << 10);
    }
}
