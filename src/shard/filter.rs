//! The exact check a query makes of each entry it reads (DESIGN.md
//! sections 7 and 12): the index only narrows the blocks; every entry of a
//! block read is then judged here, so an index's false positive costs a
//! block read and never a wrong answer.
//!
//! The predicates are checked cheapest and most selective first: time (two
//! integer compares), tags (a short walk of the entry's tag fields), fields,
//! words (`q=`, one pass over the body), substrings (`contains=`, one
//! `memmem` pass per needle). Nothing is decoded or copied to judge an
//! entry: [`EntryFilter::keeps`] reads a zero-copy [`EntryView`].
//!
//! A substring that occurs nowhere in a block's decompressed payload occurs
//! in none of its bodies, so a [`PayloadPrefilter`] lets a reader skip a
//! whole block with one `memmem` pass (several GB/s) instead of parsing
//! its entries: this is what makes a brute-force `contains=` over data the
//! index cannot prune fast. Words compare ignoring ASCII case, so a word
//! cannot be searched for as is; but the part of a word that has no ASCII
//! letter (digits, `_`, non-ASCII bytes) is the same in every case, and
//! request ids, error codes and addresses, the words people search for,
//! are mostly such parts: the prefilter searches for each word's longest
//! run without letters (`_1796572913_10230` of `needle_1796572913_10230`).
//! Per-block word filters in the index are what prunes words first.
//!
//! Pure: no I/O, no executor.

use memchr::memmem;

use crate::codec::block::EntryView;
use crate::index::words::WordQuery;
use crate::limits::{QUERY_CONTAINS_BYTES_MAX, QUERY_CONTAINS_MAX};
use crate::proto::LogEntry;

/// Why a `contains=` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstringsError {
    /// An empty value would match every body: almost surely a mistake.
    #[error("contains= is empty: give the text the body must contain")]
    Empty,
    /// A value is longer than [`QUERY_CONTAINS_BYTES_MAX`].
    #[error("a contains= value is {0} bytes long; at most {QUERY_CONTAINS_BYTES_MAX} are allowed")]
    TooLong(usize),
    /// More values than [`QUERY_CONTAINS_MAX`].
    #[error("more than {QUERY_CONTAINS_MAX} contains= values")]
    TooMany,
}

/// The substrings a query asks for (`contains=`, all must occur in the
/// body, exact and case-sensitive), each compiled once into a searcher.
#[derive(Clone, Debug, Default)]
pub struct Substrings {
    finders: Vec<memmem::Finder<'static>>,
}

impl PartialEq for Substrings {
    fn eq(&self, other: &Self) -> bool {
        self.needles().eq(other.needles())
    }
}
impl Eq for Substrings {}

impl Substrings {
    /// The `contains=` values, bounded by [`QUERY_CONTAINS_MAX`] and
    /// [`QUERY_CONTAINS_BYTES_MAX`]; repeats are kept once.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, SubstringsError> {
        let mut substrings = Substrings::default();
        for value in values {
            if value.is_empty() {
                return Err(SubstringsError::Empty);
            }
            if value.len() > QUERY_CONTAINS_BYTES_MAX {
                return Err(SubstringsError::TooLong(value.len()));
            }
            if substrings.finders.iter().any(|finder| finder.needle() == value.as_bytes()) {
                continue;
            }
            if substrings.finders.len() == QUERY_CONTAINS_MAX {
                return Err(SubstringsError::TooMany);
            }
            substrings.finders.push(memmem::Finder::new(value.as_bytes()).into_owned());
        }
        Ok(substrings)
    }

    /// Whether no substring is asked for (every body matches).
    pub fn is_empty(&self) -> bool {
        self.finders.is_empty()
    }

    /// The substrings, in the order first given.
    pub fn needles(&self) -> impl Iterator<Item = &[u8]> {
        self.finders.iter().map(|finder| finder.needle())
    }

    /// Whether `body` contains every substring.
    #[inline]
    pub fn matches(&self, body: &[u8]) -> bool {
        self.finders.iter().all(|finder| finder.find(body).is_some())
    }

    /// Whether some substring occurs nowhere in `bytes`: then no part of
    /// `bytes` (no body stored in it) contains all of them.
    #[inline]
    pub fn absent_from(&self, bytes: &[u8]) -> bool {
        self.finders.iter().any(|finder| finder.find(bytes).is_none())
    }
}

/// Every predicate of a query, owned, built once per query and checked
/// against each entry read: the `keep` of the shard's readers.
#[derive(Clone, Debug)]
pub struct EntryFilter {
    /// Smallest timestamp, inclusive.
    pub from_ts: i64,
    /// Largest timestamp, exclusive.
    pub to_ts: i64,
    /// `key=value` tags, all required.
    pub tags: Vec<(String, String)>,
    /// `key=value` fields, all required, exact.
    pub fields: Vec<(String, String)>,
    /// Whole words of the body, all required (`q=`).
    pub words: WordQuery,
    /// Substrings of the body, all required (`contains=`).
    pub contains: Substrings,
}

