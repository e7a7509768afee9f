//! Segment index build and query on one core, with no executor and no disk.
//!
//! The segment is built from LogHub samples (<https://github.com/logpai/loghub>)
//! as agents ship them: each batch of 1000 entries comes from one of 100
//! agents (`host` = `node-000` .. `node-099`), each agent ships one of the
//! eight samples (`source`), and every entry carries 3 tags (`source`,
//! `host`, and a `level` guessed from its line). Batches arrive in a
//! scrambled agent order, 1 µs apart per entry, and are cut into blocks of
//! `limits::BLOCK_RAW_BYTES_TARGET` raw bytes as the shard cuts them, up to
//! [`BLOCK_COUNT`] blocks (a quarter of a default 256 MiB segment's raw
//! bytes; the LZ4 ratio of these samples makes a full segment hold more).
//!
//! Measured:
//!
//! - `build_all_tags`: `SegmentIndex::push_block` for every block with every
//!   tag of every entry, as recovery rebuilds an index from a segment scan;
//!   entries per second.
//! - `build_block_tags`: the same with each block's distinct tags only, as
//!   the shard's writer feeds it (it deduplicates while it gathers a block,
//!   outside this measurement); blocks per second.
//! - `encode` / `decode`: the index file written when a segment is sealed
//!   and read back when a query first needs it; index file bytes per second.
//! - `query/*`: `SegmentIndex::candidates`, queries per second, for a
//!   selective tag (one host), two and three tags, a common tag within 10 %
//!   of the time range, a time range alone (1 %), and a pair that is absent.
//!
//! Run with `cargo bench --bench index`; `WORMDB_BENCH_QUICK=1` takes fewer,
//! shorter samples. Criterion's numbers come first, then a summary (the
//! median of criterion's own samples).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::Throughput;
use support::{BlockInput, Samples, Settings, SOURCES};
use wormdb::index::{BlockMeta, SegmentIndex};
use wormdb::shard::EntryRef;

/// Blocks in the measured segment.
const BLOCK_COUNT: usize = 256;
/// Distinct agents, so distinct `host` values (the loadgen's `--tags 3:100`).
const AGENT_COUNT: usize = 100;
/// Entries per agent batch (one ingest request).
const BATCH_ENTRIES: usize = 1000;
/// Steps through the agents in a scrambled order (coprime with AGENT_COUNT).
const AGENT_STRIDE: usize = 37;

/// Entries of agent batches until `BLOCK_COUNT` full blocks can be cut.
fn agent_entries() -> Vec<EntryRef<'static>> {
    let per_source: Vec<Vec<&'static str>> = SOURCES
        .iter()
        .map(|&source| support::loghub_lines(source).into_iter().map(|line| &*line.leak()).collect())
        .collect();
    let hosts: Vec<&'static str> = (0..AGENT_COUNT).map(|agent| &*format!("node-{agent:03}").leak()).collect();
    // One leaked tag array per (agent, level), shared by that agent's entries.
    let levels = ["info", "warn", "error"];
    let tag_sets: Vec<[&'static [(&'static str, &'static str)]; 3]> = (0..AGENT_COUNT)
        .map(|agent| {
            levels.map(|level| {
                &*Vec::leak(vec![("source", SOURCES[agent % SOURCES.len()]), ("level", level), ("host", hosts[agent])])
            })
        })
        .collect();

    let mut entries = Vec::new();
    let mut raw_bytes = 0;
    // A few blocks' worth past the target: the size estimate below is rough.
    let raw_target = (BLOCK_COUNT + 8) * wormdb::limits::BLOCK_RAW_BYTES_TARGET;
    let mut batch = 0;
    while raw_bytes < raw_target {
        let agent = (batch * AGENT_STRIDE + 11) % AGENT_COUNT;
        let lines = &per_source[agent % SOURCES.len()];
        for row in 0..BATCH_ENTRIES {
            let line = lines[(batch * BATCH_ENTRIES + row) % lines.len()];
            let level = support::level_of(line);
            let tags = tag_sets[agent][levels.iter().position(|&known| known == level).unwrap()];
            let index = entries.len() as i64;
            let timestamp_ns = support::BASE_TIMESTAMP_NS + index * support::ENTRY_INTERVAL_NS;
            entries.push(EntryRef { fields: &[], timestamp_ns, tags, body: line.as_bytes() });
            // Close to the encoded size; cut_blocks measures exactly.
            raw_bytes += line.len() + 48;
        }
        batch += 1;
    }
    entries
}

