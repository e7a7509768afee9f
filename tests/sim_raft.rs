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
#[path = "common/seeds.rs"]
mod seeds;
#[path = "sim_raft/world.rs"]
mod world;

use world::{Stats, World};

/// Seeds a default run tries: about 37 s of CPU in a debug build (37 ms a
/// seed), so about 19 s on two cores, less on a CI machine's cores.
const SEEDS_DEFAULT: u64 = 1000;

impl seeds::Totals for Stats {
    fn add(&mut self, other: &Stats) {
        Stats::add(self, other);
    }
}

/// Runs one seed; `Err` carries the property that failed and the replay.
fn run_seed(seed: u64, trace: bool) -> Result<Stats, String> {
    seeds::run_seed("sim_raft", seed, || {
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
    for seed in [7, 1_000_003] {
        let (first, second) = (run(seed), run(seed));
        assert_eq!(first, second);
        assert!(first.1.events > 1000, "{first:?}");
    }
}

#[test]
fn the_raft_group_survives_any_seeded_faults() {
    seeds::run_seeds(SEEDS_DEFAULT, run_seed);
}
