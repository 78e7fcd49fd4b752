//! The `ringkv` binary: `ringkv wal check|dump DIR` today; the server (`ringkv serve`) and
//! the client commands arrive with the node issue, and until then `serve` says so.

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
    /// Run a node (not built yet: see the node issue).
    Serve,
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
        Cmd::Serve => {
            eprintln!(
                "ringkv {}: the server is not built yet (node issue); only the Raft core and \
                 the WAL exist",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::from(2)
        }
    }
}
