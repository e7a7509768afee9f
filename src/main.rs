//! The `wormdb` command line: `serve` runs a node, `inspect` dumps what is
//! on disk. `serve` stops on SIGINT/SIGTERM and reloads its TLS files on
//! SIGHUP.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use wormdb::config::{parse_byte_size, parse_leader_addrs, NodeConfig, Settings};

/// mimalloc instead of glibc's malloc: commit and DMA buffers of many sizes
/// (a few KiB to a few MiB, 4 KiB aligned) freed in a different order than
/// allocated left glibc's per-thread arena holding freed memory it never
/// gave back. A follower's RSS grew from 150 to 470 MiB in two minutes of
/// ingest, and `malloc_trim` brought it back to 99 MiB. Built with
/// `no_thp`: mimalloc otherwise madvises its arenas for transparent huge
/// pages, and partly used 2 MiB pages cost a saturated node 30-40 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "wormdb", version, about = "A write-once, read-many log store: thread per core on io_uring")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How `serve --help` explains a SIZE.
const SIZES_HELP: &str = "A SIZE is a number of bytes, or a number and a unit (a space between is allowed, case is \
                          ignored): B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024); \
                          e.g. 16MiB, 256MB, 1.5GiB (a fraction must come to whole bytes). The same forms work \
                          in the --config file, where a plain integer is bytes.";

#[derive(Subcommand)]
enum Command {
    /// Run a node: one shard per core, HTTP API, until SIGINT/SIGTERM.
    #[command(after_help = SIZES_HELP)]
    Serve(Box<ServeArgs>),
    /// Print what is on disk: shards, segments, blocks, indexes, torn tails.
    /// Read-only: it never repairs anything.
    Inspect {
        /// A data directory (holding shard-NNN directories) or one shard directory.
        dir: PathBuf,
        /// List every block, not only segment summaries.
        #[arg(long)]
        blocks: bool,
    },
    /// Rebuild a follower's lost shards from the leader's archive (ReplayFrom),
    /// keeping the original ids. Run it on the follower, before `serve`.
    Restore {
        /// The leader's gRPC address, or the archive tier's: HOST:PORT,HOST:PORT,...
        /// (tried in order, following not-leader hints)
        #[arg(long)]
        from: String,
        /// The follower's node id (the `--node-id` it serves with).
        #[arg(long)]
        follower_id: u32,
        /// The follower's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Shards to restore (0 .. N-1) [default: available cores, as `serve`]
        #[arg(long)]
        shards: Option<usize>,
        /// A file holding the bearer token to present (a token with the ingest scope, listing the
        /// follower's id when it lists any)
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        tls: ClientTlsArgs,
    },
    /// Look at and run the archive tier (DESIGN.md section 9).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        #[command(flatten)]
        token: TokenFile,
    },
}

/// `--token-file` of the commands that dial a node.
#[derive(clap::Args)]
struct TokenFile {
    /// A file holding the bearer token to present (`authorization: Bearer`); `status` needs the
    /// metrics or admin scope, the others admin
    #[arg(long, value_name = "FILE", global = true)]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Members, group leaders and terms, commit and applied indexes, followers.
    Status {
        /// A tier member's gRPC address.
        #[arg(long)]
        to: String,
        /// Print the `/v1/cluster` JSON document instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tls: ClientTlsArgs,
    },
    /// Take a member out of the tier: its leaderships move to the others first, then it
    /// leaves every group and stops serving the tier.
    Remove {
        /// A tier member's gRPC address (any member).
        #[arg(long)]
        to: String,
        /// The member to remove.
        #[arg(long)]
        node_id: u32,
        #[command(flatten)]
        tls: ClientTlsArgs,
    },
    /// Hand a group's leadership to a voter.
    Transfer {
        /// A tier member's gRPC address (any member).
        #[arg(long)]
        to: String,
        /// The group (= shard index).
        #[arg(long)]
        group: u32,
        /// The voter to lead it.
        #[arg(long)]
        node_id: u32,
        #[command(flatten)]
        tls: ClientTlsArgs,
    },
    /// Unsafe recovery, when a quorum of the tier is lost for good: makes this
    /// stopped survivor the only voter of its groups and the only member, then
    /// prints what it did and what may be missing. Refuses on a running node.
    Recover {
        /// The survivor's data directory (its node must be stopped).
        #[arg(long)]
        data_dir: PathBuf,
        /// The survivor's node id [default: the one in DATA/raft/node-id]
        #[arg(long)]
        node_id: Option<u32>,
    },
}

