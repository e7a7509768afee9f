//! Append/read round trips on a real ext4 directory with LogHub samples:
//! group commit under concurrent appenders, roll-over, reopen, queries.
#![allow(clippy::unwrap_used)]

mod common;

use common::loghub::level_of;

use std::rc::Rc;

use wormdb::shard::{EntryRef, Query, Shard, ShardConfig};

/// Appends `lines` one append per `batch` lines, tagging each with its
/// source and a level, and returns the ranges.
async fn append_lines(shard: &Shard, lines: &[(&'static str, String)], batch: usize, ts_base: i64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    for (chunk_index, chunk) in lines.chunks(batch).enumerate() {
        let tags: Vec<[(&str, &str); 2]> =
            chunk.iter().map(|(source, line)| [("source", *source), ("level", level_of(line))]).collect();
        let entries: Vec<EntryRef<'_>> = chunk
            .iter()
            .zip(&tags)
            .enumerate()
            .map(|(index, ((_, line), tags))| EntryRef {
                fields: &[],
                timestamp_ns: ts_base + (chunk_index * batch + index) as i64,
                tags,
                body: line.as_bytes(),
            })
            .collect();
        let range = shard.append(&entries).unwrap().durable().await.unwrap();
        ranges.push((range.first, range.last));
    }
    ranges
}

#[test]
fn loghub_round_trip_survives_reopen() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    let lines = common::loghub_all();
    common::run(move || async move {
        let config = ShardConfig { node_id: 9, ..ShardConfig::new(&path, 3) };
        let shard = Shard::open(config.clone()).await.unwrap();
        let ranges = append_lines(&shard, &lines, 100, 1_000_000).await;
        // Dense seqs from 1, in append order.
        let mut expected_first = 1;
        for (first, last) in &ranges {
            assert_eq!(*first, expected_first);
            expected_first = last + 1;
        }
        assert_eq!(shard.durable_seq(), lines.len() as u64);
        shard.close().await.unwrap();

        let shard = Shard::open(config).await.unwrap();
        assert_eq!(shard.recovery_report().torn_tail, None);
        assert_eq!(shard.durable_seq(), lines.len() as u64);
        let entries = shard.read_from(1, lines.len() + 10).await.unwrap();
        assert_eq!(entries.len(), lines.len());
        for (index, (entry, (source, line))) in entries.iter().zip(&lines).enumerate() {
            assert_eq!(entry.seq, index as u64 + 1);
            assert_eq!((entry.node_id, entry.shard), (9, 3));
            assert_eq!(entry.timestamp_ns, 1_000_000 + index as i64);
            assert_eq!(std::str::from_utf8(&entry.body).unwrap(), line);
            assert_eq!(entry.tags.get("source").map(String::as_str), Some(*source));
        }
        // Reading from the middle (inside an append of 100) starts exactly there.
        let from = lines.len() as u64 / 200 * 100 + 77;
        let middle = shard.read_from(from, 5).await.unwrap();
        assert_eq!(middle.iter().map(|entry| entry.seq).collect::<Vec<_>>(), (from..from + 5).collect::<Vec<_>>());
        let stats = shard.stats();
        assert_eq!(stats.entries, lines.len() as u64);
        let raw_text: usize = lines.iter().map(|(_, line)| line.len()).sum();
        assert!(stats.raw_bytes > raw_text as u64, "raw bytes {} count bodies and tags", stats.raw_bytes);
        assert!(stats.disk_bytes < stats.raw_bytes / 2, "LogHub text compresses: {stats:?}");
        shard.close().await.unwrap();
    });
}

