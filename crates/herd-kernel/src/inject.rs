//! Running system calls inside a stopped tracee.
//!
//! The tracee's registers are pointed at a `syscall` instruction (a
//! "gadget": two bytes 0f 05 anywhere executable in the tracee, usually in
//! its vDSO) with the call's number and arguments, and it is let run from
//! syscall-entry to syscall-exit. `orig_rax` is set to -1 so that the
//! kernel's syscall-restart logic never rewrites the injected registers.

use crate::abi::{self, Regs};
use crate::ptrace::{ptrace, wait_stop, Stop};
use crate::ptrace::Tracee;
use crate::{KernelError, Result};

pub struct Injector<'a> {
    tracee: &'a mut Tracee,
    gadget: u64,
    base: Regs,
    stack: Option<u64>,
}

impl<'a> Injector<'a> {
    /// `base` supplies every register an injected call does not set; the
    /// caller restores the tracee's real registers when it is done.
    pub fn new(tracee: &'a mut Tracee, gadget: u64, base: Regs) -> Self {
        Injector { tracee, gadget, base, stack: None }
    }

    /// Runs injected calls on this stack pointer (the tracee's own stack may
    /// be gone, as during a restore).
    pub fn set_stack(&mut self, sp: u64) {
        self.stack = Some(sp);
    }

    pub fn set_gadget(&mut self, gadget: u64) {
        self.gadget = gadget;
    }

    pub fn gadget(&self) -> u64 {
        self.gadget
    }

    pub fn tracee(&mut self) -> &mut Tracee {
        self.tracee
    }

    /// The registers that make the tracee run syscall `nr` at the gadget.
    fn regs_for(&self, nr: u64, args: &[u64]) -> Regs {
        assert!(args.len() <= 6);
        let mut r = self.base;
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        r.rax = nr;
        r.orig_rax = u64::MAX;
        (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9) = (a[0], a[1], a[2], a[3], a[4], a[5]);
        r.rip = self.gadget;
        if let Some(sp) = self.stack {
            r.rsp = sp;
        }
        r
    }

    /// Points the tracee at the gadget with call `nr` and lets it run to the call's
    /// entry-stop.
    fn enter(&mut self, nr: u64, args: &[u64]) -> Result<()> {
        let r = self.regs_for(nr, args);
        self.tracee.set_regs(&r)?;
        self.tracee.resume_to_syscall()?;
        let entry = self.tracee.regs()?;
        if entry.orig_rax != nr {
            return Err(KernelError::Unexpected { pid: self.tracee.pid(), what: format!("injected syscall {nr} entered as {}", entry.orig_rax as i64) });
        }
        Ok(())
    }

    /// Lets the tracee on inside an injected call to its next syscall or PTRACE_EVENT
    /// stop; signals that arrive meanwhile are deferred, group-stops passed over.
    fn on_in_call(&mut self) -> Result<Stop> {
        let pid = self.tracee.pid;
        loop {
            ptrace(libc::PTRACE_SYSCALL, pid, 0, 0).map_err(|e| KernelError::from_io("PTRACE_SYSCALL", pid, e))?;
            self.tracee.stop = wait_stop(pid)?;
            match self.tracee.stop {
                Stop::Signal { sig } => self.tracee.deferred.push(sig),
                Stop::Event { .. } => {}
                stop => return Ok(stop),
            }
        }
    }

    /// Runs syscall `nr` with up to six arguments; returns the raw result
    /// (negative errno on failure).
    pub fn call(&mut self, nr: u64, args: &[u64]) -> Result<i64> {
        self.enter(nr, args)?;
        self.tracee.resume_to_syscall()?; // exit
        Ok(self.tracee.regs()?.ret())
    }

    /// Runs a `clone`/`clone3` that makes a thread or a process (the tracee must have
    /// been seized with PTRACE_O_TRACECLONE, and PTRACE_O_TRACEFORK for a child whose
    /// exit signal is SIGCHLD). Returns the call's raw result and, when it made one,
    /// the new thread or process: attached, stopped before its first instruction,
    /// its registers those of the tracee at the call's return.
    pub fn call_clone(&mut self, nr: u64, args: &[u64]) -> Result<(i64, Option<Tracee>)> {
        self.enter(nr, args)?;
        let mut made = None;
        loop {
            match self.on_in_call()? {
                Stop::Syscall => break,
                Stop::Ptrace { event } if event == abi::PTRACE_EVENT_CLONE || event == abi::PTRACE_EVENT_FORK => made = Some(self.tracee.event_msg()? as i32),
                _ => {}
            }
        }
        let ret = self.tracee.regs()?.ret();
        let thread = match made {
            Some(tid) => Some(Tracee::auto_attached(tid)?),
            None => None,
        };
        Ok((ret, thread))
    }

