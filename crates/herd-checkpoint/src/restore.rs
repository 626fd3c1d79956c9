//! Restoring a process from an image.
//!
//! A restorer child (a fork of the caller, see `herd_kernel::restorer`)
//! opens the image's files at their fd numbers and sets cwd, umask, rlimits
//! and personality itself. It is then seized, and everything else is done by
//! system calls injected into it: its own address space is unmapped except
//! for a small trampoline page, the image's memory regions are mapped at
//! their old addresses, pages are written into them as they stream in, the
//! vDSO is placed at its old address (ARCH_MAP_VDSO_64), mm fields are set
//! (PR_SET_MM_MAP), signal state, rseq, robust list and tid address are set,
//! the trampoline is unmapped and the registers are set last.
//!
//! Until the final detach the child runs no code of the image; any error
//! kills it (PTRACE_O_EXITKILL also covers our own death), so a failed
//! restore starts nothing.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use herd_image::tree::{read_tree_after_magic, MemoryKind, NamelessKind, SharedOfd, SockAddr, TreeImage, TREE_MAGIC};
use herd_kernel::sockdiag;
use herd_image::{
    FileKind, FormatError, ImageReader, InPlaceSection, OwnedSection, PagesInPlace, PendingSignal, ProcessImage, Rseq, Sched, Section, SigAltStack, VmaKind, PROT_WRITE,
};
use std::sync::mpsc::{Receiver, Sender};
use herd_kernel::abi::{self, Regs};
use herd_kernel::inject::Injector;
use herd_kernel::mem::{self, ProcMem, PAGE};
use herd_kernel::ptrace::Tracee;
use herd_kernel::restorer::{self, ChildPlan, FdPlan, NsInit, PidChoice, RestorerChild};
use herd_kernel::pidfd::PidFd;
use herd_kernel::{host, task};
use std::os::fd::OwnedFd;

use crate::filehash::FileHashes;
use crate::{state, CheckpointError, Result};

#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreStats {
    pub total: Duration,
    pub page_bytes: u64,
}

/// Which pid a restored process gets (see `herd restart --help`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PidMode {
    /// Its own pid and thread ids, in the caller's pid namespace; the restore
    /// fails before anything starts when they are taken or may not be chosen.
    #[default]
    Same,
    /// Any pid (the program may notice); thread ids kept where possible.
    Any,
    /// Its own pid and thread ids, in a new pid namespace made for it.
    NewNamespace,
}

/// A restored process, running, a child of the caller (or, with
/// [`PidMode::NewNamespace`], of `init`, which is the caller's child).
pub struct Restored {
    /// Its pid in the caller's namespace.
    pub pid: i32,
    /// The init of its new pid namespace: wait for it (and read the process's
    /// status from it) instead of the process.
    pub init: Option<NsInit>,
    /// Every thread: its id in the image and its id now (the main thread's are
    /// the image's pid and `pid`), main thread first.
    pub tids: Vec<(i32, i32)>,
    pub stats: RestoreStats,
    /// Things that could not be restored exactly (each one line).
    pub warnings: Vec<String>,
}

/// A guest restored for post-copy: besides the process and its seccomp
/// listener, the userfaultfd its lazily sent memory is registered with (see
/// `herd_kernel::uffd`). Until every lazy page is filled through it, the
/// process must not be captured.
pub struct RemoteRestore {
    pub restored: Restored,
    pub listener: OwnedFd,
    pub uffd: Option<OwnedFd>,
    /// The write tracking of the process (armed if asked); None when this kernel
    /// cannot make its userfaultfd (then every checkpoint is whole).
    pub dirty: Option<crate::Dirty>,
    /// Its placeholders of memory kept at home, if it has any: the userfaultfd they are
    /// registered with (missing pages, user-mode faults only) and the regions. The
    /// first touch of one waits on it; its reader must bring the process home.
    pub at_home: Option<(OwnedFd, Vec<crate::HomeRegion>)>,
}

/// Page sections arriving from the image-reading thread, and the way back
/// for their buffers.
struct PageStream<'w, 'm> {
    rx: Receiver<Result<Option<Piece<'m>>>>,
    back: Sender<Vec<u8>>,
    /// With an image restored in place: the threads that write its pages.
    writers: Option<&'w Writers<'m>>,
}

/// A section of a process image after its Process section, as the tracer receives it.
enum Piece<'m> {
    /// Read from a stream (checksum verified).
    Owned(OwnedSection),
    /// Pages of a mapped image, in place: their checksum is verified by whoever writes
    /// them.
    InPlace(PagesInPlace<'m>),
}

/// The sections of one process image after its Process section.
trait Sections<'m>: Send {
    fn next_piece(&mut self) -> Result<Option<Piece<'m>>>;
    /// A buffer of an [`Piece::Owned`] Pages section, given back for reuse.
    fn recycle(&mut self, _buf: Vec<u8>) {}
}

impl<'m, R: Read + Send> Sections<'m> for ImageReader<R> {
    fn next_piece(&mut self) -> Result<Option<Piece<'m>>> {
        Ok(self.next_owned()?.map(Piece::Owned))
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        ImageReader::recycle(self, buf);
    }
}

impl<'m, S: Sections<'m> + ?Sized> Sections<'m> for Box<S> {
    fn next_piece(&mut self) -> Result<Option<Piece<'m>>> {
        (**self).next_piece()
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        (**self).recycle(buf);
    }
}

/// A process image in a mapped file: its pages are taken in place.
struct InPlaceSections<'r, 'm>(ImageReader<&'r mut &'m [u8]>);

impl<'m> Sections<'m> for InPlaceSections<'_, 'm> {
    fn next_piece(&mut self) -> Result<Option<Piece<'m>>> {
        Ok(self.0.next_in_place()?.map(|s| match s {
            InPlaceSection::Pages(p) => Piece::InPlace(p),
            InPlaceSection::End { page_bytes } => Piece::Owned(OwnedSection::End { page_bytes }),
            InPlaceSection::Process(p) => Piece::Owned(OwnedSection::Process(p)),
        }))
    }
}

/// A [`Source::InPlace`] (its stream type unused).
type InPlaceSource<'r, 'm> = Source<'r, 'm, std::io::Empty>;

/// Where the process images of a restore are read from.
enum Source<'r, 'm, R> {
    Stream(&'r mut R),
    /// A mapped image file (what is left of it): pages are written from it in place by
    /// `writers`.
    InPlace { rest: &'r mut &'m [u8], writers: &'r Writers<'m> },
}

impl<'r, 'm, R: Read + Send> Source<'r, 'm, R> {
    /// The next process image: its Process section, and the rest of it.
    fn member(&mut self) -> Result<(ProcessImage, Box<dyn Sections<'m> + '_>)> {
        let not_process = || CheckpointError::from(FormatError::Corrupt("an image does not start with a process section".into()));
        match self {
            Source::Stream(input) => {
                let mut reader = ImageReader::new(&mut **input)?;
                match reader.next_section()? {
                    Some(Section::Process(p)) => Ok((*p, Box::new(reader))),
                    _ => Err(not_process()),
                }
            }
            Source::InPlace { rest, .. } => {
                let mut reader = ImageReader::new(&mut **rest)?;
                match reader.next_in_place()? {
                    Some(InPlaceSection::Process(p)) => Ok((*p, Box::new(InPlaceSections(reader)))),
                    _ => Err(not_process()),
                }
            }
        }
    }

    fn writers(&self) -> Option<&'r Writers<'m>> {
        match self {
            Source::InPlace { writers, .. } => Some(*writers),
            Source::Stream(_) => None,
        }
    }
}

/// Threads that verify pages of a mapped image and write them into the processes being
/// restored, while the tracer goes on (process_vm_writev needs no ptrace stop: any
/// thread may write): page writing, most of a restore, then uses every CPU, as a
/// CRIU restore does with a process per CPU.
struct Writers<'m> {
    jobs: Sender<WriteJob<'m>>,
}

struct WriteJob<'m> {
    pid: i32,
    pages: PagesInPlace<'m>,
    fill: Option<std::sync::Arc<Fill>>,
    done: Sender<Result<()>>,
}

/// A userfaultfd of a process being restored, and the regions registered with it (for
/// missing pages): pages there are put in place by UFFDIO_COPY.
struct Fill {
    uffd: herd_kernel::uffd::Uffd,
    ranges: Vec<(u64, u64)>,
}

impl Fill {
    /// Puts `data` (whole pages) at `addr` if that lies in a registered region; None if
    /// not (another way must write it).
    fn put(&self, addr: u64, data: &[u8]) -> Option<Result<()>> {
        let end = addr + data.len() as u64;
        if !self.ranges.iter().any(|&(start, len)| start <= addr && end <= start + len) {
            return None;
        }
        // (process_vm_writev cannot reach a registered region's missing pages: they
        // are the userfaultfd's, and it takes no fault from the kernel.)
        let mut off = 0;
        Some(loop {
            match self.uffd.copy(addr + off as u64, &data[off..]) {
                Ok(herd_kernel::uffd::Fill::Done) => break Ok(()),
                // The layout changed meanwhile (it cannot, the process is stopped): again.
                Ok(herd_kernel::uffd::Fill::Again { bytes }) => off += bytes as usize,
                Ok(other) => break Err(CheckpointError::Incompatible(format!("filling memory at {:#x}: {other:?}", addr + off as u64))),
                Err(e) => break Err(e.into()),
            }
        })
    }
}

impl WriteJob<'_> {
    fn run(&self) -> Result<()> {
        self.pages.verify()?;
        write_pages(self.pid, self.fill.as_deref(), self.pages.addr, self.pages.data())
    }
}

impl<'m> Writers<'m> {
    /// Runs `f` with writers on `n` threads of their own, ended when it returns.
    fn with<T>(n: usize, f: impl FnOnce(&Writers<'m>) -> T) -> T {
        let (jobs, rx) = std::sync::mpsc::channel::<WriteJob<'m>>();
        let rx = std::sync::Mutex::new(rx);
        std::thread::scope(|s| {
            for _ in 0..n {
                let rx = &rx;
                s.spawn(move || loop {
                    let Ok(job) = rx.lock().expect("writers' queue").recv() else { return };
                    let written = job.run();
                    let WriteJob { done, fill, .. } = job;
                    drop(fill);
                    let _ = done.send(written);
                });
            }
            f(&Writers { jobs })
        })
    }

    /// Queues `pages` for process `pid`; its outcome comes on `done`. False if the
    /// writers are gone.
    fn send(&self, pid: i32, pages: PagesInPlace<'m>, fill: Option<std::sync::Arc<Fill>>, done: &Sender<Result<()>>) -> bool {
        self.jobs.send(WriteJob { pid, pages, fill, done: done.clone() }).is_ok()
    }
}

/// Writes `data` at `addr` in process `pid`: by UFFDIO_COPY in a region registered with
/// `fill`, else by process_vm_writev, or /proc/PID/mem where that cannot (a page the
/// process may not write).
fn write_pages(pid: i32, fill: Option<&Fill>, addr: u64, data: &[u8]) -> Result<()> {
    if let Some(put) = fill.and_then(|f| f.put(addr, data)) {
        return put;
    }
    if mem::write(pid, addr, data).is_err() {
        ProcMem::open(pid, true)?.write(addr, data)?;
    }
    Ok(())
}

/// Where a restored image goes.
enum Into<'a> {
    /// A new process, a child of the caller, with the image's open files and
    /// the pid `pid` says; `memory` holds the tree's memory objects, made by
    /// [`make_memory`], which its `VmaKind::Memory` regions map; `epolls` the tree's
    /// shared epolls it fills (its fd holding one, what it watches), once its own
    /// descriptors are in place.
    Fresh { pid: PidMode, memory: &'a [Object], epolls: &'a [(i32, Vec<herd_image::EpollTarget>)] },
    /// A new process that runs as a migrated guest: no open files (they stay
    /// with the deputy at home), cwd `/`, and `filter` (a seccomp program,
    /// `struct sock_filter` array) installed last with a user-notification
    /// listener (`filter_at_home` instead for a process that maps memory kept at
    /// home). With `lazy` (post-copy), those runs of pages (address,
    /// length) are not in the image: the anonymous VMAs holding them are
    /// registered with a userfaultfd, handed back in [`Built::uffd`]. With `track`,
    /// its writes are tracked from before it runs (`crate::Dirty::arm_restored`).
    Remote { filter: &'a [u8], filter_at_home: &'a [u8], lazy: Option<&'a [(u64, u64)]>, track: bool },
    /// The deputy at home, already seized and stopped, which keeps its pid,
    /// files and credentials; `gadget` is a `syscall` instruction in it. With `lazy`
    /// (post-copy home: the runs, and /dev/userfaultfd opened by herdd), those runs
    /// are registered with a userfaultfd that takes the kernel's faults too
    /// ([`register_lazy_home`]), handed back in [`Built::uffd`].
    Deputy { gadget: u64, lazy: Option<(&'a [(u64, u64)], std::os::fd::BorrowedFd<'a>)> },
}

/// What [`build`] has made so far in the process, for its caller to undo
/// when it fails.
#[derive(Default)]
struct Made {
    /// The restore's trampoline (address, length) while it is mapped.
    tramp: Option<(u64, u64)>,
    /// The threads other than the main one, created and stopped. They are
    /// detached with the process, or killed (and reaped) before it.
    threads: Vec<Tracee>,
}

impl Made {
    /// Ends the threads made so far (before the main thread is killed: it can
    /// be reaped only once they are).
    fn kill_threads(&mut self) {
        for t in self.threads.drain(..) {
            t.kill();
        }
    }
}

/// What [`build`] made besides the pages.
struct Built {
    page_bytes: u64,
    /// The seccomp listener, in the restored process.
    listener_fd: Option<i32>,
    /// The userfaultfd of a post-copy restore (herdd's copy; the process has none).
    uffd: Option<OwnedFd>,
    /// A guest's write tracking (incremental checkpoints).
    dirty: Option<crate::Dirty>,
    /// The userfaultfd of a guest's placeholders of memory kept at home, and those.
    home_uffd: Option<OwnedFd>,
    home: Vec<crate::HomeRegion>,
}

/// Reads an image from `input` and starts the process it holds. The image
/// is read and checksummed on a second thread while this one (the tracer)
/// writes the previous batch of pages into the new process.
pub fn restore<R: Read + Send>(mut input: R, hashes: &mut FileHashes, pid: PidMode) -> Result<Restored> {
    let mut magic = [0u8; 8];
    let mut got = 0;
    while got < magic.len() {
        match input.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FormatError::Io(e).into()),
        }
    }
    if got == magic.len() && magic == TREE_MAGIC {
        let tree = read_tree_after_magic(&mut input)?;
        return restore_tree(tree, Source::Stream(&mut input), hashes, pid);
    }
    restore_new(Source::Stream(&mut (&magic[..got]).chain(input)), hashes, Into::Fresh { pid, memory: &[], epolls: &[] }).map(|(r, ..)| r)
}

