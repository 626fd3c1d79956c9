//! What home and a remote node say about one migrated process, on the node
//! stream (Noise) between them. The exchanges are drawn in
//! docs/migration-protocol.md.
//!
//! Home opens the stream with `PeerRequest::Adopt(`[`Adopt`]`)`, preceded by
//! [`PROTOCOL_VERSION`] (see [`encode_request`]); the target answers
//! [`ToHome::Accepted`] or [`ToHome::Refused`] before home touches the
//! process. From then on the stream carries [`ToRemote`] one way and
//! [`ToHome`] the other, until the process ends or leaves the node.
//!
//! Every message is a postcard encoding; an enum's variant is its index, a
//! varint, so **the order of the variants is the wire's tag numbers**: new
//! variants go at the end, never in between (the tests below pin the tags).
//!
//! Home is the single coordinator of every move of its processes: a move
//! from node B to node C is relayed through home, so a remote node only ever
//! talks to the homes of its guests.

use serde::{Deserialize, Serialize};

use crate::syscalls::{Call, Reply};

/// The version of the node-stream protocol this herd speaks. Version 1 was
/// the unversioned protocol of herd 0.1 (its first byte, the request's
/// variant, reads as version 0 or 1). Version 2: version prefix, Accepted
/// before the image, typed refusals, post-copy. Version 3: threads. Version 4:
/// direct file access ([`ToRemote::Files`], [`ToHome::Offsets`]). Version 5:
/// [`ToRemote::Freeze`] (`herd migrate PID freeze`). Version 6: epoll calls are
/// forwarded (`OutKind::Items`, a reply of `ret` fixed-size items). Version 9:
/// [`Adopt::track_writes`] and [`ToRemote::ImageKept`] (the image of a move from home
/// is the base of the first incremental checkpoint). Version 11: a process forks where
/// it runs ([`ToHome::Fork`], [`ToRemote::Forked`], [`Adopt::fork_of`]). Version 12: a
/// file home has open is mapped from an identical copy where the process runs
/// ([`ToHome::Identify`], [`ToRemote::Identity`]); sendmsg, recvmsg, sendmmsg and
/// recvmmsg are forwarded (`OutKind::MsgHdr`, `OutKind::Mmsg`). Version 13: a process
/// execs where it runs when the program is the same file there ([`ToHome::ExecIdentify`],
/// [`ToRemote::ExecIdentity`], [`ToHome::Exec`]).
pub const PROTOCOL_VERSION: u32 = 13;

/// How a move is made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MoveMode {
    /// The process stays stopped until its whole image is on the target.
    #[default]
    StopAndCopy,
    /// The process is stopped only while its registers and state move; its
    /// private anonymous memory follows while it already runs on the target,
    /// fetched first where it touches it.
    PostCopy,
}

impl std::fmt::Display for MoveMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MoveMode::StopAndCopy => "stop-and-copy",
            MoveMode::PostCopy => "post-copy",
        })
    }
}

/// The first message of a migration stream: who the process is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adopt {
    /// The home node's name (for logs and `herd ps` on the remote node).
    pub home: String,
    /// The process's pid at home: what getpid() answers.
    pub pid: i32,
    pub uid: u32,
    pub cmd: String,
    pub mode: MoveMode,
    /// Version 9: home keeps the image of this move as the process's checkpoint: the
    /// node tracks its writes from the restore on, so that its first checkpoint there
    /// can be an increment of that image ([`ToRemote::ImageKept`] names it).
    pub track_writes: bool,
    /// Version 11: no image follows: the process is the child that process `parent` (a
    /// home pid) makes on the node by its fork `seq` ([`ToHome::Fork`]), once home has
    /// made its deputy (by forking the parent's). The node answers Accepted and then
    /// [`ToHome::Running`] as for any arrival.
    pub fork_of: Option<ForkOf>,
}

/// Whose fork a process is ([`Adopt::fork_of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkOf {
    pub parent: i32,
    pub seq: u64,
}

