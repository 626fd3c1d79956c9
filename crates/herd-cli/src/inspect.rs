//! `herd inspect`: what an image holds. Reads (and so verifies) the whole image.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use herd_image::tree::{read_tree_after_magic, MemoryKind, NamelessKind, SharedOfd, TreeImage, TREE_MAGIC};
use herd_image::{FileKind, ImageReader, Section, VmaKind, PROT_EXEC, PROT_READ, PROT_WRITE};
use serde::Serialize;

#[derive(Serialize)]
struct Summary {
    image_version: u32,
    created_unix_ms: u64,
    hostname: String,
    kernel: String,
    pid: i32,
    command: Vec<String>,
    comm: String,
    exe: String,
    cwd: String,
    uid: u32,
    gid: u32,
    threads: u32,
    /// Every thread, the main one first.
    thread_list: Vec<ThreadSummary>,
    memory_bytes: u64,
    stored_bytes: u64,
    regions: Vec<Region>,
    files: Vec<Fd>,
    signal_handlers: Vec<u32>,
    pending_signals: Vec<u32>,
    blocked_signals: u64,
    /// Timers, locks and process attributes (format version 3; absent in older
    /// images and in migration images).
    state: Option<State>,
    /// Its seccomp filters, the first installed first: instructions and flags of each.
    seccomp_filters: Vec<Filter>,
}

#[derive(Serialize)]
struct Filter {
    instructions: usize,
    flags: u64,
}

#[derive(Serialize)]
struct State {
    /// Effective, permitted, inheritable, bounding and ambient capability sets.
    capabilities: [String; 5],
    membarrier_registrations: u32,
    loginuid: Option<u32>,
    itimers: Vec<Timer>,
    posix_timers: Vec<String>,
    oom_score_adj: i32,
    child_subreaper: bool,
    thp_disable: bool,
    no_new_privs: bool,
    dumpable: u32,
    locks: Vec<Lock>,
}

#[derive(Serialize)]
struct Timer {
    which: String,
    value_us: u64,
    interval_us: u64,
}

#[derive(Serialize)]
struct Lock {
    fd: i32,
    kind: String,
    mode: String,
    range: String,
}

/// The signal numbers in a mask (bit n-1 for signal n).
fn signals_of(mask: u64) -> Vec<u32> {
    (1..=64).filter(|n| mask & (1 << (n - 1)) != 0).collect()
}

#[derive(Serialize)]
struct ThreadSummary {
    tid: i32,
    comm: String,
    blocked_signals: u64,
    pending_signals: Vec<u32>,
    /// The system call it was stopped in (orig_rax), if any.
    in_syscall: Option<i64>,
}

#[derive(Serialize)]
struct Region {
    start: String,
    end: String,
    perms: String,
    kind: String,
    size: u64,
    stored: u64,
}

#[derive(Serialize)]
struct Fd {
    fd: i32,
    kind: String,
    target: String,
    offset: Option<u64>,
}

fn perms(p: u8, shared: bool) -> String {
    let f = |bit, c| if p & bit != 0 { c } else { '-' };
    [f(PROT_READ, 'r'), f(PROT_WRITE, 'w'), f(PROT_EXEC, 'x'), if shared { 's' } else { 'p' }].iter().collect()
}

#[derive(Serialize)]
struct TreeSummary {
    processes: Vec<MemberSummary>,
    pipes: Vec<PipeSummary>,
    socket_pairs: Vec<String>,
    shared_files: Vec<String>,
    /// Memory without a name that members map (made once, mapped by each).
    memory: Vec<String>,
    /// Each live member's image, in order.
    images: Vec<Summary>,
}

#[derive(Serialize)]
struct MemberSummary {
    pid: i32,
    parent: Option<i32>,
    pgid: i32,
    sid: i32,
    /// A zombie's wait status, as "exit N" or "signal N".
    zombie: Option<String>,
}

#[derive(Serialize)]
struct PipeSummary {
    bytes: usize,
    capacity: u32,
    fifo: Option<String>,
}

