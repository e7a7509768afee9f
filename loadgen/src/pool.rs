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
}

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
}

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
        let request = encode_request(spec.encoding, &entries)?;
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

fn encode_request(encoding: Encoding, entries: &[(BTreeMap<String, String>, String)]) -> Result<PooledRequest, String> {
    let mut entry_ends = Vec::new();
    let wire = match encoding {
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

    fn spec(encoding: Encoding) -> PoolSpec {
        PoolSpec { encoding, batch: 5, tag_count: 2, tag_cardinality: 10, requests: Some(4), seed: 7 }
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
}
