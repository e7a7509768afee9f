//! Loki's push request (DESIGN.md section 11), decoded into entries:
//! `POST /loki/api/v1/push` as Promtail, Grafana Alloy, Vector, Fluent Bit
//! and the Loki client libraries send it.
//!
//! Two forms, told apart by the content type ([`is_json`]):
//!
//! - JSON: `{"streams":[{"stream":{"job":"api"},"values":[["<ns>","line",
//!   {"trace_id":"..."}]]}]}` (the third element, structured metadata, is
//!   optional; the timestamp is nanoseconds since the epoch as a string, as
//!   Loki writes it, or as an integer);
//! - protobuf `logproto.PushRequest` compressed with raw (block) snappy,
//!   whose stream labels are one string in Prometheus text form,
//!   `{job="api", host="a"}` ([`parse_labels`]).
//!
//! Mapping, the same for both: a stream's labels become the entry's tags,
//! structured metadata becomes its fields, the line its body, the timestamp
//! its time (absent or zero: `now_ns`).
//!
//! A snappy block starts with the length it inflates to. That length is
//! read and checked against the caller's limit ([`snappy_len`]) before a
//! byte is inflated, so a small body cannot claim gigabytes; a header that
//! lies (more or fewer bytes than the data holds) fails the decompression.
//! Everything is refused as a whole: one bad stream, label or timestamp
//! and no entry of the request is returned.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::streams::{Stream, StreamEntry, Streams};
use crate::limits::HTTP_ENTRIES_PER_REQUEST_MAX;
use crate::proto::logproto::PushRequest;
use crate::proto::LogEntry;

/// Why a push request was refused. [`LokiError::is_too_large`] tells the
/// refusals over a size limit (HTTP 413) from bad data (HTTP 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LokiError {
    /// The JSON body does not parse as a push request.
    #[error("bad JSON push request: {0}")]
    Json(String),
    /// The snappy block is corrupt, truncated or lies about its length.
    #[error("bad snappy body: {0}")]
    Snappy(String),
    /// The snappy header declares more bytes than the limit.
    #[error("the snappy body declares {declared} bytes inflated, over the {limit}-byte limit (--max-body-bytes)")]
    SnappyTooLarge {
        /// What the header says.
        declared: usize,
        /// The limit.
        limit: usize,
    },
    /// The inflated bytes are not a `logproto.PushRequest`.
    #[error("bad protobuf PushRequest: {0}")]
    Protobuf(String),
    /// A stream's labels are not `{name="value", ...}`.
    #[error("stream {stream}: bad labels {text:?}: {reason}")]
    Labels {
        /// The stream's 1-based position in the request.
        stream: usize,
        /// The labels as sent (cut to a readable length).
        text: String,
        /// What is wrong.
        reason: LabelError,
    },
    /// An entry is wrong (its timestamp or structured metadata).
    #[error("stream {stream}, entry {entry}: {reason}")]
    Entry {
        /// The stream's 1-based position.
        stream: usize,
        /// The entry's 1-based position in its stream.
        entry: usize,
        /// What is wrong.
        reason: String,
    },
    /// More entries than one request may carry.
    #[error("more than {limit} entries in one push request (HTTP_ENTRIES_PER_REQUEST_MAX)")]
    TooManyEntries {
        /// The limit.
        limit: usize,
    },
}

impl LokiError {
    /// Whether the request is over a size or count limit (HTTP 413) rather
    /// than malformed (HTTP 400).
    pub fn is_too_large(&self) -> bool {
        matches!(self, LokiError::SnappyTooLarge { .. } | LokiError::TooManyEntries { .. })
    }
}

