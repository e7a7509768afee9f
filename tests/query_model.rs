//! The shard answers every query exactly as a brute-force filter over every
//! entry written would, whatever the index and the readers prune or skip.
//!
//! Random entries (LogHub-like words in varied case, random tags and
//! timestamps, ties included) are written to a shard with the smallest
//! segments; random queries (tags, `q=` words, `contains=` substrings,
//! time, direction, limit) are asked of both query paths (`Shard::query`,
//! seq order, and `Shard::query_ordered`, timestamp order) at each
//! [`Stage`]: with everything in the active segment, after the segment is
//! sealed and more is written, after a restart, and after the sealed
//! segment is recompressed with zstd. Each case runs either with the
//! production index caps or with caps so small that the index falls back
//! (pairs and tag sets saturated after a few blocks), and with or without
//! the writer's word filters (`--word-filters`). The model is written
//! here from the contract (DESIGN.md section 12), not from the library.
//!
//! A new way the stored data can change under the queries is one more
//! [`Stage`]: add the variant, make [`reach`] bring the shard there, and
//! every query is checked there too.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use proptest::prelude::*;
use wormdb::index::words::WordQuery;
use wormdb::index::IndexCaps;
use wormdb::limits::SEGMENT_BYTES_MIN;
use wormdb::shard::{ColdPolicy, EntryRef, Query, Shard, ShardConfig, Substrings};

/// Words as they occur in LogHub samples, in the cases they occur in.
const VOCABULARY: &[&str] = &[
    "INFO",
    "WARN",
    "ERROR",
    "error",
    "Error",
    "blk_38865049064139660",
    "blk_3886",
    "dfs",
    "DataNode",
    "PacketResponder",
    "10",
    "251",
    "42",
    "84",
    "50010",
    "session",
    "opened",
    "closed",
    "for",
    "user",
    "root",
    "Connection",
    "refused",
    "sshd",
    "pam_unix",
    "naïve",
    "日志",
];
/// What separates words in the bodies written.
const SEPARATORS: &[&str] = &[" ", ": ", "=", "/", ".", ", ", " [", "] ", "$", "-"];
const TAG_KEYS: &[&str] = &["host", "level", "app"];
const TAG_VALUES: &[&str] = &["a", "b", "c"];
/// Timestamps are drawn from `1..TS_RANGE` (0 would mean "now"), so many
/// entries share one.
const TS_RANGE: i64 = 400;
/// The bytes of filler bodies: printable ASCII that is no word byte.
const FILLER_BYTES: &[u8] = b" !\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~";

/// One entry as written, with the seq the shard gave it.
#[derive(Clone, Debug)]
struct Written {
    seq: u64,
    ts: i64,
    tags: Vec<(&'static str, &'static str)>,
    body: String,
    /// [`naive_words`] of the body, once.
    words: Vec<String>,
}

/// One entry to write.
#[derive(Clone, Debug)]
struct Draft {
    ts: i64,
    tags: Vec<(&'static str, &'static str)>,
    body: String,
}

/// A substring to search for: a piece of some body written, or a word.
#[derive(Clone, Debug)]
enum Needle {
    /// Bytes `start..start + len` of the body of entry `entry` (indexes
    /// taken modulo what exists).
    Piece { entry: usize, start: usize, len: usize },
    /// A vocabulary word, as it is.
    Word(usize),
}

#[derive(Clone, Debug)]
struct ModelQuery {
    tags: Vec<(&'static str, &'static str)>,
    words: Vec<String>,
    contains: Vec<Needle>,
    from_ts: i64,
    to_ts: i64,
    backward: bool,
    limit: usize,
}

fn draft() -> impl Strategy<Value = Draft> {
    let word = (0..VOCABULARY.len(), 0..SEPARATORS.len());
    let tag = (0..TAG_KEYS.len(), 0..TAG_VALUES.len());
    (1..TS_RANGE, proptest::collection::vec(tag, 0..3), proptest::collection::vec(word, 1..12)).prop_map(
        |(ts, tags, words)| {
            let mut tags: Vec<(&str, &str)> =
                tags.into_iter().map(|(key, value)| (TAG_KEYS[key], TAG_VALUES[value])).collect();
            tags.sort();
            tags.dedup_by_key(|(key, _)| *key);
            let body = words
                .iter()
                .map(|&(word, separator)| format!("{}{}", VOCABULARY[word], SEPARATORS[separator]))
                .collect();
            Draft { ts, tags, body }
        },
    )
}

/// A query word in a case that may differ from the vocabulary's.
fn query_word() -> impl Strategy<Value = String> {
    (0..VOCABULARY.len(), 0..3u8).prop_map(|(word, case)| match case {
        0 => VOCABULARY[word].to_string(),
        1 => VOCABULARY[word].to_ascii_uppercase(),
        _ => VOCABULARY[word].to_ascii_lowercase(),
    })
}

