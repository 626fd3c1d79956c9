//! openMosix's `/proc/hpc`, as a FUSE file system herdd mounts (`hpc`, default
//! `/run/herd/hpc`), so that the scripts of openMosix users read and steer herd as they did:
//!
//! ```text
//! admin/    block bring expel lstay quiet speed stay   read: the node's flags, its speed;
//!                                                      write 1 or 0 (a speed): `herd ctl`
//! nodes/N/  cpus freemem load mem speed status         every node, as `herd nodes`
//! procs/P/  cantmove goto lock nmigs where             every migratable process of this home;
//!                                                      write a node (or home, balance) to goto
//!                                                      to move it, 1 or 0 to lock
//! ```
//!
//! openMosix had the per-process files in `/proc/PID/` (`where`, `nmigs`, `lock`,
//! `cantmove`, `goto`); here they are under `procs/PID/`. Permissions are the control
//! socket's: everyone reads; `admin/` is written by root (and herdd's own user); a
//! process's `goto` and `lock` by its owner or root (the files belong to them, and the
//! mount checks modes: `default_permissions`; writes are checked here again). A move
//! written to `goto` starts at once and goes on after the write returns, as openMosix's
//! did: `where` shows when it is done, and herdd's log says if it failed.
//!
//! The tree ([`Tree`]) is separate from FUSE and from herdd ([`Source`]): unit-tested
//! with a fake source.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};

use crate::control::{ControlError, CtlOp, ErrorKind, NodeRow, NodeStatus, ProcessRow, Response};
use crate::daemon::Shared;

/// What the tree shows and does: herdd ([`Daemon`]) or a fake in tests.
pub trait Source: Send + Sync + 'static {
    fn status(&self) -> NodeStatus;
    /// Every node, this one included.
    fn nodes(&self) -> Vec<NodeRow>;
    /// The migratable processes of this home.
    fn procs(&self) -> Vec<ProcessRow>;
    /// One of them (a lookup or a read of its files asks for no other).
    fn proc(&self, pid: i32) -> Option<ProcessRow>;
    /// Who may write `admin/` besides root: herdd's own user.
    fn admin_uid(&self) -> u32;
    fn ctl(&self, op: CtlOp) -> Result<(), ControlError>;
    /// Starts moving `pid` to `target` for `uid`; the move goes on after this returns.
    fn goto(&self, pid: i32, target: &str, uid: u32) -> Result<(), ControlError>;
    fn lock(&self, pid: i32, lock: bool, uid: u32) -> Result<(), ControlError>;
}

const ADMIN: [&str; 7] = ["block", "bring", "expel", "lstay", "quiet", "speed", "stay"];
const NODE_FILES: [&str; 6] = ["cpus", "freemem", "load", "mem", "speed", "status"];
const PROC_FILES: [&str; 5] = ["cantmove", "goto", "lock", "nmigs", "where"];

