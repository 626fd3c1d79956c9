//! What a checkpoint carries besides memory, registers and plain files
//! (format version 3): event, timer, signal and epoll descriptors,
//! directories and `O_PATH` descriptors, file locks, interval timers and a
//! few process attributes (oom_score_adj, child-subreaper, THP-disable,
//! no_new_privs, dumpable).
//!
//! Capture reads /proc/PID/fdinfo (parsed by the pure [`FdInfo::parse`]) and
//! asks the process itself by injected calls; restore makes each descriptor
//! by an injected call in the new process and moves it to its number.

use herd_image::{Caps, EpollTarget, FileKind, FileLock, Itimer, LockKind, OpenFile, PosixTimer, ProcessState, RegionState};
use herd_kernel::abi::{self, EpollEvent, Flock, TimerPair};
use herd_kernel::inject::Injector;
use herd_kernel::mem;

use crate::check::CantMove;
use crate::restore::Scratch;
use crate::{CheckpointError, Result};

/// A lock line of fdinfo: `lock:\t1: POSIX  ADVISORY  WRITE 1234 fe:00:77 10 14`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LockLine {
    pub class: String,
    /// ADVISORY or MANDATORY for a lock; ACTIVE, BREAKING or BREAKER for a lease.
    pub mode: String,
    pub write: bool,
    pub start: u64,
    /// Last byte, inclusive; `None` for EOF.
    pub end: Option<u64>,
}

/// What /proc/PID/fdinfo/FD says about one descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FdInfo {
    pub flags: i32,
    pub pos: u64,
    pub ino: u64,
    pub eventfd_count: Option<u64>,
    pub eventfd_semaphore: bool,
    pub clockid: Option<i32>,
    pub ticks: u64,
    pub it_value: (u64, u64),
    pub it_interval: (u64, u64),
    pub sigmask: Option<u64>,
    /// A pidfd's process ("Pid:"; -1 once it has been reaped).
    pub pid: Option<i32>,
    /// inotify watches: (wd, mask, sdev, handle type, handle bytes).
    pub inotify: Vec<(i32, u32, u64, i32, Vec<u8>)>,
    /// epoll targets: (fd, events, data, inode of the target).
    pub tfds: Vec<(i32, u32, u64, u64)>,
    pub locks: Vec<LockLine>,
    /// A fanotify group's `fanotify_init` flags and event flags.
    pub fanotify: Option<(u32, u32)>,
    /// Its marks.
    pub fanotify_marks: Vec<FanMark>,
}

/// A mark of a fanotify group as fdinfo shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FanMark {
    pub on: FanOn,
    /// The mark's own flags (FAN_MARK_IGNORED_SURV_MODIFY, ...).
    pub mflags: u32,
    pub mask: u64,
    pub ignored: u64,
}

/// What a fanotify mark is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FanOn {
    /// A file or directory: its file system's device (kernel encoding) and handle.
    Inode { sdev: u64, ty: i32, handle: Vec<u8> },
    /// A mount, by its id.
    Mount { id: u64 },
    /// A whole file system, by its device (kernel encoding).
    Filesystem { sdev: u64 },
}

/// The `name:value` words of an fdinfo line (an inotify watch, a fanotify mark).
struct Words<'a>(&'a str);

impl<'a> Words<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.0.split_whitespace().find_map(|w| w.strip_prefix(name))
    }

    /// A value the kernel prints in hex.
    fn hex(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(|v| u64::from_str_radix(v, 16).ok())
    }

    /// A mark's file handle: its type and bytes (both printed in hex, for inotify and
    /// fanotify alike: fs/notify/fdinfo.c).
    fn handle(&self) -> Option<(i32, Vec<u8>)> {
        let h = self.get("f_handle:")?;
        let bytes = (0..h.len() / 2).map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()).collect::<Option<Vec<u8>>>()?;
        Some((self.hex("fhandle-type:")? as i32, bytes))
    }
}

