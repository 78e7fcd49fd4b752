//! A snapshot of 100,000 keys with 256-byte values (`SNAPSHOT_KEYS` to change) on a real
//! three-node cluster (release build, DiskFirst, example timing): its size, how long taking
//! it takes, the longest a shard stopped applying for it, the write latency seen by a
//! client writing meanwhile (beside the same client's latency without a snapshot), and how
//! long a follower that missed everything takes to receive and install it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, Opts, json, put_on, wait_until};
use ringkv_client::http1;

fn connect(port: u16) -> http1::Conn {
    http1::Conn::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(10)).unwrap()
}

/// One client writing for `d`; returns its latencies in µs, sorted.
fn probe(port: u16, d: Duration, tag: &str) -> Vec<u64> {
    let mut s = connect(port);
    let mut lat = Vec::new();
    let t0 = Instant::now();
    let mut i = 0;
    while t0.elapsed() < d {
        let t = Instant::now();
        assert_eq!(put_on(&mut s, &format!("probe-{tag}-{i}"), "p"), 200);
        lat.push(t.elapsed().as_micros() as u64);
        i += 1;
    }
    lat.sort_unstable();
    lat
}

fn pct(v: &[u64], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

fn main() {
    let keys: usize = std::env::var("SNAPSHOT_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let mut c = Cluster::new(
        "bench-snapshot",
        Opts {
            election_ms: (1000, 2000),
            heartbeat_ms: 100,
            lease_ms: 500,
            // Only on demand here, so each is measured alone.
            extra: "[raft.snapshot]\ninterval_entries = 0\n".into(),
            ..Opts::default()
        },
    );
    let l = c.leader();
    let f = (l + 1) % 3;
    c.kill(f);
    let value = "v".repeat(256);
    let t = Instant::now();
    let threads: Vec<_> = (0..32)
        .map(|th| {
            let (port, value) = (c.ports[l], value.clone());
            std::thread::spawn(move || {
                let mut s = connect(port);
                for k in (th..keys).step_by(32) {
                    assert_eq!(put_on(&mut s, &format!("key-{k:08}"), &value), 200);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    println!(
        "loaded {keys} keys x 256 B through the leader in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Baseline: one writer, no snapshot.
    let base = probe(c.ports[l], Duration::from_secs(2), "base");
    // The same writer while a snapshot is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let port = c.ports[l];
    let during = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut s = connect(port);
            let mut lat = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                assert_eq!(put_on(&mut s, &format!("probe-during-{i}"), "p"), 200);
                lat.push(t.elapsed().as_micros() as u64);
                i += 1;
            }
            lat.sort_unstable();
            lat
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (st, b) = c.http(l, "POST", "/snapshot", "").unwrap();
    assert_eq!(st, 200, "{b}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let during = during.join().unwrap();
    let s = json(&b);
    println!(
        "snapshot at index {}: {} keys, {:.1} MB, taken and saved in {} ms; longest shard apply pause {:.1} ms",
        s["index"],
        s["keys"],
        s["bytes"].as_f64().unwrap() / 1e6,
        s["took_ms"],
        s["shard_pause_ms"].as_f64().unwrap()
    );
    println!(
        "write latency, one client: without snapshot p50 {:.2} ms p99 {:.2} ms max {:.2} ms | during snapshot p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        pct(&base, 0.5),
        pct(&base, 0.99),
        pct(&base, 1.0),
        pct(&during, 0.5),
        pct(&during, 0.99),
        pct(&during, 1.0)
    );
    // The follower that missed everything: sent the snapshot, installs it.
    let index = s["index"].as_u64().unwrap();
    let t = Instant::now();
    c.start(f);
    wait_until(120, "the follower to install the snapshot", || {
        (c.status(f)?["snapshot_index"].as_u64()? >= index).then_some(())
    });
    let installed = t.elapsed();
    wait_until(60, "the follower to catch up", || {
        (c.status(f)?["applied_index"].as_u64()? >= index).then_some(())
    });
    println!(
        "follower restarted -> snapshot received, verified, stored and installed: {:.2} s (includes process start)",
        installed.as_secs_f64()
    );
    let log = c.log(f);
    if let Some(line) = log.lines().find(|l| l.contains("snapshot installed")) {
        println!("  {line}");
    }
}
