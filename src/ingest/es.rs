//! The Elasticsearch bulk API's body (`/es/_bulk`, DESIGN.md section 11):
//! NDJSON of action lines, each but `delete` followed by a document line.
//!
//! ```text
//! {"create":{"_index":"logs","_id":"7"}}      create or index: stored
//! {"message":"...","@timestamp":"..."}        the document (fields.rs)
//! {"index":{}}                                the URL's index, if any
//! {"message":"..."}
//! {"delete":{"_index":"logs","_id":"7"}}      refused (per item): no document
//! {"update":{"_id":"7"}}                      refused (per item), its line skipped
//! {"doc":{...}}
//! ```
//!
//! Errors come at two levels, as in Elasticsearch: a body whose structure
//! cannot be followed (an action line that is not JSON, an unknown action,
//! an action without its document line, no action at all) refuses the
//! whole request ([`BulkError`]); a document that cannot be stored (bad
//! JSON, a bad time, over a limit, `delete` and `update` on an append-only
//! store) fails only its item ([`ItemError`]), and the others go on.
//!
//! The index (the action's `_index`, else the one in the URL
//! `/es/{index}/_bulk`) becomes the tag `index` ([`INDEX_TAG`]); without
//! either, the entry has no such tag.

use std::collections::BTreeMap;

use super::fields::FieldChoice;
use crate::proto::LogEntry;

/// The tag that holds a document's index.
pub const INDEX_TAG: &str = "index";

/// A bulk action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `create`: store the document.
    Create,
    /// `index`: store the document (append-only, so as `create`).
    Index,
    /// `delete`: refused; has no document line.
    Delete,
    /// `update`: refused; its document line is skipped.
    Update,
}

impl Action {
    /// The action's name, the key of its item in the answer.
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Index => "index",
            Action::Delete => "delete",
            Action::Update => "update",
        }
    }

    fn of(name: &str) -> Option<Action> {
        match name {
            "create" => Some(Action::Create),
            "index" => Some(Action::Index),
            "delete" => Some(Action::Delete),
            "update" => Some(Action::Update),
            _ => None,
        }
    }
}

/// Why one item failed: its `error` in the answer (status 400).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemError {
    /// Elasticsearch's error type: `document_parsing_exception` for a
    /// document that cannot be read, `illegal_argument_exception` for one
    /// over a limit or an action wormdb does not do.
    pub kind: &'static str,
    /// What is wrong, naming the line.
    pub reason: String,
}

/// One action of the request and what became of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The action.
    pub action: Action,
    /// Its index (`_index`, else the URL's), if any.
    pub index: Option<String>,
    /// Its `_id`, if the action gave one (stored nowhere: answered back).
    pub id: Option<String>,
    /// The entry to store, or why not.
    pub outcome: Result<LogEntry, ItemError>,
}

/// Why a whole bulk request was refused (HTTP 400, or 413 for
/// [`BulkError::TooManyItems`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BulkError {
    /// An action line that is not an object of one action with its
    /// metadata object.
    #[error("Malformed action/metadata line [{line}]: {reason}")]
    MalformedAction {
        /// 1-based.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An action other than create, index, delete or update.
    #[error(
        "Malformed action/metadata line [{line}], expected one of [create, delete, index, update] but found [{found}]"
    )]
    UnknownAction {
        /// 1-based.
        line: usize,
        /// The action named.
        found: String,
    },
    /// A create, index or update action at the end of the body.
    #[error("the {action} action on line {line} has no document line after it")]
    MissingDocument {
        /// 1-based.
        line: usize,
        /// Its name.
        action: &'static str,
    },
    /// A body without any action.
    #[error("Validation Failed: 1: no requests added;")]
    NoRequests,
    /// More actions than one request may carry.
    #[error("more than {max} actions in one request (HTTP_ENTRIES_PER_REQUEST_MAX)")]
    TooManyItems {
        /// The limit.
        max: usize,
    },
}

impl BulkError {
    /// Elasticsearch's error type for it.
    pub fn es_type(&self) -> &'static str {
        match self {
            BulkError::NoRequests => "action_request_validation_exception",
            _ => "illegal_argument_exception",
        }
    }
}