/// Restores the image in `file`, as [`restore`] does, but in place: the file is mapped,
/// and its pages go into the processes straight from the page cache, written by a
/// thread per CPU while this one (the tracer) builds the rest. A file that cannot be
/// mapped (a pipe) is read as a stream.
pub fn restore_file(file: &std::fs::File, hashes: &mut FileHashes, pid: PidMode) -> Result<Restored> {
    let map = match mem::MappedFile::map(file) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!("the image is read as a stream: {e}");
            return restore(std::io::BufReader::with_capacity(1 << 20, file), hashes, pid);
        }
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    Writers::with(cpus, |writers| {
        let mut rest = map.bytes();
        if let Some(after) = rest.strip_prefix(&TREE_MAGIC[..]) {
            rest = after;
            let tree = read_tree_after_magic(&mut rest)?;
            return restore_tree(tree, InPlaceSource::InPlace { rest: &mut rest, writers }, hashes, pid);
        }
        restore_new(InPlaceSource::InPlace { rest: &mut rest, writers }, hashes, Into::Fresh { pid, memory: &[], epolls: &[] }).map(|(r, ..)| r)
    })
}

/// Restores a tree image (its header already read) from `input`: every
/// member is forked first, by its parent, then each is built from its image
/// in turn; they are let go together once all are built.
fn restore_tree<R: Read + Send>(tree: TreeImage, mut src: Source<'_, '_, R>, hashes: &mut FileHashes, mode: PidMode) -> Result<Restored> {
    let t0 = Instant::now();
    let root_pid = tree.members[0].pid;
    let others = tree.members.iter().skip(1).map(|m| (m.pid, true));
    check_pids(root_pid, others, mode)?;
    if let Some(SharedOfd::Tcp(c)) = tree.ofds.iter().find(|o| matches!(o, SharedOfd::Tcp(_))) {
        if effective_caps() & (1 << 12) == 0 {
            return Err(CheckpointError::Incompatible(format!("it holds a TCP connection ({} -> {}), which is made again with TCP_REPAIR: that needs CAP_NET_ADMIN (run herd restart as root)", c.local, c.remote)));
        }
    }
    let memory = make_memory(&tree)?;
    let plan = tree_plan(&tree, mode, &memory)?;
    let mut child = restorer::spawn_tree(&plan)?;
    let init = child.init.take();
    let top = init.as_ref().map_or(child.pid, |i| i.pid);
    tracing::debug!(pid = child.pid, "restore: {} restorer children forked at {:.1} ms", tree.members.len(), t0.elapsed().as_secs_f64() * 1e3);
    let mut tracees: Vec<(usize, Tracee)> = Vec::new();
    let mut made: Vec<Made> = Vec::new();
    let mut warnings = Vec::new();
    let built = (|| -> Result<u64> {
        for (idx, m) in tree.live() {
            let pid = child.pids[idx].ok_or_else(|| CheckpointError::Proc { pid: m.pid, what: "its restorer did not report".into() })?;
            tracees.push((idx, Tracee::seize(pid, abi::PTRACE_O_EXITKILL | abi::PTRACE_O_TRACECLONE)?));
        }
        set_groups(&tree, &mut tracees, mode, &child.pids, &mut warnings)?;
        let mut page_bytes = 0;
        for (n, (idx, tracee)) in tracees.iter_mut().enumerate() {
            let m = &tree.members[*idx];
            let writers = src.writers();
            let (image, reader) = src.member()?;
            let prep = m.prepare.as_ref().expect("a live member has one");
            let t = &image.task;
            if t.pid != m.pid || image.files != prep.files || t.cwd != prep.cwd || t.umask != prep.umask || t.rlimits != prep.rlimits || t.personality != prep.personality {
                return Err(FormatError::Corrupt(format!("the image of process {} does not match the tree header (image {n} is of process {})", m.pid, t.pid)).into());
            }
            preflight(&image, hashes)?;
            made.push(Made::default());
            // The shared epolls this member fills: at its fds that hold them.
            let mut epolls = Vec::new();
            for (o, ofd) in tree.ofds.iter().enumerate() {
                if let SharedOfd::Epoll { owner, targets } = ofd {
                    if *owner as usize == *idx {
                        let f = image.files.iter().find(|f| matches!(f.kind, FileKind::Shared { ofd } if ofd as usize == o));
                        let f = f.ok_or_else(|| FormatError::Corrupt(format!("process {} fills shared epoll {o} but holds it at no fd", m.pid)))?;
                        epolls.push((f.fd, targets.clone()));
                    }
                }
            }
            let b = stream_build(tracee, Some(&child), &image, reader, writers, &mut warnings, Into::Fresh { pid: mode, memory: &memory, epolls: &epolls }, made.last_mut().expect("pushed"))?;
            page_bytes += b.page_bytes;
        }
        Ok(page_bytes)
    })();
    match built {
        Ok(page_bytes) => {
            seal_memory(&tree, &memory, &mut warnings);
            // The network lock a checkpoint with --kill left for the connections
            // (crate::netlock): lifted now that they exist again, before anyone runs.
            let conns: Vec<_> = tree.ofds.iter().filter_map(|o| if let SharedOfd::Tcp(c) = o { Some((c.local, c.remote)) } else { None }).collect();
            if !conns.is_empty() {
                if let Err(e) = crate::netlock::unlock(&conns) {
                    warnings.push(format!("the network lock of its TCP connections could not be lifted ({e}): their peers' packets may still be dropped (nft list tables: herd_tcp_*)"));
                }
            }
            let mut tids = Vec::new();
            // Children first, so that a parent that runs finds them all. Past this
            // point the tree is whole: a member that cannot be let go (killed from
            // outside meanwhile) is said, not a reason to end the others.
            for ((idx, tracee), mut threads) in tracees.into_iter().zip(made).rev() {
                let pid = tracee.pid();
                for t in threads.threads.drain(..) {
                    if let Err(e) = t.detach() {
                        warnings.push(format!("a thread of process {pid} could not be let go: {e}"));
                    }
                }
                if idx == 0 {
                    tids.push((tree.members[0].pid, pid));
                }
                if let Err(e) = tracee.detach() {
                    warnings.push(format!("process {pid} could not be let go: {e}"));
                }
            }
            let stats = RestoreStats { total: t0.elapsed(), page_bytes };
            Ok(Restored { pid: child.pid, init, tids, stats, warnings })
        }
        Err(e) => {
            for m in &mut made {
                m.kill_threads();
            }
            let root_seized = tracees.iter().any(|(idx, _)| *idx == 0);
            for (_, t) in tracees.into_iter().rev() {
                t.kill();
            }
            // The root, reaped already if it was seized (we are its tracer and
            // parent): killed again only through the namespace's init, or when it
            // was never seized (its pid is still its own then).
            if init.is_some() || !root_seized {
                let _ = task::kill_and_reap(top);
            }
            Err(e)
        }
    }
}

/// A memory object of a tree made again, held by the restoring process: members
/// open it through /proc/<our pid>/fd.
pub(crate) struct Object {
    file: std::fs::File,
    /// Its seals forbid writing: members map it from a read-only descriptor.
    write_sealed: bool,
}

impl Object {
    fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), std::os::fd::AsRawFd::as_raw_fd(&self.file))
    }
}

/// Makes every memory object of `tree`: a memfd of its size, or, for one a
/// descriptor holds, the file that descriptor had (a memfd or an unnamed file in
/// its directory) with its contents.
fn make_memory(tree: &TreeImage) -> Result<Vec<Object>> {
    use std::os::fd::FromRawFd;
    let sys = |what: String| move |e: std::io::Error| CheckpointError::Incompatible(format!("{what}: {e}"));
    let mut out = Vec::new();
    for (i, m) in tree.memory.iter().enumerate() {
        let carried = m.ofd.and_then(|o| match &tree.ofds[o as usize] {
            SharedOfd::Contents { kind, mode, contents, .. } => Some((kind, *mode, contents)),
            _ => None,
        });
        let name = match (&m.kind, carried) {
            (_, Some((NamelessKind::Memfd { name, .. }, ..))) => name.clone(),
            (MemoryKind::Memfd { name, .. }, _) => name.clone(),
            (MemoryKind::Anonymous, _) => "herd-shared-memory".into(),
            (MemoryKind::Deleted { path }, _) => path.rsplit('/').next().unwrap_or("deleted").to_string(),
        };
        let raw = match carried {
            Some((NamelessKind::Unlinked { dir, .. }, mode, _)) => {
                let dir = cstring(dir)?;
                // SAFETY: a valid C string; the result is checked.
                unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC, mode & 0o7777) }
            }
            _ => {
                let name = cstring(&name)?;
                // SAFETY: a valid C string; the result is checked.
                unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC) }
            }
        };
        if raw < 0 {
            return Err(sys(format!("making memory object {i} ({name})"))(std::io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor, ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let file = std::fs::File::from(fd);
        if let Some((_, mode, contents)) = carried {
            std::io::Write::write_all(&mut &file, contents).map_err(sys(format!("filling memory object {i} ({name})")))?;
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777)).map_err(sys(format!("giving memory object {i} ({name}) its mode")))?;
        }
        file.set_len(m.size).map_err(sys(format!("sizing memory object {i} ({name}) to {} bytes", m.size)))?;
        let seals = match (&m.kind, carried) {
            (_, Some((NamelessKind::Memfd { seals, .. }, ..))) | (MemoryKind::Memfd { seals, .. }, _) => *seals,
            _ => 0,
        };
        out.push(Object { file, write_sealed: seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0 });
    }
    Ok(out)
}

/// Gives the memfd objects their seals, once their contents are in.
fn seal_memory(tree: &TreeImage, memory: &[Object], warnings: &mut Vec<String>) {
    for (m, o) in tree.memory.iter().zip(memory) {
        let carried = m.ofd.and_then(|i| match &tree.ofds[i as usize] {
            SharedOfd::Contents { kind: NamelessKind::Memfd { seals, .. }, .. } => Some(*seals),
            _ => None,
        });
        let seals = match (&m.kind, carried) {
            (_, Some(s)) => s,
            (MemoryKind::Memfd { seals, .. }, None) => *seals,
            _ => continue,
        };
        // SAFETY: fcntl on our own descriptor.
        if seals != 0 && unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&o.file), libc::F_ADD_SEALS, seals) } != 0 {
            warnings.push(format!("the seals {seals:#x} of memfd {:?} could not be set again: {}", m.kind, std::io::Error::last_os_error()));
        }
    }
}