/// Why a node does not take a process. Sent as a value, shown as a sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// Tag 0, fixed forever: the answer to a stream of another version.
    #[error("it speaks node protocol version {theirs}, this node speaks version {ours}")]
    Version { ours: u32, theirs: u32 },
    #[error("node {node} is blocked (accepts no processes)")]
    Blocked { node: String },
    #[error("this node does not take root's processes (allow_root_guests = false)")]
    RootGuest,
    #[error("this node cannot take processes by post-copy: {why}")]
    NoPostCopy { why: String },
    #[error("the restore failed: {why}")]
    Restore { why: String },
    #[error("the first message was not understood: {why}")]
    BadRequest { why: String },
}

/// A process's resource use so far, as /proc shows it where it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time, clock ticks (user + system).
    pub cpu_ticks: u64,
    /// Resident bytes.
    pub rss: u64,
    /// Nanoseconds it has been runnable: on a CPU or waiting for one (schedstat). Over a
    /// second, the share of a CPU it wants, however busy the node.
    pub runnable_ns: u64,
    /// read/write system calls made (/proc/PID/io), where it runs.
    pub io_calls: u64,
}

impl Usage {
    /// Reads it for `pid` (its main thread's scheduling figures); None if it is gone.
    pub fn of(pid: i32) -> Option<Usage> {
        let p = procfs::process::Process::new(pid).ok()?;
        let st = p.stat().ok()?;
        let runnable_ns = p.schedstat().map(|s| s.sum_exec_runtime + s.run_delay).unwrap_or(0);
        let io_calls = p.io().map(|io| io.syscr + io.syscw).unwrap_or(0);
        Some(Usage { cpu_ticks: st.utime + st.stime, rss: st.rss * 4096, runnable_ns, io_calls })
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ending {
    Code(i32),
    Signal(i32),
}

/// Home to remote. Tags (variant indexes) in the comments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToRemote {
    /// Tag 0: Part of the image (after [`ToHome::Accepted`]).
    Image(Chunk),
    /// Tag 1: The image is complete.
    ImageEnd,
    /// Tag 2: The result of forwarded call `seq`.
    Reply { seq: u64, reply: Reply },
    /// Tag 3: A signal sent to the process at home, caught by the deputy of
    /// thread `tid` (home thread id). `during_call`: it interrupted the forwarded
    /// call that thread was serving, which home abandoned. `directed`: it was
    /// sent to that thread (tkill/tgkill), not to the process.
    Signal { sig: i32, during_call: bool, tid: i32, directed: bool },
    /// Tag 4: Freeze the process and send its image home ([`ToHome::Image`]...).
    Capture,
    /// Tag 5: The image arrived where it is going: end the frozen copy here.
    Commit,
    /// Tag 6: The move failed: let the frozen copy run on here.
    Abort,
    /// Tag 7: End the process (its home ended).
    Kill,
    /// Tag 8: Post-copy, before the image: the runs of pages (address, length)
    /// that are not in the image and come as [`ToRemote::Pages`] later.
    Lazy(Vec<(u64, u64)>),
    /// Tag 9: Post-copy: pages at `addr` (whole pages, inside the lazy runs).
    Pages {
        addr: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Tag 10: Post-copy: every lazy page has been sent (requests are still answered).
    PagesEnd,
    /// Tag 11: Home gives up the move before the image was complete (the process
    /// could not be captured, or the move was called off): nothing to restore.
    Cancel { reason: String },
    /// Tag 12: As [`ToRemote::Capture`], for a move on by post-copy: the image without
    /// the private anonymous pages ([`ToHome::Lazy`] first); the frozen copy
    /// stays until [`ToRemote::Commit`] and sends its pages after [`ToRemote::PushPages`].
    CapturePostCopy,
    /// Tag 13: The process runs on the next node: send the lazy pages ([`ToHome::Pages`]).
    PushPages,
    /// Tag 14: The next node waits for the page at `addr`: send it first.
    PageRequest { addr: u64 },
    /// Tag 15: Home made the twin of the thread asked for by [`ToHome::ThreadBirth`]
    /// `seq`: thread `tid` at home, whose id the new thread is to have (negative: it
    /// could not; the process comes home to make the thread).
    ThreadBorn { seq: u64, tid: i32 },
    /// Tag 16: Before [`ToRemote::ImageEnd`]: what of home's files the process may use
    /// directly where it goes (directories shared by both nodes, DFSA), and which of its
    /// files have an offset of their own (read-ahead).
    Files(Files),
    /// Tag 17: Writes the process made to `fd` and the node gathered
    /// ([`ToHome::Write`]) failed at home with `errno`: the answer to its next write,
    /// fsync or close of it.
    WriteFailed { fd: i32, errno: i32 },
    /// Tag 18: Stop the process where it runs (true: `herd migrate PID freeze`) or let it
    /// go on (false: `continue`). Not job control: its deputy, its parent and its calls
    /// at home do not see it.
    Freeze(bool),
    /// Tag 19 (version 7): As [`ToRemote::Capture`], for checkpoint `id` kept at home:
    /// when the node has tracked the process's writes since checkpoint `base`, the
    /// image is an increment of it (only the pages written since; see
    /// `herd_checkpoint::dirty`), else whole. Home answers with Abort, the frozen copy
    /// runs on and its writes are tracked from this checkpoint on.
    Checkpoint { id: u64, base: Option<u64> },
    /// Tag 20 (version 9): after a move with [`Adopt::track_writes`], home kept its image
    /// as checkpoint `id`: the writes tracked since the restore are those since `id`.
    ImageKept { id: u64 },
    /// Tag 21 (version 11): fork `seq` ([`ToHome::Fork`]) is not made here: home could not
    /// make the child's deputy (`errno`: EAGAIN for `ulimit -u`, as a fork at home), or
    /// gave the child up three times in 10 s (EAGAIN). The fork returns -`errno`; nothing
    /// of the child is left anywhere. `errno` 0: the call is made again (home is moving or
    /// checkpointing the process, or gave this child up: its stream failed).
    Forked { seq: u64, errno: i32 },
    /// Tag 22 (version 12): the answer to [`ToHome::Identify`] `seq`: what home's
    /// descriptor is, or None when it is nothing the node may map from a copy of its own
    /// (not a regular file, deleted, not readable, too large).
    Identity { seq: u64, file: Option<FileIdentity> },
    /// Tag 23 (version 13): the answer to [`ToHome::ExecIdentify`] `seq`.
    ExecIdentity { seq: u64, answer: ExecFiles },
}

/// What an exec's path names at home ([`ToHome::ExecIdentify`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecFiles {
    /// The program and the interpreters it needs (a script's `#!` line, an ELF program's
    /// PT_INTERP: ld.so), in the order the kernel opens them: the exec may run where the
    /// process is if that node has these same files at these paths.
    Files(Vec<FileIdentity>),
    /// The path names nothing at home (ENOENT, ENOTDIR): the exec fails with this errno,
    /// as it would at home, without going there.
    Missing(i32),
    /// Only home can make it (a set-user-ID program, one not readable or not executable
    /// by the owner, not a program herd knows, another root…): why.
    Home(String),
}

/// A file home has open, as far as a node needs it to map an identical copy of its own
/// ([`ToHome::Identify`]): where it is and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    /// Its absolute path at home.
    pub path: String,
    pub size: u64,
    /// blake3 of its contents (as for the clean file pages of an image).
    pub hash: [u8; 32],
}

