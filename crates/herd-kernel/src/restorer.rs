//! The restorer children: forked copies of the caller that prepare what is
//! easiest to prepare from inside (open files at their fd numbers, cwd,
//! umask, rlimits, personality), report, and then block in read(2) until
//! the caller seizes them and replaces each one's address space by injection.
//!
//! A restore of one process forks one child. A restore of a tree of
//! processes ([`TreePlan`]) forks its root, which first makes the open files
//! the members share (pipes with their contents, files opened once) at high
//! fd numbers, and then each member forks its own children, so that parents,
//! sessions, inherited files and zombies are as they were; each member then
//! places the shared files it uses at its fd numbers and closes the rest.
//!
//! The children run only async-signal-safe system calls on data built before
//! the fork, so it is safe even if the caller had other threads. Every member
//! but the root dies with its parent (PR_SET_PDEATHSIG, cleared by the
//! restore once it succeeds), so killing the root ends a failed tree.
//!
//! Pids are chosen by [`PidChoice`]: any (a plain fork), the image's own
//! pids in the caller's pid namespace (clone3 `set_tid`), or the image's pids
//! in a new pid namespace, where a small init (pid 1, a forked copy of the
//! caller) forks the root and reports its wait status through a pipe.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

/// How a tree's pids are chosen (each member's own pid is in [`MemberPlan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PidMode {
    Any,
    Same,
    NewNamespace,
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

/// What one restorer child prepares.
pub struct ChildPlan {
    pub fds: Vec<FdPlan>,
    /// Of fds 0-2, those the image did not have open.
    pub close_std: Vec<i32>,
    pub cwd: CString,
    /// The working directory was deleted: `cwd` is a new directory's path, made,
    /// entered and removed again (a deleted directory is empty and stays so).
    pub cwd_gone: bool,
    pub umask: u32,
    pub rlimits: Vec<(u32, u64, u64)>,
    pub personality: u32,
    pub pid: PidChoice,
}

impl OfdPlan {
    /// What a failure to make it names: the file, or the unix path a socket is
    /// bound or connected to ("" for the rest).
    fn describe(&self) -> String {
        // sockaddr_un: family u16, then the path (NUL-terminated; abstract: a NUL first).
        let unix = |a: &Vec<u8>| (a.len() > 2 && a[..2] == (libc::AF_UNIX as u16).to_ne_bytes()).then(|| String::from_utf8_lossy(&a[2..]).trim_end_matches('\0').replace('\0', "@"));
        match self {
            OfdPlan::Open { path, .. } => format!(" ({})", path.to_string_lossy()),
            OfdPlan::Socket { connect: Some(a), .. } if unix(a).is_some() => format!(" (a socket connected to {})", unix(a).unwrap_or_default()),
            OfdPlan::Socket { bind: Some(a), .. } if unix(a).is_some() => format!(" (a socket bound at {})", unix(a).unwrap_or_default()),
            _ => String::new(),
        }
    }
}

/// An open file made once, in the root, for the members that share it.
pub enum OfdPlan {
    Open { path: CString, flags: i32, offset: u64 },
    /// An end of pipe `pipe` of [`TreePlan::pipes`], with these status flags.
    PipeEnd { pipe: usize, write: bool, flags: i32 },
    /// The caller's own fd (0-2).
    Outer { fd: i32 },
    /// End `end` of socket pair `pair` of [`TreePlan::socket_pairs`].
    SocketEnd { pair: usize, end: usize, flags: i32 },
    /// A socket: made, options set, bound (a stale unix socket file at its path
    /// removed first), connected, listening, as given.
    Socket {
        domain: i32,
        kind: i32,
        protocol: i32,
        options: Vec<(i32, i32, i32)>,
        bind: Option<Vec<u8>>,
        unlink: Option<CString>,
        connect: Option<Vec<u8>>,
        backlog: Option<i32>,
        flags: i32,
    },
    /// A nameless file made again with its contents, then opened again (through
    /// /proc/self/fd) with `flags` and placed at `offset`.
    Contents { make: Nameless, flags: i32, offset: u64, mode: u32, contents: Vec<u8> },
    /// An eventfd with this count (EFD_SEMAPHORE and O_NONBLOCK in `flags`).
    EventFd { count: u64, flags: i32 },
    /// A timerfd of clock `clockid`, armed with the time left and interval (0: disarmed),
    /// holding `ticks` expirations not read yet (TFD_IOC_SET_TICKS).
    TimerFd { clockid: i32, flags: i32, interval_ns: u64, value_ns: u64, ticks: u64 },
    /// A signalfd for the signals of `mask`.
    SignalFd { mask: u64, flags: i32 },
    /// An established TCP connection made again with TCP_REPAIR, with these status flags.
    Tcp { plan: Box<crate::tcprepair::TcpPlan>, flags: i32 },
    /// An inotify instance with these watches (number, path, mask), each given its
    /// number again.
    Inotify { flags: i32, watches: Vec<(i32, CString, u32)> },
    /// A pseudo-terminal's master, a new pair with these settings.
    PtyMaster(crate::pty::PtyPlan),
    /// The slave of the pair whose master is shared file `master`, with these status flags.
    PtySlave { master: usize, flags: i32 },
    /// An epoll instance, empty: the member that owns it fills its interest list later
    /// (by injected `epoll_ctl`, once its descriptors are in place).
    Epoll,
    /// A fanotify group (`fanotify_init` flags and event flags) with its marks: each
    /// (`fanotify_mark` flags — the kind of mark and its own flags —, mask, ignored mask,
    /// path).
    Fanotify { flags: u32, event_flags: u32, marks: Vec<(u32, u64, u64, CString)> },
}

