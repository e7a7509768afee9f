//! The field choice of the Elasticsearch bulk API and of JSON lines
//! (DESIGN.md section 11): how one arbitrary JSON document becomes an
//! entry, as VictoriaLogs does it, so that a shipper configured for
//! VictoriaLogs (or for Elasticsearch) needs only a new URL.
//!
//! A document is a JSON object. It is first flattened: nested objects
//! become dotted keys (`{"host":{"name":"a"}}` is `host.name = "a"`, as
//! ECS shippers such as Filebeat nest them), strings are taken as they are,
//! numbers and booleans keep their exact JSON text (`1.50` stays `1.50`,
//! never a float's rendering), arrays keep their JSON text without
//! insignificant whitespace, and `null` is skipped as if absent. When a key
//! occurs twice (also after flattening: `{"a.b":1,"a":{"b":2}}`), the last
//! one wins, as in most JSON readers. Then, in this order:
//!
//! 1. **time**: the first name of `_time_field` that is present gives the
//!    timestamp ([`parse_time`]) and leaves the fields; none present (or an
//!    empty value, `0` or `-`) means the time the request came in;
//! 2. **body**: the first name of `_msg_field` present with a non-empty
//!    value is the body and leaves the fields; none means an empty body;
//! 3. **tags**: every name of `_stream_fields` that is present becomes a tag
//!    of that name and leaves the fields (a tag the protocol set already,
//!    the Elasticsearch `index`, is kept, and the document's value stays a
//!    field);
//! 4. **fields**: everything else.
//!
//! The lists come from the query arguments `_msg_field`, `_time_field`,
//! `_stream_fields`, else from the headers `VL-Msg-Field`, `VL-Time-Field`,
//! `VL-Stream-Fields` (VictoriaLogs' names), else the defaults; each is a
//! comma-separated list, and a list given empty chooses nothing (no body, no
//! time field, no tags). The entry is then checked against the entry limits
//! here, so a protocol can refuse one document and keep the others.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::codec::block;
use crate::limits::{DOCUMENT_DEPTH_MAX, FIELD_CHOICE_NAMES_MAX};
use crate::proto::LogEntry;

/// The query argument naming the body's fields.
pub const MSG_FIELD_PARAM: &str = "_msg_field";
/// The query argument naming the timestamp's fields.
pub const TIME_FIELD_PARAM: &str = "_time_field";
/// The query argument naming the fields that become tags.
pub const STREAM_FIELDS_PARAM: &str = "_stream_fields";
/// The header naming the body's fields (VictoriaLogs' name).
pub const MSG_FIELD_HEADER: &str = "VL-Msg-Field";
/// The header naming the timestamp's fields (VictoriaLogs' name).
pub const TIME_FIELD_HEADER: &str = "VL-Time-Field";
/// The header naming the fields that become tags (VictoriaLogs' name).
pub const STREAM_FIELDS_HEADER: &str = "VL-Stream-Fields";

/// Default `_msg_field`: what Filebeat, Logstash (`message`), Fluent Bit
/// (`log`), Go's slog (`msg`) and VictoriaLogs (`_msg`) call the line.
pub const MSG_FIELDS_DEFAULT: &[&str] = &["message", "msg", "log", "_msg"];
/// Default `_time_field`: ECS and Logstash (`@timestamp`), then the usual
/// names of structured loggers.
pub const TIME_FIELDS_DEFAULT: &[&str] = &["@timestamp", "timestamp", "time", "ts"];
/// Default `_stream_fields`: the low-cardinality ECS / OpenTelemetry names.
pub const STREAM_FIELDS_DEFAULT: &[&str] = &["host.name", "service.name", "level"];

/// A bad parameter of the field choice.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{param} names {count} fields, over the limit of {max} (FIELD_CHOICE_NAMES_MAX)", max = FIELD_CHOICE_NAMES_MAX)]
pub struct ChoiceError {
    /// The parameter (`_msg_field`, ...).
    pub param: &'static str,
    /// How many names it gave.
    pub count: usize,
}

