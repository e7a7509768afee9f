//! Retention: which sealed segments go ([`plan_retention`], pure) and the
//! driver that deletes them.
//!
//! Retention runs after every segment roll (started by the writer, see
//! [`start_after_roll`]) and whenever the owner asks ([`Shard::apply_retention`],
//! for ages that pass without a roll). Running it at each roll keeps a
//! shard within its byte cap plus one segment at all times: a roll adds one
//! segment, and the next roll waits until the pass the previous one started
//! has finished.
//!
//! Deleting a segment is slow where the disk frees its extents: unlinking a
//! written 256 MiB segment took 200 ms on the reference machine (ext4 on a
//! virtio disk; 48 ms for 64 MiB, 840 ms for 1 GiB). That never happens on
//! the executor thread: the pass closes the shard's descriptor while the
//! file is still linked (cheap), then unlinks on glommio's blocking thread,
//! where the last reference goes. The commit path waits for a pass only
//! when a whole segment filled before the previous pass finished.

use std::cell::Cell;
use std::rc::Rc;

use super::{recovery, Error, Inner, Result, Sealed, Shard};

/// Which sealed segments retention may delete.
#[derive(Clone, Copy, Debug, Default)]
pub struct RetentionPolicy {
    /// Keep the shard's segment files (the active one at its full size)
    /// under this many bytes in total.
    pub bytes_max: Option<u64>,
    /// Delete segments whose newest entry is older than this.
    pub age_max: Option<std::time::Duration>,
}

impl RetentionPolicy {
    /// Whether the policy deletes anything at all.
    pub fn is_active(&self) -> bool {
        self.bytes_max.is_some() || self.age_max.is_some()
    }
}

/// A sealed segment as retention sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSpan {
    /// First seq in the segment.
    pub first_seq: u64,
    /// Last seq in the segment.
    pub last_seq: u64,
    /// Newest timestamp in the segment.
    pub max_ts: i64,
    /// Size of the file.
    pub file_bytes: u64,
}

/// A seq shared between the tasks of one core: one task sets it, others
/// read it; `None` until first set. Clones share the value. A follower's
/// pusher keeps the seq its leader acknowledged in one, and hands the shard
/// a clone as [`super::ShardConfig::retention_deletable_through`].
#[derive(Clone, Debug, Default)]
pub struct SharedSeq(Rc<Cell<Option<u64>>>);

impl SharedSeq {
    /// The value now.
    pub fn get(&self) -> Option<u64> {
        self.0.get()
    }

    /// Replaces the value.
    pub fn set(&self, seq: Option<u64>) {
        self.0.set(seq);
    }
}

/// Whether `span` may be deleted under the veto `deletable_through`: with
/// none, always; otherwise only if the span ends at or below the seq it
/// holds (and never while it holds `None`).
pub(super) fn deletable(deletable_through: Option<&SharedSeq>, span: &SegmentSpan) -> bool {
    match deletable_through {
        None => true,
        Some(through) => through.get().is_some_and(|seq| span.last_seq <= seq),
    }
}

/// How many of the oldest sealed segments (`sealed`, oldest first) retention
/// deletes: going from the oldest, a segment goes while the segment files
/// (those of `sealed` not yet planned away, plus `active_bytes`) hold more
/// than `policy.bytes_max`, or while it is older than `policy.age_max` at
/// `now_ns` (its newest entry before `now_ns - age_max`); the run stops at
/// the first segment `may_delete` refuses, so the log stays one contiguous
/// range. Pure.
pub fn plan_retention(
    policy: &RetentionPolicy,
    sealed: &[SegmentSpan],
    active_bytes: u64,
    now_ns: i64,
    mut may_delete: impl FnMut(&SegmentSpan) -> bool,
) -> usize {
    let mut total: u64 = sealed.iter().map(|span| span.file_bytes).sum::<u64>() + active_bytes;
    let age_ns = policy.age_max.map(|age| i64::try_from(age.as_nanos()).unwrap_or(i64::MAX));
    let mut count = 0;
    for span in sealed {
        let over_bytes = policy.bytes_max.is_some_and(|max| total > max);
        let too_old = age_ns.is_some_and(|age_ns| span.max_ts < now_ns.saturating_sub(age_ns));
        if !(over_bytes || too_old) || !may_delete(span) {
            break;
        }
        total -= span.file_bytes;
        count += 1;
    }
    count
}

