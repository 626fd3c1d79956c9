//! One look a second at every process of this node: the node's load and what herdd's
//! other tasks need to know of each process, read from /proc once for all of them.
//!
//! A look ([`Sampler::look`]) reads `/proc`'s list of processes and, for each, its
//! `schedstat` and, if it ran since the last look, its `stat` (and, for a process with
//! several threads, each thread's `schedstat`).
//! The result, a [`Look`], is published ([`crate::daemon::Shared::looks`]) and read by:
//!
//! - the gossip loop: the **load** is the mean number of runnable tasks over the last
//!   second, measured rather than sampled: each task's time on a CPU plus its time
//!   waiting for one (`schedstat`), summed over the node's tasks, divided by the time
//!   between two looks. A task running all along counts 1, two tasks sharing a CPU 1
//!   each (half running, half waiting), a sleeping task 0 — what sampling the tasks in
//!   state R several times a second estimated, without missing the bursts between samples.
//!   herdd's own threads are not counted. In a local-cluster node, /proc is the node's own
//!   pid namespace: only its processes count.
//! - each migratable process's actor at home: its CPU time, memory and start time (ended
//!   or not), without reading /proc itself; files that change only when the process runs
//!   (`io`, `cmdline`) are read again only when [`Seen::exec_ns`] says it ran.
//! - the family scan with many processes: new children are found by their parent pid.
//! - `herd ps`, `herd top` and the dashboard: each process's parent and state.
//!
//! With a thousand processes a look costs a few milliseconds of CPU; reading each process
//! separately (an actor's tick, the load's four samples a second of every task) cost a
//! tenth of a CPU.

use std::collections::HashMap;
use std::io::Read;
use std::time::Instant;

use procfs::FromRead;

/// How often the node is looked at.
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A process as a look saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Start time (clock ticks after boot): a reused pid has another.
    pub start: u64,
    /// `R`, `S`, `D`, `T`, `Z`, ...
    pub state: char,
    pub ppid: i32,
    pub threads: i64,
    /// User and system CPU time of all its threads, clock ticks.
    pub cpu_ticks: u64,
    /// Resident memory, bytes.
    pub rss: u64,
    /// Its main thread's time on a CPU, ns: unchanged between two looks means that thread
    /// did not run (a process with one thread made no system call, did not exec or fork).
    pub exec_ns: u64,
    /// Its main thread's time on a CPU and waiting for one, ns.
    pub runnable_ns: u64,
    /// Whether it may have done anything since the look before ([`Seen::ran_since`] it),
    /// or is new.
    pub ran: bool,
}

impl Seen {
    /// Whether the process may have done anything since `before` was seen: its main
    /// thread ran, or it has other threads (whose running is not looked at), or it is
    /// another process.
    pub fn ran_since(&self, before: &Seen) -> bool {
        self.start != before.start || self.exec_ns != before.exec_ns || self.threads > 1 || before.threads > 1
    }
}

/// One look at the node's processes.
#[derive(Debug)]
pub struct Look {
    /// When it was taken (its figures are of this moment, give or take the look's time).
    pub at: Instant,
    pub procs: HashMap<i32, Seen>,
}

impl Default for Look {
    fn default() -> Look {
        Look { at: Instant::now(), procs: HashMap::new() }
    }
}

/// Looks at the node's processes, keeping what the load needs from one look to the next.
#[derive(Default)]
pub struct Sampler {
    /// Each task's (thread id's) time on a CPU and waiting for one at the last look, ns.
    tasks: HashMap<i32, u64>,
    /// The processes as the last look saw them.
    procs: HashMap<i32, Seen>,
    last: Option<Instant>,
    looks: u64,
    buf: Vec<u8>,
    /// Processes' `schedstat` files, kept open: reading an open /proc file again costs
    /// less than opening it each time (at most a quarter of herdd's limit of open files).
    open: HashMap<i32, std::fs::File>,
}