/// Why a timestamp was not understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Neither RFC 3339 (nor a bare date) nor a Unix number.
    #[error("{0:?} is neither an RFC 3339 timestamp nor a Unix time in s, ms, us or ns")]
    Unrecognized(String),
    /// Understood, but nanoseconds since the epoch do not fit in an i64.
    #[error("{0:?} is out of range: nanoseconds since the Unix epoch must fit in an i64 (1677-09-21 to 2262-04-11)")]
    OutOfRange(String),
}

/// Why one document cannot be an entry; names what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Not JSON (serde_json's message, with line and column).
    #[error("not JSON: {0}")]
    Json(String),
    /// JSON, but not an object.
    #[error("a document must be a JSON object, not {0}")]
    NotObject(&'static str),
    /// Nested deeper than [`DOCUMENT_DEPTH_MAX`].
    #[error("objects are nested deeper than {max} levels (DOCUMENT_DEPTH_MAX)", max = DOCUMENT_DEPTH_MAX)]
    TooDeep,
    /// The time field's value is not a timestamp.
    #[error("field {field:?}: {reason}")]
    Time {
        /// The time field.
        field: String,
        /// What is wrong with it.
        reason: TimeError,
    },
    /// Over an entry limit (a tag value too long, too many fields, ...).
    #[error("{0}")]
    Entry(String),
}

impl DocumentError {
    /// Whether the document itself could not be read (as opposed to being
    /// read and then over a limit).
    pub fn is_parse_error(&self) -> bool {
        !matches!(self, DocumentError::Entry(_))
    }
}

/// Which fields of a document are its body, time and tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldChoice {
    /// `_msg_field`: the first present with a non-empty value is the body.
    pub msg_fields: Vec<String>,
    /// `_time_field`: the first present is the timestamp.
    pub time_fields: Vec<String>,
    /// `_stream_fields`: each present becomes a tag.
    pub stream_fields: Vec<String>,
}

impl Default for FieldChoice {
    fn default() -> FieldChoice {
        let owned = |names: &[&str]| names.iter().map(|name| name.to_string()).collect();
        FieldChoice {
            msg_fields: owned(MSG_FIELDS_DEFAULT),
            time_fields: owned(TIME_FIELDS_DEFAULT),
            stream_fields: owned(STREAM_FIELDS_DEFAULT),
        }
    }
}

/// The names of a comma-separated list, trimmed, empty ones dropped.
fn names(param: &'static str, list: &str) -> Result<Vec<String>, ChoiceError> {
    let names: Vec<String> =
        list.split(',').map(str::trim).filter(|name| !name.is_empty()).map(str::to_string).collect();
    if names.len() > FIELD_CHOICE_NAMES_MAX {
        return Err(ChoiceError { param, count: names.len() });
    }
    Ok(names)
}

impl FieldChoice {
    /// The choice from the three parameters as given (each the query
    /// argument, else the header; `None` for neither, which keeps the
    /// default).
    pub fn from_params(
        msg: Option<&str>,
        time: Option<&str>,
        stream: Option<&str>,
    ) -> Result<FieldChoice, ChoiceError> {
        let mut choice = FieldChoice::default();
        if let Some(list) = msg {
            choice.msg_fields = names(MSG_FIELD_PARAM, list)?;
        }
        if let Some(list) = time {
            choice.time_fields = names(TIME_FIELD_PARAM, list)?;
        }
        if let Some(list) = stream {
            choice.stream_fields = names(STREAM_FIELDS_PARAM, list)?;
        }
        Ok(choice)
    }

