//! userfaultfd, as post-copy migration uses it: the restored process's
//! anonymous memory is registered for missing-page faults, and a thread of
//! herdd fills each page as it arrives from the source (UFFDIO_COPY) or when
//! the process touches it (a fault, answered once the page is fetched).
//!
//! The descriptor is created *inside* the restored process by an injected
//! `userfaultfd(2)` (so it refers to that process's memory), set up by
//! injected `ioctl`s ([`API_ARGS`], [`register_args`]), taken by herdd with
//! `pidfd_getfd` and closed in the process: herdd then holds the only copy,
//! and closing it unregisters everything (missing pages are then filled with
//! zeroes by the kernel as for any anonymous memory).
//!
//! At home the process is the deputy, which runs as its user: `userfaultfd(2)` would
//! give it only a descriptor of user-mode faults. There herdd hands it [`DEVICE`]
//! (opened by root), the deputy asks the device for a descriptor
//! ([`USERFAULTFD_IOC_NEW`]), and herdd, once it has taken it, does the handshake
//! ([`Uffd::handshake`], with fork events) and the registrations itself.
//!
//! Layouts and numbers: include/uapi/linux/userfaultfd.h.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::{KernelError, Result};

pub const SYS_USERFAULTFD: u64 = 323;
pub const SYS_IOCTL: u64 = 16;

pub const UFFD_API: u64 = 0xAA;
/// The process is told about mremap (pages move), madvise(DONTNEED) and
/// munmap: herdd's idea of which pages are still missing must follow them.
pub const FEATURE_EVENT_REMAP: u64 = 1 << 2;
/// A fork of the process gives its child a userfaultfd of its own, read from
/// this one ([`Event::Fork`]); the fork waits until herdd has read it. Asking
/// for it takes CAP_SYS_PTRACE in the caller of UFFDIO_API (herdd).
pub const FEATURE_EVENT_FORK: u64 = 1 << 1;
pub const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
pub const FEATURE_EVENT_UNMAP: u64 = 1 << 6;
/// The features post-copy asks for.
pub const POSTCOPY_FEATURES: u64 = FEATURE_EVENT_REMAP | FEATURE_EVENT_REMOVE | FEATURE_EVENT_UNMAP;

pub const REGISTER_MODE_MISSING: u64 = 1;
/// Write-protect mode (dirty tracking, below).
pub const REGISTER_MODE_WP: u64 = 2;
/// Write faults on write-protected pages are resolved by the kernel itself, which
/// only marks the page written (PAGEMAP_SCAN's PAGE_IS_WRITTEN): nobody has to
/// read the descriptor.
pub const FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `userfaultfd(2)` flag: only faults from user mode (allowed without privilege;
/// with WP_ASYNC the kernel's own writes are resolved and marked all the same).
pub const USER_MODE_ONLY: u64 = 1;

// _IOC(dir, 0xAA, nr, size): dir << 30 | size << 16 | 0xAA << 8 | nr.
pub const UFFDIO_API: u64 = 0xC018_AA3F;
pub const UFFDIO_REGISTER: u64 = 0xC020_AA00;
pub const UFFDIO_WAKE: u64 = 0x8010_AA02;
pub const UFFDIO_COPY: u64 = 0xC028_AA03;
pub const UFFDIO_ZEROPAGE: u64 = 0xC020_AA04;
pub const UFFDIO_WRITEPROTECT: u64 = 0xC018_AA06;
pub const UFFDIO_UNREGISTER: u64 = 0x8010_AA01;
/// ioctl of /dev/userfaultfd: a new userfaultfd of the caller's memory, with the
/// flags given as argument. Whoever may open the device (root) makes one that also
/// takes the kernel's own faults, without CAP_SYS_PTRACE in the process.
pub const USERFAULTFD_IOC_NEW: u64 = 0xAA00;
/// The device.
pub const DEVICE: &str = "/dev/userfaultfd";
const WRITEPROTECT_MODE_WP: u64 = 1;

pub const EVENT_PAGEFAULT: u8 = 0x12;
pub const EVENT_FORK: u8 = 0x13;
pub const EVENT_REMAP: u8 = 0x14;
pub const EVENT_REMOVE: u8 = 0x15;
pub const EVENT_UNMAP: u8 = 0x16;

/// `userfaultfd(2)` flags for the injected call: O_CLOEXEC | O_NONBLOCK.
pub const CREATE_FLAGS: u64 = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioApi {
    pub api: u64,
    pub features: u64,
    pub ioctls: u64,
}

/// `struct uffdio_register` (range, mode, ioctls).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioRegister {
    pub start: u64,
    pub len: u64,
    pub mode: u64,
    pub ioctls: u64,
}

