//! A seized tracee that is stopped. A [`Tracee`] value always stands for a
//! process in a ptrace-stop: every method that lets it run waits for the next
//! stop before it returns, and [`Tracee::detach`] consumes the value, so a
//! request can never be made on a running process.
//!
//! All waiting happens on the calling thread with `waitpid(pid, __WALL)` for
//! this pid only, so other children of the caller are never reaped here.

use crate::abi::{self, Regs};
use crate::{KernelError, Result};

/// Why the tracee is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// PTRACE_EVENT_STOP: after PTRACE_INTERRUPT, or a group-stop (sig).
    Event { sig: i32 },
    /// About to receive signal `sig`.
    Signal { sig: i32 },
    /// Entering or leaving a system call.
    Syscall,
    /// A PTRACE_EVENT_* stop other than PTRACE_EVENT_STOP (with
    /// PTRACE_O_TRACECLONE: `PTRACE_EVENT_CLONE` as a thread is created).
    Ptrace { event: i32 },
}

pub struct Tracee {
    pub(crate) pid: i32,
    pub(crate) stop: Stop,
    /// Signals that arrived while we held the tracee and that must be
    /// handed back to it on detach.
    pub(crate) deferred: Vec<i32>,
}

/// One seccomp filter of a thread ([`Tracee::seccomp_filters`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeccompFilter {
    /// Its flags as PTRACE_SECCOMP_GET_METADATA tells them.
    pub flags: u64,
    /// Its program: `struct sock_filter`s (code u16, jt u8, jf u8, k u32), native order.
    pub insns: Vec<u8>,
}

/// The most seccomp filters a thread's chain is read to (the kernel bounds a
/// chain by its instructions, 32,768 in all, each filter costing 4 more).
pub const MAX_SECCOMP_FILTERS: usize = 8192;

/// A ptrace request whose `addr` and `data` are plain integers.
pub(crate) fn ptrace(req: u32, pid: i32, addr: u64, data: u64) -> std::result::Result<i64, std::io::Error> {
    debug_assert!(matches!(
        req,
        abi::PTRACE_SEIZE
            | abi::PTRACE_INTERRUPT
            | libc::PTRACE_CONT
            | libc::PTRACE_SYSCALL
            | libc::PTRACE_SINGLESTEP
            | libc::PTRACE_DETACH
            | abi::PTRACE_LISTEN
            | libc::PTRACE_SETOPTIONS
    ));
    // SAFETY: for these requests the kernel reads `addr` and `data` as
    // integers and dereferences nothing.
    unsafe { ptrace_ptr(req, pid, addr, data) }
}

/// A ptrace request that reads or writes memory at `addr` or `data`.
///
/// # Safety
/// `addr`/`data` must be valid for what `req` reads or writes there.
unsafe fn ptrace_ptr(req: u32, pid: i32, addr: u64, data: u64) -> std::result::Result<i64, std::io::Error> {
    // SAFETY: forwarded from the caller's contract.
    let r = unsafe { libc::ptrace(req as _, pid, addr as *mut libc::c_void, data as *mut libc::c_void) };
    if r == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Wait statuses of tracees that [`wait_stop`] or [`Tracee::ended`] reaped, newest last: a tracee
/// that is also a child of ours and ends while traced is reaped by the
/// tracer's wait, and [`crate::pidfd::PidFd::try_wait`] takes its status from
/// here. At most [`REAPED_KEPT`].
static REAPED: std::sync::Mutex<Vec<(i32, i32)>> = std::sync::Mutex::new(Vec::new());
const REAPED_KEPT: usize = 64;

/// Keeps the wait status of tracee `pid`, just reaped (see [`REAPED`]).
fn keep_reaped(pid: i32, status: i32) {
    let mut kept = REAPED.lock().unwrap_or_else(|p| p.into_inner());
    if kept.len() == REAPED_KEPT {
        kept.remove(0);
    }
    kept.push((pid, status));
}

/// The wait status of `pid` if [`wait_stop`] reaped it (taken once).
pub(crate) fn take_reaped(pid: i32) -> Option<i32> {
    let mut kept = REAPED.lock().unwrap_or_else(|p| p.into_inner());
    let at = kept.iter().rposition(|(p, _)| *p == pid)?;
    Some(kept.remove(at).1)
}

/// Waits for the next state change of `pid`.
pub(crate) fn wait_stop(pid: i32) -> Result<Stop> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int to `status`, which lives on our stack.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r == -1 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if e.raw_os_error() == Some(libc::ECHILD) {
                return Err(KernelError::Died { pid });
            }
            return Err(KernelError::from_io("waitpid", pid, e));
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            keep_reaped(pid, status);
            return Err(KernelError::Died { pid });
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let sig = libc::WSTOPSIG(status);
        let event = status >> 16;
        return Ok(if sig == (libc::SIGTRAP | 0x80) {
            Stop::Syscall
        } else if event == abi::PTRACE_EVENT_STOP {
            Stop::Event { sig }
        } else if event != 0 {
            Stop::Ptrace { event }
        } else {
            Stop::Signal { sig }
        });
    }
}

