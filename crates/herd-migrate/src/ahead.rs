//! Read-ahead and write-behind of forwarded files: a migrated process reading a file at
//! home (one not in a shared directory) in sequence gets it in large windows, one ahead
//! of where it reads, and its writes are gathered into large ones, instead of one round
//! trip home per call.
//!
//! Only descriptors whose offset is their own are read ahead: those home lists at
//! arrival (`Files::own`: a regular file whose open file description no other process
//! or descriptor holds) and those the process opens while away. For each the guest
//! follows the process's offset (`pos`) and home's (`home_pos`, which differ once
//! windows serve reads: a window is a `pread` at home, which moves nothing). From the
//! second full read in a row it asks home for [`WINDOW`] bytes at `pos` and answers
//! reads from them, asking for the next window while the process still reads the
//! current one. A window shorter than asked is the end of the file: the process's read
//! there is forwarded again (so it sees what was written since, as `tail -f` wants),
//! and streaming starts over later.
//!
//! **Writes** to such a descriptor (not opened O_APPEND or O_DIRECT) are answered at
//! once and gathered here, contiguous, up to [`WINDOW`]; then they go home as one
//! [`ToHome::Write`](crate::proto::ToHome::Write), which home's herdd applies itself at
//! once (`pwrite` on its copy of the deputy's descriptor), in order with everything the
//! stream carries. Gathered writes go home before any call the process makes at home
//! (so what it then tells another process, or a stat of the path, sees them), before a
//! window is read, before a capture and when the process ends. A write that fails at home (a full file system) comes back as
//! [`ToRemote::WriteFailed`](crate::proto::ToRemote::WriteFailed) and is the answer to
//! the process's next write, fsync or close of that descriptor, as on an NFS client; if
//! the process ends first, it is lost (as for an NFS client that does not close).
//!
//! Home's offset is made the process's again ([`ToHome::Offsets`](crate::proto::ToHome::Offsets))
//! before any other forwarded call names the descriptor, before a capture and when
//! the process ends; lseek, dup, close and the like drop what was read ahead. What is
//! not guaranteed: bytes written to the file after a window was read (by another
//! process at home, or by this one through another descriptor) are not seen until the
//! next window; reads from several threads of the process on one descriptor are served
//! in the order they reach the guest.

use std::collections::HashMap;

/// How much one window asks for.
pub const WINDOW: u64 = 2 << 20;
/// The buffer address a window's `pread` names: no memory of the process (home's answer
/// comes back in the reply, never written into the process).
pub const WINDOW_BUF: u64 = 0x1000;

/// A read of the process that waits for bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Its notification.
    pub id: u64,
    /// The thread (id here).
    pub tid: i32,
    pub addr: u64,
    pub len: u64,
}

/// A window to ask home for: `pread(fd, len, at)`; its answer goes to [`Ahead::filled`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    pub fd: i32,
    pub at: u64,
    /// [`WINDOW`], or what a larger waiting read still lacks.
    pub len: u64,
    /// The thread (id here) that reads: the window is read by its deputy at home.
    pub tid: i32,
}

/// What to do with a forwarded read.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Forward it as usual (after [`Ahead::touched`]).
    Usual,
    /// Answer it with these bytes; then [`Ahead::consume`] them if the answer reached it.
    Serve(Vec<u8>),
    /// It waits for a window.
    Wait,
}

/// What a window's answer does for the read that waited for it.
#[derive(Debug, PartialEq, Eq)]
pub enum Filled {
    /// Nothing waits.
    Nothing,
    /// Serve it (a read of descriptor `.0`) these bytes (then [`Ahead::consume`]).
    Serve(i32, Waiting, Vec<u8>),
    /// Forward it (a read of descriptor `.0`) as usual (the window failed, or the end
    /// of the file is there).
    Forward(i32, Waiting),
}

/// Gathered writes for home: `pwrite(fd, data, at)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flush {
    pub fd: i32,
    pub at: u64,
    pub data: Vec<u8>,
}