/// An eventfd, timerfd or signalfd: its kind and what it holds.
fn event_file(k: &FileKind) -> Option<(&'static str, String)> {
    Some(match k {
        FileKind::EventFd { count, flags } => ("eventfd", format!("count {count}{}", if flags & libc::EFD_SEMAPHORE != 0 { ", semaphore" } else { "" })),
        FileKind::TimerFd { clockid, interval_ns, value_ns, ticks, .. } => (
            "timerfd",
            if *value_ns == 0 {
                format!("clock {clockid}, disarmed, {ticks} unread")
            } else {
                format!("clock {clockid}, fires in {:.3} s, every {:.3} s, {ticks} unread", *value_ns as f64 / 1e9, *interval_ns as f64 / 1e9)
            },
        ),
        FileKind::SignalFd { mask, .. } => ("signalfd", format!("signals {:?}", signals_of(*mask))),
        FileKind::Inotify { watches, .. } => ("inotify", watches.iter().map(|w| format!("watch {} on {} (mask {:#x})", w.wd, w.path, w.mask)).collect::<Vec<_>>().join(", ")),
        _ => return None,
    })
}

fn describe_ofd(o: &SharedOfd) -> String {
    match o {
        SharedOfd::File(k) => match k {
            FileKind::Regular { path, offset, .. } | FileKind::Directory { path, offset, .. } => format!("{path} at offset {offset}"),
            FileKind::Device { path, .. } | FileKind::PathOnly { path, .. } => path.clone(),
            other => format!("{other:?}"),
        },
        SharedOfd::PipeEnd { pipe, write, .. } => format!("pipe {pipe}, {} end", if *write { "write" } else { "read" }),
        SharedOfd::Outer { fd, what } => format!("herd restart's fd {fd} (was {what})"),
        SharedOfd::SocketEnd { pair, end, .. } => format!("socket pair {pair}, end {end}"),
        SharedOfd::Socket { bound, connected, backlog, .. } => {
            let mut s = match backlog {
                Some(b) => format!("socket listening (backlog {b})"),
                None => "socket".to_string(),
            };
            if let Some(b) = bound {
                s += &format!(" on {b}");
            }
            if let Some(c) = connected {
                s += &format!(" connected to {c}");
            }
            s
        }
        SharedOfd::PtyMaster(p) => format!(
            "pseudo-terminal master (was /dev/pts/{}), {}x{}{}{}{}",
            p.number,
            p.winsize[1],
            p.winsize[0],
            if p.lflag & libc::ECHO != 0 { ", echo" } else { ", no echo" },
            if p.lflag & libc::ICANON != 0 { ", canonical" } else { ", raw" },
            p.session.map(|s| format!(", controlling terminal of session {s}")).unwrap_or_default()
        ),
        SharedOfd::PtySlave { master, .. } => format!("pseudo-terminal slave of shared file {master}"),
        SharedOfd::Tcp(c) => format!(
            "TCP connection {} -> {}: {} bytes received and not read, {} sent and not acknowledged, {} not sent; mss {}{}{}{}",
            c.local,
            c.remote,
            c.received.len(),
            c.sent.len(),
            c.unsent.len(),
            c.mss,
            c.wscale.map(|(s, r)| format!(", window scale {s}/{r}")).unwrap_or_default(),
            if c.sack { ", SACK" } else { "" },
            if c.timestamp.is_some() { ", timestamps" } else { "" }
        ),
        SharedOfd::Fanotify(f) => {
            let marks: Vec<String> = f.marks.iter().map(|m| format!("{} {} (mask {:#x}, ignored {:#x})", format!("{:?}", m.on).to_lowercase(), m.path, m.mask, m.ignored)).collect();
            format!("fanotify, flags {:#x}, event flags {:#x}, marks: {}", f.flags, f.event_flags, if marks.is_empty() { "none".to_string() } else { marks.join(", ") })
        }
        SharedOfd::Epoll { owner, targets } => {
            let watched: Vec<String> = targets.iter().map(|t| format!("fd {} (events {:#x}, data {:#x})", t.fd, t.events, t.data)).collect();
            format!("epoll, watching {} of member {owner}", if watched.is_empty() { "nothing".to_string() } else { watched.join(", ") })
        }
        SharedOfd::Event(k) => match event_file(k) {
            Some((kind, what)) => format!("{kind}, {what}"),
            None => format!("{k:?}"),
        },
        SharedOfd::Contents { kind, offset, contents, .. } => match kind {
            NamelessKind::Unlinked { dir, name } => format!("{dir}/{name} (deleted), {} bytes carried, at offset {offset}", contents.len()),
            NamelessKind::Memfd { name, seals } => format!("memfd:{name}, {} bytes carried, seals {seals:#x}, at offset {offset}", contents.len()),
        },
    }
}

