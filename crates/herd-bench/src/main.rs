//! `herd-bench`: how fast herd checkpoints and restarts a process, measured
//! against two baselines taken in the same run on the same machine.
//!
//! - `herd-bench checkpoint` prints the table of docs/benchmarks.md: herd's
//!   checkpoint and restart against baselines and CRIU measured in the same run.
//! - `herd-bench gossip`: cluster formation, failure detection, gossip traffic.
//! - `herd-bench migrate`: live migration on a local cluster against TCP and
//!   native baselines.
//! - `herd-bench stream`: herd's node stream (Noise, AES-GCM) against plain TCP
//!   over loopback.
//! - `herd-bench watch`: herdd's CPU while a dashboard page and `herd top` watch 1,000
//!   migratable processes.
//! - `herd-bench balance-sim`: the balancing policy on a simulated cluster of
//!   a thousand nodes, against placements without migration.
//! - `herd-bench hold MIB` is internal: the process that gets checkpointed;
//!   `__tcp-sink`, `__tcp-source`, `__pong` and `__ping` are the TCP helpers
//!   `migrate` runs inside the nodes.
//!
//! See docs/benchmarks.md for the method and how to read the numbers.

#![forbid(unsafe_code)]

mod balance;
mod balance_sim;
mod bench;
mod build;
mod gossip;
mod hold;
mod files;
mod migrate;
mod report;
mod stream;
mod survive;
mod sys;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "herd-bench", about = "Benchmarks of herd: checkpoint/restart against baselines, cluster gossip, live migration")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// herd's node stream (Noise XXpsk3, AES-256-GCM through ring) carrying 1 MiB messages
    /// over loopback, beside plain TCP over loopback in the same run. No root needed.
    Stream {
        /// MiB per measurement.
        #[arg(long, default_value_t = 2048)]
        mib: u64,
        /// Repetitions (interleaved).
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
    /// Time checkpoint and restart of a process holding N MiB (or a tree of them),
    /// next to file-write and first-touch baselines and CRIU, in one run (needs root).
    ///
    /// Each repetition, each timed step after a memory warm-up: write the working size
    /// to a file; touch as much fresh memory; herd checkpoint and restart of a fresh
    /// `herd-bench hold`; CRIU's dump and restore of another (`criu-4 dump` and
    /// `criu-4 restore -d`, wall time of each command). Restored processes have their
    /// memory checked. The CRIU columns show "-" without criu-4 or with --no-criu.
    /// See docs/benchmarks.md.
    Checkpoint {
        /// Memory sizes to test, in MiB held by each process, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [64u64, 512, 2048])]
        sizes: Vec<u64>,
        /// Repetitions per row [default: 5 below a working size (size × procs) of
        /// 2 GiB, 3 from 2 GiB].
        #[arg(long)]
        reps: Option<usize>,
        /// Threads of each checkpointed process, comma-separated: every size is
        /// measured with each count (the extra threads sleep).
        #[arg(long, value_delimiter = ',', default_values_t = [1usize])]
        threads: Vec<usize>,
        /// Processes of the checkpointed tree, comma-separated: every size is
        /// measured with each count; with P > 1 the process starts P-1 children,
        /// and each of the P processes holds the size (and the threads) itself.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize])]
        procs: Vec<usize>,
        /// Leave CRIU out (by default `criu-4 dump` and `criu-4 restore` are
        /// measured in each repetition when /usr/local/sbin/criu-4 or criu-4 on
        /// the PATH exists).
        #[arg(long)]
        no_criu: bool,
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
    /// Live migration between the two nodes of a local cluster, next to baselines taken
    /// in the same run (needs root and a release build of the workspace).
    ///
    /// Brings up a 2-node local cluster (herd-lab: each node in its own namespaces with its
    /// own herdd and, on a machine with 2 or more CPUs, its own cpuset of one CPU), runs a
    /// small C program (compiled with gcc into the cluster's directory) in n1 as uid 65534
    /// under `herd run`, and moves it with herdd's control protocol. Prints these tables:
    ///
    /// 1. moving a process holding N MiB (--sizes) n1 -> n2 and back home: frozen ms, total
    ///    ms, MiB/s of the move, beside TCP throughput n1 -> n2 over the same bridge;
    ///
    /// 2. forwarded system calls: mean µs of write(/dev/null, 1 byte) and getppid() at home
    ///    and on n2, beside a 1-byte TCP round trip n2 -> n1 (goal: forwarded <= 1.5x TCP);
    ///
    /// 3. CPU-bound work at home and on n2, interleaved (goal: n2/home <= 1.02);
    ///
    /// 4. (only with `--parts threads`) a process holding the first --sizes MiB with 1, 8 and
    ///    64 threads moved n1 -> n2 -> home (stop time), and forwarded getppid() from 1, 4
    ///    and 8 threads at once (calls per second, at home and on n2).
    ///
    /// 5. (only with `--parts files`) sha256sum of a --file-mib file and writing one
    ///    (32 KiB writes, fsync) on n2 (`herd run --node n2`): in a directory both nodes
    ///    share (direct file access), in one they do not (forwarded), and at home; interleaved.
    ///
    /// 6. (only with `--parts forks`) forks of a small process at home and on n2 (goal: n2
    ///    forks at least 1/4 as fast), and its forwarded getppid() on n2 before and after its
    ///    first fork there.
    ///
    /// Must run as root (the cluster, uid 65534 for the moved process) from a release build:
    /// `cargo build --release --workspace`, then `target/release/herd-bench migrate`; herd
    /// and herdd are taken from herd-bench's own directory, gcc, setpriv and ip (iproute2)
    /// must be installed. Progress goes to stderr, the tables to stdout. The exit status is
    /// non-zero when something failed (a move, a baseline, the memory check), not for a
    /// missed goal. The cluster is taken down at the end; its directory (herdd logs) is kept
    /// when something failed. See docs/benchmarks.md, "Migration".
    #[command(verbatim_doc_comment)]
    Migrate {
        /// Working sizes of part 1, in MiB, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [64u64, 512, 2048])]
        sizes: Vec<u64>,
        /// Repetitions of every measurement.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// System calls of each kind per measurement, and TCP round trips (part 2).
        #[arg(long, default_value_t = 20_000)]
        calls: u64,
        /// MiB sent by the TCP throughput baseline (part 1).
        #[arg(long, default_value_t = 1024)]
        tcp_mib: u64,
        /// Seconds of CPU work per run, calibrated at home (part 3).
        #[arg(long, default_value_t = 2.5)]
        cpu_secs: f64,
        /// Which parts to run, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [migrate::Part::Move, migrate::Part::Syscalls, migrate::Part::Cpu])]
        parts: Vec<migrate::Part>,
        /// Part 1: how the process leaves home (stop-and-copy, post-copy), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "stop-and-copy,post-copy", value_parser = parse_mode)]
        modes: Vec<herd_daemon::control::MoveMode>,
        /// Part 1: how fast it rewrites its memory while leaving: idle, a rate in MB/s, or max; comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "idle,100,max")]
        dirty: Vec<migrate::Dirty>,
        /// Keep the cluster's directory (herdd logs, the program) also after a clean run.
        #[arg(long)]
        keep: bool,
        /// The files part: MiB of the file sha256sum reads and of the file written.
        #[arg(long, default_value_t = 1024)]
        file_mib: u64,
    },
    /// Automatic balancing on the local cluster: 2 nodes × 1 CPU, N CPU-bound jobs
    /// started on n1; makespan against the ideal and against all jobs on n1 (needs root).
    Balance {
        /// How many jobs.
        #[arg(long, default_value_t = 8)]
        jobs: usize,
        /// About how long one job runs alone, seconds.
        #[arg(long, default_value_t = 5.0)]
        job_secs: f64,
        /// Keep the cluster's directory (logs) afterwards.
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        json: bool,
    },
    /// A make -j build on the local cluster (2 nodes × 1 CPU): confined to n1, under
    /// `herd run` with the sources on a shared directory (direct access), and with the
    /// sources at home only (needs root). docs/benchmarks.md, "A make -j build".
    Build {
        /// Translation units (each about 1.5-2 s of cc -O2 alone).
        #[arg(long, default_value_t = 12)]
        units: usize,
        /// make -j.
        #[arg(long, default_value_t = 6)]
        jobs: usize,
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Keep the cluster's directory (logs) afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// What watching costs herdd: 1,000 migratable processes on n1 of a local cluster,
    /// herdd's CPU with and without a dashboard page and `herd top` watching, bytes a
    /// second to the page (needs root). docs/benchmarks.md, "Watching".
    Watch {
        /// Migratable processes on n1 (sleeps of one job).
        #[arg(long, default_value_t = 1000)]
        procs: usize,
        /// Seconds per measured window.
        #[arg(long, default_value_t = 10.0)]
        window: f64,
        /// Pairs of windows (no one watching, watched), alternated.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Keep the cluster's directory (logs) afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Surviving a node's death, on a two-node local cluster (needs root; release build):
    ///
    /// 1. the cost of periodic checkpoints: CPU work of a --mib process on n2 with a
    ///    checkpoint every --every seconds against none, interleaved (goal: <= 2 % slower);
    ///    the stop and size of each checkpoint;
    /// 2. from a fault on n2 (its herdd killed; its herdd stopped, which only membership
    ///    notices) to the process resumed and answering again (goal: within 5 s);
    /// 3. --rounds chaos rounds on a 3-node cluster of their own: moves n1 -> n2 or n3
    ///    (sometimes on to the other) -> home, with the target's herdd killed during the
    ///    move there or on, while the process runs there or during the move home (whose
    ///    source it is), or stopped for 3 s, or its whole node killed (and made again),
    ///    or (a herdd built with failpoints: `cargo build --release -p herd-bench -p
    ///    herd-daemon --features herd-bench/failpoints`) a fault at a random step of the
    ///    move there or home; processes lost, running twice, memory checks failed and
    ///    answers missing or twice (goal: 0).
    ///
    /// docs/benchmarks.md, "Survival".
    #[command(verbatim_doc_comment)]
    Survive {
        /// MiB the process under test holds (part 1; parts 2 and 3 use at most 256 and 64).
        #[arg(long, default_value_t = 512)]
        mib: u64,
        /// Seconds between checkpoints (part 1).
        #[arg(long, default_value_t = 10.0)]
        every: f64,
        /// Seconds of CPU work per run (part 1).
        #[arg(long, default_value_t = 30.0)]
        cpu_secs: f64,
        /// MB/s of its memory the process rewrites while it works (part 1; 0: none).
        #[arg(long, default_value_t = 0)]
        dirty: u64,
        /// Repetitions of parts 1 and 2.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Chaos rounds (part 3; 0 leaves it out).
        #[arg(long, default_value_t = 40)]
        rounds: usize,
        /// Seed of the chaos run's faults.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Only the chaos run (part 3).
        #[arg(long)]
        chaos_only: bool,
        /// The nodes share every CPU of the machine instead of one each (herdd then has a
        /// CPU besides the process's: a node with more than one).
        #[arg(long)]
        shared_cpus: bool,
        /// Keep the cluster's directory (logs) afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// herd's balancing policy on a simulated cluster (1000 nodes of mixed speeds and CPUs,
    /// heavy-tailed jobs), next to no balancing, random placement and an omniscient
    /// placement, on the same job trace. Pure computation: no root, no cluster. See
    /// docs/benchmarks.md, "Balancing (simulated)".
    BalanceSim {
        /// Simulated nodes.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Seconds during which jobs arrive (the run goes on until they are all done).
        #[arg(long, default_value_t = 3600.0)]
        seconds: f64,
        /// CPU work offered, as a fraction of the cluster's capacity.
        #[arg(long, default_value_t = 0.7)]
        utilisation: f64,
        /// Seed of the job trace and of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Short jobs, as a build farm's compiler runs: lifetimes of 0.3 to 10 s (not 1 to
        /// 1,000), resident sizes up to 256 MiB (not 2 GiB).
        #[arg(long)]
        short_jobs: bool,
        /// herd's policy without placement at birth (`birth_placement = false`: a new
        /// process waits out `min_residence` before its first move).
        #[arg(long)]
        no_birth_placement: bool,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Internal: start PROCS-1 children that do the same, fill MIB MiB of memory,
    /// start THREADS-1 sleeping threads, print "ready ADDR LEN" and the children,
    /// sleep until herd-bench is gone.
    #[command(hide = true)]
    Hold {
        mib: u64,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value_t = 1)]
        procs: usize,
        /// Run as child K of the tree (reports to the root, lives as long as it).
        #[arg(long)]
        member: Option<usize>,
    },
    /// Internal (migrate): accept one TCP connection on PORT, read it to its end.
    #[command(name = "__tcp-sink", hide = true)]
    TcpSink { port: u16 },
    /// Internal (migrate): send BYTES to ADDR, print the time until acknowledged.
    #[command(name = "__tcp-source", hide = true)]
    TcpSource { addr: std::net::SocketAddr, bytes: u64 },
    /// Internal (migrate): echo one TCP connection on PORT byte by byte.
    #[command(name = "__pong", hide = true)]
    Pong { port: u16 },
    /// Internal (migrate): N 1-byte round trips to ADDR, print the mean.
    #[command(name = "__ping", hide = true)]
    Ping { addr: std::net::SocketAddr, n: u64 },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Checkpoint { sizes, reps, threads, procs, no_criu, dir } => {
            bench::run(bench::Config { sizes, threads, procs, reps, dir, criu: !no_criu })
        }
        Cmd::Gossip { sizes, window, real_nodes } => gossip::run(&sizes, std::time::Duration::from_secs(window), real_nodes),
        Cmd::Migrate { sizes, reps, calls, tcp_mib, cpu_secs, parts, modes, dirty, keep, file_mib } => {
            migrate::run(migrate::Config { sizes, reps, calls, tcp_mib, cpu_secs, parts, modes, dirty, keep, file_mib })
        }
        Cmd::Balance { jobs, job_secs, keep, json } => balance::run(balance::Config { jobs, job_secs, keep, json }),
        Cmd::Build { units, jobs, reps, keep } => build::run(build::Config { units, jobs, reps, keep }),
        Cmd::Watch { procs, window, reps, keep } => watch::run(watch::Config { procs, window, reps, keep }),
        Cmd::Survive { mib, every, cpu_secs, dirty, reps, rounds, seed, chaos_only, shared_cpus, keep } => {
            survive::run(survive::Config { mib, every, cpu_secs, dirty, reps, rounds, seed, chaos_only, shared_cpus, keep })
        }
        Cmd::BalanceSim { nodes, seconds, utilisation, seed, short_jobs, no_birth_placement, json } => {
            balance_sim::run(balance_sim::Config { nodes, seconds, utilisation, seed, short_jobs, birth_placement: !no_birth_placement, json })
        }
        Cmd::Hold { mib, threads, procs, member } => hold::run(mib, threads, procs, member).map(|()| true),
        Cmd::Stream { mib, reps } => stream::run(mib, reps),
        Cmd::TcpSink { port } => migrate::tcp_sink(port).map(|()| true),
        Cmd::TcpSource { addr, bytes } => migrate::tcp_source(addr, bytes).map(|()| true),
        Cmd::Pong { port } => migrate::pong(port).map(|()| true),
        Cmd::Ping { addr, n } => migrate::ping(addr, n).map(|()| true),
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

fn parse_mode(s: &str) -> Result<herd_daemon::control::MoveMode, String> {
    match s {
        "stop-and-copy" => Ok(herd_daemon::control::MoveMode::StopAndCopy),
        "post-copy" | "postcopy" => Ok(herd_daemon::control::MoveMode::PostCopy),
        other => Err(format!("{other:?}: want stop-and-copy or post-copy")),
    }
}