impl Tracee {
    /// Seizes `pid` and stops it with PTRACE_INTERRUPT. `options` are
    /// PTRACE_O_* flags; PTRACE_O_TRACESYSGOOD is always added.
    pub fn seize(pid: i32, options: u64) -> Result<Tracee> {
        ptrace(abi::PTRACE_SEIZE, pid, 0, options | abi::PTRACE_O_TRACESYSGOOD)
            .map_err(|e| KernelError::from_io("PTRACE_SEIZE", pid, e))?;
        ptrace(abi::PTRACE_INTERRUPT, pid, 0, 0)
            .map_err(|e| KernelError::from_io("PTRACE_INTERRUPT", pid, e))?;
        Self::first_stop(pid)
    }

    /// Waits for the first stop of a tracee just attached. A signal that raced
    /// with the attach is kept for the detach, and the event stop that is still
    /// pending is taken.
    fn first_stop(pid: i32) -> Result<Tracee> {
        let stop = wait_stop(pid)?;
        let mut t = Tracee { pid, stop, deferred: Vec::new() };
        if let Stop::Signal { sig } = stop {
            t.deferred.push(sig);
            t.resume_until_event()?;
        }
        Ok(t)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A thread that was attached automatically (PTRACE_O_TRACECLONE) as it
    /// was created: waits for its first stop (PTRACE_EVENT_STOP with
    /// PTRACE_SEIZE), before it has run any instruction.
    pub fn auto_attached(tid: i32) -> Result<Tracee> {
        Self::first_stop(tid)
    }

    /// Sets the PTRACE_O_* options (PTRACE_O_TRACESYSGOOD is always added).
    pub fn set_options(&mut self, options: u64) -> Result<()> {
        ptrace(libc::PTRACE_SETOPTIONS, self.pid, 0, options | abi::PTRACE_O_TRACESYSGOOD)
            .map_err(|e| KernelError::from_io("PTRACE_SETOPTIONS", self.pid, e))?;
        Ok(())
    }

    /// The message of the last PTRACE_EVENT_* stop (PTRACE_GETEVENTMSG): for
    /// PTRACE_EVENT_CLONE, the new thread's id.
    pub fn event_msg(&self) -> Result<u64> {
        let mut msg: u64 = 0;
        // SAFETY: data points at a live u64, which is what PTRACE_GETEVENTMSG writes.
        unsafe { ptrace_ptr(libc::PTRACE_GETEVENTMSG, self.pid, 0, &mut msg as *mut u64 as u64) }
            .map_err(|e| KernelError::from_io("PTRACE_GETEVENTMSG", self.pid, e))?;
        Ok(msg)
    }

    pub fn stop(&self) -> Stop {
        self.stop
    }

    /// Signals intercepted while stopped; they are re-sent by [`Tracee::detach`].
    pub fn deferred_signals(&self) -> &[i32] {
        &self.deferred
    }

    pub fn regs(&self) -> Result<Regs> {
        let mut r = Regs::default();
        // PTRACE_GETREGS writes a user_regs_struct,
        // which `Regs` mirrors exactly (27 u64, repr(C)).
        // SAFETY: the buffer described above is live, sized as the request needs.
        unsafe { ptrace_ptr(libc::PTRACE_GETREGS, self.pid, 0, &mut r as *mut Regs as u64) }
            .map_err(|e| KernelError::from_io("PTRACE_GETREGS", self.pid, e))?;
        Ok(r)
    }

    pub fn set_regs(&mut self, r: &Regs) -> Result<()> {
        // SAFETY: the buffer described above is live, sized as the request needs.
        unsafe { ptrace_ptr(libc::PTRACE_SETREGS, self.pid, 0, r as *const Regs as u64) }
            .map_err(|e| KernelError::from_io("PTRACE_SETREGS", self.pid, e))?;
        Ok(())
    }

    /// The XSAVE area (x87, SSE, AVX, AVX-512 ...), as NT_X86_XSTATE.
    pub fn xstate(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; 64 << 10];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // The kernel writes at most iov_len bytes into buf and stores the
        // length it wrote back into iov.
        // SAFETY: the buffer described above is live, sized as the request needs.
        unsafe { ptrace_ptr(libc::PTRACE_GETREGSET, self.pid, abi::NT_X86_XSTATE as u64, &mut iov as *mut _ as u64) }
            .map_err(|e| KernelError::from_io("PTRACE_GETREGSET(NT_X86_XSTATE)", self.pid, e))?;
        buf.truncate(iov.iov_len);
        Ok(buf)
    }

