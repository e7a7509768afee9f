//! The leader's archive of one (follower, follower shard) pair, as a
//! sans-I/O state machine: batches queue in arrival order, are admitted
//! against the pair's watermark ([`watermark::admit`]) in groups, and the
//! fresh entries of a group go to storage as one append. The machine never
//! touches a disk, a clock or a channel: it says what to do next
//! ([`PairArchive::poll`]) and the driver does it and reports back.
//!
//! # The rules (those of the archive's group commit)
//!
//! - Batches are handled in arrival order. A **group** is everything queued
//!   when the previous group finished; batches that arrive while a group is
//!   being committed form the next group.
//! - The watermark (highest durable archived seq) is unknown until the
//!   driver loads it from the durable data ([`Step::LoadWatermark`]), which
//!   is asked for at the start of a group. If the load fails, every batch of
//!   the group gets the load's error; the next group asks again.
//! - A group is committed in **chunks**: batches in order while their bytes
//!   fit [`ARCHIVE_GROUP_BYTES_MAX`] (a batch larger than that goes alone).
//!   Each batch of a chunk is admitted against the running expected seq; a
//!   refused batch gets its refusal ([`Error::Malformed`] or [`Error::Gap`])
//!   and does not stop the chunk. The fresh entries of all admitted batches go to storage as
//!   **one** append ([`Step::Append`]), all or nothing.
//! - On success the watermark advances to the chunk's end, and each
//!   admitted batch is acknowledged ([`Ack`]): `acked_seq` is the end of the
//!   last fresh batch up to it in the chunk (a chunk's batches before the
//!   first fresh one get the chunk's end), `written` and `duplicates` count
//!   its entries.
//! - On failure the watermark stays, every batch of the chunk gets the
//!   append's error, and the rest of the group, not yet admitted, gets
//!   [`Error::Aborted`]: nothing behind a failed append was
//!   appended, so the archive never gets a hole.
//!
//! An ack never names a seq above the watermark, which only advances when
//! the driver reports an append durable ([`PairArchive::append_done`] with
//! `Ok`), so nothing acknowledged can be lost; every batch is admitted
//! against the running watermark and only one append is outstanding, so
//! nothing is archived twice.
//!
//! # Driving it
//!
//! One machine per pair, on the pair's owner core. The driver:
//! 1. [`PairArchive::enqueue`]s each pushed batch with its reply token (a
//!    oneshot sender), synchronously, so a stream's batches queue in stream
//!    order; and if no committer task runs for the pair, starts one.
//! 2. The committer loops on [`PairArchive::poll`] and does what it says:
//!    - [`Step::Reply`]: send the result to the token (the ack becomes a
//!      `PushAck` with the pair's shard);
//!    - [`Step::LoadWatermark`]: read the pair's watermark from every shard
//!      (the origin watermarks of the archived blocks), then call
//!      [`PairArchive::watermark_loaded`];
//!    - [`Step::Append`]: append [`PairArchive::fresh_parts_mut`] with origin
//!      `(follower, shard, first_seq)` as one append, wait until it is
//!      durable (or failed), then call [`PairArchive::append_done`];
//!    - [`Step::Idle`]: nothing to do; the committer ends (the next enqueue
//!      starts one again).
//!
//!    Only the committer does I/O for the pair, so at most one load or
//!    append is outstanding; while it is, `poll` answers `Idle`.
//! 3. `GetWatermark` asks [`PairArchive::watermark`]; when it is unknown,
//!    the driver loads it itself and offers the value with
//!    [`PairArchive::watermark_read`], which keeps a value already known: a
//!    load that started before an append and finished after it would
//!    otherwise lower the watermark, and the next batch would be archived a
//!    second time.
//!
//! Errors are the layer's [`Error`]: the refusals of [`watermark::admit`],
//! the driver's load and append errors as it reports them, and
//! [`Error::Aborted`].

use std::collections::VecDeque;

use super::watermark::{self, Admission};
use super::Error;
use crate::limits::ARCHIVE_GROUP_BYTES_MAX;

