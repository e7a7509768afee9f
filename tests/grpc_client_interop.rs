//! Our gRPC client against a standard server: a tonic server (hyper and
//! h2 on a tokio runtime of its own thread) implements `WormReplication`'s
//! `PushEntries` and `GetWatermark` by hand, as a small exactly-once
//! archive, and our `wormdb::grpc::transport::Channel` calls it from a
//! glommio executor, as a follower's pusher does: client streaming, unary,
//! `grpc-timeout`, and error statuses (a gap, percent-encoded messages,
//! an unknown method) that must arrive with their code and message intact.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::{ClientStreamingService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use wormdb::grpc::status::Code;
use wormdb::grpc::transport::Channel;
use wormdb::proto::{LogEntry, PushAck, PushBatch, WatermarkRequest, WatermarkResponse};
use wormdb::replication::watermark::expected_seq_of;

const PUSH_ENTRIES: &str = "/wormdb.v1.WormReplication/PushEntries";
const GET_WATERMARK: &str = "/wormdb.v1.WormReplication/GetWatermark";
const REPLAY_FROM: &str = "/wormdb.v1.WormReplication/ReplayFrom";

/// Batches one PushEntries stream may carry on the test server.
const STREAM_BATCHES_MAX: usize = 1000;
/// How long the whole client side may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// `GetWatermark` of this follower sleeps longer than any `grpc-timeout`
/// the test sends, so only the server's deadline can end it early.
const SLOW_FOLLOWER: u32 = 999;
/// A status message with characters that `grpc-message` must percent-encode.
const ODD_MESSAGE: &str = "follower 0 is reserved: 100% refused — ünïcode\ttab";

/// The archive state of the test server: watermark per (follower, shard).
type Watermarks = Arc<Mutex<HashMap<(u32, u32), u64>>>;

/// `WormReplication`, written by hand as `tonic-build` would generate it.
#[derive(Clone, Default)]
struct Replication {
    watermarks: Watermarks,
}

impl Service<http::Request<tonic::body::Body>> for Replication {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let watermarks = self.watermarks.clone();
        match request.uri().path() {
            PUSH_ENTRIES => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<PushAck, PushBatch>::default());
                Ok(grpc.client_streaming(PushEntries { watermarks }, request).await)
            }),
            GET_WATERMARK => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<WatermarkResponse, WatermarkRequest>::default());
                Ok(grpc.unary(GetWatermark { watermarks }, request).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("not served here").into_http()) }),
        }
    }
}

struct PushEntries {
    watermarks: Watermarks,
}

impl ClientStreamingService<PushBatch> for PushEntries {
    type Response = PushAck;
    type Future = BoxFuture<Response<PushAck>, Status>;

    /// Archives each batch that continues the pair's range; a batch that
    /// starts past it is refused as wormdb's leader does.
    fn call(&mut self, request: Request<Streaming<PushBatch>>) -> Self::Future {
        let watermarks = self.watermarks.clone();
        Box::pin(async move {
            let mut stream = request.into_inner();
            let mut ack = PushAck::default();
            let mut batches = 0;
            while let Some(batch) = stream.message().await? {
                batches += 1;
                if batches > STREAM_BATCHES_MAX {
                    return Err(Status::resource_exhausted("too many batches"));
                }
                let mut watermarks = watermarks.lock().unwrap();
                let watermark = watermarks.entry((batch.follower_id, batch.shard)).or_default();
                for entry in &batch.entries {
                    if entry.seq <= *watermark {
                        ack.duplicates += 1;
                    } else if entry.seq == *watermark + 1 {
                        *watermark = entry.seq;
                        ack.written += 1;
                    } else {
                        return Err(Status::failed_precondition(format!(
                            "gap: expected seq {}, got {}",
                            *watermark + 1,
                            entry.seq
                        )));
                    }
                }
                ack.shard = batch.shard;
                ack.acked_seq = *watermark;
            }
            Ok(Response::new(ack))
        })
    }
}

struct GetWatermark {
    watermarks: Watermarks,
}

impl UnaryService<WatermarkRequest> for GetWatermark {
    type Response = WatermarkResponse;
    type Future = BoxFuture<Response<WatermarkResponse>, Status>;

    fn call(&mut self, request: Request<WatermarkRequest>) -> Self::Future {
        let watermarks = self.watermarks.clone();
        Box::pin(async move {
            let request = request.into_inner();
            match request.follower_id {
                0 => Err(Status::invalid_argument(ODD_MESSAGE)),
                SLOW_FOLLOWER => {
                    tokio::time::sleep(TEST_TIMEOUT).await;
                    Err(Status::internal("the grpc-timeout was not honoured"))
                }
                follower_id => {
                    let acked_seq =
                        watermarks.lock().unwrap().get(&(follower_id, request.shard)).copied().unwrap_or_default();
                    Ok(Response::new(WatermarkResponse { acked_seq }))
                }
            }
        })
    }
}