/// Why a label string is not in Prometheus text form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelError {
    /// Something else where the grammar wants `expected`.
    #[error("expected {expected} at byte {at}")]
    Expected {
        /// What the grammar wants.
        expected: &'static str,
        /// The 0-based byte offset.
        at: usize,
    },
    /// A value's escape is not one of Go's (`\"`, `\\`, `\n`, `\t`, `\x41`, `\u00e9`, ...).
    #[error("unknown escape \\{escape} at byte {at}")]
    Escape {
        /// The character after the backslash.
        escape: char,
        /// The 0-based byte offset of the backslash.
        at: usize,
    },
    /// A value has no closing quote.
    #[error("unterminated value starting at byte {at}")]
    Unterminated {
        /// The 0-based byte offset of its opening quote.
        at: usize,
    },
    /// The same name twice.
    #[error("label {0:?} appears twice")]
    Duplicate(String),
    /// Text after the closing brace.
    #[error("unexpected text after the closing brace at byte {at}")]
    Trailing {
        /// The 0-based byte offset.
        at: usize,
    },
}

/// Whether a body with this `Content-Type` is the JSON form (exactly
/// `application/json`, parameters aside); anything else, or none, is
/// snappy protobuf, as Loki decides.
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Longest label text quoted back in an error.
const LABELS_QUOTED_BYTES_MAX: usize = 200;

/// Parses stream labels in Prometheus text form: `{}` or
/// `{name="value", name2="value 2"}`, names `[a-zA-Z_][a-zA-Z0-9_]*`,
/// values double-quoted with Go's escapes (`\"`, `\\`, `\n`, `\t`, `\uXXXX`, ...);
/// spaces around the tokens and one trailing comma are allowed. Anything
/// else is refused, never guessed at.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, LabelError> {
    let bytes = text.as_bytes();
    let mut at = skip_spaces(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return Err(LabelError::Expected { expected: "'{'", at });
    }
    at = skip_spaces(bytes, at + 1);
    let mut labels = BTreeMap::new();
    loop {
        if bytes.get(at) == Some(&b'}') {
            at += 1;
            break;
        }
        let name_start = at;
        while bytes.get(at).is_some_and(|&byte| byte == b'_' || byte.is_ascii_alphanumeric()) {
            at += 1;
        }
        if at == name_start || bytes[name_start].is_ascii_digit() {
            return Err(LabelError::Expected { expected: "a label name or '}'", at: name_start });
        }
        let name = &text[name_start..at];
        at = skip_spaces(bytes, at);
        if bytes.get(at) != Some(&b'=') {
            return Err(LabelError::Expected { expected: "'='", at });
        }
        at = skip_spaces(bytes, at + 1);
        let (value, next) = parse_quoted(text, at)?;
        if labels.insert(name.to_string(), value).is_some() {
            return Err(LabelError::Duplicate(name.to_string()));
        }
        at = skip_spaces(bytes, next);
        match bytes.get(at) {
            Some(b',') => at = skip_spaces(bytes, at + 1),
            Some(b'}') => {}
            _ => return Err(LabelError::Expected { expected: "',' or '}'", at }),
        }
    }
    let end = skip_spaces(bytes, at);
    if end != bytes.len() {
        return Err(LabelError::Trailing { at: end });
    }
    Ok(labels)
}