/// The block table entry of a block; `len` stands in for its stored size
/// (the index never reads it beyond checking that blocks do not overlap).
fn meta_of(block: &BlockInput<'_>, offset: u64) -> BlockMeta {
    BlockMeta {
        offset,
        len: block.raw_bytes as u32,
        first_seq: block.first_seq,
        entry_count: block.entries.len() as u32,
        min_ts: block.entries.iter().map(|entry| entry.timestamp_ns).min().unwrap(),
        max_ts: block.entries.iter().map(|entry| entry.timestamp_ns).max().unwrap(),
        origin: None,
    }
}

/// Builds the index from every tag of every entry (the recovery path).
fn build_all_tags(blocks: &[BlockInput<'_>], metas: &[BlockMeta]) -> SegmentIndex {
    let mut index = SegmentIndex::new(1);
    for (block, meta) in blocks.iter().zip(metas) {
        index.push_block(*meta, block.entries.iter().flat_map(|entry| entry.tags.iter().copied()));
    }
    index
}

/// Builds the index from each block's distinct tags (the writer path).
fn build_block_tags(block_tags: &[Vec<(&str, &str)>], metas: &[BlockMeta]) -> SegmentIndex {
    let mut index = SegmentIndex::new(1);
    for (tags, meta) in block_tags.iter().zip(metas) {
        index.push_block(*meta, tags.iter().copied());
    }
    index
}

/// One query of the `query` group.
struct Query {
    name: &'static str,
    tags: Vec<(&'static str, &'static str)>,
    from_ts: i64,
    to_ts: i64,
}

fn main() {
    let settings = Settings::from_env();
    let entries = agent_entries();
    let mut blocks = support::cut_blocks(&entries);
    blocks.truncate(BLOCK_COUNT);
    assert_eq!(blocks.len(), BLOCK_COUNT, "the corpus fills BLOCK_COUNT blocks");
    let mut offset = 0;
    let metas: Vec<BlockMeta> = blocks
        .iter()
        .map(|block| {
            let meta = meta_of(block, offset);
            offset = meta.end_offset();
            meta
        })
        .collect();
    let block_tags: Vec<Vec<(&str, &str)>> = blocks
        .iter()
        .map(|block| {
            let distinct: BTreeSet<(&str, &str)> =
                block.entries.iter().flat_map(|entry| entry.tags.iter().copied()).collect();
            distinct.into_iter().collect()
        })
        .collect();
    let entry_count: usize = blocks.iter().map(|block| block.entries.len()).sum();
    let raw_bytes: u64 = blocks.iter().map(|block| block.raw_bytes as u64).sum();
    let tag_count: usize = blocks.iter().flat_map(|block| block.entries).map(|entry| entry.tags.len()).sum();
    let distinct_per_block: usize = block_tags.iter().map(Vec::len).sum();

    let index = build_all_tags(&blocks, &metas);
    assert_eq!(index, build_block_tags(&block_tags, &metas), "both build paths give the same index");
    let file = index.encode(raw_bytes);
    assert_eq!(SegmentIndex::decode(&file).unwrap(), index, "the index file round-trips");

    let (first_ts, last_ts) = index.time_range().unwrap();
    let span = last_ts - first_ts + 1;
    let window = |start_percent: i64, width_percent: i64| {
        let from_ts = first_ts + span * start_percent / 100;
        (from_ts, from_ts + span * width_percent / 100)
    };
    let (level_from, level_to) = window(45, 10);
    let (time_from, time_to) = window(50, 1);
    let everything = (i64::MIN, i64::MAX);
    let queries = [
        Query { name: "host", tags: vec![("host", "node-042")], from_ts: everything.0, to_ts: everything.1 },
        Query {
            name: "source_level",
            tags: vec![("source", "HDFS"), ("level", "info")],
            from_ts: everything.0,
            to_ts: everything.1,
        },
        Query {
            name: "three_tags",
            tags: vec![("source", SOURCES[42 % SOURCES.len()]), ("level", "info"), ("host", "node-042")],
            from_ts: everything.0,
            to_ts: everything.1,
        },
        Query { name: "level_10pct_time", tags: vec![("level", "info")], from_ts: level_from, to_ts: level_to },
        Query { name: "time_1pct", tags: vec![], from_ts: time_from, to_ts: time_to },
        Query { name: "absent", tags: vec![("host", "node-999")], from_ts: everything.0, to_ts: everything.1 },
    ];

    support::print_machine("index");
    println!(
        "data: LogHub *_2k.log (8 files, https://github.com/logpai/loghub; {}) shipped by {AGENT_COUNT} agents in \
         batches of {BATCH_ENTRIES}; 3 tags per entry (source, level, host)",
        support::common::loghub::describe()
    );
    println!(
        "segment: {BLOCK_COUNT} blocks, {entry_count} entries ({:.0} per block), {:.1} MiB raw; {} tags pushed \
         (all), {} (distinct per block, {:.1} per block); {} distinct pairs indexed",
        entry_count as f64 / BLOCK_COUNT as f64,
        raw_bytes as f64 / (1024.0 * 1024.0),
        tag_count,
        distinct_per_block,
        distinct_per_block as f64 / BLOCK_COUNT as f64,
        index.tag_values()
    );
    println!("index file: {} bytes; in memory about {} bytes", file.len(), index.memory_bytes());
    for query in &queries {
        let candidates = index.candidates(&query.tags, query.from_ts, query.to_ts);
        println!("query {:<18} {:?}: {} candidate blocks of {BLOCK_COUNT}", query.name, query.tags, candidates.len());
    }
    println!("{}", settings.describe());
    println!();

    let mut criterion = settings.criterion();
    let build_all_samples = Samples::default();
    let build_block_samples = Samples::default();
    let encode_samples = Samples::default();
    let decode_samples = Samples::default();
    let query_samples: Vec<Samples> = queries.iter().map(|_| Samples::default()).collect();
    {
        let mut group = criterion.benchmark_group("index");
        // One build takes tens of milliseconds: fewer, flat samples.
        group.sample_size(settings.sample_size.min(20)).sampling_mode(criterion::SamplingMode::Flat);
        group.throughput(Throughput::Elements(entry_count as u64));
        group.bench_function("build_all_tags", |bencher| {
            bencher.iter_custom(|iterations| {
                build_all_samples.time(iterations, || {
                    black_box(build_all_tags(black_box(&blocks), &metas));
                })
            })
        });
        // Its cost is per block and per distinct pair, not per entry.
        group.throughput(Throughput::Elements(BLOCK_COUNT as u64));
        group.bench_function("build_block_tags", |bencher| {
            bencher.iter_custom(|iterations| {
                build_block_samples.time(iterations, || {
                    black_box(build_block_tags(black_box(&block_tags), &metas));
                })
            })
        });
        group.throughput(Throughput::Bytes(file.len() as u64));
        group.bench_function("encode", |bencher| {
            bencher.iter_custom(|iterations| {
                encode_samples.time(iterations, || {
                    black_box(black_box(&index).encode(raw_bytes));
                })
            })
        });
        group.bench_function("decode", |bencher| {
            bencher.iter_custom(|iterations| {
                decode_samples.time(iterations, || {
                    black_box(SegmentIndex::decode(black_box(&file)).unwrap());
                })
            })
        });
        group.finish();
    }
    {
        let mut group = criterion.benchmark_group("index/query");
        group.throughput(Throughput::Elements(1));
        for (query, samples) in queries.iter().zip(&query_samples) {
            group.bench_function(query.name, |bencher| {
                bencher.iter_custom(|iterations| {
                    samples.time(iterations, || {
                        black_box(black_box(&index).candidates(black_box(&query.tags), query.from_ts, query.to_ts));
                    })
                })
            });
        }
        group.finish();
    }
    criterion.final_summary();

    println!();
    println!("== index: summary (median of criterion's last samples) ==");
    let build_count = settings.sample_size.min(20);
    match build_all_samples.rates(entry_count as f64, build_count) {
        Some(rates) => println!(
            "{:<28} {}  = {:.0} blocks/s",
            "build_all_tags",
            rates.describe(1e6, "M entries/s"),
            rates.median * BLOCK_COUNT as f64 / entry_count as f64
        ),
        None => println!("{:<28} not measured (filtered out or test mode)", "build_all_tags"),
    }
    match build_block_samples.rates(BLOCK_COUNT as f64, build_count) {
        Some(rates) => println!(
            "{:<28} {}  = {:.2} µs per block of {:.0} entries",
            "build_block_tags",
            rates.describe(1e3, "k blocks/s"),
            1e6 / rates.median,
            entry_count as f64 / BLOCK_COUNT as f64
        ),
        None => println!("{:<28} not measured (filtered out or test mode)", "build_block_tags"),
    }
    for (name, samples) in [("encode (index file)", &encode_samples), ("decode (index file)", &decode_samples)] {
        match samples.rates(file.len() as f64, build_count) {
            Some(rates) => println!(
                "{name:<28} {}  = {:.2} ms per {BLOCK_COUNT}-block index",
                rates.describe(1e6, "MB/s"),
                1e3 * file.len() as f64 / rates.median
            ),
            None => println!("{name:<28} not measured (filtered out or test mode)"),
        }
    }
    for (query, samples) in queries.iter().zip(&query_samples) {
        let name = format!("query/{}", query.name);
        match samples.rates(1.0, settings.sample_size) {
            Some(rates) => {
                println!("{name:<28} {}  = {:.2} µs per query", rates.describe(1e3, "k queries/s"), 1e6 / rates.median)
            }
            None => println!("{name:<28} not measured (filtered out or test mode)"),
        }
    }
    support::print_load_at_end();
}