/// What home must do before a forwarded call, a capture or the end: gathered writes,
/// then offsets.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settle {
    pub writes: Vec<Flush>,
    pub offsets: Vec<(i32, u64)>,
}

impl Settle {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.offsets.is_empty()
    }
}

/// What to do with a forwarded write.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    /// Forward it as usual (after [`Ahead::touched`]).
    Usual,
    /// Read its bytes from the process and hand them to [`Ahead::gather`]; answer it with
    /// their count.
    Gather,
    /// Answer it with this error (a positive errno): a gathered write failed at home.
    Fail(i32),
}

#[derive(Debug, Default)]
struct File {
    /// The process's offset.
    pos: u64,
    /// Home's descriptor's offset.
    home_pos: u64,
    /// Full forwarded reads in a row.
    full_reads: u32,
    streaming: bool,
    /// Bytes of the file from `at`.
    at: u64,
    data: Vec<u8>,
    /// The last window ended before [`WINDOW`]: the end of the file is at `at + data.len()`.
    eof: bool,
    /// A window on its way.
    asking: bool,
    waiting: Option<Waiting>,
    /// Windows of an older generation are dropped when they arrive.
    generation: u64,
    /// `pread` does not work on it (a pipe, a terminal): never read ahead.
    never: bool,
    /// The thread that read it last (id here).
    reader: i32,
    /// Writes gathered: bytes at `wat`.
    wat: u64,
    wbuf: Vec<u8>,
    /// Opened O_APPEND or O_DIRECT (or not known): writes are never gathered.
    no_gather: bool,
    /// A gathered write failed at home: the error (a positive errno) for the next
    /// write, fsync or close.
    error: Option<i32>,
}

impl File {
    fn flush(&mut self, fd: i32) -> Option<Flush> {
        if self.wbuf.is_empty() {
            return None;
        }
        let data = std::mem::take(&mut self.wbuf);
        Some(Flush { fd, at: self.wat, data })
    }

    /// Gathered writes out and the offset home's descriptor must take (if it differs).
    fn settle(&mut self, fd: i32, into: &mut Settle) {
        into.writes.extend(self.flush(fd));
        if self.pos != self.home_pos {
            into.offsets.push((fd, self.pos));
            self.home_pos = self.pos;
        }
    }

    fn end(&self) -> u64 {
        self.at + self.data.len() as u64
    }

    fn drop_window(&mut self) {
        self.streaming = false;
        self.full_reads = 0;
        self.data = Vec::new();
        self.at = self.pos;
        self.eof = false;
        self.asking = false;
        self.generation += 1;
    }

    /// The bytes for a read of `len` at `pos`, if there are enough (or the end of the
    /// file is in the window).
    fn peek(&self, len: u64) -> Option<Vec<u8>> {
        if self.pos < self.at || self.pos > self.end() {
            return None;
        }
        let avail = self.end() - self.pos;
        if avail >= len || (avail > 0 && self.eof) {
            let from = (self.pos - self.at) as usize;
            return Some(self.data[from..from + avail.min(len) as usize].to_vec());
        }
        None
    }

    /// The next window to ask for, if one is wanted now: none on its way, the file not
    /// ended, less than a window (or than a larger waiting read wants) ahead of the process.
    fn want(&mut self, fd: i32) -> Option<Ask> {
        let ahead = self.end() - self.pos.min(self.end());
        let need = self.waiting.map_or(0, |w| w.len);
        if !self.streaming || self.asking || self.eof || ahead >= WINDOW.max(need) {
            return None;
        }
        self.asking = true;
        Some(Ask { fd, at: self.end(), len: WINDOW.max(need - ahead.min(need)), tid: self.reader })
    }
}

/// Read-ahead state of one guest.
#[derive(Debug, Default)]
pub struct Ahead {
    files: HashMap<i32, File>,
    /// Windows on their way: by the seq of their call, the descriptor, generation,
    /// offset, length and the thread whose deputy reads it.
    asked: HashMap<u64, (i32, u64, u64, u64, i32)>,
    /// Errors of gathered writes of descriptors no longer followed, for the answer of
    /// the call that ended the following (a close).
    orphan_errors: HashMap<i32, i32>,
}

