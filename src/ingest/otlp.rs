//! OTLP logs (DESIGN.md section 11): an `ExportLogsServiceRequest`, as
//! protobuf or as OTLP/JSON ([`json`]), mapped to [`LogEntry`]s.
//!
//! OTLP nests records in scopes in resources, and a value is a tree
//! (`AnyValue`: scalars, arrays, maps). An entry is flat: indexed tags,
//! stored fields, a body. The mapping keeps what a query needs indexed
//! (who sent it, where, how severe) as tags, and everything else as fields,
//! so nothing a shipper sent is lost and the tag index stays small:
//!
//! - tags: the resource attributes named in the tag list
//!   (`--otlp-tag-attributes`; keys as written, with their dots), and
//!   `level`: the severity text, else the name of the severity number
//!   (`TRACE` … `FATAL4`, as the OTLP data model names them); no `level`
//!   when neither is set;
//! - fields: every other attribute of the resource, the scope and the
//!   record (a record's attribute wins over a scope's, which wins over a
//!   resource's of the same key), `scope.name`, `scope.version`,
//!   `trace_id` and `span_id` (lowercase hex), `flags` and `event_name`
//!   (each only when set). A map value is flattened into one field per
//!   leaf, keys joined with `.` (`http.request.method`); an array becomes
//!   its JSON text; an integer, double or boolean its text; bytes their
//!   base64 (standard alphabet, padded);
//! - body: a string body as is, bytes as they are, a map or an array as its
//!   JSON text, a scalar as its text; no body is an empty one;
//! - time: `time_unix_nano`, else `observed_time_unix_nano`, else the
//!   receiver's clock.
//!
//! Limits are not checked here: [`Core::store`](crate::node::Core::store)
//! checks every entry (tag and field counts and sizes) and refuses the
//! whole request, naming the entry, so a request is stored whole or not at
//! all. Depth is bounded by the decoders (prost's recursion limit, serde
//! JSON's), so the recursive flattening below cannot overflow the stack.

pub mod json;

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;

use super::streams::{Stream, StreamEntry, Streams};
use crate::proto::opentelemetry::proto::collector::logs::v1::ExportLogsServiceRequest;
use crate::proto::opentelemetry::proto::common::v1::any_value::Value;
use crate::proto::opentelemetry::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use crate::proto::opentelemetry::proto::logs::v1::LogRecord;
use crate::proto::LogEntry;

/// The tag every entry's severity goes to.
pub const LEVEL_TAG: &str = "level";

/// The names of the severity numbers 1 to 24, as the OTLP logs data model
/// gives them ("SeverityNumber": `TRACE`, `TRACE2`, … `FATAL4`).
const SEVERITY_NAMES: [&str; 24] = [
    "TRACE", "TRACE2", "TRACE3", "TRACE4", "DEBUG", "DEBUG2", "DEBUG3", "DEBUG4", "INFO", "INFO2", "INFO3", "INFO4",
    "WARN", "WARN2", "WARN3", "WARN4", "ERROR", "ERROR2", "ERROR3", "ERROR4", "FATAL", "FATAL2", "FATAL3", "FATAL4",
];

/// Why an OTLP request cannot be stored: bad data, never worth a retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpError {
    /// The protobuf does not decode as an `ExportLogsServiceRequest`.
    #[error("malformed ExportLogsServiceRequest: {0}")]
    Protobuf(String),
    /// The OTLP/JSON does not decode as an `ExportLogsServiceRequest`.
    #[error("malformed OTLP/JSON ExportLogsServiceRequest: {0}")]
    Json(String),
    /// A record's time does not fit the signed nanoseconds entries keep
    /// (after the year 2262).
    #[error("log record {record}: {field} {value} is past the year 2262 (entries keep signed nanoseconds)")]
    TimeOutOfRange {
        /// The record, 1-based across the request.
        record: usize,
        /// `time_unix_nano` or `observed_time_unix_nano`.
        field: &'static str,
        /// The value sent.
        value: u64,
    },
}

/// Decodes a protobuf `ExportLogsServiceRequest`.
pub fn decode_protobuf(bytes: &[u8]) -> Result<ExportLogsServiceRequest, OtlpError> {
    prost::Message::decode(bytes).map_err(|error: prost::DecodeError| OtlpError::Protobuf(error.to_string()))
}

/// How many log records `request` holds.
pub fn record_count(request: &ExportLogsServiceRequest) -> usize {
    request.resource_logs.iter().flat_map(|resource| &resource.scope_logs).map(|scope| scope.log_records.len()).sum()
}

