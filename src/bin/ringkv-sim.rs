//! `ringkv-sim`: runs the deterministic simulator over many seeds (`--seeds N`, from
//! `--start`), or replays one seed with its trace (`--seed S`). Exit status 1 on any
//! violation. Its last line is the summary `make sim` promises.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ringkv::sim::{Stats, run_seed};

fn arg(args: &[String], name: &str) -> Option<u64> {
    let i = args.iter().position(|a| a == name)?;
    let v = args
        .get(i + 1)
        .unwrap_or_else(|| die(&format!("{name} needs a value")));
    Some(
        v.parse()
            .unwrap_or_else(|_| die(&format!("{name}: not a number: {v}"))),
    )
}

fn die(msg: &str) -> ! {
    eprintln!("ringkv-sim: {msg}");
    eprintln!("usage: ringkv-sim --seeds N [--start S] [--threads T] | --seed S");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for a in &args {
        if a.starts_with("--")
            && !["--seeds", "--start", "--threads", "--seed"].contains(&a.as_str())
        {
            die(&format!("unknown option {a}"));
        }
    }
    if let Some(seed) = arg(&args, "--seed") {
        let (stats, res, trace) = run_seed(seed, true);
        for line in trace {
            println!("{line}");
        }
        println!("{stats:?}");
        match res {
            Ok(()) => println!("sim: seed={seed} ok"),
            Err(v) => {
                println!("sim: seed={seed} VIOLATION {v}");
                std::process::exit(1);
            }
        }
        return;
    }
    let seeds = arg(&args, "--seeds").unwrap_or_else(|| die("--seeds or --seed is required"));
    let start = arg(&args, "--start").unwrap_or(0);
    let threads = arg(&args, "--threads")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64))
        .max(1);
    let began = Instant::now();
    let next = Arc::new(AtomicU64::new(start));
    let total = Arc::new(Mutex::new((Stats::default(), Vec::new())));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let next = next.clone();
            let total = total.clone();
            std::thread::spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= start + seeds {
                        return;
                    }
                    let (stats, res, _) = run_seed(seed, false);
                    let mut t = total.lock().expect("no panics while locked");
                    t.0.add(&stats);
                    if let Err(v) = res {
                        eprintln!("VIOLATION {v}");
                        eprintln!("  replay: make sim SEED={seed}");
                        t.1.push(v);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("simulation thread panicked");
    }
    let (stats, violations) = std::mem::take(&mut *total.lock().expect("lock"));
    let secs = began.elapsed().as_secs_f64();
    println!(
        "ran {seeds} seeds in {secs:.1}s ({:.1} seeds/s); elections won {}, transfers {}, \
         snapshots installed {}, messages {}, ops completed {}",
        seeds as f64 / secs,
        stats.elections_won,
        stats.transfers,
        stats.snapshots_installed,
        stats.messages,
        stats.ops_ok
    );
    println!(
        "sim: seeds={seeds} violations={} negative_controls_caught=0/0 sim_seconds={:.0} ops={} \
         crashes={} partitions={} membership_changes={}",
        violations.len(),
        stats.sim_us as f64 / 1e6,
        stats.ops,
        stats.crashes,
        stats.partitions,
        stats.membership_changes
    );
    if !violations.is_empty() {
        std::process::exit(1);
    }
}
