//! The system call table against the real kernel: a child process runs
//! under `syscalls::filter()`, and this process plays herdd and the deputy
//! at once: it receives the child's trapped calls on the seccomp listener,
//! answers identity calls with a fake home pid, and runs forwarded calls
//! itself (marshal in the child's memory → execute here → apply back).
//!
//! The child is this test binary run again (`child_under_filter`), so that
//! it is a fresh single-purpose process rather than a fork of the
//! multi-threaded test harness. Needs seccomp user notification and
//! pidfd_getfd; prints `SKIP: <reason>` otherwise.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herd_kernel::seccomp::{self, Readiness};
use herd_migrate::syscalls::{self, Call, Class, HomeReason, Identity, MarshalError, MemRead, MemWrite, Reply};

const CHILD_ENV: &str = "HERD_SYSCALLS_TEST_CHILD";
const PIPE_ENV: &str = "HERD_SYSCALLS_TEST_PIPE";
const FILE_ENV: &str = "HERD_SYSCALLS_TEST_FILE";
const CWD_ENV: &str = "HERD_SYSCALLS_TEST_CWD";
const HOME_PID: i32 = 4242;
const MESSAGE: &[u8] = b"hello through the deputy\n";
const CONTENT: &[u8] = b"the content of the input file, read by a forwarded read\n";

/// Another process's memory (or ours), through process_vm_readv/writev.
struct ProcMem(i32);

impl MemRead for ProcMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        herd_kernel::mem::read_ranges(self.0, &[(addr, buf.len() as u64)], buf).map_err(std::io::Error::other)
    }
}

impl MemWrite for ProcMem {
    fn write(&self, addr: u64, data: &[u8]) -> std::io::Result<()> {
        herd_kernel::mem::write(self.0, addr, data).map_err(std::io::Error::other)
    }
}

/// Runs a call in this process, as the deputy would run it by injection.
fn raw_syscall(nr: i64, a: [u64; 6]) -> i64 {
    // SAFETY: `serve` only lets through the calls the child is known to make
    // (see FORWARDED) on descriptors this test gave it, and `execute` pointed
    // every pointer argument into the scratch buffer it just filled, which
    // nothing else uses while the call runs.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r == -1 {
        -(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO) as i64)
    } else {
        r
    }
}

/// The forwarded calls the child makes; anything else is refused (ENOSYS)
/// rather than run in the test process.
const FORWARDED: &[i64] = &[
    libc::SYS_write,
    libc::SYS_openat,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_poll,
    libc::SYS_getcwd,
    libc::SYS_fcntl, // std checks F_GETFD before closing, in debug builds
];

/// Kills the child if the test fails half-way (it may be blocked in a
/// trapped call for ever).
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What the parent did with each notification.
struct Served {
    /// The only descriptor the child may write to: the pipe it was given.
    pipe_fd: i32,
    seen: Vec<(i64, Class)>,
    refused: Vec<String>,
    /// Descriptors the child opened here (it may only close those).
    opened: HashSet<u64>,
    scratch: Vec<u8>,
}

impl Served {
    /// Returns (val, errno) for the notification.
    fn forward(&mut self, nr: i64, args: [u64; 6], child: &ProcMem) -> (i64, i32) {
        if !FORWARDED.contains(&nr)
            || (nr == libc::SYS_close && !self.opened.contains(&args[0]))
            || (nr == libc::SYS_write && args[0] as i32 != self.pipe_fd)
        {
            self.refused.push(format!("{} {args:x?}", syscalls::name(nr).unwrap_or("?")));
            return (0, libc::ENOSYS);
        }
        let call = match syscalls::marshal(nr, args, child) {
            Ok(c) => c,
            Err(e) => return (0, e.errno()),
        };
        // Through the wire format, as between two nodes.
        let call: Call = postcard::from_bytes(&postcard::to_allocvec(&call).unwrap()).unwrap();
        let me = ProcMem(std::process::id() as i32);
        let reply = loop {
            let (addr, len) = (self.scratch.as_mut_ptr() as u64, self.scratch.len() as u64);
            match syscalls::execute(&call, addr, len, &me, &mut |nr, a| Ok(raw_syscall(nr, a))) {
                Ok(r) => break r,
                Err(MarshalError::TooBig { need }) => self.scratch.resize(need as usize, 0),
                Err(e) => panic!("execute {nr}: {e}"),
            }
        };
        let reply: Reply = postcard::from_bytes(&postcard::to_allocvec(&reply).unwrap()).unwrap();
        let ret = syscalls::apply(&call, &reply, child).unwrap();
        if nr == libc::SYS_openat && ret >= 0 {
            self.opened.insert(ret as u64);
        }
        if nr == libc::SYS_close && ret == 0 {
            self.opened.remove(&args[0]);
        }
        if ret < 0 {
            (0, -ret as i32)
        } else {
            (ret, 0)
        }
    }
}

