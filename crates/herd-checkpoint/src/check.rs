//! Whether a process can be captured, and every reason it cannot — the
//! `cantmove` of openMosix.

use std::fmt;
use std::ops::Not;

use procfs::process::{FDTarget, MMapPath, MemoryMap};

use crate::{procinfo, state};
use crate::Result;

/// Devices that are reopened by path on restore.
pub const PORTABLE_DEVICES: [&str; 4] = ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CantMove {
    OtherUser { uid: u32 },
    /// Traced by another process (`thread`: only that thread of it).
    Traced { by: i32, thread: Option<i32> },
    /// Under a seccomp filter (`thread`: only that thread of it).
    Seccomp { thread: Option<i32> },
    /// Under seccomp filters a checkpoint cannot carry, and why.
    SeccompFilters { why: String },
    Children(Vec<i32>),
    NotRunning(String),
    Socket { fd: i32, what: String },
    UnsupportedFd { fd: i32, what: String },
    SysvShm,
    DeletedFile { path: String },
    UnknownMapping { name: String },
    TooLarge { what: String },
    /// Uses io_uring: its rings and the requests in flight live in the kernel (`fd`: the
    /// ring's descriptor, when the check looked at descriptors; otherwise its mapping).
    IoUring { fd: Option<i32> },
    /// A thread waits in io_uring_enter, or (`worker`: its name) is one of the kernel's
    /// io_uring workers, which run in the process but cannot be stopped or traced.
    IoUringThread { thread: i32, worker: Option<String> },
    /// Shares its address space with another process (a vfork child before its exec,
    /// or clone with CLONE_VM but not CLONE_THREAD): moved or restored apart, the two
    /// would no longer see each other's writes.
    SharedVm { with: i32 },
    /// Maps shared anonymous memory that another process maps too (made before a fork):
    /// apart, the two would no longer see each other's writes.
    SharedMemory { with: i32 },
}

impl fmt::Display for CantMove {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CantMove::OtherUser { uid } => write!(f, "belongs to uid {uid}, not to you"),
            CantMove::Traced { by, thread: None } => write!(f, "is already being traced by process {by}"),
            CantMove::Traced { by, thread: Some(tid) } => write!(f, "its thread {tid} is being traced by process {by}"),
            CantMove::Seccomp { thread: None } => write!(f, "runs under a seccomp filter"),
            CantMove::Seccomp { thread: Some(tid) } => write!(f, "its thread {tid} runs under a seccomp filter"),
            CantMove::SeccompFilters { why } => f.write_str(why),
            CantMove::Children(c) => write!(
                f,
                "has child processes ({}), which would not come along",
                c.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
            ),
            CantMove::NotRunning(s) => write!(f, "is not a running process (state {s})"),
            CantMove::Socket { fd, what } => write!(f, "fd {fd} is a socket ({what})"),
            CantMove::UnsupportedFd { fd, what } => write!(f, "fd {fd} is {what}, which cannot be checkpointed"),
            CantMove::SysvShm => write!(f, "uses SysV shared memory"),
            CantMove::DeletedFile { path } => write!(f, "maps a deleted or anonymous file ({path})"),
            CantMove::UnknownMapping { name } => write!(f, "has a special mapping [{name}] herd does not know"),
            CantMove::TooLarge { what } => write!(f, "cannot be carried whole: {what}"),
            CantMove::IoUring { fd: Some(fd) } => write!(f, "fd {fd} is an io_uring, whose rings and requests in flight live in the kernel"),
            CantMove::IoUring { fd: None } => write!(f, "uses io_uring (its rings are mapped), whose requests in flight live in the kernel"),
            CantMove::IoUringThread { thread, worker: None } => write!(f, "its thread {thread} waits in io_uring_enter"),
            CantMove::IoUringThread { thread, worker: Some(name) } => write!(f, "its thread {thread} ({name}) is one of the kernel's io_uring workers"),
            CantMove::SharedVm { with } => write!(f, "shares its memory with process {with} (vfork, or clone with CLONE_VM)"),
            CantMove::SharedMemory { with } => write!(f, "shares memory with process {with} (a shared mapping made before a fork); checkpoint them together"),
        }
    }
}

