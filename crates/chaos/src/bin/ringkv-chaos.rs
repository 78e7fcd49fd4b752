//! `ringkv-chaos`: the fault campaign (`make chaos`). Starts real `ringkv` clusters (a
//! binary built with `crash-sim` and `negative-controls`), applies every nemesis class with
//! clients running, runs the negative controls, and checks every history. Must run in a
//! private network namespace (it changes iptables rules); `make chaos` uses
//! `unshare --net`. Its last line is the summary; exit status 1 when anything failed.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "ringkv-chaos",
    about = "Fault campaign against real ringkv clusters"
)]
struct Args {
    /// Every nemesis once in a fixed order, then the controls (under 10 minutes).
    #[arg(long)]
    quick: bool,
    /// Without --quick: random nemeses for this long (`90s`, `30m`, `1h`).
    #[arg(long, default_value = "10m", value_parser = duration)]
    duration: Duration,
    /// The ringkv binary to run (built with crash-sim and negative-controls).
    #[arg(long, default_value = "target/release/ringkv")]
    bin: PathBuf,
    /// The run directory (emptied first).
    #[arg(long, default_value = "target/chaos")]
    dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 48)]
    clients: u32,
    /// Store clients (txns, ranges, leases) besides them.
    #[arg(long, default_value_t = 4)]
    store_clients: u32,
    /// Run only this negative control (ack_before_persist, read_index_without_quorum,
    /// lease_ignores_drift, sequencer_skips_revisions), to study it; exit status 1 when its
    /// checker missed it.
    #[arg(long)]
    control: Option<String>,
}

fn duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (s, m, h)"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: the unit must be s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() {
    let a = Args::parse();
    if !a.bin.exists() {
        eprintln!(
            "ringkv-chaos: {} does not exist; build it with \
             `cargo build --release --features crash-sim,negative-controls`",
            a.bin.display()
        );
        std::process::exit(2);
    }
    let o = ringkv_chaos::Options {
        bin: a.bin,
        dir: a.dir,
        quick: a.quick,
        duration: a.duration,
        seed: a.seed,
        clients: a.clients,
        store_clients: a.store_clients,
    };
    let r = match &a.control {
        Some(name) => ringkv_chaos::run_control(&o, name),
        None => ringkv_chaos::run(&o),
    };
    match r {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("ringkv-chaos: {e}");
            std::process::exit(2);
        }
    }
}
