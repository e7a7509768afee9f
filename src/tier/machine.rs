//! What applying a committed entry does, as a pure function of the
//! replica's watermarks: the archive's state machine.
//!
//! A group's state is, for every origin pair (a follower's (node, shard),
//! or `(0, group)` for the tier's direct writes), the dense range of seqs
//! `1..=watermark` it holds. Applying a [`Proposal`](crate::proto::Proposal)
//! admits each of its batches in order with the rule of section 5
//! ([`watermark::admit`]) against the running watermarks; what is fresh is
//! appended to the shard by the driver. Every replica applies the same
//! entries in the same order from the same state, so every replica decides
//! the same, and the archive holds each (pair, seq) exactly once.
//!
//! **The same state** is the catch after a crash. Admitting an entry again
//! against a later state is *not* harmless: a batch refused as a gap the
//! first time (the follower was ahead) may be admitted against the later
//! watermarks, so this replica's watermarks run ahead of the others', its
//! acks too (when it leads), and entries the others lack are never resent
//! (the simulator, `tests/sim_raft.rs`, found it). So the machine's state,
//! the watermarks and the index they stand for ([`Machine::applied`]), is
//! persisted in the group's Raft log (`MACHINE` records, written in the
//! round after the appends it covers are durable), and a restart resumes
//! from exactly that state: [`Machine::begin`] skips whole every entry at
//! or below it. The shard's data may be *ahead* of it (appends of later
//! entries that were durable before the crash, part of a snapshot), never
//! behind; those are the appends the same entries decide again, so the
//! driver appends only what the shard does not hold yet. A snapshot raises
//! the state to the sender's, standing for the sender's applied index
//! ([`Machine::raise_to`]), once its data is durable. The persisted state
//! must never stand for less than where the log starts on disk (a snapshot,
//! a compaction point): raft-rs never hands over the entries before that,
//! so the log writes the state first in every round and checkpoint.
//!
//! Direct writes are stricter: their seqs were chosen by the leader that
//! proposed them (the group's next seqs as it knew them), and a batch is
//! admitted only when it continues the range exactly. A batch whose seqs
//! are already taken (an earlier leader's write, committed since) appends
//! nothing and its writer is told to retry ([`Error::Conflict`]), so two
//! different writes never share an id and a write is never stored under
//! another's.

use std::collections::{BTreeMap, BTreeSet};

use super::Error;
use crate::limits::ARCHIVE_PAIRS_MAX;
use crate::replication::watermark::{admit, Admission};

/// An origin pair: (node, shard) of the entries' first home.
pub type Pair = (u32, u32);

/// The archive's watermarks on one replica of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    watermarks: BTreeMap<Pair, u64>,
    applied: u64,
    /// Pairs whose watermark moved since the last [`Machine::take_changes`]
    /// (what the next `MACHINE` record of the Raft log carries).
    changed: BTreeSet<Pair>,
}

impl Machine {
    /// A machine at `watermarks`, standing for no entry in particular
    /// ([`Machine::begin`] skips nothing).
    pub fn new(watermarks: BTreeMap<Pair, u64>) -> Machine {
        Machine { watermarks, applied: 0, changed: BTreeSet::new() }
    }

    /// A machine at `watermarks`, which are the state after the entry at
    /// `applied` exactly (as the Raft log persisted it: see the module
    /// docs).
    pub fn restored(watermarks: BTreeMap<Pair, u64>, applied: u64) -> Machine {
        Machine { watermarks, applied, changed: BTreeSet::new() }
    }

    /// The index of the entry the watermarks stand for: every entry up to
    /// it is applied, no later one.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Starts applying the committed entry at `index` (raft-rs hands them
    /// over in order). `false` when the watermarks already hold its effects
    /// (an entry handed over again after a restart, or covered by a
    /// snapshot's data): skip it whole, admitting and answering none of its
    /// batches.
    pub fn begin(&mut self, index: u64) -> bool {
        if index <= self.applied {
            return false;
        }
        self.applied = index;
        true
    }

    /// The highest seq of `pair` held (0 when none).
    pub fn watermark(&self, pair: Pair) -> u64 {
        self.watermarks.get(&pair).copied().unwrap_or(0)
    }

    /// Every pair's watermark.
    pub fn watermarks(&self) -> &BTreeMap<Pair, u64> {
        &self.watermarks
    }

    /// Admits one batch of `pair` carrying `seqs` and advances the pair's
    /// watermark past its fresh entries: what the driver then appends.
    /// `direct` batches must continue the range exactly.
    ///
    /// Every refusal leaves the state as it was, and depends only on the
    /// state and the batch, so it is the same on every replica.
    pub fn admit(&mut self, pair: Pair, seqs: impl IntoIterator<Item = u64>, direct: bool) -> Result<Admission, Error> {
        let admission = self.check(pair, seqs, direct)?;
        self.advance(pair, &admission);
        Ok(admission)
    }

    /// What [`Machine::admit`] would decide, without changing anything: the
    /// driver checks, prepares the append (which may still refuse the
    /// batch's content, the same way on every replica), then advances.
    pub fn check(&self, pair: Pair, seqs: impl IntoIterator<Item = u64>, direct: bool) -> Result<Admission, Error> {
        let known = self.watermarks.contains_key(&pair);
        if !known && self.watermarks.len() >= ARCHIVE_PAIRS_MAX {
            return Err(Error::Exhausted(format!(
                "this group already archives {ARCHIVE_PAIRS_MAX} origin pairs (ARCHIVE_PAIRS_MAX)"
            )));
        }
        let watermark = self.watermark(pair);
        let admission = match admit(watermark, seqs) {
            Ok(admission) if direct && admission.duplicates > 0 => return Err(Error::Conflict { group: pair.1 }),
            Err(crate::replication::Error::Gap { .. }) if direct => return Err(Error::Conflict { group: pair.1 }),
            Ok(admission) => admission,
            Err(error) => return Err(error.into()),
        };
        Ok(admission)
    }

