//! Capturing a running process: freeze it, read its state, stream its
//! image, then release it (or end it).
//!
//! A [`Frozen`] process is held stopped under ptrace. Dropping it without
//! [`Frozen::kill`] always releases the process exactly as it was, so an
//! error anywhere during a checkpoint leaves the process running.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herd_image::{
    FileKind, FileRef, ImageWriter, MmFields, OpenFile, Origin, PendingSignal, ProcessImage, ProcessState, Registers,
    Rseq, Sched, SigAction, SigAltStack, Signals, Task, Thread, Vma, VmaKind, PROT_EXEC, PROT_READ, PROT_WRITE,
};
use herd_kernel::abi::{self, Regs};
use herd_kernel::inject::Injector;
use herd_kernel::mem::{self, Pagemap, ProcMem, PAGE};
use herd_kernel::ptrace::Tracee;
use herd_kernel::{host, task, KernelError};
use procfs::process::{FDTarget, MMPermissions, MMapPath};

use crate::check::{self, Purpose, PORTABLE_DEVICES};
use crate::filehash::FileHashes;
use crate::{io_err, procinfo, state, CheckpointError, Result};

/// Post-copy: bytes below each thread's stack pointer sent with the image.
const STACK_KEEP: u64 = 8 * PAGE;

/// Bytes read from the process per batch while streaming pages (and so the largest
/// Pages section of an image). Small enough that a batch stays in the CPU's cache
/// while it is checksummed, cut into stream chunks and sealed: with 8 MiB batches a
/// stop-and-copy of 512 MiB ran at ~830 MiB/s, with 1 MiB ~1,000 (docs/benchmarks.md).
const BATCH: usize = 1 << 20;

/// Runs of pages: (address, length), ascending.
pub type Runs = Vec<(u64, u64)>;

/// What a post-copy sends after the process runs elsewhere (see [`Frozen::lazy_runs`]).
#[derive(Clone, Debug, Default)]
pub struct LazyPages {
    pub runs: Runs,
    /// The region to send first (the largest): where its data most likely is.
    pub first: Option<(u64, u64)>,
}

/// A VMA's pages for post-copy: those in the image, and how many bytes follow.
struct PostcopyPlan {
    eager: PagePlan,
    lazy: u64,
}

/// Which pages of one VMA go into the image.
pub(crate) struct PagePlan {
    pub(crate) runs: Vec<(u64, u64)>,
    /// Not readable by process_vm_readv (no PROT_READ): use /proc/PID/mem.
    force: bool,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureStats {
    /// From the stop of the process to the end of the image.
    pub frozen_for: Duration,
    pub page_bytes: u64,
}

/// One thread held stopped, with the registers and signal mask it had when
/// it was stopped.
struct HeldThread {
    tracee: Tracee,
    regs: Regs,
    mask: u64,
}

impl HeldThread {
    /// `whole`: for a checkpoint, which carries the process's own seccomp filters: a
    /// thread under filters, held by root, has them suspended while it is held, so that
    /// they screen none of the calls the capture injects (a filter that kills on a call
    /// the program never makes would kill it). Where the kernel does not allow that (a
    /// herd itself under seccomp), it is held as any other.
    fn seize(tid: i32, whole: bool) -> herd_kernel::Result<HeldThread> {
        let suspend = whole && status_seccomp(tid) == Some(2) && herd_kernel::task::euid() == 0;
        let tracee = match Tracee::seize(tid, if suspend { herd_kernel::abi::PTRACE_O_SUSPEND_SECCOMP } else { 0 }) {
            Err(e) if suspend && matches!(e.errno(), Some(libc::EPERM | libc::EINVAL)) => {
                tracing::info!(tid, "its seccomp filters cannot be suspended while it is held: {e}");
                Tracee::seize(tid, 0)?
            }
            t => t?,
        };
        let regs = tracee.regs()?;
        let mask = tracee.sigmask()?;
        Ok(HeldThread { tracee, regs, mask })
    }

    fn release(mut self) -> Result<()> {
        let t = &mut self.tracee;
        t.resume_until_event()?;
        t.set_regs(&self.regs)?;
        t.set_sigmask(self.mask)?;
        self.tracee.detach()?;
        Ok(())
    }
}

/// A process held stopped: every thread of it, the main thread first.
/// Dropping it releases every thread exactly as it was.
pub(crate) struct Held {
    threads: Vec<HeldThread>,
}

impl Held {
    fn main(&mut self) -> &mut HeldThread {
        self.threads.first_mut().expect("held until release or kill")
    }

    fn tracee(&mut self) -> &mut Tracee {
        &mut self.main().tracee
    }

