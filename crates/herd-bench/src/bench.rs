//! `herd-bench checkpoint`: the measurement loop.
//!
//! Every case is a size (MiB held by each process), a process count
//! (`--procs`: the holder and its children) and a thread count (`--threads`,
//! in each process). The working size of a case is the size times the
//! processes. Per case and repetition, in this order, each timed step
//! preceded by a warm-up ([`sys::warm_up`]) of about three times the working
//! size:
//! 1. file-write baseline: the working size written to a file next to the
//!    images in 8 MiB write() calls from a prefilled buffer (no fsync);
//! 2. first-touch baseline: fresh memory of the working size, one byte
//!    written per 4 KiB page;
//! 3. herd checkpoint: a fresh holder (`herd-bench hold`, see [`crate::hold`])
//!    is started; timed: [`FrozenTree::freeze`] of it and all its children
//!    and the write of the image (no fsync), as `herd checkpoint` does it;
//!    the processes are then ended;
//! 4. herd restart: `herd_checkpoint::restore` of that image with the same
//!    pids, until the root runs again (the tree's children with it); then,
//!    untimed, every process's memory is spot-checked against its own pattern,
//!    they must survive their next wake-up, and they are ended;
//! 5. CRIU dump (when `criu-4` is there, we are root and `--no-criu` is not
//!    given): another fresh holder; timed: `criu-4 dump --shell-job` of it,
//!    start to exit of the command (CRIU kills the tree at the end of the
//!    dump; the root, our child, is then reaped and the children's pids waited
//!    for, since the restore needs them free);
//! 6. CRIU restore: timed: `criu-4 restore --shell-job -d` until the command
//!    returns with the tree running again (same pids, adopted by init: not
//!    our children); then the same checks as after herd's restart, and the
//!    processes are killed by pid and waited for until /proc has no trace of
//!    them. The CRIU images (a subdirectory of the work directory) are
//!    removed.
//!
//! A failed CRIU step is a failure of the repetition's CRIU columns only:
//! herd's figures of that repetition are kept.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use herd_checkpoint::filehash::FileHashes;
use herd_checkpoint::{CheckpointError, FrozenTree, PidMode};
use herd_kernel::task::{self, Exit};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::hold::{self, pattern, pattern_of, MemberMem};
use crate::report::{self, Criu, CriuSample, Run, Sample, SizeResult};
use crate::sys::{self, MIB, PAGE};

pub struct Config {
    pub sizes: Vec<u64>,
    /// Thread counts of each checkpointed process (each size with each count).
    pub threads: Vec<usize>,
    /// Process counts of the checkpointed tree (each size with each count).
    pub procs: Vec<usize>,
    pub reps: Option<usize>,
    pub dir: Option<PathBuf>,
    /// Measure CRIU too, when it is there.
    pub criu: bool,
}

/// Size of each write() of the file-write baseline.
const WRITE_CHUNK: usize = 8 << 20;
/// Buffer between the engine and the image file, as in `herd`.
const IO_BUF: usize = 1 << 20;
/// Pages of each restored process compared with what it held.
const VERIFY_PAGES: u64 = 64;
/// How long a restored process must survive before it is ended (it wakes
/// from its restarted sleep within this time).
const SURVIVE: Duration = Duration::from_millis(300);
/// Most processes in a tree: the patterns of up to 256 members all differ.
const MAX_PROCS: usize = 256;
/// Most threads in all the tree's processes together.
const MAX_TREE_THREADS: usize = 16384;
/// Where CRIU 4.2 is installed (shared/peers/criu/install.sh); else `criu-4`
/// on the PATH.
const CRIU: &str = "/usr/local/sbin/criu-4";
/// How long processes that were killed may take to disappear (reaped by
/// whoever adopted them: init here reaps every two seconds or so).
const GONE_WITHIN: Duration = Duration::from_secs(15);
/// Log lines of CRIU's that are no errors on our machines (see
/// shared/peers/criu/README.md).
const CRIU_HARMLESS: [&str; 2] = ["Can't setup RLIMIT_NOFILE", "Can't keep kdat cache"];

pub fn default_reps(mib: u64) -> usize {
    if mib >= 2048 {
        3
    } else {
        5
    }
}

/// One line of the table: MiB per process, processes, threads per process.
#[derive(Clone, Copy)]
struct Case {
    mib: u64,
    procs: usize,
    threads: usize,
}