    /// Runs a `clone` with CLONE_VFORK (the tracee must have been seized with
    /// PTRACE_O_TRACEVFORK) as far as its PTRACE_EVENT_VFORK stop, before the tracee
    /// waits for its child to exec or end: returns the child, attached and stopped before
    /// its first instruction, and leaves the tracee in the call ([`Tracee::finish_call`]
    /// once the child runs). Err(result): the call failed, and returned.
    pub fn call_vfork(&mut self, nr: u64, args: &[u64]) -> Result<std::result::Result<Tracee, i64>> {
        self.enter(nr, args)?;
        loop {
            match self.on_in_call()? {
                Stop::Syscall => return Ok(Err(self.tracee.regs()?.ret())),
                Stop::Ptrace { event } if event == abi::PTRACE_EVENT_VFORK => {
                    let child = self.tracee.event_msg()? as i32;
                    return Ok(Ok(Tracee::auto_attached(child)?));
                }
                _ => {}
            }
        }
    }

    /// Runs an `execve`/`execveat` (the tracee must have been seized with
    /// PTRACE_O_TRACEEXEC). Returns the call's raw result and whether the program was
    /// replaced: then the tracee is at the call's exit-stop in the new program (its
    /// registers the new program's first; the injected ones are gone with the old), and
    /// the caller must not put the old registers back.
    pub fn call_exec(&mut self, nr: u64, args: &[u64]) -> Result<(i64, bool)> {
        self.enter(nr, args)?;
        let mut execed = false;
        loop {
            match self.on_in_call()? {
                Stop::Syscall => break,
                Stop::Ptrace { event } if event == abi::PTRACE_EVENT_EXEC => execed = true,
                _ => {}
            }
        }
        Ok((self.tracee.regs()?.ret(), execed))
    }

    /// Like [`Injector::call`], but a negative result becomes an error
    /// naming `what`.
    pub fn call_ok(&mut self, what: &'static str, nr: u64, args: &[u64]) -> Result<i64> {
        let r = self.call(nr, args)?;
        tracing::trace!(pid = self.tracee.pid(), "{what}: {r}");
        if (-4095..0).contains(&r) {
            return Err(KernelError::Sys {
                op: what,
                pid: self.tracee.pid(),
                source: std::io::Error::from_raw_os_error(-r as i32),
            });
        }
        Ok(r)
    }
}

/// How an interruptible injected call ended (see [`Injector::call_interruptible`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The call returned this (a negative errno on failure).
    Done(i64),
    /// Signal `sig` is about to be delivered: the tracee is in a
    /// signal-delivery-stop, and the call did not complete (it was interrupted,
    /// or never started). Resuming suppresses the signal unless it is passed to
    /// [`Tracee::deliver`].
    Signal { sig: i32 },
    /// The call was interrupted without a signal to deliver (a group-stop or
    /// PTRACE_INTERRUPT); the tracee is at an event stop.
    Interrupted { sig: i32 },
}

fn is_restart(ret: i64) -> bool {
    [abi::ERESTARTSYS, abi::ERESTARTNOINTR, abi::ERESTARTNOHAND, abi::ERESTART_RESTARTBLOCK].contains(&-ret)
}

impl Injector<'_> {
    /// Runs syscall `nr` like [`Injector::call`], but a signal that arrives
    /// while it blocks (or before it starts) is not deferred: the call stops
    /// there and the signal is reported, so that a deputy can hand it on.
    pub fn call_interruptible(&mut self, nr: u64, args: &[u64]) -> Result<Outcome> {
        let r = self.regs_for(nr, args);
        let pid = self.tracee.pid;
        self.tracee.set_regs(&r)?;
        let mut entered = false;
        loop {
            ptrace(libc::PTRACE_SYSCALL, pid, 0, 0).map_err(|e| KernelError::from_io("PTRACE_SYSCALL", pid, e))?;
            let stop = wait_stop(pid)?;
            self.tracee.stop = stop;
            match stop {
                Stop::Syscall if !entered => {
                    let regs = self.tracee.regs()?;
                    if regs.orig_rax != nr {
                        return Err(KernelError::Unexpected {
                            pid,
                            what: format!("injected syscall {nr} entered as {}", regs.orig_rax as i64),
                        });
                    }
                    entered = true;
                }
                Stop::Syscall => {
                    let ret = self.tracee.regs()?.ret();
                    if !is_restart(ret) {
                        return Ok(Outcome::Done(ret));
                    }
                    // Interrupted: the signal (or event) stop follows. Make
                    // sure the kernel will not restart the injected call.
                    let mut regs = self.tracee.regs()?;
                    regs.orig_rax = u64::MAX;
                    regs.rax = (-(libc::EINTR as i64)) as u64;
                    self.tracee.set_regs(&regs)?;
                }
                Stop::Signal { sig } => return Ok(Outcome::Signal { sig }),
                Stop::Event { sig } => return Ok(Outcome::Interrupted { sig }),
                Stop::Ptrace { .. } => {}
            }
        }
    }
}

