//! Bearer tokens, follower identities and abuse limits on a real node
//! (DESIGN.md section 10), from real clients: `curl` for HTTP, our gRPC
//! `Channel` for gRPC. Every refusal gets its status, is counted in
//! `wormdb_auth_failures_total`, stores nothing, and leaves the node
//! healthy; a token over its rate gets 429 with a `Retry-After` that is
//! enough; SIGHUP rotates tokens under a running push stream;
//! `--max-connections` closes the connections over it at accept; a
//! non-loopback bind needs tokens (or `--insecure`); and a tier of three
//! members and a follower runs on tokens alone. A standard client (tonic)
//! sends its token as plain metadata and reads the statuses.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::node::{self, TestNode};
use wormdb::auth::tokens::{digest, to_hex};
use wormdb::grpc::status::{Code, Status};
use wormdb::grpc::transport::Channel;
use wormdb::proto::{
    LogEntry, PushAck, PushBatch, ReplayRequest, WatermarkRequest, WatermarkResponse, WatermarksRequest,
    WatermarksResponse, WriteRequest, WriteResponse,
};

const TIMEOUT: Duration = Duration::from_secs(20);
const WRITE: &str = "/wormdb.v1.WormIngest/Write";
const REPLICATE: &str = "/wormdb.v1.WormReplication/Replicate";
const GET_WATERMARK: &str = "/wormdb.v1.WormReplication/GetWatermark";
const REPLAY_FROM: &str = "/wormdb.v1.WormReplication/ReplayFrom";
const RAFT_WATERMARKS: &str = "/wormdb.v1.WormRaft/Watermarks";

/// One `[[token]]` table: the secret is `secret-NAME`.
fn token(name: &str, scopes: &[&str], extra: &str) -> String {
    let scopes: Vec<String> = scopes.iter().map(|scope| format!("{scope:?}")).collect();
    format!(
        "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [{}]\n{extra}\n",
        to_hex(&digest(secret(name).as_bytes())),
        scopes.join(", ")
    )
}

