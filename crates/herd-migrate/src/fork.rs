//! A fork where the process runs: the child of a guest is made on this node.
//!
//! A guest's fork traps (the filter sends every clone to the guest). Instead of
//! going home for it, the guest makes the child here and home makes the child's
//! deputy by forking the parent's (`deputy::Cmd::Fork`), so that the child's pid,
//! parent, descriptors and wait status are those of a fork at home:
//!
//! 1. [`Forking::begin`]: the forking thread is seized alone; PTRACE_INTERRUPT ends
//!    its wait at the notification (the call would restart). A `clone` injected in it
//!    makes the child — with `CLONE_PARENT`, so that the child is herdd's, as every
//!    guest is, and the parent never hears of it here (it takes the parent's own exit
//!    signal: herdd gets the SIGCHLD) — attached and stopped before its first
//!    instruction.
//! 2. Home makes the deputy and opens the child's stream (`Adopt::fork_of`).
//! 3. [`Forking::finish`]: the child gets the parent's registers with 0 as the
//!    call's result (and the home pid where CLONE_CHILD_SETTID asks), and runs; the
//!    parent's call returns the child's home pid. Or [`Forking::abandon`]: the child
//!    ends here, unseen, and the parent's call fails or is made again.
//!
//! The child keeps the parent's seccomp filter (a fork copies it; a filter with a
//! listener of its own cannot be added where one has one: EBUSY), so its calls reach
//! the parent's listener. From a process's first fork here on, a [`Hub`] thread reads
//! that listener and hands each call to the guest of the process that made it (the
//! parent's, a child's, a grandchild's); the injected clones (here and for a
//! checkpoint's snapshot) it lets through itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use herd_kernel::abi::{self, Regs};
use herd_kernel::inject::Injector;
use herd_kernel::ptrace::Tracee;
use herd_kernel::seccomp::{Listener, Notif, Readiness};
use herd_kernel::{mem, task, KernelError};

use crate::wake::{WakeReceiver, WakeSender};

/// The clone flags a fork made here may carry (glibc's fork: the child's and the
/// parent's tid words); anything else (shared memory or files, vfork, a thread, other
/// namespaces) is made at home.
const ALLOWED: u64 = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::CLONE_PARENT_SETTID) as u64;

/// A vfork's clone flags (and posix_spawn's): the child shares the parent's memory, and
/// the parent waits until the child execs or ends.
const VFORK: u64 = (libc::CLONE_VM | libc::CLONE_VFORK) as u64;

/// What a fork made here shares with its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForkKind {
    /// Nothing: a copy of the parent (`fork`).
    Fork,
    /// Its memory until it execs or ends, the parent waiting until then (`vfork`, glibc's
    /// `posix_spawn`); `sp`: the child's own stack pointer (None: it runs on the
    /// parent's stack, as after `vfork`).
    Vfork { sp: Option<u64> },
}

