//! The system call table of a migrated process, and the marshalling of the
//! calls it forwards home.
//!
//! Every x86_64 system call number is in one class (see DESIGN.md, "System
//! call classes"):
//!
//! - **local**: runs on the remote node's kernel and never traps (memory of
//!   its own, futexes, signal masks and actions, clocks, exit). A local call
//!   cannot reach the remote node's files or other processes' state.
//! - **identity**: answered by herdd with the home identity (`getpid`,
//!   `gettid`); a signal the process sends itself is delivered locally.
//! - **forward**: run by the deputy at home, which owns the files, the cwd and
//!   the terminal; pointer arguments are marshalled both ways.
//! - **home**: the process must migrate home to make it (fork, execve,
//!   mmap of a file (a private one is first tried from the node's identical copy,
//!   `Direct::map_copy`), anything the table does not know).
//!
//! The table below is the only place this is decided: [`classify`] reads it
//! for a trapped call, [`local_syscalls`] and [`filter`] derive the seccomp
//! filter from it, and the argument specifications ([`Arg`], [`Len`]) drive
//! [`marshal`] (remote side), [`execute`] (home side) and [`apply`] (remote
//! side again). Correctness first: a call whose argument layout is not
//! described exactly here goes home, which only costs speed.
//!
//! A forwarded call, as it crosses:
//!
//! ```text
//! remote                                   home (deputy)
//! marshal: read input buffers  ── Call ──▶ execute: check the Call against the
//!          from the process                table, copy buffers into scratch,
//!                                          rewrite pointers, inject the call,
//! apply: check each output     ◀─ Reply ── read the output buffers back
//!        against the Call, write it
//! ```

use std::borrow::Cow;
use std::sync::OnceLock;

use herd_kernel::seccomp::{self, Filter, Notif};
use serde::{Deserialize, Serialize};

/// Largest byte count one read/write-like call moves (a short transfer is
/// legal; the process sees it as such and asks again).
pub const MAX_IO: u64 = 4 << 20;
/// Largest buffer of any other kind, and the most bytes of buffers one call
/// may describe in all.
pub const MAX_BUF: u64 = MAX_IO;
pub const MAX_CALL: u64 = 2 * MAX_IO;
/// Longest path, with its NUL (as the kernel's PATH_MAX).
pub const PATH_MAX: u64 = 4096;
/// Most iovecs in one call (the kernel's UIO_MAXIOV).
pub const MAX_IOVECS: u64 = 1024;
/// select's nfds is cut to this many descriptors (fs.nr_open's default
/// ceiling), so that its fd sets stay small.
pub const MAX_SELECT_FDS: u64 = 1 << 20;

// Structure sizes on x86_64 (checked against libc in the tests).
const STAT: u64 = 144;
const STATX: u64 = 256;
const STATFS: u64 = 120;
const UTSNAME: u64 = 390;
const SYSINFO: u64 = 112;
const TIMESPEC: u64 = 16;
/// `struct itimerspec`: interval and value.
const ITIMERSPEC: u64 = 32;
const TIMEVAL: u64 = 16;
const POLLFD: u64 = 8;
/// struct epoll_event (packed on x86_64: u32 events, u64 data).
const EPOLL_EVENT: u64 = 12;
/// The kernel's struct termios (TCGETS), not glibc's larger one.
const TERMIOS: u64 = 36;
const WINSIZE: u64 = 8;
const FLOCK: u64 = 32;
const RUSAGE: u64 = 144;
const SIGINFO: u64 = 128;
const INT: u64 = 4;
const LOFF: u64 = 8;
const IOVEC: u64 = 16;
/// `struct msghdr` (x86_64): name, namelen, iov, iovlen, control, controllen, flags.
const MSGHDR: u64 = 56;
/// `struct mmsghdr`: a msghdr, then `msg_len` (u32), padded.
const MMSGHDR: u64 = 64;
/// The most messages one forwarded sendmmsg or recvmmsg carries (the kernel may send or
/// receive fewer than asked: the process takes the rest at its next call).
pub const MAX_MMSG: u64 = 64;
/// The parts of a `struct msghdr` the kernel sets: msg_namelen, then msg_controllen and
/// msg_flags.
const MSGHDR_SET: [(usize, usize); 2] = [(8, 12), (40, 52)];
/// Its pointers: msg_name, msg_iov, msg_control.
const MSGHDR_POINTERS: [(usize, usize); 3] = [(0, 8), (16, 24), (32, 40)];
const SIGSET: u64 = 8;

// asm-generic/socket.h: options whose value holds a pointer (a classic BPF
// program), which the deputy could not follow.
const SO_ATTACH_FILTER: i32 = 26;
const SO_ATTACH_REUSEPORT_CBPF: i32 = 51;

/// Where a trapped system call is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// On the remote node's kernel. The filter lets these through, so a
    /// notification of one only comes from a filter older than the table:
    /// let it continue.
    Local,
    /// Answered with the home identity.
    Identity(Identity),
    /// Run by the deputy at home ([`marshal`], [`execute`], [`apply`]).
    Forward,
    /// The process must go home first; why.
    Home(HomeReason),
}

/// Calls answered with the home identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Answer the home pid.
    Getpid,
    /// Answer the calling thread's home id.
    Gettid,
    /// kill/tkill/tgkill aimed at the process itself (by its home pid):
    /// deliver `sig` locally and answer 0; `sig` 0 only checks existence.
    SignalSelf { sig: i32 },
    /// `exit` of a thread: it runs here (the guest tells home, whose deputy of
    /// that thread ends too, unless it is the process's last thread).
    ThreadExit,
    /// `rt_sigreturn`, the end of a signal handler: it runs here, once the guest has
    /// seen where it returns to (a forwarded call the signal cut short takes home's
    /// answer there).
    SigReturn,
}

/// Why a call makes its process go home.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HomeReason {
    /// The table says this call runs at home (the call, or a description
    /// such as "mmap of a file").
    Call(&'static str),
    /// A number the table does not know.
    Unknown(i64),
    /// An ioctl request the table does not know.
    Ioctl(u32),
    /// An fcntl command the table does not know.
    Fcntl(u32),
    /// A call made through another architecture's entry (`int 0x80`).
    Arch(u32),
}

impl std::fmt::Display for HomeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HomeReason::Call(what) => f.write_str(what),
            HomeReason::Unknown(nr) => write!(f, "unknown system call {nr}"),
            HomeReason::Ioctl(req) => write!(f, "ioctl {req:#x}"),
            HomeReason::Fcntl(cmd) => write!(f, "fcntl command {cmd}"),
            HomeReason::Arch(arch) => write!(f, "system call of architecture {arch:#x}"),
        }
    }
}

/// How one argument of a forwarded call is marshalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// A value, passed unchanged.
    Val,
    /// A byte count the call may honour in part (read/write-like): cut to
    /// [`MAX_IO`].
    Count,
    /// select's nfds (int): cut to [`MAX_SELECT_FDS`].
    Nfds,
    /// A count (int) of `size`-byte items the kernel may fill in part (epoll_wait's
    /// maxevents): cut so that they fit [`MAX_BUF`]. Fewer than asked is legal: the
    /// process takes the rest at its next call.
    Items(u64),
    /// Pointer to bytes the kernel reads.
    InBuf(Len),
    /// Pointer to bytes the kernel writes, `ret` of them: nothing is sent,
    /// `min(ret, len)` bytes come back when `ret >= 0`.
    OutRet(Len),
    /// Pointer to an array of `size`-byte items the kernel writes, `ret` of them
    /// (epoll_wait's events): nothing is sent, `min(ret * size, len)` bytes come back.
    OutItems(Len, u64),
    /// Pointer to bytes the kernel may read and write (small structures):
    /// sent, and all of them come back, so that what the kernel did not
    /// write keeps its value.
    InOut(Len),
    /// NUL-terminated path, at most [`PATH_MAX`] bytes with the NUL.
    Path,
    /// iovec array the kernel reads from; its length is argument `count_arg`.
    IovIn { count_arg: usize },
    /// iovec array the kernel fills, `ret` bytes in order.
    IovOut { count_arg: usize },
    /// pselect6's last argument: pointer to `{ const sigset_t *ss; size_t ss_len }`.
    SigsetPack,
    /// sendmsg's `struct msghdr`: the header, the address, the iovec list and the
    /// control messages (SCM_RIGHTS names the process's descriptors, which are home's),
    /// all read by the kernel.
    MsgIn,
    /// recvmsg's `struct msghdr`: the kernel fills the address, the iovec list (`ret`
    /// bytes in order) and the control messages (descriptors received land in home's
    /// table, the process's), and sets the header's lengths and flags
    /// ([`OutKind::MsgHdr`]).
    MsgOut,
    /// sendmmsg's array of `struct mmsghdr` (its count is argument `count_arg`, cut to
    /// [`MAX_MMSG`]): each message as for [`Arg::MsgIn`]; the kernel sets each sent
    /// one's `msg_len` ([`OutKind::Mmsg`]).
    MmsgIn { count_arg: usize },
    /// recvmmsg's: each message as for [`Arg::MsgOut`], except that its buffers come back
    /// whole (each message has its own length); [`OutKind::Mmsg`].
    MmsgOut { count_arg: usize },
}

/// The length of a pointer argument's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Len {
    /// The value of argument `i` (a size_t), after [`Arg::Count`] cuts it.
    Size(usize),
    /// The low 32 bits of argument `i` (an int or socklen_t).
    Size32(usize),
    Fixed(u64),
    /// The low 32 bits of argument `i` (a count) times an element size.
    Times(usize, u64),
    /// An fd_set for the nfds in argument `i`.
    FdSet(usize),
    /// The u32 argument `i` points to (a `socklen_t *`, itself `InOut(Fixed(4))`);
    /// 0 when that pointer is NULL.
    DerefU32(usize),
}