fn needle() -> impl Strategy<Value = Needle> {
    prop_oneof![
        3 => (any::<usize>(), any::<usize>(), 1..8usize).prop_map(|(entry, start, len)| Needle::Piece { entry, start, len }),
        1 => (0..VOCABULARY.len()).prop_map(Needle::Word),
    ]
}

fn model_query() -> impl Strategy<Value = ModelQuery> {
    let tag = (0..TAG_KEYS.len(), 0..TAG_VALUES.len()).prop_map(|(key, value)| (TAG_KEYS[key], TAG_VALUES[value]));
    let time = prop_oneof![
        Just((i64::MIN, i64::MAX)),
        (0..TS_RANGE, 0..TS_RANGE).prop_map(|(a, b)| (a.min(b), a.max(b) + 1)),
    ];
    let limit = prop_oneof![1..20usize, Just(1_000_000usize)];
    (
        proptest::collection::vec(tag, 0..2),
        proptest::collection::vec(query_word(), 0..3),
        proptest::collection::vec(needle(), 0..3),
        time,
        any::<bool>(),
        limit,
    )
        .prop_map(|(tags, words, contains, (from_ts, to_ts), backward, limit)| ModelQuery {
            tags,
            words,
            contains,
            from_ts,
            to_ts,
            backward,
            limit,
        })
}

/// The words of `body` by the contract: runs of ASCII letters, digits, `_`
/// and non-ASCII characters, compared ignoring ASCII case.
fn naive_words(body: &str) -> Vec<String> {
    body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii()))
        .filter(|word| !word.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

impl ModelQuery {
    /// The substrings, resolved against what was written.
    fn substrings(&self, written: &[Written]) -> Vec<String> {
        self.contains
            .iter()
            .map(|needle| match *needle {
                Needle::Word(word) => VOCABULARY[word].to_string(),
                Needle::Piece { entry, start, len } => {
                    let body = written[entry % written.len()].body.as_bytes();
                    let start = start % body.len();
                    let end = (start + len).min(body.len());
                    // A piece cut inside a UTF-8 character keeps its whole bytes.
                    String::from_utf8_lossy(&body[start..end]).into_owned()
                }
            })
            .collect()
    }

    fn keeps(&self, entry: &Written, substrings: &[String]) -> bool {
        entry.ts >= self.from_ts
            && entry.ts < self.to_ts
            && self.tags.iter().all(|tag| entry.tags.contains(tag))
            && self.words.iter().all(|wanted| naive_words(wanted).iter().all(|word| entry.words.contains(word)))
            && substrings.iter().all(|text| entry.body.contains(text.as_str()))
    }

    /// Seqs of the expected answer: in seq order (`Shard::query`) or in
    /// timestamp order, ties by seq (`Shard::query_ordered`).
    fn expected(&self, written: &[Written], by_time: bool) -> Vec<u64> {
        let substrings = self.substrings(written);
        let mut kept: Vec<&Written> = written.iter().filter(|entry| self.keeps(entry, &substrings)).collect();
        if by_time {
            kept.sort_by_key(|entry| (entry.ts, entry.seq));
        } else {
            kept.sort_by_key(|entry| entry.seq);
        }
        if self.backward {
            kept.reverse();
        }
        kept.into_iter().take(self.limit).map(|entry| entry.seq).collect()
    }
}

/// Where the stored data is when the queries are checked.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// The first entries, all in the active segment.
    Active,
    /// The active segment sealed (by filler entries), then the rest written.
    Sealed,
    /// The shard closed and opened again.
    Reopened,
    /// The sealed segment rewritten with zstd (its index relocated).
    Cold,
}

const STAGES: [Stage; 4] = [Stage::Active, Stage::Sealed, Stage::Reopened, Stage::Cold];

/// Index caps small enough that a few blocks of random tags exceed them.
const SMALL_CAPS: IndexCaps = IndexCaps { tag_values_max: 6, tag_sets_max: 3, tag_set_cells_max: 24 };

fn config(dir: &Path, caps: IndexCaps, word_filters: bool) -> ShardConfig {
    ShardConfig {
        segment_bytes: SEGMENT_BYTES_MIN,
        node_id: 3,
        index_caps: caps,
        word_filters,
        ..ShardConfig::new(dir, 1)
    }
}

async fn append(shard: &Shard, drafts: &[Draft], written: &mut Vec<Written>) {
    for batch in drafts.chunks(25) {
        let entries: Vec<EntryRef<'_>> = batch
            .iter()
            .map(|draft| EntryRef {
                timestamp_ns: draft.ts,
                tags: &draft.tags,
                body: draft.body.as_bytes(),
                fields: &[],
            })
            .collect();
        let range = shard.append(&entries).unwrap().durable().await.unwrap();
        for (offset, draft) in batch.iter().enumerate() {
            let Draft { ts, tags, body } = draft.clone();
            let words = naive_words(&body);
            written.push(Written { seq: range.first + offset as u64, ts, tags, body, words });
        }
    }
}