pub(super) fn span_of(sealed: &Sealed) -> SegmentSpan {
    SegmentSpan {
        first_seq: sealed.first_seq,
        last_seq: sealed.next_seq - 1,
        max_ts: sealed.summary.max_ts,
        file_bytes: sealed.file_bytes,
    }
}

impl Shard {
    /// Deletes whole sealed segments, oldest first, as [`plan_retention`]
    /// picks them under `policy` at `now_ns`; `may_delete` can veto a
    /// segment (for example: not yet replicated), and deletion stops at the
    /// first veto, so the log always stays a contiguous range. The active
    /// segment is never deleted. One pass runs at a time. Returns the spans
    /// deleted. Origin watermarks stay as they are: they never go back
    /// while the shard runs. On an error the segment that failed stays in
    /// the log (unless only its index could not be deleted: recovery
    /// removes an index without its segment).
    pub async fn enforce_retention(
        &self,
        policy: RetentionPolicy,
        now_ns: i64,
        may_delete: impl FnMut(&SegmentSpan) -> bool,
    ) -> Result<Vec<SegmentSpan>> {
        let _pass = self.inner.retention_lock.acquire_permit(1).await.map_err(|_| Error::Closed)?;
        let victims: Vec<SegmentSpan> = {
            let state = self.inner.state.borrow();
            let spans: Vec<SegmentSpan> = state.sealed.iter().map(span_of).collect();
            let count = plan_retention(&policy, &spans, state.active.capacity, now_ns, may_delete);
            spans[..count].to_vec()
        };
        let mut deleted = Vec::with_capacity(victims.len());
        for victim in victims {
            let sealed = {
                let mut state = self.inner.state.borrow_mut();
                // Only this pass removes sealed segments (and rolls add at the
                // back), so the front is still the planned one.
                assert_eq!(state.sealed.front().map(span_of), Some(victim), "retention passes run one at a time");
                let sealed = state.sealed.pop_front().expect("checked above");
                state.loaded_indexes.retain(|&(first, _)| first != sealed.first_seq);
                sealed
            };
            // Close the shard's descriptor while the file is still linked, so
            // that the unlink below, off the executor thread, frees the
            // extents. (A reader holding the file keeps it until it is done.)
            let file = sealed.file.borrow_mut().take();
            if let Some(Ok(file)) = file.map(Rc::try_unwrap) {
                let _ = file.close().await;
            }
            // Segment first, then its index: a crash in between leaves an
            // orphan index, which recovery deletes.
            if let Err(error) = glommio::io::remove(&sealed.path).await {
                let error = Error::glommio("delete segment", &sealed.path, error);
                self.inner.state.borrow_mut().sealed.push_front(sealed);
                return Err(error);
            }
            // A failed cold rewrite can leave the segment without its index
            // file (recovery rebuilds it at the next open): nothing to delete.
            if let Err(error) = std::fs::remove_file(&sealed.index_path) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    return Err(Error::io("delete index", &sealed.index_path, error));
                }
            }
            recovery::sync_dir(&self.inner.config.dir).await?;
            tracing::info!(
                shard = self.inner.config.shard_id,
                first_seq = victim.first_seq,
                last_seq = victim.last_seq,
                "retention deleted segment"
            );
            deleted.push(victim);
        }
        Ok(deleted)
    }

    /// [`Shard::enforce_retention`] with the shard's own policy and veto
    /// ([`super::ShardConfig::retention`],
    /// [`super::ShardConfig::retention_deletable_through`]). The shard runs
    /// it after every roll; its owner calls it for ages that pass without one.
    pub async fn apply_retention(&self, now_ns: i64) -> Result<Vec<SegmentSpan>> {
        let config = &self.inner.config;
        if !config.retention.is_active() {
            return Ok(Vec::new());
        }
        let through = config.retention_deletable_through.as_ref();
        self.enforce_retention(config.retention, now_ns, |span| deletable(through, span)).await
    }
}