/// What the table says about one number.
#[derive(Clone, Copy)]
enum Rule {
    Local,
    Getpid,
    Gettid,
    /// `exit`: the end of a thread (of the process, when it is the last one).
    ThreadExit,
    SigReturn,
    Forward(&'static [Arg]),
    Home,
    /// Decided by the arguments (and the home pid, when known).
    By(fn(&[u64; 6], Option<i32>) -> Decision),
}

/// A rule applied to one call's arguments.
#[derive(Clone, Copy, Debug)]
enum Decision {
    Local,
    Identity(Identity),
    Forward(&'static [Arg]),
    Home(HomeReason),
}

struct Entry {
    nr: libc::c_long,
    /// `SYS_name`.
    sym: &'static str,
    rule: Rule,
}

impl Entry {
    fn name(&self) -> &'static str {
        &self.sym[4..]
    }
}

macro_rules! e {
    ($sys:ident, $rule:expr) => {
        Entry { nr: libc::$sys, sym: stringify!($sys), rule: $rule }
    };
}

/// THE table. One line per system call; numbers not here go home.
const TABLE: &[Entry] = {
    use Arg::*;
    use Len::*;
    use Rule::*;
    &[
        // ---- local: memory ----
        e!(SYS_brk, Local),
        e!(SYS_mmap, By(by_mmap)),
        e!(SYS_munmap, Local),
        e!(SYS_mprotect, Local),
        e!(SYS_mremap, Local),
        e!(SYS_madvise, Local),
        e!(SYS_msync, Local),
        e!(SYS_mlock, Local),
        e!(SYS_munlock, Local),
        e!(SYS_mlockall, Local),
        e!(SYS_munlockall, Local),
        e!(SYS_mlock2, Local),
        e!(SYS_mincore, Local),
        e!(SYS_membarrier, Local),
        // ---- local: threads, futexes, process attributes ----
        e!(SYS_futex, Local),
        e!(SYS_futex_waitv, Local),
        e!(SYS_set_robust_list, Local),
        e!(SYS_get_robust_list, Local),
        e!(SYS_set_tid_address, Local),
        e!(SYS_rseq, Local),
        e!(SYS_arch_prctl, Local),
        e!(SYS_prctl, Local),
        e!(SYS_capget, Local),
        e!(SYS_getcpu, Local),
        e!(SYS_restart_syscall, Local),
        e!(SYS_exit, ThreadExit),
        e!(SYS_exit_group, Local),
        // ---- local: signals ----
        e!(SYS_rt_sigaction, Local),
        e!(SYS_rt_sigprocmask, Local),
        e!(SYS_rt_sigreturn, SigReturn),
        e!(SYS_rt_sigpending, Local),
        e!(SYS_rt_sigsuspend, Local),
        e!(SYS_rt_sigtimedwait, Local),
        e!(SYS_sigaltstack, Local),
        e!(SYS_pause, Local),
        // ---- local: time and timers ----
        e!(SYS_nanosleep, Local),
        e!(SYS_clock_nanosleep, Local),
        e!(SYS_clock_gettime, Local),
        e!(SYS_clock_getres, Local),
        e!(SYS_gettimeofday, Local),
        e!(SYS_time, Local),
        e!(SYS_times, Local),
        e!(SYS_alarm, Local),
        e!(SYS_setitimer, Local),
        e!(SYS_getitimer, Local),
        e!(SYS_timer_create, Local),
        e!(SYS_timer_settime, Local),
        e!(SYS_timer_gettime, Local),
        e!(SYS_timer_getoverrun, Local),
        e!(SYS_timer_delete, Local),
        // ---- local: scheduling, randomness, credentials, limits ----
        e!(SYS_sched_yield, Local),
        e!(SYS_sched_getaffinity, Local),
        e!(SYS_sched_getparam, Local),
        e!(SYS_sched_getscheduler, Local),
        e!(SYS_sched_get_priority_max, Local),
        e!(SYS_sched_get_priority_min, Local),
        e!(SYS_getrandom, Local),
        e!(SYS_getuid, Local),
        e!(SYS_geteuid, Local),
        e!(SYS_getgid, Local),
        e!(SYS_getegid, Local),
        e!(SYS_getresuid, Local),
        e!(SYS_getresgid, Local),
        e!(SYS_getgroups, Local),
        e!(SYS_getrlimit, Local),
        e!(SYS_prlimit64, Local),
        e!(SYS_getrusage, Local),
        // ---- identity ----
        e!(SYS_getpid, Getpid),
        e!(SYS_gettid, Gettid),
        e!(SYS_kill, By(by_kill)),
        e!(SYS_tkill, By(by_tkill)),
        e!(SYS_tgkill, By(by_tgkill)),
        // ---- forward: reading and writing ----
        e!(SYS_read, Forward(&[Val, OutRet(Size(2)), Count])),
        e!(SYS_write, Forward(&[Val, InBuf(Size(2)), Count])),
        e!(SYS_pread64, Forward(&[Val, OutRet(Size(2)), Count, Val])),
        e!(SYS_pwrite64, Forward(&[Val, InBuf(Size(2)), Count, Val])),
        e!(SYS_readv, Forward(&[Val, IovOut { count_arg: 2 }, Val])),
        e!(SYS_writev, Forward(&[Val, IovIn { count_arg: 2 }, Val])),
        e!(SYS_preadv, Forward(&[Val, IovOut { count_arg: 2 }, Val, Val, Val])),
        e!(SYS_pwritev, Forward(&[Val, IovIn { count_arg: 2 }, Val, Val, Val])),
        e!(SYS_preadv2, Forward(&[Val, IovOut { count_arg: 2 }, Val, Val, Val, Val])),
        e!(SYS_pwritev2, Forward(&[Val, IovIn { count_arg: 2 }, Val, Val, Val, Val])),
        e!(SYS_lseek, Forward(&[Val, Val, Val])),
        e!(SYS_sendfile, Forward(&[Val, Val, InOut(Fixed(LOFF)), Count])),
        e!(SYS_copy_file_range, Forward(&[Val, InOut(Fixed(LOFF)), Val, InOut(Fixed(LOFF)), Count, Val])),
        // ---- forward: descriptors ----
        e!(SYS_open, Forward(&[Path, Val, Val])),
        e!(SYS_openat, Forward(&[Val, Path, Val, Val])),
        e!(SYS_openat2, Forward(&[Val, Path, InBuf(Size(3)), Val])),
        e!(SYS_creat, Forward(&[Path, Val])),
        e!(SYS_close, Forward(&[Val])),
        e!(SYS_close_range, Forward(&[Val, Val, Val])),
        e!(SYS_dup, Forward(&[Val])),
        e!(SYS_dup2, Forward(&[Val, Val])),
        e!(SYS_dup3, Forward(&[Val, Val, Val])),
        e!(SYS_pipe, Forward(&[InOut(Fixed(2 * INT))])),
        e!(SYS_pipe2, Forward(&[InOut(Fixed(2 * INT)), Val])),
        e!(SYS_fcntl, By(by_fcntl)),
        e!(SYS_ioctl, By(by_ioctl)),
        e!(SYS_flock, Forward(&[Val, Val])),
        e!(SYS_fsync, Forward(&[Val])),
        e!(SYS_fdatasync, Forward(&[Val])),
        e!(SYS_ftruncate, Forward(&[Val, Val])),
        e!(SYS_fallocate, Forward(&[Val, Val, Val, Val])),
        e!(SYS_fadvise64, Forward(&[Val, Val, Val, Val])),
        e!(SYS_getdents64, Forward(&[Val, OutRet(Size(2)), Count])),
        // ---- forward: file metadata ----
        e!(SYS_fstat, Forward(&[Val, InOut(Fixed(STAT))])),
        e!(SYS_stat, Forward(&[Path, InOut(Fixed(STAT))])),
        e!(SYS_lstat, Forward(&[Path, InOut(Fixed(STAT))])),
        e!(SYS_newfstatat, Forward(&[Val, Path, InOut(Fixed(STAT)), Val])),
        e!(SYS_statx, Forward(&[Val, Path, Val, Val, InOut(Fixed(STATX))])),
        e!(SYS_statfs, Forward(&[Path, InOut(Fixed(STATFS))])),
        e!(SYS_fstatfs, Forward(&[Val, InOut(Fixed(STATFS))])),
        e!(SYS_access, Forward(&[Path, Val])),
        e!(SYS_faccessat, Forward(&[Val, Path, Val])),
        e!(SYS_faccessat2, Forward(&[Val, Path, Val, Val])),
        e!(SYS_readlink, Forward(&[Path, OutRet(Size32(2)), Val])),
        e!(SYS_readlinkat, Forward(&[Val, Path, OutRet(Size32(3)), Val])),
        e!(SYS_chmod, Forward(&[Path, Val])),
        e!(SYS_fchmod, Forward(&[Val, Val])),
        e!(SYS_fchmodat, Forward(&[Val, Path, Val])),
        e!(SYS_chown, Forward(&[Path, Val, Val])),
        e!(SYS_fchown, Forward(&[Val, Val, Val])),
        e!(SYS_lchown, Forward(&[Path, Val, Val])),
        e!(SYS_fchownat, Forward(&[Val, Path, Val, Val, Val])),
        e!(SYS_truncate, Forward(&[Path, Val])),
        e!(SYS_utimensat, Forward(&[Val, Path, InBuf(Fixed(2 * TIMESPEC)), Val])),
        // Extended attributes (`ls -l` asks for ACLs; `cp -p`, tar and python's copystat
        // copy them).
        e!(SYS_getxattr, Forward(&[Path, Path, OutRet(Size(3)), Val])),
        e!(SYS_lgetxattr, Forward(&[Path, Path, OutRet(Size(3)), Val])),
        e!(SYS_fgetxattr, Forward(&[Val, Path, OutRet(Size(3)), Val])),
        e!(SYS_listxattr, Forward(&[Path, OutRet(Size(2)), Val])),
        e!(SYS_llistxattr, Forward(&[Path, OutRet(Size(2)), Val])),
        e!(SYS_flistxattr, Forward(&[Val, OutRet(Size(2)), Val])),
        e!(SYS_setxattr, Forward(&[Path, Path, InBuf(Size(3)), Val, Val])),
        e!(SYS_lsetxattr, Forward(&[Path, Path, InBuf(Size(3)), Val, Val])),
        e!(SYS_fsetxattr, Forward(&[Val, Path, InBuf(Size(3)), Val, Val])),
        e!(SYS_removexattr, Forward(&[Path, Path])),
        e!(SYS_lremovexattr, Forward(&[Path, Path])),
        e!(SYS_fremovexattr, Forward(&[Val, Path])),
        e!(SYS_sync, Forward(&[])),
        e!(SYS_syncfs, Forward(&[Val])),
        e!(SYS_sync_file_range, Forward(&[Val, Val, Val, Val])),
        e!(SYS_readahead, Forward(&[Val, Val, Val])),
        // ---- forward: the name space ----
        e!(SYS_unlink, Forward(&[Path])),
        e!(SYS_unlinkat, Forward(&[Val, Path, Val])),
        e!(SYS_mkdir, Forward(&[Path, Val])),
        e!(SYS_mkdirat, Forward(&[Val, Path, Val])),
        // mkfifo, and device nodes where the owner may make them.
        e!(SYS_mknod, Forward(&[Path, Val, Val])),
        e!(SYS_mknodat, Forward(&[Val, Path, Val, Val])),
        e!(SYS_rmdir, Forward(&[Path])),
        e!(SYS_rename, Forward(&[Path, Path])),
        e!(SYS_renameat, Forward(&[Val, Path, Val, Path])),
        e!(SYS_renameat2, Forward(&[Val, Path, Val, Path, Val])),
        e!(SYS_link, Forward(&[Path, Path])),
        e!(SYS_linkat, Forward(&[Val, Path, Val, Path, Val])),
        e!(SYS_symlink, Forward(&[Path, Path])),
        e!(SYS_symlinkat, Forward(&[Path, Val, Path])),
        e!(SYS_chdir, Forward(&[Path])),
        e!(SYS_fchdir, Forward(&[Val])),
        e!(SYS_getcwd, Forward(&[OutRet(Size(1)), Count])),
        e!(SYS_umask, Forward(&[Val])),
        // ---- forward: the home node and process relations ----
        e!(SYS_uname, Forward(&[InOut(Fixed(UTSNAME))])),
        e!(SYS_sysinfo, Forward(&[InOut(Fixed(SYSINFO))])),
        e!(SYS_getppid, Forward(&[])),
        e!(SYS_getpgrp, Forward(&[])),
        e!(SYS_getpgid, Forward(&[Val])),
        e!(SYS_getsid, Forward(&[Val])),
        e!(SYS_setpgid, Forward(&[Val, Val])),
        e!(SYS_setsid, Forward(&[])),
        e!(SYS_wait4, Forward(&[Val, InOut(Fixed(INT)), Val, InOut(Fixed(RUSAGE))])),
        e!(SYS_waitid, Forward(&[Val, Val, InOut(Fixed(SIGINFO)), Val, InOut(Fixed(RUSAGE))])),
        // ---- forward: waiting for descriptors ----
        e!(SYS_poll, Forward(&[InOut(Times(1, POLLFD)), Val, Val])),
        e!(SYS_ppoll, Forward(&[InOut(Times(1, POLLFD)), Val, InOut(Fixed(TIMESPEC)), InBuf(Size(4)), Val])),
        e!(SYS_select, Forward(&[Nfds, InOut(FdSet(0)), InOut(FdSet(0)), InOut(FdSet(0)), InOut(Fixed(TIMEVAL))])),
        e!(SYS_pselect6, Forward(&[Nfds, InOut(FdSet(0)), InOut(FdSet(0)), InOut(FdSet(0)), InOut(Fixed(TIMESPEC)), SigsetPack])),
        // Every descriptor is home's, so is an epoll and what it watches (a Go program's
        // scheduler waits in epoll_pwait with a timeout: it waits at home).
        e!(SYS_epoll_create, Forward(&[Val])),
        e!(SYS_epoll_create1, Forward(&[Val])),
        e!(SYS_epoll_ctl, Forward(&[Val, Val, Val, InBuf(Fixed(EPOLL_EVENT))])),
        e!(SYS_epoll_wait, Forward(&[Val, OutItems(Times(2, EPOLL_EVENT), EPOLL_EVENT), Items(EPOLL_EVENT), Val])),
        e!(SYS_epoll_pwait, Forward(&[Val, OutItems(Times(2, EPOLL_EVENT), EPOLL_EVENT), Items(EPOLL_EVENT), Val, InBuf(Size(5)), Val])),
        e!(SYS_epoll_pwait2, Forward(&[Val, OutItems(Times(2, EPOLL_EVENT), EPOLL_EVENT), Items(EPOLL_EVENT), InBuf(Fixed(TIMESPEC)), InBuf(Size(5)), Val])),
        // ---- forward: sockets ----
        e!(SYS_socket, Forward(&[Val, Val, Val])),
        e!(SYS_socketpair, Forward(&[Val, Val, Val, InOut(Fixed(2 * INT))])),
        e!(SYS_connect, Forward(&[Val, InBuf(Size32(2)), Val])),
        e!(SYS_bind, Forward(&[Val, InBuf(Size32(2)), Val])),
        e!(SYS_listen, Forward(&[Val, Val])),
        e!(SYS_accept, Forward(&[Val, InOut(DerefU32(2)), InOut(Fixed(INT))])),
        e!(SYS_accept4, Forward(&[Val, InOut(DerefU32(2)), InOut(Fixed(INT)), Val])),
        e!(SYS_sendto, Forward(&[Val, InBuf(Size(2)), Count, Val, InBuf(Size32(5)), Val])),
        e!(SYS_recvfrom, By(by_recvfrom)),
        e!(SYS_shutdown, Forward(&[Val, Val])),
        e!(SYS_getsockname, Forward(&[Val, InOut(DerefU32(2)), InOut(Fixed(INT))])),
        e!(SYS_getpeername, Forward(&[Val, InOut(DerefU32(2)), InOut(Fixed(INT))])),
        e!(SYS_setsockopt, By(by_setsockopt)),
        e!(SYS_getsockopt, Forward(&[Val, Val, Val, InOut(DerefU32(4)), InOut(Fixed(INT))])),
        // ---- home ----
        e!(SYS_fork, Home),
        e!(SYS_vfork, Home),
        e!(SYS_clone, Home),
        e!(SYS_clone3, Home),
        e!(SYS_execve, Home),
        e!(SYS_execveat, Home),
        e!(SYS_ptrace, Home),
        e!(SYS_personality, Home),
        e!(SYS_sendmsg, Forward(&[Val, MsgIn, Val])),
        e!(SYS_recvmsg, By(by_recvmsg)),
        e!(SYS_sendmmsg, Forward(&[Val, MmsgIn { count_arg: 2 }, Val, Val])),
        e!(SYS_recvmmsg, By(by_recvmmsg)),
        // The rings are shared with the kernel where the process runs.
        e!(SYS_io_uring_setup, Home),
        e!(SYS_io_uring_enter, Home),
        e!(SYS_io_uring_register, Home),
        // Descriptors made at home like any other, and used there: an eventfd, a timer
        // (its clock is home's: an absolute CLOCK_MONOTONIC deadline read here is the
        // node's), inotify watches on home's files.
        e!(SYS_eventfd, Forward(&[Val])),
        e!(SYS_eventfd2, Forward(&[Val, Val])),
        e!(SYS_timerfd_create, Forward(&[Val, Val])),
        e!(SYS_timerfd_settime, Forward(&[Val, Val, InBuf(Fixed(ITIMERSPEC)), InOut(Fixed(ITIMERSPEC))])),
        e!(SYS_timerfd_gettime, Forward(&[Val, InOut(Fixed(ITIMERSPEC))])),
        e!(SYS_inotify_init, Forward(&[])),
        e!(SYS_inotify_init1, Forward(&[Val])),
        e!(SYS_inotify_add_watch, Forward(&[Val, Path, Val])),
        e!(SYS_inotify_rm_watch, Forward(&[Val, Val])),
        // The signals a signalfd reads are the process's, which reach it here.
        e!(SYS_signalfd, Home),
        e!(SYS_signalfd4, Home),
        e!(SYS_memfd_create, Home),
        e!(SYS_setuid, Home),
        e!(SYS_setgid, Home),
        e!(SYS_setreuid, Home),
        e!(SYS_setregid, Home),
        e!(SYS_setresuid, Home),
        e!(SYS_setresgid, Home),
        e!(SYS_setgroups, Home),
        e!(SYS_setfsuid, Home),
        e!(SYS_setfsgid, Home),
    ]
};

/// ioctl requests that are forwarded (the rest go home), with their arguments.
const IOCTLS: &[(libc::Ioctl, &[Arg])] = {
    use Arg::*;
    use Len::*;
    &[
        (libc::TCGETS, &[Val, Val, InOut(Fixed(TERMIOS))]),
        (libc::TCSETS, &[Val, Val, InBuf(Fixed(TERMIOS))]),
        (libc::TCSETSW, &[Val, Val, InBuf(Fixed(TERMIOS))]),
        (libc::TCSETSF, &[Val, Val, InBuf(Fixed(TERMIOS))]),
        (libc::TCSBRK, &[Val, Val, Val]),
        (libc::TCXONC, &[Val, Val, Val]),
        (libc::TCFLSH, &[Val, Val, Val]),
        (libc::TIOCGWINSZ, &[Val, Val, InOut(Fixed(WINSIZE))]),
        (libc::TIOCSWINSZ, &[Val, Val, InBuf(Fixed(WINSIZE))]),
        (libc::TIOCGPGRP, &[Val, Val, InOut(Fixed(INT))]),
        (libc::TIOCSPGRP, &[Val, Val, InBuf(Fixed(INT))]),
        (libc::TIOCGSID, &[Val, Val, InOut(Fixed(INT))]),
        (libc::TIOCOUTQ, &[Val, Val, InOut(Fixed(INT))]),
        (libc::FIONREAD, &[Val, Val, InOut(Fixed(INT))]),
        (libc::FIONBIO, &[Val, Val, InBuf(Fixed(INT))]),
        (libc::FIOCLEX, &[Val, Val, Val]),
        (libc::FIONCLEX, &[Val, Val, Val]),
    ]
};

/// fcntl commands that are forwarded (the rest go home), with their arguments.
const FCNTLS: &[(libc::c_int, &[Arg])] = {
    use Arg::*;
    use Len::*;
    &[
        (libc::F_DUPFD, &[Val, Val, Val]),
        (libc::F_DUPFD_CLOEXEC, &[Val, Val, Val]),
        (libc::F_GETFD, &[Val, Val, Val]),
        (libc::F_SETFD, &[Val, Val, Val]),
        (libc::F_GETFL, &[Val, Val, Val]),
        (libc::F_SETFL, &[Val, Val, Val]),
        (libc::F_GETLK, &[Val, Val, InOut(Fixed(FLOCK))]),
        (libc::F_SETLK, &[Val, Val, InBuf(Fixed(FLOCK))]),
        (libc::F_SETLKW, &[Val, Val, InBuf(Fixed(FLOCK))]),
        (libc::F_OFD_GETLK, &[Val, Val, InOut(Fixed(FLOCK))]),
        (libc::F_OFD_SETLK, &[Val, Val, InBuf(Fixed(FLOCK))]),
        (libc::F_OFD_SETLKW, &[Val, Val, InBuf(Fixed(FLOCK))]),
    ]
};

fn by_mmap(a: &[u64; 6], _: Option<i32>) -> Decision {
    if a[3] as u32 & libc::MAP_ANONYMOUS as u32 != 0 {
        Decision::Local
    } else {
        Decision::Home(HomeReason::Call("mmap of a file"))
    }
}

/// A signal aimed at the home pid is the process's own: delivered locally.
fn signal(targets_self: bool, sig: u64, spec: &'static [Arg]) -> Decision {
    if targets_self {
        Decision::Identity(Identity::SignalSelf { sig: sig as i32 })
    } else {
        Decision::Forward(spec)
    }
}

fn by_kill(a: &[u64; 6], home: Option<i32>) -> Decision {
    signal(home == Some(a[0] as i32), a[1], &[Arg::Val, Arg::Val])
}

fn by_tkill(a: &[u64; 6], home: Option<i32>) -> Decision {
    signal(home == Some(a[0] as i32), a[1], &[Arg::Val, Arg::Val])
}

fn by_tgkill(a: &[u64; 6], home: Option<i32>) -> Decision {
    let me = home == Some(a[0] as i32) && home == Some(a[1] as i32);
    signal(me, a[2], &[Arg::Val, Arg::Val, Arg::Val])
}

fn by_ioctl(a: &[u64; 6], _: Option<i32>) -> Decision {
    let req = a[1] as u32; // the kernel's `unsigned int cmd`
    match IOCTLS.iter().find(|(r, _)| *r == libc::Ioctl::from(req)) {
        Some((_, spec)) => Decision::Forward(spec),
        None => Decision::Home(HomeReason::Ioctl(req)),
    }
}

fn by_fcntl(a: &[u64; 6], _: Option<i32>) -> Decision {
    let cmd = a[1] as u32; // the kernel's `unsigned int cmd`
    match FCNTLS.iter().find(|(c, _)| *c as u32 == cmd) {
        Some((_, spec)) => Decision::Forward(spec),
        None => Decision::Home(HomeReason::Fcntl(cmd)),
    }
}

fn by_recvmsg(a: &[u64; 6], _: Option<i32>) -> Decision {
    use Arg::*;
    // As for recvfrom.
    if a[2] as u32 & libc::MSG_TRUNC as u32 != 0 {
        return Decision::Home(HomeReason::Call("recvmsg with MSG_TRUNC"));
    }
    Decision::Forward(&[Val, MsgOut, Val])
}

fn by_recvmmsg(a: &[u64; 6], _: Option<i32>) -> Decision {
    use Arg::*;
    use Len::*;
    if a[3] as u32 & libc::MSG_TRUNC as u32 != 0 {
        return Decision::Home(HomeReason::Call("recvmmsg with MSG_TRUNC"));
    }
    Decision::Forward(&[Val, MmsgOut { count_arg: 2 }, Val, Val, InOut(Fixed(TIMESPEC))])
}

fn by_recvfrom(a: &[u64; 6], _: Option<i32>) -> Decision {
    use Arg::*;
    use Len::*;
    // With MSG_TRUNC a stream socket discards the data and returns its
    // length, so "ret bytes were written" would not hold.
    if a[3] as u32 & libc::MSG_TRUNC as u32 != 0 {
        return Decision::Home(HomeReason::Call("recvfrom with MSG_TRUNC"));
    }
    Decision::Forward(&[Val, OutRet(Size(2)), Count, Val, InOut(DerefU32(5)), InOut(Fixed(INT))])
}

fn by_setsockopt(a: &[u64; 6], _: Option<i32>) -> Decision {
    use Arg::*;
    use Len::*;
    let (level, name) = (a[1] as i32, a[2] as i32);
    if level == libc::SOL_SOCKET && (name == SO_ATTACH_FILTER || name == SO_ATTACH_REUSEPORT_CBPF) {
        return Decision::Home(HomeReason::Call("setsockopt with a socket filter"));
    }
    Decision::Forward(&[Val, Val, Val, InBuf(Size32(4)), Val])
}

/// The table entry of each number, indexed by number.
fn entry(nr: i64) -> Option<&'static Entry> {
    static INDEX: OnceLock<Vec<Option<&'static Entry>>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        let max = TABLE.iter().map(|e| e.nr as usize).max().unwrap_or(0);
        let mut v = vec![None; max + 1];
        for e in TABLE {
            v[e.nr as usize] = Some(e);
        }
        v
    });
    usize::try_from(nr).ok().and_then(|i| index.get(i).copied().flatten())
}