/// Appends filler entries (bodies of non-word bytes only) until the active
/// segment rolls over. Their timestamps lie after every other entry's, so a
/// query with a time range skips their blocks: they cost the unoptimized
/// test build a scan of megabytes only for queries over all time.
async fn seal_active(shard: &Shard, written: &mut Vec<Written>, seed: u64) {
    let segments = shard.stats().segments;
    let mut state = seed | 1;
    for round in 0..64 {
        if shard.stats().segments > segments {
            return;
        }
        // Non-word bytes in a pseudo-random order: LZ4 finds little to share.
        let body: String = (0..256 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                FILLER_BYTES[(state % FILLER_BYTES.len() as u64) as usize] as char
            })
            .collect();
        let filler = Draft { ts: TS_RANGE + round, tags: vec![("app", "filler")], body };
        append(shard, &[filler], written).await;
    }
    panic!("the active segment never rolled over: {:?}", shard.stats());
}

/// Brings the shard (`None` once closed) to `stage`.
async fn reach(
    stage: Stage,
    shard: &mut Option<Shard>,
    config: &ShardConfig,
    drafts: &[Draft],
    written: &mut Vec<Written>,
) {
    let half = drafts.len() / 2;
    match stage {
        Stage::Active => {
            *shard = Some(Shard::open(config.clone()).await.unwrap());
            append(shard.as_ref().unwrap(), &drafts[..half], written).await;
        }
        Stage::Sealed => {
            let open = shard.as_ref().unwrap();
            seal_active(open, written, drafts.len() as u64).await;
            append(open, &drafts[half..], written).await;
        }
        Stage::Reopened => {
            shard.take().unwrap().close().await.unwrap();
            *shard = Some(Shard::open(config.clone()).await.unwrap());
        }
        Stage::Cold => {
            let open = shard.as_ref().unwrap();
            let rewritten = open.compress_cold(ColdPolicy::zstd(std::time::Duration::ZERO), i64::MAX).await.unwrap();
            assert_eq!(rewritten.len(), 1, "the one sealed segment is rewritten");
        }
    }
}

/// Asks `query` of both query paths and compares with the model.
async fn check(shard: &Shard, stage: Stage, query: &ModelQuery, written: &[Written]) -> Result<(), TestCaseError> {
    let words = WordQuery::parse(query.words.iter().map(String::as_str)).unwrap();
    let substrings = query.substrings(written);
    let contains = Substrings::parse(substrings.iter().map(String::as_str)).unwrap();
    let shard_query = Query {
        tags: &query.tags,
        fields: &[],
        from_ts: query.from_ts,
        to_ts: query.to_ts,
        limit: query.limit,
        backward: query.backward,
        words: &words,
        contains: &contains,
    };
    let found: Vec<u64> = shard.query(&shard_query).await.unwrap().entries.iter().map(|entry| entry.seq).collect();
    prop_assert_eq!(found, query.expected(written, false), "Shard::query at {:?}: {:?} {:?}", stage, query, substrings);
    let mut ordered = shard.query_ordered(&shard_query).await.unwrap();
    let mut found = Vec::new();
    loop {
        let chunk = ordered.next_chunk(7).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        found.extend(chunk.iter().map(|entry| entry.seq));
    }
    prop_assert_eq!(
        found,
        query.expected(written, true),
        "Shard::query_ordered at {:?}: {:?} {:?}",
        stage,
        query,
        substrings
    );
    Ok(())
}

fn scenario(
    drafts: Vec<Draft>,
    queries: Vec<ModelQuery>,
    small_caps: bool,
    word_filters: bool,
) -> Result<(), TestCaseError> {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard");
    let caps = if small_caps { SMALL_CAPS } else { IndexCaps::default() };
    common::run(move || async move {
        let config = config(&path, caps, word_filters);
        let mut shard = None;
        let mut written = Vec::new();
        for stage in STAGES {
            reach(stage, &mut shard, &config, &drafts, &mut written).await;
            let open = shard.as_ref().unwrap();
            for query in &queries {
                check(open, stage, query, &written).await?;
            }
        }
        shard.take().unwrap().close().await.unwrap();
        Ok(())
    })
}

proptest! {
    // A case takes a few seconds in the unoptimized test build (it writes
    // a segment's worth of filler and asks every query at every stage).
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn every_query_equals_a_brute_force_filter(
        drafts in proptest::collection::vec(draft(), 20..300),
        queries in proptest::collection::vec(model_query(), 1..30),
        small_caps in any::<bool>(),
        word_filters in any::<bool>(),
    ) {
        scenario(drafts, queries, small_caps, word_filters)?;
    }
}
