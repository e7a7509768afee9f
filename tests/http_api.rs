//! Black-box tests of the HTTP API: the real binary on an ephemeral port,
//! LogHub samples ingested over HTTP and queried back by time, tag and
//! direction; every error status stores nothing and leaves the node healthy.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use common::loghub::level_of;
use common::node::{get, ndjson, post, TestEntry, TestNode};

const NDJSON: &str = "application/x-ndjson";

#[test]
fn loghub_ingested_over_http_is_queried_back_by_time_tag_and_direction() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "2"]);
    let base_ts: i64 = 1_700_000_000_000_000_000;
    let lines = common::loghub_all();
    let mut expected: HashMap<i64, (&str, String)> = HashMap::new();
    let mut per_shard_seqs: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    for (chunk_index, chunk) in lines.chunks(500).enumerate() {
        let entries: Vec<TestEntry<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(index, (source, line))| {
                let ts = base_ts + (chunk_index * 500 + index) as i64 * 1000;
                expected.insert(ts, (*source, line.clone()));
                (ts, vec![("source", *source), ("level", level_of(line))], line.clone())
            })
            .collect();
        let reply = post(&node.url("/v1/entries"), NDJSON, &ndjson(&entries));
        assert_eq!(reply.status, 200, "{}", reply.body);
        let answer = reply.json();
        assert_eq!(answer["count"].as_u64(), Some(chunk.len() as u64));
        let (first, last) = (answer["first_seq"].as_u64().unwrap(), answer["last_seq"].as_u64().unwrap());
        assert_eq!(last - first + 1, chunk.len() as u64);
        per_shard_seqs.entry(answer["shard"].as_u64().unwrap()).or_default().push((first, last));
    }
    // Per shard, the acknowledged ranges are dense from 1.
    for ranges in per_shard_seqs.values_mut() {
        ranges.sort();
        let mut next = 1;
        for (first, last) in ranges.iter() {
            assert_eq!(*first, next);
            next = last + 1;
        }
    }

    // Everything, in timestamp order, with every field.
    let all = get(&node.url("/v1/entries?limit=100000"));
    assert_eq!(all.status, 200);
    assert_eq!(all.content_type.as_deref(), Some(NDJSON));
    let all = all.lines();
    assert_eq!(all.len(), lines.len());
    let mut previous = i64::MIN;
    for entry in &all {
        let ts = entry["ts"].as_i64().unwrap();
        assert!(ts > previous, "timestamp order");
        previous = ts;
        let (source, body) = &expected[&ts];
        assert_eq!(entry["body"].as_str().unwrap(), body);
        assert_eq!(entry["tags"]["source"].as_str().unwrap(), *source);
        assert_eq!(entry["node"].as_u64(), Some(1));
        assert!(entry["shard"].as_u64().unwrap() < 2);
        assert!(entry["seq"].as_u64().unwrap() >= 1);
    }

    // By tag (AND of two), by time window, backward with a limit, default limit.
    let stats_before = get(&node.url("/v1/stats")).json();
    let spark = get(&node.url("/v1/entries?tag=source=Spark&tag=level=info&limit=100000")).lines();
    let expected_spark = lines.iter().filter(|(source, line)| *source == "Spark" && level_of(line) == "info").count();
    assert_eq!(spark.len(), expected_spark);
    assert!(spark.iter().all(|entry| entry["tags"]["source"] == "Spark" && entry["tags"]["level"] == "info"));
    let stats_after = get(&node.url("/v1/stats")).json();
    let blocks_read = |stats: &serde_json::Value| -> u64 {
        stats["shards"].as_array().unwrap().iter().map(|shard| shard["blocks_read"].as_u64().unwrap()).sum()
    };
    let total_blocks = blocks_read(&stats_after) - blocks_read(&stats_before);
    // One source's appends are a small part of the blocks.
    assert!(total_blocks <= 12, "a selective query read {total_blocks} blocks");

    let window = get(&node.url(&format!("/v1/entries?from={}&to={}", base_ts + 100_000, base_ts + 200_000))).lines();
    assert_eq!(window.len(), 100);
    assert_eq!(window[0]["ts"].as_i64(), Some(base_ts + 100_000));
    let newest = get(&node.url("/v1/entries?direction=backward&limit=10")).lines();
    let newest_ts: Vec<i64> = newest.iter().map(|entry| entry["ts"].as_i64().unwrap()).collect();
    let last_ts = base_ts + (lines.len() as i64 - 1) * 1000;
    assert_eq!(newest_ts, (0..10).map(|back| last_ts - back * 1000).collect::<Vec<_>>());
    assert_eq!(get(&node.url("/v1/entries")).lines().len(), 1000, "default limit");
    assert_eq!(get(&node.url("/healthz")).status, 200);
}

