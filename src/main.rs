//! The `wormdb` command line.
//!
//! `wormdb serve` starts one glommio executor per shard, each pinned to a
//! core and owning its shard's files. The HTTP and gRPC APIs are not built
//! yet (see the node issue); today `serve` opens and recovers every shard,
//! reports what recovery found, and closes them cleanly on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use glommio::{LocalExecutorBuilder, Placement};
use wormdb::shard::{Durability, Shard, ShardConfig};

#[derive(Parser)]
#[command(name = "wormdb", version, about = "A write-once, read-many log store: thread per core on io_uring")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open every shard and serve until SIGINT/SIGTERM.
    Serve(ServeArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// Acknowledge after fdatasync (default).
    Sync,
    /// Acknowledge after the write, without fdatasync. Unsafe: for benchmarks.
    None,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory holding one `shard-NNN` directory per shard.
    #[arg(long, default_value = "./wormdb-data")]
    data_dir: PathBuf,
    /// Number of shards (executors); default: available cores.
    #[arg(long)]
    shards: Option<usize>,
    /// This node's id, stored in every entry's global id.
    #[arg(long, default_value_t = 1)]
    node_id: u32,
    /// Segment file size in bytes.
    #[arg(long, default_value_t = wormdb::limits::SEGMENT_BYTES_DEFAULT)]
    segment_bytes: u64,
    /// When writes are acknowledged.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Sync)]
    durability: DurabilityArg,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it spawns), so
/// that only [`wait_for_signal`] receives them.
fn block_shutdown_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: sigwait reads the set we own and writes the signal number.
    unsafe { libc::sigwait(set, &mut signal) };
    signal
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map(|count| count.get()).unwrap_or(1);
    let shards = args.shards.unwrap_or(cores);
    if shards == 0 || shards > 1024 {
        return Err(format!("--shards {shards}: must be between 1 and 1024"));
    }
    wormdb::runtime::ensure_memlock(wormdb::runtime::MEMLOCK_BYTES_PER_EXECUTOR * shards as u64)?;
    let signals = block_shutdown_signals();
    let stop = Arc::new(AtomicBool::new(false));
    let mut executors = Vec::new();
    for shard_id in 0..shards {
        let config = ShardConfig {
            node_id: args.node_id,
            segment_bytes: args.segment_bytes,
            durability: match args.durability {
                DurabilityArg::Sync => Durability::Sync,
                DurabilityArg::None => Durability::None,
            },
            ..ShardConfig::new(args.data_dir.join(format!("shard-{shard_id:03}")), shard_id as u32)
        };
        let stop = stop.clone();
        let executor = LocalExecutorBuilder::new(Placement::Fixed(shard_id % cores))
            .name(&format!("shard-{shard_id:03}"))
            .spawn(move || async move {
                let shard = Shard::open(config).await.map_err(|error| format!("shard {shard_id}: {error}"))?;
                let report = shard.recovery_report();
                tracing::info!(shard = shard_id, next_seq = report.next_seq, segments = report.segments, torn_tail = ?report.torn_tail, "shard ready");
                while !stop.load(Ordering::Acquire) {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
                shard.close().await.map_err(|error| format!("shard {shard_id}: {error}"))?;
                tracing::info!(shard = shard_id, last_seq = shard.durable_seq(), "shard closed");
                Ok::<(), String>(())
            })
            .map_err(|error| format!("cannot start executor {shard_id}: {error}"))?;
        executors.push(executor);
    }
    let signal = wait_for_signal(&signals);
    tracing::info!(signal, "shutting down");
    stop.store(true, Ordering::Release);
    let mut failures = Vec::new();
    for executor in executors {
        match executor.join() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => failures.push(message),
            Err(error) => failures.push(format!("executor failed: {error}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
