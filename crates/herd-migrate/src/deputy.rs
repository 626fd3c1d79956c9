//! The deputy: the original process, kept at home while its remote copy runs
//! elsewhere. It keeps the process's identity — pid, parent, open files, cwd,
//! terminal, credentials — and runs the system calls the remote copy
//! forwards, injected into it. Its memory is released: it holds nothing but
//! a three-page *shell* (`syscall; int3` and scratch for call buffers).
//!
//! One thread per deputy does all the ptrace work (ptrace requests are bound
//! to the tracing thread). While idle the deputy sleeps in an injected
//! `pause()`, so that every signal sent to the home pid stops it and is seen
//! here: it is handed on to the remote copy, never delivered at home
//! (except stop signals, which also stop the deputy, so that the shell's job
//! control sees a stopped job). Commands reach the thread through a channel;
//! a queued real-time signal with a secret value wakes it from its wait.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_checkpoint::filehash::FileHashes;
use herd_checkpoint::restore::{free_area, mapped_ranges, restore_into, unmap_all_but, IntoFailed};
use herd_checkpoint::{CaptureStats, Frozen, Purpose, RestoreStats};
use herd_kernel::abi::{self, KernelSigaction};
use herd_kernel::inject::{Injector, Outcome};
use herd_kernel::mem::{self, PAGE};
use herd_kernel::ptrace::{Stop, Tracee};
use herd_kernel::{pidfd, KernelError};

use crate::native::Native;
use crate::pipe::{ChunkReader, ChunkWriter};
use crate::ProcMemory;
use crate::proto::{Ending, MoveMode, ToRemote};
use crate::syscalls::{self, Call, MarshalError, Reply};

/// The signal that wakes a deputy's thread (a queued one, from herdd, with
/// the deputy's secret value).
pub const WAKE_SIGNAL: i32 = 64;

const SHELL_LEN: u64 = 3 * PAGE;

/// Orders for a deputy's thread.
pub enum Cmd {
    /// The move succeeded: become the deputy (after [`start`]).
    Commit,
    /// The move failed: let the process run on at home (after [`start`]).
    Abort,
    /// Run forwarded call `seq`, made by thread `tid` (its home id) of the process.
    Call { seq: u64, tid: i32, call: Call },
    /// Finish or abandon the call in progress and hold still: the remote copy
    /// is about to be captured.
    Quiesce,
    /// After `Quiesce`: serve calls again (the capture failed).
    Resume,
    /// After `Quiesce`: the process comes home; its image arrives here.
    ComeHome(ChunkReader, Option<LazyHome>),
    /// The remote copy ended: end the same way at home.
    Exit(Ending),
    /// The remote copy is lost: end with SIGKILL.
    Kill,
    /// Post-copy is over: the target has every page; release the memory the
    /// deputy kept for it.
    ReleaseMemory,
    /// To a thread's deputy: the thread ends (its twin ended on the remote node;
    /// or, after `Quiesce`, the process comes home, where its threads are made again).
    EndThread,
    /// Thread `tid` (home id) makes a thread on the remote node: the deputy of
    /// `tid` makes its twin here and reports [`Event::ThreadBorn`].
    GrowThread { seq: u64, tid: i32 },
    /// End forwarded call `seq` of thread `tid` (home id) with EINTR if it runs now
    /// (see [`crate::proto::ToHome::Interrupt`]); nothing otherwise.
    Interrupt { seq: u64, tid: i32 },
    /// Thread `tid` (home id) forks on the remote node: the deputy of `tid` forks here
    /// (the child's deputy: same parent, fds, cwd, limits as a fork at home) and
    /// reports [`Event::Forked`].
    Fork { seq: u64, tid: i32, nproc: (u64, u64) },
    /// The child made by [`Cmd::Fork`] is given up (its node could not take it): it ends
    /// here and is reaped by the deputy, its SIGCHLD not handed on: the process never
    /// sees it.
    Unfork { pid: i32 },
    /// The process exec'd on the remote node (its only thread, `tid`, home id): the
    /// deputy closes its descriptors marked close-on-exec, as the exec closed them in the
    /// process, and answers [`Event::Reply`] `seq`.
    Exec { seq: u64, tid: i32 },
}

/// The deputy of a child made by [`Cmd::Fork`]: parked asleep, every signal blocked,
/// until [`adopt_forked`] takes it over.
#[derive(Debug, Clone)]
pub struct Twin {
    pub pid: i32,
    /// Its shell (the parent deputy's, copied by the fork).
    shell: u64,
    at_home: Vec<(u64, u64)>,
}

/// Post-copy home ([`Cmd::ComeHome`]): the runs of pages that come after the image
/// (they arrive on the stream first), and /dev/userfaultfd, opened by herdd, for the
/// deputy to make a userfaultfd that takes the kernel's faults too.
pub struct LazyHome {
    pub runs: std::sync::mpsc::Receiver<Vec<(u64, u64)>>,
    pub device: OwnedFd,
}

/// What a deputy's thread reports.
#[derive(Debug)]
pub enum Event {
    /// The capture at home is complete and streamed; waiting for Commit/Abort.
    /// With post-copy, `lazy` are the runs of pages still to send, and `stack`
    /// the stack's range (sent first).
    Captured { stats: CaptureStats, lazy: Vec<(u64, u64)>, stack: Option<(u64, u64)> },
    /// The capture failed; the process runs on at home (the thread has ended).
    CaptureFailed(String),
    /// Now a deputy; the process's memory is released at home.
    Deputy,
    Reply { seq: u64, reply: Reply },
    /// A signal for the process, caught by the deputy of thread `tid`.
    /// `during_call`: it interrupted the forwarded call that thread was
    /// serving, which was abandoned (no reply will come). `directed`: it was
    /// sent to that thread (tkill/tgkill), not to the process.
    Signal { sig: i32, during_call: bool, tid: i32, directed: bool },
    /// Holding still (after `Quiesce`).
    Quiesced,
    /// The process runs at home again (the thread has ended).
    /// With post-copy, `uffd` is the userfaultfd of the pages still to come (a
    /// pager must fill them: the process waits on it when it touches one).
    Home { stats: RestoreStats, warnings: Vec<String>, uffd: Option<OwnedFd> },
    /// Bringing it home failed; it is a deputy again and the remote copy must go on.
    HomeFailed(String),
    /// The process (the deputy) has ended; the thread has ended.
    Gone(String),
    /// For [`Cmd::GrowThread`] `seq`: the twin is thread `tid` (negative: it could not be made).
    ThreadBorn { seq: u64, tid: i32 },
    /// For [`Cmd::Fork`] `seq`: the child's deputy, or the errno the fork failed with.
    Forked { seq: u64, result: Result<Twin, i32> },
}

/// The handle the rest of herdd keeps: commands in, and the wake-up.
#[derive(Clone)]
pub struct Link {
    pid: i32,
    cookie: u64,
    cmds: Sender<Cmd>,
    /// The deputies of the process's other threads, by thread id: a call made
    /// by one of them is run there, concurrently with the others.
    threads: Arc<Mutex<HashMap<i32, ThreadLink>>>,
    /// The calls herdd makes itself on the deputy's files.
    native: Arc<Native>,
}

#[derive(Clone)]
struct ThreadLink {
    cookie: u64,
    cmds: Sender<Cmd>,
}

impl Link {
    /// The link of a new deputy thread for process `pid`, and that thread's commands.
    fn new(pid: i32) -> (Link, Receiver<Cmd>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (Link { pid, cookie: cookie(), cmds: tx, threads: Default::default(), native: Arc::new(Native::new(pid)) }, rx)
    }

