//! pidfds (a process named by a file descriptor, immune to pid reuse) and
//! queued signals carrying a value.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::task::Exit;
use crate::{KernelError, Result};

/// A pidfd: refers to one process for as long as it is open.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    /// pidfd_open(pid, 0).
    pub fn open(pid: i32) -> Result<PidFd> {
        // SAFETY: pidfd_open takes integers only.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(KernelError::last("pidfd_open", pid));
        }
        // SAFETY: a new descriptor the kernel just gave us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(PidFd { fd, pid })
    }

    /// The pid this pidfd was opened for.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A duplicate of the process's descriptor `target_fd` (pidfd_getfd; needs
    /// ptrace access to it). The copy is close-on-exec.
    pub fn get_fd(&self, target_fd: i32) -> Result<OwnedFd> {
        // SAFETY: pidfd_getfd takes integers only.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.fd.as_raw_fd(), target_fd, 0) };
        if fd < 0 {
            return Err(KernelError::last("pidfd_getfd", self.pid));
        }
        // SAFETY: a new descriptor the kernel just gave us; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    /// The process's ids as the kernel reports them for a pidfd (ioctl PIDFD_GET_INFO,
    /// Linux 6.13): its pid, thread-group id and parent, as seen from the caller's pid
    /// namespace. Fails with ESRCH once it has ended (or when its parent is not in
    /// that namespace), ENOTTY on an older kernel.
    pub fn ids(&self) -> Result<PidIds> {
        let mut info = PidfdInfo { mask: PIDFD_INFO_PID, ..PidfdInfo::default() };
        // SAFETY: PIDFD_GET_INFO writes at most size_of::<PidfdInfo>() bytes (the size
        // encoded in the request) into `info`, which lives across the call.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), PIDFD_GET_INFO, &mut info as *mut PidfdInfo) };
        if r < 0 {
            return Err(KernelError::last("PIDFD_GET_INFO", self.pid));
        }
        if info.mask & PIDFD_INFO_PID == 0 {
            return Err(KernelError::Died { pid: self.pid });
        }
        Ok(PidIds { pid: info.pid as i32, tgid: info.tgid as i32, ppid: info.ppid as i32 })
    }

    /// pidfd_send_signal(sig), with the kernel's default siginfo (SI_USER).
    pub fn send_signal(&self, sig: i32) -> Result<()> {
        // SAFETY: a null siginfo pointer asks for the default one; the rest
        // are integers.
        let r = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.fd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0)
        };
        if r < 0 {
            return Err(KernelError::last("pidfd_send_signal", self.pid));
        }
        Ok(())
    }

    /// If the process, a child of ours, has ended: reaps it and says how.
    /// `None` while it runs (or is only stopped). The pidfd becomes readable
    /// when the process ends, so this is meant to be called after a poll.
    pub fn try_wait(&self) -> Result<Option<Exit>> {
        loop {
            // SAFETY: siginfo_t is plain data; zero is a valid value, and a
            // zero si_pid afterwards means "no child changed state".
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid writes one siginfo_t into `info`.
            let r = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    self.fd.as_raw_fd() as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::__WALL,
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                // Reaped by a tracer's wait as it ended while traced.
                if e.raw_os_error() == Some(libc::ECHILD) {
                    if let Some(status) = crate::ptrace::take_reaped(self.pid) {
                        return Ok(Some(if libc::WIFEXITED(status) { Exit::Code(libc::WEXITSTATUS(status)) } else { Exit::Signal(libc::WTERMSIG(status)) }));
                    }
                }
                return Err(KernelError::from_io("waitid(P_PIDFD)", self.pid, e));
            }
            // SAFETY: waitid filled in the SIGCHLD-shaped union (or left it
            // zeroed), so the pid and status fields are the ones to read.
            let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
            if pid == 0 {
                return Ok(None);
            }
            return Ok(Some(match info.si_code {
                libc::CLD_EXITED => Exit::Code(status),
                libc::CLD_KILLED | libc::CLD_DUMPED => Exit::Signal(status),
                code => {
                    return Err(KernelError::Unexpected { pid: self.pid, what: format!("waitid reported si_code {code}") })
                }
            }));
        }
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A process's ids from [`PidFd::ids`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidIds {
    pub pid: i32,
    pub tgid: i32,
    pub ppid: i32,
}

/// `struct pidfd_info` of linux/pidfd.h, its first version (64 bytes).
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

const PIDFD_INFO_PID: u64 = 1;
/// _IOWR(PIDFS_IOCTL_MAGIC 0xFF, 11, struct pidfd_info).
const PIDFD_GET_INFO: libc::c_ulong = (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as libc::c_ulong) << 16) | (0xFF << 8) | 11;
const _: () = assert!(std::mem::size_of::<PidfdInfo>() == 64);

// Offsets in the x86_64 siginfo_t (128 bytes).
const SI_SIGNO: usize = 0;
const SI_CODE: usize = 8;
const SI_PID: usize = 16;
const SI_UID: usize = 20;
const SI_VALUE: usize = 24;

