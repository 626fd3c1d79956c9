//! `herd demo`: a local cluster balances CPU-bound jobs while the user watches.
//!
//! It brings up a local cluster (herd-lab's [`LocalCluster`]: n1..nN, each with a cpuset
//! of its own when the machine allows it), starts `--jobs` CPU-bound jobs on n1 with
//! `herd run`, shows every half second (or second, when stdout is not a terminal) which
//! node each job runs on and each node's load, then runs the same jobs again locked on
//! n1 (`herd run --lock`) and compares: the time of each run, the number of moves
//! (`herd ps` NMIGS), and each job's output, which must be the same in both runs, with
//! exit status 0. The cluster is taken down at the end, on any error and on Ctrl-C
//! (SIGINT, SIGTERM, SIGHUP), and checked to be gone.
//!
//! The jobs run as nobody (uid 65534, through setpriv) when the demo runs as root: herdd
//! does not move root's processes (allow_root_guests is off).

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use herd_daemon::control::{NodeRow, ProcessRow, Request, Response};
use herd_lab::{LabError, LocalCluster, UpOptions};

use crate::nodes::{flags, Target};

pub const LONG_ABOUT: &str = "Watch a local cluster balance CPU-bound jobs, then compare with the same jobs on one node.\n\n\
    herd demo brings up a local cluster on this machine (as `herd cluster up`: nodes n1..nN, each in namespaces of \
    its own and, where the machine allows it, a cpuset of its own), starts --jobs CPU-bound jobs on n1 with \
    `herd run`, and shows which node each runs on and each node's load while herdd's balancer spreads them. Then it \
    runs the same jobs locked on n1 (`herd run --lock`) and prints both times, the number of moves, and whether \
    every job printed the same result in both runs and exited 0. The cluster is taken down at the end, on error and \
    on Ctrl-C.\n\n\
    Run it as root: the jobs run as nobody (root's processes do not migrate), and cpusets need root. Without root \
    the cluster lives in a user namespace where your processes are root's, so the jobs stay on n1. The job is a \
    python3 sha256 loop (/usr/bin/python3), or a shell arithmetic loop without python3; --seconds sets how long \
    one job takes alone on one CPU. herdd and herd must be built side by side (cargo build --release).";

/// `herd demo` options.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// How many nodes
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=16))]
    pub nodes: u32,
    /// How many CPU-bound jobs to start on n1
    #[arg(long, value_name = "J", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// About how long one job takes alone on one CPU, seconds
    #[arg(long, value_name = "S", default_value_t = 4.0, value_parser = job_seconds)]
    pub seconds: f64,
    /// CPUs of each node's cpuset (0: no cpusets, every node has all of this machine's CPUs)
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub cpus_per_node: u32,
    /// The demo's directory: its cluster (DIR/cluster, with the job and the nodes' logs,
    /// kept if something fails) [default: /run/herd/demo as root]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

fn job_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.2..=600.0).contains(&v) {
        return Err(format!("{v} s: from 0.2 to 600 seconds"));
    }
    Ok(v)
}

// ---------------------------------------------------------------------------
// Signals: Ctrl-C (and SIGTERM, SIGHUP, a closed stdout) stop the demo, which then
// takes the cluster down.
// ---------------------------------------------------------------------------

static STOP: AtomicI32 = AtomicI32::new(0);

