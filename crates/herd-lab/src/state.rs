//! The cluster directory and the state file the supervisor keeps in it.
//!
//! ```text
//! DIR/cluster.key        the cluster key (mode 0600), written by `up`
//! DIR/cluster.lock       flock-ed by the supervisor for as long as it lives
//! DIR/cluster.json       this module's ClusterState, written by the supervisor
//! DIR/supervisor.log     the supervisor's stdout and stderr
//! DIR/nK/herd.toml       herdd's configuration for node nK
//! DIR/nK/herdd.sock      herdd's control socket (herdd creates it)
//! DIR/nK/herdd.log       herdd's stdout and stderr, appended on every start
//! DIR/nK/init.log        node-init's log (pid 1 of the node)
//! DIR/nK/herdd.pid       herdd's pid *inside the node*, while it runs
//! DIR/nK/herdd.exited    how herdd last ended, once it has
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, LabError, Result};
use crate::proc::ProcRef;

pub const STATE_FILE: &str = "cluster.json";
pub const KEY_FILE: &str = "cluster.key";
pub const LOCK_FILE: &str = "cluster.lock";
pub const SUPERVISOR_LOG: &str = "supervisor.log";
/// Names of nodes to make again, for the supervisor (see `supervisor`).
pub const REVIVE_FILE: &str = "revive";

pub const NODE_CONFIG: &str = "herd.toml";
pub const NODE_SOCKET: &str = "herdd.sock";
pub const NODE_DAEMON_LOG: &str = "herdd.log";
pub const NODE_INIT_LOG: &str = "init.log";
pub const NODE_DAEMON_PID: &str = "herdd.pid";
pub const NODE_DAEMON_EXITED: &str = "herdd.exited";

/// The bridge in the supervisor's network namespace.
pub const BRIDGE: &str = "herd0";
/// Node K has address 10.47.0.K/24.
pub const SUBNET: [u8; 3] = [10, 47, 0];
pub const PREFIX_LEN: u8 = 24;

pub fn node_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

pub fn node_name(k: u32) -> String {
    format!("n{k}")
}

pub fn node_address(k: u32) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], k as u8)
}

/// What `DIR/cluster.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterState {
    pub dir: PathBuf,
    pub supervisor: ProcRef,
    /// Whether the supervisor made a user namespace (it was not root).
    pub user_namespace: bool,
    /// The cpuset cgroup holding the nodes' cpusets, with --cpus-per-node.
    pub cgroup: Option<PathBuf>,
    /// The memory cgroup holding the nodes' memory cgroups, with
    /// --mem-per-node (with cgroup v2 and both options, the same directory
    /// as `cgroup`). Both are removed when the cluster goes down.
    #[serde(default)]
    pub memory_cgroup: Option<PathBuf>,
    pub nodes: Vec<NodeRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// node-init, pid 1 of the node, as the host sees it.
    pub init: ProcRef,
    pub dir: PathBuf,
    pub control_socket: PathBuf,
    /// The node's cpuset cgroup, with --cpus-per-node.
    pub cgroup: Option<PathBuf>,
    pub cpus: Option<Vec<u32>>,
    /// The node's memory cgroup, with --mem-per-node (may be `cgroup`).
    #[serde(default)]
    pub memory_cgroup: Option<PathBuf>,
    /// Its memory limit in bytes, with --mem-per-node.
    #[serde(default)]
    pub mem_limit: Option<u64>,
}

/// The distinct directories among `dirs`, in order.
fn distinct<'a>(dirs: impl IntoIterator<Item = &'a Option<PathBuf>>) -> Vec<&'a Path> {
    let mut out: Vec<&Path> = Vec::new();
    for d in dirs.into_iter().flatten() {
        if !out.contains(&d.as_path()) {
            out.push(d);
        }
    }
    out
}

impl NodeRecord {
    /// Every cgroup the node's processes belong in (cpuset, memory).
    pub fn cgroups(&self) -> Vec<&Path> {
        distinct([&self.cgroup, &self.memory_cgroup])
    }
}