impl Ahead {
    /// Descriptor `fd` has an offset of its own, `pos`; `flags` are its open(2) flags
    /// (None: not known, then writes are not gathered).
    pub fn own(&mut self, fd: i32, pos: u64, flags: Option<i32>) {
        let no_gather = flags.is_none_or(|f| f & (libc::O_APPEND | libc::O_DIRECT) != 0);
        self.files.insert(fd, File { pos, home_pos: pos, at: pos, no_gather, ..File::default() });
    }

    /// A write(fd, …, len) of the process.
    pub fn write(&mut self, fd: i32, len: u64) -> Write {
        let Some(f) = self.files.get_mut(&fd) else { return Write::Usual };
        if let Some(e) = f.error.take() {
            return Write::Fail(e);
        }
        if f.no_gather || len == 0 {
            return Write::Usual;
        }
        Write::Gather
    }

    /// The bytes of a gathered write, at the process's offset (answered with their
    /// count). What must go home first or now (not contiguous with what was gathered,
    /// or a whole window).
    pub fn gather(&mut self, fd: i32, bytes: &[u8]) -> Vec<Flush> {
        let Some(f) = self.files.get_mut(&fd) else { return Vec::new() };
        let mut out = Vec::new();
        if !f.wbuf.is_empty() && f.wat + f.wbuf.len() as u64 != f.pos {
            out.extend(f.flush(fd));
        }
        if f.wbuf.is_empty() {
            f.wat = f.pos;
        }
        f.wbuf.extend_from_slice(bytes);
        f.pos += bytes.len() as u64;
        // What was read ahead is older than this.
        if f.streaming {
            f.drop_window();
        }
        if f.wbuf.len() as u64 >= WINDOW {
            out.extend(f.flush(fd));
        }
        out
    }

    /// Every gathered write, for home now: before any call the process makes at home,
    /// what it wrote is there (another process it talks to sees it, a path it stats has
    /// its size).
    pub fn flush_all(&mut self) -> Vec<Flush> {
        let mut fds: Vec<i32> = self.files.iter().filter(|(_, f)| !f.wbuf.is_empty()).map(|(fd, _)| *fd).collect();
        fds.sort();
        fds.into_iter().filter_map(|fd| self.files.get_mut(&fd).and_then(|f| f.flush(fd))).collect()
    }

    /// A gathered write of `fd` failed at home with `errno`.
    pub fn write_failed(&mut self, fd: i32, errno: i32) {
        if let Some(f) = self.files.get_mut(&fd) {
            f.error.get_or_insert(errno);
        }
    }

    /// The error of a gathered write of `fd` not reported yet (taken).
    pub fn take_error(&mut self, fd: i32) -> Option<i32> {
        self.files.get_mut(&fd)?.error.take()
    }

    /// Whether `fd` is followed.
    pub fn follows(&self, fd: i32) -> bool {
        self.files.contains_key(&fd)
    }

    /// A read(fd, addr, len) of the process.
    pub fn read(&mut self, fd: i32, w: Waiting) -> (Read, Option<Ask>) {
        let Some(f) = self.files.get_mut(&fd) else { return (Read::Usual, None) };
        if f.never || w.len == 0 || !f.wbuf.is_empty() {
            return (Read::Usual, None);
        }
        f.reader = w.tid;
        if !f.streaming {
            if f.full_reads < 1 {
                return (Read::Usual, None);
            }
            f.streaming = true;
            f.at = f.pos;
            f.data.clear();
            f.eof = false;
        }
        if let Some(bytes) = f.peek(w.len) {
            return (Read::Serve(bytes), None);
        }
        if f.eof && f.pos >= f.end() {
            // The end of the file as the last window saw it: ask home again.
            f.drop_window();
            return (Read::Usual, None);
        }
        f.waiting = Some(w);
        (Read::Wait, f.want(fd))
    }

