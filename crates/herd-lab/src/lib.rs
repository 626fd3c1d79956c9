//! A local herd cluster on one machine: `herd cluster up --nodes N`.
//!
//! Each node is a small world of its own on the shared kernel, so that a
//! test that passes here means something across real machines:
//!
//! - its own **network namespace** with `eth0` = 10.47.0.K/24 on a private
//!   bridge (`herd0`, in the supervisor's network namespace) and its own
//!   127.0.0.1, no default route;
//! - its own **pid namespace** (node-init is pid 1, herdd a child of it),
//!   **mount namespace** (fresh /proc, private /tmp and /dev/shm), **UTS**
//!   (hostname = node name) and **IPC** namespaces;
//! - without root, everything sits in one **user namespace** where uid 0 is
//!   the calling user;
//! - optionally its own **cpuset** (`--cpus-per-node K`): CPUs are handed out
//!   round-robin over the CPUs available, so with more nodes than CPUs the
//!   nodes share CPUs (a 2-CPU machine with 3 nodes of 1 CPU: n1 and n3 both
//!   get CPU 0);
//! - optionally its own **memory cgroup** (`--mem-per-node SIZE`): a limit,
//!   swap included, past which the kernel's OOM killer kills a process of
//!   that node only.
//!
//! `herd cluster exec` puts its command in the node's namespaces and
//! cgroups, like the node's own processes.
//!
//! ```text
//!  herd cluster up ──spawn, setsid──► supervisor (user ns if not root; net ns = hub, bridge herd0)
//!                                       ├─ clone(NEWNET|NEWPID|NEWNS|NEWUTS|NEWIPC) ► node-init n1 (pid 1) ─► herdd
//!                                       ├─ ...                                       ► node-init n2 (pid 1) ─► herdd
//!                                       └─ veth nK ◄──► eth0 of each node
//! ```
//!
//! The pieces: [`cluster`] (host side: up, status, stop/start, exec, down,
//! [`LocalCluster`]), [`supervisor`], [`node_init`], [`net`], [`cgroup`],
//! [`state`] (the directory layout and `cluster.json`), [`cli`]. The unsafe
//! parts (raw clone into new namespaces, setns before exec, setsid) are in
//! `herd_kernel::ns`, but for [`cgroup::join_on_exec`] (a write(2) to
//! `cgroup.procs` before exec).

pub mod cgroup;
pub mod cli;
pub mod cluster;
pub mod error;
pub mod net;
pub mod node_init;
pub mod proc;
mod signals;
pub mod state;
pub mod supervisor;

pub use cluster::{
    default_dir, down, node_exec, node_socket, start_node, status, stop_node, ClusterStatus, Down, LocalCluster, NodeState,
    NodeStatus, UpOptions, DAEMON_ENV,
};
pub use error::{LabError, Result};
