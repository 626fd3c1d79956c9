//! Checkpointing a process with all its descendants: a tree image
//! (`herd_image::tree`).
//!
//! Every member is held stopped before any is captured (held processes
//! cannot fork, so the tree stops growing). Then what the members share is
//! worked out: descriptors that are one open file description (kcmp), in one
//! process (a dup) or several (inherited). A pipe whose two ends are both in
//! the tree is carried with its unread bytes; a pipe, terminal or FIFO that
//! leads out of the tree is carried only when it is one of the root's fds
//! 0-2 (the restore attaches it to the restorer's own); files opened once and
//! shared are reopened once. Zombies come along as zombies.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::Instant;

use herd_image::tree::{write_tree, Member, MemoryKind, MemoryObject, NamelessKind, PipeImage, Prepare, SharedOfd, SockAddr, SocketPairImage, TcpConnection, TreeImage, MAX_CONTENTS, MAX_OBJECT};
use herd_image::FileKind;
use herd_kernel::pidfd::PidFd;
use herd_kernel::sockdiag::{self, UnixSock};
use herd_kernel::{task, tcprepair};

use crate::capture::{CaptureStats, Frozen, Held};
use crate::check::{self, CantMove, Purpose, PORTABLE_DEVICES};
use crate::filehash::FileHashes;
use crate::netlock::NetLock;
use crate::{io_err, procinfo, state, CheckpointError, Result};

/// A process and its descendants, held stopped and captured.
pub struct FrozenTree {
    tree: TreeImage,
    /// Their TCP connections in repair mode (`--tcp-established`); before `live`,
    /// so that a tree dropped lets them go on before it releases the processes.
    connections: Connections,
    /// The live members, in the tree's order.
    live: Vec<Frozen>,
}

/// What the capture does with an established TCP connection.
enum TcpMode<'a> {
    /// Refuses it (a checkpoint without `--tcp-established`).
    Refuse,
    /// Accepts it without touching it (`--check --tcp-established`).
    Accept,
    /// Reads it in repair mode and keeps it so in `Connections`.
    Dump(&'a mut Connections),
}

/// The tree's TCP connections held in repair mode (so they send nothing) while
/// the tree is captured, each with where its peer's bytes stood then, and the
/// network held still for them ([`NetLock`]: what their peers send is dropped, not
/// answered with a reset). Dropped, they leave repair mode and go on, the lock
/// lifted; [`Connections::close_silently`] ends them without a packet instead,
/// once their processes are gone, and leaves the lock for `herd restart`.
#[derive(Default)]
struct Connections {
    /// A copy of the socket, its peer's next sequence number then, the process and
    /// fd that hold it, and what it is.
    socks: Vec<(std::os::fd::OwnedFd, u32, (i32, i32), String)>,
    /// Taken in the network namespace of the first connection's process.
    lock: Option<NetLock>,
}

impl Connections {
    /// Whether a peer's bytes arrived since the capture (a checkpoint that ends
    /// the processes would lose them).
    fn check_unchanged(&self) -> std::result::Result<(), (i32, CantMove)> {
        for (s, seq, (pid, fd), what) in &self.socks {
            let why = match tcprepair::recv_seq(s.as_fd()) {
                Ok(now) if now == *seq => continue,
                Ok(now) => format!("{what} received {} bytes while it was checkpointed (in flight when the network was held still): checkpoint again", now.wrapping_sub(*seq)),
                Err(e) => format!("{what}: {e}"),
            };
            return Err((*pid, CantMove::Socket { fd: *fd, what: why }));
        }
        Ok(())
    }

    /// Closes them still in repair mode: once the processes holding them are
    /// gone too, they end without a FIN or a reset.
    fn close_silently(mut self) {
        self.socks.clear();
        if let Some(lock) = self.lock.take() {
            lock.keep();
        }
    }

    /// Holds the network still for the connection from `local` to `remote` of
    /// process `pid`.
    fn lock(&mut self, pid: i32, local: &std::net::SocketAddr, remote: &std::net::SocketAddr) -> std::result::Result<(), String> {
        let lock = match &mut self.lock {
            Some(l) => l,
            None => self.lock.insert(NetLock::new(pid)?),
        };
        lock.add(local, remote)
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        for (s, _, _, what) in &self.socks {
            if let Err(e) = tcprepair::set_repair(s.as_fd(), false) {
                tracing::warn!("{what}: leaving repair mode: {e}");
            }
        }
    }
}

/// One descriptor of one member, as the sharing analysis sees it.
#[derive(Clone, Debug)]
struct Desc {
    member: usize,
    pid: i32,
    fd: i32,
    flags: i32,
    pos: u64,
    dev: u64,
    ino: u64,
    link: String,
    pipe: bool,
    fifo: bool,
    regular_or_dir: bool,
}

/// The raw wait status of zombie `pid` (from /proc/PID/stat), if it is one.
fn zombie_status(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // state is field 3 (index 0 here); exit_code is field 52 (index 49).
    if fields.first() != Some(&"Z") {
        return None;
    }
    fields.get(49).and_then(|v| v.parse().ok())
}

fn ids(pid: i32) -> Result<(i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|_| CheckpointError::NoSuchProcess { pid })?;
    let rest = &stat[stat.rfind(')').unwrap_or(0) + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // pgrp is field 5, session field 6 (indexes 2 and 3 here).
    let num = |i: usize| f.get(i).and_then(|v| v.parse().ok()).ok_or_else(|| CheckpointError::Proc { pid, what: "stat has no process group".into() });
    Ok((num(2)?, num(3)?))
}

