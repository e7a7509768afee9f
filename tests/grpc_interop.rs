//! A standard gRPC client against our hand-rolled server: tonic's
//! `tonic::client::Grpc` over a tonic `Channel` (hyper and h2, as any Rust
//! gRPC user has them) calls every method of the real binary (two shards)
//! with our prost types, and every error a gRPC user can provoke arrives as
//! the standard status code. The calls are written by hand (no generated
//! client): a path like `/wormdb.v1.WormReplication/GetWatermark` and
//! `tonic_prost::ProstCodec`, or a bytes codec for malformed messages.
//!
//! `ReplayFrom` needs the shard's origin index (`Shard::read_origin`); its
//! test is kept apart so that it fails alone while that is a stub.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use futures_channel::mpsc;
use http::uri::PathAndQuery;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};
use tonic_prost::ProstCodec;

use common::node::TestNode;
use wormdb::proto::{
    LogEntry, PushAck, PushBatch, QueryRequest, ReplayRequest, WatermarkRequest, WatermarkResponse, WriteRequest,
    WriteResponse,
};

const WRITE: &str = "/wormdb.v1.WormIngest/Write";
const QUERY: &str = "/wormdb.v1.WormIngest/Query";
const PUSH_ENTRIES: &str = "/wormdb.v1.WormReplication/PushEntries";
const REPLICATE: &str = "/wormdb.v1.WormReplication/Replicate";
const REPLAY_FROM: &str = "/wormdb.v1.WormReplication/ReplayFrom";
const GET_WATERMARK: &str = "/wormdb.v1.WormReplication/GetWatermark";

/// The node id of the server under test (pushed entries keep their own).
const NODE_ID: u32 = 7;
/// How long one test may take in all.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// More response messages than any call here should return.
const MESSAGES_MAX: usize = 10_000;
/// Leaves room for messages over our server's 16 MiB limit.
const CLIENT_MESSAGE_BYTES_MAX: usize = 64 << 20;

type Client = tonic::client::Grpc<Channel>;

fn start_node() -> (tempfile::TempDir, TestNode) {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--node-id", &NODE_ID.to_string(), "--shards", "2"]);
    (dir, node)
}

/// Runs `test` on a tokio runtime of its own, within [`TEST_TIMEOUT`].
fn block_on<F: Future>(test: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async { tokio::time::timeout(TEST_TIMEOUT, test).await.expect("the test timed out") })
}

/// One HTTP/2 connection to the node, tonic's client on top.
async fn connect(node: &TestNode) -> Client {
    tonic::client::Grpc::new(node.grpc_channel().await)
        .max_encoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
}

async fn ready(client: &mut Client) {
    client.ready().await.unwrap();
}

