//! The leader side of replication: the exactly-once archive of followers'
//! entries, on the core that owns each (follower, follower shard) pair.
//!
//! Each pair has one owner core on this node ([`owner_of`]); a push stream
//! accepted by another core forwards every batch to the owner, which admits
//! it against the pair's watermark ([`super::watermark::admit`]) and appends
//! the fresh entries with
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

use super::batch::{with_fresh_parts, PushedBatch};
use super::{watermark, Error, Host};
use crate::limits::{ARCHIVE_GROUP_BYTES_MAX, ARCHIVE_PAIRS_MAX};
use crate::proto::PushAck;
use crate::shard::Origin;

/// The core of this node that owns the archive of `(follower_id, shard)`.
pub fn owner_of(follower_id: u32, shard: u32, cores: usize) -> usize {
    // A fixed mix (not a seeded hash): ownership must not change between
    // runs, or the first touch after a restart would read the wrong shard.
    let key = (u64::from(follower_id) << 32 | u64::from(shard)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((key >> 32) % cores.max(1) as u64) as usize
}

/// The archive counters of one pair, for stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairReport {
    /// Highest archived seq.
    pub watermark: u64,
    /// Entries archived since this node started.
    pub written: u64,
    /// Entries skipped as already archived since this node started.
    pub duplicates: u64,
}

/// Where a batch's ack (or refusal) goes.
pub type AckSender = oneshot::Sender<Result<PushAck, Error>>;

/// A batch waiting for its pair's committer, and where its ack goes.
type Queued = (PushedBatch, AckSender);

struct Pair {
    /// Batches waiting, in arrival order.
    queue: RefCell<Vec<Queued>>,
    /// A committer task is draining `queue`.
    committing: Cell<bool>,
    /// Highest archived (durable) seq; `None` until read from the shards.
    watermark: Cell<Option<u64>>,
    written: Cell<u64>,
    duplicates: Cell<u64>,
}

/// The pairs a core owns.
#[derive(Default)]
pub struct Archive {
    pairs: RefCell<BTreeMap<(u32, u32), Rc<Pair>>>,
}

impl Archive {
    /// Counters of every pair touched since start, by (follower, shard).
    pub fn report(&self) -> BTreeMap<(u32, u32), PairReport> {
        self.pairs
            .borrow()
            .iter()
            .map(|(&key, pair)| {
                let report = PairReport {
                    watermark: pair.watermark.get().unwrap_or(0),
                    written: pair.written.get(),
                    duplicates: pair.duplicates.get(),
                };
                (key, report)
            })
            .collect()
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
        let pair = Rc::new(Pair {
            queue: RefCell::new(Vec::new()),
            committing: Cell::new(false),
            watermark: Cell::new(None),
            written: Cell::new(0),
            duplicates: Cell::new(0),
        });
        pairs.insert(key, pair.clone());
        Ok(pair)
    }
}

/// The pair's watermark, read from every shard the first time.
async fn pair_watermark<H: Host>(host: &H, pair: &Pair, key: (u32, u32)) -> Result<u64, Error> {
    if let Some(watermark) = pair.watermark.get() {
        return Ok(watermark);
    }
    let local = host.shard().origin_watermark(key.0, key.1);
    let watermark = local.max(host.origin_watermark_elsewhere(key.0, key.1).await?);
    pair.watermark.set(Some(watermark));
    Ok(watermark)
}

/// Queues one batch for archiving on its owner core (this one); the ack
/// (or the refusal) goes to `reply` once the batch's fresh entries are
/// durable. Synchronous, so batches of a stream queue in stream order.
///
/// One committer task per pair drains the queue: it admits every queued
/// batch in order against the running watermark and appends all their
/// fresh entries as **one** append (group commit, all or nothing), waits
/// for durability, then advances the watermark and answers. Batches that
/// arrive meanwhile form the next group. So the archive never gets a hole:
/// an append that fails leaves the watermark where it was, and nothing
/// queued behind it was appended.
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
    pair.queue.borrow_mut().push((batch, reply));
    if !pair.committing.replace(true) {
        glommio::spawn_local(commit_loop(host.clone(), pair, key)).detach();
    }
}