/// The entries of `request`, one per log record, in order (see the module
/// doc for the mapping): `tag_attributes` are the resource attributes that
/// become tags, `now_ns` the time of a record that has none. An empty
/// request gives no entries.
pub fn entries(
    request: ExportLogsServiceRequest,
    tag_attributes: &[String],
    now_ns: i64,
) -> Result<Vec<LogEntry>, OtlpError> {
    streams(request, tag_attributes, now_ns).map(Streams::into_log_entries)
}

/// The entries of `request` as [`Streams`], in the order of its records:
/// a stream is a run of records of one resource with the same `level`, so
/// its tags (the resource's tag attributes and the level) are built once
/// and lent to the shard, not cloned into every entry.
pub fn streams(
    request: ExportLogsServiceRequest,
    tag_attributes: &[String],
    now_ns: i64,
) -> Result<Streams, OtlpError> {
    let mut streams = Vec::new();
    let mut index = 0;
    for resource_logs in request.resource_logs {
        let mut resource_tags = BTreeMap::new();
        let mut resource_fields = BTreeMap::new();
        for attribute in resource_logs.resource.map(|resource| resource.attributes).unwrap_or_default() {
            if tag_attributes.contains(&attribute.key) {
                resource_tags.insert(attribute.key, text(attribute.value.as_ref()));
            } else {
                put_attribute(&mut resource_fields, attribute);
            }
        }
        // The run being built: its level, and the stream.
        let mut open: Option<(Option<String>, Stream)> = None;
        for scope_logs in resource_logs.scope_logs {
            let mut scope_fields = resource_fields.clone();
            if let Some(scope) = scope_logs.scope {
                put_scope(&mut scope_fields, scope);
            }
            for record in scope_logs.log_records {
                index += 1;
                let level = level(&record);
                let entry = entry(record, scope_fields.clone(), now_ns, index)?;
                match &mut open {
                    Some((open_level, stream)) if *open_level == level => stream.entries.push(entry),
                    _ => {
                        let mut tags = resource_tags.clone();
                        if let Some(level) = &level {
                            tags.insert(LEVEL_TAG.to_string(), level.clone());
                        }
                        let stream = Stream { tags: tags.into_iter().collect(), entries: vec![entry] };
                        if let Some((_, done)) = open.replace((level, stream)) {
                            streams.push(done);
                        }
                    }
                }
            }
        }
        streams.extend(open.map(|(_, stream)| stream));
    }
    Ok(Streams { streams })
}

/// The scope's attributes, then its name and version, into `fields`.
fn put_scope(fields: &mut BTreeMap<String, String>, scope: InstrumentationScope) {
    for attribute in scope.attributes {
        put_attribute(fields, attribute);
    }
    if !scope.name.is_empty() {
        fields.insert("scope.name".to_string(), scope.name);
    }
    if !scope.version.is_empty() {
        fields.insert("scope.version".to_string(), scope.version);
    }
}

/// One record's entry of its stream (the stream holds its tags); `index`
/// (1-based) names it in errors.
fn entry(
    record: LogRecord,
    mut fields: BTreeMap<String, String>,
    now_ns: i64,
    index: usize,
) -> Result<StreamEntry, OtlpError> {
    let timestamp_ns = timestamp_ns(&record, now_ns, index)?;
    for attribute in record.attributes {
        put_attribute(&mut fields, attribute);
    }
    if !record.trace_id.is_empty() {
        fields.insert("trace_id".to_string(), hex(&record.trace_id));
    }
    if !record.span_id.is_empty() {
        fields.insert("span_id".to_string(), hex(&record.span_id));
    }
    if record.flags != 0 {
        fields.insert("flags".to_string(), record.flags.to_string());
    }
    if !record.event_name.is_empty() {
        fields.insert("event_name".to_string(), record.event_name);
    }
    Ok(StreamEntry { timestamp_ns, body: body(record.body), fields: fields.into_iter().collect() })
}

/// `time_unix_nano`, else `observed_time_unix_nano`, else `now_ns`.
fn timestamp_ns(record: &LogRecord, now_ns: i64, index: usize) -> Result<i64, OtlpError> {
    let (field, value) = match (record.time_unix_nano, record.observed_time_unix_nano) {
        (0, 0) => return Ok(now_ns),
        (0, observed) => ("observed_time_unix_nano", observed),
        (time, _) => ("time_unix_nano", time),
    };
    i64::try_from(value).map_err(|_| OtlpError::TimeOutOfRange { record: index, field, value })
}

