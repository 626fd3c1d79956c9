//! The host side of a local cluster: bringing it up, asking how it is,
//! stopping and starting a node's herdd, running a command inside a node,
//! and taking it down. Used by `herd cluster` and, as [`LocalCluster`], by
//! tests and benchmarks.

use std::ffi::OsStr;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herd_kernel::ns;
use serde::Serialize;

use crate::error::{IoContext, LabError, Result};
use crate::proc::{self, ProcRef};
use crate::state::{self, ClusterState, NodeRecord};
use crate::supervisor::{self, EXIT_ALREADY_RUNNING};
use crate::{cgroup, net};

/// Environment variable naming the daemon to start instead of `herdd`
/// next to the `herd` binary (a stand-in, in tests).
pub const DAEMON_ENV: &str = "HERD_LAB_DAEMON";

/// The largest cluster: node K has address 10.47.0.K/24.
pub const MAX_NODES: u32 = 254;

const POLL: Duration = Duration::from_millis(20);
const SUPERVISOR_STOP_GRACE: Duration = Duration::from_secs(15);
const DAEMON_STOP_GRACE: Duration = Duration::from_secs(10);

/// The directory a cluster lives in unless told otherwise: root uses
/// `/run/herd/cluster`; other users `$XDG_RUNTIME_DIR/herd/cluster`, or
/// `/tmp/herd-$UID/cluster` without one.
pub fn default_dir() -> PathBuf {
    let uid = herd_kernel::task::euid();
    if uid == 0 {
        return PathBuf::from("/run/herd/cluster");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("herd/cluster"),
        _ => PathBuf::from(format!("/tmp/herd-{uid}/cluster")),
    }
}

/// The control socket of node `name` of the cluster in `dir`.
pub fn node_socket(dir: &Path, name: &str) -> PathBuf {
    state::node_dir(dir, name).join(state::NODE_SOCKET)
}

/// What `up` is asked to build.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub nodes: u32,
    /// Give each node its own cpuset of this many CPUs.
    pub cpus_per_node: Option<u32>,
    /// Give each node its own memory cgroup limited to this many bytes
    /// (swap included); a process of the node over it is killed by the
    /// kernel's OOM killer (see [`cgroup::parse_size`] for "512M").
    pub mem_per_node: Option<u64>,
    /// Default: [`default_dir`].
    pub dir: Option<PathBuf>,
    /// How long to wait for every node's control socket.
    pub timeout: Duration,
    /// The executable that runs `__lab supervise` and `__lab node-init`
    /// (`herd` or `herd-lab`). Default: this executable if it is one of
    /// those, else `herd` next to it or one directory up (target/debug/
    /// from target/debug/deps/).
    pub herd_exe: Option<PathBuf>,
    /// The daemon each node runs as `DAEMON --config DIR/nK/herd.toml`.
    /// Default: $HERD_LAB_DAEMON, else `herdd` next to the herd executable.
    pub daemon: Option<PathBuf>,
    /// Directories offered for direct file access (`[dfsa] paths` of every node),
    /// made (mode 1777) in each node before its herdd starts: one directory for all
    /// nodes where the machine's file system is, a node's own under its private /tmp.
    pub shared: Vec<PathBuf>,
    /// Root's processes migrate too (`allow_root_guests = true` on every node).
    pub allow_root_guests: bool,
}

impl UpOptions {
    pub fn new(nodes: u32) -> Self {
        UpOptions {
            nodes,
            cpus_per_node: None,
            mem_per_node: None,
            dir: None,
            timeout: Duration::from_secs(30),
            herd_exe: None,
            daemon: None,
            shared: Vec::new(),
            allow_root_guests: false,
        }
    }
}

/// How a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// herdd runs.
    Running,
    /// herdd does not run; node-init waits for `start`.
    Stopped,
    /// node-init is gone, and with it the node.
    Dead,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Running => "running",
            NodeState::Stopped => "stopped",
            NodeState::Dead => "dead",
        })
    }
}

/// One line of `herd cluster status`.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub state: NodeState,
    /// herdd's pid as the host sees it, while it runs.
    pub pid: Option<i32>,
    /// node-init's pid (pid 1 of the node) as the host sees it.
    pub init_pid: i32,
    pub address: Ipv4Addr,
    pub control_socket: PathBuf,
    /// The node's cpuset ("0-1"), with --cpus-per-node.
    pub cpus: Option<String>,
    /// The node's memory limit in bytes, with --mem-per-node.
    pub mem_limit: Option<u64>,
}