#[test]
fn forwarded_calls_against_the_real_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, CONTENT).unwrap();
    let (pipe_r, pipe_w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let cwd = std::env::current_dir().unwrap();

    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_under_filter", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env(PIPE_ENV, pipe_w.as_raw_fd().to_string())
        .env(FILE_ENV, &input)
        .env(CWD_ENV, &cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let child_pid = child.id() as i32;
    let mut guard = ChildGuard(Some(child));
    let stdout = guard.0.as_mut().unwrap().stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let listener = match seccomp::listener_reported_by(child_pid, &mut lines) {
        Ok(seccomp::Reported::Listener(l)) => l,
        Ok(seccomp::Reported::Skip(reason)) => {
            println!("SKIP: {reason}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    // Best effort: the flag exists since 6.6.
    let _ = listener.set_sync_wake_up();

    let target = ProcMem(child_pid);
    let mut served = Served {
        pipe_fd: pipe_w.as_raw_fd(),
        seen: Vec::new(),
        refused: Vec::new(),
        opened: HashSet::new(),
        scratch: vec![0; 4096],
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match listener.wait(500).unwrap() {
            Readiness::Gone => break,
            Readiness::Timeout => {
                assert!(Instant::now() < deadline, "the child made no progress; seen so far: {:?}", served.seen);
                continue;
            }
            Readiness::Notification => {}
        }
        let n = match listener.recv() {
            Ok(n) => n,
            Err(e) if e.errno() == Some(libc::ENOENT) => continue,
            Err(e) => panic!("recv: {e}"),
        };
        // The calling thread (the child's test thread, not its main one).
        assert!(std::path::Path::new(&format!("/proc/{child_pid}/task/{}", n.pid)).exists());
        let nr = i64::from(n.nr);
        let class = syscalls::classify_notif(&n, HOME_PID);
        served.seen.push((nr, class));
        if matches!(class, Class::Identity(Identity::ThreadExit | Identity::SigReturn)) {
            // A thread's end, a handler's return run where the process is.
            let _ = listener.continue_(n.id);
            continue;
        }
        let (val, err) = match class {
            Class::Identity(Identity::Getpid | Identity::Gettid) => (i64::from(HOME_PID), 0),
            Class::Forward => served.forward(nr, n.args, &target),
            // Nothing can go home in this test: the call fails instead.
            Class::Home(_) => (0, libc::ENOSYS),
            Class::Local | Class::Identity(Identity::SignalSelf { .. } | Identity::ThreadExit | Identity::SigReturn) => {
                served.refused.push(format!("unexpected {class:?} for {nr}"));
                (0, libc::ENOSYS)
            }
        };
        // false: the child was interrupted or died; its exit status will say.
        let _ = listener.respond(n.id, val, err).unwrap();
    }
    let status = guard.0.take().unwrap().wait().unwrap();

    let names: Vec<String> = served.seen.iter().map(|(nr, c)| format!("{}={c:?}", syscalls::name(*nr).unwrap_or("?"))).collect();
    assert!(served.refused.is_empty(), "refused: {:?}; seen: {names:?}", served.refused);
    assert_eq!(status.code(), Some(0), "the child's failed checks (bits, see child_under_filter); seen: {names:?}");
    let saw = |nr: i64, class: Class| served.seen.contains(&(nr, class));
    assert!(saw(libc::SYS_getpid, Class::Identity(Identity::Getpid)), "{names:?}");
    for nr in [libc::SYS_write, libc::SYS_openat, libc::SYS_read, libc::SYS_readv, libc::SYS_close, libc::SYS_poll, libc::SYS_getcwd] {
        assert!(saw(nr, Class::Forward), "no forwarded {}: {names:?}", syscalls::name(nr).unwrap());
    }
    assert!(served.seen.iter().any(|(nr, _)| [libc::SYS_statx, libc::SYS_newfstatat, libc::SYS_fstat].contains(nr)), "{names:?}");
    assert!(saw(libc::SYS_personality, Class::Home(HomeReason::Call("personality"))), "{names:?}");
    for local in [libc::SYS_nanosleep, libc::SYS_clock_nanosleep, libc::SYS_mmap, libc::SYS_munmap, libc::SYS_futex] {
        assert!(!served.seen.iter().any(|(nr, _)| *nr == local), "local {} trapped: {names:?}", syscalls::name(local).unwrap());
    }
    assert!(served.opened.is_empty(), "the child left descriptors open here: {:?}", served.opened);

    drop(pipe_w);
    let mut out = Vec::new();
    std::fs::File::from(pipe_r).read_to_end(&mut out).unwrap();
    assert_eq!(out, MESSAGE);
}

/// The child: installs the filter and makes calls of every class. Its exit
/// code has one bit per failed check. Does nothing in a normal test run.
#[test]
fn child_under_filter() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let pipe_fd: i32 = std::env::var(PIPE_ENV).unwrap().parse().unwrap();
    let input = std::env::var_os(FILE_ENV).unwrap();
    let cwd = std::path::PathBuf::from(std::env::var_os(CWD_ENV).unwrap());
    let filter = syscalls::filter();
    let mut read_buf = vec![0u8; 256];

    // A thread started before the filter, so outside it, reports the
    // listener: a write from this thread would itself wait for the parent.
    let _listener = seccomp::install_in_self_and_report(&filter);

    let mut failed = 0;
    // Identity: the home pid.
    if std::process::id() != HOME_PID as u32 {
        failed |= 1;
    }
    // Forwarded write to a descriptor that only exists in the parent.
    // SAFETY: MESSAGE is a live buffer of the length passed.
    let n = unsafe { libc::write(pipe_fd, MESSAGE.as_ptr().cast(), MESSAGE.len()) };
    if n != MESSAGE.len() as isize {
        failed |= 2;
    }
    // open, fstat/statx, read(s), close: all forwarded.
    if std::fs::read(&input).ok().as_deref() != Some(CONTENT) {
        failed |= 4;
    }
    if std::fs::metadata(&input).map(|m| m.len()).ok() != Some(CONTENT.len() as u64) {
        failed |= 8;
    }
    // readv into two buffers.
    match std::fs::File::open(&input) {
        Ok(mut f) => {
            let (a, b) = read_buf.split_at_mut(10);
            let n = f.read_vectored(&mut [std::io::IoSliceMut::new(a), std::io::IoSliceMut::new(&mut b[..100])]);
            if n.ok() != Some(CONTENT.len()) || read_buf[..CONTENT.len()] != *CONTENT {
                failed |= 16;
            }
        }
        Err(_) => failed |= 16,
    }
    // Local: never trapped.
    std::thread::sleep(Duration::from_millis(2));
    // poll: a pollfd array in and out.
    let mut pfd = libc::pollfd { fd: pipe_fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one live pollfd, count 1.
    let r = unsafe { libc::poll(&mut pfd, 1, 1000) };
    if r != 1 || pfd.revents & libc::POLLOUT == 0 {
        failed |= 32;
    }
    // getcwd: the parent's (here the same directory).
    if std::env::current_dir().ok() != Some(cwd) {
        failed |= 64;
    }
    // Home: the parent refuses it with ENOSYS.
    // SAFETY: personality(0xffffffff) only queries.
    let r = unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) };
    if r != -1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
        failed |= 128;
    }
    std::process::exit(failed);
}
