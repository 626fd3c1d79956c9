//! Tree images: a checkpoint of a process and its descendants (or of one
//! process whose descriptors share open files or hold both ends of a pipe).
//!
//! ```text
//! tree image = tree header, then one process image (format.rs) per live member
//! header     = "HERDTREE" | version u32 LE | reserved u32 (0)
//!              | len u64 LE | crc32 u32 LE | payload[len]   (postcard TreeImage)
//! ```
//!
//! The crc32 covers version, reserved, len and payload. Members come parents
//! before children; zombies have no process image. Each process image is a
//! complete image as written by [`crate::ImageWriter`] (its own header, sections
//! and End), so a reader reads them one after the other from the same stream.
//! The header repeats what each member's restorer needs before any image is
//! read ([`Prepare`]: all members are forked first, parents forking children),
//! and a restore checks that it matches the member's image.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::format::FormatError;
use crate::model::{FileKind, OpenFile, Rlimit};

pub const TREE_MAGIC: [u8; 8] = *b"HERDTREE";
/// Version 2: [`SharedOfd::Event`]. Version 3: [`TreeImage::memory`] (and the
/// members' `VmaKind::Memory` regions, process image format version 4). Version 4:
/// [`SharedOfd::Tcp`], [`SharedOfd::PtyMaster`] and [`SharedOfd::PtySlave`], and an
/// inotify instance as [`SharedOfd::Event`]. Version 5: [`SharedOfd::Epoll`] and
/// [`SharedOfd::Fanotify`]. Version 6: [`SockAddr::Netlink`]. Versions 1 to 5 are read
/// as well.
pub const TREE_VERSION: u32 = 6;
/// The oldest tree version this herd reads.
pub const MIN_TREE_VERSION: u32 = 1;
/// Largest tree header a reader accepts (pipe contents are in it).
pub const MAX_TREE_LEN: u64 = 256 << 20;
/// Largest file carried with its contents.
pub const MAX_CONTENTS: u64 = 64 << 20;
/// Most members a tree may have.
pub const MAX_MEMBERS: usize = 1 << 15;
/// Largest memory object (shared memory, memfd, deleted file mapped).
pub const MAX_OBJECT: u64 = 1 << 40;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TreeImage {
    /// The root first, then parents before their children.
    pub members: Vec<Member>,
    /// Open files shared by several descriptors ([`FileKind::Shared`]).
    pub ofds: Vec<SharedOfd>,
    /// Pipes with both ends inside the tree.
    pub pipes: Vec<PipeImage>,
    /// Connected pairs of unix sockets with both ends inside the tree.
    pub socket_pairs: Vec<SocketPairImage>,
    /// Version 3: memory the members map that has no name to map it by again
    /// (`VmaKind::Memory` regions refer to it by index): made once, before any
    /// member, and mapped by each.
    pub memory: Vec<MemoryObject>,
}

/// A tree image of version 1 or 2 (no memory objects).
#[derive(Deserialize)]
struct TreeImageV2 {
    members: Vec<Member>,
    ofds: Vec<SharedOfd>,
    pipes: Vec<PipeImage>,
    socket_pairs: Vec<SocketPairImage>,
}

/// Memory without a name: shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS`, shared
/// by a parent and its children after fork), a memfd, or a file deleted while mapped.
/// It is made again as a memfd of `size` bytes (a file of [`SharedOfd::Contents`]
/// when `ofd` says a descriptor holds it too). Its bytes are the stored pages of the
/// members' shared mappings of it (each byte stored once), or that file's contents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryObject {
    pub kind: MemoryKind,
    /// Its size: a mapping beyond it faults (SIGBUS) as it did.
    pub size: u64,
    /// The [`SharedOfd::Contents`] entry of `ofds` that is this same file, open in a
    /// member: the object is that file (made with its contents), and the descriptor
    /// is opened on it.
    pub ofd: Option<u32>,
}

/// What a [`MemoryObject`] was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MemoryKind {
    /// Shared anonymous memory.
    Anonymous,
    /// memfd_create(name); its seals are set once every member is built (those
    /// of a memfd no descriptor holds cannot be read without privilege: 0).
    Memfd { name: String, seals: i32 },
    /// A file deleted while mapped, at `path`.
    Deleted { path: String },
}

/// A connected pair of unix sockets (socketpair, or connected to each other).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SocketPairImage {
    /// SOCK_STREAM (1), SOCK_DGRAM (2) or SOCK_SEQPACKET (5).
    pub kind: i32,
    /// For each end, the messages waiting to be read from it (a stream's
    /// bytes as one message).
    pub queued: [Vec<Vec<u8>>; 2],
    /// For each end, what has been shut down: RCV_SHUTDOWN (1), SEND_SHUTDOWN (2).
    pub shutdown: [u8; 2],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub pid: i32,
    /// Index of its parent in `members`; `None` for the root.
    pub parent: Option<u32>,
    /// Process group and session, by pid (restored when their leader is a
    /// member; otherwise the member stays in the restorer's).
    pub pgid: i32,
    pub sid: i32,
    /// A zombie: its raw wait status. It has no process image.
    pub zombie: Option<i32>,
    /// What its restorer prepares before the image is read; `None` for a zombie.
    pub prepare: Option<Prepare>,
}

