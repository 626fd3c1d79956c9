//! The supervisor (`herd __lab supervise`): the detached process that owns a
//! local cluster. It holds the cluster lock, builds the hub network and the
//! nodes, writes the state file, and takes everything down again on
//! SIGTERM, SIGINT or SIGHUP.
//!
//! Order of start-up, and why:
//! 1. lock `DIR/cluster.lock` (a second supervisor exits with
//!    [`EXIT_ALREADY_RUNNING`]), block signals, write a first state file;
//! 2. the cgroups (cpuset, memory), while still in the caller's user namespace;
//! 3. not root: `unshare(CLONE_NEWUSER)` mapping uid 0 to the caller, so
//!    that everything below works without privileges;
//! 4. `unshare(CLONE_NEWNET)`: this namespace is the hub with bridge herd0;
//! 5. per node: `clone` of node-init into new network, pid, mount, UTS and
//!    IPC namespaces (it waits on a pipe), its cgroup, its veth pair, then a
//!    byte on the pipe lets it go on;
//! 6. the state file with every node.
//!
//! A node killed as a whole (`cluster::kill_node`) can be started again
//! (`cluster::revive_node`): the caller writes its name into `DIR/revive` and sends
//! SIGUSR2; the supervisor makes it as in step 5, with the same name, address and
//! cgroups, and its logs are appended to.
//!
//! Everything the supervisor makes goes away with it: node-init processes
//! get SIGTERM (and SIGKILL after 8 s; each was also started with
//! PR_SET_PDEATHSIG = SIGKILL, so even a killed supervisor takes its nodes
//! along), the network namespaces and veths vanish with their last process,
//! and the cgroups and state file are removed.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use herd_kernel::ns;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cgroup;
use crate::net;
use crate::proc::ProcRef;
use crate::signals::{log, Signals};
use crate::state::{self, ClusterState, NodeRecord};

/// The supervisor's exit code when another one already runs in DIR.
pub const EXIT_ALREADY_RUNNING: i32 = 3;

/// How long node-init processes get to stop their herdd and exit.
const NODE_STOP_GRACE: Duration = Duration::from_secs(8);

pub struct SuperviseOptions {
    pub dir: PathBuf,
    pub nodes: u32,
    pub cpus_per_node: Option<u32>,
    /// Bytes.
    pub mem_per_node: Option<u64>,
    pub daemon: PathBuf,
    /// Directories for direct file access (see `UpOptions::shared`).
    pub shared: Vec<PathBuf>,
    /// See `UpOptions::allow_root_guests`.
    pub allow_root_guests: bool,
}

/// The cgroups one node gets.
#[derive(Clone, Debug, Default)]
struct NodeCgroups {
    cpuset: Option<PathBuf>,
    cpus: Option<Vec<u32>>,
    memory: Option<PathBuf>,
    mem_limit: Option<u64>,
}

struct Supervisor {
    opts: SuperviseOptions,
    state: ClusterState,
    signals: Signals,
    /// Live node-init pids, to their index in state.nodes.
    live: HashMap<i32, usize>,
    stopping: bool,
}

pub fn supervise(opts: SuperviseOptions) -> anyhow::Result<i32> {
    let me = std::process::id() as i32;
    let lock_path = opts.dir.join(state::LOCK_FILE);
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    let _lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, e)) => {
            log!("supervisor {me}: another supervisor holds {} ({e}); not starting", lock_path.display());
            return Ok(EXIT_ALREADY_RUNNING);
        }
    };
    let signals = Signals::block(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGCHLD, Signal::SIGUSR2])?;
    let euid = herd_kernel::task::euid();
    log!("supervisor {me}: starting {} node(s) in {} as uid {euid}", opts.nodes, opts.dir.display());
    let state = ClusterState {
        dir: opts.dir.clone(),
        supervisor: ProcRef::of(me).context("reading our own /proc/self/stat")?,
        user_namespace: euid != 0,
        cgroup: None,
        memory_cgroup: None,
        nodes: Vec::new(),
    };
    state.save()?;
    let mut sup = Supervisor { opts, state, signals, live: HashMap::new(), stopping: false };
    if let Err(e) = sup.build() {
        log!("setting up the cluster failed: {e:#}");
        sup.teardown();
        return Ok(1);
    }
    log!("cluster up: {} node(s)", sup.state.nodes.len());
    sup.run();
    sup.teardown();
    Ok(0)
}