/// A process with one thread that has neither run nor waited to run since the last look has
/// not changed what `stat` says of it, but for its parent (which changes when that ends:
/// read again then) and its memory (reclaimed): its `stat` is read again only every this
/// many looks.
const STAT_AGAIN: u64 = 10;

impl Sampler {
    /// Looks at every process in /proc but herdd. Returns the look and the mean number of
    /// runnable tasks since the previous look (None at the first).
    pub fn look(&mut self) -> (Look, Option<f32>) {
        let me = std::process::id() as i32;
        let at = Instant::now();
        let mut procs = HashMap::with_capacity(self.procs.len());
        let mut tasks = HashMap::with_capacity(self.tasks.len());
        let mut busy_ns = 0u64;
        let dt_ns = self.last.map_or(0, |l| at.duration_since(l).as_nanos() as u64);
        self.looks += 1;
        let Ok(dir) = std::fs::read_dir("/proc") else { return (Look { at, procs }, None) };
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            if pid == me {
                continue;
            }
            let Some(main) = self.main_schedstat(pid) else {
                continue; // ended meanwhile
            };
            let before = self.procs.get(&pid).copied();
            let still = before.filter(|b| {
                b.threads == 1 && b.exec_ns == main.0 && b.runnable_ns == main.0 + main.1 && !(pid as u64 + self.looks).is_multiple_of(STAT_AGAIN)
            });
            let seen = match still {
                Some(b) => Seen { ran: false, ..b },
                None => {
                    let Some(stat) = stat(&mut self.buf, pid) else {
                        continue; // ended meanwhile
                    };
                    let mut seen = Seen {
                        start: stat.starttime,
                        state: stat.state,
                        ppid: stat.ppid,
                        threads: stat.num_threads,
                        cpu_ticks: stat.utime + stat.stime,
                        rss: stat.rss * page_size(),
                        exec_ns: main.0,
                        runnable_ns: main.0 + main.1,
                        ran: true,
                    };
                    seen.ran = before.is_none_or(|b| seen.ran_since(&b));
                    seen
                }
            };
            let mut count = |tid: i32, (exec, wait): (u64, u64)| {
                let now = exec + wait;
                busy_ns += match self.tasks.get(&tid) {
                    Some(&before) if before <= now => now - before,
                    // New since the last look (or a reused id): at most all of the time.
                    _ => now.min(dt_ns),
                };
                tasks.insert(tid, now);
            };
            if seen.threads > 1 {
                if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                    for t in rd.flatten() {
                        let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
                        if let Some(s) = read(&mut self.buf, &format!("/proc/{pid}/task/{tid}/schedstat")).and_then(schedstat) {
                            count(tid, s);
                        }
                    }
                }
            } else {
                count(pid, main);
            }
            procs.insert(pid, seen);
        }
        // A process whose parent has ended has another parent now: read again (herdd,
        // not in the look, is the parent of its guests).
        let orphans: Vec<i32> = procs.iter().filter(|(_, s)| s.ppid > 1 && s.ppid != me && !procs.contains_key(&s.ppid)).map(|(&pid, _)| pid).collect();
        for pid in orphans {
            if let Some(stat) = stat(&mut self.buf, pid) {
                if let Some(s) = procs.get_mut(&pid).filter(|s| s.start == stat.starttime) {
                    s.ppid = stat.ppid;
                }
            }
        }
        let load = (self.last.is_some() && dt_ns > 0).then(|| (busy_ns as f64 / dt_ns as f64) as f32);
        self.tasks = tasks;
        self.open.retain(|pid, _| procs.contains_key(pid));
        self.procs.clone_from(&procs);
        self.last = Some(at);
        (Look { at, procs }, load)
    }
}