impl FrozenTree {
    /// Stops process `pid` and every descendant of it and captures them all.
    /// On any error every process is released as it was.
    /// With `tcp`, established TCP connections are carried (TCP_REPAIR; needs
    /// CAP_NET_ADMIN) instead of refused.
    pub fn freeze(pid: i32, hashes: &mut FileHashes, tcp: bool) -> Result<FrozenTree> {
        let reasons = check::check_for(pid, Purpose::Tree)?;
        if !reasons.is_empty() {
            return Err(CheckpointError::CantMove { pid, reasons });
        }
        let stopped_at = Instant::now();
        // (pid, parent index, held, zombie status); zombies have no Held.
        type Found = (i32, Option<usize>, Option<Held>, Option<i32>);
        let mut members: Vec<Found> = vec![(pid, None, Some(Frozen::hold(pid)?), None)];
        let mut i = 0;
        while i < members.len() {
            if members[i].3.is_none() {
                let mut kids = procinfo::children(members[i].0);
                kids.sort_unstable();
                for kid in kids {
                    if members.iter().any(|m| m.0 == kid) {
                        continue;
                    }
                    if let Some(st) = zombie_status(kid) {
                        members.push((kid, Some(i), None, Some(st)));
                        continue;
                    }
                    // Held first, then checked (while capturing it): a process
                    // looked at while it runs may be half-way through exiting.
                    match Frozen::hold(kid) {
                        Ok(h) => members.push((kid, Some(i), Some(h), None)),
                        // It ended meanwhile: it is a zombie now (seizing a zombie is EPERM).
                        Err(CheckpointError::NoSuchProcess { .. } | CheckpointError::Permission { .. }) if zombie_status(kid).is_some() || !std::path::Path::new(&format!("/proc/{kid}")).exists() => match zombie_status(kid) {
                            Some(st) => members.push((kid, Some(i), None, Some(st))),
                            None => continue,
                        },
                        Err(e) => return Err(e),
                    }
                }
            }
            i += 1;
        }
        let pids: Vec<i32> = members.iter().map(|m| m.0).collect();
        let alive: Vec<bool> = members.iter().map(|m| m.3.is_none()).collect();
        // Dropped in reverse: on an error, the connections go on before the processes do.
        let mut live = Vec::new();
        let mut connections = Connections::default();
        let (ofds, pipes, socket_pairs, decided, contents_of) = share(&pids, &alive, &mut if tcp { TcpMode::Dump(&mut connections) } else { TcpMode::Refuse })?;
        let (memory, mapped) = memory_objects(&pids, &alive, &ofds, &contents_of)?;
        let mut tree = TreeImage { members: Vec::new(), ofds, pipes, socket_pairs, memory };
        for (idx, (p, parent, held, zombie)) in members.into_iter().enumerate() {
            let (pgid, sid) = ids(p).unwrap_or((p, 0));
            let prepare = match held {
                Some(h) => {
                    let frozen = Frozen::capture_held(h, p, hashes, decided.get(&idx).unwrap_or(&HashMap::new()), mapped.get(&idx).unwrap_or(&HashMap::new()), stopped_at)?;
                    let img = frozen.image();
                    let t = &img.task;
                    let prep = Prepare { files: img.files.clone(), cwd: t.cwd.clone(), umask: t.umask, rlimits: t.rlimits.clone(), personality: t.personality };
                    live.push(frozen);
                    Some(prep)
                }
                None => None,
            };
            tree.members.push(Member { pid: p, parent: parent.map(|x| x as u32), pgid, sid, zombie, prepare });
        }
        Ok(FrozenTree { tree, connections, live })
    }

    /// Whether the image is a single process image (one member, nothing
    /// shared): then it is written as one, without a tree header.
    pub fn is_single(&self) -> bool {
        self.tree.members.len() == 1 && self.tree.ofds.is_empty() && self.tree.memory.is_empty()
    }

    /// The root's image.
    pub fn root(&self) -> &herd_image::ProcessImage {
        self.live[0].image()
    }

    /// Members (live and zombie) and how many threads they have in all.
    pub fn counts(&self) -> (usize, usize) {
        (self.tree.members.len(), self.live.iter().map(|f| 1 + f.image().threads.len()).sum())
    }

    /// Writes the tree header and every live member's image to `out`.
    /// Refuses (leaving the processes to be released) a tree whose header a
    /// restore would refuse: too large (memfds and socket queues add up), or
    /// otherwise out of the format's bounds.
    pub fn write<W: Write + Send>(&mut self, mut out: W) -> Result<(W, CaptureStats)> {
        if !self.is_single() {
            let invalid = |why: String| CheckpointError::CantMove { pid: self.tree.members[0].pid, reasons: vec![CantMove::TooLarge { what: why }] };
            self.tree.validate().map_err(|e| invalid(e.to_string()))?;
            let len = herd_image::tree::header_len(&self.tree).map_err(io_err("encoding the tree header"))?;
            if len > herd_image::tree::MAX_TREE_LEN {
                return Err(invalid(format!("its pipes, socket queues and files without a name come to {} MiB; an image holds at most {} MiB of them", len >> 20, herd_image::tree::MAX_TREE_LEN >> 20)));
            }
            write_tree(&mut out, &self.tree).map_err(io_err("writing the image"))?;
        }
        let mut stats = CaptureStats::default();
        for f in &mut self.live {
            let (_, s) = f.write(&mut out)?;
            stats.page_bytes += s.page_bytes;
            stats.frozen_for = stats.frozen_for.max(s.frozen_for);
        }
        Ok((out, stats))
    }

    /// Before the processes are ended: fails if a TCP connection carried
    /// received bytes since it was captured (they would be lost).
    pub fn check_connections(&self) -> Result<()> {
        self.connections.check_unchanged().map_err(|(pid, why)| CheckpointError::CantMove { pid, reasons: vec![why] })
    }

