//! Namespaces, and the process plumbing around them that needs `unsafe`:
//! starting a program in new namespaces (a raw `clone`), entering another
//! process's namespaces before `exec` (a `pre_exec` hook that calls
//! `setns`), and detaching a daemon from its caller.
//!
//! Everything that runs between `fork`/`clone` and `execve` in here makes
//! only async-signal-safe system calls on data prepared before the fork, so
//! the callers may have other threads (test harnesses do).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

pub use libc::{CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS};

const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte"))
}

/// unshare(2): moves this process into new namespaces (`CLONE_NEW*` flags).
/// `CLONE_NEWUSER` needs a single-threaded caller.
pub fn unshare(flags: i32) -> io::Result<()> {
    // SAFETY: unshare takes an integer and touches no memory of ours.
    check(unsafe { libc::unshare(flags) })
}

/// Marks every fd from `first` up close-on-exec (close_range(2) with
/// `CLOSE_RANGE_CLOEXEC`), so that fds we inherited without knowing it do not
/// leak into the programs we start.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range only changes flags of our own fd table.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    check(r as libc::c_int)
}

/// A program to start with [`clone_exec`]: everything the child needs is
/// built here, before the clone, because the child may not allocate.
pub struct ExecSpec {
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    /// (our fd, fd number in the child)
    fds: Vec<(OwnedFd, RawFd)>,
    parent_death_signal: i32,
}

impl ExecSpec {
    /// `path` is also argv[0]. The environment starts as this process's.
    pub fn new(path: &Path) -> io::Result<Self> {
        let path = cstring(path.as_os_str())?;
        let mut env = Vec::new();
        for (k, v) in std::env::vars_os() {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            if let Ok(c) = CString::new(kv) {
                env.push(c);
            }
        }
        Ok(Self { argv: vec![path.clone()], path, env, fds: Vec::new(), parent_death_signal: 0 })
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> io::Result<&mut Self> {
        self.argv.push(cstring(arg.as_ref())?);
        Ok(self)
    }

    /// Gives the child `fd` as fd number `target`. Every fd not given this
    /// way is closed in the child.
    pub fn fd(&mut self, fd: OwnedFd, target: RawFd) -> &mut Self {
        self.fds.retain(|(_, t)| *t != target);
        self.fds.push((fd, target));
        self
    }

    /// The child gets `signal` when the thread that started it ends
    /// (PR_SET_PDEATHSIG; kept across execve).
    pub fn parent_death_signal(&mut self, signal: i32) -> &mut Self {
        self.parent_death_signal = signal;
        self
    }
}

/// Starts `spec` in a child created by a raw `clone(flags | SIGCHLD)`: like
/// fork, but in the new namespaces `flags` asks for (with `CLONE_NEWPID` the
/// child is pid 1 of a new pid namespace). The child resets its signal mask,
/// places the fds of the spec, and execs at once. Returns the child's pid
/// once the exec has succeeded; the caller reaps it.
pub fn clone_exec(flags: i32, spec: &ExecSpec) -> io::Result<i32> {
    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = spec.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let sources: Vec<RawFd> = spec.fds.iter().map(|(fd, _)| fd.as_raw_fd()).collect();
    let targets: Vec<RawFd> = spec.fds.iter().map(|(_, t)| *t).collect();
    let mut scratch: Vec<RawFd> = vec![-1; sources.len()];
    let high = targets.iter().copied().max().unwrap_or(2).max(2) + 1;

    let mut report = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two ints into `report`.
    check(unsafe { libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let [report_r, report_w] = report;

    // SAFETY: a zeroed sigset_t is a valid argument for sigemptyset, which
    // initialises it.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty` is a valid sigset_t on our stack.
    unsafe { libc::sigemptyset(&mut empty) };

    // SAFETY: with a null stack pointer, clone behaves like fork: the child
    // runs on a copy-on-write copy of our stack. From here to execve the
    // child only makes raw system calls on memory prepared above (the
    // pointer arrays, `scratch`, `empty`) and never returns from this block.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    if pid == 0 {
        // SAFETY: see above: we are the child; every call below is an
        // async-signal-safe system call on prepared memory, and the child
        // ends in execve or _exit.
        unsafe {
            // The report pipe moves above every fd number we place.
            let report = libc::fcntl(report_w, libc::F_DUPFD_CLOEXEC, high);
            if report < 0 {
                libc::_exit(127);
            }
            let fail = |step: libc::c_int| -> ! {
                let err = [step, *libc::__errno_location()];
                libc::write(report, err.as_ptr() as *const libc::c_void, std::mem::size_of_val(&err));
                libc::_exit(127);
            };
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                fail(1);
            }
            if spec.parent_death_signal != 0
                && libc::prctl(libc::PR_SET_PDEATHSIG, spec.parent_death_signal as libc::c_ulong) != 0
            {
                fail(2);
            }
            // Two steps, so that a source that is also some other target is
            // not overwritten before it is copied.
            for (i, &src) in sources.iter().enumerate() {
                let tmp = libc::fcntl(src, libc::F_DUPFD, high);
                if tmp < 0 {
                    fail(3);
                }
                scratch[i] = tmp;
            }
            for (i, &dst) in targets.iter().enumerate() {
                if libc::dup2(scratch[i], dst) < 0 {
                    fail(3);
                }
            }
            for fd in 0..high {
                if !targets.contains(&fd) {
                    libc::close(fd);
                }
            }
            // Not closed, only marked: the report pipe must stay open until
            // execve succeeds.
            if libc::syscall(libc::SYS_close_range, high as libc::c_uint, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
                fail(4);
            }
            libc::execve(spec.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            fail(5);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(report_w) };
    if pid < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: closing our read end.
        unsafe { libc::close(report_r) };
        return Err(e);
    }
    let pid = pid as i32;
    let mut err = [0 as libc::c_int; 2];
    let n = loop {
        // SAFETY: read writes at most size_of_val(&err) bytes into `err`.
        let n = unsafe { libc::read(report_r, err.as_mut_ptr() as *mut libc::c_void, std::mem::size_of_val(&err)) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break n;
    };
    // SAFETY: closing our read end.
    unsafe { libc::close(report_r) };
    if n == 0 {
        return Ok(pid);
    }
    let mut status = 0;
    // SAFETY: waitpid writes one int to `status`; the child has failed and
    // is exiting.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let step = ["", "resetting the signal mask", "PR_SET_PDEATHSIG", "placing fds", "close_range", "execve"];
    let what = step.get(err[0] as usize).copied().unwrap_or("?");
    let e = io::Error::from_raw_os_error(err[1]);
    Err(io::Error::new(e.kind(), format!("starting {}: {what}: {e}", spec.path.to_string_lossy())))
}

/// What every program we start as a service gets in its forked child
/// before exec: an empty signal mask and default SIGPIPE (a supervisor
/// that reads signals from a signalfd keeps them blocked, and blocked or
/// ignored signals survive exec), and no fd above 2 (fds this process
/// inherited without knowing it are marked close-on-exec). Meant for the
/// forked child, between fork and exec.
fn reset_for_exec() -> io::Result<()> {
    // SAFETY: a zeroed sigset_t is valid input for sigemptyset.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigemptyset, sigprocmask and signal are async-signal-safe
    // and only touch `empty` and this process's signal state.
    unsafe {
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    cloexec_from(3)
}

/// Makes `cmd` start as a daemon: in a session of its own (setsid), with an
/// empty signal mask and without any fd above 2 that this process holds or
/// inherited.
pub fn detach(cmd: &mut Command) {
    // SAFETY: the hook runs in the forked child before exec and makes only
    // async-signal-safe system calls (setsid, sigprocmask, signal,
    // close_range).
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            reset_for_exec()
        });
    }
}

/// Makes `cmd` start with an empty signal mask, default SIGPIPE, and
/// without any fd above 2 this process holds or inherited.
pub fn clean_start(cmd: &mut Command) {
    // SAFETY: the hook runs in the forked child before exec and makes only
    // async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(reset_for_exec);
    }
}

