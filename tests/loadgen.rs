//! wormdb-loadgen against the real node: what it reports agrees with what
//! the node stores, a fixed-rate run sends exactly rate x duration entries,
//! percentiles are ordered, and
//! `--verify` / `--verify-from` pass on a healthy node and fail, with a
//! clear message and a non-zero exit, when acknowledged entries are missing.
//! HTTP, gRPC `Write` and follower pushes are all driven. The `--payload-file`
//! run replays a LogHub sample (https://github.com/logpai/loghub).
//!
//! The loadgen is another package of the workspace, so its binary is built
//! (once, into the same target directory) with `cargo build` from here.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::node::{get, TestNode};

fn loadgen_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let wormdb = PathBuf::from(env!("CARGO_BIN_EXE_wormdb"));
            let profile_dir = wormdb.parent().unwrap().to_path_buf();
            let target_dir = profile_dir.parent().unwrap();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let mut command = Command::new(cargo);
            command
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["build", "--quiet", "-p", "wormdb-loadgen", "--bin", "wormdb-loadgen", "--target-dir"])
                .arg(target_dir);
            match profile_dir.file_name().and_then(|name| name.to_str()) {
                Some("debug") | None => {}
                Some("release") => {
                    command.arg("--release");
                }
                Some(profile) => {
                    command.args(["--profile", profile]);
                }
            }
            let status = command.status().unwrap();
            assert!(status.success(), "cargo build -p wormdb-loadgen failed");
            let binary = profile_dir.join("wormdb-loadgen");
            assert!(binary.exists(), "{} was not built", binary.display());
            binary
        })
        .clone()
}