impl Case {
    /// What the whole tree holds.
    fn bytes(&self) -> u64 {
        self.mib * MIB * self.procs as u64
    }

    fn label(&self) -> String {
        SizeResult { mib: self.mib, threads: self.threads, procs: self.procs, reps: 0, samples: Vec::new() }.label()
    }

    /// For file names.
    fn tag(&self) -> String {
        format!("{}MiB-{}p-{}t", self.mib, self.procs, self.threads)
    }
}

pub fn run(cfg: Config) -> Result<bool> {
    if cfg.sizes.is_empty() || cfg.sizes.contains(&0) {
        bail!("--sizes wants sizes in MiB greater than 0, e.g. --sizes 64,512");
    }
    if cfg.sizes.iter().any(|&m| m > 1 << 20) {
        bail!("--sizes is in MiB; sizes above 1 TiB are surely a mistake");
    }
    if cfg.reps == Some(0) {
        bail!("--reps must be at least 1");
    }
    if cfg.threads.is_empty() || cfg.threads.iter().any(|&n| n == 0 || n > 4096) {
        bail!("--threads wants thread counts from 1 to 4096, e.g. --threads 1,8,64");
    }
    if cfg.procs.is_empty() || cfg.procs.iter().any(|&n| n == 0 || n > MAX_PROCS) {
        bail!("--procs wants process counts from 1 to {MAX_PROCS}, e.g. --procs 1,16");
    }
    let most_threads = cfg.procs.iter().max().unwrap_or(&1) * cfg.threads.iter().max().unwrap_or(&1);
    if most_threads > MAX_TREE_THREADS {
        bail!("--procs × --threads asks for {most_threads} threads in one tree; at most {MAX_TREE_THREADS}, please");
    }
    sys::preflight()?;
    let (base, fstype) = choose_dir(cfg.dir.as_deref())?;
    let most_procs = *cfg.procs.iter().max().unwrap_or(&1) as u64;
    check_memory(&cfg.sizes.iter().map(|m| m * most_procs).collect::<Vec<_>>());
    let (criu, criu_info) = find_criu(cfg.criu);
    if let Criu::NotMeasured { why } = &criu_info {
        eprintln!("herd-bench: CRIU not measured: {why}");
    }
    let work = WorkDir::create(&base)?;

    let holder_exe = holder_exe(&work.path)?;
    let mut hashes = FileHashes::load();
    prewarm_hashes(&mut hashes);
    let _ = hashes.hash(&holder_exe);
    let chunk: Vec<u8> = (0..WRITE_CHUNK).map(pattern).collect();

    let mut cases = Vec::new();
    for &mib in &cfg.sizes {
        for &procs in &cfg.procs {
            for &threads in &cfg.threads {
                cases.push(Case { mib, procs, threads });
            }
        }
    }
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for case in cases {
        let label = case.label();
        let reps = cfg.reps.unwrap_or(default_reps(case.mib * case.procs as u64));
        let mut samples = Vec::new();
        for rep in 1..=reps {
            match one_rep(case, rep, &work.path, &holder_exe, &chunk, &mut hashes, criu.as_deref()) {
                Ok((s, criu_failed)) => {
                    let criu_text = match (&s.criu, &criu_failed) {
                        (Some(c), _) => format!(
                            ", CRIU dump {:.3} s ({:.1} MiB images), restore {:.3} s",
                            c.dump,
                            c.image_bytes as f64 / MIB as f64,
                            c.restore
                        ),
                        (None, Some(_)) => ", CRIU FAILED".to_string(),
                        (None, None) => String::new(),
                    };
                    eprintln!(
                        "{label:>8} rep {rep}/{reps}: write {:.3} s, touch {:.3} s, checkpoint {:.3} s ({:.1} MiB image), restart {:.3} s{criu_text}",
                        s.write,
                        s.touch,
                        s.ckpt,
                        s.image_bytes as f64 / MIB as f64,
                        s.restart
                    );
                    if let Some(e) = criu_failed {
                        eprintln!("{label:>8} rep {rep}/{reps}: CRIU FAILED: {e:#}");
                        failures.push(format!("{label} rep {rep} (CRIU): {e:#}"));
                    }
                    samples.push(s);
                }
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) => {
                    eprintln!("{label:>8} rep {rep}/{reps}: FAILED: {e:#}");
                    failures.push(format!("{label} rep {rep}: {e:#}"));
                }
            }
        }
        results.push(SizeResult { mib: case.mib, threads: case.threads, procs: case.procs, reps, samples });
    }
    // The hash cache is not saved: it would keep an entry for the copy of
    // herd-bench, which is deleted now.
    drop(work);

    let run = Run { dir: base, fstype, criu: criu_info, results, failures };
    report::print(&run);
    Ok(run.failures.is_empty())
}

