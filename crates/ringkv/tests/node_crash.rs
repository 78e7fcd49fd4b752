//! Whole-cluster crashes of real processes built with the `crash-sim` feature (each WAL
//! write is held in memory until its fdatasync, so SIGKILL loses exactly what a power cut
//! would). Run by `make test` as `cargo test --features crash-sim --test node_crash`.
#![cfg(feature = "crash-sim")]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Opts, put_at, wait_until};

fn kill_all(c: &mut Cluster) {
    for i in 0..3 {
        c.kill(i);
    }
}

fn restart_all(c: &mut Cluster) -> usize {
    for i in 0..3 {
        c.start(i);
    }
    c.leader()
}

#[test]
fn disk_first_keeps_every_acknowledged_write_when_all_three_nodes_die() {
    let mut c = Cluster::new("crash-df", Opts::default());
    c.leader();
    // Writes from four threads, spread over all nodes (followers forward).
    let ports = c.ports.clone();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let ports = ports.clone();
            std::thread::spawn(move || {
                for k in (t..1000).step_by(4) {
                    let (key, value) = (format!("key-{k}"), format!("value-{k}"));
                    let r = put_at(ports[k % 3], &key, &value);
                    assert!(r.as_ref().is_ok_and(|r| r.status == 200), "{key}: {r:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    kill_all(&mut c);
    let l = restart_all(&mut c);
    for k in 0..1000 {
        let (st, b) = c.get(l, &format!("key-{k}"), "linearizable");
        assert_eq!(
            (st, b["value"].as_str()),
            (200, Some(format!("value-{k}").as_str())),
            "key-{k} was acknowledged and is gone"
        );
    }
}

/// MemFirst's documented bound (docs/guide.md, "Persistence modes"): when every node dies at
/// once, the writes lost are at most those acknowledged within the last flush interval
/// (plus a tick and the fdatasync itself) before the crash. The test allows 250 ms over
/// the 20 ms interval for a loaded 2-core machine.
#[test]
fn mem_first_loses_only_writes_acknowledged_just_before_a_crash_of_all_nodes() {
    let mut c = Cluster::new(
        "crash-mf",
        Opts {
            persistence: "strategy = \"MemFirst\"\n\
                          flush_policy = { Batch = { threshold = 100, interval_ms = 20 } }",
            ..Opts::default()
        },
    );
    let l = c.leader();
    let mut acked: Vec<(String, Instant)> = Vec::new();
    let t0 = Instant::now();
    let mut k = 0;
    while t0.elapsed() < Duration::from_millis(1500) {
        let key = format!("key-{k}");
        let (st, b) = c.put(l, &key, "v");
        assert_eq!(st, 200, "{key}: {b}");
        acked.push((key, Instant::now()));
        k += 1;
    }
    let crash = Instant::now();
    kill_all(&mut c);
    let l = restart_all(&mut c);
    let bound = Duration::from_millis(20 + 250);
    let mut lost_recent = 0;
    for (key, at) in &acked {
        let (st, _) = c.get(l, key, "linearizable");
        if st == 200 {
            continue;
        }
        assert_eq!(st, 404);
        let age = crash - *at;
        assert!(
            age < bound,
            "{key} acknowledged {age:?} before the crash is lost (bound {bound:?})"
        );
        lost_recent += 1;
    }
    eprintln!(
        "MemFirst: {} writes acknowledged, {lost_recent} lost (all within {bound:?} of the crash)",
        acked.len()
    );
    // The restarted cluster takes writes again.
    wait_until(10, "a write after the restart", || {
        (c.put(l, "after", "crash").0 == 200).then_some(())
    });
}
