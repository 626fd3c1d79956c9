//! The nodes' cgroups: cpusets (`--cpus-per-node`) and memory limits
//! (`--mem-per-node`). The cluster gets one cgroup, `herd-<random>`, holding
//! one cgroup per node; with cgroup v1 there is one such tree in each
//! hierarchy used (cpuset, memory), with cgroup v2 a single tree that has
//! both controllers.
//!
//! - cgroup v1 (a hierarchy with the controller is mounted): the cluster
//!   cgroup is made in this process's own cgroup of that hierarchy.
//!   cpuset: it and each node get `cpuset.cpus` and `cpuset.mems` (v1
//!   requires both), the parent's memory nodes. memory: each node gets
//!   `memory.limit_in_bytes` and, when swap accounting is on,
//!   `memory.memsw.limit_in_bytes` with the same value (no swapping past
//!   the limit), and the kernel's OOM killer on (`memory.oom_control`).
//! - cgroup v2: the cluster cgroup is made in the nearest cgroup, from ours
//!   upwards, that we may write to and that can have children with the
//!   controllers (the root, or one without processes of its own: the "no
//!   internal processes" rule). As root, `+cpuset` / `+memory` is switched
//!   on in `cgroup.subtree_control` from the hierarchy's root down to it; as
//!   another user it must already be delegated. The switches are left on
//!   when the cluster goes down (they are harmless and may be someone
//!   else's). memory: each node gets `memory.max` and `memory.swap.max` = 0
//!   where that file exists.
//!
//! A process over its node's memory limit is killed by the kernel's OOM
//! killer inside that node's cgroup only. Which CPUs a node gets is
//! [`assign_cpus`]: round-robin over the CPUs the parent cgroup has, so
//! with more nodes than CPUs nodes share CPUs.

use std::io;
use std::path::{Path, PathBuf};

use herd_kernel::host::{parse_mountinfo as mounts, Mount};
use nix::unistd::{access, AccessFlags};

/// The cpuset controller.
pub const CPUSET: &str = "cpuset";
/// The memory controller.
pub const MEMORY: &str = "memory";

/// The smallest `--mem-per-node`: herdd itself must fit.
pub const MIN_NODE_MEMORY: u64 = 16 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Where the cluster's cgroup for some controllers can be made, and what it
/// may use.
#[derive(Debug)]
pub struct Parent {
    pub version: Version,
    /// The controllers this parent is for: one with cgroup v1 (each has a
    /// hierarchy of its own), every one asked for with v2.
    pub controllers: Vec<&'static str>,
    pub dir: PathBuf,
    /// v2: `cgroup.subtree_control` files that need the controllers, top-down.
    pub enable: Vec<PathBuf>,
    /// cpuset: the CPUs the nodes can be given.
    pub cpus: Vec<u32>,
    /// cpuset, v1: the memory nodes the children get.
    pub mems: String,
}

/// The old name, from when only cpusets were made.
pub type CpusetParent = Parent;

/// What one node's cgroup gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLimits {
    pub name: String,
    /// Its cpuset.
    pub cpus: Option<Vec<u32>>,
    /// Its memory limit in bytes.
    pub memory: Option<u64>,
}

/// Why a cgroup cannot be made: the controller it is about, and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoCgroup {
    pub controller: &'static str,
    pub why: String,
}

impl std::fmt::Display for NoCgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// The `herd cluster up` option that asks for `controller`.
pub fn option_of(controller: &str) -> &'static str {
    if controller == MEMORY {
        "--mem-per-node"
    } else {
        "--cpus-per-node"
    }
}

/// Finds where this process may make cpuset cgroups, or says why it cannot.
pub fn find_parent() -> Result<Parent, String> {
    let mut parents = find_parents(&[CPUSET]).map_err(|e| e.why)?;
    Ok(parents.remove(0))
}

