//! A failed disk fails the shard loudly, never silently: one test per
//! storage fault the seam in `shard::faults` injects, each asserting the
//! exact outcome (which appends are acknowledged, the error each one gets,
//! that nothing is retried, one error log line, and what a reopen finds).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};

use wormdb::shard::faults::{Fault, FaultPlan, Faults, Op, Restart};
use wormdb::shard::{EntryRef, Error, Preallocation, SeqRange, Shard, ShardConfig};

/// Everything the tests of this binary logged at warn level and above.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt().with_writer(|| LogSink).with_ansi(false).with_max_level(tracing::Level::WARN).init();
    });
}

/// The error-level lines logged for shard `shard` (each test uses its own
/// shard number, as tests run in parallel).
fn error_lines(shard: u32) -> Vec<String> {
    let logs = LOGS.lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|line| line.contains("ERROR") && line.contains(&format!("shard={shard} ")))
        .map(str::to_owned)
        .collect()
}

/// Small segments; no background zero-filling, so that the only I/O is the
/// commit path's.
fn config(dir: &Path, shard: u32, faults: Option<Arc<Faults>>) -> ShardConfig {
    ShardConfig {
        segment_bytes: wormdb::limits::SEGMENT_BYTES_MIN,
        preallocation: Preallocation::Fallocate,
        faults,
        ..ShardConfig::new(dir, shard)
    }
}