/// How a nameless file is made.
pub enum Nameless {
    /// open(dir, O_TMPFILE).
    Tmpfile { dir: CString },
    /// memfd_create(name), then F_ADD_SEALS(seals) once filled.
    Memfd { name: CString, seals: i32 },
}

/// A connected pair of unix sockets to make, with the messages each end is
/// to find waiting, and what each end has shut down.
pub struct SocketPairPlan {
    pub kind: i32,
    pub queued: [Vec<Vec<u8>>; 2],
    pub shutdown: [u8; 2],
}

/// A pipe to make (or a FIFO to open again at `fifo`): its capacity and the
/// bytes to put in it.
pub struct PipePlan {
    pub contents: Vec<u8>,
    pub capacity: u32,
    pub fifo: Option<CString>,
}

/// Shared files a member holds: (fd, index in [`TreePlan::ofds`], close-on-exec).
pub type SharedFds = Vec<(i32, usize, bool)>;

/// One process of a tree.
pub struct MemberPlan {
    /// Its own files, cwd and the like (`plan.pid` is not used: see `pid`).
    pub plan: ChildPlan,
    /// Shared files it holds.
    pub shared: SharedFds,
    /// Index of its parent member; `None` for the root.
    pub parent: Option<usize>,
    /// The pid it must have (in the caller's or the new namespace); 0 for any.
    pub pid: i32,
    /// It leads a session of its own.
    pub setsid: bool,
    /// A zombie: it ends at once with this raw wait status.
    pub zombie: Option<i32>,
    /// The session it leads has this shared file (a pseudo-terminal's slave) as
    /// its controlling terminal.
    pub ctty: Option<usize>,
}

pub struct TreePlan {
    /// The root first, parents before children.
    pub members: Vec<MemberPlan>,
    pub ofds: Vec<OfdPlan>,
    pub pipes: Vec<PipePlan>,
    pub socket_pairs: Vec<SocketPairPlan>,
    pub mode: PidMode,
}

/// The restorer children, blocked and waiting to be seized. Their two sync
/// fds must be closed in each (by injection) before it is released.
pub struct RestorerChild {
    /// The root's pid in the caller's namespace.
    pub pid: i32,
    /// Every member's pid in the caller's namespace (`None` for zombies).
    pub pids: Vec<Option<i32>>,
    pub child_fds: [i32; 2],
    hold_w: i32,
    /// With [`PidChoice::NewNamespace`], the namespace's init (the root's parent).
    pub init: Option<NsInit>,
}

impl Drop for RestorerChild {
    fn drop(&mut self) {
        // SAFETY: hold_w is our own pipe end, closed once here.
        unsafe { libc::close(self.hold_w) };
    }
}

/// What failed in a child, by step.
const STEPS: [&str; 17] = [
    "ok",
    "moving sync fds",
    "opening a file",
    "placing an fd",
    "seeking",
    "setting FD_CLOEXEC",
    "chdir",
    "setrlimit",
    "personality",
    "making a process with its pid",
    "making a shared file or pipe",
    "starting a session",
    "making a TCP connection again (TCP_REPAIR)",
    "making a pseudo-terminal again",
    "taking its controlling terminal again (TIOCSCTTY)",
    "making an inotify instance again with its watch numbers",
    "making a fanotify group again with its marks",
];

/// The size of one report: member index, step, errno (or pid), item index.
const REPORT: usize = 16;

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

fn close_all(fds: &[i32]) {
    for fd in fds {
        // SAFETY: our own pipe ends, each closed once.
        unsafe { libc::close(*fd) };
    }
}

/// Forks one restorer child for `plan`.
pub fn spawn(plan: &ChildPlan) -> Result<RestorerChild> {
    let (mode, pid) = match plan.pid {
        PidChoice::Any => (PidMode::Any, 0),
        PidChoice::Same(p) => (PidMode::Same, p),
        PidChoice::NewNamespace(p) => (PidMode::NewNamespace, p),
    };
    let one = ChildPlan {
        fds: plan
            .fds
            .iter()
            .map(|f| FdPlan { fd: f.fd, path: f.path.clone(), flags: f.flags, offset: f.offset, cloexec: f.cloexec })
            .collect(),
        close_std: plan.close_std.clone(),
        cwd: plan.cwd.clone(),
        cwd_gone: plan.cwd_gone,
        umask: plan.umask,
        rlimits: plan.rlimits.clone(),
        personality: plan.personality,
        pid: plan.pid,
    };
    let member = MemberPlan { plan: one, shared: Vec::new(), parent: None, pid, setsid: false, zombie: None, ctty: None };
    spawn_tree(&TreePlan { members: vec![member], ofds: Vec::new(), pipes: Vec::new(), socket_pairs: Vec::new(), mode })
}

