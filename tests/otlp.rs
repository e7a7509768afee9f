//! OTLP logs (DESIGN.md section 11) on a real node, from the real
//! OpenTelemetry Python SDK and its three OTLP log exporters
//! (`tests/clients/otlp_logs.py`): gRPC and HTTP protobuf, each plain and
//! gzip, and HTTP JSON. LogHub lines come back with the body, tags, fields
//! and time the mapping promises, exactly. The opentelemetry-proto
//! `examples/logs.json`, posted with curl, maps as the docs say. Malformed
//! requests (truncated protobuf, corrupt gzip, bad JSON, oversize, a wrong
//! content type, an entry over its limits), over HTTP and over gRPC (a raw
//! HTTP/2 client, since no real one sends such bytes), get their error
//! form, store nothing, are counted, and leave the node healthy. A token's
//! small ingest rate makes exports refused (429 with `Retry-After`;
//! `UNAVAILABLE` with `RetryInfo` in both trailers), and the SDK's
//! exporters wait as told, retry and deliver everything.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::node::TestNode;
use prost::Message;
use serde_json::{json, Value};
use wormdb::auth::tokens::{digest, to_hex};
use wormdb::grpc::status::{Code, Status, GOOGLE_RPC_RETRY_INFO_BIN, GRPC_STATUS_DETAILS_BIN};
use wormdb::proto::google::rpc::{RetryInfo, Status as RpcStatus};
use wormdb::proto::opentelemetry::proto::collector::logs::v1::ExportLogsServiceRequest;
use wormdb::proto::opentelemetry::proto::common::v1::{any_value, AnyValue, KeyValue};
use wormdb::proto::opentelemetry::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use wormdb::proto::opentelemetry::proto::resource::v1::Resource;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
/// What the client script gives every record (see its doc).
const TRACE_ID: u128 = 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c;
const SPAN_ID: u64 = 0x00f0_67aa_0ba9_02b7;
const LINES_PER_RUN: usize = 30;

// ---------------------------------------------------------------- helpers

/// One run of the SDK client: `(every export succeeded, its output)`.
#[allow(clippy::too_many_arguments)]
fn sdk(
    dir: &Path,
    transport: &str,
    endpoint: &str,
    lines: &[String],
    service: &str,
    base_ns: i64,
    compression: &str,
    extra: &[&str],
) -> (bool, String) {
    let file = dir.join(format!("{service}.json"));
    std::fs::write(&file, serde_json::to_vec(lines).unwrap()).unwrap();
    let output = Command::new(common::test_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/otlp_logs.py"))
        .args([transport, endpoint])
        .arg(&file)
        .args(["--service", service, "--base-ns", &base_ns.to_string(), "--compression", compression])
        .args(extra)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build()
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// An HTTP request with `headers`, any status answered.
fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    let mut request = agent().request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some(body) => request.send_bytes(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("{method} {url}: {error}"),
    };
    let headers = response
        .headers_names()
        .iter()
        .map(|name| (name.clone(), response.header(name).unwrap().to_string()))
        .collect();
    let status = response.status();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut body).unwrap();
    Reply { status, headers, body }
}

fn bearer(token: Option<&str>) -> Vec<(&'static str, String)> {
    token.map(|secret| ("authorization", format!("Bearer {secret}"))).into_iter().collect()
}

/// The entries a query returns (NDJSON lines).
fn entries(node: &TestNode, query: &str, token: Option<&str>) -> Vec<Value> {
    let headers = bearer(token);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let reply = http("GET", &node.url(&format!("/v1/entries?{query}")), &headers, None);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    String::from_utf8(reply.body).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// The sum over shards of the series `name` whose labels include every
/// one of `labels` (`protocol="otlp-grpc"`).
fn metric(node: &TestNode, name: &str, labels: &[&str], token: Option<&str>) -> u64 {
    let headers = bearer(token);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let text = String::from_utf8(http("GET", &node.url("/metrics"), &headers, None).body).unwrap();
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && labels.iter().all(|label| line.contains(label)))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn healthy(node: &TestNode) {
    let reply = http("GET", &node.url("/healthz"), &[], None);
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"ok\n"[..]));
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    wormdb::gzip::compress(bytes)
}

/// LogHub lines with at least two words (the script's `loghub.words`).
fn loghub(name: &str, count: usize) -> Vec<String> {
    let lines: Vec<String> = common::loghub_lines(name)
        .into_iter()
        .filter(|line| line.split_whitespace().count() >= 2)
        .take(count)
        .collect();
    assert_eq!(lines.len(), count, "{name}");
    lines
}

