//! TLS and mutual TLS on every port (DESIGN.md section 10), against real
//! `wormdb serve` processes, with real clients where there are some (`curl`,
//! `openssl s_client`) and our own gRPC channel. The certificates are made
//! by the `openssl` CLI in each test (tests/common/certs.rs).
//!
//! - HTTPS ingest and query with curl; TLS 1.0/1.1 and plaintext refused
//!   and counted, the node healthy after.
//! - gRPC over mutual TLS, with our channel and with Python's grpcio: no
//!   certificate, or one from another CA, is refused and counted; a good
//!   one is let in, and the handler sees who it names.
//! - A tier of three members and a follower, every connection mutual TLS:
//!   Raft, forwarded writes, the follower's pushes, `wormdb restore`,
//!   `wormdb cluster status`.
//! - SIGHUP rotation: new connections see the new certificate, one opened
//!   before keeps working; a bad file keeps the old one.
//! - Garbage and truncated ClientHellos and HTTP/2 prefaces on both ports
//!   never take a node down.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::certs::{path, Pair, Pki};
use common::node::TestNode;
use rand::{Rng, SeedableRng};
use wormdb::grpc::status::{Code, Status};
use wormdb::grpc::transport::{Call, Channel, LocalFuture, ServerOptions, Service};
use wormdb::net::Identity;
use wormdb::proto::{ClusterStatusRequest, ClusterStatusResponse, LogEntry, WriteRequest, WriteResponse};
use wormdb::tls::{Listener, NodeTls, TlsFiles};

const WRITE: &str = "/wormdb.v1.WormIngest/Write";
const TIMEOUT: Duration = Duration::from_secs(10);