/// Starts a retention pass after a roll, in a task of its own, so the
/// commit path does not wait for the deletes; the next roll waits for it
/// ([`wait_for_pass`]).
pub(super) fn start_after_roll(inner: &Rc<Inner>) {
    if !inner.config.retention.is_active() {
        return;
    }
    let shard = Shard { inner: inner.clone() };
    let task = glommio::spawn_local(async move {
        if let Err(error) = shard.apply_retention(super::now_unix_ns()).await {
            tracing::error!(shard = shard.inner.config.shard_id, %error, "retention after a roll failed");
        }
    })
    .detach();
    let previous = inner.retention_task.borrow_mut().replace(task);
    debug_assert!(previous.is_none(), "a roll waits for the previous pass first");
}

/// Waits until the pass the previous roll started has finished, so that a
/// shard never holds more than its byte cap plus the segment a roll adds.
pub(super) async fn wait_for_pass(inner: &Inner) {
    let task = inner.retention_task.borrow_mut().take();
    if let Some(task) = task {
        task.await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spans(sizes: &[u64]) -> Vec<SegmentSpan> {
        let mut first_seq = 1;
        sizes
            .iter()
            .enumerate()
            .map(|(index, &file_bytes)| {
                let span = SegmentSpan { first_seq, last_seq: first_seq + 9, max_ts: index as i64 * 100, file_bytes };
                first_seq += 10;
                span
            })
            .collect()
    }

    #[test]
    fn bytes_cap_counts_the_active_segment_and_keeps_the_newest() {
        let sealed = spans(&[10, 10, 10, 10]);
        let policy = RetentionPolicy { bytes_max: Some(30), age_max: None };
        // 40 sealed + 10 active: two go to reach 30.
        assert_eq!(plan_retention(&policy, &sealed, 10, 0, |_| true), 2);
        assert_eq!(plan_retention(&policy, &sealed, 0, 0, |_| true), 1);
        // Exactly at the cap: nothing goes.
        assert_eq!(plan_retention(&RetentionPolicy { bytes_max: Some(50), ..policy }, &sealed, 10, 0, |_| true), 0);
        // A cap below one segment empties the sealed list, never the active one.
        assert_eq!(plan_retention(&RetentionPolicy { bytes_max: Some(0), ..policy }, &sealed, 10, 0, |_| true), 4);
        assert_eq!(plan_retention(&policy, &[], 100, 0, |_| true), 0);
        assert_eq!(plan_retention(&RetentionPolicy::default(), &sealed, 10, i64::MAX, |_| true), 0);
    }

    #[test]
    fn age_deletes_the_old_prefix_and_the_veto_stops_the_run() {
        let sealed = spans(&[10, 10, 10, 10]); // max_ts 0, 100, 200, 300
        let policy = RetentionPolicy { bytes_max: None, age_max: Some(Duration::from_nanos(150)) };
        // Older than 350 - 150 = 200: the first two (0 and 100); 200 is not older.
        assert_eq!(plan_retention(&policy, &sealed, 10, 350, |_| true), 2);
        assert_eq!(plan_retention(&policy, &sealed, 10, 0, |_| true), 0);
        let through = SharedSeq::default();
        let veto = |span: &SegmentSpan| deletable(Some(&through), span);
        assert_eq!(plan_retention(&policy, &sealed, 10, 350, veto), 0, "nothing while the veto holds None");
        through.set(Some(10));
        assert_eq!(plan_retention(&policy, &sealed, 10, 350, |span| deletable(Some(&through), span)), 1);
        through.set(Some(19));
        assert_eq!(plan_retention(&policy, &sealed, 10, 350, |span| deletable(Some(&through), span)), 1);
        through.set(Some(u64::MAX));
        assert_eq!(plan_retention(&policy, &sealed, 10, 350, |span| deletable(Some(&through), span)), 2);
        // A veto in the middle stops the run there, even if later ones are allowed.
        let all_old = RetentionPolicy { age_max: Some(Duration::ZERO), ..policy };
        assert_eq!(plan_retention(&all_old, &sealed, 10, 1000, |span| span.first_seq != 11), 1);
        assert!(deletable(None, &sealed[3]));
    }
}
