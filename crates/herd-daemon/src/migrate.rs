//! Migration in herdd: this node's migratable processes, each driven by one
//! task (an actor) that owns everything about it — where it runs, its
//! deputy, the stream to the node that runs it — and the other side: guests
//! that other nodes' processes become here.
//!
//! Home coordinates every move of its processes. Home → B: the deputy
//! thread freezes the process and streams its image to B; once B reports it
//! running, the frozen original becomes the deputy. B → home: the deputy is
//! quiesced, B captures and streams the image home, where it is restored into
//! the deputy; B's copy is ended once that succeeded. B → C: as B → home, but
//! the image is relayed to C, and B's copy ends when C reports it running.
//! Until the commit the source keeps its frozen copy, and any failure — the
//! target refuses or dies, a stream breaks — lets that copy run on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_migrate::deputy::{self, Cmd, Event};
use herd_migrate::direct;
use herd_migrate::failpoint;
use herd_migrate::guest::{self, GuestCmd};
use herd_migrate::pipe::{self, Piece};
use herd_migrate::postcopy::{self, PagerInput, Push, Pusher, Pushed};
use herd_migrate::proto::{self, Adopt, ForkOf, MoveMode, Refusal, ToHome, ToRemote, Usage};
use herd_migrate::journal::{Journal, Verdict};
use herd_wire::stream::SecureStream;
use procfs::Current;
use tokio::sync::{mpsc, oneshot};

use crate::control::{ControlError, ErrorKind, Migrated, MoveProgress, ProcessRow, Verb};
use crate::daemon::Shared;
use crate::peer::PeerRequest;

mod outbox;
mod survive;

use outbox::Outbox;

/// Content hashes of the files this node's processes have open, for nodes that would map
/// their own copies ([`ToHome::Identify`]); in memory, one for every stream.
fn file_hashes() -> &'static Mutex<herd_checkpoint::filehash::FileHashes> {
    static HASHES: std::sync::OnceLock<Mutex<herd_checkpoint::filehash::FileHashes>> = std::sync::OnceLock::new();
    HASHES.get_or_init(|| Mutex::new(herd_checkpoint::filehash::FileHashes::ephemeral()))
}

/// Sends request `adopt` on `stream` and waits for the node's first answer: the stream's
/// error if it broke (it may be retried on another), Elapsed after 10 s without one.
async fn announce(stream: &mut SecureStream<tokio::net::TcpStream>, adopt: &[u8]) -> Result<Result<Vec<u8>, herd_wire::StreamError>, tokio::time::error::Elapsed> {
    if let Err(e) = stream.send(adopt).await {
        return Ok(Err(e));
    }
    tokio::time::timeout(Duration::from_secs(10), stream.recv()).await
}

fn err(kind: ErrorKind, message: impl Into<String>) -> ControlError {
    ControlError { kind, message: message.into() }
}

/// This node's migratable processes, by home pid, and the guests it runs for others.
#[derive(Default)]
pub struct Registry {
    procs: Mutex<HashMap<i32, Handle>>,
    guests: Mutex<HashMap<u64, GuestEntry>>,
    next_guest: std::sync::atomic::AtomicU64,
    /// Processes that run natively (`herd run --native`), by pid, with their start
    /// times: never adopted, and neither are their descendants (they are not walked).
    native: Mutex<HashMap<i32, u64>>,
    /// Why each process at home could not move when last looked at (by pid, with its
    /// start time and when): `herd ps`, `herd top` and the dashboard ask every second,
    /// and reading a thousand processes' /proc files that often costs a CPU.
    cantmove: Mutex<HashMap<i32, Reasons>>,
    /// Times this node was declared down by the others ([`declared_down`]).
    declared_down: tokio::sync::watch::Sender<u64>,
}

/// A process's reasons not to move: its start time (pids are reused), when they were read
/// and how the node's look saw it then.
type Reasons = (u64, Instant, Option<crate::sampler::Seen>, Vec<String>);

/// How long a process's reasons not to move are reused by the process lists...
const CANTMOVE_FRESH: Duration = Duration::from_secs(3);
/// ... and, if it has not run since (nothing it does changed them), how long at most:
/// from one to two minutes, by pid, so that the processes of a job started together are
/// not all read again in the same second.
fn idle_for(pid: i32) -> Duration {
    Duration::from_secs(60 + pid.unsigned_abs() as u64 % 60)
}

struct Handle {
    uid: u32,
    /// /proc start time, so that a reused pid is not taken for the process.
    start: u64,
    row: Arc<Mutex<ProcessRow>>,
    /// When it was adopted and when it last arrived somewhere.
    times: Arc<Mutex<(Instant, Instant)>>,
    tx: mpsc::UnboundedSender<Input>,
    /// Forks of it on their way (see [`Actor::forking`]).
    forking: Arc<std::sync::atomic::AtomicUsize>,
}

/// A child made on a remote node by its parent's fork ([`ToHome::Fork`]): its deputy,
/// forked from the parent's, and where it runs.
struct Birth {
    twin: deputy::Twin,
    parent: i32,
    seq: u64,
    node: String,
    addr: SocketAddr,
    /// The parent's actor, told if the child cannot be made after all.
    parent_tx: mpsc::UnboundedSender<Input>,
    /// The parent's stream the fork came on.
    parent_gen: u64,
}

/// What a process passes on to the children it makes (at adoption).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kin {
    /// The job: the home pid of the process `herd run` started.
    pub job: i32,
    pub uid: u32,
    pub lock: bool,
    /// Checkpointed this often while away.
    pub every: Option<Duration>,
}

/// A process of another home running here.
struct GuestEntry {
    home: String,
    pid: i32,
    /// Its stream home: `expel` asks home to take it back on it.
    tx: Outbox<ToHome>,
    /// Its guest's thread: the child of a fork made here is handed to it.
    link: Arc<guest::GuestLink>,
}

/// What the balancer is told of one of this home's processes, besides its row.
#[derive(Clone, Copy, Debug)]
pub struct Ages {
    /// Seconds since adopted, and since it last arrived somewhere.
    pub age: f64,
    pub since_move: f64,
}

/// Where a move is asked to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Home,
    Node(String),
    /// The node with the lowest load now.
    Balance,
}

impl Target {
    /// `home`, `balance`, or a node name (this node's own name means home).
    pub fn parse(s: &str, me: &str) -> Target {
        match s {
            "home" => Target::Home,
            "balance" => Target::Balance,
            n if n == me => Target::Home,
            n => Target::Node(n.to_string()),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Home => f.write_str("home"),
            Target::Node(n) => f.write_str(n),
            Target::Balance => f.write_str("balance"),
        }
    }
}

type Reply = oneshot::Sender<Result<Migrated, ControlError>>;

enum Input {
    /// `auto`: the balancer's; refused if the process was locked meanwhile.
    Migrate { target: Target, mode: Option<MoveMode>, auto: bool, reply: Reply },
    Deputy(Event),
    Remote { gen: u64, msg: ToHome },
    RemoteClosed { gen: u64, why: String },
    /// Post-copy: the pusher has sent every page (or failed to).
    PagesSent(Result<Pushed, String>),
    /// Post-copy home: the pager has ended.
    HomePaged(postcopy::PagerEnd),
    /// `herd migrate PID checkpoint|freeze|…`.
    Act { verb: Verb, reply: oneshot::Sender<Result<Option<crate::control::Checkpointed>, ControlError>> },
    /// Membership says this node is down.
    NodeDown(String),
    /// `herd run --native`: no longer migratable, if it is at home.
    Release { reply: oneshot::Sender<Result<(), ControlError>> },
    /// The child of fork `seq` could not be made on the node (its stream failed, or the
    /// node refused it): its deputy, `child`, is undone unseen and the fork is made again
    /// there (see [`Actor::fork_given_up`]).
    /// `gen`: the parent's stream the fork came on (a fork of an earlier stay elsewhere
    /// has nothing to answer).
    ForkGivenUp { seq: u64, child: i32, gen: u64 },
    /// The node's new look ([`crate::sampler`]) has something new of it: at home, its
    /// figures are taken from it ([`looked`]).
    Look,
}

/// Where the pages of a post-copy come from.
enum PageSource {
    /// Home: the pusher reads them from the deputy.
    Home(Pusher),
    /// The node the process left (B, on a move B → C): its frozen copy sends them,
    /// relayed by home; it ends on Commit once C has them all.
    Node(Remote),
    /// The node the process left to come home: its frozen copy sends them to the
    /// pager here, which fills the process (and children it forks meanwhile); it ends
    /// on Commit once they have them all.
    ToHome { node: Remote, pager: postcopy::PagerLink },
}

/// A post-copy under way: the process runs on the target, its memory follows.
struct PostCopy {
    source: PageSource,
    /// The move's answer waits for the last page; `Migrated` as it stands.
    answer: Option<(Reply, Migrated)>,
    started: Instant,
    t0: Instant,
    lazy_bytes: u64,
    /// Asked to come home meanwhile: once the pages are there.
    want_home: Option<String>,
}

/// What adoption reads of a process: its owner, start time, parent and command line.
struct Facts {
    uid: u32,
    start: u64,
    ppid: i32,
    cmd: String,
    /// Real, effective, saved and file-system ids all the same (no set-id program).
    plain_ids: bool,
}

fn proc_facts(pid: i32) -> Option<Facts> {
    let p = procfs::process::Process::new(pid).ok()?;
    let st = p.stat().ok()?;
    if matches!(st.state, 'Z' | 'X') {
        return None; // ended: a zombie is nothing to adopt
    }
    let status = p.status().ok()?;
    let uid = status.ruid;
    let plain_ids = [status.euid, status.suid, status.fuid].iter().all(|&u| u == uid)
        && [status.egid, status.sgid, status.fgid].iter().all(|&g| g == status.rgid);
    // `herd run` asks as soon as its child's exec closed the spawn pipe, which can be a
    // moment before the kernel has set the new program's arguments: wait that moment.
    let mut args = p.cmdline().ok().unwrap_or_default();
    for _ in 0..20 {
        if !args.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        args = p.cmdline().ok().unwrap_or_default();
    }
    let cmd = if args.is_empty() { st.comm.clone() } else { args.join(" ") };
    Some(Facts { uid, start: st.starttime, ppid: st.ppid, cmd, plain_ids })
}

/// `herd run`: makes process `pid` migratable, the first of a new job (its descendants
/// join it as they are found: [`adopt_child`]). Users may adopt their own processes.
pub fn adopt(shared: &Arc<Shared>, pid: i32, lock: bool, every: Option<Duration>, caller: u32) -> Result<(), ControlError> {
    let facts = proc_facts(pid).ok_or_else(|| err(ErrorKind::NoSuchProcess, format!("no process {pid} on this node")))?;
    let uid = facts.uid;
    if caller != 0 && caller != uid {
        return Err(err(ErrorKind::PermissionDenied, format!("process {pid} belongs to uid {uid}, not to you (uid {caller})")));
    }
    if shared.procs.is_native(pid, facts.start) {
        return Err(err(ErrorKind::Refused, format!("process {pid} runs natively (herd run --native)")));
    }
    insert(shared, pid, facts, Kin { job: pid, uid, lock, every: every.or(shared.config.checkpoint_every) }, None);
    Ok(())
}

/// Families: `pid`, a child of migratable process `parent` found at home, joins its
/// parent's job (and lock). Not a process that changed its ids (a set-id program: its
/// privileges would not come along), one of another owner, or one that runs natively.
/// Returns whether it is now migratable (false also when it already was, or has ended).
pub fn adopt_child(shared: &Arc<Shared>, pid: i32, parent: i32) -> bool {
    let kin = {
        let procs = shared.procs.procs.lock().expect("registry lock");
        if procs.contains_key(&pid) {
            return false;
        }
        let Some(h) = procs.get(&parent) else { return false };
        // A child of its deputy made for a fork away is registered by the fork itself.
        if h.forking.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return false;
        }
        let row = h.row.lock().expect("row lock");
        let every = row.checkpoint_every.map(Duration::from_secs_f64);
        Kin { job: if row.job > 0 { row.job } else { parent }, uid: h.uid, lock: row.lock, every }
    };
    let Some(facts) = proc_facts(pid) else { return false };
    // Still the parent's child (not a reused pid), the same owner, plain ids.
    if facts.ppid != parent || facts.uid != kin.uid || !facts.plain_ids || shared.procs.is_native(pid, facts.start) {
        return false;
    }
    insert(shared, pid, facts, kin, None)
}

/// The pids of every migratable process of this home (their children are looked for).
pub fn adopted(shared: &Shared) -> Vec<i32> {
    shared.procs.procs.lock().expect("registry lock").keys().copied().collect()
}

/// `herd run --native`: process `pid` (and what it starts) runs natively: if it was
/// migratable (a descendant of a job), it no longer is, provided it is at home.
pub async fn make_native(shared: &Arc<Shared>, pid: i32, caller: u32) -> Result<(), ControlError> {
    let facts = proc_facts(pid).ok_or_else(|| err(ErrorKind::NoSuchProcess, format!("no process {pid} on this node")))?;
    if caller != 0 && caller != facts.uid {
        return Err(err(ErrorKind::PermissionDenied, format!("process {pid} belongs to uid {}, not to you (uid {caller})", facts.uid)));
    }
    {
        let mut native = shared.procs.native.lock().expect("native lock");
        // Forget those that have ended (their start time only: no need of the rest).
        native.retain(|&p, &mut start| procfs::process::Process::new(p).and_then(|p| p.stat()).is_ok_and(|st| st.starttime == start));
        native.insert(pid, facts.start);
    }
    let tx = {
        let procs = shared.procs.procs.lock().expect("registry lock");
        procs.get(&pid).filter(|h| h.start == facts.start).map(|h| h.tx.clone())
    };
    let Some(tx) = tx else { return Ok(()) };
    let (reply, rx) = oneshot::channel();
    if tx.send(Input::Release { reply }).is_err() {
        return Ok(()); // it has just ended
    }
    rx.await.unwrap_or(Ok(()))
}

impl Registry {
    fn is_native(&self, pid: i32, start: u64) -> bool {
        self.native.lock().expect("native lock").get(&pid) == Some(&start)
    }
}