/// What the archive needs to know of a pushed batch (the driver's batch
/// type; tests use plain vectors).
pub trait Batch {
    /// Origin seqs of the batch's entries, in batch order.
    fn seqs(&self) -> impl Iterator<Item = u64> + '_;
    /// Size that counts against [`ARCHIVE_GROUP_BYTES_MAX`].
    fn bytes(&self) -> usize;
}

impl Batch for super::batch::PushedBatch {
    fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        super::batch::PushedBatch::seqs(self)
    }

    fn bytes(&self) -> usize {
        self.message_bytes()
    }
}

/// A batch's acknowledgement: its entries are durable in the archive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ack {
    /// Every seq up to this one is durably archived (at least the batch's
    /// last seq).
    pub acked_seq: u64,
    /// Entries of the batch archived now.
    pub written: u64,
    /// Entries of the batch that were already archived (skipped).
    pub duplicates: u64,
}

/// The archive counters of one pair, for stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairReport {
    /// Highest archived seq (0 while unknown).
    pub watermark: u64,
    /// Entries archived since this machine was created.
    pub written: u64,
    /// Entries skipped as already archived since this machine was created.
    pub duplicates: u64,
}

/// What the driver does next (see the module doc).
#[derive(Debug)]
pub enum Step<R> {
    /// Send `result` to `reply`.
    Reply {
        /// The token given to [`PairArchive::enqueue`] with the batch.
        reply: R,
        /// The batch's outcome.
        result: Result<Ack, Error>,
    },
    /// Load the watermark from the durable data, then call
    /// [`PairArchive::watermark_loaded`].
    LoadWatermark,
    /// Append [`PairArchive::fresh_parts_mut`] as one append whose origin
    /// seqs are `first_seq .. first_seq + entries`, wait until it is durable
    /// or failed, then call [`PairArchive::append_done`].
    Append {
        /// Origin seq of the first fresh entry (`watermark + 1`).
        first_seq: u64,
        /// Fresh entries over all parts (at least 1).
        entries: u64,
    },
    /// Nothing to do until a batch is enqueued or the outstanding load or
    /// append completes.
    Idle,
}

/// The I/O the machine waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Io {
    None,
    LoadingWatermark,
    /// An append whose success makes the watermark `watermark_after`.
    Appending {
        watermark_after: u64,
    },
}

/// A batch of the chunk being committed, with its admission.
struct Admitted<B, R> {
    batch: B,
    reply: R,
    admission: Result<Admission, Error>,
}

/// The archive state machine of one pair. `B` is the driver's batch, `R`
/// its reply token.
pub struct PairArchive<B, R> {
    group_bytes_max: usize,
    /// Batches that arrived after the current group was taken.
    queue: VecDeque<(B, R)>,
    /// The current group's batches not yet in a chunk.
    group: VecDeque<(B, R)>,
    /// The chunk being appended (admitted and refused batches, in order).
    chunk: Vec<Admitted<B, R>>,
    io: Io,
    /// Highest durable archived seq; `None` until loaded.
    watermark: Option<u64>,
    written: u64,
    duplicates: u64,
    /// Outcomes not yet handed to the driver, in order.
    replies: VecDeque<(R, Result<Ack, Error>)>,
}

impl<B: Batch, R> Default for PairArchive<B, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Batch, R> PairArchive<B, R> {
    /// A pair whose watermark is not known yet, with chunks bounded by
    /// [`ARCHIVE_GROUP_BYTES_MAX`].
    pub fn new() -> Self {
        Self::with_group_bytes_max(ARCHIVE_GROUP_BYTES_MAX)
    }

    /// Like [`PairArchive::new`] with another chunk bound (tests and the
    /// simulator use small ones to get many chunks).
    pub fn with_group_bytes_max(group_bytes_max: usize) -> Self {
        assert!(group_bytes_max > 0, "a chunk must hold at least some bytes");
        PairArchive {
            group_bytes_max,
            queue: VecDeque::new(),
            group: VecDeque::new(),
            chunk: Vec::new(),
            io: Io::None,
            watermark: None,
            written: 0,
            duplicates: 0,
            replies: VecDeque::new(),
        }
    }