/// Whether call `nr` with `args` is a fork this node can make, and which: `fork`, or a
/// `clone` whose exit signal is SIGCHLD, whose other flags are among [`ALLOWED`] and that
/// gives the child no stack of its own (`clone(fn, stack, SIGCHLD, arg)` is made at home);
/// `vfork`, or a `clone`/`clone3` with exactly CLONE_VM|CLONE_VFORK, exit signal SIGCHLD,
/// and nothing else (clone3's argument structure, read from `mem`, is glibc's
/// posix_spawn's: a stack, no tid words, pidfd, TLS or cgroup).
pub fn fork_kind(nr: i64, args: &[u64; 6], mem: &dyn crate::syscalls::MemRead) -> Option<ForkKind> {
    match nr {
        libc::SYS_fork => Some(ForkKind::Fork),
        libc::SYS_vfork => Some(ForkKind::Vfork { sp: None }),
        libc::SYS_clone => {
            let flags = args[0];
            if flags & 0xff != libc::SIGCHLD as u64 {
                return None;
            }
            match flags & !0xff {
                rest if rest & !ALLOWED == 0 && args[1] == 0 => Some(ForkKind::Fork),
                VFORK => Some(ForkKind::Vfork { sp: (args[1] != 0).then_some(args[1]) }),
                _ => None,
            }
        }
        libc::SYS_clone3 => {
            // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack,
            // stack_size, tls (64 bytes), set_tid, set_tid_size (80), cgroup (88).
            let size = args[1] as usize;
            if !(64..=88).contains(&size) || !size.is_multiple_of(8) {
                return None;
            }
            let mut raw = [0u8; 88];
            mem.read(args[0], &mut raw[..size]).ok()?;
            let f: Vec<u64> = raw.chunks_exact(8).map(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes"))).collect();
            let (flags, exit_signal, stack, stack_size) = (f[0], f[4], f[5], f[6]);
            let others_unset = [f[1], f[2], f[3], f[7], f[8], f[9], f[10]].iter().all(|&x| x == 0);
            (flags == VFORK && exit_signal == libc::SIGCHLD as u64 && others_unset && (stack == 0) == (stack_size == 0))
                .then(|| ForkKind::Vfork { sp: (stack != 0).then(|| stack.wrapping_add(stack_size)) })
        }
        _ => None,
    }
}

/// A child being made here, held until home has made its deputy.
pub struct Forking {
    /// The forking thread, held at the stop that ended its wait.
    parent: Tracee,
    /// Its registers there: the call's, waiting to return.
    regs: Regs,
    /// The child, stopped before its first instruction.
    child: Tracee,
    /// The call's clone flags and tid words (0 for `fork`).
    flags: u64,
    kind: ForkKind,
    ptid: u64,
    ctid: u64,
}

/// Why a fork is not made here.
#[derive(Debug, thiserror::Error)]
pub enum NotHere {
    /// It cannot be made here; the thread makes the call again (it goes home).
    #[error("{0}")]
    Cannot(String),
    /// It failed as a fork here fails (EAGAIN: this node's `ulimit -u`; ENOMEM): the
    /// call returned this errno, as it would have at home.
    #[error("the fork failed: {}", std::io::Error::from_raw_os_error(*.0))]
    Failed(i32),
    /// A signal came first: the call is made again (as the kernel makes a fork again
    /// after a signal), and may be made here then.
    #[error("a signal came first; the fork is made again")]
    Again,
}

impl Forking {
    /// Makes the child of the thread waiting in fork call `n` (its process's calls are
    /// read by a [`Hub`], which lets the injected clone through), through the process's
    /// `syscall` instruction at `gadget` (see [`gadget`]). A vfork's child shares the
    /// parent's memory; the parent is held inside the injected call until
    /// [`Forking::finish`] (or [`Forking::abandon`]).
    pub fn begin(n: &Notif, gadget: u64, kind: ForkKind) -> Result<Forking, NotHere> {
        let tid = n.pid as i32;
        let (nr, args) = (i64::from(n.nr), n.args);
        let options = abi::PTRACE_O_TRACECLONE | if kind == ForkKind::Fork { 0 } else { abi::PTRACE_O_TRACEVFORK };
        let (mut parent, regs) = seize_in_call(tid, nr, options)?;
        let (flags, ptid, ctid) = match (nr, kind) {
            (libc::SYS_clone, ForkKind::Fork) => (args[0], args[2], args[3]),
            _ => (libc::SIGCHLD as u64, 0, 0),
        };
        match make_child(gadget, &mut parent, regs, ctid, flags, kind) {
            Ok(child) => Ok(Forking { parent, regs, child, flags, kind, ptid, ctid }),
            Err(NotHere::Failed(errno)) => {
                let mut failed = regs;
                failed.rax = -(errno as i64) as u64;
                let _ = parent.set_regs(&failed);
                let _ = parent.detach();
                Err(NotHere::Failed(errno))
            }
            Err(e) => {
                // The thread makes its call again; the guest sends it home then.
                restart(parent, regs);
                Err(e)
            }
        }
    }

    /// The child's id here.
    pub fn child(&self) -> i32 {
        self.child.pid()
    }

    /// The forking thread (its id here).
    pub fn thread(&self) -> i32 {
        self.parent.pid()
    }

    /// Whether the forking thread ended while held (its process was killed): its end is
    /// taken; [`Forking::abandon`] then only ends the child.
    pub fn parent_ended(&self) -> bool {
        self.parent.ended()
    }

    /// Home made the deputy: the child (home pid `home_pid`) runs, its call returning 0,
    /// and the parent's returns `home_pid` — at once after a fork; after a vfork once the
    /// child has exec'd or ended ([`VforkParent::wait`], which the caller makes once the
    /// child is served: its exec is made by its guest).
    pub fn finish(self, home_pid: i32) -> Result<Option<VforkParent>, KernelError> {
        let Forking { mut parent, regs, mut child, flags, kind, ptid, ctid } = self;
        let word = home_pid.to_ne_bytes();
        let r = (|| -> Result<(), KernelError> {
            if flags & libc::CLONE_CHILD_SETTID as u64 != 0 && ctid != 0 {
                mem::write(child.pid(), ctid, &word)?;
            }
            if flags & libc::CLONE_PARENT_SETTID as u64 != 0 && ptid != 0 {
                mem::write(child.pid(), ptid, &word)?;
                mem::write(parent.pid(), ptid, &word)?;
            }
            let mut c = regs;
            c.rax = 0;
            c.orig_rax = u64::MAX;
            if let ForkKind::Vfork { sp: Some(sp) } = kind {
                c.rsp = sp;
            }
            child.set_regs(&c)?;
            Ok(())
        })();
        if let Err(e) = r {
            let pid = child.pid();
            child.kill();
            let _ = task::reap(pid);
            out_of_vfork(&mut parent, kind);
            restart(parent, regs);
            return Err(e);
        }
        if let Err(e) = child.detach() {
            // (It died meanwhile: the parent's call is made again.)
            out_of_vfork(&mut parent, kind);
            restart(parent, regs);
            return Err(e);
        }
        if kind != ForkKind::Fork {
            return Ok(Some(VforkParent { parent, regs, home_pid }));
        }
        let mut p = regs;
        p.rax = home_pid as u64;
        let _ = parent.set_regs(&p);
        // (If the parent died meanwhile, the child runs on as an orphan would.)
        let _ = parent.detach();
        Ok(None)
    }

    /// The child is not made after all: it ends here (herdd's child, reaped), and the
    /// parent's call fails with `errno`, or (None) is made again.
    pub fn abandon(self, errno: Option<i32>) {
        let Forking { mut parent, mut regs, child, kind, .. } = self;
        let pid = child.pid();
        child.kill();
        let _ = task::reap(pid);
        out_of_vfork(&mut parent, kind);
        match errno {
            Some(e) => {
                let mut parent = parent;
                regs.rax = -(e as i64) as u64;
                let _ = parent.set_regs(&regs);
                let _ = parent.detach();
            }
            None => restart(parent, regs),
        }
    }
}

/// Seizes thread `tid`, which waits in call `nr` at its notification, with ptrace
/// `options`: its wait ends (the call would restart), and it is held with the call's
/// registers. A thread no longer in that wait (a signal ended it first) goes on as it
/// was: NotHere::Again (its call is made again).
pub(crate) fn seize_in_call(tid: i32, nr: i64, options: u64) -> Result<(Tracee, Regs), NotHere> {
    let t = Tracee::seize(tid, options).map_err(|e| NotHere::Cannot(format!("seizing the thread: {e}")))?;
    let regs = match t.regs() {
        Ok(r) => r,
        Err(e) => {
            let _ = t.detach();
            return Err(NotHere::Cannot(format!("its registers: {e}")));
        }
    };
    if regs.orig_rax as i64 != nr || regs.rax as i64 != -abi::ERESTARTSYS {
        let _ = t.detach();
        return Err(NotHere::Again);
    }
    Ok((t, regs))
}

/// The parent of a vfork made here, held in the injected call while its child runs.
pub struct VforkParent {
    parent: Tracee,
    regs: Regs,
    home_pid: i32,
}

impl VforkParent {
    /// Waits (blocking) until the child has exec'd or ended, then lets the parent go,
    /// its call returning the child's home pid.
    pub fn wait(mut self) {
        match self.parent.finish_call() {
            Ok(_) => {
                let mut p = self.regs;
                p.rax = self.home_pid as u64;
                let _ = self.parent.set_regs(&p);
                let _ = self.parent.detach();
            }
            // (It was killed meanwhile: its end is taken.)
            Err(e) => tracing::debug!(pid = self.parent.pid(), "the parent of a vfork ended while its child ran: {e}"),
        }
    }
}

/// A vfork's parent held at its PTRACE_EVENT_VFORK stop whose child is gone: it leaves
/// the injected call (at once: no child holds it), to be restarted or answered.
fn out_of_vfork(parent: &mut Tracee, kind: ForkKind) {
    if kind != ForkKind::Fork {
        let _ = parent.finish_call();
    }
}

/// Lets the forking thread go with its call to be made again (-ERESTARTNOINTR: even
/// after a handler, as the kernel restarts a fork a signal interrupted).
pub(crate) fn restart(mut parent: Tracee, mut regs: Regs) {
    regs.rax = -abi::ERESTARTNOINTR as u64;
    let _ = parent.set_regs(&regs);
    let _ = parent.detach();
}

/// Process `pid`'s `syscall` instruction to inject calls through (in its vDSO, which
/// stays where it is for the process's life; its children have it at the same place).
pub fn gadget(pid: i32) -> Result<u64, NotHere> {
    herd_checkpoint::capture::syscall_gadget(pid).map_err(|e| NotHere::Cannot(e.to_string()))
}

/// The child: a clone injected in the forking thread.
fn make_child(gadget: u64, parent: &mut Tracee, regs: Regs, ctid: u64, flags: u64, kind: ForkKind) -> Result<Tracee, NotHere> {
    let err = |what: &str, e: KernelError| NotHere::Cannot(format!("{what}: {e}"));
    if kind != ForkKind::Fork {
        // The child shares the parent's memory, and the parent stops before it waits.
        return match Injector::new(parent, gadget, regs).call_vfork(abi::SYS_CLONE, &[abi::CLONE_PARENT | VFORK, 0, 0, 0, 0]).map_err(|e| err("clone", e))? {
            Ok(child) => Ok(child),
            Err(ret) if ret == -(libc::EAGAIN as i64) || ret == -(libc::ENOMEM as i64) => Err(NotHere::Failed(-ret as i32)),
            Err(ret) if ret == -abi::ERESTARTNOINTR => Err(NotHere::Again),
            Err(ret) => Err(NotHere::Cannot(format!("clone failed ({ret})"))),
        };
    }
    // A child process of the process's parent (herdd); its exit signal is the process's
    // own (CLONE_PARENT), which herdd gets.
    let (ret, child) = Injector::new(parent, gadget, regs).call_clone(abi::SYS_CLONE, &[abi::CLONE_PARENT, 0, 0, 0, 0]).map_err(|e| err("clone", e))?;
    let mut child = match child {
        Some(c) => c,
        None if ret == -(libc::EAGAIN as i64) || ret == -(libc::ENOMEM as i64) => return Err(NotHere::Failed(-ret as i32)),
        None if ret == -abi::ERESTARTNOINTR => return Err(NotHere::Again),
        None => return Err(NotHere::Cannot(format!("clone failed ({ret})"))),
    };
    if flags & libc::CLONE_CHILD_CLEARTID as u64 != 0 && ctid != 0 {
        let cpid = child.pid();
        let r = child.regs().and_then(|base| Injector::new(&mut child, gadget, base).call_ok("set_tid_address", abi::SYS_SET_TID_ADDRESS, &[ctid]));
        if let Err(e) = r {
            child.kill();
            let _ = task::reap(cpid);
            return Err(err("set_tid_address", e));
        }
    }
    Ok(child)
}

/// Whether notification `n` is a clone herd injected (a fork's child made here, a
/// checkpoint's snapshot): `clone(CLONE_PARENT)`, no exit signal, nothing else but a
/// vfork's CLONE_VM|CLONE_VFORK.
pub fn is_injected_clone(n: &Notif) -> bool {
    i64::from(n.nr) == libc::SYS_clone && (n.args[0] == abi::CLONE_PARENT || n.args[0] == abi::CLONE_PARENT | VFORK)
}

/// Reads the seccomp listener shared by a process and the children it forked here, and
/// hands each call to the guest of the process that made it ([`Hub::join`]). Injected
/// clones ([`is_injected_clone`], in a thread the guest announced: [`Hub::injecting`])
/// are let through here: the guest that injects one waits for it. A call of a process no guest serves (it has ended, or left) fails
/// with ENOSYS. The thread ends once no process uses the filter any more.
pub struct Hub {
    listener: Arc<Listener>,
    members: Mutex<Members>,
}

#[derive(Default)]
struct Members {
    /// Each process's guest, by its pid here.
    guests: HashMap<i32, WakeSender<Notif>>,
    /// The process of each other thread seen (forgotten with its process, or once gone).
    threads: HashMap<i32, i32>,
    /// Threads a clone is injected in now ([`Hub::injecting`]).
    injecting: std::collections::HashSet<i32>,
}

impl Hub {
    /// Starts reading `listener` (guest `pid`'s, which reads the returned receiver
    /// instead from now on: it is a member before any call is read).
    pub fn start(listener: Arc<Listener>, pid: i32) -> std::io::Result<(Arc<Hub>, WakeReceiver<Notif>)> {
        let hub = Arc::new(Hub { listener, members: Mutex::new(Members::default()) });
        let rx = hub.join(pid)?;
        let h = hub.clone();
        std::thread::Builder::new().name("guest-calls".into()).spawn(move || h.run())?;
        Ok((hub, rx))
    }

    /// A clone is about to be injected in thread `tid` (a fork's child, a snapshot), or an
    /// exec ([`crate::exec`]): let it through ([`Hub::injected`] when it is done). No
    /// other `clone(CLONE_PARENT)` or `execve` is.
    pub fn injecting(&self, tid: i32) {
        self.members.lock().expect("hub members").injecting.insert(tid);
    }

    pub fn injected(&self, tid: i32) {
        self.members.lock().expect("hub members").injecting.remove(&tid);
    }

    pub fn listener(&self) -> &Arc<Listener> {
        &self.listener
    }

    /// The calls of process `pid` (every thread of it) from now on.
    pub fn join(&self, pid: i32) -> std::io::Result<WakeReceiver<Notif>> {
        let (tx, rx) = crate::wake::channel()?;
        self.members.lock().expect("hub members").guests.insert(pid, tx);
        Ok(rx)
    }

    /// Process `pid`'s guest ends.
    pub fn leave(&self, pid: i32) {
        let mut m = self.members.lock().expect("hub members");
        m.guests.remove(&pid);
        m.threads.retain(|_, p| *p != pid);
    }

    fn run(&self) {
        loop {
            match self.listener.wait(1000) {
                Ok(Readiness::Notification) => {}
                Ok(Readiness::Timeout) => {
                    let mut m = self.members.lock().expect("hub members");
                    m.threads.retain(|tid, _| std::path::Path::new(&format!("/proc/{tid}")).exists());
                    continue;
                }
                Ok(Readiness::Gone) | Err(_) => break,
            }
            let n = match self.listener.recv() {
                Ok(n) => n,
                Err(_) => continue,
            };
            let tid = n.pid as i32;
            let sent = {
                let mut m = self.members.lock().expect("hub members");
                if m.injecting.contains(&tid) && (is_injected_clone(&n) || i64::from(n.nr) == libc::SYS_execve) {
                    drop(m);
                    let _ = self.listener.continue_(n.id);
                    continue;
                }
                // A main thread is its process; another thread's process is read once.
                let pid = if m.guests.contains_key(&tid) {
                    tid
                } else if let Some(p) = m.threads.get(&tid) {
                    *p
                } else {
                    let p = tgid_of(tid).unwrap_or(tid);
                    m.threads.insert(tid, p);
                    p
                };
                match m.guests.get(&pid).map(|g| g.send(n)) {
                    Some(true) => true,
                    Some(false) => {
                        m.guests.remove(&pid);
                        false
                    }
                    None => false,
                }
            };
            if !sent {
                tracing::debug!(tid, nr = n.nr, "a call of a process no guest serves: ENOSYS");
                let _ = self.listener.respond(n.id, -1, libc::ENOSYS);
            }
        }
        tracing::debug!("a shared listener has no process left");
    }
}

/// The process thread `tid` belongs to (/proc/TID/status `Tgid:`).
fn tgid_of(tid: i32) -> Option<i32> {
    procfs::process::Process::new(tid).and_then(|p| p.status()).map(|s| s.tgid).ok()
}

/// Process `pid`'s RLIMIT_NPROC (soft, hard; unlimited as u64::MAX), as /proc shows it:
/// what a fork away carries home ([`crate::proto::ToHome::Fork`]) and the deputy takes.
pub fn nproc_limit(pid: i32) -> Option<(u64, u64)> {
    use procfs::process::LimitValue;
    let v = |x: LimitValue| match x {
        LimitValue::Unlimited => u64::MAX,
        LimitValue::Value(n) => n,
    };
    let l = procfs::process::Process::new(pid).and_then(|p| p.limits()).ok()?;
    Some((v(l.max_processes.soft_limit), v(l.max_processes.hard_limit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No memory: a call whose argument structure is read fails.
    struct NoMem;
    impl crate::syscalls::MemRead for NoMem {
        fn read(&self, _: u64, _: &mut [u8]) -> std::io::Result<()> {
            Err(std::io::Error::from_raw_os_error(libc::EFAULT))
        }
    }

    /// One clone_args structure at any address.
    struct Args([u64; 11]);
    impl crate::syscalls::MemRead for Args {
        fn read(&self, _: u64, buf: &mut [u8]) -> std::io::Result<()> {
            let bytes: Vec<u8> = self.0.iter().flat_map(|w| w.to_ne_bytes()).collect();
            buf.copy_from_slice(&bytes[..buf.len()]);
            Ok(())
        }
    }

    fn is_plain_fork(nr: i64, args: &[u64; 6]) -> bool {
        fork_kind(nr, args, &NoMem) == Some(ForkKind::Fork)
    }

    #[test]
    fn vforks_and_posix_spawn() {
        let vfork = (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
        let sigchld = libc::SIGCHLD as u64;
        assert_eq!(fork_kind(libc::SYS_vfork, &[0; 6], &NoMem), Some(ForkKind::Vfork { sp: None }));
        assert_eq!(fork_kind(libc::SYS_clone, &[vfork | sigchld, 0x7000, 0, 0, 0, 0], &NoMem), Some(ForkKind::Vfork { sp: Some(0x7000) }));
        assert_eq!(fork_kind(libc::SYS_clone, &[vfork | sigchld, 0, 0, 0, 0, 0], &NoMem), Some(ForkKind::Vfork { sp: None }));
        assert_eq!(fork_kind(libc::SYS_clone, &[vfork | sigchld | libc::CLONE_SETTLS as u64, 0x7000, 0, 0, 0, 0], &NoMem), None);
        assert_eq!(fork_kind(libc::SYS_clone, &[vfork, 0x7000, 0, 0, 0, 0], &NoMem), None);
        // glibc's posix_spawn: clone3 with a stack; the child's stack pointer is its top.
        let spawn = [vfork, 0, 0, 0, sigchld, 0x7000_0000, 0x9000, 0, 0, 0, 0];
        assert_eq!(fork_kind(libc::SYS_clone3, &[0x1000, 88, 0, 0, 0, 0], &Args(spawn)), Some(ForkKind::Vfork { sp: Some(0x7000_9000) }));
        assert_eq!(fork_kind(libc::SYS_clone3, &[0x1000, 64, 0, 0, 0, 0], &Args(spawn)), Some(ForkKind::Vfork { sp: Some(0x7000_9000) }));
        let mut pidfd = spawn;
        pidfd[1] = 0x2000;
        assert_eq!(fork_kind(libc::SYS_clone3, &[0x1000, 88, 0, 0, 0, 0], &Args(pidfd)), None);
        let mut thread = spawn;
        thread[0] |= (libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(fork_kind(libc::SYS_clone3, &[0x1000, 88, 0, 0, 0, 0], &Args(thread)), None);
        let mut no_signal = spawn;
        no_signal[4] = 0;
        assert_eq!(fork_kind(libc::SYS_clone3, &[0x1000, 88, 0, 0, 0, 0], &Args(no_signal)), None);
        // A size the kernel would take but not these rules, and unreadable memory.
        assert_eq!(fork_kind(libc::SYS_clone3, &[0x1000, 96, 0, 0, 0, 0], &Args(spawn)), None);
        assert_eq!(fork_kind(libc::SYS_clone3, &[0x1000, 88, 0, 0, 0, 0], &NoMem), None);
    }

    #[test]
    fn plain_forks_only() {
        let a = |flags: u64| [flags, 0, 0, 0, 0, 0];
        let glibc = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        assert!(is_plain_fork(libc::SYS_clone, &a(glibc)));
        assert!(is_plain_fork(libc::SYS_fork, &a(0)));
        assert!(is_plain_fork(libc::SYS_clone, &a(libc::SIGCHLD as u64)));
        // vfork, posix_spawn (not plain forks), threads, shared files, no exit signal,
        // new namespaces: at home.
        assert!(!is_plain_fork(libc::SYS_vfork, &a(0)));
        assert!(!is_plain_fork(libc::SYS_clone, &a((libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64)));
        assert!(!is_plain_fork(libc::SYS_clone, &a((libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64)));
        assert!(!is_plain_fork(libc::SYS_clone, &a((libc::CLONE_FILES | libc::SIGCHLD) as u64)));
        assert!(!is_plain_fork(libc::SYS_clone, &a(0)));
        assert!(!is_plain_fork(libc::SYS_clone, &a((libc::CLONE_NEWPID | libc::SIGCHLD) as u64)));
        assert!(!is_plain_fork(libc::SYS_clone, &a(abi::CLONE_PARENT)));
        assert!(!is_plain_fork(libc::SYS_clone3, &a(glibc)));
        // A child on a stack of its own (clone(fn, stack, SIGCHLD, arg)).
        assert!(!is_plain_fork(libc::SYS_clone, &[libc::SIGCHLD as u64, 0x7f00_0000_1000, 0, 0, 0, 0]));
    }
}
