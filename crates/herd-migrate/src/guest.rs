//! The remote side: a migrated process running on this node as a guest.
//!
//! One thread per guest restores it (with herd's seccomp filter, see
//! [`crate::syscalls`]) and then serves its trapped system calls: identity
//! calls are answered here with the home pid, forwarded calls go home to the
//! deputy and their results are written back into the process, calls only
//! home can serve make it ask to go home. The thread also delivers signals
//! that home hands on, captures the process when it moves on, reports how
//! it ended, and ends it when home is lost. The process is a child of herdd
//! and runs as its owner, never as root unless that was allowed.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use herd_checkpoint::filehash::FileHashes;
use herd_checkpoint::{restore_remote, Frozen, HomeRegion, Purpose};
use herd_kernel::pidfd::PidFd;
use herd_kernel::seccomp::{Listener, Notif};
use herd_kernel::maskwait::{self, Interrupted};
use herd_kernel::task::{self, Exit, SigMasks};
use herd_kernel::uffd::{Event as MemEvent, Uffd};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::pipe::{ChunkReader, ChunkWriter};
use crate::postcopy::{self, PagerEnd, PagerLink, Push};
use crate::wake::{WakeReceiver, WakeSender};
use crate::ahead::{Ahead, Ask, Filled, Read, Settle, Waiting, Write, WINDOW_BUF};
use crate::direct::{Direct, NoCopy, Plan};
use crate::fork::{self, Forking, Hub};
use crate::exec::{self, Execed};
use crate::proto::{Adopt, Ending, ExecFiles, FileIdentity, Files, MoveMode, Refusal, ToHome, ToRemote};
use crate::syscalls::{self, Call, Class, Identity};
use crate::ProcMemory;

/// Orders for a guest's thread: what home says (replies, signals, Capture,
/// Commit, Abort, Kill), or that the stream to home broke (the process ends).
pub enum GuestCmd {
    Home(ToRemote),
    HomeLost,
    /// Home made the deputy of the child this guest's process makes by fork `seq`
    /// ([`ToHome::Fork`]) and opened its stream: the child runs, served by a guest of
    /// its own.
    Child(ForkChild),
}

/// How the images of a guest's captures leave it (chunks, in order).
pub type ImageOut = Arc<dyn Fn(Vec<u8>) -> bool + Send + Sync>;

/// The child of a fork made here ([`GuestCmd::Child`]): its stream home.
pub struct ForkChild {
    pub seq: u64,
    /// Who it is (its home pid: what its fork returns to the parent).
    pub adopt: Adopt,
    pub out: Out,
    pub image_out: ImageOut,
    pub shared: Arc<Shared>,
    pub cmds: WakeReceiver<GuestCmd>,
}

/// How messages for home leave the guest's threads (in order).
pub type Out = Arc<dyn Fn(ToHome) -> bool + Send + Sync>;

/// What the stream task and the guest's threads share.
#[derive(Default)]
pub struct Shared {
    /// Post-copy: the pager, set before `Running` is sent; the stream task
    /// hands it the pages that arrive (never through the guest's thread, which
    /// may itself wait for a page in a call's buffer).
    pub pager: OnceLock<PagerLink>,
    /// Set (with home's reason) when home called the move off before the
    /// image was complete: the restore's failure is then no refusal.
    pub cancelled: Mutex<Option<String>>,
    /// Post-copy: every page is in place (the process may be captured again).
    pub pages_done: AtomicBool,
    /// What of home's files the process may use directly here (set before the
    /// image ends: [`ToRemote::Files`]).
    pub files: Mutex<Option<Files>>,
    /// The directories this node verified shared with home.
    pub direct_dirs: Vec<String>,
    /// Told how long each forwarded call took, from the process's call to home's answer
    /// written back (the daemon's latency histogram).
    pub call_took: Option<Arc<dyn Fn(std::time::Duration) + Send + Sync>>,
}

/// The handle the stream task keeps.
pub type GuestLink = WakeSender<GuestCmd>;

/// A channel to a guest's thread (for the child of a fork: [`ForkChild::cmds`]).
pub fn channel() -> std::io::Result<(GuestLink, WakeReceiver<GuestCmd>)> {
    crate::wake::channel()
}

/// Starts a guest: a thread restores the image read from `image` and
/// serves the process. Messages for home go to `out` (in order); the image,
/// when the process is captured, to `image_out` (chunks). With post-copy
/// (`adopt.mode`), the lazy runs come first on `lazy`, and a pager fills
/// them (see [`Shared::pager`]).
pub fn start(
    adopt: Adopt,
    image: ChunkReader,
    lazy: Receiver<Vec<(u64, u64)>>,
    out: Out,
    image_out: impl FnMut(Vec<u8>) -> bool + Send + Clone + 'static,
    shared: Arc<Shared>,
) -> std::io::Result<GuestLink> {
    let (tx, rx) = crate::wake::channel()?;
    std::thread::Builder::new().name(format!("guest-{}", adopt.pid)).spawn(move || {
        let mut hashes = FileHashes::load();
        let guest = match Guest::restore(&adopt, image, &lazy, &mut hashes, &out, &shared) {
            Ok(g) => g,
            Err(why) => {
                if let Some(reason) = shared.cancelled.lock().expect("cancel lock").clone() {
                    tracing::info!(home = adopt.home, pid = adopt.pid, "home called the move off: {reason}");
                } else {
                    tracing::warn!(home = adopt.home, pid = adopt.pid, "refused: {why}");
                    out(ToHome::Refused(Refusal::Restore { why }));
                }
                return;
            }
        };
        hashes.save();
        tracing::info!(home = adopt.home, home_pid = adopt.pid, pid = guest.pid, cmd = adopt.cmd, restore_ms = guest.restore_ms, "guest running");
        if !out(ToHome::Running { pid: guest.pid }) {
            let _ = task::kill_and_reap(guest.pid);
            return;
        }
        guest.serve(rx, &out, image_out, hashes);
    })?;
    Ok(tx)
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(h) = &self.hub {
            h.leave(self.pid);
        }
    }
}

/// Starts the guest of a child made here (see [`GuestCmd::Child`]): a thread serves
/// process `pid`, which runs already.
fn start_child(c: ForkChild, pid: i32, hub: Arc<Hub>, calls: WakeReceiver<Notif>, direct: Direct, gadget: Option<u64>) {
    let spawned = std::thread::Builder::new().name(format!("guest-{}", c.adopt.pid)).spawn(move || {
        let ForkChild { adopt, out, image_out, shared, cmds, .. } = c;
        let guest = match Guest::forked(&adopt, pid, hub, calls, direct, gadget, &shared) {
            Ok(g) => g,
            Err(why) => {
                // Its parent has its pid already: it ran, and ends killed (its deputy too).
                tracing::warn!(home = adopt.home, home_pid = adopt.pid, pid, "a child made here cannot be served ({why}); ending it");
                let _ = task::kill_and_reap(pid);
                out(ToHome::Running { pid });
                out(ToHome::Exited(Ending::Signal(libc::SIGKILL)));
                return;
            }
        };
        tracing::info!(home = adopt.home, home_pid = adopt.pid, pid, cmd = adopt.cmd, "guest running (forked here)");
        if !out(ToHome::Running { pid }) {
            let _ = task::kill_and_reap(pid);
            return;
        }
        guest.serve(cmds, &out, move |chunk| image_out(chunk), FileHashes::load());
    });
    if let Err(e) = spawned {
        tracing::error!(pid, "cannot start the guest of a child made here: {e}; ending it");
        let _ = task::kill_and_reap(pid);
    }
}

/// A forwarded call waiting for home's reply.
struct Pending {
    /// The seccomp notification to answer.
    id: u64,
    seq: u64,
    call: Call,
    after: After,
    /// When it went home.
    sent: std::time::Instant,
    /// Home was asked to end it ([`ToHome::Interrupt`]): a signal that interrupts it
    /// came before home began it.
    interrupted: bool,
}

impl Pending {
    fn new(id: u64, seq: u64, call: Call, after: After) -> Pending {
        Pending { id, seq, call, after, sent: std::time::Instant::now(), interrupted: false }
    }
}

/// At most this many [`Cut`]s are kept for a thread.
const MAX_CUTS: usize = 8;

/// How many of a thread's latest answered calls are remembered (`Guest::last_answered`).
const LAST_ANSWERED: usize = 4;

/// How many notification ids that break chains of calls are remembered (`Guest::breaks`).
const BREAKS_KEPT: usize = 256;

/// A forwarded call answered (the answer taken, as far as the guest can tell).
#[derive(Clone, Copy)]
struct Answered {
    seq: u64,
    /// Its notification.
    id: u64,
    nr: i64,
    args: [u64; 6],
    ret: i64,
}

/// A forwarded call whose wait here a signal ended (the thread went into a handler)
/// while home ran it. Home's answer is the call's: run again, a write would be written
/// twice, a child reaped twice. It reaches the thread when its handler returns (written
/// into the handler's frame, as if the call had ended before the signal came), or when
/// the thread makes the same call again (the kernel's restart after a signal without a
/// handler).
enum Cut {
    /// Home has not answered yet.
    Waiting(Pending),
    /// Home's answer `ret` (`run_here`: the call is then to run here, as a close of a
    /// file the process also has here).
    Answered { seq: u64, call: Call, ret: i64, run_here: bool },
}

impl Cut {
    fn seq(&self) -> u64 {
        match self {
            Cut::Waiting(p) => p.seq,
            Cut::Answered { seq, .. } => *seq,
        }
    }

    fn call(&self) -> &Call {
        match self {
            Cut::Waiting(p) => &p.call,
            Cut::Answered { call, .. } => call,
        }
    }
}

/// What is done with home's answer besides writing it into the process.
#[derive(Debug)]
enum After {
    Nothing,
    /// An open in a shared directory: open it here too (see [`crate::direct`]).
    Open { dir: usize, rel: std::path::PathBuf, flags: i32 },
    /// Home closed these; the process closes its local copies (the call continues).
    Close(Vec<i32>),
    /// The working directory changed (None: to where an fd was).
    Chdir(Option<String>),
    /// The umask is this now (direct mkdir applies it).
    Umask(u32),
}

struct Guest {
    pid: i32,
    home_pid: i32,
    home: String,
    listener: Arc<Listener>,
    /// From its first fork here on, its calls come from the [`Hub`] that reads the
    /// listener it shares with its children here.
    calls: Option<WakeReceiver<Notif>>,
    hub: Option<Arc<Hub>>,
    pidfd: PidFd,
    seq: u64,
    /// Every thread: its id here → its id at home (the main thread: `pid` →
    /// `home_pid`). Threads keep their home ids here too when they are free.
    tids: HashMap<i32, i32>,
    /// The forwarded calls waiting for home's reply, at most one per thread, by
    /// the thread's id here.
    pending: HashMap<i32, Pending>,
    /// Signals held until a thread's pending call is answered (by the thread's
    /// id here): each a signal and whether it was sent to that thread alone.
    held_signals: HashMap<i32, VecDeque<(i32, bool)>>,
    /// Threads being made here, waiting for home to make their twins: by the
    /// `seq` of [`ToHome::ThreadBirth`], the clone's notification and its caller.
    births: HashMap<u64, (u64, i32)>,
    /// Home ids of threads made here that have not made a call yet (the id here
    /// is the home one when it was free, which is the rule).
    unplaced: VecDeque<i32>,
    last_stats: Instant,
    shared: Arc<Shared>,
    /// How long the restore took, milliseconds (for the log).
    restore_ms: f64,
    /// Files used here directly (DFSA).
    direct: Direct,
    /// Forwarded files read ahead.
    ahead: Ahead,
    /// Its writes since its last checkpoint (None: not trackable here; every
    /// checkpoint is whole).
    dirty: Option<herd_checkpoint::Dirty>,
    /// Its placeholders of memory kept at home, if any.
    at_home: Option<AtHome>,
    /// Children being made here by its forks, held until home has made their deputies
    /// (by the `seq` of [`ToHome::Fork`]).
    forks: HashMap<u64, Forking>,
    /// A fork could not be made here once: its forks go home from now on.
    no_fork_here: bool,
    /// Private mappings of files home has open, waiting for home to say what the file is
    /// ([`ToHome::Identify`]): by its `seq`, the call's notification, caller and fd.
    identifying: HashMap<u64, (u64, i32, i32)>,
    /// Execs waiting for home to say what their path names ([`ToHome::ExecIdentify`]):
    /// by its `seq`, the call's notification and, for a relative path, the absolute one
    /// home was asked about.
    exec_asked: HashMap<u64, (Notif, Option<String>)>,
    /// Programs exec'd here, held before their first instruction until home's deputy
    /// has closed its close-on-exec descriptors (by the `seq` of [`ToHome::Exec`]).
    execs: HashMap<u64, Execed>,
    /// An exec failed here once: its execs go home from now on.
    no_exec_here: bool,
    /// Forwarded calls whose wait here a signal ended while home ran them, by thread,
    /// oldest first (see [`Cut`]).
    cuts: HashMap<i32, Vec<Cut>>,
    /// Handlers' returns waiting for home's answer to the cut call they return over, by
    /// its `seq`: the thread, the notification, its ip and the frame.
    held_returns: HashMap<u64, (i32, u64, u64, maskwait::Returning)>,
    /// Handlers' returns a signal interrupted, by thread: the ip after that
    /// `rt_sigreturn`.
    cut_returns: HashMap<i32, u64>,
    /// The forwarded calls each thread was answered last ([`LAST_ANSWERED`]: its seq,
    /// number, arguments and answer; the handlers' calls come after the call they
    /// interrupted): the kernel may have dropped that answer (see
    /// [`Guest::handler_returns`]).
    last_answered: HashMap<i32, VecDeque<Answered>>,
    /// The latest notification id seen, and those since that break a chain of a
    /// thread's calls (see [`Guest::unbroken`]), the latest [`BREAKS_KEPT`]. Not kept in
    /// hub mode, where other processes' ids come between.
    seen_id: Option<u64>,
    breaks: VecDeque<u64>,
    /// Where its vDSO's `syscall` instruction is, once a fork looked (its children have
    /// it at the same place).
    gadget: Option<u64>,
}