/// `struct uffdio_copy`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// `struct uffdio_zeropage`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct UffdioZeropage {
    start: u64,
    len: u64,
    mode: u64,
    zeropage: i64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct UffdioRange {
    start: u64,
    len: u64,
}

/// `struct uffdio_writeprotect`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

/// The argument of the injected UFFDIO_API.
pub fn api_args() -> UffdioApi {
    UffdioApi { api: UFFD_API, features: POSTCOPY_FEATURES, ioctls: 0 }
}

/// The argument of an injected UFFDIO_REGISTER of `[start, start + len)` for missing pages.
pub fn register_args(start: u64, len: u64) -> UffdioRegister {
    UffdioRegister { start, len, mode: REGISTER_MODE_MISSING, ioctls: 0 }
}

/// What the process's memory did, as the descriptor reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A thread touched a missing page at `addr` and waits.
    PageFault { addr: u64 },
    /// `[from, from + len)` moved to `to` (mremap).
    Remap { from: u64, to: u64, len: u64 },
    /// `[start, end)` was emptied (madvise DONTNEED/REMOVE): it reads as zeroes now.
    Remove { start: u64, end: u64 },
    /// `[start, end)` was unmapped.
    Unmap { start: u64, end: u64 },
    /// The process forked: `fd`, a descriptor the kernel installed in the reader's
    /// table, is the child's userfaultfd ([`Uffd::forked`] takes it).
    Fork { fd: i32 },
    /// Anything else (not asked for).
    Other(u8),
}

/// Decodes one 32-byte `struct uffd_msg`.
pub fn decode(msg: &[u8; 32]) -> Event {
    let word = |i: usize| u64::from_ne_bytes(msg[8 + i * 8..16 + i * 8].try_into().expect("8 bytes"));
    match msg[0] {
        EVENT_PAGEFAULT => Event::PageFault { addr: word(1) },
        EVENT_REMAP => Event::Remap { from: word(0), to: word(1), len: word(2) },
        EVENT_REMOVE => Event::Remove { start: word(0), end: word(1) },
        EVENT_UNMAP => Event::Unmap { start: word(0), end: word(1) },
        EVENT_FORK => Event::Fork { fd: u32::from_ne_bytes(msg[8..12].try_into().expect("4 bytes")) as i32 },
        other => Event::Other(other),
    }
}

/// How an UFFDIO_COPY / ZEROPAGE went.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// All of it.
    Done,
    /// Only the first `bytes` (a page further on is present already: EEXIST).
    Partial { bytes: u64 },
    /// The memory layout is changing: read the pending events, then try again.
    Again { bytes: u64 },
    /// The range is no longer registered memory (unmapped meanwhile).
    Gone,
}

/// A userfaultfd of another process (see the module documentation).
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    pid: i32,
}

impl Uffd {
    /// Wraps the descriptor herdd took from process `pid`.
    pub fn from_fd(fd: OwnedFd, pid: i32) -> Uffd {
        Uffd { fd, pid }
    }

    /// Takes the descriptor of an [`Event::Fork`] read from a userfaultfd of
    /// process `pid` (its child's; the child's pid is not in the event).
    pub fn forked(fd: i32, pid: i32) -> Uffd {
        use std::os::fd::FromRawFd;
        // SAFETY: the kernel installed `fd` in this process's table when the fork
        // event was read, for the reader alone; nothing else owns or closes it.
        Uffd { fd: unsafe { OwnedFd::from_raw_fd(fd) }, pid }
    }

    /// UFFDIO_API, by herdd (a descriptor made without it, by [`USERFAULTFD_IOC_NEW`]
    /// in the process): `features` asked for ([`FEATURE_EVENT_FORK`] takes herdd's
    /// CAP_SYS_PTRACE).
    pub fn handshake(&self, features: u64) -> Result<()> {
        let mut api = UffdioApi { api: UFFD_API, features, ioctls: 0 };
        self.ioctl("UFFDIO_API", UFFDIO_API, &mut api)
            .map_err(|e| KernelError::Sys { op: "UFFDIO_API", pid: self.pid, source: std::io::Error::from_raw_os_error(e) })
    }

