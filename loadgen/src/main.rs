//! # wormdb-loadgen
//!
//! A load generator for wormdb in the manner of wrk2 and the OpenMessaging
//! Benchmark: a fixed rate on an open-loop timeline with latencies measured
//! from each request's *intended* send time (so a stalled node cannot hide
//! the requests it delayed: coordinated omission is corrected), or `--rate
//! max` for saturation. HTTP (`POST /v1/entries`, NDJSON) and gRPC
//! (`WormIngest.Write`, or follower pushes over `WormReplication.Replicate`);
//! and the shippers' protocols the node speaks, each in its real wire form
//! (`otlp-grpc`, `otlp-http`, `loki`, `es-bulk`, `syslog-tcp`), so that
//! each path can be measured like the native ones. Those answer without
//! seqs (syslog answers nothing), so their runs are verified by the node's
//! per-protocol count rather than entry by entry.
//!
//! Layout, pure core first: [`cli`] (flags), [`pool`] (pre-encoded
//! requests), [`schedule`] (the timeline), [`record`] (histograms, errors,
//! acknowledged seq ranges), [`report`] (human, JSON, hgrm); then the I/O:
//! [`client`] (HTTP/1.1 and gRPC on glommio), [`run`] (one executor per
//! thread), [`verify`] (does the node store what it acknowledged?).
//!
//! Exit codes: 0 success, 1 the run failed (nothing acknowledged, an output
//! file could not be written, or `--verify` found missing entries), 2 a bad
//! flag or an unreachable target.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cli;
mod client;
mod plot;

/// Body size of synthetic entries when `--body-bytes` is not given.
const DEFAULT_BODY_BYTES: usize = 200;
mod pool;
mod record;
mod report;
mod run;
mod schedule;
mod verify;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use cli::{Args, Protocol, Rate};
use record::Acknowledged;
use run::{Mode, Plan};

/// A bad flag or an unreachable target.
const EXIT_USAGE: u8 = 2;
/// The run or the verification failed.
const EXIT_FAILED: u8 = 1;

fn main() -> ExitCode {
    let args = Args::parse();
    match real_main(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("wormdb-loadgen: error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn real_main(args: Args) -> Result<ExitCode, String> {
    cli::validate(&args)?;
    if let Some(token) = &args.token {
        client::set_bearer(token)?;
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|cores| cores.get()).unwrap_or(1))
        .clamp(1, args.connections);
    // Each glommio executor registers its I/O buffers (one for verification).
    wormdb::runtime::ensure_memlock(wormdb::runtime::MEMLOCK_BYTES_PER_EXECUTOR * (threads as u64 + 1))?;

    if let Some(path) = &args.verify_from {
        return verify_from(&args, path);
    }

    let mode = match (args.protocol, args.follower_id) {
        (Protocol::Http, _) => Mode::Http,
        (Protocol::Grpc, None) => Mode::GrpcWrite,
        (Protocol::Grpc, Some(follower_id)) => Mode::Follower(follower_id),
        (Protocol::OtlpGrpc, _) => Mode::OtlpGrpc,
        (Protocol::OtlpHttp, _) => Mode::OtlpHttp,
        (Protocol::Loki, _) => Mode::Loki,
        (Protocol::EsBulk, _) => Mode::EsBulk,
        (Protocol::SyslogTcp, _) => Mode::SyslogTcp,
    };
    let target = cli::with_tls(cli::resolve_target(&args.target, args.protocol)?, args.protocol, &args)?;
    let mut source = match &args.payload_file {
        Some(path) => pool::BodySource::from_file(path, args.body_bytes)?,
        None => pool::BodySource::Synthetic { body_bytes: args.body_bytes.unwrap_or(DEFAULT_BODY_BYTES) },
    };
    let spec = pool::PoolSpec {
        encoding: mode.encoding(),
        batch: args.batch,
        tag_count: args.tags.count,
        tag_cardinality: args.tags.cardinality,
        requests: args.pool_requests,
        seed: args.seed,
        base_unix_ns: run::unix_ns(),
    };
    let pool = pool::build(&spec, &mut source)?;
    // A protocol without seqs is verified by the node's count of its
    // entries: read it before the run.
    let counted_before = match (args.verify, mode.sequenced()) {
        (true, false) => {
            let metrics = metrics_target(&args)?;
            Some((metrics.clone(), verify::protocol_entries(metrics, mode.name())?))
        }
        _ => None,
    };
    let plan = Arc::new(Plan {
        target: target.clone(),
        mode,
        rate: args.rate,
        warmup: args.warmup,
        duration: args.duration,
        timeout: args.timeout,
        connections: args.connections,
        threads,
        seed: args.seed,
        pool,
        tag_count: args.tags.count,
    });
    let outcome = run::run(plan.clone(), std::io::stderr().is_terminal())?;

    let follower_id = match mode {
        Mode::Follower(id) => Some(id),
        _ => None,
    };
    let acknowledged = outcome.recorder.acknowledged(
        &plan.pool,
        mode.name(),
        follower_id,
        (outcome.start_unix_ns, outcome.end_unix_ns),
    );
    let summary = report::Summary {
        target: args.target.clone(),
        mode: mode.name().to_string(),
        rate: match args.rate {
            Rate::Fixed(rate) => Some(rate),
            Rate::Max => None,
        },
        batch: args.batch,
        connections: args.connections,
        threads,
        duration_s: outcome.measured.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        body_bytes_mean: plan.pool.body_bytes_mean,
        request_bytes_mean: plan.pool.request_bytes_mean,
        requests_sent: outcome.recorder.requests_sent,
        requests_acked: outcome.recorder.requests_acked,
        entries_acked: outcome.recorder.entries_acked,
        warmup_entries_acked: outcome.recorder.warmup_entries_acked,
        requests_unsent: outcome.recorder.requests_unsent,
        errors: outcome
            .recorder
            .errors
            .iter()
            .map(|(kind, (count, message))| (kind.clone(), *count, message.clone()))
            .collect(),
        histogram: outcome.histogram,
        cpu_s: outcome.cpu_s,
        acknowledged,
        acknowledgement: mode.acknowledgement(),
    };
    print!("{}", summary.human());

    let mut failed = false;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary.json()).map_err(|error| format!("encoding JSON: {error}"))?;
        failed |= !write_file(path, "--json", text.as_bytes());
    }
    if let Some(path) = &args.hgrm {
        failed |= !write_file(path, "--hgrm", report::hgrm(&summary.histogram).as_bytes());
    }
    if let Some(path) = &args.plot {
        let rate = summary.rate.map_or("max".to_string(), |rate| format!("{rate}/s"));
        let series = [plot::Series {
            label: format!("{} {rate} batch {}", summary.mode, summary.batch),
            points: report::percentile_points(&summary.histogram),
        }];
        let title = format!("wormdb {} latency by percentile", summary.mode);
        if let Err(error) = plot::write_percentile_plot(path, &title, &series) {
            eprintln!("wormdb-loadgen: --plot {}: {error}", path.display());
            failed = true;
        }
    }
    if summary.entries_acked + summary.warmup_entries_acked == 0 {
        eprintln!("wormdb-loadgen: no request was acknowledged ({} errors)", summary.error_count());
        failed = true;
    }
    if args.verify {
        println!();
        let verdict = match counted_before {
            Some((metrics, baseline)) => {
                let expected = summary.entries_acked + summary.warmup_entries_acked;
                let wait = args.timeout.max(std::time::Duration::from_secs(10));
                verify::verify_counts(metrics, mode.name(), baseline, expected, wait)?
            }
            None => verify::verify(target, summary.acknowledged.clone())?,
        };
        print!("{}", verdict.render());
        failed |= !verdict.problems.is_empty();
    }
    Ok(if failed { ExitCode::from(EXIT_FAILED) } else { ExitCode::SUCCESS })
}