/// The restorer plan of a tree: each member's files, the shared files, the pipes.
fn tree_plan(tree: &TreeImage, mode: PidMode, memory: &[Object]) -> Result<restorer::TreePlan> {
    let mut members = Vec::new();
    for m in &tree.members {
        let (plan, shared) = match &m.prepare {
            Some(p) => plan_files(&p.files, &p.cwd, p.umask, &p.rlimits, p.personality, PidChoice::Any)?,
            None => plan_files(&[], "/", 0o22, &[], 0, PidChoice::Any)?,
        };
        members.push(restorer::MemberPlan {
            plan,
            shared,
            parent: m.parent.map(|p| p as usize),
            pid: m.pid,
            setsid: m.sid == m.pid && m.zombie.is_none(),
            // A slave of the pseudo-terminal its session has as controlling terminal.
            ctty: tree.ofds.iter().enumerate().find_map(|(i, o)| match o {
                SharedOfd::PtySlave { master, .. } => match tree.ofds.get(*master as usize) {
                    Some(SharedOfd::PtyMaster(p)) if p.session == Some(m.pid) => Some(i),
                    _ => None,
                },
                _ => None,
            }),
            zombie: m.zombie,
        });
    }
    let ofds = tree
        .ofds
        .iter()
        .enumerate()
        .map(|(i, o)| {
            // A file that is a memory object too: opened on the object, made already.
            let object = tree.memory.iter().position(|m| m.ofd == Some(i as u32));
            if let (Some(k), SharedOfd::Contents { flags, offset, .. }) = (object, o) {
                // Through a magic link, which O_NOFOLLOW (mkstemp's) would refuse.
                return Ok(restorer::OfdPlan::Open { path: cstring(&memory[k].path())?, flags: *flags & !libc::O_NOFOLLOW, offset: *offset });
            }
            Ok(match o {
                SharedOfd::File(FileKind::Regular { path, flags, offset } | FileKind::Directory { path, flags, offset }) => {
                    restorer::OfdPlan::Open { path: cstring(path)?, flags: *flags, offset: *offset }
                }
                SharedOfd::File(FileKind::Device { path, flags } | FileKind::PathOnly { path, flags }) => {
                    restorer::OfdPlan::Open { path: cstring(path)?, flags: *flags, offset: 0 }
                }
                SharedOfd::File(_) => return Err(FormatError::Corrupt("a shared file of a kind that is not reopened".into()).into()),
                SharedOfd::PipeEnd { pipe, write, flags } => restorer::OfdPlan::PipeEnd { pipe: *pipe as usize, write: *write, flags: *flags },
                SharedOfd::Outer { fd, .. } => restorer::OfdPlan::Outer { fd: *fd },
                SharedOfd::SocketEnd { pair, end, flags } => restorer::OfdPlan::SocketEnd { pair: *pair as usize, end: usize::from(*end), flags: *flags },
                SharedOfd::Socket { family, kind, protocol, bound, connected, backlog, options, flags } => {
                    let addr = |a: &SockAddr| match a {
                        SockAddr::Inet(i) => sockdiag::sockaddr_bytes(i),
                        SockAddr::Unix(n) => sockdiag::unix_sockaddr_bytes(n),
                        SockAddr::Netlink { portid, groups } => sockdiag::netlink_sockaddr_bytes(*portid, *groups),
                    };
                    let unlink = match bound {
                        Some(SockAddr::Unix(n)) if n.first() != Some(&0) => Some(CString::new(n.clone()).map_err(|_| FormatError::Corrupt("a unix socket path with a NUL byte".into()))?),
                        _ => None,
                    };
                    restorer::OfdPlan::Socket {
                        domain: *family,
                        kind: *kind,
                        protocol: *protocol,
                        options: options.clone(),
                        bind: bound.as_ref().map(addr),
                        unlink,
                        connect: connected.as_ref().map(addr),
                        backlog: backlog.map(|b| b.min(i32::MAX as u32) as i32),
                        flags: *flags,
                    }
                }
                SharedOfd::Event(FileKind::EventFd { count, flags }) => restorer::OfdPlan::EventFd { count: *count, flags: *flags },
                SharedOfd::Event(FileKind::TimerFd { clockid, flags, interval_ns, value_ns, ticks }) => {
                    restorer::OfdPlan::TimerFd { clockid: *clockid, flags: *flags, interval_ns: *interval_ns, value_ns: *value_ns, ticks: *ticks }
                }
                SharedOfd::Event(FileKind::SignalFd { mask, flags }) => restorer::OfdPlan::SignalFd { mask: *mask, flags: *flags },
                SharedOfd::Event(FileKind::Inotify { flags, watches }) => restorer::OfdPlan::Inotify {
                    flags: *flags,
                    watches: watches.iter().map(|w| Ok((w.wd, cstring(&w.path)?, w.mask))).collect::<Result<_>>()?,
                },
                SharedOfd::Event(_) => return Err(FormatError::Corrupt("a shared event file of a kind that is not made shared".into()).into()),
                SharedOfd::PtyMaster(p) => {
                    // SAFETY: termios2 is plain integers; zeroed is a valid value, filled below.
                    let mut termios: libc::termios2 = unsafe { std::mem::zeroed() };
                    (termios.c_iflag, termios.c_oflag, termios.c_cflag, termios.c_lflag, termios.c_line) = (p.iflag, p.oflag, p.cflag, p.lflag, p.line);
                    termios.c_cc.copy_from_slice(&p.cc);
                    (termios.c_ispeed, termios.c_ospeed) = (p.ispeed, p.ospeed);
                    let [ws_row, ws_col, ws_xpixel, ws_ypixel] = p.winsize;
                    let winsize = libc::winsize { ws_row, ws_col, ws_xpixel, ws_ypixel };
                    restorer::OfdPlan::PtyMaster(herd_kernel::pty::PtyPlan { flags: p.flags, termios, winsize, locked: p.locked, packet: p.packet })
                }
                SharedOfd::PtySlave { master, flags } => restorer::OfdPlan::PtySlave { master: *master as usize, flags: *flags },
                SharedOfd::Epoll { .. } => restorer::OfdPlan::Epoll,
                SharedOfd::Fanotify(f) => {
                    use herd_image::tree::FanotifyOn;
                    let marks = f.marks.iter().map(|m| {
                        let on = match m.on {
                            FanotifyOn::Inode => 0,
                            FanotifyOn::Mount => libc::FAN_MARK_MOUNT,
                            FanotifyOn::Filesystem => libc::FAN_MARK_FILESYSTEM,
                        };
                        Ok((on | m.flags, m.mask, m.ignored, cstring(&m.path)?))
                    });
                    restorer::OfdPlan::Fanotify { flags: f.flags, event_flags: f.event_flags, marks: marks.collect::<Result<_>>()? }
                }
                SharedOfd::Tcp(c) => {
                    let dump = herd_kernel::tcprepair::TcpDump {
                        send_seq: c.send_seq,
                        recv_seq: c.recv_seq,
                        sent: c.sent.clone(),
                        unsent: c.unsent.clone(),
                        received: c.received.clone(),
                        mss: c.mss,
                        wscale: c.wscale,
                        sack: c.sack,
                        timestamp: c.timestamp,
                        window: c.window,
                    };
                    let domain = if c.local.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
                    let plan = herd_kernel::tcprepair::TcpPlan::new(domain, sockdiag::sockaddr_bytes(&c.local), sockdiag::sockaddr_bytes(&c.remote), c.options.clone(), dump);
                    restorer::OfdPlan::Tcp { plan: Box::new(plan), flags: c.flags }
                }
                SharedOfd::Contents { kind, flags, offset, mode, contents } => restorer::OfdPlan::Contents {
                    make: match kind {
                        NamelessKind::Unlinked { dir, .. } => restorer::Nameless::Tmpfile { dir: cstring(dir)? },
                        NamelessKind::Memfd { name, seals } => restorer::Nameless::Memfd { name: cstring(name)?, seals: *seals },
                    },
                    flags: *flags,
                    offset: *offset,
                    mode: *mode,
                    contents: contents.clone(),
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let pipes = tree
        .pipes
        .iter()
        .map(|p| Ok(restorer::PipePlan { contents: p.contents.clone(), capacity: p.capacity, fifo: p.fifo.as_deref().map(cstring).transpose()? }))
        .collect::<Result<Vec<_>>>()?;
    let socket_pairs = tree
        .socket_pairs
        .iter()
        .map(|p| restorer::SocketPairPlan { kind: p.kind, queued: p.queued.clone(), shutdown: p.shutdown })
        .collect();
    let mode = match mode {
        PidMode::Any => restorer::PidMode::Any,
        PidMode::Same => restorer::PidMode::Same,
        PidMode::NewNamespace => restorer::PidMode::NewNamespace,
    };
    Ok(restorer::TreePlan { members, ofds, pipes, socket_pairs, mode })
}

/// Puts each member in its process group: group leaders first, then the
/// others. A group whose leader is not in the tree is kept only when it is
/// the root's (then the member stays in the restorer's group, like the root).
fn set_groups(tree: &TreeImage, tracees: &mut [(usize, Tracee)], mode: PidMode, pids: &[Option<i32>], warnings: &mut Vec<String>) -> Result<()> {
    // A member's pid as the restored processes see it.
    let local = |idx: usize| if mode == PidMode::Any { pids[idx].unwrap_or(0) } else { tree.members[idx].pid };
    let (vdso_at, vdso) = host::own_vdso().ok_or_else(|| CheckpointError::Incompatible("herd has no vDSO".into()))?;
    let gadget = vdso_at + host::syscall_offset(&vdso).ok_or_else(|| CheckpointError::Incompatible("no syscall instruction in the vDSO".into()))?;
    let root_pgid = tree.members[0].pgid;
    for leaders in [true, false] {
        for (idx, t) in tracees.iter_mut() {
            let m = &tree.members[*idx];
            // The root's group stays herd restart's (the terminal's foreground
            // group, for an interactive job), and so do members of it.
            if (m.pgid == m.pid) != leaders || m.sid == m.pid || m.pgid == root_pgid {
                continue;
            }
            let Some(leader) = tree.members.iter().position(|x| x.pid == m.pgid && x.zombie.is_none()) else {
                warnings.push(format!("process {} was in process group {}, whose leader is not in the image (or a zombie); it joins herd restart's", m.pid, m.pgid));
                continue;
            };
            let base = t.regs()?;
            let mut inj = Injector::new(t, gadget, base);
            let r = inj.call(abi::SYS_SETPGID, &[0, local(leader) as u64])?;
            if r < 0 {
                warnings.push(format!("process {} could not join process group {}: {}", m.pid, m.pgid, std::io::Error::from_raw_os_error(-r as i32)));
            }
            t.set_regs(&base)?;
        }
    }
    Ok(())
}

/// Restores a migrated process as a guest of this node: see `Into::Remote`
/// (`filters`: its seccomp filter, and the one for a process that maps memory kept at
/// home). Returns it running, the seccomp listener that receives its trapped
/// system calls, and with `lazy` (post-copy: the runs of pages that come
/// later, as [`crate::Frozen::write_postcopy`] returned them) the
/// userfaultfd that must fill them.
pub fn restore_remote<R: Read + Send>(mut input: R, hashes: &mut FileHashes, filters: (&[u8], &[u8]), lazy: Option<&[(u64, u64)]>, track: bool) -> Result<RemoteRestore> {
    let (restored, listener, b) = restore_new(Source::Stream(&mut input), hashes, Into::Remote { filter: filters.0, filter_at_home: filters.1, lazy, track })?;
    Ok(RemoteRestore {
        restored,
        listener: listener.expect("a remote restore installs a listener"),
        uffd: b.uffd,
        dirty: b.dirty,
        at_home: b.home_uffd.map(|fd| (fd, b.home)),
    })
}

/// A [`restore_into`] done: the process is ready to run at home.
#[derive(Debug)]
pub struct IntoDone {
    pub stats: RestoreStats,
    pub warnings: Vec<String>,
    /// Post-copy: the userfaultfd of the pages still to come.
    pub uffd: Option<OwnedFd>,
}

/// A failed [`restore_into`]: the deputy is left holding only the restore's
/// trampoline (`shell`: address and length; its first bytes are `syscall;
/// int3`, the rest is scratch), from which it can be made a deputy again.
#[derive(Debug)]
pub struct IntoFailed {
    pub error: CheckpointError,
    pub shell: Option<(u64, u64)>,
    /// Nothing of the deputy was changed (the image was refused or ended before the
    /// restore began): it is the deputy it was.
    pub untouched: bool,
}

/// Brings a migrated process home: its image replaces the memory, registers
/// and signal state of `deputy` (the original process, stopped), which keeps
/// its pid, parent, open files, cwd and credentials. On success the deputy is
/// at an interrupt stop with the image's registers, ready to be detached.
/// With `lazy` (post-copy home: the runs of pages that come later, and
/// /dev/userfaultfd opened by the caller), the userfaultfd that must fill them
/// comes back in [`IntoDone::uffd`].
pub fn restore_into<R: Read + Send>(
    deputy: &mut Tracee,
    gadget: u64,
    input: R,
    hashes: &mut FileHashes,
    lazy: Option<(&[(u64, u64)], std::os::fd::BorrowedFd<'_>)>,
) -> std::result::Result<IntoDone, IntoFailed> {
    let t0 = Instant::now();
    let fail = |error| IntoFailed { error, shell: None, untouched: true };
    let mut reader = ImageReader::new(input).map_err(|e| fail(e.into()))?;
    let image = match reader.next_section().map_err(|e| fail(e.into()))? {
        Some(Section::Process(p)) => *p,
        _ => return Err(fail(FormatError::Corrupt("image does not start with a process section".into()).into())),
    };
    preflight(&image, hashes).map_err(fail)?;
    if let Some((runs, _)) = lazy {
        check_lazy(&image, runs).map_err(fail)?;
    }
    let mut warnings = Vec::new();
    if !image.threads.is_empty() {
        // Its other threads are made again here, by clone3 in the deputy.
        deputy.set_options(abi::PTRACE_O_TRACECLONE).map_err(|e| fail(e.into()))?;
    }
    let mut made = Made::default();
    let built = stream_build(deputy, None, &image, reader, None, &mut warnings, Into::Deputy { gadget, lazy }, &mut made);
    let tramp = made.tramp;
    match built {
        Ok(b) => {
            for t in made.threads.drain(..) {
                if let Err(e) = t.detach() {
                    warnings.push(format!("a thread made at home could not be let go: {e}"));
                }
            }
            Ok(IntoDone { stats: RestoreStats { total: t0.elapsed(), page_bytes: b.page_bytes }, warnings, uffd: b.uffd })
        }
        Err(error) => {
            // The threads made so far end (alone: a SIGKILL would end the deputy too),
            // then only the trampoline is left, so the caller can make a deputy of it again.
            if let Some((at, len)) = tramp {
                for mut t in made.threads.drain(..) {
                    let base = deputy_regs_or_default(&t);
                    let mut inj = Injector::new(&mut t, at, base);
                    inj.set_stack(at + len - 64);
                    let _ = inj.call(abi::SYS_EXIT, &[0]);
                }
            }
            // (Memory kept at home stays: the process still runs away.)
            let shell = tramp.and_then(|(at, len)| {
                let mut inj = Injector::new(deputy, at, deputy_regs_or_default(deputy));
                inj.set_stack(at + len - 64);
                let keep: Vec<(u64, u64)> = std::iter::once((at, len)).chain(crate::HomeRegion::ranges(&image.vmas)).collect();
                unmap_all_but(&mut inj, &keep).is_ok().then_some((at, len))
            });
            Err(IntoFailed { error, shell, untouched: false })
        }
    }
}

/// Unmaps everything of the tracee but the ranges of `keep` (address, length; one
/// holds the gadget the injector uses).
pub fn unmap_all_but(inj: &mut Injector<'_>, keep: &[(u64, u64)]) -> herd_kernel::Result<()> {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut from = 0u64;
    for (at, len) in keep {
        if at > from {
            inj.call_ok("munmap between kept regions", abi::SYS_MUNMAP, &[from, at - from])?;
        }
        from = from.max(at + len);
    }
    inj.call_ok("munmap above the kept regions", abi::SYS_MUNMAP, &[from, abi::TASK_SIZE_4L - from])?;
    Ok(())
}

fn deputy_regs_or_default(t: &Tracee) -> Regs {
    t.regs().unwrap_or_default()
}

type NewRestore = (Restored, Option<OwnedFd>, Built);

fn restore_new<R: Read + Send>(mut src: Source<'_, '_, R>, hashes: &mut FileHashes, into: Into<'_>) -> Result<NewRestore> {
    let t0 = Instant::now();
    let writers = src.writers();
    let (image, reader) = src.member()?;
    preflight(&image, hashes)?;
    if let Into::Remote { lazy: Some(runs), .. } = into {
        check_lazy(&image, runs)?;
    }
    let remote = matches!(into, Into::Remote { .. });
    let choice = match into {
        Into::Fresh { pid, .. } => pid_choice(&image, pid)?,
        _ => PidChoice::Any,
    };
    let mut child = restorer::spawn(&child_plan(&image, remote, choice)?)?;
    let init = child.init.take();
    tracing::debug!(pid = child.pid, "restore: restorer child forked at {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
    // Threads are made by injected clone3 calls; each new one is attached as it is made.
    let mut tracee = match Tracee::seize(child.pid, abi::PTRACE_O_EXITKILL | abi::PTRACE_O_TRACECLONE) {
        Ok(t) => t,
        Err(e) => {
            // never seized: end and reap it ourselves (in a new namespace: its init)
            let _ = task::kill_and_reap(init.as_ref().map_or(child.pid, |i| i.pid));
            return Err(e.into());
        }
    };
    let mut warnings = Vec::new();
    let mut made = Made::default();
    let built = stream_build(&mut tracee, Some(&child), &image, reader, writers, &mut warnings, into, &mut made)
        .and_then(|b| {
            let listener = match b.listener_fd {
                Some(fd) => Some(PidFd::open(child.pid)?.get_fd(fd)?),
                None => None,
            };
            Ok((listener, b))
        });
    match built {
        Ok((listener, b)) => {
            let page_bytes = b.page_bytes;
            let pid = tracee.pid();
            let mut tids = vec![(image.task.pid, pid)];
            for (th, t) in image.threads.iter().zip(made.threads.drain(..)) {
                tids.push((th.tid, t.pid()));
                t.detach()?;
            }
            tracee.detach()?;
            Ok((Restored { pid, init, tids, stats: RestoreStats { total: t0.elapsed(), page_bytes }, warnings }, listener, b))
        }
        Err(e) => {
            made.kill_threads();
            tracee.kill();
            if let Some(i) = init {
                let _ = task::kill_and_reap(i.pid);
            }
            Err(e)
        }
    }
}

/// Runs [`build`] while a second thread reads and checksums the page sections.
#[allow(clippy::too_many_arguments)]
fn stream_build<'m, S: Sections<'m>>(
    tracee: &mut Tracee,
    child: Option<&RestorerChild>,
    image: &ProcessImage,
    mut reader: S,
    writers: Option<&Writers<'m>>,
    warnings: &mut Vec<String>,
    into: Into<'_>,
    made: &mut Made,
) -> Result<Built> {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let (back, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        s.spawn(move || loop {
            while let Ok(buf) = back_rx.try_recv() {
                reader.recycle(buf);
            }
            let next = reader.next_piece();
            let more = matches!(next, Ok(Some(Piece::Owned(OwnedSection::Pages { .. }) | Piece::InPlace(_))));
            if tx.send(next).is_err() || !more {
                return;
            }
        });
        // Tracer and tracee on one CPU while the image is built by injected calls (the
        // reader, made above, keeps every CPU); then the process and its threads get
        // the CPUs they had.
        let mut pin = herd_kernel::task::OneCpu::here();
        let main = tracee.pid();
        if let Some(p) = pin.as_mut() {
            p.add(main);
        }
        // On an early error `pages` is dropped here, which ends the reader.
        let built = build(tracee, child, image, PageStream { rx, back, writers }, warnings, into, made)?;
        if let Some(p) = &pin {
            // The threads it made inherited the pin. (The main thread's CPUs come back
            // when `pin` is dropped.)
            for tid in made.threads.iter().map(|t| t.pid()) {
                if let Err(e) = p.release_like(tid, main) {
                    warnings.push(format!("thread {tid} keeps running on one CPU: {e}"));
                }
            }
        }
        Ok(built)
    })
}

/// Checks that the lazily sent runs of a post-copy image are whole pages, in
/// ascending order, each inside one private anonymous VMA. (Pages of the image
/// in those VMAs are written before the registration: they never fault.)
fn check_lazy(image: &ProcessImage, runs: &[(u64, u64)]) -> Result<()> {
    let bad = |why: String| -> Result<()> { Err(FormatError::Corrupt(format!("post-copy page runs: {why}")).into()) };
    let mut last_end = 0u64;
    for &(a, l) in runs {
        if l == 0 || a % PAGE != 0 || l % PAGE != 0 || a.checked_add(l).is_none() {
            return bad(format!("{a:#x}+{l:#x} is not a run of whole pages"));
        }
        if a < last_end {
            return bad(format!("{a:#x} is out of order or overlaps"));
        }
        last_end = a + l;
        let inside = image.vmas.iter().any(|v| {
            v.contains(a, a + l) && !v.shared && matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap | VmaKind::Stack)
        });
        if !inside {
            return bad(format!("{a:#x}+{l:#x} is not inside a private anonymous region"));
        }
    }
    Ok(())
}

/// Registers the VMAs of `image` that hold lazily sent runs with a new
/// userfaultfd made inside the process (see `herd_kernel::uffd`), takes it
/// and closes the process's own copy.
fn register_lazy(inj: &mut Injector<'_>, scratch: &Scratch, image: &ProcessImage, runs: &[(u64, u64)]) -> Result<OwnedFd> {
    let ranges: Vec<(u64, u64)> = image.vmas.iter().filter(|v| runs.iter().any(|&(a, l)| v.contains(a, a + l))).map(|v| (v.start, v.len())).collect();
    register_missing(inj, scratch, &ranges, herd_kernel::uffd::CREATE_FLAGS, "this node cannot take a process by post-copy")
}

/// Registers the VMAs of `image` that hold lazily sent runs with a userfaultfd of
/// the deputy's memory that takes the kernel's faults too (the process runs natively
/// at home, its calls touch missing pages): the deputy cannot make one by
/// userfaultfd(2) without CAP_SYS_PTRACE, so herdd hands it `dev` (/dev/userfaultfd,
/// opened by root) over a socketpair made in it, and the deputy asks the device for
/// one (USERFAULTFD_IOC_NEW). herdd takes it and does the rest itself (UFFDIO_API with
/// fork events, which need herdd's CAP_SYS_PTRACE, and the registrations); the
/// deputy's copies are closed.
fn register_lazy_home(inj: &mut Injector<'_>, scratch: &Scratch, image: &ProcessImage, runs: &[(u64, u64)], dev: std::os::fd::BorrowedFd<'_>) -> Result<OwnedFd> {
    use herd_kernel::uffd;
    use std::os::fd::AsRawFd;
    let pid = inj.tracee().pid();
    let ranges: Vec<(u64, u64)> = image.vmas.iter().filter(|v| runs.iter().any(|&(a, l)| v.contains(a, a + l))).map(|v| (v.start, v.len())).collect();
    let sv = scratch.put(0, &[0u8; 8])?;
    let unix = libc::AF_UNIX as u64;
    inj.call_ok("socketpair for /dev/userfaultfd", abi::SYS_SOCKETPAIR, &[unix, (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64, 0, sv])?;
    let mut pair = [0u8; 8];
    mem::read_ranges(pid, &[(sv, 8)], &mut pair)?;
    let ends = [i32::from_ne_bytes(pair[0..4].try_into().expect("4 bytes")), i32::from_ne_bytes(pair[4..8].try_into().expect("4 bytes"))];
    let mut theirs: Vec<u64> = ends.iter().map(|&e| e as u64).collect();
    let result = (|| -> Result<OwnedFd> {
        // herdd's end of the pair sends the device.
        let ours = PidFd::open(pid)?.get_fd(ends[1])?;
        let byte = [0u8; 1];
        let fds = [dev.as_raw_fd()];
        nix::sys::socket::sendmsg::<()>(ours.as_raw_fd(), &[std::io::IoSlice::new(&byte)], &[nix::sys::socket::ControlMessage::ScmRights(&fds)], nix::sys::socket::MsgFlags::empty(), None)
            .map_err(|e| CheckpointError::Io { what: "handing /dev/userfaultfd to the deputy".into(), source: e.into() })?;
        // The deputy receives it: struct msghdr, one iovec of one byte, a control buffer
        // of CMSG_SPACE(sizeof(int)).
        let (msg, iov, data, control) = (scratch.base, scratch.base + 64, scratch.base + 80, scratch.base + 96);
        let mut hdr = [0u8; 56];
        hdr[16..24].copy_from_slice(&iov.to_ne_bytes());
        hdr[24..32].copy_from_slice(&1u64.to_ne_bytes());
        hdr[32..40].copy_from_slice(&control.to_ne_bytes());
        hdr[40..48].copy_from_slice(&24u64.to_ne_bytes());
        let mut vec = [0u8; 16];
        vec[0..8].copy_from_slice(&data.to_ne_bytes());
        vec[8..16].copy_from_slice(&1u64.to_ne_bytes());
        scratch.put(0, &hdr)?;
        scratch.put(64, &vec)?;
        scratch.put(96, &[0u8; 24])?;
        inj.call_ok("recvmsg /dev/userfaultfd", abi::SYS_RECVMSG, &[ends[0] as u64, msg, libc::MSG_CMSG_CLOEXEC as u64])?;
        let mut cmsg = [0u8; 24];
        mem::read_ranges(pid, &[(control, 24)], &mut cmsg)?;
        let (level, kind) = (i32::from_ne_bytes(cmsg[8..12].try_into().expect("4 bytes")), i32::from_ne_bytes(cmsg[12..16].try_into().expect("4 bytes")));
        if level != libc::SOL_SOCKET || kind != libc::SCM_RIGHTS {
            return Err(CheckpointError::Incompatible("the deputy did not receive /dev/userfaultfd".into()));
        }
        let devfd = i32::from_ne_bytes(cmsg[16..20].try_into().expect("4 bytes")) as u64;
        theirs.push(devfd);
        let fd = inj.call_ok("ioctl(USERFAULTFD_IOC_NEW)", uffd::SYS_IOCTL, &[devfd, uffd::USERFAULTFD_IOC_NEW, uffd::CREATE_FLAGS])? as u64;
        theirs.push(fd);
        let taken = uffd::Uffd::from_fd(PidFd::open(pid)?.get_fd(fd as i32)?, pid);
        taken.handshake(uffd::POSTCOPY_FEATURES | uffd::FEATURE_EVENT_FORK)?;
        for &(start, len) in &ranges {
            taken.register_missing(start, len)?;
        }
        Ok(taken.into())
    })();
    for fd in theirs {
        inj.call_ok("close a descriptor of the userfaultfd's set-up", abi::SYS_CLOSE, &[fd])?;
    }
    result
}

/// Registers `ranges` (address, length) for missing-page faults with a new
/// userfaultfd made inside the process with `flags`, takes it and closes the
/// process's own copy. `cannot` says what fails without one.
fn register_missing(inj: &mut Injector<'_>, scratch: &Scratch, ranges: &[(u64, u64)], flags: u64, cannot: &str) -> Result<OwnedFd> {
    use herd_kernel::uffd;
    let pid = inj.tracee().pid();
    let fd = inj.call(uffd::SYS_USERFAULTFD, &[flags])?;
    if fd < 0 {
        return Err(CheckpointError::Incompatible(format!(
            "{cannot}: userfaultfd: {} (herdd must run as root, or vm.unprivileged_userfaultfd = 1)",
            std::io::Error::from_raw_os_error(-fd as i32)
        )));
    }
    let fd = fd as u64;
    let result = (|| -> Result<OwnedFd> {
        let api = scratch.put(0, abi::as_bytes(&uffd::api_args()))?;
        inj.call_ok("ioctl(UFFDIO_API)", uffd::SYS_IOCTL, &[fd, uffd::UFFDIO_API, api])?;
        for &(start, len) in ranges {
            let reg = scratch.put(0, abi::as_bytes(&uffd::register_args(start, len)))?;
            inj.call_ok("ioctl(UFFDIO_REGISTER)", uffd::SYS_IOCTL, &[fd, uffd::UFFDIO_REGISTER, reg])?;
        }
        Ok(PidFd::open(pid)?.get_fd(fd as i32)?)
    })();
    inj.call_ok("close the userfaultfd", abi::SYS_CLOSE, &[fd])?;
    result
}

/// Checks that this machine can run the image before anything is started.
fn preflight(image: &ProcessImage, hashes: &mut FileHashes) -> Result<()> {
    if let Some(inc) = &image.increment {
        return Err(CheckpointError::Incompatible(format!(
            "it is an incremental checkpoint ({} of {}): only the chain it ends, merged (herd_image::chain), is a process",
            inc.id, inc.parent
        )));
    }
    if image.origin.vdso_hash != host::vdso_hash() {
        return Err(CheckpointError::Incompatible(format!(
            "its vDSO differs from this machine's (image made on kernel {}, this is {})",
            image.origin.kernel_release,
            host::kernel_release()
        )));
    }
    let missing = image.origin.xfeatures & !host::xcr0();
    if missing != 0 {
        return Err(CheckpointError::Incompatible(format!(
            "this CPU lacks xsave features {missing:#x} the process may use"
        )));
    }
    let me = task::euid();
    if me != 0 && image.task.uid != me {
        return Err(CheckpointError::Permission {
            pid: image.task.pid,
            why: format!("the image belongs to uid {}, you are uid {me}", image.task.uid),
        });
    }
    let mut checked: HashMap<&str, ()> = HashMap::new();
    for v in &image.vmas {
        if let VmaKind::File { file, .. } = &v.kind {
            if checked.insert(&file.path, ()).is_some() {
                continue;
            }
            match hashes.hash(Path::new(&file.path)) {
                Ok((h, _)) if h == file.hash => {}
                Ok(_) => {
                    return Err(CheckpointError::Incompatible(format!(
                        "mapped file {} differs from the one the image was made with",
                        file.path
                    )))
                }
                Err(e) => {
                    return Err(CheckpointError::Incompatible(format!("mapped file {} cannot be read here: {e}", file.path)))
                }
            }
        }
    }
    Ok(())
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| FormatError::Corrupt(format!("path {s:?} contains a NUL byte")).into())
}

/// Whether the image's pid (and every thread id) can be had as `mode` asks,
/// checked before anything starts.
fn pid_choice(image: &ProcessImage, mode: PidMode) -> Result<PidChoice> {
    let pid = image.task.pid;
    check_pids(pid, image.threads.iter().map(|t| (t.tid, false)), mode)?;
    Ok(match mode {
        PidMode::Any => PidChoice::Any,
        PidMode::Same => PidChoice::Same(pid),
        PidMode::NewNamespace => PidChoice::NewNamespace(pid),
    })
}

/// This process's effective capabilities (a bit per capability number).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").and_then(|v| u64::from_str_radix(v.trim(), 16).ok())))
        .unwrap_or(0)
}

/// Whether the ids of a restore (the root's pid `pid`, then other ids, each
/// marked when it is a process's pid rather than a thread's) can be had as
/// `mode` asks: privileges, and (in the caller's namespace) each id free.
fn check_pids(pid: i32, others: impl Iterator<Item = (i32, bool)>, mode: PidMode) -> Result<()> {
    let unavailable = |why: String| Err(CheckpointError::PidUnavailable { pid, why });
    let (cap, name) = match mode {
        PidMode::Any => return Ok(()),
        PidMode::Same => (40, "CAP_CHECKPOINT_RESTORE"),
        PidMode::NewNamespace => (21, "CAP_SYS_ADMIN"),
    };
    let caps = effective_caps();
    // CAP_SYS_ADMIN also allows choosing pids.
    if caps & (1 << cap) == 0 && caps & (1 << 21) == 0 {
        return unavailable(format!("choosing pids needs {name} (run herd restart as root)"));
    }
    let mut all = std::iter::once((pid, true)).chain(others);
    if mode == PidMode::NewNamespace {
        return match all.find(|&(id, _)| id == 1) {
            Some(_) => unavailable("pid 1 is the new namespace's own init".into()),
            None => Ok(()),
        };
    }
    for (id, process) in all {
        // /proc/ID exists for any task with that id in our namespace, thread or not.
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{id}/comm")) {
            let what = match (id == pid, process) {
                (true, _) => "its pid",
                (false, true) => "the pid of a process of its tree,",
                (false, false) => "the id of one of its threads,",
            };
            return unavailable(format!("{what} {id} is in use (by {})", comm.trim_end()));
        }
    }
    Ok(())
}

fn child_plan(image: &ProcessImage, remote: bool, pid: PidChoice) -> Result<ChildPlan> {
    if remote {
        // A guest's files are at home; its own fd table stays empty.
        return Ok(ChildPlan {
            fds: Vec::new(),
            close_std: vec![0, 1, 2],
            cwd: cstring("/")?,
            cwd_gone: false,
            umask: image.task.umask & 0o777,
            rlimits: image.task.rlimits.iter().map(|r| (r.resource, r.cur, r.max)).collect(),
            personality: image.task.personality,
            pid,
        });
    }
    let t = &image.task;
    let (plan, shared) = plan_files(&image.files, &t.cwd, t.umask, &t.rlimits, t.personality, pid)?;
    if !shared.is_empty() {
        return Err(FormatError::Corrupt("a process image with shared files must be part of a tree image".into()).into());
    }
    Ok(plan)
}

/// What a restorer child prepares for a process with these files, cwd and
/// the like, and the shared files (fd, entry of the tree's table,
/// close-on-exec) it places.
pub(crate) fn plan_files(
    files: &[herd_image::OpenFile],
    cwd: &str,
    umask: u32,
    rlimits: &[herd_image::Rlimit],
    personality: u32,
    pid: PidChoice,
) -> Result<(ChildPlan, restorer::SharedFds)> {
    let mut fds = Vec::new();
    let mut shared = Vec::new();
    for f in files {
        let (path, flags, offset) = match &f.kind {
            FileKind::Regular { path, flags, offset } | FileKind::Directory { path, flags, offset } => (path, *flags, *offset),
            FileKind::Device { path, flags } | FileKind::PathOnly { path, flags } => (path, *flags, 0),
            // Made by injected calls once the process is seized (`state::make_fds`).
            FileKind::EventFd { .. } | FileKind::TimerFd { .. } | FileKind::SignalFd { .. } | FileKind::Epoll { .. } | FileKind::PidFd { .. } | FileKind::Inotify { .. } => continue,
            FileKind::Shared { ofd } => {
                shared.push((f.fd, *ofd as usize, f.cloexec));
                continue;
            }
            FileKind::Inherited { .. } => continue,
        };
        fds.push(FdPlan { fd: f.fd, path: cstring(path)?, flags, offset, cloexec: f.cloexec });
    }
    let close_std = (0..=2).filter(|n| !files.iter().any(|f| f.fd == *n)).collect();
    // A working directory deleted while it was the process's (the kernel calls it
    // "PATH (deleted)"): it was empty and nothing can be made in it. It is made again
    // as a new directory beside where it was (so that `..` is what it was), which
    // the restorer enters and removes.
    let (cwd, cwd_gone) = match cwd.strip_suffix(" (deleted)") {
        Some(gone) if !Path::new(cwd).is_dir() => {
            static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let parent = Path::new(gone).parent().filter(|p| p.is_dir()).unwrap_or(Path::new("/tmp"));
            let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (parent.join(format!(".herd-deleted-cwd-{}-{n}", std::process::id())).to_string_lossy().into_owned(), true)
        }
        _ => (cwd.to_string(), false),
    };
    let plan = ChildPlan {
        fds,
        close_std,
        cwd: cstring(&cwd)?,
        cwd_gone,
        umask: umask & 0o777,
        rlimits: rlimits.iter().map(|r| (r.resource, r.cur, r.max)).collect(),
        personality,
        pid,
    };
    Ok((plan, shared))
}

/// Ranges of the mappings of `pid`, from /proc/PID/maps.
pub fn mapped_ranges(pid: i32) -> Result<Vec<(u64, u64)>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(crate::io_err(format!("reading /proc/{pid}/maps")))?;
    Ok(maps
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
        })
        .collect())
}