fn secret(name: &str) -> String {
    format!("secret-{name}")
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// What curl saw.
struct Curl {
    status: u16,
    /// Header lines, names lowercased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Curl {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// `curl -X METHOD URL` with `Authorization: VALUE` when given and an
/// NDJSON body when given.
fn curl(method: &str, url: &str, authorization: Option<&str>, body: Option<&[u8]>) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let (headers, out) = (dir.path().join("headers"), dir.path().join("body"));
    let mut command = Command::new("curl");
    command.args(["-sS", "-X", method, "-D"]).arg(&headers).arg("-o").arg(&out).args(["-w", "%{http_code}", url]);
    if let Some(value) = authorization {
        command.args(["-H", &format!("Authorization: {value}")]);
    }
    if body.is_some() {
        command.args(["-H", "Content-Type: application/x-ndjson", "-H", "Expect:", "--data-binary", "@-"]);
    }
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(body.unwrap_or_default()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    let status = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap();
    let headers = std::fs::read_to_string(headers)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Curl { status, headers, body: std::fs::read_to_string(out).unwrap_or_default() }
}

fn bearer(name: &str) -> String {
    format!("Bearer {}", secret(name))
}

fn ndjson_lines(count: usize, tag: &str) -> Vec<u8> {
    (0..count)
        .map(|index| format!("{{\"tags\":{{\"t\":\"{tag}\"}},\"body\":\"{tag} {index}\"}}\n"))
        .collect::<String>()
        .into_bytes()
}

/// The value of the metric line `name{labels}` in `/metrics` (read with
/// the token `prom`).
fn metric(node: &TestNode, series: &str) -> u64 {
    let text = curl("GET", &node.url("/metrics"), Some(&bearer("prom")), None).body;
    metric_in(&text, series)
}

fn metric_in(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

fn failures(node: &TestNode, reason: &str) -> u64 {
    metric(node, &format!("wormdb_auth_failures_total{{node=\"1\",reason=\"{reason}\"}}"))
}

/// Entries the node serves, read with the token `reader`.
fn stored(node: &TestNode) -> Vec<serde_json::Value> {
    let reply = curl("GET", &node.url("/v1/entries?limit=100000"), Some(&bearer("reader")), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn grpc_addr(node: &TestNode) -> SocketAddr {
    node.grpc_addr.parse().unwrap()
}

async fn channel(addr: SocketAddr, token: Option<&str>) -> Channel {
    let secret = token.map(secret);
    Channel::connect(addr, TIMEOUT).await.unwrap().with_bearer(secret.as_deref()).unwrap()
}

fn entry(follower_id: u32, shard: u32, seq: u64) -> LogEntry {
    LogEntry {
        fields: Default::default(),
        seq,
        timestamp_ns: 1_700_000_000_000_000_000 + seq as i64,
        tags: BTreeMap::from([("follower".to_string(), follower_id.to_string())]),
        body: Bytes::from(format!("follower {follower_id} shard {shard} seq {seq}")),
        node_id: follower_id,
        shard,
    }
}

fn batch(follower_id: u32, shard: u32, seqs: std::ops::RangeInclusive<u64>) -> PushBatch {
    let entries = seqs.map(|seq| entry(follower_id, shard, seq)).collect();
    PushBatch { follower_id, shard, entries, ..Default::default() }
}

fn write_request(count: usize) -> WriteRequest {
    let entries = (0..count)
        .map(|index| LogEntry {
            tags: BTreeMap::from([("t".to_string(), "grpc".to_string())]),
            body: Bytes::from(format!("grpc {index}")),
            ..Default::default()
        })
        .collect();
    WriteRequest { entries }
}

async fn write(addr: SocketAddr, token: Option<&str>, count: usize) -> Result<WriteResponse, Status> {
    channel(addr, token).await.unary(WRITE, &write_request(count), Some(TIMEOUT)).await
}

/// One `Replicate` stream of one batch; its last ack or its status.
async fn push(addr: SocketAddr, token: Option<&str>, batch: &PushBatch) -> Result<PushAck, Status> {
    let channel = channel(addr, token).await;
    let mut call = channel.start(REPLICATE, Some(TIMEOUT)).await?;
    let sent = match call.send(batch).await {
        Ok(()) => call.close_send().await,
        Err(error) => Err(error),
    };
    if let Err(error) = sent {
        return Err(call.status_after_send_error(error).await);
    }
    let mut last = None;
    while let Some(ack) = call.next::<PushAck>().await? {
        last = Some(ack);
    }
    last.ok_or_else(|| Status::internal("no ack"))
}

async fn watermark(addr: SocketAddr, token: Option<&str>, follower_id: u32) -> Result<u64, Status> {
    let request = WatermarkRequest { follower_id, shard: 0 };
    let response: WatermarkResponse = channel(addr, token).await.unary(GET_WATERMARK, &request, Some(TIMEOUT)).await?;
    Ok(response.acked_seq)
}

async fn replay(addr: SocketAddr, token: Option<&str>, follower_id: u32) -> Result<usize, Status> {
    let channel = channel(addr, token).await;
    let mut call = channel.start(REPLAY_FROM, Some(TIMEOUT)).await?;
    call.send(&ReplayRequest { follower_id, shard: 0, from_seq: 1 }).await?;
    call.close_send().await?;
    let mut count = 0;
    while call.next::<LogEntry>().await?.is_some() {
        count += 1;
    }
    Ok(count)
}

fn code(result: Result<impl std::fmt::Debug, Status>) -> Code {
    result.unwrap_err().code
}

/// The tokens most tests use.
fn tokens_file(dir: &Path) -> PathBuf {
    let text = [
        token("shipper", &["ingest"], ""),
        token("reader", &["query"], ""),
        token("prom", &["metrics"], ""),
        token("ops", &["admin"], ""),
        token("f7", &["ingest"], "follower_ids = [7]"),
        token("slow", &["ingest"], "rate_entries_per_s = 100"),
    ]
    .concat();
    write_file(dir, "tokens.toml", &text)
}

#[test]
fn every_refusal_has_its_status_is_counted_and_stores_nothing() {
    let dir = common::durable_temp_dir();
    let tokens = tokens_file(dir.path());
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "2", "--auth-tokens", tokens.to_str().unwrap()]);
    let body = ndjson_lines(3, "refused");

    let health = curl("GET", &node.url("/healthz"), None, None);
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"), "/healthz needs no token");

    let missing = curl("POST", &node.url("/v1/entries"), None, Some(&body));
    assert_eq!(missing.status, 401, "{}", missing.body);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let unknown = curl("POST", &node.url("/v1/entries"), Some("Bearer not-a-token"), Some(&body));
    assert_eq!(unknown.status, 401, "{}", unknown.body);
    assert!(unknown.header("www-authenticate").unwrap().starts_with("Bearer"));
    assert!(!unknown.body.contains("not-a-token"), "the secret is never echoed: {}", unknown.body);
    let malformed = curl("POST", &node.url("/v1/entries"), Some("Basic c2hpcHBlcg=="), Some(&body));
    assert_eq!(malformed.status, 401);
    let scope = curl("POST", &node.url("/v1/entries"), Some(&bearer("reader")), Some(&body));
    assert_eq!(scope.status, 403, "{}", scope.body);
    assert!(scope.body.contains("no ingest scope"), "{}", scope.body);
    assert_eq!(curl("GET", &node.url("/v1/entries"), Some(&bearer("shipper")), None).status, 403);
    assert_eq!(curl("GET", &node.url("/metrics"), None, None).status, 401);

    let addr = grpc_addr(&node);
    common::run(move || async move {
        assert_eq!(code(write(addr, None, 3).await), Code::Unauthenticated);
        let client = Channel::connect(addr, TIMEOUT).await.unwrap().with_bearer(Some("not-a-token")).unwrap();
        let refused = client.unary::<_, WriteResponse>(WRITE, &write_request(3), Some(TIMEOUT)).await;
        assert_eq!(code(refused), Code::Unauthenticated);
        assert_eq!(code(write(addr, Some("reader"), 3).await), Code::PermissionDenied);

        // A follower token pushing, replaying and reading as another id.
        let refused = push(addr, Some("f7"), &batch(8, 0, 1..=5)).await.unwrap_err();
        assert_eq!(refused.code, Code::PermissionDenied, "{refused}");
        assert!(refused.message.contains("may not act as follower 8"), "{refused}");
        assert_eq!(code(watermark(addr, Some("f7"), 8).await), Code::PermissionDenied);
        assert_eq!(code(replay(addr, Some("f7"), 8).await), Code::PermissionDenied);

        // Raft from a non-member: a client token, and nothing.
        let request = WatermarksRequest { group: 0 };
        let client = channel(addr, Some("shipper")).await;
        let refused = client.unary::<_, WatermarksResponse>(RAFT_WATERMARKS, &request, Some(TIMEOUT)).await;
        assert_eq!(code(refused), Code::PermissionDenied);
        let client = channel(addr, None).await;
        let refused = client.unary::<_, WatermarksResponse>(RAFT_WATERMARKS, &request, Some(TIMEOUT)).await;
        assert_eq!(code(refused), Code::Unauthenticated);
        // An admin token passes (no mTLS here), and meets a node outside a tier.
        let client = channel(addr, Some("ops")).await;
        let passed = client.unary::<_, WatermarksResponse>(RAFT_WATERMARKS, &request, Some(TIMEOUT)).await;
        assert_eq!(code(passed), Code::FailedPrecondition);
    });

    for (reason, count) in
        [("missing", 4), ("malformed", 1), ("unknown", 2), ("scope", 3), ("follower_id", 3), ("member", 1)]
    {
        assert_eq!(failures(&node, reason), count, "{reason}");
    }
    assert!(stored(&node).is_empty(), "no refused call stored anything");
    common::run(move || async move {
        assert_eq!(watermark(addr, Some("shipper"), 8).await.unwrap(), 0, "nothing archived for follower 8");
    });

    // The node is healthy, and the right tokens get through.
    assert_eq!(curl("GET", &node.url("/healthz"), None, None).status, 200);
    let stored_http = curl("POST", &node.url("/v1/entries"), Some(&bearer("shipper")), Some(&body));
    assert_eq!(stored_http.status, 200, "{}", stored_http.body);
    common::run(move || async move {
        write(addr, Some("shipper"), 2).await.unwrap();
        assert_eq!(push(addr, Some("f7"), &batch(7, 0, 1..=5)).await.unwrap().acked_seq, 5);
        assert_eq!(watermark(addr, Some("f7"), 7).await.unwrap(), 5);
        assert_eq!(replay(addr, Some("f7"), 7).await.unwrap(), 5);
    });
    assert_eq!(stored(&node).len(), 3 + 2 + 5);

    // `wormdb restore` presents the follower's token from --token-file.
    let f7 = write_file(dir.path(), "f7.secret", &format!("{}\n", secret("f7")));
    let restore = |token_file: Option<&Path>, data_dir: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wormdb"));
        command.args(["restore", "--from", &node.grpc_addr, "--follower-id", "7", "--shards", "1", "--data-dir"]);
        command.arg(dir.path().join(data_dir));
        if let Some(path) = token_file {
            command.arg("--token-file").arg(path);
        }
        command.output().unwrap()
    };
    let refused = restore(None, "restore-a");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"), "{refused:?}");
    let restored = restore(Some(&f7), "restore-b");
    assert!(restored.status.success(), "{restored:?}");
    assert!(String::from_utf8_lossy(&restored.stdout).contains("shard 0: restored 5 entries"), "{restored:?}");
    let stats = curl("GET", &node.url("/v1/stats"), Some(&bearer("prom")), None);
    assert_eq!(stats.status, 200, "/v1/stats is a metrics call");
    assert_eq!(curl("GET", &node.url("/v1/cluster"), Some(&bearer("ops")), None).status, 200, "admin covers it too");
    assert_eq!(failures(&node, "missing"), 5, "the restore without a token, and nothing else since");
}

#[test]
fn a_token_over_its_rate_gets_429_with_a_retry_after_that_is_enough() {
    let dir = common::durable_temp_dir();
    let tokens = tokens_file(dir.path());
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "2", "--auth-tokens", tokens.to_str().unwrap()]);
    let url = node.url("/v1/entries");
    let hundred = ndjson_lines(100, "rated");
    assert_eq!(curl("POST", &url, Some(&bearer("slow")), Some(&hundred)).status, 200, "a full bucket: one second");
    let over = curl("POST", &url, Some(&bearer("slow")), Some(&hundred));
    assert_eq!(over.status, 429, "{}", over.body);
    let seconds: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(seconds, 1, "100 entries at 100/s");
    assert_eq!(curl("POST", &url, Some(&bearer("shipper")), Some(&hundred)).status, 200, "another token is not slowed");
    std::thread::sleep(Duration::from_secs(seconds));
    let after = curl("POST", &url, Some(&bearer("slow")), Some(&hundred));
    assert_eq!(after.status, 200, "after waiting as told: {}", after.body);

    let addr = grpc_addr(&node);
    common::run(move || async move {
        let over = write(addr, Some("slow"), 100).await.unwrap_err();
        assert_eq!(over.code, Code::ResourceExhausted, "{over}");
        let wait = over.retry_pushback.expect("a retry pushback");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        glommio::timer::sleep(wait).await;
        write(addr, Some("slow"), 100).await.unwrap();
    });
    assert_eq!(metric(&node, "wormdb_rate_limited_total{node=\"1\",token=\"slow\"}"), 2);
    assert_eq!(stored(&node).len(), 400, "what was refused was not stored");
}

