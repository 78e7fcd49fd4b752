//! `make bench-raft`: proposals per second through a 3-node in-memory cluster of the real
//! Raft core (testkit driver: instant persistence, in-process message passing). This is the
//! ceiling the server's protocol code sets; disks and sockets only lower it.
//!
//! Each round: the leader proposes one batch of `batch` entries (256-byte values, as in the
//! etcd benchmark), then readies are processed and messages delivered until the cluster is
//! quiet (the batch is committed and applied on all three nodes).

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_raft::Persistence;
use ringkv_sim::testkit::Cluster;

fn run(batch: usize, persistence: Persistence, budget: Duration) -> (u64, u64, Duration) {
    let mut c = Cluster::new(&[1, 2, 3], &[], |cfg| {
        cfg.persistence = persistence;
        cfg.uncommitted_entries_max = 1 << 20;
    });
    let leader = c.elect(1000);
    let value = Bytes::from(vec![b'v'; 256]);
    let entries_max = 3_000_000u64;
    let (mut proposals, mut rounds) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < budget && proposals < entries_max {
        let b: Vec<Bytes> = (0..batch).map(|_| value.clone()).collect();
        let (first, _) = c.raft(leader).propose(b).expect("leader accepts");
        c.pump();
        let last = first + batch as u64 - 1;
        assert!(
            c.node(leader).applied_index >= last,
            "batch not applied after pump"
        );
        proposals += batch as u64;
        rounds += 1;
    }
    let elapsed = start.elapsed();
    for id in [1, 2, 3] {
        assert!(
            c.node(id).applied_index >= proposals,
            "node {id} did not apply everything"
        );
    }
    (proposals, rounds, elapsed)
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore harness flags.
    let budget = Duration::from_millis(
        std::env::var("BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
    );
    println!("ringkv raft core, 3 nodes in memory, 256-byte values, {budget:?} per case");
    println!(
        "{:<11} {:>6} {:>14} {:>12} {:>14}",
        "persistence", "batch", "proposals/s", "rounds/s", "us/round"
    );
    for persistence in [Persistence::DiskFirst, Persistence::MemFirst] {
        for batch in [1usize, 100, 5000] {
            let (n, rounds, el) = run(batch, persistence, budget);
            let secs = el.as_secs_f64();
            println!(
                "{:<11} {:>6} {:>14.0} {:>12.0} {:>14.1}",
                format!("{persistence:?}"),
                batch,
                n as f64 / secs,
                rounds as f64 / secs,
                secs * 1e6 / rounds as f64
            );
        }
    }
}
