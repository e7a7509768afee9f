//! Throughput of the replication push path's gRPC layer between two cores,
//! over loopback TCP: a "follower" executor pinned to core 0 streams
//! `PushBatch` messages over `Replicate` to a "leader" executor pinned to
//! core 1, which parses every batch in place (`PushedBatch::parse`, as the
//! real leader does) and acks it at once, without storing anything. So this
//! measures h2, flow control, framing and batch parsing: the layer's
//! ceiling, which the end-to-end figure (`benches/replication/run.sh`:
//! storage, LZ4 and fdatasync on the leader) can only approach.
//!
//! Entries are ~290 B: 3 tags and a 256 B body cut from LogHub lines
//! (https://github.com/logpai/loghub), built as the follower builds batches
//! (`PushBatchWriter`, 4 MiB / at most 16,384 entries, 4 in flight).
//!
//! Run with `cargo bench --bench grpc_push` (DURATION_S, default 10;
//! `WORMDB_BENCH_QUICK=1` runs 2 s). Bounded in time.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use wormdb::codec::block::{encode_entry, read_varint};
use wormdb::grpc::status::Status;
use wormdb::grpc::transport::{self, Call, Channel, LocalFuture, Service};
use wormdb::limits::{
    PUSH_BATCHES_UNACKED_MAX as BATCHES_IN_FLIGHT_MAX, PUSH_BATCH_BYTES_TARGET as BATCH_BYTES_TARGET,
    PUSH_BATCH_ENTRIES_MAX as BATCH_ENTRIES_MAX,
};
use wormdb::proto::PushAck;
use wormdb::replication::batch::PushedBatch;
use wormdb::replication::follower::PushBatchWriter;
use wormdb::shard::EntryRef;

/// Acks every batch after parsing it; stores nothing.
struct Sink {
    entries: Arc<AtomicU64>,
}

impl Service for Sink {
    fn call<'a>(self: Rc<Self>, _path: &'a str, call: &'a mut Call) -> LocalFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            call.flush().await?;
            let mut acked = 0u64;
            while let Some(message) = call.messages.next_bytes().await? {
                let batch = PushedBatch::parse(message)?;
                acked = batch.seqs().last().unwrap_or(acked);
                self.entries.fetch_add(batch.len() as u64, Ordering::Relaxed);
                call.send(&PushAck {
                    shard: batch.shard,
                    acked_seq: acked,
                    written: batch.len() as u64,
                    duplicates: 0,
                })
                .await?;
                call.flush().await?;
            }
            Ok(())
        })
    }
}

/// Framed batches of ~290 B LogHub entries, with dense seqs per batch
/// position (the sink does not check continuity across batches).
fn batches() -> Vec<(Bytes, u64)> {
    let lines: Vec<String> =
        ["HDFS", "Spark", "Linux", "OpenSSH"].iter().flat_map(|name| common::loghub_lines(name)).collect();
    let levels = ["INFO", "WARN", "ERROR"];
    let mut out = Vec::new();
    let mut seq = 1u64;
    let mut line = 0usize;
    for _ in 0..8 {
        let mut writer = PushBatchWriter::new(2, 0, BATCH_BYTES_TARGET + 64 * 1024);
        let (mut bytes, mut count) = (0usize, 0u64);
        while bytes < BATCH_BYTES_TARGET && (count as usize) < BATCH_ENTRIES_MAX {
            let mut body = String::new();
            while body.len() < 256 {
                body.push_str(&lines[line % lines.len()]);
                body.push(' ');
                line += 1;
            }
            let mut cut = 256;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            let host = format!("host-{}", line % 16);
            let tags = [("service", "bench"), ("level", levels[line % 3]), ("host", host.as_str())];
            let mut stored = Vec::new();
            encode_entry(
                &EntryRef { fields: &[], timestamp_ns: 1, tags: &tags, body: body.as_bytes() },
                1_700_000_000_000_000_000,
                &mut stored,
            );
            let (_, prefix) = read_varint(&stored).unwrap();
            writer.push(seq, &stored[prefix..]);
            bytes += stored.len();
            count += 1;
            seq += 1;
        }
        out.push((writer.finish(), count));
    }
    out
}