async fn unary<Req, Resp>(client: &mut Client, path: &'static str, request: Req) -> Result<Resp, Status>
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Default + Send + Sync + 'static,
{
    ready(client).await;
    let codec = ProstCodec::<Req, Resp>::default();
    client.unary(Request::new(request), PathAndQuery::from_static(path), codec).await.map(tonic::Response::into_inner)
}

/// Every message of a server-streaming call, or the status it failed with.
async fn server_streaming<Req, Resp>(client: &mut Client, path: &'static str, request: Req) -> Result<Vec<Resp>, Status>
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Default + Send + Sync + 'static,
{
    ready(client).await;
    let codec = ProstCodec::<Req, Resp>::default();
    let stream = client.server_streaming(Request::new(request), PathAndQuery::from_static(path), codec).await?;
    drain(stream.into_inner()).await
}

async fn drain<M>(mut stream: Streaming<M>) -> Result<Vec<M>, Status> {
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await? {
        messages.push(message);
        assert!(messages.len() <= MESSAGES_MAX, "endless response stream");
    }
    Ok(messages)
}

async fn write(client: &mut Client, entries: Vec<LogEntry>) -> Result<WriteResponse, Status> {
    unary(client, WRITE, WriteRequest { entries }).await
}

async fn query_tag(client: &mut Client, key: &str, value: &str) -> Vec<LogEntry> {
    let request = QueryRequest {
        words: Vec::new(),
        contains: String::new(),
        direction: 0,
        fields: Default::default(),
        from_ns: 0,
        to_ns: 0,
        tags: BTreeMap::from([(key.to_string(), value.to_string())]),
        limit: MESSAGES_MAX as u32,
    };
    let mut entries: Vec<LogEntry> = server_streaming(client, QUERY, request).await.unwrap();
    entries.sort_by_key(|entry| (entry.node_id, entry.shard, entry.seq));
    entries
}

async fn watermark(client: &mut Client, follower_id: u32, shard: u32) -> u64 {
    let response: WatermarkResponse =
        unary(client, GET_WATERMARK, WatermarkRequest { follower_id, shard }).await.unwrap();
    response.acked_seq
}

/// The entries a follower `follower_id` would push for `shard` and `seqs`
/// (tagged `follower=<id>`, so a query finds exactly a pair's archive).
fn batch(follower_id: u32, shard: u32, seqs: impl IntoIterator<Item = u64>) -> PushBatch {
    let entries = seqs.into_iter().map(|seq| follower_entry(follower_id, shard, seq)).collect();
    PushBatch { durable_seq: 0, follower_id, shard, entries, blocks: Vec::new() }
}

fn follower_entry(follower_id: u32, shard: u32, seq: u64) -> LogEntry {
    LogEntry {
        fields: Default::default(),
        seq,
        timestamp_ns: 1_700_000_000_000_000_000 + seq as i64 * 1000,
        tags: BTreeMap::from([
            ("follower".to_string(), format!("{follower_id}-{shard}")),
            ("seq".to_string(), seq.to_string()),
        ]),
        body: Bytes::from(format!("follower {follower_id} shard {shard} seq {seq}")),
        node_id: follower_id,
        shard,
    }
}

/// PushEntries: all batches on one stream, one ack at the end.
async fn push_entries(client: &mut Client, batches: Vec<PushBatch>) -> Result<PushAck, Status> {
    ready(client).await;
    let codec = ProstCodec::<PushBatch, PushAck>::default();
    let stream = tonic::codegen::tokio_stream::iter(batches);
    client
        .client_streaming(Request::new(stream), PathAndQuery::from_static(PUSH_ENTRIES), codec)
        .await
        .map(tonic::Response::into_inner)
}

/// Opens a Replicate stream whose request messages are fed through the
/// returned sender. At least one batch must be queued before this is
/// awaited: the server answers with headers only once it has an ack.
async fn open_replicate(
    client: &mut Client,
    request: Request<mpsc::UnboundedReceiver<PushBatch>>,
) -> Result<Streaming<PushAck>, Status> {
    ready(client).await;
    let codec = ProstCodec::<PushBatch, PushAck>::default();
    client.streaming(request, PathAndQuery::from_static(REPLICATE), codec).await.map(tonic::Response::into_inner)
}

/// Sends `batches` on one Replicate stream, keeps the stream open, and
/// returns the status it fails with (after any acks).
async fn replicate_error(client: &mut Client, batches: Vec<PushBatch>) -> (Vec<PushAck>, Status) {
    let (sender, receiver) = mpsc::unbounded();
    for batch in batches {
        sender.unbounded_send(batch).unwrap();
    }
    let mut acks = Vec::new();
    let mut stream = match open_replicate(client, Request::new(receiver)).await {
        Ok(stream) => stream,
        Err(status) => return (acks, status),
    };
    loop {
        match stream.message().await {
            Ok(Some(ack)) => acks.push(ack),
            Ok(None) => panic!("the stream ended with OK after {acks:?}"),
            Err(status) => {
                drop(sender);
                return (acks, status);
            }
        }
        assert!(acks.len() <= MESSAGES_MAX, "endless ack stream");
    }
}

/// Passes message bytes through untouched, to send what prost never would.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, destination: &mut EncodeBuf<'_>) -> Result<(), Status> {
        destination.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, source: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(source.copy_to_bytes(source.remaining())))
    }
}

