//! OTLP/JSON (the OTLP specification, "JSON Protobuf Encoding") read into
//! the same prost types as the protobuf form, so that one mapping
//! ([`super::entries`]) serves both.
//!
//! OTLP/JSON is the protobuf JSON mapping with OTLP's own rules, which the
//! mirror types below follow:
//! - keys are the lowerCamelCase field names (`timeUnixNano`);
//! - `traceId` and `spanId` are hex (either case), not base64;
//! - 64-bit integers (`intValue`, `timeUnixNano`) are decimal strings; a
//!   JSON number is accepted too, as protobuf's JSON parsers do;
//! - enums (`severityNumber`) are integers; the enum's name is accepted
//!   too;
//! - `bytesValue` is base64 (standard or URL-safe, padded or not);
//! - `doubleValue` is a number, or `"NaN"`, `"Infinity"`, `"-Infinity"`;
//! - unknown keys are ignored (a newer sender's fields), and `null` reads
//!   as absent.
//!
//! An `AnyValue` object holding more than one value is refused, as
//! protobuf's JSON parsers refuse a oneof set twice. Errors carry serde's
//! line and column.

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer};

use super::OtlpError;
use crate::proto::opentelemetry::proto::collector::logs::v1::ExportLogsServiceRequest;
use crate::proto::opentelemetry::proto::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use crate::proto::opentelemetry::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use crate::proto::opentelemetry::proto::resource::v1::Resource;

/// Decodes an OTLP/JSON `ExportLogsServiceRequest`.
pub fn decode(bytes: &[u8]) -> Result<ExportLogsServiceRequest, OtlpError> {
    // serde's derived structs also read a JSON array positionally; a
    // request is an object.
    if bytes.iter().find(|byte| !byte.is_ascii_whitespace()).is_some_and(|&first| first != b'{') {
        return Err(OtlpError::Json("the request is not a JSON object".to_string()));
    }
    let request: RequestJson = serde_json::from_slice(bytes).map_err(|error| OtlpError::Json(error.to_string()))?;
    Ok(request.into())
}

/// `null` or absent as the default.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(deserializer: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// An integer as protobuf's JSON writes it: a number or a decimal string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Integer {
    Number(serde_json::Number),
    Text(String),
}

impl Integer {
    fn parse<T: std::str::FromStr + TryFrom<u64> + TryFrom<i64>>(self) -> Option<T> {
        match self {
            Integer::Number(number) => match (number.as_u64(), number.as_i64()) {
                (Some(unsigned), _) => T::try_from(unsigned).ok(),
                (None, Some(signed)) => T::try_from(signed).ok(),
                (None, None) => None,
            },
            Integer::Text(text) => text.trim().parse().ok(),
        }
    }
}

fn integer<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr + TryFrom<u64> + TryFrom<i64> + Default,
{
    match Option::<Integer>::deserialize(deserializer)? {
        None => Ok(T::default()),
        Some(value) => value.parse().ok_or_else(|| {
            serde::de::Error::custom(format!("not an integer in range of {}", std::any::type_name::<T>()))
        }),
    }
}

fn optional_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    match Option::<Integer>::deserialize(deserializer)? {
        None => Ok(None),
        Some(value) => {
            value.parse().map(Some).ok_or_else(|| serde::de::Error::custom("intValue is not a 64-bit integer"))
        }
    }
}

/// `severityNumber`: an integer, or the enum value's name.
fn severity<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Severity {
        Number(i32),
        Name(String),
    }
    match Option::<Severity>::deserialize(deserializer)? {
        None => Ok(0),
        Some(Severity::Number(number)) => Ok(number),
        Some(Severity::Name(name)) => SeverityNumber::from_str_name(&name)
            .map(|number| number as i32)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown severityNumber {name:?}"))),
    }
}

/// `traceId`, `spanId`: hex, either case.
fn hex<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    let text: String = nullable(deserializer)?;
    let digit = |byte: u8| (byte as char).to_digit(16).map(|value| value as u8);
    if text.len() % 2 != 0 {
        return Err(serde::de::Error::custom(format!("id {text:?} is not hex: odd length")));
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .map(Bytes::from)
        .ok_or_else(|| serde::de::Error::custom(format!("id {text:?} is not hex")))
}

