//! Crash recovery on real files: the active segment is truncated, torn and
//! bit-flipped on purpose, and each reopened log must be exactly the longest
//! valid prefix. A seeded model test builds crash images the way a power
//! loss would leave them (synced data intact, the pages of the last unsynced
//! writes each old or new, sector by sector) and checks every acknowledged
//! entry against an in-memory model. A failing case prints its seed.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use wormdb::codec::block::BlockHeader;
use wormdb::shard::scan::{scan_window, Step};
use wormdb::shard::segment::DATA_OFFSET;
use wormdb::shard::{EntryRef, Shard, ShardConfig};

/// What was appended: seq → (timestamp, body).
type Model = Vec<(u64, i64, String)>;

#[derive(Clone, Copy, Debug)]
struct BlockSpan {
    offset: u64,
    end: u64,
    next_seq: u64,
}

/// Small segments keep the many copies these tests make cheap.
fn config(dir: &Path) -> ShardConfig {
    ShardConfig { segment_bytes: wormdb::limits::SEGMENT_BYTES_MIN, ..ShardConfig::new(dir, 0) }
}

fn segment_path(shard_dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(shard_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

fn blocks_of(segment: &[u8]) -> Vec<BlockSpan> {
    let mut spans = Vec::new();
    let mut next_seq = 1;
    let step = scan_window(
        &segment[DATA_OFFSET as usize..],
        DATA_OFFSET,
        &mut next_seq,
        true,
        |offset, header: &BlockHeader, _| {
            spans.push(BlockSpan { offset, end: offset + header.block_bytes() as u64, next_seq: header.next_seq() });
            Ok(())
        },
    );
    assert!(matches!(step, Step::End { .. }));
    spans
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// Appends `appends` batches of LogHub lines (1 to 40 entries each, seeded)
/// and returns the model.
async fn fill(shard: &Shard, seed: u64, appends: usize) -> Model {
    let lines = common::loghub_lines("Hadoop");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut model = Model::new();
    for _ in 0..appends {
        let count = rng.gen_range(1..=40);
        let start = rng.gen_range(0..lines.len());
        let batch: Vec<(i64, String)> = (0..count)
            .map(|index| (rng.gen_range(1..1_000_000), lines[(start + index) % lines.len()].clone()))
            .collect();
        let tags = [("app", "hadoop")];
        let entries: Vec<EntryRef<'_>> = batch
            .iter()
            .map(|(ts, body)| EntryRef { fields: &[], timestamp_ns: *ts, tags: &tags, body: body.as_bytes() })
            .collect();
        let range = shard.append(&entries).unwrap().durable().await.unwrap();
        for (offset, (ts, body)) in batch.into_iter().enumerate() {
            model.push((range.first + offset as u64, ts, body));
        }
    }
    model
}

/// Opens the shard in `dir` and checks that it holds exactly the first
/// `expected` entries of `model`; then appends one more entry and checks it
/// gets the next seq and survives a reopen.
async fn check_prefix(dir: &Path, model: &Model, expected: u64, context: &str) {
    let config = config(dir);
    let shard = Shard::open(config.clone()).await.unwrap_or_else(|error| panic!("{context}: open failed: {error}"));
    assert_eq!(shard.durable_seq(), expected, "{context}: recovered seq");
    let entries = shard.read_from(1, model.len() + 1).await.unwrap();
    assert_eq!(entries.len() as u64, expected, "{context}");
    for (entry, (seq, ts, body)) in entries.iter().zip(model) {
        assert_eq!((entry.seq, entry.timestamp_ns), (*seq, *ts), "{context}");
        assert_eq!(std::str::from_utf8(&entry.body).unwrap(), body, "{context}");
    }
    let tags = [("after", "crash")];
    let range = shard
        .append(&[EntryRef { fields: &[], timestamp_ns: 7, tags: &tags, body: b"next" }])
        .unwrap()
        .durable()
        .await
        .unwrap();
    assert_eq!(range.first, expected + 1, "{context}: next seq after recovery");
    shard.close().await.unwrap();
    let shard = Shard::open(config).await.unwrap();
    assert_eq!(shard.durable_seq(), expected + 1, "{context}: after reopen");
    assert_eq!(shard.recovery_report().torn_tail, None, "{context}: the torn tail was repaired");
    shard.close().await.unwrap();
}

#[test]
fn truncation_and_zeroing_at_every_interesting_offset() {
    let root = common::durable_temp_dir();
    let root_path = root.path().to_path_buf();
    common::run(move || async move {
        let original = root_path.join("original");
        let shard = Shard::open(config(&original)).await.unwrap();
        let model = fill(&shard, 1, 12).await;
        shard.close().await.unwrap();
        let segment = std::fs::read(segment_path(&original)).unwrap();
        let spans = blocks_of(&segment);
        assert_eq!(spans.last().unwrap().next_seq - 1, model.len() as u64);

        let mut offsets = vec![DATA_OFFSET];
        for span in &spans {
            for delta in [1, 64, 65] {
                offsets.push(span.offset + delta);
            }
            offsets.push((span.offset + span.end) / 2);
            offsets.push(span.end - 1);
            offsets.push(span.end);
        }
        offsets.sort();
        offsets.dedup();
        for (case, &cut) in offsets.iter().enumerate() {
            let expected = spans.iter().rev().find(|span| span.end <= cut).map(|span| span.next_seq - 1).unwrap_or(0);
            // A shorter file (the preallocation is lost too).
            let dir = root_path.join(format!("truncate-{case}"));
            copy_dir(&original, &dir);
            std::fs::OpenOptions::new().write(true).open(segment_path(&dir)).unwrap().set_len(cut).unwrap();
            check_prefix(&dir, &model, expected, &format!("truncate at {cut}")).await;
            std::fs::remove_dir_all(&dir).unwrap();
            // The same cut as a torn write leaves it: zeros to the end.
            let dir = root_path.join(format!("zero-{case}"));
            copy_dir(&original, &dir);
            let mut bytes = segment.clone();
            bytes[cut as usize..].fill(0);
            std::fs::write(segment_path(&dir), &bytes).unwrap();
            check_prefix(&dir, &model, expected, &format!("zero from {cut}")).await;
            std::fs::remove_dir_all(&dir).unwrap();
        }
    });
}

#[test]
fn bit_flips_end_the_log_at_the_damaged_block() {
    let root = common::durable_temp_dir();
    let root_path = root.path().to_path_buf();
    common::run(move || async move {
        let original = root_path.join("original");
        let shard = Shard::open(config(&original)).await.unwrap();
        let model = fill(&shard, 2, 20).await;
        shard.close().await.unwrap();
        let segment = std::fs::read(segment_path(&original)).unwrap();
        let spans = blocks_of(&segment);
        let seed = 0xb17f_11b5;
        let mut rng = SmallRng::seed_from_u64(seed);
        // Flip bits in the last few blocks: the log must end right before
        // the block that holds the flip.
        let damage_from = spans[spans.len().saturating_sub(5)].offset;
        for case in 0..40 {
            let position = rng.gen_range(damage_from..spans.last().unwrap().end);
            let bit = rng.gen_range(0..8);
            let damaged = spans.iter().position(|span| position < span.end).unwrap();
            let expected = if damaged == 0 { 0 } else { spans[damaged - 1].next_seq - 1 };
            let dir = root_path.join(format!("flip-{case}"));
            copy_dir(&original, &dir);
            let mut bytes = segment.clone();
            bytes[position as usize] ^= 1 << bit;
            std::fs::write(segment_path(&dir), &bytes).unwrap();
            check_prefix(&dir, &model, expected, &format!("seed {seed:#x} case {case}: flip bit {bit} at {position}"))
                .await;
            std::fs::remove_dir_all(&dir).unwrap();
        }
    });
}

/// Builds the image a power loss could leave: the file as it was when the
/// blocks up to `durable_end` were synced, plus, for the bytes of the next
/// unsynced writes (up to `written_end`), each 512-byte sector either as
/// before (zero) or as after. Sectors are the unit a disk writes atomically.
fn crash_image(final_bytes: &[u8], durable_end: u64, written_end: u64, rng: &mut SmallRng) -> Vec<u8> {
    const SECTOR: u64 = 512;
    let mut image = final_bytes.to_vec();
    image[durable_end as usize..].fill(0);
    let mut sector = durable_end / SECTOR * SECTOR;
    while sector < written_end {
        if rng.gen_bool(0.5) {
            let start = sector.max(durable_end) as usize;
            let end = (sector + SECTOR).min(written_end) as usize;
            image[start..end].copy_from_slice(&final_bytes[start..end]);
        }
        sector += SECTOR;
    }
    image
}

#[test]
fn model_based_power_loss_keeps_every_acknowledged_entry() {
    let seed: u64 = std::env::var("WORMDB_CRASH_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or(20261122);
    let root = common::durable_temp_dir();
    let root_path = root.path().to_path_buf();
    common::run(move || async move {
        let original = root_path.join("original");
        let shard = Shard::open(config(&original)).await.unwrap();
        let model = fill(&shard, seed, 60).await;
        shard.close().await.unwrap();
        let segment = std::fs::read(segment_path(&original)).unwrap();
        let spans = blocks_of(&segment);
        let mut rng = SmallRng::seed_from_u64(seed);
        for case in 0..60 {
            // Acknowledged: every block up to a random boundary. In flight:
            // up to the next two commits' worth of blocks.
            let synced_blocks = rng.gen_range(0..spans.len());
            let durable_end = if synced_blocks == 0 { DATA_OFFSET } else { spans[synced_blocks - 1].end };
            let acked = if synced_blocks == 0 { 0 } else { spans[synced_blocks - 1].next_seq - 1 };
            let in_flight = rng.gen_range(0..=6).min(spans.len() - synced_blocks);
            let written_end = if in_flight == 0 { durable_end } else { spans[synced_blocks + in_flight - 1].end };
            let image = crash_image(&segment, durable_end, written_end, &mut rng);
            let dir = root_path.join(format!("crash-{case}"));
            copy_dir(&original, &dir);
            std::fs::write(segment_path(&dir), &image).unwrap();

            let context = format!("WORMDB_CRASH_SEED={seed} case {case}");
            let shard = Shard::open(config(&dir)).await.unwrap_or_else(|error| panic!("{context}: {error}"));
            let recovered = shard.durable_seq();
            // Acknowledged entries survive; unacknowledged ones may survive
            // only as whole blocks from the writes that were in flight.
            assert!(recovered >= acked, "{context}: lost acknowledged entries: {recovered} < {acked}");
            assert!(
                recovered == acked
                    || spans[synced_blocks..synced_blocks + in_flight]
                        .iter()
                        .any(|span| span.next_seq - 1 == recovered),
                "{context}: recovered {recovered} is not a block boundary of the in-flight writes"
            );
            let entries = shard.read_from(1, model.len()).await.unwrap();
            assert_eq!(entries.len() as u64, recovered, "{context}");
            for (entry, (seq, ts, body)) in entries.iter().zip(&model) {
                assert_eq!((entry.seq, entry.timestamp_ns), (*seq, *ts), "{context}");
                assert_eq!(std::str::from_utf8(&entry.body).unwrap(), body, "{context}");
            }
            shard.close().await.unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
        }
    });
}

#[test]
fn a_missing_or_corrupt_sealed_index_is_rebuilt_from_its_segment() {
    let root = common::durable_temp_dir();
    let root_path = root.path().to_path_buf();
    common::run(move || async move {
        let dir = root_path.join("shard");
        let shard = Shard::open(config(&dir)).await.unwrap();
        let lines = common::loghub_all();
        while shard.stats().segments < 3 {
            let tags = [("k", "v")];
            let entries: Vec<EntryRef<'_>> = lines
                .iter()
                .take(2000)
                .map(|(_, line)| EntryRef { fields: &[], timestamp_ns: 3, tags: &tags, body: line.as_bytes() })
                .collect();
            shard.append(&entries).unwrap().durable().await.unwrap();
        }
        let total = shard.durable_seq();
        shard.close().await.unwrap();
        let mut indexes: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "idx"))
            .collect();
        indexes.sort();
        assert_eq!(indexes.len(), 2);
        std::fs::remove_file(&indexes[0]).unwrap();
        let mut corrupt = std::fs::read(&indexes[1]).unwrap();
        corrupt[10] ^= 0xff;
        std::fs::write(&indexes[1], corrupt).unwrap();

        let shard = Shard::open(config(&dir)).await.unwrap();
        assert_eq!(shard.recovery_report().indexes_rebuilt, 2);
        assert_eq!(shard.durable_seq(), total);
        let query = wormdb::shard::Query {
            fields: &[],
            tags: &[("k", "v")],
            from_ts: 0,
            to_ts: 10,
            limit: usize::MAX,
            backward: false,
            words: &Default::default(),
            contains: &Default::default(),
        };
        assert_eq!(shard.query(&query).await.unwrap().entries.len() as u64, total);
        shard.close().await.unwrap();
        assert!(indexes.iter().all(|path| path.exists()), "rebuilt index files are written back");
    });
}