impl Supervisor {
    fn build(&mut self) -> anyhow::Result<()> {
        let names: Vec<String> = (1..=self.opts.nodes).map(state::node_name).collect();
        let node_cgroups = self.make_cgroups(&names)?;
        if self.state.user_namespace {
            let uid = nix::unistd::getuid();
            enter_user_namespace()?;
            log!("in a new user namespace where uid 0 is uid {uid}");
        }
        ns::unshare(ns::CLONE_NEWNET).context("unshare(CLONE_NEWNET) for the hub network namespace")?;
        net::make_hub()?;
        for (i, (name, cgroups)) in names.iter().zip(node_cgroups).enumerate() {
            self.start_node(i as u32 + 1, name, cgroups, None).with_context(|| format!("starting node {name}"))?;
        }
        Ok(self.state.save()?)
    }

    /// The cpuset and memory cgroups of every node, as the options ask;
    /// recorded in the state file as soon as they exist.
    fn make_cgroups(&mut self, names: &[String]) -> anyhow::Result<Vec<NodeCgroups>> {
        let opts = &self.opts;
        let mut controllers = Vec::new();
        if opts.cpus_per_node.is_some() {
            controllers.push(cgroup::CPUSET);
        }
        if opts.mem_per_node.is_some() {
            controllers.push(cgroup::MEMORY);
        }
        if controllers.is_empty() {
            return Ok(vec![NodeCgroups::default(); names.len()]);
        }
        let parents =
            cgroup::find_parents(&controllers).map_err(|e| anyhow!("{}: {}", cgroup::option_of(e.controller), e.why))?;
        let all_cpus = parents.iter().find(|p| p.controllers.contains(&cgroup::CPUSET)).map(|p| p.cpus.clone()).unwrap_or_default();
        if let Some(per_node) = opts.cpus_per_node {
            if per_node as usize > all_cpus.len() {
                bail!(
                    "--cpus-per-node {per_node}: only {} CPUs ({}) are available",
                    all_cpus.len(),
                    cgroup::format_cpu_list(&all_cpus)
                );
            }
        }
        let plan: Vec<cgroup::NodeLimits> = names
            .iter()
            .enumerate()
            .map(|(i, n)| cgroup::NodeLimits {
                name: n.clone(),
                cpus: opts.cpus_per_node.map(|k| cgroup::assign_cpus(&all_cpus, i as u32, k)),
                memory: opts.mem_per_node,
            })
            .collect();
        let name = format!("herd-{:08x}", rand::random::<u32>());
        let trees = cgroup::create_all(&parents, &name, &plan).context("making the cgroups")?;
        let mut out = vec![NodeCgroups::default(); names.len()];
        for (t, p) in trees.iter().zip(&parents) {
            log!("{} cgroups in {} ({:?})", t.controllers.join(" and "), t.top.display(), p.version);
            for (i, d) in t.nodes.iter().enumerate() {
                if t.controllers.contains(&cgroup::CPUSET) {
                    out[i].cpuset = Some(d.clone());
                    out[i].cpus = plan[i].cpus.clone();
                }
                if t.controllers.contains(&cgroup::MEMORY) {
                    out[i].memory = Some(d.clone());
                    out[i].mem_limit = plan[i].memory;
                }
            }
            if t.controllers.contains(&cgroup::CPUSET) {
                self.state.cgroup = Some(t.top.clone());
            }
            if t.controllers.contains(&cgroup::MEMORY) {
                self.state.memory_cgroup = Some(t.top.clone());
            }
        }
        self.state.save()?;
        Ok(out)
    }

