//! Command-line flags and their parsing (pure: no I/O beyond reading
//! nothing; every check that can be made before connecting is made here).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Entries in one request, at most (the node's own bound).
pub const BATCH_MAX: usize = 1_000_000;
/// Connections in one run, at most.
pub const CONNECTIONS_MAX: usize = 16_384;
/// Executor threads, at most.
pub const THREADS_MAX: usize = 256;
/// Longest run (warmup plus measurement).
pub const RUN_SECONDS_MAX: u64 = 24 * 3600;
/// Highest fixed rate, entries per second.
pub const RATE_MAX: u64 = 1_000_000_000;

/// Drives a wormdb node at a fixed rate (open loop, latency measured from
/// each request's intended send time) or as fast as it answers (`--rate
/// max`), and reports HdrHistogram latencies.
#[derive(Parser, Debug, Clone)]
#[command(name = "wormdb-loadgen", version, about, long_about = None)]
pub struct Args {
    /// HTTP base URL (`http://127.0.0.1:8080`) for `http`, `otlp-http`,
    /// `loki` and `es-bulk`; `host:port` for `grpc` and `otlp-grpc` (the
    /// gRPC port) and `syslog-tcp` (the node's `--syslog-tcp-addr`).
    #[arg(long)]
    pub target: String,
    /// Wire protocol: wormdb's own (`http`, `grpc`) or a shipper's, each in
    /// its real wire form (see the README).
    #[arg(long, value_enum, default_value_t = Protocol::Http)]
    pub protocol: Protocol,
    /// The node's HTTP base URL, where `--verify` reads the per-protocol
    /// counters of `/metrics`, for protocols whose target is not the HTTP
    /// port (`otlp-grpc`, `syslog-tcp`); the others use `--target`.
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,
    /// gRPC only: push as follower N over `WormReplication.Replicate` (one
    /// stream per connection, the connection's index as the shard) instead
    /// of `WormIngest.Write`.
    #[arg(long)]
    pub follower_id: Option<u32>,
    /// Entries per second, or `max` (closed loop: each connection sends its
    /// next request as soon as the previous one is answered).
    #[arg(long, default_value = "10000", value_parser = parse_rate)]
    pub rate: Rate,
    /// How long to measure, e.g. `30s`, `500ms`, `2m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before the measurement, not counted in rates or latencies (but
    /// its acknowledged entries are verified).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// TCP connections (HTTP/1.1 keep-alive, or HTTP/2 channels for gRPC),
    /// each with one request in flight (up to 16 batches for follower pushes).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Executor threads (one glommio executor each); default: available cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Entries per request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Bytes of each entry body [default: 200]. With `--payload-file`, bodies
    /// are whole lines unless this is given; then consecutive lines are
    /// joined and cut to exactly this size (real text at a fixed record shape).
    #[arg(long)]
    pub body_bytes: Option<usize>,
    /// Tags per entry and distinct values per tag, `COUNT:CARDINALITY`.
    #[arg(long, default_value = "3:100", value_parser = parse_tags)]
    pub tags: TagShape,
    /// Replay the lines of this file as entry bodies (e.g. a LogHub sample).
    #[arg(long)]
    pub payload_file: Option<PathBuf>,
    /// A request unanswered this long counts as an error (and its
    /// connection is replaced); also how long the run waits at the end.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Write the results as JSON (with the acknowledged seq ranges, for
    /// `--verify-from`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the latency distribution in HdrHistogram's percentile text format.
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// Write a latency-by-percentile PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// After the run, check that the node stores every acknowledged entry.
    #[arg(long)]
    pub verify: bool,
    /// Send no load: check the acknowledgements recorded in the `--json`
    /// file of an earlier run against `--target`.
    #[arg(long)]
    pub verify_from: Option<PathBuf>,
    /// Seed of the synthetic bodies and tags.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Distinct pre-encoded requests to cycle through (default: as many as
    /// fit in 64 MiB, at most 1024).
    #[arg(long)]
    pub pool_requests: Option<usize>,
    /// A bearer token to present (`authorization: Bearer SECRET`) on every
    /// HTTP request and gRPC call, for a node started with `--auth-tokens`.
    #[arg(long, value_name = "SECRET")]
    pub token: Option<String>,
    /// Dial TLS, verifying the node's certificate against this CA (PEM); the
    /// certificate must name the IP dialled. HTTP targets are then `https://`.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Present this client certificate (PEM, with `--tls-key`), e.g. a
    /// `follower-<id>` certificate for `--follower-id` against a node with
    /// `--tls-client-ca`.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Wire protocol.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `POST /v1/entries` with NDJSON over HTTP/1.1.
    Http,
    /// gRPC (`WormIngest.Write`, or `WormReplication.Replicate` with `--follower-id`).
    Grpc,
    /// OTLP logs over gRPC: `LogsService/Export` on the gRPC port.
    OtlpGrpc,
    /// OTLP logs over HTTP: `POST /v1/logs`, protobuf.
    OtlpHttp,
    /// Loki push: `POST /loki/api/v1/push`, snappy protobuf.
    Loki,
    /// Elasticsearch bulk: `POST /es/_bulk`, NDJSON.
    EsBulk,
    /// Syslog over TCP: RFC 5424 lines, octet-counting framing.
    SyslogTcp,
}