/// What a capture is for, which decides what can be taken along.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Purpose {
    /// An image that must stand on its own (a file): open files go in it, so
    /// only files that can be reopened are allowed.
    #[default]
    Checkpoint,
    /// A member of a tree image ([`crate::FrozenTree`]): as `Checkpoint`, but
    /// children come along, and pipes, FIFOs and terminals at any fd are left
    /// to the tree's analysis of what its members share.
    Tree,
    /// A migration: open files, sockets, pipes and the terminal stay at home
    /// with the deputy, so any fd is fine; the image carries none.
    Migrate {
        /// The process runs under herd's own seccomp filter (it is a migrated
        /// process on this node), which is replaced, not carried.
        own_filter: bool,
    },
}

/// The inodes of the unix, TCP and UDP sockets of `pid`'s network namespace
/// (/proc/PID/net/unix, tcp, tcp6, udp, udp6): those a tree may carry.
fn carried_socket_inodes(pid: i32) -> Vec<u64> {
    let read = |name: &str, column: usize| -> Vec<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{name}")).unwrap_or_default();
        text.lines().skip(1).filter_map(|l| l.split_whitespace().nth(column)?.parse().ok()).collect()
    };
    // unix: Num RefCount Protocol Flags Type St Inode Path; tcp/udp: inode is the 10th
    // column; netlink: sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode.
    let mut all = read("unix", 6);
    for n in ["tcp", "tcp6", "udp", "udp6", "netlink"] {
        all.extend(read(n, 9));
    }
    all
}

/// How /proc/PID/maps names a mapping of an io_uring's rings.
const IO_URING_MAPPING: &str = "anon_inode:[io_uring]";
/// io_uring_enter(2) on x86_64.
const SYS_IO_URING_ENTER: i64 = 426;

/// Why thread `tid` of `pid` (named `name`) stops the process moving, if it waits in
/// io_uring_enter or is one of the kernel's io_uring workers (io-wq's "iou-wrk-N", the
/// submission-queue poller "iou-sqp-N"), which ptrace cannot stop.
fn io_uring_thread(pid: i32, tid: i32, name: &str) -> Option<CantMove> {
    if name.starts_with("iou-wrk-") || name.starts_with("iou-sqp-") {
        return Some(CantMove::IoUringThread { thread: tid, worker: Some(name.to_string()) });
    }
    // "NR args..." while blocked in a call, "running" or "-1 ..." otherwise.
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let nr: i64 = syscall.split_whitespace().next()?.parse().ok()?;
    (nr == SYS_IO_URING_ENTER).then_some(CantMove::IoUringThread { thread: tid, worker: None })
}

/// Every reason process `pid` cannot be captured by the calling user; empty
/// when it can be.
pub fn check(pid: i32) -> Result<Vec<CantMove>> {
    check_for(pid, Purpose::Checkpoint)
}

/// [`check`] for a given purpose.
pub fn check_for(pid: i32, purpose: Purpose) -> Result<Vec<CantMove>> {
    Ok(check_inner(pid, 0, purpose)?.why)
}

/// What [`check_held`] found: the reasons the process cannot be captured, and for a
/// migration, the ranges (start, end) of its mappings that stay at home ([`stays_home`]).
pub(crate) struct Checked {
    pub why: Vec<CantMove>,
    pub kept_home: Vec<(u64, u64)>,
}

/// [`check`] for a process this thread is tracing.
pub(crate) fn check_held(pid: i32, purpose: Purpose) -> Result<Checked> {
    check_inner(pid, herd_kernel::task::gettid(), purpose)
}

