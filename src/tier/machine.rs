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
//! Applying is also **idempotent**: after a crash the driver rebuilds the
//! watermarks from the shard's data (blocks record their origin) and may
//! apply again entries whose appends were already durable; their batches
//! then come out as duplicates and append nothing. That is why the applied
//! index may reach disk after the data it covers.
//!
//! Direct writes are stricter: their seqs were chosen by the leader that
//! proposed them (the group's next seqs as it knew them), and a batch is
//! admitted only when it continues the range exactly. A batch whose seqs
//! are already taken (an earlier leader's write, committed since; or this
//! very entry, applied before a crash) appends nothing and its writer is
//! told to retry ([`Error::Conflict`]), so two different writes never share
//! an id and a write is never stored under another's.

use std::collections::BTreeMap;

use super::Error;
use crate::limits::ARCHIVE_PAIRS_MAX;
use crate::replication::watermark::{admit, Admission};

/// An origin pair: (node, shard) of the entries' first home.
pub type Pair = (u32, u32);

/// The archive's watermarks on one replica of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    watermarks: BTreeMap<Pair, u64>,
}

impl Machine {
    /// A machine at `watermarks` (rebuilt from the shard's data at start).
    pub fn new(watermarks: BTreeMap<Pair, u64>) -> Machine {
        Machine { watermarks }
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
        }
    }

    /// Raises watermarks to at least `other`'s: what installing a snapshot
    /// does once its batches are durable.
    pub fn raise_to(&mut self, other: &BTreeMap<Pair, u64>) {
        for (&pair, &seq) in other {
            let watermark = self.watermarks.entry(pair).or_insert(0);
            *watermark = (*watermark).max(seq);
        }
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
    fn applying_twice_is_a_no_op() {
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
        let mut machine = Machine::new(BTreeMap::from([((1, 0), 10), ((2, 0), 3)]));
        machine.raise_to(&BTreeMap::from([((1, 0), 7), ((2, 0), 8), ((3, 0), 1)]));
        assert_eq!(machine.watermarks(), &BTreeMap::from([((1, 0), 10), ((2, 0), 8), ((3, 0), 1)]));
    }
}