/// Whether `ranges` ([start, end) each) cover every byte of `[start, end)`.
fn covered(ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
    let mut ranges = ranges.to_vec();
    ranges.sort_unstable();
    let mut at = start;
    for (a, b) in ranges {
        if a <= at && at < b {
            at = b;
        }
    }
    at >= end
}

/// A free, page-aligned area of `len` bytes below the top of user memory
/// that overlaps none of `taken` (with a page of margin on each side).
pub fn free_area(taken: &[(u64, u64)], len: u64) -> Option<u64> {
    let mut candidate = 1u64 << 32;
    let top = abi::TASK_SIZE_4L;
    while candidate + len < top {
        let lo = candidate - PAGE;
        let hi = candidate + len + PAGE;
        match taken.iter().filter(|(s, e)| *s < hi && *e > lo).map(|(_, e)| *e).max() {
            None => return Some(candidate),
            Some(end) => candidate = (end + PAGE + 0xfffff) & !0xfffff,
        }
    }
    None
}

/// Coming home: the limits the process changed where it ran, set by the process itself
/// (it may lower its own limits, and raise a soft one up to the hard one; herdd setting
/// another user's needs CAP_SYS_RESOURCE, which a node in a container may lack). Those it
/// may not set (a hard limit raised away by a privileged process) are warnings.
fn set_changed_rlimits(inj: &mut Injector<'_>, scratch: &Scratch, pid: i32, rlimits: &[herd_image::Rlimit], warnings: &mut Vec<String>) -> Result<()> {
    let now = crate::procinfo::open(pid).and_then(|p| crate::procinfo::rlimits(&p)).unwrap_or_default();
    for r in rlimits.iter().filter(|r| !now.contains(r)) {
        let lim = libc::rlimit { rlim_cur: r.cur, rlim_max: r.max };
        let at = scratch.put(0, abi::as_bytes(&lim))?;
        let ret = inj.call(libc::SYS_prlimit64 as u64, &[0, u64::from(r.resource), at, 0])?;
        if ret < 0 {
            warnings.push(format!("rlimit {} set remotely is not restored at home: {}", r.resource, std::io::Error::from_raw_os_error(-ret as i32)));
        }
    }
    Ok(())
}