/// Set while the cluster comes up: `LocalCluster::up` (up to 30 s) cannot be
/// interrupted, so a signal then only says at once that the demo stops after it.
static STARTING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    let first = STOP.swap(sig, Ordering::Relaxed) == 0;
    if first && STARTING.load(Ordering::Relaxed) {
        const SAY: &[u8] = "\nstopping after start-up…\n".as_bytes();
        // SAFETY: write(2) is async-signal-safe and reads SAY, a static; errno is put
        // back for the code this handler interrupted.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(libc::STDOUT_FILENO, SAY.as_ptr().cast(), SAY.len());
            *libc::__errno_location() = errno;
        }
    }
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` only stores to an atomic (async-signal-safe); the
        // sigaction struct is fully initialised (zeroed, handler, flags, empty mask).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    // A closed stdout (`herd demo | head`) must not kill the demo before it has taken
    // the cluster down: writes fail instead, and stop it.
    // SAFETY: ignoring one signal has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

fn stopped() -> Option<i32> {
    match STOP.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

/// The demo was stopped by a signal (or its stdout closed).
#[derive(Debug)]
struct Interrupted(i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            libc::SIGINT => f.write_str("interrupted (Ctrl-C)"),
            libc::SIGPIPE => f.write_str("stdout was closed"),
            s => write!(f, "stopped by signal {s}"),
        }
    }
}

impl std::error::Error for Interrupted {}

fn check_stop() -> Result<()> {
    match stopped() {
        Some(s) => Err(Interrupted(s).into()),
        None => Ok(()),
    }
}

/// Sleeps `d`, waking early when stopped.
fn nap(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_stop()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Output: lines, and on a terminal a block redrawn in place.
struct Screen {
    tty: bool,
    /// Lines of the block drawn last (to go back over).
    drawn: usize,
}

impl Screen {
    fn say(&mut self, text: &str) {
        self.drawn = 0;
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
            STOP.store(libc::SIGPIPE, Ordering::Relaxed);
        }
    }

    /// Draws `lines` over the block drawn last (terminal), or prints them.
    fn block(&mut self, lines: &[String]) {
        let mut text = String::new();
        if self.tty && self.drawn > 0 {
            // To the start of the first line of the old block, and clear to the end.
            text += &format!("\x1b[{}F\x1b[J", self.drawn);
        }
        for l in lines {
            text += l;
            text += "\n";
        }
        let mut out = std::io::stdout().lock();
        if out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_err() {
            STOP.store(libc::SIGPIPE, Ordering::Relaxed);
        }
        self.drawn = if self.tty { lines.len() } else { 0 };
    }
}

// ---------------------------------------------------------------------------
// The job
// ---------------------------------------------------------------------------

const PY_JOB: &str = "\
# herd demo's job: N rounds of sha256 from a seed; prints the seed, N and the digest.
import hashlib, sys
n, seed = int(sys.argv[1]), sys.argv[2]
h = ('herd demo ' + seed).encode()
for _ in range(n):
    h = hashlib.sha256(h).digest()
print('job %s: %d rounds of sha256, digest %s' % (seed, n, h.hex()[:32]))
";

const SH_JOB: &str = "\
# herd demo's job: N rounds of an integer hash from a seed, shell builtins only (no fork).
n=$1; seed=$2; h=$2; i=0
while [ \"$i\" -lt \"$n\" ]; do
  h=$(( (h * 1103515245 + 12345 + i) % 4294967296 ))
  i=$((i + 1))
done
echo \"job $seed: $n rounds of an integer hash, result $h\"
";

/// The job's interpreter and script.
struct Workload {
    interpreter: PathBuf,
    script: PathBuf,
    what: &'static str,
}

/// /usr/bin/python3 (the system's: every user may run it), else /bin/sh.
fn workload(dir: &Path, as_nobody: bool) -> Result<Workload> {
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & if as_nobody { 0o001 } else { 0o111 } != 0)
    };
    let python = ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"].iter().map(PathBuf::from).find(|p| runnable(p));
    let (interpreter, name, text, what) = match python {
        Some(py) => (py, "job.py", PY_JOB, "a python3 sha256 loop"),
        None => (PathBuf::from("/bin/sh"), "job.sh", SH_JOB, "a shell arithmetic loop (no /usr/bin/python3)"),
    };
    let script = dir.join(name);
    std::fs::write(&script, text).with_context(|| format!("writing {}", script.display()))?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644))?;
    Ok(Workload { interpreter, script, what })
}

/// `PATH`'s `name`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// How a job is started in n1.
struct Launcher {
    dir: PathBuf,
    herd: PathBuf,
    /// setpriv ... -- (as root: the jobs run as nobody), or nothing.
    as_user: Vec<String>,
    work: Workload,
}

impl Launcher {
    /// The job's argv: `[setpriv ... --] [herd run [--lock] --] INTERPRETER SCRIPT N SEED`.
    fn argv(&self, run: Option<bool>, rounds: u64, seed: usize) -> Vec<String> {
        let mut argv = self.as_user.clone();
        if let Some(lock) = run {
            argv.push(self.herd.display().to_string());
            argv.push("run".into());
            if lock {
                argv.push("--lock".into());
            }
            argv.push("--".into());
        }
        argv.push(self.work.interpreter.display().to_string());
        argv.push(self.work.script.display().to_string());
        argv.push(rounds.to_string());
        argv.push(seed.to_string());
        argv
    }

    /// Starts it inside n1, in a process group of its own (Ctrl-C is the demo's to handle).
    fn spawn(&self, argv: &[String]) -> Result<Child> {
        let mut cmd = herd_lab::node_exec(&self.dir, "n1", argv)?;
        herd_kernel::ns::clean_start(&mut cmd);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        cmd.env("PYTHONDONTWRITEBYTECODE", "1").env("PYTHONNOUSERSITE", "1").env_remove("HERD_LOG");
        cmd.spawn().with_context(|| format!("starting {} in n1", argv.join(" ")))
    }

    /// Runs it to the end, uninterrupted, alone: (status, stdout, stderr, CPU seconds it
    /// used). CPU time, not wall time: other work on the machine does not count.
    fn run_once(&self, rounds: u64) -> Result<(ExitStatus, String, String, f64)> {
        let before = children_cpu();
        let mut batch = Batch::default();
        batch.start(self, None, rounds, 0)?;
        batch.wait_all(Duration::from_secs(120), |_| Ok(()))?;
        let j = batch.jobs.pop().expect("one job");
        let (status, _) = j.ended.expect("waited");
        Ok((status, j.stdout_text(), j.stderr_text(), children_cpu() - before))
    }
}

/// A job running (or run) in n1.
struct Job {
    child: Child,
    started: Instant,
    ended: Option<(ExitStatus, Instant)>,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Job {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim_end().to_string()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim_end().to_string()
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut p| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            buf
        })
    })
}

/// The jobs of one run. Jobs still running when it is dropped are killed (by pid:
/// each is our child, not yet reaped) and reaped.
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
}

impl Batch {
    fn start(&mut self, l: &Launcher, run: Option<bool>, rounds: u64, seed: usize) -> Result<()> {
        let mut child = l.spawn(&l.argv(run, rounds, seed))?;
        let out = reader(child.stdout.take());
        let err = reader(child.stderr.take());
        self.jobs.push(Job { child, started: Instant::now(), ended: None, out, err, stdout: Vec::new(), stderr: Vec::new() });
        Ok(())
    }

    fn running(&self) -> usize {
        self.jobs.iter().filter(|j| j.ended.is_none()).count()
    }

    /// Notes the jobs that have ended.
    fn poll(&mut self) -> Result<()> {
        for j in self.jobs.iter_mut().filter(|j| j.ended.is_none()) {
            if let Some(status) = j.child.try_wait()? {
                j.ended = Some((status, Instant::now()));
                j.stdout = j.out.take().and_then(|h| h.join().ok()).unwrap_or_default();
                j.stderr = j.err.take().and_then(|h| h.join().ok()).unwrap_or_default();
            }
        }
        Ok(())
    }

    /// Waits until every job has ended (within `limit`), calling `tick` every 50 ms.
    fn wait_all(&mut self, limit: Duration, mut tick: impl FnMut(&Batch) -> Result<()>) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            check_stop()?;
            self.poll()?;
            tick(self)?;
            if self.running() == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} of {} jobs still running after {:.0} s", self.running(), self.jobs.len(), limit.as_secs_f64());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// From the first start to the last end.
    fn elapsed(&self) -> f64 {
        let start = self.jobs.iter().map(|j| j.started).min();
        let end = self.jobs.iter().filter_map(|j| j.ended.map(|e| e.1)).max();
        match (start, end) {
            (Some(s), Some(e)) => (e - s).as_secs_f64(),
            _ => 0.0,
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        for j in self.jobs.iter_mut().filter(|j| j.ended.is_none()) {
            // Our child, not reaped yet (ended is None): the pid is still ours. It is only
            // the process that waits in n1's pid namespace for the job (ns::enter), and
            // killing it does not end the job: its PR_SET_PDEATHSIG is cleared when setpriv
            // changes the uid, and `herd run` has the program as a child of its own anyway.
            // What ends the job, and everything else it started, is taking the cluster
            // down, which `run` does after this (each node's init dies, and with it every
            // process of its pid namespace).
            let _ = j.child.kill();
            let _ = j.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Watching n1
// ---------------------------------------------------------------------------

/// What the demo learns from n1's herdd while the jobs run.
#[derive(Default)]
struct Watch {
    /// Largest NMIGS seen for each pid.
    nmigs: HashMap<i32, u32>,
    /// The nodes each pid was seen running on.
    seen_on: BTreeMap<String, usize>,
    where_: HashMap<i32, String>,
}

impl Watch {
    fn note(&mut self, procs: &[ProcessRow]) {
        for p in procs {
            let n = self.nmigs.entry(p.pid).or_insert(0);
            *n = (*n).max(p.nmigs);
            if self.where_.get(&p.pid) != Some(&p.where_) && p.state != "migrating" {
                self.where_.insert(p.pid, p.where_.clone());
                *self.seen_on.entry(p.where_.clone()).or_insert(0) += 1;
            }
        }
    }

    fn moves(&self) -> u32 {
        self.nmigs.values().sum()
    }
}

fn query(target: &Target) -> Option<(Vec<NodeRow>, Vec<ProcessRow>)> {
    let mut c = target.connect().ok()?;
    let Ok(Response::Nodes(nodes)) = c.call(&Request::Nodes) else { return None };
    let Ok(Response::Processes(procs)) = c.call(&Request::Processes) else { return None };
    Some((nodes, procs))
}

/// One line per node: its load and the jobs running there (pid and %CPU).
fn node_lines(nodes: &[NodeRow], procs: &[ProcessRow]) -> Vec<String> {
    let width = nodes.iter().map(|n| n.name.len()).max().unwrap_or(2);
    let mut lines = Vec::new();
    let mut shown = 0;
    for n in nodes {
        let here: Vec<&ProcessRow> = procs.iter().filter(|p| p.where_ == n.name).collect();
        shown += here.len();
        let mark = if n.state == "up" { String::new() } else { format!(" ({})", n.state) };
        let fl = flags(&n.status);
        let fl = if fl == "-" { String::new() } else { format!(" [{fl}]") };
        let bar = "#".repeat(here.len());
        let line = format!("{:<width$}  load {:>5.2}{mark}{fl}  {bar:<6} {}", n.name, n.load, jobs_text(&here));
        lines.push(line.trim_end().to_string());
    }
    let elsewhere: Vec<&ProcessRow> = procs.iter().filter(|p| !nodes.iter().any(|n| n.name == p.where_)).collect();
    if shown < procs.len() && !elsewhere.is_empty() {
        lines.push(format!("{:<width$}  {}", "?", jobs_text(&elsewhere)));
    }
    lines
}

/// `101 99%, 102 48% (moving)`
fn jobs_text(procs: &[&ProcessRow]) -> String {
    procs
        .iter()
        .map(|p| {
            let moving = if p.state == "migrating" { " (moving)" } else { "" };
            format!("{} {:.0}%{moving}", p.pid, p.cpu)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// The demo
// ---------------------------------------------------------------------------

/// One run of the jobs: its time, moves, and each job's result.
struct RunResult {
    seconds: f64,
    moves: u32,
    nodes_used: Vec<String>,
    /// Per job: exit status, stdout, stderr.
    jobs: Vec<(ExitStatus, String, String)>,
}

fn default_dir() -> PathBuf {
    if herd_kernel::task::euid() == 0 {
        PathBuf::from("/run/herd/demo")
    } else {
        herd_lab::default_dir().with_file_name("demo")
    }
}

pub fn run(args: &DemoArgs) -> Result<i32> {
    install_signal_handlers();
    let mut screen = Screen { tty: std::io::stdout().is_terminal(), drawn: 0 };
    let root = herd_kernel::task::euid() == 0;
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    if !dir.exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // The jobs run as nobody: they must reach the script in it.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let cluster_dir = dir.join("cluster");

    let as_user = if root {
        let setpriv = which("setpriv").context("setpriv not found: the jobs run as nobody through it (apt-get install util-linux)")?;
        vec![setpriv.display().to_string(), "--reuid=65534".into(), "--regid=65534".into(), "--clear-groups".into(), "--".into()]
    } else {
        Vec::new()
    };
    let herd = std::env::current_exe().context("finding the herd executable")?;
    let busy = load_average();
    screen.say(&format!(
        "herd demo: {} jobs on a local cluster of {} nodes (Ctrl-C stops it and takes the cluster down)",
        args.jobs, args.nodes
    ));
    if !root {
        screen.say(
            "note: not root, so the cluster runs in a user namespace where your processes are root's, and herdd does not \
             move root's processes: the jobs will stay on n1. Run `sudo herd demo` to see them move.",
        );
    }

    // Up.
    let up = Instant::now();
    let cpus = (args.cpus_per_node > 0).then_some(args.cpus_per_node);
    STARTING.store(true, Ordering::Relaxed);
    let brought = bring_up(&mut screen, &cluster_dir, args.nodes, cpus);
    STARTING.store(false, Ordering::Relaxed);
    let (cluster, cpusets) = match brought {
        Ok(up) => up,
        Err(e) => match e.downcast_ref::<Interrupted>() {
            // Stopped before an attempt to bring it up (a failed one leaves nothing behind).
            Some(&Interrupted(sig)) => {
                screen.say(&format!("\n{}: no cluster was started", Interrupted(sig)));
                return Ok(128 + sig);
            }
            None => return Err(e),
        },
    };
    // Stopped during start-up: no workload, straight to taking the cluster down. The job
    // lives in the cluster's directory: the nodes see it (they have /tmp of their own).
    let result = check_stop()
        .and_then(|()| workload(cluster.dir(), root))
        .map(|work| Launcher { dir: cluster_dir.clone(), herd, as_user, work })
        .and_then(|launcher| with_cluster(&mut screen, &cluster, &launcher, args, cpusets, up, busy));

    // Down, whatever happened; from here on the demo only cleans up.
    let interrupted = match &result {
        Err(e) => e.downcast_ref::<Interrupted>().map(|i| i.0),
        Ok(_) => stopped(),
    };
    if let Some(sig) = interrupted {
        // On a fresh line: the terminal's ^C is on this one.
        screen.say(&format!("\n{}: taking the cluster down", Interrupted(sig)));
    }
    STOP.store(0, Ordering::Relaxed);
    let down = cluster.down();
    let gone = matches!(herd_lab::status(&cluster_dir), Err(LabError::NoCluster { .. }));
    if let Err(e) = &down {
        eprintln!("herd demo: taking the cluster down: {e:#}");
    }
    let clean = down.is_ok() && gone;
    if clean {
        screen.say(&format!("cluster down (herd cluster status --dir {}: no cluster)", cluster_dir.display()));
    } else {
        eprintln!(
            "herd demo: the cluster at {0} may not be all gone: see `herd cluster status --dir {0}`, \
             then `herd cluster down --dir {0}`",
            cluster_dir.display()
        );
    }
    let code = match (&result, interrupted) {
        (_, Some(sig)) => 128 + sig,
        (Ok(true), None) if clean => 0,
        (Ok(_), None) => 1,
        (Err(e), None) => {
            eprintln!("herd demo: {e:#}");
            1
        }
    };
    if code == 0 || (interrupted.is_some() && clean) {
        // What the demo made: the cluster's directory (logs, key, job), then DIR if empty.
        let _ = std::fs::remove_dir_all(&cluster_dir);
        let _ = std::fs::remove_dir(&dir);
    } else {
        eprintln!("herd demo: its files and the nodes' logs are kept in {}", dir.display());
    }
    Ok(code)
}

/// Brings the cluster up, with cpusets when it can; Ok((cluster, whether with cpusets)).
fn bring_up(screen: &mut Screen, dir: &Path, nodes: u32, cpus: Option<u32>) -> Result<(LocalCluster, bool)> {
    check_stop()?;
    let opts = UpOptions { cpus_per_node: cpus, dir: Some(dir.to_path_buf()), ..UpOptions::new(nodes) };
    screen.say(&format!("\n== herd cluster up --nodes {nodes}{}", cpus.map(|k| format!(" --cpus-per-node {k}")).unwrap_or_default()));
    let up = match LocalCluster::up(&opts) {
        Err(LabError::Cpuset(why)) if cpus.is_some() => {
            screen.say(&format!(
                "no cpusets here ({why}): the nodes share all of this machine's CPUs, so n1 alone has as many \
                 CPUs as the whole cluster and spreading the jobs cannot make them faster"
            ));
            check_stop()?;
            LocalCluster::up(&UpOptions { cpus_per_node: None, ..opts }).map(|c| (c, false))
        }
        other => other.map(|c| (c, cpus.is_some())),
    };
    let (cluster, cpusets) = up.map_err(|e| anyhow::anyhow!(e).context("bringing the local cluster up"))?;
    let what = match cpus.filter(|_| cpusets) {
        Some(1) => ", one CPU each".to_string(),
        Some(k) => format!(", {k} CPUs each"),
        None => format!(", sharing this machine's {} CPUs", std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    let status = cluster.status().unwrap_or_default();
    let layout: Vec<String> =
        status.iter().map(|n| format!("{}{}", n.name, n.cpus.as_deref().map(|c| format!(" (CPU {c})")).unwrap_or_default())).collect();
    screen.say(&format!("{} nodes up{what}: {}", nodes, layout.join(", ")));
    Ok((cluster, cpusets))
}

/// Everything between up and down. Ok(true) when every check passed.
fn with_cluster(
    screen: &mut Screen,
    cluster: &LocalCluster,
    l: &Launcher,
    args: &DemoArgs,
    cpusets: bool,
    up: Instant,
    busy: Option<f64>,
) -> Result<bool> {
    let n1 = Target { socket: cluster.node_socket("n1") };
    // Until n1 knows every node (gossip takes a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    let nodes = loop {
        check_stop()?;
        let rows = query(&n1).map(|(n, _)| n).unwrap_or_default();
        let known = rows.iter().filter(|r| r.state == "up" && r.mem_total > 0).count();
        if known >= args.nodes as usize || Instant::now() > deadline {
            break rows;
        }
        nap(Duration::from_millis(100))?;
    };
    screen.say(&format!("\n== herd --node n1 nodes ({:.1} s after start)", up.elapsed().as_secs_f64()));
    for r in &nodes {
        screen.say(&format!(
            "  {:<4} {:<6} {} CPU{}  speed {:>5}  load {:.2}",
            format!("{}{}", r.name, if r.is_self { "*" } else { "" }),
            r.state,
            r.cpus,
            if r.cpus == 1 { " " } else { "s" },
            r.speed,
            r.load
        ));
    }

    // How many rounds make a job of about --seconds, measured in n1 as the jobs' user.
    let rounds = calibrate(l, args.seconds)?;
    let user = if l.as_user.is_empty() { "you" } else { "nobody (root's processes do not migrate)" };
    screen.say(&format!(
        "\n== {} jobs on n1: herd run -- {} (~{:.0} s each alone on one CPU; {}; run as {user})",
        args.jobs,
        l.work.script.file_name().unwrap_or_default().to_string_lossy(),
        args.seconds,
        l.work.what,
    ));
    let limit = Duration::from_secs_f64((args.seconds * args.jobs as f64 * 4.0).max(60.0));
    let balanced = run_jobs(screen, &n1, l, args.jobs, rounds, false, limit)?;
    screen.say(&format!(
        "all {} jobs done in {:.1} s; {} move{}{}",
        args.jobs,
        balanced.seconds,
        balanced.moves,
        if balanced.moves == 1 { "" } else { "s" },
        if balanced.nodes_used.is_empty() { String::new() } else { format!("; they ran on {}", balanced.nodes_used.join(", ")) }
    ));

    // Until herdd has let go of the first run's processes (at most a few seconds).
    let deadline = Instant::now() + Duration::from_secs(3);
    while query(&n1).is_some_and(|(_, procs)| !procs.is_empty()) && Instant::now() < deadline {
        nap(Duration::from_millis(100))?;
    }
    screen.say(&format!("\n== the same {} jobs confined to n1: herd run --lock (the balancer leaves them home)", args.jobs));
    let confined = run_jobs(screen, &n1, l, args.jobs, rounds, true, limit)?;
    screen.say(&format!("all {} jobs done in {:.1} s; {} moves", args.jobs, confined.seconds, confined.moves));

    // Each job: exit 0 and the same output both times.
    let mut bad = Vec::new();
    for (k, (b, c)) in balanced.jobs.iter().zip(&confined.jobs).enumerate() {
        let k = k + 1;
        let show = |what: &str, (status, out, err): &(ExitStatus, String, String)| {
            format!("job {k} ({what}): {}; stdout {out:?}; stderr {err:?}", describe_status(status))
        };
        if !b.0.success() || b.1.is_empty() {
            bad.push(show("balanced", b));
        }
        if !c.0.success() || c.1.is_empty() {
            bad.push(show("confined", c));
        }
        if b.0.success() && c.0.success() && b.1 != c.1 {
            bad.push(format!("job {k}: balanced printed {:?}, confined {:?}", b.1, c.1));
        }
    }

    screen.say("\n== summary");
    screen.say(&format!("  {} jobs of ~{:.0} s each on one CPU ({}), started on n1", args.jobs, args.seconds, l.work.what));
    screen.say(&format!(
        "  balanced over {} nodes: {:>6.1} s   {} move{} (herd ps NMIGS)",
        args.nodes,
        balanced.seconds,
        balanced.moves,
        if balanced.moves == 1 { "" } else { "s" }
    ));
    screen.say(&format!("  confined to n1:        {:>6.1} s   (herd run --lock)", confined.seconds));
    if balanced.seconds > 0.0 {
        let speedup = confined.seconds / balanced.seconds;
        screen.say(&format!(
            "  speed-up: {speedup:.2}x with {} nodes{}",
            args.nodes,
            if cpusets { "" } else { " (no cpusets: all nodes share this machine's CPUs)" }
        ));
    }
    if let Some(load) = busy.filter(|&l| l >= 0.5) {
        screen.say(&format!(
            "  (this machine was busy before the demo, load average {load:.2}: other work takes CPU time from the nodes, \
             so times vary)"
        ));
    }
    if bad.is_empty() {
        screen.say(&format!(
            "  outputs: every job printed the same result in both runs and exited 0 (e.g. {:?})",
            balanced.jobs.first().map(|j| j.1.as_str()).unwrap_or_default()
        ));
    } else {
        screen.say("  outputs: WRONG");
        for b in &bad {
            screen.say(&format!("    {b}"));
        }
    }
    if balanced.moves == 0 {
        let why = if l.as_user.is_empty() {
            "the jobs are root's inside this cluster's user namespace (run as root to see moves)".to_string()
        } else {
            format!("herdd's balancer moved nothing: see {}", cluster.dir().join("n1/herdd.log").display())
        };
        screen.say(&format!("  no job moved: {why}"));
    }
    check_stop()?;
    Ok(bad.is_empty())
}

/// Rounds of the job that take about `seconds` of CPU, measured in n1 as the jobs' user:
/// the CPU time of a short run less the interpreter's start-up.
fn calibrate(l: &Launcher, seconds: f64) -> Result<u64> {
    let check = |(status, out, err, secs): (ExitStatus, String, String, f64), rounds: u64| -> Result<f64> {
        if !status.success() || out.is_empty() {
            bail!(
                "the job ({} rounds, in n1{}) failed: {}\n{err}",
                rounds,
                if l.as_user.is_empty() { "" } else { " as nobody" },
                describe_status(&status)
            );
        }
        Ok(secs)
    };
    let base = check(l.run_once(1)?, 1)?;
    let mut rounds: u64 = 20_000;
    loop {
        check_stop()?;
        let secs = check(l.run_once(rounds)?, rounds)?;
        let work = (secs - base).max(0.001);
        if work >= 0.25 || rounds >= 1 << 34 {
            return Ok(((rounds as f64) * seconds / work).max(1.0) as u64);
        }
        rounds *= if work < 0.02 { 16 } else { 4 };
    }
}

/// CPU time (user and system) of the children this process has reaped, and theirs.
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass and nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid `who`.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// This machine's 1-minute load average.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn describe_status(s: &ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

/// Starts `jobs` jobs on n1 under `herd run` (locked or not), shows where they run until
/// all have ended, and returns the run's figures.
fn run_jobs(screen: &mut Screen, n1: &Target, l: &Launcher, jobs: u32, rounds: u64, lock: bool, limit: Duration) -> Result<RunResult> {
    let mut batch = Batch::default();
    for k in 1..=jobs as usize {
        batch.start(l, Some(lock), rounds, k)?;
    }
    let mut watch = Watch::default();
    let every = if screen.tty { Duration::from_millis(500) } else { Duration::from_secs(1) };
    let started = Instant::now();
    let mut next = started;
    let mut last: Option<(Vec<NodeRow>, Vec<ProcessRow>)> = None;
    batch.wait_all(limit, |b| {
        if Instant::now() < next {
            return Ok(());
        }
        next += every;
        if let Some((nodes, procs)) = query(n1) {
            watch.note(&procs);
            draw(screen, started, b, &watch, &nodes, &procs);
            last = Some((nodes, procs));
        }
        Ok(())
    })?;
    // The last picture, with every job done.
    if let Some((nodes, _)) = &last {
        draw(screen, started, &batch, &watch, nodes, &[]);
    }
    let mut nodes_used: Vec<String> = watch.seen_on.keys().cloned().collect();
    nodes_used.sort_by_key(|n| n.trim_start_matches('n').parse::<u32>().unwrap_or(u32::MAX));
    Ok(RunResult {
        seconds: batch.elapsed(),
        moves: watch.moves(),
        nodes_used,
        jobs: batch.jobs.iter().map(|j| (j.ended.expect("all ended").0, j.stdout_text(), j.stderr_text())).collect(),
    })
}

fn draw(screen: &mut Screen, started: Instant, b: &Batch, watch: &Watch, nodes: &[NodeRow], procs: &[ProcessRow]) {
    let head = format!(
        "[{:5.1} s] {}/{} done, {} move{}",
        started.elapsed().as_secs_f64(),
        b.jobs.len() - b.running(),
        b.jobs.len(),
        watch.moves(),
        if watch.moves() == 1 { "" } else { "s" }
    );
    let lines = node_lines(nodes, procs);
    if screen.tty {
        let mut block = vec![head];
        block.extend(lines.into_iter().map(|l| format!("  {l}")));
        screen.block(&block);
    } else {
        // One line a tick; squeeze the node lines' padding.
        let squeezed: Vec<String> = lines.iter().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        screen.say(&format!("{head} | {}", squeezed.join(" | ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_row(pid: i32, where_: &str, cpu: f64, state: &str, nmigs: u32) -> ProcessRow {
        ProcessRow {
            pid,
            home: "n1".into(),
            ppid: 1,
            job: pid,
            uid: 65534,
            where_: where_.into(),
            state: state.into(),
            cpu,
            rss: 1 << 20,
            demand: cpu,
            io_rate: 0.0,
            rss_growth: 0.0,
            direct_io_rate: 0.0,
            forwarded_calls: 0,
            nmigs,
            cantmove: vec![],
            lock: false,
            cmd: "python3 job.py".into(),
            moving: None,
            ..Default::default()
        }
    }

    fn node_row(name: &str, load: f32) -> NodeRow {
        NodeRow {
            name: name.into(),
            address: String::new(),
            state: "up".into(),
            cpus: 1,
            speed: 10000,
            load,
            mem_free: 1,
            mem_total: 2,
            is_self: name == "n1",
            boot: 0,
            info_age_secs: None,
            kernel: None,
            version: None,
            status: Default::default(),
            shared: vec![],
            shared_with_this_node: vec![],
        }
    }

    #[test]
    fn node_lines_group_jobs_by_node() {
        let nodes = [node_row("n1", 2.0), node_row("n2", 1.0)];
        let procs = [proc_row(101, "n1", 99.2, "home", 0), proc_row(102, "n2", 48.0, "remote", 1), proc_row(103, "n1", 50.0, "migrating", 0)];
        let lines = node_lines(&nodes, &procs);
        assert_eq!(lines, ["n1  load  2.00  ##     101 99%, 103 50% (moving)", "n2  load  1.00  #      102 48%"]);
    }

    #[test]
    fn watch_counts_moves_and_nodes() {
        let mut w = Watch::default();
        w.note(&[proc_row(1, "n1", 0.0, "home", 0), proc_row(2, "n1", 0.0, "home", 0)]);
        w.note(&[proc_row(1, "n2", 0.0, "remote", 1), proc_row(2, "n1", 0.0, "home", 0)]);
        w.note(&[proc_row(1, "n1", 0.0, "home", 2)]);
        assert_eq!(w.moves(), 2);
        assert_eq!(w.seen_on.keys().collect::<Vec<_>>(), ["n1", "n2"]);
    }

    #[test]
    fn seconds_are_bounded() {
        assert_eq!(job_seconds("4"), Ok(4.0));
        assert!(job_seconds("0").is_err());
        assert!(job_seconds("abc").is_err());
        assert!(job_seconds("1e9").is_err());
    }
}
