//! The differential tester: the same seeded random sequences of etcd API calls (KV, Txn,
//! Lease, Compact) go through one gRPC client to a fresh etcd and a fresh ringkv, and
//! every answer is compared field by field; a difference is shrunk to a short sequence
//! that still shows it (`diff::shrink`) and reported with both answers.
//!
//! - `calls`: the seeded call sequences (and what they leave out, and why);
//! - `diff`: sending, normalising what differs by nature, comparing, shrinking;
//! - `systems`: fresh systems for a run: a one-member etcd and a three-node ringkv.
//!
//! Runs on the caller's thread (which owns the processes it starts) with a current-thread
//! tokio runtime per run. A dev tool: the `ringkv` binary never links it. Must not touch
//! node internals: it is a client of both systems.

pub mod calls;
pub mod diff;
pub mod systems;

pub use calls::{Call, Gen};
pub use diff::{Difference, Outcome};

/// What a run of several sequences found.
#[derive(Debug, Default)]
pub struct Report {
    pub sequences: u64,
    pub calls: u64,
    /// Each difference: the seed, the shrunk sequence and the first difference in it.
    pub differences: Vec<(u64, Vec<Call>, Difference)>,
}

impl Report {
    /// The one-line summary tools print and tests quote.
    pub fn summary(&self) -> String {
        format!(
            "compat: sequences={} calls={} differences={}",
            self.sequences,
            self.calls,
            self.differences.len()
        )
    }

    /// A difference as a reader needs it: the calls, then both answers to the last.
    pub fn describe(seed: u64, calls: &[Call], d: &Difference) -> String {
        let mut s = format!(
            "seed {seed}: {} calls show a difference at call {}:\n",
            calls.len(),
            d.index
        );
        for (i, c) in calls.iter().enumerate() {
            s.push_str(&format!("  {i}: {c:?}\n"));
        }
        s.push_str(&format!(
            "  etcd:   {:?}\n  ringkv: {:?}\n",
            d.etcd, d.ringkv
        ));
        s
    }
}

/// Runs `seeds` sequences of `calls` calls each on fresh systems; differences are shrunk
/// with at most `shrink_runs_max` more runs each.
pub fn run(
    fresh: &mut diff::Fresh<'_>,
    seeds: impl IntoIterator<Item = u64>,
    calls: usize,
    shrink_runs_max: usize,
) -> Result<Report, String> {
    let mut r = Report::default();
    for seed in seeds {
        let seq = Gen::calls(seed, calls);
        r.sequences += 1;
        match diff::run_fresh(fresh, &seq)? {
            None => r.calls += seq.len() as u64,
            Some(d) => {
                r.calls += d.index as u64 + 1;
                let (small, d) =
                    match diff::shrink(fresh, seq[..=d.index].to_vec(), shrink_runs_max) {
                        Ok(s) => s,
                        Err(_) => (seq[..=d.index].to_vec(), d),
                    };
                r.differences.push((seed, small, d));
            }
        }
    }
    Ok(r)
}
