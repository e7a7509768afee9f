//! Cold compression of sealed segments (`shard::cold`): the rewrite keeps
//! every entry, every query's answer and the index, and shrinks the
//! segments; a query that started on the old file finishes on it; a
//! follower's segment its leader has not acknowledged is not rewritten;
//! and a crash at every step of the swap, or an I/O error there, leaves
//! exactly one valid copy of every entry (the fault layer of
//! `shard::faults` stops the rewrite at each step).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use wormdb::index::words::WordQuery;
use wormdb::limits::{PAGE_BYTES, SEGMENT_BYTES_MIN};
use wormdb::proto::LogEntry;
use wormdb::shard::faults::{Fault, FaultPlan, Faults, Op};
use wormdb::shard::segment::SegmentHeader;
use wormdb::shard::{ColdPolicy, EntryRef, Query, Shard, ShardConfig, SharedSeq};

/// The steps of one segment's swap (`shard/cold.rs`, its module doc).
const COLD_STEPS: u64 = 7;

fn config(dir: &Path) -> ShardConfig {
    ShardConfig { segment_bytes: SEGMENT_BYTES_MIN, ..ShardConfig::new(dir, 0) }
}

fn zstd_now() -> ColdPolicy {
    ColdPolicy::zstd(Duration::ZERO)
}

const HOSTS: [&str; 4] = ["web-1", "web-2", "db-1", "db-2"];

/// Appends LogHub lines, tagged by source and host, until the shard has
/// `segments` segments; entry timestamps are their seq. Returns the
/// entries' count.
async fn fill_segments(shard: &Shard, segments: u64) -> u64 {
    let lines = common::loghub_all();
    let mut next = 0usize;
    while shard.stats().segments < segments {
        let first_ts = shard.durable_seq() as i64 + 1;
        let batch: Vec<&(&str, String)> = (0..500).map(|index| &lines[(next + index) % lines.len()]).collect();
        let tags: Vec<[(&str, &str); 2]> = (0..batch.len())
            .map(|index| [("source", batch[index].0), ("host", HOSTS[(next + index) % HOSTS.len()])])
            .collect();
        next += 500;
        let entries: Vec<EntryRef<'_>> = batch
            .iter()
            .zip(&tags)
            .enumerate()
            .map(|(index, ((_, line), tags))| EntryRef {
                fields: &[],
                timestamp_ns: first_ts + index as i64,
                tags,
                body: line.as_bytes(),
            })
            .collect();
        shard.append(&entries).unwrap().durable().await.unwrap();
    }
    shard.durable_seq()
}

/// Every entry, read in pages.
async fn all_entries(shard: &Shard) -> Vec<LogEntry> {
    let mut out = Vec::new();
    let durable = shard.durable_seq();
    let mut next = shard.first_seq();
    while next <= durable {
        let entries = shard.read_from(next, 100_000).await.unwrap();
        assert!(!entries.is_empty(), "nothing at seq {next} of {durable}");
        next = entries.last().unwrap().seq + 1;
        out.extend(entries);
    }
    out
}

/// Every entry's seq and stored bytes, as one count and crc32: what
/// [`all_entries`] compares, without decoding (the crash tests read the
/// whole shard many times).
async fn fingerprint(shard: &Shard) -> (u64, u32) {
    let mut hasher = crc32fast::Hasher::new();
    let mut count = 0u64;
    let durable = shard.durable_seq();
    let mut next = shard.first_seq();
    while next <= durable {
        let visited = shard
            .read_raw_from(next, 100_000, usize::MAX, &mut |seq, bytes| {
                hasher.update(&seq.to_le_bytes());
                hasher.update(bytes);
                next = seq + 1;
            })
            .await
            .unwrap();
        assert!(visited > 0, "nothing at seq {next} of {durable}");
        count += visited as u64;
    }
    (count, hasher.finalize())
}