#[test]
fn protobuf_ingest_and_bodies_that_are_not_utf8() {
    use prost::Message;
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "1"]);
    let request = wormdb::proto::WriteRequest {
        entries: vec![
            wormdb::proto::LogEntry {
                timestamp_ns: 5,
                tags: [("k".to_string(), "v".to_string())].into(),
                body: bytes::Bytes::from_static(&[0xff, 0xfe, 0x00, 0x41]),
                ..Default::default()
            },
            wormdb::proto::LogEntry {
                timestamp_ns: 6,
                body: bytes::Bytes::from_static(b"plain"),
                ..Default::default()
            },
        ],
    };
    let reply = post(&node.url("/v1/entries"), "application/x-protobuf", &request.encode_to_vec());
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["count"], 2);
    let entries = get(&node.url("/v1/entries")).lines();
    assert_eq!(entries[0]["body_base64"].as_str(), Some("//4AQQ=="));
    assert!(entries[0].get("body").is_none());
    assert_eq!(entries[1]["body"].as_str(), Some("plain"));
    let bad = post(&node.url("/v1/entries"), "application/x-protobuf", b"\xff\xff\xff");
    assert_eq!(bad.status, 400);
}

#[test]
fn every_error_status_stores_nothing_and_leaves_the_node_healthy() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "2", "--max-body-bytes", "65536"]);
    let good = ndjson(&[(1, vec![("a", "b")], "ok".into())]);
    assert_eq!(post(&node.url("/v1/entries"), NDJSON, &good).status, 200);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", NDJSON, b"{\"body\":\"a\"}\n{\"body\":\"b\"}\n{\"body\": oops}\n".to_vec(), 400, "line 3"),
        ("POST", NDJSON, b"{\"body\":\"a\",\"tags\":[1,2]}\n".to_vec(), 400, "line 1"),
        ("POST", NDJSON, b"{\"body\":\"a\",\"tags\":{\"k\":5}}\n".to_vec(), 400, "line 1"),
        ("POST", NDJSON, b"{\"body\":\"ok\"}\n{\"body\":\"\xff\xfe\"}\n".to_vec(), 400, "line 2"),
        ("POST", NDJSON, b"{\"body\":\"a\",\"ts\":1.5}\n".to_vec(), 400, "line 1"),
        ("POST", NDJSON, b"\n\n".to_vec(), 400, "no entries"),
        ("POST", "text/csv", good.clone(), 415, "content-type"),
    ];
    for (_, content_type, body, status, needle) in cases {
        let reply = post(&node.url("/v1/entries"), content_type, &body);
        assert_eq!(reply.status, status, "{needle}: {}", reply.body);
        let message = reply.json()["error"].as_str().unwrap().to_string();
        assert!(message.contains(needle), "{message:?} should mention {needle:?}");
        assert_eq!(node.entries_stored(), 1, "a refused request stored something ({needle})");
        assert_eq!(get(&node.url("/healthz")).status, 200);
    }
    // 413 is decided from Content-Length before the body is read, and the
    // connection is then closed; a raw client reads the answer without
    // racing to write a body the server will not take.
    {
        use std::io::Read;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", node.port())).unwrap();
        write!(
            stream,
            "POST /v1/entries HTTP/1.1\r\nHost: test\r\nContent-Type: {NDJSON}\r\nContent-Length: 70000\r\n\r\n"
        )
        .unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("limit"), "{answer}");
        assert_eq!(node.entries_stored(), 1);
    }
    assert_eq!(get(&node.url("/nowhere")).status, 404);
    assert_eq!(post(&node.url("/v1/stats"), NDJSON, b"").status, 405);
    assert_eq!(get(&node.url("/v1/entries?limit=0")).status, 400);
    assert_eq!(get(&node.url("/v1/entries?tag=nokey")).status, 400);
    assert_eq!(get(&node.url("/v1/tail?limit=5")).status, 400);
    let metrics = get(&node.url("/metrics")).body;
    assert!(metrics.contains("reason=\"malformed\"} "), "{metrics}");
    let malformed: u64 = metrics
        .lines()
        .filter(|line| line.starts_with("wormdb_rejected_requests_total") && line.contains("reason=\"malformed\""))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(malformed, 9, "six bad ingests and three bad queries");
    assert_eq!(node.entries_stored(), 1);
}

