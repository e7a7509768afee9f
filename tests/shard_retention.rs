//! Retention deletes whole sealed segments, oldest first, by size and by
//! age, honours a veto, and the log stays a contiguous, readable range that
//! survives a reopen. The shard applies its own policy at every segment
//! roll, so a burst never leaves more than the cap plus one segment.
//! Bad appends are refused whole; backpressure is bounded.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use wormdb::limits::SEGMENT_BYTES_MIN;
use wormdb::shard::{EntryRef, Error, RetentionPolicy, Shard, ShardConfig, SharedSeq};

fn config(dir: &Path) -> ShardConfig {
    ShardConfig { segment_bytes: SEGMENT_BYTES_MIN, ..ShardConfig::new(dir, 0) }
}

/// Appends LogHub lines until the shard has `segments` segments; entry
/// timestamps are their seq (so segment ages are known).
async fn fill_segments(shard: &Shard, segments: u64) {
    let lines: Vec<String> = common::loghub_all().into_iter().map(|(_, line)| line).collect();
    let mut next = 0usize;
    while shard.stats().segments < segments {
        let first_ts = shard.durable_seq() as i64 + 1;
        let batch: Vec<&String> = (0..500).map(|index| &lines[(next + index) % lines.len()]).collect();
        next += 500;
        let tags = [("k", "v")];
        let entries: Vec<EntryRef<'_>> = batch
            .iter()
            .enumerate()
            .map(|(index, line)| EntryRef {
                fields: &[],
                timestamp_ns: first_ts + index as i64,
                tags: &tags,
                body: line.as_bytes(),
            })
            .collect();
        shard.append(&entries).unwrap().durable().await.unwrap();
    }
}

#[test]
fn retention_by_bytes_and_age_with_a_veto() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    common::run(move || async move {
        let shard = Shard::open(config(&path)).await.unwrap();
        fill_segments(&shard, 6).await;
        let last = shard.durable_seq();
        assert_eq!(shard.first_seq(), 1);

        // A veto on everything not yet "replicated" up to seq 1: nothing goes.
        let policy = RetentionPolicy { bytes_max: Some(3 * SEGMENT_BYTES_MIN), age_max: None };
        let deleted = shard.enforce_retention(policy, 0, |span| span.last_seq <= 1).await.unwrap();
        assert!(deleted.is_empty());
        assert_eq!(shard.stats().segments, 6);

        // By size: down to 3 segment files, oldest first, contiguous.
        let deleted = shard.enforce_retention(policy, 0, |_| true).await.unwrap();
        assert_eq!(deleted.len(), 3);
        assert_eq!(deleted[0].first_seq, 1);
        for pair in deleted.windows(2) {
            assert_eq!(pair[0].last_seq + 1, pair[1].first_seq);
        }
        let first = deleted[2].last_seq + 1;
        assert_eq!(shard.first_seq(), first);
        assert_eq!(shard.stats().segments, 3);
        assert_eq!(shard.stats().entries, last - first + 1);
        let entries = shard.read_from(1, 3).await.unwrap();
        assert_eq!(entries.iter().map(|entry| entry.seq).collect::<Vec<_>>(), vec![first, first + 1, first + 2]);
        for file in &deleted {
            assert!(!path.join(format!("{:020}.seg", file.first_seq)).exists());
            assert!(!path.join(format!("{:020}.idx", file.first_seq)).exists());
        }

        // By age: "now" is just past the newest timestamp of the next
        // segment, and the limit is 1 ns, so exactly that one goes.
        let state = shard.stats();
        let next_span_end = {
            let deleted = shard
                .enforce_retention(
                    RetentionPolicy { bytes_max: None, age_max: Some(Duration::from_nanos(1)) },
                    first as i64,
                    |_| true,
                )
                .await
                .unwrap();
            assert!(deleted.is_empty(), "nothing is older than 1 ns before {first}");
            let deleted = shard
                .enforce_retention(
                    RetentionPolicy { bytes_max: None, age_max: Some(Duration::from_nanos(1)) },
                    i64::MAX,
                    |_| true,
                )
                .await
                .unwrap();
            // Every sealed segment is old by then; the active one stays.
            assert_eq!(deleted.len(), 2);
            deleted[1].last_seq
        };
        assert_eq!(shard.stats().segments, 1);
        assert_eq!(shard.first_seq(), next_span_end + 1);
        assert!(state.entries > shard.stats().entries);
        shard.close().await.unwrap();

        let shard = Shard::open(config(&path)).await.unwrap();
        assert_eq!(shard.first_seq(), next_span_end + 1);
        assert_eq!(shard.durable_seq(), last);
        let range = shard
            .append(&[EntryRef { fields: &[], timestamp_ns: 1, tags: &[], body: b"after" }])
            .unwrap()
            .durable()
            .await
            .unwrap();
        assert_eq!(range.first, last + 1);
        shard.close().await.unwrap();
    });
}

