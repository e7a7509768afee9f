//! Loki push (DESIGN.md section 11) against the real node, with real Loki
//! clients: `python-logging-loki` (JSON, tests/clients/loki_push.py) and
//! the `tracing-loki` crate (snappy protobuf, the form Promtail and Alloy
//! send). Each sends LogHub lines (https://github.com/logpai/loghub) with
//! labels; what the node stores is read back with `GET /v1/entries` and
//! compared exactly (body, tags, fields, time) with what the client put on
//! the wire, which a recording TCP relay between the two captures (the
//! clients stamp times themselves, so only the wire says what they were).
//!
//! Also: structured metadata becomes fields (JSON, gzip JSON and protobuf);
//! malformed pushes are refused with 400/413 and store nothing, the node
//! stays healthy and counts them; a token over its rate gets 429 with
//! `Retry-After` and tracing-loki, which retries with backoff, gets its
//! entries through (python-logging-loki never retries: a failed send is
//! reported and dropped, so it is not the client of that test); `GET
//! /ready` on a tier member says 503 until its groups have leaders.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::node::{free_port, get, TestNode};
use prost::Message;
use wormdb::proto::logproto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter};

const PUSH: &str = "/loki/api/v1/push";
/// Longest any wait here may take (a debug build on a shared machine).
const DEADLINE: Duration = Duration::from_secs(60);

/// One entry as the tests compare them: (ts, tags, fields, body).
type Entry = (i64, BTreeMap<String, String>, BTreeMap<String, String>, String);

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
}

fn object(value: &serde_json::Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|object| object.iter().map(|(key, value)| (key.clone(), value.as_str().unwrap().to_string())).collect())
        .unwrap_or_default()
}

/// GET with an optional bearer token; (status, body).
fn fetch(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = ureq::get(url);
    if let Some(token) = token {
        request = request.set("authorization", &format!("Bearer {token}"));
    }
    let response = match request.call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("GET {url}: {error}"),
    };
    (response.status(), response.into_string().unwrap())
}

