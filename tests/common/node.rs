//! Starts the real `wormdb` binary on an ephemeral port for black-box tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running node.
pub struct TestNode {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The gRPC address, `127.0.0.1:PORT`.
    pub grpc_addr: String,
    /// Everything the node logged.
    pub log: Arc<Mutex<Vec<String>>>,
    /// The data directory.
    pub data_dir: PathBuf,
    args: Vec<String>,
    /// Run with this working directory and no `--data-dir` (the defaults).
    cwd: Option<PathBuf>,
}

impl TestNode {
    /// Starts `wormdb serve --data-dir DIR --http-addr 127.0.0.1:0 ARGS...`
    /// and waits until every shard's listener is up.
    pub fn start(data_dir: &Path, args: &[&str]) -> TestNode {
        TestNode::launched(data_dir.to_path_buf(), None, args, None)
    }

    /// Like [`TestNode::start`], on a gRPC port chosen beforehand (the
    /// members of a tier must know each other's addresses).
    pub fn start_on(data_dir: &Path, grpc_port: u16, args: &[&str]) -> TestNode {
        TestNode::launched(data_dir.to_path_buf(), None, args, Some(grpc_port))
    }

    /// Starts `wormdb serve --http-addr 127.0.0.1:0 ARGS...` in `cwd`, with
    /// the default (relative) data directory, as the README's first command does.
    pub fn start_in(cwd: &Path, args: &[&str]) -> TestNode {
        TestNode::launched(cwd.join("wormdb-data"), Some(cwd.to_path_buf()), args, None)
    }

    fn launched(data_dir: PathBuf, cwd: Option<PathBuf>, args: &[&str], grpc_port: Option<u16>) -> TestNode {
        let mut node = TestNode {
            child: None,
            base: String::new(),
            grpc_addr: String::new(),
            log: Default::default(),
            data_dir,
            args: args.iter().map(|arg| arg.to_string()).collect(),
            cwd,
        };
        node.launch(None, grpc_port);
        node
    }

    /// Whether the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its resident memory (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid().unwrap())).unwrap();
        let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the process.
    pub fn signal(&self, signal: i32) {
        let child = self.child.as_ref().expect("running");
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
    }