    /// Releases every thread (the main one last), going on after an error.
    fn release(&mut self) -> Result<()> {
        let mut first = Ok(());
        for t in std::mem::take(&mut self.threads).into_iter().rev() {
            let tid = t.tracee.pid();
            if let Err(e) = t.release() {
                tracing::warn!("releasing thread {tid}: {e}");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// The thread ids of process `pid` (/proc/PID/task).
fn thread_ids(pid: i32) -> Result<Vec<i32>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CheckpointError::NoSuchProcess { pid },
        _ => CheckpointError::Proc { pid, what: format!("listing its threads: {e}") },
    })?;
    Ok(dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
}

/// Stops every thread of process `pid` (whose main thread is `held`'s only
/// one). A thread running meanwhile may create another, so the list is read
/// again until a reading finds no thread that is not held: held threads create
/// none. A thread that ends before it is held is passed over.
fn hold_every_thread(held: &mut Held, pid: i32, whole: bool) -> Result<()> {
    loop {
        let mut grew = false;
        for tid in thread_ids(pid)? {
            if held.threads.iter().any(|t| t.tracee.pid() == tid) {
                continue;
            }
            match HeldThread::seize(tid, whole) {
                Ok(t) => {
                    held.threads.push(t);
                    grew = true;
                }
                Err(KernelError::Died { .. }) => {}
                Err(e) if e.errno() == Some(libc::ESRCH) => {}
                Err(e) => return Err(seize_error(pid, e)),
            }
        }
        if !grew {
            return Ok(());
        }
    }
}

pub struct Frozen {
    held: Held,
    image: ProcessImage,
    plans: Vec<PagePlan>,
    stopped_at: Instant,
    /// A copy-on-write copy of the process's memory made at the capture
    /// ([`Frozen::snapshot`]), stopped; its pages are read instead of the process's.
    snapshot: Option<Tracee>,
    /// When the process was let go (after a snapshot): the end of its stop.
    released_at: Option<Instant>,
}

fn seize_error(pid: i32, e: KernelError) -> CheckpointError {
    match e.errno() {
        Some(libc::EPERM) => CheckpointError::Permission {
            pid,
            why: "ptrace is not permitted (is it your process? see /proc/sys/kernel/yama/ptrace_scope)".into(),
        },
        _ => match e {
            KernelError::Died { pid } => CheckpointError::NoSuchProcess { pid },
            e => e.into(),
        },
    }
}

impl Frozen {
    /// Stops process `pid` and reads everything about it except page contents.
    pub fn freeze(pid: i32, hashes: &mut FileHashes) -> Result<Frozen> {
        Self::freeze_for(pid, hashes, Purpose::Checkpoint)
    }

    /// [`Frozen::freeze`] for a purpose: a migration leaves the process's open
    /// files out of the image (they stay with the deputy at home).
    pub fn freeze_for(pid: i32, hashes: &mut FileHashes, purpose: Purpose) -> Result<Frozen> {
        Self::freeze_away(pid, hashes, purpose, &[])
    }

    /// [`Frozen::freeze_for`] a migration of a process away from home, whose regions
    /// `at_home` are placeholders of memory kept at home (see [`HomeRegion`]): they go in
    /// the image as such again, without contents.
    pub fn freeze_away(pid: i32, hashes: &mut FileHashes, purpose: Purpose, at_home: &[HomeRegion]) -> Result<Frozen> {
        let reasons = check::check_for(pid, purpose)?;
        if !reasons.is_empty() {
            return Err(CheckpointError::CantMove { pid, reasons });
        }
        let whole = matches!(purpose, Purpose::Checkpoint | Purpose::Tree);
        let main = HeldThread::seize(pid, whole).map_err(|e| seize_error(pid, e))?;
        let stopped_at = Instant::now();
        let mut held = Held { threads: vec![main] };
        // On any error below, `held` is dropped and the process released.
        hold_every_thread(&mut held, pid, whole)?;
        let (image, plans) = capture_with(&mut held, pid, hashes, purpose, &HashMap::new(), &HashMap::new(), at_home)?;
        Ok(Frozen { held, image, plans, stopped_at, snapshot: None, released_at: None })
    }

    /// Stops every thread of process `pid` and nothing more (a tree holds all
    /// its members before it captures any). Dropping the result releases it.
    pub(crate) fn hold(pid: i32) -> Result<Held> {
        let main = HeldThread::seize(pid, true).map_err(|e| seize_error(pid, e))?;
        let mut held = Held { threads: vec![main] };
        hold_every_thread(&mut held, pid, true)?;
        Ok(held)
    }

    /// Captures a process held by [`Frozen::hold`] since `stopped_at`, with the
    /// kinds of some of its fds decided by the caller.
    pub(crate) fn capture_held(
        mut held: Held,
        pid: i32,
        hashes: &mut FileHashes,
        decided: &HashMap<i32, FileKind>,
        mapped: &crate::tree::Mapped,
        stopped_at: Instant,
    ) -> Result<Frozen> {
        let (image, plans) = capture_with(&mut held, pid, hashes, Purpose::Tree, decided, mapped, &[])?;
        Ok(Frozen { held, image, plans, stopped_at, snapshot: None, released_at: None })
    }
}

/// A region of a process away from home that stands for memory kept at home
/// (`VmaKind::AtHome`): the range it had in the image it was restored from, and
/// what home called it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HomeRegion {
    pub start: u64,
    pub end: u64,
    pub name: String,
}

impl HomeRegion {
    /// The regions of `vmas` kept at home.
    pub fn of(vmas: &[herd_image::Vma]) -> Vec<HomeRegion> {
        vmas.iter()
            .filter_map(|v| match &v.kind {
                VmaKind::AtHome { name } => Some(HomeRegion { start: v.start, end: v.end, name: name.clone() }),
                _ => None,
            })
            .collect()
    }

    /// The ranges (address, length) of `vmas` kept at home.
    pub fn ranges(vmas: &[herd_image::Vma]) -> Vec<(u64, u64)> {
        vmas.iter().filter(|v| matches!(v.kind, VmaKind::AtHome { .. })).map(|v| (v.start, v.len())).collect()
    }

