//! The write path's word work per entry: walking a body's words, hashing
//! them and setting their bits in the block's word filter, as
//! `BlockTerms::add_body` does for every entry a shard appends.
//!
//! Bodies: LogHub lines (<https://github.com/logpai/loghub>) joined and cut
//! to [`BODY_BYTES`] bytes, as `wormdb-loadgen --payload-file F
//! --body-bytes 256` sends them; or, with `WORMDB_BENCH_BODIES=FILE`, the
//! lines of FILE (e.g. the bodies `benches/compare.sh`'s load generator
//! sent, read back with `GET /v1/entries`).
//!
//! Printed, in ns per entry (best of [`RUNS`] passes over the bodies; no
//! wall-clock assertion): finding the words a filter holds
//! (`for_each_filtered_word`), finding and hashing them
//! (`for_each_filtered_word_hash`), and the whole
//! `WordFilterBuilder::add_body` with a filter reset at every block of
//! [`BLOCK_ENTRIES`] entries. Run with `cargo bench --bench word_walk`.
#![allow(clippy::unwrap_used)]

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use wormdb::index::word_filter::WordFilterBuilder;
use wormdb::index::words::{for_each_filtered_word, for_each_filtered_word_hash, words, FILTERED_WORD_BYTES_MIN};

/// Body size of `benches/compare.sh`.
const BODY_BYTES: usize = 256;
/// Entries per block at that size (a block is about 256 KiB raw).
const BLOCK_ENTRIES: usize = 870;
/// Passes over the bodies; the fastest is printed (the least disturbed by
/// other load on the machine).
const RUNS: usize = 31;

fn bodies() -> (String, Vec<Vec<u8>>) {
    if let Ok(path) = std::env::var("WORMDB_BENCH_BODIES") {
        let text = std::fs::read(&path).unwrap();
        let bodies = text.split(|&byte| byte == b'\n').filter(|line| !line.is_empty()).map(<[u8]>::to_vec).collect();
        return ("WORMDB_BENCH_BODIES".to_owned(), bodies);
    }
    let joined: Vec<u8> = support::SOURCES
        .iter()
        .flat_map(|&source| support::loghub_lines(source))
        .collect::<Vec<_>>()
        .join(" ")
        .into_bytes();
    ("LogHub lines joined".to_owned(), joined.chunks_exact(BODY_BYTES).map(<[u8]>::to_vec).collect())
}

fn per_entry(bodies: &[Vec<u8>], mut pass: impl FnMut(&[Vec<u8>])) -> Duration {
    let mut samples: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            pass(bodies);
            start.elapsed() / bodies.len() as u32
        })
        .collect();
    samples.sort();
    samples[0]
}

#[inline(never)]
fn walk_pass(bodies: &[Vec<u8>]) -> u64 {
    let mut sum = 0_u64;
    for body in bodies {
        for_each_filtered_word(body, |start, end| sum += (start ^ end) as u64);
    }
    sum
}

#[inline(never)]
fn filtered_pass(bodies: &[Vec<u8>]) -> u64 {
    let mut sum = 0_u64;
    for body in bodies {
        for_each_filtered_word_hash(body, |hash| sum ^= hash);
    }
    sum
}

fn main() {
    support::print_machine("word_walk");
    let (source, bodies) = bodies();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let all_words: usize = bodies.iter().map(|body| words(body).count()).sum();
    let long_words: usize =
        bodies.iter().map(|body| words(body).filter(|word| word.len() >= FILTERED_WORD_BYTES_MIN).count()).sum();
    println!(
        "bodies: {source}, {} entries of {} B on average; {:.1} words per entry, {:.1} of them of {FILTERED_WORD_BYTES_MIN} bytes or more",
        bodies.len(),
        bytes / bodies.len().max(1),
        all_words as f64 / bodies.len() as f64,
        long_words as f64 / bodies.len() as f64,
    );
    let walk = per_entry(&bodies, |bodies| {
        black_box(walk_pass(bodies));
    });
    let filtered = per_entry(&bodies, |bodies| {
        black_box(filtered_pass(bodies));
    });
    let mut builder = WordFilterBuilder::new();
    let add_body = per_entry(&bodies, |bodies| {
        for block in bodies.chunks(BLOCK_ENTRIES) {
            builder = WordFilterBuilder::new();
            for body in block {
                builder.add_body(body);
            }
            black_box(builder.finish());
        }
    });
    println!("filtered words found:          {:>6.1} ns/entry", walk.as_nanos() as f64);
    println!("filtered words hashed:         {:>6.1} ns/entry", filtered.as_nanos() as f64);
    println!("add_body, finish per block:    {:>6.1} ns/entry", add_body.as_nanos() as f64);
    support::print_load_at_end();
}
