//! Facts about processes, read from /proc, and signals sent only to the
//! process we recorded (a pid is checked against its start time first, so a
//! reused pid is never signalled).

use serde::{Deserialize, Serialize};

/// A process we started, as recorded in the state file: its pid and its
/// start time (field 22 of /proc/PID/stat, in clock ticks since boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRef {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcRef {
    /// The process `pid` as it is now, if it exists.
    pub fn of(pid: i32) -> Option<ProcRef> {
        let stat = Stat::read(pid)?;
        Some(ProcRef { pid, start_time: stat.start_time })
    }

    /// Still the same process, and not a zombie.
    pub fn is_live(&self) -> bool {
        matches!(Stat::read(self.pid), Some(s) if s.start_time == self.start_time && s.state != 'Z' && s.state != 'X')
    }

    /// Sends `sig` if this is still the recorded process: Ok(false) if it
    /// is gone, an error if it may not be signalled (another user's).
    pub fn signal(&self, sig: i32) -> std::io::Result<bool> {
        if !self.is_live() {
            return Ok(false);
        }
        match herd_kernel::task::kill(self.pid, sig) {
            Ok(()) => Ok(true),
            Err(herd_kernel::KernelError::Died { .. }) => Ok(false),
            Err(herd_kernel::KernelError::Sys { source, .. }) => Err(source),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }
}

struct Stat {
    state: char,
    ppid: i32,
    start_time: u64,
}

impl Stat {
    fn read(pid: i32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat(&text)
    }
}

/// Parses /proc/PID/stat; the command name may hold spaces and parentheses,
/// so the fields are counted from the last ')'.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); start time is field 22.
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The live children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut found_file = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                found_file = true;
                out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    if !found_file {
        // Kernels without CONFIG_PROC_CHILDREN: look for the parent pid.
        if let Ok(all) = std::fs::read_dir("/proc") {
            for e in all.flatten() {
                if let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
                    if matches!(Stat::read(child), Some(s) if s.ppid == pid) {
                        out.push(child);
                    }
                }
            }
        }
    }
    out.retain(|&c| matches!(Stat::read(c), Some(s) if s.state != 'Z' && s.state != 'X'));
    out.sort_unstable();
    out.dedup();
    out
}

/// The pid of `pid` in each pid namespace it is in, outermost first
/// (the NSpid line of /proc/PID/status).
pub fn ns_pids(pid: i32) -> Option<Vec<i32>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("NSpid:"))?;
    line["NSpid:".len()..].split_whitespace().map(|p| p.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_strange_command_name() {
        let text = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        let s = parse_stat(text).unwrap();
        assert_eq!((s.state, s.ppid, s.start_time), ('S', 1, 987654));
    }

    #[test]
    fn this_process_is_live_and_a_wrong_start_time_is_not() {
        let me = ProcRef::of(std::process::id() as i32).unwrap();
        assert!(me.is_live());
        assert!(!ProcRef { start_time: me.start_time + 1, ..me }.is_live());
        assert!(!ns_pids(me.pid).unwrap().is_empty());
    }
}