/// Queues signal `sig` to thread `tid` of `tgid` (rt_tgsigqueueinfo) as
/// sigqueue(3) would: `si_code` SI_QUEUE, our pid and uid, and `value` in
/// `si_value` (the int/pointer union), which the receiver (or its tracer,
/// with [`siginfo_queue_value`]) can read back.
pub fn tgsigqueue(tgid: i32, tid: i32, sig: i32, value: u64) -> Result<()> {
    let mut raw = [0u8; 128];
    raw[SI_SIGNO..SI_SIGNO + 4].copy_from_slice(&sig.to_ne_bytes());
    raw[SI_CODE..SI_CODE + 4].copy_from_slice(&libc::SI_QUEUE.to_ne_bytes());
    raw[SI_PID..SI_PID + 4].copy_from_slice(&(std::process::id() as i32).to_ne_bytes());
    // SAFETY: getuid has no arguments and cannot fail.
    let uid = unsafe { libc::getuid() };
    raw[SI_UID..SI_UID + 4].copy_from_slice(&uid.to_ne_bytes());
    raw[SI_VALUE..SI_VALUE + 8].copy_from_slice(&value.to_ne_bytes());
    // An 8-byte aligned copy for the kernel.
    let mut info = [0u64; 16];
    for (word, chunk) in info.iter_mut().zip(raw.chunks_exact(8)) {
        *word = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
    }
    // SAFETY: the kernel reads 128 bytes of siginfo from `info`, which is
    // live and that large.
    let r = unsafe { libc::syscall(libc::SYS_rt_tgsigqueueinfo, tgid, tid, sig, info.as_ptr()) };
    if r < 0 {
        return Err(KernelError::last("rt_tgsigqueueinfo", tid));
    }
    Ok(())
}

/// `(si_code, si_pid, si_value)` of a raw siginfo (as from
/// `Tracee::siginfo`). `si_pid` and `si_value` only mean something when
/// `si_code` is `SI_QUEUE` (or another code with that layout).
pub fn siginfo_queue_value(info: &[u8; 128]) -> (i32, i32, u64) {
    let i32_at = |off: usize| i32::from_ne_bytes(info[off..off + 4].try_into().expect("4 bytes"));
    let value = u64::from_ne_bytes(info[SI_VALUE..SI_VALUE + 8].try_into().expect("8 bytes"));
    (i32_at(SI_CODE), i32_at(SI_PID), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_value_layout() {
        let mut raw = [0u8; 128];
        raw[0..4].copy_from_slice(&10i32.to_ne_bytes());
        raw[8..12].copy_from_slice(&libc::SI_QUEUE.to_ne_bytes());
        raw[16..20].copy_from_slice(&1234i32.to_ne_bytes());
        raw[24..32].copy_from_slice(&0xdead_beef_0bad_f00du64.to_ne_bytes());
        assert_eq!(siginfo_queue_value(&raw), (libc::SI_QUEUE, 1234, 0xdead_beef_0bad_f00d));
    }

    #[test]
    fn layout_matches_libc() {
        // SAFETY: siginfo_t is plain data; zero is a valid value.
        let info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let base = &info as *const _ as usize;
        assert_eq!(std::mem::size_of::<libc::siginfo_t>(), 128);
        assert_eq!(&info.si_code as *const _ as usize - base, SI_CODE);
    }
}

#[cfg(test)]
// The children are reaped through their pidfd, which clippy cannot see.
#[allow(clippy::zombie_processes)]
mod child_tests {
    use super::*;

    fn wait_readable(p: &PidFd) {
        let mut pfd = libc::pollfd { fd: p.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd on our stack, count 1.
        let r = unsafe { libc::poll(&mut pfd, 1, 10_000) };
        assert_eq!(r, 1, "the pidfd did not become readable");
    }

    #[test]
    fn open_getfd_signal_wait() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        let p = PidFd::open(pid).unwrap();
        assert_eq!(p.pid(), pid);
        assert_eq!(p.try_wait().unwrap(), None);

        // The child's stdin is the read end of our pipe.
        let fd = p.get_fd(0).unwrap();
        let meta = std::fs::File::from(fd).metadata().unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_fifo());

        // Its ids: our child, in our pid namespace.
        let has_ids = match p.ids() {
            Ok(ids) => {
                assert_eq!(ids, PidIds { pid, tgid: pid, ppid: std::process::id() as i32 });
                true
            }
            Err(KernelError::Sys { source, .. }) if source.raw_os_error() == Some(libc::ENOTTY) => {
                println!("SKIP: PIDFD_GET_INFO needs Linux 6.13 (the ids part of this test)");
                false
            }
            Err(e) => panic!("PIDFD_GET_INFO: {e}"),
        };

        tgsigqueue(pid, pid, libc::SIGTERM, 7).unwrap();
        wait_readable(&p);
        assert_eq!(p.try_wait().unwrap(), Some(Exit::Signal(libc::SIGTERM)));
        // Reaped: nothing left to wait for, no ids.
        assert!(p.try_wait().is_err());
        if has_ids {
            assert!(matches!(p.ids(), Err(KernelError::Died { .. })), "{:?}", p.ids());
        }
        drop(child.stdin.take());
    }

    #[test]
    fn send_signal_and_exit_code() {
        let child = std::process::Command::new("sh").args(["-c", "exit 3"]).spawn().expect("spawn sh");
        let p = PidFd::open(child.id() as i32).unwrap();
        wait_readable(&p);
        assert_eq!(p.try_wait().unwrap(), Some(Exit::Code(3)));

        let child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        let p = PidFd::open(child.id() as i32).unwrap();
        p.send_signal(libc::SIGKILL).unwrap();
        wait_readable(&p);
        assert_eq!(p.try_wait().unwrap(), Some(Exit::Signal(libc::SIGKILL)));
    }
}
