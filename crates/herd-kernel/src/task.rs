//! Per-process facts only a system call gives (not /proc).

use crate::{KernelError, Result};

/// Sends signal `sig` to process `pid`.
pub fn kill(pid: i32, sig: i32) -> Result<()> {
    // SAFETY: kill takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(KernelError::last("kill", pid));
    }
    Ok(())
}

/// Sends signal `sig` to thread `tid` of process `tgid`.
pub fn tgkill(tgid: i32, tid: i32, sig: i32) -> Result<()> {
    // SAFETY: tgkill takes plain integers and touches no memory of ours.
    if unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) } != 0 {
        return Err(KernelError::last("tgkill", tid));
    }
    Ok(())
}

/// Ends child `pid` with SIGKILL and reaps it.
pub fn kill_and_reap(pid: i32) -> Result<Exit> {
    kill(pid, libc::SIGKILL)?;
    reap(pid)
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

/// How a thread is scheduled: policy (SCHED_*, with SCHED_RESET_ON_FORK),
/// real-time priority, nice value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sched {
    pub policy: i32,
    pub priority: i32,
    pub nice: i32,
}

/// The scheduling of thread `tid` (any thread id of any process we may see).
pub fn sched(tid: i32) -> Result<Sched> {
    // SAFETY: sched_getscheduler takes a plain integer.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    if policy < 0 {
        return Err(KernelError::last("sched_getscheduler", tid));
    }
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: the kernel writes one sched_param into our local.
    if unsafe { libc::sched_getparam(tid, &mut param) } != 0 {
        return Err(KernelError::last("sched_getparam", tid));
    }
    // The raw call returns 20 - nice (1..=40), never a negative value but an error.
    // SAFETY: getpriority takes plain integers.
    let r = unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, tid) };
    if r < 0 {
        return Err(KernelError::last("getpriority", tid));
    }
    Ok(Sched { policy, priority: param.sched_priority, nice: 20 - r as i32 })
}

/// Sets resource limit `resource` of process `pid` (prlimit64).
pub fn prlimit(pid: i32, resource: u32, lim: libc::rlimit) -> Result<()> {
    // SAFETY: prlimit reads one rlimit from `lim` (a live local) and writes
    // nothing (old_limit is null).
    let r = unsafe { libc::prlimit(pid, resource as _, &lim, std::ptr::null_mut()) };
    if r != 0 {
        return Err(KernelError::last("prlimit", pid));
    }
    Ok(())
}

/// The calling thread's id (a tracer is a thread: /proc's TracerPid names it).
pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

pub fn euid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

pub fn egid() -> u32 {
    // SAFETY: getegid has no arguments and cannot fail.
    unsafe { libc::getegid() }
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Waits for child `pid` to end and reaps it.
pub fn reap(pid: i32) -> Result<Exit> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int to `status` on our stack.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(KernelError::from_io("waitpid", pid, e));
        }
        if libc::WIFEXITED(status) {
            return Ok(Exit::Code(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Exit::Signal(libc::WTERMSIG(status)));
        }
    }
}

/// Lets a foreground child decide about Ctrl-C and Ctrl-\ (as system(3)
/// does while it waits).
pub fn ignore_interactive_signals() {
    // SAFETY: installing SIG_IGN for two signals has no memory effects.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
}

/// Ends this process by signal `sig`, as a child that died by it did, so
/// our parent sees the same wait status. No core file is written.
pub fn die_by_signal(sig: i32) -> ! {
    // SAFETY: resetting a disposition, unblocking and raising a signal, and
    // setting RLIMIT_CORE to 0 touch no memory of ours.
    unsafe {
        let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    std::process::exit(128 + sig)
}

/// Restores the default SIGPIPE action (Rust ignores it), so that a CLI
/// writing into a closed pipe (`herd inspect | head`) ends quietly.
pub fn default_sigpipe() {
    // SAFETY: resetting one signal disposition has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

static FORWARD_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_TO.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes plain integers.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Signals that `herd restart` passes on to the process it restored, so that
/// `kill PID-of-herd` reaches the process as it would a shell's `exec`.
/// SIGINT and SIGQUIT are not among them: a terminal already sends those to
/// the whole foreground process group.
pub const FORWARDED_SIGNALS: [i32; 5] = [libc::SIGHUP, libc::SIGTERM, libc::SIGUSR1, libc::SIGUSR2, libc::SIGALRM];

pub fn forward_signals_to(pid: i32) {
    FORWARD_TO.store(pid, std::sync::atomic::Ordering::Relaxed);
    for sig in FORWARDED_SIGNALS {
        // SAFETY: `forward` is an extern "C" handler that only makes an
        // async-signal-safe call; the sigaction struct is fully initialised
        // (zeroed, then handler, flags and an empty mask set).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}
