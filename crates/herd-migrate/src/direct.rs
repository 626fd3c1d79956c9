//! Direct file access (openMosix's DFSA): a migrated process's files in a
//! directory that home and the node it runs on both see (verified by herdd, see
//! herd-daemon's `dfsa`) are used where it runs, without a round trip home.
//!
//! Home keeps every descriptor, as for any forwarded file; the node keeps a
//! second, *local* one on the same file for the calls that only need the file:
//!
//! - **open** of a path in a shared directory is forwarded as usual (home decides
//!   the number, creates, truncates and checks permissions as the process's
//!   owner there); when home answers fd N, the node opens the same path itself,
//!   as the owner (`openat2` beneath the shared directory: no symlink or `..`
//!   leads out of it, no other mount is crossed), and installs it in the
//!   process at N (seccomp ADDFD). If it cannot, N simply stays forwarded.
//! - **read, write, pread, pwrite, readv, writev, lseek, fstat, fsync,
//!   getdents64, ftruncate, fallocate, sendfile, copy_file_range, mmap** (private,
//!   or shared read-only) on local descriptors run in the process natively
//!   (the notification is answered CONTINUE). Nothing else of the process's can be
//!   reached that way: the descriptor is one the node opened.
//! - **close**: home closes its descriptor, then the process closes its own.
//! - **Anything else naming a local descriptor** (fcntl, dup2, fchdir, openat
//!   relative to it, flock, ioctl, …) first makes it an ordinary forwarded one
//!   again: its offset goes home ([`ToHome::Offsets`](crate::proto::ToHome::Offsets)),
//!   the process's copy is replaced by /dev/null, and the call is forwarded.
//! - **Offsets go home** whenever home's descriptor must be right: before such a
//!   call, before a close, when the process is captured to move on, and when it
//!   ends (the node's own copy of each descriptor outlives the process).
//! - **Arriving**, the process's open files in shared directories that no other
//!   process uses (`kcmp`: their offset is its own) are opened again on the node
//!   (same inode), at home's offset, and installed at their numbers the first
//!   time the process uses them ([`crate::proto::Files`]).
//!
//! Paths relative to the working directory resolve where home's cwd is (the
//! node follows the process's `chdir` calls); a cwd it cannot follow makes
//! relative opens forwarded ones.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use herd_kernel::seccomp::{Listener, Notif};
use herd_kernel::task::FsCreds;
use nix::fcntl::OFlag;

use crate::proto::{FileIdentity, Files, OpenFile};
use herd_checkpoint::filehash::FileHashes;
use crate::syscalls::MemRead;

const O_PATH: i32 = libc::O_PATH;
/// O_TMPFILE without the O_DIRECTORY it includes: the bit that makes an open a
/// temporary file's.
const O_TMPFILE_BIT: i32 = libc::O_TMPFILE & !libc::O_DIRECTORY;
const AT_EMPTY_PATH: u64 = libc::AT_EMPTY_PATH as u64;
const CLOSE_RANGE_CLOEXEC: u64 = libc::CLOSE_RANGE_CLOEXEC as u64;

// ---------------------------------------------------------------------------
// Home's side

/// What of process `pid`'s files may be used directly on a node that shares `dirs`
/// with this one, and which of its files have an offset of their own (the process is
/// frozen, or away with its deputy quiesced).
pub fn files_of(pid: i32, dirs: &[String]) -> Files {
    let nested = dirs.iter().flat_map(|d| mounts_under(d)).collect::<Vec<_>>();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let mut files: Vec<OpenFile> = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(entries) => entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()).filter_map(|fd| open_file(pid, fd)).collect(),
        Err(_) => Vec::new(),
    };
    let held = held_elsewhere(pid, &files);
    files.retain(|f| !held.contains(&f.fd));
    files.sort_by_key(|f| f.fd);
    let own = files.iter().filter(|f| !f.dir).map(|f| (f.fd, f.pos, f.flags)).collect();
    let open = files
        .into_iter()
        .filter(|f| f.path.starts_with('/') && !f.path.ends_with(" (deleted)") && within(&f.path, dirs, &nested).is_some())
        .collect();
    Files { dirs: dirs.to_vec(), nested, cwd, open, own }
}

/// Descriptor `fd` of `pid` if it is a regular file or a directory (not O_PATH).
fn open_file(pid: i32, fd: i32) -> Option<OpenFile> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let path = link.to_str()?.to_string();
    let meta = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok()?;
    if !meta.is_file() && !meta.is_dir() {
        return None;
    }
    let (pos, flags) = fdinfo(pid, fd)?;
    if flags & O_PATH != 0 {
        return None;
    }
    use std::os::unix::fs::MetadataExt;
    Some(OpenFile { fd, path, pos, flags, ino: meta.ino(), dir: meta.is_dir() })
}

/// Descriptor `fd` of `pid`'s offset and flags (/proc/PID/fdinfo: open(2) flags in octal,
/// FD_CLOEXEC shown as O_CLOEXEC).
pub(crate) fn fdinfo(pid: i32, fd: i32) -> Option<(u64, i32)> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    Some((field("pos:")?.parse().ok()?, i32::from_str_radix(field("flags:")?, 8).ok()?))
}

/// Which of `files` (descriptors of `pid`) share their open file description with
/// something else: another descriptor of the process (a dup), or another process's.
/// Their offset is not theirs alone. One pass over /proc (kcmp where the paths match);
/// `herd run` (comm "herd"), which only waits for its child, does not count.
fn held_elsewhere(pid: i32, files: &[OpenFile]) -> std::collections::HashSet<i32> {
    let mut held = std::collections::HashSet::new();
    if files.is_empty() {
        return held;
    }
    let by_path: HashMap<&str, Vec<i32>> = files.iter().fold(HashMap::new(), |mut m, f| {
        m.entry(f.path.as_str()).or_default().push(f.fd);
        m
    });
    let Ok(procs) = std::fs::read_dir("/proc") else { return files.iter().map(|f| f.fd).collect() };
    for p in procs.flatten() {
        let Some(other) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{other}/fd")) else { continue };
        let mut is_herd = None;
        for f in fds.flatten() {
            let Some(ofd) = f.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let Ok(link) = std::fs::read_link(f.path()) else { continue };
            let Some(mine) = link.to_str().and_then(|l| by_path.get(l)) else { continue };
            for &fd in mine {
                if (other == pid && ofd == fd) || held.contains(&fd) {
                    continue;
                }
                let same = herd_kernel::task::same_description(pid, fd, other, ofd).unwrap_or(true);
                let herd = *is_herd.get_or_insert_with(|| {
                    other != pid && std::fs::read_to_string(format!("/proc/{other}/comm")).is_ok_and(|c| c.trim() == "herd")
                });
                if same && !herd {
                    held.insert(fd);
                }
            }
        }
    }
    held
}

/// Sets the offsets the node sent on `pid`'s own descriptors (home's).
pub fn set_offsets(pid: i32, offsets: &[(i32, u64)]) {
    let Ok(pidfd) = herd_kernel::pidfd::PidFd::open(pid) else { return };
    for &(fd, pos) in offsets {
        match pidfd.get_fd(fd) {
            Ok(f) => {
                if let Err(e) = nix::unistd::lseek(f.as_raw_fd(), pos as i64, nix::unistd::Whence::SeekSet) {
                    tracing::debug!(pid, fd, "setting the offset {pos}: {e}");
                }
            }
            Err(e) => tracing::debug!(pid, fd, "setting the offset {pos}: {e}"),
        }
    }
}

/// Writes `data` at offset `at` of `pid`'s descriptor `fd` (home's, for writes the
/// node gathered); the errno of a failure.
pub fn write_at(pid: i32, fd: i32, at: u64, data: &[u8]) -> Result<(), i32> {
    let pidfd = herd_kernel::pidfd::PidFd::open(pid).map_err(|_| libc::EIO)?;
    let file = pidfd.get_fd(fd).map_err(|_| libc::EBADF)?;
    let mut done = 0usize;
    while done < data.len() {
        match nix::sys::uio::pwrite(&file, &data[done..], (at + done as u64) as i64) {
            Ok(0) => return Err(libc::EIO),
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e as i32),
        }
    }
    Ok(())
}

/// The largest file a node maps from its own copy ([`ToHome::Identify`](crate::proto::ToHome::Identify)): both sides
/// read the whole file once to compare it (then the hash is cached); a larger one is
/// mapped at home.
pub const MAX_COPY: u64 = 512 << 20;

/// Home's side of [`ToHome::Identify`](crate::proto::ToHome::Identify): what `pid`'s
/// descriptor `fd` is, if a node may map an identical copy of it instead: a regular
/// file open for reading, still at the path it was opened by, of at most [`MAX_COPY`]
/// bytes. None otherwise (the process then maps it at home, as before).
pub fn identify(pid: i32, fd: i32, hashes: &mut FileHashes) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    let pidfd = herd_kernel::pidfd::PidFd::open(pid).ok()?;
    let file = std::fs::File::from(pidfd.get_fd(fd).ok()?);
    let flags = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).ok()?;
    let m = file.metadata().ok()?;
    if flags & libc::O_ACCMODE == libc::O_WRONLY || !m.is_file() || m.size() > MAX_COPY {
        return None;
    }
    let ours = format!("/proc/self/fd/{}", file.as_raw_fd());
    let path = std::fs::read_link(&ours).ok()?.into_os_string().into_string().ok()?;
    // Still the file at that path (not deleted or renamed since).
    let at = std::fs::metadata(&path).ok()?;
    if !path.starts_with('/') || (at.dev(), at.ino()) != (m.dev(), m.ino()) {
        return None;
    }
    let (hash, size) = hashes.hash(Path::new(&ours)).ok()?;
    Some(FileIdentity { path, size, hash })
}

