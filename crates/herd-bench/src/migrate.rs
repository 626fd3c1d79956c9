//! `herd-bench migrate`: live migration between the two nodes of a real local
//! cluster (herd-lab: two herdd, each node in namespaces of its own, one CPU
//! each), next to baselines measured in the same run:
//!
//! 1. moving a process holding N MiB n1 → n2 and back home: frozen and total
//!    time, and the move's throughput beside raw TCP n1 → n2 over the bridge;
//! 2. forwarded system calls (write to /dev/null, getppid): at home, natively,
//!    and after a move to n2, beside a TCP 1-byte ping-pong n2 → n1;
//! 3. CPU-bound work at home and on n2.
//!
//! The process under test is a small C program (the `TARGET_C` source below),
//! compiled with gcc at run time into the cluster's directory (each node has
//! a /tmp of its own, the cluster directory is the same path on every node),
//! started in n1 as uid 65534 under `herd run` (herdd does not move root's
//! processes by default), and moved with the control protocol
//! (`Request::Migrate` on n1's socket, n1 being its home). The TCP baselines
//! are hidden subcommands of herd-bench itself run inside the nodes:
//! `__tcp-sink`/`__tcp-source` and `__pong`/`__ping`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use herd_daemon::control::{Client, Migrated, MoveMode, Request, Response};
use herd_lab::{LabError, LocalCluster, UpOptions};

use crate::report::{median, size_label};
use crate::sys::{self, MIB};

/// What `herd-bench migrate` was asked to do.
pub struct Config {
    /// Part 1: working sizes, MiB.
    pub sizes: Vec<u64>,
    /// Repetitions of every measurement.
    pub reps: usize,
    /// Part 2: system calls of each kind per measurement, and TCP round trips.
    pub calls: u64,
    /// Part 1: bytes of the TCP throughput baseline, MiB.
    pub tcp_mib: u64,
    /// Part 3: seconds of work per run (calibrated at home).
    pub cpu_secs: f64,
    pub parts: Vec<Part>,
    /// Part 1: how the process leaves home.
    pub modes: Vec<MoveMode>,
    /// Part 1: how fast it rewrites its memory while it leaves.
    pub dirty: Vec<Dirty>,
    /// Keep the cluster directory (programs, herdd logs) after a clean run.
    pub keep: bool,
    /// The files part: MiB of the file read and of the file written.
    pub file_mib: u64,
}

/// How fast the process rewrites its memory during a move out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dirty {
    Idle,
    /// MB/s.
    Rate(u64),
    /// As fast as it can.
    Max,
}

impl std::str::FromStr for Dirty {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Dirty, String> {
        match s {
            "idle" | "0" => Ok(Dirty::Idle),
            "max" => Ok(Dirty::Max),
            n => n.parse().map(Dirty::Rate).map_err(|_| format!("{n:?}: want idle, max, or MB/s")),
        }
    }
}

impl std::fmt::Display for Dirty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dirty::Idle => f.write_str("idle"),
            Dirty::Rate(r) => write!(f, "{r} MB/s"),
            Dirty::Max => f.write_str("max"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Moving processes of --sizes MiB n1 → n2 → home, beside TCP throughput.
    Move,
    /// Forwarded system calls beside a TCP round trip.
    Syscalls,
    /// CPU-bound work at home and remote.
    Cpu,
    /// Processes with threads: the stop time of a move with 1, 8 and 64 threads (of the
    /// first --sizes), and forwarded calls from 1, 4 and 8 threads at once.
    Threads,
    /// Files used on n2: sha256sum of a --file-mib file and writing one, in a directory
    /// both nodes share (direct file access) and in one they do not (forwarded), beside
    /// the same at home.
    Files,
    /// Forks of a small process at home and on n2 (the child made on n2, its deputy at
    /// home), and its forwarded getppid() on n2 before and after its first fork there.
    Forks,
}

/// Goal: a remote process forks at least this fraction as fast as at home.
pub const FORK_GOAL: f64 = 0.25;
/// Forks per measurement of the forks part.
const FORKS: u64 = 200;

/// Goal (issue 11): a forwarded system call costs at most this many TCP round trips
/// (the issue asks it of the median call; part 2 measures the mean of many).
pub const FORWARD_GOAL: f64 = 1.5;
/// Goal: CPU-bound work runs remote at most this much slower than at home.
pub const CPU_GOAL: f64 = 1.02;

pub(crate) const NOBODY: u32 = 65534;
/// How long a program may take to answer one command (CPU work, 20000
/// forwarded calls, checking 2 GiB) or a helper to start listening.
const ANSWER: Duration = Duration::from_secs(120);
/// How long a process may take to end once asked to.
const END: Duration = Duration::from_secs(20);
/// How long herdd may take to list a process `herd run` started.
const ADOPT: Duration = Duration::from_secs(15);
/// Iterations of the CPU loop used to calibrate the work.
const CALIBRATE_ITERS: u64 = 100_000_000;
/// TCP ports of the helpers, one fresh port per helper.
static NEXT_PORT: AtomicU16 = AtomicU16::new(47_900);

// ---------------------------------------------------------------------------
// The whole run
// ---------------------------------------------------------------------------

pub fn run(cfg: Config) -> Result<bool> {
    if cfg.parts.contains(&Part::Move) && (cfg.sizes.is_empty() || cfg.sizes.contains(&0)) {
        bail!("--sizes wants sizes in MiB greater than 0, e.g. --sizes 64,512");
    }
    if cfg.sizes.iter().any(|&m| m > 1 << 20) {
        bail!("--sizes is in MiB; sizes above 1 TiB are surely a mistake");
    }
    if cfg.reps == 0 || cfg.calls == 0 || cfg.tcp_mib == 0 {
        bail!("--reps, --calls and --tcp-mib must be at least 1");
    }
    if !(cfg.cpu_secs > 0.0 && cfg.cpu_secs <= 600.0) {
        bail!("--cpu-secs must be more than 0 and at most 600");
    }
    if herd_kernel::task::euid() != 0 {
        bail!(
            "herd-bench migrate must run as root: it brings up a local cluster and runs the \
             processes it moves as uid {NOBODY} (try: sudo {})",
            std::env::args().collect::<Vec<_>>().join(" ")
        );
    }
    if cfg!(debug_assertions) {
        eprintln!("herd-bench: warning: this is a debug build of herd-bench; build with --release for numbers to compare");
    }
    let needed = cfg.sizes.iter().copied().max().unwrap_or(0) * MIB;
    if cfg.parts.contains(&Part::Move) {
        let want = needed * 2 + sys::warm_bytes(needed) + (1 << 30);
        if let Some(avail) = sys::meminfo("MemAvailable") {
            if avail < want {
                eprintln!(
                    "herd-bench: warning: {:.1} GiB available, the largest size needs about {:.1} GiB \
                     (the process at home and its copy on n2 during the move, the warm-up, margin)",
                    avail as f64 / (1u64 << 30) as f64,
                    want as f64 / (1u64 << 30) as f64
                );
            }
        }
    }

    let lab = Lab::up(cfg.keep)?;
    // Moves here are made by hand: n1, the home of the process under test, does not balance.
    lab.ctl("n1", herd_daemon::control::CtlOp::Quiet)?;
    let mut failures = Vec::new();
    lab.print_header("herd-bench migrate");
    println!("process under test: `herd run` as uid {NOBODY} in n1 (its home), moved by herdd of n1 (control request Migrate)");

    if cfg.parts.contains(&Part::Move) {
        let tcp_bytes = cfg.tcp_mib * MIB;
        let mut results = Vec::new();
        for &mib in &cfg.sizes {
            results.push(move_size(&lab, mib, &cfg, tcp_bytes, &mut failures));
        }
        print_moves(&results, cfg.tcp_mib);
    }
    let mut small = None;
    if cfg.parts.contains(&Part::Syscalls) || cfg.parts.contains(&Part::Cpu) {
        let s = calls_and_cpu(&lab, &cfg, &mut failures);
        if cfg.parts.contains(&Part::Syscalls) {
            print_syscalls(&s, cfg.calls);
        }
        if cfg.parts.contains(&Part::Cpu) {
            print_cpu(&s);
        }
        small = Some(s);
    }
    if cfg.parts.contains(&Part::Threads) {
        threads_part(&lab, &cfg, &mut failures);
    }
    if cfg.parts.contains(&Part::Files) {
        crate::files::files_part(&lab, cfg.reps, cfg.file_mib, &mut failures);
    }
    if cfg.parts.contains(&Part::Forks) {
        forks_part(&lab, &cfg, &mut failures);
    }
    if let Some(s) = &small {
        print_goals(s, &cfg);
    }
    if !failures.is_empty() {
        println!();
        println!("FAILED ({}), left out of the tables:", failures.len());
        for f in &failures {
            println!("  {f}");
        }
    }
    let ok = failures.is_empty();
    lab.finish(ok)?;
    Ok(ok)
}

// ---------------------------------------------------------------------------
// The cluster and what runs in it
// ---------------------------------------------------------------------------

/// The cluster's directory; removed when dropped unless kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("herd-bench: the cluster's directory (herdd logs, the program) is kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A two-node local cluster with the program under test built into its directory.
/// Fields drop in order: the cluster goes down before its directory is removed.
pub(crate) struct Lab {
    pub(crate) cluster: LocalCluster,
    work: WorkDir,
    up_secs: f64,
    /// herd-bench itself, for the TCP helpers inside the nodes.
    bench: PathBuf,
    pub(crate) herd: PathBuf,
    pub(crate) setpriv: PathBuf,
    /// The compiled program under test.
    pub(crate) target: PathBuf,
    /// The nodes: n1 (home of the processes under test), n2, and n3 in a 3-node lab.
    nodes: &'static [&'static str],
    /// Per node: the node's CPUs for `taskset -c`, when it has a cpuset.
    pin: Vec<Option<String>>,
    taskset: Option<PathBuf>,
    /// Why the nodes have no cpusets, when they have none.
    no_cpusets: Option<String>,
}