/// `--verify-from FILE`: check an earlier run's acknowledgements.
fn verify_from(args: &Args, path: &Path) -> Result<ExitCode, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("--verify-from {}: {error}", path.display()))?;
    let document: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| format!("--verify-from {}: not JSON: {error}", path.display()))?;
    let acknowledged: Acknowledged = serde_json::from_value(document["acknowledged"].clone()).map_err(|error| {
        format!("--verify-from {}: no acknowledgements of a wormdb-loadgen --json run ({error})", path.display())
    })?;
    let protocol = match acknowledged.mode.as_str() {
        "http" => Protocol::Http,
        "grpc" | "follower" => Protocol::Grpc,
        other => {
            return Err(format!(
                "--verify-from {}: a {other} run has no seqs to check again (its --verify compares the node's count)",
                path.display()
            ))
        }
    };
    let target = cli::with_tls(cli::resolve_target(&args.target, protocol)?, protocol, args)?;
    let total: u64 = acknowledged.shards.iter().map(|shard| shard.entries).sum();
    println!(
        "verify: {total} acknowledged {} entries of {} against {}",
        acknowledged.mode,
        path.display(),
        args.target
    );
    let verdict = verify::verify(target, acknowledged)?;
    print!("{}", verdict.render());
    Ok(if verdict.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILED) })
}

/// Where `--verify` reads the node's counters: `--metrics-url`, else the
/// target (an HTTP base URL for the HTTP protocols).
fn metrics_target(args: &Args) -> Result<cli::Target, String> {
    let url = args.metrics_url.as_deref().unwrap_or(&args.target);
    cli::with_tls(cli::resolve_target(url, Protocol::Http)?, Protocol::Http, args)
        .map_err(|error| format!("--metrics-url: {error}"))
}

fn write_file(path: &Path, flag: &str, bytes: &[u8]) -> bool {
    match std::fs::write(path, bytes) {
        Ok(()) => true,
        Err(error) => {
            eprintln!("wormdb-loadgen: {flag} {}: {error}", path.display());
            false
        }
    }
}