/// Errors that would repeat on every try: stop at once.
fn is_fatal(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<CheckpointError>(),
        Some(CheckpointError::Permission { .. } | CheckpointError::CantMove { .. } | CheckpointError::Incompatible(_))
    )
}

/// `criu-4` to measure with, or why there is none.
fn find_criu(wanted: bool) -> (Option<PathBuf>, Criu) {
    let not = |why: String| (None, Criu::NotMeasured { why });
    if !wanted {
        return not("left out with --no-criu".into());
    }
    if task::euid() != 0 {
        return not("CRIU needs root".into());
    }
    let exe = if Path::new(CRIU).exists() {
        PathBuf::from(CRIU)
    } else {
        let on_path = std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join("criu-4")).find(|c| c.is_file()));
        match on_path {
            Some(p) => p,
            None => return not(format!("{CRIU} is not installed and there is no criu-4 on the PATH (see shared/peers/criu/README.md)")),
        }
    };
    // Also brings the binary and its libraries into the page cache before
    // the first timed dump.
    match Command::new(&exe).arg("--version").stdin(Stdio::null()).stderr(Stdio::null()).output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            // "Version: 4.2" (and "GitID: ..." on builds from git).
            let version = text.lines().find_map(|l| l.strip_prefix("Version:")).map(str::trim).unwrap_or("unknown version");
            let info = Criu::Measured { version: format!("CRIU {version} ({})", exe.display()) };
            (Some(exe), info)
        }
        Ok(out) => not(format!("`{} --version` failed ({})", exe.display(), out.status)),
        Err(e) => not(format!("cannot run {}: {e}", exe.display())),
    }
}

/// One repetition; herd's sample, and, if CRIU's steps failed, why.
fn one_rep(
    case: Case,
    rep: usize,
    dir: &Path,
    exe: &Path,
    chunk: &[u8],
    hashes: &mut FileHashes,
    criu: Option<&Path>,
) -> Result<(Sample, Option<anyhow::Error>)> {
    let bytes = case.bytes();

    sys::warm_up(bytes);
    let write = write_baseline(dir, bytes, chunk).context("file-write baseline")?;

    sys::warm_up(bytes);
    let touch = touch_baseline(bytes);

    let image = RemoveOnDrop(dir.join(format!("{}-{rep}.herd", case.tag())));
    let mut holder = Holder::spawn(exe, case).context("starting the process to checkpoint")?;
    let expect = holder.expect();
    sys::warm_up(bytes);
    let (ckpt, image_bytes) = checkpoint(&mut holder, &image.0, hashes, case.procs).context("checkpoint")?;
    drop(holder);

    sys::warm_up(bytes);
    let restart = restart(&image.0, hashes, &expect).context("restart")?;
    drop(image);

    let mut sample = Sample { write, touch, ckpt, image_bytes, restart, criu: None };
    let Some(criu) = criu else { return Ok((sample, None)) };
    match criu_rep(criu, case, rep, dir, exe) {
        Ok(c) => sample.criu = Some(c),
        Err(e) => return Ok((sample, Some(e))),
    }
    Ok((sample, None))
}

fn write_baseline(dir: &Path, bytes: u64, chunk: &[u8]) -> Result<f64> {
    let path = RemoveOnDrop(dir.join("write-baseline"));
    let t = Instant::now();
    let mut f = File::create(&path.0).with_context(|| format!("cannot create {}", path.0.display()))?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).with_context(|| format!("writing {}", path.0.display()))?;
        left -= n as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    drop(f);
    Ok(secs)
}

fn touch_baseline(bytes: u64) -> f64 {
    let t = Instant::now();
    let mut v = vec![0u8; bytes as usize];
    sys::touch(&mut v);
    std::hint::black_box(&mut v);
    let secs = t.elapsed().as_secs_f64();
    drop(v);
    secs
}

