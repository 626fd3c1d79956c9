//! The model of a captured process. Field names follow the kernel's own
//! (`start_brk`, `arg_start`, `sa_flags`) so the capture and restore code read
//! like the kernel interfaces they drive.

use serde::{Deserialize, Serialize};

/// Everything about a process except the contents of its memory pages, which
/// follow in the stream as [`crate::Section::Pages`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessImage {
    pub origin: Origin,
    pub task: Task,
    pub regs: Registers,
    pub signals: Signals,
    pub mm: MmFields,
    pub vmas: Vec<Vma>,
    pub files: Vec<OpenFile>,
    /// Every thread but the main one (the thread-group leader, whose own state
    /// is in `task`, `regs` and `signals`), in the order they were found.
    pub threads: Vec<Thread>,
    /// Process state added in format version 3, carried as an extension of the
    /// Process section (see `format.rs`); `None` in a version 2 image, whose
    /// restore leaves these things as the restorer has them.
    #[serde(skip)]
    pub state: Option<ProcessState>,
    /// Format version 4, an incremental checkpoint: what it leaves to the image
    /// before it (an extension of the Process section, see `format.rs`); `None` in
    /// an image that stands on its own.
    #[serde(skip)]
    pub increment: Option<Increment>,
    /// Format version 6: the process's seccomp filters, the first installed first
    /// (every thread runs under the same ones); an extension of the Process section,
    /// absent when empty.
    #[serde(skip)]
    pub seccomp: Vec<SeccompFilter>,
}

/// A seccomp filter (`seccomp(SECCOMP_SET_MODE_FILTER)`), format version 6.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompFilter {
    /// SECCOMP_FILTER_FLAG_* it was installed with that stay with it (LOG,
    /// SPEC_ALLOW), as PTRACE_SECCOMP_GET_METADATA tells them.
    pub flags: u64,
    /// Its classic BPF program: `struct sock_filter`s (code u16, jt u8, jf u8,
    /// k u32; little-endian), 8 bytes each, 1 to 4,096 of them.
    pub insns: Vec<u8>,
}

/// What an incremental checkpoint leaves to its parent, the checkpoint before it:
/// the pages of `inherit` (address ranges of private anonymous memory not written
/// since the parent was captured) are the parent's. Restored only through its chain
/// (`crate::chain::merge`), never alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Increment {
    /// The id of this checkpoint and of its parent (given by whoever keeps the chain).
    pub id: u64,
    pub parent: u64,
    /// Ascending, disjoint, page-aligned (address, length) ranges, each inside one
    /// private anonymous region.
    pub inherit: Vec<(u64, u64)>,
}

/// Process-wide state beyond the core image (format version 3).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessState {
    /// The interval timers that were armed (`setitimer`).
    pub itimers: Vec<Itimer>,
    /// /proc/PID/oom_score_adj.
    pub oom_score_adj: i32,
    /// PR_SET_CHILD_SUBREAPER.
    pub child_subreaper: bool,
    /// PR_SET_THP_DISABLE.
    pub thp_disable: bool,
    /// PR_SET_NO_NEW_PRIVS.
    pub no_new_privs: bool,
    /// PR_GET_DUMPABLE: 0, 1 or 2.
    pub dumpable: u32,
    /// File locks the process holds (flock, POSIX and OFD).
    pub locks: Vec<FileLock>,
    /// POSIX timers (timer_create), restored with their ids.
    pub posix_timers: Vec<PosixTimer>,
    /// Memory regions with advice, locks or guard pages (the others have none).
    pub regions: Vec<RegionState>,
    /// The main thread's capability sets (/proc/PID/status).
    pub caps: Caps,
    /// membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS): the commands registered.
    pub membarrier: u32,
    /// /proc/PID/loginuid (u32::MAX when unset).
    pub loginuid: u32,
}

/// Capability sets, one bit per capability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caps {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

/// What `madvise` / `mlock` set on a memory region, and its guard pages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionState {
    pub start: u64,
    pub end: u64,
    /// MADV_* values to give it again (DONTDUMP, WIPEONFORK, DONTFORK,
    /// HUGEPAGE, NOHUGEPAGE, MERGEABLE, RANDOM, SEQUENTIAL).
    pub advice: Vec<i32>,
    /// mlock'ed (VM_LOCKED).
    pub locked: bool,
    /// Runs of guard pages (MADV_GUARD_INSTALL): (address, length).
    pub guards: Vec<(u64, u64)>,
}

/// A POSIX timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosixTimer {
    pub id: i32,
    pub clockid: i32,
    /// `sigev_notify`: SIGEV_SIGNAL (0), SIGEV_NONE (1), with SIGEV_THREAD_ID (4)
    /// when it signals one thread, `tid`.
    pub notify: i32,
    pub signo: i32,
    /// `sigev_value`, given back to the program with the signal.
    pub value: u64,
    pub tid: i32,
    pub interval_ns: u64,
    /// Time left until it next fires; 0 when disarmed.
    pub value_ns: u64,
}