    /// Makes forwarded `call` here, without the deputy, if it is one herdd can make
    /// itself ([`crate::native`]); None: [`Cmd::Call`] it (nothing of it was done).
    pub fn run_here(&self, call: &Call) -> Option<Reply> {
        self.native.run(call)
    }

    /// Queues `cmd` and wakes the thread if it waits on the deputy. A call
    /// goes to the deputy of the thread that made it, if it has one.
    pub fn send(&self, cmd: Cmd) -> bool {
        if let Cmd::Call { tid, .. } | Cmd::GrowThread { tid, .. } | Cmd::Interrupt { tid, .. } | Cmd::Fork { tid, .. } | Cmd::Exec { tid, .. } = &cmd {
            let route = self.threads.lock().expect("thread routes").get(tid).cloned();
            if let Some(t) = route {
                let tid = *tid;
                if t.cmds.send(cmd).is_err() {
                    return false;
                }
                let _ = pidfd::tgsigqueue(self.pid, tid, WAKE_SIGNAL, t.cookie);
                return true;
            }
        }
        if self.cmds.send(cmd).is_err() {
            return false;
        }
        // The thread may be busy, not waiting: then it finds the command
        // before it waits again and the wake-up finds an empty queue.
        let _ = pidfd::tgsigqueue(self.pid, self.pid, WAKE_SIGNAL, self.cookie);
        true
    }

    /// Queues `cmd` for a thread that waits on the channel — parked (after
    /// [`Event::Quiesced`]), or not yet a deputy (capturing, or waiting for
    /// Commit/Abort) — without a wake-up signal, which would otherwise stay
    /// queued in the process (and, for a released process, end it: SIGRTMAX
    /// terminates by default).
    pub fn send_parked(&self, cmd: Cmd) -> bool {
        self.cmds.send(cmd).is_ok()
    }

    /// After [`Event::Quiesced`]: every deputy serves again. The threads' deputies are
    /// told here, before any call of the process's new node can be routed to them: a
    /// deputy still holding still drops the calls it meets (those of the node it left),
    /// so a new call queued ahead of its `Resume` would be lost and its thread would wait
    /// forever. (The main thread's deputy tells them again, which they ignore.)
    pub fn resume(&self) {
        for t in self.threads.lock().expect("thread routes").values() {
            let _ = t.cmds.send(Cmd::Resume);
        }
        let _ = self.cmds.send(Cmd::Resume);
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Thread `tid` (home id) ended on the remote node: its deputy ends it here.
    pub fn end_thread(&self, tid: i32) {
        let route = self.threads.lock().expect("thread routes").remove(&tid);
        if let Some(t) = route {
            if t.cmds.send(Cmd::EndThread).is_ok() {
                let _ = pidfd::tgsigqueue(self.pid, tid, WAKE_SIGNAL, t.cookie);
            }
        }
    }
}

fn cookie() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() | 1
}

/// Starts moving process `pid` away: a thread freezes it and sends its image
/// through `send` (post-copy: [`ToRemote::Lazy`] first, then the image
/// without those pages; then [`ToRemote::ImageEnd`], or
/// [`ToRemote::Cancel`] if it cannot be captured; before ImageEnd,
/// [`ToRemote::Files`] with `dirs`, those shared with the target), reports
/// [`Event::Captured`], and waits for [`Cmd::Commit`] (it becomes the
/// deputy; with post-copy it keeps the memory until [`Cmd::ReleaseMemory`])
/// or [`Cmd::Abort`] (the process runs on). Returns the link at once.
pub fn start(
    pid: i32,
    mode: MoveMode,
    dirs: Vec<String>,
    mut send: impl FnMut(ToRemote) -> bool + Send + 'static,
    events: impl Fn(Event) + Send + Sync + 'static,
) -> Link {
    let (link, rx) = Link::new(pid);
    let (cookie, routes) = (link.cookie, link.threads.clone());
    let events: Arc<dyn Fn(Event) + Send + Sync> = Arc::new(events);
    std::thread::Builder::new()
        .name(format!("deputy-{pid}"))
        .spawn(move || {
            let mut hashes = FileHashes::load();
            let postcopy = mode == MoveMode::PostCopy;
            let fail = |send: &mut dyn FnMut(ToRemote) -> bool, why: String| {
                send(ToRemote::Cancel { reason: why.clone() });
                events(Event::CaptureFailed(why));
            };
            let mut frozen = match Frozen::freeze_for(pid, &mut hashes, Purpose::Migrate { own_filter: false }) {
                Ok(f) => f,
                Err(e) => return fail(&mut send, e.to_string()),
            };
            let herd_checkpoint::LazyPages { runs: lazy, first: stack } = if postcopy { frozen.lazy_runs() } else { Default::default() };
            if postcopy && !send(ToRemote::Lazy(lazy.clone())) {
                return fail(&mut send, "the connection to the other node is gone".into());
            }
            let written = {
                let writer = ChunkWriter::new(|chunk| send(ToRemote::Image(chunk.into())));
                let r = if postcopy { frozen.write_postcopy(writer) } else { frozen.write(writer) };
                r.map_err(|e| e.to_string()).and_then(|(mut w, stats)| std::io::Write::flush(&mut w).map(|()| stats).map_err(|e| e.to_string()))
            };
            let stats = match written {
                Ok(stats) => stats,
                // dropping `frozen` releases the process
                Err(why) => return fail(&mut send, why),
            };
            if !send(ToRemote::Files(crate::direct::files_of(pid, &dirs))) {
                return fail(&mut send, "the connection to the other node is gone".into());
            }
            if !send(ToRemote::ImageEnd) {
                return fail(&mut send, "the connection to the other node is gone".into());
            }
            events(Event::Captured { stats, lazy, stack });
            loop {
                match rx.recv() {
                    Ok(Cmd::Commit) => break,
                    Ok(Cmd::Kill) => {
                        frozen.kill();
                        events(Event::Gone("killed".into()));
                        return;
                    }
                    Ok(Cmd::Abort) | Err(_) => return, // released on drop
                    Ok(_) => continue, // nothing else is meaningful before the commit
                }
            }
            // Memory shared with processes here stays mapped in the deputy.
            let at_home: Vec<(u64, u64)> = herd_checkpoint::HomeRegion::ranges(&frozen.image().vmas);
            let (mut tracee, _mask, mut others) = frozen.into_held();
            let deferred = tracee.take_deferred();
            // Every thread's rseq goes before its memory does.
            let forgotten = if others.is_empty() {
                Ok(())
            } else {
                herd_checkpoint::capture::syscall_gadget(pid)
                    .map_err(|e| KernelError::Unexpected { pid, what: e.to_string() })
                    .and_then(|gadget| others.iter_mut().try_for_each(|t| forget_rseq(t, gadget)))
            };
            let made = forgotten.and_then(|()| Deputy::make(tracee, cookie, postcopy, Team::new(pid, routes, events.clone()), at_home)).and_then(|d| {
                for t in others {
                    let tid = t.pid();
                    d.park(t)?;
                    d.team.adopt(tid)?;
                }
                Ok(d)
            });
            let deputy = match made {
                Ok(d) => d,
                Err(e) => {
                    // The remote copy runs; this one cannot serve it. End it
                    // rather than leave two.
                    let _ = herd_kernel::task::kill(pid, libc::SIGKILL);
                    events(Event::Gone(format!("could not become a deputy: {e}")));
                    return;
                }
            };
            events(Event::Deputy);
            for sig in deferred {
                events(Event::Signal { sig, during_call: false, tid: pid, directed: false });
            }
            deputy.serve(&rx, &*events);
        })
        .expect("spawn a deputy thread");
    link
}

