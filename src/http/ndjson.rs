//! NDJSON ingest parsing and query output encoding (DESIGN.md section 7).
//!
//! Pure code: no I/O. The HTTP layer hands [`parse_ndjson`] the whole request
//! body and passes [`Batch::entry_refs`] to `Shard::append`; queries write
//! each result with [`write_entry_line`].
//!
//! # Ingest: one entry a line
//!
//! ```text
//! {"ts": 1795313248000000000, "tags": {"host": "web-1"}, "body": "GET / 200"}
//! {"ts": "2026-11-22T04:07:28.5+02:00", "body": "no tags"}
//! {"body": "no ts: the shard stamps it"}
//! ```
//!
//! - Lines are split on `\n`; one trailing `\r` is stripped, so CRLF works.
//!   Line numbers are 1-based and count every line, blank ones included.
//! - A blank or whitespace-only line (ASCII whitespace) is skipped.
//! - Each other line is exactly one JSON object; anything else on the line,
//!   or a line that is not an object, is an error.
//! - `ts` (optional): absent, `null` or `0` mean 0, which the shard reads as
//!   "now". An integer is nanoseconds since the Unix epoch (negative allowed,
//!   must fit an `i64`; `-0` reads as a float and is refused). A string is RFC 3339 with any offset and any
//!   fractional digits, converted to nanoseconds since the epoch; outside the
//!   `i64` range (1677-09-21 to 2262-04-11) it is an error. A float, a
//!   boolean, an array or an object is an error.
//! - `tags` (optional): absent or `null` mean no tags; otherwise an object
//!   whose values are all strings ("tags must be an object of strings").
//!   Duplicate keys, an empty key and the sizes of [`crate::limits`] are
//!   errors. At most [`limits::ENTRY_TAGS_MAX`] tags are read before the
//!   line is refused, so a hostile line cannot grow the tag buffer.
//! - `fields` (optional): like `tags` ("fields must be an object of
//!   strings"), stored with the entry but not indexed; bounded by
//!   [`limits::ENTRY_FIELDS_MAX`], [`limits::FIELD_KEY_BYTES_MAX`],
//!   [`limits::FIELD_VALUE_BYTES_MAX`] and [`limits::ENTRY_FIELDS_BYTES_MAX`].
//! - `body` (required): a JSON string, possibly empty.
//! - A field other than these four, or one of them twice, is an error
//!   that names it: the contract is strict so that a typo (`"tag"`) is not
//!   silently dropped.
//! - Invalid UTF-8 anywhere, and lone surrogate escapes, are errors.
//! - Every entry then passes [`validate_entry`] (body size, tag count, key
//!   and value sizes, empty or duplicate key).
//! - At most `entries_max` entries per request; the first entry over it is
//!   the error.
//!
//! A request is all or nothing: the first bad line, in line order, is
//! reported as [`LineError`] (`line 17: ...`, an HTTP 400) and nothing of it
//! is stored.
//!
//! # Allocation
//!
//! Strings are borrowed from the request body; only a JSON string with
//! escapes is copied (it must be decoded). A [`Batch`] holds two flat
//! vectors, one of entries and one of all tags with a range per entry, so
//! parsing allocates nothing per entry beyond their amortised growth. The
//! entry vector is reserved up front from a count of the lines, bounded by
//! `entries_max` and by the body size.
//!
//! # Two parsers, one grammar
//!
//! Lines of the common shape (no escapes, an integer, `null` or RFC 3339
//! `ts`, each field once) are parsed by a small hand-written scanner; every
//! other line, valid or not, goes to serde_json, which also words every
//! error. The scanner accepts only what serde_json accepts, with the same
//! result, which property tests check on generated and mutated lines. On
//! LogHub bodies it made parsing about 1.5x faster (`benches/ndjson.rs`).
//!
//! # Query output
//!
//! [`write_entry_line`] appends one line
//! `{"node":1,"shard":0,"seq":7,"ts":123,"tags":{"k":"v"},"body":"text"}`,
//! keys in that order, then last `"fields":{"k":"v"}` when the entry has
//! any, tags and fields in key order, `"body_base64"` (standard alphabet,
//! padded) instead of `"body"` when the body is not valid UTF-8.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use base64::Engine as _;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::codec::block::{validate_entry, EntryRef};
use crate::limits;
use crate::proto::LogEntry;

/// Why a request body was refused: the first bad line.
///
/// Displays as `line {line}: {message}`, the text of the HTTP 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    /// 1-based number of the line, counting every line of the body.
    pub line: usize,
    /// What is wrong with it, without the line number.
    pub message: String,
}

/// All entries of one request, borrowing their strings from the body.
///
/// Every entry has passed [`validate_entry`]. A batch may be empty (a body
/// of blank lines); the caller decides whether that is an error.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    entries: Vec<ParsedEntry<'a>>,
    /// The tags of every entry, back to back in entry order.
    tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// The fields of every entry, likewise; empty (never allocated) when
    /// no entry has fields.
    fields: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

#[derive(Debug)]
struct ParsedEntry<'a> {
    /// Where the entry came from, for errors found after parsing.
    line: usize,
    timestamp_ns: i64,
    /// This entry's slice of [`Batch::tags`].
    tags: Range<usize>,
    /// This entry's slice of [`Batch::fields`].
    fields: Range<usize>,
    body: Cow<'a, str>,
}

impl<'a> Batch<'a> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the request held no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Builds the borrowed entries for `Shard::append`, in request order.
    ///
    /// `tag_scratch` is cleared and filled with every tag of the batch; the
    /// returned entries slice into it. Two allocations per batch at most
    /// (the result, and `tag_scratch` growth), none per entry.
    /// Fields go into `tag_scratch` too, after the tags (so entries without
    /// fields add nothing).
    pub fn entry_refs<'b>(&'b self, tag_scratch: &'b mut Vec<(&'b str, &'b str)>) -> Vec<EntryRef<'b>> {
        tag_scratch.clear();
        tag_scratch.extend(self.tags.iter().map(|(key, value)| (key.as_ref(), value.as_ref())));
        tag_scratch.extend(self.fields.iter().map(|(key, value)| (key.as_ref(), value.as_ref())));
        let (tags, fields): (&'b [(&'b str, &'b str)], _) = tag_scratch.split_at(self.tags.len());
        self.entries
            .iter()
            .map(|entry| EntryRef {
                timestamp_ns: entry.timestamp_ns,
                tags: &tags[entry.tags.clone()],
                body: entry.body.as_bytes(),
                fields: &fields[entry.fields.clone()],
            })
            .collect()
    }

    /// Runs [`validate_entry`] on every entry, in line order.
    fn validate(&self) -> Result<(), LineError> {
        // Tag counts were bounded while parsing, so this never regrows.
        let mut tags: Vec<(&str, &str)> = Vec::with_capacity(limits::ENTRY_TAGS_MAX);
        for entry in &self.entries {
            tags.clear();
            tags.extend(self.tags[entry.tags.clone()].iter().map(|(key, value)| (key.as_ref(), value.as_ref())));
            let fields_start = tags.len();
            tags.extend(self.fields[entry.fields.clone()].iter().map(|(key, value)| (key.as_ref(), value.as_ref())));
            let (entry_tags, fields) = tags.split_at(fields_start);
            let entry_ref =
                EntryRef { timestamp_ns: entry.timestamp_ns, tags: entry_tags, body: entry.body.as_bytes(), fields };
            validate_entry(&entry_ref).map_err(|error| LineError { line: entry.line, message: error.to_string() })?;
        }
        Ok(())
    }
}

/// Parses an NDJSON ingest body (rules in the module doc).
///
/// Returns every entry, or the first bad line in line order. More than
/// `entries_max` entries is an error on the first line over the bound.
pub fn parse_ndjson(body: &[u8], entries_max: usize) -> Result<Batch<'_>, LineError> {
    let mut batch = Batch::default();
    batch.entries.reserve(entries_capacity(body, entries_max));
    for (index, line) in (Lines { rest: Some(body) }).enumerate() {
        let line_number = index + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // Entries are validated once, after parsing (validating in the loop
        // would need a tag buffer per entry). So before reporting an error
        // on this line, report any earlier entry that fails validation: the
        // caller always gets the first bad line.
        if batch.entries.len() >= entries_max {
            batch.validate()?;
            let message = format!("more than {entries_max} entries in one request");
            return Err(LineError { line: line_number, message });
        }
        let tags_start = batch.tags.len();
        let fields_start = batch.fields.len();
        // The plain scanner leaves lines with fields to serde_json.
        let parsed = match parse_plain_line(line, &mut batch.tags) {
            Some(parsed) => Ok(parsed),
            None => {
                batch.tags.truncate(tags_start);
                parse_line(line, &mut batch.tags, &mut batch.fields)
            }
        };
        match parsed {
            Ok((timestamp_ns, body)) => {
                let tags = tags_start..batch.tags.len();
                let fields = fields_start..batch.fields.len();
                batch.entries.push(ParsedEntry { line: line_number, timestamp_ns, tags, fields, body });
            }
            Err(error) => {
                batch.validate()?;
                return Err(LineError { line: line_number, message: describe_json_error(&error) });
            }
        }
    }
    batch.validate()?;
    Ok(batch)
}

