//! `wormdb restore`: rebuilds a follower's lost shards from the leader's
//! archive with `ReplayFrom`, keeping the original ids.
//!
//! A shard's seqs are dense from 1 and assigned by the shard itself, so an
//! entry keeps its original seq exactly when the restored shard receives
//! the archive in order with no hole: restore checks every seq and stops
//! with an error at the first one that would change. A shard that already
//! holds entries is continued from its last seq (a restore can be resumed
//! after an interruption).
//!
//! Each attempt asks the archive's watermark of the shard (`GetWatermark`,
//! which only the leader answers on an archive tier) and replays from the
//! same node up to it, so a replica that lags cannot restore less than was
//! archived. The addresses are tried as the pusher tries them
//! ([`super::discovery`]): a not-leader refusal with a hint goes to the
//! hinted leader at once; any other `UNAVAILABLE` (a failed connect, a
//! broken stream, a refusal with no hint) to the next address after a
//! backoff; after [`RESTORE_ATTEMPTS_MAX`] attempts in a row that received
//! nothing, restore gives up with the last error. Other errors (a hole in
//! the archive, a local write that fails) end it at once: retrying cannot
//! help.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::discovery::{Cause, Hint, Leaders};
use super::session::Backoff;
use super::shard_status;
use crate::grpc::status::{Code, Status};
use crate::grpc::transport::Channel;
use crate::limits::{RESTORE_ATTEMPTS_MAX, RESTORE_BATCH_ENTRIES};
use crate::proto::{LogEntry, ReplayRequest, WatermarkRequest, WatermarkResponse};
use crate::shard::{Shard, ShardConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `GetWatermark` may take (a tier's leader answers after a
/// ReadIndex round).
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);
const REPLAY_FROM: &str = "/wormdb.v1.WormReplication/ReplayFrom";
const GET_WATERMARK: &str = "/wormdb.v1.WormReplication/GetWatermark";

/// What one shard's restore did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    /// Entries fetched and stored.
    pub entries: u64,
    /// The shard's last seq afterwards.
    pub last_seq: u64,
}

/// Restores shard `shard_id` of follower `follower_id` into
/// `data_dir/shard-NNN` from the leader at one of `leaders` (not empty;
/// tried in order, following leader hints).
pub async fn restore_shard(
    leaders: &[SocketAddr],
    follower_id: u32,
    shard_id: u32,
    data_dir: &Path,
) -> Result<Restored, String> {
    if leaders.is_empty() {
        return Err("no leader address to restore from".into());
    }
    let config = ShardConfig {
        node_id: follower_id,
        ..ShardConfig::new(data_dir.join(format!("shard-{shard_id:03}")), shard_id)
    };
    let shard = Shard::open(config).await.map_err(|error| format!("shard {shard_id}: {error}"))?;
    let result = restore_with_retries(&shard, leaders, follower_id, shard_id).await;
    let closed = shard.close().await.map_err(|error| format!("shard {shard_id}: {error}"));
    let restored = result.map_err(|error| format!("shard {shard_id}: {error}"))?;
    closed?;
    Ok(restored)
}

/// How an attempt failed.
#[derive(Debug)]
enum Failure {
    /// The archive node's answer (or the lack of one).
    Remote(Status),
    /// The local shard refused or failed a write: never retried.
    Local(Status),
}

impl From<Status> for Failure {
    fn from(status: Status) -> Failure {
        Failure::Remote(status)
    }
}

/// Whether an attempt the archive node ended with `status` may be retried:
/// the node is unreachable, not the leader, or too slow; never a refusal
/// that another attempt would meet again.
fn retryable(status: &Status) -> bool {
    matches!(status.code, Code::Unavailable | Code::DeadlineExceeded)
}