fn loadgen(args: &[&str]) -> Output {
    let output = Command::new(loadgen_binary()).args(args).output().unwrap();
    eprintln!(
        "$ wormdb-loadgen {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_percentiles_ordered(report: &serde_json::Value) {
    let latency = &report["latency_us"];
    let values: Vec<u64> =
        ["p50", "p90", "p99", "p999", "p9999", "max"].iter().map(|key| latency[*key].as_u64().unwrap()).collect();
    assert!(values[0] > 0, "latencies are recorded: {latency}");
    assert!(values.windows(2).all(|pair| pair[0] <= pair[1]), "percentiles are ordered: {latency}");
}

#[test]
fn http_fixed_rate_is_held_and_every_acknowledged_entry_is_stored() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "2"]);
    let json = dir.path().join("run.json");
    let hgrm = dir.path().join("run.hgrm");
    let output = loadgen(&[
        "--target",
        &node.base,
        "--rate",
        "20000",
        "--duration",
        "3s",
        "--batch",
        "100",
        "--connections",
        "32",
        "--json",
        json.to_str().unwrap(),
        "--hgrm",
        hgrm.to_str().unwrap(),
        "--verify",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = read_json(&json);
    let acked = report["entries_acked"].as_u64().unwrap();
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(acked, 60_000, "20,000/s for 3 s, all acknowledged");
    assert_eq!(acked, node.entries_stored(), "the loadgen's count agrees with the node's");
    // The rate it reports is what it acknowledged over the time it measured.
    // How close that comes to 20,000/s depends on the machine's load, so it
    // is not asserted here: a debug-build test asserts no wall-clock rate.
    let rate = report["entries_per_s"].as_f64().unwrap();
    let duration_s = report["duration_s"].as_f64().unwrap();
    assert!((rate * duration_s - acked as f64).abs() < 1.0, "{rate}/s over {duration_s} s is not {acked} entries");
    assert_percentiles_ordered(&report);
    assert!(report["cpu_s"].as_f64().unwrap() > 0.0);
    assert!(stdout(&output).contains("verify: every acknowledged entry checked is stored"), "{}", stdout(&output));
    let text = std::fs::read_to_string(&hgrm).unwrap();
    assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"), "{text}");
    assert!(text.contains(&format!("Total count    = {:>12}]", report["requests"].as_u64().unwrap())), "{text}");
}

#[test]
fn verify_fails_when_acknowledged_entries_are_missing() {
    let dir = common::durable_temp_dir();
    let mut node = TestNode::start(&dir.path().join("a"), &["--shards", "2"]);
    let json = dir.path().join("run.json");
    let payload = common::loghub::path("OpenSSH");
    let output = loadgen(&[
        "--target",
        &node.base,
        "--rate",
        "max",
        "--duration",
        "1s",
        "--batch",
        "50",
        "--connections",
        "2",
        "--payload-file",
        payload.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = read_json(&json);
    assert_eq!(report["rate"], "max");
    assert!(report["entries_acked"].as_u64().unwrap() > 0);
    assert_eq!(report["entries_acked"].as_u64().unwrap(), node.entries_stored());
    assert_percentiles_ordered(&report);

    // The acknowledgements survive a restart.
    assert_eq!(node.terminate(), 0);
    let unreachable = loadgen(&["--target", &node.base, "--verify-from", json.to_str().unwrap()]);
    assert_eq!(unreachable.status.code(), Some(2));
    assert!(stderr(&unreachable).contains("cannot reach"), "{}", stderr(&unreachable));
    node.restart();
    let healthy = loadgen(&["--target", &node.base, "--verify-from", json.to_str().unwrap()]);
    assert!(healthy.status.success(), "{}", stdout(&healthy));

    // A node that does not hold them: every shard that took entries is
    // short (the kernel may have put both connections on one shard), and
    // the sampled bodies are not found.
    let other = TestNode::start(&dir.path().join("b"), &["--shards", "2"]);
    let missing = loadgen(&["--target", &other.base, "--verify-from", json.to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    let text = stdout(&missing);
    assert!(text.contains("MISSING  shard ") && text.contains(": acknowledged up to seq"), "{text}");
    assert!(text.contains("but the node's last_seq is 0"), "{text}");
    assert!(text.contains("verify: FAILED"), "{text}");
}

#[test]
fn grpc_write_and_follower_push_agree_with_the_node() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "2"]);
    let json = dir.path().join("grpc.json");
    let output = loadgen(&[
        "--protocol",
        "grpc",
        "--target",
        &node.grpc_addr,
        "--rate",
        "10000",
        "--duration",
        "2s",
        "--batch",
        "100",
        "--connections",
        "2",
        "--json",
        json.to_str().unwrap(),
        "--verify",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = read_json(&json);
    assert_eq!(report["protocol"], "grpc");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["entries_acked"].as_u64().unwrap(), 20_000);
    assert_eq!(node.entries_stored(), 20_000);
    assert_percentiles_ordered(&report);
    assert!(stdout(&output).contains("all"), "the gRPC check counts entries: {}", stdout(&output));

    let push_json = dir.path().join("push.json");
    let output = loadgen(&[
        "--protocol",
        "grpc",
        "--follower-id",
        "7",
        "--target",
        &node.grpc_addr,
        "--rate",
        "10000",
        "--duration",
        "2s",
        "--batch",
        "100",
        "--connections",
        "2",
        "--json",
        push_json.to_str().unwrap(),
        "--verify",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = read_json(&push_json);
    assert_eq!(report["protocol"], "follower");
    assert_eq!(report["entries_acked"].as_u64().unwrap(), 20_000);
    assert_percentiles_ordered(&report);
    let stats = get(&node.url("/v1/stats")).json();
    let watermarks = stats["watermarks"].as_array().unwrap();
    let archived: u64 =
        watermarks.iter().filter(|pair| pair["follower_id"] == 7).map(|pair| pair["acked_seq"].as_u64().unwrap()).sum();
    assert_eq!(archived, 20_000, "dense seqs per shard stream, all archived: {watermarks:?}");
    assert_eq!(node.entries_stored(), 40_000);
    // Another run continues from the watermarks.
    let again = loadgen(&[
        "--protocol",
        "grpc",
        "--follower-id",
        "7",
        "--target",
        &node.grpc_addr,
        "--rate",
        "5000",
        "--duration",
        "1s",
        "--connections",
        "2",
        "--verify",
    ]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(node.entries_stored(), 45_000);
}

#[test]
fn a_node_that_takes_tokens_is_driven_with_token() {
    let dir = common::durable_temp_dir();
    let secret = "loadgen-secret";
    let digest = wormdb::auth::tokens::to_hex(&wormdb::auth::tokens::digest(secret.as_bytes()));
    let tokens = dir.path().join("tokens.toml");
    let table =
        format!("[[token]]\nname = \"bench\"\nsha256 = \"{digest}\"\nscopes = [\"ingest\", \"query\", \"metrics\"]\n");
    std::fs::write(&tokens, table).unwrap();
    let node = TestNode::start(&dir.path().join("data"), &["--shards", "2", "--auth-tokens", tokens.to_str().unwrap()]);
    let run = |protocol: &str, target: &str, extra: &[&str], token: Option<&str>| {
        let mut args = vec!["--protocol", protocol, "--target", target, "--rate", "2000", "--duration", "1s"];
        args.extend_from_slice(&["--batch", "100", "--connections", "2", "--verify"]);
        args.extend_from_slice(extra);
        if let Some(token) = token {
            args.extend_from_slice(&["--token", token]);
        }
        loadgen(&args)
    };
    for (protocol, target, extra) in [
        ("http", node.base.as_str(), &[][..]),
        ("grpc", node.grpc_addr.as_str(), &[][..]),
        ("grpc", node.grpc_addr.as_str(), &["--follower-id", "7"][..]),
    ] {
        let output = run(protocol, target, extra, Some(secret));
        assert!(output.status.success(), "{protocol} {extra:?}: {}", stderr(&output));
        assert!(stdout(&output).contains("verify:"), "{}", stdout(&output));
    }
    let refused = run("http", &node.base, &[], None);
    assert!(!refused.status.success(), "without --token nothing is acknowledged");
    assert!(stdout(&refused).contains("http 401") || stderr(&refused).contains("http 401"), "{}", stdout(&refused));
}

#[test]
fn bad_flags_and_unreachable_targets_are_clear_errors() {
    let bad_rate = loadgen(&["--target", "http://127.0.0.1:1", "--rate", "fast"]);
    assert_eq!(bad_rate.status.code(), Some(2));
    assert!(stderr(&bad_rate).contains("is not a rate"), "{}", stderr(&bad_rate));
    let no_scheme = loadgen(&["--target", "127.0.0.1:8080"]);
    assert_eq!(no_scheme.status.code(), Some(2));
    assert!(stderr(&no_scheme).contains("give an HTTP base URL"), "{}", stderr(&no_scheme));
    let follower_over_http = loadgen(&["--target", "http://127.0.0.1:1", "--follower-id", "3"]);
    assert_eq!(follower_over_http.status.code(), Some(2));
    assert!(stderr(&follower_over_http).contains("--follower-id needs --protocol grpc"));
    // Port 1 on loopback: nothing listens there.
    for args in [
        vec!["--target", "http://127.0.0.1:1", "--duration", "1s"],
        vec!["--protocol", "grpc", "--target", "127.0.0.1:1", "--duration", "1s"],
    ] {
        let unreachable = loadgen(&args);
        assert_eq!(unreachable.status.code(), Some(2));
        assert!(stderr(&unreachable).contains("cannot reach 127.0.0.1:1"), "{}", stderr(&unreachable));
    }
}

#[test]
fn https_and_grpc_over_mutual_tls_with_verification() {
    let dir = common::durable_temp_dir();
    let pki = common::certs::Pki::new(dir.path());
    let (server, follower) = (pki.server("server"), pki.follower(7));
    let ca = pki.ca.to_str().unwrap();
    let mut args = vec!["--shards".to_string(), "1".into(), "--tls-client-ca".into(), ca.into()];
    args.extend(server.args());
    let node = TestNode::start(&dir.path().join("data"), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let https = format!("https://127.0.0.1:{}", node.port());
    let run = |extra: &[&str]| {
        let common = ["--rate", "5000", "--duration", "1s", "--batch", "50", "--connections", "2", "--verify"];
        loadgen(&[extra, &common[..]].concat())
    };
    // With mutual TLS and no tokens, a client's certificate is its
    // credential on both ports: a plain client name may write and read; a
    // follower's only pushes as itself.
    let (client_cert, client_key) = (server.cert.to_str().unwrap(), server.key.to_str().unwrap());
    let client = ["--tls-ca", ca, "--tls-cert", client_cert, "--tls-key", client_key];
    let output = run(&[&["--target", &https][..], &client[..]].concat());
    assert!(output.status.success(), "{}", stderr(&output));
    let output = run(&[&["--protocol", "grpc", "--target", &node.grpc_addr][..], &client[..]].concat());
    assert!(output.status.success(), "{}", stderr(&output));
    let (cert, key) = (follower.cert.to_str().unwrap(), follower.key.to_str().unwrap());
    let grpc =
        ["--protocol", "grpc", "--target", &node.grpc_addr, "--tls-ca", ca, "--tls-cert", cert, "--tls-key", key];
    let output = run(&[&grpc[..], &["--follower-id", "7"]].concat());
    assert!(output.status.success(), "{}", stderr(&output));
    let anonymous = run(&["--target", &https, "--tls-ca", ca]);
    assert!(!anonymous.status.success() && stderr(&anonymous).contains("401"), "{}", stderr(&anonymous));

    let no_ca = loadgen(&["--target", &https]);
    assert!(!no_ca.status.success() && stderr(&no_ca).contains("https needs --tls-ca"), "{}", stderr(&no_ca));
    let plain = loadgen(&["--target", &node.base, "--tls-ca", ca]);
    assert!(!plain.status.success() && stderr(&plain).contains("give an https:// URL"), "{}", stderr(&plain));
}

#[test]
fn loki_protocol_sends_snappy_protobuf_that_the_node_counts_and_stores() {
    let dir = common::durable_temp_dir();
    let node = TestNode::start(dir.path(), &["--shards", "2"]);
    let json = dir.path().join("loki.json");
    let payload = common::loghub::path("HDFS");
    let output = loadgen(&[
        "--protocol",
        "loki",
        "--target",
        &node.base,
        "--rate",
        "5000",
        "--duration",
        "2s",
        "--batch",
        "100",
        "--connections",
        "2",
        "--tags",
        "2:5",
        "--payload-file",
        payload.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--verify",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = read_json(&json);
    assert_eq!(report["protocol"], "loki");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["entries_acked"].as_u64().unwrap(), 10_000);
    assert_eq!(node.entries_stored(), 10_000, "the loadgen's count agrees with the node's");
    assert_percentiles_ordered(&report);
    let text = stdout(&output);
    assert!(text.contains("loki: the node counted all 10000 entries of the run"), "{text}");
    assert!(text.contains("verify: every acknowledged entry checked is stored"), "{text}");
    // The entries are the LogHub lines, with the tags as stream labels and
    // the pool's times.
    let lines: std::collections::HashSet<String> = common::loghub::lines("HDFS").into_iter().collect();
    let stored = get(&node.url("/v1/entries?tag=t0=v1&limit=100")).lines();
    assert!(!stored.is_empty());
    for entry in &stored {
        assert!(lines.contains(entry["body"].as_str().unwrap()), "{entry}");
        assert_eq!(entry["tags"].as_object().unwrap().len(), 2, "{entry}");
        assert!(entry["ts"].as_i64().unwrap() > 1_700_000_000_000_000_000, "{entry}");
    }
    // A run without seqs cannot be checked again later.
    let again = loadgen(&["--target", &node.base, "--verify-from", json.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("has no seqs"), "{}", stderr(&again));
}
