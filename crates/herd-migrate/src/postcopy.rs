//! Post-copy: the process runs on the target before its memory is there.
//!
//! At the freeze, the source sends the image without the pages of private
//! anonymous memory (`Frozen::write_postcopy`), only the runs of pages that
//! will follow ([`crate::proto::ToRemote::Lazy`]). The target restores it with
//! those regions registered with a userfaultfd and starts it at once. Then:
//!
//! - the source's [`Pusher`] thread reads the pages from the stopped original
//!   (at home: the deputy, which keeps its memory until the end) and sends
//!   them in order, 64 KiB a message, the stack first; a page the process
//!   waits for ([`crate::proto::ToHome::PageRequest`]) goes before the rest;
//! - the target's [`Pager`] thread fills each page as it arrives
//!   (UFFDIO_COPY), answers a fault on a page still on its way by asking the
//!   source for it, and a fault on a page that never had contents with a zero
//!   page; it follows what the process does to its memory meanwhile (mremap
//!   moves missing pages, madvise/munmap make them zero or gone:
//!   [`LazyMap`]). When no page is missing it closes the userfaultfd and says
//!   [`crate::proto::ToHome::PagesDone`]; the source may then let go of its copy.

use std::collections::{HashSet, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{Sender, TryRecvError};
use std::time::{Duration, Instant};

use herd_kernel::mem::{self, PAGE};
use herd_kernel::uffd::{Event, Fill, Uffd};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::proto::PAGES_CHUNK;
use crate::wake::{WakeReceiver, WakeSender};

// ---------------------------------------------------------------------------
// Which pages are still missing (pure: unit-tested)
// ---------------------------------------------------------------------------

/// A run of lazily sent pages: where it is in the process now (`cur`), where
/// it was at the source (`src`: what pages and requests are named by), and
/// which of its pages are still missing.
#[derive(Clone, Debug)]
struct Segment {
    cur: u64,
    src: u64,
    len: u64,
    missing: Vec<u64>,
}

impl Segment {
    fn new(cur: u64, src: u64, len: u64, all_missing: bool) -> Segment {
        let pages = (len / PAGE) as usize;
        let mut missing = vec![0u64; pages.div_ceil(64)];
        if all_missing {
            for i in 0..pages {
                missing[i / 64] |= 1 << (i % 64);
            }
        }
        Segment { cur, src, len, missing }
    }

    fn is_missing(&self, i: usize) -> bool {
        self.missing[i / 64] & (1 << (i % 64)) != 0
    }

    fn clear(&mut self, i: usize) -> bool {
        let was = self.is_missing(i);
        self.missing[i / 64] &= !(1 << (i % 64));
        was
    }

    /// Splits off the part from page `i` on (self keeps the pages before it).
    fn split_at(&mut self, i: usize) -> Segment {
        let off = i as u64 * PAGE;
        let mut tail = Segment::new(self.cur + off, self.src + off, self.len - off, false);
        for j in i..(self.len / PAGE) as usize {
            if self.is_missing(j) {
                let k = j - i;
                tail.missing[k / 64] |= 1 << (k % 64);
            }
        }
        self.len = off;
        self.missing.truncate((i).div_ceil(64));
        if !i.is_multiple_of(64) {
            if let Some(last) = self.missing.last_mut() {
                *last &= (1u64 << (i % 64)) - 1;
            }
        }
        tail
    }
}

/// What to do about a fault.
#[derive(Debug, PartialEq, Eq)]
pub enum OnFault {
    /// The page is on its way: ask the source for it (by its source address).
    Fetch { src: u64 },
    /// Not a missing lazy page (never had contents, or emptied since, or
    /// filled a moment ago): a zero page, or just a wake-up if present.
    Zero,
}

/// The pages of the lazy runs still missing in the process, by where they are now.
#[derive(Clone, Debug, Default)]
pub struct LazyMap {
    segs: Vec<Segment>,
    missing: usize,
}

impl LazyMap {
    pub fn new(runs: &[(u64, u64)]) -> LazyMap {
        let segs: Vec<Segment> = runs.iter().map(|&(a, l)| Segment::new(a, a, l, true)).collect();
        let missing = runs.iter().map(|r| (r.1 / PAGE) as usize).sum();
        LazyMap { segs, missing }
    }

    /// Pages still missing.
    pub fn missing(&self) -> usize {
        self.missing
    }

    pub fn on_fault(&self, addr: u64) -> OnFault {
        let page = addr & !(PAGE - 1);
        for s in &self.segs {
            if page >= s.cur && page < s.cur + s.len {
                let i = ((page - s.cur) / PAGE) as usize;
                return if s.is_missing(i) { OnFault::Fetch { src: s.src + (page - s.cur) } } else { OnFault::Zero };
            }
        }
        OnFault::Zero
    }

    /// For pages that arrived for source range `[src, src + len)`: the runs of
    /// them still missing, as (current address, offset into the data, length).
    pub fn wanted(&self, src: u64, len: u64) -> Vec<(u64, usize, u64)> {
        let mut out: Vec<(u64, usize, u64)> = Vec::new();
        for s in &self.segs {
            let lo = src.max(s.src);
            let hi = (src + len).min(s.src + s.len);
            let mut a = lo;
            while a < hi {
                let i = ((a - s.src) / PAGE) as usize;
                if s.is_missing(i) {
                    let cur = s.cur + (a - s.src);
                    let off = (a - src) as usize;
                    match out.last_mut() {
                        Some((c, o, l)) if *c + *l == cur && *o + *l as usize == off => *l += PAGE,
                        _ => out.push((cur, off, PAGE)),
                    }
                }
                a += PAGE;
            }
        }
        out.sort_unstable();
        out
    }

    /// Marks `[cur, cur + len)` no longer missing (filled, or emptied/unmapped
    /// by the process: then it reads as zeroes, or is gone).
    pub fn settle(&mut self, cur: u64, len: u64) {
        for s in &mut self.segs {
            let lo = cur.max(s.cur);
            let hi = (cur + len).min(s.cur + s.len);
            let mut a = lo;
            while a < hi {
                if s.clear(((a - s.cur) / PAGE) as usize) {
                    self.missing -= 1;
                }
                a += PAGE;
            }
        }
    }

    /// Marks `[cur, cur + len)` missing again (where it is a lazy run).
    pub fn unsettle(&mut self, cur: u64, len: u64) {
        for s in &mut self.segs {
            let lo = cur.max(s.cur);
            let hi = (cur + len).min(s.cur + s.len);
            let mut a = lo;
            while a < hi {
                let i = ((a - s.cur) / PAGE) as usize;
                if !s.is_missing(i) {
                    s.missing[i / 64] |= 1 << (i % 64);
                    self.missing += 1;
                }
                a += PAGE;
            }
        }
    }

    /// `[from, from + len)` moved to `to` (mremap): its missing pages with it.
    /// Whatever was at `[to, to + len)` before is gone.
    pub fn remap(&mut self, from: u64, to: u64, len: u64) {
        for edge in [from, from + len, to, to + len] {
            self.cut(edge);
        }
        let inside = |s: &Segment, a: u64| s.cur >= a && s.cur + s.len <= a + len;
        let mut dropped = 0usize;
        self.segs.retain(|s| {
            let gone = inside(s, to) && !inside(s, from);
            if gone {
                dropped += (0..(s.len / PAGE) as usize).filter(|&i| s.is_missing(i)).count();
            }
            !gone
        });
        self.missing -= dropped;
        for s in &mut self.segs {
            if inside(s, from) {
                s.cur = s.cur - from + to;
            }
        }
        self.segs.sort_by_key(|s| s.cur);
    }

    /// Splits the segment that spans `edge` (if any) in two there.
    fn cut(&mut self, edge: u64) {
        if let Some(k) = self.segs.iter().position(|s| edge > s.cur && edge < s.cur + s.len) {
            let s = &mut self.segs[k];
            let tail = s.split_at(((edge - s.cur) / PAGE) as usize);
            self.segs.insert(k + 1, tail);
        }
    }

    /// Source addresses of every page still missing (for asking again).
    pub fn missing_sources(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for s in &self.segs {
            for i in 0..(s.len / PAGE) as usize {
                if s.is_missing(i) {
                    out.push(s.src + i as u64 * PAGE);
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Target: the pager
// ---------------------------------------------------------------------------

/// What the node stream hands the pager.
pub enum PagerInput {
    Pages { addr: u64, data: Vec<u8> },
    End,
}

/// The stream task's handle on a pager.
pub type PagerLink = WakeSender<PagerInput>;

/// How a pager ended.
#[derive(Debug, PartialEq, Eq)]
pub enum PagerEnd {
    /// Every page is in place; the userfaultfd is closed.
    /// `layout`: mremap/madvise/munmap events followed meanwhile; `forks`: children
    /// the process made meanwhile, whose pages it filled too.
    Complete { pages: usize, faults: u64, requested: u64, layout: u64, forks: u64 },
    /// No process waits for pages any more: the process (and every child it made
    /// meanwhile) ended or replaced its memory (execve).
    Gone,
    /// The stream stopped (or something failed) before that.
    Stopped(String),
}

/// How long before a fork event pages placed in the parent count as perhaps not
/// in the child (see [`Pager::forked`]).
const FORK_RACE: Duration = Duration::from_secs(2);

/// Starts the pager of process `pid` (see the module documentation).
/// `request` asks the source for the page at a source address; `end` is
/// called once, when the pager ends. A userfaultfd made with fork events
/// (`herd_kernel::uffd::FEATURE_EVENT_FORK`: at home, where the process runs
/// natively and may fork) has the pager fill its children too.
pub fn start_pager(
    pid: i32,
    uffd: OwnedFd,
    runs: &[(u64, u64)],
    request: impl Fn(u64) -> bool + Send + 'static,
    end: impl FnOnce(PagerEnd) + Send + 'static,
) -> std::io::Result<PagerLink> {
    let (tx, rx) = crate::wake::channel()?;
    let map = LazyMap::new(runs);
    let uffd = Uffd::from_fd(uffd, pid);
    std::thread::Builder::new().name(format!("pager-{pid}")).spawn(move || {
        let mut p = Pager { members: vec![Member { id: 0, uffd, map }], pid, requested: HashSet::new(), recent: VecDeque::new(), faults: 0, asked: 0, pages: 0, layout: 0, forks: 0 };
        let outcome = p.run(&rx, &request);
        end(outcome);
    })?;
    Ok(tx)
}

/// A process whose memory the pager fills: the one restored, or a child it forked
/// meanwhile (its own userfaultfd, its own layout).
struct Member {
    /// Its number, in the order the pager met them (the process is 0).
    id: u64,
    uffd: Uffd,
    map: LazyMap,
}

struct Pager {
    /// The process first; members whose memory is gone are dropped.
    members: Vec<Member>,
    pid: i32,
    /// Source pages asked for and not yet arrived.
    requested: HashSet<u64>,
    /// Pages placed lately (when, in which member, where, how much): a child that
    /// member forked at about that time may lack them.
    recent: VecDeque<(Instant, u64, u64, u64)>,
    faults: u64,
    asked: u64,
    pages: usize,
    layout: u64,
    forks: u64,
}

/// Why a pager stops.
enum Stop {
    /// Every member is gone.
    Gone,
    Failed(String),
}

impl From<String> for Stop {
    fn from(s: String) -> Stop {
        Stop::Failed(s)
    }
}

impl Pager {
    fn run(&mut self, rx: &WakeReceiver<PagerInput>, request: &dyn Fn(u64) -> bool) -> PagerEnd {
        match self.serve(rx, request) {
            Ok(()) => PagerEnd::Complete { pages: self.pages, faults: self.faults, requested: self.asked, layout: self.layout, forks: self.forks },
            Err(Stop::Gone) => PagerEnd::Gone,
            Err(Stop::Failed(why)) => PagerEnd::Stopped(why),
        }
    }

    fn missing(&self) -> usize {
        self.members.iter().map(|m| m.map.missing()).sum()
    }

    fn serve(&mut self, rx: &WakeReceiver<PagerInput>, request: &dyn Fn(u64) -> bool) -> Result<(), Stop> {
        self.pages = self.missing();
        let mut ended = false;
        let mut events = Vec::new();
        loop {
            if self.members.is_empty() {
                return Err(Stop::Gone);
            }
            if ended && self.missing() == 0 {
                return Ok(());
            }
            let (ready, woken) = {
                let mut fds: Vec<PollFd> = self.members.iter().map(|m| PollFd::new(m.uffd.as_fd(), PollFlags::POLLIN)).collect();
                fds.push(PollFd::new(rx.as_fd(), PollFlags::POLLIN));
                match poll(&mut fds, PollTimeout::from(1000u16)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(Stop::Failed(format!("poll: {e}"))),
                }
                let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
                let woken = ready[ready.len() - 1];
                (ready[..ready.len() - 1].to_vec(), woken)
            };
            // Newest first: a member dropped meanwhile does not shift the ones still to see.
            for k in (0..ready.len()).rev() {
                if ready[k] {
                    let _ = self.events(k, &mut events, request, ended)?;
                }
            }
            if woken {
                rx.drain();
            }
            loop {
                match rx.rx.try_recv() {
                    Ok(PagerInput::Pages { addr, data }) => self.fill(addr, &data, &mut events, request, ended)?,
                    Ok(PagerInput::End) => {
                        ended = true;
                        // Whatever is still missing (lost to a race with the process's
                        // own changes) is asked for again.
                        self.ask_missing(request)?;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(Stop::Failed("the stream to the source is gone".into())),
                }
            }
        }
    }

    /// Asks again for every page a member still lacks (after the source's end).
    fn ask_missing(&mut self, request: &dyn Fn(u64) -> bool) -> Result<(), Stop> {
        let wanted: Vec<u64> = self.members.iter().flat_map(|m| m.map.missing_sources()).collect();
        for src in wanted {
            self.ask(src, request)?;
        }
        Ok(())
    }

    fn ask(&mut self, src: u64, request: &dyn Fn(u64) -> bool) -> Result<(), Stop> {
        if self.requested.insert(src) {
            self.asked += 1;
            if !request(src) {
                return Err(Stop::Failed("the stream to the source is gone".into()));
            }
        }
        Ok(())
    }

    /// Member `k`'s memory is gone (it ended, or replaced it by execve).
    fn drop_member(&mut self, k: usize) {
        let id = self.members.remove(k).id;
        tracing::debug!(pid = self.pid, member = id, "post-copy: a process's memory is gone");
        self.recent.retain(|r| r.1 != id);
    }

    /// Handles member `k`'s pending events; false when its memory turned out gone
    /// (it is dropped).
    fn events(&mut self, k: usize, events: &mut Vec<Event>, request: &dyn Fn(u64) -> bool, ended: bool) -> Result<bool, Stop> {
        events.clear();
        let gone = |e: herd_kernel::KernelError| match e {
            herd_kernel::KernelError::Died { .. } => Stop::Gone,
            e => Stop::Failed(e.to_string()),
        };
        let read = self.members[k].uffd.events(events).map_err(gone);
        // Events read before the memory went are still followed (a fork among them).
        let mut alive = read.is_ok();
        for ev in events.drain(..) {
            match ev {
                Event::PageFault { addr } if alive => {
                    self.faults += 1;
                    let page = addr & !(PAGE - 1);
                    let m = &self.members[k];
                    match m.map.on_fault(page) {
                        OnFault::Fetch { src } => self.ask(src, request)?,
                        OnFault::Zero => match m.uffd.zero(page, PAGE).map_err(gone) {
                            Ok(Fill::Done | Fill::Gone) => {}
                            Ok(Fill::Partial { .. }) => m.uffd.wake(page, PAGE).map_err(gone).or_else(|e| if matches!(e, Stop::Gone) { alive = false; Ok(()) } else { Err(e) })?,
                            // The layout changes under us: the fault comes again after the event.
                            Ok(Fill::Again { .. }) => {}
                            Err(Stop::Gone) => alive = false,
                            Err(e) => return Err(e),
                        },
                    }
                }
                Event::Remap { from, to, len } => {
                    self.layout += 1;
                    self.members[k].map.remap(from, to, len);
                }
                Event::Remove { start, end } | Event::Unmap { start, end } => {
                    self.layout += 1;
                    self.members[k].map.settle(start, end.saturating_sub(start));
                }
                Event::Fork { fd } => {
                    let child = self.forked(k, fd);
                    self.members.push(child);
                    if ended {
                        self.ask_missing(request)?;
                    }
                }
                Event::PageFault { .. } => {}
                Event::Other(e) => tracing::debug!(pid = self.pid, "userfaultfd event {e:#x}"),
            }
        }
        match read {
            Err(Stop::Failed(e)) => Err(Stop::Failed(e)),
            _ if !alive => {
                self.drop_member(k);
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    /// Member `k` forked; `fd` is its child's userfaultfd. The child lacks what the
    /// parent lacked when its memory was copied — and perhaps pages placed in the
    /// parent a moment before the event was read (the fork copies the memory, lets go
    /// of it, then queues the event: a page placed in between is the parent's alone).
    /// Those are taken as missing in the child too; placing one the child has already
    /// fails harmlessly (EEXIST). (The moment between the copy and the event is short:
    /// [`FORK_RACE`] is far longer than that moment can be.)
    fn forked(&mut self, k: usize, fd: i32) -> Member {
        self.forks += 1;
        let uffd = Uffd::forked(fd, self.pid);
        let parent = self.members[k].id;
        let mut map = self.members[k].map.clone();
        let since = Instant::now() - FORK_RACE;
        while self.recent.front().is_some_and(|r| r.0 < since) {
            self.recent.pop_front();
        }
        for &(_, _, cur, len) in self.recent.iter().filter(|r| r.1 == parent) {
            map.unsettle(cur, len);
        }
        tracing::debug!(pid = self.pid, missing = map.missing(), "post-copy: the process forked; its child's pages are filled too");
        Member { id: self.forks, uffd, map }
    }

    /// Places pages that arrived for source address `src` in every member that lacks them.
    fn fill(&mut self, src: u64, data: &[u8], events: &mut Vec<Event>, request: &dyn Fn(u64) -> bool, ended: bool) -> Result<(), Stop> {
        if !src.is_multiple_of(PAGE) || !(data.len() as u64).is_multiple_of(PAGE) {
            return Err(Stop::Failed(format!("pages at {src:#x} ({} bytes) are not whole pages", data.len())));
        }
        let mut a = src;
        while a < src + data.len() as u64 {
            self.requested.remove(&a);
            a += PAGE;
        }
        for k in (0..self.members.len()).rev() {
            let id = self.members[k].id;
            match self.fill_member(k, src, data, events, request, ended) {
                // (Unless its events dropped it already.)
                Err(Stop::Gone) if self.members.get(k).is_some_and(|m| m.id == id) => self.drop_member(k),
                Err(Stop::Gone) => {}
                r => r?,
            }
        }
        Ok(())
    }

    /// [`Pager::fill`] for member `k`; `Stop::Gone` when its memory is gone.
    fn fill_member(&mut self, k: usize, src: u64, data: &[u8], events: &mut Vec<Event>, request: &dyn Fn(u64) -> bool, ended: bool) -> Result<(), Stop> {
        let died = |e: herd_kernel::KernelError| match e {
            herd_kernel::KernelError::Died { .. } => Stop::Gone,
            e => Stop::Failed(e.to_string()),
        };
        // The process changes its layout while we place pages (UFFDIO_COPY says EAGAIN
        // from the moment a remap starts until its event has been read): take the events
        // and try again where the pages are now. The event may not be queued yet when the
        // copy fails (the process may be off the CPU in between, on a busy node): then
        // wait a moment. Give up only after a long time of it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let wanted = self.members[k].map.wanted(src, data.len() as u64);
            if wanted.is_empty() {
                return Ok(());
            }
            let mut again = false;
            for (cur, off, len) in wanted {
                let m = &mut self.members[k];
                let mut done = 0u64;
                while done < len {
                    let at = cur + done;
                    let piece = &data[off + done as usize..off + len as usize];
                    match m.uffd.copy(at, piece).map_err(died)? {
                        Fill::Done => {
                            m.map.settle(at, piece.len() as u64);
                            done = len;
                        }
                        Fill::Partial { bytes } => {
                            // The page after `bytes` is there already (the process
                            // emptied and refilled it itself, or a child has it from
                            // its parent): it stays as it is.
                            m.map.settle(at, bytes + PAGE);
                            done += bytes + PAGE;
                        }
                        Fill::Again { bytes } => {
                            m.map.settle(at, bytes);
                            again = true;
                            break;
                        }
                        // Nothing there any more — or only part of it: an unmap whose
                        // event is not read yet may end inside these pages, and the
                        // kernel refuses a copy that is not wholly mapped. Page by page,
                        // so that the pages still mapped are not taken for gone.
                        Fill::Gone if piece.len() as u64 > PAGE => {
                            for page in piece.chunks(PAGE as usize) {
                                match m.uffd.copy(cur + done, page).map_err(died)? {
                                    Fill::Again { .. } => {
                                        again = true;
                                        break;
                                    }
                                    Fill::Done | Fill::Partial { .. } | Fill::Gone => {
                                        m.map.settle(cur + done, PAGE);
                                        done += PAGE;
                                    }
                                }
                            }
                            if again {
                                break;
                            }
                        }
                        Fill::Gone => {
                            m.map.settle(at, piece.len() as u64);
                            done = len;
                        }
                    }
                }
                if done > 0 {
                    let id = self.members[k].id;
                    self.recent.push_back((Instant::now(), id, cur, done.min(len)));
                }
                if again {
                    break;
                }
            }
            if !again {
                return Ok(());
            }
            let layout = self.layout;
            if !self.events(k, events, request, ended)? {
                return Ok(()); // dropped already
            }
            if self.layout == layout {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Err(Stop::Failed(format!("pages at {src:#x} could not be placed: the process keeps changing its memory layout")))
    }
}

// ---------------------------------------------------------------------------
// Source: the pusher
// ---------------------------------------------------------------------------

/// The source's handle on a pusher: requests for pages go in; dropping it
/// ends the pusher.
pub struct Pusher {
    requests: Sender<u64>,
}

impl Pusher {
    /// The target waits for the page at `addr`.
    pub fn request(&self, addr: u64) {
        let _ = self.requests.send(addr);
    }
}

/// What a pusher sends (the caller wraps it in the message of its direction).
pub enum Push {
    Pages { addr: u64, data: Vec<u8> },
    /// Every page has gone once.
    End,
}

/// What a pusher reports when it stops sending (it still answers requests).
#[derive(Debug, Clone, Copy)]
pub struct Pushed {
    pub bytes: u64,
    pub requested: u64,
}

/// Starts sending the pages of `runs` from process `pid` (stopped, or a
/// deputy that keeps its memory) through `send`, stack first (`first`: a
/// range to send before the others, e.g. the stack), then in address order.
/// `sent` is called once every page has gone (after `PagesEnd`).
pub fn start_pusher(
    pid: i32,
    runs: Vec<(u64, u64)>,
    first: Option<(u64, u64)>,
    mut send: impl FnMut(Push) -> bool + Send + 'static,
    sent: impl FnOnce(Result<Pushed, String>) + Send + 'static,
) -> Pusher {
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let chunks = chunks(&runs, first);
    std::thread::Builder::new()
        .name(format!("pusher-{pid}"))
        .spawn(move || {
            let mut done = vec![false; chunks.len()];
            let mut buf = vec![0u8; PAGES_CHUNK];
            let mut next = 0usize;
            let mut requested = 0u64;
            let mut push = |i: usize, done: &mut Vec<bool>, send: &mut dyn FnMut(Push) -> bool| -> Result<bool, String> {
                let (a, l) = chunks[i];
                let data = &mut buf[..l as usize];
                mem::read_ranges(pid, &[(a, l)], data).map_err(|e| format!("reading pages at {a:#x}: {e}"))?;
                done[i] = true;
                Ok(send(Push::Pages { addr: a, data: data.to_vec() }))
            };
            let mut sent = Some(sent);
            let by_addr = sorted_index(&chunks);
            loop {
                // Pages the process waits for first.
                let mut gone = false;
                let finished = next >= chunks.len();
                loop {
                    let req = if finished && sent.is_none() {
                        match rx.recv() {
                            Ok(r) => r,
                            Err(_) => return,
                        }
                    } else {
                        match rx.try_recv() {
                            Ok(r) => r,
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                gone = true;
                                break;
                            }
                        }
                    };
                    requested += 1;
                    if let Some(i) = find_chunk(&chunks, &by_addr, req) {
                        // Before the end, a request for a chunk already sent crossed it on
                        // the way; after it, the target asks again for what it lacks.
                        if (!done[i] || finished) && !pushed(push(i, &mut done, &mut send), &mut sent) {
                            return;
                        }
                    }
                }
                if gone {
                    return;
                }
                while next < chunks.len() && done[next] {
                    next += 1;
                }
                if next < chunks.len() {
                    if !pushed(push(next, &mut done, &mut send), &mut sent) {
                        return;
                    }
                } else if let Some(s) = sent.take() {
                    if !send(Push::End) {
                        return;
                    }
                    let bytes = chunks.iter().zip(&done).filter(|(_, d)| **d).map(|(c, _)| c.1).sum();
                    s(Ok(Pushed { bytes, requested }));
                }
            }
        })
        .expect("spawn a pusher thread");
    Pusher { requests: tx }
}

/// Whether the pusher goes on after sending a chunk: not when the stream is gone, nor
/// when the pages could not be read (then `sent` hears of it, once).
fn pushed<S: FnOnce(Result<Pushed, String>)>(r: Result<bool, String>, sent: &mut Option<S>) -> bool {
    match r {
        Ok(go) => go,
        Err(e) => {
            if let Some(s) = sent.take() {
                s(Err(e));
            }
            false
        }
    }
}

/// The runs cut into chunks of at most [`PAGES_CHUNK`], aligned to it, the
/// ones inside `first` first.
fn chunks(runs: &[(u64, u64)], first: Option<(u64, u64)>) -> Vec<(u64, u64)> {
    let step = PAGES_CHUNK as u64;
    let mut out = Vec::new();
    for &(a, l) in runs {
        let mut x = a;
        while x < a + l {
            let end = ((x / step) + 1) * step;
            let end = end.min(a + l);
            out.push((x, end - x));
            x = end;
        }
    }
    if let Some((fa, fl)) = first {
        // Stack: from its top down, where the process is most likely to be.
        let (mut inside, rest): (Vec<_>, Vec<_>) = out.into_iter().partition(|&(a, l)| a < fa + fl && a + l > fa);
        inside.reverse();
        inside.extend(rest);
        out = inside;
    }
    out
}

fn sorted_index(chunks: &[(u64, u64)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..chunks.len()).collect();
    idx.sort_by_key(|&i| chunks[i].0);
    idx
}

fn find_chunk(chunks: &[(u64, u64)], by_addr: &[usize], addr: u64) -> Option<usize> {
    let pos = by_addr.partition_point(|&i| chunks[i].0 <= addr);
    let i = *by_addr.get(pos.checked_sub(1)?)?;
    let (a, l) = chunks[i];
    (addr >= a && addr < a + l).then_some(i)
}

/// How long a stream may stay silent during post-copy before it counts as lost.
pub const SILENCE: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE;

    #[test]
    fn faults_fetch_missing_pages_and_zero_the_rest() {
        let mut m = LazyMap::new(&[(0x10000, 4 * P), (0x20000, 2 * P)]);
        assert_eq!(m.missing(), 6);
        assert_eq!(m.on_fault(0x10000 + P + 5), OnFault::Fetch { src: 0x10000 + P });
        assert_eq!(m.on_fault(0x30000), OnFault::Zero);
        m.settle(0x10000 + P, P);
        assert_eq!(m.on_fault(0x10000 + P), OnFault::Zero);
        assert_eq!(m.missing(), 5);
        assert_eq!(m.wanted(0x10000, 4 * P), vec![(0x10000, 0, P), (0x10000 + 2 * P, 2 * P as usize, 2 * P)]);
    }

    #[test]
    fn removed_pages_are_no_longer_missing() {
        let mut m = LazyMap::new(&[(0x10000, 8 * P)]);
        m.settle(0x10000 + 2 * P, 3 * P);
        assert_eq!(m.missing(), 5);
        assert_eq!(m.wanted(0x10000 + 2 * P, 3 * P), vec![]);
        assert_eq!(m.missing_sources(), vec![0x10000, 0x10000 + P, 0x10000 + 5 * P, 0x10000 + 6 * P, 0x10000 + 7 * P]);
    }

    #[test]
    fn remapped_pages_are_placed_where_they_went() {
        let mut m = LazyMap::new(&[(0x10000, 8 * P)]);
        // Pages 2..6 move to 0x80000.
        m.remap(0x10000 + 2 * P, 0x80000, 4 * P);
        assert_eq!(m.missing(), 8);
        assert_eq!(m.on_fault(0x80000 + P), OnFault::Fetch { src: 0x10000 + 3 * P });
        assert_eq!(m.on_fault(0x10000 + 3 * P), OnFault::Zero);
        assert_eq!(m.on_fault(0x10000 + 7 * P), OnFault::Fetch { src: 0x10000 + 7 * P });
        // Source pages 0..8 arrive in one piece: three destinations.
        assert_eq!(
            m.wanted(0x10000, 8 * P),
            vec![(0x10000, 0, 2 * P), (0x10000 + 6 * P, 6 * P as usize, 2 * P), (0x80000, 2 * P as usize, 4 * P)]
        );
        m.settle(0x80000, 4 * P);
        assert_eq!(m.missing(), 4);
        // Moved again, and onto pages that were missing: those are gone.
        m.remap(0x10000, 0x10000 + 6 * P, 2 * P);
        assert_eq!(m.missing(), 2);
        assert_eq!(m.on_fault(0x10000 + 7 * P), OnFault::Fetch { src: 0x10000 + P });
    }

    #[test]
    fn split_keeps_bits_beyond_64_pages() {
        let mut m = LazyMap::new(&[(0x100000, 200 * P)]);
        m.settle(0x100000 + 70 * P, P);
        m.remap(0x100000 + 65 * P, 0x900000, 100 * P);
        assert_eq!(m.missing(), 199);
        assert_eq!(m.on_fault(0x900000 + 5 * P), OnFault::Zero);
        assert_eq!(m.on_fault(0x900000 + 6 * P), OnFault::Fetch { src: 0x100000 + 71 * P });
        assert_eq!(m.on_fault(0x100000 + 64 * P), OnFault::Fetch { src: 0x100000 + 64 * P });
        assert_eq!(m.on_fault(0x100000 + 165 * P), OnFault::Fetch { src: 0x100000 + 165 * P });
        assert_eq!(m.missing_sources().len(), 199);
    }

    #[test]
    fn chunks_are_aligned_and_the_stack_comes_first() {
        let step = PAGES_CHUNK as u64;
        let runs = [(step - P, 3 * P), (10 * step, 2 * step)];
        let c = chunks(&runs, Some((10 * step, 2 * step)));
        assert_eq!(c, vec![(11 * step, step), (10 * step, step), (step - P, P), (step, 2 * P)]);
        let idx = sorted_index(&c);
        assert_eq!(find_chunk(&c, &idx, step + P), Some(3));
        assert_eq!(find_chunk(&c, &idx, 10 * step + 5), Some(1));
        assert_eq!(find_chunk(&c, &idx, 5 * step), None);
        assert_eq!(find_chunk(&c, &idx, 0), None);
    }
}