/// Forks the restorer children of a tree: the root is the caller's child
/// (or the child of a new pid namespace's init), every other member its
/// parent member's child. Returns once every live member has reported ready;
/// on any failure nothing is left running.
pub fn spawn_tree(plan: &TreePlan) -> Result<RestorerChild> {
    let ready = pipe()?;
    let hold = pipe()?;
    let top = plan.members.iter().flat_map(|m| m.plan.fds.iter().map(|f| f.fd).chain(m.shared.iter().map(|s| s.0))).max().unwrap_or(2);
    // Sync fds at `high`, `high + 1`; shared files from `high + 2` on.
    let high = top.max(2) + 3;
    let status = match plan.mode {
        PidMode::NewNamespace => Some(match pipe() {
            Ok(p) => p,
            Err(e) => {
                close_all(&[ready[0], ready[1], hold[0], hold[1]]);
                return Err(e);
            }
        }),
        _ => None,
    };
    let root_pid = plan.members.first().map_or(0, |m| m.pid);
    // Paths made before the fork: the child may not allocate.
    let reopen = (0..plan.ofds.len())
        .map(|i| CString::new(format!("/proc/self/fd/{}", high + 2 + i as i32)).expect("no NUL"))
        .collect();
    let ctx = Ctx { plan, ready_w: ready[1], hold_r: hold[0], high, status_w: status.map_or(-1, |s| s[1]), reopen };
    // SAFETY: fork / clone3 are called with no locks held by this thread; the
    // child runs only `root_main` or `ns_init`, which make async-signal-safe
    // calls and never return.
    let pid = unsafe {
        match plan.mode {
            PidMode::Any => libc::fork() as libc::c_long,
            PidMode::Same => clone3_fork(0, root_pid),
            PidMode::NewNamespace => clone3_fork(libc::CLONE_NEWPID as u64, 0),
        }
    };
    if pid < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        close_all(&[ready[0], ready[1], hold[0], hold[1]]);
        if let Some(s) = status {
            close_all(&s);
        }
        return Err(match plan.mode {
            PidMode::Any => KernelError::from_io("fork", 0, std::io::Error::from_raw_os_error(errno)),
            PidMode::Same => pid_error(root_pid, errno, false),
            PidMode::NewNamespace => pid_error(root_pid, errno, true),
        });
    }
    let pid = pid as i32;
    if pid == 0 {
        match plan.mode {
            PidMode::NewNamespace => ns_init(&ctx, root_pid),
            _ => root_main(&ctx),
        }
    }
    close_all(&[ready[1], hold[0]]);
    let init = status.map(|s| {
        close_all(&[s[1]]);
        // SAFETY: the read end is ours alone from here on.
        NsInit { pid, status: unsafe { OwnedFd::from_raw_fd(s[0]) } }
    });
    // SAFETY: the read end of the ready pipe is ours alone.
    let ready_r = unsafe { OwnedFd::from_raw_fd(ready[0]) };
    // Whatever happens below, a failure ends the whole tree (its root, or
    // the namespace's init; the other members die with their parents).
    let top_pid = pid;
    let fail = |e: KernelError| -> Result<RestorerChild> {
        close_all(&[hold[1]]);
        let _ = crate::task::kill_and_reap(top_pid);
        Err(e)
    };
    let live = plan.members.iter().filter(|m| m.zombie.is_none()).count();
    let mut local = vec![None; plan.members.len()];
    for _ in 0..live {
        let rep = match read_report(&ready_r) {
            Ok(r) => r,
            Err(e) => return fail(KernelError::Unexpected { pid, what: e }),
        };
        let [idx, step, errno, index] = rep;
        let member = plan.members.get(idx as usize);
        if step != 0 {
            if step == 9 {
                if let Some(m) = plan.members.get(index as usize) {
                    return fail(pid_error(m.pid, errno as i32, plan.mode == PidMode::NewNamespace));
                }
            }
            let what = STEPS.get(step as usize).copied().unwrap_or("preparing");
            let err = std::io::Error::from_raw_os_error(errno as i32);
            let item = match (step, member) {
                (2..=5, Some(m)) => m.plan.fds.get(index as usize).map(|f| format!(" fd {} ({})", f.fd, f.path.to_string_lossy())).unwrap_or_default(),
                (7, Some(m)) => format!(" (resource {})", m.plan.rlimits.get(index as usize).map_or(0, |r| r.0)),
                (6, Some(m)) => format!(" ({})", m.plan.cwd.to_string_lossy()),
                (10, _) => plan.ofds.get(index as usize).map(OfdPlan::describe).unwrap_or_default(),
                _ => String::new(),
            };
            let whose = if plan.members.len() > 1 { format!(" for process {}", member.map_or(0, |m| m.pid)) } else { String::new() };
            return fail(KernelError::Unexpected { pid, what: format!("restorer failed {what}{item}{whose}: {err}") });
        }
        match local.get_mut(idx as usize) {
            Some(slot @ None) => *slot = Some(errno as i32),
            _ => return fail(KernelError::Unexpected { pid, what: format!("restorer member {idx} reported twice or does not exist") }),
        }
    }
    // In a new namespace the members' own pids are the namespace's: find ours.
    let pids = if init.is_some() {
        let map = ns_pid_map(pid);
        local.iter().map(|l| l.and_then(|l| map.iter().find(|(_, inner)| *inner == l).map(|(outer, _)| *outer))).collect::<Vec<_>>()
    } else {
        local.clone()
    };
    if pids.iter().zip(&local).any(|(p, l)| p.is_none() && l.is_some()) {
        return fail(KernelError::Unexpected { pid, what: "a restored process of the new pid namespace cannot be found".into() });
    }
    let root = match pids.first().copied().flatten() {
        Some(r) => r,
        None => return fail(KernelError::Unexpected { pid, what: "the root of the restore did not report".into() }),
    };
    Ok(RestorerChild { pid: root, pids, child_fds: [high, high + 1], hold_w: hold[1], init })
}