/// Finds where this process may make cgroups with each of `controllers`
/// (in [`CPUSET`], [`MEMORY`]): one parent per v1 hierarchy, one for all
/// the controllers on v2. The cpuset parent, if any, comes first.
pub fn find_parents(controllers: &[&'static str]) -> Result<Vec<Parent>, NoCgroup> {
    let any = controllers.first().copied().unwrap_or(CPUSET);
    let err = |why: String| NoCgroup { controller: any, why };
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| err(format!("cannot read /proc/self/mountinfo: {e}")))?;
    let own =
        std::fs::read_to_string("/proc/self/cgroup").map_err(|e| err(format!("cannot read /proc/self/cgroup: {e}")))?;
    find_parents_in(&mountinfo, &own, herd_kernel::task::euid(), controllers)
}

/// The directory of cgroup `path` (as /proc/self/cgroup names it) under `m`.
fn cgroup_dir(m: &Mount, path: &str) -> PathBuf {
    let rel = path.strip_prefix(m.root.as_str()).unwrap_or(path).trim_start_matches('/');
    if rel.is_empty() {
        m.point.clone()
    } else {
        m.point.join(rel)
    }
}

fn writable(p: &Path) -> bool {
    access(p, AccessFlags::W_OK).is_ok()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default().trim().to_string()
}

fn has_word(text: &str, word: &str) -> bool {
    text.split_whitespace().any(|w| w == word)
}

/// "cpuset", "cpuset and memory".
fn names(controllers: &[&str]) -> String {
    match controllers {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn find_parents_in(mountinfo: &str, own: &str, euid: u32, controllers: &[&'static str]) -> Result<Vec<Parent>, NoCgroup> {
    let mounts = mounts(mountinfo);
    let mut found = Vec::new();
    let mut on_v2 = Vec::new();
    for &c in controllers {
        let v1 = mounts.iter().find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == c));
        match v1 {
            Some(m) => found.push(v1_parent(m, own, euid, c).map_err(|why| NoCgroup { controller: c, why })),
            None => on_v2.push(c),
        }
    }
    if !on_v2.is_empty() {
        found.push(v2_parent(&mounts, own, euid, &on_v2));
    }
    // The error about the first controller asked for, if there are several.
    let rank = |c: &str| controllers.iter().position(|x| *x == c);
    let (ok, errors): (Vec<_>, Vec<_>) = found.into_iter().partition(Result::is_ok);
    if let Some(e) = errors.into_iter().filter_map(Result::err).min_by_key(|e| rank(e.controller)) {
        return Err(e);
    }
    let mut out: Vec<Parent> = ok.into_iter().filter_map(Result::ok).collect();
    out.sort_by_key(|p| !p.controllers.contains(&CPUSET));
    Ok(out)
}

fn v1_parent(m: &Mount, own: &str, euid: u32, controller: &'static str) -> Result<Parent, String> {
    let path = own
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            controllers.split(',').any(|c| c == controller).then_some(path)
        })
        .ok_or_else(|| {
            format!("/proc/self/cgroup names no {controller} cgroup although a cgroup v1 {controller} hierarchy is mounted")
        })?;
    let dir = cgroup_dir(m, path);
    if !writable(&dir) || !writable(&dir.join("cgroup.procs")) {
        return Err(format!(
            "this process's {controller} cgroup {} (cgroup v1) is not writable by uid {euid}, and cgroup v1 cannot be delegated safely; \
             run as root, or on a cgroup v2 system from a cgroup delegated to this user with the {controller} controller",
            dir.display()
        ));
    }
    let (mut cpus, mut mems) = (Vec::new(), String::new());
    if controller == CPUSET {
        cpus = parse_cpu_list(&first_of(&dir, &["cpuset.effective_cpus", "cpuset.cpus"]));
        mems = first_of(&dir, &["cpuset.effective_mems", "cpuset.mems"]);
        if cpus.is_empty() || mems.is_empty() {
            return Err(format!("{} has no CPUs or no memory nodes", dir.display()));
        }
    } else if controller == MEMORY && !dir.join("memory.limit_in_bytes").exists() {
        return Err(format!("{} has no memory.limit_in_bytes: the memory controller cannot limit memory here", dir.display()));
    }
    Ok(Parent { version: Version::V1, controllers: vec![controller], dir, enable: Vec::new(), cpus, mems })
}