const NODES: [&str; 3] = ["n1", "n2", "n3"];

impl Lab {
    pub(crate) fn up(keep: bool) -> Result<Lab> {
        Self::up_with(keep, true)
    }

    /// [`Lab::up`]; with `pinned` false the nodes share every CPU (no cpuset each).
    pub(crate) fn up_with(keep: bool, pinned: bool) -> Result<Lab> {
        Self::up_nodes(keep, pinned, 2)
    }

    /// [`Lab::up_with`] of `count` nodes (2 or 3).
    pub(crate) fn up_nodes(keep: bool, pinned: bool, count: usize) -> Result<Lab> {
        let nodes = &NODES[..count.clamp(2, NODES.len())];
        let bench = std::env::current_exe().context("cannot find herd-bench's own executable")?;
        let herd = bench.with_file_name("herd");
        let herdd = bench.with_file_name("herdd");
        for exe in [&herd, &herdd] {
            if !exe.is_file() {
                bail!(
                    "{} is missing: herd-bench migrate runs herd and herdd from its own directory; \
                     build them with `cargo build --release --workspace`",
                    exe.display()
                );
            }
        }
        let setpriv = find_in_path("setpriv").context("no setpriv (util-linux) to run the processes under test as uid 65534")?;
        let cc = ["gcc", "cc"]
            .into_iter()
            .find(|cc| quiet(Command::new(cc).arg("--version")).is_ok_and(|s| s.success()))
            .context("no C compiler (gcc or cc) for the program under test")?;

        // Not under /tmp (private to each node): next to herd-bench, which every node sees.
        let path = bench.with_file_name(format!("herd-bench-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let mut work = WorkDir { path, keep };
        let bin = work.path.join("bin");
        for d in [&work.path, &bin] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).with_context(|| format!("chmod {}", d.display()))?;
        }
        let target = build_target(cc, &bin).inspect_err(|_| work.keep = true)?;
        let probe = Command::new(&setpriv)
            .args(nobody_args())
            .arg(&target)
            .arg("probe")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .with_context(|| format!("running {}", setpriv.display()))?;
        if !probe.status.success() || probe.stdout != b"ok\n" {
            bail!("uid {NOBODY} cannot run {} (is every directory above it open to other users?)", target.display());
        }

        let mut opts = UpOptions::new(nodes.len() as u32);
        opts.dir = Some(work.path.clone());
        // Offered by both nodes for direct file access: verified shared (the files part).
        opts.shared = vec![work.path.join("shared")];
        opts.herd_exe = Some(herd.clone());
        opts.daemon = Some(herdd);
        opts.timeout = Duration::from_secs(60);
        let mut no_cpusets = None;
        if !pinned {
            no_cpusets = Some("asked for (--shared-cpus)".to_string());
        } else if sys::cpus() >= 2 {
            opts.cpus_per_node = Some(1);
        } else {
            no_cpusets = Some("this machine has one CPU".to_string());
        }
        let started = Instant::now();
        let cluster = match LocalCluster::up(&opts) {
            Err(LabError::Cpuset(why)) => {
                eprintln!("herd-bench: no cpuset per node ({why}); the nodes share the CPUs");
                no_cpusets = Some(why);
                opts.cpus_per_node = None;
                LocalCluster::up(&opts)
            }
            other => other,
        };
        let cluster = match cluster {
            Ok(c) => c,
            Err(e) => {
                work.keep = true;
                return Err(anyhow!(e).context("bringing the local cluster up"));
            }
        };
        let up_secs = started.elapsed().as_secs_f64();
        let state = cluster.state()?;
        let pin: Vec<Option<String>> =
            nodes.iter().map(|n| state.node(n).ok().and_then(|r| r.cpus.as_ref()).map(|c| c.iter().map(u32::to_string).collect::<Vec<_>>().join(","))).collect();
        let taskset = find_in_path("taskset");
        if taskset.is_none() && pin.iter().any(Option::is_some) {
            eprintln!("herd-bench: no taskset: the programs started in the nodes are not pinned to the nodes' CPUs");
        }
        let lab = Lab { cluster, work, up_secs, bench, herd, setpriv, target, nodes, pin, taskset, no_cpusets };
        lab.wait_all_up().inspect_err(|_| eprintln!("{}", lab.logs()))?;
        Ok(lab)
    }

    /// The cluster's directory (every node sees it).
    pub(crate) fn work_dir(&self) -> &Path {
        &self.work.path
    }

    /// `herd ctl` on `node`.
    pub(crate) fn ctl(&self, node: &str, op: herd_daemon::control::CtlOp) -> Result<()> {
        Client::connect(&self.cluster.node_socket(node))
            .and_then(|mut c| c.call(&Request::Ctl { op }))
            .with_context(|| format!("herd ctl {op:?} on {node}"))?;
        Ok(())
    }

    /// Until each node lists every node as up: a node moves processes only to nodes it knows.
    pub(crate) fn wait_all_up(&self) -> Result<()> {
        let start = Instant::now();
        loop {
            let all = self.nodes.iter().all(|viewer| {
                let rows = Client::connect(&self.cluster.node_socket(viewer)).and_then(|mut c| c.call(&Request::Nodes));
                matches!(rows, Ok(Response::Nodes(rows)) if self.nodes.iter().all(|n| rows.iter().any(|r| r.name == *n && r.state == "up")))
            });
            if all {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("the {} nodes did not list each other as up within 60 s", self.nodes.len());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn print_header(&self, title: &str) {
        println!("{title}");
        crate::report::print_machine();
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .zip(&self.pin)
            .map(|(n, pin)| {
                let addr = self.cluster.node_address(n).map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
                match pin {
                    Some(cpus) => format!("{n} {addr} (CPU {cpus})"),
                    None => format!("{n} {addr}"),
                }
            })
            .collect();
        println!("cluster: {} nodes up in {:.2} s, each in its own namespaces with its own herdd: {}", self.nodes.len(), self.up_secs, nodes.join(", "));
        match (&self.no_cpusets, &self.taskset) {
            (Some(why), _) => println!("no cpuset per node ({why}): the nodes share the CPUs"),
            (None, Some(_)) => println!("programs and TCP helpers started in a node are pinned to its CPU (taskset)"),
            (None, None) => println!("programs started in a node are not pinned to its CPU (no taskset)"),
        }
    }

    fn node_index(&self, node: &str) -> usize {
        self.nodes.iter().position(|n| *n == node).expect("a node of the lab")
    }

    /// A command inside `node`, pinned to its CPUs, with a clean environment in which
    /// `herd` talks to that node's herdd.
    pub(crate) fn node_cmd(&self, node: &str, argv: Vec<OsString>) -> Result<Command> {
        let mut full = Vec::new();
        if let (Some(taskset), Some(cpus)) = (&self.taskset, &self.pin[self.node_index(node)]) {
            full.extend([taskset.clone().into_os_string(), "-c".into(), cpus.into()]);
        }
        full.extend(argv);
        let mut cmd = self.cluster.node_exec(node, &full)?;
        cmd.env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/")
            .env("LC_ALL", "C")
            .env("HERD_SOCKET", self.cluster.node_socket(node));
        for (k, v) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("RUST_")) {
                cmd.env(k, v);
            }
        }
        Ok(cmd)
    }

    /// A herd-bench helper subcommand inside `node`.
    fn helper(&self, node: &str, args: &[String]) -> Result<Spawned> {
        let mut argv = vec![self.bench.clone().into_os_string()];
        argv.extend(args.iter().map(OsString::from));
        let what = format!("herd-bench {} in {node}", args.join(" "));
        Spawned::start(what, self.node_cmd(node, argv)?, false, self.work.path.clone())
    }

    /// The end of each node's herdd.log, for errors.
    pub(crate) fn logs(&self) -> String {
        let mut s = String::new();
        for node in self.nodes {
            let path = self.work.path.join(node).join("herdd.log");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("({e})"));
            let lines: Vec<&str> = text.lines().collect();
            s.push_str(&format!("--- end of {}\n{}\n", path.display(), lines[lines.len().saturating_sub(15)..].join("\n")));
        }
        s
    }

    /// Takes the cluster down; keeps its directory when something failed (or if asked).
    pub(crate) fn finish(self, ok: bool) -> Result<()> {
        let Lab { cluster, mut work, .. } = self;
        if !ok {
            work.keep = true;
        }
        let down = cluster.down();
        drop(work);
        down.context("taking the cluster down")?;
        Ok(())
    }
}

pub(crate) fn nobody_args() -> [String; 4] {
    [format!("--reuid={NOBODY}"), format!("--regid={NOBODY}"), "--clear-groups".into(), "--".into()]
}

fn quiet(cmd: &mut Command) -> std::io::Result<ExitStatus> {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status()
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Writes `TARGET_C` into `bin` and compiles it there (mode 0755).
fn build_target(cc: &str, bin: &Path) -> Result<PathBuf> {
    let src = bin.join("hb_target.c");
    let exe = bin.join("hb_target");
    std::fs::write(&src, TARGET_C).with_context(|| format!("writing {}", src.display()))?;
    let out = Command::new(cc)
        .args(["-O2", "-Wall", "-o"])
        .arg(&exe)
        .arg(&src)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cc}"))?;
    if !out.status.success() {
        bail!("{cc} could not build {}: {}\n{}", src.display(), out.status, String::from_utf8_lossy(&out.stderr));
    }
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    Ok(exe)
}

/// A program started in a node (through node_exec's waiter), its stdout read line by
/// line, its stderr kept. Killed and reaped when dropped if it has not ended.
pub(crate) struct Spawned {
    pub(crate) what: String,
    /// node_exec's waiter: ends like the program and takes it along when killed
    /// (unless the program changed its uid: see `home_pid`).
    child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    err: Arc<Mutex<Vec<u8>>>,
    /// The program's pid in n1, when it runs as another user: the waiter's death
    /// signal does not reach it, so it is killed by this pid.
    home_pid: Option<i32>,
    cluster_dir: PathBuf,
    status: Option<ExitStatus>,
}

