//! The restorer child: a forked copy of the caller that prepares what is
//! easiest to prepare from inside (open files at their fd numbers, cwd,
//! umask, rlimits, personality), reports, and then blocks in read(2) until
//! its parent seizes it and replaces its whole address space by injection.
//!
//! The child runs only async-signal-safe system calls on data built before
//! the fork, so it is safe even if the parent had other threads.
//!
//! Its pid is chosen by [`PidChoice`]: any (a plain fork), the image's own
//! pid in the caller's pid namespace (clone3 `set_tid`), or the image's pid
//! in a new pid namespace, where a small init (pid 1, a second forked copy of
//! the caller) makes the child and reports its wait status through a pipe.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::abi::CloneArgs;
use crate::{KernelError, Result};

/// Which pid the restored process gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PidChoice {
    /// Whatever the kernel gives (the process may notice its pid changed).
    Any,
    /// This pid, in the caller's pid namespace (needs CAP_CHECKPOINT_RESTORE
    /// or CAP_SYS_ADMIN, and the pid free).
    Same(i32),
    /// This pid, in a new pid namespace made for it (needs CAP_SYS_ADMIN).
    NewNamespace(i32),
}

/// The init of a new pid namespace: its pid (in the caller's namespace) and
/// the pipe on which it writes the restored process's raw wait status.
pub struct NsInit {
    pub pid: i32,
    pub status: OwnedFd,
}

impl NsInit {
    /// Waits for the restored process to end (and with it the namespace and
    /// its init, which is reaped) and returns how it ended.
    pub fn wait(self) -> Result<crate::task::Exit> {
        use std::io::Read;
        let mut raw = [0u8; 4];
        let got = std::fs::File::from(self.status).read_exact(&mut raw);
        let init = crate::task::reap(self.pid)?;
        if got.is_err() {
            // The init ended before the process did (it was killed): so did the process.
            return Ok(match init {
                crate::task::Exit::Signal(s) => crate::task::Exit::Signal(s),
                crate::task::Exit::Code(_) => crate::task::Exit::Signal(libc::SIGKILL),
            });
        }
        let st = i32::from_ne_bytes(raw);
        Ok(if libc::WIFSIGNALED(st) { crate::task::Exit::Signal(libc::WTERMSIG(st)) } else { crate::task::Exit::Code(libc::WEXITSTATUS(st)) })
    }
}

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
    pub pid: PidChoice,
}

/// The child, blocked and waiting to be seized. Its two sync fds must be
/// closed in it (by injection) before it is released.
pub struct RestorerChild {
    /// Its pid in the caller's namespace.
    pub pid: i32,
    pub child_fds: [i32; 2],
    hold_w: i32,
    /// With [`PidChoice::NewNamespace`], the namespace's init (the child's parent).
    pub init: Option<NsInit>,
}

impl Drop for RestorerChild {
    fn drop(&mut self) {
        // SAFETY: hold_w is our own pipe end, closed once here.
        unsafe { libc::close(self.hold_w) };
    }
}

/// What failed in the child, by step.
const STEPS: [&str; 10] = [
    "ok", "moving sync fds", "opening a file", "placing an fd", "seeking", "setting FD_CLOEXEC", "chdir", "setrlimit", "personality",
    "making the process with its pid in the new pid namespace",
];

/// clone3 as a fork: the child returns 0 on a copy of the caller's stack.
/// `set_tid` (when not 0) is the pid it must have in its innermost namespace.
///
/// # Safety
/// As for fork: the child must make only async-signal-safe calls.
unsafe fn clone3_fork(flags: u64, set_tid: i32) -> libc::c_long {
    let tid = [set_tid];
    let args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        set_tid: if set_tid != 0 { tid.as_ptr() as u64 } else { 0 },
        set_tid_size: u64::from(set_tid != 0),
        ..Default::default()
    };
    // SAFETY: `args` and `tid` live across the call; without CLONE_VM the child
    // gets its own copy of this stack, as with fork.
    unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) }
}