fn map(pairs: &[(&str, String)]) -> Value {
    Value::Object(pairs.iter().map(|(key, value)| (key.to_string(), Value::from(value.as_str()))).collect())
}

/// The entry the script's record `index` of `line` must become (see
/// `tests/clients/otlp_logs.py` and docs/ingest.md).
fn expected(service: &str, base_ns: i64, index: usize, line: &str) -> Value {
    let level = ["Information", "ERROR2", "WARN"][index % 3];
    let ratio = index as f64 / 4.0;
    let ratio = if ratio.fract() == 0.0 { format!("{ratio:.1}") } else { format!("{ratio}") };
    let words: Vec<&str> = line.split_whitespace().take(2).collect();
    json!({
        "ts": base_ns + index as i64 * 1000,
        "tags": map(&[
            ("service.name", service.to_string()),
            ("host.name", "loghub-host".to_string()),
            ("level", level.to_string()),
        ]),
        "fields": map(&[
            ("service.version", "1.2.3".to_string()),
            ("scope.name", "wormdb.tests".to_string()),
            ("scope.version", "0.1.0".to_string()),
            ("scope.kind", "integration".to_string()),
            ("loghub.line", index.to_string()),
            ("loghub.ratio", ratio),
            ("loghub.even", (index % 2 == 0).to_string()),
            ("loghub.words", serde_json::to_string(&words).unwrap()),
            ("loghub.origin.file", "loghub".to_string()),
            ("loghub.origin.index", index.to_string()),
            ("trace_id", format!("{:032x}", TRACE_ID ^ index as u128)),
            ("span_id", format!("{:016x}", SPAN_ID + index as u64)),
            ("flags", "1".to_string()),
        ]),
        "body": line,
    })
}

/// Checks that the entries of `service` are exactly the script's records
/// of `lines`.
fn assert_delivered(node: &TestNode, service: &str, base_ns: i64, lines: &[String], token: Option<&str>) {
    let stored = entries(node, &format!("tag=service.name={service}&limit=1000"), token);
    assert_eq!(stored.len(), lines.len(), "{service}: {stored:?}");
    for (index, (entry, line)) in stored.iter().zip(lines).enumerate() {
        let mut seen = json!({});
        for key in ["ts", "tags", "fields", "body"] {
            seen[key] = entry[key].clone();
        }
        assert_eq!(seen, expected(service, base_ns, index, line), "{service} record {index}");
    }
}

/// A small valid request of `count` records, protobuf.
fn request(service: &str, count: usize) -> ExportLogsServiceRequest {
    let string = |text: &str| Some(AnyValue { value: Some(any_value::Value::StringValue(text.to_string())) });
    let records = (0..count)
        .map(|index| LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000 + index as u64,
            body: string(&format!("record {index}")),
            ..LogRecord::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: string(service),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs { log_records: records, ..ScopeLogs::default() }],
            ..ResourceLogs::default()
        }],
    }
}

/// A gRPC message: the 5-byte prefix (with `flag`) and `message`.
fn framed(flag: u8, announced: usize, message: &[u8]) -> Vec<u8> {
    let mut bytes = vec![flag];
    bytes.extend_from_slice(&u32::try_from(announced).unwrap().to_be_bytes());
    bytes.extend_from_slice(message);
    bytes
}

/// What a raw gRPC call got: the response headers, the messages' bytes,
/// and the status (from the trailers, or a trailers-only response).
struct GrpcReply {
    headers: http::HeaderMap,
    trailers: http::HeaderMap,
    data: Vec<u8>,
    status: Status,
}

