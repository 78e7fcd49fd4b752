//! `ringkv-compat`: the differential tester against a real etcd (`make compat`).

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use ringkv_compat::systems::Systems;
use ringkv_compat::{Report, run};

#[derive(Parser)]
#[command(
    about = "The same seeded etcd API calls to a fresh etcd and a fresh ringkv; every answer compared"
)]
struct Args {
    /// The ringkv binary to run.
    #[arg(long)]
    bin: PathBuf,
    /// Where the systems keep their data (emptied first, removed after each run).
    #[arg(long, default_value = "target/compat")]
    dir: PathBuf,
    /// Sequences to run (seeds first..first+seeds).
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Calls per sequence.
    #[arg(long, default_value_t = 500)]
    calls: usize,
    /// Runs at most spent shrinking one difference.
    #[arg(long, default_value_t = 60)]
    shrink_runs_max: usize,
}

fn main() {
    let a = Args::parse();
    let t = Instant::now();
    let dir = a.dir.clone();
    let bin = a.bin.clone();
    let mut fresh = move || {
        let s = Systems::start(&bin, &dir)?;
        let (e, r) = s.addresses();
        Ok((e, r, Box::new(s) as Box<dyn std::any::Any>))
    };
    match run(
        &mut fresh,
        a.first_seed..a.first_seed + a.seeds,
        a.calls,
        a.shrink_runs_max,
    ) {
        Ok(r) => {
            for (seed, calls, d) in &r.differences {
                eprintln!("{}", Report::describe(*seed, calls, d));
            }
            println!("{} seconds={:.0}", r.summary(), t.elapsed().as_secs_f64());
            if !r.differences.is_empty() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("compat: {e}");
            std::process::exit(2);
        }
    }
}
