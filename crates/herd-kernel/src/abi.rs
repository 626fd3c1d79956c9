//! Kernel ABI: constants and `repr(C)` layouts herd uses, with the kernel
//! header each comes from. x86_64 only.

#![allow(dead_code)]

// include/uapi/linux/ptrace.h
pub const PTRACE_SEIZE: u32 = 0x4206;
pub const PTRACE_INTERRUPT: u32 = 0x4207;
pub const PTRACE_LISTEN: u32 = 0x4208;
pub const PTRACE_PEEKSIGINFO: u32 = 0x4209;
pub const PTRACE_GETSIGMASK: u32 = 0x420a;
pub const PTRACE_SETSIGMASK: u32 = 0x420b;
pub const PTRACE_GET_RSEQ_CONFIGURATION: u32 = 0x420f;
pub const PTRACE_SECCOMP_GET_FILTER: u32 = 0x420c;
pub const PTRACE_SECCOMP_GET_METADATA: u32 = 0x420d;
pub const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
pub const PTRACE_EVENT_STOP: i32 = 128;
pub const PTRACE_O_TRACESYSGOOD: u64 = 1;
pub const PTRACE_O_EXITKILL: u64 = 1 << 20;
/// The tracee's seccomp filters do not screen its calls while it is traced (needs
/// CAP_SYS_ADMIN): the calls a capture injects are not the program's to refuse.
pub const PTRACE_O_SUSPEND_SECCOMP: u64 = 1 << 21;
pub const PTRACE_O_TRACECLONE: u64 = 1 << 3;
pub const PTRACE_EVENT_CLONE: i32 = 3;
pub const PTRACE_O_TRACEFORK: u64 = 1 << 1;
pub const PTRACE_EVENT_FORK: i32 = 1;
pub const PTRACE_O_TRACEVFORK: u64 = 1 << 2;
pub const PTRACE_EVENT_VFORK: i32 = 2;
pub const PTRACE_O_TRACEEXEC: u64 = 1 << 4;
pub const PTRACE_EVENT_EXEC: i32 = 4;

// include/uapi/linux/elf.h
pub const NT_PRSTATUS: u32 = 1;
pub const NT_X86_XSTATE: u32 = 0x202;

// arch/x86/include/uapi/asm/prctl.h
pub const ARCH_MAP_VDSO_64: u64 = 0x2003;

// include/uapi/linux/prctl.h
pub const PR_SET_MM: u64 = 35;
pub const PR_SET_MM_MAP: u64 = 14;
pub const PR_GET_TID_ADDRESS: u64 = 40;
pub const PR_SET_NAME: u64 = 15;
pub const PR_SET_DUMPABLE: u64 = 4;
pub const PR_SET_PDEATHSIG: u64 = 1;

// include/uapi/linux/rseq.h
pub const RSEQ_FLAG_UNREGISTER: u64 = 1;

// include/linux/errno.h (kernel-internal restart codes seen by ptrace)
pub const ERESTARTSYS: i64 = 512;
pub const ERESTARTNOINTR: i64 = 513;
pub const ERESTARTNOHAND: i64 = 514;
pub const ERESTART_RESTARTBLOCK: i64 = 516;

