//! The Elasticsearch bulk API under `/es` and JSON lines at `/v1/jsonline`
//! (DESIGN.md section 11), driven by real clients: the official Python
//! client (elasticsearch 8.x, `helpers.bulk`, tests/clients/es_bulk.py)
//! sends LogHub lines with ECS-style nested fields, and every entry must
//! come back exactly (body, tags with `index`, fields, time). Malformed
//! bodies get Elasticsearch's error form and store nothing; backpressure
//! (a token over its rate) gets `429` with `Retry-After`, and the client's
//! retries deliver everything exactly once. JSON lines are sent with curl.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::node::TestNode;
use serde_json::{json, Value};
use wormdb::auth::tokens::{digest, to_hex};

/// One HTTP answer, read with curl.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("{error}: {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// `method url` with `headers` and `body`, through curl (a hand-built
/// request, for malformed input and probes).
fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Answer {
    let dir = tempfile::tempdir().unwrap();
    let (header_file, out) = (dir.path().join("headers"), dir.path().join("body"));
    let mut command = Command::new("curl");
    command.arg("-sS");
    if method == "HEAD" {
        command.arg("--head");
    } else {
        command.args(["-X", method]);
    }
    command.arg("-D").arg(&header_file).arg("-o").arg(&out).args(["-w", "%{http_code}", url]);
    for (name, value) in headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    if body.is_some() {
        command.args(["-H", "Expect:", "--data-binary", "@-"]);
    }
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(body.unwrap_or_default()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    let status = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap();
    let headers = std::fs::read_to_string(header_file)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Answer { status, headers, body: std::fs::read_to_string(out).unwrap_or_default() }
}

/// The entries a query returns, as JSON objects.
fn entries(node: &TestNode, query: &str, authorization: Option<&str>) -> Vec<Value> {
    let headers: Vec<(&str, &str)> = authorization.map(|value| ("Authorization", value)).into_iter().collect();
    let answer = call("GET", &node.url(&format!("/v1/entries?{query}&limit=100000")), &headers, None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// An entry as the query shows it: (ts, body, tags, fields), for comparing.
type Shown = (i64, String, BTreeMap<String, String>, BTreeMap<String, String>);

fn shown(entry: &Value) -> Shown {
    let map = |value: Option<&Value>| -> BTreeMap<String, String> {
        value
            .and_then(Value::as_object)
            .map(|object| object.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect())
            .unwrap_or_default()
    };
    (
        entry["ts"].as_i64().unwrap(),
        entry["body"].as_str().unwrap().to_string(),
        map(entry.get("tags")),
        map(entry.get("fields")),
    )
}

fn sorted(mut entries: Vec<Shown>) -> Vec<Shown> {
    entries.sort();
    entries
}

fn strings(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(key, value)| (key.to_string(), value.clone())).collect()
}

/// The sum over shards of the series `name{...}` whose labels include all
/// of `labels`.
fn metric(node: &TestNode, authorization: Option<&str>, name: &str, labels: &[&str]) -> u64 {
    let headers: Vec<(&str, &str)> = authorization.map(|value| ("Authorization", value)).into_iter().collect();
    let text = call("GET", &node.url("/metrics"), &headers, None).body;
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && labels.iter().all(|label| line.contains(label)))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Runs tests/clients/es_bulk.py (the official Python client) with
/// `options`; its JSON answer.
fn python_bulk(options: Value) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(common::test_python())
        .arg(root.join("tests/clients/es_bulk.py"))
        .arg(options.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "es_bulk.py failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("es_bulk.py: {error}: {stdout}"))
}

fn write_actions(dir: &Path, name: &str, actions: &[Value]) -> PathBuf {
    let path = dir.join(name);
    let text: String = actions.iter().map(|action| format!("{action}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The log level of a LogHub HDFS line (`081109 203615 148 INFO dfs...`).
fn hdfs_level(line: &str) -> String {
    line.split_whitespace().nth(3).unwrap().to_string()
}

const BASE_S: i64 = 1_714_564_800;

#[test]
fn the_python_client_delivers_loghub_lines_exactly() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "2"]);
    let url = node.url("/es");

    // HDFS lines, ECS-shaped: nested host, service and process objects,
    // an array, a boolean and a float; half with an RFC 3339 @timestamp
    // in nanoseconds, half with a `ts` in epoch milliseconds.
    let lines = common::loghub_lines("HDFS");
    let count = 240.min(lines.len());
    let mut actions = Vec::new();
    let mut expected = Vec::new();
    for (index, line) in lines[..count].iter().enumerate() {
        let i = index as i64;
        let mut document = json!({
            "_op_type": if index % 2 == 0 { "create" } else { "index" },
            "_index": "hdfs",
            "message": line,
            "host": { "name": format!("dn-{}", index % 3) },
            "service": { "name": "hdfs" },
            "level": hdfs_level(line),
            "process": { "pid": 143 + index, "thread": { "name": "PacketResponder" } },
            "labels": ["loghub", index],
            "ok": index % 2 == 0,
            "ratio": 0.25,
            "trace": null,
        });
        let ts = if index % 2 == 0 {
            let ts = (BASE_S + i) * 1_000_000_000 + i * 1_000_003;
            document["@timestamp"] = json!(rfc3339(ts));
            ts
        } else {
            let millis = (BASE_S + i) * 1000 + i;
            document["ts"] = json!(millis);
            millis * 1_000_000
        };
        if index % 5 == 0 {
            document["_id"] = json!(format!("hdfs-{index}"));
        }
        actions.push(document);
        let tags = strings(&[
            ("index", "hdfs".into()),
            ("host.name", format!("dn-{}", index % 3)),
            ("service.name", "hdfs".into()),
            ("level", hdfs_level(line)),
        ]);
        let fields = strings(&[
            ("process.pid", (143 + index).to_string()),
            ("process.thread.name", "PacketResponder".into()),
            ("labels", format!("[\"loghub\",{index}]")),
            ("ok", (index % 2 == 0).to_string()),
            ("ratio", "0.25".into()),
        ]);
        expected.push((ts, line.clone(), tags, fields));
    }
    let file = write_actions(dir.path(), "hdfs.ndjson", &actions);
    let answer = python_bulk(json!({ "url": url, "actions": file, "chunk_size": 100 }));
    assert_eq!(answer["version"], "8.17.0", "{answer}");
    assert_eq!(answer["tagline"], "You Know, for Search");
    assert_eq!(answer["ping"], true, "HEAD /es/ answers 200");
    assert_eq!(answer["success"], count, "{answer}");
    assert_eq!(answer["errors"], json!([]), "{answer}");
    let stored: Vec<Shown> = entries(&node, "tag=index=hdfs", None).iter().map(shown).collect();
    assert_eq!(sorted(stored), sorted(expected), "every HDFS line back exactly");

    // Apache lines to the URL's index, gzip-compressed, with the field
    // choice in VictoriaLogs' headers; an action's own `_index` wins over
    // the URL's.
    let lines = common::loghub_lines("Apache");
    let count = 60.min(lines.len());
    let mut actions = Vec::new();
    let mut expected = Vec::new();
    for (index, line) in lines[..count].iter().enumerate() {
        let millis = (BASE_S + index as i64) * 1000 + 500;
        let mut document = json!({
            "_op_type": "create",
            "content": line,
            "message": format!("not the body {index}"),
            "app": "httpd",
            "env": "prod",
            "level": "ignored as a tag here",
            "timestamp": millis.to_string(),
        });
        let index_name = if index % 10 == 0 { "apache-own".to_string() } else { "apache".to_string() };
        if index % 10 == 0 {
            document["_index"] = json!(index_name);
        }
        actions.push(document);
        let tags = strings(&[("index", index_name), ("app", "httpd".into()), ("env", "prod".into())]);
        let fields =
            strings(&[("message", format!("not the body {index}")), ("level", "ignored as a tag here".into())]);
        expected.push((millis * 1_000_000, line.clone(), tags, fields));
    }
    let file = write_actions(dir.path(), "apache.ndjson", &actions);
    let answer = python_bulk(json!({
        "url": url,
        "actions": file,
        "index": "apache",
        "gzip": true,
        "headers": { "VL-Msg-Field": "content", "VL-Stream-Fields": "app,env" },
    }));
    assert_eq!((answer["success"].as_u64(), &answer["errors"]), (Some(count as u64), &json!([])), "{answer}");
    let mut stored: Vec<Shown> = entries(&node, "tag=app=httpd", None).iter().map(shown).collect();
    assert_eq!(stored.len(), count);
    stored.retain(|entry| entry.2["index"].starts_with("apache"));
    assert_eq!(sorted(stored), sorted(expected), "every Apache line back exactly");
    assert_eq!(
        metric(&node, None, "wormdb_protocol_entries_total", &["protocol=\"es-bulk\""]),
        (240.min(common::loghub_lines("HDFS").len()) + count) as u64
    );
}

#[test]
fn the_probes_answer_as_elasticsearch_8() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "1"]);
    for path in ["/es", "/es/"] {
        let answer = call("GET", &node.url(path), &[], None);
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.header("x-elastic-product"), Some("Elasticsearch"));
        let version = answer.json();
        assert_eq!(version["version"]["number"], "8.17.0");
        assert_eq!(version["version"]["build_flavor"], "default");
        assert_eq!(version["tagline"], "You Know, for Search");
        assert!(version["cluster_name"].is_string() && version["name"].is_string());
    }
    let head = call("HEAD", &node.url("/es/"), &[], None);
    assert_eq!((head.status, head.header("x-elastic-product")), (200, Some("Elasticsearch")));
    let license = call("GET", &node.url("/es/_license"), &[], None);
    assert_eq!((license.status, &license.json()["license"]["status"]), (200, &json!("active")));
    let nodes = call("GET", &node.url("/es/_nodes/http"), &[], None).json();
    assert_eq!(nodes["nodes"], json!({}), "nothing to sniff");
    let health = call("GET", &node.url("/es/_cluster/health"), &[], None).json();
    assert_eq!(health["status"], "green");
    for (method, path, status) in [
        ("HEAD", "/es/_index_template/filebeat-8.17.0", 200),
        ("GET", "/es/_index_template/filebeat-8.17.0", 200),
        ("PUT", "/es/_index_template/filebeat-8.17.0", 200),
        ("GET", "/es/_ilm/policy/filebeat", 200),
        ("PUT", "/es/_ilm/policy/filebeat", 200),
        ("HEAD", "/es/_ilm/policy/filebeat", 200),
        ("PUT", "/es/_ingest/pipeline/p", 200),
        ("GET", "/es/_bulk", 405),
        ("GET", "/es/logs/_search", 404),
    ] {
        let body = (method == "PUT").then_some(&b"{}"[..]);
        let answer = call(method, &node.url(path), &[("Content-Type", "application/json")], body);
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.body);
        assert_eq!(answer.header("x-elastic-product"), Some("Elasticsearch"), "{method} {path}");
        if method == "PUT" {
            assert_eq!(answer.json()["acknowledged"], true, "{method} {path}");
        }
        if status >= 400 {
            let error = answer.json();
            assert_eq!(error["status"], status, "{error}");
            assert!(error["error"]["type"].is_string() && error["error"]["reason"].is_string(), "{error}");
        }
    }
}