/// Starts the deputy of a child made on a remote node ([`Cmd::Fork`] of its parent's
/// deputy): a thread takes the parked twin over, reports [`Event::Deputy`] (or
/// [`Event::Gone`]) and serves it as any deputy. Returns the link at once.
pub fn adopt_forked(twin: Twin, events: impl Fn(Event) + Send + Sync + 'static) -> Link {
    let pid = twin.pid;
    let (link, rx) = Link::new(pid);
    let (cookie, routes) = (link.cookie, link.threads.clone());
    let events: Arc<dyn Fn(Event) + Send + Sync> = Arc::new(events);
    std::thread::Builder::new()
        .name(format!("deputy-{pid}"))
        .spawn(move || match Deputy::adopt_forked(twin, cookie, Team::new(pid, routes, events.clone())) {
            Ok(d) => {
                events(Event::Deputy);
                d.serve(&rx, &*events);
            }
            Err(e) => {
                let _ = herd_kernel::task::kill(pid, libc::SIGKILL);
                events(Event::Gone(format!("the deputy of a child made away could not take it over: {e}")));
            }
        })
        .expect("spawn a deputy thread");
    link
}

/// Unregisters the rseq area of a held thread (its memory is about to go: the
/// kernel would write there on its way back to user mode), through `gadget` (a
/// `syscall` instruction of the process's vDSO).
fn forget_rseq(t: &mut Tracee, gadget: u64) -> Result<(), KernelError> {
    let Some(c) = t.rseq_config()? else { return Ok(()) };
    let base = t.regs()?;
    Injector::new(t, gadget, base).call_ok(
        "rseq unregister",
        abi::SYS_RSEQ,
        &[c.rseq_abi_pointer, c.rseq_abi_size as u64, abi::RSEQ_FLAG_UNREGISTER, c.signature as u64],
    )?;
    Ok(())
}

/// How long a deputy waits for a new thread's deputy to take its thread over.
const ADOPT_WAIT: Duration = Duration::from_secs(10);

/// How long the main thread's deputy waits for the others to hold still.
const QUIESCE_WAIT: Duration = Duration::from_secs(10);

/// The deputies of a process's other threads: one herdd thread each, reached
/// through the routes of the [`Link`] (calls) and their channels here. Shared by
/// every deputy of the process: a thread made on the remote node joins it from
/// the deputy of the thread that made it.
#[derive(Clone)]
struct Team(Arc<TeamInner>);

struct TeamInner {
    pid: i32,
    /// The main deputy's shell: where threads are parked.
    gadget: AtomicU64,
    routes: Arc<Mutex<HashMap<i32, ThreadLink>>>,
    events: Arc<dyn Fn(Event) + Send + Sync>,
    /// Scratch regions of the members, kept when the process's memory goes.
    kept: Arc<Mutex<Vec<(u64, u64)>>>,
    members: Mutex<Vec<Member>>,
    /// Each member says here (its tid) that it holds still.
    acks: (Sender<i32>, Mutex<Receiver<i32>>),
}

struct Member {
    tid: i32,
    cmds: Sender<Cmd>,
    cookie: u64,
    handle: std::thread::JoinHandle<()>,
}

impl Team {
    fn new(pid: i32, routes: Arc<Mutex<HashMap<i32, ThreadLink>>>, events: Arc<dyn Fn(Event) + Send + Sync>) -> Team {
        let (tx, rx) = std::sync::mpsc::channel();
        Team(Arc::new(TeamInner {
            pid,
            gadget: AtomicU64::new(0),
            routes,
            events,
            kept: Default::default(),
            members: Mutex::new(Vec::new()),
            acks: (tx, Mutex::new(rx)),
        }))
    }

    /// Starts a deputy for thread `tid`, parked (see [`Deputy::park`]). One that
    /// cannot take it over loses its route: the thread's calls then run in the
    /// main thread's deputy.
    fn adopt(&self, tid: i32) -> Result<(), KernelError> {
        let t = &self.0;
        let pid = t.pid;
        let (tx, rx) = std::sync::mpsc::channel();
        let link = ThreadLink { cookie: cookie(), cmds: tx.clone() };
        t.routes.lock().expect("thread routes").insert(tid, link.clone());
        let team = self.clone();
        let cookie = link.cookie;
        // The new deputy says when it has the thread and its scratch (which must be
        // in `kept` before the main deputy may release the process's memory).
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let handle = std::thread::Builder::new()
            .name(format!("deputy-{pid}-{tid}"))
            .spawn(move || {
                let qtx = team.0.acks.0.clone();
                let events = team.0.events.clone();
                let adopted = Deputy::adopt_thread(pid, tid, cookie, team.clone());
                if let Err(e) = &adopted {
                    team.0.routes.lock().expect("thread routes").remove(&tid);
                    let _ = qtx.send(tid);
                    tracing::warn!(pid, tid, "the deputy of a thread could not take it over ({e}); its calls run in the main thread's deputy");
                }
                let _ = ready_tx.send(());
                if let Ok(d) = adopted {
                    d.serve_thread(&rx, &*events, &qtx);
                }
            })
            .map_err(|e| KernelError::Unexpected { pid, what: format!("starting a thread's deputy: {e}") })?;
        t.members.lock().expect("team").push(Member { tid, cmds: tx, cookie, handle });
        if ready_rx.recv_timeout(ADOPT_WAIT).is_err() {
            tracing::warn!(pid, tid, "the deputy of a thread is slow to take it over");
        }
        Ok(())
    }

    /// Makes every member hold still (its call in progress finished or
    /// abandoned), and waits until they do.
    fn quiesce(&self) {
        let t = &self.0;
        let acks = t.acks.1.lock().expect("acks");
        while acks.try_recv().is_ok() {}
        let mut waiting: Vec<i32> = Vec::new();
        for m in t.members.lock().expect("team").iter().filter(|m| !m.handle.is_finished()) {
            if m.cmds.send(Cmd::Quiesce).is_ok() {
                let _ = pidfd::tgsigqueue(t.pid, m.tid, WAKE_SIGNAL, m.cookie);
                waiting.push(m.tid);
            }
        }
        let deadline = Instant::now() + QUIESCE_WAIT;
        while !waiting.is_empty() {
            match acks.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(tid) => waiting.retain(|w| *w != tid),
                Err(_) => {
                    tracing::warn!(pid = t.pid, ?waiting, "threads' deputies did not hold still in time");
                    return;
                }
            }
        }
    }

    /// After [`Team::quiesce`]: serve again.
    fn resume(&self) {
        for m in self.0.members.lock().expect("team").iter() {
            let _ = m.cmds.send(Cmd::Resume);
        }
    }

    /// After [`Team::quiesce`]: every member's thread ends, and the member with it.
    fn end_threads(&self) {
        self.0.routes.lock().expect("thread routes").clear();
        let members = std::mem::take(&mut *self.0.members.lock().expect("team"));
        for m in members {
            let _ = m.cmds.send(Cmd::EndThread);
            let _ = m.handle.join();
        }
    }
}