#[test]
fn concurrent_appenders_share_group_commits() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    common::run(move || async move {
        let shard = Shard::open(ShardConfig::new(&path, 0)).await.unwrap();
        let appenders = 64;
        let per_appender = 50;
        let results = Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for appender in 0..appenders {
            let shard = shard.clone();
            let results = results.clone();
            tasks.push(glommio::spawn_local(async move {
                for round in 0..per_appender {
                    let body = format!("appender {appender} round {round}");
                    let tags = [("appender", "x")];
                    let entry = EntryRef { fields: &[], timestamp_ns: 5, tags: &tags, body: body.as_bytes() };
                    let range = shard.append(&[entry]).unwrap().durable().await.unwrap();
                    results.borrow_mut().push((range.first, body));
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        let total = appenders * per_appender;
        let mut results = results.borrow().clone();
        results.sort();
        let seqs: Vec<u64> = results.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>(), "dense, unique seqs");
        let stats = shard.stats();
        assert!(stats.commits < total as u64 / 4, "{} commits for {total} appends: not grouped", stats.commits);
        assert!(stats.syncs <= stats.commits);
        let entries = shard.read_from(1, total).await.unwrap();
        for (entry, (seq, body)) in entries.iter().zip(&results) {
            assert_eq!(entry.seq, *seq);
            assert_eq!(std::str::from_utf8(&entry.body).unwrap(), body);
        }
        shard.close().await.unwrap();
    });
}

#[test]
fn small_commits_pack_into_the_tail_page() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    let lines = common::loghub_lines("Spark");
    common::run(move || async move {
        let shard = Shard::open(ShardConfig::new(&path, 0)).await.unwrap();
        let commits = 10_000;
        let mut body_bytes = 0;
        for index in 0..commits {
            let line = &lines[index % lines.len()];
            let body = format!("{line:.<200}");
            body_bytes += body.len();
            let tags = [("app", "spark")];
            shard
                .append(&[EntryRef { fields: &[], timestamp_ns: 1, tags: &tags, body: body.as_bytes() }])
                .unwrap()
                .durable()
                .await
                .unwrap();
        }
        let stats = shard.stats();
        assert_eq!(stats.commits, commits as u64);
        // One ~200-byte block per commit: a few MB, not a 4 KiB page each (40 MB).
        assert!(
            stats.disk_bytes < 4 * 1024 * 1024,
            "segment grew by {} bytes for {body_bytes} bytes of bodies",
            stats.disk_bytes
        );
        assert!(stats.disk_bytes > body_bytes as u64 / 4);
        shard.close().await.unwrap();
    });
}

#[test]
fn segments_roll_over_and_stay_readable() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    let lines = common::loghub_all();
    common::run(move || async move {
        let config = ShardConfig { segment_bytes: wormdb::limits::SEGMENT_BYTES_MIN, ..ShardConfig::new(&path, 0) };
        let shard = Shard::open(config.clone()).await.unwrap();
        // The samples again and again, to this much text in all (24 rounds
        // of the full samples), whichever samples there are.
        const TEXT_BYTES: usize = 48_000_000;
        let text_bytes: usize = lines.iter().map(|(_, line)| line.len()).sum();
        let mut appended = 0u64;
        for round in 0..TEXT_BYTES.div_ceil(text_bytes) {
            append_lines(&shard, &lines, 500, round as i64 * 100_000).await;
            appended += lines.len() as u64;
        }
        let stats = shard.stats();
        assert!(stats.segments >= 3, "{stats:?}");
        assert_eq!(stats.entries, appended);
        shard.close().await.unwrap();

        let shard = Shard::open(config).await.unwrap();
        assert_eq!(shard.durable_seq(), appended);
        assert_eq!(shard.recovery_report().indexes_rebuilt, 0);
        let entries = shard.read_from(1, appended as usize).await.unwrap();
        assert_eq!(entries.len() as u64, appended);
        assert!(entries.iter().enumerate().all(|(index, entry)| entry.seq == index as u64 + 1));
        shard.close().await.unwrap();
    });
}

#[test]
fn queries_use_the_index_and_filter_exactly() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    let lines = common::loghub_all();
    common::run(move || async move {
        let config = ShardConfig { segment_bytes: wormdb::limits::SEGMENT_BYTES_MIN, ..ShardConfig::new(&path, 0) };
        let shard = Shard::open(config).await.unwrap();
        // Each source in its own appends, so sources land in separate blocks.
        append_lines(&shard, &lines, 250, 0).await;
        let total_blocks = {
            let everything = Query {
                fields: &[],
                tags: &[],
                from_ts: i64::MIN,
                to_ts: i64::MAX,
                limit: usize::MAX,
                backward: false,
                words: &Default::default(),
                contains: &Default::default(),
            };
            let result = shard.query(&everything).await.unwrap();
            assert_eq!(result.entries.len(), lines.len());
            result.blocks_read
        };
        let tags = [("source", "OpenSSH"), ("level", "info")];
        let query = Query {
            fields: &[],
            tags: &tags,
            from_ts: 0,
            to_ts: i64::MAX,
            limit: 100_000,
            backward: false,
            words: &Default::default(),
            contains: &Default::default(),
        };
        let result = shard.query(&query).await.unwrap();
        let expected: Vec<u64> = lines
            .iter()
            .enumerate()
            .filter(|(_, (source, line))| *source == "OpenSSH" && level_of(line) == "info")
            .map(|(index, _)| index as u64 + 1)
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(result.entries.iter().map(|entry| entry.seq).collect::<Vec<_>>(), expected);
        assert!(result.blocks_read * 4 < total_blocks, "read {} of {total_blocks} blocks", result.blocks_read);

        // Time range [from, to) and limit, both directions.
        let window = Query {
            fields: &[],
            tags: &[],
            from_ts: 100,
            to_ts: 110,
            limit: 100,
            backward: false,
            words: &Default::default(),
            contains: &Default::default(),
        };
        let forward = shard.query(&window).await.unwrap();
        assert_eq!(
            forward.entries.iter().map(|entry| entry.timestamp_ns).collect::<Vec<_>>(),
            (100..110).collect::<Vec<_>>()
        );
        let backward = shard.query(&Query { backward: true, limit: 3, ..window }).await.unwrap();
        assert_eq!(backward.entries.iter().map(|entry| entry.timestamp_ns).collect::<Vec<_>>(), vec![109, 108, 107]);
        let missing = [("source", "nowhere")];
        let none = shard.query(&Query { tags: &missing, ..window }).await.unwrap();
        assert!(none.entries.is_empty());
        assert_eq!(none.blocks_read, 0);
        shard.close().await.unwrap();
    });
}

