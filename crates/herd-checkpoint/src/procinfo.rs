//! Reading /proc for one process, with errors that say what went wrong.

use procfs::process::{FDTarget, MMapPath, MemoryMap, Process};

use crate::{CheckpointError, Result};

pub(crate) fn open(pid: i32) -> Result<Process> {
    let p = Process::new(pid).map_err(|e| map_err(pid, e))?;
    // /proc/PID exists for threads too (hidden entries); insist on a process.
    let st = p.status().map_err(|e| map_err(pid, e))?;
    if st.tgid != pid {
        return Err(CheckpointError::Proc { pid, what: format!("{pid} is a thread of process {}", st.tgid) });
    }
    Ok(p)
}

pub(crate) fn map_err(pid: i32, e: procfs::ProcError) -> CheckpointError {
    match e {
        procfs::ProcError::NotFound(_) => CheckpointError::NoSuchProcess { pid },
        procfs::ProcError::PermissionDenied(p) => CheckpointError::Permission {
            pid,
            why: format!("cannot read {}", p.map(|p| p.display().to_string()).unwrap_or_default()),
        },
        other => CheckpointError::Proc { pid, what: other.to_string() },
    }
}

/// What an fd refers to, in words, for messages.
pub(crate) fn describe(target: &FDTarget) -> String {
    match target {
        FDTarget::Path(p) => p.display().to_string(),
        FDTarget::Socket(i) => format!("socket:[{i}]"),
        FDTarget::Net(i) => format!("net:[{i}]"),
        FDTarget::Pipe(i) => format!("pipe:[{i}]"),
        FDTarget::AnonInode(s) => format!("anon_inode:{s}"),
        FDTarget::MemFD(s) => format!("memfd:{s}"),
        FDTarget::Other(s, i) => format!("{s}:[{i}]"),
    }
}

pub(crate) fn auxv(pid: i32) -> Result<Vec<u64>> {
    let raw = std::fs::read(format!("/proc/{pid}/auxv"))
        .map_err(|e| CheckpointError::Proc { pid, what: format!("auxv: {e}") })?;
    Ok(raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}

pub(crate) fn personality(pid: i32) -> Result<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/personality"))
        .map_err(|e| CheckpointError::Proc { pid, what: format!("personality: {e}") })?;
    u32::from_str_radix(s.trim(), 16).map_err(|e| CheckpointError::Proc { pid, what: format!("personality: {e}") })
}

pub(crate) fn maps(p: &Process) -> Result<Vec<MemoryMap>> {
    Ok(p.maps().map_err(|e| map_err(p.pid, e))?.0)
}

/// The bracketed name of a special mapping ("vvar_vclock"), if any.
pub(crate) fn special_name(path: &MMapPath) -> Option<&str> {
    match path {
        MMapPath::Other(s) => Some(s.trim_start_matches('[').trim_end_matches(']')),
        _ => None,
    }
}

/// What /proc/PID/maps calls a mapping (a path, or SysV shared memory by its key).
pub(crate) fn describe_mapping(path: &MMapPath) -> String {
    match path {
        MMapPath::Path(p) => p.to_string_lossy().into_owned(),
        MMapPath::Vsys(key) => format!("SysV shared memory {key:#x}"),
        other => format!("{other:?}"),
    }
}

/// Live children of `pid` (from every thread's children list).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// Resource limits from /proc/PID/limits (prlimit(2) on another user's
/// process needs CAP_SYS_RESOURCE; the file needs only ptrace access).
pub(crate) fn rlimits(p: &Process) -> Result<Vec<herd_image::Rlimit>> {
    use procfs::process::LimitValue;
    let l = p.limits().map_err(|e| map_err(p.pid, e))?;
    let v = |x: LimitValue| match x {
        LimitValue::Unlimited => u64::MAX,
        LimitValue::Value(n) => n,
    };
    // In RLIMIT_* order: CPU FSIZE DATA STACK CORE RSS NPROC NOFILE MEMLOCK
    // AS LOCKS SIGPENDING MSGQUEUE NICE RTPRIO RTTIME.
    let all = [
        l.max_cpu_time, l.max_file_size, l.max_data_size, l.max_stack_size, l.max_core_file_size,
        l.max_resident_set, l.max_processes, l.max_open_files, l.max_locked_memory, l.max_address_space,
        l.max_file_locks, l.max_pending_signals, l.max_msgqueue_size, l.max_nice_priority,
        l.max_realtime_priority, l.max_realtime_timeout,
    ];
    Ok(all
        .into_iter()
        .enumerate()
        .map(|(i, lim)| herd_image::Rlimit { resource: i as u32, cur: v(lim.soft_limit), max: v(lim.hard_limit) })
        .collect())
}
