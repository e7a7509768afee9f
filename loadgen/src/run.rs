//! The driver: one glommio executor per thread, connections split across
//! them, each connection a task that follows the [`Schedule`] (or runs
//! closed loop for `--rate max`) and records into its thread's
//! [`Recorder`]. Latencies are flushed into one shared histogram once a
//! second (for the progress line) and at the end.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::Write as _;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use glommio::sync::Semaphore;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use http::{StatusCode, Uri};
use wormdb::grpc::transport::Channel;
use wormdb::proto::{PushAck, WatermarkRequest, WatermarkResponse};

use crate::cli::{Rate, Target};
use crate::client::{self, until, Failure, HttpClient, WriteAck};
use crate::pool::{self, Pool, PooledRequest};
use crate::record::{new_histogram, Recorder, SampleRef};
use crate::schedule::Schedule;

/// Requests one connection sends at most in a closed-loop run (a bound
/// that a real run never reaches; the clock ends it first).
pub const REQUESTS_PER_CONNECTION_MAX: u64 = 1 << 40;
/// Unacknowledged batches on one follower push stream (the node admits 16).
pub const PUSH_WINDOW: u64 = 16;
/// Pause before reconnecting after a connection failed.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(50);
/// Longest wait for a TCP connection.
pub const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(5);
/// How often latencies are flushed to the shared histogram.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How entries are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `POST /v1/entries`.
    Http,
    /// `WormIngest.Write`.
    GrpcWrite,
    /// `WormReplication.Replicate` as this follower.
    Follower(u32),
    /// OTLP `LogsService/Export` over gRPC.
    OtlpGrpc,
    /// OTLP `POST /v1/logs`, protobuf.
    OtlpHttp,
    /// Loki `POST /loki/api/v1/push`, snappy protobuf.
    Loki,
    /// Elasticsearch `POST /es/_bulk`.
    EsBulk,
    /// RFC 5424 syslog over TCP, octet-counted.
    SyslogTcp,
}

impl Mode {
    /// `http`, `grpc`, `follower`, or the shipper protocol's name (the
    /// node's `protocol` label).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::GrpcWrite => "grpc",
            Mode::Follower(_) => "follower",
            Mode::OtlpGrpc => "otlp-grpc",
            Mode::OtlpHttp => "otlp-http",
            Mode::Loki => "loki",
            Mode::EsBulk => "es-bulk",
            Mode::SyslogTcp => "syslog-tcp",
        }
    }

    /// The pool encoding this mode sends.
    pub fn encoding(self) -> pool::Encoding {
        match self {
            Mode::Http => pool::Encoding::Ndjson,
            Mode::GrpcWrite => pool::Encoding::WriteRequest,
            Mode::Follower(_) => pool::Encoding::PushEntries,
            Mode::OtlpGrpc => pool::Encoding::OtlpGrpc,
            Mode::OtlpHttp => pool::Encoding::OtlpProtobuf,
            Mode::Loki => pool::Encoding::LokiSnappy,
            Mode::EsBulk => pool::Encoding::EsBulk,
            Mode::SyslogTcp => pool::Encoding::Syslog,
        }
    }

    /// Whether the node's answer names the seqs it stored (wormdb's own
    /// protocols); the shippers' protocols answer without them, and syslog
    /// does not answer at all.
    pub fn sequenced(self) -> bool {
        matches!(self, Mode::Http | Mode::GrpcWrite | Mode::Follower(_))
    }

    /// What counts as an acknowledgement, for the report.
    pub fn acknowledgement(self) -> &'static str {
        match self {
            Mode::Http | Mode::GrpcWrite => "the node's answer, with the stored seqs",
            Mode::Follower(_) => "the node's PushAck watermark",
            Mode::OtlpGrpc | Mode::OtlpHttp => "the node's ExportLogsServiceResponse (no seqs)",
            Mode::Loki => "the node's 204 (no seqs)",
            Mode::EsBulk => "the node's bulk answer with \"errors\": false (no seqs)",
            Mode::SyslogTcp => {
                "none: syslog has no acknowledgements, so an entry counts once written to the socket \
                 (the node pushes back by not reading); --verify compares with the node's count"
            }
        }
    }

    /// The request path (with the base URL's prefix) of an HTTP mode; the
    /// bulk API is told which keys are tags (`_stream_fields`).
    pub fn path(self, base_path: &str, tag_count: usize) -> String {
        match self {
            Mode::OtlpHttp => format!("{base_path}/v1/logs"),
            Mode::Loki => format!("{base_path}/loki/api/v1/push"),
            Mode::EsBulk if tag_count > 0 => {
                let fields: Vec<String> = (0..tag_count).map(|index| format!("t{index}")).collect();
                format!("{base_path}/es/_bulk?_stream_fields={}", fields.join(","))
            }
            Mode::EsBulk => format!("{base_path}/es/_bulk"),
            _ => format!("{base_path}/v1/entries"),
        }
    }
}