/// Answers of a few queries: tags, time, both directions, with the number
/// of blocks each read (the index's pruning must not change).
async fn query_answers(shard: &Shard, last: u64) -> Vec<(Vec<u64>, u64)> {
    // Tags, time, direction, and words (`q=`): the word filters must
    // survive the rewrite, so the blocks read must not change either.
    type QueryArgs<'a> = (Vec<(&'a str, &'a str)>, i64, i64, bool, Vec<&'a str>);
    let queries: Vec<QueryArgs<'_>> = vec![
        (vec![("source", "HDFS")], 0, i64::MAX, false, vec![]),
        (vec![("source", "Spark"), ("host", "db-1")], 0, i64::MAX, true, vec![]),
        (vec![], last as i64 / 3, last as i64 / 2, false, vec![]),
        (vec![("host", "web-2")], last as i64 / 4, last as i64, true, vec![]),
        (vec![("source", "nowhere")], 0, i64::MAX, false, vec![]),
        (vec![], 0, i64::MAX, false, vec!["PacketResponder", "terminating"]),
        (vec![("host", "db-1")], 0, i64::MAX, true, vec!["sshd"]),
        (vec![], 0, i64::MAX, false, vec!["no_such_word_anywhere"]),
    ];
    let mut answers = Vec::new();
    for (tags, from_ts, to_ts, backward, words) in &queries {
        let words = WordQuery::parse(words.iter().copied()).unwrap();
        let query = Query {
            tags,
            fields: &[],
            from_ts: *from_ts,
            to_ts: *to_ts,
            limit: 1_000_000,
            backward: *backward,
            words: &words,
            contains: &Default::default(),
        };
        let result = shard.query(&query).await.unwrap();
        answers.push((result.entries.iter().map(|entry| entry.seq).collect(), result.blocks_read));
    }
    answers
}

/// `got == want`, reported by the first entry that differs (not all of them).
fn assert_same(got: &[LogEntry], want: &[LogEntry], what: &str) {
    let differs = got.iter().zip(want).position(|(got, want)| got != want);
    assert!(
        differs.is_none() && got.len() == want.len(),
        "{what}: {} entries, want {}; first difference at {differs:?}",
        got.len(),
        want.len()
    );
}

fn segment_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name().to_string_lossy().into_owned(), entry.metadata().unwrap().len())
        })
        .collect();
    files.sort();
    files
}

/// The rewrite's leftovers (not the spare segment the writer prepares).
fn leftovers(dir: &Path) -> Vec<String> {
    segment_files(dir)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.ends_with(".tmp") && !name.starts_with("spare-"))
        .collect()
}

fn header_of(path: &Path) -> SegmentHeader {
    let bytes = std::fs::read(path).unwrap();
    SegmentHeader::decode(&bytes[..PAGE_BYTES]).unwrap()
}

#[test]
fn the_rewrite_keeps_every_entry_and_answer_and_shrinks_the_segments() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    common::run(move || async move {
        let shard = Shard::open(config(&path)).await.unwrap();
        let last = fill_segments(&shard, 4).await;
        let entries = all_entries(&shard).await;
        let answers = query_answers(&shard, last).await;
        let before = shard.stats();

        // Too young at "now" = the newest timestamp: nothing to do.
        assert!(shard.compress_cold(ColdPolicy::zstd(Duration::from_nanos(1)), 1).await.unwrap().is_empty());
        let rewrites = shard.compress_cold(zstd_now(), i64::MAX).await.unwrap();
        assert_eq!(rewrites.len(), 3, "the three sealed segments");
        for rewrite in &rewrites {
            assert_eq!(rewrite.recompressed_blocks, rewrite.blocks, "{rewrite:?}");
            assert!(rewrite.block_bytes_after * 3 < rewrite.block_bytes_before * 2, "{rewrite:?}");
            assert!(rewrite.file_bytes_after < rewrite.file_bytes_before);
        }
        let after = shard.stats();
        assert_eq!(after.raw_bytes, before.raw_bytes);
        let saved: u64 = rewrites.iter().map(|rewrite| rewrite.block_bytes_before - rewrite.block_bytes_after).sum();
        assert_eq!(after.disk_bytes, before.disk_bytes - saved);
        assert_eq!(after.cold_segments, 3);
        assert_eq!(after.cold_block_bytes_before - after.cold_block_bytes_after, saved);
        assert_same(&all_entries(&shard).await, &entries, "after the rewrite");
        assert_eq!(query_answers(&shard, last).await, answers);

        // On disk: no leftover, each segment's file its blocks only, flagged cold.
        let files = segment_files(&path);
        assert_eq!(leftovers(&path), Vec::<String>::new());
        for rewrite in &rewrites {
            let name = format!("{:020}.seg", rewrite.first_seq);
            let (_, size) = files.iter().find(|(file, _)| *file == name).unwrap();
            assert_eq!(*size, rewrite.file_bytes_after);
            let header = header_of(&path.join(&name));
            assert!(header.cold);
            assert_eq!(header.capacity_bytes, *size);
        }
        // A second pass finds every sealed segment cold.
        assert!(shard.compress_cold(zstd_now(), i64::MAX).await.unwrap().is_empty());
        shard.close().await.unwrap();

        // wormdb inspect sees the cold segments, their codecs and ratio.
        let mut out = Vec::new();
        wormdb::inspect::inspect(&path, &mut out, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("cold: rewritten with zstd").count(), 3, "{text}");
        assert_eq!(text.matches("lz4 as written").count(), 1, "the active segment: {text}");
        assert_eq!(text.matches("(0 lz4, ").count(), 3, "{text}");
        assert_eq!(text.matches("index agrees with the scan").count(), 3, "{text}");
        assert!(text.contains("problems: none"), "{text}");

        // After a restart the index files are trusted, and a pass reads
        // the headers to find nothing to do.
        let shard = Shard::open(config(&path)).await.unwrap();
        assert_eq!(shard.recovery_report().indexes_rebuilt, 0);
        assert_eq!(shard.stats().disk_bytes, after.disk_bytes);
        assert_same(&all_entries(&shard).await, &entries, "after a restart");
        assert_eq!(query_answers(&shard, last).await, answers);
        assert!(shard.compress_cold(zstd_now(), i64::MAX).await.unwrap().is_empty());
        // The log goes on: a roll after the rewrite, and that segment too.
        fill_segments(&shard, 5).await;
        assert_eq!(shard.compress_cold(zstd_now(), i64::MAX).await.unwrap().len(), 1);
        assert_same(&all_entries(&shard).await[..entries.len()], &entries, "after another segment");
        shard.close().await.unwrap();
    });
}

