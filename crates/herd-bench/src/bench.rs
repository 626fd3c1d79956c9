//! `herd-bench checkpoint`: the measurement loop.
//!
//! Per size and repetition, in this order, each timed step preceded by a
//! warm-up ([`sys::warm_up`]):
//! 1. file-write baseline: the working size written to a file next to the
//!    images in 8 MiB write() calls from a prefilled buffer (no fsync);
//! 2. first-touch baseline: fresh memory of the working size, one byte
//!    written per 4 KiB page;
//! 3. checkpoint: freeze + write of a process holding the working size
//!    (no fsync), as `herd checkpoint` does it; the process is then ended;
//! 4. restart: `herd_checkpoint::restore` of that image, until the process
//!    runs again; its memory is then spot-checked and it is ended.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use herd_checkpoint::filehash::FileHashes;
use herd_checkpoint::{CheckpointError, Frozen, PidMode};
use herd_kernel::task::{self, Exit};

use crate::hold::pattern;
use crate::report::{self, Run, Sample, SizeResult};
use crate::sys::{self, MIB, PAGE};

pub struct Config {
    pub sizes: Vec<u64>,
    /// Thread counts of the checkpointed process (each size with each count).
    pub threads: Vec<usize>,
    pub reps: Option<usize>,
    pub dir: Option<PathBuf>,
}

/// Size of each write() of the file-write baseline.
const WRITE_CHUNK: usize = 8 << 20;
/// Buffer between the engine and the image file, as in `herd`.
const IO_BUF: usize = 1 << 20;
/// Pages of the restored process compared with what the holder wrote.
const VERIFY_PAGES: u64 = 64;
/// How long a restored process must survive before it is ended (it wakes
/// from its restarted sleep within this time).
const SURVIVE: Duration = Duration::from_millis(300);