pub fn run(path: &Path, json: bool) -> Result<i32> {
    let file = File::open(path).with_context(|| format!("cannot open image {}", path.display()))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    let is_tree = input.read_exact(&mut magic).is_ok() && magic == TREE_MAGIC;
    if !is_tree {
        let s = summarize(path, (&magic[..]).chain(&mut input), None)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            print_summary(path, &s);
        }
        return Ok(0);
    }
    let tree = read_tree_after_magic(&mut input).with_context(|| format!("{} is not a usable image", path.display()))?;
    let mut images = Vec::new();
    for _ in tree.live() {
        images.push(summarize(path, &mut input, Some(&tree))?);
    }
    let t = TreeSummary {
        processes: tree
            .members
            .iter()
            .map(|m| MemberSummary {
                pid: m.pid,
                parent: m.parent.map(|p| tree.members[p as usize].pid),
                pgid: m.pgid,
                sid: m.sid,
                zombie: m.zombie.map(|st| if libc::WIFSIGNALED(st) { format!("signal {}", libc::WTERMSIG(st)) } else { format!("exit {}", libc::WEXITSTATUS(st)) }),
            })
            .collect(),
        pipes: tree.pipes.iter().map(|p| PipeSummary { bytes: p.contents.len(), capacity: p.capacity, fifo: p.fifo.clone() }).collect(),
        socket_pairs: tree
            .socket_pairs
            .iter()
            .map(|p| {
                let kind = match p.kind {
                    1 => "stream",
                    2 => "datagram",
                    _ => "seqpacket",
                };
                let waiting = |e: usize| format!("{} messages, {} bytes", p.queued[e].len(), p.queued[e].iter().map(|m| m.len()).sum::<usize>());
                format!("unix {kind}: waiting at end 0 {}, at end 1 {}", waiting(0), waiting(1))
            })
            .collect(),
        shared_files: tree.ofds.iter().map(describe_ofd).collect(),
        memory: tree
            .memory
            .iter()
            .map(|m| {
                let what = match &m.kind {
                    MemoryKind::Anonymous => "shared anonymous memory".to_string(),
                    MemoryKind::Memfd { name, seals } => format!("memfd {name} (seals {seals:#x})"),
                    MemoryKind::Deleted { path } => format!("deleted file {path}"),
                };
                let fd = m.ofd.map(|o| format!(", also open as shared file {o}")).unwrap_or_default();
                format!("{what}, {} bytes{fd}", m.size)
            })
            .collect(),
        images,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&t)?);
        return Ok(0);
    }
    let n = t.processes.len();
    println!("tree image  {}: {n} process{}", path.display(), if n == 1 { "" } else { "es" });
    println!("{:>8} {:>8} {:>8} {:>8}  what", "pid", "parent", "pgid", "session");
    let mut imgs = t.images.iter();
    for m in &t.processes {
        let what = match &m.zombie {
            Some(z) => format!("zombie ({z})"),
            None => imgs.next().map(|s| s.command.join(" ")).unwrap_or_default(),
        };
        let parent = m.parent.map_or("-".to_string(), |p| p.to_string());
        println!("{:>8} {:>8} {:>8} {:>8}  {what}", m.pid, parent, m.pgid, m.sid);
    }
    for (i, p) in t.pipes.iter().enumerate() {
        let fifo = p.fifo.as_ref().map(|f| format!(", FIFO {f}")).unwrap_or_default();
        println!("pipe {i}      {} bytes waiting (capacity {}{fifo})", p.bytes, p.capacity);
    }
    for (i, p) in t.socket_pairs.iter().enumerate() {
        println!("sockets {i}   {p}");
    }
    for (i, f) in t.shared_files.iter().enumerate() {
        println!("shared {i}    {f}");
    }
    for (i, m) in t.memory.iter().enumerate() {
        println!("memory {i}    {m}");
    }
    for s in &t.images {
        println!();
        print_summary(path, s);
    }
    Ok(0)
}