/// One `LogsService/Export` call sending `body` as it is, with `headers`:
/// a raw HTTP/2 client, to send what no real client would.
fn raw_export(addr: &str, headers: &[(&str, &str)], body: Vec<u8>) -> GrpcReply {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.unwrap();
        let mut request = http::Request::post(format!("http://{addr}{EXPORT_PATH}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (response, mut send) = client.send_request(request.body(()).unwrap(), false).unwrap();
        send.reserve_capacity(body.len());
        // The body may be refused before it is all sent: that is an answer too.
        let _ = send.send_data(Bytes::from(body), true);
        let (parts, mut received) = response.await.unwrap().into_parts();
        let mut data = Vec::new();
        while let Some(chunk) = received.data().await {
            let chunk = chunk.unwrap();
            let _ = received.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = received.trailers().await.unwrap().unwrap_or_default();
        let status = Status::from_header_map(&trailers)
            .or_else(|| Status::from_header_map(&parts.headers))
            .expect("a grpc-status");
        GrpcReply { headers: parts.headers, trailers, data, status }
    })
}

fn token_file(dir: &Path, tokens: &[(&str, &str, &str)]) -> String {
    let mut text = String::new();
    for (name, scope, extra) in tokens {
        let sha256 = to_hex(&digest(format!("secret-{name}").as_bytes()));
        text.push_str(&format!(
            "[[token]]\nname = \"{name}\"\nsha256 = \"{sha256}\"\nscopes = [\"{scope}\"]\n{extra}\n"
        ));
    }
    let path = dir.join("tokens.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

// ------------------------------------------------------------------ tests

#[test]
fn the_sdk_exporters_deliver_loghub_lines_exactly() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "1"]);
    let logs = node.url("/v1/logs");
    let runs = [
        ("grpc", node.grpc_addr.as_str(), "none", "HDFS", "otlp-grpc"),
        ("grpc", node.grpc_addr.as_str(), "gzip", "HDFS", "otlp-grpc"),
        ("http", logs.as_str(), "none", "OpenSSH", "otlp-http"),
        ("http", logs.as_str(), "gzip", "OpenSSH", "otlp-http"),
        ("http-json", logs.as_str(), "none", "Apache", "otlp-http"),
        ("http-json", logs.as_str(), "gzip", "Apache", "otlp-http"),
    ];
    let mut wire_bytes = Vec::new();
    for (run, (transport, endpoint, compression, source, protocol)) in runs.into_iter().enumerate() {
        let lines = loghub(source, LINES_PER_RUN);
        let service = format!("{transport}-{compression}");
        let base_ns = 1_700_000_000_000_000_000 + run as i64 * 1_000_000_000;
        let (requests, bytes) = (
            metric(&node, "wormdb_protocol_requests_total", &[&format!("protocol=\"{protocol}\"")], None),
            metric(&node, "wormdb_protocol_bytes_total", &[&format!("protocol=\"{protocol}\"")], None),
        );
        let (ok, output) = sdk(dir.path(), transport, endpoint, &lines, &service, base_ns, compression, &[]);
        assert!(ok, "{service}: {output}");
        assert_delivered(&node, &service, base_ns, &lines, None);
        let protocol_label = format!("protocol=\"{protocol}\"");
        assert_eq!(
            metric(&node, "wormdb_protocol_requests_total", &[&protocol_label], None),
            requests + 1,
            "{service}"
        );
        let sent = metric(&node, "wormdb_protocol_bytes_total", &[&protocol_label], None) - bytes;
        wire_bytes.push((service, sent));
    }
    // gzip really went over the wire, and was read: the same lines in
    // far fewer bytes.
    for pair in wire_bytes.chunks(2) {
        let ((plain, plain_bytes), (gzipped, gzip_bytes)) = (&pair[0], &pair[1]);
        assert!(gzip_bytes * 2 < *plain_bytes, "{gzipped} {gzip_bytes} bytes vs {plain} {plain_bytes}");
    }
    assert_eq!(
        metric(&node, "wormdb_protocol_entries_total", &["protocol=\"otlp-grpc\""], None),
        2 * LINES_PER_RUN as u64
    );
    assert_eq!(
        metric(&node, "wormdb_protocol_entries_total", &["protocol=\"otlp-http\""], None),
        4 * LINES_PER_RUN as u64
    );
    assert_eq!(metric(&node, "wormdb_protocol_refused_total", &["protocol=\"otlp-"], None), 0);
}