/// The entries the node stores that carry `tag` (`k=v`), as compared here.
fn stored(node: &TestNode, tag: &str, token: Option<&str>) -> Vec<Entry> {
    let (status, body) = fetch(&node.url(&format!("/v1/entries?tag={tag}&limit=100000")), token);
    assert_eq!(status, 200, "{body}");
    body.lines()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                entry["ts"].as_i64().unwrap(),
                object(&entry["tags"]),
                object(&entry["fields"]),
                entry["body"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn all_stored(node: &TestNode) -> usize {
    let (status, body) = fetch(&node.url("/v1/entries?limit=100000"), None);
    assert_eq!(status, 200);
    body.lines().count()
}

/// A counter of `/metrics` summed over the shards: `name` with the
/// `protocol="loki"` label and, if given, `reason`.
fn loki_metric(node: &TestNode, name: &str, reason: Option<&str>, token: Option<&str>) -> u64 {
    let (_, text) = fetch(&node.url("/metrics"), token);
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains("protocol=\"loki\""))
        .filter(|line| reason.is_none_or(|reason| line.contains(&format!("reason=\"{reason}\""))))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// A POST with headers; (status, headers we look at, body).
fn push(node: &TestNode, headers: &[(&str, &str)], body: &[u8]) -> (u16, Option<String>, String) {
    let mut request = ureq::post(&node.url(PUSH));
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let response = match request.send_bytes(body) {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("POST {PUSH}: {error}"),
    };
    let status = response.status();
    let retry_after = response.header("retry-after").map(str::to_owned);
    (status, retry_after, response.into_string().unwrap())
}

fn snappy(bytes: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(bytes).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    wormdb::gzip::compress(bytes)
}

fn hdfs_lines(count: usize) -> Vec<String> {
    common::loghub::lines("HDFS").into_iter().take(count).collect()
}

/// `INFO` and `dfs.DataNode$PacketResponder` of an HDFS line.
fn level_and_component(line: &str) -> (String, String) {
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[3].to_string(), words[4].trim_end_matches(':').to_string())
}

/// The bytes one client connection sent, shared with the relay's threads.
type Recorded = Arc<Mutex<Vec<u8>>>;

/// A malformed push: what it is, its headers and body, the status and a
/// piece of the message it must get.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Vec<u8>, u16, &'a str);

/// A TCP relay that records every byte a client sends to `upstream`, per
/// connection, so a test can read the requests a real client made.
struct Recorder {
    base: String,
    connections: Arc<Mutex<Vec<Recorded>>>,
}

impl Recorder {
    fn start(upstream: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let connections: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let recorded = connections.clone();
        std::thread::spawn(move || {
            // Lives as long as the test process: a client may keep its
            // connection open until the end.
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(upstream) else { return };
                let bytes = Arc::new(Mutex::new(Vec::new()));
                recorded.lock().unwrap().push(bytes.clone());
                let (mut from_client, mut to_server) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 16 * 1024];
                    while let Ok(read) = from_client.read(&mut buffer) {
                        if read == 0 {
                            break;
                        }
                        // Recorded before it is forwarded: once the node
                        // answered, the request is here.
                        bytes.lock().unwrap().extend_from_slice(&buffer[..read]);
                        if to_server.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown(std::net::Shutdown::Write);
                });
                let (mut from_server, mut to_client) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_server, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Recorder { base, connections }
    }

    /// Every request recorded: (headers lowercased, body). The clients
    /// here send `Content-Length` bodies, one request at a time.
    fn requests(&self) -> Vec<(BTreeMap<String, String>, Vec<u8>)> {
        let mut requests = Vec::new();
        for connection in self.connections.lock().unwrap().iter() {
            let bytes = connection.lock().unwrap().clone();
            let mut at = 0;
            while let Some(end) = bytes[at..].windows(4).position(|window| window == b"\r\n\r\n") {
                let head = std::str::from_utf8(&bytes[at..at + end]).unwrap();
                let headers: BTreeMap<String, String> = head
                    .lines()
                    .skip(1)
                    .filter_map(|line| line.split_once(':'))
                    .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
                    .collect();
                let length: usize = headers.get("content-length").map_or(0, |length| length.parse().unwrap());
                let body_start = at + end + 4;
                requests.push((headers, bytes[body_start..body_start + length].to_vec()));
                at = body_start + length;
            }
        }
        requests
    }

    /// The distinct entries of every push recorded, decoded as a Loki
    /// server would (JSON or snappy protobuf).
    fn pushed_entries(&self) -> BTreeSet<Entry> {
        let mut entries = BTreeSet::new();
        for (headers, body) in self.requests() {
            let json = headers.get("content-type").is_some_and(|value| value.starts_with("application/json"));
            if json {
                let push: serde_json::Value = serde_json::from_slice(&body).unwrap();
                for stream in push["streams"].as_array().unwrap() {
                    for value in stream["values"].as_array().unwrap() {
                        let ts = value[0].as_str().unwrap().parse().unwrap();
                        let fields = object(&value[2]);
                        let line = value[1].as_str().unwrap().to_string();
                        entries.insert((ts, object(&stream["stream"]), fields, line));
                    }
                }
            } else {
                let inflated = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
                let push = PushRequest::decode(inflated.as_slice()).unwrap();
                for stream in push.streams {
                    let tags = wormdb::ingest::loki::parse_labels(&stream.labels).unwrap();
                    for entry in stream.entries {
                        let time = entry.timestamp.unwrap();
                        let fields =
                            entry.structured_metadata.into_iter().map(|pair| (pair.name, pair.value)).collect();
                        entries.insert((
                            time.seconds * 1_000_000_000 + i64::from(time.nanos),
                            tags.clone(),
                            fields,
                            entry.line,
                        ));
                    }
                }
            }
        }
        entries
    }
}

fn upstream(node: &TestNode) -> SocketAddr {
    node.base.trim_start_matches("http://").parse().unwrap()
}

#[test]
fn python_logging_loki_pushes_loghub_lines_that_come_back_exactly() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "2"]);
    let recorder = Recorder::start(upstream(&node));
    let lines = hdfs_lines(40);
    let records: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| {
            let (level, component) = level_and_component(line);
            serde_json::json!({ "line": line, "level": level, "tags": { "component": component } })
        })
        .collect();
    let spec = dir.path().join("spec.json");
    let tags = serde_json::json!({ "service": "hdfs", "host": "node-7" });
    std::fs::write(&spec, serde_json::json!({ "tags": tags, "records": records }).to_string()).unwrap();
    let output = Command::new(common::test_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/loki_push.py"))
        .arg(format!("{}{PUSH}", recorder.base))
        .arg(&spec)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loki_push.py: {}{stderr}", String::from_utf8_lossy(&output.stdout));

    let sent = recorder.pushed_entries();
    assert_eq!(sent.len(), lines.len(), "one push per record");
    for (line, (_, tags, fields, body)) in lines.iter().zip(sent.iter()) {
        // Sent in order, one line a push, with increasing times.
        assert_eq!(body, line);
        let (level, component) = level_and_component(line);
        let severity = level.to_ascii_lowercase();
        let expected = map(&[
            ("service", "hdfs"),
            ("host", "node-7"),
            ("component", &component),
            ("severity", if severity == "warn" { "warning" } else { &severity }),
            ("logger", "loghub"),
        ]);
        assert_eq!(tags, &expected);
        assert!(fields.is_empty(), "python-logging-loki sends no structured metadata");
    }
    let back: BTreeSet<Entry> = stored(&node, "service=hdfs", None).into_iter().collect();
    assert_eq!(back, sent, "stored exactly as sent: time, tags, fields, body");
    assert_eq!(loki_metric(&node, "wormdb_protocol_entries_total", None, None), lines.len() as u64);
    assert_eq!(loki_metric(&node, "wormdb_protocol_requests_total", None, None), lines.len() as u64);
}