    /// The entry of one `document` (a JSON object), with `tags` set by the
    /// protocol already (they win over a stream field of the same name);
    /// `now_ns` is its time when it names none. Checked against the entry
    /// limits.
    pub fn entry(
        &self,
        document: &str,
        mut tags: BTreeMap<String, String>,
        now_ns: i64,
    ) -> Result<LogEntry, DocumentError> {
        let mut pairs = flatten(document)?;
        let mut timestamp_ns = now_ns;
        if let Some((field, value)) = self.time_fields.iter().find_map(|name| take(&mut pairs, name, |_| true)) {
            match parse_time(&value) {
                Ok(Some(ns)) => timestamp_ns = ns,
                Ok(None) => {}
                Err(reason) => return Err(DocumentError::Time { field, reason }),
            }
        }
        let body = self
            .msg_fields
            .iter()
            .find_map(|name| take(&mut pairs, name, |value| !value.is_empty()))
            .map(|(_, value)| value)
            .unwrap_or_default();
        for name in &self.stream_fields {
            if tags.contains_key(name) {
                continue;
            }
            if let Some((name, value)) = take(&mut pairs, name, |_| true) {
                tags.insert(name, value);
            }
        }
        // Later pairs overwrite earlier ones: the last of a repeated key wins.
        let fields: BTreeMap<String, String> = pairs.into_iter().collect();
        let entry = LogEntry { timestamp_ns, tags, body: body.into_bytes().into(), fields, ..Default::default() };
        block::with_log_entry_refs(std::iter::once(&entry), |refs| refs.iter().try_for_each(block::validate_entry))
            .map_err(|failure| DocumentError::Entry(failure.to_string()))?;
        Ok(entry)
    }
}

/// Removes every pair named `name` and returns the name and the last value,
/// if that value passes `accept` (otherwise leaves them all).
fn take(pairs: &mut Vec<(String, String)>, name: &str, accept: impl Fn(&str) -> bool) -> Option<(String, String)> {
    let last = pairs.iter().rposition(|(key, _)| key == name)?;
    if !accept(&pairs[last].1) {
        return None;
    }
    let (key, value) = pairs.swap_remove(last);
    pairs.retain(|(other, _)| other != name);
    Some((key, value))
}

/// The flattened pairs of a JSON object, in document order (a repeated key
/// repeats): nested objects as dotted keys, strings unescaped, numbers and
/// booleans as their JSON text, arrays as their compact JSON text, `null`
/// skipped.
pub fn flatten(document: &str) -> Result<Vec<(String, String)>, DocumentError> {
    let raw: &RawValue = serde_json::from_str(document).map_err(|error| DocumentError::Json(error.to_string()))?;
    let text = raw.get().trim_start();
    if !text.starts_with('{') {
        return Err(DocumentError::NotObject(kind_of(text)));
    }
    let mut pairs = Vec::new();
    flatten_object(text, "", 1, &mut pairs)?;
    Ok(pairs)
}

/// What a JSON value is, from its first byte, for errors.
fn kind_of(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn flatten_object(
    text: &str,
    prefix: &str,
    depth: usize,
    pairs: &mut Vec<(String, String)>,
) -> Result<(), DocumentError> {
    if depth > DOCUMENT_DEPTH_MAX {
        return Err(DocumentError::TooDeep);
    }
    let members: Members<'_> = serde_json::from_str(text).map_err(|error| DocumentError::Json(error.to_string()))?;
    for (key, value) in members.0 {
        let name = if prefix.is_empty() { key.into_owned() } else { format!("{prefix}.{key}") };
        let raw = value.get().trim();
        match raw.as_bytes().first() {
            Some(b'{') => flatten_object(raw, &name, depth + 1, pairs)?,
            Some(b'"') => pairs.push((name, unquote(raw)?)),
            Some(b'n') => {}
            Some(b'[') => pairs.push((name, compact(raw))),
            _ => pairs.push((name, raw.to_owned())),
        }
    }
    Ok(())
}

/// A JSON string's value (`raw` is valid JSON already: without a backslash
/// its content is the text between the quotes).
fn unquote(raw: &str) -> Result<String, DocumentError> {
    if !raw.contains('\\') && raw.len() >= 2 {
        return Ok(raw[1..raw.len() - 1].to_owned());
    }
    serde_json::from_str(raw).map_err(|error| DocumentError::Json(error.to_string()))
}

/// Valid JSON text without its insignificant whitespace.
fn compact(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let (mut in_string, mut escaped) = (false, false);
    for character in raw.chars() {
        if in_string {
            out.push(character);
            if escaped {
                escaped = false;
            } else if character == '\\' {
                escaped = true;
            } else if character == '"' {
                in_string = false;
            }
        } else if !matches!(character, ' ' | '\t' | '\n' | '\r') {
            in_string = character == '"';
            out.push(character);
        }
    }
    out
}

/// One object's members, in order, values left as JSON text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            members.push((key, value));
        }
        Ok(Members(members))
    }
}