fn decide(nr: i64, args: &[u64; 6], home_pid: Option<i32>) -> Decision {
    let Some(e) = entry(nr) else { return Decision::Home(HomeReason::Unknown(nr)) };
    match e.rule {
        Rule::Local => Decision::Local,
        Rule::Getpid => Decision::Identity(Identity::Getpid),
        Rule::Gettid => Decision::Identity(Identity::Gettid),
        Rule::ThreadExit => Decision::Identity(Identity::ThreadExit),
        Rule::SigReturn => Decision::Identity(Identity::SigReturn),
        Rule::Forward(spec) => Decision::Forward(spec),
        Rule::Home => Decision::Home(HomeReason::Call(e.name())),
        Rule::By(f) => f(args, home_pid),
    }
}

/// The class of x86_64 system call `nr` with these arguments, for a process
/// whose home pid is `home_pid`. The caller must have checked the call's
/// architecture (see [`classify_notif`]).
pub fn classify(nr: i64, args: &[u64; 6], home_pid: i32) -> Class {
    match decide(nr, args, Some(home_pid)) {
        Decision::Local => Class::Local,
        Decision::Identity(i) => Class::Identity(i),
        Decision::Forward(_) => Class::Forward,
        Decision::Home(why) => Class::Home(why),
    }
}

/// [`classify`] for a seccomp notification: a call made through another
/// architecture's entry goes home.
pub fn classify_notif(n: &Notif, home_pid: i32) -> Class {
    if n.arch != seccomp::AUDIT_ARCH_X86_64 {
        return Class::Home(HomeReason::Arch(n.arch));
    }
    classify(i64::from(n.nr), &n.args, home_pid)
}

/// The argument specification of forwarded call `nr` with these arguments;
/// `None` if it is not forwarded.
pub fn spec(nr: i64, args: &[u64; 6]) -> Option<&'static [Arg]> {
    match decide(nr, args, None) {
        Decision::Forward(spec) => Some(spec),
        _ => None,
    }
}

/// The name of system call `nr`, if the table has it.
pub fn name(nr: i64) -> Option<&'static str> {
    entry(nr).map(Entry::name)
}

/// The numbers the filter lets run without trapping: every `Local` entry.
/// `mmap` is not among them: the filter tests its flags itself.
pub fn local_syscalls() -> Vec<u32> {
    TABLE.iter().filter(|e| matches!(e.rule, Rule::Local)).map(|e| e.nr as u32).collect()
}

/// The seccomp filter of a migrated process, built from the table.
pub fn filter() -> Filter {
    seccomp::build_filter(&local_syscalls(), libc::SYS_mmap as u32)
}

/// The futex calls, which the filter of a process with memory kept at home shows the
/// guest ([`filter_with_memory_at_home`]).
pub const FUTEX_CALLS: [i64; 2] = [libc::SYS_futex, libc::SYS_futex_waitv];

/// The filter of a migrated process that maps memory kept at home: as [`filter`], but
/// its futex calls trap too, so that the guest can send the process home for one on
/// that memory (the kernel's access to a placeholder would fail the call with EFAULT;
/// a semaphore's wait interrupted by a move restarts there).
pub fn filter_with_memory_at_home() -> Filter {
    let local: Vec<u32> = local_syscalls().into_iter().filter(|&nr| !FUTEX_CALLS.contains(&i64::from(nr))).collect();
    seccomp::build_filter(&local, libc::SYS_mmap as u32)
}

/// The futex words call `nr` (futex, futex_waitv) names, read from the process for
/// futex_waitv's list; None if that list cannot be read.
pub fn futex_words(nr: i64, args: &[u64; 6], mem: &dyn MemRead) -> Option<Vec<u64>> {
    if nr == libc::SYS_futex {
        // FUTEX_REQUEUE, CMP_REQUEUE, WAKE_OP, WAIT_REQUEUE_PI, CMP_REQUEUE_PI name a second word.
        let op = (args[1] as i32) & libc::FUTEX_CMD_MASK;
        let two = [libc::FUTEX_REQUEUE, libc::FUTEX_CMP_REQUEUE, libc::FUTEX_WAKE_OP, libc::FUTEX_WAIT_REQUEUE_PI, libc::FUTEX_CMP_REQUEUE_PI].contains(&op);
        return Some(if two { vec![args[0], args[4]] } else { vec![args[0]] });
    }
    // futex_waitv(waiters, nr_futexes, ...): struct futex_waitv { u64 val, uaddr; u32 flags, reserved }.
    let n = args[1].min(128) as usize;
    let mut buf = vec![0u8; n * 24];
    mem.read(args[0], &mut buf).ok()?;
    Some(buf.chunks_exact(24).map(|w| u64::from_ne_bytes(w[8..16].try_into().expect("8 bytes"))).collect())
}

// ---------------------------------------------------------------------------
// Marshalling

/// Reads a process's memory.
pub trait MemRead {
    /// Fills `buf` from `addr`; fails (EFAULT-like) unless all of it is readable.
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

/// Writes a process's memory.
pub trait MemWrite {
    /// Writes all of `data` at `addr`.
    fn write(&self, addr: u64, data: &[u8]) -> std::io::Result<()>;
}

/// Reads and writes a process's memory (the deputy's, for [`execute`]).
pub trait MemAccess: MemRead + MemWrite {}
impl<T: MemRead + MemWrite + ?Sized> MemAccess for T {}

/// A forwarded call, as the remote node sends it home.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub nr: i64,
    /// The arguments as the process passed them, except that counts are cut
    /// to the limits (see [`Arg::Count`]); pointers are the process's.
    pub args: [u64; 6],
    /// One per buffer the call reads or writes, in the order the table's walk
    /// of the arguments meets them.
    pub bufs: Vec<Buf>,
}

/// One buffer of a forwarded call.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Buf {
    /// The argument it belongs to.
    pub arg: u8,
    /// Its address in the process on the remote node.
    pub addr: u64,
    pub len: u64,
    /// Its content (`len` bytes), or empty when the kernel only writes it.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub out: OutKind,
}

/// What comes back of a buffer.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    /// Nothing: the kernel only reads it.
    In,
    /// `min(ret, len)` bytes, when `ret >= 0`.
    Ret,
    /// All `len` bytes (whatever `ret` is).
    Whole,
    /// Part of an iovec list the kernel fills with `ret` bytes in order.
    Scatter,
    /// `min(ret * size, len)` bytes, when `ret >= 0`: `ret` items of `size` bytes.
    Items(u64),
    /// A `struct msghdr` the kernel read and updated (recvmsg): it comes back whole with
    /// the process's own pointers and the lengths and flags the kernel set.
    MsgHdr,
    /// An array of `struct mmsghdr` (sendmmsg, recvmmsg): of its first `ret` messages the
    /// lengths and flags the kernel set, `msg_len` included, come back.
    Mmsg,
}

/// The deputy's answer to a [`Call`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The raw result: a value, or a negative errno.
    pub ret: i64,
    /// Bytes to write back into the process: (its address, the bytes).
    #[serde(with = "outs_as_bytes")]
    pub outs: Vec<(u64, Vec<u8>)>,
}

/// `Reply::outs` on the wire: each buffer as one length-prefixed byte string
/// (serde's default for `Vec<u8>` is a sequence of single bytes, one call each).
mod outs_as_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(outs: &[(u64, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(outs.iter().map(|(a, d)| (a, serde_bytes::Bytes::new(d))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u64, Vec<u8>)>, D::Error> {
        let v: Vec<(u64, serde_bytes::ByteBuf)> = Deserialize::deserialize(d)?;
        Ok(v.into_iter().map(|(a, b)| (a, b.into_vec())).collect())
    }
}

/// Why a call could not be marshalled, executed or applied.
#[derive(Debug, thiserror::Error)]
pub enum MarshalError {
    #[error("system call {nr} is not forwarded")]
    NotForwarded { nr: i64 },
    #[error("argument {arg}: cannot read {len} bytes at {addr:#x}")]
    Fault { arg: u8, addr: u64, len: u64 },
    #[error("argument {arg}: path longer than {PATH_MAX} bytes")]
    PathTooLong { arg: u8 },
    #[error("argument {arg}: {len} bytes is more than the {max} allowed")]
    TooLong { arg: u8, len: u64, max: u64 },
    #[error("argument {arg}: {count} iovecs is more than {MAX_IOVECS}")]
    TooManyIovecs { arg: u8, count: u64 },
    #[error("the call's buffers need {need} bytes of scratch memory")]
    TooBig { need: u64 },
    #[error("call {nr} does not match the table: {what}")]
    BadCall { nr: i64, what: String },
    #[error("reply to call {nr} refused: {what}")]
    BadReply { nr: i64, what: String },
    #[error("cannot write {len} bytes at {addr:#x}")]
    WriteFault { addr: u64, len: u64 },
    #[error("deputy: {0}")]
    Deputy(#[source] std::io::Error),
}

impl MarshalError {
    /// The errno the process's call fails with because of this error.
    pub fn errno(&self) -> i32 {
        match self {
            MarshalError::NotForwarded { .. } => libc::ENOSYS,
            MarshalError::Fault { .. } | MarshalError::WriteFault { .. } => libc::EFAULT,
            MarshalError::PathTooLong { .. } => libc::ENAMETOOLONG,
            MarshalError::TooLong { .. } | MarshalError::TooManyIovecs { .. } => libc::EINVAL,
            MarshalError::TooBig { .. } => libc::ENOMEM,
            MarshalError::BadCall { .. } | MarshalError::BadReply { .. } => libc::EIO,
            MarshalError::Deputy(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// Where a buffer's scratch address goes on the home side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Into argument `i`.
    Arg(usize),
    /// Into an earlier buffer, at `offset` (an iovec base, pselect6's sigset pointer).
    Within { buf: usize, offset: usize },
}

struct Piece<'a> {
    arg: usize,
    addr: u64,
    len: u64,
    data: Cow<'a, [u8]>,
    out: OutKind,
    slot: Slot,
}

/// Where a walk gets the bytes of the buffers: the process's memory on the
/// remote side, the received [`Call`] on the home side. Each call of a
/// source yields exactly one buffer, so both sides produce the same list.
trait Source<'a> {
    /// The `len` bytes at `addr` (argument `arg`); empty when `!read`.
    fn bytes(&mut self, arg: usize, addr: u64, len: u64, read: bool) -> Result<Cow<'a, [u8]>, MarshalError>;
    /// The path at `addr`, with its NUL.
    fn path(&mut self, arg: usize, addr: u64) -> Result<Cow<'a, [u8]>, MarshalError>;
}

struct FromProcess<'m> {
    mem: &'m dyn MemRead,
}

impl<'a> Source<'a> for FromProcess<'_> {
    fn bytes(&mut self, arg: usize, addr: u64, len: u64, read: bool) -> Result<Cow<'a, [u8]>, MarshalError> {
        if !read {
            return Ok(Cow::Borrowed(&[]));
        }
        let mut v = vec![0u8; len as usize]; // len is within MAX_BUF (checked by the walk)
        self.mem.read(addr, &mut v).map_err(|_| MarshalError::Fault { arg: arg as u8, addr, len })?;
        Ok(Cow::Owned(v))
    }

    fn path(&mut self, arg: usize, addr: u64) -> Result<Cow<'a, [u8]>, MarshalError> {
        read_path(self.mem, arg as u8, addr).map(Cow::Owned)
    }
}

/// The NUL-terminated path at `addr` in a process's memory (argument `arg` of its
/// call), NUL included, at most [`PATH_MAX`] bytes with it. Read page by page, so that
/// a string ending just before an unmapped page reads.
pub fn read_path(mem: &dyn MemRead, arg: u8, addr: u64) -> Result<Vec<u8>, MarshalError> {
    const PAGE: u64 = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    loop {
        let room = PATH_MAX - out.len() as u64;
        if room == 0 {
            return Err(MarshalError::PathTooLong { arg });
        }
        let n = (PAGE - at % PAGE).min(room);
        let mut chunk = vec![0u8; n as usize];
        mem.read(at, &mut chunk).map_err(|_| MarshalError::Fault { arg, addr: at, len: n })?;
        if let Some(nul) = chunk.iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..=nul]);
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
        at = at.checked_add(n).ok_or(MarshalError::Fault { arg, addr: at, len: n })?;
    }
}

struct FromCall<'a> {
    nr: i64,
    bufs: &'a [Buf],
    next: usize,
}

impl<'a> FromCall<'a> {
    fn bad(&self, what: String) -> MarshalError {
        MarshalError::BadCall { nr: self.nr, what }
    }

    fn take(&mut self, arg: usize, addr: u64) -> Result<&'a Buf, MarshalError> {
        let k = self.next;
        let b = self.bufs.get(k).ok_or_else(|| self.bad(format!("buffer {k} (argument {arg}) is missing")))?;
        if usize::from(b.arg) != arg || b.addr != addr {
            return Err(self.bad(format!(
                "buffer {k} is argument {} at {:#x}, expected argument {arg} at {addr:#x}",
                b.arg, b.addr
            )));
        }
        self.next += 1;
        Ok(b)
    }
}

impl<'a> Source<'a> for FromCall<'a> {
    fn bytes(&mut self, arg: usize, addr: u64, len: u64, read: bool) -> Result<Cow<'a, [u8]>, MarshalError> {
        let b = self.take(arg, addr)?;
        let have = if read { len } else { 0 };
        if b.len != len || b.data.len() as u64 != have {
            return Err(self.bad(format!(
                "argument {arg}: buffer of {} bytes with {} bytes of data, expected {len} with {have}",
                b.len,
                b.data.len()
            )));
        }
        Ok(Cow::Borrowed(&b.data))
    }

    fn path(&mut self, arg: usize, addr: u64) -> Result<Cow<'a, [u8]>, MarshalError> {
        let b = self.take(arg, addr)?;
        let d = &b.data;
        let well_formed = b.len == d.len() as u64
            && !d.is_empty()
            && d.len() as u64 <= PATH_MAX
            && d.iter().position(|&c| c == 0) == Some(d.len() - 1);
        if !well_formed {
            return Err(self.bad(format!("argument {arg}: not a NUL-terminated path of at most {PATH_MAX} bytes")));
        }
        Ok(Cow::Borrowed(d))
    }
}