#[test]
fn malformed_bodies_get_the_elasticsearch_error_form_and_store_nothing() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "2", "--max-body-bytes", "65536"]);
    let bulk = |body: &[u8], headers: &[(&str, &str)]| call("POST", &node.url("/es/_bulk"), headers, Some(body));
    let ndjson = [("Content-Type", "application/x-ndjson")];

    // Whole-request refusals: the structure cannot be followed.
    let cases: [(&str, Vec<u8>, u16, &str, &str); 6] = [
        (
            "bad JSON action",
            b"{\"create\":{}\n{\"message\":\"a\"}\n".to_vec(),
            400,
            "illegal_argument_exception",
            "Malformed action/metadata line [1]",
        ),
        (
            "an action without a document",
            b"{\"create\":{\"_index\":\"bad\"}}\n{\"message\":\"a\"}\n{\"create\":{\"_index\":\"bad\"}}\n".to_vec(),
            400,
            "illegal_argument_exception",
            "the create action on line 3 has no document line after it",
        ),
        (
            "unknown action",
            b"{\"upsert\":{\"_index\":\"bad\"}}\n{}\n".to_vec(),
            400,
            "illegal_argument_exception",
            "expected one of [create, delete, index, update] but found [upsert]",
        ),
        ("no action", b"\n".to_vec(), 400, "action_request_validation_exception", "no requests added"),
        (
            "oversize",
            format!("{{\"create\":{{\"_index\":\"bad\"}}}}\n{{\"message\":\"{}\"}}\n", "x".repeat(70_000)).into_bytes(),
            413,
            "illegal_argument_exception",
            "65536-byte limit",
        ),
        ("corrupt gzip", b"\x1f\x8b\x08\x00 not gzip".to_vec(), 400, "illegal_argument_exception", "gzip"),
    ];
    for (what, body, status, kind, reason) in cases {
        let mut headers = ndjson.to_vec();
        if what == "corrupt gzip" {
            headers.push(("Content-Encoding", "gzip"));
        }
        let answer = bulk(&body, &headers);
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        assert_eq!(answer.header("x-elastic-product"), Some("Elasticsearch"), "{what}");
        let error = answer.json();
        assert_eq!(error["status"], status, "{what}: {error}");
        assert_eq!(error["error"]["type"], kind, "{what}: {error}");
        assert_eq!(error["error"]["root_cause"][0]["type"], kind, "{what}: {error}");
        assert!(error["error"]["reason"].as_str().unwrap().contains(reason), "{what}: {error}");
    }
    assert!(entries(&node, "tag=index=bad", None).is_empty(), "no refused request stored anything");

    // Per-item refusals: the others are stored, each item has its status.
    let body = concat!(
        "{\"create\":{\"_index\":\"mixed\",\"_id\":\"good\"}}\n",
        "{\"message\":\"the good one\",\"@timestamp\":\"2024-05-01T12:00:00Z\"}\n",
        "{\"create\":{\"_index\":\"mixed\"}}\n",
        "{\"message\":\"cut\n",
        "{\"delete\":{\"_index\":\"mixed\",\"_id\":\"good\"}}\n",
        "{\"update\":{\"_index\":\"mixed\",\"_id\":\"good\"}}\n",
        "{\"doc\":{\"message\":\"changed\"}}\n",
        "{\"index\":{\"_index\":\"mixed\"}}\n",
        "{\"message\":\"a bad time\",\"@timestamp\":\"noon\"}\n",
    );
    let answer = bulk(body.as_bytes(), &ndjson);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let result = answer.json();
    assert_eq!(result["errors"], true);
    assert!(result["took"].is_u64());
    let items = result["items"].as_array().unwrap();
    let statuses: Vec<(&str, u64)> = items
        .iter()
        .map(|item| {
            let (action, answer) = item.as_object().unwrap().iter().next().unwrap();
            (action.as_str(), answer["status"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(statuses, [("create", 201), ("create", 400), ("delete", 400), ("update", 400), ("index", 400)]);
    let created = &items[0]["create"];
    assert_eq!(
        (&created["_index"], &created["_id"], &created["result"]),
        (&json!("mixed"), &json!("good"), &json!("created"))
    );
    assert_eq!(items[1]["create"]["error"]["type"], "document_parsing_exception");
    assert!(items[1]["create"]["error"]["reason"].as_str().unwrap().starts_with("line 4: not JSON"), "{result}");
    assert!(items[4]["index"]["error"]["reason"].as_str().unwrap().contains("\"noon\""), "{result}");
    let stored: Vec<Shown> = entries(&node, "tag=index=mixed", None).iter().map(shown).collect();
    assert_eq!(
        stored,
        [(BASE_S * 1_000_000_000, "the good one".to_string(), strings(&[("index", "mixed".into())]), BTreeMap::new())]
    );

    // JSON lines: one bad line refuses the request, naming it.
    let answer = call(
        "POST",
        &node.url("/v1/jsonline"),
        &[],
        Some(b"{\"message\":\"fine\",\"app\":\"bad-jsonline\"}\n{\"message\":\"cut\",\n"),
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.json()["error"].as_str().unwrap().starts_with("line 2: not JSON"), "{}", answer.body);
    let answer = call("POST", &node.url("/v1/jsonline"), &[], Some(b"{\"time\":\"soon\",\"app\":\"bad-jsonline\"}"));
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("line 1: field \\\"time\\\""), "{}", answer.body);
    let oversize = format!("{{\"message\":\"{}\"}}\n", "x".repeat(70_000));
    assert_eq!(call("POST", &node.url("/v1/jsonline"), &[], Some(oversize.as_bytes())).status, 413);
    assert!(entries(&node, "field=app=bad-jsonline", None).is_empty());

    // Healthy, and every refusal counted.
    assert_eq!(call("GET", &node.url("/healthz"), &[], None).status, 200);
    let refused = |protocol: &str, reason: &str| {
        metric(
            &node,
            None,
            "wormdb_protocol_refused_total",
            &[&format!("protocol=\"{protocol}\""), &format!("reason=\"{reason}\"")],
        )
    };
    assert_eq!(refused("es-bulk", "malformed"), 5 + 1, "five whole requests and one with bad items");
    assert_eq!(refused("es-bulk", "too_large"), 1);
    assert_eq!(refused("jsonline", "malformed"), 2);
    assert_eq!(refused("jsonline", "too_large"), 1);
}

#[test]
fn json_lines_from_curl_are_stored_with_the_field_choice() {
    // curl stands in for Vector's and Fluent Bit's `http` outputs, which
    // send exactly this: one JSON object a line.
    let dir = common::durable_temp_dir();
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "2"]);
    let lines = common::loghub_lines("OpenSSH");
    let count = 50.min(lines.len());
    let mut body = String::new();
    let mut expected = Vec::new();
    for (index, line) in lines[..count].iter().enumerate() {
        let micros = (BASE_S + index as i64) * 1_000_000 + 7;
        let document = json!({
            "log": line,
            "when": micros,
            "kubernetes": { "pod": { "name": format!("sshd-{}", index % 2) }, "labels": { "app": "sshd" } },
            "stream": "stdout",
        });
        body.push_str(&format!("{document}\n"));
        let tags = strings(&[("kubernetes.labels.app", "sshd".into())]);
        let fields = strings(&[("kubernetes.pod.name", format!("sshd-{}", index % 2)), ("stream", "stdout".into())]);
        expected.push((micros * 1000, line.clone(), tags, fields));
    }
    let url = node.url("/v1/jsonline?_time_field=when&_stream_fields=kubernetes.labels.app");
    let answer = call("POST", &url, &[("Content-Type", "application/x-ndjson")], Some(body.as_bytes()));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["count"], count);
    let stored: Vec<Shown> = entries(&node, "tag=kubernetes.labels.app=sshd", None).iter().map(shown).collect();
    assert_eq!(sorted(stored), sorted(expected));
    let empty = call("POST", &node.url("/v1/jsonline"), &[], Some(b"\n"));
    assert_eq!((empty.status, empty.json()["count"].as_u64()), (200, Some(0)));
}