/// Freeze + write of the image of the holder and its children (no fsync),
/// then they are ended. A single process makes a plain single-process
/// image, as `Frozen` would.
fn checkpoint(holder: &mut Holder, image: &Path, hashes: &mut FileHashes, procs: usize) -> Result<(f64, u64)> {
    let t = Instant::now();
    let mut tree = FrozenTree::freeze(holder.pid(), hashes, false)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(image)
        .with_context(|| format!("cannot create {}", image.display()))?;
    let (out, _stats) = tree.write(BufWriter::with_capacity(IO_BUF, file))?;
    let file = out.into_inner().map_err(|e| e.into_error()).context("writing the image")?;
    let secs = t.elapsed().as_secs_f64();
    drop(file);
    let (members, _threads) = tree.counts();
    tree.kill();
    holder.ended_by_herd();
    if members != procs {
        bail!("the checkpoint holds {members} processes, not the {procs} of the tree");
    }
    let size = std::fs::metadata(image).with_context(|| format!("cannot stat {}", image.display()))?.len();
    Ok((secs, size))
}

/// Restore of the image until the process runs again; then a check that
/// every process of the tree holds what it held and keeps running, and
/// their end.
fn restart(image: &Path, hashes: &mut FileHashes, expect: &Expect) -> Result<f64> {
    let t = Instant::now();
    let file = File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
    // With its own pid, as `herd restart` does, when allowed (root).
    let pid = if herd_kernel::task::euid() == 0 { PidMode::Same } else { PidMode::Any };
    let restored = herd_checkpoint::restore_file(&file, hashes, pid)?;
    let secs = t.elapsed().as_secs_f64();
    let mut tree = RestoredTree::new(restored.pid, true);
    for w in &restored.warnings {
        eprintln!("herd-bench: restore warning: {w}");
    }
    tree.verify(expect)?;
    tree.end()?;
    Ok(secs)
}

/// CRIU's dump and restore of a fresh holder, with the same checks as
/// herd's; the images are removed after.
fn criu_rep(criu: &Path, case: Case, rep: usize, dir: &Path, exe: &Path) -> Result<CriuSample> {
    let bytes = case.bytes();
    let images = RemoveDirOnDrop(dir.join(format!("criu-{}-{rep}", case.tag())));
    std::fs::create_dir(&images.0).with_context(|| format!("cannot create {}", images.0.display()))?;
    let mut holder = Holder::spawn(exe, case).context("starting the process for CRIU")?;
    let expect = holder.expect();
    let pid = holder.pid().to_string();
    let deadline = criu_deadline(bytes);

    sys::warm_up(bytes);
    let dump = run_criu(criu, &["dump", "-t", &pid, "-D"], &images.0, &["--shell-job", "-o", "dump.log", "-v4"], deadline)
        .context("criu-4 dump")?;
    // CRIU killed the tree: the root is ours to reap, the children init's;
    // the restore needs all their pids.
    holder.ended_by_criu();
    wait_gone(&expect.pids()).context("after criu-4 dump")?;
    let image_bytes = dir_bytes(&images.0, ".img");

    sys::warm_up(bytes);
    let pidfile = images.0.join("restored.pid");
    let pidfile_arg = pidfile.to_string_lossy().into_owned();
    let restore = run_criu(
        criu,
        &["restore", "-D"],
        &images.0,
        &["--shell-job", "-d", "-o", "restore.log", "-v4", "--pidfile", &pidfile_arg],
        deadline,
    );
    // Whatever the outcome: a process with the root's pid now is the restored one.
    let restored_pid = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok());
    let mut tree = match restored_pid {
        Some(p) => RestoredTree::new(p, false),
        None if restore.is_ok() => bail!("criu-4 restore wrote no pid to {}", pidfile.display()),
        None => return Err(restore.unwrap_err().context("criu-4 restore")),
    };
    let restore = restore.context("criu-4 restore")?;
    if tree.root != expect.root().pid {
        bail!("criu-4 restore gave pid {}, not the original {}", tree.root, expect.root().pid);
    }
    tree.verify(&expect).context("after criu-4 restore")?;
    tree.end().context("after criu-4 restore")?;
    Ok(CriuSample { dump, restore, image_bytes })
}

/// How long a CRIU command may take before it is killed.
fn criu_deadline(bytes: u64) -> Duration {
    // Far beyond what 100 MB/s would need.
    Duration::from_secs(120 + bytes / (100 * 1_000_000))
}