/// The items of a bulk body, in order, at most `items_max`;
/// `url_index` is the index of `/es/{index}/_bulk`, `now_ns` the time of a
/// document that names none.
pub fn decode(
    body: &[u8],
    url_index: Option<&str>,
    choice: &FieldChoice,
    now_ns: i64,
    items_max: usize,
) -> Result<Vec<Item>, BulkError> {
    let mut lines: Vec<&[u8]> = body.split(|&byte| byte == b'\n').collect();
    // A final newline ends the last line; it does not start another.
    if lines.last().is_some_and(|last| last.is_empty()) {
        lines.pop();
    }
    let mut items = Vec::new();
    let mut next = 0;
    while next < lines.len() {
        let (line_number, line) = (next + 1, lines[next]);
        next += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if items.len() == items_max {
            return Err(BulkError::TooManyItems { max: items_max });
        }
        let (action, index, id) = action_line(line_number, line, url_index)?;
        let outcome = match action {
            Action::Delete => Err(refused_action(action)),
            Action::Create | Action::Index | Action::Update => {
                let Some(document) = lines.get(next) else {
                    return Err(BulkError::MissingDocument { line: line_number, action: action.name() });
                };
                next += 1;
                match action {
                    Action::Update => Err(refused_action(action)),
                    _ => document_entry(line_number + 1, document, index.as_deref(), choice, now_ns),
                }
            }
        };
        items.push(Item { action, index, id, outcome });
    }
    if items.is_empty() {
        return Err(BulkError::NoRequests);
    }
    Ok(items)
}

fn refused_action(action: Action) -> ItemError {
    ItemError {
        kind: "illegal_argument_exception",
        reason: format!("wormdb is append-only: the {} action is not supported; use create or index", action.name()),
    }
}

/// The action, index and id of an action line.
fn action_line(
    line_number: usize,
    line: &[u8],
    url_index: Option<&str>,
) -> Result<(Action, Option<String>, Option<String>), BulkError> {
    let malformed = |reason: String| BulkError::MalformedAction { line: line_number, reason };
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|error| malformed(error.to_string()))?;
    let serde_json::Value::Object(object) = value else {
        return Err(malformed("expected a JSON object".into()));
    };
    let mut members = object.into_iter();
    let (Some((name, metadata)), None) = (members.next(), members.next()) else {
        return Err(malformed("expected an object with exactly one action".into()));
    };
    let action = Action::of(&name).ok_or(BulkError::UnknownAction { line: line_number, found: name })?;
    let serde_json::Value::Object(metadata) = metadata else {
        return Err(malformed(format!("the {} action's metadata must be an object", action.name())));
    };
    let text = |key: &str| -> Result<Option<String>, BulkError> {
        match metadata.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(text)) => Ok(Some(text.clone())),
            Some(serde_json::Value::Number(number)) if key == "_id" => Ok(Some(number.to_string())),
            Some(_) => Err(malformed(format!("{key} must be a string"))),
        }
    };
    let index = text("_index")?.or_else(|| url_index.map(str::to_owned));
    Ok((action, index, text("_id")?))
}