#[test]
fn backpressure_answers_429_with_retry_after_and_never_drops_silently() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "1", "--max-pending-appends", "1"]);
    let url = node.url("/v1/entries");
    let threads: Vec<_> = (0..16)
        .map(|thread| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for round in 0..40 {
                    let body = ndjson(&[(1, vec![], format!("thread {thread} round {round}"))]);
                    let reply = post(&url, NDJSON, &body);
                    outcomes.push((reply.status, reply.retry_after));
                }
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<(u16, Option<String>)> = threads.into_iter().flat_map(|thread| thread.join().unwrap()).collect();
    let accepted = outcomes.iter().filter(|(status, _)| *status == 200).count() as u64;
    let refused = outcomes.iter().filter(|(status, _)| *status == 429).count();
    assert_eq!(accepted as usize + refused, outcomes.len(), "only 200 and 429");
    assert!(refused > 0, "16 concurrent writers never hit a queue of 1");
    assert!(outcomes.iter().filter(|(status, _)| *status == 429).all(|(_, retry)| retry.as_deref() == Some("1")));
    assert_eq!(node.entries_stored(), accepted, "every 200 stored, every 429 stored nothing");
}

#[test]
fn tail_filters_by_field_too() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "1"]);
    let lines = node.tail("field=req=42");
    let line = |body: &str, fields: &str| format!("{{\"body\":\"{body}\"{fields}}}\n");
    // Readiness: a marker that matches comes back once the tail is live.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    'ready: for marker in 0.. {
        assert!(std::time::Instant::now() < deadline, "the tail never delivered a marker");
        let body = line(&format!("marker {marker}"), ",\"fields\":{\"req\":\"42\"}");
        assert_eq!(post(&node.url("/v1/entries"), NDJSON, body.as_bytes()).status, 200);
        while let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            if line["body"].as_str().unwrap().starts_with("marker ") {
                break 'ready;
            }
        }
    }
    let batch = [
        line("wanted", ",\"fields\":{\"req\":\"42\",\"user\":\"ann\"}"),
        line("other value", ",\"fields\":{\"req\":\"7\"}"),
        line("no fields", ""),
        line("wanted too", ",\"fields\":{\"req\":\"42\"}"),
    ]
    .concat();
    assert_eq!(post(&node.url("/v1/entries"), NDJSON, batch.as_bytes()).status, 200);
    let mut bodies = Vec::new();
    while bodies.len() < 2 {
        let line = lines.recv_timeout(Duration::from_secs(20)).expect("the matching entries are tailed");
        let body = line["body"].as_str().unwrap().to_string();
        if !body.starts_with("marker ") {
            assert_eq!(line["fields"]["req"], "42", "{line}");
            bodies.push(body);
        }
    }
    assert_eq!(bodies, ["wanted", "wanted too"]);
    // Nothing else comes: a last marker arrives with nothing before it.
    let marker = line("last marker", ",\"fields\":{\"req\":\"42\"}");
    assert_eq!(post(&node.url("/v1/entries"), NDJSON, marker.as_bytes()).status, 200);
    let next = lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(next["body"], "last marker", "only entries whose field matches: {next}");
}