impl Spawned {
    fn start(what: String, mut cmd: Command, stdin: bool, cluster_dir: PathBuf) -> Result<Spawned> {
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("piped stdout");
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&err);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match err_pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => sink.lock().expect("stderr buffer").extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
        Ok(Spawned { what, child, stdin, lines, err, home_pid: None, cluster_dir, status: None })
    }

    pub(crate) fn stderr_tail(&self) -> String {
        let buf = self.err.lock().expect("stderr buffer");
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim();
        if text.is_empty() {
            return "(nothing on stderr)".into();
        }
        let start = text.char_indices().rev().nth(1500).map_or(0, |(i, _)| i);
        format!("stderr: {}", &text[start..])
    }

    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// The next line it prints, within `limit`.
    pub(crate) fn line(&mut self, limit: Duration) -> Result<String> {
        match self.lines.recv_timeout(limit) {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => bail!("{}: no answer within {limit:?}; {}", self.what, self.stderr_tail()),
            Err(RecvTimeoutError::Disconnected) => {
                let deadline = Instant::now() + Duration::from_secs(2);
                while self.exited().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let how = self.status.map_or_else(|| "closed its output".to_string(), |s| format!("ended ({s})"));
                bail!("{} {how}; {}", self.what, self.stderr_tail())
            }
        }
    }

    /// The next line, which must start with `prefix`.
    pub(crate) fn expect(&mut self, prefix: &str, limit: Duration) -> Result<String> {
        let line = self.line(limit)?;
        if !line.starts_with(prefix) {
            bail!("{}: expected a line starting {prefix:?}, got {line:?}; {}", self.what, self.stderr_tail());
        }
        Ok(line)
    }

    /// Sends `command` and returns its answer, which must start with the command's
    /// first word (its answer "error ..." otherwise).
    pub(crate) fn ask(&mut self, command: &str, answer: &str) -> Result<String> {
        self.send(command)?;
        self.expect(answer, ANSWER).with_context(|| format!("command {command:?}"))
    }

    /// Sends `command` (a line) without waiting for an answer.
    pub(crate) fn send(&mut self, command: &str) -> Result<()> {
        let sent = match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(format!("{command}\n").as_bytes()).and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("its stdin is closed")),
        };
        if let Err(e) = sent {
            bail!("{}: sending {command:?}: {e}; {}", self.what, self.stderr_tail());
        }
        Ok(())
    }

    /// Closes its stdin and waits for its end.
    fn finish(&mut self) -> Result<ExitStatus> {
        self.stdin = None;
        let start = Instant::now();
        loop {
            if let Some(s) = self.exited() {
                return Ok(s);
            }
            if start.elapsed() > END {
                bail!("{} did not end within {END:?}; {}", self.what, self.stderr_tail());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Some(pid) = self.home_pid {
            // SIGKILL of the home pid also ends a copy running on another node.
            if let Ok(mut cmd) = herd_lab::node_exec(&self.cluster_dir, "n1", &["kill", "-s", "KILL", &pid.to_string()]) {
                let _ = quiet(&mut cmd);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The program under test, running under `herd run` in n1 as uid 65534.
pub(crate) struct Target {
    pub(crate) p: Spawned,
    pub(crate) pid: i32,
}

impl Target {
    /// Starts it holding `mib` MiB, waits for "ready" and until herdd lists it.
    fn start(lab: &Lab, mib: u64) -> Result<Target> {
        Self::start_with_threads(lab, mib, 1)
    }

    /// [`Target::start`] with `threads` threads in all (the others wait for work).
    fn start_with_threads(lab: &Lab, mib: u64, threads: usize) -> Result<Target> {
        Self::start_run(lab, mib, threads, &[])
    }

    /// [`Target::start_with_threads`] with `run_args` for `herd run`.
    pub(crate) fn start_run(lab: &Lab, mib: u64, threads: usize, run_args: &[&str]) -> Result<Target> {
        let mut argv: Vec<OsString> = vec![lab.setpriv.clone().into_os_string()];
        argv.extend(nobody_args().map(OsString::from));
        argv.extend([lab.herd.clone().into_os_string(), "run".into()]);
        argv.extend(run_args.iter().map(OsString::from));
        argv.extend(["--".into(), lab.target.clone().into_os_string()]);
        argv.push(mib.to_string().into());
        argv.push(threads.to_string().into());
        let what = format!("hb_target {mib} {threads} (herd run in n1)");
        let mut p = Spawned::start(what, lab.node_cmd("n1", argv)?, true, lab.work.path.clone())?;
        let first = p.expect("pid ", ANSWER)?;
        let pid: i32 = first["pid ".len()..].trim().parse().with_context(|| format!("{}: bad first line {first:?}", p.what))?;
        p.home_pid = Some(pid);
        // Filling 2 GiB takes about a second; more on a busy machine.
        p.expect("ready", ANSWER + Duration::from_secs(mib / 16))?;
        let t = Target { p, pid };
        t.wait_adopted(lab)?;
        Ok(t)
    }

    /// `herd run` asks herdd to adopt the process once it runs: wait for that.
    fn wait_adopted(&self, lab: &Lab) -> Result<()> {
        let start = Instant::now();
        loop {
            let rows = Client::connect(&lab.cluster.node_socket("n1")).and_then(|mut c| c.call(&Request::Processes));
            if let Ok(Response::Processes(rows)) = &rows {
                if rows.iter().any(|r| r.pid == self.pid) {
                    return Ok(());
                }
            }
            if start.elapsed() > ADOPT {
                // Not fatal: what does not need a move is still measured; the first
                // move will fail and say why.
                eprintln!(
                    "herd-bench: warning: herdd of n1 does not list process {} within {ADOPT:?} (answer: {rows:?}); {}",
                    self.pid,
                    self.p.stderr_tail()
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// It runs on `node` (n1's herdd says so).
    fn expect_on(&self, lab: &Lab, node: &str) -> Result<()> {
        let rows = Client::connect(&lab.cluster.node_socket("n1")).and_then(|mut c| c.call(&Request::Processes)).map_err(|e| anyhow!("herd ps: {e}"))?;
        match rows {
            Response::Processes(rows) => match rows.iter().find(|r| r.pid == self.pid) {
                Some(r) if r.where_ == node => Ok(()),
                Some(r) => bail!("process {} runs on {}, not on {node}", self.pid, r.where_),
                None => bail!("herdd of n1 does not list process {}", self.pid),
            },
            other => bail!("herd ps: herdd answered {other:?}"),
        }
    }

    /// Moves it to `target` ("n2" or "home"); it must then run on `node`.
    pub(crate) fn migrate(&self, lab: &Lab, target: &str, node: &str) -> Result<Migrated> {
        self.migrate_by(lab, target, node, None)
    }

    pub(crate) fn migrate_by(&self, lab: &Lab, target: &str, node: &str, mode: Option<MoveMode>) -> Result<Migrated> {
        let sock = lab.cluster.node_socket("n1");
        let answer = Client::connect(&sock)
            .and_then(|mut c| c.call(&Request::Migrate { pid: self.pid, target: target.into(), mode }))
            .map_err(|e| anyhow!("moving process {} to {target}: {e}", self.pid))?;
        match answer {
            Response::Migrated(m) if m.node == node => Ok(m),
            Response::Migrated(m) => bail!("moving process {} to {target}: herdd says it runs on {} now, not on {node}", self.pid, m.node),
            other => bail!("moving process {} to {target}: herdd answered {other:?}", self.pid),
        }
    }

    /// Asks it to quit and waits for the end (herd run ends as the command did).
    pub(crate) fn quit(mut self) -> Result<()> {
        if let Some(stdin) = self.p.stdin.as_mut() {
            let _ = stdin.write_all(b"quit\n");
        }
        let status = self.p.finish()?;
        if !status.success() {
            bail!("{} ended with {status}; {}", self.p.what, self.p.stderr_tail());
        }
        Ok(())
    }
}

/// `key=value` of a line the program printed.
pub(crate) fn field(line: &str, key: &str) -> Result<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no number {key}= in {line:?}"))
}

// ---------------------------------------------------------------------------
// TCP baselines (helpers run inside the nodes)
// ---------------------------------------------------------------------------

fn next_port() -> u16 {
    NEXT_PORT.fetch_add(1, Ordering::Relaxed)
}

/// MiB/s of `bytes` sent over TCP from a node to another, until the receiver has them all.
fn tcp_throughput(lab: &Lab, from: &str, to: &str, bytes: u64) -> Result<f64> {
    let port = next_port();
    let addr = SocketAddr::from((lab.cluster.node_address(to)?, port));
    let mut sink = lab.helper(to, &["__tcp-sink".into(), port.to_string()])?;
    sink.expect("listening", ANSWER)?;
    let mut source = lab.helper(from, &["__tcp-source".into(), addr.to_string(), bytes.to_string()])?;
    let line = source.expect("sent ", ANSWER)?;
    let secs = field(&line, "secs")?;
    let got = sink.expect("received ", ANSWER)?;
    if field(&got, "bytes")? as u64 != bytes {
        bail!("TCP sink in {to}: {got:?}, {bytes} bytes were sent");
    }
    source.finish()?;
    sink.finish()?;
    Ok(bytes as f64 / MIB as f64 / secs)
}

/// µs of a 1-byte TCP round trip from `from` to `to` (`n` round trips).
fn tcp_rtt(lab: &Lab, from: &str, to: &str, n: u64) -> Result<Timed> {
    let port = next_port();
    let addr = SocketAddr::from((lab.cluster.node_address(to)?, port));
    let mut pong = lab.helper(to, &["__pong".into(), port.to_string()])?;
    pong.expect("listening", ANSWER)?;
    let mut ping = lab.helper(from, &["__ping".into(), addr.to_string(), n.to_string()])?;
    let line = ping.expect("rtt ", ANSWER)?;
    ping.finish()?;
    pong.finish()?;
    Ok(Timed { mean: field(&line, "us")?, p50: field(&line, "p50")?, p99: field(&line, "p99")? })
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() > Duration::from_secs(10) => return Err(e).with_context(|| format!("connecting to {addr}")),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn listen(port: u16) -> Result<TcpStream> {
    let listener = TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("listening on TCP port {port}"))?;
    println!("listening");
    std::io::stdout().flush()?;
    let (stream, _) = listener.accept().context("accepting")?;
    Ok(stream)
}

/// `herd-bench __tcp-sink PORT`: prints "listening", takes one connection, reads it to
/// its end, answers one byte, prints "received bytes=N".
pub fn tcp_sink(port: u16) -> Result<()> {
    let mut s = listen(port)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading"),
        }
    }
    s.write_all(b"k").context("acknowledging")?;
    println!("received bytes={total}");
    Ok(())
}

/// `herd-bench __tcp-source ADDR BYTES`: sends BYTES (1 MiB writes of pseudo-random
/// data), waits for the sink's acknowledgement, prints "sent bytes=N secs=S" (from the
/// first write to the acknowledgement).
pub fn tcp_source(addr: SocketAddr, bytes: u64) -> Result<()> {
    let mut s = connect(addr)?;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let buf: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n]).context("sending")?;
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write).context("shutdown")?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).context("waiting for the sink's acknowledgement")?;
    println!("sent bytes={bytes} secs={:.6}", t.elapsed().as_secs_f64());
    Ok(())
}

/// `herd-bench __pong PORT`: prints "listening", takes one connection and sends back
/// every byte it gets until the other side closes.
pub fn pong(port: u16) -> Result<()> {
    let mut s = listen(port)?;
    s.set_nodelay(true)?;
    let mut b = [0u8; 1];
    loop {
        match s.read_exact(&mut b) {
            Ok(()) => s.write_all(&b).context("answering")?,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e).context("reading"),
        }
    }
}

/// `herd-bench __ping ADDR N`: N round trips of one byte (TCP_NODELAY) after a warm-up,
/// each timed; prints "rtt us=MEAN p50=MEDIAN p99=P99".
pub fn ping(addr: SocketAddr, n: u64) -> Result<()> {
    let mut s = connect(addr)?;
    s.set_nodelay(true)?;
    let mut b = [0u8; 1];
    let mut trip = |s: &mut TcpStream| -> Result<()> {
        s.write_all(b"p")?;
        s.read_exact(&mut b)?;
        Ok(())
    };
    for _ in 0..n.clamp(1, 1000) {
        trip(&mut s)?;
    }
    let n = n.max(1);
    let mut each = Vec::with_capacity(n as usize);
    let t = Instant::now();
    let mut last = t;
    for _ in 0..n {
        trip(&mut s)?;
        let now = Instant::now();
        each.push((now - last).as_secs_f64() * 1e6);
        last = now;
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    s.shutdown(Shutdown::Both)?;
    each.sort_by(f64::total_cmp);
    let (p50, p99) = (each[each.len() / 2], each[each.len() * 99 / 100]);
    println!("rtt us={us:.3} p50={p50:.3} p99={p99:.3}");
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 1: moving processes of N MiB
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Move {
    frozen_ms: f64,
    total_ms: f64,
    bytes: u64,
    /// TCP MiB/s n1 → n2 measured in the same repetition.
    tcp: f64,
}

impl Move {
    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / (self.total_ms / 1000.0)
    }
}

/// The moves of one size, one way of moving out, one dirtying rate.
struct Case {
    mode: MoveMode,
    dirty: Dirty,
    out: Vec<Move>,
    back: Vec<Move>,
    /// MB/s it really rewrote while moving out.
    dirtied: Vec<f64>,
}

struct SizeResult {
    mib: u64,
    reps: usize,
    cases: Vec<Case>,
    tcp: Vec<f64>,
}

fn move_size(lab: &Lab, mib: u64, cfg: &Config, tcp_bytes: u64, failures: &mut Vec<String>) -> SizeResult {
    let reps = cfg.reps;
    let mut r = SizeResult { mib, reps, cases: Vec::new(), tcp: Vec::new() };
    for &mode in &cfg.modes {
        for &dirty in &cfg.dirty {
            r.cases.push(Case { mode, dirty, out: Vec::new(), back: Vec::new(), dirtied: Vec::new() });
        }
    }
    let label = size_label(mib);
    let bytes = mib * MIB;
    let result = (|| -> Result<()> {
        let mut target = Target::start(lab, mib).context("starting the process")?;
        for rep in 1..=reps {
            let tcp = match tcp_throughput(lab, "n1", "n2", tcp_bytes) {
                Ok(t) => {
                    r.tcp.push(t);
                    t
                }
                Err(e) => {
                    eprintln!("{label:>8} rep {rep}/{reps}: TCP baseline FAILED: {e:#}");
                    failures.push(format!("{label} rep {rep}: TCP baseline: {e:#}"));
                    f64::NAN
                }
            };
            // Interleaved: every case once per repetition.
            for case in &mut r.cases {
                sys::warm_up(bytes);
                let rate = match case.dirty {
                    Dirty::Idle => None,
                    Dirty::Rate(n) => Some(n),
                    Dirty::Max => Some(0),
                };
                if let Some(n) = rate {
                    target.p.send(&format!("dirty {n}"))?;
                    // Let it reach its pace first.
                    std::thread::sleep(Duration::from_millis(300));
                }
                let what = format!("rep {rep}, n1 -> n2 by {}, dirtying {}", case.mode, case.dirty);
                let m = target.migrate_by(lab, "n2", "n2", Some(case.mode)).with_context(|| what.clone())?;
                if rate.is_some() {
                    let line = target.p.ask("ping", "dirtied ").with_context(|| what.clone())?;
                    case.dirtied.push(field(&line, "mb")? / field(&line, "secs")?);
                    target.p.expect("pong", ANSWER).with_context(|| what.clone())?;
                }
                case.out.push(Move { frozen_ms: m.frozen_ms, total_ms: m.total_ms, bytes: m.bytes, tcp });
                // Untimed: it answers from n2 (its stdin and stdout are at home).
                target.p.ask("ping", "pong").with_context(|| format!("rep {rep}, on n2"))?;
                sys::warm_up(bytes);
                // Home by the same mode as the move out.
                let b = target.migrate_by(lab, "home", "n1", Some(case.mode)).with_context(|| format!("rep {rep}, n2 -> home by {}", case.mode))?;
                case.back.push(Move { frozen_ms: b.frozen_ms, total_ms: b.total_ms, bytes: b.bytes, tcp });
                target.p.ask("ping", "pong").with_context(|| format!("rep {rep}, back home"))?;
                eprintln!(
                    "{label:>8} rep {rep}/{reps} {} dirty {}: TCP {tcp:.0} MiB/s; n1->n2 frozen {:.1} ms, total {:.1} ms, {:.1} MiB; \
                     n2->home frozen {:.1} ms, total {:.1} ms, {:.1} MiB",
                    case.mode,
                    case.dirty,
                    m.frozen_ms,
                    m.total_ms,
                    m.bytes as f64 / MIB as f64,
                    b.frozen_ms,
                    b.total_ms,
                    b.bytes as f64 / MIB as f64
                );
            }
        }
        let line = target.p.ask("check", "checked ")?;
        if field(&line, "bad")? != 0.0 {
            bail!("its memory differs from what it wrote after {reps} round trips: {line}");
        }
        target.quit()
    })();
    if let Err(e) = result {
        eprintln!("{label:>8}: FAILED: {e:#}\n{}", lab.logs());
        failures.push(format!("{label}: {e:#}"));
    }
    r
}

// ---------------------------------------------------------------------------
// Parts 2 and 3: forwarded system calls and CPU-bound work (one small process)
// ---------------------------------------------------------------------------

/// One repetition of parts 2 and 3; `None` where a step did not run or failed.
#[derive(Clone, Copy, Debug, Default)]
struct Rep {
    /// Whether the remote measurements came first this time.
    remote_first: bool,
    /// Mean µs of a TCP round trip n2 → n1.
    rtt: Option<Timed>,
    home_calls: Option<Calls>,
    remote_calls: Option<Calls>,
    /// Seconds of the CPU work.
    home_cpu: Option<f64>,
    remote_cpu: Option<f64>,
}

struct Small {
    reps: Vec<Rep>,
    /// Rounds of the CPU work (calibrated at home).
    iters: u64,
    out: Vec<Migrated>,
    back: Vec<Migrated>,
}

/// µs per call or round trip: mean, median, 99th percentile.
#[derive(Clone, Copy, Debug)]
struct Timed {
    mean: f64,
    p50: f64,
    p99: f64,
}

/// write, getppid, fcntl.
type Calls = [Timed; 3];

/// `NAME_us`, `NAME_p50`, `NAME_p99` of an answer line.
fn timed(line: &str, name: &str) -> Result<Timed> {
    Ok(Timed { mean: field(line, &format!("{name}_us"))?, p50: field(line, &format!("{name}_p50"))?, p99: field(line, &format!("{name}_p99"))? })
}

/// Runs the system call and CPU measurements where the process is now.
fn measure(t: &mut Target, calls: Option<u64>, iters: Option<u64>) -> Result<(Option<Calls>, Option<f64>)> {
    let mut c = None;
    if let Some(n) = calls {
        let line = t.p.ask(&format!("calls {n}"), "calls ")?;
        c = Some([timed(&line, "write")?, timed(&line, "getppid")?, timed(&line, "fcntl")?]);
    }
    let mut secs = None;
    if let Some(n) = iters {
        let line = t.p.ask(&format!("cpu {n}"), "cpu ")?;
        secs = Some(field(&line, "secs")?);
    }
    Ok((c, secs))
}

fn calls_and_cpu(lab: &Lab, cfg: &Config, failures: &mut Vec<String>) -> Small {
    let calls = cfg.parts.contains(&Part::Syscalls).then_some(cfg.calls);
    let cpu = cfg.parts.contains(&Part::Cpu);
    let mut s = Small { reps: Vec::new(), iters: 0, out: Vec::new(), back: Vec::new() };
    let result = (|| -> Result<()> {
        let mut t = Target::start(lab, 0).context("starting the process")?;
        let mut iters = None;
        if cpu {
            let mut best = f64::INFINITY;
            for _ in 0..2 {
                let line = t.p.ask(&format!("cpu {CALIBRATE_ITERS}"), "cpu ")?;
                best = best.min(field(&line, "secs")?);
            }
            s.iters = (CALIBRATE_ITERS as f64 * cfg.cpu_secs / best.max(1e-6)).round().max(1.0) as u64;
            iters = Some(s.iters);
        }
        let mut movable = true;
        for rep in 1..=cfg.reps {
            // Alternate the order, so that a drift of the machine favours neither side.
            let mut r = Rep { remote_first: rep % 2 == 0, ..Rep::default() };
            if let Some(n) = calls {
                match tcp_rtt(lab, "n2", "n1", n) {
                    Ok(us) => r.rtt = Some(us),
                    Err(e) => {
                        eprintln!("rep {rep}/{}: TCP ping-pong FAILED: {e:#}", cfg.reps);
                        failures.push(format!("system calls rep {rep}: TCP ping-pong: {e:#}"));
                    }
                }
            }
            if !r.remote_first || !movable {
                (r.home_calls, r.home_cpu) = measure(&mut t, calls, iters)?;
            }
            if movable {
                match t.migrate(lab, "n2", "n2") {
                    Ok(m) => {
                        s.out.push(m);
                        (r.remote_calls, r.remote_cpu) = measure(&mut t, calls, iters).context("on n2")?;
                        // It is not at home if this fails: nothing to measure at home then.
                        s.back.push(t.migrate(lab, "home", "n1").with_context(|| format!("rep {rep}"))?);
                    }
                    Err(e) => {
                        eprintln!("rep {rep}/{}: FAILED: {e:#}\n{}", cfg.reps, lab.logs());
                        failures.push(format!(
                            "system calls / CPU rep {rep}: {e:#} (the process stayed home; the other repetitions measure it at home only)"
                        ));
                        movable = false;
                    }
                }
                if r.remote_first {
                    (r.home_calls, r.home_cpu) = measure(&mut t, calls, iters)?;
                }
            }
            let show = |v: Option<f64>, unit: &str| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3} {unit}"));
            eprintln!(
                "rep {rep}/{}: write home {} remote {}; getppid home {} remote {}; fcntl home {} remote {}; TCP RTT {}; cpu home {} remote {}",
                cfg.reps,
                show(r.home_calls.map(|c| c[0].mean), "us"),
                show(r.remote_calls.map(|c| c[0].p50), "us p50"),
                show(r.home_calls.map(|c| c[1].mean), "us"),
                show(r.remote_calls.map(|c| c[1].p50), "us p50"),
                show(r.home_calls.map(|c| c[2].mean), "us"),
                show(r.remote_calls.map(|c| c[2].p50), "us p50"),
                show(r.rtt.map(|t| t.p50), "us p50"),
                show(r.home_cpu, "s"),
                show(r.remote_cpu, "s"),
            );
            s.reps.push(r);
        }
        t.quit()
    })();
    if let Err(e) = result {
        eprintln!("system calls / CPU: FAILED: {e:#}\n{}", lab.logs());
        failures.push(format!("system calls / CPU: {e:#}"));
    }
    s
}

// ---------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------

/// Prints rows as aligned columns: the first `left` left-aligned, the others right-aligned.
pub(crate) fn print_table(rows: &[Vec<String>], left: usize) {
    for line in table_lines(rows, left) {
        println!("{line}");
    }
}

fn table_lines(rows: &[Vec<String>], left: usize) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width = |i: usize| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols).map(width).collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, cell)| if i < left { format!("{cell:<w$}", w = widths[i]) } else { format!("{cell:>w$}", w = widths[i]) })
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

