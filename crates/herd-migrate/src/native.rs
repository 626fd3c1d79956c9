//! Forwarded calls that herdd answers itself, without waking the deputy.
//!
//! The deputy runs a forwarded call by ptrace: it is woken from its `pause()`, the
//! call is injected, and it stops again — four context switches and a handful of
//! ptrace requests on the path of every call. For the calls below, the result does
//! not depend on which process makes them, only on the open file, so herdd makes them
//! itself on a duplicate of the deputy's descriptor (`pidfd_getfd`: the same open
//! file, so the same offset, flags and locks) and the deputy sleeps on:
//!
//! - **read, write, pread64, pwrite64, readv, writev, lseek** on
//!   - a *pipe or FIFO*: reads and writes with `RWF_NOWAIT` (a read that would
//!     wait, and a write that would wait or is larger than `PIPE_BUF` — not atomic
//!     then — go to the deputy, which can be interrupted by a signal);
//!   - a *regular file* of a disk or memory file system (ext4, xfs, btrfs, tmpfs,
//!     overlay, f2fs, bcachefs, zfs; not procfs, sysfs and the like, whose files
//!     may check the caller at each read or write, nor FUSE or NFS, which tell the
//!     server who calls or may wait on the network), not opened `O_DIRECT`: a read
//!     only when `cachestat` says that every page it reads is in the page cache (it
//!     cannot wait on the disk then), a write only while neither the process nor
//!     herdd has a file-size limit (the kernel checks the caller's and signals it);
//!   - a *socket*: read and readv only, with `RWF_NOWAIT` (`MSG_DONTWAIT`), when
//!     its `SO_RCVLOWAT` is 1 (then a blocking read returns as soon as anything has
//!     come, as this one does); a read that would wait goes to the deputy, and so do
//!     writes, which on a socket may send part and wait for room for the rest;
//!   - `/dev/null`, `/dev/zero`, `/dev/full`, `/dev/urandom`.
//! - **getppid**: the deputy's parent, from its pidfd (`PIDFD_GET_INFO`), when herdd
//!   and the deputy see the same pid namespace.
//!
//! A write that fails with `EPIPE` is given to the deputy too: the kernel raises
//! SIGPIPE in the writer, and that must be the process. Anything else — a terminal,
//! a socket's writes, a descriptor the process does not have — goes to the deputy.
//! What changes for the world outside: a fanotify listener sees herdd's pid as the
//! reader or writer, and the bytes count in herdd's /proc/PID/io, not the deputy's.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use herd_kernel::fileio::{self, CallBuf, How};
use herd_kernel::pidfd::PidFd;

use crate::syscalls::{self, Call, MemRead, MemWrite, OutKind, Reply};

/// The largest call answered here (its buffers, all together); a larger one goes to
/// the deputy, whose scratch grows for it.
const MAX_BYTES: u64 = 4 << 20;

/// File systems whose regular files behave the same whoever reads or writes them.
const PLAIN_FILE_SYSTEMS: [i64; 8] = [
    0xEF53,     // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0x794C_7630, // overlay
    0xF2F5_2010, // f2fs
    0xCA45_1A4E, // bcachefs
    0x2FC1_2FC1, // zfs
];

/// Calls herdd makes for a deputy (see the module's doc).
pub struct Native {
    /// The deputy, from when it was ours (a pid could be reused; a pidfd is not).
    pidfd: Option<PidFd>,
    /// herdd and the deputy see the same pid namespace: its parent's pid as herdd
    /// sees it is the one it would see.
    same_pid_ns: bool,
    /// herdd has no file-size limit of its own (else a write past it would signal herdd).
    unlimited_here: bool,
}

impl Native {
    /// For the deputy `pid` (ours: traced by us, or a child being captured).
    pub fn new(pid: i32) -> Native {
        let same_pid_ns = herd_checkpoint::restore::same_file("/proc/self/ns/pid", &format!("/proc/{pid}/ns/pid"));
        Native { pidfd: PidFd::open(pid).ok(), same_pid_ns, unlimited_here: fileio::fsize_unlimited(0) }
    }

    /// Makes `call` here and answers it, if it is one herdd can make (see the module's
    /// doc); None: the deputy must, nothing of it was done.
    pub fn run(&self, call: &Call) -> Option<Reply> {
        let pidfd = self.pidfd.as_ref()?;
        match call.nr {
            libc::SYS_getppid if self.same_pid_ns => {
                let ids = pidfd.ids().ok()?;
                Some(Reply { ret: i64::from(ids.ppid), outs: Vec::new() })
            }
            libc::SYS_read | libc::SYS_write | libc::SYS_pread64 | libc::SYS_pwrite64 | libc::SYS_readv | libc::SYS_writev | libc::SYS_lseek => {
                self.io(pidfd, call)
            }
            _ => None,
        }
    }