/// The part of a member's image its restorer needs first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prepare {
    pub files: Vec<OpenFile>,
    pub cwd: String,
    pub umask: u32,
    pub rlimits: Vec<Rlimit>,
    pub personality: u32,
}

/// One open file description used by more than one descriptor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SharedOfd {
    /// A file reopened once: [`FileKind::Regular`], `Directory`, `Device` or `PathOnly`.
    File(FileKind),
    /// One end of pipe or FIFO `pipe` (index in [`TreeImage::pipes`]), with
    /// its file status flags (O_NONBLOCK, and the access mode).
    PipeEnd { pipe: u32, write: bool, flags: i32 },
    /// The restorer's own fd `fd` (0-2): a terminal or pipe that leads out of
    /// the tree, shared with the root's fd of that number.
    Outer { fd: i32, what: String },
    /// End `end` (0 or 1) of socket pair `pair` (index in
    /// [`TreeImage::socket_pairs`]), with its file status flags (O_NONBLOCK).
    SocketEnd { pair: u32, end: u8, flags: i32 },
    /// A socket made again, bound, listening or connected as it was (a TCP or
    /// unix listener, a bound or connected UDP socket, a TCP socket not yet
    /// connected): nothing was waiting in it.
    Socket {
        /// AF_INET, AF_INET6 or AF_UNIX.
        family: i32,
        kind: i32,
        protocol: i32,
        bound: Option<SockAddr>,
        connected: Option<SockAddr>,
        /// Listening, with this backlog.
        backlog: Option<u32>,
        /// Options set again before bind: (level, name, int value).
        options: Vec<(i32, i32, i32)>,
        flags: i32,
    },
    /// A file that has no name any more, carried with its contents: made
    /// again as an unnamed file (O_TMPFILE in `dir`, or a memfd).
    Contents { kind: NamelessKind, flags: i32, offset: u64, mode: u32, contents: Vec<u8> },
    /// An eventfd, timerfd or signalfd ([`FileKind::EventFd`], `TimerFd`, `SignalFd`)
    /// shared by several descriptors or processes (inherited, dup'd): made once, with its
    /// count, time left and unread expirations, or mask.
    Event(FileKind),
    /// Version 4: an established TCP connection, carried with TCP_REPAIR (`herd checkpoint
    /// --tcp-established`): made again with its sequence numbers, queues and options,
    /// without a handshake.
    Tcp(Box<TcpConnection>),
    /// Version 4: the master of a pseudo-terminal, made again as a new pair with
    /// the same settings.
    PtyMaster(Box<PtyImage>),
    /// Version 4: a descriptor of the slave of the pair whose master is shared
    /// file `master`, with its status flags (access mode, O_NONBLOCK).
    PtySlave { master: u32, flags: i32 },
    /// Version 5: an epoll instance shared by several descriptors or processes: made
    /// once, empty, then given its interest list by member `owner` (an index into
    /// [`TreeImage::members`], a live one), whose descriptors `targets` name, once
    /// that member's own descriptors are in place.
    Epoll { owner: u32, targets: Vec<crate::model::EpollTarget> },
    /// Version 5: a fanotify group (held by one descriptor or more), made again by the
    /// restorer with its marks. None of its events may be waiting at the checkpoint.
    Fanotify(Box<FanotifyImage>),
}

/// A fanotify group ([`SharedOfd::Fanotify`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FanotifyImage {
    /// `fanotify_init` flags (its class, FAN_REPORT_*, FAN_NONBLOCK, ...) and the event
    /// files' open flags, as fdinfo shows them.
    pub flags: u32,
    pub event_flags: u32,
    pub marks: Vec<FanotifyMark>,
}

/// One mark of a fanotify group: on a file or directory (`Inode`), a mount or a file
/// system, found again by `path`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FanotifyMark {
    pub on: FanotifyOn,
    pub path: String,
    /// The mark's own flags (FAN_MARK_IGNORED_SURV_MODIFY).
    pub flags: u32,
    pub mask: u64,
    pub ignored: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FanotifyOn {
    Inode,
    Mount,
    Filesystem,
}

