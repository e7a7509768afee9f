//! The pool of pre-encoded requests, built once before the run so that the
//! hot loop only clones a `Bytes` (HTTP, gRPC Write) or copies pre-encoded
//! entry bytes behind a fresh seq (follower pushes).
//!
//! Bodies are varied text (synthetic log lines from a seeded generator, or
//! the lines of `--payload-file`), never a repeated character, so that the
//! node's LZ4 compresses what it would compress in production.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use wormdb::grpc::frame;
use wormdb::proto::logproto::{EntryAdapter, PushRequest, StreamAdapter};
use wormdb::proto::opentelemetry::proto::collector::logs::v1::ExportLogsServiceRequest;
use wormdb::proto::opentelemetry::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use wormdb::proto::opentelemetry::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use wormdb::proto::opentelemetry::proto::resource::v1::Resource;
use wormdb::proto::{LogEntry, WriteRequest};

/// Largest encoded request (the node's default `--max-body-bytes` and the
/// gRPC message limit are both 16 MiB).
pub const REQUEST_BYTES_MAX: usize = wormdb::limits::MESSAGE_BYTES_MAX;
/// The pool aims at about this many bytes.
pub const POOL_BYTES_TARGET: usize = 64 * 1024 * 1024;
/// Distinct requests in the pool, at most.
pub const POOL_REQUESTS_MAX: usize = 1024;
/// Lines read from `--payload-file`, at most.
pub const PAYLOAD_LINES_MAX: usize = 1_000_000;

/// How requests are encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// NDJSON lines `{"tags":{...},"body":"..."}` without `ts` (the node stamps "now").
    Ndjson,
    /// A gRPC-framed `WriteRequest` (5-byte prefix included).
    WriteRequest,
    /// Each entry's tags and body encoded as `LogEntry` fields 3 and 4; the
    /// seq and timestamp are put in front at send time ([`encode_push`]).
    PushEntries,
    /// A gRPC-framed OTLP `ExportLogsServiceRequest` ([`otlp_request`]).
    OtlpGrpc,
    /// The same `ExportLogsServiceRequest`, unframed, for `POST /v1/logs`.
    OtlpProtobuf,
    /// A Loki `PushRequest`, one stream per distinct tag set, compressed
    /// with raw snappy, as Promtail and Alloy send it.
    LokiSnappy,
    /// Elasticsearch bulk NDJSON: `{"create":{"_index":"loadgen"}}` and a document with
    /// `message`, `@timestamp` and the tags as top-level keys, per entry.
    EsBulk,
    /// RFC 5424 syslog messages with octet-counting framing (RFC 6587),
    /// the tags as structured data.
    Syslog,
}

/// The resource attribute `service.name` of OTLP requests (a tag on the node).
pub const OTLP_SERVICE_NAME: &str = "wormdb-loadgen";
/// The SD-ID of the structured data that carries the tags in syslog
/// messages (32473 is the private enterprise number reserved for examples).
pub const SYSLOG_SD_ID: &str = "tags@32473";
/// The index bulk documents are created in (the node's `index` tag).
pub const ES_INDEX: &str = "loadgen";

/// One pre-encoded request.
#[derive(Clone, Debug)]
pub struct PooledRequest {
    /// The encoded request ([`Encoding`]).
    pub wire: Bytes,
    /// [`Encoding::PushEntries`] only: end offset of each entry in `wire`.
    pub entry_ends: Vec<u32>,
    /// Body of the request's last entry, which verification samples.
    pub last_body: String,
    /// First tag of the last entry (narrows a verification query).
    pub last_tag: Option<(String, String)>,
}

/// The pool.
#[derive(Debug)]
pub struct Pool {
    /// Requests to cycle through.
    pub requests: Vec<PooledRequest>,
    /// Entries in every request.
    pub entries_per_request: usize,
    /// Mean entry body size.
    pub body_bytes_mean: f64,
    /// Mean encoded request size.
    pub request_bytes_mean: f64,
}

/// Where bodies come from.
pub enum BodySource {
    /// Lines of a file, cycled.
    Lines {
        /// The lines (non-empty).
        lines: Vec<String>,
        /// The next one.
        cursor: usize,
        /// Join consecutive lines and cut them to this size, if set.
        body_bytes: Option<usize>,
    },
    /// Synthetic log-like text of a fixed size.
    Synthetic {
        /// Bytes per body.
        body_bytes: usize,
    },
}