/// Writes bytes into the trampoline's scratch area.
pub(crate) struct Scratch {
    pid: i32,
    base: u64,
    len: u64,
}

impl Scratch {
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    pub(crate) fn put(&self, at: u64, data: &[u8]) -> Result<u64> {
        if at + data.len() as u64 > self.len {
            return Err(FormatError::Corrupt(format!("a {}-byte value does not fit the restorer's scratch page", data.len())).into());
        }
        mem::write(self.pid, self.base + at, data)?;
        Ok(self.base + at)
    }

    pub(crate) fn put_str(&self, s: &str) -> Result<u64> {
        let c = cstring(s)?;
        self.put(0, c.as_bytes_with_nul())
    }
}

fn prot_bits(p: u8) -> u64 {
    let mut out = 0;
    if p & herd_image::PROT_READ != 0 {
        out |= libc::PROT_READ;
    }
    if p & herd_image::PROT_WRITE != 0 {
        out |= libc::PROT_WRITE;
    }
    if p & herd_image::PROT_EXEC != 0 {
        out |= libc::PROT_EXEC;
    }
    out as u64
}

fn build(
    tracee: &mut Tracee,
    child: Option<&RestorerChild>,
    image: &ProcessImage,
    pages: PageStream<'_, '_>,
    warnings: &mut Vec<String>,
    into: Into<'_>,
    made: &mut Made,
) -> Result<Built> {
    let pid = tracee.pid();
    let deputy = matches!(into, Into::Deputy { .. });
    if let (Into::Fresh { .. }, Some(v)) = (&into, image.vmas.iter().find(|v| matches!(v.kind, VmaKind::AtHome { .. }))) {
        let name = match &v.kind {
            VmaKind::AtHome { name } => name.as_str(),
            _ => "",
        };
        return Err(CheckpointError::Incompatible(format!(
            "it maps memory its home keeps ({name} at {:#x}, shared with processes there): only the home of the migrated process it was taken from can restore it",
            v.start
        )));
    }
    let base = tracee.regs()?;
    tracee.set_sigmask(!0)?;
    if tracee.xstate()?.len() != image.regs.xstate.len() {
        return Err(CheckpointError::Incompatible(format!(
            "its register state is {} bytes, this CPU's is {}",
            image.regs.xstate.len(),
            tracee.xstate()?.len()
        )));
    }
    let gadget = match into {
        Into::Deputy { gadget, .. } => gadget,
        // The child is a fork of us: its vDSO is ours, at our address.
        Into::Fresh { .. } | Into::Remote { .. } => {
            let (vdso_at, vdso) = host::own_vdso().ok_or_else(|| CheckpointError::Incompatible("herd has no vDSO".into()))?;
            vdso_at + host::syscall_offset(&vdso).ok_or_else(|| CheckpointError::Incompatible("no syscall instruction in the vDSO".into()))?
        }
    };
    let mut inj = Injector::new(tracee, gadget, base);

    // The child's rseq area is about to be unmapped; the kernel must stop
    // writing to it first.
    if let Some(c) = inj.tracee().rseq_config()? {
        inj.call_ok("rseq unregister", abi::SYS_RSEQ, &[c.rseq_abi_pointer, c.rseq_abi_size as u64, abi::RSEQ_FLAG_UNREGISTER, c.signature as u64])?;
    }

    // Trampoline: one page holding `syscall; int3`, two pages of scratch.
    let tramp_len = 3 * PAGE;
    let mut taken = mapped_ranges(pid)?;
    taken.extend(image.vmas.iter().map(|v| (v.start, v.end)));
    let tramp = free_area(&taken, tramp_len).ok_or_else(|| CheckpointError::Incompatible("no room for the restorer's trampoline".into()))?;
    let rwx = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
    let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    inj.call_ok("mmap trampoline", abi::SYS_MMAP, &[tramp, tramp_len, rwx, anon | libc::MAP_FIXED_NOREPLACE as u64, u64::MAX, 0])?;
    mem::write(pid, tramp, &[0x0f, 0x05, 0xcc])?;
    made.tramp = Some((tramp, tramp_len));
    inj.set_gadget(tramp);
    inj.set_stack(tramp + tramp_len - 64);
    let scratch = Scratch { pid, base: tramp + PAGE, len: 2 * PAGE - 128 };

    // Everything of the child but the trampoline goes (and of a deputy, but the memory
    // kept at home, which the process maps again as it is).
    let home = crate::HomeRegion::ranges(&image.vmas);
    let keep: Vec<(u64, u64)> = std::iter::once((tramp, tramp_len)).chain(if deputy { home.clone() } else { Vec::new() }).collect();
    unmap_all_but(&mut inj, &keep)?;
    let t_build = std::time::Instant::now();
    tracing::debug!(pid, "restore: address space emptied");
    for fd in child.map_or([-1; 2], |c| c.child_fds) {
        if fd >= 0 {
            inj.call_ok("close sync fd", abi::SYS_CLOSE, &[fd as u64])?;
        }
    }

    // Memory regions.
    let memory: &[Object] = match into {
        Into::Fresh { memory, .. } => memory,
        _ => &[],
    };
    // A mapped file open once for reading, once for writing (a shared writable mapping).
    let mut file_fds: HashMap<(&str, bool), u64> = HashMap::new();
    let mut object_fds: HashMap<(u32, bool), u64> = HashMap::new();
    // Shared regions of memory objects: (start, end, object, offset); their pages go
    // into the object itself.
    let mut object_regions: Vec<(u64, u64, &Object, u64)> = Vec::new();
    let mut vdso_lo: Option<u64> = None;
    let mut reprotect = Vec::new();
    for v in &image.vmas {
        let mut prot = prot_bits(v.prot);
        let object_shared = v.shared && matches!(v.kind, VmaKind::Memory { .. });
        if v.stored_bytes > 0 && v.prot & PROT_WRITE == 0 && !object_shared {
            prot |= libc::PROT_WRITE as u64;
            reprotect.push(v);
        }
        let share = if v.shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE } as u64;
        let fixed = libc::MAP_FIXED as u64;
        let got = match &v.kind {
            VmaKind::Vdso | VmaKind::Vvar => {
                vdso_lo = Some(vdso_lo.map_or(v.start, |lo| lo.min(v.start)));
                continue;
            }
            VmaKind::File { file, offset } => {
                let write = v.shared && v.prot & PROT_WRITE != 0;
                let fd = match file_fds.get(&(file.path.as_str(), write)) {
                    Some(fd) => *fd,
                    None => {
                        let path = scratch.put_str(&file.path)?;
                        let mode = if write { libc::O_RDWR } else { libc::O_RDONLY };
                        let fd = inj.call_ok("open a mapped file", abi::SYS_OPENAT, &[abi::AT_FDCWD as u64, path, (mode | libc::O_CLOEXEC) as u64, 0])? as u64;
                        file_fds.insert((&file.path, write), fd);
                        fd
                    }
                };
                inj.call_ok("mmap a file region", abi::SYS_MMAP, &[v.start, v.len(), prot, share | fixed, fd, *offset])?
            }
            VmaKind::Memory { object, offset } => {
                let o = memory.get(*object as usize).ok_or_else(|| {
                    FormatError::Corrupt(format!("region {:#x} maps memory object {object}, which the image does not have (only a tree image has them)", v.start))
                })?;
                let write = v.shared && !o.write_sealed;
                let fd = match object_fds.get(&(*object, write)) {
                    Some(fd) => *fd,
                    None => {
                        let path = scratch.put_str(&o.path())?;
                        let mode = if write { libc::O_RDWR } else { libc::O_RDONLY };
                        let fd = inj.call_ok("open a memory object", abi::SYS_OPENAT, &[abi::AT_FDCWD as u64, path, (mode | libc::O_CLOEXEC) as u64, 0])? as u64;
                        object_fds.insert((*object, write), fd);
                        fd
                    }
                };
                if v.shared {
                    object_regions.push((v.start, v.end, o, *offset));
                }
                inj.call_ok("mmap a memory object", abi::SYS_MMAP, &[v.start, v.len(), prot, share | fixed, fd, *offset])?
            }
            // Memory kept at home: the deputy's own mapping is it (checked, with the
            // protection it has now); elsewhere a placeholder, registered below.
            VmaKind::AtHome { name } => match into {
                Into::Deputy { .. } => {
                    if !covered(&mapped_ranges(pid)?, v.start, v.end) {
                        return Err(CheckpointError::Incompatible(format!("region {:#x}-{:#x} ({name}) should be kept at home, but the deputy does not map it", v.start, v.end)));
                    }
                    inj.call_ok("mprotect memory kept at home", abi::SYS_MPROTECT, &[v.start, v.len(), prot])?;
                    continue;
                }
                _ => {
                    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE;
                    inj.call_ok("mmap a placeholder of memory kept at home", abi::SYS_MMAP, &[v.start, v.len(), prot, flags as u64, u64::MAX, 0])?
                }
            },
            VmaKind::Anonymous | VmaKind::Heap | VmaKind::Stack => {
                let grows = if matches!(v.kind, VmaKind::Stack) { libc::MAP_GROWSDOWN as u64 } else { 0 };
                inj.call_ok("mmap an anonymous region", abi::SYS_MMAP, &[v.start, v.len(), prot, share | fixed | libc::MAP_ANONYMOUS as u64 | grows, u64::MAX, 0])?
            }
        };
        if got as u64 != v.start {
            return Err(CheckpointError::Incompatible(format!("region {:#x} was mapped at {got:#x}", v.start)));
        }
    }
    for fd in file_fds.values().chain(object_fds.values()) {
        inj.call_ok("close a mapped file", abi::SYS_CLOSE, &[*fd])?;
    }

    tracing::debug!(pid, "restore: {} regions mapped in {:.1} ms", image.vmas.len(), t_build.elapsed().as_secs_f64() * 1e3);
    // Private anonymous regions (fresh: every one was mapped just now) are filled by
    // UFFDIO_COPY, which puts each page in place without zeroing it first as a fault
    // does (about 1.5 times process_vm_writev's rate). The userfaultfd (user-mode faults
    // only: the process runs nothing meanwhile) is released once the pages are in,
    // before the rest of the state is set and before any userfaultfd of post-copy or
    // write tracking is registered; where the kernel refuses one, process_vm_writev does.
    let fill = {
        let ranges: Vec<(u64, u64)> = image.vmas.iter().filter(|v| v.stored_bytes > 0 && !v.shared && matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap | VmaKind::Stack)).map(|v| (v.start, v.len())).collect();
        let flags = herd_kernel::uffd::CREATE_FLAGS | herd_kernel::uffd::USER_MODE_ONLY;
        match (!ranges.is_empty()).then(|| register_missing(&mut inj, &scratch, &ranges, flags, "filling its memory")) {
            Some(Ok(fd)) => Some(std::sync::Arc::new(Fill { uffd: herd_kernel::uffd::Uffd::from_fd(fd, pid), ranges })),
            Some(Err(e)) => {
                tracing::debug!(pid, "restore: pages written by process_vm_writev: {e}");
                None
            }
            None => None,
        }
    };
    // Page contents, as they stream in (or, from a mapped image, by the writers).
    let object_at = |addr: u64| object_regions.iter().find(|r| r.0 <= addr && addr < r.1).map(|(start, _, o, offset)| (&o.file, offset + (addr - start)));
    // Pages of a memory object go into the object, those of a registered region by
    // UFFDIO_COPY, the others by process_vm_writev.
    let place = |addr: u64, data: &[u8]| -> Result<()> {
        if let Some((file, at)) = object_at(addr) {
            return std::os::unix::fs::FileExt::write_all_at(file, data, at).map_err(|e| CheckpointError::Incompatible(format!("writing {} bytes into a memory object at byte {at}: {e}", data.len())));
        }
        write_pages(pid, fill.as_deref(), addr, data)
    };
    let (done, written) = std::sync::mpsc::channel::<Result<()>>();
    let mut queued = 0usize;
    let page_bytes = loop {
        let next = pages.rx.recv().map_err(|_| FormatError::Corrupt("the image reader stopped".into()))?;
        match next? {
            Some(Piece::Owned(section @ OwnedSection::Pages { addr, .. })) => {
                place(addr, section.pages())?;
                if let OwnedSection::Pages { buf, .. } = section {
                    let _ = pages.back.send(buf);
                }
            }
            Some(Piece::InPlace(p)) => match pages.writers.filter(|_| object_at(p.addr).is_none()) {
                Some(w) => {
                    if !w.send(pid, p, fill.clone(), &done) {
                        return Err(FormatError::Corrupt("the page writers stopped".into()).into());
                    }
                    queued += 1;
                }
                None => {
                    p.verify()?;
                    place(p.addr, p.data())?;
                }
            },
            Some(Piece::Owned(OwnedSection::End { page_bytes })) => break page_bytes,
            Some(Piece::Owned(OwnedSection::Process(_))) | None => {
                return Err(FormatError::Corrupt("unexpected section order".into()).into());
            }
        }
    };
    for _ in 0..queued {
        written.recv().map_err(|_| FormatError::Corrupt("a page writer stopped".into()))??;
    }
    // (Every job's handle is gone with its answer: this closes the userfaultfd.)
    drop(fill);
    tracing::debug!(pid, "restore: pages written at {:.1} ms", t_build.elapsed().as_secs_f64() * 1e3);
    for v in reprotect {
        inj.call_ok("mprotect", abi::SYS_MPROTECT, &[v.start, v.len(), prot_bits(v.prot)])?;
    }
    if let (Into::Fresh { .. }, Some(st)) = (&into, &image.state) {
        state::set_regions(&mut inj, &st.regions)?;
    }

    // Post-copy: the lazily sent memory is registered while the child still has
    // our credentials (an unprivileged userfaultfd could not take the faults the
    // kernel itself makes, e.g. a read(2) into a missing page).
    let mut uffd = None;
    if let Into::Deputy { lazy: Some((runs, dev)), .. } = into {
        if !runs.is_empty() {
            uffd = Some(register_lazy_home(&mut inj, &scratch, image, runs, dev)?);
        }
    }
    if let Into::Remote { lazy: Some(runs), .. } = into {
        if !runs.is_empty() {
            uffd = Some(register_lazy(&mut inj, &scratch, image, runs)?);
        }
    }
    // Placeholders of memory kept at home: a touch from the process waits on this
    // userfaultfd, whose reader brings the process home. User-mode faults only: the
    // kernel's own accesses (a call run here with a buffer there) fail at once with
    // EFAULT instead of waiting, and herd's guest checks a forwarded call's buffers
    // first (it sends the process home instead), as it checks the futex calls its
    // filter traps (a futex word there goes home too: the kernel's wait would fail).
    let mut home_uffd = None;
    if matches!(into, Into::Remote { .. }) && !home.is_empty() {
        home_uffd = Some(register_missing(&mut inj, &scratch, &home, herd_kernel::uffd::CREATE_FLAGS | herd_kernel::uffd::USER_MODE_ONLY, "this node cannot take a process that maps memory kept at home")?);
    }

    // vDSO and vvar at their old place.
    if let Some(lo) = vdso_lo {
        inj.call_ok("arch_prctl(ARCH_MAP_VDSO_64)", abi::SYS_ARCH_PRCTL, &[abi::ARCH_MAP_VDSO_64, lo])?;
        let want = image.vmas.iter().find(|v| matches!(v.kind, VmaKind::Vdso)).map(|v| v.start);
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let got = maps
            .lines()
            .find(|l| l.ends_with("[vdso]"))
            .and_then(|l| u64::from_str_radix(l.split('-').next()?, 16).ok());
        if want.is_some() && got != want {
            return Err(CheckpointError::Incompatible("the vDSO could not be placed at its old address".into()));
        }
    }

    tracing::debug!(pid, "restore: lazy memory registered at {:.1} ms", t_build.elapsed().as_secs_f64() * 1e3);
    set_mm(&mut inj, &scratch, image, warnings, !deputy)?;
    set_signals(&mut inj, &scratch, image)?;
    let fresh = match into {
        Into::Fresh { pid, .. } => Some(pid),
        _ => None,
    };
    if fresh.is_some() {
        // The restorer of a tree member dies with its parent; the process does not.
        inj.call_ok("prctl(PR_SET_PDEATHSIG)", abi::SYS_PRCTL, &[abi::PR_SET_PDEATHSIG, 0])?;
        // A SIGCHLD the restorer got from a zombie child made for the tree is not the process's.
        if !image.signals.pending.iter().any(|p| p.signo == libc::SIGCHLD as u32) {
            let set = scratch.put(0, &(1u64 << (libc::SIGCHLD - 1)).to_ne_bytes())?;
            let zero = scratch.put(16, &[0u8; 16])?;
            inj.call(abi::SYS_RT_SIGTIMEDWAIT, &[set, 0, zero, 8])?;
        }
        let same_pids = matches!(fresh, Some(PidMode::Same | PidMode::NewNamespace));
        state::make_fds(&mut inj, &scratch, &image.files, same_pids, warnings)?;
        if let Into::Fresh { epolls, .. } = &into {
            for (fd, targets) in epolls.iter() {
                state::epoll_add(&mut inj, &scratch, i64::from(*fd), targets)?;
            }
        }
        if let Some(st) = &image.state {
            state::take_locks(&mut inj, &scratch, &st.locks)?;
            state::set_state(&mut inj, &scratch, pid, st, warnings)?;
        }
    }

    let t = &image.task;
    set_thread_basics(&mut inj, &scratch, &t.comm, t.rseq, t.robust_list, t.clear_child_tid)?;
    if !deputy {
        set_sched(&mut inj, &scratch, t.sched, pid, warnings)?;
    } else {
        set_changed_rlimits(&mut inj, &scratch, pid, &t.rlimits, warnings)?;
    }
    // The other threads, made now: while the process still has the restorer's
    // credentials (choosing their ids may need them); each then takes the
    // image's credentials itself, as the main thread does below.
    // A root process's supplementary groups come back too (a checkpoint restored by root).
    let groups_differ = fresh.is_some() && t.groups != own_groups();
    let set_ids = !deputy && task::euid() == 0 && (t.uid != 0 || t.gid != 0 || groups_differ);
    // The bounding set, before the threads are made (they inherit it) and while
    // the process may still change it.
    if let (Some(_), Some(st)) = (fresh, &image.state) {
        if task::euid() == 0 {
            state::drop_bounding(&mut inj, &st.caps)?;
        } else if st.caps.bounding != state::all_caps() {
            warnings.push("its reduced capability bounding set is not restored (that needs root)".into());
        }
    }
    if !image.threads.is_empty() {
        let tramp_stack = tramp + tramp_len - 64;
        let exact = matches!(fresh, Some(PidMode::Same | PidMode::NewNamespace));
        let how = MakeThreads { stack: tramp_stack, set_ids, point_next_id: deputy, exact };
        make_threads(&mut inj, &scratch, image, how, warnings, &mut made.threads)?;
    }
    if let (Some(_), Some(st)) = (fresh, &image.state) {
        state::make_timers(&mut inj, &scratch, &st.posix_timers)?;
    }
    if let (Some(_), Some(st)) = (fresh, &image.state) {
        // While the process may still (CAP_AUDIT_CONTROL).
        state::set_loginuid(&mut inj, &scratch, st, warnings)?;
    }
    if set_ids {
        set_credentials(&mut inj, &scratch, t)?;
    }
    if let (Some(_), Some(st)) = (fresh, &image.state) {
        // A root process's own capabilities (another user's went with setresuid).
        if t.uid == 0 && task::euid() == 0 {
            state::set_caps(&mut inj, &scratch, &st.caps)?;
        }
        state::finish_state(&mut inj, st)?;
    }
    // A guest dies with the herdd thread that serves it (after the credentials:
    // changing them clears the setting): without it, its calls would fail and
    // post-copy memory read as zeroes.
    if matches!(into, Into::Remote { .. }) {
        inj.call_ok("prctl(PR_SET_PDEATHSIG)", abi::SYS_PRCTL, &[abi::PR_SET_PDEATHSIG, libc::SIGKILL as u64])?;
    }

    for s in &image.signals.pending {
        queue_own_signal(&mut inj, &scratch, pid, s)?;
    }

    // A guest's userfaultfd for write tracking, made before its filter would send the
    // call home; without it every checkpoint of it is whole.
    let mut dirty = None;
    if let Into::Remote { track, lazy, .. } = into {
        // User-mode faults only: allowed without privilege (its credentials may be the
        // user's already); the kernel's own writes are tracked all the same.
        let fd = inj.call(herd_kernel::uffd::SYS_USERFAULTFD, &[herd_kernel::uffd::CREATE_FLAGS | herd_kernel::uffd::USER_MODE_ONLY])?;
        if fd >= 0 {
            let taken = PidFd::open(pid).and_then(|p| p.get_fd(fd as i32)).ok();
            inj.call_ok("close the write-tracking userfaultfd", abi::SYS_CLOSE, &[fd as u64])?;
            dirty = match taken.map(|f| crate::Dirty::new(f, pid)) {
                Some(Ok(mut d)) => {
                    // (Post-copy regions belong to the pager's userfaultfd.)
                    if track && lazy.is_none() {
                        d.arm_restored(&image.vmas);
                    }
                    Some(d)
                }
                Some(Err(e)) => {
                    tracing::info!(pid, "no write tracking (every checkpoint of it is whole): {e}");
                    None
                }
                None => None,
            };
        } else {
            tracing::info!(pid, "no userfaultfd for write tracking (every checkpoint of it is whole): errno {}", -fd);
        }
    }

    // A guest's filter goes in last: from here on its calls are screened.
    // Without privileges, installing a filter needs no_new_privs (which only
    // matters to execve, and execve brings a guest home).
    let mut listener_fd = None;
    if let Into::Remote { filter, filter_at_home, .. } = into {
        // A process with memory kept at home gets the filter that shows the guest its futex calls.
        let filter = if home.is_empty() { filter } else { filter_at_home };
        if filter.is_empty() || filter.len() % 8 != 0 || filter.len() / 8 > u16::MAX as usize {
            return Err(CheckpointError::Incompatible("malformed seccomp filter".into()));
        }
        inj.call_ok("prctl(PR_SET_NO_NEW_PRIVS)", abi::SYS_PRCTL, &[abi::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0])?;
        let prog = scratch.put(64, filter)?;
        let mut fprog = [0u8; 16];
        fprog[0..2].copy_from_slice(&((filter.len() / 8) as u16).to_ne_bytes());
        fprog[8..16].copy_from_slice(&prog.to_ne_bytes());
        let fprog_at = scratch.put(0, &fprog)?;
        // Every thread is screened: the filter goes on each of them (TSYNC; with
        // TSYNC_ESRCH a failure is an error, not a thread id, as the listener needs).
        let mut flags = abi::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        if !image.threads.is_empty() {
            flags |= abi::SECCOMP_FILTER_FLAG_TSYNC | abi::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        }
        let fd = inj.call_ok("seccomp(SECCOMP_SET_MODE_FILTER)", abi::SYS_SECCOMP, &[abi::SECCOMP_SET_MODE_FILTER, flags, fprog_at])?;
        listener_fd = Some(fd as i32);
    }

    tracing::debug!(pid, "restore: state set at {:.1} ms", t_build.elapsed().as_secs_f64() * 1e3);
    inj.call_ok("munmap trampoline", abi::SYS_MUNMAP, &[tramp, tramp_len])?;
    made.tramp = None;
    // Its own seccomp filters: the last calls made in it (a filter may forbid any other).
    if !image.seccomp.is_empty() {
        install_seccomp(&mut inj, pid, image)?;
    }

    // Registers last, at an interrupt stop (see Tracee::resume_until_event).
    let tracee = inj.tracee();
    tracee.resume_until_event()?;
    let mut regs = Regs::from_words(&image.regs.gp).ok_or_else(|| FormatError::Corrupt("bad register set".into()))?;
    fix_restart_block(&mut regs, pid, image)?;
    tracing::trace!(pid, rip = regs.rip, rax = regs.rax as i64, "final registers");
    tracee.set_regs(&regs)?;
    tracee.set_xstate(&image.regs.xstate)?;
    tracee.set_sigmask(image.signals.blocked)?;
    Ok(Built { page_bytes, listener_fd, uffd, dirty, home_uffd, home: crate::HomeRegion::of(&image.vmas) })
}