/// `curl -sS ARGS`: the status code (0 when curl itself failed) and the body
/// (or curl's error).
fn curl(args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    if !output.status.success() {
        return (0, String::from_utf8_lossy(&output.stderr).into_owned());
    }
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `https://127.0.0.1:PORT/PATH` on `node`.
fn https(node: &TestNode, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", node.port())
}

/// curl's flags to trust `ca` and present the plain client certificate made
/// beside it (its credential when the node asks for one: with mutual TLS,
/// an anonymous HTTP call is refused).
fn trust(ca: &Path) -> Vec<String> {
    let client = common::certs::client_of(ca);
    ["--cacert", ca.to_str().unwrap(), "--cert", &path(&client.cert), "--key", &path(&client.key)]
        .map(String::from)
        .to_vec()
}

/// GET over HTTPS, trusting `ca`; panics unless 200.
fn get(node: &TestNode, ca: &Path, path: &str) -> String {
    let trust = trust(ca);
    let url = https(node, path);
    let args: Vec<&str> = trust.iter().map(String::as_str).chain([url.as_str()]).collect();
    let (status, body) = curl(&args);
    assert_eq!(status, 200, "GET {path}: {body}\n{}", node.log_text());
    body
}

/// POSTs NDJSON lines `body-0..count` over HTTPS; panics unless 200.
fn post_entries(node: &TestNode, ca: &Path, prefix: &str, count: usize) {
    let lines: String = (0..count).map(|index| format!("{{\"body\":\"{prefix}-{index}\"}}\n")).collect();
    let url = https(node, "/v1/entries");
    let trust = trust(ca);
    let args = ["-H", "content-type: application/x-ndjson", "--data-binary", &lines, &url];
    let (status, body) = curl(&[&trust.iter().map(String::as_str).collect::<Vec<_>>()[..], &args[..]].concat());
    assert_eq!(status, 200, "POST: {body}\n{}", node.log_text());
}

/// `wormdb_tls_handshake_failures_total{listener}` on `node`.
fn handshake_failures(node: &TestNode, ca: &Path, listener: &str) -> u64 {
    let metrics = get(node, ca, "/metrics");
    let needle = format!("listener=\"{listener}\"}} ");
    metrics
        .lines()
        .find(|line| line.starts_with("wormdb_tls_handshake_failures_total") && line.contains(&needle))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no handshake failure counter for {listener}:\n{metrics}"))
}

/// `openssl s_client ARGS` against `addr`, given no input: its exit status and
/// everything it printed.
fn s_client(addr: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", addr])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The serial of the certificate a new connection to `addr` is shown.
fn served_serial(addr: &str, ca: &Path) -> String {
    let (ok, text) = s_client(addr, &["-CAfile", ca.to_str().unwrap(), "-showcerts"]);
    assert!(ok, "s_client failed:\n{text}");
    let begin = text.find("-----BEGIN CERTIFICATE-----").expect("a certificate");
    let end = text[begin..].find("-----END CERTIFICATE-----").unwrap() + begin + "-----END CERTIFICATE-----".len();
    common::certs::serial(&text.as_bytes()[begin..end])
}

/// A write of one entry through `channel`.
async fn write_one(channel: &Channel, body: &str) -> Result<WriteResponse, Status> {
    let entry = LogEntry { body: body.as_bytes().to_vec().into(), ..LogEntry::default() };
    channel.unary(WRITE, &WriteRequest { entries: vec![entry] }, Some(TIMEOUT)).await
}

/// Connects with `tls` and writes one entry: the whole outcome.
async fn connect_and_write(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Result<WriteResponse, Status> {
    let channel = Channel::connect_with(addr, TIMEOUT, Some(tls)).await?;
    write_one(&channel, "over tls").await
}

/// A client configuration for tests: trust `ca`, present `pair`.
fn client(ca: &Path, pair: Option<&Pair>) -> Arc<rustls::ClientConfig> {
    let pair = pair.map(|pair| (pair.cert.as_path(), pair.key.as_path()));
    wormdb::tls::tool_client_config(ca, pair, Listener::Grpc).unwrap()
}

#[test]
fn curl_ingests_and_queries_over_https_and_old_or_plain_clients_are_refused() {
    let dir = common::durable_temp_dir();
    let pki = Pki::new(dir.path());
    let server = pki.server("server");
    let node = TestNode::start(&dir.path().join("data"), &[&["--shards", "1"][..], &strings(&server.args())].concat());
    let ca = pki.ca.clone();

    post_entries(&node, &ca, "hello", 3);
    let body = get(&node, &ca, "/v1/entries");
    let bodies: Vec<String> = body
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bodies, ["hello-0", "hello-1", "hello-2"]);
    assert_eq!(get(&node, &ca, "/healthz"), "ok\n");
    let (ok, text) =
        s_client(&format!("127.0.0.1:{}", node.port()), &["-CAfile", path(&ca).as_str(), "-alpn", "http/1.1"]);
    assert!(ok && text.contains("ALPN protocol: http/1.1"), "{text}");

    // A client that trusts another CA does not trust this node.
    let (status, error) = curl(&["--cacert", path(&pki.other_ca).as_str(), &https(&node, "/healthz")]);
    assert_eq!(status, 0, "{error}");

    let addr = format!("127.0.0.1:{}", node.port());
    let before = handshake_failures(&node, &ca, "http");
    for version in ["-tls1", "-tls1_1"] {
        // SECLEVEL=0: the client must offer the old version for the node to refuse it.
        let (ok, text) = s_client(&addr, &[version, "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", path(&ca).as_str()]);
        assert!(!ok, "{version} was accepted:\n{text}");
        assert!(!text.contains("BEGIN CERTIFICATE") && text.contains("alert"), "{version}:\n{text}");
    }
    // Plaintext HTTP to the TLS port.
    let (status, error) = curl(&[&format!("http://{addr}/healthz")]);
    assert_eq!(status, 0, "plaintext got an answer: {error}");
    let after = handshake_failures(&node, &ca, "http");
    assert_eq!(after, before + 3, "each refusal is counted");
    assert_eq!(get(&node, &ca, "/healthz"), "ok\n", "the node is healthy");
}

fn strings(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn grpc_over_mutual_tls_lets_in_only_certificates_from_the_client_ca() {
    let dir = common::durable_temp_dir();
    let pki = Pki::new(dir.path());
    let server = pki.server("server");
    let (follower, stranger) = (pki.follower(7), pki.stranger("follower-7"));
    let ca_arg = path(&pki.ca);
    let mut args = vec!["--shards", "1", "--tls-client-ca", ca_arg.as_str()];
    let server_args = server.args();
    args.extend(strings(&server_args));
    let node = TestNode::start(&dir.path().join("data"), &args);
    let addr: SocketAddr = node.grpc_addr.parse().unwrap();
    let before = handshake_failures(&node, &pki.ca, "grpc");

    let ca = pki.ca.clone();
    let other_ca = pki.other_ca.clone();
    // A plain client may write (a follower's certificate only pushes as it).
    let plain_client = pki.client();
    let expired = pki.expired("client");
    let outcomes = common::run(move || async move {
        let expired = connect_and_write(addr, client(&ca, Some(&expired))).await;
        let good = connect_and_write(addr, client(&ca, Some(&plain_client))).await;
        let anonymous = connect_and_write(addr, client(&ca, None)).await;
        let strange = connect_and_write(addr, client(&ca, Some(&stranger))).await;
        // The node's certificate is not from a CA this client trusts.
        let untrusting = connect_and_write(addr, client(&other_ca, Some(&follower))).await;
        // Plaintext to a TLS port.
        let plain = match Channel::connect_with(addr, TIMEOUT, None).await {
            Ok(channel) => write_one(&channel, "plain").await,
            Err(status) => Err(status),
        };
        [good, anonymous, strange, untrusting, plain, expired]
    });
    let [good, anonymous, strange, untrusting, plain, expired] = outcomes;
    let good = good.unwrap();
    assert!(good.first_seq >= 1);
    let refused = [("no certificate", anonymous), ("another CA", strange), ("plaintext", plain), ("expired", expired)];
    for (what, outcome) in refused {
        let status = outcome.expect_err(what);
        assert_eq!(status.code, Code::Unavailable, "{what}: {status:?}");
    }
    let status = untrusting.expect_err("an untrusted server");
    assert!(status.message.contains("tls handshake"), "{status:?}");
    assert_eq!(handshake_failures(&node, &pki.ca, "grpc"), before + 5, "every refusal counted");
    assert!(
        node.log_text().contains("grpc: client certificate verified") && node.log_text().contains("identity=client"),
        "{}",
        node.log_text()
    );
    let entries = get(&node, &pki.ca, "/v1/entries");
    assert_eq!(entries.lines().count(), 1, "only the good client's write is stored: {entries}");
}

/// One call with the real Python gRPC client (tests/clients/grpc_call.py,
/// grpcio with `ssl_channel_credentials`): its JSON answer.
fn grpcio(addr: &str, call: &str, args: &[&str]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/test-venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/test-deps.sh (scripts/test.sh does)", python.display());
    let output = Command::new(python)
        .arg(root.join("tests/clients/grpc_call.py"))
        .args([addr, call])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("grpc_call.py: {error}: {stdout}{}", String::from_utf8_lossy(&output.stderr)))
}

#[test]
fn grpcio_speaks_mutual_tls_with_a_node() {
    let dir = common::durable_temp_dir();
    let pki = Pki::new(dir.path());
    let server = pki.server("server");
    let (follower, stranger) = (pki.follower(3), pki.stranger("follower-3"));
    let ca = path(&pki.ca);
    let server_args = server.args();
    let mut args = vec!["--shards", "1", "--tls-client-ca", ca.as_str()];
    args.extend(strings(&server_args));
    let node = TestNode::start(&dir.path().join("data"), &args);
    let addr = node.grpc_addr.clone();
    // A plain client writes and reads; the follower only as itself (it
    // may not write as a client).
    let client = pki.client();
    let (cert, key) = (path(&client.cert), path(&client.key));
    let (follower_cert, follower_key) = (path(&follower.cert), path(&follower.key));
    let denied = grpcio(&addr, "write", &["--ca", &ca, "--cert", &follower_cert, "--key", &follower_key]);
    assert_eq!(denied["code"], "PERMISSION_DENIED", "{denied}");

    let written = grpcio(&addr, "write", &["--ca", &ca, "--cert", &cert, "--key", &key, "--body", "from grpcio"]);
    assert_eq!(written["code"], "OK", "{written}");
    let read = grpcio(&addr, "query", &["--ca", &ca, "--cert", &cert, "--key", &key]);
    assert_eq!(read["result"], serde_json::json!(["from grpcio"]), "{read}");

    let before = handshake_failures(&node, &pki.ca, "grpc");
    let anonymous = grpcio(&addr, "write", &["--ca", &ca]);
    assert_eq!(anonymous["code"], "UNAVAILABLE", "no client certificate: {anonymous}");
    let (cert, key) = (path(&stranger.cert), path(&stranger.key));
    let strange = grpcio(&addr, "write", &["--ca", &ca, "--cert", &cert, "--key", &key]);
    assert_eq!(strange["code"], "UNAVAILABLE", "a certificate from another CA: {strange}");
    let plain = grpcio(&addr, "write", &[]);
    assert_eq!(plain["code"], "UNAVAILABLE", "plaintext: {plain}");
    assert!(handshake_failures(&node, &pki.ca, "grpc") >= before + 3, "each refusal counted");
    let entries = get(&node, &pki.ca, "/v1/entries");
    assert_eq!(entries.lines().count(), 1, "only the verified client's write is stored: {entries}");
}

/// Answers every call with the identity its connection proved.
struct WhoAmI;

impl Service for WhoAmI {
    fn call<'a>(self: Rc<Self>, _path: &'a str, call: &'a mut Call) -> LocalFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            let _: Option<ClusterStatusRequest> = call.messages.next().await?;
            let json = call.peer.identity.as_ref().map(Identity::to_string).unwrap_or_default();
            call.send(&ClusterStatusResponse { json }).await
        })
    }
}