/// A tonic server on 127.0.0.1:0 in a thread of its own; stops when dropped.
struct TonicServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TonicServer {
    fn start(service: Replication) -> TonicServer {
        let (addr_sender, addr) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                addr_sender.send(incoming.local_addr().unwrap()).unwrap();
                tonic::transport::Server::builder()
                    .serve_with_incoming_shutdown(service, incoming, async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr.recv_timeout(Duration::from_secs(10)).unwrap();
        TonicServer { addr, stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for TonicServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn batch(follower_id: u32, shard: u32, seqs: std::ops::RangeInclusive<u64>) -> PushBatch {
    let entries = seqs
        .map(|seq| LogEntry {
            seq,
            timestamp_ns: seq as i64,
            body: format!("entry {seq}").into(),
            node_id: follower_id,
            shard,
            ..LogEntry::default()
        })
        .collect();
    PushBatch { durable_seq: 0, follower_id, shard, entries, blocks: Vec::new() }
}

/// Runs `test` in a glommio executor, within [`TEST_TIMEOUT`].
fn run_client<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    common::run(move || async move {
        futures_lite::future::or(test(), async {
            glommio::timer::sleep(TEST_TIMEOUT).await;
            panic!("the test timed out");
        })
        .await
    });
}

#[test]
fn our_client_pushes_to_a_tonic_server_and_reads_its_statuses() {
    let server = TonicServer::start(Replication::default());
    let addr = server.addr;
    run_client(move || async move {
        let channel = Channel::connect(addr, Duration::from_secs(5)).await.unwrap();

        // Client streaming: several batches, close, one ack.
        let mut call = channel.start(PUSH_ENTRIES, None).await.unwrap();
        for batch in [batch(3, 1, 1..=4), batch(3, 1, 5..=5), batch(3, 1, 6..=10)] {
            call.send(&batch).await.unwrap();
        }
        call.close_send().await.unwrap();
        let ack: PushAck = call.next().await.unwrap().expect("one ack");
        assert_eq!(ack, PushAck { shard: 1, acked_seq: 10, written: 10, duplicates: 0 });
        assert!(call.next::<PushAck>().await.unwrap().is_none(), "then OK and no more messages");

        // Unary.
        let request = WatermarkRequest { follower_id: 3, shard: 1 };
        let response: WatermarkResponse = channel.unary(GET_WATERMARK, &request, None).await.unwrap();
        assert_eq!(response.acked_seq, 10);
        let request = WatermarkRequest { follower_id: 3, shard: 0 };
        let response: WatermarkResponse = channel.unary(GET_WATERMARK, &request, None).await.unwrap();
        assert_eq!(response.acked_seq, 0);

        // A refused push: the gap status arrives with its code and message,
        // and the follower can read the seq to resume from.
        let mut call = channel.start(PUSH_ENTRIES, None).await.unwrap();
        call.send(&batch(3, 1, 9..=11)).await.unwrap();
        call.send(&batch(3, 1, 13..=14)).await.unwrap();
        call.close_send().await.unwrap();
        let status = call.next::<PushAck>().await.unwrap_err();
        assert_eq!(status.code, Code::FailedPrecondition, "{status:?}");
        assert_eq!(status.message, "gap: expected seq 12, got 13");
        assert_eq!(expected_seq_of(&status.message), Some(12));
        let request = WatermarkRequest { follower_id: 3, shard: 1 };
        let response: WatermarkResponse = channel.unary(GET_WATERMARK, &request, None).await.unwrap();
        assert_eq!(response.acked_seq, 11);

        // The server refuses while the request stream is still open (as a
        // pusher reads acks while it sends): the status is readable at once.
        let mut call = channel.start(PUSH_ENTRIES, None).await.unwrap();
        call.send(&batch(3, 1, 20..=21)).await.unwrap();
        let status = call.next::<PushAck>().await.unwrap_err();
        assert_eq!(status.code, Code::FailedPrecondition, "{status:?}");
        assert_eq!(status.message, "gap: expected seq 12, got 20");

        // A message that `grpc-message` percent-encodes comes back intact.
        let request = WatermarkRequest { follower_id: 0, shard: 0 };
        let status = channel.unary::<_, WatermarkResponse>(GET_WATERMARK, &request, None).await.unwrap_err();
        assert_eq!(status.code, Code::InvalidArgument, "{status:?}");
        assert_eq!(status.message, ODD_MESSAGE);

        // A method the server does not have.
        let request = wormdb::proto::ReplayRequest { follower_id: 3, shard: 1, from_seq: 1 };
        let mut call = channel.start(REPLAY_FROM, None).await.unwrap();
        call.send(&request).await.unwrap();
        call.close_send().await.unwrap();
        let status = call.next::<LogEntry>().await.unwrap_err();
        assert_eq!(status.code, Code::Unimplemented, "{status:?}");

        // Our grpc-timeout header is understood: tonic ends the slow call
        // (with CANCELLED, its code for an expired server-side deadline).
        let request = WatermarkRequest { follower_id: SLOW_FOLLOWER, shard: 0 };
        let started = Instant::now();
        let timeout = Duration::from_millis(300);
        let status = channel.unary::<_, WatermarkResponse>(GET_WATERMARK, &request, Some(timeout)).await.unwrap_err();
        assert!(matches!(status.code, Code::Cancelled | Code::DeadlineExceeded), "{status:?}");
        assert!(started.elapsed() < TEST_TIMEOUT / 2, "the deadline was ignored: {:?}", started.elapsed());

        // The connection is still good after all those errors.
        let mut call = channel.start(PUSH_ENTRIES, None).await.unwrap();
        call.send(&batch(3, 1, 10..=12)).await.unwrap();
        call.close_send().await.unwrap();
        let ack: PushAck = call.next().await.unwrap().expect("one ack");
        assert_eq!(ack, PushAck { shard: 1, acked_seq: 12, written: 1, duplicates: 2 });
    });
    drop(server);
}