/// A pseudo-terminal whose master is in the tree ([`SharedOfd::PtyMaster`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PtyImage {
    /// The master's status flags.
    pub flags: i32,
    /// Its number then (the slave was /dev/pts/N); the new pair has its own.
    pub number: u32,
    /// struct termios2 of the slave: c_iflag, c_oflag, c_cflag, c_lflag, c_line,
    /// c_cc (19 bytes), c_ispeed, c_ospeed.
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    pub cc: Vec<u8>,
    pub ispeed: u32,
    pub ospeed: u32,
    /// Rows, columns, x and y pixels.
    pub winsize: [u16; 4],
    /// Not unlocked yet (unlockpt).
    pub locked: bool,
    /// Packet mode on.
    pub packet: bool,
    /// The member leading the session whose controlling terminal it is (pid).
    pub session: Option<i32>,
}

/// An established TCP connection ([`SharedOfd::Tcp`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TcpConnection {
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    /// Options set again before connecting: (level, name, int value).
    pub options: Vec<(i32, i32, i32)>,
    /// File status flags (O_NONBLOCK).
    pub flags: i32,
    /// The sequence number after the last byte queued to send.
    pub send_seq: u32,
    /// The next sequence number expected from the peer.
    pub recv_seq: u32,
    /// Sent, not yet acknowledged.
    pub sent: Vec<u8>,
    /// Queued, not sent yet.
    pub unsent: Vec<u8>,
    /// Received, not yet read by the process.
    pub received: Vec<u8>,
    pub mss: u32,
    /// Window scaling (sending, receiving), when negotiated.
    pub wscale: Option<(u8, u8)>,
    pub sack: bool,
    /// The timestamp value at the checkpoint, when timestamps were negotiated.
    pub timestamp: Option<u32>,
    /// snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup (struct tcp_repair_window).
    pub window: [u32; 5],
}

/// A socket address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SockAddr {
    Inet(std::net::SocketAddr),
    /// A unix socket's name: a path, or an abstract name (first byte 0).
    Unix(Vec<u8>),
    /// Tree version 6: a netlink address (struct sockaddr_nl): a port id, and
    /// multicast groups as a bind takes them (group g is bit g-1) or the one group
    /// a connect sends to.
    Netlink { portid: u32, groups: u32 },
}

impl std::fmt::Display for SockAddr {
    /// As people write it: `host:port`, a unix path, `@` and an abstract name, a
    /// netlink port and groups.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SockAddr::Inet(i) => write!(f, "{i}"),
            SockAddr::Unix(n) => match n.split_first() {
                Some((0, rest)) => write!(f, "@{}", String::from_utf8_lossy(rest)),
                _ => f.write_str(&String::from_utf8_lossy(n)),
            },
            SockAddr::Netlink { portid, groups } => write!(f, "netlink port {portid}, groups {groups:#x}"),
        }
    }
}

/// What kind of nameless file a [`SharedOfd::Contents`] is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum NamelessKind {
    /// A regular file deleted while open: made again with O_TMPFILE in `dir`
    /// (the directory it was in, so on the same file system).
    Unlinked { dir: String, name: String },
    /// memfd_create(name), with its seals (F_ADD_SEALS).
    Memfd { name: String, seals: i32 },
}

/// A pipe or FIFO: the bytes in it not read yet, and its capacity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipeImage {
    pub contents: Vec<u8>,
    pub capacity: u32,
    /// A FIFO's path (its ends are opened there again); `None` for a pipe.
    pub fifo: Option<String>,
}

fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// Writes the tree header (the member images follow it).
pub fn write_tree<W: Write>(out: &mut W, tree: &TreeImage) -> io::Result<()> {
    let payload = postcard::to_stdvec(tree).map_err(io::Error::other)?;
    let version = TREE_VERSION.to_le_bytes();
    let reserved = 0u32.to_le_bytes();
    let len = (payload.len() as u64).to_le_bytes();
    out.write_all(&TREE_MAGIC)?;
    out.write_all(&version)?;
    out.write_all(&reserved)?;
    out.write_all(&len)?;
    out.write_all(&crc(&[&version, &reserved, &len, &payload]).to_le_bytes())?;
    out.write_all(&payload)
}

fn eof(e: io::Error) -> FormatError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FormatError::Truncated("the tree header")
    } else {
        FormatError::Io(e)
    }
}

/// The length of the tree header's payload for `tree`.
pub fn header_len(tree: &TreeImage) -> io::Result<u64> {
    postcard::experimental::serialized_size(tree).map(|n| n as u64).map_err(io::Error::other)
}

