//! Server wiring: binds every listener, starts one glommio executor per
//! shard (each pinned to a core), and on each builds the core's state
//! ([`Core`]) and starts its front doors (HTTP, gRPC), its inbox from the
//! other cores and its follower pusher; then runs housekeeping until stop.
//!
//! Reload (SIGHUP → [`ReloadHooks`]): each hook reads its files again (the
//! TLS certificate, key and CAs) and swaps what new connections use;
//! established connections keep what they started with.
//!
//! Shutdown (SIGINT/SIGTERM → [`StopFlag`]): each core stops accepting
//! connections, answers new ingest with 503, waits (bounded) for in-flight
//! requests, drains its pusher, closes its shard (which makes everything
//! accepted durable and acknowledged), and exits.
//!
//! SIGHUP ([`request_reload`]): the first core's housekeeping reads the
//! token file again (`auth::Guard::reload_tokens`); new calls on every
//! core see the new tokens.
//!
//! This is the top of the tree: it may import every layer, and none
//! imports it.

use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_channel::mpsc;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::NodeConfig;
use crate::limits::{LISTEN_BACKLOG, PEER_QUEUE_MAX};
use crate::node::peers::{self, Request};
use crate::node::Core;
use crate::replication::follower::FollowerState;
use crate::shard::{Shard, ShardConfig};
use crate::tier::replica::Replica;
use crate::tls::NodeTls;

/// How often a core checks the stop flag.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(50);
/// How often a core runs retention by age and bytes.
const RETENTION_INTERVAL: Duration = Duration::from_secs(10);
/// How often shutdown looks at the requests still in flight.
const DRAIN_CHECK_INTERVAL: Duration = Duration::from_millis(5);
/// How long a leader waits at shutdown for the voter it hands its group to
/// (one election timeout: after that, an election would have been as fast).
const HAND_OVER_TIMEOUT: Duration = Duration::from_millis(1500);
/// The least a tier task is given to finish its current step at shutdown
/// (a Raft log round: one write and one fdatasync).
const TIER_STOP_WAIT: Duration = Duration::from_secs(2);

/// Set once to stop the node.
pub type StopFlag = Arc<AtomicBool>;

/// Reloads asked for (SIGHUP) since the process started.
static RELOAD_REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Asks the running node to reload what it can without a restart (its
/// token file); safe to call from a signal-handling thread. Done within a
/// housekeeping interval.
pub fn request_reload() {
    RELOAD_REQUESTS.fetch_add(1, Ordering::AcqRel);
}

/// What SIGHUP runs: hooks that each read their files again and swap what
/// new connections use; a hook that fails logs its error and keeps the old
/// material. Run by the signal thread, never on a core (reading files and
/// parsing keys would stall its connections).
#[derive(Clone, Default)]
pub struct ReloadHooks(Arc<Mutex<Vec<ReloadHook>>>);

/// One thing SIGHUP reloads.
type ReloadHook = Box<dyn Fn() + Send>;

impl ReloadHooks {
    /// Adds `hook` to what a reload runs.
    pub fn add(&self, hook: impl Fn() + Send + 'static) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(Box::new(hook));
    }

    /// Runs every hook, in the order they were added.
    pub fn run(&self) {
        for hook in self.0.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            hook();
        }
    }
}

/// Reads the TLS files (`--tls-*`, `--peer-ca`) and adds their reload to
/// `reload`; `None` when no TLS flag is given.
fn load_tls(config: &NodeConfig, reload: &ReloadHooks) -> Result<Option<Arc<NodeTls>>, String> {
    if !config.tls.any() {
        return Ok(None);
    }
    let tls = Arc::new(NodeTls::load(config.tls.clone()).map_err(|error| error.to_string())?);
    tracing::info!(
        listeners = tls.enabled(),
        client_certificates = config.tls.client_ca.is_some(),
        outgoing = config.tls.peer_ca.is_some(),
        "tls: certificate and CAs loaded"
    );
    let reloaded = tls.clone();
    reload.add(move || match reloaded.reload() {
        Ok(()) => tracing::info!("tls: certificate, key and CAs reloaded; new connections use them"),
        Err(error) => tracing::error!(%error, "tls: reload failed; the certificate and key in use stay"),
    });
    Ok(Some(tls))
}

/// Builds one shard's listening socket: `SO_REUSEPORT` so that every shard
/// binds the same address and the kernel spreads connections among them.
fn reuseport_listener(addr: std::net::SocketAddr) -> std::io::Result<socket2::Socket> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket)
}