fn v2_parent(mounts: &[Mount], own: &str, euid: u32, cs: &[&'static str]) -> Result<Parent, NoCgroup> {
    let err = |controller: &'static str, why: String| NoCgroup { controller, why };
    let m = mounts.iter().find(|m| m.fstype == "cgroup2").ok_or_else(|| {
        err(cs[0], format!("no {c} controller: neither a cgroup v1 {c} hierarchy nor a cgroup v2 hierarchy is mounted", c = cs[0]))
    })?;
    let offered = read(&m.point.join("cgroup.controllers"));
    if let Some(&c) = cs.iter().find(|c| !has_word(&offered, c)) {
        return Err(err(
            c,
            format!(
                "no {c} controller: no cgroup v1 {c} hierarchy is mounted and the cgroup v2 hierarchy at {} does not offer {c}",
                m.point.display()
            ),
        ));
    }
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| err(cs[0], "/proc/self/cgroup names no cgroup v2 path".into()))?;
    let own_dir = cgroup_dir(m, path);
    let mut c = own_dir.clone();
    loop {
        if let Some(parent) = v2_candidate(m, &c, euid, cs) {
            return Ok(parent);
        }
        if c == m.point || !c.pop() || !c.starts_with(&m.point) {
            break;
        }
    }
    let (what, s) = (names(cs), if cs.len() > 1 { "s" } else { "" });
    Err(err(
        cs[0],
        format!(
            "no cgroup v2 directory from {} up to {} is writable by uid {euid}, free of processes of its own and able to use the {what} controller{s}; \
             run as root, or run herd inside a cgroup delegated to this user with the {what} controller{s} (systemd: Delegate={})",
            own_dir.display(),
            m.point.display(),
            cs.join(" ")
        ),
    ))
}