/// A file or directory of the tree.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Entry {
    Root,
    Admin,
    Nodes,
    Procs,
    AdminFile(&'static str),
    Node(String),
    NodeFile(String, &'static str),
    Proc(i32),
    ProcFile(i32, &'static str),
}

impl Entry {
    fn is_dir(&self) -> bool {
        matches!(self, Entry::Root | Entry::Admin | Entry::Nodes | Entry::Procs | Entry::Node(_) | Entry::Proc(_))
    }
}

/// Inode numbers: given once per entry, never reused (an entry that comes back, a node
/// up again, gets its old number). The root is 1, as FUSE wants.
#[derive(Default)]
struct Inodes {
    by_entry: HashMap<Entry, u64>,
    entries: Vec<Entry>,
}

impl Inodes {
    fn ino(&mut self, e: &Entry) -> u64 {
        if self.entries.is_empty() {
            self.entries.push(Entry::Root);
            self.by_entry.insert(Entry::Root, 1);
        }
        if let Some(i) = self.by_entry.get(e) {
            return *i;
        }
        self.entries.push(e.clone());
        let i = self.entries.len() as u64;
        self.by_entry.insert(e.clone(), i);
        i
    }

    fn entry(&self, ino: u64) -> Option<Entry> {
        match ino {
            1 => Some(Entry::Root),
            i => self.entries.get(i as usize - 1).cloned(),
        }
    }
}

/// The tree over a [`Source`].
pub struct Tree<S> {
    source: S,
    inodes: Mutex<Inodes>,
    born: SystemTime,
}

/// Why a write failed, as an errno.
fn errno_of(e: &ControlError) -> i32 {
    match e.kind {
        ErrorKind::PermissionDenied => libc::EACCES,
        ErrorKind::NoSuchProcess => libc::ESRCH,
        ErrorKind::Busy => libc::EBUSY,
        _ => libc::EINVAL,
    }
}

/// `1` or `0`.
fn flag(text: &str) -> Result<bool, i32> {
    match text {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(libc::EINVAL),
    }
}

impl<S: Source> Tree<S> {
    pub fn new(source: S) -> Self {
        Tree { source, inodes: Mutex::default(), born: SystemTime::now() }
    }

    fn ino(&self, e: &Entry) -> u64 {
        self.inodes.lock().expect("inodes").ino(e)
    }

    fn entry(&self, ino: u64) -> Option<Entry> {
        self.inodes.lock().expect("inodes").entry(ino)
    }

    fn proc_row(&self, pid: i32) -> Option<ProcessRow> {
        self.source.proc(pid)
    }

    fn node_row(&self, name: &str) -> Option<NodeRow> {
        self.source.nodes().into_iter().find(|n| n.name == name)
    }

    /// Whether `e` is there now (nodes and processes come and go).
    fn exists(&self, e: &Entry) -> bool {
        match e {
            Entry::Node(n) | Entry::NodeFile(n, _) => self.node_row(n).is_some(),
            Entry::Proc(p) | Entry::ProcFile(p, _) => self.proc_row(*p).is_some(),
            _ => true,
        }
    }

    /// A directory's entries, by name.
    fn children(&self, e: &Entry) -> Vec<(String, Entry)> {
        match e {
            Entry::Root => vec![("admin".into(), Entry::Admin), ("nodes".into(), Entry::Nodes), ("procs".into(), Entry::Procs)],
            Entry::Admin => ADMIN.iter().map(|f| (f.to_string(), Entry::AdminFile(f))).collect(),
            Entry::Nodes => self.source.nodes().into_iter().map(|n| (n.name.clone(), Entry::Node(n.name))).collect(),
            Entry::Procs => self.source.procs().into_iter().map(|r| (r.pid.to_string(), Entry::Proc(r.pid))).collect(),
            Entry::Node(n) => NODE_FILES.iter().map(|f| (f.to_string(), Entry::NodeFile(n.clone(), f))).collect(),
            Entry::Proc(p) => PROC_FILES.iter().map(|f| (f.to_string(), Entry::ProcFile(*p, f))).collect(),
            _ => Vec::new(),
        }
    }

    fn child(&self, parent: &Entry, name: &str) -> Option<Entry> {
        // Straight from the name where it can be, not by listing every process.
        let e = match parent {
            Entry::Proc(p) => PROC_FILES.iter().find(|f| **f == name).map(|f| Entry::ProcFile(*p, f))?,
            Entry::Procs => Entry::Proc(name.parse().ok().filter(|p: &i32| p.to_string() == name)?),
            Entry::Nodes => Entry::Node(name.to_string()),
            _ => self.children(parent).into_iter().find(|(n, _)| n == name)?.1,
        };
        self.exists(&e).then_some(e)
    }

    /// A file's text (None: not a file, or gone).
    fn content(&self, e: &Entry) -> Option<String> {
        let line = |s: String| Some(s + "\n");
        match e {
            Entry::AdminFile(f) => {
                let s = self.source.status();
                match *f {
                    "block" => line(u8::from(s.blocked).to_string()),
                    "quiet" => line(u8::from(s.quiet).to_string()),
                    "stay" => line(u8::from(s.stay).to_string()),
                    "lstay" => line(u8::from(s.lstay).to_string()),
                    "speed" => line(self.source.nodes().iter().find(|n| n.is_self).map_or(0, |n| n.speed).to_string()),
                    _ => line("0".into()), // expel, bring: acts, not states
                }
            }
            Entry::NodeFile(n, f) => {
                let n = self.node_row(n)?;
                match *f {
                    "cpus" => line(n.cpus.to_string()),
                    "freemem" => line(n.mem_free.to_string()),
                    "load" => line(format!("{:.2}", n.load)),
                    "mem" => line(n.mem_total.to_string()),
                    "speed" => line(n.speed.to_string()),
                    _ => {
                        let s = n.status;
                        let flags: Vec<&str> = [(s.blocked, "block"), (s.quiet, "quiet"), (s.stay, "stay"), (s.lstay, "lstay")]
                            .into_iter()
                            .filter_map(|(on, name)| on.then_some(name))
                            .collect();
                        line(if flags.is_empty() { n.state } else { format!("{} {}", n.state, flags.join(",")) })
                    }
                }
            }
            Entry::ProcFile(p, f) => {
                let r = self.proc_row(*p)?;
                match *f {
                    "where" | "goto" => line(r.where_),
                    "nmigs" => line(r.nmigs.to_string()),
                    "lock" => line(u8::from(r.lock).to_string()),
                    _ => Some(r.cantmove.iter().map(|w| format!("{w}\n")).collect()),
                }
            }
            _ => None,
        }
    }

    /// Who owns `e` and its mode bits.
    fn owner_and_mode(&self, e: &Entry) -> (u32, u16) {
        match e {
            e if e.is_dir() => (0, 0o555),
            Entry::AdminFile(_) => (0, 0o644),
            Entry::ProcFile(p, f) => {
                let uid = self.proc_row(*p).map_or(0, |r| r.uid);
                (uid, if matches!(*f, "goto" | "lock") { 0o644 } else { 0o444 })
            }
            _ => (0, 0o444),
        }
    }

    fn attr(&self, e: &Entry, ino: u64) -> FileAttr {
        let (uid, perm) = self.owner_and_mode(e);
        let dir = e.is_dir();
        let size = if dir { 0 } else { self.content(e).map_or(0, |c| c.len() as u64) };
        let now = SystemTime::now();
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: self.born,
            kind: if dir { FileType::Directory } else { FileType::RegularFile },
            perm,
            nlink: if dir { 2 } else { 1 },
            uid,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// A write of `text` to `e` by `uid`: an act (errno when refused).
    fn write(&self, e: &Entry, uid: u32, text: &str) -> Result<(), i32> {
        let text = text.trim();
        match e {
            Entry::AdminFile(f) => {
                if uid != 0 && uid != self.source.admin_uid() {
                    return Err(libc::EACCES);
                }
                let op = match *f {
                    "block" => if flag(text)? { CtlOp::Block } else { CtlOp::NoBlock },
                    "quiet" => if flag(text)? { CtlOp::Quiet } else { CtlOp::NoQuiet },
                    "stay" => if flag(text)? { CtlOp::Stay } else { CtlOp::NoStay },
                    "lstay" => if flag(text)? { CtlOp::LStay } else { CtlOp::NoLStay },
                    "expel" | "bring" => {
                        if !flag(text)? {
                            return Ok(());
                        }
                        if *f == "expel" { CtlOp::Expel } else { CtlOp::Bring }
                    }
                    _ => CtlOp::Speed(text.parse().ok().filter(|s| *s <= 10_000_000).ok_or(libc::EINVAL)?),
                };
                self.source.ctl(op).map_err(|e| errno_of(&e))
            }
            Entry::ProcFile(p, f) => {
                let row = self.proc_row(*p).ok_or(libc::ESRCH)?;
                if uid != 0 && uid != row.uid {
                    return Err(libc::EACCES);
                }
                match *f {
                    "goto" => {
                        let known = matches!(text, "home" | "balance") || self.source.nodes().iter().any(|n| n.name == text);
                        if !known {
                            return Err(libc::EINVAL);
                        }
                        self.source.goto(*p, text, uid).map_err(|e| errno_of(&e))
                    }
                    "lock" => self.source.lock(*p, flag(text)?, uid).map_err(|e| errno_of(&e)),
                    _ => Err(libc::EACCES),
                }
            }
            _ => Err(libc::EACCES),
        }
    }
}

/// How long the kernel may keep what it was told (figures change every second).
const TTL: Duration = Duration::from_millis(500);

impl<S: Source> Filesystem for Tree<S> {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.entry(parent.0).zip(name.to_str()).and_then(|(p, name)| self.child(&p, name));
        match found {
            Some(e) => {
                let ino = self.ino(&e);
                reply.entry(&TTL, &self.attr(&e, ino), Generation(0));
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.entry(ino.0).filter(|e| self.exists(e)) {
            Some(e) => reply.attr(&TTL, &self.attr(&e, ino.0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // `echo 1 > admin/block` truncates first: nothing to truncate, nothing changes.
        self.getattr(_req, ino, None, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.entry(ino.0).filter(|e| self.exists(e)) {
            // Read fresh at every read: no page cache.
            Some(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            None => reply.error(Errno::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.entry(ino.0).and_then(|e| self.content(&e)) {
            Some(text) => {
                let bytes = text.as_bytes();
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(size as usize).min(bytes.len());
                reply.data(&bytes[start..end]);
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(e) = self.entry(ino.0) else { return reply.error(Errno::ENOENT) };
        let Ok(text) = std::str::from_utf8(data) else { return reply.error(Errno::from_i32(libc::EINVAL)) };
        match self.write(&e, req.uid(), text) {
            Ok(()) => reply.written(data.len() as u32),
            Err(errno) => reply.error(Errno::from_i32(errno)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(dir) = self.entry(ino.0).filter(|e| e.is_dir() && self.exists(e)) else { return reply.error(Errno::ENOENT) };
        let mut all = vec![(".".to_string(), dir.clone()), ("..".to_string(), Entry::Root)];
        all.extend(self.children(&dir));
        for (i, (name, e)) in all.into_iter().enumerate().skip(offset as usize) {
            let kind = if e.is_dir() { FileType::Directory } else { FileType::RegularFile };
            if reply.add(INodeNo(self.ino(&e)), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// herdd as the tree's source.
pub struct Daemon {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
}

impl Source for Daemon {
    fn status(&self) -> NodeStatus {
        self.shared.snapshot.borrow().status
    }

    fn nodes(&self) -> Vec<NodeRow> {
        self.shared.rows()
    }

    fn procs(&self) -> Vec<ProcessRow> {
        crate::migrate::rows(&self.shared)
    }

    fn proc(&self, pid: i32) -> Option<ProcessRow> {
        crate::migrate::row(&self.shared, pid)
    }

    fn admin_uid(&self) -> u32 {
        self.shared.euid
    }

    fn ctl(&self, op: CtlOp) -> Result<(), ControlError> {
        match self.runtime.block_on(crate::server::ctl(&self.shared, op)) {
            Response::Error(e) => Err(e),
            _ => Ok(()),
        }
    }

    fn goto(&self, pid: i32, target: &str, uid: u32) -> Result<(), ControlError> {
        let shared = self.shared.clone();
        let to = crate::migrate::Target::parse(target, &shared.config.name);
        let target = target.to_string();
        self.runtime.spawn(async move {
            match crate::migrate::migrate(&shared, pid, to, None, uid).await {
                Ok(m) => tracing::info!(pid, "hpc goto {target}: moved to {}", m.node),
                Err(e) => tracing::warn!(pid, "hpc goto {target}: {e}"),
            }
        });
        Ok(())
    }

    fn lock(&self, pid: i32, lock: bool, uid: u32) -> Result<(), ControlError> {
        crate::migrate::set_lock(&self.shared, pid, lock, uid)
    }
}

/// Mounts the tree at `path` (made if missing; the dead mount of an earlier herdd that was
/// killed is detached first). The file system lives as long as the returned session.
/// Something live mounted there already (another herdd's view) is an error: it is left.
pub fn mount(shared: Arc<Shared>, path: &Path) -> std::io::Result<fuser::BackgroundSession> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        // A killed herdd's mount: "transport endpoint is not connected".
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(path)?,
        Err(e) => return Err(e),
        Ok(m) => {
            let parent = path.parent().map(std::fs::metadata).transpose()?;
            if parent.is_some_and(|p| p.dev() != m.dev()) {
                return Err(std::io::Error::other("something is mounted there already (another herdd's view?); set `hpc` to another path"));
            }
        }
    }
    let source = Daemon { shared, runtime: tokio::runtime::Handle::current() };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("herd".into()),
        fuser::MountOption::Subtype("hpc".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoExec,
    ];
    // Every local user reads it, as the control socket.
    config.acl = fuser::SessionACL::All;
    fuser::spawn_mount(Tree::new(source), path, &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        status: Mutex<NodeStatus>,
        acts: Mutex<Vec<String>>,
    }

    impl Source for Arc<Fake> {
        fn status(&self) -> NodeStatus {
            *self.status.lock().unwrap()
        }
        fn nodes(&self) -> Vec<NodeRow> {
            ["n1", "n2"]
                .iter()
                .map(|n| NodeRow {
                    name: n.to_string(),
                    address: "10.0.0.1:4700".into(),
                    state: "up".into(),
                    cpus: 4,
                    speed: 12000,
                    load: 1.5,
                    mem_free: 1 << 30,
                    mem_total: 4 << 30,
                    is_self: *n == "n1",
                    boot: 0,
                    info_age_secs: None,
                    kernel: None,
                    version: None,
                    status: NodeStatus { quiet: *n == "n2", ..Default::default() },
                    shared: Vec::new(),
                    shared_with_this_node: Vec::new(),
                })
                .collect()
        }
        fn procs(&self) -> Vec<ProcessRow> {
            vec![ProcessRow {
                pid: 42,
                home: "n1".into(),
                ppid: 1,
                job: 42,
                uid: 1000,
                where_: "n2".into(),
                state: "remote".into(),
                cpu: 0.0,
                rss: 0,
                demand: 0.0,
                io_rate: 0.0,
                direct_io_rate: 0.0,
                forwarded_calls: 0,
                rss_growth: 0.0,
                nmigs: 3,
                cantmove: vec!["it is traced".into(), "it has a GPU mapped".into()],
                lock: true,
                cmd: "x".into(),
                moving: None,
                ..Default::default()
            }]
        }
        fn proc(&self, pid: i32) -> Option<ProcessRow> {
            self.procs().into_iter().find(|r| r.pid == pid)
        }
        fn admin_uid(&self) -> u32 {
            999
        }
        fn ctl(&self, op: CtlOp) -> Result<(), ControlError> {
            self.acts.lock().unwrap().push(format!("{op:?}"));
            if op == CtlOp::Block {
                self.status.lock().unwrap().blocked = true;
            }
            Ok(())
        }
        fn goto(&self, pid: i32, target: &str, uid: u32) -> Result<(), ControlError> {
            self.acts.lock().unwrap().push(format!("goto {pid} {target} by {uid}"));
            Ok(())
        }
        fn lock(&self, pid: i32, lock: bool, uid: u32) -> Result<(), ControlError> {
            self.acts.lock().unwrap().push(format!("lock {pid} {lock} by {uid}"));
            Ok(())
        }
    }

    fn tree() -> (Tree<Arc<Fake>>, Arc<Fake>) {
        let fake = Arc::new(Fake::default());
        (Tree::new(fake.clone()), fake)
    }

    fn path(t: &Tree<Arc<Fake>>, p: &str) -> Option<Entry> {
        p.split('/').filter(|s| !s.is_empty()).try_fold(Entry::Root, |e, name| t.child(&e, name))
    }

    fn read(t: &Tree<Arc<Fake>>, p: &str) -> String {
        t.content(&path(t, p).unwrap_or_else(|| panic!("no {p}"))).unwrap()
    }

    #[test]
    fn the_layout() {
        let (t, _) = tree();
        let names = |p: &str| -> Vec<String> { t.children(&path(&t, p).unwrap()).into_iter().map(|(n, _)| n).collect() };
        assert_eq!(names(""), ["admin", "nodes", "procs"]);
        assert_eq!(names("admin"), ADMIN);
        assert_eq!(names("nodes"), ["n1", "n2"]);
        assert_eq!(names("nodes/n2"), NODE_FILES);
        assert_eq!(names("procs"), ["42"]);
        assert_eq!(names("procs/42"), PROC_FILES);
        assert!(path(&t, "procs/43").is_none() && path(&t, "procs/042").is_none() && path(&t, "nodes/n3").is_none());
        assert!(path(&t, "admin/nothing").is_none() && path(&t, "procs/42/exe").is_none());
        // Inodes are stable, the root is 1.
        let e = path(&t, "nodes/n2/load").unwrap();
        let ino = t.ino(&e);
        assert_eq!((t.ino(&e), t.ino(&Entry::Root)), (ino, 1));
        assert_eq!(t.entry(ino), Some(e));
    }

    #[test]
    fn what_the_files_say() {
        let (t, _) = tree();
        assert_eq!(read(&t, "admin/block"), "0\n");
        assert_eq!(read(&t, "admin/speed"), "12000\n");
        assert_eq!(read(&t, "nodes/n2/load"), "1.50\n");
        assert_eq!(read(&t, "nodes/n2/cpus"), "4\n");
        assert_eq!(read(&t, "nodes/n2/mem"), format!("{}\n", 4u64 << 30));
        assert_eq!(read(&t, "nodes/n2/freemem"), format!("{}\n", 1u64 << 30));
        assert_eq!(read(&t, "nodes/n2/status"), "up quiet\n");
        assert_eq!(read(&t, "nodes/n1/status"), "up\n");
        assert_eq!(read(&t, "procs/42/where"), "n2\n");
        assert_eq!(read(&t, "procs/42/nmigs"), "3\n");
        assert_eq!(read(&t, "procs/42/lock"), "1\n");
        assert_eq!(read(&t, "procs/42/cantmove"), "it is traced\nit has a GPU mapped\n");
        let e = path(&t, "procs/42/goto").unwrap();
        assert_eq!(t.owner_and_mode(&e), (1000, 0o644));
        assert_eq!(t.owner_and_mode(&path(&t, "procs/42/where").unwrap()), (1000, 0o444));
        assert_eq!(t.attr(&e, 9).size, 3);
    }

    #[test]
    fn writes_act_for_whom_they_may() {
        let (t, fake) = tree();
        let w = |p: &str, uid: u32, text: &str| t.write(&path(&t, p).unwrap(), uid, text);
        assert_eq!(w("admin/block", 1000, "1\n"), Err(libc::EACCES), "a user may not block the node");
        assert_eq!(w("admin/block", 0, "1\n"), Ok(()));
        assert_eq!(read(&t, "admin/block"), "1\n");
        assert_eq!(w("admin/quiet", 999, "0"), Ok(()), "herdd's own user may");
        assert_eq!(w("admin/block", 0, "yes"), Err(libc::EINVAL));
        assert_eq!(w("admin/expel", 0, "0"), Ok(()), "0 expels nothing");
        assert_eq!(w("admin/speed", 0, "15000"), Ok(()));
        assert_eq!(w("admin/speed", 0, "fast"), Err(libc::EINVAL));
        assert_eq!(w("procs/42/goto", 1001, "n1"), Err(libc::EACCES), "not the owner");
        assert_eq!(w("procs/42/goto", 1000, "n9"), Err(libc::EINVAL), "no such node");
        assert_eq!(w("procs/42/goto", 1000, "home\n"), Ok(()));
        assert_eq!(w("procs/42/goto", 0, "n1"), Ok(()));
        assert_eq!(w("procs/42/lock", 1000, "0"), Ok(()));
        assert_eq!(w("procs/42/where", 1000, "n1"), Err(libc::EACCES));
        assert_eq!(w("nodes/n1/load", 0, "1"), Err(libc::EACCES));
        assert_eq!(
            *fake.acts.lock().unwrap(),
            ["Block", "NoQuiet", "Speed(15000)", "goto 42 home by 1000", "goto 42 n1 by 0", "lock 42 false by 1000"]
        );
    }
}