/// Registers `pid` and starts its actor; false if it was there already (then only
/// `lock` is added).
fn insert(shared: &Arc<Shared>, pid: i32, facts: Facts, kin: Kin, birth: Option<Birth>) -> bool {
    let Facts { uid, start, ppid, cmd, .. } = facts;
    let lock = kin.lock;
    let mut procs = shared.procs.procs.lock().expect("registry lock");
    if let Some(h) = procs.get(&pid) {
        if h.start == start {
            h.row.lock().expect("row lock").lock |= lock;
            return false;
        }
    }
    let row = Arc::new(Mutex::new(ProcessRow {
        pid,
        home: shared.config.name.clone(),
        ppid,
        job: kin.job,
        uid,
        where_: shared.config.name.clone(),
        state: "home".into(),
        cpu: 0.0,
        rss: 0,
        demand: 0.0,
        io_rate: 0.0,
        rss_growth: 0.0,
        direct_io_rate: 0.0,
        forwarded_calls: 0,
        nmigs: 0,
        cantmove: Vec::new(),
        lock,
        cmd: cmd.clone(),
        checkpoint_every: kin.every.map(|d| d.as_secs_f64()),
        checkpoint_unix: 0,
        checkpoint_bytes: 0,
        resumed: 0,
        survival: String::new(),
        moving: None,
    }));
    let (tx, rx) = mpsc::unbounded_channel();
    let now = Instant::now();
    let times = Arc::new(Mutex::new((now, now)));
    let forking = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    procs.insert(pid, Handle { uid, start, row: row.clone(), times: times.clone(), tx: tx.clone(), forking: forking.clone() });
    drop(procs);
    if let Some(b) = &birth {
        tracing::info!(pid, uid, job = kin.job, ppid, node = b.node, cmd, "adopted (a child forked on {})", b.node);
    } else if kin.job == pid {
        tracing::info!(pid, uid, cmd, "adopted");
    } else {
        tracing::info!(pid, uid, job = kin.job, ppid, cmd, "adopted (a child)");
    }
    let actor = Actor {
        shared: shared.clone(),
        pid,
        start,
        uid,
        cmd,
        row,
        inputs: rx,
        me: tx,
        deputy: None,
        remote: None,
        gen: 0,
        times,
        last: None,
        forwarded: Default::default(),
        path: Default::default(),
        measured: false,
        seen: None,
        born: now,
        early: Vec::new(),
        early_pages: None,
        refusal: None,
        postcopy: None,
        ended_home: false,
        journal: Default::default(),
        keep: survive::Keep { every: kin.every, ..Default::default() },
        quiesced: false,
        forking,
        birth,
        fork_give_ups: Vec::new(),
        unforking: Vec::new(),
    };
    tokio::spawn(actor.run(start));
    true
}

/// Runs `f` on the handle of process `pid` of this home, if `caller` may act on it
/// (root, or its owner).
fn with_own<T>(shared: &Shared, pid: i32, caller: u32, f: impl FnOnce(&Handle) -> T) -> Result<T, ControlError> {
    let procs = shared.procs.procs.lock().expect("registry lock");
    let h = procs.get(&pid).ok_or_else(|| {
        err(ErrorKind::NoSuchProcess, format!("process {pid} is not a migratable process of this node (start it with `herd run`)"))
    })?;
    if caller != 0 && caller != h.uid {
        return Err(err(ErrorKind::PermissionDenied, format!("process {pid} belongs to uid {}, not to you (uid {caller})", h.uid)));
    }
    Ok(f(h))
}

/// `herd migrate`: moves process `pid` (of this home) to `target`, by `mode`
/// (or the fastest that keeps the stop short).
pub async fn migrate(shared: &Arc<Shared>, pid: i32, target: Target, mode: Option<MoveMode>, caller: u32) -> Result<Migrated, ControlError> {
    send_migrate(shared, pid, target, mode, caller, false).await
}

/// The balancer's move: as `herd migrate` by root, but not if the process is locked.
pub async fn migrate_auto(shared: &Arc<Shared>, pid: i32, target: Target) -> Result<Migrated, ControlError> {
    send_migrate(shared, pid, target, None, 0, true).await
}

async fn send_migrate(shared: &Arc<Shared>, pid: i32, target: Target, mode: Option<MoveMode>, caller: u32, auto: bool) -> Result<Migrated, ControlError> {
    let tx = with_own(shared, pid, caller, |h| h.tx.clone())?;
    let (reply, rx) = oneshot::channel();
    tx.send(Input::Migrate { target, mode, auto, reply }).map_err(|_| err(ErrorKind::NoSuchProcess, format!("process {pid} has ended")))?;
    rx.await.map_err(|_| err(ErrorKind::NoSuchProcess, format!("process {pid} ended during the move")))?
}

/// `herd migrate PID checkpoint|freeze|continue|chkstop|chkexit` (MOSIX's verbs).
pub async fn act(shared: &Arc<Shared>, pid: i32, verb: Verb, caller: u32) -> Result<Option<crate::control::Checkpointed>, ControlError> {
    let tx = with_own(shared, pid, caller, |h| h.tx.clone())?;
    let (reply, rx) = oneshot::channel();
    tx.send(Input::Act { verb, reply }).map_err(|_| err(ErrorKind::NoSuchProcess, format!("process {pid} has ended")))?;
    rx.await.map_err(|_| err(ErrorKind::NoSuchProcess, format!("process {pid} ended meanwhile")))?
}

/// The others declared this node down: the homes of its guests have given them up (each
/// resumes its process from a checkpoint elsewhere, or ends it), so every guest here ends
/// now — even one whose stream home still looks open (this herdd was stopped, say) —
/// and none runs twice.
pub fn declared_down(shared: &Shared) {
    let guests = shared.procs.guests.lock().expect("guests lock").len();
    tracing::warn!(guests, "this node was declared down: ending its guests, whose homes have given them up");
    shared.procs.declared_down.send_modify(|n| *n += 1);
}

/// Membership says node `node` is down: every process of this home running there
/// is lost with it (and resumed, if it has a checkpoint) without waiting for TCP.
pub fn node_down(shared: &Shared, node: &str) {
    let procs = shared.procs.procs.lock().expect("registry lock");
    for h in procs.values() {
        if h.row.lock().expect("row lock").where_ == node {
            let _ = h.tx.send(Input::NodeDown(node.to_string()));
        }
    }
}

/// Tells the processes of this home that run on a node membership marks down, as soon
/// as it does (within the failure-detection time, not TCP's).
pub async fn watch_membership(shared: Arc<Shared>) {
    let mut rx = shared.snapshot.clone();
    let mut down: std::collections::HashSet<String> = Default::default();
    while rx.changed().await.is_ok() {
        let now: std::collections::HashSet<String> = rx
            .borrow_and_update()
            .nodes
            .iter()
            .filter(|v| v.state == herd_cluster::NodeState::Down)
            .filter_map(|v| v.info.as_ref().map(|i| i.name.clone()))
            .collect();
        for node in now.difference(&down) {
            tracing::warn!(node, "membership marks node {node} down");
            node_down(&shared, node);
        }
        down = now;
    }
}

/// `herd lock` / `herd unlock`: whether the balancer may move process `pid`.
pub fn set_lock(shared: &Shared, pid: i32, lock: bool, caller: u32) -> Result<(), ControlError> {
    with_own(shared, pid, caller, |h| h.row.lock().expect("row lock").lock = lock)?;
    tracing::info!(pid, "{}", if lock { "locked" } else { "unlocked" });
    Ok(())
}

/// `kill -SIGNAL PID` for its owner (or root), through herdd: process `pid` of this
/// home, or its deputy, which passes the signal on to where the process runs.
pub fn signal(shared: &Shared, pid: i32, signal: i32, caller: u32) -> Result<(), ControlError> {
    let sig = nix::sys::signal::Signal::try_from(signal)
        .map_err(|_| err(ErrorKind::BadRequest, format!("{signal} is not a signal number this herdd knows (1-31)")))?;
    with_own(shared, pid, caller, |_| ())?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
        .map_err(|e| err(ErrorKind::NoSuchProcess, format!("process {pid}: {e}")))?;
    tracing::info!(pid, caller, "sent {sig}");
    Ok(())
}

/// What `f` makes of each process of this home (its row and ages), for the balancer:
/// the rows are read where they are, not copied.
pub fn candidates<T>(shared: &Shared, mut f: impl FnMut(&ProcessRow, Ages) -> Option<T>) -> Vec<T> {
    let procs = shared.procs.procs.lock().expect("registry lock");
    procs
        .values()
        .filter_map(|h| {
            let (adopted, arrived) = *h.times.lock().expect("times lock");
            let ages = Ages { age: adopted.elapsed().as_secs_f64(), since_move: arrived.elapsed().as_secs_f64() };
            f(&h.row.lock().expect("row lock"), ages)
        })
        .collect()
}

/// `herd ctl bring`: calls every process of this home that runs elsewhere (or is on its
/// way there) back; returns how many. Each comes home through its actor; one being moved
/// now is asked again once that move is over. Failures are logged.
pub fn bring(shared: &Arc<Shared>) -> usize {
    let away: Vec<i32> = candidates(shared, |r, _| (r.state != "home").then_some(r.pid));
    for &pid in &away {
        let shared = shared.clone();
        tokio::spawn(async move {
            for _ in 0..600 {
                match migrate(&shared, pid, Target::Home, None, 0).await {
                    Err(e) if e.kind == ErrorKind::Busy => tokio::time::sleep(Duration::from_millis(100)).await,
                    Err(e) => return tracing::info!(pid, "bring: {e}"),
                    Ok(_) => return,
                }
            }
        });
    }
    away.len()
}

/// `herd ctl expel`: asks the home of every guest here to take it back; returns how many
/// were asked.
pub async fn expel(shared: &Shared) -> usize {
    let guests: Vec<(String, i32, Outbox<ToHome>)> =
        shared.procs.guests.lock().expect("guests lock").values().map(|g| (g.home.clone(), g.pid, g.tx.clone())).collect();
    let why = format!("node {} expels its guests", shared.config.name);
    let mut n = 0;
    for (home, pid, tx) in guests {
        match tx.send_timeout(ToHome::WantHome { why: why.clone() }, Duration::from_secs(5)).await {
            Ok(()) => n += 1,
            Err(e) => tracing::warn!(home, pid, "cannot ask home to take it back: {e}"),
        }
    }
    n
}

/// How many migratable processes this node is home to, and how many of them run elsewhere.
pub fn counts(shared: &Shared) -> (usize, usize) {
    let procs = shared.procs.procs.lock().expect("registry lock");
    let remote = procs.values().filter(|h| h.row.lock().expect("row lock").state == "remote").count();
    (procs.len(), remote)
}

/// `herd ps`: the rows, with why each process at home cannot move (read from /proc now,
/// unless they were lately and it has not run since) and their parents (read now, or with
/// over [`crate::family::MANY`] processes from the node's last look).
pub fn rows(shared: &Shared) -> Vec<ProcessRow> {
    let procs = shared.procs.procs.lock().expect("registry lock");
    let listed: Vec<(ProcessRow, u64)> = procs.values().map(|h| (h.row.lock().expect("row lock").clone(), h.start)).collect();
    drop(procs);
    // With few processes, each one's own /proc files (its parent at once when it
    // changes); with many, the node's last look (at most a second old).
    let look = if listed.len() > crate::family::MANY { shared.look() } else { Arc::default() };
    let mut known = shared.procs.cantmove.lock().expect("cantmove lock");
    let alive: std::collections::HashSet<(i32, u64)> = listed.iter().map(|(r, start)| (r.pid, *start)).collect();
    known.retain(|pid, (start, ..)| alive.contains(&(*pid, *start)));
    let mut rows: Vec<ProcessRow> = listed.into_iter().filter_map(|(r, start)| refresh(shared, r, start, &mut known, &look)).collect();
    rows.sort_by_key(|r| r.pid);
    rows
}

/// The row of process `pid` of this home, as [`rows`] has it (one process's /proc files,
/// not every process's: /proc/hpc asks for one at a time).
pub fn row(shared: &Shared, pid: i32) -> Option<ProcessRow> {
    let (r, start) = shared.procs.procs.lock().expect("registry lock").get(&pid).map(|h| (h.row.lock().expect("row lock").clone(), h.start))?;
    refresh(shared, r, start, &mut shared.procs.cantmove.lock().expect("cantmove lock"), &shared.look())
}

/// A process's row made current: its parent now (as the node's last look saw it, or its
/// own /proc files if the look did not see it) and, at home, why it cannot move (kept in
/// `known` for [`CANTMOVE_FRESH`], or up to [`idle_for`] while it does not run);
/// None when it has ended since its actor looked.
fn refresh(shared: &Shared, mut r: ProcessRow, start: u64, known: &mut HashMap<i32, Reasons>, look: &crate::sampler::Look) -> Option<ProcessRow> {
    // At home, or its deputy's (the same process: the same start time).
    let seen = look.procs.get(&r.pid).filter(|s| s.start == start).copied();
    let alive = match seen {
        Some(s) => {
            r.ppid = s.ppid;
            true
        }
        None => {
            let stat = procfs::process::Process::new(r.pid).and_then(|p| p.stat());
            if let Ok(st) = &stat {
                r.ppid = st.ppid;
            }
            stat.is_ok_and(|st| st.starttime == start)
        }
    };
    if r.state == "home" {
        // Ended since its actor last looked: not listed.
        if !alive {
            return None;
        }
        let idle = |before: &Option<crate::sampler::Seen>| matches!((seen, before), (Some(now), Some(b)) if !now.ran_since(b));
        r.cantmove = match known.get(&r.pid) {
            Some((s, at, before, why)) if *s == start && (at.elapsed() < CANTMOVE_FRESH || (idle(before) && at.elapsed() < idle_for(r.pid))) => why.clone(),
            _ => {
                let why = cannot_move(r.pid);
                known.insert(r.pid, (start, Instant::now(), seen, why.clone()));
                why
            }
        };
        if r.uid == 0 && !shared.config.allow_root_guests {
            r.cantmove.push("belongs to root (allow_root_guests is off)".into());
        }
    }
    Some(r)
}

/// A new look at the node: the actors of the processes at home that it says something new
/// of — it ran, it is new, or not seen (ended?), or its figures have yet to settle to
/// those of a process that does not run — are told (a thousand sleeping processes wake
/// no one).
pub fn looked(shared: &Shared, look: &crate::sampler::Look) {
    let procs = shared.procs.procs.lock().expect("registry lock");
    for (pid, h) in procs.iter() {
        let news = match look.procs.get(pid) {
            Some(s) if s.start == h.start && !s.ran => {
                let r = h.row.lock().expect("row lock");
                if r.state != "home" {
                    continue;
                }
                r.rss == 0 || r.cpu != 0.0 || r.demand != 0.0 || r.io_rate != 0.0 || r.direct_io_rate != 0.0 || r.rss_growth != 0.0
            }
            _ => true,
        };
        if news {
            let _ = h.tx.send(Input::Look);
        }
    }
}

/// Why process `pid`, at home, cannot be captured for a move now (empty when it can).
/// Reads its /proc files, which may wait on its memory: call it off the async runtime
/// where that matters.
pub fn cannot_move(pid: i32) -> Vec<String> {
    match herd_checkpoint::check_for(pid, herd_checkpoint::Purpose::Migrate { own_filter: false }) {
        Ok(why) => why.iter().map(|w| w.to_string()).collect(),
        Err(e) => vec![e.to_string()],
    }
}

