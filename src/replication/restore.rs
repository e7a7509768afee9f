//! `wormdb restore`: rebuilds a follower's lost shards from the leader's
//! archive with `ReplayFrom`, keeping the original ids.
//!
//! A shard's seqs are dense from 1 and assigned by the shard itself, so an
//! entry keeps its original seq exactly when the restored shard receives
//! the archive in order with no hole: restore checks every seq and stops
//! with an error at the first one that would change. A shard that already
//! holds entries is continued from its last seq (a restore can be resumed
//! after an interruption).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::shard_status;
use crate::grpc::status::Status;
use crate::grpc::transport::Channel;
use crate::limits::RESTORE_BATCH_ENTRIES;
use crate::proto::{LogEntry, ReplayRequest};
use crate::shard::{Shard, ShardConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REPLAY_FROM: &str = "/wormdb.v1.WormReplication/ReplayFrom";

/// What one shard's restore did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    /// Entries fetched and stored.
    pub entries: u64,
    /// The shard's last seq afterwards.
    pub last_seq: u64,
}

/// Restores shard `shard_id` of follower `follower_id` into
/// `data_dir/shard-NNN` from the leader at `leader`.
pub async fn restore_shard(
    leader: SocketAddr,
    follower_id: u32,
    shard_id: u32,
    data_dir: &Path,
) -> Result<Restored, String> {
    let config = ShardConfig {
        node_id: follower_id,
        ..ShardConfig::new(data_dir.join(format!("shard-{shard_id:03}")), shard_id)
    };
    let shard = Shard::open(config).await.map_err(|error| format!("shard {shard_id}: {error}"))?;
    let result = replay_into(&shard, leader, follower_id, shard_id).await;
    let closed = shard.close().await.map_err(|error| format!("shard {shard_id}: {error}"));
    let restored = result.map_err(|status| format!("shard {shard_id}: {status}"))?;
    closed?;
    Ok(restored)
}

async fn replay_into(shard: &Shard, leader: SocketAddr, follower_id: u32, shard_id: u32) -> Result<Restored, Status> {
    let start = shard.durable_seq() + 1;
    let channel = Channel::connect(leader, CONNECT_TIMEOUT).await?;
    let mut call = channel.start(REPLAY_FROM, None).await?;
    call.send(&ReplayRequest { follower_id, shard: shard_id, from_seq: start }).await?;
    call.close_send().await?;
    let mut batch: Vec<LogEntry> = Vec::with_capacity(RESTORE_BATCH_ENTRIES);
    let mut expected = start;
    let mut entries = 0u64;
    while let Some(entry) = call.next::<LogEntry>().await? {
        if entry.seq != expected {
            return Err(Status::failed_precondition(format!(
                "the archive has seq {} where {expected} was expected: the entries from {expected} on are not \
                 archived (leader retention?) and cannot be restored under their original ids",
                entry.seq
            )));
        }
        expected += 1;
        batch.push(entry);
        if batch.len() >= RESTORE_BATCH_ENTRIES {
            entries += append(shard, &mut batch).await?;
        }
    }
    entries += append(shard, &mut batch).await?;
    Ok(Restored { entries, last_seq: shard.durable_seq() })
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