#[test]
fn a_handler_sees_the_identity_the_client_certificate_names() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server = pki.server("server");
    let files = TlsFiles {
        cert: Some(server.cert.clone()),
        key: Some(server.key.clone()),
        client_ca: Some(pki.ca.clone()),
        peer_ca: None,
    };
    let tls = NodeTls::load(files).unwrap();
    let config = tls.config(Listener::Grpc).unwrap();
    let clients = [pki.follower(4), pki.node(2), pki.server("client")];
    let ca = pki.ca.clone();
    let seen = common::run(move || async move {
        let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let options = Rc::new(ServerOptions { max_message_bytes: 1 << 20, closing: Rc::new(|| false) });
        let accepting = glommio::spawn_local(async move {
            loop {
                let Ok(socket) = listener.accept().await else { continue };
                let (config, options) = (config.clone(), options.clone());
                glommio::spawn_local(async move {
                    let addr = socket.peer_addr().ok();
                    if let Some((stream, identity)) = wormdb::tls::accept(socket, Some(config), Listener::Grpc).await {
                        let peer = wormdb::net::Peer { addr, identity };
                        wormdb::grpc::transport::serve_connection(stream, peer, Rc::new(WhoAmI), options).await;
                    }
                })
                .detach();
            }
        })
        .detach();
        let mut seen = Vec::new();
        for pair in &clients {
            let channel = Channel::connect_with(addr, TIMEOUT, Some(client(&ca, Some(pair)))).await.unwrap();
            let answer: ClusterStatusResponse =
                channel.unary("/test.WhoAmI/Who", &ClusterStatusRequest {}, Some(TIMEOUT)).await.unwrap();
            seen.push(answer.json);
        }
        accepting.cancel();
        seen
    });
    assert_eq!(seen, ["follower-4", "node-2", "localhost"]);
}