/// Runs `criu ARGS1 DIR ARGS2` and returns its wall time; its log (in DIR,
/// named after `-o`) is quoted on failure and kept next to the work
/// directory.
fn run_criu(criu: &Path, args1: &[&str], dir: &Path, args2: &[&str], deadline: Duration) -> Result<f64> {
    let log = args2.windows(2).find(|w| w[0] == "-o").map(|w| dir.join(w[1]));
    let t = Instant::now();
    let mut child = Command::new(criu)
        .args(args1)
        .arg(dir)
        .args(args2)
        .stdin(criu_stdin()?)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", criu.display()))?;
    // A watchdog kills CRIU if it hangs; it is told when CRIU is done.
    let (done, done_rx) = mpsc::channel::<()>();
    let pid = child.id() as i32;
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(deadline) {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            true
        } else {
            false
        }
    });
    let status = child.wait();
    let secs = t.elapsed().as_secs_f64();
    let _ = done.send(());
    let killed = watchdog.join().unwrap_or(false);
    let status = status.context("waiting for criu-4")?;
    if status.success() {
        return Ok(secs);
    }
    let mut msg = if killed { format!("killed after {} s", deadline.as_secs()) } else { format!("failed ({status})") };
    if let Some(log) = log {
        let errors = criu_errors(&log);
        if !errors.is_empty() {
            msg.push_str(&format!(": {}", errors.join(" | ")));
        }
        if let Some(kept) = keep_log(&log) {
            msg.push_str(&format!(" (log: {})", kept.display()));
        }
    }
    bail!("{msg}")
}

/// CRIU's stdin: our stderr when it is a terminal, else /dev/null. The
/// holder shares our stderr, and with `--shell-job` CRIU restores a terminal
/// the process had by inheriting it from its own stdin ("Don't have tty to
/// inherit session from" otherwise).
fn criu_stdin() -> Result<Stdio> {
    let err = std::io::stderr();
    if !err.is_terminal() {
        return Ok(Stdio::null());
    }
    let fd = err.as_fd().try_clone_to_owned().context("duplicating stderr for criu-4")?;
    Ok(Stdio::from(fd))
}

/// The last few error lines of a CRIU log, without the harmless ones.
fn criu_errors(log: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(log) else { return Vec::new() };
    let errors: Vec<String> = text
        .lines()
        .filter(|l| l.contains("Error") && !CRIU_HARMLESS.iter().any(|h| l.contains(h)))
        .map(|l| l.trim().to_string())
        .collect();
    errors[errors.len().saturating_sub(3)..].to_vec()
}

/// Copies a failed step's log out of the work directory (which is removed
/// at the end): `herd-bench.PID.criu-DIR-LOG` next to it.
fn keep_log(log: &Path) -> Option<PathBuf> {
    let images = log.parent()?;
    let work = images.parent()?;
    let name = format!(
        "{}.{}-{}",
        work.file_name()?.to_string_lossy(),
        images.file_name()?.to_string_lossy(),
        log.file_name()?.to_string_lossy()
    );
    let kept = work.parent()?.join(name);
    std::fs::copy(log, &kept).ok()?;
    Some(kept)
}

