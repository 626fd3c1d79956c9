//! `herd-lab`: the `herd cluster` commands (and the hidden `__lab` entry
//! points) without the rest of herd. The `herd` binary offers the same as
//! `herd cluster ...`; this one exists so that the crate's own tests and
//! programs that embed [`herd_lab::LocalCluster`] have an executable for the
//! supervisor and node-init processes.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "herd-lab", version, about = "A local herd cluster on this machine (as `herd cluster`)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A local cluster on this machine: nodes n1..nN in their own namespaces
    Cluster(herd_lab::cli::ClusterArgs),
    #[command(name = "__lab", hide = true)]
    Lab(herd_lab::cli::LabArgs),
}

fn main() {
    herd_kernel::task::default_sigpipe();
    let result = match Cli::parse().command {
        Command::Cluster(args) => herd_lab::cli::run(args),
        Command::Lab(args) => herd_lab::cli::run_internal(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("herd-lab: {e:#}");
            std::process::exit(1);
        }
    }
}