fn skip_spaces(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(|byte| matches!(byte, b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The value of the double-quoted string at `start`, and the offset after
/// its closing quote.
fn parse_quoted(text: &str, start: usize) -> Result<(String, usize), LabelError> {
    let bytes = text.as_bytes();
    if bytes.get(start) != Some(&b'"') {
        return Err(LabelError::Expected { expected: "'\"'", at: start });
    }
    let mut value = String::new();
    let mut at = start + 1;
    loop {
        // Copy the run up to the next quote or backslash whole: both are
        // ASCII, so the run ends on a character boundary.
        let run = bytes[at.min(bytes.len())..].iter().position(|&byte| byte == b'"' || byte == b'\\');
        let Some(run) = run else {
            return Err(LabelError::Unterminated { at: start });
        };
        value.push_str(&text[at..at + run]);
        at += run;
        if bytes[at] == b'"' {
            return Ok((value, at + 1));
        }
        let escape = text[at + 1..].chars().next().ok_or(LabelError::Unterminated { at: start })?;
        let (character, used) =
            unescape(escape, &text[at + 1 + escape.len_utf8()..]).ok_or(LabelError::Escape { escape, at })?;
        value.push(character);
        at += 1 + escape.len_utf8() + used;
    }
}

/// The character an escape stands for, as Go's `strconv.Quote` writes them
/// (Promtail and Alloy format labels with it), and how many bytes of
/// `rest` (after the escape letter) it used. Byte escapes (`\x`, octal)
/// must be ASCII: a label value is UTF-8.
fn unescape(escape: char, rest: &str) -> Option<(char, usize)> {
    let hex = |digits: usize| -> Option<(char, usize)> {
        let text = rest.get(..digits).filter(|text| text.bytes().all(|byte| byte.is_ascii_hexdigit()))?;
        let code = u32::from_str_radix(text, 16).ok()?;
        Some((char::from_u32(code)?, digits))
    };
    let simple = match escape {
        '"' => '"',
        '\\' => '\\',
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        'a' => '\u{7}',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'v' => '\u{b}',
        'x' => return hex(2).filter(|(character, _)| character.is_ascii()),
        'u' => return hex(4),
        'U' => return hex(8),
        '0'..='7' => {
            let digits = rest.get(..2).filter(|text| text.bytes().all(|byte| (b'0'..=b'7').contains(&byte)))?;
            let code = u32::from_str_radix(&format!("{escape}{digits}"), 8).ok()?;
            return char::from_u32(code).filter(char::is_ascii).map(|character| (character, 2));
        }
        _ => return None,
    };
    Some((simple, 0))
}

/// The length a raw snappy block declares it inflates to (its leading
/// varint), read without inflating anything.
pub fn snappy_len(body: &[u8]) -> Result<usize, LokiError> {
    snap::raw::decompress_len(body).map_err(|error| LokiError::Snappy(error.to_string()))
}

/// Decodes a snappy-compressed protobuf push request: the declared length
/// is checked against `limit` first, then the block inflated (and checked
/// to hold exactly that many bytes), then the `PushRequest` decoded. Each
/// stream's labels are parsed once and shared by its entries ([`Streams`]).
pub fn decode_protobuf(body: &[u8], limit: usize, now_ns: i64) -> Result<Streams, LokiError> {
    let declared = snappy_len(body)?;
    if declared > limit {
        return Err(LokiError::SnappyTooLarge { declared, limit });
    }
    let inflated =
        snap::raw::Decoder::new().decompress_vec(body).map_err(|error| LokiError::Snappy(error.to_string()))?;
    let request: PushRequest =
        prost::Message::decode(inflated.as_slice()).map_err(|error| LokiError::Protobuf(error.to_string()))?;
    let total: usize = request.streams.iter().map(|stream| stream.entries.len()).sum();
    if total > HTTP_ENTRIES_PER_REQUEST_MAX {
        return Err(LokiError::TooManyEntries { limit: HTTP_ENTRIES_PER_REQUEST_MAX });
    }
    let mut streams = Vec::with_capacity(request.streams.len());
    for (stream_index, stream) in request.streams.into_iter().enumerate() {
        let tags = parse_labels(&stream.labels).map_err(|reason| LokiError::Labels {
            stream: stream_index + 1,
            text: quoted(&stream.labels),
            reason,
        })?;
        let mut entries = Vec::with_capacity(stream.entries.len());
        for (entry_index, entry) in stream.entries.into_iter().enumerate() {
            let fail = |reason: String| LokiError::Entry { stream: stream_index + 1, entry: entry_index + 1, reason };
            let timestamp_ns = match entry.timestamp {
                None => now_ns,
                Some(timestamp) => timestamp_ns(timestamp.seconds, timestamp.nanos).map_err(fail)?,
            };
            let mut fields: Vec<(String, String)> = Vec::with_capacity(entry.structured_metadata.len());
            for pair in entry.structured_metadata {
                if fields.iter().any(|(name, _)| *name == pair.name) {
                    return Err(fail(format!("structured metadata {:?} appears twice", pair.name)));
                }
                fields.push((pair.name, pair.value));
            }
            entries.push(StreamEntry {
                timestamp_ns: if timestamp_ns == 0 { now_ns } else { timestamp_ns },
                body: Bytes::from(entry.line.into_bytes()),
                fields,
            });
        }
        streams.push(Stream { tags: tags.into_iter().collect(), entries });
    }
    Ok(Streams { streams })
}

/// Nanoseconds since the epoch of a protobuf `Timestamp`.
fn timestamp_ns(seconds: i64, nanos: i32) -> Result<i64, String> {
    if !(0..1_000_000_000).contains(&nanos) {
        return Err(format!("timestamp nanos {nanos} is outside 0..1e9"));
    }
    seconds
        .checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(i64::from(nanos)))
        .filter(|ns| *ns >= 0)
        .ok_or_else(|| format!("timestamp {seconds} s is outside 1970..2262"))
}

fn quoted(text: &str) -> String {
    let mut cut = text.len().min(LABELS_QUOTED_BYTES_MAX);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_string()
}

/// Decodes the JSON form (already inflated from gzip, if it was).
pub fn decode_json(body: &[u8], now_ns: i64) -> Result<Vec<LogEntry>, LokiError> {
    let request: JsonPush = serde_json::from_slice(body).map_err(|error| LokiError::Json(error.to_string()))?;
    let total: usize = request.streams.iter().map(|stream| stream.values.len()).sum();
    if total > HTTP_ENTRIES_PER_REQUEST_MAX {
        return Err(LokiError::TooManyEntries { limit: HTTP_ENTRIES_PER_REQUEST_MAX });
    }
    let mut entries = Vec::with_capacity(total);
    for (stream_index, stream) in request.streams.into_iter().enumerate() {
        for (entry_index, value) in stream.values.into_iter().enumerate() {
            let timestamp_ns = value.timestamp.parse().map_err(|reason| LokiError::Entry {
                stream: stream_index + 1,
                entry: entry_index + 1,
                reason,
            })?;
            entries.push(LogEntry {
                timestamp_ns: if timestamp_ns == 0 { now_ns } else { timestamp_ns },
                tags: stream.stream.clone(),
                body: Bytes::from(value.line.into_bytes()),
                fields: value.metadata,
                ..LogEntry::default()
            });
        }
    }
    Ok(entries)
}

#[derive(Deserialize)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    /// Loki refuses a stream without labels; wormdb takes it untagged.
    #[serde(default)]
    stream: BTreeMap<String, String>,
    values: Vec<JsonValue>,
}

/// One `[timestamp, line, metadata?]` array.
struct JsonValue {
    timestamp: JsonTimestamp,
    line: String,
    metadata: BTreeMap<String, String>,
}

/// A timestamp as sent: a string of digits (Loki's form) or an integer.
enum JsonTimestamp {
    Text(String),
    Integer(i64),
}

impl JsonTimestamp {
    fn parse(&self) -> Result<i64, String> {
        let ns = match self {
            JsonTimestamp::Integer(ns) => *ns,
            JsonTimestamp::Text(text) if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) => {
                text.parse::<i64>().map_err(|_| format!("timestamp {text:?} is past 2262"))?
            }
            JsonTimestamp::Text(text) => {
                return Err(format!("timestamp {text:?} is not nanoseconds since the epoch"));
            }
        };
        if ns < 0 {
            return Err(format!("timestamp {ns} is before 1970"));
        }
        Ok(ns)
    }
}