/// Whether node `v` can take this node's processes now: up, known, not blocked, with
/// the same vDSO and every xsave feature of `own` (this node's published state).
pub fn usable(own: Option<&herd_cluster::NodeInfo>, v: &herd_cluster::NodeView) -> Result<(), String> {
    let info = v.info.as_ref().ok_or("its state is not known yet")?;
    if v.state != herd_cluster::NodeState::Up {
        return Err(format!("it is {:?}", v.state).to_lowercase());
    }
    if info.status.blocked {
        return Err("it is blocked (accepts no processes)".into());
    }
    if let Some(own) = own {
        if info.features.vdso_hash != own.features.vdso_hash {
            return Err(format!("its vDSO differs from this node's (kernel {} there, {} here)", info.features.kernel, own.features.kernel));
        }
        let missing = own.features.xcr0 & !info.features.xcr0;
        if missing != 0 {
            return Err(format!("its CPU lacks xsave features {missing:#x} (XCR0 {:#x}) the process may use", info.features.xcr0));
        }
    }
    Ok(())
}

/// Above this resident size, herdd moves a process from home by post-copy
/// unless asked otherwise: at the stop-and-copy rate measured (about 250 MiB/s,
/// docs/benchmarks.md) 12 MiB already take [`FREEZE_BUDGET`].
pub const POSTCOPY_ABOVE: u64 = 12 << 20;
/// How long a move should stop a process at most.
pub const FREEZE_BUDGET: Duration = Duration::from_millis(50);

/// The error for a target's refusal.
fn refused(name: &str, r: &Refusal) -> ControlError {
    let kind = match r {
        Refusal::Version { .. } | Refusal::BadRequest { .. } => ErrorKind::Failed,
        _ => ErrorKind::TargetRefused,
    };
    err(kind, format!("node {name} refused it: {r}"))
}

/// The fast path of forwarded calls: while a process runs away and no move of it
/// is under way, its calls go from the stream's reader straight to the deputy
/// thread, and the replies (and signals) from the deputy thread straight to the
/// stream's writer, without passing through the actor.
#[derive(Default)]
struct CallPath {
    route: Mutex<Option<Route>>,
}

#[derive(Clone)]
struct Route {
    gen: u64,
    deputy: deputy::Link,
    remote: Outbox<ToRemote>,
}

impl CallPath {
    fn set(&self, route: Option<Route>) {
        *self.route.lock().expect("route lock") = route;
    }

    /// The deputy, if calls of stream `gen` go straight to it.
    fn deputy(&self, gen: u64) -> Option<deputy::Link> {
        self.route.lock().expect("route lock").as_ref().filter(|r| r.gen == gen).map(|r| r.deputy.clone())
    }

    /// The stream the deputy's answers go straight to, if any.
    fn remote(&self) -> Option<Outbox<ToRemote>> {
        self.route.lock().expect("route lock").as_ref().map(|r| r.remote.clone())
    }
}

/// Where a move goes.
enum Dest {
    Home,
    Node { name: String, addr: SocketAddr },
}