impl BodySource {
    /// Reads `path` (invalid UTF-8 replaced, empty lines skipped).
    pub fn from_file(path: &std::path::Path, body_bytes: Option<usize>) -> Result<BodySource, String> {
        let bytes = std::fs::read(path).map_err(|error| format!("--payload-file {}: {error}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<String> = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .take(PAYLOAD_LINES_MAX)
            .map(|line| line.chars().take(wormdb::limits::ENTRY_BODY_BYTES_MAX / 4).collect())
            .collect();
        if lines.is_empty() {
            return Err(format!("--payload-file {}: no non-empty line", path.display()));
        }
        Ok(BodySource::Lines { lines, cursor: 0, body_bytes })
    }
}

/// A small deterministic generator (xorshift64*), so a seed reproduces a pool.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value below `bound` (> 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        self.next_u64() % bound
    }
}

const WORDS: &[&str] = &[
    "INFO",
    "WARN",
    "ERROR",
    "DEBUG",
    "request",
    "served",
    "GET",
    "POST",
    "PUT",
    "/api/v1/items",
    "/index.html",
    "user",
    "session",
    "latency",
    "ms",
    "status",
    "200",
    "404",
    "503",
    "connection",
    "closed",
    "from",
    "to",
    "block",
    "replica",
    "node",
    "cache",
    "miss",
    "hit",
    "retry",
    "timeout",
    "upstream",
    "db",
    "query",
    "rows",
    "took",
    "worker",
    "started",
    "finished",
    "job",
    "queue",
    "depth",
    "bytes",
    "sent",
    "received",
    "peer",
    "handshake",
];

/// Appends synthetic log text of exactly `bytes` ASCII bytes.
pub fn synthetic_body(rng: &mut Rng, bytes: usize, out: &mut String) {
    let start = out.len();
    while out.len() - start < bytes {
        if out.len() > start {
            out.push(' ');
        }
        match rng.below(6) {
            0 => out.push_str(&format!("{:08x}", rng.next_u64() as u32)),
            1 => out.push_str(&format!("{}", rng.below(100_000))),
            2 => out.push_str(&format!(
                "10.{}.{}.{}:{}",
                rng.below(256),
                rng.below(256),
                rng.below(256),
                rng.below(65536)
            )),
            _ => out.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]),
        }
    }
    out.truncate(start + bytes);
}

/// What to build.
#[derive(Clone, Debug)]
pub struct PoolSpec {
    /// Wire encoding.
    pub encoding: Encoding,
    /// Entries per request.
    pub batch: usize,
    /// Tags per entry.
    pub tag_count: usize,
    /// Distinct values per tag.
    pub tag_cardinality: u64,
    /// Requests in the pool (`None`: about [`POOL_BYTES_TARGET`] worth).
    pub requests: Option<usize>,
    /// Seed of the generator.
    pub seed: u64,
    /// Time of the first entry, Unix ns, for the protocols whose entries
    /// carry one (OTLP, Loki, bulk, syslog); each next entry of the pool is
    /// 1 µs later, so every entry's time is distinct and known to lie in
    /// `base_unix_ns..` the pool's end.
    pub base_unix_ns: i64,
}

/// Time between consecutive entries of the pool (syslog's timestamps
/// carry microseconds at most).
pub const ENTRY_TIME_STEP_NS: i64 = 1000;