/// Home's files a process may use directly on the node it goes to: the directories
/// both nodes share (home's check; the node intersects them with its own), and the
/// process's open files there, which the node opens again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Files {
    /// Directories verified shared between home and the node.
    pub dirs: Vec<String>,
    /// Mount points under those at home: other file systems, not shared by being there.
    pub nested: Vec<String>,
    /// The process's working directory at home.
    pub cwd: String,
    /// Its open files under `dirs` that only it uses (their offset is its own).
    pub open: Vec<OpenFile>,
    /// Every regular file it has open whose offset is that descriptor's alone (no
    /// other process or descriptor shares its open file description): fd, offset and
    /// open(2) flags. Forwarded reads of these may be read ahead, writes gathered.
    pub own: Vec<(i32, u64, i32)>,
}

/// One open file of a process, as home sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFile {
    pub fd: i32,
    pub path: String,
    /// Its offset.
    pub pos: u64,
    /// Its status flags and access mode (open(2) flags, O_CLOEXEC for FD_CLOEXEC).
    pub flags: i32,
    /// Inode number: the node checks that it opened the same file.
    pub ino: u64,
    pub dir: bool,
}

/// Remote to home. Tags (variant indexes) in the comments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToHome {
    /// Tag 0: Tag fixed forever: the process (or the stream) is not taken; nothing runs here.
    Refused(Refusal),
    /// Tag 1: The process may come: send the image.
    Accepted { version: u32 },
    /// Tag 2: The process runs here, as local pid `pid`.
    Running { pid: i32 },
    /// Tag 3: A system call to run in the deputy, made by thread `tid` of the
    /// process (its home thread id): run in the deputy of that thread.
    Call { seq: u64, tid: i32, call: Call },
    /// Tag 4: The process made a call only home can serve; it waits, stopped in it,
    /// to be brought home (home answers with [`ToRemote::Capture`]).
    WantHome { why: String },
    /// Tag 5: Part of the process's image, after [`ToRemote::Capture`].
    Image(Chunk),
    /// Tag 6.
    ImageEnd,
    /// Tag 7: The capture failed; the process runs on here.
    CaptureFailed { reason: String },
    /// Tag 8: The process ended here.
    Exited(Ending),
    /// Tag 9: Resource use, every second.
    Stats(Usage),
    /// Tag 10: Post-copy: the process waits for the page at `addr` (an address of the
    /// lazy runs as home sent them): send it next.
    PageRequest { addr: u64 },
    /// Tag 11: Post-copy: every lazy page is in place; home may let go of its copy.
    PagesDone,
    /// Tag 12: After [`ToRemote::CapturePostCopy`], before the image: the lazy runs.
    Lazy(Vec<(u64, u64)>),
    /// Tag 13: After [`ToRemote::PushPages`]: pages of the frozen copy.
    Pages {
        addr: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Tag 14: Every lazy page has been sent once.
    PagesEnd,
    /// Tag 15: Thread `tid` (home id) of the process makes a thread (clone with
    /// CLONE_THREAD) and waits in the call: home makes the twin first
    /// ([`ToRemote::ThreadBorn`]).
    ThreadBirth { seq: u64, tid: i32 },
    /// Tag 16: Thread `tid` (home id) ended here; its deputy at home ends too.
    ThreadEnd { tid: i32 },
    /// Tag 17: The offsets of files the process uses directly here (DFSA), by fd: home
    /// sets them on its own descriptors before what follows (a call that uses one of
    /// them at home, the image, or the end).
    Offsets(Vec<(i32, u64)>),
    /// Tag 18: Writes the process made to `fd` (one it does not use directly), gathered
    /// by the node: home writes `data` at offset `at` of its descriptor at once, before
    /// what follows; a failure comes back as [`ToRemote::WriteFailed`].
    Write {
        fd: i32,
        at: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Tag 19 (version 8): End call `seq` of thread `tid` (home id) with EINTR if it still
    /// runs: a signal its mask lets in came before the call began waiting at home (a
    /// wait with a mask of its own: pselect6, ppoll, epoll_pwait). Its answer comes as
    /// usual (the call's own result if it ended first).
    Interrupt { seq: u64, tid: i32 },
    /// Tag 20 (version 10): Before [`ToHome::ImageEnd`] of a checkpoint: how long the
    /// capture stopped the process, in microseconds, and whether the image was read from
    /// a copy-on-write snapshot (then the process ran on while it was sent, and this is
    /// less than the capture takes).
    Stopped { micros: u64, snapshot: bool },
    /// Tag 21 (version 11): thread `tid` (home id) of the process forks (fork, or clone of
    /// a process that shares nothing with it) and waits in the call; the child is made
    /// here already, not yet running. Home makes the child's deputy by forking the
    /// thread's deputy, and opens the child's stream ([`Adopt::fork_of`]), or answers
    /// [`ToRemote::Forked`]. `nproc`: the process's RLIMIT_NPROC (soft, hard), which it
    /// may have changed here (setrlimit runs where it is): the deputy forks under it, so
    /// that `ulimit -u` counts the user's processes at home, as for a fork at home.
    Fork { seq: u64, tid: i32, nproc: (u64, u64) },
    /// Tag 22 (version 12): the process maps descriptor `fd` privately (mmap,
    /// MAP_PRIVATE), a file home has open; if the node has the same file at the same
    /// path, it maps its own copy instead of going home. Home answers
    /// [`ToRemote::Identity`] at once (from the stream's reader, not the deputy).
    Identify { seq: u64, fd: i32 },
    /// Tag 23 (version 13): thread `tid` (home id) of the process, its only one, execs
    /// `path` (absolute; a relative one made so against the process's directory at home,
    /// as the node follows it) and waits in the call: what does it name at home? Home answers
    /// [`ToRemote::ExecIdentity`] at once, from the stream's reader, as for `Identify`.
    ExecIdentify { seq: u64, tid: i32, path: String },
    /// Tag 24 (version 13): the process exec'd here (the files were the same; the new
    /// program is held before its first instruction): the deputy closes its descriptors
    /// marked close-on-exec, as the exec closed them in the process, and home answers
    /// [`ToRemote::Reply`] `seq` once it has, before the new program runs. `cmd`: its
    /// command line now.
    Exec { seq: u64, tid: i32, cmd: String },
}

/// Largest image chunk per message.
pub const CHUNK: usize = 1 << 20;
/// Post-copy pages per message: small, so that a page a process waits for is
/// not queued long behind background pages.
pub const PAGES_CHUNK: usize = 64 << 10;

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_allocvec(msg).expect("protocol messages serialize")
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// Bytes of an image in a message ([`ToRemote::Image`], [`ToHome::Image`]): `buf[at..]`.
/// On the wire a byte string like any other (postcard: varint length, the bytes). A
/// received one is the message's own buffer, its header skipped ([`decode_owned`]), and a
/// sent one goes out as header and bytes without being joined ([`encode_parts`]): image
/// bytes are not copied between the stream and the capture or restore.
#[derive(Clone, Debug, Default)]
pub struct Chunk {
    buf: Vec<u8>,
    at: usize,
}

impl Chunk {
    /// The buffer and where the chunk's bytes start in it.
    pub fn into_parts(self) -> (Vec<u8>, usize) {
        (self.buf, self.at)
    }
}

/// Equal bytes, wherever they lie in their buffers.
impl PartialEq for Chunk {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Chunk {}

impl From<Vec<u8>> for Chunk {
    fn from(buf: Vec<u8>) -> Self {
        Chunk { buf, at: 0 }
    }
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.at..]
    }
}

