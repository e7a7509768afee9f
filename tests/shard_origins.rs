//! Replicated entries on a leader shard: batches from two origins appended
//! between local appends, over several small segments. Origin watermarks
//! and `read_origin` must agree with a model after every kind of reopen
//! (clean, sealed index deleted or corrupt, index of the old version 1),
//! never count a block that is not durable, and survive retention.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use wormdb::codec::block::{self, BlockSpec};
use wormdb::proto::LogEntry;
use wormdb::shard::segment::{self, FileKind};
use wormdb::shard::{AppendWait, EntryRef, Origin, ReplicatedPart, RetentionPolicy, Shard, ShardConfig};

const ORIGIN_A: (u32, u32) = (2, 5);
const ORIGIN_B: (u32, u32) = (3, 0);
/// Incompressible bodies of this size fill the smallest segments quickly.
const BODY_BYTES: usize = 6000;

/// What the shard should hold per origin: (origin seq, timestamp, body).
type Model = BTreeMap<(u32, u32), Vec<(u64, i64, Vec<u8>)>>;

fn config(dir: &Path) -> ShardConfig {
    ShardConfig { node_id: 1, segment_bytes: wormdb::limits::SEGMENT_BYTES_MIN, ..ShardConfig::new(dir, 0) }
}

fn body(rng: &mut SmallRng) -> Vec<u8> {
    (0..BODY_BYTES).map(|_| rng.gen()).collect()
}

/// Appends `rounds` rounds of: a local batch, a batch from A, a batch from B
/// (1 to 12 entries each), without waiting in between, so that batches of
/// both origins and local ones share group commits. Extends `model`.
/// Returns the number of appends (so blocks) of each origin.
async fn fill(shard: &Shard, rng: &mut SmallRng, rounds: usize, model: &mut Model) -> BTreeMap<(u32, u32), u64> {
    let mut appends = BTreeMap::new();
    let mut waits: Vec<AppendWait> = Vec::new();
    for round in 0..rounds {
        for origin in [None, Some(ORIGIN_A), Some(ORIGIN_B)] {
            let count = rng.gen_range(1..=12);
            let bodies: Vec<Vec<u8>> = (0..count).map(|_| body(rng)).collect();
            let timestamps: Vec<i64> = (0..count).map(|_| rng.gen_range(1..1_000_000_000)).collect();
            let tags = [("round", "x")];
            let entries: Vec<EntryRef<'_>> = bodies
                .iter()
                .zip(&timestamps)
                .map(|(body, &timestamp_ns)| EntryRef { fields: &[], timestamp_ns, tags: &tags, body })
                .collect();
            let wait = match origin {
                None => shard.append(&entries).unwrap(),
                Some(key) => {
                    let stored = model.entry(key).or_default();
                    let first_seq = stored.last().map_or(1, |last| last.0 + 1);
                    let origin = Origin { node: key.0, shard: key.1, first_seq };
                    let wait = if key == ORIGIN_B && round % 2 == 1 {
                        // As a follower pushes them: the first entries as
                        // the block the origin stored, the rest as entries.
                        let split = (count as usize).div_ceil(2);
                        let block = origin_block(first_seq, &entries[..split]);
                        let (header, tags) = block::check_foreign_block(&block, &mut Vec::new()).unwrap();
                        let payload = &block[block::HEADER_BYTES..];
                        let parts = vec![
                            ReplicatedPart::Block { header, payload, tags, terms: None },
                            ReplicatedPart::Entries(&entries[split..]),
                        ];
                        shard.append_replicated_parts(origin, parts).unwrap()
                    } else {
                        shard.append_replicated(origin, &entries).unwrap()
                    };
                    for (index, (body, timestamp)) in bodies.iter().zip(&timestamps).enumerate() {
                        stored.push((first_seq + index as u64, *timestamp, body.clone()));
                    }
                    *appends.entry(key).or_insert(0) += 1;
                    wait
                }
            };
            waits.push(wait);
        }
        // Keep the pending batch under its limits.
        if round % 8 == 7 {
            for wait in waits.drain(..) {
                wait.durable().await.unwrap();
            }
        }
    }
    for wait in waits {
        wait.durable().await.unwrap();
    }
    appends
}

