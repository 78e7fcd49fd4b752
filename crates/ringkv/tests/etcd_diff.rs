//! The differential tester's short budget: seeded random sequences of KV, Txn, Lease and
//! Compact calls to a fresh one-member etcd and a fresh three-node ringkv, every answer
//! compared field for field (`ringkv_compat`); `make compat` runs the long one.
//!
//! Needs etcd installed (`make test` installs it through `need-etcd`).

use std::path::Path;

use ringkv_compat::systems::Systems;
use ringkv_compat::{Report, run};
use ringkv_harness::etcd::installed;

/// Sequences and calls per sequence of this budget.
const SEQUENCES: u64 = 4;
const CALLS: usize = 300;

#[test]
fn seeded_call_sequences_get_etcds_answers() {
    assert!(
        installed(),
        "etcd is not installed: run `make test` (it installs etcd-server)"
    );
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("etcd-diff-{}", std::process::id()));
    let bin = Path::new(env!("CARGO_BIN_EXE_ringkv"));
    let mut fresh = || {
        let s = Systems::start(bin, &dir)?;
        let (e, r) = s.addresses();
        Ok((e, r, Box::new(s) as Box<dyn std::any::Any>))
    };
    let r = run(&mut fresh, 1..=SEQUENCES, CALLS, 40).unwrap_or_else(|e| panic!("{e}"));
    let described: Vec<String> = r
        .differences
        .iter()
        .map(|(seed, calls, d)| Report::describe(*seed, calls, d))
        .collect();
    assert!(
        described.is_empty(),
        "{}\n{}",
        r.summary(),
        described.join("\n")
    );
    assert_eq!(r.calls, SEQUENCES * CALLS as u64);
    eprintln!("{}", r.summary());
    let _ = std::fs::remove_dir_all(&dir);
}