/// Reads one report, giving up when every writer is gone or after a minute.
fn read_report(fd: &OwnedFd) -> std::result::Result<[u32; 4], String> {
    let mut buf = [0u8; REPORT];
    let mut got = 0;
    while got < REPORT {
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: polls one pollfd on our stack.
        let r = unsafe { libc::poll(&mut p, 1, 60_000) };
        if r == 0 {
            return Err("a restorer child did not report within a minute".into());
        }
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(format!("waiting for the restorer: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: reads into the unread tail of `buf`.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf[got..].as_mut_ptr().cast(), REPORT - got) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            return Err("restorer child died while preparing".into());
        }
        got += n as usize;
    }
    let w = |i: usize| u32::from_le_bytes(buf[i * 4..i * 4 + 4].try_into().expect("4"));
    Ok([w(0), w(1), w(2), w(3)])
}

/// (pid here, pid in its own namespace) of every descendant of `top`.
fn ns_pid_map(top: i32) -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    let mut todo = vec![top];
    while let Some(p) = todo.pop() {
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                for k in kids.split_whitespace().filter_map(|k| k.parse::<i32>().ok()) {
                    let status = std::fs::read_to_string(format!("/proc/{k}/status")).unwrap_or_default();
                    let inner = status.lines().find_map(|l| l.strip_prefix("NSpid:")).and_then(|v| v.split_whitespace().last()?.parse().ok());
                    if let Some(inner) = inner {
                        out.push((k, inner));
                    }
                    todo.push(k);
                }
            }
        }
    }
    out
}

/// What every restorer child of one spawn shares (built before the fork).
struct Ctx<'a> {
    plan: &'a TreePlan,
    ready_w: i32,
    hold_r: i32,
    high: i32,
    /// The new namespace's status pipe (write end), or -1.
    status_w: i32,
    /// /proc/self/fd/SLOT of each shared file's slot.
    reopen: Vec<CString>,
}

/// Writes a report (member, step, errno or pid, index) to `fd`.
fn report(fd: i32, member: usize, step: u32, errno: i32, index: usize) {
    let mut rep = [0u8; REPORT];
    rep[0..4].copy_from_slice(&(member as u32).to_le_bytes());
    rep[4..8].copy_from_slice(&step.to_le_bytes());
    rep[8..12].copy_from_slice(&errno.to_le_bytes());
    rep[12..16].copy_from_slice(&(index as u32).to_le_bytes());
    // SAFETY: async-signal-safe write of our own stack buffer to our own fd.
    unsafe { libc::write(fd, rep.as_ptr().cast(), rep.len()) };
}

/// Reports failure `step` of `member` (errno from the last call) and exits.
fn fail(fd: i32, member: usize, step: u32, index: usize) -> ! {
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    report(fd, member, step, errno, index);
    // SAFETY: async-signal-safe.
    unsafe { libc::_exit(127) }
}

/// Blocks every signal of a restorer child (arrivals wait, and are the
/// restore's to deal with), and puts SIGCHLD back to its default: ignored
/// (inherited through execve), zombie members would be reaped at once.
///
/// # Safety
/// In a restorer child only (async-signal-safe calls).
unsafe fn hold_signals() {
    // SAFETY: sigfillset/sigprocmask/sigaction on zeroed structures on our stack.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGCHLD, &dfl, std::ptr::null_mut());
    }
}

