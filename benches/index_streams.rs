//! Tag sets and word filters of one full segment in the shape of issue 19,
//! on one core, with no executor and no disk.
//!
//! The shape is `wormdb-loadgen --tags 3:100` with LogHub bodies: a pool of
//! [`POOL_ENTRIES`] entries, each a LogHub line with three tags `t0`, `t1`,
//! `t2` drawn uniformly from 100 values, reused cyclically; a 256 MiB segment
//! holds about [`SEGMENT_BLOCKS`] blocks of [`BLOCK_ENTRIES`] entries, so
//! about 200 000 distinct tag sets, each in about 17 blocks, and every block
//! holds every value of every tag.
//!
//! Printed (medians of a few runs; no wall-clock assertion):
//!
//! - write path, ns per entry: `BlockTerms::add_entry` (tags → sets),
//!   `add_body` (words → filter), and `SegmentIndex::push_block_terms`
//!   (block close: filter fold, sets interned in the segment), as the
//!   writer and recovery run them;
//! - the index file: bytes per section (block table, pair terms, tag sets,
//!   filters), encode time;
//! - loading: `decode_without_filters` (what a tag query needs) and
//!   `load_filters` (what a word query adds);
//! - `candidates_for`: a 3-tag conjunction no set matches, one that matches
//!   a set, one tag, and a word absent from the segment, per segment;
//! - word filters: bytes per block, distinct words per block (exact and
//!   estimated), and the false-positive rate per block against bits per
//!   word and probes, measured with words absent from the corpus.
//!
//! Run with `cargo bench --bench index_streams`; `WORMDB_BENCH_QUICK=1`
//! builds a quarter of a segment.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use wormdb::index::word_filter::{self, WordFilterBuilder};
use wormdb::index::words::{for_each_filtered_word_hash, word_hash, words, FILTERED_WORD_BYTES_MIN};
use wormdb::index::{decode_summary, BlockMeta, BlockTerms, Predicates, SegmentIndex};

/// Distinct entries of the load generator's pool.
const POOL_ENTRIES: usize = 200_000;
/// Blocks of a 256 MiB segment of this shape.
const SEGMENT_BLOCKS: usize = 4_300;
/// Entries per block (256 KiB of raw entries).
const BLOCK_ENTRIES: usize = 870;
/// Values per tag.
const TAG_VALUES: usize = 100;

/// A block's entries laid out one after the other: tags, bodies, ranges.
type SampleBlock = (Vec<[(&'static str, &'static str); 3]>, Vec<u8>, Vec<(usize, usize)>);

struct PoolEntry {
    body: &'static str,
    tags: [(&'static str, &'static str); 3],
}

fn pool() -> Vec<PoolEntry> {
    let lines: Vec<&'static str> =
        support::SOURCES.iter().flat_map(|&source| support::loghub_lines(source)).map(|line| &*line.leak()).collect();
    let values: Vec<&'static str> = (0..TAG_VALUES).map(|value| &*format!("v{value}").leak()).collect();
    let mut rng = SmallRng::seed_from_u64(19);
    (0..POOL_ENTRIES)
        .map(|index| PoolEntry {
            body: lines[index % lines.len()],
            tags: [
                ("t0", values[rng.gen_range(0..TAG_VALUES)]),
                ("t1", values[rng.gen_range(0..TAG_VALUES)]),
                ("t2", values[rng.gen_range(0..TAG_VALUES)]),
            ],
        })
        .collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time_per(count: usize, runs: usize, mut routine: impl FnMut()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..count {
                    routine();
                }
                start.elapsed() / count as u32
            })
            .collect(),
    )
}

