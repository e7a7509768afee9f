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
#[path = "common/seeds.rs"]
mod seeds;
#[path = "sim_replication/world.rs"]
mod world;

use world::{Stats, World};

/// Seeds a default run tries: about 10 s of CPU in a debug build (2.4 ms a
/// seed), so a few seconds on a CI machine's cores.
const SEEDS_DEFAULT: u64 = 4000;

impl seeds::Totals for Stats {
    fn add(&mut self, other: &Stats) {
        Stats::add(self, other);
    }
}

/// Runs one seed; `Err` carries the property that failed and the replay.
fn run_seed(seed: u64, trace: bool) -> Result<Stats, String> {
    seeds::run_seed("sim_replication", seed, || {
        let mut world = World::new(seed, trace);
        let outcome = world.run();
        (outcome, world.stats, format!("{:?}", world.params))
    })
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
    seeds::run_seeds(SEEDS_DEFAULT, run_seed);
}