    /// Registers `[start, start + len)` of the process's memory for missing-page faults.
    pub fn register_missing(&self, start: u64, len: u64) -> Result<()> {
        let mut reg = register_args(start, len);
        self.ioctl("UFFDIO_REGISTER", UFFDIO_REGISTER, &mut reg)
            .map_err(|e| KernelError::Sys { op: "UFFDIO_REGISTER", pid: self.pid, source: std::io::Error::from_raw_os_error(e) })
    }

    fn ioctl<T>(&self, op: &'static str, req: u64, arg: &mut T) -> std::result::Result<(), i32> {
        // SAFETY: `req` is one of the userfaultfd requests whose argument is
        // the repr(C) structure `T` passed here by exclusive reference; the
        // kernel reads and writes only that structure.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), req as libc::c_ulong, arg as *mut T) };
        if r < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
            tracing::trace!(pid = self.pid, op, errno, "userfaultfd");
            return Err(errno);
        }
        Ok(())
    }

    fn outcome(&self, op: &'static str, r: std::result::Result<(), i32>, done: i64, len: u64) -> Result<Fill> {
        match r {
            Ok(()) => Ok(Fill::Done),
            Err(libc::EEXIST) => Ok(Fill::Partial { bytes: done.max(0) as u64 }),
            Err(libc::EAGAIN) => Ok(Fill::Again { bytes: done.max(0) as u64 }),
            Err(libc::ENOENT) | Err(libc::EINVAL) if done <= 0 => Ok(Fill::Gone),
            Err(libc::ESRCH) => Err(KernelError::Died { pid: self.pid }),
            Err(e) => Err(KernelError::Sys {
                op,
                pid: self.pid,
                source: std::io::Error::other(format!("{} ({len} bytes)", std::io::Error::from_raw_os_error(e))),
            }),
        }
    }

    /// Fills the missing pages at `dst` with `data` (whole pages) and wakes
    /// the threads waiting for them.
    pub fn copy(&self, dst: u64, data: &[u8]) -> Result<Fill> {
        let mut arg = UffdioCopy { dst, src: data.as_ptr() as u64, len: data.len() as u64, mode: 0, copy: 0 };
        let r = self.ioctl("UFFDIO_COPY", UFFDIO_COPY, &mut arg);
        self.outcome("UFFDIO_COPY", r, arg.copy, arg.len)
    }

    /// Fills the missing pages of `[start, start + len)` with zeroes and wakes their waiters.
    pub fn zero(&self, start: u64, len: u64) -> Result<Fill> {
        let mut arg = UffdioZeropage { start, len, mode: 0, zeropage: 0 };
        let r = self.ioctl("UFFDIO_ZEROPAGE", UFFDIO_ZEROPAGE, &mut arg);
        self.outcome("UFFDIO_ZEROPAGE", r, arg.zeropage, len)
    }

    /// Wakes threads waiting on `[start, start + len)` (already filled).
    pub fn wake(&self, start: u64, len: u64) -> Result<()> {
        let mut arg = UffdioRange { start, len };
        match self.ioctl("UFFDIO_WAKE", UFFDIO_WAKE, &mut arg) {
            Ok(()) | Err(libc::ENOENT) | Err(libc::EINVAL) => Ok(()),
            Err(libc::ESRCH) => Err(KernelError::Died { pid: self.pid }),
            Err(e) => Err(KernelError::Sys { op: "UFFDIO_WAKE", pid: self.pid, source: std::io::Error::from_raw_os_error(e) }),
        }
    }

    /// Reads the events waiting (none when there are none: the descriptor
    /// is non-blocking).
    pub fn events(&self, out: &mut Vec<Event>) -> Result<()> {
        let mut buf = [0u8; 32 * 64];
        loop {
            // SAFETY: reads at most buf.len() bytes into our own buffer.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(()),
                    Some(libc::EINTR) => continue,
                    _ => Err(KernelError::from_io("read userfaultfd", self.pid, e)),
                };
            }
            let n = n as usize;
            for msg in buf[..n].chunks_exact(32) {
                out.push(decode(msg.try_into().expect("32 bytes")));
            }
            if n < buf.len() {
                return Ok(());
            }
        }
    }
}