/// The block a follower's shard would have stored for `entries` at `first_seq`.
fn origin_block(first_seq: u64, entries: &[EntryRef<'_>]) -> Vec<u8> {
    let mut raw = Vec::new();
    for entry in entries {
        block::encode_entry(entry, entry.timestamp_ns, &mut raw);
    }
    let spec = BlockSpec {
        fields: false,
        first_seq,
        entry_count: entries.len() as u32,
        min_ts: entries.iter().map(|entry| entry.timestamp_ns).min().unwrap(),
        max_ts: entries.iter().map(|entry| entry.timestamp_ns).max().unwrap(),
        origin: None,
    };
    let mut out = vec![0; block::encoded_bytes_max(raw.len())];
    let used = block::encode_block(&spec, &raw, &mut out);
    out.truncate(used);
    out
}

fn watermarks_of(model: &Model) -> BTreeMap<(u32, u32), u64> {
    model.iter().map(|(key, entries)| (*key, entries.last().unwrap().0)).collect()
}

fn assert_entries(got: &[LogEntry], want: &[(u64, i64, Vec<u8>)], key: (u32, u32), context: &str) {
    assert_eq!(got.len(), want.len(), "{context}: entry count");
    for (entry, (seq, timestamp, body)) in got.iter().zip(want) {
        assert_eq!((entry.node_id, entry.shard, entry.seq), (key.0, key.1, *seq), "{context}: original id");
        assert_eq!(entry.timestamp_ns, *timestamp, "{context}: seq {seq}");
        assert_eq!(&entry.body[..], &body[..], "{context}: seq {seq}");
    }
}

/// Checks watermarks and `read_origin` from many starting points against the model.
async fn check_against_model(shard: &Shard, model: &Model, context: &str) {
    assert_eq!(shard.origin_watermarks(), watermarks_of(model), "{context}");
    assert_eq!(shard.origin_watermark(9, 9), 0, "{context}");
    for (&key, entries) in model {
        let last = entries.last().unwrap().0;
        assert_eq!(shard.origin_watermark(key.0, key.1), last, "{context}");
        // Whole, from 0 and 1, mid-block, the last entry, past the end.
        for from_seq in [0, 1, 2, 3, last / 3, last / 2 + 1, last - 1, last, last + 1, last + 100] {
            let got = shard.read_origin(key.0, key.1, from_seq, usize::MAX).await.unwrap();
            let want: Vec<_> = entries.iter().filter(|entry| entry.0 >= from_seq).cloned().collect();
            assert_entries(&got, &want, key, &format!("{context}: {key:?} from {from_seq}"));
        }
        // Pages of a few entries each add up to the whole.
        let mut paged = Vec::new();
        let mut from_seq = 1;
        loop {
            let page = shard.read_origin(key.0, key.1, from_seq, 17).await.unwrap();
            let Some(last_entry) = page.last() else { break };
            assert!(page.len() <= 17);
            from_seq = last_entry.seq + 1;
            paged.extend(page);
        }
        assert_entries(&paged, entries, key, &format!("{context}: {key:?} in pages"));
    }
    assert!(shard.read_origin(9, 9, 1, 100).await.unwrap().is_empty(), "{context}");
    assert!(shard.read_origin(ORIGIN_A.0, ORIGIN_A.1, 1, 0).await.unwrap().is_empty(), "{context}");
}

fn index_files(dir: &Path) -> Vec<PathBuf> {
    let mut indexes: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| matches!(segment::classify(path), Some(FileKind::Index(_))))
        .collect();
    indexes.sort();
    indexes
}