    /// Lets every process continue as if nothing happened.
    pub fn release(self) -> Result<()> {
        let FrozenTree { connections, live, .. } = self;
        drop(connections);
        let mut first = Ok(());
        for f in live.into_iter().rev() {
            if let Err(e) = f.release() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Ends every process (SIGKILL), children first. Call only once the image
    /// is safe. Returns once every member but the root is gone (reaped by
    /// whoever adopts it, or after a few seconds): the root is its parent's to
    /// reap, but the others' pids must be free for a restart right away.
    pub fn kill(self) {
        let FrozenTree { tree, connections, live } = self;
        let others: Vec<i32> = tree.members.iter().skip(1).map(|m| m.pid).collect();
        for f in live.into_iter().rev() {
            f.kill();
        }
        // The killed processes' descriptors are closed (the root's as it dies): ours are the last.
        connections.close_silently();
        let until = Instant::now() + std::time::Duration::from_secs(5);
        while others.iter().any(|p| std::path::Path::new(&format!("/proc/{p}")).exists()) && Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// What the members share: the table of shared open files, the pipes, for
/// each member the kinds of the fds that are decided by it, and the
/// [`SharedOfd::Contents`] entries by (device, inode) of their file.
type Shares = (Vec<SharedOfd>, Vec<PipeImage>, Vec<SocketPairImage>, HashMap<usize, HashMap<i32, FileKind>>, HashMap<(u64, u64), u32>);

/// How a member maps a memory object: by the start of its region, the object,
/// the offset in it, and the runs of pages (address, length) its image stores.
pub(crate) type Mapped = HashMap<u64, (u32, u64, Vec<(u64, u64)>)>;

/// One mapping of memory without a name, as [`memory_objects`] sees it.
struct NamelessMap {
    member: usize,
    pid: i32,
    start: u64,
    end: u64,
    offset: u64,
    shared: bool,
    path: String,
}

/// Bytes of `[start, end)` of process `pid` that can be read: all of it, or the
/// part before the end of the file it maps (a page beyond it faults).
fn readable(pid: i32, start: u64, end: u64) -> Result<u64> {
    let pm = herd_kernel::mem::ProcMem::open(pid, false).map_err(|e| CheckpointError::Proc { pid, what: format!("reading its memory: {e}") })?;
    let page = herd_kernel::mem::PAGE;
    let mut buf = vec![0u8; page as usize];
    let ok = |k: u64, buf: &mut [u8]| pm.read(start + k * page, buf).is_ok();
    let pages = (end - start) / page;
    if pages == 0 || ok(pages - 1, &mut buf) {
        return Ok(end - start);
    }
    // The readable pages are a prefix: find its length.
    let (mut lo, mut hi) = (0u64, pages - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if ok(mid, &mut buf) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo * page)
}

/// `[lo, hi)` less the sorted, disjoint ranges `covered`.
fn uncovered(lo: u64, hi: u64, covered: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = lo;
    for &(a, b) in covered {
        if b <= at || a >= hi {
            continue;
        }
        if a > at {
            out.push((at, a));
        }
        at = at.max(b);
    }
    if at < hi {
        out.push((at, hi));
    }
    out
}

/// Adds `[lo, hi)` to the sorted, disjoint ranges `covered`.
fn cover(covered: &mut Vec<(u64, u64)>, lo: u64, hi: u64) {
    covered.push((lo, hi));
    covered.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(covered.len());
    for &(a, b) in covered.iter() {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    *covered = merged;
}

/// The memory objects of the tree: every memfd or deleted file a member maps,
/// and shared anonymous memory mapped more than once (by a parent and its child
/// after fork; a region mapped once is stored as any anonymous memory), each
/// with the regions that map it. A shared region stores the object's bytes it
/// shows that no earlier one stored (none when a descriptor of the tree holds
/// the file: its contents are in the tree header); a private one stores all it
/// can read (its copies on write, and the object's bytes as it sees them).
fn memory_objects(pids: &[i32], live: &[bool], ofds: &[SharedOfd], contents_of: &HashMap<(u64, u64), u32>) -> Result<(Vec<MemoryObject>, HashMap<usize, Mapped>)> {
    let mut groups: Vec<((u64, u64), Vec<NamelessMap>)> = Vec::new();
    for (member, (&pid, &alive)) in pids.iter().zip(live).enumerate() {
        if !alive {
            continue;
        }
        for m in procinfo::maps(&procinfo::open(pid)?)? {
            let procfs::process::MMapPath::Path(path) = &m.pathname else { continue };
            let path = path.to_string_lossy().into_owned();
            if !(path.ends_with(" (deleted)") || path.starts_with("/memfd:")) {
                continue;
            }
            let key = (libc::makedev(m.dev.0 as u32, m.dev.1 as u32), m.inode);
            let shared = m.perms.contains(procfs::process::MMPermissions::SHARED);
            let map = NamelessMap { member, pid, start: m.address.0, end: m.address.1, offset: m.offset, shared, path };
            match groups.iter_mut().find(|g| g.0 == key) {
                Some(g) => g.1.push(map),
                None => groups.push((key, vec![map])),
            }
        }
    }
    let mut objects = Vec::new();
    let mut mapped: HashMap<usize, Mapped> = HashMap::new();
    for (key, maps) in groups {
        let first = &maps[0];
        let anonymous = first.path.starts_with("/dev/zero");
        let ofd = contents_of.get(&key).copied();
        if anonymous && maps.len() == 1 && ofd.is_none() {
            continue;
        }
        let object = objects.len() as u32;
        let name = first.path.trim_end_matches(" (deleted)");
        let carried = ofd.and_then(|o| match &ofds[o as usize] {
            SharedOfd::Contents { kind, contents, .. } => Some((kind, contents.len() as u64)),
            _ => None,
        });
        let kind = if anonymous {
            MemoryKind::Anonymous
        } else if let Some(memfd) = name.strip_prefix("/memfd:") {
            let seals = match carried {
                Some((NamelessKind::Memfd { seals, .. }, _)) => *seals,
                // No descriptor holds it: its mapping opens it (map_files, as root), else 0.
                _ => std::fs::File::open(format!("/proc/{}/map_files/{:x}-{:x}", first.pid, first.start, first.end))
                    .ok()
                    .and_then(|f| task::seals(f.as_fd()).ok())
                    .unwrap_or(0),
            };
            MemoryKind::Memfd { name: memfd.to_string(), seals }
        } else {
            MemoryKind::Deleted { path: name.to_string() }
        };
        // What is known of the object: all of it when a descriptor carries it.
        let mut covered: Vec<(u64, u64)> = carried.map(|(_, len)| vec![(0, len)]).unwrap_or_default();
        let mut size = carried.map_or(0, |(_, len)| len);
        for m in &maps {
            let len = if anonymous { m.end - m.start } else { readable(m.pid, m.start, m.end)? };
            if carried.is_none() {
                size = size.max(m.offset + len);
            }
            let runs = if m.shared {
                let runs: Vec<(u64, u64)> = uncovered(m.offset, m.offset + len, &covered).into_iter().map(|(a, b)| (m.start + (a - m.offset), b - a)).collect();
                cover(&mut covered, m.offset, m.offset + len);
                runs
            } else if len > 0 {
                vec![(m.start, len)]
            } else {
                Vec::new()
            };
            mapped.entry(m.member).or_default().insert(m.start, (object, m.offset, runs));
        }
        if size > MAX_OBJECT {
            return Err(CheckpointError::CantMove { pid: first.pid, reasons: vec![CantMove::TooLarge { what: format!("{} maps {name}, {} GiB", first.pid, size >> 30) }] });
        }
        objects.push(MemoryObject { kind, size, ofd });
    }
    Ok((objects, mapped))
}

fn share(pids: &[i32], live: &[bool], tcp: &mut TcpMode<'_>) -> Result<Shares> {
    let mut descs = Vec::new();
    for (member, (&pid, &alive)) in pids.iter().zip(live).enumerate() {
        if !alive {
            continue;
        }
        let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| CheckpointError::Proc { pid, what: format!("listing its fds: {e}") })?;
        for e in dir.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let path = format!("/proc/{pid}/fd/{fd}");
            let (Ok(meta), Ok(link)) = (std::fs::metadata(&path), std::fs::read_link(&path)) else { continue };
            let info = state::read_fdinfo(pid, fd)?;
            let link = link.to_string_lossy().into_owned();
            descs.push(Desc {
                member,
                pid,
                fd,
                flags: info.flags,
                pos: info.pos,
                dev: meta.dev(),
                ino: meta.ino(),
                pipe: link.starts_with("pipe:["),
                fifo: meta.file_type().is_fifo() && !link.starts_with("pipe:["),
                regular_or_dir: meta.is_file() || meta.is_dir(),
                link,
            });
        }
    }
    // Open file descriptions: descriptors of one inode that kcmp says are one.
    let mut classes: Vec<Vec<Desc>> = Vec::new();
    for d in descs {
        let mut home = None;
        for (i, c) in classes.iter().enumerate() {
            let r = &c[0];
            if r.dev == d.dev && r.ino == d.ino {
                // Without kcmp the descriptions cannot be told apart: refuse rather
                // than split one open file in two.
                let same = task::same_description(r.pid, r.fd, d.pid, d.fd).map_err(|e| CheckpointError::Proc {
                    pid: d.pid,
                    what: format!("comparing its fd {} with fd {} of process {} (kcmp): {e}", d.fd, r.fd, r.pid),
                })?;
                if same {
                    home = Some(i);
                    break;
                }
            }
        }
        match home {
            Some(i) => classes[i].push(d),
            None => classes.push(vec![d]),
        }
    }
    let mut ofds = Vec::new();
    let mut pipes: Vec<PipeImage> = Vec::new();
    let mut socket_pairs: Vec<SocketPairImage> = Vec::new();
    // Unix sockets, asked of the kernel only when there are any.
    let any_socket = classes.iter().any(|c| c[0].link.starts_with("socket:["));
    let diag_err = |e: std::io::Error| CheckpointError::Proc { pid: pids[0], what: format!("listing sockets (sock_diag): {e}") };
    let unix = if any_socket { sockdiag::unix_sockets().map_err(diag_err)? } else { HashMap::new() };
    let inet = if any_socket { sockdiag::inet_sockets().map_err(diag_err)? } else { HashMap::new() };
    // Socket pairs seen from one end: the pair, by the other end's inode.
    let mut pair_of: HashMap<u64, (u32, u8)> = HashMap::new();
    let mut pipe_of: HashMap<(u64, u64), u32> = HashMap::new();
    let mut decided: HashMap<usize, HashMap<i32, FileKind>> = HashMap::new();
    let mut contents_of: HashMap<(u64, u64), u32> = HashMap::new();
    let mut refused = Vec::new();
    let mut decide = |d: &Desc, k: FileKind| {
        decided.entry(d.member).or_default().insert(d.fd, k);
    };
    // Pseudo-terminals whose master is in the tree, first: their slaves' master
    // entries, by the slave's (device, inode).
    let mut pty_of: HashMap<(u64, u64), u32> = HashMap::new();
    for c in classes.iter().filter(|c| is_ptmx(&c[0].link)) {
        let r = &c[0];
        match pty_master(r, pids, live) {
            Ok((img, slave)) => {
                ofds.push(SharedOfd::PtyMaster(Box::new(img)));
                let ofd = ofds.len() as u32 - 1;
                pty_of.insert(slave, ofd);
                c.iter().for_each(|d| decide(d, FileKind::Shared { ofd }));
            }
            Err(what) => refused.extend(c.iter().map(|d| (d.pid, CantMove::UnsupportedFd { fd: d.fd, what: format!("{} ({what})", d.link) }))),
        }
    }
    for c in &classes {
        let r = &c[0];
        if is_ptmx(&r.link) {
            continue;
        }
        if let Some(&master) = pty_of.get(&(r.dev, r.ino)) {
            if held_outside(r, pids) {
                refused.extend(c.iter().map(|d| (d.pid, CantMove::UnsupportedFd { fd: d.fd, what: format!("{} (the slave of a pseudo-terminal of the tree, held by a process outside it too)", d.link) })));
            } else {
                ofds.push(SharedOfd::PtySlave { master, flags: r.flags & (libc::O_ACCMODE | libc::O_NONBLOCK) });
                let ofd = ofds.len() as u32 - 1;
                c.iter().for_each(|d| decide(d, FileKind::Shared { ofd }));
            }
            continue;
        }
        let root_std = c.iter().filter(|d| d.member == 0 && d.fd <= 2).map(|d| d.fd).min();
        let outward = r.pipe || r.fifo || (!r.regular_or_dir && !PORTABLE_DEVICES.contains(&r.link.as_str()) && !r.link.starts_with("anon_inode:") && r.flags & libc::O_PATH == 0);
        if r.pipe || (r.fifo && !r.link.ends_with(" (deleted)")) {
            let mode = r.flags & libc::O_ACCMODE;
            let write = mode == libc::O_WRONLY;
            let same_inode = |o: &&Vec<Desc>| (o[0].pipe || o[0].fifo) && o[0].ino == r.ino && o[0].dev == r.dev;
            let same_way = classes.iter().filter(same_inode).filter(|o| o[0].flags & libc::O_ACCMODE == mode).count();
            // The tree's own when no process outside holds it (its other end may be
            // in the tree, or closed everywhere). A pipe has one description each
            // way; a FIFO is opened as often as asked.
            if (r.fifo || same_way == 1) && !held_outside(r, pids) {
                let pipe = match pipe_of.get(&(r.dev, r.ino)) {
                    Some(p) => *p,
                    None => {
                        let f = std::fs::OpenOptions::new()
                            .read(true)
                            .custom_flags(libc::O_NONBLOCK)
                            .open(format!("/proc/{}/fd/{}", r.pid, r.fd))
                            .map_err(|e| CheckpointError::Proc { pid: r.pid, what: format!("opening its pipe at fd {}: {e}", r.fd) })?;
                        let (contents, capacity) =
                            task::pipe_peek(f.as_fd()).map_err(|e| CheckpointError::Proc { pid: r.pid, what: format!("reading its pipe at fd {}: {e}", r.fd) })?;
                        pipes.push(PipeImage { contents, capacity, fifo: r.fifo.then(|| r.link.clone()) });
                        pipe_of.insert((r.dev, r.ino), pipes.len() as u32 - 1);
                        pipes.len() as u32 - 1
                    }
                };
                ofds.push(SharedOfd::PipeEnd { pipe, write, flags: r.flags & (libc::O_NONBLOCK | libc::O_ACCMODE) });
                let ofd = ofds.len() as u32 - 1;
                c.iter().for_each(|d| decide(d, FileKind::Shared { ofd }));
                continue;
            }
        }
        if let Some(ino) = r.link.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).and_then(|s| s.parse::<u32>().ok()) {
            // An unnamed datagram socket connected to a named one outside the tree
            // (a syslog(3) client's, connected to /dev/log): connected to that name again.
            let to_outside = unix.get(&ino).filter(|s| s.kind == libc::SOCK_DGRAM && s.name.is_none()).and_then(|s| s.peer).filter(|p| !classes.iter().any(|o| o[0].link == format!("socket:[{p}]")));
            if !unix.contains_key(&ino) || unix[&ino].peer.is_none() || to_outside.is_some() {
                // A socket made again as it was: a listener, a bound or unconnected one.
                let peer = to_outside.map(|p| unix.get(&p).and_then(|s| s.name.as_deref()));
                match lone_socket(r, unix.get(&ino), inet.get(&ino), peer, tcp) {
                    Ok(o) => {
                        ofds.push(o);
                        let ofd = ofds.len() as u32 - 1;
                        c.iter().for_each(|d| decide(d, FileKind::Shared { ofd }));
                    }
                    Err(what) => refused.extend(c.iter().map(|d| (d.pid, CantMove::Socket { fd: d.fd, what: format!("{} ({what})", r.link) }))),
                }
                continue;
            }
            let why = match unix.get(&ino) {
                None => Some("a socket that is not a unix socket".to_string()),
                Some(s) if s.name.is_some() => Some("a named unix socket connected to another".into()),
                Some(UnixSock { peer: None, .. }) => Some("an unconnected unix socket".into()),
                Some(UnixSock { peer: Some(p), .. }) if !classes.iter().any(|o| o[0].link == format!("socket:[{p}]")) => {
                    Some(format!("a unix socket connected to socket {p}, which is outside the process tree"))
                }
                Some(_) => None,
            };
            if let Some(what) = why {
                for d in c {
                    refused.push((d.pid, CantMove::Socket { fd: d.fd, what: format!("{} ({what})", r.link) }));
                }
                continue;
            }
            let s = &unix[&ino];
            let (pair, end) = match pair_of.get(&u64::from(ino)) {
                Some(&(pair, _)) => (pair, 1u8),
                None => {
                    socket_pairs.push(SocketPairImage { kind: s.kind, queued: [Vec::new(), Vec::new()], shutdown: [0, 0] });
                    let pair = socket_pairs.len() as u32 - 1;
                    pair_of.insert(u64::from(s.peer.expect("checked")), (pair, 1));
                    (pair, 0u8)
                }
            };
            let sock = PidFd::open(r.pid)
                .and_then(|p| p.get_fd(r.fd))
                .map_err(|e| CheckpointError::Proc { pid: r.pid, what: format!("taking a look at its socket at fd {}: {e}", r.fd) })?;
            let queued = match sockdiag::socket_peek(sock.as_fd(), s.kind == libc::SOCK_STREAM) {
                Ok(q) if s.kind == libc::SOCK_STREAM && q.len() > 1 => vec![q.concat()],
                Ok(q) => q,
                Err(e) => {
                    refused.push((r.pid, CantMove::Socket { fd: r.fd, what: format!("{}: {e}", r.link) }));
                    continue;
                }
            };
            let p = &mut socket_pairs[pair as usize];
            p.queued[end as usize] = queued;
            p.shutdown[end as usize] = s.shutdown;
            ofds.push(SharedOfd::SocketEnd { pair, end, flags: r.flags & libc::O_NONBLOCK });
            let ofd = ofds.len() as u32 - 1;
            c.iter().for_each(|d| decide(d, FileKind::Shared { ofd }));
            continue;
        }
        if outward {
            match root_std {
                Some(k) => {
                    // The root's own fds 0-2 stay the restorer's; the rest share them.
                    let mut ofd = None;
                    for d in c {
                        if d.member == 0 && d.fd <= 2 {
                            decide(d, FileKind::Inherited { what: d.link.clone() });
                        } else {
                            let o = *ofd.get_or_insert_with(|| {
                                ofds.push(SharedOfd::Outer { fd: k, what: r.link.clone() });
                                ofds.len() as u32 - 1
                            });
                            decide(d, FileKind::Shared { ofd: o });
                        }
                    }
                }
                None => {
                    for d in c {
                        let what = if r.pipe {
                            format!("{} whose other end is outside the process tree", r.link)
                        } else {
                            format!("{} (a pipe, FIFO or terminal not shared with the root's fds 0-2)", r.link)
                        };
                        refused.push((d.pid, CantMove::UnsupportedFd { fd: d.fd, what }));
                    }
                }
            }
            continue;
        }
        // A file without a name: carried with its contents.
        if r.regular_or_dir && r.link.ends_with(" (deleted)") && r.flags & libc::O_PATH == 0 {
            let opened = classes.iter().filter(|o| o[0].dev == r.dev && o[0].ino == r.ino).count();
            let got = if opened > 1 { Err(format!("{} (a file without a name opened more than once)", r.link)) } else { nameless(r) };
            match got {
                Ok(o) => {
                    ofds.push(o);
                    let ofd = ofds.len() as u32 - 1;
                    contents_of.insert((r.dev, r.ino), ofd);
                    c.iter().for_each(|d| decide(d, FileKind::Shared { ofd }));
                }
                Err(what) => refused.extend(c.iter().map(|d| (d.pid, CantMove::UnsupportedFd { fd: d.fd, what: what.clone() }))),
            }
            continue;
        }
        if r.link == "anon_inode:[pidfd]" {
            let target = state::read_fdinfo(r.pid, r.fd)?.pid;
            if !target.is_some_and(|t| pids.contains(&t)) {
                let what = format!("a pidfd of process {}, which is not in the process tree", target.unwrap_or(-1));
                refused.extend(c.iter().map(|d| (d.pid, CantMove::UnsupportedFd { fd: d.fd, what: what.clone() })));
                continue;
            }
        }
        // A fanotify group, held by one descriptor or more: made again by the restorer.
        if r.link == "anon_inode:[fanotify]" {
            match fanotify_group(r) {
                Ok(o) => {
                    ofds.push(o);
                    let ofd = ofds.len() as u32 - 1;
                    c.iter().for_each(|d| decide(d, FileKind::Shared { ofd }));
                }
                Err(what) => refused.extend(c.iter().map(|d| (d.pid, CantMove::UnsupportedFd { fd: d.fd, what: what.clone() }))),
            }
            continue;
        }
        // An epoll names what it watches by the fd numbers of the process that added
        // each: alone, its holder must hold those files at those numbers still; shared
        // by several descriptors, one holder that does fills it after the restore
        // made it once, empty.
        if r.link == "anon_inode:[eventpoll]" {
            let info = state::read_fdinfo(r.pid, r.fd)?;
            let owner = c.iter().find(|d| state::epoll_refusals(d.pid, d.fd, &info).is_empty());
            match owner {
                Some(o) if c.len() > 1 => {
                    let targets = info.tfds.iter().map(|&(fd, events, data, _)| herd_image::EpollTarget { fd, events, data }).collect();
                    ofds.push(SharedOfd::Epoll { owner: o.member as u32, targets });
                    let ofd = ofds.len() as u32 - 1;
                    c.iter().for_each(|d| decide(d, FileKind::Shared { ofd }));
                }
                Some(_) => {}
                None => {
                    for d in c {
                        let mut why = state::epoll_refusals(d.pid, d.fd, &info);
                        if c.len() > 1 {
                            why = vec![CantMove::UnsupportedFd { fd: d.fd, what: "an epoll shared by processes (or descriptors) none of which holds every file it watches at the number it was added with".into() }];
                        }
                        refused.extend(why.into_iter().map(|w| (d.pid, w)));
                    }
                }
            }
            continue;
        }
        if c.len() < 2 {
            continue;
        }
        // An eventfd, timerfd, signalfd or inotify instance shared by several descriptors: made once.
        if let Some(anon @ ("[eventfd]" | "[timerfd]" | "[signalfd]" | "inotify")) = r.link.strip_prefix("anon_inode:") {
            match state::anon_kind(anon, r.fd, &state::read_fdinfo(r.pid, r.fd)?) {
                Ok(kind) => {
                    ofds.push(SharedOfd::Event(kind));
                    let ofd = ofds.len() as u32 - 1;
                    c.iter().for_each(|d| decide(d, FileKind::Shared { ofd }));
                }
                Err(why) => refused.extend(c.iter().map(|d| (d.pid, why.clone()))),
            }
            continue;
        }
        if r.link.starts_with("anon_inode:") {
            for d in c {
                refused.push((d.pid, CantMove::UnsupportedFd { fd: d.fd, what: format!("{} shared with another fd or process", r.link) }));
            }
            continue;
        }
        // A file shared by several descriptors: opened once.
        let kind = if r.flags & libc::O_PATH != 0 {
            FileKind::PathOnly { path: r.link.clone(), flags: r.flags }
        } else if std::fs::metadata(format!("/proc/{}/fd/{}", r.pid, r.fd)).is_ok_and(|m| m.is_dir()) {
            FileKind::Directory { path: r.link.clone(), flags: r.flags, offset: r.pos }
        } else if PORTABLE_DEVICES.contains(&r.link.as_str()) {
            FileKind::Device { path: r.link.clone(), flags: r.flags }
        } else {
            FileKind::Regular { path: r.link.clone(), flags: r.flags, offset: r.pos }
        };
        ofds.push(SharedOfd::File(kind));
        let ofd = ofds.len() as u32 - 1;
        c.iter().for_each(|d| decide(d, FileKind::Shared { ofd }));
    }
    if let Some(&(pid, _)) = refused.first() {
        let reasons = refused.iter().filter(|(p, _)| *p == pid).map(|(_, r)| r.clone()).collect();
        return Err(CheckpointError::CantMove { pid, reasons });
    }
    Ok((ofds, pipes, socket_pairs, decided, contents_of))
}

use std::os::unix::fs::OpenOptionsExt;

/// A socket that is not one end of a pair inside the tree, made again as it
/// was: a TCP listener with no connection waiting, a TCP socket not yet
/// connected, a UDP socket (bound, connected) with nothing waiting, a unix
/// listener with no connection waiting, an unbound unix socket, an unbound unix
/// datagram socket connected to a named socket outside the tree. Else why not.
///
/// `peer`: for a unix datagram socket connected outside the tree, the name of the
/// socket it is connected to (`Some(None)`: one without a name, or not found).
fn lone_socket(d: &Desc, unix: Option<&UnixSock>, inet: Option<&sockdiag::InetSock>, peer: Option<Option<&[u8]>>, tcp_mode: &mut TcpMode<'_>) -> std::result::Result<SharedOfd, String> {
    let sock = PidFd::open(d.pid).and_then(|p| p.get_fd(d.fd)).map_err(|e| format!("it cannot be looked at: {e}"))?;
    let opt = |level, name| sockdiag::sockopt(sock.as_fd(), level, name).map_err(|e| format!("getsockopt: {e}"));
    let family = opt(libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let kind = opt(libc::SOL_SOCKET, libc::SO_TYPE)?;
    let protocol = opt(libc::SOL_SOCKET, libc::SO_PROTOCOL)?;
    let mut options = Vec::new();
    for (level, name) in [(libc::SOL_SOCKET, libc::SO_REUSEADDR), (libc::SOL_SOCKET, libc::SO_REUSEPORT), (libc::SOL_SOCKET, libc::SO_KEEPALIVE)] {
        let v = opt(level, name)?;
        if v != 0 {
            options.push((level, name, v));
        }
    }
    let flags = d.flags & libc::O_NONBLOCK;
    match (unix, inet) {
        (Some(u), _) => {
            if u.pending > 0 {
                return Err(format!("a unix listener with {} connections waiting to be accepted", u.pending));
            }
            if let Some(peer) = peer {
                let Some(name) = peer else {
                    return Err("a unix datagram socket connected to a socket without a name outside the process tree".into());
                };
                let shown = SockAddr::Unix(name.to_vec());
                // The name the peer was bound at: a path must still lead to a socket (the
                // restore connects to whatever socket is there then, as a syslog client
                // reconnects to /dev/log).
                if name.first() != Some(&0) {
                    if name.first() != Some(&b'/') {
                        return Err(format!("a unix datagram socket connected to a socket bound at a relative name ({shown})"));
                    }
                    let at = std::path::Path::new(&format!("/proc/{}/root", d.pid)).join(std::ffi::OsStr::from_bytes(&name[1..]));
                    if !std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_socket()) {
                        return Err(format!("a unix datagram socket connected to the socket bound at {shown}, a name that no longer leads to a socket"));
                    }
                }
                // Only the socket it is connected to can send to it (it has no name), and it is outside.
                let waiting = sockdiag::socket_peek(sock.as_fd(), false).map_err(|e| format!("reading its queue: {e}"))?;
                if !waiting.is_empty() {
                    return Err(format!("a unix datagram socket connected to {shown} with {} datagrams waiting", waiting.len()));
                }
                return Ok(SharedOfd::Socket { family, kind, protocol, bound: None, connected: Some(shown), backlog: None, options, flags });
            }
            if u.state != 10 && u.state != 7 {
                return Err("a unix socket in a state herd does not carry".into());
            }
            if u.kind != libc::SOCK_STREAM && u.kind != libc::SOCK_SEQPACKET && u.name.is_some() {
                return Err("a bound unix datagram socket (datagrams may wait in it)".into());
            }
            let backlog = (u.state == 10).then_some(libc::SOMAXCONN as u32);
            Ok(SharedOfd::Socket { family, kind, protocol, bound: u.name.clone().map(SockAddr::Unix), connected: None, backlog, options, flags })
        }
        (None, Some(s)) => {
            if family == libc::AF_INET6 {
                let v = opt(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)?;
                options.push((libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, v));
            }
            let bound = (s.local.port() != 0).then_some(SockAddr::Inet(s.local));
            let tcp = s.protocol == libc::IPPROTO_TCP as u8;
            if tcp && s.state == 1 {
                return connection(d, s, sock, options, flags, tcp_mode);
            }
            match (tcp, s.state) {
                (true, 10) if s.recv_queue > 0 => Err(format!("a TCP listener on {} with {} connections waiting to be accepted", s.local, s.recv_queue)),
                (true, 10) => Ok(SharedOfd::Socket { family, kind, protocol, bound, connected: None, backlog: Some(s.send_queue), options, flags }),
                (true, 7) => Ok(SharedOfd::Socket { family, kind, protocol, bound, connected: None, backlog: None, options, flags }),
                (true, st) => Err(format!("a TCP connection {} -> {} that is closing (state {st}); established ones are carried with --tcp-established", s.local, s.remote)),
                (false, _) if s.recv_queue > 0 => Err(format!("a UDP socket on {} with {} bytes of datagrams waiting", s.local, s.recv_queue)),
                (false, _) => {
                    let connected = (s.remote.port() != 0).then_some(SockAddr::Inet(s.remote));
                    Ok(SharedOfd::Socket { family, kind, protocol, bound, connected, backlog: None, options, flags })
                }
            }
        }
        (None, None) if family == libc::AF_NETLINK => netlink_socket(d, sock.as_fd(), (family, kind, protocol), flags),
        (None, None) => Err(format!("a socket of family {family} that herd does not carry")),
    }
}

/// A netlink socket (`(family, type, protocol)`), made again with its port id, its
/// multicast groups, where it sends and its options. Refused with bytes waiting in it
/// (answers or events not read yet) or in a group above 32 (a bind names groups 1-32).
fn netlink_socket(d: &Desc, sock: std::os::fd::BorrowedFd<'_>, (family, kind, protocol): (i32, i32, i32), flags: i32) -> std::result::Result<SharedOfd, String> {
    let ino = d.link.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).and_then(|s| s.parse().ok()).unwrap_or(0);
    match sockdiag::netlink_queued(d.pid, ino) {
        Ok(Some(0)) => {}
        Ok(Some(n)) => return Err(format!("a netlink socket (protocol {protocol}) with {n} bytes waiting to be read")),
        Ok(None) => return Err(format!("a netlink socket (protocol {protocol}) that /proc/{}/net/netlink does not list", d.pid)),
        Err(e) => return Err(format!("a netlink socket (protocol {protocol}): /proc/{}/net/netlink: {e}", d.pid)),
    }
    let n = sockdiag::netlink_sock(sock).map_err(|e| format!("a netlink socket (protocol {protocol}) that cannot be read: {e}"))?;
    if let Some(g) = n.groups.iter().find(|&&g| g > 32) {
        return Err(format!("a netlink socket (protocol {protocol}) in multicast group {g} (groups above 32 are not carried)"));
    }
    let mask = |g: u32| if g == 0 { 0 } else { 1u32 << (g - 1) };
    let groups = n.groups.iter().fold(0, |m, &g| m | mask(g));
    let mut options = Vec::new();
    for name in sockdiag::NETLINK_INT_OPTIONS {
        let v = sockdiag::sockopt(sock, sockdiag::SOL_NETLINK, name).map_err(|e| format!("a netlink socket: getsockopt {name}: {e}"))?;
        if v != 0 {
            options.push((sockdiag::SOL_NETLINK, name, v));
        }
    }
    let connected = (n.dst_portid != 0 || n.dst_group != 0).then_some(SockAddr::Netlink { portid: n.dst_portid, groups: mask(n.dst_group) });
    Ok(SharedOfd::Socket { family, kind, protocol, bound: Some(SockAddr::Netlink { portid: n.portid, groups }), connected, backlog: None, options, flags })
}

/// The fanotify group open at `d`, with its marks found again by path. Refused: a
/// group of permission events (a process may be waiting for an answer), events waiting
/// in it (they cannot be read without taking them), a mark on a deleted file or one
/// whose file or mount cannot be found, marks of kinds herd does not make again.
fn fanotify_group(d: &Desc) -> std::result::Result<SharedOfd, String> {
    use herd_image::tree::{FanotifyImage, FanotifyMark, FanotifyOn};
    use state::FanOn;
    let info = state::read_fdinfo(d.pid, d.fd).map_err(|e| e.to_string())?;
    let (flags, event_flags) = info.fanotify.ok_or("a fanotify group whose flags /proc does not show")?;
    // FAN_CLASS_CONTENT, FAN_CLASS_PRE_CONTENT.
    if flags & 0xc != 0 {
        return Err("a fanotify group of permission events (a process may be waiting for its answer)".into());
    }
    let group = PidFd::open(d.pid).and_then(|p| p.get_fd(d.fd)).map_err(|e| format!("a fanotify group that cannot be looked at: {e}"))?;
    let waiting = herd_kernel::task::bytes_waiting(group.as_fd()).map_err(|e| format!("a fanotify group that cannot be looked at: {e}"))?;
    if waiting > 0 {
        return Err(format!("a fanotify group with {waiting} bytes of events waiting to be read"));
    }
    // (Read only for marks on mounts or file systems.)
    let mountinfo = if info.fanotify_marks.iter().any(|m| !matches!(m.on, FanOn::Inode { .. })) {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", d.pid)).map_err(|e| format!("its mounts: {e}"))?
    } else {
        String::new()
    };
    // Field 0 is the mount id, 2 the device (major:minor), 4 the mount point.
    let mount_where = |pick: &dyn Fn(&[&str]) -> bool| mountinfo.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| f.len() > 4 && pick(f)).map(|f| f[4].to_string());
    let dev = |sdev: u64| format!("{}:{}", sdev >> 20, sdev & 0xf_ffff);
    let mut marks = Vec::new();
    for m in &info.fanotify_marks {
        // FAN_MARK_IGNORED_SURV_MODIFY is made again; evictable and ignore-style marks are not.
        if m.mflags & !0x40 != 0 {
            return Err(format!("a fanotify mark with flags {:#x}", m.mflags));
        }
        let (on, path) = match &m.on {
            FanOn::Inode { sdev, ty, handle } => {
                let path = herd_kernel::task::path_of_handle(*sdev, *ty, handle).map_err(|e| format!("a fanotify mark whose file cannot be found ({e})"))?;
                let path = path.to_string_lossy().into_owned();
                if path.ends_with(" (deleted)") {
                    return Err(format!("a fanotify mark on a deleted file ({path})"));
                }
                (FanotifyOn::Inode, path)
            }
            FanOn::Mount { id } => (FanotifyOn::Mount, mount_where(&|f| f[0].parse::<u64>().ok() == Some(*id)).ok_or(format!("a fanotify mark on mount {id}, which is not among the process's mounts"))?),
            FanOn::Filesystem { sdev } => (FanotifyOn::Filesystem, mount_where(&|f| f[2] == dev(*sdev)).ok_or(format!("a fanotify mark on file system {}, which is not mounted", dev(*sdev)))?),
        };
        marks.push(FanotifyMark { on, path, flags: m.mflags, mask: m.mask, ignored: m.ignored });
    }
    Ok(SharedOfd::Fanotify(Box::new(FanotifyImage { flags, event_flags, marks })))
}

