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

/// The calling thread and the tasks it traces kept on one CPU — the one the caller runs
/// on — while they hand control back and forth by ptrace, one stop after another. Waking
/// a task on another CPU costs an inter-processor interrupt, which in a virtual machine
/// is tens of µs (measured here: an injected call took 95 µs with tracer and tracee on
/// two CPUs, 7 µs on one). Dropping it gives every task it pinned, and the caller, the
/// CPUs they had.
pub struct OneCpu {
    cpu: usize,
    own: libc::cpu_set_t,
    pinned: Vec<(i32, libc::cpu_set_t)>,
}

fn affinity(tid: i32) -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain bits; all zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
    let r = unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (r == 0).then_some(set)
}

fn set_affinity(tid: i32, set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: the kernel reads size_of::<cpu_set_t>() bytes of `set`.
    let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl OneCpu {
    /// Pins the calling thread to the CPU it runs on; None when it cannot be.
    pub fn here() -> Option<OneCpu> {
        // SAFETY: sched_getcpu has no arguments.
        let cpu = unsafe { libc::sched_getcpu() };
        let cpu = usize::try_from(cpu).ok().filter(|&c| c < libc::CPU_SETSIZE as usize)?;
        let own = affinity(0)?;
        set_affinity(0, &only(cpu)).ok()?;
        Some(OneCpu { cpu, own, pinned: Vec::new() })
    }

    /// Pins task `tid` to the same CPU, if it may run there (else it is left as it
    /// is: slower, not wrong); whether it was.
    pub fn add(&mut self, tid: i32) -> bool {
        let Some(theirs) = affinity(tid) else { return false };
        // SAFETY: CPU_ISSET reads one bit of a set; `cpu` is below CPU_SETSIZE.
        if !unsafe { libc::CPU_ISSET(self.cpu, &theirs) } || set_affinity(tid, &only(self.cpu)).is_err() {
            return false;
        }
        self.pinned.push((tid, theirs));
        true
    }

    /// Gives task `tid` the CPUs that task `like` had when it was pinned (a thread made
    /// by a pinned task inherited the pin); nothing if `like` was not pinned.
    pub fn release_like(&self, tid: i32, like: i32) -> Result<()> {
        match self.pinned.iter().find(|(t, _)| *t == like) {
            Some((_, mask)) => set_affinity(tid, mask).map_err(|e| KernelError::from_io("sched_setaffinity", tid, e)),
            None => Ok(()),
        }
    }
}

/// The set of `cpu` alone.
fn only(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain bits; all zero is the empty set.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET sets one bit of a set; `cpu` is below CPU_SETSIZE (checked by `here`).
    unsafe { libc::CPU_SET(cpu, &mut one) };
    one
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        for (tid, mask) in &self.pinned {
            let _ = set_affinity(*tid, mask);
        }
        let _ = set_affinity(0, &self.own);
    }
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

/// Waits for child `pid` to end and reaps it (also a child without an exit signal, as
/// the child of a guest's fork is: `__WALL`).
pub fn reap(pid: i32) -> Result<Exit> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int to `status` on our stack.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
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

/// Whether descriptor `fd1` of process `pid1` and `fd2` of `pid2` are the same open
/// file description (kcmp KCMP_FILE: one offset, one set of status flags). Needs
/// ptrace access to both; an error when either is gone or not accessible.
pub fn same_description(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> Result<bool> {
    const KCMP_FILE: i32 = 0;
    // SAFETY: kcmp takes integers only and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILE, fd1 as u64, fd2 as u64) };
    if r < 0 {
        return Err(KernelError::last("kcmp", pid2));
    }
    Ok(r == 0)
}

/// Whether processes `pid1` and `pid2` share one address space (kcmp KCMP_VM: a vfork
/// child before its exec, or a child made by clone with CLONE_VM but not CLONE_THREAD).
/// Needs ptrace access to both; an error when either is gone or not accessible.
pub fn same_vm(pid1: i32, pid2: i32) -> Result<bool> {
    const KCMP_VM: i32 = 1;
    // SAFETY: kcmp takes integers only and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_VM, 0u64, 0u64) };
    if r < 0 {
        return Err(KernelError::last("kcmp", pid2));
    }
    Ok(r == 0)
}

/// How many bytes a read of `fd` would find waiting (FIONREAD).
pub fn bytes_waiting(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: ioctl(FIONREAD) on a descriptor we hold writes one int into `n`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// The bytes waiting in a pipe, read without taking them out (tee(2) into a
/// pipe of ours), and the pipe's capacity. `pipe` is any open file of the
/// pipe that can be read (a reopening of /proc/PID/fd/N with O_RDONLY will do).
pub fn pipe_peek(pipe: std::os::fd::BorrowedFd<'_>) -> std::io::Result<(Vec<u8>, u32)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let err = std::io::Error::last_os_error;
    let src = pipe.as_raw_fd();
    // SAFETY: fcntl(F_GETPIPE_SZ) on a descriptor we hold; it takes no pointer.
    let cap = unsafe { libc::fcntl(src, libc::F_GETPIPE_SZ) };
    if cap < 0 {
        return Err(err());
    }
    let queued = bytes_waiting(pipe)?;
    if queued == 0 {
        return Ok((Vec::new(), cap as u32));
    }
    let mut ends = [0i32; 2];
    // SAFETY: pipe2 writes two ints into `ends`.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(err());
    }
    // SAFETY: both ends are ours alone from here on.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    // SAFETY: fcntl on our own pipe.
    if unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, cap) } < cap {
        return Err(err());
    }
    // SAFETY: tee between two pipes we hold; no memory of ours is touched.
    let n = unsafe { libc::tee(src, w.as_raw_fd(), queued, libc::SPLICE_F_NONBLOCK) };
    if n < 0 {
        return Err(err());
    }
    if n as usize != queued {
        return Err(std::io::Error::other(format!("the pipe holds {queued} bytes but only {n} could be copied")));
    }
    let mut data = vec![0u8; n as usize];
    let mut got = 0;
    while got < data.len() {
        // SAFETY: reads into the unread tail of `data`.
        let m = unsafe { libc::read(r.as_raw_fd(), data[got..].as_mut_ptr().cast(), data.len() - got) };
        if m <= 0 {
            return Err(if m < 0 { err() } else { std::io::Error::other("the copy of the pipe ended early") });
        }
        got += m as usize;
    }
    Ok((data, cap as u32))
}