/// One armed interval timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Itimer {
    /// ITIMER_REAL (0), ITIMER_VIRTUAL (1) or ITIMER_PROF (2).
    pub which: i32,
    pub interval_us: u64,
    /// Time left until it next fires.
    pub value_us: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// flock(2): belongs to the open file.
    Flock,
    /// fcntl F_SETLK: belongs to the process.
    Posix,
    /// fcntl F_OFD_SETLK: belongs to the open file.
    Ofd,
    /// fcntl F_SETLEASE (format version 6): a lease on the open file, a write
    /// lease if `write`, else a read lease. Its `start` is the signal the process
    /// asked for when the lease is broken (F_SETSIG; 0: SIGIO); `len` is 0.
    Lease,
}

/// A lock held on the file open at `fd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLock {
    pub fd: i32,
    pub kind: LockKind,
    /// An exclusive (write) lock; else shared (read).
    pub write: bool,
    /// First byte locked (0 for flock).
    pub start: u64,
    /// Bytes locked; 0 means to the end of the file (as `l_len`).
    pub len: u64,
}

/// What the kernel keeps per thread, for a thread other than the main one.
/// What all threads share (memory, signal actions, files, credentials of a
/// well-behaved program) is in the [`ProcessImage`] once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    /// Its id when captured; restored as the same id when it is free and herd may
    /// choose ids (clone3 `set_tid`), else the kernel's next one.
    pub tid: i32,
    pub comm: String,
    pub regs: Registers,
    /// Its signal mask.
    pub blocked: u64,
    /// Signals queued to this thread alone (`shared` is false); those queued to
    /// the whole process are in [`Signals::pending`].
    pub pending: Vec<PendingSignal>,
    pub altstack: SigAltStack,
    pub clear_child_tid: u64,
    pub robust_list: (u64, u64),
    pub rseq: Option<Rseq>,
    pub sched: Sched,
}

/// How a thread is scheduled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sched {
    /// SCHED_OTHER, SCHED_BATCH, SCHED_IDLE, SCHED_FIFO, SCHED_RR (with
    /// SCHED_RESET_ON_FORK as the kernel reports it).
    pub policy: i32,
    /// Real-time priority (0 for the normal policies).
    pub priority: i32,
    /// Nice value, -20..=19.
    pub nice: i32,
}

/// Where and when the image was made; what a restoring machine must match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    pub hostname: String,
    pub kernel_release: String,
    pub created_unix_ms: u64,
    pub herd_version: String,
    /// blake3 of the source's vDSO text; a restore needs the same vDSO.
    pub vdso_hash: [u8; 32],
    /// XCR0 feature bits the process's xstate uses.
    pub xfeatures: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub pid: i32,
    pub comm: String,
    pub cmdline: Vec<String>,
    pub exe: String,
    pub cwd: String,
    pub umask: u32,
    pub personality: u32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub rlimits: Vec<Rlimit>,
    /// Address the kernel clears and futex-wakes at exit (set_tid_address).
    pub clear_child_tid: u64,
    /// set_robust_list(head, len); head 0 when none.
    pub robust_list: (u64, u64),
    pub rseq: Option<Rseq>,
    /// The main thread's scheduling (each other thread has its own in [`Thread`]).
    pub sched: Sched,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: u32,
    pub cur: u64,
    pub max: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rseq {
    pub ptr: u64,
    pub len: u32,
    pub sig: u32,
}

/// `user_regs_struct` as 27 u64 in kernel order, and the XSAVE area
/// (NT_X86_XSTATE) holding x87/SSE/AVX/AVX-512 state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registers {
    pub gp: Vec<u64>,
    pub xstate: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    pub blocked: u64,
    pub handlers: Vec<SigAction>,
    pub altstack: SigAltStack,
    pub pending: Vec<PendingSignal>,
}

/// A non-default disposition (`struct kernel_sigaction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    pub signo: u32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAltStack {
    pub sp: u64,
    pub flags: i32,
    pub size: u64,
}

/// One queued signal: the raw 128-byte siginfo, and whether it was queued to
/// the whole process (shared) or to the thread.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingSignal {
    pub shared: bool,
    pub signo: u32,
    pub siginfo: Vec<u8>,
}

/// The fields of `struct prctl_mm_map` (PR_SET_MM_MAP) and the auxv.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub auxv: Vec<u64>,
}