impl Default for EntryFilter {
    /// The filter that keeps everything.
    fn default() -> Self {
        EntryFilter {
            from_ts: i64::MIN,
            to_ts: i64::MAX,
            tags: Vec::new(),
            fields: Vec::new(),
            words: WordQuery::default(),
            contains: Substrings::default(),
        }
    }
}

impl EntryFilter {
    /// Whether the stored entry `view` satisfies every predicate: time,
    /// then tags, then fields, then words, then substrings.
    #[inline]
    pub fn keeps(&self, view: &EntryView<'_>) -> bool {
        view.timestamp_ns >= self.from_ts
            && view.timestamp_ns < self.to_ts
            && self.tags.iter().all(|(key, value)| {
                let mut found = false;
                let parsed = view.for_each_tag(|held_key, held_value| found |= held_key == key && held_value == value);
                parsed.is_ok() && found
            })
            && self.fields.iter().all(|(key, value)| {
                let mut found = false;
                let parsed =
                    view.for_each_field(|held_key, held_value| found |= held_key == key && held_value == value);
                parsed.is_ok() && found
            })
            && self.words.matches(view.body)
            && self.contains.matches(view.body)
    }

    /// The same judgement of a decoded entry (live tails read whole
    /// entries).
    pub fn keeps_entry(&self, entry: &LogEntry) -> bool {
        entry.timestamp_ns >= self.from_ts
            && entry.timestamp_ns < self.to_ts
            && self.tags.iter().all(|(key, value)| entry.tags.get(key) == Some(value))
            && self.fields.iter().all(|(key, value)| entry.fields.get(key) == Some(value))
            && self.words.matches(&entry.body)
            && self.contains.matches(&entry.body)
    }
}

/// Runs of a word without ASCII letters shorter than this are not searched
/// for: a byte or two occurs in nearly every block, so the search would
/// cost a pass and rule nothing out.
const WORD_ANCHOR_BYTES_MIN: usize = 3;

/// Texts that every body an [`EntryFilter`] keeps must contain exactly, so
/// that a block whose decompressed payload lacks one of them holds no
/// match: the `contains=` substrings, and the longest run without ASCII
/// letters of each `q=` word. Built once per query.
#[derive(Clone, Debug, Default)]
pub struct PayloadPrefilter {
    finders: Vec<memmem::Finder<'static>>,
}

impl PayloadPrefilter {
    /// The prefilter of `filter`.
    pub fn of(filter: &EntryFilter) -> Self {
        let mut finders: Vec<memmem::Finder<'static>> = filter.contains.finders.clone();
        for word in filter.words.words() {
            let anchor = word
                .split(|byte| byte.is_ascii_alphabetic())
                .max_by_key(|run| run.len())
                .filter(|run| run.len() >= WORD_ANCHOR_BYTES_MIN);
            if let Some(anchor) = anchor {
                finders.push(memmem::Finder::new(anchor).into_owned());
            }
        }
        PayloadPrefilter { finders }
    }

