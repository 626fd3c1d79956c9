//! The control protocol between the `herd` CLI and herdd, over a unix socket.
//!
//! Each message is a u32 big-endian length and a JSON document (herd-wire's frames).
//! One request, one response, in order, any number per connection. The daemon knows
//! who is asking from the socket itself (SO_PEERCRED), not from anything in the request:
//! reading the cluster's state is open to every local user, changing the node is for
//! root and the user herdd runs as.

pub use herd_migrate::proto::MoveMode;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use herd_cluster::NodeStatus;

/// Largest control message either side accepts.
pub const MAX_MESSAGE: usize = 4 << 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// This daemon: name, version, key fingerprint, peers.
    Status,
    /// Every node this daemon knows, itself included.
    Nodes,
    /// Change how this node takes part in the cluster (`herd ctl`, `mosctl`).
    Ctl { op: CtlOp },
    /// Leave the cluster and stop the daemon.
    Shutdown,
    /// Make process `pid` of this node migratable (`herd run`), the first of a new job:
    /// the processes it starts join the job as herdd finds them. The caller must own it.
    Adopt {
        pid: i32,
        /// Keep it at home: balancing never moves it (`herd run --lock`, `--home`); its
        /// descendants inherit the lock.
        #[serde(default)]
        lock: bool,
        /// Checkpoint it (and what it starts) this often, in seconds, while it runs
        /// away (`herd run --checkpoint-every`); absent: the node's `checkpoint_every`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint_every: Option<f64>,
    },
    /// Process `pid` of this node, and everything it starts, runs natively: never
    /// migratable (`herd run --native`, `native`). Refused if it is away now.
    Native { pid: i32 },
    /// Move process `pid` (its home pid: this node must be its home) to `target`:
    /// a node name, `home`, or `balance` (the best node now). Answered when the move
    /// is complete (`Migrated`) or has failed (the process then runs where it was).
    /// `mode`: how (absent: herdd picks the fastest that keeps the stop short).
    Migrate {
        pid: i32,
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<herd_migrate::proto::MoveMode>,
    },
    /// MOSIX's other verbs of `migrate` on process `pid` of this home (`herd migrate PID
    /// checkpoint|freeze|continue|chkstop|chkexit`). The caller must own it.
    Act { pid: i32, verb: Verb },
    /// The migratable processes whose home is this node (`herd ps`).
    Processes,
    /// Lock (or unlock) process `pid` of this home: a locked process is never moved by
    /// the balancer (`herd lock`, `herd unlock`); moving it by hand still works.
    Lock { pid: i32, lock: bool },
    /// The migratable processes of every node that answers (`herd top`, `herd ps --all`):
    /// this node's, and each up peer's, asked over the node streams.
    ClusterProcesses,
    /// Send signal `signal` to process `pid` of this home (its deputy passes it on when
    /// the process is away), as `kill` would at home. The caller must own it.
    Signal { pid: i32, signal: i32 },
    /// `ask` (Migrate, Lock, Signal or Processes), made by the caller, for node
    /// `node`: this herdd passes it to that node over the node stream, which checks it
    /// against the same uid (`herd top` acting on a process whose home is elsewhere).
    /// Uids are the same on every node of a cluster, as in MOSIX.
    OnNode { node: String, ask: Box<Request> },
    /// A one-time login link for the web dashboard (`herd dashboard`): the browser that
    /// opens it acts as the caller.
    DashboardLogin,
    /// Sets failpoint `name` of this herdd to `actions` (`off` clears it), for the tests
    /// and the chaos benchmark (`herd_migrate::failpoint`); refused by a herdd built
    /// without them. Root only.
    Failpoint { name: String, actions: String },
}

/// What `herd migrate PID VERB` does besides moving (MOSIX's verbs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// Checkpoint it now (a process away: where it runs, the image streamed home).
    Checkpoint,
    /// Stop it (SIGSTOP) and keep the balancer off it, until `continue`.
    Freeze,
    /// Let a frozen (or stopped) process run again.
    Continue,
    /// Checkpoint it, then freeze it.
    Chkstop,
    /// Checkpoint it, then end it (SIGKILL).
    Chkexit,
}

impl Verb {
    pub fn parse(s: &str) -> Option<Verb> {
        <Verb as clap::ValueEnum>::from_str(s, true).ok()
    }
}

/// A checkpoint taken (`herd migrate PID checkpoint`, and the periodic ones).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpointed {
    pub pid: i32,
    /// The image, at home.
    pub path: String,
    pub bytes: u64,
    /// How long the process was stopped for it, milliseconds.
    pub frozen_ms: f64,
    /// Where it was taken.
    pub node: String,
}

/// `herd ctl` operations (the openMosix `mosctl` ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", content = "value", rename_all = "snake_case")]
pub enum CtlOp {
    /// Accept no guests (processes of other nodes).
    Block,
    NoBlock,
    /// Send every guest home; implies `block`.
    Expel,
    /// Call every process of this home back; implies `lstay`.
    Bring,
    /// Nothing running here is moved away for load.
    Stay,
    NoStay,
    /// This node's own processes stay at home.
    LStay,
    NoLStay,
    /// Take no part in balancing: not a target, move nothing, publish the flag.
    Quiet,
    NoQuiet,
    /// Override the measured CPU speed (10000 = the reference CPU); 0 = measure again.
    Speed(u32),
}

