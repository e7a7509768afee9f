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

mod support;

use std::hint::black_box;

use criterion::Throughput;
use support::{BlockInput, Samples, Settings};
use wormdb::codec::block::{self, BlockSpec};
use wormdb::limits;

const ENCODE_TARGET_BYTES_PER_SECOND: f64 = 500e6;
const DECODE_TARGET_BYTES_PER_SECOND: f64 = 1.5e9;

fn spec_of(block: &BlockInput<'_>) -> BlockSpec {
    let min_ts = block.entries.iter().map(|entry| entry.timestamp_ns).min().unwrap();
    let max_ts = block.entries.iter().map(|entry| entry.timestamp_ns).max().unwrap();
    BlockSpec {
        fields: false,
        first_seq: block.first_seq,
        entry_count: block.entries.len() as u32,
        min_ts,
        max_ts,
        origin: None,
    }
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
    let settings = Settings::from_env();
    let sample_size = settings.sample_size;
    // LogHub samples (https://github.com/logpai/loghub), interleaved line by
    // line, 3 tags per entry: see `support::loghub_entries`.
    let entries = support::loghub_entries();
    let blocks = support::cut_blocks(&entries);
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

    support::print_machine("block_codec");
    println!(
        "data: LogHub *_2k.log (8 files, https://github.com/logpai/loghub; {}), lines interleaved across sources, 3 tags per entry (source, level, host)",
        support::common::loghub::describe()
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
    println!("{}; throughput in raw payload bytes", settings.describe());
    println!();

    let mut criterion = settings.criterion();
    let encode_samples = Samples::default();
    let decode_samples = Samples::default();
    let decode_block_samples = Samples::default();
    {
        let mut group = criterion.benchmark_group("block_codec");
        group.throughput(Throughput::Bytes(raw_bytes as u64));
        group.bench_function("encode", |bencher| {
            bencher.iter_custom(|iterations| {
                encode_samples.time(iterations, || {
                    black_box(encode_all(&blocks, &specs, &mut raw, &mut out));
                })
            })
        });
        group.bench_function("decode", |bencher| {
            bencher.iter_custom(|iterations| {
                decode_samples.time(iterations, || {
                    black_box(decode_all(black_box(&encoded), &mut raw));
                })
            })
        });
        group.bench_function("decode_block", |bencher| {
            bencher.iter_custom(|iterations| {
                decode_block_samples.time(iterations, || {
                    black_box(decode_to_messages(black_box(&encoded)));
                })
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
        let Some(rates) = samples.rates(raw_bytes as f64, sample_size) else {
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
    support::print_load_at_end();
}