/// Sends `lines` through tracing-loki (INFO events, target `loghub`, with
/// their index as a field) to `base`, presenting `token`, then logs a
/// heartbeat (target `heartbeat`) every 100 ms, as a running application
/// keeps logging, until `node` stores every line; then shuts the client
/// down. The heartbeat matters after a refusal: tracing-loki 0.2.7 arms
/// its backoff timer without polling it, so it retries at the first event
/// after the backoff, and a client shut down while backing off drops what
/// it held instead of retrying.
fn tracing_loki_send(base: &str, token: Option<&str>, lines: &[String], node: &TestNode, reader: Option<&str>) {
    let mut builder = tracing_loki::builder().label("service", "hdfs").unwrap().label("host", "node-9").unwrap();
    builder = builder.extra_field("pid", "4242").unwrap();
    if let Some(token) = token {
        builder = builder.http_header("authorization", format!("Bearer {token}")).unwrap();
    }
    let url = tracing_loki::url::Url::parse(base).unwrap();
    let (layer, controller, task) = builder.build_controller_url(url).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async move {
        let sending = tokio::spawn(task);
        use tracing_subscriber::layer::SubscriberExt;
        let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        for (index, line) in lines.iter().enumerate() {
            tracing::info!(target: "loghub", index, "{line}");
        }
        let deadline = Instant::now() + DEADLINE;
        while loghub_lines(&stored(node, "host=node-9", reader)).len() < lines.len() {
            assert!(Instant::now() < deadline, "tracing-loki did not deliver its entries in time");
            tokio::time::sleep(Duration::from_millis(100)).await;
            tracing::info!(target: "heartbeat", "still running");
        }
        controller.shutdown().await;
        tokio::time::timeout(DEADLINE, sending).await.expect("tracing-loki sent everything in time").unwrap();
    });
}

/// The LogHub lines among tracing-loki's entries (not its heartbeats),
/// each checked: its line is the event as JSON, with the LogHub line as
/// the message. By index.
fn loghub_lines<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> BTreeMap<u64, String> {
    let mut found = BTreeMap::new();
    for (_, _, _, body) in entries {
        let event: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["pid"], "4242", "{body}");
        if event["_target"] == "heartbeat" {
            continue;
        }
        assert_eq!(event["_target"], "loghub", "{body}");
        let index = event["index"].as_u64().unwrap();
        let message = event["message"].as_str().unwrap().to_string();
        assert!(found.insert(index, message).is_none(), "line {index} twice: {body}");
    }
    found
}

