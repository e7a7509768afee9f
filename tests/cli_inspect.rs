//! `wormdb inspect` as a black box: a real shard directory written by a
//! `Shard` on a glommio executor, then the binary run against it, clean and
//! with a torn tail, checking that it reports what was appended and never
//! touches a file.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wormdb::codec::block::BlockHeader;
use wormdb::shard::scan::{scan_window, Step, Stop};
use wormdb::shard::segment::{self, FileKind, DATA_OFFSET};
use wormdb::shard::{EntryRef, Shard, ShardConfig};

/// Timestamps start here (2023-11-14T22:13:20Z) so the RFC 3339 text is plausible.
const TS_BASE: i64 = 1_700_000_000_000_000_000;

fn run_inspect(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wormdb")).arg("inspect").args(args).output().unwrap()
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "inspect failed: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The shard's segment files, oldest first, with their first seq.
fn segments(shard_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(shard_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| match segment::classify(&path) {
            Some(FileKind::Segment(first_seq)) => Some((first_seq, path)),
            _ => None,
        })
        .collect();
    segments.sort();
    segments
}

/// The valid blocks of a segment image (offset, header) and where its log ends.
fn blocks_of(image: &[u8], first_seq: u64) -> (Vec<(u64, BlockHeader)>, u64, Stop) {
    let mut blocks = Vec::new();
    let mut next_seq = first_seq;
    let step = scan_window(&image[DATA_OFFSET as usize..], DATA_OFFSET, &mut next_seq, true, |offset, header, _| {
        blocks.push((offset, *header));
        Ok(())
    });
    match step {
        Step::End { offset, stop } => (blocks, offset, stop),
        Step::NeedMore { .. } => unreachable!("at_eof never asks for more"),
    }
}

/// Every file of `dir` with its bytes, to prove that inspect changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Appends LogHub lines in batches until the shard has rolled over at least
/// once and the active segment holds a few batches. Returns the last seq.
fn fill_shard(shard_dir: &Path) -> u64 {
    let shard_dir = shard_dir.to_path_buf();
    let lines = common::loghub_all();
    common::run(move || async move {
        let config =
            ShardConfig { segment_bytes: wormdb::limits::SEGMENT_BYTES_MIN, ..ShardConfig::new(&shard_dir, 0) };
        let shard = Shard::open(config).await.unwrap();
        let mut last_seq = 0;
        let mut batches_after_roll = 0;
        for (batch_index, batch) in lines.chunks(500).cycle().enumerate() {
            let tags: Vec<[(&str, &str); 1]> = batch.iter().map(|(source, _)| [("source", *source)]).collect();
            let entries: Vec<EntryRef<'_>> = batch
                .iter()
                .zip(&tags)
                .enumerate()
                .map(|(index, ((_, line), tags))| EntryRef {
                    fields: &[],
                    timestamp_ns: TS_BASE + (batch_index * 500 + index) as i64 * 1_000,
                    tags,
                    body: line.as_bytes(),
                })
                .collect();
            let range = shard.append(&entries).unwrap().durable().await.unwrap();
            assert_eq!(range.first, last_seq + 1);
            last_seq = range.last;
            if shard.stats().segments >= 2 {
                batches_after_roll += 1;
                if batches_after_roll == 3 {
                    break;
                }
            }
            assert!(batch_index < 10_000, "the shard never rolled over");
        }
        shard.close().await.unwrap();
        last_seq
    })
}

#[test]
fn inspect_reports_segments_blocks_and_a_torn_tail_read_only() {
    let root = common::durable_temp_dir();
    let shard_dir = root.path().join("shard-000");
    let last_seq = fill_shard(&shard_dir);
    let segments = segments(&shard_dir);
    assert!(segments.len() >= 2, "{segments:?}");

    // The whole data dir, segment summaries only.
    let before = snapshot(&shard_dir);
    let text = stdout_of(&run_inspect(&[root.path().to_str().unwrap()]));
    assert!(text.contains("data dir"), "{text}");
    assert!(text.contains("shard-000"), "{text}");
    for (position, (first_seq, path)) in segments.iter().enumerate() {
        let name = path.file_name().unwrap().to_str().unwrap();
        let next_seq = segments.get(position + 1).map_or(last_seq + 1, |(next, _)| *next);
        let role = if position + 1 == segments.len() { "active" } else { "sealed" };
        let heading = text.lines().find(|line| line.starts_with(&format!("  {name}: ")));
        assert!(heading.is_some_and(|line| line.ends_with(&format!(", {role}"))), "{name} {role} missing:\n{text}");
        let range = format!("seqs {first_seq}..={}", next_seq - 1);
        assert!(text.contains(&range), "{range} missing:\n{text}");
        if role == "sealed" {
            assert!(text.contains(&format!("index: {}", segment::index_file_name(*first_seq))), "{text}");
        }
    }
    assert_eq!(text.matches(", verifies").count(), segments.len() - 1, "{text}");
    let (active_first_seq, active_path) = segments.last().unwrap().clone();
    let active = std::fs::read(&active_path).unwrap();
    let (blocks, end, stop) = blocks_of(&active, active_first_seq);
    assert_eq!(stop, Stop::Clean);
    assert!(blocks.len() >= 2, "the active segment holds a few blocks");
    assert_eq!(blocks.last().unwrap().1.next_seq(), last_seq + 1);
    assert!(text.contains(&format!("end: clean at offset {end}; no non-zero byte")), "{text}");
    assert!(text.contains(&format!("seqs 1..={last_seq}, next seq {}", last_seq + 1)), "{text}");
    assert!(text.contains("problems: none"), "{text}");
    assert!(text.contains("origin watermarks: none (no replicated entries)"), "{text}");
    assert!(text.contains("leftovers: none"), "{text}");
    assert!(text.contains("created 20"), "an RFC 3339 creation time:\n{text}");
    assert!(!text.contains("block at "), "{text}");

    // One shard dir, with every block.
    let text = stdout_of(&run_inspect(&[shard_dir.to_str().unwrap(), "--blocks"]));
    let mut block_count = 0;
    for (first_seq, path) in &segments {
        let (segment_blocks, _, _) = blocks_of(&std::fs::read(path).unwrap(), *first_seq);
        for (offset, header) in &segment_blocks {
            let entries = match header.entry_count {
                1 => "1 entry".to_string(),
                count => format!("{count} entries"),
            };
            let line = format!(
                "block at {offset}, {} bytes: seqs {}..={}, {entries}, ",
                header.block_bytes(),
                header.first_seq,
                header.next_seq() - 1,
            );
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
        block_count += segment_blocks.len();
    }
    assert_eq!(text.matches("block at ").count(), block_count, "{text}");
    assert_eq!(text.matches("index agrees with the scan").count(), segments.len() - 1, "{text}");
    assert_eq!(snapshot(&shard_dir), before, "inspect changed a file");

    // Flip a byte in the payload of the active segment's last block.
    let (torn_offset, torn_header) = *blocks.last().unwrap();
    let mut damaged = active.clone();
    damaged[torn_offset as usize + torn_header.block_bytes() - 1] ^= 0x5a;
    std::fs::write(&active_path, &damaged).unwrap();
    let before = snapshot(&shard_dir);
    let text = stdout_of(&run_inspect(&[shard_dir.to_str().unwrap()]));
    assert!(text.contains(&format!("end: torn tail at offset {torn_offset}: block checksum mismatch")), "{text}");
    assert!(text.contains("non-zero bytes follow"), "{text}");
    let kept = format!("seqs {active_first_seq}..={}", torn_header.first_seq - 1);
    assert!(text.contains(&kept), "{kept} missing:\n{text}");
    assert!(text.contains("problems: 1"), "{text}");
    assert_eq!(snapshot(&shard_dir), before, "inspect changed a file");
}

#[test]
fn inspect_of_a_missing_dir_fails_naming_it() {
    let output = run_inspect(&["/nonexistent/wormdb-data"]);
    assert!(!output.status.success());
    let all = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(all.contains("/nonexistent/wormdb-data"), "{all}");
}