/// `(a, b)` as in `it_value: (2, 995010449)`.
fn pair(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.trim().strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

impl FdInfo {
    pub(crate) fn parse(text: &str) -> FdInfo {
        let mut f = FdInfo::default();
        for line in text.lines() {
            let Some((key, v)) = line.split_once(':') else { continue };
            let v = v.trim();
            match key {
                "flags" => f.flags = i32::from_str_radix(v, 8).unwrap_or(0),
                "pos" => f.pos = v.parse().unwrap_or(0),
                "ino" => f.ino = v.parse().unwrap_or(0),
                "eventfd-count" => f.eventfd_count = u64::from_str_radix(v, 16).ok(),
                "eventfd-semaphore" => f.eventfd_semaphore = v == "1",
                "clockid" => f.clockid = v.parse().ok(),
                "ticks" => f.ticks = v.parse().unwrap_or(0),
                "it_value" => f.it_value = pair(v).unwrap_or_default(),
                "it_interval" => f.it_interval = pair(v).unwrap_or_default(),
                "sigmask" => f.sigmask = u64::from_str_radix(v, 16).ok(),
                "Pid" => f.pid = v.parse().ok(),
                "tfd" => {
                    // tfd:        3 events: 80000019 data:           abcdef  pos:0 ino:40f sdev:10
                    let mut w = line["tfd:".len()..].split_whitespace();
                    let fd = w.next().and_then(|x| x.parse().ok());
                    let mut events = None;
                    let mut data = None;
                    let mut ino = None;
                    while let Some(k) = w.next() {
                        match k {
                            "events:" => events = w.next().and_then(|x| u32::from_str_radix(x, 16).ok()),
                            "data:" => data = w.next().and_then(|x| u64::from_str_radix(x, 16).ok()),
                            _ => {
                                if let Some(x) = k.strip_prefix("ino:") {
                                    ino = u64::from_str_radix(x, 16).ok();
                                }
                            }
                        }
                    }
                    if let (Some(fd), Some(events), Some(data), Some(ino)) = (fd, events, data, ino) {
                        f.tfds.push((fd, events, data, ino));
                    }
                }
                "inotify wd" => {
                    // inotify wd:3 ino:3c4a7 sdev:fe00000 mask:fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4...
                    let w = Words(line);
                    if let (Some(wd), Some(mask), Some(sdev), Some((ty, handle))) = (w.hex("wd:"), w.hex("mask:"), w.hex("sdev:"), w.handle()) {
                        f.inotify.push((wd as i32, mask as u32, sdev, ty, handle));
                    }
                }
                "fanotify flags" | "fanotify ino" | "fanotify mnt_id" | "fanotify sdev" => {
                    // fanotify flags:10 event-flags:0
                    // fanotify ino:3c4a7 sdev:fe00000 mflags:0 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4...
                    // fanotify mnt_id:1f mflags:0 mask:2 ignored_mask:0
                    // fanotify sdev:fe00000 mflags:0 mask:2 ignored_mask:0
                    let w = Words(line);
                    if key == "fanotify flags" {
                        if let (Some(flags), Some(ev)) = (w.hex("flags:"), w.hex("event-flags:")) {
                            f.fanotify = Some((flags as u32, ev as u32));
                        }
                        continue;
                    }
                    let on = match key {
                        "fanotify ino" => match (w.hex("sdev:"), w.handle()) {
                            (Some(sdev), Some((ty, handle))) => Some(FanOn::Inode { sdev, ty, handle }),
                            _ => None,
                        },
                        "fanotify mnt_id" => w.hex("mnt_id:").map(|id| FanOn::Mount { id }),
                        _ => w.hex("sdev:").map(|sdev| FanOn::Filesystem { sdev }),
                    };
                    if let (Some(on), Some(mflags), Some(mask), Some(ignored)) = (on, w.hex("mflags:"), w.hex("mask:"), w.hex("ignored_mask:")) {
                        f.fanotify_marks.push(FanMark { on, mflags: mflags as u32, mask, ignored });
                    }
                }
                "lock" => {
                    // A waiter ("1: -> POSIX ...") holds nothing.
                    let w: Vec<&str> = v.split_whitespace().collect();
                    if w.len() >= 8 && w[1] != "->" {
                        f.locks.push(LockLine {
                            class: w[1].to_string(),
                            mode: w[2].to_string(),
                            write: w[3] == "WRITE",
                            start: w[6].parse().unwrap_or(0),
                            end: if w[7] == "EOF" { None } else { w[7].parse().ok() },
                        });
                    }
                }
                _ => {}
            }
        }
        f
    }
}

pub(crate) fn read_fdinfo(pid: i32, fd: i32) -> Result<FdInfo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .map_err(|e| CheckpointError::Proc { pid, what: format!("fdinfo of fd {fd}: {e}") })?;
    Ok(FdInfo::parse(&text))
}

/// The anonymous-inode descriptors a checkpoint can carry.
pub(crate) const ANON_KINDS: [&str; 5] = ["[eventfd]", "[timerfd]", "[signalfd]", "[eventpoll]", "inotify"];

/// Why a lock in fdinfo cannot be carried, if it cannot.
pub(crate) fn lock_refusal(l: &LockLine) -> Option<String> {
    match l.class.as_str() {
        "FLOCK" | "POSIX" | "OFDLCK" => None,
        "LEASE" if l.mode == "ACTIVE" => None,
        "LEASE" => Some("a file whose lease (F_SETLEASE) is being broken (another process waits for it)".into()),
        "DELEG" => Some("a file with an NFS delegation on it".into()),
        other => Some(format!("a file with a {other} lock on it")),
    }
}

const NS: u64 = 1_000_000_000;

/// An itimerval (`per_sec` 10^6: microseconds) or itimerspec (10^9) of an
/// interval and a time left, in those units.
fn timer_pair(interval: u64, value: u64, per_sec: u64) -> TimerPair {
    TimerPair {
        interval_sec: (interval / per_sec) as i64,
        interval_frac: (interval % per_sec) as i64,
        value_sec: (value / per_sec) as i64,
        value_frac: (value % per_sec) as i64,
    }
}

/// The image's description of an anonymous-inode descriptor `fd` of kind
/// `anon` ("[eventfd]", ...), from its fdinfo.
pub(crate) fn anon_kind(anon: &str, fd: i32, info: &FdInfo) -> std::result::Result<FileKind, CantMove> {
    let flags = info.flags & (libc::O_NONBLOCK | libc::O_CLOEXEC);
    let bad = |what: &str| CantMove::UnsupportedFd { fd, what: what.to_string() };
    match anon {
        "[eventfd]" => Ok(FileKind::EventFd {
            count: info.eventfd_count.ok_or_else(|| bad("an eventfd whose count /proc does not show"))?,
            flags: flags | if info.eventfd_semaphore { libc::EFD_SEMAPHORE } else { 0 },
        }),
        "[timerfd]" => Ok(FileKind::TimerFd {
            clockid: info.clockid.ok_or_else(|| bad("a timerfd whose clock /proc does not show"))?,
            flags,
            interval_ns: info.it_interval.0 * NS + info.it_interval.1,
            value_ns: info.it_value.0 * NS + info.it_value.1,
            ticks: info.ticks,
        }),
        "[signalfd]" => Ok(FileKind::SignalFd { mask: info.sigmask.ok_or_else(|| bad("a signalfd whose mask /proc does not show"))?, flags }),
        "inotify" => {
            let mut watches = Vec::new();
            for (wd, mask, sdev, ty, handle) in &info.inotify {
                let path = herd_kernel::task::path_of_handle(*sdev, *ty, handle)
                    .map_err(|e| bad(&format!("an inotify watch {wd} whose file cannot be found ({e})")))?;
                let path = path.to_string_lossy().into_owned();
                if path.ends_with(" (deleted)") {
                    return Err(bad(&format!("an inotify watch {wd} on a deleted file")));
                }
                watches.push(herd_image::InotifyWatch { wd: *wd, path, mask: *mask });
            }
            watches.sort_by_key(|w| w.wd);
            Ok(FileKind::Inotify { flags, watches })
        }
        "[pidfd]" => match info.pid {
            Some(pid) if pid > 0 => Ok(FileKind::PidFd { pid, flags }),
            _ => Err(bad("a pidfd of a process that has been reaped")),
        },
        "[eventpoll]" => Ok(FileKind::Epoll {
            flags,
            targets: info.tfds.iter().map(|&(fd, events, data, _)| EpollTarget { fd, events, data }).collect(),
        }),
        other => Err(bad(&format!("anon_inode:{other}"))),
    }
}