/// The whole of `herd cluster status`.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub dir: PathBuf,
    pub supervisor_pid: i32,
    pub supervisor_running: bool,
    pub nodes: Vec<NodeStatus>,
}

fn load(dir: &Path) -> Result<ClusterState> {
    ClusterState::load(dir)?.ok_or_else(|| LabError::NoCluster { dir: dir.to_path_buf() })
}

/// herdd's host pid: the child of node-init whose innermost pid is the one
/// node-init recorded.
fn daemon_pid(node: &NodeRecord) -> Option<i32> {
    if !node.init.is_live() {
        return None;
    }
    let text = std::fs::read_to_string(node.dir.join(state::NODE_DAEMON_PID)).ok()?;
    let inner: i32 = text.trim().parse().ok()?;
    proc::children(node.init.pid).into_iter().find(|&c| proc::ns_pids(c).and_then(|p| p.last().copied()) == Some(inner))
}

fn node_status(node: &NodeRecord) -> NodeStatus {
    let pid = daemon_pid(node);
    let state = if !node.init.is_live() {
        NodeState::Dead
    } else if pid.is_some() {
        NodeState::Running
    } else {
        NodeState::Stopped
    };
    NodeStatus {
        name: node.name.clone(),
        state,
        pid,
        init_pid: node.init.pid,
        address: node.address,
        control_socket: node.control_socket.clone(),
        cpus: node.cpus.as_deref().map(cgroup::format_cpu_list),
        mem_limit: node.mem_limit,
    }
}

/// How the cluster in `dir` is.
pub fn status(dir: &Path) -> Result<ClusterStatus> {
    let st = load(dir)?;
    Ok(ClusterStatus {
        dir: st.dir.clone(),
        supervisor_pid: st.supervisor.pid,
        supervisor_running: st.supervisor.is_live(),
        nodes: st.nodes.iter().map(node_status).collect(),
    })
}

fn socket_accepts(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

fn log_tail(path: &Path) -> String {
    state::tail(path, 20)
}

/// A node error with the most telling log: herdd's, or node-init's when
/// herdd wrote nothing.
fn node_error(node: &NodeRecord, how: String) -> LabError {
    let daemon_log = node.dir.join(state::NODE_DAEMON_LOG);
    let init_log = node.dir.join(state::NODE_INIT_LOG);
    let daemon_tail = log_tail(&daemon_log);
    let only_header = daemon_tail.lines().all(|l| l.starts_with("--- "));
    let (log, tail) = if only_header { (init_log.clone(), log_tail(&init_log)) } else { (daemon_log, daemon_tail) };
    LabError::Node { node: node.name.clone(), how, log, tail }
}

/// Kills a whole node as a power cut would: SIGKILL to its node-init (pid 1 of its pid
/// namespace), so that every process in it ends at once and its network goes, without a
/// word to the other nodes. Ok(false) if the node was gone already. [`revive_node`]
/// makes it again.
pub fn kill_node(dir: &Path, name: &str) -> Result<bool> {
    let st = load(dir)?;
    let node = st.node(name)?;
    if !node.init.is_live() {
        return Ok(false);
    }
    node.init.signal(libc::SIGKILL).context(|| format!("killing {name}'s node-init (pid {})", node.init.pid))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.init.is_live() {
        if Instant::now() > deadline {
            return Err(node_error(node, format!("node-init (pid {}) did not end after SIGKILL", node.init.pid)));
        }
        std::thread::sleep(POLL);
    }
    Ok(true)
}

/// Makes a node killed by [`kill_node`] again — same name, address and cgroups, a fresh
/// node-init and herdd (logs appended) — and waits until its herdd's control socket
/// accepts connections. Ok(false) if the node was alive.
pub fn revive_node(dir: &Path, name: &str, timeout: Duration) -> Result<bool> {
    let st = load(dir)?;
    let node = st.node(name)?;
    if node.init.is_live() {
        return Ok(false);
    }
    if !st.supervisor.is_live() {
        return Err(LabError::NoCluster { dir: dir.to_path_buf() });
    }
    let old = node.init.pid;
    std::fs::write(dir.join(state::REVIVE_FILE), format!("{name}\n")).map_err(|e| node_error(node, format!("asking for it again: {e}")))?;
    st.supervisor.signal(libc::SIGUSR2).context(|| format!("sending SIGUSR2 to the supervisor (pid {})", st.supervisor.pid))?;
    let deadline = Instant::now() + timeout;
    loop {
        let now = load(dir)?;
        let node = now.node(name)?;
        if node.init.pid != old && node.init.is_live() && daemon_pid(node).is_some() && socket_accepts(&node.control_socket) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Err(node_error(node, format!("it was not made again within {timeout:?} (see the supervisor's log)")));
        }
        std::thread::sleep(POLL);
    }
}

