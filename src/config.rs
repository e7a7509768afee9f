//! Node configuration: command-line flags over an optional TOML file over
//! defaults (DESIGN.md section 8). The TOML keys are the flag names
//! (`data-dir = "/var/lib/wormdb"`, `shards = 4`, ...).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::limits;
use crate::shard::{Durability, RetentionPolicy};

/// Default HTTP listen address.
pub const HTTP_ADDR_DEFAULT: &str = "127.0.0.1:8080";
/// Default gRPC listen address.
pub const GRPC_ADDR_DEFAULT: &str = "127.0.0.1:50051";
/// Default data directory.
pub const DATA_DIR_DEFAULT: &str = "./wormdb-data";
/// Default cap on one HTTP request body.
pub const MAX_BODY_BYTES_DEFAULT: usize = 16 * 1024 * 1024;
/// Largest accepted `--max-body-bytes`.
pub const MAX_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;
/// Default time a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default `--shutdown-timeout`.
pub const SHUTDOWN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Largest accepted `--shards`.
pub const SHARDS_MAX: usize = 256;

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
    /// `--leader`
    pub leader: Option<String>,
    /// `--durability` (`sync` or `none`)
    pub durability: Option<String>,
    /// `--segment-bytes`
    pub segment_bytes: Option<u64>,
    /// `--retention-bytes` (per shard)
    pub retention_bytes: Option<u64>,
    /// `--retention-age` (`30s`, `15m`, `12h`, `7d`)
    pub retention_age: Option<String>,
    /// `--max-body-bytes`
    pub max_body_bytes: Option<usize>,
    /// `--max-pending-appends` (per shard)
    pub max_pending_appends: Option<usize>,
    /// `--header-read-timeout` (`10s`)
    pub header_read_timeout: Option<String>,
    /// `--shutdown-timeout` (`10s`)
    pub shutdown_timeout: Option<String>,
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
            durability: self.durability.or(base.durability),
            segment_bytes: self.segment_bytes.or(base.segment_bytes),
            retention_bytes: self.retention_bytes.or(base.retention_bytes),
            retention_age: self.retention_age.or(base.retention_age),
            max_body_bytes: self.max_body_bytes.or(base.max_body_bytes),
            max_pending_appends: self.max_pending_appends.or(base.max_pending_appends),
            header_read_timeout: self.header_read_timeout.or(base.header_read_timeout),
            shutdown_timeout: self.shutdown_timeout.or(base.shutdown_timeout),
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
    /// The leader's gRPC address when this node is a follower.
    pub leader: Option<SocketAddr>,
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
    /// Cap on one HTTP request body.
    pub max_body_bytes: usize,
    /// Appends (requests) that may wait for one group commit per shard;
    /// more get 429.
    pub max_pending_appends: usize,
    /// A connection that does not finish sending a request's headers within
    /// this time is closed.
    pub header_read_timeout: Duration,
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
        if shards == 0 || shards > SHARDS_MAX {
            return Err(format!("--shards {shards}: must be between 1 and {SHARDS_MAX}"));
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
                "--segment-bytes {segment_bytes}: must be a multiple of 4096 between {} and {}",
                limits::SEGMENT_BYTES_MIN,
                limits::SEGMENT_BYTES_MAX
            ));
        }
        let max_body_bytes = settings.max_body_bytes.unwrap_or(MAX_BODY_BYTES_DEFAULT);
        if max_body_bytes == 0 || max_body_bytes > MAX_BODY_BYTES_LIMIT {
            return Err(format!("--max-body-bytes {max_body_bytes}: must be between 1 and {MAX_BODY_BYTES_LIMIT}"));
        }
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
        let leader = settings.leader.as_deref().map(|leader| parse_addr("--leader", leader)).transpose()?;
        let age_max = settings.retention_age.as_deref().map(parse_duration).transpose()?;
        Ok(NodeConfig {
            data_dir: std::path::absolute(settings.data_dir.unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT)))
                .map_err(|error| format!("--data-dir: {error}"))?,
            http_addr: parse_addr("--http-addr", settings.http_addr.as_deref().unwrap_or(HTTP_ADDR_DEFAULT))?,
            grpc_addr: parse_addr("--grpc-addr", settings.grpc_addr.as_deref().unwrap_or(GRPC_ADDR_DEFAULT))?,
            leader,
            shutdown_timeout,
            shards,
            node_id: settings.node_id.unwrap_or(1),
            durability,
            segment_bytes,
            retention: RetentionPolicy { bytes_max: settings.retention_bytes, age_max },
            max_body_bytes,
            max_pending_appends,
            header_read_timeout,
        })
    }
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
            (Settings { leader: Some("no-such-host".into()), ..Settings::default() }, "--leader"),
            (Settings { shutdown_timeout: Some("soon".into()), ..Settings::default() }, "duration"),
        ] {
            let error = NodeConfig::from_settings(settings, 2).unwrap_err();
            assert!(error.contains(flag), "{error}");
        }
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
    }
}