#[test]
fn two_origins_between_local_appends_over_several_segments() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    common::run(move || async move {
        let mut rng = SmallRng::seed_from_u64(0x0419_1715);
        let mut model = Model::new();
        let shard = Shard::open(config(&path)).await.unwrap();
        assert!(shard.origin_watermarks().is_empty());
        let appends = fill(&shard, &mut rng, 150, &mut model).await;
        // ~ 150 * 3 * 6.5 entries of 6000 bytes: several 4 MiB segments.
        assert!(shard.stats().segments >= 4, "{:?}", shard.stats());
        check_against_model(&shard, &model, "open").await;

        // Only the origin's own blocks are read: one block for its last
        // entry, and exactly its blocks (one per append) for all of it.
        let (node, origin_shard) = ORIGIN_A;
        let last = model[&ORIGIN_A].last().unwrap().0;
        let before = shard.stats().blocks_read;
        assert_eq!(shard.read_origin(node, origin_shard, last, 10).await.unwrap().len(), 1);
        assert_eq!(shard.stats().blocks_read - before, 1);
        let before = shard.stats().blocks_read;
        shard.read_origin(node, origin_shard, 1, usize::MAX).await.unwrap();
        assert_eq!(shard.stats().blocks_read - before, appends[&ORIGIN_A]);

        // Local entries keep this node's ids.
        let local = shard.read_from(1, 100_000).await.unwrap();
        let local_count = local.iter().filter(|entry| (entry.node_id, entry.shard) == (1, 0)).count();
        let replicated: usize = model.values().map(Vec::len).sum();
        assert_eq!(local_count + replicated, local.len());
        shard.close().await.unwrap();

        // A clean reopen rebuilds the same watermarks from the data.
        let shard = Shard::open(config(&path)).await.unwrap();
        assert_eq!(shard.recovery_report().indexes_rebuilt, 0);
        check_against_model(&shard, &model, "reopen").await;
        // More appends after a reopen continue each origin.
        fill(&shard, &mut rng, 10, &mut model).await;
        check_against_model(&shard, &model, "appends after reopen").await;
        shard.close().await.unwrap();

        // A sealed segment's index deleted, another corrupted, a third of
        // the old version 1: all rebuilt by scanning, same watermarks.
        let indexes = index_files(&path);
        assert!(indexes.len() >= 3, "{indexes:?}");
        std::fs::remove_file(&indexes[0]).unwrap();
        let mut corrupt = std::fs::read(&indexes[1]).unwrap();
        corrupt[100] ^= 0x10;
        std::fs::write(&indexes[1], corrupt).unwrap();
        let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/index.idx");
        std::fs::copy(v1, &indexes[2]).unwrap();
        let shard = Shard::open(config(&path)).await.unwrap();
        assert_eq!(shard.recovery_report().indexes_rebuilt, 3);
        check_against_model(&shard, &model, "rebuilt indexes").await;
        shard.close().await.unwrap();
        let shard = Shard::open(config(&path)).await.unwrap();
        assert_eq!(shard.recovery_report().indexes_rebuilt, 0, "rebuilt indexes were written back");
        check_against_model(&shard, &model, "reopen after rebuild").await;
        shard.close().await.unwrap();
    });
}