/// Sends SIGTERM to the node's herdd and waits until node-init has reaped
/// it (SIGKILL after 10 s). Ok(false) if it was not running.
pub fn stop_node(dir: &Path, name: &str) -> Result<bool> {
    let st = load(dir)?;
    let node = st.node(name)?;
    if !node.init.is_live() {
        return Err(LabError::NodeGone { node: name.into(), log: node.dir.join(state::NODE_INIT_LOG) });
    }
    let Some(pid) = daemon_pid(node) else {
        return Ok(false);
    };
    let Some(daemon) = ProcRef::of(pid) else {
        return Ok(false);
    };
    daemon.signal(libc::SIGTERM).context(|| format!("sending SIGTERM to {name}'s herdd (pid {pid})"))?;
    let pid_file = node.dir.join(state::NODE_DAEMON_PID);
    let gone = |deadline: Instant| {
        while Instant::now() < deadline {
            if !daemon.is_live() && !pid_file.exists() {
                return true;
            }
            std::thread::sleep(POLL);
        }
        false
    };
    if !gone(Instant::now() + DAEMON_STOP_GRACE) {
        let _ = daemon.signal(libc::SIGKILL);
        if !gone(Instant::now() + Duration::from_secs(5)) {
            return Err(node_error(node, format!("herdd (pid {pid}) did not go away, even after SIGKILL")));
        }
    }
    Ok(true)
}