/// Mount points under `dir` (not `dir` itself) in this node's mount table: another
/// file system inside a shared directory is not shared by being there.
pub fn mounts_under(dir: &str) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let base = Path::new(dir);
    herd_kernel::host::parse_mountinfo(&text)
        .into_iter()
        .filter(|m| m.point != base && m.point.starts_with(base))
        .map(|m| m.point.to_string_lossy().into_owned())
        .collect()
}

/// The shared directory (index in `dirs`) `path` (absolute) is in, and the path
/// relative to it ("." for the directory itself); None when it is in none, or
/// under a mount point of `nested`. Component by component: "/home2" is not in "/home".
pub fn within(path: &str, dirs: &[String], nested: &[String]) -> Option<(usize, PathBuf)> {
    let p = Path::new(path);
    if nested.iter().any(|n| p.starts_with(n)) {
        return None;
    }
    dirs.iter().enumerate().find_map(|(i, d)| {
        let rel = p.strip_prefix(d).ok()?;
        Some((i, if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel.to_path_buf() }))
    })
}

// ---------------------------------------------------------------------------
// The node's side

/// A descriptor of the process that the node opened itself.
struct Local {
    /// The node's own copy (same open file description as the process's).
    file: OwnedFd,
    /// Whether it is in the process at its number yet (files opened again on
    /// arrival are installed when the process first uses them).
    installed: bool,
    cloexec: bool,
    dir: bool,
    /// Opened for reading only: a shared mapping of it can never be written.
    read_only: bool,
    /// Not the file home has open but this node's identical copy of it, for private
    /// mappings only ([`Direct::map_copy`]): any other use of the descriptor demotes
    /// it first, and its offset is never home's.
    copy: bool,
}

/// What the guest does with a trapped call, as far as direct access goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Not about a local descriptor or a shared directory: as usual.
    Usual,
    /// Let it run in the process (these local descriptors installed first).
    Here,
    /// Forward it; when home's answer is a descriptor, open that path here too.
    Open { dir: usize, rel: PathBuf, flags: i32 },
    /// Forward it (home closes its descriptors); then let it run here, closing these.
    Close(Vec<i32>),
    /// These local descriptors become forwarded ones first; then forward the call.
    Demote(Vec<i32>),
    /// A stat of `rel` in shared directory `dir`: answered here with what
    /// [`Direct::stat_here`] gives, written at `buf` (statx: with its mask and flags);
    /// forwarded as usual when it cannot be done here.
    Stat { dir: usize, rel: PathBuf, nofollow: bool, buf: u64, statx: Option<(u32, i32)> },
    /// access/faccessat of `rel` in shared directory `dir` with `mode`: answered 0 here
    /// when [`Direct::access_here`] allows it; forwarded otherwise.
    Access { dir: usize, rel: PathBuf, nofollow: bool, mode: i32 },
    /// readlink of `rel` in shared directory `dir` into `buf` (`len` bytes): answered
    /// here with [`Direct::readlink_here`]; forwarded when it cannot be.
    Readlink { dir: usize, rel: PathBuf, buf: u64, len: u64 },
    /// A change of names in shared directory `dir` (unlink, rmdir, mkdir, rename within
    /// it): made here by [`Direct::change_here`], whose result is the call's; forwarded
    /// when it cannot be made here.
    Change { dir: usize, change: Change },
}

/// Why a private mapping of a file home has open is not made from this node's copy.
#[derive(Debug, PartialEq, Eq)]
pub enum NoCopy {
    /// Not here (the reason): the process maps it at home.
    Not(String),
    /// The call no longer waits.
    Gone,
}

/// A change of names within one shared directory (paths relative to it).
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// unlink (rmdir with `dir`).
    Unlink { rel: PathBuf, dir: bool },
    /// mkdir with `mode` (the process's umask applies, as at home).
    Mkdir { rel: PathBuf, mode: u32 },
    /// rename (renameat2 with `flags`: RENAME_NOREPLACE, RENAME_EXCHANGE).
    Rename { from: PathBuf, to: PathBuf, flags: u32 },
}

/// Direct file access of one guest.
pub struct Direct {
    pid: i32,
    /// The shared directories (both nodes' checks agree), each open here (O_PATH).
    dirs: Vec<String>,
    roots: Vec<OwnedFd>,
    nested: Vec<String>,
    /// The process's working directory at home, as far as the node could follow it.
    cwd: Option<String>,
    creds: Option<FsCreds>,
    local: HashMap<i32, Local>,
    /// The process's umask at home: the one it was restored with, then what its
    /// (forwarded) umask calls set. None: read from the process.
    umask: Option<u32>,
}

impl Direct {
    /// Nothing direct.
    pub fn none(pid: i32) -> Direct {
        Direct { pid, dirs: Vec::new(), roots: Vec::new(), nested: Vec::new(), cwd: None, creds: None, local: HashMap::new(), umask: None }
    }