/// The entry of a document line (line `line_number`), tagged with its index.
fn document_entry(
    line_number: usize,
    document: &[u8],
    index: Option<&str>,
    choice: &FieldChoice,
    now_ns: i64,
) -> Result<LogEntry, ItemError> {
    let parsing = |reason: String| ItemError { kind: "document_parsing_exception", reason };
    if document.iter().all(u8::is_ascii_whitespace) {
        return Err(parsing(format!("line {line_number}: the document line is empty")));
    }
    let text = std::str::from_utf8(document).map_err(|error| {
        parsing(format!("line {line_number}: the document is not UTF-8 at byte {}", error.valid_up_to()))
    })?;
    let tags: BTreeMap<String, String> =
        index.map(|index| (INDEX_TAG.to_owned(), index.to_owned())).into_iter().collect();
    choice.entry(text, tags, now_ns).map_err(|error| ItemError {
        kind: if error.is_parse_error() { "document_parsing_exception" } else { "illegal_argument_exception" },
        reason: format!("line {line_number}: {error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 7;

    fn decode_default(body: &str, url_index: Option<&str>) -> Result<Vec<Item>, BulkError> {
        decode(body.as_bytes(), url_index, &FieldChoice::default(), NOW, 100)
    }

    fn tags(entry: &LogEntry) -> Vec<(&str, &str)> {
        entry.tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect()
    }

    #[test]
    fn create_and_index_store_their_documents_with_the_index_as_a_tag() {
        let body = concat!(
            "{\"create\":{\"_index\":\"hdfs\",\"_id\":\"a1\"}}\n",
            "{\"message\":\"first\",\"@timestamp\":\"2024-05-01T12:00:00Z\",\"level\":\"INFO\"}\n",
            "\n",
            "{\"index\":{}}\r\n",
            "{\"message\":\"second\",\"extra\":{\"k\":[1,2]}}\n",
            "{\"index\":{\"_id\":17}}\n",
            "{\"message\":\"third\"}",
        );
        let items = decode_default(body, Some("from-url")).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(
            (items[0].action, items[0].index.as_deref(), items[0].id.as_deref()),
            (Action::Create, Some("hdfs"), Some("a1"))
        );
        let first = items[0].outcome.as_ref().unwrap();
        assert_eq!(&first.body[..], b"first");
        assert_eq!(first.timestamp_ns, 1_714_564_800_000_000_000);
        assert_eq!(tags(first), [("index", "hdfs"), ("level", "INFO")]);
        assert_eq!(
            (items[1].action, items[1].index.as_deref(), items[1].id.as_deref()),
            (Action::Index, Some("from-url"), None)
        );
        let second = items[1].outcome.as_ref().unwrap();
        assert_eq!((tags(second), second.timestamp_ns), (vec![("index", "from-url")], NOW));
        assert_eq!(second.fields.get("extra.k").map(String::as_str), Some("[1,2]"));
        assert_eq!(items[2].id.as_deref(), Some("17"), "a numeric _id is its text");
        let items = decode_default("{\"create\":{}}\n{\"message\":\"no index\"}\n", None).unwrap();
        assert!(items[0].outcome.as_ref().unwrap().tags.is_empty(), "no index, no tag");
    }

    #[test]
    fn bad_documents_fail_their_item_only() {
        let body = concat!(
            "{\"create\":{\"_index\":\"x\"}}\n",
            "{\"message\":\"cut\"\n",
            "{\"create\":{}}\n",
            "{\"message\":\"fine\"}\n",
            "{\"create\":{}}\n",
            "[1,2]\n",
            "{\"create\":{}}\n",
            "{\"time\":\"noon\"}\n",
            "{\"create\":{}}\n",
            "\n",
            "{\"create\":{}}\n",
            "{\"level\":\"",
        );
        let long = "v".repeat(crate::limits::TAG_VALUE_BYTES_MAX + 1);
        let body = format!("{body}{long}\"}}\n");
        let items = decode_default(&body, None).unwrap();
        let outcomes: Vec<Result<(), (&str, &str)>> = items
            .iter()
            .map(|item| item.outcome.as_ref().map(|_| ()).map_err(|error| (error.kind, error.reason.as_str())))
            .collect();
        assert!(
            matches!(outcomes[0], Err(("document_parsing_exception", reason)) if reason.starts_with("line 2: not JSON"))
        );
        assert_eq!(outcomes[1], Ok(()));
        assert!(matches!(outcomes[2], Err(("document_parsing_exception", reason)) if reason.contains("not an array")));
        assert!(matches!(outcomes[3], Err(("document_parsing_exception", reason)) if reason.contains("\"noon\"")));
        assert_eq!(outcomes[4], Err(("document_parsing_exception", "line 10: the document line is empty")));
        assert!(
            matches!(outcomes[5], Err(("illegal_argument_exception", reason)) if reason.contains("TAG_VALUE_BYTES_MAX"))
        );
        let bytes = b"{\"create\":{}}\n{\"message\":\"\xff\"}\n";
        let items = decode(bytes, None, &FieldChoice::default(), NOW, 10).unwrap();
        assert_eq!(items[0].outcome.as_ref().unwrap_err().reason, "line 2: the document is not UTF-8 at byte 12");
    }

    #[test]
    fn delete_and_update_are_refused_per_item_keeping_the_pairing() {
        let body = concat!(
            "{\"delete\":{\"_index\":\"x\",\"_id\":\"1\"}}\n",
            "{\"update\":{\"_id\":\"1\"}}\n",
            "{\"doc\":{\"message\":\"changed\"}}\n",
            "{\"create\":{}}\n",
            "{\"message\":\"kept\"}\n",
        );
        let items = decode_default(body, None).unwrap();
        assert_eq!(
            items.iter().map(|item| item.action).collect::<Vec<_>>(),
            [Action::Delete, Action::Update, Action::Create]
        );
        for item in &items[..2] {
            let error = item.outcome.as_ref().unwrap_err();
            assert_eq!(error.kind, "illegal_argument_exception");
            assert!(error.reason.contains("append-only"), "{}", error.reason);
        }
        assert_eq!(&items[2].outcome.as_ref().unwrap().body[..], b"kept");
    }

    #[test]
    fn a_body_that_cannot_be_followed_refuses_the_request() {
        let refused = decode_default("{\"create\":{}}\n{\"message\":\"a\"}\n{\"create\":{}}\n", None).unwrap_err();
        assert_eq!(refused, BulkError::MissingDocument { line: 3, action: "create" });
        assert_eq!(refused.to_string(), "the create action on line 3 has no document line after it");
        assert_eq!(
            decode_default("{\"update\":{}}", None),
            Err(BulkError::MissingDocument { line: 1, action: "update" })
        );
        let refused = decode_default("{\"upsert\":{}}\n{}\n", None).unwrap_err();
        assert_eq!(refused, BulkError::UnknownAction { line: 1, found: "upsert".into() });
        assert_eq!(
            refused.to_string(),
            "Malformed action/metadata line [1], expected one of [create, delete, index, update] but found [upsert]"
        );
        for bad in [
            "{\"create\":{}",
            "[]",
            "{}",
            "{\"create\":{},\"index\":{}}",
            "{\"create\":1}",
            "{\"create\":{\"_index\":5}}",
        ] {
            let refused = decode_default(&format!("{bad}\n{{}}\n"), None).unwrap_err();
            assert!(matches!(refused, BulkError::MalformedAction { line: 1, .. }), "{bad}: {refused}");
            assert_eq!(refused.es_type(), "illegal_argument_exception");
        }
        for empty in ["", "\n", " \n\r\n"] {
            assert_eq!(decode_default(empty, None), Err(BulkError::NoRequests), "{empty:?}");
        }
        assert_eq!(BulkError::NoRequests.es_type(), "action_request_validation_exception");
    }

    #[test]
    fn the_item_count_is_bounded() {
        let body = "{\"create\":{}}\n{}\n".repeat(3);
        assert_eq!(decode(body.as_bytes(), None, &FieldChoice::default(), NOW, 3).unwrap().len(), 3);
        assert_eq!(
            decode(body.as_bytes(), None, &FieldChoice::default(), NOW, 2),
            Err(BulkError::TooManyItems { max: 2 })
        );
    }

    #[test]
    fn the_field_choice_applies_to_every_document() {
        let choice = FieldChoice::from_params(Some("line"), Some("when"), Some("app")).unwrap();
        let body = b"{\"index\":{\"_index\":\"i\"}}\n{\"line\":\"l\",\"when\":1714564800000,\"app\":\"web\",\"level\":\"x\"}\n";
        let items = decode(body, None, &choice, NOW, 10).unwrap();
        let entry = items[0].outcome.as_ref().unwrap();
        assert_eq!((&entry.body[..], entry.timestamp_ns), (&b"l"[..], 1_714_564_800_000_000_000));
        assert_eq!(tags(entry), [("app", "web"), ("index", "i")]);
        assert_eq!(entry.fields.get("level").map(String::as_str), Some("x"));
    }
}
