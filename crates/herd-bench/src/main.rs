//! `herd-bench`: how fast herd checkpoints and restarts a process, measured
//! against two baselines taken in the same run on the same machine.
//!
//! - `herd-bench checkpoint` prints the table of docs/benchmarks.md.
//! - `herd-bench hold MIB` is internal: the process that gets checkpointed.
//!
//! See docs/benchmarks.md for the method and how to read the numbers.

#![forbid(unsafe_code)]

mod bench;
mod gossip;
mod hold;
mod report;
mod sys;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "herd-bench", about = "Benchmarks of herd: checkpoint/restart against baselines, cluster gossip")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Time checkpoint and restart of a process holding N MiB, next to a
    /// file-write and a first-touch baseline (needs root).
    Checkpoint {
        /// Memory sizes to test, in MiB, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [64u64, 512, 2048])]
        sizes: Vec<u64>,
        /// Repetitions per size [default: 5 below 2 GiB, 3 from 2 GiB].
        #[arg(long)]
        reps: Option<usize>,
        /// Directory for images and the write baseline [default: /var/tmp,
        /// or the current directory if /var/tmp is a tmpfs].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// How fast a cluster forms and notices a dead node, and what gossip costs per node:
    /// a real local cluster (needs root or user namespaces, and `herd`/`herdd` built next
    /// to herd-bench), then simulated clusters of growing size.
    Gossip {
        /// Simulated cluster sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [3usize, 10, 50, 100, 250, 500, 1000])]
        sizes: Vec<usize>,
        /// Seconds over which traffic is measured.
        #[arg(long, default_value_t = 10)]
        window: u64,
        /// Nodes of the real local cluster (0: skip it).
        #[arg(long, default_value_t = 3)]
        real_nodes: u32,
    },
    /// Internal: fill MIB MiB of memory, print "ready ADDR LEN", sleep forever.
    #[command(hide = true)]
    Hold { mib: u64 },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Checkpoint { sizes, reps, dir } => bench::run(bench::Config { sizes, reps, dir }),
        Cmd::Gossip { sizes, window, real_nodes } => gossip::run(&sizes, std::time::Duration::from_secs(window), real_nodes),
        Cmd::Hold { mib } => hold::run(mib).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("herd-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