#[test]
fn tail_streams_newly_committed_matching_entries() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "2"]);
    post(&node.url("/v1/entries"), NDJSON, &ndjson(&[(1, vec![("app", "x")], "before the tail".into())]));
    let lines = node.tail("tag=app=x");
    let mut seen = Vec::new();
    // Readiness: each shard's part of the tail starts at that shard's
    // durable seq when the shard gets the request, some time after the
    // response headers. Post markers (each on a new connection, so on
    // either shard) until one came back from every shard: from then on,
    // every commit is tailed.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut live_shards = std::collections::BTreeSet::new();
    for marker in 0.. {
        assert!(std::time::Instant::now() < deadline, "the tail never delivered a marker from both shards: {seen:?}");
        let reply =
            post(&node.url("/v1/entries"), NDJSON, &ndjson(&[(2, vec![("app", "x")], format!("marker {marker}"))]));
        assert_eq!(reply.status, 200);
        while let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            if line["body"].as_str().unwrap().starts_with("marker ") {
                live_shards.insert(line["shard"].as_u64().unwrap());
            }
            seen.push(line);
        }
        if live_shards.len() == 2 {
            break;
        }
    }
    // Several connections, so both shards see writes.
    for round in 0..20 {
        let entries = vec![
            (10 + round, vec![("app", "x")], format!("x {round}")),
            (10 + round, vec![("app", "y")], format!("y {round}")),
        ];
        assert_eq!(post(&node.url("/v1/entries"), NDJSON, &ndjson(&entries)).status, 200);
    }
    let is_marker = |line: &serde_json::Value| line["body"].as_str().unwrap().starts_with("marker ");
    while seen.iter().filter(|line| !is_marker(line)).count() < 20 {
        match lines.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let mut bodies: Vec<String> =
        seen.iter().filter(|line| !is_marker(line)).map(|entry| entry["body"].as_str().unwrap().to_string()).collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..20).map(|round| format!("x {round}")).collect();
    expected.sort();
    assert_eq!(bodies, expected, "only new entries tagged app=x");
}

#[test]
fn stats_and_metrics_expose_the_documented_keys() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "2", "--node-id", "7"]);
    post(&node.url("/v1/entries"), NDJSON, &ndjson(&[(1, vec![("a", "b")], "hello".into())]));
    let stats = get(&node.url("/v1/stats")).json();
    assert_eq!(stats["node_id"], 7);
    let shards = stats["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    for shard in shards {
        for key in ["shard", "last_seq", "entries", "raw_bytes", "disk_bytes", "segments"] {
            assert!(shard[key].is_u64(), "missing {key}: {shard}");
        }
    }
    assert_eq!(shards.iter().map(|shard| shard["entries"].as_u64().unwrap()).sum::<u64>(), 1);
    let metrics = get(&node.url("/metrics"));
    assert_eq!(metrics.status, 200);
    for family in [
        "wormdb_ingest_entries_total",
        "wormdb_ingest_bytes_total",
        "wormdb_commits_total",
        "wormdb_fsync_duration_seconds_bucket",
        "wormdb_append_queue_depth",
        "wormdb_rejected_requests_total",
    ] {
        assert!(
            metrics.body.contains(&format!("# TYPE {family}")) || metrics.body.contains(family),
            "{family} missing"
        );
    }
    assert!(metrics.body.contains("wormdb_ingest_entries_total{node=\"7\""));
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::io::Read;
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "1", "--header-read-timeout", "1s"]);
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", node.port())).unwrap();
    write!(slow, "GET /healthz HTTP/1.1\r\nHost: test\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 1024];
    let outcome = slow.read(&mut buffer);
    let waited = started.elapsed();
    // Closed (EOF or reset), possibly after a 408, and not by our own 10 s read timeout.
    let closed = match &outcome {
        Ok(0) => true,
        Ok(read) => String::from_utf8_lossy(&buffer[..*read]).contains("408"),
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock && error.kind() != std::io::ErrorKind::TimedOut,
    };
    assert!(closed, "{outcome:?}");
    assert!(waited < Duration::from_secs(8), "closed after {waited:?}");
    assert_eq!(get(&node.url("/healthz")).status, 200, "other clients are served");
}