pub(crate) fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

pub(crate) fn fmt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".into(),
    }
}

pub(crate) fn med(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    median(values.into_iter().filter(|v| v.is_finite()).collect())
}

pub(crate) fn spread(values: impl IntoIterator<Item = f64>, decimals: usize) -> String {
    let v: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    if v.is_empty() {
        return "-".into();
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.decimals$}-{hi:.decimals$}")
}

fn reps_text(n: usize, suffix: &str) -> String {
    format!("{n} repetition{}{suffix}", if n == 1 { "" } else { "s" })
}

fn met(ratio: Option<f64>, goal: f64) -> &'static str {
    match ratio {
        Some(r) if r <= goal => "met",
        Some(_) => "NOT met",
        None => "not measured",
    }
}

fn print_moves(results: &[SizeResult], tcp_mib: u64) {
    println!();
    let reps = results.first().map_or(0, |r| r.reps);
    println!("1. Moving a process of N MiB n1 -> n2 (by each mode, idle or rewriting its memory) and back home by the same mode ({}; medians)", reps_text(reps, " per case"));
    println!();
    let mut rows = vec![row(&["size", "move", "by", "dirtying", "frozen ms", "total ms", "sent MiB", "move MiB/s", "TCP MiB/s", "move/TCP"])];
    for r in results {
        let tcp = med(r.tcp.iter().copied());
        for c in &r.cases {
            let dirty = match c.dirty {
                Dirty::Idle => "idle".to_string(),
                _ => format!("{} MB/s", fmt(med(c.dirtied.iter().copied()), 0)),
            };
            for (dir, by, dirty, moves) in
                [("n1 -> n2", c.mode.to_string(), dirty, &c.out), ("n2 -> home", c.mode.to_string(), "idle".to_string(), &c.back)]
            {
                rows.push(vec![
                    size_label(r.mib),
                    dir.into(),
                    by,
                    dirty,
                    fmt(med(moves.iter().map(|m| m.frozen_ms)), 1),
                    fmt(med(moves.iter().map(|m| m.total_ms)), 1),
                    fmt(med(moves.iter().map(|m| m.bytes as f64 / MIB as f64)), 1),
                    fmt(med(moves.iter().map(Move::mib_per_s)), 0),
                    fmt(tcp, 0),
                    fmt(med(moves.iter().map(|m| m.mib_per_s() / m.tcp)), 2),
                ]);
            }
        }
    }
    print_table(&rows, 4);
    println!();
    println!("frozen: from the freeze until the target reports the process running (post-copy: its memory follows after that);");
    println!("total: the whole move, request to answer (post-copy: until the last page is in place); both as herdd reports them.");
    println!("dirtying: the rate at which the process really rewrote its memory during the move out (`dirty R` of the program).");
    println!("sent: bytes herdd sent (pages and state); move MiB/s = sent / total; move/TCP: median of the per-repetition ratios.");
    println!(
        "TCP: {tcp_mib} MiB from herd-bench in n1 to herd-bench in n2 over the bridge (plain TCP, 1 MiB writes, until the \
         receiver has it all), once per repetition just before the moves."
    );
    let warm: Vec<String> = results.iter().map(|r| format!("{:.0} MiB", sys::warm_bytes(r.mib * MIB) as f64 / MIB as f64)).collect();
    println!("Each move was preceded by touching and freeing {} of fresh memory.", warm.join(" / "));
    println!("Spread (min-max over repetitions):");
    for r in results {
        for c in r.cases.iter().filter(|c| !c.out.is_empty()) {
            println!(
                "  {:<8} {} {}: n1 -> n2 frozen {} ms, total {} ms; n2 -> home frozen {} ms, total {} ms; TCP {} MiB/s",
                size_label(r.mib),
                c.mode,
                c.dirty,
                spread(c.out.iter().map(|m| m.frozen_ms), 1),
                spread(c.out.iter().map(|m| m.total_ms), 1),
                spread(c.back.iter().map(|m| m.frozen_ms), 1),
                spread(c.back.iter().map(|m| m.total_ms), 1),
                spread(r.tcp.iter().copied(), 0),
            );
        }
    }
}