struct Remote {
    node: String,
    gen: u64,
    tx: Outbox<ToRemote>,
    /// The task reading its stream: ended with it, so that the stream closes once
    /// what was sent is written (a node that was given up on, and comes back, finds
    /// it closed and ends its copy).
    reader: tokio::task::AbortHandle,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct Actor {
    shared: Arc<Shared>,
    pid: i32,
    /// Its /proc start time (pids are reused).
    start: u64,
    uid: u32,
    cmd: String,
    row: Arc<Mutex<ProcessRow>>,
    inputs: mpsc::UnboundedReceiver<Input>,
    me: mpsc::UnboundedSender<Input>,
    deputy: Option<deputy::Link>,
    remote: Option<Remote>,
    gen: u64,
    times: Arc<Mutex<(Instant, Instant)>>,
    /// The last resource figures, where it runs now, and when they were read.
    last: Option<(Usage, u64, Instant)>,
    /// Calls forwarded home since it last left.
    forwarded: Arc<std::sync::atomic::AtomicU64>,
    path: Arc<CallPath>,
    /// Whether its resource figures have been measured once.
    measured: bool,
    /// At home: the node's last look it took its figures from, and what that look saw.
    seen: Option<(Instant, crate::sampler::Seen)>,
    /// When it was adopted (a look older than that may have seen another process).
    born: Instant,
    /// Messages from a new remote node that came before the move completed.
    early: Vec<ToHome>,
    /// A pusher's report that came before the deputy was made.
    early_pages: Option<Result<Pushed, String>>,
    /// The last refusal a target answered a move with (typed: herdd's own choice of
    /// mode may be made again on `NoPostCopy`).
    refusal: Option<Refusal>,
    postcopy: Option<PostCopy>,
    /// It ended at home while its memory was still coming there: the actor stays until
    /// the pager is done (children it forked meanwhile may still lack pages).
    ended_home: bool,
    /// Its effects at home since its last checkpoint (recording only while one is kept).
    journal: Arc<Journal>,
    /// Its checkpoints, and what to do if the node running it is lost.
    keep: survive::Keep,
    /// Its deputy holds still (after `quiesce`, until `resume` or the move home).
    quiesced: bool,
    /// Its forks on their way, from its node's [`ToHome::Fork`] until the child is
    /// registered (or the fork failed): the families' scan leaves its deputy's new
    /// children alone meanwhile.
    forking: Arc<std::sync::atomic::AtomicUsize>,
    /// A child forked away: made there first ([`Actor::born_away`]).
    birth: Option<Birth>,
    /// When the children of its forks away could not be made there, lately.
    fork_give_ups: Vec<Instant>,
    /// Children of given-up forks the deputy was asked to undo during a move (pid, start
    /// time): one still there when the process has come home is ended then.
    unforking: Vec<(i32, u64)>,
}

/// Children of forks away that could not be made (their stream failed) this many times
/// within this long: the next fails with EAGAIN instead of being made again.
const FORK_GIVE_UPS: (usize, Duration) = (3, Duration::from_secs(10));

/// The least time between two figures of a process that rates are computed over.
const MIN_SAMPLE: Duration = Duration::from_millis(500);

/// The least age at which a new process's figures are those of its life so far (younger,
/// a compiler's driver that has not yet started the compiler looks busy).
const BIRTH_LOOK: Duration = Duration::from_millis(300);

/// A process's end, noticed when it happens: its pidfd becomes readable. Each holds a
/// descriptor: at most half of herdd's limit of open files are used so (beyond that, the
/// next look at the node notices an end: [`looked`]).
struct EndWatch(tokio::io::unix::AsyncFd<herd_kernel::pidfd::PidFd>);

static END_WATCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl EndWatch {
    fn open(pid: i32) -> Option<EndWatch> {
        use std::sync::atomic::Ordering::Relaxed;
        if END_WATCHES.fetch_add(1, Relaxed) >= crate::stats::open_files() / 2 {
            END_WATCHES.fetch_sub(1, Relaxed);
            return None;
        }
        let fd = herd_kernel::pidfd::PidFd::open(pid).ok().and_then(|fd| {
            // SAFETY: the PidFd owns its descriptor, which stays open and the same until the
            // AsyncFd (its only owner) is dropped.
            unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
        });
        match fd {
            Some(fd) => Some(EndWatch(fd)),
            None => {
                END_WATCHES.fetch_sub(1, Relaxed);
                None
            }
        }
    }
}

impl Drop for EndWatch {
    fn drop(&mut self) {
        END_WATCHES.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Actor {
    fn set_row(&self, f: impl FnOnce(&mut ProcessRow)) {
        f(&mut self.row.lock().expect("row lock"));
    }

    async fn run(mut self, start: u64) {
        if let Some(b) = self.birth.take() {
            if !self.born_away(b).await {
                self.unregister(start);
                return;
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // Its end, at home, is noticed when it happens: a pidfd becomes readable (without
        // one — too many open files — the next look at the node notices it).
        // Opened before its first figures: if the pid were another process's already, they
        // would say so (its start time) and end this.
        let ended = EndWatch::open(self.pid);
        // At home, its figures come with the looks at the node ([`looked`]); away, each
        // second.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Its first figures and command line now (ended already: nothing more).
        let mut ended_already = self.deputy.is_none() && !self.home_tick();
        // A new process at home is judged by its life once it is BIRTH_LOOK old (unless a
        // look has measured it first).
        let birth = tokio::time::sleep(self.until_birth_look());
        tokio::pin!(birth);
        let mut judged = self.measured;
        loop {
            if std::mem::take(&mut ended_already) {
                break;
            }
            tokio::select! {
                _ = &mut birth, if !judged && self.deputy.is_none() => {
                    judged = true;
                    if let Some(u) = Usage::of(self.pid) {
                        self.judged_by_its_life(&u);
                        if self.measured {
                            self.shared.born.notify_one();
                        }
                    }
                }
                input = self.inputs.recv() => {
                    let Some(input) = input else { break };
                    if !self.handle(input).await || (self.ended_home && !self.pages_come_home()) {
                        break;
                    }
                }
                _ = async { ended.as_ref().expect("guarded").0.readable().await }, if ended.is_some() && self.deputy.is_none() && !self.ended_home => {
                    if !self.pages_come_home() {
                        break;
                    }
                    // The move itself succeeded; the pages still come for its children.
                    self.ended_home = true;
                    if let Some(pc) = self.postcopy.as_mut() {
                        if let Some((reply, mut m)) = pc.answer.take() {
                            m.total_ms = pc.t0.elapsed().as_secs_f64() * 1e3;
                            let _ = reply.send(Ok(m));
                        }
                    }
                }
                _ = tick.tick(), if self.deputy.is_some() => {
                    self.survive_tick().await;
                }
            }
            if let Some((node, why)) = self.keep.recover.take() {
                self.recover(node, why).await;
            }
        }
        self.keep.drop_image();
        tracing::debug!(pid = self.pid, "no longer migratable (ended or released)");
        self.unregister(start);
    }

    fn unregister(&self, start: u64) {
        let mut procs = self.shared.procs.procs.lock().expect("registry lock");
        // Not a new process that has the pid now.
        if procs.get(&self.pid).is_some_and(|h| h.start == start) {
            procs.remove(&self.pid);
        }
    }

    /// At home, at each look at the node ([`crate::sampler`]): its figures from that look;
    /// of its own /proc files only those that change when it runs, and only if it ran.
    /// False when it has ended.
    fn home_tick(&mut self) -> bool {
        let (start, look) = (self.start, self.shared.look());
        let seen = look.procs.get(&self.pid).filter(|_| look.at > self.born);
        match seen {
            Some(s) if s.start == start => {
                let ran = self.seen.is_none_or(|(_, before)| s.ran_since(&before));
                self.seen = Some((look.at, *s));
                let io_calls = match (ran, self.last) {
                    (false, Some((last, _, _))) => last.io_calls,
                    _ => procfs::process::Process::new(self.pid).and_then(|p| p.io()).map(|io| io.syscr + io.syscw).unwrap_or(0),
                };
                let u = Usage { cpu_ticks: s.cpu_ticks, rss: s.rss, runnable_ns: s.runnable_ns, io_calls };
                self.sample(u, io_calls, look.at);
                if ran {
                    self.read_cmd();
                }
                true
            }
            // Another process has its pid: it ended before the look.
            Some(_) => false,
            // Not in the look (adopted since, or ended): its own files say.
            None => match procfs::process::Process::new(self.pid).and_then(|p| p.stat()) {
                Ok(st) if st.starttime == start => {
                    if let Some(u) = Usage::of(self.pid) {
                        self.sample(u, u.io_calls, Instant::now());
                    }
                    self.read_cmd();
                    true
                }
                _ => false,
            },
        }
    }

    /// Its command line again: a child adopted between its fork and its exec shows its
    /// parent's command first.
    fn read_cmd(&mut self) {
        if let Ok(args) = procfs::process::Process::new(self.pid).and_then(|p| p.cmdline()) {
            if !args.is_empty() {
                let cmd = args.join(" ");
                if cmd != self.cmd {
                    self.set_row(|r| r.cmd = cmd.clone());
                    self.cmd = cmd;
                }
            }
        }
    }

    /// Takes new resource figures: CPU share, demand (smoothed with the policy's decay),
    /// I/O calls a second (`io` counts read/write calls at home, forwarded calls away).
    fn sample(&mut self, u: Usage, io: u64, now: Instant) {
        // Figures less than half a second apart say little of rates (a look taken just
        // before the figures read at adoption, nothing): the next ones are taken instead.
        if self.last.is_some_and(|(_, _, at)| now < at + MIN_SAMPLE) {
            self.judged_by_its_life(&u);
            return;
        }
        let Some((last, last_io, at)) = self.last.replace((u, io, now)) else {
            self.set_row(|r| r.rss = u.rss);
            self.judged_by_its_life(&u);
            return;
        };
        let dt = now.duration_since(at).as_secs_f64().max(0.001);
        let cpu = u.cpu_ticks.saturating_sub(last.cpu_ticks) as f64 / procfs::ticks_per_second() as f64 / dt;
        // Without schedstat, the CPU it got is the best guess of what it wants.
        let want = if u.runnable_ns > 0 { (u.runnable_ns.saturating_sub(last.runnable_ns) as f64 / 1e9 / dt).min(1.0) } else { cpu.min(1.0) };
        let io_rate = io.saturating_sub(last_io) as f64 / dt;
        // Away, the read/write calls the process makes itself are those on files it uses
        // directly (the forwarded ones never run there).
        let away = self.remote.is_some();
        let direct = if away { u.io_calls.saturating_sub(last.io_calls) as f64 / dt } else { 0.0 };
        let growth = u.rss.saturating_sub(last.rss) as f64 / dt;
        let p = &self.shared.config.policy;
        // The first figures are taken as they are: smoothing them from nothing would make a
        // new CPU-bound process look half idle, and balancing send too many at once.
        let first = !std::mem::replace(&mut self.measured, true);
        let smooth = |old: f64, new: f64| if first { new } else { p.smooth(old, new, dt) };
        self.set_row(|r| {
            r.cpu = (cpu * 1000.0).round() / 10.0;
            r.rss = u.rss;
            r.demand = (smooth(r.demand / 100.0, want) * 1000.0).round() / 10.0;
            r.io_rate = (smooth(r.io_rate, io_rate) * 10.0).round() / 10.0;
            r.direct_io_rate = (smooth(r.direct_io_rate, direct) * 10.0).round() / 10.0;
            r.forwarded_calls = if away { io } else { 0 };
            r.rss_growth = smooth(r.rss_growth, growth).round();
        });
    }

    /// A process at home that has never moved and has no figures yet, at least
    /// [`BIRTH_LOOK`] old: its CPU share, demand and I/O rate are those of its life so
    /// far (a compiler just started wants most of a CPU, the make that started it almost
    /// none), so that placement at birth need not wait for a second look.
    fn judged_by_its_life(&mut self, u: &Usage) {
        if self.measured || self.remote.is_some() || self.row.lock().expect("row lock").nmigs > 0 {
            return;
        }
        let Some(age) = self.age() else { return };
        if age < BIRTH_LOOK.as_secs_f64() {
            return;
        }
        let want = if u.runnable_ns > 0 { u.runnable_ns as f64 / 1e9 / age } else { u.cpu_ticks as f64 / procfs::ticks_per_second() as f64 / age };
        let cpu = u.cpu_ticks as f64 / procfs::ticks_per_second() as f64 / age;
        // Its read/write calls too: an I/O-bound process wants a CPU while it waits for
        // one among busy neighbours, and placed away for that it would only be brought
        // home again for its I/O.
        let io_rate = u.io_calls as f64 / age;
        self.measured = true;
        self.set_row(|r| {
            r.cpu = (cpu.min(1.0) * 1000.0).round() / 10.0;
            r.demand = (want.min(1.0) * 1000.0).round() / 10.0;
            r.io_rate = (io_rate * 10.0).round() / 10.0;
        });
    }

    /// How long until it is [`BIRTH_LOOK`] old (a little more).
    fn until_birth_look(&self) -> Duration {
        Duration::from_secs_f64((BIRTH_LOOK.as_secs_f64() - self.age().unwrap_or(0.0)).max(0.0)) + Duration::from_millis(20)
    }

    /// Seconds since it started (its /proc start time against the node's uptime).
    fn age(&self) -> Option<f64> {
        procfs::Uptime::current().ok().map(|up| up.uptime - self.start as f64 / procfs::ticks_per_second() as f64)
    }

    /// Sets where it runs now: the figures start again there.
    fn arrived(&mut self) {
        self.last = None;
        self.seen = None;
        // The first checkpoint of a process that has none is taken at the next tick.
        if self.keep.every.is_some() && self.keep.last.is_none() && self.remote.is_some() {
            self.keep.due = Some(Instant::now());
        }
        self.forwarded.store(0, std::sync::atomic::Ordering::Relaxed);
        self.times.lock().expect("times lock").1 = Instant::now();
    }

    /// Handles one input in the steady state; false when the process is gone.
    async fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Migrate { reply, .. } if self.postcopy.is_some() => {
                let _ = reply.send(Err(err(ErrorKind::Busy, "its memory is still moving (post-copy); try again in a moment")));
                true
            }
            Input::Migrate { reply, .. } if self.keep.frozen.is_some() => {
                let _ = reply.send(Err(err(ErrorKind::Refused, format!("process {} is frozen; `herd migrate {} continue` first", self.pid, self.pid))));
                true
            }
            Input::Migrate { target, mode, auto, reply } => {
                let locked = auto && self.row.lock().expect("row lock").lock;
                let r = if locked { Err(err(ErrorKind::Refused, format!("process {} is locked", self.pid))) } else { self.migrate(&target, mode).await };
                let gone = r.as_ref().is_err_and(|e| e.kind == ErrorKind::NoSuchProcess);
                match (r, self.postcopy.as_mut()) {
                    // The answer waits for the last page.
                    (Ok(m), Some(pc)) => pc.answer = Some((reply, m)),
                    (r, _) => {
                        let _ = reply.send(r);
                    }
                }
                !gone
            }
            Input::PagesSent(Ok(p)) => {
                tracing::debug!(pid = self.pid, bytes = p.bytes, requested = p.requested, "post-copy: every page sent");
                true
            }
            Input::PagesSent(Err(why)) if self.postcopy.is_none() => {
                // The process ended during the post-copy (its deputy with it): nothing is lost.
                tracing::debug!(pid = self.pid, "post-copy: the pusher stopped after the end: {why}");
                true
            }
            Input::PagesSent(Err(why)) => {
                // The target cannot complete without them: the process is lost.
                tracing::error!(pid = self.pid, "post-copy: sending its pages failed: {why}");
                let _ = self.to_remote(ToRemote::Kill).await;
                self.lost(format!("its pages could not be sent: {why}"));
                true
            }
            Input::Deputy(ev) => self.on_deputy(ev).await,
            Input::Remote { gen, msg } if self.is_current(gen) => self.on_remote(msg).await,
            Input::Remote { gen, msg } if self.is_page_source(gen) && self.pages_come_home() => {
                let pager = match self.postcopy.as_ref().map(|pc| &pc.source) {
                    Some(PageSource::ToHome { pager, .. }) => pager,
                    _ => return true,
                };
                match msg {
                    ToHome::Pages { addr, data } => {
                        let n = data.len() as u64;
                        self.set_row(|r| {
                            if let Some(p) = r.moving.as_mut() {
                                p.sent_bytes += n;
                            }
                        });
                        let _ = pager.send(PagerInput::Pages { addr, data });
                    }
                    ToHome::PagesEnd => {
                        let _ = pager.send(PagerInput::End);
                    }
                    other => tracing::debug!(pid = self.pid, "unexpected from the node it left: {other:?}"),
                }
                true
            }
            Input::RemoteClosed { gen, why } if self.is_page_source(gen) && self.pages_come_home() => {
                self.home_pages_lost(format!("the node it left broke off while its memory came home: {why}"));
                true
            }
            Input::HomePaged(end) => {
                self.home_paged(end).await;
                true
            }
            Input::Remote { gen, msg } if self.is_page_source(gen) => {
                let m = match msg {
                    ToHome::Pages { addr, data } => {
                        let n = data.len() as u64;
                        self.set_row(|r| {
                            if let Some(p) = r.moving.as_mut() {
                                p.sent_bytes += n;
                            }
                        });
                        Some(ToRemote::Pages { addr, data })
                    }
                    ToHome::PagesEnd => Some(ToRemote::PagesEnd),
                    _ => None,
                };
                if let Some(m) = m {
                    self.to_remote(m).await;
                }
                true
            }
            Input::RemoteClosed { gen, why } if self.is_page_source(gen) => {
                // The process runs on C without all of its memory: it is lost.
                tracing::error!(pid = self.pid, "the node it left broke off during post-copy ({why})");
                self.to_remote(ToRemote::Kill).await;
                self.lost(format!("the node it left broke off while its memory moved: {why}"));
                true
            }
            Input::RemoteClosed { gen, why } if self.is_current(gen) => {
                self.lost(why);
                true
            }
            Input::Remote { .. } | Input::RemoteClosed { .. } => true,
            Input::Act { verb, reply } => {
                let r = if self.postcopy.is_some() {
                    Err(err(ErrorKind::Busy, "its memory is still moving (post-copy); try again in a moment"))
                } else {
                    self.act(verb).await
                };
                let gone = r.as_ref().is_err_and(|e| e.kind == ErrorKind::NoSuchProcess);
                let _ = reply.send(r);
                !gone
            }
            Input::NodeDown(node) => {
                if matches!(self.postcopy.as_ref().map(|pc| &pc.source), Some(PageSource::ToHome { node: b, .. }) if b.node == node) {
                    self.home_pages_lost(format!("membership marks node {node} down while its memory came home"));
                } else if self.remote.as_ref().is_some_and(|r| r.node == node) {
                    self.lost(format!("membership marks node {node} down"));
                }
                true
            }
            Input::Release { reply } => {
                let home = self.deputy.is_none() && self.remote.is_none() && self.postcopy.is_none();
                let r = if home {
                    tracing::info!(pid = self.pid, "runs natively from now on (herd run --native)");
                    Ok(())
                } else {
                    let node = self.row.lock().expect("row lock").where_.clone();
                    Err(err(ErrorKind::Busy, format!("process {} runs on {node}; it stays migratable", self.pid)))
                };
                let _ = reply.send(r);
                !home
            }
            Input::ForkGivenUp { seq, child, gen } => {
                self.fork_given_up(seq, child, gen, false).await;
                true
            }
            Input::Look => self.deputy.is_some() || self.ended_home || self.home_tick(),
        }
    }

    /// The node running the process is gone, and the process with it.
    fn lost(&mut self, why: String) {
        self.path.set(None);
        if let Some(pc) = self.postcopy.take() {
            if let Some((reply, _)) = pc.answer {
                let _ = reply.send(Err(err(ErrorKind::Lost, format!("the process was lost while its memory moved: {why}"))));
            }
        }
        let node = self.remote.take().map(|r| r.node.clone()).unwrap_or_default();
        if self.keep.last.is_some() && self.deputy.is_some() {
            match self.journal.state().broken {
                None => {
                    self.keep.recover = Some((node, why));
                    return;
                }
                Some(b) => tracing::error!(pid = self.pid, "its checkpoint cannot be replayed exactly ({b})"),
            }
        }
        self.forget_checkpoint();
        tracing::error!(pid = self.pid, "process {} lost on node {node} ({why}); ending it at home", self.pid);
        self.shared.counters.processes_lost.inc();
        if let Some(d) = &self.deputy {
            d.send(Cmd::Kill);
        }
    }

    /// What a move or checkpoint interrupted by the loss of the node running the process
    /// answers (after [`Actor::lost`]).
    fn lost_error(&self) -> ControlError {
        match self.keep.recover {
            Some(_) => err(ErrorKind::Lost, "the node running it was lost; it is resumed from its last checkpoint"),
            None => err(ErrorKind::Lost, "the node running it was lost, and the process with it"),
        }
    }

    fn is_current(&self, gen: u64) -> bool {
        self.remote.as_ref().is_some_and(|r| r.gen == gen)
    }

    /// Whether `gen` is the stream of the node a post-copy takes its pages from.
    fn is_page_source(&self, gen: u64) -> bool {
        matches!(self.postcopy.as_ref().map(|pc| &pc.source), Some(PageSource::Node(b) | PageSource::ToHome { node: b, .. }) if b.gen == gen)
    }

    /// A post-copy home is under way.
    fn pages_come_home(&self) -> bool {
        matches!(self.postcopy.as_ref().map(|pc| &pc.source), Some(PageSource::ToHome { .. }))
    }

    /// Post-copy home: the pages can no longer come (the node it left is gone). The
    /// process at home cannot run on without them: the pager, its link dropped, ends
    /// it (a loss, as for a node that dies under a process).
    fn home_pages_lost(&mut self, why: String) {
        tracing::error!(pid = self.pid, "post-copy home: {why}; the process is lost");
        self.shared.counters.processes_lost.inc();
        if let Some(pc) = self.postcopy.take() {
            if let Some((reply, _)) = pc.answer {
                let _ = reply.send(Err(err(ErrorKind::Lost, format!("the process was lost while its memory came home: {why}"))));
            }
        }
        self.set_row(|r| r.moving = None);
    }

    /// Post-copy home: the pager has ended.
    async fn home_paged(&mut self, end: postcopy::PagerEnd) {
        if !self.pages_come_home() {
            return;
        }
        match end {
            postcopy::PagerEnd::Complete { pages, faults, requested, layout, forks } => {
                tracing::debug!(pid = self.pid, pages, faults, requested, layout, forks, "post-copy home: every page in place");
                self.postcopy_done().await;
            }
            postcopy::PagerEnd::Gone => {
                tracing::debug!(pid = self.pid, "post-copy home: the process's memory went before its pages (it ended or ran another program)");
                self.postcopy_done().await;
            }
            postcopy::PagerEnd::Stopped(why) => {
                // The pager ended the process.
                if let Some(PostCopy { source: PageSource::ToHome { node, .. }, .. }) = &self.postcopy {
                    let _ = node.tx.send(ToRemote::Kill).await;
                }
                self.home_pages_lost(format!("filling its memory stopped: {why}"));
            }
        }
    }

    async fn to_remote(&self, msg: ToRemote) {
        if let Some(r) = &self.remote {
            let _ = r.tx.send(msg).await;
        }
    }

    async fn on_deputy(&mut self, ev: Event) -> bool {
        match ev {
            Event::Reply { seq, reply } => {
                self.shared.counters.forwarded_calls.inc();
                self.forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.to_remote(ToRemote::Reply { seq, reply }).await;
            }
            Event::Signal { sig, during_call, tid, directed } => self.to_remote(ToRemote::Signal { sig, during_call, tid, directed }).await,
            Event::ThreadBorn { seq, tid } => self.to_remote(ToRemote::ThreadBorn { seq, tid }).await,
            Event::Forked { seq, result } => self.forked(seq, result, false).await,
            Event::Gone(why) => {
                tracing::info!(pid = self.pid, "ended ({why})");
                self.path.set(None);
                self.to_remote(ToRemote::Kill).await;
                self.remote = None;
                self.deputy = None;
                return false;
            }
            other => tracing::debug!(pid = self.pid, "deputy: {other:?}"),
        }
        true
    }

    async fn on_remote(&mut self, msg: ToHome) -> bool {
        match msg {
            ToHome::Call { seq, tid, call } => {
                if let Some(d) = &self.deputy {
                    match self.journal.call(seq, tid, &call) {
                        Verdict::Replay(reply) => self.to_remote(ToRemote::Reply { seq, reply }).await,
                        Verdict::Run | Verdict::Diverged(_) => {
                            d.send(Cmd::Call { seq, tid, call });
                        }
                    }
                }
            }
            // A thread made or ended away: its twin at home is made or ends.
            ToHome::ThreadBirth { seq, tid } => {
                // A replay could not make the same twin again.
                self.journal.break_off("a thread was made after the checkpoint");
                match &self.deputy {
                    Some(d) => {
                        d.send(Cmd::GrowThread { seq, tid });
                    }
                    None => self.to_remote(ToRemote::ThreadBorn { seq, tid: -1 }).await,
                }
            }
            ToHome::Fork { seq, tid, nproc } => {
                // A replay could not make the same child again.
                self.journal.break_off("a process was forked after the checkpoint");
                match &self.deputy {
                    Some(d) => {
                        self.forking.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        d.send(Cmd::Fork { seq, tid, nproc });
                    }
                    None => self.to_remote(ToRemote::Forked { seq, errno: libc::EAGAIN }).await,
                }
            }
            ToHome::ThreadEnd { tid } => {
                if let Some(d) = &self.deputy {
                    d.end_thread(tid);
                }
            }
            ToHome::Exec { seq, tid, cmd } => self.execed(seq, tid, cmd).await,
            ToHome::Interrupt { seq, tid } => {
                if let Some(d) = &self.deputy {
                    d.send(Cmd::Interrupt { seq, tid });
                }
            }
            ToHome::Exited(how) => {
                tracing::info!(pid = self.pid, "ended remotely: {how:?}");
                self.path.set(None);
                // Ended before all of its memory had to come: the move itself succeeded.
                if let Some(pc) = self.postcopy.take() {
                    self.set_row(|r| r.moving = None);
                    if let Some((reply, mut m)) = pc.answer {
                        m.total_ms = pc.t0.elapsed().as_secs_f64() * 1e3;
                        let _ = reply.send(Ok(m));
                    }
                }
                // The stream closes next; that is not a loss.
                self.remote = None;
                if let Some(d) = &self.deputy {
                    d.send(Cmd::Exit(how));
                }
            }
            ToHome::Stats(u) => self.sample(u, self.forwarded.load(std::sync::atomic::Ordering::Relaxed), Instant::now()),
            ToHome::PageRequest { addr } => match self.postcopy.as_ref().map(|pc| &pc.source) {
                Some(PageSource::Home(p)) => p.request(addr),
                Some(PageSource::Node(b)) => {
                    let _ = b.tx.send(ToRemote::PageRequest { addr }).await;
                }
                // (The process is home: no node asks for pages.)
                Some(PageSource::ToHome { .. }) | None => {}
            },
            ToHome::PagesDone => self.postcopy_done().await,
            ToHome::WantHome { why } if self.postcopy.is_some() => {
                tracing::info!(pid = self.pid, "comes home for {why} once its memory has arrived");
                if let Some(pc) = self.postcopy.as_mut() {
                    pc.want_home = Some(why);
                }
            }
            ToHome::WantHome { why } => {
                tracing::info!(pid = self.pid, "comes home for {why}");
                // (boxed: a move home may itself hand on messages from the remote node)
                if let Err(e) = Box::pin(self.migrate(&Target::Home, None)).await {
                    tracing::error!(pid = self.pid, "could not bring it home for {why}: {e}");
                }
            }
            other => tracing::debug!(pid = self.pid, "unexpected from the remote node: {other:?}"),
        }
        true
    }

    /// The process runs on its target; `lazy_bytes` of its memory follow from `source`.
    fn start_postcopy(&mut self, source: PageSource, mode: MoveMode, lazy_bytes: u64) {
        self.set_row(|r| r.moving = Some(MoveProgress { mode, phase: "post-copy".into(), sent_bytes: 0, total_bytes: lazy_bytes }));
        let now = Instant::now();
        self.postcopy = Some(PostCopy { source, answer: None, started: now, t0: now, lazy_bytes, want_home: None });
    }

    /// Post-copy is over: the target has every page.
    async fn postcopy_done(&mut self) {
        let Some(pc) = self.postcopy.take() else { return };
        match pc.source {
            PageSource::Home(_) => {
                if let Some(d) = &self.deputy {
                    d.send(Cmd::ReleaseMemory);
                }
            }
            // B's frozen copy ends; its stream closes.
            PageSource::Node(b) | PageSource::ToHome { node: b, .. } => {
                let _ = b.tx.send(ToRemote::Commit).await;
            }
        }
        let home = self.remote.is_none();
        tokio::task::spawn_blocking(herd_kernel::host::release_free_memory);
        let secs = pc.started.elapsed().as_secs_f64();
        tracing::info!(pid = self.pid, "post-copy complete: {} MiB in {:.2} s", pc.lazy_bytes >> 20, secs);
        self.shared.counters.migrated_bytes.inc_by(pc.lazy_bytes);
        if let Some((_, m)) = &pc.answer {
            self.shared.counters.move_bytes.observe((m.bytes + pc.lazy_bytes) as f64);
        }
        self.set_row(|r| {
            r.state = if home { "home" } else { "remote" }.into();
            r.moving = None;
        });
        if let Some((reply, mut m)) = pc.answer {
            m.total_ms = pc.t0.elapsed().as_secs_f64() * 1e3;
            m.bytes += pc.lazy_bytes;
            tracing::info!(pid = self.pid, "moved to {} by post-copy (stopped {:.1} ms, total {:.1} ms, {} bytes)", m.node, m.frozen_ms, m.total_ms, m.bytes);
            let _ = reply.send(Ok(m));
        }
        if let Some(why) = pc.want_home {
            tracing::info!(pid = self.pid, "comes home for {why}");
            if let Err(e) = Box::pin(self.migrate(&Target::Home, None)).await {
                tracing::error!(pid = self.pid, "could not bring it home for {why}: {e}");
            }
        }
    }

    fn dest(&self, target: &Target) -> Result<Dest, ControlError> {
        let snap = self.shared.snapshot.borrow().clone();
        let own = snap.nodes.iter().find(|n| n.is_self).and_then(|n| n.info.clone());
        let usable = |v: &herd_cluster::NodeView| usable(own.as_ref(), v);
        let name = match target {
            Target::Home => return Ok(Dest::Home),
            Target::Node(n) => n.as_str(),
            Target::Balance => {
                let best = snap
                    .nodes
                    .iter()
                    .filter(|v| usable(v).is_ok())
                    .filter_map(|v| v.info.as_ref().map(|i| (v, i)))
                    .map(|(v, i)| (v, i.load as f64 / f64::from(i.cpus.max(1)) / f64::from(i.speed.max(1))))
                    .min_by(|a, b| a.1.total_cmp(&b.1));
                return match best {
                    Some((v, _)) if v.is_self => Ok(Dest::Home),
                    Some((v, _)) => Ok(Dest::Node { name: v.info.as_ref().map(|i| i.name.clone()).unwrap_or_default(), addr: v.id.addr }),
                    None => Err(err(ErrorKind::Refused, "no node can take it now")),
                };
            }
        };
        let v = snap
            .nodes
            .iter()
            .find(|v| v.info.as_ref().is_some_and(|i| i.name == name))
            .ok_or_else(|| err(ErrorKind::BadRequest, format!("no node named {name:?} in the cluster (see `herd nodes`)")))?;
        usable(v).map_err(|why| err(ErrorKind::Refused, format!("node {name} cannot take it: {why}")))?;
        Ok(Dest::Node { name: name.to_string(), addr: v.id.addr })
    }

    /// The mode of a move to a node: as asked, or post-copy when a stop-and-copy
    /// would stop the process longer than [`FREEZE_BUDGET`] (judged by its resident
    /// size against the stop-and-copy rate: read here at home, reported when away).
    fn mode_for(&self, asked: Option<MoveMode>) -> MoveMode {
        asked.unwrap_or_else(|| {
            // With checkpoints: the image of the move is its first checkpoint, and a
            // post-copy one would not hold the pages that follow it.
            if self.keep.every.is_some() {
                return MoveMode::StopAndCopy;
            }
            let rss = match self.remote {
                None => Usage::of(self.pid).map_or(u64::MAX, |u| u.rss),
                Some(_) => self.row.lock().expect("row lock").rss,
            };
            if rss > POSTCOPY_ABOVE {
                MoveMode::PostCopy
            } else {
                MoveMode::StopAndCopy
            }
        })
    }

    /// A move to node `name`: from home, or on from the node it runs on.
    async fn send_to(&mut self, from_home: bool, name: &str, addr: SocketAddr, mode: MoveMode) -> Result<(f64, u64), ControlError> {
        if from_home {
            self.out(name, addr, mode).await
        } else {
            self.relay(name, addr, mode).await
        }
    }

    async fn migrate(&mut self, target: &Target, asked: Option<MoveMode>) -> Result<Migrated, ControlError> {
        let t0 = Instant::now();
        let dest = self.dest(target)?;
        let here = self.remote.as_ref().map(|r| r.node.clone());
        let mut mode = MoveMode::StopAndCopy;
        let result = match (&here, dest) {
            (None, Dest::Home) => Err(err(ErrorKind::Refused, format!("process {} is already at home", self.pid))),
            (Some(n), Dest::Node { name, .. }) if *n == name => Err(err(ErrorKind::Refused, format!("process {} already runs on {name}", self.pid))),
            (None, Dest::Node { .. }) if self.uid == 0 && !self.shared.config.allow_root_guests => {
                return Err(err(ErrorKind::Refused, "root's processes do not migrate (set allow_root_guests = true to allow it)"));
            }
            (Some(_), Dest::Home) if self.replaying() => {
                Err(err(ErrorKind::Busy, "it is replaying its journal after a resume; it can come home once that is over"))
            }
            (Some(_), Dest::Home) => {
                self.set_row(|r| r.state = "migrating".into());
                mode = self.mode_for(asked);
                let device = match mode {
                    MoveMode::PostCopy => match std::fs::OpenOptions::new().read(true).write(true).open(herd_kernel::uffd::DEVICE) {
                        Ok(f) => Some(std::os::fd::OwnedFd::from(f)),
                        Err(e) if asked.is_none() => {
                            tracing::info!(pid = self.pid, "{}: {e}; it comes home by stop-and-copy", herd_kernel::uffd::DEVICE);
                            mode = MoveMode::StopAndCopy;
                            None
                        }
                        Err(e) => {
                            return Err(err(ErrorKind::Refused, format!("this node cannot take it home by post-copy: {}: {e}", herd_kernel::uffd::DEVICE)));
                        }
                    },
                    MoveMode::StopAndCopy => None,
                };
                match self.back_home(device).await {
                    // herdd chose post-copy, and it failed before anything changed (the
                    // process runs on there): by stop-and-copy, then.
                    Err(e) if asked.is_none() && mode == MoveMode::PostCopy && e.kind == ErrorKind::Failed && self.remote.is_some() && self.deputy.is_some() => {
                        tracing::info!(pid = self.pid, "coming home by post-copy failed ({}); by stop-and-copy then", e.message);
                        mode = MoveMode::StopAndCopy;
                        self.back_home(None).await
                    }
                    r => r,
                }
            }
            (here, Dest::Node { name, addr }) => {
                let from_home = here.is_none();
                mode = self.mode_for(asked);
                self.set_row(|r| r.state = "migrating".into());
                self.refusal = None;
                let r = self.send_to(from_home, &name, addr, mode).await;
                // The target cannot take it by post-copy: herdd chose, so it may choose again.
                if asked.is_none() && mode == MoveMode::PostCopy && matches!(self.refusal.take(), Some(Refusal::NoPostCopy { .. })) {
                    tracing::info!(pid = self.pid, "node {name} cannot take it by post-copy; moving it by stop-and-copy");
                    mode = MoveMode::StopAndCopy;
                    self.send_to(from_home, &name, addr, mode).await
                } else {
                    r
                }
            }
        };
        // The image's buffers are free now: give them back (see release_free_memory).
        tokio::task::spawn_blocking(herd_kernel::host::release_free_memory);
        let where_ = self.remote.as_ref().map_or_else(|| self.shared.config.name.clone(), |r| r.node.clone());
        let postcopy = self.postcopy.is_some();
        let state = if postcopy {
            "post-copy"
        } else if self.remote.is_some() {
            "remote"
        } else {
            "home"
        };
        self.set_row(|r| {
            r.where_ = where_.clone();
            r.state = state.into();
            if !postcopy {
                r.moving = None;
            }
        });
        match result {
            Ok((frozen_ms, bytes)) => {
                self.set_row(|r| r.nmigs += 1);
                self.shared.counters.migrations.inc();
                self.shared.counters.migrated_bytes.inc_by(bytes);
                self.shared.counters.freeze_seconds.observe(frozen_ms / 1e3);
                let m = Migrated { pid: self.pid, node: where_, frozen_ms, total_ms: t0.elapsed().as_secs_f64() * 1e3, bytes, mode };
                if let Some(pc) = self.postcopy.as_mut() {
                    pc.t0 = t0;
                    tracing::info!(pid = self.pid, "runs on {} (stopped {:.1} ms); its memory follows (post-copy)", m.node, m.frozen_ms);
                } else {
                    self.shared.counters.move_bytes.observe(bytes as f64);
                    tracing::info!(pid = self.pid, "moved to {} (stopped {:.1} ms, total {:.1} ms, {} bytes)", m.node, m.frozen_ms, m.total_ms, m.bytes);
                }
                Ok(m)
            }
            Err(e) => {
                if e.kind != ErrorKind::BadRequest {
                    self.shared.counters.migrations_failed.inc();
                }
                tracing::warn!(pid = self.pid, "move to {target} failed: {e}");
                Err(e)
            }
        }
    }

    /// Opens a migration stream to `addr`, announces the process and waits
    /// for the node to accept it (nothing of the process is touched before).
    async fn connect(&mut self, name: &str, addr: SocketAddr, mode: MoveMode, track_writes: bool, fork_of: Option<ForkOf>) -> Result<Remote, ControlError> {
        let fail = |why: String| err(ErrorKind::Failed, format!("cannot reach node {name} at {addr}: {why}"));
        let fresh = || async {
            tokio::time::timeout(Duration::from_secs(3), crate::peer::open(&self.shared, addr)).await.map_err(|_| fail("timed out".into()))?.map_err(fail)
        };
        // A child's stream was opened ahead (a fork waits for it).
        let spare = if fork_of.is_some() { crate::peer::Spares::take(&self.shared, addr) } else { None };
        let opened_ahead = spare.is_some();
        let mut stream = match spare {
            Some(s) => s,
            None => fresh().await?,
        };
        let adopt = proto::encode_request(&PeerRequest::Adopt(Adopt { home: self.shared.config.name.clone(), pid: self.pid, uid: self.uid, cmd: self.cmd.clone(), mode, track_writes, fork_of }));
        let silent = |_| fail("no answer to the move within 10 s".into());
        let mut first = announce(&mut stream, &adopt).await.map_err(silent)?;
        if first.is_err() && opened_ahead {
            // Closed at the other end since it was opened (that herdd restarted): a new one.
            tracing::debug!(pid = self.pid, "the stream opened ahead to {name} is gone; a new one");
            stream = fresh().await?;
            first = announce(&mut stream, &adopt).await.map_err(silent)?;
        }
        let first = first.map_err(|e| fail(e.to_string()))?;
        match proto::decode::<ToHome>(&first) {
            Ok(ToHome::Accepted { .. }) => {}
            Ok(ToHome::Refused(r)) => {
                let e = refused(name, &r);
                self.refusal = Some(r);
                return Err(e);
            }
            Ok(other) => return Err(fail(format!("unexpected answer {other:?}"))),
            Err(e) => return Err(fail(format!("garbled answer: {e}"))),
        }
        self.gen += 1;
        let gen = self.gen;
        let (mut rx, direct) = stream.into_direct_split().map_err(|e| fail(e.to_string()))?;
        let (tx, _writer) = Outbox::start(direct);
        let me = self.me.clone();
        let (path, forwarded, counter) = (self.path.clone(), self.forwarded.clone(), self.shared.counters.forwarded_calls.clone());
        let native = self.shared.counters.forwarded_calls_native.clone();
        let pid = self.pid;
        let back = tx.clone();
        let journal = self.journal.clone();
        let reader = tokio::spawn(async move {
            let why = loop {
                match rx.recv().await {
                    Ok(bytes) => match proto::decode_owned::<ToHome>(bytes) {
                        // Before anything that follows uses home's descriptors. Applied
                        // already when a resumed process meets them again in its journal.
                        Ok(ToHome::Offsets(offsets)) => {
                            if !journal.effect(&offsets) {
                                direct::set_offsets(pid, &offsets)
                            }
                        }
                        Ok(ToHome::Write { fd, at, data }) => {
                            if journal.effect(&(fd, at, &data)) {
                                continue;
                            }
                            if let Err(errno) = tokio::task::block_in_place(|| direct::write_at(pid, fd, at, &data)) {
                                tracing::debug!(pid, fd, errno, "gathered writes failed");
                                let _ = back.send(ToRemote::WriteFailed { fd, errno }).await;
                            }
                        }
                        // Answered here, at once: what home's descriptor is, for a node
                        // that would map its own copy of the file.
                        Ok(ToHome::Identify { seq, fd }) => {
                            let file = tokio::task::block_in_place(|| direct::identify(pid, fd, &mut file_hashes().lock().unwrap_or_else(|p| p.into_inner())));
                            let _ = back.send(ToRemote::Identity { seq, file }).await;
                        }
                        // And what an exec's path names, for a node that would make it.
                        Ok(ToHome::ExecIdentify { seq, path, .. }) => {
                            let answer = tokio::task::block_in_place(|| herd_migrate::exec::identify(pid, &path, &mut file_hashes().lock().unwrap_or_else(|p| p.into_inner())));
                            let _ = back.send(ToRemote::ExecIdentity { seq, answer }).await;
                        }
                        // Straight to the deputy thread too, as the call it interrupts.
                        Ok(ToHome::Interrupt { seq, tid }) => match path.deputy(gen) {
                            Some(d) => {
                                d.send(Cmd::Interrupt { seq, tid });
                            }
                            None => {
                                if me.send(Input::Remote { gen, msg: ToHome::Interrupt { seq, tid } }).is_err() {
                                    return;
                                }
                            }
                        },
                        Ok(ToHome::Call { seq, tid, call }) => match path.deputy(gen) {
                            // The fast path: straight to the deputy thread (or answered
                            // from the journal: it ran before the process was resumed).
                            Some(d) => {
                                counter.inc();
                                forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                match journal.call(seq, tid, &call) {
                                    Verdict::Replay(reply) => {
                                        let _ = back.send(ToRemote::Reply { seq, reply }).await;
                                    }
                                    // Made here if herdd can (a read or write of a file,
                                    // getppid: herd_migrate::native), else by the deputy.
                                    Verdict::Run | Verdict::Diverged(_) => match d.run_here(&call) {
                                        Some(reply) => {
                                            native.inc();
                                            journal.reply(seq, &reply);
                                            let _ = back.send(ToRemote::Reply { seq, reply }).await;
                                        }
                                        None => {
                                            d.send(Cmd::Call { seq, tid, call });
                                        }
                                    },
                                }
                            }
                            None => {
                                if me.send(Input::Remote { gen, msg: ToHome::Call { seq, tid, call } }).is_err() {
                                    return;
                                }
                            }
                        },
                        Ok(msg) => {
                            if me.send(Input::Remote { gen, msg }).is_err() {
                                return;
                            }
                        }
                        Err(e) => break format!("garbled message: {e}"),
                    },
                    Err(e) => break e.to_string(),
                }
            };
            let _ = me.send(Input::RemoteClosed { gen, why });
        });
        Ok(Remote { node: name.to_string(), gen, tx, reader: reader.abort_handle() })
    }

    /// Waits for the next input, answering other move requests with "busy"
    /// and keeping the remote copy's resource figures current.
    async fn next(&mut self) -> Option<Input> {
        loop {
            let input = self.inputs.recv().await?;
            match input {
                Input::Migrate { reply, .. } => {
                    let _ = reply.send(Err(err(ErrorKind::Busy, "another move of this process is in progress")));
                }
                Input::Act { reply, .. } => {
                    let _ = reply.send(Err(err(ErrorKind::Busy, "a move or checkpoint of this process is in progress; try again in a moment")));
                }
                // Its node is down: as if its stream had broken.
                Input::NodeDown(node) => {
                    if let Some(r) = self.remote.as_ref().filter(|r| r.node == node) {
                        return Some(Input::RemoteClosed { gen: r.gen, why: format!("membership marks node {node} down") });
                    }
                }
                Input::Remote { gen, msg: ToHome::Stats(u) } if self.is_current(gen) => self.sample(u, self.forwarded.load(std::sync::atomic::Ordering::Relaxed), Instant::now()),
                // A fork's child is made whatever the process does meanwhile (a capture on
                // its node gives the fork up there: the child's stream is then refused and
                // the deputy made for it undone).
                Input::Deputy(Event::Forked { seq, result }) => Box::pin(self.forked(seq, result, true)).await,
                // A child that could not be made: undone now (the deputy does it even while
                // it holds still for the move).
                Input::ForkGivenUp { seq, child, gen } => Box::pin(self.fork_given_up(seq, child, gen, true)).await,
                // A fork asked for while the process moves: not now, its call is made again
                // (after the move, wherever it runs).
                Input::Remote { gen, msg: ToHome::Fork { seq, .. } } if self.is_current(gen) => {
                    tracing::debug!(pid = self.pid, seq, "a fork while it moves: made again later");
                    if let Some(r) = &self.remote {
                        let _ = r.tx.send(ToRemote::Forked { seq, errno: 0 }).await;
                    }
                }
                // An exec's closes are made while it moves too (the deputy makes them even
                // while it holds still; the node refuses the capture until they are made).
                Input::Remote { gen, msg: ToHome::Exec { seq, tid, cmd } } if self.is_current(gen) => self.execed(seq, tid, cmd).await,
                // Its figures while it moves are the remote copy's.
                Input::Look => {}
                other => return Some(other),
            }
        }
    }

    /// It exec'd where it runs ([`ToHome::Exec`]): the deputy closes what the exec closed
    /// in the process, and answers the node.
    async fn execed(&mut self, seq: u64, tid: i32, cmd: String) {
        // A replay could not make the same exec's closes again.
        self.journal.break_off("a program was exec'd after the checkpoint");
        tracing::debug!(pid = self.pid, cmd, "exec'd away");
        if !cmd.is_empty() && cmd != self.cmd {
            self.set_row(|r| r.cmd = cmd.clone());
            self.cmd = cmd;
        }
        match &self.deputy {
            Some(d) => {
                d.send(Cmd::Exec { seq, tid });
            }
            None => self.to_remote(ToRemote::Reply { seq, reply: herd_migrate::syscalls::Reply { ret: 0, outs: Vec::new() } }).await,
        }
    }

    /// Home → `name`: capture here, restore there, then the original becomes the
    /// deputy. With post-copy the process runs there before its memory has
    /// arrived: the pusher sends it, and `self.postcopy` follows it to the end.
    async fn out(&mut self, name: &str, addr: SocketAddr, mode: MoveMode) -> Result<(f64, u64), ControlError> {
        // What can be known before touching anything is said before the target hears
        // of it (the capture checks again, under the freeze).
        let pid = self.pid;
        let why = tokio::task::spawn_blocking(move || cannot_move(pid)).await.unwrap_or_default();
        if !why.is_empty() {
            return Err(err(ErrorKind::Refused, format!("process {pid} cannot move: {}", why.join("; "))));
        }
        // What it runs now (a child adopted before its exec may not have shown it yet):
        // away, its command line is this one's.
        self.read_cmd();
        // A process with checkpoints keeps the image of a stop-and-copy move as its first,
        // and the node tracks its writes from the restore on: its next is an increment.
        let keeps_image = self.keep.every.is_some() && mode == MoveMode::StopAndCopy;
        let remote = self.connect(name, addr, mode, keeps_image, None).await?;
        if failpoint::fires("out-connected") {
            return Err(err(ErrorKind::Failed, "failpoint out-connected"));
        }
        let img_tx = remote.tx.clone();
        let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = bytes.clone();
        let row = self.row.clone();
        self.set_row(|r| r.moving = Some(MoveProgress { mode, phase: "capture".into(), sent_bytes: 0, total_bytes: 0 }));
        let mut tee = keeps_image.then(|| self.image_tee()).flatten();
        let teed = tee.as_ref().map(|t| t.failed.clone());
        let link = deputy::start(
            self.pid,
            mode,
            self.direct_dirs(name),
            move |m| {
                if failpoint::fires("out-image") {
                    return false;
                }
                if let ToRemote::Image(chunk) = &m {
                    let n = counted.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed) + chunk.len() as u64;
                    if let Some(p) = row.lock().expect("row lock").moving.as_mut() {
                        p.sent_bytes = n;
                    }
                    if let Some(t) = tee.as_mut() {
                        t.write(chunk);
                    }
                }
                if matches!(m, ToRemote::ImageEnd) {
                    // The image is complete: written out (flushed) now.
                    drop(tee.take());
                }
                img_tx.blocking_send(m).is_ok()
            },
            self.deputy_events(),
        );
        let gen = remote.gen;
        let mut captured = None;
        let mut running = None;
        let outcome: Result<(), ControlError> = loop {
            let Some(input) = self.next().await else { break Err(err(ErrorKind::Internal, "herdd is stopping")) };
            match input {
                Input::Deputy(Event::Captured { stats, lazy, stack }) => captured = Some((stats, Instant::now(), lazy, stack)),
                Input::Deputy(Event::CaptureFailed(why)) => {
                    break Err(err(ErrorKind::Refused, format!("process {} cannot move: {why}", self.pid)));
                }
                Input::Remote { gen: g, msg: ToHome::Running { pid } } if g == gen => {
                    tracing::debug!(pid = self.pid, "runs on {name} as {pid}");
                    running = Some(Instant::now());
                }
                Input::Remote { gen: g, msg: ToHome::Refused(r) } if g == gen => break Err(refused(name, &r)),
                Input::RemoteClosed { gen: g, why } if g == gen => {
                    break Err(err(ErrorKind::Failed, format!("the connection to node {name} broke during the move: {why}")));
                }
                Input::Remote { gen: g, msg } if g == gen => {
                    // Calls made before "running" arrived here: hold them until the deputy exists.
                    self.early.push(msg);
                }
                Input::Deputy(Event::Gone(why)) => break Err(err(ErrorKind::NoSuchProcess, format!("process {} ended: {why}", self.pid))),
                _ => {}
            }
            if running.is_some() && captured.is_some() {
                break Ok(());
            }
        };
        // Everything done but the commit.
        let outcome = outcome.and_then(|()| match failpoint::fires("out-commit") {
            true => Err(err(ErrorKind::Failed, "failpoint out-commit")),
            false => Ok(()),
        });
        if let Err(e) = outcome {
            if teed.is_some() {
                let _ = std::fs::remove_file(self.image_paths().1);
            }
            // Before the commit the thread waits on its channel, not on the process: a
            // wake-up signal would stay queued in the process and kill it once released.
            link.send_parked(Cmd::Abort);
            // The target ends what it started (and logs why), then the stream closes.
            let _ = remote.tx.try_send(ToRemote::Cancel { reason: e.to_string() });
            drop(remote);
            self.early.clear();
            return Err(e);
        }
        link.send_parked(Cmd::Commit);
        let (stats, captured_at, lazy, stack) = captured.expect("captured");
        // Stopped from the freeze until the target said it runs.
        let stopped_at = captured_at.checked_sub(stats.frozen_for).unwrap_or(captured_at);
        let frozen_ms = running.expect("running").saturating_duration_since(stopped_at).as_secs_f64() * 1e3;
        tracing::debug!(
            pid = self.pid,
            "stopped {frozen_ms:.1} ms: capture and image {:.1} ms, then {:.1} ms until it ran on {name}",
            stats.frozen_for.as_secs_f64() * 1e3,
            running.expect("running").saturating_duration_since(captured_at).as_secs_f64() * 1e3
        );
        if !lazy.is_empty() {
            let lazy_bytes = lazy.iter().map(|r| r.1).sum();
            let (to_remote, me) = (remote.tx.clone(), self.me.clone());
            let row = self.row.clone();
            let mut sent = 0u64;
            let pusher = postcopy::start_pusher(
                self.pid,
                lazy,
                stack,
                move |p| {
                    let m = match p {
                        Push::Pages { addr, data } => {
                            sent += data.len() as u64;
                            if let Some(p) = row.lock().expect("row lock").moving.as_mut() {
                                p.sent_bytes = sent;
                            }
                            ToRemote::Pages { addr, data }
                        }
                        Push::End => ToRemote::PagesEnd,
                    };
                    to_remote.blocking_send(m).is_ok()
                },
                move |r| {
                    let _ = me.send(Input::PagesSent(r));
                },
            );
            self.start_postcopy(PageSource::Home(pusher), mode, lazy_bytes);
        }
        let mut broke = None;
        loop {
            match self.next().await {
                Some(Input::Deputy(Event::Deputy)) => break,
                Some(Input::Deputy(Event::Signal { sig, during_call, tid, directed })) => {
                    let _ = remote.tx.send(ToRemote::Signal { sig, during_call, tid, directed }).await;
                }
                Some(Input::Deputy(Event::Gone(why))) | Some(Input::Deputy(Event::CaptureFailed(why))) => {
                    let _ = remote.tx.send(ToRemote::Kill).await;
                    self.postcopy = None;
                    return Err(err(ErrorKind::NoSuchProcess, format!("process {} ended: {why}", self.pid)));
                }
                Some(Input::Remote { gen: g, msg }) if g == gen => self.early.push(msg),
                Some(Input::RemoteClosed { gen: g, why }) if g == gen => {
                    // Lost right after it started there; handled once the deputy exists.
                    tracing::error!(pid = self.pid, "the connection to {name} broke as the process started there: {why}");
                    broke = Some(why);
                }
                Some(Input::PagesSent(r)) => self.early_pages = Some(r),
                Some(_) => {}
                None => return Err(err(ErrorKind::Internal, "herdd is stopping")),
            }
        }
        self.deputy = Some(link);
        self.remote = Some(remote);
        // Its image, kept: the first checkpoint, from which the journal starts (before
        // any call it made there is looked at).
        if let Some(failed) = teed {
            if let Some(id) = self.keep_teed(failed) {
                self.to_remote(ToRemote::ImageKept { id }).await;
            }
        }
        self.arrived();
        if let Some(why) = broke {
            self.lost(why);
        }
        for msg in std::mem::take(&mut self.early) {
            self.on_remote(msg).await;
        }
        if let Some(r) = self.early_pages.take() {
            Box::pin(self.handle(Input::PagesSent(r))).await;
        }
        self.route();
        Ok((frozen_ms, bytes.load(std::sync::atomic::Ordering::Relaxed)))
    }

    /// What the deputy thread reports: answers and signals straight to the stream when
    /// the fast path is open (journaled first), the rest to the actor.
    fn deputy_events(&self) -> impl Fn(Event) + Send + Sync + 'static {
        let (path, journal, me) = (self.path.clone(), self.journal.clone(), self.me.clone());
        move |ev| {
            if let Event::Reply { seq, reply } = &ev {
                journal.reply(*seq, reply);
            }
            let fast = match &ev {
                Event::Reply { .. } | Event::Signal { .. } => path.remote(),
                _ => None,
            };
            match (fast, ev) {
                (Some(tx), Event::Reply { seq, reply }) => {
                    let _ = tx.blocking_send(ToRemote::Reply { seq, reply });
                }
                (Some(tx), Event::Signal { sig, during_call, tid, directed }) => {
                    let _ = tx.blocking_send(ToRemote::Signal { sig, during_call, tid, directed });
                }
                (_, ev) => {
                    let _ = me.send(Input::Deputy(ev));
                }
            }
        }
    }