fn main() {
    let quick = std::env::var_os("WORMDB_BENCH_QUICK").is_some_and(|value| value != "0")
        || !std::env::args().any(|argument| argument == "--bench");
    let seconds: u64 =
        std::env::var("DURATION_S").ok().and_then(|value| value.parse().ok()).unwrap_or(if quick { 2 } else { 10 });
    let duration = Duration::from_secs(seconds);
    wormdb::runtime::ensure_memlock(2 * wormdb::runtime::MEMLOCK_BYTES_PER_EXECUTOR).unwrap();
    let cores = std::thread::available_parallelism().map(|count| count.get()).unwrap_or(1);
    let received = Arc::new(AtomicU64::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server_cpu = Arc::new(AtomicU64::new(0));

    let server = {
        let received = received.clone();
        let server_cpu = server_cpu.clone();
        LocalExecutorBuilder::new(Placement::Fixed(1 % cores))
            .name("leader")
            .spawn(move || async move {
                use std::os::fd::IntoRawFd;
                listener.set_nonblocking(true).unwrap();
                // SAFETY: a listening socket this executor now owns.
                let listener = unsafe {
                    <glommio::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(listener.into_raw_fd())
                };
                let stream = listener.accept().await.unwrap();
                let options = Rc::new(transport::ServerOptions {
                    max_message_bytes: wormdb::limits::MESSAGE_BYTES_MAX,
                    closing: Rc::new(|| false),
                });
                let started = thread_cpu_us();
                let peer = wormdb::net::Peer::default();
                transport::serve_connection(stream, peer, Rc::new(Sink { entries: received }), options).await;
                server_cpu.store(thread_cpu_us() - started, Ordering::Relaxed);
            })
            .unwrap()
    };

    let client = LocalExecutorBuilder::new(Placement::Fixed(0))
        .name("follower")
        .spawn(move || async move {
            let batches = batches();
            let channel = Channel::connect(addr, Duration::from_secs(5)).await.unwrap();
            let (mut sender, mut receiver) =
                channel.start("/wormdb.v1.WormReplication/Replicate", None).await.unwrap().split();
            let in_flight = Rc::new(glommio::sync::Semaphore::new(BATCHES_IN_FLIGHT_MAX as u64));
            let cpu_before = thread_cpu_us();
            let started = Instant::now();
            let acks = {
                let in_flight = in_flight.clone();
                glommio::spawn_local(async move {
                    let mut acks = 0u64;
                    while let Ok(Some(_)) = receiver.next::<PushAck>().await {
                        acks += 1;
                        in_flight.signal(1);
                    }
                    acks
                })
                .detach()
            };
            let mut sent_entries = 0u64;
            let mut index = 0;
            while started.elapsed() < duration {
                in_flight.acquire(1).await.unwrap();
                let (framed, count) = &batches[index % batches.len()];
                sender.send_framed(framed.clone()).await.unwrap();
                sent_entries += count;
                index += 1;
            }
            in_flight.acquire(BATCHES_IN_FLIGHT_MAX as u64).await.unwrap();
            let seconds = started.elapsed().as_secs_f64();
            let cpu_us = thread_cpu_us() - cpu_before;
            sender.close_send().await.unwrap();
            let acks = acks.await.unwrap_or(0);
            drop(channel);
            (sent_entries, index as u64, acks, seconds, cpu_us, batches[0].0.len())
        })
        .unwrap();
    let (entries, batches_sent, acks, seconds, client_cpu_us, batch_bytes) = client.join().unwrap();
    server.join().unwrap();
    let server_cpu_s = server_cpu.load(Ordering::Relaxed) as f64 / 1e6;
    assert_eq!(received.load(Ordering::Relaxed), entries, "the leader parsed every entry sent");
    assert_eq!(acks, batches_sent, "one ack per batch");
    println!("== grpc_push: Replicate between two executors (follower core 0, leader core 1), loopback");
    println!(
        "batches: {batches_sent} x ~{:.1} MiB ({} entries each, ~290 B entries), {} in flight",
        batch_bytes as f64 / 1048576.0,
        entries / batches_sent.max(1),
        BATCHES_IN_FLIGHT_MAX
    );
    println!(
        "{entries} entries in {seconds:.2} s = {:.0} entries/s = {:.0} MB/s of messages",
        entries as f64 / seconds,
        batches_sent as f64 * batch_bytes as f64 / seconds / 1e6
    );
    println!(
        "CPU: follower {:.2} s ({:.3} CPU-s per million), leader {:.2} s ({:.3} CPU-s per million), target >= 2 M entries/s",
        client_cpu_us as f64 / 1e6,
        client_cpu_us as f64 / entries as f64,
        server_cpu_s,
        server_cpu_s * 1e6 / entries as f64
    );
}

/// CPU time (user + system) of the calling thread, in microseconds.
fn thread_cpu_us() -> u64 {
    // SAFETY: getrusage writes into the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    micros(usage.ru_utime) + micros(usage.ru_stime)
}