/// Builds the pool. Fails with a clear message when a request would exceed
/// what the node accepts.
pub fn build(spec: &PoolSpec, source: &mut BodySource) -> Result<Pool, String> {
    let mut rng = Rng::new(spec.seed);
    let tag_keys: Vec<String> = (0..spec.tag_count).map(|index| format!("t{index}")).collect();
    let mut requests: Vec<PooledRequest> = Vec::new();
    let mut body_bytes_total = 0u64;
    let mut wire_bytes_total = 0u64;
    let mut wanted = spec.requests.unwrap_or(POOL_REQUESTS_MAX).clamp(1, POOL_REQUESTS_MAX);
    let mut body = String::new();
    let mut index = 0;
    while index < wanted {
        let mut entries = Vec::with_capacity(spec.batch);
        for _ in 0..spec.batch {
            body.clear();
            match source {
                BodySource::Lines { lines, cursor, body_bytes } => {
                    let wanted = body_bytes.unwrap_or(0);
                    loop {
                        if !body.is_empty() {
                            body.push(' ');
                        }
                        body.push_str(&lines[*cursor % lines.len()]);
                        *cursor = (*cursor + 1) % lines.len();
                        if body.len() >= wanted {
                            break;
                        }
                    }
                    if let Some(wanted) = body_bytes {
                        let mut cut = (*wanted).min(body.len());
                        while !body.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        body.truncate(cut);
                    }
                }
                BodySource::Synthetic { body_bytes } => synthetic_body(&mut rng, *body_bytes, &mut body),
            }
            let tags: BTreeMap<String, String> = tag_keys
                .iter()
                .map(|key| (key.clone(), format!("v{}", rng.below(spec.tag_cardinality.max(1)))))
                .collect();
            body_bytes_total += body.len() as u64;
            entries.push((tags, body.clone()));
        }
        let first_ns = spec.base_unix_ns + (index * spec.batch) as i64 * ENTRY_TIME_STEP_NS;
        let request = encode_request(spec.encoding, &entries, first_ns)?;
        wire_bytes_total += request.wire.len() as u64;
        if index == 0 && spec.requests.is_none() {
            wanted = (POOL_BYTES_TARGET / request.wire.len().max(1)).clamp(1, POOL_REQUESTS_MAX);
        }
        requests.push(request);
        index += 1;
    }
    let entries_total = (requests.len() * spec.batch) as f64;
    Ok(Pool {
        entries_per_request: spec.batch,
        body_bytes_mean: body_bytes_total as f64 / entries_total,
        request_bytes_mean: wire_bytes_total as f64 / requests.len() as f64,
        requests,
    })
}

/// An entry of the pool: its tags and body.
type PoolEntry = (BTreeMap<String, String>, String);

fn encode_request(encoding: Encoding, entries: &[PoolEntry], first_ns: i64) -> Result<PooledRequest, String> {
    let mut entry_ends = Vec::new();
    let time_of = |index: usize| first_ns + index as i64 * ENTRY_TIME_STEP_NS;
    let wire = match encoding {
        Encoding::OtlpGrpc => {
            let mut out = BytesMut::new();
            frame::encode_message(&otlp_request(entries, first_ns), &mut out);
            out.freeze()
        }
        Encoding::OtlpProtobuf => Bytes::from(otlp_request(entries, first_ns).encode_to_vec()),
        Encoding::LokiSnappy => {
            let request = loki_request(entries, first_ns);
            let compressed = snap::raw::Encoder::new()
                .compress_vec(&request.encode_to_vec())
                .map_err(|error| format!("snappy: {error}"))?;
            Bytes::from(compressed)
        }
        Encoding::EsBulk => {
            let mut out = Vec::new();
            for (index, (tags, body)) in entries.iter().enumerate() {
                out.extend_from_slice(format!("{{\"create\":{{\"_index\":\"{ES_INDEX}\"}}}}\n").as_bytes());
                let mut document = serde_json::Map::new();
                document.insert("@timestamp".into(), rfc3339_micros(time_of(index)).into());
                document.insert("message".into(), body.as_str().into());
                for (key, value) in tags {
                    document.insert(key.clone(), value.as_str().into());
                }
                serde_json::to_writer(&mut out, &document).map_err(|error| format!("encoding a document: {error}"))?;
                out.push(b'\n');
            }
            Bytes::from(out)
        }
        Encoding::Syslog => {
            let mut out = Vec::new();
            for (index, (tags, body)) in entries.iter().enumerate() {
                let message = syslog_message(tags, body, time_of(index));
                out.extend_from_slice(format!("{} ", message.len()).as_bytes());
                out.extend_from_slice(message.as_bytes());
            }
            Bytes::from(out)
        }
        Encoding::Ndjson => {
            let mut out = Vec::new();
            for (tags, body) in entries {
                let line = serde_json::json!({ "tags": tags, "body": body });
                serde_json::to_writer(&mut out, &line).map_err(|error| format!("encoding NDJSON: {error}"))?;
                out.push(b'\n');
            }
            Bytes::from(out)
        }
        Encoding::WriteRequest => {
            let request = WriteRequest {
                entries: entries
                    .iter()
                    .map(|(tags, body)| LogEntry {
                        tags: tags.clone(),
                        body: Bytes::copy_from_slice(body.as_bytes()),
                        ..LogEntry::default()
                    })
                    .collect(),
            };
            let mut out = BytesMut::new();
            frame::encode_message(&request, &mut out);
            out.freeze()
        }
        Encoding::PushEntries => {
            let mut out = BytesMut::new();
            for (tags, body) in entries {
                // seq, timestamp, node and shard are 0, so prost writes only
                // fields 3 (tags) and 4 (body).
                let entry = LogEntry {
                    tags: tags.clone(),
                    body: Bytes::copy_from_slice(body.as_bytes()),
                    ..LogEntry::default()
                };
                entry.encode(&mut out).map_err(|error| format!("encoding LogEntry: {error}"))?;
                entry_ends.push(u32::try_from(out.len()).map_err(|_| "request over 4 GiB".to_string())?);
            }
            out.freeze()
        }
    };
    if wire.len() > REQUEST_BYTES_MAX {
        return Err(format!(
            "one request of {} entries encodes to {} bytes, over the node's {} byte limit: lower --batch or --body-bytes",
            entries.len(),
            wire.len(),
            REQUEST_BYTES_MAX
        ));
    }
    let (tags, body) = entries.last().ok_or("a request needs at least one entry")?;
    Ok(PooledRequest {
        wire,
        entry_ends,
        last_body: body.clone(),
        last_tag: tags.iter().next().map(|(key, value)| (key.clone(), value.clone())),
    })
}