/// The placeholders of a guest's memory kept at home (memory it shares with processes
/// there, `VmaKind::AtHome`): a thread that touches one waits on the userfaultfd they
/// are registered with, and the process goes home, where that memory is.
struct AtHome {
    uffd: Uffd,
    marks: Placeholders,
}

/// Where a guest's placeholders of memory kept at home are, and whether it asked to go
/// home for a touch of one (pure: unit-tested).
#[derive(Debug, Default)]
struct Placeholders {
    /// Where they are now (the process may unmap or move them).
    regions: Vec<HomeRegion>,
    /// Home was asked to take the process back since the last capture.
    asked: bool,
}

impl Placeholders {
    /// Follows what the process did to its placeholders; the first touch of one
    /// since the last capture is a reason to go home.
    fn follow(&mut self, events: &[MemEvent]) -> Option<String> {
        let mut why = None;
        for e in events {
            match *e {
                MemEvent::PageFault { addr } => {
                    if !self.asked {
                        let name = self.regions.iter().find(|r| r.start <= addr && addr < r.end).map_or("?", |r| r.name.as_str());
                        why = Some(format!("touching memory kept at home ({name})"));
                        self.asked = true;
                    }
                }
                MemEvent::Unmap { start, end } => self.regions = cut(&self.regions, start, end),
                MemEvent::Remap { from, to, len } => {
                    let moved: Vec<HomeRegion> = self
                        .regions
                        .iter()
                        .filter(|r| r.start < from + len && from < r.end)
                        .map(|r| HomeRegion { start: r.start.max(from) - from + to, end: r.end.min(from + len) - from + to, name: r.name.clone() })
                        .collect();
                    self.regions = cut(&self.regions, from, from + len);
                    self.regions = cut(&self.regions, to, to + len);
                    self.regions.extend(moved);
                    self.regions.sort_by_key(|r| r.start);
                }
                // (Fork events are not asked for here.)
                MemEvent::Remove { .. } | MemEvent::Fork { .. } | MemEvent::Other(_) => {}
            }
        }
        why
    }
}

/// `regions` without `[start, end)`.
fn cut(regions: &[HomeRegion], start: u64, end: u64) -> Vec<HomeRegion> {
    let mut out = Vec::new();
    for r in regions {
        if r.end <= start || end <= r.start {
            out.push(r.clone());
            continue;
        }
        if r.start < start {
            out.push(HomeRegion { start: r.start, end: start, name: r.name.clone() });
        }
        if end < r.end {
            out.push(HomeRegion { start: end, end: r.end, name: r.name.clone() });
        }
    }
    out
}

/// What a capture is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capture {
    /// A move (home or on), stop-and-copy.
    Move,
    /// A move on by post-copy.
    PostCopy,
    /// A checkpoint `id` kept at home; an increment of `base` when the writes since it
    /// were tracked here.
    Checkpoint { id: u64, base: Option<u64> },
}

