//! Ending a wait that swaps in a signal mask (pselect6, ppoll, epoll_pwait,
//! epoll_pwait2) for a process whose wait runs elsewhere.
//!
//! A process moved away waits in such a call at a seccomp notification while
//! the call runs at home. The call's mask (typically: SIGCHLD let in, as GNU
//! make waits for its jobs) never reaches the thread here, whose own mask
//! still blocks the signal: sent here, the signal stays pending and does not
//! end the wait, and the program would wait forever. [`interrupt_wait`] does
//! what the kernel does when such a wait is interrupted: the call returns
//! EINTR, the pending signals are delivered under the call's mask, and the
//! handler's frame restores the thread's own mask when it returns.
//!
//! How, with ptrace on the thread alone (PTRACE_SEIZE): PTRACE_INTERRUPT
//! ends the notification's wait (the call would return -ERESTARTSYS); at the
//! stop the return value becomes -EINTR and the mask the call's
//! (PTRACE_SETSIGMASK); a single step lets the kernel take the signal; it is
//! delivered stepping, so the tracee stops again once the handler's frame is
//! built (a SIGTRAP stop at the handler's first instruction); the frame is
//! checked against the registers of the call and its saved mask
//! (`uc_sigmask`, which `rt_sigreturn` restores) is set to the thread's own.

use crate::ptrace::{Stop, Tracee};
use crate::task::SigMasks;
use crate::{mem, KernelError, Result};

/// `-ERESTARTSYS`: the return value of a call whose seccomp-notification wait
/// a signal (or PTRACE_INTERRUPT) ended.
const ERESTARTSYS: i64 = -512;

/// Offsets in the x86-64 `struct rt_sigframe` at the stack pointer of a
/// handler's first instruction: `pretcode`, then `struct ucontext` (flags,
/// link, 24-byte `uc_stack`, 256-byte `sigcontext`, then `uc_sigmask`).
mod frame {
    const MCONTEXT: usize = 8 + 8 + 8 + 24;
    pub const R8: usize = MCONTEXT;
    pub const R9: usize = MCONTEXT + 8;
    pub const R10: usize = MCONTEXT + 2 * 8;
    pub const RDI: usize = MCONTEXT + 8 * 8;
    pub const RSI: usize = MCONTEXT + 9 * 8;
    pub const RDX: usize = MCONTEXT + 12 * 8;
    pub const RCX: usize = MCONTEXT + 14 * 8;
    pub const RAX: usize = MCONTEXT + 13 * 8;
    pub const RSP: usize = MCONTEXT + 15 * 8;
    pub const RIP: usize = MCONTEXT + 16 * 8;
    pub const SIGMASK: usize = MCONTEXT + 256;
    pub const LEN: usize = SIGMASK + 8;
}

/// How [`interrupt_wait`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupted {
    /// The call returns EINTR into a handler, which runs with the call's mask
    /// (plus its own); the thread's mask comes back when it returns.
    Handler { sig: i32 },
    /// The call returns EINTR; no handler ran: the signal was ignored, or
    /// another thread took it (the thread's own mask is back), or it takes its
    /// default action (ending the process, or stopping it: then the call's
    /// mask stays until the thread next changes its own).
    NoHandler,
    /// The thread was not waiting in call `nr` at a notification: nothing
    /// was changed (the kernel restarts what it was doing).
    NotWaiting,
}