/// Medians over the repetitions of write (0), getppid (1) or fcntl (2).
struct CallMedians {
    /// Mean µs per call at home.
    native: Option<f64>,
    /// Forwarded: mean, p50, p99 µs per call.
    mean: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    /// Forwarded p50 / TCP round trip p50 (the issue's goal), per repetition.
    ratio: Option<f64>,
}

fn call_medians(s: &Small, which: usize) -> CallMedians {
    let pick = |c: Option<Calls>| c.map(|c| c[which]);
    let remote = |f: fn(Timed) -> f64| med(s.reps.iter().filter_map(|r| pick(r.remote_calls).map(f)));
    CallMedians {
        native: med(s.reps.iter().filter_map(|r| pick(r.home_calls).map(|t| t.mean))),
        mean: remote(|t| t.mean),
        p50: remote(|t| t.p50),
        p99: remote(|t| t.p99),
        ratio: med(s.reps.iter().filter_map(|r| Some(pick(r.remote_calls)?.p50 / r.rtt?.p50))),
    }
}

fn print_syscalls(s: &Small, calls: u64) {
    println!();
    println!("2. Forwarded system calls: µs per call over {calls} calls ({}; medians)", reps_text(s.reps.len(), ""));
    println!();
    let rtt = |f: fn(Timed) -> f64| med(s.reps.iter().filter_map(|r| r.rtt.map(f)));
    let goal = format!("goal <= {FORWARD_GOAL}");
    let mut rows = vec![row(&["call", "native µs", "fwd mean µs", "fwd p50 µs", "fwd p99 µs", "TCP RTT p50 µs", "p99 µs", "p50/TCP p50", &goal])];
    for (which, name) in [(0, "write(/dev/null, 1 byte)"), (1, "getppid()"), (2, "fcntl(F_GETFD) (by the deputy)")] {
        let m = call_medians(s, which);
        rows.push(vec![
            name.into(),
            fmt(m.native, 3),
            fmt(m.mean, 2),
            fmt(m.p50, 2),
            fmt(m.p99, 2),
            fmt(rtt(|t| t.p50), 2),
            fmt(rtt(|t| t.p99), 2),
            fmt(m.ratio, 2),
            met(m.ratio, FORWARD_GOAL).into(),
        ]);
    }
    println!("TCP RTT mean {} µs.", fmt(rtt(|t| t.mean), 2));
    print_table(&rows, 1);
    println!();
    println!("native: the process at home in n1 under herd run, not moved; forwarded: the same process on n2, each call");
    println!("made at home: write and getppid by herdd itself, on the deputy's descriptor and pidfd (herd_migrate::native),");
    println!("fcntl(F_GETFD) (the descriptor's flags: the deputy's own) injected into the deputy by ptrace, as every call");
    println!("herdd does not make itself. TCP RTT: 1-byte ping-pong (TCP_NODELAY) from herd-bench in n2 to herd-bench");
    println!("in n1, {calls} round trips, in the same repetition. Each call and round trip is timed (CLOCK_MONOTONIC, vDSO);");
    println!("p50/TCP p50: median of the per-repetition ratios of the medians (the issue's goal).");
    println!("Repetitions alternate the order (home first, n2 first).");
    if !s.out.is_empty() {
        println!(
            "Moves of this process (no heap of its own): n1 -> n2 frozen {} ms, total {} ms, {} KiB sent; n2 -> home frozen {} ms, total {} ms (medians)",
            fmt(med(s.out.iter().map(|m| m.frozen_ms)), 1),
            fmt(med(s.out.iter().map(|m| m.total_ms)), 1),
            fmt(med(s.out.iter().map(|m| m.bytes as f64 / 1024.0)), 0),
            fmt(med(s.back.iter().map(|m| m.frozen_ms)), 1),
            fmt(med(s.back.iter().map(|m| m.total_ms)), 1),
        );
    }
}