/// pid 1 of a new pid namespace: forks the root with pid `want`, then reaps
/// whatever ends in the namespace until the root does, writes its raw wait
/// status to the status pipe and exits (which ends the namespace).
fn ns_init(ctx: &Ctx<'_>, want: i32) -> ! {
    // SAFETY: only async-signal-safe system calls on fds and data prepared
    // before the fork; the root runs `root_main`, which never returns.
    unsafe {
        hold_signals();
        // Nothing of the caller's stays open in the init but its three pipe ends.
        let mut keep = [ctx.ready_w, ctx.hold_r, ctx.status_w];
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
            libc::close(ctx.status_w);
            root_main(ctx);
        }
        if child < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            report(ctx.ready_w, 0, 9, errno, 0);
            libc::_exit(127);
        }
        // The members report; the init holds nothing the caller waits on.
        libc::close(ctx.ready_w);
        libc::close(ctx.hold_r);
        loop {
            let mut st = 0;
            let r = libc::waitpid(-1, &mut st, libc::__WALL);
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                libc::_exit(126);
            }
            if r as libc::c_long == child {
                libc::write(ctx.status_w, (&st as *const i32).cast(), 4);
                libc::_exit(0);
            }
        }
    }
}

/// The root: moves the sync fds to `high`, closes everything else above 2,
/// makes the shared files, then becomes member 0.
fn root_main(ctx: &Ctx<'_>) -> ! {
    let (rs, hs) = (ctx.high, ctx.high + 1);
    // SAFETY: from here on only async-signal-safe system calls are made, on
    // fds and data prepared before the fork; no allocation happens.
    unsafe {
        hold_signals();
        // The sync fds may sit where the other goes: move through a free number.
        let r2 = libc::fcntl(ctx.ready_w, libc::F_DUPFD, hs + 1);
        let h2 = libc::fcntl(ctx.hold_r, libc::F_DUPFD, hs + 1);
        if r2 < 0 || h2 < 0 || libc::dup2(r2, rs) < 0 || libc::dup2(h2, hs) < 0 {
            fail(ctx.ready_w, 0, 1, 0);
        }
        libc::syscall(libc::SYS_close_range, 3u32, (rs - 1) as u32, 0u32);
        libc::syscall(libc::SYS_close_range, (hs + 1) as u32, u32::MAX, 0u32);
        make_shared(ctx, rs);
        member_main(ctx, 0, rs, hs)
    }
}

/// Adds `watches` to inotify instance `t`, each with its number: numbers are
/// handed out one after the other and never again once given up, so a gap is
/// made by a watch taken (on a directory not watched yet) and given up, and
/// the event that says so (IN_IGNORED) read at once, so the process never sees it.
///
/// # Safety
/// In a restorer child only (async-signal-safe calls).
unsafe fn inotify_watches(t: i32, watches: &[(i32, CString, u32)]) -> bool {
    let mut next = 1;
    // SAFETY: inotify calls on our own descriptor with paths prepared before the fork.
    unsafe {
        for (wd, path, mask) in watches {
            while next < *wd {
                let gap = [c"/", c"/proc", c"/dev", c"/sys"].iter().map(|g| libc::inotify_add_watch(t, g.as_ptr(), libc::IN_ATTRIB | libc::IN_MASK_CREATE)).find(|&d| d >= 0);
                let Some(d) = gap else { return false };
                let mut ignored = [0u8; 256];
                if libc::inotify_rm_watch(t, d) != 0 || libc::read(t, ignored.as_mut_ptr().cast(), ignored.len()) <= 0 {
                    return false;
                }
                next = d + 1;
            }
            if libc::inotify_add_watch(t, path.as_ptr(), *mask) != *wd {
                return false;
            }
            next = wd + 1;
        }
    }
    true
}

/// The fd number of shared file `i`.
fn slot(ctx: &Ctx<'_>, i: usize) -> i32 {
    ctx.high + 2 + i as i32
}