#[test]
fn a_query_that_started_before_the_swap_finishes_on_the_old_file() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    common::run(move || async move {
        let shard = Shard::open(config(&path)).await.unwrap();
        let last = fill_segments(&shard, 3).await;
        let query = Query {
            tags: &[("host", "db-2")],
            fields: &[],
            from_ts: 0,
            to_ts: i64::MAX,
            limit: 50_000,
            backward: false,
            words: &Default::default(),
            contains: &Default::default(),
        };
        let expected: Vec<u64> = shard.query(&query).await.unwrap().entries.iter().map(|entry| entry.seq).collect();
        assert!(expected.len() > 1000);

        // Planned on the old files and indexes, read partly, then the swap.
        let mut ordered = shard.query_ordered(&query).await.unwrap();
        let mut got: Vec<u64> = ordered.next_chunk(100).await.unwrap().iter().map(|entry| entry.seq).collect();
        let tail = shard.read_from(last - 10, 100).await.unwrap();
        assert_eq!(shard.compress_cold(zstd_now(), i64::MAX).await.unwrap().len(), 2);
        loop {
            let chunk = ordered.next_chunk(1000).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            got.extend(chunk.iter().map(|entry| entry.seq));
        }
        assert_eq!(got, expected, "the ordered query read the old blocks where its plan said");
        // New readers read the new files.
        let again: Vec<u64> = shard.query(&query).await.unwrap().entries.iter().map(|entry| entry.seq).collect();
        assert_eq!(again, expected);
        assert_eq!(shard.read_from(last - 10, 100).await.unwrap(), tail);
        shard.close().await.unwrap();
    });
}

#[test]
fn a_segment_the_leader_has_not_acknowledged_is_not_rewritten() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    common::run(move || async move {
        let acked = SharedSeq::default();
        let shard = Shard::open(ShardConfig { retention_deletable_through: Some(acked.clone()), ..config(&path) })
            .await
            .unwrap();
        fill_segments(&shard, 4).await;
        assert!(shard.compress_cold(zstd_now(), i64::MAX).await.unwrap().is_empty(), "nothing acknowledged yet");
        let first_segments = segment_files(&path);
        let second = first_segments
            .iter()
            .filter_map(|(name, _)| name.strip_suffix(".seg").and_then(|seq| seq.parse::<u64>().ok()))
            .nth(1)
            .unwrap();
        // Acknowledged up to one entry short of the second segment's end.
        acked.set(Some(second - 1));
        let rewrites = shard.compress_cold(zstd_now(), i64::MAX).await.unwrap();
        assert_eq!(rewrites.iter().map(|rewrite| rewrite.first_seq).collect::<Vec<_>>(), [1]);
        acked.set(Some(shard.durable_seq()));
        assert_eq!(shard.compress_cold(zstd_now(), i64::MAX).await.unwrap().len(), 2);
        shard.close().await.unwrap();
    });
}

/// Opens the shard with `plan`'s faults, runs a pass that the fault stops,
/// then closes it as far as it goes.
fn fail_a_pass(path: &Path, plan: FaultPlan) -> (u64, String) {
    let faults = Faults::new(plan);
    let path = path.to_path_buf();
    common::run(move || async move {
        let shard = Shard::open(ShardConfig { faults: Some(faults.clone()), ..config(&path) }).await.unwrap();
        let error = shard.compress_cold(zstd_now(), i64::MAX).await.unwrap_err();
        let _ = shard.close().await;
        (faults.count(Op::ColdStep), error.to_string())
    })
}