async fn commit_loop<H: Host>(host: Rc<H>, pair: Rc<Pair>, key: (u32, u32)) {
    loop {
        let group = std::mem::take(&mut *pair.queue.borrow_mut());
        if group.is_empty() {
            pair.committing.set(false);
            return;
        }
        commit_group(&*host, &pair, key, group).await;
    }
}

async fn commit_group<H: Host>(host: &H, pair: &Pair, key: (u32, u32), group: Vec<Queued>) {
    let mut watermark = match pair_watermark(host, pair, key).await {
        Ok(watermark) => watermark,
        Err(error) => {
            for (_, reply) in group {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
    };
    let mut group = group.into_iter().peekable();
    while group.peek().is_some() {
        // Admit batches in order while they fit one append.
        let mut admitted: Vec<(Queued, Result<watermark::Admission, Error>)> = Vec::new();
        let mut expected = watermark;
        let mut bytes = 0usize;
        while let Some((batch, _)) = group.peek() {
            if !admitted.is_empty() && bytes + batch.message_bytes() > ARCHIVE_GROUP_BYTES_MAX {
                break;
            }
            bytes += batch.message_bytes();
            let queued = group.next().expect("peeked");
            let admission = watermark::admit(expected, queued.0.seqs());
            if let Ok(admission) = &admission {
                expected += admission.fresh as u64;
            }
            admitted.push((queued, admission));
        }
        let outcome = if expected > watermark {
            let origin = Origin { node: key.0, shard: key.1, first_seq: watermark + 1 };
            append_fresh(host, origin, &mut admitted).await
        } else {
            Ok(())
        };
        let failed = outcome.is_err();
        if !failed {
            watermark = expected;
            pair.watermark.set(Some(watermark));
        }
        let mut acked = watermark;
        for ((batch, reply), admission) in admitted {
            let result = match (&outcome, admission) {
                (Err(error), _) => Err(error.clone()),
                (Ok(()), Err(error)) => Err(error),
                (Ok(()), Ok(admission)) => {
                    pair.written.set(pair.written.get() + admission.fresh as u64);
                    pair.duplicates.set(pair.duplicates.get() + admission.duplicates as u64);
                    if admission.fresh > 0 {
                        acked = admission.watermark_after();
                    }
                    Ok(PushAck {
                        shard: batch.shard,
                        acked_seq: acked,
                        written: admission.fresh as u64,
                        duplicates: admission.duplicates as u64,
                    })
                }
            };
            let _ = reply.send(result);
        }
        if failed {
            for (_, reply) in group {
                let _ = reply.send(Err(Error::Aborted));
            }
            return;
        }
    }
}

/// Appends the fresh entries of the admitted batches as one append, and
/// waits until they are durable.
async fn append_fresh<H: Host>(
    host: &H,
    origin: Origin,
    admitted: &mut [(Queued, Result<watermark::Admission, Error>)],
) -> Result<(), Error> {
    let mut fresh: Vec<(&mut PushedBatch, usize)> = admitted
        .iter_mut()
        .filter_map(|((batch, _), admission)| admission.as_ref().ok().map(|admission| (batch, admission.duplicates)))
        .collect();
    let wait = with_fresh_parts(&mut fresh, |parts| host.shard().append_replicated_parts(origin, parts))??;
    wait.durable().await?;
    Ok(())
}

/// The watermark of a pair, answered by its owner core (this one).
pub async fn watermark<H: Host>(host: &H, follower_id: u32, shard: u32) -> Result<u64, Error> {
    let key = (follower_id, shard);
    let pair = host.archive().pair(key)?;
    pair_watermark(host, &pair, key).await
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
}
