//! Another process's memory: bulk reads and writes with process_vm_readv /
//! process_vm_writev, /proc/PID/mem for pages those cannot reach (they
//! honour page protections, /proc/PID/mem does not), and /proc/PID/pagemap.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::{KernelError, Result};

pub const PAGE: u64 = 4096;

// Documentation/admin-guide/mm/pagemap.rst
pub const PM_PRESENT: u64 = 1 << 63;
pub const PM_SWAP: u64 = 1 << 62;
/// Page is a file page or shared anonymous (not a private anonymous copy).
pub const PM_FILE: u64 = 1 << 61;

/// Scatter-read: fills `buf` from the remote ranges `(addr, len)`, in
/// order; their lengths must add up to `buf.len()`.
pub fn read_ranges(pid: i32, ranges: &[(u64, u64)], buf: &mut [u8]) -> Result<()> {
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    assert_eq!(total as usize, buf.len());
    let mut done = 0usize;
    let mut idx = 0usize;
    let mut skip = 0u64; // bytes of ranges[idx] already read
    while done < buf.len() {
        let mut remote: Vec<libc::iovec> = Vec::with_capacity(64);
        let mut j = idx;
        let mut s = skip;
        while j < ranges.len() && remote.len() < 1024 {
            let (a, l) = ranges[j];
            remote.push(libc::iovec { iov_base: (a + s) as *mut libc::c_void, iov_len: (l - s) as usize });
            s = 0;
            j += 1;
        }
        let local = libc::iovec { iov_base: buf[done..].as_mut_ptr().cast(), iov_len: buf.len() - done };
        // SAFETY: `local` covers the unread tail of `buf`, which we borrow
        // mutably; the remote iovecs are addresses in the other process and
        // are only interpreted by the kernel.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, remote.as_ptr(), remote.len() as u64, 0) };
        if n < 0 {
            return Err(KernelError::last("process_vm_readv", pid));
        }
        if n == 0 {
            return Err(KernelError::Unexpected { pid, what: format!("memory at {:#x} is not readable", ranges[idx].0 + skip) });
        }
        let mut n = n as u64;
        done += n as usize;
        while n > 0 {
            let left = ranges[idx].1 - skip;
            if n >= left {
                n -= left;
                idx += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// Writes `data` at `addr` in process `pid` with process_vm_writev.
pub fn write(pid: i32, addr: u64, data: &[u8]) -> Result<()> {
    let mut off = 0usize;
    while off < data.len() {
        let local = libc::iovec { iov_base: data[off..].as_ptr() as *mut libc::c_void, iov_len: data.len() - off };
        let remote = libc::iovec { iov_base: (addr + off as u64) as *mut libc::c_void, iov_len: data.len() - off };
        // SAFETY: the kernel only reads from `local` (a live slice) and the
        // remote address belongs to the other process.
        let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            return Err(if n < 0 {
                KernelError::last("process_vm_writev", pid)
            } else {
                KernelError::Unexpected { pid, what: format!("memory at {:#x} is not writable", addr + off as u64) }
            });
        }
        off += n as usize;
    }
    Ok(())
}

/// /proc/PID/mem: reaches pages whatever their protection.
pub struct ProcMem {
    pid: i32,
    file: File,
}

impl ProcMem {
    pub fn open(pid: i32, write: bool) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|e| KernelError::from_io("open /proc/PID/mem", pid, e))?;
        Ok(ProcMem { pid, file })
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, addr).map_err(|e| KernelError::from_io("read /proc/PID/mem", self.pid, e))
    }

    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<()> {
        self.file.write_all_at(buf, addr).map_err(|e| KernelError::from_io("write /proc/PID/mem", self.pid, e))
    }
}

/// /proc/PID/pagemap: one u64 per virtual page.
pub struct Pagemap {
    pid: i32,
    file: File,
}

impl Pagemap {
    pub fn open(pid: i32) -> Result<Self> {
        let file = File::open(format!("/proc/{pid}/pagemap"))
            .map_err(|e| KernelError::from_io("open /proc/PID/pagemap", pid, e))?;
        Ok(Pagemap { pid, file })
    }

    /// Entries for the pages of `[start, end)`.
    pub fn entries(&self, start: u64, end: u64) -> Result<Vec<u64>> {
        let n = ((end - start) / PAGE) as usize;
        let mut raw = vec![0u8; n * 8];
        self.file
            .read_exact_at(&mut raw, start / PAGE * 8)
            .map_err(|e| KernelError::from_io("read /proc/PID/pagemap", self.pid, e))?;
        Ok(raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
    }
}