/// Whether `link` names a pseudo-terminal master.
fn is_ptmx(link: &str) -> bool {
    link == "/dev/ptmx" || link == "/dev/pts/ptmx"
}

/// The pseudo-terminal whose master is open at `d`, made again on restore as a
/// new pair with its settings; with the slave's (device, inode). Refused when a
/// process outside the tree holds it, when bytes wait in it either way, or when
/// it is the controlling terminal of a session the tree does not lead or whose
/// foreground group is not the leader's.
fn pty_master(d: &Desc, pids: &[i32], live: &[bool]) -> std::result::Result<(herd_image::tree::PtyImage, (u64, u64)), String> {
    if held_outside(d, pids) {
        return Err("a pseudo-terminal master held by a process outside the tree too".into());
    }
    let master = PidFd::open(d.pid).and_then(|p| p.get_fd(d.fd)).map_err(|e| format!("it cannot be looked at: {e}"))?;
    let st = herd_kernel::pty::inspect(master.as_fd()).map_err(|e| format!("reading its pseudo-terminal: {e}"))?;
    if st.to_master > 0 || st.to_slave > 0 {
        return Err(format!("a pseudo-terminal with bytes waiting in it: {} for the master, {} for the slave", st.to_master, st.to_slave));
    }
    let mut session = None;
    for (&pid, _) in pids.iter().zip(live).filter(|(_, &l)| l) {
        let stat = procfs::process::Process::new(pid).and_then(|p| p.stat()).map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
        if stat.tty_nr as u64 != st.slave.2 {
            continue;
        }
        let leader = stat.session;
        if !pids.contains(&leader) {
            return Err(format!("the controlling terminal of session {leader}, which the tree does not lead"));
        }
        if stat.tpgid > 0 && stat.tpgid != leader {
            return Err(format!("the controlling terminal of session {leader}, whose foreground process group is {} (herd sets only the leader's)", stat.tpgid));
        }
        session = Some(leader);
    }
    let t = &st.termios;
    let w = &st.winsize;
    let img = herd_image::tree::PtyImage {
        flags: d.flags & libc::O_NONBLOCK,
        number: st.number,
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
        line: t.c_line,
        cc: t.c_cc.to_vec(),
        ispeed: t.c_ispeed,
        ospeed: t.c_ospeed,
        winsize: [w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel],
        locked: st.locked,
        packet: st.packet,
        session,
    };
    Ok((img, (st.slave.0, st.slave.1)))
}