/// TLS for a command that dials a node's gRPC port (DESIGN.md section 10).
#[derive(clap::Args)]
struct ClientTlsArgs {
    /// Dial TLS, verifying the node's certificate against this CA (PEM); the certificate must
    /// name the IP address dialled (an IP SAN)
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Present this client certificate (PEM, with --tls-key) to a node that asks for one
    /// (--tls-client-ca)
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// Makes every gRPC connection this process dials use TLS as asked.
    fn apply(&self) -> Result<(), String> {
        let Some(ca) = &self.tls_ca else { return Ok(()) };
        let pair = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        let config = wormdb::tls::tool_client_config(ca, pair, wormdb::tls::Listener::Grpc)
            .map_err(|error| error.to_string())?;
        wormdb::tls::set_client_config(Some(config));
        Ok(())
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML file with the same keys as these flags (`data-dir = "..."`); flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory holding one `shard-NNN` directory per shard [default: ./wormdb-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP API address; port 0 picks a free one [default: 127.0.0.1:8080]
    #[arg(long)]
    http_addr: Option<String>,
    /// gRPC address (ingest, query, replication); port 0 picks a free one [default: 127.0.0.1:50051]
    #[arg(long)]
    grpc_addr: Option<String>,
    /// Number of shards, one executor each [default: available cores]
    #[arg(long)]
    shards: Option<usize>,
    /// This node's id, part of every entry's global id [default: 1]
    #[arg(long)]
    node_id: Option<u32>,
    /// Make this node a follower: push every entry to the leader at this gRPC address, or at one of
    /// the archive tier's: HOST:PORT,HOST:PORT,... (tried in order, following not-leader hints)
    #[arg(long)]
    leader: Option<String>,
    /// Make this node a member of the archive tier: every member's id and gRPC address,
    /// this node's among them (1=HOST:PORT,2=HOST:PORT,3=HOST:PORT); a restarted member
    /// uses the membership it persisted
    #[arg(long)]
    peers: Option<String>,
    /// Join a running archive tier through one of its members (its gRPC HOST:PORT): this
    /// node becomes a learner of every group, then a voter once caught up; a node that has
    /// joined uses the membership it persisted
    #[arg(long, value_name = "HOST:PORT")]
    join: Option<String>,
    /// How long a follower's lease on the tier lasts without a push or a keepalive
    /// (a tier member's setting) [default: 10s]
    #[arg(long, value_name = "DURATION")]
    lease_ttl: Option<String>,
    /// Raft log entries a tier member keeps behind its applied index for lagging
    /// members; one further behind gets a snapshot [default: 4096]
    #[arg(long)]
    raft_log_entries: Option<u64>,
    /// `sync` acknowledges after fdatasync; `none` after the write only (unsafe: benchmarks) [default: sync]
    #[arg(long)]
    durability: Option<String>,
    /// Segment file size, a multiple of 4096 from 4MiB to 64GiB [default: 256MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_byte_size)]
    segment_bytes: Option<u64>,
    /// Delete the oldest segments once a shard's segment files hold more than this (e.g. 50GiB)
    #[arg(long, value_name = "SIZE", value_parser = parse_byte_size)]
    retention_bytes: Option<u64>,
    /// Delete segments whose newest entry is older than this (30s, 15m, 12h, 7d)
    #[arg(long)]
    retention_age: Option<String>,
    /// Codec of cold segments: `zstd` rewrites sealed segments with zstd once they are old
    /// (about 1.8x smaller than LZ4 on log text), `lz4` leaves them as written [default: zstd]
    #[arg(long, value_name = "CODEC")]
    cold_codec: Option<String>,
    /// Rewrite a sealed segment with --cold-codec once its newest entry is older than this
    /// (30s, 15m, 12h, 7d) [default: 1h]
    #[arg(long, value_name = "DURATION")]
    cold_after: Option<String>,
    /// `on`: the writer builds a filter of each block's body words, so `q=` reads only the blocks
    /// that may hold its words; `off`: saves the ingest CPU it costs, and `q=` scans
    /// (docs/query.md) [default: on]
    #[arg(long, value_name = "on|off")]
    word_filters: Option<String>,
    /// Largest HTTP request body [default: 16MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_byte_size)]
    max_body_bytes: Option<u64>,
    /// HTTP request body bytes one core holds at once before ingest gets 429 [default: 256MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_byte_size)]
    max_body_bytes_in_flight: Option<u64>,
    /// Requests that may wait for one group commit per shard before 429 [default: 4096]
    #[arg(long)]
    max_pending_appends: Option<usize>,
    /// Close connections that do not send a request's headers within this time [default: 10s]
    #[arg(long)]
    header_read_timeout: Option<String>,
    /// How long shutdown may take to finish requests and drain replication to the leader [default: 10s]
    #[arg(long)]
    shutdown_timeout: Option<String>,
    /// Bearer tokens (TOML, `[[token]]` tables of name, sha256, scopes): every call but /healthz
    /// then needs one. Reloaded on SIGHUP
    #[arg(long, value_name = "FILE")]
    auth_tokens: Option<PathBuf>,
    /// A file holding the secret this node presents (`authorization: Bearer`) on its own calls:
    /// pushes to its leader, Raft traffic, forwarded writes, join
    #[arg(long, value_name = "FILE")]
    peer_token_file: Option<PathBuf>,
    /// Connections each listener (HTTP, gRPC) serves at once; more are closed at accept [default: 10000]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Serve on a non-loopback address with neither --auth-tokens nor --tls-client-ca (anyone who
    /// reaches the port may write and read everything)
    #[arg(long)]
    insecure: bool,
    /// Serve TLS (1.2 and 1.3) on both listeners with this certificate chain (PEM, leaf first);
    /// outgoing gRPC connections present it as their client certificate. Reloaded on SIGHUP
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1). Reloaded on SIGHUP
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: gRPC clients must present a certificate from this CA (PEM); HTTP clients may
    /// (verified when presented). Reloaded on SIGHUP
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Dial every outgoing gRPC connection (follower pusher, tier peers, --join) with TLS,
    /// verifying servers against this CA (PEM); their certificates must name the IP dialled.
    /// Reloaded on SIGHUP
    #[arg(long, value_name = "FILE")]
    peer_ca: Option<PathBuf>,
    /// OTLP resource attributes that become tags, comma-separated, keys as written; every other
    /// attribute becomes a field ("" for none) [default: service.name,service.namespace,
    /// service.instance.id,deployment.environment,host.name,k8s.namespace.name,k8s.pod.name,
    /// k8s.container.name,container.name,cloud.region]
    #[arg(long, value_name = "KEYS")]
    otlp_tag_attributes: Option<String>,
    /// Receive syslog over TCP on this address (RFC 5424 and RFC 3164, octet-counted or
    /// newline-framed, detected per message); port 0 picks a free one [default: off]
    #[arg(long, value_name = "ADDR")]
    syslog_tcp_addr: Option<String>,
    /// Receive syslog over UDP on this address, one message a datagram [default: off]
    #[arg(long, value_name = "ADDR")]
    syslog_udp_addr: Option<String>,
    /// The zone of RFC 3164 timestamps, which carry none: UTC or a fixed offset such as
    /// +02:00 [default: UTC]
    #[arg(long, value_name = "ZONE")]
    syslog_timezone: Option<String>,
}

impl ServeArgs {
    fn settings(self) -> Result<Settings, String> {
        let flags = Settings {
            data_dir: self.data_dir,
            http_addr: self.http_addr,
            grpc_addr: self.grpc_addr,
            shards: self.shards,
            node_id: self.node_id,
            leader: self.leader,
            peers: self.peers,
            join: self.join,
            lease_ttl: self.lease_ttl,
            raft_log_entries: self.raft_log_entries,
            durability: self.durability,
            segment_bytes: self.segment_bytes,
            retention_bytes: self.retention_bytes,
            retention_age: self.retention_age,
            cold_codec: self.cold_codec,
            cold_after: self.cold_after,
            word_filters: self.word_filters,
            max_body_bytes: self.max_body_bytes,
            max_body_bytes_in_flight: self.max_body_bytes_in_flight,
            max_pending_appends: self.max_pending_appends,
            header_read_timeout: self.header_read_timeout,
            shutdown_timeout: self.shutdown_timeout,
            auth_tokens: self.auth_tokens,
            peer_token_file: self.peer_token_file,
            max_connections: self.max_connections,
            insecure: self.insecure.then_some(true),
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_client_ca: self.tls_client_ca,
            peer_ca: self.peer_ca,
            otlp_tag_attributes: self.otlp_tag_attributes,
            syslog_tcp_addr: self.syslog_tcp_addr,
            syslog_udp_addr: self.syslog_udp_addr,
            syslog_timezone: self.syslog_timezone,
        };
        let file = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        Ok(flags.over(file))
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Inspect { dir, blocks } => wormdb::inspect::inspect(&dir, &mut std::io::stdout().lock(), blocks),
        Command::Restore { from, follower_id, data_dir, shards, token_file, tls } => {
            use_token_file(token_file.as_deref())
                .and_then(|()| tls.apply())
                .and_then(|()| restore(&from, follower_id, data_dir, shards))
        }
        Command::Cluster { command, token } => {
            use_token_file(token.token_file.as_deref()).and_then(|()| match command {
                ClusterCommand::Status { to, json, tls } => tls.apply().and_then(|()| cluster_status(&to, json)),
                ClusterCommand::Remove { to, node_id, tls } => tls.apply().and_then(|()| cluster_remove(&to, node_id)),
                ClusterCommand::Transfer { to, group, node_id, tls } => {
                    tls.apply().and_then(|()| cluster_transfer(&to, group, node_id))
                }
                ClusterCommand::Recover { data_dir, node_id } => cluster_recover(&data_dir, node_id),
            })
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("wormdb: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Makes every call this process dials present the secret in `path`
/// (`--token-file`).
fn use_token_file(path: Option<&std::path::Path>) -> Result<(), String> {
    let Some(path) = path else { return Ok(()) };
    let secret = wormdb::auth::read_secret_file("--token-file", path)?;
    wormdb::grpc::transport::set_default_bearer(&secret).map_err(|error| format!("--token-file: {error}"))
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and the threads it
/// spawns, so that only the signal thread receives them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map(|count| count.get()).unwrap_or(1);
    let config = NodeConfig::from_settings(args.settings()?, cores)?;
    let signals = block_signals();
    let stop = Arc::new(AtomicBool::new(false));
    let reload = wormdb::server::ReloadHooks::default();
    {
        let (stop, reload) = (stop.clone(), reload.clone());
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let mut signal = 0;
                // SAFETY: sigwait reads the set we own and writes the number.
                unsafe { libc::sigwait(&signals, &mut signal) };
                if signal == libc::SIGHUP {
                    tracing::info!("SIGHUP: reloading the TLS files and the token file");
                    reload.run();
                    wormdb::server::request_reload();
                    continue;
                }
                tracing::info!(signal, "shutting down");
                stop.store(true, Ordering::Release);
                break;
            })
            .map_err(|error| format!("cannot start the signal thread: {error}"))?;
    }
    tracing::info!(
        data_dir = %config.data_dir.display(),
        shards = config.shards,
        durability = ?config.durability,
        "starting wormdb node {}", config.node_id
    );
    wormdb::server::run(config, stop, reload)
}

fn restore(from: &str, follower_id: u32, data_dir: PathBuf, shards: Option<usize>) -> Result<(), String> {
    let leaders = parse_leader_addrs("--from", from)?;
    let shards = shards.unwrap_or_else(|| std::thread::available_parallelism().map(|count| count.get()).unwrap_or(1));
    let data_dir = std::path::absolute(&data_dir).map_err(|error| format!("--data-dir: {error}"))?;
    std::fs::create_dir_all(&data_dir).map_err(|error| format!("--data-dir {}: {error}", data_dir.display()))?;
    wormdb::runtime::ensure_memlock(wormdb::runtime::MEMLOCK_BYTES_PER_EXECUTOR)?;
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            for shard in 0..shards as u32 {
                let restored =
                    wormdb::replication::restore::restore_shard(&leaders, follower_id, shard, &data_dir).await?;
                println!("shard {shard}: restored {} entries, last seq {}", restored.entries, restored.last_seq);
            }
            Ok(())
        })
        .map_err(|error| format!("cannot start the executor: {error}"))?
        .join()
        .map_err(|error| format!("restore failed: {error}"))?
}

/// `wormdb cluster status`: asks a member for its `/v1/cluster` document
/// over gRPC (`WormCluster.Status`) and prints it.
/// One `WormCluster` call to the member at `to`, for the CLI.
fn cluster_call<Request, Response>(to: &str, path: &'static str, request: Request) -> Result<Response, String>
where
    Request: prost::Message + Send + 'static,
    Response: prost::Message + Default + Send + 'static,
{
    use std::net::ToSocketAddrs;
    let addr = to
        .to_socket_addrs()
        .map_err(|error| format!("--to {to}: {error}"))?
        .next()
        .ok_or_else(|| format!("--to {to}: no address"))?;
    // Membership changes wait for every group's quorum (and for leaders to
    // hand over): generous.
    let timeout = std::time::Duration::from_secs(60);
    wormdb::tier::client::call(addr, path, request, timeout).map_err(|status| format!("{addr}: {}", status.message))
}

fn cluster_remove(to: &str, node_id: u32) -> Result<(), String> {
    let request = wormdb::proto::RemoveRequest { node_id };
    let _: wormdb::proto::RemoveResponse = cluster_call(to, wormdb::tier::client::REMOVE_PATH, request)?;
    println!("node {node_id} removed from every group: it no longer serves the tier");
    Ok(())
}

fn cluster_transfer(to: &str, group: u32, node_id: u32) -> Result<(), String> {
    let request = wormdb::proto::TransferLeaderRequest { group, node_id };
    let _: wormdb::proto::TransferLeaderResponse = cluster_call(to, wormdb::tier::client::TRANSFER_PATH, request)?;
    println!("node {node_id} leads group {group}");
    Ok(())
}

fn cluster_status(to: &str, json: bool) -> Result<(), String> {
    let response: wormdb::proto::ClusterStatusResponse =
        cluster_call(to, wormdb::tier::client::STATUS_PATH, wormdb::proto::ClusterStatusRequest {})?;
    let document = response.json;
    if json {
        println!("{document}");
        return Ok(());
    }
    let document: serde_json::Value =
        serde_json::from_str(&document).map_err(|error| format!("{to} answered a bad document: {error}"))?;
    print!("{}", wormdb::node::cluster::render(&document));
    Ok(())
}

/// `wormdb cluster recover`: unsafe recovery of a stopped survivor
/// (`wormdb::tier::recover`).
fn cluster_recover(data_dir: &std::path::Path, node_id: Option<u32>) -> Result<(), String> {
    match wormdb::tier::recover::recover(data_dir, node_id) {
        Ok(report) => {
            print!("{report}");
            Ok(())
        }
        Err(error) if error.is_refusal() => Err(format!("cluster recover refused: {error}; nothing was changed")),
        Err(error) => Err(format!(
            "cluster recover failed: {error}; run it again once the cause is fixed (a group already recovered is \
             left as it is)"
        )),
    }
}