/// Reads and checks the tree header after its magic (which the caller has
/// read to tell a tree image from a process image).
pub fn read_tree_after_magic<R: Read>(input: &mut R) -> Result<TreeImage, FormatError> {
    let mut hdr = [0u8; 20];
    input.read_exact(&mut hdr).map_err(eof)?;
    let version = u32::from_le_bytes(hdr[0..4].try_into().expect("4"));
    if !(MIN_TREE_VERSION..=TREE_VERSION).contains(&version) {
        return Err(FormatError::Corrupt(format!(
            "tree image version {version} is not supported (this herd reads versions {MIN_TREE_VERSION} to {TREE_VERSION}{})",
            if version > TREE_VERSION { "; it was made by a newer herd" } else { "" }
        )));
    }
    let len = u64::from_le_bytes(hdr[8..16].try_into().expect("8"));
    let sum = u32::from_le_bytes(hdr[16..20].try_into().expect("4"));
    if hdr[4..8] != [0; 4] {
        return Err(FormatError::Corrupt("reserved tree header field is not 0".into()));
    }
    if len > MAX_TREE_LEN {
        return Err(FormatError::Corrupt(format!("tree header claims {len} bytes (limit {MAX_TREE_LEN})")));
    }
    // Read as it arrives, so a false length costs only what is there.
    let mut payload = Vec::new();
    input.take(len).read_to_end(&mut payload).map_err(FormatError::Io)?;
    if payload.len() as u64 != len {
        return Err(FormatError::Truncated("the tree header"));
    }
    if crc(&[&hdr[0..4], &hdr[4..8], &hdr[8..16], &payload]) != sum {
        return Err(FormatError::Checksum { kind: "tree", offset: 0 });
    }
    let corrupt = |e: postcard::Error| FormatError::Corrupt(format!("tree header: {e}"));
    let (tree, rest): (TreeImage, &[u8]) = if version >= 3 {
        postcard::take_from_bytes(&payload).map_err(corrupt)?
    } else {
        let (t, rest): (TreeImageV2, &[u8]) = postcard::take_from_bytes(&payload).map_err(corrupt)?;
        (TreeImage { members: t.members, ofds: t.ofds, pipes: t.pipes, socket_pairs: t.socket_pairs, memory: Vec::new() }, rest)
    };
    if !rest.is_empty() {
        return Err(FormatError::Corrupt(format!("tree header has {} bytes after the tree", rest.len())));
    }
    let new_in_4 = |o: &SharedOfd| matches!(o, SharedOfd::Tcp(_) | SharedOfd::PtyMaster(_) | SharedOfd::PtySlave { .. } | SharedOfd::Event(FileKind::Inotify { .. }));
    if version < 4 && tree.ofds.iter().any(new_in_4) {
        return Err(FormatError::Corrupt(format!("tree image version {version} holds a TCP connection, a pseudo-terminal or a shared inotify instance (version 4 and later may)")));
    }
    if version < 5 && tree.ofds.iter().any(|o| matches!(o, SharedOfd::Epoll { .. } | SharedOfd::Fanotify(_))) {
        return Err(FormatError::Corrupt(format!("tree image version {version} holds a shared epoll instance or a fanotify group (version 5 and later may)")));
    }
    let netlink = |a: &Option<SockAddr>| matches!(a, Some(SockAddr::Netlink { .. }));
    if version < 6 && tree.ofds.iter().any(|o| matches!(o, SharedOfd::Socket { bound, connected, .. } if netlink(bound) || netlink(connected))) {
        return Err(FormatError::Corrupt(format!("tree image version {version} holds a netlink socket (version 6 and later may)")));
    }
    tree.validate()?;
    Ok(tree)
}