impl Guest {
    fn restore(
        adopt: &Adopt,
        image: ChunkReader,
        lazy: &Receiver<Vec<(u64, u64)>>,
        hashes: &mut FileHashes,
        out: &Out,
        shared: &Arc<Shared>,
    ) -> Result<Guest, String> {
        let (filter, filter_at_home) = (syscalls::filter().to_bytes(), syscalls::filter_with_memory_at_home().to_bytes());
        let runs = match adopt.mode {
            MoveMode::PostCopy => Some(lazy.recv().map_err(|_| "the stream from home ended before the image".to_string())?),
            MoveMode::StopAndCopy => None,
        };
        if crate::failpoint::fires("arrive-restore") {
            return Err("failpoint arrive-restore".into());
        }
        let rr = restore_remote(image, hashes, (&filter, &filter_at_home), runs.as_deref(), adopt.track_writes).map_err(|e| e.to_string())?;
        let (restored, listener) = (rr.restored, rr.listener);
        let pid = restored.pid;
        if crate::failpoint::fires("arrive-restored") {
            let _ = task::kill_and_reap(pid);
            return Err("failpoint arrive-restored".into());
        }
        let dirty = rr.dirty;
        let at_home = rr.at_home.map(|(fd, regions)| AtHome { uffd: Uffd::from_fd(fd, pid), marks: Placeholders { regions, asked: false } });
        let mut tids: HashMap<i32, i32> = restored.tids.iter().map(|&(home, here)| (here, home)).collect();
        // The main thread's home id is the home pid, whatever the image calls it (an image
        // captured on another node, or on the way to a checkpoint, names it by that node's id).
        tids.insert(pid, adopt.pid);
        for w in &restored.warnings {
            tracing::info!(pid, "restore: {w}");
        }
        let pidfd = match PidFd::open(pid) {
            Ok(p) => p,
            Err(e) => {
                let _ = task::kill_and_reap(pid);
                return Err(e.to_string());
            }
        };
        match (rr.uffd, runs) {
            (Some(uffd), Some(runs)) => {
                let ask = out.clone();
                let done = out.clone();
                let flag = shared.clone();
                let home = adopt.home.clone();
                let started = Instant::now();
                // A pager that stops before every page is in place must not leave the
                // process running: its missing pages would read as zeroes.
                let own = match PidFd::open(pid) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = task::kill_and_reap(pid);
                        return Err(e.to_string());
                    }
                };
                let pager = postcopy::start_pager(pid, uffd, &runs, move |addr| ask(ToHome::PageRequest { addr }), move |end| match end {
                    PagerEnd::Complete { pages, faults, requested, layout, .. } => {
                        tracing::info!(pid, home, pages, faults, requested, layout, "post-copy complete in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
                        flag.pages_done.store(true, Ordering::SeqCst);
                        done(ToHome::PagesDone);
                    }
                    // Its memory is gone (it ended, or replaced it): nothing waits for pages.
                    PagerEnd::Gone => {
                        tracing::debug!(pid, home, "post-copy: the process's memory went before its pages");
                        flag.pages_done.store(true, Ordering::SeqCst);
                        done(ToHome::PagesDone);
                    }
                    PagerEnd::Stopped(why) => {
                        tracing::warn!(pid, home, "post-copy stopped before every page was in place ({why}); ending the process");
                        let _ = own.send_signal(libc::SIGKILL);
                    }
                });
                match pager {
                    Ok(link) => {
                        let _ = shared.pager.set(link);
                    }
                    Err(e) => {
                        let _ = task::kill_and_reap(pid);
                        return Err(format!("cannot start the pager: {e}"));
                    }
                }
            }
            // Nothing lazy after all (no private anonymous memory).
            (None, Some(_)) => {
                shared.pages_done.store(true, Ordering::SeqCst);
                out(ToHome::PagesDone);
            }
            _ => shared.pages_done.store(true, Ordering::SeqCst),
        }
        let listener = Arc::new(Listener::from_fd(listener));
        // The process and this thread hand the CPU to each other directly at every
        // trapped call (Linux 6.6; without it, only slower).
        if let Err(e) = listener.set_sync_wake_up() {
            tracing::debug!(pid, "no synchronous wake-up of the listener: {e}");
        }
        let (direct, own) = match shared.files.lock().expect("files lock").take() {
            Some(files) => {
                let own = files.own.clone();
                (Direct::arrive(pid, files, &shared.direct_dirs), own)
            }
            None => (Direct::none(pid), Vec::new()),
        };
        let mut ahead = Ahead::default();
        for (fd, pos, flags) in own.into_iter().filter(|(fd, _, _)| !direct.has(*fd)) {
            ahead.own(fd, pos, Some(flags));
        }
        let mut g = Guest::new(adopt, pid, listener, pidfd, direct, shared);
        g.tids = tids;
        g.restore_ms = restore_ms(&restored);
        g.ahead = ahead;
        g.dirty = dirty;
        g.at_home = at_home;
        Ok(g)
    }

    /// A guest of process `pid` (home's `adopt.pid`) that has made no call yet.
    fn new(adopt: &Adopt, pid: i32, listener: Arc<Listener>, pidfd: PidFd, direct: Direct, shared: &Arc<Shared>) -> Guest {
        Guest {
            pid,
            home_pid: adopt.pid,
            home: adopt.home.clone(),
            listener,
            calls: None,
            hub: None,
            pidfd,
            seq: 0,
            tids: HashMap::from([(pid, adopt.pid)]),
            pending: HashMap::new(),
            held_signals: HashMap::new(),
            births: HashMap::new(),
            unplaced: VecDeque::new(),
            last_stats: Instant::now(),
            shared: shared.clone(),
            restore_ms: 0.0,
            direct,
            ahead: Ahead::default(),
            dirty: None,
            at_home: None,
            forks: HashMap::new(),
            no_fork_here: false,
            identifying: HashMap::new(),
            exec_asked: HashMap::new(),
            execs: HashMap::new(),
            no_exec_here: false,
            cuts: HashMap::new(),
            held_returns: HashMap::new(),
            cut_returns: HashMap::new(),
            last_answered: HashMap::new(),
            seen_id: None,
            breaks: VecDeque::new(),
            gadget: None,
        }
    }

    /// The guest of a child made here by a fork ([`Forking::finish`]): process `pid`,
    /// running already, its calls from `hub` (`calls`), its direct files `direct` (its
    /// parent's).
    fn forked(adopt: &Adopt, pid: i32, hub: Arc<Hub>, calls: WakeReceiver<Notif>, direct: Direct, gadget: Option<u64>, shared: &Arc<Shared>) -> Result<Guest, String> {
        let pidfd = PidFd::open(pid).map_err(|e| e.to_string())?;
        shared.pages_done.store(true, Ordering::SeqCst);
        let mut g = Guest::new(adopt, pid, hub.listener().clone(), pidfd, direct, shared);
        g.calls = Some(calls);
        g.hub = Some(hub);
        g.gadget = gadget;
        Ok(g)
    }

    fn serve(
        mut self,
        cmds: WakeReceiver<GuestCmd>,
        out: &Out,
        image_out: impl FnMut(Vec<u8>) -> bool + Send + Clone,
        mut hashes: FileHashes,
    ) {
        loop {
            let (notif_ready, exited, woken, touched) = {
                let calls = match &self.calls {
                    Some(rx) => rx.as_fd(),
                    None => self.listener.as_fd(),
                };
                let mut fds = vec![
                    PollFd::new(calls, PollFlags::POLLIN),
                    PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(cmds.as_fd(), PollFlags::POLLIN),
                ];
                if let Some(h) = &self.at_home {
                    fds.push(PollFd::new(h.uffd.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, PollTimeout::from(1000u16)) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::error!(pid = self.pid, "guest poll: {e}; ending it");
                        let _ = task::kill_and_reap(self.pid);
                        return;
                    }
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]), ready(&fds[2]), fds.get(3).is_some_and(ready))
            };
            if touched {
                self.memory_events(&**out);
            }
            // A forking thread held here that died with its process: its end is taken (so
            // that the process's end shows), its child ends.
            let ended: Vec<u64> = self.forks.iter().filter(|(_, f)| f.parent_ended()).map(|(s, _)| *s).collect();
            for seq in ended {
                if let Some(f) = self.forks.remove(&seq) {
                    tracing::debug!(pid = self.pid, seq, "a forking thread ended while its fork was on its way");
                    f.abandon(None);
                }
            }
            // (So does a program exec'd here and held.)
            self.execs.retain(|_, e| !e.ended());
            if exited {
                if let Ok(Some(exit)) = self.pidfd.try_wait() {
                    let ending = match exit {
                        Exit::Code(c) => Ending::Code(c),
                        Exit::Signal(s) => Ending::Signal(s),
                    };
                    tracing::info!(pid = self.pid, home = self.home, "guest ended: {ending:?}");
                    self.drop_forks();
                    // The files it used here: their offsets are home's again.
                    self.settle_all(&**out);
                    out(ToHome::Exited(ending));
                    return;
                }
            }
            if woken {
                cmds.drain();
                while let Ok(cmd) = cmds.rx.try_recv() {
                    match self.command(cmd, &cmds.rx, out, image_out.clone(), &mut hashes) {
                        Flow::Go => {}
                        Flow::End => return,
                    }
                }
            }
            if notif_ready {
                match &self.calls {
                    Some(rx) => {
                        rx.drain();
                        let calls: Vec<Notif> = rx.rx.try_iter().collect();
                        for n in calls {
                            // One that a signal ended meanwhile is made again as a new one.
                            if self.listener.id_valid(n.id) {
                                self.notification(n, &**out);
                            }
                        }
                    }
                    None => match self.listener.recv() {
                        Ok(n) => self.notification(n, &**out),
                        Err(e) => tracing::debug!(pid = self.pid, "notification: {e}"),
                    },
                }
            }
            if self.last_stats.elapsed() >= Duration::from_secs(1) {
                self.last_stats = Instant::now();
                if let Some(usage) = crate::proto::Usage::of(self.pid) {
                    out(ToHome::Stats(usage));
                }
            }
        }
    }

    /// Reads what the process did to its placeholders of memory kept at home; a touch
    /// sends it home.
    fn memory_events(&mut self, out: &dyn Fn(ToHome) -> bool) {
        let Some(h) = &mut self.at_home else { return };
        let mut events = Vec::new();
        if let Err(e) = h.uffd.events(&mut events) {
            tracing::warn!(pid = self.pid, "memory kept at home: {e}");
        }
        if let Some(why) = h.marks.follow(&events) {
            tracing::info!(pid = self.pid, home = self.home, "goes home for {why}");
            out(ToHome::WantHome { why });
        }
    }

    /// Whether call `n` reads or writes memory kept at home (its placeholder here has
    /// nothing): then it must be made at home.
    fn touches_home_memory(&self, n: &Notif) -> bool {
        let Some(h) = self.at_home.as_ref().map(|h| &h.marks.regions).filter(|r| !r.is_empty()) else { return false };
        let (nr, args) = (i64::from(n.nr), n.args);
        if syscalls::FUTEX_CALLS.contains(&nr) {
            // A word it cannot name (an unreadable futex_waitv list) is one home can.
            return syscalls::futex_words(nr, &args, &ProcMemory { pid: self.pid }).is_none_or(|words| words.iter().any(|&w| HomeRegion::touched(h, w, w + 4)));
        }
        if syscalls::spec(nr, &args).is_none() {
            return false;
        }
        match syscalls::marshal(nr, args, &ProcMemory { pid: self.pid }) {
            Ok(call) => call.bufs.iter().any(|b| HomeRegion::touched(h, b.addr, b.addr.saturating_add(b.len.max(1)))),
            Err(syscalls::MarshalError::Fault { addr, len, .. }) => HomeRegion::touched(h, addr, addr.saturating_add(len.max(1))),
            Err(_) => false,
        }
    }

    fn answer(&self, id: u64, ret: i64) {
        self.deliver_answer(id, ret);
    }

    /// Answers call `id`; false if it no longer waits (a signal ended its wait).
    fn deliver_answer(&self, id: u64, ret: i64) -> bool {
        let r = if (-4095..0).contains(&ret) { self.listener.respond(id, 0, -ret as i32) } else { self.listener.respond(id, ret, 0) };
        match r {
            Ok(waited) => waited,
            Err(e) => {
                tracing::debug!(pid = self.pid, "answering a call: {e}");
                false
            }
        }
    }

    /// Answers forwarded call `call` (`seq`) of thread `caller` (`id`) with home's result
    /// `ret`. If a signal ended its wait meanwhile, the answer is kept for it ([`Cut`]):
    /// home ran it once.
    fn answer_forwarded(&mut self, caller: i32, seq: u64, id: u64, call: Call, ret: i64) {
        let delivered = self.deliver_answer(id, ret);
        tracing::trace!(pid = self.pid, tid = caller, nr = call.nr, seq, ret, delivered, "answered");
        if delivered {
            let last = self.last_answered.entry(caller).or_default();
            if last.len() == LAST_ANSWERED {
                last.pop_front();
            }
            last.push_back(Answered { seq, id, nr: call.nr, args: call.args, ret });
        } else if !self.answer_held_return(seq, Some(ret)) {
            self.keep_cut(caller, Cut::Answered { seq, call, ret, run_here: false });
        }
    }

    /// The [`Cut`] still waiting for home's answer `seq`, taken out, with its thread.
    fn take_waiting_cut(&mut self, seq: u64) -> Option<(i32, Pending)> {
        let (caller, cuts) = self.cuts.iter_mut().find(|(_, cuts)| cuts.iter().any(|c| matches!(c, Cut::Waiting(p) if p.seq == seq)))?;
        let at = cuts.iter().position(|c| c.seq() == seq).expect("found");
        let Cut::Waiting(p) = cuts.remove(at) else { unreachable!("a waiting cut") };
        Some((*caller, p))
    }

    /// Notes notification `n`: the ids before it that the guest missed (a signal ended
    /// their wait before it took them; the kernel gives ids in order) break chains, as
    /// does a handler's return.
    fn note_notification(&mut self, n: &Notif) {
        if self.calls.is_some() {
            return;
        }
        let from = self.seen_id.map_or(n.id, |s| s + 1);
        let returns = i64::from(n.nr) == libc::SYS_rt_sigreturn;
        for id in (from..n.id).take(BREAKS_KEPT).chain(returns.then_some(n.id)) {
            if self.breaks.len() == BREAKS_KEPT {
                self.breaks.pop_front();
            }
            self.breaks.push_back(id);
        }
        self.seen_id = Some(self.seen_id.map_or(n.id, |s| s.max(n.id)));
    }

    /// True if the calls of notifications `after` and `before` form an unbroken chain:
    /// no notification between them was missed, and no handler returned (known only out
    /// of hub mode, while the breaks since `after` are all remembered).
    fn unbroken(&self, after: u64, before: u64) -> bool {
        if self.calls.is_some() || (self.breaks.len() == BREAKS_KEPT && self.breaks.front().is_some_and(|&m| m > after)) {
            return false;
        }
        !self.breaks.iter().any(|&m| after < m && m < before)
    }

    /// Keeps `cut` among thread `caller`'s, in the order the calls were made (a handler's
    /// call comes after the call it interrupted).
    fn keep_cut(&mut self, caller: i32, cut: Cut) {
        let cuts = self.cuts.entry(caller).or_default();
        let at = cuts.partition_point(|c| c.seq() < cut.seq());
        cuts.insert(at, cut);
        // Handlers within handlers are few; a longer list is of calls never made again
        // (a handler that left with longjmp).
        if cuts.len() > MAX_CUTS {
            cuts.remove(0);
        }
    }

    /// A new call from thread `caller`: a call of it still pending here was cut short by a
    /// signal (a thread waits in one call at a time). Unless the new one is that call
    /// again (`same`), the pending one is kept as a [`Cut`].
    fn wait_ended(&mut self, caller: i32, same: impl FnOnce(&Call) -> bool) {
        if self.pending.get(&caller).is_some_and(|p| !same(&p.call)) {
            let p = self.pending.remove(&caller).expect("checked");
            tracing::debug!(pid = self.pid, tid = caller, nr = p.call.nr, seq = p.seq, "a signal cut a forwarded call short here; home's answer is kept for it");
            self.keep_cut(caller, Cut::Waiting(p));
        }
    }

    /// Thread `caller` makes call `call` (notification `id`) again, the latest of its
    /// [`Cut`]s: it takes home's answer, now or when it comes.
    fn cut_made_again(&mut self, caller: i32, id: u64) {
        let Some(cut) = self.cuts.get_mut(&caller).and_then(Vec::pop) else { return };
        tracing::debug!(pid = self.pid, tid = caller, nr = cut.call().nr, "a call cut short by a signal, made again: home's answer");
        match cut {
            Cut::Waiting(mut p) => {
                p.id = id;
                self.pending.insert(caller, p);
            }
            Cut::Answered { run_here: true, seq, call, ret } => {
                if !self.listener.continue_(id).unwrap_or(false) {
                    self.keep_cut(caller, Cut::Answered { seq, call, ret, run_here: true });
                }
            }
            Cut::Answered { seq, call, ret, .. } => self.answer_forwarded(caller, seq, id, call, ret),
        }
    }

    /// Thread `caller`'s signal handler returns: its `rt_sigreturn` waits at notification
    /// `n`. If the handler interrupted the latest of the thread's [`Cut`]s, home's answer
    /// is written into the handler's frame, so that the call returns it, as it would have
    /// at home, where the call ended first — at once, or when it comes if the call is to
    /// fail with EINTR here (the return waits for it: `held_returns`). A call home has not
    /// answered yet that the kernel makes again (SA_RESTART) takes its answer then
    /// ([`Guest::cut_made_again`]).
    fn handler_returns(&mut self, caller: i32, n: &Notif, out: &dyn Fn(ToHome) -> bool) {
        let interrupted_return = self.cut_returns.remove(&caller);
        let top_seq = self.cuts.get(&caller).and_then(|c| c.last()).map(Cut::seq);
        // An answered call the kernel may have dropped (see below): newer than the latest
        // cut one, and no break since. The frame is read only if there is one to look for.
        let may_drop = |a: &Answered| top_seq.is_none_or(|s| s < a.seq) && self.unbroken(a.id, n.id);
        let maybe_dropped = self.last_answered.get(&caller).is_some_and(|l| l.iter().any(may_drop));
        if interrupted_return.is_none() && top_seq.is_none() && !maybe_dropped {
            self.continue_return(caller, n.id, n.ip);
            return;
        }
        let frame = match maskwait::Returning::of(self.pid, caller) {
            Ok(Some(f)) => Some(f),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(pid = self.pid, tid = caller, "the frame a handler returns through: {e}");
                None
            }
        };
        if let (Some(f), Some(ip)) = (&frame, interrupted_return) {
            // A signal came while an earlier return waited here, and its handler has no
            // SA_RESTART: the kernel made that return fail with EINTR, and this handler
            // would go back to just after it. It is made again instead.
            if f.resumes_after(ip) {
                match f.make_again(libc::SYS_rt_sigreturn) {
                    Ok(()) => tracing::debug!(pid = self.pid, tid = caller, "a handler's return that a signal interrupted is made again"),
                    Err(e) => tracing::warn!(pid = self.pid, tid = caller, "cannot make a handler's interrupted return again: {e}"),
                }
            }
        }
        let Some(frame) = frame else {
            self.continue_return(caller, n.id, n.ip);
            return;
        };
        let over = |nr: i64, args: &[u64; 6]| match frame.resumes() {
            maskwait::Resumes::Restart { nr: n, args: a } => n == nr && a == *args,
            maskwait::Resumes::Eintr { args: a } => a == *args,
            maskwait::Resumes::Other => false,
        };
        let eintr = matches!(frame.resumes(), maskwait::Resumes::Eintr { .. });
        let top = self.cuts.get(&caller).and_then(|c| c.last());
        // The kernel may drop an answer that a signal meets (the wait ended as it came,
        // though the answer was taken): the call home answered last is then made again,
        // or fails with EINTR.
        // (The handler's own calls were answered after it: the latest that matches.) Not
        // if the thread may have made a call with the same arguments after it that a
        // signal ended before the guest saw it, or if a handler returned since: a
        // notification missed, or a return, between that call and this return (any
        // thread's: they are not told apart).
        let dropped = self.last_answered.get(&caller).and_then(|l| l.iter().rev().find(|a| may_drop(a) && over(a.nr, &a.args)));
        if let Some(&Answered { seq, nr, ret, .. }) = dropped {
            match frame.complete(ret) {
                Ok(()) => tracing::debug!(pid = self.pid, tid = caller, nr, ret, "an answer the kernel dropped as a signal came is given after the handler"),
                Err(e) => tracing::debug!(pid = self.pid, tid = caller, "cannot give a call its answer in the handler's frame: {e}"),
            }
            if let Some(l) = self.last_answered.get_mut(&caller) {
                l.retain(|a| a.seq != seq);
            }
            self.continue_return(caller, n.id, n.ip);
            return;
        }
        let Some(cut) = top.filter(|c| over(c.call().nr, &c.call().args)) else {
            self.continue_return(caller, n.id, n.ip);
            return;
        };
        let nr = cut.call().nr;
        match cut {
            Cut::Answered { ret, run_here: false, .. } => {
                let ret = *ret;
                match frame.complete(ret) {
                    Ok(()) => {
                        tracing::debug!(pid = self.pid, tid = caller, nr, ret, "a call cut short by a signal returns home's answer after the handler");
                        self.cuts.get_mut(&caller).map(Vec::pop);
                    }
                    Err(e) => tracing::debug!(pid = self.pid, tid = caller, "cannot give a cut call its answer in the handler's frame: {e}"),
                }
            }
            Cut::Waiting(p) if eintr => {
                // At home the signal would have ended the call too: home is asked to end
                // it (EINTR, unless it ended first).
                tracing::debug!(pid = self.pid, tid = caller, nr, "a handler returns over a call cut short that is to fail with EINTR: its return waits for home's answer");
                let seq = p.seq;
                out(ToHome::Interrupt { seq, tid: self.home_tid(caller) });
                self.held_returns.insert(seq, (caller, n.id, n.ip, frame));
                return;
            }
            // The close of a file also open here fails with EINTR: home's close stands
            // (the copy here stays open).
            Cut::Answered { .. } if eintr => {
                self.cuts.get_mut(&caller).map(Vec::pop);
            }
            // Made again by the kernel: `cut_made_again`.
            _ => {}
        }
        self.continue_return(caller, n.id, n.ip);
    }

    /// Lets thread `caller`'s `rt_sigreturn` (notification `id`, `ip` after it) run. If a
    /// signal ended its wait, the kernel restarts it after that signal's handler, or (a
    /// handler without SA_RESTART) would fail it: that handler's own return sees to it.
    fn continue_return(&mut self, caller: i32, id: u64, ip: u64) {
        if !self.listener.continue_(id).unwrap_or(true) {
            self.cut_returns.insert(caller, ip);
        }
    }

    /// Home's answer `ret` to cut call `seq`, whose handler's return waits for it
    /// ([`Guest::handler_returns`]): written into the frame, and the return goes on.
    /// False if no return waits for it.
    fn answer_held_return(&mut self, seq: u64, ret: Option<i64>) -> bool {
        let Some((caller, id, ip, frame)) = self.held_returns.remove(&seq) else { return false };
        if let Some(ret) = ret {
            if let Err(e) = frame.complete(ret) {
                tracing::debug!(pid = self.pid, tid = caller, "cannot give a cut call its answer in the handler's frame: {e}");
            }
        }
        self.continue_return(caller, id, ip);
        true
    }

    /// The home id of thread `tid` (an id here): a thread made here and not yet
    /// seen has its home id here (the rule).
    fn home_tid(&self, tid: i32) -> i32 {
        self.tids.get(&tid).copied().unwrap_or(tid)
    }

    /// The id here of the thread whose home id is `home_tid`, if it has one. A
    /// thread made here that has made no call yet has it if it is free here.
    fn local_tid(&self, home_tid: i32) -> Option<i32> {
        if let Some(l) = self.tids.iter().find(|(_, h)| **h == home_tid).map(|(l, _)| *l) {
            return Some(l);
        }
        let free_here = !self.tids.contains_key(&home_tid);
        (free_here && std::path::Path::new(&format!("/proc/{}/task/{home_tid}", self.pid)).exists()).then_some(home_tid)
    }

    /// A call from a thread not known yet: one made here; it takes the home id
    /// of the oldest such birth.
    fn place(&mut self, tid: i32) {
        if self.tids.contains_key(&tid) {
            return;
        }
        let home = match self.unplaced.iter().position(|h| *h == tid) {
            Some(i) => self.unplaced.remove(i),
            None => self.unplaced.pop_front(),
        };
        match home {
            Some(h) => {
                if h != tid {
                    tracing::warn!(pid = self.pid, tid, home_tid = h, "a thread made here did not get its home id");
                }
                self.tids.insert(tid, h);
            }
            None => tracing::warn!(pid = self.pid, tid, "a call from a thread herd does not know"),
        }
    }

    /// `clone`/`clone3` that makes a thread (CLONE_THREAD): its flags say so
    /// (clone3's are the first word of its argument structure).
    fn makes_thread(&self, n: &Notif) -> bool {
        let flags = match i64::from(n.nr) {
            libc::SYS_clone => n.args[0],
            libc::SYS_clone3 => {
                let mut w = [0u8; 8];
                match syscalls::MemRead::read(&ProcMemory { pid: self.pid }, n.args[0], &mut w) {
                    Ok(()) => u64::from_ne_bytes(w),
                    Err(_) => return false,
                }
            }
            _ => return false,
        };
        flags & libc::CLONE_THREAD as u64 != 0
    }

    /// A tkill/tgkill the process aims at one of its own threads other than the
    /// main one (by its home id): that thread (its id here) and the signal.
    fn signal_to_own_thread(&self, n: &Notif) -> Option<(i32, i32)> {
        let (target, sig) = match i64::from(n.nr) {
            libc::SYS_tkill => (n.args[0] as i32, n.args[1] as i32),
            libc::SYS_tgkill if n.args[0] as i32 == self.home_pid => (n.args[1] as i32, n.args[2] as i32),
            _ => return None,
        };
        if target == self.home_pid || self.tids.len() < 2 {
            return None;
        }
        Some((self.local_tid(target)?, sig))
    }

    /// Sends `sig` to thread `tid` (an id here) of the process, as a call of
    /// thread `caller` that is answered 0 (see [`acts_before_return`]).
    fn signal_self(&self, id: u64, caller: u32, sig: i32, tid: Option<i32>) {
        // At home a signal to oneself that is blocked, or whose action is the
        // default one, has taken effect when the call returns (`raise` blocks
        // every signal around its tgkill: the signal is pending as the mask is
        // restored, and acts then). So it is sent before the answer. One that
        // a handler catches is sent after: sent first, it would interrupt the
        // call's wait, which would be restarted and send it again.
        let send = || match tid {
            Some(t) => {
                let _ = task::tgkill(self.pid, t, sig);
            }
            None => {
                let _ = task::kill(self.pid, sig);
            }
        };
        let first = sig != 0 && acts_before_return(caller, sig);
        if first {
            send();
        }
        self.answer(id, 0);
        if sig != 0 && !first {
            send();
        }
    }

    /// Sends home the offsets of local descriptors `fds`, if any.
    fn send_offsets(&self, fds: &[i32], out: &dyn Fn(ToHome) -> bool) {
        send_settle(Settle { offsets: self.direct.offsets(Some(fds)), ..Settle::default() }, out);
    }

    /// Home's descriptors take every offset the process has here (before a capture or
    /// its end).
    fn settle_all(&mut self, out: &dyn Fn(ToHome) -> bool) {
        let mut s = self.ahead.settle_all();
        s.offsets.extend(self.direct.offsets(None));
        send_settle(s, out);
    }

    /// A write of a followed descriptor: gathered (answered now) or failed with the error
    /// of an earlier one; false when it is to be forwarded as usual.
    fn write_behind(&mut self, n: &Notif, out: &dyn Fn(ToHome) -> bool) -> bool {
        let Ok(fd) = i32::try_from(n.args[0] as i64) else { return false };
        if self.pending.contains_key(&(n.pid as i32)) {
            return false; // as for reads
        }
        let len = n.args[2].min(syscalls::MAX_IO);
        match self.ahead.write(fd, len) {
            Write::Usual => false,
            Write::Fail(errno) => {
                self.answer(n.id, -(errno as i64));
                true
            }
            Write::Gather => {
                let mut bytes = vec![0u8; len as usize];
                if syscalls::MemRead::read(&ProcMemory { pid: self.pid }, n.args[1], &mut bytes).is_err() {
                    self.answer(n.id, -(libc::EFAULT as i64));
                    return true;
                }
                // Gathered only if the write got its answer (a signal may have ended it).
                if let Ok(true) = self.listener.respond(n.id, len as i64, 0) {
                    for f in self.ahead.gather(fd, &bytes) {
                        out(ToHome::Write { fd: f.fd, at: f.at, data: f.data });
                    }
                }
                true
            }
        }
    }

    /// A read of a followed descriptor: served from a window, or waiting for one; false
    /// when it is to be forwarded as usual.
    fn read_ahead(&mut self, n: &Notif, out: &dyn Fn(ToHome) -> bool) -> bool {
        let Ok(fd) = i32::try_from(n.args[0] as i64) else { return false };
        // A call of this thread still pending at home: this may be its restart, which
        // takes home's answer (below).
        if self.pending.contains_key(&(n.pid as i32)) {
            return false;
        }
        let w = Waiting { id: n.id, tid: n.pid as i32, addr: n.args[1], len: n.args[2].min(syscalls::MAX_IO) };
        match self.ahead.read(fd, w) {
            (Read::Usual, _) => false,
            (Read::Serve(bytes), _) => {
                self.serve_read(fd, w, &bytes, out);
                true
            }
            (Read::Wait, ask) => {
                if let Some(a) = ask {
                    self.ask_window(a, out);
                }
                true
            }
        }
    }

    /// Answers read `w` of `fd` with `bytes` from a window.
    fn serve_read(&mut self, fd: i32, w: Waiting, bytes: &[u8], out: &dyn Fn(ToHome) -> bool) {
        if syscalls::MemWrite::write(&ProcMemory { pid: self.pid }, w.addr, bytes).is_err() {
            self.answer(w.id, -(libc::EFAULT as i64));
            return;
        }
        // Consumed only if the read got them (a signal may have ended its wait).
        if let Ok(true) = self.listener.respond(w.id, bytes.len() as i64, 0) {
            if let Some(a) = self.ahead.consume(fd, bytes.len() as u64) {
                self.ask_window(a, out);
            }
        }
    }

    /// Asks home for a window: a pread in the reading thread's deputy.
    fn ask_window(&mut self, a: Ask, out: &dyn Fn(ToHome) -> bool) {
        for f in self.ahead.flush_all() {
            out(ToHome::Write { fd: f.fd, at: f.at, data: f.data });
        }
        let args = [a.fd as u64, WINDOW_BUF, a.len, a.at, 0, 0];
        match syscalls::marshal(libc::SYS_pread64, args, &ProcMemory { pid: self.pid }) {
            Ok(call) => {
                self.seq += 1;
                out(ToHome::Call { seq: self.seq, tid: self.home_tid(a.tid), call });
                self.ahead.asked(self.seq, a);
            }
            Err(e) => tracing::debug!(pid = self.pid, fd = a.fd, "cannot ask for a window: {e}"),
        }
    }

    /// The signal mask call `call` waits with, if it is a wait with a mask of its own
    /// (pselect6, ppoll, epoll_pwait[2]).
    fn wait_mask(&self, call: &Call) -> Option<u64> {
        syscalls::wait_mask(call.nr, &call.args, &ProcMemory { pid: self.pid })
    }

    /// Forwards read `w` of `fd` as usual after all (home's offset is made the process's first).
    fn forward_read(&mut self, fd: i32, w: Waiting, out: &dyn Fn(ToHome) -> bool) {
        let mut s = self.ahead.settle(fd);
        s.writes.extend(self.ahead.flush_all());
        send_settle(s, out);
        match syscalls::marshal(libc::SYS_read, [fd as u64, w.addr, w.len, 0, 0, 0], &ProcMemory { pid: self.pid }) {
            Ok(call) => {
                self.seq += 1;
                out(ToHome::Call { seq: self.seq, tid: self.home_tid(w.tid), call: call.clone() });
                self.pending.insert(w.tid, Pending::new(w.id, self.seq, call, After::Nothing));
            }
            Err(_) => self.answer(w.id, -(libc::EFAULT as i64)),
        }
    }

    /// Before forwarded call `call` goes home: every gathered write, and the offsets of
    /// the descriptors it names.
    fn settle_for_call(&mut self, call: &Call, out: &dyn Fn(ToHome) -> bool) {
        let mut s = self.ahead.touched(call.nr, &call.args);
        let mut writes = self.ahead.flush_all();
        writes.append(&mut s.writes);
        s.writes = writes;
        send_settle(s, out);
    }

    /// Local descriptors `fds` become forwarded ones (under call `id`).
    fn demote(&mut self, id: u64, fds: &[i32], out: &dyn Fn(ToHome) -> bool) {
        self.send_offsets(fds, out);
        self.direct.demote(&self.listener, id, fds);
    }

    /// What a forwarded call changes that direct access follows: the working directory, the
    /// umask.
    fn follows(&self, n: &Notif) -> After {
        if !self.direct.active() {
            return After::Nothing;
        }
        match i64::from(n.nr) {
            libc::SYS_chdir => After::Chdir(crate::direct::read_path(&ProcMemory { pid: self.pid }, n.args[0])),
            libc::SYS_fchdir => After::Chdir(None),
            libc::SYS_umask => After::Umask(n.args[0] as u32),
            _ => After::Nothing,
        }
    }

    /// Whether a fork can be made here ([`Guest::settled`]).
    fn may_fork_here(&self) -> bool {
        !self.no_fork_here && self.settled()
    }

    /// Whether a fork or an exec may be made here as far as its memory and files go: not
    /// for a process with memory kept at home (a fork would not carry its placeholders'
    /// registration), whose memory is still arriving, or that waits for a window of a
    /// file read ahead.
    fn settled(&self) -> bool {
        self.at_home.is_none() && self.shared.pages_done.load(Ordering::SeqCst) && self.ahead.idle()
    }

    /// A fork made here ([`crate::fork`]): the child is made and held, home makes its
    /// deputy ([`ToHome::Fork`]). If it cannot be made here, the call is made again and
    /// goes home.
    fn fork_here(&mut self, n: Notif, kind: fork::ForkKind, out: &dyn Fn(ToHome) -> bool) {
        let caller = n.pid as i32;
        // Its calls and its children's come through a hub from now on (they share the
        // listener); it lets the injected clone through.
        if let Err(e) = self.start_hub() {
            tracing::info!(pid = self.pid, home = self.home, "its forks are made at home: {e}");
            self.no_fork_here = true;
            return self.notification(n, out);
        }
        // The child shares the parent's descriptors: none has an offset of its own now.
        send_settle(self.ahead.forget_all(), out);
        let gadget = match self.gadget {
            Some(g) => Ok(g),
            None => fork::gadget(self.pid).inspect(|g| self.gadget = Some(*g)),
        };
        let hub = self.hub.clone().expect("a hub reads its calls");
        hub.injecting(caller);
        let made = gadget.and_then(|g| Forking::begin(&n, g, kind));
        hub.injected(caller);
        match made {
            Ok(f) => {
                self.seq += 1;
                tracing::debug!(pid = self.pid, tid = caller, child = f.child(), seq = self.seq, "forks here");
                out(ToHome::Fork { seq: self.seq, tid: self.home_tid(caller), nproc: fork::nproc_limit(self.pid).unwrap_or((u64::MAX, u64::MAX)) });
                self.forks.insert(self.seq, f);
            }
            Err(e @ (fork::NotHere::Failed(_) | fork::NotHere::Again)) => tracing::debug!(pid = self.pid, tid = caller, "{e}"),
            Err(e) => {
                // Its call is made again, and goes home.
                tracing::info!(pid = self.pid, home = self.home, "its forks are made at home: {e}");
                self.no_fork_here = true;
            }
        }
    }

    /// Its calls come through a [`Hub`] from now on (if not already), which lets calls
    /// injected in its threads through the listener (a fork's clone, an exec).
    fn start_hub(&mut self) -> std::io::Result<()> {
        if self.hub.is_none() {
            let (h, rx) = Hub::start(self.listener.clone(), self.pid)?;
            self.hub = Some(h);
            self.calls = Some(rx);
        }
        Ok(())
    }

    /// Whether an exec can be made here now ([`crate::exec`]): as for a fork, and only
    /// for a process with one thread (an exec ends the others) and no fork on its way.
    fn may_exec_here(&self) -> bool {
        self.tids.len() <= 1 && self.forks.is_empty() && self.settled()
    }

    /// The path of exec call `n` (an `execve`) if it is one this node may make, made
    /// absolute (a relative one against its working directory at home, as followed
    /// here); and whether it was relative. Err: why the call goes home.
    fn exec_path(&self, n: &Notif) -> Result<(String, bool), &'static str> {
        if self.no_exec_here {
            return Err("an exec failed here before");
        }
        if !self.may_exec_here() {
            return Err("not now (threads, a fork on its way, memory at home, a read ahead)");
        }
        let bytes = syscalls::read_path(&ProcMemory { pid: self.pid }, 0, n.args[0]).map_err(|_| "its path cannot be read")?;
        let path = bytes.strip_suffix(&[0]).and_then(|p| std::str::from_utf8(p).ok()).ok_or("its path is not UTF-8")?;
        if path.starts_with('/') {
            return Ok((path.to_string(), false));
        }
        let cwd = self.direct.cwd().ok_or("a relative path, and its directory at home is not known here")?;
        if path.is_empty() {
            return Err("an empty path");
        }
        Ok((format!("{}/{path}", cwd.trim_end_matches('/')), true))
    }

    /// Home said what exec call `n`'s path names: made here if this node has the same
    /// files ([`Execed::begin`]); failed at once if home has nothing there; else the
    /// process goes home for it. `absolute`: the call's path was relative, and this is it
    /// made absolute (the process's directory here is not home's): the exec here is made
    /// of this path, for a program (a script's interpreter would see the path as given:
    /// its `$0`, so a script goes home).
    fn exec_answered(&mut self, n: Notif, absolute: Option<String>, answer: ExecFiles, hashes: &mut FileHashes, out: &dyn Fn(ToHome) -> bool) {
        let caller = n.pid as i32;
        // Its wait ended meanwhile (a signal): the call is made again.
        if !self.listener.id_valid(n.id) {
            return;
        }
        let files = match answer {
            ExecFiles::Missing(errno) => return self.answer(n.id, -(errno as i64)),
            ExecFiles::Home(why) => return self.exec_at_home(&why, out),
            ExecFiles::Files(files) => files,
        };
        for (i, f) in files.iter().enumerate() {
            match self.direct.same_here(f, hashes) {
                Ok(local) if exec::privileged(&local) => return self.exec_at_home(&format!("{} here gives privileges", f.path), out),
                Ok(local) if i == 0 && absolute.is_some() && exec::is_script(&local) => return self.exec_at_home("a script by a relative path", out),
                Ok(_) => {}
                Err(why) => return self.exec_at_home(&why, out),
            }
        }
        if !self.may_exec_here() {
            return self.exec_at_home("not now", out);
        }
        if let Err(e) = self.start_hub() {
            return self.exec_at_home(&e.to_string(), out);
        }
        // The new program shares the descriptors: none has an offset of its own here now.
        send_settle(self.ahead.forget_all(), out);
        let gadget = match self.gadget {
            Some(g) => Ok(g),
            None => fork::gadget(self.pid),
        };
        let hub = self.hub.clone().expect("a hub reads its calls");
        hub.injecting(caller);
        let made = gadget.and_then(|g| Execed::begin(&n, g, absolute.as_deref()));
        hub.injected(caller);
        match made {
            Ok(held) => {
                self.execed();
                let cmd = procfs::process::Process::new(self.pid).and_then(|p| p.cmdline()).map(|a| a.join(" ")).unwrap_or_default();
                self.seq += 1;
                tracing::debug!(pid = self.pid, tid = caller, seq = self.seq, cmd, "execs here");
                out(ToHome::Exec { seq: self.seq, tid: self.home_tid(caller), cmd });
                self.execs.insert(self.seq, held);
            }
            // Made again (it may be made here then).
            Err(fork::NotHere::Again) => {}
            Err(e) => {
                // Its call is made again, and goes home.
                tracing::info!(pid = self.pid, home = self.home, "its execs are made at home: {e}");
                self.no_exec_here = true;
            }
        }
    }

    fn exec_at_home(&self, why: &str, out: &dyn Fn(ToHome) -> bool) {
        tracing::info!(pid = self.pid, home = self.home, "goes home for execve: {why}");
        out(ToHome::WantHome { why: format!("execve ({why})") });
    }

    /// The program was replaced here: what the guest knew of the old one goes (its
    /// vDSO, its handlers' frames, its close-on-exec files, its write tracking).
    fn execed(&mut self) {
        self.gadget = None;
        self.direct.exec();
        self.cuts.clear();
        self.held_returns.clear();
        self.cut_returns.clear();
        self.last_answered.clear();
        if self.dirty.take().is_some() {
            tracing::debug!(pid = self.pid, "its checkpoints here are whole from now on (its memory is new)");
        }
    }

    /// Programs exec'd here and held run (their deputy's files are as the exec left
    /// them, or will be before anything else of the process is served at home).
    fn release_execs(&mut self) {
        for (_, held) in self.execs.drain() {
            held.finish();
        }
    }

    /// Home made the deputy of the child of fork `c.seq`: the child runs here, with a
    /// guest of its own, and the parent's call returns its home pid.
    fn child_arrives(&mut self, c: ForkChild) {
        let Some(f) = self.forks.remove(&c.seq) else {
            (c.out)(ToHome::Refused(Refusal::Restore { why: format!("no fork {} of process {} waits here", c.seq, self.home_pid) }));
            return;
        };
        let pid = f.child();
        let Some(hub) = self.hub.clone() else { return f.abandon(None) };
        let calls = match hub.join(pid) {
            Ok(rx) => rx,
            Err(e) => {
                f.abandon(None);
                (c.out)(ToHome::Refused(Refusal::Restore { why: format!("the child's calls: {e}") }));
                return;
            }
        };
        let direct = match self.direct.for_child(pid) {
            Ok(d) => d,
            Err(e) => {
                hub.leave(pid);
                f.abandon(None);
                self.no_fork_here = true;
                (c.out)(ToHome::Refused(Refusal::Restore { why: format!("the child's direct files: {e}") }));
                return;
            }
        };
        match f.finish(c.adopt.pid) {
            Ok(vforked) => {
                tracing::debug!(pid = self.pid, child = pid, home_pid = c.adopt.pid, vfork = vforked.is_some(), "a child made here runs");
                start_child(c, pid, hub, calls, direct, self.gadget);
                // A vfork's parent waits until its child has exec'd or ended (its guest
                // makes the exec), as it would at home.
                if let Some(parent) = vforked {
                    parent.wait();
                }
            }
            Err(e) => {
                hub.leave(pid);
                tracing::warn!(pid = self.pid, home = self.home, "a child made here could not run ({e}); its forks are made at home");
                self.no_fork_here = true;
                (c.out)(ToHome::Refused(Refusal::Restore { why: format!("the child could not run: {e}") }));
            }
        }
    }

    /// Children still held end (the process ends, or leaves: its forks are made again);
    /// programs exec'd here and still held run (home's deputy closes its files first: its
    /// commands are served in order).
    fn drop_forks(&mut self) {
        self.release_execs();
        for (seq, f) in self.forks.drain() {
            tracing::debug!(pid = self.pid, seq, child = f.child(), "a fork on its way is given up (its call is made again)");
            f.abandon(None);
        }
    }

    fn notification(&mut self, n: Notif, out: &dyn Fn(ToHome) -> bool) {
        let args = n.args;
        let caller = n.pid as i32;
        self.note_notification(&n);
        self.place(caller);
        self.wait_ended(caller, |c| c.nr == i64::from(n.nr) && c.args == n.args);
        if let Some(kind) = fork::fork_kind(i64::from(n.nr), &n.args, &ProcMemory { pid: self.pid }).filter(|_| self.may_fork_here()) {
            return self.fork_here(n, kind, out);
        }
        if self.makes_thread(&n) {
            // Made here, once home has made its twin (whose id it is to have).
            self.seq += 1;
            out(ToHome::ThreadBirth { seq: self.seq, tid: self.home_tid(caller) });
            self.births.insert(self.seq, (n.id, caller));
            return;
        }
        if let Some((tid, sig)) = self.signal_to_own_thread(&n) {
            return self.signal_self(n.id, n.pid, sig, Some(tid));
        }
        if self.touches_home_memory(&n) {
            // No answer, as for any call made at home (see Class::Home below).
            tracing::info!(pid = self.pid, home = self.home, nr = n.nr, "goes home for a call whose buffer is memory kept at home");
            out(ToHome::WantHome { why: format!("call {} with a buffer in memory kept at home", syscalls::name(i64::from(n.nr)).unwrap_or("?")) });
            return;
        }
        // (Futex calls trap only for a process with memory kept at home: any other runs here.)
        if syscalls::FUTEX_CALLS.contains(&i64::from(n.nr)) {
            let _ = self.listener.continue_(n.id);
            return;
        }
        // A set-id call that changes nothing is answered as the kernel would (a
        // posix_spawn child's reset of its ids, before its exec).
        if matches!(i64::from(n.nr), libc::SYS_setuid | libc::SYS_setreuid | libc::SYS_setresuid | libc::SYS_setgid | libc::SYS_setregid | libc::SYS_setresgid)
            && std::fs::read_to_string(format!("/proc/{caller}/status")).is_ok_and(|s| syscalls::setid_changes_nothing(i64::from(n.nr), &n.args, &s))
        {
            return self.answer(n.id, 0);
        }
        if i64::from(n.nr) == libc::SYS_execve {
            match self.exec_path(&n) {
                Ok((path, relative)) => {
                    // Made here if this node has the same program (`exec_answered`).
                    self.seq += 1;
                    out(ToHome::ExecIdentify { seq: self.seq, tid: self.home_tid(caller), path: path.clone() });
                    self.exec_asked.insert(self.seq, (n, relative.then_some(path)));
                    return;
                }
                Err(why) => tracing::debug!(pid = self.pid, tid = caller, "its exec is made at home: {why}"),
            }
        }
        let after = match self.direct.plan(&n, &ProcMemory { pid: self.pid }) {
            Plan::Usual if i64::from(n.nr) == libc::SYS_read && self.read_ahead(&n, out) => return,
            Plan::Usual if i64::from(n.nr) == libc::SYS_write && self.write_behind(&n, out) => return,
            Plan::Usual => self.follows(&n),
            Plan::Here => {
                let named = Direct::named(&n);
                if self.direct.install(&self.listener, n.id, &named) {
                    let _ = self.listener.continue_(n.id);
                    return;
                }
                let fds: Vec<i32> = named.iter().map(|&f| f as i32).collect();
                self.demote(n.id, &fds, out);
                After::Nothing
            }
            Plan::Demote(fds) => {
                self.demote(n.id, &fds, out);
                After::Nothing
            }
            Plan::Close(fds) => {
                self.send_offsets(&fds, out);
                After::Close(fds)
            }
            Plan::Open { dir, rel, flags } => After::Open { dir, rel, flags },
            Plan::Access { dir, rel, nofollow, mode } => {
                if self.direct.access_here(dir, &rel, nofollow, mode) {
                    self.answer(n.id, 0);
                    return;
                }
                After::Nothing
            }
            Plan::Readlink { dir, rel, buf, len } => {
                if let Some(mut target) = self.direct.readlink_here(dir, &rel) {
                    target.truncate(len as usize);
                    if len > 0 && syscalls::MemWrite::write(&ProcMemory { pid: self.pid }, buf, &target).is_ok() {
                        self.answer(n.id, target.len() as i64);
                        return;
                    }
                }
                After::Nothing
            }
            Plan::Change { dir, change } => {
                if let Some(r) = self.direct.change_here(dir, &change) {
                    self.answer(n.id, r);
                    return;
                }
                After::Nothing
            }
            Plan::Stat { dir, rel, nofollow, buf, statx } => {
                let here = self.direct.stat_here(dir, &rel, nofollow, statx);
                if let Some(bytes) = here {
                    if syscalls::MemWrite::write(&ProcMemory { pid: self.pid }, buf, &bytes).is_ok() {
                        self.answer(n.id, 0);
                        return;
                    }
                }
                After::Nothing
            }
        };
        if let Some(fd) = private_file_mapping(&n).filter(|fd| !self.direct.has(*fd)) {
            // Mapped here from the node's own copy if it has the same file (the answer
            // decides, in `mapped_from_copy`); else the process goes home for it. Home's
            // file first gets what the process wrote to it (gathered writes).
            send_settle(Settle { writes: self.ahead.flush_all(), ..Settle::default() }, out);
            self.seq += 1;
            out(ToHome::Identify { seq: self.seq, fd });
            self.identifying.insert(self.seq, (n.id, caller, fd));
            return;
        }
        match syscalls::classify_notif(&n, self.home_pid) {
            Class::Local => {
                let _ = self.listener.continue_(n.id);
            }
            Class::Identity(Identity::Getpid) => self.answer(n.id, self.home_pid as i64),
            Class::Identity(Identity::Gettid) => self.answer(n.id, self.home_tid(caller) as i64),
            Class::Identity(Identity::SignalSelf { sig }) => self.signal_self(n.id, n.pid, sig, None),
            Class::Identity(Identity::SigReturn) => self.handler_returns(caller, &n, out),
            Class::Identity(Identity::ThreadExit) => {
                self.cuts.remove(&caller);
                self.last_answered.remove(&caller);
                // A thread's end (not the last one's): its twin at home ends too.
                if self.tids.len() > 1 {
                    if let Some(home) = self.tids.remove(&caller) {
                        out(ToHome::ThreadEnd { tid: home });
                    }
                }
                let _ = self.listener.continue_(n.id);
            }
            Class::Forward => match syscalls::marshal(n.nr as i64, args, &ProcMemory { pid: self.pid }) {
                // A new call from a thread while one of its calls is pending at home: a
                // signal ended the wait of the pending one in the process. The same call
                // again is the kernel's restart of it (or the program's retry after
                // EINTR): home may have run it already (a write written, a child
                // reaped), so home's answer to it is this call's answer — run twice, it
                // would write twice or lose the child.
                Ok(call) if self.pending.get(&caller).is_some_and(|p| p.call == call) => {
                    tracing::debug!(pid = self.pid, tid = caller, nr = n.nr, "the pending call again (restarted): home's answer is its answer");
                    if let Some(p) = self.pending.get_mut(&caller) {
                        p.id = n.id;
                    }
                }
                // A wait whose mask lets in a signal pending here (it came from home
                // while the thread blocked it): it ends here at once, as it would at home.
                Ok(call)
                    if self.wait_mask(&call)
                        .is_some_and(|m| SigMasks::of(caller).is_some_and(|s| !s.pending_let_in(m).is_empty()) && self.end_masked_wait(caller, call.nr, m)) => {}
                // The latest call a signal cut short, made again.
                Ok(call) if self.cuts.get(&caller).and_then(|c| c.last()).is_some_and(|c| *c.call() == call) => self.cut_made_again(caller, n.id),
                Ok(call) => {
                    self.wait_ended(caller, |_| false);
                    self.settle_for_call(&call, out);
                    self.seq += 1;
                    tracing::trace!(pid = self.pid, tid = caller, nr = n.nr, seq = self.seq, "forwarded");
                    out(ToHome::Call { seq: self.seq, tid: self.home_tid(caller), call: call.clone() });
                    self.pending.insert(caller, Pending::new(n.id, self.seq, call, after));
                }
                Err(e) => {
                    tracing::debug!(pid = self.pid, "call {}: {e}", n.nr);
                    self.answer(n.id, -(libc::EFAULT as i64));
                }
            },
            Class::Home(why) => {
                let why = why.to_string();
                tracing::info!(pid = self.pid, home = self.home, "goes home for {why}");
                // No answer: the capture interrupts the call, and it is made
                // again at home.
                out(ToHome::WantHome { why: why.to_string() });
            }
        }
    }

    /// Home said what file descriptor `fd` is, whose private mapping waits in call `id`
    /// of thread `caller`: mapped from this node's copy when it has the same file at the
    /// same path ([`Direct::map_copy`]); else the process goes home for the mapping.
    fn mapped_from_copy(&mut self, id: u64, caller: i32, fd: i32, file: Option<FileIdentity>, hashes: &mut FileHashes, out: &dyn Fn(ToHome) -> bool) {
        let why = match file {
            None => "not a regular file that can be mapped from a copy here".to_string(),
            Some(file) => match self.direct.map_copy(&self.listener, id, fd, &file, hashes) {
                Ok(()) => {
                    tracing::debug!(pid = self.pid, tid = caller, fd, path = file.path, "maps its own copy of home's file");
                    let _ = self.listener.continue_(id);
                    return;
                }
                Err(NoCopy::Gone) => return,
                Err(NoCopy::Not(why)) => why,
            },
        };
        tracing::info!(pid = self.pid, home = self.home, tid = caller, fd, "goes home for mmap of a file: {why}");
        out(ToHome::WantHome { why: format!("mmap of a file ({why})") });
    }

    /// Sends thread `thread`'s pending call (its home id `tid`) home again: a
    /// signal ended its run there that the process would not have noticed.
    fn call_again(&mut self, thread: i32, tid: i32, out: &dyn Fn(ToHome) -> bool) {
        let Some(p) = self.pending.get_mut(&thread) else { return };
        self.seq += 1;
        p.seq = self.seq;
        out(ToHome::Call { seq: self.seq, tid, call: p.call.clone() });
    }

    /// Ends thread `thread`'s wait in call `nr` here as the kernel ends it when
    /// a signal that the call's `mask` lets in is pending (see
    /// [`herd_kernel::maskwait`]): EINTR, the handler runs. False if it could
    /// not (the call is still waiting).
    fn end_masked_wait(&mut self, thread: i32, nr: i64, mask: u64) -> bool {
        match maskwait::interrupt_wait(thread, nr, mask) {
            Ok(Interrupted::NotWaiting) => {
                tracing::debug!(pid = self.pid, tid = thread, nr, "not waiting in the call: its wait is not ended here");
                return false;
            }
            Ok(how) => tracing::debug!(pid = self.pid, tid = thread, nr, ?how, "a signal ended a wait with a mask of its own"),
            Err(herd_kernel::KernelError::Died { .. }) => {}
            Err(e) => {
                tracing::warn!(pid = self.pid, tid = thread, nr, "cannot end a wait with a mask of its own: {e}");
                return false;
            }
        }
        // The notification is gone: the process has its answer (EINTR).
        self.pending.remove(&thread);
        self.release_held(thread, false);
        true
    }

    /// Delivers the signals held for the end of `thread`'s call: to that thread if
    /// `to_thread` (they are to interrupt its wait here), otherwise as they came.
    fn release_held(&mut self, thread: i32, to_thread: bool) {
        for (sig, directed) in self.held_signals.remove(&thread).unwrap_or_default() {
            self.deliver(sig, (directed || to_thread).then_some(thread));
        }
    }

    /// Delivers `sig` to the process, or with `tid` (an id here) to that thread.
    fn deliver(&self, sig: i32, tid: Option<i32>) {
        let r = match tid {
            Some(t) if t != self.pid || self.tids.len() > 1 => task::tgkill(self.pid, t, sig),
            _ => task::kill(self.pid, sig),
        };
        if let Err(e) = r {
            tracing::debug!(pid = self.pid, ?tid, "signal {sig}: {e}");
        }
    }

    fn command(
        &mut self,
        cmd: GuestCmd,
        cmds: &Receiver<GuestCmd>,
        out: &Out,
        image_out: impl FnMut(Vec<u8>) -> bool + Send,
        hashes: &mut FileHashes,
    ) -> Flow {
        let cmd = match cmd {
            GuestCmd::Home(m) => m,
            GuestCmd::HomeLost => {
                tracing::info!(pid = self.pid, home = self.home, "ending the guest: the stream to home is lost");
                self.drop_forks();
                let _ = task::kill_and_reap(self.pid);
                return Flow::End;
            }
            GuestCmd::Child(c) => {
                self.child_arrives(c);
                return Flow::Go;
            }
        };
        match cmd {
            // The deputy closed its close-on-exec files: the new program runs.
            ToRemote::Reply { seq, .. } if self.execs.contains_key(&seq) => {
                if let Some(held) = self.execs.remove(&seq) {
                    held.finish();
                }
            }
            ToRemote::ExecIdentity { seq, answer } => {
                if let Some((n, absolute)) = self.exec_asked.remove(&seq) {
                    self.exec_answered(n, absolute, answer, hashes, &**out);
                }
            }
            ToRemote::Reply { seq, reply } if self.ahead.is_window(seq) => {
                let data = reply.outs.into_iter().next().map(|(_, d)| d).unwrap_or_default();
                let (filled, ask) = self.ahead.filled(seq, reply.ret, data);
                match filled {
                    Filled::Serve(fd, w, bytes) => self.serve_read(fd, w, &bytes, &**out),
                    Filled::Forward(fd, w) => self.forward_read(fd, w, &**out),
                    Filled::Nothing => {}
                }
                if let Some(a) = ask {
                    self.ask_window(a, &**out);
                }
            }
            ToRemote::Reply { seq, reply } => {
                // The call waiting for it, or one a signal cut short (whose answer is then
                // kept: its notification is gone).
                let (caller, p) = match self.pending.iter().find(|(_, p)| p.seq == seq).map(|(t, _)| *t) {
                    Some(caller) => (caller, self.pending.remove(&caller).expect("found")),
                    None => match self.take_waiting_cut(seq) {
                        Some(found) => found,
                        None => {
                            tracing::trace!(pid = self.pid, seq, ret = reply.ret, "a reply to no pending call");
                            return Flow::Go;
                        }
                    },
                };
                if let Some(took) = &self.shared.call_took {
                    took(p.sent.elapsed());
                }
                // Ended at home for a signal that came before it began (see
                // `interrupted`): the signal interrupts the wait here, unanswered, so that
                // the kernel restarts the call after a handler with SA_RESTART, or fails
                // it with EINTR, or the process ends, as it would have at home.
                if p.interrupted && reply.ret == -(libc::EINTR as i64) {
                    self.answer_held_return(p.seq, None);
                    self.release_held(caller, true);
                    return Flow::Go;
                }
                let ret = match syscalls::apply(&p.call, &reply, &ProcMemory { pid: self.pid }) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(pid = self.pid, "reply to call {}: {e}", p.call.nr);
                        -(libc::EFAULT as i64)
                    }
                };
                self.ahead.after(p.call.nr, &p.call.args, ret);
                // A gathered write that failed meanwhile is the answer of an fsync or a close.
                let fd = p.call.args[0] as i64 as i32;
                let ret = match p.call.nr {
                    libc::SYS_fsync | libc::SYS_fdatasync => self.ahead.take_error(fd).map_or(ret, |e| -(e as i64)),
                    libc::SYS_close => self.ahead.take_orphan_error(fd).map_or(ret, |e| -(e as i64)),
                    _ => ret,
                };
                // A wait with a mask of its own, asked to end at home because a signal
                // its mask lets in came first (`ToHome::Interrupt`): ended here as the
                // kernel would, the signal delivered under the call's mask. Had it ended
                // by itself first, it takes its answer, and the signal waits for the next.
                if let Some(mask) = self.wait_mask(&p.call) {
                    let held = self.held_signals.remove(&caller).unwrap_or_default();
                    let lets_in = SigMasks::of(caller).is_some_and(|m| held.iter().any(|&(sig, _)| m.lets_in(sig, mask)));
                    for &(sig, directed) in &held {
                        self.deliver(sig, (directed || lets_in).then_some(caller));
                    }
                    if !(lets_in && ret == -(libc::EINTR as i64) && self.end_masked_wait(caller, p.call.nr, mask)) {
                        self.answer_forwarded(caller, p.seq, p.id, p.call.clone(), ret);
                    }
                    return Flow::Go;
                }
                let opened = open_flags(&p.call).filter(|_| ret >= 0);
                match p.after {
                    After::Open { dir, rel, flags } if ret >= 0 => {
                        if !self.direct.opened(&self.listener, p.id, dir, &rel, flags, ret as i32) {
                            self.ahead.own(ret as i32, 0, Some(flags));
                        }
                        self.answer_forwarded(caller, p.seq, p.id, p.call.clone(), ret);
                    }
                    _ if opened.is_some() => {
                        // A new open file description: its offset is this descriptor's alone.
                        self.ahead.own(ret as i32, 0, opened.flatten());
                        self.answer_forwarded(caller, p.seq, p.id, p.call.clone(), ret);
                    }
                    // The process closes its own copies: the call runs here now.
                    After::Close(fds) if ret >= 0 && self.direct.closed(&fds) => {
                        if !self.listener.continue_(p.id).unwrap_or(false) && !self.answer_held_return(p.seq, Some(ret)) {
                            self.keep_cut(caller, Cut::Answered { seq: p.seq, call: p.call.clone(), ret, run_here: true });
                        }
                    }
                    After::Chdir(to) if ret == 0 => {
                        self.direct.chdir(to);
                        self.answer_forwarded(caller, p.seq, p.id, p.call.clone(), ret);
                    }
                    After::Umask(mask) => {
                        self.direct.umask(mask);
                        self.answer_forwarded(caller, p.seq, p.id, p.call.clone(), ret);
                    }
                    _ => self.answer_forwarded(caller, p.seq, p.id, p.call.clone(), ret),
                }
                self.release_held(caller, false);
            }
            ToRemote::Signal { sig, during_call, tid, directed } => {
                // The thread here whose deputy caught it.
                let thread = self.local_tid(tid).unwrap_or(self.pid);
                tracing::trace!(pid = self.pid, tid = thread, sig, during_call, pending = ?self.pending.get(&thread).map(|p| (p.seq, p.call.nr, p.interrupted)), "signal from home");
                // What that deputy abandoned may have been a window read ahead for the
                // thread (no answer will come): asked again (a late answer is dropped).
                if during_call {
                    for a in self.ahead.abandoned(thread) {
                        self.ask_window(a, &**out);
                    }
                }
                let target = directed.then_some(thread);
                match (self.pending.get(&thread), during_call) {
                    // A wait with a mask of its own (make's pselect letting SIGCHLD in):
                    // judged and ended with that mask, which never reaches the thread here.
                    (Some(p), true) if let Some(mask) = self.wait_mask(&p.call) => {
                        let nr = p.call.nr;
                        if SigMasks::of(thread).is_none_or(|m| m.lets_in(sig, mask)) {
                            // For this thread: home's kernel chose it.
                            self.deliver(sig, Some(thread));
                            if self.end_masked_wait(thread, nr, mask) {
                                return Flow::Go;
                            }
                        } else {
                            // Blocked by the wait's mask: pending until the wait ends.
                            self.held_signals.entry(thread).or_default().push_back((sig, directed));
                        }
                        self.call_again(thread, tid, &**out);
                    }
                    // It ends the call, as does a signal that came before the call began
                    // and was held for its end (`interrupted`): those go first.
                    (Some(p), true) => {
                        if interrupts(thread, sig) || p.interrupted {
                            self.pending.remove(&thread);
                            self.release_held(thread, true);
                            self.deliver(sig, target);
                        } else {
                            // The process would not have noticed: home runs the call again,
                            // and the signal is what it would be at home: pending while the
                            // thread blocks it, or discarded if ignored.
                            self.deliver(sig, target);
                            self.call_again(thread, tid, &**out);
                        }
                    }
                    // Stopping or continuing the process does not wait for the call (at
                    // home the deputy is stopped too, and would never answer it): the
                    // kernel restarts its wait, which takes the answer when it comes.
                    (Some(_), false) if stops_or_continues(self.pid, sig) => self.deliver(sig, target),
                    // The deputy was not in the call: home has answered it, or has not
                    // begun it yet (the call and the signal crossed). The signal waits for
                    // the answer. If it interrupts the call (at home it came first), home
                    // is asked to end the call (`Interrupt`): answered with EINTR if it had
                    // not ended by itself, and then the signal interrupts it here too.
                    (Some(p), false) => {
                        let (seq, mask, whole) = (p.seq, self.wait_mask(&p.call), syscalls::never_waits(p.call.nr, &p.call.args));
                        let lets_in = match mask {
                            Some(mask) => SigMasks::of(thread).is_none_or(|m| m.lets_in(sig, mask)),
                            // (A call that never waits is not cut: the signal follows it.)
                            None => interrupts(thread, sig) && !whole,
                        };
                        if lets_in {
                            out(ToHome::Interrupt { seq, tid });
                            if let Some(p) = self.pending.get_mut(&thread) {
                                p.interrupted = mask.is_none();
                            }
                        }
                        self.held_signals.entry(thread).or_default().push_back((sig, directed));
                    }
                    (None, _) => self.deliver(sig, target),
                }
            }
            ToRemote::Freeze(stop) => {
                let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
                if let Err(e) = task::kill(self.pid, sig) {
                    tracing::warn!(pid = self.pid, home = self.home, "cannot {} the guest: {e}", if stop { "freeze" } else { "continue" });
                }
            }
            ToRemote::Identity { seq, file } => {
                if let Some((id, caller, fd)) = self.identifying.remove(&seq) {
                    self.mapped_from_copy(id, caller, fd, file, hashes, &**out);
                }
            }
            ToRemote::WriteFailed { fd, errno } => {
                tracing::debug!(pid = self.pid, fd, errno, "gathered writes failed at home");
                self.ahead.write_failed(fd, errno);
            }
            ToRemote::ThreadBorn { seq, tid } => {
                let Some((id, caller)) = self.births.remove(&seq) else {
                    // The birth was called off (the process was captured meanwhile; its
                    // clone is made again wherever it goes on): the twin ends.
                    if tid > 0 {
                        out(ToHome::ThreadEnd { tid });
                    }
                    return Flow::Go;
                };
                if tid <= 0 {
                    tracing::info!(pid = self.pid, home = self.home, "goes home to make a thread (its twin could not be made)");
                    out(ToHome::WantHome { why: "making a thread".into() });
                    return Flow::Go;
                }
                // The kernel's next id here is pointed at the home one (herdd is root
                // here); another process may take it first: then the thread is mapped.
                let _ = std::fs::write("/proc/sys/kernel/ns_last_pid", (tid - 1).to_string());
                self.unplaced.push_back(tid);
                tracing::debug!(pid = self.pid, caller, tid, "makes a thread");
                let _ = self.listener.continue_(id);
            }
            ToRemote::Capture => return self.capture(Capture::Move, cmds, out, image_out, hashes),
            ToRemote::CapturePostCopy => return self.capture(Capture::PostCopy, cmds, out, image_out, hashes),
            ToRemote::Checkpoint { id, base } => return self.capture(Capture::Checkpoint { id, base }, cmds, out, image_out, hashes),
            // errno 0: home was busy moving the process; the call is made again.
            ToRemote::Forked { seq, errno } => {
                if let Some(f) = self.forks.remove(&seq) {
                    tracing::debug!(pid = self.pid, seq, errno, "home answered a fork: {}", if errno == 0 { "not now (made again)".to_string() } else { std::io::Error::from_raw_os_error(errno).to_string() });
                    f.abandon((errno != 0).then_some(errno));
                }
            }
            ToRemote::Kill => {
                tracing::info!(pid = self.pid, home = self.home, "ending the guest (home asked)");
                self.drop_forks();
                let _ = task::kill_and_reap(self.pid);
                return Flow::End;
            }
            ToRemote::ImageKept { id } => {
                if let Some(d) = &mut self.dirty {
                    d.image_kept(id);
                }
            }
            ToRemote::Commit | ToRemote::Abort => {}
            // Image and pages go to the restore and the pager, not here.
            other => tracing::debug!(pid = self.pid, "unexpected from home: {other:?}"),
        }
        Flow::Go
    }

    /// Freezes the process, streams its image home, and waits for home's
    /// verdict: Commit ends it here, Abort lets it run on.
    fn capture(
        &mut self,
        kind: Capture,
        cmds: &Receiver<GuestCmd>,
        out: &Out,
        image_out: impl FnMut(Vec<u8>) -> bool + Send,
        hashes: &mut FileHashes,
    ) -> Flow {
        if !self.shared.pages_done.load(Ordering::SeqCst) {
            out(ToHome::CaptureFailed { reason: "its memory is still arriving (post-copy)".into() });
            return Flow::Go;
        }
        if !self.execs.is_empty() {
            // Home's deputy has yet to close what the exec closed (it makes those closes
            // after this capture's restore otherwise): not now. The new program runs.
            self.release_execs();
            out(ToHome::CaptureFailed { reason: "it has just exec'd; its files at home are being closed".into() });
            return Flow::Go;
        }
        // A fork on its way is given up: its call is made again wherever the process goes
        // on (home undoes the deputy it made, if any, when the child's stream finds no fork
        // here).
        self.drop_forks();
        let postcopy = kind == Capture::PostCopy;
        // An increment only of the checkpoint the tracking started at; anything else
        // is a whole image, captured untracked.
        let increment = match (kind, &self.dirty) {
            (Capture::Checkpoint { id, base: Some(base) }, Some(d)) if d.since() == Some(base) => Some(id),
            _ => None,
        };
        if increment.is_none() {
            if let Some(d) = &mut self.dirty {
                d.disarm();
            }
        }
        // A call waiting here is interrupted by the freeze and made again
        // wherever the process continues (a thread's birth too: the twin home made
        // for it ends when its answer finds no birth here).
        self.pending.clear();
        self.cuts.clear();
        self.held_returns.clear();
        self.cut_returns.clear();
        self.last_answered.clear();
        self.births.clear();
        // A touch of memory kept at home during or after this capture asks again.
        let at_home = match &mut self.at_home {
            Some(h) => {
                h.marks.asked = false;
                h.marks.regions.clone()
            }
            None => Vec::new(),
        };
        let mut frozen = match Frozen::freeze_away(self.pid, hashes, Purpose::Migrate { own_filter: true }, &at_home) {
            Ok(f) => f,
            Err(e) => {
                out(ToHome::CaptureFailed { reason: e.to_string() });
                return Flow::Go;
            }
        };
        if crate::failpoint::fires("away-capture") {
            out(ToHome::CaptureFailed { reason: "failpoint away-capture".into() });
            return Flow::Go;
        }
        if let (Some(id), Some(d)) = (increment, &self.dirty) {
            if let Err(e) = frozen.make_increment(d, id) {
                out(ToHome::CaptureFailed { reason: format!("finding what it wrote since its last checkpoint: {e}") });
                return Flow::Go;
            }
        }
        // A checkpoint: the process runs on from a copy-on-write snapshot of its memory,
        // its writes tracked from that instant for the next one (if this one is not kept,
        // the next is whole: home names the one it has). Its calls wait until the
        // checkpoint is over (this thread serves them), so that every call it makes
        // after the snapshot is journaled after the checkpoint.
        if let Capture::Checkpoint { id, .. } = kind {
            if let Some(d) = &mut self.dirty {
                if let Err(e) = frozen.arm(d, id) {
                    tracing::warn!(pid = self.pid, "write tracking stopped (the next checkpoint is whole): {e}");
                    d.disarm();
                }
            }
            // (A hub lets the snapshot's clone through itself.)
            let listener = if self.hub.is_some() { None } else { Some(&*self.listener) };
            if let Some(h) = &self.hub {
                h.injecting(self.pid);
            }
            let snapshot = frozen.snapshot(listener);
            if let Some(h) = &self.hub {
                h.injected(self.pid);
            }
            match snapshot {
                Ok(true) => tracing::debug!(pid = self.pid, "checkpoint from a snapshot"),
                Ok(false) => {}
                Err(e) => tracing::info!(pid = self.pid, "no snapshot for this checkpoint ({e}): it stays stopped until its image is written"),
            }
        }
        // Its threads are made again by their home ids (the ids glibc keeps for them).
        frozen.rename_threads(|tid| self.home_tid(tid));
        // Files it used here directly or read ahead: home's descriptors take their offsets.
        self.settle_all(&**out);
        let herd_checkpoint::LazyPages { runs: lazy, first } = if postcopy { frozen.lazy_runs() } else { Default::default() };
        if postcopy {
            out(ToHome::Lazy(lazy.clone()));
        }
        let mut image_out = image_out;
        let writer = ChunkWriter::new(move |chunk| {
            !crate::failpoint::fires("away-image") && image_out(chunk)
        });
        let written = if postcopy { frozen.write_postcopy(writer) } else { frozen.write(writer) };
        let written = written.and_then(|(mut w, stats)| {
            std::io::Write::flush(&mut w).map_err(|e| herd_checkpoint::CheckpointError::Io { what: "sending the image".into(), source: e })?;
            Ok(stats)
        });
        let stats = match written {
            Ok(stats) => stats,
            Err(e) => {
                out(ToHome::CaptureFailed { reason: e.to_string() });
                return Flow::Go; // `frozen` is released on drop
            }
        };
        if matches!(kind, Capture::Checkpoint { .. }) {
            out(ToHome::Stopped { micros: stats.frozen_for.as_micros() as u64, snapshot: frozen.released() });
        }
        out(ToHome::ImageEnd);
        // Post-copy: once the process runs on the next node, its pages go from here.
        let mut pusher = None;
        let mut lazy = Some(lazy);
        loop {
            match cmds.recv() {
                Ok(GuestCmd::Home(ToRemote::Commit)) => {
                    frozen.kill();
                    let _ = task::reap(self.pid);
                    tracing::info!(pid = self.pid, home = self.home, "guest moved on");
                    return Flow::End;
                }
                Ok(GuestCmd::Home(ToRemote::Abort)) if pusher.is_none() => {
                    // (A checkpoint's tracking was armed at the capture.)
                    drop(frozen);
                    // Signals held meanwhile: no call of the process is pending any more.
                    for (tid, held) in std::mem::take(&mut self.held_signals) {
                        for (sig, directed) in held {
                            self.deliver(sig, directed.then_some(tid));
                        }
                    }
                    return Flow::Go;
                }
                Ok(GuestCmd::Home(ToRemote::PushPages)) if postcopy && pusher.is_none() => {
                    let (send, pid, home) = (out.clone(), self.pid, self.home.clone());
                    pusher = Some(postcopy::start_pusher(
                        self.pid,
                        lazy.take().unwrap_or_default(),
                        first,
                        move |p| match p {
                            Push::Pages { addr, data } => send(ToHome::Pages { addr, data }),
                            Push::End => send(ToHome::PagesEnd),
                        },
                        move |r| match r {
                            Ok(p) => tracing::debug!(pid, home, "post-copy: every page sent ({} bytes)", p.bytes),
                            // Home hears of it as pages that never come; the next node's process is lost.
                            Err(e) => tracing::error!(pid, home, "post-copy: sending pages failed: {e}"),
                        },
                    ));
                }
                Ok(GuestCmd::Home(ToRemote::PageRequest { addr })) => {
                    if let Some(p) = &pusher {
                        p.request(addr);
                    }
                }
                Ok(GuestCmd::Home(ToRemote::Kill)) | Ok(GuestCmd::HomeLost) | Err(_) => {
                    frozen.kill();
                    let _ = task::reap(self.pid);
                    return Flow::End;
                }
                Ok(GuestCmd::Home(ToRemote::Signal { sig, .. })) => self.held_signals.entry(self.pid).or_default().push_back((sig, false)),
                // A fork given up for this capture (its call is made again wherever the
                // process goes on): its child's stream is refused, home undoes its deputy.
                Ok(GuestCmd::Child(c)) => self.child_arrives(c),
                Ok(_) => {}
            }
        }
    }
}