    /// Moves `pair`'s watermark past an admitted batch's fresh entries.
    pub fn advance(&mut self, pair: Pair, admission: &Admission) {
        if admission.fresh > 0 {
            self.watermarks.insert(pair, admission.watermark_after());
            self.changed.insert(pair);
        }
    }

    /// The watermarks that moved since the last call, with the index the
    /// state stands for: what persisting the state needs.
    pub fn take_changes(&mut self) -> (u64, BTreeMap<Pair, u64>) {
        let changed = std::mem::take(&mut self.changed);
        (self.applied, changed.into_iter().map(|pair| (pair, self.watermark(pair))).collect())
    }

    /// Raises watermarks to at least `other`'s, which stand for the state
    /// after entry `applied`: what installing a snapshot does once its
    /// batches are durable (`applied` is the sender's applied index when it
    /// took its watermarks).
    pub fn raise_to(&mut self, other: &BTreeMap<Pair, u64>, applied: u64) {
        for (&pair, &seq) in other {
            let watermark = self.watermarks.entry(pair).or_insert(0);
            if seq > *watermark {
                *watermark = seq;
                self.changed.insert(pair);
            }
        }
        self.applied = self.applied.max(applied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_follow_the_watermark_rule() {
        let mut machine = Machine::default();
        let admission = machine.admit((5, 0), 1..=10, false).unwrap();
        assert_eq!((admission.duplicates, admission.fresh), (0, 10));
        assert_eq!(machine.watermark((5, 0)), 10);
        // A resend: duplicates, nothing fresh, nothing changes.
        let admission = machine.admit((5, 0), 6..=12, false).unwrap();
        assert_eq!((admission.duplicates, admission.fresh, admission.first_seq), (5, 2, 11));
        assert_eq!(machine.watermark((5, 0)), 12);
        // A gap refuses and changes nothing.
        assert!(matches!(
            machine.admit((5, 0), 20..=21, false),
            Err(Error::Replication(crate::replication::Error::Gap { expected: 13, got: 20 }))
        ));
        assert_eq!(machine.watermark((5, 0)), 12);
        assert_eq!(machine.watermark((5, 1)), 0);
    }

    #[test]
    fn admitting_archived_batches_again_changes_nothing() {
        let mut once = Machine::default();
        let batches = [((1, 0), 1..=4), ((2, 1), 1..=3), ((1, 0), 5..=9)];
        for (pair, seqs) in batches.clone() {
            once.admit(pair, seqs, false).unwrap();
        }
        let mut twice = once.clone();
        for (pair, seqs) in batches {
            let admission = twice.admit(pair, seqs, false).unwrap();
            assert_eq!(admission.fresh, 0);
        }
        assert_eq!(once, twice);
    }

    #[test]
    fn direct_writes_must_continue_the_range_exactly() {
        let mut machine = Machine::default();
        machine.admit((0, 3), 1..=5, true).unwrap();
        // Seqs taken by an earlier write: a conflict, nothing changes.
        assert!(matches!(machine.admit((0, 3), 4..=8, true), Err(Error::Conflict { group: 3 })));
        assert!(matches!(machine.admit((0, 3), 1..=5, true), Err(Error::Conflict { group: 3 })));
        // Seqs beyond the range: a conflict too.
        assert!(matches!(machine.admit((0, 3), 7..=8, true), Err(Error::Conflict { group: 3 })));
        assert_eq!(machine.watermark((0, 3)), 5);
        machine.admit((0, 3), 6..=6, true).unwrap();
        assert_eq!(machine.watermark((0, 3)), 6);
    }

    #[test]
    fn raising_keeps_the_higher_watermark() {
        let mut machine = Machine::restored(BTreeMap::from([((1, 0), 10), ((2, 0), 3)]), 20);
        machine.raise_to(&BTreeMap::from([((1, 0), 7), ((2, 0), 8), ((3, 0), 1)]), 30);
        assert_eq!(machine.watermarks(), &BTreeMap::from([((1, 0), 10), ((2, 0), 8), ((3, 0), 1)]));
        assert_eq!(machine.applied(), 30);
        // Only what moved is persisted again.
        assert_eq!(machine.take_changes(), (30, BTreeMap::from([((2, 0), 8), ((3, 0), 1)])));
        assert_eq!(machine.take_changes(), (30, BTreeMap::new()));
    }

    #[test]
    fn entries_the_state_holds_are_skipped_whole() {
        // Entry 1 admits 1..=5; entry 2 is a gap (7..=9); entry 3 admits 6.
        let entries = [(1, 1..=5), (2, 7..=9), (3, 6..=6)];
        let mut machine = Machine::default();
        for (index, seqs) in entries.clone() {
            assert!(machine.begin(index));
            let _ = machine.admit((1, 0), seqs, false);
        }
        assert_eq!((machine.watermark((1, 0)), machine.applied()), (6, 3));
        // A restart hands entries 1..=3 over again: admitting entry 2 against
        // watermark 6 would take 7..=9, which no other replica holds.
        let mut restarted = Machine::restored(machine.watermarks().clone(), 3);
        for (index, _) in entries {
            assert!(!restarted.begin(index));
        }
        assert!(restarted.begin(4));
        assert_eq!(restarted.watermark((1, 0)), 6);
    }
}