/// Asks node-init (SIGUSR1) to start herdd again and waits until its
/// control socket accepts connections. Ok(false) if it was running.
pub fn start_node(dir: &Path, name: &str, timeout: Duration) -> Result<bool> {
    let st = load(dir)?;
    let node = st.node(name)?;
    if !node.init.is_live() {
        return Err(LabError::NodeGone { node: name.into(), log: node.dir.join(state::NODE_INIT_LOG) });
    }
    if daemon_pid(node).is_some() {
        return Ok(false);
    }
    // A herdd that has just ended (killed, say) and whose end node-init has not recorded
    // yet: wait for that record, else it would be read as the new herdd's failure.
    let pid_file = node.dir.join(state::NODE_DAEMON_PID);
    let recorded = Instant::now() + Duration::from_secs(5);
    while pid_file.exists() && daemon_pid(node).is_none() && Instant::now() < recorded {
        std::thread::sleep(POLL);
    }
    let exited = node.dir.join(state::NODE_DAEMON_EXITED);
    let _ = std::fs::remove_file(&exited);
    node.init.signal(libc::SIGUSR1).context(|| format!("sending SIGUSR1 to {name}'s node-init (pid {})", node.init.pid))?;
    let deadline = Instant::now() + timeout;
    loop {
        if !node.init.is_live() {
            return Err(node_error(node, "its init process died".into()));
        }
        if let Ok(how) = std::fs::read_to_string(&exited) {
            return Err(node_error(node, format!("herdd ended at start-up ({})", how.trim())));
        }
        if daemon_pid(node).is_some() && socket_accepts(&node.control_socket) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Err(node_error(
                node,
                format!("herdd's control socket {} did not accept connections within {timeout:?}", node.control_socket.display()),
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// Makes a command that runs inside node `name`: in its user namespace
/// (when the cluster has one), UTS, IPC, network, pid and mount namespaces,
/// as nsenter does, and in the node's cgroups (its cpuset and memory limit,
/// with --cpus-per-node and --mem-per-node), as the node's own processes.
/// Its cwd is the node's `/`; it sees the node's /tmp, 127.0.0.1 and pids.
/// `argv[0]` is looked up in $PATH.
pub fn node_exec<S: AsRef<OsStr>>(dir: &Path, name: &str, argv: &[S]) -> Result<Command> {
    let st = load(dir)?;
    let node = st.node(name)?;
    if !node.init.is_live() {
        return Err(LabError::NodeGone { node: name.into(), log: node.dir.join(state::NODE_INIT_LOG) });
    }
    let Some((program, args)) = argv.split_first() else {
        return Err(LabError::Invalid("node_exec needs a program to run".into()));
    };
    let pid = node.init.pid;
    let open = |ns: &str| -> Result<OwnedFd> {
        let p = format!("/proc/{pid}/ns/{ns}");
        File::open(&p).map(OwnedFd::from).context(|| format!("opening {p}"))
    };
    let mut namespaces = Vec::new();
    // setns into one's own user namespace fails (EINVAL): only a different one.
    let same_user_ns = match (std::fs::metadata("/proc/self/ns/user"), std::fs::metadata(format!("/proc/{pid}/ns/user"))) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if !same_user_ns {
        namespaces.push((open("user")?, ns::CLONE_NEWUSER));
    }
    for (name, t) in [
        ("uts", ns::CLONE_NEWUTS),
        ("ipc", ns::CLONE_NEWIPC),
        ("net", ns::CLONE_NEWNET),
        ("pid", ns::CLONE_NEWPID),
        ("mnt", ns::CLONE_NEWNS),
    ] {
        namespaces.push((open(name)?, t));
    }
    let mut cmd = Command::new(program);
    cmd.args(args);
    // Inside a node, `herd` talks to that node's herdd, as on a machine of its own.
    cmd.env("HERD_SOCKET", node_socket(dir, name)).env_remove("HERD_NODE");
    ns::enter(&mut cmd, namespaces);
    // After enter: the program joins, not the process that waits for it.
    cgroup::join_on_exec(&mut cmd, &node.cgroups()).context(|| format!("joining node {name}'s cgroups"))?;
    Ok(cmd)
}

/// What [`down`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Down {
    NoCluster,
    /// The supervisor took everything down.
    Clean,
    /// The supervisor was gone or did not stop; its processes were killed
    /// and its files and cgroups removed from here.
    Forced,
}

/// Takes the cluster in `dir` down: SIGTERM to the supervisor, which stops
/// every node and removes what it made; if it does not go within 15 s (or
/// was already gone), the recorded processes are killed (each checked
/// against its start time) and the cgroups and files removed from here.
pub fn down(dir: &Path) -> Result<Down> {
    down_reaping(dir, None)
}

fn down_reaping(dir: &Path, mut child: Option<&mut Child>) -> Result<Down> {
    let mut reap = || {
        if let Some(c) = child.as_deref_mut() {
            let _ = c.try_wait();
        }
    };
    let mut st = ClusterState::load(dir)?;
    if st.is_none() && state::lock_is_held(dir) {
        // A supervisor that has not written its first state yet.
        let deadline = Instant::now() + Duration::from_secs(2);
        while st.is_none() && Instant::now() < deadline {
            std::thread::sleep(POLL);
            st = ClusterState::load(dir)?;
        }
    }
    let Some(st) = st else {
        reap();
        return Ok(Down::NoCluster);
    };
    let mut clean = false;
    let asked = st
        .supervisor
        .signal(libc::SIGTERM)
        .context(|| format!("sending SIGTERM to the cluster's supervisor (pid {})", st.supervisor.pid))?;
    if asked {
        let deadline = Instant::now() + SUPERVISOR_STOP_GRACE;
        while Instant::now() < deadline {
            reap();
            if !st.supervisor.is_live() {
                clean = true;
                break;
            }
            std::thread::sleep(POLL);
        }
        if !clean {
            let _ = st.supervisor.signal(libc::SIGKILL);
        }
    }
    reap();
    // Whatever is left: the supervisor's own clean-up may not have run.
    let mut killed = false;
    for node in &st.nodes {
        killed |= node.init.signal(libc::SIGKILL).unwrap_or(false);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while st.nodes.iter().any(|n| n.init.is_live()) && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    reap();
    let mut removed = Ok(());
    for top in st.cgroups() {
        let r = cgroup::remove(top).context(|| format!("removing the cluster's cgroup {}", top.display()));
        if removed.is_ok() {
            removed = r;
        }
    }
    removed?;
    supervisor::remove_node_files(&st);
    let path = ClusterState::path(dir);
    if path.exists() {
        killed = true;
        std::fs::remove_file(&path).context(|| format!("removing {}", path.display()))?;
    }
    Ok(if clean && !killed { Down::Clean } else { Down::Forced })
}

/// Where the `herd` (or `herd-lab`) executable is, for `__lab` commands.
fn find_herd_exe() -> Result<PathBuf> {
    let me = std::env::current_exe().context(|| "finding this executable".into())?;
    let name = me.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == "herd" || name == "herd-lab" {
        return Ok(me);
    }
    let dir = me.parent().unwrap_or(Path::new("/"));
    let candidates = [dir.join("herd"), dir.parent().unwrap_or(dir).join("herd")];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| LabError::Missing {
        what: "the herd binary",
        path: candidates[0].clone(),
        hint: "build it (cargo build -p herd-cli) or set UpOptions::herd_exe".into(),
    })
}

fn find_daemon(herd: &Path) -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(DAEMON_ENV).filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        return if d.is_file() {
            Ok(d)
        } else {
            Err(LabError::Missing {
                what: "the daemon named by $HERD_LAB_DAEMON",
                path: d,
                hint: "fix or unset HERD_LAB_DAEMON".into(),
            })
        };
    }
    let d = herd.with_file_name("herdd");
    if d.is_file() {
        Ok(d)
    } else {
        Err(LabError::Missing {
            what: "herdd",
            path: d,
            hint: "build it next to herd (cargo build -p herd-daemon), or set HERD_LAB_DAEMON to the daemon to run".into(),
        })
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).context(|| format!("resolving {}", p.display()))
}

/// Creates the cluster directory. The default directory of a user without
/// $XDG_RUNTIME_DIR lies in /tmp: its `herd-$UID` parent is made 0700 and
/// must be a real directory owned by the user.
fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    let uid = herd_kernel::task::euid();
    let shared_parent = PathBuf::from(format!("/tmp/herd-{uid}"));
    if uid != 0 && dir.starts_with(&shared_parent) {
        match std::fs::DirBuilder::new().mode(0o700).create(&shared_parent) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).context(|| format!("creating {}", shared_parent.display())),
        }
        let m = std::fs::symlink_metadata(&shared_parent).context(|| format!("checking {}", shared_parent.display()))?;
        if !m.is_dir() || m.uid() != uid {
            return Err(LabError::Invalid(format!(
                "refusing to use {}: it is not a directory owned by uid {uid}",
                shared_parent.display()
            )));
        }
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).context(|| format!("creating {}", dir.display()))?;
    dir.canonicalize().context(|| format!("resolving {}", dir.display()))
}