/// An object key, borrowed from the document unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor).map(Key)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text.to_owned()))
    }
}

/// A timestamp as VictoriaLogs reads one: `Ok(None)` for "use the time of
/// arrival" (empty, `0` or `-`); RFC 3339 (`2024-05-01T12:00:00.123Z`, any
/// offset, `T` or a space, up to nanoseconds) or a bare date (`2024-05-01`, midnight UTC)
/// when the fifth character is `-`; else a Unix time, integer, fractional
/// or with an exponent, numeric or in a string, whose unit is picked by its
/// magnitude as VictoriaLogs picks it: with `n` its integer part,
/// `|n| < 2^31` is seconds, `< 2^31·10^3` milliseconds, `< 2^31·10^6`
/// microseconds, and anything larger nanoseconds. (So seconds reach
/// 2038-01-19 and milliseconds, microseconds and nanoseconds cover every
/// date since 1970-01-25; a fraction is a fraction of the unit picked,
/// truncated to the nanosecond.)
pub fn parse_time(text: &str) -> Result<Option<i64>, TimeError> {
    let text = text.trim();
    if matches!(text, "" | "0" | "-") {
        return Ok(None);
    }
    if text.len() > 4 && text.as_bytes()[4] == b'-' {
        return rfc3339_nanos(text).map(Some);
    }
    unix_nanos(text).map(Some)
}

fn rfc3339_nanos(text: &str) -> Result<i64, TimeError> {
    let moment = if text.len() == "YYYY-MM-DD".len() {
        date_midnight(text).ok_or_else(|| TimeError::Unrecognized(text.to_owned()))?
    } else {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|_| TimeError::Unrecognized(text.to_owned()))?
    };
    i64::try_from(moment.unix_timestamp_nanos()).map_err(|_| TimeError::OutOfRange(text.to_owned()))
}