/// The buffers of one call, found by walking its arguments with the table.
struct Walk<'a> {
    args: [u64; 6],
    pieces: Vec<Piece<'a>>,
    total: u64,
}

fn u64_at(d: &[u8], off: usize) -> u64 {
    d.get(off..off + 8).map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
}

fn is_deref(a: &Arg) -> bool {
    matches!(a, Arg::InBuf(Len::DerefU32(_)) | Arg::OutRet(Len::DerefU32(_)) | Arg::OutItems(Len::DerefU32(_), _) | Arg::InOut(Len::DerefU32(_)))
}

/// Walks a call's arguments: cuts the counts, then meets every buffer in
/// argument order, except that buffers whose length is read through
/// another argument (`DerefU32`) come after all others.
fn walk<'a>(args: [u64; 6], spec: &[Arg], src: &mut dyn Source<'a>) -> Result<Walk<'a>, MarshalError> {
    let mut w = Walk { args, pieces: Vec::new(), total: 0 };
    for (i, a) in spec.iter().enumerate() {
        match a {
            Arg::Count => w.args[i] = w.args[i].min(MAX_IO),
            Arg::Nfds if i64::from(w.args[i] as i32) > MAX_SELECT_FDS as i64 => w.args[i] = MAX_SELECT_FDS,
            // A count of 0 or less stays: the kernel's EINVAL.
            Arg::Items(size) if i64::from(w.args[i] as i32) > (MAX_BUF / size) as i64 => w.args[i] = MAX_BUF / size,
            _ => {}
        }
    }
    for late in [false, true] {
        for (i, a) in spec.iter().enumerate() {
            if is_deref(a) == late {
                w.arg(i, *a, src)?;
            }
        }
    }
    Ok(w)
}

impl<'a> Walk<'a> {
    fn arg(&mut self, i: usize, a: Arg, src: &mut dyn Source<'a>) -> Result<(), MarshalError> {
        let ptr = self.args[i];
        if ptr == 0 {
            return Ok(()); // NULL (or a value): passed as it is
        }
        match a {
            Arg::Val | Arg::Count | Arg::Nfds | Arg::Items(_) => {}
            Arg::InBuf(len) => {
                let n = self.len(i, len)?;
                let d = src.bytes(i, ptr, n, true)?;
                self.push(i, ptr, n, d, OutKind::In, Slot::Arg(i))?;
            }
            Arg::OutRet(len) => {
                let n = self.len(i, len)?;
                let d = src.bytes(i, ptr, n, false)?;
                self.push(i, ptr, n, d, OutKind::Ret, Slot::Arg(i))?;
            }
            Arg::OutItems(len, size) => {
                let n = self.len(i, len)?;
                let d = src.bytes(i, ptr, n, false)?;
                self.push(i, ptr, n, d, OutKind::Items(size), Slot::Arg(i))?;
            }
            Arg::InOut(len) => {
                let n = self.len(i, len)?;
                let d = src.bytes(i, ptr, n, true)?;
                self.push(i, ptr, n, d, OutKind::Whole, Slot::Arg(i))?;
            }
            Arg::Path => {
                let d = src.path(i, ptr)?;
                self.push(i, ptr, d.len() as u64, d, OutKind::In, Slot::Arg(i))?;
            }
            Arg::IovIn { count_arg } => self.iovecs(i, ptr, count_arg, false, src)?,
            Arg::IovOut { count_arg } => self.iovecs(i, ptr, count_arg, true, src)?,
            Arg::MsgIn => self.msghdr(i, ptr, false, src)?,
            Arg::MsgOut => self.msghdr(i, ptr, true, src)?,
            Arg::MmsgIn { count_arg } => self.mmsghdrs(i, ptr, count_arg, false, src)?,
            Arg::MmsgOut { count_arg } => self.mmsghdrs(i, ptr, count_arg, true, src)?,
            Arg::SigsetPack => {
                let d = src.bytes(i, ptr, 16, true)?;
                let (ss, ss_len) = (u64_at(&d, 0), u64_at(&d, 8));
                let parent = self.pieces.len();
                self.push(i, ptr, 16, d, OutKind::In, Slot::Arg(i))?;
                // Another size is refused by the kernel before it reads the set.
                if ss != 0 && ss_len == SIGSET {
                    let set = src.bytes(i, ss, SIGSET, true)?;
                    self.push(i, ss, SIGSET, set, OutKind::In, Slot::Within { buf: parent, offset: 0 })?;
                }
            }
        }
        Ok(())
    }

    /// An iovec array and its buffers. The array is cut to [`MAX_IO`] bytes in
    /// all (fewer iovecs, the last one shorter) and its count argument
    /// rewritten; its bases are rewritten on the home side.
    fn iovecs(&mut self, i: usize, ptr: u64, count_arg: usize, out: bool, src: &mut dyn Source<'a>) -> Result<(), MarshalError> {
        self.args[count_arg] = self.iov_list(i, ptr, self.args[count_arg], if out { OutKind::Scatter } else { OutKind::In }, Slot::Arg(i), src)?;
        Ok(())
    }

    /// A `struct msghdr` (sendmsg with `!out`, recvmsg with `out`) and what it points to:
    /// the address, the iovec list (cut as for readv/writev: its count in the header is
    /// rewritten), the control messages; their pointers are rewritten on the home side.
    fn msghdr(&mut self, i: usize, ptr: u64, out: bool, src: &mut dyn Source<'a>) -> Result<(), MarshalError> {
        let raw = src.bytes(i, ptr, MSGHDR, true)?;
        let parent = self.pieces.len();
        self.push(i, ptr, MSGHDR, raw, if out { OutKind::MsgHdr } else { OutKind::In }, Slot::Arg(i))?;
        self.msg_parts(i, parent, 0, out, if out { OutKind::Scatter } else { OutKind::In }, src)
    }

    /// An array of `struct mmsghdr` (sendmmsg with `!out`, recvmmsg with `out`), cut to
    /// [`MAX_MMSG`] messages (its count argument rewritten), and what each points to.
    fn mmsghdrs(&mut self, i: usize, ptr: u64, count_arg: usize, out: bool, src: &mut dyn Source<'a>) -> Result<(), MarshalError> {
        let count = u64::from(self.args[count_arg] as u32).min(MAX_MMSG);
        self.args[count_arg] = count;
        let raw = src.bytes(i, ptr, count * MMSGHDR, true)?;
        let parent = self.pieces.len();
        self.push(i, ptr, count * MMSGHDR, raw, OutKind::Mmsg, Slot::Arg(i))?;
        for k in 0..count as usize {
            self.msg_parts(i, parent, k * MMSGHDR as usize, out, if out { OutKind::Whole } else { OutKind::In }, src)?;
        }
        Ok(())
    }

    /// What the `struct msghdr` at `base` of piece `parent` points to: the address, the
    /// iovec list (its buffers `iov_kind`; cut as for readv/writev, its count in the header
    /// rewritten), the control messages. Read by the kernel, or (`out`) filled by it.
    fn msg_parts(&mut self, i: usize, parent: usize, base: usize, out: bool, iov_kind: OutKind, src: &mut dyn Source<'a>) -> Result<(), MarshalError> {
        let h = &self.pieces[parent].data[base..base + MSGHDR as usize];
        let (name, namelen, iov, iovlen, control, controllen) = (u64_at(h, 0), u64_at(h, 8) & 0xffff_ffff, u64_at(h, 16), u64_at(h, 24), u64_at(h, 32), u64_at(h, 40));
        let kind = if out { OutKind::Whole } else { OutKind::In };
        if name != 0 && namelen > 0 {
            let n = self.len(i, Len::Fixed(namelen))?;
            let d = src.bytes(i, name, n, true)?;
            self.push(i, name, n, d, kind, Slot::Within { buf: parent, offset: base })?;
        }
        if iov != 0 {
            let kept = self.iov_list(i, iov, iovlen, iov_kind, Slot::Within { buf: parent, offset: base + 16 }, src)?;
            if kept != iovlen {
                self.pieces[parent].data.to_mut()[base + 24..base + 32].copy_from_slice(&kept.to_ne_bytes());
            }
        }
        if control != 0 && controllen > 0 {
            let n = self.len(i, Len::Fixed(controllen))?;
            let d = src.bytes(i, control, n, true)?;
            self.push(i, control, n, d, kind, Slot::Within { buf: parent, offset: base + 32 })?;
        }
        Ok(())
    }

    /// An iovec array of `count` at `ptr` (its own pointer goes into `slot`) and its
    /// buffers (`kind`: In, Scatter or Whole), cut to [`MAX_IO`] bytes in all; returns how
    /// many iovecs are kept.
    fn iov_list(&mut self, i: usize, ptr: u64, count: u64, kind: OutKind, slot: Slot, src: &mut dyn Source<'a>) -> Result<u64, MarshalError> {
        if count > MAX_IOVECS {
            return Err(MarshalError::TooManyIovecs { arg: i as u8, count });
        }
        let raw = src.bytes(i, ptr, count * IOVEC, true)?;
        let iovs: Vec<(u64, u64)> = raw.chunks_exact(IOVEC as usize).map(|c| (u64_at(c, 0), u64_at(c, 8))).collect();
        // As the kernel: a length that does not fit an ssize_t, or a total
        // that overflows one, is EINVAL.
        let mut sum: i64 = 0;
        for &(_, len) in &iovs {
            sum = i64::try_from(len)
                .ok()
                .and_then(|l| sum.checked_add(l))
                .ok_or(MarshalError::TooLong { arg: i as u8, len, max: MAX_IO })?;
        }
        let mut kept = Vec::with_capacity(iovs.len());
        let mut total = 0u64;
        for (base, len) in iovs {
            if total == MAX_IO {
                break;
            }
            let l = len.min(MAX_IO - total);
            total += l;
            kept.push((base, l));
        }
        let mut array = Vec::with_capacity(kept.len() * IOVEC as usize);
        for &(base, len) in &kept {
            array.extend_from_slice(&base.to_ne_bytes());
            array.extend_from_slice(&len.to_ne_bytes());
        }
        let n_kept = kept.len() as u64;
        let array = if array.as_slice() == raw.as_ref() { raw } else { Cow::Owned(array) };
        let parent = self.pieces.len();
        self.push(i, ptr, n_kept * IOVEC, array, OutKind::In, slot)?;
        for (k, (base, len)) in kept.into_iter().enumerate() {
            if base == 0 {
                continue; // stays NULL: the kernel faults on it at home, as here
            }
            let d = src.bytes(i, base, len, kind != OutKind::Scatter)?;
            self.push(i, base, len, d, kind, Slot::Within { buf: parent, offset: k * IOVEC as usize })?;
        }
        Ok(n_kept)
    }

    fn len(&self, arg: usize, len: Len) -> Result<u64, MarshalError> {
        let n = match len {
            Len::Size(j) => self.args[j],
            Len::Size32(j) => u64::from(self.args[j] as u32),
            Len::Fixed(n) => n,
            Len::Times(j, size) => u64::from(self.args[j] as u32) * size,
            Len::FdSet(j) => match self.args[j] as i32 {
                n if n <= 0 => 0,
                n => (n as u64).div_ceil(64) * 8,
            },
            Len::DerefU32(j) => self
                .pieces
                .iter()
                .find(|p| p.slot == Slot::Arg(j))
                .and_then(|p| p.data.get(..4))
                .map_or(0, |b| u64::from(u32::from_ne_bytes(b.try_into().expect("4 bytes")))),
        };
        if n > MAX_BUF {
            return Err(MarshalError::TooLong { arg: arg as u8, len: n, max: MAX_BUF });
        }
        Ok(n)
    }

    fn push(&mut self, arg: usize, addr: u64, len: u64, data: Cow<'a, [u8]>, out: OutKind, slot: Slot) -> Result<(), MarshalError> {
        self.total += len;
        if self.total > MAX_CALL {
            return Err(MarshalError::TooLong { arg: arg as u8, len: self.total, max: MAX_CALL });
        }
        self.pieces.push(Piece { arg, addr, len, data, out, slot });
        Ok(())
    }
}

/// Remote side: describes trapped call `nr` for the deputy, reading its input
/// buffers from the process. An error is the call's failure: answer it with
/// `-err.errno()` (EFAULT for an unreadable buffer, as the kernel would).
pub fn marshal(nr: i64, args: [u64; 6], mem: &dyn MemRead) -> Result<Call, MarshalError> {
    let spec = spec(nr, &args).ok_or(MarshalError::NotForwarded { nr })?;
    let w = walk(args, spec, &mut FromProcess { mem })?;
    let bufs = w
        .pieces
        .into_iter()
        .map(|p| Buf { arg: p.arg as u8, addr: p.addr, len: p.len, data: p.data.into_owned(), out: p.out })
        .collect();
    Ok(Call { nr, args: w.args, bufs })
}

/// Whether call `nr` is an epoll wait with a sigmask of its own (which ends with a plain
/// EINTR, no restart code, when a signal the mask lets in comes).
pub fn is_masked_epoll_wait(nr: i64, args: &[u64; 6]) -> bool {
    matches!(nr, libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2) && args[4] != 0
}

/// Whether forwarded call `nr` with `args` never waits (on a local file system): a signal
/// does not interrupt it at home — it completes, and the handler runs after it — so a
/// signal that crosses it is held until its answer, not let cut it (a shell's `cd` right
/// after a child ended: dash's SIGCHLD handler has no SA_RESTART, and a cut `chdir` would
/// fail with EINTR, which it never does at home).
pub fn never_waits(nr: i64, args: &[u64; 6]) -> bool {
    match nr {
        libc::SYS_fcntl => [libc::F_GETFD, libc::F_SETFD, libc::F_GETFL, libc::F_SETFL, libc::F_DUPFD, libc::F_DUPFD_CLOEXEC].contains(&(args[1] as i32)),
        libc::SYS_chdir | libc::SYS_fchdir | libc::SYS_getcwd | libc::SYS_umask | libc::SYS_mkdir | libc::SYS_mkdirat | libc::SYS_rmdir
        | libc::SYS_unlink | libc::SYS_unlinkat | libc::SYS_rename | libc::SYS_renameat | libc::SYS_renameat2 | libc::SYS_link
        | libc::SYS_linkat | libc::SYS_symlink | libc::SYS_symlinkat | libc::SYS_chmod | libc::SYS_fchmod | libc::SYS_fchmodat
        | libc::SYS_chown | libc::SYS_fchown | libc::SYS_lchown | libc::SYS_fchownat | libc::SYS_stat | libc::SYS_lstat
        | libc::SYS_fstat | libc::SYS_newfstatat | libc::SYS_statx | libc::SYS_statfs | libc::SYS_fstatfs | libc::SYS_access
        | libc::SYS_faccessat | libc::SYS_faccessat2 | libc::SYS_readlink | libc::SYS_readlinkat | libc::SYS_lseek | libc::SYS_dup
        | libc::SYS_dup2 | libc::SYS_dup3 | libc::SYS_getppid | libc::SYS_getdents64 | libc::SYS_pipe | libc::SYS_pipe2
        | libc::SYS_truncate | libc::SYS_ftruncate | libc::SYS_utimensat => true,
        _ => false,
    }
}

/// Whether set-id call `nr` with `args` (setuid, setreuid, setresuid and their gid
/// twins) changes nothing for a thread whose ids — real, effective, saved and file-system:
/// the `Uid:` or `Gid:` line of its /proc status, `status` — are all one value: each
/// argument is -1 or that value. The kernel answers such a call 0 (glibc's posix_spawn
/// child makes one, `seteuid(getuid())`, for POSIX_SPAWN_RESETIDS: GNU make's jobs).
pub fn setid_changes_nothing(nr: i64, args: &[u64; 6], status: &str) -> bool {
    let (key, n) = match nr {
        libc::SYS_setuid => ("Uid:", 1),
        libc::SYS_setreuid => ("Uid:", 2),
        libc::SYS_setresuid => ("Uid:", 3),
        libc::SYS_setgid => ("Gid:", 1),
        libc::SYS_setregid => ("Gid:", 2),
        libc::SYS_setresgid => ("Gid:", 3),
        _ => return false,
    };
    let Some(ids) = status.lines().find_map(|l| l.strip_prefix(key)) else { return false };
    let ids: Vec<u32> = ids.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let [one, ..] = ids[..] else { return false };
    ids.len() == 4 && ids.iter().all(|&i| i == one) && args[..n].iter().all(|&a| a as u32 == u32::MAX || a as u32 == one)
}