impl<'de> Deserialize<'de> for JsonTimestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;
        impl Visitor<'_> for TimestampVisitor {
            type Value = JsonTimestamp;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a timestamp in nanoseconds (a string of digits or an integer)")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<JsonTimestamp, E> {
                Ok(JsonTimestamp::Text(text.to_string()))
            }
            fn visit_i64<E: de::Error>(self, ns: i64) -> Result<JsonTimestamp, E> {
                Ok(JsonTimestamp::Integer(ns))
            }
            fn visit_u64<E: de::Error>(self, ns: u64) -> Result<JsonTimestamp, E> {
                i64::try_from(ns).map(JsonTimestamp::Integer).map_err(|_| E::custom("timestamp past 2262"))
            }
        }
        deserializer.deserialize_any(TimestampVisitor)
    }
}

impl<'de> Deserialize<'de> for JsonValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = JsonValue;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("an array [\"<ns>\", \"line\"] or [\"<ns>\", \"line\", {structured metadata}]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonValue, A::Error> {
                let timestamp = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let line = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let metadata: Option<Option<Metadata>> = seq.next_element()?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(4, &self));
                }
                Ok(JsonValue { timestamp, line, metadata: metadata.flatten().map(|m| m.0).unwrap_or_default() })
            }
        }
        deserializer.deserialize_seq(ValueVisitor)
    }
}