/// The descriptor of a private mapping of a file (mmap with MAP_PRIVATE of an fd).
fn private_file_mapping(n: &Notif) -> Option<i32> {
    let flags = n.args[3] as u32 as i32;
    let private = flags & libc::MAP_ANONYMOUS == 0 && flags & 0x0f == libc::MAP_PRIVATE;
    (i64::from(n.nr) == libc::SYS_mmap && private).then_some(n.args[4] as i32).filter(|fd| *fd >= 0)
}

/// Sends home what it must do first: gathered writes, then offsets.
fn send_settle(s: Settle, out: &dyn Fn(ToHome) -> bool) {
    for f in s.writes {
        out(ToHome::Write { fd: f.fd, at: f.at, data: f.data });
    }
    if !s.offsets.is_empty() {
        out(ToHome::Offsets(s.offsets));
    }
}

/// For a forwarded open: Some(its open(2) flags, if the call shows them).
fn open_flags(call: &Call) -> Option<Option<i32>> {
    match call.nr {
        libc::SYS_open => Some(Some(call.args[1] as i32)),
        libc::SYS_openat => Some(Some(call.args[2] as i32)),
        libc::SYS_creat => Some(Some(libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC)),
        libc::SYS_openat2 => Some(None),
        _ => None,
    }
}

