//! The restorer child: a forked copy of the caller that prepares what is
//! easiest to prepare from inside (open files at their fd numbers, cwd,
//! umask, rlimits, personality), reports, and then blocks in read(2) until
//! its parent seizes it and replaces its whole address space by injection.
//!
//! The child runs only async-signal-safe system calls on data built before
//! the fork, so it is safe even if the parent had other threads.

use std::ffi::CString;

use crate::{KernelError, Result};

/// A file to open in the child at fd number `fd`.
pub struct FdPlan {
    pub fd: i32,
    pub path: CString,
    pub flags: i32,
    pub offset: u64,
    pub cloexec: bool,
}

pub struct ChildPlan {
    pub fds: Vec<FdPlan>,
    /// Of fds 0-2, those the image did not have open.
    pub close_std: Vec<i32>,
    pub cwd: CString,
    pub umask: u32,
    pub rlimits: Vec<(u32, u64, u64)>,
    pub personality: u32,
}

/// The child, blocked and waiting to be seized. Its two sync fds must be
/// closed in it (by injection) before it is released.
pub struct RestorerChild {
    pub pid: i32,
    pub child_fds: [i32; 2],
    hold_w: i32,
}

impl Drop for RestorerChild {
    fn drop(&mut self) {
        // SAFETY: hold_w is our own pipe end, closed once here.
        unsafe { libc::close(self.hold_w) };
    }
}

/// What failed in the child, by step.
const STEPS: [&str; 9] = [
    "ok", "moving sync fds", "opening a file", "placing an fd", "seeking", "setting FD_CLOEXEC", "chdir", "setrlimit", "personality",
];

fn pipe() -> Result<[i32; 2]> {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 writes two ints into `p`.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(KernelError::last("pipe2", 0));
    }
    Ok(p)
}

pub fn spawn(plan: &ChildPlan) -> Result<RestorerChild> {
    let ready = pipe()?;
    let hold = pipe()?;
    let high = plan.fds.iter().map(|f| f.fd).max().unwrap_or(2).max(2) + 3;
    // SAFETY: fork is called with no locks held by this thread; the child
    // runs only `child_main`, which makes async-signal-safe calls and never
    // returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(KernelError::last("fork", 0));
    }
    if pid == 0 {
        child_main(plan, ready[1], hold[0], high);
    }
    // SAFETY: closing our copies of the child's pipe ends.
    unsafe {
        libc::close(ready[1]);
        libc::close(hold[0]);
    }
    let mut report = [0u8; 12];
    let mut got = 0usize;
    while got < report.len() {
        // SAFETY: reads into the unread tail of `report`.
        let n = unsafe { libc::read(ready[0], report[got..].as_mut_ptr().cast(), report.len() - got) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    // SAFETY: our own pipe end, closed once.
    unsafe { libc::close(ready[0]) };
    let child = RestorerChild { pid, child_fds: [0, 0], hold_w: hold[1] };
    if got != report.len() {
        reap(pid);
        return Err(KernelError::Unexpected { pid, what: "restorer child died while preparing".into() });
    }
    let step = u32::from_le_bytes(report[0..4].try_into().expect("4")) as usize;
    let errno = i32::from_le_bytes(report[4..8].try_into().expect("4"));
    let index = u32::from_le_bytes(report[8..12].try_into().expect("4"));
    if step != 0 {
        reap(pid);
        let what = STEPS.get(step).copied().unwrap_or("preparing");
        let err = std::io::Error::from_raw_os_error(errno);
        let item = match (step, plan.fds.get(index as usize)) {
            (2..=5, Some(f)) => format!(" fd {} ({})", f.fd, f.path.to_string_lossy()),
            (7, _) => format!(" (resource {})", plan.rlimits.get(index as usize).map_or(0, |r| r.0)),
            (6, _) => format!(" ({})", plan.cwd.to_string_lossy()),
            _ => String::new(),
        };
        return Err(KernelError::Unexpected { pid, what: format!("restorer failed {what}{item}: {err}") });
    }
    let rs = i32::from_le_bytes(report[4..8].try_into().expect("4"));
    let hs = i32::from_le_bytes(report[8..12].try_into().expect("4"));
    let mut child = child;
    child.child_fds = [rs, hs];
    Ok(child)
}

fn reap(pid: i32) {
    let _ = crate::task::kill_and_reap(pid);
}

fn child_main(plan: &ChildPlan, ready_w: i32, hold_r: i32, high: i32) -> ! {
    // Reports go to `report_fd`: the ready pipe, wherever it has been moved.
    let mut report_fd = ready_w;
    let fail = |report_fd: i32, step: u32, index: usize| -> ! {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let mut rep = [0u8; 12];
        rep[0..4].copy_from_slice(&step.to_le_bytes());
        rep[4..8].copy_from_slice(&errno.to_le_bytes());
        rep[8..12].copy_from_slice(&(index as u32).to_le_bytes());
        // SAFETY: async-signal-safe calls on our own fd and stack buffer.
        unsafe {
            libc::write(report_fd, rep.as_ptr().cast(), rep.len());
            libc::_exit(127)
        }
    };
    // SAFETY: from here on only async-signal-safe system calls are made, on
    // fds and C strings prepared before the fork; no allocation happens.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        let rs = libc::fcntl(ready_w, libc::F_DUPFD, high);
        let hs = libc::fcntl(hold_r, libc::F_DUPFD, high);
        if rs < 0 || hs < 0 {
            fail(report_fd, 1, 0);
        }
        report_fd = rs;
        let (lo, hi) = (rs.min(hs), rs.max(hs));
        libc::syscall(libc::SYS_close_range, 3u32, (lo - 1) as u32, 0u32);
        if hi > lo + 1 {
            libc::syscall(libc::SYS_close_range, (lo + 1) as u32, (hi - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (hi + 1) as u32, u32::MAX, 0u32);
        for (i, f) in plan.fds.iter().enumerate() {
            let flags = f.flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_NOCTTY);
            let t = libc::open(f.path.as_ptr(), flags | libc::O_NOCTTY);
            if t < 0 {
                fail(report_fd, 2, i);
            }
            if t != f.fd {
                if libc::dup2(t, f.fd) < 0 {
                    fail(report_fd, 3, i);
                }
                libc::close(t);
            }
            if f.offset != 0 && libc::lseek(f.fd, f.offset as i64, libc::SEEK_SET) < 0 {
                fail(report_fd, 4, i);
            }
            if f.cloexec && libc::fcntl(f.fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
                fail(report_fd, 5, i);
            }
        }
        for fd in &plan.close_std {
            libc::close(*fd);
        }
        if libc::chdir(plan.cwd.as_ptr()) != 0 {
            fail(report_fd, 6, 0);
        }
        libc::umask(plan.umask);
        for (i, (res, cur, max)) in plan.rlimits.iter().enumerate() {
            let lim = libc::rlimit { rlim_cur: *cur, rlim_max: *max };
            if libc::setrlimit(*res as _, &lim) != 0 {
                fail(report_fd, 7, i);
            }
        }
        if libc::personality(plan.personality as libc::c_ulong) < 0 {
            fail(report_fd, 8, 0);
        }
        let mut rep = [0u8; 12];
        rep[4..8].copy_from_slice(&rs.to_le_bytes());
        rep[8..12].copy_from_slice(&hs.to_le_bytes());
        libc::write(rs, rep.as_ptr().cast(), rep.len());
        let mut b = 0u8;
        // The parent seizes us here, inside read(2).
        libc::read(hs, (&mut b as *mut u8).cast(), 1);
        libc::_exit(1)
    }
}
