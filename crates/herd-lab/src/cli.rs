//! The `herd cluster` command line (parsed by the `herd` binary), and the
//! hidden `herd __lab` entry points the cluster re-executes `herd` as.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::{self, ClusterStatus, Down, LocalCluster, UpOptions};
use crate::node_init::{self, NodeInitOptions};
use crate::supervisor::{self, SuperviseOptions};

/// `herd cluster ...`
#[derive(clap::Args, Debug)]
#[command(after_help = "Each node has its own network (10.47.0.K/24 on a private bridge), pid, mount (/proc, /tmp), \
                        hostname and IPC namespaces, and without root its own user namespace. Its herdd is configured by \
                        DIR/nK/herd.toml, logs to DIR/nK/herdd.log and listens on DIR/nK/herdd.sock.\n\n\
                        Examples:\n  herd cluster up --nodes 3\n  herd cluster status\n  herd cluster stop n2\n  \
                        herd cluster start n2\n  herd cluster down")]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DirArg {
    /// The cluster's directory [default: /run/herd/cluster as root, else $XDG_RUNTIME_DIR/herd/cluster or /tmp/herd-$UID/cluster]
    #[arg(long, env = "HERD_CLUSTER", value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl DirArg {
    fn resolve(&self) -> PathBuf {
        let d = self.dir.clone().unwrap_or_else(cluster::default_dir);
        std::path::absolute(&d).unwrap_or(d)
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Start a cluster of N nodes on this machine and wait until every herdd answers
    #[command(after_help = "The nodes are n1..nN. herd cluster up returns once every node's control socket accepts \
                            connections, and prints the nodes. If a node fails to come up, it prints the end of that \
                            node's log, takes the cluster down and exits with status 1.\n\n\
                            --cpus-per-node needs root, or a cgroup v2 subtree delegated to you with the cpuset \
                            controller. CPUs are given round-robin, so with more nodes than CPUs nodes share CPUs.\n\n\
                            --mem-per-node gives each node a memory cgroup with that limit, swap included (cgroup v1: \
                            memory.limit_in_bytes and memory.memsw.limit_in_bytes; v2: memory.max and memory.swap.max = 0); \
                            it needs root, or a cgroup v2 subtree delegated to you with the memory controller. A process \
                            of the node that goes over it is killed by the kernel's OOM killer, in that node only. \
                            Processes started with `herd cluster exec` join the node's cgroups too.\n\n\
                            The daemon is herdd next to herd, or $HERD_LAB_DAEMON.\n\n\
                            Examples:\n  herd cluster up --nodes 3\n  herd cluster up --nodes 4 --cpus-per-node 1\n  \
                            herd cluster up --nodes 2 --cpus-per-node 1 --mem-per-node 512M\n  \
                            herd cluster up --nodes 2 --dir /tmp/lab")]
    Up {
        /// How many nodes
        #[arg(long, short = 'n', value_name = "N")]
        nodes: u32,
        /// Give each node its own cpuset of K CPUs
        #[arg(long, value_name = "K")]
        cpus_per_node: Option<u32>,
        /// Give each node its own memory limit (512M, 2G; K, M, G, T are powers of 1024)
        #[arg(long, value_name = "SIZE", value_parser = parse_mem)]
        mem_per_node: Option<u64>,
        #[command(flatten)]
        dir: DirArg,
        /// How long to wait for every node
        #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
        timeout: f64,
        /// A directory every node offers for direct file access (DFSA; repeat for
        /// more). Made if missing (mode 1777). On this machine's file system it is one
        /// directory all nodes see, so it is verified shared; under /tmp each node has
        /// its own, so it only looks shared and is not
        #[arg(long, value_name = "DIR")]
        shared: Vec<PathBuf>,
        /// Let root's processes migrate between the nodes (herdd's allow_root_guests), so
        /// that root can try `herd run` without changing to another user first. Every
        /// node then takes root's processes from the others: for a cluster to try out
        #[arg(long)]
        allow_root_guests: bool,
    },
    /// Stop every node and remove the cluster's processes, network, cgroups and state
    #[command(after_help = "Idempotent: without a cluster it says so and succeeds. Logs in DIR are kept.")]
    Down {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Show the nodes: state, herdd's pid, node-init's pid, address, control socket
    #[command(after_help = "Pids are as seen from this machine. STATE is running (herdd runs), stopped (herdd does not \
                            run; `herd cluster start NODE`) or dead (the node itself is gone).\n\n\
                            Examples:\n  herd cluster status\n  herd cluster status --json | jq '.[].pid'")]
    Status {
        /// Print a JSON array of nodes instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Start a stopped node's herdd again and wait until it answers
    #[command(after_help = "Example:\n  herd cluster start n2")]
    Start {
        /// The node (n1, n2, ...)
        node: String,
        #[command(flatten)]
        dir: DirArg,
        /// How long to wait for its control socket
        #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
        timeout: f64,
    },
    /// Stop a node's herdd (SIGTERM, then SIGKILL after 10 s); the node itself stays
    #[command(after_help = "Example:\n  herd cluster stop n2")]
    Stop {
        /// The node (n1, n2, ...)
        node: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Kill a whole node at once, as a power cut would (every process in it; its network goes)
    #[command(after_help = "For trying what herd does when a node dies: its guests are lost there, and their \
                            homes resume those that have a checkpoint (herd run --checkpoint-every). \
                            `herd cluster revive` makes it again.\n\nExample:\n  herd cluster kill n2")]
    Kill {
        /// The node (n1, n2, ...)
        node: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Make a killed node again: same name, address and CPUs, a fresh herdd (as after a reboot)
    #[command(after_help = "Its logs are appended to. It waits until the node's herdd takes requests.\n\n\
                            Example:\n  herd cluster kill n2\n  herd cluster revive n2")]
    Revive {
        /// The node (n1, n2, ...)
        node: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Run a command inside a node (its network, pid and mount namespaces and its
    /// cgroups; `herd` there talks to that node's herdd) and exit with its status
    #[command(after_help = "Example: herd cluster exec n1 -- herd run -- python3 job.py")]
    Exec {
        /// The node (n1, n2, ...)
        node: String,
        #[command(flatten)]
        dir: DirArg,
        /// The command and its arguments
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

/// Hidden entry points the local cluster re-executes `herd` as.
#[derive(clap::Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum LabCommand {
    /// The process that owns a local cluster (started detached by `herd cluster up`)
    Supervise {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        nodes: u32,
        #[arg(long)]
        cpus_per_node: Option<u32>,
        /// Bytes
        #[arg(long)]
        mem_per_node: Option<u64>,
        #[arg(long)]
        daemon: PathBuf,
        #[arg(long)]
        shared: Vec<PathBuf>,
        #[arg(long)]
        allow_root_guests: bool,
    },
    /// pid 1 of a node (started by the supervisor in the node's new namespaces)
    NodeInit {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        daemon: PathBuf,
        #[arg(long)]
        sync_fd: i32,
        /// A path to keep visible under the node's private /tmp and /dev/shm
        #[arg(long)]
        keep: Vec<PathBuf>,
        /// A directory for direct file access, made in the node before herdd starts
        #[arg(long)]
        shared: Vec<PathBuf>,
    },
    /// Print this process's memory cgroup limit and usage as herdd sees them
    /// (herd_kernel::host::cgroup_memory), as JSON; `null` when unlimited
    CgroupMemory,
}

fn parse_mem(text: &str) -> Result<u64, String> {
    crate::cgroup::parse_size(text)
}

fn seconds(s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| anyhow::anyhow!("not a duration: {s} seconds"))
}

/// `--dir D` as the user should type it again, or nothing for the default.
fn dir_hint(dir: &Path) -> String {
    if dir == cluster::default_dir() {
        String::new()
    } else {
        format!(" --dir {}", dir.display())
    }
}

impl ClusterArgs {
    /// Uses `dir` where the subcommand was given no `--dir` (the `herd --cluster DIR` option).
    pub fn default_dir(&mut self, dir: PathBuf) {
        let arg = match &mut self.command {
            ClusterCommand::Up { dir, .. }
            | ClusterCommand::Down { dir }
            | ClusterCommand::Status { dir, .. }
            | ClusterCommand::Start { dir, .. }
            | ClusterCommand::Stop { dir, .. }
            | ClusterCommand::Kill { dir, .. }
            | ClusterCommand::Revive { dir, .. }
            | ClusterCommand::Exec { dir, .. } => dir,
        };
        arg.dir.get_or_insert(dir);
    }
}

pub fn run(args: ClusterArgs) -> anyhow::Result<i32> {
    match args.command {
        ClusterCommand::Up { nodes, cpus_per_node, mem_per_node, dir, timeout, shared, allow_root_guests } => {
            let dir = dir.resolve();
            let opts = UpOptions {
                cpus_per_node,
                mem_per_node,
                shared,
                allow_root_guests,
                dir: Some(dir),
                timeout: seconds(timeout)?,
                ..UpOptions::new(nodes)
            };
            let c = LocalCluster::up(&opts)?;
            let st = cluster::status(c.dir())?;
            let dir = c.keep_running();
            println!("cluster of {nodes} node(s) up in {} (supervisor pid {})", dir.display(), st.supervisor_pid);
            print_table(&st);
            println!("Take it down with: herd cluster down{}", dir_hint(&dir));
            Ok(0)
        }
        ClusterCommand::Down { dir } => {
            let dir = dir.resolve();
            match cluster::down(&dir)? {
                Down::NoCluster => println!("no cluster at {}", dir.display()),
                Down::Clean => println!("cluster at {} is down", dir.display()),
                Down::Forced => {
                    println!("cluster at {} is down (its supervisor had gone; its processes were killed)", dir.display())
                }
            }
            Ok(0)
        }
        ClusterCommand::Status { json, dir } => {
            let dir = dir.resolve();
            let st = cluster::status(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st.nodes)?);
            } else {
                println!("cluster in {} (supervisor pid {})", st.dir.display(), st.supervisor_pid);
                print_table(&st);
            }
            if !st.supervisor_running {
                eprintln!(
                    "herd: the cluster's supervisor (pid {}) is not running; take what is left down with: herd cluster down{}",
                    st.supervisor_pid,
                    dir_hint(&dir)
                );
                return Ok(1);
            }
            Ok(0)
        }
        ClusterCommand::Start { node, dir, timeout } => {
            let dir = dir.resolve();
            if cluster::start_node(&dir, &node, seconds(timeout)?)? {
                println!("{node}: herdd started");
            } else {
                println!("{node}: herdd is already running");
            }
            Ok(0)
        }
        ClusterCommand::Exec { node, dir, command } => {
            let dir = dir.resolve();
            let status = cluster::node_exec(&dir, &node, &command)?
                .status()
                .map_err(|e| anyhow::anyhow!("{}: {e}", command[0]))?;
            use std::os::unix::process::ExitStatusExt;
            Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        }
        ClusterCommand::Kill { node, dir } => {
            let dir = dir.resolve();
            if cluster::kill_node(&dir, &node)? {
                println!("{node}: killed (every process in it)");
            } else {
                println!("{node}: was gone already");
            }
            Ok(0)
        }
        ClusterCommand::Revive { node, dir } => {
            let dir = dir.resolve();
            if cluster::revive_node(&dir, &node, Duration::from_secs(30))? {
                println!("{node}: made again; herdd is running");
            } else {
                println!("{node}: is alive (`herd cluster kill` it first, or `start` its herdd)");
            }
            Ok(0)
        }
        ClusterCommand::Stop { node, dir } => {
            let dir = dir.resolve();
            if cluster::stop_node(&dir, &node)? {
                println!("{node}: herdd stopped");
            } else {
                println!("{node}: herdd was not running");
            }
            Ok(0)
        }
    }
}

fn print_table(st: &ClusterStatus) {
    let with_cpus = st.nodes.iter().any(|n| n.cpus.is_some());
    let with_mem = st.nodes.iter().any(|n| n.mem_limit.is_some());
    let mut rows = vec![{
        let mut h = vec!["NODE", "STATE", "PID", "INIT", "ADDRESS"];
        if with_cpus {
            h.push("CPUS");
        }
        if with_mem {
            h.push("MEM");
        }
        h.push("CONTROL SOCKET");
        h.into_iter().map(String::from).collect::<Vec<_>>()
    }];
    for n in &st.nodes {
        let mut r = vec![
            n.name.clone(),
            n.state.to_string(),
            n.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            n.init_pid.to_string(),
            n.address.to_string(),
        ];
        if with_cpus {
            r.push(n.cpus.clone().unwrap_or_else(|| "-".into()));
        }
        if with_mem {
            r.push(n.mem_limit.map(crate::cgroup::format_size).unwrap_or_else(|| "-".into()));
        }
        r.push(n.control_socket.display().to_string());
        rows.push(r);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

pub fn run_internal(args: LabArgs) -> anyhow::Result<i32> {
    match args.command {
        LabCommand::Supervise { dir, nodes, cpus_per_node, mem_per_node, daemon, shared, allow_root_guests } => {
            supervisor::supervise(SuperviseOptions { dir, nodes, cpus_per_node, mem_per_node, daemon, shared, allow_root_guests })
        }
        LabCommand::NodeInit { dir, name, addr, daemon, sync_fd, keep, shared } => {
            node_init::node_init(NodeInitOptions { dir, name, address: addr, daemon, sync_fd, keep, shared })
        }
        LabCommand::CgroupMemory => {
            let m = herd_kernel::host::cgroup_memory();
            let json = m.map(|m| serde_json::json!({ "limit": m.limit, "usage": m.usage, "dir": m.dir }));
            println!("{}", serde_json::to_string(&json)?);
            Ok(0)
        }
    }
}