    /// The deputy made (or failed to make) the child's deputy for fork `seq` made on the
    /// node: the child is registered (a process of this home, in its parent's job, born
    /// on that node: [`Actor::born_away`]), or the fork fails there. `moving`: it came
    /// while the process moves (see [`Actor::fork_given_up`]).
    async fn forked(&mut self, seq: u64, result: Result<deputy::Twin, i32>, moving: bool) {
        let twin = match result {
            Ok(t) => t,
            Err(errno) => {
                self.forking.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                self.to_remote(ToRemote::Forked { seq, errno }).await;
                return;
            }
        };
        let node = self.remote.as_ref().map(|r| r.node.clone());
        let addr = node.as_ref().and_then(|n| {
            let snap = self.shared.snapshot.borrow();
            snap.nodes.iter().find(|v| v.info.as_ref().is_some_and(|i| &i.name == n)).map(|v| v.id.addr)
        });
        let start = procfs::process::Process::new(twin.pid).and_then(|p| p.stat()).map(|st| st.starttime);
        let (Some(node), Some(addr), Ok(start)) = (node, addr, start) else {
            tracing::warn!(pid = self.pid, child = twin.pid, "a fork away is given up: its node is not known any more");
            self.forking.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            let gen = self.remote.as_ref().map_or(0, |r| r.gen);
            Box::pin(self.fork_given_up(seq, twin.pid, gen, moving)).await;
            return;
        };
        let kin = {
            let row = self.row.lock().expect("row lock");
            Kin { job: if row.job > 0 { row.job } else { self.pid }, uid: self.uid, lock: row.lock, every: row.checkpoint_every.map(Duration::from_secs_f64) }
        };
        let pid = twin.pid;
        let facts = Facts { uid: self.uid, start, ppid: self.pid, cmd: self.cmd.clone(), plain_ids: true };
        let parent_gen = self.remote.as_ref().map_or(0, |r| r.gen);
        let birth = Birth { twin, parent: self.pid, seq, node, addr, parent_tx: self.me.clone(), parent_gen };
        insert(&self.shared, pid, facts, kin, Some(birth));
        self.forking.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The child of fork `seq` (on stream `gen`) could not be made: its deputy `child` is
    /// undone unseen by the parent's deputy, and the fork is made again — or fails with
    /// EAGAIN, as one short of resources, when children keep failing to be made there.
    /// `moving`: the process is moving (the deputy is not woken).
    async fn fork_given_up(&mut self, seq: u64, child: i32, gen: u64, moving: bool) {
        match &self.deputy {
            // While it moves the deputy holds still, or is about to (its Quiesce wakes it),
            // or has left the process that came home: no wake-up signal, which would
            // end a process released at home (SIGRTMAX terminates by default). Had it no
            // time for the child before the process came home, the child is ended then
            // (`end_unforked`).
            Some(d) if moving => {
                d.send_parked(Cmd::Unfork { pid: child });
                self.unforking.retain(|(p, _)| std::path::Path::new(&format!("/proc/{p}")).exists());
                if let Ok(st) = procfs::process::Process::new(child).and_then(|p| p.stat()) {
                    self.unforking.push((child, st.starttime));
                }
            }
            Some(d) => {
                d.send(Cmd::Unfork { pid: child });
            }
            None => {
                // Home already (a child given up late): the process reaps it, killed.
                tracing::warn!(pid = self.pid, child, "a child given up after its parent came home: killed");
                let _ = herd_kernel::task::kill(child, libc::SIGKILL);
            }
        }
        let now = Instant::now();
        self.fork_give_ups.retain(|t| now.duration_since(*t) < FORK_GIVE_UPS.1);
        self.fork_give_ups.push(now);
        let errno = if self.fork_give_ups.len() >= FORK_GIVE_UPS.0 { libc::EAGAIN } else { 0 };
        if self.is_current(gen) {
            self.to_remote(ToRemote::Forked { seq, errno }).await;
        }
    }

    /// Home again, its deputy gone: the children of forks given up during the move that
    /// the deputy had no time to undo (parked, every signal blocked, they would sleep at
    /// home for ever as children their parent never made) end now: the parent may see a
    /// child of its own that died.
    fn end_unforked(&mut self) {
        for (child, start) in std::mem::take(&mut self.unforking) {
            let still = procfs::process::Process::new(child).and_then(|p| p.stat()).is_ok_and(|st| st.starttime == start && st.ppid == self.pid);
            if still {
                tracing::warn!(pid = self.pid, child, "a child given up as the process came home: killed");
                let _ = herd_kernel::task::kill(child, libc::SIGKILL);
            }
        }
    }

    /// A child forked on a remote node: its stream to that node (no image: the parent's
    /// guest there makes it run) and its deputy, forked from the parent's. False if it
    /// could not be made: the parent's fork then fails there with EAGAIN and the deputy
    /// is undone, unseen by the parent.
    async fn born_away(&mut self, b: Birth) -> bool {
        let Birth { twin, parent, seq, node, addr, parent_tx, parent_gen } = b;
        let child = twin.pid;
        self.set_row(|r| {
            r.where_ = node.clone();
            r.state = "remote".into();
        });
        let given_up = |why: String| {
            tracing::warn!(parent, "the child of a fork on {node} cannot be made there: {why}");
            let _ = parent_tx.send(Input::ForkGivenUp { seq, child, gen: parent_gen });
        };
        let remote = match self.connect(&node, addr, MoveMode::StopAndCopy, false, Some(ForkOf { parent, seq })).await {
            Ok(r) => r,
            Err(e) => {
                given_up(e.to_string());
                return false;
            }
        };
        // Until the child runs there, its deputy stays parked: if it does not, the
        // parent's deputy undoes it unseen (ForkGivenUp).
        let gen = remote.gen;
        let ran = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let Some(input) = self.next().await else { return Err("herdd is stopping".to_string()) };
                match input {
                    Input::Remote { gen: g, msg: ToHome::Running { .. } } if g == gen => return Ok(()),
                    Input::Remote { gen: g, msg: ToHome::Refused(r) } if g == gen => return Err(r.to_string()),
                    Input::RemoteClosed { gen: g, why } if g == gen => return Err(why),
                    Input::Remote { gen: g, msg } if g == gen => self.early.push(msg),
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err("it did not start within 10 s".into()));
        if let Err(why) = ran {
            drop(remote);
            self.early.clear();
            given_up(why);
            return false;
        }
        // It runs: its deputy takes over the twin. What the deputy reports meanwhile (a
        // signal sent to the child at once) is handed on once the stream is its.
        let link = deputy::adopt_forked(twin, self.deputy_events());
        let mut reported = Vec::new();
        let ready = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match self.next().await {
                    None => return Err("herdd is stopping".to_string()),
                    Some(Input::Deputy(Event::Deputy)) => return Ok(()),
                    Some(Input::Deputy(Event::Gone(why))) => return Err(why),
                    Some(Input::Deputy(ev)) => reported.push(ev),
                    Some(Input::Remote { gen: g, msg }) if g == gen => self.early.push(msg),
                    Some(Input::RemoteClosed { gen: g, why }) if g == gen => return Err(why),
                    Some(_) => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err("its deputy did not take it over within 10 s".into()));
        if let Err(why) = ready {
            // It ran there, and its parent knows its pid: it is lost, as on a node that
            // died (its deputy, killed, is reaped by the parent as a child killed).
            tracing::error!(pid = self.pid, parent, "the child of a fork on {node} is lost: {why}");
            link.send(Cmd::Kill);
            let _ = remote.tx.send(ToRemote::Kill).await;
            self.early.clear();
            self.shared.counters.processes_lost.inc();
            return false;
        }
        self.deputy = Some(link);
        self.remote = Some(remote);
        self.arrived();
        for ev in reported {
            self.on_deputy(ev).await;
        }
        for msg in std::mem::take(&mut self.early) {
            self.on_remote(msg).await;
        }
        self.route();
        tracing::debug!(pid = self.pid, parent, "forked on {node}");
        true
    }

    /// Has the deputy finish or abandon the call it serves and hold still.
    async fn quiesce(&mut self) -> Result<(), ControlError> {
        let Some(d) = &self.deputy else { return Err(err(ErrorKind::Internal, "no deputy")) };
        // Still holding still from a capture that broke off (its node was lost).
        if self.quiesced {
            return Ok(());
        }
        // Calls take the actor's path again; one already handed to the deputy is
        // finished or abandoned by the Quiesce.
        self.path.set(None);
        d.send(Cmd::Quiesce);
        loop {
            match self.next().await {
                Some(Input::Deputy(Event::Quiesced)) => {
                    self.quiesced = true;
                    return Ok(());
                }
                Some(Input::Deputy(ev)) => {
                    if !self.on_deputy(ev).await {
                        return Err(err(ErrorKind::NoSuchProcess, format!("process {} ended", self.pid)));
                    }
                }
                Some(Input::Remote { gen, msg: ToHome::Exited(how) }) if self.is_current(gen) => {
                    self.on_remote(ToHome::Exited(how)).await;
                    return Err(err(ErrorKind::NoSuchProcess, format!("process {} ended during the move", self.pid)));
                }
                // Calls still in flight: the capture interrupts them and they are made again.
                Some(Input::Remote { .. }) => {}
                Some(Input::RemoteClosed { gen, why }) if self.is_current(gen) => {
                    self.lost(why);
                    return Err(self.lost_error());
                }
                Some(_) => {}
                None => return Err(err(ErrorKind::Internal, "herdd is stopping")),
            }
        }
    }

    /// Resumes serving after a move away from a remote node (failed, or on to another).
    fn resume(&mut self) {
        self.quiesced = false;
        if let Some(d) = &self.deputy {
            d.resume();
        }
        self.route();
    }

    /// Opens the fast path of forwarded calls to the current node (see [`CallPath`]).
    fn route(&self) {
        if let (Some(d), Some(r)) = (&self.deputy, &self.remote) {
            self.path.set(Some(Route { gen: r.gen, deputy: d.clone(), remote: r.tx.clone() }));
        }
    }

    /// Remote → home: the image is restored into the deputy. With `device`
    /// (/dev/userfaultfd: post-copy), the process runs at home before its private
    /// anonymous memory is there; the node it left sends it to a pager here
    /// (`self.postcopy`, source `PageSource::ToHome`) until the process has it all.
    async fn back_home(&mut self, device: Option<std::os::fd::OwnedFd>) -> Result<(f64, u64), ControlError> {
        self.quiesce().await?;
        let remote = self.remote.as_ref().expect("remote");
        let (gen, node) = (remote.gen, remote.node.clone());
        let (pieces, reader) = pipe::channel();
        let postcopy = device.is_some();
        // The runs come first on the stream; the deputy waits for them (a failure
        // before them drops the sender, which ends its wait).
        let (runs_tx, runs_rx) = std::sync::mpsc::channel();
        let mut runs_tx = Some(runs_tx);
        let lazy = device.map(|device| deputy::LazyHome { runs: runs_rx, device });
        self.deputy.as_ref().expect("deputy").send_parked(Cmd::ComeHome(reader, lazy));
        self.quiesced = false;
        self.to_remote(if postcopy { ToRemote::CapturePostCopy } else { ToRemote::Capture }).await;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let t_capture = Instant::now();
        let mut bytes = 0u64;
        let mut feeding = true;
        let feed = |p: Piece| tokio::task::block_in_place(|| pieces.send(p).is_ok());
        let mut broken = None;
        // The capture's stream has ended (ImageEnd or CaptureFailed), and why it failed there.
        let mut ended = false;
        let mut failed_there = None;
        loop {
            match self.next().await {
                Some(Input::Remote { gen: g, msg }) if g == gen => match msg {
                    ToHome::Image(chunk) if feeding => {
                        bytes += chunk.len() as u64;
                        feeding = feed(Piece::Data(chunk));
                    }
                    ToHome::Lazy(r) if postcopy => {
                        if let Some(tx) = runs_tx.take() {
                            let _ = tx.send(r.clone());
                        }
                        runs = r;
                    }
                    ToHome::ImageEnd => {
                        ended = true;
                        runs_tx = None;
                        feed(Piece::End);
                    }
                    ToHome::CaptureFailed { reason } => {
                        ended = true;
                        runs_tx = None;
                        feed(Piece::Failed(reason.clone()));
                        failed_there = Some(reason);
                        // The deputy reports HomeFailed below; the remote copy runs on.
                    }
                    ToHome::Exited(how) => {
                        drop(runs_tx.take());
                        feed(Piece::Failed("it ended".into()));
                        self.on_remote(ToHome::Exited(how)).await;
                        return Err(err(ErrorKind::NoSuchProcess, format!("process {} ended during the move", self.pid)));
                    }
                    _ => {}
                },
                Some(Input::RemoteClosed { gen: g, why }) if g == gen => {
                    drop(runs_tx.take());
                    feed(Piece::Failed(format!("the connection to node {node} broke: {why}")));
                    broken = Some(why);
                }
                Some(Input::Deputy(Event::Home { stats, warnings, uffd })) => {
                    for w in warnings {
                        tracing::debug!(pid = self.pid, "restore at home: {w}");
                    }
                    let frozen_ms = t_capture.elapsed().as_secs_f64() * 1e3;
                    let _ = stats;
                    let old = self.remote.take().expect("remote");
                    self.deputy = None;
                    self.end_unforked();
                    self.arrived();
                    // At home it runs natively: nothing of it is journaled, its checkpoint
                    // is of no use any more (the next is taken when it leaves again).
                    self.forget_checkpoint();
                    match uffd {
                        Some(uffd) => self.pages_home(old, uffd, &runs).await,
                        None => {
                            let _ = old.tx.send(ToRemote::Commit).await;
                        }
                    }
                    return Ok((frozen_ms, bytes));
                }
                Some(Input::Deputy(Event::HomeFailed(why))) => {
                    // The node was lost before its image came: the deputy is intact.
                    if let Some(lost) = broken.take() {
                        self.lost(lost);
                        return Err(self.lost_error());
                    }
                    if self.is_current(gen) {
                        if !ended {
                            failed_there = self.rest_of_capture(gen).await.or(failed_there);
                        }
                        self.to_remote(ToRemote::Abort).await;
                        self.route();
                        let why = failed_there.map_or(why, |r| format!("it cannot move now: {r}"));
                        return Err(err(ErrorKind::Failed, format!("bringing it home failed: {why}; it runs on {node}")));
                    }
                    // The remote node is gone, and so is the process.
                    if let Some(d) = &self.deputy {
                        d.send(Cmd::Kill);
                    }
                    return Err(err(ErrorKind::Failed, format!("node {node} was lost while bringing it home: {why}")));
                }
                Some(Input::Deputy(Event::Gone(why))) => {
                    self.to_remote(ToRemote::Kill).await;
                    self.remote = None;
                    self.deputy = None;
                    return Err(err(ErrorKind::NoSuchProcess, format!("process {} ended: {why}", self.pid)));
                }
                Some(_) => {}
                None => return Err(err(ErrorKind::Internal, "herdd is stopping")),
            }
        }
    }

    /// Post-copy home: the process runs here; `uffd` (its lazy memory, `runs`) is
    /// filled by a pager from the pages `node` sends. If the pager cannot start, the
    /// process, lacking memory, is ended (a loss).
    async fn pages_home(&mut self, node: Remote, uffd: std::os::fd::OwnedFd, runs: &[(u64, u64)]) {
        let lazy_bytes = runs.iter().map(|r| r.1).sum();
        let (to_node, me, pid) = (node.tx.clone(), self.me.clone(), self.pid);
        // A pager that stops before every page is in place must not leave the process
        // running: its missing pages would read as zeroes.
        let own = herd_kernel::pidfd::PidFd::open(pid);
        let started = Instant::now();
        let pager = postcopy::start_pager(
            pid,
            uffd,
            runs,
            move |addr| to_node.blocking_send(ToRemote::PageRequest { addr }).is_ok(),
            move |end| {
                match &end {
                    postcopy::PagerEnd::Stopped(why) => {
                        tracing::warn!(pid, "post-copy home stopped before every page was in place ({why}); ending the process");
                        if let Ok(p) = &own {
                            let _ = p.send_signal(libc::SIGKILL);
                        }
                    }
                    _ => tracing::info!(pid, "post-copy home over in {:.1} ms", started.elapsed().as_secs_f64() * 1e3),
                }
                let _ = me.send(Input::HomePaged(end));
            },
        );
        match pager {
            Ok(link) => {
                let _ = node.tx.send(ToRemote::PushPages).await;
                self.start_postcopy(PageSource::ToHome { node, pager: link }, MoveMode::PostCopy, lazy_bytes);
            }
            Err(e) => {
                tracing::error!(pid, "post-copy home: cannot start the pager ({e}); the process is lost");
                let _ = herd_kernel::task::kill(pid, libc::SIGKILL);
                let _ = node.tx.send(ToRemote::Kill).await;
                self.shared.counters.processes_lost.inc();
            }
        }
    }

    /// After a move from the remote node (stream `gen`) failed elsewhere before its
    /// capture there ended: waits for the rest of the capture (up to its ImageEnd or
    /// CaptureFailed, the image dropped), so that nothing of it is taken for the next
    /// one's. Why it failed there, if it did.
    async fn rest_of_capture(&mut self, gen: u64) -> Option<String> {
        let limit = tokio::time::sleep(CAPTURE_REST);
        tokio::pin!(limit);
        loop {
            let input = tokio::select! {
                i = self.next() => i,
                () = &mut limit => {
                    tracing::warn!(pid = self.pid, "the rest of a failed move's capture did not come within {CAPTURE_REST:?}");
                    return None;
                }
            };
            match input {
                Some(Input::Remote { gen: g, msg }) if g == gen => match msg {
                    ToHome::ImageEnd => return None,
                    ToHome::CaptureFailed { reason } => return Some(reason),
                    ToHome::Exited(how) => {
                        self.on_remote(ToHome::Exited(how)).await;
                        return None;
                    }
                    _ => {}
                },
                Some(Input::RemoteClosed { gen: g, why }) if g == gen => {
                    self.lost(why);
                    return None;
                }
                Some(Input::Deputy(ev)) => {
                    if !self.on_deputy(ev).await {
                        return None;
                    }
                }
                Some(_) => {}
                None => return None,
            }
        }
    }

    /// Remote B → node `name` (C): B's image is relayed to C. By post-copy, B's
    /// frozen copy stays after C runs the process and sends its pages, relayed by
    /// home too, until C has them all (`self.postcopy`, source `PageSource::Node`).
    async fn relay(&mut self, name: &str, addr: SocketAddr, mode: MoveMode) -> Result<(f64, u64), ControlError> {
        self.quiesce().await?;
        let new = match self.connect(name, addr, mode, false, None).await {
            Ok(r) => r,
            Err(e) => {
                self.resume();
                return Err(e);
            }
        };
        let old_gen = self.remote.as_ref().expect("remote").gen;
        let postcopy = mode == MoveMode::PostCopy;
        self.to_remote(if postcopy { ToRemote::CapturePostCopy } else { ToRemote::Capture }).await;
        let t_capture = Instant::now();
        let mut bytes = 0u64;
        let mut lazy_bytes = 0u64;
        let mut ended = false;
        self.set_row(|r| r.moving = Some(MoveProgress { mode, phase: "capture".into(), sent_bytes: 0, total_bytes: 0 }));
        let result: Result<(), ControlError> = loop {
            match self.next().await {
                Some(Input::Remote { gen, msg }) if gen == old_gen => match msg {
                    ToHome::Image(chunk) => {
                        bytes += chunk.len() as u64;
                        let _ = new.tx.send(ToRemote::Image(chunk)).await;
                    }
                    ToHome::ImageEnd => {
                        ended = true;
                        let dirs = self.direct_dirs(name);
                        let pid = self.pid;
                        let files = tokio::task::block_in_place(|| direct::files_of(pid, &dirs));
                        let _ = new.tx.send(ToRemote::Files(files)).await;
                        let _ = new.tx.send(ToRemote::ImageEnd).await;
                    }
                    ToHome::Lazy(runs) if postcopy => {
                        lazy_bytes = runs.iter().map(|r| r.1).sum();
                        let _ = new.tx.send(ToRemote::Lazy(runs)).await;
                    }
                    ToHome::CaptureFailed { reason } => {
                        ended = true;
                        break Err(err(ErrorKind::Refused, format!("it cannot move now: {reason}")));
                    }
                    ToHome::Exited(how) => {
                        self.on_remote(ToHome::Exited(how)).await;
                        return Err(err(ErrorKind::NoSuchProcess, format!("process {} ended during the move", self.pid)));
                    }
                    _ => {}
                },
                Some(Input::RemoteClosed { gen, why }) if gen == old_gen => {
                    self.lost(why);
                    let _ = new.tx.send(ToRemote::Cancel { reason: "the node it came from was lost".into() }).await;
                    return Err(self.lost_error());
                }
                Some(Input::Remote { gen, msg: ToHome::Running { .. } }) if gen == new.gen => break Ok(()),
                Some(Input::Remote { gen, msg: ToHome::Refused(r) }) if gen == new.gen => break Err(refused(name, &r)),
                Some(Input::RemoteClosed { gen, why }) if gen == new.gen => {
                    break Err(err(ErrorKind::Failed, format!("the connection to node {name} broke during the move: {why}")));
                }
                Some(Input::Remote { gen, msg }) if gen == new.gen => self.early.push(msg),
                Some(Input::Deputy(ev)) => {
                    if !self.on_deputy(ev).await {
                        return Err(err(ErrorKind::NoSuchProcess, format!("process {} ended", self.pid)));
                    }
                }
                Some(_) => {}
                None => return Err(err(ErrorKind::Internal, "herdd is stopping")),
            }
        };
        match result {
            Ok(()) => {
                let frozen_ms = t_capture.elapsed().as_secs_f64() * 1e3;
                let old = self.remote.replace(new).expect("remote");
                if postcopy && lazy_bytes > 0 {
                    let _ = old.tx.send(ToRemote::PushPages).await;
                    self.start_postcopy(PageSource::Node(old), mode, lazy_bytes);
                } else {
                    let _ = old.tx.send(ToRemote::Commit).await;
                }
                self.arrived();
                self.resume();
                for msg in std::mem::take(&mut self.early) {
                    self.on_remote(msg).await;
                }
                Ok((frozen_ms, bytes))
            }
            Err(mut e) => {
                let _ = new.tx.send(ToRemote::Cancel { reason: e.to_string() }).await;
                drop(new);
                self.early.clear();
                if !ended {
                    // The target gave up first: why the capture failed, if it did, is the
                    // better reason.
                    if let Some(r) = self.rest_of_capture(old_gen).await {
                        e = err(ErrorKind::Refused, format!("it cannot move now: {r}"));
                    }
                }
                self.to_remote(ToRemote::Abort).await;
                self.resume();
                Err(e)
            }
        }
    }
}

/// How long the rest of a failed move's capture may take to come (see
/// `Actor::rest_of_capture`).
const CAPTURE_REST: Duration = Duration::from_secs(60);

/// The other side: a process of another node's arrives on `stream`.
pub async fn guest(stream: SecureStream<tokio::net::TcpStream>, adopt: Adopt, shared: Arc<Shared>) {
    let (mut rx, direct) = match stream.into_direct_split() {
        Ok(halves) => halves,
        Err(e) => {
            tracing::warn!(home = adopt.home, pid = adopt.pid, "stream from home: {e}");
            return;
        }
    };
    let (out_tx, writer) = Outbox::start(direct);
    // Refused before anything of the process is sent.
    // (A child born here by its parent's fork is not refused for a blocked node: it is
    // expelled with the others.)
    let refusal = if shared.snapshot.borrow().status.blocked && adopt.fork_of.is_none() {
        Some(Refusal::Blocked { node: shared.config.name.clone() })
    } else if adopt.uid == 0 && !shared.config.allow_root_guests {
        Some(Refusal::RootGuest)
    } else if adopt.mode == MoveMode::PostCopy {
        postcopy_unavailable().map(|why| Refusal::NoPostCopy { why })
    } else {
        None
    };
    if let Some(r) = refusal {
        tracing::info!(home = adopt.home, pid = adopt.pid, "a process is not taken: {r}");
        let _ = out_tx.send(ToHome::Refused(r)).await;
        drop(out_tx);
        let _ = writer.await;
        return;
    }
    let _ = out_tx.send(ToHome::Accepted { version: proto::PROTOCOL_VERSION }).await;
    let (pieces, reader) = pipe::channel();
    let (lazy_tx, lazy_rx) = std::sync::mpsc::channel();
    let out = out_tx.clone();
    let images = out_tx.clone();
    let latency = shared.counters.call_seconds.clone();
    let common = Arc::new(guest::Shared {
        direct_dirs: shared.dfsa.shared_with(&adopt.home),
        call_took: Some(Arc::new(move |d: Duration| latency.observe(d.as_secs_f64()))),
        ..Default::default()
    });
    let out: guest::Out = Arc::new(move |m| out.blocking_send(m).is_ok());
    let image_out: guest::ImageOut = Arc::new(move |chunk| images.blocking_send(ToHome::Image(chunk.into())).is_ok());
    let link = match adopt.fork_of {
        // The child of a fork made here: its parent's guest makes it run.
        Some(f) => {
            // The newest guest of that process here (an older one, which moved on, may not
            // have been dropped yet).
            let parent = shared
                .procs
                .guests
                .lock()
                .expect("guests lock")
                .iter()
                .filter(|(_, g)| g.home == adopt.home && g.pid == f.parent)
                .max_by_key(|(id, _)| **id)
                .map(|(_, g)| g.link.clone());
            tracing::debug!(home = adopt.home, pid = adopt.pid, parent = f.parent, "a child made here by a fork");
            match (parent, guest::channel()) {
                (Some(parent), Ok((tx, rx))) => {
                    let child = guest::ForkChild { seq: f.seq, adopt: adopt.clone(), out, image_out, shared: common.clone(), cmds: rx };
                    if parent.send(GuestCmd::Child(child)) {
                        Ok(tx)
                    } else {
                        Err(std::io::Error::other(format!("process {} has ended here", f.parent)))
                    }
                }
                (None, _) => Err(std::io::Error::other(format!("process {} does not run here", f.parent))),
                (_, Err(e)) => Err(e),
            }
        }
        None => {
            tracing::info!(home = adopt.home, pid = adopt.pid, cmd = adopt.cmd, mode = %adopt.mode, "a process arrives");
            guest::start(adopt.clone(), reader, lazy_rx, out, move |chunk| image_out(chunk), common.clone())
        }
    };
    let link = match link {
        Ok(l) => Arc::new(l),
        Err(e) => {
            let _ = out_tx.send(ToHome::Refused(Refusal::Restore { why: format!("cannot start a guest: {e}") })).await;
            return;
        }
    };
    shared.counters.guests_received.inc();
    let id = shared.procs.next_guest.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let recheck = out_tx.clone();
    shared.procs.guests.lock().expect("guests lock").insert(id, GuestEntry { home: adopt.home.clone(), pid: adopt.pid, tx: out_tx, link: link.clone() });
    // Blocked (expel) while it was arriving: it goes back as soon as it runs.
    if shared.snapshot.borrow().status.blocked {
        let _ = recheck.send(ToHome::WantHome { why: format!("node {} expels its guests", shared.config.name) }).await;
    }
    drop(recheck);
    // (No image comes for the child of a fork.)
    let mut image_done = adopt.fork_of.is_some();
    let feed = |p: Piece| tokio::task::block_in_place(|| pieces.send(p).is_ok());
    let pager = |input: PagerInput| match common.pager.get() {
        Some(p) => p.send(input),
        None => false,
    };
    let mut down = shared.procs.declared_down.subscribe();
    loop {
        let next = tokio::select! {
            r = rx.recv() => r,
            _ = down.changed() => {
                tracing::warn!(home = adopt.home, pid = adopt.pid, "ending the guest: this node was declared down");
                break;
            }
        };
        let msg = match next {
            Ok(bytes) => match proto::decode_owned::<ToRemote>(bytes) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(home = adopt.home, "garbled message from home: {e}");
                    break;
                }
            },
            Err(herd_wire::StreamError::Closed) => break,
            Err(e) => {
                tracing::warn!(home = adopt.home, pid = adopt.pid, "stream from home: {e}");
                break;
            }
        };
        let cmd = match msg {
            ToRemote::Image(chunk) if !image_done => {
                feed(Piece::Data(chunk));
                continue;
            }
            ToRemote::ImageEnd if !image_done => {
                image_done = true;
                feed(Piece::End);
                continue;
            }
            m @ (ToRemote::Commit | ToRemote::Abort) => {
                // A capture here is over; its buffers are free.
                tokio::task::spawn_blocking(herd_kernel::host::release_free_memory);
                GuestCmd::Home(m)
            }
            ToRemote::Lazy(runs) if !image_done => {
                let _ = lazy_tx.send(runs);
                continue;
            }
            ToRemote::Files(files) if !image_done => {
                *common.files.lock().expect("files lock") = Some(files);
                continue;
            }
            ToRemote::Cancel { reason } if !image_done => {
                *common.cancelled.lock().expect("cancel lock") = Some(reason.clone());
                image_done = true;
                feed(Piece::Failed(format!("home called the move off: {reason}")));
                continue;
            }
            ToRemote::Pages { addr, data } => {
                if !pager(PagerInput::Pages { addr, data }) {
                    tracing::debug!(home = adopt.home, pid = adopt.pid, "pages for a guest without a pager");
                }
                continue;
            }
            ToRemote::PagesEnd => {
                pager(PagerInput::End);
                continue;
            }
            ToRemote::Image(_) | ToRemote::ImageEnd | ToRemote::Lazy(_) | ToRemote::Cancel { .. } | ToRemote::Files(_) => continue,
            other => GuestCmd::Home(other),
        };
        if !link.send(cmd) {
            break; // the guest has ended
        }
    }
    if !image_done {
        feed(Piece::Failed("the stream from home broke before the image was complete".into()));
    }
    link.send(GuestCmd::HomeLost);
    shared.procs.guests.lock().expect("guests lock").remove(&id);
    let _ = writer.await;
    tokio::task::spawn_blocking(herd_kernel::host::release_free_memory);
}

/// Why this node cannot take processes by post-copy, if it cannot: the pages
/// are filled through a userfaultfd made in the process while it still has
/// herdd's credentials, which needs root (or `vm.unprivileged_userfaultfd`).
fn postcopy_unavailable() -> Option<String> {
    if herd_kernel::task::euid() == 0 {
        return None;
    }
    match std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd") {
        Ok(v) if v.trim() == "1" => None,
        _ => Some("herdd does not run as root and vm.unprivileged_userfaultfd is 0".into()),
    }
}