    /// For guest `pid` (restored, not running yet): home's `files`, limited to the
    /// directories this node verified shared with home (`ours`). Home's open files
    /// there are opened again (as the owner; same inode, home's offset).
    pub fn arrive(pid: i32, files: Files, ours: &[String]) -> Direct {
        let mut d = Direct::none(pid);
        let creds = owner_creds(pid);
        for dir in files.dirs.iter().filter(|d| ours.contains(d)) {
            let root = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY).open(dir);
            match root {
                Ok(f) => {
                    d.dirs.push(dir.clone());
                    d.roots.push(f.into());
                }
                Err(e) => tracing::debug!(pid, dir, "shared directory not usable here: {e}"),
            }
        }
        if d.dirs.is_empty() || creds.is_none() {
            return d;
        }
        d.creds = creds;
        d.nested = files.nested;
        d.cwd = Some(files.cwd).filter(|c| c.starts_with('/'));
        for f in files.open {
            let Some((i, rel)) = within(&f.path, &d.dirs, &d.nested) else { continue };
            match d.open_here(i, &rel, f.flags) {
                Ok(local) => {
                    use std::os::unix::fs::MetadataExt;
                    let same = std::fs::File::from(local.try_clone().expect("dup")).metadata().is_ok_and(|m| m.ino() == f.ino && m.is_dir() == f.dir);
                    let at = nix::unistd::lseek(local.as_raw_fd(), f.pos as i64, nix::unistd::Whence::SeekSet);
                    if same && at.is_ok() {
                        let read_only = f.flags & libc::O_ACCMODE == libc::O_RDONLY;
                        d.local.insert(f.fd, Local { file: local, installed: false, cloexec: f.flags & libc::O_CLOEXEC != 0, dir: f.dir, read_only, copy: false });
                    } else {
                        tracing::debug!(pid, fd = f.fd, path = f.path, "not the same file here: stays forwarded");
                    }
                }
                Err(e) => tracing::debug!(pid, fd = f.fd, path = f.path, "cannot open it here ({e}): stays forwarded"),
            }
        }
        if !d.local.is_empty() {
            tracing::debug!(pid, fds = ?d.local.keys().collect::<Vec<_>>(), "open files used directly");
        }
        d
    }

    /// For the child process `pid` of a fork made here: the same directories, working
    /// directory and umask, and the same local descriptors (the child has those installed
    /// already at their numbers, sharing their open file descriptions, as at home).
    pub fn for_child(&self, pid: i32) -> std::io::Result<Direct> {
        let roots = self.roots.iter().map(|r| r.try_clone()).collect::<std::io::Result<Vec<_>>>()?;
        let mut local = HashMap::new();
        for (&fd, l) in &self.local {
            local.insert(fd, Local { file: l.file.try_clone()?, installed: l.installed, cloexec: l.cloexec, dir: l.dir, read_only: l.read_only, copy: l.copy });
        }
        Ok(Direct {
            pid,
            dirs: self.dirs.clone(),
            roots,
            nested: self.nested.clone(),
            cwd: self.cwd.clone(),
            creds: self.creds.clone(),
            local,
            umask: self.umask,
        })
    }

    /// Whether anything is direct at all.
    pub fn active(&self) -> bool {
        !self.dirs.is_empty()
    }

    /// Whether descriptor `fd` is used directly (a local one).
    pub fn has(&self, fd: i32) -> bool {
        self.local.contains_key(&fd)
    }

    fn is_local(&self, fd: u64) -> bool {
        i32::try_from(fd as i64).is_ok_and(|fd| self.local.contains_key(&fd))
    }

    /// Decides what to do with trapped call `n` (`mem`: the process's memory, for paths).
    pub fn plan(&self, n: &Notif, mem: &dyn MemRead) -> Plan {
        if !self.active() && self.local.is_empty() {
            return Plan::Usual;
        }
        let nr = i64::from(n.nr);
        let a = &n.args;
        let named: Vec<i32> = fd_args(nr).iter().map(|&i| a[i]).filter(|&fd| self.is_local(fd)).map(|fd| fd as i32).collect();
        match nr {
            libc::SYS_close if !named.is_empty() => return Plan::Close(named),
            libc::SYS_close_range => {
                let (lo, hi) = (a[0] as u32, a[1] as u32);
                let mut in_range: Vec<i32> = self.local.keys().copied().filter(|&fd| (lo..=hi).contains(&(fd as u32))).collect();
                if in_range.is_empty() {
                    return Plan::Usual;
                }
                if a[2] & CLOSE_RANGE_CLOEXEC != 0 {
                    in_range.clear();
                }
                return Plan::Close(in_range);
            }
            libc::SYS_mmap => {
                if !self.is_local(a[4]) {
                    return Plan::Usual;
                }
                let shared = a[3] & libc::MAP_SHARED as u64 != 0;
                let l = &self.local[&(a[4] as i32)];
                if l.copy {
                    // The node's copy is no file home knows: a shared mapping is home's.
                    return if shared { Plan::Demote(vec![a[4] as i32]) } else { Plan::Here };
                }
                // A shared writable mapping could not move with the process.
                return if !shared || l.read_only { Plan::Here } else { Plan::Demote(vec![a[4] as i32]) };
            }
            _ => {}
        }
        if named.iter().any(|fd| self.local[fd].copy) {
            return Plan::Demote(named);
        }
        if !named.is_empty() {
            let all = fd_args(nr).iter().all(|&i| self.is_local(a[i]));
            let here = all
                && match nr {
                    libc::SYS_newfstatat => a[3] & AT_EMPTY_PATH != 0 && empty_path(mem, a[1]) && !self.any_dir(&named),
                    libc::SYS_statx => a[2] & AT_EMPTY_PATH != 0 && empty_path(mem, a[1]) && !self.any_dir(&named),
                    // Questions only: the answers are the same file's. What would change
                    // the descriptor here and not at home (flags, close-on-exec) is demoted.
                    libc::SYS_fcntl => [libc::F_GETFL, libc::F_GETFD].contains(&(a[1] as i32)),
                    libc::SYS_ioctl => !CHANGING_IOCTLS.contains(&(a[1] as u32)),
                    _ => HERE.contains(&nr),
                };
            return if here { Plan::Here } else { Plan::Demote(named) };
        }
        let at_cwd = libc::AT_FDCWD as i64;
        let nofollow = |f: u64| f & libc::AT_SYMLINK_NOFOLLOW as u64 != 0;
        let stat = match nr {
            libc::SYS_stat => Some((at_cwd, a[0], a[1], false, None)),
            libc::SYS_lstat => Some((at_cwd, a[0], a[1], true, None)),
            libc::SYS_newfstatat => Some((a[0] as i32 as i64, a[1], a[2], nofollow(a[3]), None)),
            libc::SYS_statx => Some((a[0] as i32 as i64, a[1], a[4], nofollow(a[2]), Some((a[3] as u32, a[2] as i32)))),
            _ => None,
        };
        if let Some((dirfd, path, buf, nofollow, statx)) = stat {
            return match self.resolve(dirfd, path, mem) {
                Some((dir, rel)) => Plan::Stat { dir, rel, nofollow, buf, statx },
                None => Plan::Usual,
            };
        }
        let access = match nr {
            libc::SYS_access => Some((at_cwd, a[0], a[1] as i32, false)),
            libc::SYS_faccessat => Some((a[0] as i32 as i64, a[1], a[2] as i32, false)),
            // AT_EACCESS asks about the effective ids: the owner's here, as at home.
            libc::SYS_faccessat2 if a[3] & !((libc::AT_SYMLINK_NOFOLLOW | libc::AT_EACCESS) as u64) == 0 => {
                Some((a[0] as i32 as i64, a[1], a[2] as i32, nofollow(a[3])))
            }
            _ => None,
        };
        if let Some((dirfd, path, mode, nofollow)) = access {
            return match self.resolve(dirfd, path, mem) {
                Some((dir, rel)) => Plan::Access { dir, rel, nofollow, mode },
                None => Plan::Usual,
            };
        }
        let readlink = match nr {
            libc::SYS_readlink => Some((at_cwd, a[0], a[1], a[2])),
            libc::SYS_readlinkat => Some((a[0] as i32 as i64, a[1], a[2], a[3])),
            _ => None,
        };
        if let Some((dirfd, path, buf, len)) = readlink {
            return match self.resolve(dirfd, path, mem) {
                Some((dir, rel)) => Plan::Readlink { dir, rel, buf, len },
                None => Plan::Usual,
            };
        }
        if let Some(plan) = self.plan_change(nr, a, mem) {
            return plan;
        }
        let (dirfd, path, flags) = match nr {
            libc::SYS_open => (libc::AT_FDCWD as i64, a[0], a[1] as i32),
            libc::SYS_creat => (libc::AT_FDCWD as i64, a[0], libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC),
            libc::SYS_openat => (a[0] as i32 as i64, a[1], a[2] as i32),
            libc::SYS_openat2 => {
                // struct open_how { u64 flags, mode, resolve }: resolve rules of the
                // program's own go home with it.
                let mut how = [0u8; 24];
                if a[3] < 24 || mem.read(a[2], &mut how).is_err() || how[16..24] != [0; 8] {
                    return Plan::Usual;
                }
                (a[0] as i32 as i64, a[1], u64::from_ne_bytes(how[..8].try_into().expect("8 bytes")) as i32)
            }
            _ => return Plan::Usual,
        };
        if flags & (O_PATH | O_TMPFILE_BIT) != 0 {
            return Plan::Usual;
        }
        match self.resolve(dirfd, path, mem) {
            Some((dir, rel)) => Plan::Open { dir, rel, flags },
            None => Plan::Usual,
        }
    }

    /// unlink, rmdir, mkdir and rename of names in one shared directory: a [`Plan::Change`];
    /// None for any other call (or other paths: a rename from one directory to another,
    /// a path ending in `/`, `.` or `..`, whose meaning the node leaves to home).
    fn plan_change(&self, nr: i64, a: &[u64; 6], mem: &dyn MemRead) -> Option<Plan> {
        let at_cwd = libc::AT_FDCWD as i64;
        let dirfd = |x: u64| x as i32 as i64;
        let change = match nr {
            libc::SYS_unlink | libc::SYS_rmdir => {
                let (dir, rel) = self.resolve_name(at_cwd, a[0], mem)?;
                (dir, Change::Unlink { rel, dir: nr == libc::SYS_rmdir })
            }
            libc::SYS_unlinkat if a[2] & !(libc::AT_REMOVEDIR as u64) == 0 => {
                let (dir, rel) = self.resolve_name(dirfd(a[0]), a[1], mem)?;
                (dir, Change::Unlink { rel, dir: a[2] != 0 })
            }
            libc::SYS_mkdir => {
                let (dir, rel) = self.resolve_name(at_cwd, a[0], mem)?;
                (dir, Change::Mkdir { rel, mode: a[1] as u32 & 0o7777 })
            }
            libc::SYS_mkdirat => {
                let (dir, rel) = self.resolve_name(dirfd(a[0]), a[1], mem)?;
                (dir, Change::Mkdir { rel, mode: a[2] as u32 & 0o7777 })
            }
            libc::SYS_rename | libc::SYS_renameat | libc::SYS_renameat2 => {
                let (from, to, flags) = match nr {
                    libc::SYS_rename => ((at_cwd, a[0]), (at_cwd, a[1]), 0),
                    libc::SYS_renameat => ((dirfd(a[0]), a[1]), (dirfd(a[2]), a[3]), 0),
                    _ => ((dirfd(a[0]), a[1]), (dirfd(a[2]), a[3]), a[4] as u32),
                };
                // RENAME_WHITEOUT (overlay file systems') stays home's.
                if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
                    return None;
                }
                let (dir, from) = self.resolve_name(from.0, from.1, mem)?;
                let (to_dir, to) = self.resolve_name(to.0, to.1, mem)?;
                if to_dir != dir {
                    return None;
                }
                (dir, Change::Rename { from, to, flags })
            }
            _ => return None,
        };
        Some(Plan::Change { dir: change.0, change: change.1 })
    }

    /// [`Direct::resolve`] for a name to change: not the shared directory itself, nor a
    /// path whose last component is `.` or `..` or that ends in `/` (those say "a
    /// directory" or name another one; home answers them).
    fn resolve_name(&self, dirfd: i64, path: u64, mem: &dyn MemRead) -> Option<(usize, PathBuf)> {
        let raw = read_path(mem, path)?;
        let last = raw.rsplit('/').next().unwrap_or("");
        if last.is_empty() || last == "." || last == ".." {
            return None;
        }
        let (dir, rel) = self.resolve(dirfd, path, mem)?;
        (rel.file_name().is_some() && rel != Path::new(".")).then_some((dir, rel))
    }

    /// The shared directory and the path in it that a call's path argument (at `path`
    /// in the process, relative to `dirfd`) names: absolute, or relative to the working
    /// directory as far as the node follows it. None for an empty path, a path relative
    /// to another descriptor, or one that is in no shared directory.
    fn resolve(&self, dirfd: i64, path: u64, mem: &dyn MemRead) -> Option<(usize, PathBuf)> {
        let path = read_path(mem, path).filter(|p| !p.is_empty())?;
        let abs = if path.starts_with('/') {
            path
        } else if dirfd == libc::AT_FDCWD as i64 {
            format!("{}/{path}", self.cwd.as_ref()?.trim_end_matches('/'))
        } else {
            return None;
        };
        within(&abs, &self.dirs, &self.nested)
    }

    /// Whether the owner may access `rel` in shared directory `dir` with `mode` (F_OK:
    /// it exists), beneath the directory; false is no answer (home gives it).
    pub fn access_here(&self, dir: usize, rel: &Path, nofollow: bool, mode: i32) -> bool {
        let (Some(creds), Some(root)) = (self.creds.as_ref(), self.roots.get(dir)) else { return false };
        let flags = O_PATH | libc::O_CLOEXEC | if nofollow { libc::O_NOFOLLOW } else { 0 };
        let check = || {
            let fd = herd_kernel::task::open_beneath(root.as_fd(), rel, flags)?;
            herd_kernel::task::access_as_fs_user(fd.as_fd(), mode)
        };
        matches!(herd_kernel::task::as_user(creds, check), Ok(Ok(())))
    }

    /// The target of symlink `rel` in shared directory `dir` (its last component not
    /// followed), as the owner; None when it is not one here (home answers).
    pub fn readlink_here(&self, dir: usize, rel: &Path) -> Option<Vec<u8>> {
        let creds = self.creds.as_ref()?;
        let root = self.roots.get(dir)?.as_fd();
        let link = herd_kernel::task::as_user(creds, || {
            let fd = herd_kernel::task::open_beneath(root, rel, O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)?;
            nix::fcntl::readlinkat(Some(fd.as_raw_fd()), "").map_err(std::io::Error::from)
        })
        .ok()?
        .ok()?;
        use std::os::unix::ffi::OsStrExt;
        Some(link.as_bytes().to_vec())
    }

    /// Makes `change` in shared directory `dir` as the process's owner, in the parent
    /// directory opened beneath the shared one (no symlink or `..` leads out of it, no
    /// mount is crossed): the call's result (0 or -errno: the same file system, the same
    /// owner, the same answer as home's). None when it cannot be made here — a parent
    /// that is not there or leads out of the directory, no owner's identity — and home
    /// makes it. mkdir applies the process's umask at home (its umask calls are
    /// forwarded: [`Direct::umask`] follows them), on a thread of its own (a umask is a
    /// whole process's).
    pub fn change_here(&mut self, dir: usize, change: &Change) -> Option<i64> {
        // A directory renamed or removed may be (above) the working directory, which the
        // node follows by its path: it no longer can.
        let gone = match change {
            Change::Rename { from, .. } => Some(from),
            Change::Unlink { rel, dir: true } => Some(rel),
            _ => None,
        };
        if let (Some(rel), Some(cwd)) = (gone, self.cwd.as_ref()) {
            if Path::new(cwd).starts_with(Path::new(&self.dirs[dir]).join(rel)) {
                self.cwd = None;
            }
        }
        let creds = self.creds.as_ref()?;
        let root = self.roots.get(dir)?.as_fd();
        // The parent directory of `rel`, opened beneath the shared one.
        let parent = |rel: &Path| -> Option<OwnedFd> {
            let up = rel.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            herd_kernel::task::as_user(creds, || herd_kernel::task::open_beneath(root, up, O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)).ok()?.ok()
        };
        // The call's answer: 0, or -errno.
        let answer = |r: nix::Result<()>| r.map_or_else(|e| -(e as i64), |()| 0);
        match change {
            Change::Unlink { rel, dir } => {
                let (at, name) = (parent(rel)?, rel.file_name()?);
                let flags = if *dir { nix::unistd::UnlinkatFlags::RemoveDir } else { nix::unistd::UnlinkatFlags::NoRemoveDir };
                herd_kernel::task::as_user(creds, || answer(nix::unistd::unlinkat(Some(at.as_raw_fd()), name, flags))).ok()
            }
            Change::Rename { from, to, flags } => {
                let (from_at, from_name) = (parent(from)?, from.file_name()?);
                let (to_at, to_name) = (parent(to)?, to.file_name()?);
                let flags = nix::fcntl::RenameFlags::from_bits_truncate(*flags);
                herd_kernel::task::as_user(creds, || {
                    answer(nix::fcntl::renameat2(Some(from_at.as_raw_fd()), from_name, Some(to_at.as_raw_fd()), to_name, flags))
                })
                .ok()
            }
            Change::Mkdir { rel, mode } => {
                let (at, name) = (parent(rel)?, rel.file_name()?);
                let umask = match self.umask {
                    Some(m) => m,
                    // Restored with home's, unchanged since.
                    None => procfs::process::Process::new(self.pid).and_then(|p| p.status()).ok()?.umask?,
                };
                let mode = nix::sys::stat::Mode::from_bits_truncate(*mode);
                std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            // This thread's own copy of the file-system context (umask, cwd)
                            // from now on: the process's umask applies to it alone.
                            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).ok()?;
                            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
                            herd_kernel::task::as_user(creds, || answer(nix::sys::stat::mkdirat(Some(at.as_raw_fd()), name, mode))).ok()
                        })
                        .join()
                        .ok()
                        .flatten()
                })
            }
        }
    }

    /// The stat (statx with its mask and flags) of `rel` in shared directory `dir`, as
    /// the process's owner, beneath the directory; None when it cannot be had here (no
    /// such file, a symlink that leads out, no permission: home answers those).
    pub fn stat_here(&self, dir: usize, rel: &Path, nofollow: bool, statx: Option<(u32, i32)>) -> Option<Vec<u8>> {
        let creds = self.creds.as_ref()?;
        let flags = O_PATH | libc::O_CLOEXEC | if nofollow { libc::O_NOFOLLOW } else { 0 };
        let root = self.roots.get(dir)?.as_fd();
        let fd = herd_kernel::task::as_user(creds, || herd_kernel::task::open_beneath(root, rel, flags)).ok()?.ok()?;
        match statx {
            None => herd_kernel::task::stat_bytes(fd.as_fd()).ok(),
            Some((mask, sync)) => herd_kernel::task::statx_bytes(fd.as_fd(), mask, sync).ok(),
        }
    }

    fn any_dir(&self, fds: &[i32]) -> bool {
        fds.iter().any(|fd| self.local.get(fd).is_some_and(|l| l.dir))
    }

    /// Installs the local descriptors call `id` names that are not in the process
    /// yet. False if one could not be (then the call is to be demoted).
    pub fn install(&mut self, listener: &Listener, id: u64, fds: &[u64]) -> bool {
        for &fd in fds {
            let Ok(fd) = i32::try_from(fd as i64) else { continue };
            let Some(l) = self.local.get_mut(&fd) else { continue };
            if l.installed {
                continue;
            }
            match listener.add_fd(id, l.file.as_fd(), Some(fd), l.cloexec) {
                Ok(_) => l.installed = true,
                Err(e) => {
                    tracing::debug!(pid = self.pid, fd, "cannot install a local descriptor: {e}");
                    return false;
                }
            }
        }
        true
    }

    /// The fd arguments of call `n` (for [`Direct::install`]).
    pub fn named(n: &Notif) -> Vec<u64> {
        let nr = i64::from(n.nr);
        if nr == libc::SYS_mmap {
            return vec![n.args[4]];
        }
        fd_args(nr).iter().map(|&i| n.args[i]).collect()
    }

    /// The offsets of `fds` (every local one with None), for home (a copy for mappings
    /// has none of home's).
    pub fn offsets(&self, fds: Option<&[i32]>) -> Vec<(i32, u64)> {
        let pick: Vec<i32> = match fds {
            Some(f) => f.to_vec(),
            None => self.local.keys().copied().collect(),
        };
        pick.into_iter()
            .filter_map(|fd| {
                let l = self.local.get(&fd).filter(|l| !l.copy)?;
                let pos = nix::unistd::lseek(l.file.as_raw_fd(), 0, nix::unistd::Whence::SeekCur).ok()?;
                Some((fd, pos as u64))
            })
            .collect()
    }

    /// Makes `fds` forwarded ones: the process's copies are replaced by /dev/null
    /// (under call `id`), the node's dropped. Send [`Direct::offsets`] first.
    pub fn demote(&mut self, listener: &Listener, id: u64, fds: &[i32]) {
        for fd in fds {
            let Some(l) = self.local.remove(fd) else { continue };
            if l.installed {
                let placeholder = std::fs::File::open("/dev/null");
                let r = placeholder.map_err(|e| e.to_string()).and_then(|f| listener.add_fd(id, f.as_fd(), Some(*fd), true).map_err(|e| e.to_string()));
                if let Err(e) = r {
                    tracing::debug!(pid = self.pid, fd, "the local copy stays in the process (unused): {e}");
                }
            }
        }
    }

    /// Home closed `fds`; the process closes its copies itself (the call continues)
    /// when every one is in it (true), else the call is answered with home's result.
    pub fn closed(&mut self, fds: &[i32]) -> bool {
        let mut all = true;
        for fd in fds {
            if let Some(l) = self.local.remove(fd) {
                all &= l.installed;
            }
        }
        all
    }

    /// Home answered an open of `rel` in shared directory `dir` with descriptor
    /// `fd`: opens it here too and installs it at `fd` in the process (under call
    /// `id`). False when it stays forwarded.
    pub fn opened(&mut self, listener: &Listener, id: u64, dir: usize, rel: &Path, flags: i32, fd: i32) -> bool {
        let local = match self.open_here(dir, rel, flags) {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(pid = self.pid, fd, rel = %rel.display(), "not opened here ({e}): forwarded");
                return false;
            }
        };
        let meta = std::fs::File::from(match local.try_clone() {
            Ok(c) => c,
            Err(_) => return false,
        })
        .metadata();
        let dir_fd = meta.as_ref().is_ok_and(|m| m.is_dir());
        if !meta.is_ok_and(|m| m.is_file() || m.is_dir()) {
            return false;
        }
        let cloexec = flags & libc::O_CLOEXEC != 0;
        if let Err(e) = listener.add_fd(id, local.as_fd(), Some(fd), cloexec) {
            tracing::debug!(pid = self.pid, fd, "cannot install it: {e}");
            return false;
        }
        let read_only = flags & libc::O_ACCMODE == libc::O_RDONLY;
        self.local.insert(fd, Local { file: local, installed: true, cloexec, dir: dir_fd, read_only, copy: false });
        true
    }

    /// Opens `rel` beneath shared directory `dir` as the process's owner: no symlink
    /// or `..` out of it, no other mount crossed, never blocking (a FIFO is no file
    /// to use directly), without creating or truncating (home did that).
    fn open_here(&self, dir: usize, rel: &Path, flags: i32) -> Result<OwnedFd, String> {
        let creds = self.creds.as_ref().ok_or("no owner known")?;
        let keep = libc::O_ACCMODE | libc::O_APPEND | libc::O_DIRECT | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_NOATIME | libc::O_SYNC | libc::O_DSYNC | libc::O_LARGEFILE;
        let oflags = (flags & keep) | libc::O_NONBLOCK | libc::O_CLOEXEC;
        let root = self.roots[dir].as_fd();
        let fd = herd_kernel::task::as_user(creds, || herd_kernel::task::open_beneath(root, rel, oflags))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let meta = std::fs::File::from(fd.try_clone().map_err(|e| e.to_string())?).metadata().map_err(|e| e.to_string())?;
        if !meta.is_file() && !meta.is_dir() {
            return Err("not a regular file or directory".into());
        }
        if flags & libc::O_NONBLOCK == 0 {
            let now = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).map_err(|e| e.to_string())?;
            let without = OFlag::from_bits_truncate(now & !libc::O_NONBLOCK);
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(without)).map_err(|e| e.to_string())?;
        }
        Ok(fd)
    }

    /// A private mapping of home's descriptor `fd`, which home says is `file`, waits in
    /// call `id`: if this node has the same contents at the same path, opens that (as
    /// the process's owner, for reading) and installs it in the process at `fd`, a copy
    /// for mappings only; the call then runs here. [`NoCopy::Gone`]: the call is no
    /// longer waiting (a signal or a capture ended it; it is made again).
    pub fn map_copy(&mut self, listener: &Listener, id: u64, fd: i32, file: &FileIdentity, hashes: &mut FileHashes) -> Result<(), NoCopy> {
        let local = self.same_here(file, hashes).map_err(NoCopy::Not)?;
        if !listener.id_valid(id) {
            return Err(NoCopy::Gone);
        }
        if let Err(e) = listener.add_fd(id, local.as_fd(), Some(fd), true) {
            return Err(if listener.id_valid(id) { NoCopy::Not(format!("cannot install it: {e}")) } else { NoCopy::Gone });
        }
        self.local.insert(fd, Local { file: local.into(), installed: true, cloexec: true, dir: false, read_only: true, copy: true });
        Ok(())
    }

    /// This node's copy of home's `file`, opened for reading as the process's owner, if
    /// it is the same file (size and hash); else why not.
    pub fn same_here(&mut self, file: &FileIdentity, hashes: &mut FileHashes) -> Result<std::fs::File, String> {
        use std::os::unix::fs::MetadataExt;
        if self.creds.is_none() {
            self.creds = owner_creds(self.pid);
        }
        let creds = self.creds.as_ref().ok_or_else(|| "its owner is not known here".to_string())?;
        let open = || std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC).open(&file.path);
        let local = herd_kernel::task::as_user(creds, open).map_err(|e| e.to_string())?.map_err(|e| format!("{} here: {e}", file.path))?;
        let m = local.metadata().map_err(|e| e.to_string())?;
        if !m.is_file() || m.size() != file.size {
            return Err(format!("{} here is not the same file (size {} against {} at home)", file.path, m.size(), file.size));
        }
        let (hash, _) = hashes.hash(Path::new(&format!("/proc/self/fd/{}", local.as_raw_fd()))).map_err(|e| e.to_string())?;
        if hash != file.hash {
            return Err(format!("{} here differs from home's", file.path));
        }
        Ok(local)
    }

    /// The process exec'd here: the kernel closed its descriptors marked close-on-exec
    /// (and home's deputy closes its own), so this node's copies of them go.
    pub fn exec(&mut self) {
        self.local.retain(|_, l| !l.cloexec);
    }

    /// The process's working directory at home, as followed here (None: lost track).
    pub fn cwd(&self) -> Option<&str> {
        self.cwd.as_deref()
    }

    /// A forwarded umask set the process's umask at home to `mask`.
    pub fn umask(&mut self, mask: u32) {
        self.umask = Some(mask & 0o777);
    }

    /// A forwarded chdir to `path` succeeded at home; fchdir (None) loses track.
    pub fn chdir(&mut self, path: Option<String>) {
        self.cwd = match (path, &self.cwd) {
            (Some(p), _) if p.starts_with('/') => Some(p),
            (Some(p), Some(c)) => Some(format!("{}/{p}", c.trim_end_matches('/'))),
            _ => None,
        };
    }
}