/// Structured metadata: an object of strings, each name once.
struct Metadata(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetadataVisitor;
        impl<'de> Visitor<'de> for MetadataVisitor {
            type Value = Metadata;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("structured metadata: an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                let mut fields = BTreeMap::new();
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    if fields.contains_key(&name) {
                        return Err(de::Error::custom(format!("structured metadata {name:?} appears twice")));
                    }
                    fields.insert(name, value);
                }
                Ok(Metadata(fields))
            }
        }
        deserializer.deserialize_map(MetadataVisitor)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::logproto::{EntryAdapter, LabelPairAdapter, StreamAdapter};

    const NOW: i64 = 1_700_000_000_123_456_789;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
    }

    fn snappy(bytes: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(bytes).unwrap()
    }

    fn push(streams: Vec<StreamAdapter>) -> Vec<u8> {
        snappy(&PushRequest { streams }.encode_to_vec())
    }

    fn entry(seconds: i64, nanos: i32, line: &str, metadata: &[(&str, &str)]) -> EntryAdapter {
        EntryAdapter {
            timestamp: Some(prost_types::Timestamp { seconds, nanos }),
            line: line.to_string(),
            structured_metadata: metadata
                .iter()
                .map(|(name, value)| LabelPairAdapter { name: name.to_string(), value: value.to_string() })
                .collect(),
        }
    }

    #[test]
    fn labels_in_prometheus_text_form() {
        assert_eq!(parse_labels(r#"{job="api", host="a"}"#).unwrap(), map(&[("job", "api"), ("host", "a")]));
        assert_eq!(parse_labels("{}").unwrap(), map(&[]));
        assert_eq!(parse_labels("  { }  ").unwrap(), map(&[]));
        assert_eq!(parse_labels(r#"{a="1",b="2",}"#).unwrap(), map(&[("a", "1"), ("b", "2")]));
        assert_eq!(
            parse_labels(r#"{ msg = "say \"hi\", \\ back\nnext\tand, = {}" ,_x9="é ü"}"#).unwrap(),
            map(&[("msg", "say \"hi\", \\ back\nnext\tand, = {}"), ("_x9", "é ü")])
        );
        assert_eq!(parse_labels(r#"{a=""}"#).unwrap(), map(&[("a", "")]));
        // Go's strconv.Quote escapes, as Promtail writes labels.
        assert_eq!(parse_labels(r#"{a="\x41\101\u00e9\U0001F600\a\v"}"#).unwrap(), map(&[("a", "AAé😀\u{7}\u{b}")]));
    }

    #[test]
    fn garbage_labels_are_refused() {
        for (text, expected) in [
            ("", LabelError::Expected { expected: "'{'", at: 0 }),
            ("job=\"api\"", LabelError::Expected { expected: "'{'", at: 0 }),
            ("{job=\"api\"", LabelError::Expected { expected: "',' or '}'", at: 10 }),
            ("{job=api}", LabelError::Expected { expected: "'\"'", at: 5 }),
            ("{job\"api\"}", LabelError::Expected { expected: "'='", at: 4 }),
            ("{job=~\"api\"}", LabelError::Expected { expected: "'\"'", at: 5 }),
            ("{9job=\"a\"}", LabelError::Expected { expected: "a label name or '}'", at: 1 }),
            ("{job.name=\"a\"}", LabelError::Expected { expected: "'='", at: 4 }),
            ("{a=\"1\" b=\"2\"}", LabelError::Expected { expected: "',' or '}'", at: 7 }),
            ("{a=\"1\",,}", LabelError::Expected { expected: "a label name or '}'", at: 7 }),
            ("{a=\"x\\qy\"}", LabelError::Escape { escape: 'q', at: 5 }),
            ("{a=\"\\xff\"}", LabelError::Escape { escape: 'x', at: 4 }),
            ("{a=\"\\u12\"}", LabelError::Escape { escape: 'u', at: 4 }),
            ("{a=\"\\x+1\"}", LabelError::Escape { escape: 'x', at: 4 }),
            ("{a=\"\\ud800\"}", LabelError::Escape { escape: 'u', at: 4 }),
            ("{a=\"\\400\"}", LabelError::Escape { escape: '4', at: 4 }),
            ("{a=\"open}", LabelError::Unterminated { at: 3 }),
            ("{a=\"ends in backslash\\", LabelError::Unterminated { at: 3 }),
            ("{a=\"1\",a=\"2\"}", LabelError::Duplicate("a".into())),
            ("{a=\"1\"} x", LabelError::Trailing { at: 8 }),
        ] {
            assert_eq!(parse_labels(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn protobuf_streams_map_to_tags_fields_body_and_time() {
        let body = push(vec![
            StreamAdapter {
                labels: r#"{job="hdfs", host="node-1"}"#.into(),
                entries: vec![
                    entry(1_700_000_001, 5, "081109 203615 148 INFO dfs.DataNode$PacketResponder: ...", &[]),
                    entry(1_700_000_002, 0, "second", &[("trace_id", "abc"), ("user", "7")]),
                ],
                hash: 0,
            },
            StreamAdapter {
                labels: "{}".into(),
                entries: vec![EntryAdapter { timestamp: None, line: "no time".into(), structured_metadata: vec![] }],
                hash: 0,
            },
        ]);
        let entries = decode_protobuf(&body, 1 << 20, NOW).unwrap().into_log_entries();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].timestamp_ns, 1_700_000_001_000_000_005);
        assert_eq!(entries[0].tags, map(&[("job", "hdfs"), ("host", "node-1")]));
        assert_eq!(&entries[0].body[..], b"081109 203615 148 INFO dfs.DataNode$PacketResponder: ...");
        assert!(entries[0].fields.is_empty());
        assert_eq!(entries[1].fields, map(&[("trace_id", "abc"), ("user", "7")]));
        assert_eq!(entries[1].timestamp_ns, 1_700_000_002_000_000_000);
        assert_eq!(entries[2].timestamp_ns, NOW, "no timestamp: now");
        assert!(entries[2].tags.is_empty());
        assert!(entries.iter().all(|entry| entry.seq == 0 && entry.node_id == 0 && entry.shard == 0));
        assert!(decode_protobuf(&push(vec![]), 1 << 20, NOW).unwrap().is_empty());
    }

    #[test]
    fn bad_snappy_and_lying_lengths_are_refused_before_inflating() {
        let body = push(vec![StreamAdapter {
            labels: "{a=\"b\"}".into(),
            entries: vec![entry(1, 0, &"x".repeat(1000), &[])],
            hash: 0,
        }]);
        let declared = snappy_len(&body).unwrap();
        assert!(declared > 1000);
        assert_eq!(
            decode_protobuf(&body, declared - 1, NOW),
            Err(LokiError::SnappyTooLarge { declared, limit: declared - 1 })
        );
        assert!(LokiError::SnappyTooLarge { declared, limit: 0 }.is_too_large());
        // A header that claims a huge length is refused on the header alone.
        let mut claims_a_gigabyte = Vec::new();
        let mut length = 1u64 << 30;
        while length >= 0x80 {
            claims_a_gigabyte.push((length as u8) | 0x80);
            length >>= 7;
        }
        claims_a_gigabyte.push(length as u8);
        claims_a_gigabyte.extend_from_slice(&body[2..]);
        assert!(matches!(decode_protobuf(&claims_a_gigabyte, 16 << 20, NOW), Err(LokiError::SnappyTooLarge { .. })));
        // A header that claims fewer (or a few more) bytes than the data holds.
        for lie in [declared - 10, declared + 10] {
            let mut lying = snappy_header(lie);
            lying.extend_from_slice(&body[snappy_header(declared).len()..]);
            assert!(matches!(decode_protobuf(&lying, 1 << 20, NOW), Err(LokiError::Snappy(_))), "{lie}");
        }
        assert!(matches!(decode_protobuf(&body[..body.len() - 5], 1 << 20, NOW), Err(LokiError::Snappy(_))));
        assert!(matches!(decode_protobuf(b"", 1 << 20, NOW), Err(LokiError::Snappy(_))));
        assert!(matches!(decode_protobuf(&[0xff; 12], 1 << 20, NOW), Err(LokiError::Snappy(_))));
        // Not snappy at all: a plain protobuf is refused, never guessed at.
        let plain = PushRequest { streams: vec![] }.encode_to_vec();
        assert!(decode_protobuf(&plain, 1 << 20, NOW).is_err());
    }

    fn snappy_header(mut length: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while length >= 0x80 {
            out.push((length as u8) | 0x80);
            length >>= 7;
        }
        out.push(length as u8);
        out
    }

    #[test]
    fn truncated_protobuf_and_bad_fields_are_refused() {
        let request = PushRequest {
            streams: vec![StreamAdapter {
                labels: "{a=\"b\"}".into(),
                entries: vec![entry(1, 0, "line", &[])],
                hash: 0,
            }],
        }
        .encode_to_vec();
        let truncated = snappy(&request[..request.len() - 3]);
        assert!(matches!(decode_protobuf(&truncated, 1 << 20, NOW), Err(LokiError::Protobuf(_))));
        let bad_labels = push(vec![StreamAdapter { labels: "job=api".into(), entries: vec![], hash: 0 }]);
        assert!(matches!(
            decode_protobuf(&bad_labels, 1 << 20, NOW),
            Err(LokiError::Labels { stream: 1, reason: LabelError::Expected { .. }, .. })
        ));
        let bad_nanos = push(vec![StreamAdapter {
            labels: "{}".into(),
            entries: vec![entry(1, 0, "ok", &[]), entry(1, -1, "bad", &[])],
            hash: 0,
        }]);
        assert!(matches!(decode_protobuf(&bad_nanos, 1 << 20, NOW), Err(LokiError::Entry { stream: 1, entry: 2, .. })));
        let before_1970 =
            push(vec![StreamAdapter { labels: "{}".into(), entries: vec![entry(-5, 0, "x", &[])], hash: 0 }]);
        assert!(matches!(decode_protobuf(&before_1970, 1 << 20, NOW), Err(LokiError::Entry { .. })));
        let twice = push(vec![StreamAdapter {
            labels: "{}".into(),
            entries: vec![entry(1, 0, "x", &[("k", "1"), ("k", "2")])],
            hash: 0,
        }]);
        assert!(matches!(decode_protobuf(&twice, 1 << 20, NOW), Err(LokiError::Entry { .. })));
    }

    #[test]
    fn json_streams_map_like_protobuf() {
        let body = br#"{"streams":[
            {"stream":{"job":"api","host":"a"},"values":[
                ["1700000000000000001","first line"],
                ["1700000000000000002","second \"quoted\" \u00e9",{"trace_id":"t1","span":"s"}],
                [1700000000000000003,"integer time",null]
            ]},
            {"values":[["0","now"]]}
        ],"ignored":true}"#;
        let entries = decode_json(body, NOW).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].timestamp_ns, 1_700_000_000_000_000_001);
        assert_eq!(entries[0].tags, map(&[("job", "api"), ("host", "a")]));
        assert_eq!(&entries[0].body[..], b"first line");
        assert_eq!(entries[1].body, "second \"quoted\" é".as_bytes());
        assert_eq!(entries[1].fields, map(&[("trace_id", "t1"), ("span", "s")]));
        assert_eq!(entries[2].timestamp_ns, 1_700_000_000_000_000_003);
        assert!(entries[2].fields.is_empty());
        assert_eq!(entries[3].timestamp_ns, NOW);
        assert!(entries[3].tags.is_empty());
        assert_eq!(decode_json(br#"{"streams":[]}"#, NOW).unwrap(), vec![]);
    }

    #[test]
    fn bad_json_is_refused_whole() {
        for body in [
            &b""[..],
            b"{",
            b"[]",
            br#"{"streams":{}}"#,
            br#"{"streams":[{"stream":{"a":1},"values":[]}]}"#,
            br#"{"streams":[{"stream":{},"values":[["1"]]}]}"#,
            br#"{"streams":[{"stream":{},"values":[["1","l",{},"extra"]]}]}"#,
            br#"{"streams":[{"stream":{},"values":[["1","l",{"k":1}]]}]}"#,
            br#"{"streams":[{"stream":{},"values":[["1","l",{"k":"1","k":"2"}]]}]}"#,
            br#"{"streams":[{"stream":{},"values":[[1.5,"l"]]}]}"#,
            br#"{"streams":[{"stream":{},"values":[["1","l"]]}]} trailing"#,
        ] {
            assert!(matches!(decode_json(body, NOW), Err(LokiError::Json(_))), "{:?}", String::from_utf8_lossy(body));
        }
        for (body, entry) in [
            (&br#"{"streams":[{"values":[["1","ok"],["12ab","l"]]}]}"#[..], 2),
            (br#"{"streams":[{"values":[["-1","l"]]}]}"#, 1),
            (br#"{"streams":[{"values":[[-1,"l"]]}]}"#, 1),
            (br#"{"streams":[{"values":[["99999999999999999999","l"]]}]}"#, 1),
        ] {
            assert!(
                matches!(decode_json(body, NOW), Err(LokiError::Entry { stream: 1, entry: e, .. }) if e == entry),
                "{:?}: {:?}",
                String::from_utf8_lossy(body),
                decode_json(body, NOW)
            );
        }
    }

    #[test]
    fn content_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(!is_json(Some("application/x-protobuf")));
        assert!(!is_json(None));
        assert!(!is_json(Some("text/plain")));
    }

    /// `tags` in the label text Go's `strconv.Quote` writes (what
    /// Promtail sends): `\"`, `\\`, `\n`, `\t` and `\u` escapes.
    fn go_labels(tags: &BTreeMap<String, String>) -> String {
        let pairs: Vec<String> = tags
            .iter()
            .map(|(name, value)| {
                let mut quoted = String::new();
                for character in value.chars() {
                    match character {
                        '"' => quoted.push_str("\\\""),
                        '\\' => quoted.push_str("\\\\"),
                        '\n' => quoted.push_str("\\n"),
                        '\t' => quoted.push_str("\\t"),
                        control if control.is_control() => quoted.push_str(&format!("\\u{:04x}", control as u32)),
                        other => quoted.push(other),
                    }
                }
                format!("{name}=\"{quoted}\"")
            })
            .collect();
        format!("{{{}}}", pairs.join(", "))
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_decoded_or_refused_never_a_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_protobuf(&bytes, 1 << 16, NOW);
            let _ = decode_json(&bytes, NOW);
            let _ = parse_labels(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn quoted_labels_parse_back(tags in proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", "\\PC{0,12}|[\"\\\\\n\t, ={}\u{1}]{0,6}", 0..6)) {
            proptest::prop_assert_eq!(parse_labels(&go_labels(&tags)).unwrap(), tags);
        }
    }
}