pub const PROT_READ: u8 = 1;
pub const PROT_WRITE: u8 = 2;
pub const PROT_EXEC: u8 = 4;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// PROT_* bits as above.
    pub prot: u8,
    pub shared: bool,
    pub kind: VmaKind,
    /// Bytes of this VMA whose contents are in the image.
    pub stored_bytes: u64,
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    pub fn contains(&self, start: u64, end: u64) -> bool {
        self.start <= start && end <= self.end
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum VmaKind {
    Anonymous,
    Heap,
    Stack,
    /// The vDSO text; restored with ARCH_MAP_VDSO_64 at its old address.
    Vdso,
    /// [vvar] / [vvar_vclock]; they come back with the vDSO.
    Vvar,
    /// A file mapping. Pages still identical to the file are not stored;
    /// the restore maps them from the file after checking `file.hash`.
    File { file: FileRef, offset: u64 },
    /// Added in format version 4: a mapping (shared or private, as [`Vma::shared`])
    /// of memory object `object` of the tree image (`crate::tree::TreeImage::memory`:
    /// shared anonymous memory, a memfd or a deleted file, made once for every
    /// process that maps it) from byte `offset` of it. A shared mapping's stored
    /// pages are the object's contents there; a private one's are its own.
    Memory { object: u32, offset: u64 },
    /// Added in format version 5, only in a migration's image (and a checkpoint of a
    /// migrated process, which its home restores): memory the process shares with
    /// processes at its home (a shared mapping of a deleted file, a memfd, shared
    /// anonymous memory a relative maps too, a shared writable file), which stays
    /// mapped at home in its deputy; `name` is what /proc/PID/maps called it there.
    /// No contents travel: on another node it is a placeholder whose first touch
    /// brings the process home, where the deputy's mapping is its memory again.
    AtHome { name: String },
}

/// A file on the capturing machine, identified by content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub path: String,
    pub size: u64,
    /// blake3 of the whole file.
    pub hash: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenFile {
    pub fd: i32,
    pub cloexec: bool,
    pub kind: FileKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file reopened by path at `offset` with `flags` (O_APPEND kept).
    Regular { path: String, flags: i32, offset: u64 },
    /// /dev/null, /dev/zero, /dev/urandom, /dev/random.
    Device { path: String, flags: i32 },
    /// A terminal or pipe on fd 0-2: attached to the restorer's own fd of the
    /// same number. `what` says what it was (for `herd inspect`).
    Inherited { what: String },
    // Kinds below were added in format version 3 (enum variants are encoded by
    // index, so new ones go at the end).
    /// A directory, reopened by path (`O_DIRECTORY`), at its getdents position.
    Directory { path: String, flags: i32, offset: u64 },
    /// An `O_PATH` descriptor of any file, reopened by path.
    PathOnly { path: String, flags: i32 },
    /// eventfd2(count, flags); `flags` holds EFD_SEMAPHORE and O_NONBLOCK.
    EventFd { count: u64, flags: i32 },
    /// timerfd_create(clockid, flags), armed with the time left and the
    /// interval (nanoseconds, 0 = disarmed / one-shot), and `ticks` expirations
    /// not read yet.
    TimerFd { clockid: i32, flags: i32, interval_ns: u64, value_ns: u64, ticks: u64 },
    /// signalfd4(mask, flags).
    SignalFd { mask: u64, flags: i32 },
    /// epoll_create1(flags) and its interest list; every target is an fd of the
    /// image, restored before it.
    Epoll { flags: i32, targets: Vec<EpollTarget> },
    /// inotify_init1(flags) with its watches, made again in the order of their
    /// watch descriptors (so each gets its number back).
    Inotify { flags: i32, watches: Vec<InotifyWatch> },
    /// A pidfd of process `pid`, another process of the same tree image (its
    /// pid is the same after the restore), with O_NONBLOCK in `flags`.
    PidFd { pid: i32, flags: i32 },
    /// An open file shared with other descriptors (a dup, or inherited by or
    /// from another process of a tree image): entry `ofd` of the tree's table
    /// (`crate::tree::TreeImage::ofds`), made once and placed at every fd that
    /// shares it.
    Shared { ofd: u32 },
}

/// One inotify watch: its descriptor, the path of what it watches, its mask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InotifyWatch {
    pub wd: i32,
    pub path: String,
    pub mask: u32,
}

/// Why a list of open files is not one a process can have: fd numbers must be
/// distinct and in `0..=2^20`, and only fds 0-2 may be `Inherited`.
pub fn check_files(files: &[OpenFile]) -> Result<(), String> {
    let mut fds: Vec<i32> = files.iter().map(|f| f.fd).collect();
    fds.sort_unstable();
    if fds.windows(2).any(|w| w[0] == w[1]) || fds.first().is_some_and(|&f| f < 0) || fds.last().is_some_and(|&f| f > 1 << 20) {
        return Err("an fd number is negative, too large or given twice".into());
    }
    if let Some(f) = files.iter().find(|f| matches!(f.kind, FileKind::Inherited { .. }) && f.fd > 2) {
        return Err(format!("fd {} is marked inherited; only fds 0-2 can be", f.fd));
    }
    Ok(())
}

/// One entry of an epoll interest list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpollTarget {
    pub fd: i32,
    pub events: u32,
    pub data: u64,
}
