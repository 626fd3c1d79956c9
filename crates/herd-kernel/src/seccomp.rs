//! seccomp user notification: the classic-BPF filter a migrated process runs
//! under, and the listener on which herdd receives and answers the system
//! calls the filter traps.
//!
//! The filter only looks at the architecture, the system call number and, for
//! `mmap`, the flags argument, so the kernel's per-number action cache
//! (`seccomp_cache_prepare`, since 5.11) recognises every allowed number but
//! `mmap` as always allowed and skips the filter for them entirely.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::{KernelError, Result};

/// `AUDIT_ARCH_X86_64` (linux/audit.h): `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// x32 system calls are x86_64 numbers with this bit set.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// The kernel refuses longer programs.
pub const BPF_MAXINSNS: usize = 4096;
/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (6.6): wake the answering thread on
/// the target's CPU, which halves the round trip.
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

// Classic BPF opcodes, the subset this builder emits (all of which the
// kernel's action-cache emulator understands).
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JMP_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JMP_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JMP_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JMP_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

// Offsets in struct seccomp_data.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// Low 32 bits of argument `i` (little endian).
const fn data_arg_low(i: u32) -> u32 {
    16 + 8 * i
}

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;

/// One classic-BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const _: () = assert!(std::mem::size_of::<SockFilter>() == std::mem::size_of::<libc::sock_filter>());
const _: () = assert!(std::mem::size_of::<SockFilter>() == 8);

impl SockFilter {
    /// A statement (load, return, unconditional jump).
    pub const fn stmt(code: u16, k: u32) -> Self {
        SockFilter { code, jt: 0, jf: 0, k }
    }

    /// A conditional jump: `jt`/`jf` instructions forward when true/false.
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Self {
        SockFilter { code, jt, jf, k }
    }
}

/// A classic-BPF seccomp program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub insns: Vec<SockFilter>,
}