#[test]
fn sighup_rotates_tokens_under_a_running_push_stream() {
    let dir = common::durable_temp_dir();
    let first = [
        token("old", &["ingest"], ""),
        token("f7", &["ingest"], "follower_ids = [7]"),
        token("prom", &["metrics"], ""),
        token("reader", &["query"], ""),
    ];
    let tokens = write_file(dir.path(), "tokens.toml", &first.concat());
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "2", "--auth-tokens", tokens.to_str().unwrap()]);
    let url = node.url("/v1/entries");
    let body = ndjson_lines(2, "rotated");
    assert_eq!(curl("POST", &url, Some(&bearer("old")), Some(&body)).status, 200);
    assert_eq!(curl("POST", &url, Some(&bearer("new")), Some(&body)).status, 401);

    // A push stream on an executor of its own, driven step by step from here.
    let addr = grpc_addr(&node);
    let (go, steps) = std::sync::mpsc::channel::<()>();
    let (done, acks) = std::sync::mpsc::channel::<Result<u64, Code>>();
    let streamer = std::thread::spawn(move || {
        common::run(move || async move {
            let next_step = || async {
                while steps.try_recv().is_err() {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
            };
            let channel = channel(addr, Some("f7")).await;
            let mut stream = channel.start(REPLICATE, None).await.unwrap();
            stream.send(&batch(7, 0, 1..=10)).await.unwrap();
            done.send(Ok(stream.next::<PushAck>().await.unwrap().unwrap().acked_seq)).unwrap();
            next_step().await;
            // After the reload: the stream that started before goes on...
            stream.send(&batch(7, 0, 11..=20)).await.unwrap();
            done.send(Ok(stream.next::<PushAck>().await.unwrap().unwrap().acked_seq)).unwrap();
            // ...and a new one with the revoked token is refused.
            done.send(
                push(addr, Some("f7"), &batch(7, 0, 21..=21))
                    .await
                    .map(|ack| ack.acked_seq)
                    .map_err(|status| status.code),
            )
            .unwrap();
            stream.close_send().await.unwrap();
            while stream.next::<PushAck>().await.unwrap().is_some() {}
        })
    });
    assert_eq!(acks.recv_timeout(TIMEOUT).unwrap(), Ok(10));

    // Revoke `old` and `f7`, add `new`.
    let second = [token("new", &["ingest"], ""), token("prom", &["metrics"], ""), token("reader", &["query"], "")];
    write_file(dir.path(), "tokens.toml", &second.concat());
    let seen = node.log_count("auth tokens reloaded");
    node.signal(libc::SIGHUP);
    node.wait_for_log("auth tokens reloaded", seen, TIMEOUT);
    assert_eq!(curl("POST", &url, Some(&bearer("old")), Some(&body)).status, 401, "revoked at once");
    assert_eq!(curl("POST", &url, Some(&bearer("new")), Some(&body)).status, 200, "added at once");
    go.send(()).unwrap();
    assert_eq!(acks.recv_timeout(TIMEOUT).unwrap(), Ok(20), "the established stream goes on");
    assert_eq!(acks.recv_timeout(TIMEOUT).unwrap(), Err(Code::Unauthenticated), "a new stream is refused");
    streamer.join().unwrap();

    // A file that does not parse keeps the tokens in force.
    write_file(dir.path(), "tokens.toml", "[[token]]\nname = \"broken\"\n");
    let seen = node.log_count("stay in force");
    node.signal(libc::SIGHUP);
    node.wait_for_log("stay in force", seen, TIMEOUT);
    assert_eq!(curl("POST", &url, Some(&bearer("new")), Some(&body)).status, 200);
    assert_eq!(curl("POST", &url, Some(&bearer("old")), Some(&body)).status, 401);

    assert!(!node.log_text().contains(&secret("new")), "secrets are never logged");
    assert_eq!(metric(&node, "wormdb_auth_failures_total{node=\"1\",reason=\"unknown\"}"), 4);
    let archived: Vec<_> = stored(&node);
    assert_eq!(archived.len(), 2 * 3 + 20, "the HTTP writes that passed and both pushes");
}