/// Builds one shard's syslog UDP socket, `SO_REUSEPORT` like the others:
/// the kernel spreads datagrams among the shards by their source.
fn reuseport_udp(addr: std::net::SocketAddr) -> std::io::Result<socket2::Socket> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Room for bursts while the core is busy: what overflows is dropped by
    // the kernel, uncounted (the default is about 200 KiB).
    let _ = socket.set_recv_buffer_size(crate::limits::SYSLOG_UDP_SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Binds `count` `SO_REUSEPORT` UDP sockets on one address; returns the
/// address bound (port 0 resolved) and the sockets.
fn bind_all_udp(
    addr: std::net::SocketAddr,
    count: usize,
    flag: &str,
) -> Result<(std::net::SocketAddr, Vec<socket2::Socket>), String> {
    let first = reuseport_udp(addr).map_err(|error| format!("{flag} {addr}: {error}"))?;
    let bound = first
        .local_addr()
        .ok()
        .and_then(|addr| addr.as_socket())
        .ok_or_else(|| format!("cannot read the address bound for {flag}"))?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(reuseport_udp(bound).map_err(|error| format!("{flag} {bound}: {error}"))?);
    }
    Ok((bound, sockets))
}

/// The listening sockets handed to one core, the TLS they speak, and the
/// node's guard of who may call through them.
struct Listeners {
    http: i32,
    grpc: i32,
    /// The syslog TCP and UDP sockets, when asked for, and the node-wide
    /// limit of syslog TCP connections.
    syslog_tcp: Option<(i32, Arc<crate::auth::connections::ConnectionLimit>)>,
    syslog_udp: Option<i32>,
    tls: Option<Arc<NodeTls>>,
    guard: Arc<crate::auth::Guard>,
}

/// Binds `count` `SO_REUSEPORT` sockets on one address; returns the
/// address bound (port 0 resolved) and the sockets.
fn bind_all(
    addr: std::net::SocketAddr,
    count: usize,
    flag: &str,
) -> Result<(std::net::SocketAddr, Vec<socket2::Socket>), String> {
    let first = reuseport_listener(addr).map_err(|error| format!("{flag} {addr}: {error}"))?;
    let bound = first
        .local_addr()
        .ok()
        .and_then(|addr| addr.as_socket())
        .ok_or_else(|| format!("cannot read the address bound for {flag}"))?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(reuseport_listener(bound).map_err(|error| format!("{flag} {bound}: {error}"))?);
    }
    Ok((bound, sockets))
}

