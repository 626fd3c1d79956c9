//! `herd`: the command-line interface.

mod checkpoint;
mod ctl;
mod demo;
mod inspect;
mod migrate;
mod mon;
mod nodes;
mod ps;
mod restart;
mod run;
mod top;
mod tui;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "herd",
    version,
    about = "openMosix for today's Linux: move running processes between machines, in user space",
    long_about = "herd moves running Linux processes between machines, in user space, as openMosix did in the kernel.\n\n\
                  It checkpoints a process to an image and restarts it (herd checkpoint, restart, inspect); \
                  runs a cluster daemon on each node, herdd, shows the cluster and sets how a node takes part \
                  (herd nodes, status, ctl, keygen), or builds a local one on this machine for trying it out \
                  (herd cluster, herd demo); and starts processes that the cluster may move, moves them, \
                  locks them and lists them (herd run, migrate, lock, unlock, ps).\n\n\
                  Start with `herd demo` (as root): a local cluster balances CPU-bound jobs while you watch.\n\n\
                  Watch it live with herd top (every process, every node) and herd mon (a bar per node).\n\n\
                  Installed under the names of the MOSIX tools (symlinks to herd: mosrun, migrate, mps, mosctl, native, mtop, mosmon), \
                  it acts as herd run, herd migrate, herd ps, herd ctl, herd run --native, herd top and herd mon:\n  \
                  for n in mosrun migrate mps mosctl native mtop mosmon; do ln -s herd /usr/local/bin/$n; done"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Send the command to this node of the local cluster (see `herd cluster`), as in `herd --node n2 ps`
    #[arg(long, env = "HERD_NODE", value_name = "NAME")]
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
    /// Write the image of a running process and all its descendants to a file (they keep running unless --kill)
    #[command(after_help = "The whole tree comes along: children, pipes, FIFOs and socket pairs among them, \
                            shared files, zombies, process groups and sessions. What cannot be carried is \
                            refused, with every reason, before any process is touched.\n\n\
                            --tcp-established carries established TCP connections too (as CRIU's option of that \
                            name): read with TCP_REPAIR, which needs root, and made again by herd restart without \
                            a handshake, their unread and unacknowledged bytes with them. The network is held still for \
                            them meanwhile, as CRIU's network lock: their packets are dropped (a netfilter table \
                            herd_tcp_... per connection, made with nft, Debian package nftables) from the checkpoint \
                            until herd restart has made them again in the same network namespace (or, without \
                            --kill, until they go on), so that what a peer sends meanwhile is retransmitted to the \
                            restored process instead of resetting the connection. A lock left behind (no restart \
                            there) is removed with nft delete table inet herd_tcp_....\n\nExamples:\n  herd checkpoint 4242 --output job.img\n  herd checkpoint 4242 --output job.img --kill\n  herd checkpoint 4242 --output server.img --kill --tcp-established\n  herd checkpoint --check 4242")]
    Checkpoint {
        /// The process to capture (with its descendants)
        pid: i32,
        /// Where to write the image
        #[arg(short, long, required_unless_present = "check")]
        output: Option<PathBuf>,
        /// End the processes once the image is complete and synced to disk
        #[arg(long, conflicts_with = "check")]
        kill: bool,
        /// Only say whether PID (with its descendants) can be checkpointed, and if not every reason why
        #[arg(long)]
        check: bool,
        /// Carry established TCP connections (TCP_REPAIR; needs root) instead of refusing them
        #[arg(long)]
        tcp_established: bool,
    },
    /// Continue a process from an image, in the foreground, as a child of this command
    #[command(after_help = "The process gets its own pid and thread ids back, which needs root \
                            (CAP_CHECKPOINT_RESTORE) and those ids free; when they are not, herd restart \
                            says so before anything starts. --new-pidns gives them back in a new pid \
                            namespace, where they are always free; --any-pid accepts new ones.\n\n\
                            herd restart exits with the restored process's exit status, or dies by the same signal.\n\
                            Terminals and pipes it had on fds 0-2 are attached to herd restart's own.")]
    Restart {
        /// The image written by `herd checkpoint`
        image: PathBuf,
        /// Restore it with its pid in a new pid namespace (needs root); it and
        /// what it starts see only that namespace's processes
        #[arg(long, conflicts_with = "any_pid")]
        new_pidns: bool,
        /// Let it run with whatever pid it gets (and new thread ids where the
        /// old are taken) instead of failing
        #[arg(long)]
        any_pid: bool,
    },
    /// Show what an image holds (command, memory regions, open files, signals)
    Inspect {
        image: PathBuf,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Every node of the cluster: state, CPUs, speed, load, memory, flags
    #[command(after_help = "FLAGS are those set by `herd ctl` on each node (block, quiet, stay, lstay), or `-`; \
                            a node marked * is the one answering.\n\n\
                            Examples:\n  herd nodes\n  herd --node n2 nodes --json")]
    Nodes {
        /// Print a JSON array (keys: name, address, state, cpus, speed, load, mem_free, mem_total, status, ...)
        #[arg(long)]
        json: bool,
    },
    /// This node's daemon: version, address, key fingerprint, peers
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Set how this node takes part in the cluster: block, expel, quiet, speed... (alias: mosctl; root only)
    #[command(after_help = "The words are openMosix's mosctl ones. herd ctl prints one line: what changed and the \
                            node's flags now (as `herd nodes` shows them); expel and bring say how many processes were \
                            sent home. Only root (and the user herdd runs as) may change a node; others get herdd's \
                            refusal and exit status 1. The flags last until herdd stops.\n\
                            Installed as `mosctl` (a symlink to herd), it is herd ctl: `mosctl block`.\n\n\
                            Examples:\n  herd ctl block\n  herd ctl expel\n  herd --node n2 ctl quiet\n  herd ctl speed 15000\n  \
                            mosctl noblock")]
    #[command(
        override_usage = "herd ctl block|noblock|expel|bring|stay|nostay|lstay|nolstay|quiet|noquiet\n       herd ctl speed N",
        subcommand_value_name = "WORD",
        subcommand_help_heading = "Words",
        disable_help_subcommand = true
    )]
    Ctl {
        #[command(subcommand)]
        word: ctl::CtlWord,
    },
    /// Write a new cluster key (mode 0600); every node of a cluster needs the same key
    Keygen {
        /// Where to write it
        #[arg(short, long, value_name = "FILE", default_value = herd_daemon::config::DEFAULT_KEY)]
        output: PathBuf,
    },
    /// Run a command as a migratable process of this node, with everything it starts (alias: mosrun)
    #[command(after_help = "The command runs as a child of herd run, exactly as if run directly: same terminal, \
                            environment, directory and user. herdd adopts it, so the balancer may move it to another \
                            node; herd run exits with its exit status, or dies by the same signal, wherever it ran.\n\
                            Every process it starts, and they start, is migratable too: they form a job, whose number \
                            is the command's pid (herd ps shows PPID and JOB; herd migrate -j and herd lock -j act on \
                            a whole job). Children inherit --lock. A process that changes its ids (a set-uid program) \
                            is not adopted.\n\
                            --native runs the command and everything it starts natively: never migratable, also \
                            inside a job (a part of a job that must stay on this node). Installed as `native`, it \
                            is herd run --native.\n\
                            Without a herdd on this node, herd run says so once and runs the command anyway \
                            (except with --node: then it starts nothing and exits with status 1).\n\
                            A command that cannot be started exits 127 (not found) or 126 (not executable), as in a shell.\n\
                            Installed as `mosrun` (a symlink to herd), it is herd run: `mosrun ARGS` = `herd run ARGS`.\n\n\
                            Examples:\n  herd run -- ./simulate --steps 1000\n  herd run --node n2 python3 crunch.py\n  \
                            herd run --lock make -j8\n  herd --node n1 run --node n3 -- sleep 60\n  mosrun ./simulate\n  \
                            herd run make -j8\n  herd run --checkpoint-every 10m ./simulate\n  native ./install-step.sh")]
    #[command(override_usage = "herd run [--node NAME | --home | --lock | --native] [--checkpoint-every DURATION] [--] CMD [ARGS]...")]
    Run {
        /// Move the command to this node as soon as it starts (if that fails, it runs here)
        #[arg(long, value_name = "NAME", conflicts_with_all = ["home", "lock", "native"])]
        node: Option<String>,
        /// Run it, and all it starts, natively on this node: never migratable (alias: native)
        #[arg(long, conflicts_with_all = ["home", "lock"])]
        native: bool,
        /// Keep it at home: balancing never moves it (the same as --lock)
        #[arg(long)]
        home: bool,
        /// Lock it at home: balancing never moves it, only `herd migrate` does
        #[arg(long)]
        lock: bool,
        /// While it (or what it starts) runs on another node, checkpoint it this often
        /// (`30s`, `10m`, `1h`); if that node dies it resumes from its last checkpoint, by
        /// itself, with nothing written or read twice. Default: herdd's `checkpoint_every`
        #[arg(long, value_name = "DURATION", value_parser = parse_every, conflicts_with = "native")]
        checkpoint_every: Option<std::time::Duration>,
        /// The command to run and its arguments (everything from CMD on is the command's)
        #[arg(value_name = "CMD", required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Move a migratable process of this node to another node, home, or the best node (alias: migrate)
    #[command(after_help = "TARGET is a node's name (see `herd nodes`), `home` (back to this node) or `balance` \
                            (wherever the balancer finds best now). herd migrate returns when the move is complete and \
                            prints how long the process was stopped; if the move is refused or fails, it says why, \
                            exits with status 1, and the process runs on where it was.\n\n\
                            How: by default herdd picks the fastest way that keeps the process stopped briefly: \
                            a small process moves by stop-and-copy, a larger one by post-copy (it runs on the target \
                            — or at home — within milliseconds and its memory follows; `herd ps` shows the move until \
                            the last page is there, and herd migrate returns then). --stop-and-copy or --postcopy \
                            choose.\n\
                            With -j, PID is a job (the pid of the command herd run started; herd ps shows each \
                            process's JOB): every process of the job moves, one line each; the exit status is 1 if \
                            any move failed.\n\
                            MOSIX's other verbs take the place of TARGET: `checkpoint` (now; of a process away, \
                            the one it resumes from if its node is lost — see herd run --checkpoint-every; of a \
                            process at home, an image `herd restart` runs again), `freeze` (stop it; the balancer \
                            leaves it alone), `continue`, `chkstop` (checkpoint, then freeze) and `chkexit` \
                            (checkpoint at home, then end it). Images go to herdd's checkpoint_dir.\n\
                            Installed as `migrate` (a symlink to herd), it is herd migrate.\n\n\
                            Examples:\n  herd migrate 4242 n2\n  herd migrate 4242 home\n  herd migrate 4242 balance\n  \
                            herd migrate --postcopy 4242 n2\n  herd --node n1 migrate 4242 n3\n  migrate 4242 n2\n  \
                            herd migrate -j 4240 home\n  herd migrate 4242 checkpoint\n  herd migrate 4242 freeze")]
    #[command(override_usage = "herd migrate [--postcopy | --stop-and-copy] [-j] PID TARGET")]
    Migrate {
        /// The process (its pid on this node, its home, even when it runs elsewhere); with -j, the job
        #[arg(value_parser = clap::value_parser!(i32).range(1..))]
        pid: i32,
        /// PID is a job: move every process of it
        #[arg(short = 'j', long)]
        job: bool,
        /// A node's name, `home` or `balance`; or checkpoint, freeze, continue, chkstop, chkexit
        target: String,
        /// Start it on the target at once; its memory follows while it runs (not for coming home)
        #[arg(long, conflicts_with = "stop_and_copy")]
        postcopy: bool,
        /// Keep it stopped until all of it is on the target
        #[arg(long)]
        stop_and_copy: bool,
    },
    /// Keep a migratable process where it runs: the balancer leaves it alone (herd migrate still moves it)
    #[command(after_help = "PID is its pid on this node, its home. Its owner or root may lock it. \
                            `herd run --lock CMD` starts a command locked. With -j, PID is a job: every process \
                            of it is locked, and the processes it starts from then on are born locked.\n\n\
                            Examples:\n  herd lock 4242\n  herd --node n1 lock 4242\n  herd lock -j 4240")]
    Lock {
        #[arg(value_parser = clap::value_parser!(i32).range(1..))]
        pid: i32,
        /// PID is a job: lock every process of it
        #[arg(short = 'j', long)]
        job: bool,
    },
    /// Let the balancer move a locked process again
    #[command(after_help = "Examples:\n  herd unlock 4242\n  herd unlock -j 4240")]
    Unlock {
        #[arg(value_parser = clap::value_parser!(i32).range(1..))]
        pid: i32,
        /// PID is a job: unlock every process of it
        #[arg(short = 'j', long)]
        job: bool,
    },
    /// The migratable processes of this node: where each runs, and why one does not move (alias: mps)
    #[command(after_help = "Columns: PID (on this node, its home), PPID (its parent here), JOB (the pid of the \
                            command herd run started, which it descends from), WHERE (the node it runs on), STATE (home, remote, \
                            migrating, stopped), %CPU (of one CPU, recently), DEMAND (the share of a CPU it wants, \
                            smoothed: what balancing weighs), IO/s (calls a second: forwarded home when remote, \
                            reads and writes at home), DIR/s (when remote: reads and writes a second made directly \
                            there, on files in a directory shared with home), RSS (resident memory), NMIGS (moves so far), CMD. \
                            Under a process that is locked or cannot move now, a line `why not:` gives every reason.\n\
                            With no migratable processes, stdout is the header alone and stderr says so.\n\
                            Installed as `mps` (a symlink to herd), it is herd ps.\n\n\
                            --tree lists each job as a tree, children under their parent, wherever each runs.\n\
                            --all lists the processes of every node of the cluster (HOME: the node each was started on, \
                            whose pid it keeps); a node that does not answer within 3 s is named on stderr.\n\
                            Examples:\n  herd ps\n  herd ps --tree\n  herd ps --all\n  herd ps --json\n  herd --node n2 ps\n  mps")]
    Ps {
        /// Print a JSON array (keys: pid, home, ppid, job, uid, where, state, cpu, rss, demand, io_rate, direct_io_rate, forwarded_calls, nmigs, cantmove, lock, cmd)
        #[arg(long, conflicts_with = "tree")]
        json: bool,
        /// The processes of every node, not only this node's (a HOME column says whose)
        #[arg(short, long)]
        all: bool,
        /// Show each job as a tree: children under their parent
        #[arg(long)]
        tree: bool,
    },
    /// A login link for the web dashboard: the browser that opens it acts as you
    #[command(after_help = "herdd serves the dashboard on http://127.0.0.1:4780/ (its `http` address): every node with \
                            its load and memory over the last 10 minutes, every migratable process where it runs. \
                            Anyone on this machine may look. To act (drag a process onto a node to move it, lock it; \
                            as root, block or quiet this node), open the link this prints: it works once, within 5 \
                            minutes, and the browser then acts as you, on your own processes (root: on all).\n\n\
                            Examples:\n  herd dashboard\n  herd --node n1 dashboard")]
    Dashboard,
    /// Every migratable process of the cluster, live; move, lock and signal them with keys (alias: mtop)
    #[command(after_help = top::AFTER_HELP)]
    Top(top::TopArgs),
    /// A bar per node: load, memory, speed, processes, with their history (alias: mosmon)
    #[command(after_help = mon::AFTER_HELP)]
    Mon(mon::MonArgs),
    /// A local cluster on this machine: nodes n1..nN in their own namespaces
    Cluster(herd_lab::cli::ClusterArgs),
    /// Watch a local cluster balance CPU-bound jobs, then compare with the same jobs on one node
    #[command(long_about = demo::LONG_ABOUT)]
    #[command(after_help = "Examples:\n  sudo herd demo\n  sudo herd demo --nodes 3 --jobs 9\n  sudo herd demo --seconds 2")]
    Demo(demo::DemoArgs),
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell)
    #[command(after_help = "The Debian package installs them. By hand:\n  \
                            herd completions bash > /etc/bash_completion.d/herd\n  \
                            herd completions zsh > /usr/local/share/zsh/site-functions/_herd\n  \
                            herd completions fish > ~/.config/fish/completions/herd.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages of herd (one per command) and herdd into DIR
    #[command(name = "__man", hide = true)]
    Man { dir: PathBuf },
    #[command(name = "__lab", hide = true)]
    Lab(herd_lab::cli::LabArgs),
}

