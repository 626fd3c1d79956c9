//! `herd`: the command-line interface.

mod checkpoint;
mod inspect;
mod nodes;
mod restart;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "herd",
    version,
    about = "openMosix for today's Linux: move running processes between machines, in user space",
    long_about = "herd captures running Linux processes and restores them, on this machine or another.\n\
                  This version provides checkpoint/restart of single-threaded processes."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Send the command to this node of the local cluster (see `herd cluster`)
    #[arg(long, global = true, env = "HERD_NODE", value_name = "NAME")]
    node: Option<String>,
    /// The local cluster's directory (default: /run/herd/cluster, or per-user)
    #[arg(long, global = true, env = "HERD_CLUSTER", value_name = "DIR")]
    cluster: Option<PathBuf>,
    /// herdd's control socket (default: /run/herd/herdd.sock)
    #[arg(long, global = true, env = "HERD_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Write the image of a running process to a file (it keeps running unless --kill)
    #[command(after_help = "Examples:\n  herd checkpoint 4242 --output job.img\n  herd checkpoint 4242 --output job.img --kill\n  herd checkpoint --check 4242")]
    Checkpoint {
        /// The process to capture
        pid: i32,
        /// Where to write the image
        #[arg(short, long, required_unless_present = "check")]
        output: Option<PathBuf>,
        /// End the process once the image is complete and synced to disk
        #[arg(long, conflicts_with = "check")]
        kill: bool,
        /// Only say whether PID can be checkpointed, and if not every reason why
        #[arg(long)]
        check: bool,
    },
    /// Continue a process from an image, in the foreground, as a child of this command
    #[command(after_help = "herd restart exits with the restored process's exit status, or dies by the same signal.\n\
                            Terminals and pipes it had on fds 0-2 are attached to herd restart's own.")]
    Restart {
        /// The image written by `herd checkpoint`
        image: PathBuf,
    },
    /// Show what an image holds (command, memory regions, open files, signals)
    Inspect {
        image: PathBuf,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Every node of the cluster: state, CPUs, speed, load, memory
    #[command(after_help = "Examples:\n  herd nodes\n  herd --node n2 nodes --json")]
    Nodes {
        /// Print a JSON array (keys: name, address, state, cpus, speed, load, mem_free, mem_total, ...)
        #[arg(long)]
        json: bool,
    },
    /// This node's daemon: version, address, key fingerprint, peers
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Write a new cluster key (mode 0600); every node of a cluster needs the same key
    Keygen {
        /// Where to write it
        #[arg(short, long, value_name = "FILE", default_value = herd_daemon::config::DEFAULT_KEY)]
        output: PathBuf,
    },
    /// A local cluster on this machine: nodes n1..nN in their own namespaces
    Cluster(herd_lab::cli::ClusterArgs),
    #[command(name = "__lab", hide = true)]
    Lab(herd_lab::cli::LabArgs),
}

fn target(node: &Option<String>, cluster: &Option<PathBuf>, socket: &Option<PathBuf>) -> anyhow::Result<nodes::Target> {
    nodes::Target::resolve(socket.clone(), node.as_deref(), cluster.clone())
}

fn main() {
    herd_kernel::task::default_sigpipe();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HERD_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Checkpoint { pid, output, kill, check } => {
            if check {
                checkpoint::check(pid)
            } else {
                checkpoint::run(pid, &output.expect("clap requires --output"), kill)
            }
        }
        Command::Restart { image } => restart::run(&image),
        Command::Inspect { image, json } => inspect::run(&image, json),
        Command::Nodes { json } => target(&cli.node, &cli.cluster, &cli.socket).and_then(|t| nodes::nodes(&t, json)),
        Command::Status { json } => target(&cli.node, &cli.cluster, &cli.socket).and_then(|t| nodes::status(&t, json)),
        Command::Keygen { output } => nodes::keygen(&output),
        Command::Cluster(mut args) => {
            if let Some(dir) = cli.cluster.clone() {
                args.default_dir(dir);
            }
            herd_lab::cli::run(args)
        }
        Command::Lab(args) => herd_lab::cli::run_internal(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("herd: {e:#}");
            std::process::exit(1);
        }
    }
}
