//! JSON lines (`POST /v1/jsonline`, DESIGN.md section 11): one JSON object
//! a line, each made an entry by the field choice of [`super::fields`], for
//! shippers that send arbitrary JSON (Vector's and Fluent Bit's `http`
//! outputs, syslog-ng's `http()`).
//!
//! The protocol has no per-line status, so a request is all or nothing: one
//! bad line refuses the request, naming the line (1-based, counting blank
//! lines, which are skipped), and nothing of it is stored.

use std::collections::BTreeMap;

use super::fields::{DocumentError, FieldChoice};
use crate::proto::LogEntry;

/// Why a JSON-lines body was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonLineError {
    /// A line is not a valid document.
    #[error("line {line}: {source}")]
    Line {
        /// 1-based.
        line: usize,
        /// What is wrong with it.
        source: DocumentError,
    },
    /// A line is not UTF-8 (JSON text is).
    #[error("line {line}: not UTF-8 at byte {at}")]
    NotUtf8 {
        /// 1-based.
        line: usize,
        /// The offset of the first bad byte in the line.
        at: usize,
    },
    /// More lines than one request may carry.
    #[error("more than {max} lines in one request (HTTP_ENTRIES_PER_REQUEST_MAX)")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

/// The entries of a JSON-lines body (empty for a body of blank lines), at
/// most `entries_max`; `now_ns` is the time of a line that names none.
pub fn decode(
    body: &[u8],
    choice: &FieldChoice,
    now_ns: i64,
    entries_max: usize,
) -> Result<Vec<LogEntry>, JsonLineError> {
    let mut entries = Vec::new();
    for (index, line) in body.split(|&byte| byte == b'\n').enumerate() {
        let line_number = index + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if entries.len() == entries_max {
            return Err(JsonLineError::TooMany { max: entries_max });
        }
        let text = std::str::from_utf8(line)
            .map_err(|error| JsonLineError::NotUtf8 { line: line_number, at: error.valid_up_to() })?;
        let entry = choice
            .entry(text, BTreeMap::new(), now_ns)
            .map_err(|source| JsonLineError::Line { line: line_number, source })?;
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 42;

    #[test]
    fn each_line_is_one_entry_and_blank_lines_are_skipped() {
        let body = b"{\"message\":\"one\",\"level\":\"INFO\",\"ts\":1714564800}\r\n\n  \n{\"msg\":\"two\",\"n\":1}";
        let entries = decode(body, &FieldChoice::default(), NOW, 10).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(&entries[0].body[..], b"one");
        assert_eq!(entries[0].timestamp_ns, 1_714_564_800_000_000_000);
        assert_eq!(entries[0].tags.get("level").map(String::as_str), Some("INFO"));
        assert_eq!(&entries[1].body[..], b"two");
        assert_eq!(entries[1].timestamp_ns, NOW);
        assert_eq!(entries[1].fields.get("n").map(String::as_str), Some("1"));
        assert_eq!(decode(b"", &FieldChoice::default(), NOW, 10), Ok(vec![]));
        assert_eq!(decode(b"\n \n", &FieldChoice::default(), NOW, 10), Ok(vec![]));
    }

    #[test]
    fn a_bad_line_is_named_and_refuses_the_request() {
        let body = b"{\"message\":\"fine\"}\n\n{\"message\":\"cut\"\n";
        let refused = decode(body, &FieldChoice::default(), NOW, 10).unwrap_err();
        assert!(matches!(refused, JsonLineError::Line { line: 3, source: DocumentError::Json(_) }), "{refused}");
        assert!(refused.to_string().starts_with("line 3: not JSON"), "{refused}");
        let refused = decode(b"[1]\n", &FieldChoice::default(), NOW, 10).unwrap_err();
        assert_eq!(refused.to_string(), "line 1: a document must be a JSON object, not an array");
        let refused = decode(b"{}\n{\"a\":\"\xff\"}", &FieldChoice::default(), NOW, 10).unwrap_err();
        assert_eq!(refused, JsonLineError::NotUtf8 { line: 2, at: 6 });
        let refused = decode(b"{\"time\":\"soon\"}", &FieldChoice::default(), NOW, 10).unwrap_err();
        assert!(refused.to_string().starts_with("line 1: field \"time\": \"soon\" is neither"), "{refused}");
    }

    #[test]
    fn the_line_count_is_bounded() {
        let body = b"{}\n{}\n{}\n";
        assert_eq!(decode(body, &FieldChoice::default(), NOW, 3).unwrap().len(), 3);
        assert_eq!(decode(body, &FieldChoice::default(), NOW, 2), Err(JsonLineError::TooMany { max: 2 }));
    }
}