#[test]
fn a_tail_reader_follows_new_commits() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    common::run(move || async move {
        let shard = Shard::open(ShardConfig::new(&path, 0)).await.unwrap();
        let tail = {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let mut seen = Vec::new();
                let mut after = 0;
                while seen.len() < 300 {
                    let durable = shard.wait_durable_after(after).await;
                    assert!(durable > after, "woken without progress");
                    let entries = shard.read_from(after + 1, 1000).await.unwrap();
                    assert_eq!(entries.last().unwrap().seq, durable, "reads see exactly what is durable");
                    after = durable;
                    seen.extend(entries.into_iter().map(|entry| entry.seq));
                }
                seen
            })
        };
        for round in 0..30 {
            let bodies: Vec<String> = (0..10).map(|index| format!("round {round} entry {index}")).collect();
            let entries: Vec<EntryRef<'_>> = bodies
                .iter()
                .map(|body| EntryRef { fields: &[], timestamp_ns: 0, tags: &[], body: body.as_bytes() })
                .collect();
            shard.append(&entries).unwrap().durable().await.unwrap();
            glommio::yield_if_needed().await;
        }
        let seen = tail.await;
        assert_eq!(seen, (1..=300).collect::<Vec<u64>>());
        // timestamp 0 means "now".
        let entry = &shard.read_from(1, 1).await.unwrap()[0];
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
        assert!((now - entry.timestamp_ns).abs() < 60_000_000_000, "timestamp {} is not now", entry.timestamp_ns);
        shard.close().await.unwrap();
    });
}