/// Makes every shared file at its slot: files opened once, pipes with their
/// contents, the caller's own fds 0-2.
///
/// # Safety
/// In a restorer child only (async-signal-safe calls).
unsafe fn make_shared(ctx: &Ctx<'_>, rs: i32) {
    // SAFETY: async-signal-safe calls on our own fds and data prepared before the fork.
    unsafe {
        for (i, o) in ctx.plan.ofds.iter().enumerate() {
            let fd = match o {
                OfdPlan::Open { path, flags, offset } => {
                    // O_TMPFILE stays in the flags of a file made so (and linked later).
                    let fl = *flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_TMPFILE);
                    let t = libc::open(path.as_ptr(), fl | libc::O_NOCTTY);
                    if t >= 0 && *offset != 0 && *flags & libc::O_PATH == 0 && libc::lseek(t, *offset as i64, libc::SEEK_SET) < 0 {
                        fail(rs, 0, 4, i);
                    }
                    t
                }
                OfdPlan::Outer { fd } => libc::fcntl(*fd, libc::F_DUPFD, 3),
                OfdPlan::Socket { domain, kind, protocol, options, bind, unlink, connect, backlog, flags } => {
                    let t = libc::socket(*domain, *kind, *protocol);
                    if t < 0 {
                        fail(rs, 0, 10, i);
                    }
                    for (level, name, value) in options {
                        let v: libc::c_int = *value;
                        if libc::setsockopt(t, *level, *name, (&v as *const libc::c_int).cast(), 4) != 0 {
                            fail(rs, 0, 10, i);
                        }
                    }
                    if let Some(path) = unlink {
                        let mut st: libc::stat = std::mem::zeroed();
                        if libc::lstat(path.as_ptr(), &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
                            libc::unlink(path.as_ptr());
                        }
                    }
                    if let Some(a) = bind {
                        if libc::bind(t, a.as_ptr().cast(), a.len() as libc::socklen_t) != 0 {
                            fail(rs, 0, 10, i);
                        }
                    }
                    if let Some(a) = connect {
                        if libc::connect(t, a.as_ptr().cast(), a.len() as libc::socklen_t) != 0 {
                            fail(rs, 0, 10, i);
                        }
                    }
                    if let Some(b) = backlog {
                        if libc::listen(t, *b) != 0 {
                            fail(rs, 0, 10, i);
                        }
                    }
                    if libc::fcntl(t, libc::F_SETFL, *flags & libc::O_NONBLOCK) < 0 {
                        fail(rs, 0, 10, i);
                    }
                    t
                }
                OfdPlan::Contents { make, flags, offset, mode, contents } => {
                    let t = match make {
                        Nameless::Tmpfile { dir } => libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, *mode & 0o7777),
                        // Always sealable: one made without it reports F_SEAL_SEAL, added below.
                        Nameless::Memfd { name, .. } => libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING),
                    };
                    if t < 0 {
                        fail(rs, 0, 10, i);
                    }
                    let mut off = 0;
                    while off < contents.len() {
                        let n = libc::write(t, contents[off..].as_ptr().cast(), contents.len() - off);
                        if n <= 0 {
                            fail(rs, 0, 10, i);
                        }
                        off += n as usize;
                    }
                    libc::fchmod(t, *mode & 0o7777);
                    if let Nameless::Memfd { seals, .. } = make {
                        if *seals != 0 && libc::fcntl(t, libc::F_ADD_SEALS, *seals) != 0 {
                            fail(rs, 0, 10, i);
                        }
                    }
                    // Opened again as it was opened (read-only, appending, ...), through a
                    // magic link (which O_NOFOLLOW, as mkstemp opens, would refuse).
                    if libc::dup2(t, slot(ctx, i)) < 0 {
                        fail(rs, 0, 10, i);
                    }
                    libc::close(t);
                    let fl = *flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_TMPFILE | libc::O_NOFOLLOW);
                    let r = libc::open(ctx.reopen[i].as_ptr(), fl);
                    if r < 0 || libc::lseek(r, *offset as i64, libc::SEEK_SET) < 0 {
                        fail(rs, 0, 10, i);
                    }
                    r
                }
                OfdPlan::EventFd { count, flags } => {
                    // The count is written, not given to eventfd (an unsigned int).
                    let t = libc::eventfd(0, *flags & (libc::EFD_SEMAPHORE | libc::O_NONBLOCK));
                    if t < 0 || (*count > 0 && libc::write(t, (count as *const u64).cast(), 8) != 8) {
                        fail(rs, 0, 10, i);
                    }
                    t
                }
                OfdPlan::TimerFd { clockid, flags, interval_ns, value_ns, ticks } => {
                    let t = libc::timerfd_create(*clockid, *flags & libc::O_NONBLOCK);
                    if t < 0 {
                        fail(rs, 0, 10, i);
                    }
                    if *value_ns > 0 {
                        let ts = |ns: u64| libc::timespec { tv_sec: (ns / 1_000_000_000) as libc::time_t, tv_nsec: (ns % 1_000_000_000) as libc::c_long };
                        let spec = libc::itimerspec { it_interval: ts(*interval_ns), it_value: ts(*value_ns) };
                        if libc::timerfd_settime(t, 0, &spec, std::ptr::null_mut()) != 0 {
                            fail(rs, 0, 10, i);
                        }
                    }
                    if *ticks > 0 && libc::ioctl(t, crate::abi::TFD_IOC_SET_TICKS as _, ticks as *const u64) != 0 {
                        fail(rs, 0, 10, i);
                    }
                    t
                }
                OfdPlan::SignalFd { mask, flags } => {
                    libc::syscall(libc::SYS_signalfd4, -1, mask as *const u64, 8usize, *flags & libc::O_NONBLOCK) as i32
                }
                // Left in repair mode until every connection is made (below).
                OfdPlan::Tcp { plan, flags } => {
                    let t = crate::tcprepair::restore(plan);
                    if t < 0 || libc::fcntl(t, libc::F_SETFL, *flags & libc::O_NONBLOCK) < 0 {
                        fail(rs, 0, 12, i);
                    }
                    t
                }
                OfdPlan::Epoll => libc::epoll_create1(0),
                OfdPlan::Fanotify { flags, event_flags, marks } => {
                    let t = libc::fanotify_init(*flags, *event_flags);
                    if t < 0 {
                        fail(rs, 0, 16, i);
                    }
                    for (how, mask, ignored, path) in marks {
                        if (*mask != 0 && libc::fanotify_mark(t, libc::FAN_MARK_ADD | how, *mask, libc::AT_FDCWD, path.as_ptr()) != 0)
                            || (*ignored != 0 && libc::fanotify_mark(t, libc::FAN_MARK_ADD | libc::FAN_MARK_IGNORED_MASK | how, *ignored, libc::AT_FDCWD, path.as_ptr()) != 0)
                        {
                            fail(rs, 0, 16, i);
                        }
                    }
                    t
                }
                OfdPlan::Inotify { flags, watches } => {
                    let t = libc::inotify_init1(*flags & libc::O_NONBLOCK);
                    if t < 0 || !inotify_watches(t, watches) {
                        fail(rs, 0, 15, i);
                    }
                    t
                }
                OfdPlan::PtyMaster(p) => {
                    let t = crate::pty::make_master(p);
                    if t < 0 {
                        fail(rs, 0, 13, i);
                    }
                    t
                }
                // Made with their pipe or pair, or once their master is (below).
                OfdPlan::PipeEnd { .. } | OfdPlan::SocketEnd { .. } | OfdPlan::PtySlave { .. } => continue,
            };
            if fd < 0 || libc::dup2(fd, slot(ctx, i)) < 0 {
                fail(rs, 0, 10, i);
            }
            libc::close(fd);
        }
        // Every connection of the tree exists now: they may speak. Every master too.
        for (i, o) in ctx.plan.ofds.iter().enumerate() {
            match o {
                OfdPlan::Tcp { plan, .. } if !crate::tcprepair::finish(slot(ctx, i), plan) => fail(rs, 0, 12, i),
                OfdPlan::PtySlave { master, flags } => {
                    let t = crate::pty::open_peer(slot(ctx, *master), *flags);
                    if t < 0 || libc::dup2(t, slot(ctx, i)) < 0 {
                        fail(rs, 0, 13, i);
                    }
                    libc::close(t);
                }
                _ => {}
            }
        }
        for (p, pipe) in ctx.plan.pipes.iter().enumerate() {
            // ends[0] reads, ends[1] writes. A FIFO is opened for both first (that
            // never waits for the other side), which gives both ends their peer.
            let mut ends = [0i32; 2];
            match &pipe.fifo {
                None => {
                    if libc::pipe2(ends.as_mut_ptr(), 0) != 0 {
                        fail(rs, 0, 10, p);
                    }
                }
                Some(path) => {
                    let both = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK);
                    if both < 0 {
                        fail(rs, 0, 10, p);
                    }
                    ends = [both, libc::dup(both)];
                    if ends[1] < 0 || libc::fcntl(both, libc::F_SETFL, 0) < 0 {
                        fail(rs, 0, 10, p);
                    }
                }
            }
            // A capacity the user may not set (above pipe-max-size) is left as it is;
            // the contents are written without waiting, so a pipe too small for
            // them fails the restore instead of blocking it.
            libc::fcntl(ends[1], libc::F_SETPIPE_SZ, pipe.capacity as libc::c_int);
            libc::fcntl(ends[1], libc::F_SETFL, libc::O_NONBLOCK);
            let mut off = 0;
            while off < pipe.contents.len() {
                let n = libc::write(ends[1], pipe.contents[off..].as_ptr().cast(), pipe.contents.len() - off);
                if n <= 0 {
                    fail(rs, 0, 10, p);
                }
                off += n as usize;
            }
            libc::fcntl(ends[1], libc::F_SETFL, 0);
            for (i, o) in ctx.plan.ofds.iter().enumerate() {
                if let OfdPlan::PipeEnd { pipe: q, write, flags } = o {
                    if *q != p {
                        continue;
                    }
                    let end = match &pipe.fifo {
                        None => ends[usize::from(*write)],
                        // Each description of a FIFO is an open of its own.
                        Some(path) => libc::open(path.as_ptr(), (*flags & libc::O_ACCMODE) | libc::O_NONBLOCK),
                    };
                    if end < 0 || (end != slot(ctx, i) && libc::dup2(end, slot(ctx, i)) < 0) || libc::fcntl(slot(ctx, i), libc::F_SETFL, *flags & libc::O_NONBLOCK) < 0 {
                        fail(rs, 0, 10, i);
                    }
                    // A FIFO's own open may have landed on its slot already.
                    if pipe.fifo.is_some() && end != slot(ctx, i) {
                        libc::close(end);
                    }
                }
            }
            libc::close(ends[0]);
            libc::close(ends[1]);
        }
        for (p, pair) in ctx.plan.socket_pairs.iter().enumerate() {
            let mut ends = [0i32; 2];
            if libc::socketpair(libc::AF_UNIX, pair.kind, 0, ends.as_mut_ptr()) != 0 {
                fail(rs, 0, 10, p);
            }
            // What end e finds waiting was sent by the other end, message by message.
            for e in 0..2 {
                for m in &pair.queued[e] {
                    let n = libc::send(ends[1 - e], m.as_ptr().cast(), m.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
                    if n != m.len() as isize {
                        fail(rs, 0, 10, p);
                    }
                }
            }
            for (end, down) in ends.iter().zip(pair.shutdown) {
                let how = match down {
                    1 => libc::SHUT_RD,
                    2 => libc::SHUT_WR,
                    3 => libc::SHUT_RDWR,
                    _ => continue,
                };
                if libc::shutdown(*end, how) != 0 {
                    fail(rs, 0, 10, p);
                }
            }
            for (i, o) in ctx.plan.ofds.iter().enumerate() {
                if let OfdPlan::SocketEnd { pair: q, end, flags } = o {
                    if *q == p && (libc::dup2(ends[*end], slot(ctx, i)) < 0 || libc::fcntl(slot(ctx, i), libc::F_SETFL, *flags & libc::O_NONBLOCK) < 0) {
                        fail(rs, 0, 10, i);
                    }
                }
            }
            libc::close(ends[0]);
            libc::close(ends[1]);
        }
    }
}