/// Ends the wait of thread `tid` in call `nr` (at a seccomp notification not
/// yet answered) as the kernel would if a signal that `during` (the call's
/// mask) lets in had interrupted it. The signal must be pending already.
/// The notification is gone afterwards: it must not be answered.
pub fn interrupt_wait(tid: i32, nr: i64, during: u64) -> Result<Interrupted> {
    let mut t = Tracee::seize(tid, 0)?;
    let own = match t.sigmask() {
        Ok(own) => own,
        Err(e) => {
            let _ = t.detach();
            return Err(e);
        }
    };
    let outcome = end_wait(&mut t, nr, own, during);
    let release = match outcome {
        Ok(Ended::Release(sig)) => sig,
        Ok(_) => 0,
        Err(_) => {
            // Whatever failed, the thread keeps its own mask.
            let _ = t.set_sigmask(own);
            0
        }
    };
    let detached = t.detach_with(release);
    let outcome = outcome?;
    detached?;
    Ok(match outcome {
        Ended::As(how) => how,
        Ended::Release(_) => Interrupted::NoHandler,
    })
}

enum Ended {
    As(Interrupted),
    /// Signal `sig` is not caught: its default action (most often: the
    /// process ends) is taken as the tracee is let go, so that the process is
    /// never reaped by a wait here (its parent, herdd's guest, waits for it).
    Release(i32),
}

fn end_wait(t: &mut Tracee, nr: i64, own: u64, during: u64) -> Result<Ended> {
    let regs = t.regs()?;
    if regs.orig_rax as i64 != nr || regs.rax as i64 != ERESTARTSYS {
        return Ok(Ended::As(Interrupted::NotWaiting));
    }
    let mut ended = regs;
    ended.rax = -(libc::EINTR as i64) as u64;
    t.set_regs(&ended)?;
    t.set_sigmask(during)?;
    let no_handler = |t: &mut Tracee| -> Result<Ended> {
        t.set_sigmask(own)?;
        Ok(Ended::As(Interrupted::NoHandler))
    };
    let sig = match t.step(0)? {
        // A signal the mask lets in, about to be delivered.
        Stop::Signal { sig } if sig != libc::SIGTRAP => sig,
        // A single step's trap: nothing was let in (another thread took it).
        _ => return no_handler(t),
    };
    let masks = SigMasks::of(t.pid()).ok_or(KernelError::Died { pid: t.pid() })?;
    if masks.ignores(sig) {
        return no_handler(t);
    }
    if !masks.catches(sig) {
        return Ok(Ended::Release(sig));
    }
    match t.step(sig)? {
        Stop::Signal { sig: libc::SIGTRAP } => {}
        _ => return no_handler(t),
    }
    let at = t.regs()?;
    let mut f = [0u8; frame::LEN];
    mem::read_ranges(t.pid(), &[(at.rsp, frame::LEN as u64)], &mut f)?;
    let word = |off: usize| u64::from_ne_bytes(f[off..off + 8].try_into().expect("8 bytes"));
    if word(frame::RIP) != regs.rip || word(frame::RSP) != regs.rsp || word(frame::RAX) != ended.rax {
        // Not a handler's frame over the call.
        return no_handler(t);
    }
    mem::write(t.pid(), at.rsp + frame::SIGMASK as u64, &own.to_ne_bytes()).map_err(|e| match e {
        KernelError::Died { .. } => e,
        other => KernelError::Unexpected { pid: t.pid(), what: format!("the handler's frame cannot take the thread's mask: {other}") },
    })?;
    Ok(Ended::As(Interrupted::Handler { sig }))
}

/// The frame a signal handler returns through, read at its `rt_sigreturn` (the thread
/// waits at that call's seccomp notification): where the thread goes back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Returning {
    pid: i32,
    /// The frame's start (the stack pointer at the handler's first instruction).
    at: u64,
    rip: u64,
    rax: u64,
    /// rcx, where `syscall` leaves the address after itself.
    rcx: u64,
    args: [u64; 6],
    /// The two bytes at the saved rip, and the two before it.
    at_rip: [u8; 2],
    before_rip: [u8; 2],
}

/// What the interrupted thread does once its handler returns, by the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumes {
    /// It makes system call `nr` with `args` again (the kernel's restart: SA_RESTART).
    Restart { nr: i64, args: [u64; 6] },
    /// Its system call with `args` returns EINTR (a handler without SA_RESTART).
    Eintr { args: [u64; 6] },
    /// Anything else: the handler interrupted the thread outside a system call.
    Other,
}

