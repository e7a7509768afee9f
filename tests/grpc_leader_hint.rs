//! A not-leader refusal carries its leader hint end to end: our server
//! (`wormdb::grpc::transport`) sends it as trailers-only headers or as
//! trailers after a message, our `Channel` reads it back onto the returned
//! `Status` in both forms (also when the server answered before reading the
//! request), and a standard client (tonic) sees the three trailers as
//! plain metadata.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::not_leader::{self, NotLeader};
use wormdb::grpc::status::{Code, LeaderHint, Status};
use wormdb::grpc::transport::Channel;
use wormdb::proto::{PushBatch, WatermarkRequest, WatermarkResponse};

const GET_WATERMARK: &str = "/wormdb.v1.WormReplication/GetWatermark";
const REPLICATE: &str = "/wormdb.v1.WormReplication/Replicate";
const AFTER_MESSAGE: &str = "/test.Hints/AfterMessage";
const TIMEOUT: Duration = Duration::from_secs(10);

fn hint() -> LeaderHint {
    LeaderHint { leader_id: 3, addr: "10.1.2.3:50051".into(), term: 17 }
}

fn request() -> WatermarkRequest {
    WatermarkRequest { follower_id: 2, shard: 1 }
}

/// Calls `server` with our client: a unary call (trailers-only refusal),
/// a call refused after one message (trailers), and a client stream the
/// server refuses without reading. Returns the three statuses.
fn statuses_from(server: &NotLeader) -> Vec<Status> {
    let addr = server.addr;
    common::run(move || async move {
        let channel = Channel::connect(addr, TIMEOUT).await.unwrap();
        let mut statuses = Vec::new();

        let unary = channel.unary::<_, WatermarkResponse>(GET_WATERMARK, &request(), Some(TIMEOUT)).await;
        statuses.push(unary.unwrap_err());

        let mut call = channel.start(AFTER_MESSAGE, None).await.unwrap();
        call.send(&request()).await.unwrap();
        call.close_send().await.unwrap();
        let first = call.next::<WatermarkResponse>().await.unwrap();
        assert_eq!(first, Some(WatermarkResponse { acked_seq: 42 }), "the message before the refusal");
        statuses.push(call.next::<WatermarkResponse>().await.unwrap_err());

        // A push stream the server refuses at once, then resets: the next
        // send fails (the peer closed the stream), yet the status the
        // server sent is what the client reports.
        let mut call = channel.start(REPLICATE, None).await.unwrap();
        let batch = PushBatch { durable_seq: 0, follower_id: 2, shard: 1, entries: Vec::new(), blocks: Vec::new() };
        let mut status = None;
        for _ in 0..500 {
            if let Err(error) = call.send(&batch).await {
                status = Some(call.status_after_send_error(error).await);
                break;
            }
            // Let the refusal and the reset of the request half arrive.
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        statuses.push(status.expect("a send after the reset fails"));
        statuses
    })
}

#[test]
fn our_client_reads_the_hint_from_trailers_and_from_trailers_only_responses() {
    let server = not_leader::start(Some(hint()));
    for (form, status) in ["trailers-only", "trailers", "unread request"].iter().zip(statuses_from(&server)) {
        assert_eq!(status.code, Code::Unavailable, "{form}: {status}");
        assert_eq!(status.leader, Some(hint()), "{form}: {status}");
        assert!(status.message.contains("this node leads nothing"), "{form}: {status}");
    }
    assert_eq!(server.calls(), 3);
}

#[test]
fn a_replica_that_knows_no_leader_sends_no_hint() {
    let server = not_leader::start(None);
    for status in statuses_from(&server) {
        assert_eq!((status.code, status.leader.clone()), (Code::Unavailable, None), "{status}");
    }
}

#[test]
fn a_standard_client_sees_the_hint_as_metadata() {
    use http::uri::PathAndQuery;
    use tonic::transport::Endpoint;
    use tonic::Request;
    use tonic_prost::ProstCodec;

    let server = not_leader::start(Some(hint()));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let channel = Endpoint::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();
        let mut client = tonic::client::Grpc::new(channel);
        let check = |status: tonic::Status, form: &str| {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{form}");
            let metadata = status.metadata();
            assert_eq!(metadata.get("wormdb-leader-id").unwrap(), "3", "{form}");
            assert_eq!(metadata.get("wormdb-leader-addr").unwrap(), "10.1.2.3:50051", "{form}");
            assert_eq!(metadata.get("wormdb-term").unwrap(), "17", "{form}");
        };

        client.ready().await.unwrap();
        let codec = ProstCodec::<WatermarkRequest, WatermarkResponse>::default();
        let refused = client.unary(Request::new(request()), PathAndQuery::from_static(GET_WATERMARK), codec).await;
        check(refused.unwrap_err(), "trailers-only");

        client.ready().await.unwrap();
        let codec = ProstCodec::<WatermarkRequest, WatermarkResponse>::default();
        let path = PathAndQuery::from_static(AFTER_MESSAGE);
        let mut stream = client.server_streaming(Request::new(request()), path, codec).await.unwrap().into_inner();
        assert_eq!(stream.message().await.unwrap(), Some(WatermarkResponse { acked_seq: 42 }));
        check(stream.message().await.unwrap_err(), "trailers");
    });
}
