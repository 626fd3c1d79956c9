//! The kernel-facing mechanism of herd. Every raw system call, every
//! `repr(C)` kernel structure and every `unsafe` block of the project is in
//! this crate; the crates above it (checkpoint, restore, migration) are
//! written in safe Rust against the types here.
//!
//! - [`ptrace`]: a seized, stopped tracee ([`ptrace::Tracee`]) and the requests
//!   that are only valid while it is stopped.
//! - [`inject`]: running system calls inside a stopped tracee.
//! - [`maskwait`]: ending a wait that swaps in a signal mask, for a process
//!   whose wait runs elsewhere.
//! - [`mem`]: reading and writing another process's memory, and its pagemap.
//! - [`restorer`]: the child process a restore is built in.
//! - [`abi`]: kernel constants and structure layouts herd depends on.
//! - [`host`]: facts about this machine (vDSO, xsave features).
//! - [`uffd`]: userfaultfd of another process, for post-copy migration.
//! - [`pty`]: pseudo-terminals read and made again with their settings.
//! - [`tcprepair`]: established TCP connections dumped and made again (TCP_REPAIR).
//! - [`fileio`]: file calls herdd makes itself on a duplicate of a process's descriptor.

pub mod abi;
pub mod fileio;
pub mod host;
pub mod inject;
pub mod maskwait;
pub mod mem;
pub mod ns;
pub mod pidfd;
pub mod ptrace;
pub mod pty;
pub mod restorer;
pub mod seccomp;
pub mod sockdiag;
pub mod task;
pub mod tcprepair;
pub mod uffd;

/// An error from a system call herd made on a process's behalf.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("process {pid} has exited")]
    Died { pid: i32 },
    #[error("{op} on process {pid} failed")]
    Sys {
        op: &'static str,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid}: {what}")]
    Unexpected { pid: i32, what: String },
}

impl KernelError {
    /// Builds the error for `op` from `errno`, turning ESRCH into `Died`.
    pub fn last(op: &'static str, pid: i32) -> Self {
        Self::from_io(op, pid, std::io::Error::last_os_error())
    }

    pub fn from_io(op: &'static str, pid: i32, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ESRCH) {
            KernelError::Died { pid }
        } else {
            KernelError::Sys { op, pid, source }
        }
    }

    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Sys { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, KernelError>;