/// Threads of the process for the stop-time measurement, and threads making calls at once.
const MOVE_THREADS: [usize; 3] = [1, 8, 64];
const CALL_THREADS: [usize; 3] = [1, 4, 8];

/// Part 4: a process holding the first --sizes MiB with 1, 8 and 64 threads moved n1 → n2 →
/// home (stop time), and forwarded getppid from 1, 4 and 8 threads at once, at home and on n2.
fn threads_part(lab: &Lab, cfg: &Config, failures: &mut Vec<String>) {
    let mib = cfg.sizes.first().copied().unwrap_or(64);
    let mut moves: Vec<(usize, Vec<Migrated>, Vec<Migrated>)> = Vec::new();
    for threads in MOVE_THREADS {
        let (mut out, mut back) = (Vec::new(), Vec::new());
        let r = (|| -> Result<()> {
            let t = Target::start_with_threads(lab, mib, threads)?;
            for rep in 1..=cfg.reps {
                let o = t.migrate(lab, "n2", "n2")?;
                let b = t.migrate(lab, "home", "n1")?;
                eprintln!("threads {threads}, rep {rep}/{}: n1 -> n2 frozen {:.1} ms; home frozen {:.1} ms", cfg.reps, o.frozen_ms, b.frozen_ms);
                out.push(o);
                back.push(b);
            }
            t.quit()
        })();
        if let Err(e) = r {
            eprintln!("threads {threads}: FAILED: {e:#}");
            failures.push(format!("threads part, {threads} threads: {e:#}"));
        }
        moves.push((threads, out, back));
    }
    let n = cfg.calls;
    let mut calls: Vec<(usize, Vec<f64>, Vec<f64>)> = CALL_THREADS.iter().map(|&t| (t, Vec::new(), Vec::new())).collect();
    let r = (|| -> Result<()> {
        let mut t = Target::start_with_threads(lab, 0, *CALL_THREADS.iter().max().expect("counts"))?;
        let rate = |t: &mut Target, threads: usize| -> Result<f64> {
            let line = t.p.ask(&format!("tcalls {threads} {n}"), "tcalls ")?;
            Ok((threads as u64 * n) as f64 / field(&line, "secs")?)
        };
        for rep in 1..=cfg.reps {
            for c in calls.iter_mut() {
                c.1.push(rate(&mut t, c.0)?);
            }
            t.migrate(lab, "n2", "n2")?;
            for c in calls.iter_mut() {
                c.2.push(rate(&mut t, c.0)?);
            }
            t.migrate(lab, "home", "n1")?;
            eprintln!("calls from threads, rep {rep}/{} done", cfg.reps);
        }
        t.quit()
    })();
    if let Err(e) = r {
        eprintln!("calls from threads: FAILED: {e:#}");
        failures.push(format!("threads part, calls: {e:#}"));
    }

    println!();
    println!("4. Threads: a process holding {mib} MiB with 1, 8 and 64 threads moved n1 -> n2 -> home ({}; medians)", reps_text(cfg.reps, ""));
    println!();
    let mut rows = vec![row(&["threads", "n1->n2 frozen ms", "n1->n2 total ms", "home frozen ms", "home total ms"])];
    for (threads, out, back) in &moves {
        rows.push(vec![
            threads.to_string(),
            fmt(med(out.iter().map(|m| m.frozen_ms)), 1),
            fmt(med(out.iter().map(|m| m.total_ms)), 1),
            fmt(med(back.iter().map(|m| m.frozen_ms)), 1),
            fmt(med(back.iter().map(|m| m.total_ms)), 1),
        ]);
    }
    print_table(&rows, 1);
    println!();
    println!("Forwarded getppid() from several threads at once, {n} calls each: calls per second (medians)");
    println!();
    let mut rows = vec![row(&["threads", "home calls/s", "n2 calls/s", "n2 vs 1 thread"])];
    let one = calls.first().and_then(|c| med(c.2.iter().copied()));
    for (threads, home, remote) in &calls {
        let r = med(remote.iter().copied());
        rows.push(vec![threads.to_string(), fmt(med(home.iter().copied()), 0), fmt(r, 0), fmt(r.zip(one).map(|(a, b)| a / b), 2)]);
    }
    print_table(&rows, 1);
    println!();
    println!("home: the process at home, its calls native; n2: each call forwarded to the deputy of its thread.");
    println!("The VM has {} CPUs: scaling beyond them is not expected.", std::thread::available_parallelism().map_or(0, |n| n.get()));
}

/// One repetition of the forks part: µs per fork (fork, the child's `_exit(7)`, waitpid)
/// at home and on n2, and µs per forwarded getppid() on n2 before and after its first fork
/// there (after it, the calls of the process and its children reach their guests through
/// the hub that reads the listener they share).
#[derive(Default)]
struct ForkRep {
    home_us: Option<f64>,
    remote_us: Option<f64>,
    /// posix_spawn of /bin/true (a vfork and an exec), at home and on n2.
    spawn_home_us: Option<f64>,
    spawn_remote_us: Option<f64>,
    calls_before_us: Option<f64>,
    calls_after_us: Option<f64>,
}

fn forks_part(lab: &Lab, cfg: &Config, failures: &mut Vec<String>) {
    let n = FORKS;
    let calls = cfg.calls.min(5000);
    let mut reps: Vec<ForkRep> = Vec::new();
    let r = (|| -> Result<()> {
        let mut t = Target::start(lab, 0)?;
        let forks = |t: &mut Target| -> Result<f64> { field(&t.p.ask(&format!("forks {n}"), "forks ")?, "us") };
        let spawns = |t: &mut Target| -> Result<f64> { field(&t.p.ask(&format!("spawns {n}"), "spawns ")?, "us") };
        let getppid = |t: &mut Target| -> Result<f64> { field(&t.p.ask(&format!("calls {calls}"), "calls ")?, "getppid_us") };
        // Warm up both sides once.
        forks(&mut t)?;
        spawns(&mut t)?;
        for rep in 1..=cfg.reps {
            let mut r = ForkRep::default();
            // Alternate the order, so that a drift of the machine favours neither side.
            let remote_first = rep % 2 == 0;
            if !remote_first {
                r.home_us = Some(forks(&mut t)?);
                r.spawn_home_us = Some(spawns(&mut t)?);
            }
            t.migrate(lab, "n2", "n2")?;
            r.calls_before_us = Some(getppid(&mut t)?);
            r.remote_us = Some(forks(&mut t)?);
            r.calls_after_us = Some(getppid(&mut t)?);
            r.spawn_remote_us = Some(spawns(&mut t)?);
            // Still there: every spawn and exec was made on n2.
            t.expect_on(lab, "n2")?;
            t.migrate(lab, "home", "n1")?;
            if remote_first {
                r.home_us = Some(forks(&mut t)?);
                r.spawn_home_us = Some(spawns(&mut t)?);
            }
            eprintln!(
                "forks, rep {rep}/{}: home {} µs, n2 {} µs per fork, home {} µs, n2 {} µs per spawn; getppid on n2 {} µs before its first fork, {} after",
                cfg.reps,
                fmt(r.home_us, 1),
                fmt(r.remote_us, 1),
                fmt(r.spawn_home_us, 1),
                fmt(r.spawn_remote_us, 1),
                fmt(r.calls_before_us, 1),
                fmt(r.calls_after_us, 1)
            );
            reps.push(r);
        }
        t.quit()
    })();
    if let Err(e) = r {
        eprintln!("forks: FAILED: {e:#}");
        failures.push(format!("forks part: {e:#}"));
    }
    println!();
    println!("6. Forks: {n} forks of a small process (the child _exit(7)s, the parent waits for it), and {n} posix_spawns of /bin/true, at home and on n2");
    println!();
    let mut rows = vec![row(&["rep", "home µs/fork", "n2 µs/fork", "home forks/s", "n2 forks/s", "n2/home", "home µs/spawn", "n2 µs/spawn", "spawns n2/home", "n2 getppid µs before", "after"])];
    let rate = |us: Option<f64>| us.map(|u| 1e6 / u);
    for (i, r) in reps.iter().enumerate() {
        let ratio = r.home_us.zip(r.remote_us).map(|(h, n)| h / n);
        rows.push(vec![
            (i + 1).to_string(),
            fmt(r.home_us, 1),
            fmt(r.remote_us, 1),
            fmt(rate(r.home_us), 0),
            fmt(rate(r.remote_us), 0),
            fmt(ratio, 3),
            fmt(r.spawn_home_us, 1),
            fmt(r.spawn_remote_us, 1),
            fmt(r.spawn_home_us.zip(r.spawn_remote_us).map(|(h, n)| h / n), 3),
            fmt(r.calls_before_us, 1),
            fmt(r.calls_after_us, 1),
        ]);
    }
    let ratio = med(reps.iter().filter_map(|r| Some(r.home_us? / r.remote_us?)));
    let home = med(reps.iter().filter_map(|r| r.home_us));
    let remote = med(reps.iter().filter_map(|r| r.remote_us));
    rows.push(vec![
        "median".into(),
        fmt(home, 1),
        fmt(remote, 1),
        fmt(rate(home), 0),
        fmt(rate(remote), 0),
        fmt(ratio, 3),
        fmt(med(reps.iter().filter_map(|r| r.spawn_home_us)), 1),
        fmt(med(reps.iter().filter_map(|r| r.spawn_remote_us)), 1),
        fmt(med(reps.iter().filter_map(|r| Some(r.spawn_home_us? / r.spawn_remote_us?))), 3),
        fmt(med(reps.iter().filter_map(|r| r.calls_before_us)), 1),
        fmt(med(reps.iter().filter_map(|r| r.calls_after_us)), 1),
    ]);
    print_table(&rows, 1);
    println!();
    println!("n2/home: forks per second on n2 over those at home (median of the per-repetition ratios); goal >= {FORK_GOAL}: {}.", match ratio {
        Some(r) if r >= FORK_GOAL => "met",
        Some(_) => "NOT met",
        None => "not measured",
    });
    println!("On n2 each fork makes the child there and its deputy at home (a fork of the parent's deputy), opens the child's");
    println!("stream and runs it; the child's end is reproduced by its deputy, whose parent the wait runs in. A spawn on n2 is a vfork");
    println!("made there (the child shares the parent's memory) and an exec made there (home says what /bin/true is; the deputy closes");
    println!("its close-on-exec descriptors); the process is checked still on n2 after them. getppid before/after:");
    println!("{calls} forwarded calls before its first fork on n2 and after it (a hub thread hands the calls on from then).");
}