/// Each group's leader as member `node` sees it (0: none known).
fn leaders(node: &TestNode, ca: &Path) -> Vec<u64> {
    let cluster: serde_json::Value = serde_json::from_str(&get(node, ca, "/v1/cluster")).unwrap();
    cluster["groups"].as_array().unwrap().iter().map(|group| group["leader"].as_u64().unwrap()).collect()
}

#[test]
fn a_tier_and_its_follower_speak_mutual_tls_on_every_connection() {
    let dir = common::durable_temp_dir();
    let pki = Pki::new(dir.path());
    let ca = path(&pki.ca);
    let ports: Vec<u16> = (0..3).map(|_| common::node::free_port()).collect();
    let grpc: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    let peers = grpc.iter().enumerate().map(|(index, addr)| format!("{}={addr}", index + 1)).collect::<Vec<_>>();
    let peers = peers.join(",");
    let tls = |pair: &Pair| {
        let mut args = pair.args();
        args.extend(["--tls-client-ca".into(), ca.clone(), "--peer-ca".into(), ca.clone()]);
        args
    };
    let pairs: Vec<Pair> = (1..=3).map(|id| pki.node(id)).collect();
    let members: Vec<TestNode> = (0..3)
        .map(|index| {
            let id = (index + 1).to_string();
            let mut args = vec!["--node-id", &id, "--shards", "1", "--peers", &peers];
            let tls_args = tls(&pairs[index]);
            args.extend(strings(&tls_args));
            TestNode::start_on(&dir.path().join(format!("member-{id}")), ports[index], &args)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !members.iter().all(|member| leaders(member, &pki.ca).iter().all(|&leader| leader != 0)) {
        assert!(Instant::now() < deadline, "no leader over TLS:\n{}", members[0].log_text());
        std::thread::sleep(Duration::from_millis(100));
    }

    // A write to each member: those that do not lead forward it to the leader.
    for member in &members {
        post_entries(member, &pki.ca, "direct", 1);
    }

    let follower_pair = pki.follower(9);
    let follower_tls = tls(&follower_pair);
    let leader_list = grpc.join(",");
    let mut args = vec!["--node-id", "9", "--shards", "1", "--leader", &leader_list];
    args.extend(strings(&follower_tls));
    let follower = TestNode::start(&dir.path().join("follower"), &args);
    post_entries(&follower, &pki.ca, "pushed", 50);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats: serde_json::Value = serde_json::from_str(&get(&follower, &pki.ca, "/v1/stats")).unwrap();
        let shard = &stats["shards"][0];
        if shard["replication"]["acked_seq"].as_u64() == shard["last_seq"].as_u64() && shard["last_seq"] == 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower's pushes are not acknowledged: {stats}\n{}",
            follower.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every member has applied the follower's entries and the direct ones.
    let deadline = Instant::now() + Duration::from_secs(60);
    for member in &members {
        loop {
            let entries = get(member, &pki.ca, "/v1/entries?limit=1000");
            let (mut pushed, mut direct) = (0, 0);
            for line in entries.lines() {
                let entry: serde_json::Value = serde_json::from_str(line).unwrap();
                let body = entry["body"].as_str().unwrap();
                pushed += usize::from(body.starts_with("pushed-") && entry["node"] == 9);
                direct += usize::from(body.starts_with("direct-"));
            }
            if (pushed, direct) == (50, 3) {
                break;
            }
            assert!(Instant::now() < deadline, "member has {pushed} pushed and {direct} direct entries");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let identities: String = members.iter().map(TestNode::log_text).collect();
    assert!(identities.contains("identity=follower-9"), "the follower is known by its certificate");
    assert!(identities.contains("identity=node-"), "members are known by theirs");

    // `wormdb restore` over mutual TLS, as the follower, into a new directory.
    let restored = Command::new(env!("CARGO_BIN_EXE_wormdb"))
        .args(["restore", "--from", &leader_list, "--follower-id", "9", "--shards", "1", "--data-dir"])
        .arg(dir.path().join("restored"))
        .args(["--tls-ca", &ca, "--tls-cert", &path(&follower_pair.cert), "--tls-key", &path(&follower_pair.key)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&restored.stdout);
    assert!(
        restored.status.success() && text.contains("shard 0: restored 50 entries"),
        "{text}{}",
        String::from_utf8_lossy(&restored.stderr)
    );

    // The CLI: with a member's certificate it is let in, without one refused.
    let cluster = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wormdb"))
            .args(["cluster", "status", "--to", &grpc[0], "--tls-ca", &ca])
            .args(extra)
            .output()
            .unwrap()
    };
    let (cert, key) = (path(&pairs[0].cert), path(&pairs[0].key));
    let status = cluster(&["--tls-cert", &cert, "--tls-key", &key]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success() && text.contains("leader"), "{text}{}", String::from_utf8_lossy(&status.stderr));
    let refused = cluster(&[]);
    assert!(!refused.status.success(), "a CLI without a client certificate was let in");
}

#[test]
fn sighup_rotates_the_certificate_for_new_connections_and_keeps_old_ones() {
    let dir = common::durable_temp_dir();
    let pki = Pki::new(dir.path());
    let server = pki.server("server");
    let server_args = server.args();
    let node = TestNode::start(&dir.path().join("data"), &[&["--shards", "1"][..], &strings(&server_args)].concat());
    let (http, grpc) = (format!("127.0.0.1:{}", node.port()), node.grpc_addr.clone());
    let old_serial = common::certs::serial_of_file(&server.cert);
    assert_eq!(served_serial(&http, &pki.ca), old_serial);

    // A connection opened before the rotation, on an executor thread of
    // its own: it writes once now and once after the rotation.
    let addr: SocketAddr = grpc.parse().unwrap();
    let config = client(&pki.ca, None);
    let (rotated, wait_rotated) = std::sync::mpsc::channel::<()>();
    let (answer, answers) = std::sync::mpsc::channel::<Result<u64, String>>();
    let client_thread = std::thread::spawn(move || {
        common::run(move || async move {
            let Ok(channel) = Channel::connect_with(addr, TIMEOUT, Some(config)).await else { return };
            let first = write_one(&channel, "before").await;
            answer.send(first.map(|written| written.first_seq).map_err(|status| status.message)).unwrap();
            // Wait for the rotation without blocking the executor.
            while wait_rotated.try_recv().is_err() {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            let after = write_one(&channel, "after, on the connection opened before").await;
            answer.send(after.map(|written| written.first_seq).map_err(|status| status.message)).unwrap();
        })
    });
    assert_eq!(answers.recv_timeout(TIMEOUT).unwrap(), Ok(1));

    pki.rotate(&server);
    let new_serial = common::certs::serial_of_file(&server.cert);
    assert_ne!(new_serial, old_serial);
    let reloads = node.log_count("tls: certificate, key and CAs reloaded");
    node.signal(libc::SIGHUP);
    node.wait_for_log("tls: certificate, key and CAs reloaded", reloads, TIMEOUT);
    assert_eq!(served_serial(&http, &pki.ca), new_serial, "new HTTP connections see the new certificate");
    assert_eq!(served_serial(&grpc, &pki.ca), new_serial, "new gRPC connections too");

    // A reload that fails keeps what is in use.
    std::fs::write(&server.key, "-----BEGIN PRIVATE KEY-----\ntruncated").unwrap();
    let failures = node.log_count("tls: reload failed");
    node.signal(libc::SIGHUP);
    node.wait_for_log("tls: reload failed", failures, TIMEOUT);
    assert_eq!(served_serial(&http, &pki.ca), new_serial, "the bad file changed nothing");

    rotated.send(()).unwrap();
    let outcome = answers.recv_timeout(TIMEOUT).unwrap();
    client_thread.join().unwrap();
    assert_eq!(outcome, Ok(2), "the connection opened before the rotation still works");
    assert_eq!(get(&node, &pki.ca, "/healthz"), "ok\n");
}

/// A real ClientHello for `addr` (rustls', offering TLS 1.2 and 1.3).
fn client_hello(ca: &Path) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut connection = rustls::ClientConnection::new(client(ca, None), name).unwrap();
    let mut hello = Vec::new();
    connection.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100 && hello[0] == 0x16, "a handshake record");
    hello
}

/// Sends `bytes` on a new connection to `addr`, closes the sending half,
/// and reads what comes back until the node closes (bounded).
fn send_garbage(addr: &str, bytes: &[u8]) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// What the garbage test sends: random bytes, every truncation of a real
/// ClientHello and of the HTTP/2 preface, and corrupted ClientHellos.
fn garbage(seed: u64, hello: &[u8]) -> Vec<Vec<u8>> {
    let mut random = rand::rngs::SmallRng::seed_from_u64(seed);
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut out: Vec<Vec<u8>> = Vec::new();
    for _ in 0..40 {
        let length = random.gen_range(0..2048);
        out.push((0..length).map(|_| random.gen()).collect());
    }
    for cut in (0..hello.len()).step_by(hello.len() / 30 + 1) {
        out.push(hello[..cut].to_vec());
    }
    for _ in 0..30 {
        let mut corrupt = hello.to_vec();
        for _ in 0..random.gen_range(1..4) {
            let at = random.gen_range(0..corrupt.len());
            corrupt[at] = random.gen();
        }
        out.push(corrupt);
    }
    for cut in 0..=PREFACE.len() {
        out.push(PREFACE[..cut].to_vec());
    }
    // The preface, then a SETTINGS frame header claiming 16 MiB, then junk.
    let mut frame = PREFACE.to_vec();
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0x04, 0, 0, 0, 0, 0]);
    frame.extend((0..100).map(|_| random.gen::<u8>()));
    out.push(frame);
    out.push(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
    out
}

#[test]
fn garbage_and_truncated_handshakes_never_take_a_node_down() {
    let dir = common::durable_temp_dir();
    let pki = Pki::new(dir.path());
    let server = pki.server("server");
    let ca_arg = path(&pki.ca);
    let server_args = server.args();
    let mut args = vec!["--shards", "1", "--tls-client-ca", ca_arg.as_str()];
    args.extend(strings(&server_args));
    let node = TestNode::start(&dir.path().join("tls"), &args);
    let plain = TestNode::start(&dir.path().join("plain"), &["--shards", "1"]);
    let http = format!("127.0.0.1:{}", node.port());

    // A client that connects and says nothing is closed after the
    // handshake timeout (TLS_HANDSHAKE_TIMEOUT).
    let mut silent = TcpStream::connect(&http).unwrap();
    let silent = std::thread::spawn(move || {
        let opened = Instant::now();
        silent.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut byte = [0u8; 1];
        let closed = matches!(silent.read(&mut byte), Ok(0) | Err(_));
        (closed, opened.elapsed())
    });

    let seed: u64 =
        std::env::var("WORMDB_TLS_GARBAGE_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
    eprintln!("garbage seed {seed} (WORMDB_TLS_GARBAGE_SEED replays it)");
    let cases = garbage(seed, &client_hello(&pki.ca));
    let before = (handshake_failures(&node, &pki.ca, "http"), handshake_failures(&node, &pki.ca, "grpc"));
    let addrs = [http.clone(), node.grpc_addr.clone(), format!("127.0.0.1:{}", plain.port()), plain.grpc_addr.clone()];
    for addr in &addrs {
        for case in &cases {
            send_garbage(addr, case);
        }
    }
    // Memory: more passes after the first (which warmed the allocator)
    // leave the resident size about where it was; a connection's state
    // that outlived it would grow it with every pass.
    let rss = (node.rss_bytes(), plain.rss_bytes());
    const PASSES: usize = 5;
    for _ in 0..PASSES {
        for addr in &addrs {
            for case in &cases {
                send_garbage(addr, case);
            }
        }
    }
    let grown = (node.rss_bytes().saturating_sub(rss.0), plain.rss_bytes().saturating_sub(rss.1));
    let connections = PASSES * cases.len() * 2;
    assert!(
        grown.0 < 16 << 20 && grown.1 < 16 << 20,
        "{connections} garbage connections per node grew the resident size by {grown:?} bytes"
    );
    assert!(node.is_running() && plain.is_running());
    assert_eq!(get(&node, &pki.ca, "/healthz"), "ok\n", "the TLS node is healthy");
    assert_eq!(common::node::get(&plain.url("/healthz")).status, 200, "the plaintext node is healthy");
    let after = (handshake_failures(&node, &pki.ca, "http"), handshake_failures(&node, &pki.ca, "grpc"));
    // Every case but the empty one fails its handshake (an empty one may be
    // counted too: the peer closed before a ClientHello).
    assert!(after.0 >= before.0 + cases.len() as u64 - 1, "{before:?} → {after:?}");
    assert!(after.1 >= before.1 + cases.len() as u64 - 1, "{before:?} → {after:?}");

    // The node still does its work, on both ports.
    post_entries(&node, &pki.ca, "after garbage", 1);
    let addr: SocketAddr = node.grpc_addr.parse().unwrap();
    let config = client(&pki.ca, Some(&pki.client()));
    common::run(move || async move { connect_and_write(addr, config).await.unwrap() });

    let (closed, waited) = silent.join().unwrap();
    assert!(closed, "a silent connection stays open");
    let bound = wormdb::limits::TLS_HANDSHAKE_TIMEOUT;
    assert!(
        waited >= bound - Duration::from_millis(500) && waited < bound + Duration::from_secs(5),
        "closed after {waited:?}"
    );
    // Every connection's slot is given back: only the one reading the
    // metrics is open.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = get(&node, &pki.ca, "/metrics");
        let open = |listener: &str| -> u64 {
            let needle = format!("listener=\"{listener}\"}} ");
            metrics
                .lines()
                .find(|line| line.starts_with("wormdb_connections_open{") && line.contains(&needle))
                .and_then(|line| line.rsplit(' ').next()?.parse().ok())
                .unwrap()
        };
        if (open("http"), open("grpc")) == (1, 0) {
            break;
        }
        assert!(Instant::now() < deadline, "connections still open: http {}, grpc {}", open("http"), open("grpc"));
        std::thread::sleep(Duration::from_millis(100));
    }
}