/// Runs a node until `stop` is set and every core has shut down; what it
/// can reload, it adds to `reload`.
pub fn run(config: NodeConfig, stop: StopFlag, reload: ReloadHooks) -> Result<(), String> {
    // Before anything is created or bound: a refused start leaves no trace.
    let listeners = [("--http-addr", config.http_addr), ("--grpc-addr", config.grpc_addr)];
    let (tokens, mtls) = (config.auth_tokens.is_some(), config.tls.client_ca.is_some());
    crate::auth::refuse_unsafe_default(&listeners, tokens, mtls, config.insecure)?;
    // Syslog has no credentials to check (as with every syslog server), so
    // it is not refused, but an exposed listener is said out loud.
    let syslog = [("--syslog-tcp-addr", config.syslog_tcp_addr), ("--syslog-udp-addr", config.syslog_udp_addr)];
    for (flag, addr) in syslog.iter().filter_map(|(flag, addr)| Some((flag, (*addr)?))) {
        if !addr.ip().is_loopback() {
            tracing::warn!(
                "{flag} {addr}: syslog has no authentication; anyone who reaches this address can write entries \
                 (firewall it to the senders, or relay through a local rsyslog)"
            );
        }
    }
    // A bad certificate is refused before anything is opened too.
    let tls = load_tls(&config, &reload)?;
    let guard = Arc::new(crate::auth::Guard::new(&crate::auth::Settings {
        auth_tokens: config.auth_tokens.clone(),
        mtls,
        max_connections: config.max_connections,
    })?);
    // Before the first call out (a join): every call this node makes
    // presents its peer token.
    if let Some(path) = &config.peer_token_file {
        let secret = crate::auth::read_secret_file("--peer-token-file", path)?;
        crate::grpc::transport::set_default_bearer(&secret).map_err(|error| format!("--peer-token-file: {error}"))?;
    }

    let cpus = crate::runtime::allowed_cpus();
    crate::runtime::ensure_memlock(crate::runtime::MEMLOCK_BYTES_PER_EXECUTOR * config.shards as u64)?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|error| format!("--data-dir {}: {error}", config.data_dir.display()))?;
    // Before anything in the directory is opened, and held until every
    // core has shut down: a second node (or `cluster recover`) on the same
    // directory is refused.
    let _lock = crate::runtime::lock::DataDirLock::acquire(&config.data_dir).map_err(|error| error.to_string())?;

    // Bind every shard's sockets up front: the first one resolves port 0,
    // the others reuse the port it got.
    let (http_addr, http_sockets) = bind_all(config.http_addr, config.shards, "--http-addr")?;
    let (grpc_addr, grpc_sockets) = bind_all(config.grpc_addr, config.shards, "--grpc-addr")?;
    let syslog_tcp = match config.syslog_tcp_addr {
        Some(addr) => Some(bind_all(addr, config.shards, "--syslog-tcp-addr")?),
        None => None,
    };
    let syslog_udp = match config.syslog_udp_addr {
        Some(addr) => Some(bind_all_udp(addr, config.shards, "--syslog-udp-addr")?),
        None => None,
    };
    let syslog_tcp_addr = syslog_tcp.as_ref().map(|(addr, _)| *addr);
    let syslog_udp_addr = syslog_udp.as_ref().map(|(addr, _)| *addr);
    let mut syslog_tcp_sockets = syslog_tcp.map(|(_, sockets)| sockets).unwrap_or_default().into_iter();
    let mut syslog_udp_sockets = syslog_udp.map(|(_, sockets)| sockets).unwrap_or_default().into_iter();
    let syslog_connections = crate::auth::connections::ConnectionLimit::new(
        config.max_connections.min(crate::limits::SYSLOG_CONNECTIONS_MAX),
    );

    let mut members = crate::tier::Members::load_or_bootstrap(&config.data_dir, &config.peers, config.node_id)?;
    if members.is_none() {
        if let Some(seed) = config.join {
            members = Some(crate::tier::client::join(seed, config.node_id, grpc_addr, &config.data_dir)?);
        }
    }
    // The voters a new group starts with: the bootstrap list; none on a
    // node that joined (it learns its groups from their leaders).
    let voters = match &members {
        Some(members) if !crate::tier::joined(&config.data_dir) => members.voters(),
        _ => Vec::new(),
    };
    if members.is_some() && !config.leaders.is_empty() {
        return Err("a tier member (--peers) archives; it cannot also follow a --leader".into());
    }
    if let Some(members) = &members {
        tracing::info!(node = config.node_id, members = ?members.addrs, "archive tier member: one raft group per shard");
    }
    let config = Arc::new(NodeConfig { http_addr, grpc_addr, syslog_tcp_addr, syslog_udp_addr, ..config });
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..config.shards {
        let (sender, receiver) = mpsc::channel(PEER_QUEUE_MAX);
        senders.push(sender);
        receivers.push(receiver);
    }

    // Cores that are done handing their groups over at shutdown: no core
    // closes (and stops taking Raft messages for the others) before all are.
    let handed_over = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut executors = Vec::new();
    for (shard_id, ((http_socket, grpc_socket), inbox)) in
        http_sockets.into_iter().zip(grpc_sockets).zip(receivers).enumerate()
    {
        let config = config.clone();
        let peers = senders.clone();
        let stop = stop.clone();
        let handed_over = handed_over.clone();
        let guard = guard.clone();
        let members = members.clone().map(|members| (members, voters.clone()));
        let fd = Listeners {
            http: http_socket.into_raw_fd(),
            grpc: grpc_socket.into_raw_fd(),
            syslog_tcp: syslog_tcp_sockets.next().map(|socket| (socket.into_raw_fd(), syslog_connections.clone())),
            syslog_udp: syslog_udp_sockets.next().map(IntoRawFd::into_raw_fd),
            tls: tls.clone(),
            guard,
        };
        let executor = LocalExecutorBuilder::new(Placement::Fixed(cpus[shard_id % cpus.len()]))
            .name(&format!("shard-{shard_id:03}"))
            .spawn(move || async move {
                run_core(shard_id as u32, config, members, peers, inbox, fd, (stop, handed_over)).await
            })
            .map_err(|error| format!("cannot start the executor of shard {shard_id}: {error}"))?;
        executors.push(executor);
    }
    drop(senders);
    let mut failures = Vec::new();
    for executor in executors {
        match executor.join() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => failures.push(message),
            Err(error) => failures.push(format!("executor failed: {error}")),
        }
    }
    // A core that fails to open its shard sets `stop` itself, so the others
    // have already shut down by the time every join returned.
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

