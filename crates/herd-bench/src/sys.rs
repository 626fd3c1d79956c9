//! Small facts about the machine, memory warm-up, and ending processes.

use std::hint::black_box;
use std::path::Path;

use anyhow::{bail, Context, Result};
use herd_kernel::task;

pub const PAGE: usize = 4096;
pub const MIB: u64 = 1 << 20;
/// Upper bound of one warm-up, whatever the working size.
pub const WARM_CAP: u64 = 6 << 30;

/// Writes one byte per 4 KiB page.
pub fn touch(v: &mut [u8]) {
    for i in (0..v.len()).step_by(PAGE) {
        v[i] = 1;
    }
}

/// Touches and frees about 3× `bytes` of fresh memory (at most
/// [`WARM_CAP`]), so the guest's free pages are backed by the host again
/// before a timed step (the VM returns memory that stayed free ~2 s).
pub fn warm_up(bytes: u64) {
    let n = warm_bytes(bytes);
    let mut v = vec![0u8; n as usize];
    touch(&mut v);
    black_box(&mut v);
}

pub fn warm_bytes(bytes: u64) -> u64 {
    bytes.saturating_mul(3).min(WARM_CAP)
}

/// Refuses to go on without root or when ptrace is disabled altogether.
pub fn preflight() -> Result<()> {
    if task::euid() != 0 {
        bail!(
            "herd-bench must run as root: it seizes its own child processes with ptrace, \
             checkpoints and restores them (try: sudo {})",
            std::env::args().collect::<Vec<_>>().join(" ")
        );
    }
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        if s.trim() == "3" {
            bail!("ptrace is disabled on this machine (/proc/sys/kernel/yama/ptrace_scope is 3); herd cannot work");
        }
    }
    let leaked = inheritable_fds();
    if !leaked.is_empty() {
        let list: Vec<String> = leaked.iter().map(|(fd, what)| format!("fd {fd} ({what})")).collect();
        let close: Vec<String> = leaked.iter().map(|(fd, _)| format!("{fd}>&-")).collect();
        bail!(
            "herd-bench has {} open without close-on-exec, inherited from whatever started it. \
             The process it checkpoints would inherit them too, and herd only checkpoints processes \
             with fds 0-2 open. Close them when starting herd-bench, e.g. in bash: herd-bench checkpoint {}",
            list.join(", "),
            close.join(" ")
        );
    }
    Ok(())
}

/// Our fds above 2 that a child would inherit (no close-on-exec), with
/// what they point to.
pub fn inheritable_fds() -> Vec<(i32, String)> {
    const O_CLOEXEC: u32 = 0o2000000;
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if fd <= 2 {
            continue;
        }
        // Gone by now (the directory's own fd) or unreadable: not ours to judge.
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else { continue };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok());
        if flags.is_some_and(|f| f & O_CLOEXEC == 0) {
            let what = std::fs::read_link(entry.path()).map(|p| p.display().to_string()).unwrap_or_else(|_| "?".into());
            out.push((fd, what));
        }
    }
    out.sort();
    out
}

/// The file system type of the mount holding `path`, from
/// /proc/self/mountinfo (what `stat -f -c %T` reports).
pub fn fs_type(path: &Path) -> Result<String> {
    let path = path.canonicalize().with_context(|| format!("cannot resolve {}", path.display()))?;
    let mounts = herd_kernel::host::mounts().context("reading /proc/self/mountinfo")?;
    // The deepest mount holding the path; of several at one place, the last (on top).
    let mut best: Option<&herd_kernel::host::Mount> = None;
    for m in mounts.iter().filter(|m| path.starts_with(&m.point)) {
        if best.is_none_or(|b| m.point.components().count() >= b.point.components().count()) {
            best = Some(m);
        }
    }
    best.map(|m| m.fstype.clone()).with_context(|| format!("no mount found for {}", path.display()))
}

pub fn is_ram_fs(fstype: &str) -> bool {
    matches!(fstype, "tmpfs" | "ramfs")
}

/// A field of /proc/meminfo, in bytes.
pub fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.split(':').next() == Some(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The selected transparent huge page mode (`always`, `madvise`, `never`).
pub fn thp_mode() -> String {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .ok()
        .and_then(|s| s.split_whitespace().find(|w| w.starts_with('[')).map(|w| w.trim_matches(['[', ']']).to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// The state letter of `pid` from /proc/PID/stat (`R`, `S`, `Z`…).
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Ends child `pid` with SIGKILL and reaps it.
pub fn kill_and_reap(pid: i32) -> Result<()> {
    task::kill_and_reap(pid).with_context(|| format!("cannot end process {pid}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_a_fs_type() {
        assert!(!fs_type(Path::new("/")).unwrap().is_empty());
    }

    #[test]
    fn warm_up_is_capped() {
        assert_eq!(warm_bytes(64 * MIB), 192 * MIB);
        assert_eq!(warm_bytes(2048 * MIB), WARM_CAP);
    }
}