/// Fills a shard to 2 segments (one sealed) once; returns its directory
/// and fingerprint. Each case copies it ([`copy_shard`]).
fn prepare() -> (tempfile::TempDir, (u64, u32)) {
    let dir = common::durable_temp_dir();
    let path = dir.path().to_path_buf();
    let entries = common::run(move || async move {
        let shard = Shard::open(config(&path)).await.unwrap();
        fill_segments(&shard, 2).await;
        let entries = fingerprint(&shard).await;
        shard.close().await.unwrap();
        entries
    });
    (dir, entries)
}

/// A copy of the shard directory `from`, in a directory of its own.
fn copy_shard(from: &Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    std::fs::create_dir(&path).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), path.join(entry.file_name())).unwrap();
    }
    (dir, path)
}

/// Reopens the shard (no faults): every entry once, the same as before;
/// then a pass finishes the rewrite and changes nothing either. Returns the
/// number of indexes recovery rebuilt.
fn reopen_and_check(path: &Path, entries: (u64, u32), what: &str) -> usize {
    let path = path.to_path_buf();
    let what = what.to_string();
    common::run(move || async move {
        let shard = Shard::open(config(&path)).await.unwrap();
        let rebuilt = shard.recovery_report().indexes_rebuilt;
        assert_eq!(leftovers(&path), Vec::<String>::new(), "{what}");
        assert_eq!(fingerprint(&shard).await, entries, "{what}: after the restart");
        shard.compress_cold(zstd_now(), i64::MAX).await.unwrap();
        assert!(shard.compress_cold(zstd_now(), i64::MAX).await.unwrap().is_empty(), "{what}: all done");
        assert_eq!(fingerprint(&shard).await, entries, "{what}: after the rewrite");
        assert!(header_of(&path.join(format!("{:020}.seg", 1))).cold, "{what}");
        shard.close().await.unwrap();
        rebuilt
    })
}

#[test]
fn a_crash_at_every_step_of_the_swap_leaves_one_valid_copy() {
    let (template, entries) = prepare();
    for nth in 1..=COLD_STEPS {
        let (_dir, path) = copy_shard(template.path());
        let (steps, error) = fail_a_pass(&path, FaultPlan::new().at(Op::ColdStep, nth, Fault::PowerLoss));
        assert_eq!(steps, nth, "the power went out at step {nth}: {error}");
        let on_disk = segment_files(&path);
        // Steps 1 to 4 leave the old pair (and the new *.tmp files), 5 the
        // old segment alone, 6 the new segment alone; the next open
        // rebuilds a missing index by scanning the segment.
        let index_left = on_disk.iter().any(|(name, _)| name == &format!("{:020}.idx", 1));
        assert_eq!(index_left, nth <= 5, "step {nth}: {on_disk:?}");
        let cold_segment = header_of(&path.join(format!("{:020}.seg", 1))).cold;
        assert_eq!(cold_segment, nth == 7, "step {nth}");
        let rebuilt = reopen_and_check(&path, entries, &format!("power loss at step {nth}"));
        assert_eq!(rebuilt, usize::from(nth > 5), "step {nth}");
    }
}

#[test]
fn an_io_error_at_any_step_leaves_the_shard_as_it_was() {
    let (template, entries) = prepare();
    for nth in 1..=COLD_STEPS {
        let (_dir, path) = copy_shard(template.path());
        let faults = Faults::new(FaultPlan::new().at(Op::ColdStep, nth, Fault::ColdEio));
        let check_path = path.clone();
        let entries = common::run(move || async move {
            let shard = Shard::open(ShardConfig { faults: Some(faults), ..config(&check_path) }).await.unwrap();
            assert!(shard.compress_cold(zstd_now(), i64::MAX).await.is_err(), "step {nth}");
            assert_eq!(shard.stats().cold_failures, 1);
            // The shard reads on as if nothing happened, the new files are gone,
            // and the segment is not tried again for COLD_RETRY_AFTER.
            assert_eq!(fingerprint(&shard).await, entries, "EIO at step {nth}");
            assert_eq!(leftovers(&check_path), Vec::<String>::new(), "step {nth}");
            assert!(shard.compress_cold(zstd_now(), i64::MAX).await.unwrap().is_empty());
            // It still appends, rolls and answers (once: it takes a while).
            let entries = if nth == COLD_STEPS {
                fill_segments(&shard, 3).await;
                let more = fingerprint(&shard).await;
                assert!(more.0 > entries.0);
                more
            } else {
                entries
            };
            shard.close().await.unwrap();
            entries
        });
        // An error after the old index was removed leaves it to be rebuilt.
        let rebuilt = reopen_and_check(&path, entries, &format!("EIO at step {nth}"));
        assert_eq!(rebuilt, usize::from(nth > 5), "step {nth}");
    }
}
