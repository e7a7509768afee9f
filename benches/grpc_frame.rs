//! gRPC message framing (`grpc::frame::Decoder`) on one core, with no
//! executor and no socket: the bytes h2 hands up as DATA chunks are pushed
//! and every message is taken out, as the replication and ingest services do.
//!
//! Messages are real protobuf: `PushBatch` and `LogEntry` messages built from
//! LogHub samples (<https://github.com/logpai/loghub>), interleaved line by
//! line, 3 tags per entry (see `support::loghub_entries`).
//!
//! - `push_batch_16k` / `push_batch_256k`: a stream of [`BATCH_COUNT`]
//!   `PushBatch` messages of about 1 MiB each (a follower's push), cut into
//!   16 KiB chunks (h2's default `SETTINGS_MAX_FRAME_SIZE`) or 256 KiB
//!   chunks (larger frames, or several frames read at once). Each message
//!   spans chunks, so the decoder copies it once into a buffer of its size.
//! - `small_16k`: [`SMALL_COUNT`] messages of one `LogEntry` each (a few
//!   hundred bytes), cut into 16 KiB chunks: many messages per chunk,
//!   mostly returned zero-copy, where per-message overhead dominates.
//!
//! Chunks are `Bytes` slices of one stream buffer, so cutting costs nothing
//! in the loop; each push clones a `Bytes` (a reference count), as h2's
//! `RecvStream` hands out owned `Bytes`. Throughput is in stream bytes
//! (prefixes included); the summary also gives messages per second.
//!
//! Run with `cargo bench --bench grpc_frame`; `WORMDB_BENCH_QUICK=1` takes
//! fewer, shorter samples.
#![allow(clippy::unwrap_used)]

mod support;

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::Throughput;
use prost::Message;
use support::{Samples, Settings};
use wormdb::grpc::frame::{self, Decoder};
use wormdb::limits;
use wormdb::proto::{LogEntry, PushBatch};
use wormdb::shard::EntryRef;

/// Encoded size a `PushBatch` grows to before it is closed.
const BATCH_BYTES_TARGET: usize = 1024 * 1024;
/// `PushBatch` messages per stream.
const BATCH_COUNT: usize = 8;
/// Single-entry messages per stream.
const SMALL_COUNT: usize = 8192;

/// One stream of messages, cut into chunks.
struct Workload {
    name: &'static str,
    chunks: Vec<Bytes>,
    stream_bytes: usize,
    message_count: usize,
    chunk_bytes: usize,
}

fn log_entry(seq: u64, entry: &EntryRef<'_>) -> LogEntry {
    LogEntry {
        fields: Default::default(),
        seq,
        timestamp_ns: entry.timestamp_ns,
        tags: entry.tags.iter().map(|&(key, value)| (key.to_string(), value.to_string())).collect(),
        body: Bytes::copy_from_slice(entry.body),
        node_id: 2,
        shard: 0,
    }
}