/// How many entries to reserve room for: the number of lines, but no more
/// than `entries_max + 1` (room for the first entry over the bound), and no
/// more than the shortest entry line (`{"body":""}` and a newline, 12 bytes)
/// allows, so that a body of blank lines cannot reserve more per byte than
/// real entries would use.
fn entries_capacity(body: &[u8], entries_max: usize) -> usize {
    const ENTRY_LINE_BYTES_MIN: usize = 12;
    let line_count = count_newlines(body) + 1;
    line_count.min(body.len() / ENTRY_LINE_BYTES_MIN + 1).min(entries_max.saturating_add(1))
}

fn count_newlines(bytes: &[u8]) -> usize {
    // Counting into a u8 per 64-byte chunk compiles to one vector compare
    // and subtract per 16 bytes; a plain `filter().count()` widens every
    // byte to a usize and was a sixth of the parse time.
    const CHUNK_BYTES: usize = 64;
    let mut chunks = bytes.chunks_exact(CHUNK_BYTES);
    let mut count = 0;
    for chunk in &mut chunks {
        let chunk_count = chunk.iter().fold(0u8, |sum, &byte| sum + u8::from(byte == b'\n'));
        count += usize::from(chunk_count);
    }
    count + chunks.remainder().iter().filter(|&&byte| byte == b'\n').count()
}

/// The lines of a body, split on `\n` like `slice::split`, but searching 16
/// bytes at a time: the byte loop of `split` was a fifth of the parse time.
struct Lines<'a> {
    /// What is left after the last `\n` returned; `None` once the last line
    /// (the bytes after the last `\n`, possibly none) was returned.
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match find_newline(rest) {
            Some(index) => {
                self.rest = Some(&rest[index + 1..]);
                Some(&rest[..index])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

fn find_newline(bytes: &[u8]) -> Option<usize> {
    const CHUNK_BYTES: usize = 16;
    let mut offset = 0;
    for chunk in bytes.chunks_exact(CHUNK_BYTES) {
        // No early exit inside the chunk, so this compiles to one vector
        // compare per chunk.
        if chunk.iter().fold(false, |found, &byte| found | (byte == b'\n')) {
            break;
        }
        offset += CHUNK_BYTES;
    }
    bytes[offset..].iter().position(|&byte| byte == b'\n').map(|index| offset + index)
}

/// Parses a line of the common shape without serde, or returns `None`.
///
/// The common shape: one object of the three fields, each at most once and
/// `body` present; every string (key, tag, body) free of escapes and
/// control characters; `ts` a plain integer in `i64` range, `null`, or an
/// RFC 3339 string that converts. Anything else, valid or not, is `None`,
/// and the caller parses the line again with [`parse_line`], which accepts
/// it or words the error. So this may only accept what `parse_line`
/// accepts, with the same result: a property test compares the two on
/// generated and mutated lines.
///
/// Why: serde_json checks each string's UTF-8 separately and goes through
/// a visitor per value; here the line's UTF-8 is checked once (every string
/// between ASCII quotes is then valid too) and strings are scanned 16 bytes
/// at a time. Parsing was a fifth of a saturated node's CPU.
fn parse_plain_line<'a>(line: &'a [u8], tags: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>) -> Option<(i64, Cow<'a, str>)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut cursor = PlainCursor { text, at: 0 };
    cursor.skip_whitespace();
    cursor.eat(b'{')?;
    let mut timestamp_ns = None;
    let mut tags_seen = false;
    let mut body = None;
    loop {
        match cursor.member_key()? {
            "ts" if timestamp_ns.is_none() => timestamp_ns = Some(cursor.timestamp()?),
            "tags" if !tags_seen => {
                tags_seen = true;
                cursor.tags(tags)?;
            }
            "body" if body.is_none() => body = Some(cursor.plain_string()?),
            _ => return None,
        }
        cursor.skip_whitespace();
        match cursor.next_byte()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    cursor.skip_whitespace();
    if cursor.at < text.len() {
        return None;
    }
    Some((timestamp_ns.unwrap_or(0), Cow::Borrowed(body?)))
}

/// A position in a line for [`parse_plain_line`]; every method returns
/// `None` on anything outside the common shape.
struct PlainCursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> PlainCursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn next_byte(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn eat(&mut self, expected: u8) -> Option<()> {
        (self.next_byte()? == expected).then_some(())
    }

    fn eat_literal(&mut self, literal: &str) -> Option<()> {
        self.text[self.at..].starts_with(literal).then(|| self.at += literal.len())
    }

    /// JSON's whitespace, as serde_json skips it.
    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string with no escape and no control character, borrowed.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let rest = &self.text.as_bytes()[self.at..];
        let length = plain_string_length(rest)?;
        // The quotes are ASCII, so both ends are char boundaries.
        let string = &self.text[self.at..self.at + length];
        self.at += length + 1;
        Some(string)
    }

    /// An object member's key and the `:` after it, with the whitespace
    /// around them; leaves the cursor on the value.
    fn member_key(&mut self) -> Option<&'a str> {
        self.skip_whitespace();
        let key = self.plain_string()?;
        self.skip_whitespace();
        self.eat(b':')?;
        self.skip_whitespace();
        Some(key)
    }

    fn timestamp(&mut self) -> Option<i64> {
        match self.peek()? {
            b'n' => self.eat_literal("null").map(|()| 0),
            b'"' => rfc3339_nanos(self.plain_string()?).ok(),
            _ => self.integer(),
        }
    }

    /// `-?(0|[1-9][0-9]*)` in `i64` range, not followed by a fraction or an
    /// exponent. serde_json reads `-0` as a float, so it is left to it.
    fn integer(&mut self) -> Option<i64> {
        let negative = self.peek()? == b'-';
        if negative {
            self.at += 1;
        }
        let digits = &self.text.as_bytes()[self.at..];
        let length = digits.iter().take_while(|byte| byte.is_ascii_digit()).count();
        if length == 0 || (digits[0] == b'0' && length > 1) {
            return None;
        }
        if matches!(digits.get(length), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut magnitude = 0u64;
        for &digit in &digits[..length] {
            magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
        }
        self.at += length;
        match negative {
            false => i64::try_from(magnitude).ok(),
            true if magnitude == 0 => None,
            true => 0i64.checked_sub_unsigned(magnitude),
        }
    }

    /// `null`, or an object of plain strings, pushed onto `tags`.
    fn tags(&mut self, tags: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>) -> Option<()> {
        if self.peek()? == b'n' {
            return self.eat_literal("null");
        }
        self.eat(b'{')?;
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        let mut count = 0;
        loop {
            let key = self.member_key()?;
            let value = self.plain_string()?;
            count += 1;
            if count > limits::ENTRY_TAGS_MAX {
                return None;
            }
            tags.push((Cow::Borrowed(key), Cow::Borrowed(value)));
            self.skip_whitespace();
            match self.next_byte()? {
                b',' => {}
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }
}

/// The length of a plain string's contents: the index of its closing
/// quote, or `None` if a backslash or a control character comes first (or
/// nothing does). Looks at 16 bytes at a time, as [`find_newline`] does.
fn plain_string_length(bytes: &[u8]) -> Option<usize> {
    const CHUNK_BYTES: usize = 16;
    // Bitwise, not short-circuit: the chunk loop then compiles to vector
    // compares (with `||` it was a branch per byte, 60 % of the parse).
    let special = |byte: u8| (byte == b'"') | (byte == b'\\') | (byte < 0x20);
    let mut offset = 0;
    for chunk in bytes.chunks_exact(CHUNK_BYTES) {
        if chunk.iter().fold(false, |found, &byte| found | special(byte)) {
            break;
        }
        offset += CHUNK_BYTES;
    }
    let index = offset + bytes[offset..].iter().position(|&byte| special(byte))?;
    (bytes[index] == b'"').then_some(index)
}

/// Parses one non-blank line, pushing its tags onto `tags` and its fields
/// onto `fields`. On error, some tags or fields of the line may have been
/// pushed.
fn parse_line<'a>(
    line: &'a [u8],
    tags: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
    fields: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
) -> Result<(i64, Cow<'a, str>), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(line);
    let parsed = LineSeed { tags, fields }.deserialize(&mut deserializer)?;
    // Refuses anything after the object, such as a second object.
    deserializer.end()?;
    Ok(parsed)
}

/// serde_json ends its messages with " at line 1 column N"; within one line
/// only the column says anything.
fn describe_json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&position) {
        Some(message) => format!("{message} at column {}", error.column()),
        None => text,
    }
}

