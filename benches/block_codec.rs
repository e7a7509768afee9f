//! Block codec throughput on one core, with no executor and no disk.
//!
//! Blocks of about 256 KiB of raw payload (they close at
//! `limits::BLOCK_RAW_BYTES_TARGET`, as in the shard) are built from the eight
//! LogHub samples, interleaved line by line as a shard that ingests several
//! services sees them, each entry with 3 tags (`source`, `level`, `host`).
//! Measured, in bytes of raw (uncompressed) payload per second:
//!
//! - `encode`: `encode_entry` for every entry, then `encode_block` (LZ4,
//!   crc32);
//! - `decode`: `verify_block` + `decompress_payload` + `for_each_entry`, the
//!   path of recovery and of readers before filtering;
//! - `decode_block`: `decode_block` into prost `LogEntry` values.
//!
//! Run with `cargo bench --bench block_codec`; `WORMDB_BENCH_QUICK=1` takes
//! fewer, shorter samples. Criterion's numbers come first, then a summary
//! (the median of criterion's own samples) beside the targets: encode
//! >= 500 MB/s and decode >= 1.5 GB/s per core (MB = 10^6 bytes).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::cell::RefCell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use wormdb::limits;
use wormdb::shard::block::{self, BlockSpec};
use wormdb::shard::EntryRef;

const ENCODE_TARGET_BYTES_PER_SECOND: f64 = 500e6;
const DECODE_TARGET_BYTES_PER_SECOND: f64 = 1.5e9;
const HOST_COUNT: usize = 16;
const SOURCES: [&str; 8] = ["Android", "Apache", "HDFS", "Hadoop", "Linux", "OpenSSH", "Spark", "Zookeeper"];

/// One block's worth of entries, as the shard would have gathered them.
struct BlockInput<'a> {
    first_seq: u64,
    entries: &'a [EntryRef<'a>],
    raw_bytes: usize,
}

/// Per-sample timings that criterion measured, kept for the summary.
#[derive(Default)]
struct Samples {
    /// (iterations, elapsed) of each call, in call order.
    calls: RefCell<Vec<(u64, Duration)>>,
}

impl Samples {
    /// Median, mean (total bytes over total time) and min..max bytes per
    /// second over the last `count` calls: criterion's measurement phase is
    /// exactly its last `sample_size` calls (the earlier ones are warm-up).
    fn rates(&self, bytes_per_iteration: usize, count: usize) -> Option<Rates> {
        let calls = self.calls.borrow();
        let measured = &calls[calls.len().saturating_sub(count)..];
        let mut per_call: Vec<f64> = measured
            .iter()
            .filter(|(_, elapsed)| !elapsed.is_zero())
            .map(|(iterations, elapsed)| (bytes_per_iteration as f64 * *iterations as f64) / elapsed.as_secs_f64())
            .collect();
        if per_call.is_empty() {
            return None;
        }
        per_call.sort_by(f64::total_cmp);
        let iterations: u64 = measured.iter().map(|(iterations, _)| iterations).sum();
        let seconds: f64 = measured.iter().map(|(_, elapsed)| elapsed.as_secs_f64()).sum();
        Some(Rates {
            median: per_call[per_call.len() / 2],
            mean: bytes_per_iteration as f64 * iterations as f64 / seconds,
            min: per_call[0],
            max: per_call[per_call.len() - 1],
        })
    }
}

/// Bytes per second of one benchmark.
struct Rates {
    median: f64,
    mean: f64,
    min: f64,
    max: f64,
}

fn level_of(line: &str) -> &'static str {
    if line.contains("ERROR") || line.contains("error") || line.contains("FATAL") {
        "error"
    } else if line.contains("WARN") || line.contains("warn") {
        "warn"
    } else {
        "info"
    }
}