impl Sampler {
    /// The `schedstat` of process `pid`'s main thread, from its file kept open if it is.
    fn main_schedstat(&mut self, pid: i32) -> Option<(u64, u64)> {
        use std::os::unix::fs::FileExt;
        self.buf.resize(256, 0);
        if let Some(f) = self.open.get(&pid) {
            match f.read_at(&mut self.buf, 0) {
                Ok(n) if n > 0 => return schedstat(&self.buf[..n]),
                // Ended (ESRCH), or the pid is another process's now: opened again below.
                _ => drop(self.open.remove(&pid)),
            }
        }
        let f = std::fs::File::open(format!("/proc/{pid}/schedstat")).ok()?;
        let n = f.read_at(&mut self.buf, 0).ok().filter(|&n| n > 0)?;
        let out = schedstat(&self.buf[..n]);
        if self.open.len() < crate::stats::open_files() / 4 {
            self.open.insert(pid, f);
        }
        out
    }
}

/// The whole of a small /proc file into `buf`; None if it cannot be read (the process
/// ended).
fn read<'a>(buf: &'a mut Vec<u8>, path: &str) -> Option<&'a [u8]> {
    buf.clear();
    std::fs::File::open(path).and_then(|mut f| f.read_to_end(buf)).ok()?;
    Some(buf)
}

/// Process `pid`'s `stat`; None if it has ended.
fn stat(buf: &mut Vec<u8>, pid: i32) -> Option<procfs::process::Stat> {
    read(buf, &format!("/proc/{pid}/stat")).and_then(|b| procfs::process::Stat::from_read(b).ok())
}

/// `schedstat`'s first two fields: time on a CPU and time waiting for one, ns.
fn schedstat(b: &[u8]) -> Option<(u64, u64)> {
    let s = procfs::process::Schedstat::from_read(b).ok()?;
    Some((s.sum_exec_runtime, s.run_delay))
}

fn page_size() -> u64 {
    procfs::page_size()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that is ended when dropped (also when an assertion fails).
    struct Child(std::process::Child);

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn spawn(args: &[&str]) -> Child {
        let c = std::process::Command::new(args[0]).args(&args[1..]).stdout(std::process::Stdio::null()).spawn().expect(args[0]);
        Child(c)
    }

    #[test]
    fn a_look_sees_a_child_and_a_busy_thread_counts_about_one() {
        // Long enough to outlast a slow machine's test (ended on drop).
        let child = spawn(&["sleep", "600"]);
        let pid = child.0.id() as i32;
        let mut s = Sampler::default();
        // Until it has exec'd and sleeps: seen asleep by two looks in a row with the same
        // time on a CPU (a look reads `schedstat` before `stat`: one that saw it fall asleep
        // between the two has a time it ran on from).
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        let mut last: Option<Seen> = None;
        let seen = loop {
            let look = s.look().0;
            let seen = look.procs.get(&pid).copied().expect("the child is seen");
            if last.is_some_and(|l| l.state == 'S' && seen.state == 'S' && l.exec_ns == seen.exec_ns) {
                break seen;
            }
            assert!(Instant::now() < deadline, "the child never seen asleep: {seen:?}");
            last = Some(seen);
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(seen.ppid, std::process::id() as i32);
        assert_eq!(seen.threads, 1);
        // A busy process (not this one: herdd's own threads do not count) for 300 ms.
        let busy = spawn(&["sh", "-c", "while :; do :; done"]);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (second, load) = s.look();
        assert!(!second.procs.contains_key(&(std::process::id() as i32)), "herdd does not look at itself");
        let load = load.expect("a load after the first look");
        // At least the busy loop (other processes of the machine may add to it).
        assert!(load > 0.5, "load {load}");
        let again = second.procs.get(&pid).copied().expect("still there");
        assert!(!again.ran_since(&seen), "a sleeping process did not run: {seen:?} {again:?}");
        drop(busy);
        drop(child);
        let (third, _) = s.look();
        assert!(!third.procs.contains_key(&pid));
    }

    #[test]
    fn the_first_look_has_no_load() {
        assert!(Sampler::default().look().1.is_none());
    }
}