    /// Whether `[start, end)` overlaps one of `regions`.
    pub fn touched(regions: &[HomeRegion], start: u64, end: u64) -> bool {
        regions.iter().any(|r| start < r.end && r.start < end)
    }
}

/// Reads everything about the held process except page contents, and plans
/// which pages go into the image; with the kinds of some fds decided by the caller
/// (a tree's analysis of what its members share), and for a process away from home,
/// the regions that are placeholders of memory kept at home.
fn capture_with(
    held: &mut Held,
    pid: i32,
    hashes: &mut FileHashes,
    purpose: Purpose,
    decided: &HashMap<i32, FileKind>,
    mapped: &crate::tree::Mapped,
    away: &[HomeRegion],
) -> Result<(ProcessImage, Vec<PagePlan>)> {
    // Threads may have been created between the check and the stop.
    let t0 = Instant::now();
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    // The capture injects calls into the held threads one after another: herd and
    // they on one CPU meanwhile (see OneCpu), every thread's CPUs given back when
    // `_pin` is dropped, before the process is released.
    let mut _pin = herd_kernel::task::OneCpu::here();
    if let Some(p) = _pin.as_mut() {
        for t in &held.threads {
            p.add(t.tracee.pid());
        }
    }
    let checked = check::check_held(pid, purpose)?;
    if !checked.why.is_empty() {
        return Err(CheckpointError::CantMove { pid, reasons: checked.why });
    }
    let p = procinfo::open(pid)?;
    let maps = procinfo::maps(&p)?;
    tracing::debug!(pid, "capture: checked and maps read at {:.1} ms", ms(t0));
    // Hold every signal in every thread while we work; arrivals stay queued
    // and are captured as pending below.
    let mut states = Vec::with_capacity(held.threads.len());
    for t in &mut held.threads {
        let xstate = t.tracee.xstate()?;
        let rseq = t.tracee.rseq_config()?;
        t.tracee.set_sigmask(!0)?;
        states.push((xstate, rseq));
    }

    let (_, own_vdso) = host::own_vdso().ok_or_else(|| CheckpointError::Incompatible("herd has no vDSO".into()))?;
    let gadget = gadget_in(pid, &maps, &own_vdso)?;
    let (handlers, brk, per_thread) = inject_queries(held, gadget)?;
    tracing::debug!(pid, "capture: injected queries done at {:.1} ms", ms(t0));
    // Back to an interrupt stop with the real registers, so the kernel's
    // restart logic sees each thread exactly as we found it.
    for t in &mut held.threads {
        t.tracee.resume_until_event()?;
        let regs = t.regs;
        t.tracee.set_regs(&regs)?;
    }

    let mut pending = Vec::new();
    for si in held.tracee().pending_signals(true)? {
        pending.push(pending_signal(true, &si));
    }
    let mut threads = Vec::new();
    for (i, ((t, (xstate, rseq)), q)) in held.threads.iter().zip(states).zip(per_thread).enumerate() {
        let tid = t.tracee.pid();
        let mut own = Vec::new();
        for si in t.tracee.pending_signals(false)? {
            own.push(pending_signal(false, &si));
        }
        for &sig in t.tracee.deferred_signals() {
            let mut si = [0u8; 128];
            si[0..4].copy_from_slice(&(sig as u32).to_le_bytes());
            own.push(pending_signal(false, &si));
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
        threads.push(Thread {
            tid,
            comm: comm.trim_end_matches('\n').to_string(),
            regs: Registers { gp: t.regs.to_words(), xstate },
            blocked: t.mask,
            pending: own,
            altstack: q.altstack,
            clear_child_tid: q.clear_child_tid,
            robust_list: task::robust_list(tid)?,
            rseq: rseq.map(|c| Rseq { ptr: c.rseq_abi_pointer, len: c.rseq_abi_size, sig: c.signature }),
            sched: sched_of(tid)?,
        });
        if i == 0 {
            // The main thread's own signals are the process's thread-directed ones.
            pending.extend(threads[0].pending.iter().cloned());
        }
    }
    // The main thread's state goes in `task`, `regs` and `signals`.
    let main = threads.remove(0);

    let stat = p.stat().map_err(|e| procinfo::map_err(pid, e))?;
    let status = p.status().map_err(|e| procinfo::map_err(pid, e))?;
    let rlimits = procinfo::rlimits(&p)?;
    let exe = p.exe().map_err(|e| procinfo::map_err(pid, e))?.to_string_lossy().into_owned();
    let cwd = p.cwd().map_err(|e| procinfo::map_err(pid, e))?.to_string_lossy().into_owned();
    let task = Task {
        pid,
        comm: stat.comm.clone(),
        cmdline: p.cmdline().unwrap_or_default(),
        exe,
        cwd,
        umask: status.umask.unwrap_or(0o022),
        personality: procinfo::personality(pid)?,
        uid: status.ruid,
        gid: status.rgid,
        groups: status.groups.iter().map(|g| *g as u32).collect(),
        rlimits,
        clear_child_tid: main.clear_child_tid,
        robust_list: main.robust_list,
        rseq: main.rseq,
        sched: main.sched,
    };
    let mm = MmFields {
        start_code: stat.startcode,
        end_code: stat.endcode,
        start_data: stat.start_data.unwrap_or(0),
        end_data: stat.end_data.unwrap_or(0),
        start_brk: stat.start_brk.unwrap_or(0),
        brk,
        start_stack: stat.startstack,
        arg_start: stat.arg_start.unwrap_or(0),
        arg_end: stat.arg_end.unwrap_or(0),
        env_start: stat.env_start.unwrap_or(0),
        env_end: stat.env_end.unwrap_or(0),
        auxv: procinfo::auxv(pid)?,
    };

    let (files, state) = match purpose {
        Purpose::Checkpoint | Purpose::Tree => {
            let (files, mut locks) = capture_files(&p, decided)?;
            let state = query_state(held, gadget, pid, &mut locks)?;
            (files, Some(ProcessState { locks, ..state }))
        }
        // A migrated process's files, locks and attributes stay with its deputy.
        Purpose::Migrate { .. } => (Vec::new(), None),
    };
    tracing::debug!(pid, "capture: task state read at {:.1} ms", ms(t0));
    let pagemap = Pagemap::open(pid)?;
    let mut vmas = Vec::new();
    let mut plans = Vec::new();
    // A migration's memory shared with processes at home stays there: at home, what
    // the check lets stay; away, the placeholders of it.
    let at_home: Vec<HomeRegion> = match purpose {
        Purpose::Migrate { own_filter: false } => {
            maps.iter().filter(|m| checked.kept_home.contains(&m.address)).map(|m| HomeRegion { start: m.address.0, end: m.address.1, name: procinfo::describe_mapping(&m.pathname) }).collect()
        }
        Purpose::Migrate { own_filter: true } => away.to_vec(),
        _ => Vec::new(),
    };
    for m in &maps {
        let (start, end) = m.address;
        let mut prot = 0u8;
        if m.perms.contains(MMPermissions::READ) {
            prot |= PROT_READ;
        }
        if m.perms.contains(MMPermissions::WRITE) {
            prot |= PROT_WRITE;
        }
        if m.perms.contains(MMPermissions::EXECUTE) {
            prot |= PROT_EXEC;
        }
        let shared = m.perms.contains(MMPermissions::SHARED);
        // Memory without a name, a memory object of the tree: its runs were planned with it.
        if let Some((object, offset, runs)) = mapped.get(&start) {
            let stored_bytes = runs.iter().map(|r| r.1).sum();
            vmas.push(Vma { start, end, prot, shared, kind: VmaKind::Memory { object: *object, offset: *offset }, stored_bytes });
            plans.push(PagePlan { runs: runs.clone(), force: prot & PROT_READ == 0 });
            continue;
        }
        // (Away, neighbouring placeholders may have merged into one region: each goes as
        // the home region it stands for.)
        let parts: Vec<&HomeRegion> = at_home.iter().filter(|r| r.start < end && start < r.end).collect();
        if !parts.is_empty() && parts.iter().map(|r| r.end.min(end) - r.start.max(start)).sum::<u64>() == end - start {
            for r in parts {
                let (lo, hi) = (r.start.max(start), r.end.min(end));
                vmas.push(Vma { start: lo, end: hi, prot, shared, kind: VmaKind::AtHome { name: r.name.clone() }, stored_bytes: 0 });
                plans.push(PagePlan { runs: Vec::new(), force: false });
            }
            continue;
        }
        let kind = match &m.pathname {
            MMapPath::Vsyscall => continue,
            MMapPath::Heap => VmaKind::Heap,
            MMapPath::Stack => VmaKind::Stack,
            MMapPath::Vdso => VmaKind::Vdso,
            MMapPath::Vvar => VmaKind::Vvar,
            MMapPath::Other(_) => VmaKind::Vvar, // vvar_vclock; check() refused others
            MMapPath::Anonymous => VmaKind::Anonymous,
            MMapPath::Path(path) if shared && path.to_string_lossy().starts_with("/dev/zero") => VmaKind::Anonymous,
            MMapPath::Path(path) => {
                let written = shared && prot & PROT_WRITE != 0;
                let (hash, size) = if written { hashes.hash_fresh(path) } else { hashes.hash(path) }
                    .map_err(io_err(format!("hashing mapped file {}", path.display())))?;
                VmaKind::File {
                    file: FileRef { path: path.to_string_lossy().into_owned(), size, hash },
                    offset: m.offset,
                }
            }
            other => {
                return Err(CheckpointError::Proc { pid, what: format!("unexpected mapping {other:?}") });
            }
        };
        let runs = match &kind {
            VmaKind::Vdso | VmaKind::Vvar => Vec::new(),
            VmaKind::File { .. } if shared => Vec::new(),
            _ if shared => vec![(start, end - start)],
            // Copies on write only; the rest is the file's.
            VmaKind::File { .. } => pagemap.present_runs(start, end, true)?,
            _ => pagemap.present_runs(start, end, false)?,
        };
        let stored_bytes = runs.iter().map(|r| r.1).sum();
        vmas.push(Vma { start, end, prot, shared, kind, stored_bytes });
        plans.push(PagePlan { runs, force: prot & PROT_READ == 0 });
    }

    // Advice, locks and guard pages of the regions (a migration does without).
    let mut state = state;
    if let Some(st) = state.as_mut() {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).map_err(|e| CheckpointError::Proc { pid, what: format!("smaps: {e}") })?;
        st.regions = state::parse_smaps_flags(&smaps);
        // The vDSO and vvar come back as the kernel makes them (with their own flags).
        st.regions.retain(|r| vmas.iter().any(|v| v.start == r.start && v.end == r.end && !matches!(v.kind, VmaKind::Vdso | VmaKind::Vvar)));
        // Guard pages, in one scan of the whole address space (smaps's "gu" is
        // not a reliable sign of them), each given to the region holding it.
        let top = vmas.iter().map(|v| v.end).max().unwrap_or(0);
        for (at, len) in pagemap.guard_runs(0, top)? {
            match st.regions.iter_mut().find(|r| r.start <= at && at < r.end) {
                Some(r) => r.guards.push((at, len)),
                None => {
                    let v = vmas.iter().find(|v| v.start <= at && at < v.end).ok_or_else(|| CheckpointError::Proc { pid, what: format!("guard pages at {at:#x} outside every region") })?;
                    st.regions.push(herd_image::RegionState { start: v.start, end: v.end, guards: vec![(at, len)], ..Default::default() });
                }
            }
        }
        st.regions.sort_by_key(|r| r.start);
    }
    tracing::debug!(pid, "capture: {} regions planned at {:.1} ms", maps.len(), ms(t0));
    let mut handlers = handlers;
    handlers.retain(|h| h.handler != 0 || h.flags != 0 || h.mask != 0);
    // A migration's guest runs under herd's own filter; its deputy keeps the process's.
    let seccomp = match purpose {
        Purpose::Checkpoint | Purpose::Tree if status_seccomp(pid) == Some(2) => seccomp_of(held, pid)?,
        _ => Vec::new(),
    };
    let image = ProcessImage {
        origin: Origin {
            hostname: host::hostname(),
            kernel_release: host::kernel_release(),
            created_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            herd_version: env!("CARGO_PKG_VERSION").to_string(),
            vdso_hash: *blake3::hash(&own_vdso).as_bytes(),
            xfeatures: host::xcr0(),
        },
        task,
        regs: main.regs,
        signals: Signals { blocked: main.blocked, handlers, altstack: main.altstack, pending },
        mm,
        vmas,
        files,
        threads,
        state,
        increment: None,
        seccomp,
    };
    Ok((image, plans))
}

/// The Seccomp: field of /proc/PID/status (0 none, 1 strict, 2 filters).
fn status_seccomp(pid: i32) -> Option<u32> {
    procfs::process::Process::new(pid).and_then(|p| p.status()).ok()?.seccomp
}

/// The seccomp filters of the held process, the first installed first. Refused
/// (the capture fails, the process runs on) when its threads run under different
/// ones, or when a filter hands calls to a supervisor (SECCOMP_RET_USER_NOTIF: its
/// listener is another process's, and it would wait for answers that never come).
fn seccomp_of(held: &Held, pid: i32) -> Result<Vec<herd_image::SeccompFilter>> {
    let refuse = |why: String| CheckpointError::CantMove { pid, reasons: vec![crate::CantMove::SeccompFilters { why }] };
    let mut chain: Option<Vec<herd_kernel::ptrace::SeccompFilter>> = None;
    for t in &held.threads {
        let tid = t.tracee.pid();
        let filters = t.tracee.seccomp_filters().map_err(|e| CheckpointError::Proc { pid, what: format!("reading the seccomp filters of thread {tid}: {e}") })?;
        match &chain {
            None => chain = Some(filters),
            Some(c) if *c == filters => {}
            Some(_) => return Err(refuse(format!("its threads run under different seccomp filters (thread {tid}'s differ from the main thread's)"))),
        }
    }
    let chain = chain.unwrap_or_default();
    for (i, f) in chain.iter().enumerate() {
        let n = f.insns.len() / 8;
        if n == 0 || n > herd_image::MAX_FILTER_INSNS {
            return Err(refuse(format!("seccomp filter {i} has {n} instructions")));
        }
        // BPF_RET | BPF_K with SECCOMP_RET_USER_NOTIF (0x7fc00000) as its action.
        let notifies = f.insns.chunks_exact(8).any(|s| u16::from_le_bytes([s[0], s[1]]) == 0x06 && u32::from_le_bytes([s[4], s[5], s[6], s[7]]) & 0xffff_0000 == 0x7fc0_0000);
        if notifies {
            return Err(refuse(format!("seccomp filter {i} hands calls to a supervisor (SECCOMP_RET_USER_NOTIF), which would not answer the restored process")));
        }
    }
    Ok(chain.into_iter().map(|f| herd_image::SeccompFilter { flags: f.flags, insns: f.insns }).collect())
}

/// A `syscall` instruction in process `pid` to inject calls through: the
/// one in its vDSO, which is the same image as herd's (same kernel).
pub fn syscall_gadget(pid: i32) -> Result<u64> {
    let p = procinfo::open(pid)?;
    let (_, own_vdso) = host::own_vdso().ok_or_else(|| CheckpointError::Incompatible("herd has no vDSO".into()))?;
    gadget_in(pid, &procinfo::maps(&p)?, &own_vdso)
}

fn gadget_in(pid: i32, maps: &[procfs::process::MemoryMap], own_vdso: &[u8]) -> Result<u64> {
    let vdso = maps
        .iter()
        .find(|m| matches!(m.pathname, MMapPath::Vdso))
        .map(|m| m.address.0)
        .ok_or_else(|| CheckpointError::Incompatible("the process has no vDSO".into()))?;
    let gadget = vdso
        + host::syscall_offset(own_vdso)
            .ok_or_else(|| CheckpointError::Incompatible("no syscall instruction in the vDSO".into()))?;
    let mut probe = [0u8; 2];
    mem::read_ranges(pid, &[(gadget, 2)], &mut probe)?;
    if probe != [0x0f, 0x05] {
        return Err(CheckpointError::Incompatible("the process's vDSO differs from herd's".into()));
    }
    Ok(gadget)
}

impl Frozen {
    pub fn image(&self) -> &ProcessImage {
        &self.image
    }