/// Deserializes one line: fills the tag buffer, returns `(ts, body)`.
struct LineSeed<'t, 'a> {
    tags: &'t mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
    fields: &'t mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'de> DeserializeSeed<'de> for LineSeed<'_, 'de> {
    type Value = (i64, Cow<'de, str>);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_, 'de> {
    type Value = (i64, Cow<'de, str>);

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(r#"a JSON object {"ts": .., "tags": {..}, "fields": {..}, "body": ".."}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut timestamp_ns = None;
        let mut tags_seen = false;
        let mut fields_seen = false;
        let mut body = None;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Ts => {
                    if timestamp_ns.is_some() {
                        return Err(de::Error::duplicate_field("ts"));
                    }
                    timestamp_ns = Some(map.next_value::<Timestamp>()?.0);
                }
                Field::Tags => {
                    if tags_seen {
                        return Err(de::Error::duplicate_field("tags"));
                    }
                    tags_seen = true;
                    map.next_value_seed(TagsSeed { tags: &mut *self.tags, kind: &TAGS })?;
                }
                Field::Fields => {
                    if fields_seen {
                        return Err(de::Error::duplicate_field("fields"));
                    }
                    fields_seen = true;
                    map.next_value_seed(TagsSeed { tags: &mut *self.fields, kind: &FIELDS_MAP })?;
                }
                Field::Body => {
                    if body.is_some() {
                        return Err(de::Error::duplicate_field("body"));
                    }
                    body = Some(map.next_value::<Body>()?.0);
                }
            }
        }
        let body = body.ok_or_else(|| de::Error::missing_field("body"))?;
        Ok((timestamp_ns.unwrap_or(0), body))
    }
}

/// The top-level fields; matching on the key text needs no allocation even
/// when the key has escapes.
enum Field {
    Ts,
    Tags,
    Fields,
    Body,
}

const FIELDS: &[&str] = &["ts", "tags", "fields", "body"];

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a field name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                match name {
                    "ts" => Ok(Field::Ts),
                    "tags" => Ok(Field::Tags),
                    "fields" => Ok(Field::Fields),
                    "body" => Ok(Field::Body),
                    other => Err(E::unknown_field(other, FIELDS)),
                }
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

/// `ts`: integer nanoseconds, RFC 3339 text, or null (0).
struct Timestamp(i64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TimestampVisitor).map(Timestamp)
    }
}

struct TimestampVisitor;

impl Visitor<'_> for TimestampVisitor {
    type Value = i64;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ts as integer nanoseconds since the Unix epoch, an RFC 3339 string or null")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<i64, E> {
        Ok(value)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<i64, E> {
        i64::try_from(value)
            .map_err(|_| E::custom(format_args!("ts {value} is out of range: nanoseconds must fit in an i64")))
    }

    // A float (including one written as `1e9`) falls to the default
    // `visit_f64`, an "invalid type" error: nanoseconds are integers.

    fn visit_str<E: de::Error>(self, text: &str) -> Result<i64, E> {
        rfc3339_nanos(text).map_err(E::custom)
    }

    fn visit_unit<E: de::Error>(self) -> Result<i64, E> {
        Ok(0)
    }
}

/// An RFC 3339 `ts` as nanoseconds since the Unix epoch, or why not; for
/// both parsers.
fn rfc3339_nanos(text: &str) -> Result<i64, String> {
    let moment = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|error| format!("ts {text:?} is not an RFC 3339 timestamp ({error})"))?;
    i64::try_from(moment.unix_timestamp_nanos()).map_err(|_| {
        format!(
            "ts {text:?} is out of range: nanoseconds since the Unix epoch must fit in an i64 \
             (1677-09-21 to 2262-04-11)"
        )
    })
}

/// `body`: a JSON string, borrowed unless it has escapes.
struct Body<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Body<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor { what: "body as a JSON string" }).map(Body)
    }
}

/// A string, borrowed from the input when the deserializer can lend it.
struct TextVisitor {
    what: &'static str,
}

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.what)
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        // Only a string with escapes comes here: it was decoded into a
        // scratch buffer, so it must be copied.
        Ok(Cow::Owned(text.to_owned()))
    }
}

/// A tag key (JSON object keys are always strings).
struct TagKey<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for TagKey<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor { what: "a tag key" }).map(TagKey)
    }
}

/// Which string map a [`TagsSeed`] reads: its names in errors and its
/// count limit.
struct MapKind {
    /// The member name: `tags` or `fields`.
    name: &'static str,
    /// One item: `tag` or `field`.
    item: &'static str,
    limit_name: &'static str,
    limit_what: &'static str,
    count_max: usize,
}

const TAGS: MapKind = MapKind {
    name: "tags",
    item: "tag",
    limit_name: "ENTRY_TAGS_MAX",
    limit_what: "entry tag count",
    count_max: limits::ENTRY_TAGS_MAX,
};

const FIELDS_MAP: MapKind = MapKind {
    name: "fields",
    item: "field",
    limit_name: "ENTRY_FIELDS_MAX",
    limit_what: "entry field count",
    count_max: limits::ENTRY_FIELDS_MAX,
};

/// `tags` or `fields`: pushes every pair onto the batch's flat buffer.
struct TagsSeed<'t, 'a> {
    tags: &'t mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
    kind: &'static MapKind,
}

fn tags_not_an_object<E: de::Error>(kind: &MapKind, found: Unexpected<'_>) -> E {
    E::custom(format_args!("{} must be an object of strings, found {found}", kind.name))
}