/// Why the epoll descriptor `fd` (fdinfo `info`) cannot be carried: it must
/// watch only descriptors still open at the number it registered, holding
/// the file it registered (same inode), and no other epoll.
pub(crate) fn epoll_refusals(pid: i32, fd: i32, info: &FdInfo) -> Vec<CantMove> {
    let mut why = Vec::new();
    for &(tfd, _, _, ino) in &info.tfds {
        let path = format!("/proc/{pid}/fd/{tfd}");
        let what = match (std::fs::read_link(&path), std::fs::metadata(&path)) {
            (Ok(link), _) if link.as_os_str() == "anon_inode:[eventpoll]" => Some(format!("an epoll watching another epoll (fd {tfd})")),
            (Ok(_), Ok(m)) if std::os::unix::fs::MetadataExt::ino(&m) == ino => None,
            (Ok(_), _) => Some(format!("an epoll watching fd {tfd}, which now holds another file")),
            (Err(_), _) => Some(format!("an epoll watching fd {tfd}, which was closed (the file is still open at another fd)")),
        };
        if let Some(what) = what {
            why.push(CantMove::UnsupportedFd { fd, what });
        }
    }
    why
}

/// The locks fdinfo shows for fd `fd` as the image keeps them. A lock shared
/// by several descriptors of one open file is kept once (`seen`: inode, kind,
/// range).
pub(crate) fn locks_of(fd: i32, info: &FdInfo, seen: &mut Vec<(u64, LockKind, u64, u64)>) -> Vec<FileLock> {
    let mut out = Vec::new();
    for l in &info.locks {
        let kind = match l.class.as_str() {
            "FLOCK" => LockKind::Flock,
            "POSIX" => LockKind::Posix,
            "OFDLCK" => LockKind::Ofd,
            // Its signal (F_GETSIG) is asked for by `query_state`.
            "LEASE" => LockKind::Lease,
            _ => continue,
        };
        if kind == LockKind::Lease {
            out.push(FileLock { fd, kind, write: l.write, start: 0, len: 0 });
            continue;
        }
        let len = l.end.map_or(0, |e| e.saturating_sub(l.start).saturating_add(1));
        // A POSIX lock is the process's: shown at every fd of the file, kept once.
        // flock and OFD locks belong to one open file each (a dup shows it again,
        // and taking it again there is harmless).
        let key = (info.ino, kind, l.start, len);
        if kind == LockKind::Posix && seen.contains(&key) {
            continue;
        }
        seen.push(key);
        out.push(FileLock { fd, kind, write: l.write, start: l.start, len });
    }
    out
}

/// Asks the held process (through `inj`, stopped at its main thread) for the
/// state /proc does not show. `scratch` is a page of its memory to use.
/// `locks`: the leases among them are given the signal their break sends (F_GETSIG).
pub(crate) fn query_state(inj: &mut Injector<'_>, scratch: u64, pid: i32, locks: &mut [FileLock]) -> Result<ProcessState> {
    for l in locks.iter_mut().filter(|l| l.kind == LockKind::Lease) {
        l.start = inj.call_ok("fcntl(F_GETSIG)", abi::SYS_FCNTL, &[l.fd as u64, abi::F_GETSIG])? as u64;
    }
    let mut itimers = Vec::new();
    for which in 0..3 {
        inj.call_ok("getitimer", abi::SYS_GETITIMER, &[which as u64, scratch])?;
        let mut b = [0u8; 32];
        mem::read_ranges(pid, &[(scratch, 32)], &mut b)?;
        let t: TimerPair = abi::from_bytes(&b);
        if t.value_sec != 0 || t.value_frac != 0 {
            itimers.push(Itimer {
                which,
                interval_us: t.interval_sec as u64 * 1_000_000 + t.interval_frac as u64,
                value_us: t.value_sec as u64 * 1_000_000 + t.value_frac as u64,
            });
        }
    }
    inj.call_ok("prctl(PR_GET_CHILD_SUBREAPER)", abi::SYS_PRCTL, &[abi::PR_GET_CHILD_SUBREAPER, scratch])?;
    let mut b = [0u8; 4];
    mem::read_ranges(pid, &[(scratch, 4)], &mut b)?;
    let child_subreaper = i32::from_ne_bytes(b) != 0;
    let thp_disable = inj.call_ok("prctl(PR_GET_THP_DISABLE)", abi::SYS_PRCTL, &[abi::PR_GET_THP_DISABLE])? != 0;
    let dumpable = inj.call_ok("prctl(PR_GET_DUMPABLE)", abi::SYS_PRCTL, &[abi::PR_GET_DUMPABLE])? as u32;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let no_new_privs = status.lines().any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1'));
    let oom_score_adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .map_err(|e| CheckpointError::Proc { pid, what: format!("oom_score_adj: {e}") })?
        .trim()
        .parse()
        .unwrap_or(0);
    let mut posix_timers = parse_timers(&std::fs::read_to_string(format!("/proc/{pid}/timers")).unwrap_or_default());
    for t in &mut posix_timers {
        inj.call_ok("timer_gettime", abi::SYS_TIMER_GETTIME, &[t.id as u64, scratch])?;
        let mut b = [0u8; 32];
        mem::read_ranges(pid, &[(scratch, 32)], &mut b)?;
        let v: TimerPair = abi::from_bytes(&b);
        t.interval_ns = v.interval_sec as u64 * NS + v.interval_frac as u64;
        t.value_ns = v.value_sec as u64 * NS + v.value_frac as u64;
    }
    let cap = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()).unwrap_or(0)
    };
    let caps = Caps { inheritable: cap("CapInh:"), permitted: cap("CapPrm:"), effective: cap("CapEff:"), bounding: cap("CapBnd:"), ambient: cap("CapAmb:") };
    // EINVAL before Linux 6.3: nothing known registered.
    let membarrier = inj.call(abi::SYS_MEMBARRIER, &[abi::MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0])?.max(0) as u32;
    let loginuid = std::fs::read_to_string(format!("/proc/{pid}/loginuid")).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(u32::MAX);
    Ok(ProcessState {
        itimers,
        oom_score_adj,
        child_subreaper,
        thp_disable,
        no_new_privs,
        dumpable,
        locks: Vec::new(),
        posix_timers,
        regions: Vec::new(),
        caps,
        membarrier,
        loginuid,
    })
}