#[test]
fn ordered_queries_sort_by_timestamp_across_blocks_and_segments() {
    use rand::{Rng, SeedableRng};
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    common::run(move || async move {
        let config = ShardConfig { segment_bytes: wormdb::limits::SEGMENT_BYTES_MIN, ..ShardConfig::new(&path, 0) };
        let shard = Shard::open(config).await.unwrap();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let lines = common::loghub_lines("Zookeeper");
        // Timestamps jitter around a rising clock, so blocks overlap in time.
        let mut model = Vec::new();
        for round in 0..800u64 {
            let batch: Vec<(i64, &str, String)> = (0..100)
                .map(|index| {
                    let ts = (round * 100 + index) as i64 * 10 + rng.gen_range(-3000..3000);
                    let line = &lines[(round * 100 + index) as usize % lines.len()];
                    // A random suffix keeps the data from compressing away, so it spans segments.
                    let body = format!("{line} {:032x}", rng.gen::<u128>());
                    (ts, if index % 3 == 0 { "a" } else { "b" }, body)
                })
                .collect();
            let tags: Vec<[(&str, &str); 1]> = batch.iter().map(|(_, group, _)| [("group", *group)]).collect();
            let entries: Vec<EntryRef<'_>> = batch
                .iter()
                .zip(&tags)
                .map(|((ts, _, body), tags)| EntryRef { fields: &[], timestamp_ns: *ts, tags, body: body.as_bytes() })
                .collect();
            let range = shard.append(&entries).unwrap().durable().await.unwrap();
            for (offset, (ts, group, _)) in batch.iter().enumerate() {
                model.push((*ts, range.first + offset as u64, *group));
            }
        }
        assert!(shard.stats().segments >= 2, "spans segments: {:?}", shard.stats());
        for backward in [false, true] {
            for (tags, from_ts, to_ts, limit) in [
                (vec![], i64::MIN, i64::MAX, 5000),
                (vec![("group", "a")], 20_000, 90_000, 700),
                (vec![("group", "b")], 0, 1, 10),
            ] {
                let query = Query {
                    fields: &[],
                    tags: &tags,
                    from_ts,
                    to_ts,
                    limit,
                    backward,
                    words: &Default::default(),
                    contains: &Default::default(),
                };
                let mut ordered = shard.query_ordered(&query).await.unwrap();
                let mut got = Vec::new();
                loop {
                    let chunk = ordered.next_chunk(97).await.unwrap();
                    if chunk.is_empty() {
                        break;
                    }
                    got.extend(chunk.into_iter().map(|entry| (entry.timestamp_ns, entry.seq)));
                }
                let mut expected: Vec<(i64, u64)> = model
                    .iter()
                    .filter(|(ts, _, group)| {
                        *ts >= from_ts && *ts < to_ts && tags.iter().all(|(_, want)| want == group)
                    })
                    .map(|(ts, seq, _)| (*ts, *seq))
                    .collect();
                expected.sort();
                if backward {
                    expected.reverse();
                }
                expected.truncate(limit);
                assert_eq!(got, expected, "backward={backward} tags={tags:?} [{from_ts},{to_ts}) limit {limit}");
            }
        }
        shard.close().await.unwrap();
    });
}

/// Readers of recent blocks get them from the last commits' buffers in
/// memory. Small commits share the tail page, so a read right after a
/// commit spans blocks of several commits; every read, whichever commits it
/// spans, must see exactly what a reader of the files sees after a reopen.
#[test]
fn reads_of_recent_commits_match_the_files() {
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    let lines = common::loghub_lines("Zookeeper");
    common::run(move || async move {
        let config =
            ShardConfig { recent_writes_bytes: wormdb::limits::RECENT_WRITES_BYTES_MAX, ..ShardConfig::new(&path, 0) };
        let shard = Shard::open(config).await.unwrap();
        let mut expected = Vec::new();
        for index in 0..600 {
            // 1 to 3 entries per commit, bodies of varied size.
            let batch: Vec<String> = (0..1 + index % 3)
                .map(|offset| format!("{index}/{offset} {}", lines[(index + offset) % lines.len()]))
                .collect();
            let tags = [("app", "zk")];
            let entries: Vec<EntryRef<'_>> = batch
                .iter()
                .map(|body| EntryRef { fields: &[], timestamp_ns: 1, tags: &tags, body: body.as_bytes() })
                .collect();
            shard.append(&entries).unwrap().durable().await.unwrap();
            expected.extend(batch);
            // Read back from a seq a little behind the end: the range spans
            // the last few commits (and their shared tail pages).
            let from = expected.len().saturating_sub(7) as u64 + 1;
            let read = shard.read_from(from, 100).await.unwrap();
            let bodies: Vec<&[u8]> = read.iter().map(|entry| &entry.body[..]).collect();
            let wanted: Vec<&[u8]> = expected[from as usize - 1..].iter().map(|body| body.as_bytes()).collect();
            assert_eq!(bodies, wanted, "after commit {index}, reading from seq {from}");
        }
        let all = shard.read_from(1, 10_000).await.unwrap();
        shard.close().await.unwrap();
        let reopened = Shard::open(ShardConfig::new(&path, 0)).await.unwrap();
        assert_eq!(reopened.read_from(1, 10_000).await.unwrap(), all, "memory and disk agree");
        assert_eq!(all.len(), expected.len());
        reopened.close().await.unwrap();
    });
}