/// An established TCP connection: refused, accepted as it is (a check), or
/// read in repair mode and kept so ([`TcpMode`]).
fn connection(d: &Desc, s: &sockdiag::InetSock, sock: std::os::fd::OwnedFd, mut options: Vec<(i32, i32, i32)>, flags: i32, mode: &mut TcpMode<'_>) -> std::result::Result<SharedOfd, String> {
    let what = format!("a TCP connection {} -> {}", s.local, s.remote);
    let nodelay = sockdiag::sockopt(sock.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY).map_err(|e| format!("getsockopt: {e}"))?;
    if nodelay != 0 {
        options.push((libc::IPPROTO_TCP, libc::TCP_NODELAY, nodelay));
    }
    let mut c = TcpConnection {
        local: s.local,
        remote: s.remote,
        options,
        flags,
        send_seq: 0,
        recv_seq: 0,
        sent: Vec::new(),
        unsent: Vec::new(),
        received: Vec::new(),
        mss: 0,
        wscale: None,
        sack: false,
        timestamp: None,
        window: [0; 5],
    };
    match mode {
        TcpMode::Refuse => Err(format!("{what} (herd checkpoint --tcp-established carries it)")),
        // What a check says: it would be carried (its state is read only by a
        // checkpoint), if the network can be held still for it.
        TcpMode::Accept => crate::netlock::available().map(|()| SharedOfd::Tcp(Box::new(c))).map_err(|e| format!("{what}: {e}")),
        TcpMode::Dump(held) => {
            // Nothing of it comes or goes from now until it goes on (or, if the
            // processes end, until herd restart has made it again).
            held.lock(d.pid, &s.local, &s.remote).map_err(|e| format!("{what}: {e}"))?;
            let t = tcprepair::dump(sock.as_fd()).map_err(|e| format!("{what}: {e}"))?;
            (c.send_seq, c.recv_seq, c.sent, c.unsent, c.received) = (t.send_seq, t.recv_seq, t.sent, t.unsent, t.received);
            (c.mss, c.wscale, c.sack, c.timestamp, c.window) = (t.mss, t.wscale, t.sack, t.timestamp, t.window);
            tracing::debug!(pid = d.pid, fd = d.fd, "{what}: {} bytes received, {} sent, {} not sent", c.received.len(), c.sent.len(), c.unsent.len());
            held.socks.push((sock, t.recv_seq, (d.pid, d.fd), what));
            Ok(SharedOfd::Tcp(Box::new(c)))
        }
    }
}