/// What a request got back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// Stored, at these seqs.
    Sequenced(WriteAck),
    /// Stored (or, for syslog, written), this many entries, seqs unknown.
    Entries(u64),
}

/// Everything a run needs, fixed before it starts.
#[derive(Debug)]
pub struct Plan {
    /// Where to send.
    pub target: Target,
    /// How.
    pub mode: Mode,
    /// Fixed or max.
    pub rate: Rate,
    /// Unmeasured lead-in.
    pub warmup: Duration,
    /// Measured part.
    pub duration: Duration,
    /// Per-request timeout and the wait at the end.
    pub timeout: Duration,
    /// Connections.
    pub connections: usize,
    /// Executor threads.
    pub threads: usize,
    /// Seed for sampling.
    pub seed: u64,
    /// Pre-encoded requests.
    pub pool: Pool,
    /// Tags per entry (the bulk API's `_stream_fields`).
    pub tag_count: usize,
}

impl Plan {
    fn schedule(&self) -> Option<Schedule> {
        match self.rate {
            Rate::Fixed(rate) => Some(Schedule {
                connections: self.connections as u64,
                batch: self.pool.entries_per_request as u64,
                rate,
            }),
            Rate::Max => None,
        }
    }

    fn run_length(&self) -> Duration {
        self.warmup + self.duration
    }

    fn connect_timeout(&self) -> Duration {
        self.timeout.min(CONNECT_TIMEOUT_MAX)
    }

    fn entries_uri(&self) -> Uri {
        let path = self.mode.path(&self.target.base_path, self.tag_count);
        path.parse().unwrap_or_else(|_| Uri::from_static("/v1/entries"))
    }
}

/// What the threads share.
struct Shared {
    histogram: Mutex<Histogram<u64>>,
    /// Entries acknowledged so far, both phases (progress line).
    entries_acked: AtomicU64,
    /// Failed requests so far (progress line).
    errors: AtomicU64,
    finished_threads: AtomicUsize,
    start: Mutex<Go>,
}

/// The start signal the main thread gives once every thread is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Go {
    Pending,
    Start(Instant),
    Abort,
}

/// Longest a thread waits for the start signal.
const START_WAIT_MAX: Duration = Duration::from_secs(120);

/// A finished run, before it is turned into a report.
pub struct Outcome {
    /// Every thread's counters merged (its histogram is empty).
    pub recorder: Recorder,
    /// All measured latencies, µs.
    pub histogram: Histogram<u64>,
    /// Unix ns at the start and at the end of the run.
    pub start_unix_ns: i64,
    /// See `start_unix_ns`.
    pub end_unix_ns: i64,
    /// The measured phase, from the end of the warmup to the later of the
    /// schedule's end and the last acknowledgement.
    pub measured: Duration,
    /// CPU time (user + system) of this process during the run, seconds.
    pub cpu_s: f64,
}

/// Unix time in ns.
pub fn unix_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|since| since.as_nanos() as i64).unwrap_or(0)
}