fn main() {
    support::print_machine("index_streams");
    let quick = std::env::var_os("WORMDB_BENCH_QUICK").is_some();
    let block_count = if quick { SEGMENT_BLOCKS / 4 } else { SEGMENT_BLOCKS };
    let pool = pool();
    let entry_at = |block: usize, row: usize| &pool[(block * BLOCK_ENTRIES + row) % POOL_ENTRIES];
    println!(
        "shape: {block_count} blocks x {BLOCK_ENTRIES} entries, pool {POOL_ENTRIES}, 3 tags x {TAG_VALUES} values, LogHub bodies"
    );

    // ---- write path ----
    // Each sample block's entries laid out as a request's are, one after the
    // other (the pool's scattered lines would measure cache misses that the
    // server, which has just parsed the entry, does not have).
    let sample_blocks = 64.min(block_count);
    let blocks: Vec<SampleBlock> = (0..sample_blocks)
        .map(|block| {
            let (mut tags, mut bodies, mut ranges) = (Vec::new(), Vec::new(), Vec::new());
            for row in 0..BLOCK_ENTRIES {
                let entry = entry_at(block, row);
                tags.push(entry.tags);
                ranges.push((bodies.len(), bodies.len() + entry.body.len()));
                bodies.extend_from_slice(entry.body.as_bytes());
            }
            (tags, bodies, ranges)
        })
        .collect();
    let per_entry = |time: Duration| time.as_nanos() as f64 / (sample_blocks * BLOCK_ENTRIES) as f64;
    let tags_ns = per_entry(time_per(1, 7, || {
        for (tags, _, _) in &blocks {
            let mut terms = BlockTerms::new();
            for entry_tags in tags {
                terms.add_entry(entry_tags.iter().copied());
            }
            black_box(&terms);
        }
    }));
    let words_ns = per_entry(time_per(1, 7, || {
        for (_, bodies, ranges) in &blocks {
            let mut terms = BlockTerms::with_words();
            for &(start, end) in ranges {
                terms.add_body(&bodies[start..end]);
            }
            black_box(&terms);
        }
    }));
    let tokenize_ns = per_entry(time_per(1, 7, || {
        for (_, bodies, ranges) in &blocks {
            let mut sum = 0_u64;
            for &(start, end) in ranges {
                for_each_filtered_word_hash(&bodies[start..end], |hash| sum ^= hash);
            }
            black_box(sum);
        }
    }));
    let read_ns = per_entry(time_per(1, 7, || {
        for (_, bodies, ranges) in &blocks {
            let mut sum = 0_u64;
            for &(start, end) in ranges {
                sum = bodies[start..end]
                    .iter()
                    .fold(sum, |sum, &byte| sum.wrapping_mul(31).wrapping_add(u64::from(byte)));
            }
            black_box(sum);
        }
    }));
    let body_bytes: usize = blocks.iter().map(|(_, bodies, _)| bodies.len()).sum();
    println!(
        "write path per entry: tags -> sets {tags_ns:.0} ns, body -> filter {words_ns:.0} ns (of which tokenize + hash {tokenize_ns:.0} ns; a byte-by-byte multiply-add over the body takes {read_ns:.0} ns), mean body {} bytes",
        body_bytes / (sample_blocks * BLOCK_ENTRIES)
    );

    // The whole segment, timing the block closes.
    let mut index = SegmentIndex::new(1);
    let mut push_time = Duration::ZERO;
    let mut block_terms_time = Duration::ZERO;
    let mut exact_words = Vec::new();
    let mut estimated_words = Vec::new();
    for block in 0..block_count {
        let start = Instant::now();
        let mut terms = BlockTerms::with_words();
        for row in 0..BLOCK_ENTRIES {
            let entry = entry_at(block, row);
            terms.add_entry(entry.tags.iter().copied());
            terms.add_body(entry.body.as_bytes());
        }
        block_terms_time += start.elapsed();
        if block % 43 == 0 {
            let distinct: HashSet<Vec<u8>> = (0..BLOCK_ENTRIES)
                .flat_map(|row| {
                    words(entry_at(block, row).body.as_bytes())
                        .filter(|word| word.len() >= FILTERED_WORD_BYTES_MIN)
                        .map(|word| word.to_ascii_lowercase())
                })
                .collect();
            exact_words.push(distinct.len());
            estimated_words.push(estimate_of(terms.words().unwrap()));
        }
        let meta = BlockMeta {
            offset: index.data_end(),
            len: 100_000,
            first_seq: index.next_seq(),
            entry_count: BLOCK_ENTRIES as u32,
            min_ts: block as i64 * 1000,
            max_ts: block as i64 * 1000 + 999,
            origin: None,
        };
        let start = Instant::now();
        index.push_block_terms(meta, &terms);
        push_time += start.elapsed();
    }
    let entries = (block_count * BLOCK_ENTRIES) as f64;
    println!(
        "segment build: BlockTerms {:.0} ns/entry, push_block_terms {:.0} ns/entry ({:.2} ms per block close); {} tag sets, {} pairs, sets saturated: {:?}; live index ~{} MiB",
        block_terms_time.as_nanos() as f64 / entries,
        push_time.as_nanos() as f64 / entries,
        push_time.as_secs_f64() * 1000.0 / block_count as f64,
        index.tag_sets(),
        index.tag_values(),
        index.tag_sets_saturated_from(),
        index.memory_bytes() >> 20,
    );
    let exact_mean = exact_words.iter().sum::<usize>() as f64 / exact_words.len() as f64;
    let estimated_mean = estimated_words.iter().sum::<f64>() / estimated_words.len() as f64;
    println!("distinct words per block: exact {exact_mean:.0}, estimated from the filter {estimated_mean:.0}");

    // ---- the file ----
    let start = Instant::now();
    let bytes = index.encode(0);
    let encode_time = start.elapsed();
    let summary = decode_summary(&bytes).unwrap();
    let header_and_body = summary.filters_offset() as usize;
    let block_table = block_count * 56;
    let terms: usize = (0..3)
        .flat_map(|tag| (0..TAG_VALUES).map(move |value| (tag, value)))
        .filter_map(|(tag, value)| {
            let (key, value) = (format!("t{tag}"), format!("v{value}"));
            let postings = index.postings(&key, &value)?;
            let mut previous = None;
            let varints: usize = postings
                .iter()
                .map(|&position| {
                    let delta = previous.map_or(position, |previous| position - previous);
                    previous = Some(position);
                    (32 - delta.leading_zeros() as usize).div_ceil(7).max(1)
                })
                .sum();
            Some(2 + key.len() + 2 + value.len() + 4 + varints)
        })
        .sum();
    let sets = summary.body_bytes as usize - block_table - terms - 32 * summary.origin_count as usize;
    println!(
        "index file: {:.2} MiB = header+body {:.2} MiB (block table {:.2}, pair terms {:.2}, tag sets {:.2}) + filters {:.2} MiB ({:.0} bytes per block); encode {:.0} ms",
        bytes.len() as f64 / 1048576.0,
        header_and_body as f64 / 1048576.0,
        block_table as f64 / 1048576.0,
        terms as f64 / 1048576.0,
        sets as f64 / 1048576.0,
        summary.filters_bytes as f64 / 1048576.0,
        summary.filters_bytes as f64 / block_count as f64,
        encode_time.as_secs_f64() * 1000.0,
    );

    // ---- loading ----
    let load = time_per(1, 5, || {
        black_box(SegmentIndex::decode_without_filters(&bytes[..header_and_body]).unwrap());
    });
    let decoded = SegmentIndex::decode_without_filters(&bytes[..header_and_body]).unwrap();
    let load_filters = median(
        (0..5)
            .map(|_| {
                let fresh = decoded.clone();
                let start = Instant::now();
                fresh.load_filters(&summary, &bytes[header_and_body..]).unwrap();
                let elapsed = start.elapsed();
                black_box(fresh);
                elapsed
            })
            .collect(),
    );
    decoded.load_filters(&summary, &bytes[header_and_body..]).unwrap();
    println!(
        "load: decode_without_filters {:.1} ms ({} MiB in memory), load_filters {:.1} ms (+{} MiB)",
        load.as_secs_f64() * 1000.0,
        SegmentIndex::decode_without_filters(&bytes[..header_and_body]).unwrap().memory_bytes() >> 20,
        load_filters.as_secs_f64() * 1000.0,
        summary.filters_bytes >> 20,
    );

    // ---- queries ----
    let in_pool: HashSet<[&str; 3]> = pool.iter().map(|entry| entry.tags.map(|(_, value)| value)).collect();
    let mut absent = None;
    let mut present = None;
    'search: for a in 0..TAG_VALUES {
        for b in 0..TAG_VALUES {
            let c = (a * 7 + b * 13) % TAG_VALUES;
            let values = [format!("v{a}"), format!("v{b}"), format!("v{c}")];
            let key = [values[0].as_str(), values[1].as_str(), values[2].as_str()];
            match in_pool.contains(&key) {
                false if absent.is_none() => absent = Some(values),
                true if present.is_none() => present = Some(values),
                _ => {}
            }
            if absent.is_some() && present.is_some() {
                break 'search;
            }
        }
    }
    let (absent, present) = (absent.unwrap(), present.unwrap());
    let conjunction =
        |values: &[String; 3]| [("t0", values[0].clone()), ("t1", values[1].clone()), ("t2", values[2].clone())];
    let rare = word_hash(b"zq_not_in_loghub_19");
    for (name, index) in [("decoded", &decoded), ("live", &index)] {
        for (query, tags, words) in [
            ("3 tags, no set", conjunction(&absent).to_vec(), vec![]),
            ("3 tags, a set", conjunction(&present).to_vec(), vec![]),
            ("1 tag", vec![("t1", "v42".to_string())], vec![]),
            ("absent word", vec![], vec![rare]),
        ] {
            let tags: Vec<(&str, &str)> = tags.iter().map(|(key, value)| (*key, value.as_str())).collect();
            let predicates = Predicates { tags: &tags, words: &words, from_ts: i64::MIN, to_ts: i64::MAX };
            let found = index.candidates_for(&predicates).len();
            let time = time_per(20, 5, || {
                black_box(index.candidates_for(&predicates));
            });
            println!("candidates_for {name} {query}: {found} blocks, {:.1} µs per segment", time.as_secs_f64() * 1e6);
        }
    }

    // ---- word filter false positives against size ----
    let filters = decoded.word_filters().unwrap();
    let mut vocabulary: HashSet<Vec<u8>> = HashSet::new();
    for entry in &pool {
        vocabulary.extend(words(entry.body.as_bytes()).map(|word| word.to_ascii_lowercase()));
    }
    let probes: Vec<u64> = (0..2_000)
        .map(|index| format!("absent{index}q"))
        .filter(|word| !vocabulary.contains(word.as_bytes()))
        .map(|word| word_hash(word.as_bytes()))
        .collect();
    let checked_blocks = block_count.min(1_000) as u32;
    let hits: usize = probes
        .iter()
        .map(|&hash| (0..checked_blocks).filter(|&block| filters.may_contain_all(block, &[hash])).count())
        .sum();
    println!(
        "word filter ({} bits/word target, {} probes): false positives {:.3} % of blocks, {:.0} bytes per block",
        word_filter::BITS_PER_WORD,
        word_filter::PROBES,
        hits as f64 * 100.0 / (probes.len() as f64 * f64::from(checked_blocks)),
        summary.filters_bytes as f64 / block_count as f64,
    );
    // The sweep: exact Bloom filters of each block's distinct words at a
    // given size and probe count (the rate a folded filter approaches).
    let sweep_blocks = 40.min(block_count);
    for bits_per_word in [6_usize, 8, 10, 12, 16] {
        let mut line = format!("sweep {bits_per_word:>2} bits/word:");
        for k in [3_u32, 4, 5, 6, 7, 8] {
            let (mut hits, mut tests, mut bytes) = (0_usize, 0_usize, 0_usize);
            for block in 0..sweep_blocks {
                let distinct: HashSet<u64> = (0..BLOCK_ENTRIES)
                    .flat_map(|row| {
                        let mut hashes = Vec::new();
                        for_each_filtered_word_hash(entry_at(block * 43 % block_count, row).body.as_bytes(), |hash| {
                            hashes.push(hash)
                        });
                        hashes
                    })
                    .collect();
                let bits_len = (distinct.len() * bits_per_word).next_power_of_two().max(64);
                let mut bits = vec![0_u64; bits_len / 64];
                for &hash in &distinct {
                    word_filter::add_probes(&mut bits, hash, k);
                }
                bytes += bits_len / 8;
                for &hash in &probes {
                    tests += 1;
                    if word_filter::may_contain_probes(&bits, hash, k) {
                        hits += 1;
                    }
                }
            }
            line += &format!(" k={k} {:.2}%", hits as f64 * 100.0 / tests as f64);
            if k == 8 {
                line += &format!(" ({:.0} bytes/block, power-of-two sizes)", bytes as f64 / sweep_blocks as f64);
            }
        }
        println!("{line}");
    }
    support::print_load_at_end();
}

/// Distinct words estimated from the builder's fill, as `finish` does.
fn estimate_of(builder: &WordFilterBuilder) -> f64 {
    // Asking for more bits per word than the builder has keeps it unfolded.
    let full = builder.finish_with(usize::MAX / 1024);
    let set: u32 = full.words().iter().map(|word| word.count_ones()).sum();
    word_filter::estimate_words(set as usize, full.bytes() * 8)
}