/// Installs the image's seccomp filters in the process, the first installed first, on
/// every thread (TSYNC): the calls herd makes in it after this one would be screened by
/// them, so they come last, once the trampoline is gone. Each is made through the
/// `syscall` instruction of the process's vDSO, its program put for the time of the
/// call at the start of its largest writable region, whose bytes are then put back.
fn install_seccomp(inj: &mut Injector<'_>, pid: i32, image: &ProcessImage) -> Result<()> {
    let no = |why: &str| CheckpointError::Incompatible(format!("its seccomp filters cannot be installed: {why}"));
    let vdso = image.vmas.iter().find(|v| matches!(v.kind, VmaKind::Vdso)).ok_or_else(|| no("it has no vDSO to make the call through"))?;
    let (_, own) = host::own_vdso().ok_or_else(|| no("herd has no vDSO"))?;
    inj.set_gadget(vdso.start + host::syscall_offset(&own).ok_or_else(|| no("no syscall instruction in the vDSO"))?);
    let need = 16 + image.seccomp.iter().map(|f| f.insns.len() as u64).max().unwrap_or(0);
    let room = image
        .vmas
        .iter()
        .filter(|v| !v.shared && v.prot & (herd_image::PROT_READ | PROT_WRITE) == herd_image::PROT_READ | PROT_WRITE && matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap | VmaKind::Stack))
        .max_by_key(|v| v.len())
        .filter(|v| v.len() >= need)
        .ok_or_else(|| no(&format!("no writable region of {need} bytes to put a program in for the call")))?;
    let at = room.start;
    inj.set_stack(room.end - 64);
    let mut saved = vec![0u8; need as usize];
    mem::read_ranges(pid, &[(at, need)], &mut saved)?;
    for (i, f) in image.seccomp.iter().enumerate() {
        // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
        let mut prog = Vec::with_capacity(16 + f.insns.len());
        prog.extend_from_slice(&((f.insns.len() / 8) as u64).to_ne_bytes());
        prog.extend_from_slice(&(at + 16).to_ne_bytes());
        prog.extend_from_slice(&f.insns);
        mem::write(pid, at, &prog)?;
        let flags = f.flags | if image.threads.is_empty() { 0 } else { abi::SECCOMP_FILTER_FLAG_TSYNC | abi::SECCOMP_FILTER_FLAG_TSYNC_ESRCH };
        let r = inj.call(abi::SYS_SECCOMP, &[abi::SECCOMP_SET_MODE_FILTER, flags, at])?;
        if r != 0 {
            return Err(no(&format!("filter {i} of {}: {}", image.seccomp.len(), std::io::Error::from_raw_os_error(-r as i32))));
        }
    }
    mem::write(pid, at, &saved)?;
    Ok(())
}

