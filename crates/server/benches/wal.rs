//! `make bench-wal`: the WAL against the raw disk, side by side in one run.
//!
//! For 256-byte entries at 1, 64 and 1024 entries per fdatasync: appends/s, payload MB/s
//! and fdatasyncs/s through `Wal` (one Ready = one batch = one fdatasync, one flush
//! worker so each sync is measured on its own), beside the raw figure: an O_DIRECT write
//! of the same aligned byte count plus fdatasync, sequential in a pre-zeroed file.
//! "serial": one flush worker, each Ready waited for before the next (encoding is not
//! overlapped with I/O). "pipelined": the default four flush workers with Readies handed
//! over as fast as workers free up, as the raft core does; still one fdatasync per batch.
//! Then the latency of a single-entry append+sync (p50, p99), serial. Targets (WAL
//! issue): single-entry p50 within 1.3x raw; at 1024 entries per sync, throughput at
//! least 0.7x raw. Prints PASS/FAIL per target; exits 1 on a miss.
//!
//! Data goes to `target/bench-wal/` (ext4 here; O_DIRECT needs a real filesystem).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::io::OpenOptions;
use glommio::{LocalExecutorBuilder, Placement};
use ringkv_raft::{Entry, EntryKind};
use ringkv_server::wal::format::{BLOCK, batch_bytes};
use ringkv_server::wal::{DmaDisk, Wal, WalOptions};

const ENTRY_BYTES: usize = 256;
const CASE_SECONDS: f64 = 1.0;
/// Each case runs this many times, alternating WAL and raw; figures are medians.
const REPEATS: usize = 3;
/// Flush workers of the pipelined runs (`WalOptions::new`'s default).
const PIPELINE_WORKERS: usize = 4;
const SEGMENT_BYTES: u64 = 64 << 20;

struct Stats {
    ops: u64,
    secs: f64,
    lat_ns: Vec<u64>,
}

impl Stats {
    fn pct(&mut self, p: f64) -> f64 {
        self.lat_ns.sort_unstable();
        let i = ((self.lat_ns.len() as f64 * p).ceil() as usize).clamp(1, self.lat_ns.len());
        self.lat_ns[i - 1] as f64 / 1000.0
    }
}

fn entries(first: u64, n: usize) -> Vec<Entry> {
    let data = Bytes::from(vec![0xA5u8; ENTRY_BYTES]);
    (0..n as u64)
        .map(|i| Entry {
            index: first + i,
            term: 1,
            kind: EntryKind::Normal,
            data: data.clone(),
        })
        .collect()
}

