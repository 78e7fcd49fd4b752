//! `ringkv-sim`: runs the deterministic simulator over many seeds (`--seeds N`, from
//! `--start`) and then every negative control, or replays one seed with its trace
//! (`--seed S [--control NAME]`). Exit status 1 on any violation or missed control. Its last
//! line is the summary `make sim` promises.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use ringkv_raft::Controls;
use ringkv_sim::scripted::{self, Script};
use ringkv_sim::{Control, Stats, Violation, run_seed};

/// Seeds a negative control may take before it counts as missed.
const CONTROL_SEEDS_MAX: u64 = 400;
/// Seeds each scripted schedule runs with.
const SCRIPT_SEEDS: u64 = 10;

/// The scripted schedule aimed at a control, for interleavings random schedules rarely hit.
fn script_for(control: Control) -> Option<Script> {
    match control {
        Control::CommitOlderTermByCounting => Some(Script::Figure8),
        Control::MembershipBeforeNoop => Some(Script::MembershipBeforeNoop),
        Control::LeaseIgnoresDrift => Some(Script::LeaseAtDriftBound),
        _ => None,
    }
}

/// How a control was caught.
enum Caught {
    Random(Violation),
    Scripted(Script, u64, String),
}

/// A violation's first line, cut to a summary's width (the store's checks print whole
/// answers; `make sim SEED=S CONTROL=Name` shows them in full).
fn headline(what: &str) -> String {
    const WIDTH: usize = 200;
    let first = what.lines().next().unwrap_or("");
    match first.char_indices().nth(WIDTH) {
        Some((cut, _)) => format!("{} ...", &first[..cut]),
        None => first.to_string(),
    }
}

fn value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == name)?;
    Some(
        args.get(i + 1)
            .unwrap_or_else(|| die(&format!("{name} needs a value"))),
    )
}

fn number(args: &[String], name: &str) -> Option<u64> {
    value(args, name).map(|v| {
        v.parse()
            .unwrap_or_else(|_| die(&format!("{name}: not a number: {v}")))
    })
}

fn die(msg: &str) -> ! {
    eprintln!("ringkv-sim: {msg}");
    eprintln!("usage: ringkv-sim --seeds N [--start S] [--threads T] | --seed S [--control NAME]");
    eprintln!(
        "controls: {}",
        Control::ALL.map(|c| format!("{c:?}")).join(", ")
    );
    std::process::exit(2);
}

fn parse_control(name: &str) -> Control {
    Control::ALL
        .into_iter()
        .find(|c| format!("{c:?}").eq_ignore_ascii_case(name))
        .unwrap_or_else(|| die(&format!("unknown control {name}")))
}

/// Runs `jobs` on `threads` threads; `work(i)` handles job i.
fn parallel(threads: u64, jobs: usize, work: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= jobs {
                        return;
                    }
                    work(i);
                }
            });
        }
    });
}