#[test]
fn the_default_relative_data_dir_works() {
    // The README's first command: no --data-dir, so ./wormdb-data.
    let dir = common::durable_temp_dir();
    let mut node = TestNode::start_in(dir.path(), &["--shards", "2"]);
    let reply = post(&node.url("/v1/entries"), NDJSON, &ndjson(&[(5, vec![("app", "web")], "hello".into())]));
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, node.log_text());
    assert_eq!(get(&node.url("/v1/entries")).lines().len(), 1);
    assert!(dir.path().join("wormdb-data/shard-000").is_dir());
    assert_eq!(node.terminate(), 0);
    node.restart();
    assert_eq!(get(&node.url("/v1/entries")).lines().len(), 1, "data found again after a restart");
}

/// Reads one HTTP/1.1 response (headers and a `Content-Length` body) from
/// a raw connection: status, lower-case headers, body.
fn read_response(stream: &mut impl BufRead) -> (u16, HashMap<String, String>, String) {
    let mut status_line = String::new();
    stream.read_line(&mut status_line).unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap_or_else(|| panic!("{status_line:?}")).parse().unwrap();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
    }
    let length: usize = headers.get("content-length").map_or(0, |length| length.parse().unwrap());
    let mut body = vec![0; length];
    std::io::Read::read_exact(stream, &mut body).unwrap();
    (status, headers, String::from_utf8(body).unwrap())
}

/// NDJSON of exactly `bytes` bytes: entries of about 1000 bytes, the last
/// one padded to the length.
fn ndjson_of_length(bytes: usize, tag: &str) -> (Vec<u8>, usize) {
    let line = |body: &str| format!("{{\"tags\":{{\"t\":\"{tag}\"}},\"body\":\"{body}\"}}\n");
    let overhead = line("").len();
    let mut out = Vec::new();
    let mut entries = 0;
    while bytes - out.len() >= 2 * 1000 {
        out.extend_from_slice(line(&"x".repeat(1000 - overhead)).as_bytes());
        entries += 1;
    }
    out.extend_from_slice(line(&"y".repeat(bytes - out.len() - overhead)).as_bytes());
    assert_eq!(out.len(), bytes);
    (out, entries + 1)
}

/// Opens a connection and sends the headers of an NDJSON ingest with
/// `Expect: 100-continue`, so that the server answers before any body byte
/// is sent: `100 Continue` once it reserved the body, or its refusal.
fn start_ingest(node: &TestNode, framing: &str) -> BufReader<std::net::TcpStream> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", node.port())).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "POST /v1/entries HTTP/1.1\r\nHost: test\r\nContent-Type: {NDJSON}\r\nExpect: 100-continue\r\n{framing}\r\n"
    )
    .unwrap();
    BufReader::new(stream)
}

/// Reads the `100 Continue` the server sends once it starts reading a body.
fn read_continue(stream: &mut impl BufRead) {
    let mut lines = String::new();
    stream.read_line(&mut lines).unwrap();
    stream.read_line(&mut lines).unwrap();
    assert_eq!(lines, "HTTP/1.1 100 Continue\r\n\r\n");
}