impl Filter {
    /// The program as the kernel's array of `struct sock_filter` (8 bytes per
    /// instruction, native endian), e.g. to hand to another process.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.insns.len() * 8);
        for i in &self.insns {
            out.extend_from_slice(&i.code.to_ne_bytes());
            out.push(i.jt);
            out.push(i.jf);
            out.extend_from_slice(&i.k.to_ne_bytes());
        }
        out
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Runs the program on one system call, as the kernel would, and returns
    /// the action (`SECCOMP_RET_*`). Only the instructions [`build_filter`]
    /// emits are understood: anything else, a jump out of the program or
    /// falling off its end gives `None`. For tests and diagnostics.
    pub fn evaluate(&self, arch: u32, nr: i32, ip: u64, args: &[u64; 6]) -> Option<u32> {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        data[8..16].copy_from_slice(&ip.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        loop {
            let insn = self.insns.get(pc)?;
            let cond = |taken: bool| pc + 1 + usize::from(if taken { insn.jt } else { insn.jf });
            pc = match insn.code {
                LD_W_ABS => {
                    let off = insn.k as usize;
                    let word = data.get(off..off + 4).filter(|_| off & 3 == 0)?;
                    acc = u32::from_ne_bytes(word.try_into().ok()?);
                    pc + 1
                }
                JMP_JA => pc + 1 + insn.k as usize,
                JMP_JEQ_K => cond(acc == insn.k),
                JMP_JGE_K => cond(acc >= insn.k),
                JMP_JSET_K => cond(acc & insn.k != 0),
                RET_K => return Some(insn.k),
                _ => return None,
            };
        }
    }
}

/// How many number tests share one `ret ALLOW`: each test's true branch must
/// reach it within the 255 instructions a conditional jump can skip.
const BLOCK: usize = 200;

/// The filter of a migrated process: every system call traps to the
/// listener (`SECCOMP_RET_USER_NOTIF`) except the numbers in `local`, which
/// run, and `mmap_nr`, which runs when its flags (argument 3) include
/// `MAP_ANONYMOUS`. Other architectures (e.g. `int 0x80`) and x32 numbers
/// always trap. `mmap_nr` in `local` is ignored (the flag test applies).
///
/// Layout: architecture and x32 tests, then the local numbers as a linear
/// chain of equality tests cut into blocks, each block followed by its own
/// `ret ALLOW` (so no jump is longer than a block), then the mmap test.
pub fn build_filter(local: &[u32], mmap_nr: u32) -> Filter {
    let mut nrs: Vec<u32> = Vec::with_capacity(local.len());
    for &nr in local {
        if nr != mmap_nr && nr < X32_SYSCALL_BIT && !nrs.contains(&nr) {
            nrs.push(nr);
        }
    }

    let mut p = vec![
        SockFilter::stmt(LD_W_ABS, DATA_ARCH),
        SockFilter::jump(JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        SockFilter::stmt(RET_K, RET_NOTIFY),
        SockFilter::stmt(LD_W_ABS, DATA_NR),
        SockFilter::jump(JMP_JGE_K, X32_SYSCALL_BIT, 0, 1),
        SockFilter::stmt(RET_K, RET_NOTIFY),
    ];
    for block in nrs.chunks(BLOCK) {
        for (i, &nr) in block.iter().enumerate() {
            // Skip the rest of the block and the `ja` to land on `ret ALLOW`.
            let jt = u8::try_from(block.len() - i).expect("block fits a jump");
            p.push(SockFilter::jump(JMP_JEQ_K, nr, jt, 0));
        }
        p.push(SockFilter::stmt(JMP_JA, 1));
        p.push(SockFilter::stmt(RET_K, RET_ALLOW));
    }
    p.extend_from_slice(&[
        SockFilter::jump(JMP_JEQ_K, mmap_nr, 1, 0),
        SockFilter::stmt(RET_K, RET_NOTIFY),
        SockFilter::stmt(LD_W_ABS, data_arg_low(3)),
        SockFilter::jump(JMP_JSET_K, libc::MAP_ANONYMOUS as u32, 0, 1),
        SockFilter::stmt(RET_K, RET_ALLOW),
        SockFilter::stmt(RET_K, RET_NOTIFY),
    ]);
    assert!(p.len() <= BPF_MAXINSNS, "seccomp filter of {} instructions is too long", p.len());
    Filter { insns: p }
}

/// Installs `filter` on the calling thread (after `PR_SET_NO_NEW_PRIVS`) and
/// returns its notification listener. Only async-signal-safe system calls
/// and, unless the filter is too long, no allocation: usable in a freshly
/// forked child. Herd installs the filter
/// in restored processes by injection; this is for tests.
pub fn install_in_self(filter: &Filter) -> Result<OwnedFd> {
    let len = u16::try_from(filter.insns.len()).map_err(|_| KernelError::Unexpected {
        pid: own_pid(),
        what: format!("seccomp filter of {} instructions is too long", filter.insns.len()),
    })?;
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(KernelError::last("prctl(PR_SET_NO_NEW_PRIVS)", own_pid()));
    }
    let prog = libc::sock_fprog { len, filter: filter.insns.as_ptr() as *mut libc::sock_filter };
    // SAFETY: `prog` points at `len` live instructions whose layout is
    // struct sock_filter (checked above); the kernel copies them and keeps
    // no pointer into our memory.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(KernelError::last("seccomp(SECCOMP_SET_MODE_FILTER)", own_pid()));
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing
    // else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// For a test's child process under `filter`: installs it on the calling thread
/// (with [`install_in_self`]) and reports the listener's number on stdout, a line
/// `LISTENER <fd>` (the parent takes it with pidfd_getfd), written by a thread started
/// before the filter: a write of the filtered thread would itself wait for the
/// listener. If the filter cannot be installed: a line `SKIP: <reason>`, and the
/// process exits 0.
pub fn install_in_self_and_report(filter: &Filter) -> OwnedFd {
    use std::io::Write;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reporter = std::thread::spawn(move || {
        if let Ok(line) = rx.recv() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
    });
    let listener = install_in_self(filter);
    let _ = tx.send(match &listener {
        Ok(fd) => format!("LISTENER {}\n", fd.as_raw_fd()),
        Err(e) => format!("SKIP: {e}\n"),
    });
    let _ = reporter.join();
    listener.unwrap_or_else(|_| std::process::exit(0))
}

/// What the child of [`listener_reported_by`] reported.
pub enum Reported {
    Listener(Listener),
    /// The child could not install the filter, or its listener cannot be taken: the
    /// reason, for a test's skip line.
    Skip(String),
}

/// For the parent of a child that called [`install_in_self_and_report`]: reads the
/// child's stdout `lines` up to its report and takes the listener (pidfd_getfd).
/// `Err`: the child ended first, or its report is garbled.
pub fn listener_reported_by(pid: i32, lines: &mut dyn Iterator<Item = std::io::Result<String>>) -> std::result::Result<Reported, String> {
    let fd: i32 = loop {
        let line = match lines.next() {
            Some(Ok(l)) => l,
            Some(Err(e)) => return Err(format!("reading the child's report: {e}")),
            None => return Err("the child ended before reporting its listener".into()),
        };
        // libtest may have printed "test NAME ... " first.
        if let Some((_, reason)) = line.split_once("SKIP:") {
            return Ok(Reported::Skip(format!("the child could not install the filter:{reason}")));
        }
        if let Some((_, fd)) = line.split_once("LISTENER ") {
            break fd.trim().parse().map_err(|_| format!("a garbled report: {line}"))?;
        }
    };
    Ok(match crate::pidfd::PidFd::open(pid).and_then(|p| p.get_fd(fd)) {
        Ok(fd) => Reported::Listener(Listener::from_fd(fd)),
        Err(e) => Reported::Skip(format!("pidfd_getfd of the child's listener: {e}")),
    })
}

fn own_pid() -> i32 {
    std::process::id() as i32
}

/// One trapped system call, from `SECCOMP_IOCTL_NOTIF_RECV`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notif {
    /// Cookie for the answer.
    pub id: u64,
    /// Thread that made the call (in the listener's pid namespace).
    pub pid: u32,
    pub nr: i32,
    /// `AUDIT_ARCH_*` of the call: anything but [`AUDIT_ARCH_X86_64`] is a
    /// 32-bit call whose numbers mean something else.
    pub arch: u32,
    pub ip: u64,
    pub args: [u64; 6],
}

/// What [`Listener::wait`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// A notification can be received.
    Notification,
    /// No process uses the filter any more (they all exited).
    Gone,
    /// The timeout passed.
    Timeout,
}