async fn run_core(
    shard_id: u32,
    config: Arc<NodeConfig>,
    members: Option<(crate::tier::Members, Vec<u64>)>,
    peers: Vec<mpsc::Sender<Request>>,
    inbox: mpsc::Receiver<Request>,
    listeners: Listeners,
    (stop, handed_over): (StopFlag, Arc<std::sync::atomic::AtomicUsize>),
) -> Result<(), String> {
    // SAFETY: the fds are listening TCP sockets that this core now owns.
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(listeners.http) };
    let grpc_listener = unsafe { glommio::net::TcpListener::from_raw_fd(listeners.grpc) };
    let guard = listeners.guard;
    let follower = FollowerState::new(config.leaders.clone());
    let shard_config = ShardConfig {
        node_id: config.node_id,
        retention: config.retention,
        retention_deletable_through: follower.retention_deletable_through(),
        cold: config.cold,
        word_filters: config.word_filters,
        segment_bytes: config.segment_bytes,
        durability: config.durability,
        pending_appends_max: config.max_pending_appends,
        // A follower's pusher reads right behind the writer.
        recent_writes_bytes: if follower.is_follower() { crate::limits::RECENT_WRITES_BYTES_MAX } else { 0 },
        ..ShardConfig::new(config.data_dir.join(format!("shard-{shard_id:03}")), shard_id)
    };
    let shard = match Shard::open(shard_config).await {
        Ok(shard) => shard,
        Err(error) => {
            stop.store(true, Ordering::Release);
            return Err(format!("shard {shard_id}: {error}"));
        }
    };
    let report = shard.recovery_report();
    tracing::info!(
        shard = shard_id,
        next_seq = report.next_seq,
        segments = report.segments,
        torn_tail = ?report.torn_tail,
        "shard opened"
    );
    let tier = match members {
        None => None,
        Some((members, voters)) => {
            let dir = crate::tier::group_dir(&config.data_dir, shard_id);
            let (id, entries) = (config.node_id, config.raft_log_entries);
            match Replica::open(id, shard_id, members, &voters, &dir, shard.clone(), entries).await {
                Ok(replica) => {
                    replica.set_lease_ttl(config.lease_ttl);
                    Some(replica)
                }
                Err(error) => {
                    stop.store(true, Ordering::Release);
                    let _ = shard.close().await;
                    return Err(format!("raft group {shard_id}: {error}"));
                }
            }
        }
    };
    let tier_tasks = tier.as_ref().map(|replica| replica.start()).unwrap_or_default();
    let core = Rc::new(Core::new(shard, config.clone(), peers, follower, tier));
    let inbox_task = glommio::spawn_local(peers::serve_inbox(core.clone(), inbox)).detach();
    // The syslog listeners first: once the HTTP line is logged, a client
    // can rely on them too.
    let mut syslog_tasks = Vec::new();
    if let (Some((fd, connections)), Some(addr)) = (listeners.syslog_tcp, config.syslog_tcp_addr) {
        // SAFETY: a listening TCP socket that this core now owns.
        let listener = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
        syslog_tasks
            .push(glommio::spawn_local(crate::syslog::tcp_accept_loop(core.clone(), listener, connections)).detach());
        tracing::info!(shard = shard_id, addr = %addr, "syslog tcp listening on {addr}");
    }
    if let (Some(fd), Some(addr)) = (listeners.syslog_udp, config.syslog_udp_addr) {
        // SAFETY: a bound UDP socket that this core now owns.
        let socket = unsafe { glommio::net::UdpSocket::from_raw_fd(fd) };
        syslog_tasks.push(glommio::spawn_local(crate::syslog::udp_loop(core.clone(), socket)).detach());
        tracing::info!(shard = shard_id, addr = %addr, "syslog udp listening on {addr}");
    }
    let auth = Rc::new(crate::auth::Local::new(guard.clone()));
    let http_accept = crate::http::server::accept_loop(core.clone(), listener, listeners.tls.clone(), auth.clone());
    let accept_task = glommio::spawn_local(http_accept).detach();
    tracing::info!(shard = shard_id, addr = %config.http_addr, "http listening on {}", config.http_addr);
    let grpc_accept = crate::services::accept_loop(core.clone(), grpc_listener, listeners.tls.clone(), auth);
    let grpc_task = glommio::spawn_local(grpc_accept).detach();
    tracing::info!(shard = shard_id, addr = %config.grpc_addr, "grpc listening on {}", config.grpc_addr);
    let pusher = glommio::spawn_local(crate::replication::follower::run_pusher(core.clone())).detach();
    // One member-wide look at the leadership balance, from the first core.
    let balancer = (shard_id == 0 && core.tier.is_some())
        .then(|| glommio::spawn_local(crate::node::balance::run(core.clone())).detach());

    // The shard applies retention at every segment roll itself; this
    // catches segments that age out, and acks that arrive, between rolls.
    let mut since_retention = Duration::ZERO;
    let mut reloads_seen = RELOAD_REQUESTS.load(Ordering::Acquire);
    while !stop.load(Ordering::Acquire) {
        glommio::timer::sleep(HOUSEKEEPING_INTERVAL).await;
        let reloads = RELOAD_REQUESTS.load(Ordering::Acquire);
        if shard_id == 0 && reloads != reloads_seen {
            reloads_seen = reloads;
            // A small file read on this core (at most
            // AUTH_TOKEN_FILE_BYTES_MAX); errors are logged, and the
            // tokens in force stay.
            let _ = guard.reload_tokens();
        }
        since_retention += HOUSEKEEPING_INTERVAL;
        if since_retention >= RETENTION_INTERVAL {
            since_retention = Duration::ZERO;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos() as i64)
                .unwrap_or(0);
            if let Err(error) = core.shard.apply_retention(now).await {
                tracing::error!(shard = shard_id, %error, "retention failed");
            }
        }
    }

    // A leader hands its group to a caught-up voter first: the tier goes on
    // without waiting an election timeout for this node to be missed.
    if let Some(balancer) = balancer {
        balancer.cancel();
    }
    if let Some(replica) = &core.tier {
        replica.hand_over(HAND_OVER_TIMEOUT).await;
        handed_over.fetch_add(1, Ordering::AcqRel);
        let deadline = std::time::Instant::now() + HAND_OVER_TIMEOUT;
        while handed_over.load(Ordering::Acquire) < config.shards && std::time::Instant::now() < deadline {
            glommio::timer::sleep(DRAIN_CHECK_INTERVAL).await;
        }
    }
    tracing::info!(shard = shard_id, "shutting down: draining in-flight requests");
    let deadline = std::time::Instant::now() + config.shutdown_timeout;
    accept_task.cancel();
    for task in &syslog_tasks {
        task.cancel();
    }
    core.closing.set(true);
    while core.in_flight.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(DRAIN_CHECK_INTERVAL).await;
    }
    // Push what is durable to the leader, then close the stream cleanly.
    core.follower.stopping.set(true);
    if core.follower.is_follower() {
        let drained = futures_lite::future::or(async { pusher.await.is_some() }, async {
            glommio::timer::sleep(deadline.saturating_duration_since(std::time::Instant::now())).await;
            false
        })
        .await;
        let (acked, durable) = (core.follower.acked.get(), core.shard.durable_seq());
        if !drained || acked < Some(durable) {
            tracing::warn!(shard = shard_id, ?acked, durable, "shutdown: the leader has not acknowledged everything");
        }
    }
    if let Some(replica) = &core.tier {
        replica.close();
    }
    // The raft loop and the applier stop on their own between two steps
    // (a Raft log write is never cut short); whatever is still waiting
    // after the deadline is cancelled.
    for mut task in tier_tasks {
        let left = deadline.saturating_duration_since(std::time::Instant::now()).max(TIER_STOP_WAIT);
        let stopped = futures_lite::future::or(
            async {
                (&mut task).await;
                true
            },
            async {
                glommio::timer::sleep(left).await;
                false
            },
        )
        .await;
        if !stopped {
            tracing::warn!(shard = shard_id, "shutdown: a tier task did not stop in time: cancelled");
            task.cancel();
        }
    }
    let closed = core.shard.close().await;
    // Let the handlers whose appends the close just made durable write
    // their responses.
    while core.in_flight.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(DRAIN_CHECK_INTERVAL).await;
    }
    grpc_task.cancel();
    inbox_task.cancel();
    tracing::info!(shard = shard_id, last_seq = core.shard.durable_seq(), "shard closed");
    closed.map_err(|error| format!("shard {shard_id}: {error}"))
}