fn check_inner(pid: i32, tracer: i32, purpose: Purpose) -> Result<Checked> {
    let p = procinfo::open(pid)?;
    let status = p.status().map_err(|e| procinfo::map_err(pid, e))?;
    let mut why = Vec::new();
    let me = herd_kernel::task::euid();
    if me != 0 && status.ruid != me {
        why.push(CantMove::OtherUser { uid: status.ruid });
        return Ok(Checked { why, kept_home: Vec::new() }); // nothing else of it is ours to read
    }
    let state = status.state.chars().next().unwrap_or('?');
    if matches!(state, 'Z' | 'X') {
        why.push(CantMove::NotRunning(status.state.clone()));
        return Ok(Checked { why, kept_home: Vec::new() });
    }
    // Tracing and seccomp filters are each thread's own: the main thread's stand for the
    // process; another thread's are named. A checkpoint carries filters (mode 2) when it
    // can read them (root: PTRACE_SECCOMP_GET_FILTER), the capture checks them.
    let whole = matches!(purpose, Purpose::Checkpoint | Purpose::Tree);
    let carried = |st: &procfs::process::Status| whole && st.seccomp == Some(2) && herd_kernel::task::euid() == 0;
    let filtered = |st: &procfs::process::Status| st.seccomp.unwrap_or(0) != 0 && purpose != (Purpose::Migrate { own_filter: true }) && !carried(st);
    let seccomp_why = |st: &procfs::process::Status| match st.seccomp {
        Some(1) if whole => Some(CantMove::SeccompFilters { why: "runs in seccomp's strict mode".into() }),
        Some(2) if whole => Some(CantMove::SeccompFilters { why: "runs under a seccomp filter, which only root can read (herd checkpoint as root carries it)".into() }),
        _ => None,
    };
    if status.tracerpid != 0 && status.tracerpid != tracer {
        why.push(CantMove::Traced { by: status.tracerpid, thread: None });
    }
    if filtered(&status) {
        why.push(seccomp_why(&status).unwrap_or(CantMove::Seccomp { thread: None }));
    }
    if let Some(r) = io_uring_thread(pid, pid, &status.name) {
        why.push(r);
    }
    if status.threads > 1 {
        let mut others: Vec<(i32, procfs::process::Status)> =
            p.tasks().into_iter().flatten().flatten().filter(|t| t.tid != pid).filter_map(|t| Some((t.tid, t.status().ok()?))).collect();
        others.sort_by_key(|(tid, _)| *tid);
        for (tid, st) in others {
            if let Some(r) = io_uring_thread(pid, tid, &st.name) {
                why.push(r);
            }
            if st.tracerpid != 0 && st.tracerpid != tracer && st.tracerpid != status.tracerpid {
                why.push(CantMove::Traced { by: st.tracerpid, thread: Some(tid) });
            }
            if filtered(&st) && !filtered(&status) {
                why.push(CantMove::Seccomp { thread: Some(tid) });
            }
            // A checkpoint carries the filters every thread shares (the capture
            // compares them); a thread under filters the main thread lacks is named.
            if carried(&st) && status.seccomp != Some(2) {
                why.push(CantMove::SeccompFilters { why: format!("its thread {tid} runs under a seccomp filter the main thread does not (a checkpoint carries the filters every thread shares)") });
            }
        }
    }
    // A migrating parent leaves its children at home with its deputy, which stays their
    // parent: they are waited for, signalled and reparented as before. A checkpoint image
    // would lose them.
    let kids = procinfo::children(pid);
    // Memory shared with the parent or a child (kcmp needs ptrace access to both: a
    // relative we may not look at is not one we could share memory with by ourselves).
    for other in std::iter::once(status.ppid).chain(kids.iter().copied()).filter(|&o| o > 1) {
        if herd_kernel::task::same_vm(pid, other).unwrap_or(false) {
            why.push(CantMove::SharedVm { with: other });
        }
    }
    if purpose == Purpose::Checkpoint && !kids.is_empty() {
        why.push(CantMove::Children(kids.clone()));
    }
    let fds: Vec<_> = if whole { p.fd().map_err(|e| procinfo::map_err(pid, e))?.collect() } else { Vec::new() };
    let socket_inodes = if purpose == Purpose::Tree { carried_socket_inodes(pid) } else { Vec::new() };
    for fd in fds {
        let fd = fd.map_err(|e| procinfo::map_err(pid, e))?;
        let what = procinfo::describe(&fd.target);
        // What fdinfo says matters for locks (any fd) and O_PATH; a descriptor
        // closed meanwhile is simply not there.
        let info = state::read_fdinfo(pid, fd.fd).unwrap_or_default();
        for l in &info.locks {
            if let Some(lock) = state::lock_refusal(l) {
                why.push(CantMove::UnsupportedFd { fd: fd.fd, what: lock });
            }
        }
        match &fd.target {
            // A unix, TCP or UDP socket may be carried by a tree (its analysis decides).
            FDTarget::Socket(ino) if purpose == Purpose::Tree && socket_inodes.contains(ino) => {}
            FDTarget::Socket(_) | FDTarget::Net(_) => why.push(CantMove::Socket { fd: fd.fd, what }),
            FDTarget::Pipe(_) if fd.fd <= 2 || purpose == Purpose::Tree => {}
            // A memfd is carried with its contents by a tree.
            FDTarget::MemFD(_) if purpose == Purpose::Tree => {}
            // A pidfd of another process of the tree (its analysis checks which).
            FDTarget::AnonInode(kind) if purpose == Purpose::Tree && kind == "[pidfd]" => {}
            // A fanotify group: a tree carries it (its analysis decides).
            FDTarget::AnonInode(kind) if purpose == Purpose::Tree && kind == "[fanotify]" => {}
            // In a tree, its analysis checks what an epoll watches (it may be shared).
            FDTarget::AnonInode(kind) if kind == "[eventpoll]" && purpose != Purpose::Tree => why.extend(state::epoll_refusals(pid, fd.fd, &info)),
            FDTarget::AnonInode(kind) if kind == "[io_uring]" => why.push(CantMove::IoUring { fd: Some(fd.fd) }),
            FDTarget::AnonInode(kind) if state::ANON_KINDS.contains(&kind.as_str()) => {}
            FDTarget::Path(path) => {
                let s = path.to_string_lossy();
                let meta = std::fs::metadata(format!("/proc/{pid}/fd/{}", fd.fd)).ok();
                let regular = meta.as_ref().is_some_and(|m| m.is_file());
                let dir = meta.as_ref().is_some_and(|m| m.is_dir());
                let fifo = meta.as_ref().is_some_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()));
                let tty = s.starts_with("/dev/pts/") || s.starts_with("/dev/tty") || s == "/dev/console" || s == "/dev/ptmx";
                let o_path = info.flags & libc::O_PATH != 0;
                // A tree carries a deleted regular file or a memfd with its contents
                // (its analysis checks size and links).
                let nameless_ok = purpose == Purpose::Tree && regular && o_path.not();
                if s.ends_with(" (deleted)") && !nameless_ok {
                    why.push(CantMove::UnsupportedFd { fd: fd.fd, what: format!("a deleted file ({s})") });
                } else if !(regular || dir || o_path || PORTABLE_DEVICES.contains(&s.as_ref()) || ((tty || fifo) && (fd.fd <= 2 || purpose == Purpose::Tree))) {
                    why.push(CantMove::UnsupportedFd { fd: fd.fd, what: format!("{s} (only regular files, directories, O_PATH descriptors, /dev/null, /dev/zero, /dev/urandom and a terminal or pipe on fds 0-2 are supported)") });
                }
            }
            _ => why.push(CantMove::UnsupportedFd { fd: fd.fd, what }),
        }
    }
    let maps = procinfo::maps(&p)?;
    let migrate = matches!(purpose, Purpose::Migrate { .. });
    // Shared anonymous memory a parent or child maps too stays shared only in a tree
    // (or at home, for a migration: see [`stays_home`]).
    if purpose != Purpose::Tree && !migrate {
        for other in relatives_sharing(status.ppid, &kids, &maps).1 {
            why.push(CantMove::SharedMemory { with: other });
        }
    }
    let with_relatives = if migrate { relatives_sharing(status.ppid, &kids, &maps).0 } else { Vec::new() };
    let mut kept_home = Vec::new();
    for m in maps {
        let shared = m.perms.contains(procfs::process::MMPermissions::SHARED);
        if migrate && stays_home(&m, &with_relatives) {
            kept_home.push(m.address);
            continue;
        }
        match &m.pathname {
            MMapPath::Path(path) => {
                let s = path.to_string_lossy().to_string();
                if s == IO_URING_MAPPING {
                    if !why.iter().any(|w| matches!(w, CantMove::IoUring { .. })) {
                        why.push(CantMove::IoUring { fd: None });
                    }
                } else if s.starts_with("/SYSV") {
                    why.push(CantMove::SysvShm);
                } else if purpose == Purpose::Tree && (s.ends_with(" (deleted)") || s.starts_with("/memfd:")) {
                    // A tree carries it as a memory object (shared memory, a memfd, a deleted file).
                } else if (s.ends_with(" (deleted)") && !(shared && s.starts_with("/dev/zero"))) || s.starts_with("/memfd:") {
                    why.push(CantMove::DeletedFile { path: s });
                }
                // A shared writable mapping of a file with a name is carried: its
                // contents are the file's, mapped again from it.
            }
            MMapPath::Vsys(_) => why.push(CantMove::SysvShm),
            MMapPath::Other(_) => {
                let name = procinfo::special_name(&m.pathname).unwrap_or("").to_string();
                if name != "vvar_vclock" && name != "vvar" && name != "vdso" {
                    why.push(CantMove::UnknownMapping { name });
                }
            }
            _ => {}
        }
    }
    why.dedup();
    Ok(Checked { why, kept_home })
}

