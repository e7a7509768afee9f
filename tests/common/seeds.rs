//! The seed runner the seeded simulators share (`sim_replication`,
//! `sim_raft`): one seed replays with `WORMDB_SIM_SEED=N` (and
//! `WORMDB_SIM_TRACE=1`), a run tries `WORMDB_SIM_SEEDS` seeds from
//! `WORMDB_SIM_SEED_FIRST` on every core, and a failure names the lowest
//! failing seed with the command that replays it.
#![allow(dead_code, clippy::unwrap_used)]

use std::fmt::Debug;
use std::time::Instant;

/// Counters of one run, summed over seeds.
pub trait Totals: Default + Debug + Send {
    /// Adds `other` into `self`.
    fn add(&mut self, other: &Self);
}

/// `name`'s value as a number, if set.
pub fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value} is not a number")))
}

/// Runs one seed of `test`: `run` returns the world's verdict, its
/// counters and its parameters (for the report). A panic fails the seed
/// like any other violation. `Err` carries the failure and the replay.
pub fn run_seed<S>(test: &str, seed: u64, run: impl FnOnce() -> (Result<(), String>, S, String)) -> Result<S, String> {
    let (violation, params) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok((Ok(()), stats, _)) => return Ok(stats),
        Ok((Err(violation), _, params)) => (violation, params),
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
         {test} -- --nocapture"
    ))
}

/// Runs one seed when `WORMDB_SIM_SEED` is set, else `default_count` seeds
/// (or `WORMDB_SIM_SEEDS`) dealt round robin to the cores; panics with the
/// lowest failing seed. `run_seed(seed, trace)` runs one.
pub fn run_seeds<S: Totals>(default_count: u64, run_seed: impl Fn(u64, bool) -> Result<S, String> + Sync) {
    if let Some(seed) = env_u64("WORMDB_SIM_SEED") {
        let trace = env_u64("WORMDB_SIM_TRACE").is_some_and(|trace| trace != 0);
        match run_seed(seed, trace) {
            Ok(stats) => println!("seed {seed} passed: {stats:?}"),
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let first = env_u64("WORMDB_SIM_SEED_FIRST").unwrap_or(0);
    let count = env_u64("WORMDB_SIM_SEEDS").unwrap_or(default_count);
    let threads = std::thread::available_parallelism().map_or(1, |threads| threads.get()).min(8) as u64;
    let started = Instant::now();
    // Each seed is independent of the others, so the outcome does not
    // depend on the thread count, and the lowest failing seed is reported.
    let run_seed = &run_seed;
    let results: Vec<(S, Option<(u64, String)>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    let mut stats = S::default();
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
    let mut total = S::default();
    for (stats, _) in &results {
        total.add(stats);
    }
    println!("{count} seeds from {first} in {:.1} s on {threads} threads: {total:?}", started.elapsed().as_secs_f64());
    if let Some((seed, failure)) = results.into_iter().filter_map(|(_, failure)| failure).min_by_key(|(seed, _)| *seed)
    {
        panic!("{failure}\n  (lowest failing seed among those run: {seed})");
    }
}