/// The OTLP request of `entries`: one resource (`service.name` =
/// [`OTLP_SERVICE_NAME`]) and scope, a record per entry with its body as a
/// string, its tags as attributes and its time.
pub fn otlp_request(entries: &[PoolEntry], first_ns: i64) -> ExportLogsServiceRequest {
    let string = |text: &str| AnyValue { value: Some(any_value::Value::StringValue(text.to_string())) };
    let records = entries
        .iter()
        .enumerate()
        .map(|(index, (tags, body))| LogRecord {
            time_unix_nano: (first_ns + index as i64 * ENTRY_TIME_STEP_NS) as u64,
            body: Some(string(body)),
            attributes: tags
                .iter()
                .map(|(key, value)| KeyValue { key: key.clone(), value: Some(string(value)), ..KeyValue::default() })
                .collect(),
            ..LogRecord::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(string(OTLP_SERVICE_NAME)),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope { name: OTLP_SERVICE_NAME.into(), ..InstrumentationScope::default() }),
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

/// The Loki request of `entries`: a stream per distinct tag set (labels in
/// Prometheus text form), its entries in the order given.
pub fn loki_request(entries: &[PoolEntry], first_ns: i64) -> PushRequest {
    let mut streams: BTreeMap<&BTreeMap<String, String>, Vec<EntryAdapter>> = BTreeMap::new();
    for (index, (tags, body)) in entries.iter().enumerate() {
        let ns = first_ns + index as i64 * ENTRY_TIME_STEP_NS;
        streams.entry(tags).or_default().push(EntryAdapter {
            timestamp: Some(prost_types_timestamp(ns)),
            line: body.clone(),
            structured_metadata: Vec::new(),
        });
    }
    PushRequest {
        streams: streams
            .into_iter()
            .map(|(tags, entries)| StreamAdapter { labels: prometheus_labels(tags), entries, hash: 0 })
            .collect(),
    }
}

fn prost_types_timestamp(ns: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ns.div_euclid(1_000_000_000), nanos: ns.rem_euclid(1_000_000_000) as i32 }
}

/// `{k="v", k2="v2"}`, values quoted as Go's `strconv.Quote` does for text.
pub fn prometheus_labels(tags: &BTreeMap<String, String>) -> String {
    let mut out = String::from("{");
    for (index, (key, value)) in tags.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        out.push_str(key);
        out.push_str("=\"");
        for character in value.chars() {
            match character {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                other => out.push(other),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// One RFC 5424 message (without its octet count): facility local0,
/// severity info, host `loadgen`, app `wormdb-loadgen`, the tags as
/// structured data [`SYSLOG_SD_ID`], the body as the message.
pub fn syslog_message(tags: &BTreeMap<String, String>, body: &str, ns: i64) -> String {
    let mut structured = String::new();
    if tags.is_empty() {
        structured.push('-');
    } else {
        structured.push('[');
        structured.push_str(SYSLOG_SD_ID);
        for (key, value) in tags {
            structured.push_str(&format!(" {key}=\""));
            for character in value.chars() {
                if matches!(character, '"' | '\\' | ']') {
                    structured.push('\\');
                }
                structured.push(character);
            }
            structured.push('"');
        }
        structured.push(']');
    }
    format!("<134>1 {} loadgen wormdb-loadgen - - {structured} {body}", rfc3339_micros(ns))
}

/// `ns` since the epoch as RFC 3339 in UTC with microseconds,
/// `2023-11-14T22:13:20.000001Z`.
pub fn rfc3339_micros(ns: i64) -> String {
    let seconds = ns.div_euclid(1_000_000_000);
    let micros = ns.rem_euclid(1_000_000_000) / 1000;
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Appends a gRPC-framed `PushBatch` of `request`'s entries with seqs
/// `first_seq..` and timestamp `timestamp_ns` to `out`; returns the last seq.
pub fn encode_push(
    out: &mut BytesMut,
    follower_id: u32,
    shard: u32,
    first_seq: u64,
    timestamp_ns: i64,
    request: &PooledRequest,
) -> u64 {
    use prost::encoding::{encode_varint, encoded_len_varint};
    assert!(!request.entry_ends.is_empty(), "a push pool request has per-entry offsets");
    let start = out.len();
    out.put_bytes(0, frame::PREFIX_BYTES);
    out.put_u8(0x08);
    encode_varint(u64::from(follower_id), out);
    out.put_u8(0x10);
    encode_varint(u64::from(shard), out);
    let mut entry_start = 0usize;
    let mut seq = first_seq;
    for &entry_end in &request.entry_ends {
        let rest = &request.wire[entry_start..entry_end as usize];
        entry_start = entry_end as usize;
        let entry_len = 1 + encoded_len_varint(seq) + 1 + encoded_len_varint(timestamp_ns as u64) + rest.len();
        out.put_u8(0x1a);
        encode_varint(entry_len as u64, out);
        out.put_u8(0x08);
        encode_varint(seq, out);
        out.put_u8(0x10);
        encode_varint(timestamp_ns as u64, out);
        out.put_slice(rest);
        seq += 1;
    }
    let message_len = out.len() - start - frame::PREFIX_BYTES;
    out[start..start + frame::PREFIX_BYTES].copy_from_slice(&frame::prefix(message_len));
    seq - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use wormdb::proto::PushBatch;

    const BASE_NS: i64 = 1_700_000_000_000_000_000;

    fn spec(encoding: Encoding) -> PoolSpec {
        PoolSpec {
            encoding,
            batch: 5,
            tag_count: 2,
            tag_cardinality: 10,
            requests: Some(4),
            seed: 7,
            base_unix_ns: BASE_NS,
        }
    }

    #[test]
    fn synthetic_bodies_are_varied_text_of_the_asked_size() {
        let mut rng = Rng::new(1);
        let mut bodies = std::collections::HashSet::new();
        for _ in 0..100 {
            let mut body = String::new();
            synthetic_body(&mut rng, 200, &mut body);
            assert_eq!(body.len(), 200);
            assert!(body.contains(' '));
            let distinct: std::collections::HashSet<char> = body.chars().collect();
            assert!(distinct.len() > 10, "not a repeated character: {body}");
            bodies.insert(body);
        }
        assert_eq!(bodies.len(), 100);
    }

    #[test]
    fn ndjson_pool_parses_back() {
        let pool = build(&spec(Encoding::Ndjson), &mut BodySource::Synthetic { body_bytes: 50 }).unwrap();
        assert_eq!(pool.requests.len(), 4);
        for request in &pool.requests {
            let lines: Vec<serde_json::Value> = std::str::from_utf8(&request.wire)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            assert_eq!(lines.len(), 5);
            assert_eq!(lines[4]["body"], request.last_body.as_str());
            assert_eq!(lines[0]["tags"].as_object().unwrap().len(), 2);
        }
        assert_ne!(pool.requests[0].wire, pool.requests[1].wire);
    }

    #[test]
    fn write_request_pool_decodes() {
        let pool = build(&spec(Encoding::WriteRequest), &mut BodySource::Synthetic { body_bytes: 30 }).unwrap();
        let wire = &pool.requests[2].wire;
        let request = WriteRequest::decode(&wire[frame::PREFIX_BYTES..]).unwrap();
        assert_eq!(request.entries.len(), 5);
        assert_eq!(request.entries[4].body, pool.requests[2].last_body.as_bytes());
    }

    #[test]
    fn push_batches_carry_dense_seqs() {
        let pool = build(&spec(Encoding::PushEntries), &mut BodySource::Synthetic { body_bytes: 30 }).unwrap();
        let mut out = BytesMut::new();
        let last = encode_push(&mut out, 9, 3, 300, 1_700_000_000_000_000_000, &pool.requests[1]);
        assert_eq!(last, 304);
        let batch = PushBatch::decode(&out[frame::PREFIX_BYTES..]).unwrap();
        assert_eq!(&out[..frame::PREFIX_BYTES], &frame::prefix(out.len() - frame::PREFIX_BYTES));
        assert_eq!((batch.follower_id, batch.shard), (9, 3));
        let seqs: Vec<u64> = batch.entries.iter().map(|entry| entry.seq).collect();
        assert_eq!(seqs, vec![300, 301, 302, 303, 304]);
        assert_eq!(batch.entries[4].body, pool.requests[1].last_body.as_bytes());
        assert_eq!(batch.entries[0].timestamp_ns, 1_700_000_000_000_000_000);
        assert_eq!(batch.entries[0].tags.len(), 2);
    }

    #[test]
    fn payload_lines_are_replayed_in_order() {
        let mut source = BodySource::Lines {
            lines: vec!["a b".into(), "c \"d\"".into(), "e\\f".into()],
            cursor: 0,
            body_bytes: None,
        };
        let mut spec = spec(Encoding::Ndjson);
        spec.batch = 2;
        let pool = build(&spec, &mut source).unwrap();
        assert_eq!(pool.requests[0].last_body, "c \"d\"");
        assert_eq!(pool.requests[1].last_body, "a b");
    }

    #[test]
    fn payload_lines_are_joined_and_cut_to_the_body_size() {
        let lines = vec!["alpha".to_string(), "béta".to_string(), "gamma delta".to_string()];
        let mut source = BodySource::Lines { lines, cursor: 0, body_bytes: Some(9) };
        let mut spec = spec(Encoding::Ndjson);
        spec.batch = 1;
        let pool = build(&spec, &mut source).unwrap();
        // "alpha béta" is 11 bytes: cut to 9 at a char boundary ("é" is 2 bytes).
        assert_eq!(pool.requests[0].last_body, "alpha bé");
        assert_eq!(pool.requests[1].last_body, "gamma del");
    }

    #[test]
    fn oversized_requests_are_refused() {
        let mut spec = spec(Encoding::Ndjson);
        spec.batch = 20;
        let error = build(&spec, &mut BodySource::Synthetic { body_bytes: 1024 * 1024 }).unwrap_err();
        assert!(error.contains("lower --batch"), "{error}");
    }

    fn hdfs_source() -> BodySource {
        let lines = [
            "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating",
            "081109 203807 222 INFO dfs.DataNode$PacketResponder: Received block blk_-6952295868487656571 of size 67108864",
            "081109 204005 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap \"updated\" [10.251.73.220]",
        ];
        BodySource::Lines { lines: lines.iter().map(|line| line.to_string()).collect(), cursor: 0, body_bytes: None }
    }

    #[test]
    fn otlp_pools_decode_as_the_node_reads_them() {
        let pool = build(&spec(Encoding::OtlpGrpc), &mut hdfs_source()).unwrap();
        let plain = build(&spec(Encoding::OtlpProtobuf), &mut hdfs_source()).unwrap();
        for (index, request) in pool.requests.iter().enumerate() {
            assert_eq!(
                &request.wire[frame::PREFIX_BYTES..],
                &plain.requests[index].wire[..],
                "the same request, framed"
            );
            let decoded = ExportLogsServiceRequest::decode(&request.wire[frame::PREFIX_BYTES..]).unwrap();
            let resource = &decoded.resource_logs[0];
            let service = &resource.resource.as_ref().unwrap().attributes[0];
            assert_eq!(service.key, "service.name");
            let records = &resource.scope_logs[0].log_records;
            assert_eq!(records.len(), 5);
            for (position, record) in records.iter().enumerate() {
                let expected = (BASE_NS + ((index * 5 + position) as i64) * ENTRY_TIME_STEP_NS) as u64;
                assert_eq!(record.time_unix_nano, expected);
                assert_eq!(record.attributes.len(), 2);
            }
            let last = records[4].body.as_ref().unwrap().value.as_ref().unwrap();
            assert_eq!(last, &any_value::Value::StringValue(request.last_body.clone()));
            let (key, value) = request.last_tag.clone().unwrap();
            assert_eq!(records[4].attributes[0].key, key);
            assert_eq!(
                records[4].attributes[0].value.as_ref().unwrap().value,
                Some(any_value::Value::StringValue(value))
            );
        }
    }

    #[test]
    fn loki_pools_decode_with_the_nodes_own_decoder() {
        let pool = build(&spec(Encoding::LokiSnappy), &mut hdfs_source()).unwrap();
        for (index, request) in pool.requests.iter().enumerate() {
            let entries = wormdb::ingest::loki::decode_protobuf(&request.wire, 1 << 20, 0).unwrap().into_log_entries();
            assert_eq!(entries.len(), 5);
            let mut times: Vec<i64> = entries.iter().map(|entry| entry.timestamp_ns).collect();
            times.sort_unstable();
            let first = BASE_NS + (index * 5) as i64 * ENTRY_TIME_STEP_NS;
            assert_eq!(times, (0..5).map(|step| first + step * ENTRY_TIME_STEP_NS).collect::<Vec<_>>());
            let last = entries.iter().find(|entry| entry.timestamp_ns == first + 4 * ENTRY_TIME_STEP_NS).unwrap();
            assert_eq!(last.body, request.last_body.as_bytes());
            let (key, value) = request.last_tag.clone().unwrap();
            assert_eq!(last.tags.get(&key), Some(&value));
            assert_eq!(last.tags.len(), 2);
        }
        let tags: BTreeMap<String, String> =
            [("a".to_string(), "x \"q\" \\ y\nz".to_string()), ("b".to_string(), String::new())].into();
        assert_eq!(wormdb::ingest::loki::parse_labels(&prometheus_labels(&tags)).unwrap(), tags);
    }

    #[test]
    fn bulk_pools_pair_an_action_with_each_document() {
        let pool = build(&spec(Encoding::EsBulk), &mut hdfs_source()).unwrap();
        let request = &pool.requests[1];
        let lines: Vec<serde_json::Value> = std::str::from_utf8(&request.wire)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 10);
        for pair in lines.chunks(2) {
            assert_eq!(pair[0], serde_json::json!({ "create": { "_index": "loadgen" } }));
            assert!(pair[1]["message"].is_string() && pair[1]["@timestamp"].is_string());
            assert!(pair[1]["t0"].is_string() && pair[1]["t1"].is_string());
        }
        assert_eq!(lines[9]["message"], request.last_body.as_str());
        assert_eq!(lines[1]["@timestamp"], rfc3339_micros(BASE_NS + 5 * ENTRY_TIME_STEP_NS));
    }

    #[test]
    fn syslog_pools_are_octet_counted_rfc5424() {
        let pool = build(&spec(Encoding::Syslog), &mut hdfs_source()).unwrap();
        let wire = &pool.requests[0].wire;
        let mut messages = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let space = at + wire[at..].iter().position(|byte| *byte == b' ').unwrap();
            let length: usize = std::str::from_utf8(&wire[at..space]).unwrap().parse().unwrap();
            messages.push(std::str::from_utf8(&wire[space + 1..space + 1 + length]).unwrap().to_string());
            at = space + 1 + length;
        }
        assert_eq!(messages.len(), 5);
        let last = &messages[4];
        assert!(
            last.starts_with("<134>1 2023-11-14T22:13:20.000004Z loadgen wormdb-loadgen - - [tags@32473 t0=\""),
            "{last}"
        );
        assert!(last.ends_with(&format!("] {}", pool.requests[0].last_body)), "{last}");
        let tags: BTreeMap<String, String> = [("k".to_string(), "a\"b]c\\".to_string())].into();
        assert_eq!(
            syslog_message(&tags, "body", BASE_NS),
            "<134>1 2023-11-14T22:13:20.000000Z loadgen wormdb-loadgen - - [tags@32473 k=\"a\\\"b\\]c\\\\\"] body"
        );
        assert_eq!(
            syslog_message(&BTreeMap::new(), "x", BASE_NS),
            "<134>1 2023-11-14T22:13:20.000000Z loadgen wormdb-loadgen - - - x"
        );
    }

    #[test]
    fn rfc3339_in_utc() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339_micros(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456Z");
        assert_eq!(rfc3339_micros(951_782_400_000_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339_micros(4_102_444_799_999_999_000), "2099-12-31T23:59:59.999999Z");
    }
}