/// Bytes of the segment files (`NNN.seg`, sealed and active) in `dir`: what
/// the byte cap counts. Each is preallocated to its full size.
fn segment_file_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".seg"))
        .map(|entry| entry.metadata().unwrap().len())
        .sum()
}

/// The name of the newest segment file in `dir`: it changes at every roll.
fn newest_segment(dir: &Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".seg"))
        .max()
        .unwrap()
}

/// Appends about 1 MiB of entries LZ4 cannot shrink (random hex bodies), so
/// a 4 MiB segment fills in a few appends; returns the last seq.
async fn append_incompressible(shard: &Shard, seed: &mut u64) -> u64 {
    let bodies: Vec<String> = (0..1000)
        .map(|_| {
            (0..64)
                .map(|_| {
                    *seed ^= *seed << 13;
                    *seed ^= *seed >> 7;
                    *seed ^= *seed << 17;
                    format!("{:016x}", *seed)[..16].to_string()
                })
                .collect()
        })
        .collect();
    let entries: Vec<EntryRef<'_>> =
        bodies.iter().map(|body| EntryRef { fields: &[], timestamp_ns: 1, tags: &[], body: body.as_bytes() }).collect();
    shard.append(&entries).unwrap().durable().await.unwrap().last
}

#[test]
fn retention_at_every_roll_holds_the_cap_plus_one_segment_and_the_veto() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    common::run(move || async move {
        let segment = SEGMENT_BYTES_MIN;
        let cap = 3 * segment;
        let acked = SharedSeq::default();
        let config = ShardConfig {
            retention: RetentionPolicy { bytes_max: Some(cap), age_max: None },
            retention_deletable_through: Some(acked.clone()),
            ..config(&path)
        };
        let shard = Shard::open(config).await.unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15;

        // A follower whose leader has acknowledged nothing: every roll
        // retains, the cap is exceeded, nothing is deleted.
        let mut acked_at = 0;
        while shard.stats().segments < 7 {
            let last = append_incompressible(&shard, &mut seed).await;
            if shard.stats().segments == 3 && acked_at == 0 {
                acked_at = last;
            }
            assert_eq!(shard.first_seq(), 1, "nothing is deleted while the leader acknowledged nothing");
        }
        assert!(segment_file_bytes(&path) > cap + segment, "the veto, not the cap, kept the files");

        // The leader acknowledges up to a seq inside the third segment: the
        // next rolls delete only segments wholly at or below it.
        acked.set(Some(acked_at));
        let mut rolls_seen = 0;
        while rolls_seen < 3 {
            let newest = newest_segment(&path);
            append_incompressible(&shard, &mut seed).await;
            rolls_seen += usize::from(newest_segment(&path) != newest);
            assert!(shard.first_seq() <= acked_at + 1, "a segment the leader has not acknowledged was deleted");
        }
        // The retention pass of the last roll may still be running: the
        // owner's own pass waits for it (one pass at a time).
        shard.apply_retention(0).await.unwrap();
        let first = shard.first_seq();
        assert!(first > 1, "acknowledged segments were deleted");
        assert!(first <= acked_at + 1);
        assert_eq!(shard.read_from(1, 1).await.unwrap()[0].seq, first, "the log starts where retention stopped");

        // The leader catches up; from the owner's next pass on, every
        // moment of a burst over many segments stays within the cap plus
        // the one segment a roll adds.
        acked.set(Some(shard.durable_seq()));
        shard.apply_retention(0).await.unwrap();
        assert!(segment_file_bytes(&path) <= cap, "{} > {cap}", segment_file_bytes(&path));
        let mut rolls_seen = 0;
        while rolls_seen < 12 {
            let newest = newest_segment(&path);
            let last = append_incompressible(&shard, &mut seed).await;
            acked.set(Some(last));
            rolls_seen += usize::from(newest_segment(&path) != newest);
            let on_disk = segment_file_bytes(&path);
            assert!(
                on_disk <= cap + segment,
                "after {rolls_seen} rolls: {on_disk} bytes of segments > {cap} + {segment}"
            );
            assert!(shard.stats().segments <= cap / segment + 1);
        }
        let first = shard.first_seq();
        assert_eq!(shard.read_from(first, 1).await.unwrap()[0].seq, first);
        shard.close().await.unwrap();
    });
}