impl Injector<'_> {
    /// At the exit-stop of a call that returned EINTR (epoll_wait and others that do not
    /// return a restart code): the signal that interrupted it, if one is about to be
    /// delivered. The tracee is then let on to that signal's delivery-stop, the call's
    /// EINTR left in place (nothing restarts it), as [`Injector::call_interruptible`]
    /// leaves a call it reports cut by a signal; so a caller can report the call cut by
    /// that signal rather than answered with EINTR and the signal after it. The gadget
    /// must be `syscall; int3` (a deputy's shell): should another thread have taken the
    /// signal meanwhile, the tracee stops at the breakpoint, and this says `None`.
    pub fn signal_after_eintr(&mut self) -> Result<Option<i32>> {
        let pid = self.tracee.pid;
        let Some(m) = crate::task::SigMasks::of(pid) else { return Ok(None) };
        if (m.pending | m.shared_pending) & !m.blocked == 0 {
            return Ok(None);
        }
        loop {
            ptrace(libc::PTRACE_CONT, pid, 0, 0).map_err(|e| KernelError::from_io("PTRACE_CONT", pid, e))?;
            let stop = wait_stop(pid)?;
            self.tracee.stop = stop;
            match stop {
                Stop::Signal { sig: libc::SIGTRAP } if self.tracee.regs()?.rip == self.gadget + 3 => return Ok(None),
                Stop::Signal { sig } => return Ok(Some(sig)),
                Stop::Syscall | Stop::Ptrace { .. } => continue,
                Stop::Event { .. } => return Ok(None),
            }
        }
    }
}

impl Injector<'_> {
    /// Runs syscall `nr`, one that blocks until a signal comes (`pause`), without
    /// stopping at its entry and exit: the tracee is let run (PTRACE_CONT) and
    /// the next stop reported, as [`Injector::call_interruptible`] reports it — two
    /// stops fewer for an idle deputy. At that stop the call is made not to be
    /// restarted (it was at its exit in `call_interruptible`).
    pub fn wait_in(&mut self, nr: u64, args: &[u64]) -> Result<Outcome> {
        let r = self.regs_for(nr, args);
        let pid = self.tracee.pid;
        self.tracee.set_regs(&r)?;
        loop {
            ptrace(libc::PTRACE_CONT, pid, 0, 0).map_err(|e| KernelError::from_io("PTRACE_CONT", pid, e))?;
            let stop = wait_stop(pid)?;
            self.tracee.stop = stop;
            let outcome = match stop {
                Stop::Signal { sig } => Outcome::Signal { sig },
                Stop::Event { sig } => Outcome::Interrupted { sig },
                // Not asked for; a call ended at its exit.
                Stop::Syscall => return Ok(Outcome::Done(self.tracee.regs()?.ret())),
                Stop::Ptrace { .. } => continue,
            };
            let mut regs = self.tracee.regs()?;
            if regs.rip == self.gadget + 2 && regs.orig_rax == nr && is_restart(regs.ret()) {
                regs.orig_rax = u64::MAX;
                regs.rax = (-(libc::EINTR as i64)) as u64;
                self.tracee.set_regs(&regs)?;
            }
            return Ok(outcome);
        }
    }
}

impl Tracee {
    /// At a signal-delivery-stop: lets the tracee go on *with* the signal
    /// (its default action then applies: end, stop, core), and waits for the
    /// next stop. `Err(Died)` when the signal ended it.
    pub fn deliver(&mut self, sig: i32) -> Result<Stop> {
        let pid = self.pid;
        ptrace(libc::PTRACE_CONT, pid, 0, sig as u64).map_err(|e| KernelError::from_io("PTRACE_CONT", pid, e))?;
        self.stop = wait_stop(pid)?;
        Ok(self.stop)
    }

    /// At a group-stop: keeps the tracee stopped (as a stopped job, seen so
    /// by its parent) while waiting for what ends the stop (SIGCONT, SIGKILL).
    pub fn listen(&mut self) -> Result<Stop> {
        let pid = self.pid;
        ptrace(abi::PTRACE_LISTEN, pid, 0, 0).map_err(|e| KernelError::from_io("PTRACE_LISTEN", pid, e))?;
        self.stop = wait_stop(pid)?;
        Ok(self.stop)
    }

    /// Signals that arrived while held, taken out so that they are not re-sent on detach.
    pub fn take_deferred(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.deferred)
    }
}
