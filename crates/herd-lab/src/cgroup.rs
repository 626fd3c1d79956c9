//! cpusets for the nodes (`--cpus-per-node`): one cgroup for the cluster,
//! `herd-<random>`, holding one cgroup per node with the CPUs it may use.
//!
//! - cgroup v1 (a `cpuset` hierarchy is mounted): the cluster cgroup is made
//!   in this process's own cpuset cgroup; it and each node get `cpuset.cpus`
//!   and `cpuset.mems` (v1 requires both), the parent's memory nodes.
//! - cgroup v2: the cluster cgroup is made in the nearest cgroup, from ours
//!   upwards, that we may write to and that can have children with the
//!   cpuset controller (the root, or one without processes of its own: the
//!   "no internal processes" rule). As root, `+cpuset` is switched on in
//!   `cgroup.subtree_control` from the hierarchy's root down to it; as
//!   another user it must already be delegated. The switches are left on
//!   when the cluster goes down (they are harmless and may be someone
//!   else's).
//!
//! Which CPUs a node gets is [`assign_cpus`]: round-robin over the CPUs the
//! parent cgroup has, so with more nodes than CPUs nodes share CPUs.

use std::io;
use std::path::{Path, PathBuf};

use herd_kernel::host::{parse_mountinfo as mounts, Mount};
use nix::unistd::{access, AccessFlags};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Where the cluster's cgroup can be made, and what it may use.
#[derive(Debug)]
pub struct CpusetParent {
    pub version: Version,
    pub dir: PathBuf,
    /// v2: `cgroup.subtree_control` files that need `+cpuset`, top-down.
    pub enable: Vec<PathBuf>,
    pub cpus: Vec<u32>,
    /// v1: the memory nodes the children get.
    pub mems: String,
}

/// Finds where this process may make cpuset cgroups, or says why it cannot.
pub fn find_parent() -> Result<CpusetParent, String> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    find_parent_in(&mountinfo, &own, herd_kernel::task::euid())
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

fn find_parent_in(mountinfo: &str, own: &str, euid: u32) -> Result<CpusetParent, String> {
    let mounts = mounts(mountinfo);
    let v1 = mounts.iter().find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "cpuset"));
    if let Some(m) = v1 {
        let path = own
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                controllers.split(',').any(|c| c == "cpuset").then_some(path)
            })
            .ok_or("/proc/self/cgroup names no cpuset cgroup although a cgroup v1 cpuset hierarchy is mounted")?;
        let dir = cgroup_dir(m, path);
        if !writable(&dir) || !writable(&dir.join("cgroup.procs")) {
            return Err(format!(
                "this process's cpuset cgroup {} (cgroup v1) is not writable by uid {euid}, and cgroup v1 cannot be delegated safely; \
                 run as root, or on a cgroup v2 system from a cgroup delegated to this user with the cpuset controller",
                dir.display()
            ));
        }
        let cpus = parse_cpu_list(&first_of(&dir, &["cpuset.effective_cpus", "cpuset.cpus"]));
        let mems = first_of(&dir, &["cpuset.effective_mems", "cpuset.mems"]);
        if cpus.is_empty() || mems.is_empty() {
            return Err(format!("{} has no CPUs or no memory nodes", dir.display()));
        }
        return Ok(CpusetParent { version: Version::V1, dir, enable: Vec::new(), cpus, mems });
    }
    let m = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .ok_or("no cpuset controller: neither a cgroup v1 cpuset hierarchy nor a cgroup v2 hierarchy is mounted")?;
    if !has_word(&read(&m.point.join("cgroup.controllers")), "cpuset") {
        return Err(format!(
            "no cpuset controller: no cgroup v1 cpuset hierarchy is mounted and the cgroup v2 hierarchy at {} does not offer cpuset",
            m.point.display()
        ));
    }
    let path = own.lines().find_map(|l| l.strip_prefix("0::")).ok_or("/proc/self/cgroup names no cgroup v2 path")?;
    let own_dir = cgroup_dir(m, path);
    let mut c = own_dir.clone();
    loop {
        if let Some(parent) = v2_candidate(m, &c, euid) {
            return Ok(parent);
        }
        if c == m.point || !c.pop() || !c.starts_with(&m.point) {
            break;
        }
    }
    Err(format!(
        "no cgroup v2 directory from {} up to {} is writable by uid {euid}, free of processes of its own and able to use the cpuset controller; \
         run as root, or run herd inside a cgroup delegated to this user with the cpuset controller (systemd: Delegate=cpuset)",
        own_dir.display(),
        m.point.display()
    ))
}

