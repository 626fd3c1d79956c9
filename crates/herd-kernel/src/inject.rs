//! Running system calls inside a stopped tracee.
//!
//! The tracee's registers are pointed at a `syscall` instruction (a
//! "gadget": two bytes 0f 05 anywhere executable in the tracee, usually in
//! its vDSO) with the call's number and arguments, and it is let run from
//! syscall-entry to syscall-exit. `orig_rax` is set to -1 so that the
//! kernel's syscall-restart logic never rewrites the injected registers.

use crate::abi::Regs;
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

    pub fn tracee(&mut self) -> &mut Tracee {
        self.tracee
    }

    /// Runs syscall `nr` with up to six arguments; returns the raw result
    /// (negative errno on failure).
    pub fn call(&mut self, nr: u64, args: &[u64]) -> Result<i64> {
        assert!(args.len() <= 6);
        let mut r = self.base;
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        r.rax = nr;
        r.orig_rax = u64::MAX;
        r.rdi = a[0];
        r.rsi = a[1];
        r.rdx = a[2];
        r.r10 = a[3];
        r.r8 = a[4];
        r.r9 = a[5];
        r.rip = self.gadget;
        if let Some(sp) = self.stack {
            r.rsp = sp;
        }
        self.tracee.set_regs(&r)?;
        self.tracee.resume_to_syscall()?; // entry
        let entry = self.tracee.regs()?;
        if entry.orig_rax != nr {
            return Err(KernelError::Unexpected {
                pid: self.tracee.pid(),
                what: format!("injected syscall {nr} entered as {}", entry.orig_rax as i64),
            });
        }
        self.tracee.resume_to_syscall()?; // exit
        Ok(self.tracee.regs()?.ret())
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