/// A deleted regular file or a memfd open at `d`, with its contents; or
/// why it cannot be carried.
fn nameless(d: &Desc) -> std::result::Result<SharedOfd, String> {
    let link = d.link.trim_end_matches(" (deleted)");
    let path = format!("/proc/{}/fd/{}", d.pid, d.fd);
    let f = std::fs::File::open(&path).map_err(|e| format!("{} (its contents cannot be read: {e})", d.link))?;
    let meta = f.metadata().map_err(|e| format!("{}: {e}", d.link))?;
    let memfd = link.starts_with("/memfd:");
    if !memfd && meta.nlink() > 0 {
        return Err(format!("{} (a deleted name of a file that still has other names)", d.link));
    }
    if meta.len() > MAX_CONTENTS {
        return Err(format!("{} ({} MiB; a file without a name is carried up to {} MiB)", d.link, meta.len() >> 20, MAX_CONTENTS >> 20));
    }
    let mut contents = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(&mut &f, &mut contents).map_err(|e| format!("{} (reading its contents: {e})", d.link))?;
    let kind = if memfd {
        let seals = task::seals(f.as_fd()).map_err(|e| format!("{} (its seals: {e})", d.link))?;
        NamelessKind::Memfd { name: link.trim_start_matches("/memfd:").to_string(), seals }
    } else {
        let p = std::path::Path::new(link);
        let dir = p.parent().map(|x| x.to_string_lossy().into_owned()).unwrap_or_else(|| "/".into());
        NamelessKind::Unlinked { dir, name: p.file_name().map(|x| x.to_string_lossy().into_owned()).unwrap_or_default() }
    };
    Ok(SharedOfd::Contents { kind, flags: d.flags, offset: d.pos, mode: meta.mode() & 0o7777, contents })
}