/// What a `herd ctl` did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CtlDone {
    /// The node's flags afterwards.
    pub status: NodeStatus,
    /// Processes sent on their way home (`expel`: guests; `bring`: this home's remote ones).
    pub moving: usize,
}

impl Request {
    /// Whether only root or the daemon's own user may make this request.
    pub fn is_privileged(&self) -> bool {
        // Adopt, Native, Migrate and Lock are checked per process: users act on their own.
        !matches!(
            self,
            Request::Status
                | Request::Nodes
                | Request::Processes
                | Request::ClusterProcesses
                | Request::Adopt { .. }
                | Request::Native { .. }
                | Request::Migrate { .. }
                | Request::Act { .. }
                | Request::Lock { .. }
                | Request::Signal { .. }
                | Request::OnNode { .. }
                | Request::DashboardLogin
        )
    }

    /// Whether another node may pass this request on for one of its users
    /// ([`Request::OnNode`]): only what acts on one process, checked per process here.
    pub fn is_relayable(&self) -> bool {
        matches!(self, Request::Migrate { .. } | Request::Act { .. } | Request::Lock { .. } | Request::Signal { .. } | Request::Processes)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", content = "body", rename_all = "snake_case")]
pub enum Response {
    Status(Box<DaemonStatus>),
    Nodes(Vec<NodeRow>),
    Processes(Vec<ProcessRow>),
    ClusterProcesses(ClusterProcesses),
    Migrated(Migrated),
    Checkpointed(Checkpointed),
    Ctl(CtlDone),
    /// The link, and for how many seconds it works (once).
    DashboardLogin { url: String, valid_secs: u64 },
    Done,
    Error(ControlError),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub name: String,
    pub version: String,
    /// herdd's pid in its own pid namespace.
    pub pid: u32,
    /// Gossip address (UDP) and stream address (TCP) other nodes use.
    pub address: String,
    /// Identifies the cluster key without revealing it.
    pub key_fingerprint: String,
    pub uptime_secs: u64,
    pub peers_up: usize,
    pub peers_known: usize,
    pub status: NodeStatus,
    pub discovery: bool,
    pub config: Option<String>,
    pub http: Option<String>,
    pub counters: Traffic,
}

/// What the daemon has sent and refused: the gossip cost, and evidence of forged or
/// garbled traffic that was dropped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    pub gossip_sent_bytes: u64,
    pub gossip_sent_packets: u64,
    pub gossip_received_packets: u64,
    pub gossip_forged: u64,
    pub gossip_malformed: u64,
    pub beacons_sent: u64,
    pub beacons_heard: u64,
    pub beacons_rejected: u64,
    pub streams_accepted: u64,
    pub streams_failed: u64,
}

/// One node in `herd nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    pub name: String,
    pub address: String,
    /// "up", "suspect", "down" or "blocked" (up, but refusing arrivals).
    pub state: String,
    pub cpus: u32,
    pub speed: u32,
    pub load: f32,
    pub mem_free: u64,
    pub mem_total: u64,
    pub is_self: bool,
    pub boot: u64,
    /// Age of the node's published state, seconds (0 for this node).
    pub info_age_secs: Option<f64>,
    pub kernel: Option<String>,
    pub version: Option<String>,
    /// blocked / quiet / stay / lstay, as the node publishes them.
    #[serde(default)]
    pub status: NodeStatus,
    /// Directories the node offers for direct file access (DFSA).
    #[serde(default)]
    pub shared: Vec<String>,
    /// Of those, the ones verified to be the same file system on the node answering
    /// (its own row: empty).
    #[serde(default)]
    pub shared_with_this_node: Vec<String>,
}

/// The migratable processes of the whole cluster, as far as it answered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterProcesses {
    /// Every node's rows (each with its `home`), by home node, then pid.
    pub rows: Vec<ProcessRow>,
    /// Up nodes that did not answer in time, with why: their processes are missing.
    pub unanswered: Vec<Unanswered>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unanswered {
    pub node: String,
    pub why: String,
}