    pub fn set_xstate(&mut self, xstate: &[u8]) -> Result<()> {
        let mut iov = libc::iovec { iov_base: xstate.as_ptr() as *mut libc::c_void, iov_len: xstate.len() };
        // The kernel only reads iov_len bytes from the buffer.
        // SAFETY: the buffer described above is live, sized as the request needs.
        unsafe { ptrace_ptr(libc::PTRACE_SETREGSET, self.pid, abi::NT_X86_XSTATE as u64, &mut iov as *mut _ as u64) }
            .map_err(|e| KernelError::from_io("PTRACE_SETREGSET(NT_X86_XSTATE)", self.pid, e))?;
        Ok(())
    }

    pub fn sigmask(&self) -> Result<u64> {
        let mut m: u64 = 0;
        // data points to an 8-byte sigset, addr is its size.
        // SAFETY: the buffer described above is live, sized as the request needs.
        unsafe { ptrace_ptr(abi::PTRACE_GETSIGMASK, self.pid, 8, &mut m as *mut u64 as u64) }
            .map_err(|e| KernelError::from_io("PTRACE_GETSIGMASK", self.pid, e))?;
        Ok(m)
    }

    pub fn set_sigmask(&mut self, m: u64) -> Result<()> {
        // SAFETY: the buffer described above is live, sized as the request needs.
        unsafe { ptrace_ptr(abi::PTRACE_SETSIGMASK, self.pid, 8, &m as *const u64 as u64) }
            .map_err(|e| KernelError::from_io("PTRACE_SETSIGMASK", self.pid, e))?;
        Ok(())
    }

    /// The queued signals (raw 128-byte siginfo each), of the thread or,
    /// with `shared`, of the whole process.
    pub fn pending_signals(&self, shared: bool) -> Result<Vec<[u8; 128]>> {
        let mut out = Vec::new();
        loop {
            let mut batch = [[0u8; 128]; 16];
            let args = abi::PeekSiginfoArgs {
                off: out.len() as u64,
                flags: if shared { abi::PTRACE_PEEKSIGINFO_SHARED } else { 0 },
                nr: batch.len() as i32,
            };
            // addr is the args struct, data a buffer of `nr` siginfos.
            // SAFETY: args and batch outlive the call; batch holds `nr` siginfos.
            let n = unsafe { ptrace_ptr(abi::PTRACE_PEEKSIGINFO, self.pid, &args as *const _ as u64, batch.as_mut_ptr() as u64) }
                .map_err(|e| KernelError::from_io("PTRACE_PEEKSIGINFO", self.pid, e))?;
            if n <= 0 {
                return Ok(out);
            }
            out.extend_from_slice(&batch[..n as usize]);
            if out.len() > 1 << 16 {
                return Err(KernelError::Unexpected { pid: self.pid, what: "too many pending signals".into() });
            }
        }
    }

