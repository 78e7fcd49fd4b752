//! Puts per second over HTTP against a real three-node cluster (release `ringkv serve`
//! processes on loopback, DiskFirst, then MemFirst for contrast), with 1 and with 64
//! concurrent clients. Each client is a thread with one keep-alive connection to the
//! leader, writing its own keys (value 256 B) for `HTTP_BENCH_SECS` seconds (default 5).
//! Clients share the machine's two cores with the three nodes, as in `make bench-http`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, Opts, put_on};
use ringkv_client::http1;

struct Run {
    ops: usize,
    errors: usize,
    secs: f64,
    lat_us: Vec<u64>,
}

fn load(port: u16, clients: usize, secs: u64) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let value = "v".repeat(256);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (stop, value) = (stop.clone(), value.clone());
            std::thread::spawn(move || {
                let mut cl =
                    http1::Conn::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(10))
                        .expect("connect");
                let (mut lat, mut errors, mut i) = (Vec::new(), 0usize, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let st = put_on(&mut cl, &format!("c{c}-k{}", i % 10_000), &value);
                    lat.push(t.elapsed().as_micros() as u64);
                    if st != 200 {
                        errors += 1;
                    }
                    i += 1;
                }
                (lat, errors)
            })
        })
        .collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut run = Run {
        ops: 0,
        errors: 0,
        secs: 0.0,
        lat_us: Vec::new(),
    };
    for th in threads {
        let (lat, errors) = th.join().unwrap();
        run.ops += lat.len();
        run.errors += errors;
        run.lat_us.extend(lat);
    }
    run.secs = t.elapsed().as_secs_f64();
    run.lat_us.sort_unstable();
    run
}

fn pct(v: &[u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

fn main() {
    let secs: u64 = std::env::var("HTTP_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!(
        "HTTP puts to the leader of a 3-node ringkv cluster on this machine, value 256 B, {secs} s per row"
    );
    println!(
        "{:<10} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "mode", "clients", "puts/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
    );
    let modes = [
        ("DiskFirst", "strategy = \"DiskFirst\""),
        (
            "MemFirst",
            "strategy = \"MemFirst\"\nflush_policy = { Batch = { threshold = 100, interval_ms = 20 } }",
        ),
    ];
    for (name, persistence) in modes {
        let c = Cluster::new(
            &format!("bench-{name}"),
            Opts {
                persistence,
                // The example configs' timing.
                election_ms: (1000, 2000),
                heartbeat_ms: 100,
                lease_ms: 500,
                ..Opts::default()
            },
        );
        let l = c.leader();
        for clients in [1, 64] {
            let r = load(c.ports[l], clients, secs);
            println!(
                "{:<10} {:>7} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7}",
                name,
                clients,
                r.ops as f64 / r.secs,
                pct(&r.lat_us, 0.50),
                pct(&r.lat_us, 0.99),
                pct(&r.lat_us, 0.999),
                pct(&r.lat_us, 1.0),
                r.errors
            );
        }
    }
}