/// Member `idx`: starts its session, forks its children (each becoming its
/// member), places its files, prepares the rest, reports and blocks.
fn member_main(ctx: &Ctx<'_>, idx: usize, rs: i32, hs: i32) -> ! {
    let m = &ctx.plan.members[idx];
    let plan = &m.plan;
    // SAFETY: only async-signal-safe calls on data prepared before the fork.
    unsafe {
        if let Some(st) = m.zombie {
            // Ends as it ended, without a core file.
            let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            if libc::WIFSIGNALED(st) {
                let sig = libc::WTERMSIG(st);
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::kill(libc::getpid(), sig);
            }
            libc::_exit(libc::WEXITSTATUS(st));
        }
        if m.setsid && libc::setsid() < 0 {
            fail(rs, idx, 11, 0);
        }
        if let Some(o) = m.ctty {
            if libc::ioctl(slot(ctx, o), libc::TIOCSCTTY as _, 0) < 0 {
                fail(rs, idx, 14, o);
            }
        }
        let me = libc::getpid();
        for (j, kid) in ctx.plan.members.iter().enumerate() {
            if kid.parent != Some(idx) {
                continue;
            }
            let want = if ctx.plan.mode == PidMode::Any { 0 } else { kid.pid };
            let r = clone3_fork(0, want);
            if r < 0 {
                fail(rs, idx, 9, j);
            }
            if r == 0 {
                // A member dies with its parent, so that ending the root ends all.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                if libc::getppid() != me {
                    libc::_exit(127);
                }
                member_main(ctx, j, rs, hs);
            }
        }
        // Its own fd table: the shared files it holds, then its own files.
        for &(fd, ofd, cloexec) in &m.shared {
            if libc::dup3(slot(ctx, ofd), fd, if cloexec { libc::O_CLOEXEC } else { 0 }) < 0 {
                fail(rs, idx, 3, 0);
            }
        }
        libc::syscall(libc::SYS_close_range, (hs + 1) as u32, u32::MAX, 0u32);
        for (i, f) in plan.fds.iter().enumerate() {
            let flags = f.flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_TMPFILE);
            let t = libc::open(f.path.as_ptr(), flags | libc::O_NOCTTY);
            if t < 0 {
                fail(rs, idx, 2, i);
            }
            if t != f.fd {
                if libc::dup2(t, f.fd) < 0 {
                    fail(rs, idx, 3, i);
                }
                libc::close(t);
            }
            if f.offset != 0 && f.flags & libc::O_PATH == 0 && libc::lseek(f.fd, f.offset as i64, libc::SEEK_SET) < 0 {
                fail(rs, idx, 4, i);
            }
            if f.cloexec && libc::fcntl(f.fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
                fail(rs, idx, 5, i);
            }
        }
        for fd in &plan.close_std {
            libc::close(*fd);
        }
        if plan.cwd_gone && libc::mkdir(plan.cwd.as_ptr(), 0o755) != 0 {
            fail(rs, idx, 6, 0);
        }
        if libc::chdir(plan.cwd.as_ptr()) != 0 {
            fail(rs, idx, 6, 0);
        }
        if plan.cwd_gone && libc::rmdir(plan.cwd.as_ptr()) != 0 {
            fail(rs, idx, 6, 0);
        }
        libc::umask(plan.umask);
        for (i, (res, cur, max)) in plan.rlimits.iter().enumerate() {
            let lim = libc::rlimit { rlim_cur: *cur, rlim_max: *max };
            if libc::setrlimit(*res as _, &lim) != 0 {
                fail(rs, idx, 7, i);
            }
        }
        if libc::personality(plan.personality as libc::c_ulong) < 0 {
            fail(rs, idx, 8, 0);
        }
        report(rs, idx, 0, me, 0);
        let mut b = 0u8;
        // The caller seizes us here, inside read(2).
        libc::read(hs, (&mut b as *mut u8).cast(), 1);
        libc::_exit(1)
    }
}