    /// The process got `n` bytes served at its offset: they are consumed. Returns the
    /// next window to ask for, if one is wanted.
    pub fn consume(&mut self, fd: i32, n: u64) -> Option<Ask> {
        let f = self.files.get_mut(&fd)?;
        f.pos += n;
        f.waiting = None;
        // Keep at most the window being read and the next.
        let done = f.pos.saturating_sub(f.at).min(f.data.len() as u64);
        if done >= WINDOW {
            f.data.drain(..done as usize);
            f.at += done;
        }
        f.want(fd)
    }

    /// A window was asked for by the call `seq`.
    pub fn asked(&mut self, seq: u64, ask: Ask) {
        let generation = self.files.get(&ask.fd).map_or(0, |f| f.generation);
        self.asked.insert(seq, (ask.fd, generation, ask.at, ask.len, ask.tid));
    }

    /// Home abandoned the call thread `tid` (id here) was running in its deputy (a signal
    /// interrupted it): if that was a window, it will not come. Every window of that
    /// thread is forgotten (one still on its way is dropped when it arrives) and asked
    /// again where a read waits.
    pub fn abandoned(&mut self, tid: i32) -> Vec<Ask> {
        let lost: Vec<u64> = self.asked.iter().filter(|(_, a)| a.4 == tid).map(|(s, _)| *s).collect();
        let mut again = Vec::new();
        for seq in lost {
            let (fd, generation, ..) = self.asked.remove(&seq).expect("listed");
            if let Some(f) = self.files.get_mut(&fd) {
                if f.generation == generation {
                    f.asking = false;
                    if f.waiting.is_some() {
                        again.extend(f.want(fd));
                    }
                }
            }
        }
        again
    }

    /// Whether the reply `seq` is a window's.
    pub fn is_window(&self, seq: u64) -> bool {
        self.asked.contains_key(&seq)
    }

    /// The answer to window `seq`: `ret` and the bytes.
    pub fn filled(&mut self, seq: u64, ret: i64, bytes: Vec<u8>) -> (Filled, Option<Ask>) {
        let Some((fd, generation, at, len, _)) = self.asked.remove(&seq) else { return (Filled::Nothing, None) };
        let Some(f) = self.files.get_mut(&fd) else { return (Filled::Nothing, None) };
        if f.generation != generation || !f.streaming || at != f.end() {
            return (Filled::Nothing, None);
        }
        f.asking = false;
        if ret < 0 {
            // Not a file pread can read (ESPIPE, EBADF...): never again.
            f.never = true;
            f.drop_window();
            return (f.waiting.take().map_or(Filled::Nothing, |w| Filled::Forward(fd, w)), None);
        }
        let n = (ret as usize).min(bytes.len());
        f.data.extend_from_slice(&bytes[..n]);
        f.eof = (n as u64) < len;
        let Some(w) = f.waiting else { return (Filled::Nothing, f.want(fd)) };
        if let Some(b) = f.peek(w.len) {
            return (Filled::Serve(fd, w, b), None);
        }
        if f.eof && f.pos >= f.end() {
            f.waiting = None;
            f.drop_window();
            return (Filled::Forward(fd, w), None);
        }
        (Filled::Nothing, f.want(fd))
    }