impl Serialize for Chunk {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self)
    }
}

impl<'de> Deserialize<'de> for Chunk {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(serde_bytes::ByteBuf::deserialize(d)?.into_vec().into())
    }
}

/// A direction's message type, as far as its image chunks are concerned.
pub trait Carries: Serialize + for<'de> Deserialize<'de> {
    /// The tag of the variant that carries a [`Chunk`].
    const IMAGE: u8;
    fn chunk(&self) -> Option<&Chunk>;
    fn of_chunk(c: Chunk) -> Self;
}

impl Carries for ToRemote {
    const IMAGE: u8 = 0;
    fn chunk(&self) -> Option<&Chunk> {
        match self {
            ToRemote::Image(c) => Some(c),
            _ => None,
        }
    }
    fn of_chunk(c: Chunk) -> Self {
        ToRemote::Image(c)
    }
}

impl Carries for ToHome {
    const IMAGE: u8 = 5;
    fn chunk(&self) -> Option<&Chunk> {
        match self {
            ToHome::Image(c) => Some(c),
            _ => None,
        }
    }
    fn of_chunk(c: Chunk) -> Self {
        ToHome::Image(c)
    }
}

/// `msg` as the two parts its encoding is made of: for an image chunk its header (tag,
/// length) and its bytes, borrowed; for anything else the whole encoding and nothing.
/// The stream sends them as one message (`send_parts`).
pub fn encode_parts<T: Carries>(msg: &T) -> (Vec<u8>, &[u8]) {
    match msg.chunk() {
        // The variant's tag and the byte string's length, as postcard writes them (varints).
        Some(c) => (encode(&(u32::from(T::IMAGE), c.len() as u64)), c),
        None => (encode(msg), &[]),
    }
}

