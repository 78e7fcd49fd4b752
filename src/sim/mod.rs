//! The deterministic cluster simulator and its checkers (the simulator issue).
//!
//! Owns simulated time, network, disks and clients for a cluster of real Raft cores; pure
//! and single-threaded per seed, driven by that seed. Must not touch real I/O or clocks.
//! `make sim SEEDS=N` runs many seeds; `make sim SEED=S` replays one with its trace.

pub mod checker;
mod world;

pub use world::{Options, Stats, Violation, World};

/// Runs one seed with the standard mix of options. Returns its totals, the first
/// violation if any, and the trace (empty unless `trace`).
pub fn run_seed(seed: u64, trace: bool) -> (Stats, Result<(), Violation>, Vec<String>) {
    let mut opts = Options::for_seed(seed);
    opts.trace = trace;
    let mut w = World::new(seed, opts);
    let res = w.run();
    (w.stats, res, std::mem::take(&mut w.trace))
}