impl<'de> DeserializeSeed<'de> for TagsSeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TagsSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} as an object of strings", self.kind.name)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut count = 0;
        while let Some(TagKey(key)) = map.next_key()? {
            // Checked before the pair is stored: a line cannot grow the
            // buffer past the limit. Same message as `validate_entry`.
            count += 1;
            limits::check(self.kind.limit_name, self.kind.limit_what, count, self.kind.count_max)
                .map_err(de::Error::custom)?;
            let value = map.next_value_seed(TagValueSeed { key: &key, kind: self.kind })?;
            self.tags.push((key, value));
        }
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        Err(tags_not_an_object(self.kind, Unexpected::Bool(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        Err(tags_not_an_object(self.kind, Unexpected::Signed(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        Err(tags_not_an_object(self.kind, Unexpected::Unsigned(value)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        Err(tags_not_an_object(self.kind, Unexpected::Float(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        Err(tags_not_an_object(self.kind, Unexpected::Str(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<(), A::Error> {
        Err(tags_not_an_object(self.kind, Unexpected::Seq))
    }
}

/// One tag value; knows its key to name it in errors.
struct TagValueSeed<'k> {
    key: &'k str,
    kind: &'static MapKind,
}

impl TagValueSeed<'_> {
    fn not_a_string<E: de::Error>(&self, found: Unexpected<'_>) -> E {
        let kind = self.kind;
        E::custom(format_args!("{} must be an object of strings, {} {:?} is {found}", kind.name, kind.item, self.key))
    }
}

impl<'de> DeserializeSeed<'de> for TagValueSeed<'_> {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TagValueSeed<'_> {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string tag value")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.not_a_string(Unexpected::Unit))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Err(self.not_a_string(Unexpected::Bool(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Err(self.not_a_string(Unexpected::Signed(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Err(self.not_a_string(Unexpected::Unsigned(value)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Err(self.not_a_string(Unexpected::Float(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Self::Value, A::Error> {
        Err(self.not_a_string(Unexpected::Seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Self::Value, A::Error> {
        Err(self.not_a_string(Unexpected::Map))
    }
}

/// Appends one NDJSON line for `entry`:
/// `{"node":1,"shard":0,"seq":7,"ts":123,"tags":{"k":"v"},"body":"text"}\n`,
/// with `,"fields":{"k":"v"}` before the closing brace when the entry has
/// fields.
///
/// Keys in exactly that order, tags in key order, `"body_base64"` (standard
/// base64 with padding) instead of `"body"` when the body is not valid UTF-8.
/// Strings are escaped per RFC 8259: `"` and `\`, control characters as
/// `\b \f \n \r \t` or `\u00XX`; all other UTF-8 is kept as is. Allocates
/// nothing beyond the growth of `out`.
pub fn write_entry_line(out: &mut Vec<u8>, entry: &LogEntry) {
    out.extend_from_slice(b"{\"node\":");
    push_u64(out, u64::from(entry.node_id));
    out.extend_from_slice(b",\"shard\":");
    push_u64(out, u64::from(entry.shard));
    out.extend_from_slice(b",\"seq\":");
    push_u64(out, entry.seq);
    out.extend_from_slice(b",\"ts\":");
    push_i64(out, entry.timestamp_ns);
    out.extend_from_slice(b",\"tags\":");
    push_string_map(out, &entry.tags);
    match std::str::from_utf8(&entry.body) {
        Ok(text) => {
            out.extend_from_slice(b",\"body\":");
            push_json_string(out, text);
        }
        Err(_) => {
            out.extend_from_slice(b",\"body_base64\":\"");
            let start = out.len();
            let encoded_len = entry.body.len().div_ceil(3) * 4;
            out.resize(start + encoded_len, 0);
            let written = base64::engine::general_purpose::STANDARD
                .encode_slice(&entry.body, &mut out[start..])
                .expect("the buffer is sized for the padded encoding");
            debug_assert_eq!(written, encoded_len);
            out.push(b'"');
        }
    }
    if !entry.fields.is_empty() {
        out.extend_from_slice(b",\"fields\":");
        push_string_map(out, &entry.fields);
    }
    out.extend_from_slice(b"}\n");
}

/// Appends `map` as a JSON object of strings, in key order.
fn push_string_map(out: &mut Vec<u8>, map: &std::collections::BTreeMap<String, String>) {
    out.push(b'{');
    for (index, (key, value)) in map.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        push_json_string(out, key);
        out.push(b':');
        push_json_string(out, value);
    }
    out.push(b'}');
}

/// For each byte: 0 to copy it as is, else the letter after the backslash
/// (`u` for `\u00XX`).
const ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `text` as a quoted JSON string, copying unescaped runs whole.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.push(b'"');
    let mut run_start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape = ESCAPES[usize::from(byte)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[run_start..index]);
        if escape == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX_DIGITS[usize::from(byte >> 4)]);
            out.push(HEX_DIGITS[usize::from(byte & 0x0f)]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
        run_start = index + 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    // u64::MAX has 20 decimal digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

fn push_i64(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    push_u64(out, value.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    const ENTRIES_MAX: usize = 100_000;
    /// 2026-11-22T02:07:28Z (`date -u -d 2026-11-22T02:07:28Z +%s`).
    const SAMPLE_SECONDS: i64 = 1_795_313_248;
    const NANOS_PER_SECOND: i64 = 1_000_000_000;

    fn parse(text: &str) -> Result<Batch<'_>, LineError> {
        parse_ndjson(text.as_bytes(), ENTRIES_MAX)
    }

    fn parse_one(line: &str) -> ParsedOwned {
        let batch = parse(line).unwrap_or_else(|error| panic!("{line:?} should parse: {error}"));
        assert_eq!(batch.len(), 1);
        owned(&batch).remove(0)
    }

    /// An entry copied out of a batch, for comparisons.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct ParsedOwned {
        timestamp_ns: i64,
        tags: Vec<(String, String)>,
        body: String,
    }

    fn owned(batch: &Batch<'_>) -> Vec<ParsedOwned> {
        let mut scratch = Vec::new();
        batch
            .entry_refs(&mut scratch)
            .iter()
            .map(|entry| ParsedOwned {
                timestamp_ns: entry.timestamp_ns,
                tags: entry.tags.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect(),
                body: String::from_utf8(entry.body.to_vec()).unwrap(),
            })
            .collect()
    }

    fn error_of(text: &str) -> LineError {
        error_of_bytes(text.as_bytes(), ENTRIES_MAX)
    }

    fn error_of_bytes(body: &[u8], entries_max: usize) -> LineError {
        match parse_ndjson(body, entries_max) {
            Ok(batch) => panic!("{:?} should fail, parsed {} entries", String::from_utf8_lossy(body), batch.len()),
            Err(error) => error,
        }
    }

    /// Asserts that `text` fails on `line` with a message containing `needle`.
    fn assert_error(text: &str, line: usize, needle: &str) {
        let error = error_of(text);
        assert_eq!(error.line, line, "{text:?}: {error}");
        assert!(error.message.contains(needle), "{text:?}: {error:?} should contain {needle:?}");
    }

    // ---- good lines ----

    #[test]
    fn integer_ts_tags_and_body() {
        let entry =
            parse_one(r#"{"ts": 1795313248000000000, "tags": {"host": "web-1", "app": "nginx"}, "body": "GET /"}"#);
        assert_eq!(entry.timestamp_ns, SAMPLE_SECONDS * NANOS_PER_SECOND);
        // Request order is kept; the shard does its own sorting.
        assert_eq!(entry.tags, vec![("host".into(), "web-1".into()), ("app".into(), "nginx".into())]);
        assert_eq!(entry.body, "GET /");
    }

    #[test]
    fn negative_and_extreme_integer_ts() {
        assert_eq!(parse_one(r#"{"ts": -5, "body": ""}"#).timestamp_ns, -5);
        assert_eq!(parse_one(&format!(r#"{{"ts": {}, "body": ""}}"#, i64::MAX)).timestamp_ns, i64::MAX);
        assert_eq!(parse_one(&format!(r#"{{"ts": {}, "body": ""}}"#, i64::MIN)).timestamp_ns, i64::MIN);
    }

    #[test]
    fn missing_null_and_zero_ts_mean_now() {
        for line in [r#"{"body": "x"}"#, r#"{"ts": null, "body": "x"}"#, r#"{"ts": 0, "body": "x"}"#] {
            assert_eq!(parse_one(line).timestamp_ns, 0, "{line}");
        }
    }

    #[test]
    fn rfc3339_ts_with_z_offsets_and_fractions() {
        let base = SAMPLE_SECONDS * NANOS_PER_SECOND;
        let cases = [
            ("2026-11-22T02:07:28Z", base),
            ("2026-11-22T02:07:28.123456789Z", base + 123_456_789),
            ("2026-11-22T02:07:28.5Z", base + 500_000_000),
            ("2026-11-22T02:07:28.120Z", base + 120_000_000),
            ("2026-11-22T04:07:28+02:00", base),
            ("2026-11-22T04:07:28.000000001+02:00", base + 1),
            ("2026-11-21T20:37:28-05:30", base),
            ("2026-11-22T02:07:28+00:00", base),
            ("2026-11-22T02:07:28-00:00", base),
            ("2026-11-22t02:07:28z", base),
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59.5Z", -500_000_000),
            ("2262-04-11T23:47:16.854775807Z", i64::MAX),
            ("1677-09-21T00:12:43.145224192Z", i64::MIN),
        ];
        for (text, expected) in cases {
            let entry = parse_one(&format!(r#"{{"ts": "{text}", "body": "b"}}"#));
            assert_eq!(entry.timestamp_ns, expected, "{text}");
        }
    }

    #[test]
    fn absent_null_and_empty_tags_mean_no_tags() {
        for line in [r#"{"body": "x"}"#, r#"{"tags": null, "body": "x"}"#, r#"{"tags": {}, "body": "x"}"#] {
            assert!(parse_one(line).tags.is_empty(), "{line}");
        }
    }

    #[test]
    fn fields_in_any_order_and_with_whitespace() {
        let entry = parse_one("  {\t\"body\" : \"b\" , \"tags\":{ \"k\" : \"v\" } ,\"ts\": 7 }  ");
        assert_eq!(entry, ParsedOwned { timestamp_ns: 7, tags: vec![("k".into(), "v".into())], body: "b".into() });
    }

    #[test]
    fn escapes_in_body_and_tags_are_decoded() {
        let line = r#"{"tags": {"k\"ey": "v\\al\u00e9", "t\tab": "\ud83e\udd80"}, "body": "a\"b\\c\nd\u0000e\/f"}"#;
        let entry = parse_one(line);
        assert_eq!(entry.body, "a\"b\\c\nd\0e/f");
        assert_eq!(entry.tags, vec![("k\"ey".into(), "v\\al\u{e9}".into()), ("t\tab".into(), "\u{1f980}".into())]);
    }

    #[test]
    fn escaped_field_names_are_recognised() {
        let entry = parse_one(r#"{"b\u006fdy": "x", "t\u0073": 3}"#);
        assert_eq!((entry.timestamp_ns, entry.body.as_str()), (3, "x"));
    }

    #[test]
    fn raw_unicode_is_kept() {
        let entry = parse_one("{\"tags\": {\"région\": \"日本\"}, \"body\": \"héllo 🦀 \u{7f}\"}");
        assert_eq!(entry.body, "héllo 🦀 \u{7f}");
        assert_eq!(entry.tags, vec![("région".into(), "日本".into())]);
    }

    #[test]
    fn strings_without_escapes_are_borrowed_from_the_body() {
        let text = r#"{"tags": {"host": "web-1", "k": "v\n"}, "body": "plain 🦀"}"#;
        let batch = parse(text).unwrap();
        let entry = &batch.entries[0];
        assert!(matches!(entry.body, Cow::Borrowed("plain 🦀")), "{:?}", entry.body);
        assert!(matches!(batch.tags[0], (Cow::Borrowed("host"), Cow::Borrowed("web-1"))), "{:?}", batch.tags[0]);
        assert!(matches!(batch.tags[1].0, Cow::Borrowed("k")));
        // An escape forces a decoded copy.
        assert!(matches!(&batch.tags[1].1, Cow::Owned(value) if value == "v\n"));
        // Borrowed means pointing into the request body itself.
        let range = text.as_bytes().as_ptr_range();
        assert!(range.contains(&entry.body.as_ptr()));
        let escaped = parse(r#"{"body": "a\tb"}"#).unwrap();
        assert!(matches!(&escaped.entries[0].body, Cow::Owned(body) if body == "a\tb"));
    }

    #[test]
    fn empty_body_is_allowed() {
        assert_eq!(parse_one(r#"{"body": ""}"#).body, "");
    }

    #[test]
    fn blank_lines_whitespace_lines_and_crlf() {
        let text = "\n{\"body\": \"a\"}\r\n   \r\n\t\n\r\n{\"body\": \"b\\r\", \"ts\": 2}\r\n\n";
        let entries = owned(&parse(text).unwrap());
        let bodies: Vec<_> = entries.iter().map(|entry| entry.body.as_str()).collect();
        assert_eq!(bodies, ["a", "b\r"]);
        assert_eq!(entries[1].timestamp_ns, 2);
        // Blank lines still count: the bad line below is line 5.
        assert_error("\n{\"body\": \"a\"}\r\n  \r\n\n{\"body\": 1}\r\n", 5, "body");
    }

    #[test]
    fn only_one_trailing_cr_is_stripped() {
        // "\r\r" leaves one "\r" after the object: JSON whitespace, accepted.
        assert_eq!(parse("{\"body\": \"a\"}\r\r\n").unwrap().len(), 1);
        // A lone CR inside the line is not a line break.
        assert_error("{\"body\": \"a\"}\r{\"body\": \"b\"}", 1, "trailing characters");
    }

    #[test]
    fn empty_and_blank_bodies_give_empty_batches() {
        for text in ["", "\n", " \r\n\t\n"] {
            let batch = parse(text).unwrap();
            assert!(batch.is_empty(), "{text:?}");
            assert_eq!(batch.len(), 0, "{text:?}");
        }
    }

    #[test]
    fn entry_refs_slice_each_entry_s_own_tags() {
        let text = concat!(
            r#"{"tags": {"a": "1", "b": "2"}, "body": "first", "ts": 1}"#,
            "\n",
            r#"{"body": "second"}"#,
            "\n",
            r#"{"tags": {"c": "3"}, "body": "third", "ts": "1970-01-01T00:00:01Z"}"#,
        );
        let batch = parse(text).unwrap();
        let mut scratch = vec![("stale", "stale")];
        let refs = batch.entry_refs(&mut scratch);
        assert_eq!(refs.len(), 3);
        assert_eq!(refs[0].tags, &[("a", "1"), ("b", "2")]);
        assert!(refs[1].tags.is_empty());
        assert_eq!(refs[2].tags, &[("c", "3")]);
        let bodies: Vec<_> = refs.iter().map(|entry| entry.body).collect();
        assert_eq!(bodies, [&b"first"[..], b"second", b"third"]);
        let timestamps: Vec<_> = refs.iter().map(|entry| entry.timestamp_ns).collect();
        assert_eq!(timestamps, [1, 0, NANOS_PER_SECOND]);
        for entry in &refs {
            validate_entry(entry).unwrap();
        }
    }

    #[test]
    fn entries_max_counts_entries_not_lines() {
        let text = "{\"body\": \"1\"}\n\n{\"body\": \"2\"}\n\n";
        assert_eq!(parse_ndjson(text.as_bytes(), 2).unwrap().len(), 2);
        let error = error_of_bytes(format!("{text}{{\"body\": \"3\"}}\n").as_bytes(), 2);
        assert_eq!(error, LineError { line: 5, message: "more than 2 entries in one request".into() });
        assert_eq!(error_of_bytes(b"{\"body\": \"1\"}", 0).line, 1);
        assert!(parse_ndjson(b"\n\n", 0).unwrap().is_empty());
    }

    #[test]
    fn entry_reservation_is_bounded() {
        let lines = "{\"body\":\"\"}\n".repeat(100);
        assert_eq!(entries_capacity(lines.as_bytes(), 1000), 101);
        assert_eq!(entries_capacity(lines.as_bytes(), 10), 11);
        assert_eq!(entries_capacity(lines.as_bytes(), usize::MAX), 101);
        // Blank lines reserve no more than the shortest entries would.
        assert_eq!(entries_capacity(&[b'\n'; 1200], usize::MAX), 101);
        assert_eq!(entries_capacity(b"", usize::MAX), 1);
    }

    // ---- errors, each with its line number ----

    #[test]
    fn line_error_display() {
        let error = LineError { line: 17, message: "missing field `body`".into() };
        assert_eq!(error.to_string(), "line 17: missing field `body`");
    }

    #[test]
    fn bad_json_names_line_and_column() {
        let error = error_of("{\"body\": \"a\"}\n{\"body\": \"b\"");
        assert_eq!(error.line, 2);
        assert_eq!(error.message, "EOF while parsing an object at column 12");
        assert_error("{\"body\": \"a\"}\n\n{\"body\" \"b\"}", 3, "expected `:`");
        assert_error("{\"body\": 'a'}", 1, "expected value");
        assert_error("{\"body\": \"a\",}", 1, "trailing comma");
        assert_error("{\"body\": \"a\"} x", 1, "trailing characters");
        assert_error("{\"body\": \"a\"}{\"body\": \"b\"}", 1, "trailing characters");
        assert_error("{\"body\": \"a\nb\"}", 1, "EOF while parsing a string");
        assert_error("{\"body\": \"a\u{1}\"}", 1, "control character");
        assert_error(r#"{"body": "\ud800"}"#, 1, "unexpected end of hex escape");
        assert_error(r#"{"body": "\ud800\u0041"}"#, 1, "lone leading surrogate");
        assert_error(r#"{"tags": {"k": "\udc00"}, "body": "b"}"#, 1, "surrogate");
        assert_error(r#"{"body": "\q"}"#, 1, "invalid escape");
    }

    #[test]
    fn a_line_that_is_not_an_object_is_refused() {
        for (line, needle) in
            [("[1, 2]", "sequence"), ("\"body\"", "string"), ("42", "integer"), ("null", "null"), ("true", "boolean")]
        {
            let error = error_of(&format!("{{\"body\": \"ok\"}}\n{line}"));
            assert_eq!(error.line, 2, "{line}");
            assert!(error.message.contains("expected a JSON object"), "{line}: {error}");
            assert!(error.message.contains(needle), "{line}: {error}");
        }
    }

    #[test]
    fn float_and_other_ts_types_are_refused() {
        // serde_json reads `-0` as the float -0.0 too, so it is refused like
        // any float; integers too big for a u64 also come as floats.
        for ts in ["1.5", "1.0", "1e9", "-0.0", "-0", "100000000000000000000"] {
            assert_error(&format!(r#"{{"ts": {ts}, "body": "b"}}"#), 1, "invalid type: floating point");
        }
        assert_error(r#"{"ts": true, "body": "b"}"#, 1, "invalid type: boolean");
        assert_error(r#"{"ts": [1], "body": "b"}"#, 1, "invalid type: sequence");
        assert_error(r#"{"ts": {}, "body": "b"}"#, 1, "invalid type: map");
        assert_error(&format!(r#"{{"ts": {}, "body": "b"}}"#, u64::MAX), 1, "out of range");
        assert_error(&format!(r#"{{"ts": {}, "body": "b"}}"#, i64::MAX as u64 + 1), 1, "out of range");
    }

    #[test]
    fn bad_rfc3339_is_refused() {
        for text in [
            "yesterday",
            "",
            "2026-11-22",
            "2026-11-22T02:07:28",
            "2026-13-01T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-22T25:00:00Z",
            "2026-11-22T02:07:28.Z",
            "2026-11-22T02:07:28+2:00",
            "1795313248000000000",
        ] {
            let error = error_of(&format!("\n{{\"ts\": \"{text}\", \"body\": \"b\"}}"));
            assert_eq!(error.line, 2, "{text}");
            assert!(error.message.contains("is not an RFC 3339 timestamp"), "{text}: {error}");
        }
    }

    #[test]
    fn rfc3339_out_of_the_i64_range_is_refused() {
        for text in [
            "1600-01-01T00:00:00Z",
            "2262-04-11T23:47:16.854775808Z",
            "1677-09-21T00:12:43.145224191Z",
            "9999-12-31T23:59:59Z",
        ] {
            assert_error(&format!(r#"{{"ts": "{text}", "body": "b"}}"#), 1, "out of range");
        }
    }

    #[test]
    fn tags_that_are_not_an_object_are_refused() {
        for tags in [r#""k=v""#, r#"["k", "v"]"#, "5", "-5", "1.5", "true"] {
            let error = error_of(&format!("{{\"body\": \"ok\"}}\n{{\"tags\": {tags}, \"body\": \"b\"}}"));
            assert_eq!(error.line, 2, "{tags}");
            assert!(error.message.starts_with("tags must be an object of strings, found "), "{tags}: {error}");
        }
    }

    #[test]
    fn non_string_tag_values_are_refused() {
        for value in ["5", "null", "true", "1.5", "[\"v\"]", "{\"v\": \"w\"}", "-1"] {
            let error = error_of(&format!("\n\n{{\"tags\": {{\"ok\": \"v\", \"level\": {value}}}, \"body\": \"b\"}}"));
            assert_eq!(error.line, 3, "{value}");
            assert!(
                error.message.starts_with("tags must be an object of strings, tag \"level\" is "),
                "{value}: {error}"
            );
        }
    }

    #[test]
    fn duplicate_tag_keys_are_refused() {
        assert_error(
            "{\"body\": \"ok\"}\n{\"tags\": {\"k\": \"1\", \"j\": \"2\", \"k\": \"3\"}, \"body\": \"b\"}",
            2,
            "duplicate tag key \"k\"",
        );
        // The same key spelled with an escape is still the same key.
        assert_error(r#"{"tags": {"k": "1", "\u006b": "2"}, "body": "b"}"#, 1, "duplicate tag key \"k\"");
    }

    #[test]
    fn missing_or_non_string_body_is_refused() {
        assert_error("{\"body\": \"ok\"}\n{\"ts\": 1, \"tags\": {}}", 2, "missing field `body`");
        assert_error("{}", 1, "missing field `body`");
        assert_error(r#"{"body": null}"#, 1, "expected body as a JSON string");
        assert_error(r#"{"body": 12}"#, 1, "expected body as a JSON string");
        assert_error(r#"{"body": ["a"]}"#, 1, "expected body as a JSON string");
        assert_error(r#"{"body": {"text": "a"}}"#, 1, "expected body as a JSON string");
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        assert_error("{\"body\": \"ok\"}\n{\"body\": \"b\", \"tag\": {}}", 2, "unknown field `tag`");
        assert_error(r#"{"Body": "b"}"#, 1, "unknown field `Body`");
        assert_error(r#"{"body": "b", "": 1}"#, 1, "unknown field ``");
    }

    #[test]
    fn duplicate_fields_are_refused() {
        assert_error(r#"{"body": "a", "body": "b"}"#, 1, "duplicate field `body`");
        assert_error(r#"{"ts": 1, "body": "a", "ts": 2}"#, 1, "duplicate field `ts`");
        assert_error(r#"{"tags": {}, "body": "a", "tags": null}"#, 1, "duplicate field `tags`");
    }

    #[test]
    fn invalid_utf8_is_refused_on_its_line() {
        let mut body = b"{\"body\": \"a\"}\n{\"body\": \"b\"}\n{\"body\": \"c".to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(b"\"}\n{\"body\": \"d\"}\n");
        let error = error_of_bytes(&body, ENTRIES_MAX);
        assert_eq!(error.line, 3);
        assert!(error.message.contains("invalid unicode code point"), "{error}");
        // In a tag, in a key, and outside any string.
        assert_eq!(error_of_bytes(b"\n\n{\"tags\": {\"k\": \"\xc3\"}, \"body\": \"b\"}", 1).line, 3);
        assert_eq!(error_of_bytes(b"\n\n{\"tags\": {\"\xed\xa0\x80\": \"v\"}, \"body\": \"b\"}", 1).line, 3);
        assert_eq!(error_of_bytes(b"\n\n\xef\xbb\xbf{\"body\": \"b\"}", 1).line, 3);
    }

    #[test]
    fn entries_over_a_limit_are_refused() {
        let big_body = "x".repeat(limits::ENTRY_BODY_BYTES_MAX + 1);
        assert_error(&format!("{{\"body\": \"ok\"}}\n{{\"body\": \"{big_body}\"}}"), 2, "ENTRY_BODY_BYTES_MAX");
        let at_limit = "x".repeat(limits::ENTRY_BODY_BYTES_MAX);
        assert_eq!(parse_one(&format!("{{\"body\": \"{at_limit}\"}}")).body.len(), limits::ENTRY_BODY_BYTES_MAX);

        let tags = |count: usize| -> String {
            let pairs: Vec<String> = (0..count).map(|index| format!("\"k{index}\": \"v\"")).collect();
            format!("{{\"tags\": {{{}}}, \"body\": \"b\"}}", pairs.join(","))
        };
        assert_eq!(parse_one(&tags(limits::ENTRY_TAGS_MAX)).tags.len(), limits::ENTRY_TAGS_MAX);
        assert_error(&format!("\n{}", tags(limits::ENTRY_TAGS_MAX + 1)), 2, "ENTRY_TAGS_MAX");

        assert_error(r#"{"tags": {"": "v"}, "body": "b"}"#, 1, "empty tag key");
        let long_key = "k".repeat(limits::TAG_KEY_BYTES_MAX + 1);
        assert_error(&format!(r#"{{"tags": {{"{long_key}": "v"}}, "body": "b"}}"#), 1, "TAG_KEY_BYTES_MAX");
        let long_value = "v".repeat(limits::TAG_VALUE_BYTES_MAX + 1);
        assert_error(&format!(r#"{{"tags": {{"k": "{long_value}"}}, "body": "b"}}"#), 1, "TAG_VALUE_BYTES_MAX");
    }

    #[test]
    fn the_first_bad_line_is_reported_whatever_kind_of_error() {
        // A limit error (found after parsing) on line 2 beats a syntax error
        // on line 4 and an entry count error on line 5.
        let text = "{\"body\": \"ok\"}\n{\"tags\": {\"\": \"v\"}, \"body\": \"b\"}\n{\"body\": \"ok\"}\n{oops\n";
        assert_error(text, 2, "empty tag key");
        let error =
            error_of_bytes(b"{\"body\": \"ok\"}\n{\"tags\": {\"\": \"v\"}, \"body\": \"b\"}\n{\"body\": \"ok\"}", 2);
        assert_eq!((error.line, error.message.as_str()), (2, "empty tag key"));
        // And a syntax error before a limit error wins.
        assert_error("{oops\n{\"tags\": {\"\": \"v\"}, \"body\": \"b\"}", 1, "key must be a string");
    }

    // ---- output encoding ----

    fn log_entry(tags: &[(&str, &str)], body: &[u8]) -> LogEntry {
        LogEntry {
            fields: Default::default(),
            seq: 7,
            timestamp_ns: 123,
            tags: tags.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect(),
            body: bytes::Bytes::copy_from_slice(body),
            node_id: 1,
            shard: 0,
        }
    }

    fn line_of(entry: &LogEntry) -> String {
        let mut out = Vec::new();
        write_entry_line(&mut out, entry);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn output_line_has_the_documented_shape() {
        let entry = log_entry(&[("z", "last"), ("k", "v")], b"text");
        assert_eq!(
            line_of(&entry),
            "{\"node\":1,\"shard\":0,\"seq\":7,\"ts\":123,\"tags\":{\"k\":\"v\",\"z\":\"last\"},\"body\":\"text\"}\n"
        );
        let bare =
            LogEntry { seq: u64::MAX, timestamp_ns: i64::MIN, node_id: u32::MAX, shard: 3, ..log_entry(&[], b"") };
        assert_eq!(
            line_of(&bare),
            format!(
                "{{\"node\":{},\"shard\":3,\"seq\":{},\"ts\":{},\"tags\":{{}},\"body\":\"\"}}\n",
                u32::MAX,
                u64::MAX,
                i64::MIN
            )
        );
    }

    #[test]
    fn output_appends_without_touching_what_is_there() {
        let mut out = b"previous\n".to_vec();
        write_entry_line(&mut out, &log_entry(&[], b"a"));
        write_entry_line(&mut out, &log_entry(&[], b"b"));
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "previous");
        assert!(lines[1].ends_with("\"body\":\"a\"}") && lines[2].ends_with("\"body\":\"b\"}"));
    }

    #[test]
    fn output_strings_are_escaped() {
        let body = "q\"b\\s/\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f} é 日本 🦀 \u{2028}";
        let entry = log_entry(&[("k\"1", "v\\\u{1}")], body.as_bytes());
        let line = line_of(&entry);
        assert!(
            line.ends_with(
                "\"tags\":{\"k\\\"1\":\"v\\\\\\u0001\"},\
                 \"body\":\"q\\\"b\\\\s/\\n\\r\\t\\b\\f\\u0000\\u001f\u{7f} é 日本 🦀 \u{2028}\"}\n"
            ),
            "{line}"
        );
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["body"], body);
        assert_eq!(value["tags"]["k\"1"], "v\\\u{1}");
    }

    #[test]
    fn non_utf8_body_is_written_as_padded_base64() {
        for body in [&b"\xff"[..], b"ok\xff", b"\xc3(ab", b"\x80\x81\x82\x83"] {
            let line = line_of(&log_entry(&[], body));
            let value: Value = serde_json::from_str(&line).unwrap();
            assert!(value.get("body").is_none(), "{line}");
            let encoded = value["body_base64"].as_str().unwrap();
            assert_eq!(encoded.len() % 4, 0, "padded: {encoded}");
            assert_eq!(base64::engine::general_purpose::STANDARD.decode(encoded).unwrap(), body);
        }
        assert!(line_of(&log_entry(&[], b"\xff")).ends_with(",\"body_base64\":\"/w==\"}\n"));
    }

    /// Checks a written line against the entry with an independent JSON parser.
    fn assert_line_matches(line: &[u8], entry: &LogEntry) {
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&byte| byte == b'\n').count(), 1, "one line");
        let value: Value = serde_json::from_slice(line).unwrap();
        let object = value.as_object().unwrap();
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        // serde_json's map is sorted unless preserve_order; compare the set,
        // the exact order is checked on the raw text below.
        let body_key = if std::str::from_utf8(&entry.body).is_ok() { "body" } else { "body_base64" };
        let mut expected_keys = vec!["node", "shard", "seq", "ts", "tags", body_key];
        expected_keys.sort_unstable();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort_unstable();
        assert_eq!(sorted_keys, expected_keys);
        let text = String::from_utf8_lossy(line);
        assert!(text.starts_with("{\"node\":"), "{text}");
        let positions: Vec<usize> = ["\"shard\":", "\"seq\":", "\"ts\":", "\"tags\":"]
            .iter()
            .map(|key| text.find(key).unwrap_or_else(|| panic!("{key} in {text}")))
            .collect();
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{text}");
        assert_eq!(value["node"], u64::from(entry.node_id));
        assert_eq!(value["shard"], u64::from(entry.shard));
        assert_eq!(value["seq"], entry.seq);
        assert_eq!(value["ts"], entry.timestamp_ns);
        let tags: BTreeMap<String, String> =
            serde_json::from_value(value["tags"].clone()).expect("tags are an object of strings");
        assert_eq!(tags, entry.tags);
        match std::str::from_utf8(&entry.body) {
            Ok(body) => assert_eq!(value["body"], body),
            Err(_) => {
                let decoded =
                    base64::engine::general_purpose::STANDARD.decode(value["body_base64"].as_str().unwrap()).unwrap();
                assert_eq!(decoded, entry.body);
            }
        }
    }

    #[test]
    fn round_trip_parse_then_write() {
        let text = concat!(
            r#"{"ts": "2026-11-22T04:07:28.25+02:00", "tags": {"host": "web-1", "msg": "a\"b\\c"}, "body": "GET / \u0001 日本"}"#,
            "\r\n",
            r#"{"body": "", "tags": null}"#,
            "\n",
            r#"{"ts": -42, "tags": {"z": "1", "a": "2"}, "body": "line\nbreak\ttab"}"#,
        );
        let batch = parse(text).unwrap();
        let mut scratch = Vec::new();
        let refs = batch.entry_refs(&mut scratch);
        assert_eq!(refs.len(), 3);
        for (index, entry_ref) in refs.iter().enumerate() {
            let entry = LogEntry {
                fields: Default::default(),
                seq: 100 + index as u64,
                timestamp_ns: entry_ref.timestamp_ns,
                tags: entry_ref.tags.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect(),
                body: bytes::Bytes::copy_from_slice(entry_ref.body),
                node_id: 2,
                shard: 1,
            };
            let mut out = Vec::new();
            write_entry_line(&mut out, &entry);
            assert_line_matches(&out, &entry);
            let value: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(value["seq"], 100 + index as u64);
        }
        let value = |index: usize| -> Value {
            let entry = &refs[index];
            let mut out = Vec::new();
            let tags = entry.tags.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
            let log = LogEntry { timestamp_ns: entry.timestamp_ns, tags, ..log_entry(&[], entry.body) };
            write_entry_line(&mut out, &log);
            serde_json::from_slice(&out).unwrap()
        };
        assert_eq!(value(0)["ts"], SAMPLE_SECONDS * NANOS_PER_SECOND + 250_000_000);
        assert_eq!(value(0)["tags"], json!({"host": "web-1", "msg": "a\"b\\c"}));
        assert_eq!(value(0)["body"], "GET / \u{1} 日本");
        assert_eq!(value(1)["tags"], json!({}));
        assert_eq!(value(2)["ts"], -42);
        assert_eq!(value(2)["body"], "line\nbreak\ttab");
    }

    // ---- real data ----

    #[test]
    fn loghub_lines_parse_back_to_identical_bodies() {
        for file in ["Apache", "OpenSSH"] {
            let lines = crate::loghub::lines(file);
            assert!(lines.len() >= crate::loghub::SUBSET_LINES, "{file} has {} lines", lines.len());
            let mut text = String::new();
            for (index, line) in lines.iter().enumerate() {
                let entry = json!({"ts": index, "tags": {"source": file, "n": index.to_string()}, "body": line});
                text.push_str(&serde_json::to_string(&entry).unwrap());
                // Alternate line endings: both must work.
                text.push_str(if index % 2 == 0 { "\n" } else { "\r\n" });
            }
            let batch = parse(&text).unwrap_or_else(|error| panic!("{file}: {error}"));
            let entries = owned(&batch);
            assert_eq!(entries.len(), lines.len(), "{file}");
            for (index, (entry, line)) in entries.iter().zip(&lines).enumerate() {
                assert_eq!(&entry.body, line, "{file} line {}", index + 1);
                assert_eq!(entry.timestamp_ns, index as i64);
                // json! sorts object keys.
                assert_eq!(entry.tags, vec![("n".into(), index.to_string()), ("source".into(), file.into())]);
            }
        }
    }

    // ---- properties ----

    fn valid_ndjson_sample() -> Vec<u8> {
        concat!(
            r#"{"ts": 1795313248000000000, "tags": {"host": "web-1", "app": "nginx"}, "body": "GET / 200"}"#,
            "\n",
            r#"{"ts": "2026-11-22T04:07:28.123+02:00", "tags": {"k": "v\u00e9"}, "body": "esc \"q\" \\ \n"}"#,
            "\r\n\n",
            r#"{"ts": null, "tags": null, "body": ""}"#,
            "\n",
            r#"{"body": "日本 🦀", "ts": -1e0}"#,
            "\n",
        )
        .as_bytes()
        .to_vec()
    }

    fn check_invariants(body: &[u8]) {
        if let Ok(batch) = parse_ndjson(body, 64) {
            let mut scratch = Vec::new();
            let refs = batch.entry_refs(&mut scratch);
            assert_eq!(refs.len(), batch.len());
            assert!(refs.len() <= 64);
            for entry in &refs {
                validate_entry(entry).unwrap();
                assert!(std::str::from_utf8(entry.body).is_ok());
            }
        }
    }

    fn interesting_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            any::<u8>(),
            prop::sample::select(vec![
                b'"', b'\\', b'{', b'}', b'[', b']', b'\n', b'\r', b':', b',', b'0', b'9', b'.', b'e', b'-', b'u',
                b' ', 0xff, 0xc3, 0xed, 0x80,
            ]),
        ]
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Overwrite(usize, u8),
        Insert(usize, u8),
        Delete(usize),
    }

    /// [`valid_ndjson_sample`] with `mutations` applied in order.
    fn mutated_sample(mutations: &[Mutation]) -> Vec<u8> {
        let mut body = valid_ndjson_sample();
        for mutation in mutations {
            match *mutation {
                Mutation::Overwrite(at, byte) => {
                    let at = at % body.len().max(1);
                    if let Some(slot) = body.get_mut(at) {
                        *slot = byte;
                    }
                }
                Mutation::Insert(at, byte) => body.insert(at % (body.len() + 1), byte),
                Mutation::Delete(at) => {
                    if !body.is_empty() {
                        body.remove(at % body.len());
                    }
                }
            }
        }
        body
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), interesting_byte()).prop_map(|(at, byte)| Mutation::Overwrite(at, byte)),
            (any::<usize>(), interesting_byte()).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
            any::<usize>().prop_map(Mutation::Delete),
        ]
    }

    fn text_strategy() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[a-z \"\\\\\n\t\u{0}\u{1f}é日🦀]{0,24}",]
    }

    /// Both parsers on one line: the serde one's result, and the plain
    /// one's if it accepted the line (the tags each pushed, the ts, the body).
    type LineResult = (i64, Vec<(String, String)>, String);

    fn both_parsers(line: &[u8]) -> (Result<LineResult, String>, Option<LineResult>) {
        let collect = |tags: &[(Cow<'_, str>, Cow<'_, str>)], timestamp_ns: i64, body: &str| {
            let tags = tags.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
            (timestamp_ns, tags, body.to_owned())
        };
        let (mut tags, mut fields) = (Vec::new(), Vec::new());
        let serde = parse_line(line, &mut tags, &mut fields)
            .map(|(timestamp_ns, body)| collect(&tags, timestamp_ns, &body))
            .map_err(|error| error.to_string());
        let mut tags = Vec::new();
        let plain = parse_plain_line(line, &mut tags).map(|(timestamp_ns, body)| collect(&tags, timestamp_ns, &body));
        (serde, plain)
    }

    /// The plain parser accepts only what serde accepts, with its result.
    fn assert_plain_agrees(line: &[u8]) {
        let (serde, plain) = both_parsers(line);
        if let Some(plain) = plain {
            assert_eq!(serde, Ok(plain), "plain parser accepted {:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn plain_parser_takes_the_common_shapes() {
        for line in [
            r#"{"ts":1795313248000000000,"tags":{"host":"web-1","app":"nginx"},"body":"GET / 200"}"#,
            r#" { "body" : "first" , "ts" : -5 , "tags" : { } } "#,
            r#"{"tags":null,"ts":null,"body":""}"#,
            r#"{"ts":"2026-11-22T04:07:28.5+02:00","body":"日本 🦀"}"#,
            r#"{"ts":-9223372036854775808,"body":"min"}"#,
            r#"{"ts":9223372036854775807,"body":"max"}"#,
            "{\"body\":\"a/b: c=d, 'q'\"}\r",
        ] {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let (serde, plain) = both_parsers(line.as_bytes());
            assert!(plain.is_some(), "{line:?} should take the plain path");
            assert_eq!(serde, Ok(plain.unwrap()), "{line:?}");
        }
    }

    #[test]
    fn plain_parser_leaves_the_rest_to_serde() {
        for line in [
            r#"{"body":"esc \"q\""}"#,
            r#"{"\u0062ody":"escaped key"}"#,
            r#"{"ts":-0,"body":"x"}"#,
            r#"{"ts":01,"body":"x"}"#,
            r#"{"ts":1.5,"body":"x"}"#,
            r#"{"ts":1e3,"body":"x"}"#,
            r#"{"ts":9223372036854775808,"body":"x"}"#,
            r#"{"ts":-9223372036854775809,"body":"x"}"#,
            r#"{"ts":"yesterday","body":"x"}"#,
            r#"{"ts":"1677-09-20T00:00:00Z","body":"x"}"#,
            r#"{"ts":true,"body":"x"}"#,
            r#"{"tags":{"k":1},"body":"x"}"#,
            r#"{"tags":[],"body":"x"}"#,
            r#"{"tags":{"k":"v",},"body":"x"}"#,
            r#"{"body":"x",}"#,
            r#"{"body":"x","body":"y"}"#,
            r#"{"ts":1,"ts":2,"body":"x"}"#,
            r#"{"tags":{},"tags":{},"body":"x"}"#,
            r#"{"body":"x","extra":1}"#,
            r#"{"ts":1}"#,
            r#"{}"#,
            r#"{"body":"x"} {"body":"y"}"#,
            r#"{"body":"x"}x"#,
            r#"{"ts":nul,"body":"x"}"#,
            r#"{"ts":nullx,"body":"x"}"#,
            "{\"body\":\"raw\u{1}control\"}",
            "\u{feff}{\"body\":\"bom\"}",
        ] {
            let (_, plain) = both_parsers(line.as_bytes());
            assert_eq!(plain, None, "{line:?} should be left to serde");
            assert_plain_agrees(line.as_bytes());
        }
        let mut too_many_tags = String::from(r#"{"body":"x","tags":{"#);
        for index in 0..=limits::ENTRY_TAGS_MAX {
            too_many_tags += &format!(r#"{}"k{index}":"v""#, if index == 0 { "" } else { "," });
        }
        too_many_tags += "}}";
        assert_eq!(both_parsers(too_many_tags.as_bytes()).1, None);
        assert!(both_parsers(too_many_tags.as_bytes()).0.is_err());
        assert_eq!(both_parsers(b"{\"body\":\"\xff\"}").1, None);
    }

    /// Pieces of lines: fields, values and separators, valid or nearly.
    fn line_piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "{",
            "}",
            ",",
            ":",
            " ",
            "\t",
            "\"ts\"",
            "\"tags\"",
            "\"body\"",
            "\"other\"",
            "\"t\\u0073\"",
            "0",
            "-0",
            "7",
            "-12",
            "01",
            "1.5",
            "2e9",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
            "null",
            "nul",
            "true",
            "[]",
            "{}",
            "\"\"",
            "\"v\"",
            "\"a b\"",
            "\"é日🦀\"",
            "\"esc\\n\"",
            "\"q\\\"\"",
            "\"\u{1}\"",
            "\"2026-11-22T04:07:28.5+02:00\"",
            "\"2026-11-22T04:07:28Z\"",
            "\"2262-04-12T00:00:00Z\"",
            "\"not a time\"",
            "{\"k\":\"v\"}",
            "{\"k\":\"v\",\"k2\":\"w\"}",
            "{\"k\":1}",
            "\u{feff}",
            "\u{a0}",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn plain_parser_agrees_with_serde_on_generated_lines(
            fields in prop::collection::vec(
                (prop::sample::select(vec!["ts", "tags", "body", "x"]), prop::collection::vec(line_piece(), 1..4)),
                0..5,
            ),
            separator in prop::sample::select(vec![",", " , ", ",,", ""]),
            closing in prop::sample::select(vec!["}", " } ", "", "}}", "} x"]),
        ) {
            let members: Vec<String> =
                fields.iter().map(|(name, value)| format!("\"{name}\":{}", value.concat())).collect();
            let line = format!("{{{}{closing}", members.join(separator));
            assert_plain_agrees(line.as_bytes());
        }

        #[test]
        fn plain_parser_agrees_with_serde_on_piece_soup(pieces in prop::collection::vec(line_piece(), 0..24)) {
            assert_plain_agrees(pieces.concat().as_bytes());
        }

        #[test]
        fn plain_parser_agrees_with_serde_on_mutated_lines(mutations in prop::collection::vec(mutation(), 1..6)) {
            let body = mutated_sample(&mutations);
            for line in body.split(|&byte| byte == b'\n') {
                assert_plain_agrees(line.strip_suffix(b"\r").unwrap_or(line));
            }
        }

        #[test]
        fn plain_parser_agrees_with_serde_on_written_entries(
            timestamp_ns in any::<i64>(),
            tags in prop::collection::btree_map(text_strategy(), text_strategy(), 0..4),
            body in text_strategy(),
        ) {
            let line = serde_json::to_string(&json!({"ts": timestamp_ns, "tags": tags, "body": body})).unwrap();
            assert_plain_agrees(line.as_bytes());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn line_splitting_matches_slice_split(
            body in prop::collection::vec(prop::sample::select(vec![b'\n', b'\n', b'\r', b'a', b'{', 0xff]), 0..300),
        ) {
            let expected: Vec<&[u8]> = body.split(|&byte| byte == b'\n').collect();
            let lines: Vec<&[u8]> = (Lines { rest: Some(&body) }).collect();
            prop_assert_eq!(lines, expected);
            prop_assert_eq!(count_newlines(&body), body.iter().filter(|&&byte| byte == b'\n').count());
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(interesting_byte(), 0..512)) {
            check_invariants(&body);
        }

        #[test]
        fn mutated_ndjson_never_panics(mutations in prop::collection::vec(mutation(), 1..8)) {
            let body = mutated_sample(&mutations);
            check_invariants(&body);
        }

        #[test]
        fn serde_json_written_entries_parse_back(
            entries in prop::collection::vec(
                (any::<i64>(), prop::collection::btree_map("[a-z]{1,6}", text_strategy(), 0..4), text_strategy()),
                0..6,
            ),
        ) {
            let mut text = String::new();
            for (timestamp_ns, tags, body) in &entries {
                text.push_str(&serde_json::to_string(&json!({"ts": timestamp_ns, "tags": tags, "body": body})).unwrap());
                text.push('\n');
            }
            let parsed = owned(&parse(&text).unwrap());
            prop_assert_eq!(parsed.len(), entries.len());
            for (got, (timestamp_ns, tags, body)) in parsed.iter().zip(&entries) {
                prop_assert_eq!(got.timestamp_ns, *timestamp_ns);
                let expected_tags: Vec<(String, String)> = tags.clone().into_iter().collect();
                prop_assert_eq!(&got.tags, &expected_tags);
                prop_assert_eq!(&got.body, body);
            }
        }

        #[test]
        fn written_lines_parse_back(
            seq in any::<u64>(),
            timestamp_ns in any::<i64>(),
            node_id in any::<u32>(),
            shard in any::<u32>(),
            tags in prop::collection::btree_map(text_strategy(), text_strategy(), 0..4),
            body in prop_oneof![text_strategy().prop_map(String::into_bytes), prop::collection::vec(any::<u8>(), 0..32)],
        ) {
            let entry = LogEntry { fields: Default::default(),  seq, timestamp_ns, tags, body: bytes::Bytes::from(body), node_id, shard };
            let mut out = Vec::new();
            write_entry_line(&mut out, &entry);
            assert_line_matches(&out, &entry);
        }
    }

    // ---- speed ----

    /// Parse speed over ~100k LogHub entries with 3 tags each. Prints, never
    /// asserts a time. Run with
    /// `cargo test --release --lib http::ndjson::tests::parse_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; run in release mode by hand"]
    fn parse_speed() {
        const ENTRY_COUNT: usize = 100_000;
        const ROUNDS: usize = 10;
        let lines: Vec<String> = ["Apache", "OpenSSH"].iter().flat_map(|file| crate::loghub::lines(file)).collect();
        for rfc3339 in [false, true] {
            let mut text = String::new();
            for index in 0..ENTRY_COUNT {
                let timestamp_ns = SAMPLE_SECONDS * NANOS_PER_SECOND + index as i64 * 1_000;
                let ts = if rfc3339 {
                    json!(format!("2026-11-22T02:07:{:02}.{:09}Z", index / 1_000_000 % 60, index % 1_000_000 * 1_000))
                } else {
                    json!(timestamp_ns)
                };
                let tags = json!({"host": format!("web-{}", index % 16), "app": "apache", "level": "info"});
                let entry = json!({"ts": ts, "tags": tags, "body": lines[index % lines.len()]});
                text.push_str(&serde_json::to_string(&entry).unwrap());
                text.push('\n');
            }
            let mut best = f64::INFINITY;
            for _ in 0..ROUNDS {
                let start = Instant::now();
                let batch = parse_ndjson(text.as_bytes(), ENTRY_COUNT).unwrap();
                let mut scratch = Vec::new();
                let refs = batch.entry_refs(&mut scratch);
                assert_eq!(refs.len(), ENTRY_COUNT);
                std::hint::black_box(&refs);
                best = best.min(start.elapsed().as_secs_f64());
            }
            println!(
                "parse_ndjson + entry_refs, {} ts: {ENTRY_COUNT} entries ({:.1} MB, {:.0} bytes/entry, 3 tags), \
                 best of {ROUNDS}: {:.2} ms, {:.2} M entries/s, {:.0} MB/s on one core",
                if rfc3339 { "RFC 3339" } else { "integer" },
                text.len() as f64 / 1e6,
                text.len() as f64 / ENTRY_COUNT as f64,
                best * 1e3,
                ENTRY_COUNT as f64 / best / 1e6,
                text.len() as f64 / best / 1e6,
            );
        }
    }
}