/// The highest capability number this kernel knows.
fn last_cap() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(40)
}

/// Every capability this kernel knows, as a set.
pub(crate) fn all_caps() -> u64 {
    u64::MAX >> (63 - last_cap().min(63))
}

/// Before the credentials change (while it may): the capabilities dropped from
/// the bounding set go, for the thread `inj` drives.
pub(crate) fn drop_bounding(inj: &mut Injector<'_>, c: &Caps) -> Result<()> {
    for cap in 0..=last_cap() {
        if c.bounding & (1 << cap) == 0 {
            inj.call_ok("prctl(PR_CAPBSET_DROP)", abi::SYS_PRCTL, &[abi::PR_CAPBSET_DROP, cap, 0, 0, 0])?;
        }
    }
    Ok(())
}

/// After the credentials: the permitted, effective and inheritable sets and
/// the ambient capabilities of a root process (a process of another user has
/// none left after setresuid, as it had none).
pub(crate) fn set_caps(inj: &mut Injector<'_>, scratch: &Scratch, c: &Caps) -> Result<()> {
    // struct __user_cap_header_struct, then two __user_cap_data_struct
    // (effective, permitted, inheritable): the low and the high 32 bits.
    let mut buf = [0u8; 8 + 24];
    buf[0..4].copy_from_slice(&abi::CAPABILITY_VERSION_3.to_ne_bytes());
    for (half, shift) in [(0usize, 0u32), (1, 32)] {
        let at = 8 + half * 12;
        buf[at..at + 4].copy_from_slice(&((c.effective >> shift) as u32).to_ne_bytes());
        buf[at + 4..at + 8].copy_from_slice(&((c.permitted >> shift) as u32).to_ne_bytes());
        buf[at + 8..at + 12].copy_from_slice(&((c.inheritable >> shift) as u32).to_ne_bytes());
    }
    let h = scratch.put(0, &buf[0..8])?;
    let d = scratch.put(8, &buf[8..])?;
    inj.call_ok("capset", abi::SYS_CAPSET, &[h, d])?;
    // Ambient capabilities are permitted and inheritable ones: raised after.
    for cap in 0..=last_cap() {
        if c.ambient & (1 << cap) != 0 {
            inj.call_ok("prctl(PR_CAP_AMBIENT_RAISE)", abi::SYS_PRCTL, &[abi::PR_CAP_AMBIENT, abi::PR_CAP_AMBIENT_RAISE, cap, 0, 0])?;
        }
    }
    Ok(())
}


/// The smaps VmFlags that `madvise` sets, and the advice that sets each.
const ADVICE: [(&str, i32); 8] = [
    ("dd", libc::MADV_DONTDUMP),
    ("wf", libc::MADV_WIPEONFORK),
    ("dc", libc::MADV_DONTFORK),
    ("hg", libc::MADV_HUGEPAGE),
    ("nh", libc::MADV_NOHUGEPAGE),
    ("mg", libc::MADV_MERGEABLE),
    ("rr", libc::MADV_RANDOM),
    ("sr", libc::MADV_SEQUENTIAL),
];

/// The advice, lock and guard pages of each region of /proc/PID/smaps that
/// has any, guard runs not filled in yet.
pub(crate) fn parse_smaps_flags(text: &str) -> Vec<RegionState> {
    let mut out = Vec::new();
    let mut range = None;
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let Some((a, b)) = range.take() else { continue };
            let words: Vec<&str> = flags.split_whitespace().collect();
            let advice: Vec<i32> = ADVICE.iter().filter(|(w, _)| words.contains(w)).map(|(_, a)| *a).collect();
            let locked = words.contains(&"lo");
            if !advice.is_empty() || locked {
                out.push(RegionState { start: a, end: b, advice, locked, guards: Vec::new() });
            }
        } else if let Some((r, _)) = line.split_once(' ') {
            if let Some((a, b)) = r.split_once('-') {
                if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                    range = Some((a, b));
                }
            }
        }
    }
    out
}

/// Gives every region its advice, lock and guard pages again (after its
/// pages are written: a guard page discards what is under it).
pub(crate) fn set_regions(inj: &mut Injector<'_>, regions: &[RegionState]) -> Result<()> {
    for r in regions {
        let len = r.end - r.start;
        // Guard pages first: the kernel puts none in a locked region.
        for &(at, l) in &r.guards {
            inj.call_ok("madvise(MADV_GUARD_INSTALL)", abi::SYS_MADVISE, &[at, l, abi::MADV_GUARD_INSTALL])?;
        }
        for a in &r.advice {
            inj.call_ok("madvise", abi::SYS_MADVISE, &[r.start, len, *a as u64])?;
        }
        if r.locked {
            inj.call_ok("mlock", abi::SYS_MLOCK, &[r.start, len])?;
        }
    }
    Ok(())
}