/// `c` as the parent of the cluster cgroup, if it can be.
fn v2_candidate(m: &Mount, c: &Path, euid: u32) -> Option<CpusetParent> {
    let is_root = c == m.point;
    if !writable(c) || !writable(&c.join("cgroup.procs")) {
        return None;
    }
    let subtree = read(&c.join("cgroup.subtree_control"));
    if !is_root && !has_word(&subtree, "cpuset") && !read(&c.join("cgroup.procs")).is_empty() {
        return None;
    }
    let mut enable = Vec::new();
    if !has_word(&read(&c.join("cgroup.controllers")), "cpuset") {
        // Only root may switch it on above a delegated cgroup.
        if euid != 0 {
            return None;
        }
        let mut above: Vec<PathBuf> =
            c.ancestors().skip(1).take_while(|a| a.starts_with(&m.point)).map(Path::to_path_buf).collect();
        above.reverse();
        for a in above {
            if !has_word(&read(&a.join("cgroup.subtree_control")), "cpuset") {
                enable.push(a.join("cgroup.subtree_control"));
            }
        }
    }
    if !has_word(&subtree, "cpuset") {
        if !writable(&c.join("cgroup.subtree_control")) {
            return None;
        }
        enable.push(c.join("cgroup.subtree_control"));
    }
    let mut cpus = parse_cpu_list(&read(&c.join("cpuset.cpus.effective")));
    if cpus.is_empty() {
        cpus = parse_cpu_list(&read(Path::new("/sys/devices/system/cpu/online")));
    }
    let mems = read(&c.join("cpuset.mems.effective"));
    Some(CpusetParent { version: Version::V2, dir: c.to_path_buf(), enable, cpus, mems })
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

impl CpusetParent {
    /// Makes the cluster cgroup `name` and one cgroup per node with its
    /// CPUs. Returns the cluster cgroup and the node cgroups, in order. On
    /// failure nothing is left behind.
    pub fn create(&self, name: &str, nodes: &[(String, Vec<u32>)]) -> io::Result<(PathBuf, Vec<PathBuf>)> {
        let top = self.dir.join(name);
        let made = self.create_in(&top, nodes);
        if made.is_err() && top.exists() {
            let _ = remove(&top);
        }
        made.map(|dirs| (top, dirs))
    }

    fn create_in(&self, top: &Path, nodes: &[(String, Vec<u32>)]) -> io::Result<Vec<PathBuf>> {
        for f in &self.enable {
            write(f, "+cpuset")?;
        }
        mkdir(top)?;
        match self.version {
            Version::V1 => {
                write(&top.join("cpuset.cpus"), &format_cpu_list(&self.cpus))?;
                write(&top.join("cpuset.mems"), &self.mems)?;
            }
            Version::V2 => write(&top.join("cgroup.subtree_control"), "+cpuset")?,
        }
        let mut dirs = Vec::new();
        for (node, cpus) in nodes {
            let d = top.join(node);
            mkdir(&d)?;
            write(&d.join("cpuset.cpus"), &format_cpu_list(cpus))?;
            if self.version == Version::V1 {
                write(&d.join("cpuset.mems"), &self.mems)?;
            }
            dirs.push(d);
        }
        Ok(dirs)
    }
}

/// Moves process `pid` into cgroup `dir`.
pub fn add_process(dir: &Path, pid: i32) -> io::Result<()> {
    write(&dir.join("cgroup.procs"), &pid.to_string())
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
    for entry in std::fs::read_dir(top)?.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            rmdir(&entry.path())?;
        }
    }
    rmdir(top)
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let parent = find_parent_in(&mountinfo, "3:cpuset:/docker/abc\n0::/\n", 0).unwrap();
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
        let parent = find_parent_in(&mountinfo, "0::/user.slice/session-1.scope\n", 0).unwrap();
        assert_eq!((parent.version, parent.dir.as_path()), (Version::V2, slice.as_path()));
        assert_eq!(parent.enable, vec![root.join("cgroup.subtree_control"), slice.join("cgroup.subtree_control")]);
        assert_eq!(parent.cpus, vec![0, 1]);

        let (top, nodes) = parent.create("herd-test", &[("n1".into(), vec![0]), ("n2".into(), vec![1])]).unwrap();
        assert_eq!(read(&root.join("cgroup.subtree_control")), "+cpuset");
        assert_eq!(read(&top.join("cgroup.subtree_control")), "+cpuset");
        assert_eq!(read(&nodes[1].join("cpuset.cpus")), "1");
    }

    #[test]
    fn no_cpuset_anywhere_says_so() {
        let err = find_parent_in("22 27 0:21 / /proc rw - proc proc rw\n", "0::/\n", 0).unwrap_err();
        assert!(err.starts_with("no cpuset controller"), "{err}");
    }
}
