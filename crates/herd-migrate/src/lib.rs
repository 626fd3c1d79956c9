//! Live migration with a home deputy.
//!
//! - [`syscalls`]: the system call table (which calls run locally on the remote
//!   node, which are answered with the home identity, which are forwarded to the
//!   deputy, which make the process come home), the seccomp filter built from it,
//!   and the marshalling of forwarded calls.
//! - [`deputy`]: the home side: the original process kept as the deputy, its thread.
//! - [`guest`]: the remote side: a migrated process running on this node, its thread.
//! - [`fork`]: a guest's fork made on its node (the child's deputy is forked at home).
//! - [`proto`]: what home and the remote node say about a process.
//! - [`pipe`]: image bytes between the capture/restore threads and the node stream.
//! - [`postcopy`]: memory that follows a process already running on its target.
//! - [`journal`]: its effects at home since its last checkpoint, for exactly-once replay.
//! - [`native`]: forwarded calls herdd answers itself on the deputy's open files.
//! - [`failpoint`]: faults injected at the steps of a move, for the tests.

pub mod ahead;
pub mod syscalls;
pub mod deputy;
pub mod direct;
pub mod exec;
pub mod failpoint;
pub mod fork;
pub mod guest;
pub mod journal;
pub mod native;
pub mod pipe;
pub mod postcopy;
pub mod proto;
pub mod wake;

/// Another process's memory, for the call marshalling (process_vm_readv/writev).
pub struct ProcMemory {
    pub pid: i32,
}

impl syscalls::MemRead for ProcMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        herd_kernel::mem::read_ranges(self.pid, &[(addr, buf.len() as u64)], buf).map_err(kernel_io)
    }
}

impl syscalls::MemWrite for ProcMemory {
    fn write(&self, addr: u64, data: &[u8]) -> std::io::Result<()> {
        herd_kernel::mem::write(self.pid, addr, data).map_err(kernel_io)
    }
}

fn kernel_io(e: herd_kernel::KernelError) -> std::io::Error {
    match e {
        herd_kernel::KernelError::Sys { source, .. } => source,
        e => std::io::Error::other(e.to_string()),
    }
}