async fn raw_unary(client: &mut Client, path: &'static str, message: Bytes) -> Result<Bytes, Status> {
    ready(client).await;
    client
        .unary(Request::new(message), PathAndQuery::from_static(path), RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

fn assert_code(result: Result<impl std::fmt::Debug, Status>, code: Code, context: &str) -> Status {
    match result {
        Ok(value) => panic!("{context}: expected {code:?}, got a success: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{context}: {status:?}");
            status
        }
    }
}

#[test]
fn write_then_query_returns_the_entries_with_their_ids() {
    let (_dir, node) = start_node();
    block_on(async {
        let mut client = connect(&node).await;
        let base_ts = 1_710_000_000_000_000_000i64;
        let entries: Vec<LogEntry> = (0..3u8)
            .map(|index| LogEntry {
                timestamp_ns: base_ts + i64::from(index),
                tags: BTreeMap::from([
                    ("test".to_string(), "write-query".to_string()),
                    ("index".to_string(), index.to_string()),
                ]),
                // Binary bodies: protobuf `bytes`, not text.
                body: Bytes::from(vec![0xff, 0x00, index, b'x']),
                ..LogEntry::default()
            })
            .collect();
        let response = write(&mut client, entries.clone()).await.unwrap();
        assert!(response.shard < 2, "{response:?}");
        assert_eq!(response.last_seq - response.first_seq + 1, 3, "{response:?}");

        let found = query_tag(&mut client, "test", "write-query").await;
        assert_eq!(found.len(), 3, "{found:?}");
        for (offset, (found, written)) in found.iter().zip(&entries).enumerate() {
            let expected = LogEntry {
                seq: response.first_seq + offset as u64,
                node_id: NODE_ID,
                shard: response.shard,
                ..written.clone()
            };
            assert_eq!(found, &expected);
        }

        // The time range (half-open, `from_ns..to_ns`) is honoured too.
        let request = QueryRequest {
            words: Vec::new(),
            contains: String::new(),
            direction: 0,
            fields: Default::default(),
            from_ns: base_ts + 1,
            to_ns: base_ts + 2,
            tags: BTreeMap::from([("test".to_string(), "write-query".to_string())]),
            limit: 10,
        };
        let one: Vec<LogEntry> = server_streaming(&mut client, QUERY, request).await.unwrap();
        assert_eq!(one.len(), 1, "{one:?}");
        assert_eq!(one[0].timestamp_ns, base_ts + 1);
        assert_eq!(one[0].seq, response.first_seq + 1);
    });
}

#[test]
fn concurrent_calls_on_one_channel_all_succeed() {
    const CALLS: usize = 50;
    let (_dir, node) = start_node();
    block_on(async {
        let client = connect(&node).await;
        let mut calls = Vec::new();
        for index in 0..CALLS {
            let mut client = client.clone();
            calls.push(tokio::spawn(async move {
                let entry = LogEntry {
                    tags: BTreeMap::from([("test".to_string(), "concurrent".to_string())]),
                    body: Bytes::from(format!("call {index}")),
                    ..LogEntry::default()
                };
                write(&mut client, vec![entry]).await
            }));
        }
        let mut ids = std::collections::BTreeSet::new();
        for call in calls {
            let response = call.await.unwrap().unwrap();
            assert_eq!(response.first_seq, response.last_seq, "{response:?}");
            assert!(ids.insert((response.shard, response.first_seq)), "id given twice: {response:?}");
        }
        let mut client = client.clone();
        let found = query_tag(&mut client, "test", "concurrent").await;
        let mut bodies: Vec<String> =
            found.iter().map(|entry| String::from_utf8(entry.body.to_vec()).unwrap()).collect();
        bodies.sort();
        let mut expected: Vec<String> = (0..CALLS).map(|index| format!("call {index}")).collect();
        expected.sort();
        assert_eq!(bodies, expected);
        let found_ids: std::collections::BTreeSet<_> = found.iter().map(|entry| (entry.shard, entry.seq)).collect();
        assert_eq!(found_ids, ids);
    });
}

#[test]
fn push_entries_archives_each_seq_once_under_the_followers_ids() {
    const FOLLOWER: u32 = 42;
    const SHARD: u32 = 1;
    let (_dir, node) = start_node();
    block_on(async {
        let mut client = connect(&node).await;
        assert_eq!(watermark(&mut client, FOLLOWER, SHARD).await, 0, "unknown pair");
        assert_eq!(watermark(&mut client, 9999, 0).await, 0, "unknown pair");

        let batches =
            vec![batch(FOLLOWER, SHARD, 1..=3), batch(FOLLOWER, SHARD, 4..=6), batch(FOLLOWER, SHARD, 7..=10)];
        let ack = push_entries(&mut client, batches.clone()).await.unwrap();
        assert_eq!(ack, PushAck { shard: SHARD, acked_seq: 10, written: 10, duplicates: 0 });

        // A resend after a lost ack: all duplicates, nothing written.
        let ack = push_entries(&mut client, batches).await.unwrap();
        assert_eq!(ack, PushAck { shard: SHARD, acked_seq: 10, written: 0, duplicates: 10 });

        // A batch overlapping the archive: the old part is skipped.
        let ack = push_entries(&mut client, vec![batch(FOLLOWER, SHARD, 8..=12)]).await.unwrap();
        assert_eq!(ack, PushAck { shard: SHARD, acked_seq: 12, written: 2, duplicates: 3 });
        assert_eq!(watermark(&mut client, FOLLOWER, SHARD).await, 12);
        assert_eq!(watermark(&mut client, FOLLOWER, 0).await, 0, "another shard of the follower");

        // Only empty batches: the ack still carries the watermark.
        let ack = push_entries(&mut client, vec![batch(FOLLOWER, SHARD, [])]).await.unwrap();
        assert_eq!(ack, PushAck { shard: SHARD, acked_seq: 12, written: 0, duplicates: 0 });

        // The archive keeps the follower's (node, shard, seq) ids, once each.
        let archived = query_tag(&mut client, "follower", &format!("{FOLLOWER}-{SHARD}")).await;
        let expected: Vec<LogEntry> = (1..=12).map(|seq| follower_entry(FOLLOWER, SHARD, seq)).collect();
        assert_eq!(archived, expected);

        // The same over HTTP.
        let reply = common::node::get(&node.url("/v1/entries?limit=100"));
        assert_eq!(reply.status, 200, "{}", reply.body);
        let mut ids: Vec<(u64, u64, u64)> = reply
            .lines()
            .iter()
            .map(|entry| {
                (entry["node"].as_u64().unwrap(), entry["shard"].as_u64().unwrap(), entry["seq"].as_u64().unwrap())
            })
            .collect();
        ids.sort();
        let expected: Vec<(u64, u64, u64)> = (1..=12).map(|seq| (u64::from(FOLLOWER), u64::from(SHARD), seq)).collect();
        assert_eq!(ids, expected);
    });
}

#[test]
fn replicate_acks_each_batch_and_refuses_gaps_mixed_pairs_and_disorder() {
    const FOLLOWER: u32 = 51;
    let (_dir, node) = start_node();
    block_on(async {
        let mut client = connect(&node).await;
        let mut probe = client.clone();

        // One ack per batch, each read before the next batch is sent, so
        // acks are continuous; each is already the archive's watermark.
        let (sender, receiver) = mpsc::unbounded();
        sender.unbounded_send(batch(FOLLOWER, 0, 1..=4)).unwrap();
        let mut acks = open_replicate(&mut client, Request::new(receiver)).await.unwrap();
        let mut written = 0;
        let mut previous_acked_seq = 0;
        let rounds: [(std::ops::RangeInclusive<u64>, u64); 5] =
            [(1..=4, 0), (5..=9, 0), (10..=10, 0), (11..=20, 0), (15..=22, 6)];
        for (round, (seqs, duplicates)) in rounds.iter().enumerate() {
            if round > 0 {
                sender.unbounded_send(batch(FOLLOWER, 0, seqs.clone())).unwrap();
            }
            let ack = acks.message().await.unwrap().expect("an ack per batch");
            written += seqs.clone().count() as u64 - duplicates;
            assert_eq!(ack.shard, 0);
            assert_eq!(ack.acked_seq, *seqs.end(), "round {round}: {ack:?}");
            assert!(ack.acked_seq > previous_acked_seq, "round {round}: {ack:?}");
            assert_eq!(ack.written, written, "written counts the stream so far: {ack:?}");
            assert_eq!(ack.duplicates, *duplicates, "{ack:?}");
            previous_acked_seq = ack.acked_seq;
            assert_eq!(watermark(&mut probe, FOLLOWER, 0).await, ack.acked_seq);
        }
        drop(sender);
        assert!(acks.message().await.unwrap().is_none(), "the stream ends with OK");

        // A gap: the status names the seq the follower must resume from.
        let (acks, status) = replicate_error(&mut client, vec![batch(FOLLOWER, 0, 25..=26)]).await;
        assert!(acks.is_empty(), "{acks:?}");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().starts_with("gap: expected seq 23"), "{status:?}");
        assert_eq!(wormdb::replication::watermark::expected_seq_of(status.message()), Some(23));
        assert_eq!(watermark(&mut probe, FOLLOWER, 0).await, 22, "a refused batch archives nothing");

        // A stream that changes its pair: the first batch is archived and
        // acked, the second refused.
        let (acks, status) =
            replicate_error(&mut client, vec![batch(FOLLOWER, 0, 23..=23), batch(FOLLOWER + 1, 0, 1..=1)]).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("one (follower, shard) pair"), "{status:?}");
        assert_eq!(acks.len(), 1, "{acks:?}");
        assert_eq!(acks[0].acked_seq, 23);
        assert_eq!(watermark(&mut probe, FOLLOWER, 0).await, 23);
        assert_eq!(watermark(&mut probe, FOLLOWER + 1, 0).await, 0);

        // Seqs that do not increase within a batch.
        for seqs in [vec![1, 3, 2], vec![1, 1], vec![0, 1]] {
            let (acks, status) = replicate_error(&mut client, vec![batch(FOLLOWER, 1, seqs.clone())]).await;
            assert!(acks.is_empty(), "{seqs:?}: {acks:?}");
            assert_eq!(status.code(), Code::InvalidArgument, "{seqs:?}: {status:?}");
            assert_eq!(watermark(&mut probe, FOLLOWER, 1).await, 0, "{seqs:?}");
        }

        // The refusals left the pair usable: the follower resumes at 24.
        let (sender, receiver) = mpsc::unbounded();
        sender.unbounded_send(batch(FOLLOWER, 0, 24..=30)).unwrap();
        drop(sender);
        let acks = drain(open_replicate(&mut client, Request::new(receiver)).await.unwrap()).await.unwrap();
        assert_eq!(acks, vec![PushAck { shard: 0, acked_seq: 30, written: 7, duplicates: 0 }]);
        let archived = query_tag(&mut client, "follower", &format!("{FOLLOWER}-0")).await;
        let seqs: Vec<u64> = archived.iter().map(|entry| entry.seq).collect();
        assert_eq!(seqs, (1..=30).collect::<Vec<u64>>(), "each seq archived once");
    });
}