/// `len` bytes that LZ4 cannot shrink, different for each `salt`, so an
/// entry's block spans about `len / 4096` pages.
fn noise(salt: u64, len: usize) -> Vec<u8> {
    let mut state = salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn append(shard: &Shard, body: &[u8]) -> Result<SeqRange, Error> {
    let tags = [("test", "faults")];
    shard.append(&[EntryRef { fields: &[], timestamp_ns: 5, tags: &tags, body }])?.durable().await
}

/// Asserts `error` is the shard's failure by `op` with an EIO.
fn assert_failed_with_eio(error: &Error, shard_id: u32, expected_op: &str, segment: &Path) {
    match error {
        Error::Failed { shard, op, path, source } => {
            assert_eq!(*shard, shard_id, "{error}");
            assert_eq!(*op, expected_op, "{error}");
            assert_eq!(path, segment, "{error}");
            assert_eq!(source.raw_os_error(), Some(libc::EIO), "{error}");
        }
        other => panic!("expected Failed by {expected_op} with EIO, got {other:?}"),
    }
}

fn first_segment(dir: &Path) -> PathBuf {
    dir.join(wormdb::shard::segment::segment_file_name(1))
}

/// Reopens `dir` without faults and checks it holds exactly `bodies` at
/// seqs 1.., then that it takes an append.
async fn reopen_and_check(dir: &Path, shard: u32, bodies: &[Vec<u8>]) -> Shard {
    let reopened = Shard::open(config(dir, shard, None)).await.unwrap();
    assert_eq!(reopened.durable_seq(), bodies.len() as u64);
    let entries = reopened.read_from(1, bodies.len() + 1).await.unwrap();
    assert_eq!(entries.len(), bodies.len());
    for (index, (entry, body)) in entries.iter().zip(bodies).enumerate() {
        assert_eq!(entry.seq, index as u64 + 1);
        assert_eq!(&entry.body[..], &body[..], "seq {}", entry.seq);
    }
    let next = append(&reopened, b"after reopen").await.unwrap();
    assert_eq!(next.first, bodies.len() as u64 + 1, "the reopened shard takes appends");
    reopened
}

#[test]
fn eio_on_a_write_fails_that_commit_and_every_later_append() {
    const SHARD: u32 = 11;
    capture_logs();
    let root = common::durable_temp_dir();
    let dir = root.path().join("shard");
    common::run(move || async move {
        let faults = Faults::new(FaultPlan::new().at(Op::Write, 3, Fault::WriteEio));
        let shard = Shard::open(config(&dir, SHARD, Some(faults.clone()))).await.unwrap();
        let bodies = vec![noise(1, 9000), noise(2, 9000)];
        for (index, body) in bodies.iter().enumerate() {
            assert_eq!(append(&shard, body).await.unwrap().first, index as u64 + 1);
        }
        let failed = append(&shard, &noise(3, 9000)).await.unwrap_err();
        assert_failed_with_eio(&failed, SHARD, "write segment", &first_segment(&dir));
        // Refused at once from now on, with the same cause.
        let refused =
            shard.append(&[EntryRef { fields: &[], timestamp_ns: 5, tags: &[], body: b"later" }]).err().unwrap();
        assert_failed_with_eio(&refused, SHARD, "write segment", &first_segment(&dir));
        assert_eq!(shard.durable_seq(), 2);
        let closed = shard.close().await.unwrap_err();
        assert_failed_with_eio(&closed, SHARD, "write segment", &first_segment(&dir));
        // Nothing was synced after the failure.
        assert_eq!((faults.count(Op::Write), faults.count(Op::Sync)), (3, 2));
        assert_eq!(error_lines(SHARD).len(), 1, "logged once: {:?}", error_lines(SHARD));

        let restarted = faults.restart(Restart::Clean).unwrap();
        assert_eq!((restarted.unsynced_writes, restarted.lost_pages), (0, 0), "{restarted:?}");
        let reopened = reopen_and_check(&dir, SHARD, &bodies).await;
        assert_eq!(reopened.recovery_report().torn_tail, None, "nothing of the failed write landed");
        reopened.close().await.unwrap();
    });
}

#[test]
fn eio_on_fdatasync_fails_the_commit_is_never_retried_and_loses_the_write() {
    const SHARD: u32 = 12;
    capture_logs();
    let root = common::durable_temp_dir();
    let dir = root.path().join("shard");
    common::run(move || async move {
        let faults = Faults::new(FaultPlan::new().at(Op::Sync, 2, Fault::SyncEio));
        let shard = Shard::open(config(&dir, SHARD, Some(faults.clone()))).await.unwrap();
        let bodies = vec![noise(1, 9000)];
        assert_eq!(append(&shard, &bodies[0]).await.unwrap().first, 1);
        let failed = append(&shard, &noise(2, 20_000)).await.unwrap_err();
        assert_failed_with_eio(&failed, SHARD, "fdatasync segment", &first_segment(&dir));
        let refused = append(&shard, b"later").await.unwrap_err();
        assert_failed_with_eio(&refused, SHARD, "fdatasync segment", &first_segment(&dir));
        assert_eq!(shard.durable_seq(), 1);
        assert_eq!(shard.stats().syncs, 1, "only the successful fdatasync counts");
        assert!(shard.close().await.is_err());
        // The failed fdatasync was the last one: never retried.
        assert_eq!((faults.count(Op::Write), faults.count(Op::Sync)), (2, 2));
        assert_eq!(error_lines(SHARD).len(), 1, "logged once: {:?}", error_lines(SHARD));

        // The write completed, but its fdatasync failed: it is lost even
        // though the process stopped cleanly.
        let restarted = faults.restart(Restart::Clean).unwrap();
        assert!(restarted.lost_pages >= 5, "{restarted:?}");
        let reopened = reopen_and_check(&dir, SHARD, &bodies).await;
        assert_eq!(reopened.recovery_report().torn_tail, None, "the lost pages are back to zeros");
        reopened.close().await.unwrap();
    });
}

#[test]
fn a_short_write_fails_the_shard_and_recovery_drops_the_partial_block() {
    const SHARD: u32 = 13;
    capture_logs();
    let root = common::durable_temp_dir();
    let dir = root.path().join("shard");
    common::run(move || async move {
        let faults = Faults::new(FaultPlan::new().at(Op::Write, 2, Fault::ShortWrite { pages: 2 }));
        let shard = Shard::open(config(&dir, SHARD, Some(faults.clone()))).await.unwrap();
        let bodies = vec![noise(1, 9000)];
        let end_of_first = {
            append(&shard, &bodies[0]).await.unwrap();
            4096 + shard.stats().disk_bytes
        };
        let failed = append(&shard, &noise(2, 20_000)).await.unwrap_err();
        match &failed {
            Error::Failed { op: "write segment", source, .. } => {
                assert!(source.to_string().contains("short write: 8192 of 24576"), "{failed}")
            }
            other => panic!("expected a failed write, got {other:?}"),
        }
        assert!(append(&shard, b"later").await.is_err());
        assert!(shard.close().await.is_err());
        assert_eq!(faults.count(Op::Sync), 1);
        assert_eq!(error_lines(SHARD).len(), 1, "logged once: {:?}", error_lines(SHARD));

        // The two pages that landed stay (a clean stop): recovery finds the
        // first block of the failed write cut short and drops it.
        let restarted = faults.restart(Restart::Clean).unwrap();
        assert_eq!(restarted.landed_bytes, 8192, "{restarted:?}");
        let reopened = reopen_and_check(&dir, SHARD, &bodies).await;
        let torn = reopened.recovery_report().torn_tail.clone().expect("a torn tail");
        assert_eq!(torn.offset, end_of_first);
        reopened.close().await.unwrap();
    });
}

#[test]
fn a_torn_write_fails_with_eio_and_recovery_keeps_the_acknowledged_prefix() {
    const SHARD: u32 = 14;
    capture_logs();
    let root = common::durable_temp_dir();
    let dir = root.path().join("shard");
    common::run(move || async move {
        let faults = Faults::new(FaultPlan::new().at(Op::Write, 3, Fault::TornWrite { pages: 3 }));
        let shard = Shard::open(config(&dir, SHARD, Some(faults.clone()))).await.unwrap();
        let bodies = vec![noise(1, 5000), noise(2, 5000)];
        for body in &bodies {
            append(&shard, body).await.unwrap();
        }
        let end_of_acked = 4096 + shard.stats().disk_bytes;
        let failed = append(&shard, &noise(3, 40_000)).await.unwrap_err();
        assert_failed_with_eio(&failed, SHARD, "write segment", &first_segment(&dir));
        assert!(shard.close().await.is_err());
        assert_eq!(faults.count(Op::Sync), 2);
        assert_eq!(error_lines(SHARD).len(), 1, "logged once: {:?}", error_lines(SHARD));

        let restarted = faults.restart(Restart::Clean).unwrap();
        assert_eq!(restarted.landed_bytes, 3 * 4096, "{restarted:?}");
        let reopened = reopen_and_check(&dir, SHARD, &bodies).await;
        let torn = reopened.recovery_report().torn_tail.clone().expect("a torn tail");
        assert_eq!(torn.offset, end_of_acked);
        reopened.close().await.unwrap();
    });
}

#[test]
fn enospc_at_a_roll_refuses_that_append_and_the_shard_stays_healthy() {
    const SHARD: u32 = 15;
    capture_logs();
    let root = common::durable_temp_dir();
    let dir = root.path().join("shard");
    common::run(move || async move {
        let faults = Faults::new(FaultPlan::new().at(Op::CreateSegment, 1, Fault::NoSpace));
        let shard = Shard::open(config(&dir, SHARD, Some(faults.clone()))).await.unwrap();
        let mut bodies = Vec::new();
        let refused = loop {
            let body = noise(bodies.len() as u64, 200_000);
            match append(&shard, &body).await {
                Ok(range) => {
                    assert_eq!(range.first, bodies.len() as u64 + 1);
                    bodies.push(body);
                }
                Err(error) => break error,
            }
            assert!(bodies.len() < 100, "never rolled");
        };
        match &refused {
            Error::DiskFull { op: "create segment", path, source } => {
                assert_eq!(path, &dir.join(wormdb::shard::segment::segment_file_name(bodies.len() as u64 + 1)));
                assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
            }
            other => panic!("expected disk full at the roll, got {other:?}"),
        }
        assert_eq!(shard.stats().segments, 1);
        // Healthy: the next append rolls (the fault hit one creation only)
        // and takes the next seq.
        let body = noise(1000, 200_000);
        assert_eq!(append(&shard, &body).await.unwrap().first, bodies.len() as u64 + 1);
        bodies.push(body);
        assert_eq!(shard.stats().segments, 2);
        shard.close().await.unwrap();
        assert_eq!(faults.count(Op::CreateSegment), 2);
        assert!(error_lines(SHARD).is_empty(), "a full disk is not a failure: {:?}", error_lines(SHARD));

        faults.restart(Restart::PowerLoss { torn_seed: None }).unwrap();
        reopen_and_check(&dir, SHARD, &bodies).await.close().await.unwrap();
    });
}

#[test]
fn power_loss_at_an_fdatasync_keeps_exactly_what_was_acknowledged() {
    const SHARD: u32 = 16;
    capture_logs();
    let root = common::durable_temp_dir();
    let root_path = root.path().to_path_buf();
    common::run(move || async move {
        // Without a torn prefix, then with a few seeds of one.
        for (case, torn_seed) in [None, Some(1), Some(2), Some(3), Some(4)].into_iter().enumerate() {
            let dir = root_path.join(format!("case-{case}"));
            let faults = Faults::new(FaultPlan::new().at(Op::Sync, 3, Fault::PowerLoss));
            let shard = Shard::open(config(&dir, SHARD, Some(faults.clone()))).await.unwrap();
            let mut bodies = vec![noise(1, 7000), noise(2, 7000)];
            for body in &bodies {
                append(&shard, body).await.unwrap();
            }
            let unacknowledged = noise(3, 30_000);
            let failed = append(&shard, &unacknowledged).await.unwrap_err();
            assert_failed_with_eio(&failed, SHARD, "fdatasync segment", &first_segment(&dir));
            assert!(shard.close().await.is_err());
            assert!(faults.power_is_cut());

            let restarted = faults.restart(Restart::PowerLoss { torn_seed }).unwrap();
            assert_eq!(restarted.unsynced_writes, 1, "{restarted:?}");
            let reopened = Shard::open(config(&dir, SHARD, None)).await.unwrap();
            // The unacknowledged entry survives only if its write landed whole.
            let whole = restarted.dropped_bytes == 0;
            assert_eq!(torn_seed.is_none(), restarted.landed_bytes == 0);
            if whole {
                bodies.push(unacknowledged);
            }
            assert_eq!(reopened.durable_seq(), bodies.len() as u64, "case {case}: {restarted:?}");
            reopened.close().await.unwrap();
            reopen_and_check(&dir, SHARD, &bodies).await.close().await.unwrap();
        }
        assert_eq!(error_lines(SHARD).len(), 5, "one per shard: {:?}", error_lines(SHARD));
    });
}

#[test]
fn a_write_failing_while_the_previous_commit_syncs_acknowledges_neither() {
    const SHARD: u32 = 17;
    capture_logs();
    let root = common::durable_temp_dir();
    let dir = root.path().join("shard");
    common::run(move || async move {
        let faults = Faults::new(FaultPlan::new().at(Op::Write, 2, Fault::WriteEio));
        let shard = Shard::open(config(&dir, SHARD, Some(faults.clone()))).await.unwrap();
        let tags = [("test", "faults")];
        let first = noise(1, 9000);
        let second = noise(2, 9000);
        let first_wait = shard.append(&[EntryRef { fields: &[], timestamp_ns: 5, tags: &tags, body: &first }]).unwrap();
        // Let the writer take the first append as a commit of its own.
        futures_lite::future::yield_now().await;
        let second_wait =
            shard.append(&[EntryRef { fields: &[], timestamp_ns: 5, tags: &tags, body: &second }]).unwrap();
        // The second commit's write fails while the first one's fdatasync
        // is in flight: that fdatasync succeeds, but the shard has failed
        // by then and acknowledges nothing.
        let second_result = second_wait.durable().await;
        let first_result = first_wait.durable().await;
        assert_failed_with_eio(&second_result.unwrap_err(), SHARD, "write segment", &first_segment(&dir));
        assert_failed_with_eio(&first_result.unwrap_err(), SHARD, "write segment", &first_segment(&dir));
        assert!(shard.close().await.is_err());
        assert_eq!((faults.count(Op::Write), faults.count(Op::Sync)), (2, 1));
        assert_eq!(error_lines(SHARD).len(), 1, "logged once: {:?}", error_lines(SHARD));

        // The first entry was made durable, though never acknowledged.
        faults.restart(Restart::PowerLoss { torn_seed: None }).unwrap();
        reopen_and_check(&dir, SHARD, &[first]).await.close().await.unwrap();
    });
}