fn restore_ms(r: &herd_checkpoint::Restored) -> f64 {
    (r.stats.total.as_secs_f64() * 1e4).round() / 10.0
}

enum Flow {
    Go,
    End,
}

/// Whether `sig` stops or continues `pid` by itself (no handler of its runs for it):
/// SIGKILL, SIGSTOP, SIGCONT, and the other stop signals when not caught.
fn stops_or_continues(pid: i32, sig: i32) -> bool {
    match sig {
        libc::SIGKILL | libc::SIGSTOP | libc::SIGCONT => true,
        libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => SigMasks::of(pid).is_none_or(|m| !m.catches(sig)),
        _ => false,
    }
}

/// Whether `sig` sent to `pid` now would interrupt a system call it waits in:
/// not blocked and not ignored (explicitly, or by default).
fn interrupts(pid: i32, sig: i32) -> bool {
    SigMasks::of(pid).is_none_or(|m| m.lets_in(sig, m.blocked))
}

/// Whether signal `sig` sent to thread `tid` now takes effect without running a handler
/// first: it is blocked in the thread (it stays pending), or neither caught nor ignored
/// (its default action). False when its status cannot be read.
fn acts_before_return(tid: u32, sig: i32) -> bool {
    if !(1..=64).contains(&sig) {
        return false;
    }
    let Some(m) = SigMasks::of(tid as i32) else { return false };
    m.blocks(sig) || !(m.catches(sig) || m.ignores(sig))
}