/// The notification fd of a seccomp filter.
///
/// Errors carry pid 0: the listener does not know which process a
/// notification belongs to until it is received.
#[derive(Debug)]
pub struct Listener(OwnedFd);

impl Listener {
    pub fn from_fd(fd: OwnedFd) -> Self {
        Listener(fd)
    }

    /// Sets `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6): the target and
    /// the answering thread hand the CPU to each other directly.
    pub fn set_sync_wake_up(&self) -> Result<()> {
        // SAFETY: NOTIF_SET_FLAGS takes its flags by value in the argument.
        let r = unsafe {
            libc::ioctl(self.0.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
        };
        if r < 0 {
            return Err(KernelError::last("SECCOMP_IOCTL_NOTIF_SET_FLAGS", 0));
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (negative: forever) for a notification or
    /// for the filter to lose its last process.
    pub fn wait(&self, timeout_ms: i32) -> Result<Readiness> {
        let mut pfd = libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: one pollfd on our stack, count 1.
            let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(KernelError::from_io("poll(seccomp listener)", 0, e));
            }
            return Ok(if r == 0 {
                Readiness::Timeout
            } else if pfd.revents & libc::POLLIN != 0 {
                Readiness::Notification
            } else {
                Readiness::Gone
            });
        }
    }

    /// Receives the next notification, blocking until there is one. An
    /// error whose `errno()` is ENOENT means the notification vanished (its
    /// process was killed, or a signal interrupted the call) before we got
    /// it: wait for the next one.
    pub fn recv(&self) -> Result<Notif> {
        loop {
            // SAFETY: seccomp_notif is plain data; all-zero is a valid value
            // and the kernel requires it to be zeroed.
            let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            // SAFETY: NOTIF_RECV writes one struct seccomp_notif into `n`.
            let r = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n as *mut libc::seccomp_notif) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(KernelError::from_io("SECCOMP_IOCTL_NOTIF_RECV", 0, e));
            }
            return Ok(Notif {
                id: n.id,
                pid: n.pid,
                nr: n.data.nr,
                arch: n.data.arch,
                ip: n.data.instruction_pointer,
                args: n.data.args,
            });
        }
    }

    /// Answers notification `id`: the call returns `-error` if `error` (a
    /// positive errno) is not 0, else `val`. `Ok(false)`: the call is no
    /// longer waiting (a signal interrupted it, or its process died).
    pub fn respond(&self, id: u64, val: i64, error: i32) -> Result<bool> {
        self.send(libc::seccomp_notif_resp { id, val, error: error.wrapping_neg(), flags: 0 })
    }

    /// Lets the call run in the target as if it had not been trapped.
    /// `Ok(false)`: the call is no longer waiting.
    pub fn continue_(&self, id: u64) -> Result<bool> {
        self.send(libc::seccomp_notif_resp { id, val: 0, error: 0, flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32 })
    }

    fn send(&self, resp: libc::seccomp_notif_resp) -> Result<bool> {
        loop {
            // SAFETY: NOTIF_SEND reads one struct seccomp_notif_resp.
            let r = unsafe {
                libc::ioctl(self.0.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp as *const libc::seccomp_notif_resp)
            };
            if r == 0 {
                return Ok(true);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOENT) => return Ok(false),
                _ => return Err(KernelError::from_io("SECCOMP_IOCTL_NOTIF_SEND", 0, e)),
            }
        }
    }

    /// Installs a duplicate of `src` in the process of waiting notification `id`
    /// (`SECCOMP_IOCTL_NOTIF_ADDFD`): at descriptor `at` (replacing what was there,
    /// as dup2 does) or, with None, at the lowest free one; close-on-exec if
    /// `cloexec`. Returns the descriptor's number in the process. The call stays
    /// waiting: answer it afterwards.
    pub fn add_fd(&self, id: u64, src: BorrowedFd<'_>, at: Option<i32>, cloexec: bool) -> Result<i32> {
        let req = libc::seccomp_notif_addfd {
            id,
            flags: if at.is_some() { libc::SECCOMP_ADDFD_FLAG_SETFD as u32 } else { 0 },
            srcfd: src.as_raw_fd() as u32,
            newfd: at.unwrap_or(0) as u32,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        loop {
            // SAFETY: NOTIF_ADDFD reads one struct seccomp_notif_addfd; `src` is a
            // descriptor we hold open for the duration of the call.
            let r = unsafe {
                libc::ioctl(self.0.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &req as *const libc::seccomp_notif_addfd)
            };
            if r >= 0 {
                return Ok(r);
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(KernelError::from_io("SECCOMP_IOCTL_NOTIF_ADDFD", 0, e));
            }
        }
    }

    /// Whether notification `id` is still waiting for an answer (its target
    /// has not died nor been interrupted). Check it after reading the
    /// target's memory to know that what was read belonged to the call.
    pub fn id_valid(&self, id: u64) -> bool {
        // SAFETY: NOTIF_ID_VALID reads one u64.
        unsafe { libc::ioctl(self.0.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id as *const u64) == 0 }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MMAP: u32 = libc::SYS_mmap as u32;

    fn run(f: &Filter, arch: u32, nr: u32, a3: u64) -> u32 {
        f.evaluate(arch, nr as i32, 0, &[0, 0, 0, a3, 0, 0]).expect("program runs to a return")
    }

    #[test]
    fn ioctl_numbers() {
        // _IOWR('!', 0, struct seccomp_notif) and friends, as in linux/seccomp.h.
        assert_eq!(std::mem::size_of::<libc::seccomp_notif>(), 80);
        assert_eq!(std::mem::size_of::<libc::seccomp_notif_resp>(), 24);
        assert_eq!(libc::SECCOMP_IOCTL_NOTIF_RECV, 0xc050_2100);
        assert_eq!(libc::SECCOMP_IOCTL_NOTIF_SEND, 0xc018_2101);
        assert_eq!(libc::SECCOMP_IOCTL_NOTIF_ID_VALID, 0x4008_2102);
        assert_eq!(libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, 0x4008_2104);
    }

    #[test]
    fn small_filter() {
        let f = build_filter(&[1, 2, 3], MMAP);
        for nr in [1, 2, 3] {
            assert_eq!(run(&f, AUDIT_ARCH_X86_64, nr, 0), RET_ALLOW);
            // Same numbers from another architecture or as x32 calls trap.
            assert_eq!(run(&f, 0x4000_0003 /* AUDIT_ARCH_I386 */, nr, 0), RET_NOTIFY);
            assert_eq!(run(&f, AUDIT_ARCH_X86_64, nr | X32_SYSCALL_BIT, 0), RET_NOTIFY);
        }
        for nr in [0, 4, 39, 500, u32::MAX] {
            assert_eq!(run(&f, AUDIT_ARCH_X86_64, nr, 0), RET_NOTIFY, "nr {nr}");
        }
        let anon = libc::MAP_ANONYMOUS as u64 | libc::MAP_PRIVATE as u64;
        assert_eq!(run(&f, AUDIT_ARCH_X86_64, MMAP, anon), RET_ALLOW);
        // Only the low 32 bits of the flags count, as for the kernel.
        assert_eq!(run(&f, AUDIT_ARCH_X86_64, MMAP, libc::MAP_PRIVATE as u64), RET_NOTIFY);
        assert_eq!(run(&f, AUDIT_ARCH_X86_64, MMAP, 1 << 37), RET_NOTIFY);
        let bytes = f.to_bytes();
        assert_eq!(bytes.len(), f.len() * 8);
        assert_eq!(&bytes[..8], &[0x20, 0, 0, 0, 4, 0, 0, 0]);
    }

    #[test]
    fn long_lists_keep_jumps_in_range() {
        let local: Vec<u32> = (0..1000).filter(|&n| n % 3 != 0).collect();
        let f = build_filter(&local, MMAP);
        assert!(f.len() <= BPF_MAXINSNS);
        for (pc, i) in f.insns.iter().enumerate() {
            if i.code & 0x07 == libc::BPF_JMP as u16 {
                let far = if i.code == JMP_JA { i.k as usize } else { usize::from(i.jt.max(i.jf)) };
                assert!(pc + 1 + far < f.len(), "jump at {pc} leaves the program");
            }
        }
        for nr in 0..1100u32 {
            let want = if nr == MMAP { RET_NOTIFY } else if nr < 1000 && nr % 3 != 0 { RET_ALLOW } else { RET_NOTIFY };
            assert_eq!(run(&f, AUDIT_ARCH_X86_64, nr, 0), want, "nr {nr}");
        }
    }

    #[test]
    fn empty_list() {
        let f = build_filter(&[], MMAP);
        assert_eq!(run(&f, AUDIT_ARCH_X86_64, 0, 0), RET_NOTIFY);
        assert_eq!(run(&f, AUDIT_ARCH_X86_64, MMAP, libc::MAP_ANONYMOUS as u64), RET_ALLOW);
    }
}
