//! The exactly-once rule of the archive, as a pure function of the
//! watermark and a batch's seqs (no I/O, no clocks): which entries of a
//! pushed batch are duplicates, which are new, and when a batch must be
//! refused.
//!
//! A follower shard's seqs are dense from 1, so the archive of one
//! (follower, shard) pair is always the contiguous range `1..=watermark`.
//! A batch is accepted when it continues that range: its leading entries
//! at or below the watermark are duplicates (a resend after a lost ack),
//! and the rest must be exactly `watermark + 1, watermark + 2, …`. Anything
//! else would leave a hole or a repeat in the archive and is refused.

use super::Error;

/// What to do with a batch whose seqs passed [`admit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Leading entries already archived: skip them (counted as duplicates).
    pub duplicates: usize,
    /// Entries to archive: the batch's entries from index `duplicates` on.
    pub fresh: usize,
    /// Origin seq of the first fresh entry (`watermark + 1`).
    pub first_seq: u64,
}

impl Admission {
    /// The watermark once the fresh entries are archived.
    pub fn watermark_after(&self) -> u64 {
        self.first_seq + self.fresh as u64 - 1
    }
}

/// Decides what the archive does with a batch whose entries carry `seqs`,
/// given the pair's current `watermark` (highest archived seq, 0 if none).
///
/// - seqs not strictly increasing, or a seq of 0: `INVALID_ARGUMENT`
///   (anywhere in the batch, even after a gap);
/// - every seq at or below the watermark: all duplicates, nothing fresh;
/// - the first seq above the watermark is not `watermark + 1`, or the
///   fresh part skips a seq: `FAILED_PRECONDITION` naming the expected seq,
///   so the follower resumes there.
pub fn admit(watermark: u64, seqs: impl IntoIterator<Item = u64>) -> Result<Admission, Error> {
    let mut duplicates = 0usize;
    let mut fresh = 0usize;
    let mut previous = 0u64;
    // The first gap is only reported once the whole batch is known to be
    // well-formed: a malformed batch is INVALID_ARGUMENT whatever the
    // watermark (gRPC's rule for the two codes), so `[1, 3, 2]` is refused
    // as out of order, not as a gap the follower would resume from.
    let mut first_gap = None;
    for (index, seq) in seqs.into_iter().enumerate() {
        if seq <= previous {
            return Err(Error::Malformed(format!(
                "entry {index}: seq {seq} does not follow {previous}: seqs of a batch must be strictly increasing and \
                 start at 1"
            )));
        }
        previous = seq;
        if seq <= watermark {
            duplicates += 1;
            continue;
        }
        let expected = watermark + 1 + fresh as u64;
        if first_gap.is_none() && seq != expected {
            first_gap = Some((expected, seq));
        }
        fresh += 1;
    }
    if let Some((expected, got)) = first_gap {
        return Err(Error::Gap { expected, got });
    }
    Ok(Admission { duplicates, fresh, first_seq: watermark + 1 })
}

/// Reads the expected seq back out of the message of an [`Error::Gap`]
/// refusal (what a follower does with the message of a
/// `FAILED_PRECONDITION`).
pub fn expected_seq_of(message: &str) -> Option<u64> {
    let rest = message.strip_prefix("gap: expected seq ")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_that_continues_the_archive_is_all_fresh() {
        let admission = admit(0, 1..=5).unwrap();
        assert_eq!(admission, Admission { duplicates: 0, fresh: 5, first_seq: 1 });
        assert_eq!(admission.watermark_after(), 5);
        assert_eq!(admit(7, 8..=8).unwrap(), Admission { duplicates: 0, fresh: 1, first_seq: 8 });
    }

    #[test]
    fn a_resent_batch_is_all_duplicates() {
        let admission = admit(10, 3..=10).unwrap();
        assert_eq!(admission, Admission { duplicates: 8, fresh: 0, first_seq: 11 });
    }

    #[test]
    fn an_overlapping_batch_skips_its_archived_prefix() {
        let admission = admit(10, 8..=14).unwrap();
        assert_eq!(admission, Admission { duplicates: 3, fresh: 4, first_seq: 11 });
        assert_eq!(admission.watermark_after(), 14);
    }

    #[test]
    fn a_batch_beyond_the_watermark_is_a_gap_naming_the_expected_seq() {
        let error = admit(10, 12..=20).unwrap_err();
        assert!(matches!(error, Error::Gap { expected: 11, got: 12 }), "{error:?}");
        assert_eq!(expected_seq_of(&error.to_string()), Some(11));
    }

    #[test]
    fn a_hole_inside_the_fresh_part_is_a_gap() {
        let error = admit(0, [1, 2, 4]).unwrap_err();
        assert!(matches!(error, Error::Gap { expected: 3, got: 4 }), "{error:?}");
        // Holes among the duplicates do not matter: they are skipped.
        assert_eq!(admit(10, [2, 5, 11]).unwrap(), Admission { duplicates: 2, fresh: 1, first_seq: 11 });
    }

    #[test]
    fn seqs_must_be_strictly_increasing_and_positive() {
        // Out of order after a gap too: the batch is malformed, whatever
        // the watermark.
        for seqs in [vec![3, 3], vec![5, 4], vec![0], vec![1, 2, 2], vec![1, 3, 2], vec![7, 9, 8]] {
            let error = admit(0, seqs.clone()).unwrap_err();
            assert!(matches!(error, Error::Malformed(_)), "{seqs:?}: {error:?}");
        }
    }

    #[test]
    fn an_empty_batch_changes_nothing() {
        assert_eq!(admit(4, []).unwrap(), Admission { duplicates: 0, fresh: 0, first_seq: 5 });
    }

    #[test]
    fn expected_seq_parsing_rejects_other_messages() {
        assert_eq!(expected_seq_of("gap: expected seq 42, got 50"), Some(42));
        assert_eq!(expected_seq_of("something else"), None);
        assert_eq!(expected_seq_of("gap: expected seq x"), None);
    }

    proptest::proptest! {
        /// Replaying any sequence of overlapping, resent or early batches
        /// through `admit` builds exactly the dense archive 1..=n: each seq
        /// archived once, never a hole.
        #[test]
        fn any_push_history_archives_each_seq_exactly_once(
            batches in proptest::collection::vec((1u64..60, 1u64..20), 1..40)
        ) {
            let mut watermark = 0u64;
            let mut archived = Vec::new();
            for (start, len) in batches {
                match admit(watermark, start..start + len) {
                    Ok(admission) => {
                        proptest::prop_assert_eq!(admission.duplicates + admission.fresh, len as usize);
                        archived.extend(admission.first_seq..admission.first_seq + admission.fresh as u64);
                        if admission.fresh > 0 {
                            watermark = admission.watermark_after();
                        }
                    }
                    Err(error) => {
                        let is_gap = matches!(error, Error::Gap { expected, got } if expected == watermark + 1 && got == start);
                        proptest::prop_assert!(is_gap, "{:?}", error);
                        proptest::prop_assert!(start > watermark + 1);
                    }
                }
            }
            let dense: Vec<u64> = (1..=watermark).collect();
            proptest::prop_assert_eq!(archived, dense);
        }
    }
}