/// How a protocol reaches the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/1.1 to a base URL.
    Http,
    /// HTTP/2 gRPC to `host:port`.
    Grpc,
    /// A plain TCP connection to `host:port`.
    Tcp,
}

impl Protocol {
    /// How it reaches the node.
    pub fn transport(self) -> Transport {
        match self {
            Protocol::Http | Protocol::OtlpHttp | Protocol::Loki | Protocol::EsBulk => Transport::Http,
            Protocol::Grpc | Protocol::OtlpGrpc => Transport::Grpc,
            Protocol::SyslogTcp => Transport::Tcp,
        }
    }
}

/// Target rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    /// Entries per second, open loop.
    Fixed(u64),
    /// Closed loop, as fast as the node answers.
    Max,
}

/// Shape of the tags of every entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagShape {
    /// Tags per entry.
    pub count: usize,
    /// Distinct values of each tag.
    pub cardinality: u64,
}

/// Parses `--rate`: a positive integer (`_` separators and a `k`/`m`
/// suffix allowed) or `max`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    let cleaned: String = text.chars().filter(|character| *character != '_').collect();
    let (digits, multiplier) = match cleaned.chars().last() {
        Some('k' | 'K') => (&cleaned[..cleaned.len() - 1], 1_000),
        Some('m' | 'M') => (&cleaned[..cleaned.len() - 1], 1_000_000),
        _ => (&cleaned[..], 1),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a rate: give entries per second (e.g. 20000, 50k) or `max`"))?;
    let rate = value.checked_mul(multiplier).filter(|rate| (1..=RATE_MAX).contains(rate));
    rate.map(Rate::Fixed).ok_or_else(|| format!("rate `{text}` must be between 1 and {RATE_MAX} entries per second"))
}