/// The positions of a call's fd arguments (dirfds included; mmap's is apart).
pub(crate) fn fd_args(nr: i64) -> &'static [usize] {
    match nr {
        libc::SYS_read | libc::SYS_write | libc::SYS_pread64 | libc::SYS_pwrite64 | libc::SYS_readv | libc::SYS_writev
        | libc::SYS_preadv | libc::SYS_pwritev | libc::SYS_preadv2 | libc::SYS_pwritev2 | libc::SYS_lseek | libc::SYS_close
        | libc::SYS_dup | libc::SYS_fcntl | libc::SYS_ioctl | libc::SYS_flock | libc::SYS_fsync | libc::SYS_fdatasync
        | libc::SYS_ftruncate | libc::SYS_fallocate | libc::SYS_fadvise64 | libc::SYS_getdents64 | libc::SYS_fstat
        | libc::SYS_fstatfs | libc::SYS_fchmod | libc::SYS_fchown | libc::SYS_fchdir | libc::SYS_openat | libc::SYS_openat2
        | libc::SYS_newfstatat | libc::SYS_statx | libc::SYS_faccessat | libc::SYS_faccessat2 | libc::SYS_readlinkat
        | libc::SYS_fchmodat | libc::SYS_fchownat | libc::SYS_utimensat | libc::SYS_unlinkat | libc::SYS_mkdirat
        | libc::SYS_connect | libc::SYS_bind | libc::SYS_listen | libc::SYS_accept | libc::SYS_accept4 | libc::SYS_sendto
        | libc::SYS_recvfrom | libc::SYS_shutdown | libc::SYS_getsockname | libc::SYS_getpeername | libc::SYS_setsockopt
        | libc::SYS_getsockopt => &[0],
        libc::SYS_sendfile | libc::SYS_dup2 | libc::SYS_dup3 => &[0, 1],
        libc::SYS_copy_file_range | libc::SYS_renameat | libc::SYS_renameat2 | libc::SYS_linkat => &[0, 2],
        libc::SYS_symlinkat => &[1],
        _ => &[],
    }
}