    /// Starts node `name` (the k-th); `again`: the index of its record, when a node that
    /// was killed is made again (its logs are appended to, its record replaced).
    fn start_node(&mut self, k: u32, name: &str, cgroups: NodeCgroups, again: Option<usize>) -> anyhow::Result<()> {
        let opts = &self.opts;
        let dir = state::node_dir(&opts.dir, name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join(state::NODE_CONFIG), state::node_config(&opts.dir, name, &opts.shared, opts.allow_root_guests))?;
        for stale in [state::NODE_SOCKET, state::NODE_DAEMON_PID, state::NODE_DAEMON_EXITED] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        let log_file = |name: &str| OpenOptions::new().create(true).write(true).append(again.is_some()).truncate(again.is_none()).open(dir.join(name));
        log_file(state::NODE_DAEMON_LOG)?;
        let init_log = log_file(state::NODE_INIT_LOG)?;
        let address = state::node_address(k);

        let exe = std::env::current_exe().context("finding our own executable")?;
        let mut spec = ns::ExecSpec::new(&exe)?;
        spec.arg("__lab")?.arg("node-init")?;
        spec.arg("--dir")?.arg(&opts.dir)?;
        spec.arg("--name")?.arg(name)?;
        spec.arg("--addr")?.arg(format!("{address}/{}", state::PREFIX_LEN))?;
        spec.arg("--daemon")?.arg(&opts.daemon)?;
        spec.arg("--sync-fd")?.arg("3")?;
        // Paths herdd needs that node-init's private /tmp would hide.
        spec.arg("--keep")?.arg(&opts.dir)?;
        if let Some(d) = opts.daemon.parent() {
            spec.arg("--keep")?.arg(d)?;
        }
        for s in &opts.shared {
            spec.arg("--shared")?.arg(s)?;
        }
        let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        spec.fd(std::fs::File::open("/dev/null")?.into(), 0);
        spec.fd(init_log.try_clone()?.into(), 1);
        spec.fd(init_log.into(), 2);
        spec.fd(go_r, 3);
        spec.parent_death_signal(libc::SIGKILL);
        let flags = ns::CLONE_NEWNET | ns::CLONE_NEWPID | ns::CLONE_NEWNS | ns::CLONE_NEWUTS | ns::CLONE_NEWIPC;
        let pid = ns::clone_exec(flags, &spec).context("clone of node-init into new namespaces")?;
        drop(spec);
        let init = ProcRef::of(pid).ok_or_else(|| anyhow!("node-init (pid {pid}) vanished at once"))?;
        let slot = again.unwrap_or(self.state.nodes.len());
        self.live.insert(pid, slot);
        let record = NodeRecord {
            name: name.to_string(),
            address,
            prefix_len: state::PREFIX_LEN,
            init,
            dir: dir.clone(),
            control_socket: dir.join(state::NODE_SOCKET),
            cgroup: cgroups.cpuset,
            cpus: cgroups.cpus.clone(),
            memory_cgroup: cgroups.memory,
            mem_limit: cgroups.mem_limit,
        };
        if again.is_some() {
            self.state.nodes[slot] = record;
        } else {
            self.state.nodes.push(record);
        }
        // Before node-init goes on: herdd and everything else of the node inherit them.
        for d in self.state.nodes[slot].cgroups() {
            cgroup::add_process(d, pid)?;
        }
        net::plug_node(name, pid)?;
        nix::unistd::write(&go_w, b"g").context("releasing node-init")?;
        drop(go_w);
        log!(
            "node {name}: init pid {pid}, address {address}{}{}",
            cgroups.cpus.map(|c| format!(", cpus {}", cgroup::format_cpu_list(&c))).unwrap_or_default(),
            cgroups.mem_limit.map(|m| format!(", memory {}", cgroup::format_size(m))).unwrap_or_default()
        );
        Ok(())
    }

    fn run(&mut self) {
        loop {
            match self.signals.next(None) {
                Some(Signal::SIGCHLD) => self.reap(),
                Some(Signal::SIGUSR2) => self.revive(),
                Some(sig @ (Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP)) => {
                    log!("{sig}: taking the cluster down");
                    return;
                }
                _ => {}
            }
        }
    }

    /// Makes again the nodes named in `DIR/revive` whose init has died (see the module
    /// documentation), then removes the file.
    fn revive(&mut self) {
        self.reap();
        let request = self.opts.dir.join(state::REVIVE_FILE);
        let names = std::fs::read_to_string(&request).unwrap_or_default();
        let _ = std::fs::remove_file(&request);
        for name in names.split_whitespace() {
            let Some(i) = self.state.nodes.iter().position(|n| n.name == name) else {
                log!("revive {name}: no such node");
                continue;
            };
            if self.live.values().any(|&j| j == i) {
                log!("revive {name}: it is alive");
                continue;
            }
            let old = &self.state.nodes[i];
            let cgroups = NodeCgroups { cpuset: old.cgroup.clone(), cpus: old.cpus.clone(), memory: old.memory_cgroup.clone(), mem_limit: old.mem_limit };
            // The old node's network namespace (and with it both ends of its veth) goes
            // away shortly after its last process: until then its port name is taken.
            let deadline = Instant::now() + Duration::from_secs(5);
            let made = loop {
                match self.start_node(i as u32 + 1, name, cgroups.clone(), Some(i)) {
                    Ok(()) => break Ok(()),
                    Err(e) if Instant::now() < deadline => {
                        log!("revive {name}: {e:#}; trying again");
                        // The half-made node-init ends with the namespaces it made.
                        if let Some((&pid, _)) = self.live.iter().find(|(_, &j)| j == i) {
                            let _ = herd_kernel::task::kill(pid, libc::SIGKILL);
                        }
                        std::thread::sleep(Duration::from_millis(100));
                        self.reap();
                    }
                    Err(e) => break Err(e),
                }
            };
            match made.and_then(|()| Ok(self.state.save()?)) {
                Ok(()) => log!("node {name}: made again"),
                Err(e) => log!("revive {name}: {e:#}"),
            }
        }
    }