/// Bytes of the files in `dir` whose names end with `ext`.
fn dir_bytes(dir: &Path, ext: &str) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(ext))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Waits until none of `pids` is in /proc any more (a zombie still is).
fn wait_gone(pids: &[i32]) -> Result<()> {
    let until = Instant::now() + GONE_WITHIN;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|p| Path::new(&format!("/proc/{p}")).exists()).collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("processes {left:?} are still there {} s after they were killed", GONE_WITHIN.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What the holder reported: where each member holds its memory.
struct Expect {
    /// Bytes each member holds.
    len: u64,
    /// The root first, then the children.
    members: Vec<MemberMem>,
}

impl Expect {
    fn root(&self) -> &MemberMem {
        &self.members[0]
    }

    fn pids(&self) -> Vec<i32> {
        self.members.iter().map(|m| m.pid).collect()
    }
}

/// The process to checkpoint: `herd-bench hold MIB`, our child, with its
/// children if it has to have some.
struct Holder {
    child: Child,
    /// Where the memory of each process is, as it reported (root first).
    members: Vec<MemberMem>,
    len: u64,
    /// Killed and reaped already (by the checkpoint engine or CRIU).
    gone: bool,
}

impl Holder {
    fn spawn(exe: &Path, case: Case) -> Result<Holder> {
        let child = Command::new(exe)
            .arg("hold")
            .arg(case.mib.to_string())
            .arg("--threads")
            .arg(case.threads.to_string())
            .arg("--procs")
            .arg(case.procs.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start `herd-bench hold`")?;
        let mut h = Holder { child, members: Vec::new(), len: 0, gone: false };
        let stdout = h.child.stdout.take().context("no pipe from the holder")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).context("reading from the holder")?;
        let (addr, len, children) = hold::parse_ready(&line)?;
        h.members.push(MemberMem { pid: h.pid(), index: 0, addr });
        h.members.extend(children);
        h.len = len;
        if h.len != case.mib * MIB {
            bail!("the holder holds {} bytes, not {} MiB", h.len, case.mib);
        }
        if h.members.len() != case.procs {
            bail!("the holder reports {} processes, not {}", h.members.len(), case.procs);
        }
        Ok(h)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn expect(&self) -> Expect {
        Expect { len: self.len, members: self.members.clone() }
    }

    /// After `FrozenTree::kill`, which ends the processes and, since we are
    /// both the root's tracer and its parent, reaps the root.
    fn ended_by_herd(&mut self) {
        match self.child.try_wait() {
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        self.gone = true;
    }

    /// After `criu-4 dump`, which kills the processes: the root is reaped
    /// (killed first, should it have been left running).
    fn ended_by_criu(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.gone = true;
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if !self.gone {
            // The children would notice within 0.2 s that the root is gone;
            // killed at once they cannot hold anything up.
            for m in self.members.iter().skip(1) {
                let _ = signal::kill(Pid::from_raw(m.pid), Signal::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A restored tree: the root (our child after herd's restore, adopted by
/// init after CRIU's) and its children. Ended on drop.
struct RestoredTree {
    root: i32,
    /// The root is our child: reaped by us, not waited for in /proc.
    ours: bool,
    /// Found by [`RestoredTree::verify`].
    children: Vec<i32>,
    ended: bool,
}

impl RestoredTree {
    fn new(root: i32, ours: bool) -> RestoredTree {
        RestoredTree { root, ours, children: Vec::new(), ended: false }
    }

    /// Finds the root's children, which must be the original ones (same
    /// pids), compares pages spread over each process's memory with its
    /// pattern, and checks that they all survive their next wake-up.
    fn verify(&mut self, expect: &Expect) -> Result<()> {
        let mut children = herd_checkpoint::children(self.root);
        children.sort_unstable();
        children.dedup();
        self.children = children;
        let mut want: Vec<i32> = expect.members[1..].iter().map(|m| m.pid).collect();
        want.sort_unstable();
        if self.children != want {
            bail!("the restored process {} has children {:?}, not the original {:?}", self.root, self.children, want);
        }
        for m in &expect.members {
            let pid = if m.index == 0 { self.root } else { m.pid };
            check_memory_of(pid, m, expect.len)?;
        }
        std::thread::sleep(SURVIVE);
        for &pid in std::iter::once(&self.root).chain(&self.children) {
            if !matches!(sys::proc_state(pid), Some('Z') | None) {
                continue;
            }
            let how = if pid == self.root && self.ours {
                self.ended = true;
                for &c in &self.children {
                    let _ = signal::kill(Pid::from_raw(c), Signal::SIGKILL);
                }
                match task::reap(pid) {
                    Ok(Exit::Code(c)) => format!("exited with code {c}"),
                    Ok(Exit::Signal(s)) => format!("was killed by signal {s}"),
                    Err(e) => format!("is gone ({e})"),
                }
            } else {
                "is gone".to_string()
            };
            let what = if pid == self.root { "restored process" } else { "restored child" };
            bail!("the {what} {pid} {how} shortly after the restart");
        }
        Ok(())
    }

    /// Kills the children by pid, then the root (reaped if ours), and waits
    /// until all are gone from /proc.
    fn end(mut self) -> Result<()> {
        self.ended = true;
        self.kill_all()
    }

    fn kill_all(&mut self) -> Result<()> {
        for &c in &self.children {
            let _ = signal::kill(Pid::from_raw(c), Signal::SIGKILL);
        }
        if self.ours {
            sys::kill_and_reap(self.root)?;
        } else {
            let _ = signal::kill(Pid::from_raw(self.root), Signal::SIGKILL);
        }
        let mut all = self.children.clone();
        if !self.ours {
            all.push(self.root);
        }
        wait_gone(&all)
    }
}

impl Drop for RestoredTree {
    fn drop(&mut self) {
        if !self.ended {
            if self.children.is_empty() {
                self.children = herd_checkpoint::children(self.root);
            }
            if let Err(e) = self.kill_all() {
                eprintln!("herd-bench: ending restored process {}: {e:#}", self.root);
            }
        }
    }
}

/// Compares pages spread over member `m`'s memory (in process `pid`) with
/// its pattern.
fn check_memory_of(pid: i32, m: &MemberMem, len: u64) -> Result<()> {
    let page = PAGE as u64;
    let pages = len / page;
    let n = pages.min(VERIFY_PAGES);
    let mut offsets: Vec<u64> = (0..n).map(|k| k * pages / n * page).collect();
    offsets.push((pages - 1) * page);
    offsets.dedup();
    let ranges: Vec<(u64, u64)> = offsets.iter().map(|o| (m.addr + o, page)).collect();
    let mut buf = vec![0u8; ranges.len() * PAGE];
    herd_kernel::mem::read_ranges(pid, &ranges, &mut buf).with_context(|| format!("reading the memory of restored process {pid}"))?;
    for (k, off) in offsets.iter().enumerate() {
        for j in 0..PAGE {
            let at = *off as usize + j;
            if buf[k * PAGE + j] != pattern_of(m.index, at) {
                bail!("the memory of restored process {pid} (member {} of the tree) differs from the original at offset {at:#x}", m.index);
            }
        }
    }
    Ok(())
}

/// A directory removed with what it holds when it goes out of scope.
struct RemoveDirOnDrop(PathBuf);

impl Drop for RemoveDirOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file removed when it goes out of scope.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `herd-bench.PID` under the chosen directory, removed with all it holds.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create(base: &Path) -> Result<WorkDir> {
        let path = base.join(format!("herd-bench.{}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("herd-bench: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// herd-bench itself runs as the holder. This also covers restoring a
/// process whose executable is the restoring program (the restorer is a fork
/// of it), where the kernel keeps the old exe link (PR_SET_MM_MAP: EBUSY).
fn holder_exe(_dir: &Path) -> Result<PathBuf> {
    std::env::current_exe().context("cannot find herd-bench's own executable")
}

/// `--dir`, else /var/tmp, else the current directory: the first that is
/// not in memory (an image on tmpfs would compete with the processes).
fn choose_dir(dir: Option<&Path>) -> Result<(PathBuf, String)> {
    if let Some(d) = dir {
        let t = sys::fs_type(d)?;
        if sys::is_ram_fs(&t) {
            eprintln!("herd-bench: warning: {} is a {t}: images will be held in memory", d.display());
        }
        return Ok((d.canonicalize()?, t));
    }
    for cand in ["/var/tmp", "."] {
        let p = Path::new(cand);
        if let Ok(t) = sys::fs_type(p) {
            if !sys::is_ram_fs(&t) {
                return Ok((p.canonicalize()?, t));
            }
        }
    }
    bail!("/var/tmp and the current directory are both in memory (tmpfs); choose a disk-backed directory with --dir")
}

/// Warns when the largest size will not fit next to its warm-up.
fn check_memory(sizes: &[u64]) {
    let need = sizes.iter().map(|&m| m * MIB + sys::warm_bytes(m * MIB) + 512 * MIB).max().unwrap_or(0);
    if let Some(avail) = sys::meminfo("MemAvailable") {
        if avail < need {
            eprintln!(
                "herd-bench: warning: {:.1} GiB of memory available, the largest size needs about {:.1} GiB; expect swapping or the OOM killer",
                avail as f64 / (1u64 << 30) as f64,
                need as f64 / (1u64 << 30) as f64
            );
        }
    }
}

/// Hashes the files mapped by herd-bench (the holder maps the same ones), so
/// the first checkpoint does not pay for reading them: `herd` keeps these
/// hashes in a persistent cache too.
fn prewarm_hashes(hashes: &mut FileHashes) {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return };
    let mut seen = HashSet::new();
    for line in maps.lines() {
        let Some(path) = line.splitn(6, ' ').nth(5).map(str::trim_start) else { continue };
        if path.starts_with('/') && !path.ends_with(" (deleted)") && seen.insert(path.to_string()) {
            let _ = hashes.hash(Path::new(path));
        }
    }
}