fn token(name: &str, scopes: &[&str], extra: &str) -> String {
    let scopes: Vec<String> = scopes.iter().map(|scope| format!("{scope:?}")).collect();
    format!(
        "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [{}]\n{extra}\n",
        to_hex(&digest(format!("secret-{name}").as_bytes())),
        scopes.join(", ")
    )
}

#[test]
fn backpressure_answers_429_and_the_python_client_retries_until_everything_is_stored() {
    let dir = common::durable_temp_dir();
    let tokens = dir.path().join("tokens.toml");
    let text = [token("shipper", &["ingest"], "rate_entries_per_s = 20"), token("reader", &["query", "metrics"], "")];
    std::fs::write(&tokens, text.concat()).unwrap();
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "2", "--auth-tokens", tokens.to_str().unwrap()]);
    let (shipper, reader) = ("Bearer secret-shipper", "Bearer secret-reader");

    // Without a token: 401, still marked as Elasticsearch.
    let refused = call("GET", &node.url("/es/"), &[], None);
    assert_eq!((refused.status, refused.header("x-elastic-product")), (401, Some("Elasticsearch")));

    // A request of three times the token's rate passes (the bucket was
    // full) and leaves a debt of two seconds; the next one is refused
    // whole, with Retry-After, in Elasticsearch's form.
    let burst = |what: &str, count: usize| -> String {
        (0..count)
            .map(|index| format!("{{\"create\":{{\"_index\":\"paced\"}}}}\n{{\"message\":\"{what} {index}\"}}\n"))
            .collect()
    };
    let first = burst("burst", 60);
    let passed = call("POST", &node.url("/es/_bulk"), &[("Authorization", shipper)], Some(first.as_bytes()));
    assert_eq!((passed.status, &passed.json()["errors"]), (200, &json!(false)), "{}", passed.body);
    let again = burst("refused", 20);
    let over = call("POST", &node.url("/es/_bulk"), &[("Authorization", shipper)], Some(again.as_bytes()));
    assert_eq!(over.status, 429, "{}", over.body);
    let retry_after: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    assert_eq!(over.header("x-elastic-product"), Some("Elasticsearch"));
    assert_eq!(over.json()["error"]["type"], "es_rejected_execution_exception");

    // The Python client: chunks of the token's burst, each refused at
    // first; helpers.bulk backs off and sends each again whole.
    let actions: Vec<Value> = (0..60)
        .map(|index| json!({ "_op_type": "create", "_index": "paced", "message": format!("retried {index}") }))
        .collect();
    let file = write_actions(dir.path(), "paced.ndjson", &actions);
    let started = Instant::now();
    let answer = python_bulk(json!({
        "url": node.url("/es"),
        "actions": file,
        "token": "secret-shipper",
        "chunk_size": 20,
        "transport_retries": 0,
        "max_retries": 8,
        "initial_backoff": 1,
    }));
    assert_eq!((answer["success"].as_u64(), &answer["errors"]), (Some(60), &json!([])), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let refusals = metric(
        &node,
        Some(reader),
        "wormdb_protocol_refused_total",
        &["protocol=\"es-bulk\"", "reason=\"backpressure\""],
    );
    assert!(refusals >= 2, "the client met 429s and retried: {refusals}");
    let mut bodies: Vec<String> =
        entries(&node, "tag=index=paced", Some(reader)).iter().map(|entry| shown(entry).1).collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..60).map(|index| format!("burst {index}")).collect();
    expected.extend((0..60).map(|index| format!("retried {index}")));
    expected.sort();
    assert_eq!(bodies, expected, "everything once, nothing of a refused request");
}