/// ioctls that change the descriptor here and not at home, or name another
/// descriptor (FICLONE's source): demoted, forwarded.
const CHANGING_IOCTLS: &[u32] = &[
    libc::FIONBIO as u32,
    libc::FIOASYNC as u32,
    libc::FIOCLEX as u32,
    libc::FIONCLEX as u32,
    0x4004_9409, // FICLONE
    0x4020_940d, // FICLONERANGE
    0xc018_9436, // FIDEDUPERANGE
];

/// Calls that run in the process when every fd they name is local.
const HERE: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fadvise64,
    libc::SYS_getdents64,
    libc::SYS_fstat,
    libc::SYS_fstatfs,
    libc::SYS_sendfile,
    libc::SYS_copy_file_range,
];

/// A path argument at `addr` in the process (without its NUL); None if unreadable,
/// too long or not UTF-8.
pub(crate) fn read_path(mem: &dyn MemRead, addr: u64) -> Option<String> {
    let mut bytes = crate::syscalls::read_path(mem, 0, addr).ok()?;
    bytes.pop(); // the NUL
    String::from_utf8(bytes).ok()
}

fn empty_path(mem: &dyn MemRead, addr: u64) -> bool {
    let mut b = [1u8];
    mem.read(addr, &mut b).is_ok() && b[0] == 0
}

