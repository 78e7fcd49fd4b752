//! The `ringkv` binary: `ringkv serve` (the node, first single-executor version),
//! `ringkv config check [FILE]` and `ringkv wal check|dump DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ringkv", version, about = "A Raft-replicated key-value server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Inspect a write-ahead log directory (read-only).
    Wal {
        #[command(subcommand)]
        cmd: WalCmd,
    },
    /// Validate a node configuration file.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Run a node: `ringkv serve --config config/n1.toml` (or CONFIG_PATH=config/n1).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Parse and validate; exit 0 when valid, 1 naming the key and the reason otherwise.
    Check {
        /// The file (default: $CONFIG_PATH, with or without `.toml`).
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum WalCmd {
    /// Verify every segment; exit 0 when clean or only a torn tail, 1 on corruption.
    Check {
        /// A node's `wal/` directory.
        dir: PathBuf,
    },
    /// Print every live record.
    Dump {
        /// A node's `wal/` directory.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Wal { cmd } => {
            let r = match cmd {
                WalCmd::Check { dir } => ringkv::wal::inspect::check(&dir),
                WalCmd::Dump { dir } => ringkv::wal::inspect::dump(&dir),
            };
            print!("{}", r.text);
            ExitCode::from(r.exit_code as u8)
        }
        Cmd::Config {
            cmd: ConfigCmd::Check { file },
        } => {
            let Some(path) = file.or_else(ringkv::config::path_from_env) else {
                eprintln!("ringkv config check: give a file or set CONFIG_PATH");
                return ExitCode::from(2);
            };
            match ringkv::config::NodeConfig::load(&path) {
                Ok(c) => {
                    println!(
                        "{}: valid: node {} on {}, {} members, {:?}, data in {}",
                        path.display(),
                        c.cluster.node_id,
                        c.cluster.listen_address,
                        c.cluster.initial_cluster.len(),
                        c.raft.persistence.strategy,
                        c.data_dir().display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Serve { config } => {
            let Some(path) = config.or_else(ringkv::config::path_from_env) else {
                eprintln!("ringkv serve: give --config FILE or set CONFIG_PATH");
                return ExitCode::from(2);
            };
            let cfg = match ringkv::config::NodeConfig::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            // $LOG_DIR (what `make start-cluster` sets) overrides cluster.log_dir.
            let log_dir = std::env::var_os("LOG_DIR")
                .filter(|d| !d.is_empty())
                .map_or_else(|| cfg.log_dir(), PathBuf::from);
            if let Err(e) = ringkv::logging::init(&cfg.log_options(log_dir)) {
                eprintln!("ringkv serve ({}): {e}", path.display());
                return ExitCode::from(1);
            }
            match ringkv::node::serve(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ringkv serve ({}): {e}", path.display());
                    ExitCode::from(1)
                }
            }
        }
    }
}