impl TreeImage {
    /// Structural checks: a tree rooted at member 0, parents first, distinct
    /// positive pids, every reference in range, zombies without images.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |why: String| Err(FormatError::Corrupt(format!("tree header: {why}")));
        if self.members.is_empty() || self.members.len() > MAX_MEMBERS {
            return bad(format!("{} members", self.members.len()));
        }
        let mut pids: Vec<i32> = self.members.iter().map(|m| m.pid).collect();
        pids.sort_unstable();
        if pids[0] <= 0 || pids.windows(2).any(|w| w[0] == w[1]) {
            return bad("pids must be positive and distinct".into());
        }
        for (i, m) in self.members.iter().enumerate() {
            match (i, m.parent) {
                (0, None) => {}
                (0, Some(_)) => return bad("the root has a parent".into()),
                (_, None) => return bad(format!("member {i} (pid {}) has no parent", m.pid)),
                (_, Some(p)) if p as usize >= i => return bad(format!("member {i} comes before its parent")),
                (_, Some(p)) if self.members[p as usize].zombie.is_some() => return bad(format!("member {i}'s parent is a zombie")),
                _ => {}
            }
            match (&m.zombie, &m.prepare) {
                // A zombie ended by exit or by a signal (low 7 bits: the signal, 1..=64).
                (Some(st), None) if i > 0 => {
                    let sig = st & 0x7f;
                    if (sig == 0 && st & !0xff00 != 0) || (sig != 0 && st & !0xff != 0) || sig == 0x7f || sig > 64 {
                        return bad(format!("member {i}: {st:#x} is not how a process ends"));
                    }
                }
                (None, Some(p)) => {
                    if let Err(why) = crate::model::check_files(&p.files) {
                        return bad(format!("pid {}: {why}", m.pid));
                    }
                    for f in &p.files {
                        if let FileKind::Shared { ofd } = f.kind {
                            if ofd as usize >= self.ofds.len() {
                                return bad(format!("pid {} fd {} refers to shared file {ofd} of {}", m.pid, f.fd, self.ofds.len()));
                            }
                        }
                    }
                }
                _ => return bad(format!("member {i}: a zombie (not the root) has no image, a live process has one")),
            }
        }
        for (i, o) in self.ofds.iter().enumerate() {
            match o {
                SharedOfd::File(FileKind::Regular { .. } | FileKind::Directory { .. } | FileKind::Device { .. } | FileKind::PathOnly { .. }) => {}
                SharedOfd::File(_) => return bad(format!("shared file {i} is of a kind that is not reopened by path")),
                SharedOfd::PipeEnd { pipe, .. } if *pipe as usize >= self.pipes.len() => return bad(format!("shared file {i} refers to pipe {pipe}")),
                SharedOfd::PipeEnd { .. } => {}
                SharedOfd::Outer { fd, .. } if !(0..=2).contains(fd) => return bad(format!("shared file {i} is the restorer's fd {fd}")),
                SharedOfd::Outer { .. } => {}
                SharedOfd::SocketEnd { pair, end, .. } if *pair as usize >= self.socket_pairs.len() || *end > 1 => {
                    return bad(format!("shared file {i} refers to end {end} of socket pair {pair}"))
                }
                SharedOfd::SocketEnd { .. } => {}
                SharedOfd::Contents { contents, .. } if contents.len() as u64 > MAX_CONTENTS => {
                    return bad(format!("shared file {i} holds {} bytes", contents.len()))
                }
                SharedOfd::Contents { .. } => {}
                SharedOfd::Socket { family, .. } if ![1, 2, 10, 16].contains(family) => return bad(format!("shared file {i} is a socket of family {family}")),
                SharedOfd::Socket { family, bound, connected, .. } if [bound, connected].iter().any(|a| matches!(a, Some(SockAddr::Netlink { .. }))) != (*family == 16) => {
                    return bad(format!("shared file {i}: a socket of family {family} with a netlink address, or the reverse"))
                }
                SharedOfd::Socket { .. } => {}
                SharedOfd::Event(FileKind::EventFd { .. } | FileKind::TimerFd { .. } | FileKind::SignalFd { .. } | FileKind::Inotify { .. }) => {}
                SharedOfd::Event(_) => return bad(format!("shared file {i} is an event file of a kind that is not made again shared")),
                SharedOfd::PtyMaster(p) => {
                    if p.cc.len() != 19 {
                        return bad(format!("shared file {i}: a pseudo-terminal with {} control characters (19)", p.cc.len()));
                    }
                    if let Some(s) = p.session {
                        if !self.members.iter().any(|m| m.pid == s && m.sid == s && m.zombie.is_none()) {
                            return bad(format!("shared file {i}: a pseudo-terminal of the session of {s}, which leads none of the tree"));
                        }
                    }
                }
                SharedOfd::Fanotify(f) => {
                    if let Some(m) = f.marks.iter().find(|m| m.path.is_empty() || m.path.contains('\0') || m.flags & !0x40 != 0) {
                        return bad(format!("shared file {i}: a fanotify mark on {:?} with flags {:#x}", m.path, m.flags));
                    }
                }
                SharedOfd::Epoll { owner, .. } => {
                    if self.members.get(*owner as usize).is_none_or(|m| m.zombie.is_some()) {
                        return bad(format!("shared file {i}: an epoll filled by member {owner}, which is not a live member"));
                    }
                }
                SharedOfd::PtySlave { master, .. } => {
                    if !matches!(self.ofds.get(*master as usize), Some(SharedOfd::PtyMaster(_))) {
                        return bad(format!("shared file {i}: the slave of shared file {master}, which is not a pseudo-terminal's master"));
                    }
                }
                SharedOfd::Tcp(c) => {
                    let queued = c.sent.len() + c.unsent.len() + c.received.len();
                    if c.local.is_ipv4() != c.remote.is_ipv4() || c.remote.port() == 0 || c.local.port() == 0 {
                        return bad(format!("shared file {i}: a TCP connection {} -> {}", c.local, c.remote));
                    }
                    if queued as u64 > 2 * MAX_CONTENTS || c.mss == 0 || c.wscale.is_some_and(|(s, r)| s > 14 || r > 14) {
                        return bad(format!("shared file {i}: a TCP connection with {queued} bytes queued, mss {}, window scaling {:?}", c.mss, c.wscale));
                    }
                }
            }
        }
        for (i, m) in self.memory.iter().enumerate() {
            if m.size > MAX_OBJECT {
                return bad(format!("memory object {i} is {} bytes", m.size));
            }
            if let Some(o) = m.ofd {
                match self.ofds.get(o as usize) {
                    Some(SharedOfd::Contents { contents, .. }) if contents.len() as u64 <= m.size => {}
                    _ => return bad(format!("memory object {i} is shared file {o}, which is not a file carried with its contents (or is larger)")),
                }
                if self.memory[..i].iter().any(|p| p.ofd == Some(o)) {
                    return bad(format!("shared file {o} is two memory objects"));
                }
            }
        }
        for (i, p) in self.socket_pairs.iter().enumerate() {
            let bytes: usize = p.queued.iter().flatten().map(|m| m.len()).sum();
            if ![1, 2, 5].contains(&p.kind) || bytes > 64 << 20 || p.shutdown.iter().any(|s| *s > 3) {
                return bad(format!("socket pair {i}: kind {}, {bytes} bytes queued", p.kind));
            }
        }
        for (i, p) in self.pipes.iter().enumerate() {
            if p.contents.len() as u64 > u64::from(p.capacity) || p.capacity > 1 << 30 {
                return bad(format!("pipe {i} holds {} bytes, capacity {}", p.contents.len(), p.capacity));
            }
        }
        Ok(())
    }

    /// The members that have a process image, in image order.
    pub fn live(&self) -> impl Iterator<Item = (usize, &Member)> {
        self.members.iter().enumerate().filter(|(_, m)| m.zombie.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TreeImage {
        let prepare = Prepare { files: vec![OpenFile { fd: 1, cloexec: false, kind: FileKind::Shared { ofd: 1 } }], cwd: "/".into(), umask: 0o22, rlimits: vec![], personality: 0 };
        TreeImage {
            members: vec![
                Member { pid: 10, parent: None, pgid: 10, sid: 1, zombie: None, prepare: Some(prepare.clone()) },
                Member { pid: 11, parent: Some(0), pgid: 10, sid: 1, zombie: None, prepare: Some(prepare) },
                Member { pid: 12, parent: Some(0), pgid: 10, sid: 1, zombie: Some(3 << 8), prepare: None },
            ],
            ofds: vec![
                SharedOfd::PipeEnd { pipe: 0, write: false, flags: 0 },
                SharedOfd::PipeEnd { pipe: 0, write: true, flags: 0 },
                SharedOfd::Tcp(Box::new(tcp())),
                SharedOfd::PtyMaster(Box::new(pty())),
                SharedOfd::PtySlave { master: 3, flags: 2 },
            ],
            pipes: vec![PipeImage { contents: b"hello".to_vec(), capacity: 65536, fifo: None }],
            socket_pairs: vec![SocketPairImage { kind: 2, queued: [vec![b"a".to_vec(), b"bc".to_vec()], vec![]], shutdown: [0, 2] }],
            memory: vec![MemoryObject { kind: MemoryKind::Anonymous, size: 1 << 20, ofd: None }, MemoryObject { kind: MemoryKind::Memfd { name: "m".into(), seals: 0 }, size: 4096, ofd: None }],
        }
    }

    fn pty() -> PtyImage {
        PtyImage { flags: 2, number: 4, iflag: 1, oflag: 2, cflag: 3, lflag: 4, line: 0, cc: vec![3; 19], ispeed: 38400, ospeed: 38400, winsize: [24, 80, 0, 0], locked: false, packet: true, session: None }
    }

    fn tcp() -> TcpConnection {
        TcpConnection {
            local: "127.0.0.1:4000".parse().unwrap(),
            remote: "127.0.0.1:5000".parse().unwrap(),
            options: vec![(6, 1, 1)],
            flags: 0,
            send_seq: 7,
            recv_seq: u32::MAX,
            sent: b"s".to_vec(),
            unsent: b"uu".to_vec(),
            received: b"rrr".to_vec(),
            mss: 1460,
            wscale: Some((7, 9)),
            sack: true,
            timestamp: Some(12345),
            window: [1, 2, 3, 4, 5],
        }
    }

    fn bytes(t: &TreeImage) -> Vec<u8> {
        let mut v = Vec::new();
        write_tree(&mut v, t).unwrap();
        v
    }

    fn read(b: &[u8]) -> Result<TreeImage, FormatError> {
        assert_eq!(b[..8], TREE_MAGIC);
        read_tree_after_magic(&mut &b[8..])
    }

    #[test]
    fn round_trip_and_every_damage_is_refused() {
        let t = sample();
        let b = bytes(&t);
        assert_eq!(read(&b).unwrap(), t);
        for off in 8..b.len() {
            let mut d = b.clone();
            d[off] ^= 0x10;
            assert!(read(&d).is_err(), "byte {off} changed went unnoticed");
        }
        for cut in 8..b.len() {
            assert!(read(&b[..cut]).is_err(), "cut at {cut} went unnoticed");
        }
    }

    #[test]
    fn version_2_trees_are_read_without_memory() {
        let mut t = sample();
        t.memory.clear();
        t.ofds.truncate(2);
        let old = TreeImageV2Out { members: t.members.clone(), ofds: t.ofds.clone(), pipes: t.pipes.clone(), socket_pairs: t.socket_pairs.clone() };
        let payload = postcard::to_stdvec(&old).unwrap();
        let (version, reserved, len) = (2u32.to_le_bytes(), 0u32.to_le_bytes(), (payload.len() as u64).to_le_bytes());
        let mut b = TREE_MAGIC.to_vec();
        for part in [&version[..], &reserved, &len, &crc(&[&version, &reserved, &len, &payload]).to_le_bytes(), &payload] {
            b.extend_from_slice(part);
        }
        assert_eq!(read(&b).unwrap(), t);
    }

    /// A shared epoll appeared in version 5: it round-trips in version 5, one in an older
    /// tree is corrupt.
    #[test]
    fn a_shared_epoll_needs_version_5() {
        let mut t = sample();
        t.ofds.push(SharedOfd::Epoll { owner: 1, targets: vec![crate::model::EpollTarget { fd: 3, events: 0x19, data: 0xe1 }] });
        assert_eq!(read(&bytes(&t)).unwrap(), t);
        assert!(matches!(read(&as_version(&t, 4)), Err(FormatError::Corrupt(m)) if m.contains("epoll")));
    }

    fn fanotify(path: &str, flags: u32) -> SharedOfd {
        let mark = FanotifyMark { on: FanotifyOn::Inode, path: path.into(), flags, mask: 0xa, ignored: 0 };
        SharedOfd::Fanotify(Box::new(FanotifyImage { flags: 1, event_flags: 0x8000, marks: vec![mark] }))
    }

    /// A fanotify group appeared in version 5 too.
    #[test]
    fn a_fanotify_group_needs_version_5() {
        let mut t = sample();
        t.ofds.push(fanotify("/tmp/watched", 0x40));
        assert_eq!(read(&bytes(&t)).unwrap(), t);
        assert!(matches!(read(&as_version(&t, 4)), Err(FormatError::Corrupt(m)) if m.contains("fanotify")));
    }

    /// A netlink socket appeared in version 6: it round-trips, one in an older tree is
    /// corrupt, and so is a netlink address on a socket of another family.
    #[test]
    fn a_netlink_socket_needs_version_6() {
        let mut t = sample();
        let bound = Some(SockAddr::Netlink { portid: 4242, groups: 0x80 });
        t.ofds.push(SharedOfd::Socket { family: 16, kind: 3, protocol: 0, bound: bound.clone(), connected: None, backlog: None, options: vec![(270, 11, 1)], flags: 0 });
        assert_eq!(read(&bytes(&t)).unwrap(), t);
        assert!(matches!(read(&as_version(&t, 5)), Err(FormatError::Corrupt(m)) if m.contains("netlink")));
        t.ofds.pop();
        t.ofds.push(SharedOfd::Socket { family: 1, kind: 2, protocol: 0, bound, connected: None, backlog: None, options: vec![], flags: 0 });
        assert!(matches!(read(&bytes(&t)), Err(FormatError::Corrupt(m)) if m.contains("netlink address")));
    }

    /// Tree `t` written with header version `version` (its payload as this herd encodes it).
    fn as_version(t: &TreeImage, version: u32) -> Vec<u8> {
        let payload = postcard::to_stdvec(t).unwrap();
        let (version, reserved, len) = (version.to_le_bytes(), 0u32.to_le_bytes(), (payload.len() as u64).to_le_bytes());
        let mut b = TREE_MAGIC.to_vec();
        for part in [&version[..], &reserved, &len, &crc(&[&version, &reserved, &len, &payload]).to_le_bytes(), &payload] {
            b.extend_from_slice(part);
        }
        b
    }

    /// A TCP connection appeared in version 4: one in an older tree is corrupt.
    #[test]
    fn a_tcp_connection_needs_version_4() {
        let t = sample();
        assert!(matches!(read(&as_version(&t, 3)), Err(FormatError::Corrupt(m)) if m.contains("TCP")));
        let mut t3 = t.clone();
        t3.ofds.truncate(2);
        assert_eq!(read(&as_version(&t3, 3)).unwrap(), t3);
    }

    #[derive(Serialize)]
    struct TreeImageV2Out {
        members: Vec<Member>,
        ofds: Vec<SharedOfd>,
        pipes: Vec<PipeImage>,
        socket_pairs: Vec<SocketPairImage>,
    }

    #[test]
    fn bad_structure_is_refused() {
        type Change = Box<dyn Fn(&mut TreeImage)>;
        let cases: Vec<(&str, Change)> = vec![
            ("no members", Box::new(|t| t.members.clear())),
            ("same pid twice", Box::new(|t| t.members[1].pid = 10)),
            ("child before parent", Box::new(|t| t.members[1].parent = Some(1))),
            ("root with a parent", Box::new(|t| t.members[0].parent = Some(0))),
            ("zombie with an image", Box::new(|t| t.members[2].prepare = t.members[1].prepare.clone())),
            ("live without an image", Box::new(|t| t.members[1].prepare = None)),
            ("zombie parent", Box::new(|t| t.members.push(Member { pid: 13, parent: Some(2), pgid: 10, sid: 1, zombie: None, prepare: t.members[1].prepare.clone() }))),
            ("shared fd out of range", Box::new(|t| t.ofds.truncate(1))),
            ("pipe out of range", Box::new(|t| t.pipes.clear())),
            ("overfull pipe", Box::new(|t| t.pipes[0].capacity = 2)),
            ("outer fd 7", Box::new(|t| t.ofds.push(SharedOfd::Outer { fd: 7, what: "x".into() }))),
            ("shared eventfd", Box::new(|t| t.ofds.push(SharedOfd::File(FileKind::EventFd { count: 0, flags: 0 })))),
            ("shared event file of a path", Box::new(|t| t.ofds.push(SharedOfd::Event(FileKind::Device { path: "/dev/null".into(), flags: 0 })))),
            ("epoll filled by a zombie", Box::new(|t| t.ofds.push(SharedOfd::Epoll { owner: 2, targets: Vec::new() }))),
            ("fanotify mark on no path", Box::new(|t| t.ofds.push(fanotify("", 0)))),
            ("evictable fanotify mark", Box::new(|t| t.ofds.push(fanotify("/tmp", 0x200)))),
            ("epoll filled by no member", Box::new(|t| t.ofds.push(SharedOfd::Epoll { owner: 9, targets: Vec::new() }))),
            ("socket end 2", Box::new(|t| t.ofds.push(SharedOfd::SocketEnd { pair: 0, end: 2, flags: 0 }))),
            ("socket pair out of range", Box::new(|t| t.ofds.push(SharedOfd::SocketEnd { pair: 1, end: 0, flags: 0 }))),
            ("raw socket pair", Box::new(|t| t.socket_pairs[0].kind = 3)),
            ("huge memory object", Box::new(|t| t.memory[0].size = MAX_OBJECT + 1)),
            ("memory object of a pipe end", Box::new(|t| t.memory[1].ofd = Some(0))),
            ("memory object of no file", Box::new(|t| t.memory[1].ofd = Some(9))),
            ("zombie that is stopped", Box::new(|t| t.members[2].zombie = Some(0x137f))),
            ("zombie by signal 99", Box::new(|t| t.members[2].zombie = Some(99))),
            ("an fd twice", Box::new(|t| {
                let p = t.members[1].prepare.as_mut().unwrap();
                p.files.push(p.files[0].clone());
            })),
            ("a negative fd", Box::new(|t| t.members[1].prepare.as_mut().unwrap().files[0].fd = -1)),
            ("TCP to port 0", Box::new(|t| t.ofds.push(SharedOfd::Tcp(Box::new(TcpConnection { remote: "127.0.0.1:0".parse().unwrap(), ..tcp() }))))),
            ("TCP from v4 to v6", Box::new(|t| t.ofds.push(SharedOfd::Tcp(Box::new(TcpConnection { remote: "[::1]:80".parse().unwrap(), ..tcp() }))))),
            ("TCP with mss 0", Box::new(|t| t.ofds.push(SharedOfd::Tcp(Box::new(TcpConnection { mss: 0, ..tcp() }))))),
            ("TCP window scale 15", Box::new(|t| t.ofds.push(SharedOfd::Tcp(Box::new(TcpConnection { wscale: Some((15, 0)), ..tcp() }))))),
            ("pty with 18 control characters", Box::new(|t| t.ofds.push(SharedOfd::PtyMaster(Box::new(PtyImage { cc: vec![0; 18], ..pty() }))))),
            ("pty of a session no member leads", Box::new(|t| t.ofds.push(SharedOfd::PtyMaster(Box::new(PtyImage { session: Some(11), ..pty() }))))),
            ("slave of a pipe", Box::new(|t| t.ofds.push(SharedOfd::PtySlave { master: 0, flags: 2 }))),
            ("TCP queues too long", Box::new(|t| t.ofds.push(SharedOfd::Tcp(Box::new(TcpConnection { received: vec![0; (2 * MAX_CONTENTS + 1) as usize], ..tcp() }))))),
        ];
        for (what, change) in cases {
            let mut t = sample();
            change(&mut t);
            assert!(matches!(read(&bytes(&t)), Err(FormatError::Corrupt(_))), "{what} was accepted");
        }
    }
}