/// What the kernel keeps per thread and a thread sets for itself: rseq area,
/// robust futex list, clear-child-tid address, name.
fn set_thread_basics(
    inj: &mut Injector<'_>,
    scratch: &Scratch,
    comm: &str,
    rseq: Option<Rseq>,
    robust_list: (u64, u64),
    clear_child_tid: u64,
) -> Result<()> {
    if let Some(r) = rseq {
        inj.call_ok("rseq", abi::SYS_RSEQ, &[r.ptr, r.len as u64, 0, r.sig as u64])?;
    }
    let (head, len) = robust_list;
    inj.call_ok("set_robust_list", abi::SYS_SET_ROBUST_LIST, &[head, if len == 0 { 24 } else { len }])?;
    inj.call_ok("set_tid_address", abi::SYS_SET_TID_ADDRESS, &[clear_child_tid])?;
    let comm = scratch.put_str(comm)?;
    inj.call_ok("prctl(PR_SET_NAME)", abi::SYS_PRCTL, &[abi::PR_SET_NAME, comm])?;
    Ok(())
}

/// This process's supplementary groups (/proc/self/status).
fn own_groups() -> Vec<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Groups:").map(|g| g.split_whitespace().filter_map(|x| x.parse().ok()).collect())))
        .unwrap_or_default()
}

/// The image's owner, groups and ids, for the calling thread (credentials
/// are per thread: each thread of a restored process sets its own).
fn set_credentials(inj: &mut Injector<'_>, scratch: &Scratch, t: &herd_image::Task) -> Result<()> {
    let groups: Vec<u8> = t.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
    let ga = scratch.put(0, &groups)?;
    inj.call_ok("setgroups", abi::SYS_SETGROUPS, &[t.groups.len() as u64, ga])?;
    let (g, u) = (t.gid as u64, t.uid as u64);
    inj.call_ok("setresgid", abi::SYS_SETRESGID, &[g, g, g])?;
    inj.call_ok("setresuid", abi::SYS_SETRESUID, &[u, u, u])?;
    inj.call_ok("prctl(PR_SET_DUMPABLE)", abi::SYS_PRCTL, &[abi::PR_SET_DUMPABLE, 1])?;
    Ok(())
}

/// The calling thread's scheduling policy, priority and nice value. What
/// needs a privilege the restorer lacks (a real-time policy, a lower nice
/// value) is left as it is, with a warning.
fn set_sched(inj: &mut Injector<'_>, scratch: &Scratch, s: Sched, tid: i32, warnings: &mut Vec<String>) -> Result<()> {
    if s.policy != libc::SCHED_OTHER || s.priority != 0 {
        let at = scratch.put(0, &s.priority.to_ne_bytes())?;
        let r = inj.call(abi::SYS_SCHED_SETSCHEDULER, &[0, s.policy as u64, at])?;
        if r < 0 {
            warnings.push(format!(
                "thread {tid}: scheduling policy {} (priority {}) not restored: {}",
                s.policy,
                s.priority,
                std::io::Error::from_raw_os_error(-r as i32)
            ));
        }
    }
    let r = inj.call(abi::SYS_SETPRIORITY, &[libc::PRIO_PROCESS as u64, 0, s.nice as i64 as u64])?;
    if r < 0 {
        warnings.push(format!("thread {tid}: nice {} not restored: {}", s.nice, std::io::Error::from_raw_os_error(-r as i32)));
    }
    Ok(())
}

fn queue_own_signal(inj: &mut Injector<'_>, scratch: &Scratch, pid: i32, s: &PendingSignal) -> Result<()> {
    if s.siginfo.len() != 128 || s.signo == 0 || s.signo > 64 {
        return Err(FormatError::Corrupt(format!("pending signal {} is malformed", s.signo)).into());
    }
    let info = scratch.put(0, &s.siginfo)?;
    if s.shared {
        inj.call_ok("rt_sigqueueinfo", abi::SYS_RT_SIGQUEUEINFO, &[pid as u64, s.signo as u64, info])?;
    } else {
        // To the calling thread itself: the only target for which any si_code may be queued.
        let tid = inj.tracee().pid();
        inj.call_ok("rt_tgsigqueueinfo", abi::SYS_RT_TGSIGQUEUEINFO, &[pid as u64, tid as u64, s.signo as u64, info])?;
    }
    Ok(())
}

