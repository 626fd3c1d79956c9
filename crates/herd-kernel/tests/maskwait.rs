//! `maskwait::interrupt_wait` against the real kernel: a child blocks SIGUSR1
//! and SIGUSR2, then waits in pselect6, ppoll or epoll_pwait with an empty
//! mask under a seccomp filter that traps the wait; this process plays the
//! guest: it receives the trapped wait (which never runs), sends SIGUSR1
//! (pending: the child's own mask blocks it) and ends the wait as the kernel
//! would have. The child checks what a program sees: the wait returns EINTR,
//! its handler ran once with SIGUSR2 let in (the call's mask), and afterwards
//! both signals are blocked again (its own mask).
//!
//! The child is this test binary run again (`masked_wait_child`), a fresh
//! process rather than a fork of the multi-threaded harness. Needs seccomp
//! user notification, pidfd_getfd and ptrace of a child; prints `SKIP:
//! <reason>` otherwise.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herd_kernel::maskwait::{interrupt_wait, Interrupted};
use herd_kernel::seccomp::{self, Readiness};

const CHILD_ENV: &str = "HERD_MASKWAIT_CHILD";
const WAITS: [i64; 3] = [libc::SYS_pselect6, libc::SYS_ppoll, libc::SYS_epoll_pwait];

fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// Failed checks of the child, one bit each (its exit status).
mod fails {
    pub const NOT_EINTR: i32 = 1;
    pub const HANDLER_RUNS: i32 = 2;
    pub const MASK_AFTER: i32 = 4;
    pub const MASK_IN_HANDLER: i32 = 8;
    pub const SETUP: i32 = 16;
}

#[test]
fn waits_interrupted_as_the_kernel_would() {
    for (mode, nr) in [("pselect6", libc::SYS_pselect6), ("ppoll", libc::SYS_ppoll), ("epoll_pwait", libc::SYS_epoll_pwait)] {
        let Some((outcome, status)) = run(mode, nr) else { return };
        assert_eq!(outcome, Interrupted::Handler { sig: libc::SIGUSR1 }, "{mode}");
        assert_eq!(status.code(), Some(0), "{mode}: the child's failed checks (bits of `fails`): {status:?}");
    }
}

/// A signal with no handler whose default action ends the process: the wait lets it
/// in, and it ends the process, as at home (nothing waits for ever).
#[test]
fn a_signal_without_handler_takes_its_default_action() {
    let Some((outcome, status)) = run("default", libc::SYS_pselect6) else { return };
    assert_eq!(outcome, Interrupted::NoHandler);
    assert_eq!(status.signal(), Some(libc::SIGUSR1), "{status:?}");
}

/// Runs the child in `mode`, serves its trapped calls, and ends its wait in
/// `nr` (after sending it SIGUSR1) with `interrupt_wait`. None: skipped.
fn run(mode: &str, nr: i64) -> Option<(Interrupted, std::process::ExitStatus)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "masked_wait_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listener = match seccomp::listener_reported_by(pid, &mut lines) {
        Ok(seccomp::Reported::Listener(l)) => l,
        Ok(seccomp::Reported::Skip(reason)) => {
            println!("SKIP: {reason}");
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut outcome = None;
    loop {
        match listener.wait(200).unwrap() {
            Readiness::Gone => break,
            Readiness::Timeout => {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("{mode}: the child made no progress (outcome so far {outcome:?})");
                }
                continue;
            }
            Readiness::Notification => {}
        }
        let n = match listener.recv() {
            Ok(n) => n,
            Err(e) if e.errno() == Some(libc::ENOENT) => continue,
            Err(e) => panic!("recv: {e}"),
        };
        if i64::from(n.nr) != nr {
            let _ = listener.continue_(n.id);
            continue;
        }
        // The signal comes while the call waits (at home, in herd), for this thread
        // (sent to the process, the harness's main thread, which lets it in, would take it).
        herd_kernel::task::tgkill(pid, n.pid as i32, libc::SIGUSR1).unwrap();
        match interrupt_wait(n.pid as i32, nr, 0) {
            Ok(o) => outcome = Some(o),
            Err(herd_kernel::KernelError::Died { .. }) => {}
            Err(e) if e.errno() == Some(libc::EPERM) => {
                println!("SKIP: ptrace of the child: {e}");
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Err(e) => panic!("{mode}: interrupt_wait: {e}"),
        }
        // The notification is gone: answering it is refused.
        assert!(!listener.id_valid(n.id), "{mode}: the notification is still valid");
    }
    let status = child.wait().unwrap();
    Some((outcome.unwrap_or(Interrupted::NotWaiting), status))
}

