//! The walkthrough of `docs/security.md`, end to end: a TLS-only,
//! token-protected tier of three members with a mutual-TLS follower, set
//! up with the commands the page shows (`openssl` for the certificates,
//! `openssl rand` and `sha256sum` for the secrets and their digests) and
//! used by real clients (`curl`, Python's grpcio, `wormdb cluster
//! status`). Members know each other, and the tier knows the follower, by
//! certificate alone (no peer token); people and shippers use tokens.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::certs::{path, Pair, Pki};
use common::node::TestNode;

const WAIT: Duration = Duration::from_secs(60);

/// `openssl rand -hex 32`: a new secret.
fn new_secret() -> String {
    let output = Command::new("openssl").args(["rand", "-hex", "32"]).output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// `printf %s SECRET | sha256sum`: its digest, as the token file holds it.
fn sha256sum(secret: &str) -> String {
    let output = Command::new("sh").args(["-c", "printf %s \"$1\" | sha256sum", "sh", secret]).output().unwrap();
    String::from_utf8(output.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// `curl -sS` over HTTPS trusting `ca`, with `token` as a bearer token:
/// (status, body).
fn curl(ca: &Path, token: Option<&str>, args: &[&str]) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}", "--cacert", &path(ca)]);
    if let Some(token) = token {
        command.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    let output = command.args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn https(node: &TestNode, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", node.port())
}

/// GET `path` on `node` with `token`; the JSON document (panics unless 200).
fn get_json(node: &TestNode, ca: &Path, token: &str, path: &str) -> serde_json::Value {
    let (status, body) = curl(ca, Some(token), &[&https(node, path)]);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The TLS flags of a process whose certificate is `pair`.
fn tls_args(pair: &Pair, ca: &str) -> Vec<String> {
    let mut args = pair.args();
    args.extend(["--tls-client-ca".into(), ca.into(), "--peer-ca".into(), ca.into()]);
    args
}

#[test]
fn a_tls_only_token_protected_tier_with_mutual_tls_followers() {
    let dir = common::durable_temp_dir();
    let pki = Pki::new(dir.path());
    let ca = path(&pki.ca);

    // The token file: an operator, a shipper, a reader, a monitor.
    let secrets: Vec<(&str, &str, String)> = [("ops", "admin"), ("shipper", "ingest"), ("reader", "query")]
        .into_iter()
        .chain([("monitor", "metrics")])
        .map(|(name, scope)| (name, scope, new_secret()))
        .collect();
    let tokens: String = secrets
        .iter()
        .map(|(name, scope, secret)| {
            format!("[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [\"{scope}\"]\n\n", sha256sum(secret))
        })
        .collect();
    let tokens_file = dir.path().join("tokens.toml");
    std::fs::write(&tokens_file, tokens).unwrap();
    let tokens_file = path(&tokens_file);
    let secret = |name: &str| secrets.iter().find(|(token, _, _)| *token == name).unwrap().2.clone();

    // Three members: TLS on both ports, client certificates required on
    // gRPC, TLS to each other, tokens for everyone but certified peers.
    let ports: Vec<u16> = (0..3).map(|_| common::node::free_port()).collect();
    let grpc: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    let peers: Vec<String> = grpc.iter().enumerate().map(|(index, addr)| format!("{}={addr}", index + 1)).collect();
    let peers = peers.join(",");
    let members: Vec<TestNode> = (0..3)
        .map(|index| {
            let id = (index + 1).to_string();
            let mut args: Vec<String> =
                ["--node-id", &id, "--shards", "1", "--peers", &peers, "--auth-tokens"].map(String::from).to_vec();
            args.push(tokens_file.clone());
            args.extend(tls_args(&pki.node(index as u32 + 1), &ca));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            TestNode::start_on(&dir.path().join(format!("member-{id}")), ports[index], &args)
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    let monitor = secret("monitor");
    while !members.iter().all(|member| {
        let cluster = get_json(member, &pki.ca, &monitor, "/v1/cluster");
        cluster["groups"].as_array().unwrap().iter().all(|group| group["leader"].as_u64().unwrap() != 0)
    }) {
        assert!(Instant::now() < deadline, "no leader:\n{}", members[0].log_text());
        std::thread::sleep(Duration::from_millis(100));
    }

    // A follower: its own certificate is its credential with the tier; its
    // own listeners take the same tokens.
    let leader_list = grpc.join(",");
    let mut args: Vec<String> =
        ["--node-id", "9", "--shards", "1", "--leader", &leader_list, "--auth-tokens", &tokens_file]
            .map(String::from)
            .to_vec();
    args.extend(tls_args(&pki.follower(9), &ca));
    let follower = TestNode::start(&dir.path().join("follower"), &args.iter().map(String::as_str).collect::<Vec<_>>());

    // A shipper writes with its token; no token, or a reader's, is refused.
    let lines: String = (0..100).map(|index| format!("{{\"body\":\"shipped-{index}\"}}\n")).collect();
    let post = |token: Option<&str>| {
        let args =
            ["-H", "content-type: application/x-ndjson", "--data-binary", &lines, &https(&follower, "/v1/entries")];
        curl(&pki.ca, token, &args)
    };
    assert_eq!(post(None).0, 401);
    assert_eq!(post(Some(&secret("reader"))).0, 403);
    let (status, body) = post(Some(&secret("shipper")));
    assert_eq!(status, 200, "{body}");

    // The follower's pushes reach every member; a reader reads them there.
    let deadline = Instant::now() + WAIT;
    for member in &members {
        loop {
            let (status, body) = curl(&pki.ca, Some(&secret("reader")), &[&https(member, "/v1/entries?limit=1000")]);
            assert_eq!(status, 200, "{body}");
            let shipped = body.lines().filter(|line| line.contains("shipped-") && line.contains("\"node\":9")).count();
            if shipped == 100 {
                break;
            }
            assert!(Instant::now() < deadline, "a member holds {shipped} of 100:\n{}", follower.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let logs: String = members.iter().map(TestNode::log_text).collect();
    assert!(logs.contains("identity=follower-9") && logs.contains("identity=node-"), "peers known by certificate");
    let refusals: u64 = members
        .iter()
        .flat_map(|member| {
            let (_, metrics) = curl(&pki.ca, Some(&monitor), &[&https(member, "/metrics")]);
            metrics
                .lines()
                .filter(|line| line.starts_with("wormdb_auth_failures_total{"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(refusals, 0, "no member refused a peer or the follower");

    // The operator's CLI: its certificate and its token.
    let ops = pki.client();
    let ops_token = dir.path().join("ops.token");
    std::fs::write(&ops_token, secret("ops")).unwrap();
    let status = |token: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wormdb"));
        command.args(["cluster", "status", "--to", &grpc[0], "--tls-ca", &ca]);
        command.args(["--tls-cert", &path(&ops.cert), "--tls-key", &path(&ops.key)]);
        if token {
            command.args(["--token-file", &path(&ops_token)]);
        }
        command.output().unwrap()
    };
    let shown = status(true);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success() && text.contains("leader"), "{text}{}", String::from_utf8_lossy(&shown.stderr));
    assert!(!status(false).status.success(), "the CLI without a token was let in");

    // Python's grpcio: a client certificate (the gRPC port requires one)
    // and the shipper's token write; the reader's cannot.
    let grpcio = |token: &str| {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/grpc_call.py");
        let output = Command::new(&python)
            .arg(&script)
            .args([&follower.grpc_addr, "write", "--ca", &ca, "--cert", &path(&ops.cert), "--key", &path(&ops.key)])
            .args(["--token", token])
            .output()
            .unwrap_or_else(|error| panic!("{}: {error} (run scripts/test-deps.sh)", python.display()));
        let reply: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&output.stderr)));
        reply["code"].as_str().unwrap().to_string()
    };
    assert_eq!(grpcio(&secret("shipper")), "OK");
    assert_eq!(grpcio(&secret("reader")), "PERMISSION_DENIED");
}