/// The signal mask that wait `nr` (pselect6, ppoll, epoll_pwait, epoll_pwait2)
/// swaps in for its duration, read from the process; None for other calls, a
/// wait without one (a null pointer), or a mask that cannot be read (the call
/// fails at home with EFAULT or EINVAL, as it would here).
pub fn wait_mask(nr: i64, args: &[u64; 6], mem: &dyn MemRead) -> Option<u64> {
    let word = |addr: u64| {
        let mut b = [0u8; 8];
        mem.read(addr, &mut b).ok().map(|()| u64::from_ne_bytes(b))
    };
    let (set, size) = match nr {
        // A pointer to { const sigset_t *ss; size_t ss_len }.
        libc::SYS_pselect6 if args[5] != 0 => (word(args[5])?, word(args[5] + 8)?),
        libc::SYS_ppoll => (args[3], args[4]),
        libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 => (args[4], args[5]),
        _ => return None,
    };
    if set == 0 || size != 8 {
        return None;
    }
    word(set)
}

pub(crate) fn align8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// Home side: runs a received call in the deputy.
///
/// `scratch_addr` is a region of `scratch_len` bytes inside the deputy that
/// `mem` reads and writes; `syscall(nr, args)` injects the call there and
/// returns its raw result (a negative errno on failure). Every buffer is
/// placed in scratch (8-byte aligned), the pointer arguments (and iovec
/// bases, pselect6's sigset pointer) are rewritten to their copies, and the
/// reply carries back what the kernel wrote. The call is first checked
/// against the table exactly as [`marshal`] built it (same buffers, lengths
/// and limits); anything else is [`MarshalError::BadCall`]. When the buffers
/// do not fit, [`MarshalError::TooBig`] says how much scratch they need:
/// grow it and call again (nothing has run).
pub fn execute(
    call: &Call,
    scratch_addr: u64,
    scratch_len: u64,
    mem: &dyn MemAccess,
    syscall: &mut dyn FnMut(i64, [u64; 6]) -> std::io::Result<i64>,
) -> Result<Reply, MarshalError> {
    let nr = call.nr;
    let spec = spec(nr, &call.args).ok_or(MarshalError::NotForwarded { nr })?;
    let w = walk(call.args, spec, &mut FromCall { nr, bufs: &call.bufs, next: 0 })?;
    let bad = |what: String| MarshalError::BadCall { nr, what };
    if w.args != call.args {
        return Err(bad(format!("arguments {:x?}, the table makes them {:x?}", call.args, w.args)));
    }
    if w.pieces.len() != call.bufs.len() {
        return Err(bad(format!("{} buffers, the arguments describe {}", call.bufs.len(), w.pieces.len())));
    }
    for (k, (p, b)) in w.pieces.iter().zip(&call.bufs).enumerate() {
        // Most data is the received buffer itself (borrowed): no need to compare it.
        let same_data = std::ptr::eq(p.data.as_ref(), b.data.as_slice()) || p.data.as_ref() == b.data.as_slice();
        if usize::from(b.arg) != p.arg || b.addr != p.addr || b.len != p.len || b.out != p.out || !same_data {
            return Err(bad(format!("buffer {k} (argument {}) differs from what its arguments describe", b.arg)));
        }
    }

    let mut offsets = Vec::with_capacity(w.pieces.len());
    let mut need = 0u64;
    for p in &w.pieces {
        offsets.push(need);
        need += align8(p.len);
    }
    if need > scratch_len {
        return Err(MarshalError::TooBig { need });
    }
    let at = |k: usize| scratch_addr + offsets[k];

    let mut args = w.args;
    let mut data: Vec<Cow<[u8]>> = w.pieces.iter().map(|p| p.data.clone()).collect();
    for (k, p) in w.pieces.iter().enumerate() {
        match p.slot {
            Slot::Arg(i) => args[i] = at(k),
            // A piece only points into a piece met before it, which is
            // longer than offset + 8 (an iovec array, pselect6's pair).
            Slot::Within { buf, offset } => data[buf].to_mut()[offset..offset + 8].copy_from_slice(&at(k).to_ne_bytes()),
        }
    }
    for (k, p) in w.pieces.iter().enumerate() {
        if matches!(p.out, OutKind::In | OutKind::Whole | OutKind::MsgHdr | OutKind::Mmsg) && p.len > 0 {
            mem.write(at(k), &data[k]).map_err(MarshalError::Deputy)?;
        }
    }

    let ret = syscall(nr, args).map_err(MarshalError::Deputy)?;

    let mut outs = Vec::new();
    let mut left = u64::try_from(ret).unwrap_or(0); // bytes of an iovec list still to hand out
    for (k, p) in w.pieces.iter().enumerate() {
        let n = match p.out {
            OutKind::In => 0,
            OutKind::Whole => p.len,
            OutKind::Ret if ret >= 0 => p.len.min(ret as u64),
            OutKind::Ret => 0,
            OutKind::Items(size) if ret >= 0 => p.len.min((ret as u64).saturating_mul(size)),
            OutKind::Items(_) => 0,
            OutKind::Scatter => {
                let n = p.len.min(left);
                left -= n;
                n
            }
            OutKind::MsgHdr | OutKind::Mmsg => {
                // The process's own headers, with what the kernel set (the pointers in
                // scratch are home's).
                let mut set = vec![0u8; p.len as usize];
                mem.read(at(k), &mut set).map_err(MarshalError::Deputy)?;
                let mut v = p.data.to_vec();
                for (from, to) in header_sets(p.out, p.len, ret) {
                    v[from..to].copy_from_slice(&set[from..to]);
                }
                outs.push((p.addr, v));
                0
            }
        };
        if n > 0 {
            let mut v = vec![0u8; n as usize];
            mem.read(at(k), &mut v).map_err(MarshalError::Deputy)?;
            outs.push((p.addr, v));
        }
    }
    Ok(Reply { ret, outs })
}

/// The byte ranges of a `struct msghdr` (`MsgHdr`) or of an array of `struct mmsghdr`
/// (`Mmsg`, `len` bytes, of which the first `ret` messages) that the kernel sets.
fn header_sets(kind: OutKind, len: u64, ret: i64) -> Vec<(usize, usize)> {
    match kind {
        OutKind::MsgHdr => MSGHDR_SET.to_vec(),
        _ => {
            let n = (len / MMSGHDR).min(u64::try_from(ret).unwrap_or(0)) as usize;
            let size = MMSGHDR as usize;
            (0..n).flat_map(|m| MSGHDR_SET.iter().chain(&[(56, 60)]).map(move |&(f, t)| (m * size + f, m * size + t))).collect()
        }
    }
}

/// Remote side: writes a reply's outputs into the process and returns the
/// call's result. Every output must be one of the buffers `call` (as
/// [`marshal`] built it) lets the kernel write, within its length (for
/// `Ret`/`Scatter` buffers, within `ret`); otherwise nothing is written and
/// the reply is refused.
pub fn apply(call: &Call, reply: &Reply, mem: &dyn MemWrite) -> Result<i64, MarshalError> {
    let ret = reply.ret;
    let refuse = |what: String| MarshalError::BadReply { nr: call.nr, what };
    let mut used = vec![false; call.bufs.len()];
    let mut kinds = Vec::new();
    let mut scattered = 0u64;
    let written = u64::try_from(ret).ok();
    for (addr, data) in &reply.outs {
        let n = data.len() as u64;
        let k = (0..call.bufs.len())
            .find(|&k| !used[k] && call.bufs[k].out != OutKind::In && call.bufs[k].addr == *addr)
            .ok_or_else(|| refuse(format!("{n} bytes for {addr:#x}, which is no output buffer of the call")))?;
        used[k] = true;
        let b = &call.bufs[k];
        kinds.push(b.out);
        let fits = match (b.out, written) {
            (OutKind::Whole, _) => n == b.len,
            // Their pointers must be the process's own, as sent.
            (OutKind::MsgHdr | OutKind::Mmsg, _) => {
                let size = if b.out == OutKind::Mmsg { MMSGHDR as usize } else { MSGHDR as usize };
                n == b.len && (0..b.len as usize / size).all(|m| MSGHDR_POINTERS.iter().all(|&(f, t)| data.get(m * size + f..m * size + t) == b.data.get(m * size + f..m * size + t)))
            }
            (OutKind::Ret, Some(w)) => n <= b.len.min(w),
            (OutKind::Items(size), Some(w)) => n <= b.len.min(w.saturating_mul(size)),
            (OutKind::Scatter, Some(w)) => {
                scattered += n;
                n <= b.len && scattered <= w
            }
            _ => false,
        };
        if !fits {
            return Err(refuse(format!("{n} bytes for the {}-byte buffer at {addr:#x} (argument {}), result {ret}", b.len, b.arg)));
        }
    }
    for ((addr, data), kind) in reply.outs.iter().zip(kinds) {
        // Of a msghdr only what the kernel sets (its iovec count may have been cut on the
        // way).
        let parts = match kind {
            OutKind::MsgHdr | OutKind::Mmsg => header_sets(kind, data.len() as u64, ret),
            _ => vec![(0, data.len())],
        };
        for (from, to) in parts {
            let at = *addr + from as u64;
            mem.write(at, &data[from..to]).map_err(|_| MarshalError::WriteFault { addr: at, len: (to - from) as u64 })?;
        }
    }
    Ok(ret)
}