// arch/x86/entry/syscalls/syscall_64.tbl
pub const SYS_READ: u64 = 0;
pub const SYS_WRITE: u64 = 1;
pub const SYS_POLL: u64 = 7;
pub const SYS_CLOSE: u64 = 3;
pub const SYS_MMAP: u64 = 9;
pub const SYS_MPROTECT: u64 = 10;
pub const SYS_MUNMAP: u64 = 11;
pub const SYS_BRK: u64 = 12;
pub const SYS_RT_SIGACTION: u64 = 13;
pub const SYS_NANOSLEEP: u64 = 35;
pub const SYS_GETPID: u64 = 39;
pub const SYS_SETRESUID: u64 = 117;
pub const SYS_SETRESGID: u64 = 119;
pub const SYS_SETGROUPS: u64 = 116;
pub const SYS_SIGALTSTACK: u64 = 131;
pub const SYS_RT_SIGQUEUEINFO: u64 = 129;
pub const SYS_PRCTL: u64 = 157;
pub const SYS_ARCH_PRCTL: u64 = 158;
pub const SYS_GETTID: u64 = 186;
pub const SYS_SET_TID_ADDRESS: u64 = 218;
pub const SYS_CLOCK_NANOSLEEP: u64 = 230;
pub const SYS_OPENAT: u64 = 257;
pub const SYS_SET_ROBUST_LIST: u64 = 273;
pub const SYS_RT_TGSIGQUEUEINFO: u64 = 297;
pub const SYS_RSEQ: u64 = 334;
pub const SYS_CLOSE_RANGE: u64 = 436;
pub const SYS_PAUSE: u64 = 34;
pub const SYS_EXIT_GROUP: u64 = 231;
pub const SYS_TGKILL: u64 = 234;
pub const SYS_SECCOMP: u64 = 317;
pub const SYS_PRLIMIT64: u64 = 302;
pub const SYS_EXIT: u64 = 60;
pub const SYS_FUTEX: u64 = 202;
pub const SYS_CLONE3: u64 = 435;
pub const SYS_CLONE: u64 = 56;
pub const SYS_WAIT4: u64 = 61;
/// clone(2): the new process's parent is the caller's parent.
pub const CLONE_PARENT: u64 = libc::CLONE_PARENT as u64;
pub const SYS_SCHED_SETSCHEDULER: u64 = 144;
pub const SYS_SETPRIORITY: u64 = 141;
pub const SECCOMP_FILTER_FLAG_TSYNC: u64 = 1;
pub const SECCOMP_FILTER_FLAG_TSYNC_ESRCH: u64 = 1 << 4;

pub const SECCOMP_SET_MODE_FILTER: u64 = 1;
pub const SECCOMP_FILTER_FLAG_NEW_LISTENER: u64 = 1 << 3;
pub const PR_SET_NO_NEW_PRIVS: u64 = 38;
pub const PR_GET_DUMPABLE: u64 = 3;
pub const PR_SET_CHILD_SUBREAPER: u64 = 36;
pub const PR_GET_CHILD_SUBREAPER: u64 = 37;
pub const PR_SET_THP_DISABLE: u64 = 41;
pub const PR_GET_THP_DISABLE: u64 = 42;

// Process state and descriptors a checkpoint carries beyond memory and files.
pub const SYS_IOCTL: u64 = 16;
pub const SYS_GETITIMER: u64 = 36;
pub const SYS_SETITIMER: u64 = 38;
pub const SYS_FCNTL: u64 = 72;
pub const SYS_FLOCK: u64 = 73;
pub const SYS_EPOLL_CTL: u64 = 233;
pub const SYS_TIMERFD_CREATE: u64 = 283;
pub const SYS_TIMERFD_SETTIME: u64 = 286;
pub const SYS_SIGNALFD4: u64 = 289;
pub const SYS_EVENTFD2: u64 = 290;
pub const SYS_EPOLL_CREATE1: u64 = 291;
pub const SYS_DUP3: u64 = 292;
pub const SYS_SETPGID: u64 = 109;
pub const SYS_SOCKETPAIR: u64 = 53;
pub const SYS_RECVMSG: u64 = 47;
pub const SYS_CAPSET: u64 = 126;
pub const SYS_PIDFD_OPEN: u64 = 434;
pub const SYS_INOTIFY_INIT1: u64 = 294;
pub const SYS_INOTIFY_ADD_WATCH: u64 = 254;
pub const SYS_INOTIFY_RM_WATCH: u64 = 255;
pub const SYS_MEMBARRIER: u64 = 324;
/// membarrier: the commands this process has registered for (Linux 6.3).
pub const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;
pub const PR_CAPBSET_DROP: u64 = 24;
pub const PR_CAP_AMBIENT: u64 = 47;
pub const PR_CAP_AMBIENT_RAISE: u64 = 2;
/// `_LINUX_CAPABILITY_VERSION_3`.
pub const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
pub const SYS_MADVISE: u64 = 28;
pub const SYS_MLOCK: u64 = 149;
pub const MADV_GUARD_INSTALL: u64 = 102;
pub const SYS_TIMER_CREATE: u64 = 222;
pub const SYS_TIMER_SETTIME: u64 = 223;
pub const SYS_TIMER_GETTIME: u64 = 224;
/// prctl: timer_create takes the id it is given (Linux 6.17+); arg 1 on, 0 off.
pub const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
pub const SYS_RT_SIGTIMEDWAIT: u64 = 128;
pub const F_SETLK: u64 = 6;
pub const F_OFD_SETLK: u64 = 37;
/// fcntl: the signal sent for I/O readiness and lease breaks (libc lacks them).
pub const F_SETSIG: u64 = 10;
pub const F_GETSIG: u64 = 11;
pub const EPOLL_CTL_ADD: u64 = 1;
/// `_IOW('T', 0, __u64)`: sets a timerfd's count of expirations not read yet.
pub const TFD_IOC_SET_TICKS: u64 = 0x4008_5400;

