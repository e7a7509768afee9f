//! Cold compression: what the zstd rewrite of sealed segments saves and
//! costs, on LogHub text.
//!
//! 1. **Codec**, one core, no executor, no I/O: the LogHub samples
//!    interleaved line by line (3 tags per entry), cut into blocks of about
//!    256 KiB raw as the shard cuts them and LZ4-encoded as the writer
//!    does; then each block recompressed with zstd ([`Recompressor`], in
//!    its steps) at several levels, and at [`limits::COLD_ZSTD_LEVEL`] with
//!    a dictionary trained on the same entries (the dictionary counted in
//!    the size). Ratio: raw payload bytes per stored byte, block headers
//!    included (what `/v1/stats` divides: `raw_bytes / disk_bytes`), and
//!    text bytes (the lines alone) per stored byte. Cost: CPU time of the
//!    thread (`CLOCK_THREAD_CPUTIME_ID`, not wall time: the machine is
//!    shared) per GB of raw payload, for the rewrite (LZ4 decompression +
//!    zstd) and for reading back (verify + decompress).
//! 2. **Shard**, end to end: a shard on one glommio executor with 64 MiB
//!    segments, filled with the same entries (cycled) until 3 segments are
//!    sealed, then one pass of [`Shard::compress_cold`]: `disk_bytes` and
//!    the ratio before and after, the thread's CPU time for the pass (every
//!    step: reads, recompression, writes, fsyncs) and the time the rewrite
//!    counted as busy (`cold_busy_us`).
//!
//! Run with `cargo bench --bench cold_compression`; `WORMDB_BENCH_QUICK=1`
//! takes one repetition and one sealed segment. It prints numbers and
//! their conditions; it asserts nothing about time.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use wormdb::codec::block::{self, BlockSpec};
use wormdb::codec::zstd::{recompress_block, Recompressed, Recompressor};
use wormdb::limits;
use wormdb::shard::{ColdPolicy, Shard, ShardConfig};

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec we own.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    assert_eq!(status, 0);
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let quick = std::env::var_os("WORMDB_BENCH_QUICK").is_some();
    let repetitions = if quick { 1 } else { 5 };
    support::print_machine("cold_compression");
    let entries = support::loghub_entries();
    let text_bytes: usize = entries.iter().map(|entry| entry.body.len() + 1).sum();
    let blocks = support::cut_blocks(&entries);
    let mut raw = Vec::new();
    let mut lz4_blocks = Vec::new();
    let mut payloads = Vec::new();
    for input in &blocks {
        raw.clear();
        for entry in input.entries {
            block::encode_entry(entry, entry.timestamp_ns, &mut raw);
        }
        let spec = BlockSpec {
            fields: false,
            first_seq: input.first_seq,
            entry_count: input.entries.len() as u32,
            min_ts: input.entries.iter().map(|entry| entry.timestamp_ns).min().unwrap(),
            max_ts: input.entries.iter().map(|entry| entry.timestamp_ns).max().unwrap(),
            origin: None,
        };
        let mut out = vec![0; block::encoded_bytes_max(raw.len())];
        let used = block::encode_block(&spec, &raw, &mut out);
        out.truncate(used);
        lz4_blocks.push(out);
        payloads.push(raw.clone());
    }
    let raw_bytes: usize = payloads.iter().map(Vec::len).sum();
    let block_text: usize = blocks.iter().flat_map(|input| input.entries).map(|entry| entry.body.len() + 1).sum();
    let lz4_bytes: usize = lz4_blocks.iter().map(Vec::len).sum();
    println!(
        "data: LogHub *_2k.log ({}), {} entries, {:.2} MB of text; {} blocks of {:.0} KiB raw on average ({:.2} MB raw payload, the last partial block left out)",
        support::common::loghub::describe(),
        entries.len(),
        text_bytes as f64 / 1e6,
        blocks.len(),
        raw_bytes as f64 / blocks.len() as f64 / 1024.0,
        raw_bytes as f64 / 1e6
    );
    println!(
        "cpu: CLOCK_THREAD_CPUTIME_ID of the bench thread, median of {repetitions}; GB = 10^9 bytes of raw payload"
    );
    println!();
    println!("== cold_compression: codec (stored bytes include the 64-byte block headers) ==");
    let lz4_read = read_cost(&lz4_blocks, repetitions);
    println!(
        "{:<28} raw/disk {:>5.2}x  text/disk {:>5.2}x  rewrite {:>6}  read back {:>6.2} CPU-s/GB",
        "lz4 (as the writer stores)",
        raw_bytes as f64 / lz4_bytes as f64,
        block_text as f64 / lz4_bytes as f64,
        "-",
        lz4_read
    );
    for level in [1, 2, 3, 5, 6, 9] {
        let mut recompressor = Recompressor::new(level);
        let mut stored = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..repetitions {
            stored.clear();
            let started = thread_cpu();
            for block in &lz4_blocks {
                let header = block::verify_block(block).unwrap();
                let mut out = Vec::new();
                match recompress_block(&mut recompressor, &header, block, &mut out).unwrap() {
                    Recompressed::Zstd(_) => stored.push(out),
                    Recompressed::Keep => stored.push(block.clone()),
                }
            }
            cpu.push((thread_cpu() - started).as_secs_f64());
        }
        let stored_bytes: usize = stored.iter().map(Vec::len).sum();
        let marker = if level == limits::COLD_ZSTD_LEVEL { " (COLD_ZSTD_LEVEL)" } else { "" };
        println!(
            "{:<28} raw/disk {:>5.2}x  text/disk {:>5.2}x  rewrite {:>6.2}  read back {:>6.2} CPU-s/GB",
            format!("zstd level {level}{marker}"),
            raw_bytes as f64 / stored_bytes as f64,
            block_text as f64 / stored_bytes as f64,
            median(cpu) / raw_bytes as f64 * 1e9,
            read_cost(&stored, repetitions)
        );
    }
    dictionary(&payloads, raw_bytes, block_text, repetitions);
    println!();
    shard_end_to_end(quick);
    support::print_load_at_end();
}