/// The path of the file a file handle names (as inotify's fdinfo shows it:
/// the kernel device number `sdev` of its file system, the handle's type and
/// bytes), through a mount of that file system and open_by_handle_at (which
/// needs CAP_DAC_READ_SEARCH).
pub fn path_of_handle(sdev: u64, handle_type: i32, handle: &[u8]) -> std::io::Result<std::path::PathBuf> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let dev = format!("{}:{}", sdev >> 20, sdev & 0xf_ffff);
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mount = info
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&dev.as_str())).then(|| f.get(4).map(|m| m.to_string())).flatten()
        })
        .ok_or_else(|| std::io::Error::other(format!("no mount of device {dev}")))?;
    let dir = std::fs::File::open(&mount)?;
    let mut fh = Vec::with_capacity(8 + handle.len());
    fh.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    fh.extend_from_slice(&handle_type.to_ne_bytes());
    fh.extend_from_slice(handle);
    // SAFETY: open_by_handle_at reads a struct file_handle (its size, type and
    // `handle_bytes` bytes of handle) from `fh`, which holds exactly that.
    let fd = unsafe { libc::syscall(libc::SYS_open_by_handle_at, dir.as_raw_fd(), fh.as_ptr(), libc::O_PATH) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just gave us; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The seals of a memfd (F_GET_SEALS).
pub fn seals(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl(F_GET_SEALS) on a descriptor we hold; it takes no pointer.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// A user's file-system identity: what a thread acting for them checks access with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsCreds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Runs `f` on the calling thread with the file-system identity `creds`
/// (setfsuid, setfsgid and setgroups of this thread only: the raw system calls,
/// not glibc's, which would change every thread of herdd), then restores the
/// thread's own. Leaving root's fsuid drops the file capabilities for the time
/// being (CAP_DAC_OVERRIDE and the like), so `f` opens what the user may open.
/// Errors when the identity cannot be taken (then `f` does not run).
pub fn as_user<T>(creds: &FsCreds, f: impl FnOnce() -> T) -> Result<T> {
    struct Restore {
        uid: u32,
        gid: u32,
        groups: Vec<libc::gid_t>,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: setgroups reads `groups.len()` gids from the vector; the other
            // two take integers. Raw calls: this thread only.
            unsafe {
                libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr());
                libc::syscall(libc::SYS_setfsgid, self.gid);
                libc::syscall(libc::SYS_setfsuid, self.uid);
            }
        }
    }
    let mut own = vec![0 as libc::gid_t; 65536];
    // SAFETY: getgroups writes at most `own.len()` gids into the vector.
    let n = unsafe { libc::getgroups(own.len() as i32, own.as_mut_ptr()) };
    if n < 0 {
        return Err(KernelError::last("getgroups", 0));
    }
    own.truncate(n as usize);
    // setfsuid/setfsgid answer the previous value whatever happens; -1 changes nothing.
    // SAFETY: integers only.
    let (uid, gid) = unsafe { (libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32, libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32) };
    let restore = Restore { uid, gid, groups: own };
    // SAFETY: setgroups reads `creds.groups.len()` gids; this thread only.
    if unsafe { libc::syscall(libc::SYS_setgroups, creds.groups.len(), creds.groups.as_ptr()) } < 0 {
        return Err(KernelError::last("setgroups", 0));
    }
    // SAFETY: integers only; this thread only.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, creds.gid);
        libc::syscall(libc::SYS_setfsuid, creds.uid);
    }
    // SAFETY: integers only: -1 reads the current values back.
    let (now_uid, now_gid) = unsafe { (libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32, libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32) };
    if now_uid != creds.uid || now_gid != creds.gid {
        return Err(KernelError::Unexpected { pid: 0, what: format!("cannot act as uid {} gid {}", creds.uid, creds.gid) });
    }
    let out = f();
    drop(restore);
    Ok(out)
}

