//! Per-process facts only a system call gives (not /proc).

use crate::{KernelError, Result};

/// prlimit(pid, resource): (soft, hard).
pub fn rlimit(pid: i32, resource: u32) -> Result<(u64, u64)> {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit writes one rlimit into `old`; new_limit is NULL.
    let r = unsafe { libc::prlimit(pid, resource as _, std::ptr::null(), &mut old) };
    if r != 0 {
        return Err(KernelError::last("prlimit", pid));
    }
    Ok((old.rlim_cur, old.rlim_max))
}

/// get_robust_list(pid): (head, len).
pub fn robust_list(pid: i32) -> Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: the kernel writes a pointer-sized head and a size_t length
    // into our two locals.
    let r = unsafe { libc::syscall(libc::SYS_get_robust_list, pid, &mut head as *mut u64, &mut len as *mut usize) };
    if r != 0 {
        return Err(KernelError::last("get_robust_list", pid));
    }
    Ok((head, len as u64))
}

pub fn euid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

pub fn egid() -> u32 {
    // SAFETY: getegid has no arguments and cannot fail.
    unsafe { libc::getegid() }
}