struct Deputy {
    tracee: Tracee,
    /// The process.
    pid: i32,
    /// The thread this deputy is (the main one: `pid`).
    tid: i32,
    cookie: u64,
    /// `syscall; int3` at `gadget`; scratch for call buffers after it.
    gadget: u64,
    scratch: (u64, u64),
    /// A larger scratch region, mapped when a call needs more.
    big: Option<(u64, u64)>,
    hashes: FileHashes,
    /// Commands taken from the channel while a call was being served.
    pending: std::collections::VecDeque<Cmd>,
    /// The deputies of the process's threads.
    team: Team,
    /// Made a thread already (PTRACE_O_TRACECLONE is set).
    traces_clones: bool,
    /// The process's memory shared with processes here, which stays mapped (address,
    /// length): its placeholders away bring it home when touched.
    at_home: Vec<(u64, u64)>,
}

/// Why a wait on the deputy ended.
enum Woken {
    /// Our wake-up: look at the commands.
    Wake,
    /// The deputy has ended.
    Died,
}

impl Deputy {
    /// Turns the stopped original process into a deputy: unregisters rseq,
    /// maps the shell, resets every signal action to the default, unmaps
    /// everything else (unless `keep_memory`: post-copy still reads it) but the
    /// memory kept at home (`at_home`), and unblocks every signal.
    fn make(mut tracee: Tracee, cookie: u64, keep_memory: bool, team: Team, at_home: Vec<(u64, u64)>) -> Result<Deputy, KernelError> {
        let pid = tracee.pid();
        let unexpected = |what: &str| KernelError::Unexpected { pid, what: what.into() };
        let gadget = herd_checkpoint::capture::syscall_gadget(pid).map_err(|e| unexpected(&e.to_string()))?;
        forget_rseq(&mut tracee, gadget)?;
        let base = tracee.regs()?;
        let mut inj = Injector::new(&mut tracee, gadget, base);
        let taken = mapped_ranges(pid).map_err(|e| unexpected(&e.to_string()))?;
        let shell = free_area(&taken, SHELL_LEN).ok_or_else(|| unexpected("no room for the deputy's shell"))?;
        let rwx = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
        inj.call_ok("mmap the deputy's shell", abi::SYS_MMAP, &[shell, SHELL_LEN, rwx, anon, u64::MAX, 0])?;
        mem::write(pid, shell, &[0x0f, 0x05, 0xcc])?;
        let mut d = Deputy {
            tracee,
            pid,
            tid: pid,
            cookie,
            gadget: shell,
            scratch: (shell + PAGE, SHELL_LEN - PAGE),
            big: None,
            hashes: FileHashes::load(),
            pending: Default::default(),
            team,
            traces_clones: false,
            at_home,
        };
        d.team.0.gadget.store(shell, Ordering::SeqCst);
        d.empty(!keep_memory)?;
        Ok(d)
    }

    /// From the shell a failed homecoming left: a deputy again.
    fn remake(&mut self, shell: (u64, u64)) -> Result<(), KernelError> {
        self.gadget = shell.0;
        self.team.0.gadget.store(shell.0, Ordering::SeqCst);
        self.scratch = (shell.0 + PAGE, shell.1 - PAGE);
        self.big = None;
        self.empty(true)
    }

    /// Default signal actions, nothing mapped but the shell and the memory kept at
    /// home (with `unmap`), nothing blocked.
    fn empty(&mut self, unmap: bool) -> Result<(), KernelError> {
        let (gadget, scratch) = (self.gadget, self.scratch.0);
        let pid = self.pid;
        let base = self.tracee.regs()?;
        let mut inj = Injector::new(&mut self.tracee, gadget, base);
        inj.set_stack(gadget + SHELL_LEN - 64);
        mem::write(pid, scratch, abi::as_bytes(&KernelSigaction::default()))?;
        for sig in 1..=64u64 {
            if sig != libc::SIGKILL as u64 && sig != libc::SIGSTOP as u64 {
                inj.call_ok("rt_sigaction", abi::SYS_RT_SIGACTION, &[sig, scratch, 0, 8])?;
            }
        }
        if unmap {
            let keep: Vec<(u64, u64)> = std::iter::once((gadget, SHELL_LEN)).chain(self.at_home.iter().copied()).collect();
            unmap_all_but(&mut inj, &keep)?;
        }
        self.tracee.set_sigmask(0)?;
        Ok(())
    }

    /// After post-copy: the memory kept for the target goes (but the shell, the
    /// scratch of the threads' deputies and the memory kept at home).
    fn release_memory(&mut self) -> Result<(), KernelError> {
        let gadget = self.gadget;
        self.big = None;
        // Held until the unmapping is done: a thread's deputy growing its scratch meanwhile
        // waits (see `grow`).
        let kept = self.team.0.kept.clone();
        let regions = kept.lock().expect("kept regions");
        let mut keep = regions.clone();
        keep.push((gadget, SHELL_LEN));
        keep.extend(self.at_home.iter().copied());
        let mut inj = self.injector()?;
        unmap_all_but(&mut inj, &keep)
    }