/// `herd __man DIR`: herd.1, herd-COMMAND.1 for every command (herd-cluster-up.1, ...),
/// and herdd.1, from the CLI definitions (what the packages install).
fn man_pages(dir: &Path) -> anyhow::Result<i32> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)?;
    clap_mangen::generate_to(<herd_daemon::cli::Args as CommandFactory>::command(), dir)?;
    Ok(0)
}

fn target(node: &Option<String>, cluster: &Option<PathBuf>, socket: &Option<PathBuf>) -> anyhow::Result<nodes::Target> {
    nodes::Target::resolve(socket.clone(), node.as_deref(), cluster.clone())
}

/// The names herd answers to as the MOSIX tools did (argv[0], as symlinks to herd),
/// and the subcommand (with its flags) each one is.
const ALIASES: [(&str, &[&str]); 7] = [
    ("mosrun", &["run"]),
    ("migrate", &["migrate"]),
    ("mps", &["ps"]),
    ("mosctl", &["ctl"]),
    ("native", &["run", "--native"]),
    ("mtop", &["top"]),
    ("mosmon", &["mon"]),
];

/// `mosrun ARGS` becomes `herd run ARGS` (and so on for each alias); other arguments
/// pass unchanged.
fn expand_alias(mut args: Vec<OsString>) -> Vec<OsString> {
    let Some(name) = args.first().and_then(|a| Path::new(a).file_name()).and_then(|n| n.to_str()) else {
        return args;
    };
    if let Some((_, sub)) = ALIASES.iter().find(|(alias, _)| *alias == name) {
        // herd's own name, so that usage and errors read `herd run ...`.
        args[0] = "herd".into();
        args.splice(1..1, sub.iter().map(OsString::from));
    }
    args
}