/// Needs the shard's origin index (`Shard::read_origin`).
#[test]
fn replay_from_streams_the_archive_from_from_seq_in_order() {
    const FOLLOWER: u32 = 61;
    const SHARD: u32 = 1;
    let (_dir, node) = start_node();
    block_on(async {
        let mut client = connect(&node).await;
        let batches = (0..5u64).map(|index| batch(FOLLOWER, SHARD, index * 20 + 1..=index * 20 + 20)).collect();
        let ack = push_entries(&mut client, batches).await.unwrap();
        assert_eq!(ack.acked_seq, 100);

        let replay = |from_seq| ReplayRequest { follower_id: FOLLOWER, shard: SHARD, from_seq };
        let unknown = ReplayRequest { follower_id: FOLLOWER + 1, shard: SHARD, from_seq: 1 };
        let entries: Vec<LogEntry> = server_streaming(&mut client, REPLAY_FROM, unknown).await.unwrap();
        assert!(entries.is_empty(), "an unknown pair has no archive: {entries:?}");
        let entries: Vec<LogEntry> = server_streaming(&mut client, REPLAY_FROM, replay(101)).await.unwrap();
        assert!(entries.is_empty(), "nothing after the watermark: {entries:?}");

        for from_seq in [0, 1, 37, 100] {
            let entries: Vec<LogEntry> = server_streaming(&mut client, REPLAY_FROM, replay(from_seq)).await.unwrap();
            let seqs: Vec<u64> = entries.iter().map(|entry| entry.seq).collect();
            assert_eq!(seqs, (from_seq.max(1)..=100).collect::<Vec<u64>>(), "ReplayFrom {from_seq}: seqs in order");
            for entry in &entries {
                assert_eq!(
                    entry,
                    &follower_entry(FOLLOWER, SHARD, entry.seq),
                    "ReplayFrom {from_seq}: the follower's ids"
                );
            }
        }
    });
}