/// Cuts `entries` into blocks the way the shard does: a block closes once
/// its raw payload reaches `BLOCK_RAW_BYTES_TARGET`. A last partial block is
/// dropped so that every measured block has the target size.
fn cut_blocks<'a>(entries: &'a [EntryRef<'a>]) -> Vec<BlockInput<'a>> {
    let mut blocks = Vec::new();
    let mut raw = Vec::new();
    let mut start = 0;
    for (index, entry) in entries.iter().enumerate() {
        block::encode_entry(entry, entry.timestamp_ns, &mut raw);
        let count = index + 1 - start;
        if raw.len() >= limits::BLOCK_RAW_BYTES_TARGET || count == limits::BLOCK_ENTRIES_MAX {
            blocks.push(BlockInput {
                first_seq: start as u64 + 1,
                entries: &entries[start..=index],
                raw_bytes: raw.len(),
            });
            raw.clear();
            start = index + 1;
        }
    }
    blocks
}

fn spec_of(block: &BlockInput<'_>) -> BlockSpec {
    let min_ts = block.entries.iter().map(|entry| entry.timestamp_ns).min().unwrap();
    let max_ts = block.entries.iter().map(|entry| entry.timestamp_ns).max().unwrap();
    BlockSpec { first_seq: block.first_seq, entry_count: block.entries.len() as u32, min_ts, max_ts, origin: None }
}

/// Encodes every block as the shard's writer does; returns bytes produced.
fn encode_all(blocks: &[BlockInput<'_>], specs: &[BlockSpec], raw: &mut Vec<u8>, out: &mut [u8]) -> usize {
    let mut encoded = 0;
    for (input, spec) in blocks.iter().zip(specs) {
        raw.clear();
        for entry in input.entries {
            block::encode_entry(entry, entry.timestamp_ns, raw);
        }
        encoded += block::encode_block(spec, raw, out);
    }
    encoded
}

/// The recovery/reader path up to raw entry bytes; returns entry bytes seen.
fn decode_all(encoded: &[Vec<u8>], raw: &mut Vec<u8>) -> usize {
    let mut entry_bytes = 0;
    for bytes in encoded {
        let header = block::verify_block(bytes).unwrap();
        block::decompress_payload(&header, bytes, raw).unwrap();
        block::for_each_entry(&header, raw, |_, entry| {
            entry_bytes += entry.len();
            Ok(())
        })
        .unwrap();
    }
    entry_bytes
}

/// Full decode to prost messages; returns the number of entries.
fn decode_to_messages(encoded: &[Vec<u8>]) -> usize {
    let mut count = 0;
    for bytes in encoded {
        let (_, entries) = block::decode_block(bytes, 1, 0).unwrap();
        count += entries.len();
        black_box(entries);
    }
    count
}

fn main() {
    let quick = std::env::var_os("WORMDB_BENCH_QUICK").is_some_and(|value| value != "0");
    let (sample_size, warm_up, measurement) = if quick {
        (10, Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (100, Duration::from_secs(3), Duration::from_secs(5))
    };

    // LogHub samples: https://github.com/logpai/loghub (see shared/data/loghub/LICENSE),
    // read from `$CARGO_MANIFEST_DIR/../shared/data/loghub/NAME_2k.log`.
    let per_source: Vec<(&'static str, Vec<String>)> =
        SOURCES.iter().map(|&source| (source, common::loghub_lines(source))).collect();
    // Interleave the services line by line, as a shared ingest stream would.
    let longest = per_source.iter().map(|(_, lines)| lines.len()).max().unwrap_or(0);
    let lines: Vec<(&'static str, &str)> = (0..longest)
        .flat_map(|row| per_source.iter().filter_map(move |(source, lines)| Some((*source, lines.get(row)?.as_str()))))
        .collect();
    let hosts: Vec<String> = (0..HOST_COUNT).map(|host| format!("node-{host:02}")).collect();
    let tags: Vec<[(&str, &str); 3]> = lines
        .iter()
        .enumerate()
        .map(|(index, (source, line))| {
            [("source", *source), ("level", level_of(line)), ("host", hosts[index % HOST_COUNT].as_str())]
        })
        .collect();
    let base_ts: i64 = 1_700_000_000_000_000_000;
    let entries: Vec<EntryRef<'_>> = lines
        .iter()
        .zip(&tags)
        .enumerate()
        .map(|(index, ((_, line), tags))| EntryRef {
            timestamp_ns: base_ts + index as i64 * 1_000,
            tags,
            body: line.as_bytes(),
        })
        .collect();
    let blocks = cut_blocks(&entries);
    assert!(!blocks.is_empty(), "the LogHub samples fill at least one block");
    let specs: Vec<BlockSpec> = blocks.iter().map(spec_of).collect();
    let raw_bytes: usize = blocks.iter().map(|block| block.raw_bytes).sum();
    let entry_count: usize = blocks.iter().map(|block| block.entries.len()).sum();
    let raw_max = blocks.iter().map(|block| block.raw_bytes).max().unwrap();

    let mut raw = Vec::with_capacity(raw_max);
    let mut out = vec![0u8; block::encoded_bytes_max(raw_max)];
    let encoded: Vec<Vec<u8>> = blocks
        .iter()
        .zip(&specs)
        .map(|(input, spec)| {
            raw.clear();
            for entry in input.entries {
                block::encode_entry(entry, entry.timestamp_ns, &mut raw);
            }
            let used = block::encode_block(spec, &raw, &mut out);
            out[..used].to_vec()
        })
        .collect();
    let stored_bytes: usize = encoded.iter().map(Vec::len).sum();
    let lz4_blocks = encoded
        .iter()
        .filter(|bytes| block::parse_header(bytes).map(|header| header.codec) == Ok(block::Codec::Lz4))
        .count();

    println!("== block_codec: conditions ==");
    println!(
        "machine: nproc={} cpu=\"{}\" loadavg at start: {}; single thread, no executor, no I/O",
        nproc(),
        cpu_model(),
        load_average()
    );
    println!("source tree: {}", source_tree());
    println!(
        "data: LogHub *_2k.log (8 files), lines interleaved across sources, 3 tags per entry (source, level, host)"
    );
    println!(
        "blocks: {} of {:.1} KiB raw on average ({} entries, {} raw bytes per iteration; BLOCK_RAW_BYTES_TARGET = {} KiB)",
        blocks.len(),
        raw_bytes as f64 / blocks.len() as f64 / 1024.0,
        entry_count,
        raw_bytes,
        limits::BLOCK_RAW_BYTES_TARGET / 1024
    );
    println!(
        "stored: {} bytes, ratio {:.2}x ({} of {} blocks LZ4, the rest stored raw)",
        stored_bytes,
        raw_bytes as f64 / stored_bytes as f64,
        lz4_blocks,
        encoded.len()
    );
    println!(
        "criterion: sample_size={sample_size} warm_up={warm_up:?} measurement={measurement:?}{}; throughput in raw payload bytes",
        if quick { " (WORMDB_BENCH_QUICK)" } else { "" }
    );
    println!();

    let mut criterion = Criterion::default()
        .sample_size(sample_size)
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .configure_from_args();
    let encode_samples = Samples::default();
    let decode_samples = Samples::default();
    let decode_block_samples = Samples::default();
    {
        let mut group = criterion.benchmark_group("block_codec");
        group.throughput(Throughput::Bytes(raw_bytes as u64));
        group.bench_function("encode", |bencher| {
            bencher.iter_custom(|iterations| {
                let started = Instant::now();
                for _ in 0..iterations {
                    black_box(encode_all(&blocks, &specs, &mut raw, &mut out));
                }
                let elapsed = started.elapsed();
                encode_samples.calls.borrow_mut().push((iterations, elapsed));
                elapsed
            })
        });
        group.bench_function("decode", |bencher| {
            bencher.iter_custom(|iterations| {
                let started = Instant::now();
                for _ in 0..iterations {
                    black_box(decode_all(black_box(&encoded), &mut raw));
                }
                let elapsed = started.elapsed();
                decode_samples.calls.borrow_mut().push((iterations, elapsed));
                elapsed
            })
        });
        group.bench_function("decode_block", |bencher| {
            bencher.iter_custom(|iterations| {
                let started = Instant::now();
                for _ in 0..iterations {
                    black_box(decode_to_messages(black_box(&encoded)));
                }
                let elapsed = started.elapsed();
                decode_block_samples.calls.borrow_mut().push((iterations, elapsed));
                elapsed
            })
        });
        group.finish();
    }
    criterion.final_summary();

    println!();
    println!("== block_codec: summary (median of criterion's last {sample_size} samples; MB = 10^6 bytes) ==");
    let rows = [
        ("encode (encode_entry + encode_block)", &encode_samples, Some(ENCODE_TARGET_BYTES_PER_SECOND)),
        ("decode (verify + decompress + for_each_entry)", &decode_samples, Some(DECODE_TARGET_BYTES_PER_SECOND)),
        ("decode_block (to prost LogEntry)", &decode_block_samples, None),
    ];
    for (name, samples, target) in rows {
        let Some(rates) = samples.rates(raw_bytes, sample_size) else {
            println!("{name:<46} not measured (filtered out or test mode)");
            continue;
        };
        let verdict = match target {
            Some(target) => format!(
                "target >= {:.0} MB/s: {} ({:.0}% of target)",
                target / 1e6,
                if rates.median >= target { "meets" } else { "BELOW" },
                100.0 * rates.median / target
            ),
            None => "no target".to_string(),
        };
        println!(
            "{name:<46} median {:>6.0} MB/s per core (mean {:.0}, samples {:.0}..{:.0})  {verdict}",
            rates.median / 1e6,
            rates.mean / 1e6,
            rates.min / 1e6,
            rates.max / 1e6
        );
    }
    println!("loadavg at end: {} (nproc={}; other load on the machine slows every number)", load_average(), nproc());
}

fn nproc() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The source tree the bench runs from (`git describe --always --dirty`, at
/// run time): other work lands while benches run, so results name it.
fn source_tree() -> String {
    std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