#[cfg(test)]
mod tests {
    use super::{acts_before_return, HomeRegion, MemEvent, Placeholders};
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    #[test]
    fn which_signals_act_before_the_call_returns() {
        // A shell that catches SIGUSR1 and ignores SIGINT.
        let mut sh = Command::new("sh")
            .args(["-c", "trap : USR1; trap '' INT; echo ready; read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh");
        BufReader::new(sh.stdout.take().unwrap()).read_line(&mut String::new()).unwrap();
        let pid = sh.id();
        assert!(acts_before_return(pid, libc::SIGTERM), "default action");
        assert!(!acts_before_return(pid, libc::SIGUSR1), "caught");
        assert!(!acts_before_return(pid, libc::SIGINT), "ignored");
        assert!(!acts_before_return(pid, 0) && !acts_before_return(pid, 65));
        drop(sh.stdin.take());
        sh.wait().unwrap();
        // A thread of its own: its mask is changed.
        std::thread::spawn(|| {
            let tid = herd_kernel::task::gettid() as u32;
            let mut set = SigSet::empty();
            set.add(Signal::SIGUSR1);
            pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).unwrap();
            assert!(acts_before_return(tid, libc::SIGUSR1), "blocked");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn placeholders_follow_unmaps_and_moves_and_ask_once() {
        let r = |start: u64, end: u64, name: &str| HomeRegion { start, end, name: name.into() };
        let mut p = Placeholders { regions: vec![r(0x10000, 0x14000, "a"), r(0x20000, 0x22000, "b")], asked: false };
        // The middle of "a" unmapped; "b" moved (mremap) over part of where "a" was.
        assert_eq!(p.follow(&[MemEvent::Unmap { start: 0x11000, end: 0x12000 }]), None);
        assert_eq!(p.regions, vec![r(0x10000, 0x11000, "a"), r(0x12000, 0x14000, "a"), r(0x20000, 0x22000, "b")]);
        assert_eq!(p.follow(&[MemEvent::Remap { from: 0x20000, to: 0x13000, len: 0x2000 }]), None);
        assert_eq!(p.regions, vec![r(0x10000, 0x11000, "a"), r(0x12000, 0x13000, "a"), r(0x13000, 0x15000, "b")]);
        // A touch asks once, naming the memory; a second touch does not ask again.
        let why = p.follow(&[MemEvent::PageFault { addr: 0x14010 }, MemEvent::PageFault { addr: 0x10000 }]);
        assert_eq!(why.as_deref(), Some("touching memory kept at home (b)"));
        assert!(p.asked);
        assert_eq!(p.follow(&[MemEvent::PageFault { addr: 0x10000 }]), None);
        assert!(HomeRegion::touched(&p.regions, 0x12ff8, 0x13008));
        assert!(!HomeRegion::touched(&p.regions, 0x11000, 0x12000));
    }
}