#[test]
fn the_specification_example_and_empty_requests() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "1"]);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/otlp/logs.json");
    let output = Command::new("curl")
        .args(["-sS", "-i", "-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", example.display()))
        .arg(node.url("/v1/logs"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.to_ascii_lowercase().contains("content-type: application/json"), "{text}");
    assert!(text.ends_with("\r\n\r\n{}"), "an empty ExportLogsServiceResponse: {text}");

    let stored = entries(&node, "tag=service.name=my.service", None);
    assert_eq!(stored.len(), 1);
    let entry = &stored[0];
    assert_eq!(entry["ts"], json!(1_544_712_660_300_000_000_i64));
    assert_eq!(entry["body"], json!("Example log record"));
    assert_eq!(entry["tags"], json!({"service.name": "my.service", "level": "Information"}));
    assert_eq!(
        entry["fields"],
        json!({
            "my.scope.attribute": "some scope attribute",
            "scope.name": "my.library",
            "scope.version": "1.0.0",
            "string.attribute": "some string",
            "boolean.attribute": "true",
            "int.attribute": "10",
            "double.attribute": "637.704",
            "array.attribute": "[\"many\",\"values\"]",
            "map.attribute.some.map.key": "some value",
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "span_id": "eee19b7ec3c1b174",
        })
    );
    let by_field = entries(&node, "field=trace_id=5b8efff798038103d269b633813fc60c", None);
    assert_eq!(by_field.len(), 1, "fields are matched by field=k=v");

    // Empty requests: successes that store nothing, in each form.
    let json_reply = http("POST", &node.url("/v1/logs"), &[("content-type", "application/json")], Some(b"{}"));
    assert_eq!((json_reply.status, json_reply.json()), (200, json!({})));
    let protobuf = http("POST", &node.url("/v1/logs"), &[("content-type", "application/x-protobuf")], Some(b""));
    assert_eq!((protobuf.status, protobuf.header("content-type")), (200, Some("application/x-protobuf")));
    assert!(protobuf.body.is_empty(), "an empty ExportLogsServiceResponse encodes to nothing");
    let grpc = raw_export(&node.grpc_addr, &[], framed(0, 0, b""));
    assert_eq!(grpc.status.code, Code::Ok, "{:?}", grpc.status);
    assert_eq!(grpc.data, framed(0, 0, b""), "one empty ExportLogsServiceResponse");
    assert_eq!(grpc.headers.get("grpc-accept-encoding").unwrap(), "gzip");
    assert_eq!(entries(&node, "limit=100", None).len(), 1, "nothing more stored");
    assert_eq!(metric(&node, "wormdb_protocol_requests_total", &["protocol=\"otlp-http\""], None), 3);
    assert_eq!(metric(&node, "wormdb_protocol_requests_total", &["protocol=\"otlp-grpc\""], None), 1);

    // --otlp-tag-attributes "": no resource attribute is a tag.
    let untagged = TestNode::start(&dir.path().join("untagged"), &["--shards", "1", "--otlp-tag-attributes", ""]);
    let body = std::fs::read(&example).unwrap();
    let reply = http("POST", &untagged.url("/v1/logs"), &[("content-type", "application/json")], Some(&body));
    assert_eq!(reply.status, 200);
    let stored = entries(&untagged, "field=service.name=my.service", None);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["tags"], json!({"level": "Information"}));
}