/// Raw: aligned O_DIRECT write of `bytes` + fdatasync, sequentially in a pre-zeroed file.
async fn raw(dir: &Path, bytes: usize) -> Stats {
    let path = dir.join("raw.dat");
    let _ = std::fs::remove_file(&path);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(&path)
        .await
        .unwrap();
    // Pre-zero, as WAL segments are.
    let mut at = 0;
    while at < SEGMENT_BYTES {
        let mut b = f.alloc_dma_buffer(1 << 20);
        b.as_bytes_mut().fill(0);
        f.write_at(b, at).await.unwrap();
        at += 1 << 20;
    }
    f.fdatasync().await.unwrap();
    let len = bytes.div_ceil(BLOCK) * BLOCK;
    let mut pos = 0u64;
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < CASE_SECONDS {
        if pos + len as u64 > SEGMENT_BYTES {
            pos = 0; // rewrite from the start (blocks stay allocated and zero-filled once)
        }
        let mut b = f.alloc_dma_buffer(len);
        b.as_bytes_mut().fill(0x5A);
        let t = Instant::now();
        f.write_at(b, pos).await.unwrap();
        f.fdatasync().await.unwrap();
        lat.push(t.elapsed().as_nanos() as u64);
        pos += len as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    f.close().await.unwrap();
    let _ = std::fs::remove_file(&path);
    Stats {
        ops: lat.len() as u64,
        secs,
        lat_ns: lat,
    }
}

/// Through the WAL: one Ready of `per_sync` entries at a time, waited for.
async fn wal(dir: &Path, per_sync: usize, workers: usize, pipelined: bool) -> (Stats, u64) {
    let _ = std::fs::remove_dir_all(dir.join("node"));
    let data_dir = dir.join("node");
    let disk = DmaDisk::new(&data_dir).await.unwrap();
    let opts = WalOptions {
        segment_bytes_max: std::env::var("SEG")
            .map(|s| s.parse().unwrap())
            .unwrap_or(SEGMENT_BYTES),
        batch_bytes_max: 512 << 10,
        flush_workers: workers,
        ..WalOptions::new(&data_dir)
    };
    let (mut w, _) = Wal::open(disk, opts, (0, 0)).await.unwrap();
    // Let the first spare segment finish pre-zeroing before timing (start-up cost).
    glommio::timer::sleep(Duration::from_millis(300)).await;
    let mut next = 1u64;
    let mut number = 0u64;
    let mut lat = Vec::new();
    let mut sent_at = std::collections::VecDeque::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < CASE_SECONDS {
        number += 1;
        let es = entries(next, per_sync);
        next += per_sync as u64;
        let t = Instant::now();
        w.persist(number, None, false, None, &es).await.unwrap();
        if pipelined {
            sent_at.push_back((number, t));
            for n in w.take_completed() {
                while sent_at.front().is_some_and(|(m, _)| *m <= n) {
                    let (_, t0) = sent_at.pop_front().unwrap();
                    lat.push(t0.elapsed().as_nanos() as u64);
                }
            }
        } else {
            let n = w.next_persisted().await.unwrap().expect("one in flight");
            assert_eq!(n, number);
            lat.push(t.elapsed().as_nanos() as u64);
        }
    }
    w.drain().await.unwrap();
    for n in w.take_completed() {
        while sent_at.front().is_some_and(|(m, _)| *m <= n) {
            let (_, t0) = sent_at.pop_front().unwrap();
            lat.push(t0.elapsed().as_nanos() as u64);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let fsyncs = w.stats().fsyncs;
    drop(w);
    let _ = std::fs::remove_dir_all(dir.join("node"));
    (
        Stats {
            ops: number,
            secs,
            lat_ns: lat,
        },
        fsyncs,
    )
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-wal");
    std::fs::create_dir_all(&dir).unwrap();
    let ok = LocalExecutorBuilder::new(Placement::Fixed(0))
        .name("bench-wal")
        .spawn(move || async move { run(&dir).await })
        .unwrap()
        .join()
        .unwrap();
    std::process::exit(if ok { 0 } else { 1 });
}

async fn run(dir: &Path) -> bool {
    // The polled-I/O probe must see a non-empty read-only file first (see DmaDisk::new).
    let _probe = DmaDisk::new(dir).await.unwrap();
    println!(
        "WAL vs raw O_DIRECT+fdatasync, {ENTRY_BYTES}-byte entries, {CASE_SECONDS} s per case, \
         medians of {REPEATS} alternating runs, one executor pinned to CPU 0"
    );
    println!(
        "{:>8} | {:>10} {:>7} | {:>10} {:>7} {:>7} {:>5} | {:>10} {:>7} {:>7} {:>5}",
        "ent/sync",
        "raw app/s",
        "MB/s",
        "serial",
        "MB/s",
        "syncs/s",
        "ratio",
        "pipelined",
        "MB/s",
        "syncs/s",
        "ratio"
    );
    let mut all_ok = true;
    let mut single = None;
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let mb = |app: f64| app * ENTRY_BYTES as f64 / 1e6;
    for per in [1usize, 64, 1024] {
        let bytes = batch_bytes(&entries(1, per));
        let (mut r_app, mut s_app, mut s_syn, mut p_app, mut p_syn) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut lat_w, mut lat_r) = (Vec::new(), Vec::new());
        for _ in 0..REPEATS {
            let mut r = raw(dir, bytes).await;
            r_app.push(r.ops as f64 * per as f64 / r.secs);
            lat_r.push((r.pct(0.5), r.pct(0.99)));
            let (mut w, fsyncs) = wal(dir, per, 1, false).await;
            s_app.push(w.ops as f64 * per as f64 / w.secs);
            s_syn.push(fsyncs as f64 / w.secs);
            lat_w.push((w.pct(0.5), w.pct(0.99)));
            let (w, fsyncs) = wal(dir, per, PIPELINE_WORKERS, true).await;
            p_app.push(w.ops as f64 * per as f64 / w.secs);
            p_syn.push(fsyncs as f64 / w.secs);
        }
        let (r_app, s_app, s_syn, p_app, p_syn) = (
            median(r_app),
            median(s_app),
            median(s_syn),
            median(p_app),
            median(p_syn),
        );
        println!(
            "{per:>8} | {r_app:>10.0} {:>7.1} | {s_app:>10.0} {:>7.1} {s_syn:>7.0} {:>5.2} | \
             {p_app:>10.0} {:>7.1} {p_syn:>7.0} {:>5.2}",
            mb(r_app),
            mb(s_app),
            s_app / r_app,
            mb(p_app),
            p_app / r_app,
        );
        if per == 1 {
            let m = |v: &Vec<(f64, f64)>, i: usize| {
                median(v.iter().map(|x| if i == 0 { x.0 } else { x.1 }).collect())
            };
            single = Some((m(&lat_w, 0), m(&lat_w, 1), m(&lat_r, 0), m(&lat_r, 1)));
        }
        if per == 1024 {
            let ratio = p_app / r_app;
            let pass = ratio >= 0.7;
            all_ok &= pass;
            println!(
                "  target: 1024 entries/sync throughput >= 0.7x raw (WAL as configured by \
                 default, {PIPELINE_WORKERS} flush workers): {ratio:.2}x {}; serial, one \
                 batch at a time: {:.2}x",
                if pass { "PASS" } else { "FAIL" },
                s_app / r_app
            );
        }
    }
    let (wp50, wp99, rp50, rp99) = single.expect("measured");
    let ratio = wp50 / rp50;
    let pass = ratio <= 1.3;
    all_ok &= pass;
    println!(
        "single-entry append+sync latency (serial): wal p50 {wp50:.0} us p99 {wp99:.0} us | \
         raw p50 {rp50:.0} us p99 {rp99:.0} us | p50 ratio {ratio:.2}x (target <= 1.3x) {}",
        if pass { "PASS" } else { "FAIL" }
    );
    all_ok
}
