//! What can go wrong with a local cluster, as the library reports it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("a cluster is already running at {dir} (supervisor pid {pid}); take it down with `herd cluster down --dir {dir}`", dir = .dir.display())]
    AlreadyRunning { dir: PathBuf, pid: i32 },
    #[error("no cluster at {}", .dir.display())]
    NoCluster { dir: PathBuf },
    #[error("no node {node} in the cluster at {} (its nodes: {known})", .dir.display())]
    UnknownNode { dir: PathBuf, node: String, known: String },
    #[error("node {node} is gone: its init process exited (see {})", .log.display())]
    NodeGone { node: String, log: PathBuf },
    #[error("cluster key: {0}")]
    Key(#[from] herd_wire::KeyError),
    #[error("herd cluster needs the `ip` command (Debian package iproute2)")]
    NoIpCommand,
    #[error("{what} not found at {}: {hint}", .path.display())]
    Missing { what: &'static str, path: PathBuf, hint: String },
    #[error("--cpus-per-node: {0}")]
    Cpuset(String),
    #[error("--mem-per-node: {0}")]
    Memory(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the cluster supervisor {how}{}", tail_text(.log, .tail))]
    Supervisor { how: String, log: PathBuf, tail: String },
    #[error("node {node}: {how}{}", tail_text(.log, .tail))]
    Node { node: String, how: String, log: PathBuf, tail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the cluster state {}: {source}", .path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn tail_text(log: &std::path::Path, tail: &str) -> String {
    if tail.trim().is_empty() {
        format!(" ({} is empty)", log.display())
    } else {
        format!("\n--- last lines of {} ---\n{}", log.display(), tail.trim_end())
    }
}

pub type Result<T> = std::result::Result<T, LabError>;

impl From<crate::cgroup::NoCgroup> for LabError {
    /// The error of the option that asked for the controller.
    fn from(e: crate::cgroup::NoCgroup) -> Self {
        if e.controller == crate::cgroup::MEMORY {
            LabError::Memory(e.why)
        } else {
            LabError::Cpuset(e.why)
        }
    }
}

/// Adds what was being done to an io::Error.
pub(crate) trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| LabError::Io { context: what(), source })
    }
}