    fn launch(&mut self, port: Option<u16>, grpc_port: Option<u16>) {
        let addr = format!("127.0.0.1:{}", port.unwrap_or(0));
        let grpc_addr = format!("127.0.0.1:{}", grpc_port.unwrap_or(0));
        let mut command = Command::new(env!("CARGO_BIN_EXE_wormdb"));
        command.arg("serve");
        match &self.cwd {
            Some(cwd) => {
                command.current_dir(cwd);
            }
            None => {
                command.arg("--data-dir").arg(&self.data_dir);
            }
        }
        let mut child = command
            .args(["--http-addr", &addr, "--grpc-addr", &grpc_addr])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        // Owned by `self` from here on, so a panic below still kills it.
        self.child = Some(child);
        let log = self.log.clone();
        let (ready_sender, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                for (protocol, marker) in [("http", "http listening on "), ("grpc", "grpc listening on ")] {
                    if let Some(rest) = line.split(marker).nth(1) {
                        let _ = ready_sender.send((protocol, rest.split_whitespace().next().unwrap_or("").to_string()));
                    }
                }
                log.lock().unwrap().push(line);
            }
        });
        let shards = self
            .args
            .iter()
            .position(|arg| arg == "--shards")
            .map(|index| self.args[index + 1].parse().unwrap())
            .unwrap_or(2usize);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut listening = Vec::new();
        let mut grpc_listening = Vec::new();
        while listening.len() < shards || grpc_listening.len() < shards {
            let left = deadline.saturating_duration_since(Instant::now());
            match ready.recv_timeout(left) {
                Ok(("http", addr)) => listening.push(addr),
                Ok((_, addr)) => grpc_listening.push(addr),
                Err(_) => panic!("node did not start; log:\n{}", self.log.lock().unwrap().join("\n")),
            }
        }
        assert!(listening.iter().all(|addr| addr == &listening[0]), "shards listen on one port: {listening:?}");
        assert!(grpc_listening.iter().all(|addr| addr == &grpc_listening[0]), "one gRPC port: {grpc_listening:?}");
        self.base = format!("http://{}", listening[0]);
        self.grpc_addr = grpc_listening[0].clone();
    }

    /// The port the node listens on.
    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// `base + path`
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM; waits for a clean exit and returns its status code.
    pub fn terminate(&mut self) -> i32 {
        let mut child = self.child.take().expect("running");
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("node did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the node again on the same data dir and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        let port = self.port();
        let grpc_port = self.grpc_addr.rsplit(':').next().unwrap().parse().unwrap();
        self.launch(Some(port), Some(grpc_port));
    }

    /// The log so far, one string.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// How many lines logged so far contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|line| line.contains(needle)).count()
    }

    /// Waits until more than `seen` logged lines contain `needle`: a
    /// readiness signal. Panics with the log after `timeout`.
    pub fn wait_for_log(&self, needle: &str, seen: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log_count(needle) <= seen {
            assert!(Instant::now() < deadline, "no new {needle:?} logged in {timeout:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP response as the tests see it.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers we look at.
    pub retry_after: Option<String>,
    /// Content type.
    pub content_type: Option<String>,
    /// Body text.
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    /// The body as NDJSON lines.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.body.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build()
}

/// The bearer token [`get`], [`post`] and [`try_post`] send, when set.
static BEARER: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// Makes [`get`], [`post`] and [`try_post`] send `authorization: Bearer
/// SECRET` from now on, in this test binary (a tier protected by tokens);
/// `None` stops it.
pub fn set_bearer(secret: Option<&str>) {
    *BEARER.write().unwrap() = secret.map(str::to_owned);
}

/// A request with the bearer token of [`set_bearer`], if any.
fn request(method: &str, url: &str) -> ureq::Request {
    let request = agent().request(method, url);
    match BEARER.read().unwrap().as_deref() {
        Some(secret) => request.set("authorization", &format!("Bearer {secret}")),
        None => request,
    }
}

fn reply(result: Result<ureq::Response, ureq::Error>) -> Reply {
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("request failed: {error}"),
    };
    let status = response.status();
    let retry_after = response.header("retry-after").map(str::to_owned);
    let content_type = response.header("content-type").map(str::to_owned);
    let mut body = String::new();
    response.into_reader().read_to_string(&mut body).unwrap();
    Reply { status, retry_after, content_type, body }
}

/// GET.
pub fn get(url: &str) -> Reply {
    reply(request("GET", url).call())
}

impl TestNode {
    /// GET `path` on this node; a request that fails (the node died, or
    /// reset the connection) panics with the node's log, so that a rare
    /// failure under CI's load says why.
    pub fn get_or_log(&self, path: &str) -> Reply {
        match request("GET", &self.url(path)).call() {
            Err(ureq::Error::Transport(error)) => {
                let running = self.is_running();
                panic!("GET {path} failed: {error}; node running: {running}; its log:\n{}", self.log_text())
            }
            result => reply(result),
        }
    }

    /// Entries stored on this node: the sum of `/v1/stats` `entries` over
    /// its shards.
    pub fn entries_stored(&self) -> u64 {
        self.get_or_log("/v1/stats").json()["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|shard| shard["entries"].as_u64().unwrap())
            .sum()
    }
}

/// POST with a content type.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> Reply {
    reply(request("POST", url).set("content-type", content_type).send_bytes(body))
}

/// POST that may fail at the connection level (server going away).
pub fn try_post(url: &str, content_type: &str, body: &[u8]) -> Option<Reply> {
    match request("POST", url).set("content-type", content_type).send_bytes(body) {
        Ok(response) => Some(reply(Ok(response))),
        Err(ureq::Error::Status(code, response)) => Some(reply(Err(ureq::Error::Status(code, response)))),
        Err(_) => None,
    }
}

/// One entry to send: timestamp, tags, body.
pub type TestEntry<'a> = (i64, Vec<(&'a str, &'a str)>, String);

/// Builds NDJSON lines from (ts, tags, body).
pub fn ndjson(entries: &[TestEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ts, tags, body) in entries {
        let tags: serde_json::Map<String, serde_json::Value> =
            tags.iter().map(|(key, value)| (key.to_string(), serde_json::Value::from(*value))).collect();
        let line = serde_json::json!({ "ts": ts, "tags": tags, "body": body });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// (shard, seq) → body of every acknowledged entry.
pub type Acked = Arc<Mutex<HashMap<(u64, u64), String>>>;

/// Waits until `acked` holds at least `count` entries: a readiness signal
/// that writers are getting through. Panics after `timeout`.
pub fn wait_acked(acked: &Acked, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let held = acked.lock().unwrap().len();
        if held >= count {
            return;
        }
        assert!(Instant::now() < deadline, "{held} entries acknowledged after {timeout:?}, waited for {count}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `writers` threads posting 50-entry batches until `stop`; records
/// every acknowledged entry. Returns the status codes seen.
pub fn writers(
    url: String,
    writers: usize,
    round: usize,
    acked: Acked,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<u16>>> {
    (0..writers)
        .map(|writer| {
            let url = url.clone();
            let acked = acked.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let lines = super::loghub_lines("HDFS");
                let mut statuses = Vec::new();
                let mut batch = 0;
                while !stop.load(Ordering::Acquire) && batch < 100_000 {
                    let bodies: Vec<String> = (0..50)
                        .map(|index| {
                            format!(
                                "r{round} w{writer} b{batch} i{index} {}",
                                lines[(batch * 50 + index) % lines.len()]
                            )
                        })
                        .collect();
                    let entries: Vec<_> = bodies.iter().map(|body| (0, vec![("w", "x")], body.clone())).collect();
                    batch += 1;
                    let Some(reply) = try_post(&url, "application/x-ndjson", &ndjson(&entries)) else {
                        statuses.push(0);
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    statuses.push(reply.status);
                    if reply.status == 200 {
                        let answer = reply.json();
                        let shard = answer["shard"].as_u64().unwrap();
                        let first = answer["first_seq"].as_u64().unwrap();
                        let mut acked = acked.lock().unwrap();
                        for (offset, body) in bodies.into_iter().enumerate() {
                            acked.insert((shard, first + offset as u64), body);
                        }
                    }
                }
                statuses
            })
        })
        .collect()
}

/// A free TCP port on 127.0.0.1, for a server that must be named before it
/// starts (a tier member). Freed again at once, so a test races with other
/// processes binding ephemeral ports.
///
/// Never the same port twice in one test process: the kernel may hand a
/// port it just gave out to the next `bind(0)` once the probe socket is
/// closed (seen: members 1 and 2 of one tier on one port), and nodes
/// listen with SO_REUSEPORT, so both would listen on it and take each
/// other's calls.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Every entry a node serves, by id: (node, shard, seq) → bodies (more
/// than one body would be a duplicate).
pub fn contents(node: &TestNode) -> HashMap<(u64, u64, u64), Vec<String>> {
    let stats = get(&node.url("/v1/stats")).json();
    let total: u64 = stats["shards"].as_array().unwrap().iter().map(|shard| shard["entries"].as_u64().unwrap()).sum();
    let reply = get(&node.url(&format!("/v1/entries?limit={}", total.max(1))));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut out: HashMap<(u64, u64, u64), Vec<String>> = HashMap::new();
    for entry in reply.lines() {
        let key = (entry["node"].as_u64().unwrap(), entry["shard"].as_u64().unwrap(), entry["seq"].as_u64().unwrap());
        out.entry(key).or_default().push(entry["body"].as_str().unwrap().to_string());
    }
    out
}

/// Waits until every shard of `follower` has its last seq acknowledged
/// (lag 0); returns its stats then. Panics with its log after `timeout`.
pub fn wait_drained(follower: &TestNode, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let stats = get(&follower.url("/v1/stats")).json();
        let drained = stats["shards"].as_array().unwrap().iter().all(|shard| {
            let replication = &shard["replication"];
            replication["lag_entries"].as_u64() == Some(0)
                && replication["acked_seq"].as_u64() == shard["last_seq"].as_u64()
        });
        if drained {
            return stats;
        }
        assert!(Instant::now() < deadline, "replication did not drain: {stats}\n{}", follower.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl TestNode {
    /// An HTTP/2 channel to this node's gRPC port (tonic's), connected
    /// within 5 s.
    pub async fn grpc_channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap()
    }

    /// Opens a live tail, `GET /v1/tail?{query}`: its JSON lines arrive on
    /// the receiver, read by a thread (see [`stream_lines`]).
    pub fn tail(&self, query: &str) -> std::sync::mpsc::Receiver<serde_json::Value> {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port())).unwrap();
        write!(stream, "GET /v1/tail?{query} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || stream_lines(stream, sender));
        lines
    }
}

/// Reads a streamed NDJSON response (a live tail) line by line from
/// `stream` and sends each JSON line to `lines` until the stream ends, goes
/// quiet for 20 s, or the receiver is dropped.
fn stream_lines(stream: std::net::TcpStream, lines: std::sync::mpsc::Sender<serde_json::Value>) {
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line.starts_with('{') && lines.send(serde_json::from_str(line.trim()).unwrap()).is_err() {
            return;
        }
    }
}