    /// A forwarded call `nr` is about to go home: the offsets home's descriptors must
    /// have first (those it names that differ). What it does to a descriptor stops or
    /// ends the following of it.
    pub fn touched(&mut self, nr: i64, args: &[u64; 6]) -> Settle {
        let mut settle = Settle::default();
        let named: Vec<i32> = crate::direct::fd_args(nr).iter().filter_map(|&i| i32::try_from(args[i] as i64).ok()).collect();
        let range = (nr == libc::SYS_close_range).then(|| (args[0] as u32, args[1] as u32));
        let fds: Vec<i32> = match range {
            Some((lo, hi)) => self.files.keys().copied().filter(|&fd| (lo..=hi).contains(&(fd as u32))).collect(),
            None => named.into_iter().filter(|fd| self.files.contains_key(fd)).collect(),
        };
        for fd in fds {
            let f = self.files.get_mut(&fd).expect("followed");
            f.settle(fd, &mut settle);
            if nr == libc::SYS_read {
                continue; // a read forwarded as usual: `after` counts it
            }
            f.drop_window();
            let keeps_offset = matches!(
                nr,
                libc::SYS_fstat | libc::SYS_newfstatat | libc::SYS_statx | libc::SYS_fstatfs | libc::SYS_fsync | libc::SYS_fdatasync
                    | libc::SYS_fadvise64 | libc::SYS_ioctl | libc::SYS_pread64 | libc::SYS_preadv | libc::SYS_readv | libc::SYS_lseek
                    | libc::SYS_flock | libc::SYS_write
            ) || (nr == libc::SYS_fcntl && ![libc::F_DUPFD, libc::F_DUPFD_CLOEXEC].contains(&(args[1] as i32)));
            if !keeps_offset {
                // Closed, duplicated (its offset is shared now), replaced, written by a
                // vector or another file (where it ends is not followed here): no longer
                // followed. An error of gathered writes not reported yet stays for the
                // answer of a close.
                let error = f.error;
                self.files.remove(&fd);
                if let Some(e) = error {
                    self.orphan_errors.insert(fd, e);
                }
            }
        }
        settle
    }

    /// Home answered forwarded call `nr` with `ret`: what it did to the offsets.
    pub fn after(&mut self, nr: i64, args: &[u64; 6], ret: i64) {
        let fd = args[0] as i64 as i32;
        match nr {
            // A write forwarded as usual (not gathered: appending, or unknown flags).
            libc::SYS_write => {
                if let Some(f) = self.files.get_mut(&fd) {
                    if ret >= 0 && !f.no_gather {
                        f.pos += ret as u64;
                        f.home_pos = f.pos;
                        f.drop_window();
                    } else {
                        self.files.remove(&fd);
                    }
                }
            }
            libc::SYS_read | libc::SYS_readv => {
                if let Some(f) = self.files.get_mut(&fd) {
                    let full = nr == libc::SYS_read && ret > 0 && ret as u64 == args[2];
                    let reads = if full { f.full_reads + 1 } else { 0 };
                    if ret >= 0 {
                        f.pos += ret as u64;
                        f.home_pos = f.pos;
                    }
                    // Whatever was read ahead is not where the process reads now.
                    f.drop_window();
                    f.full_reads = reads;
                }
            }
            libc::SYS_lseek => {
                if let Some(f) = self.files.get_mut(&fd) {
                    if ret >= 0 {
                        f.pos = ret as u64;
                        f.home_pos = f.pos;
                        f.drop_window();
                    } else {
                        self.files.remove(&fd);
                    }
                }
            }
            _ => {}
        }
    }

    /// Before a capture or the end: every offset home's descriptors must take, and no
    /// window is kept (the process continues elsewhere, or not at all).
    pub fn settle_all(&mut self) -> Settle {
        self.asked.clear();
        let mut out = Settle::default();
        let mut fds: Vec<i32> = self.files.keys().copied().collect();
        fds.sort();
        for fd in fds {
            let f = self.files.get_mut(&fd).expect("listed");
            f.settle(fd, &mut out);
            f.waiting = None;
            f.drop_window();
        }
        out
    }

    /// Whether no read waits for a window and none is on its way (a fork may be made
    /// away then: see [`Ahead::forget_all`]).
    pub fn idle(&self) -> bool {
        self.asked.is_empty() && self.files.values().all(|f| f.waiting.is_none() && !f.asking)
    }

    /// Before a fork: the descriptors are shared with the child from now on, so none
    /// has an offset of its own any more. What home must do first (as [`Ahead::settle_all`]);
    /// nothing is followed afterwards, and errors not reported yet wait for the call that
    /// would have had them.
    pub fn forget_all(&mut self) -> Settle {
        let out = self.settle_all();
        for (fd, f) in self.files.drain() {
            if let Some(e) = f.error {
                self.orphan_errors.insert(fd, e);
            }
        }
        out
    }