    fn io(&self, pidfd: &PidFd, call: &Call) -> Option<Reply> {
        let nr = call.nr;
        // The kernel takes an fd as an unsigned int.
        let fd = i32::try_from(call.args[0] as u32).ok()?;
        let file = pidfd.get_fd(fd).ok()?;
        let kind = Kind::of(&file)?;
        let writes = matches!(nr, libc::SYS_write | libc::SYS_pwrite64 | libc::SYS_writev);
        let bytes: u64 = call.bufs.iter().filter(|b| b.out != OutKind::In || writes).map(|b| b.len).sum();
        if bytes > MAX_BYTES {
            return None;
        }
        let how = match (kind, nr) {
            (_, libc::SYS_lseek) => How::Plain,
            (Kind::Device, _) => How::Plain,
            (Kind::Pipe, libc::SYS_read | libc::SYS_readv) => How::NoWait,
            (Kind::Pipe, libc::SYS_write) if call.args[2] <= libc::PIPE_BUF as u64 => How::NoWait,
            (Kind::Pipe, libc::SYS_write | libc::SYS_writev) => return None,
            // pread64/pwrite64 on a pipe: ESPIPE at once.
            (Kind::Pipe, _) => How::Plain,
            // A read returns what has come, as a blocking one does once something has
            // (unless SO_RCVLOWAT asks for more: then it is the deputy's).
            (Kind::Socket, libc::SYS_read | libc::SYS_readv) if fileio::socket_rcvlowat(file.as_fd()) == Some(1) => How::NoWait,
            (Kind::Socket, _) => return None,
            (Kind::File { .. }, _) if writes => {
                if !(self.unlimited_here && fileio::fsize_unlimited(pidfd.pid())) {
                    return None;
                }
                How::Plain
            }
            (Kind::File { size }, _) => {
                let at = match nr {
                    libc::SYS_pread64 => call.args[3] as i64,
                    _ => nix::unistd::lseek(file.as_raw_fd(), 0, nix::unistd::Whence::SeekCur).ok()?,
                };
                if at < 0 || !fileio::cached(file.as_fd(), size, at as u64, bytes) {
                    return None;
                }
                How::Plain
            }
        };
        let scratch = CallBuf::new(call.bufs.iter().map(|b| syscalls::align8(b.len)).sum());
        let mut declined = false;
        let result = syscalls::execute(call, scratch.base(), scratch.len(), &scratch, &mut |nr, args| {
            let Some(ret) = scratch.make(file.as_fd(), nr, args, how) else {
                declined = true;
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            };
            // Would wait, or cannot be asked not to (EOPNOTSUPP); or a broken pipe,
            // whose SIGPIPE is the process's: the deputy makes it.
            let again = how == How::NoWait && (ret == -(libc::EAGAIN as i64) || ret == -(libc::EOPNOTSUPP as i64));
            if again || (writes && ret == -(libc::EPIPE as i64)) {
                declined = true;
                return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
            }
            Ok(ret)
        });
        match result {
            Ok(reply) if !declined => Some(reply),
            _ => None,
        }
    }
}

/// What a descriptor is, for [`Native::io`]; None: one herdd leaves to the deputy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Pipe,
    /// A regular file, and its size when it was looked at.
    File { size: u64 },
    /// Reads only (a write may send part and wait for the rest).
    Socket,
    /// /dev/null, zero, full, urandom: nothing about the caller matters to them.
    Device,
}

impl Kind {
    fn of(file: &OwnedFd) -> Option<Kind> {
        let st = nix::sys::stat::fstat(file.as_raw_fd()).ok()?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFIFO => Some(Kind::Pipe),
            libc::S_IFSOCK => Some(Kind::Socket),
            libc::S_IFCHR => {
                let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
                (major == 1 && matches!(minor, 3 | 5 | 7 | 9)).then_some(Kind::Device)
            }
            libc::S_IFREG => {
                let fs = nix::sys::statfs::fstatfs(file).ok()?;
                let flags = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).ok()?;
                let plain_fs = PLAIN_FILE_SYSTEMS.contains(&(fs.filesystem_type().0 as i64));
                (plain_fs && flags & libc::O_DIRECT == 0).then_some(Kind::File { size: st.st_size as u64 })
            }
            _ => None,
        }
    }
}

/// herdd's buffer as the deputy's memory for [`syscalls::execute`] (a fault outside it).
impl MemRead for CallBuf {
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if CallBuf::read(self, addr, buf) {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(libc::EFAULT))
        }
    }
}