#[test]
fn tracing_loki_pushes_snappy_protobuf_that_comes_back_exactly() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "2"]);
    let recorder = Recorder::start(upstream(&node));
    let lines = hdfs_lines(200);
    tracing_loki_send(&recorder.base, None, &lines, &node, None);

    let requests = recorder.requests();
    assert!(!requests.is_empty());
    for (headers, _) in &requests {
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(headers["content-encoding"], "snappy", "tracing-loki names the snappy compression");
    }
    let sent = recorder.pushed_entries();
    for (_, tags, fields, _) in &sent {
        assert_eq!(tags, &map(&[("service", "hdfs"), ("host", "node-9"), ("level", "info")]));
        assert!(fields.is_empty(), "tracing-loki sends no structured metadata");
    }
    let expected: BTreeMap<u64, String> =
        lines.iter().cloned().enumerate().map(|(index, line)| (index as u64, line)).collect();
    assert_eq!(loghub_lines(&sent), expected, "every LogHub line sent once");
    let back: BTreeSet<Entry> = stored(&node, "host=node-9", None).into_iter().collect();
    assert_eq!(back, sent, "stored exactly as sent: time, tags, fields, body");
    assert_eq!(loki_metric(&node, "wormdb_protocol_entries_total", None, None), sent.len() as u64);
    assert_eq!(loki_metric(&node, "wormdb_protocol_requests_total", None, None), requests.len() as u64);
}