/// How [`make_threads`] makes them.
#[derive(Clone, Copy)]
struct MakeThreads {
    /// The stack pointer for injected calls (in the trampoline).
    stack: u64,
    /// Each thread takes the image's credentials (root restores another user's process).
    set_ids: bool,
    /// A deputy, which may not choose thread ids: herd sets the kernel's next id.
    point_next_id: bool,
    /// Every thread must have its old id.
    exact: bool,
}

/// Makes every thread of the image but the main one: an injected clone3 in
/// the main thread (`inj`, whose gadget is the trampoline) asks for the
/// thread's old id (`set_tid`; when that id is taken or herd may not choose
/// ids here, the kernel's next one; for a deputy, `point_next_id`: herd sets
/// the kernel's next id), then the new thread, attached as it is
/// made, sets its own state by injected calls and is left at an interrupt
/// stop with its registers, xstate and signal mask, ready to be detached.
fn make_threads(
    inj: &mut Injector<'_>,
    scratch: &Scratch,
    image: &ProcessImage,
    how: MakeThreads,
    warnings: &mut Vec<String>,
    out: &mut Vec<Tracee>,
) -> Result<()> {
    let MakeThreads { stack: tramp_stack, set_ids, point_next_id, exact } = how;
    let pid = inj.tracee().pid();
    let gadget = inj.gadget();
    let mut renamed = Vec::new();
    for th in &image.threads {
        let size = std::mem::size_of::<abi::CloneArgs>() as u64;
        let want = scratch.put(size, &th.tid.to_ne_bytes())?;
        let mut args = abi::CloneArgs { flags: abi::CLONE_THREAD_FLAGS, set_tid: want, set_tid_size: 1, ..Default::default() };
        let at = scratch.put(0, abi::as_bytes(&args))?;
        let (mut r, mut made) = inj.call_clone(abi::SYS_CLONE3, &[at, size])?;
        if r < 0 && exact {
            return Err(CheckpointError::PidUnavailable {
                pid: image.task.pid,
                why: format!("thread id {} cannot be had: {}", th.tid, std::io::Error::from_raw_os_error(-r as i32)),
            });
        }
        if r < 0 {
            args.set_tid = 0;
            args.set_tid_size = 0;
            let at = scratch.put(0, abi::as_bytes(&args))?;
            // A process that may not choose ids (a deputy, which has its owner's
            // credentials) gets its old id when herd, root here, points the kernel's
            // next id at it. Another process may take it first: then that thread
            // ends and it is tried again.
            let hint = r == -(libc::EPERM as i64) && point_next_id && task::euid() == 0;
            for attempt in 0..if hint { 3 } else { 1 } {
                if hint {
                    let _ = std::fs::write("/proc/sys/kernel/ns_last_pid", th.tid.saturating_sub(1).to_string());
                }
                (r, made) = inj.call_clone(abi::SYS_CLONE3, &[at, size])?;
                if !hint || r < 0 || r == i64::from(th.tid) || attempt == 2 {
                    break;
                }
                if let Some(mut other) = made.take() {
                    let base = other.regs()?;
                    let mut oinj = Injector::new(&mut other, gadget, base);
                    oinj.set_stack(tramp_stack);
                    let _ = oinj.call(abi::SYS_EXIT, &[0]);
                }
            }
        }
        if r < 0 {
            return Err(herd_kernel::KernelError::Sys {
                op: "clone3 (making a thread)",
                pid,
                source: std::io::Error::from_raw_os_error(-r as i32),
            }
            .into());
        }
        let made = made.ok_or_else(|| CheckpointError::Proc { pid, what: format!("thread {r} was made but never reported") })?;
        // Owned by `out` from here, so that an error below kills it.
        out.push(made);
        let t = out.last_mut().expect("just pushed");
        let base = t.regs()?;
        let mut tinj = Injector::new(t, gadget, base);
        tinj.set_stack(tramp_stack);
        set_thread_basics(&mut tinj, scratch, &th.comm, th.rseq, th.robust_list, th.clear_child_tid)?;
        // A new thread starts with no alternate stack and the main thread's scheduling.
        if th.altstack.flags & libc::SS_DISABLE == 0 {
            set_altstack(&mut tinj, scratch, th.altstack)?;
        }
        if th.sched != image.task.sched {
            set_sched(&mut tinj, scratch, th.sched, th.tid, warnings)?;
        }
        if set_ids {
            set_credentials(&mut tinj, scratch, &image.task)?;
        }
        for s in &th.pending {
            queue_own_signal(&mut tinj, scratch, pid, s)?;
        }
        t.resume_until_event()?;
        let mut regs = Regs::from_words(&th.regs.gp).ok_or_else(|| FormatError::Corrupt("bad register set".into()))?;
        fix_restart_block(&mut regs, pid, image)?;
        t.set_regs(&regs)?;
        t.set_xstate(&th.regs.xstate)?;
        t.set_sigmask(th.blocked)?;
        let tid = t.pid();
        if tid != th.tid {
            renamed.push((th.tid, tid));
        }
    }
    if !renamed.is_empty() {
        let list: Vec<String> = renamed.iter().map(|(a, b)| format!("{a} as {b}")).collect();
        warnings.push(format!(
            "{} of {} threads run with new thread ids ({}): their old ids were taken, or restoring ids needs root",
            renamed.len(),
            image.threads.len(),
            list.join(", ")
        ));
    }
    Ok(())
}

/// Sets the mm fields and auxv; with `set_exe`, also the /proc/PID/exe link
/// (a deputy keeps its own, which is already right).
fn set_mm(inj: &mut Injector<'_>, scratch: &Scratch, image: &ProcessImage, warnings: &mut Vec<String>, set_exe: bool) -> Result<()> {
    let m = &image.mm;
    let exe_fd = if set_exe {
        let exe = scratch.put_str(&image.task.exe)?;
        inj.call(abi::SYS_OPENAT, &[abi::AT_FDCWD as u64, exe, (libc::O_RDONLY | libc::O_CLOEXEC) as u64, 0])?
    } else {
        -1
    };
    let auxv: Vec<u8> = m.auxv.iter().flat_map(|w| w.to_le_bytes()).collect();
    let auxv_at = scratch.put(0, &auxv)?;
    let mut map = abi::PrctlMmMap {
        start_code: m.start_code,
        end_code: m.end_code,
        start_data: m.start_data,
        end_data: m.end_data,
        start_brk: m.start_brk,
        brk: m.brk,
        start_stack: m.start_stack,
        arg_start: m.arg_start,
        arg_end: m.arg_end,
        env_start: m.env_start,
        env_end: m.env_end,
        auxv: auxv_at,
        auxv_size: auxv.len() as u32,
        exe_fd: if exe_fd >= 0 { exe_fd as u32 } else { u32::MAX },
    };
    let at = (auxv.len() as u64 + 15) & !15;
    let size = std::mem::size_of::<abi::PrctlMmMap>() as u64;
    let map_at = scratch.put(at, abi::as_bytes(&map))?;
    let mut r = inj.call(abi::SYS_PRCTL, &[abi::PR_SET_MM, abi::PR_SET_MM_MAP, map_at, size, 0])?;
    let pid = inj.tracee().pid();
    if r == -(libc::EBUSY as i64) && map.exe_fd != u32::MAX {
        // The kernel will not replace the exe link while the old executable
        // (herd's own, the restorer being a fork of herd) is still mapped,
        // which it is when the image maps that same file. Then the link is
        // already right; otherwise say so.
        if !same_file(&format!("/proc/{pid}/exe"), &image.task.exe) {
            warnings.push(format!("/proc/PID/exe of the restored process shows herd, not {}", image.task.exe));
        }
        map.exe_fd = u32::MAX;
        let map_at = scratch.put(at, abi::as_bytes(&map))?;
        r = inj.call(abi::SYS_PRCTL, &[abi::PR_SET_MM, abi::PR_SET_MM_MAP, map_at, size, 0])?;
    } else if r == -(libc::EPERM as i64) && map.exe_fd != u32::MAX {
        // Replacing the exe link needs CAP_CHECKPOINT_RESTORE; the rest does not.
        warnings.push(format!(
            "/proc/PID/exe of the restored process shows herd, not {} (needs CAP_CHECKPOINT_RESTORE)",
            image.task.exe
        ));
        map.exe_fd = u32::MAX;
        let map_at = scratch.put(at, abi::as_bytes(&map))?;
        r = inj.call(abi::SYS_PRCTL, &[abi::PR_SET_MM, abi::PR_SET_MM_MAP, map_at, size, 0])?;
    } else if exe_fd < 0 && set_exe {
        warnings.push(format!("the executable {} is gone; /proc/PID/exe was not restored", image.task.exe));
    }
    if exe_fd >= 0 {
        inj.call_ok("close the executable", abi::SYS_CLOSE, &[exe_fd as u64])?;
    }
    if r < 0 {
        return Err(herd_kernel::KernelError::Sys {
            op: "prctl(PR_SET_MM_MAP)",
            pid,
            source: std::io::Error::from_raw_os_error(-r as i32),
        }
        .into());
    }
    Ok(())
}

/// `a` and `b` name the same file (device and inode).
pub fn same_file(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn set_signals(inj: &mut Injector<'_>, scratch: &Scratch, image: &ProcessImage) -> Result<()> {
    for sig in 1..=64u32 {
        if sig == libc::SIGKILL as u32 || sig == libc::SIGSTOP as u32 {
            continue;
        }
        let a = image.signals.handlers.iter().find(|h| h.signo == sig);
        let act = a.map_or(abi::KernelSigaction::default(), |h| abi::KernelSigaction {
            handler: h.handler,
            flags: h.flags,
            restorer: h.restorer,
            mask: h.mask,
        });
        let at = scratch.put(0, abi::as_bytes(&act))?;
        inj.call_ok("rt_sigaction", abi::SYS_RT_SIGACTION, &[sig as u64, at, 0, 8])?;
    }
    set_altstack(inj, scratch, image.signals.altstack)
}

/// The calling thread's alternate signal stack.
fn set_altstack(inj: &mut Injector<'_>, scratch: &Scratch, s: SigAltStack) -> Result<()> {
    let ss = if s.flags & libc::SS_DISABLE != 0 {
        abi::StackT { sp: 0, flags: libc::SS_DISABLE, _pad: 0, size: 0 }
    } else {
        abi::StackT { sp: s.sp, flags: 0, _pad: 0, size: s.size }
    };
    let at = scratch.put(0, abi::as_bytes(&ss))?;
    inj.call_ok("sigaltstack", abi::SYS_SIGALTSTACK, &[at, 0])?;
    Ok(())
}

/// A sleep or wait interrupted by the checkpoint returns
/// -ERESTART_RESTARTBLOCK and would continue through the kernel's per-thread
/// restart block, which a new thread does not have. A call whose arguments
/// still say all it needs is made again as it was: a futex wait (a relative
/// timeout then starts again in full: a wait that lasts longer, which futex
/// users allow for), an absolute clock_nanosleep. A relative nanosleep whose
/// remaining time the kernel wrote back is re-issued for that remaining time
/// (placed below the red zone of the thread's stack). Anything else returns
/// EINTR, as CRIU does.
fn fix_restart_block(r: &mut Regs, pid: i32, image: &ProcessImage) -> Result<()> {
    if (r.orig_rax as i64) < 0 || r.rax as i64 != -abi::ERESTART_RESTARTBLOCK {
        return Ok(());
    }
    let again = |r: &mut Regs| {
        r.rax = r.orig_rax;
        r.rip -= 2;
        r.orig_rax = u64::MAX;
    };
    let abstime = r.rsi & libc::TIMER_ABSTIME as u64 != 0;
    match r.orig_rax {
        // A poll with a timeout (tail -f waits so) starts again in full, as a futex wait.
        abi::SYS_FUTEX | abi::SYS_POLL => {
            again(r);
            return Ok(());
        }
        abi::SYS_CLOCK_NANOSLEEP if abstime => {
            again(r);
            return Ok(());
        }
        _ => {}
    }
    let target = match r.orig_rax {
        abi::SYS_NANOSLEEP => Some((r.rsi, 0)),
        abi::SYS_CLOCK_NANOSLEEP => Some((r.r10, 2)),
        _ => None,
    };
    // Any thread's stack: the main one, or memory the thread library mapped.
    let slot = (r.rsp.wrapping_sub(128 + 16)) & !15;
    let on_stack = image.vmas.iter().any(|v| {
        matches!(v.kind, VmaKind::Stack | VmaKind::Anonymous) && !v.shared && v.prot & PROT_WRITE != 0 && v.contains(slot, slot + 16)
    });
    if let (Some((rem, arg)), true) = (target, on_stack) {
        if rem != 0 {
            let mut ts = [0u8; 16];
            mem::read_ranges(pid, &[(rem, 16)], &mut ts)?;
            mem::write(pid, slot, &ts)?;
            if arg == 0 {
                r.rdi = slot;
            } else {
                r.rdx = slot;
            }
            again(r);
            return Ok(());
        }
    }
    r.rax = (-(libc::EINTR as i64)) as u64;
    r.orig_rax = u64::MAX;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_area_avoids_every_taken_range() {
        let taken = [(0x1_0000_0000, 0x1_0010_0000), (0x1_0020_0000, 0x1_0030_0000)];
        let a = free_area(&taken, 3 * PAGE).expect("room");
        for (s, e) in taken {
            assert!(a + 3 * PAGE + PAGE <= s || a >= e + PAGE, "{a:#x} overlaps {s:#x}-{e:#x}");
        }
    }
}