/// openat2(`root`, `rel`, `flags`) resolved beneath `root`: no symlink, `..` or
/// absolute path leads out of it, no mount point is crossed, no magic link
/// (/proc/PID/fd/N) is followed (RESOLVE_BENEATH | RESOLVE_NO_XDEV |
/// RESOLVE_NO_MAGICLINKS). `flags` are open(2) flags without O_CREAT.
pub fn open_beneath(root: std::os::fd::BorrowedFd<'_>, rel: &std::path::Path, flags: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    const RESOLVE_NO_XDEV: u64 = 0x01;
    const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
    const RESOLVE_BENEATH: u64 = 0x08;
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    if flags & libc::O_CREAT != 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let path = std::ffi::CString::new(rel.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow { flags: flags as u32 as u64, mode: 0, resolve: RESOLVE_BENEATH | RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS };
    // SAFETY: `path` is a NUL-terminated string and `how` a struct open_how (three
    // u64) that live across the call; the size passed is the struct's.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, root.as_raw_fd(), path.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just gave us; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// The `struct stat` of what `fd` refers to (an O_PATH descriptor will do), as the
/// bytes a process's `stat(2)` buffer receives (x86_64 layout, 144 bytes).
pub fn stat_bytes(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero is a valid `struct stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an empty NUL-terminated path with AT_EMPTY_PATH, and one stat struct to fill.
    let r = unsafe { libc::fstatat(fd.as_raw_fd(), c"".as_ptr(), &mut st, libc::AT_EMPTY_PATH) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `st` is plain data of `size_of::<stat>()` bytes, all initialised.
    let bytes = unsafe { std::slice::from_raw_parts((&st as *const libc::stat).cast::<u8>(), std::mem::size_of::<libc::stat>()) };
    Ok(bytes.to_vec())
}

/// The `struct statx` of what `fd` refers to, for `mask` (statx(2) with AT_EMPTY_PATH),
/// as the bytes a process's buffer receives (256 bytes).
pub fn statx_bytes(fd: std::os::fd::BorrowedFd<'_>, mask: u32, sync_flags: i32) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 256];
    let flags = libc::AT_EMPTY_PATH | (sync_flags & (libc::AT_STATX_FORCE_SYNC | libc::AT_STATX_DONT_SYNC));
    // SAFETY: an empty NUL-terminated path, and a 256-byte buffer the size of struct statx.
    let r = unsafe { libc::syscall(libc::SYS_statx, fd.as_raw_fd(), c"".as_ptr(), flags, mask, buf.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(buf.to_vec())
}

/// Whether the calling thread's file-system identity may access what `fd` refers to
/// with `mode` (R_OK, W_OK, X_OK; an O_PATH descriptor will do): faccessat2 with
/// AT_EMPTY_PATH | AT_EACCESS, which checks with the thread's fsuid and fsgid (see
/// [`as_user`]) rather than its real ids.
pub fn access_as_fs_user(fd: std::os::fd::BorrowedFd<'_>, mode: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: an empty NUL-terminated path; the rest are integers.
    let r = unsafe { libc::syscall(libc::SYS_faccessat2, fd.as_raw_fd(), c"".as_ptr(), mode, libc::AT_EMPTY_PATH | libc::AT_EACCESS) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod identity_tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn same_description_tells_dup_from_reopen() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let a = std::fs::File::open(f.path()).unwrap();
        let b = a.try_clone().unwrap();
        let c = std::fs::File::open(f.path()).unwrap();
        let me = std::process::id() as i32;
        match same_description(me, a.as_raw_fd(), me, b.as_raw_fd()) {
            Ok(same) => assert!(same),
            Err(e) => {
                println!("SKIP: kcmp is not available here: {e}");
                return;
            }
        }
        assert!(!same_description(me, a.as_raw_fd(), me, c.as_raw_fd()).unwrap());
    }

    /// A file only its owner (root, the tests that use it) may read, in a directory
    /// everyone may search.
    fn root_only_file() -> (tempfile::TempDir, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, file)
    }

    #[test]
    fn as_user_checks_access_as_that_user_on_this_thread_only() {
        if euid() != 0 {
            println!("SKIP: needs root (acting as another user)");
            return;
        }
        let (_dir, secret) = root_only_file();
        let nobody = FsCreds { uid: 65534, gid: 65534, groups: vec![] };
        let denied = as_user(&nobody, || std::fs::File::open(&secret).map(|_| ())).unwrap();
        assert_eq!(denied.unwrap_err().kind(), std::io::ErrorKind::PermissionDenied);
        // Another thread meanwhile, and this one afterwards, are root again.
        std::thread::scope(|s| {
            s.spawn(|| {
                as_user(&nobody, || {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                })
                .unwrap()
            });
            std::thread::sleep(std::time::Duration::from_millis(10));
            assert!(std::fs::File::open(&secret).is_ok(), "another thread's identity leaked");
        });
        assert!(std::fs::File::open(&secret).is_ok());
        let own = as_user(&FsCreds { uid: 0, gid: 0, groups: vec![] }, || std::fs::File::open(&secret).is_ok()).unwrap();
        assert!(own);
    }

    #[test]
    fn open_beneath_stays_beneath() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../..", d.path().join("sub/up")).unwrap();
        std::os::unix::fs::symlink("f", d.path().join("sub/rel")).unwrap();
        let root = std::fs::File::open(d.path()).unwrap();
        let open = |p: &str| open_beneath(std::os::fd::AsFd::as_fd(&root), std::path::Path::new(p), libc::O_RDONLY | libc::O_CLOEXEC);
        assert!(open("sub/f").is_ok());
        assert!(open("sub/rel").is_ok(), "a symlink that stays inside");
        assert!(open(".").is_ok());
        for escape in ["abs", "../x", "sub/up/etc/passwd", "/etc/passwd", "/proc/self/fd/0"] {
            assert!(open(escape).is_err(), "{escape} was opened");
        }
        assert_eq!(open_beneath(std::os::fd::AsFd::as_fd(&root), std::path::Path::new("n"), libc::O_CREAT).unwrap_err().raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn access_is_checked_as_the_fs_user() {
        if euid() != 0 {
            println!("SKIP: needs root (acting as another user)");
            return;
        }
        let (_dir, f) = root_only_file();
        let file = std::fs::File::open(&f).unwrap();
        let fd = std::os::fd::AsFd::as_fd(&file);
        assert!(access_as_fs_user(fd, libc::R_OK | libc::W_OK).is_ok(), "root");
        let nobody = FsCreds { uid: 65534, gid: 65534, groups: vec![] };
        let r = as_user(&nobody, || access_as_fs_user(fd, libc::R_OK)).unwrap();
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EACCES));
        assert!(as_user(&nobody, || access_as_fs_user(fd, libc::F_OK)).unwrap().is_ok());
    }

    #[test]
    fn stat_bytes_are_what_stat_gives() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, vec![1u8; 12345]).unwrap();
        let file = std::fs::File::open(&f).unwrap();
        let st = stat_bytes(std::os::fd::AsFd::as_fd(&file)).unwrap();
        assert_eq!(st.len(), 144);
        // st_size is at offset 48 on x86_64.
        assert_eq!(u64::from_ne_bytes(st[48..56].try_into().unwrap()), 12345);
        let stx = statx_bytes(std::os::fd::AsFd::as_fd(&file), libc::STATX_SIZE, 0).unwrap();
        // stx_size is at offset 40.
        assert_eq!(u64::from_ne_bytes(stx[40..48].try_into().unwrap()), 12345);
    }
}

/// A thread's signal state, from /proc/TID/status: masks of 64 bits, bit
/// `sig - 1` for signal `sig`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigMasks {
    pub blocked: u64,
    pub caught: u64,
    pub ignored: u64,
    /// Pending for the thread alone, and for the whole process.
    pub pending: u64,
    pub shared_pending: u64,
}

impl SigMasks {
    /// None when the thread is gone (or its status cannot be read).
    pub fn of(tid: i32) -> Option<SigMasks> {
        let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
        Self::parse(&status)
    }

    fn parse(status: &str) -> Option<SigMasks> {
        let mask = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
        Some(SigMasks {
            blocked: mask("SigBlk:")?,
            caught: mask("SigCgt:")?,
            ignored: mask("SigIgn:")?,
            pending: mask("SigPnd:")?,
            shared_pending: mask("ShdPnd:")?,
        })
    }

    /// Whether a handler of the process's is installed for `sig`.
    pub fn catches(&self, sig: i32) -> bool {
        Self::has(self.caught, sig)
    }

    /// Whether the process ignores `sig` explicitly (SIG_IGN).
    pub fn ignores(&self, sig: i32) -> bool {
        Self::has(self.ignored, sig)
    }

    /// Whether the thread blocks `sig`.
    pub fn blocks(&self, sig: i32) -> bool {
        Self::has(self.blocked, sig)
    }

    fn has(mask: u64, sig: i32) -> bool {
        (1..=64).contains(&sig) && mask & (1u64 << (sig - 1)) != 0
    }

    /// Whether `sig`, with `blocked` as the thread's mask, would be noticed: not
    /// blocked and not ignored (explicitly, or by default: SIGCHLD, SIGURG,
    /// SIGWINCH and SIGCONT without a handler).
    pub fn lets_in(&self, sig: i32, blocked: u64) -> bool {
        if !(1..=64).contains(&sig) {
            return false;
        }
        let default_ignored = [libc::SIGCHLD, libc::SIGURG, libc::SIGWINCH, libc::SIGCONT].contains(&sig);
        !Self::has(blocked, sig) && !self.ignores(sig) && (self.catches(sig) || !default_ignored)
    }

    /// The pending signals (the thread's and the process's) that `blocked`
    /// would let in, lowest first.
    pub fn pending_let_in(&self, blocked: u64) -> Vec<i32> {
        let pending = self.pending | self.shared_pending;
        (1..=64).filter(|&sig| Self::has(pending, sig) && self.lets_in(sig, blocked)).collect()
    }
}

#[cfg(test)]
mod sigmask_tests {
    use super::SigMasks;

    #[test]
    fn pending_signals_a_mask_lets_in() {
        // SIGCHLD (17) pending for the process, SIGUSR1 (10) for the thread; both blocked;
        // SIGCHLD caught, SIGUSR1 not (its default action ends the process), SIGWINCH (28)
        // pending but neither caught nor ignored (ignored by default).
        let status = "Name:\tmake\nSigQ:\t1/100\nSigPnd:\t0000000000000200\nShdPnd:\t0000000008010000\n\
                      SigBlk:\t0000000000010200\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000010000\n";
        let m = SigMasks::parse(status).unwrap();
        assert_eq!(m.pending_let_in(m.blocked), Vec::<i32>::new());
        assert_eq!(m.pending_let_in(0), vec![libc::SIGUSR1, libc::SIGCHLD]);
        assert_eq!(m.pending_let_in(1 << (libc::SIGUSR1 - 1)), vec![libc::SIGCHLD]);
        assert!(!m.lets_in(libc::SIGWINCH, 0));
        assert!(!m.lets_in(0, 0) && !m.lets_in(65, 0));
    }
}

#[cfg(test)]
mod one_cpu_tests {
    use super::*;

    fn count(tid: i32) -> usize {
        let set = affinity(tid).expect("sched_getaffinity");
        // SAFETY: CPU_COUNT reads a set.
        unsafe { libc::CPU_COUNT(&set) as usize }
    }

    #[test]
    fn pins_both_then_gives_each_its_cpus_back() {
        // On a thread of its own: the pin is the calling thread's.
        std::thread::spawn(|| {
            let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
            let pid = child.id() as i32;
            let (mine, theirs) = (count(0), count(pid));
            if mine < 2 {
                println!("SKIP: one CPU only: nothing to pin");
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            let mut pin = OneCpu::here().expect("pin");
            assert!(pin.add(pid));
            assert_eq!((count(0), count(pid)), (1, 1));
            pin.release_like(pid, pid).unwrap();
            assert_eq!(count(pid), theirs);
            assert!(pin.add(pid));
            drop(pin);
            assert_eq!((count(0), count(pid)), (mine, theirs));
            let _ = child.kill();
            let _ = child.wait();
        })
        .join()
        .unwrap();
    }
}