/// `c` as the parent of the cluster cgroup with controllers `cs`, if it can be.
fn v2_candidate(m: &Mount, c: &Path, euid: u32, cs: &[&'static str]) -> Option<Parent> {
    let is_root = c == m.point;
    if !writable(c) || !writable(&c.join("cgroup.procs")) {
        return None;
    }
    let subtree = read(&c.join("cgroup.subtree_control"));
    let all_on = cs.iter().all(|x| has_word(&subtree, x));
    if !is_root && !all_on && !read(&c.join("cgroup.procs")).is_empty() {
        return None;
    }
    let mut enable = Vec::new();
    let controllers = read(&c.join("cgroup.controllers"));
    if !cs.iter().all(|x| has_word(&controllers, x)) {
        // Only root may switch them on above a delegated cgroup.
        if euid != 0 {
            return None;
        }
        let mut above: Vec<PathBuf> =
            c.ancestors().skip(1).take_while(|a| a.starts_with(&m.point)).map(Path::to_path_buf).collect();
        above.reverse();
        for a in above {
            let on = read(&a.join("cgroup.subtree_control"));
            if !cs.iter().all(|x| has_word(&on, x)) {
                enable.push(a.join("cgroup.subtree_control"));
            }
        }
    }
    if !all_on {
        if !writable(&c.join("cgroup.subtree_control")) {
            return None;
        }
        enable.push(c.join("cgroup.subtree_control"));
    }
    let (mut cpus, mut mems) = (Vec::new(), String::new());
    if cs.contains(&CPUSET) {
        cpus = parse_cpu_list(&read(&c.join("cpuset.cpus.effective")));
        if cpus.is_empty() {
            cpus = parse_cpu_list(&read(Path::new("/sys/devices/system/cpu/online")));
        }
        mems = read(&c.join("cpuset.mems.effective"));
    }
    Some(Parent { version: Version::V2, controllers: cs.to_vec(), dir: c.to_path_buf(), enable, cpus, mems })
}

fn first_of(dir: &Path, names: &[&str]) -> String {
    names.iter().map(|n| read(&dir.join(n))).find(|t| !t.is_empty()).unwrap_or_default()
}

fn write(path: &Path, text: &str) -> io::Result<()> {
    std::fs::write(path, text).map_err(|e| io::Error::new(e.kind(), format!("writing {text:?} to {}: {e}", path.display())))
}

fn mkdir(path: &Path) -> io::Result<()> {
    std::fs::create_dir(path).map_err(|e| io::Error::new(e.kind(), format!("creating cgroup {}: {e}", path.display())))
}

impl Parent {
    fn has(&self, controller: &str) -> bool {
        self.controllers.contains(&controller)
    }

    /// "+cpuset +memory": what `cgroup.subtree_control` files get (v2).
    fn switch_on(&self) -> String {
        self.controllers.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(" ")
    }

    /// Makes the cluster cgroup `name` and one cgroup per node with its
    /// CPUs and memory limit, as far as this parent's controllers go.
    /// Returns the cluster cgroup and the node cgroups, in order. On failure
    /// nothing is left behind.
    pub fn create(&self, name: &str, nodes: &[NodeLimits]) -> io::Result<(PathBuf, Vec<PathBuf>)> {
        let top = self.dir.join(name);
        let made = self.create_in(&top, nodes);
        if made.is_err() && top.exists() {
            let _ = remove(&top);
        }
        made.map(|dirs| (top, dirs))
    }

    fn create_in(&self, top: &Path, nodes: &[NodeLimits]) -> io::Result<Vec<PathBuf>> {
        for f in &self.enable {
            write(f, &self.switch_on())?;
        }
        mkdir(top)?;
        match self.version {
            Version::V1 => {
                if self.has(CPUSET) {
                    write(&top.join("cpuset.cpus"), &format_cpu_list(&self.cpus))?;
                    write(&top.join("cpuset.mems"), &self.mems)?;
                }
            }
            Version::V2 => write(&top.join("cgroup.subtree_control"), &self.switch_on())?,
        }
        let mut dirs = Vec::new();
        for node in nodes {
            let d = top.join(&node.name);
            mkdir(&d)?;
            dirs.push(d.clone());
            if self.has(CPUSET) {
                match (&node.cpus, self.version) {
                    (Some(cpus), _) => write(&d.join("cpuset.cpus"), &format_cpu_list(cpus))?,
                    // v1 cpusets start empty: a node without its own gets all.
                    (None, Version::V1) => write(&d.join("cpuset.cpus"), &format_cpu_list(&self.cpus))?,
                    (None, Version::V2) => {}
                }
                if self.version == Version::V1 {
                    write(&d.join("cpuset.mems"), &self.mems)?;
                }
            }
            if let (true, Some(bytes)) = (self.has(MEMORY), node.memory) {
                limit_memory(&d, self.version, bytes)?;
            }
        }
        Ok(dirs)
    }
}

/// Limits cgroup `d` to `bytes` of memory, swap included, with the OOM
/// killer on.
fn limit_memory(d: &Path, version: Version, bytes: u64) -> io::Result<()> {
    match version {
        Version::V1 => {
            write(&d.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // Only with swap accounting; memory + swap, so no swapping past the limit.
            let memsw = d.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &bytes.to_string())?;
            }
            // A v1 memory cgroup inherits oom_kill_disable from its parent.
            let oom = d.join("memory.oom_control");
            if read(&oom).lines().any(|l| l.trim() == "oom_kill_disable 1") {
                write(&oom, "0")?;
            }
        }
        Version::V2 => {
            write(&d.join("memory.max"), &bytes.to_string())?;
            let swap = d.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
        }
    }
    Ok(())
}

/// The cgroups made for a cluster under one [`Parent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    pub controllers: Vec<&'static str>,
    /// The cluster cgroup.
    pub top: PathBuf,
    /// The nodes' cgroups, in the order of the nodes.
    pub nodes: Vec<PathBuf>,
}