/// Decodes a received message; an image chunk keeps `bytes` as its buffer (no copy).
pub fn decode_owned<T: Carries>(bytes: Vec<u8>) -> Result<T, postcard::Error> {
    if bytes.first() == Some(&T::IMAGE) {
        if let Ok((len, rest)) = postcard::take_from_bytes::<u64>(&bytes[1..]) {
            if len == rest.len() as u64 {
                let at = bytes.len() - rest.len();
                return Ok(T::of_chunk(Chunk { buf: bytes, at }));
            }
        }
    }
    decode(&bytes)
}

/// The first message of a node stream: the protocol version, then the request.
pub fn encode_request<T: Serialize>(req: &T) -> Vec<u8> {
    encode(&(PROTOCOL_VERSION, req))
}

/// Reads the first message of a node stream: the request, or the refusal to
/// send back (another version, or garbage).
pub fn decode_request<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Refusal> {
    let (theirs, rest) =
        postcard::take_from_bytes::<u32>(bytes).map_err(|e| Refusal::BadRequest { why: format!("no protocol version: {e}") })?;
    if theirs != PROTOCOL_VERSION {
        return Err(Refusal::Version { ours: PROTOCOL_VERSION, theirs });
    }
    decode(rest).map_err(|e| Refusal::BadRequest { why: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag<T: Serialize>(m: &T) -> u8 {
        encode(m)[0]
    }

    #[test]
    fn tags_are_fixed() {
        let to_remote = [
            ToRemote::Image(Chunk::default()),
            ToRemote::ImageEnd,
            ToRemote::Reply { seq: 0, reply: Reply { ret: 0, outs: vec![] } },
            ToRemote::Signal { sig: 1, during_call: false, tid: 1, directed: false },
            ToRemote::Capture,
            ToRemote::Commit,
            ToRemote::Abort,
            ToRemote::Kill,
            ToRemote::Lazy(vec![]),
            ToRemote::Pages { addr: 0, data: vec![] },
            ToRemote::PagesEnd,
            ToRemote::Cancel { reason: String::new() },
            ToRemote::CapturePostCopy,
            ToRemote::PushPages,
            ToRemote::PageRequest { addr: 0 },
            ToRemote::ThreadBorn { seq: 0, tid: 0 },
            ToRemote::Files(Files::default()),
            ToRemote::WriteFailed { fd: 0, errno: 0 },
            ToRemote::Freeze(true),
            ToRemote::Checkpoint { id: 2, base: Some(1) },
            ToRemote::ImageKept { id: 1 },
            ToRemote::Forked { seq: 1, errno: 11 },
            ToRemote::Identity { seq: 1, file: Some(FileIdentity { path: "/l".into(), size: 2, hash: [3; 32] }) },
            ToRemote::ExecIdentity { seq: 1, answer: ExecFiles::Missing(2) },
        ];
        for (i, m) in to_remote.iter().enumerate() {
            assert_eq!(tag(m) as usize, i, "{m:?}");
        }
        let to_home = [
            ToHome::Refused(Refusal::RootGuest),
            ToHome::Accepted { version: 2 },
            ToHome::Running { pid: 1 },
            ToHome::Call { seq: 0, tid: 1, call: Call { nr: 0, args: [0; 6], bufs: vec![] } },
            ToHome::WantHome { why: String::new() },
            ToHome::Image(Chunk::default()),
            ToHome::ImageEnd,
            ToHome::CaptureFailed { reason: String::new() },
            ToHome::Exited(Ending::Code(0)),
            ToHome::Stats(Usage::default()),
            ToHome::PageRequest { addr: 0 },
            ToHome::PagesDone,
            ToHome::Lazy(vec![]),
            ToHome::Pages { addr: 0, data: vec![] },
            ToHome::PagesEnd,
            ToHome::ThreadBirth { seq: 0, tid: 0 },
            ToHome::ThreadEnd { tid: 0 },
            ToHome::Offsets(vec![]),
            ToHome::Write { fd: 0, at: 0, data: vec![] },
            ToHome::Interrupt { seq: 0, tid: 0 },
            ToHome::Stopped { micros: 0, snapshot: false },
            ToHome::Fork { seq: 0, tid: 0, nproc: (1, 2) },
            ToHome::Identify { seq: 0, fd: 3 },
            ToHome::ExecIdentify { seq: 0, tid: 1, path: "/bin/sh".into() },
            ToHome::Exec { seq: 0, tid: 1, cmd: "sh".into() },
        ];
        for (i, m) in to_home.iter().enumerate() {
            assert_eq!(tag(m) as usize, i, "{m:?}");
        }
        // The version refusal is readable by any version: tags 0, 0.
        assert_eq!(&encode(&ToHome::Refused(Refusal::Version { ours: 2, theirs: 7 }))[..2], &[0, 0]);
    }

    #[test]
    fn byte_payloads_are_one_string() {
        let data: Vec<u8> = (0..CHUNK).map(|i| (i * 31) as u8).collect();
        let bytes = encode(&ToRemote::Image(data.clone().into()));
        // tag, varint length (3 bytes for 1 MiB), the bytes as they are
        assert_eq!(bytes.len(), 1 + 3 + CHUNK);
        assert_eq!(&bytes[4..], &data[..]);
        assert_eq!(decode::<ToRemote>(&bytes).unwrap(), ToRemote::Image(data.into()));
        let reply = ToRemote::Reply { seq: 9, reply: Reply { ret: 3, outs: vec![(0x1000, b"abc".to_vec())] } };
        assert_eq!(decode::<ToRemote>(&encode(&reply)).unwrap(), reply);
    }

    /// An image chunk sent in two parts and received in place is the message postcard
    /// makes and reads, at every length where the varint changes size; other messages
    /// pass through whole.
    #[test]
    fn chunks_go_without_copies_as_postcard_would() {
        fn both<T: Carries + PartialEq + std::fmt::Debug>(m: T) {
            let (head, body) = encode_parts(&m);
            let joined = [&head[..], body].concat();
            assert_eq!(joined, encode(&m), "{:?}", m.chunk().map(|c| c.len()));
            let back: T = decode_owned(joined).unwrap();
            assert_eq!(back, m);
        }
        for n in [0, 1, 127, 128, 16383, 16384, CHUNK, CHUNK + 5] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            both(ToRemote::Image(data.clone().into()));
            both(ToHome::Image(data.into()));
        }
        both(ToRemote::Reply { seq: 9, reply: Reply { ret: 3, outs: vec![(0x1000, b"abc".to_vec())] } });
        both(ToHome::Exited(Ending::Code(3)));
        // A received chunk is the message's buffer, past the header.
        let (buf, at) = match decode_owned::<ToHome>(encode(&ToHome::Image(vec![9; 300].into()))).unwrap() {
            ToHome::Image(c) => c.into_parts(),
            other => panic!("{other:?}"),
        };
        assert_eq!((buf.len(), at), (303, 3));
        // A length that does not match the message is an error, as postcard says.
        let mut bad = encode(&ToHome::Image(vec![1; 10].into()));
        bad.pop();
        assert!(decode_owned::<ToHome>(bad).is_err());
        let mut long = encode(&ToRemote::Image(vec![1; 10].into()));
        long.push(0);
        assert_eq!(decode_owned::<ToRemote>(long.clone()).is_ok(), decode::<ToRemote>(&long).is_ok());
    }

    /// Garbled messages from the network are errors, never panics or huge allocations:
    /// every message, truncated at every length and with bytes changed (a fixed seed).
    #[test]
    fn garbled_messages_decode_to_errors() {
        let call = Call { nr: 1, args: [1, 2, 3, 4, 5, 6], bufs: vec![] };
        let mut samples = vec![
            encode(&ToHome::Call { seq: 7, tid: 9, call }),
            encode(&ToHome::Lazy(vec![(0x1000, 0x2000), (0x9000, 0x1000)])),
            encode(&ToHome::Pages { addr: 0x1000, data: vec![9; 4096] }),
            encode(&ToHome::Refused(Refusal::Version { ours: 2, theirs: 3 })),
            encode(&ToRemote::Pages { addr: 0x2000, data: vec![1; 4096] }),
            encode(&ToRemote::Lazy(vec![(0x1000, 0x1000)])),
            encode(&ToRemote::Files(Files {
                dirs: vec!["/home".into()],
                nested: vec![],
                cwd: "/home/u".into(),
                open: vec![OpenFile { fd: 3, path: "/home/u/f".into(), pos: 9, flags: 2, ino: 7, dir: false }],
                own: vec![(3, 9, 2), (5, 0, 0o2001)],
            })),
            encode(&ToHome::Offsets(vec![(3, 4096), (4, 1)])),
            encode(&ToHome::Write { fd: 3, at: 4096, data: vec![7; 300] }),
            encode(&ToHome::Interrupt { seq: 12, tid: 4 }),
            encode(&ToRemote::WriteFailed { fd: 3, errno: 28 }),
            encode(&ToRemote::Reply { seq: 1, reply: Reply { ret: 4, outs: vec![(0x10, vec![1, 2, 3, 4])] } }),
            encode_request(&Adopt { home: "n1".into(), pid: 4, uid: 5, cmd: "x".into(), mode: MoveMode::PostCopy, track_writes: false, fork_of: None }),
            encode_request(&Adopt { home: "n1".into(), pid: 4, uid: 5, cmd: "x".into(), mode: MoveMode::StopAndCopy, track_writes: false, fork_of: Some(ForkOf { parent: 3, seq: 9 }) }),
            encode(&ToHome::Fork { seq: 3, tid: 8, nproc: (u64::MAX, u64::MAX) }),
            encode(&ToRemote::Forked { seq: 3, errno: 11 }),
            encode(&ToHome::Identify { seq: 4, fd: 5 }),
            encode(&ToRemote::Identity { seq: 4, file: Some(FileIdentity { path: "/usr/lib/x.so".into(), size: 9000, hash: [7; 32] }) }),
            encode(&ToHome::ExecIdentify { seq: 5, tid: 9, path: "/usr/bin/cc".into() }),
            encode(&ToHome::Exec { seq: 6, tid: 9, cmd: "cc -c x.c".into() }),
            encode(&ToRemote::ExecIdentity {
                seq: 5,
                answer: ExecFiles::Files(vec![
                    FileIdentity { path: "/usr/bin/cc".into(), size: 9, hash: [1; 32] },
                    FileIdentity { path: "/lib64/ld-linux-x86-64.so.2".into(), size: 8, hash: [2; 32] },
                ]),
            }),
            encode(&ToRemote::ExecIdentity { seq: 5, answer: ExecFiles::Home("set-user-ID".into()) }),
        ];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for base in std::mem::take(&mut samples) {
            for cut in 0..base.len().min(64) {
                let _ = decode::<ToHome>(&base[..cut]);
                let _ = decode::<ToRemote>(&base[..cut]);
            }
            for _ in 0..2000 {
                let mut m = base.clone();
                for _ in 0..1 + next() % 4 {
                    let i = (next() % m.len() as u64) as usize;
                    m[i] = next() as u8;
                }
                let _ = decode::<ToHome>(&m);
                let _ = decode::<ToRemote>(&m);
                let _ = decode_request::<Adopt>(&m);
            }
        }
    }

    #[test]
    fn another_version_is_refused_naming_both() {
        let msg = encode(&(99u32, "hello"));
        let r = decode_request::<String>(&msg).unwrap_err();
        assert_eq!(r, Refusal::Version { ours: PROTOCOL_VERSION, theirs: 99 });
        let text = r.to_string();
        assert!(text.contains("99") && text.contains(&PROTOCOL_VERSION.to_string()), "{text}");
        assert_eq!(decode_request::<String>(&encode_request(&"hi")).unwrap(), "hi");
        assert!(matches!(decode_request::<String>(&[]), Err(Refusal::BadRequest { .. })));
    }
}