/// An rsyslogd of this test's own, in the foreground with its own
/// configuration, work directory and pid file; killed when dropped.
struct Rsyslog(std::process::Child);

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn rsyslog_omelasticsearch_forwards_loghub_lines_exactly() {
    let rsyslogd = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"].into_iter().map(PathBuf::from).find(|path| path.exists());
    let rsyslogd = rsyslogd.expect("rsyslogd is missing: run scripts/test-deps.sh (it installs rsyslog-elasticsearch)");
    let dir = common::durable_temp_dir();
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "2"]);
    let work = dir.path().join("rsyslog");
    std::fs::create_dir_all(&work).unwrap();
    let port = common::node::free_port();
    // RFC 5424 in over TCP; out to /es in bulk, one JSON document a
    // message, ECS-style names so that the default field choice applies.
    let config = format!(
        r#"global(workDirectory="{work}")
module(load="imptcp")
module(load="omelasticsearch")
template(name="ecs" type="list" option.jsonf="on") {{
  property(outname="@timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="host.name" name="hostname" format="jsonf")
  property(outname="service.name" name="app-name" format="jsonf")
  property(outname="level" name="syslogseverity-text" format="jsonf")
  property(outname="process.pid" name="procid" format="jsonf")
  property(outname="message" name="msg" format="jsonf")
}}
ruleset(name="to_wormdb") {{
  action(type="omelasticsearch" server="{url}" searchIndex="rsyslog" template="ecs"
         bulkmode="on" esVersion.major="8" action.resumeRetryCount="-1" action.resumeInterval="1")
}}
input(type="imptcp" address="127.0.0.1" port="{port}" ruleset="to_wormdb")
"#,
        work = work.display(),
        url = node.url("/es"),
    );
    let config_path = work.join("rsyslog.conf");
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new(rsyslogd)
        .arg("-n")
        .arg("-f")
        .arg(&config_path)
        .arg("-i")
        .arg(work.join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _rsyslog = Rsyslog(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(error) => panic!("rsyslogd does not listen on {port}: {error}"),
        }
    };

    let lines = common::loghub_lines("Zookeeper");
    let count = 100.min(lines.len());
    let mut expected = Vec::new();
    for (index, line) in lines[..count].iter().enumerate() {
        // rsyslog keeps microseconds.
        let micros = (BASE_S + index as i64) * 1_000_000 + index as i64 * 7;
        let stamp = rfc3339(micros * 1000);
        let host = format!("zk-{}", index % 2);
        writeln!(stream, "<134>1 {stamp} {host} zookeeper {} - - {line}", 4000 + index).unwrap();
        let tags = strings(&[
            ("index", "rsyslog".into()),
            ("host.name", host),
            ("service.name", "zookeeper".into()),
            ("level", "info".into()),
        ]);
        let fields = strings(&[("process.pid", (4000 + index).to_string())]);
        expected.push((micros * 1000, line.clone(), tags, fields));
    }
    stream.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let stored: Vec<Shown> = entries(&node, "tag=index=rsyslog", None).iter().map(shown).collect();
        if stored.len() >= count || Instant::now() >= deadline {
            break stored;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(sorted(stored), sorted(expected), "every Zookeeper line back exactly through rsyslog");
}