/// Dirty tracking of another process's memory: a userfaultfd made in it (with
/// [`USER_MODE_ONLY`]) in asynchronous write-protect mode. Regions registered with
/// [`WpTracker::track`] are write-protected; a write to a page un-protects it and marks
/// it written, which `Pagemap::written` reports (and protects again). Dropping the
/// tracker (herdd's copy being the only one) unregisters everything.
#[derive(Debug)]
pub struct WpTracker {
    uffd: Uffd,
}

impl WpTracker {
    /// Sets up the descriptor herdd took from process `pid` (made there by an
    /// injected `userfaultfd(O_CLOEXEC | O_NONBLOCK | USER_MODE_ONLY)`).
    pub fn new(fd: OwnedFd, pid: i32) -> Result<WpTracker> {
        let uffd = Uffd::from_fd(fd, pid);
        uffd.handshake(FEATURE_WP_ASYNC)?;
        Ok(WpTracker { uffd })
    }

    /// Registers `[start, start + len)` (whole regions of anonymous memory) and
    /// write-protects it: from now on its writes are tracked. Err(errno) when the
    /// kernel will not (a region registered elsewhere, of a kind it cannot track).
    pub fn track(&self, start: u64, len: u64) -> std::result::Result<(), i32> {
        let mut reg = UffdioRegister { start, len, mode: REGISTER_MODE_WP, ioctls: 0 };
        self.uffd.ioctl("UFFDIO_REGISTER", UFFDIO_REGISTER, &mut reg)?;
        let mut wp = UffdioWriteprotect { range: UffdioRange { start, len }, mode: WRITEPROTECT_MODE_WP };
        self.uffd.ioctl("UFFDIO_WRITEPROTECT", UFFDIO_WRITEPROTECT, &mut wp)
    }

    /// Unregisters `[start, start + len)`: its pages lose their protection and the
    /// kernel's marks.
    pub fn untrack(&self, start: u64, len: u64) -> std::result::Result<(), i32> {
        let mut range = UffdioRange { start, len };
        self.uffd.ioctl("UFFDIO_UNREGISTER", UFFDIO_UNREGISTER, &mut range)
    }
}

impl From<Uffd> for OwnedFd {
    fn from(u: Uffd) -> OwnedFd {
        u.fd
    }
}

impl AsFd for Uffd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_header() {
        let ioc = |dir: u64, nr: u64, size: usize| dir << 30 | (size as u64) << 16 | UFFD_API << 8 | nr;
        assert_eq!(UFFDIO_API, ioc(3, 0x3F, std::mem::size_of::<UffdioApi>()));
        assert_eq!(UFFDIO_REGISTER, ioc(3, 0x00, std::mem::size_of::<UffdioRegister>()));
        assert_eq!(UFFDIO_WAKE, ioc(2, 0x02, std::mem::size_of::<UffdioRange>()));
        assert_eq!(UFFDIO_COPY, ioc(3, 0x03, std::mem::size_of::<UffdioCopy>()));
        assert_eq!(UFFDIO_ZEROPAGE, ioc(3, 0x04, std::mem::size_of::<UffdioZeropage>()));
    }

    #[test]
    fn messages_decode() {
        let mut m = [0u8; 32];
        m[0] = EVENT_PAGEFAULT;
        m[16..24].copy_from_slice(&0x7000_1234u64.to_ne_bytes());
        assert_eq!(decode(&m), Event::PageFault { addr: 0x7000_1234 });
        let mut m = [0u8; 32];
        m[0] = EVENT_REMAP;
        m[8..16].copy_from_slice(&0x1000u64.to_ne_bytes());
        m[16..24].copy_from_slice(&0x9000u64.to_ne_bytes());
        m[24..32].copy_from_slice(&0x2000u64.to_ne_bytes());
        assert_eq!(decode(&m), Event::Remap { from: 0x1000, to: 0x9000, len: 0x2000 });
        m[0] = EVENT_UNMAP;
        assert_eq!(decode(&m), Event::Unmap { start: 0x1000, end: 0x9000 });
        m[0] = 0x77;
        assert_eq!(decode(&m), Event::Other(0x77));
        let mut m = [0u8; 32];
        m[0] = EVENT_FORK;
        m[8..12].copy_from_slice(&17u32.to_ne_bytes());
        assert_eq!(decode(&m), Event::Fork { fd: 17 });
    }
}