    /// Queues a batch; its outcome comes out of [`PairArchive::poll`] as a
    /// [`Step::Reply`] with `reply`. The queue is not bounded here: the
    /// driver bounds the bytes it holds in flight.
    pub fn enqueue(&mut self, batch: B, reply: R) {
        self.queue.push_back((batch, reply));
    }

    /// The next thing to do. Replies come first, in the order the rules
    /// produce them; then the next load or append, if none is outstanding.
    pub fn poll(&mut self) -> Step<R> {
        loop {
            if let Some((reply, result)) = self.replies.pop_front() {
                return Step::Reply { reply, result };
            }
            if self.io != Io::None {
                return Step::Idle;
            }
            if self.group.is_empty() {
                if self.queue.is_empty() {
                    return Step::Idle;
                }
                std::mem::swap(&mut self.group, &mut self.queue);
                if self.watermark.is_none() {
                    self.io = Io::LoadingWatermark;
                    return Step::LoadWatermark;
                }
            }
            let watermark = self.watermark.expect("a group is only admitted once the watermark is known");
            let watermark_after = self.admit_chunk(watermark);
            if watermark_after > watermark {
                self.io = Io::Appending { watermark_after };
                return Step::Append { first_seq: watermark + 1, entries: watermark_after - watermark };
            }
            // Duplicates and refusals only: nothing to write.
            self.finish_chunk(watermark_after, Ok(()));
        }
    }

    /// Moves the next chunk of the group into `self.chunk`, admitting each
    /// batch against the running expected seq; returns the watermark the
    /// chunk's append would reach.
    fn admit_chunk(&mut self, watermark: u64) -> u64 {
        debug_assert!(self.chunk.is_empty());
        let mut expected = watermark;
        let mut bytes = 0usize;
        while let Some((batch, _)) = self.group.front() {
            if !self.chunk.is_empty() && bytes.saturating_add(batch.bytes()) > self.group_bytes_max {
                break;
            }
            bytes = bytes.saturating_add(batch.bytes());
            let (batch, reply) = self.group.pop_front().expect("front() was Some");
            let admission = watermark::admit(expected, batch.seqs());
            if let Ok(admission) = &admission {
                expected += admission.fresh as u64;
            }
            self.chunk.push(Admitted { batch, reply, admission });
        }
        expected
    }