/// Which shared anonymous mappings (/dev/zero, by device and inode) of `maps` the
/// parent `ppid` or a child of `kids` maps too, and which of those relatives do.
fn relatives_sharing(ppid: i32, kids: &[i32], maps: &[MemoryMap]) -> (Vec<MapKey>, Vec<i32>) {
    let anon_shm = |m: &MemoryMap| match &m.pathname {
        MMapPath::Path(path) if m.perms.contains(procfs::process::MMPermissions::SHARED) && path.to_string_lossy().starts_with("/dev/zero") => Some((m.dev, m.inode)),
        _ => None,
    };
    let mine: Vec<MapKey> = maps.iter().filter_map(anon_shm).collect();
    let (mut keys, mut who) = (Vec::new(), Vec::new());
    if mine.is_empty() {
        return (keys, who);
    }
    for other in std::iter::once(ppid).chain(kids.iter().copied()).filter(|&o| o > 1) {
        // A relative whose memory map we may not read is not one we share with by ourselves.
        let theirs = procinfo::open(other).and_then(|o| procinfo::maps(&o)).unwrap_or_default();
        let common: Vec<MapKey> = theirs.iter().filter_map(anon_shm).filter(|k| mine.contains(k)).collect();
        if !common.is_empty() {
            who.push(other);
            keys.extend(common);
        }
    }
    (keys, who)
}

