//! Syslog ingest parsing (`ingest::syslog`) on one core, with no executor
//! and no socket: the CPU work of the TCP listener between a read and
//! `Shard::append`, per line. The goal of issue 18 is a million lines a
//! second on two shards, so half of that per core, socket and shard
//! included.
//!
//! Streams of [`LINES`] LogHub lines (<https://github.com/logpai/loghub>),
//! interleaved across the eight samples, each line the MSG of a message:
//!
//! - `rfc5424_lf`: `<PRI>1 TIMESTAMP HOST APP PROCID - - LINE`, LF-framed;
//! - `rfc5424_sd_octet`: the same with one structured-data element of two
//!   parameters (`[loghub@32473 source="..." shard="..."]`), octet-counted;
//! - `rfc3164_lf`: `<PRI>Mmm dd hh:mm:ss HOST APP[PID]: LINE`, LF-framed.
//!
//! Measured: `frame_parse` (the framer fed in [`SYSLOG_READ_BYTES`] reads,
//! every frame parsed into a `Message`) and `frame_parse_refs` (plus
//! `with_entry_refs` per read, which builds what `Shard::append` takes: the
//! listener's whole CPU path before the shard). Throughput in lines.
//!
//! Run with `cargo bench --bench syslog`; `WORMDB_BENCH_QUICK=1` takes fewer,
//! shorter samples.
#![allow(clippy::unwrap_used)]

mod support;

use std::hint::black_box;

use criterion::Throughput;
use support::{Samples, Settings};
use wormdb::ingest::syslog::{self, Frame, Options, TcpFramer};
use wormdb::limits::SYSLOG_READ_BYTES;

/// Lines per stream.
const LINES: usize = 4000;
/// The time the streams are parsed at (2026-12-06T12:00:00Z).
const NOW_NS: i64 = 1_796_558_400_000_000_000;

fn streams() -> Vec<(&'static str, Vec<u8>)> {
    let lines = support::interleaved_lines();
    let lines: Vec<_> = lines.iter().cycle().take(LINES).collect();
    let mut lf5424 = Vec::new();
    let mut octet5424 = Vec::new();
    let mut lf3164 = Vec::new();
    for (index, (source, line)) in lines.iter().enumerate() {
        let host = format!("host-{:02}", index % support::HOST_COUNT);
        let priority = 16 * 8 + 6 - (index % 3);
        let (second, micros) = (index / 1000, index % 1000 * 997);
        let message = format!(
            "<{priority}>1 2026-12-06T11:{:02}:{:02}.{micros:06}Z {host} {source} {} - - {line}",
            second / 60 % 60,
            second % 60,
            1000 + index % 50
        );
        lf5424.extend_from_slice(message.as_bytes());
        lf5424.push(b'\n');
        let message = format!("<{priority}>1 2026-12-06T11:{:02}:{:02}.{micros:06}Z {host} {source} {} - [loghub@32473 source=\"{source}\" shard=\"{}\"] {line}", second / 60 % 60, second % 60, 1000 + index % 50, index % 2);
        octet5424.extend_from_slice(format!("{} {message}", message.len()).as_bytes());
        let message = format!(
            "<{priority}>Dec  6 11:{:02}:{:02} {host} {source}[{}]: {line}\n",
            second / 60 % 60,
            second % 60,
            1000 + index % 50
        );
        lf3164.extend_from_slice(message.as_bytes());
    }
    vec![("rfc5424_lf", lf5424), ("rfc5424_sd_octet", octet5424), ("rfc3164_lf", lf3164)]
}

/// Feeds `stream` read by read, as the listener does; calls `batch` with
/// each read's messages; returns the lines.
fn run(stream: &[u8], mut batch: impl FnMut(&[syslog::Message<'_>])) -> usize {
    let options = Options::default();
    let mut framer = TcpFramer::default();
    let mut ranges = Vec::new();
    let mut lines = 0;
    for read in stream.chunks(SYSLOG_READ_BYTES) {
        let spare = framer.spare();
        spare[..read.len()].copy_from_slice(read);
        framer.filled(read.len());
        ranges.clear();
        while let Some(frame) = framer.next_frame().unwrap() {
            if let Frame::Message(range) = frame {
                ranges.push(range);
            }
        }
        let bytes = framer.bytes();
        let messages: Vec<_> = ranges
            .iter()
            .map(|range| syslog::parse(syslog::trim_line_end(&bytes[range.clone()]), NOW_NS, &options))
            .collect();
        lines += messages.len();
        batch(&messages);
    }
    lines
}

fn main() {
    let settings = Settings::from_env();
    let streams = streams();
    for (name, stream) in &streams {
        let mut parsed = 0;
        run(stream, |messages| {
            assert!(messages.iter().all(|message| message.format != syslog::Format::Unparsed), "{name}");
            parsed += messages.len();
        });
        assert_eq!(parsed, LINES, "{name} parses whole");
    }

    support::print_machine("syslog");
    for (name, stream) in &streams {
        println!(
            "{name:<18} {LINES} lines, {} bytes ({:.0} B per message)",
            stream.len(),
            stream.len() as f64 / LINES as f64
        );
    }
    println!(
        "data: LogHub *_2k.log (8 files, https://github.com/logpai/loghub; {}); reads of {SYSLOG_READ_BYTES} bytes",
        support::common::loghub::describe()
    );
    println!("{}; throughput in lines", settings.describe());
    println!();

    let mut criterion = settings.criterion();
    let parse_samples: Vec<Samples> = streams.iter().map(|_| Samples::default()).collect();
    let refs_samples: Vec<Samples> = streams.iter().map(|_| Samples::default()).collect();
    {
        let mut group = criterion.benchmark_group("syslog");
        group.throughput(Throughput::Elements(LINES as u64));
        for (((name, stream), parse), refs) in streams.iter().zip(&parse_samples).zip(&refs_samples) {
            group.bench_function(format!("frame_parse/{name}"), |bencher| {
                bencher.iter_custom(|iterations| {
                    parse.time(iterations, || {
                        black_box(run(black_box(stream), |messages| {
                            black_box(messages.len());
                        }));
                    })
                })
            });
            group.bench_function(format!("frame_parse_refs/{name}"), |bencher| {
                bencher.iter_custom(|iterations| {
                    refs.time(iterations, || {
                        black_box(run(black_box(stream), |messages| {
                            black_box(syslog::with_entry_refs(messages, |refs| refs.len()));
                        }));
                    })
                })
            });
        }
        group.finish();
    }
    criterion.final_summary();

    println!();
    println!("== syslog: summary (median of criterion's last {} samples) ==", settings.sample_size);
    for (((name, _), parse), refs) in streams.iter().zip(&parse_samples).zip(&refs_samples) {
        for (what, samples) in [("frame_parse", parse), ("frame_parse_refs", refs)] {
            let label = format!("{what}/{name}");
            let Some(lines) = samples.rates(LINES as f64, settings.sample_size) else {
                println!("{label:<36} not measured (filtered out or test mode)");
                continue;
            };
            println!("{label:<36} {}", lines.describe(1e6, "M lines/s"));
        }
    }
    support::print_load_at_end();
}