/// A large commit is encoded and written in chunks (several writes, each
/// ending before the page that the next one starts with). Commits of
/// several MiB, mixing incompressible and compressible entries, from
/// concurrent appenders, read back whole from memory and after a reopen,
/// and leave no gap: the next commits continue right behind them.
#[test]
fn large_commits_written_in_chunks_read_back() {
    use rand::{RngCore, SeedableRng};
    let dir = common::durable_temp_dir();
    let path = dir.path().join("shard-000");
    let lines = common::loghub_lines("Hadoop");
    common::run(move || async move {
        let config =
            ShardConfig { recent_writes_bytes: wormdb::limits::RECENT_WRITES_BYTES_MAX, ..ShardConfig::new(&path, 0) };
        let shard = Shard::open(config).await.unwrap();
        let mut random = rand::rngs::SmallRng::seed_from_u64(7);
        // Each append: 40 entries, every other one a random body of 16 to
        // 80 KiB (odd sizes, so chunks end mid-page), the rest log lines.
        let appends: Vec<Vec<Vec<u8>>> = (0..12)
            .map(|append| {
                (0..40)
                    .map(|index| {
                        if index % 2 == 0 {
                            let mut body = vec![0u8; 16 * 1024 + 1 + (append * 7919 + index * 1237) % (64 * 1024)];
                            random.fill_bytes(&mut body);
                            body
                        } else {
                            lines[(append * 40 + index) % lines.len()].repeat(1 + index % 5).into_bytes()
                        }
                    })
                    .collect()
            })
            .collect();
        let appends: &'static [Vec<Vec<u8>>] = Vec::leak(appends);
        let tags: &'static [(&str, &str)] = &[("app", "chunks")];
        // Three concurrent appenders, four appends each, then one small one.
        let tasks: Vec<_> = (0..3)
            .map(|appender| {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let mut ranges = Vec::new();
                    for bodies in appends.iter().skip(appender).step_by(3) {
                        let entries: Vec<EntryRef<'_>> =
                            bodies.iter().map(|body| EntryRef { fields: &[], timestamp_ns: 1, tags, body }).collect();
                        let range = shard.append(&entries).unwrap().durable().await.unwrap();
                        ranges.push((range.first, bodies));
                    }
                    ranges
                })
            })
            .collect();
        let mut expected: Vec<(u64, &Vec<u8>)> = Vec::new();
        for task in tasks {
            for (first, bodies) in task.await {
                expected.extend(bodies.iter().enumerate().map(|(index, body)| (first + index as u64, body)));
            }
        }
        let small = shard.append(&[EntryRef { fields: &[], timestamp_ns: 1, tags, body: b"after" }]).unwrap();
        let small_seq = small.durable().await.unwrap().first;
        expected.sort_by_key(|(seq, _)| *seq);
        assert_eq!(expected.len(), 12 * 40);
        assert_eq!(small_seq, expected.len() as u64 + 1, "seqs are dense");

        let check = |read: &[wormdb::proto::LogEntry], what: &str| {
            assert_eq!(read.len(), expected.len() + 1, "{what}");
            for (entry, (seq, body)) in read.iter().zip(&expected) {
                assert_eq!(entry.seq, *seq, "{what}");
                assert!(entry.body == **body, "{what}: body of seq {seq}");
            }
            assert_eq!(&read.last().unwrap().body[..], b"after", "{what}");
        };
        let all = shard.read_from(1, 10_000).await.unwrap();
        check(&all, "read from memory");
        shard.close().await.unwrap();
        let reopened = Shard::open(ShardConfig::new(&path, 0)).await.unwrap();
        assert!(reopened.recovery_report().torn_tail.is_none(), "nothing torn after a clean close");
        check(&reopened.read_from(1, 10_000).await.unwrap(), "read after reopen");
        reopened.close().await.unwrap();
    });
}