/// The timers of /proc/PID/timers (times not filled in):
/// `ID: 42` / `signal: 10/0000000000001234` / `notify: signal/tid.77` / `ClockID: 1`.
pub(crate) fn parse_timers(text: &str) -> Vec<PosixTimer> {
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        let Some((key, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        if key == "ID" {
            let Ok(id) = v.parse() else { continue };
            out.push(PosixTimer { id, clockid: 0, notify: 0, signo: 0, value: 0, tid: 0, interval_ns: 0, value_ns: 0 });
            continue;
        }
        let Some(t) = out.last_mut() else { continue };
        match key {
            "signal" => {
                if let Some((signo, value)) = v.split_once('/') {
                    t.signo = signo.parse().unwrap_or(0);
                    t.value = u64::from_str_radix(value, 16).unwrap_or(0);
                }
            }
            "notify" => {
                if let Some((how, whom)) = v.split_once('/') {
                    t.notify = match how {
                        "none" => libc::SIGEV_NONE,
                        "thread" => libc::SIGEV_THREAD,
                        _ => libc::SIGEV_SIGNAL,
                    };
                    if let Some(tid) = whom.strip_prefix("tid.") {
                        t.notify |= libc::SIGEV_THREAD_ID;
                        t.tid = tid.parse().unwrap_or(0);
                    }
                }
            }
            "ClockID" => t.clockid = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    out
}

/// Makes the image's POSIX timers again with their ids (the threads they
/// signal exist by now), armed with the time they had left. Without the
/// kernel's help to choose ids (Linux 6.17+) a timer whose id comes out
/// different fails the restore.
pub(crate) fn make_timers(inj: &mut Injector<'_>, scratch: &Scratch, timers: &[PosixTimer]) -> Result<()> {
    if timers.is_empty() {
        return Ok(());
    }
    let choose = inj.call(abi::SYS_PRCTL, &[abi::PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0])? == 0;
    let result = (|| {
        for t in timers {
            let mut sev = [0u8; 64];
            sev[0..8].copy_from_slice(&t.value.to_ne_bytes());
            sev[8..12].copy_from_slice(&t.signo.to_ne_bytes());
            sev[12..16].copy_from_slice(&t.notify.to_ne_bytes());
            sev[16..20].copy_from_slice(&t.tid.to_ne_bytes());
            let sev_at = scratch.put(0, &sev)?;
            let id_at = scratch.put(64, &t.id.to_ne_bytes())?;
            inj.call_ok("timer_create", abi::SYS_TIMER_CREATE, &[t.clockid as u64, sev_at, id_at])?;
            let mut got = [0u8; 4];
            mem::read_ranges(scratch.pid(), &[(id_at, 4)], &mut got)?;
            let got = i32::from_ne_bytes(got);
            if got != t.id {
                return Err(CheckpointError::Incompatible(format!(
                    "POSIX timer {} came back as timer {got}: restoring timer ids needs Linux 6.17 or later",
                    t.id
                )));
            }
            if t.value_ns > 0 {
                let v = timer_pair(t.interval_ns, t.value_ns, NS);
                let at = scratch.put(128, abi::as_bytes(&v))?;
                inj.call_ok("timer_settime", abi::SYS_TIMER_SETTIME, &[t.id as u64, 0, at, 0])?;
            }
        }
        Ok(())
    })();
    if choose {
        inj.call_ok("prctl(PR_TIMER_CREATE_RESTORE_IDS)", abi::SYS_PRCTL, &[abi::PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0])?;
    }
    result
}

/// Moves descriptor `got` (just made) to number `want` with the image's
/// close-on-exec flag.
fn place(inj: &mut Injector<'_>, got: i64, want: i32, cloexec: bool) -> Result<()> {
    if got != i64::from(want) {
        let flags = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
        inj.call_ok("dup3 (placing an fd)", abi::SYS_DUP3, &[got as u64, want as u64, flags])?;
        inj.call_ok("close", abi::SYS_CLOSE, &[got as u64])?;
    }
    Ok(())
}

/// Makes the image's event, timer, signal and epoll descriptors in the
/// process, each at its number (epolls last: they watch the others).
pub(crate) fn make_fds(inj: &mut Injector<'_>, scratch: &Scratch, files: &[OpenFile], same_pids: bool, warnings: &mut Vec<String>) -> Result<()> {
    let order = |k: &FileKind| matches!(k, FileKind::Epoll { .. });
    for pass in [false, true] {
        for f in files.iter().filter(|f| order(&f.kind) == pass) {
            let cloexec = if f.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
            let got = match &f.kind {
                FileKind::EventFd { count, flags } => {
                    let fl = (*flags & (libc::EFD_SEMAPHORE | libc::O_NONBLOCK)) as u64;
                    let fd = inj.call_ok("eventfd2", abi::SYS_EVENTFD2, &[0, fl | cloexec])?;
                    // The count is written (not given to eventfd2, which takes an
                    // unsigned int) so that any 64-bit count comes back.
                    if *count > 0 {
                        let at = scratch.put(0, &count.to_ne_bytes())?;
                        inj.call_ok("write (eventfd count)", abi::SYS_WRITE, &[fd as u64, at, 8])?;
                    }
                    fd
                }
                FileKind::TimerFd { clockid, flags, interval_ns, value_ns, ticks } => {
                    let fl = (*flags & libc::O_NONBLOCK) as u64;
                    let fd = inj.call_ok("timerfd_create", abi::SYS_TIMERFD_CREATE, &[*clockid as u64, fl | cloexec])?;
                    if *value_ns > 0 {
                        let t = timer_pair(*interval_ns, *value_ns, NS);
                        let at = scratch.put(0, abi::as_bytes(&t))?;
                        inj.call_ok("timerfd_settime", abi::SYS_TIMERFD_SETTIME, &[fd as u64, 0, at, 0])?;
                    }
                    if *ticks > 0 {
                        let at = scratch.put(0, &ticks.to_ne_bytes())?;
                        let r = inj.call(abi::SYS_IOCTL, &[fd as u64, abi::TFD_IOC_SET_TICKS, at])?;
                        if r < 0 {
                            warnings.push(format!("fd {}: {ticks} unread timer expirations are lost (TFD_IOC_SET_TICKS: {})", f.fd, std::io::Error::from_raw_os_error(-r as i32)));
                        }
                    }
                    fd
                }
                FileKind::SignalFd { mask, flags } => {
                    let fl = (*flags & libc::O_NONBLOCK) as u64;
                    let at = scratch.put(0, &mask.to_ne_bytes())?;
                    inj.call_ok("signalfd4", abi::SYS_SIGNALFD4, &[u64::MAX, at, 8, fl | cloexec])?
                }
                FileKind::Inotify { flags, watches } => {
                    let fl = (*flags & libc::O_NONBLOCK) as u64;
                    let fd = inj.call_ok("inotify_init1", abi::SYS_INOTIFY_INIT1, &[fl | cloexec])?;
                    // Watch descriptors are handed out one after the other: one given
                    // up is never handed out again, so a gap is made by a watch taken
                    // and given up.
                    let mut next = 1;
                    for w in watches {
                        let path = scratch.put_str(&w.path)?;
                        while next < w.wd {
                            // A watch of its own (IN_MASK_CREATE: never one already there),
                            // on the first of a few directories not watched yet.
                            let mut made = None;
                            for gap in [&b"/\0"[..], b"/proc\0", b"/dev\0", b"/sys\0"] {
                                let at = scratch.put(4200, gap)?;
                                let d = inj.call(abi::SYS_INOTIFY_ADD_WATCH, &[fd as u64, at, (libc::IN_ATTRIB | libc::IN_MASK_CREATE) as u64])?;
                                if d >= 0 {
                                    made = Some(d);
                                    break;
                                }
                            }
                            let d = made.ok_or_else(|| CheckpointError::Incompatible(format!("inotify watch {} cannot be given its number back", w.wd)))?;
                            inj.call_ok("inotify_rm_watch", abi::SYS_INOTIFY_RM_WATCH, &[fd as u64, d as u64])?;
                            // The event that says so (IN_IGNORED), queued at once: read, so the process never sees it.
                            let buf = scratch.put(4300, &[0u8; 256])?;
                            inj.call_ok("read(inotify)", abi::SYS_READ, &[fd as u64, buf, 256])?;
                            next = d as i32 + 1;
                        }
                        let got = inj.call_ok("inotify_add_watch", abi::SYS_INOTIFY_ADD_WATCH, &[fd as u64, path, u64::from(w.mask)])?;
                        if got != i64::from(w.wd) {
                            return Err(CheckpointError::Incompatible(format!("inotify watch {} on {} came back as watch {got}", w.wd, w.path)));
                        }
                        next = w.wd + 1;
                    }
                    fd
                }
                FileKind::PidFd { pid, flags } => {
                    if !same_pids {
                        return Err(CheckpointError::Incompatible(format!(
                            "fd {} is a pidfd of process {pid}, which needs the pids of the image (restart without --any-pid)",
                            f.fd
                        )));
                    }
                    let fl = (*flags & libc::O_NONBLOCK) as u64;
                    let fd = inj.call_ok("pidfd_open", abi::SYS_PIDFD_OPEN, &[*pid as u64, fl])?;
                    // pidfd_open makes it close-on-exec; `place` gives it the image's flag.
                    if i64::from(f.fd) == fd && !f.cloexec {
                        inj.call_ok("fcntl(F_SETFD)", abi::SYS_FCNTL, &[fd as u64, libc::F_SETFD as u64, 0])?;
                    }
                    fd
                }
                FileKind::Epoll { targets, .. } => {
                    let fd = inj.call_ok("epoll_create1", abi::SYS_EPOLL_CREATE1, &[cloexec])?;
                    epoll_add(inj, scratch, fd, targets)?;
                    fd
                }
                _ => continue,
            };
            place(inj, got, f.fd, f.cloexec)?;
        }
    }
    Ok(())
}

/// Gives the process's epoll at `epfd` the interest list `targets` (fds of the process).
pub(crate) fn epoll_add(inj: &mut Injector<'_>, scratch: &Scratch, epfd: i64, targets: &[EpollTarget]) -> Result<()> {
    for t in targets {
        let ev = EpollEvent { events: t.events, data: t.data };
        let at = scratch.put(0, abi::as_bytes(&ev))?;
        inj.call_ok("epoll_ctl(EPOLL_CTL_ADD)", abi::SYS_EPOLL_CTL, &[epfd as u64, abi::EPOLL_CTL_ADD, t.fd as u64, at])?;
    }
    Ok(())
}

/// Takes the image's file locks again, in the process (POSIX locks belong to
/// it; flock and OFD locks to its open files). A lock another process has
/// taken meanwhile makes the restore fail: the program would otherwise run
/// without a lock it believes it holds.
pub(crate) fn take_locks(inj: &mut Injector<'_>, scratch: &Scratch, locks: &[FileLock]) -> Result<()> {
    for l in locks {
        let r = match l.kind {
            LockKind::Flock => {
                let op = if l.write { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
                inj.call(abi::SYS_FLOCK, &[l.fd as u64, op as u64])?
            }
            LockKind::Lease => {
                if l.start != 0 {
                    inj.call_ok("fcntl(F_SETSIG)", abi::SYS_FCNTL, &[l.fd as u64, abi::F_SETSIG, l.start])?;
                }
                let kind = if l.write { libc::F_WRLCK } else { libc::F_RDLCK };
                inj.call(abi::SYS_FCNTL, &[l.fd as u64, libc::F_SETLEASE as u64, kind as u64])?
            }
            LockKind::Posix | LockKind::Ofd => {
                let fl = Flock {
                    l_type: if l.write { libc::F_WRLCK } else { libc::F_RDLCK } as i16,
                    l_whence: libc::SEEK_SET as i16,
                    l_start: l.start as i64,
                    l_len: l.len as i64,
                    ..Default::default()
                };
                let at = scratch.put(0, abi::as_bytes(&fl))?;
                let cmd = if l.kind == LockKind::Posix { abi::F_SETLK } else { abi::F_OFD_SETLK };
                inj.call(abi::SYS_FCNTL, &[l.fd as u64, cmd, at])?
            }
        };
        if r < 0 && l.kind == LockKind::Lease {
            return Err(CheckpointError::Incompatible(format!(
                "the {} lease on fd {} cannot be taken again (is the file open elsewhere?): {}",
                if l.write { "write" } else { "read" },
                l.fd,
                std::io::Error::from_raw_os_error(-r as i32)
            )));
        }
        if r < 0 {
            let range = if l.len == 0 { format!("{}-EOF", l.start) } else { format!("{}-{}", l.start, l.start.saturating_add(l.len - 1)) };
            let kind = match l.kind {
                LockKind::Flock => "flock",
                LockKind::Posix => "POSIX",
                LockKind::Ofd => "OFD",
                LockKind::Lease => unreachable!("said above"),
            };
            return Err(CheckpointError::Incompatible(format!(
                "the {kind} lock on fd {} (bytes {range}) cannot be taken again (does another process hold it?): {}",
                l.fd,
                std::io::Error::from_raw_os_error(-r as i32)
            )));
        }
    }
    Ok(())
}

/// Sets interval timers, child-subreaper and THP-disable, and oom_score_adj.
/// (dumpable and no_new_privs are set by [`finish_state`], after the
/// credentials, which reset dumpable.)
pub(crate) fn set_state(inj: &mut Injector<'_>, scratch: &Scratch, pid: i32, s: &ProcessState, warnings: &mut Vec<String>) -> Result<()> {
    for t in &s.itimers {
        let v = timer_pair(t.interval_us, t.value_us, 1_000_000);
        let at = scratch.put(0, abi::as_bytes(&v))?;
        inj.call_ok("setitimer", abi::SYS_SETITIMER, &[t.which as u64, at, 0])?;
    }
    if s.child_subreaper {
        inj.call_ok("prctl(PR_SET_CHILD_SUBREAPER)", abi::SYS_PRCTL, &[abi::PR_SET_CHILD_SUBREAPER, 1])?;
    }
    if s.thp_disable {
        inj.call_ok("prctl(PR_SET_THP_DISABLE)", abi::SYS_PRCTL, &[abi::PR_SET_THP_DISABLE, 1, 0, 0, 0])?;
    }
    let path = format!("/proc/{pid}/oom_score_adj");
    let now: Option<i32> = std::fs::read_to_string(&path).ok().and_then(|v| v.trim().parse().ok());
    if now != Some(s.oom_score_adj) {
        if let Err(e) = std::fs::write(&path, s.oom_score_adj.to_string()) {
            // Lowering it needs CAP_SYS_RESOURCE.
            warnings.push(format!("oom_score_adj {} is not restored: {e}", s.oom_score_adj));
        }
    }
    Ok(())
}

/// The attributes set last: membarrier registrations, loginuid, dumpable (the
/// credentials reset it) and no_new_privs (for good).
pub(crate) fn finish_state(inj: &mut Injector<'_>, s: &ProcessState) -> Result<()> {
    for bit in 0..32 {
        let cmd = 1u64 << bit;
        if u64::from(s.membarrier) & cmd != 0 {
            inj.call_ok("membarrier (register)", abi::SYS_MEMBARRIER, &[cmd, 0, 0])?;
        }
    }
    inj.call_ok("prctl(PR_SET_DUMPABLE)", abi::SYS_PRCTL, &[abi::PR_SET_DUMPABLE, u64::from(s.dumpable.min(1))])?;
    if s.no_new_privs {
        inj.call_ok("prctl(PR_SET_NO_NEW_PRIVS)", abi::SYS_PRCTL, &[abi::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0])?;
    }
    Ok(())
}

/// The process's loginuid, written by itself (only a process may set its own),
/// before its credentials change (it needs CAP_AUDIT_CONTROL).
pub(crate) fn set_loginuid(inj: &mut Injector<'_>, scratch: &Scratch, s: &ProcessState, warnings: &mut Vec<String>) -> Result<()> {
    let pid = scratch.pid();
    let now: Option<u32> = std::fs::read_to_string(format!("/proc/{pid}/loginuid")).ok().and_then(|v| v.trim().parse().ok());
    if s.loginuid != u32::MAX && now != Some(s.loginuid) {
        // Only a process may set its own loginuid: it writes /proc/self/loginuid.
        let path = scratch.put(0, b"/proc/self/loginuid\0")?;
        let value = s.loginuid.to_string();
        let v = scratch.put(64, value.as_bytes())?;
        let fd = inj.call(abi::SYS_OPENAT, &[abi::AT_FDCWD as u64, path, libc::O_WRONLY as u64, 0])?;
        let r = if fd >= 0 { inj.call(abi::SYS_WRITE, &[fd as u64, v, value.len() as u64])? } else { fd };
        if fd >= 0 {
            inj.call_ok("close", abi::SYS_CLOSE, &[fd as u64])?;
        }
        if r < 0 {
            warnings.push(format!("loginuid {} is not restored: {}", s.loginuid, std::io::Error::from_raw_os_error(-r as i32)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOLL: &str = "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1039\ntfd:        3 events: 80000019 data:           abcdef  pos:0 ino:40f sdev:10\ntfd:       12 events:       19 data:                c  pos:0 ino:1a sdev:fe00\n";

    #[test]
    fn fdinfo_of_each_kind_parses() {
        let ev = FdInfo::parse("pos:\t0\nflags:\t04002\nmnt_id:\t17\nino:\t1039\neventfd-count:                5\neventfd-id: 1\neventfd-semaphore: 1\n");
        assert_eq!((ev.flags, ev.eventfd_count, ev.eventfd_semaphore, ev.ino), (0o4002, Some(5), true, 1039));
        let k = anon_kind("[eventfd]", 3, &ev).unwrap();
        assert_eq!(k, FileKind::EventFd { count: 5, flags: libc::O_NONBLOCK | libc::EFD_SEMAPHORE });

        let t = FdInfo::parse("pos:\t0\nflags:\t02000002\nclockid: 1\nticks: 3\nsettime flags: 00\nit_value: (2, 995010449)\nit_interval: (1, 500)\n");
        let k = anon_kind("[timerfd]", 4, &t).unwrap();
        assert_eq!(k, FileKind::TimerFd { clockid: 1, flags: libc::O_CLOEXEC, interval_ns: NS + 500, value_ns: 2 * NS + 995_010_449, ticks: 3 });

        let s = FdInfo::parse("pos:\t0\nflags:\t04002\nsigmask:\t0000000000000200\n");
        assert_eq!(anon_kind("[signalfd]", 5, &s).unwrap(), FileKind::SignalFd { mask: 0x200, flags: libc::O_NONBLOCK });

        let e = FdInfo::parse(EPOLL);
        assert_eq!(e.tfds, vec![(3, 0x8000_0019, 0xabcdef, 0x40f), (12, 0x19, 0xc, 0x1a)]);
        match anon_kind("[eventpoll]", 6, &e).unwrap() {
            FileKind::Epoll { targets, .. } => assert_eq!(targets[1], EpollTarget { fd: 12, events: 0x19, data: 0xc }),
            other => panic!("{other:?}"),
        }
        let fan = FdInfo::parse("pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\nfanotify flags:10 event-flags:8002\nfanotify ino:3c4a7 sdev:fe00000 mflags:40 mask:a ignored_mask:20 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000\nfanotify mnt_id:1f mflags:0 mask:8 ignored_mask:0\nfanotify sdev:fe00001 mflags:0 mask:2 ignored_mask:0\n");
        assert_eq!(fan.fanotify, Some((0x10, 0x8002)));
        assert_eq!(fan.fanotify_marks.len(), 3);
        assert_eq!(fan.fanotify_marks[0], FanMark { on: FanOn::Inode { sdev: 0xfe00000, ty: 1, handle: vec![0xa7, 0xc4, 3, 0, 0, 0, 0, 0] }, mflags: 0x40, mask: 0xa, ignored: 0x20 });
        assert_eq!(fan.fanotify_marks[1].on, FanOn::Mount { id: 0x1f });
        assert_eq!(fan.fanotify_marks[2].on, FanOn::Filesystem { sdev: 0xfe00001 });
        let ino = FdInfo::parse("pos:\t0\nflags:\t04000\ninotify wd:3 ino:3c4a7 sdev:fe00000 mask:fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000\ninotify wd:1f ino:331 sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:310300007c8fb2a2\n");
        assert_eq!(ino.inotify.len(), 2);
        assert_eq!(ino.inotify[0], (3, 0xfff, 0xfe00000, 1, vec![0xa7, 0xc4, 3, 0, 0, 0, 0, 0]));
        assert_eq!((ino.inotify[1].0, ino.inotify[1].1), (0x1f, 2));
        let pidfd = FdInfo::parse("pos:\t0\nflags:\t02000002\nPid:\t9201\nNSpid:\t9201\n");
        assert_eq!(anon_kind("[pidfd]", 3, &pidfd).unwrap(), FileKind::PidFd { pid: 9201, flags: libc::O_CLOEXEC });
        assert!(anon_kind("[pidfd]", 3, &FdInfo::parse("Pid:\t-1\n")).is_err());
        // A kind herd does not carry, or a line /proc did not write, is refused.
        assert!(anon_kind("[io_uring]", 7, &e).is_err());
        assert!(anon_kind("[eventfd]", 7, &FdInfo::default()).is_err());
    }

    #[test]
    fn smaps_flags_parse() {
        let text = "7fcee9184000-7fcee918c000 rw-p 00000000 00:00 0 \nSize:                 32 kB\nVmFlags: rd wr mr mw me gu ac wf dd \n7fcee918c000-7fcee918d000 rw-p 00000000 00:00 0 \nVmFlags: rd wr mr mw me lo ac \n7fcee918d000-7fcee918e000 rw-p 00000000 00:00 0 \nVmFlags: rd wr mr mw me ac \n";
        let got = parse_smaps_flags(text);
        let r = |start, end, advice, locked| RegionState { start, end, advice, locked, guards: vec![] };
        assert_eq!(
            got,
            vec![
                r(0x7fcee9184000, 0x7fcee918c000, vec![libc::MADV_DONTDUMP, libc::MADV_WIPEONFORK], false),
                r(0x7fcee918c000, 0x7fcee918d000, vec![], true),
            ]
        );
    }

    #[test]
    fn posix_timers_parse() {
        let text = "ID: 42\nsignal: 10/0000000000001234\nnotify: signal/pid.29596\nClockID: 1\nID: 0\nsignal: 14/0000000000000000\nnotify: signal/tid.77\nClockID: 0\nID: 3\nsignal: 0/0000000000000000\nnotify: none/pid.5\nClockID: 7\n";
        let t = parse_timers(text);
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].id, t[0].signo, t[0].value, t[0].notify, t[0].clockid), (42, 10, 0x1234, libc::SIGEV_SIGNAL, 1));
        assert_eq!((t[1].notify, t[1].tid), (libc::SIGEV_SIGNAL | libc::SIGEV_THREAD_ID, 77));
        assert_eq!((t[2].notify, t[2].clockid), (libc::SIGEV_NONE, 7));
        assert!(parse_timers("").is_empty());
    }

    #[test]
    fn lock_lines_parse_and_deduplicate() {
        let text = "pos:\t0\nflags:\t0100002\nino:\t77\nlock:\t1: POSIX  ADVISORY  WRITE 17122 fe:00:77 10 14\nlock:\t2: FLOCK  ADVISORY  READ 17122 fe:00:77 0 EOF\nlock:\t3: -> POSIX  ADVISORY  WRITE 17130 fe:00:77 0 EOF\nlock:\t4: OFDLCK ADVISORY  READ -1 fe:00:77 0 EOF\n";
        let info = FdInfo::parse(text);
        assert_eq!(info.locks.len(), 3, "the waiter holds nothing: {:?}", info.locks);
        let mut seen = Vec::new();
        let got = locks_of(8, &info, &mut seen);
        assert_eq!(
            got,
            vec![
                FileLock { fd: 8, kind: LockKind::Posix, write: true, start: 10, len: 5 },
                FileLock { fd: 8, kind: LockKind::Flock, write: false, start: 0, len: 0 },
                FileLock { fd: 8, kind: LockKind::Ofd, write: false, start: 0, len: 0 },
            ]
        );
        // The same file at another fd: its POSIX lock (the process's) is kept
        // already; flock and OFD locks belong to that fd's open file, kept again.
        let again = locks_of(9, &info, &mut seen);
        assert_eq!(again.iter().map(|l| l.kind).collect::<Vec<_>>(), vec![LockKind::Flock, LockKind::Ofd]);
        let lease = FdInfo::parse("lock:\t1: LEASE  ACTIVE    READ 17122 fe:00:77 0 EOF\n");
        assert!(lock_refusal(&lease.locks[0]).is_none());
        assert_eq!(locks_of(5, &lease, &mut seen), vec![FileLock { fd: 5, kind: LockKind::Lease, write: false, start: 0, len: 0 }]);
        let breaking = FdInfo::parse("lock:\t1: LEASE  BREAKING  READ 17122 fe:00:77 0 EOF\n");
        assert!(lock_refusal(&breaking.locks[0]).is_some());
        assert!(lock_refusal(&info.locks[0]).is_none());
    }
}