/// Makes the cluster cgroup `name` with its node cgroups under every parent.
/// On failure nothing is left behind.
pub fn create_all(parents: &[Parent], name: &str, nodes: &[NodeLimits]) -> io::Result<Vec<Tree>> {
    let mut made: Vec<Tree> = Vec::new();
    for p in parents {
        match p.create(name, nodes) {
            Ok((top, dirs)) => made.push(Tree { controllers: p.controllers.clone(), top, nodes: dirs }),
            Err(e) => {
                for t in &made {
                    let _ = remove(&t.top);
                }
                return Err(e);
            }
        }
    }
    Ok(made)
}

/// Moves process `pid` into cgroup `dir`.
pub fn add_process(dir: &Path, pid: i32) -> io::Result<()> {
    write(&dir.join("cgroup.procs"), &pid.to_string())
}

/// Makes the process `cmd` starts join the cgroups `dirs` just before it
/// execs its program (it writes "0", itself, to each `cgroup.procs`;
/// the files are opened here, so a cgroup that cannot be joined is an
/// error now). Hooks run in the order they were added: added after
/// [`herd_kernel::ns::enter`], which forks once more for a pid namespace,
/// only the program joins, not the process that waits for it.
pub fn join_on_exec(cmd: &mut std::process::Command, dirs: &[&Path]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut procs = Vec::new();
    for d in dirs {
        let p = d.join("cgroup.procs");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {} to join the node's cgroup: {e}", p.display())))?;
        procs.push(std::os::fd::OwnedFd::from(f));
    }
    if procs.is_empty() {
        return Ok(());
    }
    // SAFETY: the hook runs in the forked child before exec and makes only
    // write(2), which is async-signal-safe, on fds the closure owns.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &procs {
                if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// Removes the cluster cgroup `top` and the node cgroups in it, waiting up
/// to 3 s for their processes to be gone.
pub fn remove(top: &Path) -> io::Result<()> {
    if !top.exists() {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let rmdir = |d: &Path| -> io::Result<()> {
        loop {
            match std::fs::remove_dir(d) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("removing cgroup {}: {e}", d.display()))),
            }
        }
    };
    // Every node cgroup and then the top are tried, whatever fails before them (each
    // hierarchy's tree, e.g. v1 memory, is removed by its own call); the first error is
    // returned.
    let mut first: io::Result<()> = Ok(());
    let mut keep = |r: io::Result<()>| {
        if first.is_ok() {
            first = r;
        }
    };
    match std::fs::read_dir(top) {
        Ok(entries) => {
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    keep(rmdir(&entry.path()));
                }
            }
        }
        Err(e) => keep(Err(io::Error::new(e.kind(), format!("listing cgroup {}: {e}", top.display())))),
    }
    keep(rmdir(top));
    first
}

/// The CPUs of node k (0-based): `per_node` CPUs round-robin over `cpus`.
pub fn assign_cpus(cpus: &[u32], node: u32, per_node: u32) -> Vec<u32> {
    if cpus.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<u32> =
        (0..per_node).map(|i| cpus[((node as usize) * (per_node as usize) + i as usize) % cpus.len()]).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Parses a kernel CPU list ("0-3,8,10-11").
pub fn parse_cpu_list(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<u32>().ok()),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Writes a CPU list the way the kernel does ("0-3,8").
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { sorted[i].to_string() } else { format!("{}-{}", sorted[i], sorted[j]) });
        i = j + 1;
    }
    parts.join(",")
}

/// Parses a memory size: bytes, or a number with K, M, G or T (powers of
/// 1024; "Ki", "KiB" and "KB" mean the same): "512M", "2G", "1.5G".
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let unit = unit.trim();
    let upper = unit.to_ascii_uppercase();
    let u = upper.strip_suffix('B').unwrap_or(&upper);
    let shift = match u.strip_suffix('I').unwrap_or(u) {
        "" if upper.is_empty() || upper == "B" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{text:?}: not a size (bytes, or a number with K, M, G or T, as in 512M or 2G)")),
    };
    let n: f64 = number.parse().map_err(|_| format!("{text:?}: not a size (as in 512M or 2G)"))?;
    let bytes = n * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?}: too large"));
    }
    Ok(bytes as u64)
}