/// A mapping by device and inode.
type MapKey = ((i32, i32), u64);

/// For a migration: whether mapping `m` is memory the process shares with processes at
/// home, which stays there, mapped in its deputy, instead of travelling
/// (`VmaKind::AtHome`): a shared mapping of a deleted file, a memfd or SysV shared
/// memory, a shared writable file (its writes must reach the file at home), or shared
/// anonymous memory that a relative maps too (`with_relatives`, from
/// [`relatives_sharing`]); not a device's memory, nor the kernel's (an io_uring's
/// rings). Away, the process's first touch of it brings it home.
pub(crate) fn stays_home(m: &MemoryMap, with_relatives: &[MapKey]) -> bool {
    if !m.perms.contains(procfs::process::MMPermissions::SHARED) {
        return false;
    }
    match &m.pathname {
        MMapPath::Vsys(_) => true,
        MMapPath::Path(path) => {
            let s = path.to_string_lossy();
            if s.starts_with("/dev/zero") {
                with_relatives.contains(&(m.dev, m.inode))
            } else if !s.starts_with('/') || (s.starts_with("/dev/") && !s.starts_with("/dev/shm/")) {
                // The kernel's own objects (an io_uring's rings) and devices are not memory.
                false
            } else {
                s.starts_with("/SYSV") || s.starts_with("/memfd:") || s.ends_with(" (deleted)") || m.perms.contains(procfs::process::MMPermissions::WRITE)
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{stays_home, MemoryMap};
    use procfs::FromBufRead;

    fn maps(text: &str) -> Vec<MemoryMap> {
        procfs::process::MemoryMaps::from_buf_read(text.as_bytes()).expect("maps").0
    }

    #[test]
    fn memory_shared_with_home_stays_there() {
        let m = maps(
            "7f0000000000-7f0000001000 rw-s 00000000 00:1a 42 /dev/shm/sem.x (deleted)\n\
             7f0000001000-7f0000002000 rw-s 00000000 00:01 7 /memfd:pool (deleted)\n\
             7f0000002000-7f0000003000 rw-s 00000000 00:01 9 /dev/zero (deleted)\n\
             7f0000003000-7f0000004000 rw-s 00000000 00:01 10 /dev/zero (deleted)\n\
             7f0000004000-7f0000005000 rw-s 00000000 08:01 11 /home/u/data\n\
             7f0000005000-7f0000006000 r--s 00000000 08:01 12 /usr/share/db\n\
             7f0000006000-7f0000007000 rw-p 00000000 08:01 13 /tmp/#13 (deleted)\n\
             7f0000007000-7f0000008000 rw-s 00000000 00:0e 14 anon_inode:[io_uring]\n\
             7f0000008000-7f0000009000 rw-s 00000000 00:05 15 /dev/dri/card0\n\
             7f0000009000-7f000000a000 rw-s 00000000 00:01 16 /SYSV00001234\n",
        );
        // Only the second shared anonymous mapping is mapped by a relative too.
        let with_relatives = [((0, 1), 10)];
        let home: Vec<bool> = m.iter().map(|m| stays_home(m, &with_relatives)).collect();
        assert_eq!(home, [true, true, false, true, true, false, false, false, false, true]);
    }
}
