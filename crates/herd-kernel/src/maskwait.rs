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