#[test]
fn request_bodies_in_flight_have_a_per_core_budget() {
    const BUDGET: usize = 1 << 20;
    let dir = common::durable_temp_dir();
    // One core, so every connection draws on the same budget; sizes with units.
    let node = TestNode::start(
        dir.path(),
        &["--shards", "1", "--max-body-bytes", "1MiB", "--max-body-bytes-in-flight", "1 MiB"],
    );
    let url = node.url("/v1/entries");

    // A holds 700 kB of the budget: its server answered 100 Continue, so the
    // reservation is made, and it sends its body only later.
    let (held_body, held_entries) = ndjson_of_length(700_000, "held");
    let mut held = start_ingest(&node, &format!("Content-Length: {}\r\n", held_body.len()));
    read_continue(&mut held);

    // Another large body no longer fits: 429 before its body is read.
    let mut refused = start_ingest(&node, "Content-Length: 700000\r\n");
    let (status, headers, body) = read_response(&mut refused);
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));
    let message = serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].as_str().unwrap().to_string();
    assert!(message.contains("--max-body-bytes-in-flight") && message.contains("1048576"), "{message}");

    // A chunked body reserves as it arrives: refused at the byte past the
    // budget (all of it sent is read, so the close is clean).
    let mut chunked = start_ingest(&node, "Transfer-Encoding: chunked\r\n");
    read_continue(&mut chunked);
    let over = BUDGET - held_body.len() + 1;
    write!(chunked.get_mut(), "{:x}\r\n", over + 1000).unwrap();
    chunked.get_mut().write_all(&vec![b' '; over]).unwrap();
    let (status, headers, body) = read_response(&mut chunked);
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));

    // Small bodies still pass while A holds its share.
    for round in 0..3 {
        let reply = post(&url, NDJSON, &ndjson(&[(1, vec![("t", "small")], format!("small {round}"))]));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(node.entries_stored(), 3, "the refused requests stored nothing");

    // A sends its body and is stored.
    held.get_mut().write_all(&held_body).unwrap();
    let (status, _, body) = read_response(&mut held);
    assert_eq!(status, 200, "{body}");
    assert_eq!(node.entries_stored(), 3 + held_entries as u64);

    // Failed requests give their reservation back too: a body cut short
    // (the client half-closes mid-body) and a malformed one.
    let mut cut = start_ingest(&node, "Content-Length: 900000\r\n");
    read_continue(&mut cut);
    cut.get_mut().write_all(&[b'{'; 1000]).unwrap();
    cut.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
    let (status, _, body) = read_response(&mut cut);
    assert_eq!(status, 400, "{body}");
    let reply = post(&url, NDJSON, &vec![b'{'; 900_000]);
    assert_eq!(reply.status, 400, "{}", reply.body);

    // With everything finished the budget is whole again: a body of the
    // entire budget is taken.
    let (whole_body, whole_entries) = ndjson_of_length(BUDGET, "whole");
    let reply = post(&url, NDJSON, &whole_body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(node.entries_stored(), 3 + (held_entries + whole_entries) as u64);

    let metrics = get(&node.url("/metrics")).body;
    let backpressure: u64 = metrics
        .lines()
        .filter(|line| line.starts_with("wormdb_rejected_requests_total") && line.contains("reason=\"backpressure\""))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(backpressure, 2, "both refusals count as 429s");
}

#[test]
fn entry_fields_are_stored_queried_back_and_matched_exactly() {
    use prost::Message;
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "2"]);
    let body = concat!(
        r#"{"ts": 10, "tags": {"app": "web"}, "fields": {"trace_id": "abc", "user": "u=1"}, "body": "first"}"#,
        "\n",
        r#"{"ts": 11, "tags": {"app": "web"}, "body": "no fields"}"#,
        "\n",
        r#"{"ts": 12, "fields": {"trace_id": "def", "note": "a \"quoted\"\nline"}, "body": "second"}"#,
        "\n",
    );
    let reply = post(&node.url("/v1/entries"), NDJSON, body.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Protobuf ingest carries them too.
    let request = wormdb::proto::WriteRequest {
        entries: vec![wormdb::proto::LogEntry {
            timestamp_ns: 13,
            fields: [("trace_id".to_string(), "ghi".to_string())].into(),
            body: bytes::Bytes::from_static(b"protobuf"),
            ..Default::default()
        }],
    };
    let reply = post(&node.url("/v1/entries"), "application/x-protobuf", &request.encode_to_vec());
    assert_eq!(reply.status, 200, "{}", reply.body);

    let all = get(&node.url("/v1/entries")).lines();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0]["fields"], serde_json::json!({"trace_id": "abc", "user": "u=1"}));
    assert!(all[1].get("fields").is_none(), "no fields key for an entry without fields: {}", all[1]);
    assert_eq!(all[2]["fields"], serde_json::json!({"note": "a \"quoted\"\nline", "trace_id": "def"}));
    assert_eq!(all[3]["fields"], serde_json::json!({"trace_id": "ghi"}));
    assert_eq!(all[0]["tags"], serde_json::json!({"app": "web"}), "fields are not tags");

    let bodies = |query: &str| -> Vec<String> {
        let reply = get(&node.url(&format!("/v1/entries?{query}")));
        assert_eq!(reply.status, 200, "{query}: {}", reply.body);
        reply.lines().iter().map(|line| line["body"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(bodies("field=trace_id=abc"), ["first"]);
    assert_eq!(bodies("field=user=u%3D1"), ["first"]);
    assert_eq!(bodies("field=trace_id=def&field=note=a+%22quoted%22%0Aline"), ["second"]);
    assert_eq!(bodies("field=trace_id=abc&tag=app=web"), ["first"]);
    assert!(bodies("field=trace_id=ab").is_empty(), "exact match only");
    assert!(bodies("field=trace_id=abc&field=user=other").is_empty(), "AND");
    assert!(bodies("field=app=web").is_empty(), "a tag is not a field");
    assert!(bodies("tag=trace_id=abc").is_empty(), "a field is not a tag");
    assert_eq!(get(&node.url("/v1/entries?field=nokey")).status, 400);
    assert_eq!(get(&node.url("/v1/entries?field==v")).status, 400);

    // Bad fields: a 400 naming the problem, nothing stored.
    let long_value = "v".repeat(wormdb::limits::FIELD_VALUE_BYTES_MAX + 1);
    let too_many: Vec<String> =
        (0..=wormdb::limits::ENTRY_FIELDS_MAX).map(|index| format!("\"k{index}\":\"v\"")).collect();
    let cases: Vec<(String, &str)> = vec![
        (r#"{"body":"a","fields":{"k":5}}"#.into(), "fields must be an object of strings, field \"k\" is"),
        (r#"{"body":"a","fields":["k"]}"#.into(), "fields must be an object of strings"),
        (r#"{"body":"a","fields":{"":"v"}}"#.into(), "empty field key"),
        (r#"{"body":"a","fields":{"k":"1","k":"2"}}"#.into(), "duplicate field key"),
        (r#"{"body":"a","fields":{},"fields":{}}"#.into(), "duplicate field `fields`"),
        (format!(r#"{{"body":"a","fields":{{"k":"{long_value}"}}}}"#), "FIELD_VALUE_BYTES_MAX"),
        (format!(r#"{{"body":"a","fields":{{{}}}}}"#, too_many.join(",")), "ENTRY_FIELDS_MAX"),
    ];
    for (line, needle) in cases {
        let body = format!("{{\"body\":\"fine\"}}\n{line}\n");
        let reply = post(&node.url("/v1/entries"), NDJSON, body.as_bytes());
        assert_eq!(reply.status, 400, "{needle}: {}", reply.body);
        let message = reply.json()["error"].as_str().unwrap().to_string();
        assert!(message.contains("line 2") && message.contains(needle), "{message:?} should mention {needle:?}");
        assert_eq!(node.entries_stored(), 4, "a refused request stored something ({needle})");
    }
    let request = wormdb::proto::WriteRequest {
        entries: vec![wormdb::proto::LogEntry {
            fields: [(String::new(), "v".to_string())].into(),
            ..Default::default()
        }],
    };
    let reply = post(&node.url("/v1/entries"), "application/x-protobuf", &request.encode_to_vec());
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("empty field key"), "{}", reply.body);
    assert_eq!(node.entries_stored(), 4);
}