#[test]
fn an_invalid_append_stores_nothing() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    common::run(move || async move {
        let shard = Shard::open(config(&path)).await.unwrap();
        let good_tags = [("a", "1")];
        let bad_tags = [("a", "1"), ("a", "2")];
        let entries = [
            EntryRef { fields: &[], timestamp_ns: 1, tags: &good_tags, body: b"fine" },
            EntryRef { fields: &[], timestamp_ns: 1, tags: &bad_tags, body: b"duplicate key" },
        ];
        let error = shard.append(&entries).err().unwrap();
        assert!(matches!(error, Error::InvalidEntry { index: 1, .. }), "{error}");
        let big = vec![b'x'; wormdb::limits::ENTRY_BODY_BYTES_MAX + 1];
        let error = shard.append(&[EntryRef { fields: &[], timestamp_ns: 1, tags: &[], body: &big }]).err().unwrap();
        assert!(error.to_string().contains("ENTRY_BODY_BYTES_MAX"), "{error}");
        assert!(matches!(shard.append(&[]), Err(Error::InvalidAppend(_))));
        let range = shard.append(&entries[..1]).unwrap().durable().await.unwrap();
        assert_eq!((range.first, range.last), (1, 1), "nothing of the refused appends took a seq");
        shard.close().await.unwrap();
    });
}

#[test]
fn backpressure_refuses_then_recovers() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    common::run(move || async move {
        let shard = Shard::open(ShardConfig::new(&path, 0)).await.unwrap();
        let body = vec![b'y'; 1000];
        let mut waits = Vec::new();
        let refused = loop {
            match shard.append(&[EntryRef { fields: &[], timestamp_ns: 1, tags: &[], body: &body }]) {
                Ok(wait) => waits.push(wait),
                Err(error) => break error,
            }
            assert!(waits.len() <= 2 * wormdb::limits::PENDING_APPENDS_MAX, "no backpressure");
        };
        assert!(matches!(refused, Error::Backpressure { limit: "PENDING_APPENDS_MAX", .. }), "{refused}");
        let accepted = waits.len() as u64;
        for wait in waits {
            wait.durable().await.unwrap();
        }
        assert_eq!(shard.durable_seq(), accepted);
        assert!(shard.stats().backpressure_rejections >= 1);
        shard
            .append(&[EntryRef { fields: &[], timestamp_ns: 1, tags: &[], body: &body }])
            .unwrap()
            .durable()
            .await
            .unwrap();
        shard.close().await.unwrap();
    });
}
