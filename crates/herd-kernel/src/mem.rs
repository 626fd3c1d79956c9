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

/// A file mapped whole into this process, read-only and shared: its bytes are the page
/// cache's own, read without a copy (an image restored in place).
///
/// The file must not shrink while it is mapped: a read beyond its new end raises
/// SIGBUS, which ends this process (and, through `PTRACE_O_EXITKILL`, what it was
/// restoring). A file written meanwhile shows the new bytes; an image's checksums
/// catch that as they would a damaged file.
pub struct MappedFile {
    addr: std::ptr::NonNull<libc::c_void>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone: sharing or sending it
// shares only reads of memory that lives until it is dropped.
unsafe impl Send for MappedFile {}
// SAFETY: as above: `&MappedFile` gives only `&[u8]` of a read-only mapping.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps `file` whole; an error for an empty file or one that cannot be mapped (a
    /// pipe, a socket, some special files).
    pub fn map(file: &File) -> Result<MappedFile> {
        use std::os::fd::AsRawFd;
        let pid = std::process::id() as i32;
        let len = file.metadata().map_err(|e| KernelError::from_io("fstat", pid, e))?.len();
        let len = usize::try_from(len).ok().filter(|&l| l > 0).ok_or_else(|| KernelError::Unexpected { pid, what: format!("a file of {len} bytes cannot be mapped") })?;
        // SAFETY: a new read-only shared mapping the kernel places (no fixed address); its
        // result is checked before use. Its soundness as `&[u8]` is the type's contract
        // above (the file not shrunk while mapped).
        let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        if addr == libc::MAP_FAILED {
            return Err(KernelError::last("mmap", pid));
        }
        let addr = std::ptr::NonNull::new(addr).ok_or_else(|| KernelError::Unexpected { pid, what: "mmap gave address 0".into() })?;
        Ok(MappedFile { addr, len })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `addr` is a live mapping of `len` readable bytes until `self` is dropped.
        unsafe { std::slice::from_raw_parts(self.addr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once; no slice of it outlives `self`.
        unsafe { libc::munmap(self.addr.as_ptr(), self.len) };
    }
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

// include/uapi/linux/fs.h: PAGEMAP_SCAN.
const PAGEMAP_SCAN: u64 = 0xC060_6610;
const PM_SCAN_WP_MATCHING: u64 = 1;
const PM_SCAN_CHECK_WPASYNC: u64 = 2;
/// In a region registered for asynchronous write-protection (`uffd::WpTracker`).
pub const PAGE_IS_WPALLOWED: u64 = 1;
/// Written since it was last write-protected (or not protected at all).
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
const PAGE_IS_FILE: u64 = 1 << 2;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// A guard region marker (MADV_GUARD_INSTALL; Linux 6.14). It reads as
/// swapped too, but holds nothing.
pub const PAGE_IS_GUARD: u64 = 1 << 8;

/// Whether PAGEMAP_SCAN knows PAGE_IS_GUARD (cleared on the first EINVAL).
static SCAN_KNOWS_GUARD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
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

    /// The runs of pages of `[start, end)` (address, length; ascending, merged)
    /// that have contents of their own: present or swapped out, and not the
    /// shared zero page (such a page reads as zeroes anyway). With
    /// `private_only`, pages still backed by a file (or shared memory) are left
    /// out too: what remains are a private file mapping's copies on write.
    ///
    /// Uses the PAGEMAP_SCAN ioctl (Linux 6.7): the kernel returns ranges, so the
    /// cost follows what is mapped, not the size of the address range.
    pub fn present_runs(&self, start: u64, end: u64, private_only: bool) -> Result<Vec<(u64, u64)>> {
        let inverted = PAGE_IS_PFNZERO | if private_only { PAGE_IS_FILE } else { 0 };
        loop {
            let guard = SCAN_KNOWS_GUARD.load(std::sync::atomic::Ordering::Relaxed);
            let required_clear = inverted | if guard { PAGE_IS_GUARD } else { 0 };
            match self.scan(start, end, required_clear, required_clear, PAGE_IS_PRESENT | PAGE_IS_SWAPPED) {
                Err(e) if guard && e.errno() == Some(libc::EINVAL) => SCAN_KNOWS_GUARD.store(false, std::sync::atomic::Ordering::Relaxed),
                other => return other,
            }
        }
    }

    /// Runs of guard pages (MADV_GUARD_INSTALL) in `[start, end)`; none on a
    /// kernel that has no guard regions (before 6.14).
    pub fn guard_runs(&self, start: u64, end: u64) -> Result<Vec<(u64, u64)>> {
        if !SCAN_KNOWS_GUARD.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        match self.scan(start, end, 0, 0, PAGE_IS_GUARD) {
            Err(e) if e.errno() == Some(libc::EINVAL) => {
                SCAN_KNOWS_GUARD.store(false, std::sync::atomic::Ordering::Relaxed);
                Ok(Vec::new())
            }
            other => other,
        }
    }

    /// The pages of `[start, end)` as runs (start, end, categories) of the
    /// categories in `of` (PAGE_IS_* above), each with at least one of them; pages
    /// with none are left out.
    pub fn categories(&self, start: u64, end: u64, of: u64) -> Result<Vec<(u64, u64, u64)>> {
        let mut out = Vec::new();
        self.scan_with(start, end, 0, [0, 0, of, of], |r| out.push((r.start, r.end, r.categories)))?;
        Ok(out)
    }

    /// Write-protects again the pages of `[start, end)` written since they last
    /// were (in regions a `uffd::WpTracker` tracks; others are left alone).
    pub fn protect_written(&self, start: u64, end: u64) -> Result<()> {
        self.scan_with(start, end, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, [0, PAGE_IS_WRITTEN, 0, PAGE_IS_WRITTEN], |_| {})
    }

    /// PAGEMAP_SCAN of `[start, end)`: pages whose `mask` categories equal
    /// `inverted` (those bits clear) and that have any of `anyof`, as runs.
    fn scan(&self, start: u64, end: u64, inverted: u64, mask: u64, anyof: u64) -> Result<Vec<(u64, u64)>> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        self.scan_with(start, end, 0, [inverted, mask, anyof, anyof], |r| match out.last_mut() {
            Some((a, l)) if *a + *l == r.start => *l += r.end - r.start,
            _ => out.push((r.start, r.end - r.start)),
        })?;
        Ok(out)
    }

    /// PAGEMAP_SCAN of `[start, end)` with `flags` and the masks (inverted, mask,
    /// anyof, return), each region found given to `each`.
    fn scan_with(&self, start: u64, end: u64, flags: u64, masks: [u64; 4], mut each: impl FnMut(&PageRegion)) -> Result<()> {
        let [inverted, mask, anyof, ret] = masks;
        let mut regions = vec![PageRegion::default(); 512];
        let mut at = start;
        while at < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                flags,
                start: at,
                end,
                walk_end: 0,
                vec: regions.as_mut_ptr() as u64,
                vec_len: regions.len() as u64,
                max_pages: 0,
                category_inverted: inverted,
                category_mask: mask,
                category_anyof_mask: anyof,
                return_mask: ret,
            };
            // SAFETY: PAGEMAP_SCAN reads `arg` (a repr(C) pm_scan_arg of the size it
            // states) and writes at most `vec_len` page_region structures into
            // `regions`, which we own and which outlives the call; it also writes
            // `arg.walk_end`.
            let n = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&self.file), PAGEMAP_SCAN as libc::c_ulong, &mut arg as *mut PmScanArg) };
            if n < 0 {
                return Err(KernelError::last("ioctl(PAGEMAP_SCAN)", self.pid));
            }
            regions[..n as usize].iter().for_each(&mut each);
            if arg.walk_end <= at {
                break;
            }
            at = arg.walk_end;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_runs_skip_untouched_and_zero_pages() {
        let len = 16 * PAGE as usize;
        // SAFETY: a fresh private anonymous mapping, used only through the raw
        // pointer below while mapped, and unmapped at the end.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        assert_ne!(base, libc::MAP_FAILED);
        let p = base as *mut u8;
        // SAFETY: every offset is inside the 16-page mapping above.
        unsafe {
            for page in [2usize, 3, 7] {
                p.add(page * PAGE as usize).write_volatile(1);
            }
            // A read fault maps the shared zero page: nothing of its own.
            let _ = p.add(10 * PAGE as usize).read_volatile();
        }
        let pm = Pagemap::open(std::process::id() as i32).unwrap();
        let b = base as u64;
        let runs = pm.present_runs(b, b + len as u64, false).unwrap();
        assert_eq!(runs, vec![(b + 2 * PAGE, 2 * PAGE), (b + 7 * PAGE, PAGE)]);
        // SAFETY: unmaps exactly the mapping made above; nothing uses it afterwards.
        unsafe { libc::munmap(base, len) };
    }
}