/// x86-64 `syscall`.
const SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];

impl Returning {
    /// The frame thread `tid` of process `pid` returns through; None if the thread is not
    /// in `rt_sigreturn`.
    pub fn of(pid: i32, tid: i32) -> Result<Option<Returning>> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).map_err(|e| KernelError::from_io("reading /proc/PID/task/TID/syscall", pid, e))?;
        let mut words = text.split_whitespace();
        if words.next() != Some(&libc::SYS_rt_sigreturn.to_string()) {
            return Ok(None);
        }
        let hex = |w: Option<&str>| w.and_then(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).ok());
        let Some(sp) = hex(words.nth(6)) else { return Ok(None) };
        // The handler's `ret` took `pretcode`: the frame begins a word below.
        let at = sp - 8;
        let mut f = [0u8; frame::LEN];
        mem::read_ranges(pid, &[(at, frame::LEN as u64)], &mut f)?;
        let word = |off: usize| u64::from_ne_bytes(f[off..off + 8].try_into().expect("8 bytes"));
        let (rip, rax, rcx) = (word(frame::RIP), word(frame::RAX), word(frame::RCX));
        let args = [frame::RDI, frame::RSI, frame::RDX, frame::R10, frame::R8, frame::R9].map(word);
        let mut code = [0u8; 4];
        let (mut at_rip, mut before_rip) = ([0u8; 2], [0u8; 2]);
        if mem::read_ranges(pid, &[(rip.wrapping_sub(2), 4)], &mut code).is_ok() {
            before_rip.copy_from_slice(&code[..2]);
            at_rip.copy_from_slice(&code[2..]);
        }
        Ok(Some(Returning { pid, at, rip, rax, rcx, args, at_rip, before_rip }))
    }

    /// Only a call the thread made is taken for one: `syscall` left rcx pointing after
    /// itself (a thread about to make a call, its registers set, has not).
    pub fn resumes(&self) -> Resumes {
        if self.at_rip == SYSCALL_INSN && self.rax as i64 >= 0 && self.rcx == self.rip.wrapping_add(2) {
            // The kernel's restart: rip back on the instruction, rax the number again.
            Resumes::Restart { nr: self.rax as i64, args: self.args }
        } else if self.before_rip == SYSCALL_INSN && self.rax as i64 == -(libc::EINTR as i64) && self.rcx == self.rip {
            Resumes::Eintr { args: self.args }
        } else {
            Resumes::Other
        }
    }

    /// True if the thread goes back to just after the system call that ends at `ip`, with
    /// EINTR.
    pub fn resumes_after(&self, ip: u64) -> bool {
        self.rip == ip && matches!(self.resumes(), Resumes::Eintr { .. })
    }

    /// Makes the thread make system call `nr` again when the handler returns (the
    /// kernel's restart), instead of taking EINTR from it.
    pub fn make_again(&self, nr: i64) -> Result<()> {
        self.set(nr as u64, self.rip - 2)
    }

    /// Makes the interrupted call return `ret` when the handler returns, instead of
    /// being made again or failing with EINTR.
    pub fn complete(&self, ret: i64) -> Result<()> {
        if self.resumes() == Resumes::Other {
            return Err(KernelError::Unexpected { pid: self.pid, what: "the handler's frame is over no system call".into() });
        }
        let rip = if matches!(self.resumes(), Resumes::Restart { .. }) { self.rip + 2 } else { self.rip };
        self.set(ret as u64, rip)
    }

    /// Writes the rax and rip the frame restores.
    fn set(&self, rax: u64, rip: u64) -> Result<()> {
        mem::write(self.pid, self.at + frame::RAX as u64, &rax.to_ne_bytes())?;
        mem::write(self.pid, self.at + frame::RIP as u64, &rip.to_ne_bytes())
    }
}