#[test]
fn errors_arrive_as_standard_status_codes_and_the_server_stays_up() {
    let (_dir, node) = start_node();
    block_on(async {
        let mut client = connect(&node).await;

        // Unknown method and unknown service.
        for path in ["/wormdb.v1.WormIngest/Delete", "/wormdb.v1.Nothing/Write"] {
            let result = raw_unary(&mut client, path, Bytes::new()).await;
            assert_code(result, Code::Unimplemented, path);
        }

        // A message over the 16 MiB limit (checked from its length prefix).
        let body = Bytes::from(vec![b'x'; wormdb::limits::ENTRY_BODY_BYTES_MAX - 64]);
        let entries: Vec<LogEntry> = (0..17).map(|_| LogEntry { body: body.clone(), ..LogEntry::default() }).collect();
        let request = WriteRequest { entries };
        assert!(request.encoded_len() > wormdb::limits::MESSAGE_BYTES_MAX);
        let result = unary::<_, WriteResponse>(&mut client, WRITE, request).await;
        assert_code(result, Code::ResourceExhausted, "a message over MESSAGE_BYTES_MAX");

        // Malformed protobuf: a length-delimited field longer than the message.
        let malformed = Bytes::from_static(&[0x0a, 0x05, 0x01]);
        for path in [WRITE, GET_WATERMARK, PUSH_ENTRIES] {
            let result = raw_unary(&mut client, path, malformed.clone()).await;
            assert_code(result, Code::InvalidArgument, path);
        }

        // grpc-timeout: the stream stays open and idle after its first ack
        // (an empty batch, acked without touching the disk). The server
        // ends the call. (tonic's channel enforces the same deadline itself
        // while it waits for the response headers, with CANCELLED, so the
        // headers must arrive first for the server's status to be seen.)
        let timeout = Duration::from_millis(1000);
        let (sender, receiver) = mpsc::unbounded();
        sender.unbounded_send(batch(71, 0, [])).unwrap();
        let mut request = Request::new(receiver);
        request.set_timeout(timeout);
        let started = Instant::now();
        let mut acks = open_replicate(&mut client, request).await.unwrap();
        let ack = acks.message().await.unwrap().unwrap();
        assert_eq!(ack, PushAck { shard: 0, acked_seq: 0, written: 0, duplicates: 0 });
        let status = assert_code(acks.message().await, Code::DeadlineExceeded, "an idle stream past its grpc-timeout");
        assert!(status.message().contains("grpc-timeout"), "sent by the server: {status:?}");
        let elapsed = started.elapsed();
        assert!(elapsed >= timeout, "ended after {elapsed:?}");
        assert!(elapsed < timeout * 10, "ended after {elapsed:?}");
        drop(sender);

        // The server is fine: on the same channel and on a new one.
        let entry = LogEntry { body: Bytes::from_static(b"after the errors"), ..LogEntry::default() };
        write(&mut client, vec![entry.clone()]).await.unwrap();
        let mut fresh = connect(&node).await;
        write(&mut fresh, vec![entry]).await.unwrap();
        assert_eq!(watermark(&mut fresh, 71, 0).await, 0);
    });
}