    /// The parts of the append asked for by [`Step::Append`]: each admitted
    /// batch of the chunk, in order, with how many of its leading entries to
    /// skip (duplicates). A batch may have nothing fresh (skip = its
    /// length). Their fresh entries are the origin seqs
    /// `first_seq .. first_seq + entries`, dense, in this order.
    pub fn fresh_parts_mut(&mut self) -> impl Iterator<Item = (&mut B, usize)> + '_ {
        assert!(matches!(self.io, Io::Appending { .. }), "fresh parts are only asked for during an append");
        self.chunk.iter_mut().filter_map(|admitted| match &admitted.admission {
            Ok(admission) => Some((&mut admitted.batch, admission.duplicates)),
            Err(_) => None,
        })
    }

    /// The append asked for by [`Step::Append`] is durable (`Ok`) or failed
    /// (its data is then not acknowledged, and must not be counted in the
    /// watermark until a reload finds it durable).
    pub fn append_done(&mut self, result: Result<(), Error>) {
        let Io::Appending { watermark_after } = self.io else {
            panic!("append_done without an outstanding append");
        };
        self.io = Io::None;
        self.finish_chunk(watermark_after, result);
    }

    /// Answers every batch of the chunk once its append (if any) is over.
    fn finish_chunk(&mut self, watermark_after: u64, outcome: Result<(), Error>) {
        let watermark = self.watermark.expect("a chunk is only admitted once the watermark is known");
        let mut acked = watermark;
        if outcome.is_ok() {
            assert!(watermark_after >= watermark, "the watermark never goes back");
            self.watermark = Some(watermark_after);
            acked = watermark_after;
        }
        for Admitted { batch: _, reply, admission } in self.chunk.drain(..) {
            let result = match (&outcome, admission) {
                (Err(error), _) => Err(error.clone()),
                (Ok(()), Err(refusal)) => Err(refusal),
                (Ok(()), Ok(admission)) => {
                    self.written += admission.fresh as u64;
                    self.duplicates += admission.duplicates as u64;
                    if admission.fresh > 0 {
                        acked = admission.watermark_after();
                    }
                    Ok(Ack {
                        acked_seq: acked,
                        written: admission.fresh as u64,
                        duplicates: admission.duplicates as u64,
                    })
                }
            };
            self.replies.push_back((reply, result));
        }
        if outcome.is_err() {
            for (_, reply) in self.group.drain(..) {
                self.replies.push_back((reply, Err(Error::Aborted)));
            }
        }
    }

    /// The load asked for by [`Step::LoadWatermark`] finished. A value is
    /// kept only if the watermark is still unknown (see
    /// [`PairArchive::watermark_read`]); an error fails the whole group.
    pub fn watermark_loaded(&mut self, result: Result<u64, Error>) {
        assert_eq!(self.io, Io::LoadingWatermark, "watermark_loaded without an outstanding load");
        self.io = Io::None;
        match result {
            Ok(watermark) => {
                self.watermark.get_or_insert(watermark);
            }
            Err(error) => {
                for (_, reply) in self.group.drain(..) {
                    self.replies.push_back((reply, Err(error.clone())));
                }
            }
        }
    }

    /// Offers a watermark the driver read from the durable data on its own
    /// (for `GetWatermark`); returns the pair's watermark, which is the
    /// offered one only if none was known. A known watermark is never
    /// replaced: the read may have started before an append this machine
    /// has since completed.
    pub fn watermark_read(&mut self, watermark: u64) -> u64 {
        *self.watermark.get_or_insert(watermark)
    }

    /// Highest durable archived seq, if known.
    pub fn watermark(&self) -> Option<u64> {
        self.watermark
    }

    /// Batches queued or being committed, replies not yet polled included.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.group.len() + self.chunk.len() + self.replies.len()
    }

    /// The pair's counters.
    pub fn report(&self) -> PairReport {
        PairReport { watermark: self.watermark.unwrap_or(0), written: self.written, duplicates: self.duplicates }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A test batch: its seqs and a size.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct TestBatch {
        seqs: Vec<u64>,
        bytes: usize,
    }

    impl Batch for TestBatch {
        fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
            self.seqs.iter().copied()
        }

        fn bytes(&self) -> usize {
            self.bytes
        }
    }

    fn batch(seqs: impl IntoIterator<Item = u64>) -> TestBatch {
        TestBatch { seqs: seqs.into_iter().collect(), bytes: 1 }
    }

    type Machine = PairArchive<TestBatch, u32>;
    /// An outcome, with the error as its message (errors are not `Eq`).
    type Outcome = Result<Ack, String>;

    fn outcome(result: Result<Ack, Error>) -> Outcome {
        result.map_err(|error| error.to_string())
    }

    /// A storage error standing for any the driver reports.
    fn storage(what: &str) -> Error {
        Error::Exhausted(what.to_string())
    }

    /// What `poll` said, without the reply (the only step with an error).
    #[derive(Debug, PartialEq, Eq)]
    enum Io {
        Load,
        Append { first_seq: u64, entries: u64 },
        Idle,
    }

    /// Polls until it is not a reply, collecting replies, and returns the
    /// I/O step (or idleness) that stopped it.
    fn drain(machine: &mut Machine) -> (Vec<(u32, Outcome)>, Io) {
        let mut replies = Vec::new();
        loop {
            match machine.poll() {
                Step::Reply { reply, result } => replies.push((reply, outcome(result))),
                Step::LoadWatermark => return (replies, Io::Load),
                Step::Append { first_seq, entries } => return (replies, Io::Append { first_seq, entries }),
                Step::Idle => return (replies, Io::Idle),
            }
        }
    }

    fn ack(acked_seq: u64, written: u64, duplicates: u64) -> Outcome {
        Ok(Ack { acked_seq, written, duplicates })
    }

    /// The fresh seqs of the outstanding append, in part order.
    fn fresh_seqs(machine: &mut Machine) -> Vec<u64> {
        machine.fresh_parts_mut().flat_map(|(batch, skip)| batch.seqs[skip..].to_vec()).collect()
    }

    #[test]
    fn the_first_group_loads_the_watermark_then_appends_once() {
        let mut machine = Machine::new();
        assert!(matches!(machine.poll(), Step::Idle));
        machine.enqueue(batch(1..=3), 1);
        machine.enqueue(batch(4..=5), 2);
        assert_eq!(drain(&mut machine), (vec![], Io::Load));
        assert!(matches!(machine.poll(), Step::Idle), "one I/O at a time");
        machine.watermark_loaded(Ok(0));
        assert_eq!(drain(&mut machine), (vec![], Io::Append { first_seq: 1, entries: 5 }));
        assert_eq!(fresh_seqs(&mut machine), vec![1, 2, 3, 4, 5]);
        // Not acknowledged before the append is durable.
        assert!(matches!(machine.poll(), Step::Idle));
        assert_eq!(machine.watermark(), Some(0));
        machine.append_done(Ok(()));
        assert_eq!(drain(&mut machine), (vec![(1, ack(3, 3, 0)), (2, ack(5, 2, 0))], Io::Idle));
        assert_eq!(machine.report(), PairReport { watermark: 5, written: 5, duplicates: 0 });
    }

    #[test]
    fn duplicates_are_skipped_and_a_resend_needs_no_append() {
        let mut machine = Machine::new();
        machine.enqueue(batch(8..=12), 1);
        assert_eq!(drain(&mut machine).1, Io::Load);
        machine.watermark_loaded(Ok(10));
        assert_eq!(drain(&mut machine).1, Io::Append { first_seq: 11, entries: 2 });
        assert_eq!(fresh_seqs(&mut machine), vec![11, 12]);
        machine.append_done(Ok(()));
        assert_eq!(drain(&mut machine).0, vec![(1, ack(12, 2, 3))]);
        machine.enqueue(batch(5..=12), 2);
        assert_eq!(drain(&mut machine), (vec![(2, ack(12, 0, 8))], Io::Idle));
        assert_eq!(machine.report(), PairReport { watermark: 12, written: 2, duplicates: 11 });
    }

    #[test]
    fn a_refused_batch_does_not_stop_its_chunk() {
        let mut machine = Machine::new();
        machine.enqueue(batch(1..=2), 1);
        machine.enqueue(batch(5..=6), 2); // gap: expected 3
        machine.enqueue(batch([3, 3]), 3); // malformed
        machine.enqueue(batch(3..=4), 4);
        assert_eq!(drain(&mut machine).1, Io::Load);
        machine.watermark_loaded(Ok(0));
        assert_eq!(drain(&mut machine).1, Io::Append { first_seq: 1, entries: 4 });
        assert_eq!(fresh_seqs(&mut machine), vec![1, 2, 3, 4]);
        machine.append_done(Ok(()));
        let (replies, step) = drain(&mut machine);
        assert_eq!(step, Io::Idle);
        assert_eq!(replies[0], (1, ack(2, 2, 0)));
        assert_eq!(replies[1], (2, Err(Error::Gap { expected: 3, got: 5 }.to_string())));
        assert!(replies[2].1.as_ref().is_err_and(|error| error.contains("strictly increasing")), "{replies:?}");
        assert_eq!(replies[3], (4, ack(4, 2, 0)));
    }

    #[test]
    fn a_failed_append_fails_its_chunk_aborts_the_group_and_keeps_the_watermark() {
        let mut machine = Machine::with_group_bytes_max(2);
        machine.watermark_read(0);
        for (index, seqs) in [1..=1, 2..=2, 3..=3, 4..=4].into_iter().enumerate() {
            machine.enqueue(TestBatch { seqs: seqs.collect(), bytes: 1 }, index as u32);
        }
        // A refused batch inside the failing chunk gets the append's error too.
        machine.enqueue(batch([9]), 9);
        // First chunk: batches 0 and 1 (2 bytes).
        assert_eq!(drain(&mut machine).1, Io::Append { first_seq: 1, entries: 2 });
        machine.append_done(Ok(()));
        assert_eq!(
            drain(&mut machine),
            (vec![(0, ack(1, 1, 0)), (1, ack(2, 1, 0))], Io::Append { first_seq: 3, entries: 2 })
        );
        // Arrives during the second append: next group.
        machine.enqueue(batch(3..=3), 10);
        machine.append_done(Err(storage("EIO")));
        let (replies, step) = drain(&mut machine);
        let failed = Err("EIO".to_string());
        assert_eq!(replies, vec![(2, failed.clone()), (3, failed), (9, Err(Error::Aborted.to_string()))]);
        assert_eq!(machine.watermark(), Some(2), "a failed append leaves the watermark");
        // The next group starts from the unchanged watermark.
        assert_eq!(step, Io::Append { first_seq: 3, entries: 1 });
        machine.append_done(Ok(()));
        assert_eq!(drain(&mut machine), (vec![(10, ack(3, 1, 0))], Io::Idle));
    }

    #[test]
    fn a_batch_larger_than_the_bound_goes_alone() {
        let mut machine = Machine::with_group_bytes_max(10);
        machine.watermark_read(0);
        machine.enqueue(TestBatch { seqs: vec![1], bytes: 4 }, 1);
        machine.enqueue(TestBatch { seqs: vec![2], bytes: 50 }, 2);
        machine.enqueue(TestBatch { seqs: vec![3], bytes: 6 }, 3);
        machine.enqueue(TestBatch { seqs: vec![4], bytes: 4 }, 4);
        for (first_seq, entries) in [(1, 1), (2, 1), (3, 2)] {
            assert_eq!(drain(&mut machine).1, Io::Append { first_seq, entries });
            machine.append_done(Ok(()));
        }
        assert_eq!(drain(&mut machine).0.len(), 2);
        assert_eq!(machine.watermark(), Some(4));
    }

    #[test]
    fn a_failed_load_fails_the_group_and_the_next_group_loads_again() {
        let mut machine = Machine::new();
        machine.enqueue(batch(1..=1), 1);
        assert_eq!(drain(&mut machine).1, Io::Load);
        machine.enqueue(batch(2..=2), 2); // next group
        machine.watermark_loaded(Err(Error::ShuttingDown));
        let (replies, step) = drain(&mut machine);
        assert_eq!(replies, vec![(1, Err("shutting down".to_string()))]);
        assert_eq!(step, Io::Load);
        machine.watermark_loaded(Ok(1));
        assert_eq!(drain(&mut machine).1, Io::Append { first_seq: 2, entries: 1 });
    }

    #[test]
    fn a_stale_watermark_never_replaces_a_known_one() {
        let mut machine = Machine::new();
        machine.enqueue(batch(1..=4), 1);
        assert_eq!(drain(&mut machine).1, Io::Load);
        machine.watermark_loaded(Ok(0));
        assert_eq!(drain(&mut machine).1, Io::Append { first_seq: 1, entries: 4 });
        machine.append_done(Ok(()));
        drain(&mut machine);
        // A GetWatermark load that read 0 before the append finishes now.
        assert_eq!(machine.watermark_read(0), 4);
        machine.enqueue(batch(1..=4), 2);
        assert_eq!(drain(&mut machine), (vec![(2, ack(4, 0, 4))], Io::Idle));
    }

    #[test]
    fn a_duplicate_only_batch_first_in_a_chunk_is_acked_with_the_chunks_end() {
        // Today's rule, kept as is: its ack may exceed a later fresh batch's.
        let mut machine = Machine::new();
        machine.watermark_read(4);
        machine.enqueue(batch(1..=4), 1);
        machine.enqueue(batch(5..=6), 2);
        machine.enqueue(batch(7..=9), 3);
        assert_eq!(drain(&mut machine).1, Io::Append { first_seq: 5, entries: 5 });
        machine.append_done(Ok(()));
        assert_eq!(drain(&mut machine).0, vec![(1, ack(9, 0, 4)), (2, ack(6, 2, 0)), (3, ack(9, 3, 0))]);
    }

    // --- Equivalence with the glommio committer of leader.rs ----------------

    /// What the reference and the machine do when they need I/O.
    #[derive(Clone, Copy, Debug)]
    enum IoOutcome {
        Ok,
        Fail,
    }

    /// A straight transcription of `commit_loop` + `commit_group` of
    /// `leader.rs` (synchronous I/O through `io`), the semantics the
    /// machine must keep. `io(load?)` runs at each load or append and may
    /// queue more batches (arrivals during I/O).
    fn reference(
        queue: &std::cell::RefCell<VecDeque<(TestBatch, u32)>>,
        group_bytes_max: usize,
        durable_watermark: &std::cell::Cell<u64>,
        io: &mut dyn FnMut(bool) -> IoOutcome,
        appended: &mut Vec<u64>,
        replies: &mut Vec<(u32, Outcome)>,
        pair_watermark: &mut Option<u64>,
    ) {
        loop {
            let group: Vec<(TestBatch, u32)> = std::mem::take(&mut *queue.borrow_mut()).into();
            if group.is_empty() {
                return;
            }
            let mut watermark = match *pair_watermark {
                Some(watermark) => watermark,
                None => match io(true) {
                    IoOutcome::Ok => {
                        *pair_watermark = Some(durable_watermark.get());
                        durable_watermark.get()
                    }
                    IoOutcome::Fail => {
                        for (_, reply) in group {
                            replies.push((reply, Err("io".to_string())));
                        }
                        continue;
                    }
                },
            };
            let mut group = group.into_iter().peekable();
            'group: while group.peek().is_some() {
                let mut admitted: Vec<((TestBatch, u32), Result<Admission, Error>)> = Vec::new();
                let mut expected = watermark;
                let mut bytes = 0usize;
                while let Some((batch, _)) = group.peek() {
                    if !admitted.is_empty() && bytes + batch.bytes > group_bytes_max {
                        break;
                    }
                    bytes += batch.bytes;
                    let queued = group.next().unwrap();
                    let admission = watermark::admit(expected, queued.0.seqs.iter().copied());
                    if let Ok(admission) = &admission {
                        expected += admission.fresh as u64;
                    }
                    admitted.push((queued, admission));
                }
                let outcome = if expected > watermark {
                    match io(false) {
                        IoOutcome::Ok => {
                            for ((batch, _), admission) in &admitted {
                                if let Ok(admission) = admission {
                                    appended.extend(&batch.seqs[admission.duplicates..]);
                                }
                            }
                            durable_watermark.set(expected);
                            Ok(())
                        }
                        IoOutcome::Fail => Err("io".to_string()),
                    }
                } else {
                    Ok(())
                };
                let failed = outcome.is_err();
                if !failed {
                    watermark = expected;
                    *pair_watermark = Some(watermark);
                }
                let mut acked = watermark;
                for ((_, reply), admission) in admitted {
                    let result = match (&outcome, admission) {
                        (Err(error), _) => Err(error.clone()),
                        (Ok(()), Err(refusal)) => Err(refusal.to_string()),
                        (Ok(()), Ok(admission)) => {
                            if admission.fresh > 0 {
                                acked = admission.watermark_after();
                            }
                            Ok(Ack {
                                acked_seq: acked,
                                written: admission.fresh as u64,
                                duplicates: admission.duplicates as u64,
                            })
                        }
                    };
                    replies.push((reply, result));
                }
                if failed {
                    for (_, reply) in group.by_ref() {
                        replies.push((reply, Err(Error::Aborted.to_string())));
                    }
                    break 'group;
                }
            }
        }
    }

    /// Batches as (start, len, bytes), delivered in rounds: round 0 first,
    /// round k+1 while the k-th I/O is outstanding (or when idle).
    type Rounds = Vec<Vec<(u64, u64, usize)>>;

    fn to_batches(round: &[(u64, u64, usize)], next_id: &mut u32) -> Vec<(TestBatch, u32)> {
        round
            .iter()
            .map(|&(start, len, bytes)| {
                *next_id += 1;
                (TestBatch { seqs: (start..start + len).collect(), bytes }, *next_id)
            })
            .collect()
    }

    fn run_reference(rounds: &Rounds, outcomes: &[bool], group_bytes_max: usize) -> (Vec<u64>, Vec<(u32, Outcome)>) {
        let queue = std::cell::RefCell::new(VecDeque::new());
        let durable = std::cell::Cell::new(0);
        let mut next_id = 0;
        let mut rounds_left = rounds.iter();
        let mut outcomes_left = outcomes.iter().cycle();
        let (mut appended, mut replies, mut pair_watermark) = (Vec::new(), Vec::new(), None);
        queue.borrow_mut().extend(to_batches(rounds_left.next().unwrap(), &mut next_id));
        loop {
            let mut io = |_load: bool| {
                if let Some(round) = rounds_left.next() {
                    queue.borrow_mut().extend(to_batches(round, &mut next_id));
                }
                if *outcomes_left.next().unwrap() {
                    IoOutcome::Ok
                } else {
                    IoOutcome::Fail
                }
            };
            reference(&queue, group_bytes_max, &durable, &mut io, &mut appended, &mut replies, &mut pair_watermark);
            match rounds_left.next() {
                Some(round) => queue.borrow_mut().extend(to_batches(round, &mut next_id)),
                None => return (appended, replies),
            }
        }
    }

    fn run_machine(rounds: &Rounds, outcomes: &[bool], group_bytes_max: usize) -> (Vec<u64>, Vec<(u32, Outcome)>) {
        let mut machine = Machine::with_group_bytes_max(group_bytes_max);
        let mut durable = 0u64;
        let mut next_id = 0;
        let mut rounds_left = rounds.iter();
        let mut outcomes_left = outcomes.iter().cycle();
        let (mut appended, mut replies) = (Vec::new(), Vec::new());
        for (batch, reply) in to_batches(rounds_left.next().unwrap(), &mut next_id) {
            machine.enqueue(batch, reply);
        }
        loop {
            let step = machine.poll();
            if !matches!(step, Step::Reply { .. }) {
                // Arrivals during I/O, or when idle.
                if let Some(round) = rounds_left.next() {
                    for (batch, reply) in to_batches(round, &mut next_id) {
                        machine.enqueue(batch, reply);
                    }
                } else if matches!(step, Step::Idle) {
                    return (appended, replies);
                }
            }
            match step {
                Step::Reply { reply, result } => replies.push((reply, outcome(result))),
                Step::Idle => {}
                Step::LoadWatermark => {
                    let ok = *outcomes_left.next().unwrap();
                    machine.watermark_loaded(if ok { Ok(durable) } else { Err(storage("io")) });
                }
                Step::Append { first_seq, entries } => {
                    let seqs = fresh_seqs(&mut machine);
                    assert_eq!(seqs, (first_seq..first_seq + entries).collect::<Vec<_>>());
                    if *outcomes_left.next().unwrap() {
                        appended.extend(seqs);
                        durable = first_seq + entries - 1;
                        machine.append_done(Ok(()));
                    } else {
                        machine.append_done(Err(storage("io")));
                    }
                }
            }
        }
    }

    proptest::proptest! {
        /// Any arrival pattern and any I/O outcomes give exactly the
        /// replies (in order) and appends of today's committer.
        #[test]
        fn the_machine_commits_exactly_as_the_glommio_committer(
            rounds in proptest::collection::vec(
                proptest::collection::vec((1u64..30, 0u64..8, 1usize..6), 0..6), 1..8),
            outcomes in proptest::collection::vec(proptest::bool::weighted(0.8), 1..10),
            group_bytes_max in 1usize..12,
        ) {
            let (reference_appended, reference_replies) = run_reference(&rounds, &outcomes, group_bytes_max);
            let (appended, replies) = run_machine(&rounds, &outcomes, group_bytes_max);
            proptest::prop_assert_eq!(&replies, &reference_replies);
            proptest::prop_assert_eq!(&appended, &reference_appended);
            // And the exactly-once rule holds: the appends are 1..=n.
            let dense: Vec<u64> = (1..=appended.len() as u64).collect();
            proptest::prop_assert_eq!(appended, dense);
        }
    }
}