    /// The thread's seccomp filters, the first installed first: each its classic
    /// BPF program (`struct sock_filter`s, 8 bytes each) and its flags
    /// (`SECCOMP_FILTER_FLAG_LOG` and the like). Needs CAP_SYS_ADMIN and the
    /// thread stopped; none when it runs under no filter.
    pub fn seccomp_filters(&self) -> Result<Vec<SeccompFilter>> {
        let err = |what, e| KernelError::from_io(what, self.pid, e);
        let mut out = Vec::new();
        for index in 0..=MAX_SECCOMP_FILTERS as u64 {
            // SAFETY: with a null buffer the kernel only returns the filter's length.
            let n = match unsafe { ptrace_ptr(abi::PTRACE_SECCOMP_GET_FILTER, self.pid, index, 0) } {
                Ok(n) => n as usize,
                // Past the oldest filter; or no filter at all.
                // (Index 0 is the oldest filter of the chain.)
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) || (index == 0 && e.raw_os_error() == Some(libc::EINVAL)) => return Ok(out),
                Err(e) => return Err(err("PTRACE_SECCOMP_GET_FILTER", e)),
            };
            let mut insns = vec![0u8; n * 8];
            // SAFETY: `insns` has room for the n instructions of 8 bytes the kernel writes.
            let got = unsafe { ptrace_ptr(abi::PTRACE_SECCOMP_GET_FILTER, self.pid, index, insns.as_mut_ptr() as u64) }.map_err(|e| err("PTRACE_SECCOMP_GET_FILTER", e))?;
            if got as usize != n {
                return Err(KernelError::Unexpected { pid: self.pid, what: format!("seccomp filter {index} was {n} instructions, then {got}") });
            }
            // struct seccomp_metadata { __u64 filter_off; __u64 flags; }
            let mut md = [index, 0u64];
            // SAFETY: `md` is a seccomp_metadata of the size passed as addr.
            unsafe { ptrace_ptr(abi::PTRACE_SECCOMP_GET_METADATA, self.pid, 16, md.as_mut_ptr() as u64) }.map_err(|e| err("PTRACE_SECCOMP_GET_METADATA", e))?;
            out.push(SeccompFilter { flags: md[1], insns });
        }
        Err(KernelError::Unexpected { pid: self.pid, what: format!("more than {MAX_SECCOMP_FILTERS} seccomp filters") })
    }

    /// The rseq area registered by the thread, if any.
    pub fn rseq_config(&self) -> Result<Option<abi::RseqConfiguration>> {
        let mut c = abi::RseqConfiguration::default();
        // addr is the buffer size, data the buffer.
        // SAFETY: `c` is a live RseqConfiguration of the size passed as addr.
        unsafe { ptrace_ptr(
            abi::PTRACE_GET_RSEQ_CONFIGURATION,
            self.pid,
            std::mem::size_of::<abi::RseqConfiguration>() as u64,
            &mut c as *mut _ as u64,
        ) }
        .map_err(|e| KernelError::from_io("PTRACE_GET_RSEQ_CONFIGURATION", self.pid, e))?;
        Ok((c.rseq_abi_pointer != 0).then_some(c))
    }

    /// Lets a tracee held inside a call (at an event stop of it, such as
    /// PTRACE_EVENT_VFORK's) finish the call: returns its result, at its exit-stop.
    pub fn finish_call(&mut self) -> Result<i64> {
        self.resume_to_syscall()?;
        Ok(self.regs()?.ret())
    }

    /// Lets the tracee run to its next syscall-entry or -exit stop. Signals
    /// that arrive meanwhile are deferred; group-stops are passed over.
    pub(crate) fn resume_to_syscall(&mut self) -> Result<()> {
        loop {
            ptrace(libc::PTRACE_SYSCALL, self.pid, 0, 0)
                .map_err(|e| KernelError::from_io("PTRACE_SYSCALL", self.pid, e))?;
            self.stop = wait_stop(self.pid)?;
            match self.stop {
                Stop::Syscall => return Ok(()),
                Stop::Signal { sig } => self.deferred.push(sig),
                Stop::Event { .. } | Stop::Ptrace { .. } => {}
            }
        }
    }

    /// Brings the tracee to a PTRACE_EVENT_STOP. Registers set at such a stop
    /// are seen by the kernel's signal and syscall-restart code exactly as if
    /// the process had been interrupted there, which is what a restored or
    /// released process needs.
    pub fn resume_until_event(&mut self) -> Result<()> {
        if let Stop::Event { .. } = self.stop {
            return Ok(());
        }
        ptrace(abi::PTRACE_INTERRUPT, self.pid, 0, 0)
            .map_err(|e| KernelError::from_io("PTRACE_INTERRUPT", self.pid, e))?;
        loop {
            ptrace(libc::PTRACE_CONT, self.pid, 0, 0)
                .map_err(|e| KernelError::from_io("PTRACE_CONT", self.pid, e))?;
            self.stop = wait_stop(self.pid)?;
            match self.stop {
                Stop::Event { .. } => return Ok(()),
                Stop::Signal { sig } => self.deferred.push(sig),
                Stop::Syscall | Stop::Ptrace { .. } => {}
            }
        }
    }

    /// Lets the tracee run one instruction (delivering `sig` first, 0 for none)
    /// and waits for its next stop: after a handler's frame is built for `sig`,
    /// the kernel reports a SIGTRAP stop at the handler's first instruction.
    pub(crate) fn step(&mut self, sig: i32) -> Result<Stop> {
        ptrace(libc::PTRACE_SINGLESTEP, self.pid, 0, sig as u64).map_err(|e| KernelError::from_io("PTRACE_SINGLESTEP", self.pid, e))?;
        self.stop = wait_stop(self.pid)?;
        Ok(self.stop)
    }

    /// Lets the tracee go, re-sending any signal that arrived while it was held.
    pub fn detach(self) -> Result<()> {
        self.detach_with(0)
    }

    /// Lets the tracee go; at a signal-delivery-stop, `sig` is delivered as
    /// it goes (0: none). Signals that arrived while it was held are re-sent.
    pub fn detach_with(self, sig: i32) -> Result<()> {
        let pid = self.pid;
        ptrace(libc::PTRACE_DETACH, pid, 0, sig as u64).map_err(|e| KernelError::from_io("PTRACE_DETACH", pid, e))?;
        for sig in &self.deferred {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid, *sig) };
        }
        Ok(())
    }

    /// Whether the tracee (held at a stop) has ended meanwhile — killed with its process,
    /// say — in which case its end is taken here (a tracer must, or the thread stays a
    /// zombie and its process is never reported ended).
    pub fn ended(&self) -> bool {
        let mut status = 0;
        // SAFETY: waitpid writes one int to `status` on our stack; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG | libc::__WALL) };
        let ended = r == self.pid && (libc::WIFEXITED(status) || libc::WIFSIGNALED(status));
        if ended {
            // (A process's end, which its pidfd's wait then takes from here.)
            keep_reaped(self.pid, status);
        }
        ended
    }

    /// Ends the tracee with SIGKILL and reaps the ptrace side of it.
    pub fn kill(self) {
        // SAFETY: kill takes plain integers; the pid is our tracee, which
        // cannot be reaped (and its pid reused) while we are attached.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let _ = wait_stop(self.pid);
    }

    /// The siginfo of the signal the tracee is stopped for (raw 128 bytes,
    /// as PTRACE_GETSIGINFO returns it; see `pidfd::siginfo_queue_value`).
    pub fn siginfo(&self) -> Result<[u8; 128]> {
        let mut info = [0u64; 16];
        // SAFETY: data points at 128 writable bytes (a siginfo_t), which is
        // what PTRACE_GETSIGINFO writes; addr is unused.
        unsafe { ptrace_ptr(libc::PTRACE_GETSIGINFO, self.pid, 0, info.as_mut_ptr() as u64) }
            .map_err(|e| KernelError::from_io("PTRACE_GETSIGINFO", self.pid, e))?;
        let mut out = [0u8; 128];
        for (chunk, word) in out.chunks_exact_mut(8).zip(info) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        Ok(out)
    }
}