/// `YYYY-MM-DD` at midnight UTC.
fn date_midnight(text: &str) -> Option<time::OffsetDateTime> {
    let mut parts = text.split('-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    let date = time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    Some(date.midnight().assume_utc())
}

/// The largest exponent a Unix time may carry: 10^30 is far past any
/// nanosecond count, so a larger one is out of range without padding a
/// string of that many zeros.
const UNIX_EXPONENT_MAX: i64 = 30;

fn unix_nanos(text: &str) -> Result<i64, TimeError> {
    let unrecognized = || TimeError::Unrecognized(text.to_owned());
    let out_of_range = || TimeError::OutOfRange(text.to_owned());
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => {
            let exponent = &unsigned[at + 1..];
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(unrecognized());
            }
            (&unsigned[..at], exponent.parse::<i64>().map_err(|_| out_of_range())?)
        }
        None => (unsigned, 0),
    };
    if exponent.abs() > UNIX_EXPONENT_MAX {
        return Err(out_of_range());
    }
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if integer.is_empty()
        || !all_digits(integer)
        || !all_digits(fraction)
        || (mantissa.contains('.') && fraction.is_empty())
    {
        return Err(unrecognized());
    }
    // Move the decimal point by the exponent: `digits` with the point after
    // `point` of them (padded with zeros on either side as needed).
    let digits = format!("{integer}{fraction}");
    let point = integer.len() as i64 + exponent;
    let (whole, part) = if point <= 0 {
        (String::from("0"), format!("{}{digits}", "0".repeat(point.unsigned_abs() as usize)))
    } else if point as usize >= digits.len() {
        (format!("{digits}{}", "0".repeat(point as usize - digits.len())), String::new())
    } else {
        (digits[..point as usize].to_owned(), digits[point as usize..].to_owned())
    };
    let whole = whole.trim_start_matches('0');
    if whole.len() > 30 {
        return Err(out_of_range());
    }
    let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| out_of_range())? };
    const SECONDS_MAX: i128 = 1 << 31;
    let unit_digits = match whole {
        _ if whole < SECONDS_MAX => 9,
        _ if whole < SECONDS_MAX * 1_000 => 6,
        _ if whole < SECONDS_MAX * 1_000_000 => 3,
        _ => 0,
    };
    let mut sub_unit: String = part.chars().take(unit_digits).collect();
    while sub_unit.len() < unit_digits {
        sub_unit.push('0');
    }
    let sub_unit: i128 = if sub_unit.is_empty() { 0 } else { sub_unit.parse().map_err(|_| out_of_range())? };
    let nanos = whole * 10i128.pow(unit_digits as u32) + sub_unit;
    let nanos = if negative { -nanos } else { nanos };
    i64::try_from(nanos).map_err(|_| out_of_range())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
    }

    fn entry(document: &str) -> LogEntry {
        FieldChoice::default().entry(document, BTreeMap::new(), NOW).unwrap()
    }

    #[test]
    fn flattening_keeps_the_json_text_of_numbers_booleans_and_arrays() {
        let pairs = flatten(
            r#"{"a":{"b":{"c":"deep"}},"n":1.50,"big":123456789012345678901234567890,"e":1e5,"t":true,"f":false,
               "nothing":null,"list":[1, "two" , {"three": 3}, "a \" , b"],"s":"tab\there","u":"\u00e9","empty":{}}"#,
        )
        .unwrap();
        let expected = [
            ("a.b.c", "deep"),
            ("n", "1.50"),
            ("big", "123456789012345678901234567890"),
            ("e", "1e5"),
            ("t", "true"),
            ("f", "false"),
            ("list", r#"[1,"two",{"three":3},"a \" , b"]"#),
            ("s", "tab\there"),
            ("u", "é"),
        ];
        let expected: Vec<(String, String)> = expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(pairs, expected);
    }

    #[test]
    fn escaped_keys_are_unescaped_and_repeated_keys_repeat() {
        let pairs = flatten(r#"{"k\"ey":1,"a.b":1,"a":{"b":2}}"#).unwrap();
        assert_eq!(pairs[0], ("k\"ey".to_string(), "1".to_string()));
        assert_eq!(&pairs[1..], &[("a.b".to_string(), "1".to_string()), ("a.b".to_string(), "2".to_string())]);
        assert_eq!(entry(r#"{"a.b":1,"a":{"b":2}}"#).fields, map(&[("a.b", "2")]), "the last wins");
    }

    #[test]
    fn a_document_must_be_one_json_object() {
        assert!(matches!(flatten(r#"{"a":1"#), Err(DocumentError::Json(_))));
        assert!(matches!(flatten(r#"{"a":1} {"b":2}"#), Err(DocumentError::Json(_))));
        assert_eq!(flatten("[1,2]"), Err(DocumentError::NotObject("an array")));
        assert_eq!(flatten(r#""text""#), Err(DocumentError::NotObject("a string")));
        assert_eq!(flatten("42"), Err(DocumentError::NotObject("a number")));
        assert_eq!(flatten("null"), Err(DocumentError::NotObject("null")));
        assert_eq!(flatten(" {} "), Ok(vec![]));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = |levels: usize| format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels));
        assert_eq!(flatten(&deep(DOCUMENT_DEPTH_MAX)).unwrap().len(), 1);
        assert_eq!(flatten(&deep(DOCUMENT_DEPTH_MAX + 1)), Err(DocumentError::TooDeep));
        // Arrays are kept as text, not walked: their depth costs nothing here.
        assert_eq!(flatten(&format!(r#"{{"a":{}{}}}"#, "[".repeat(100), "]".repeat(100))).unwrap().len(), 1);
    }

    #[test]
    fn the_default_choice_takes_body_time_and_tags() {
        let entry = entry(
            r#"{"@timestamp":"2024-05-01T12:00:00.123456789Z","message":"Receiving block blk_1","host":{"name":"dn-7"},
               "service.name":"hdfs","level":"INFO","log":{"file":{"path":"/var/log/hdfs.log"}},"pid":143}"#,
        );
        assert_eq!(entry.timestamp_ns, 1_714_564_800_123_456_789);
        assert_eq!(&entry.body[..], b"Receiving block blk_1");
        assert_eq!(entry.tags, map(&[("host.name", "dn-7"), ("service.name", "hdfs"), ("level", "INFO")]));
        assert_eq!(entry.fields, map(&[("log.file.path", "/var/log/hdfs.log"), ("pid", "143")]));
        assert_eq!((entry.seq, entry.node_id, entry.shard), (0, 0, 0));
    }

    #[test]
    fn the_first_present_message_field_in_list_order_is_the_body() {
        let entry = entry(r#"{"_msg":"d","log":"c","msg":"b"}"#);
        assert_eq!(&entry.body[..], b"b");
        assert_eq!(entry.fields, map(&[("_msg", "d"), ("log", "c")]));
        let entry = super::tests::entry(r#"{"message":"","log":"c"}"#);
        assert_eq!(&entry.body[..], b"c", "an empty message is passed over");
        assert_eq!(entry.fields, map(&[("message", "")]));
        let entry = super::tests::entry(r#"{"other":"x"}"#);
        assert_eq!((&entry.body[..], entry.timestamp_ns), (&b""[..], NOW), "no body field, no time field");
        let entry = super::tests::entry(r#"{"message":{"text":"nested"},"msg":42}"#);
        assert_eq!(&entry.body[..], b"42", "a number is its text");
        assert_eq!(entry.fields, map(&[("message.text", "nested")]));
    }

    #[test]
    fn the_first_present_time_field_in_list_order_is_the_time() {
        let entry = entry(r#"{"ts":1,"time":"2024-05-01","timestamp":1714564800123}"#);
        assert_eq!(entry.timestamp_ns, 1_714_564_800_123_000_000, "timestamp before time before ts");
        assert_eq!(entry.fields, map(&[("time", "2024-05-01"), ("ts", "1")]), "the others stay fields");
        for now in [r#"{"@timestamp":""}"#, r#"{"@timestamp":"0"}"#, r#"{"@timestamp":0}"#, r#"{"time":"-"}"#] {
            let entry = super::tests::entry(now);
            assert_eq!(entry.timestamp_ns, NOW, "{now}");
            assert!(entry.fields.is_empty(), "{now}: the time field leaves the fields even when empty");
        }
        let refused = FieldChoice::default().entry(r#"{"time":"yesterday"}"#, BTreeMap::new(), NOW).unwrap_err();
        assert_eq!(
            refused,
            DocumentError::Time { field: "time".into(), reason: TimeError::Unrecognized("yesterday".into()) }
        );
        assert!(refused.is_parse_error());
        let refused = FieldChoice::default().entry(r#"{"time":true}"#, BTreeMap::new(), NOW).unwrap_err();
        assert!(matches!(refused, DocumentError::Time { .. }), "{refused}");
    }

    #[test]
    fn stream_fields_become_tags_unless_the_protocol_set_them() {
        let choice = FieldChoice::from_params(None, None, Some("index, app ,,missing")).unwrap();
        assert_eq!(choice.stream_fields, ["index", "app", "missing"]);
        let entry = choice
            .entry(r#"{"index":"doc's","app":"web","level":"INFO"}"#, map(&[("index", "from-action")]), NOW)
            .unwrap();
        assert_eq!(entry.tags, map(&[("app", "web"), ("index", "from-action")]));
        assert_eq!(entry.fields, map(&[("index", "doc's"), ("level", "INFO")]), "level is no stream field here");
    }

    #[test]
    fn parameters_replace_the_defaults_and_an_empty_list_chooses_nothing() {
        let choice = FieldChoice::from_params(Some("line"), Some("when"), Some("")).unwrap();
        assert_eq!(
            choice,
            FieldChoice { msg_fields: vec!["line".into()], time_fields: vec!["when".into()], stream_fields: vec![] }
        );
        let entry = choice
            .entry(r#"{"line":"l","message":"m","when":1714564800,"host.name":"h"}"#, BTreeMap::new(), NOW)
            .unwrap();
        assert_eq!((&entry.body[..], entry.timestamp_ns), (&b"l"[..], 1_714_564_800_000_000_000));
        assert!(entry.tags.is_empty());
        assert_eq!(entry.fields, map(&[("host.name", "h"), ("message", "m")]));
        let nothing = FieldChoice::from_params(Some(""), Some(" "), None).unwrap();
        let entry = nothing.entry(r#"{"message":"m","ts":5}"#, BTreeMap::new(), NOW).unwrap();
        assert_eq!((&entry.body[..], entry.timestamp_ns), (&b""[..], NOW));
        assert_eq!(entry.fields, map(&[("message", "m"), ("ts", "5")]));

        let many = vec!["f"; FIELD_CHOICE_NAMES_MAX + 1].join(",");
        assert_eq!(
            FieldChoice::from_params(None, None, Some(&many)),
            Err(ChoiceError { param: STREAM_FIELDS_PARAM, count: FIELD_CHOICE_NAMES_MAX + 1 })
        );
        assert!(FieldChoice::from_params(Some(&vec!["f"; FIELD_CHOICE_NAMES_MAX].join(",")), None, None).is_ok());
    }

    #[test]
    fn entries_over_a_limit_are_refused_by_name() {
        let long = "v".repeat(crate::limits::TAG_VALUE_BYTES_MAX + 1);
        let refused =
            FieldChoice::default().entry(&format!(r#"{{"level":"{long}"}}"#), BTreeMap::new(), NOW).unwrap_err();
        assert!(
            matches!(&refused, DocumentError::Entry(message) if message.contains("TAG_VALUE_BYTES_MAX")),
            "{refused}"
        );
        assert!(!refused.is_parse_error());
        let many: Vec<String> = (0..=crate::limits::ENTRY_FIELDS_MAX).map(|index| format!(r#""f{index}":1"#)).collect();
        let refused =
            FieldChoice::default().entry(&format!("{{{}}}", many.join(",")), BTreeMap::new(), NOW).unwrap_err();
        assert!(matches!(&refused, DocumentError::Entry(message) if message.contains("ENTRY_FIELDS_MAX")), "{refused}");
        let refused = FieldChoice::default().entry(r#"{"":1}"#, BTreeMap::new(), NOW).unwrap_err();
        assert!(matches!(&refused, DocumentError::Entry(message) if message.contains("empty field key")), "{refused}");
    }

    #[test]
    fn rfc3339_and_bare_dates() {
        assert_eq!(parse_time("2024-05-01T12:00:00Z"), Ok(Some(1_714_564_800_000_000_000)));
        assert_eq!(parse_time("2024-05-01T14:00:00.5+02:00"), Ok(Some(1_714_564_800_500_000_000)));
        assert_eq!(parse_time("2024-05-01T12:00:00.000000001Z"), Ok(Some(1_714_564_800_000_000_001)));
        assert_eq!(parse_time("2024-05-01"), Ok(Some(1_714_521_600_000_000_000)));
        assert_eq!(parse_time(" 2024-05-01 "), Ok(Some(1_714_521_600_000_000_000)), "trimmed");
        assert_eq!(parse_time("2024-05-01 12:00:00Z"), Ok(Some(1_714_564_800_000_000_000)), "RFC 3339's space");
        for bad in ["2024-05-01T12:00:00", "2024-13-01", "2024-05-01Tnoon"] {
            assert_eq!(parse_time(bad), Err(TimeError::Unrecognized(bad.into())), "{bad}");
        }
        assert_eq!(parse_time("2263-01-01T00:00:00Z"), Err(TimeError::OutOfRange("2263-01-01T00:00:00Z".into())));
    }

    #[test]
    fn unix_times_pick_their_unit_by_magnitude() {
        let second = 1_714_564_800i64;
        assert_eq!(parse_time("1714564800"), Ok(Some(second * 1_000_000_000)));
        assert_eq!(parse_time("1714564800123"), Ok(Some(second * 1_000_000_000 + 123_000_000)));
        assert_eq!(parse_time("1714564800123456"), Ok(Some(second * 1_000_000_000 + 123_456_000)));
        assert_eq!(parse_time("1714564800123456789"), Ok(Some(second * 1_000_000_000 + 123_456_789)));
        // The boundaries: 2^31 - 1 is still seconds, 2^31 milliseconds.
        assert_eq!(parse_time("2147483647"), Ok(Some(2_147_483_647_000_000_000)));
        assert_eq!(parse_time("2147483648"), Ok(Some(2_147_483_648_000_000)));
        assert_eq!(parse_time("2147483647999"), Ok(Some(2_147_483_647_999_000_000)));
        assert_eq!(parse_time("2147483648000"), Ok(Some(2_147_483_648_000_000)), "microseconds");
        assert_eq!(parse_time("2147483648000000"), Ok(Some(2_147_483_648_000_000)), "nanoseconds");
        assert_eq!(parse_time("-1"), Ok(Some(-1_000_000_000)), "before 1970");
        assert_eq!(parse_time("1"), Ok(Some(1_000_000_000)));
    }

    #[test]
    fn unix_times_take_fractions_and_exponents() {
        let second = 1_714_564_800_000_000_000i64;
        assert_eq!(parse_time("1714564800.5"), Ok(Some(second + 500_000_000)));
        assert_eq!(parse_time("1714564800.123456789"), Ok(Some(second + 123_456_789)));
        assert_eq!(parse_time("1714564800.1234567899"), Ok(Some(second + 123_456_789)), "truncated to the ns");
        assert_eq!(parse_time("1714564800123.456"), Ok(Some(second + 123_456_000)), "a fraction of a millisecond");
        assert_eq!(parse_time("1.7145648e9"), Ok(Some(second)));
        assert_eq!(parse_time("1.714564800123E12"), Ok(Some(second + 123_000_000)));
        assert_eq!(parse_time("17145648001e-1"), Ok(Some(second + 100_000_000)));
        assert_eq!(parse_time("5e-1"), Ok(Some(500_000_000)));
        assert_eq!(parse_time("-1.5"), Ok(Some(-1_500_000_000)));
        for bad in ["abc", "1.", ".5", "1e", "1e+", "1x", "--1", "1.2.3", "0x10", "1e5.5"] {
            assert!(matches!(parse_time(bad), Err(TimeError::Unrecognized(_))), "{bad}: {:?}", parse_time(bad));
        }
        for far in ["1e31", "99999999999999999999999999999999999", "9223372036854775808"] {
            assert_eq!(parse_time(far), Err(TimeError::OutOfRange(far.into())), "{far}");
        }
        assert_eq!(parse_time("9223372036854775807"), Ok(Some(i64::MAX)));
    }
}