/// The process's owner as file systems see it: fsuid, fsgid and groups, from /proc.
pub(crate) fn owner_creds(pid: i32) -> Option<FsCreds> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ids = |key: &str| -> Option<Vec<u32>> {
        status.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.split_whitespace().filter_map(|x| x.parse().ok()).collect())
    };
    let uid = *ids("Uid:")?.get(3)?;
    let gid = *ids("Gid:")?.get(3)?;
    Some(FsCreds { uid, gid, groups: ids("Groups:")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What home says of a process's files: a descriptor duplicated within the process,
    /// or shared with a child, is not its own; one alone is, with its offset and flags;
    /// those under a shared directory are listed to be opened again.
    #[test]
    fn files_of_tells_own_descriptors_from_shared_ones() {
        use std::io::{Read, Seek};
        let d = tempfile::tempdir().unwrap();
        let (pa, pb) = (d.path().join("alone"), d.path().join("dup"));
        std::fs::write(&pa, b"0123456789").unwrap();
        std::fs::write(&pb, b"abcdef").unwrap();
        let mut alone = std::fs::File::open(&pa).unwrap();
        alone.read_exact(&mut [0u8; 4]).unwrap();
        let mut dup = std::fs::OpenOptions::new().read(true).write(true).open(&pb).unwrap();
        dup.seek(std::io::SeekFrom::Start(2)).unwrap();
        let dup2 = dup.try_clone().unwrap();
        let me = std::process::id() as i32;
        let dir = d.path().to_string_lossy().into_owned();
        let files = files_of(me, std::slice::from_ref(&dir));
        let (fa, fb, fb2) = (alone.as_raw_fd(), dup.as_raw_fd(), dup2.as_raw_fd());
        let own: Vec<&(i32, u64, i32)> = files.own.iter().filter(|(fd, _, _)| [fa, fb, fb2].contains(fd)).collect();
        assert_eq!(own.len(), 1, "{:?}", files.own);
        assert_eq!((own[0].0, own[0].1, own[0].2 & libc::O_ACCMODE), (fa, 4, libc::O_RDONLY));
        assert_eq!(files.open.iter().filter(|f| [fa, fb, fb2].contains(&f.fd)).map(|f| f.fd).collect::<Vec<_>>(), vec![fa]);
        assert!(files.open.iter().all(|f| f.path.starts_with(&dir)));
        assert_eq!(files.dirs, vec![dir]);
    }

    #[test]
    fn mounts_under_lists_nested_mount_points_only() {
        // / has /proc under it on any Linux.
        let under = mounts_under("/");
        assert!(under.iter().any(|p| p == "/proc"), "{under:?}");
        assert!(!under.iter().any(|p| p == "/"));
    }

    /// stat here: as the owner, beneath the directory; what leads out, or is missing,
    /// is left to home.
    #[test]
    fn stat_here_stays_beneath_and_gives_the_files_stat() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), vec![0u8; 777]).unwrap();
        std::os::unix::fs::symlink("f", d.path().join("rel")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("out")).unwrap();
        let mut g = Direct::none(std::process::id() as i32);
        g.dirs = vec![d.path().to_string_lossy().into_owned()];
        g.roots = vec![std::fs::File::open(d.path()).unwrap().into()];
        g.creds = Some(FsCreds { uid: herd_kernel::task::euid(), gid: herd_kernel::task::egid(), groups: vec![] });
        let size = |b: Vec<u8>| u64::from_ne_bytes(b[48..56].try_into().unwrap());
        assert_eq!(g.stat_here(0, Path::new("f"), false, None).map(size), Some(777));
        assert_eq!(g.stat_here(0, Path::new("rel"), false, None).map(size), Some(777), "followed, inside");
        let link = g.stat_here(0, Path::new("rel"), true, None).unwrap();
        assert_eq!(u32::from_ne_bytes(link[24..28].try_into().unwrap()) & libc::S_IFMT, libc::S_IFLNK, "lstat: the link");
        assert!(g.stat_here(0, Path::new("out"), false, None).is_none(), "a symlink out of the directory");
        assert!(g.stat_here(0, Path::new("missing"), false, None).is_none());
        assert!(g.stat_here(0, Path::new("../x"), false, None).is_none());
        let stx = g.stat_here(0, Path::new("f"), false, Some((libc::STATX_SIZE, 0))).unwrap();
        assert_eq!(u64::from_ne_bytes(stx[40..48].try_into().unwrap()), 777);
        // access and readlink, the same way.
        assert!(g.access_here(0, Path::new("f"), false, libc::R_OK));
        assert!(g.access_here(0, Path::new("rel"), false, libc::F_OK));
        assert!(!g.access_here(0, Path::new("out"), false, libc::F_OK), "out of the directory");
        assert!(!g.access_here(0, Path::new("missing"), false, libc::F_OK));
        assert_eq!(g.readlink_here(0, Path::new("rel")), Some(b"f".to_vec()));
        assert_eq!(g.readlink_here(0, Path::new("out")), Some(b"/etc/passwd".to_vec()), "the link itself is inside");
        assert_eq!(g.readlink_here(0, Path::new("f")), None, "not a symlink: home says EINVAL");
    }

    #[test]
    fn within_goes_by_components_and_avoids_nested_mounts() {
        let dirs = vec!["/home".to_string(), "/scratch/x".to_string()];
        assert_eq!(within("/home/u/f", &dirs, &[]), Some((0, PathBuf::from("u/f"))));
        assert_eq!(within("/home", &dirs, &[]), Some((0, PathBuf::from("."))));
        assert_eq!(within("/home2/f", &dirs, &[]), None);
        assert_eq!(within("/scratch/x/y", &dirs, &[]), Some((1, PathBuf::from("y"))));
        assert_eq!(within("/scratch/y", &dirs, &[]), None);
        assert_eq!(within("/home/u/mnt/f", &dirs, &["/home/u/mnt".into()]), None);
        assert_eq!(within("/home/u/mnt2/f", &dirs, &["/home/u/mnt".into()]), Some((0, PathBuf::from("u/mnt2/f"))));
    }

    /// The process's memory: strings at fixed addresses.
    struct Mem(Vec<(u64, Vec<u8>)>);
    impl MemRead for Mem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
            for (at, bytes) in &self.0 {
                if addr >= *at && addr + buf.len() as u64 <= at + bytes.len() as u64 {
                    let off = (addr - at) as usize;
                    buf.copy_from_slice(&bytes[off..off + buf.len()]);
                    return Ok(());
                }
            }
            Err(std::io::Error::from_raw_os_error(libc::EFAULT))
        }
    }

    const REL: u64 = 0x1000;
    const ABS_IN: u64 = 0x2000;
    const ABS_NESTED: u64 = 0x3000;
    const EMPTY: u64 = 0x4000;
    const ABS_OUT: u64 = 0x5000;

    fn mem() -> Mem {
        let page = |s: &str| {
            let mut v = s.as_bytes().to_vec();
            v.resize(4096, 0);
            v
        };
        Mem(vec![(REL, page("data/x")), (ABS_IN, page("/shared/a/b")), (ABS_NESTED, page("/shared/mnt/f")), (EMPTY, page("")), (ABS_OUT, page("/etc/hosts"))])
    }

    /// A guest with /shared shared (nested mount /shared/mnt), cwd /shared/u, fd 3 a
    /// file opened read-write, fd 4 a directory, fd 5 read-only.
    fn direct(d: &tempfile::TempDir) -> Direct {
        let mut g = Direct::none(1);
        g.dirs = vec!["/shared".into()];
        g.roots = vec![std::fs::File::open(d.path()).unwrap().into()];
        g.nested = vec!["/shared/mnt".into()];
        g.cwd = Some("/shared/u".into());
        let file = || -> OwnedFd { std::fs::File::open(d.path()).unwrap().into() };
        g.local.insert(3, Local { file: file(), installed: true, cloexec: false, dir: false, read_only: false, copy: false });
        g.local.insert(4, Local { file: file(), installed: true, cloexec: false, dir: true, read_only: true, copy: false });
        g.local.insert(5, Local { file: file(), installed: false, cloexec: false, dir: false, read_only: true, copy: false });
        g
    }

    fn notif(nr: i64, args: [u64; 6]) -> Notif {
        Notif { id: 1, pid: 1, nr: nr as i32, arch: 0, ip: 0, args }
    }

    /// A copy for mappings (no shared directory at all): private mappings run here,
    /// anything else demotes it first; close is home's then the process's; it has no
    /// offset of home's.
    #[test]
    fn plans_for_a_copy_for_mappings() {
        let d = tempfile::tempdir().unwrap();
        let mut g = Direct::none(1);
        g.local.insert(6, Local { file: std::fs::File::open(d.path()).unwrap().into(), installed: true, cloexec: true, dir: false, read_only: true, copy: true });
        let m = mem();
        let plan = |nr: i64, args: [u64; 6]| g.plan(&notif(nr, args), &m);
        let (private, shared) = (libc::MAP_PRIVATE as u64, libc::MAP_SHARED as u64);
        assert_eq!(plan(libc::SYS_mmap, [0, 4096, 1, private, 6, 0]), Plan::Here);
        assert_eq!(plan(libc::SYS_mmap, [0, 4096, 3, private, 6, 4096]), Plan::Here, "written privately: still the copy's pages");
        assert_eq!(plan(libc::SYS_mmap, [0, 4096, 1, shared, 6, 0]), Plan::Demote(vec![6]), "a shared mapping is home's file's");
        assert_eq!(plan(libc::SYS_read, [6, 0, 10, 0, 0, 0]), Plan::Demote(vec![6]));
        assert_eq!(plan(libc::SYS_fstat, [6, 0, 0, 0, 0, 0]), Plan::Demote(vec![6]));
        assert_eq!(plan(libc::SYS_fcntl, [6, libc::F_GETFL as u64, 0, 0, 0, 0]), Plan::Demote(vec![6]));
        assert_eq!(plan(libc::SYS_dup2, [8, 6, 0, 0, 0, 0]), Plan::Demote(vec![6]), "replacing the copy");
        assert_eq!(plan(libc::SYS_close, [6, 0, 0, 0, 0, 0]), Plan::Close(vec![6]));
        assert_eq!(plan(libc::SYS_read, [7, 0, 10, 0, 0, 0]), Plan::Usual);
        assert_eq!(plan(libc::SYS_stat, [ABS_IN, 0, 0, 0, 0, 0]), Plan::Usual, "no shared directory");
        assert_eq!(g.offsets(None), vec![]);
        assert_eq!(g.offsets(Some(&[6])), vec![]);
    }

    /// Home's side: a file open for reading is named by its path, size and hash; one
    /// open for writing only, deleted or not a regular file is not.
    #[test]
    fn identify_names_readable_regular_files_only() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("lib.so");
        std::fs::File::create(&path).unwrap().write_all(b"contents of a library").unwrap();
        let me = std::process::id() as i32;
        let mut hashes = FileHashes::ephemeral();
        let read = std::fs::File::open(&path).unwrap();
        let id = identify(me, read.as_raw_fd(), &mut hashes).expect("a readable regular file");
        assert_eq!(id.path, path.to_str().unwrap());
        assert_eq!(id.size, 21);
        assert_eq!(id.hash, *blake3::hash(b"contents of a library").as_bytes());
        let write_only = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert_eq!(identify(me, write_only.as_raw_fd(), &mut hashes), None, "open for writing only");
        let dir = std::fs::File::open(d.path()).unwrap();
        assert_eq!(identify(me, dir.as_raw_fd(), &mut hashes), None, "a directory");
        std::fs::rename(&path, d.path().join("moved.so")).unwrap();
        assert_eq!(identify(me, read.as_raw_fd(), &mut hashes).map(|i| i.path), Some(d.path().join("moved.so").to_str().unwrap().to_string()), "renamed: its new path");
        std::fs::remove_file(d.path().join("moved.so")).unwrap();
        assert_eq!(identify(me, read.as_raw_fd(), &mut hashes), None, "deleted");
        assert_eq!(identify(me, 9999, &mut hashes), None, "no such descriptor");
    }

    #[test]
    fn plans_for_calls_on_local_descriptors() {
        let d = tempfile::tempdir().unwrap();
        let g = direct(&d);
        let m = mem();
        let plan = |nr: i64, args: [u64; 6]| g.plan(&notif(nr, args), &m);
        assert_eq!(plan(libc::SYS_read, [3, 0, 10, 0, 0, 0]), Plan::Here);
        assert_eq!(plan(libc::SYS_read, [7, 0, 10, 0, 0, 0]), Plan::Usual, "not a local fd");
        assert_eq!(plan(libc::SYS_getdents64, [4, 0, 10, 0, 0, 0]), Plan::Here);
        assert_eq!(plan(libc::SYS_copy_file_range, [3, 0, 5, 0, 9, 0]), Plan::Here, "both local");
        assert_eq!(plan(libc::SYS_copy_file_range, [3, 0, 7, 0, 9, 0]), Plan::Demote(vec![3]), "one forwarded");
        assert_eq!(plan(libc::SYS_fcntl, [3, libc::F_GETFL as u64, 0, 0, 0, 0]), Plan::Here);
        assert_eq!(plan(libc::SYS_fcntl, [3, libc::F_SETFL as u64, 0, 0, 0, 0]), Plan::Demote(vec![3]));
        assert_eq!(plan(libc::SYS_fcntl, [3, libc::F_DUPFD as u64, 0, 0, 0, 0]), Plan::Demote(vec![3]));
        assert_eq!(plan(libc::SYS_ioctl, [3, libc::TCGETS, 0, 0, 0, 0]), Plan::Here);
        assert_eq!(plan(libc::SYS_ioctl, [3, libc::FIONBIO, 0, 0, 0, 0]), Plan::Demote(vec![3]));
        assert_eq!(plan(libc::SYS_dup2, [3, 9, 0, 0, 0, 0]), Plan::Demote(vec![3]));
        assert_eq!(plan(libc::SYS_dup2, [8, 5, 0, 0, 0, 0]), Plan::Demote(vec![5]), "replacing a local fd");
        assert_eq!(plan(libc::SYS_fchdir, [4, 0, 0, 0, 0, 0]), Plan::Demote(vec![4]));
        assert_eq!(plan(libc::SYS_openat, [4, REL, 0, 0, 0, 0]), Plan::Demote(vec![4]), "relative to a local directory");
        assert_eq!(plan(libc::SYS_close, [3, 0, 0, 0, 0, 0]), Plan::Close(vec![3]));
        assert_eq!(plan(libc::SYS_close, [9, 0, 0, 0, 0, 0]), Plan::Usual);
        let mut closed = match plan(libc::SYS_close_range, [4, 100, 0, 0, 0, 0]) {
            Plan::Close(v) => v,
            other => panic!("{other:?}"),
        };
        closed.sort();
        assert_eq!(closed, [4, 5]);
        assert_eq!(plan(libc::SYS_close_range, [4, 100, CLOSE_RANGE_CLOEXEC, 0, 0, 0]), Plan::Close(vec![]));
        assert_eq!(plan(libc::SYS_close_range, [10, 100, 0, 0, 0, 0]), Plan::Usual);
        // fstat by newfstatat/statx with an empty path; a path relative to it is not.
        assert_eq!(plan(libc::SYS_newfstatat, [3, EMPTY, 0, AT_EMPTY_PATH, 0, 0]), Plan::Here);
        assert_eq!(plan(libc::SYS_newfstatat, [3, REL, 0, 0, 0, 0]), Plan::Demote(vec![3]));
        assert_eq!(plan(libc::SYS_newfstatat, [4, EMPTY, 0, AT_EMPTY_PATH, 0, 0]), Plan::Demote(vec![4]), "a directory's");
        assert_eq!(plan(libc::SYS_statx, [3, EMPTY, AT_EMPTY_PATH, 0x7ff, 0, 0]), Plan::Here);
        // mmap: private, or shared of a read-only file; never shared writable.
        let (private, shared) = (libc::MAP_PRIVATE as u64, libc::MAP_SHARED as u64);
        assert_eq!(plan(libc::SYS_mmap, [0, 4096, 1, private, 3, 0]), Plan::Here);
        assert_eq!(plan(libc::SYS_mmap, [0, 4096, 1, shared, 5, 0]), Plan::Here);
        assert_eq!(plan(libc::SYS_mmap, [0, 4096, 3, shared, 3, 0]), Plan::Demote(vec![3]));
        assert_eq!(plan(libc::SYS_mmap, [0, 4096, 1, private, 9, 0]), Plan::Usual);
    }

    /// unlink, rmdir, mkdir, rename of names in one shared directory: planned as changes
    /// made here; what leaves the directory, or ends in `/`, `.` or `..`, is home's.
    #[test]
    fn plans_for_name_changes() {
        let d = tempfile::tempdir().unwrap();
        let g = direct(&d);
        let page = |s: &str| {
            let mut v = s.as_bytes().to_vec();
            v.resize(4096, 0);
            v
        };
        let (a, b, slash, dot, out, rel) = (0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x6000);
        let m = Mem(vec![
            (a, page("/shared/a")),
            (b, page("/shared/x/b")),
            (slash, page("/shared/a/")),
            (dot, page("/shared/a/..")),
            (out, page("/etc/b")),
            (rel, page("c")),
        ]);
        let plan = |nr: i64, args: [u64; 6]| g.plan(&notif(nr, args), &m);
        let at = libc::AT_FDCWD as u64;
        let change = |change| Plan::Change { dir: 0, change };
        assert_eq!(plan(libc::SYS_unlink, [a, 0, 0, 0, 0, 0]), change(Change::Unlink { rel: "a".into(), dir: false }));
        assert_eq!(plan(libc::SYS_rmdir, [b, 0, 0, 0, 0, 0]), change(Change::Unlink { rel: "x/b".into(), dir: true }));
        assert_eq!(plan(libc::SYS_unlinkat, [at, rel, libc::AT_REMOVEDIR as u64, 0, 0, 0]), change(Change::Unlink { rel: "u/c".into(), dir: true }));
        assert_eq!(plan(libc::SYS_unlinkat, [at, rel, 0x8000, 0, 0, 0]), Plan::Usual, "a flag it does not know");
        assert_eq!(plan(libc::SYS_mkdir, [a, 0o40755, 0, 0, 0, 0]), change(Change::Mkdir { rel: "a".into(), mode: 0o755 }));
        assert_eq!(plan(libc::SYS_mkdirat, [at, b, 0o700, 0, 0, 0]), change(Change::Mkdir { rel: "x/b".into(), mode: 0o700 }));
        assert_eq!(plan(libc::SYS_rename, [a, b, 0, 0, 0, 0]), change(Change::Rename { from: "a".into(), to: "x/b".into(), flags: 0 }));
        let noreplace = u64::from(libc::RENAME_NOREPLACE);
        assert_eq!(
            plan(libc::SYS_renameat2, [at, a, at, rel, noreplace, 0]),
            change(Change::Rename { from: "a".into(), to: "u/c".into(), flags: libc::RENAME_NOREPLACE })
        );
        assert_eq!(plan(libc::SYS_renameat2, [at, a, at, b, u64::from(libc::RENAME_WHITEOUT), 0]), Plan::Usual, "whiteouts are home's");
        assert_eq!(plan(libc::SYS_rename, [a, out, 0, 0, 0, 0]), Plan::Usual, "out of the directory");
        assert_eq!(plan(libc::SYS_unlink, [out, 0, 0, 0, 0, 0]), Plan::Usual);
        assert_eq!(plan(libc::SYS_rmdir, [slash, 0, 0, 0, 0, 0]), Plan::Usual, "a trailing slash");
        assert_eq!(plan(libc::SYS_rmdir, [dot, 0, 0, 0, 0, 0]), Plan::Usual, "..");
        assert_eq!(plan(libc::SYS_unlinkat, [4, rel, 0, 0, 0, 0]), Plan::Demote(vec![4]), "relative to a local directory");
    }

    /// The changes made here: as the owner, beneath the directory, with the process's
    /// umask, answering what the call answers; what cannot be reached is home's.
    #[test]
    fn names_change_here_beneath_the_directory() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/tmp", d.path().join("out")).unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        let mut g = Direct::none(std::process::id() as i32);
        g.dirs = vec![d.path().to_string_lossy().into_owned()];
        g.roots = vec![std::fs::File::open(d.path()).unwrap().into()];
        g.creds = Some(FsCreds { uid: herd_kernel::task::euid(), gid: herd_kernel::task::egid(), groups: vec![] });
        g.cwd = Some(format!("{}/a/deep", g.dirs[0]));
        let umask = procfs::process::Process::myself().unwrap().status().unwrap().umask.unwrap();
        let mkdir = |rel: &str, mode| Change::Mkdir { rel: rel.into(), mode };
        assert_eq!(g.change_here(0, &mkdir("a", 0o777)), Some(0));
        assert_eq!(std::fs::metadata(d.path().join("a")).unwrap().permissions().mode() & 0o7777, 0o777 & !umask, "the umask applies");
        assert_eq!(g.change_here(0, &mkdir("a", 0o777)), Some(-i64::from(libc::EEXIST)));
        g.umask(0o027);
        assert_eq!(g.change_here(0, &mkdir("a/b", 0o777)), Some(0));
        assert_eq!(std::fs::metadata(d.path().join("a/b")).unwrap().permissions().mode() & 0o7777, 0o750, "home's umask, as followed");
        assert_eq!(g.change_here(0, &Change::Unlink { rel: "a".into(), dir: true }), Some(-i64::from(libc::ENOTEMPTY)));
        assert_eq!(g.change_here(0, &Change::Unlink { rel: "a/b".into(), dir: false }), Some(-i64::from(libc::EISDIR)));
        assert_eq!(g.change_here(0, &Change::Unlink { rel: "a/b".into(), dir: true }), Some(0));
        let rename = |from: &str, to: &str, flags| Change::Rename { from: from.into(), to: to.into(), flags };
        assert_eq!(g.change_here(0, &rename("a", "c", 0)), Some(0));
        assert!(d.path().join("c").is_dir() && !d.path().join("a").exists());
        assert_eq!(g.cwd, None, "the working directory was under the renamed one");
        assert_eq!(g.change_here(0, &rename("f", "c", libc::RENAME_NOREPLACE)), Some(-i64::from(libc::EEXIST)));
        assert_eq!(g.change_here(0, &Change::Unlink { rel: "f".into(), dir: false }), Some(0));
        assert_eq!(g.change_here(0, &Change::Unlink { rel: "f".into(), dir: false }), Some(-i64::from(libc::ENOENT)));
        // A parent that leads out of the directory, or is not there: home makes it.
        assert_eq!(g.change_here(0, &mkdir("out/herd-test-not-made", 0o700)), None);
        assert!(!Path::new("/tmp/herd-test-not-made").exists());
        assert_eq!(g.change_here(0, &mkdir("nope/x", 0o700)), None);
    }

    #[test]
    fn plans_for_opens_by_path() {
        let d = tempfile::tempdir().unwrap();
        let mut g = direct(&d);
        let m = mem();
        let at = libc::AT_FDCWD as u64;
        let rdonly = libc::O_RDONLY as u64;
        let open = |g: &Direct, args: [u64; 6]| g.plan(&notif(libc::SYS_openat, args), &m);
        assert_eq!(open(&g, [at, REL, rdonly, 0, 0, 0]), Plan::Open { dir: 0, rel: "u/data/x".into(), flags: 0 });
        assert_eq!(open(&g, [at, ABS_IN, libc::O_WRONLY as u64, 0, 0, 0]), Plan::Open { dir: 0, rel: "a/b".into(), flags: libc::O_WRONLY });
        assert_eq!(open(&g, [at, ABS_NESTED, rdonly, 0, 0, 0]), Plan::Usual, "another mount inside");
        assert_eq!(open(&g, [at, ABS_OUT, rdonly, 0, 0, 0]), Plan::Usual, "not shared");
        assert_eq!(open(&g, [at, ABS_IN, O_PATH as u64, 0, 0, 0]), Plan::Usual, "O_PATH");
        assert_eq!(open(&g, [at, 0xdead_0000, rdonly, 0, 0, 0]), Plan::Usual, "unreadable path");
        assert_eq!(g.plan(&notif(libc::SYS_open, [ABS_IN, rdonly, 0, 0, 0, 0]), &m), Plan::Open { dir: 0, rel: "a/b".into(), flags: 0 });
        let creat = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
        assert_eq!(g.plan(&notif(libc::SYS_creat, [REL, 0o644, 0, 0, 0, 0]), &m), Plan::Open { dir: 0, rel: "u/data/x".into(), flags: creat });
        // The working directory follows chdir; lost by fchdir.
        g.chdir(Some("../v".into()));
        assert_eq!(open(&g, [at, REL, rdonly, 0, 0, 0]), Plan::Open { dir: 0, rel: "u/../v/data/x".into(), flags: 0 });
        g.chdir(Some("/etc".into()));
        assert_eq!(open(&g, [at, REL, rdonly, 0, 0, 0]), Plan::Usual);
        g.chdir(Some("/shared".into()));
        assert_eq!(open(&g, [at, REL, rdonly, 0, 0, 0]), Plan::Open { dir: 0, rel: "data/x".into(), flags: 0 });
        g.chdir(None);
        assert_eq!(open(&g, [at, REL, rdonly, 0, 0, 0]), Plan::Usual);
        assert_eq!(open(&g, [at, ABS_IN, rdonly, 0, 0, 0]), Plan::Open { dir: 0, rel: "a/b".into(), flags: 0 });
        // stat family, by path.
        let stat = |g: &Direct, nr: i64, args: [u64; 6]| g.plan(&notif(nr, args), &m);
        g.chdir(Some("/shared/u".into()));
        assert_eq!(stat(&g, libc::SYS_stat, [ABS_IN, 0x9000, 0, 0, 0, 0]), Plan::Stat { dir: 0, rel: "a/b".into(), nofollow: false, buf: 0x9000, statx: None });
        assert_eq!(stat(&g, libc::SYS_lstat, [REL, 0x9000, 0, 0, 0, 0]), Plan::Stat { dir: 0, rel: "u/data/x".into(), nofollow: true, buf: 0x9000, statx: None });
        let nofollow = libc::AT_SYMLINK_NOFOLLOW as u64;
        assert_eq!(stat(&g, libc::SYS_newfstatat, [at, ABS_IN, 0x9000, nofollow, 0, 0]), Plan::Stat { dir: 0, rel: "a/b".into(), nofollow: true, buf: 0x9000, statx: None });
        assert_eq!(
            stat(&g, libc::SYS_statx, [at, ABS_IN, 0, 0x7ff, 0x9000, 0]),
            Plan::Stat { dir: 0, rel: "a/b".into(), nofollow: false, buf: 0x9000, statx: Some((0x7ff, 0)) }
        );
        assert_eq!(stat(&g, libc::SYS_stat, [ABS_OUT, 0x9000, 0, 0, 0, 0]), Plan::Usual);
        assert_eq!(stat(&g, libc::SYS_stat, [ABS_NESTED, 0x9000, 0, 0, 0, 0]), Plan::Usual);
        assert_eq!(stat(&g, libc::SYS_newfstatat, [at, EMPTY, 0x9000, AT_EMPTY_PATH, 0, 0]), Plan::Usual, "the cwd: home's");
        assert_eq!(stat(&g, libc::SYS_newfstatat, [7, REL, 0x9000, 0, 0, 0]), Plan::Usual, "relative to a forwarded fd");
        assert_eq!(stat(&g, libc::SYS_access, [ABS_IN, 4, 0, 0, 0, 0]), Plan::Access { dir: 0, rel: "a/b".into(), nofollow: false, mode: 4 });
        assert_eq!(stat(&g, libc::SYS_faccessat2, [at, REL, 2, nofollow, 0, 0]), Plan::Access { dir: 0, rel: "u/data/x".into(), nofollow: true, mode: 2 });
        assert_eq!(stat(&g, libc::SYS_faccessat2, [at, REL, 2, 0x8000_0000, 0, 0]), Plan::Usual, "flags not known");
        assert_eq!(stat(&g, libc::SYS_readlink, [ABS_IN, 0x9000, 64, 0, 0, 0]), Plan::Readlink { dir: 0, rel: "a/b".into(), buf: 0x9000, len: 64 });
        assert_eq!(stat(&g, libc::SYS_readlinkat, [at, ABS_OUT, 0x9000, 64, 0, 0]), Plan::Usual);
        // Nothing shared: every call as usual.
        let none = Direct::none(1);
        assert_eq!(none.plan(&notif(libc::SYS_openat, [at, ABS_IN, rdonly, 0, 0, 0]), &m), Plan::Usual);
    }
}
