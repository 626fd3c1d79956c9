//! What home and a remote node say about one migrated process, on the node
//! stream (Noise) between them. Home opens the stream with
//! [`Adopt`] and the image; from then on it carries [`ToRemote`] one way and
//! [`ToHome`] the other, until the process ends or leaves the node.
//!
//! Home is the single coordinator of every move of its processes: a move
//! from node B to node C is relayed through home, so a remote node only ever
//! talks to the homes of its guests.

use serde::{Deserialize, Serialize};

use crate::syscalls::{Call, Reply};

/// The first message of a migration stream: who the process is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adopt {
    /// The home node's name (for logs and `herd ps` on the remote node).
    pub home: String,
    /// The process's pid at home: what getpid() answers.
    pub pid: i32,
    pub uid: u32,
    pub cmd: String,
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

/// Home to remote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToRemote {
    /// Part of the image (after [`Adopt`]).
    Image(Vec<u8>),
    /// The image is complete.
    ImageEnd,
    /// The result of forwarded call `seq`.
    Reply { seq: u64, reply: Reply },
    /// A signal sent to the process at home. `during_call`: it interrupted
    /// the forwarded call being served, which home abandoned.
    Signal { sig: i32, during_call: bool },
    /// Freeze the process and send its image home ([`ToHome::Image`]...).
    Capture,
    /// The image arrived where it is going: end the frozen copy here.
    Commit,
    /// The move failed: let the frozen copy run on here.
    Abort,
    /// End the process (its home ended).
    Kill,
}

/// Remote to home.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToHome {
    /// The process runs here, as local pid `pid`.
    Running { pid: i32 },
    /// The process could not be taken (nothing runs here).
    Refused { reason: String },
    /// A system call to run in the deputy.
    Call { seq: u64, call: Call },
    /// The process made a call only home can serve; it waits, stopped in it,
    /// to be brought home (home answers with [`ToRemote::Capture`]).
    WantHome { why: String },
    /// Part of the process's image, after [`ToRemote::Capture`].
    Image(Vec<u8>),
    ImageEnd,
    /// The capture failed; the process runs on here.
    CaptureFailed { reason: String },
    /// The process ended here.
    Exited(Ending),
    /// Resource use, every second.
    Stats(Usage),
}

/// Largest image chunk per message.
pub const CHUNK: usize = 1 << 20;

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_allocvec(msg).expect("protocol messages serialize")
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}