/// Parses a duration: a number with `ms`, `s`, `m` or `h` (a bare number
/// is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|character: char| !(character.is_ascii_digit() || character == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds > RUN_SECONDS_MAX as f64 {
        return Err(format!("`{text}` is longer than {RUN_SECONDS_MAX} s"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses `--tags COUNT:CARDINALITY` (`0` or `0:0` for no tags).
pub fn parse_tags(text: &str) -> Result<TagShape, String> {
    let bad = || format!("`{text}` is not COUNT:CARDINALITY (e.g. 3:100)");
    let (count, cardinality) = match text.split_once(':') {
        Some((count, cardinality)) => (count.trim(), cardinality.trim()),
        None => (text.trim(), "1"),
    };
    let count: usize = count.parse().map_err(|_| bad())?;
    let cardinality: u64 = cardinality.parse().map_err(|_| bad())?;
    if count > wormdb::limits::ENTRY_TAGS_MAX {
        return Err(format!("{count} tags per entry: the node takes at most {}", wormdb::limits::ENTRY_TAGS_MAX));
    }
    if count > 0 && cardinality == 0 {
        return Err(format!("`{text}`: a tag needs at least one value"));
    }
    Ok(TagShape { count, cardinality: cardinality.max(1) })
}

/// Where to send, resolved.
#[derive(Clone, Debug)]
pub struct Target {
    /// The socket address to connect to.
    pub addr: SocketAddr,
    /// The `Host` header (HTTP) or `:authority`.
    pub authority: String,
    /// Path prefix of the HTTP base URL, without a trailing slash.
    pub base_path: String,
    /// The target was given as `https://`.
    pub https: bool,
    /// TLS to dial with (`--tls-ca`, see [`with_tls`]); `None`: plaintext.
    pub tls: Option<Arc<wormdb::tls::ClientConfig>>,
}

/// Resolves `--target` for `protocol`: HTTP wants `http://host:port[/prefix]`
/// (or `https://`, with `--tls-ca`), gRPC `host:port` (an `http://` or
/// `https://` prefix is accepted).
pub fn resolve_target(text: &str, protocol: Protocol) -> Result<Target, String> {
    let https = text.starts_with("https://");
    let transport = protocol.transport();
    let rest = match (transport, text.strip_prefix("http://").or_else(|| text.strip_prefix("https://"))) {
        (Transport::Tcp, Some(_)) => {
            return Err(format!("--target {text}: a syslog target is host:port, without a scheme"))
        }
        (_, Some(rest)) => rest,
        (Transport::Grpc | Transport::Tcp, None) => text,
        (Transport::Http, None) => {
            return Err(format!("--target {text}: give an HTTP base URL such as http://127.0.0.1:8080"))
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(index) => (&rest[..index], rest[index..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if transport != Transport::Http && !path.is_empty() {
        return Err(format!("--target {text}: a gRPC or syslog target is host:port, without a path"));
    }
    if authority.is_empty() {
        return Err(format!("--target {text}: no host"));
    }
    let with_port =
        if authority.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) { authority } else { "" };
    if with_port.is_empty() {
        return Err(format!("--target {text}: give a port (host:port)"));
    }
    let addr = with_port
        .to_socket_addrs()
        .map_err(|error| format!("--target {text}: cannot resolve {with_port}: {error}"))?
        .next()
        .ok_or_else(|| format!("--target {text}: {with_port} resolves to no address"))?;
    Ok(Target { addr, authority: authority.to_string(), base_path: path.to_string(), https, tls: None })
}

/// `target` with the TLS `args` ask for: `--tls-ca` (and `--tls-cert`,
/// `--tls-key`). An HTTP target must say `https://` exactly when `--tls-ca`
/// is given; a gRPC target dials TLS whenever it is.
pub fn with_tls(target: Target, protocol: Protocol, args: &Args) -> Result<Target, String> {
    let Some(ca) = &args.tls_ca else {
        if target.https {
            return Err(format!("--target {}: https needs --tls-ca (the CA of the node's certificate)", args.target));
        }
        return Ok(target);
    };
    let listener = match protocol.transport() {
        Transport::Http if !target.https => {
            return Err(format!("--target {}: with --tls-ca, give an https:// URL", args.target))
        }
        Transport::Http => wormdb::tls::Listener::Http,
        Transport::Grpc => wormdb::tls::Listener::Grpc,
        Transport::Tcp => return Err("--tls-ca: syslog-tcp is plain TCP".into()),
    };
    let pair = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
    let config = wormdb::tls::tool_client_config(ca, pair, listener).map_err(|error| error.to_string())?;
    Ok(Target { tls: Some(config), ..target })
}

/// Cross-flag checks that clap cannot express.
pub fn validate(args: &Args) -> Result<(), String> {
    if args.follower_id.is_some() && args.protocol != Protocol::Grpc {
        return Err("--follower-id needs --protocol grpc".into());
    }
    if args.verify
        && args.metrics_url.is_none()
        && args.protocol.transport() != Transport::Http
        && !matches!(args.protocol, Protocol::Grpc)
    {
        return Err(format!(
            "--verify with --protocol {}: give --metrics-url (the node's HTTP base URL, where the protocol's \
             counters are read)",
            args.protocol.to_possible_value().map(|value| value.get_name().to_string()).unwrap_or_default()
        ));
    }
    if !(1..=BATCH_MAX).contains(&args.batch) {
        return Err(format!("--batch {}: must be between 1 and {BATCH_MAX}", args.batch));
    }
    if !(1..=CONNECTIONS_MAX).contains(&args.connections) {
        return Err(format!("--connections {}: must be between 1 and {CONNECTIONS_MAX}", args.connections));
    }
    if let Some(threads) = args.threads {
        if !(1..=THREADS_MAX).contains(&threads) {
            return Err(format!("--threads {threads}: must be between 1 and {THREADS_MAX}"));
        }
    }
    if args.body_bytes.is_some_and(|bytes| !(1..=wormdb::limits::ENTRY_BODY_BYTES_MAX).contains(&bytes)) {
        return Err(format!(
            "--body-bytes {}: must be between 1 and {}",
            args.body_bytes.unwrap_or_default(),
            wormdb::limits::ENTRY_BODY_BYTES_MAX
        ));
    }
    if args.duration.is_zero() {
        return Err("--duration must be more than 0".into());
    }
    if args.duration + args.warmup > Duration::from_secs(RUN_SECONDS_MAX) {
        return Err(format!("--warmup plus --duration is over {RUN_SECONDS_MAX} s"));
    }
    if args.timeout < Duration::from_millis(10) || args.timeout > Duration::from_secs(3600) {
        return Err("--timeout must be between 10ms and 1h".into());
    }
    if let Rate::Fixed(rate) = args.rate {
        // Fewer than one request per connection over the whole run is
        // almost certainly a mistake, and the schedule would be empty.
        let requests = rate as f64 * args.duration.as_secs_f64() / args.batch as f64;
        if requests < 1.0 {
            return Err(format!(
                "--rate {rate} with --batch {} sends less than one request in {:?}",
                args.batch, args.duration
            ));
        }
    }
    if args.pool_requests == Some(0) {
        return Err("--pool-requests must be at least 1".into());
    }
    if args.verify_from.is_some() && args.verify {
        return Err("--verify-from checks an earlier run; it cannot be combined with --verify".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("20000"), Ok(Rate::Fixed(20_000)));
        assert_eq!(parse_rate("50k"), Ok(Rate::Fixed(50_000)));
        assert_eq!(parse_rate("1_000_000"), Ok(Rate::Fixed(1_000_000)));
        assert_eq!(parse_rate("2M"), Ok(Rate::Fixed(2_000_000)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-5").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999h").is_err());
    }

    #[test]
    fn tags() {
        assert_eq!(parse_tags("3:100"), Ok(TagShape { count: 3, cardinality: 100 }));
        assert_eq!(parse_tags("0"), Ok(TagShape { count: 0, cardinality: 1 }));
        assert!(parse_tags("65:10").is_err());
        assert!(parse_tags("2:0").is_err());
        assert!(parse_tags("a:b").is_err());
    }

    #[test]
    fn targets() {
        let http = resolve_target("http://127.0.0.1:8080/", Protocol::Http).unwrap();
        assert_eq!(http.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(http.base_path, "");
        let prefixed = resolve_target("http://127.0.0.1:8080/wormdb/", Protocol::Http).unwrap();
        assert_eq!(prefixed.base_path, "/wormdb");
        let grpc = resolve_target("127.0.0.1:50051", Protocol::Grpc).unwrap();
        assert_eq!(grpc.authority, "127.0.0.1:50051");
        assert!(resolve_target("127.0.0.1:8080", Protocol::Http).is_err());
        assert!(resolve_target("https://127.0.0.1:8080", Protocol::Http).unwrap().https);
        assert!(!http.https && !grpc.https);
        assert!(resolve_target("http://127.0.0.1", Protocol::Http).is_err());
        assert!(resolve_target("127.0.0.1:1/x", Protocol::Grpc).is_err());
        assert_eq!(resolve_target("127.0.0.1:5140", Protocol::SyslogTcp).unwrap().authority, "127.0.0.1:5140");
        assert!(resolve_target("http://127.0.0.1:5140", Protocol::SyslogTcp).is_err());
        assert_eq!(resolve_target("http://127.0.0.1:8080/x", Protocol::Loki).unwrap().base_path, "/x");
        assert!(resolve_target("127.0.0.1:8080", Protocol::EsBulk).is_err());
        assert!(resolve_target("127.0.0.1:50051", Protocol::OtlpGrpc).is_ok());
    }

    #[test]
    fn protocol_names_are_the_node_labels() {
        for protocol in [Protocol::OtlpGrpc, Protocol::OtlpHttp, Protocol::Loki, Protocol::EsBulk, Protocol::SyslogTcp]
        {
            let name = protocol.to_possible_value().unwrap().get_name().to_string();
            assert!(wormdb::ingest::Protocol::ALL.iter().any(|known| known.label() == name), "{name}");
        }
        let args =
            Args::parse_from(["wormdb-loadgen", "--target", "127.0.0.1:1", "--protocol", "syslog-tcp", "--verify"]);
        assert!(validate(&args).unwrap_err().contains("--metrics-url"));
    }
}