    /// What home must do before a read of `fd` is forwarded after all.
    pub fn settle(&mut self, fd: i32) -> Settle {
        let mut out = Settle::default();
        if let Some(f) = self.files.get_mut(&fd) {
            f.waiting = None;
            f.settle(fd, &mut out);
        }
        out
    }

    /// The error of gathered writes of a descriptor no longer followed (closed, say),
    /// not reported yet (taken).
    pub fn take_orphan_error(&mut self, fd: i32) -> Option<i32> {
        self.orphan_errors.remove(&fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(len: u64) -> Waiting {
        Waiting { id: 1, tid: 1, addr: 0x5000, len }
    }

    /// `fd` followed from 0, one full read of 64 forwarded, the next waiting for the
    /// window it asks for.
    fn waiting_for_a_window(fd: i32) -> (Ahead, Ask) {
        let mut a = Ahead::default();
        a.own(fd, 0, Some(0));
        a.after(libc::SYS_read, &[fd as u64, 0x5000, 64, 0, 0, 0], 64);
        let (r, ask) = a.read(fd, w(64));
        assert_eq!(r, Read::Wait);
        (a, ask.expect("a window asked for"))
    }

    fn window(at: u64, n: usize) -> Vec<u8> {
        (0..n).map(|i| ((at as usize + i) % 251) as u8).collect()
    }

    /// Two full reads forwarded, then windows: every read served in order, one window
    /// ahead, the end of the file forwarded again; offsets home takes before other calls.
    #[test]
    fn sequential_reads_stream_in_windows() {
        let mut a = Ahead::default();
        a.own(3, 0, Some(0));
        let read = libc::SYS_read;
        assert_eq!(a.read(3, w(100)), (Read::Usual, None));
        assert!(a.touched(read, &[3, 0x5000, 100, 0, 0, 0]).is_empty());
        a.after(read, &[3, 0x5000, 100, 0, 0, 0], 100);
        // The second full read in a row starts streaming at offset 100.
        let (r, ask) = a.read(3, w(100));
        assert_eq!(r, Read::Wait);
        assert_eq!(ask, Some(Ask { fd: 3, at: 100, len: WINDOW, tid: 1 }));
        a.asked(7, ask.unwrap());
        assert!(a.is_window(7));
        let (f, next) = a.filled(7, WINDOW as i64, window(100, WINDOW as usize));
        assert_eq!(f, Filled::Serve(3, w(100), window(100, 100)));
        assert_eq!(next, None);
        // Consumed: the next window is asked for (less than a window ahead now).
        let next = a.consume(3, 100);
        assert_eq!(next, Some(Ask { fd: 3, at: 100 + WINDOW, len: WINDOW, tid: 1 }));
        a.asked(8, next.unwrap());
        let (r, ask) = a.read(3, w(1000));
        assert_eq!(r, Read::Serve(window(200, 1000)));
        assert_eq!(ask, None, "one window on its way already");
        assert_eq!(a.consume(3, 1000), None);
        // The next window is short: the end of the file.
        let (f, _) = a.filled(8, 500, window(100 + WINDOW, 500));
        assert_eq!(f, Filled::Nothing);
        // Reads up to the end are served, the one at the end goes home.
        let left = WINDOW + 500 - 1100;
        let (r, _) = a.read(3, w(left + 10));
        assert_eq!(r, Read::Serve(window(1200, left as usize)));
        a.consume(3, left);
        assert_eq!(a.read(3, w(10)), (Read::Usual, None));
        // Home's offset is 200 (two forwarded reads); the process's is at the end.
        assert_eq!(a.settle(3).offsets, vec![(3, 100 + WINDOW + 500)]);
        assert!(a.settle(3).is_empty());
    }

    #[test]
    fn other_calls_settle_and_stop_or_end_following() {
        let mut a = Ahead::default();
        a.own(3, 0, Some(0));
        a.own(4, 10, Some(0));
        let read = [3u64, 0x5000, 100, 0, 0, 0];
        a.after(libc::SYS_read, &read, 100);
        let (_, ask) = a.read(3, w(100));
        a.asked(1, ask.unwrap());
        let _ = a.filled(1, WINDOW as i64, window(100, WINDOW as usize));
        a.consume(3, 100);
        // fstat: home takes the offset first; still followed, the window dropped.
        assert_eq!(a.touched(libc::SYS_fstat, &[3, 0, 0, 0, 0, 0]).offsets, vec![(3, 200)]);
        assert!(a.follows(3));
        assert_eq!(a.read(3, w(100)), (Read::Usual, None), "streaming starts over");
        // lseek: followed from its answer on.
        assert!(a.touched(libc::SYS_lseek, &[3, 0, 0, 0, 0, 0]).is_empty());
        a.after(libc::SYS_lseek, &[3, 0, 0, 0, 0, 0], 4096);
        assert!(a.settle(3).is_empty());
        // dup: the offset is shared from now on: no longer followed.
        a.touched(libc::SYS_dup, &[3, 0, 0, 0, 0, 0]);
        assert!(!a.follows(3));
        // A window of an older generation is dropped when it arrives.
        a.after(libc::SYS_read, &[4, 0x5000, 50, 0, 0, 0], 50);
        let (_, ask) = a.read(4, w(50));
        a.asked(2, ask.unwrap());
        a.touched(libc::SYS_fsync, &[4, 0, 0, 0, 0, 0]);
        assert_eq!(a.filled(2, WINDOW as i64, window(60, WINDOW as usize)), (Filled::Nothing, None));
        // close_range covering it: no longer followed.
        a.touched(libc::SYS_close_range, &[3, 10, 0, 0, 0, 0]);
        assert!(!a.follows(4));
    }

    /// A read larger than a window (sort reads 2.6 MB at once) gets a window as large as
    /// it needs, also when one is already on its way.
    #[test]
    fn a_read_larger_than_a_window_is_served_whole() {
        let mut a = Ahead::default();
        a.own(3, 0, Some(0));
        let big = WINDOW + WINDOW / 4;
        a.after(libc::SYS_read, &[3, 0x5000, big, 0, 0, 0], big as i64);
        let (r, ask) = a.read(3, w(big));
        assert_eq!(r, Read::Wait);
        assert_eq!(ask, Some(Ask { fd: 3, at: big, len: big, tid: 1 }));
        a.asked(1, ask.unwrap());
        let (f, _) = a.filled(1, big as i64, window(big, big as usize));
        assert_eq!(f, Filled::Serve(3, w(big), window(big, big as usize)));
        // The next one: a window is asked for after the consume, then the read wants more.
        let next = a.consume(3, big).unwrap();
        assert_eq!(next.len, WINDOW);
        a.asked(2, next);
        assert_eq!(a.read(3, w(big)), (Read::Wait, None), "one on its way");
        let (f, again) = a.filled(2, WINDOW as i64, window(2 * big, WINDOW as usize));
        assert_eq!(f, Filled::Nothing);
        assert_eq!(again, Some(Ask { fd: 3, at: 2 * big + WINDOW, len: WINDOW, tid: 1 }), "what it still lacks, at least a window");
        a.asked(3, again.unwrap());
        let (f, _) = a.filled(3, WINDOW as i64, window(2 * big + WINDOW, WINDOW as usize));
        assert_eq!(f, Filled::Serve(3, w(big), window(2 * big, big as usize)));
    }

    #[test]
    fn a_failed_window_forwards_the_read_and_never_again() {
        let (mut a, ask) = waiting_for_a_window(5);
        a.asked(9, ask);
        assert_eq!(a.filled(9, -(libc::ESPIPE as i64), vec![]), (Filled::Forward(5, w(64)), None));
        a.after(libc::SYS_read, &[5, 0x5000, 64, 0, 0, 0], 64);
        assert_eq!(a.read(5, w(64)), (Read::Usual, None));
        assert!(a.settle_all().is_empty());
    }

    #[test]
    fn an_abandoned_window_is_asked_again_for_the_waiting_read() {
        let (mut a, ask) = waiting_for_a_window(3);
        a.asked(4, ask);
        assert!(a.abandoned(2).is_empty(), "another thread's");
        assert_eq!(a.abandoned(1), vec![ask]);
        a.asked(5, ask);
        assert_eq!(a.filled(4, WINDOW as i64, window(64, WINDOW as usize)), (Filled::Nothing, None), "the lost one, late");
        let (f, _) = a.filled(5, WINDOW as i64, window(64, WINDOW as usize));
        assert_eq!(f, Filled::Serve(3, w(64), window(64, 64)));
    }

    /// Writes gathered to a window go home as one; another call, a read or the end sends
    /// what is gathered first; a failure at home is the answer to the next write, fsync
    /// or close.
    #[test]
    fn writes_are_gathered_and_their_errors_reported_later() {
        let mut a = Ahead::default();
        a.own(3, 10, Some(libc::O_WRONLY));
        a.own(4, 0, Some(libc::O_WRONLY | libc::O_APPEND));
        a.own(5, 0, None);
        assert_eq!(a.write(4, 10), Write::Usual, "appending");
        assert_eq!(a.write(5, 10), Write::Usual, "flags not known");
        assert_eq!(a.write(9, 10), Write::Usual, "not followed");
        assert_eq!(a.write(3, 100), Write::Gather);
        assert!(a.gather(3, &[1; 100]).is_empty());
        assert!(a.gather(3, &[2; 50]).is_empty());
        // fstat: what was gathered goes home first, then the offset.
        let s = a.touched(libc::SYS_fstat, &[3, 0, 0, 0, 0, 0]);
        let mut data = vec![1; 100];
        data.extend([2; 50]);
        assert_eq!(s, Settle { writes: vec![Flush { fd: 3, at: 10, data }], offsets: vec![(3, 160)] });
        // A whole window goes at once.
        let big = vec![7u8; WINDOW as usize];
        assert_eq!(a.gather(3, &big), vec![Flush { fd: 3, at: 160, data: big }]);
        // Not contiguous (an lseek between): what was gathered goes first.
        a.gather(3, &[3; 10]);
        a.touched(libc::SYS_lseek, &[3, 0, 0, 0, 0, 0]);
        a.after(libc::SYS_lseek, &[3, 0, 0, 0, 0, 0], 5);
        assert!(a.gather(3, &[4; 10]).is_empty());
        assert_eq!(a.settle_all().writes, vec![Flush { fd: 3, at: 5, data: vec![4; 10] }]);
        // A failure: the next write gets it, once.
        a.write_failed(3, libc::ENOSPC);
        assert_eq!(a.write(3, 1), Write::Fail(libc::ENOSPC));
        assert_eq!(a.write(3, 1), Write::Gather);
        // ... or an fsync (its answer), or a close (after which it is no longer followed).
        a.write_failed(3, libc::EIO);
        assert_eq!(a.take_error(3), Some(libc::EIO));
        a.write_failed(3, libc::EDQUOT);
        a.touched(libc::SYS_close, &[3, 0, 0, 0, 0, 0]);
        assert!(!a.follows(3));
        assert_eq!(a.take_orphan_error(3), Some(libc::EDQUOT));
        // A read after writes: what was gathered goes home, the read is forwarded.
        a.own(6, 0, Some(libc::O_RDWR));
        a.gather(6, &[9; 4]);
        assert_eq!(a.read(6, w(4)), (Read::Usual, None));
        assert_eq!(a.touched(libc::SYS_read, &[6, 0x5000, 4, 0, 0, 0]).writes, vec![Flush { fd: 6, at: 0, data: vec![9; 4] }]);
    }

    #[test]
    fn not_followed_and_short_reads_stay_usual() {
        let mut a = Ahead::default();
        assert_eq!(a.read(3, w(10)), (Read::Usual, None));
        a.own(3, 0, Some(0));
        a.after(libc::SYS_read, &[3, 0x5000, 100, 0, 0, 0], 40);
        assert_eq!(a.read(3, w(100)), (Read::Usual, None), "a short read is no sequence");
    }
}