/// `struct flock` (x86-64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Flock {
    pub l_type: i16,
    pub l_whence: i16,
    /// Explicit padding (the kernel's is implicit), so every byte is a value.
    pub pad0: i32,
    pub l_start: i64,
    pub l_len: i64,
    pub l_pid: i32,
    pub pad1: i32,
}

/// `struct itimerval` / `struct itimerspec` as four 64-bit words:
/// interval (sec, usec or nsec), then value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TimerPair {
    pub interval_sec: i64,
    pub interval_frac: i64,
    pub value_sec: i64,
    pub value_frac: i64,
}

/// `struct epoll_event`, packed on x86-64.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EpollEvent {
    pub events: u32,
    pub data: u64,
}

pub const AT_FDCWD: i64 = -100;
/// TASK_SIZE with 4-level page tables: the top of user address space.
pub const TASK_SIZE_4L: u64 = 0x7fff_ffff_f000;

/// `struct prctl_mm_map` (include/uapi/linux/prctl.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PrctlMmMap {
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
    pub auxv: u64,
    pub auxv_size: u32,
    pub exe_fd: u32,
}

/// `struct kernel_sigaction` as rt_sigaction takes it on x86_64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelSigaction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// `stack_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StackT {
    pub sp: u64,
    pub flags: i32,
    pub _pad: i32,
    pub size: u64,
}

/// `struct clone_args` of clone3 (CLONE_ARGS_SIZE_VER2: with `cgroup`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// The flags of a thread as pthread_create makes one (less the ones that
/// write tids or set TLS: a restore sets those itself).
pub const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM) as u64;

/// `struct ptrace_peeksiginfo_args`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PeekSiginfoArgs {
    pub off: u64,
    pub flags: u32,
    pub nr: i32,
}

/// `struct ptrace_rseq_configuration`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RseqConfiguration {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

/// `struct user_regs_struct` (arch/x86/include/asm/user_64.h), 27 words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

impl Regs {
    pub fn to_words(&self) -> Vec<u64> {
        vec![
            self.r15, self.r14, self.r13, self.r12, self.rbp, self.rbx, self.r11, self.r10, self.r9,
            self.r8, self.rax, self.rcx, self.rdx, self.rsi, self.rdi, self.orig_rax, self.rip,
            self.cs, self.eflags, self.rsp, self.ss, self.fs_base, self.gs_base, self.ds, self.es,
            self.fs, self.gs,
        ]
    }

    /// Inverse of [`Regs::to_words`]; `None` unless exactly 27 words.
    pub fn from_words(w: &[u64]) -> Option<Self> {
        let w: &[u64; 27] = w.try_into().ok()?;
        Some(Regs {
            r15: w[0], r14: w[1], r13: w[2], r12: w[3], rbp: w[4], rbx: w[5], r11: w[6],
            r10: w[7], r9: w[8], r8: w[9], rax: w[10], rcx: w[11], rdx: w[12], rsi: w[13],
            rdi: w[14], orig_rax: w[15], rip: w[16], cs: w[17], eflags: w[18], rsp: w[19],
            ss: w[20], fs_base: w[21], gs_base: w[22], ds: w[23], es: w[24], fs: w[25], gs: w[26],
        })
    }

    /// The return value of a syscall stop as a signed number.
    pub fn ret(&self) -> i64 {
        self.rax as i64
    }
}

/// Views a plain-old-data kernel structure as bytes.
pub fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is one of the repr(C) plain-old-data structures above (Copy,
    // no pointers into Rust memory, no padding that is read as a value); the
    // slice covers exactly its size and lives no longer than the borrow.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

/// Reads a plain-old-data kernel structure from bytes (zero-padded if short).
pub fn from_bytes<T: Copy + Default>(b: &[u8]) -> T {
    let mut v = T::default();
    let n = b.len().min(std::mem::size_of::<T>());
    // SAFETY: T is a repr(C) plain-old-data structure for which every bit
    // pattern is valid (integers only); we copy at most size_of::<T>() bytes
    // into it from a slice of at least n bytes.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), &mut v as *mut T as *mut u8, n) };
    v
}