/// User plus system CPU time of this process, seconds.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Runs the load. Connection failures before the start are an error (an
/// unreachable target); during the run they are counted and retried.
pub fn run(plan: Arc<Plan>, progress: bool) -> Result<Outcome, String> {
    let shared = Arc::new(Shared {
        histogram: Mutex::new(new_histogram()),
        entries_acked: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        finished_threads: AtomicUsize::new(0),
        start: Mutex::new(Go::Pending),
    });
    let (ready_sender, ready) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::with_capacity(plan.threads);
    for thread in 0..plan.threads {
        let plan_for_thread = plan.clone();
        let shared_for_thread = shared.clone();
        let ready_for_thread = ready_sender.clone();
        let spawned = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("loadgen-{thread}"))
            .spawn(move || worker(plan_for_thread, shared_for_thread, thread, ready_for_thread));
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                release(&shared, Go::Abort);
                for handle in handles {
                    let _ = handle.join();
                }
                return Err(format!("starting executor thread {thread}: {error}"));
            }
        }
    }
    drop(ready_sender);
    let mut failure = None;
    for _ in 0..plan.threads {
        match ready.recv_timeout(plan.connect_timeout() * 2 + Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failure = failure.or(Some(error)),
            Err(_) => failure = failure.or(Some("an executor thread did not get ready".to_string())),
        }
    }
    if let Some(error) = failure {
        release(&shared, Go::Abort);
        for handle in handles {
            let _ = handle.join();
        }
        return Err(format!("cannot reach {}: {error}", plan.target.authority));
    }
    let cpu_start = cpu_seconds();
    let start_unix_ns = unix_ns();
    // A little lead so every thread sees the start in the future.
    let start = Instant::now() + Duration::from_millis(20);
    release(&shared, Go::Start(start));
    report_progress(&plan, &shared, start, progress);
    let mut recorder = Recorder::new(plan.seed);
    for handle in handles {
        let thread_recorder = handle.join().map_err(|error| format!("an executor thread failed: {error}"))?;
        recorder.merge(&thread_recorder);
    }
    let cpu_s = cpu_seconds() - cpu_start;
    let histogram = shared.histogram.lock().map_err(|_| "a thread panicked".to_string())?.clone();
    let measured_from = plan.warmup.as_nanos();
    let measured_ns = recorder.last_ack_ns.saturating_sub(measured_from).max(plan.duration.as_nanos());
    Ok(Outcome {
        recorder,
        histogram,
        start_unix_ns,
        end_unix_ns: unix_ns(),
        measured: Duration::from_nanos(u64::try_from(measured_ns).unwrap_or(u64::MAX)),
        cpu_s,
    })
}

fn release(shared: &Shared, go: Go) {
    if let Ok(mut slot) = shared.start.lock() {
        *slot = go;
    }
}