fn cpu_ratio(s: &Small) -> Option<f64> {
    med(s.reps.iter().filter_map(|r| Some(r.remote_cpu? / r.home_cpu?)))
}

fn print_cpu(s: &Small) {
    println!();
    println!("3. CPU-bound work: {} rounds of dependent integer arithmetic (no system call), at home and on n2", s.iters);
    println!();
    let mut rows = vec![row(&["rep", "first", "home s", "n2 s", "n2/home"])];
    for (i, r) in s.reps.iter().enumerate() {
        let ratio = r.remote_cpu.zip(r.home_cpu).map(|(a, b)| a / b);
        rows.push(vec![
            (i + 1).to_string(),
            if r.remote_first { "n2" } else { "home" }.into(),
            fmt(r.home_cpu, 3),
            fmt(r.remote_cpu, 3),
            fmt(ratio, 3),
        ]);
    }
    let ratio = cpu_ratio(s);
    rows.push(vec![
        "median".into(),
        String::new(),
        fmt(med(s.reps.iter().filter_map(|r| r.home_cpu)), 3),
        fmt(med(s.reps.iter().filter_map(|r| r.remote_cpu)), 3),
        fmt(ratio, 3),
    ]);
    print_table(&rows, 2);
    println!();
    println!("Wall-clock seconds measured by the process itself (CLOCK_MONOTONIC); the rounds were calibrated at home to");
    println!("about the asked-for time. n2/home: median of the per-repetition ratios; goal <= {CPU_GOAL}: {}.", met(ratio, CPU_GOAL));
}

fn print_goals(s: &Small, cfg: &Config) {
    println!();
    println!("Goals:");
    if cfg.parts.contains(&Part::Syscalls) {
        for (which, name) in [(0, "write"), (1, "getppid"), (2, "fcntl (by the deputy)")] {
            let ratio = call_medians(s, which).ratio;
            println!("  forwarded {name} p50 <= {FORWARD_GOAL} x TCP round trip p50: {} ({})", fmt(ratio, 2), met(ratio, FORWARD_GOAL));
        }
    }
    if cfg.parts.contains(&Part::Cpu) {
        let ratio = cpu_ratio(s);
        println!("  CPU-bound work on n2 <= {CPU_GOAL} x at home: {} ({})", fmt(ratio, 3), met(ratio, CPU_GOAL));
    }
}

/// The program under test (see the comment at its top).
const TARGET_C: &str = r##"
/* The process that `herd-bench migrate` moves between nodes (compiled at run
 * time with gcc; see migrate.rs).
 *
 *   hb_target probe   prints "ok" and exits (can uid 65534 run it?)
 *   hb_target spin N  N rounds of the "cpu" work below, prints "spin x=... cpu=S" (its
 *                     CPU time, seconds: since it last arrived when it moved) and exits
 *   hb_target MIB [THREADS]
 *                     prints "pid N" (its pid: the home pid), allocates MIB
 *                     MiB and writes pseudo-random words into all of it (no
 *                     page is zero, nothing compresses or repeats), prints
 *                     "ready", then serves one command per line on stdin:
 *
 *   ping              "pong"
 *   calls N           times N write(fd of /dev/null, 1 byte), N getppid() and
 *                     N fcntl(that fd, F_GETFD), each call with clock_gettime:
 *                     "calls write_us=X write_p50=P write_p99=Q getppid_us=..."
 *                     (microseconds per call: mean, median, 99th percentile)
 *   cpu N             N rounds of dependent integer work, no system call:
 *                     "cpu secs=S x=..." (wall-clock seconds)
 *   cpu N R           the same work, rewriting its memory meanwhile at R MB/s
 *                     (the same values, from the start, wrapping; checked every
 *                     2^20 rounds), then the rest of that pass: "cpu secs=S x=..." 
 *   check             compares its memory with what it wrote:
 *                     "checked pages=P bad=B"
 *   dirty R           rewrites its memory (the same values, from the start,
 *                     wrapping) at R MB/s (0: as fast as it can) until the next
 *                     line arrives on stdin (looked for every 16 MiB), then
 *                     answers "dirtied mb=M secs=S" and reads that line as a
 *                     command
 *   tcalls T N        T threads (the main one and T-1 of the THREADS-1 started at
 *                     the beginning, which wait for work) each make N getppid()
 *                     at once: "tcalls threads=T secs=S" (wall-clock seconds)
 *   forks N           N times: fork, the child _exit(7)s, waitpid checks it:
 *                     "forks us=X" (mean microseconds per fork)
 *   spawns N          N times: posix_spawn of /bin/true (glibc: clone3 with
 *                     CLONE_VM|CLONE_VFORK, then execve), waitpid checks its exit 0:
 *                     "spawns us=X" (mean microseconds per spawn)
 *   quit, or EOF      exits 0
 *
 * Errors are answered "error ...", so the bench never waits for nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define SEED 0x243F6A8885A308D3ULL

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* N calls of one kind (0: write(fd, 1 byte), 1: getppid, 2: fcntl(fd, F_GETFD)), each
 * timed from the end of the one before (one clock read per call, vDSO): mean, p50 and
 * p99 in microseconds. 0, or the errno of a failed call. */