#[test]
fn malformed_requests_are_refused_counted_and_store_nothing() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "1", "--max-body-bytes", "64KiB"]);
    let url = node.url("/v1/logs");
    let valid = request("malformed", 3).encode_to_vec();
    let protobuf = [("content-type", "application/x-protobuf")];

    // HTTP: each refusal in the request's encoding.
    let truncated = http("POST", &url, &protobuf, Some(&valid[..valid.len() - 3]));
    assert_eq!(truncated.status, 400);
    assert_eq!(truncated.header("content-type"), Some("application/x-protobuf"));
    assert!(truncated.header("retry-after").is_none());
    let status = RpcStatus::decode(truncated.body.as_slice()).unwrap();
    assert_eq!(status.code, 3);
    assert!(status.message.contains("malformed ExportLogsServiceRequest"), "{}", status.message);

    let corrupt_gzip =
        http("POST", &url, &[protobuf[0], ("content-encoding", "gzip")], Some(&gzip(&valid)[..valid.len() / 2]));
    assert_eq!(corrupt_gzip.status, 400, "{}", String::from_utf8_lossy(&corrupt_gzip.body));
    assert_eq!(RpcStatus::decode(corrupt_gzip.body.as_slice()).unwrap().code, 3);

    let bad_json =
        http("POST", &url, &[("content-type", "application/json")], Some(br#"{"resourceLogs":[{"scopeLogs":"#));
    assert_eq!(bad_json.status, 400);
    assert_eq!(bad_json.header("content-type"), Some("application/json"));
    let body = bad_json.json();
    assert_eq!(body["code"], json!(3));
    assert!(body["message"].as_str().unwrap().contains("OTLP/JSON"), "{body}");

    let bad_hex = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"not hex"}]}]}]}"#;
    assert_eq!(http("POST", &url, &[("content-type", "application/json")], Some(bad_hex)).status, 400);

    let oversize = vec![b' '; 100 << 10];
    let too_large = http("POST", &url, &[("content-type", "application/json")], Some(&oversize));
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.json()["code"], json!(3));
    let bomb = gzip(&vec![b' '; 1 << 20]);
    assert_eq!(http("POST", &url, &[protobuf[0], ("content-encoding", "gzip")], Some(&bomb)).status, 413);

    let wrong_type = http("POST", &url, &[("content-type", "text/plain")], Some(b"a line"));
    assert_eq!(wrong_type.status, 415);
    assert_eq!(wrong_type.json()["code"], json!(3));

    // One record over the field value limit: the whole request is refused.
    let mut over_limit = request("malformed", 3);
    over_limit.resource_logs[0].scope_logs[0].log_records[1].attributes.push(KeyValue {
        key: "huge".into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue("x".repeat(17 << 10))) }),
        ..KeyValue::default()
    });
    let limit = http("POST", &url, &protobuf, Some(&over_limit.encode_to_vec()));
    assert_eq!(limit.status, 400);
    let message = RpcStatus::decode(limit.body.as_slice()).unwrap().message;
    assert!(message.contains("entry 2") && message.contains("FIELD_VALUE_BYTES_MAX"), "{message}");

    // gRPC, from a raw HTTP/2 client.
    let addr = node.grpc_addr.clone();
    let gzip_encoding = [("grpc-encoding", "gzip")];
    let truncated = raw_export(&addr, &[], framed(0, valid.len() - 3, &valid[..valid.len() - 3]));
    assert_eq!(truncated.status.code, Code::InvalidArgument, "{:?}", truncated.status);
    assert!(truncated.status.message.contains("malformed ExportLogsServiceRequest"), "{:?}", truncated.status);
    let compressed = gzip(&valid);
    let corrupt = &compressed[..compressed.len() / 2];
    let corrupt_gzip = raw_export(&addr, &gzip_encoding, framed(1, corrupt.len(), corrupt));
    assert_eq!(corrupt_gzip.status.code, Code::InvalidArgument, "{:?}", corrupt_gzip.status);
    let bomb = gzip(&vec![0; 17 << 20]);
    let inflated_too_large = raw_export(&addr, &gzip_encoding, framed(1, bomb.len(), &bomb));
    assert_eq!(inflated_too_large.status.code, Code::InvalidArgument, "{:?}", inflated_too_large.status);
    assert!(inflated_too_large.status.message.contains("inflates"), "{:?}", inflated_too_large.status);
    let announced_too_large = raw_export(&addr, &[], framed(0, 17 << 20, b"only the start"));
    assert_eq!(announced_too_large.status.code, Code::InvalidArgument, "never RESOURCE_EXHAUSTED, which SDKs retry");
    let cut_frame = raw_export(&addr, &[], framed(0, 100, b"ends early"));
    assert_eq!(cut_frame.status.code, Code::Internal, "a framing violation: {:?}", cut_frame.status);
    let unknown_encoding = raw_export(&addr, &[("grpc-encoding", "snappy")], framed(0, valid.len(), &valid));
    assert_eq!(unknown_encoding.status.code, Code::Unimplemented);
    // A good gzip message is accepted, and answered advertising gzip.
    let good = raw_export(&addr, &gzip_encoding, framed(1, compressed.len(), &compressed));
    assert_eq!(good.status.code, Code::Ok, "{:?}", good.status);
    assert_eq!(good.headers.get("grpc-accept-encoding").unwrap(), "gzip");
    assert!(good.trailers.get(GRPC_STATUS_DETAILS_BIN).is_none());

    healthy(&node);
    let stored = entries(&node, "limit=100", None);
    assert_eq!(stored.len(), 3, "only the good gzip request: {stored:?}");
    let refused = |protocol: &str, reason: &str| {
        metric(
            &node,
            "wormdb_protocol_refused_total",
            &[&format!("protocol=\"{protocol}\""), &format!("reason=\"{reason}\"")],
            None,
        )
    };
    assert_eq!(refused("otlp-http", "malformed"), 5);
    assert_eq!(refused("otlp-http", "too_large"), 2);
    assert_eq!(refused("otlp-http", "unsupported_media_type"), 1);
    assert_eq!(refused("otlp-grpc", "malformed"), 3);
    assert_eq!(refused("otlp-grpc", "too_large"), 2);
    assert_eq!(metric(&node, "wormdb_protocol_requests_total", &["protocol=\"otlp-grpc\""], None), 1);
}