/// Waits (blocking this thread, before any load) for the start signal.
fn wait_for_start(shared: &Shared) -> Option<Instant> {
    let deadline = Instant::now() + START_WAIT_MAX;
    while Instant::now() < deadline {
        match shared.start.lock().map(|go| *go) {
            Ok(Go::Start(start)) => return Some(start),
            Ok(Go::Abort) | Err(_) => return None,
            Ok(Go::Pending) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    None
}

/// Prints a progress line each second on stderr (when `enabled`) until
/// every thread finished; bounded by the run's length plus its wait.
fn report_progress(plan: &Plan, shared: &Shared, start: Instant, enabled: bool) {
    let hard_end = start + plan.run_length() + plan.timeout * 3 + Duration::from_secs(30);
    let mut last = (start, 0u64);
    let mut next_print = start + Duration::from_secs(1);
    while shared.finished_threads.load(Ordering::Acquire) < plan.threads && Instant::now() < hard_end {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if !enabled || now < next_print {
            continue;
        }
        next_print += Duration::from_secs(1);
        let acked = shared.entries_acked.load(Ordering::Relaxed);
        let rate = (acked - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
        last = (now, acked);
        let p99 = shared.histogram.lock().map(|histogram| histogram.value_at_quantile(0.99)).unwrap_or(0);
        let phase = if now < start + plan.warmup { " (warmup)" } else { "" };
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r[{:>5.1}s{phase}] {:>10.0} entries/s  acked {:>11}  errors {:>7}  p99 {:>8.3} ms   ",
            now.duration_since(start).as_secs_f64(),
            rate,
            acked,
            shared.errors.load(Ordering::Relaxed),
            p99 as f64 / 1000.0
        );
        let _ = stderr.flush();
    }
    if enabled {
        let _ = writeln!(std::io::stderr());
    }
}

/// What a connection task needs of its thread.
struct Context {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    recorder: RefCell<Recorder>,
    schedule: Option<Schedule>,
    start: Instant,
    start_unix_ns: i64,
    warmup_end: Instant,
    end: Instant,
    entries_uri: Uri,
}

impl Context {
    fn unix_ns_at(&self, instant: Instant) -> i64 {
        self.start_unix_ns + instant.saturating_duration_since(self.start).as_nanos() as i64
    }

    /// Requests `connection` sends, at most.
    fn requests_of(&self, connection: u64) -> u64 {
        match self.schedule {
            Some(schedule) => schedule.requests_before(connection, self.plan.run_length().as_nanos()),
            None => REQUESTS_PER_CONNECTION_MAX,
        }
    }

    /// When request `index` of `connection` is due (`None`: closed loop).
    fn due(&self, connection: u64, index: u64) -> Option<Instant> {
        let schedule = self.schedule?;
        Some(self.start + Duration::from_nanos(u64::try_from(schedule.due_ns(connection, index)).unwrap_or(u64::MAX)))
    }

    fn pool_index(&self, connection: u64, index: u64) -> usize {
        let slot = u128::from(index) * self.plan.connections as u128 + u128::from(connection);
        (slot % self.plan.pool.requests.len() as u128) as usize
    }

    fn fail(&self, failure: Failure) {
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
        self.recorder.borrow_mut().error(&failure.kind, || failure.message);
    }

    /// Records a request that was due at `intended` and acknowledged
    /// without seqs: counted, timed, not sampled for verification.
    fn acked_entries(&self, entries: u64, intended: Instant) {
        let now = Instant::now();
        let latency = (intended >= self.warmup_end).then(|| now.saturating_duration_since(intended).as_micros() as u64);
        self.recorder.borrow_mut().ack_unsequenced(
            entries,
            latency,
            now.saturating_duration_since(self.start).as_nanos(),
        );
        self.shared.entries_acked.fetch_add(entries, Ordering::Relaxed);
    }

    /// Records an acknowledged request that was due at `intended`.
    fn acked(&self, ack: WriteAck, pool_index: usize, intended: Instant, sent: Instant) {
        let now = Instant::now();
        let entries = ack.last_seq - ack.first_seq + 1;
        let latency = (intended >= self.warmup_end).then(|| now.saturating_duration_since(intended).as_micros() as u64);
        let sample = SampleRef {
            shard: ack.shard,
            seq: ack.last_seq,
            pool_index,
            sent_unix_ns: self.unix_ns_at(sent),
            acked_unix_ns: self.unix_ns_at(now),
        };
        self.recorder.borrow_mut().ack(sample, entries, latency, now.saturating_duration_since(self.start).as_nanos());
        self.shared.entries_acked.fetch_add(entries, Ordering::Relaxed);
    }

    /// Waits until `due` (if in the future); `false` once the run is over,
    /// counting the requests `index..total` as unsent when they were due.
    ///
    /// Every request due before the end is sent, even late (its latency
    /// still counts from its due time), unless its connection is still busy
    /// `--timeout` after the end: then it counts as unsent.
    async fn wait_turn(&self, due: Option<Instant>, index: u64, total: u64) -> bool {
        let cutoff = match due {
            Some(due) => {
                let now = Instant::now();
                if due > now {
                    glommio::timer::sleep(due - now).await;
                }
                self.end + self.plan.timeout
            }
            None => self.end,
        };
        if Instant::now() >= cutoff {
            if due.is_some() {
                self.recorder.borrow_mut().requests_unsent += total - index;
            }
            return false;
        }
        true
    }

    async fn pause(&self) {
        let left = self.end.saturating_duration_since(Instant::now());
        glommio::timer::sleep(RECONNECT_PAUSE.min(left)).await;
    }
}

async fn worker(
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    thread: usize,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) -> Recorder {
    let mine: Vec<u64> = (thread..plan.connections).step_by(plan.threads).map(|index| index as u64).collect();
    let mut clients = Vec::with_capacity(mine.len());
    let mut failure = None;
    for &connection in &mine {
        match Client::open(&plan).await {
            Ok(client) => clients.push((connection, client)),
            Err(error) => {
                failure = Some(error.message);
                break;
            }
        }
    }
    let _ = ready.send(failure.map_or(Ok(()), Err));
    let Some(start) = wait_for_start(&shared) else {
        shared.finished_threads.fetch_add(1, Ordering::Release);
        return Recorder::new(0);
    };
    let context = Rc::new(Context {
        schedule: plan.schedule(),
        start,
        start_unix_ns: unix_ns() + start.saturating_duration_since(Instant::now()).as_nanos() as i64,
        warmup_end: start + plan.warmup,
        end: start + plan.run_length(),
        entries_uri: plan.entries_uri(),
        recorder: RefCell::new(Recorder::new(plan.seed.wrapping_add(thread as u64))),
        plan,
        shared,
    });
    // A closed-loop run has no timeline to wait on: start together.
    glommio::timer::sleep(start.saturating_duration_since(Instant::now())).await;
    let done = Rc::new(Cell::new(false));
    let flusher = {
        let context = context.clone();
        let done = done.clone();
        glommio::spawn_local(async move {
            let hard_end = context.end + context.plan.timeout * 3 + Duration::from_secs(30);
            let mut next_flush = Instant::now() + FLUSH_INTERVAL;
            while !done.get() && Instant::now() < hard_end {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                if Instant::now() >= next_flush {
                    next_flush += FLUSH_INTERVAL;
                    flush(&context);
                }
            }
        })
    };
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(connection, client)| {
            let context = context.clone();
            glommio::spawn_local(async move {
                match context.plan.mode {
                    Mode::Follower(follower_id) => push_loop(&context, connection, client, follower_id).await,
                    _ => request_loop(&context, connection, client).await,
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    done.set(true);
    flusher.await;
    flush(&context);
    context.shared.finished_threads.fetch_add(1, Ordering::Release);
    let recorder = std::mem::replace(&mut *context.recorder.borrow_mut(), Recorder::new(0));
    recorder
}

fn flush(context: &Context) {
    let mut recorder = context.recorder.borrow_mut();
    if recorder.histogram.is_empty() {
        return;
    }
    if let Ok(mut shared) = context.shared.histogram.lock() {
        // Same bounds on both sides: adding cannot fail.
        let _ = shared.add(&recorder.histogram);
    }
    recorder.histogram.reset();
}

/// A connection of whichever protocol.
enum Client {
    Http(HttpClient),
    Grpc(Channel),
    Tcp(glommio::net::TcpStream),
}

impl Client {
    async fn open(plan: &Plan) -> Result<Client, Failure> {
        match plan.mode {
            Mode::Http | Mode::OtlpHttp | Mode::Loki | Mode::EsBulk => {
                HttpClient::connect(&plan.target, plan.connect_timeout()).await.map(Client::Http)
            }
            Mode::GrpcWrite | Mode::Follower(_) | Mode::OtlpGrpc => {
                client::grpc_connect(&plan.target, plan.connect_timeout()).await.map(Client::Grpc)
            }
            Mode::SyslogTcp => client::tcp_connect(&plan.target, plan.connect_timeout()).await.map(Client::Tcp),
        }
    }

    async fn write(&mut self, context: &Context, request: &PooledRequest) -> Result<Ack, Failure> {
        let entries = context.plan.pool.entries_per_request as u64;
        let uri = &context.entries_uri;
        let wire = request.wire.clone();
        match (self, context.plan.mode) {
            (Client::Http(http), Mode::OtlpHttp) => {
                http.ship(uri, "application/x-protobuf", wire, StatusCode::OK).await.map(|()| Ack::Entries(entries))
            }
            (Client::Http(http), Mode::Loki) => http
                .ship(uri, "application/x-protobuf", wire, StatusCode::NO_CONTENT)
                .await
                .map(|()| Ack::Entries(entries)),
            (Client::Http(http), Mode::EsBulk) => {
                http.ship(uri, "application/x-ndjson", wire, StatusCode::OK).await.map(|()| Ack::Entries(entries))
            }
            (Client::Http(http), _) => http.write(uri, wire).await.map(Ack::Sequenced),
            (Client::Grpc(channel), Mode::OtlpGrpc) => {
                client::otlp_export(channel, wire, context.plan.timeout).await.map(|()| Ack::Entries(entries))
            }
            (Client::Grpc(channel), _) => {
                client::grpc_write(channel, wire, context.plan.timeout).await.map(Ack::Sequenced)
            }
            (Client::Tcp(stream), _) => {
                use futures_lite::AsyncWriteExt;
                stream.write_all(&wire).await.map_err(|error| Failure::connection(format!("syslog write: {error}")))?;
                Ok(Ack::Entries(entries))
            }
        }
    }
}

/// One request at a time on one connection (HTTP/1.1 keep-alive, or
/// unary gRPC calls on one channel).
async fn request_loop(context: &Context, connection: u64, client: Client) {
    let mut client = Some(client);
    let total = context.requests_of(connection);
    for index in 0..total {
        let due = context.due(connection, index);
        if !context.wait_turn(due, index, total).await {
            break;
        }
        let sent = Instant::now();
        let intended = due.unwrap_or(sent);
        let pool_index = context.pool_index(connection, index);
        let mut current = match client.take() {
            Some(current) => current,
            None => match Client::open(&context.plan).await {
                Ok(fresh) => fresh,
                Err(failure) => {
                    context.fail(failure);
                    context.pause().await;
                    continue;
                }
            },
        };
        context.recorder.borrow_mut().requests_sent += 1;
        let request = &context.plan.pool.requests[pool_index];
        match until(sent + context.plan.timeout, current.write(context, request)).await {
            Some(Ok(Ack::Sequenced(ack))) => {
                context.acked(ack, pool_index, intended, sent);
                client = Some(current);
            }
            Some(Ok(Ack::Entries(entries))) => {
                context.acked_entries(entries, intended);
                client = Some(current);
            }
            Some(Err(failure)) => {
                if !failure.reconnect {
                    client = Some(current);
                }
                context.fail(failure);
            }
            None => context.fail(Failure::timeout(context.plan.timeout)),
        }
    }
}

/// A batch pushed and not yet acknowledged.
struct Pending {
    intended: Instant,
    sent: Instant,
    first_seq: u64,
    last_seq: u64,
    pool_index: usize,
}

/// Pushes as follower `follower_id`, shard `connection`, over one
/// `Replicate` stream at a time: up to [`PUSH_WINDOW`] batches in flight,
/// dense seqs from the node's watermark + 1. A failed stream is replaced by
/// a new session that resumes from the watermark.
async fn push_loop(context: &Rc<Context>, connection: u64, client: Client, follower_id: u32) {
    let shard = u32::try_from(connection).unwrap_or(u32::MAX);
    let total = context.requests_of(connection);
    let mut index = 0;
    let mut client = Some(client);
    // Each session ends on a failure or at the end; the clock bounds them.
    while index < total && Instant::now() < context.end {
        let channel = match client.take() {
            Some(Client::Grpc(channel)) => channel,
            _ => match client::grpc_connect(&context.plan.target, context.plan.connect_timeout()).await {
                Ok(channel) => channel,
                Err(failure) => {
                    context.fail(failure);
                    context.pause().await;
                    continue;
                }
            },
        };
        match push_session(context, &channel, follower_id, shard, connection, &mut index, total).await {
            Ok(()) => break,
            Err(()) => context.pause().await,
        }
    }
}

async fn push_session(
    context: &Rc<Context>,
    channel: &Channel,
    follower_id: u32,
    shard: u32,
    connection: u64,
    index: &mut u64,
    total: u64,
) -> Result<(), ()> {
    let timeout = context.plan.timeout;
    let request = WatermarkRequest { follower_id, shard };
    let watermark = match until(
        Instant::now() + timeout,
        channel.unary::<_, WatermarkResponse>(client::GET_WATERMARK, &request, Some(timeout)),
    )
    .await
    {
        Some(Ok(response)) => response.acked_seq,
        Some(Err(status)) => {
            context.fail(Failure::grpc(&status));
            return Err(());
        }
        None => {
            context.fail(Failure::timeout(timeout));
            return Err(());
        }
    };
    let call = match channel.start(client::REPLICATE, None).await {
        Ok(call) => call,
        Err(status) => {
            context.fail(Failure::grpc(&status));
            return Err(());
        }
    };
    let (mut sender, mut receiver) = call.split();
    let pending: Rc<RefCell<VecDeque<Pending>>> = Rc::new(RefCell::new(VecDeque::new()));
    let window = Rc::new(Semaphore::new(PUSH_WINDOW));
    let stream_failure: Rc<RefCell<Option<Failure>>> = Rc::new(RefCell::new(None));
    let acks = {
        let context = context.clone();
        let pending = pending.clone();
        let window = window.clone();
        let stream_failure = stream_failure.clone();
        let deadline = context.end + timeout * 2;
        async move {
            loop {
                match until(deadline, receiver.next::<PushAck>()).await {
                    Some(Ok(Some(ack))) => {
                        let mut acked = 0;
                        loop {
                            let next = pending.borrow_mut().pop_front();
                            match next {
                                Some(batch) if batch.last_seq <= ack.acked_seq => {
                                    let write =
                                        WriteAck { shard, first_seq: batch.first_seq, last_seq: batch.last_seq };
                                    context.acked(write, batch.pool_index, batch.intended, batch.sent);
                                    acked += 1;
                                }
                                Some(batch) => {
                                    pending.borrow_mut().push_front(batch);
                                    break;
                                }
                                None => break,
                            }
                        }
                        window.signal(acked);
                    }
                    Some(Ok(None)) => break,
                    Some(Err(status)) => {
                        *stream_failure.borrow_mut() = Some(Failure::grpc(&status));
                        break;
                    }
                    None => {
                        *stream_failure.borrow_mut() = Some(Failure::timeout(timeout));
                        break;
                    }
                }
            }
            // Wakes a sender waiting for room.
            window.close();
        }
    };
    let acks = glommio::spawn_local(acks);
    let mut next_seq = watermark + 1;
    let mut buffer = BytesMut::new();
    let mut sent_all = true;
    while *index < total {
        let due = context.due(connection, *index);
        if !context.wait_turn(due, *index, total).await {
            break;
        }
        let room = until(Instant::now() + timeout, window.acquire(1)).await;
        if !matches!(room, Some(Ok(()))) || stream_failure.borrow().is_some() {
            if room.is_none() {
                *stream_failure.borrow_mut() = Some(Failure::timeout(timeout));
            }
            sent_all = false;
            break;
        }
        let sent = Instant::now();
        let intended = due.unwrap_or(sent);
        let pool_index = context.pool_index(connection, *index);
        let request = &context.plan.pool.requests[pool_index];
        let timestamp_ns = context.unix_ns_at(sent);
        let last_seq = pool::encode_push(&mut buffer, follower_id, shard, next_seq, timestamp_ns, request);
        let framed: Bytes = buffer.split().freeze();
        pending.borrow_mut().push_back(Pending { intended, sent, first_seq: next_seq, last_seq, pool_index });
        context.recorder.borrow_mut().requests_sent += 1;
        *index += 1;
        next_seq = last_seq + 1;
        if let Err(status) = sender.send_framed(framed).await {
            stream_failure.borrow_mut().get_or_insert(Failure::grpc(&status));
            sent_all = false;
            break;
        }
    }
    if sent_all {
        let _ = sender.close_send().await;
    } else {
        sender.cancel();
    }
    acks.await;
    // Whatever is still unacknowledged failed with the stream.
    let failure = stream_failure.borrow_mut().take();
    let unacknowledged: Vec<Pending> = pending.borrow_mut().drain(..).collect();
    let failure = failure.unwrap_or_else(|| Failure {
        kind: "unacknowledged".into(),
        message: "the stream ended before these batches were acknowledged".into(),
        reconnect: true,
    });
    if unacknowledged.is_empty() && !sent_all {
        context.fail(failure.clone());
    }
    for _ in &unacknowledged {
        context.fail(failure.clone());
    }
    // A new session only if the stream failed while there is time left.
    if (sent_all && unacknowledged.is_empty()) || Instant::now() >= context.end {
        Ok(())
    } else {
        Err(())
    }
}