pub fn default_reps(mib: u64) -> usize {
    if mib >= 2048 {
        3
    } else {
        5
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
    sys::preflight()?;
    let (base, fstype) = choose_dir(cfg.dir.as_deref())?;
    check_memory(&cfg.sizes);
    let work = WorkDir::create(&base)?;

    let holder_exe = holder_exe(&work.path)?;
    let mut hashes = FileHashes::load();
    prewarm_hashes(&mut hashes);
    let _ = hashes.hash(&holder_exe);
    let chunk: Vec<u8> = (0..WRITE_CHUNK).map(pattern).collect();

    let mut results = Vec::new();
    let mut failures = Vec::new();
    for (&mib, &threads) in cfg.sizes.iter().flat_map(|m| cfg.threads.iter().map(move |t| (m, t))) {
        let label = SizeResult { mib, threads, reps: 0, samples: Vec::new() }.label();
        let reps = cfg.reps.unwrap_or(default_reps(mib));
        let mut samples = Vec::new();
        for rep in 1..=reps {
            match one_rep(mib, threads, rep, &work.path, &holder_exe, &chunk, &mut hashes) {
                Ok(s) => {
                    eprintln!(
                        "{:>8} rep {rep}/{reps}: write {:.3} s, touch {:.3} s, checkpoint {:.3} s ({:.1} MiB image), restart {:.3} s",
                        label,
                        s.write,
                        s.touch,
                        s.ckpt,
                        s.image_bytes as f64 / MIB as f64,
                        s.restart
                    );
                    samples.push(s);
                }
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) => {
                    eprintln!("{:>8} rep {rep}/{reps}: FAILED: {e:#}", label);
                    failures.push(format!("{} rep {rep}: {e:#}", label));
                }
            }
        }
        results.push(SizeResult { mib, threads, reps, samples });
    }
    // The hash cache is not saved: it would keep an entry for the copy of
    // herd-bench, which is deleted now.
    drop(work);

    let run = Run { dir: base, fstype, results, failures };
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

fn one_rep(mib: u64, threads: usize, rep: usize, dir: &Path, exe: &Path, chunk: &[u8], hashes: &mut FileHashes) -> Result<Sample> {
    let bytes = mib * MIB;

    sys::warm_up(bytes);
    let write = write_baseline(dir, bytes, chunk).context("file-write baseline")?;

    sys::warm_up(bytes);
    let touch = touch_baseline(bytes);

    let image = RemoveOnDrop(dir.join(format!("{mib}MiB-{threads}t-{rep}.herd")));
    let mut holder = Holder::spawn(exe, mib, threads).context("starting the process to checkpoint")?;
    let (addr, len) = (holder.addr, holder.len);
    sys::warm_up(bytes);
    let (ckpt, image_bytes) = checkpoint(&mut holder, &image.0, hashes).context("checkpoint")?;
    drop(holder);

    sys::warm_up(bytes);
    let restart = restart(&image.0, hashes, addr, len).context("restart")?;

    Ok(Sample { write, touch, ckpt, image_bytes, restart })
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

/// Freeze + write of the holder's image (no fsync), then the holder is ended.
fn checkpoint(holder: &mut Holder, image: &Path, hashes: &mut FileHashes) -> Result<(f64, u64)> {
    let t = Instant::now();
    let mut frozen = Frozen::freeze(holder.pid(), hashes)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(image)
        .with_context(|| format!("cannot create {}", image.display()))?;
    let (out, _stats) = frozen.write(BufWriter::with_capacity(IO_BUF, file))?;
    let file = out.into_inner().map_err(|e| e.into_error()).context("writing the image")?;
    let secs = t.elapsed().as_secs_f64();
    drop(file);
    frozen.kill();
    holder.ended_by_herd();
    let size = std::fs::metadata(image).with_context(|| format!("cannot stat {}", image.display()))?.len();
    Ok((secs, size))
}

/// Restore of the image until the process runs again; then a check that it
/// holds what the holder wrote and keeps running, and its end.
fn restart(image: &Path, hashes: &mut FileHashes, addr: u64, len: u64) -> Result<f64> {
    let t = Instant::now();
    let file = File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
    // With its own pid, as `herd restart` does, when allowed (root).
    let pid = if herd_kernel::task::euid() == 0 { PidMode::Same } else { PidMode::Any };
    let restored = herd_checkpoint::restore(BufReader::with_capacity(IO_BUF, file), hashes, pid)?;
    let secs = t.elapsed().as_secs_f64();
    let mut child = RestoredChild { pid: restored.pid, reaped: false };
    for w in &restored.warnings {
        eprintln!("herd-bench: restore warning: {w}");
    }
    child.verify(addr, len)?;
    child.end()?;
    Ok(secs)
}

/// The process to checkpoint: `herd-bench hold MIB`, our child.
struct Holder {
    child: Child,
    /// Where its filled memory is, as it reported.
    addr: u64,
    len: u64,
    /// Killed and reaped already (by the checkpoint engine).
    gone: bool,
}

impl Holder {
    fn spawn(exe: &Path, mib: u64, threads: usize) -> Result<Holder> {
        let child = Command::new(exe)
            .arg("hold")
            .arg(mib.to_string())
            .arg("--threads")
            .arg(threads.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start `herd-bench hold`")?;
        let mut h = Holder { child, addr: 0, len: 0, gone: false };
        let stdout = h.child.stdout.take().context("no pipe from the holder")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).context("reading from the holder")?;
        let mut words = line.split_whitespace();
        let (Some("ready"), Some(addr), Some(len)) = (words.next(), words.next(), words.next()) else {
            bail!("the holder did not report ready (it said {line:?})");
        };
        h.addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).context("holder address")?;
        h.len = len.parse().context("holder length")?;
        if h.len != mib * MIB {
            bail!("the holder holds {} bytes, not {mib} MiB", h.len);
        }
        Ok(h)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// After `Frozen::kill`, which ends the process and, since we are both
    /// its tracer and its parent, reaps it.
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
}

impl Drop for Holder {
    fn drop(&mut self) {
        if !self.gone {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A restored process (our child); ended and reaped on drop.
struct RestoredChild {
    pid: i32,
    reaped: bool,
}

impl RestoredChild {
    /// Compares pages spread over the held memory with the pattern, and
    /// checks that the process survives its next wake-up.
    fn verify(&mut self, addr: u64, len: u64) -> Result<()> {
        let page = PAGE as u64;
        let pages = len / page;
        let n = pages.min(VERIFY_PAGES);
        let mut offsets: Vec<u64> = (0..n).map(|k| k * pages / n * page).collect();
        offsets.push((pages - 1) * page);
        offsets.dedup();
        let ranges: Vec<(u64, u64)> = offsets.iter().map(|o| (addr + o, page)).collect();
        let mut buf = vec![0u8; ranges.len() * PAGE];
        herd_kernel::mem::read_ranges(self.pid, &ranges, &mut buf).context("reading the restored process's memory")?;
        for (k, off) in offsets.iter().enumerate() {
            for j in 0..PAGE {
                let at = *off as usize + j;
                if buf[k * PAGE + j] != pattern(at) {
                    bail!("the restored process's memory differs from the original at offset {at:#x}");
                }
            }
        }
        std::thread::sleep(SURVIVE);
        if matches!(sys::proc_state(self.pid), Some('Z') | None) {
            self.reaped = true;
            let how = match task::reap(self.pid) {
                Ok(Exit::Code(c)) => format!("exited with code {c}"),
                Ok(Exit::Signal(s)) => format!("was killed by signal {s}"),
                Err(e) => format!("is gone ({e})"),
            };
            bail!("the restored process {} {how} shortly after the restart", self.pid);
        }
        Ok(())
    }

    fn end(mut self) -> Result<()> {
        self.reaped = true;
        sys::kill_and_reap(self.pid)
    }
}

impl Drop for RestoredChild {
    fn drop(&mut self) {
        if !self.reaped {
            if let Err(e) = sys::kill_and_reap(self.pid) {
                eprintln!("herd-bench: ending restored process {}: {e:#}", self.pid);
            }
        }
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