#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    const HOME: i32 = 4242;
    const SCRATCH: u64 = 0x7f00_0000_0000;
    const SCRATCH_LEN: u64 = 1 << 20;

    /// Sparse memory of whole 4 KiB pages; everything else faults.
    #[derive(Default)]
    struct FakeMem {
        pages: RefCell<std::collections::BTreeMap<u64, Vec<u8>>>,
    }

    impl FakeMem {
        /// Maps the pages `[addr, addr + data.len())` touches (zero-filled) and writes `data`.
        fn map(&self, addr: u64, data: &[u8]) {
            let mut pages = self.pages.borrow_mut();
            let mut p = addr / 4096;
            while p * 4096 < addr + data.len() as u64 {
                pages.entry(p).or_insert_with(|| vec![0; 4096]);
                p += 1;
            }
            drop(pages);
            self.write(addr, data).unwrap();
        }

        fn get(&self, addr: u64, len: usize) -> Vec<u8> {
            let mut v = vec![0; len];
            self.read(addr, &mut v).expect("mapped");
            v
        }

        fn snapshot(&self) -> Vec<(u64, Vec<u8>)> {
            self.pages.borrow().iter().map(|(k, v)| (*k, v.clone())).collect()
        }

        /// Calls `f(page bytes, offset in buf)` for each page piece of the range.
        fn each(&self, addr: u64, len: usize, mut f: impl FnMut(&mut [u8], usize)) -> std::io::Result<()> {
            let fault = || std::io::Error::from_raw_os_error(libc::EFAULT);
            addr.checked_add(len as u64).ok_or_else(fault)?;
            let mut pages = self.pages.borrow_mut();
            // Check first: nothing is copied unless all of it is mapped.
            let mut p = addr / 4096;
            while p * 4096 < addr + len as u64 {
                pages.get(&p).ok_or_else(fault)?;
                p += 1;
            }
            let mut done = 0;
            while done < len {
                let at = addr + done as u64;
                let page = pages.get_mut(&(at / 4096)).expect("checked");
                let off = (at % 4096) as usize;
                let n = (4096 - off).min(len - done);
                f(&mut page[off..off + n], done);
                done += n;
            }
            Ok(())
        }
    }

    impl MemRead for FakeMem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
            self.each(addr, buf.len(), |m, at| buf[at..at + m.len()].copy_from_slice(m))
        }
    }

    impl MemWrite for FakeMem {
        fn write(&self, addr: u64, data: &[u8]) -> std::io::Result<()> {
            self.each(addr, data.len(), |m, at| m.copy_from_slice(&data[at..at + m.len()]))
        }
    }

    fn deputy() -> FakeMem {
        let d = FakeMem::default();
        d.map(SCRATCH, &vec![0x5a; SCRATCH_LEN as usize]);
        d
    }

    fn in_scratch(addr: u64) -> bool {
        (SCRATCH..SCRATCH + SCRATCH_LEN).contains(&addr)
    }

    fn wire<T: Serialize + for<'de> Deserialize<'de>>(t: &T) -> T {
        postcard::from_bytes(&postcard::to_allocvec(t).unwrap()).unwrap()
    }

    /// marshal → (wire) → execute with `kernel` as the deputy's kernel → (wire) → apply.
    fn forward(nr: libc::c_long, args: [u64; 6], proc_mem: &FakeMem, kernel: impl Fn(&FakeMem, [u64; 6]) -> i64) -> (Call, i64) {
        let call = wire(&marshal(nr, args, proc_mem).unwrap());
        let dep = deputy();
        let reply = execute(&call, SCRATCH, SCRATCH_LEN, &dep, &mut |n, a| {
            assert_eq!(n, nr);
            Ok(kernel(&dep, a))
        })
        .unwrap();
        let ret = apply(&call, &wire(&reply), proc_mem).unwrap();
        (call, ret)
    }

    fn c_string(m: &FakeMem, addr: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = m.get(addr + out.len() as u64, 1)[0];
            if b == 0 {
                return out;
            }
            out.push(b);
        }
    }

    fn args(a: &[u64]) -> [u64; 6] {
        let mut out = [0; 6];
        out[..a.len()].copy_from_slice(a);
        out
    }

    // ---- the table ----

    #[test]
    fn classify_cases() {
        use Class::*;
        let c = |nr: libc::c_long, a: &[u64]| classify(nr, &args(a), HOME);
        let home = HOME as u64;
        assert_eq!(c(libc::SYS_getpid, &[]), Identity(super::Identity::Getpid));
        assert_eq!(c(libc::SYS_gettid, &[]), Identity(super::Identity::Gettid));
        assert_eq!(c(libc::SYS_exit, &[0]), Identity(super::Identity::ThreadExit));
        assert_eq!(c(libc::SYS_rt_sigreturn, &[0; 6]), Identity(super::Identity::SigReturn));
        assert_eq!(c(libc::SYS_kill, &[home, 15]), Identity(super::Identity::SignalSelf { sig: 15 }));
        assert_eq!(c(libc::SYS_kill, &[home, 0]), Identity(super::Identity::SignalSelf { sig: 0 }));
        // Only the low 32 bits of a pid_t count.
        assert_eq!(c(libc::SYS_kill, &[home | 1 << 32, 9]), Identity(super::Identity::SignalSelf { sig: 9 }));
        assert_eq!(c(libc::SYS_kill, &[home + 1, 15]), Forward);
        assert_eq!(c(libc::SYS_kill, &[0, 15]), Forward, "process group");
        assert_eq!(c(libc::SYS_kill, &[u64::MAX, 15]), Forward, "everyone");
        assert_eq!(c(libc::SYS_tkill, &[home, 10]), Identity(super::Identity::SignalSelf { sig: 10 }));
        assert_eq!(c(libc::SYS_tkill, &[7, 10]), Forward);
        assert_eq!(c(libc::SYS_tgkill, &[home, home, 12]), Identity(super::Identity::SignalSelf { sig: 12 }));
        assert_eq!(c(libc::SYS_tgkill, &[home, 7, 12]), Forward);
        let anon = (libc::MAP_ANONYMOUS | libc::MAP_PRIVATE) as u64;
        assert_eq!(c(libc::SYS_mmap, &[0, 4096, 3, anon, u64::MAX, 0]), Local);
        assert_eq!(c(libc::SYS_mmap, &[0, 4096, 1, libc::MAP_PRIVATE as u64, 3, 0]), Home(HomeReason::Call("mmap of a file")));
        assert_eq!(c(libc::SYS_ioctl, &[0, libc::TCGETS, 0x1000]), Forward);
        assert_eq!(c(libc::SYS_ioctl, &[0, libc::TCGETS | 1 << 32, 0x1000]), Forward, "cmd is an unsigned int");
        assert_eq!(c(libc::SYS_ioctl, &[0, libc::TIOCSTI, 0x1000]), Home(HomeReason::Ioctl(0x5412)));
        assert_eq!(c(libc::SYS_fcntl, &[3, libc::F_GETFL as u64]), Forward);
        assert_eq!(c(libc::SYS_fcntl, &[3, libc::F_OFD_SETLKW as u64, 0x1000]), Forward);
        assert_eq!(c(libc::SYS_fcntl, &[3, libc::F_SETOWN as u64, 1]), Home(HomeReason::Fcntl(8)));
        assert_eq!(c(libc::SYS_recvfrom, &[3, 0x1000, 10, 0]), Forward);
        assert!(matches!(c(libc::SYS_recvfrom, &[3, 0x1000, 10, libc::MSG_TRUNC as u64]), Home(_)));
        assert_eq!(c(libc::SYS_setsockopt, &[3, libc::SOL_SOCKET as u64, libc::SO_REUSEADDR as u64, 0x1000, 4]), Forward);
        assert!(matches!(c(libc::SYS_setsockopt, &[3, libc::SOL_SOCKET as u64, 26, 0x1000, 16]), Home(_)));
        for (nr, fwd) in [(libc::SYS_read, true), (libc::SYS_openat, true), (libc::SYS_wait4, true), (libc::SYS_getppid, true), (libc::SYS_pselect6, true)] {
            assert_eq!(c(nr, &[]) == Forward, fwd, "{nr}");
        }
        for nr in [libc::SYS_futex, libc::SYS_brk, libc::SYS_rt_sigprocmask, libc::SYS_exit_group, libc::SYS_nanosleep, libc::SYS_prlimit64] {
            assert_eq!(c(nr, &[]), Local, "{nr}");
        }
        assert_eq!(c(libc::SYS_fork, &[]).to_string_home(), "fork");
        assert_eq!(c(libc::SYS_execve, &[]).to_string_home(), "execve");
        assert_eq!(c(libc::SYS_personality, &[]).to_string_home(), "personality");
        assert_eq!(c(libc::SYS_signalfd4, &[]).to_string_home(), "signalfd4");
        assert_eq!(c(libc::SYS_eventfd2, &[]), Forward);
        assert_eq!(c(333, &[]).to_string_home(), "unknown system call 333");
        assert_eq!(c(-1, &[]).to_string_home(), "unknown system call -1");
        assert_eq!(c(1 << 40, &[]).to_string_home(), format!("unknown system call {}", 1u64 << 40));
        assert_eq!(c(libc::SYS_ioctl, &[0, 0x1234]).to_string_home(), "ioctl 0x1234");
        let n = Notif { id: 1, pid: 1, nr: 20, arch: 0x4000_0003, ip: 0, args: [0; 6] };
        assert_eq!(classify_notif(&n, HOME), Home(HomeReason::Arch(0x4000_0003)));
        let n = Notif { arch: seccomp::AUDIT_ARCH_X86_64, nr: libc::SYS_getpid as i32, ..n };
        assert_eq!(classify_notif(&n, HOME), Identity(super::Identity::Getpid));
        assert_eq!(name(libc::SYS_openat), Some("openat"));
        assert_eq!(name(333), None);
    }

    impl Class {
        fn to_string_home(self) -> String {
            match self {
                Class::Home(why) => why.to_string(),
                other => panic!("{other:?} is not Home"),
            }
        }
    }

    #[test]
    fn local_syscalls_match_classify() {
        let local = local_syscalls();
        assert!(!local.contains(&(libc::SYS_mmap as u32)));
        for nr in 0..1024i64 {
            let is_local = classify(nr, &[0; 6], HOME) == Class::Local;
            assert_eq!(is_local, local.contains(&(nr as u32)), "nr {nr} ({:?})", name(nr));
        }
    }

    #[test]
    fn filter_agrees_with_the_table() {
        let f = filter();
        assert!(f.len() <= seccomp::BPF_MAXINSNS);
        for (pc, i) in f.insns.iter().enumerate() {
            // Conditional jumps stay inside the program (u8 offsets).
            if i.code & 0x07 == 0x05 && i.code != 0x05 {
                assert!(pc + 1 + usize::from(i.jt.max(i.jf)) < f.len());
            }
        }
        let anon = libc::MAP_ANONYMOUS as u64;
        for a in [[0u64; 6], [0, 0, 0, anon, 0, 0], [u64::MAX; 6]] {
            for nr in 0..1024i32 {
                let allowed = f.evaluate(seccomp::AUDIT_ARCH_X86_64, nr, 0, &a) == Some(libc::SECCOMP_RET_ALLOW);
                let local = classify(i64::from(nr), &a, HOME) == Class::Local;
                assert_eq!(allowed, local, "nr {nr} ({:?}) args {a:x?}", name(i64::from(nr)));
                let x32 = f.evaluate(seccomp::AUDIT_ARCH_X86_64, nr | 0x4000_0000, 0, &a);
                assert_eq!(x32, Some(libc::SECCOMP_RET_USER_NOTIF));
            }
        }
    }

    #[test]
    fn futex_calls_trap_only_with_memory_at_home() {
        let (plain, at_home) = (filter(), filter_with_memory_at_home());
        let notif = |f: &Filter, nr: i64| f.evaluate(seccomp::AUDIT_ARCH_X86_64, nr as i32, 0, &[0; 6]) == Some(libc::SECCOMP_RET_USER_NOTIF);
        for nr in FUTEX_CALLS {
            assert!(!notif(&plain, nr) && notif(&at_home, nr), "{nr}");
        }
        for nr in [libc::SYS_brk, libc::SYS_nanosleep, libc::SYS_rt_sigprocmask] {
            assert!(!notif(&at_home, nr), "{nr} still runs here");
        }
        // The words each names: one, two for a requeue, each of a futex_waitv list.
        let mem = FakeMem::default();
        let a = |v: &[u64]| args(v);
        assert_eq!(futex_words(libc::SYS_futex, &a(&[0x1000, (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as u64, 1]), &mem), Some(vec![0x1000]));
        assert_eq!(futex_words(libc::SYS_futex, &a(&[0x1000, libc::FUTEX_CMP_REQUEUE as u64, 1, 1, 0x2000, 0]), &mem), Some(vec![0x1000, 0x2000]));
        let mut list = Vec::new();
        for w in [0x3000u64, 0x4008] {
            list.extend(7u64.to_ne_bytes());
            list.extend(w.to_ne_bytes());
            list.extend([0u8; 8]);
        }
        mem.map(0x9000, &list);
        assert_eq!(futex_words(libc::SYS_futex_waitv, &a(&[0x9000, 2]), &mem), Some(vec![0x3000, 0x4008]));
        assert_eq!(futex_words(libc::SYS_futex_waitv, &a(&[0x7000, 2]), &mem), None, "an unreadable list");
    }

    /// Every specification the table can produce.
    fn all_specs() -> Vec<(String, &'static [Arg])> {
        let mut out = Vec::new();
        for e in TABLE {
            match e.rule {
                Rule::Forward(s) => out.push((e.name().to_string(), s)),
                Rule::By(f) => {
                    if let Decision::Forward(s) = f(&[0; 6], None) {
                        out.push((e.name().to_string(), s));
                    }
                }
                _ => {}
            }
        }
        out.extend(IOCTLS.iter().map(|(r, s)| (format!("ioctl {r:#x}"), *s)));
        out.extend(FCNTLS.iter().map(|(c, s)| (format!("fcntl {c}"), *s)));
        out
    }

    #[test]
    fn table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for e in TABLE {
            assert!(seen.insert(e.nr), "{} twice", e.sym);
            assert!(e.sym.starts_with("SYS_"));
        }
        for (what, spec) in all_specs() {
            assert!(spec.len() <= 6, "{what}");
            let value = |j: usize| matches!(spec.get(j), Some(Arg::Val | Arg::Count | Arg::Nfds | Arg::Items(_)));
            let mut iovs = 0;
            for a in spec {
                let len = match a {
                    Arg::InBuf(l) | Arg::OutRet(l) | Arg::InOut(l) => Some(*l),
                    Arg::OutItems(l, size) => {
                        let Len::Times(j, each) = l else { panic!("{what}: items not counted") };
                        assert_eq!((spec.get(*j), each), (Some(&Arg::Items(*size)), size), "{what}");
                        Some(*l)
                    }
                    Arg::IovIn { count_arg } | Arg::IovOut { count_arg } => {
                        iovs += 1;
                        assert_eq!(spec.get(*count_arg), Some(&Arg::Val), "{what}");
                        None
                    }
                    _ => None,
                };
                match len {
                    Some(Len::Size(j) | Len::Size32(j) | Len::Times(j, _) | Len::FdSet(j)) => assert!(value(j), "{what}"),
                    Some(Len::DerefU32(j)) => assert_eq!(spec.get(j), Some(&Arg::InOut(Len::Fixed(4))), "{what}"),
                    Some(Len::Fixed(n)) => assert!(n > 0 && n <= 4096, "{what}"),
                    None => {}
                }
            }
            assert!(iovs <= 1, "{what}");
        }
    }

    #[test]
    fn structure_sizes() {
        use std::mem::size_of;
        assert_eq!(size_of::<libc::stat>() as u64, STAT);
        assert_eq!(size_of::<libc::statx>() as u64, STATX);
        assert_eq!(size_of::<libc::statfs>() as u64, STATFS);
        assert_eq!(size_of::<libc::utsname>() as u64, UTSNAME);
        assert_eq!(size_of::<libc::sysinfo>() as u64, SYSINFO);
        assert_eq!(size_of::<libc::timespec>() as u64, TIMESPEC);
        assert_eq!(size_of::<libc::timeval>() as u64, TIMEVAL);
        assert_eq!(size_of::<libc::pollfd>() as u64, POLLFD);
        assert_eq!(size_of::<libc::winsize>() as u64, WINSIZE);
        assert_eq!(size_of::<libc::flock>() as u64, FLOCK);
        assert_eq!(size_of::<libc::rusage>() as u64, RUSAGE);
        assert_eq!(size_of::<libc::siginfo_t>() as u64, SIGINFO);
        assert_eq!(size_of::<libc::iovec>() as u64, IOVEC);
        assert_eq!(size_of::<libc::epoll_event>() as u64, EPOLL_EVENT);
        // The kernel's termios: 4 flags, c_line, NCCS = 19 control characters.
        assert_eq!(4 * 4 + 1 + 19, TERMIOS);
    }

    // ---- marshalling round trips ----

    #[test]
    fn read_returns_only_what_was_read() {
        let p = FakeMem::default();
        p.map(0x1000, &[0xaa; 64]);
        let (call, ret) = forward(libc::SYS_read, args(&[3, 0x1000, 64]), &p, |dep, a| {
            assert_eq!((a[0], a[2]), (3, 64));
            assert!(in_scratch(a[1]));
            dep.write(a[1], b"hello").unwrap();
            5
        });
        assert_eq!(call.bufs.len(), 1);
        assert!(call.bufs[0].data.is_empty(), "nothing is sent for an output buffer");
        assert_eq!(ret, 5);
        assert_eq!(&p.get(0x1000, 7), b"hello\xaa\xaa");
    }

    #[test]
    fn failed_read_writes_nothing() {
        let p = FakeMem::default();
        p.map(0x1000, &[0xaa; 16]);
        let (_, ret) = forward(libc::SYS_read, args(&[3, 0x1000, 16]), &p, |_, _| -(libc::EBADF as i64));
        assert_eq!(ret, -(libc::EBADF as i64));
        assert_eq!(p.get(0x1000, 16), vec![0xaa; 16]);
    }

    #[test]
    fn big_read_is_cut_and_asks_for_scratch() {
        let p = FakeMem::default();
        let call = marshal(libc::SYS_read, args(&[3, 0x1000, 1 << 40]), &p).unwrap();
        assert_eq!(call.args[2], MAX_IO);
        let dep = deputy();
        let err = execute(&call, SCRATCH, SCRATCH_LEN, &dep, &mut |_, _| panic!("must not run")).unwrap_err();
        assert!(matches!(err, MarshalError::TooBig { need } if need == MAX_IO), "{err}");
        // With enough scratch it runs.
        dep.map(0x1_0000_0000, &vec![0; MAX_IO as usize]);
        let reply = execute(&call, 0x1_0000_0000, MAX_IO, &dep, &mut |_, a| Ok(a[2] as i64)).unwrap();
        assert_eq!(reply.outs[0].1.len() as u64, MAX_IO);
    }

    #[test]
    fn write_sends_its_data() {
        let p = FakeMem::default();
        p.map(0x2000, b"some data");
        let (call, ret) = forward(libc::SYS_write, args(&[1, 0x2000, 9]), &p, |dep, a| {
            assert_eq!(dep.get(a[1], a[2] as usize), b"some data");
            a[2] as i64
        });
        assert_eq!(ret, 9);
        assert_eq!(call.bufs[0].out, OutKind::In);
    }

    #[test]
    fn stat_path_and_structure() {
        let p = FakeMem::default();
        p.map(0x3000, b"/etc/passwd\0garbage");
        p.map(0x4000, &[0x11; STAT as usize]);
        let (_, ret) = forward(libc::SYS_stat, args(&[0x3000, 0x4000]), &p, |dep, a| {
            assert_eq!(c_string(dep, a[0]), b"/etc/passwd");
            assert_eq!(dep.get(a[1], STAT as usize), vec![0x11; STAT as usize], "the old content is sent");
            dep.write(a[1], &[0x22; 100]).unwrap(); // the kernel writes part of it
            0
        });
        assert_eq!(ret, 0);
        let st = p.get(0x4000, STAT as usize);
        assert_eq!(&st[..100], &[0x22; 100]);
        assert_eq!(&st[100..], &[0x11; 44]);
    }

    #[test]
    fn path_ending_next_to_unmapped_memory() {
        let p = FakeMem::default();
        p.map(0x9000, &[b'x'; 4096]);
        p.write(0x9ffe, b"y\0").unwrap();
        let call = marshal(libc::SYS_unlink, args(&[0x9ffe]), &p).unwrap();
        assert_eq!(call.bufs[0].data, b"y\0");
        // No NUL within PATH_MAX bytes.
        p.map(0x10_0000, &[b'z'; 8192]);
        let err = marshal(libc::SYS_unlink, args(&[0x10_0000]), &p).unwrap_err();
        assert!(matches!(err, MarshalError::PathTooLong { arg: 0 }), "{err}");
        assert_eq!(err.errno(), libc::ENAMETOOLONG);
        // 4095 bytes and the NUL: the longest path there is.
        assert_eq!(marshal(libc::SYS_unlink, args(&[0x9000]), &p).unwrap().bufs[0].len, PATH_MAX);
        p.write(0x9ffe, b"xx").unwrap();
        // The string runs into unmapped memory.
        let err = marshal(libc::SYS_unlink, args(&[0x9800]), &p).unwrap_err();
        assert_eq!(err.errno(), libc::EFAULT, "{err}");
    }

    #[test]
    fn unreadable_input_is_efault() {
        let p = FakeMem::default();
        let err = marshal(libc::SYS_write, args(&[1, 0xdead_0000, 10]), &p).unwrap_err();
        assert!(matches!(err, MarshalError::Fault { arg: 1, addr: 0xdead_0000, len: 10 }), "{err}");
        assert_eq!(err.errno(), libc::EFAULT);
        let err = marshal(libc::SYS_getpid, args(&[]), &p).unwrap_err();
        assert!(matches!(err, MarshalError::NotForwarded { .. }));
    }

    #[test]
    fn null_pointers_pass_as_null() {
        let p = FakeMem::default();
        let (call, ret) = forward(libc::SYS_fstat, args(&[3, 0]), &p, |_, a| {
            assert_eq!(a[1], 0);
            -(libc::EFAULT as i64)
        });
        assert!(call.bufs.is_empty());
        assert_eq!(ret, -(libc::EFAULT as i64));
    }

    fn iovecs(m: &FakeMem, at: u64, iovs: &[(u64, u64)]) {
        let mut raw = Vec::new();
        for (b, l) in iovs {
            raw.extend_from_slice(&b.to_ne_bytes());
            raw.extend_from_slice(&l.to_ne_bytes());
        }
        m.map(at, &raw);
    }

    fn read_iovecs(m: &FakeMem, at: u64, n: usize) -> Vec<(u64, u64)> {
        m.get(at, n * 16).chunks(16).map(|c| (u64_at(c, 0), u64_at(c, 8))).collect()
    }

    /// A `struct msghdr` at `at`: name, iov and control as (pointer, length), flags.
    fn msghdr(m: &FakeMem, at: u64, name: (u64, u32), iov: (u64, u64), control: (u64, u64), flags: u32) {
        let mut raw = vec![0u8; MSGHDR as usize];
        raw[0..8].copy_from_slice(&name.0.to_ne_bytes());
        raw[8..12].copy_from_slice(&name.1.to_ne_bytes());
        raw[16..24].copy_from_slice(&iov.0.to_ne_bytes());
        raw[24..32].copy_from_slice(&iov.1.to_ne_bytes());
        raw[32..40].copy_from_slice(&control.0.to_ne_bytes());
        raw[40..48].copy_from_slice(&control.1.to_ne_bytes());
        raw[48..52].copy_from_slice(&flags.to_ne_bytes());
        m.map(at, &raw);
    }

    /// (name, namelen, iov, iovlen, control, controllen, flags) of a msghdr.
    fn read_msghdr(m: &FakeMem, at: u64) -> (u64, u64, u64, u64, u64, u64, u64) {
        let h = m.get(at, MSGHDR as usize);
        (u64_at(&h, 0), u64_at(&h, 8) & 0xffff_ffff, u64_at(&h, 16), u64_at(&h, 24), u64_at(&h, 32), u64_at(&h, 40), u64_at(&h, 48) & 0xffff_ffff)
    }

    /// sendmsg: the header, the address, the iovec list and the control messages are
    /// all carried to the deputy (pointers into its scratch); nothing comes back.
    #[test]
    fn sendmsg_carries_address_iovecs_and_control() {
        let p = FakeMem::default();
        p.map(0x6000, b"hello ");
        p.map(0x7000, b"world");
        p.map(0x8000, &[1; 16]);
        p.map(0x9000, &[2; 24]);
        iovecs(&p, 0x5000, &[(0x6000, 6), (0x7000, 5)]);
        msghdr(&p, 0x4000, (0x8000, 16), (0x5000, 2), (0x9000, 24), 0);
        let before = p.snapshot();
        let (call, ret) = forward(libc::SYS_sendmsg, args(&[3, 0x4000, libc::MSG_DONTWAIT as u64]), &p, |dep, a| {
            assert!(in_scratch(a[1]));
            assert_eq!(a[2], libc::MSG_DONTWAIT as u64);
            let (name, namelen, iov, iovlen, control, controllen, _) = read_msghdr(dep, a[1]);
            assert!(in_scratch(name) && in_scratch(iov) && in_scratch(control));
            assert_eq!((namelen, iovlen, controllen), (16, 2, 24));
            assert_eq!(dep.get(name, 16), [1; 16]);
            assert_eq!(dep.get(control, 24), [2; 24]);
            let iovs = read_iovecs(dep, iov, 2);
            assert_eq!((dep.get(iovs[0].0, 6), dep.get(iovs[1].0, 5)), (b"hello ".to_vec(), b"world".to_vec()));
            11
        });
        assert_eq!(ret, 11);
        assert_eq!(call.bufs.len(), 6, "header, address, array, two buffers, control");
        assert_eq!(p.snapshot(), before, "nothing written into the process");
    }

    /// recvmsg: the kernel's bytes land in the process's buffers (`ret` of them across
    /// the iovecs), its address and control messages too, and the header gets the
    /// lengths and flags the kernel set while keeping the process's own pointers. A
    /// reply that would change a pointer of the header is refused.
    #[test]
    fn recvmsg_fills_buffers_and_sets_lengths_and_flags() {
        let p = FakeMem::default();
        p.map(0x6000, &[0xaa; 4]);
        p.map(0x7000, &[0xbb; 8]);
        p.map(0x8000, &[0; 16]);
        p.map(0x9000, &[0; 32]);
        iovecs(&p, 0x5000, &[(0x6000, 4), (0x7000, 8)]);
        msghdr(&p, 0x4000, (0x8000, 16), (0x5000, 2), (0x9000, 32), 0);
        let kernel = |dep: &FakeMem, a: [u64; 6]| {
            let (name, _, iov, _, control, _, _) = read_msghdr(dep, a[1]);
            let iovs = read_iovecs(dep, iov, 2);
            dep.write(iovs[0].0, b"abcd").unwrap();
            dep.write(iovs[1].0, b"efg").unwrap();
            dep.write(name, &[7; 6]).unwrap();
            dep.write(control, &[9; 20]).unwrap();
            dep.write(a[1] + 8, &6u32.to_ne_bytes()).unwrap();
            dep.write(a[1] + 40, &20u64.to_ne_bytes()).unwrap();
            dep.write(a[1] + 48, &(libc::MSG_CTRUNC as u32).to_ne_bytes()).unwrap();
            7
        };
        let (call, ret) = forward(libc::SYS_recvmsg, args(&[3, 0x4000, 0]), &p, kernel);
        assert_eq!(ret, 7);
        assert_eq!(p.get(0x6000, 4), b"abcd");
        assert_eq!(p.get(0x7000, 8), b"efg\xbb\xbb\xbb\xbb\xbb");
        assert_eq!(p.get(0x8000, 16), [7, 7, 7, 7, 7, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&p.get(0x9000, 32)[..21], &[9; 20].iter().copied().chain([0]).collect::<Vec<u8>>()[..]);
        assert_eq!(read_msghdr(&p, 0x4000), (0x8000, 6, 0x5000, 2, 0x9000, 20, libc::MSG_CTRUNC as u64));
        assert_eq!(classify(libc::SYS_recvmsg, &args(&[3, 0x4000, libc::MSG_TRUNC as u64]), HOME), Class::Home(HomeReason::Call("recvmsg with MSG_TRUNC")));

        // Home cannot point the process's header elsewhere.
        let dep = deputy();
        let mut reply = execute(&call, SCRATCH, SCRATCH_LEN, &dep, &mut |_, a| Ok(kernel(&dep, a))).unwrap();
        let header = reply.outs.iter_mut().find(|(addr, _)| *addr == 0x4000).expect("the header comes back");
        header.1[16..24].copy_from_slice(&0x1234u64.to_ne_bytes());
        assert!(matches!(apply(&call, &reply, &p), Err(MarshalError::BadReply { .. })));
    }

    /// sendmmsg and recvmmsg: each message carried as for sendmsg/recvmsg; of the
    /// first `ret` messages the kernel's `msg_len` (and lengths, flags) come back, not
    /// of the others; a received message's buffer comes back whole.
    #[test]
    fn mmsg_calls_set_the_lengths_of_ret_messages() {
        let p = FakeMem::default();
        p.map(0x6000, b"one");
        p.map(0x7000, b"four");
        iovecs(&p, 0x5000, &[(0x6000, 3)]);
        iovecs(&p, 0x5100, &[(0x7000, 4)]);
        // Two mmsghdr at 0x4000 and 0x4040, msg_len 0xdead each.
        msghdr(&p, 0x4000, (0, 0), (0x5000, 1), (0, 0), 0);
        let mut second = vec![0u8; 64];
        second[16..24].copy_from_slice(&0x5100u64.to_ne_bytes());
        second[24..32].copy_from_slice(&1u64.to_ne_bytes());
        second[56..60].copy_from_slice(&0xdeadu32.to_ne_bytes());
        p.write(0x4040, &second).unwrap();
        p.write(0x4038, &0xdeadu32.to_ne_bytes()).unwrap();
        let (call, ret) = forward(libc::SYS_sendmmsg, args(&[3, 0x4000, 2, 0]), &p, |dep, a| {
            assert_eq!(a[2], 2);
            for (m, want) in [(0u64, &b"one"[..]), (1, &b"four"[..])] {
                let (_, _, iov, iovlen, _, _, _) = read_msghdr(dep, a[1] + m * 64);
                let iovs = read_iovecs(dep, iov, iovlen as usize);
                assert_eq!(dep.get(iovs[0].0, want.len()), want);
                dep.write(a[1] + m * 64 + 56, &(want.len() as u32).to_ne_bytes()).unwrap();
            }
            2
        });
        assert_eq!(ret, 2);
        assert_eq!(call.bufs.len(), 5, "the array, and an iovec array and a buffer each");
        assert_eq!((p.get(0x4038, 4), p.get(0x4078, 4)), (3u32.to_ne_bytes().to_vec(), 4u32.to_ne_bytes().to_vec()));
        assert_eq!(read_msghdr(&p, 0x4040).2, 0x5100, "the process's pointers");

        // recvmmsg: one message of two received.
        p.write(0x4038, &0xdeadu32.to_ne_bytes()).unwrap();
        p.write(0x4078, &0xdeadu32.to_ne_bytes()).unwrap();
        let (_, ret) = forward(libc::SYS_recvmmsg, args(&[3, 0x4000, 2, 0, 0]), &p, |dep, a| {
            let (_, _, iov, _, _, _, _) = read_msghdr(dep, a[1]);
            dep.write(read_iovecs(dep, iov, 1)[0].0, b"ab").unwrap();
            dep.write(a[1] + 48, &(libc::MSG_TRUNC as u32).to_ne_bytes()).unwrap();
            dep.write(a[1] + 56, &2u32.to_ne_bytes()).unwrap();
            dep.write(a[1] + 64 + 56, &9u32.to_ne_bytes()).unwrap(); // not received: not back
            1
        });
        assert_eq!(ret, 1);
        assert_eq!(p.get(0x6000, 3), b"abe", "a buffer comes back whole");
        assert_eq!(read_msghdr(&p, 0x4000).6, libc::MSG_TRUNC as u64);
        assert_eq!((p.get(0x4038, 4), p.get(0x4078, 4)), (2u32.to_ne_bytes().to_vec(), 0xdeadu32.to_ne_bytes().to_vec()));
    }

    #[test]
    fn readv_scatters_ret_bytes() {
        let p = FakeMem::default();
        p.map(0x6000, &[0xaa; 4]);
        p.map(0x6100, &[0xbb; 8]);
        iovecs(&p, 0x5000, &[(0x6000, 4), (0, 0), (0x6100, 8)]);
        let (call, ret) = forward(libc::SYS_readv, args(&[3, 0x5000, 3]), &p, |dep, a| {
            assert_eq!(a[2], 3);
            let iovs = read_iovecs(dep, a[1], 3);
            assert!(in_scratch(iovs[0].0) && iovs[0].1 == 4);
            assert_eq!(iovs[1], (0, 0), "a NULL base stays NULL");
            assert!(in_scratch(iovs[2].0) && iovs[2].1 == 8);
            dep.write(iovs[0].0, b"abcd").unwrap();
            dep.write(iovs[2].0, b"efghij").unwrap();
            10
        });
        assert_eq!(ret, 10);
        assert_eq!(call.bufs.len(), 3, "the array and two buffers");
        assert_eq!(p.get(0x6000, 4), b"abcd");
        assert_eq!(p.get(0x6100, 8), b"efghij\xbb\xbb");
        // The process's own iovec array is untouched.
        assert_eq!(read_iovecs(&p, 0x5000, 3), vec![(0x6000, 4), (0, 0), (0x6100, 8)]);
    }

    #[test]
    fn writev_is_cut_to_max_io() {
        let p = FakeMem::default();
        p.map(0x10_0000, &vec![1; 3 << 20]);
        p.map(0x50_0000, &vec![2; 3 << 20]);
        iovecs(&p, 0x5000, &[(0x10_0000, 3 << 20), (0x50_0000, 3 << 20), (0x6000, 5)]);
        let call = marshal(libc::SYS_writev, args(&[1, 0x5000, 3]), &p).unwrap();
        assert_eq!(call.args[2], 2, "the third iovec is dropped");
        let lens: Vec<u64> = call.bufs.iter().map(|b| b.len).collect();
        assert_eq!(lens, vec![32, 3 << 20, 1 << 20]);
        let dep = FakeMem::default();
        dep.map(SCRATCH, &vec![0; 8 << 20]);
        let reply = execute(&call, SCRATCH, 8 << 20, &dep, &mut |_, a| {
            let iovs = read_iovecs(&dep, a[1], a[2] as usize);
            assert_eq!(dep.get(iovs[1].0, iovs[1].1 as usize), vec![2; 1 << 20]);
            Ok((iovs[0].1 + iovs[1].1) as i64)
        })
        .unwrap();
        assert!(reply.outs.is_empty());
        assert_eq!(apply(&call, &reply, &p).unwrap(), 4 << 20);

        iovecs(&p, 0x7000, &[(0x6000, u64::MAX)]);
        let err = marshal(libc::SYS_writev, args(&[1, 0x7000, 1]), &p).unwrap_err();
        assert_eq!(err.errno(), libc::EINVAL, "{err}");
        let err = marshal(libc::SYS_writev, args(&[1, 0x7000, 2000]), &p).unwrap_err();
        assert!(matches!(err, MarshalError::TooManyIovecs { count: 2000, .. }), "{err}");
    }

    #[test]
    fn poll_and_select() {
        let p = FakeMem::default();
        let mut fds = Vec::new();
        for fd in [0i32, 5] {
            fds.extend_from_slice(&fd.to_ne_bytes());
            fds.extend_from_slice(&libc::POLLIN.to_ne_bytes());
            fds.extend_from_slice(&0i16.to_ne_bytes());
        }
        p.map(0x7000, &fds);
        let (_, ret) = forward(libc::SYS_poll, args(&[0x7000, 2, 1000]), &p, |dep, a| {
            assert_eq!(dep.get(a[0], 16)[8..12], 5i32.to_ne_bytes());
            dep.write(a[0] + 14, &libc::POLLIN.to_ne_bytes()).unwrap();
            1
        });
        assert_eq!(ret, 1);
        assert_eq!(p.get(0x7000 + 14, 2), libc::POLLIN.to_ne_bytes());

        // select with the same set for reading and writing, and a timeout.
        p.map(0x8000, &[0b1001, 0, 0, 0, 0, 0, 0, 0]);
        p.map(0x8100, &[1; 16]);
        let (call, ret) = forward(libc::SYS_select, args(&[4, 0x8000, 0x8000, 0, 0x8100]), &p, |dep, a| {
            assert_ne!(a[1], a[2], "each set has its own copy");
            assert_eq!(a[3], 0);
            dep.write(a[1], &[0b1000]).unwrap();
            dep.write(a[2], &[0b0001]).unwrap();
            dep.write(a[4], &[0; 16]).unwrap();
            2
        });
        assert_eq!(call.bufs.iter().map(|b| b.len).collect::<Vec<_>>(), vec![8, 8, 16]);
        assert_eq!(ret, 2);
        assert_eq!(p.get(0x8000, 1), [0b0001], "the later set wins, as in the kernel");
        assert_eq!(p.get(0x8100, 16), [0; 16]);
        // A negative nfds is the kernel's to refuse; a huge one is cut.
        let call = marshal(libc::SYS_select, args(&[u64::MAX, 0, 0, 0, 0]), &p).unwrap();
        assert_eq!(call.args[0], u64::MAX);
        let call = marshal(libc::SYS_select, args(&[i32::MAX as u64, 0, 0, 0, 0]), &p).unwrap();
        assert_eq!(call.args[0], MAX_SELECT_FDS);
    }

    #[test]
    fn pselect6_sigmask_is_rewritten() {
        let p = FakeMem::default();
        let mut pack = 0x9100u64.to_ne_bytes().to_vec();
        pack.extend_from_slice(&8u64.to_ne_bytes());
        p.map(0x9000, &pack);
        p.map(0x9100, &(1u64 << 9).to_ne_bytes());
        let (call, ret) = forward(libc::SYS_pselect6, args(&[0, 0, 0, 0, 0, 0x9000]), &p, |dep, a| {
            assert!(in_scratch(a[5]));
            let pack = dep.get(a[5], 16);
            let (ss, len) = (u64_at(&pack, 0), u64_at(&pack, 8));
            assert!(in_scratch(ss));
            assert_eq!(len, 8);
            assert_eq!(dep.get(ss, 8), (1u64 << 9).to_ne_bytes());
            0
        });
        assert_eq!((call.bufs.len(), ret), (2, 0));
        assert_eq!(p.get(0x9000, 8), 0x9100u64.to_ne_bytes(), "the process's pair is untouched");
    }

    #[test]
    fn set_ids_that_change_nothing() {
        let status = "Name:\tmake\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\n";
        let a = |x: &[u64]| {
            let mut r = [0u64; 6];
            r[..x.len()].copy_from_slice(x);
            r
        };
        let keep = u32::MAX as u64;
        // posix_spawn's POSIX_SPAWN_RESETIDS: seteuid(getuid()), setegid(getgid()).
        assert!(setid_changes_nothing(libc::SYS_setresuid, &a(&[keep, 1000, keep]), status));
        assert!(setid_changes_nothing(libc::SYS_setresgid, &a(&[keep, 100, keep]), status));
        assert!(setid_changes_nothing(libc::SYS_setuid, &a(&[1000]), status));
        assert!(setid_changes_nothing(libc::SYS_setreuid, &a(&[u64::MAX, 1000]), status));
        // A change, ids that differ (a set-id program), another call: home's.
        assert!(!setid_changes_nothing(libc::SYS_setresuid, &a(&[keep, 0, keep]), status));
        assert!(!setid_changes_nothing(libc::SYS_setgid, &a(&[1000]), status));
        let setuid_program = "Uid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\n";
        assert!(!setid_changes_nothing(libc::SYS_setresuid, &a(&[keep, 1000, keep]), setuid_program));
        assert!(!setid_changes_nothing(libc::SYS_setgroups, &a(&[0, 0]), status));
        assert!(!setid_changes_nothing(libc::SYS_setuid, &a(&[1000]), "Name:\tx\n"));
    }

    #[test]
    fn calls_that_never_wait() {
        let a = |x: u64| [3, x, 0, 0, 0, 0];
        assert!(never_waits(libc::SYS_chdir, &a(0)));
        assert!(never_waits(libc::SYS_newfstatat, &a(0)));
        assert!(never_waits(libc::SYS_fcntl, &a(libc::F_GETFL as u64)));
        // A lock that waits, reads and writes (a pipe, a terminal), waits of all kinds.
        assert!(!never_waits(libc::SYS_fcntl, &a(libc::F_SETLKW as u64)));
        for nr in [libc::SYS_read, libc::SYS_write, libc::SYS_wait4, libc::SYS_openat, libc::SYS_close, libc::SYS_ioctl, libc::SYS_pselect6, libc::SYS_flock] {
            assert!(!never_waits(nr, &a(0)), "{nr}");
        }
    }

    #[test]
    fn the_masks_waits_swap_in() {
        let p = FakeMem::default();
        let chld = 1u64 << (libc::SIGCHLD - 1);
        let mut pack = 0x9100u64.to_ne_bytes().to_vec();
        pack.extend_from_slice(&8u64.to_ne_bytes());
        p.map(0x9000, &pack);
        p.map(0x9100, &chld.to_ne_bytes());
        p.map(0x9200, &[0; 16]);
        assert_eq!(wait_mask(libc::SYS_pselect6, &[5, 0, 0, 0, 0, 0x9000], &p), Some(chld));
        assert_eq!(wait_mask(libc::SYS_pselect6, &[5, 0, 0, 0, 0, 0], &p), None, "no pair");
        assert_eq!(wait_mask(libc::SYS_pselect6, &[5, 0, 0, 0, 0, 0x9200], &p), None, "a null set");
        assert_eq!(wait_mask(libc::SYS_pselect6, &[5, 0, 0, 0, 0, 0x5000], &p), None, "unreadable pair");
        assert_eq!(wait_mask(libc::SYS_ppoll, &[0x7000, 1, 0, 0x9100, 8, 0], &p), Some(chld));
        assert_eq!(wait_mask(libc::SYS_ppoll, &[0x7000, 1, 0, 0x9100, 16, 0], &p), None, "the kernel refuses another size");
        assert_eq!(wait_mask(libc::SYS_epoll_pwait, &[4, 0x7000, 8, 20, 0x9200, 8], &p), Some(0));
        assert_eq!(wait_mask(libc::SYS_epoll_pwait2, &[4, 0x7000, 8, 0, 0x9100, 8], &p), Some(chld));
        assert_eq!(wait_mask(libc::SYS_epoll_wait, &[4, 0x7000, 8, 20, 0x9100, 8], &p), None, "no mask");
    }

    #[test]
    fn accept_address_length() {
        let p = FakeMem::default();
        p.map(0xa000, &16u32.to_ne_bytes());
        p.map(0xa100, &[0xee; 16]);
        let (call, ret) = forward(libc::SYS_accept4, args(&[3, 0xa100, 0xa000, libc::SOCK_CLOEXEC as u64]), &p, |dep, a| {
            assert_eq!(dep.get(a[2], 4), 16u32.to_ne_bytes());
            dep.write(a[1], &[7; 16]).unwrap();
            dep.write(a[2], &110u32.to_ne_bytes()).unwrap();
            5
        });
        assert_eq!(ret, 5);
        assert_eq!(call.bufs[0].arg, 2, "the length comes first");
        assert_eq!(p.get(0xa100, 16), [7; 16]);
        assert_eq!(p.get(0xa000, 4), 110u32.to_ne_bytes());
        // No address wanted.
        let (call, _) = forward(libc::SYS_accept, args(&[3, 0, 0]), &p, |_, a| {
            assert_eq!((a[1], a[2]), (0, 0));
            6
        });
        assert!(call.bufs.is_empty());
    }

    #[test]
    fn getcwd_and_ioctl() {
        let p = FakeMem::default();
        p.map(0xb000, &[0xcc; 64]);
        let (_, ret) = forward(libc::SYS_getcwd, args(&[0xb000, 64]), &p, |dep, a| {
            dep.write(a[0], b"/home\0").unwrap();
            6
        });
        assert_eq!(ret, 6);
        assert_eq!(p.get(0xb000, 7), b"/home\0\xcc");
        p.map(0xc000, &[0; WINSIZE as usize]);
        let (_, ret) = forward(libc::SYS_ioctl, args(&[1, libc::TIOCGWINSZ, 0xc000]), &p, |dep, a| {
            dep.write(a[2], &[24, 0, 80, 0, 0, 0, 0, 0]).unwrap();
            0
        });
        assert_eq!(ret, 0);
        assert_eq!(p.get(0xc000, 4), [24, 0, 80, 0]);
    }

    // ---- hostile replies and calls ----

    fn read_call(p: &FakeMem) -> Call {
        p.map(0x1000, &[0xaa; 64]);
        marshal(libc::SYS_read, args(&[3, 0x1000, 64]), p).unwrap()
    }

    #[test]
    fn hostile_replies_are_refused() {
        let p = FakeMem::default();
        let call = read_call(&p);
        p.map(0x2000, &[0; 64]);
        let before = p.snapshot();
        let bad = [
            Reply { ret: 5, outs: vec![(0x2000, vec![1; 5])] },       // not a buffer of the call
            Reply { ret: 5, outs: vec![(0x1000, vec![1; 6])] },       // more than ret
            Reply { ret: 100, outs: vec![(0x1000, vec![1; 65])] },    // more than the buffer
            Reply { ret: -5, outs: vec![(0x1000, vec![1; 1])] },      // an error writes nothing
            Reply { ret: 5, outs: vec![(0x1001, vec![1; 4])] },       // inside, but not the buffer
            Reply { ret: 8, outs: vec![(0x1000, vec![1; 4]), (0x1000, vec![1; 4])] }, // twice
            Reply { ret: 4, outs: vec![(0x1000, vec![1; 4]), (0x2000, vec![1; 4])] }, // one good, one bad
        ];
        for r in &bad {
            let err = apply(&call, r, &p).unwrap_err();
            assert!(matches!(err, MarshalError::BadReply { .. }), "{r:?}: {err}");
            assert_eq!(p.snapshot(), before, "{r:?} wrote something");
        }
        // A write's buffer is input only.
        p.map(0x3000, b"data");
        let call = marshal(libc::SYS_write, args(&[1, 0x3000, 4]), &p).unwrap();
        let r = Reply { ret: 4, outs: vec![(0x3000, b"evil".to_vec())] };
        assert!(apply(&call, &r, &p).is_err());
        assert_eq!(p.get(0x3000, 4), b"data");
        // A Whole buffer comes back whole or not at all.
        p.map(0x4000, &[0; STAT as usize]);
        let call = marshal(libc::SYS_fstat, args(&[3, 0x4000]), &p).unwrap();
        assert!(apply(&call, &Reply { ret: 0, outs: vec![(0x4000, vec![1; 10])] }, &p).is_err());
        assert!(apply(&call, &Reply { ret: 0, outs: vec![(0x4000, vec![1; STAT as usize])] }, &p).is_ok());
    }

    #[test]
    fn epoll_wait_brings_back_ret_events() {
        let p = FakeMem::default();
        p.map(0x7000, &[0xee; 128 * EPOLL_EVENT as usize]);
        p.map(0x9000, &0x4000u64.to_ne_bytes()); // the mask during the wait
        let (call, ret) = forward(libc::SYS_epoll_pwait, args(&[4, 0x7000, 128, 20, 0x9000, 8]), &p, |dep, a| {
            assert_eq!((a[0], a[2], a[3], a[5]), (4, 128, 20, 8));
            assert!(in_scratch(a[1]) && in_scratch(a[4]));
            assert_eq!(dep.get(a[4], 8), 0x4000u64.to_ne_bytes(), "the mask is sent");
            dep.write(a[1], &[0x11; 2 * EPOLL_EVENT as usize]).unwrap(); // two events
            2
        });
        assert_eq!(ret, 2);
        assert_eq!(call.bufs[0].out, OutKind::Items(EPOLL_EVENT));
        assert!(call.bufs[0].data.is_empty(), "nothing of the events buffer is sent");
        assert_eq!(p.get(0x7000, 24), [0x11; 24]);
        assert_eq!(p.get(0x7000 + 24, 24), [0xee; 24], "only the events the kernel wrote come back");
        // epoll_ctl sends its event; DEL may pass NULL.
        p.map(0xa000, &[7; EPOLL_EVENT as usize]);
        let (_, ret) = forward(libc::SYS_epoll_ctl, args(&[4, 1, 5, 0xa000]), &p, |dep, a| {
            assert_eq!(dep.get(a[3], 12), [7; 12]);
            0
        });
        assert_eq!(ret, 0);
        let (call, _) = forward(libc::SYS_epoll_ctl, args(&[4, 2, 5, 0]), &p, |_, a| {
            assert_eq!(a[3], 0);
            0
        });
        assert!(call.bufs.is_empty());
        // A huge maxevents is cut to what fits (fewer events is legal); 0 or less is
        // the kernel's EINVAL, and a negative count never reads a buffer.
        let call = marshal(libc::SYS_epoll_wait, args(&[4, 0x7000, i32::MAX as u64, 0]), &p).unwrap();
        assert_eq!(call.args[2], MAX_BUF / EPOLL_EVENT);
        assert_eq!(call.bufs[0].len, MAX_BUF / EPOLL_EVENT * EPOLL_EVENT);
        let err = marshal(libc::SYS_epoll_wait, args(&[4, 0x7000, (-1i64) as u64, 0]), &p).unwrap_err();
        assert_eq!(err.errno(), libc::EINVAL, "{err}");
        let call = marshal(libc::SYS_epoll_wait, args(&[4, 0x7000, 0, 0]), &p).unwrap();
        assert_eq!(call.bufs[0].len, 0);
        // A reply may bring back no more than ret events.
        let call = marshal(libc::SYS_epoll_wait, args(&[4, 0x7000, 4, 0]), &p).unwrap();
        let before = p.snapshot();
        for r in [Reply { ret: 1, outs: vec![(0x7000, vec![1; 24])] }, Reply { ret: 5, outs: vec![(0x7000, vec![1; 60])] }, Reply { ret: -4, outs: vec![(0x7000, vec![1; 12])] }] {
            assert!(matches!(apply(&call, &r, &p), Err(MarshalError::BadReply { .. })), "{r:?}");
            assert_eq!(p.snapshot(), before);
        }
        assert_eq!(apply(&call, &Reply { ret: 2, outs: vec![(0x7000, vec![1; 24])] }, &p).unwrap(), 2);
    }

    fn run(call: &Call) -> Result<Reply, MarshalError> {
        thread_local!(static DEPUTY: FakeMem = deputy());
        DEPUTY.with(|dep| execute(call, SCRATCH, SCRATCH_LEN, dep, &mut |_, _| Ok(0)))
    }

    #[test]
    fn hostile_calls_are_refused() {
        let p = FakeMem::default();
        let good = read_call(&p);
        assert!(run(&good).is_ok());
        let mut bad = Vec::new();
        let mut c = good.clone();
        c.bufs.clear();
        bad.push(c);
        let mut c = good.clone();
        c.bufs.push(c.bufs[0].clone());
        bad.push(c);
        let mut c = good.clone();
        c.bufs[0].len = 1 << 40;
        bad.push(c);
        let mut c = good.clone();
        c.args[2] = 1 << 40; // more than MAX_IO
        c.bufs[0].len = 1 << 40;
        bad.push(c);
        let mut c = good.clone();
        c.bufs[0].addr = 0x2000;
        bad.push(c);
        let mut c = good.clone();
        c.bufs[0].data = vec![0; 64]; // data for an output buffer
        bad.push(c);
        let mut c = good.clone();
        c.bufs[0].out = OutKind::Whole;
        bad.push(c);
        let mut c = good.clone();
        c.nr = libc::SYS_getpid;
        bad.push(c);
        let mut c = good.clone();
        c.nr = 100_000;
        bad.push(c);
        let mut c = good.clone();
        c.nr = libc::SYS_execve;
        bad.push(c);
        // A path without its NUL, or with one inside.
        p.map(0x3000, b"/tmp/x\0");
        let good_path = marshal(libc::SYS_unlink, args(&[0x3000]), &p).unwrap();
        assert!(run(&good_path).is_ok());
        let mut c = good_path.clone();
        c.bufs[0].data = b"/tmp/x".to_vec();
        c.bufs[0].len = 6;
        bad.push(c);
        let mut c = good_path.clone();
        c.bufs[0].data = b"/tm\0/x\0".to_vec();
        bad.push(c);
        let mut c = good_path;
        c.bufs[0].data = vec![b'a'; 5000];
        c.bufs[0].data.push(0);
        c.bufs[0].len = 5001;
        bad.push(c);
        // An iovec array that does not match its buffers.
        p.map(0x6000, &[0; 8]);
        iovecs(&p, 0x5000, &[(0x6000, 8)]);
        let good_iov = marshal(libc::SYS_readv, args(&[3, 0x5000, 1]), &p).unwrap();
        assert!(run(&good_iov).is_ok());
        let mut c = good_iov.clone();
        c.bufs[1].len = 4096; // the array says 8
        bad.push(c);
        let mut c = good_iov.clone();
        c.bufs[0].data[8] = 0xff; // the array says 255 bytes, the buffer has 8
        bad.push(c);
        let mut c = good_iov;
        c.args[2] = 5000;
        bad.push(c);

        for c in &bad {
            match run(c) {
                Err(MarshalError::BadCall { .. } | MarshalError::NotForwarded { .. } | MarshalError::TooManyIovecs { .. }) => {}
                other => panic!("{c:?} gave {other:?}"),
            }
        }
    }

    /// Mutated calls never panic the home side, and a reply to any call that
    /// passes never writes outside the original call's buffers.
    #[test]
    fn mutated_calls_do_not_panic() {
        let p = FakeMem::default();
        p.map(0x3000, b"/tmp/x\0");
        p.map(0x4000, &[0; STAT as usize]);
        p.map(0x6000, &[0; 64]);
        p.map(0xa000, &16u32.to_ne_bytes());
        p.map(0xa100, &[0; 16]);
        iovecs(&p, 0x5000, &[(0x6000, 8), (0x6010, 16)]);
        let seeds = [
            marshal(libc::SYS_newfstatat, args(&[3, 0x3000, 0x4000, 0]), &p).unwrap(),
            marshal(libc::SYS_readv, args(&[3, 0x5000, 2]), &p).unwrap(),
            marshal(libc::SYS_writev, args(&[3, 0x5000, 2]), &p).unwrap(),
            marshal(libc::SYS_accept, args(&[3, 0xa100, 0xa000]), &p).unwrap(),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut c = seeds[(rnd() % seeds.len() as u64) as usize].clone();
            for _ in 0..1 + rnd() % 3 {
                let k = (rnd() % c.bufs.len().max(1) as u64) as usize;
                match rnd() % 7 {
                    0 => c.args[(rnd() % 6) as usize] = rnd() >> (rnd() % 64),
                    1 if !c.bufs.is_empty() => c.bufs[k].len = rnd() >> (rnd() % 64),
                    2 if !c.bufs.is_empty() => c.bufs[k].addr ^= 1 << (rnd() % 64),
                    3 if !c.bufs.is_empty() && !c.bufs[k].data.is_empty() => {
                        let i = (rnd() % c.bufs[k].data.len() as u64) as usize;
                        c.bufs[k].data[i] = rnd() as u8;
                    }
                    4 if !c.bufs.is_empty() => {
                        c.bufs.remove(k);
                    }
                    5 if !c.bufs.is_empty() => c.bufs[k].arg = (rnd() % 8) as u8,
                    _ => c.nr = [libc::SYS_readv, libc::SYS_writev, libc::SYS_read, libc::SYS_accept][(rnd() % 4) as usize],
                }
            }
            let _ = run(&c);
        }
    }
}