static HANDLED: AtomicI32 = AtomicI32::new(0);
static MASK_IN_HANDLER: AtomicU64 = AtomicU64::new(0);

/// The signal mask of the calling thread.
fn own_mask() -> u64 {
    let mut m: u64 = 0;
    // SAFETY: rt_sigprocmask writes 8 bytes (the size passed) to `m`, a live u64;
    // a null new set changes nothing.
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK, std::ptr::null::<u64>(), &mut m as *mut u64, 8) };
    m
}

extern "C" fn on_usr1(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::SeqCst);
    MASK_IN_HANDLER.store(own_mask(), Ordering::SeqCst);
}

/// The child: see the module's comment. Its exit status has one bit per
/// failed check. Does nothing in a normal test run.
#[test]
fn masked_wait_child() {
    let Some(mode) = std::env::var_os(CHILD_ENV) else { return };
    let mode = mode.to_string_lossy().into_owned();
    let (never, _writer) = nix_pipe();
    let mut failed = 0;
    if mode != "default" {
        // SAFETY: a zeroed sigaction with a handler that only touches atomics
        // (async-signal-safe); no SA_RESTART.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
            if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
                failed |= fails::SETUP;
            }
        }
    }
    let own = bit(libc::SIGUSR1) | bit(libc::SIGUSR2);
    // SAFETY: rt_sigprocmask reads 8 bytes from `own`, a live u64.
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK, &own as *const u64, std::ptr::null_mut::<u64>(), 8) };
    // SAFETY: epoll_create1 takes an integer.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 0 };
    // SAFETY: `ev` is a live epoll_event.
    if epfd < 0 || unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, never, &mut ev) } != 0 {
        failed |= fails::SETUP;
    }

    // Every call but the waits runs natively; a thread started before the
    // filter (so outside it) reports the listener.
    let local: Vec<u32> = (0..512).filter(|n| !WAITS.contains(&i64::from(*n))).collect();
    let filter = seccomp::build_filter(&local, libc::SYS_mmap as u32);
    let _listener = seccomp::install_in_self_and_report(&filter);

    let empty: u64 = 0;
    let timeout = libc::timespec { tv_sec: 20, tv_nsec: 0 };
    // SAFETY: every pointer passed is to a live local of the type the call
    // expects; the sets and the mask are read (and the sets written) only.
    let r = unsafe {
        match mode.as_str() {
            "ppoll" => {
                let mut pfd = libc::pollfd { fd: never, events: libc::POLLIN, revents: 0 };
                libc::syscall(libc::SYS_ppoll, &mut pfd as *mut libc::pollfd, 1, &timeout as *const libc::timespec, &empty as *const u64, 8)
            }
            "epoll_pwait" => {
                let mut out: libc::epoll_event = std::mem::zeroed();
                libc::syscall(libc::SYS_epoll_pwait, epfd, &mut out as *mut libc::epoll_event, 1, 20_000, &empty as *const u64, 8)
            }
            _ => {
                let mut set: libc::fd_set = std::mem::zeroed();
                libc::FD_SET(never, &mut set);
                let sigs: [u64; 2] = [&empty as *const u64 as u64, 8];
                libc::syscall(libc::SYS_pselect6, never + 1, &mut set as *mut libc::fd_set, 0, 0, &timeout as *const libc::timespec, sigs.as_ptr())
            }
        }
    };
    let errno = std::io::Error::last_os_error().raw_os_error();
    if r != -1 || errno != Some(libc::EINTR) {
        failed |= fails::NOT_EINTR;
    }
    if HANDLED.load(Ordering::SeqCst) != 1 {
        failed |= fails::HANDLER_RUNS;
    }
    if own_mask() & own != own {
        failed |= fails::MASK_AFTER;
    }
    // In the handler: the call's mask plus the signal itself.
    if MASK_IN_HANDLER.load(Ordering::SeqCst) & own != bit(libc::SIGUSR1) {
        failed |= fails::MASK_IN_HANDLER;
    }
    std::process::exit(failed);
}

fn nix_pipe() -> (i32, std::os::fd::OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the write end was just made and nothing else owns it.
    (fds[0], unsafe { std::os::fd::FromRawFd::from_raw_fd(fds[1]) })
}