/// `BATCH_COUNT` framed `PushBatch` messages of about `BATCH_BYTES_TARGET`
/// bytes, taking entries from the corpus in order (wrapping around).
fn push_batch_stream(corpus: &[EntryRef<'_>]) -> Bytes {
    let mut stream = BytesMut::new();
    let mut seq = 1;
    for _ in 0..BATCH_COUNT {
        let mut batch = PushBatch { durable_seq: 0, follower_id: 2, shard: 0, entries: Vec::new(), blocks: Vec::new() };
        let mut encoded = 0;
        while encoded < BATCH_BYTES_TARGET {
            let entry = log_entry(seq, &corpus[(seq as usize - 1) % corpus.len()]);
            encoded += prost::length_delimiter_len(entry.encoded_len()) + 1 + entry.encoded_len();
            batch.entries.push(entry);
            seq += 1;
        }
        frame::encode_message(&batch, &mut stream);
    }
    stream.freeze()
}

/// `SMALL_COUNT` framed single-entry messages.
fn small_stream(corpus: &[EntryRef<'_>]) -> Bytes {
    let mut stream = BytesMut::new();
    for seq in 1..=SMALL_COUNT as u64 {
        frame::encode_message(&log_entry(seq, &corpus[(seq as usize - 1) % corpus.len()]), &mut stream);
    }
    stream.freeze()
}

fn cut(stream: &Bytes, chunk_bytes: usize) -> Vec<Bytes> {
    (0..stream.len())
        .step_by(chunk_bytes)
        .map(|start| stream.slice(start..stream.len().min(start + chunk_bytes)))
        .collect()
}

/// Pushes every chunk and drains the decoder after each, as the services
/// do; returns the number of messages and their total length.
fn decode_all(chunks: &[Bytes]) -> (usize, usize) {
    let mut decoder = Decoder::new(limits::MESSAGE_BYTES_MAX);
    let mut messages = 0;
    let mut message_bytes = 0;
    for chunk in chunks {
        decoder.push(chunk.clone());
        while let Some(message) = decoder.next_message().unwrap() {
            messages += 1;
            message_bytes += message.len();
            black_box(message);
        }
    }
    decoder.finish().unwrap();
    (messages, message_bytes)
}

fn main() {
    let settings = Settings::from_env();
    let corpus = support::loghub_entries();
    let batches = push_batch_stream(&corpus);
    let small = small_stream(&corpus);
    let workloads: Vec<Workload> = [
        ("push_batch_16k", &batches, BATCH_COUNT, 16 * 1024),
        ("push_batch_256k", &batches, BATCH_COUNT, 256 * 1024),
        ("small_16k", &small, SMALL_COUNT, 16 * 1024),
    ]
    .into_iter()
    .map(|(name, stream, message_count, chunk_bytes)| Workload {
        name,
        chunks: cut(stream, chunk_bytes),
        stream_bytes: stream.len(),
        message_count,
        chunk_bytes,
    })
    .collect();
    for workload in &workloads {
        let (messages, message_bytes) = decode_all(&workload.chunks);
        assert_eq!(messages, workload.message_count, "{}: every message comes out", workload.name);
        assert_eq!(message_bytes + messages * frame::PREFIX_BYTES, workload.stream_bytes, "{}", workload.name);
    }

    support::print_machine("grpc_frame");
    println!(
        "data: LogHub *_2k.log (8 files, https://github.com/logpai/loghub; {}) as LogEntry messages, 3 tags per entry",
        support::common::loghub::describe()
    );
    for workload in &workloads {
        println!(
            "{:<16} {} messages of {:.0} B on average in {} chunks of {} KiB ({} stream bytes per iteration)",
            workload.name,
            workload.message_count,
            workload.stream_bytes as f64 / workload.message_count as f64,
            workload.chunks.len(),
            workload.chunk_bytes / 1024,
            workload.stream_bytes
        );
    }
    println!("{}; throughput in stream bytes (prefixes included)", settings.describe());
    println!();

    let mut criterion = settings.criterion();
    let samples: Vec<Samples> = workloads.iter().map(|_| Samples::default()).collect();
    {
        let mut group = criterion.benchmark_group("grpc_frame");
        for (workload, samples) in workloads.iter().zip(&samples) {
            group.throughput(Throughput::Bytes(workload.stream_bytes as u64));
            group.bench_function(workload.name, |bencher| {
                bencher.iter_custom(|iterations| {
                    samples.time(iterations, || {
                        black_box(decode_all(black_box(&workload.chunks)));
                    })
                })
            });
        }
        group.finish();
    }
    criterion.final_summary();

    println!();
    println!(
        "== grpc_frame: summary (median of criterion's last {} samples; MB = 10^6 bytes) ==",
        settings.sample_size
    );
    for (workload, samples) in workloads.iter().zip(&samples) {
        let (Some(bytes), Some(messages)) = (
            samples.rates(workload.stream_bytes as f64, settings.sample_size),
            samples.rates(workload.message_count as f64, settings.sample_size),
        ) else {
            println!("{:<16} not measured (filtered out or test mode)", workload.name);
            continue;
        };
        println!("{:<16} {}  = {:.0} messages/s", workload.name, bytes.describe(1e6, "MB/s"), messages.median);
    }
    support::print_load_at_end();
}