/// `--checkpoint-every`: a duration such as 30s, 10m or 1h (at least a second).
fn parse_every(s: &str) -> Result<std::time::Duration, String> {
    herd_daemon::config::parse_every(s)
}

fn main() {
    herd_kernel::task::default_sigpipe();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HERD_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let cli = Cli::parse_from(expand_alias(std::env::args_os().collect()));
    let result = match cli.command {
        Command::Checkpoint { pid, output, kill, check, tcp_established } => {
            if check {
                checkpoint::check(pid, tcp_established)
            } else {
                checkpoint::run(pid, &output.expect("clap requires --output"), kill, tcp_established)
            }
        }
        Command::Restart { image, new_pidns, any_pid } => {
            let pid = match (new_pidns, any_pid) {
                (true, _) => herd_checkpoint::PidMode::NewNamespace,
                (_, true) => herd_checkpoint::PidMode::Any,
                _ => herd_checkpoint::PidMode::Same,
            };
            restart::run(&image, pid)
        }
        Command::Inspect { image, json } => inspect::run(&image, json),
        Command::Nodes { json } => target(&cli.node, &cli.cluster, &cli.socket).and_then(|t| nodes::nodes(&t, json)),
        Command::Status { json } => target(&cli.node, &cli.cluster, &cli.socket).and_then(|t| nodes::status(&t, json)),
        Command::Run { node, home, lock, native, checkpoint_every, command } => {
            let opts = run::RunOptions { node, lock: lock || home, native, checkpoint_every, command };
            let ran = match (&cli.node, &cli.socket) {
                // A node of the local cluster: the command runs inside it, where that
                // node's herdd can adopt it.
                (Some(name), None) => target(&cli.node, &cli.cluster, &cli.socket).and_then(|t| {
                    run::run_in_node(&t, &cli.cluster.clone().unwrap_or_else(herd_lab::default_dir), name, &opts)
                }),
                _ => run::run(target(&cli.node, &cli.cluster, &cli.socket), &opts),
            };
            ran.or_else(|e| {
                eprintln!("herd run: {e:#}");
                Ok(1)
            })
        }
        Command::Migrate { pid, job, target: to, postcopy, stop_and_copy } => {
            let mode = match (postcopy, stop_and_copy) {
                (true, _) => Some(herd_daemon::control::MoveMode::PostCopy),
                (_, true) => Some(herd_daemon::control::MoveMode::StopAndCopy),
                _ => None,
            };
            target(&cli.node, &cli.cluster, &cli.socket).and_then(|t| match (job, herd_daemon::control::Verb::parse(&to)) {
                (false, Some(verb)) => migrate::act(&t, pid, verb),
                (true, Some(_)) => anyhow::bail!("-j moves a job; {to} acts on one process at a time"),
                (false, None) => migrate::run(&t, pid, &to, mode),
                (true, None) => migrate::job(&t, pid, &to, mode),
            })
        }
        Command::Ps { json, tree, all } => target(&cli.node, &cli.cluster, &cli.socket).and_then(|t| ps::run(&t, json, tree, all)),
        Command::Ctl { word } => target(&cli.node, &cli.cluster, &cli.socket).and_then(|t| ctl::ctl(&t, word)),
        Command::Lock { pid, job } => target(&cli.node, &cli.cluster, &cli.socket).and_then(|t| ctl::lock(&t, pid, job, true)),
        Command::Unlock { pid, job } => target(&cli.node, &cli.cluster, &cli.socket).and_then(|t| ctl::lock(&t, pid, job, false)),
        Command::Dashboard => target(&cli.node, &cli.cluster, &cli.socket).and_then(|t| nodes::dashboard(&t)),
        Command::Top(args) => target(&cli.node, &cli.cluster, &cli.socket).and_then(|t| top::run(t, &args)),
        Command::Mon(args) => target(&cli.node, &cli.cluster, &cli.socket).and_then(|t| mon::run(t, &args)),
        Command::Demo(args) => demo::run(&args),
        Command::Keygen { output } => nodes::keygen(&output),
        Command::Cluster(mut args) => {
            if let Some(dir) = cli.cluster.clone() {
                args.default_dir(dir);
            }
            herd_lab::cli::run(args)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "herd", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man { dir } => man_pages(&dir),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(expand_alias(args.iter().map(OsString::from).collect()))
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn daemon_node_and_target_node_are_apart() {
        let cli = parse(&["herd", "--node", "n1", "run", "--node", "n2", "--", "sleep", "1"]).unwrap();
        assert_eq!(cli.node.as_deref(), Some("n1"));
        let Command::Run { node, home, lock, native, command, .. } = cli.command else { panic!("not run") };
        assert_eq!(node.as_deref(), Some("n2"));
        assert!(!home && !lock && !native);
        assert_eq!(command, os(&["sleep", "1"]));
    }

    #[test]
    fn daemon_node_goes_before_the_command() {
        assert!(parse(&["herd", "nodes", "--node", "n2"]).is_err());
        let cli = parse(&["herd", "--node", "n2", "nodes", "--json"]).unwrap();
        assert_eq!(cli.node.as_deref(), Some("n2"));
        // --cluster and --socket stay global.
        let cli = parse(&["herd", "ps", "--socket", "/s", "--cluster", "/c"]).unwrap();
        assert_eq!(cli.socket, Some(PathBuf::from("/s")));
        assert_eq!(cli.cluster, Some(PathBuf::from("/c")));
    }

    #[test]
    fn run_options_stop_at_the_command() {
        let cli = parse(&["herd", "run", "--lock", "sh", "-c", "x", "--node", "n2", "--home"]).unwrap();
        let Command::Run { node, lock, command, .. } = cli.command else { panic!("not run") };
        assert_eq!(node, None);
        assert!(lock);
        assert_eq!(command, os(&["sh", "-c", "x", "--node", "n2", "--home"]));
        let cli = parse(&["herd", "run", "--", "--weird-name", "-x"]).unwrap();
        let Command::Run { command, .. } = cli.command else { panic!("not run") };
        assert_eq!(command, os(&["--weird-name", "-x"]));
        assert!(parse(&["herd", "run"]).is_err());
        assert!(parse(&["herd", "run", "--node", "n2", "--home", "x"]).is_err());
        assert!(parse(&["herd", "run", "--lock", "--node", "n2", "x"]).is_err());
        assert!(parse(&["herd", "run", "--lock", "--home", "x"]).is_ok());
        assert!(parse(&["herd", "run", "--native", "--lock", "x"]).is_err());
        assert!(parse(&["herd", "run", "--native", "--node", "n2", "x"]).is_err());
    }

    #[test]
    fn jobs_and_native() {
        let cli = parse(&["herd", "migrate", "-j", "4240", "home"]).unwrap();
        assert!(matches!(cli.command, Command::Migrate { pid: 4240, job: true, ref target, .. } if target == "home"));
        let cli = parse(&["herd", "migrate", "4242", "n2"]).unwrap();
        assert!(matches!(cli.command, Command::Migrate { job: false, .. }));
        assert!(matches!(parse(&["herd", "lock", "-j", "7"]).unwrap().command, Command::Lock { pid: 7, job: true }));
        assert!(matches!(parse(&["herd", "unlock", "--job", "7"]).unwrap().command, Command::Unlock { pid: 7, job: true }));
        assert!(matches!(parse(&["herd", "ps", "--tree"]).unwrap().command, Command::Ps { tree: true, json: false, all: false }));
        assert!(parse(&["herd", "ps", "--tree", "--json"]).is_err());
        assert_eq!(expand_alias(os(&["/usr/bin/native", "make", "install"])), os(&["herd", "run", "--native", "make", "install"]));
        let Command::Run { native, command, .. } = parse(&["native", "make", "install"]).unwrap().command else { panic!("not run") };
        assert!(native);
        assert_eq!(command, os(&["make", "install"]));
    }

    #[test]
    fn migrate_wants_a_positive_pid() {
        let cli = parse(&["herd", "migrate", "4242", "balance"]).unwrap();
        assert!(matches!(cli.command, Command::Migrate { pid: 4242, ref target, postcopy: false, .. } if target == "balance"));
        let cli = parse(&["herd", "migrate", "--postcopy", "4242", "n2"]).unwrap();
        assert!(matches!(cli.command, Command::Migrate { postcopy: true, stop_and_copy: false, .. }));
        assert!(parse(&["herd", "migrate", "--postcopy", "--stop-and-copy", "4242", "n2"]).is_err());
        assert!(parse(&["herd", "migrate", "0", "n2"]).is_err());
        assert!(parse(&["herd", "migrate", "-5", "n2"]).is_err());
        assert!(parse(&["herd", "migrate", "4242"]).is_err());
    }

    #[test]
    fn aliases_by_program_name() {
        assert_eq!(expand_alias(os(&["/usr/local/bin/mosrun", "-x"])), os(&["herd", "run", "-x"]));
        assert_eq!(expand_alias(os(&["./migrate", "4242", "n2"])), os(&["herd", "migrate", "4242", "n2"]));
        assert_eq!(expand_alias(os(&["mps", "--json"])), os(&["herd", "ps", "--json"]));
        assert_eq!(expand_alias(os(&["/bin/herd", "ps"])), os(&["/bin/herd", "ps"]));
        assert_eq!(expand_alias(os(&["mosrun-not"])), os(&["mosrun-not"]));
        assert_eq!(expand_alias(vec![]), Vec::<OsString>::new());
        let cli = parse(&["mosrun", "--home", "make", "-j8"]).unwrap();
        let Command::Run { home, command, .. } = cli.command else { panic!("not run") };
        assert!(home);
        assert_eq!(command, os(&["make", "-j8"]));
        assert!(matches!(parse(&["mps"]).unwrap().command, Command::Ps { json: false, .. }));
        let Command::Top(t) = parse(&["mtop", "-u", "alice", "--on", "n2", "-n", "1"]).unwrap().command else { panic!("not top") };
        assert_eq!((t.user.as_deref(), t.on.as_deref(), t.iterations, t.sort), (Some("alice"), Some("n2"), Some(1), top::Sort::Cpu));
        let Command::Mon(m) = parse(&["/usr/bin/mosmon", "--view", "memory", "-d", "2"]).unwrap().command else { panic!("not mon") };
        assert_eq!((m.view, m.delay), (mon::Figure::Memory, 2.0));
        assert!(parse(&["herd", "top", "-d", "0"]).is_err());
        assert!(parse(&["herd", "mon", "-n", "0"]).is_err());
        assert_eq!(expand_alias(os(&["/sbin/mosctl", "block"])), os(&["herd", "ctl", "block"]));
        let cli = parse(&["mosctl", "setspeed", "12000"]).unwrap();
        assert!(matches!(cli.command, Command::Ctl { word: ctl::CtlWord::Speed { speed: 12000 } }));
    }

    #[test]
    fn ctl_words() {
        let cli = parse(&["herd", "--node", "n2", "ctl", "noblock"]).unwrap();
        assert_eq!(cli.node.as_deref(), Some("n2"));
        assert!(matches!(cli.command, Command::Ctl { word: ctl::CtlWord::NoBlock }));
        assert!(parse(&["herd", "ctl"]).is_err());
        assert!(parse(&["herd", "ctl", "frobnicate"]).is_err());
        assert!(parse(&["herd", "ctl", "speed"]).is_err());
        assert!(parse(&["herd", "ctl", "speed", "abc"]).is_err());
        assert!(parse(&["herd", "ctl", "speed", "-1"]).is_err());
        assert!(parse(&["herd", "ctl", "speed", "10000001"]).is_err());
        assert!(parse(&["herd", "ctl", "block", "now"]).is_err());
    }

    #[test]
    fn lock_and_unlock_want_a_positive_pid() {
        assert!(matches!(parse(&["herd", "lock", "42"]).unwrap().command, Command::Lock { pid: 42, job: false }));
        assert!(matches!(parse(&["herd", "unlock", "42"]).unwrap().command, Command::Unlock { pid: 42, job: false }));
        assert!(parse(&["herd", "lock", "0"]).is_err());
        assert!(parse(&["herd", "unlock"]).is_err());
    }

    #[test]
    fn completions_and_man_pages() {
        assert!(matches!(parse(&["herd", "completions", "bash"]).unwrap().command, Command::Completions { .. }));
        assert!(parse(&["herd", "completions", "tcsh"]).is_err());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(man_pages(dir.path()).unwrap(), 0);
        for page in ["herd.1", "herd-top.1", "herd-cluster-up.1", "herdd.1"] {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
            assert!(text.starts_with(".ie \\n(.g .ds Aq"), "{page} is roff: {}", &text[..40.min(text.len())]);
        }
        let top = std::fs::read_to_string(dir.path().join("herd-top.1")).unwrap();
        assert!(top.contains("mtop") && top.contains("\\-\\-sort"), "the page has the help text");
        assert!(!dir.path().join("herd-__lab.1").exists(), "hidden commands have no page");
    }

    #[test]
    fn demo_options() {
        let Command::Demo(d) = parse(&["herd", "demo"]).unwrap().command else { panic!("not demo") };
        assert_eq!((d.nodes, d.jobs, d.seconds), (2, 6, 4.0));
        let Command::Demo(d) = parse(&["herd", "demo", "--nodes", "3", "--jobs", "9", "--seconds", "2.5"]).unwrap().command else {
            panic!("not demo")
        };
        assert_eq!((d.nodes, d.jobs, d.seconds), (3, 9, 2.5));
        assert!(parse(&["herd", "demo", "--nodes", "0"]).is_err());
        assert!(parse(&["herd", "demo", "--jobs", "0"]).is_err());
        assert!(parse(&["herd", "demo", "--seconds", "0"]).is_err());
    }
}