/// A follower resumes from a watermark in the middle of one of its blocks
/// (another client pushed the first entries of that block): it sends the
/// rest of that block as entries, then whole blocks, and the archive holds
/// every seq once, as the follower stored it.
#[test]
fn a_follower_resumes_inside_a_block_a_standard_client_pushed_part_of() {
    let dir = common::durable_temp_dir();
    let follower_dir = dir.path().join("follower");
    let mut follower = TestNode::start(&follower_dir, &["--node-id", "2", "--shards", "1"]);
    let stored: Vec<LogEntry> = block_on(async {
        let mut client = connect(&follower).await;
        // One request, one block (seqs 1..=50); then a second block.
        for (first, count) in [(1u64, 50u64), (51, 30)] {
            let entries = (first..first + count).map(|seq| follower_entry(2, 0, seq)).collect();
            let response = write(&mut client, entries).await.unwrap();
            assert_eq!((response.first_seq, response.last_seq), (first, first + count - 1));
        }
        query_tag(&mut client, "follower", "2-0").await
    });
    assert_eq!(stored.len(), 80);
    assert_eq!(follower.terminate(), 0);

    let leader_dir = dir.path().join("leader");
    let leader = TestNode::start(&leader_dir, &["--node-id", &NODE_ID.to_string(), "--shards", "2"]);
    block_on(async {
        let mut client = connect(&leader).await;
        let first_twenty =
            PushBatch { durable_seq: 0, follower_id: 2, shard: 0, entries: stored[..20].to_vec(), blocks: Vec::new() };
        let ack = push_entries(&mut client, vec![first_twenty]).await.unwrap();
        assert_eq!((ack.acked_seq, ack.written), (20, 20));
    });
    let follower = TestNode::start(&follower_dir, &["--node-id", "2", "--shards", "1", "--leader", &leader.grpc_addr]);
    block_on(async {
        let mut client = connect(&leader).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while watermark(&mut client, 2, 0).await < 80 {
            assert!(Instant::now() < deadline, "the follower did not catch up:\n{}", follower.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let archived = query_tag(&mut client, "follower", "2-0").await;
        assert_eq!(archived, stored, "every seq once, as the follower stored it");
    });
}