    pub(crate) fn image_mut(&mut self) -> &mut ProcessImage {
        &mut self.image
    }

    /// The regions and the plan of each (same order).
    pub(crate) fn parts_mut(&mut self) -> (&mut Vec<Vma>, &mut Vec<PagePlan>) {
        (&mut self.image.vmas, &mut self.plans)
    }

    /// Renames the threads in the image (a migrated process's threads go by
    /// their home ids wherever they run; `home_tid` maps an id here to it).
    pub fn rename_threads(&mut self, home_tid: impl Fn(i32) -> i32) {
        for t in &mut self.image.threads {
            t.tid = home_tid(t.tid);
        }
    }

    /// Streams the whole image (process section, pages, end) into `out`.
    ///
    /// Pages are read from the process on this thread while a writer thread
    /// checksums and writes the previous batch, so reading and writing
    /// overlap; a few 8 MiB buffers circulate between the two.
    pub fn write<W: Write + Send>(&mut self, out: W) -> Result<(W, CaptureStats)> {
        self.write_with(out, false)
    }

    /// For post-copy: streams the image without the pages of private
    /// anonymous memory (heap, stack, anonymous mappings), which are sent
    /// later, while the process already runs elsewhere. Their VMAs say
    /// stored bytes only for the pages that still go in the image; the runs
    /// left out are [`Frozen::lazy_runs`]. Pages of private file mappings that
    /// were written to (copied on write) and shared anonymous memory still go
    /// in the image.
    pub fn write_postcopy<W: Write + Send>(&mut self, out: W) -> Result<(W, CaptureStats)> {
        self.write_with(out, true)
    }