#[test]
fn structured_metadata_becomes_fields_in_every_form() {
    // The real clients above send none, so this push is built by hand, in
    // each of the three forms a shipper may use.
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "1"]);
    let lines = common::loghub::lines("OpenSSH");
    let json = serde_json::json!({ "streams": [{
        "stream": { "app": "sshd", "form": "json" },
        "values": [
            ["1700000000000000001", lines[0], { "trace_id": "0af7651916cd43dd8448eb211c80319c", "user": "root" }],
            ["1700000000000000002", lines[1]],
        ],
    }]});
    let body = serde_json::to_vec(&json).unwrap();
    assert_eq!(push(&node, &[("content-type", "application/json")], &body).0, 204);
    let mut gzipped_json = json.clone();
    gzipped_json["streams"][0]["stream"]["form"] = "gzip".into();
    let body = gzip(&serde_json::to_vec(&gzipped_json).unwrap());
    let headers = [("content-type", "application/json"), ("content-encoding", "gzip")];
    assert_eq!(push(&node, &headers, &body).0, 204);
    let request = PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{app="sshd", form="protobuf"}"#.into(),
            entries: vec![
                EntryAdapter {
                    timestamp: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 1 }),
                    line: lines[0].clone(),
                    structured_metadata: vec![
                        LabelPairAdapter { name: "trace_id".into(), value: "0af7651916cd43dd8448eb211c80319c".into() },
                        LabelPairAdapter { name: "user".into(), value: "root".into() },
                    ],
                },
                EntryAdapter {
                    timestamp: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 2 }),
                    line: lines[1].clone(),
                    structured_metadata: vec![],
                },
            ],
            hash: 0,
        }],
    };
    let body = snappy(&request.encode_to_vec());
    assert_eq!(push(&node, &[("content-type", "application/x-protobuf")], &body).0, 204);
    for form in ["json", "gzip", "protobuf"] {
        let back = stored(&node, &format!("form={form}"), None);
        let tags = map(&[("app", "sshd"), ("form", form)]);
        let expected = vec![
            (
                1_700_000_000_000_000_001,
                tags.clone(),
                map(&[("trace_id", "0af7651916cd43dd8448eb211c80319c"), ("user", "root")]),
                lines[0].clone(),
            ),
            (1_700_000_000_000_000_002, tags, BTreeMap::new(), lines[1].clone()),
        ];
        assert_eq!(back, expected, "{form}");
        let (status, body) = fetch(&node.url(&format!("/v1/entries?tag=form={form}&field=user=root&limit=10")), None);
        assert_eq!((status, body.lines().count()), (200, 1), "field= finds the metadata: {body}");
    }
    // An empty push is a success, as in Loki.
    assert_eq!(push(&node, &[("content-type", "application/json")], br#"{"streams":[]}"#).0, 204);
    assert_eq!(all_stored(&node), 6);
}

#[test]
fn malformed_pushes_are_refused_store_nothing_and_are_counted() {
    let dir = common::durable_temp_dir();
    let max_body = 64 * 1024;
    let node = TestNode::start(dir.path(), &["--shards", "1", "--max-body-bytes", &max_body.to_string()]);
    let protobuf = [("content-type", "application/x-protobuf")];
    let json = [("content-type", "application/json")];
    let good = PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{job="x"}"#.into(),
            entries: vec![EntryAdapter {
                timestamp: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
                line: common::loghub::lines("Linux")[0].clone(),
                structured_metadata: vec![],
            }],
            hash: 0,
        }],
    }
    .encode_to_vec();
    let compressed = snappy(&good);
    // The snappy header is a varint of the inflated length.
    let header_bytes = if good.len() < 0x80 { 1 } else { 2 };
    let with_header = |length: u64| {
        let mut out = Vec::new();
        let mut rest = length;
        while rest >= 0x80 {
            out.push((rest as u8) | 0x80);
            rest >>= 7;
        }
        out.push(rest as u8);
        out.extend_from_slice(&compressed[header_bytes..]);
        out
    };
    let bad_labels = snappy(
        &PushRequest { streams: vec![StreamAdapter { labels: "job=x".into(), entries: vec![], hash: 0 }] }
            .encode_to_vec(),
    );
    let cases: Vec<Case> = vec![
        ("truncated protobuf", &protobuf, snappy(&good[..good.len() - 4]), 400, "bad protobuf PushRequest"),
        ("not snappy", &protobuf, good.clone(), 400, "bad snappy body"),
        ("truncated snappy", &protobuf, compressed[..compressed.len() - 3].to_vec(), 400, "bad snappy body"),
        ("a header that claims more", &protobuf, with_header(good.len() as u64 + 7), 400, "bad snappy body"),
        ("a header that claims less", &protobuf, with_header(good.len() as u64 - 7), 400, "bad snappy body"),
        ("a header over the limit", &protobuf, with_header(1 << 30), 413, "over the 65536-byte limit"),
        ("bad labels", &protobuf, bad_labels, 400, "stream 1: bad labels \"job=x\""),
        ("bad JSON", &json, br#"{"streams":[{"stream":{"a":"b"},"values":[["1","x"]"#.to_vec(), 400, "bad JSON"),
        (
            "a bad timestamp",
            &json,
            br#"{"streams":[{"values":[["yesterday","x"]]}]}"#.to_vec(),
            400,
            "stream 1, entry 1",
        ),
        (
            "bad gzip",
            &[("content-type", "application/json"), ("content-encoding", "gzip")],
            b"not gzip".to_vec(),
            400,
            "gzip",
        ),
        ("oversize", &json, vec![b' '; max_body + 1], 413, "limit"),
        (
            "oversize inflated",
            &[("content-type", "application/json"), ("content-encoding", "gzip")],
            gzip(&vec![b' '; max_body * 4]),
            413,
            "inflates",
        ),
    ];
    let (mut malformed, mut too_large) = (0, 0);
    for (what, headers, body, status, message) in cases {
        let (answered, retry_after, text) = push(&node, headers, &body);
        assert_eq!(answered, status, "{what}: {text}");
        assert!(text.contains(message), "{what}: {text:?} does not say {message:?}");
        assert!(retry_after.is_none(), "{what}: bad data is never retried");
        match status {
            400 => malformed += 1,
            _ => too_large += 1,
        }
        assert_eq!(get(&node.url("/healthz")).status, 200, "{what}: the node stays healthy");
    }
    assert_eq!(all_stored(&node), 0, "nothing of a refused push is stored");
    assert_eq!(loki_metric(&node, "wormdb_protocol_refused_total", Some("malformed"), None), malformed);
    assert_eq!(loki_metric(&node, "wormdb_protocol_refused_total", Some("too_large"), None), too_large);
    // An unknown content encoding is 415; the good push still works after all that.
    let (status, _, _) = push(&node, &[("content-type", "application/json"), ("content-encoding", "br")], b"{}");
    assert_eq!(status, 415);
    assert_eq!(push(&node, &protobuf, &compressed).0, 204);
    assert_eq!(all_stored(&node), 1);
}