/// Why a chosen pid could not be had, in words.
fn pid_error(pid: i32, errno: i32, ns: bool) -> KernelError {
    let what = match errno {
        libc::EEXIST => format!("pid {pid} is in use by another process"),
        libc::EPERM => format!(
            "choosing the pid ({pid}) needs root (CAP_CHECKPOINT_RESTORE{})",
            if ns { " and CAP_SYS_ADMIN for a new pid namespace" } else { "" }
        ),
        libc::EINVAL if ns && pid == 1 => "pid 1 is the new namespace's init; a process that was pid 1 cannot be restored with its pid".into(),
        e => format!("cannot make a process with pid {pid}: {}", std::io::Error::from_raw_os_error(e)),
    };
    KernelError::Unexpected { pid, what }
}

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
    let status = match plan.pid {
        PidChoice::NewNamespace(_) => Some(pipe()?),
        _ => None,
    };
    // SAFETY: fork / clone3 are called with no locks held by this thread; the
    // child runs only `child_main` or `ns_init`, which make async-signal-safe
    // calls and never return.
    let pid = unsafe {
        match plan.pid {
            PidChoice::Any => libc::fork() as libc::c_long,
            PidChoice::Same(p) => clone3_fork(0, p),
            PidChoice::NewNamespace(_) => clone3_fork(libc::CLONE_NEWPID as u64, 0),
        }
    };
    let close_pipes = |fds: &[i32]| {
        for fd in fds {
            // SAFETY: our own pipe ends, each closed once.
            unsafe { libc::close(*fd) };
        }
    };
    if pid < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        close_pipes(&[ready[0], ready[1], hold[0], hold[1]]);
        if let Some(s) = status {
            close_pipes(&s);
        }
        return Err(match plan.pid {
            PidChoice::Any => KernelError::from_io("fork", 0, std::io::Error::from_raw_os_error(errno)),
            PidChoice::Same(p) => pid_error(p, errno, false),
            PidChoice::NewNamespace(p) => pid_error(p, errno, true),
        });
    }
    let pid = pid as i32;
    if pid == 0 {
        match (plan.pid, status) {
            (PidChoice::NewNamespace(p), Some(s)) => ns_init(plan, p, ready[1], hold[0], high, s[1]),
            _ => child_main(plan, ready[1], hold[0], high),
        }
    }
    close_pipes(&[ready[1], hold[0]]);
    let init = status.map(|s| {
        close_pipes(&[s[1]]);
        // SAFETY: the read end is ours alone from here on.
        NsInit { pid, status: unsafe { OwnedFd::from_raw_fd(s[0]) } }
    });
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
    // In a new namespace the child is the init's; it has a pid of our own too.
    let child_pid = match &init {
        Some(_) if got == report.len() && report[0..4] == [0; 4] => match first_child(pid) {
            Some(c) => c,
            None => {
                reap(pid);
                return Err(KernelError::Unexpected { pid, what: "the new pid namespace's init has no child".into() });
            }
        },
        _ => pid,
    };
    let child = RestorerChild { pid: child_pid, child_fds: [0, 0], hold_w: hold[1], init };
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
        if step == 9 {
            if let PidChoice::NewNamespace(p) = plan.pid {
                return Err(pid_error(p, errno, true));
            }
        }
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

/// The (first) child of process `pid`, by its pid in our namespace.
fn first_child(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Writes a 12-byte report (step, errno, index) to `fd`.
fn report(fd: i32, step: u32, errno: i32, index: u32) {
    let mut rep = [0u8; 12];
    rep[0..4].copy_from_slice(&step.to_le_bytes());
    rep[4..8].copy_from_slice(&errno.to_le_bytes());
    rep[8..12].copy_from_slice(&index.to_le_bytes());
    // SAFETY: async-signal-safe write of our own stack buffer to our own fd.
    unsafe { libc::write(fd, rep.as_ptr().cast(), rep.len()) };
}

/// pid 1 of a new pid namespace: makes the restorer child with pid `want`,
/// then reaps whatever ends in the namespace until that child does, writes
/// its raw wait status to `status_w` and exits (which ends the namespace).
fn ns_init(plan: &ChildPlan, want: i32, ready_w: i32, hold_r: i32, high: i32, status_w: i32) -> ! {
    // SAFETY: only async-signal-safe system calls on fds and data prepared
    // before the fork; the second child runs `child_main`, which never returns.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        // Nothing of the caller's stays open in the init but its three pipe ends.
        let mut keep = [ready_w, hold_r, status_w];
        keep.sort_unstable();
        let mut from = 3u32;
        for k in keep {
            if k as u32 > from {
                libc::syscall(libc::SYS_close_range, from, k as u32 - 1, 0u32);
            }
            from = k as u32 + 1;
        }
        libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32);
        let child = clone3_fork(0, want);
        if child == 0 {
            libc::close(status_w);
            child_main(plan, ready_w, hold_r, high);
        }
        if child < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            report(ready_w, 9, errno, 0);
            libc::_exit(127);
        }
        // The child reports; the init holds nothing the caller waits on.
        libc::close(ready_w);
        libc::close(hold_r);
        loop {
            let mut st = 0;
            let r = libc::waitpid(-1, &mut st, libc::__WALL);
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                libc::_exit(126);
            }
            if r as libc::c_long == child {
                libc::write(status_w, (&st as *const i32).cast(), 4);
                libc::_exit(0);
            }
        }
    }
}
fn child_main(plan: &ChildPlan, ready_w: i32, hold_r: i32, high: i32) -> ! {
    // Reports go to `report_fd`: the ready pipe, wherever it has been moved.
    let mut report_fd = ready_w;
    let fail = |report_fd: i32, step: u32, index: usize| -> ! {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        report(report_fd, step, errno, index as u32);
        // SAFETY: async-signal-safe.
        unsafe { libc::_exit(127) }
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
