//! A real ENOSPC: the shard lives on a small loop-mounted ext4 filesystem.
//! When no room is left for the next segment, appends fail with
//! `Error::DiskFull`, nothing acknowledged is lost, the shard stays usable,
//! and appends succeed again once space is freed. Needs root and loop
//! devices (as CI has); it fails loudly rather than skipping without them.
#![allow(clippy::unwrap_used)]

mod common;

use common::loopfs::{free_bytes, LoopMount};
use wormdb::shard::{EntryRef, Error, Shard, ShardConfig};

#[test]
fn disk_full_refuses_appends_and_recovers_when_space_is_freed() {
    let root = common::durable_temp_dir();
    let mount = LoopMount::new(root.path(), 64 * 1024 * 1024);
    let shard_dir = mount.mount_point.join("shard-000");
    let ballast = mount.mount_point.join("ballast");
    // Leave room for two 16 MiB segments but not three.
    let free = free_bytes(&mount.mount_point);
    let segment_bytes: u64 = 16 * 1024 * 1024;
    let ballast_bytes = free - 2 * segment_bytes - 4 * 1024 * 1024;
    std::fs::write(&ballast, vec![0xab; ballast_bytes as usize]).unwrap();
    let lines: Vec<String> = common::loghub_all().into_iter().map(|(_, line)| line).collect();
    common::run(move || async move {
        let config = ShardConfig { segment_bytes, ..ShardConfig::new(&shard_dir, 0) };
        let shard = Shard::open(config.clone()).await.unwrap();
        let mut acked = 0u64;
        let mut salt = 0u64;
        let error = loop {
            salt += 1;
            // Vary bodies so they do not compress away.
            let bodies: Vec<String> =
                lines.iter().take(1000).map(|line| format!("{salt} {line} {}", salt * 7919)).collect();
            let entries: Vec<EntryRef<'_>> = bodies
                .iter()
                .map(|body| EntryRef { fields: &[], timestamp_ns: 1, tags: &[], body: body.as_bytes() })
                .collect();
            match shard.append(&entries).unwrap().durable().await {
                Ok(range) => acked = range.last,
                Err(error) => break error,
            }
            assert!(salt < 10_000, "never ran out of space");
        };
        assert!(matches!(error, Error::DiskFull { .. }), "expected disk full, got {error}");
        assert_eq!(shard.durable_seq(), acked);
        assert_eq!(shard.stats().segments, 2);
        // Still full: refused again, and still healthy.
        let again = shard
            .append(&[EntryRef { fields: &[], timestamp_ns: 1, tags: &[], body: &vec![b'z'; 900_000] }])
            .unwrap()
            .durable()
            .await;
        assert!(matches!(again, Err(Error::DiskFull { .. })), "{again:?}");

        std::fs::remove_file(&ballast).unwrap();
        let mut resumed = 0;
        for round in 0..40 {
            let bodies: Vec<String> = lines.iter().take(1000).map(|line| format!("after {round} {line}")).collect();
            let entries: Vec<EntryRef<'_>> = bodies
                .iter()
                .map(|body| EntryRef { fields: &[], timestamp_ns: 1, tags: &[], body: body.as_bytes() })
                .collect();
            let range = shard.append(&entries).unwrap().durable().await.unwrap();
            assert_eq!(range.first, acked + 1 + resumed);
            resumed += 1000;
        }
        assert_eq!(shard.stats().segments, 3, "rolled once space was freed");
        let total = shard.durable_seq();
        shard.close().await.unwrap();
        let shard = Shard::open(config).await.unwrap();
        assert_eq!(shard.durable_seq(), total);
        let mut next = 1;
        while next <= total {
            let entries = shard.read_from(next, 200_000).await.unwrap();
            assert_eq!(entries[0].seq, next);
            next = entries.last().unwrap().seq + 1;
        }
        assert_eq!(next, total + 1);
        shard.close().await.unwrap();
    });
    drop(mount);
}