#[test]
fn over_its_rate_an_export_is_refused_and_the_sdk_retries_until_delivered() {
    let dir = common::durable_temp_dir();
    let tokens = token_file(
        dir.path(),
        &[("slow", "ingest", "rate_entries_per_s = 10"), ("reader", "query", ""), ("prom", "metrics", "")],
    );
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "1", "--auth-tokens", &tokens]);
    let logs = node.url("/v1/logs");
    let slow = ["--token", "secret-slow", "--batch-size", "10", "--timeout", "20"];
    // 20 records in exports of 10: the first takes the full bucket (10
    // entries, one second of the rate), the second is refused for about a
    // second, then let through when the exporter retries.
    for (run, (transport, endpoint)) in
        [("grpc", node.grpc_addr.as_str()), ("http", logs.as_str())].into_iter().enumerate()
    {
        let lines = loghub("Zookeeper", 20);
        let service = format!("slow-{transport}");
        let base_ns = 1_710_000_000_000_000_000 + run as i64 * 1_000_000_000;
        let (ok, output) = sdk(dir.path(), transport, endpoint, &lines, &service, base_ns, "gzip", &slow);
        assert!(ok, "{service}: {output}");
        assert!(output.matches("\"SUCCESS\"").count() >= 2, "at least two exports: {output}");
        assert_delivered(&node, &service, base_ns, &lines, Some("secret-reader"));
        let protocol = format!("protocol=\"otlp-{transport}\"");
        let refusals = metric(
            &node,
            "wormdb_protocol_refused_total",
            &[&protocol, "reason=\"backpressure\""],
            Some("secret-prom"),
        );
        assert!(refusals >= 1, "{service}: the exporter was refused, then retried: {output}");
    }
    assert!(metric(&node, "wormdb_rate_limited_total", &["token=\"slow\""], Some("secret-prom")) >= 2);

    // The refusals' exact forms. 20 entries are twice the burst: one that
    // is let through leaves the bucket in debt, so the next is refused.
    let request = request("slow-raw", 20).encode_to_vec();
    let auth = ("authorization", "Bearer secret-slow");
    let refused = (0..3)
        .map(|_| raw_export(&node.grpc_addr, &[auth], framed(0, request.len(), &request)))
        .find(|reply| reply.status.code != Code::Ok)
        .expect("refused over the rate");
    assert_eq!(refused.status.code, Code::Unavailable, "{:?}", refused.status);
    let delay = refused.status.retry_info.expect("RetryInfo");
    assert!(delay > Duration::ZERO && delay <= Duration::from_secs(2), "{delay:?}");
    let retry_info_bin =
        refused.trailers.get(GOOGLE_RPC_RETRY_INFO_BIN).or(refused.headers.get(GOOGLE_RPC_RETRY_INFO_BIN));
    assert!(retry_info_bin.is_some(), "google.rpc.retryinfo-bin: {:?} {:?}", refused.headers, refused.trailers);
    let details = refused.trailers.get(GRPC_STATUS_DETAILS_BIN).or(refused.headers.get(GRPC_STATUS_DETAILS_BIN));
    use base64::Engine as _;
    let details = base64::engine::general_purpose::STANDARD_NO_PAD.decode(details.unwrap().as_bytes()).unwrap();
    let details = RpcStatus::decode(details.as_slice()).unwrap();
    assert_eq!(details.code, 14);
    assert_eq!(details.details[0].type_url, "type.googleapis.com/google.rpc.RetryInfo");
    let retry_info = RetryInfo::decode(details.details[0].value.as_slice()).unwrap();
    assert!(retry_info.retry_delay.is_some());

    let headers = [("content-type", "application/x-protobuf"), auth];
    let refused = (0..3)
        .map(|_| http("POST", &logs, &headers, Some(&request)))
        .find(|reply| reply.status != 200)
        .expect("refused over the rate");
    assert_eq!(refused.status, 429, "{}", String::from_utf8_lossy(&refused.body));
    let seconds: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&seconds), "{seconds}");
    let status = RpcStatus::decode(refused.body.as_slice()).unwrap();
    assert_eq!(status.code, 14);
    assert_eq!(status.details[0].type_url, "type.googleapis.com/google.rpc.RetryInfo");
    healthy(&node);
}