/// A local cluster, taken down when dropped (so that a failing test leaves
/// nothing behind) unless [`LocalCluster::keep_running`] is called.
pub struct LocalCluster {
    dir: PathBuf,
    supervisor: Option<Child>,
    armed: bool,
}

impl LocalCluster {
    /// Starts a cluster and waits until every node's herdd accepts
    /// connections on its control socket. On failure the cluster is taken
    /// down and the error carries the failing node's log.
    pub fn up(opts: &UpOptions) -> Result<LocalCluster> {
        if opts.nodes == 0 || opts.nodes > MAX_NODES {
            return Err(LabError::Invalid(format!("--nodes must be from 1 to {MAX_NODES} (got {})", opts.nodes)));
        }
        if opts.cpus_per_node == Some(0) {
            return Err(LabError::Invalid("--cpus-per-node must be at least 1".into()));
        }
        if let Some(s) = opts.shared.iter().find(|s| !s.is_absolute()) {
            return Err(LabError::Invalid(format!("--shared {}: not an absolute path", s.display())));
        }
        if let Some(m) = opts.mem_per_node.filter(|&m| m < cgroup::MIN_NODE_MEMORY) {
            return Err(LabError::Memory(format!(
                "{} is too little for a node (its herdd must fit too): give at least {}",
                cgroup::format_size(m),
                cgroup::format_size(cgroup::MIN_NODE_MEMORY)
            )));
        }
        let dir = absolute(&opts.dir.clone().unwrap_or_else(default_dir))?;
        if ["/", "/tmp", "/dev/shm"].iter().any(|p| dir == Path::new(p)) {
            return Err(LabError::Invalid(format!(
                "{} cannot be a cluster directory: use a directory of its own",
                dir.display()
            )));
        }
        net::ip_command().ok_or(LabError::NoIpCommand)?;
        let herd = match &opts.herd_exe {
            Some(p) if p.is_file() => p.clone(),
            Some(p) => {
                return Err(LabError::Missing {
                    what: "the herd executable",
                    path: p.clone(),
                    hint: "check UpOptions::herd_exe".into(),
                })
            }
            None => find_herd_exe()?,
        };
        let herd = absolute(&herd)?;
        let daemon = match &opts.daemon {
            Some(p) => p.clone(),
            None => find_daemon(&herd)?,
        };
        let daemon = absolute(&daemon)?;
        if herd_kernel::task::euid() != 0 {
            if let Some(why) = supervisor::userns_disabled() {
                return Err(LabError::Invalid(format!(
                    "a cluster without root needs user namespaces, but {why}; run as root instead"
                )));
            }
        }
        let mut controllers = Vec::new();
        if opts.cpus_per_node.is_some() {
            controllers.push(cgroup::CPUSET);
        }
        if opts.mem_per_node.is_some() {
            controllers.push(cgroup::MEMORY);
        }
        if !controllers.is_empty() {
            let parents = cgroup::find_parents(&controllers)?;
            if let Some(per_node) = opts.cpus_per_node {
                let cpus = &parents[0].cpus;
                if per_node as usize > cpus.len() {
                    return Err(LabError::Cpuset(format!(
                        "{per_node} CPUs per node asked for, but only {} ({}) are available",
                        cpus.len(),
                        cgroup::format_cpu_list(cpus)
                    )));
                }
            }
        }
        let dir = prepare_dir(&dir)?;
        let longest = node_socket(&dir, &state::node_name(opts.nodes));
        if longest.as_os_str().len() >= 108 {
            return Err(LabError::Invalid(format!(
                "{} is too long for a unix socket path (108 bytes at most): choose a shorter --dir",
                longest.display()
            )));
        }
        if let Some(st) = ClusterState::load(&dir)? {
            if state::lock_is_held(&dir) || st.supervisor.is_live() {
                return Err(LabError::AlreadyRunning { dir, pid: st.supervisor.pid });
            }
            // A cluster whose supervisor died: clear what it left.
            down(&dir)?;
        } else if state::lock_is_held(&dir) {
            return Err(LabError::AlreadyRunning { dir, pid: 0 });
        }
        // A new key for each cluster: the nodes of an earlier one cannot join this one.
        let key_file = dir.join(state::KEY_FILE);
        match std::fs::remove_file(&key_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).context(|| format!("removing the old {}", key_file.display()));
            }
            _ => {}
        }
        herd_wire::ClusterKey::generate()?.write_new(&key_file)?;

        let log_path = dir.join(state::SUPERVISOR_LOG);
        let log = File::create(&log_path).context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(&herd);
        cmd.arg("__lab").arg("supervise").arg("--dir").arg(&dir).arg("--nodes").arg(opts.nodes.to_string());
        cmd.arg("--daemon").arg(&daemon);
        if let Some(k) = opts.cpus_per_node {
            cmd.arg("--cpus-per-node").arg(k.to_string());
        }
        if let Some(m) = opts.mem_per_node {
            cmd.arg("--mem-per-node").arg(m.to_string());
        }
        for s in &opts.shared {
            cmd.arg("--shared").arg(s);
        }
        if opts.allow_root_guests {
            cmd.arg("--allow-root-guests");
        }
        let log2 = log.try_clone().context(|| "duplicating the log fd".into())?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2).current_dir("/");
        ns::detach(&mut cmd);
        let child = cmd.spawn().context(|| format!("starting {} __lab supervise", herd.display()))?;
        let mut cluster = LocalCluster { dir, supervisor: Some(child), armed: true };
        match cluster.wait_ready(opts.nodes, opts.timeout) {
            Ok(()) => Ok(cluster),
            Err(e) => {
                let _ = cluster.take_down();
                Err(e)
            }
        }
    }

    fn wait_ready(&mut self, nodes: u32, timeout: Duration) -> Result<()> {
        let log_path = self.dir.join(state::SUPERVISOR_LOG);
        let deadline = Instant::now() + timeout;
        let child = self.supervisor.as_mut().expect("up holds the supervisor");
        let child_pid = child.id() as i32;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                if status.code() == Some(EXIT_ALREADY_RUNNING) {
                    let pid = ClusterState::load(&self.dir).ok().flatten().map(|s| s.supervisor.pid).unwrap_or(0);
                    return Err(LabError::AlreadyRunning { dir: self.dir.clone(), pid });
                }
                return Err(LabError::Supervisor {
                    how: format!("ended during start-up ({status})"),
                    tail: log_tail(&log_path),
                    log: log_path,
                });
            }
            let st = ClusterState::load(&self.dir).ok().flatten().filter(|s| s.supervisor.pid == child_pid);
            let mut first_waiting = None;
            if let Some(st) = st.as_ref().filter(|s| s.nodes.len() == nodes as usize) {
                for node in &st.nodes {
                    if !node.init.is_live() {
                        return Err(node_error(node, "its init process died during start-up".into()));
                    }
                    let exited = node.dir.join(state::NODE_DAEMON_EXITED);
                    if let Ok(how) = std::fs::read_to_string(&exited) {
                        return Err(node_error(node, format!("herdd ended during start-up ({})", how.trim())));
                    }
                    if first_waiting.is_none() && !socket_accepts(&node.control_socket) {
                        first_waiting = Some(node.clone());
                    }
                }
                if first_waiting.is_none() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(match first_waiting {
                    Some(node) => node_error(
                        &node,
                        format!(
                            "herdd's control socket {} did not accept connections within {timeout:?}",
                            node.control_socket.display()
                        ),
                    ),
                    None => LabError::Supervisor {
                        how: format!("did not start every node within {timeout:?}"),
                        tail: log_tail(&log_path),
                        log: log_path,
                    },
                });
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state file as the supervisor wrote it.
    pub fn state(&self) -> Result<ClusterState> {
        load(&self.dir)
    }

    /// n1 .. nN.
    pub fn node_names(&self) -> Result<Vec<String>> {
        Ok(self.state()?.nodes.into_iter().map(|n| n.name).collect())
    }

    pub fn status(&self) -> Result<Vec<NodeStatus>> {
        Ok(status(&self.dir)?.nodes)
    }

    pub fn node_socket(&self, name: &str) -> PathBuf {
        node_socket(&self.dir, name)
    }

    /// The node's address on the cluster bridge.
    pub fn node_address(&self, name: &str) -> Result<Ipv4Addr> {
        Ok(self.state()?.node(name)?.address)
    }

    /// See [`stop_node`].
    pub fn stop_node(&self, name: &str) -> Result<bool> {
        stop_node(&self.dir, name)
    }

    /// See [`kill_node`].
    pub fn kill_node(&self, name: &str) -> Result<bool> {
        kill_node(&self.dir, name)
    }

    /// See [`start_node`] (waits up to 30 s).
    pub fn start_node(&self, name: &str) -> Result<bool> {
        start_node(&self.dir, name, Duration::from_secs(30))
    }

    /// See [`revive_node`] (waits up to 30 s).
    pub fn revive_node(&self, name: &str) -> Result<bool> {
        revive_node(&self.dir, name, Duration::from_secs(30))
    }

    /// See [`node_exec`].
    pub fn node_exec<S: AsRef<OsStr>>(&self, name: &str, argv: &[S]) -> Result<Command> {
        node_exec(&self.dir, name, argv)
    }

    /// Takes the cluster down and waits until it is gone.
    pub fn down(mut self) -> Result<Down> {
        self.take_down()
    }

    fn take_down(&mut self) -> Result<Down> {
        self.armed = false;
        let result = down_reaping(&self.dir, self.supervisor.as_mut());
        if let Some(mut c) = self.supervisor.take() {
            // The supervisor is our child: reap it (it has ended, or was killed).
            let deadline = Instant::now() + Duration::from_secs(2);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
        }
        result
    }

    /// Leaves the cluster running when this value goes away (`herd cluster
    /// up` does this); returns its directory.
    pub fn keep_running(mut self) -> PathBuf {
        self.armed = false;
        self.supervisor = None;
        std::mem::take(&mut self.dir)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.take_down() {
                eprintln!("herd-lab: taking the cluster at {} down: {e}", self.dir.display());
            }
        }
    }
}
