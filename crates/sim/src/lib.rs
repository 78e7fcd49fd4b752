//! The deterministic cluster simulator, its checkers, and `testkit` (the in-memory
//! driver of real Raft cores that the core's scenario and paper tests use).
//!
//! Owns simulated time, network, disks and clients for a cluster of real Raft cores, each
//! applying through the real store (`ringkv-store`); pure and single-threaded per seed,
//! driven by that seed. Must not touch real I/O or clocks.
//! `make sim SEEDS=N` runs many seeds; `make sim SEED=S` replays one with its trace.

use std::cell::Cell;

pub mod checker;
mod faults;
mod invariants;
mod options;
pub mod scripted;
mod storecheck;
pub mod testkit;
mod workload;
mod world;

pub use invariants::Violation;
pub use options::{Control, Options, Profile};
pub use world::{Stats, World};

/// Runs one seed with the standard mix of options, under a negative control if given
/// (always DiskFirst then: the checkers hold DiskFirst to every promise). Returns its
/// totals, the first violation if any, and the trace (empty unless `trace`).
pub fn run_seed(
    seed: u64,
    control: Option<Control>,
    trace: bool,
) -> (Stats, Result<(), Violation>, Vec<String>) {
    let mut opts = Options::for_seed(seed);
    opts.trace = trace;
    opts.control = control;
    if let Some(c) = control {
        opts.persistence = ringkv_raft::Persistence::DiskFirst;
        opts.profile = match c {
            Control::ReadIndexWithoutQuorum | Control::LeaseIgnoresDrift => Profile::StaleReads,
            Control::AckBeforePersist => Profile::Durability,
            Control::CommitOlderTermByCounting | Control::MembershipBeforeNoop => Profile::Churn,
            Control::VoteWithoutLogCheck => Profile::Standard,
            // The store's controls: the mix with the most store operations.
            Control::CompareWithoutWaiting
            | Control::ReadOnlyTxnBumpsRevision
            | Control::RangeDropsShardPart
            | Control::SequencerSkipsRevision => Profile::Standard,
        };
    }
    // An assertion inside the core (an invariant asserted in code) is a violation too.
    let run = std::panic::catch_unwind(move || {
        let mut w = World::new(seed, opts);
        let res = w.run();
        (w.stats, res, std::mem::take(&mut w.trace))
    });
    run.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-string panic".into());
        let v = Violation {
            seed,
            at_us: 0,
            what: format!("assertion failed: {what}"),
            safety: panic_in_core(),
        };
        (Stats::default(), Err(v), Vec::new())
    })
}

thread_local! {
    /// Whether the last panic on this thread was raised inside the Raft core.
    static PANIC_IN_CORE: Cell<bool> = const { Cell::new(false) };
}

/// Replaces the panic hook with a quiet one that remembers where each panic was raised:
/// a seed's panic is reported as a violation with its message, and only an assertion in
/// `crates/raft/src` (an invariant asserted in the core) counts as a safety catch (the
/// path as `file!()` gives it in this workspace; `src/raft/` was the core's path before the
/// crates were split, and matched nothing since).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let core = info
            .location()
            .is_some_and(|l| l.file().contains("crates/raft/src/"));
        PANIC_IN_CORE.with(|c| c.set(core));
    }));
}

/// Whether the last panic on this thread came from inside the Raft core.
pub fn panic_in_core() -> bool {
    PANIC_IN_CORE.with(|c| c.get())
}

#[cfg(test)]
mod tests {
    /// An assertion inside the Raft core is recognised as one (it is what makes a panic a
    /// safety catch).
    #[test]
    fn a_panic_in_the_core_is_known_as_one() {
        super::install_panic_hook();
        let caught = std::panic::catch_unwind(|| {
            let restore = ringkv_raft::Restore {
                hard_state: Default::default(),
                snapshot: None,
                entries: Vec::new(),
                initial_membership: ringkv_raft::Membership::with_voters(1..=1),
            };
            let mut raft = ringkv_raft::Raft::new(ringkv_raft::Config::new(1), restore)
                .expect("a valid config");
            raft.compact(5); // beyond what it applied: asserted in the core
        });
        let in_core = super::panic_in_core();
        let not_core = std::panic::catch_unwind(|| panic!("elsewhere"));
        let elsewhere = super::panic_in_core();
        // Other tests' panics print again.
        let _ = std::panic::take_hook();
        assert!(caught.is_err() && not_core.is_err());
        assert!(in_core, "the core's assertion was not recognised");
        assert!(!elsewhere);
    }
}