fn token_entry(name: &str, secret: &str, scopes: &[&str], extra: &str) -> String {
    use wormdb::auth::tokens::{digest, to_hex};
    let scopes: Vec<String> = scopes.iter().map(|scope| format!("{scope:?}")).collect();
    format!(
        "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [{}]\n{extra}\n",
        to_hex(&digest(secret.as_bytes())),
        scopes.join(", ")
    )
}

#[test]
fn a_token_over_its_rate_gets_429_and_tracing_loki_retries_until_its_entries_arrive() {
    let dir = common::durable_temp_dir();
    let tokens = dir.path().join("tokens.toml");
    let table = [
        token_entry("shipper", "secret-shipper", &["ingest"], "rate_entries_per_s = 2"),
        token_entry("reader", "secret-reader", &["query", "metrics"], ""),
    ]
    .concat();
    std::fs::write(&tokens, table).unwrap();
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "1", "--auth-tokens", tokens.to_str().unwrap()]);
    let reader = Some("secret-reader");
    // Spend the token's burst (2 entries) and more: the bucket is 2 in debt.
    let drain = serde_json::json!({ "streams": [{ "stream": { "who": "drain" },
        "values": [["1", "a"], ["2", "b"], ["3", "c"], ["4", "d"]] }] });
    let auth = ("authorization", "Bearer secret-shipper");
    let (status, _, text) = push(&node, &[("content-type", "application/json"), auth], drain.to_string().as_bytes());
    assert_eq!(status, 204, "{text}");
    let (status, retry_after, text) =
        push(&node, &[("content-type", "application/json"), auth], drain.to_string().as_bytes());
    assert_eq!(status, 429, "{text}");
    assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    assert!(text.contains("over its rate of 2 entries/s"), "{text}");

    let recorder = Recorder::start(upstream(&node));
    let lines = hdfs_lines(5);
    tracing_loki_send(&recorder.base, Some("secret-shipper"), &lines, &node, reader);
    let refused = loki_metric(&node, "wormdb_protocol_refused_total", Some("backpressure"), reader);
    assert!(refused >= 2, "tracing-loki was refused at least once ({refused} refusals with the probe above)");
    let attempts = recorder.requests().len();
    assert!(attempts >= 2, "tracing-loki sent again after a 429: {attempts} attempts");
    let sent = recorder.pushed_entries();
    let expected: BTreeMap<u64, String> =
        lines.iter().cloned().enumerate().map(|(index, line)| (index as u64, line)).collect();
    assert_eq!(loghub_lines(&sent), expected);
    let back: BTreeSet<Entry> = stored(&node, "host=node-9", reader).into_iter().collect();
    assert_eq!(loghub_lines(&back), expected, "every line arrived once");
    // Exactly as sent. (Heartbeats logged while the last push was refused
    // may be refused too and then dropped by the client's shutdown.)
    assert!(back.is_subset(&sent), "stored exactly as sent: {:?}", back.difference(&sent).collect::<Vec<_>>());
}

#[test]
fn ready_answers_200_only_once_a_tier_member_has_group_leaders() {
    let dir = common::durable_temp_dir();
    let plain = TestNode::start(&dir.path().join("plain"), &["--shards", "1"]);
    let reply = get(&plain.url("/ready"));
    assert_eq!((reply.status, reply.body.as_str()), (200, "ready\n"));

    // Member 1 of three, alone: no quorum, no leader, not ready.
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers: String = ports
        .iter()
        .enumerate()
        .map(|(index, port)| format!("{}=127.0.0.1:{port}", index + 1))
        .collect::<Vec<_>>()
        .join(",");
    let member = |id: usize| {
        let id_text = id.to_string();
        TestNode::start_on(
            &dir.path().join(format!("member-{id}")),
            ports[id - 1],
            &["--node-id", &id_text, "--shards", "2", "--peers", &peers],
        )
    };
    let first = member(1);
    let reply = get(&first.url("/ready"));
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.body.contains("has no known leader"), "{}", reply.body);
    // Its peers arrive: every group elects a leader, and it is ready.
    let _others = [member(2), member(3)];
    let deadline = Instant::now() + common::tier::CONVERGE;
    loop {
        let reply = get(&first.url("/ready"));
        if reply.status == 200 {
            assert_eq!(reply.body, "ready\n");
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {}", reply.body);
        std::thread::sleep(Duration::from_millis(100));
    }
}