/// The record's `level` tag: its severity text, else the name of its
/// severity number; `None` when neither is set (or the number is not one
/// the data model names).
pub fn level(record: &LogRecord) -> Option<String> {
    if !record.severity_text.is_empty() {
        return Some(record.severity_text.clone());
    }
    let number = usize::try_from(record.severity_number).ok()?;
    SEVERITY_NAMES.get(number.checked_sub(1)?).map(|name| (*name).to_string())
}

/// `attribute` into `fields`, a map flattened into one field per leaf.
fn put_attribute(fields: &mut BTreeMap<String, String>, attribute: KeyValue) {
    put_value(fields, attribute.key, attribute.value);
}

fn put_value(fields: &mut BTreeMap<String, String>, key: String, value: Option<AnyValue>) {
    match value.and_then(|value| value.value) {
        Some(Value::KvlistValue(list)) if !list.values.is_empty() => {
            for inner in list.values {
                put_value(fields, format!("{key}.{}", inner.key), inner.value);
            }
        }
        Some(Value::StringValue(text)) => {
            fields.insert(key, text);
        }
        other => {
            fields.insert(key, scalar_text(other.as_ref()));
        }
    }
}

/// A value as one string: a string as is, a number or boolean as its
/// text, bytes as base64, an array or a map as its JSON text, nothing as
/// the empty string.
pub fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(Value::StringValue(text)) => text.clone(),
        other => scalar_text(other),
    }
}

fn scalar_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::StringValueStrindex(_)) => String::new(),
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::BoolValue(flag)) => flag.to_string(),
        Some(Value::IntValue(number)) => number.to_string(),
        Some(Value::DoubleValue(number)) => match double_json(*number) {
            serde_json::Value::String(name) => name,
            finite => finite.to_string(),
        },
        Some(Value::BytesValue(bytes)) => base64::engine::general_purpose::STANDARD.encode(bytes),
        Some(value @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => to_json(Some(value)).to_string(),
    }
}