/// Sends `GET path` on an open HTTP/1.1 connection and reads the answer
/// (status, body).
fn http_on(stream: &mut TcpStream, path: &str) -> (u16, String) {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split_whitespace().nth(1).unwrap_or_else(|| panic!("{status_line:?}")).parse().unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// Whether the server closed `stream` (EOF or reset) within a few seconds.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => matches!(error.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
    }
}

#[test]
fn connections_over_max_connections_are_closed_at_accept_and_counted() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "2", "--max-connections", "5"]);
    let http: SocketAddr = node.base.trim_start_matches("http://").parse().unwrap();
    let mut held: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(http).unwrap()).collect();
    for stream in &mut held {
        assert_eq!(http_on(stream, "/healthz").0, 200, "each of the five is served");
    }
    let mut sixth = TcpStream::connect(http).unwrap();
    assert!(closed_by_server(&mut sixth), "the sixth connection is closed at accept");
    for stream in &mut held {
        assert_eq!(http_on(stream, "/healthz").0, 200, "established connections still answer");
    }

    let grpc = grpc_addr(&node);
    let grpc_held: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(grpc).unwrap()).collect();
    // The five are accepted (and wait for their HTTP/2 preface) before the sixth comes.
    let deadline = Instant::now() + TIMEOUT;
    while metric_in(&http_on(&mut held[0], "/metrics").1, "wormdb_connections_open{node=\"1\",listener=\"grpc\"}") < 5 {
        assert!(Instant::now() < deadline, "the five gRPC connections were not accepted");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut sixth = TcpStream::connect(grpc).unwrap();
    assert!(closed_by_server(&mut sixth), "the sixth gRPC connection is closed at accept");

    let metrics = http_on(&mut held[0], "/metrics").1;
    assert_eq!(metric_in(&metrics, "wormdb_connections_refused_total{node=\"1\",listener=\"http\"}"), 1);
    assert_eq!(metric_in(&metrics, "wormdb_connections_refused_total{node=\"1\",listener=\"grpc\"}"), 1);
    assert_eq!(metric_in(&metrics, "wormdb_connections_open{node=\"1\",listener=\"http\"}"), 5);
    drop(grpc_held);
    drop(held);
    // Once they are gone, new connections are served again.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut stream = TcpStream::connect(http).unwrap();
        if !closed_by_server(&mut stream) {
            break;
        }
        assert!(Instant::now() < deadline, "slots were not given back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `wormdb serve ARGS` until it logs that it listens (returns the
/// HTTP address) or exits (returns its log).
fn serve(dir: &Path, args: &[&str]) -> (Option<(std::process::Child, String)>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wormdb"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .args(["--shards", "1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    while let Some(line) = lines.next() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if let Some(addr) = line.split("http listening on ").nth(1) {
            let addr = addr.split_whitespace().next().unwrap().to_string();
            // Keep reading, so the node never writes to a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (Some((child, addr)), log);
        }
    }
    child.wait().unwrap();
    (None, log)
}

#[test]
fn a_non_loopback_bind_needs_tokens_or_insecure() {
    let dir = common::durable_temp_dir();
    let exposed = ["--http-addr", "0.0.0.0:0", "--grpc-addr", "127.0.0.1:0"];
    let (started, log) = serve(&dir.path().join("a"), &exposed);
    assert!(started.is_none(), "refused:\n{log}");
    assert!(!dir.path().join("a").exists(), "a refused start creates nothing");
    for needle in ["--http-addr 0.0.0.0:0", "--auth-tokens", "--tls-client-ca", "--insecure"] {
        assert!(log.contains(needle), "{needle} in\n{log}");
    }

    for extra in
        [vec!["--insecure"], vec!["--auth-tokens", tokens_file(dir.path()).to_str().unwrap().to_string().leak()]]
    {
        let mut args = exposed.to_vec();
        args.extend(extra.iter().copied());
        let (started, log) = serve(&dir.path().join("b"), &args);
        let (mut child, addr) = started.unwrap_or_else(|| panic!("{extra:?} starts:\n{log}"));
        assert!(addr.starts_with("0.0.0.0:"), "{addr}");
        let port = addr.rsplit(':').next().unwrap();
        let health = curl("GET", &format!("http://127.0.0.1:{port}/healthz"), None, None);
        assert_eq!(health.status, 200, "{extra:?}:\n{log}");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert!(child.wait().unwrap().success());
    }
}

#[test]
fn a_tier_and_its_follower_run_on_tokens_alone() {
    use common::tier::{assert_archives_equal_the_log, Tier, CONVERGE, FOLLOWER_ID, SHARDS};

    let dir = common::durable_temp_dir();
    let text = [
        token("ops", &["admin", "query", "metrics"], ""),
        token("f9", &["ingest"], &format!("follower_ids = [{FOLLOWER_ID}]")),
    ]
    .concat();
    let tokens = write_file(dir.path(), "tokens.toml", &text);
    let ops = write_file(dir.path(), "ops.secret", &format!("{}\n", secret("ops")));
    let f9 = write_file(dir.path(), "f9.secret", &format!("{}\n", secret("f9")));
    let tier = Tier::start_with(
        dir.path(),
        &["--auth-tokens", tokens.to_str().unwrap(), "--peer-token-file", ops.to_str().unwrap()],
    );
    // The helpers' reads of the members (and of the follower, which takes
    // no tokens and ignores it) carry the operator's token.
    node::set_bearer(Some(&secret("ops")));
    let follower = TestNode::start(
        &dir.path().join("follower"),
        &[
            "--node-id",
            &FOLLOWER_ID.to_string(),
            "--shards",
            SHARDS,
            "--leader",
            &tier.leaders_list(),
            "--peer-token-file",
            f9.to_str().unwrap(),
        ],
    );
    let acked: node::Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = node::writers(follower.url("/v1/entries"), 2, 0, acked.clone(), stop.clone());
    node::wait_acked(&acked, 2000, CONVERGE);
    stop.store(true, Ordering::Release);
    for writer in writers {
        assert!(writer.join().unwrap().iter().all(|status| *status == 200));
    }
    assert_archives_equal_the_log(&tier, &follower, &acked, "tokens only");
    for member in tier.running() {
        let metrics = node::get(&member.url("/metrics")).body;
        let refused: u64 = metrics
            .lines()
            .filter(|line| line.starts_with("wormdb_auth_failures_total{"))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(refused, 0, "every call of the tier and the follower was let through:\n{metrics}");
    }
    let status = Command::new(env!("CARGO_BIN_EXE_wormdb"))
        .args(["cluster", "status", "--json", "--to", &tier.grpc[0], "--token-file", ops.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let document: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(document["members"].as_array().unwrap().len(), 3, "{document}");
    let refused =
        Command::new(env!("CARGO_BIN_EXE_wormdb")).args(["cluster", "status", "--to", &tier.grpc[0]]).output().unwrap();
    assert!(!refused.status.success(), "without --token-file: {refused:?}");
    node::set_bearer(None);
    let members_refuse = curl("GET", &tier.nodes[0].url("/v1/entries"), None, None);
    assert_eq!(members_refuse.status, 401, "the members still refuse a caller without a token");
}

#[test]
fn a_standard_client_sends_its_token_as_metadata() {
    use http::uri::PathAndQuery;
    use tonic::transport::Endpoint;
    use tonic_prost::ProstCodec;

    let dir = common::durable_temp_dir();
    let tokens = tokens_file(dir.path());
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "2", "--auth-tokens", tokens.to_str().unwrap()]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let channel = Endpoint::from_shared(format!("http://{}", node.grpc_addr)).unwrap().connect().await.unwrap();
        let client = tonic::client::Grpc::new(channel);
        let call = |token: Option<&str>, count: usize| {
            let mut request = tonic::Request::new(write_request(count));
            if let Some(name) = token {
                request.metadata_mut().insert("authorization", bearer(name).parse().unwrap());
            }
            let codec = ProstCodec::<WriteRequest, WriteResponse>::default();
            let mut client = client.clone();
            async move {
                client.ready().await.unwrap();
                client.unary(request, PathAndQuery::from_static(WRITE), codec).await
            }
        };
        assert_eq!(call(None, 2).await.unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(call(Some("nobody"), 2).await.unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(call(Some("reader"), 2).await.unwrap_err().code(), tonic::Code::PermissionDenied);
        let written = call(Some("shipper"), 2).await.unwrap().into_inner();
        assert_eq!(written.last_seq - written.first_seq, 1);
        call(Some("slow"), 100).await.unwrap();
        let over = call(Some("slow"), 100).await.unwrap_err();
        assert_eq!(over.code(), tonic::Code::ResourceExhausted, "{over:?}");
        let pushback: u64 = over.metadata().get("grpc-retry-pushback-ms").unwrap().to_str().unwrap().parse().unwrap();
        assert!((1..=1000).contains(&pushback), "{pushback}");
    });
    assert_eq!(stored(&node).len(), 2 + 100);
}