/// CPU-s per GB of raw payload to verify and decompress `blocks`.
fn read_cost(blocks: &[Vec<u8>], repetitions: usize) -> f64 {
    let mut raw = Vec::new();
    let mut cpu = Vec::new();
    let mut raw_bytes = 0;
    for _ in 0..repetitions {
        raw_bytes = 0;
        let started = thread_cpu();
        for block in blocks {
            let header = block::verify_block(block).unwrap();
            block::decompress_payload(&header, block, &mut raw).unwrap();
            raw_bytes += raw.len();
        }
        cpu.push((thread_cpu() - started).as_secs_f64());
    }
    median(cpu) / raw_bytes as f64 * 1e9
}

/// zstd at the cold level with a dictionary trained on the entries of the
/// same data (an upper bound of what a per-segment dictionary gives).
fn dictionary(payloads: &[Vec<u8>], raw_bytes: usize, text_bytes: usize, repetitions: usize) {
    let mut samples = Vec::new();
    for payload in payloads {
        let mut rest = &payload[..];
        while let Some((length, prefix)) = block::read_varint(rest) {
            let end = prefix + length as usize;
            samples.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    for dictionary_bytes in [16 * 1024, 64 * 1024] {
        let started = thread_cpu();
        let dictionary = zstd::dict::from_samples(&samples, dictionary_bytes).unwrap();
        let training = thread_cpu() - started;
        let mut compressor = zstd::bulk::Compressor::with_dictionary(limits::COLD_ZSTD_LEVEL, &dictionary).unwrap();
        let mut cpu = Vec::new();
        let mut stored = 0;
        for _ in 0..repetitions {
            let started = thread_cpu();
            stored = payloads.iter().map(|payload| compressor.compress(payload).unwrap().len() + 64).sum::<usize>();
            cpu.push((thread_cpu() - started).as_secs_f64());
        }
        let with_dictionary = stored + dictionary.len();
        println!(
            "{:<28} raw/disk {:>5.2}x  text/disk {:>5.2}x  rewrite {:>6.2} CPU-s/GB (+{:.2} CPU-s to train; {:.2}x without counting the dictionary)",
            format!("zstd {} + {} KiB dictionary", limits::COLD_ZSTD_LEVEL, dictionary.len() / 1024),
            raw_bytes as f64 / with_dictionary as f64,
            text_bytes as f64 / with_dictionary as f64,
            median(cpu) / raw_bytes as f64 * 1e9,
            training.as_secs_f64(),
            raw_bytes as f64 / stored as f64
        );
    }
}

/// A shard filled to a few sealed segments, then one cold pass.
fn shard_end_to_end(quick: bool) {
    let sealed = if quick { 1 } else { 3 };
    let segment_bytes: u64 = 64 << 20;
    let base = std::env::var_os("WORMDB_TEST_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).unwrap();
    let path = dir.path().join("shard-000");
    println!("== cold_compression: shard ({sealed} sealed segments of {} MiB, one pass) ==", segment_bytes >> 20);
    let report = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let config = ShardConfig { segment_bytes, ..ShardConfig::new(&path, 0) };
            let shard = Shard::open(config).await.unwrap();
            let entries = support::loghub_entries();
            let mut next = 0usize;
            while shard.stats().segments < sealed + 1 {
                let batch: Vec<_> = (0..2000).map(|index| entries[(next + index) % entries.len()]).collect();
                next += batch.len();
                shard.append(&batch).unwrap().durable().await.unwrap();
            }
            let before = shard.stats();
            let (started_cpu, started) = (thread_cpu(), Instant::now());
            let rewrites = shard.compress_cold(ColdPolicy::zstd(Duration::ZERO), i64::MAX).await.unwrap();
            let (cpu, wall) = (thread_cpu() - started_cpu, started.elapsed());
            let after = shard.stats();
            shard.close().await.unwrap();
            (before, after, rewrites, cpu, wall)
        })
        .unwrap()
        .join()
        .unwrap();
    let (before, after, rewrites, cpu, wall) = report;
    let raw: u64 = rewrites.iter().map(|rewrite| rewrite.raw_bytes).sum();
    let block_before: u64 = rewrites.iter().map(|rewrite| rewrite.block_bytes_before).sum();
    let block_after: u64 = rewrites.iter().map(|rewrite| rewrite.block_bytes_after).sum();
    println!(
        "segments rewritten: {}; their raw payload {:.1} MB, blocks {:.1} MB -> {:.1} MB ({:.2}x -> {:.2}x raw/disk)",
        rewrites.len(),
        raw as f64 / 1e6,
        block_before as f64 / 1e6,
        block_after as f64 / 1e6,
        raw as f64 / block_before as f64,
        raw as f64 / block_after as f64
    );
    println!(
        "shard: raw_bytes {} disk_bytes {} -> {} (raw/disk {:.2}x -> {:.2}x, the active segment still LZ4)",
        before.raw_bytes,
        before.disk_bytes,
        after.disk_bytes,
        before.raw_bytes as f64 / before.disk_bytes as f64,
        after.raw_bytes as f64 / after.disk_bytes as f64
    );
    println!(
        "pass: {:.2} s wall, {:.2} CPU-s of the executor thread = {:.2} CPU-s per GB of raw payload; busy (decompress + compress) {:.2} s = {:.2} CPU-s/GB",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() / raw as f64 * 1e9,
        after.cold_busy_us as f64 / 1e6,
        after.cold_busy_us as f64 / 1e6 / raw as f64 * 1e9
    );
}