/// A size the way [`parse_size`] reads it: "256M", "1536M", "2G", "1000".
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.trailing_zeros() >= shift {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(name: &str, cpus: Option<Vec<u32>>, memory: Option<u64>) -> NodeLimits {
        NodeLimits { name: name.into(), cpus, memory }
    }

    #[test]
    fn remove_tries_every_node_cgroup() {
        // Plain directories stand in for cgroups: one that cannot be removed (not
        // empty) does not keep the others.
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("herd-1");
        for n in ["n1", "n2", "n3"] {
            std::fs::create_dir_all(top.join(n)).unwrap();
        }
        std::fs::write(top.join("n2/stuck"), "").unwrap();
        let e = remove(&top).unwrap_err();
        assert!(e.to_string().contains("n2"), "{e}");
        assert!(!top.join("n1").exists() && !top.join("n3").exists());
        std::fs::remove_file(top.join("n2/stuck")).unwrap();
        remove(&top).unwrap();
        assert!(!top.exists());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("256mb"), Ok(256 << 20));
        assert_eq!(parse_size("1.5G"), Ok(1536 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        for bad in ["", "M", "12X", "1GBB", "-1G", "iB", "1e9"] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(format_size(256 << 20), "256M");
        assert_eq!(format_size(1536 << 20), "1536M");
        assert_eq!(format_size(2 << 30), "2G");
        assert_eq!(format_size(1000), "1000");
    }

    /// cgroup v1: cpuset and memory each in their own hierarchy, each
    /// cluster cgroup in our own cgroup of that hierarchy, cpuset first.
    #[test]
    fn v1_memory_gets_limits_in_its_own_hierarchy() {
        let t = tempfile::tempdir().unwrap();
        let (cpuset, memory) = (t.path().join("cpuset"), t.path().join("memory"));
        let own_mem = memory.join("jobs/42");
        std::fs::create_dir_all(&own_mem).unwrap();
        std::fs::create_dir_all(&cpuset).unwrap();
        std::fs::write(cpuset.join("cgroup.procs"), "").unwrap();
        std::fs::write(cpuset.join("cpuset.effective_cpus"), "0-1").unwrap();
        std::fs::write(cpuset.join("cpuset.effective_mems"), "0").unwrap();
        std::fs::write(own_mem.join("cgroup.procs"), "7\n").unwrap();
        std::fs::write(own_mem.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        let mountinfo = format!(
            "34 31 0:31 / {} rw - cgroup cgroup rw,cpuset\n35 31 0:32 / {} rw - cgroup cgroup rw,memory\n",
            cpuset.display(),
            memory.display()
        );
        let own = "4:memory:/jobs/42\n3:cpuset:/\n0::/\n";
        let parents = find_parents_in(&mountinfo, own, 0, &[MEMORY, CPUSET]).unwrap();
        assert_eq!(parents.len(), 2);
        assert_eq!((parents[0].controllers.as_slice(), parents[0].dir.as_path()), (&[CPUSET][..], cpuset.as_path()));
        assert_eq!((parents[1].controllers.as_slice(), parents[1].dir.as_path()), (&[MEMORY][..], own_mem.as_path()));

        let trees = create_all(
            &parents,
            "herd-t",
            &[limits("n1", Some(vec![0]), Some(256 << 20)), limits("n2", Some(vec![1]), Some(256 << 20))],
        )
        .unwrap();
        assert_eq!(trees.len(), 2);
        assert_eq!(trees[1].top, own_mem.join("herd-t"));
        assert_eq!(read(&trees[0].nodes[1].join("cpuset.cpus")), "1");
        assert_eq!(read(&trees[0].nodes[1].join("cpuset.mems")), "0");
        assert_eq!(read(&trees[1].nodes[0].join("memory.limit_in_bytes")), (256u64 << 20).to_string());
        assert!(!trees[1].nodes[0].join("cpuset.cpus").exists(), "cpuset files in the memory hierarchy");
        assert!(!trees[0].nodes[0].join("memory.limit_in_bytes").exists(), "memory files in the cpuset hierarchy");

        // Where the kernel has swap accounting and the parent switched the OOM killer off.
        let d = t.path().join("kernel-like");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("memory.memsw.limit_in_bytes"), "").unwrap();
        std::fs::write(d.join("memory.oom_control"), "oom_kill_disable 1\nunder_oom 0\n").unwrap();
        limit_memory(&d, Version::V1, 1 << 30).unwrap();
        assert_eq!(read(&d.join("memory.memsw.limit_in_bytes")), (1u64 << 30).to_string());
        assert_eq!(read(&d.join("memory.oom_control")), "0");
    }

    #[test]
    fn v1_memory_cgroup_not_ours_to_write_says_so() {
        let t = tempfile::tempdir().unwrap();
        let mountinfo = format!("35 31 0:32 / {} rw - cgroup cgroup rw,memory\n", t.path().join("absent").display());
        let err = find_parents_in(&mountinfo, "4:memory:/\n", 1000, &[CPUSET, MEMORY]).unwrap_err();
        // No cpuset at all: that is what is reported first.
        assert_eq!(err.controller, CPUSET);
        let err = find_parents_in(&mountinfo, "4:memory:/\n", 1000, &[MEMORY]).unwrap_err();
        assert_eq!(err.controller, MEMORY);
        assert!(err.why.contains("memory cgroup") && err.why.contains("not writable by uid 1000"), "{err}");
    }

    #[test]
    fn v2_cpuset_and_memory_share_one_tree() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let slice = root.join("lab.slice");
        std::fs::create_dir_all(&slice).unwrap();
        for (dir, controllers, subtree, procs) in [(root, "cpuset cpu memory", "memory", "1\n"), (&slice, "memory", "", "")] {
            std::fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
            std::fs::write(dir.join("cgroup.subtree_control"), subtree).unwrap();
            std::fs::write(dir.join("cgroup.procs"), procs).unwrap();
        }
        let mountinfo = format!("41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n", root.display());
        let parents = find_parents_in(&mountinfo, "0::/lab.slice\n", 0, &[CPUSET, MEMORY]).unwrap();
        assert_eq!(parents.len(), 1);
        let p = &parents[0];
        assert_eq!((p.version, p.dir.as_path(), p.controllers.as_slice()), (Version::V2, slice.as_path(), &[CPUSET, MEMORY][..]));
        assert_eq!(p.enable, vec![root.join("cgroup.subtree_control"), slice.join("cgroup.subtree_control")]);
        let (top, nodes) = p.create("herd-t", &[limits("n1", Some(vec![0]), Some(512 << 20))]).unwrap();
        assert_eq!(read(&slice.join("cgroup.subtree_control")), "+cpuset +memory");
        assert_eq!(read(&top.join("cgroup.subtree_control")), "+cpuset +memory");
        assert_eq!(read(&nodes[0].join("memory.max")), (512u64 << 20).to_string());
        assert_eq!(read(&nodes[0].join("cpuset.cpus")), "0");
        // memory.swap.max is only written where the kernel has it.
        assert!(!nodes[0].join("memory.swap.max").exists());

        // Only memory: the same place, only +memory.
        let parents = find_parents_in(&mountinfo, "0::/lab.slice\n", 0, &[MEMORY]).unwrap();
        assert_eq!(parents[0].controllers, vec![MEMORY]);
        assert!(parents[0].cpus.is_empty());
    }

    #[test]
    fn v2_without_the_memory_controller_blames_memory() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cgroup.controllers"), "cpuset cpu").unwrap();
        let mountinfo = format!("41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n", t.path().display());
        let err = find_parents_in(&mountinfo, "0::/\n", 0, &[CPUSET, MEMORY]).unwrap_err();
        assert_eq!(err.controller, MEMORY);
        assert!(err.why.starts_with("no memory controller"), "{err}");
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(format_cpu_list(&[11, 0, 1, 2, 3, 8, 10]), "0-3,8,10-11");
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
    }

    #[test]
    fn cpus_go_round_robin_and_nodes_overlap_when_there_are_few() {
        let two = [0, 1];
        assert_eq!(assign_cpus(&two, 0, 1), vec![0]);
        assert_eq!(assign_cpus(&two, 1, 1), vec![1]);
        assert_eq!(assign_cpus(&two, 2, 1), vec![0]);
        assert_eq!(assign_cpus(&two, 1, 2), vec![0, 1]);
        let four = [0, 1, 2, 3];
        assert_eq!(assign_cpus(&four, 1, 3), vec![0, 1, 3]);
    }

    /// A fake hierarchy in a temporary directory (as root, every file in it
    /// is writable, so this checks the choice of place and the files
    /// written, not permissions).
    #[test]
    fn v1_parent_is_our_own_cpuset_cgroup() {
        let t = tempfile::tempdir().unwrap();
        let own = t.path().join("docker/abc");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("cgroup.procs"), "1\n").unwrap();
        std::fs::write(own.join("cpuset.effective_cpus"), "0-3\n").unwrap();
        std::fs::write(own.join("cpuset.effective_mems"), "0\n").unwrap();
        let mountinfo = format!(
            "34 31 0:31 / {} rw - cgroup cgroup rw,cpuset\n41 31 0:38 / /x rw - cgroup2 cgroup2 rw\n",
            t.path().display()
        );
        let parent = find_parents_in(&mountinfo, "3:cpuset:/docker/abc\n0::/\n", 0, &[CPUSET]).unwrap().remove(0);
        assert_eq!((parent.version, parent.dir.as_path()), (Version::V1, own.as_path()));
        assert_eq!((parent.cpus, parent.mems.as_str()), (vec![0, 1, 2, 3], "0"));
    }

    #[test]
    fn v2_parent_skips_cgroups_with_processes_and_enables_cpuset_from_the_top() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let slice = root.join("user.slice");
        let scope = slice.join("session-1.scope");
        std::fs::create_dir_all(&scope).unwrap();
        for (dir, controllers, subtree, procs) in
            [(root, "cpuset cpu memory", "memory", "1\n"), (&slice, "memory", "", ""), (&scope, "", "", "4242\n")]
        {
            std::fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
            std::fs::write(dir.join("cgroup.subtree_control"), subtree).unwrap();
            std::fs::write(dir.join("cgroup.procs"), procs).unwrap();
        }
        std::fs::write(slice.join("cpuset.cpus.effective"), "0-1").unwrap();
        let mountinfo = format!("41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n", root.display());
        let parent =
            find_parents_in(&mountinfo, "0::/user.slice/session-1.scope\n", 0, &[CPUSET]).unwrap().remove(0);
        assert_eq!((parent.version, parent.dir.as_path()), (Version::V2, slice.as_path()));
        assert_eq!(parent.enable, vec![root.join("cgroup.subtree_control"), slice.join("cgroup.subtree_control")]);
        assert_eq!(parent.cpus, vec![0, 1]);

        let (top, nodes) = parent.create("herd-test", &[limits("n1", Some(vec![0]), None), limits("n2", Some(vec![1]), None)]).unwrap();
        assert_eq!(read(&root.join("cgroup.subtree_control")), "+cpuset");
        assert_eq!(read(&top.join("cgroup.subtree_control")), "+cpuset");
        assert_eq!(read(&nodes[1].join("cpuset.cpus")), "1");
    }

    #[test]
    fn no_cpuset_anywhere_says_so() {
        let err = find_parents_in("22 27 0:21 / /proc rw - proc proc rw\n", "0::/\n", 0, &[CPUSET]).unwrap_err();
        assert!(err.why.starts_with("no cpuset controller"), "{err}");
        assert_eq!(err.controller, CPUSET);
    }
}