fn main() {
    // A panic inside a seed (an invariant asserted in the core) is reported as a violation
    // with its message; the default hook's backtrace would only bury the summary.
    ringkv_sim::install_panic_hook();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let known = ["--seeds", "--start", "--threads", "--seed", "--control"];
    for a in args.iter().filter(|a| a.starts_with("--")) {
        if !known.contains(&a.as_str()) {
            die(&format!("unknown option {a}"));
        }
    }
    if let Some(seed) = number(&args, "--seed") {
        let control = value(&args, "--control").map(parse_control);
        let (stats, res, trace) = run_seed(seed, control, true);
        for line in trace {
            println!("{line}");
        }
        println!("{stats:?}");
        match res {
            Ok(()) => println!("sim: seed={seed} control={control:?} ok"),
            Err(v) => {
                println!("sim: seed={seed} control={control:?} VIOLATION {v}");
                std::process::exit(1);
            }
        }
        return;
    }
    let seeds = number(&args, "--seeds").unwrap_or_else(|| die("--seeds or --seed is required"));
    let start = number(&args, "--start").unwrap_or(0);
    let threads = number(&args, "--threads")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64))
        .max(1);
    let began = Instant::now();

    // 1. The seeds, with the protocol as built.
    let total: Mutex<(Stats, Vec<Violation>)> = Mutex::new((Stats::default(), Vec::new()));
    parallel(threads, seeds as usize, |i| {
        let seed = start + i as u64;
        let (stats, res, _) = run_seed(seed, None, false);
        let mut t = total.lock().expect("lock");
        t.0.add(&stats);
        if let Err(v) = res {
            eprintln!("VIOLATION {v}");
            eprintln!("  replay: make sim SEED={seed}");
            t.1.push(v);
        }
    });
    let (stats, mut violations) = total.into_inner().expect("lock");
    let secs = began.elapsed().as_secs_f64();

    // The scripted schedules must pass with the protocol as built.
    for script in Script::ALL {
        for seed in start..start + SCRIPT_SEEDS {
            if let Err(what) = scripted::run(script, seed, Controls::default()) {
                eprintln!("VIOLATION scripted {script:?} seed {seed}: {what}");
                let what = format!("{script:?}: {what}");
                violations.push(Violation {
                    seed,
                    at_us: 0,
                    what,
                    safety: true,
                });
            }
        }
    }

    // 2. Each negative control must be caught by a checker: by its scripted schedule if it
    // has one, else by random seeds (up to CONTROL_SEEDS_MAX).
    let caught: Vec<Mutex<Option<Caught>>> =
        Control::ALL.iter().map(|_| Mutex::new(None)).collect();
    let tried: Vec<AtomicU64> = Control::ALL.iter().map(|_| AtomicU64::new(0)).collect();
    parallel(threads, Control::ALL.len(), |ci| {
        let control = Control::ALL[ci];
        if let Some(script) = script_for(control) {
            for seed in start..start + SCRIPT_SEEDS {
                tried[ci].fetch_add(1, Ordering::Relaxed);
                match scripted::run(script, seed, control.controls()) {
                    Err(what) if what.starts_with("script:") => {
                        eprintln!("scripted {script:?} seed {seed} under {control:?}: {what}");
                    }
                    Err(what) => {
                        *caught[ci].lock().expect("lock") =
                            Some(Caught::Scripted(script, seed, what));
                        return;
                    }
                    Ok(()) => {}
                }
            }
        }
        for seed in start..start + CONTROL_SEEDS_MAX {
            tried[ci].fetch_add(1, Ordering::Relaxed);
            // Only a safety invariant, the checker or a core assertion counts as a catch.
            if let (_, Err(v), _) = run_seed(seed, Some(control), false)
                && v.safety
            {
                *caught[ci].lock().expect("lock") = Some(Caught::Random(v));
                return;
            }
        }
    });
    let mut caught_n = 0;
    for (ci, control) in Control::ALL.iter().enumerate() {
        match caught[ci].lock().expect("lock").take() {
            Some(Caught::Random(v)) => {
                caught_n += 1;
                let first = headline(&v.what);
                println!(
                    "control {control:?}: caught at seed {} ({:.3}s): {first}",
                    v.seed,
                    v.at_us as f64 / 1e6
                );
            }
            Some(Caught::Scripted(script, seed, what)) => {
                caught_n += 1;
                let first = headline(&what);
                println!(
                    "control {control:?}: caught by scripted {script:?} at seed {seed}: {first}"
                );
            }
            None => println!(
                "control {control:?}: MISSED in {} runs",
                tried[ci].load(Ordering::Relaxed)
            ),
        }
    }
    println!(
        "ran {seeds} seeds in {secs:.1}s ({:.1} seeds/s); elections won {}, transfers {}, \
         snapshots installed {}, messages {}, ops completed {}; all in {:.1}s",
        seeds as f64 / secs,
        stats.elections_won,
        stats.transfers,
        stats.snapshots_installed,
        stats.messages,
        stats.ops_ok,
        began.elapsed().as_secs_f64()
    );
    println!(
        "sim: seeds={seeds} violations={} negative_controls_caught={caught_n}/{} sim_seconds={:.0} \
         ops={} crashes={} partitions={} membership_changes={} store_ops={}",
        violations.len(),
        Control::ALL.len(),
        stats.sim_us as f64 / 1e6,
        stats.ops,
        stats.crashes,
        stats.partitions,
        stats.membership_changes,
        stats.store_ops
    );
    if !violations.is_empty() || caught_n != Control::ALL.len() {
        std::process::exit(1);
    }
}