/// `bytesValue`: base64, standard or URL-safe, padding optional.
fn optional_base64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Bytes>, D::Error> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let Some(text) = Option::<String>::deserialize(deserializer)? else { return Ok(None) };
    let unpadded = text.trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(unpadded)
        .or_else(|_| URL_SAFE_NO_PAD.decode(unpadded))
        .map(|bytes| Some(Bytes::from(bytes)))
        .map_err(|error| serde::de::Error::custom(format!("bytesValue is not base64: {error}")))
}

/// `doubleValue`: a number, or one of the names of the non-finite ones.
fn optional_double<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Double {
        Number(f64),
        Text(String),
    }
    match Option::<Double>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Double::Number(number)) => Ok(Some(number)),
        Some(Double::Text(text)) => match text.as_str() {
            "NaN" => Ok(Some(f64::NAN)),
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            other => other
                .parse()
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("doubleValue {other:?} is not a number"))),
        },
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RequestJson {
    #[serde(deserialize_with = "nullable")]
    resource_logs: Vec<ResourceLogsJson>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResourceLogsJson {
    resource: Option<ResourceJson>,
    #[serde(deserialize_with = "nullable")]
    scope_logs: Vec<ScopeLogsJson>,
    #[serde(deserialize_with = "nullable")]
    schema_url: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResourceJson {
    #[serde(deserialize_with = "nullable")]
    attributes: Vec<KeyValueJson>,
    #[serde(deserialize_with = "integer")]
    dropped_attributes_count: u32,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ScopeLogsJson {
    scope: Option<ScopeJson>,
    #[serde(deserialize_with = "nullable")]
    log_records: Vec<LogRecordJson>,
    #[serde(deserialize_with = "nullable")]
    schema_url: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ScopeJson {
    #[serde(deserialize_with = "nullable")]
    name: String,
    #[serde(deserialize_with = "nullable")]
    version: String,
    #[serde(deserialize_with = "nullable")]
    attributes: Vec<KeyValueJson>,
    #[serde(deserialize_with = "integer")]
    dropped_attributes_count: u32,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct LogRecordJson {
    #[serde(deserialize_with = "integer")]
    time_unix_nano: u64,
    #[serde(deserialize_with = "integer")]
    observed_time_unix_nano: u64,
    #[serde(deserialize_with = "severity")]
    severity_number: i32,
    #[serde(deserialize_with = "nullable")]
    severity_text: String,
    body: Option<AnyValueJson>,
    #[serde(deserialize_with = "nullable")]
    attributes: Vec<KeyValueJson>,
    #[serde(deserialize_with = "integer")]
    dropped_attributes_count: u32,
    #[serde(deserialize_with = "integer")]
    flags: u32,
    #[serde(deserialize_with = "hex")]
    trace_id: Bytes,
    #[serde(deserialize_with = "hex")]
    span_id: Bytes,
    #[serde(deserialize_with = "nullable")]
    event_name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct KeyValueJson {
    #[serde(deserialize_with = "nullable")]
    key: String,
    value: Option<AnyValueJson>,
}

/// An `AnyValue` object: at most one of its keys set.
#[derive(Deserialize)]
#[serde(try_from = "AnyValueKeys")]
struct AnyValueJson(AnyValue);

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct AnyValueKeys {
    string_value: Option<String>,
    bool_value: Option<bool>,
    #[serde(deserialize_with = "optional_integer")]
    int_value: Option<i64>,
    #[serde(deserialize_with = "optional_double")]
    double_value: Option<f64>,
    array_value: Option<ValuesJson<AnyValueJson>>,
    kvlist_value: Option<ValuesJson<KeyValueJson>>,
    #[serde(deserialize_with = "optional_base64")]
    bytes_value: Option<Bytes>,
}

#[derive(Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
struct ValuesJson<T> {
    #[serde(default = "Vec::new", deserialize_with = "nullable_vec")]
    values: Vec<T>,
}

fn nullable_vec<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

impl TryFrom<AnyValueKeys> for AnyValueJson {
    type Error = String;

    fn try_from(keys: AnyValueKeys) -> Result<AnyValueJson, String> {
        use any_value::Value;
        let values = [
            keys.string_value.map(Value::StringValue),
            keys.bool_value.map(Value::BoolValue),
            keys.int_value.map(Value::IntValue),
            keys.double_value.map(Value::DoubleValue),
            keys.array_value.map(|array| {
                Value::ArrayValue(ArrayValue { values: array.values.into_iter().map(|value| value.0).collect() })
            }),
            keys.kvlist_value.map(|list| {
                Value::KvlistValue(KeyValueList { values: list.values.into_iter().map(KeyValue::from).collect() })
            }),
            keys.bytes_value.map(Value::BytesValue),
        ];
        let mut set = values.into_iter().flatten();
        let value = set.next();
        if set.next().is_some() {
            return Err("an AnyValue holds more than one value".to_string());
        }
        Ok(AnyValueJson(AnyValue { value }))
    }
}

impl From<KeyValueJson> for KeyValue {
    fn from(pair: KeyValueJson) -> KeyValue {
        KeyValue { key: pair.key, value: pair.value.map(|value| value.0), ..KeyValue::default() }
    }
}

fn key_values(pairs: Vec<KeyValueJson>) -> Vec<KeyValue> {
    pairs.into_iter().map(KeyValue::from).collect()
}

impl From<RequestJson> for ExportLogsServiceRequest {
    fn from(request: RequestJson) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest { resource_logs: request.resource_logs.into_iter().map(ResourceLogs::from).collect() }
    }
}

impl From<ResourceLogsJson> for ResourceLogs {
    fn from(resource_logs: ResourceLogsJson) -> ResourceLogs {
        ResourceLogs {
            resource: resource_logs.resource.map(|resource| Resource {
                attributes: key_values(resource.attributes),
                dropped_attributes_count: resource.dropped_attributes_count,
                ..Resource::default()
            }),
            scope_logs: resource_logs.scope_logs.into_iter().map(ScopeLogs::from).collect(),
            schema_url: resource_logs.schema_url,
        }
    }
}

impl From<ScopeLogsJson> for ScopeLogs {
    fn from(scope_logs: ScopeLogsJson) -> ScopeLogs {
        ScopeLogs {
            scope: scope_logs.scope.map(|scope| InstrumentationScope {
                name: scope.name,
                version: scope.version,
                attributes: key_values(scope.attributes),
                dropped_attributes_count: scope.dropped_attributes_count,
            }),
            log_records: scope_logs.log_records.into_iter().map(LogRecord::from).collect(),
            schema_url: scope_logs.schema_url,
        }
    }
}

impl From<LogRecordJson> for LogRecord {
    fn from(record: LogRecordJson) -> LogRecord {
        LogRecord {
            time_unix_nano: record.time_unix_nano,
            observed_time_unix_nano: record.observed_time_unix_nano,
            severity_number: record.severity_number,
            severity_text: record.severity_text,
            body: record.body.map(|body| body.0),
            attributes: key_values(record.attributes),
            dropped_attributes_count: record.dropped_attributes_count,
            flags: record.flags,
            trace_id: record.trace_id,
            span_id: record.span_id,
            event_name: record.event_name,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// `examples/logs.json` of opentelemetry-proto v1.11.0 (Apache-2.0),
    /// vendored with its attribution in `tests/data/otlp/`.
    const EXAMPLE: &str = include_str!("../../../tests/data/otlp/logs.json");

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
    }

    #[test]
    fn the_specification_example_maps_exactly() {
        let request = decode(EXAMPLE.as_bytes()).unwrap();
        let record = &request.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.severity_number, 10);
        assert_eq!(record.trace_id.len(), 16);
        let tags = ["service.name".to_string()];
        let entries = super::super::entries(request, &tags, 0).unwrap();
        assert_eq!(entries.len(), 1);
        let entry = &entries[0];
        assert_eq!(entry.timestamp_ns, 1_544_712_660_300_000_000);
        assert_eq!(&entry.body[..], b"Example log record");
        assert_eq!(entry.tags, map(&[("service.name", "my.service"), ("level", "Information")]));
        assert_eq!(
            entry.fields,
            map(&[
                ("my.scope.attribute", "some scope attribute"),
                ("scope.name", "my.library"),
                ("scope.version", "1.0.0"),
                ("string.attribute", "some string"),
                ("boolean.attribute", "true"),
                ("int.attribute", "10"),
                ("double.attribute", "637.704"),
                ("array.attribute", r#"["many","values"]"#),
                ("map.attribute.some.map.key", "some value"),
                ("trace_id", "5b8efff798038103d269b633813fc60c"),
                ("span_id", "eee19b7ec3c1b174"),
            ])
        );
    }

    #[test]
    fn the_json_and_protobuf_forms_decode_alike() {
        let request = decode(EXAMPLE.as_bytes()).unwrap();
        let bytes = prost::Message::encode_to_vec(&request);
        assert_eq!(super::super::decode_protobuf(&bytes).unwrap(), request);
    }

    #[test]
    fn numbers_for_strings_enum_names_nulls_and_unknown_keys() {
        let text = r#"{"resourceLogs":[{"resource":null,"future":{"x":1},"scopeLogs":[{"scope":{"name":"s",
            "attributes":null},"logRecords":[{"timeUnixNano":12,"observedTimeUnixNano":"13",
            "severityNumber":"SEVERITY_NUMBER_WARN","body":{"intValue":5},"attributes":[
            {"key":"b","value":{"bytesValue":"AP9oaQ"}},{"key":"u","value":{"bytesValue":"_-8"}},
            {"key":"d","value":{"doubleValue":"-Infinity"}},{"key":"n","value":null},
            {"key":"e","value":{"arrayValue":{}}},{"key":"i","value":{"intValue":"-9223372036854775808"}}],
            "traceId":"","spanId":null,"flags":"1","somethingNew":true}]}]}],"extra":[]}"#;
        let request = decode(text.as_bytes()).unwrap();
        let entries = super::super::entries(request, &[], 99).unwrap();
        let entry = &entries[0];
        assert_eq!(entry.timestamp_ns, 12);
        assert_eq!(&entry.body[..], b"5");
        assert_eq!(entry.tags, map(&[("level", "WARN")]));
        assert_eq!(
            entry.fields,
            map(&[
                ("scope.name", "s"),
                ("b", "AP9oaQ=="),
                ("u", "/+8="),
                ("d", "-Infinity"),
                ("n", ""),
                ("e", "[]"),
                ("i", "-9223372036854775808"),
                ("flags", "1"),
            ])
        );
    }

    #[test]
    fn an_empty_object_is_an_empty_request() {
        assert_eq!(decode(b"{}").unwrap(), ExportLogsServiceRequest::default());
        assert_eq!(decode(br#"{"resourceLogs":[]}"#).unwrap(), ExportLogsServiceRequest::default());
    }

    #[test]
    fn malformed_json_is_refused_with_where() {
        for (text, needle) in [
            ("", "EOF"),
            ("[]", "not a JSON object"),
            ("  \"x\"", "not a JSON object"),
            (r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"}]}]}]}"#, "not hex"),
            (r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"spanId":"abc"}]}]}]}"#, "odd length"),
            (r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"-1"}]}]}]}"#, "not an integer"),
            (r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":1.5}]}]}]}"#, "not an integer"),
            (
                r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"a","intValue":"1"}}]}]}]}"#,
                "more than one value",
            ),
            (r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"intValue":"x"}}]}]}]}"#, "64-bit"),
            (r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"bytesValue":"!!"}}]}]}]}"#, "base64"),
            (r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"LOUD"}]}]}]}"#, "LOUD"),
            (r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{}]}]}]"#, "EOF"),
        ] {
            match decode(text.as_bytes()) {
                Err(OtlpError::Json(message)) => assert!(message.contains(needle), "{text}: {message}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