/// Reads (and so verifies) one process image from `input`.
fn summarize<R: Read>(path: &Path, input: R, tree: Option<&TreeImage>) -> Result<Summary> {
    let mut reader = ImageReader::new(input).with_context(|| format!("{} is not a usable image", path.display()))?;
    let version = reader.version();
    let image = match reader.next_section()? {
        Some(Section::Process(p)) => p,
        _ => bail!("{} has no process section", path.display()),
    };
    // Read to the end: a damaged image is reported here, not at restart.
    while let Some(s) = reader.next_section().with_context(|| format!("{} is damaged", path.display()))? {
        if let Section::End { .. } = s {
            break;
        }
    }
    let t = &image.task;
    let regions: Vec<Region> = image
        .vmas
        .iter()
        .map(|v| Region {
            start: format!("{:#x}", v.start),
            end: format!("{:#x}", v.end),
            perms: perms(v.prot, v.shared),
            kind: match &v.kind {
                VmaKind::Anonymous => "anonymous".into(),
                VmaKind::Heap => "[heap]".into(),
                VmaKind::Stack => "[stack]".into(),
                VmaKind::Vdso => "[vdso]".into(),
                VmaKind::Vvar => "[vvar]".into(),
                VmaKind::File { file, .. } => file.path.clone(),
                VmaKind::Memory { object, offset } => format!("memory object {object} from byte {offset}"),
                VmaKind::AtHome { name } => format!("kept at home: {name}"),
            },
            size: v.len(),
            stored: v.stored_bytes,
        })
        .collect();
    let files = image
        .files
        .iter()
        .map(|f| match &f.kind {
            FileKind::Regular { path, offset, .. } => Fd { fd: f.fd, kind: "file".into(), target: path.clone(), offset: Some(*offset) },
            FileKind::Device { path, .. } => Fd { fd: f.fd, kind: "device".into(), target: path.clone(), offset: None },
            FileKind::Inherited { what } => Fd { fd: f.fd, kind: "inherited".into(), target: what.clone(), offset: None },
            FileKind::Directory { path, offset, .. } => Fd { fd: f.fd, kind: "directory".into(), target: path.clone(), offset: Some(*offset) },
            FileKind::PathOnly { path, .. } => Fd { fd: f.fd, kind: "O_PATH".into(), target: path.clone(), offset: None },
            k @ (FileKind::EventFd { .. } | FileKind::TimerFd { .. } | FileKind::SignalFd { .. }) => {
                let (kind, target) = event_file(k).expect("an event file");
                Fd { fd: f.fd, kind: kind.into(), target, offset: None }
            }
            FileKind::Epoll { targets, .. } => Fd {
                fd: f.fd,
                kind: "epoll".into(),
                target: format!("watching fds {:?}", targets.iter().map(|t| t.fd).collect::<Vec<_>>()),
                offset: None,
            },
            FileKind::Inotify { watches, .. } => Fd {
                fd: f.fd,
                kind: "inotify".into(),
                target: watches.iter().map(|w| format!("{} ({:#x})", w.path, w.mask)).collect::<Vec<_>>().join(", "),
                offset: None,
            },
            FileKind::PidFd { pid, .. } => Fd { fd: f.fd, kind: "pidfd".into(), target: format!("process {pid}"), offset: None },
            FileKind::Shared { ofd } => Fd {
                fd: f.fd,
                kind: "shared".into(),
                target: tree.and_then(|t| t.ofds.get(*ofd as usize)).map_or(format!("shared file {ofd}"), describe_ofd),
                offset: None,
            },
        })
        .collect();
    let state = image.state.as_ref().map(|st| State {
        capabilities: [st.caps.effective, st.caps.permitted, st.caps.inheritable, st.caps.bounding, st.caps.ambient].map(|c| format!("{c:#x}")),
        membarrier_registrations: st.membarrier,
        loginuid: (st.loginuid != u32::MAX).then_some(st.loginuid),
        itimers: st
            .itimers
            .iter()
            .map(|t| Timer { which: ["real", "virtual", "prof"].get(t.which as usize).unwrap_or(&"?").to_string(), value_us: t.value_us, interval_us: t.interval_us })
            .collect(),
        posix_timers: st
            .posix_timers
            .iter()
            .map(|t| {
                let when = if t.value_ns == 0 { "disarmed".to_string() } else { format!("in {:.3} s every {:.3} s", t.value_ns as f64 / 1e9, t.interval_ns as f64 / 1e9) };
                let to = if t.notify & libc::SIGEV_THREAD_ID != 0 { format!("thread {}", t.tid) } else { "the process".into() };
                format!("timer {} (clock {}) {when}, signal {} to {to}", t.id, t.clockid, t.signo)
            })
            .collect(),
        oom_score_adj: st.oom_score_adj,
        child_subreaper: st.child_subreaper,
        thp_disable: st.thp_disable,
        no_new_privs: st.no_new_privs,
        dumpable: st.dumpable,
        locks: st
            .locks
            .iter()
            .map(|l| Lock {
                fd: l.fd,
                kind: format!("{:?}", l.kind).to_lowercase(),
                mode: if l.write { "write" } else { "read" }.into(),
                range: match l.kind {
                    herd_image::LockKind::Lease if l.start == 0 => "whole file, break signal SIGIO".into(),
                    herd_image::LockKind::Lease => format!("whole file, break signal {}", l.start),
                    _ if l.len == 0 => format!("{}-EOF", l.start),
                    _ => format!("{}-{}", l.start, l.start.saturating_add(l.len - 1)),
                },
            })
            .collect(),
    });
    let in_syscall = |gp: &[u64]| gp.get(15).map(|&w| w as i64).filter(|&n| n >= 0);
    let mut thread_list = vec![ThreadSummary {
        tid: t.pid,
        comm: t.comm.clone(),
        blocked_signals: image.signals.blocked,
        pending_signals: image.signals.pending.iter().filter(|p| !p.shared).map(|p| p.signo).collect(),
        in_syscall: in_syscall(&image.regs.gp),
    }];
    thread_list.extend(image.threads.iter().map(|th| ThreadSummary {
        tid: th.tid,
        comm: th.comm.clone(),
        blocked_signals: th.blocked,
        pending_signals: th.pending.iter().map(|p| p.signo).collect(),
        in_syscall: in_syscall(&th.regs.gp),
    }));
    let s = Summary {
        image_version: version,
        created_unix_ms: image.origin.created_unix_ms,
        hostname: image.origin.hostname.clone(),
        kernel: image.origin.kernel_release.clone(),
        pid: t.pid,
        command: t.cmdline.clone(),
        comm: t.comm.clone(),
        exe: t.exe.clone(),
        cwd: t.cwd.clone(),
        uid: t.uid,
        gid: t.gid,
        threads: thread_list.len() as u32,
        thread_list,
        memory_bytes: image.vmas.iter().map(|v| v.len()).sum(),
        stored_bytes: image.vmas.iter().map(|v| v.stored_bytes).sum(),
        regions,
        files,
        signal_handlers: image.signals.handlers.iter().filter(|h| h.handler > 1).map(|h| h.signo).collect(),
        pending_signals: image.signals.pending.iter().map(|p| p.signo).collect(),
        blocked_signals: image.signals.blocked,
        state,
        seccomp_filters: image.seccomp.iter().map(|f| Filter { instructions: f.insns.len() / 8, flags: f.flags }).collect(),
    };
    Ok(s)
}