/// Makes `cmd` start inside the namespaces given as open `/proc/PID/ns/*`
/// files, each with its `CLONE_NEW*` type, entered in the order given (put
/// the user namespace first). Entering a mount namespace moves the cwd to
/// its root.
///
/// setns into a pid namespace only affects children, so when one is among
/// them the hook forks once more: the program runs in the grandchild (in the
/// namespace, with PR_SET_PDEATHSIG = SIGKILL), while the process `cmd`
/// returns waits for it, holding no fds, and ends the same way it did (exit
/// code, or the same signal). Killing that process kills the program.
pub fn enter(cmd: &mut Command, namespaces: Vec<(OwnedFd, i32)>) {
    let enters_pid = namespaces.iter().any(|(_, t)| *t == CLONE_NEWPID);
    // SAFETY: the hook runs in the forked child before exec. It makes only
    // async-signal-safe system calls (setns, fork, waitpid, close_range,
    // prctl, signal, kill, _exit) on fds owned by the closure; the
    // intermediate process never returns from it.
    unsafe {
        cmd.pre_exec(move || {
            for (fd, nstype) in &namespaces {
                if libc::setns(fd.as_raw_fd(), *nstype) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if !enters_pid {
                return Ok(());
            }
            let child = libc::fork();
            if child < 0 {
                return Err(io::Error::last_os_error());
            }
            if child == 0 {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                return Ok(());
            }
            // The intermediate: hold nothing (so that pipes see EOF when the
            // program ends), wait, and end like the program.
            libc::syscall(libc::SYS_close_range, 0 as libc::c_uint, u32::MAX, 0 as libc::c_uint);
            let mut status = 0;
            loop {
                if libc::waitpid(child, &mut status, 0) >= 0 {
                    break;
                }
                if *libc::__errno_location() != libc::EINTR {
                    libc::_exit(127);
                }
            }
            if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                libc::signal(sig, libc::SIG_DFL);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::kill(libc::getpid(), sig);
                libc::_exit(128 + sig);
            }
            libc::_exit(libc::WEXITSTATUS(status));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reap(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid writes one int to `status`.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    #[test]
    fn clone_exec_runs_the_program_with_only_its_fds() {
        let dir = std::env::temp_dir().join(format!("herd-ns-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let file = std::fs::File::create(&out).unwrap();
        // SAFETY: dup of an fd we own; the copy is not close-on-exec, as
        // an fd leaked to us by our own parent would be.
        let leaked = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(leaked > 2);
        let mut spec = ExecSpec::new(Path::new("/bin/sh")).unwrap();
        let script = format!("echo hello; for f in 0 2 {leaked}; do [ -e /proc/$$/fd/$f ] && echo open $f; done; echo done");
        spec.arg("-c").unwrap().arg(script).unwrap();
        spec.fd(file.into(), 1);
        let pid = clone_exec(0, &spec).unwrap();
        let status = reap(pid);
        // SAFETY: closing our copy.
        unsafe { libc::close(leaked) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello\ndone\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clone_exec_reports_a_failed_exec() {
        let spec = ExecSpec::new(Path::new("/nonexistent/program")).unwrap();
        let err = clone_exec(0, &spec).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("execve"), "{err}");
    }
}