    /// Reaps every child that has ended.
    fn reap(&mut self) {
        loop {
            let (pid, how) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exit code {code}")),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, format!("killed by {sig}")),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            if let Some(i) = self.live.remove(&pid.as_raw()) {
                let node = &self.state.nodes[i];
                if self.stopping {
                    log!("node {}: init ended ({how})", node.name);
                } else {
                    log!(
                        "node {}: init (pid {pid}) died unexpectedly ({how}); the node and its herdd are gone, see {}",
                        node.name,
                        node.dir.join(state::NODE_INIT_LOG).display()
                    );
                }
            }
        }
    }

    fn teardown(&mut self) {
        self.stopping = true;
        self.reap();
        for &pid in self.live.keys() {
            let _ = herd_kernel::task::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + NODE_STOP_GRACE;
        while !self.live.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.signals.next(Some(deadline - now));
            self.reap();
        }
        for (&pid, &i) in &self.live {
            log!("node {}: init did not stop in {NODE_STOP_GRACE:?}; killing it", self.state.nodes[i].name);
            let _ = herd_kernel::task::kill(pid, libc::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        self.live.clear();
        for top in self.state.cgroups() {
            if let Err(e) = cgroup::remove(top) {
                log!("{e}");
            }
        }
        remove_node_files(&self.state);
        let _ = std::fs::remove_file(ClusterState::path(&self.state.dir));
        log!("cluster down");
    }
}

/// Removes what the nodes leave that would look alive to the next reader.
pub fn remove_node_files(state: &ClusterState) {
    for node in &state.nodes {
        for f in [state::NODE_SOCKET, state::NODE_DAEMON_PID] {
            let _ = std::fs::remove_file(node.dir.join(f));
        }
    }
}

/// Makes this (single-threaded) process root of a new user namespace, with
/// uid and gid 0 mapped to the caller's.
fn enter_user_namespace() -> anyhow::Result<()> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    if let Err(e) = ns::unshare(ns::CLONE_NEWUSER) {
        bail!("{}", explain_userns_failure(&e));
    }
    let write = |path: &str, text: String| std::fs::write(path, &text).with_context(|| format!("writing {text:?} to {path}"));
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))
}

fn read_sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Why unprivileged user namespaces cannot work here, from the sysctls that
/// switch them off, if one does.
pub fn userns_disabled() -> Option<String> {
    if read_sysctl("/proc/sys/user/max_user_namespaces") == Some(0) {
        return Some("user namespaces are disabled (sysctl user.max_user_namespaces=0)".into());
    }
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return Some("unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=0)".into());
    }
    if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        return Some(
            "AppArmor restricts unprivileged user namespaces (sysctl kernel.apparmor_restrict_unprivileged_userns=1)".into(),
        );
    }
    None
}

fn explain_userns_failure(e: &std::io::Error) -> String {
    let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0));
    let why = match errno {
        nix::errno::Errno::EPERM | nix::errno::Errno::EACCES => userns_disabled().unwrap_or_else(|| {
            "user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=0 or user.max_user_namespaces=0), \
             or a seccomp or LSM policy of this sandbox forbids them"
                .into()
        }),
        nix::errno::Errno::ENOSPC | nix::errno::Errno::EUSERS => {
            "the limit on user namespaces is reached (user.max_user_namespaces, or 32 levels of nesting)".into()
        }
        nix::errno::Errno::EINVAL => "the process is multithreaded or chrooted".into(),
        _ => e.to_string(),
    };
    format!("unshare(CLONE_NEWUSER) failed: {}; {why}; run as root instead", errno_name(errno))
}

fn errno_name(e: nix::errno::Errno) -> String {
    format!("{e:?}")
}