/// A double as JSON: a number when finite, else the string OTLP/JSON
/// spells it with (`NaN`, `Infinity`, `-Infinity`).
fn double_json(number: f64) -> serde_json::Value {
    if number.is_nan() {
        serde_json::Value::from("NaN")
    } else if number.is_infinite() {
        serde_json::Value::from(if number > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        serde_json::Value::from(number)
    }
}

/// A value as JSON: integers exact, bytes as base64 strings, maps as
/// objects (a repeated key: the last one wins).
fn to_json(value: Option<&Value>) -> serde_json::Value {
    match value {
        None | Some(Value::StringValueStrindex(_)) => serde_json::Value::Null,
        Some(Value::StringValue(text)) => serde_json::Value::from(text.as_str()),
        Some(Value::BoolValue(flag)) => serde_json::Value::from(*flag),
        Some(Value::IntValue(number)) => serde_json::Value::from(*number),
        Some(Value::DoubleValue(number)) => double_json(*number),
        Some(Value::BytesValue(bytes)) => {
            serde_json::Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        Some(Value::ArrayValue(array)) => {
            array.values.iter().map(|value| to_json(value.value.as_ref())).collect::<Vec<_>>().into()
        }
        Some(Value::KvlistValue(list)) => serde_json::Value::Object(
            list.values
                .iter()
                .map(|pair| (pair.key.clone(), to_json(pair.value.as_ref().and_then(|value| value.value.as_ref()))))
                .collect(),
        ),
    }
}

/// The entry's body (see the module doc).
fn body(value: Option<AnyValue>) -> Bytes {
    match value.and_then(|value| value.value) {
        None => Bytes::new(),
        Some(Value::StringValue(text)) => Bytes::from(text),
        Some(Value::BytesValue(bytes)) => bytes,
        Some(other) => Bytes::from(scalar_text(Some(&other))),
    }
}

/// `bytes` as lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::opentelemetry::proto::common::v1::{ArrayValue, KeyValueList};
    use crate::proto::opentelemetry::proto::logs::v1::{ResourceLogs, ScopeLogs};
    use crate::proto::opentelemetry::proto::resource::v1::Resource;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn tag_list() -> Vec<String> {
        ["service.name", "host.name", "k8s.pod.name"].map(String::from).to_vec()
    }

    fn string(text: &str) -> Option<AnyValue> {
        Some(AnyValue { value: Some(Value::StringValue(text.to_string())) })
    }

    fn any(value: Value) -> Option<AnyValue> {
        Some(AnyValue { value: Some(value) })
    }

    fn pair(key: &str, value: Option<AnyValue>) -> KeyValue {
        KeyValue { key: key.to_string(), value, ..KeyValue::default() }
    }

    fn request(
        resource: Vec<KeyValue>,
        scope: Option<InstrumentationScope>,
        records: Vec<LogRecord>,
    ) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource { attributes: resource, ..Resource::default() }),
                scope_logs: vec![ScopeLogs { scope, log_records: records, ..ScopeLogs::default() }],
                ..ResourceLogs::default()
            }],
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
    }

    #[test]
    fn a_record_maps_to_tags_fields_body_and_time() {
        let record = LogRecord {
            time_unix_nano: 1_544_712_660_300_000_000,
            observed_time_unix_nano: 1_544_712_660_400_000_000,
            severity_number: 17,
            severity_text: "Error".to_string(),
            body: string("PacketResponder 1 for block blk_38865049064139660 terminating"),
            attributes: vec![
                pair("http.status", any(Value::IntValue(-503))),
                pair("ratio", any(Value::DoubleValue(0.25))),
                pair("whole", any(Value::DoubleValue(2.0))),
                pair("retried", any(Value::BoolValue(true))),
                pair("raw", any(Value::BytesValue(Bytes::from_static(b"\x00\xffhi")))),
                pair("empty", None),
                pair(
                    "list",
                    any(Value::ArrayValue(ArrayValue {
                        values: vec![string("a").unwrap(), any(Value::IntValue(7)).unwrap(), AnyValue::default()],
                    })),
                ),
                pair(
                    "http",
                    any(Value::KvlistValue(KeyValueList {
                        values: vec![
                            pair("method", string("GET")),
                            pair(
                                "request",
                                any(Value::KvlistValue(KeyValueList {
                                    values: vec![pair("size", any(Value::IntValue(12)))],
                                })),
                            ),
                            pair("none", any(Value::KvlistValue(KeyValueList::default()))),
                        ],
                    })),
                ),
                pair("service.name", string("a record attribute is a field")),
            ],
            flags: 1,
            trace_id: Bytes::from_static(&[
                0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c,
            ]),
            span_id: Bytes::from_static(&[0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]),
            ..LogRecord::default()
        };
        let scope = InstrumentationScope {
            name: "my.library".to_string(),
            version: "1.0.0".to_string(),
            attributes: vec![pair("my.scope.attribute", string("scope")), pair("shared", string("from the scope"))],
            ..InstrumentationScope::default()
        };
        let resource = vec![
            pair("service.name", string("hdfs")),
            pair("host.name", string("node-7")),
            pair("deployment.environment", string("prod")),
            pair("shared", string("from the resource")),
            pair("k8s.pod.name", any(Value::IntValue(3))),
        ];
        let entries = entries(request(resource, Some(scope), vec![record]), &tag_list(), NOW).unwrap();
        assert_eq!(entries.len(), 1);
        let entry = &entries[0];
        assert_eq!(entry.timestamp_ns, 1_544_712_660_300_000_000);
        assert_eq!(&entry.body[..], b"PacketResponder 1 for block blk_38865049064139660 terminating");
        assert_eq!(
            entry.tags,
            fields(&[("service.name", "hdfs"), ("host.name", "node-7"), ("k8s.pod.name", "3"), ("level", "Error")])
        );
        assert_eq!(
            entry.fields,
            fields(&[
                ("deployment.environment", "prod"),
                ("shared", "from the scope"),
                ("my.scope.attribute", "scope"),
                ("scope.name", "my.library"),
                ("scope.version", "1.0.0"),
                ("http.status", "-503"),
                ("ratio", "0.25"),
                ("whole", "2.0"),
                ("retried", "true"),
                ("raw", "AP9oaQ=="),
                ("empty", ""),
                ("list", r#"["a",7,null]"#),
                ("http.method", "GET"),
                ("http.request.size", "12"),
                ("http.none", "{}"),
                ("service.name", "a record attribute is a field"),
                ("trace_id", "5b8efff798038103d269b633813fc60c"),
                ("span_id", "eee19b7ec3c1b174"),
                ("flags", "1"),
            ])
        );
        assert_eq!((entry.seq, entry.node_id, entry.shard), (0, 0, 0));
    }

    #[test]
    fn severity_numbers_are_named_when_there_is_no_text() {
        let level_of = |number: i32, text: &str| {
            level(&LogRecord { severity_number: number, severity_text: text.to_string(), ..LogRecord::default() })
        };
        assert_eq!(level_of(1, "").as_deref(), Some("TRACE"));
        assert_eq!(level_of(9, "").as_deref(), Some("INFO"));
        assert_eq!(level_of(13, "").as_deref(), Some("WARN"));
        assert_eq!(level_of(18, "").as_deref(), Some("ERROR2"));
        assert_eq!(level_of(24, "").as_deref(), Some("FATAL4"));
        assert_eq!(level_of(9, "notice").as_deref(), Some("notice"), "the text wins");
        assert_eq!(level_of(0, ""), None);
        assert_eq!(level_of(25, ""), None);
        assert_eq!(level_of(-1, ""), None);
    }

    #[test]
    fn time_falls_back_to_observed_then_now() {
        let at = |time: u64, observed: u64| {
            let record = LogRecord { time_unix_nano: time, observed_time_unix_nano: observed, ..LogRecord::default() };
            entries(request(vec![], None, vec![record]), &[], NOW).map(|entries| entries[0].timestamp_ns)
        };
        assert_eq!(at(5, 7), Ok(5));
        assert_eq!(at(0, 7), Ok(7));
        assert_eq!(at(0, 0), Ok(NOW));
        assert_eq!(
            at(u64::MAX, 0),
            Err(OtlpError::TimeOutOfRange { record: 1, field: "time_unix_nano", value: u64::MAX })
        );
    }

    #[test]
    fn bodies_of_every_kind() {
        let body_of = |value: Option<AnyValue>| {
            let record = LogRecord { body: value, ..LogRecord::default() };
            entries(request(vec![], None, vec![record]), &[], NOW).unwrap()[0].body.clone()
        };
        assert_eq!(body_of(None), Bytes::new());
        assert_eq!(body_of(string("line")), Bytes::from("line"));
        assert_eq!(body_of(any(Value::BytesValue(Bytes::from_static(b"\xff\x00")))), Bytes::from_static(b"\xff\x00"));
        assert_eq!(body_of(any(Value::IntValue(42))), Bytes::from("42"));
        let map = KeyValueList { values: vec![pair("b", any(Value::BoolValue(false))), pair("a", string("x"))] };
        assert_eq!(body_of(any(Value::KvlistValue(map))), Bytes::from(r#"{"a":"x","b":false}"#));
        let array = ArrayValue { values: vec![any(Value::DoubleValue(f64::NAN)).unwrap(), string("y").unwrap()] };
        assert_eq!(body_of(any(Value::ArrayValue(array))), Bytes::from(r#"["NaN","y"]"#));
    }

    #[test]
    fn no_ids_no_flags_no_scope_fields_when_unset_and_an_empty_request_gives_nothing() {
        let entries_of = entries(request(vec![], None, vec![LogRecord::default()]), &tag_list(), NOW).unwrap();
        assert!(entries_of[0].fields.is_empty(), "{:?}", entries_of[0].fields);
        assert!(entries_of[0].tags.is_empty(), "{:?}", entries_of[0].tags);
        assert_eq!(entries(ExportLogsServiceRequest::default(), &tag_list(), NOW), Ok(vec![]));
        assert_eq!(entries(request(vec![], None, vec![]), &tag_list(), NOW), Ok(vec![]));
    }

    #[test]
    fn records_keep_their_order_across_resources_and_scopes() {
        let record = |body: &str| LogRecord { body: string(body), ..LogRecord::default() };
        let mut request = request(vec![pair("service.name", string("one"))], None, vec![record("1"), record("2")]);
        let mut second = request.resource_logs[0].clone();
        second.resource =
            Some(Resource { attributes: vec![pair("service.name", string("two"))], ..Resource::default() });
        second.scope_logs[0].log_records = vec![record("3")];
        request.resource_logs.push(second);
        assert_eq!(record_count(&request), 3);
        let entries = entries(request, &tag_list(), NOW).unwrap();
        let seen: Vec<(&str, &str)> = entries
            .iter()
            .map(|entry| (std::str::from_utf8(&entry.body).unwrap(), entry.tags["service.name"].as_str()))
            .collect();
        assert_eq!(seen, [("1", "one"), ("2", "one"), ("3", "two")]);
    }

    #[test]
    fn protobuf_round_trips_and_garbage_is_refused() {
        let original = request(vec![pair("service.name", string("x"))], None, vec![LogRecord::default()]);
        let bytes = prost::Message::encode_to_vec(&original);
        assert_eq!(decode_protobuf(&bytes), Ok(original));
        assert!(matches!(decode_protobuf(&bytes[..bytes.len() - 1]), Err(OtlpError::Protobuf(_))));
        assert!(matches!(decode_protobuf(b"\xff\xff\xff"), Err(OtlpError::Protobuf(_))));
        assert_eq!(decode_protobuf(b""), Ok(ExportLogsServiceRequest::default()));
    }
}