/// Whether a process outside `tree` (and other than this one) has the pipe
/// or FIFO of `d` open.
fn held_outside(d: &Desc, tree: &[i32]) -> bool {
    // Every pseudo-terminal master is the same file (/dev/pts/ptmx): its own is
    // its index.
    let index = is_ptmx(&d.link).then(|| tty_index(&format!("/proc/{}/fdinfo/{}", d.pid, d.fd)));
    let same = |path: &std::path::Path| match std::fs::read_link(path) {
        Ok(l) if d.pipe => l.as_os_str() == d.link.as_str(),
        Ok(l) => {
            std::fs::metadata(path).is_ok_and(|m| m.dev() == d.dev && m.ino() == d.ino)
                && index.as_ref().is_none_or(|i| is_ptmx(&l.to_string_lossy()) && tty_index(&path.to_string_lossy().replacen("/fd/", "/fdinfo/", 1)) == *i)
        }
        Err(_) => false,
    };
    let me = std::process::id() as i32;
    let Ok(procs) = std::fs::read_dir("/proc") else { return true };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if pid == me || tree.contains(&pid) {
            continue;
        }
        // Another user's process, whose fds cannot be read, may hold it.
        let fds = match std::fs::read_dir(p.path().join("fd")) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return true,
            Err(_) => continue,
        };
        if fds.flatten().any(|fd| same(&fd.path())) {
            return true;
        }
    }
    false
}

