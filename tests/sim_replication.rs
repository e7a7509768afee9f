//! A seeded fault simulator for replication (TigerBeetle's VOPR as the
//! model): the follower pusher's state machine
//! ([`wormdb::replication::session`]) and the leader's archive state
//! machine ([`wormdb::replication::archive`]) run over an in-memory network
//! that drops, delays, duplicates, reorders and partitions, against a
//! leader storage model with late durability, EIO, disk full and crashes.
//! See `sim_replication/world.rs` for the model and the properties.
//!
//! Every run is one seed. A failing seed is printed with the command that
//! replays it:
//!
//! ```text
//! WORMDB_SIM_SEED=N cargo test --test sim_replication -- --nocapture
//! ```
//!
//! (`WORMDB_SIM_TRACE=1` prints every event of that run.)
//! `WORMDB_SIM_SEEDS=N` sets how many seeds a run tries (from
//! `WORMDB_SIM_SEED_FIRST`, default 0).
#![allow(clippy::unwrap_used)]

#[path = "sim_replication/rng.rs"]
mod rng;
#[path = "sim_replication/world.rs"]
mod world;

use std::time::Instant;

use world::{Stats, World};

/// Seeds a default run tries: about 10 s of CPU in a debug build (2.4 ms a
/// seed), so a few seconds on a CI machine's cores.
const SEEDS_DEFAULT: u64 = 4000;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value} is not a number")))
}

/// Runs one seed; `Err` carries the property that failed and the replay.
fn run_seed(seed: u64, trace: bool) -> Result<Stats, String> {
    // A state machine's assertion is a failure of this seed like any other.
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
         sim_replication -- --nocapture"
    ))
}

#[test]
fn a_seed_replays_exactly() {
    let run = |seed| {
        let mut world = World::new(seed, false);
        let outcome = world.run();
        (outcome, world.stats)
    };
    for seed in [3, 1_000_003] {
        let (first, second) = (run(seed), run(seed));
        assert_eq!(first, second);
        assert!(first.1.events > 100, "{first:?}");
    }
}

#[test]
fn replication_survives_any_seeded_faults() {
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
