//! The leader side of replication: the exactly-once archive of followers'
//! entries, on the core that owns each (follower, follower shard) pair.
//!
//! Each pair has one owner core on this node ([`owner_of`]); a push stream
//! accepted by another core forwards every batch to the owner, where the
//! pair's sans-I/O state machine ([`super::archive::PairArchive`]) admits
//! it against the pair's watermark ([`super::watermark::admit`]) and this
//! driver appends the fresh entries with
//! [`Shard::append_replicated_parts`](crate::shard::Shard::append_replicated_parts),
//! one group per pair at a time. So two streams of one pair can never both
//! append, and the archive of every pair is the dense range
//! `1..=watermark`, each seq once. The watermark itself lives in the data
//! (blocks record their origin) and is read back from the shards the first
//! time a pair is touched after a restart.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use futures_channel::oneshot;

use super::archive::{PairArchive, Step};
use super::batch::{with_fresh_parts, PushedBatch};
use super::{Error, Host};
use crate::limits::ARCHIVE_PAIRS_MAX;
use crate::proto::PushAck;
use crate::shard::Origin;

/// The core of this node that owns the archive of `(follower_id, shard)`.
pub fn owner_of(follower_id: u32, shard: u32, cores: usize) -> usize {
    // A fixed mix (not a seeded hash): ownership must not change between
    // runs, or the first touch after a restart would read the wrong shard.
    let key = (u64::from(follower_id) << 32 | u64::from(shard)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((key >> 32) % cores.max(1) as u64) as usize
}

pub use super::archive::PairReport;

/// Where a batch's ack (or refusal) goes.
pub type AckSender = oneshot::Sender<Result<PushAck, Error>>;

/// One pair's archive: its state machine, and whether a committer task is
/// driving it.
struct Pair {
    machine: RefCell<PairArchive<PushedBatch, AckSender>>,
    committing: Cell<bool>,
}

/// The pairs a core owns.
#[derive(Default)]
pub struct Archive {
    pairs: RefCell<BTreeMap<(u32, u32), Rc<Pair>>>,
}

impl Archive {
    /// Counters of every pair touched since start, by (follower, shard).
    pub fn report(&self) -> BTreeMap<(u32, u32), PairReport> {
        self.pairs.borrow().iter().map(|(&key, pair)| (key, pair.machine.borrow().report())).collect()
    }

    fn pair(&self, key: (u32, u32)) -> Result<Rc<Pair>, Error> {
        let mut pairs = self.pairs.borrow_mut();
        if let Some(pair) = pairs.get(&key) {
            return Ok(pair.clone());
        }
        if pairs.len() >= ARCHIVE_PAIRS_MAX {
            return Err(Error::Exhausted(format!(
                "this core already archives {ARCHIVE_PAIRS_MAX} (follower, shard) pairs (ARCHIVE_PAIRS_MAX)"
            )));
        }
        let pair = Rc::new(Pair { machine: RefCell::new(PairArchive::new()), committing: Cell::new(false) });
        pairs.insert(key, pair.clone());
        Ok(pair)
    }
}

/// The pair's watermark as the durable data says: the highest origin seq
/// of the pair in every shard of this node (after a restart the pair's
/// data may sit in any shard if the shard count changed).
async fn load_watermark<H: Host>(host: &H, key: (u32, u32)) -> Result<u64, Error> {
    let local = host.shard().origin_watermark(key.0, key.1);
    Ok(local.max(host.origin_watermark_elsewhere(key.0, key.1).await?))
}

/// Queues one batch for archiving on its owner core (this one); the ack
/// (or the refusal) goes to `reply` once the batch's fresh entries are
/// durable. Synchronous, so batches of a stream queue in stream order.
///
/// One committer task per pair drives the pair's [`PairArchive`]: it
/// admits the queued batches in order against the running watermark and
/// appends all their fresh entries as **one** append (group commit, all
/// or nothing), waits for durability, then advances the watermark and
/// answers. Batches that arrive meanwhile form the next group. So the
/// archive never gets a hole: an append that fails leaves the watermark
/// where it was, and nothing queued behind it was appended.
pub fn enqueue<H: Host>(host: &Rc<H>, batch: PushedBatch, reply: AckSender) {
    if host.closing() {
        let _ = reply.send(Err(Error::ShuttingDown));
        return;
    }
    let key = (batch.follower_id, batch.shard);
    let pair = match host.archive().pair(key) {
        Ok(pair) => pair,
        Err(error) => {
            let _ = reply.send(Err(error));
            return;
        }
    };
    pair.machine.borrow_mut().enqueue(batch, reply);
    if !pair.committing.replace(true) {
        glommio::spawn_local(commit_loop(host.clone(), pair, key)).detach();
    }
}

/// Does what the pair's machine asks until it has nothing to do. The only
/// task doing I/O for the pair, so at most one load or append is
/// outstanding.
async fn commit_loop<H: Host>(host: Rc<H>, pair: Rc<Pair>, key: (u32, u32)) {
    loop {
        let step = pair.machine.borrow_mut().poll();
        match step {
            Step::Reply { reply, result } => {
                let ack = result.map(|ack| PushAck {
                    shard: key.1,
                    acked_seq: ack.acked_seq,
                    written: ack.written,
                    duplicates: ack.duplicates,
                });
                let _ = reply.send(ack);
            }
            Step::LoadWatermark => {
                let loaded = load_watermark(&*host, key).await;
                pair.machine.borrow_mut().watermark_loaded(loaded);
            }
            Step::Append { first_seq, .. } => {
                let origin = Origin { node: key.0, shard: key.1, first_seq };
                let appended = {
                    let mut machine = pair.machine.borrow_mut();
                    let mut fresh: Vec<(&mut PushedBatch, usize)> = machine.fresh_parts_mut().collect();
                    with_fresh_parts(&mut fresh, |parts| host.shard().append_replicated_parts(origin, parts))
                };
                let outcome = match appended {
                    Ok(Ok(wait)) => wait.durable().await.map(|_| ()).map_err(Error::from),
                    Ok(Err(error)) => Err(Error::from(error)),
                    Err(error) => Err(error),
                };
                pair.machine.borrow_mut().append_done(outcome);
            }
            Step::Idle => {
                pair.committing.set(false);
                return;
            }
        }
    }
}

/// The watermark of a pair, answered by its owner core (this one). A
/// watermark read here never replaces one the committer already knows
/// ([`PairArchive::watermark_read`]): the read may have started before an
/// append that has completed since.
pub async fn watermark<H: Host>(host: &H, follower_id: u32, shard: u32) -> Result<u64, Error> {
    let key = (follower_id, shard);
    let pair = host.archive().pair(key)?;
    let known = pair.machine.borrow().watermark();
    if let Some(watermark) = known {
        return Ok(watermark);
    }
    let read = load_watermark(host, key).await?;
    let watermark = pair.machine.borrow_mut().watermark_read(read);
    Ok(watermark)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_stable_and_spreads_pairs() {
        assert_eq!(owner_of(7, 3, 1), 0);
        let mut counts = [0usize; 4];
        for follower in 0..64 {
            for shard in 0..4 {
                let owner = owner_of(follower, shard, 4);
                assert_eq!(owner, owner_of(follower, shard, 4));
                counts[owner] += 1;
            }
        }
        assert!(counts.iter().all(|&count| count > 32), "{counts:?}");
    }

    #[test]
    fn ownership_matches_the_tier_benches_copy() {
        // benches/tier/tier.py computes the same mix to know which group
        // archives which follower shard: a change here must change it too.
        let python_says = [((10, 0, 2), 0), ((10, 1, 2), 1), ((1, 0, 2), 1), ((7, 3, 4), 3), ((123, 5, 8), 6)];
        for ((follower, shard, cores), owner) in python_says {
            assert_eq!(owner_of(follower, shard, cores), owner, "owner_of({follower}, {shard}, {cores})");
        }
    }
}