    fn injector(&mut self) -> Result<Injector<'_>, KernelError> {
        let base = self.tracee.regs()?;
        let mut inj = Injector::new(&mut self.tracee, self.gadget, base);
        inj.set_stack(self.gadget + SHELL_LEN - 64);
        Ok(inj)
    }

    /// Whether the signal this stop is about is our wake-up.
    fn is_wake(&self, sig: i32) -> bool {
        if sig != WAKE_SIGNAL {
            return false;
        }
        match self.tracee.siginfo() {
            Ok(info) => {
                let (code, from, value) = pidfd::siginfo_queue_value(&info);
                code == libc::SI_QUEUE && from == std::process::id() as i32 && value == self.cookie
            }
            Err(_) => false,
        }
    }

    /// A signal for the process arrived at the deputy (which is in a
    /// signal-delivery-stop): hand it on. Stop signals also stop the deputy
    /// until it is continued, as a stopped job.
    fn on_signal(&mut self, sig: i32, during_call: bool, events: &dyn Fn(Event)) -> Result<Option<Woken>, KernelError> {
        if self.is_wake(sig) {
            return Ok(Some(Woken::Wake));
        }
        // Sent to this thread (tkill/tgkill), or to the process.
        let directed = self.tracee.siginfo().is_ok_and(|info| pidfd::siginfo_queue_value(&info).0 == libc::SI_TKILL);
        tracing::debug!(pid = self.pid, tid = self.tid, sig, during_call, directed, "signal for the process");
        events(Event::Signal { sig, during_call, tid: self.tid, directed });
        if [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&sig) {
            let mut stop = self.tracee.deliver(sig)?;
            while let Stop::Event { sig: s } = stop {
                if s == 0 || s == libc::SIGTRAP {
                    break;
                }
                // Stopped as a job: stay so until SIGCONT (or SIGKILL).
                stop = self.tracee.listen()?;
            }
            if let Stop::Signal { sig: s } = stop {
                return self.on_signal(s, false, events);
            }
        }
        Ok(None)
    }

    /// Waits, idle, until a command may be waiting or the deputy ends.
    fn idle(&mut self, events: &dyn Fn(Event)) -> Woken {
        loop {
            let outcome = match self.injector() {
                Ok(mut inj) => inj.wait_in(abi::SYS_PAUSE, &[]),
                Err(e) => Err(e),
            };
            let r = match outcome {
                Ok(Outcome::Signal { sig }) => self.on_signal(sig, false, events),
                Ok(Outcome::Interrupted { .. }) | Ok(Outcome::Done(_)) => Ok(None),
                Err(e) => Err(e),
            };
            match r {
                Ok(Some(w)) => return w,
                Ok(None) => continue,
                Err(KernelError::Died { .. }) => return Woken::Died,
                Err(e) => {
                    tracing::error!(pid = self.pid, "deputy: {e}; ending it");
                    let _ = herd_kernel::task::kill(self.pid, libc::SIGKILL);
                    return Woken::Died;
                }
            }
        }
    }

    /// The next command: one taken aside while a call was served, or the channel's.
    fn next_cmd(&mut self, cmds: &Receiver<Cmd>) -> Result<Cmd, std::sync::mpsc::TryRecvError> {
        match self.pending.pop_front() {
            Some(c) => Ok(c),
            None => cmds.try_recv(),
        }
    }

    /// Serves commands until the process ends or comes home.
    fn serve(mut self, cmds: &Receiver<Cmd>, events: &dyn Fn(Event)) {
        loop {
            let cmd = match self.next_cmd(cmds) {
                Ok(c) => c,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    // herdd no longer holds this process: nothing can serve it.
                    self.tracee.kill();
                    return;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => match self.idle(events) {
                    Woken::Wake => continue,
                    Woken::Died => return events(Event::Gone("ended at home".into())),
                },
            };
            match cmd {
                Cmd::Call { seq, call, .. } => {
                    if let Err(Woken::Died) = self.call(seq, &call, cmds, events) {
                        return events(Event::Gone("ended at home".into()));
                    }
                }
                Cmd::Quiesce => {
                    self.team.quiesce();
                    events(Event::Quiesced);
                    // Calls still in flight are dropped: the capture interrupts
                    // them in the process, which makes them again.
                    let next = loop {
                        let next = match self.pending.pop_front() {
                            Some(c) => Ok(c),
                            None => cmds.recv(),
                        };
                        // A child given up meanwhile is undone here too (the move goes on).
                        if let Ok(Cmd::Unfork { pid }) = next {
                            if let Err(KernelError::Died { .. }) = self.unfork(pid, events) {
                                return events(Event::Gone("ended at home".into()));
                            }
                            continue;
                        }
                        // And an exec made before the capture: the image is the new program's.
                        if let Ok(Cmd::Exec { seq, .. }) = next {
                            if let Err(KernelError::Died { .. }) = self.close_on_exec(seq, events) {
                                return events(Event::Gone("ended at home".into()));
                            }
                            continue;
                        }
                        if !matches!(next, Ok(Cmd::Call { .. }) | Ok(Cmd::Quiesce)) {
                            break next;
                        }
                    };
                    match next {
                        Ok(Cmd::ComeHome(reader, lazy)) => {
                            // The other threads are made again by the restore.
                            self.team.end_threads();
                            match self.come_home(reader, lazy, events) {
                                Some(d) => self = d,
                                None => return,
                            }
                        }
                        // The threads' deputies wait on the process again first: the
                        // main thread is reported dead only once they have seen theirs end.
                        Ok(Cmd::Kill) | Err(_) => {
                            self.team.resume();
                            self.tracee.kill();
                            return events(Event::Gone("killed".into()));
                        }
                        Ok(Cmd::Exit(how)) => {
                            self.team.resume();
                            return self.exit(how, events);
                        }
                        Ok(_) => self.team.resume(), // Resume, or anything else: serve again
                    }
                }
                Cmd::Exit(how) => return self.exit(how, events),
                Cmd::Kill => {
                    self.tracee.kill();
                    return events(Event::Gone("killed".into()));
                }
                Cmd::ReleaseMemory => match self.release_memory() {
                    Ok(()) => tracing::debug!(pid = self.pid, "post-copy over: the deputy's memory is released"),
                    Err(KernelError::Died { .. }) => return events(Event::Gone("ended at home".into())),
                    Err(e) => tracing::warn!(pid = self.pid, "releasing the deputy's memory: {e}"),
                },
                Cmd::GrowThread { seq, .. } => self.grow_thread(seq, events),
                Cmd::Fork { seq, nproc, .. } => self.fork(seq, nproc, events),
                Cmd::Unfork { pid } => {
                    if let Err(KernelError::Died { .. }) = self.unfork(pid, events) {
                        return events(Event::Gone("ended at home".into()));
                    }
                }
                Cmd::Exec { seq, .. } => {
                    if let Err(KernelError::Died { .. }) = self.close_on_exec(seq, events) {
                        return events(Event::Gone("ended at home".into()));
                    }
                }
                // An interrupt that came after its call ended: nothing to end.
                Cmd::Commit | Cmd::Abort | Cmd::Resume | Cmd::ComeHome(..) | Cmd::EndThread | Cmd::Interrupt { .. } => {}
            }
        }
    }

    /// Ends the thread this deputy is (an injected `exit`: the process goes on).
    fn end_own_thread(mut self) {
        let r = self.injector().and_then(|mut inj| inj.call(abi::SYS_EXIT, &[0]));
        if !matches!(r, Err(KernelError::Died { .. })) {
            tracing::warn!(pid = self.pid, tid = self.tid, "ending a deputy's thread: {r:?}");
        }
    }

    /// Makes a twin here of a thread the process made on the remote node: a
    /// clone3 injected in this deputy's thread (the one that made it there),
    /// attached as it is made, parked, and given a deputy of its own. Reports its
    /// id ([`Event::ThreadBorn`]; negative if it could not be made).
    fn grow_thread(&mut self, seq: u64, events: &dyn Fn(Event)) {
        let made = (|| -> Result<i32, KernelError> {
            if !self.traces_clones {
                self.tracee.set_options(abi::PTRACE_O_TRACECLONE)?;
                self.traces_clones = true;
            }
            let args = abi::CloneArgs { flags: abi::CLONE_THREAD_FLAGS, ..Default::default() };
            let at = self.scratch.0;
            mem::write(self.pid, at, abi::as_bytes(&args))?;
            let size = std::mem::size_of::<abi::CloneArgs>() as u64;
            let (r, t) = self.injector()?.call_clone(abi::SYS_CLONE3, &[at, size])?;
            let mut t = match (r, t) {
                (r, Some(t)) if r > 0 => t,
                (r, _) => return Err(KernelError::Unexpected { pid: self.pid, what: format!("clone3 of a thread's twin: {r}") }),
            };
            // It starts with this thread's mask (nothing blocked): block everything
            // until its own deputy has it.
            t.set_sigmask(!0)?;
            self.park(t)?;
            self.team.adopt(r as i32)?;
            Ok(r as i32)
        })();
        let tid = match made {
            Ok(tid) => tid,
            Err(e) => {
                tracing::warn!(pid = self.pid, tid = self.tid, "a thread's twin could not be made at home: {e}");
                -1
            }
        };
        events(Event::ThreadBorn { seq, tid });
    }

    /// Makes the deputy of a child the process made on the remote node: a fork injected
    /// in this deputy's thread (the one that forked there), so that the child's pid,
    /// parent, descriptors, working directory and limits are those a fork at home gives
    /// (and `ulimit -u` refuses it as at home: EAGAIN). Attached as it is made, every
    /// signal blocked, parked asleep at its copy of the shell for its own deputy
    /// ([`adopt_forked`]); reported as [`Event::Forked`].
    fn fork(&mut self, seq: u64, nproc: (u64, u64), events: &dyn Fn(Event)) {
        let made = (|| -> Result<Result<Twin, i32>, KernelError> {
            self.limit_processes(nproc)?;
            self.tracee.set_options(abi::PTRACE_O_TRACECLONE | abi::PTRACE_O_TRACEFORK)?;
            self.traces_clones = true;
            let mut tries = 0;
            let (r, t) = loop {
                let (r, t) = self.injector()?.call_clone(abi::SYS_CLONE, &[libc::SIGCHLD as u64, 0, 0, 0, 0])?;
                self.hand_on_deferred(events);
                // A signal came first (a child's SIGCHLD): the kernel makes such a fork
                // again (-ERESTARTNOINTR) once the signal is taken: handed on, then again.
                if t.is_some() || r != -abi::ERESTARTNOINTR || tries >= 100 {
                    break (r, t);
                }
                tries += 1;
                self.hand_on_pending(events)?;
            };
            let mut t = match (r, t) {
                (r, Some(t)) if r > 0 => t,
                // (Still a signal first after a hundred tries: short of a better answer.)
                (r, _) if r == -abi::ERESTARTNOINTR => return Ok(Err(libc::EAGAIN)),
                (r, _) if r < 0 => return Ok(Err(-r as i32)),
                (r, _) => return Err(KernelError::Unexpected { pid: self.pid, what: format!("fork of a deputy: {r}") }),
            };
            t.set_sigmask(!0)?;
            self.park(t)?;
            Ok(Ok(Twin { pid: r as i32, shell: self.gadget, at_home: self.at_home.clone() }))
        })();
        let result = match made {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(pid = self.pid, tid = self.tid, "a child's deputy could not be made at home: {e}");
                Err(libc::EAGAIN)
            }
        };
        events(Event::Forked { seq, result });
    }

    /// Sets the deputy's RLIMIT_NPROC to the process's (`nproc`: soft, hard) if it differs
    /// (set by the process itself, a prlimit64 injected: herdd setting another user's
    /// limit needs CAP_SYS_RESOURCE).
    fn limit_processes(&mut self, nproc: (u64, u64)) -> Result<(), KernelError> {
        if crate::fork::nproc_limit(self.pid) == Some(nproc) {
            return Ok(());
        }
        let lim = libc::rlimit { rlim_cur: nproc.0, rlim_max: nproc.1 };
        let at = self.scratch.0;
        mem::write(self.pid, at, abi::as_bytes(&lim))?;
        let r = self.injector()?.call(abi::SYS_PRLIMIT64, &[0, libc::RLIMIT_NPROC as u64, at, 0])?;
        if r < 0 {
            tracing::debug!(pid = self.pid, "the deputy cannot take the process's RLIMIT_NPROC {nproc:?}: {r}");
        }
        Ok(())
    }

    /// The process exec'd away ([`Cmd::Exec`]): the descriptors marked close-on-exec
    /// (/proc/PID/fdinfo's flags) are closed here by injected `close`s, then call `seq` is
    /// answered (its result: how many were closed).
    /// The node holds the new program until the answer: it is answered whatever happens
    /// (-EIO when the closes could not all be made), unless the deputy died.
    fn close_on_exec(&mut self, seq: u64, events: &dyn Fn(Event)) -> Result<(), KernelError> {
        let mut closed = 0;
        let mut made = Ok(());
        for fd in cloexec_fds(self.pid) {
            match self.injector().and_then(|mut inj| inj.call(abi::SYS_CLOSE, &[fd as u64])) {
                Ok(0) => closed += 1,
                Ok(_) => {}
                Err(e) => {
                    made = Err(e);
                    break;
                }
            }
        }
        self.hand_on_deferred(events);
        let ret = match made {
            Ok(()) => closed,
            Err(e @ KernelError::Died { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(pid = self.pid, "closing its close-on-exec files (exec'd away): {e}");
                -(libc::EIO as i64)
            }
        };
        tracing::debug!(pid = self.pid, closed, "closed its close-on-exec files (exec'd away)");
        events(Event::Reply { seq, reply: Reply { ret, outs: Vec::new() } });
        Ok(())
    }

    /// Signals that came while an injected call ran (kept aside by it), handed on.
    fn hand_on_deferred(&mut self, events: &dyn Fn(Event)) {
        for sig in self.tracee.take_deferred().into_iter().filter(|s| *s != WAKE_SIGNAL) {
            events(Event::Signal { sig, during_call: false, tid: self.tid, directed: false });
        }
    }

    /// Takes the signals pending for the deputy (each at a signal-delivery-stop before an
    /// injected getpid) and hands them on; our wake-ups are passed over.
    fn hand_on_pending(&mut self, events: &dyn Fn(Event)) -> Result<(), KernelError> {
        for _ in 0..64 {
            match self.injector()?.call_interruptible(abi::SYS_GETPID, &[])? {
                Outcome::Signal { sig } => {
                    self.on_signal(sig, false, events)?;
                }
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// Whether the signal this stop is about was sent by process `pid` (its SIGCHLD: the
    /// kernel's, with the child's pid as sender).
    fn signal_from(&self, pid: i32) -> bool {
        self.tracee.siginfo().is_ok_and(|info| pidfd::siginfo_queue_value(&info).1 == pid)
    }

    /// Ends child `pid` made by [`Deputy::fork`] and reaps it here (a wait4 injected),
    /// passing over the SIGCHLD of its end: the process never hears of it.
    fn unfork(&mut self, pid: i32, events: &dyn Fn(Event)) -> Result<(), KernelError> {
        let _ = herd_kernel::task::kill(pid, libc::SIGKILL);
        let mut swallowed = false;
        for _ in 0..1024 {
            match self.injector()?.call_interruptible(abi::SYS_WAIT4, &[pid as u64, 0, libc::__WALL as u64, 0])? {
                Outcome::Done(r) => {
                    tracing::debug!(pid = self.pid, child = pid, "a child given up: reaped ({r})");
                    return Ok(());
                }
                Outcome::Signal { sig } if sig == libc::SIGCHLD && !swallowed && self.signal_from(pid) => swallowed = true,
                Outcome::Signal { sig } => {
                    self.on_signal(sig, false, events)?;
                }
                Outcome::Interrupted { .. } => {}
            }
        }
        Err(KernelError::Unexpected { pid: self.pid, what: format!("child {pid} given up could not be reaped") })
    }

    /// A thread's deputy serves the calls its thread makes, and hands on the
    /// signals sent to it, until the process ends or comes home.
    fn serve_thread(mut self, cmds: &Receiver<Cmd>, events: &dyn Fn(Event), quiesced: &Sender<i32>) {
        loop {
            let cmd = match self.next_cmd(cmds) {
                Ok(c) => c,
                // The main thread's deputy is gone: the process ends with it.
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                Err(std::sync::mpsc::TryRecvError::Empty) => match self.idle(events) {
                    Woken::Wake => continue,
                    Woken::Died => return,
                },
            };
            match cmd {
                Cmd::Call { seq, call, .. } => {
                    if let Err(Woken::Died) = self.call(seq, &call, cmds, events) {
                        return;
                    }
                }
                Cmd::GrowThread { seq, .. } => self.grow_thread(seq, events),
                Cmd::Fork { seq, nproc, .. } => self.fork(seq, nproc, events),
                Cmd::Exec { seq, .. } => {
                    if let Err(KernelError::Died { .. }) = self.close_on_exec(seq, events) {
                        return;
                    }
                }
                // Its twin ended on the remote node.
                Cmd::EndThread => return self.end_own_thread(),
                Cmd::Quiesce => {
                    let _ = quiesced.send(self.tid);
                    loop {
                        let next = match self.pending.pop_front() {
                            Some(c) => Ok(c),
                            None => cmds.recv(),
                        };
                        match next {
                            Ok(Cmd::Resume) => break,
                            Ok(Cmd::EndThread) => return self.end_own_thread(),
                            Err(_) => return,
                            Ok(_) => {} // calls in flight are dropped, as by the main thread's deputy
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Takes the [`Cmd::Interrupt`] for call `seq` out of the queue, if one came.
    fn take_interrupt(&mut self, seq: u64) -> bool {
        match self.pending.iter().position(|c| matches!(c, Cmd::Interrupt { seq: s, .. } if *s == seq)) {
            Some(at) => {
                self.pending.remove(at);
                true
            }
            None => false,
        }
    }

    /// Runs one forwarded call. A signal that interrupts it is handed on and
    /// the call abandoned; our own wake-up abandons it only if a command that
    /// needs the deputy is waiting (otherwise the call is simply run again).
    fn call(&mut self, seq: u64, call: &Call, cmds: &Receiver<Cmd>, events: &dyn Fn(Event)) -> Result<(), Woken> {
        // Interrupted before it began (see `Cmd::Interrupt`).
        self.pending.extend(cmds.try_iter());
        if self.take_interrupt(seq) {
            events(Event::Reply { seq, reply: Reply { ret: -(libc::EINTR as i64), outs: Vec::new() } });
            return Ok(());
        }
        loop {
            let mut interrupted = None;
            let mut died = false;
            let (scratch, len) = self.big.unwrap_or(self.scratch);
            let pid = self.pid;
            let result = {
                let mut inj = match self.injector() {
                    Ok(i) => i,
                    Err(_) => return Err(Woken::Died),
                };
                let mem = ProcMemory { pid };
                let masked_epoll = syscalls::is_masked_epoll_wait(call.nr, &call.args);
                // A call that never waits is not cut by a signal (as at home: it completes
                // and the signal follows; handed on after the answer, below).
                let whole = syscalls::never_waits(call.nr, &call.args);
                let run = |inj: &mut Injector, nr: i64, args: &[u64]| if whole { inj.call(nr as u64, args).map(Outcome::Done) } else { inj.call_interruptible(nr as u64, args) };
                syscalls::execute(call, scratch, len, &mem, &mut |nr, args| match run(&mut inj, nr, &args) {
                    // An epoll wait with a mask of its own ends with EINTR (no restart
                    // code) when a signal its mask lets in comes: that signal, about to be
                    // delivered, is reported as cutting the call rather than after its
                    // answer, so that the wait is ended on the process's node with the
                    // handler run there (under the wait's mask), as at home. (A plain
                    // epoll_wait keeps EINTR then the signal: cut, it would be restarted
                    // on the node after a SA_RESTART handler.)
                    Ok(Outcome::Done(r)) if r == -(libc::EINTR as i64) && masked_epoll => match inj.signal_after_eintr() {
                        Ok(Some(sig)) => {
                            interrupted = Some(sig);
                            Err(io::Error::from_raw_os_error(libc::EINTR))
                        }
                        Ok(None) => Ok(r),
                        Err(e) => {
                            died = matches!(e, KernelError::Died { .. });
                            Err(io::Error::other(e.to_string()))
                        }
                    },
                    Ok(Outcome::Done(r)) => Ok(r),
                    Ok(Outcome::Signal { sig }) => {
                        interrupted = Some(sig);
                        Err(io::Error::from_raw_os_error(libc::EINTR))
                    }
                    Ok(Outcome::Interrupted { .. }) => {
                        interrupted = Some(0);
                        Err(io::Error::from_raw_os_error(libc::EINTR))
                    }
                    Err(e) => {
                        died = matches!(e, KernelError::Died { .. });
                        Err(io::Error::other(e.to_string()))
                    }
                })
            };
            if died {
                return Err(Woken::Died);
            }
            if let Some(sig) = interrupted {
                let woken = if sig == 0 { None } else { self.on_signal(sig, true, events).map_err(|_| Woken::Died)? };
                if let Some(Woken::Wake) = woken {
                    self.pending.extend(cmds.try_iter());
                }
                let abandon = self.pending.iter().any(|c| matches!(c, Cmd::Quiesce | Cmd::Exit(_) | Cmd::Kill));
                // Ended with EINTR for the guest, which ends the wait there.
                if self.take_interrupt(seq) && !abandon {
                    events(Event::Reply { seq, reply: Reply { ret: -(libc::EINTR as i64), outs: Vec::new() } });
                    return Ok(());
                }
                match woken {
                    Some(Woken::Wake) if !abandon => continue, // nothing needs the deputy: run it again
                    Some(Woken::Wake) | Some(Woken::Died) => return Ok(()), // abandoned for the command
                    None if sig == 0 => continue,
                    None => return Ok(()), // handed on with during_call
                }
            }
            match result {
                Ok(reply) => {
                    events(Event::Reply { seq, reply });
                    // Signals that came while a call that never waits ran: after its answer.
                    self.hand_on_deferred(events);
                }
                Err(MarshalError::TooBig { need }) => {
                    if self.grow(need).is_err() {
                        events(Event::Reply { seq, reply: Reply { ret: -(libc::ENOMEM as i64), outs: Vec::new() } });
                    } else {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(pid = self.pid, "forwarded call {}: {e}", call.nr);
                    events(Event::Reply { seq, reply: Reply { ret: -(libc::EFAULT as i64), outs: Vec::new() } });
                }
            }
            return Ok(());
        }
    }

    /// Maps a larger scratch region of at least `need` bytes.
    fn grow(&mut self, need: u64) -> Result<(), KernelError> {
        let len = need.max(1 << 20).next_power_of_two();
        if len > 64 << 20 {
            return Err(KernelError::Unexpected { pid: self.pid, what: format!("a call needs {need} bytes of buffers") });
        }
        let old = self.big.take();
        let kept = self.team.0.kept.clone();
        // Held while the scratch changes: the main deputy releasing the process's memory
        // after a post-copy unmaps all but the kept regions under this lock, and must not
        // unmap a thread's new scratch mapped meanwhile (its call then failed with EFAULT:
        // node.js aborted in epoll_pwait right after a post-copy move).
        let mut regions = kept.lock().expect("kept regions");
        let mut inj = self.injector()?;
        if let Some((a, l)) = old {
            regions.retain(|r| *r != (a, l));
            inj.call_ok("munmap scratch", abi::SYS_MUNMAP, &[a, l])?;
        }
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let at = inj.call_ok("mmap scratch", abi::SYS_MMAP, &[0, len, rw, anon, u64::MAX, 0])? as u64;
        self.big = Some((at, len));
        if self.tid != self.pid {
            regions.push((at, len));
        }
        Ok(())
    }

    /// Parks a thread of the process, held after the capture with every signal
    /// blocked, asleep in `pause()` at this (the main) deputy's shell, and lets
    /// it go: a herdd thread of its own takes it over ([`Deputy::adopt_thread`]:
    /// ptrace requests belong to the tracing thread). With every signal blocked,
    /// nothing wakes it in between.
    fn park(&self, mut t: Tracee) -> Result<(), KernelError> {
        t.resume_until_event()?;
        let mut regs = t.regs()?;
        regs.rax = abi::SYS_PAUSE;
        regs.orig_rax = u64::MAX;
        regs.rip = self.gadget;
        regs.rsp = self.gadget + SHELL_LEN - 64;
        t.set_regs(&regs)?;
        // Signals that arrived while it was held are sent again (to the process)
        // by the detach, and handed on from there.
        t.detach()
    }

    /// The deputy of thread `tid` of process `pid`, parked by [`Deputy::park`]:
    /// seized by the calling thread, with scratch of its own for call buffers
    /// (calls of different threads run at once), nothing blocked.
    fn adopt_thread(pid: i32, tid: i32, cookie: u64, team: Team) -> Result<Deputy, KernelError> {
        let gadget = team.0.gadget.load(Ordering::SeqCst);
        let tracee = Tracee::seize(tid, 0)?;
        let mut d = Deputy {
            tracee,
            pid,
            tid,
            cookie,
            gadget,
            scratch: (0, 0),
            big: None,
            hashes: FileHashes::ephemeral(),
            pending: Default::default(),
            team,
            traces_clones: false,
            at_home: Vec::new(),
        };
        let len = SHELL_LEN - PAGE;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let at = d.injector()?.call_ok("mmap a thread's scratch", abi::SYS_MMAP, &[0, len, rw, anon, u64::MAX, 0])? as u64;
        d.scratch = (at, len);
        d.team.0.kept.lock().expect("kept regions").push(d.scratch);
        d.tracee.set_sigmask(0)?;
        Ok(d)
    }

    /// The deputy of a child made by [`Deputy::fork`]: seized by the calling thread, its
    /// copy of the shell as its own, nothing blocked.
    fn adopt_forked(twin: Twin, cookie: u64, team: Team) -> Result<Deputy, KernelError> {
        let tracee = Tracee::seize(twin.pid, 0)?;
        let mut d = Deputy {
            tracee,
            pid: twin.pid,
            tid: twin.pid,
            cookie,
            gadget: twin.shell,
            scratch: (twin.shell + PAGE, SHELL_LEN - PAGE),
            big: None,
            hashes: FileHashes::load(),
            pending: Default::default(),
            team,
            traces_clones: false,
            at_home: twin.at_home,
        };
        d.team.0.gadget.store(twin.shell, Ordering::SeqCst);
        d.tracee.set_sigmask(0)?;
        Ok(d)
    }

    /// Restores the image arriving on `reader` into the deputy and lets the
    /// process run at home. Returns the deputy if that failed and it is a
    /// deputy again.
    fn come_home(mut self, reader: ChunkReader, lazy: Option<LazyHome>, events: &dyn Fn(Event)) -> Option<Deputy> {
        let gadget = self.gadget;
        let for_later = self.drain_signals();
        // The failpoint: as if the image could not be taken in before anything changed.
        let restored = if crate::failpoint::fires("home-restore") {
            let error = herd_checkpoint::CheckpointError::Io { what: "failpoint home-restore".into(), source: std::io::Error::other("injected") };
            Err(IntoFailed { error, shell: None, untouched: true })
        } else {
            // Post-copy: the runs come first on the stream, before the image.
            let runs = lazy.as_ref().map(|l| l.runs.recv().map_err(|_| "the stream ended before the image".to_string()));
            match runs {
                Some(Err(why)) => {
                    let error = herd_checkpoint::CheckpointError::Io { what: why, source: std::io::Error::other("no post-copy runs") };
                    Err(IntoFailed { error, shell: None, untouched: true })
                }
                Some(Ok(runs)) => {
                    let dev = lazy.as_ref().map(|l| l.device.as_fd()).expect("post-copy");
                    restore_into(&mut self.tracee, gadget, reader, &mut self.hashes, Some((&runs, dev)))
                }
                None => restore_into(&mut self.tracee, gadget, reader, &mut self.hashes, None),
            }
        };
        match restored {
            Ok(herd_checkpoint::restore::IntoDone { stats, warnings, uffd }) => {
                self.hashes.save();
                // Our wake-ups must not reach the process; real signals must.
                let deferred = self.tracee.take_deferred();
                tracing::debug!(pid = self.pid, ?deferred, ?for_later, "home again");
                for sig in deferred.into_iter().chain(for_later).filter(|s| *s != WAKE_SIGNAL) {
                    let _ = herd_kernel::task::kill(self.pid, sig);
                }
                // Detaching lets it run; signals that arrived meanwhile are re-sent.
                if let Err(e) = self.tracee.detach() {
                    tracing::error!(pid = self.pid, "releasing the process at home: {e}");
                }
                events(Event::Home { stats, warnings, uffd });
                None
            }
            // Nothing was changed (say, the process ended where it ran before its image
            // came): still the deputy, which ends as the process did.
            Err(IntoFailed { error, untouched: true, .. }) => {
                for sig in for_later {
                    let _ = herd_kernel::task::kill(self.pid, sig);
                }
                events(Event::HomeFailed(error.to_string()));
                Some(self)
            }
            Err(IntoFailed { error, shell, .. }) => {
                let remade = match shell {
                    Some(s) => self.remake(s).map_err(|e| e.to_string()),
                    None => Err("the deputy's memory could not be recovered".to_string()),
                };
                match remade {
                    Ok(()) => {
                        events(Event::HomeFailed(error.to_string()));
                        Some(self)
                    }
                    Err(why) => {
                        tracing::error!(pid = self.pid, "bringing the process home failed ({error}) and {why}; ending it");
                        self.tracee.kill();
                        events(Event::Gone(format!("bringing it home failed: {error}")));
                        None
                    }
                }
            }
        }
    }

    /// Takes every signal queued for the deputy (each shows at a
    /// signal-delivery-stop before an injected call, and is suppressed there):
    /// our wake-ups are dropped, the others returned, to be sent again once
    /// the process runs at home.
    fn drain_signals(&mut self) -> Vec<i32> {
        let mut other = Vec::new();
        for _ in 0..1024 {
            let outcome = match self.injector() {
                Ok(mut inj) => inj.call_interruptible(abi::SYS_GETPID, &[]),
                Err(_) => break,
            };
            match outcome {
                Ok(Outcome::Signal { sig }) if sig == WAKE_SIGNAL => {}
                Ok(Outcome::Signal { sig }) => other.push(sig),
                _ => break,
            }
        }
        other
    }

    /// Ends the deputy the way the remote copy ended, so that the parent's
    /// wait status is exact.
    fn exit(mut self, how: Ending, events: &dyn Fn(Event)) {
        let pid = self.pid;
        let r = (|| -> Result<(), KernelError> {
            if let Ending::Signal(sig) = how {
                // A signal already pending (a child's SIGCHLD…) stops the deputy before
                // the call is made: make it again until it is.
                while !matches!(
                    self.injector()?.call_interruptible(abi::SYS_TGKILL, &[pid as u64, pid as u64, sig as u64])?,
                    Outcome::Done(_)
                ) {}
            }
            loop {
                // Other signals (wake-ups, late arrivals) are passed over.
                match how {
                    Ending::Code(code) => {
                        self.injector()?.call_interruptible(abi::SYS_EXIT_GROUP, &[code as u64])?;
                    }
                    Ending::Signal(sig) => {
                        if let Outcome::Signal { sig: s } = self.injector()?.call_interruptible(abi::SYS_PAUSE, &[])? {
                            if s == sig {
                                self.tracee.deliver(sig)?;
                            }
                        }
                    }
                }
            }
        })();
        match r {
            Err(KernelError::Died { .. }) => {}
            other => {
                tracing::error!(pid, "reproducing the end ({how:?}) failed: {other:?}; ending it with SIGKILL");
                self.tracee.kill();
            }
        }
        events(Event::Gone(format!("{how:?}")));
    }
}

/// Process `pid`'s descriptors marked close-on-exec.
fn cloexec_fds(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return Vec::new() };
    let mut fds: Vec<i32> = dir
        .filter_map(|e| {
            let fd: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let (_, flags) = crate::direct::fdinfo(pid, fd)?;
            (flags & libc::O_CLOEXEC != 0).then_some(fd)
        })
        .collect();
    fds.sort_unstable();
    fds
}