fn print_summary(path: &Path, s: &Summary) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("image       {} (format version {})", path.display(), s.image_version);
    println!("made on     {} (kernel {})", s.hostname, s.kernel);
    println!(
        "process     pid {} ({}), uid {} gid {}, {} thread{}",
        s.pid,
        s.comm,
        s.uid,
        s.gid,
        s.threads,
        if s.threads == 1 { "" } else { "s" }
    );
    println!("command     {}", s.command.join(" "));
    println!("executable  {}", s.exe);
    println!("cwd         {}", s.cwd);
    println!("memory      {:.1} MiB mapped, {:.1} MiB stored in the image", mib(s.memory_bytes), mib(s.stored_bytes));
    println!("signals     handlers for {:?}, pending {:?}, blocked mask {:#x}", s.signal_handlers, s.pending_signals, s.blocked_signals);
    if !s.seccomp_filters.is_empty() {
        let each: Vec<String> = s.seccomp_filters.iter().map(|f| if f.flags == 0 { format!("{} instructions", f.instructions) } else { format!("{} instructions (flags {:#x})", f.instructions, f.flags) }).collect();
        println!("seccomp     {} filters on every thread, first installed first: {}", each.len(), each.join(", "));
    }
    if let Some(st) = &s.state {
        let timers: Vec<String> = st
            .itimers
            .iter()
            .map(|t| format!("{} in {:.3} s every {:.3} s", t.which, t.value_us as f64 / 1e6, t.interval_us as f64 / 1e6))
            .collect();
        println!("timers      {}", if timers.is_empty() { "none".into() } else { timers.join(", ") });
        for t in &st.posix_timers {
            println!("            {t}");
        }
        let mut flags = vec![format!("oom_score_adj {}", st.oom_score_adj), format!("dumpable {}", st.dumpable)];
        for (on, name) in [(st.child_subreaper, "child-subreaper"), (st.thp_disable, "THP disabled"), (st.no_new_privs, "no_new_privs")] {
            if on {
                flags.push(name.into());
            }
        }
        println!("attributes  {}", flags.join(", "));
        let [eff, prm, inh, bnd, amb] = &st.capabilities;
        println!("caps        effective {eff}, permitted {prm}, inheritable {inh}, bounding {bnd}, ambient {amb}");
        let locks: Vec<String> = st.locks.iter().map(|l| format!("{} {} lock on fd {} ({})", l.kind, l.mode, l.fd, l.range)).collect();
        println!("locks       {}", if locks.is_empty() { "none".into() } else { locks.join(", ") });
    }
    if s.threads > 1 {
        println!();
        println!("{:>8} {:<16} {:>18} {:>10}  pending", "tid", "name", "blocked", "syscall");
        for th in &s.thread_list {
            let sc = th.in_syscall.map_or("-".to_string(), |n| n.to_string());
            println!("{:>8} {:<16} {:>#18x} {:>10}  {:?}", th.tid, th.comm, th.blocked_signals, sc, th.pending_signals);
        }
    }
    println!();
    println!("{:<18} {:<18} {:<5} {:>10} {:>10}  what", "start", "end", "perm", "size KiB", "stored KiB");
    for r in &s.regions {
        println!("{:<18} {:<18} {:<5} {:>10} {:>10}  {}", r.start, r.end, r.perms, r.size / 1024, r.stored / 1024, r.kind);
    }
    println!();
    println!("{:>4} {:<10} what", "fd", "kind");
    for f in &s.files {
        let off = f.offset.map(|o| format!(" at offset {o}")).unwrap_or_default();
        println!("{:>4} {:<10} {}{}", f.fd, f.kind, f.target, off);
    }
}