#[test]
fn a_block_counts_only_once_durable() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    common::run(move || async move {
        let shard = Shard::open(config(&path)).await.unwrap();
        let tags = [("k", "v")];
        let entries = [EntryRef { fields: &[], timestamp_ns: 1, tags: &tags, body: b"one" }; 3];
        let origin = Origin { node: ORIGIN_A.0, shard: ORIGIN_A.1, first_seq: 1 };
        let wait = shard.append_replicated(origin, &entries).unwrap();
        // Queued, not written, not synced: not counted, not readable.
        assert_eq!(shard.origin_watermark(ORIGIN_A.0, ORIGIN_A.1), 0);
        assert!(shard.origin_watermarks().is_empty());
        assert!(shard.read_origin(ORIGIN_A.0, ORIGIN_A.1, 1, 10).await.unwrap().is_empty());
        wait.durable().await.unwrap();
        assert_eq!(shard.origin_watermark(ORIGIN_A.0, ORIGIN_A.1), 3);

        // Under concurrent appends, whatever the watermark says is readable
        // at that moment: it never runs ahead of durable data.
        let finished = std::rc::Rc::new(std::cell::Cell::new(false));
        let writer = {
            let shard = shard.clone();
            let finished = finished.clone();
            glommio::spawn_local(async move {
                let mut next = 4;
                let mut last_wait = None;
                for round in 0..200_u64 {
                    let count = 1 + round % 5;
                    let entries =
                        vec![EntryRef { fields: &[], timestamp_ns: 1, tags: &tags, body: b"more" }; count as usize];
                    let origin = Origin { node: ORIGIN_A.0, shard: ORIGIN_A.1, first_seq: next };
                    let wait = shard.append_replicated(origin, &entries).unwrap();
                    next += count;
                    if round % 3 == 0 {
                        wait.durable().await.unwrap();
                    } else {
                        last_wait = Some(wait);
                    }
                }
                if let Some(wait) = last_wait {
                    wait.durable().await.unwrap();
                }
                finished.set(true);
                next - 1
            })
        };
        let mut checks = 0;
        loop {
            let watermark = shard.origin_watermark(ORIGIN_A.0, ORIGIN_A.1);
            let found = shard.read_origin(ORIGIN_A.0, ORIGIN_A.1, watermark, 1).await.unwrap();
            assert_eq!(found.first().map(|entry| entry.seq), Some(watermark), "watermark {watermark} not readable");
            checks += 1;
            if finished.get() || checks > 100_000 {
                break;
            }
            glommio::yield_if_needed().await;
            futures_lite::future::yield_now().await;
        }
        let last = writer.await;
        shard.close().await.unwrap();
        assert_eq!(shard.origin_watermark(ORIGIN_A.0, ORIGIN_A.1), last, "close waits for everything accepted");
        assert!(checks > 1);
    });
}

#[test]
fn retention_never_lowers_a_watermark_and_a_restart_keeps_it() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    common::run(move || async move {
        let mut rng = SmallRng::seed_from_u64(0x5e7e_4710);
        let mut model = Model::new();
        let shard = Shard::open(config(&path)).await.unwrap();
        fill(&shard, &mut rng, 5, &mut model).await;
        let watermarks = watermarks_of(&model);
        // Then only local data, over several segments.
        let tags = [("local", "yes")];
        let mut local_rounds = 0;
        while shard.stats().segments < 4 {
            let bodies: Vec<Vec<u8>> = (0..40).map(|_| body(&mut rng)).collect();
            let entries: Vec<EntryRef<'_>> =
                bodies.iter().map(|body| EntryRef { fields: &[], timestamp_ns: 1, tags: &tags, body }).collect();
            shard.append(&entries).unwrap().durable().await.unwrap();
            local_rounds += 1;
            assert!(local_rounds < 1000);
        }
        // Delete every sealed segment but the newest: all replicated data goes.
        let segments_before = shard.stats().segments;
        let policy = RetentionPolicy { bytes_max: Some(2 * wormdb::limits::SEGMENT_BYTES_MIN), age_max: None };
        let deleted = shard.enforce_retention(policy, 0, |_| true).await.unwrap();
        assert_eq!(deleted.len() as u64, segments_before - 2);
        assert!(shard.first_seq() > 1);
        for &(node, origin_shard) in model.keys() {
            assert!(shard.read_origin(node, origin_shard, 1, 10).await.unwrap().is_empty(), "data is gone");
        }
        assert_eq!(shard.origin_watermarks(), watermarks, "retention does not lower watermarks");
        shard.close().await.unwrap();

        // The newest sealed segment's index carried them over.
        let shard = Shard::open(config(&path)).await.unwrap();
        assert_eq!(shard.origin_watermarks(), watermarks, "restart after retention");
        shard.close().await.unwrap();

        // Even when that index has to be rebuilt: ... it is the oldest one
        // left, with nothing before it to carry from, so the watermarks
        // restart from what the data holds (none here), as docs/format.md says.
        for index in index_files(&path) {
            std::fs::remove_file(index).unwrap();
        }
        let shard = Shard::open(config(&path)).await.unwrap();
        assert_eq!(shard.recovery_report().indexes_rebuilt, 1);
        assert!(shard.origin_watermarks().is_empty());
        shard.close().await.unwrap();
    });
}