static int timed_calls(int which, int fd, unsigned long long n, double *d, double *mean, double *p50, double *p99)
{
    char c = 'x';
    double t0 = now(), t = t0;
    for (unsigned long long i = 0; i < n; i++) {
        long r = which == 0 ? (long)write(fd, &c, 1) : which == 1 ? syscall(SYS_getppid) : (long)fcntl(fd, F_GETFD);
        if (r < 0 || (which == 0 && r != 1) || (which == 1 && r == 0))
            return errno ? errno : EIO;
        double u = now();
        d[i] = u - t;
        t = u;
    }
    *mean = (t - t0) * 1e6 / (double)n;
    qsort(d, n, sizeof *d, cmp_double);
    *p50 = d[n / 2] * 1e6;
    *p99 = d[(n * 99) / 100] * 1e6;
    return 0;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* xorshift64*: never zero, no repetition within any size we use. */
static inline uint64_t next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Workers for "tcalls": each waits for a round, makes its share of calls. */
static pthread_mutex_t work_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER, done_cv = PTHREAD_COND_INITIALIZER;
static unsigned long long round_no, calls_each;
static int active, done_count;

static void getppid_n(unsigned long long n)
{
    for (unsigned long long i = 0; i < n; i++)
        syscall(SYS_getppid);
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    unsigned long long seen = 0;
    for (;;) {
        pthread_mutex_lock(&work_lock);
        while (round_no == seen)
            pthread_cond_wait(&work_cv, &work_lock);
        seen = round_no;
        int mine = id < active;
        unsigned long long n = calls_each;
        pthread_mutex_unlock(&work_lock);
        if (mine)
            getppid_n(n);
        pthread_mutex_lock(&work_lock);
        if (mine && ++done_count == active - 1)
            pthread_cond_signal(&done_cv);
        pthread_mutex_unlock(&work_lock);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "probe") == 0) {
        puts("ok");
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "spin") == 0) {
        uint64_t x = SEED;
        for (unsigned long long i = 0, n = strtoull(argv[2], NULL, 10); i < n; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            x ^= x >> 29;
        }
        struct timespec cpu;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
        printf("spin x=%016llx cpu=%.3f\n", (unsigned long long)x, (double)cpu.tv_sec + cpu.tv_nsec / 1e9);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "write") == 0) {
        /* N MiB to a new file by 32 KiB writes, then fsync (the files part). */
        static unsigned char block[32768];
        for (size_t i = 0; i < sizeof block; i++)
            block[i] = (unsigned char)(i * 131 + 7);
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "open %s: %s\n", argv[2], strerror(errno));
            return 1;
        }
        unsigned long long n = strtoull(argv[3], NULL, 10) * 32;
        for (unsigned long long i = 0; i < n; i++) {
            block[0] = (unsigned char)i;
            if (write(fd, block, sizeof block) != (ssize_t)sizeof block) {
                fprintf(stderr, "write %s: %s\n", argv[2], strerror(errno));
                return 1;
            }
        }
        if (fsync(fd) != 0 || close(fd) != 0) {
            fprintf(stderr, "fsync %s: %s\n", argv[2], strerror(errno));
            return 1;
        }
        printf("wrote %llu\n", n * sizeof block);
        return 0;
    }
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: hb_target MIB [THREADS] | probe | spin N | write FILE MIB\n");
        return 64;
    }
    int threads = argc == 3 ? atoi(argv[2]) : 1;
    for (int i = 1; i < threads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "cannot start thread %d\n", i);
            return 1;
        }
    }
    /* Only what herd-bench gave it: stdin, stdout, stderr. */
    syscall(SYS_close_range, 3U, ~0U, 0U);
    say("pid %d", (int)getpid());

    size_t mib = strtoull(argv[1], NULL, 10);
    size_t words = (mib << 20) / sizeof(uint64_t);
    uint64_t *mem = NULL;
    if (words) {
        mem = malloc(words * sizeof(uint64_t));
        if (!mem) {
            say("error malloc of %zu MiB failed", mib);
            return 1;
        }
        uint64_t s = SEED;
        for (size_t i = 0; i < words; i++)
            mem[i] = next(&s);
    }
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull < 0) {
        say("error open /dev/null: %s", strerror(errno));
        return 1;
    }
    say("ready");

    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        unsigned long long n = 0, r = 0;
        if (strcmp(line, "ping\n") == 0) {
            say("pong");
        } else if (sscanf(line, "calls %llu", &n) == 1 && n > 0) {
            static const char *names[3] = {"write", "getppid", "fcntl"};
            char out[512];
            size_t len = 0;
            double *d = malloc(n * sizeof *d);
            if (!d) {
                say("error no memory for %llu timings", n);
                continue;
            }
            for (int which = 0; which < 3; which++) {
                double mean, p50, p99;
                int err = timed_calls(which, devnull, n, d, &mean, &p50, &p99);
                if (err) {
                    say("error %s: %s", names[which], strerror(err));
                    free(d);
                    goto next_command;
                }
                len += (size_t)snprintf(out + len, sizeof out - len, " %s_us=%.4f %s_p50=%.4f %s_p99=%.4f", names[which], mean, names[which], p50, names[which], p99);
            }
            free(d);
            say("calls%s", out);
        } else if (sscanf(line, "forks %llu", &n) == 1 && n > 0) {
            double t0 = now();
            for (unsigned long long i = 0; i < n; i++) {
                pid_t p = fork();
                if (p == 0)
                    _exit(7);
                int st = 0;
                if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 7) {
                    say("error fork %llu: pid %d status %#x: %s", i, (int)p, st, strerror(errno));
                    goto next_command;
                }
            }
            say("forks us=%.2f", (now() - t0) * 1e6 / (double)n);
        } else if (sscanf(line, "spawns %llu", &n) == 1 && n > 0) {
            extern char **environ;
            char *argv[] = {"true", NULL};
            double t0 = now();
            for (unsigned long long i = 0; i < n; i++) {
                pid_t p = -1;
                int err = posix_spawn(&p, "/bin/true", NULL, NULL, argv, environ);
                int st = 0;
                if (err != 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                    say("error spawn %llu: pid %d status %#x: %s", i, (int)p, st, strerror(err ? err : errno));
                    goto next_command;
                }
            }
            say("spawns us=%.2f", (now() - t0) * 1e6 / (double)n);
        } else if (sscanf(line, "tcalls %d %llu", &active, &n) == 2 && n > 0) {
            if (active < 1 || active > threads) {
                say("error tcalls wants 1 to %d threads", threads);
                continue;
            }
            double t0 = now();
            pthread_mutex_lock(&work_lock);
            done_count = 0;
            calls_each = n;
            round_no++;
            pthread_cond_broadcast(&work_cv);
            pthread_mutex_unlock(&work_lock);
            getppid_n(n);
            pthread_mutex_lock(&work_lock);
            while (done_count < active - 1)
                pthread_cond_wait(&done_cv, &work_lock);
            pthread_mutex_unlock(&work_lock);
            say("tcalls threads=%d secs=%.6f", active, now() - t0);
        } else if (sscanf(line, "cpu %llu %llu", &n, &r) == 2 && n > 0 && words) {
            uint64_t x = SEED, s = SEED;
            size_t i = 0;
            double t0 = now(), rate = (double)r * 1e6, written = 0;
            for (unsigned long long k = 0; k < n; k++) {
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                x ^= x >> 29;
                if ((k & 0xFFFFF) == 0) {
                    double due = rate * (now() - t0);
                    for (; written < due; written += PAGE) {
                        for (size_t j = 0; j < PAGE / sizeof(uint64_t); j++) {
                            mem[i] = next(&s);
                            if (++i == words) {
                                i = 0;
                                s = SEED;
                            }
                        }
                    }
                }
            }
            while (i != 0) {
                mem[i] = next(&s);
                if (++i == words)
                    i = 0;
            }
            say("cpu secs=%.6f x=%016llx", now() - t0, (unsigned long long)x);
        } else if (sscanf(line, "cpu %llu", &n) == 1 && n > 0) {
            uint64_t x = SEED;
            double t0 = now();
            for (unsigned long long i = 0; i < n; i++) {
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                x ^= x >> 29;
            }
            double t1 = now();
            say("cpu secs=%.6f x=%016llx", t1 - t0, (unsigned long long)x);
        } else if (strcmp(line, "check\n") == 0) {
            uint64_t s = SEED;
            size_t per_page = PAGE / sizeof(uint64_t), bad = 0;
            for (size_t i = 0; i < words; i += per_page) {
                int ok = 1;
                for (size_t j = i; j < i + per_page && j < words; j++)
                    if (mem[j] != next(&s))
                        ok = 0;
                bad += !ok;
            }
            say("checked pages=%zu bad=%zu", (words + per_page - 1) / per_page, bad);
        } else if (sscanf(line, "dirty %llu", &n) == 1 && words) {
            double rate = (double)n * 1e6, t0 = now(), bytes = 0;
            uint64_t s = SEED;
            size_t i = 0, chunk = (16u << 20) / sizeof(uint64_t);
            struct pollfd in = {.fd = 0, .events = POLLIN};
            for (;;) {
                for (size_t k = 0; k < chunk; k++) {
                    mem[i] = next(&s);
                    if (++i == words) {
                        i = 0;
                        s = SEED;
                    }
                }
                bytes += (double)chunk * sizeof(uint64_t);
                if (rate > 0) {
                    double ahead = bytes / rate - (now() - t0);
                    if (ahead > 0) {
                        struct timespec ts = {(time_t)ahead, (long)((ahead - (double)(time_t)ahead) * 1e9)};
                        nanosleep(&ts, NULL);
                    }
                }
                if (poll(&in, 1, 0) > 0)
                    break;
            }
            /* The rest of the pass, so that the memory holds its values again. */
            while (i != 0) {
                mem[i] = next(&s);
                if (++i == words)
                    i = 0;
            }
            say("dirtied mb=%.1f secs=%.3f", bytes / 1e6, now() - t0);
        } else if (strcmp(line, "quit\n") == 0) {
            return 0;
        } else {
            line[strcspn(line, "\n")] = 0;
            say("error unknown command \"%s\"", line);
        }
    next_command:;
    }
    return 0;
}
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_program_lines() {
        assert_eq!(field("calls write_us=12.5000 getppid_us=3.2500", "getppid_us").unwrap(), 3.25);
        assert_eq!(field("cpu secs=2.500000 x=00ff", "secs").unwrap(), 2.5);
        assert!(field("cpu secs=2.5", "x").is_err());
        assert_eq!(field("rtt us=31.250", "us").unwrap(), 31.25);
    }

    #[test]
    fn tables_line_up() {
        let lines = table_lines(&[row(&["call", "native µs", "x"]), row(&["getppid()", "0.1", "met"])], 1);
        assert_eq!(lines[0], "call       native µs    x");
        assert_eq!(lines[1], "getppid()        0.1  met");
        let lines = table_lines(&[row(&["size", "move", "ms"]), row(&["64 MiB", "n2 -> home", "1.5"])], 2);
        assert_eq!(lines[0], "size    move         ms");
        assert_eq!(lines[1], "64 MiB  n2 -> home  1.5");
    }

    #[test]
    fn goals() {
        assert_eq!(met(Some(1.4), FORWARD_GOAL), "met");
        assert_eq!(met(Some(1.7), FORWARD_GOAL), "NOT met");
        assert_eq!(met(None, CPU_GOAL), "not measured");
        assert_eq!(fmt(Some(f64::NAN), 2), "-");
        assert_eq!(med([1.0, f64::NAN, 3.0]), Some(2.0));
    }

    #[test]
    fn the_program_compiles() {
        let Some(cc) = ["gcc", "cc"].into_iter().find(|cc| quiet(Command::new(cc).arg("--version")).is_ok_and(|s| s.success())) else {
            return;
        };
        let dir = std::env::temp_dir().join(format!("hb-target-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = build_target(cc, &dir).unwrap();
        let mut child = Command::new(&exe).arg("1").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"ping\ncalls 100\ncpu 1000\ncheck\nquit\n").unwrap();
        let out = child.wait_with_output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(out.status.success());
        assert!(lines[0].starts_with("pid "), "{text}");
        assert_eq!(lines[1], "ready");
        assert_eq!(lines[2], "pong");
        assert!(field(lines[3], "getppid_us").is_ok(), "{text}");
        assert!(field(lines[4], "secs").is_ok(), "{text}");
        assert_eq!(lines[5], "checked pages=256 bad=0");
    }
}
