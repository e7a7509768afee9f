//! A seeded fault simulator for the archive tier's Raft group (raft-rs's
//! harness and TigerBeetle's VOPR as the models): replicas of one group
//! ([`wormdb::tier::group::Group`] and [`wormdb::tier::machine::Machine`])
//! over simulated disks, archives and network, with followers pushing and
//! a client writing directly, through drops, delays, duplicates, reorders,
//! partitions and crashes that lose what was not fdatasynced. See
//! `sim_raft/world.rs` for the model and the properties.
//!
//! Every run is one seed. A failing seed is printed with the command that
//! replays it:
//!
//! ```text
//! WORMDB_SIM_SEED=N cargo test --test sim_raft -- --nocapture
//! ```
//!
//! (`WORMDB_SIM_TRACE=1` prints the run's faults and snapshots.)
//! `WORMDB_SIM_SEEDS=N` sets how many seeds a run tries (from
//! `WORMDB_SIM_SEED_FIRST`, default 0).
#![allow(clippy::unwrap_used)]

#[path = "sim_replication/rng.rs"]
mod rng;
#[path = "sim_raft/world.rs"]
mod world;

use std::time::Instant;

use world::{Stats, World};

/// Seeds a default run tries: about 31 s of CPU in a debug build (31 ms a
/// seed), so about 16 s on two cores, less on a CI machine's cores.
const SEEDS_DEFAULT: u64 = 1000;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value} is not a number")))
}

/// Runs one seed; `Err` carries the property that failed and the replay.
fn run_seed(seed: u64, trace: bool) -> Result<Stats, String> {
    // A panic (raft-rs's own assertions among them) fails the seed like
    // any other violation.
    let outcome = std::panic::catch_unwind(|| {
        let mut world = World::new(seed, trace);
        let outcome = world.run();
        (outcome, world.stats, world.params)
    });
    let (violation, params) = match outcome {
        Ok((Ok(()), stats, _)) => return Ok(stats),
        Ok((Err(violation), _, params)) => (violation, format!("{params:?}")),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|message| message.to_string()))
                .unwrap_or_default();
            (format!("panicked: {message}"), "see the replay".to_string())
        }
    };
    Err(format!(
        "seed {seed} failed: {violation}\n  params: {params}\n  replay: WORMDB_SIM_SEED={seed} cargo test --test \
         sim_raft -- --nocapture"
    ))
}

#[test]
fn a_seed_replays_exactly() {
    let run = |seed| {
        let mut world = World::new(seed, false);
        let outcome = world.run();
        (outcome, world.stats)
    };
    for seed in [7, 1_000_003] {
        let (first, second) = (run(seed), run(seed));
        assert_eq!(first, second);
        assert!(first.1.events > 1000, "{first:?}");
    }
}

#[test]
fn the_raft_group_survives_any_seeded_faults() {
    if let Some(seed) = env_u64("WORMDB_SIM_SEED") {
        let trace = env_u64("WORMDB_SIM_TRACE").is_some_and(|trace| trace != 0);
        match run_seed(seed, trace) {
            Ok(stats) => println!("seed {seed} passed: {stats:?}"),
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let first = env_u64("WORMDB_SIM_SEED_FIRST").unwrap_or(0);
    let count = env_u64("WORMDB_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT);
    let threads = std::thread::available_parallelism().map_or(1, |threads| threads.get()).min(8) as u64;
    let started = Instant::now();
    // Seeds are dealt round robin to threads; each run is independent of
    // the others, so the outcome does not depend on the thread count, and
    // the lowest failing seed is reported.
    let results: Vec<(Stats, Option<(u64, String)>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    let mut stats = Stats::default();
                    for seed in (first + thread..first + count).step_by(threads as usize) {
                        match run_seed(seed, false) {
                            Ok(run) => stats.add(&run),
                            Err(failure) => return (stats, Some((seed, failure))),
                        }
                    }
                    (stats, None)
                })
            })
            .collect();
        workers.into_iter().map(|worker| worker.join().unwrap()).collect()
    });
    let mut total = Stats::default();
    for (stats, _) in &results {
        total.add(stats);
    }
    println!("{count} seeds from {first} in {:.1} s on {threads} threads: {total:?}", started.elapsed().as_secs_f64());
    if let Some((seed, failure)) = results.into_iter().filter_map(|(_, failure)| failure).min_by_key(|(seed, _)| *seed)
    {
        panic!("{failure}\n  (lowest failing seed among those run: {seed})");
    }
}