/// One migratable process in `herd ps`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessRow {
    /// Its pid at home (where it was started), whichever node it runs on.
    pub pid: i32,
    /// Its home node: where it was started, where its pid and deputy are.
    #[serde(default)]
    pub home: String,
    /// Its parent's pid at home (0 when not known): read when the rows are asked for,
    /// so a re-parenting shows at once.
    #[serde(default)]
    pub ppid: i32,
    /// Its job: the home pid of the process `herd run` started, which it descends from.
    #[serde(default)]
    pub job: i32,
    pub uid: u32,
    /// The node it runs on now (this node's name when at home).
    #[serde(rename = "where")]
    pub where_: String,
    /// "home", "remote", "migrating" or "stopped".
    pub state: String,
    /// Share of one CPU over the last seconds, percent.
    pub cpu: f64,
    /// Resident memory, bytes (of the remote copy when remote).
    pub rss: u64,
    /// Smoothed share of a CPU it wants (time runnable), percent: what balancing weighs.
    #[serde(default)]
    pub demand: f64,
    /// Forwarded calls a second when remote; read/write calls a second at home.
    #[serde(default)]
    pub io_rate: f64,
    /// Away: read/write calls a second it makes directly where it runs, on files in
    /// directories shared with home (DFSA); 0 at home.
    #[serde(default)]
    pub direct_io_rate: f64,
    /// Calls forwarded home since it arrived where it runs (0 at home).
    #[serde(default)]
    pub forwarded_calls: u64,
    /// How fast its resident memory grows, bytes a second (smoothed, 0 when shrinking).
    #[serde(default)]
    pub rss_growth: f64,
    /// How many times it has moved.
    pub nmigs: u32,
    /// Why it cannot move now (empty when it can).
    pub cantmove: Vec<String>,
    pub lock: bool,
    pub cmd: String,
    /// Checkpointed this often while away, seconds (None: not at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<f64>,
    /// Its last checkpoint: when (Unix seconds), its size; 0 when none is kept.
    #[serde(default)]
    pub checkpoint_unix: u64,
    #[serde(default)]
    pub checkpoint_bytes: u64,
    /// Times it was resumed from a checkpoint after the node running it was lost.
    #[serde(default)]
    pub resumed: u32,
    /// What happened to it of that (resumed, replayed, diverged), for `herd ps`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub survival: String,
    /// The move under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<MoveProgress>,
}

/// A completed move.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Migrated {
    pub pid: i32,
    /// Where it runs now.
    pub node: String,
    /// How long the process was stopped, and the whole move, milliseconds.
    pub frozen_ms: f64,
    pub total_ms: f64,
    /// Image bytes sent (pages and state).
    pub bytes: u64,
    /// How it moved.
    #[serde(default)]
    pub mode: herd_migrate::proto::MoveMode,
}

/// A move under way, as `herd ps` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MoveProgress {
    pub mode: herd_migrate::proto::MoveMode,
    /// "capture" (stopped, the image streams), "post-copy" (it runs on the target,
    /// its memory follows).
    pub phase: String,
    pub sent_bytes: u64,
    /// Bytes the phase has to send, when known.
    pub total_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    PermissionDenied,
    BadRequest,
    Internal,
    /// No such (migratable) process.
    NoSuchProcess,
    /// The move was refused (by the process's state or the policy); the process runs
    /// where it was.
    Refused,
    /// The target node refused the process (blocked, say); it runs where it was.
    TargetRefused,
    /// Another move of this process is under way; asking again later may work.
    Busy,
    /// The move failed part-way; the process runs where it was.
    Failed,
    /// The node running the process was lost (before or during the move), and the
    /// process with it: it has ended.
    Lost,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ControlError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("herdd is not running (no control socket at {0}); start it with `herdd` or `systemctl start herdd`, or pick a node with --node")]
    NotRunning(PathBuf),
    #[error("herdd is not running (nothing listens on {0}: a stale socket)")]
    Refused(PathBuf),
    #[error("not allowed to use the control socket {0}")]
    Access(PathBuf),
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("control socket {path}: {source}")]
    Frame { path: PathBuf, source: herd_wire::frame::FrameError },
    #[error("herdd sent a response this herd does not understand: {0}")]
    Garbled(serde_json::Error),
    #[error("herdd: {0}")]
    Daemon(#[from] ControlError),
}

/// A connection to a herdd control socket.
pub struct Client {
    stream: UnixStream,
    path: PathBuf,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ClientError::NotRunning(path.into()),
            std::io::ErrorKind::ConnectionRefused => ClientError::Refused(path.into()),
            std::io::ErrorKind::PermissionDenied => ClientError::Access(path.into()),
            _ => ClientError::Io { path: path.into(), source: e },
        })?;
        let timeout = Some(Duration::from_secs(30));
        let _ = stream.set_read_timeout(timeout);
        let _ = stream.set_write_timeout(timeout);
        Ok(Self { stream, path: path.into() })
    }

    /// Sends a request; a daemon-side refusal comes back as `ClientError::Daemon`.
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        // A move answers when it is complete: moving gigabytes takes longer than
        // any other request may.
        let wait = if matches!(request, Request::Migrate { .. }) { 600 } else { 30 };
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(wait)));
        let body = serde_json::to_vec(request).expect("requests serialize");
        let frame_err = |source| ClientError::Frame { path: self.path.clone(), source };
        herd_wire::frame::write_frame(&mut self.stream, &body, MAX_MESSAGE).map_err(frame_err)?;
        let reply = herd_wire::frame::read_frame(&mut self.stream, MAX_MESSAGE)
            .map_err(|source| ClientError::Frame { path: self.path.clone(), source })?;
        match serde_json::from_slice(&reply).map_err(ClientError::Garbled)? {
            Response::Error(e) => Err(ClientError::Daemon(e)),
            r => Ok(r),
        }
    }
}