async fn restore_with_retries(
    shard: &Shard,
    addrs: &[SocketAddr],
    follower_id: u32,
    shard_id: u32,
) -> Result<Restored, String> {
    let mut leaders = Leaders::new(addrs);
    let mut backoff = Backoff::new(u64::from(follower_id) << 32 | u64::from(shard_id));
    let mut entries = 0u64;
    let mut failures = 0u32;
    loop {
        let addr = leaders.current();
        let before = entries;
        let status = match replay_into(shard, addr, follower_id, shard_id, &mut entries).await {
            Ok(()) => return Ok(Restored { entries, last_seq: shard.durable_seq() }),
            Err(Failure::Local(status)) => return Err(format!("storing what {addr} sent: {status}")),
            Err(Failure::Remote(status)) if !retryable(&status) => return Err(format!("{status} (from {addr})")),
            Err(Failure::Remote(status)) => status,
        };
        if entries > before {
            // Progress: the trouble is new, not the same one again.
            failures = 0;
            backoff.reset();
        }
        failures += 1;
        if failures >= RESTORE_ATTEMPTS_MAX {
            return Err(format!(
                "gave up after {failures} attempts in a row that received nothing (RESTORE_ATTEMPTS_MAX) over {}; \
                 the last, at {addr}: {status}",
                addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
            ));
        }
        let next = leaders.failed(Hint::from_status(&status));
        match next.cause {
            Cause::Hint { term } if next.to != next.from => {
                tracing::info!(shard = shard_id, from = %next.from, to = %next.to, term, "restore: following the leader hint");
            }
            _ => tracing::warn!(shard = shard_id, %addr, %status, next = %next.to, "restore: attempt failed; retrying"),
        }
        if next.backoff {
            glommio::timer::sleep(backoff.delay()).await;
        }
    }
}

/// One attempt: the archive's watermark of (follower, shard) from the node
/// at `addr`, then its entries after the shard's last seq, up to that
/// watermark; `entries` counts what was stored.
async fn replay_into(
    shard: &Shard,
    addr: SocketAddr,
    follower_id: u32,
    shard_id: u32,
    entries: &mut u64,
) -> Result<(), Failure> {
    let start = shard.durable_seq() + 1;
    let channel = Channel::connect(addr, CONNECT_TIMEOUT).await?;
    let request = WatermarkRequest { follower_id, shard: shard_id };
    let watermark: WatermarkResponse = channel.unary(GET_WATERMARK, &request, Some(WATERMARK_TIMEOUT)).await?;
    let watermark = watermark.acked_seq;
    if watermark < start {
        // Nothing archived past what the shard holds: the pusher sends the rest.
        return Ok(());
    }
    let mut call = channel.start(REPLAY_FROM, None).await?;
    let sent = match call.send(&ReplayRequest { follower_id, shard: shard_id, from_seq: start }).await {
        Ok(()) => call.close_send().await,
        Err(error) => Err(error),
    };
    if let Err(error) = sent {
        return Err(Failure::Remote(call.status_after_send_error(error).await));
    }
    let mut batch: Vec<LogEntry> = Vec::with_capacity(RESTORE_BATCH_ENTRIES);
    let mut expected = start;
    while let Some(entry) = call.next::<LogEntry>().await? {
        if entry.seq != expected {
            return Err(Failure::Remote(Status::failed_precondition(format!(
                "the archive has seq {} where {expected} was expected: the entries from {expected} on are not \
                 archived (leader retention?) and cannot be restored under their original ids",
                entry.seq
            ))));
        }
        expected += 1;
        batch.push(entry);
        if batch.len() >= RESTORE_BATCH_ENTRIES {
            *entries += append(shard, &mut batch).await.map_err(Failure::Local)?;
        }
    }
    *entries += append(shard, &mut batch).await.map_err(Failure::Local)?;
    if shard.durable_seq() < watermark {
        // A replica that serves less than the archive holds (it lags): try again.
        return Err(Failure::Remote(Status::unavailable(format!(
            "{addr} replayed up to seq {} but its watermark is {watermark}",
            shard.durable_seq()
        ))));
    }
    Ok(())
}

/// Appends `batch` (its seqs continue the shard) and waits for durability.
async fn append(shard: &Shard, batch: &mut Vec<LogEntry>) -> Result<u64, Status> {
    let Some(first) = batch.first().map(|entry| entry.seq) else { return Ok(0) };
    let wait =
        crate::codec::block::with_log_entry_refs(batch.iter(), |refs| shard.append(refs)).map_err(shard_status)?;
    let range = wait.durable().await.map_err(shard_status)?;
    if range.first != first {
        return Err(Status::internal(format!("restored entries got seq {} instead of {first}", range.first)));
    }
    let count = batch.len() as u64;
    batch.clear();
    Ok(count)
}