    /// Whether no entry stored in a block whose decompressed payload is
    /// `payload` can match, judged without parsing it. `false` means
    /// "maybe": the entries must still be checked.
    #[inline]
    pub fn rules_out(&self, payload: &[u8]) -> bool {
        self.finders.iter().any(|finder| finder.find(payload).is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::block::{encode_entry, EntryRef};

    fn stored(timestamp_ns: i64, tags: &[(&str, &str)], fields: &[(&str, &str)], body: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_entry(&EntryRef { timestamp_ns, tags, body: body.as_bytes(), fields }, timestamp_ns, &mut out);
        // Stored entries are what follows the length prefix.
        let (_, prefix) = crate::codec::block::read_varint(&out).unwrap();
        out.split_off(prefix)
    }

    fn filter(words: &[&str], contains: &[&str]) -> EntryFilter {
        EntryFilter {
            words: WordQuery::parse(words.iter().copied()).unwrap(),
            contains: Substrings::parse(contains.iter().copied()).unwrap(),
            ..EntryFilter::default()
        }
    }

    #[test]
    fn substrings_are_exact_case_sensitive_and_all_required() {
        let both = Substrings::parse(["Refused", "10.0.0"]).unwrap();
        assert!(both.matches(b"Connection Refused by 10.0.0.7"));
        assert!(!both.matches(b"connection refused by 10.0.0.7"), "case matters");
        assert!(!both.matches(b"Connection Refused by 10.0.1.7"), "all of them");
        assert!(Substrings::default().matches(b"anything"));
        assert!(both.absent_from(b"Refused only"));
        assert!(!both.absent_from(b"Refused ... 10.0.0 in another entry"));
        let repeated = Substrings::parse(["x", "x"]).unwrap();
        assert_eq!(repeated.needles().count(), 1);
    }

    #[test]
    fn bad_substrings_are_refused() {
        assert_eq!(Substrings::parse([""]).unwrap_err(), SubstringsError::Empty);
        let long = "x".repeat(QUERY_CONTAINS_BYTES_MAX + 1);
        assert_eq!(Substrings::parse([long.as_str()]).unwrap_err(), SubstringsError::TooLong(long.len()));
        let many: Vec<String> = (0..=QUERY_CONTAINS_MAX).map(|index| format!("s{index}")).collect();
        assert_eq!(Substrings::parse(many.iter().map(String::as_str)).unwrap_err(), SubstringsError::TooMany);
        assert!(Substrings::parse(many[..QUERY_CONTAINS_MAX].iter().map(String::as_str)).is_ok());
        let longest = "y".repeat(QUERY_CONTAINS_BYTES_MAX);
        assert!(Substrings::parse([longest.as_str()]).is_ok());
    }

    #[test]
    fn the_view_and_the_decoded_entry_are_judged_alike() {
        use prost::Message;
        let entries = [
            stored(5, &[("app", "web")], &[("user", "ann")], "GET /index ERROR blk_42 took 10ms"),
            stored(6, &[("app", "db")], &[], "error: blk_42 missing"),
            stored(7, &[("app", "web"), ("dc", "eu")], &[], "ok"),
        ];
        let filters = [
            EntryFilter::default(),
            filter(&["error"], &[]),
            filter(&["ERROR", "blk_42"], &["took"]),
            filter(&[], &["blk_4"]),
            filter(&["blk_4"], &[]),
            EntryFilter { tags: vec![("app".into(), "web".into())], ..filter(&["error"], &[]) },
            EntryFilter { fields: vec![("user".into(), "ann".into())], ..EntryFilter::default() },
            EntryFilter { from_ts: 6, to_ts: 7, ..EntryFilter::default() },
        ];
        let expected = [
            [true, true, true],
            [true, true, false],
            [true, false, false],
            [true, true, false],
            [false, false, false],
            [true, false, false],
            [true, false, false],
            [false, true, false],
        ];
        for (filter, expected) in filters.iter().zip(expected) {
            for (bytes, expected) in entries.iter().zip(expected) {
                let view = EntryView::parse(bytes).unwrap();
                assert_eq!(filter.keeps(&view), expected, "{filter:?} on {view:?}");
                let entry = LogEntry::decode(bytes.as_slice()).unwrap();
                assert_eq!(filter.keeps_entry(&entry), expected, "{filter:?} on {entry:?}");
            }
        }
    }

    #[test]
    fn an_absent_substring_or_word_anchor_rules_a_payload_out() {
        let rules_out = |words: &[&str], contains: &[&str], payload: &[u8]| {
            PayloadPrefilter::of(&filter(words, contains)).rules_out(payload)
        };
        assert!(!PayloadPrefilter::of(&EntryFilter::default()).rules_out(b""));
        assert!(rules_out(&[], &["nowhere"], b"some payload"));
        assert!(!rules_out(&[], &["pay"], b"some payload"));
        assert!(rules_out(&[], &["pay", "nowhere"], b"some payload"), "all are required");
        // Letters compare ignoring case: only the runs without them count.
        assert!(!rules_out(&["nowhere"], &[], b"words of letters only are never ruled out this way"));
        assert!(!rules_out(&["REQ_12345_x"], &[], b"... req_12345_X ..."));
        assert!(rules_out(&["REQ_12345_x"], &[], b"... req_1234_x ..."));
        assert!(!rules_out(&["a12b"], &[], b"too short an anchor to search for"));
        assert!(!rules_out(&["naïve"], &[], "NAïVE".as_bytes()));
        assert!(rules_out(&["naïve日志"], &[], "NAïVE 日 志".as_bytes()), "non-ASCII bytes compare exactly");
        assert!(!rules_out(&["naïve日志"], &[], "NAïVE日志".as_bytes()));
    }

    proptest::proptest! {
        /// The prefilter never rules out a payload holding a body the
        /// filter keeps (the bodies stored back to back with other text).
        #[test]
        fn the_prefilter_never_rules_out_a_match(
            body in "[a-cA-C0-9_ .:-]{0,30}",
            before in "[a-c0-9_ ]{0,10}",
            words in proptest::collection::vec("[a-cA-C0-9_]{1,5}", 0..3),
            contains in proptest::collection::vec("[a-cA-C0-9_ .:-]{1,4}", 0..2),
        ) {
            let filter = EntryFilter {
                words: WordQuery::parse(words.iter().map(String::as_str)).unwrap(),
                contains: Substrings::parse(contains.iter().map(String::as_str)).unwrap(),
                ..EntryFilter::default()
            };
            if filter.words.matches(body.as_bytes()) && filter.contains.matches(body.as_bytes()) {
                let payload = format!("{before}\n{body}\n");
                proptest::prop_assert!(!PayloadPrefilter::of(&filter).rules_out(payload.as_bytes()));
            }
        }
    }
}