/// The `tty-index` of a pseudo-terminal master in fdinfo file `path`.
fn tty_index(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| l.strip_prefix("tty-index:")).and_then(|v| v.trim().parse().ok())
}

/// Every reason the tree of process `pid` cannot be checkpointed, by process
/// (empty when it can). Processes are not stopped: a tree that changes while
/// it is looked at may be judged on what it was.
pub fn check_tree(pid: i32, tcp: bool) -> Result<Vec<(i32, CantMove)>> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    let mut all = Vec::new();
    while let Some(p) = todo.pop() {
        if p != pid && zombie_status(p).is_some() {
            continue;
        }
        for r in check::check_for(p, Purpose::Tree)? {
            out.push((p, r));
        }
        all.push(p);
        todo.extend(procinfo::children(p));
    }
    if out.is_empty() {
        let live = vec![true; all.len()];
        if let Err(CheckpointError::CantMove { pid, reasons }) = share(&all, &live, &mut if tcp { TcpMode::Accept } else { TcpMode::Refuse }) {
            out.extend(reasons.into_iter().map(|r| (pid, r)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stored_once() {
        let mut covered = Vec::new();
        assert_eq!(uncovered(0, 100, &covered), vec![(0, 100)]);
        cover(&mut covered, 20, 40);
        cover(&mut covered, 60, 80);
        assert_eq!(uncovered(0, 100, &covered), vec![(0, 20), (40, 60), (80, 100)]);
        assert_eq!(uncovered(30, 70, &covered), vec![(40, 60)]);
        assert_eq!(uncovered(20, 40, &covered), vec![]);
        cover(&mut covered, 35, 65);
        assert_eq!(covered, vec![(20, 80)]);
        cover(&mut covered, 80, 90);
        assert_eq!(covered, vec![(20, 90)]);
        assert_eq!(uncovered(0, 100, &covered), vec![(0, 20), (90, 100)]);
    }
}