    /// What [`Frozen::write_postcopy`] leaves out: the runs of pages (address,
    /// length, ascending), and the largest region's range (sent first: where
    /// the process's data most likely is).
    pub fn lazy_runs(&self) -> LazyPages {
        let (plans, runs) = self.postcopy_plans();
        let first = self
            .image
            .vmas
            .iter()
            .zip(&plans)
            .filter(|(_, p)| p.lazy > 0)
            .max_by_key(|(_, p)| p.lazy)
            .map(|(v, _)| (v.start, v.end - v.start));
        LazyPages { runs, first }
    }

    /// Whether the pages of VMA `v` (with plan `p`) can be sent after the process runs elsewhere.
    fn lazy(v: &Vma, p: &PagePlan) -> bool {
        !v.shared && !p.force && matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap)
    }

    /// For post-copy, each VMA's plan split into the pages that go in the image
    /// and the lazy runs. Eager: everything but private anonymous memory, the
    /// stack (small; the kernel writes signal frames there, and the restore
    /// reads a sleep's remaining time from it), and the pages of the rseq area
    /// (the kernel writes it on every return to user mode, also between the
    /// injected calls of the restore, before anyone serves faults).
    fn postcopy_plans(&self) -> (Vec<PostcopyPlan>, Runs) {
        // Every thread's rseq area; and around the other threads' stack pointers
        // (their stacks are anonymous memory), what the restore reads and writes
        // there (a sleep's remaining time) and the kernel's first signal frame.
        let page_of = |a: u64| a & !(PAGE - 1);
        let mut keep: Vec<(u64, u64)> = std::iter::once(self.image.task.rseq)
            .chain(self.image.threads.iter().map(|t| t.rseq))
            .flatten()
            .map(|r| (page_of(r.ptr), page_of(r.ptr + u64::from(r.len.max(32)) + PAGE - 1)))
            .collect();
        for t in &self.image.threads {
            if let Some(&sp) = t.regs.gp.get(19) {
                keep.push((page_of(sp).saturating_sub(STACK_KEEP), page_of(sp) + PAGE));
            }
        }
        keep.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (lo, hi) in keep {
            match merged.last_mut() {
                Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        let keep = merged;
        let mut lazy_runs = Vec::new();
        let mut plans = Vec::new();
        for (v, p) in self.image.vmas.iter().zip(&self.plans) {
            if !Self::lazy(v, p) {
                plans.push(PostcopyPlan { eager: PagePlan { runs: p.runs.clone(), force: p.force }, lazy: 0 });
                continue;
            }
            let mut eager = Vec::new();
            let mut lazy = 0u64;
            for &(a, l) in &p.runs {
                let (kept, rest) = split_runs(a, a + l, &keep);
                eager.extend(kept);
                for r in rest {
                    lazy += r.1;
                    lazy_runs.push(r);
                }
            }
            plans.push(PostcopyPlan { eager: PagePlan { runs: eager, force: p.force }, lazy });
        }
        lazy_runs.sort_unstable();
        (plans, lazy_runs)
    }

    fn write_with<W: Write + Send>(&mut self, out: W, postcopy: bool) -> Result<(W, CaptureStats)> {
        // The pages come from the snapshot when there is one (the process runs on meanwhile).
        let pid = self.snapshot.as_ref().map_or(self.image.task.pid, |t| t.pid());
        let mut w = ImageWriter::new(out).map_err(io_err("writing the image"))?;
        let split;
        let mut eager: Vec<&PagePlan> = Vec::new();
        if postcopy {
            let (plans, _) = self.postcopy_plans();
            split = plans;
            let mut image = self.image.clone();
            for (v, p) in image.vmas.iter_mut().zip(&split) {
                v.stored_bytes = p.eager.runs.iter().map(|r| r.1).sum();
                eager.push(&p.eager);
            }
            w.write_process(&image).map_err(io_err("writing the image"))?;
            tracing::debug!(pid, "capture: process section written at {:.1} ms", self.stopped_at.elapsed().as_secs_f64() * 1e3);
        } else {
            eager.extend(self.plans.iter());
            w.write_process(&self.image).map_err(io_err("writing the image"))?;
        }
        let procmem = if eager.iter().any(|p| p.force && !p.runs.is_empty()) {
            Some(ProcMem::open(pid, false)?)
        } else {
            None
        };
        type Batch = (Vec<(u64, u64)>, Vec<u8>);
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Batch>(2);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        // Buffers no larger than what is to be read: fresh memory costs its first
        // touch, and on our VMs memory left free for a while costs 3-5x that (24 MiB
        // of idle buffers once took 100 ms of a post-copy freeze of 64 KiB of pages).
        let total: u64 = eager.iter().flat_map(|p| p.runs.iter()).map(|r| r.1).sum();
        let size = (BATCH as u64).min(total.max(PAGE)) as usize;
        for _ in 0..3 {
            free_tx.send(vec![0u8; size]).expect("receiver alive");
        }
        let plans = &eager;
        let (written, read) = std::thread::scope(|s| {
            let writer = s.spawn(move || -> Result<ImageWriter<W>> {
                for (batch, data) in full_rx {
                    let mut off = 0usize;
                    for (a, l) in &batch {
                        w.write_pages(*a, &data[off..off + *l as usize]).map_err(io_err("writing the image"))?;
                        off += *l as usize;
                    }
                    let _ = free_tx.send(data);
                }
                Ok(w)
            });
            let read = (|| -> Result<()> {
                for plan in plans {
                    for batch in batches(&plan.runs, size as u64) {
                        let Ok(mut data) = free_rx.recv() else { return Ok(()) }; // writer failed
                        let used: u64 = batch.iter().map(|r| r.1).sum();
                        read_pages(pid, &batch, &mut data[..used as usize], plan.force, procmem.as_ref())?;
                        if full_tx.send((batch, data)).is_err() {
                            return Ok(()); // writer failed; its error is reported
                        }
                    }
                }
                Ok(())
            })();
            drop(full_tx);
            (writer.join().expect("image writer thread panicked"), read)
        });
        let w = written?;
        read?;
        tracing::debug!(pid, "capture: {} page bytes written at {:.1} ms", w.page_bytes(), self.stopped_at.elapsed().as_secs_f64() * 1e3);
        let bytes = w.page_bytes();
        let out = w.finish().map_err(io_err("writing the image"))?;
        let frozen_for = self.released_at.unwrap_or_else(Instant::now).saturating_duration_since(self.stopped_at);
        Ok((out, CaptureStats { frozen_for, page_bytes: bytes }))
    }

    /// Lets the process continue as if nothing happened.
    pub fn release(mut self) -> Result<()> {
        self.end_snapshot();
        self.held.release()
    }

    /// For a checkpoint of a process that runs on: copies its memory as it is now,
    /// copy on write (a `clone` injected in its main thread, the copy made a child of
    /// the process's parent, stopped and never run), and lets the process go on at
    /// once. [`Frozen::write`] then reads the pages from the copy, while the process
    /// runs; it is stopped only for the capture and the clone, whatever its size.
    /// `listener`: the process's seccomp listener, if it runs under herd's filter
    /// (which sends a clone to it: the injected one is let through).
    ///
    /// `Ok(false)` when a copy would not be the process's memory (a region that
    /// fork does not copy, or wipes: MADV_DONTFORK, MADV_WIPEONFORK) or the clone
    /// failed: the process stays stopped and the image is written as usual.
    pub fn snapshot(&mut self, listener: Option<&herd_kernel::seccomp::Listener>) -> Result<bool> {
        let pid = self.image.task.pid;
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).map_err(|e| CheckpointError::Proc { pid, what: format!("smaps: {e}") })?;
        if smaps.lines().filter(|l| l.starts_with("VmFlags:")).any(|l| l.split_whitespace().any(|f| f == "dc" || f == "wf")) {
            tracing::debug!(pid, "no snapshot: a region is not copied, or is wiped, by fork");
            return Ok(false);
        }
        let gadget = syscall_gadget(pid)?;
        let main = self.held.main();
        let regs = main.regs;
        main.tracee.set_options(abi::PTRACE_O_TRACECLONE)?;
        let done = std::sync::atomic::AtomicBool::new(false);
        // A child process (no CLONE_THREAD) without an exit signal, whose parent is the
        // process's (CLONE_PARENT: herdd, which reaps it): the process never hears of it.
        let flags = abi::CLONE_PARENT;
        let made = std::thread::scope(|s| {
            if let Some(l) = listener {
                let done = &done;
                s.spawn(move || {
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        if !matches!(l.wait(20), Ok(herd_kernel::seccomp::Readiness::Notification)) {
                            continue;
                        }
                        match l.recv() {
                            Ok(n) if n.pid as i32 == pid && i64::from(n.nr) == abi::SYS_CLONE as i64 => {
                                let _ = l.continue_(n.id);
                                return;
                            }
                            Ok(n) => {
                                // (Every thread is held: no other call can be made now.)
                                tracing::warn!(pid, tid = n.pid, nr = n.nr, "a call while the process is held: failed with EINTR");
                                let _ = l.respond(n.id, -1, libc::EINTR);
                            }
                            Err(_) => {}
                        }
                    }
                });
            }
            let r = Injector::new(&mut main.tracee, gadget, regs).call_clone(abi::SYS_CLONE, &[flags, 0, 0, 0, 0]);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        });
        main.tracee.set_options(0)?;
        let child = match made {
            Ok((_, Some(child))) => child,
            Ok((ret, None)) => {
                tracing::debug!(pid, "no snapshot: clone failed ({ret})");
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        self.snapshot = Some(child);
        self.held.release()?;
        self.released_at = Some(Instant::now());
        Ok(true)
    }

    /// Whether the process was let go after a snapshot ([`Frozen::snapshot`]).
    pub fn released(&self) -> bool {
        self.released_at.is_some()
    }

    /// Ends the snapshot, if any (it is herd's child: reaped here).
    fn end_snapshot(&mut self) {
        if let Some(t) = self.snapshot.take() {
            let child = t.pid();
            t.kill();
            let _ = task::reap(child);
        }
    }

    /// Keeps the process stopped and hands it over: the main thread's tracee
    /// (at an interrupt stop, its real registers set), the signal mask it had,
    /// and the other threads (stopped likewise, every signal blocked).
    /// The caller now owns it (a deputy is made of it); nothing is released.
    pub fn into_held(mut self) -> (Tracee, u64, Vec<Tracee>) {
        let mut threads = std::mem::take(&mut self.held.threads).into_iter();
        let main = threads.next().expect("held until release or kill");
        (main.tracee, main.mask, threads.map(|t| t.tracee).collect())
    }

    /// Ends the process (SIGKILL). Call only once the image is safe.
    pub fn kill(mut self) {
        self.end_snapshot();
        // Let go after a snapshot, it runs: a plain SIGKILL (the caller reaps it).
        if self.released_at.is_some() {
            let _ = task::kill(self.image.task.pid, libc::SIGKILL);
        }
        // The other threads first: the main thread is reported dead (and can be
        // reaped) only once they are.
        for t in std::mem::take(&mut self.held.threads).into_iter().rev() {
            t.tracee.kill();
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // (The process itself is released by `held`'s drop, if it is still held.)
        self.end_snapshot();
    }
}

/// Splits runs into pieces of at most `max` bytes and groups consecutive
/// pieces into batches of at most `max` bytes.
fn batches(runs: &[(u64, u64)], max: u64) -> Vec<Vec<(u64, u64)>> {
    let mut out: Vec<Vec<(u64, u64)>> = Vec::new();
    let mut cur = Vec::new();
    let mut used = 0u64;
    for &(mut a, mut l) in runs {
        while l > 0 {
            let take = l.min(max - used);
            cur.push((a, take));
            used += take;
            a += take;
            l -= take;
            if used == max {
                out.push(std::mem::take(&mut cur));
                used = 0;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn read_pages(pid: i32, batch: &[(u64, u64)], data: &mut [u8], force: bool, procmem: Option<&ProcMem>) -> Result<()> {
    if let (true, Some(pm)) = (force, procmem) {
        let mut off = 0usize;
        for (a, l) in batch {
            pm.read(*a, &mut data[off..off + *l as usize])?;
            off += *l as usize;
        }
        return Ok(());
    }
    Ok(mem::read_ranges(pid, batch, data)?)
}

/// `[a, b)` cut by the sorted, disjoint ranges `keep` (lo, hi): the parts
/// inside them and the parts outside, as (address, length) runs.
fn split_runs(a: u64, b: u64, keep: &[(u64, u64)]) -> (Runs, Runs) {
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    let mut x = a;
    for &(lo, hi) in keep {
        if hi <= x || lo >= b {
            continue;
        }
        if lo > x {
            outside.push((x, lo - x));
        }
        let end = hi.min(b);
        inside.push((lo.max(x), end - lo.max(x)));
        x = end;
    }
    if x < b {
        outside.push((x, b - x));
    }
    (inside, outside)
}

/// What a thread's own injected calls tell.
struct ThreadQueries {
    altstack: SigAltStack,
    clear_child_tid: u64,
}

fn pending_signal(shared: bool, si: &[u8; 128]) -> PendingSignal {
    let signo = u32::from_le_bytes(si[0..4].try_into().expect("4"));
    PendingSignal { shared, signo, siginfo: si.to_vec() }
}

fn sched_of(tid: i32) -> Result<Sched> {
    let s = task::sched(tid)?;
    Ok(Sched { policy: s.policy, priority: s.priority, nice: s.nice })
}

/// Asks the process itself, by injected system calls, for what /proc does
/// not show: signal handlers and the current brk (of the process, asked of
/// its main thread), and each thread's alternate signal stack and
/// clear-child-tid address (asked of each thread, main thread first).
fn inject_queries(held: &mut Held, gadget: u64) -> Result<(Vec<SigAction>, u64, Vec<ThreadQueries>)> {
    let pid = held.tracee().pid();
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let main_regs = held.main().regs;
    let scratch = Injector::new(held.tracee(), gadget, main_regs).call_ok("mmap scratch", abi::SYS_MMAP, &[0, PAGE, prot, flags, u64::MAX, 0])? as u64;
    let result = (|| -> Result<_> {
        let mut inj = Injector::new(held.tracee(), gadget, main_regs);
        let mut handlers = Vec::new();
        let mut buf = [0u8; 32];
        for sig in 1..=64u64 {
            if sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64 {
                continue;
            }
            inj.call_ok("rt_sigaction", abi::SYS_RT_SIGACTION, &[sig, 0, scratch, 8])?;
            mem::read_ranges(pid, &[(scratch, 32)], &mut buf)?;
            let a: abi::KernelSigaction = abi::from_bytes(&buf);
            handlers.push(SigAction { signo: sig as u32, handler: a.handler, flags: a.flags, restorer: a.restorer, mask: a.mask });
        }
        let brk = inj.call_ok("brk", abi::SYS_BRK, &[0])? as u64;
        let mut per_thread = Vec::new();
        for t in &mut held.threads {
            let mut inj = Injector::new(&mut t.tracee, gadget, t.regs);
            inj.call_ok("sigaltstack", abi::SYS_SIGALTSTACK, &[0, scratch])?;
            let mut ss = [0u8; 24];
            mem::read_ranges(pid, &[(scratch, 24)], &mut ss)?;
            let ss: abi::StackT = abi::from_bytes(&ss);
            inj.call_ok("prctl(PR_GET_TID_ADDRESS)", abi::SYS_PRCTL, &[abi::PR_GET_TID_ADDRESS, scratch])?;
            let mut tid = [0u8; 8];
            mem::read_ranges(pid, &[(scratch, 8)], &mut tid)?;
            per_thread.push(ThreadQueries {
                altstack: SigAltStack { sp: ss.sp, flags: ss.flags, size: ss.size },
                clear_child_tid: u64::from_le_bytes(tid),
            });
        }
        Ok((handlers, brk, per_thread))
    })();
    Injector::new(held.tracee(), gadget, main_regs).call_ok("munmap scratch", abi::SYS_MUNMAP, &[scratch, PAGE])?;
    result
}

/// The open files of a process, and the locks it holds on them.
/// [`state::query_state`] with a scratch page mapped in the process.
fn query_state(held: &mut Held, gadget: u64, pid: i32, locks: &mut [herd_image::FileLock]) -> Result<ProcessState> {
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let regs = held.main().regs;
    let mut inj = Injector::new(held.tracee(), gadget, regs);
    let scratch = inj.call_ok("mmap scratch", abi::SYS_MMAP, &[0, PAGE, prot, flags, u64::MAX, 0])? as u64;
    let result = state::query_state(&mut inj, scratch, pid, locks);
    inj.call_ok("munmap scratch", abi::SYS_MUNMAP, &[scratch, PAGE])?;
    result
}

fn capture_files(p: &procfs::process::Process, decided: &HashMap<i32, FileKind>) -> Result<(Vec<OpenFile>, Vec<herd_image::FileLock>)> {
    let pid = p.pid;
    let mut files = Vec::new();
    let mut locks = Vec::new();
    let mut seen_locks = Vec::new();
    let mut refused = Vec::new();
    for fd in p.fd().map_err(|e| procinfo::map_err(pid, e))? {
        let fd = fd.map_err(|e| procinfo::map_err(pid, e))?;
        let info = state::read_fdinfo(pid, fd.fd)?;
        let (flags, pos) = (info.flags, info.pos);
        let what = procinfo::describe(&fd.target);
        let kind = match &fd.target {
            _ if decided.contains_key(&fd.fd) => decided[&fd.fd].clone(),
            FDTarget::Path(path) => {
                let s = path.to_string_lossy().into_owned();
                let meta = std::fs::metadata(format!("/proc/{pid}/fd/{}", fd.fd)).ok();
                if flags & libc::O_PATH != 0 {
                    FileKind::PathOnly { path: s, flags }
                } else if meta.as_ref().is_some_and(|m| m.is_file()) {
                    FileKind::Regular { path: s, flags, offset: pos }
                } else if meta.as_ref().is_some_and(|m| m.is_dir()) {
                    FileKind::Directory { path: s, flags, offset: pos }
                } else if PORTABLE_DEVICES.contains(&s.as_str()) {
                    FileKind::Device { path: s, flags }
                } else {
                    FileKind::Inherited { what }
                }
            }
            // pidfds pass the check only in a tree, whose analysis checks the process.
            FDTarget::AnonInode(anon) if state::ANON_KINDS.contains(&anon.as_str()) || anon == "[pidfd]" => match state::anon_kind(anon, fd.fd, &info) {
                Ok(k) => k,
                Err(why) => {
                    refused.push(why);
                    continue;
                }
            },
            _ => FileKind::Inherited { what },
        };
        locks.extend(state::locks_of(fd.fd, &info, &mut seen_locks));
        files.push(OpenFile { fd: fd.fd, cloexec: flags & libc::O_CLOEXEC != 0, kind });
    }
    files.sort_by_key(|f| f.fd);
    if !refused.is_empty() {
        return Err(CheckpointError::CantMove { pid, reasons: refused });
    }
    Ok((files, locks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cut_runs_and_respect_the_limit() {
        let runs = [(0x1000, 0x3000), (0x10000, 0x1000), (0x20000, 0x5000)];
        let b = batches(&runs, 0x4000);
        for batch in &b {
            assert!(batch.iter().map(|r| r.1).sum::<u64>() <= 0x4000);
        }
        let flat: Vec<_> = b.concat();
        assert_eq!(flat.iter().map(|r| r.1).sum::<u64>(), 0x9000);
        assert_eq!(flat[0], (0x1000, 0x3000));
        assert_eq!(flat[1], (0x10000, 0x1000));
        assert_eq!(flat[2], (0x20000, 0x4000));
        assert_eq!(flat[3], (0x24000, 0x1000));
    }

    #[test]
    fn runs_split_at_kept_ranges() {
        assert_eq!(split_runs(0x1000, 0x9000, &[(0x3000, 0x4000)]), (vec![(0x3000, 0x1000)], vec![(0x1000, 0x2000), (0x4000, 0x5000)]));
        assert_eq!(split_runs(0x1000, 0x2000, &[(0x3000, 0x4000)]), (vec![], vec![(0x1000, 0x1000)]));
        assert_eq!(split_runs(0x3000, 0x4000, &[(0x2000, 0x5000)]), (vec![(0x3000, 0x1000)], vec![]));
        assert_eq!(split_runs(0x1000, 0x4000, &[(0x3000, 0x8000)]), (vec![(0x3000, 0x1000)], vec![(0x1000, 0x2000)]));
    }

}
