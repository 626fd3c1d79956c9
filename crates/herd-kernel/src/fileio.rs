//! File calls herdd makes itself on another process's behalf, on a duplicate of its
//! descriptor (see herd-migrate's `native`): the buffers they read and write are in a
//! [`CallBuf`], herdd's memory laid out as the process's buffers would be.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::mem::PAGE;

/// cachestat(2) (Linux 6.5), not yet in the libc crate.
const SYS_CACHESTAT: libc::c_long = 451;

/// RLIMIT_FSIZE of process `pid` (0: the caller) is unlimited.
pub fn fsize_unlimited(pid: i32) -> bool {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit writes one rlimit into `lim` and reads nothing (no new limit).
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut lim) };
    r == 0 && lim.rlim_cur == libc::RLIM_INFINITY
}

/// Every page of `len` bytes of regular file `fd` from `at` (up to the file's end) is
/// in the page cache (cachestat): reading them cannot wait on a disk.
pub fn cached(fd: BorrowedFd<'_>, size: u64, at: u64, len: u64) -> bool {
    if at >= size || len == 0 {
        return true; // end of file: nothing to wait for
    }
    let end = at.saturating_add(len).min(size);
    let pages = end.div_ceil(PAGE) - at / PAGE;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    let range = Range { off: at, len: end - at };
    let mut stat = Stat::default();
    // SAFETY: cachestat reads one range and writes one cachestat struct, both live
    // across the call.
    let r = unsafe { libc::syscall(SYS_CACHESTAT, fd.as_raw_fd(), &range as *const Range, &mut stat as *mut Stat, 0) };
    r == 0 && stat.nr_cache >= pages
}

/// SO_RCVLOWAT of socket `fd` (how many bytes a blocking read waits for).
pub fn socket_rcvlowat(fd: BorrowedFd<'_>) -> Option<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`, and the length into `len`.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVLOWAT, (&mut v as *mut libc::c_int).cast(), &mut len) };
    (r == 0).then_some(v)
}

/// Sets SO_RCVLOWAT of socket `fd`.
pub fn set_socket_rcvlowat(fd: BorrowedFd<'_>, bytes: i32) -> std::io::Result<()> {
    // SAFETY: setsockopt reads one c_int.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVLOWAT, (&bytes as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// How [`CallBuf::make`] makes a call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum How {
    /// The call itself.
    Plain,
    /// read/readv/write as preadv2/pwritev2 at the file's offset with RWF_NOWAIT.
    NoWait,
}

/// herdd's memory standing in for a process's buffers: a call's buffers are laid
/// out in it (their addresses are [`CallBuf::base`] + offsets) and the call is made
/// on it.
pub struct CallBuf {
    /// The memory (reached only through `base`).
    _words: Vec<u64>,
    base: *mut u8,
    len: usize,
}

impl CallBuf {
    /// `len` zeroed bytes, 8-aligned.
    pub fn new(len: u64) -> CallBuf {
        let mut words = vec![0u64; (len as usize).div_ceil(8).max(1)];
        let base = words.as_mut_ptr().cast::<u8>();
        CallBuf { len: words.len() * 8, _words: words, base }
    }

    pub fn base(&self) -> u64 {
        self.base as u64
    }

    pub fn len(&self) -> u64 {
        self.len as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `[addr, addr + len)` lies in the buffer.
    fn holds(&self, addr: u64, len: u64) -> bool {
        addr >= self.base() && addr.checked_add(len).is_some_and(|end| end <= self.base() + self.len())
    }

    /// Copies `buf.len()` bytes from `addr` (in the buffer) out; false if they are not all in it.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if !self.holds(addr, buf.len() as u64) {
            return false;
        }
        // SAFETY: the range lies in the buffer (checked), which `buf` cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    }

    /// Copies `data` in at `addr`; false if it does not fit there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        if !self.holds(addr, data.len() as u64) {
            return false;
        }
        // SAFETY: the range lies in the buffer (checked), which `data` cannot overlap;
        // nothing holds a reference into the buffer (it is reached only by address).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
        true
    }

    /// Makes read, write, pread64, pwrite64, readv, writev or lseek `nr` on `fd` with
    /// `args` (`args[0]` is ignored: `fd` is used) as `how` says; the raw result (a value
    /// or a negative errno). None for another call, or if a buffer it names is not in
    /// this one (a mistake of the caller's layout, which would otherwise have the kernel
    /// write over herdd's memory).
    pub fn make(&self, fd: BorrowedFd<'_>, nr: i64, args: [u64; 6], how: How) -> Option<i64> {
        let fd = fd.as_raw_fd();
        let iovecs = match nr {
            libc::SYS_read | libc::SYS_write | libc::SYS_pread64 | libc::SYS_pwrite64 => {
                if !self.holds(args[1], args[2]) {
                    return None;
                }
                vec![libc::iovec { iov_base: args[1] as *mut libc::c_void, iov_len: args[2] as usize }]
            }
            libc::SYS_readv | libc::SYS_writev => {
                let n = args[2] as usize;
                if n > libc::UIO_MAXIOV as usize || !self.holds(args[1], (n * std::mem::size_of::<libc::iovec>()) as u64) {
                    return None;
                }
                // SAFETY: `n` iovecs lie in the buffer (checked just above), which is
                // 8-aligned; iovec is plain data (any bytes are a valid value).
                let list = unsafe { std::slice::from_raw_parts(args[1] as *const libc::iovec, n) }.to_vec();
                if !list.iter().all(|v| self.holds(v.iov_base as u64, v.iov_len as u64)) {
                    return None;
                }
                list
            }
            libc::SYS_lseek => Vec::new(),
            _ => return None,
        };
        // SAFETY: every buffer the call reads or writes lies in this buffer (checked
        // above), which lives across the call; the other arguments are integers.
        let r = unsafe {
            match (nr, how) {
                (libc::SYS_read | libc::SYS_readv, How::NoWait) => libc::preadv2(fd, iovecs.as_ptr(), iovecs.len() as i32, -1, libc::RWF_NOWAIT) as i64,
                (libc::SYS_write, How::NoWait) => libc::pwritev2(fd, iovecs.as_ptr(), iovecs.len() as i32, -1, libc::RWF_NOWAIT) as i64,
                (_, How::NoWait) => return None,
                (libc::SYS_readv | libc::SYS_writev, How::Plain) => libc::syscall(nr, fd, iovecs.as_ptr(), iovecs.len()),
                (_, How::Plain) => libc::syscall(nr, fd, args[1], args[2], args[3]),
            }
        };
        Some(if r < 0 { -(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO) as i64) } else { r })
    }
}