impl ClusterState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// The state file of `dir`, or None when there is none.
    pub fn load(dir: &Path) -> Result<Option<ClusterState>> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context(|| format!("reading {}", path.display())),
        };
        serde_json::from_str(&text).map(Some).map_err(|source| LabError::State { path, source })
    }

    /// Writes the state file atomically (a reader sees the old or the new one).
    pub fn save(&self) -> Result<()> {
        let path = Self::path(&self.dir);
        let text = serde_json::to_string_pretty(self).expect("the state serialises");
        write_whole(&path, &(text + "\n")).context(|| format!("writing {}", path.display()))
    }

    /// Every cluster cgroup made (cpuset, memory), to be removed at the end.
    pub fn cgroups(&self) -> Vec<&Path> {
        distinct([&self.cgroup, &self.memory_cgroup])
    }

    pub fn node(&self, name: &str) -> Result<&NodeRecord> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| LabError::UnknownNode {
            dir: self.dir.clone(),
            node: name.to_string(),
            known: self.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// Whether some process holds the cluster lock of `dir` (a supervisor is
/// alive there).
pub fn lock_is_held(dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Escapes a string for a TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// herdd's configuration for one node.
pub fn node_config(dir: &Path, name: &str, shared: &[PathBuf], allow_root_guests: bool) -> String {
    let key = dir.join(KEY_FILE);
    let socket = node_dir(dir, name).join(NODE_SOCKET);
    let checkpoints = node_dir(dir, name).join("checkpoints");
    let dfsa = if shared.is_empty() {
        String::new()
    } else {
        let paths: Vec<String> = shared.iter().map(|p| toml_string(&p.to_string_lossy())).collect();
        format!("\n[dfsa]\npaths = [{}]\n", paths.join(", "))
    };
    let mut text = format!(
        "# written by herd cluster up\nname = {}\nkey_file = {}\ncontrol_socket = {}\nhttp = \"127.0.0.1:4780\"\ncheckpoint_dir = {}\n\
         # The nodes share this machine's CPUs: equally fast, whatever calibrations run side\n\
         # by side would measure (balancing weighs speed).\nspeed = 10000\n",
        toml_string(name),
        toml_string(&key.to_string_lossy()),
        toml_string(&socket.to_string_lossy()),
        toml_string(&checkpoints.to_string_lossy()),
    );
    if allow_root_guests {
        text.push_str("# herd cluster up --allow-root-guests: root's processes migrate too.\nallow_root_guests = true\n");
    }
    text.push_str(&dfsa);
    text
}

/// The last `lines` lines of a log file ("" if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Writes a small record file whole: to a temporary name beside it, then renamed, so that a
/// reader polling for it never sees it empty or half written.
pub fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_config_is_the_documented_text() {
        let text = node_config(Path::new("/run/herd/cluster"), "n2", &[], false);
        assert_eq!(
            text,
            "# written by herd cluster up\n\
             name = \"n2\"\n\
             key_file = \"/run/herd/cluster/cluster.key\"\n\
             control_socket = \"/run/herd/cluster/n2/herdd.sock\"\n\
             http = \"127.0.0.1:4780\"\n\
             checkpoint_dir = \"/run/herd/cluster/n2/checkpoints\"\n\
             # The nodes share this machine's CPUs: equally fast, whatever calibrations run side\n\
             # by side would measure (balancing weighs speed).\n\
             speed = 10000\n"
        );
        // Top-level keys come before the [dfsa] table.
        let text = node_config(Path::new("/c"), "n1", &[PathBuf::from("/srv/data")], true);
        assert!(text.ends_with("allow_root_guests = true\n\n[dfsa]\npaths = [\"/srv/data\"]\n"), "{text}");
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("x\ny"), r#""x\u000Ay""#);
    }

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let state = ClusterState {
            dir: dir.path().to_path_buf(),
            supervisor: ProcRef { pid: 10, start_time: 20 },
            user_namespace: true,
            cgroup: Some("/sys/fs/cgroup/cpuset/herd-x".into()),
            memory_cgroup: Some("/sys/fs/cgroup/memory/herd-x".into()),
            nodes: vec![NodeRecord {
                name: "n1".into(),
                address: node_address(1),
                prefix_len: PREFIX_LEN,
                init: ProcRef { pid: 11, start_time: 21 },
                dir: dir.path().join("n1"),
                control_socket: dir.path().join("n1/herdd.sock"),
                cgroup: Some("/sys/fs/cgroup/cpuset/herd-x/n1".into()),
                cpus: Some(vec![0]),
                memory_cgroup: Some("/sys/fs/cgroup/cpuset/herd-x/n1".into()),
                mem_limit: Some(256 << 20),
            }],
        };
        state.save().unwrap();
        let back = ClusterState::load(dir.path()).unwrap().unwrap();
        assert_eq!(back.nodes[0].address, Ipv4Addr::new(10, 47, 0, 1));
        assert_eq!(back.nodes[0].init, ProcRef { pid: 11, start_time: 21 });
        assert!(ClusterState::load(&dir.path().join("nothing")).unwrap().is_none());
        assert!(matches!(back.node("n9"), Err(LabError::UnknownNode { .. })));
        assert_eq!(back.cgroups().len(), 2);
        // cgroup v2 with both options: one directory, joined and removed once.
        assert_eq!(back.nodes[0].cgroups(), vec![Path::new("/sys/fs/cgroup/cpuset/herd-x/n1")]);
        assert_eq!(back.nodes[0].mem_limit, Some(256 << 20));
    }

    #[test]
    fn state_without_memory_fields_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"{{"dir":{d:?},"supervisor":{{"pid":1,"start_time":2}},"user_namespace":false,"cgroup":null,"nodes":[{{"name":"n1","address":"10.47.0.1","prefix_len":24,"init":{{"pid":3,"start_time":4}},"dir":{d:?},"control_socket":"/x","cgroup":null,"cpus":null}}]}}"#,
            d = dir.path()
        );
        std::fs::write(ClusterState::path(dir.path()), text).unwrap();
        let st = ClusterState::load(dir.path()).unwrap().unwrap();
        assert!(st.memory_cgroup.is_none() && st.nodes[0].mem_limit.is_none() && st.cgroups().is_empty());
    }
}