impl MemWrite for CallBuf {
    fn write(&self, addr: u64, data: &[u8]) -> std::io::Result<()> {
        if CallBuf::write(self, addr, data) {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(libc::EFAULT))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::Buf;
    use std::io::{Read, Write};
    use std::process::{Child, Command, Stdio};

    /// A process whose stdin and stdout are what the test gives it, sleeping.
    struct Sleeper(Child);

    impl Sleeper {
        fn new(stdin: impl Into<Stdio>, stdout: impl Into<Stdio>) -> Sleeper {
            Sleeper(Command::new("sleep").arg("60").stdin(stdin).stdout(stdout).spawn().expect("spawn sleep"))
        }
        fn pid(&self) -> i32 {
            self.0.id() as i32
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// The process's addresses do not matter here: they only name the buffers.
    const ADDR: u64 = 0x7000_0000;

    fn write(fd: u64, data: &[u8]) -> Call {
        let n = data.len() as u64;
        Call { nr: libc::SYS_write, args: [fd, ADDR, n, 0, 0, 0], bufs: vec![Buf { arg: 1, addr: ADDR, len: n, data: data.to_vec(), out: OutKind::In }] }
    }

    fn read(fd: u64, n: u64) -> Call {
        Call { nr: libc::SYS_read, args: [fd, ADDR, n, 0, 0, 0], bufs: vec![Buf { arg: 1, addr: ADDR, len: n, data: Vec::new(), out: OutKind::Ret }] }
    }

    fn lseek(fd: u64, off: i64, whence: i32) -> Call {
        Call { nr: libc::SYS_lseek, args: [fd, off as u64, whence as u64, 0, 0, 0], bufs: Vec::new() }
    }

    /// None when this machine cannot take another process's descriptors (pidfd_getfd
    /// needs ptrace access): the test prints why and passes nothing off as tested.
    fn native_for(p: &Sleeper) -> Option<Native> {
        let n = Native::new(p.pid());
        match n.pidfd.as_ref().map(|f| f.get_fd(0)) {
            Some(Ok(_)) => Some(n),
            other => {
                println!("SKIP: pidfd_getfd of a child's descriptor: {other:?}");
                None
            }
        }
    }

    #[test]
    fn files_are_read_and_written_at_their_offset_without_the_deputy() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, b"abcdef").unwrap(); // just written: in the page cache
        let output = dir.path().join("out");
        let p = Sleeper::new(std::fs::File::open(&input).unwrap(), std::fs::File::create(&output).unwrap());
        let Some(n) = native_for(&p) else { return };

        assert_eq!(n.run(&write(1, b"hello ")), Some(Reply { ret: 6, outs: Vec::new() }));
        assert_eq!(n.run(&write(1, b"world")).map(|r| r.ret), Some(5));
        assert_eq!(std::fs::read(&output).unwrap(), b"hello world");
        // The offset is the process's: shared with its descriptor.
        assert_eq!(n.run(&lseek(1, 0, libc::SEEK_CUR)).map(|r| r.ret), Some(11));

        assert_eq!(n.run(&read(0, 4)), Some(Reply { ret: 4, outs: vec![(ADDR, b"abcd".to_vec())] }));
        assert_eq!(n.run(&read(0, 4)), Some(Reply { ret: 2, outs: vec![(ADDR, b"ef".to_vec())] }));
        assert_eq!(n.run(&read(0, 4)), Some(Reply { ret: 0, outs: Vec::new() }));

        // readv into two buffers, from the start again.
        assert_eq!(n.run(&lseek(0, 1, libc::SEEK_SET)).map(|r| r.ret), Some(1));
        let iov: Vec<u8> = [(ADDR + 0x100, 2u64), (ADDR + 0x200, 8u64)].iter().flat_map(|(a, l)| a.to_ne_bytes().into_iter().chain(l.to_ne_bytes())).collect();
        let readv = Call {
            nr: libc::SYS_readv,
            args: [0, ADDR, 2, 0, 0, 0],
            bufs: vec![
                Buf { arg: 1, addr: ADDR, len: 32, data: iov, out: OutKind::In },
                Buf { arg: 1, addr: ADDR + 0x100, len: 2, data: Vec::new(), out: OutKind::Scatter },
                Buf { arg: 1, addr: ADDR + 0x200, len: 8, data: Vec::new(), out: OutKind::Scatter },
            ],
        };
        assert_eq!(n.run(&readv), Some(Reply { ret: 5, outs: vec![(ADDR + 0x100, b"bc".to_vec()), (ADDR + 0x200, b"def".to_vec())] }));
    }

    #[test]
    fn a_file_size_limit_of_the_process_leaves_writes_to_the_deputy() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out");
        let child = Command::new("sh").args(["-c", "ulimit -f 2048 && exec sleep 60"]).stdout(std::fs::File::create(&output).unwrap()).spawn().unwrap();
        let p = Sleeper(child);
        // Once its limit is set (the shell runs ulimit before it execs sleep).
        let limits = format!("/proc/{}/limits", p.pid());
        let limited = || std::fs::read_to_string(&limits).is_ok_and(|t| t.lines().any(|l| l.starts_with("Max file size") && l.contains("1048576")));
        let t0 = std::time::Instant::now();
        while !limited() {
            assert!(t0.elapsed() < std::time::Duration::from_secs(10), "the shell never set its file-size limit");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let Some(n) = native_for(&p) else { return };
        assert_eq!(n.run(&write(1, b"x")), None);
        assert_eq!(std::fs::read(&output).unwrap(), b"");
    }

    #[test]
    fn pipes_are_used_only_when_no_call_would_wait() {
        let (child_in, mut feed) = std::io::pipe().unwrap();
        let (mut drain, child_out) = std::io::pipe().unwrap();
        let p = Sleeper::new(child_in, child_out);
        let Some(n) = native_for(&p) else { return };
        // Nothing to read: the read would wait, so the deputy makes it.
        assert_eq!(n.run(&read(0, 8)), None);
        feed.write_all(b"xy").unwrap();
        assert_eq!(n.run(&read(0, 8)), Some(Reply { ret: 2, outs: vec![(ADDR, b"xy".to_vec())] }));

        // Writes up to PIPE_BUF (atomic) are made here, whole, until the pipe is full.
        let mut made = 0;
        while let Some(r) = n.run(&write(1, &[7u8; libc::PIPE_BUF])) {
            assert_eq!(r.ret, libc::PIPE_BUF as i64);
            made += 1;
            assert!(made <= 1024, "a pipe that never fills");
        }
        assert!(made >= 1);
        let mut got = vec![0u8; made * libc::PIPE_BUF];
        drain.read_exact(&mut got).unwrap();
        assert!(got.iter().all(|&b| b == 7));
        // Larger ones are the deputy's.
        assert_eq!(n.run(&write(1, &[1u8; libc::PIPE_BUF + 1])), None);
        // A broken pipe: its SIGPIPE is the process's, so the deputy makes the write.
        drop(drain);
        assert_eq!(n.run(&write(1, b"z")), None);
    }

    #[test]
    fn devices_sockets_and_unknown_descriptors() {
        let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = Sleeper::new(std::fs::File::open("/dev/zero").unwrap(), std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap());
        let Some(n) = native_for(&p) else { return };
        assert_eq!(n.run(&write(1, b"gone")).map(|r| r.ret), Some(4));
        assert_eq!(n.run(&read(0, 3)), Some(Reply { ret: 3, outs: vec![(ADDR, vec![0, 0, 0])] }));
        // A descriptor it does not have: the deputy answers EBADF.
        assert_eq!(n.run(&write(77, b"x")), None);
        drop(p);
        // A socket: writes are the deputy's; reads are made here once something has
        // come (and while SO_RCVLOWAT is 1).
        let p = Sleeper::new(std::os::fd::OwnedFd::from(sock.try_clone().unwrap()), std::os::fd::OwnedFd::from(sock));
        let Some(n) = native_for(&p) else { return };
        assert_eq!(n.run(&write(1, b"x")), None);
        assert_eq!(n.run(&read(0, 8)), None);
        let mut peer = _peer;
        peer.write_all(b"abc").unwrap();
        assert_eq!(n.run(&read(0, 8)), Some(Reply { ret: 3, outs: vec![(ADDR, b"abc".to_vec())] }));
        peer.write_all(b"def").unwrap();
        let theirs = p.pid();
        let fd = n.pidfd.as_ref().unwrap().get_fd(0).unwrap();
        fileio::set_socket_rcvlowat(fd.as_fd(), 10).unwrap();
        assert_eq!(n.run(&read(0, 8)), None, "process {theirs}: SO_RCVLOWAT 10, 3 bytes waiting: a blocking read would wait");
    }

    #[test]
    fn getppid_is_the_deputys_parent() {
        let p = Sleeper::new(Stdio::null(), Stdio::null());
        let Some(n) = native_for(&p) else { return };
        match n.run(&Call { nr: libc::SYS_getppid, args: [0; 6], bufs: Vec::new() }) {
            Some(r) => assert_eq!(r, Reply { ret: i64::from(std::process::id()), outs: Vec::new() }),
            // PIDFD_GET_INFO is Linux 6.13.
            None => println!("SKIP: getppid from a pidfd: {:?}", n.pidfd.as_ref().map(|f| f.ids())),
        }
        // Anything else is the deputy's.
        assert_eq!(n.run(&Call { nr: libc::SYS_getpgrp, args: [0; 6], bufs: Vec::new() }), None);
    }
}
